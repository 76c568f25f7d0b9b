"""No-grad work on merged LoRA adapters gives the unmerged model's outputs (issue 17).

``Learner.inference`` merges the adapter into the base weights and swaps the LoRA wrappers out;
these tests pin that the merged model writes the same greedy paths and scores the same NLLs as the
unmerged one, that the block leaves every weight bit for bit as it was, and that batching by
length returns results in input order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lada.common.config import LadaConfig
from lada.common.learner import Learner
from lada.common.models import resolve_model
from lada.common.scenario import scenario_splits
from lada.common.textlm import generate_paths, load_model, path_nll

from tests.support.paths import TINY


def _learner(tiny_overrides: dict, which: str) -> tuple[Learner, list[str]]:
    cfg = LadaConfig.load(TINY, overrides=tiny_overrides, env=False)
    name = cfg.models.llm if which == "llm" else cfg.models.clients["client-1"]  # Llama; GPT-2 (Conv1D)
    model, tok = load_model(resolve_model(name, cfg.models, seed=cfg.data.seed))
    learner = Learner(model, tok, cfg.train, cfg.distill, cfg.lora, seed=0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a trained-looking adapter: lora_B starts at zero, where merging is a no-op
        for n, p in learner.model.named_parameters():
            if "lora_B" in n:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return learner, [s.question for s in scenario_splits(cfg.data).public[:24]]


@pytest.mark.parametrize("which", ["llm", "slm-gpt2"])
def test_merged_inference_matches_the_unmerged_adapter(tiny_overrides: dict, one_torch_thread: None,
                                                       which: str) -> None:
    learner, qs = _learner(tiny_overrides, which)
    before = {k: v.clone() for k, v in learner.model.state_dict().items()}
    trainable = sorted(learner.adapter_state())

    learner.merge_inference = False
    paths = learner.paths(qs)
    nll = learner.nll(qs, paths)
    with learner.model.disable_adapter():
        base_nll = learner.nll(qs, paths)
    assert np.abs(nll - base_nll).max() > 1e-3  # the adapter changes the outputs, so the check below means something

    learner.merge_inference = True
    assert learner.paths(qs) == paths
    np.testing.assert_allclose(learner.nll(qs, paths), nll, rtol=0, atol=1e-5)
    with learner.inference() as model:  # the plain model: no LoRA wrapper left in the forward pass
        assert not any("lora" in type(m).__name__.lower() for m in model.modules())
        with learner.inference() as inner:  # nested blocks share the outer merge
            assert inner is model

    after = learner.model.state_dict()
    assert sorted(after) == sorted(before)
    assert all(torch.equal(before[k], after[k]) for k in before)  # restored, not un-merged with rounding
    assert sorted(learner.adapter_state()) == trainable  # the LoRA parameters are back in the model


def test_batching_by_length_returns_results_in_input_order(tiny_overrides: dict, one_torch_thread: None) -> None:
    learner, qs = _learner(tiny_overrides, "llm")
    qs = qs + [q + " Think about it with care, step by step." * 3 for q in qs[:6]]  # lengths that sort apart
    with learner.inference() as model:
        plain = generate_paths(model, learner.tok, qs, 16, batch_size=5, sort=False)
        by_length = generate_paths(model, learner.tok, qs, 16, batch_size=5, sort=True)
        nll = path_nll(model, learner.tok, qs, plain, 128, batch_size=5, sort=False)
        nll_sorted = path_nll(model, learner.tok, qs, plain, 128, batch_size=5, sort=True)
    assert by_length == plain
    np.testing.assert_allclose(nll_sorted, nll, rtol=0, atol=1e-5)
