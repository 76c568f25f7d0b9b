"""Generation benchmark: the LLM host's batched path generation against plain ``model.generate``.

    .venv/bin/python benchmarks/bench_generate.py [--n 500] [--repeats 3] [--config my.yaml]

Same model, same prompts, greedy, same batch size and ``max_new_tokens``, in one process, the
variants interleaved in each repeat so load on the shared machine hits them alike:

* ``plain``: a plain transformers model holding the same weights (the LoRA adapter merged and
  unloaded into a copy), ``model.generate`` over left-padded batches in input order;
* ``host``: ``LLMHost.learner.paths`` as the server's teach phase runs it (the config's knobs:
  merged adapter for no-grad work, batches sorted by length);
* ``host, knobs off``: the same with ``lora.merge_inference=false`` and ``train.sort_by_length=false``
  (the unmerged adapter, batches in input order: how teach ran before issue 17).

The adapter is given non-zero weights first (its B matrices start at zero, where merged and
unmerged are trivially the same model). Prints the median seconds of each variant and the ratio
of plain's time to each host variant's (> 1: the host generates faster), and checks that every
variant wrote the same paths. Exit code 1 if the paths differ.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time

import torch
from lada.common.config import LadaConfig
from lada.common.scenario import scenario_splits
from lada.common.textlm import _prompt_ids
from lada.server.llm_host import LLMHost


def plain_generate(model: torch.nn.Module, tok: object, questions: list[str], max_new_tokens: int,
                   batch_size: int) -> list[str]:
    """What a user of transformers writes: left-padded batches in input order, ``generate``, decode."""
    out = []
    n_ctx = model.config.max_position_embeddings
    room = max(1, n_ctx - max_new_tokens)
    with torch.inference_mode():
        for i in range(0, len(questions), batch_size):
            prompts = [_prompt_ids(tok, q)[-room:] for q in questions[i : i + batch_size]]
            width = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), width), tok.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for j, p in enumerate(prompts):
                ids[j, width - len(p):] = torch.tensor(p)
                mask[j, width - len(p):] = 1
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
            for row in gen[:, width:].tolist():
                if tok.eos_token_id in row:
                    row = row[: row.index(tok.eos_token_id)]
                out.append(tok.decode(row, skip_special_tokens=True).strip())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML config (default: the embedded demo scenario)")
    ap.add_argument("--n", type=int, default=500, help="public questions to generate paths for")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the server runs run.threads=1)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.repeats < 1 or args.threads < 1:
        ap.error("--n, --repeats and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    cfg = LadaConfig.load(args.config, env=False)
    host = LLMHost(cfg)
    learner = host.learner
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in learner.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    plain = copy.deepcopy(learner.model).merge_and_unload()
    plain.eval()
    qs = [s.question for s in scenario_splits(cfg.data).public][: args.n]
    c = cfg.train
    on = (cfg.lora.merge_inference, c.sort_by_length)

    def host_paths(merge: bool, sort: bool) -> list[str]:
        learner.merge_inference, learner.train_cfg.sort_by_length = merge, sort
        return learner.paths(qs)

    variants = {
        "plain model.generate": lambda: plain_generate(plain, learner.tok, qs, c.max_new_tokens, c.gen_batch_size),
        "host (knobs on)": lambda: host_paths(*on),
        "host (knobs off)": lambda: host_paths(False, False),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    outs: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for k, fn in variants.items():
            t0 = time.perf_counter()
            outs[k] = fn()
            times[k].append(time.perf_counter() - t0)
    base = statistics.median(times["plain model.generate"])
    tokens = sum(len(learner.tok(p, add_special_tokens=False)["input_ids"]) for p in outs["plain model.generate"])
    print(f"{len(qs)} prompts, {cfg.models.llm}, batch {c.gen_batch_size}, max_new_tokens {c.max_new_tokens}, "
          f"greedy, {args.threads} thread(s), {args.repeats} interleaved repeats; {tokens} tokens written")
    print(f"{'variant':<22} {'median s':>9} {'min s':>7} {'paths/s':>8} {'ratio vs plain':>15}")
    for k, ts in times.items():
        med = statistics.median(ts)
        print(f"{k:<22} {med:>9.2f} {min(ts):>7.2f} {len(qs) / med:>8.1f} {base / med:>14.2f}x")
    same = {k: sum(a != b for a, b in zip(v, outs["plain model.generate"])) for k, v in outs.items()}
    print("paths differing from plain: " + ", ".join(f"{k} {v}" for k, v in same.items()))
    return 1 if any(same.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
