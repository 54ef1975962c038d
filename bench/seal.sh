#!/usr/bin/env bash
# Seal and unseal throughput: `rampart seal`/`unseal` against the `age` CLI (Go) on the same generated file.
#   bench/seal.sh [SIZE_MIB] [ROUNDS]     (default 1024: a 1 GiB file; best of 3 rounds, the tools alternating)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${1:-1024}"; rounds="${2:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build -q --release -p rampart
rampart="$CARGO_TARGET_DIR/release/rampart"
command -v age >/dev/null || { echo "the age CLI is missing (apt-get install age)" >&2; exit 2; }
work="$(mktemp -d "${TMPDIR:-/tmp}/rampart-seal-bench.XXXXXX")"; trap 'rm -rf "$work"' EXIT
age-keygen -o "$work/key.txt" 2>/dev/null
recipient="$(age-keygen -y "$work/key.txt")"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/model.bin"
cat "$work/model.bin" > /dev/null  # warm the page cache for both

# A tool that fails stops the benchmark with its own message (a full disk, say), not a timing of the failure.
seconds() {
  local s e
  sync; s=$(date +%s.%N)
  "$@" >/dev/null 2>"$work/err" || { echo "error: \`$*\` failed: $(tail -n1 "$work/err")" >&2; return 1; }
  e=$(date +%s.%N); echo "$e - $s" | bc -l
}
# Rampart fsyncs its output before renaming it into place (durable, never half-written); age does not.
# age's figure below includes an fsync of its output (`sync FILE`) so that both do the same work.
age_seal() { age -r "$recipient" -o "$work/a.age" "$work/model.bin" && sync "$work/a.age"; }
age_unseal() { age -d -i "$work/key.txt" -o "$work/a.out" "$work/r.age" && sync "$work/a.out"; }
min() { echo "if ($1 < $2) $1 else $2" | bc -l; }
rs=999999; as=999999; ru=999999; au=999999
# Each output is checked and removed as soon as it is measured (each tool opens the other's sealed file), so that
# the disk holds at most four copies of the input at once. Which tool goes first alternates from round to round,
# so that neither always writes right after the other's gigabytes (write-back and page-cache state carry over).
same() { cmp -s "$work/model.bin" "$1" || { echo "round trip differs: $1" >&2; exit 1; }; rm -f "$1"; }
r_seal() { local t; t=$(seconds "$rampart" seal "$work/model.bin" -r "$recipient" -o "$work/r.age") || exit 2; rs=$(min "$rs" "$t"); }
a_seal() { local t; t=$(seconds age_seal) || exit 2; as=$(min "$as" "$t"); }
r_unseal() {
  local t; t=$(seconds "$rampart" unseal "$work/a.age" -i "$work/key.txt" -o "$work/r.out") || exit 2
  ru=$(min "$ru" "$t"); same "$work/r.out"
}
a_unseal() { local t; t=$(seconds age_unseal) || exit 2; au=$(min "$au" "$t"); same "$work/a.out"; }
for round in $(seq "$rounds"); do
  rm -f "$work/r.age" "$work/a.age" "$work/r.out" "$work/a.out"
  if (( round % 2 )); then r_seal; a_seal; r_unseal; a_unseal; else a_seal; r_seal; a_unseal; r_unseal; fi
done
mbps() { echo "$size_mib / $1" | bc -l; }
printf "seal   %5d MiB: rampart %6.2f s (%6.0f MiB/s)   age+fsync %6.2f s (%6.0f MiB/s)   ratio age/rampart %.2fx\n" \
  "$size_mib" "$rs" "$(mbps "$rs")" "$as" "$(mbps "$as")" "$(echo "$as / $rs" | bc -l)"
printf "unseal %5d MiB: rampart %6.2f s (%6.0f MiB/s)   age+fsync %6.2f s (%6.0f MiB/s)   ratio age/rampart %.2fx\n" \
  "$size_mib" "$ru" "$(mbps "$ru")" "$au" "$(mbps "$au")" "$(echo "$au / $ru" | bc -l)"
