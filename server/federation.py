"""The LaDa round loop: teach, probe, allocate, client learn, server learn, record.

``Federation.run_round`` reads top to bottom as the six phases of a round (docs/architecture.md),
each a method of its own (Flower's strategy loop is the model). The transport
hides behind ``Grid`` (in-process or gRPC), speaking the round's dataclasses
(``lada.common.rounds``); the allocation method behind ``AllocationService``,
whose policy says what the loop must do for it (``collaborates``,
``needs_answer_ce``). Checkpoints go through the ``state_dict`` of the objects
that own the state (``checkpoint``); what a run prints is in ``report``.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from lada.common.config import LadaConfig
from lada.common.data import Sample
from lada.common.learner import Pair, align_items
from lada.common.redact import redact
from lada.common.rounds import AllocatedPair, ProbeResult, ReasoningPath, TrainResult, grade
from lada.common.scenario import scenario_splits, server_train_set

from .allocation import LLM, AllocationService, Teaching, down_view, up_eligible, up_view
from .checkpoint import CHECKPOINT_ERRORS, Checkpoints
from .db.writer import RoundRecord, Store
from .llm_host import LLMHost
from .phase_memory import PeakMemory
from .report import RoundSummary, print_round, summary_table
from .transport.inprocess import InProcessGrid
from .transport.seam import Grid

__all__ = ["Federation", "Grid", "RoundFailed", "RoundSummary"]


class RoundFailed(RuntimeError):
    """Fewer than ``server.min_clients`` clients took part in a phase of a round."""


PHASES = ("teach", "probe", "allocate", "client_learn", "server_learn", "filter_update", "record")


@dataclass
class UpLearning:
    """What server learn produced, applied in the filter-update phase: the LLM's rewards per
    (client, sample) and the SLM -> LLM allocations (kept apart from the round record while
    server learn runs beside client learn, so rows never depend on which thread ran first)."""

    allocations: list[tuple[str, str, str, float, int]] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    sample_ids: list[str] = field(default_factory=list)
    rewards: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass
class RoundState:
    """One round in progress: what it will commit, what it will print, how long each phase took."""

    idx: int
    rec: RoundRecord = field(default_factory=RoundRecord)
    timings: dict[str, float] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)  # phase -> peak memory (server/phase_memory.py)
    summary: RoundSummary = field(init=False)
    log: Callable[[str], None] | None = None  # a line as each phase starts and ends: minutes are never silent
    of: int = 0  # rounds in the run, for "round 2/3"

    def __post_init__(self) -> None:
        self.summary = RoundSummary(self.idx)

    started: float = field(default_factory=time.perf_counter)
    compute0: float = 0.0  # the LLM's compute seconds when the round began

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        where = f"[lada] round {self.idx}/{self.of}: {name}"
        if self.log:
            self.log(f"{where} ...")
        with PeakMemory() as mem:
            yield
        self.timings[name] = time.perf_counter() - t0
        self.peak_mb[name] = round(mem.peak_mb, 1)
        if self.log:
            self.log(f"{where} done in {self.timings[name]:.1f}s")
            self.log(f"{where} peak {'GPU' if mem.cuda else 'RSS'} {self.peak_mb[name]:.0f} MB")

    def ordered_timings(self) -> dict[str, float]:
        """The phases in round order, whichever of two overlapping phases ended first."""
        return {k: self.timings[k] for k in sorted(self.timings, key=lambda k: (PHASES + (k,)).index(k))}


class Federation:
    def __init__(self, cfg: LadaConfig, grid: Grid, store: Store | None = None, llm: LLMHost | None = None,
                 log: Callable[[str], None] | None = None, resume: bool = True) -> None:
        self.cfg, self.grid, self.store = cfg, grid, store
        if store is not None:
            store.bulk = cfg.server.bulk_record
        self.resume = resume  # with a store: continue the open run of the same name (see _open_run)
        self.known: set[str] = set()  # clients that took part in this run (this process)
        self.dropped: set[str] = set()  # ... and missed a deadline since
        self.last_round: set[str] = set()  # the clients of the latest round (a known one missing came back)
        self._run_created = ""
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.llm = llm or LLMHost(cfg)
        # what every TRAIN task asks of a client: the server's reward knobs, not the client's config
        grid.train_align = (align_items(cfg.filter, cfg.run.method), cfg.filter.align_center)
        self.alloc = AllocationService(cfg)
        splits = scenario_splits(cfg.data)
        self.public: list[Sample] = splits.public
        self.server_test = splits.server_test
        self.server_train = server_train_set(cfg.data)
        self.run_id = 0
        self.history: list[RoundSummary] = []
        self.before: dict[str, float] = {}
        self.public_acc: dict[str, float] = {}  # accuracy on the public mix before any learning
        n_eval = cfg.server.eval_subsample
        pick = sorted(random.Random(cfg.data.seed).sample(range(len(self.server_test)), n_eval)) \
            if n_eval is not None and n_eval < len(self.server_test) else range(len(self.server_test))
        self.server_test_sub = [self.server_test[i] for i in pick]  # the fixed subsample (server.eval_subsample)

    # ------------------------------------------------------------------ the run
    def run(self) -> list[RoundSummary]:
        cfg = self.cfg
        start = self._open_run() if self.store else 1
        if self.store:
            self.grid.run_key = f"{self.run_id}@{self._run_created}"
        try:
            # the first round waits for server.wait_clients; later rounds go on with whoever is
            # registered and live (a dropped client that came back counts again)
            clients = self._clients_for_round(start, max(cfg.server.wait_clients, cfg.server.min_clients))
            t0 = time.perf_counter()
            if LLM not in self.before:
                self.before[LLM] = self.llm.evaluate(self.server_test)
                self._record_before(LLM)  # now, not with round 1: a run that fails in round 1 keeps it
            self.log(f"[lada] run {self.run_id} method={cfg.run.method} clients={clients} "
                     f"LLM held-out accuracy before: {self.before[LLM]:.3f} ({time.perf_counter() - t0:.1f}s)")
            for t in range(start, cfg.run.rounds + 1):
                if t > start:
                    clients = self._clients_for_round(t, cfg.server.min_clients)
                self.history.append(self.run_round(t, clients))
        except Exception as exc:
            try:  # the database itself may be what failed: the clients are still told to stop
                self._event("error", "server", f"{type(exc).__name__}: {exc}")
                if self.store:
                    self.store.fail_run(self.run_id, f"{type(exc).__name__}: {exc}")
            except Exception as e:  # noqa: BLE001 - reported, and the first error is what is raised
                self.log(f"[lada] could not record that the run failed: {type(e).__name__}: {e}")
            finally:
                self.grid.stop()
            raise
        if self.store:
            self.store.finish_run(self.run_id, "finished")
        self.grid.stop()
        return self.history

    def run_round(self, t: int, clients: list[str]) -> RoundSummary:
        r = self._begin_round(t)
        with r.phase("teach"):
            teach = self.teach(r)
        with r.phase("probe"):
            probes = self.probe(r, teach, clients)
        with r.phase("allocate"):
            allocations = self.allocate(r, teach, probes)
        if self.overlaps():  # server learn needs only the probes and the LLM's own filters
            running = self._in_thread(self._timed_server_learn, r, teach, probes)
            try:
                with r.phase("client_learn"):
                    results = self.client_learn(r, allocations)
            finally:  # never leave the LLM learning behind a failed round
                _wait_quietly(running)
            up = running.result()
        else:
            with r.phase("client_learn"):
                results = self.client_learn(r, allocations)
            up = self._timed_server_learn(r, teach, probes)
        with r.phase("filter_update"):
            self.update_filters(r, allocations, results, up)
        with r.phase("record"):
            self.record(r)
        return self._end_round(r)

    def overlaps(self) -> bool:
        """Whether server learn runs beside client learn (``server.overlap_learn``). Clients in this
        process (the in-process grid) share torch's global RNG with the LLM: there the two overlap
        only if the LLM's training draws nothing from it (no dropout anywhere), so a seed's results
        never depend on which thread ran first."""
        if not self.cfg.server.overlap_learn:
            return False
        return not (isinstance(self.grid, InProcessGrid) and self.llm.learner.uses_global_rng())

    def _timed_server_learn(self, r: RoundState, teach: Teaching, probes: dict[str, ProbeResult]) -> UpLearning:
        with r.phase("server_learn"):
            return self.server_learn(r, teach, probes)

    @staticmethod
    def _in_thread(fn: Callable[..., UpLearning], *args: object) -> Future[UpLearning]:
        """``fn(*args)`` on a thread of its own; its result as a Future. The thread takes torch's
        thread count from the caller's: a new thread could otherwise use the library default, and
        the LLM's floating-point sums would change with it."""
        import torch

        fut: Future[UpLearning] = Future()

        n = torch.get_num_threads()

        def body() -> None:
            torch.set_num_threads(n)
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed to the round, which raises it
                fut.set_exception(e)

        threading.Thread(target=body, name="server-learn", daemon=True).start()
        return fut

    # ------------------------------------------------------------------ the phases
    def teach(self, r: RoundState) -> Teaching:
        """1. The LLM's path for every public sample (cached until the LLM changes), graded."""
        need = self.cfg.filter.embedding == "llm" and self.alloc.needs_embedding([s.id for s in self.public])
        paths, correct = self.llm.teach(self.public, embed=need)
        embedding = self.llm.embed(self.public) if need else None
        r.rec.paths += [(LLM, s.id, p, c) for s, p, c in zip(self.public, paths, correct)]
        return Teaching(candidates=[ReasoningPath(s.id, s.question, p, s.answer, c)
                                    for s, p, c in zip(self.public, paths, correct)],
                        lengths=self.llm.path_lengths(paths), embedding=embedding)

    def probe(self, r: RoundState, teach: Teaching, clients: list[str]) -> dict[str, ProbeResult]:
        """2. Each client's learnability statistics on the LLM's paths, and its own paths, graded
        here against the public labels (whatever the client claimed)."""
        t = r.idx
        # a client measures its "before" accuracy in the first round it takes part in (round 1, or
        # later for a client that joins late); never again, so a rejoin does not reset it
        probes = self.grid.probe(t, teach.candidates, evaluate={n for n in clients if n not in self.before},
                                 clients=clients)
        self._mark_dropped(clients, probes, "probe")
        self._require(t, "probe", len(probes))
        probes = {name: grade(pr, teach.candidates, self.cfg.distill.check_steps) for name, pr in probes.items()}
        for name, pr in probes.items():
            if pr.test_accuracy is not None:
                self.before[name] = pr.test_accuracy
                r.rec.metrics.append((0, name, "accuracy", pr.test_accuracy))
            r.rec.metrics.append((t, name, "public_accuracy_before", pr.public_accuracy))  # before learning
            self.public_acc.setdefault(name, pr.public_accuracy)  # first probe = before learning
            r.rec.paths += [(name, p.sample_id, p.text, p.correct) for p in pr.own_paths]
        self._record_before(*(n for n, pr in probes.items() if pr.test_accuracy is not None))
        llm_public = float(np.mean(teach.correct))
        self.public_acc.setdefault(LLM, llm_public)
        if t == 1:
            r.rec.metrics.append((0, LLM, "accuracy", self.before[LLM]))
        return probes

    def allocate(self, r: RoundState, teach: Teaching, probes: dict[str, ProbeResult]
                 ) -> dict[str, list[AllocatedPair]]:
        """3. LLM -> client: each client's filter picks the LLM paths it can learn from; y- is the
        client's own path (see ``_negative``)."""
        if self.alloc.needs_answer_ce:
            teach.answer_ce = self.llm.answer_ce(self.public)
        out: dict[str, list[AllocatedPair]] = {}
        for name, pr in probes.items():
            own = {p.sample_id: _negative(p.text, p.correct, self.cfg) for p in pr.own_paths}
            a = self.alloc.allocate(name, LLM, teach.embedding, down_view(teach, pr), self.cfg.run.budget, r.idx)
            r.summary.allocated[name] = [self.public[i].id for i in a.indices]
            out[name] = [AllocatedPair(self.public[i].id, self.public[i].question, teach.candidates[i].text,
                                       own.get(self.public[i].id, ""), float(score), rank)
                         for rank, (i, score) in enumerate(zip(a.indices, a.scores))]
            r.rec.allocations += [(name, LLM, p.sample_id, p.score, p.rank) for p in out[name]]
        return out

    def client_learn(self, r: RoundState, allocations: dict[str, list[AllocatedPair]]) -> dict[str, TrainResult]:
        """4. The clients learn their allocations and report the NLL of each y+ before and after."""
        t = r.idx
        results = self.grid.train(t, allocations)
        self._mark_dropped(list(allocations), results, "train")
        self._require(t, "train", len(results))
        return results

    def server_learn(self, r: RoundState, teach: Teaching, probes: dict[str, ProbeResult]) -> UpLearning:
        """5. Client -> LLM, then the LLM's held-out accuracy. Without SLM paths this run (a method
        that does not collaborate, one direction) the LLM still learns on its own data, as a
        local-only client does, so comparisons isolate what the SLM paths add. It reads only the
        probes, the teaching and the LLM's own filters (it may run beside client learn) and writes
        only ``r.summary.llm``; its rewards and allocations are applied in ``update_filters``.

        The held-out accuracy of a round between the first and the last is measured on a fixed
        subsample (``server.eval_subsample``); the first and last rounds use the whole set."""
        cfg = self.cfg
        up = UpLearning()
        if cfg.run.bidirectional and self.alloc.collaborates and cfg.run.server_budget > 0:
            r.summary.llm.update(self._learn_from_clients(r, teach, probes, up))
        elif self.server_train:
            self.llm.learn(self.server_train, [])
        full = r.idx in (1, cfg.run.rounds)
        r.summary.llm["accuracy"] = self.llm.evaluate(self.server_test if full else self.server_test_sub)
        r.summary.llm["public_accuracy_before"] = float(np.mean(teach.correct))  # taught at the round's start
        return up

    def update_filters(self, r: RoundState, allocations: dict[str, list[AllocatedPair]],
                       results: dict[str, TrainResult], up: UpLearning) -> None:
        """The filters learn this round's rewards (timed as a phase of its own: it grows with the
        run's history): each client's filter from the NLL drop of its y+, then the LLM's filters
        from the LLM's own; the reward rows are recorded in that order."""
        for name, res in results.items():
            ids = [s.sample_id for s in res.samples]
            rw = self.alloc.rewards([s.nll_before for s in res.samples], [s.nll_after for s in res.samples],
                                    [s.alignment for s in res.samples])
            self.alloc.update(name, LLM, ids, rw)
            r.rec.rewards += [(name, LLM, sid, float(v)) for sid, v in zip(ids, rw)]
            mean_r = float(rw.mean()) if len(rw) else 0.5
            if len(rw):
                r.rec.rewards.append((name, LLM, "*", mean_r))
            r.summary.clients[name] = {"accuracy": res.test_accuracy, "reward": mean_r,
                                       "n_allocated": float(len(allocations.get(name, [])))}
        r.rec.allocations += up.allocations
        if not up.owners:
            return
        for name in dict.fromkeys(up.owners):
            mine = [k for k, o in enumerate(up.owners) if o == name]
            ids = [up.sample_ids[k] for k in mine]
            self.alloc.update(LLM, name, ids, up.rewards[mine])
            r.rec.rewards += [(LLM, name, sid, float(up.rewards[k])) for sid, k in zip(ids, mine)]
        r.rec.rewards.append((LLM, "*", "*", float(up.rewards.mean())))

    def record(self, r: RoundState) -> None:
        """6. Checkpoint what the round learned, then commit it (one transaction). In this order a
        committed round always has its checkpoint, so a server killed between the two resumes after
        the round instead of redoing it over rows the clients were already told about; a checkpoint
        of a round that never committed is ignored by the resume (it restores at or before the last
        committed round)."""
        t, s = r.idx, r.summary
        for name, (up, down) in self.grid.take_bytes().items():
            if name in s.clients:
                s.clients[name]["bytes_up"], s.clients[name]["bytes_down"] = up, down
        for name, vals in s.clients.items():
            r.rec.metrics += [(t, name, k, v) for k, v in vals.items()]
        r.rec.metrics += [(t, LLM, k, v) for k, v in s.llm.items()]
        r.rec.timings = dict(r.timings)
        if self.store:
            self._checkpoint(t)
            self.store.commit_round(self.run_id, t, r.rec)

    # ------------------------------------------------------------------ phase helpers
    def _begin_round(self, t: int) -> RoundState:
        fresh = self.store.start_round(self.run_id, t) if self.store else True
        self._event("round_start", "server", f"round {t}" if fresh else f"round {t} (again, after a restart)")
        return RoundState(t, log=self.log, of=self.cfg.run.rounds, compute0=self.llm.compute_s)

    def _end_round(self, r: RoundState) -> RoundSummary:
        r.timings = r.ordered_timings()
        r.summary.timings = r.timings
        r.summary.wall = time.perf_counter() - r.started
        r.summary.llm_compute = self.llm.compute_s - r.compute0
        if self.store:  # the record phase (the checkpoint, the commit) ended after the commit: store it too
            self.store.set_round_timings(self.run_id, r.idx, r.timings)
        self._event("round_end", "server", f"round {r.idx} done in {r.summary.wall:.1f}s")
        print_round(r.summary, self.cfg.run.rounds, self.before, self.log)
        return r.summary

    def _learn_from_clients(self, r: RoundState, teach: Teaching, probes: dict[str, ProbeResult],
                            up: UpLearning) -> dict[str, float]:
        """SLM -> LLM: each client's filter on the server picks the SLM paths most
        novel for the LLM; the LLM learns them with the same loss, roles swapped."""
        cfg, t = self.cfg, r.idx
        pairs: list[Pair] = []
        owners = up.owners
        for name, pr in probes.items():
            own = {p.sample_id: p for p in pr.own_paths}
            paths = [own.get(s.id) for s in self.public]
            texts = [p.text if p is not None else "" for p in paths]
            correct = np.array([p is not None and p.correct for p in paths], dtype=bool)
            eligible = up_eligible(correct, teach.correct)  # only where the LLM's own path is not a y+
            view = up_view(teach, pr, texts, correct, self._llm_nll_where(eligible, texts),
                           self.llm.path_lengths(texts))
            a = self.alloc.allocate(LLM, name, teach.embedding, view, cfg.run.server_budget, t)
            for rank, (i, score) in enumerate(zip(a.indices, a.scores)):
                s, c = self.public[i], teach.candidates[i]
                pairs.append(Pair(s.id, s.question, texts[i], _negative(c.text, c.correct, cfg)))
                owners.append(name)
                up.allocations.append((LLM, name, s.id, float(score), rank))
        if not pairs:
            return {"reward": 0.5, "n_allocated": 0.0}
        rep = self.llm.learn(self.server_train, pairs)
        up.sample_ids, up.rewards = list(rep.sample_ids), self.alloc.rewards(rep.nll_before, rep.nll_after,
                                                                            rep.alignment)
        return {"reward": float(up.rewards.mean()), "n_allocated": float(len(pairs))}

    def _llm_nll_where(self, mask: np.ndarray, texts: list[str]) -> np.ndarray:
        """The LLM's NLL of the SLM paths in ``mask`` (the eligible ones: no policy may pick
        another), 0 elsewhere; scoring only those saves most of the server's forward passes."""
        out = np.zeros(len(texts))
        idx = np.flatnonzero(mask)
        if len(idx):
            out[idx] = self.llm.nll([self.public[i].question for i in idx], [texts[i] for i in idx])
        return out

    # ------------------------------------------------------------------ resume, membership
    def _open_run(self) -> int:
        """Create the run, or resume the open ("running") run of the same name that a
        killed server left behind; returns the first round to run.

        Resuming reuses the run id, restores the LLM's LoRA adapter and every
        filter from the newest checkpoint of a committed round, and redoes the
        rounds after it (``commit_round`` replaces whatever an earlier try of a
        round wrote, so no row is lost or duplicated).
        """
        cfg, store = self.cfg, self.store
        conf = _redacted(cfg.model_dump(mode="json"))
        prev = store.latest_open_run(cfg.run.name) if self.resume else None
        if prev is not None and _comparable(prev.config) != _comparable(conf):
            raise RuntimeError(f"run {cfg.run.name!r} (id {prev.id}) is still open in {store.url} with a different "
                               "config; resume it with the same config, choose another run.name, or start the "
                               "server with --server.resume false")
        if prev is None:
            self.run_id = store.create_run(cfg.run.name, cfg.run.method, conf, cfg.run.rounds)
            store.add_public_samples(self.run_id, self.public)
            run = store.latest_open_run(cfg.run.name)
            self._run_created = str(run.created_at) if run is not None and run.id == self.run_id else ""
            return 1
        self.run_id, self._run_created = prev.id, str(prev.created_at)
        committed = store.last_committed_round(self.run_id)
        restored = self._checkpoints().restore(committed, self.llm, self.alloc)
        for m in store.metrics(self.run_id):
            if m.round_idx == 0 and m.name == "accuracy":
                self.before[m.subject] = m.value
        if restored == 0:
            self.before.pop(LLM, None)  # the LLM starts over: measure it again
        msg = (f"resuming run {self.run_id} at round {restored + 1}: last committed round {committed}, "
               f"checkpoint of round {restored}")
        self._event("resume", "server", msg)
        self.log(f"[lada] {msg}")
        return restored + 1

    def _clients_for_round(self, t: int, n: int) -> list[str]:
        """Wait (up to the round deadline) for ``n`` registered, live clients; fail the round
        below ``server.min_clients``; record who joined or came back.

        The one place that says a client joined the run (the transport only logs "enrol"):
        "join" the first time it takes part, "rejoin" when it takes part again after it was
        dropped or missing from a round (it left, or was not there)."""
        clients = self.grid.wait_for_clients(n, self.cfg.server.round_timeout)
        self._require(t, "registration", len(clients))
        back = self.dropped | {c for c in clients if c in self.known and c not in self.last_round}
        self.last_round = set(clients)
        for name in clients:
            if name in self.known and name not in back:
                continue
            kind = "rejoin" if name in self.known else "join"
            self._event(kind, name, "client registered" if kind == "join" else f"back for round {t}")
            self.known.add(name)
            self.dropped.discard(name)
            if self.store:
                model, domain = self.grid.client_info(name)
                self.store.upsert_client(self.run_id, name, model, domain)  # state "active"
        return clients

    def _require(self, t: int, phase: str, n: int) -> None:
        """A round needs ``server.min_clients`` clients in every phase: fewer fails it (and the run),
        with a ``round_failed`` event, rather than learning from too few clients."""
        need = self.cfg.server.min_clients
        if n < need:
            msg = f"round {t} failed: {n} client(s) took part in the {phase} phase, server.min_clients is {need}"
            self._event("round_failed", "server", msg)
            self.log(f"[lada] {msg}")
            raise RoundFailed(msg)

    # ------------------------------------------------------------------ checkpoints
    def _checkpoints(self) -> Checkpoints:
        return Checkpoints(Path(self.cfg.server.data_dir) / "checkpoints" / f"run-{self.run_id}",
                           {"run_id": self.run_id, "run_name": self.cfg.run.name, "created_at": self._run_created})

    def _checkpoint(self, t: int) -> None:
        """Just before round ``t`` is committed (see ``record``); a failed write does not stop the
        commit, and a resume redoes the round from the previous checkpoint."""
        try:
            self._checkpoints().write(t, self.llm, self.alloc)
        except CHECKPOINT_ERRORS as e:  # a full disk raises SafetensorError, not OSError
            self.log(f"[lada] checkpoint of round {t} failed ({type(e).__name__}: {e}); the round stays "
                     "committed, a resume redoes it from the previous checkpoint")
            self._event("checkpoint_failed", "server", f"round {t}: {type(e).__name__}: {e}")

    # ------------------------------------------------------------------ helpers
    def _mark_dropped(self, expected: list[str], got: dict, phase: str) -> None:
        for name in expected:
            if name not in got:
                self.dropped.add(name)
                self._event("drop", name, f"no {phase} result before the deadline")
                if self.store:
                    self.store.set_client_state(self.run_id, name, "dropped")

    def _record_before(self, *subjects: str) -> None:
        """A starting accuracy is measured once: store it as soon as it is, outside the round's
        transaction, so a round that fails later does not lose it."""
        if self.store and subjects:
            self.store.record_metrics(self.run_id, [(0, n, "accuracy", self.before[n]) for n in subjects])

    def _event(self, kind: str, subject: str, message: str) -> None:
        if self.store:
            self.store.event(self.run_id, kind, subject, message)

    def summary_table(self) -> str:
        """Markdown table: accuracy before and after, per model."""
        return summary_table(self.cfg, self.history, self.before, self.public_acc)


def _wait_quietly(fut: Future) -> None:
    """Wait for ``fut`` to finish; its error, if any, is raised where its result is read."""
    try:
        fut.exception()
    except BaseException:  # noqa: BLE001 - cancelled: nothing to wait for
        pass


def _redacted(conf: dict) -> dict:
    """The config as stored with the run: secrets (join token, DB password) never reach the database."""
    return redact(conf)


def _comparable(conf: dict) -> dict:
    """The parts of a run's config that must match to resume it (not addresses, paths, threads)."""
    out = {k: v for k, v in (conf or {}).items() if k not in ("server", "transport", "client", "dashboard")}
    out["models"] = {k: v for k, v in out.get("models", {}).items() if k != "cache_dir"}
    out["run"] = {k: v for k, v in out.get("run", {}).items() if k != "threads"}
    return out


def _negative(own_path: str, own_correct: bool, cfg: LadaConfig) -> str:
    """y⁻ of a pair: the receiver's own path, or none when that path is already right
    (contrasting against it would push a correct answer down) unless asked to."""
    return own_path if cfg.distill.contrast_correct or not own_correct else ""
