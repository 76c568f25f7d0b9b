"""The in-process transport runs the same round code; runs are deterministic for a seed."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from lada.client.app import KEEP_ROUND_STARTS, ClientApp
from lada.common.config import LadaConfig
from lada.common.data import is_correct
from lada.common.learner import Pair
from lada.common.rounds import TaskInfo
from lada.common.state import StateError
from lada.server.allocation import LLM
from lada.server.db.writer import Store, tidy
from lada.server.federation import Federation, RoundState
from lada.server.transport.inprocess import InProcessGrid

from tests.support.clients import learn_a_round
from tests.support.paths import TINY


def _run(overrides: dict, db: str | None = None) -> Federation:
    cfg = LadaConfig.load(TINY, overrides={**overrides, "run.rounds": 1}, env=False)
    apps = {n: ClientApp(cfg, n) for n in cfg.data.client_domains}
    fed = Federation(cfg, InProcessGrid(apps), Store(db) if db else None, log=lambda s: None)
    fed.run()
    return fed


def test_inprocess_deterministic(tiny_overrides: dict, tmp_path) -> None:
    a = _run(tiny_overrides, f"sqlite:///{tmp_path / 'a.db'}")
    b = _run(tiny_overrides)

    def learned(fed: Federation) -> dict:  # tasks carry the run key only with a database: bytes down differ
        return {n: {k: v for k, v in m.items() if k != "bytes_down"} for n, m in fed.history[0].clients.items()}

    assert learned(a) == learned(b)
    assert a.history[0].llm == b.history[0].llm
    assert set(a.history[0].clients) == {"client-1", "client-2", "client-3"}
    table = a.summary_table()
    assert "public mix before" in table and "client-3" in table


def test_answer_only_scenario_with_an_llm_blind_spot(tiny_overrides: dict) -> None:
    """The experiment's scenario knobs run end to end: labels-only client data (local
    self-training), an LLM pre-trained without client-3's domain, a server mix without it."""
    fed = _run({**tiny_overrides, "data.private_solutions": False, "data.server_domains": ["arith", "shop"],
                "models.llm_pretrain_domains": ["arith", "count", "shop"]})
    assert {s.domain for s in fed.server_train} == {"arith", "shop"}
    assert set(fed.history[0].clients) == {"client-1", "client-2", "client-3"}
    assert all(0.0 <= v["accuracy"] <= 1.0 for v in fed.history[0].clients.values())


def test_pairs_without_a_negative_get_no_contrast(tiny_overrides: dict) -> None:
    """An empty y⁻ (the receiver was already right) means SFT on y⁺ only: no CD term."""
    cfg = LadaConfig.load(TINY, overrides=tiny_overrides, env=False)
    app = ClientApp(cfg, "client-2")
    pub = app.train_set[:6]
    pairs = [Pair(s.id, s.question, s.path, "") for s in pub]
    rep = app.learner.learn_round([], pairs)
    assert rep.losses["cd"] == 0.0 and rep.losses["pos"] > 0 and rep.steps > 0
    pairs[0] = Pair(pub[0].id, pub[0].question, pub[0].path, "#### 0")
    rep = app.learner.learn_round([], pairs)
    assert rep.losses["cd"] > 0


def test_llm_learns_on_its_own_data_without_slm_paths(tiny_overrides: dict) -> None:
    """Local-only and one-direction runs still fine-tune the LLM on its server mix (a clean
    control: only the SLM paths differ between methods); with no mix it stays untouched."""
    assert _run({**tiny_overrides, "run.method": "local_only"}).llm.version == 1
    assert _run({**tiny_overrides, "run.bidirectional": False}).llm.version == 1
    assert _run({**tiny_overrides, "run.method": "local_only", "data.n_server_train": 0}).llm.version == 0


class _LateGrid(InProcessGrid):
    """client-3 is not there in round 1 and joins in round 2."""

    def wait_for_clients(self, n: int, timeout: float) -> list[str]:
        self.calls = getattr(self, "calls", 0) + 1
        names = sorted(self.apps)
        return names[:2] if self.calls == 1 else names


