"""The LaDa dashboard: a read-only FastAPI app over the run database the server writes.

``create_app(db_url)`` builds the app; ``serve(db_url, cfg.dashboard)`` runs it
with uvicorn (``lada dashboard`` calls it; the settings are the config's
``dashboard`` section).

* HTML pages: ``/`` (runs), ``/runs/{id}`` (one run, live);
* JSON API under ``/api`` (see ``lada.server.dashboard.api``), OpenAPI document
  at ``/openapi.json`` (no docs UI: it would need a CDN);
* ``/metrics`` (Prometheus text format) and ``/healthz``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from lada.common.config import DashboardConfig
from lada.server.dashboard import api, errors, ops, pages
from lada.server.dashboard.deps import Settings
from lada.server.dashboard.security import OPEN_PATHS, SecurityHeaders, TokenAuth
from lada.server.db.engine import make_engine
from sqlalchemy.orm import sessionmaker
from starlette.middleware.gzip import GZipMiddleware

STATIC_DIR = Path(__file__).parent / "static"


def create_app(
    db_url: str,
    token: str | None = None,
    comm_budget_mb: float | None = None,
    poll_ms: int = DashboardConfig().poll_ms,
) -> FastAPI:
    """The dashboard app over ``db_url`` (read only).

    ``token``: when set, every page and API except ``/healthz`` (and static
    assets) needs ``Authorization: Bearer <token>`` or ``?token=<token>``.
    ``comm_budget_mb``: the communication budget drawn on the bytes chart (a
    page or API call may override it with ``?budget_mb=``).
    ``poll_ms``: how often open pages poll for changes while a run is live.
    """
    engine = make_engine(db_url)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.dispose()

    app = FastAPI(
        lifespan=lifespan,
        title="LaDa dashboard",
        version="1",
        summary="Read-only view of LaDa runs: rounds, clients, allocations, rewards, metrics, events.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.settings = Settings(db_url=db_url, token=token or None, comm_budget_mb=comm_budget_mb,
                                  poll_ms=int(poll_ms))
    app.state.engine = engine
    app.state.sessionmaker = sessionmaker(engine, autoflush=False, expire_on_commit=False)

    app.include_router(api.router)
    app.include_router(ops.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    # outermost last: security headers on everything, then auth, then compression
    app.add_middleware(GZipMiddleware, minimum_size=2048, compresslevel=5)
    app.add_middleware(TokenAuth, token=token or None)
    app.add_middleware(SecurityHeaders)

    errors.install(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            if token:
                schema.setdefault("components", {})["securitySchemes"] = {
                    "bearer": {"type": "http", "scheme": "bearer"}
                }
                schema["security"] = [{"bearer": []}]
                for path, methods in schema["paths"].items():
                    for op in methods.values():
                        if path in OPEN_PATHS:
                            op["security"] = []  # /healthz needs no token
                        else:
                            op.setdefault("responses", {})["401"] = errors.UNAUTHORIZED
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    return app


def serve(db_url: str, dash: DashboardConfig | None = None, log_level: str = "info") -> None:
    """Serve the dashboard with uvicorn until interrupted (``lada dashboard``); ``dash`` is the
    config's ``dashboard`` section (host, port, token, comm budget, poll interval)."""
    import uvicorn

    dash = dash or DashboardConfig()
    app = create_app(db_url, token=dash.token, comm_budget_mb=dash.comm_budget_mb, poll_ms=dash.poll_ms)
    uvicorn.run(app, host=dash.host, port=dash.port, log_level=log_level, proxy_headers=True,
                log_config=log_config())


def log_config() -> dict[str, Any]:
    """uvicorn's logging config with the access log's ``?token=`` values redacted."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    cfg = copy.deepcopy(LOGGING_CONFIG)
    cfg.setdefault("filters", {})["redact_token"] = {"()": "lada.server.dashboard.security.RedactTokenFilter"}
    cfg["handlers"]["access"].setdefault("filters", []).append("redact_token")
    return cfg
