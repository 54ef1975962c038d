#!/usr/bin/env bash
# The cost of the tamper-evident audit log in the gateway: wrk against two `rampart serve` that differ only in
# their audit sink, `[audit] sink = "jsonl"` (a JSON-lines file, fsync every flush) and `sink = "log"` (rampart-log:
# RFC 6962 tree, C2SP tiles, signed checkpoints, group-committed fsync), same TLS 1.3, API key, policy, limits and
# digits model. Runs alternate (jsonl, log, jsonl, log); the best of each is kept. Prints both and the ratio (target
# >= 0.90), then checks that `rampart audit verify` passes on what the gateway wrote after its SIGTERM drain.
#
# Usage: bench/gateway-log.sh [seconds per run, default 10]
# Needs: wrk, curl, python3 (Debian: apt-get install wrk curl python3), the Rust toolchain.
set -euo pipefail

DURATION="${1:-10}"
THREADS=2
CONNECTIONS=50
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "error: \`$tool\` is not installed (Debian: apt-get install wrk curl python3)" >&2; exit 2; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

echo "building rampart (release)..." >&2
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
cargo build --release -q -p rampart --manifest-path "$ROOT/Cargo.toml"
RAMPART="$CARGO_TARGET_DIR/release/rampart"

make_config() { # port sink
    cat <<CONF
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$(free_port)"
state_dir = "$WORK/state"
[audit]
sink = "$2"
dir = "$WORK/audit-log"
path = "$WORK/audit.jsonl"
[deploy]
trusted_keys = ["$ROOT/examples/digits/release.pub"]
[limits]
rate_per_principal = { per_second = 1000000.0, burst = 1000000 }
rate_per_ip = { per_second = 1000000.0, burst = 1000000 }
daily_quota = 1000000000
concurrency_per_principal = 1000
[[models]]
name = "digits"
onnx = "$ROOT/examples/digits/model/model.onnx"
workers = 2
queue = 1024
CONF
}
JSONL_PORT="$(free_port)"; LOG_PORT="$(free_port)"
make_config "$JSONL_PORT" jsonl > "$WORK/jsonl.toml"
make_config "$LOG_PORT" log > "$WORK/log.toml"
KEY="$("$RAMPART" serve --config "$WORK/jsonl.toml" --check | awk '/API key/ {print $3}')"
[ -n "$KEY" ] || { echo "error: no API key was printed" >&2; exit 2; }
"$RAMPART" serve --config "$WORK/jsonl.toml" >/dev/null 2>&1 &
PIDS+=($!)
"$RAMPART" serve --config "$WORK/log.toml" >/dev/null 2>&1 &
LOG_PID=$!
PIDS+=($LOG_PID)

python3 - "$WORK/infer.lua" "$KEY" <<'PY'
import json, sys
row = [round((i % 17) / 16, 4) for i in range(64)]
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]})
open(sys.argv[1], "w").write(f'''wrk.method = "POST"
wrk.body = {json.dumps(body)}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {sys.argv[2]}"
''')
PY

wait_up() { for _ in $(seq 1 100); do curl -sk -o /dev/null "$1" && return 0; sleep 0.1; done; echo "error: $1 did not come up" >&2; exit 2; }
wait_up "https://127.0.0.1:$JSONL_PORT/v2/health/live"
wait_up "https://127.0.0.1:$LOG_PORT/v2/health/live"

run_wrk() { # url -> "rps p99_ms non2xx"
    local out="$WORK/wrk.txt"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency -s "$WORK/infer.lua" "$1" > "$out"
    python3 - "$out" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
v, u = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", text).groups()
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
print(f"{rps:.0f} {float(v) * unit[u]:.3f} {bad.group(1) if bad else 0}")
PY
}

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s x2 each, alternating; $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
RESULTS=()
for round in 1 2; do
    RESULTS+=("jsonl $(run_wrk "https://127.0.0.1:$JSONL_PORT/v2/models/digits/infer")")
    RESULTS+=("log $(run_wrk "https://127.0.0.1:$LOG_PORT/v2/models/digits/infer")")
done

# SIGTERM the log gateway: it drains, flushes and signs a final checkpoint; the log must verify.
kill -TERM "$LOG_PID"
for _ in $(seq 1 150); do kill -0 "$LOG_PID" 2>/dev/null || break; sleep 0.1; done
VERIFY="$("$RAMPART" audit verify "$WORK/audit-log" --no-state 2>/dev/null || true)"

python3 - "$VERIFY" "${RESULTS[@]}" <<'PY'
import sys
verify, rows = sys.argv[1], [r.split() for r in sys.argv[2:]]
best = {}
for name, rps, p99, bad in rows:
    if name not in best or float(rps) > float(best[name][0]):
        best[name] = (rps, p99, bad)
print(f"{'audit sink':<22}{'req/s':>10}{'p99 ms':>10}{'non-2xx':>10}")
for name in ("jsonl", "log"):
    rps, p99, bad = best[name]
    print(f"{name:<22}{float(rps):>10.0f}{float(p99):>10.3f}{int(bad):>10}")
ratio = float(best["log"][0]) / float(best["jsonl"][0])
print(f"throughput log/jsonl: {ratio:.2f}x (target >= 0.90)")
print(f"rampart audit verify after SIGTERM: {verify.strip() or 'FAILED (no output)'}")
PY
