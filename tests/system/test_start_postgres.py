"""scripts/start-postgres.sh keeps each checkout's test cluster to itself (issue 16 item 4):
two checkouts get two folders and two ports, and one never resets the other's role password."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.support.paths import ROOT

SCRIPT = ROOT / "scripts" / "start-postgres.sh"
pytestmark = pytest.mark.skipif(shutil.which("initdb") is None and not list(Path("/usr/lib/postgresql").glob("*/bin")),
                                reason="PostgreSQL is not installed")


@pytest.fixture
def base() -> Iterator[Path]:
    """A world-readable folder (as root the cluster runs as `postgres`, who must reach it)."""
    d = Path(tempfile.mkdtemp(prefix="lada-pg-test-"))
    d.chmod(0o755)
    yield d
    for checkout in d.glob("co-*"):
        _run(checkout, d, "stop")
    shutil.rmtree(d, ignore_errors=True)


def _checkout(base: Path, name: str) -> Path:
    co = base / f"co-{name}"
    (co / "scripts").mkdir(parents=True)
    shutil.copy(SCRIPT, co / "scripts" / SCRIPT.name)
    co.chmod(0o755)
    return co


def _run(co: Path, base: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LADA_PG_")}
    return subprocess.run(["bash", str(co / "scripts" / SCRIPT.name), *args], capture_output=True, text=True,
                          timeout=120, env={**clean, "TMPDIR": str(base / "tmp"), "CI": "true", **env})


def _url(co: Path) -> str:
    return (co / ".lada" / "test-pg-url").read_text().strip()


def _connects(url: str) -> bool:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return c.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_two_checkouts_get_private_clusters(base: Path) -> None:
    (base / "tmp").mkdir(mode=0o755)
    a, b = _checkout(base, "a"), _checkout(base, "b")
    for co in (a, b):
        r = _run(co, base)
        assert r.returncode == 0, r.stderr
    ua, ub = _url(a), _url(b)
    assert ua.rsplit(":", 1)[1] != ub.rsplit(":", 1)[1], "one port per checkout"
    assert len(list((base / "tmp").glob("lada-pg-*"))) == 2, "one cluster folder per checkout"
    assert _run(a, base).returncode == 0 and _url(a) == ua, "running it again reuses the cluster and password"
    assert _connects(ua) and _connects(ub)
    # b pointed at a's cluster: refused, and a's password still works
    pgdir = next(p for p in (base / "tmp").glob("lada-pg-*") if (p / "lada-checkout").read_text().strip()
                 == str(a.resolve()))
    r = _run(b, base, LADA_PG_DIR=str(pgdir), LADA_PG_PORT=ua.rsplit(":", 1)[1].split("/")[0])
    assert r.returncode != 0 and "belongs to" in r.stderr, r.stderr
    assert _connects(ua)
