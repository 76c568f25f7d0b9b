"""Before -> after table of a `lada experiment` run, with a paired test per model (issue 14 item 5).

Reads the run's ``items.jsonl`` (per-item correctness of each model's first and last evaluation
on the same held-out items) and ``metrics.jsonl`` (allocations per round), and prints a markdown
table: accuracy before -> after, the binomial standard error of each, McNemar's exact p and a
paired-bootstrap 95 % interval of the change, and the samples allocated to each model.

    .venv/bin/python benchmarks/real_cpu_report.py results/real-cpu [results/real-cpu-local]

A second folder (the same config run as ``--methods local_only``) adds the paired test of the
first run's final accuracy against that control's, on the same items.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from lada.common.significance import mcnemar_exact, paired_bootstrap


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _bits(out: Path, subj: str, rnd: int | None = None) -> list[bool] | None:
    rows = [r for r in _rows(out / "items.jsonl") if r["subject"] == subj]
    rnd = max(r["round"] for r in rows) if rnd is None and rows else rnd
    return next(([c == "1" for c in r["correct"]] for r in rows if r["round"] == rnd), None)


def against(out: Path, control: Path) -> str:
    """Final accuracy of each model in ``out`` against ``control`` on the same items (McNemar)."""
    lines = []
    for subj in sorted({r["subject"] for r in _rows(out / "items.jsonl")}):
        a, b = _bits(out, subj), _bits(control, subj)
        if a is None or b is None or len(a) != len(b) or _bits(out, subj, 0) != _bits(control, subj, 0):
            continue  # not the same items (or not the same start): no paired test
        res, boot = mcnemar_exact(a, b), paired_bootstrap(a, b, seed=0)
        lo, hi = boot.ci or (float("nan"), float("nan"))
        lines.append(f"{subj}: final {100 * sum(a) / len(a):.1f} % vs control {100 * sum(b) / len(b):.1f} % = "
                     f"{100 * res.diff:+.1f} pts ({res.a_only} vs {res.b_only} discordant, McNemar p = {res.p:.3g}, "
                     f"95 % CI [{100 * lo:+.1f}, {100 * hi:+.1f}])")
    return "\n".join(lines)


def table(out: Path) -> str:
    items = _rows(out / "items.jsonl")
    metrics = _rows(out / "metrics.jsonl")
    last = max(r["round"] for r in items)
    lines = ["| model | items | accuracy before (SE) | after (SE) | change | McNemar p | 95 % CI (bootstrap) | "
             "samples allocated to it (per round) |", "|---|---|---|---|---|---|---|---|"]
    for subj in sorted({r["subject"] for r in items}):
        bits = {r["round"]: [c == "1" for c in r["correct"]] for r in items if r["subject"] == subj}
        if 0 not in bits or last not in bits:
            continue
        b, a = bits[0], bits[last]
        n = len(a)
        pa, pb = sum(a) / n, sum(b) / n
        res, boot = mcnemar_exact(a, b), paired_bootstrap(a, b, seed=0)
        alloc = [int(r.get("n_allocated") or 0) for r in sorted(metrics, key=lambda r: r["round"])
                 if r["subject"] == subj and r["round"] >= 1]
        lo, hi = boot.ci or (float("nan"), float("nan"))
        lines.append(
            f"| {subj} | {n} | {100 * pb:.1f} % ({100 * math.sqrt(pb * (1 - pb) / n):.1f}) | "
            f"{100 * pa:.1f} % ({100 * math.sqrt(pa * (1 - pa) / n):.1f}) | {100 * (pa - pb):+.1f} pts "
            f"({res.a_only} gained, {res.b_only} lost) | {res.p:.3g} | [{100 * lo:+.1f}, {100 * hi:+.1f}] | "
            f"{sum(alloc)} ({', '.join(map(str, alloc))}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(Path(sys.argv[1] if len(sys.argv) > 1 else "results/real-cpu")))
    if len(sys.argv) > 2:
        print(f"\nagainst {sys.argv[2]}:\n" + against(Path(sys.argv[1]), Path(sys.argv[2])))
