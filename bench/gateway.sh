#!/usr/bin/env bash
# Gateway benchmark: wrk against `rampart serve` (TLS 1.3, API key, policy, limits, audit, KServe v2 inference of the
# digits model) and against nginx serving a static 200-byte JSON over TLS 1.3, on the same machine, in one run; then
# the same Rampart with its security stages off, to show what they cost and how close to nginx the rest gets; and the
# full gateway's liveness route, which takes the same TLS, HTTP, ban, per-address limit, metrics and audit record as
# an inference but no authentication, codec or model: what the serving stack alone reaches against nginx. The
# gateways gather concurrent requests' rows into one run of the model (`max_batch`); the full pipeline is measured
# without it too.
#
# Usage: bench/gateway.sh [seconds per run, default 10] [rounds, default 3]
# The servers (and the liveness route) are measured in turn, round after round; each figure is the median of the
# rounds (this machine is shared: one run can be off by a third), and every round's figures are printed too.
# Needs: wrk, nginx, openssl (Debian: apt-get install wrk nginx-light openssl), the Rust toolchain.
set -euo pipefail

source "$(dirname "$0")/lib-gateway.sh"
need_tools wrk nginx openssl python3 curl
build_rampart

# --- nginx: static 200-byte JSON over TLS 1.3 ---
NGINX_PORT="$(free_port)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
    -keyout "$WORK/nginx.key" -out "$WORK/nginx.crt" 2>/dev/null
mkdir -p "$WORK/www"
python3 - "$WORK/www/static.json" <<'PY'
import json, sys
body = {"model_name": "digits", "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 10], "data": []}]}
text = json.dumps(body, separators=(",", ":"))
text = text[:-1] + ',"pad":"' + "x" * (200 - len(text) - 9) + '"}'
assert len(text) == 200, len(text)
open(sys.argv[1], "w").write(text)
PY
cat > "$WORK/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/body;
    proxy_temp_path $WORK/proxy;
    fastcgi_temp_path $WORK/fastcgi;
    uwsgi_temp_path $WORK/uwsgi;
    scgi_temp_path $WORK/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_certificate $WORK/nginx.crt;
        ssl_certificate_key $WORK/nginx.key;
        ssl_protocols TLSv1.3;
        keepalive_requests 100000;
        location / { root $WORK/www; default_type application/json; }
    }
}
CONF
# nginx's workers drop root for an unprivileged user: let them read the static file.
chmod a+x "$WORK"
chmod -R a+rX "$WORK/www"
nginx -c "$WORK/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
PIDS+=($NGINX_PID)

# --- rampart: the full pipeline, and the same with the security stages off ---
# Both gather concurrent requests' rows into one run of the model (`max_batch`, RAMPART_BENCH_MAX_BATCH, default 32;
# the digits MLP's rows are independent); the full pipeline is also measured running each request alone.
MAX_BATCH="${RAMPART_BENCH_MAX_BATCH:-32}"
FULL_PORT="$(free_port)"; OFF_PORT="$(free_port)"; ALONE_PORT="$(free_port)"
echo "max_batch = $MAX_BATCH" | make_config "$FULL_PORT" "$(free_port)" false > "$WORK/full.toml"
echo "max_batch = $MAX_BATCH" | make_config "$OFF_PORT" "$(free_port)" true > "$WORK/off.toml"
make_config "$ALONE_PORT" "$(free_port)" false < /dev/null > "$WORK/alone.toml"
KEY="$("$RAMPART" serve --config "$WORK/full.toml" --check | awk '/API key/ {print $3}')"
[ -n "$KEY" ] || { echo "error: no API key was printed" >&2; exit 2; }
"$RAMPART" serve --config "$WORK/full.toml" >/dev/null &
FULL_PID=$!
"$RAMPART" serve --config "$WORK/off.toml" >/dev/null 2>&1 &
OFF_PID=$!
"$RAMPART" serve --config "$WORK/alone.toml" >/dev/null 2>&1 &
ALONE_PID=$!
PIDS+=("$FULL_PID" "$OFF_PID" "$ALONE_PID")

write_wrk_script "$WORK/infer.lua" "$KEY" "$(python3 -c 'print(",".join(str(round((i % 17) / 16, 4)) for i in range(64)))')"
wait_up "https://127.0.0.1:$NGINX_PORT/static.json"
wait_up "https://127.0.0.1:$FULL_PORT/v2/health/live"
wait_up "https://127.0.0.1:$OFF_PORT/v2/health/live"
wait_up "https://127.0.0.1:$ALONE_PORT/v2/health/live"
# nginx's CPU is its workers' (the master only starts them).
NGINX_WORKERS="$(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
[ -n "$NGINX_WORKERS" ] || { echo "error: nginx started no worker" >&2; exit 2; }
curl -skf -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' -d "$(wrk_body "$WORK/infer.lua")" \
    "https://127.0.0.1:$FULL_PORT/v2/models/digits/infer" >/dev/null || { echo "error: inference through the gateway failed" >&2; exit 2; }

