#!/usr/bin/env bash
# The throughput cost of the inference-time defences in the gateway: wrk against `rampart serve` (TLS 1.3, API key,
# policy, limits, audit, KServe v2 inference of the digits model) with every `[models.defend]` stage on (schema,
# sanitiser, detector, extraction, hardening, watermark, anomaly; images on too, idle for FP32 rows), and against the
# same gateway without them, in one run. Prints both req/s and the ratio (target: the stages cost at most 30%), then
# the throughput with each stage alone, so that a stage's own cost shows.
# The request is a clean test row the detector passes (every answer is a 200 on every server). It is the same row
# every time: the extraction monitor's per-principal history check then meets a repeat, its cheapest path.
# RAMPART_BENCH_ROWS=distinct sends distinct natural rows instead, as one principal that queries a lot does: 20,000
# training rows with three pixels each moved one step within the pixel's range in the training data, in turn. The
# monitor then weighs each against the principal's history (up to 4,096 rows), in shadow mode (it takes them for a
# probe, as near-duplicates of each other); the schema stage passes them all, the detector refuses a few (counted as
# non-2xx), and wrk spends more a request building them.
#
# Usage: bench/defend-gateway.sh [seconds per run, default 10] [rounds, default 4; each figure is the median]
# (RAMPART_BENCH_MAX_BATCH=32 measures the same with every gateway batching its requests)
# Needs: wrk, openssl, curl, python3 (Debian: apt-get install wrk openssl curl python3), the Rust toolchain.
set -euo pipefail

source "$(dirname "$0")/lib-gateway.sh"
need_tools wrk python3 curl
build_rampart
DIGITS="$ROOT/examples/digits"

# The defences' inputs: the training data's profile, clean held-out rows for the detector's calibration (the first
# 300 test rows; the request is one of the others), a watermark key.
"$RAMPART" profile "$DIGITS/train.csv" --label-column label -o "$WORK/profile.json" >/dev/null
head -n 301 "$DIGITS/test.csv" > "$WORK/calibration.csv"
"$RAMPART" watermark keygen -o "$WORK/wm.key" >/dev/null
# RAMPART_BENCH_MAX_BATCH=N gives every gateway `max_batch = N` (default: each request runs alone).
model_keys() { if [ -n "${RAMPART_BENCH_MAX_BATCH:-}" ]; then echo "max_batch = $RAMPART_BENCH_MAX_BATCH"; fi; }
# The model's keys, then the `[models.defend]` tables of every stage, or (with an argument) of that stage alone.
defend_tables() { # [stage]
    local only="${1:-}"
    model_keys
    echo "[models.defend]"
    echo "profile = \"$WORK/profile.json\""
    stage() { [ -z "$only" ] || [ "$only" = "$1" ]; }
    if stage images; then echo "[models.defend.images]"; fi
    if stage schema; then printf '[models.defend.schema]\ntolerance = 0.0\n'; fi
    if stage sanitise; then printf '[models.defend.sanitise]\nsteps = [{ kind = "bit_depth", bits = 4 }]\n'; fi
    if stage detector; then
        printf '[models.defend.detector]\ncalibration_data = "%s"\naction = "reject"\n' "$WORK/calibration.csv"
    fi
    if stage extraction; then
        echo "[models.defend.extraction]"
        # Distinct rows near the training data's are near-duplicates of each other, which the monitor takes for a
        # probe: in shadow mode it weighs every query and records its decision without refusing the client.
        if [ "${RAMPART_BENCH_ROWS:-same}" = distinct ]; then echo "shadow = true"; fi
    fi
    if stage harden; then printf '[models.defend.harden]\ndefault = { mode = "top_k", k = 3, decimals = 2 }\n'; fi
    if stage watermark; then printf '[models.defend.watermark]\nkey = "%s"\n' "$WORK/wm.key"; fi
    if stage anomaly; then echo "[models.defend.anomaly]"; fi
}
STAGES=(schema sanitise detector extraction harden watermark anomaly)
ON_PORT="$(free_port)"; OFF_PORT="$(free_port)"
defend_tables | make_config "$ON_PORT" "$(free_port)" false > "$WORK/on.toml"
model_keys | make_config "$OFF_PORT" "$(free_port)" false > "$WORK/off.toml"
KEY="$("$RAMPART" serve --config "$WORK/off.toml" --check | awk '/API key/ {print $3}')"
[ -n "$KEY" ] || { echo "error: no API key was printed" >&2; exit 2; }
"$RAMPART" serve --config "$WORK/on.toml" >/dev/null 2>"$WORK/on.log" &
ON_PID=$!
PIDS+=($!)
"$RAMPART" serve --config "$WORK/off.toml" >/dev/null 2>&1 &
OFF_PID=$!
PIDS+=($!)
declare -A STAGE_PORT
for s in "${STAGES[@]}"; do
    STAGE_PORT[$s]="$(free_port)"
    defend_tables "$s" | make_config "${STAGE_PORT[$s]}" "$(free_port)" false > "$WORK/$s.toml"
    "$RAMPART" serve --config "$WORK/$s.toml" >/dev/null 2>"$WORK/$s.log" &
    PIDS+=($!)
