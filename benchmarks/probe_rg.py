"""Base accuracy of the packaged pretrained models on reasoning-gym families (issue 14 item 5).

Picks the families a CPU run can show learning on: a family both base models score 0 on gives
the LLM no correct path to allocate and the SLM nothing to start from. Items are the held-out
test items a client on that family would get (``rg_tasks.client_split``), graded by the
family's own scorer; each model reads its own prompt format (``models.prompts`` auto).

    .venv/bin/python benchmarks/probe_rg.py --n 24 --families basic_arithmetic chain_sum leg_counting
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch
from lada.common.config import ModelsConfig
from lada.common.models import load_for, resolve_model
from lada.common.rg_tasks import client_split
from lada.common.textlm import evaluate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["pypi:gemma3-270m", "pypi:smollm2"])
    ap.add_argument("--families", nargs="+", default=["basic_arithmetic", "chain_sum", "leg_counting", "gsm_symbolic"],
                    help="rg: domains without the prefix (a ?key=value spec works too)")
    ap.add_argument("--n", type=int, default=24, help="test items per family")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--show", type=int, default=0, help="print this many paths per cell")
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    items = {f: client_split(f"rg:{f}", "probe", 1, a.n, a.seed)[1] for f in a.families}
    rows = []
    for name in a.models:
        model, tok = load_for(name, resolve_model(name, ModelsConfig()), device="cpu")
        for fam, test in items.items():
            t0 = time.perf_counter()
            acc, paths, correct = evaluate(model, tok, test, a.max_new_tokens, a.batch_size, sort=True)
            se = math.sqrt(max(acc * (1 - acc), 1e-9) / len(test))
            rows.append({"model": name, "family": fam, "n": len(test), "correct": int(sum(correct)),
                         "acc": round(acc, 3), "se": round(se, 3), "s": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]), flush=True)
            for p, s in list(zip(paths, test))[: a.show]:
                print(f"    [{s.answer}] {p[:160]!r}", flush=True)
        del model
    print(f"load average: {os.getloadavg()}")


if __name__ == "__main__":
    main()
