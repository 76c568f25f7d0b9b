"""Allocation policies: which public samples a receiver learns from this round.

Every method of the comparison (LaDa and its baselines) is one class with the
same interface, so the server runs them interchangeably and every method gets
the same budget B (except ``all_public``, which is the "more data" reference,
and ``local_only``, which allocates nothing).

Shared rule: a sample is *eligible* only if the sender's path is correct —
a wrong path is never taught. If fewer samples are eligible than the budget,
the ranked policies allocate all eligible ones.

Pure numpy / PyTorch; no I/O.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch
from lada.common.config import FilterConfig
from lada.common.filters import NeuralBanditFilter, kmeans_cold_start, retrain_all, select


@dataclass
class AllocationContext:
    """What a policy may look at for one (receiver, sender) pair and one round.

    ``contexts`` (n x d) is the filter input (sample embedding ⊕ learnability
    statistics); the other arrays hold one value per candidate sample.
    ``teacher_ce``/``student_ce`` are the cross-entropies of the answer under
    sender/receiver, used by FedMKT; when absent FedMKT falls back to
    ``sender_nll``/``receiver_nll``.
    """

    sample_ids: list[str]
    contexts: np.ndarray
    receiver_nll: np.ndarray
    sender_correct: np.ndarray
    receiver_correct: np.ndarray
    teacher_ce: np.ndarray | None = None
    student_ce: np.ndarray | None = None
    sender_nll: np.ndarray | None = None
    offer: np.ndarray | None = None  # candidates the caller lets this round offer (None: all)
    given_count: np.ndarray | None = None  # times each candidate was already given to this receiver

    def __post_init__(self) -> None:
        n = len(self.sample_ids)
        self.contexts = np.asarray(self.contexts, dtype=np.float32)
        if self.contexts.ndim != 2 or len(self.contexts) != n:
            raise ValueError(f"contexts must have shape ({n}, d), got {self.contexts.shape}")
        self.receiver_nll = np.asarray(self.receiver_nll, dtype=np.float64).reshape(-1)
        self.sender_correct = np.asarray(self.sender_correct, dtype=bool).reshape(-1)
        self.receiver_correct = np.asarray(self.receiver_correct, dtype=bool).reshape(-1)
        if self.offer is not None:
            self.offer = np.asarray(self.offer, dtype=bool).reshape(-1)
        if self.given_count is not None:
            self.given_count = np.asarray(self.given_count, dtype=np.int64).reshape(-1)
        for name in ("teacher_ce", "student_ce", "sender_nll"):
            val = getattr(self, name)
            if val is not None:
                setattr(self, name, np.asarray(val, dtype=np.float64).reshape(-1))
        for name in (
            "receiver_nll",
            "sender_correct",
            "receiver_correct",
            "teacher_ce",
            "student_ce",
            "sender_nll",
            "offer",
            "given_count",
        ):
            val = getattr(self, name)
            if val is not None and len(val) != n:
                raise ValueError(f"{name} has {len(val)} entries, expected {n}")

    @property
    def n(self) -> int:
        return len(self.sample_ids)

    @property
    def eligible(self) -> np.ndarray:
        """Indices whose sender path is correct (the only ones that may be taught) and that the
        caller offers this round (``run.fresh_only`` withholds what a receiver was given before)."""
        ok = self.sender_correct if self.offer is None else self.sender_correct & self.offer
        return np.flatnonzero(ok)


@dataclass
class Allocation:
    """Chosen indices (into the context arrays), their scores in the same order, and
    the policy's score of every candidate (for the dashboard heat map).

    Baseline scores are normalised to [0, 1]; LaDa's are the raw filter scores
    ``f1 + λ·f2`` (in [-λ, 1+λ], comparable to the threshold), and 1/0 (chosen or
    not) in a cold-start round, when nothing has been learned yet."""

    indices: list[int]
    scores: list[float]
    all_scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    memo: dict[str, np.ndarray] = field(default_factory=dict)  # per chosen index: what update needs back


def _minmax(x: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] for display; a constant (or empty) vector maps to 0.5."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        return x
    lo, hi = float(np.min(x)), float(np.max(x))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi - lo < 1e-12:
        return np.full(len(x), 0.5)
    return (x - lo) / (hi - lo)


def _top_eligible(all_scores: np.ndarray, eligible: np.ndarray, budget: int, cfg: FilterConfig) -> Allocation:
    """Rank the eligible candidates by ``all_scores`` via :func:`select`, map back to indices."""
    local = select(all_scores[eligible], budget, cfg)
    idx = [int(eligible[i]) for i in local]
    return Allocation(idx, [float(all_scores[i]) for i in idx], all_scores)


_TOPK = FilterConfig(select="topk")


class AllocationPolicy(ABC):
    """One allocation method. ``update`` feeds back the rewards of what was chosen;
    ``state_dict`` holds only tensors, so it can be stored with safetensors."""

    name: str = ""
    collaborates: bool = True  # False: the method allocates nothing in either direction (the round skips it)
    needs_answer_ce: bool = False  # True: the round measures the answer cross-entropies (teacher_ce/student_ce)

    def __init__(self, cfg: FilterConfig, context_dim: int, seed: int) -> None:
        self.cfg = cfg
        self.context_dim = context_dim
        self.seed = int(seed)

    @abstractmethod
    def allocate(self, ctx: AllocationContext, budget: int, round_idx: int) -> Allocation: ...

    def update(self, ctx: AllocationContext, chosen: list[int], rewards: list[float],
               alloc: Allocation | None = None) -> None:
        """Feed back the rewards of ``chosen`` (a subset of ``alloc.indices``, the allocation made on
        ``ctx``). Baselines do not learn: no-op."""
        del ctx, chosen, rewards, alloc

    def filters(self) -> list[NeuralBanditFilter]:
        """The learning filters behind this policy (for :func:`retrain_all`); baselines have none."""
        return []

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Baselines are stateless."""
        del state

    def _rng(self, round_idx: int) -> np.random.Generator:
        """A fresh RNG per (seed, round): reproducible without stored state."""
        return np.random.default_rng([self.seed, int(round_idx)])


