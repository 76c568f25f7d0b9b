"""``lada export``: a learner's final LoRA adapter as a standard ``peft`` folder.

LaDa keeps an adapter in its own state files (``adapter.safetensors`` keyed by the wrapped
model's parameter names, next to the optimizer and kept paths), which only LaDa reads. A user
wants the adapter they can hand to ``PeftModel.from_pretrained(base, folder)``: this module
rebuilds the learner on the base model with the run's LoRA config, loads the saved adapter
(refused if it is not this model's) and writes it with ``save_pretrained``.

Where the state is found: a client's newest saved state under ``client.state_dir`` (default
``<server.data_dir>/clients/<name>``), the LLM's newest round checkpoint under
``<server.data_dir>/checkpoints``; ``--from`` names one folder explicitly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from lada.common.config import LadaConfig

if TYPE_CHECKING:
    from lada.common.learner import Learner

LLM = "llm"
EXPORT_FILE = "lada_export.json"


class ExportError(ValueError):
    """No saved state to export, or a state that is not this model's."""


def _newest(folders: list[Path], what: str) -> Path:
    if not folders:
        raise ExportError(f"no saved {what} found")
    return max(folders, key=lambda d: (d / "meta.json").stat().st_mtime_ns)


def client_state_dir(cfg: LadaConfig, name: str) -> Path:
    """The client's newest finished state folder (any run: the most recently written one)."""
    root = Path(cfg.client.state_dir or Path(cfg.server.data_dir) / "clients" / name)
    found = [d for d in root.glob("run-*/state-*") if d.name[6:].isdigit() and (d / "meta.json").is_file()]
    return _newest(found, f"state of client {name!r} under {root} (did it run with client.save_state true?)")


def llm_state_dir(cfg: LadaConfig) -> Path:
    """The newest LLM checkpoint folder of any run in ``server.data_dir``."""
    root = Path(cfg.server.data_dir) / "checkpoints"
    found = [d for d in root.glob("run-*/round-*") if d.name[6:].isdigit() and (d / "meta.json").is_file()]
    return _newest(found, f"LLM checkpoint under {root}")


def export_adapter(cfg: LadaConfig, who: str, out: str | Path, state: str | Path | None = None) -> Path:
    """Write ``who``'s adapter (a client name, or ``llm``) as a peft ``save_pretrained`` folder ``out``
    (plus its tokenizer and ``lada_export.json`` saying where it came from); returns ``out``."""
    if who != LLM and who not in cfg.models.clients:
        raise ExportError(f"unknown learner {who!r}: 'llm' or one of {sorted(cfg.models.clients)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out} exists and is not empty; choose a new folder")
    src = Path(state) if state else (llm_state_dir(cfg) if who == LLM else client_state_dir(cfg, who))
    prefix = "llm_" if who == LLM else ""
    if not (src / f"{prefix}adapter.safetensors").is_file():
        kind = "server round checkpoint" if prefix else "client state"
        raise ExportError(f"{src} has no {prefix}adapter.safetensors (a {kind} folder is expected)")
    learner, base = load_learner(cfg, who)
    from lada.common.state import StateError, read_state_files

    try:
        learner.restore(read_state_files(src, learner.snapshot(), prefix=prefix))
    except StateError as e:
        raise ExportError(str(e)) from e
    learner.model.save_pretrained(out)
    learner.tok.save_pretrained(out)
    meta = {"learner": who, "model": cfg.models.llm if who == LLM else cfg.models.clients[who], "base": base,
            "state": str(src.resolve())}
    (out / EXPORT_FILE).write_text(json.dumps(meta, indent=2))
    return out


def load_learner(cfg: LadaConfig, who: str) -> tuple[Learner, str]:
    """The learner ``who`` trains (base model + fresh LoRA of the run's config) and the base folder."""
    from lada.common.learner import Learner
    from lada.common.models import resolve_model
    from lada.common.textlm import load_model

    name = cfg.models.llm if who == LLM else cfg.models.clients[who]
    base = resolve_model(name, cfg.models, seed=cfg.data.seed, progress=False)
    model, tok = load_model(base)
    return Learner(model, tok, cfg.train, cfg.distill, cfg.lora, seed=cfg.run.seed), base
