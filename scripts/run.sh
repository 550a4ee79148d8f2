#!/usr/bin/env bash
# `make run`, inside scripts/stack.sh: builds and runs `cascade serve` with
# every role, readable logs, on http://127.0.0.1:8080 (or CASCADE_HTTP__LISTEN).
set -euo pipefail
cargo build --bin cascade
bin="${CARGO_TARGET_DIR:-target}/debug/cascade"
export CASCADE_LOG__FORMAT="${CASCADE_LOG__FORMAT:-text}"
export CASCADE_HTTP__LISTEN="${CASCADE_HTTP__LISTEN:-127.0.0.1:8080}"
echo "run: database $CASCADE_DATABASE__URL"
echo "run: S3 endpoint $CASCADE_STORAGE__S3__ENDPOINT (bucket $CASCADE_STORAGE__S3__BUCKET)"
echo "run: operator commands in another shell need these variables; see docs/configuration.md"
echo "run: stop with Ctrl-C"
"$bin" migrate
exec "$bin" serve
