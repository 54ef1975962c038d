#!/usr/bin/env bash
# Rampart's image sanitisers (crates/rampart-defend/src/sanitise.rs) against their peer, scipy.ndimage and numpy, on
# one image in one run: each sanitiser's best of 7 runs on both sides, the ratio (scipy's time over Rampart's: above 1
# means Rampart is faster), and the largest difference between the two outputs (the median and the bit depth must be
# equal; the Gaussian and the low-pass agree to float rounding).
#
#   bench/sanitise.sh [HxWxC, default 224x224x3]
set -euo pipefail
cd "$(dirname "$0")/.."
SHAPE="${1:-224x224x3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
BIN="$(scripts/setup-test-env.sh | tail -n1)"
"$BIN/pip" install -q --disable-pip-version-check -r bench/requirements-defend.txt >&2
# Timed code wants release code generation (no overflow checks): the `quick` profile (release, without LTO).
cargo build -q --profile quick -p rampart-defend --example defend_bench
TARGET="$(cargo metadata --format-version 1 --no-deps | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/quick"
echo "image $SHAPE, values ((i * 7919) % 1000) / 1000, on this machine ($(nproc) cores)" >&2
"$TARGET/examples/defend_bench" sanitise-time "$SHAPE" "$WORK" > "$WORK/rampart.txt"
"$BIN/python" bench/defend_attacks.py sanitise-time "$SHAPE" "$WORK" "$WORK/rampart.txt"