class LadaPolicy(AllocationPolicy):
    """LaDa: learnability-aware allocation with an EE-Net filter.

    Round 1 (or no reward history): cold start — K-means over the eligible
    contexts, the samples nearest the centroids (``cold_start="kmeans"``), or a
    uniform draw (``"random"``). Afterwards: ``score = f1(x) + λ·f2(φ(x))`` and
    top-B (or above-threshold, capped at B). Every allocation keeps f1's prediction
    and φ of what it chose (``Allocation.memo``), so ``update`` trains f2 on the error
    of the f1 that made the choice. A sample the receiver was already given
    (``ctx.given_count > 0``) is not offered again unless ``cfg.resend``.
    """

    name = "lada"

    def __init__(self, cfg: FilterConfig, context_dim: int, seed: int) -> None:
        super().__init__(cfg, context_dim, seed)
        self.filter = NeuralBanditFilter(context_dim, cfg, seed)
        self._last: Allocation | None = None

    def _eligible(self, ctx: AllocationContext) -> np.ndarray:
        elig = ctx.eligible
        if not self.cfg.resend and ctx.given_count is not None:
            elig = elig[ctx.given_count[elig] == 0]
        return elig

    def allocate(self, ctx: AllocationContext, budget: int, round_idx: int) -> Allocation:
        elig = self._eligible(ctx)
        scores, f1, phi = self.filter.parts(ctx.contexts)
        if round_idx <= 1 or not self.filter.has_history:
            # Cold-start "scores" are the selection indicator: nothing has been learned yet.
            k = min(budget, len(elig))
            if self.cfg.cold_start == "kmeans":
                local = kmeans_cold_start(ctx.contexts[elig], k, self.seed + round_idx)
            else:
                local = sorted(int(i) for i in self._rng(round_idx).choice(len(elig), k, replace=False))
            idx = [int(elig[i]) for i in local]
            all_scores = np.zeros(ctx.n)
            all_scores[idx] = 1.0
            alloc = Allocation(idx, [1.0] * len(idx), all_scores)
        else:
            alloc = _top_eligible(scores, elig, budget, self.cfg)
        pick = np.asarray(alloc.indices, dtype=int)
        alloc.memo = {"f1": f1[pick], "phi": phi[pick]}
        self._last = alloc
        return alloc

    def update(self, ctx: AllocationContext, chosen: list[int], rewards: list[float],
               alloc: Allocation | None = None) -> None:
        """Retrain the filter with the rewards of the chosen samples, each with f1's prediction and
        φ from when it was chosen (``alloc``, else this policy's latest allocation). One reward for
        several samples (``reward_mode="batch"``) is shared by all of them."""
        if not chosen:
            return
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if len(r) == 1 and len(chosen) > 1:
            r = np.full(len(chosen), r[0])
        src = alloc if alloc is not None else self._last
        rows = np.asarray(chosen, dtype=int)
        pos = {i: k for k, i in enumerate(src.indices)} if src is not None and src.memo else {}
        if src is not None and pos and all(int(i) in pos for i in rows):
            at = np.asarray([pos[int(i)] for i in rows], dtype=int)
            self.filter.update(ctx.contexts[rows], r, src.memo["f1"][at], src.memo["phi"][at], pool=ctx.contexts)
        else:  # not chosen by an allocation this policy remembers: the filter as it is now
            self.filter.update(ctx.contexts[rows], r, pool=ctx.contexts)

    def filters(self) -> list[NeuralBanditFilter]:
        return [self.filter]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"filter.{k}": v for k, v in self.filter.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.filter.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("filter.")})


