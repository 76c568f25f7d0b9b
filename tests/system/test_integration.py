"""A real server and real client processes on localhost at tiny sizes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.paths import TINY, free_port
from tests.support.paths import cli as _cli
from tests.support.postgres import fresh_database


def run_grpc_federation(tmp_path: Path, model_cache: Path, extra: tuple[str, ...] = (), db: str | None = None
                        ) -> tuple[str, str]:
    """Start `lada server` and 3 `lada client` processes; return (db url, server output)."""
    port = free_port()
    db = db or f"sqlite:///{tmp_path / 'lada.db'}"
    common = ["--config", str(TINY), "--models.cache_dir", str(model_cache), "--server.address",
              f"127.0.0.1:{port}", "--server.data_dir", str(tmp_path), "--server.db", db, *extra]
    subprocess.run(_cli("models", "build", *common), check=True, capture_output=True, timeout=300)
    server = subprocess.Popen(_cli("server", *common, "--transport.linger", "2", "--transport.heartbeat", "1"),
                              stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    clients = [subprocess.Popen(_cli("client", *common, "--name", f"client-{i}", "--quiet"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for i in (1, 2, 3)]
    try:
        out, _ = server.communicate(timeout=400)
        assert server.returncode == 0, out
        for c in clients:
            assert c.wait(timeout=60) == 0
    finally:
        for p in [server, *clients]:
            if p.poll() is None:
                p.kill()
    return db, out


@pytest.fixture(params=["sqlite", "postgresql"])
def run_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The server's database: SQLite (WAL) under tmp_path, or a fresh one on the test PostgreSQL server."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'lada.db'}"
    else:
        with fresh_database() as url:
            yield url


def test_grpc_run_end_to_end(tmp_path: Path, model_cache: Path, run_db: str) -> None:
    db, out = run_grpc_federation(tmp_path, model_cache, db=run_db)
    assert "[round 2/2]" in out and "| model |" in out
    eng = create_engine(db)
    with eng.connect() as c:
        assert c.execute(text("select status from runs")).scalar_one() == "finished"
        if eng.dialect.name == "sqlite":
            assert c.execute(text("pragma journal_mode")).scalar_one() == "wal"
        rounds = c.execute(text("select idx from rounds where status='done' order by idx")).scalars().all()
        assert rounds == [1, 2]
        for r in rounds:
            for k in (1, 2, 3):
                n = c.execute(text("select count(*) from allocations where round_idx=:r and receiver=:k"),
                              {"r": r, "k": f"client-{k}"}).scalar_one()
                assert n > 0, f"client-{k} got no allocation in round {r}"
        vals = c.execute(text("select name, value from metrics "
                              "where name in ('accuracy','public_accuracy_before','reward')")).all()
        assert vals and all(0.0 <= v <= 1.0 for _, v in vals)
        n_clients = c.execute(text("select count(*) from clients")).scalar_one()
        assert n_clients == 3
        # `lada server` records heartbeats: the last one is later than the join, for every client
        beat = c.execute(text("select count(*) from clients where last_heartbeat > joined_at")).scalar_one()
        assert beat == 3
        kinds = set(c.execute(text("select kind from events")).scalars())
        assert {"join", "round_start", "round_end"} <= kinds
        up = c.execute(text("select sum(value) from metrics where name='bytes_up'")).scalar_one()
        assert up > 0
