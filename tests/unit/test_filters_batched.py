"""Batched retraining of many EE-Net filters at once (``retrain_all``, issue 17) against each
filter's own ``_retrain``: the same f1/f2 parameters, the same generator state."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from lada.common import filters as F
from lada.common.config import FilterConfig, LadaConfig
from lada.common.filters import NeuralBanditFilter, retrain_all
from lada.common.policies import AllocationContext, LadaPolicy, retrain_stale
from lada.server.allocation import LLM, AllocationService, PairView

ATOL = 1e-5
# history lengths: one row, a partial batch, exactly one batch, several batches with a partial
# last one (the filters then take different numbers of Adam steps), and a filter fed twice
SIZES = [(16,), (1,), (5,), (32,), (40,), (33, 30), (70,)]


def _filters(sizes: list[tuple[int, ...]], cfg: FilterConfig, d: int = 9, seed: int = 0) -> list[NeuralBanditFilter]:
    rng = np.random.default_rng(seed)
    out = []
    for i, rounds in enumerate(sizes):
        f = NeuralBanditFilter(d, cfg, seed=100 + i)
        for n in rounds:
            pool = rng.normal(size=(max(n, 8) + 4, d)).astype(np.float32) * rng.uniform(0.5, 3.0, size=d)
            pick = rng.choice(len(pool), n, replace=False)
            f.update(pool[pick], rng.random(n), pool=pool)
            if n != rounds[-1]:
                f._retrain()  # an earlier round's training: the next retrain warm-starts from it
        out.append(f)
    return out


def _params(f: NeuralBanditFilter) -> list[torch.Tensor]:
    return [p.detach().clone() for p in (*f.f1.parameters(), *f.f2.parameters())]


def _max_diff(a: list[NeuralBanditFilter], b: list[NeuralBanditFilter]) -> float:
    return max(float((x - y).abs().max()) for fa, fb in zip(a, b, strict=True)
               for x, y in zip(_params(fa), _params(fb), strict=True))


@pytest.mark.parametrize("inp", ["grad", "hidden"])
@pytest.mark.parametrize("group", [16, 3])  # 16: one stack; 3: cut into chunks
def test_batched_retrain_equals_each_alone(inp: str, group: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LADA_FILTER_BATCHED", "1")
    monkeypatch.setattr(F, "_GROUP", group)
    cfg = FilterConfig(exploration_input=inp, hidden=16, epochs=4)
    alone = _filters(SIZES, cfg)
    batched = copy.deepcopy(alone)
    before = _params(alone[0])
    for f in alone:
        f._retrain()
    assert retrain_all(batched) == len(batched)
    assert not any(f.stale for f in batched)
    assert _max_diff(alone, batched) < ATOL
    # and the training moved the parameters by much more than the tolerance
    assert max(float((x - y).abs().max()) for x, y in zip(before, _params(alone[0]), strict=True)) > 100 * ATOL
    for fa, fb in zip(alone, batched, strict=True):  # the same draws from each filter's own generator
        assert torch.equal(fa._gen.get_state(), fb._gen.get_state())
    # after the retrain, both score the same
    x = np.random.default_rng(1).normal(size=(20, 9)).astype(np.float32)
    for fa, fb in zip(alone, batched, strict=True):
        np.testing.assert_allclose(fa.score(x), fb.score(x), rtol=0, atol=1e-4)


def test_mixed_shapes_and_duplicates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Filters of different widths train in separate stacks; a filter listed twice (a shared filter)
    trains once; fresh ones are left alone."""
    monkeypatch.setenv("LADA_FILTER_BATCHED", "1")
    small = _filters(SIZES[:4], FilterConfig(hidden=8, epochs=3))
    wide = _filters(SIZES[3:], FilterConfig(hidden=12, epochs=2, lr=3e-3), d=5, seed=1)
    fresh = NeuralBanditFilter(5, FilterConfig(), seed=9)
    alone = copy.deepcopy(small + wide)
    for f in alone:
        f._retrain()
    batched = small + wide
    assert retrain_all([*batched, batched[0], fresh, batched[-1]]) == len(batched)
    assert _max_diff(alone, batched) < ATOL
    assert retrain_all(batched) == 0  # nothing stale any more


def test_batching_off_is_each_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LADA_FILTER_BATCHED", "0")
    cfg = FilterConfig(hidden=8, epochs=2)
    a = _filters(SIZES, cfg)
    b = copy.deepcopy(a)
    for f in a:
        f._retrain()
    retrain_all(b)
    assert _max_diff(a, b) == 0.0


def _view(rng: np.random.Generator, n: int) -> PairView:
    return PairView(sample_ids=[f"s{i}" for i in range(n)], receiver_nll=rng.uniform(0.5, 4.0, n),
                    sender_len=rng.integers(5, 60, n).astype(np.float32),
                    receiver_len=rng.integers(5, 60, n).astype(np.float32),
                    sender_correct=rng.random(n) < 0.8, receiver_correct=rng.random(n) < 0.3)


def _two_rounds(batched: str, monkeypatch: pytest.MonkeyPatch) -> tuple[AllocationService, list[list[int]]]:
    """Round 1 (cold start), rewards, round 2 with the filters retrained, for 4 clients both ways."""
    monkeypatch.setenv("LADA_FILTER_BATCHED", batched)
    cfg = LadaConfig()
    cfg.filter.hidden, cfg.filter.epochs, cfg.filter.context_embedding = 16, 3, "none"
    svc = AllocationService(cfg, "lada")
    rng = np.random.default_rng(0)
    names = [f"c{i}" for i in range(4)]
    picks = []
    for t in (1, 2):
        pairs = [(n, LLM) for n in names] + [(LLM, n) for n in names]
        allocs = {p: svc.allocate(*p, None, _view(rng, 40), 6 + t, t) for p in pairs}
        picks += [a.indices for a in allocs.values()]
        if t == 2:
            break
        for p, a in allocs.items():
            svc.update(*p, [f"s{i}" for i in a.indices], rng.random(len(a.indices)))
    return svc, picks


def test_service_retrains_every_pair_before_the_rounds_first_allocation(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = F.retrain_all

    def spy(filters: list[NeuralBanditFilter]) -> int:
        calls.append(sum(f.stale for f in filters))
        return real(filters)

    monkeypatch.setattr("lada.common.policies.retrain_all", spy)
    on, picks_on = _two_rounds("1", monkeypatch)
    assert calls == [8]  # once, in round 2, with all 8 pairs' filters stale
    off, picks_off = _two_rounds("0", monkeypatch)
    assert picks_on == picks_off  # the same allocations in both rounds
    for key, pol in on.policies.items():
        assert isinstance(pol, LadaPolicy)
        for x, y in zip(_params(pol.filter), _params(off.policies[key].filter), strict=True):
            assert float((x - y).abs().max()) < ATOL


def test_retrain_stale_skips_baselines() -> None:
    from lada.common.policies import RandomPolicy

    cfg = FilterConfig(hidden=8, epochs=2)
    lada = LadaPolicy(cfg, 4, seed=3)
    ctx = AllocationContext([f"s{i}" for i in range(10)], np.random.default_rng(0).normal(size=(10, 4)),
                            np.ones(10), np.ones(10, dtype=bool), np.zeros(10, dtype=bool))
    a = lada.allocate(ctx, 4, 1)
    lada.update(ctx, a.indices, [0.7] * len(a.indices), a)
    assert retrain_stale([RandomPolicy(cfg, 4, seed=1), lada]) == 1 and not lada.filter.stale
