"""``lada experiment``: a method × seed matrix on one fixed scenario.

Every cell runs the same round code as the gRPC path (``Federation``) over
the in-process transport, with only the method's own knobs changed. Outputs:
per-round metrics (CSV + JSON lines), the per-item correctness of the first and
last evaluations (``items.jsonl``: the same held-out items for every method),
a markdown table of final accuracies (mean ± std over seeds) with paired
McNemar tests against random (pooled over clients and seeds) and PNG plots.
Oracles (``Method.oracle``) are references that know each sample's domain and
difficulty (``lada.common.oracles``), installed here, never a ``run.method``.

It wires the server's ``Federation`` to in-process ``ClientApp`` objects, so it
lives beside the CLI in ``lada`` (which may depend on both), not in
``lada.server`` (which must not depend on the client).
"""

from __future__ import annotations

import csv
import itertools
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lada.common.config import LadaConfig
from lada.common.significance import PairedResult, mark, mcnemar_exact, pool

LLM = "llm"


@dataclass(frozen=True)
class Method:
    name: str
    overrides: dict[str, Any]
    note: str = ""
    oracle: bool = False  # the allocation is an oracle's (lada.common.oracles), not run.method's


ORACLE_NOTE = "ORACLE, not a method: own domain at capacity-matched difficulty, same budget; "


METHODS: dict[str, Method] = {m.name: m for m in [
    Method("lada", {"run.method": "lada"}, "learnability-aware filter, contrastive distillation, both directions"),
    Method("local_only", {"run.method": "local_only"}, "no collaboration"),
    Method("random", {"run.method": "random"}, "random allocation, same budget"),
    Method("random_fresh", {"run.method": "random", "run.fresh_only": True},
           "random allocation, same budget, never re-sending a sample (as lada)"),
    Method("lowest_nll", {"run.method": "lowest_nll"}, "easiest first, same budget"),
    Method("highest_nll", {"run.method": "highest_nll"}, "hardest first, same budget"),
    Method("fedmkt", {"run.method": "fedmkt"}, "FedMKT-style selection, same budget"),
    Method("all_public", {"run.method": "all_public"}, "every correct public path (LARGER budget)"),
    Method("lada_paper", {"run.method": "lada", "filter.reward": "nll_drop"},
           "the paper's reward: normalised perplexity drop of y+ after training"),
    Method("lada_no_explore", {"run.method": "lada", "filter.lam": 0.0}, "ablation: lambda = 0"),
    Method("lada_no_cluster", {"run.method": "lada", "filter.cold_start": "random"}, "ablation: random round 1"),
    Method("lada_sft", {"run.method": "lada", "distill.alpha": 0.0, "distill.sft_positive": 1.0},
           "ablation: SFT on paths instead of the contrastive loss"),
    Method("lada_shared", {"run.method": "lada", "filter.share": True},
           "ablation: one filter per direction shared by every client (the client in the context)"),
    Method("lada_one_way", {"run.method": "lada", "run.bidirectional": False}, "ablation: LLM -> SLM only"),
    Method("oracle", {"run.method": "random"},
           ORACLE_NOTE + "the LLM gets every SLM-right-LLM-wrong path", oracle=True),
    Method("oracle_one_way", {"run.method": "random", "run.bidirectional": False},
           ORACLE_NOTE + "LLM -> SLM only (the LLM's control)", oracle=True),
]}
BASELINE = "random"  # what the table's paired tests compare every method against


