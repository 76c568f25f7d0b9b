"""Oracles: allocations that know what no deployable policy may know (each sample's true domain
and difficulty, the receiver's domain and capacity). They are references that check a scenario's
premise, not methods: if even an oracle cannot beat random allocation, no filter can, and the
scenario cannot tell a good filter from a bad one.

They are deliberately not in ``POLICIES`` (``run.method``): they need ground-truth facts about the
public samples, which only an experiment harness holding the whole scenario can hand them
(``lada.experiment`` installs them per (receiver, sender) pair). Pure Python/numpy.

* :class:`SameBudgetOracle` (LLM -> client): the budget B filled with the receiver's own domain at
  a difficulty it can learn (at most its capacity, the deepest problems it was pre-trained on),
  samples it was not given before first.
* :class:`LLMGapOracle` (client -> LLM): every SLM path that is right where the LLM is wrong,
  whatever the budget: the most the SLM -> LLM direction can carry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from lada.common.config import FilterConfig
from lada.common.policies import Allocation, AllocationContext, AllocationPolicy


@dataclass(frozen=True)
class SampleFacts:
    """Ground truth about the candidate samples, by sample id."""

    domain: Mapping[str, str]
    difficulty: Mapping[str, int]

    def __post_init__(self) -> None:
        if set(self.domain) != set(self.difficulty):
            raise ValueError("SampleFacts needs a domain and a difficulty for the same samples")


class SameBudgetOracle(AllocationPolicy):
    """B samples ranked by tiers: (1) own domain, difficulty <= capacity, not given before (in a
    seeded random order: every learnable level alike); (2) own domain, harder, not given before
    (easiest first); (3) own domain given before; (4) anything else eligible, at random. Tiers 2-4
    only fill the budget when the pool holds too few of tier 1, so the oracle spends exactly what
    random allocation spends."""

    name = "oracle_same_budget"

    def __init__(self, cfg: FilterConfig, context_dim: int, seed: int, facts: SampleFacts, domain: str,
                 capacity: int) -> None:
        super().__init__(cfg, context_dim, seed)
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1 step, got {capacity}")
        self.facts, self.domain, self.capacity = facts, domain, int(capacity)
        self.given: set[str] = set()

    def allocate(self, ctx: AllocationContext, budget: int, round_idx: int) -> Allocation:
        missing = [s for s in ctx.sample_ids if s not in self.facts.domain]
        if missing:
            raise ValueError(f"the oracle has no facts for {len(missing)} candidates (e.g. {missing[0]!r})")
        elig = ctx.eligible
        noise = self._rng(round_idx).random(ctx.n)
        key = np.full(ctx.n, np.inf)  # lower is better; ineligible stays inf
        for i in elig:
            sid = ctx.sample_ids[i]
            own = self.facts.domain[sid] == self.domain
            diff = self.facts.difficulty[sid]
            fresh = sid not in self.given
            if own and fresh and diff <= self.capacity:
                tier = 0
            elif own and fresh:
                tier = 1
            elif own:
                tier = 2
            else:
                tier = 3
            key[i] = tier * 1000 + (diff if tier in (1, 2) else 0) + noise[i]
        order = [int(i) for i in np.argsort(key, kind="stable") if np.isfinite(key[i])][:budget]
        scores = np.where(np.isfinite(key), 1.0 - np.minimum(key, 4000) / 4000, 0.0)
        self.given.update(ctx.sample_ids[i] for i in order)
        return Allocation(order, [float(scores[i]) for i in order], scores)


class LLMGapOracle(AllocationPolicy):
    """Every eligible (SLM-correct) path on a sample the LLM gets wrong, ignoring the budget."""

    name = "oracle_llm_gap"

    def allocate(self, ctx: AllocationContext, budget: int, round_idx: int) -> Allocation:
        idx = [int(i) for i in ctx.eligible if not ctx.receiver_correct[i]]
        scores = np.zeros(ctx.n)
        scores[idx] = 1.0
        return Allocation(idx, [1.0] * len(idx), scores)
