#!/usr/bin/env bash
# A/B of two Rampart builds on the same gateway config (TLS 1.3, API key, policy, limits, audit log, KServe v2
# inference of the digits model): wrk against each in turn, round after round, each gateway alone on the machine
# while it is measured. Prints req/s and the gateway process's CPU time per request (user, system) for every run,
# then the medians. Alternating the builds within a round cancels most of this machine's drift over minutes, which a
# single ratio against nginx (bench/gateway.sh) cannot.
#
# Usage: bench/gateway-ab.sh A_BINARY B_BINARY [seconds per run, default 8] [rounds, default 3] [defend.toml]
#   The optional last argument is a `[models.defend]` table to add to the model (as bench/defend-gateway.sh builds).
# Build an older revision with its own target directory, for example:
#   git worktree add /tmp/old REV && (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release -p rampart)
# Needs: wrk, curl, python3 (Debian: apt-get install wrk curl python3).
set -euo pipefail

[ $# -ge 2 ] || { sed -n '2,12p' "$0" >&2; exit 2; }
A="$1"; B="$2"
for bin in "$A" "$B"; do
    [ -x "$bin" ] || { echo "error: \`$bin\` is not an executable Rampart binary" >&2; exit 2; }
done
shift 2
source "$(dirname "$0")/lib-gateway.sh"
need_tools wrk python3 curl
ROUNDS="${2:-3}"
EXTRA="${3:-/dev/null}"
[ -r "$EXTRA" ] || { echo "error: cannot read the defend table \`$EXTRA\`" >&2; exit 2; }

PORT="$(free_port)"
make_config "$PORT" "$(free_port)" false < "$EXTRA" > "$WORK/ab.toml"
KEY="$("$A" serve --config "$WORK/ab.toml" --check | awk '/API key/ {print $3}')"
[ -n "$KEY" ] || { echo "error: no API key was printed" >&2; exit 2; }
write_wrk_script "$WORK/infer.lua" "$KEY" "$(python3 -c 'print(",".join(str(round((i % 17) / 16, 4)) for i in range(64)))')"
if [ "$EXTRA" != /dev/null ]; then
    # With defences, a row they answer with 200 (a detector refuses the synthetic one): the first held-out test row
    # after the 300 that bench/defend-gateway.sh calibrates on that build A answers.
    "$A" serve --config "$WORK/ab.toml" >/dev/null 2>"$WORK/pick.log" &
    PICK=$!
    wait_up "https://127.0.0.1:$PORT/v2/health/live"
    ANSWERED=true
    write_answered_row "$WORK/infer.lua" "$KEY" "$PORT" || ANSWERED=false
    kill "$PICK"; wait "$PICK" 2>/dev/null || true
    $ANSWERED || { echo "error: no test row was answered with 200 (see $WORK/pick.log)" >&2; exit 2; }
fi

# Prints `label req/s user_us_per_request system_us_per_request`.
measure() { # label binary
    "$2" serve --config "$WORK/ab.toml" >/dev/null 2>"$WORK/$1.log" &
    local pid=$!
    wait_up "https://127.0.0.1:$PORT/v2/health/live"
    local before after
    before="$(awk '{print $14, $15}' "/proc/$pid/stat")"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/infer.lua" \
        "https://127.0.0.1:$PORT/v2/models/digits/infer" > "$WORK/$1.txt"
    after="$(awk '{print $14, $15}' "/proc/$pid/stat")"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    python3 - "$1" "$WORK/$1.txt" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import re, sys
label, path, before, after, tck = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split(), int(sys.argv[5])
text = open(path).read()
done = int(re.search(r"(\d+) requests in", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
if bad:
    print(f"warning: {label}: {bad.group(1)} answers were not 2xx", file=sys.stderr)
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
user = (int(after[0]) - int(before[0])) / tck * 1e6 / max(done, 1)
system = (int(after[1]) - int(before[1])) / tck * 1e6 / max(done, 1)
print(f"{label} {rps:.0f} {user:.1f} {system:.1f}")
PY
}

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $ROUNDS rounds, A: $A, B: $B" >&2
RUNS=()
for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    RUNS+=("$(measure A "$A")")
    RUNS+=("$(measure B "$B")")
done

python3 - "${RUNS[@]}" <<'PY'
import statistics, sys
runs = [line.split() for line in sys.argv[1:]]
print(f"{'build':<8}{'req/s':>10}{'user us':>10}{'sys us':>10}{'CPU us/request':>16}")
for label, rps, user, system in runs:
    print(f"{label:<8}{float(rps):>10.0f}{float(user):>10.1f}{float(system):>10.1f}{float(user) + float(system):>16.1f}")
med = {}
for label in ("A", "B"):
    mine = [r for r in runs if r[0] == label]
    med[label] = (statistics.median(float(r[1]) for r in mine),
                  statistics.median(float(r[2]) + float(r[3]) for r in mine))
    print(f"median {label}: {med[label][0]:.0f} req/s, {med[label][1]:.1f} us CPU a request")
print(f"B/A: throughput {med['B'][0] / med['A'][0]:.2f}x, CPU a request {med['B'][1] / med['A'][1]:.2f}x")
PY
