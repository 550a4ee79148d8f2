#!/usr/bin/env bash
# Runs a command with Cascade's services up on loopback, then stops them.
#
#   scripts/stack.sh NAME -- COMMAND...
#
# NAME picks the data directory .data/NAME (git-ignored): `run` keeps its
# database and objects between runs; `test` starts from empty each time.
# Starts a private PostgreSQL cluster and a SeaweedFS S3 endpoint on free
# loopback ports, exports their addresses as CASCADE_* variables (see
# docs/configuration.md), runs COMMAND, and stops both services however it
# ends. Service logs stay in .data/NAME/logs. Temporary files go to a
# directory of the run (TMPDIR), removed when it ends.
set -euo pipefail

name="$1"; shift
[ "${1:-}" = "--" ] && shift
root="$(cd "$(dirname "$0")/.." && pwd)"
data="$root/.data/$name"
logs="$data/logs"

if [ "$name" = "test" ]; then
  rm -rf "$data"
fi
mkdir -p "$data" "$logs"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_until() { # DESCRIPTION SECONDS COMMAND...
  local what="$1" seconds="$2"; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "stack: $what did not become ready in ${seconds}s; logs in $logs" >&2
      return 1
    fi
    sleep 0.2
  done
}

# Postgres refuses to run as root; run it as the `postgres` system user then,
# keeping only CAP_DAC_READ_SEARCH so it can reach a data directory below
# root-only directories (a clone under a 0700 temp dir, as CI may use).
as_db_user=()
if [ "$(id -u)" -eq 0 ]; then
  as_db_user=(setpriv --reuid=postgres --regid=postgres --init-groups
              --inh-caps=+dac_read_search --ambient-caps=+dac_read_search --)
fi

pg_bin="$(dirname "$("$root/scripts/tool-path.sh" pg_ctl)")"
weed_bin="$("$root/scripts/tool-path.sh" weed)"
pg_data="$data/pg"
pg_sock="$data/pg-sock"

stop_services() {
  set +e
  if [ -f "$pg_data/postmaster.pid" ]; then
    "${as_db_user[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w stop >>"$logs/postgres.log" 2>&1
  fi
  if [ -n "${scratch_tmp:-}" ]; then
    rm -rf "$scratch_tmp"
  fi
  if [ -f "$data/weed.pid" ]; then
    local pid; pid="$(cat "$data/weed.pid")"
    kill "$pid" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    rm -f "$data/weed.pid"
  fi
}
# A previous run that was killed may have left services behind.
stop_services
# Temporary files of everything run here (test scratch directories, player
# profiles, ...) go to a directory of this run, removed when it ends, so
# repeated runs never fill the machine's disk. Kept short: Unix socket
# paths (Chromium's) are limited to 108 bytes.
scratch_tmp="$(mktemp -d "${TMPDIR:-/tmp}/cascade-stack.XXXXXX")"
export TMPDIR="$scratch_tmp"
trap stop_services EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- PostgreSQL -------------------------------------------------------------
pg_port="$(free_port)"
mkdir -p "$pg_sock"
if [ ! -f "$pg_data/PG_VERSION" ]; then
  mkdir -p "$pg_data"
  [ "$(id -u)" -eq 0 ] && chown postgres "$pg_data" "$pg_sock"
  "${as_db_user[@]}" "$pg_bin/initdb" -D "$pg_data" -U cascade --auth=trust -E UTF8 --no-sync >"$logs/initdb.log" 2>&1
fi
[ "$(id -u)" -eq 0 ] && chown -R postgres "$pg_data" "$pg_sock" && chown postgres "$logs"
"${as_db_user[@]}" "$pg_bin/pg_ctl" -D "$pg_data" -w -t 60 -l "$logs/postgres.log" start \
  -o "-c listen_addresses=127.0.0.1 -p $pg_port -c unix_socket_directories=$pg_sock -c max_connections=300" >/dev/null
db_admin_url="postgres://cascade@127.0.0.1:$pg_port/postgres"
wait_until "PostgreSQL on port $pg_port" 60 "$pg_bin/psql" "$db_admin_url" -Atqc "SELECT 1"
if ! "$pg_bin/psql" "$db_admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = 'cascade'" | grep -q 1; then
  "$pg_bin/psql" "$db_admin_url" -qc "CREATE DATABASE cascade" >/dev/null
fi

# --- SeaweedFS S3 -----------------------------------------------------------
# CASCADE_STACK_NO_S3=1 skips it (SeaweedFS binds fixed side ports, so only
# one instance can run on a machine; stacks that use the local backend need none).
no_s3="${CASCADE_STACK_NO_S3:-}"
# Not a config key: keep it from reaching cascade's strict config loader.
unset CASCADE_STACK_NO_S3
if [ "$no_s3" = "1" ]; then
  export CASCADE_DATABASE__URL="postgres://cascade@127.0.0.1:$pg_port/cascade"
  export CASCADE_STORAGE__LOCAL_ROOT="$data/objects"
  export CASCADE_TEST_DATABASE_URL="$db_admin_url"
  echo "stack: postgres on 127.0.0.1:$pg_port (no S3), logs in ${logs#"$root"/}"
  set +e
  "$@"
  exit $?
fi
s3_port="$(free_port)"
export AWS_ACCESS_KEY_ID="cascade-local"
export AWS_SECRET_ACCESS_KEY="cascade-local-secret"
mkdir -p "$data/weed"
# Every test bucket is a SeaweedFS collection with volumes of its own. Left
# to itself, `weed mini` sizes volumes and counts the slots from the free
# disk, and on a fuller disk the test run ran out of slots ("No writable
# volumes"). Small volumes and a fixed slot count (volumes are sparse files,
# not preallocated) make the stack independent of the free space.
"$weed_bin" mini -dir="$data/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port="$s3_port" \
  -master.volumeSizeLimitMB=64 -volume.max=2000 \
  -admin.ui=false -webdav=false >"$logs/weed.log" 2>&1 &
echo $! >"$data/weed.pid"
s3_ready() { [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$s3_port/")" != "000" ]; }
wait_until "SeaweedFS S3 on port $s3_port" 90 s3_ready

# --- What Cascade and the tests read ----------------------------------------
export CASCADE_DATABASE__URL="postgres://cascade@127.0.0.1:$pg_port/cascade"
export CASCADE_STORAGE__S3__ENDPOINT="http://127.0.0.1:$s3_port"
export CASCADE_STORAGE__S3__BUCKET="cascade"
export CASCADE_STORAGE__LOCAL_ROOT="$data/objects"
export CASCADE_TEST_DATABASE_URL="$db_admin_url"
export CASCADE_TEST_S3_ENDPOINT="http://127.0.0.1:$s3_port"
echo "stack: postgres on 127.0.0.1:$pg_port, S3 (SeaweedFS) on 127.0.0.1:$s3_port, logs in ${logs#"$root"/}"

set +e
"$@"
status=$?
exit $status
