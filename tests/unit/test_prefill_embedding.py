"""The LLM's sample embedding comes from generation's prefill (issue 17): the pooled prompt states
that ``teach`` keeps are the ones a separate pass computes, and ``embed`` after ``teach`` runs no
second forward pass over the public set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lada.common.config import LadaConfig
from lada.common.models import resolve_model
from lada.common.scenario import scenario_splits
from lada.common.textlm import generate_paths, load_model, pool_prompts
from lada.server.llm_host import LLMHost

from tests.support.paths import TINY


@pytest.mark.parametrize("which", ["llm", "slm-gpt2"])
def test_prefill_pooling_equals_a_separate_pass(tiny_overrides: dict, one_torch_thread: None, which: str) -> None:
    cfg = LadaConfig.load(TINY, overrides=tiny_overrides, env=False)
    name = cfg.models.llm if which == "llm" else cfg.models.clients["client-1"]  # Llama; GPT-2
    model, tok = load_model(resolve_model(name, cfg.models, seed=cfg.data.seed))
    qs = [s.question for s in scenario_splits(cfg.data).public[:20]]
    pooled: dict[int, torch.Tensor] = {}
    paths = generate_paths(model, tok, qs, 16, batch_size=7, sort=True, pooled=pooled)
    assert paths == generate_paths(model, tok, qs, 16, batch_size=7, sort=True)  # pooling changes no path
    assert sorted(pooled) == list(range(len(qs)))
    pre = torch.stack([pooled[i] for i in range(len(qs))])
    sep = pool_prompts(model, tok, qs, 16, batch_size=5, sort=False)  # other batches, other padding
    assert sep.shape == pre.shape
    np.testing.assert_allclose(pre.numpy(), sep.numpy(), rtol=0, atol=1e-4)
    assert (pre[0] - pre[1]).abs().max() > 1e-3  # rows differ: the comparison above means something


def test_embed_after_teach_reuses_the_prefill(tiny_overrides: dict, one_torch_thread: None) -> None:
    cfg = LadaConfig.load(TINY, overrides=tiny_overrides, env=False)
    host = LLMHost(cfg)
    public = scenario_splits(cfg.data).public[:12]
    calls = 0
    model = host.learner.model.get_base_model()
    orig = model.forward

    def counting(*a: object, **k: object) -> object:
        nonlocal calls
        calls += 1
        return orig(*a, **k)

    host.teach(public, embed=True)
    fresh = host.embed(public)  # from the prefill
    model.forward = counting  # type: ignore[method-assign]
    try:
        again = host.embed(public)
        assert calls == 0  # no second pass over the public set
        host.version += 1  # the LLM learnt: the prefill states are stale, so embed runs its own pass
        stale = host.embed(public)
        assert calls > 0
    finally:
        model.forward = orig  # type: ignore[method-assign]
    np.testing.assert_array_equal(fresh, again)
    np.testing.assert_allclose(stale, fresh, rtol=0, atol=1e-4)  # same LLM weights: the same embedding