echo "wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, all on this machine ($(nproc) cores)" >&2
ROUNDS="${2:-3}"
NGINX=(); FULL=(); OFF=(); LIVE=(); ALONE=()
for round in $(seq "$ROUNDS"); do
    echo "round $round of $ROUNDS" >&2
    NGINX+=("$(run_wrk nginx "https://127.0.0.1:$NGINX_PORT/static.json" "" "" "$NGINX_WORKERS")")
    FULL+=("$(run_wrk rampart "https://127.0.0.1:$FULL_PORT/v2/models/digits/infer" "$WORK/infer.lua" "" "$FULL_PID")")
    OFF+=("$(run_wrk rampart-no-security "https://127.0.0.1:$OFF_PORT/v2/models/digits/infer" "$WORK/infer.lua" "" "$OFF_PID")")
    LIVE+=("$(run_wrk rampart-live "https://127.0.0.1:$FULL_PORT/v2/health/live" "" "" "$FULL_PID")")
    ALONE+=("$(run_wrk rampart-unbatched "https://127.0.0.1:$ALONE_PORT/v2/models/digits/infer" "$WORK/infer.lua" "" "$ALONE_PID")")
done
# What the stages cost a request, without queueing: one connection, one request at a time, on each server.
echo "then one connection at a time (-c1), for the cost of the security stages" >&2
FULL1="$(run_wrk rampart-c1 "https://127.0.0.1:$FULL_PORT/v2/models/digits/infer" "$WORK/infer.lua" 1)"
OFF1="$(run_wrk rampart-no-security-c1 "https://127.0.0.1:$OFF_PORT/v2/models/digits/infer" "$WORK/infer.lua" 1)"
ALONE1="$(run_wrk rampart-unbatched-c1 "https://127.0.0.1:$ALONE_PORT/v2/models/digits/infer" "$WORK/infer.lua" 1)"

python3 - "$ROUNDS" "${NGINX[@]}" "${FULL[@]}" "${OFF[@]}" "${LIVE[@]}" "${ALONE[@]}" "$FULL1" "$OFF1" "$ALONE1" "$WORK" <<'PY'
import os, statistics, sys
rounds = int(sys.argv[1])
runs = [line.split() for line in sys.argv[2:-1]]
def median(group):
    return [group[0][0]] + [statistics.median(float(r[i]) for r in group) for i in range(1, len(group[0]))]
head = f"{'server':<22}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'non-2xx':>10}{'CPU us/req':>12}"
def line(name, rps, p50, p99, bad, cpu=None):
    cpu = f"{float(cpu):>12.1f}" if cpu is not None else f"{'':>12}"
    return f"{name:<22}{float(rps):>10.0f}{float(p50):>10.3f}{float(p99):>10.3f}{int(float(bad)):>10}{cpu}"
if rounds > 1:
    print("each round:")
    print(head)
    for i in range(rounds):
        for run in (runs[k * rounds + i] for k in range(5)):
            print(line(*run))
    print(f"median of {rounds} rounds:")
rows = [median(runs[k * rounds:(k + 1) * rounds]) for k in range(5)] + [median([r]) for r in runs[5 * rounds:]]
print(head)
for row in rows:
    print(line(*row))
(_, n_rps, n_p50, n_p99, _, n_cpu), (_, f_rps, f_p50, f_p99, _, f_cpu), (_, o_rps, o_p50, o_p99, _, _), \
    (_, l_rps, _, _, _, l_cpu), (_, a_rps, _, a_p99, _, _) = rows[:5]
(_, _, f1_p50, _, _), (_, _, o1_p50, _, _), (_, _, a1_p50, _, _) = rows[5:]
print(f"throughput rampart/nginx: {float(f_rps)/float(n_rps):.2f}x (target >= 0.70)")
print(f"p99 rampart/nginx:        {float(f_p99)/float(n_p99):.2f}x (target <= 2.00)")
# The same gateway with authentication, policy, limits and audit off: what TLS, HTTP, the KServe codec and the model
# cost alone, a ceiling for the full pipeline's ratio on this machine.
print(f"throughput rampart-no-security/nginx: {float(o_rps)/float(n_rps):.2f}x (no target: the ceiling of the first ratio)")
# The liveness route: TLS, HTTP, the per-address stages, metrics and the audit record, without authentication, the
# KServe codec or the model; what is left between it and the first ratio is the work of an inference request.
print(f"throughput rampart-live/nginx: {float(l_rps)/float(n_rps):.2f}x (no target: the serving stack without an inference)")
# The full pipeline running each request alone (no `max_batch`): what gathering the requests' rows gives.
print(f"throughput rampart-unbatched/nginx: {float(a_rps)/float(n_rps):.2f}x, p99 {float(a_p99)/float(n_p99):.2f}x; "
      f"batching adds {(float(f1_p50)-float(a1_p50))*1000:.0f} us at p50 on one connection")
print(f"security stages add at p50, one connection: {(float(f1_p50)-float(o1_p50))*1000:.0f} us (target < 100 us)")
print(f"security stages add at p50, 50 connections: {(float(f_p50)-float(o_p50))*1000:.0f} us (includes queueing)")
# wrk shares the two cores: what it spends on a request is not the server's to spend. At 0.70x of nginx's rate the
# machine has (cores / rate) a request in all; wrk's share of that, against the full pipeline, bounds what is left.
work = sys.argv[-1]
def wrk_cpu(name):
    return statistics.median(float(v) for v in open(f"{work}/{name}.wrk-cpu").read().split())
cores = os.cpu_count() or 1
budget = cores * 1e6 / (0.70 * float(n_rps))
print(f"wrk's own CPU a request: {wrk_cpu('nginx'):.1f} us against nginx, {wrk_cpu('rampart'):.1f} us against the full "
      f"pipeline, {wrk_cpu('rampart-live'):.1f} us against the liveness route; at 0.70x of nginx's rate the machine "
      f"has {budget:.1f} us a request for wrk, the gateway and the kernel together")
# The servers' own CPU a request (user and system time of all their threads, the kernel's work on their behalf
# included), against what is left for the gateway at 0.70x once wrk has taken its share.
print(f"servers' CPU a request: nginx {float(n_cpu):.1f} us, rampart full pipeline {float(f_cpu):.1f} us, liveness route "
      f"{float(l_cpu):.1f} us; at 0.70x of nginx's rate the full pipeline would have "
      f"{budget - wrk_cpu('rampart'):.1f} us a request")
PY
