"""The in-process transport runs the same round code; runs are deterministic for a seed."""

from __future__ import annotations

from lada.client.app import ClientApp
from lada.common.config import LadaConfig
from lada.server.federation import Federation
from lada.server.inprocess import InProcessGrid
from lada.server.storage import Store

from .conftest import TINY


def _run(overrides: dict, db: str | None = None) -> Federation:
    cfg = LadaConfig.load(TINY, overrides={**overrides, "run.rounds": 1}, env=False)
    apps = {n: ClientApp(cfg, n) for n in cfg.data.client_domains}
    fed = Federation(cfg, InProcessGrid(apps), Store(db) if db else None, log=lambda s: None)
    fed.run()
    return fed


def test_inprocess_deterministic(tiny_overrides: dict, tmp_path) -> None:
    a = _run(tiny_overrides, f"sqlite:///{tmp_path / 'a.db'}")
    b = _run(tiny_overrides)
    assert a.history[0].clients == b.history[0].clients
    assert a.history[0].llm == b.history[0].llm
    assert set(a.history[0].clients) == {"client-1", "client-2", "client-3"}
    table = a.summary_table()
    assert "public mix before" in table and "client-3" in table
