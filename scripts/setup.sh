#!/usr/bin/env bash
# Create .venv and install LaDa with everything it needs (idempotent).
# torch is pinned first to the CPU build; a bare `torch` would pull a multi-GB CUDA build.
# One line per step with its time, so a first install is never a silent wait; pip's own
# output goes to .venv/setup.log and its tail is shown if a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# setuptools' notice that every editable install with a package_dir mapping gets (the
# project's warnings are fixed in pyproject.toml; this one is informational only)
export PYTHONWARNINGS="ignore:Editable installation"
log=.venv/setup.log

step() {  # step "what" cmd...: run cmd, print how long it took, show the log's tail on failure
  local what=$1 t0=$SECONDS
  shift
  printf '[setup] %s ...\n' "$what"
  if ! "$@" >>"$log" 2>&1; then
    printf '[setup] FAILED: %s; last lines of %s:\n' "$what" "$log" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  printf '[setup]   done in %ds\n' $((SECONDS - t0))
}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  echo "[setup] created .venv with $("$PY" --version)"
fi
stamp=.venv/.lada-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "${1:-}" = "--force" ]; then
  : >"$log"
  t_all=$SECONDS
  step "upgrading pip" .venv/bin/python -m pip install --upgrade pip
  step "installing torch 2.13.0, CPU build (about 200 MB the first time)" \
    .venv/bin/python -m pip install "torch==2.13.0"
  step "installing lada and its dependencies (transformers, grpcio, sqlalchemy, fastapi, playwright, ...)" \
    .venv/bin/python -m pip install -e ".[dev]"
  touch "$stamp"
  echo "[setup] installed in $((SECONDS - t_all))s (full pip output: $log)"
fi
