#!/usr/bin/env bash
# Prints the path of a tool the stack needs, looking where its installer puts
# it even when that directory is not on PATH: `weed` (pip's scripts
# directory), `postgres`/`initdb`/`pg_ctl` (Debian's versioned bin directory).
set -euo pipefail
tool="$1"
case "$tool" in
  weed)
    for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null)" \
               "$(python3 -c 'import site; print(site.USER_BASE)' 2>/dev/null)/bin"; do
      [ -x "$dir/weed" ] && { echo "$dir/weed"; exit 0; }
    done
    command -v weed && exit 0
    ;;
  postgres|initdb|pg_ctl|psql|pg_isready)
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"
    [ -n "$dir" ] && [ -x "$dir/$tool" ] && { echo "$dir/$tool"; exit 0; }
    command -v "$tool" && exit 0
    ;;
  *)
    command -v "$tool" && exit 0
    ;;
esac
echo "tool-path: $tool not found" >&2
exit 1
