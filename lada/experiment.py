"""``lada experiment``: a method × seed matrix on one fixed scenario.

Every cell runs the same round code as the gRPC path (``Federation``) over
the in-process transport, with only the method's own knobs changed. Outputs:
per-round metrics (CSV + JSON lines), a markdown table of final accuracies
(mean ± std over seeds) and PNG plots.

It wires the server's ``Federation`` to in-process ``ClientApp`` objects, so it
lives beside the CLI in ``lada`` (which may depend on both), not in
``lada.server`` (which must not depend on the client).
"""

from __future__ import annotations

import csv
import itertools
import json
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lada.common.config import LadaConfig

LLM = "llm"


@dataclass(frozen=True)
class Method:
    name: str
    overrides: dict[str, Any]
    note: str = ""


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("lada", {"run.method": "lada"}, "learnability-aware filter, contrastive distillation, both directions"),
    Method("local_only", {"run.method": "local_only"}, "no collaboration"),
    Method("random", {"run.method": "random"}, "random allocation, same budget"),
    Method("lowest_nll", {"run.method": "lowest_nll"}, "easiest first, same budget"),
    Method("highest_nll", {"run.method": "highest_nll"}, "hardest first, same budget"),
    Method("fedmkt", {"run.method": "fedmkt"}, "FedMKT-style selection, same budget"),
    Method("all_public", {"run.method": "all_public"}, "every correct public path (LARGER budget)"),
    Method("lada_no_explore", {"run.method": "lada", "filter.lam": 0.0}, "ablation: lambda = 0"),
    Method("lada_no_cluster", {"run.method": "lada", "filter.cold_start": "random"}, "ablation: random round 1"),
    Method("lada_sft", {"run.method": "lada", "distill.alpha": 0.0, "distill.sft_positive": 1.0},
           "ablation: SFT on paths instead of the contrastive loss"),
    Method("lada_one_way", {"run.method": "lada", "run.bidirectional": False}, "ablation: LLM -> SLM only"),
]}


def run_cell(base: dict[str, Any], method: str, seed: int) -> list[dict[str, Any]]:
    """One (method, seed) run; returns one row per round per subject."""
    import torch

    from lada.client.app import ClientApp
    from lada.server.federation import Federation
    from lada.server.transport.inprocess import InProcessGrid

    cfg = LadaConfig.load(overrides={**base, **METHODS[method].overrides, "run.seed": seed,
                                     "run.name": f"{method}-s{seed}"}, env=False)
    torch.set_num_threads(cfg.run.threads)
    t0 = time.perf_counter()
    apps = {n: ClientApp(cfg, n) for n in cfg.data.client_domains}
    fed = Federation(cfg, InProcessGrid(apps), None, log=lambda s: None)
    fed.run()
    rows = []
    for subj, acc in fed.before.items():
        rows.append(dict(method=method, seed=seed, round=0, subject=subj, accuracy=acc))
    domain_of = {p.id: p.domain for p in fed.public}
    seen: dict[str, set[str]] = {}  # client -> every sample id it was given so far
    for h in fed.history:
        alloc = h.allocated
        for subj, vals in [*h.clients.items(), (LLM, h.llm)]:
            given = alloc.get(subj, [])
            own = cfg.data.client_domains.get(subj)
            before = seen.setdefault(subj, set())
            fresh = sum(i not in before for i in set(given)) / len(given) if given else None
            before.update(given)
            rows.append(dict(method=method, seed=seed, round=h.idx, subject=subj, **vals,
                             overlap=_overlap(alloc) if subj == LLM else None,
                             in_domain=(sum(domain_of[i] == own for i in given) / len(given)
                                        if own and given else None),
                             fresh=fresh, distinct=len(before) if own else None))
    print(f"[experiment] {method:<16} seed {seed}: final SLM mean "
          f"{np.mean([v['accuracy'] for v in fed.history[-1].clients.values()]):.3f}, "
          f"LLM {fed.history[-1].llm['accuracy']:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return rows


def _overlap(alloc: dict[str, list[str]]) -> float:
    """Mean pairwise Jaccard overlap of what different clients were given."""
    sets = [set(v) for v in alloc.values()]
    pairs = [len(a & b) / max(len(a | b), 1) for a, b in itertools.combinations(sets, 2)]
    return float(np.mean(pairs)) if pairs else 0.0


def _cell(args: tuple[dict[str, Any], str, int]) -> list[dict[str, Any]]:
    return run_cell(*args)


def run_matrix(cfg: LadaConfig, methods: list[str], seeds: list[int], out: Path, workers: int = 2) -> Path:
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(METHODS)}")
    out.mkdir(parents=True, exist_ok=True)
    from lada.common.models import resolve_model

    for name in sorted({cfg.models.llm, *cfg.models.clients.values()}):
        resolve_model(name, cfg.models, seed=cfg.data.seed)  # build once, before the workers start
    base = cfg.flat()
    (out / "config.yaml").write_text(cfg.dump_yaml())
    cells = [(base, m, s) for s in seeds for m in methods]
    t0 = time.perf_counter()
    print(f"[experiment] {len(cells)} runs ({len(methods)} methods x {len(seeds)} seeds), {workers} workers",
          file=sys.stderr, flush=True)
    rows: list[dict[str, Any]] = []
    if workers <= 1:
        for c in cells:
            rows += _cell(c)
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            for r in pool.imap_unordered(_cell, cells):
                rows += r
    wall = time.perf_counter() - t0
    write_outputs(rows, out, methods, wall)
    return out