done
wait_up "https://127.0.0.1:$ON_PORT/v2/health/live"
wait_up "https://127.0.0.1:$OFF_PORT/v2/health/live"
for s in "${STAGES[@]}"; do wait_up "https://127.0.0.1:${STAGE_PORT[$s]}/v2/health/live"; done

# The first held-out test row (after the calibration rows) that the defences answer with a 200.
write_answered_row "$WORK/infer.lua" "$KEY" "$ON_PORT" \
    || { echo "error: no test row was answered with 200 by the defended gateway (see $WORK/on.log)" >&2; exit 2; }
curl -skf -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d "$(wrk_body "$WORK/infer.lua")" \
    "https://127.0.0.1:$OFF_PORT/v2/models/digits/infer" >/dev/null || { echo "error: inference without the defences failed" >&2; exit 2; }
if [ "${RAMPART_BENCH_ROWS:-same}" = distinct ]; then
    python3 - "$DIGITS/train.csv" "$KEY" > "$WORK/distinct.lua" <<'PY'
import json, random, sys
lines = open(sys.argv[1]).read().splitlines()[1:]
base = [[float(v) for v in line.split(",")[:64]] for line in lines]
low = [min(r[j] for r in base) for j in range(64)]
high = [max(r[j] for r in base) for j in range(64)]
random.seed(7)
print('wrk.method = "POST"')
print('wrk.headers["Content-Type"] = "application/json"')
print(f'wrk.headers["Authorization"] = "Bearer {sys.argv[2]}"')
print("bodies = {")
for _ in range(20_000):
    row = list(random.choice(base))
    for _ in range(3):
        j = random.randrange(64)
        row[j] = min(high[j], max(low[j], row[j] + random.choice((-1, 1)) / 16))
    body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}
    print(json.dumps(json.dumps(body)) + ",")
print("}")
print("n = 0")
print("request = function() n = n + 1; return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1]) end")
PY
    mv "$WORK/distinct.lua" "$WORK/infer.lua"
    echo "distinct rows: 20,000 training rows, each with three pixels moved a step" >&2
