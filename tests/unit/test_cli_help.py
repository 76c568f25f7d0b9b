"""`lada CMD --help` says what each flag takes and lists only the flags that command reads."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from lada import cli


def _help_text(capsys: pytest.CaptureFixture[str], *cmd: str) -> str:
    with pytest.raises(SystemExit) as done:
        cli.build_parser().parse_args([*cmd, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_help_shows_metavars_choices_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help_text(capsys, "server")
    assert " V " not in out and " V\n" not in out, "a knob still shows the placeholder metavar V"
    assert "--run.rounds N" in out and "--server.address HOST:PORT" in out and "--transport.heartbeat SECONDS" in out
    assert "--run.method {lada,random,lowest_nll,highest_nll,fedmkt,all_public,local_only}" in out
    assert "--filter.select {topk,threshold}" in out and "--server.resume {true,false}" in out
    assert "examples:\n  lada server --config run.yaml" in out
    for cmd in (["demo"], ["client"], ["dashboard"], ["experiment"], ["models", "build"], ["db", "upgrade"]):
        assert "examples:\n  lada " in _help_text(capsys, *cmd), cmd


def test_dashboard_help_lists_only_the_flags_it_reads(capsys: pytest.CaptureFixture[str]) -> None:
    out = _help_text(capsys, "dashboard")
    flags = sorted(set(re.findall(r"--[a-z]+\.[a-z_]+", out)) - {"--section.knob"})
    assert flags == ["--dashboard.comm_budget_mb", "--dashboard.host", "--dashboard.poll_ms", "--dashboard.port",
                     "--dashboard.token", "--server.data_dir", "--server.db"], flags
    assert "--dashboard.port" not in _help_text(capsys, "server")
    assert "--dashboard.port" in _help_text(capsys, "demo")  # the demo starts a dashboard


def test_a_flag_of_another_command_is_a_usage_error_naming_the_command() -> None:
    res = subprocess.run([sys.executable, "-m", "lada.cli", "dashboard", "--run.rounds", "3"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert "lada dashboard: error: unrecognized arguments: --run.rounds 3 (see lada dashboard --help)" in res.stderr
    res = subprocess.run([sys.executable, "-m", "lada.cli", "db", "current", "--dashboard.port", "1"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "lada db current: error: unrecognized arguments" in res.stderr