def redraw(out: Path) -> None:
    """The table and plots again from ``out/metrics.jsonl`` (no run), keeping the recorded wall time."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    old = (out / "summary.md").read_text() if (out / "summary.md").exists() else ""
    wall = float(old.rsplit("Wall time of the matrix:", 1)[1].split("min")[0]) * 60 if "Wall time" in old else 0.0
    write_outputs(rows, out, methods, wall)


def write_outputs(rows: list[dict[str, Any]], out: Path, methods: list[str], wall: float) -> None:
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("method", "seed", "round", "subject"), k))
    with open(out / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    with open(out / "metrics.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    table = summary_table(rows, methods)
    (out / "summary.md").write_text(table + f"\n\nWall time of the matrix: {wall / 60:.1f} min\n")
    print(table, flush=True)
    print(f"\n[experiment] wall time {wall / 60:.1f} min; outputs in {out}", flush=True)
    plot(rows, methods, out)


def _final(rows: list[dict[str, Any]], method: str) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """Per seed: mean final SLM accuracy, final LLM accuracy, LLM accuracy before."""
    mine = [r for r in rows if r["method"] == method]
    last = max(r["round"] for r in mine)
    slm: dict[int, list[float]] = {}
    llm, llm0 = {}, {}
    for r in mine:
        if r["round"] == last and r["subject"] != LLM:
            slm.setdefault(r["seed"], []).append(r["accuracy"])
        if r["round"] == last and r["subject"] == LLM:
            llm[r["seed"]] = r["accuracy"]
        if r["round"] == 0 and r["subject"] == LLM:
            llm0[r["seed"]] = r["accuracy"]
    return {s: float(np.mean(v)) for s, v in slm.items()}, llm, llm0


def _ms(vals: list[float]) -> str:
    return f"{100 * np.mean(vals):.1f} ± {100 * np.std(vals):.1f}" if vals else "–"


def summary_table(rows: list[dict[str, Any]], methods: list[str]) -> str:
    lines = ["| method | mean final SLM accuracy (%) | per client (%) | LLM final (%) | LLM change (pts) "
             "| own-domain share of allocations (%) | distinct samples a client was given | note |",
             "|---|---|---|---|---|---|---|---|"]
    for m in methods:
        if not any(r["method"] == m for r in rows):
            continue
        slm, llm, llm0 = _final(rows, m)
        last = max(r["round"] for r in rows if r["method"] == m)
        per = {}
        for r in rows:
            if r["method"] == m and r["round"] == last and r["subject"] != LLM:
                per.setdefault(r["subject"], []).append(r["accuracy"])
        per_s = ", ".join(f"{k} {100 * np.mean(v):.1f}" for k, v in sorted(per.items()))
        delta = [llm[s] - llm0[s] for s in llm if s in llm0]
        share = [r["in_domain"] for r in rows if r["method"] == m and r.get("in_domain") is not None]
        share_s = f"{100 * np.mean(share):.0f}" if share else "–"
        distinct = [r["distinct"] for r in rows if r["method"] == m and r["round"] == last
                    and r.get("distinct") is not None]
        distinct_s = f"{np.mean(distinct):.0f}" if distinct else "–"
        lines.append(f"| {m} | {_ms(list(slm.values()))} | {per_s} | {_ms(list(llm.values()))} | "
                     f"{100 * np.mean(delta):+.1f} | {share_s} | {distinct_s} | {METHODS[m].note} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], methods: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def series(m: str, key: str, subj_filter: Any) -> tuple[list[int], list[float]]:
        by_round: dict[int, list[float]] = {}
        for r in rows:
            if r["method"] == m and subj_filter(r["subject"]) and r.get(key) is not None:
                by_round.setdefault(r["round"], []).append(r[key])
        xs = sorted(by_round)
        return xs, [float(np.mean(by_round[x])) for x in xs]

    def figure(fname: str, panels: list[tuple[str, Any, str, str]]) -> None:
        """One PNG, one panel per (metric, subject filter, title, y label), a line per method."""
        fig, axes = plt.subplots(1, len(panels), figsize=(12, 4.5))
        for ax, (key, subj, title, ylabel) in zip(axes, panels):
            for k, m in enumerate(methods):  # LaDa variants dashed, baselines solid; 20 distinct colours
                style = "--" if m.startswith("lada_") else "-"
                ax.plot(*series(m, key, subj), style, marker="o", label=m, color=plt.cm.tab20(k % 20),
                        linewidth=2.5 if m == "lada" else 1.5)
            ax.set(title=title, xlabel="round", ylabel=ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole numbers
        axes[0].legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(out / fname, dpi=110)
        plt.close(fig)

    def slm(s: str) -> bool:
        return s != LLM

    def llm(s: str) -> bool:
        return s == LLM

    figure("accuracy.png", [("accuracy", slm, "SLM accuracy (mean of clients and seeds)", "accuracy"),
                            ("accuracy", llm, "LLM held-out accuracy (mean of seeds)", "accuracy")])
    figure("reward_overlap.png", [
        ("reward", slm, "client reward (learning gain, 0.5 = none)", "reward"),
        ("overlap", llm, "allocation overlap between clients (Jaccard)", "overlap"),
    ])
