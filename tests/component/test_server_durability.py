"""What the server's own files survive (issue 15): a full disk during a checkpoint, the
database deleted under a running server, a kill just after a commit, and temporary folders of a
killed checkpoint write.

Real parts: the in-process transport with real clients, a real SQLite database and,
for the full disk, a real tmpfs of a few MB (needs root to mount; skipped otherwise).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from lada.client.app import ClientApp
from lada.common.config import LadaConfig
from lada.server.db.writer import DatabaseGone, Store
from lada.server.federation import Federation
from lada.server.transport.inprocess import InProcessGrid
from sqlalchemy import create_engine, text

from tests.support.paths import TINY

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Crash(BaseException):
    """Ends ``Federation.run`` the way SIGKILL does: no handler runs, the run stays open."""


class ScriptedGrid(InProcessGrid):
    """The in-process transport, calling ``before[t]`` as round ``t`` waits for its clients."""

    def __init__(self, apps: dict, before: dict) -> None:
        super().__init__(apps)
        self.before, self.rounds, self.stopped = before, 0, False

    def wait_for_clients(self, n: int, timeout: float) -> list[str]:
        self.rounds += 1
        if self.rounds in self.before:
            self.before[self.rounds]()
        return super().wait_for_clients(n, timeout)

    def stop(self) -> None:
        self.stopped = True
        super().stop()


def _cfg(model_cache: Path, data_dir: Path, rounds: int) -> LadaConfig:
    return LadaConfig.load(TINY, overrides={"models.cache_dir": str(model_cache), "server.data_dir": str(data_dir),
                                            "run.rounds": rounds}, env=False)


def _federation(cfg: LadaConfig, db: str, before: dict, logs: list[str]) -> tuple[Federation, ScriptedGrid]:
    grid = ScriptedGrid({n: ClientApp(cfg, n) for n in cfg.data.client_domains}, before)
    return Federation(cfg, grid, Store(db), log=logs.append), grid


PATHS_OF_ROUND_2 = ("select p.round_idx, p.author, p.sample_id, t.text from paths p join path_texts t "
                    "on t.id = p.text_id where p.round_idx = 2 order by 2, 3")  # text stored once


def _q(db: str, sql: str) -> list:
    eng = create_engine(db)
    try:
        with eng.connect() as c:
            return list(c.execute(text(sql)).all())
    finally:
        eng.dispose()


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_disk_during_a_checkpoint_does_not_end_the_run(tmp_path: Path, model_cache: Path) -> None:
    """Issue 15 item 2: the data dir on a 4.6 MB tmpfs holds round 1's checkpoint (~3.0 MB with the
    filters' reward contexts) but not
    round 2's, whose optimizer file fails with safetensors' SafetensorError (not an OSError). The
    run goes on with its committed rounds; restarted with space after a crash in round 3, the
    server resumes the same run from round 1's checkpoint and finishes it."""
    db = f"sqlite:///{tmp_path / 'lada.db'}"  # the database is not on the full disk
    with tmpfs(tmp_path / "data", "4600k") as data:
        cfg = _cfg(model_cache, data, rounds=3)

        def crash() -> None:
            raise Crash

        logs: list[str] = []
        fed, _ = _federation(cfg, db, {3: crash}, logs)
        with pytest.raises(Crash):
            fed.run()  # before the fix: SafetensorError after round 2, and the run marked failed
        assert _q(db, "select status from runs") == [("running",)]
        assert [i for (i,) in _q(db, "select idx from rounds where status='done' order by idx")] == [1, 2]
        failed = _q(db, "select message from events where kind='checkpoint_failed'")
        assert len(failed) == 1 and failed[0][0].startswith("round 2: SafetensorError"), failed
        assert any("checkpoint of round 2 failed" in s for s in logs), logs
        ck = data / "checkpoints" / "run-1"
        assert sorted(p.name for p in ck.iterdir()) == ["round-1"]  # no half-written folder holds the space

        subprocess.run(["mount", "-o", "remount,size=64m", str(data)], check=True)  # space again
        logs2: list[str] = []
        again, _ = _federation(cfg, db, {}, logs2)
        again.run()
    assert any("resuming run 1 at round 2" in s and "checkpoint of round 1" in s for s in logs2), logs2
    assert _q(db, "select id, status from runs") == [(1, "finished")]
    assert [i for (i,) in _q(db, "select idx from rounds where status='done' order by idx")] == [1, 2, 3]


