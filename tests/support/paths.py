"""Paths and small helpers every test layer shares (imported by conftest and the tests)."""

from __future__ import annotations

import os
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "common" / "configs" / "tiny.yaml"
ARTIFACTS = ROOT / "tests" / "artifacts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str) -> list[str]:
    """The command line of ``lada ARGS`` run by this interpreter."""
    return [sys.executable, "-m", "lada.cli", *args]


_CACHE: list[Path] = []


def shared_model_cache() -> Path:
    """One tiny embedded-model cache for the whole session (built once, reused):
    $LADA_TEST_MODEL_CACHE if set, else a fresh temporary folder."""
    if not _CACHE:
        env = os.environ.get("LADA_TEST_MODEL_CACHE")
        _CACHE.append(Path(env) if env else Path(tempfile.mkdtemp(prefix="lada-test-models-")))
    return _CACHE[0]
