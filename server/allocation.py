"""Allocation service: one policy (filter) per (receiver, sender) pair, in both
directions; builds the context vectors and turns learning gains into rewards.

The policy math lives in ``lada.common.policies``; this module only assembles
its inputs from what the clients and the LLM reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from lada.common.config import LadaConfig
from lada.common.filters import squash_reward
from lada.common.policies import POLICIES, Allocation, AllocationContext, AllocationPolicy, make_policy
from lada.common.rounds import ProbeResult, ReasoningPath

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


@dataclass
class Teaching:
    """What the LLM offers in a round: its path per public sample, their grades and lengths, and
    what the policies need of the LLM besides (embedding, answer cross-entropies)."""

    candidates: list[ReasoningPath]
    lengths: np.ndarray  # LLM tokens per path
    embedding: np.ndarray | None = None
    answer_ce: np.ndarray | None = None  # only for policies that need it

    @property
    def correct(self) -> np.ndarray:
        return np.array([c.correct for c in self.candidates], dtype=bool)


def down_view(teach: Teaching, probe: ProbeResult) -> PairView:
    """LLM -> client: the client's statistics on the LLM's paths (in candidate order)."""
    stats = probe.stats
    return PairView(
        sample_ids=[s.sample_id for s in stats],
        receiver_nll=np.array([s.nll for s in stats], dtype=np.float64),
        sender_len=teach.lengths,
        receiver_len=np.array([s.own_len for s in stats], dtype=np.float32),
        sender_correct=teach.correct,
        receiver_correct=np.array([s.own_correct for s in stats], dtype=bool),
        teacher_ce=teach.answer_ce,
        student_ce=np.array([s.answer_ce for s in stats], dtype=np.float64),
    )


def up_view(teach: Teaching, probe: ProbeResult, paths: list[str], correct: np.ndarray, llm_nll: np.ndarray,
            path_lengths: np.ndarray) -> PairView:
    """Client -> LLM: the LLM's statistics on the client's own paths (one per public sample; "" and
    not correct where the client sent none)."""
    return PairView(
        sample_ids=[c.sample_id for c in teach.candidates],
        receiver_nll=llm_nll,
        sender_len=path_lengths,
        receiver_len=teach.lengths,
        sender_correct=correct,
        receiver_correct=teach.correct,
        teacher_ce=np.array([s.answer_ce for s in probe.stats]) if teach.answer_ce is not None else None,
        student_ce=teach.answer_ce,
    )


def contexts(embedding: np.ndarray | None, v: PairView) -> np.ndarray:
    """Context = sample embedding ⊕ learnability statistics (docs/architecture.md, "One round")."""
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
        policy = POLICIES.get(self.method)
        self.collaborates = policy.collaborates if policy else True  # (unknown: make_policy names the error)
        self.needs_answer_ce = policy.needs_answer_ce if policy else False

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

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Every filter's tensors (``"<receiver><-<sender>/<name>"``), its context width, and what each
        receiver was given so far: all a resumed server needs to allocate as this one would."""
        tensors: dict[str, torch.Tensor] = {}
        dims: dict[str, int] = {}
        for (recv, send), pol in sorted(self.policies.items()):
            key = f"{recv}<-{send}"
            dims[key] = int(pol.context_dim)
            for k, v in pol.state_dict().items():
                tensors[f"{key}/{k}"] = v.detach().cpu().contiguous()
        given = {f"{r}<-{s}": sorted(ids) for (r, s), ids in sorted(self.given.items())}
        return {"tensors": tensors, "dims": dims, "given": given}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.given = {tuple(k.split("<-", 1)): set(v) for k, v in state.get("given", {}).items()}
        tensors = state["tensors"]
        for key, dim in state["dims"].items():
            recv, send = key.split("<-", 1)
            prefix = f"{key}/"
            self.policy(recv, send, int(dim)).load_state_dict(
                {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
