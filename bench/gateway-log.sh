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

source "$(dirname "$0")/lib-gateway.sh"
need_tools wrk curl python3
build_rampart

audit_keys() { # sink
    printf 'sink = "%s"\ndir = "%s"\npath = "%s"' "$1" "$STATE/audit-log" "$STATE/audit.jsonl"
}
JSONL_PORT="$(free_port)"; LOG_PORT="$(free_port)"
make_config "$JSONL_PORT" "$(free_port)" false "$(audit_keys jsonl)" < /dev/null > "$WORK/jsonl.toml"
make_config "$LOG_PORT" "$(free_port)" false "$(audit_keys log)" < /dev/null > "$WORK/log.toml"
KEY="$("$RAMPART" serve --config "$WORK/jsonl.toml" --check | awk '/API key/ {print $3}')"
[ -n "$KEY" ] || { echo "error: no API key was printed" >&2; exit 2; }
"$RAMPART" serve --config "$WORK/jsonl.toml" >/dev/null 2>&1 &
PIDS+=($!)
"$RAMPART" serve --config "$WORK/log.toml" >/dev/null 2>&1 &
LOG_PID=$!
PIDS+=($LOG_PID)

write_wrk_script "$WORK/infer.lua" "$KEY" "$(python3 -c 'print(",".join(str(round((i % 17) / 16, 4)) for i in range(64)))')"
wait_up "https://127.0.0.1:$JSONL_PORT/v2/health/live"
wait_up "https://127.0.0.1:$LOG_PORT/v2/health/live"

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s x2 each, alternating; $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
RESULTS=()
for round in 1 2; do
    RESULTS+=("$(run_wrk jsonl "https://127.0.0.1:$JSONL_PORT/v2/models/digits/infer" "$WORK/infer.lua")")
    RESULTS+=("$(run_wrk log "https://127.0.0.1:$LOG_PORT/v2/models/digits/infer" "$WORK/infer.lua")")
done

# SIGTERM the log gateway: it drains, flushes and signs a final checkpoint; the log must verify.
kill -TERM "$LOG_PID"
for _ in $(seq 1 150); do kill -0 "$LOG_PID" 2>/dev/null || break; sleep 0.1; done
VERIFY="$("$RAMPART" audit verify "$STATE/audit-log" --no-state 2>/dev/null || true)"

python3 - "$VERIFY" "${RESULTS[@]}" <<'PY'
import sys
verify, rows = sys.argv[1], [r.split() for r in sys.argv[2:]]
best = {}
for name, rps, _p50, p99, bad in rows:
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
