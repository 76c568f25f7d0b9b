"""One server per data dir and database (issue 15 item 4), with real processes: a second
`lada server` on a running server's data dir, or on its database from another data dir, is
refused before it does any work, and the first server's run is unaffected."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.paths import TINY, free_port
from tests.support.paths import cli as _cli
from tests.support.postgres import fresh_database, require_pg
from tests.support.transport import built_models  # noqa: F401 - fixture


def _args(data_dir: Path, db: str, cache: Path) -> list[str]:
    return ["--config", str(TINY), "--models.cache_dir", str(cache), "--server.address",
            f"127.0.0.1:{free_port()}", "--server.data_dir", str(data_dir), "--server.db", db, "--run.rounds", "4"]


@pytest.mark.slow
def test_a_second_server_on_the_same_data_dir_or_database_is_refused(tmp_path: Path,
                                                                     built_models: Path) -> None:  # noqa: F811
    db = f"sqlite:///{tmp_path / 'db' / 'lada.db'}"  # outside the data dir: locked on its own
    a_dir = tmp_path / "a"
    a_args = _args(a_dir, db, built_models)
    logs = {n: open(tmp_path / f"{n}.log", "wb") for n in ("a", "c1", "c2", "c3")}
    a = subprocess.Popen(_cli("server", *a_args, "--transport.linger", "2"), stdout=logs["a"],
                         stderr=subprocess.STDOUT)
    clients = [subprocess.Popen(_cli("client", *a_args, "--name", f"client-{i}", "--quiet"),
                                stdout=logs[f"c{i}"], stderr=subprocess.STDOUT) for i in (1, 2, 3)]
    eng = create_engine(db)

    def q(sql: str) -> list:
        try:
            with eng.connect() as c:
                return list(c.execute(text(sql)).all())
        except Exception:  # noqa: BLE001 - the schema may not exist yet
            return []

    try:
        end = time.time() + 200
        while not q("select idx from rounds where idx=1") and time.time() < end and a.poll() is None:
            time.sleep(0.2)
        assert q("select idx from rounds where idx=1"), (tmp_path / "a.log").read_text()
        t0 = time.time()
        second = {what: subprocess.Popen(_cli("server", *_args(data_dir, db, built_models)), stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)
                  for what, data_dir in ((f"data dir {a_dir}", a_dir), ("database", tmp_path / "b"))}
        for what, b in second.items():
            try:
                out, _ = b.communicate(timeout=90)
            finally:
                b.kill()
            assert b.returncode == 4, (what, out[-3000:])
            assert f"another lada server holds the {what}" in out and '"pid": ' in out, out[-2000:]
            assert "resuming" not in out and "listening" not in out
        assert time.time() - t0 < 90  # refused before loading models or opening the database
        assert a.poll() is None  # ... while A still runs
        assert a.wait(300) == 0, (tmp_path / "a.log").read_text()[-3000:]
        for c in clients:
            assert c.wait(60) == 0
        # A's run alone: one run, each round committed once, nobody resumed it
        assert q("select id, status from runs") == [(1, "finished")]
        assert q("select idx, status from rounds order by idx") == [(t, "done") for t in (1, 2, 3, 4)]
        assert q("select count(*) from events where kind='resume'") == [(0,)]
        # the locks go with the process: the next server on this data dir and database starts
        again = subprocess.run(_cli("db", "current", "--server.db", db), capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
    finally:
        for p in [a, *clients]:
            if p.poll() is None:
                p.kill()
                p.wait(10)
        eng.dispose()
        for f in logs.values():
            f.close()


def test_the_lock_is_exclusive_and_dies_with_its_holder(tmp_path: Path) -> None:
    """In-process: data dir and SQLite-file locks exclude a second holder and are free again on
    release (the kernel frees them when a process dies, even by SIGKILL)."""
    from lada.server.lock import ServerLock, ServerLocked

    db = f"sqlite:///{tmp_path / 'elsewhere' / 'lada.db'}"
    with ServerLock(tmp_path / "a", db):
        with pytest.raises(ServerLocked, match="data dir"):
            ServerLock(tmp_path / "a", "sqlite:///" + str(tmp_path / "other.db")).acquire()
        with pytest.raises(ServerLocked, match="database"):
            ServerLock(tmp_path / "b", db).acquire()
        # a refused acquire holds nothing: b's data dir is free
        with ServerLock(tmp_path / "b", f"sqlite:///{tmp_path / 'b.db'}"):
            pass
    path = str(tmp_path / "a" / "server.lock")
    killed = subprocess.Popen([sys.executable, "-c",
                               f"import fcntl,os,time; fd=os.open({path!r}, os.O_RDWR|os.O_CREAT);"
                               " fcntl.flock(fd, fcntl.LOCK_EX); print(1, flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE)
    assert killed.stdout.readline().strip() == b"1"
    with pytest.raises(ServerLocked):
        ServerLock(tmp_path / "a", db).acquire()
    killed.kill()
    killed.wait(10)
    ServerLock(tmp_path / "a", db).acquire().release()


def test_postgres_database_is_locked_for_one_server(tmp_path: Path) -> None:
    require_pg()
    from lada.server.lock import ServerLock, ServerLocked

    with fresh_database() as url, ServerLock(tmp_path / "a", url, "tiny"):
        with pytest.raises(ServerLocked, match="run 'tiny' of the database"):
            ServerLock(tmp_path / "b", url, "tiny").acquire()
        # several runs may write one PostgreSQL database at once, one server each
        ServerLock(tmp_path / "c", url, "other").acquire().release()
