"""Round benchmark: what a round costs beyond the models, at N = 2, 10, 50, 200 model-free clients.

    .venv/bin/python benchmarks/bench_rounds.py [--clients 2,10,50,200] [--rounds 2] [--knobs-off]
        [--filter-batched on|off|both]

Each N is one run of bench_load's setup: the real `lada server` process (tiny embedded LLM, the
real round loop, SQLite) and N simulated clients over the real client runtime and gRPC
(``bench_load.SimApp``: no model, random valid statistics and rewards). Per round it prints, from
the server's own round line: the wall time, the LLM's model compute in the round
(``LLMHost.compute_s``: teach, embedding, scoring, server learn, held-out evaluation), the filter
update phase, the record phase (checkpoint and commit), the overhead (wall minus the model
compute: coordination, transport, allocation, filter updates, recording) and the database rows
the round committed per second of its wall time. Also the probe and allocate phases (the filters
retrain before they score, inside allocate) and the CPU seconds the server process and the client
worker processes spent during the round (``bench_load.CpuSampler``): the clients share the two
cores with the server here, so part of the overhead is the simulated clients' own work.

Server learn is kept beside nothing here (``server.overlap_learn=false``), so every second of model
compute is on the round's critical path and wall minus compute is the whole overhead (overlapped,
the compute would hide part of the clients' learn phase and the difference would under-count).
``--knobs-off`` also turns off the other issue-17 knobs (``server.bulk_record``,
``server.eval_subsample``, ``lora.merge_inference``, ``train.sort_by_length``): before and after on
the same code. ``--filter-batched`` sets ``LADA_FILTER_BATCHED`` for the server: ``on`` (the
default) retrains every stale filter of a round in one stacked computation before the round's first
allocation (``lada.common.filters.retrain_all``), ``off`` one by one as each scores; ``both`` runs
each N twice, on and off interleaved (the order alternating from one N to the next), and prints the
ratio of the allocate phase and of the overhead.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_load import cpu_between, run_load, verify  # noqa: E402 - the sibling benchmark, by path

ROUND_LINE = re.compile(r"^\[round (\d+)/\d+\] (.*)$", re.M)
KNOBS_OFF = {"LADA_SERVER__BULK_RECORD": "false", "LADA_SERVER__EVAL_SUBSAMPLE": "null",
             "LADA_LORA__MERGE_INFERENCE": "false", "LADA_TRAIN__SORT_BY_LENGTH": "false"}


def round_lines(server_out: str) -> dict[int, dict[str, float]]:
    """``{round: {key: seconds}}`` from the server's '[round k/R] teach=1.0s ... wall=3.0s' lines."""
    out = {}
    for m in ROUND_LINE.finditer(server_out):
        out[int(m.group(1))] = {k: float(v) for k, v in re.findall(r"(\w+)=([0-9.]+)s", m.group(2))}
    return out


def rows_per_round(db: str) -> dict[int, int]:
    from sqlalchemy import create_engine, text

    eng = create_engine(db)
    out: dict[int, int] = {}
    with eng.connect() as c:
        for table in ("allocations", "rewards", "paths", "metrics"):
            for idx, n in c.execute(text(f"select round_idx, count(*) from {table} group by round_idx")):
                out[idx] = out.get(idx, 0) + n
    eng.dispose()
    return out


