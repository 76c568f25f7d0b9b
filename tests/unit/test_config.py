"""One config: every setting is a typed, documented knob with one default, from YAML, env or flag."""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from pathlib import Path
from typing import get_args

import pytest
from lada.common.config import (
    ClientConfig,
    DashboardConfig,
    LadaConfig,
    RunConfig,
    TransportConfig,
    config_from_args,
    knobs,
)
from lada.common.policies import POLICIES
from lada.common.policy_names import POLICY_NAMES
from lada.common.redact import REDACTED, redact

from lada import cli


def test_method_literal_is_the_policy_registry() -> None:
    assert set(get_args(RunConfig.model_fields["method"].annotation)) == set(POLICY_NAMES) == set(POLICIES)


def test_every_knob_is_documented() -> None:
    missing = [dotted for dotted, help_, _ in knobs() if not help_]
    assert not missing, f"knobs without a description: {missing}"


def test_bad_method_is_a_usage_error_before_anything_loads() -> None:
    """`lada server --run.method lad` stops at argument parsing, naming the valid methods, torch never imported."""
    probe = ("import sys\nfrom lada import cli\ntry:\n    cli.main(sys.argv[1:])\nfinally:\n"
             "    print('torch imported' if 'torch' in sys.modules else 'torch not imported', file=sys.stderr)")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", probe, "server", "--run.method", "lad"], capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert time.perf_counter() - t0 < 30
    assert "lada server: error:" in res.stderr and "run.method='lad'" in res.stderr
    assert all(f"'{name}'" in res.stderr for name in POLICIES), res.stderr
    assert "Traceback" not in res.stderr and "torch not imported" in res.stderr
    via_cli = subprocess.run([sys.executable, "-m", "lada.cli", "server", "--run.method", "lad"],
                             capture_output=True, text=True, timeout=60)
    assert via_cli.returncode == 2 and "'local_only'" in via_cli.stderr


def test_new_sections_from_yaml_env_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    yml = tmp_path / "c.yaml"
    yml.write_text("dashboard: {port: 9001}\ntransport: {linger: 0.5}\n")
    monkeypatch.setenv("LADA_TRANSPORT__HEARTBEAT", "1.5")
    monkeypatch.setenv("LADA_CLIENT__SAVE_STATE", "false")
    args = cli.build_parser().parse_args(["server", "--config", str(yml), "--transport.max_workers", "40",
                                          "--client.give_up_after", "30", "--server.resume", "false"])
    cfg = config_from_args(args)
    assert cfg.dashboard.port == 9001 and cfg.transport.linger == 0.5
    assert cfg.transport.heartbeat == 1.5 and cfg.client.save_state is False
    assert cfg.transport.max_workers == 40 and cfg.client.give_up_after == 30 and cfg.server.resume is False
    monkeypatch.setenv("LADA_DASHBOARD__TOKEN", "")  # an empty variable means no token, not an error
    assert LadaConfig.load().dashboard.token == ""


def test_secrets_of_the_new_sections_are_masked_when_stored() -> None:
    cfg = LadaConfig.load(overrides={"dashboard.token": "s3cret", "transport.tls_key": "/run/secrets/server.key"},
                          env=False)
    stored = redact(cfg.model_dump(mode="json"))
    assert stored["dashboard"]["token"] == REDACTED and stored["server"]["join_token"] == REDACTED
    assert stored["transport"]["tls_key"] == "/run/secrets/server.key"  # a path, not a secret


def test_serving_sections_do_not_block_a_resume() -> None:
    from lada.server.federation import _comparable

    base = LadaConfig.load(env=False).model_dump(mode="json")
    other = LadaConfig.load(overrides={"transport.heartbeat": 1.0, "client.give_up_after": 5.0,
                                       "dashboard.port": 1234, "server.resume": False}, env=False)
    assert _comparable(base) == _comparable(other.model_dump(mode="json"))
    changed = LadaConfig.load(overrides={"run.method": "random"}, env=False).model_dump(mode="json")
    assert _comparable(base) != _comparable(changed)


def _default(fn: object, name: str) -> object:
    return inspect.signature(fn).parameters[name].default


def test_library_defaults_are_the_config_defaults() -> None:
    """One default each: the library signatures the CLI fills from the config agree with it."""
    from lada.client.runtime import Connection
    from lada.server.auth import Credentials
    from lada.server.dashboard.app import create_app
    from lada.server.transport.grid import GrpcGrid
    from lada.server.transport.serve import start_server

    t, c, d = TransportConfig(), ClientConfig(), DashboardConfig()
    assert _default(GrpcGrid, "heartbeat_s") == t.heartbeat and _default(GrpcGrid, "liveness_s") == t.liveness
    assert _default(start_server, "max_workers") == t.max_workers
    assert _default(Credentials, "ttl_s") == t.credential_ttl
    assert _default(Connection, "give_up_after") == c.give_up_after
    assert _default(create_app, "poll_ms") == d.poll_ms and _default(create_app, "comm_budget_mb") is None
