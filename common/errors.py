"""Machine-readable reasons on the gRPC errors a client acts on.

The server puts one of these under the trailing-metadata key ``lada-reason``
on every abort a client must react to; the client decides by status code and
reason, never by the message text, which is for people and may be reworded.
Trailing metadata rather than ``google.rpc.ErrorInfo`` in a rich status: the
same one string, readable by any gRPC client, without the grpcio-status and
googleapis-common-protos dependencies on both sides.

=========================  ================  ===================================
reason                     status code       what the client does
=========================  ================  ===================================
``CREDENTIAL_REJECTED``    UNAUTHENTICATED   enrol again (missing, malformed,
                                             forged or expired credential)
``REGISTER_AGAIN``         NOT_FOUND         enrol again (the server restarted,
                                             or dropped this client)
``SUPERSEDED``             UNAUTHENTICATED   stop: another process enrolled
                                             under this name
``JOIN_REJECTED``          UNAUTHENTICATED   stop: the join token is wrong
``TASK_NOT_OUTSTANDING``   FAILED_PRECOND.,  skip the task: its round moved on
                           NOT_FOUND
``STORE_FULL``             RESOURCE_EXH.     retry later with backoff
``BUSY``                   RESOURCE_EXH.     retry later with backoff: this client
                                             (or the server) has as many streams
                                             and long-polls open as allowed
=========================  ================  ===================================

A stream that stops sending (or receiving) for ``transport.stream_idle``
seconds is cancelled by the server: the client sees CANCELLED and retries.

A reason is what tells apart errors that share a code but ask for different
actions (NOT_FOUND: enrol again or skip the task; UNAUTHENTICATED: enrol again
or stop; RESOURCE_EXHAUSTED: the server's store or the gRPC library). An error
without one is judged by its code alone (see ``lada.client.runtime``).
"""

from __future__ import annotations

from typing import NoReturn

import grpc

REASON_KEY = "lada-reason"

CREDENTIAL_REJECTED = "CREDENTIAL_REJECTED"
REGISTER_AGAIN = "REGISTER_AGAIN"
SUPERSEDED = "SUPERSEDED"
JOIN_REJECTED = "JOIN_REJECTED"
TASK_NOT_OUTSTANDING = "TASK_NOT_OUTSTANDING"
STORE_FULL = "STORE_FULL"
BUSY = "BUSY"
REASONS = frozenset({CREDENTIAL_REJECTED, REGISTER_AGAIN, SUPERSEDED, JOIN_REJECTED, TASK_NOT_OUTSTANDING,
                     STORE_FULL, BUSY})


def abort(ctx: grpc.ServicerContext, code: grpc.StatusCode, reason: str, message: str) -> NoReturn:
    """End the RPC with ``code`` and ``message``, and ``reason`` for the client to act on."""
    assert reason in REASONS, reason
    ctx.set_trailing_metadata(((REASON_KEY, reason),))
    ctx.abort(code, message)
    raise AssertionError("unreachable")  # ctx.abort raises


def reason_of(e: grpc.RpcError) -> str:
    """The ``lada-reason`` of a failed call; "" when the error carries none (e.g. it came from
    the gRPC library itself, or from a proxy in between)."""
    trailing = getattr(e, "trailing_metadata", None)
    for key, value in (trailing() if callable(trailing) else None) or ():
        if key == REASON_KEY:
            return value if isinstance(value, str) else value.decode("ascii", "replace")
    return ""
