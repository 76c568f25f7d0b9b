"""A path's text is stored once (``path_texts``, issue 17): rounds, authors and runs that write the
same text reference one row, every path still reads back its own text (the dashboard's sample
detail too), and migration 0003 moves an older database's texts without losing or mixing any."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from lada.server.db import migrations
from lada.server.db.engine import make_engine
from lada.server.db.reads import sample_detail
from lada.server.db.tables import ReasoningPath, text_key
from lada.server.db.writer import DatabaseGone, RoundRecord, Store
from sqlalchemy import select, text


def _record(texts: dict[tuple[str, str], str]) -> RoundRecord:
    rec = RoundRecord()
    rec.paths = [(author, sid, t, True) for (author, sid), t in texts.items()]
    return rec


@pytest.mark.parametrize("bulk", [True, False])
def test_each_text_is_stored_once_and_read_back_per_path(tmp_path: Path, bulk: bool) -> None:
    store = Store(f"sqlite:///{tmp_path / 'run.db'}")
    store.bulk = bulk
    same = {("llm", "s-0"): "2 + 2 = 4 . #### 4", ("c1", "s-0"): "2 + 2 = 5 . #### 5",
            ("c2", "s-0"): "2 + 2 = 4 . #### 4"}
    run = store.create_run("r", "lada", {}, 3)
    for idx in (1, 2):
        store.start_round(run, idx)
        store.commit_round(run, idx, _record({**same, ("c1", "s-1"): f"round {idx} #### 1"}))
    store.commit_round(run, 2, _record({**same, ("c1", "s-1"): "redone #### 1"}))  # a redo after a crash
    other = store.create_run("r2", "lada", {}, 1)
    store.commit_round(other, 1, _record(same))
    with store.engine.connect() as c:
        stored = {bytes(k): t for k, t in c.execute(text("select sha256, text from path_texts"))}
        assert c.execute(text("select count(*) from paths")).scalar_one() == 4 + 4 + 3
    # two distinct texts in `same`, round 1's, round 2's first try (left, unreferenced) and its redo
    assert sorted(stored.values()) == sorted({"2 + 2 = 4 . #### 4", "2 + 2 = 5 . #### 5", "round 1 #### 1",
                                               "round 2 #### 1", "redone #### 1"})
    assert all(text_key(t) == k for k, t in stored.items())
    with store.session() as s:
        got = {(r, a, sid): t for r, a, sid, t in s.execute(
            select(ReasoningPath.round_idx, ReasoningPath.author, ReasoningPath.sample_id, ReasoningPath.text)
            .where(ReasoningPath.run_id == run))}
        detail = sample_detail(s, run, "s-0")
    assert got[(1, "c1", "s-1")] == "round 1 #### 1" and got[(2, "c1", "s-1")] == "redone #### 1"
    assert got[(2, "c1", "s-0")] == "2 + 2 = 5 . #### 5" and got[(2, "c2", "s-0")] == "2 + 2 = 4 . #### 4"
    assert detail is not None
    assert [(p.round_idx, p.author, p.text) for p in detail.paths] == [
        (i, a, same[(a, "s-0")]) for i in (1, 2) for a in ("c1", "c2", "llm")]
    again = Store(f"sqlite:///{tmp_path / 'run.db'}")  # a restarted server: nothing remembered, looked up
    again.commit_round(again.create_run("r3", "lada", {}, 1), 1, _record(same))
    with again.engine.connect() as c:
        assert c.execute(text("select count(*) from path_texts")).scalar_one() == len(stored)


def test_a_rolled_back_commit_leaves_no_remembered_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Store remembers the ids of texts it stored only once their transaction committed: after a
    commit that failed, the same texts are stored again, not referenced by ids that do not exist."""
    store = Store(f"sqlite:///{tmp_path / 'run.db'}")
    run = store.create_run("r", "lada", {}, 2)
    calls = {"n": 0}
    real = store.check_file

    def fail_at_commit() -> None:  # the check before the commit of the round's transaction fails
        calls["n"] += 1
        if calls["n"] == 2:
            raise DatabaseGone("gone")
        real()

    monkeypatch.setattr(store, "check_file", fail_at_commit)
    with pytest.raises(DatabaseGone):
        store.commit_round(run, 1, _record({("c1", "s-0"): "kept #### 1"}))
    store.commit_round(run, 1, _record({("c1", "s-0"): "kept #### 1"}))
    with store.session() as s:
        assert s.execute(select(ReasoningPath.text)).scalars().all() == ["kept #### 1"]


def test_migration_moves_existing_texts(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    eng = make_engine(url)
    assert migrations.upgrade(eng, "0002") == "0002"
    rows = [(i, f"c{i % 3}", f"s-{i % 7}", f"path {i % 5} #### {i % 5}") for i in range(12_000)]  # > 2 pages
    with eng.begin() as c:
        c.execute(text("INSERT INTO runs (name, status, method, config, rounds_total, current_round, created_at) "
                       "VALUES ('old', 'finished', 'lada', '{}', 1, 1, CURRENT_TIMESTAMP)"))
        c.execute(text("INSERT INTO paths (run_id, round_idx, author, sample_id, text, correct) "
                       "VALUES (1, :r, :a, :s, :t, 1)"), [{"r": r, "a": a, "s": s, "t": t} for r, a, s, t in rows])
    assert migrations.upgrade(eng) == migrations.head_revision()
    with eng.connect() as c:
        assert c.execute(text("select count(*) from path_texts")).scalar_one() == 5
        got = c.execute(text("select p.round_idx, p.author, p.sample_id, t.text from paths p "
                             "join path_texts t on t.id = p.text_id order by p.round_idx")).all()
    assert [tuple(r) for r in got] == rows
    with eng.begin() as c:
        command.downgrade(migrations.alembic_config(connection=c), "0002")
    with eng.connect() as c:
        back = c.execute(text("select round_idx, author, sample_id, text from paths order by round_idx")).all()
    eng.dispose()
    assert [tuple(r) for r in back] == rows
