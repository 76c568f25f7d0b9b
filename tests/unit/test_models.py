"""Embedded models: tokenizers that round-trip, hub-style loading, the build cache."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from lada.common import models
from lada.common.config import ModelsConfig
from lada.common.data import corpus_text, pretrain_slice
from lada.common.textlm import generate_paths, load_model, path_nll
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2LMHeadModel, LlamaForCausalLM

TINY = {"build_steps_llm": 3, "build_steps_slm": 2, "n_pretrain": 64}


def _cfg(cache: Path, **kw) -> ModelsConfig:
    return ModelsConfig(cache_dir=str(cache), **{**TINY, **kw})


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelsConfig, dict[str, str]]:
    cfg = _cfg(tmp_path_factory.mktemp("models"))
    return cfg, models.build_embedded_models(cfg, seed=0, progress=False)


def test_builds_every_registered_model(built) -> None:
    cfg, paths = built
    assert set(paths) == set(models.EMBEDDED) == {"llm", "slm-llama", "slm-gpt2"}
    for name, path in paths.items():
        assert Path(path) == models.model_dir(name, cfg, 0)
        assert Path(path).parent == Path(cfg.cache_dir)
        assert (Path(path) / models.BUILD_FILE).is_file()
    assert not [p for p in Path(cfg.cache_dir).iterdir() if ".tmp-" in p.name], "no temp folders left"


def test_loads_like_a_hub_model(built) -> None:
    _, paths = built
    loaded = {name: AutoModelForCausalLM.from_pretrained(path) for name, path in paths.items()}
    assert isinstance(loaded["llm"], LlamaForCausalLM)
    assert isinstance(loaded["slm-llama"], LlamaForCausalLM)
    assert isinstance(loaded["slm-gpt2"], GPT2LMHeadModel)
    size = {n: models.n_params(m) for n, m in loaded.items()}
    assert size["llm"] > 2 * max(size["slm-llama"], size["slm-gpt2"]), size
    q = [s.question for s in pretrain_slice(3, seed=5)]
    for path in paths.values():
        model, tok = load_model(path)
        assert tok.pad_token_id is not None and tok.eos_token_id is not None and tok.bos_token_id is not None
        out = generate_paths(model, tok, q, max_new_tokens=4, batch_size=2)
        assert len(out) == 3 and all(isinstance(p, str) for p in out)
        assert path_nll(model, tok, q, ["1 + 2 = 3 . #### 3"] * 3, max_len=128).shape == (3,)


def test_a_question_longer_than_the_context_still_gets_a_path(built) -> None:
    """GPT-2 has learned positions: a long question from another data set (GSM8K through a
    character-level fallback) must not run past them."""
    _, paths = built
    model, tok = load_model(paths["slm-gpt2"])
    long_q = "Natalia sold clips to 48 of her friends in April, and then she sold half as many. " * 8
    assert len(tok(long_q)["input_ids"]) > model.config.n_positions
    out = generate_paths(model, tok, [long_q, "1 + 2 ?"], max_new_tokens=16, batch_size=2)
    assert len(out) == 2 and all(isinstance(p, str) for p in out)


def test_tokenizers_round_trip_corpus_text(built) -> None:
    _, paths = built
    texts = list(corpus_text(pretrain_slice(300, seed=11))) + ["#### 17", "12 + 9 = 21 . #### 1024"]
    toks = {name: AutoTokenizer.from_pretrained(path) for name, path in paths.items()}
    for name, tok in toks.items():
        for text in texts:
            ids = tok(text)["input_ids"]
            assert tok.decode(ids) == text, (name, text)
            assert tok.unk_token_id not in ids, (name, text)
        # numbers are split into single digits
        pieces = [p.replace("▁", "").replace(models.CONT, "") for p in tok.tokenize("#### 1024")]
        assert [p for p in pieces if p.isdigit()] == ["1", "0", "2", "4"], (name, pieces)
    # the GPT-2-style SLM has a different tokenizer from the Llama family's
    assert toks["llm"].get_vocab() == toks["slm-llama"].get_vocab()
    assert toks["llm"].get_vocab() != toks["slm-gpt2"].get_vocab()
    text = texts[0]
    assert toks["llm"].tokenize(text) != toks["slm-gpt2"].tokenize(text)


def test_cache_is_reused(built, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, paths = built
    stamp = {n: (Path(p) / models.BUILD_FILE).stat().st_mtime_ns for n, p in paths.items()}

    def no_build(*a, **k):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(models, "build_model", no_build)
    for name, path in paths.items():
        assert models.resolve_model(f"embedded:{name}", cfg, seed=0) == path
        assert (Path(path) / models.BUILD_FILE).stat().st_mtime_ns == stamp[name]
    assert models.build_embedded_models(cfg, seed=0, names=["embedded:llm"]) == {"llm": paths["llm"]}


def test_build_params_change_the_folder(built) -> None:
    cfg, _ = built
    base = models.model_dir("embedded:slm-gpt2", cfg, 0)
    assert models.model_dir("slm-gpt2", cfg, 0) == base
    assert models.model_dir("embedded:slm-gpt2", cfg, 1) != base
    assert models.model_dir("embedded:slm-gpt2", cfg.model_copy(update={"build_steps_slm": 9}), 0) != base
    assert models.model_dir("embedded:slm-gpt2", cfg.model_copy(update={"build_steps_llm": 9}), 0) == base
    # leaving a domain out of the pre-training slice changes the LLM, not the SLMs
    narrow = cfg.model_copy(update={"llm_pretrain_domains": ["arith", "shop"]})
    assert models.model_dir("embedded:slm-gpt2", narrow, 0) == base
    assert models.model_dir("embedded:llm", narrow, 0) != models.model_dir("embedded:llm", cfg, 0)


def test_other_names_pass_through(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path / "cache")
    for name in ["HuggingFaceTB/SmolLM2-135M-Instruct", "gpt2", str(tmp_path / "some-model"), "./m"]:
        assert models.resolve_model(name, cfg) == name
    assert not (tmp_path / "cache").exists(), "nothing is built for a non-embedded name"
    with pytest.raises(KeyError):
        models.resolve_model("embedded:no-such-model", cfg)


def test_concurrent_resolves_build_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tmp_path, build_steps_slm=1, n_pretrain=16)
    calls: list[int] = []
    real = models.build_model

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(models, "build_model", counting)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(models.resolve_model("embedded:slm-llama", cfg, progress=False)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 3 and len(set(results)) == 1
    assert len(calls) == 1


def test_failed_build_leaves_no_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(tmp_path)

    def half_build(spec, cfg, seed, out, progress=False):  # noqa: ANN001, ANN202 - build_model's signature
        (Path(out) / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "build_model", half_build)
    with pytest.raises(KeyboardInterrupt):
        models.resolve_model("embedded:slm-gpt2", cfg, progress=False)
    target = models.model_dir("embedded:slm-gpt2", cfg, 0)
    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
    monkeypatch.undo()
    # a leftover folder without a build record is not trusted: it is rebuilt;
    # the temp folder of a build killed outright (SIGKILL) is swept up
    target.mkdir()
    (target / "junk").write_text("x")
    killed = tmp_path / f".{target.name}.tmp-killed"
    killed.mkdir()
    assert models.resolve_model("embedded:slm-gpt2", cfg, progress=False) == str(target)
    assert (target / models.BUILD_FILE).is_file() and not (target / "junk").exists()
    assert not killed.exists()


def test_build_is_seeded_and_leaves_global_rng_alone(tmp_path: Path) -> None:
    spec = models.EMBEDDED["slm-llama"]
    cfg = _cfg(tmp_path, build_steps_slm=2, n_pretrain=16)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    models.build_model(spec, cfg, 0, tmp_path / "a")
    assert torch.equal(torch.random.get_rng_state(), before)
    models.build_model(spec, cfg, 0, tmp_path / "b")
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
