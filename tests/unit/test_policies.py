"""Allocation policies: eligibility, budget, each baseline's rule, LaDa's life cycle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lada.common.config import FilterConfig, LadaConfig
from lada.common.policies import (
    POLICIES,
    Allocation,
    AllocationContext,
    AllocationPolicy,
    make_policy,
)
from lada.server.allocation import ANY, CODE_DIM, LLM, AllocationService, PairView
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
    pol.update(ctx, first.indices, [0.6] * 30, first)
    assert pol.filter.has_history  # type: ignore[attr-defined]
    second = pol.allocate(ctx, 30, 2)
    _check(second, ctx)
    assert len(second.indices) == 30
    elig = np.flatnonzero(ctx.sender_correct)
    cut = min(second.scores)
    assert all(second.all_scores[i] <= cut for i in elig if i not in second.indices)
    # same seed -> identical allocations
    twin = make_policy("lada", cfg, D, 1)
    twin_first = twin.allocate(ctx, 30, 1)
    assert twin_first.indices == first.indices
    twin.allocate(ctx, 30, 2)
    twin.update(ctx, first.indices, [0.6] * 30, twin_first)
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


# ---------------------------------------------------------------- a filter that learns (issue 13)
# A FIXED pool of public samples in C clusters of the (frozen) LLM embedding, run through the real
# AllocationService for several rounds: the contexts, the given counts, the memo of what f1 predicted
# at choice time and the reward's way back to its sample all take part. The synthetic reward has a
# known per-cluster effect and per-sample noise as large as the effect (the real reward's SD is of
# that order); random allocation's share of a cluster is 1/C.
C, PER, POOL_B = 6, 150, 20
GOOD, DECOY = 2, 1


def _pool(seed: int) -> tuple[np.ndarray, PairView, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(C, 16))
    lab = np.repeat(np.arange(C), PER)
    n = len(lab)
    offset = 3.0 * rng.normal(size=16)  # mean-pooled LLM states share a large common part (anisotropy)
    emb = (offset + 0.2 * (centre[lab] + 0.5 * rng.normal(size=(n, 16)))).astype(np.float32)
    steps = rng.integers(1, 5, size=n).astype(np.float32)
    view = PairView(sample_ids=[f"p{i}" for i in range(n)], receiver_nll=rng.normal(3.0, 0.7, n).clip(0.5),
                    sender_len=(20 + 10 * steps + rng.normal(0, 3, n)).astype(np.float32),
                    receiver_len=(25 + rng.normal(0, 5, n)).astype(np.float32),
                    sender_correct=rng.random(n) < 0.9, receiver_correct=rng.random(n) < 0.3, sender_steps=steps)
    return emb, view, lab


def _fixed_pool(overrides: dict, seed: int, rounds: int = 6, method: str = "lada", effect: float = 0.1,
                noise: float = 0.1, resend_cost: float = 0.1, decoy: tuple[float, float] | None = None
                ) -> list[float]:
    """Share of the GOOD cluster in each round's B picks. Reward: 0.5 + effect on GOOD, minus
    ``resend_cost`` per earlier time the sample was given, plus N(0, noise); with ``decoy=(amp, tau)``
    the DECOY cluster also pays ``amp * exp(-m / tau)``, m = DECOY samples given so far (a domain the
    receiver soon saturates: best at first, then worse than GOOD)."""
    cfg = LadaConfig.load(overrides={"run.method": method, "run.seed": seed, "filter.resend": True, **overrides},
                          env=False)
    svc = AllocationService(cfg)
    emb, view, lab = _pool(seed)
    rng = np.random.default_rng(seed + 1000)
    shares, n_decoy = [], 0
    for t in range(1, rounds + 1):
        given = svc.counts.get(("c1", LLM), {})
        count = np.array([given.get(s, 0) for s in view.sample_ids])
        idx = np.array(svc.allocate("c1", LLM, emb, view, POOL_B, t).indices)
        assert len(idx) == POOL_B
        shares.append(float(np.mean(lab[idx] == GOOD)))
        r = 0.5 + effect * (lab[idx] == GOOD) - resend_cost * count[idx] + rng.normal(0, noise, len(idx))
        if decoy is not None:
            r += np.where(lab[idx] == DECOY, decoy[0] * np.exp(-n_decoy / decoy[1]), 0.0)
            n_decoy += int(np.sum(lab[idx] == DECOY))
        svc.update("c1", LLM, [view.sample_ids[i] for i in idx], list(r))
    return shares


@pytest.mark.parametrize("lam,embedding", [(1.0, "cluster"), (0.0, "cluster"), (1.0, "frozen")])
def test_filter_learns_the_rewarding_cluster_of_a_fixed_pool(lam: float, embedding: str) -> None:
    """The filter's share of the rewarding cluster climbs far above random's 1/6 (rounds 4-6, three
    seeds), with re-sending possible and costly; "frozen" feeds the raw embedding (a large common
    offset, small differences between clusters: what the standardisation is for)."""
    over = {"filter.lam": lam, "filter.context_embedding": embedding}
    late = [float(np.mean(_fixed_pool(over, s)[3:])) for s in range(3)]
    rand = [float(np.mean(_fixed_pool(over, s, method="random")[3:])) for s in range(3)]
    print(f"lam={lam} {embedding}: lada late share per seed {np.round(late, 2)}, random {np.round(rand, 2)}")
    assert np.mean(rand) < 0.3
    assert np.mean(late) > 0.55 and min(late) > 0.3


def test_exploration_matters_when_the_first_best_cluster_fades() -> None:
    """A decoy cluster pays most at first and then fades below the good one. f1, refit on the whole
    history, keeps remembering the decoy's early gains; EE-Net's f2 learns that f1 over-predicted
    what it chose there lately and moves the picks. lam=1 is held to a higher bar than lam=0: it
    must end on the good cluster, and clearly more than greedy (lam=0) does."""
    late = {lam: [float(np.mean(_fixed_pool({"filter.lam": lam}, s, rounds=8, noise=0.05,
                                            decoy=(0.3, 10.0))[3:])) for s in range(5)] for lam in (1.0, 0.0)}
    print({k: np.round(v, 2) for k, v in late.items()})
    assert np.mean(late[0.0]) > 0.2  # greedy still beats random (1/6), if late
    assert np.mean(late[1.0]) > 0.55
    assert np.mean(late[1.0]) > np.mean(late[0.0]) + 0.06


def _svc(**filter_knobs: object) -> AllocationService:
    return AllocationService(LadaConfig.load(overrides={"run.method": "lada", **{f"filter.{k}": v for k, v in
                                                                                filter_knobs.items()}}, env=False))


def _small_view(n: int = 30, seed: int = 0) -> tuple[np.ndarray, PairView]:
    emb, view, _ = _pool(seed)
    keep = np.arange(n)
    return emb[keep], PairView([view.sample_ids[i] for i in keep], view.receiver_nll[keep], view.sender_len[keep],
                               view.receiver_len[keep], np.ones(n, bool), view.receiver_correct[keep],
                               sender_steps=view.sender_steps[keep])  # type: ignore[index]


@pytest.mark.parametrize("resend", [False, True])
def test_lada_gives_a_sample_once_unless_resend(resend: bool) -> None:
    """Default: a sample given to a receiver is never given to it again (the pool runs dry);
    ``filter.resend`` brings re-sending back, and the context counts how often it was given."""
    svc = _svc(resend=resend)
    emb, view = _small_view(30)
    got: list[list[str]] = []
    for t in (1, 2, 3):
        a = svc.allocate("c1", LLM, emb, view, 20, t)
        got.append([view.sample_ids[i] for i in a.indices])
        svc.update("c1", LLM, got[-1], [0.5] * len(got[-1]))
    if resend:
        assert [len(g) for g in got] == [20, 20, 20]
        assert set(got[1]) & set(got[0])
        ctx = svc._last[("c1", LLM)][0]
        assert ctx.given_count is not None and ctx.given_count.max() >= 2
    else:
        assert [len(g) for g in got] == [20, 10, 0]
        flat = [s for g in got for s in g]
        assert len(flat) == len(set(flat)) == 30
    assert sum(svc.counts[("c1", LLM)].values()) == sum(len(g) for g in got)
    assert svc.given[("c1", LLM)] == {s for g in got for s in g}


def test_context_embedding_is_frozen_at_the_first_round_and_survives_a_checkpoint(tmp_path: Path) -> None:
    """The LLM's embedding drifts as it trains; the filter's contexts must not: the cluster (and the
    frozen vector) come from the first round's embedding. Given counts and the frozen part round-trip."""
    svc = _svc(context_embedding="both")
    emb, view = _small_view(30)
    a = svc.allocate("c1", LLM, emb, view, 5, 1)
    ctx1 = svc._last[("c1", LLM)][0].contexts.copy()
    drift = emb + np.random.default_rng(1).normal(size=emb.shape).astype(np.float32)
    svc.allocate("c1", LLM, drift, view, 5, 2)
    ctx2 = svc._last[("c1", LLM)][0].contexts
    n_emb = svc.cfg.filter.clusters + emb.shape[1]
    np.testing.assert_array_equal(ctx1[:, :n_emb], ctx2[:, :n_emb])
    onehot = ctx1[:, : svc.cfg.filter.clusters]
    assert np.all(onehot.sum(1) == 1) and len(np.unique(onehot.argmax(1))) > 1
    assert np.all(ctx2[a.indices, -2] == 1) and np.all(ctx2[a.indices, -1] == 1)  # given before, once
    state = svc.state_dict()
    save_file(state["tensors"], str(tmp_path / "f.safetensors"))
    back = _svc(context_embedding="both")
    back.load_state_dict({"tensors": load_file(str(tmp_path / "f.safetensors")), "dims": state["dims"],
                          "given": json.loads(json.dumps(state["given"]))})
    assert back.given == svc.given and back.counts == svc.counts
    back.allocate("c1", LLM, drift + 5.0, view, 5, 3)
    svc.allocate("c1", LLM, drift + 5.0, view, 5, 3)
    np.testing.assert_array_equal(back._last[("c1", LLM)][0].contexts, svc._last[("c1", LLM)][0].contexts)


