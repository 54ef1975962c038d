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
  openssl enc -aes-128-ctr -pass pass:"rampart$i" -nosalt -pbkdf2 -in /dev/zero 2>/dev/null \
    | head -c "$((mib * 1024 * 1024))" > "$model/shard-$i.bin"
done
openssl ecparam -name prime256v1 -genkey -noout -out "$work/key.pem"
openssl ec -in "$work/key.pem" -pubout -out "$work/pub.pem" 2>/dev/null
cat "$model"/* > /dev/null   # warm the page cache

# best-of timing: run CMD..., keep the smallest wall time (seconds) in the variable named $1
best() {
  local var="$1"; shift
  local start end t
  start=$(date +%s.%N)
  "$@" >/dev/null 2>&1 || { echo "bench: failed: $*" >&2; exit 1; }
  end=$(date +%s.%N)
  t=$(echo "$end - $start" | bc -l)
  local cur="${!var:-}"
  if [ -z "$cur" ] || [ "$(echo "$t < $cur" | bc -l)" = 1 ]; then printf -v "$var" '%s' "$t"; fi
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
row() { printf '%-34s %8.3f s  %6.2f GiB/s\n' "$1" "$2" "$(echo "$gib / $2" | bc -l)"; }
echo
echo "$(printf '%.1f' "$gib") GiB in $files files, best of $rounds, $(nproc) cores"
row "model_signing sign (sha256)" "$m_sign"
row "rampart sign (sha256)" "$r_sign"
row "rampart sign (blake3)" "$b_sign"
row "model_signing verify (sha256)" "$m_verify"
row "rampart verify (sha256)" "$r_verify"
row "rampart verify (blake3)" "$b_verify"
row "2 x openssl dgst -sha256" "$o_dgst"
echo
printf 'sign   sha256: rampart %.2fx faster than model_signing (target 1.5x)\n' "$(echo "$m_sign / $r_sign" | bc -l)"
printf 'verify sha256: rampart %.2fx faster than model_signing (target 1.5x)\n' "$(echo "$m_verify / $r_verify" | bc -l)"
printf 'sign   blake3: rampart %.2fx faster than model_signing sha256 (target 3x)\n' "$(echo "$m_sign / $b_sign" | bc -l)"
printf 'verify blake3: rampart %.2fx faster than model_signing sha256 (target 3x)\n' "$(echo "$m_verify / $b_verify" | bc -l)"
printf 'sha256 hashing: rampart sign reaches %.0f%% of 2 parallel openssl dgst (target 80%%)\n' "$(echo "100 * $o_dgst / $r_sign" | bc -l)"
