"""The run database on SQLite and on a real PostgreSQL: Alembic migrations, JSON
columns, concurrent startup, ``lada db``, and the dashboard reading PostgreSQL.

Every test that takes ``backend`` runs once per database; the PostgreSQL runs
use a fresh database on the server ``scripts/start-postgres.sh`` started
(see ``tests/support/postgres.py``; skipped without one, failed under CI).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from lada.server.dashboard.app import create_app
from lada.server.db import migrations
from lada.server.db.engine import make_engine, normalize_url
from lada.server.db.tables import Base, Round, Run
from lada.server.db.writer import RoundRecord, Store
from sqlalchemy import inspect, select, text
from sqlalchemy.engine import make_url

from tests.support import dashboard as fx
from tests.support.postgres import fresh_database

TABLES = {"runs", "clients", "rounds", "public_samples", "paths", "path_texts", "allocations", "rewards", "metrics",
          "events"}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the parametrized backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'run.db'}"
    else:
        with fresh_database() as url:
            yield url


def _tables(url: str) -> set[str]:
    eng = make_engine(url)
    try:
        return set(inspect(eng).get_table_names())
    finally:
        eng.dispose()


# --------------------------------------------------------------------------- migrations
def test_migrations_build_exactly_the_models(db_url: str) -> None:
    """Upgrading an empty database to head gives the schema the SQLAlchemy models describe."""
    eng = make_engine(db_url)
    assert migrations.upgrade(eng) == migrations.head_revision()
    with eng.connect() as conn:
        assert migrations.current_revision(conn) == migrations.head_revision()
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    eng.dispose()
    assert diff == [], f"migrations and models disagree; write a new revision: {diff}"
    assert _tables(db_url) == TABLES | {"alembic_version"}


def test_downgrade_to_base_and_back(db_url: str) -> None:
    eng = make_engine(db_url)
    migrations.upgrade(eng)
    with eng.begin() as conn:
        command.downgrade(migrations.alembic_config(connection=conn), "base")
    assert _tables(db_url) <= {"alembic_version"}
    assert migrations.upgrade(eng) == migrations.head_revision()
    eng.dispose()
    assert TABLES <= _tables(db_url)


def test_current_database_takes_the_fast_path(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Store(db_url).engine.dispose()

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("a current database must not run Alembic")

    monkeypatch.setattr(command, "upgrade", boom)
    t0 = time.perf_counter()
    Store(db_url).engine.dispose()
    assert time.perf_counter() - t0 < 2.0


def test_pre_alembic_database_is_adopted(db_url: str) -> None:
    """A database made by create_all (before migrations existed) is stamped, upgraded, and keeps its rows."""
    eng = make_engine(db_url)
    Base.metadata.create_all(eng)
    with eng.begin() as c:
        c.execute(text("INSERT INTO runs (name, status, method, config, rounds_total, current_round, created_at) "
                       "VALUES ('old', 'finished', 'lada', '{}', 1, 1, CURRENT_TIMESTAMP)"))
    eng.dispose()
    store = Store(db_url)
    with store.engine.connect() as conn:
        assert migrations.current_revision(conn) == migrations.head_revision()
        assert conn.execute(text("SELECT name FROM runs")).scalar_one() == "old"
    store.engine.dispose()


def test_concurrent_first_start_does_not_race(db_url: str, tmp_path: Path) -> None:
    """Several processes opening one empty database at the same instant: one migrates, all succeed."""
    start_at = time.time() + 4.0
    code = (
        "import sys, time\n"
        "from lada.server.db.writer import Store\n"
        f"time.sleep(max(0.0, {start_at!r} - time.time()))\n"
        "Store(sys.argv[1]).engine.dispose()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, db_url], stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errs
    eng = make_engine(db_url)
    with eng.connect() as c:
        versions = c.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert versions == [migrations.head_revision()]
    eng.dispose()


def test_cli_db_upgrade_and_current(db_url: str) -> None:
    def lada(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lada.cli", "db", *args, "--server.db", db_url],
                              capture_output=True, text=True, timeout=120)

    before = lada("current")
    assert before.returncode == 1 and "current (none)" in before.stdout
    up = lada("upgrade")
    assert up.returncode == 0, up.stderr
    assert f"at revision {migrations.head_revision()}" in up.stdout
    password = make_url(db_url).password
    assert not password or password not in up.stdout + up.stderr, "the password must not be printed"
    after = lada("current")
    assert after.returncode == 0 and f"current {migrations.head_revision()}" in after.stdout


def test_url_forms() -> None:
    assert normalize_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert normalize_url("postgres://u:p@h:5/db") == "postgresql+psycopg://u:p@h:5/db"
    assert normalize_url("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"


# --------------------------------------------------------------------------- JSON columns and the Store
def test_json_columns_and_store_round_trip(db_url: str) -> None:
    config = {"run": {"name": "ünïcødé ✓", "rounds": 3, "lam": 0.25, "none": None, "ok": True},
              "data": {"client_domains": {"client-1": "arith"}, "list": [1, 2.5, "x", [None]]}}
    store = Store(db_url)
    rid = store.create_run("json", "lada", config, 3)
    store.start_round(rid, 1)
    rec = RoundRecord()
    rec.allocations.append(("client-1", "llm", "public-00001", 0.75, 0))
    rec.rewards.append(("client-1", "llm", "*", 0.6))
    rec.paths.append(("llm", "public-00001", "1 + 1 = 2 . #### 2", True))
    rec.metrics.append((1, "client-1", "accuracy", 0.5))
    rec.timings = {"teach": 1.5, "probe": 0.25}
    store.commit_round(rid, 1, rec)
    store.commit_round(rid, 1, rec)  # a retried round replaces, never duplicates
    with store.session() as s:
        assert s.get(Run, rid).config == config
        rnd = s.scalars(select(Round).where(Round.run_id == rid)).one()
        assert rnd.timings == {"teach": 1.5, "probe": 0.25} and rnd.status == "done"
    assert store.last_committed_round(rid) == 1
    assert [(m.subject, m.value) for m in store.metrics(rid)] == [("client-1", 0.5)]
    assert json.loads(rec.to_json())["n_alloc"] == 1
    store.engine.dispose()


# --------------------------------------------------------------------------- the dashboard on both databases
ENDPOINTS = ["", "/clients", "/rounds", "/metrics", "/charts", "/allocations", "/allocations?direction=up",
             "/events", f"/samples/{fx.XSS_SAMPLE_ID}"]
_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def _norm(v: object) -> object:
    """Drop what legitimately differs between two fills of the same run: times, its DB URL, float noise."""
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    if isinstance(v, str) and _ISO.match(v):
        return "<time>"
    if isinstance(v, str) and v.startswith(("sqlite:", "postgresql")):
        return "<the run's own database URL>"
    if isinstance(v, float) and math.isfinite(v):
        return float(f"{v:.9g}")
    return v


def _api_dump(url: str) -> dict[str, object]:
    out: dict[str, object] = {}
    with TestClient(create_app(url)) as c:
        runs = c.get("/api/runs").json()
        out["/api/runs"] = runs
        for r in runs:
            for suffix in ENDPOINTS:
                path = f"/api/runs/{r['id']}{suffix}"
                resp = c.get(path)
                assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
                out[path] = resp.json()
        for page in ["/", f"/runs/{runs[0]['id']}", "/metrics", "/healthz"]:
            assert c.get(page).status_code == 200, page
    return out


def test_dashboard_reads_postgres_like_sqlite(tmp_path: Path) -> None:
    """The same two runs written to SQLite and to PostgreSQL: every API answer is the same."""
    dumps = []
    sqlite_url = f"sqlite:///{tmp_path / 'two.db'}"
    with fresh_database() as pg_url:
        for url in (sqlite_url, pg_url):
            fx.fill_demo_run(url, name="finished-run", n_public=300, budget=40, server_budget=10)
            fx.fill_demo_run(url, name="live-run", n_public=300, budget=40, server_budget=10, finished=False,
                             seed=1)
            dumps.append(_norm(_api_dump(url)))
    assert dumps[0].keys() == dumps[1].keys()
    for path in dumps[0]:
        assert dumps[0][path] == dumps[1][path], path


def test_dashboard_never_migrates(db_url: str) -> None:
    """The dashboard may start first: it serves an empty database without creating tables."""
    with TestClient(create_app(db_url)) as c:
        health = c.get("/healthz")
        assert health.status_code == 200 and health.json()["schema_ready"] is False
        assert c.get("/api/runs").json() == []
        assert "alembic_version" not in _tables(db_url) and not (TABLES & _tables(db_url))
        Store(db_url).engine.dispose()  # the server arrives and migrates
        assert c.get("/healthz").json()["schema_ready"] is True