def test_late_joiner_gets_its_before_accuracy(tiny_overrides: dict, tmp_path) -> None:
    cfg = LadaConfig.load(TINY, overrides={**tiny_overrides, "run.rounds": 2}, env=False)
    apps = {n: ClientApp(cfg, n) for n in cfg.data.client_domains}
    store = Store(f"sqlite:///{tmp_path / 'late.db'}")
    fed = Federation(cfg, _LateGrid(apps), store, log=lambda s: None)
    fed.run()
    assert set(fed.history[0].clients) == {"client-1", "client-2"}
    assert set(fed.history[1].clients) == {"client-1", "client-2", "client-3"}
    before = {m.subject: m.value for m in store.metrics(fed.run_id) if m.round_idx == 0 and m.name == "accuracy"}
    assert set(before) == {"llm", "client-1", "client-2", "client-3"}  # measured in its first round
    assert before["client-3"] == tidy(fed.before["client-3"])  # stored rounded, as every metric


def test_retained_paths_join_local_sft_in_later_rounds(tiny_overrides: dict) -> None:
    """distill.retain: a receiver keeps each y⁺ it was given (newest per sample) and trains on it
    again as local SFT data; with retain off a round's paths are learned in that round only."""
    cfg = LadaConfig.load(TINY, overrides={**tiny_overrides, "train.local_steps": 4}, env=False)
    app = ClientApp(cfg, "client-2")
    pub = app.train_set[:4]
    learner = app.learner
    learner.learn_round([], [Pair(s.id, s.question, s.path, "") for s in pub[:3]])
    assert set(learner.kept) == {s.id for s in pub[:3]}
    assert all(learner.kept[s.id].path == s.path for s in pub[:3])
    newer = Pair(pub[0].id, pub[0].question, "other steps #### 7", "")
    learner.learn_round([], [newer])
    assert len(learner.kept) == 3 and learner.kept[pub[0].id].path == "other steps #### 7"
    # no local data and no pairs: the kept paths alone drive the local SFT steps
    assert learner.learn_round([], []).steps == 4

    off = LadaConfig.load(TINY, overrides={**tiny_overrides, "distill.retain": False}, env=False)
    plain = ClientApp(off, "client-2").learner
    plain.learn_round([], [Pair(s.id, s.question, s.path, "") for s in pub])
    assert plain.kept == {} and plain.learn_round([], []).steps == 0


class _Crash(BaseException):
    """The server process dying (not an Exception: nothing marks the run failed)."""


class _DiesAfterClientsLearn(InProcessGrid):
    def train(self, round_idx: int, allocations: dict) -> dict:
        out = super().train(round_idx, allocations)
        if round_idx == 2:
            raise _Crash  # clients learned round 2; the server never commits it
        return out


def _adapters(apps: dict) -> dict[str, dict]:
    return {n: a.learner.adapter_state() for n, a in apps.items()}


def test_clients_undo_a_round_the_restarted_server_redoes(tiny_overrides: dict, tmp_path) -> None:
    """Server killed after the clients learned round 2 but before it committed: the resumed server
    redoes round 2, and the clients roll back to their round-2 starting state instead of learning
    it twice. They end exactly where an uninterrupted run ends."""
    over = {**tiny_overrides, "run.rounds": 2, "train.local_steps": 3}

    def fed(apps: dict, grid_cls: type, name: str) -> Federation:
        cfg = LadaConfig.load(TINY, overrides={**over, "server.data_dir": str(tmp_path / name)}, env=False)
        return Federation(cfg, grid_cls(apps), Store(f"sqlite:///{tmp_path / name}.db"), log=lambda s: None)

    cfg = LadaConfig.load(TINY, overrides=over, env=False)
    clean = {n: ClientApp(cfg, n) for n in cfg.data.client_domains}
    fed(clean, InProcessGrid, "clean").run()

    apps = {n: ClientApp(cfg, n) for n in cfg.data.client_domains}
    try:
        fed(apps, _DiesAfterClientsLearn, "crash").run()
    except _Crash:
        pass
    again = fed(apps, InProcessGrid, "crash")
    history = again.run()
    assert [h.idx for h in history] == [2]  # resumed at round 2
    assert all(a.rolled_back == [2] for a in apps.values())
    want, got = _adapters(clean), _adapters(apps)
    for n in want:
        assert all(torch.equal(want[n][k], got[n][k]) for k in want[n]), n

    # without a run key (no database) nothing is remembered or undone
    loose = ClientApp(cfg, "client-1")
    task = TaskInfo(round=1)
    loose._start_round(task)
    loose._start_round(task)
    assert loose.rolled_back == [] and loose._round_start == {}
    # with one: the newest KEEP_ROUND_STARTS rounds of the current run only
    for t in range(1, 6):
        loose._start_round(TaskInfo(round=t, run_key="run-a"))
    assert sorted(loose._round_start) == [("run-a", t) for t in (3, 4, 5)]
    loose._start_round(TaskInfo(round=1, run_key="run-b"))  # a new run forgets the old one
    assert sorted(loose._round_start) == [("run-b", 1)] and loose.rolled_back == []