def test_a_round_embeds_only_until_the_frozen_embedding_holds_every_sample() -> None:
    """From the second round on the LLM's current embedding is unused (contexts come from the frozen
    one), so the round loop skips it: without it the contexts are the same; a new sample needs it."""
    svc = _svc(context_embedding="both")
    emb, view = _small_view(30)
    assert svc.needs_embedding(view.sample_ids)
    svc.allocate("c1", LLM, emb, view, 5, 1)
    assert not svc.needs_embedding(view.sample_ids)
    assert svc.needs_embedding([*view.sample_ids, "a-new-sample"])
    twin = _svc(context_embedding="both")
    twin.allocate("c1", LLM, emb, view, 5, 1)
    svc.allocate("c1", LLM, None, view, 5, 2)
    twin.allocate("c1", LLM, emb + 1.0, view, 5, 2)
    np.testing.assert_array_equal(svc._last[("c1", LLM)][0].contexts, twin._last[("c1", LLM)][0].contexts)
    assert not _svc(context_embedding="none").needs_embedding(view.sample_ids)


def test_shared_filter_learns_from_every_client() -> None:
    """``filter.share``: one filter per direction, fed by every client's rewards (3 x B a round, not B),
    told apart by each client's code in the context; the checkpoint keys it as ``*<-llm``."""
    svc = _svc(share=True)
    emb, view = _small_view(60)
    for name in ("c1", "c2", "c3"):
        a = svc.allocate(name, LLM, emb, view, 10, 1)
        svc.update(name, LLM, [view.sample_ids[i] for i in a.indices], [0.5] * 10)
    assert list(svc.policies) == [(ANY, LLM)]
    assert len(svc.policies[(ANY, LLM)].filter.hist_r) == 30  # type: ignore[attr-defined]
    codes = {n: svc._last[(n, LLM)][0].contexts[0, -CODE_DIM:] for n in ("c1", "c2", "c3")}
    assert not np.allclose(codes["c1"], codes["c2"]) and not np.allclose(codes["c2"], codes["c3"])
    assert all(k.startswith(f"{ANY}<-{LLM}/") for k in svc.state_dict()["tensors"] if "<-" in k)
    up = svc.allocate(LLM, "c1", emb, view, 5, 1)
    assert (LLM, ANY) in svc.policies and len(up.indices) == 5


