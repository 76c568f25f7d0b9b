#!/bin/sh
# Entrypoint of the LaDa images: make the models available, then run the command (`lada ...`).
#
# Nothing is downloaded at run time (HF_HUB_OFFLINE=1): the embedded models are
#  1. copied from the image when it was built with PREBUILD_MODELS=1 ($LADA_BAKED_MODELS,
#     default /opt/lada/models), else
#  2. built at first start into the models cache on the shared volume ($LADA_MODELS__CACHE_DIR,
#     default /data/models) by `lada models build`. Each model is built under a file lock, so
#     containers starting together build it once and the others wait and reuse it.
# A hub model must be a folder you mount (--models.llm /models/my-llm).
#
#   LADA_BUILD_MODELS  auto (default: `lada server` builds every model of the config before it
#                      starts; a client builds only its own model, when it starts) | all | none
#   LADA_DB_URL_FILE   file holding the database URL (a Docker secret: keeps the password out of
#                      the environment and the compose file); sets LADA_SERVER__DB
set -eu

if [ -n "${LADA_DB_URL_FILE:-}" ]; then
  LADA_SERVER__DB=$(cat "$LADA_DB_URL_FILE")
  export LADA_SERVER__DB
fi

cache=${LADA_MODELS__CACHE_DIR:-/data/models}
mkdir -p "$cache"

# 1. models baked into the image seed the cache (each folder copied whole, then renamed into place)
baked=${LADA_BAKED_MODELS:-/opt/lada/models}
if [ -d "$baked" ]; then
  for src in "$baked"/*/; do
    [ -d "$src" ] || continue
    name=$(basename "$src")
    [ -e "$cache/$name" ] && continue
    tmp="$cache/.$name.seed-$$"
    if cp -R "$src" "$tmp" && mv -T "$tmp" "$cache/$name" 2>/dev/null; then :; else rm -rf "$tmp"; fi
  done
fi

# 2. build what the config still lacks (the same --config the command runs with, if any)
config=""
prev=""
for arg in "$@"; do
  [ "$prev" = "--config" ] && config="--config=$arg"
  case "$arg" in --config=*) config="$arg" ;; esac
  prev=$arg
done
mode=${LADA_BUILD_MODELS:-auto}
if [ "$mode" = "auto" ]; then
  if [ "${1:-}" = "lada" ] && [ "${2:-}" = "server" ]; then mode=all; else mode=none; fi
fi
if [ "$mode" = "all" ]; then
  # shellcheck disable=SC2086 # $config is one word or empty
  lada models build $config
fi

exec "$@"
