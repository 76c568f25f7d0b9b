"""Optional bearer-token protection and security headers, as plain ASGI middleware.

With a token configured, every page and API (``/api/*``, ``/metrics``,
``/openapi.json``, HTML pages) needs ``Authorization: Bearer <token>`` or
``?token=<token>``; only ``/healthz`` and the static assets (no data in them)
are open. Pages carry a ``?token=`` they were opened with into their links and
the JavaScript sends it as a bearer header. The access log ``lada dashboard``
writes shows such a token as ``token=***`` (``RedactTokenFilter``).
"""

from __future__ import annotations

import hmac
import html
import logging
from urllib.parse import parse_qs, unquote_plus

from starlette.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

OPEN_PATHS = ("/healthz",)
OPEN_PREFIXES = ("/static/",)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def request_token(scope: Scope) -> str | None:
    """The token a request carries: bearer header first, else ``?token=``."""
    for k, v in scope.get("headers", []):
        if k == b"authorization":
            scheme, _, cred = v.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and cred.strip():
                return cred.strip()
    vals = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
    return vals[0] if vals else None


def redact_token(target: str) -> str:
    """``target`` (a path with its query) with every ``token`` parameter's value replaced by ``***``.

    Pages need ``?token=`` (the browser opens them with it), so the access log must not keep
    it: names are compared decoded, as the auth middleware reads them (``%74oken`` is ``token``)."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    parts = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        parts.append(f"{name}=***" if unquote_plus(name) == "token" else item)
    return f"{path}?{'&'.join(parts)}"


class RedactTokenFilter(logging.Filter):
    """Drops the token from uvicorn's access-log records (args: client, method, path, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_token(args[2]), *args[3:])
        return True


def _wants_html(scope: Scope) -> bool:
    path = scope["path"]
    if path.startswith("/api") or path in ("/metrics", "/openapi.json"):
        return False
    accept = next((v for k, v in scope.get("headers", []) if k == b"accept"), b"")
    return b"text/html" in accept or not accept


LOGIN_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>LaDa dashboard · sign in</title>
<link rel="stylesheet" href="/static/style.css"></head><body class="login"><main class="card login-card">
<h1>LaDa dashboard</h1><p>{msg}</p><form method="get" action="{action}">
<label>Access token <input type="password" name="token" autocomplete="current-password" autofocus></label>
<button type="submit">Open</button></form></main></body></html>"""


class TokenAuth:
    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.token:
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path in OPEN_PATHS or path.startswith(OPEN_PREFIXES):
            return await self.app(scope, receive, send)
        got = request_token(scope)
        if got is not None and hmac.compare_digest(got.encode(), self.token.encode()):
            return await self.app(scope, receive, send)
        msg = "missing token" if got is None else "invalid token"
        headers = {"WWW-Authenticate": 'Bearer realm="lada-dashboard"'}
        if _wants_html(scope):
            page = LOGIN_PAGE.format(msg=html.escape(f"This dashboard needs an access token ({msg})."),
                                     action=html.escape(path, quote=True))
            resp = HTMLResponse(page, 401, headers=headers)
        else:
            resp = JSONResponse({"detail": msg}, 401, headers=headers)
        await resp(scope, receive, send)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in SECURITY_HEADERS if k not in have]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
