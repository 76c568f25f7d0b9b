"""Allocation service: one policy (filter) per (receiver, sender) pair, in both
directions; builds the context vectors and turns learning gains into rewards.

The policy math lives in ``lada.common.policies``; this module only assembles
its inputs from what the clients and the LLM reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from lada.common.config import LadaConfig
from lada.common.filters import squash_reward
from lada.common.policies import Allocation, AllocationContext, AllocationPolicy, make_policy

LLM = "llm"


@dataclass
class PairView:
    """Per-candidate statistics of one receiver on one sender's paths."""

    sample_ids: list[str]
    receiver_nll: np.ndarray      # receiver's mean token NLL of the sender path
    sender_len: np.ndarray
    receiver_len: np.ndarray
    sender_correct: np.ndarray
    receiver_correct: np.ndarray
    teacher_ce: np.ndarray | None = None
    student_ce: np.ndarray | None = None


def contexts(embedding: np.ndarray | None, v: PairView) -> np.ndarray:
    """Context = sample embedding ⊕ learnability statistics (DESIGN.md §4)."""
    stats = np.stack(
        [
            v.receiver_nll,
            v.sender_len / 32.0,
            v.receiver_len / 32.0,
            v.receiver_correct.astype(np.float32),
            (v.sender_len - v.receiver_len) / 32.0,
        ],
        axis=1,
    ).astype(np.float32)
    if not np.all(np.isfinite(stats)):
        raise ValueError("learnability statistics contain NaN or inf")
    return stats if embedding is None else np.concatenate([embedding, stats], axis=1)


class AllocationService:
    def __init__(self, cfg: LadaConfig, method: str | None = None) -> None:
        self.cfg = cfg
        self.method = method or cfg.run.method
        self.policies: dict[tuple[str, str], AllocationPolicy] = {}
        self._last: dict[tuple[str, str], tuple[AllocationContext, list[int]]] = {}
        self.given: dict[tuple[str, str], set[str]] = {}  # (receiver, sender) -> sample ids given so far

    def policy(self, receiver: str, sender: str, dim: int) -> AllocationPolicy:
        key = (receiver, sender)
        if key not in self.policies:
            seed = self.cfg.run.seed * 7919 + sum(map(ord, f"{receiver}<-{sender}"))
            self.policies[key] = make_policy(self.method, self.cfg.filter, dim, seed)
        return self.policies[key]

    def allocate(self, receiver: str, sender: str, embedding: np.ndarray | None, view: PairView,
                 budget: int, round_idx: int) -> Allocation:
        given = self.given.setdefault((receiver, sender), set())
        offer = (np.array([sid not in given for sid in view.sample_ids], dtype=bool)
                 if self.cfg.run.fresh_only else None)  # a sample given before is not offered again
        ctx = AllocationContext(
            sample_ids=view.sample_ids,
            contexts=contexts(embedding if self.cfg.filter.embedding == "llm" else None, view),
            receiver_nll=view.receiver_nll,
            sender_correct=view.sender_correct,
            receiver_correct=view.receiver_correct,
            teacher_ce=view.teacher_ce,
            student_ce=view.student_ce,
            offer=offer,
        )
        alloc = self.policy(receiver, sender, ctx.contexts.shape[1]).allocate(ctx, budget, round_idx)
        self._last[(receiver, sender)] = (ctx, list(alloc.indices))
        given.update(view.sample_ids[i] for i in alloc.indices)
        return alloc

    def rewards(self, nll_before: Sequence[float], nll_after: Sequence[float]) -> np.ndarray:
        """Learning gain per allocated sample, or one shared batch reward (knob)."""
        b = np.asarray(nll_before, dtype=np.float64)
        a = np.asarray(nll_after, dtype=np.float64)
        if len(b) == 0:
            return np.zeros(0)
        f = self.cfg.filter
        if f.reward_mode == "batch":
            return np.full(len(b), float(squash_reward(b.mean(), a.mean(), f.reward_scale)))
        return np.asarray(squash_reward(b, a, f.reward_scale), dtype=np.float64)

    def update(self, receiver: str, sender: str, sample_ids: Sequence[str], rewards: Sequence[float]) -> None:
        """Feed this round's rewards to the pair's filter (retrains on the whole history)."""
        if (receiver, sender) not in self._last:
            return
        ctx, chosen = self._last[(receiver, sender)]
        pos = {sid: i for i, sid in enumerate(ctx.sample_ids)}
        idx = [pos[s] for s in sample_ids if s in pos]
        rw = [float(r) for s, r in zip(sample_ids, rewards) if s in pos]
        if idx:
            self.policies[(receiver, sender)].update(ctx, idx, rw)
