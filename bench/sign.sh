#!/usr/bin/env bash
# Sign and verify the same 2 GiB directory (4 files of 512 MiB) with `rampart` and with `model_signing`, alternating,
# page cache warm; prints the best of N runs of each, and the ratios. Also `rampart --hash blake3`, and two parallel
# `openssl dgst -sha256` processes as the hashing ceiling of the machine.
#
# Usage: bench/sign.sh [ROUNDS]      (needs model_signing on PATH: scripts/setup-test-env.sh prints its bin dir)
# Env:   BENCH_DIR (default: a temp dir), BENCH_FILES (default 4), BENCH_MIB_PER_FILE (default 512)
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${1:-3}"
files="${BENCH_FILES:-4}"
mib="${BENCH_MIB_PER_FILE:-512}"
command -v model_signing >/dev/null || { echo "bench: model_signing not on PATH (run scripts/setup-test-env.sh)" >&2; exit 2; }

echo "bench: building rampart (release)" >&2
cargo build --release -q -p rampart
target="${CARGO_TARGET_DIR:-target}"
rampart="$target/release/rampart"

work="${BENCH_DIR:-$(mktemp -d)}"
trap 'rm -rf "$work"' EXIT
model="$work/model"
mkdir -p "$model"
echo "bench: writing $files x $mib MiB into $model" >&2
for i in $(seq 1 "$files"); do
  head -c "$((mib * 1024 * 1024))" /dev/urandom > "$model/shard-$i.bin"
done
openssl ecparam -name prime256v1 -genkey -noout -out "$work/key.pem"
openssl ec -in "$work/key.pem" -pubout -out "$work/pub.pem" 2>/dev/null
cat "$model"/* > /dev/null   # warm the page cache

# best-of timing: run CMD..., keep the smallest wall time (seconds) in $1 and the smallest CPU time (user + sys, all
# threads and children) in $1_cpu. On a busy machine wall times depend on how many threads each tool runs; CPU
# time is the fairer comparison there.
best() {
  local var="$1"; shift
  local t
  t=$( { TIMEFORMAT='%R %U %S'; time "$@" >/dev/null 2>&1 || echo "FAIL" >&2; } 2>&1 )
  case "$t" in *FAIL*) echo "bench: failed: $*" >&2; exit 1;; esac
  local wall cpu
  wall=$(echo "$t" | awk '{print $1}')
  cpu=$(echo "$t" | awk '{print $2 + $3}')
  local cur="${!var:-}" curc
  curc="${var}_cpu"; curc="${!curc:-}"
  if [ -z "$cur" ] || [ "$(echo "$wall < $cur" | bc -l)" = 1 ]; then printf -v "$var" '%s' "$wall"; fi
  if [ -z "$curc" ] || [ "$(echo "$cpu < $curc" | bc -l)" = 1 ]; then printf -v "${var}_cpu" '%s' "$cpu"; fi
}

ossl() {  # two openssl processes, each hashing half of the files
  local all=("$model"/*) half=$(( files / 2 ))
  openssl dgst -sha256 "${all[@]:0:$half}" >/dev/null &
  openssl dgst -sha256 "${all[@]:$half}" >/dev/null &
  wait
}

for r in $(seq 1 "$rounds"); do
  echo "bench: round $r/$rounds" >&2
  best r_sign   "$rampart" sign "$model" --key "$work/key.pem" --signature "$work/r.sig"
  best m_sign   model_signing sign key "$model" --private_key "$work/key.pem" --signature "$work/m.sig"
  best r_verify "$rampart" verify "$model" --key "$work/pub.pem" --signature "$work/r.sig"
  best m_verify model_signing verify key "$model" --public_key "$work/pub.pem" --signature "$work/m.sig"
  best b_sign   "$rampart" sign "$model" --key "$work/key.pem" --signature "$work/b.sig" --hash blake3
  best b_verify "$rampart" verify "$model" --key "$work/pub.pem" --signature "$work/b.sig"
  best o_dgst   ossl
done
# Cross-check: each tool verifies the other's signature of the same data.
"$rampart" verify "$model" --key "$work/pub.pem" --signature "$work/m.sig" >/dev/null
model_signing verify key "$model" --public_key "$work/pub.pem" --signature "$work/r.sig" >/dev/null

gib=$(echo "$files * $mib / 1024" | bc -l)
row() { local c="${1}_cpu"; printf '%-32s %8.3f s wall %6.2f GiB/s   %8.3f s cpu\n' "$2" "${!1}" "$(echo "$gib / ${!1}" | bc -l)" "${!c}"; }
ratio() {
  local c2="${2}_cpu" c3="${3}_cpu"
  printf '%-48s %5.2fx wall  %5.2fx cpu  (target %s)\n' "$1" "$(echo "${!2} / ${!3}" | bc -l)" "$(echo "${!c2} / ${!c3}" | bc -l)" "$4"
}
echo
echo "$(printf '%.1f' "$gib") GiB in $files files, best of $rounds, $(nproc) cores, load average $(cut -d' ' -f1 /proc/loadavg)"
row m_sign   "model_signing sign (sha256)"
row r_sign   "rampart sign (sha256)"
row b_sign   "rampart sign (blake3)"
row m_verify "model_signing verify (sha256)"
row r_verify "rampart verify (sha256)"
row b_verify "rampart verify (blake3)"
row o_dgst   "2 x openssl dgst -sha256"
echo
ratio "sign   sha256: rampart vs model_signing" m_sign r_sign 1.5x
ratio "verify sha256: rampart vs model_signing" m_verify r_verify 1.5x
ratio "sign   blake3: rampart vs model_signing sha256" m_sign b_sign 3x
ratio "verify blake3: rampart vs model_signing sha256" m_verify b_verify 3x
ratio "sha256 hashing: rampart sign vs 2 x openssl" o_dgst r_sign "0.8x or more"
