"""Client credentials.

A client enrols with the shared join token (``Coordinator.Register``) and gets
its own credential ``<client_id>.<nonce>.<expiry>.<hmac-sha256>``, signed with
a per-deployment secret kept in ``data_dir/server.secret`` (so credentials
survive a server restart). Every later RPC carries it as
``authorization: Bearer <credential>``; :class:`AuthInterceptor` rejects a
missing, malformed, forged or expired one with UNAUTHENTICATED before any
servicer runs (reason ``CREDENTIAL_REJECTED``: the client enrols again). The
nonce changes on every enrolment: the transport keeps the newest nonce per
client and refuses older credentials of the same client (reason
``SUPERSEDED``), so a credential that leaked before a re-enrolment is dead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from lada.common import errors
from lada.common.config import ServerConfig, TransportConfig

OPEN_METHODS = {"/lada.v1.Coordinator/Register", "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"}
MAX_CREDENTIAL = 512
MAX_CACHED = 4096  # verified credentials remembered (``Credentials.verify``)


class AuthError(Exception):
    pass


DEFAULT_JOIN_TOKEN = ServerConfig().join_token  # public: it is in the source and the docs


def default_token_exposed(address: str, join_token: str) -> bool:
    """The public default join token on an address other hosts can reach: anyone could enrol.
    A host name other than ``localhost`` counts as reachable (it is not resolved here)."""
    if join_token != DEFAULT_JOIN_TOKEN or address.startswith("unix:"):
        return False
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


@dataclass(frozen=True)
class Identity:
    client_id: str
    nonce: str
    expires: int


def load_secret(data_dir: str | Path) -> bytes:
    """A per-deployment signing key, kept across restarts so credentials stay valid."""
    path = Path(data_dir) / "server.secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
        tmp.replace(path)
    secret = path.read_bytes()
    if len(secret) < 16:
        raise AuthError(f"{path} holds a signing key of {len(secret)} bytes; delete it to make a new one")
    return secret


class Credentials:
    def __init__(self, secret: bytes, join_token: str, ttl_s: float = TransportConfig().credential_ttl) -> None:
        if not join_token:
            raise ValueError("an empty join token would let anyone enrol")
        if ttl_s <= 0:
            raise ValueError("credential ttl must be positive")
        self.secret, self.join_token, self.ttl_s = secret, join_token, ttl_s
        # credentials whose signature verified: every RPC is checked twice (the interceptor, then
        # the servicer binds it to a client), and a client sends the same one for its whole TTL
        self._verified: dict[str, Identity] = {}

    def check_join_token(self, token: str) -> None:
        if not hmac.compare_digest(token.encode(), self.join_token.encode()):
            raise AuthError("invalid join token")

    def _sig(self, payload: str) -> str:
        mac = hmac.new(self.secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def issue(self, client_id: str, now: float | None = None, nonce: str | None = None) -> tuple[str, int, str]:
        """(credential, expiry unix time, nonce) for a freshly enrolled client."""
        nonce = nonce or secrets.token_hex(8)
        exp = int((time.time() if now is None else now) + self.ttl_s)
        payload = f"{client_id}.{nonce}.{exp}"
        return f"{payload}.{self._sig(payload)}", exp, nonce

    def verify(self, credential: str, now: float | None = None) -> Identity:
        """The credential's identity, or AuthError. A signature is checked once per credential (the
        string, signature included, is the cache key; the secret never changes in a process); the
        expiry on every call."""
        ident = self._verified.get(credential)
        if ident is None:
            ident = self._check(credential)
            if len(self._verified) >= MAX_CACHED:
                self._verified.clear()  # a bound, not an LRU: at worst every credential is re-checked once
            self._verified[credential] = ident
        if ident.expires < (time.time() if now is None else now):
            raise AuthError("credential expired")
        return ident

    def _check(self, credential: str) -> Identity:
        if len(credential) > MAX_CREDENTIAL:
            raise AuthError("malformed credential")
        try:
            client_id, nonce, exp_s, sig = credential.rsplit(".", 3)
            exp = int(exp_s)
        except ValueError as e:
            raise AuthError("malformed credential") from e
        if not hmac.compare_digest(sig.encode(), self._sig(f"{client_id}.{nonce}.{exp_s}").encode()):
            raise AuthError("credential signature does not verify")
        return Identity(client_id, nonce, exp)

    def identity_of(self, metadata: Any) -> Identity:
        for key, val in metadata or ():
            if key == "authorization":
                if isinstance(val, str) and val.startswith("Bearer "):
                    return self.verify(val[len("Bearer ") :])
                raise AuthError("authorization must be 'Bearer <credential>'")
        raise AuthError("missing credential (authorization: Bearer ...)")

    def client_of(self, metadata: Any) -> str:
        return self.identity_of(metadata).client_id


class AuthInterceptor(grpc.ServerInterceptor):
    """Rejects every RPC but enrolment and health checks without a valid credential."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        if details.method in OPEN_METHODS:
            return continuation(details)
        try:
            self.creds.identity_of(details.invocation_metadata)
        except AuthError as e:
            return _deny(continuation(details), str(e))
        return continuation(details)


def _deny(handler: Any, message: str) -> Any:
    def abort(_req: Any, ctx: grpc.ServicerContext) -> Any:
        errors.abort(ctx, grpc.StatusCode.UNAUTHENTICATED, errors.CREDENTIAL_REJECTED, message)

    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)
