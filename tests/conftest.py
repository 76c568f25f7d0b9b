from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.support.paths import shared_model_cache

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Like the server (run.threads=1): on a shared 2-core box more threads are 10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def model_cache() -> Path:
    return shared_model_cache()


@pytest.fixture(scope="session")
def tiny_overrides(model_cache: Path) -> dict:
    return {"models.cache_dir": str(model_cache)}