def run_cell(base: dict[str, Any], method: str, seed: int) -> list[dict[str, Any]]:
    """One (method, seed) run; returns one row per round per subject, and one ``kind="items"`` row
    per subject with the per-item correctness of its first (round 0) and last evaluations."""
    import torch

    from lada.client.app import ClientApp
    from lada.server.federation import Federation
    from lada.server.transport.inprocess import InProcessGrid

    m = METHODS[method]
    cfg = LadaConfig.load(overrides={**base, **m.overrides, "run.seed": seed,
                                     "run.name": f"{method}-s{seed}"}, env=False)
    torch.set_num_threads(cfg.run.threads)
    t0 = time.perf_counter()
    apps = {n: ClientApp(cfg, n) for n in cfg.data.client_domains}
    fed = Federation(cfg, InProcessGrid(apps), None, log=lambda s: None)
    if m.oracle:
        install_oracles(fed, cfg)
    llm_evals = _record_llm_evaluations(fed, cfg)
    fed.run()
    lacked = lacked_domain(cfg)
    rows = []
    for subj, acc in fed.before.items():
        rows.append(dict(method=method, seed=seed, round=0, subject=subj, accuracy=acc,
                         domain=cfg.data.client_domains.get(subj),
                         **(_domain_acc(*llm_evals[0]) if subj == LLM and 0 in llm_evals else {})))
    domain_of = {p.id: p.domain for p in fed.public}
    steps_of = {p.id: p.difficulty for p in fed.public}
    seen: dict[str, set[str]] = {}  # client -> every sample id it was given so far
    for h in fed.history:
        alloc = h.allocated
        for subj, vals in [*h.clients.items(), (LLM, h.llm)]:
            given = alloc.get(subj, [])
            own = cfg.data.client_domains.get(subj)
            before = seen.setdefault(subj, set())
            fresh = sum(i not in before for i in set(given)) / len(given) if given else None
            before.update(given)
            extra = _domain_acc(*llm_evals[h.idx]) if subj == LLM and h.idx in llm_evals else {}
            rows.append(dict(method=method, seed=seed, round=h.idx, subject=subj, **vals, **extra, domain=own,
                             overlap=_overlap(alloc) if subj == LLM else None,
                             in_domain=(sum(domain_of[i] == own for i in given) / len(given)
                                        if own and given else None),
                             fresh=fresh, distinct=len(before) if own else None,
                             given_steps=(float(np.mean([steps_of[i] for i in given]))
                                          if own and given else None),
                             lacked=lacked if subj == LLM else None))
    last = cfg.run.rounds
    for name, app in apps.items():
        for rnd in (0, last):
            if rnd in app.evaluations:
                rows.append(dict(kind="items", method=method, seed=seed, subject=name, round=rnd,
                                 correct=_bits(app.evaluations[rnd])))
    for rnd in (0, last):
        if rnd in llm_evals:
            items, correct = llm_evals[rnd]
            rows.append(dict(kind="items", method=method, seed=seed, subject=LLM, round=rnd,
                             correct=_bits(correct), domains=[s.domain for s in items]))
    print(f"[experiment] {method:<16} seed {seed}: final SLM mean "
          f"{np.mean([v['accuracy'] for v in fed.history[-1].clients.values()]):.3f}, "
          f"LLM {fed.history[-1].llm['accuracy']:.3f} ({time.perf_counter() - t0:.0f}s)", flush=True)
    return rows


def _bits(correct: list[bool]) -> str:
    return "".join("1" if c else "0" for c in correct)


def lacked_domain(cfg: LadaConfig) -> str | None:
    """The client domain the LLM never saw: left out of its pre-training slice and of its own mix."""
    seen = cfg.models.llm_pretrain_domains
    if seen is None:
        return None
    server = set(cfg.data.server_domains) if cfg.data.server_domains is not None else None
    out = sorted(d for d in set(cfg.data.client_domains.values()) - set(seen) if server is None or d not in server)
    return out[0] if out else None


def _domain_acc(items: list[Any], correct: list[bool]) -> dict[str, float]:
    by: dict[str, list[bool]] = {}
    for s, c in zip(items, correct):
        by.setdefault(s.domain, []).append(bool(c))
    return {f"acc_{d}": float(np.mean(v)) for d, v in sorted(by.items())}