class _ClientsRestartAt(InProcessGrid):
    """Every client process restarts (a new ClientApp on the same state folder, nothing in memory)
    just before the probe of ``round``."""

    def __init__(self, apps: dict, cfg: LadaConfig, states: Path, round_idx: int) -> None:
        super().__init__(apps)
        self.cfg, self.states, self.round_idx = cfg, states, round_idx

    def probe(self, round_idx: int, *args: object, **kw: object) -> dict:
        if round_idx == self.round_idx:
            for n in self.apps:
                self.apps[n] = ClientApp(self.cfg, n, state_dir=self.states / n)
        return super().probe(round_idx, *args, **kw)


def _state_run(over: dict, tmp_path: Path, name: str, apps: dict, grid: InProcessGrid) -> Federation:
    cfg = LadaConfig.load(TINY, overrides={**over, "server.data_dir": str(tmp_path / name)}, env=False)
    return Federation(cfg, grid, Store(f"sqlite:///{tmp_path / name}.db"), log=lambda s: None)


@pytest.mark.parametrize("when", ["between_rounds", "with_the_server"])
def test_restarted_clients_resume_from_their_saved_state(tiny_overrides: dict, tmp_path: Path, when: str) -> None:
    """Client processes restart mid-run and come back with nothing in memory. From their state
    folders they resume where they were -- and, when the server died too and redoes round 2, they
    undo that round from its saved start. Either way they end exactly where an uninterrupted run ends."""
    over = {**tiny_overrides, "run.rounds": 3, "train.local_steps": 3}
    cfg = LadaConfig.load(TINY, overrides=over, env=False)
    clean = {n: ClientApp(cfg, n) for n in cfg.data.client_domains}
    _state_run(over, tmp_path, "clean", clean, InProcessGrid(clean)).run()

    states = tmp_path / "client-states"
    apps = {n: ClientApp(cfg, n, state_dir=states / n) for n in cfg.data.client_domains}
    if when == "between_rounds":
        grid = _ClientsRestartAt(apps, cfg, states, 2)
        assert [h.idx for h in _state_run(over, tmp_path, "run", apps, grid).run()] == [1, 2, 3]
        assert all(a.resumed_from is not None and a.rolled_back == [] for a in grid.apps.values())
    else:
        with pytest.raises(_Crash):
            _state_run(over, tmp_path, "run", apps, _DiesAfterClientsLearn(apps)).run()
        grid = _ClientsRestartAt(dict(apps), cfg, states, 2)
        assert [h.idx for h in _state_run(over, tmp_path, "run", apps, grid).run()] == [2, 3]
        assert all(a.rolled_back == [2] for a in grid.apps.values())
    want, got = _adapters(clean), _adapters(grid.apps)
    for n in want:
        assert all(torch.equal(want[n][k], got[n][k]) for k in want[n]), n
    for n, a in grid.apps.items():
        assert a.learner.kept.keys() == clean[n].learner.kept.keys()
        saved = [meta for _, _, meta in a._saved(a._run_key)]
        assert saved[-1].get("after") == 3  # the newest saved state is the end of the run
        assert len(saved) <= KEEP_ROUND_STARTS + 1


