"""What a run leaves in its database tells the truth (issue 16 item 3): a failed run's round,
clients and reason; one join per client; metric names that say before/after; every phase timed;
no float32 noise. In-process Federation + a real SQLite Store, the dashboard through TestClient."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from lada.client.app import ClientApp
from lada.common.config import LadaConfig
from lada.server.dashboard.app import create_app
from lada.server.db.tables import Client, Event, Reward, Round, Run
from lada.server.db.writer import Store, tidy
from lada.server.federation import Federation
from lada.server.transport.inprocess import InProcessGrid
from sqlalchemy import select

from tests.support import transport as tx
from tests.support.paths import TINY


class _TrainFails(InProcessGrid):
    """Round 1's probe succeeds (starting accuracies measured), then its train phase fails."""

    def train(self, round_idx: int, allocations: dict) -> dict:
        raise RuntimeError("the clients' learning broke")


def _fed(tiny_overrides: dict, db: str, grid_cls: type[InProcessGrid] = InProcessGrid, rounds: int = 1
         ) -> tuple[Federation, Store]:
    cfg = LadaConfig.load(TINY, overrides={**tiny_overrides, "run.rounds": rounds}, env=False)
    apps = {n: ClientApp(cfg, n) for n in cfg.data.client_domains}
    store = Store(db)
    return Federation(cfg, grid_cls(apps), store, log=lambda s: None), store


def test_a_failed_run_leaves_consistent_state(tiny_overrides: dict, tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'failed.db'}"
    fed, store = _fed(tiny_overrides, db, _TrainFails)
    with pytest.raises(RuntimeError, match="learning broke"):
        fed.run()
    with store.session() as s:
        run = s.get(Run, fed.run_id)
        assert run.status == "failed" and run.finished_at is not None
        assert run.reason == "RuntimeError: the clients' learning broke"
        assert [(r.idx, r.status) for r in s.scalars(select(Round))] == [(1, "failed")]
        assert {c.state for c in s.scalars(select(Client))} == {"left"}
    before = {m.subject for m in store.metrics(fed.run_id) if m.round_idx == 0 and m.name == "accuracy"}
    assert before == {"llm", "client-1", "client-2", "client-3"}  # measured before the failure: kept

    with TestClient(create_app(db)) as c:
        detail = c.get(f"/api/runs/{fed.run_id}").json()
        assert detail["status"] == "failed" and detail["reason"] == run.reason
        assert [r["status"] for r in c.get(f"/api/runs/{fed.run_id}/rounds").json()] == ["failed"]
        assert {x["state"] for x in c.get(f"/api/runs/{fed.run_id}/clients").json()} == {"left"}
        assert all(x["accuracy_start"] is not None for x in c.get(f"/api/runs/{fed.run_id}/clients").json())
        page = c.get(f"/runs/{fed.run_id}").text
        assert "the clients&#39; learning broke" in page and 'id="run-reason" hidden' not in page


class _Absent(InProcessGrid):
    """client-3 joins in round 2 (late); client-1 misses round 2 (gone) and is back in round 3."""

    def wait_for_clients(self, n: int, timeout: float) -> list[str]:
        self.calls = getattr(self, "calls", 0) + 1
        rounds = [["client-1", "client-2"], ["client-2", "client-3"], ["client-1", "client-2", "client-3"]]
        return rounds[self.calls - 1]


def test_each_client_joins_once_in_order(tiny_overrides: dict, tmp_path: Path) -> None:
    fed, store = _fed(tiny_overrides, f"sqlite:///{tmp_path / 'joins.db'}", _Absent, rounds=3)
    fed.run()
    with store.session() as s:
        log = [(e.kind, e.subject) for e in s.scalars(select(Event).order_by(Event.id))
               if e.kind in ("join", "rejoin", "round_start")]
    assert log == [("join", "client-1"), ("join", "client-2"), ("round_start", "server"),
                   ("join", "client-3"), ("round_start", "server"),
                   ("rejoin", "client-1"), ("round_start", "server")]


def test_the_transport_logs_enrolment_not_joins() -> None:
    """The grid's Register says "enrol" (a new process) or "reenrol" (the same one): joining the
    run is the Federation's event, so a client does not join twice in the event log."""
    with tx.grpc_server() as srv:
        seen: list[tuple[str, str]] = []
        srv.grid.on_event = lambda kind, subject, message: seen.append((kind, subject))
        tx.register(tx.stubs(srv.channel()), "client-1")
        tx.register(tx.stubs(srv.channel()), "client-1")  # the same process again
        tx.register(tx.stubs(srv.channel()), "client-1", instance="inst-b")  # a new process
    assert seen == [("enrol", "client-1"), ("reenrol", "client-1"), ("enrol", "client-1")]


def test_stored_rounds_say_what_their_values_mean(tiny_overrides: dict, tmp_path: Path) -> None:
    """Every phase stdout prints is stored (``record`` too); the public-mix accuracy a round measures
    at its start is named for it, and drawn as the value after the round before; stored values
    carry no float32 noise (the printed table keeps the unrounded ones)."""
    db = f"sqlite:///{tmp_path / 'ok.db'}"
    fed, store = _fed(tiny_overrides, db)
    fed.run()
    printed = fed.history[0].timings
    assert list(printed) == ["teach", "probe", "allocate", "client_learn", "server_learn", "filter_update", "record"]
    with store.session() as s:
        rnd = s.scalars(select(Round)).one()
        assert rnd.timings == {k: tidy(v) for k, v in printed.items()}
        rewards = [v for (v,) in s.execute(select(Reward.value))]
    metrics = store.metrics(fed.run_id)
    assert all(m.value == tidy(m.value) for m in metrics) and all(v == tidy(v) for v in rewards)
    names = {(m.round_idx, m.subject, m.name) for m in metrics}
    assert {(1, n, "public_accuracy_before") for n in ("llm", "client-1", "client-2", "client-3")} <= names
    assert not [k for k in names if k[2] == "public_accuracy"]
    with TestClient(create_app(db)) as c:
        charts = c.get(f"/api/runs/{fed.run_id}/charts").json()
    assert {s["name"]: s["x"] for s in charts["public_accuracy"]} == {n: [0] for n in
                                                                     ("client-1", "client-2", "client-3", "llm")}


def test_tidy_rounds_noise_not_data() -> None:
    assert tidy(float(np.float32(0.156))) == 0.156 and tidy(1 / 3) == 0.333333
    assert tidy(123456789.0) == 123456789.0 and tidy(1234567.891) == 1234568.0 and math.isnan(tidy(math.nan))
