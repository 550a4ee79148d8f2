#!/usr/bin/env bash
# `make test`, inside scripts/stack.sh: format, lints, fixtures, then every
# unit and integration test against the stack's Postgres and SeaweedFS.
set -euo pipefail
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== fixtures"
fixtures/generate.sh .data/fixtures >/dev/null
fixtures/check.sh .data/fixtures
echo "== infra manifests"
scripts/check-infra.sh
echo "== cargo test"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo prints one per test binary, the
# last often a doc-test run with nothing in it).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
