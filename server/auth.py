"""Client credentials: enrol with the shared join token, get a signed, expiring
credential ``<client_id>.<expiry>.<hmac>`` checked on every later RPC."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

OPEN_METHODS = {"/lada.v1.Coordinator/Register", "/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"}


class AuthError(Exception):
    pass


def load_secret(data_dir: str | Path) -> bytes:
    """A per-deployment signing key, kept across restarts so credentials stay valid."""
    path = Path(data_dir) / "server.secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(secrets.token_bytes(32))
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    return path.read_bytes()


class Credentials:
    def __init__(self, secret: bytes, join_token: str, ttl_s: float = 24 * 3600) -> None:
        self.secret, self.join_token, self.ttl_s = secret, join_token, ttl_s

    def check_join_token(self, token: str) -> None:
        if not hmac.compare_digest(token.encode(), self.join_token.encode()):
            raise AuthError("invalid join token")

    def _sig(self, payload: str) -> str:
        mac = hmac.new(self.secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def issue(self, client_id: str, now: float | None = None) -> tuple[str, int]:
        exp = int((now or time.time()) + self.ttl_s)
        payload = f"{client_id}.{exp}"
        return f"{payload}.{self._sig(payload)}", exp

    def verify(self, credential: str, now: float | None = None) -> str:
        try:
            client_id, exp_s, sig = credential.rsplit(".", 2)
            exp = int(exp_s)
        except ValueError as e:
            raise AuthError("malformed credential") from e
        if not hmac.compare_digest(sig, self._sig(f"{client_id}.{exp_s}")):
            raise AuthError("credential signature does not verify")
        if exp < (now or time.time()):
            raise AuthError("credential expired")
        return client_id

    def client_of(self, metadata: Any) -> str:
        for key, val in metadata or ():
            if key == "authorization" and isinstance(val, str) and val.startswith("Bearer "):
                return self.verify(val[len("Bearer ") :])
        raise AuthError("missing credential (authorization: Bearer ...)")


class AuthInterceptor(grpc.ServerInterceptor):
    """Rejects every RPC but enrolment and health checks without a valid credential."""

    def __init__(self, creds: Credentials) -> None:
        self.creds = creds

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails) -> Any:
        if details.method in OPEN_METHODS:
            return continuation(details)
        try:
            self.creds.client_of(details.invocation_metadata)
        except AuthError as e:
            return _deny(continuation(details), str(e))
        return continuation(details)


def _deny(handler: Any, message: str) -> Any:
    def abort(_req: Any, ctx: grpc.ServicerContext) -> Any:
        ctx.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is None:
        return None
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(abort)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(abort)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(abort)
    return grpc.unary_unary_rpc_method_handler(abort)
