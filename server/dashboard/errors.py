"""Error responses of the dashboard: one body shape per status, the same one the OpenAPI document declares.

Bad input is a 422 whose body is FastAPI's ``HTTPValidationError`` (raised by the
parameter constraints, never by hand with another shape); an unknown run or sample
is a 404, a missing or wrong token a 401 and an unreadable database a 503, each
with a ``Problem`` body (``{"detail": "..."}``). Pages get the same statuses as
HTML pages instead of JSON.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from lada.server.dashboard import pages
from pydantic import BaseModel
from sqlalchemy.exc import DatabaseError
from starlette.exceptions import HTTPException as StarletteHTTPException

DB_UNAVAILABLE = "database unavailable or not initialised yet"


class Problem(BaseModel):
    """The body of every 401, 404 and 503 (FastAPI's own shape for an ``HTTPException``)."""

    detail: str


def _problem(description: str) -> dict[str, Any]:
    """A ``Problem`` response, JSON whatever the route's own media type (``/metrics`` is text)."""
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}


NOT_FOUND = {404: {"model": Problem, **_problem("unknown run (or sample)")}}  # "model" registers the component
UNAVAILABLE = {503: _problem(DB_UNAVAILABLE)}
UNAUTHORIZED = _problem("missing or invalid token")


def is_api(request: Request) -> bool:
    p = request.url.path
    return p.startswith("/api") or p in ("/metrics", "/healthz", "/openapi.json")


def install(app: FastAPI) -> None:
    """Register the handlers that give every error its documented shape."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Any:
        if is_api(request) or exc.status_code == 401:  # 401: the token middleware serves its own sign-in page
            return JSONResponse({"detail": str(exc.detail)}, exc.status_code, headers=getattr(exc, "headers", None))
        if exc.status_code == 404:
            what = str(exc.detail) if exc.detail != "Not Found" else "No such page."
            return pages.error_page(request, 404, "Not found", what)
        return pages.error_page(request, exc.status_code, HTTPStatus(exc.status_code).phrase, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def bad_input(request: Request, exc: RequestValidationError) -> Any:
        if is_api(request):
            return JSONResponse({"detail": jsonable_encoder(exc.errors())}, 422)
        msg = "; ".join(f"{'.'.join(str(x) for x in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return pages.error_page(request, 422, "Bad request", msg)

    @app.exception_handler(DatabaseError)  # OperationalError (locked, no table) and "file is not a database"
    async def db_error(request: Request, exc: DatabaseError) -> Any:
        if is_api(request):
            return JSONResponse({"detail": DB_UNAVAILABLE}, 503)
        return pages.error_page(request, 503, "Database unavailable",
                                f"The {DB_UNAVAILABLE}. This page works again once the server has written it.")
