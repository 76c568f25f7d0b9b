"""Allocation policies: eligibility, budget, each baseline's rule, LaDa's life cycle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from lada.common.config import FilterConfig
from lada.common.policies import (
    POLICIES,
    Allocation,
    AllocationContext,
    AllocationPolicy,
    make_policy,
)
from safetensors.torch import load_file, save_file

D = 12
CFG = FilterConfig(epochs=3)


def _ctx(n: int = 200, seed: int = 0, p_correct: float = 0.6) -> AllocationContext:
    rng = np.random.default_rng(seed)
    return AllocationContext(
        sample_ids=[f"s{i}" for i in range(n)],
        contexts=rng.normal(size=(n, D)),
        receiver_nll=rng.gamma(2.0, 1.0, size=n),
        sender_correct=rng.random(n) < p_correct,
        receiver_correct=rng.random(n) < 0.4,
        teacher_ce=rng.gamma(2.0, 1.0, size=n),
        student_ce=rng.gamma(2.0, 1.0, size=n),
    )


def _check(alloc: Allocation, ctx: AllocationContext) -> None:
    assert isinstance(alloc, Allocation)
    assert len(alloc.indices) == len(set(alloc.indices)) == len(alloc.scores)
    assert all(ctx.sender_correct[i] for i in alloc.indices), "a wrong sender path was allocated"
    assert alloc.all_scores.shape == (ctx.n,)
    assert np.all(np.isfinite(alloc.all_scores))
    for i, s in zip(alloc.indices, alloc.scores, strict=True):
        assert s == pytest.approx(alloc.all_scores[i])


def _lada_with_history(ctx: AllocationContext, seed: int = 0) -> AllocationPolicy:
    pol = make_policy("lada", CFG, D, seed)
    first = pol.allocate(ctx, 30, 1)
    pol.update(ctx, first.indices, list(np.linspace(0.2, 0.8, len(first.indices))))
    return pol


def test_registry_and_make_policy() -> None:
    assert set(POLICIES) == {
        "lada",
        "random",
        "lowest_nll",
        "highest_nll",
        "fedmkt",
        "all_public",
        "local_only",
    }
    for name in POLICIES:
        pol = make_policy(name, CFG, D, 0)
        assert isinstance(pol, AllocationPolicy) and pol.name == name
    with pytest.raises(ValueError, match="unknown"):
        make_policy("nope", CFG, D, 0)


@pytest.mark.parametrize("name", ["lada", "random", "lowest_nll", "highest_nll", "fedmkt"])
@pytest.mark.parametrize("round_idx", [1, 2])
def test_budget_and_eligibility(name: str, round_idx: int) -> None:
    ctx = _ctx()
    pol = _lada_with_history(ctx) if name == "lada" else make_policy(name, CFG, D, 0)
    alloc = pol.allocate(ctx, 40, round_idx)
    _check(alloc, ctx)
    if name == "fedmkt":
        assert len(alloc.indices) <= 40
    else:
        assert len(alloc.indices) == 40
    if name != "lada":
        assert np.all((alloc.all_scores >= 0) & (alloc.all_scores <= 1))


@pytest.mark.parametrize("name", ["lada", "random", "lowest_nll", "highest_nll"])
def test_fewer_eligible_than_budget_takes_all(name: str) -> None:
    ctx = _ctx(n=100, p_correct=0.1)
    elig = set(np.flatnonzero(ctx.sender_correct).tolist())
    assert 0 < len(elig) < 50
    for round_idx in (1, 3):
        pol = _lada_with_history(ctx) if name == "lada" and round_idx > 1 else make_policy(name, CFG, D, 0)
        alloc = pol.allocate(ctx, 50, round_idx)
        _check(alloc, ctx)
        assert set(alloc.indices) == elig


def test_nothing_eligible() -> None:
    ctx = _ctx(n=50, p_correct=0.0)
    for name in POLICIES:
        pol = _lada_with_history(ctx) if name == "lada" else make_policy(name, CFG, D, 0)
        assert pol.allocate(ctx, 10, 1).indices == []


def test_nll_orderings() -> None:
    ctx = _ctx()
    elig = np.flatnonzero(ctx.sender_correct)
    nll = ctx.receiver_nll
    low = make_policy("lowest_nll", CFG, D, 0).allocate(ctx, 20, 1)
    high = make_policy("highest_nll", CFG, D, 0).allocate(ctx, 20, 1)
    assert low.indices == [int(i) for i in elig[np.argsort(nll[elig], kind="stable")][:20]]
    assert high.indices == [int(i) for i in elig[np.argsort(-nll[elig], kind="stable")][:20]]
    assert max(nll[low.indices]) <= min(nll[high.indices])
    assert low.all_scores[int(np.argmin(nll))] == pytest.approx(1.0)
    assert high.all_scores[int(np.argmax(nll))] == pytest.approx(1.0)


def test_fedmkt_rule() -> None:
    ctx = _ctx(n=300)
    assert ctx.teacher_ce is not None and ctx.student_ce is not None
    gap = ctx.student_ce - ctx.teacher_ce
    alloc = make_policy("fedmkt", CFG, D, 0).allocate(ctx, 25, 1)
    _check(alloc, ctx)
    assert len(alloc.indices) == 25
    assert all(gap[i] > 0 for i in alloc.indices)
    keep = [i for i in range(ctx.n) if ctx.sender_correct[i] and gap[i] > 0]
    best = sorted(keep, key=lambda i: -gap[i])[:25]
    assert alloc.indices == best
    # a large budget keeps only the teacher-better samples, not all eligible ones
    big = make_policy("fedmkt", CFG, D, 0).allocate(ctx, 10_000, 1)
    assert sorted(big.indices) == keep
    # fallback: no CEs -> sender_nll vs receiver_nll
    ctx2 = AllocationContext(
        sample_ids=["a", "b", "c"],
        contexts=np.zeros((3, D)),
        receiver_nll=np.array([1.0, 2.0, 3.0]),
        sender_correct=np.array([True, True, False]),
        receiver_correct=np.array([False, False, False]),
        sender_nll=np.array([2.0, 1.0, 0.0]),
    )
    assert make_policy("fedmkt", CFG, D, 0).allocate(ctx2, 5, 1).indices == [1]
    ctx2.sender_nll = None
    with pytest.raises(ValueError):
        make_policy("fedmkt", CFG, D, 0).allocate(ctx2, 5, 1)


def test_all_public_and_local_only() -> None:
    ctx = _ctx()
    allp = make_policy("all_public", CFG, D, 0).allocate(ctx, 5, 1)
    _check(allp, ctx)
    assert allp.indices == np.flatnonzero(ctx.sender_correct).tolist()  # ignores the budget
    loc = make_policy("local_only", CFG, D, 0).allocate(ctx, 50, 2)
    assert loc.indices == [] and loc.scores == [] and loc.all_scores.shape == (ctx.n,)


def test_random_deterministic_per_round() -> None:
    ctx = _ctx()
    a, b = make_policy("random", CFG, D, 4), make_policy("random", CFG, D, 4)
    assert a.allocate(ctx, 30, 2).indices == b.allocate(ctx, 30, 2).indices
    assert a.allocate(ctx, 30, 2).indices != a.allocate(ctx, 30, 3).indices


@pytest.mark.parametrize("cold", ["kmeans", "random"])
def test_lada_cold_start_then_filter(cold: str) -> None:
    cfg = FilterConfig(epochs=3, cold_start=cold)
    ctx = _ctx()
    pol = make_policy("lada", cfg, D, 1)
    first = pol.allocate(ctx, 30, 1)
    _check(first, ctx)
    assert len(first.indices) == 30 and first.scores == [1.0] * 30
    # no history yet: round 2 still cold-starts
    assert pol.allocate(ctx, 30, 2).scores == [1.0] * 30
    pol.update(ctx, first.indices, [0.6] * 30)
    assert pol.filter.has_history  # type: ignore[attr-defined]
    second = pol.allocate(ctx, 30, 2)
    _check(second, ctx)
    assert len(second.indices) == 30
    elig = np.flatnonzero(ctx.sender_correct)
    cut = min(second.scores)
    assert all(second.all_scores[i] <= cut for i in elig if i not in second.indices)
    # same seed -> identical allocations
    twin = make_policy("lada", cfg, D, 1)
    assert twin.allocate(ctx, 30, 1).indices == first.indices
    twin.update(ctx, first.indices, [0.6] * 30)
    again = twin.allocate(ctx, 30, 2)
    assert again.indices == second.indices
    np.testing.assert_array_equal(again.all_scores, second.all_scores)


def test_lada_batch_reward_broadcast_and_threshold() -> None:
    cfg = FilterConfig(epochs=3, select="threshold", threshold=0.5)
    ctx = _ctx()
    pol = make_policy("lada", cfg, D, 0)
    first = pol.allocate(ctx, 20, 1)
    pol.update(ctx, first.indices, [0.9])  # one shared batch reward
    assert pol.filter.hist_r.shape == (20,)  # type: ignore[attr-defined]
    alloc = pol.allocate(ctx, 20, 2)
    _check(alloc, ctx)
    assert len(alloc.indices) <= 20
    assert all(s > 0.5 for s in alloc.scores)


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_state_dict_roundtrip(name: str, tmp_path: Path) -> None:
    ctx = _ctx()
    pol = _lada_with_history(ctx, seed=2) if name == "lada" else make_policy(name, CFG, D, 2)
    state = pol.state_dict()
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    path = tmp_path / "p.safetensors"
    save_file(state, str(path))
    other = make_policy(name, CFG, D, 2)
    other.load_state_dict(load_file(str(path)))
    a, b = pol.allocate(ctx, 25, 3), other.allocate(ctx, 25, 3)
    assert a.indices == b.indices
    np.testing.assert_array_equal(a.all_scores, b.all_scores)


def test_baseline_update_is_noop() -> None:
    ctx = _ctx()
    for name in POLICIES:
        if name == "lada":
            continue
        pol = make_policy(name, CFG, D, 0)
        before = pol.allocate(ctx, 10, 2)
        pol.update(ctx, before.indices, [1.0] * len(before.indices))
        assert pol.allocate(ctx, 10, 2).indices == before.indices
        assert pol.state_dict() == {}


def test_context_validation() -> None:
    with pytest.raises(ValueError):
        AllocationContext(
            sample_ids=["a", "b"],
            contexts=np.zeros((2, D)),
            receiver_nll=np.zeros(3),
            sender_correct=np.ones(2, bool),
            receiver_correct=np.ones(2, bool),
        )
    with pytest.raises(ValueError):
        AllocationContext(
            sample_ids=["a", "b"],
            contexts=np.zeros((3, D)),
            receiver_nll=np.zeros(2),
            sender_correct=np.ones(2, bool),
            receiver_correct=np.ones(2, bool),
        )


def test_offer_withholds_candidates_from_every_policy() -> None:
    """``offer`` (run.fresh_only) narrows what may be allocated, on top of the sender being right."""
    rng = np.random.default_rng(0)
    n = 40
    correct = rng.random(n) > 0.2
    offer = rng.random(n) > 0.5
    ctx = AllocationContext(sample_ids=[f"s{i}" for i in range(n)], contexts=rng.random((n, 6)),
                            receiver_nll=rng.random(n), sender_correct=correct,
                            receiver_correct=rng.random(n) > 0.5, teacher_ce=rng.random(n),
                            student_ce=rng.random(n), offer=offer)
    assert set(ctx.eligible) == set(np.flatnonzero(correct & offer))
    for name in POLICIES:
        alloc = make_policy(name, FilterConfig(), 6, seed=0).allocate(ctx, 5, 1)
        assert set(alloc.indices) <= set(np.flatnonzero(correct & offer)), name
