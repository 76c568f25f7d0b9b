from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.paths import shared_model_cache

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def model_cache() -> Path:
    return shared_model_cache()


@pytest.fixture(scope="session")
def tiny_overrides(model_cache: Path) -> dict:
    return {"models.cache_dir": str(model_cache)}
