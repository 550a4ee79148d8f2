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
echo "== cargo test"
cargo test --workspace
