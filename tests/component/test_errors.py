"""Errors a client acts on carry a ``lada-reason``, and the client decides by it, not by message text.

The first half asks the real servicers for each reason; the second half puts
the real client runtime against a scripted server whose messages are worded
differently (or mimic the old texts without a reason) to show the text plays
no part.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager

import grpc
import pytest
from lada.client.runtime import Connection, MessageTooLarge, SupersededError, _heartbeats
from lada.common import chunks, errors
from lada.common.proto.lada.v1 import (
    allocation_pb2,
    coordinator_pb2,
    coordinator_pb2_grpc,
    exchange_pb2,
)

from tests.support.transport import TOKEN, grpc_server, register, stubs


def failure(fn: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    """(status code, lada reason) of a call that must fail."""
    with pytest.raises(grpc.RpcError) as e:
        fn()
    return e.value.code(), errors.reason_of(e.value)


# ---------------------------------------------------------------------- the servicers set them
def test_each_abort_a_client_acts_on_carries_its_reason() -> None:
    with grpc_server() as srv:
        s = register(stubs(srv.channel()), "client-1", instance="one")
        hb = coordinator_pb2.HeartbeatRequest(client_id="client-1")
        # the interceptor: no credential, a forged one
        assert failure(lambda: s.coord.Heartbeat(hb, timeout=5)) == (grpc.StatusCode.UNAUTHENTICATED,
                                                                     errors.CREDENTIAL_REJECTED)
        forged = [("authorization", f"Bearer {s.credential[:-4]}AAAA")]
        assert failure(lambda: s.coord.Heartbeat(hb, metadata=forged, timeout=5))[1] == errors.CREDENTIAL_REJECTED
        # a wrong join token
        bad = coordinator_pb2.RegisterRequest(join_token="wrong", client_name="client-2", protocol_version=1)
        assert failure(lambda: s.coord.Register(bad, timeout=5)) == (grpc.StatusCode.UNAUTHENTICATED,
                                                                     errors.JOIN_REJECTED)
        # an older credential after the same name enrolled again
        old = s.credential
        register(s, "client-1", instance="one")
        stale = [("authorization", f"Bearer {old}")]
        assert failure(lambda: s.coord.Heartbeat(hb, metadata=stale, timeout=5)) == (
            grpc.StatusCode.UNAUTHENTICATED, errors.SUPERSEDED)
        # reports for tasks that are not outstanding, and an allocation that is not there
        rep = allocation_pb2.RewardReport(client_id="client-1", task_id="0" * 32, round=1)
        assert failure(lambda: s.alloc.ReportReward(rep, metadata=s.md, timeout=5)) == (
            grpc.StatusCode.FAILED_PRECONDITION, errors.TASK_NOT_OUTSTANDING)
        req = allocation_pb2.AllocationRequest(client_id="client-1", round=1)
        assert failure(lambda: list(s.alloc.GetAllocation(req, metadata=s.md, timeout=5))) == (
            grpc.StatusCode.NOT_FOUND, errors.TASK_NOT_OUTSTANDING)
        # a full transfer store
        srv.grid.blobs.max_bytes = 10
        up = chunks.split(b"x" * 100, 50, "client-1")
        assert failure(lambda: s.exchange.Upload(up, metadata=s.md, timeout=5)) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED, errors.STORE_FULL)
        # the server forgot the client (restart, or dropped for a missed deadline)
        with srv.grid.lock:
            srv.grid.clients.clear()
        assert failure(lambda: s.coord.Heartbeat(hb, metadata=s.md, timeout=5)) == (grpc.StatusCode.NOT_FOUND,
                                                                                  errors.REGISTER_AGAIN)


# ---------------------------------------------------------------------- the client acts on them
class Scripted(coordinator_pb2_grpc.CoordinatorServicer):
    """Register always works; each Heartbeat plays the next scripted failure, then answers."""

    def __init__(self, script: list[tuple[grpc.StatusCode, str, str]]) -> None:
        self.script, self.registered, self.heartbeats = list(script), 0, 0
        self.lock = threading.Lock()

    def Register(self, req: coordinator_pb2.RegisterRequest, ctx: grpc.ServicerContext
                 ) -> coordinator_pb2.RegisterReply:
        with self.lock:
            self.registered += 1
            return coordinator_pb2.RegisterReply(client_id=req.client_name, credential=f"cred-{self.registered}",
                                                 heartbeat_interval_s=0.05)

    def Heartbeat(self, req: coordinator_pb2.HeartbeatRequest, ctx: grpc.ServicerContext
                  ) -> coordinator_pb2.HeartbeatReply:
        with self.lock:
            self.heartbeats += 1
            step = self.script.pop(0) if self.script else None
        if step is not None:
            code, reason, message = step
            if reason:
                ctx.set_trailing_metadata(((errors.REASON_KEY, reason),))
            ctx.abort(code, message)
        return coordinator_pb2.HeartbeatReply(round=1)


@contextmanager
def scripted(*script: tuple[grpc.StatusCode, str, str]) -> Iterator[tuple[Scripted, Connection]]:
    svc = Scripted(list(script))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    coordinator_pb2_grpc.add_CoordinatorServicer_to_server(svc, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    conn = Connection(f"127.0.0.1:{port}", "client-1", TOKEN, "m", "arith", max_message_mb=1, chunk_kb=64,
                      call_timeout=5, give_up_after=20)
    try:
        conn.register()
        yield svc, conn
    finally:
        conn.channel.close()
        server.stop(grace=None)


def heartbeat(conn: Connection) -> coordinator_pb2.HeartbeatReply:
    return conn.call(lambda: conn.coord.Heartbeat(coordinator_pb2.HeartbeatRequest(client_id=conn.name),
                                                  metadata=conn.md, timeout=5), "Heartbeat")


def test_the_client_enrols_again_on_the_reason_whatever_the_message_says() -> None:
    NF, UNAUTH = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED
    with scripted((NF, errors.REGISTER_AGAIN, "who are you?"),
                  (UNAUTH, errors.CREDENTIAL_REJECTED, "nope")) as (svc, conn):
        heartbeat(conn)
        assert svc.registered == 3 and conn.credential == "cred-3" and svc.heartbeats == 3


def test_the_old_message_texts_without_a_reason_change_nothing() -> None:
    NF = grpc.StatusCode.NOT_FOUND
    # "register again" in the text, but no reason: a NOT_FOUND like any other (the task is stale)
    with scripted((NF, "", "unknown client 'client-1'; register again")) as (svc, conn):
        with pytest.raises(grpc.RpcError) as e:
            heartbeat(conn)
        assert e.value.code() == NF and svc.registered == 1
    # "superseded" in the text, but the reason says the credential was rejected: enrol again, not stop
    with scripted((grpc.StatusCode.UNAUTHENTICATED, errors.CREDENTIAL_REJECTED, "credential superseded")
                  ) as (svc, conn):
        heartbeat(conn)
        assert svc.registered == 2


def test_superseded_stops_the_client_whatever_the_message_says() -> None:
    with scripted((grpc.StatusCode.UNAUTHENTICATED, errors.SUPERSEDED, "someone else is you now")) as (svc, conn):
        with pytest.raises(SupersededError, match="someone else"):
            heartbeat(conn)
        assert svc.registered == 1


def test_resource_exhausted_is_retried_and_an_oversized_request_is_refused_before_sending() -> None:
    RE = grpc.StatusCode.RESOURCE_EXHAUSTED
    # the gRPC library's own texts, no reason: retried (a server at its concurrent-RPC limit looks the same)
    with scripted((RE, "", "Received message larger than max (9 vs. 1)"), (RE, errors.STORE_FULL, "full"),
                  (RE, "", "Concurrent RPC limit exceeded!")) as (svc, conn):
        t0 = time.time()
        heartbeat(conn)
        assert svc.heartbeats == 4 and time.time() - t0 < 15
        # what this client would send over its own limit never leaves it, and is not retried
        huge = coordinator_pb2.LeaveRequest(client_id="client-1", reason="x" * (2 << 20))
        with pytest.raises(MessageTooLarge):
            conn.call(lambda: conn.coord.Leave(huge, metadata=conn.md, timeout=5), "Leave")
        assert svc.heartbeats == 4
    # a chunk size that cannot fit the message limit is refused up front
    with pytest.raises(ValueError, match="chunk_kb"):
        Connection("127.0.0.1:1", "client-1", TOKEN, "m", "arith", max_message_mb=1, chunk_kb=1024)
    c = next(chunks.split(b"y" * 1000, 1000, "c" * 200))
    c.index, c.total, c.blob_size = chunks.MAX_CHUNKS - 1, chunks.MAX_CHUNKS, 1 << 40
    assert c.ByteSize() <= chunks.message_size(len(c.data)) and isinstance(c, exchange_pb2.Chunk)


def test_the_heartbeat_thread_enrols_again_on_the_reason() -> None:
    with scripted((grpc.StatusCode.NOT_FOUND, errors.REGISTER_AGAIN, "gone"),
                  (grpc.StatusCode.NOT_FOUND, "", "register again")) as (svc, conn):
        conn.heartbeat_s = 0.05
        stop = threading.Event()
        t = threading.Thread(target=_heartbeats, args=(conn, stop), daemon=True)
        t.start()
        try:
            deadline = time.time() + 10
            while svc.heartbeats < 4 and time.time() < deadline:
                time.sleep(0.02)
        finally:
            stop.set()
            t.join(5)
        assert svc.heartbeats >= 4 and svc.registered == 2  # the reasonless NOT_FOUND did not re-enrol
