"""TLS and mutual TLS credentials from PEM files (config knobs on both sides).

Server: ``transport.tls_cert/tls_key`` = TLS; plus ``transport.tls_client_ca``
= mutual TLS (a client certificate signed by that CA is required, and unless
``transport.tls_name_binding`` is false its common name or a
subject-alternative name must equal the client name it enrols as). Client:
``client.tls_ca`` (or ``client.tls`` for the system roots) = TLS; plus
``client.tls_cert/tls_key`` = its certificate for mutual TLS.
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
            raise ValueError("mutual TLS (--transport.tls_client_ca) also needs --transport.tls_cert and "
                             "--transport.tls_key")
        return None
    if not (cert and key):
        raise ValueError("TLS needs both --transport.tls_cert and --transport.tls_key")
    return grpc.ssl_server_credentials([(read_pem(key, "--transport.tls_key"),
                                         read_pem(cert, "--transport.tls_cert"))],
                                       root_certificates=read_pem(client_ca, "--transport.tls_client_ca"),
                                       require_client_auth=client_ca is not None)


def peer_names(ctx: grpc.ServicerContext) -> set[str]:
    """Common name and subject-alternative names of the peer's verified certificate (mTLS)."""
    out: set[str] = set()
    auth = ctx.auth_context() or {}
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for v in auth.get(key, ()):
            out.add(v.decode() if isinstance(v, bytes) else str(v))
    return out
