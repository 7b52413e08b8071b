#!/usr/bin/env bash
# Does the daemon keep answering while one rollout is slow to stop?
#
#   bench/responsiveness.sh [RELOADS]    (default 10)
#
# One `serin serve` (release build, own session) with 20 idle rollouts
# registered (built-in proxy), a private nginx (prefix in a temp directory,
# as crates/serin/tests/common/nginx.rs runs it, also serving two upstreams
# that answer 200) and two probes, one asking
# `GET /metrics` and one `GET /api/v1/rollouts`, each a request every 50 ms
# on a fresh connection, timing every answer. Three phases:
#   idle    10 s with nothing else going on
#   drain   a rollout whose proxy holds a request open (its upstream accepts
#           and never answers) is cleaned up (`DELETE /api/v1/rollouts/NAME`):
#           its proxy drains for up to 30 s (ProxyOptions::drain_timeout)
#   nginx   RELOADS times: an nginx-provider rollout registered (include file
#           written, `nginx -t`, `nginx -s reload`), deployed (weight 10:
#           another reload) and cleaned up (weight 0: another reload)
# and for each the probes' answer times: count, p50, p99, max, and how many
# took over 100 ms. Everything on 127.0.0.1, stopped on exit.
set -euo pipefail

RELOADS=${1:-10}
NGINX=${NGINX:-/usr/sbin/nginx}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$NGINX" ] || { echo "nginx not found at $NGINX" >&2; exit 1; }

echo "building serin (release)..." >&2
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p serin)
SERIN=$TARGET/release/serin

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$TMP/nginx/nginx.pid" ] && kill "$(cat "$TMP/nginx/nginx.pid")" 2>/dev/null || true
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

source "$ROOT/bench/nginx-conf.sh"   # free_port
wait_http() { # URL: answers within 20 s
    for _ in $(seq 200); do
        curl -sS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing answers at $1" >&2
    return 1
}

