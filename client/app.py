"""What an edge client does with a task, independent of how the task arrived.

The gRPC runtime (``lada.client.runtime``) and the in-process transport both
call these two methods with the round's dataclasses (``lada.common.rounds``;
each transport converts its wire form through ``lada.common.wire``), so the
same code runs in the demo, the tests and the experiment harness.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from lada.common.answers import family_of
from lada.common.config import LadaConfig
from lada.common.data import Sample, is_correct, path_steps
from lada.common.learner import Learner, LearnerState, Pair
from lada.common.models import load_for, resolve_model, torch_device
from lada.common.rounds import (
    AllocatedPair,
    ProbeResult,
    ReasoningPath,
    SampleReward,
    SampleStats,
    TaskInfo,
    TrainResult,
)
from lada.common.scenario import scenario_splits
from lada.common.state import read_meta, read_state_files, write_state_dir

from .state_owner import claim_state_dir

log = logging.getLogger("lada.client")
KEEP_ROUND_STARTS = 3  # a resumed server redoes a round after its last checkpoint: one of the newest


def check_client_name(cfg: LadaConfig, name: str) -> None:
    """A name the config has no data domain and model for is a usage error, said before anything loads
    (else the empty model name reaches the model hub and fails there with an unrelated message)."""
    valid = sorted(set(cfg.data.client_domains) & set(cfg.models.clients))
    if name not in valid:
        raise ValueError(f"unknown client name {name!r}: this config's clients are {valid} "
                         "(keys of both data.client_domains and models.clients)")


def client_data(cfg: LadaConfig, name: str) -> tuple[list[Sample], list[Sample]]:
    """This client's private train/test split (generated locally, never sent)."""
    if name not in cfg.data.client_domains:
        raise ValueError(f"client {name!r} not in data.client_domains {sorted(cfg.data.client_domains)}")
    splits = scenario_splits(cfg.data)
    train = splits.client_train[name]
    if not cfg.data.private_solutions:  # labels only: the worked solutions never exist on the client
        train = [replace(s, solution="") for s in train]
    return train, splits.client_test[name]


def self_taught(samples: Sequence[Sample], paths: Sequence[str], check_steps: bool = False) -> list[Sample]:
    """The samples whose path (the model's own) reaches the label, with that path as the
    solution: self-training on answer-only data (STaR-style rejection sampling) -- a label
    can check a reasoning path but cannot write one. ``check_steps``: keep only paths whose
    steps hold too (``distill.check_steps``), else it trains on its own wrong steps."""
    return [replace(s, solution=path_steps(p))
            for s, p in zip(samples, paths) if is_correct(p, s.answer, family_of(s.id), check_steps)]


