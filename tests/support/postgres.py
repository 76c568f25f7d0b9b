"""A real PostgreSQL server for the tests: where it is, and a fresh database per test.

``scripts/start-postgres.sh`` (run by ``make test`` and so by ``.ci/run``)
starts a private cluster on 127.0.0.1 and writes its URL to
``.lada/test-pg-url``; ``$LADA_TEST_PG_URL`` overrides the file. The role in
that URL may create databases: every test that needs PostgreSQL gets its own,
dropped afterwards, so tests never see each other's runs.

Without a server the PostgreSQL tests skip, except under ``CI=true``, where
they fail: CI must run them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
URL_FILE = ROOT / ".lada" / "test-pg-url"


def pg_url() -> str | None:
    url = os.environ.get("LADA_TEST_PG_URL")
    if not url and URL_FILE.is_file():
        url = URL_FILE.read_text().strip()
    return url or None


def require_pg() -> str:
    """The server's URL, or skip (fail under CI=true) when there is none or it does not answer."""
    url = pg_url()
    why = None
    if url is None:
        why = f"no PostgreSQL: run scripts/start-postgres.sh (writes {URL_FILE}) or set LADA_TEST_PG_URL"
    else:
        try:
            eng = create_engine(url)
            with eng.connect() as c:
                c.execute(text("SELECT 1"))
            eng.dispose()
        except Exception as e:  # noqa: BLE001 - any failure to connect
            why = f"PostgreSQL at {make_url(url).render_as_string(hide_password=True)} does not answer: {e}"
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(why)
    return url


@contextmanager
def fresh_database(prefix: str = "lada_test") -> Iterator[str]:
    """A new, empty database on the test server (dropped afterwards); yields its URL."""
    base = make_url(require_pg())
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
