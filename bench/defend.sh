#!/usr/bin/env bash
# Inference-time defences on the digits MLP and CNN, against the anchors the issue names: the classic feature-squeezing
# detector (Xu et al.; numpy/scipy/onnxruntime in bench/defend_attacks.py, the peer) and PRADA alone. The attacks at
# eps 0.1 (FGSM, PGD-40 step 0.01, Square 1,000 queries, and an adaptive PGD rounded onto the data's lattice) come from
# Rampart's evaluator (rampart-eval) through the harness crates/rampart-defend/examples/defend_bench.rs. Inputs are
# generated under $WORK (default: a temporary directory); nothing is committed.
#
#   bench/defend.sh            # about 10-20 minutes on two busy cores
set -euo pipefail
cd "$(dirname "$0")/.."
WORK="${WORK:-$(mktemp -d)}"
mkdir -p "$WORK"
BIN="$(scripts/setup-test-env.sh | tail -n1)"
# The peer's extra packages (onnxruntime runs the classic squeezer on either model).
"$BIN/pip" install -q --disable-pip-version-check -r bench/requirements-defend.txt >&2
PY="$BIN/python"
DIGITS=examples/digits
MODEL=$DIGITS/model/model.onnx
# The harness in the dev profile (dependencies are optimised there) with this crate optimised too.
CARGO=(cargo --config 'profile.dev.package.rampart-defend.opt-level=2')
"${CARGO[@]}" build -q -p rampart -p rampart-defend --bins --example defend_bench
# Where cargo put them, as cargo resolves it (the environment, a config file, or `target`).
TARGET="$(cargo metadata --format-version 1 --no-deps | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')/debug"
RAMPART="$TARGET/rampart"
HARNESS="$TARGET/examples/defend_bench"

echo "== profile" >&2
"$RAMPART" profile $DIGITS/train.csv --label-column label -o "$WORK/profile.json"

for name in mlp cnn; do
  m=$DIGITS/model/model.onnx
  [ $name = cnn ] && m=$DIGITS/model_cnn/model.onnx
  echo "== attacks on the $name (rampart-eval)" >&2
  "$HARNESS" attacks "$WORK/profile.json" "$m" $DIGITS/test.csv "$WORK/attacks-$name" | sed "s/^/$name /"
  echo "== detection on the $name: Rampart's combined detector vs the classic feature squeezer (peer)" >&2
  "$HARNESS" detect "$WORK/profile.json" "$m" $DIGITS/test.csv "$WORK/attacks-$name" | sed "s/^/$name /" | tee "$WORK/detect-$name.txt"
  "$PY" bench/defend_attacks.py squeeze-baseline "$m" $DIGITS/test.csv "$WORK/attacks-$name" | sed "s/^/$name /" | tee "$WORK/peer-$name.txt"
  # Rampart's detection rate over the peer's, per attack, at the same 2% target (a peer rate of 0 prints inf).
  "$PY" - "$WORK/detect-$name.txt" "$WORK/peer-$name.txt" "$name" <<'PYEOF'
import re, sys
ours = [l for l in open(sys.argv[1]) if "all components" in l][0]
peer = [l for l in open(sys.argv[2]) if "target FPR 0.02" in l][0]
rate = lambda line, a: float(re.search(rf" {a} ([0-9.]+) \(", line).group(1))
for a in ("fgsm", "pgd", "square"):
    r, p = rate(ours, a), rate(peer, a)
    print(f"{sys.argv[3]} ratio {a}: Rampart {r:.4f} / classic squeezer {p:.4f} = {r / p if p else float('inf'):.1f}x")
PYEOF
done

echo "== sanitisers: clean and robust accuracy" >&2
"$HARNESS" sanitise $MODEL $DIGITS/test.csv "$WORK/attacks-mlp"

echo "== extraction" >&2
"$PY" bench/defend_attacks.py jbda $MODEL $DIGITS/test.csv "$WORK/jbda.csv" --seeds 100 --rounds 3
"$HARNESS" extraction "$WORK/profile.json" $MODEL $DIGITS/test.csv "$WORK/jbda.csv"

echo "== natural-data extraction against output hardening: surrogate fidelity" >&2
"$PY" bench/defend_attacks.py thief-queries $DIGITS/train.csv "$WORK/thief.csv" --count 5000
"$HARNESS" serve-hardened $MODEL "$WORK/thief.csv" "$WORK"
"$PY" bench/defend_attacks.py fidelity $MODEL $DIGITS/test.csv "$WORK" 2>/dev/null

echo "== watermark: a surrogate extracted through the gateway" >&2
# `rampart serve` on loopback HTTP with the watermark on and label-only answers; the thief's 5,000 queries go through
# it, and verification reads the gateway's own record of that principal's watermarked rows and controls.
WM="$WORK/wm"
rm -rf "$WM"; mkdir -p "$WM"
"$RAMPART" watermark keygen -o "$WM/wm.key" >/dev/null
PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$WM/rampart.toml" <<CONF
[server]
listen = "127.0.0.1:$PORT"
admin_listen = "127.0.0.1:0"
plain_http = true
state_dir = "$WM/state"
[auth]
create_first_key = false
[deploy]
trusted_keys = ["$PWD/$DIGITS/release.pub"]
[[models]]
name = "digits"
onnx = "$PWD/$MODEL"
[models.defend.harden]
default = { mode = "label_only" }
[models.defend.watermark]
key = "$WM/wm.key"
CONF
THIEF_KEY="$("$RAMPART" keys add --principal thief --role user --state-dir "$WM/state" --format json \
  | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["key"])')"
"$RAMPART" serve --config "$WM/rampart.toml" >/dev/null 2>"$WM/serve.log" &
SERVE_PID=$!
trap 'kill $SERVE_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/v2/health/live" && break; sleep 0.1; done
RAMPART_API_KEY="$THIEF_KEY" "$PY" bench/defend_attacks.py extract "http://127.0.0.1:$PORT/v2/models/digits/infer" \
  "$WORK/thief.csv" "$WORK/served.csv"
kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true
cp "$WM/state/watermark/digits.csv" "$WORK/log.csv"
echo "watermark: the gateway recorded $(($(wc -l < "$WORK/log.csv") - 1)) rows (watermarked and controls) of 5,000 answers"
"$PY" bench/defend_attacks.py train "$WORK/served.csv" "$WORK/surrogate.onnx" --seed 1 --hidden 256 --max-iter 1000 2>/dev/null
set +e
"$RAMPART" watermark verify --model "$WORK/surrogate.onnx" --key "$WM/wm.key" --queries "$WORK/log.csv" --principal thief --format json \
  | sed 's/^/watermark: surrogate (5,000 watermarked answers): /'
identified=0
for seed in 0 1 2 3 4 5 6 7 8 9; do
  "$PY" bench/defend_attacks.py train $DIGITS/train.csv "$WORK/indep$seed.onnx" --seed $seed --hidden $((64 + 16 * seed)) 2>/dev/null
  out="$("$RAMPART" watermark verify --model "$WORK/indep$seed.onnx" --key "$WM/wm.key" --queries "$WORK/log.csv" --principal thief --format json)"
  [ $? -eq 1 ] && identified=$((identified + 1))
  echo "watermark: independent model $seed: $out"
done
set -e
echo "watermark: independent models identified: $identified of 10"

echo "== per-request cost" >&2
"$HARNESS" cost "$WORK/profile.json" $MODEL $DIGITS/test.csv
echo "work files in $WORK" >&2