fi

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, all on this machine ($(nproc) cores)" >&2
ROUNDS="${2:-4}"
# Every server first answers for two seconds unmeasured: its first requests grow its allocator's pages, its model's
# run states and the defences' per-principal state, and the first server measured would pay for that alone.
echo "warming up each server (2 s)" >&2
for port in "$ON_PORT" "$OFF_PORT" "${STAGE_PORT[@]}"; do
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s "$WORK/infer.lua" "https://127.0.0.1:$port/v2/models/digits/infer" >/dev/null
done
RUNS=()
for round in $(seq "$ROUNDS"); do
    # The defended and the undefended gateway take turns to go first, so that the machine's drift over a round
    # (it is shared) does not fall on one of them every time.
    echo "round $round of $ROUNDS: defended and undefended (in turn first), then each stage alone" >&2
    on_url="https://127.0.0.1:$ON_PORT/v2/models/digits/infer"
    off_url="https://127.0.0.1:$OFF_PORT/v2/models/digits/infer"
    if (( round % 2 )); then
        on="$(run_wrk rampart-defended "$on_url" "$WORK/infer.lua" "" "$ON_PID")"
        off="$(run_wrk rampart-undefended "$off_url" "$WORK/infer.lua" "" "$OFF_PID")"
    else
        off="$(run_wrk rampart-undefended "$off_url" "$WORK/infer.lua" "" "$OFF_PID")"
        on="$(run_wrk rampart-defended "$on_url" "$WORK/infer.lua" "" "$ON_PID")"
    fi
    RUNS+=("$on" "$off")
    for s in "${STAGES[@]}"; do
        RUNS+=("$(run_wrk "only-$s" "https://127.0.0.1:${STAGE_PORT[$s]}/v2/models/digits/infer" "$WORK/infer.lua")")
    done
done

python3 - "$ROUNDS" "${RUNS[@]}" <<'PY'
import statistics, sys
rounds = int(sys.argv[1])
runs = [line.split() for line in sys.argv[2:]]
per = len(runs) // rounds
# Each server's median over the rounds (this machine is shared: one run can be off by a third).
rows = []
for k in range(per):
    group = [runs[r * per + k] for r in range(rounds)]
    rows.append([group[0][0]] + [statistics.median(float(g[i]) for g in group) for i in range(1, 5)])
alone, rows = rows[2:], rows[:2]
print(f"median of {rounds} round(s)")
print(f"{'server':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}")
for name, rps, p50, p99, bad in rows:
    print(f"{name:<22}{float(rps):>10.0f}{float(p50):>10.3f}{float(p99):>10.3f}{int(bad):>10}")
(_, on, _, _, on_bad), (_, off, _, _, off_bad) = rows
ratio = float(on) / float(off)
print(f"throughput defended/undefended: {ratio:.2f}x; the defences cost {(1 - ratio) * 100:.0f}% (target <= 30%)")
paired = statistics.median(float(runs[r * per][1]) / float(runs[r * per + 1][1]) for r in range(rounds))
print(f"  the same, as the median of each round's ratio: {paired:.2f}x; cost {(1 - paired) * 100:.0f}%")
# The gateway's own CPU time per request (all its threads), which drifts less with the machine than req/s does; wrk's
# share of the two cores is not in it.
on_cpu, off_cpu = (statistics.median(float(runs[r * per + k][5]) for r in range(rounds)) for k in (0, 1))
print(f"gateway CPU a request: defended {on_cpu:.1f} us, undefended {off_cpu:.1f} us; the defences add {on_cpu - off_cpu:.1f} us")
# A stage's cost is taken against the undefended run of the same round, and the median of those ratios printed: the
# machine's speed drifts over minutes, and a ratio within a round is less exposed to it than a ratio of medians.
print(f"each stage alone, against the undefended gateway of the same round (median of the rounds' ratios):")
for k, (name, rps, p50, p99, bad) in enumerate(alone):
    paired = statistics.median(float(runs[r * per + 2 + k][1]) / float(runs[r * per + 1][1]) for r in range(rounds))
    print(f"  {name[5:]:<12}{float(rps):>10.0f} req/s{paired:>8.2f}x  costs {(1 - paired) * 100:>4.0f}%"
          + (f"  ({int(bad)} non-2xx)" if int(bad) else ""))
if int(on_bad) or int(off_bad):
    print("warning: some answers were not 2xx; the figures include refusals", file=sys.stderr)
PY
