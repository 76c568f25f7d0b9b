"""The server's LLM: writes reasoning paths (teach), embeds samples, scores the
SLMs' paths, and learns from the ones its filters pick (SLM -> LLM)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch
from lada.common.answers import family_of
from lada.common.config import LadaConfig
from lada.common.data import Sample, is_correct
from lada.common.learner import Learner, LearnerState, LearnReport, Pair, align_items
from lada.common.models import load_for, resolve_model, torch_device

T = TypeVar("T")


class LLMHost:
    def __init__(self, cfg: LadaConfig, model_path: str | None = None) -> None:
        self.cfg = cfg
        torch_device(cfg.server.device)  # a GPU that is not there: an error before anything loads
        path = model_path or resolve_model(cfg.models.llm, cfg.models, seed=cfg.data.seed)
        s = cfg.server
        model, tok = load_for(cfg.models.llm, path, s.device, s.dtype, cfg.models.prompts.get("llm", "auto"),
                              cfg.train.gradient_checkpointing)
        self.learner = Learner(model, tok, cfg.train, cfg.distill, cfg.lora, seed=cfg.run.seed)
        self.version = 0  # bumps whenever the LLM learns, invalidating the teach cache
        self._teach_cache: tuple[int, list[str]] | None = None
        self._proj: torch.Tensor | None = None
        self._pooled: tuple[int, tuple[str, ...], torch.Tensor] | None = None  # teach's prefill states
        self.compute_s = 0.0  # seconds spent in the LLM's own model work (bench_rounds: overhead = wall - this)

    @contextmanager
    def _timed(self) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.compute_s += time.perf_counter() - t0

    def _run(self, fn: Callable[..., T], *args: object) -> T:
        with self._timed():
            return fn(*args)

    def teach(self, public: Sequence[Sample], embed: bool = False) -> tuple[list[str], list[bool]]:
        """The LLM's path for every public sample, cached until the LLM changes. ``embed``: keep the
        prompts' pooled prefill states from the same generation, for ``embed`` (no second pass)."""
        if self._teach_cache is None or self._teach_cache[0] != self.version:
            pooled: dict[int, torch.Tensor] | None = {} if embed else None
            self._teach_cache = (self.version, self._run(self.learner.paths, [s.question for s in public], pooled))
            if pooled is not None and len(pooled) == len(public):
                rows = torch.stack([pooled[i] for i in range(len(public))])
                self._pooled = (self.version, tuple(s.id for s in public), rows)
        paths = self._teach_cache[1]
        check = self.cfg.distill.check_steps  # graded as a y+: the LLM teaches only paths whose steps hold
        return paths, [is_correct(p, s.answer, family_of(s.id), check) for p, s in zip(paths, public)]

    @torch.inference_mode()
    def embed(self, samples: Sequence[Sample]) -> np.ndarray:
        """Mean-pooled last hidden state of each question's prompt, randomly projected to
        ``filter.embed_dim`` dims (a fixed seeded projection keeps contexts small). Taken from the
        prefill of ``teach(embed=True)`` when it generated for these samples at the LLM's current
        version (it was a separate forward pass of 2.6-3.4 s a round, issue 17); else one pass."""
        dim = self.cfg.filter.embed_dim
        ids = tuple(s.id for s in samples)
        if self._pooled is not None and self._pooled[:2] == (self.version, ids):
            h = self._pooled[2]
        else:
            h = self._run(self.learner.pooled, [s.question for s in samples])
        if self._proj is None:
            g = torch.Generator().manual_seed(self.cfg.data.seed)
            self._proj = torch.randn(h.shape[1], dim, generator=g) / h.shape[1] ** 0.5
        return (h @ self._proj).numpy().astype(np.float32)

    def nll(self, questions: Sequence[str], paths: Sequence[str]) -> np.ndarray:
        return self._run(self.learner.nll, questions, paths)

    def answer_ce(self, samples: Sequence[Sample]) -> np.ndarray:
        return self._run(self.learner.answer_nll, [s.question for s in samples], [s.answer for s in samples])

    def path_lengths(self, paths: Sequence[str]) -> np.ndarray:
        return np.array([len(self.learner.tok(p)["input_ids"]) for p in paths], dtype=np.float32)

    def learn(self, local: Sequence[Sample], pairs: Sequence[Pair]) -> LearnReport:
        rep = self._run(self.learner.learn_round, local, pairs, align_items(self.cfg.filter, self.cfg.run.method),
                        None, self.cfg.filter.align_center)
        self.version += 1
        return rep

    def evaluate(self, samples: Sequence[Sample]) -> float:
        return self._run(self.learner.evaluate, samples)[0]

    def state_dict(self) -> LearnerState:
        """The LLM's learner state (LoRA adapter, optimizer, kept paths, RNGs) for a checkpoint."""
        return self.learner.snapshot()

    def load_state_dict(self, state: LearnerState) -> None:
        """Go on from a checkpoint; the LLM changed, so the teach cache is stale."""
        self.learner.restore(state)
        self.version += 1
