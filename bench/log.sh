#!/usr/bin/env bash
# Durable appends per second to the audit log with group commit (every acknowledged entry fsynced),
# against the same log with one fsync per append (no group commit), on the same disk in one run.
# Target: >= 50,000 durable appends/s with group commit.
#   bench/log.sh [ENTRIES] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
entries="${1:-500000}"; threads="${2:-16}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build -q --release -p rampart-log --example append_bench
bin="$CARGO_TARGET_DIR/release/examples/append_bench"
work="$(mktemp -d "${TMPDIR:-/tmp}/rampart-log-bench.XXXXXX")"; trap 'rm -rf "$work"' EXIT
group=$("$bin" "$work/group" "$entries" "$threads")
single=$("$bin" "$work/single" 5000 1 single)
echo "group commit ($threads threads, $entries entries): $group durable appends/s"
echo "one fsync per append (baseline):                 $single durable appends/s"
awk -v g="$group" -v s="$single" 'BEGIN { printf "ratio group/baseline: %.1fx; vs target 50,000/s: %.2fx\n", g / s, g / 50000 }'
