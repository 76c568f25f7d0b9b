"""TLS and mutual TLS credentials from PEM files (flags on both sides).

Server: ``--tls-cert/--tls-key`` = TLS; plus ``--tls-client-ca`` = mutual TLS
(a client certificate signed by that CA is required, and by default its
common name or a subject-alternative name must equal the client name it
enrols as). Client: ``--tls-ca`` (or ``--tls`` for the system roots) = TLS;
plus ``--tls-cert/--tls-key`` = its certificate for mutual TLS.
``deploy/make-certs.sh`` makes a development CA and certificates.
"""

from __future__ import annotations

from pathlib import Path

import grpc


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what}: no such file {path}")
    data = p.read_bytes()
    if b"-----BEGIN " not in data:
        raise ValueError(f"{what}: {path} is not a PEM file")
    return data


def server_credentials(cert: str | None, key: str | None, client_ca: str | None = None
                       ) -> grpc.ServerCredentials | None:
    """None = plaintext; cert+key = TLS; plus client_ca = mutual TLS (client certs required)."""
    if not cert and not key:
        if client_ca:
            raise ValueError("mutual TLS (--tls-client-ca) also needs --tls-cert and --tls-key")
        return None
    if not (cert and key):
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    return grpc.ssl_server_credentials([(_read(key, "--tls-key"), _read(cert, "--tls-cert"))],
                                       root_certificates=_read(client_ca, "--tls-client-ca"),
                                       require_client_auth=client_ca is not None)


def channel_credentials(ca: str | None, cert: str | None = None, key: str | None = None, tls: bool = False
                        ) -> grpc.ChannelCredentials | None:
    """None = plaintext. Any of ca/cert/key (or ``tls``) turns TLS on; no ca = the system roots."""
    if not (ca or cert or key or tls):
        return None
    if bool(cert) != bool(key):
        raise ValueError("a client certificate needs both --tls-cert and --tls-key")
    return grpc.ssl_channel_credentials(root_certificates=_read(ca, "--tls-ca"),
                                        private_key=_read(key, "--tls-key"),
                                        certificate_chain=_read(cert, "--tls-cert"))


def peer_names(ctx: grpc.ServicerContext) -> set[str]:
    """Common name and subject-alternative names of the peer's verified certificate (mTLS)."""
    out: set[str] = set()
    auth = ctx.auth_context() or {}
    for key in ("x509_common_name", "x509_subject_alternative_name"):
        for v in auth.get(key, ()):
            out.add(v.decode() if isinstance(v, bytes) else str(v))
    return out
