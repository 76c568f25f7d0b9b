"""The record phase's commit alone: ``Store.commit_round`` of a 200-client round, three rounds.

    .venv/bin/python benchmarks/bench_commit.py [--clients 200] [--paths 80] [--rounds 3]

Each round has what ``bench_rounds`` commits at N clients: every client's own path per public
sample, the LLM's candidates, 4 allocations and 5 rewards and 6 metrics per client. The texts are
the same every round (an SLM's and the LLM's unchanged paths), so rounds after the first show what
storing each text once saves; prints the seconds per round and the database's size after them.
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from lada.server.db.writer import RoundRecord, Store


def record(t: int, clients: int, paths: int) -> RoundRecord:
    r = RoundRecord()
    for c in range(clients):
        n = f"sim-{c:03d}"
        r.paths += [(n, f"p-{i}", f"{n} thinks step one , step two , more words here #### {i}", i % 3 == 0)
                    for i in range(paths)]
        r.allocations += [(n, "llm", f"p-{i}", 0.5, i) for i in range(4)]
        r.rewards += [(n, "llm", f"p-{i}", 0.25) for i in range(4)] + [(n, "llm", "*", 0.25)]
        r.metrics += [(t, n, k, 0.5) for k in ("accuracy", "reward", "n_allocated", "bytes_up", "bytes_down",
                                                "public_accuracy_before")]
    r.paths += [("llm", f"p-{i}", f"the llm says a longer path with steps {i} " * 4 + f"#### {i}", True)
                for i in range(paths)]
    r.timings = {"teach": 1.0}
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--paths", type=int, default=80, help="public samples (paths per client per round)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    if min(args.clients, args.paths, args.rounds) < 1:
        ap.error("--clients, --paths and --rounds must be at least 1")
    db = Path(tempfile.mkdtemp(prefix="lada-commit-")) / "x.db"
    store = Store(f"sqlite:///{db}")
    run = store.create_run("bench", "lada", {}, args.rounds)
    secs = []
    for t in range(1, args.rounds + 1):
        rec = record(t, args.clients, args.paths)
        store.start_round(run, t)
        t0 = time.perf_counter()
        store.commit_round(run, t, rec)
        secs.append(time.perf_counter() - t0)
    store.engine.dispose()
    cx = sqlite3.connect(db)
    cx.execute("pragma wal_checkpoint(TRUNCATE)")
    cx.close()
    print(f"commit s per round: {' '.join(f'{x:.3f}' for x in secs)}; database {db.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
