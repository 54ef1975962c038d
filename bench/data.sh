#!/usr/bin/env bash
# rampart data check against cleanlab, and the streaming throughput on a generated CSV of at least 1 GB.
#
# 1. Label audit on the digits training split with 10% of labels flipped (symmetric noise):
#    - the same out-of-fold probabilities in (scikit-learn 5-fold LogisticRegression, written to probs.csv), the
#      issues of cleanlab's find_label_issues and of `rampart data check --pred-probs`, precision and recall of both;
#    - end to end, probabilities included: Python (sklearn cross_val_predict + cleanlab) vs Rampart (its own 5-fold
#      logistic regression + confident learning), wall-clock of each process.
# 2. Throughput of the streaming checks (schema, leaks, exact duplicates) on one core, and of the whole check.
# Environment: BENCH_CSV_MB (default 1100), RAMPART_PEERS_VENV (the peers' virtualenv; default: the test setup's),
# RAMPART_BIN (use this binary instead of building a release one), BENCH_TMP (where the CSV goes; default $TMPDIR).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# The peers' virtualenv (cleanlab, scikit-learn), made by the test setup if it is not there yet.
py="$(scripts/setup-test-env.sh | tail -n1)/python"
# RAMPART_BIN: a binary built already (any profile with optimised code) instead of a release build.
if [ -n "${RAMPART_BIN:-}" ]; then
  rampart="$RAMPART_BIN"
else
  echo "== building rampart (release)" >&2
  cargo build --release -q -p rampart
  rampart="$CARGO_TARGET_DIR/release/rampart"
fi
work="$(mktemp -d -p "${BENCH_TMP:-${TMPDIR:-/tmp}}")"
trap 'rm -rf "$work"' EXIT
now() { date +%s.%N; }

echo "== label audit: digits train, 10% symmetric label noise" >&2
t0=$(now); "$py" bench/data_labels.py prepare examples/digits/train.csv "$work"; t1=$(now)
py_wall=$(awk -v a="$t1" -v b="$t0" "BEGIN{print a-b}")
"$rampart" data check "$work/noisy.csv" --checks labels --pred-probs "$work/probs.csv" --format json -q -o "$work/same.json" || true
t2=$(now)
"$rampart" data check "$work/noisy.csv" --checks labels --format json -q -o "$work/own.json" || true
t3=$(now)
rs_wall=$(awk -v a="$t3" -v b="$t2" "BEGIN{print a-b}")
same=$("$py" bench/data_labels.py score "$work" "$work/same.json")
own=$("$py" bench/data_labels.py score "$work" "$work/own.json")
"$py" - "$work/cleanlab.json" "$same" "$own" "$py_wall" "$rs_wall" <<'PY'
import json, sys
cl = json.load(open(sys.argv[1])); same = json.loads(sys.argv[2]); own = json.loads(sys.argv[3])
py_wall, rs_wall = float(sys.argv[4]), float(sys.argv[5])
print("label audit (same sklearn out-of-fold probabilities in):")
print(f"  cleanlab  precision {cl['precision']:.4f} recall {cl['recall']:.4f} issues {cl['issues']}")
print(f"  rampart   precision {same['precision']:.4f} recall {same['recall']:.4f} issues {same['issues']}")
print(f"  difference precision {same['precision']-cl['precision']:+.4f} recall {same['recall']-cl['recall']:+.4f}")
print("end to end, probabilities included:")
print(f"  python (sklearn 5-fold LogisticRegression + cleanlab): {py_wall:.2f} s wall "
      f"(imports {cl['import_s']:.2f} s, cross-validation {cl['cv_s']:.2f} s, find_label_issues {cl['cleanlab_s']:.3f} s)")
print(f"  rampart (own 5-fold logistic regression + audit):      {rs_wall:.2f} s wall, "
      f"precision {own['precision']:.4f} recall {own['recall']:.4f} issues {own['issues']}")
print(f"  speed-up: {py_wall/rs_wall:.1f}x wall; {(cl['cv_s']+cl['cleanlab_s'])/rs_wall:.1f}x against Python's compute alone")
PY

