#!/usr/bin/env bash
# System packages the test suite needs: headless Chromium for the dashboard tests; a Compose
# implementation, openssl and iproute2 for the deploy tests (tests/system/test_deploy.py, tests/system/test_multihost.py).
# PostgreSQL: scripts/start-postgres.sh.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: /usr/bin/chromium missing and not root; browser tests will be skipped" >&2
  fi
fi
missing=()
if ! { command -v docker >/dev/null && docker compose version >/dev/null 2>&1; } && ! command -v docker-compose >/dev/null; then
  missing+=(docker-compose)  # validates deploy/compose*.yaml (`docker-compose config`); no engine needed
fi
command -v openssl >/dev/null || missing+=(openssl)
command -v ip >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  else
    echo "warning: missing ${missing[*]} and not root; some deploy tests will be skipped" >&2
  fi
fi
