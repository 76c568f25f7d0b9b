"""The LaDa round loop: teach, probe, allocate, client learn, server learn, record.

One function runs a round top to bottom (Flower's strategy loop is the
model). The transport hides behind ``Grid`` (in-process or gRPC); the
allocation method behind ``AllocationService`` / ``lada.common.policies``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from lada.common.config import LadaConfig
from lada.common.data import Sample
from lada.common.learner import Pair
from lada.common.proto.lada.v1 import allocation_pb2, messages_pb2
from lada.common.scenario import scenario_splits, server_train_set

from .allocation import LLM, AllocationService, PairView
from .llm_host import LLMHost
from .storage import RoundRecord, Store


@dataclass
class ProbeReply:
    report: allocation_pb2.LearnabilityReport
    own_paths: messages_pb2.PathBatch


class Grid(Protocol):
    """The transport seam: how tasks reach clients and results come back."""

    def wait_for_clients(self, n: int, timeout: float) -> list[str]: ...

    def probe(self, round_idx: int, candidates: messages_pb2.PathBatch, evaluate: bool,
              clients: list[str]) -> dict[str, ProbeReply]: ...

    def train(self, round_idx: int, allocations: dict[str, list[allocation_pb2.AllocatedSample]]
              ) -> dict[str, allocation_pb2.RewardReport]: ...

    def take_bytes(self) -> dict[str, tuple[int, int]]:
        """(bytes up, bytes down) per client since the last call."""
        ...

    def client_info(self, name: str) -> tuple[str, str]:
        """(model, domain) a client registered with."""
        ...

    def stop(self) -> None: ...


@dataclass
class RoundSummary:
    idx: int
    clients: dict[str, dict[str, float]] = field(default_factory=dict)
    llm: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    allocated: dict[str, list[str]] = field(default_factory=dict)  # client -> sample ids it was given


class Federation:
    def __init__(self, cfg: LadaConfig, grid: Grid, store: Store | None = None, llm: LLMHost | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.cfg, self.grid, self.store = cfg, grid, store
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.llm = llm or LLMHost(cfg)
        self.alloc = AllocationService(cfg)
        splits = scenario_splits(cfg.data)
        self.public: list[Sample] = splits.public
        self.server_test = splits.server_test
        self.server_train = server_train_set(cfg.data)
        self.by_id = {s.id: s for s in self.public}
        self.run_id = 0
        self.history: list[RoundSummary] = []
        self.before: dict[str, float] = {}

    # ------------------------------------------------------------------ the run
    def run(self) -> list[RoundSummary]:
        cfg = self.cfg
        if self.store:
            self.run_id = self.store.create_run(cfg.run.name, cfg.run.method, cfg.model_dump(mode="json"),
                                                cfg.run.rounds)
            self.store.add_public_samples(self.run_id, self.public)
        clients = self.grid.wait_for_clients(cfg.server.wait_clients, cfg.server.round_timeout)
        for name in clients:
            self._event("join", name, "client registered")
            if self.store:
                model, domain = self.grid.client_info(name)
                self.store.upsert_client(self.run_id, name, model, domain)
        t0 = time.perf_counter()
        self.before[LLM] = self.llm.evaluate(self.server_test)
        self.log(f"[lada] run {self.run_id} method={cfg.run.method} clients={clients} "
                 f"LLM held-out accuracy before: {self.before[LLM]:.3f} ({time.perf_counter() - t0:.1f}s)")
        try:
            for t in range(1, cfg.run.rounds + 1):
                self.history.append(self.run_round(t, clients))
        except Exception as exc:
            self._event("error", "server", f"{type(exc).__name__}: {exc}")
            if self.store:
                self.store.finish_run(self.run_id, "failed")
            raise
        if self.store:
            self.store.finish_run(self.run_id, "finished")
        self.grid.stop()
        return self.history

    def run_round(self, t: int, clients: list[str]) -> RoundSummary:
        cfg, tm = self.cfg, {}
        rec = RoundRecord()
        summary = RoundSummary(t)
        if self.store:
            self.store.start_round(self.run_id, t)
        self._event("round_start", "server", f"round {t}")

        # ---------------------------------------------------------------- 1. teach
        t0 = time.perf_counter()
        llm_paths, llm_correct = self.llm.teach(self.public)
        embedding = self.llm.embed(self.public) if cfg.filter.embedding == "llm" else None
        tm["teach"] = time.perf_counter() - t0
        candidates = messages_pb2.PathBatch(paths=[
            messages_pb2.ReasoningPath(sample_id=s.id, question=s.question, text=p, correct=c, answer=s.answer)
            for s, p, c in zip(self.public, llm_paths, llm_correct)
        ])
        rec.paths += [(LLM, s.id, p, c) for s, p, c in zip(self.public, llm_paths, llm_correct)]

        # ---------------------------------------------------------------- 2. probe
        t0 = time.perf_counter()
        probes = self.grid.probe(t, candidates, evaluate=(t == 1), clients=clients)
        self._mark_dropped(clients, probes, "probe")
        tm["probe"] = time.perf_counter() - t0
        for name, pr in probes.items():
            if pr.report.has_test_accuracy:
                self.before[name] = pr.report.test_accuracy
                rec.metrics.append((0, name, "accuracy", pr.report.test_accuracy))
            rec.metrics.append((t, name, "public_accuracy", pr.report.public_accuracy))
            rec.paths += [(name, p.sample_id, p.text, p.correct) for p in pr.own_paths.paths]
        if t == 1:
            rec.metrics.append((0, LLM, "accuracy", self.before[LLM]))
            rec.metrics.append((0, LLM, "public_accuracy", float(np.mean(llm_correct))))

        # ---------------------------------------------------------------- 3. allocate
        t0 = time.perf_counter()
        llm_len = self.llm.path_lengths(llm_paths)
        llm_ce = self.llm.answer_ce(self.public) if cfg.run.method == "fedmkt" else None
        allocations: dict[str, list[allocation_pb2.AllocatedSample]] = {}
        for name, pr in probes.items():
            stats = list(pr.report.stats)
            own = {p.sample_id: p.text for p in pr.own_paths.paths}
            view = PairView(
                sample_ids=[s.sample_id for s in stats],
                receiver_nll=np.array([s.nll for s in stats], dtype=np.float64),
                sender_len=llm_len,
                receiver_len=np.array([s.own_len for s in stats], dtype=np.float32),
                sender_correct=np.array(llm_correct, dtype=bool),
                receiver_correct=np.array([s.own_correct for s in stats], dtype=bool),
                teacher_ce=llm_ce,
                student_ce=np.array([s.answer_ce for s in stats], dtype=np.float64),
            )
            a = self.alloc.allocate(name, LLM, embedding, view, cfg.run.budget, t)
            allocations[name] = []
            summary.allocated[name] = [self.public[i].id for i in a.indices]
            for rank, (i, score) in enumerate(zip(a.indices, a.scores)):
                s = self.public[i]
                allocations[name].append(allocation_pb2.AllocatedSample(
                    sample_id=s.id, question=s.question, positive=llm_paths[i], negative=own.get(s.id, ""),
                    score=float(score), rank=rank))
                rec.allocations.append((name, LLM, s.id, float(score), rank))
        tm["allocate"] = time.perf_counter() - t0

        # ---------------------------------------------------------------- 4. client learn
        t0 = time.perf_counter()
        results = self.grid.train(t, allocations)
        self._mark_dropped(list(probes), results, "train")
        tm["client_learn"] = time.perf_counter() - t0
        for name, res in results.items():
            ids = [s.sample_id for s in res.samples]
            r = self.alloc.rewards([s.nll_before for s in res.samples], [s.nll_after for s in res.samples])
            self.alloc.update(name, LLM, ids, r)
            rec.rewards += [(name, LLM, sid, float(v)) for sid, v in zip(ids, r)]
            mean_r = float(r.mean()) if len(r) else 0.5
            if len(r):
                rec.rewards.append((name, LLM, "*", mean_r))
            summary.clients[name] = {"accuracy": res.test_accuracy, "reward": mean_r,
                                     "n_allocated": float(len(allocations.get(name, [])))}

        # ---------------------------------------------------------------- 5. server learn
        t0 = time.perf_counter()
        if cfg.run.bidirectional and cfg.run.method != "local_only" and cfg.run.server_budget > 0:
            summary.llm.update(self._server_learn(t, probes, embedding, llm_paths, llm_correct, llm_len, rec))
        summary.llm["accuracy"] = self.llm.evaluate(self.server_test)
        summary.llm["public_accuracy"] = float(np.mean(llm_correct))
        tm["server_learn"] = time.perf_counter() - t0

        # ---------------------------------------------------------------- 6. record
        t0 = time.perf_counter()
        for name, (up, down) in self.grid.take_bytes().items():
            if name in summary.clients:
                summary.clients[name]["bytes_up"], summary.clients[name]["bytes_down"] = up, down
        for name, vals in summary.clients.items():
            rec.metrics += [(t, name, k, v) for k, v in vals.items()]
        rec.metrics += [(t, LLM, k, v) for k, v in summary.llm.items()]
        rec.timings = dict(tm)
        if self.store:
            self.store.commit_round(self.run_id, t, rec)
        tm["record"] = time.perf_counter() - t0
        summary.timings = tm
        self._event("round_end", "server", f"round {t} done in {sum(tm.values()):.1f}s")
        self._print_round(summary)
        return summary

    def _server_learn(self, t: int, probes: dict[str, ProbeReply], embedding: np.ndarray | None,
                      llm_paths: list[str], llm_correct: list[bool], llm_len: np.ndarray, rec: RoundRecord
                      ) -> dict[str, float]:
        """SLM -> LLM: each client's filter on the server picks the SLM paths most
        novel for the LLM; the LLM learns them with the same loss, roles swapped."""
        cfg = self.cfg
        pairs: list[Pair] = []
        owners: list[str] = []
        llm_ce = self.llm.answer_ce(self.public) if cfg.run.method == "fedmkt" else None
        for name, pr in probes.items():
            own = {p.sample_id: p for p in pr.own_paths.paths}
            paths = [own[s.id] if s.id in own else None for s in self.public]
            texts = [p.text if p is not None else "" for p in paths]
            view = PairView(
                sample_ids=[s.id for s in self.public],
                receiver_nll=self.llm.nll([s.question for s in self.public], texts),
                sender_len=self.llm.path_lengths(texts),
                receiver_len=llm_len,
                sender_correct=np.array([p is not None and p.correct for p in paths], dtype=bool),
                receiver_correct=np.array(llm_correct, dtype=bool),
                teacher_ce=np.array([s.answer_ce for s in pr.report.stats]) if llm_ce is not None else None,
                student_ce=llm_ce,
            )
            a = self.alloc.allocate(LLM, name, embedding, view, cfg.run.server_budget, t)
            for rank, (i, score) in enumerate(zip(a.indices, a.scores)):
                s = self.public[i]
                pairs.append(Pair(s.id, s.question, texts[i], llm_paths[i]))
                owners.append(name)
                rec.allocations.append((LLM, name, s.id, float(score), rank))
        if not pairs:
            return {"reward": 0.5, "n_allocated": 0.0}
        rep = self.llm.learn(self.server_train, pairs)
        r = self.alloc.rewards(rep.nll_before, rep.nll_after)
        for name in probes:
            mine = [k for k, o in enumerate(owners) if o == name]
            ids = [rep.sample_ids[k] for k in mine]
            self.alloc.update(LLM, name, ids, r[mine])
            rec.rewards += [(LLM, name, sid, float(r[k])) for sid, k in zip(ids, mine)]
        rec.rewards.append((LLM, "*", "*", float(r.mean())))
        return {"reward": float(r.mean()), "n_allocated": float(len(pairs))}

    # ------------------------------------------------------------------ helpers
    def _mark_dropped(self, expected: list[str], got: dict, phase: str) -> None:
        for name in expected:
            if name not in got:
                self._event("drop", name, f"no {phase} result before the deadline")
                if self.store:
                    self.store.set_client_state(self.run_id, name, "dropped")

    def _event(self, kind: str, subject: str, message: str) -> None:
        if self.store:
            self.store.event(self.run_id, kind, subject, message)

    def _print_round(self, s: RoundSummary) -> None:
        tm = " ".join(f"{k}={v:.1f}s" for k, v in s.timings.items())
        self.log(f"[round {s.idx}/{self.cfg.run.rounds}] {tm}")
        for name, v in sorted(s.clients.items()):
            before = self.before.get(name, float("nan"))
            kb = (v.get("bytes_up", 0) + v.get("bytes_down", 0)) / 1024
            self.log(f"  {name:<10} acc {v['accuracy']:.3f} (start {before:.3f})  reward {v['reward']:.3f}  "
                     f"allocated {int(v['n_allocated']):>4}  exchanged {kb:8.1f} kB")
        llm = s.llm
        self.log(f"  {'llm':<10} acc {llm['accuracy']:.3f} (start {self.before[LLM]:.3f})  "
                 f"reward {llm.get('reward', float('nan')):.3f}  learned from {int(llm.get('n_allocated', 0)):>4}")

    def summary_table(self) -> str:
        """Markdown table: accuracy before and after, per model."""
        if not self.history:
            return "(no rounds)"
        last = self.history[-1]
        rows = ["| model | role | accuracy before | accuracy after | change |", "|---|---|---|---|---|"]
        b = self.before.get(LLM, float("nan"))
        a = last.llm.get("accuracy", float("nan"))
        rows.append(f"| {self.cfg.models.llm} | LLM (held-out mix) | {b:.3f} | {a:.3f} | {a - b:+.3f} |")
        for name in sorted(last.clients):
            b = self.before.get(name, float("nan"))
            a = last.clients[name]["accuracy"]
            model = self.cfg.models.clients.get(name, "?")
            rows.append(f"| {model} | {name} ({self.cfg.data.client_domains.get(name, '?')}) | "
                        f"{b:.3f} | {a:.3f} | {a - b:+.3f} |")
        total = {k: round(sum(h.timings.get(k, 0) for h in self.history), 1) for k in self.history[0].timings}
        rows.append("")
        rows.append("time per phase (s, all rounds): " + ", ".join(f"{k} {v}" for k, v in total.items()))
        return "\n".join(rows)
