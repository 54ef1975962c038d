#!/usr/bin/env bash
# Rampart's `eval` against IBM ART 1.20.1 (torch, CPU) on the digits MLP and CNN, same model file, same settings:
# FGSM (eps 0.1), PGD-40 (eps 0.1, step 0.01, no random start) and Square Attack (eps 0.1, 1,000 iterations),
# L-infinity, always against the true labels, the first RAMPART_BENCH_ROWS (default all 450) test rows. Prints robust accuracy and seconds per 1,000
# examples for both, and the ratios. One command:
#
#     bench/eval.sh
#
# The peers' virtualenv is RAMPART_BENCH_VENV (default ~/.cache/rampart/venv-bench-eval), created on first use with
# torch, adversarial-robustness-toolbox==1.20.1 and onnx from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${RAMPART_BENCH_VENV:-$HOME/.cache/rampart/venv-bench-eval}"
if ! "$venv/bin/python" -c "import torch, art, onnx" 2>/dev/null; then
  echo "bench: preparing $venv (torch, adversarial-robustness-toolbox 1.20.1, onnx)" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check torch adversarial-robustness-toolbox==1.20.1 onnx numpy >&2
fi

# RAMPART_PROFILE=dev reuses a debug build (dependencies and rampart-eval are optimised at opt-level 2 there too).
profile="${RAMPART_PROFILE:-release}"
cargo build --profile "$profile" -q -p rampart >&2
target="${CARGO_TARGET_DIR:-target}"
if [ "$profile" = dev ]; then rampart="$target/debug/rampart"; else rampart="$target/$profile/rampart"; fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# RAMPART_BENCH_ROWS limits the test rows (default: all 450) to bound the run on a busy machine.
rows="${RAMPART_BENCH_ROWS:-450}"
data="$work/test.csv"
head -n "$((rows + 1))" examples/digits/test.csv > "$data"

printf '%-5s %-7s %12s %12s %14s %14s %8s\n' model attack "rampart acc" "art acc" "rampart s/1k" "art s/1k" speedup
for name in mlp cnn; do
  if [ "$name" = mlp ]; then model=examples/digits/model/model.onnx; else model=examples/digits/model_cnn/model.onnx; fi
  # Rampart: one run per attack so each time is the attack alone (the JSON's seconds exclude loading the model).
  "$rampart" eval --model "$model" --data "$data" --attacks fgsm --eps 0.1 --format json > "$work/$name-fgsm.json"
  "$rampart" eval --model "$model" --data "$data" --attacks pgd --eps 0.1 --step 0.01 --steps 40 --format json > "$work/$name-pgd.json"
  "$rampart" eval --model "$model" --data "$data" --attacks square --eps 0.1 --queries 1002 --image-shape 1,8,8 --format json > "$work/$name-square.json"
  "$venv/bin/python" bench/eval_art.py "$model" "$data" > "$work/$name-art.json"
  python3 - "$work" "$name" <<'PY'
import json, sys
work, name = sys.argv[1], sys.argv[2]
art = json.load(open(f"{work}/{name}-art.json"))
n = art["examples"]
for attack in ["fgsm", "pgd", "square"]:
    r = json.load(open(f"{work}/{name}-{attack}.json"))["attacks"][0]
    a = art["attacks"][attack]
    rs, as_ = r["seconds"] * 1000 / n, a["seconds"] * 1000 / n
    print(f"{name:<5} {attack:<7} {r['robust_accuracy']:12.4f} {a['robust_accuracy']:12.4f} {rs:14.3f} {as_:14.3f} {as_ / max(rs, 1e-9):7.1f}x")
PY
done
