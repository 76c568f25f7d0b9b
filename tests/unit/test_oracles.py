"""The oracles pick what they are defined to pick (they check a scenario's premise)."""

from __future__ import annotations

import numpy as np
import pytest
from lada.common.config import FilterConfig
from lada.common.oracles import LLMGapOracle, SameBudgetOracle, SampleFacts
from lada.common.policies import AllocationContext


def _ctx(n: int, sender_correct: np.ndarray | None = None, receiver_correct: np.ndarray | None = None
         ) -> AllocationContext:
    return AllocationContext(
        sample_ids=[f"p{i}" for i in range(n)], contexts=np.zeros((n, 3)), receiver_nll=np.ones(n),
        sender_correct=np.ones(n, bool) if sender_correct is None else sender_correct,
        receiver_correct=np.zeros(n, bool) if receiver_correct is None else receiver_correct)


def _facts(n: int) -> SampleFacts:
    doms = ["arith", "shop", "clock", "count"]
    return SampleFacts({f"p{i}": doms[i % 4] for i in range(n)}, {f"p{i}": 1 + (i // 4) % 5 for i in range(n)})


def test_same_budget_oracle_gives_own_domain_within_capacity_first_and_never_resends_early() -> None:
    n = 200  # 50 arith samples, 10 per difficulty 1..5
    facts = _facts(n)
    oracle = SameBudgetOracle(FilterConfig(), 3, seed=0, facts=facts, domain="arith", capacity=2)
    ctx = _ctx(n, sender_correct=np.array([i % 7 != 0 for i in range(n)]))  # some LLM paths wrong
    first = oracle.allocate(ctx, 12, 1)
    assert len(first.indices) == 12
    assert all(facts.domain[f"p{i}"] == "arith" and facts.difficulty[f"p{i}"] <= 2 for i in first.indices)
    assert all(ctx.sender_correct[i] for i in first.indices)  # only correct paths are taught
    # arith at <= 2 steps and correct: 20 minus the wrong ones; the second round takes the rest, then harder
    second = oracle.allocate(ctx, 12, 2)
    assert not set(first.indices) & set(second.indices)
    assert all(facts.domain[f"p{i}"] == "arith" for i in second.indices)
    diffs = [facts.difficulty[f"p{i}"] for i in second.indices]
    over = [d > 2 for d in diffs]
    assert over == sorted(over) and any(over) and not any(over[:3])  # learnable first, then the fill
    assert [d for d in diffs if d > 2] == sorted(d for d in diffs if d > 2) and max(diffs) == 3  # next-easiest
    # the budget is always spent while anything is eligible (same budget as random)
    assert all(len(oracle.allocate(ctx, 60, r).indices) == 60 for r in range(3, 8))


def test_same_budget_oracle_refuses_unknown_samples_and_bad_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        SameBudgetOracle(FilterConfig(), 3, 0, _facts(8), "arith", 0)
    oracle = SameBudgetOracle(FilterConfig(), 3, 0, _facts(8), "arith", 2)
    with pytest.raises(ValueError, match="no facts"):
        oracle.allocate(_ctx(9), 4, 1)


def test_llm_gap_oracle_takes_every_slm_right_llm_wrong_path_whatever_the_budget() -> None:
    rng = np.random.default_rng(0)
    slm_right, llm_right = rng.random(300) < 0.3, rng.random(300) < 0.7
    a = LLMGapOracle(FilterConfig(), 3, 0).allocate(_ctx(300, slm_right, llm_right), 5, 1)
    assert a.indices == [int(i) for i in np.flatnonzero(slm_right & ~llm_right)]
    assert len(a.indices) > 5
