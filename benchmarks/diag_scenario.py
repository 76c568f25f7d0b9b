"""Scenario diagnostics behind issue 3: can the embedded models learn from what a round can give them?

Three measurements on the experiment scenario (``benchmarks/experiment.yaml``), no federation:

* ``slm``: a client's SLM fine-tuned (the round's ``Learner.learn_round``, local SFT only) for 5
  rounds on its first N *worked* private samples; local test accuracy per round. It tells how many
  worked examples of its domain a tiny SLM needs before it generalises -- and so how much a
  budget of B public paths per round can move it.
* ``llm``: the LLM fine-tuned on its server mix of N samples for 3 rounds (no SLM paths), held-out
  accuracy per domain per round. It tells whether the server's own data alone makes the LLM drift.

    .venv/bin/python benchmarks/diag_scenario.py slm --client client-2 --n 0,60,300,1000
    .venv/bin/python benchmarks/diag_scenario.py llm --n 500,5000
    .venv/bin/python benchmarks/diag_scenario.py channel --client all --seeds 0,1,2
    .venv/bin/python benchmarks/diag_scenario.py novel

* ``channel``: each client's SLM on the answer-only scenario, self-training locally, receiving B
  correct LLM paths a round (the round's loss: contrast against its own path when that is wrong),
  picked at random or only from its own domain (the best a filter could do for domain), with or
  without keeping earlier rounds' paths (``distill.retain``); final accuracy after 5 rounds. What
  an allocation policy can move at this budget. ``domain-all`` sends all correct own-domain paths
  every round, whatever the budget: the ceiling of what the public pool holds for a client.
* ``novel``: the SLM -> LLM direction's ceiling. The public samples where a client's SLM is right
  and the LLM wrong are all an SLM can teach it; the LLM is fine-tuned for 5 rounds on its own mix
  alone, then with every such SLM path added each round (contrast against its own wrong path).
"""

from __future__ import annotations

import argparse
import random
import sys
from collections import Counter
from pathlib import Path

import torch
from lada.client.app import ClientApp
from lada.common.config import LadaConfig
from lada.common.data import is_correct
from lada.common.learner import Pair
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


def channel(clients: list[str], rounds: int, modes: list[str], seeds: list[int]) -> None:
    """Mode ``pick[+keep]``: pick = none | random | domain | domain-all; keep = distill.retain.

    ``domain-all`` sends every correct own-domain path every round, budget aside: the most the
    public pool holds for a client, so a ceiling for any allocation policy of any budget."""
    base = LadaConfig.load(CONFIG, env=False)
    public = scenario_splits(base.data).public
    texts = LLMHost(base).learner.paths([s.question for s in public])
    ok = [i for i, (s, p) in enumerate(zip(public, texts)) if is_correct(p, s.answer)]
    print(f"LLM paths correct on {len(ok)}/{len(public)} public samples; B = {base.run.budget} a round")
    print(f"| picks / keep | {' | '.join(clients)} | mean | (round {rounds}, %, mean over seeds {seeds}) |")
    print("|---" * (len(clients) + 2) + "|---|")
    for mode in modes:
        pick, _, keep = mode.partition("+")
        final: dict[str, list[float]] = {c: [] for c in clients}
        for seed in seeds:
            cfg = LadaConfig.load(CONFIG, overrides={"distill.retain": bool(keep), "run.seed": seed}, env=False)
            for client in clients:
                app = ClientApp(cfg, client)
                rng = random.Random(seed)
                pool = [i for i in ok if not pick.startswith("domain") or public[i].domain == app.domain]
                for _ in range(rounds):
                    n = len(pool) if pick == "domain-all" else min(cfg.run.budget, len(pool))
                    idx = [] if pick == "none" else rng.sample(pool, n)
                    own = app.learner.paths([public[i].question for i in idx])  # y-: its own path when wrong
                    pairs = [Pair(public[i].id, public[i].question, texts[i],
                                  "" if is_correct(o, public[i].answer) else o) for i, o in zip(idx, own)]
                    app.learner.learn_round(app.local_targets(), pairs)
                final[client].append(app.test_accuracy())
        means = [100 * sum(v) / len(v) for v in final.values()]
        print(f"| {mode} | {' | '.join(f'{m:.1f}' for m in means)} | {sum(means) / len(means):.1f} | |", flush=True)


def novel(clients: list[str], rounds: int) -> None:
    base = LadaConfig.load(CONFIG, env=False)
    splits = scenario_splits(base.data)
    public, test, mix = splits.public, splits.server_test, server_train_set(base.data)
    qs = [s.question for s in public]
    host = LLMHost(base)
    llm_paths = host.learner.paths(qs)
    llm_ok = [is_correct(p, s.answer) for s, p in zip(public, llm_paths)]
    print(f"LLM right on {sum(llm_ok)}/{len(public)} public samples")
    print("| client | SLM right | SLM right, LLM wrong |\n|---|---|---|")
    pairs: dict[str, Pair] = {}
    for client in clients:
        paths = ClientApp(base, client).learner.paths(qs)
        ok = [is_correct(p, s.answer) for s, p in zip(public, paths)]
        new = [i for i, o in enumerate(ok) if o and not llm_ok[i]]
        for i in new:
            pairs.setdefault(public[i].id, Pair(public[i].id, public[i].question, paths[i], llm_paths[i]))
        print(f"| {client} | {sum(ok)} | {len(new)} |", flush=True)
    print(f"distinct samples an SLM can teach the LLM: {len(pairs)}\n")
    print(f"| LLM fine-tuned on | held-out accuracy, rounds 0..{rounds} (%) |\n|---|---|")
    for what, given in (("its own mix", []), ("its own mix + every SLM-right-LLM-wrong path", list(pairs.values()))):
        host = LLMHost(base)
        accs = [host.evaluate(test)]
        for _ in range(rounds):
            host.learn(mix, given)
            accs.append(host.evaluate(test))
        print(f"| {what} | {' -> '.join(f'{100 * a:.1f}' for a in accs)} |", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["slm", "llm", "channel", "novel"])
    ap.add_argument("--modes", default="none,random,random+keep,domain,domain+keep")
    ap.add_argument("--seeds", default="0", help="channel: comma-separated run seeds")
    ap.add_argument("--client", default="client-2")
    ap.add_argument("--n", default=None, help="comma-separated sizes")
    ap.add_argument("--rounds", type=int, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.what == "slm":
        slm(args.client, [int(x) for x in (args.n or "0,60,300,1000").split(",")], args.rounds or 5)
    elif args.what == "novel":
        novel(["client-1", "client-2", "client-3"], args.rounds or 5)
    elif args.what == "channel":
        clients = ["client-1", "client-2", "client-3"] if args.client == "all" else [args.client]
        channel(clients, args.rounds or 5, args.modes.split(","), [int(x) for x in args.seeds.split(",")])
    else:
        llm([int(x) for x in (args.n or "500,5000").split(",")], args.rounds or 3)
    return 0


if __name__ == "__main__":
    sys.exit(main())
