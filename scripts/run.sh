#!/usr/bin/env bash
# `make run`, inside scripts/stack.sh: builds and runs `cascade serve` with
# every role, readable logs, on http://127.0.0.1:8080 (or CASCADE_HTTP__LISTEN).
set -euo pipefail
cargo build --bin cascade
bin="${CARGO_TARGET_DIR:-target}/debug/cascade"
export CASCADE_LOG__FORMAT="${CASCADE_LOG__FORMAT:-text}"
export CASCADE_HTTP__LISTEN="${CASCADE_HTTP__LISTEN:-127.0.0.1:8080}"
export CASCADE_LIVE__RTMP_LISTEN="${CASCADE_LIVE__RTMP_LISTEN:-127.0.0.1:1935}"
export CASCADE_INGEST__PUBLIC_URL="${CASCADE_INGEST__PUBLIC_URL:-http://$CASCADE_HTTP__LISTEN}"
# A local API key, kept across runs in the data directory.
key_file="$(dirname "$CASCADE_STORAGE__LOCAL_ROOT")/bootstrap-key"
[ -s "$key_file" ] || python3 -c 'import secrets; print("csk_local_" + secrets.token_urlsafe(24))' >"$key_file"
export CASCADE_INGEST__BOOTSTRAP_KEY="${CASCADE_INGEST__BOOTSTRAP_KEY:-$(cat "$key_file")}"
# A local playback signing key (`[playback] signing_keys`, id `local`), so
# signed assets play; kept across runs so minted tokens stay valid.
signing_file="$(dirname "$CASCADE_STORAGE__LOCAL_ROOT")/playback-signing-key"
[ -s "$signing_file" ] || python3 -c 'import secrets; print("local:" + secrets.token_urlsafe(32))' >"$signing_file"
export CASCADE_PLAYBACK__SIGNING_KEYS="${CASCADE_PLAYBACK__SIGNING_KEYS:-$(cat "$signing_file")}"
# A second storage tier in its own bucket of the same SeaweedFS, so moves
# between tiers (`cascade assets tier ID cold`) run for real.
export CASCADE_STORAGE__TIERS="${CASCADE_STORAGE__TIERS:-[{name = \"cold\", price_per_gb_month = 0.004, s3 = {endpoint = \"$CASCADE_STORAGE__S3__ENDPOINT\", bucket = \"cascade-cold\"}}]}"
echo "run: database $CASCADE_DATABASE__URL"
echo "run: storage tiers: hot (bucket $CASCADE_STORAGE__S3__BUCKET) and cold (bucket cascade-cold); \`cascade tiers status\`"
echo "run: S3 endpoint $CASCADE_STORAGE__S3__ENDPOINT (bucket $CASCADE_STORAGE__S3__BUCKET)"
echo "run: operator commands in another shell need these variables; see docs/configuration.md"
echo "run: API key: $CASCADE_INGEST__BOOTSTRAP_KEY"
echo "run: try: curl -H \"Authorization: Bearer \$KEY\" -X POST $CASCADE_INGEST__PUBLIC_URL/v1/assets"
echo "run: health, readiness and metrics: http://$CASCADE_HTTP__LISTEN/healthz, /readyz, /metrics"
echo "run: stop with Ctrl-C"
"$bin" migrate
exec "$bin" serve