def test_saved_state_of_another_model_or_a_new_run_is_not_used(tiny_overrides: dict, tmp_path: Path) -> None:
    cfg = LadaConfig.load(TINY, overrides=tiny_overrides, env=False)
    app = ClientApp(cfg, "client-2", state_dir=tmp_path / "s")
    base = app.learner.adapter_state()
    learn_a_round(app, "run-a")
    # a new run in the same process starts from the base model, not on top of run-a
    app.probe(TaskInfo(round=1, run_key="run-b"), [])
    assert all(torch.equal(v, base[k]) for k, v in app.learner.adapter_state().items())
    # run-a's state is still on disk, and a restarted app resumes it
    again = ClientApp(cfg, "client-2", state_dir=tmp_path / "s")
    again.probe(TaskInfo(round=2, run_key="run-a"), [])
    assert again.resumed_from is not None and not torch.equal(
        next(iter(again.learner.adapter_state().values())), next(iter(base.values())))
    # another client's model (client-1 is GPT-2) on the same folder is refused with a clear error
    with pytest.raises(StateError, match="belongs to client 'client-2', model 'embedded:slm-llama'"):
        ClientApp(cfg, "client-1", state_dir=tmp_path / "s")
    # and a damaged folder is named, not silently replaced by a fresh start
    newest = again._saved("run-a")[-1][1]
    (newest / "adapter.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(StateError, match="cannot read"):
        ClientApp(cfg, "client-2", state_dir=tmp_path / "s").probe(
            TaskInfo(round=3, run_key="run-a"), [])


def test_fresh_only_never_gives_a_receiver_the_same_sample_twice(tiny_overrides: dict) -> None:
    cfg = LadaConfig.load(TINY, overrides={**tiny_overrides, "run.rounds": 3, "run.budget": 4,
                                           "run.fresh_only": True, "train.local_steps": 2}, env=False)
    fed = Federation(cfg, InProcessGrid({n: ClientApp(cfg, n) for n in cfg.data.client_domains}),
                     log=lambda s: None)
    fed.run()
    for name in cfg.data.client_domains:
        given = [sid for h in fed.history for sid in h.allocated[name]]
        assert len(given) == len(set(given)) > 4, name  # several rounds, no repeat
    assert fed.alloc.given[("client-1", "llm")] == {sid for h in fed.history for sid in h.allocated["client-1"]}


class _Liars(InProcessGrid):
    """Clients that claim every own path is right and flip every LLM path's grade."""

    def probe(self, round_idx: int, *args: object, **kw: object) -> dict:
        return {n: replace(pr, own_paths=[replace(p, correct=True) for p in pr.own_paths],
                           stats=[replace(s, own_correct=True, sender_correct=not s.sender_correct)
                                  for s in pr.stats])
                for n, pr in super().probe(round_idx, *args, **kw).items()}


def test_the_round_grades_what_clients_claim(tiny_overrides: dict) -> None:
    """Grading happens once, in the round, whatever the transport: a client's claims about its own
    paths and about the LLM's are replaced by the server's grading against the public labels."""
    cfg = LadaConfig.load(TINY, overrides=tiny_overrides, env=False)
    apps = {n: ClientApp(cfg, n) for n in cfg.data.client_domains}
    fed = Federation(cfg, _Liars(apps), None, log=lambda s: None)
    fed.before[LLM] = 0.0
    r = RoundState(1)
    teach = fed.teach(r)
    label = {s.id: s.answer for s in fed.public}
    for pr in fed.probe(r, teach, sorted(apps)).values():
        assert [p.correct for p in pr.own_paths] == [is_correct(p.text, label[p.sample_id]) for p in pr.own_paths]
        assert [s.own_correct for s in pr.stats] == [p.correct for p in pr.own_paths]
        assert [s.sender_correct for s in pr.stats] == list(teach.correct)
        assert not all(p.correct for p in pr.own_paths)  # the claim "all right" was overridden
