"""`lada server` says when each long phase of a round starts and how long it took (issue 16: no silences)."""

from __future__ import annotations

import re

from lada.client.app import ClientApp
from lada.common.config import LadaConfig
from lada.server.federation import Federation
from lada.server.transport.inprocess import InProcessGrid

from tests.support.paths import TINY

PHASES = ("teach", "probe", "allocate", "client_learn", "server_learn", "filter_update", "record")


def test_each_phase_logs_its_start_and_its_time(tiny_overrides: dict) -> None:
    cfg = LadaConfig.load(TINY, overrides={**tiny_overrides, "run.rounds": 1}, env=False)
    logs: list[str] = []
    Federation(cfg, InProcessGrid({n: ClientApp(cfg, n) for n in cfg.data.client_domains}), None,
               log=logs.append).run()
    for name in PHASES:
        assert f"[lada] round 1/1: {name} ..." in logs, logs
        assert any(re.fullmatch(rf"\[lada\] round 1/1: {name} done in \d+\.\ds", s) for s in logs), logs
    starts = [s.split(": ")[1].split(" ")[0] for s in logs if s.endswith(" ...") and "round 1/1" in s]
    # in the order they run; server learn runs beside client learn (server.overlap_learn), so those two
    # start together, in either order
    assert starts[:3] == list(PHASES[:3]) and sorted(starts[3:5]) == sorted(PHASES[3:5])
    assert starts[5:] == list(PHASES[5:])
