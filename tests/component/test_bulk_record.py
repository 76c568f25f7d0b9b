"""A round committed by bulk inserts (``server.bulk_record``, issue 17) stores exactly the rows the
one-object-per-row commit stores, and a redone round still replaces its earlier try."""

from __future__ import annotations

from pathlib import Path

from lada.server.db.tables import Allocation, Metric, ReasoningPath, Reward, Round
from lada.server.db.writer import RoundRecord, Store
from sqlalchemy import select


def _record(seed: int) -> RoundRecord:
    rec = RoundRecord()
    for c in range(3):
        name = f"client-{c}"
        rec.allocations += [(name, "llm", f"s-{i}", 0.1 * i + seed, i) for i in range(5)]
        rec.rewards += [(name, "llm", f"s-{i}", 0.15600000321865082 + seed) for i in range(5)]
        rec.rewards.append((name, "llm", "*", 0.5))
        rec.paths += [(name, f"s-{i}", f"path {i} #### {i + seed}", i % 2 == 0) for i in range(5)]
        rec.metrics += [(2, name, "accuracy", 0.25 + seed), (0, name, "accuracy", 0.125)]
    rec.allocations.append(("llm", "client-0", "s-1", 0.9, 0))
    rec.metrics.append((2, "llm", "accuracy", 0.5))
    rec.timings = {"teach": 1.23456789, "record": 0.1}
    return rec


def _rows(store: Store, run_id: int) -> dict[str, list[tuple]]:
    cols = {Allocation: ("round_idx", "receiver", "sender", "sample_id", "score", "rank"),
            Reward: ("round_idx", "receiver", "sender", "sample_id", "value"),
            ReasoningPath: ("round_idx", "author", "sample_id", "text", "correct"),
            Metric: ("round_idx", "subject", "name", "value"),
            Round: ("idx", "status", "timings")}
    out = {}
    with store.session() as s:
        for model, names in cols.items():
            got = s.execute(select(*(getattr(model, n) for n in names)).where(model.run_id == run_id)).all()
            out[model.__tablename__] = sorted(tuple(str(v) for v in row) for row in got)
    return out


def _store(path: Path, bulk: bool) -> tuple[Store, int]:
    store = Store(f"sqlite:///{path}")
    store.bulk = bulk
    run_id = store.create_run("r", "lada", {}, 3)
    store.record_metrics(run_id, [(0, "client-0", "accuracy", 0.75)])  # measured before round 1
    store.start_round(run_id, 1)
    store.commit_round(run_id, 1, _record(1))
    store.start_round(run_id, 2)
    store.commit_round(run_id, 2, _record(0))
    store.commit_round(run_id, 2, _record(3))  # the round redone after a crash: replaces its first try
    return store, run_id


def test_bulk_commit_stores_the_rows_the_orm_commit_stores(tmp_path: Path) -> None:
    orm, a = _store(tmp_path / "orm.db", bulk=False)
    bulk, b = _store(tmp_path / "bulk.db", bulk=True)
    got, want = _rows(bulk, b), _rows(orm, a)
    assert got == want
    assert len(want["allocations"]) == 2 * 16 and len(want["paths"]) == 2 * 15  # nothing duplicated
    round0 = [r for r in want["metrics"] if r[0] == "0"]
    assert sorted(round0) == [("0", f"client-{c}", "accuracy", "0.125") for c in range(3)]  # replaced, once each
    assert ("2", "client-0", "llm", "s-0", "3.156") in want["rewards"]  # tidied, from the redo


def test_bulk_commit_creates_a_round_row_it_lacks(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'x.db'}")
    run_id = store.create_run("r", "lada", {}, 1)
    store.commit_round(run_id, 1, _record(0))  # no start_round first
    assert _rows(store, run_id)["rounds"] == [("1", "done", str({"teach": 1.23457, "record": 0.1}))]
