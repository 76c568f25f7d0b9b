"""`lada dashboard` as a real process: its access log never holds the token (issue 15).

Pages are opened with ``?token=`` (the browser needs it in the URL), so uvicorn's
access log wrote the secret in clear for every page view; the log is read here
from the process's own output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from lada.server.db.writer import Store

from tests.support.paths import ROOT, free_port
from tests.support.paths import cli as _cli

TOKEN = "s3cret-dashboard-t0ken"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except urllib.error.URLError:
        return 0  # not listening yet


def test_access_log_redacts_the_token(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lada.db'}"
    rid = Store(url).create_run("logged", "lada", {}, 1)
    port = free_port()
    log = tmp_path / "dashboard.log"
    env = {**os.environ, "LADA_DASHBOARD__TOKEN": TOKEN}
    with log.open("wb") as out:
        proc = subprocess.Popen(_cli("dashboard", "--server.db", url, "--dashboard.port", str(port)),
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while _get(f"{base}/healthz") != 200:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert _get(f"{base}/?token={TOKEN}") == 200
        assert _get(f"{base}/runs/{rid}?budget_mb=2&token={TOKEN}") == 200
        assert _get(f"{base}/api/runs?%74oken={TOKEN}") == 200, "a percent-encoded name is still the token"
        assert _get(f"{base}/api/runs?token=wrong-{TOKEN}") == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    text = log.read_text()
    assert TOKEN not in text, [line for line in text.splitlines() if TOKEN in line]
    assert f"/runs/{rid}?budget_mb=2&token=***" in text, "the access log still records the requests"
    assert "/api/runs?%74oken=***" in text
