"""Premise check attempt 4: does an SLM learn its own domain at all? (docs/results.md, Premise check)

The SLM is fine-tuned with the round's own procedure (``Learner.learn_round``, local SFT only) on
N *worked* samples of its domain (of 1,000 private ones) at difficulty <= its capacity (what the
same-budget oracle sends it), for R rounds; test accuracy per difficulty after each round on a stratified prefix of its
test set. A model that stays flat here cannot show the premise whatever it is given.

    .venv/bin/python results/premise-a4/learning_curve.py --model embedded:slm-tiny --domain arith
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from pathlib import Path

from lada.client.app import ClientApp
from lada.common.config import LadaConfig
from lada.common.models import spec_of

CONFIG = Path(__file__).resolve().parents[2] / "benchmarks" / "premise.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--domain", required=True)
    ap.add_argument("--n", type=int, default=150, help="worked samples at difficulty <= capacity")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--n-test", type=int, default=250)
    ap.add_argument("--local-steps", type=int, default=30, help="train.local_steps: SGD steps per round")
    a = ap.parse_args()
    cap = spec_of(a.model).pretrain_max_steps
    over = {"data.private_solutions": True, "data.client_domains": {"c": a.domain},
            "models.clients": {"c": a.model}, "data.n_test_between": a.n_test, "data.n_train": 1000}
    over["train.local_steps"] = a.local_steps
    cfg = LadaConfig.load(CONFIG, overrides=over, env=False)
    t = time.perf_counter()
    app = ClientApp(cfg, "c")
    train = [s for s in app.train_set if s.difficulty <= cap][: a.n]
    test = app.test_set[: a.n_test]
    for r in range(a.rounds + 1):
        if r:
            app.learner.learn_round(train, [])
        _, _, correct = app.learner.evaluate(test)
        by = defaultdict(list)
        for s, c in zip(test, correct):
            by[s.difficulty].append(bool(c))
        lv = " ".join(f"{k}:{100 * sum(v) / len(v):.0f}" for k, v in sorted(by.items()))
        print(f"{a.model} {a.domain} cap={cap} n={len(train)} round {r}: {100 * sum(correct) / len(correct):.1f} % "
              f"(per steps {lv}) [{time.perf_counter() - t:.0f}s]", flush=True)


if __name__ == "__main__":
    main()