def test_a_server_killed_just_after_a_commit_does_not_redo_that_round(tmp_path: Path, model_cache: Path) -> None:
    """A server killed the moment round 2 is committed (the soak's ``after_commit`` kill) resumes
    at round 3: the committed round keeps the rows its clients were told about. Found by the soak
    in CI: the checkpoint came after the commit, so such a kill resumed from round 1's checkpoint
    and redid round 2 over its committed rows."""
    db = f"sqlite:///{tmp_path / 'lada.db'}"
    cfg = _cfg(model_cache, tmp_path / "data", rounds=3)
    logs: list[str] = []
    fed, _ = _federation(cfg, db, {}, logs)
    commit = fed.store.commit_round

    def commit_then_die(run_id: int, idx: int, record: object) -> None:
        commit(run_id, idx, record)
        if idx == 2:
            raise Crash  # nothing of the server runs after this commit

    fed.store.commit_round = commit_then_die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        fed.run()
    paths = _q(db, PATHS_OF_ROUND_2)
    assert paths and [i for (i,) in _q(db, "select idx from rounds where status='done' order by idx")] == [1, 2]
    logs2: list[str] = []
    again, _ = _federation(cfg, db, {}, logs2)
    again.run()
    assert any("resuming run 1 at round 3" in s and "checkpoint of round 2" in s for s in logs2), logs2
    assert _q(db, PATHS_OF_ROUND_2) == paths
    assert [m for (m,) in _q(db, "select message from events where kind='round_start'")] == [
        "round 1", "round 2", "round 3"]
    assert _q(db, "select id, status from runs") == [(1, "finished")]


def test_a_deleted_database_stops_the_run_loudly(tmp_path: Path, model_cache: Path) -> None:
    """Issue 15 item 3: ``rm lada.db lada.db-wal lada.db-shm`` after round 1. The server must not
    commit rounds 2-3 into the deleted file (nor into an empty new one) and finish as if all was
    well: the run stops with DatabaseGone, the clients are told to stop, and the deleted file
    (kept reachable here by hard links) holds round 1 only."""
    path = tmp_path / "lada.db"
    db = f"sqlite:///{path}"
    kept = tmp_path / "kept"
    kept.mkdir()

    def delete_db() -> None:
        for suffix in ("", "-wal", "-shm"):
            f = Path(f"{path}{suffix}")
            if f.exists():
                os.link(f, kept / f"lada.db{suffix}")
                f.unlink()

    cfg = _cfg(model_cache, tmp_path / "data", rounds=3)
    logs: list[str] = []
    fed, grid = _federation(cfg, db, {2: delete_db}, logs)
    with pytest.raises(DatabaseGone, match=r"lada\.db was deleted"):
        fed.run()  # before the fix: rounds 2-3 "committed", the run "finished"
    assert grid.stopped  # the clients are told the run is over, though nothing could be recorded
    assert any("could not record that the run failed" in s and "DatabaseGone" in s for s in logs), logs
    assert not path.exists() or not _q(db, "select name from sqlite_master where name='rounds'")
    fed.store.engine.dispose()
    (kept / "lada.db-shm").unlink(missing_ok=True)
    old = f"sqlite:///{kept / 'lada.db'}"
    assert _q(old, "select idx, status from rounds order by idx") == [(1, "done")]
    assert _q(old, "select status from runs") == [("running",)]  # resumable once the file is back


def test_a_replaced_database_is_refused(tmp_path: Path) -> None:
    """Another file at the database's path (a restored backup, a new empty file) is not the one the
    server opened: no transaction commits into either."""
    path = tmp_path / "lada.db"
    store = Store(f"sqlite:///{path}")
    store.event(None, "note", "server", "before")
    shutil.copy(path, tmp_path / "copy.db")
    os.replace(tmp_path / "copy.db", path)
    with pytest.raises(DatabaseGone, match="was replaced by another file"):
        store.event(None, "note", "server", "after")
    assert [m for (m,) in _q(f"sqlite:///{path}", "select message from events")] == ["before"]


def test_temporary_folders_of_a_killed_checkpoint_write_are_removed(tmp_path: Path, model_cache: Path) -> None:
    """A server SIGKILLed while writing a checkpoint leaves ``.round-N.<pid>.tmp`` behind (its pid
    may even be reused, as PID 1 in a container is): the next write, or a restore, removes it."""
    from lada.server.llm_host import LLMHost

    class NoGrid:
        def stop(self) -> None: ...

    cfg = _cfg(model_cache, tmp_path / "data", rounds=2)
    store = Store(f"sqlite:///{tmp_path / 'lada.db'}")
    fed = Federation(cfg, NoGrid(), store, llm=LLMHost(cfg), log=lambda s: None)
    fed._open_run()
    root = tmp_path / "data" / "checkpoints" / "run-1"

    def leftovers() -> list[Path]:
        out = [root / ".round-1.999999.tmp", root / ".round-2.1.tmp"]
        for d in out:
            d.mkdir(parents=True)
            (d / "llm_adapter.safetensors").write_bytes(b"half written")
        return out

    stale = leftovers()
    fed._checkpoint(1)
    assert not any(d.exists() for d in stale)
    assert sorted(p.name for p in root.iterdir()) == ["round-1"]
    leftovers()
    assert fed._checkpoints().restore(1, fed.llm, fed.alloc) == 1
    assert sorted(p.name for p in root.iterdir()) == ["round-1"]