@pytest.mark.parametrize("method", ["lada", "random", "highest_nll", "lowest_nll", "all_public"])
def test_slm_to_llm_only_samples_the_llm_gets_wrong(method: str) -> None:
    """SLM -> LLM: an SLM y+ on a sample whose LLM path is already a y+ is never eligible (issue 13,
    DESIGN §3.5), for every policy and round, whatever the budget; the ones the LLM gets wrong are."""
    from lada.common.rounds import ProbeResult, ReasoningPath
    from lada.server.allocation import Teaching, up_view

    n, rng = 40, np.random.default_rng(5)
    llm_right, slm_right = rng.random(n) < 0.5, rng.random(n) < 0.7
    cands = [ReasoningPath(f"p{i}", f"q{i}", "1 + 1 = 2 . #### 2", "2", bool(c)) for i, c in enumerate(llm_right)]
    teach = Teaching(cands, lengths=np.full(n, 10.0, dtype=np.float32), embedding=rng.normal(size=(n, 4)))
    svc = AllocationService(LadaConfig.load(overrides={"run.method": method, "filter.resend": True}, env=False))
    got: set[int] = set()
    for t in (1, 2, 3):
        view = up_view(teach, ProbeResult([], [], 0.0), ["1 + 1 = 2 . #### 2"] * n, slm_right,
                       rng.gamma(2.0, 1.0, size=n), np.full(n, 10.0))
        a = svc.allocate(LLM, "c1", teach.embedding, view, 30, t)
        got |= set(a.indices)
        svc.update(LLM, "c1", [view.sample_ids[i] for i in a.indices], rng.random(len(a.indices)).tolist())
    assert got and not any(llm_right[i] for i in got)
    assert all(slm_right[i] for i in got)
    if method == "all_public":
        assert got == set(np.flatnonzero(slm_right & ~llm_right))
