"""Client-side TLS: channel credentials from PEM files (``client.tls_ca``,
``client.tls``, ``client.tls_cert/tls_key``).

In common, not in the server package, so the client never imports
``lada.server``; the server side (``lada.server.tls``) reads its PEM files
through :func:`read_pem` too, so both sides report a bad file the same way.
"""

from __future__ import annotations

from pathlib import Path

import grpc


def read_pem(path: str | None, what: str) -> bytes | None:
    """The bytes of a PEM file (None for no path); ``what`` names the flag in errors."""
    if not path:
        return None
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what}: no such file {path}")
    data = p.read_bytes()
    if b"-----BEGIN " not in data:
        raise ValueError(f"{what}: {path} is not a PEM file")
    return data


def channel_credentials(ca: str | None, cert: str | None = None, key: str | None = None, tls: bool = False
                        ) -> grpc.ChannelCredentials | None:
    """None = plaintext. Any of ca/cert/key (or ``tls``) turns TLS on; no ca = the system roots."""
    if not (ca or cert or key or tls):
        return None
    if bool(cert) != bool(key):
        raise ValueError("a client certificate needs both --client.tls_cert and --client.tls_key")
    return grpc.ssl_channel_credentials(root_certificates=read_pem(ca, "--client.tls_ca"),
                                        private_key=read_pem(key, "--client.tls_key"),
                                        certificate_chain=read_pem(cert, "--client.tls_cert"))
