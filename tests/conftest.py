from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "common" / "configs" / "tiny.yaml"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_CACHE: list[Path] = []


def shared_model_cache() -> Path:
    """One tiny embedded-model cache for the whole session (built once, reused):
    $LADA_TEST_MODEL_CACHE if set, else a fresh temporary folder."""
    if not _CACHE:
        env = os.environ.get("LADA_TEST_MODEL_CACHE")
        _CACHE.append(Path(env) if env else Path(tempfile.mkdtemp(prefix="lada-test-models-")))
    return _CACHE[0]


@pytest.fixture(scope="session")
def model_cache() -> Path:
    return shared_model_cache()


@pytest.fixture(scope="session")
def tiny_overrides(model_cache: Path) -> dict:
    return {"models.cache_dir": str(model_cache)}