def round_spans(db: str) -> dict[int, tuple[float, float]]:
    """``{round: (start, end)}`` as Unix times, from the rounds' stored (naive UTC) times."""
    import datetime as dt

    from sqlalchemy import create_engine, text

    def unix(v: object) -> float:
        t = v if isinstance(v, dt.datetime) else dt.datetime.fromisoformat(str(v))
        return t.replace(tzinfo=dt.timezone.utc).timestamp()

    eng = create_engine(db)
    with eng.connect() as c:
        out = {i: (unix(a), unix(b)) for i, a, b in c.execute(text(
            "select idx, started_at, finished_at from rounds where finished_at is not null"))}
    eng.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", default="2,10,50,200", help="comma-separated client counts")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--procs", type=int, default=2, help="worker processes the clients are spread over")
    ap.add_argument("--knobs-off", action="store_true", help="issue 17's knobs off (bulk record, ...)")
    ap.add_argument("--filter-batched", choices=("on", "off", "both"), default="on",
                    help="the filters' batched retraining (LADA_FILTER_BATCHED); both: each N on and off")
    ap.add_argument("--workdir", help="keep each run's database, config and logs under this folder")
    ap.add_argument("--model-cache", default=os.environ.get("LADA_TEST_MODEL_CACHE"))
    args = ap.parse_args(argv)
    try:
        ns = [int(x) for x in args.clients.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--clients takes comma-separated integers, not {args.clients!r}")
    if not ns or min(ns) < 1 or args.rounds < 1 or args.procs < 1:
        ap.error("--clients, --rounds and --procs must be at least 1")
    os.environ["LADA_SERVER__OVERLAP_LEARN"] = "false"
    if args.knobs_off:
        os.environ.update(KNOBS_OFF)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="lada-rounds-"))
    print(f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    print(f"{'N':>4} {'batch':>5} {'round':>5} {'wall s':>7} {'model s':>8} {'probe s':>8} {'alloc s':>8} "
          f"{'filter s':>9} {'record s':>9} {'overhead s':>11} {'srv cpu s':>10} {'cli cpu s':>10} {'rows':>6} "
          f"{'rows/s':>8}")
    bad: list[str] = []
    summary: list[tuple[int, str, float, float]] = []  # (N, batch, mean overhead, mean allocate)
    settings = {"on": ["on"], "off": ["off"], "both": ["on", "off"]}[args.filter_batched]
    runs = [(n, b) for i, n in enumerate(ns) for b in (settings if i % 2 == 0 else settings[::-1])]
    for i, (n, batch) in enumerate(runs):
        os.environ["LADA_FILTER_BATCHED"] = "1" if batch == "on" else "0"
        res = run_load(n, args.rounds, min(args.procs, n), root / f"n{n}-{batch}", args.model_cache,
                       build_models=i == 0)
        problems = verify(res)
        bad += [f"N={n} batch={batch}: {p}" for p in problems]
        lines = round_lines((Path(res["workdir"]) / "server.out").read_text(errors="replace"))
        rows = rows_per_round(res["db"])
        spans = round_spans(res["db"])
        overheads, allocs = [], []
        for t in sorted(lines):
            v = lines[t]
            wall, model = v.get("wall", float("nan")), v.get("llm_compute", float("nan"))
            overheads.append(wall - model)
            allocs.append(v.get("allocate", 0.0))
            srv, cli = cpu_between(res.get("cpu", []), *spans.get(t, (0.0, 0.0)))
            print(f"{n:>4} {batch:>5} {t:>5} {wall:>7.2f} {model:>8.2f} {v.get('probe', 0.0):>8.2f} "
                  f"{v.get('allocate', 0.0):>8.2f} {v.get('filter_update', 0.0):>9.2f} "
                  f"{v.get('record', 0.0):>9.2f} {wall - model:>11.2f} "
                  f"{srv:>10.2f} {cli:>10.2f} {rows.get(t, 0):>6} {rows.get(t, 0) / max(wall, 1e-9):>8.0f}")
        if overheads:
            summary.append((n, batch, sum(overheads) / len(overheads), sum(allocs) / len(allocs)))
        print(f"load average after N={n} batch={batch}: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    for batch in settings:
        mine = sorted((n, o, a) for n, b, o, a in summary if b == batch)
        print(f"mean per round, batch {batch}: " + ", ".join(f"N={n} overhead {o:.2f}s allocate {a:.2f}s"
                                                           for n, o, a in mine))
        if len(mine) > 1:
            (n0, o0, _), (n1, o1, _) = mine[0], mine[-1]
            print(f"growth: {(o1 - o0) / max(n1 - n0, 1) * 1000:.1f} ms per extra client (N={n0} to N={n1})")
    if len(settings) == 2:
        got = {(n, b): (o, a) for n, b, o, a in summary}
        for n in ns:
            if (n, "on") in got and (n, "off") in got:
                (o_on, a_on), (o_off, a_off) = got[n, "on"], got[n, "off"]
                print(f"N={n}: overhead on/off {o_on:.2f}/{o_off:.2f}s ({o_on / max(o_off, 1e-9):.2f}x), "
                      f"allocate {a_on:.2f}/{a_off:.2f}s ({a_on / max(a_off, 1e-9):.2f}x)")
    print("verify: " + ("every row present" if not bad else "PROBLEMS:\n  " + "\n  ".join(bad[:20])))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