mb="${BENCH_CSV_MB:-1100}"
echo "== generating a ${mb} MB CSV" >&2
csv="$work/big.csv"
awk -v target="$((mb * 1000000))" 'BEGIN {
  srand(7); split("the a model data train label image token value river cloud green fast slow north", w, " ");
  printf "id"; for (j = 0; j < 16; j++) printf ",f%d", j; print ",category,note,label";
  bytes = 0; i = 0;
  while (bytes < target) {
    line = i; for (j = 0; j < 16; j++) line = line "," sprintf("%.5f", rand());
    note = w[int(rand()*15)+1] " " w[int(rand()*15)+1] " " w[int(rand()*15)+1] " " w[int(rand()*15)+1] " " i;
    if (i % 100000 == 7) note = note " contact jane" i "@example.com";
    line = line "," (i % 3 == 0 ? "red" : "blue") "," note "," (i % 10);
    print line; bytes += length(line) + 1; i++;
  }
}' > "$csv"
size=$(stat -c %s "$csv")
"$rampart" data schema "$csv" -o "$work/big.toml"
# The file was just written: let its dirty pages reach the disk and read it once, so that the timing below measures
# the check, not the write-back of the generator's output.
sync "$csv"; cat "$csv" > /dev/null
pin=""; command -v taskset >/dev/null && pin="taskset -c 0"
# CPU seconds (user + sys) and peak memory of the streaming run, from GNU time when it is there: on a shared machine
# they measure the work better than the wall clock does.
# Best of two runs: the first run after a large allocation can pay the kernel's reclaim of page cache (here up to
# 0.9 s of system time more than the second); both runs are printed.
walls=()
for run in 1 2; do
  timing=""; [ -x /usr/bin/time ] && timing="/usr/bin/time -f %U,%S,%M -o $work/stream.$run.time"
  t0=$(now)
  $timing $pin "$rampart" data check "$csv" --schema "$work/big.toml" --checks schema,leaks,duplicates --max-rows 1 --format json -q -o "$work/stream.json" || true
  t1=$(now)
  walls+=("$(awk -v a="$t1" -v b="$t0" "BEGIN{print a-b}")")
done
t2=$(now)
"$rampart" data check "$csv" --schema "$work/big.toml" --format json -q -o "$work/all.json" || true
t3=$(now)
"$py" - "$size" "${walls[0]},${walls[1]}" "$(awk -v a="$t3" -v b="$t2" "BEGIN{print a-b}")" "$work/stream.json" "$work/stream" <<'PY'
import json, os, sys
size, whole = int(sys.argv[1]), float(sys.argv[3])
walls = [float(w) for w in sys.argv[2].split(",")]
r = json.load(open(sys.argv[4]))
mb = size / 1e6
print(f"streaming checks (schema, leaks, exact duplicates) on one core: {mb:.0f} MB, {r['rows']} rows; best of 2 runs")
print(f"  wall {min(walls):.2f} s = {mb/min(walls):.0f} MB/s (runs: {', '.join(f'{w:.2f} s' for w in walls)})")
runs = []
for run in (1, 2):
    path = f"{sys.argv[5]}.{run}.time"
    if os.path.exists(path):
        user, system, rss = open(path).read().strip().splitlines()[-1].split(",")
        runs.append((float(user) + float(system), float(user), float(system), int(rss)))
if runs:
    cpu, user, system, rss = min(runs)
    print(f"  CPU {cpu:.2f} s (user {user:.2f} + sys {system:.2f}) = {mb/cpu:.0f} MB per CPU-second "
          f"(target 200, ratio {mb/cpu/200:.2f}); max RSS {rss/1024:.0f} MiB; "
          f"runs: {', '.join(f'{c:.2f} s' for c, *_ in runs)}")
print(f"  findings: " + ", ".join(f"{c['check']} {c['findings']}" for c in r['checks']))
print(f"whole check (all checks; in-memory ones on the first 200000 rows), both cores: {whole:.2f} s wall = {mb/whole:.0f} MB/s")
PY