def counted_clients(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(clients counted for the same-budget SLM target, clients reported apart): a client holding the
    domain the LLM never saw is apart, as no LLM path of its domain can be right, so no allocation of
    LLM paths can help it; its gain is the SLM -> LLM half's business (docs/results.md)."""
    lacked = next((r["lacked"] for r in rows if r.get("lacked")), None)
    dom = {r["subject"]: r.get("domain") for r in rows if r.get("kind") != "items" and r["subject"] != LLM}
    apart = sorted(c for c, d in dom.items() if lacked and d == lacked)
    return sorted(c for c in dom if c not in apart), apart


def source_commit() -> str:
    """The commit the harness's code is at, ``+dirty`` if tracked files differ from it: a run's numbers
    are only reproducible from the code they came from. ``unknown`` outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _record_llm_evaluations(fed: Any, cfg: LadaConfig) -> dict[int, tuple[list[Any], list[bool]]]:
    """Wrap the LLM's held-out evaluation so the harness keeps its per-item correctness (the round
    loop keeps only the accuracy). Round 0 and the last round evaluate every item; the rounds in
    between the first ``data.n_test_between`` (a stratified prefix), as the clients do."""
    host, out = fed.llm, {}
    between = cfg.data.n_test_between

    def evaluate(samples: list[Any]) -> float:
        rnd = 0 if LLM not in fed.before else len(fed.history) + 1
        items = list(samples) if rnd in (0, cfg.run.rounds) or between is None else list(samples)[:between]
        acc, _, correct = host.learner.evaluate(items)
        out[rnd] = (items, [bool(c) for c in correct])
        return float(acc)

    host.evaluate = evaluate
    return out


def install_oracles(fed: Any, cfg: LadaConfig) -> None:
    """Replace the pairs' policies by oracles: LLM -> client the same-budget oracle (the client's
    domain, difficulty up to its SLM's capacity), client -> LLM every SLM-right-LLM-wrong path."""
    from lada.common.models import is_embedded, spec_of
    from lada.common.oracles import LLMGapOracle, SameBudgetOracle, SampleFacts

    facts = SampleFacts({s.id: s.domain for s in fed.public}, {s.id: s.difficulty for s in fed.public})
    made: dict[tuple[str, str], Any] = {}
    service = fed.alloc

    def capacity(client: str) -> int:
        model = cfg.models.clients[client]
        return spec_of(model).pretrain_max_steps if is_embedded(model) else cfg.data.max_steps

    def policy(receiver: str, sender: str, dim: int) -> Any:
        if (receiver, sender) not in made:
            seed = cfg.run.seed * 7919 + sum(map(ord, f"{receiver}<-{sender}"))
            made[(receiver, sender)] = (
                LLMGapOracle(cfg.filter, dim, seed) if receiver == LLM else
                SameBudgetOracle(cfg.filter, dim, seed, facts, cfg.data.client_domains[receiver], capacity(receiver)))
            key = service.key(receiver, sender) if hasattr(service, "key") else (receiver, sender)
            service.policies[key] = made[(receiver, sender)]
        return made[(receiver, sender)]

    service.policy = policy


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
    (out / "commit.txt").write_text(source_commit() + "\n")
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


def _stored_rows(out: Path) -> list[dict[str, Any]]:
    """The metric rows and per-item rows a run wrote to ``out``."""
    return [json.loads(line) for f in ("metrics.jsonl", "items.jsonl") if (out / f).exists()
            for line in (out / f).read_text().splitlines() if line.strip()]


def _stored_wall(out: Path) -> float:
    """The wall time (seconds) ``out/summary.md`` records, 0 if none."""
    old = (out / "summary.md").read_text() if (out / "summary.md").exists() else ""
    return float(old.rsplit("Wall time of the matrix:", 1)[1].split("min")[0]) * 60 if "Wall time" in old else 0.0


def _methods_in(rows: list[dict[str, Any]]) -> list[str]:
    return [m for m in METHODS if any(r["method"] == m for r in rows)]


def redraw(out: Path) -> None:
    """The table and plots again from ``out/metrics.jsonl`` (no run), keeping the recorded wall time."""
    rows = _stored_rows(out)
    write_outputs(rows, out, _methods_in(rows), _stored_wall(out))


def _knobs(path: Path) -> dict[str, Any]:
    """A stored config.yaml as ``{"section.knob": value}`` (as ``LadaConfig.flat``, without validating:
    an older run's config may lack knobs added since)."""
    import yaml

    data = yaml.safe_load(path.read_text()) or {}
    return {f"{sec}.{k}": v for sec, vals in data.items() for k, v in (vals or {}).items()}


DOC_BEGIN, DOC_END = "<!-- lada experiment --join: begin -->", "<!-- lada experiment --join: end -->"


