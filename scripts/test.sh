#!/usr/bin/env bash
# The test command: installs what the tests need, then runs formatting, lints and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

peers_bin="$(scripts/setup-test-env.sh | tail -n 1)"
export PATH="$peers_bin:$PATH"
# Interoperability tests fail (rather than skip) when a peer is missing.
export RAMPART_REQUIRE_PEERS=1

echo "== cargo fmt --check" >&2
cargo fmt --all --check
echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test" >&2
cargo test --workspace --locked