class ClientApp:
    """An SLM with LoRA adapters, its private data, and the two task handlers.

    With a ``state_dir`` the client writes its learner state (adapter, optimizer, kept paths,
    RNGs) there at the start of each round and after each TRAIN, so a restarted client process
    resumes the run where it stopped instead of from the base model, and can still undo a round
    the server redoes. Without one, that state lives in memory only."""

    def __init__(self, cfg: LadaConfig, name: str, model_path: str | None = None,
                 state_dir: str | Path | None = None) -> None:
        check_client_name(cfg, name)
        torch_device(cfg.client.device)  # a GPU that is not there: an error before anything loads
        self.cfg, self.name = cfg, name
        torch.set_num_threads(cfg.run.threads)
        self.model_name = cfg.models.clients[name]
        self.state_dir = Path(state_dir) if state_dir else None
        if self.state_dir:  # another client's or model's folder is refused before the model loads
            claim_state_dir(self.state_dir, name, self.model_name)
        path = model_path or resolve_model(self.model_name, cfg.models, seed=cfg.data.seed)
        c = cfg.client
        model, tok = load_for(self.model_name, path, c.device, c.dtype, cfg.models.prompts.get(name, "auto"),
                              cfg.train.gradient_checkpointing)
        self.learner = Learner(model, tok, cfg.train, cfg.distill, cfg.lora,
                               seed=cfg.run.seed * 1000 + sum(map(ord, name)))
        self.train_set, self.test_set = client_data(cfg, name)
        self.domain = cfg.data.client_domains[name]
        # (run key, round) -> learner state at that round's start; the newest few rounds of one run
        self._round_start: dict[tuple[str, int], LearnerState] = {}
        self.rolled_back: list[int] = []  # rounds this app undid because the server redid them
        self.resumed_from: Path | None = None  # the saved state this app went on from, if any
        self._run_key = ""  # the run this app's learner state belongs to ("" before its first keyed task)
        self._base = self.learner.snapshot()  # every run starts here, unless a saved state of it exists
        self._seq = 0  # numbers the saved states of the current run: the highest is the newest
        # round -> per-item correctness of that round's evaluation, in test-set order (round 0 = before
        # learning): what a paired significance test compares across methods (lada experiment)
        self.evaluations: dict[int, list[bool]] = {}

    # ------------------------------------------------------------------ PROBE
    def probe(self, task: TaskInfo, candidates: Sequence[ReasoningPath]) -> ProbeResult:
        """Learnability statistics of this SLM on the sender's paths, and its own paths."""
        self._enter_run(task.run_key)
        self._start_round(task)
        paths = list(candidates)
        qs = [p.question for p in paths]
        nll = self.learner.nll(qs, [p.text for p in paths])
        own = self.learner.paths(qs)
        ce = self.learner.answer_nll(qs, [p.answer for p in paths])
        tok = self.learner.tok
        stats, own_paths = [], []
        for p, n, o, c in zip(paths, nll, own, ce):
            ok = is_correct(o, p.answer, family_of(p.sample_id), self.cfg.distill.check_steps)  # a y+? (rounds.grade)
            stats.append(SampleStats(p.sample_id, float(n), len(tok(p.text)["input_ids"]), len(tok(o)["input_ids"]),
                                     own_correct=ok, sender_correct=p.correct, answer_ce=float(c)))
            own_paths.append(ReasoningPath(p.sample_id, p.question, o, answer=p.answer, correct=ok))
        public_accuracy = sum(s.own_correct for s in stats) / max(len(paths), 1)
        return ProbeResult(stats, own_paths, public_accuracy,
                           test_accuracy=self.test_accuracy(0) if task.evaluate else None)

    def _start_round(self, task: TaskInfo) -> None:
        """A probe opens a round. Seen before in this run: the server restarted and redoes the
        round, so go back to this round's starting state (its first try's learning never
        committed). New: remember the starting state. Without a run key nothing is kept."""
        if not task.run_key:
            return
        key = (task.run_key, task.round)
        if key in self._round_start:
            self.learner.restore(self._round_start[key])
            self._forget_after(task.round)
            self.rolled_back.append(task.round)
            log.warning("%s: the server redoes round %d (it restarted); back to that round's starting state",
                        self.name, task.round)
            return
        newest = sorted(k for k in self._round_start if k[0] == task.run_key and k[1] < task.round)
        self._round_start = {k: self._round_start[k] for k in newest[-(KEEP_ROUND_STARTS - 1):]}
        self._round_start[key] = self.learner.snapshot()
        self._save(self._round_start[key], {"start_of": task.round})

    # ------------------------------------------------------------------ saved state
    def _run_dir(self, run_key: str) -> Path:
        assert self.state_dir is not None
        return self.state_dir / f"run-{hashlib.sha256(run_key.encode()).hexdigest()[:16]}"

    def _saved(self, run_key: str) -> list[tuple[int, Path, dict]]:
        """This run's saved states, oldest first (a folder being written has a dot name: skipped)."""
        out = []
        d = self._run_dir(run_key)
        for p in d.glob("state-*") if d.is_dir() else []:
            meta = read_meta(p)
            if meta and meta.get("run_key") == run_key and p.name[6:].isdigit():
                out.append((int(p.name[6:]), p, meta))
        return sorted(out, key=lambda x: x[0])

    def _enter_run(self, run_key: str) -> None:
        """The first task of a run in this app: start from its newest saved state if this client
        has one (its process restarted mid-run), else from the base model."""
        if not run_key or run_key == self._run_key:
            return
        if self._run_key:  # a new run after another one: not on top of the old run's learning
            self.learner.restore(self._base)
        self._run_key, self._seq, self._round_start = run_key, 0, {}
        saved = self._saved(run_key) if self.state_dir else []
        if not saved:
            return
        base = self.learner.snapshot()
        for _, path, meta in saved:  # the round starts a redone round may need, then the newest state
            if "start_of" in meta:
                self._round_start[(run_key, int(meta["start_of"]))] = read_state_files(path, base)
        seq, path, meta = saved[-1]
        self.learner.restore(read_state_files(path, base))
        self._seq, self.resumed_from = seq, path
        log.warning("%s: resuming the run from its saved state %s (%s round %s)", self.name, path,
                    "start of" if "start_of" in meta else "after", meta.get("start_of", meta.get("after")))

    def _forget_after(self, round_idx: int) -> None:
        """Undoing round ``round_idx``: its saved start becomes the newest saved state again, and what
        the undone try saved after it goes (a restart now must not resume from the undone learning)."""
        saved = self._saved(self._run_key) if self.state_dir else []
        start = [seq for seq, _, meta in saved if meta.get("start_of") == round_idx]
        if not start:
            return
        for seq, path, _ in saved:
            if seq > start[-1]:
                shutil.rmtree(path, ignore_errors=True)
        self._seq = start[-1]

    def _save(self, state: LearnerState, what: dict) -> None:
        """Write ``state`` as this run's newest saved state, then drop the saved states nothing can
        need any more: only the newest and the round starts held in memory are kept."""
        if not (self.state_dir and self._run_key):
            return
        self._seq += 1
        run_dir = self._run_dir(self._run_key)
        run_dir.mkdir(parents=True, exist_ok=True)
        write_state_dir(state, run_dir / f"state-{self._seq:06d}",
                        {"run_key": self._run_key, "client": self.name, "model": self.model_name,
                         "seq": self._seq, "written_at": time.time(), **what})
        starts = {r for k, r in self._round_start if k == self._run_key}
        for _, path, meta in self._saved(self._run_key)[:-1]:
            if meta.get("start_of") not in starts:
                shutil.rmtree(path, ignore_errors=True)
        for tmp in run_dir.glob(".state-*.tmp"):  # left by a process killed while writing
            shutil.rmtree(tmp, ignore_errors=True)

    # ------------------------------------------------------------------ TRAIN
    def train(self, task: TaskInfo, samples: Sequence[AllocatedPair]) -> TrainResult:
        """Local SFT + contrastive distillation on the allocated pairs; report NLL before/after."""
        t0 = time.perf_counter()
        self._enter_run(task.run_key)
        pairs = [Pair(s.sample_id, s.question, s.positive, s.negative) for s in samples]
        local = self.local_targets()
        rep = self.learner.learn_round(local, pairs, task.align_items, self.align_set(local), task.align_center)
        align = rep.alignment if rep.alignment is not None else np.zeros(len(rep.sample_ids))
        out = TrainResult(  # alignment: the reward filter.reward=aligned learns from, measured here
            samples=[SampleReward(sid, float(b), float(a), float(g))
                     for sid, b, a, g in zip(rep.sample_ids, rep.nll_before, rep.nll_after, align)],
            steps=rep.steps, loss_sft=rep.losses.get("sft", 0.0), loss_cd=rep.losses.get("cd", 0.0),
            test_accuracy=self.test_accuracy(task.round))
        self._save(self.learner.snapshot(), {"after": task.round})
        out.train_seconds = time.perf_counter() - t0
        return out

    def local_targets(self) -> list[Sample]:
        """What local SFT trains on this round: the private set, or (answers only) this
        SLM's own paths on it that reach the label, rewritten every round."""
        if self.cfg.data.private_solutions:
            return self.train_set
        return self_taught(self.train_set, self.learner.paths([s.question for s in self.train_set]),
                           self.cfg.distill.check_steps)

    def align_set(self, local: Sequence[Sample]) -> list[Sample]:
        """What the aligned reward aligns with: the private set, each item as this SLM's own worked
        path where it has one this round (``local``), else answer-only. The slice is fixed by id
        (the private set does not change, a self-taught set does, and can be empty for a weak SLM),
        and its worked items are what the SLM can already solve: own domain, within its capacity."""
        worked = {s.id: s for s in local}
        return [worked.get(s.id, s) for s in self.train_set]

    def test_accuracy(self, round_idx: int | None = None) -> float:
        """Accuracy on the private test set, its per-item correctness kept in ``evaluations``. Before
        learning (round 0) and in the last round every item; in between the first
        ``data.n_test_between`` (a stratified prefix: the same items every round and method)."""
        between = self.cfg.data.n_test_between
        full = round_idx is None or round_idx == 0 or round_idx >= self.cfg.run.rounds or between is None
        items = self.test_set if full else self.test_set[:between]
        acc, _, correct = self.learner.evaluate(items)
        if round_idx is not None:
            self.evaluations[round_idx] = [bool(c) for c in correct]
        return float(np.float32(acc))