def splice_into(doc: Path, out: Path) -> None:
    """Replace what stands between the two markers in ``doc`` with ``out``'s summary and plots (so a
    results page is regenerated by the command, not edited by hand); a page without them is refused."""
    text = doc.read_text()
    if text.count(DOC_BEGIN) != 1 or text.count(DOC_END) != 1 or text.index(DOC_BEGIN) > text.index(DOC_END):
        raise ValueError(f"{doc} needs one {DOC_BEGIN!r} line and, after it, one {DOC_END!r} line")
    rel = Path(os.path.relpath(out, doc.parent)).as_posix()
    figs = "\n".join(f"![{f.stem}]({rel}/{f.name})" for f in sorted(out.glob("*.png")))
    block = (f"{DOC_BEGIN}\n<!-- generated from {out.as_posix()}; do not edit by hand -->\n\n"
             f"{(out / 'summary.md').read_text().strip()}\n\n{figs}\n{DOC_END}")
    head, rest = text.split(DOC_BEGIN, 1)
    doc.write_text(head + block + rest.split(DOC_END, 1)[1])


def join(sources: list[Path], out: Path, doc: Path | None = None) -> None:
    """One matrix from several runs' folders of the same scenario (no run): their rows together, a
    (method, seed) from the first folder that has it, and the table and plots drawn again. Folders whose
    configs disagree on a knob both record are refused: that would compare two scenarios. The wall time is
    the sum of the folders'; commit.txt names each folder's commit. ``doc``: the summary and plots also
    replace the marked block of that page (:func:`splice_into`)."""
    if not sources:
        raise ValueError("join needs at least one results folder")
    for src in sources:
        if not (src / "metrics.jsonl").exists() or not (src / "config.yaml").exists():
            raise ValueError(f"{src} is not a results folder of lada experiment (no metrics.jsonl or config.yaml)")
    ref = _knobs(sources[0] / "config.yaml")
    for src in sources[1:]:
        other = _knobs(src / "config.yaml")
        bad = sorted(k for k in ref.keys() & other.keys() if ref[k] != other[k])
        if bad:
            raise ValueError(f"{src} ran another scenario than {sources[0]}: "
                             + ", ".join(f"{k}={other[k]!r} (not {ref[k]!r})" for k in bad[:8]))
    rows: list[dict[str, Any]] = []
    taken: set[tuple[str, int]] = set()
    commits, wall = [], 0.0
    for src in sources:
        mine = _stored_rows(src)
        cells = {(r["method"], r["seed"]) for r in mine} - taken
        rows += [r for r in mine if (r["method"], r["seed"]) in cells]
        taken |= cells
        wall += _stored_wall(src)
        commit = (src / "commit.txt").read_text().strip() if (src / "commit.txt").exists() else "unknown"
        commits.append(commit if ":" in commit else f"{src.name}: {commit}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text((sources[0] / "config.yaml").read_text())
    (out / "commit.txt").write_text("\n".join(commits) + "\n")
    write_outputs(rows, out, _methods_in(rows), wall)
    if doc is not None:
        splice_into(doc, out)


def _split(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-round metric rows, per-item rows)."""
    return [r for r in rows if r.get("kind") != "items"], [r for r in rows if r.get("kind") == "items"]


def write_outputs(rows: list[dict[str, Any]], out: Path, methods: list[str], wall: float) -> None:
    all_rows = rows
    rows, items = _split(rows)
    with open(out / "items.jsonl", "w") as fh:
        for r in items:
            fh.write(json.dumps(r) + "\n")
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("method", "seed", "round", "subject"), k))
    with open(out / "metrics.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    with open(out / "metrics.jsonl", "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    table = summary_table(all_rows, methods)
    premise = "\n\n".join(x for x in (premise_check(all_rows), method_check(all_rows)) if x)
    commit = (out / "commit.txt").read_text().strip() if (out / "commit.txt").exists() else "unknown"
    (out / "summary.md").write_text(table + (f"\n\n{premise}" if premise else "")
                                    + f"\n\nWall time of the matrix: {wall / 60:.1f} min\n\nCommit: {commit}\n")
    print(table + (f"\n\n{premise}" if premise else ""), flush=True)
    print(f"\n[experiment] wall time {wall / 60:.1f} min; outputs in {out}", flush=True)
    plot(rows, methods, out)


def _final(rows: list[dict[str, Any]], method: str, clients: list[str] | None = None
           ) -> tuple[dict[int, float], dict[int, float], dict[int, float]]:
    """Per seed: mean final SLM accuracy (over ``clients``, default all), final LLM accuracy, LLM
    accuracy before."""
    mine = [r for r in rows if r["method"] == method and r.get("kind") != "items"]
    last = max(r["round"] for r in mine)
    slm: dict[int, list[float]] = {}
    llm, llm0 = {}, {}
    for r in mine:
        if r["round"] == last and r["subject"] != LLM and (clients is None or r["subject"] in clients):
            slm.setdefault(r["seed"], []).append(r["accuracy"])
        if r["round"] == last and r["subject"] == LLM:
            llm[r["seed"]] = r["accuracy"]
        if r["round"] == 0 and r["subject"] == LLM:
            llm0[r["seed"]] = r["accuracy"]
    return {s: float(np.mean(v)) for s, v in slm.items()}, llm, llm0


def _ms(vals: list[float]) -> str:
    return f"{100 * np.mean(vals):.1f} ± {100 * np.std(vals):.1f}" if vals else "–"


def _vectors(items: list[dict[str, Any]], method: str, llm: bool, rnd: int | None = None,
             domain: str | None = None, clients: list[str] | None = None) -> dict[tuple[int, str], np.ndarray]:
    """(seed, subject) -> per-item correctness of ``method``'s last (or ``rnd``) evaluation, of the
    LLM or of the clients (``clients``, default all); ``domain`` keeps only the LLM's items of that domain."""
    mine = [r for r in items if r.get("kind") == "items" and r["method"] == method and (r["subject"] == LLM) == llm
            and (llm or clients is None or r["subject"] in clients)]
    if not mine:
        return {}
    rnd = max(r["round"] for r in mine) if rnd is None else rnd
    out = {}
    for r in mine:
        if r["round"] != rnd:
            continue
        bits = np.array([c == "1" for c in r["correct"]], dtype=bool)
        if domain is not None:
            bits = bits[np.array([d == domain for d in r.get("domains", [])], dtype=bool)]
        out[(r["seed"], r["subject"])] = bits
    return out


def paired(items: list[dict[str, Any]], a: str, b: str, llm: bool = False, domain: str | None = None,
           clients: list[str] | None = None) -> PairedResult | None:
    """McNemar exact of ``a`` against ``b`` on the same final items, pooled over seeds and subjects
    (the clients, ``clients`` only if given, or the LLM); None when the two share no evaluated (seed, subject)."""
    va = _vectors(items, a, llm, domain=domain, clients=clients)
    vb = _vectors(items, b, llm, domain=domain, clients=clients)
    if not set(va) & set(vb):
        return None
    x, y = pool(va, vb)
    return mcnemar_exact(x, y) if len(x) else None


def _vs(res: PairedResult | None) -> str:
    if res is None:
        return "–"
    return f"{100 * res.diff:+.1f} (p={res.p:.2g}){mark(res.p)}"


def summary_table(rows: list[dict[str, Any]], methods: list[str]) -> str:
    """The results table; every "vs random" cell is a paired McNemar test on per-item correctness
    of the final evaluation, pooled over clients and seeds (``*`` p < 0.05, ``**`` p < 0.01)."""
    rows, items = _split(rows)
    lacked = next((r["lacked"] for r in rows if r.get("lacked")), None)
    lk = f" | LLM on {lacked}, never seen (%)" if lacked else ""
    lines = [f"| method | mean final SLM accuracy (%) | vs {BASELINE} (pts, McNemar p) | per client (%) "
             f"| LLM final (%) | LLM vs {BASELINE} | LLM change (pts){lk} "
             "| own-domain share of allocations (%) | distinct samples a client was given | note |",
             "|---|---|---|---|---|---|---|" + ("---|" if lacked else "") + "---|---|---|"]
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
        vs_slm = _vs(paired(items, m, BASELINE)) if m != BASELINE else "(baseline)"
        vs_llm = _vs(paired(items, m, BASELINE, llm=True)) if m != BASELINE else "(baseline)"
        lk_s = ""
        if lacked:
            key = f"acc_{lacked}"
            vals = [r[key] for r in rows if r["method"] == m and r["subject"] == LLM and r["round"] == last
                    and r.get(key) is not None]
            lk_s = f" | {_ms(vals)}"
        lines.append(f"| {m} | {_ms(list(slm.values()))} | {vs_slm} | {per_s} | {_ms(list(llm.values()))} | "
                     f"{vs_llm} | {100 * np.mean(delta):+.1f}{lk_s} | {share_s} | {distinct_s} | {METHODS[m].note} |")
    return "\n".join(lines)


def premise_check(rows: list[dict[str, Any]]) -> str:
    """The scenario's premise, from the oracles alone (issue 13): the same-budget oracle beats
    random by >= 6 points on mean final SLM accuracy, and the LLM oracle raises the LLM by >= 3
    points on the domain it never saw against the one-direction control. '' without the cells."""
    rows, items = _split(rows)
    have = {r["method"] for r in rows}
    lines = []
    counted, apart = counted_clients(rows)
    if {"oracle", BASELINE} <= have:
        a, b = _final(rows, "oracle", counted)[0], _final(rows, BASELINE, counted)[0]
        res = paired(items, "oracle", BASELINE, clients=counted)
        d = 100 * (np.mean(list(a.values())) - np.mean(list(b.values())))
        p = f"McNemar p = {res.p:.2g} over {res.n} paired items" if res else "no paired items"
        over = f" over {', '.join(counted)} (the clients whose domain the LLM knows)" if apart else ""
        lines.append(f"- same-budget oracle against {BASELINE}, mean final SLM accuracy{over}: {_ms(list(a.values()))} "
                     f"against {_ms(list(b.values()))} (mean ± std over seeds): {d:+.1f} points, {p}; "
                     f"target >= +6: **{'met' if d >= 6 and res and res.p < 0.05 else 'missed'}**")
        for c in apart:  # reported, not counted: no LLM path of the domain it holds is right
            a, b = _final(rows, "oracle", [c])[0], _final(rows, BASELINE, [c])[0]
            res = paired(items, "oracle", BASELINE, clients=[c])
            d = 100 * (np.mean(list(a.values())) - np.mean(list(b.values())))
            p = f"McNemar p = {res.p:.2g} over {res.n} paired items" if res else "no paired items"
            lines.append(f"- not counted, {c} (holds the domain the LLM never saw): oracle {_ms(list(a.values()))} "
                         f"against {BASELINE} {_ms(list(b.values()))}: {d:+.1f} points, {p}")
    lacked = next((r["lacked"] for r in rows if r.get("lacked")), None)
    if lacked and {"oracle", "oracle_one_way"} <= have:
        key = f"acc_{lacked}"

        def final(m: str) -> dict[int, float]:
            last = max(r["round"] for r in rows if r["method"] == m)
            return {r["seed"]: r[key] for r in rows if r["method"] == m and r["subject"] == LLM
                    and r["round"] == last and r.get(key) is not None}

        a, b = final("oracle"), final("oracle_one_way")
        res = paired(items, "oracle", "oracle_one_way", llm=True, domain=lacked)
        d = 100 * (np.mean(list(a.values())) - np.mean(list(b.values()))) if a and b else float("nan")
        p = f"McNemar p = {res.p:.2g} over {res.n} paired items" if res else "no paired items"
        lines.append(f"- LLM oracle (every SLM-right-LLM-wrong path) against the one-direction control, LLM "
                     f"accuracy on {lacked} (never seen): {_ms(list(a.values()))} against {_ms(list(b.values()))}: "
                     f"{d:+.1f} points, {p}; target >= +3: "
                     f"**{'met' if d >= 3 and res and res.p < 0.05 else 'missed'}**")
    return ("Premise check (oracles only):\n\n" + "\n".join(lines)) if lines else ""


def _lacked_final(rows: list[dict[str, Any]], method: str, lacked: str) -> dict[int, float]:
    """Per seed: the LLM's final accuracy on the domain it never saw."""
    key = f"acc_{lacked}"
    mine = [r for r in rows if r["method"] == method and r["subject"] == LLM and r.get(key) is not None]
    last = max((r["round"] for r in mine), default=0)
    return {r["seed"]: r[key] for r in mine if r["round"] == last}


def method_check(rows: list[dict[str, Any]]) -> str:
    """Issue 13's "must show" for each LaDa variant, from the same paired items as the table: its
    gain over random on the counted clients (McNemar, pooled over clients and seeds), the share of
    the random-to-oracle gap it closes (target: p < 0.05 and at least half), and the LLM on the
    domain it never saw against the one-direction control (target: +3, p < 0.05). '' without the cells."""
    rows, items = _split(rows)
    have = {r["method"] for r in rows}
    counted, _ = counted_clients(rows)
    lacked = next((r["lacked"] for r in rows if r.get("lacked")), None)
    if BASELINE not in have:
        return ""
    b = _final(rows, BASELINE, counted)[0]
    gap = None
    if "oracle" in have:
        o = _final(rows, "oracle", counted)[0]
        gap = 100 * (np.mean(list(o.values())) - np.mean(list(b.values())))
    lines = []
    for m in [m for m in METHODS if m.startswith("lada") and m in have and m != "lada_one_way"]:
        a = _final(rows, m, counted)[0]
        res = paired(items, m, BASELINE, clients=counted)
        d = 100 * (np.mean(list(a.values())) - np.mean(list(b.values())))
        p = f"McNemar p = {res.p:.2g} over {res.n} paired items ({res.a_only} against {res.b_only} discordant)" \
            if res else "no paired items"
        share = f"; closes {d / gap:+.0%} of the oracle's {gap:+.1f}-point gap" if gap and gap > 0 else ""
        ok = d > 0 and res is not None and res.p < 0.05 and gap is not None and gap > 0 and d >= gap / 2
        lines.append(f"- {m} against {BASELINE} over {', '.join(counted)}: {_ms(list(a.values()))} against "
                     f"{_ms(list(b.values()))}: {d:+.1f} points, {p}{share}; target (p < 0.05, at least half the gap): "
                     f"**{'met' if ok else 'missed'}**")
        if lacked and "lada_one_way" in have and m == "lada":
            la, lb = _lacked_final(rows, m, lacked), _lacked_final(rows, "lada_one_way", lacked)
            res = paired(items, m, "lada_one_way", llm=True, domain=lacked)
            d = 100 * (np.mean(list(la.values())) - np.mean(list(lb.values()))) if la and lb else float("nan")
            p = f"McNemar p = {res.p:.2g} over {res.n} paired items" if res else "no paired items"
            lines.append(f"- {m}'s LLM on {lacked} (never seen) against lada_one_way: {_ms(list(la.values()))} "
                         f"against {_ms(list(lb.values()))}: {d:+.1f} points, {p}; target (+3, p < 0.05): "
                         f"**{'met' if d >= 3 and res and res.p < 0.05 else 'missed'}**")
    return ("LaDa against the targets (issue 13):\n\n" + "\n".join(lines)) if lines else ""


def plot(rows: list[dict[str, Any]], methods: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def series(m: str, key: str, subj_filter: Any) -> tuple[list[int], np.ndarray, np.ndarray]:
        """Rounds, the mean over seeds of each seed's mean over subjects, and its std over seeds."""
        by: dict[int, dict[int, list[float]]] = {}
        for r in rows:
            if r["method"] == m and subj_filter(r["subject"]) and r.get(key) is not None:
                by.setdefault(r["round"], {}).setdefault(r["seed"], []).append(r[key])
        xs = sorted(by)
        per_seed = [[float(np.mean(v)) for v in by[x].values()] for x in xs]
        return xs, np.array([np.mean(v) for v in per_seed]), np.array([np.std(v) for v in per_seed])

    def figure(fname: str, panels: list[tuple[str, Any, str, str]]) -> None:
        """One PNG, one panel per (metric, subject filter, title, y label), a line per method with a band
        of ±1 std over seeds (the seeds' spread, not the test items': the paired tests are in the table)."""
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5))
        for ax, (key, subj, title, ylabel) in zip(axes, panels):
            for k, m in enumerate(methods):  # LaDa variants dashed, baselines solid; 20 distinct colours
                style = "--" if m.startswith("lada_") else "-"
                xs, mean, std = series(m, key, subj)
                if not xs:
                    continue
                colour = plt.cm.tab20(k % 20)
                ax.plot(xs, mean, style, marker="o", label=m, color=colour, linewidth=2.5 if m == "lada" else 1.5)
                ax.fill_between(xs, mean - std, mean + std, color=colour, alpha=0.12, linewidth=0)
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
    if any(r.get("in_domain") is not None for r in rows):
        panels = [("in_domain", slm, "own-domain share of a client's allocation", "share"),
                  ("distinct", slm, "distinct samples a client was given so far", "samples")]
        if any(r.get("given_steps") is not None for r in rows):
            panels.append(("given_steps", slm, "mean difficulty (steps) of a client's allocation", "steps"))
        figure("allocation.png", panels)
    figure("reward_overlap.png", [
        ("reward", slm, "client reward (learning gain, 0.5 = none)", "reward"),
        ("overlap", llm, "allocation overlap between clients (Jaccard)", "overlap"),
    ])