# The private nginx: includes conf.d/*.conf, in the foreground (killed on exit).
N=$TMP/nginx
mkdir -p "$N/conf.d" "$N/logs"
[ "$(id -u)" = 0 ] && USER_LINE="user root;" || USER_LINE=
UPA=$(free_port); UPB=$(free_port)   # two upstreams it serves itself
cat >"$N/nginx.conf" <<CONF
$USER_LINE
worker_processes 1; pid $N/nginx.pid; error_log $N/logs/error.log warn;
events { worker_connections 512; }
http {
    access_log off;
    client_body_temp_path $N/body; proxy_temp_path $N/proxy;
    fastcgi_temp_path $N/fastcgi; uwsgi_temp_path $N/uwsgi; scgi_temp_path $N/scgi;
    server { listen 127.0.0.1:$UPA; location / { return 200 "ok\n"; } }
    server { listen 127.0.0.1:$UPB; location / { return 200 "ok\n"; } }
    include $N/conf.d/*.conf;
}
CONF
"$NGINX" -p "$N" -c "$N/nginx.conf" -g "daemon off;" 2>>"$N/logs/error.log" &
PIDS+=($!)
NGX_TEST="$NGINX -p $N -c $N/nginx.conf -t -q"
NGX_RELOAD="$NGINX -p $N -c $N/nginx.conf -s reload"

# An upstream that takes requests and never answers: it writes `held` once
# a request has arrived (bounded: exits after 120 s).
HOLE=$(free_port)
python3 - "$HOLE" "$TMP/held" <<'PY' &
import socket, sys, threading, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
s.settimeout(120)
kept = []
def take():
    while True:
        c, _ = s.accept()
        kept.append(c)
        if c.recv(4096):
            open(sys.argv[2], "w").write("held\n")
threading.Thread(target=take, daemon=True).start()
time.sleep(120)
PY
PIDS+=($!)

API=$(free_port)
RUST_LOG=warn setsid "$SERIN" serve --listen "127.0.0.1:$API" --state-dir "$TMP/state" \
    --allow-command "$NGX_TEST" --allow-command "$NGX_RELOAD" \
    --allow-path "$N/conf.d" --allow-path "$N/logs" 2>"$TMP/serve.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$API/healthz"

rollout() { # NAME PORT TRAFFIC-LINES STABLE-PORT: a rollout file, one hour pause at 10 %
    cat <<YAML
name: $1
stable:
  version: v1
  upstream: http://127.0.0.1:$4
canary:
  version: v2
  upstream: http://127.0.0.1:$UPB
traffic:
$3  listen: 127.0.0.1:$2
steps:
  - setWeight: 10
  - pause: { duration: 1h }
YAML
}
call() { # METHOD PATH [BODY]: prints status and seconds
    curl -sS --max-time 90 -o /dev/null -w '%{http_code} %{time_total}\n' -X "$1" \
        ${3:+-H 'content-type: application/yaml' --data-binary "$3"} "http://127.0.0.1:$API$2"
}
for i in $(seq 20); do
    read -r code _ < <(call POST /api/v1/rollouts "$(rollout "idle-$i" "$(free_port)" "  provider: builtin
" "$UPA")")
    [ "$code" = 201 ] || [ "$code" = 200 ] || { echo "register idle-$i: $code" >&2; exit 1; }
done

# The probe: GET URL every 50 ms on a fresh connection until STOP exists
# (at most MAX s); one line per answer: start offset, seconds, status.
cat >"$TMP/probe.py" <<'PY'
import http.client, os, sys, time
host, port, path, out, stop, most = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], float(sys.argv[6])
t0 = time.monotonic()
with open(out, "w") as f:
    while not os.path.exists(stop) and time.monotonic() - t0 < most:
        a = time.monotonic()
        try:
            c = http.client.HTTPConnection(host, port, timeout=90)
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            status = r.status
            c.close()
        except OSError as e:
            status = type(e).__name__
        b = time.monotonic()
        f.write(f"{a - t0:.3f} {b - a:.6f} {status}\n")
        f.flush()
        time.sleep(max(0.0, 0.05 - (b - a)))
PY
start_probes() { # PHASE
    rm -f "$TMP/stop"
    python3 "$TMP/probe.py" 127.0.0.1 "$API" /metrics "$TMP/$1-metrics" "$TMP/stop" 120 &
    P1=$!
    python3 "$TMP/probe.py" 127.0.0.1 "$API" /api/v1/rollouts "$TMP/$1-rollouts" "$TMP/stop" 120 &
    P2=$!
    PIDS+=("$P1" "$P2")
}
stop_probes() {
    touch "$TMP/stop"
    wait "$P1" "$P2"
}
summary() { # PHASE
    for what in metrics rollouts; do
        sort -k2 -g "$TMP/$1-$what" | awk -v p="$1" -v w="$what" '
            { a[NR] = $2 * 1000; if ($2 > 0.1) slow++; if ($3 != 200) bad++ }
            END { printf "  %-6s %-24s %4d answers  p50 %7.1f ms  p99 %8.1f ms  max %8.1f ms  over 100 ms: %d  not 200: %d\n",
                  p, (w == "metrics" ? "GET /metrics" : "GET /api/v1/rollouts"), NR, a[int((NR + 1) / 2)],
                  a[int(NR * 0.99 + 0.5)], a[NR], slow, bad }'
    done
}

echo "$(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); $("$NGINX" -v 2>&1)"

# idle
start_probes idle
sleep 10
stop_probes

# drain: a request held open on a rollout's proxy, then its cleanup.
HELD_PORT=$(free_port)
read -r code _ < <(call POST /api/v1/rollouts "$(rollout held "$HELD_PORT" "  provider: builtin
" "$HOLE")")
[ "$code" = 201 ] || [ "$code" = 200 ] || { echo "register held: $code" >&2; exit 1; }
curl -sS --max-time 90 -o /dev/null -w '%{http_code} %{time_total}\n' \
    "http://127.0.0.1:$HELD_PORT/held" >"$TMP/held-answer" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -f "$TMP/held" ] && break; sleep 0.1; done
[ -f "$TMP/held" ] || { echo "the held request did not reach its upstream" >&2; exit 1; }
start_probes drain
sleep 2
read -r code secs < <(call DELETE /api/v1/rollouts/held)
sleep 2
stop_probes
echo "cleanup of a rollout holding a request: HTTP $code in $secs s"

# nginx: register, deploy, clean up an nginx-provider rollout RELOADS times.
NPORT=$(free_port)
NGINX_TRAFFIC="  provider: nginx
  nginx:
    include: $N/conf.d/serin-edge.conf
    test: $NGX_TEST
    reload: $NGX_RELOAD
    accessLog: $N/logs/serin-edge.json
"
start_probes nginx
sleep 2
times=()
for i in $(seq "$RELOADS"); do
    read -r c1 s1 < <(call POST /api/v1/rollouts "$(rollout edge "$NPORT" "$NGINX_TRAFFIC" "$UPA")")
    read -r c2 s2 < <(curl -sS --max-time 90 -o /dev/null -w '%{http_code} %{time_total}\n' \
        -H 'content-type: application/json' --data '{"version":"v2"}' \
        "http://127.0.0.1:$API/api/v1/rollouts/edge/deploy")
    read -r c3 s3 < <(call DELETE /api/v1/rollouts/edge)
    [ "${c1:0:1}${c2:0:1}${c3:0:1}" = 222 ] ||
        { echo "nginx round $i: register $c1, deploy $c2, cleanup $c3" >&2; tail -5 "$TMP/serve.log" >&2; exit 1; }
    times+=("$s1/$s2/$s3")
done
sleep 2
stop_probes
echo "nginx rollout register/deploy/cleanup, seconds: ${times[*]}"

echo
echo "answer times of the two probes (a request every 50 ms each):"
summary idle
summary drain
summary nginx
echo "held request answered: $(cat "$TMP/held-answer")"
grep -i -E "warn|error" "$TMP/serve.log" | head -5 || true
