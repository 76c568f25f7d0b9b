"""Dashboard latency at the paper's scale: 3 clients x 5 rounds x 1000 allocations per client per round.

Fills a fresh SQLite database through ``Store`` (the server's writer), then
times the run page and every API call: the median (and p90) of several
requests through FastAPI's TestClient (ASGI in process: the app's own time,
no network). Target: every median under 300 ms.

    .venv/bin/python benchmarks/bench_dashboard.py [--repeat 15] [--db sqlite:///...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from lada.server.dashboard.app import create_app  # noqa: E402

from tests.support.dashboard import XSS_SAMPLE_ID, fill_demo_run  # noqa: E402

TARGET_MS = 300.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=15, help="requests per endpoint (median reported)")
    p.add_argument("--db", help="benchmark an existing database instead of a generated one")
    p.add_argument("--allocations", type=int, default=1000, help="allocations per client per round")
    a = p.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    if a.db:
        url, run_id = a.db, None
    else:
        url = f"sqlite:///{Path(tmp.name) / 'bench.db'}"
        t0 = time.perf_counter()
        run_id = fill_demo_run(url, n_clients=3, n_rounds=5, n_public=1000, budget=a.allocations,
                               server_budget=250, name="bench")
        print(f"filled {url} in {time.perf_counter() - t0:.1f} s "
              f"(3 clients x 5 rounds x {a.allocations} allocations down + 250 up per client per round)")

    with TestClient(create_app(url, comm_budget_mb=6.0)) as c:
        if run_id is None:
            run_id = c.get("/api/runs").json()[0]["id"]
        grid = c.get(f"/api/runs/{run_id}/allocations").json()
        sample = XSS_SAMPLE_ID if XSS_SAMPLE_ID in grid["samples"] else grid["samples"][0]
        print(f"run {run_id}: {len(grid['row'])} down cells, {len(grid['samples'])} samples\n")
        endpoints = [
            ("page  /", "/"),
            ("page  /runs/{id}", f"/runs/{run_id}"),
            ("GET   /api/runs", "/api/runs"),
            ("GET   /api/runs/{id}", f"/api/runs/{run_id}"),
            ("GET   .../clients", f"/api/runs/{run_id}/clients"),
            ("GET   .../rounds", f"/api/runs/{run_id}/rounds"),
            ("GET   .../metrics", f"/api/runs/{run_id}/metrics"),
            ("GET   .../charts", f"/api/runs/{run_id}/charts"),
            ("GET   .../allocations (down)", f"/api/runs/{run_id}/allocations"),
            ("GET   .../allocations (up)", f"/api/runs/{run_id}/allocations?direction=up"),
            ("GET   .../samples/{sid}", f"/api/runs/{run_id}/samples/{sample}"),
            ("GET   .../events", f"/api/runs/{run_id}/events"),
            ("GET   .../live", f"/api/runs/{run_id}/live"),
            ("GET   /metrics", "/metrics"),
            ("GET   /healthz", "/healthz"),
        ]
        rows, worst = [], 0.0
        for label, path in endpoints:
            c.get(path)  # warm-up
            times, size = [], 0
            for _ in range(a.repeat):
                t = time.perf_counter()
                r = c.get(path)
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, (path, r.status_code)
                size = len(r.content)
            med = statistics.median(times)
            p90 = sorted(times)[max(0, int(round(0.9 * len(times))) - 1)]
            worst = max(worst, med)
            rows.append((label, med, p90, size))
    w = max(len(r[0]) for r in rows)
    print(f"{'endpoint':<{w}}  {'median ms':>9}  {'p90 ms':>7}  {'bytes':>9}  ok")
    print("-" * (w + 36))
    for label, med, p90, size in rows:
        print(f"{label:<{w}}  {med:9.1f}  {p90:7.1f}  {size:9d}  {'yes' if med < TARGET_MS else 'NO'}")
    print(f"\nslowest median {worst:.1f} ms (target < {TARGET_MS:.0f} ms): {'PASS' if worst < TARGET_MS else 'FAIL'}")
    tmp.cleanup()
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
