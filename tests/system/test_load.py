"""Load: 200 light simulated clients (real client runtime, no model) against one real
`lada server` process at once: no errors, and every row they sent or received is in
the database exactly once. benchmarks/bench_load.py is the same run with its figures."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.support.paths import ROOT
from tests.support.transport import built_models  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


def _bench():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "benchmarks" / "bench_load.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_200_clients_at_once_no_errors_every_row_present(tmp_path: Path, built_models: Path) -> None:  # noqa: F811
    bench = _bench()
    res = bench.run_load(n_clients=200, rounds=2, procs=2, workdir=tmp_path, model_cache=str(built_models),
                         timeout=300, build_models=False)
    print(bench.report(res))
    assert bench.verify(res) == [], (tmp_path / "server.out").read_text()[-3000:]
    assert res["rows"]["clients"] == 200 and res["rounds_done"] == [1, 2]
    # every simulated client took part in both rounds and saw an allocation
    assert all(sorted(map(int, a)) == [1, 2] for a in res["allocated"].values())
