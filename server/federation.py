"""The LaDa round loop: teach, probe, allocate, client learn, server learn, record.

One function runs a round top to bottom (Flower's strategy loop is the
model). The transport hides behind ``Grid`` (in-process or gRPC); the
allocation method behind ``AllocationService`` / ``lada.common.policies``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from lada.common.config import LadaConfig
from lada.common.data import Sample
from lada.common.learner import Pair
from lada.common.proto.lada.v1 import allocation_pb2, messages_pb2
from lada.common.redact import redact
from lada.common.scenario import scenario_splits, server_train_set
from lada.common.state import read_state_files, sync_dir_files, write_state_files
from safetensors.torch import load_file, save_file

from .allocation import LLM, AllocationService, PairView
from .db.writer import RoundRecord, Store
from .llm_host import LLMHost


@dataclass
class ProbeReply:
    report: allocation_pb2.LearnabilityReport
    own_paths: messages_pb2.PathBatch


class RoundFailed(RuntimeError):
    """Fewer than ``server.min_clients`` clients took part in a phase of a round."""


class Grid(Protocol):
    """The transport seam: how tasks reach clients and results come back."""

    run_key: str  # put on every task: one run of one database (see messages.proto Task.run_key)

    def wait_for_clients(self, n: int, timeout: float) -> list[str]: ...

    def probe(self, round_idx: int, candidates: messages_pb2.PathBatch, evaluate: Collection[str],
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
                 log: Callable[[str], None] | None = None, resume: bool = True) -> None:
        self.cfg, self.grid, self.store = cfg, grid, store
        self.resume = resume  # with a store: continue the open run of the same name (see _open_run)
        self.known: set[str] = set()  # clients that took part in this run (this process)
        self.dropped: set[str] = set()  # ... and missed a deadline since
        self._run_created = ""
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
        self.public_acc: dict[str, float] = {}  # accuracy on the public mix before any learning

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
            self.log(f"[lada] run {self.run_id} method={cfg.run.method} clients={clients} "
                     f"LLM held-out accuracy before: {self.before[LLM]:.3f} ({time.perf_counter() - t0:.1f}s)")
            for t in range(start, cfg.run.rounds + 1):
                if t > start:
                    clients = self._clients_for_round(t, cfg.server.min_clients)
                self.history.append(self.run_round(t, clients))
        except Exception as exc:
            self._event("error", "server", f"{type(exc).__name__}: {exc}")
            if self.store:
                self.store.finish_run(self.run_id, "failed")
            self.grid.stop()
            raise
        if self.store:
            self.store.finish_run(self.run_id, "finished")
        self.grid.stop()
        return self.history

    def run_round(self, t: int, clients: list[str]) -> RoundSummary:
        cfg, tm = self.cfg, {}
        rec = RoundRecord()
        summary = RoundSummary(t)
        fresh = self.store.start_round(self.run_id, t) if self.store else True
        self._event("round_start", "server", f"round {t}" if fresh else f"round {t} (again, after a restart)")

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
        # a client measures its "before" accuracy in the first round it takes part in (round 1, or
        # later for a client that joins late); never again, so a rejoin does not reset it
        probes = self.grid.probe(t, candidates, evaluate={n for n in clients if n not in self.before},
                                 clients=clients)
        self._mark_dropped(clients, probes, "probe")
        self._require(t, "probe", len(probes))
        tm["probe"] = time.perf_counter() - t0
        for name, pr in probes.items():
            if pr.report.has_test_accuracy:
                self.before[name] = pr.report.test_accuracy
                rec.metrics.append((0, name, "accuracy", pr.report.test_accuracy))
            rec.metrics.append((t, name, "public_accuracy", pr.report.public_accuracy))
            self.public_acc.setdefault(name, pr.report.public_accuracy)  # first probe = before learning
            rec.paths += [(name, p.sample_id, p.text, p.correct) for p in pr.own_paths.paths]
        self.public_acc.setdefault(LLM, float(np.mean(llm_correct)))
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
            own = {p.sample_id: _negative(p.text, p.correct, cfg) for p in pr.own_paths.paths}
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
        self._require(t, "train", len(results))
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
        elif self.server_train:
            # no SLM paths this run (local-only, one direction): the LLM still learns on its own data,
            # as a local-only client does, so comparisons isolate what the SLM paths add
            self.llm.learn(self.server_train, [])
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
            self._checkpoint(t)
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
            correct = np.array([p is not None and p.correct for p in paths], dtype=bool)
            view = PairView(
                sample_ids=[s.id for s in self.public],
                receiver_nll=self._llm_nll_where(correct, texts),
                sender_len=self.llm.path_lengths(texts),
                receiver_len=llm_len,
                sender_correct=correct,
                receiver_correct=np.array(llm_correct, dtype=bool),
                teacher_ce=np.array([s.answer_ce for s in pr.report.stats]) if llm_ce is not None else None,
                student_ce=llm_ce,
            )
            a = self.alloc.allocate(LLM, name, embedding, view, cfg.run.server_budget, t)
            for rank, (i, score) in enumerate(zip(a.indices, a.scores)):
                s = self.public[i]
                pairs.append(Pair(s.id, s.question, texts[i], _negative(llm_paths[i], llm_correct[i], cfg)))
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

    def _llm_nll_where(self, mask: np.ndarray, texts: list[str]) -> np.ndarray:
        """The LLM's NLL of the SLM paths in ``mask`` (the correct ones: no policy may pick
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
        restored = self._restore(committed)
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
        below ``server.min_clients``; record who joined or came back."""
        clients = self.grid.wait_for_clients(n, self.cfg.server.round_timeout)
        self._require(t, "registration", len(clients))
        for name in clients:
            if name in self.known and name not in self.dropped:
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
    def _checkpoint_root(self) -> Path:
        return Path(self.cfg.server.data_dir) / "checkpoints" / f"run-{self.run_id}"

    def _checkpoint(self, t: int) -> None:
        """After round ``t`` is committed, in ``checkpoints/run-<id>/round-<t>/``: the LLM's LoRA
        adapter, its optimizer and every filter's state as safetensors; the SLM paths the LLM keeps,
        its RNGs and what each receiver was given so far as JSON. Written under a temporary name and
        renamed, so a checkpoint on disk is always whole. The two newest are kept."""
        try:
            self._write_checkpoint(t)
        except OSError as e:  # the round is committed; a resume would redo it from the previous checkpoint
            self._event("checkpoint_failed", "server", f"round {t}: {e}")
            self.log(f"[lada] checkpoint of round {t} failed: {e}")

    def _write_checkpoint(self, t: int) -> None:
        root = self._checkpoint_root()
        final, tmp = root / f"round-{t}", root / f".round-{t}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_state_files(self.llm.learner.snapshot(), tmp, prefix="llm_")
        (tmp / "given.json").write_text(json.dumps({f"{r}<-{s}": sorted(ids) for (r, s), ids
                                                    in sorted(self.alloc.given.items())}))
        tensors, dims = {}, {}
        for (recv, send), pol in sorted(self.alloc.policies.items()):
            key = f"{recv}<-{send}"
            dims[key] = int(pol.context_dim)
            for k, v in pol.state_dict().items():
                tensors[f"{key}/{k}"] = v.detach().cpu().contiguous()
        save_file(tensors, str(tmp / "filters.safetensors"))
        meta = {"run_id": self.run_id, "run_name": self.cfg.run.name, "created_at": self._run_created, "round": t,
                "dims": dims}
        (tmp / "meta.json").write_text(json.dumps(meta))
        sync_dir_files(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in root.glob("round-*"):
            if old.name[6:].isdigit() and int(old.name[6:]) < t - 1:
                shutil.rmtree(old, ignore_errors=True)

    def _restore(self, committed: int) -> int:
        """Load the newest checkpoint of this run at or before round ``committed``; its round, or 0."""
        root = self._checkpoint_root()
        for t in range(committed, 0, -1):
            d = root / f"round-{t}"
            try:
                meta = json.loads((d / "meta.json").read_text())
            except (OSError, ValueError):
                continue
            if (meta.get("run_id"), meta.get("run_name"), meta.get("created_at")) != (
                    self.run_id, self.cfg.run.name, self._run_created):
                continue  # another database's run with the same id
            # files an older checkpoint lacks keep the fresh learner's (Adam restarts, nothing kept)
            self.llm.learner.restore(read_state_files(d, self.llm.learner.snapshot(), prefix="llm_"))
            given = d / "given.json"  # absent in older checkpoints
            self.alloc.given = {tuple(k.split("<-", 1)): set(v) for k, v in json.loads(given.read_text()).items()
                                } if given.exists() else {}
            self.llm.version += 1
            state = load_file(str(d / "filters.safetensors"))
            for key, dim in meta["dims"].items():
                recv, send = key.split("<-", 1)
                prefix = f"{key}/"
                self.alloc.policy(recv, send, int(dim)).load_state_dict(
                    {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            return t
        return 0

    # ------------------------------------------------------------------ helpers
    def _mark_dropped(self, expected: list[str], got: dict, phase: str) -> None:
        for name in expected:
            if name not in got:
                self.dropped.add(name)
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
        nan = float("nan")
        rows = ["| model | role | public mix before | accuracy before | accuracy after | change |",
                "|---|---|---|---|---|---|"]
        b = self.before.get(LLM, nan)
        a = last.llm.get("accuracy", nan)
        rows.append(f"| {self.cfg.models.llm} | LLM (held-out mix) | {self.public_acc.get(LLM, nan):.3f} | "
                    f"{b:.3f} | {a:.3f} | {a - b:+.3f} |")
        for name in sorted(last.clients):
            b = self.before.get(name, float("nan"))
            a = last.clients[name]["accuracy"]
            model = self.cfg.models.clients.get(name, "?")
            rows.append(f"| {model} | {name} ({self.cfg.data.client_domains.get(name, '?')}, local test) | "
                        f"{self.public_acc.get(name, nan):.3f} | {b:.3f} | {a:.3f} | {a - b:+.3f} |")
        total = {k: round(sum(h.timings.get(k, 0) for h in self.history), 1) for k in self.history[0].timings}
        rows.append("")
        rows.append("time per phase (s, all rounds): " + ", ".join(f"{k} {v}" for k, v in total.items()))
        return "\n".join(rows)


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
