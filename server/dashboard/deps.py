"""Shared request dependencies: the app's settings and a read-only DB session per request."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Path, Query, Request
from sqlalchemy.orm import Session, sessionmaker

ID_MAX = 2**63 - 1
"""The largest integer SQLite (and a PostgreSQL BIGINT) holds: binding a larger one raises OverflowError (a 500),
so every id a route takes is bounded to it by its declared type (a 422 before any query)."""

RunId = Annotated[int, Path(ge=0, le=ID_MAX, description="run id")]
EventId = Annotated[int, Query(ge=0, le=ID_MAX, description="only events with a larger id (live tail)")]
CompareIds = Annotated[list[int], Query(min_length=2, max_length=12, description="run ids (repeat: ?runs=1&runs=2)")]
BudgetMb = Annotated[float | None, Query(gt=0, allow_inf_nan=False,
                                         description="communication budget in MB (overrides the app's)")]


@dataclass(frozen=True)
class Settings:
    """What ``create_app`` was given (its defaults are the config's ``dashboard`` section)."""

    db_url: str
    token: str | None
    comm_budget_mb: float | None
    poll_ms: int


def settings(request: Request) -> Settings:
    return request.app.state.settings


def session(request: Request) -> Iterator[Session]:
    """One session (one read transaction, one consistent snapshot) per request; never commits."""
    maker: sessionmaker = request.app.state.sessionmaker
    with maker() as s:
        try:
            yield s
        finally:
            s.rollback()


def budget(request: Request, budget_mb: float | None) -> float | None:
    """The communication budget: ``?budget_mb=`` (already checked > 0 by ``BudgetMb``) wins over the app's."""
    return budget_mb if budget_mb is not None else settings(request).comm_budget_mb


def distinct_runs(ids: list[int]) -> list[int]:
    """The compared run ids in the order given, each once; two distinct ones at least (a 422 otherwise,
    raised as FastAPI's own validation error so the body keeps its documented shape)."""
    from fastapi.exceptions import RequestValidationError

    out = list(dict.fromkeys(ids))
    bad = [i for i in out if not 0 <= i <= ID_MAX]
    if bad or len(out) < 2:
        msg = f"run id {bad[0]} out of range" if bad else "give two or more distinct runs to compare"
        raise RequestValidationError([{"type": "value_error", "loc": ("query", "runs"), "msg": msg, "input": ids}])
    return out
