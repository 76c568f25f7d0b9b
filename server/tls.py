"""TLS and mutual TLS credentials from PEM files (flags on both sides).

Server: ``--tls-cert/--tls-key`` = TLS; plus ``--tls-client-ca`` = mutual TLS
(a client certificate signed by that CA is required, and by default its
common name or a subject-alternative name must equal the client name it
enrols as). Client: ``--tls-ca`` (or ``--tls`` for the system roots) = TLS;
plus ``--tls-cert/--tls-key`` = its certificate for mutual TLS.
``deploy/make-certs.sh`` makes a development CA and certificates. The
client's side is :func:`lada.common.tls.channel_credentials`.
"""

from __future__ import annotations

import grpc
from lada.common.tls import read_pem


def server_credentials(cert: str | None, key: str | None, client_ca: str | None = None
                       ) -> grpc.ServerCredentials | None:
    """None = plaintext; cert+key = TLS; plus client_ca = mutual TLS (client certs required)."""
    if not cert and not key:
        if client_ca:
            raise ValueError("mutual TLS (--tls-client-ca) also needs --tls-cert and --tls-key")
        return None
    if not (cert and key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    return grpc.ssl_server_credentials([(read_pem(key, "--tls-key"), read_pem(cert, "--tls-cert"))],
                                       root_certificates=read_pem(client_ca, "--tls-client-ca"),
                                       require_client_auth=client_ca is not None)


def peer_names(ctx: grpc.ServicerContext) -> set[str]:
    """Common name and subject-alternative names of the peer's verified certificate (mTLS)."""
    out: set[str] = set()
    auth = ctx.auth_context() or {}
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for v in auth.get(key, ()):
            out.add(v.decode() if isinstance(v, bytes) else str(v))
    return out
