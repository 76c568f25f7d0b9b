#!/usr/bin/env bash
# A throw-away PostgreSQL server for the test suite (idempotent).
#
# Installs PostgreSQL with apt when it is missing (root only), starts a private
# cluster listening on 127.0.0.1 only, creates the role `lada` (password auth,
# CREATEDB: each test makes and drops its own database) and the database `lada`,
# and writes the SQLAlchemy URL to .lada/test-pg-url (mode 600), which the tests
# read (LADA_TEST_PG_URL in the environment wins). Running it again reuses the
# running cluster. `scripts/start-postgres.sh stop` stops it.
#
# The cluster is private to this checkout: its folder and port derive from a hash
# of the checkout's path, so two checkouts testing at once never share one, and
# the role's password is only ever set in a cluster this checkout created.
#
#   LADA_PG_DIR   cluster folder    [${TMPDIR:-/tmp}/lada-pg-<hash>]
#   LADA_PG_PORT  TCP port          [55432 + <hash> mod 1000]
#
# Without root and without PostgreSQL installed it only warns (the PostgreSQL
# tests then skip), except under CI=true, where it fails: CI must run them.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOUT=$(pwd -P)
HASH=$(printf '%s' "$CHECKOUT" | sha256sum | cut -c1-8)
PGDIR=${LADA_PG_DIR:-${TMPDIR:-/tmp}/lada-pg-$HASH}
PORT=${LADA_PG_PORT:-$((55432 + 0x$HASH % 1000))}
OWNER_FILE=$PGDIR/lada-checkout  # which checkout created the cluster (and owns the role's password)
URL_FILE=.lada/test-pg-url

fail() {
  echo "start-postgres: $*" >&2
  if [ "${CI:-}" = "true" ]; then exit 1; fi
  echo "start-postgres: continuing without PostgreSQL (its tests will be skipped)" >&2
  exit 0
}

pg_bin() {  # the newest installed server's bin folder (Debian keeps them versioned)
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}

BIN=$(pg_bin || true)
if [ -z "$BIN" ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "start-postgres: installing postgresql (apt)" >&2
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
      || fail "apt-get install postgresql failed"
    BIN=$(pg_bin) || fail "postgresql installed but initdb not found"
  else
    fail "PostgreSQL is not installed (apt-get install postgresql, as root)"
  fi
fi

# PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` user.
if [ "$(id -u)" = "0" ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres
  as_pg() { runuser -u postgres -- "$@"; }
  SUPER=postgres
else
  as_pg() { "$@"; }
  SUPER=$(id -un)
fi

if [ "${1:-}" = "stop" ]; then
  [ -f "$PGDIR/PG_VERSION" ] && as_pg "$BIN/pg_ctl" -D "$PGDIR" -m fast stop || true
  exit 0
fi

if [ ! -f "$PGDIR/PG_VERSION" ]; then
  rm -rf "$PGDIR"
  mkdir -p "$PGDIR"
  [ "$(id -u)" = "0" ] && chown postgres: "$PGDIR"
  chmod 700 "$PGDIR"
  # local socket: peer (only the cluster's owner); TCP: password (scram) only
  as_pg "$BIN/initdb" -D "$PGDIR" -U "$SUPER" --auth-local=peer --auth-host=scram-sha-256 -E UTF8 \
    --locale=C.UTF-8 >/dev/null || fail "initdb failed"
  printf '%s\n' "$CHECKOUT" >"$OWNER_FILE"
  cat >>"$PGDIR/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$PGDIR'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
fi

psql_pg() { as_pg "$BIN/psql" -h "$PGDIR" -p "$PORT" -U "$SUPER" -d postgres -v ON_ERROR_STOP=1 -qAt "$@"; }

if ! as_pg "$BIN/pg_ctl" -D "$PGDIR" status >/dev/null 2>&1; then
  as_pg "$BIN/pg_ctl" -D "$PGDIR" -l "$PGDIR/server.log" -w -t 60 start >/dev/null \
    || { tail -20 "$PGDIR/server.log" >&2 || true; fail "pg_ctl start failed"; }
fi
for _ in $(seq 1 30); do
  "$BIN/pg_isready" -h 127.0.0.1 -p "$PORT" -q && break
  sleep 1
done
"$BIN/pg_isready" -h 127.0.0.1 -p "$PORT" -q || fail "PostgreSQL on 127.0.0.1:$PORT is not ready"

mkdir -p .lada
PASS=""
if [ -f "$URL_FILE" ]; then
  PASS=$(sed -n 's#^postgresql+psycopg://lada:\([^@]*\)@127\.0\.0\.1:'"$PORT"'/lada$#\1#p' "$URL_FILE")
fi
[ -n "$PASS" ] || PASS=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
if [ "$(psql_pg -c "SELECT 1 FROM pg_roles WHERE rolname = 'lada'")" = "1" ]; then
  OWNER=$(cat "$OWNER_FILE" 2>/dev/null || true)
  if [ -n "$OWNER" ] && [ "$OWNER" != "$CHECKOUT" ]; then  # its password is another checkout's: keep it
    fail "the cluster in $PGDIR belongs to $OWNER; set LADA_PG_DIR and LADA_PG_PORT to a cluster of your own"
  fi
  psql_pg -c "ALTER ROLE lada WITH LOGIN CREATEDB PASSWORD '$PASS'"
else
  psql_pg -c "CREATE ROLE lada WITH LOGIN CREATEDB PASSWORD '$PASS'"
fi
if [ "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname = 'lada'")" != "1" ]; then
  psql_pg -c "CREATE DATABASE lada OWNER lada"
fi
URL="postgresql+psycopg://lada:$PASS@127.0.0.1:$PORT/lada"
(umask 077 && printf '%s\n' "$URL" >"$URL_FILE")
echo "start-postgres: PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT;" \
  "URL in $URL_FILE" >&2
