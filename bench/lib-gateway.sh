# Shared setup of the gateway benchmarks (bench/gateway.sh, bench/gateway-ab.sh, bench/defend-gateway.sh,
# bench/gateway-log.sh); sourced, not run. Defines: ROOT, WORK and STATE (removed on exit), PIDS (killed on exit),
# DURATION, THREADS, CONNECTIONS, RAMPART (a release build, or RAMPART_PROFILE's), and the functions need_tools, free_port, make_config,
# write_wrk_script, write_answered_row, wrk_body, cpu_ticks, wait_up, run_wrk.
#
# The gateways' state and audit logs go to STATE: under the repository's target/ (as the default `.rampart` sits in
# the working directory), or under RAMPART_BENCH_STATE=DIR. The audit log writes two tile files per 256 entries, and
# on a disk like the development machine's (ext4 without a journal, which skips inodes deleted in the last minutes
# when it allocates one) creating a file cost anywhere from 27 us to 590 us, depending on what other processes had
# just deleted near it: compare with RAMPART_BENCH_STATE=/dev/shm to see how much of a run that was.
DURATION="${1:-10}"
THREADS=2
CONNECTIONS=50
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d)"
mkdir -p "${RAMPART_BENCH_STATE:-$ROOT/target}"
STATE="$(mktemp -d "${RAMPART_BENCH_STATE:-$ROOT/target}/bench-state.XXXXXX")"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK" "$STATE"
}
trap cleanup EXIT

need_tools() { # tool...
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "error: \`$tool\` is not installed (Debian: apt-get install wrk nginx-light openssl python3 curl)" >&2; exit 2; }
    done
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Where cargo puts what it builds (as cargo resolves it: the environment, a config file, or `target`).
target_dir() {
    cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

# RAMPART_PROFILE=quick builds without LTO (minutes sooner after a change; the figures are then a few percent lower).
build_rampart() {
    local profile="${RAMPART_PROFILE:-release}"
    echo "building rampart ($profile)..." >&2
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
    cargo build --profile "$profile" -q -p rampart --manifest-path "$ROOT/Cargo.toml"
    if [ "$profile" = dev ]; then profile=debug; fi
    RAMPART="$(target_dir)/$profile/rampart"
}

# The gateway's config for the digits model with limits out of the way; the model's extra tables (such as
# `[models.defend]`) come on stdin. The `[audit]` table's keys default to a directory of its own per port.
make_config() { # port admin_port disable_security_stages(true|false) [audit keys]
    local audit="${4:-}"
    [ -n "$audit" ] || audit="dir = \"$STATE/audit-$1\""
    cat <<CONF
[server]
listen = "127.0.0.1:$1"
admin_listen = "127.0.0.1:$2"
state_dir = "$STATE/state"
disable_security_stages = $3
[audit]
$audit
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
    cat
}

# A wrk script posting one KServe v2 request of the digits model with the API key.
write_wrk_script() { # out.lua key row(comma-separated 64 values)
    python3 - "$1" "$2" "$3" <<'PY'
import json, sys
row = [float(v) for v in sys.argv[3].split(",")]
body = json.dumps({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]})
lua = f'''wrk.method = "POST"
wrk.body = {json.dumps(body)}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {sys.argv[2]}"
'''
open(sys.argv[1], "w").write(lua)
PY
}

# Writes to out.lua the first held-out digits test row after the 300 that bench/defend-gateway.sh calibrates its
# detector on that the gateway on `port` answers with 200 (a detector refuses the synthetic row); fails if none of
# the next 20 is.
write_answered_row() { # out.lua key port
    local line candidate status
    for line in $(tail -n +302 "$ROOT/examples/digits/test.csv" | head -n 20); do
        candidate="$(echo "$line" | cut -d, -f1-64)"
        write_wrk_script "$1" "$2" "$candidate"
        status="$(curl -sk -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" -H 'Content-Type: application/json' \
            -d "$(wrk_body "$1")" "https://127.0.0.1:$3/v2/models/digits/infer")"
        [ "$status" = 200 ] && return 0
    done
    return 1
}

# The body a wrk script posts.
wrk_body() { sed -n 's/^wrk.body = //p' "$1" | python3 -c 'import json,sys; print(json.loads(sys.stdin.read()))'; }

# The CPU time (user and system, in clock ticks) the processes have used so far.
cpu_ticks() { # pid...
    local pid total=0
    for pid in "$@"; do total=$(( total + $(awk '{print $14 + $15}' "/proc/$pid/stat") )); done
    echo "$total"
}

wait_up() { for _ in $(seq 1 100); do curl -sk -o /dev/null "$1" && return 0; sleep 0.1; done; echo "error: $1 did not come up" >&2; exit 2; }

# Prints `name req/s p50_ms p99_ms non2xx`, and with the server's pids (one, or several separated by spaces, such as
# nginx's workers) their CPU time (user and system, all threads) per request in microseconds as a sixth field (the
# name must not hold spaces).
run_wrk() { # name url [script] [connections] [server_pids]
    local out="$WORK/$1.txt"
    local conns="${4:-$CONNECTIONS}"
    local before=0 after=0
    [ -z "${5:-}" ] || before="$(cpu_ticks $5)"
    # wrk's own CPU time (user and system) goes to $WORK/<name>.wrk-cpu, a line a run: the load generator shares
    # the two cores, and what it spends a request is taken from the server measured.
    local TIMEFORMAT='%U %S'
    { time wrk -t"$(( conns < THREADS ? conns : THREADS ))" -c"$conns" -d"${DURATION}s" --latency ${3:+-s "$3"} "$2" \
        > "$out" 2> "$WORK/$1.wrk-err"; } 2>> "$WORK/$1.wrk-time"
    cat "$WORK/$1.wrk-err" >&2
    [ -z "${5:-}" ] || after="$(cpu_ticks $5)"
    python3 - "$out" "$1" "${5:+$((after - before))}" "$(getconf CLK_TCK)" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = ms(*re.search(r"\s50%\s+([\d.]+)(us|ms|s)", text).groups())
p99 = ms(*re.search(r"\s99%\s+([\d.]+)(us|ms|s)", text).groups())
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
errors = re.search(r"Socket errors:.*", text)
done = int(re.search(r"(\d+) requests in", text).group(1))
cpu = f" {int(sys.argv[3]) / int(sys.argv[4]) * 1e6 / max(done, 1):.1f}" if sys.argv[3] else ""
print(f"{sys.argv[2]} {rps:.0f} {p50:.3f} {p99:.3f} {non2xx.group(1) if non2xx else 0}{cpu}")
user, system = open(sys.argv[1].removesuffix(".txt") + ".wrk-time").read().split()[-2:]
with open(sys.argv[1].removesuffix(".txt") + ".wrk-cpu", "a") as f:
    f.write(f"{(float(user) + float(system)) * 1e6 / max(done, 1):.2f}\n")
if errors:
    print(f"# {sys.argv[2]}: {errors.group(0)}", file=sys.stderr)
PY
}
