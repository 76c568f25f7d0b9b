"""``lada export``: the adapter a user loads with plain ``peft`` gives LaDa's own logits.

A client learns a round with a saved state folder (its adapter moved well away from the base);
the exported folder is loaded with ``PeftModel.from_pretrained`` on a freshly loaded base model
and must give the same logits as LaDa's learner; the LLM's round checkpoint likewise.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lada.client.app import ClientApp
from lada.common.config import LadaConfig
from lada.common.state import write_state_files
from lada.common.textlm import encode_pairs, load_model
from peft import PeftModel

from lada.cli import main
from lada.export import ExportError, export_adapter, load_learner
from tests.support.clients import learn_a_round
from tests.support.paths import TINY

QUESTIONS = ["What is 3 + 4 - 2 ?", "Ann buys 2 pens at 3 dollars each . How many dollars does Ann pay ?"]


def _logits(model: torch.nn.Module, tok, paths: list[str]) -> torch.Tensor:
    b = encode_pairs(tok, QUESTIONS, paths, 64)
    with torch.no_grad():
        return model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits


def _peft_logits(out: Path, base: str) -> torch.Tensor:
    model, tok = load_model(base)
    loaded = PeftModel.from_pretrained(model, str(out))
    return _logits(loaded, tok, ["3 + 4 = 7 . #### 7", "2 * 3 = 6 . #### 6"])


@pytest.fixture
def cfg(tiny_overrides: dict, tmp_path: Path) -> LadaConfig:
    return LadaConfig.load(TINY, overrides={**tiny_overrides, "server.data_dir": str(tmp_path / "data")}, env=False)


def test_client_adapter_loads_in_peft_with_ladas_logits(cfg: LadaConfig, tmp_path: Path, one_torch_thread) -> None:
    name = "client-1"  # embedded:slm-gpt2 (Conv1D layers: peft must get fan_in_fan_out right)
    app = ClientApp(cfg, name, state_dir=Path(cfg.server.data_dir) / "clients" / name)
    learn_a_round(app)  # every adapter weight moved by +1: far from the base model
    ours = _logits(app.learner.model, app.learner.tok, ["3 + 4 = 7 . #### 7", "2 * 3 = 6 . #### 6"])
    # through the command line, as a user runs it (newest saved state of client-1)
    with pytest.raises(SystemExit) as done:
        main(["export", name, "--config", str(TINY), "--out", str(tmp_path / "out"),
              "--server.data_dir", cfg.server.data_dir, "--models.cache_dir", cfg.models.cache_dir])
    assert done.value.code == 0
    assert (tmp_path / "out" / "adapter_config.json").is_file()
    base, _ = load_model(load_learner(cfg, name)[1])
    base_logits = _logits(base, app.learner.tok, ["3 + 4 = 7 . #### 7", "2 * 3 = 6 . #### 6"])
    theirs = _peft_logits(tmp_path / "out", load_learner(cfg, name)[1])
    assert not torch.allclose(ours, base_logits, atol=1e-3)  # the adapter does something
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_llm_checkpoint_adapter_exports(cfg: LadaConfig, tmp_path: Path, one_torch_thread) -> None:
    learner, base = load_learner(cfg, "llm")
    with torch.no_grad():
        for p in learner.model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    ours = _logits(learner.model, learner.tok, ["3 + 4 = 7 . #### 7", "2 * 3 = 6 . #### 6"])
    rnd = Path(cfg.server.data_dir) / "checkpoints" / "run-1" / "round-2"
    rnd.mkdir(parents=True)
    write_state_files(learner.snapshot(), rnd, prefix="llm_")  # what server/checkpoint.py writes
    (rnd / "meta.json").write_text("{}")
    out = export_adapter(cfg, "llm", tmp_path / "llm-out")
    torch.testing.assert_close(_peft_logits(out, base), ours, atol=1e-5, rtol=1e-5)


def test_export_refuses_bad_input(cfg: LadaConfig, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="unknown learner 'nobody'"):
        export_adapter(cfg, "nobody", tmp_path / "x")
    with pytest.raises(ExportError, match="no saved state of client 'client-2'"):
        export_adapter(cfg, "client-2", tmp_path / "x")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        export_adapter(cfg, "client-2", tmp_path / "full")
    # another model's adapter (the LLM's shapes) is refused, not half-loaded
    learner, _ = load_learner(cfg, "llm")
    other = tmp_path / "other"
    other.mkdir()
    write_state_files(learner.snapshot(), other)
    with pytest.raises(ExportError, match="not this model's LoRA adapter"):
        export_adapter(cfg, "client-2", tmp_path / "y", state=other)