class RandomPolicy(AllocationPolicy):
    """Uniformly random B eligible samples (score = the random priority)."""

    name = "random"

    def allocate(self, ctx: AllocationContext, budget: int, round_idx: int) -> Allocation:
        return _top_eligible(self._rng(round_idx).random(ctx.n), ctx.eligible, budget, _TOPK)


class LowestNllPolicy(AllocationPolicy):
    """Easiest first: the B eligible samples with the lowest receiver NLL
    (score = min-max of ``-nll``)."""

    name = "lowest_nll"

    def allocate(self, ctx: AllocationContext, budget: int, round_idx: int) -> Allocation:
        return _top_eligible(_minmax(-ctx.receiver_nll), ctx.eligible, budget, _TOPK)


class HighestNllPolicy(AllocationPolicy):
    """Hardest first: the B eligible samples with the highest receiver NLL
    (score = min-max of ``nll``)."""

    name = "highest_nll"

    def allocate(self, ctx: AllocationContext, budget: int, round_idx: int) -> Allocation:
        return _top_eligible(_minmax(ctx.receiver_nll), ctx.eligible, budget, _TOPK)


class FedMKTPolicy(AllocationPolicy):
    """FedMKT-style selection: keep a sample where the teacher knows the answer
    better, ``CE_teacher < CE_student``, then the B with the largest gap
    ``CE_student - CE_teacher`` (score = min-max of the gap). May allocate fewer
    than B. Without CEs it uses ``sender_nll``/``receiver_nll``."""

    name = "fedmkt"
    needs_answer_ce = True

    def allocate(self, ctx: AllocationContext, budget: int, round_idx: int) -> Allocation:
        teacher = ctx.teacher_ce if ctx.teacher_ce is not None else ctx.sender_nll
        student = ctx.student_ce if ctx.student_ce is not None else ctx.receiver_nll
        if teacher is None:
            raise ValueError("fedmkt needs teacher_ce or sender_nll")
        gap = student - teacher
        all_scores = _minmax(gap)
        keep = ctx.eligible[gap[ctx.eligible] > 0]
        local = select(gap[keep], budget, _TOPK)
        idx = [int(keep[i]) for i in local]
        return Allocation(idx, [float(all_scores[i]) for i in idx], all_scores)


class AllPublicPolicy(AllocationPolicy):
    """Every eligible sample, ignoring the budget: a reference with a *larger*
    budget (more data), not a same-budget competitor."""

    name = "all_public"

    def allocate(self, ctx: AllocationContext, budget: int, round_idx: int) -> Allocation:
        idx = [int(i) for i in ctx.eligible]
        all_scores = np.zeros(ctx.n)
        all_scores[idx] = 1.0
        return Allocation(idx, [1.0] * len(idx), all_scores)


class LocalOnlyPolicy(AllocationPolicy):
    """No collaboration: allocates nothing (clients train on local data only)."""

    name = "local_only"
    collaborates = False

    def allocate(self, ctx: AllocationContext, budget: int, round_idx: int) -> Allocation:
        return Allocation([], [], np.zeros(ctx.n))


POLICIES: dict[str, type[AllocationPolicy]] = {
    cls.name: cls
    for cls in (
        LadaPolicy,
        RandomPolicy,
        LowestNllPolicy,
        HighestNllPolicy,
        FedMKTPolicy,
        AllPublicPolicy,
        LocalOnlyPolicy,
    )
}


def retrain_stale(policies: Iterable[AllocationPolicy]) -> int:
    """Retrain, in one batched computation (:func:`retrain_all`), every filter of ``policies`` that
    has rewards it has not yet trained on, before any of them scores; how many were retrained."""
    return retrain_all([f for p in policies for f in p.filters()])


def make_policy(name: str, cfg: FilterConfig, context_dim: int, seed: int) -> AllocationPolicy:
    """The policy registered under ``name`` (``RunConfig.method``)."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown allocation method {name!r}; choose one of {sorted(POLICIES)}") from None
    return cls(cfg, context_dim, seed)
