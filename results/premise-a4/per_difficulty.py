"""Premise check: per-difficulty final accuracy of each client and per-domain accuracy of the LLM,
from a ``lada experiment`` output's ``items.jsonl`` (the bits are in test-set order; the test sets
are a pure function of the run's config). It says where an oracle's gain is, and where none is.

    .venv/bin/python results/premise-a4/per_difficulty.py results/premise-a4/s0
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

from lada.common.config import LadaConfig
from lada.common.scenario import scenario_splits


def main(out: Path) -> None:
    cfg = LadaConfig.load(out / "config.yaml", env=False)
    sp = scenario_splits(cfg.data)
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines() if line.strip()]
    acc: dict[tuple[str, str, int], dict[int, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["subject"] == "llm":
            continue
        test = sp.client_test[r["subject"]]
        for s, c in zip(test, r["correct"]):
            acc[(r["subject"], r["method"], r["round"])][s.difficulty].append(c == "1")
    print("| client (domain) | method | round | accuracy per difficulty 1..5 (%) |\n|---|---|---|---|")
    for (subj, m, rnd), by in sorted(acc.items()):
        lv = " / ".join(f"{100 * sum(v) / len(v):.0f}" for _, v in sorted(by.items()))
        print(f"| {subj} ({cfg.data.client_domains[subj]}) | {m} | {rnd} | {lv} |")
    print("\n| LLM | method | round | accuracy per domain (%) |\n|---|---|---|---|")
    for r in sorted((r for r in rows if r["subject"] == "llm"), key=lambda r: (r["method"], r["round"], r["seed"])):
        by = defaultdict(list)
        for d, c in zip(r["domains"], r["correct"]):
            by[d].append(c == "1")
        lv = ", ".join(f"{d} {100 * sum(v) / len(v):.1f}" for d, v in sorted(by.items()))
        print(f"| seed {r['seed']} | {r['method']} | {r['round']} | {lv} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
