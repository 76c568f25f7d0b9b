"""A client's state folder is bound to the client's name and model (issue 15 item 6).

The attack: ``lada client --name client-1 --client.state_dir <client-3's folder>``. Both run the same
model, so the adapter shapes match and client-1 would go on with client-3's adapter, optimizer and
kept paths. It must be refused before anything loads or trains.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from lada.client.app import ClientApp
from lada.common.config import LadaConfig
from lada.common.rounds import TaskInfo
from lada.common.state import StateError

from tests.support.clients import learn_a_round
from tests.support.paths import TINY, cli, free_port


def _client3_folder(cfg: LadaConfig, folder: Path) -> ClientApp:
    """client-3 learns one round of run-a and saves its state in ``folder``."""
    app = ClientApp(cfg, "client-3", state_dir=folder)
    learn_a_round(app, "run-a")
    return app


def test_another_clients_state_folder_is_refused(tiny_overrides: dict, tmp_path: Path) -> None:
    cfg = LadaConfig.load(TINY, overrides=tiny_overrides, env=False)
    folder = tmp_path / "client-3"
    _client3_folder(cfg, folder)
    assert cfg.models.clients["client-1"] == cfg.models.clients["client-3"]  # same model: shapes match
    with pytest.raises(StateError, match="belongs to client 'client-3'"):
        ClientApp(cfg, "client-1", state_dir=folder)
    # a folder written before it was claimed (no owner.json) is recognised by its saved states
    (folder / "owner.json").unlink()
    with pytest.raises(StateError, match="belongs to client 'client-3'"):
        ClientApp(cfg, "client-1", state_dir=folder)
    # the same name with another model is refused too
    other = LadaConfig.load(TINY, overrides={**tiny_overrides, "models.clients": {
        **cfg.models.clients, "client-3": "embedded:slm-llama"}}, env=False)
    with pytest.raises(StateError, match="model 'embedded:slm-gpt2'"):
        ClientApp(other, "client-3", state_dir=folder)
    # and its owner still resumes it
    again = ClientApp(cfg, "client-3", state_dir=folder)
    again.probe(TaskInfo(round=2, run_key="run-a"), [])
    assert again.resumed_from is not None


def _lada_client(name: str, tiny_overrides: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        cli("client", "--config", str(TINY), "--name", name, "--models.cache_dir", tiny_overrides["models.cache_dir"],
            "--server.address", f"127.0.0.1:{free_port()}", "--client.give_up_after", "60", *extra),
        capture_output=True, text=True, timeout=120)


def test_lada_client_refuses_another_clients_folder(tiny_overrides: dict, tmp_path: Path) -> None:
    """The real process exits non-zero with the reason, before it dials (no server listens)."""
    cfg = LadaConfig.load(TINY, overrides=tiny_overrides, env=False)
    folder = tmp_path / "client-3"
    _client3_folder(cfg, folder)
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    t0 = time.time()
    r = _lada_client("client-1", tiny_overrides, "--client.state_dir", str(folder))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "belongs to client 'client-3'" in r.stderr
    assert "registered" not in r.stderr and "unreachable" not in r.stderr
    assert time.time() - t0 < 60
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing written


def test_lada_client_with_an_unknown_name_is_a_usage_error(tiny_overrides: dict, tmp_path: Path) -> None:
    r = _lada_client("nope", tiny_overrides, "--client.state_dir", str(tmp_path / "s"))
    assert r.returncode == 2, r.stderr[-2000:]
    assert "unknown client name 'nope'" in r.stderr and "'client-1', 'client-2', 'client-3'" in r.stderr
    assert "Repo id" not in r.stderr and not (tmp_path / "s").exists()
