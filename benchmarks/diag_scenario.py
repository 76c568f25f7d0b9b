"""Scenario diagnostics behind issue 3: can the embedded models learn from what a round can give them?

Two measurements on the experiment scenario (``benchmarks/experiment.yaml``), no federation:

* ``slm``: a client's SLM fine-tuned (the round's ``Learner.learn_round``, local SFT only) for 5
  rounds on its first N *worked* private samples; local test accuracy per round. It tells how many
  worked examples of its domain a tiny SLM needs before it generalises -- and so how much a
  budget of B public paths per round can move it.
* ``llm``: the LLM fine-tuned on its server mix of N samples for 3 rounds (no SLM paths), held-out
  accuracy per domain per round. It tells whether the server's own data alone makes the LLM drift.

    .venv/bin/python benchmarks/diag_scenario.py slm --client client-2 --n 0,60,300,1000
    .venv/bin/python benchmarks/diag_scenario.py llm --n 500,5000
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import torch
from lada.client.app import ClientApp
from lada.common.config import LadaConfig
from lada.common.scenario import scenario_splits, server_train_set
from lada.server.llm_host import LLMHost

CONFIG = Path(__file__).resolve().parent / "experiment.yaml"


def slm(client: str, sizes: list[int], rounds: int) -> None:
    print(f"| worked samples | {client} test accuracy, rounds 0..{rounds} (%) |\n|---|---|")
    for n in sizes:
        cfg = LadaConfig.load(CONFIG, overrides={"data.private_solutions": True}, env=False)
        app = ClientApp(cfg, client)
        accs = [app.test_accuracy()]
        for _ in range(rounds if n else 0):
            app.learner.learn_round(app.train_set[:n], [])
            accs.append(app.test_accuracy())
        print(f"| {n} | {' -> '.join(f'{100 * a:.1f}' for a in accs)} |", flush=True)


def llm(sizes: list[int], rounds: int) -> None:
    print("| server mix | round | held-out (%) | per domain (%) |\n|---|---|---|---|")
    for n in sizes:
        cfg = LadaConfig.load(CONFIG, overrides={"data.n_server_train": n}, env=False)
        test = scenario_splits(cfg.data).server_test
        host, mix = LLMHost(cfg), server_train_set(cfg.data)
        for t in range(rounds + 1):
            if t:
                host.learn(mix, [])
            acc, _, ok = host.learner.evaluate(test)
            right, seen = Counter(), Counter()
            for s, o in zip(test, ok):
                seen[s.domain] += 1
                right[s.domain] += o
            doms = ", ".join(f"{d} {100 * right[d] / seen[d]:.0f}" for d in sorted(seen))
            print(f"| {n} | {t} | {100 * acc:.1f} | {doms} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["slm", "llm"])
    ap.add_argument("--client", default="client-2")
    ap.add_argument("--n", default=None, help="comma-separated sizes")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.what == "slm":
        slm(args.client, [int(x) for x in (args.n or "0,60,300,1000").split(",")], args.rounds or 5)
    else:
        llm([int(x) for x in (args.n or "500,5000").split(",")], args.rounds or 3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
