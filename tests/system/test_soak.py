"""Soak: one real `lada server`, 30 simulated clients (real client runtime, no model), 5 rounds,
with random client kills, stops and restarts and one server SIGKILL with a restart on the same
database: every round committed once, every expected row present, no client left waiting past
a round deadline, server memory bounded. benchmarks/bench_soak.py --quick is the same run."""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.transport import built_models  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


def _bench():  # noqa: ANN202
    sys.path.insert(0, str(ROOT / "benchmarks"))  # bench_soak imports bench_load's pieces
    spec = importlib.util.spec_from_file_location("bench_soak", ROOT / "benchmarks" / "bench_soak.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_soak_quick_every_round_once_every_row_present(tmp_path: Path, built_models: Path) -> None:  # noqa: F811
    bench = _bench()
    res = bench.run_soak(n_clients=30, rounds=5, procs=5, workdir=tmp_path, model_cache=str(built_models),
                         round_timeout=30.0, seed=1, timeout=600, build_models=False)
    print(bench.report(res))
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(tmp_path.glob("server-*.log")))
    assert bench.verify(res) == [], logs
    # the faults happened: one server kill (and its resume), and some client faults
    assert res["faults"]["server_kill"] == 1 and len(res["resumes"]) == 1
    assert sum(v for k, v in res["faults"].items() if k.startswith("client_")) >= 1
    assert res["server_rcs"][0] == -9 and res["server_rcs"][-1] == 0
    # every round committed once, by exactly one server process
    assert res["rounds_rows"] == [(i, "done") for i in range(1, 6)]
    assert sorted(r for ep in res["epochs"] for r in ep["committed"]) == [1, 2, 3, 4, 5]
    counts = bench.row_counts(res)
    assert all(a == b > 0 for a, b in counts.values()), counts
    assert not bench.waiting(res)
    assert 0 < max(ep["hwm_mib"] for ep in res["epochs"]) <= bench.MEMORY_CAP_MIB

    # and the check can fail: one reward row missing, or a round committed twice, is reported
    lost = copy.deepcopy(res)
    key = next(iter(lost["present"]["rewards"]))
    lost["present"]["rewards"][key] -= 1
    assert any("rewards" in x for x in bench.verify(lost))
    twice = copy.deepcopy(res)
    twice["epochs"][-1]["committed"].append(twice["epochs"][0]["committed"][0])
    assert any("two servers" in x for x in bench.verify(twice))
