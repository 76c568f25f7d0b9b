"""Engines for the run database: SQLite tuned for one writer and many readers, or PostgreSQL.

Any SQLAlchemy URL works. SQLite runs in WAL mode so readers (the dashboard)
never block the writer (the server).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine


def normalize_url(url: str) -> str:
    """``postgres://`` and a bare ``postgresql://`` mean psycopg 3 (the ``postgres`` extra)
    unless psycopg2 is what is installed; every other URL is used as given."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgres", "postgresql"):
        import importlib.util

        have = importlib.util.find_spec
        driver = "psycopg2" if have("psycopg") is None and have("psycopg2") is not None else "psycopg"
        return f"postgresql+{driver}://{rest}"
    return url


def make_engine(url: str) -> Engine:
    """Engine with SQLite tuned for one writer + concurrent readers (WAL); PostgreSQL through psycopg."""
    url = normalize_url(url)
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True  # a restarted database server must not break a long run
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _rec: Any) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    return engine
