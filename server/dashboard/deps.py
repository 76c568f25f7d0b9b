"""Shared request dependencies: the app's settings and a read-only DB session per request."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker


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
    """The communication budget: ``?budget_mb=`` wins over the app's ``comm_budget_mb``."""
    if budget_mb is not None:
        if budget_mb <= 0:
            raise HTTPException(422, "budget_mb must be > 0")
        return budget_mb
    return settings(request).comm_budget_mb
