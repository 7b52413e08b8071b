#!/usr/bin/env bash
# One `serin serve` carrying N rollouts at once, each judged every 10 s.
#
#   bench/scale.sh [COUNTS] [WINDOW] [REQUESTS]    (default "10 100 500" 60 200)
#
# For each N in COUNTS, a fresh daemon (release build, own session as under a
# service manager, fresh state directory) gets N rollouts over its API, each
# with the built-in proxy on a port of its own (idle: no traffic is sent)
# and `analysis.prometheus` pointing at bench/prometheus-standin.py, which
# answers every query with steadily growing counters. So each rollout costs
# the daemon what a real one does per interval (six instant queries over
# HTTP, the judge's sequential tests, the decision persisted in SQLite with
# its sample) without a load generator and upstreams competing for the
# machine (the stand-in also answers the health checks on two more ports,
# the rollouts' upstreams; nothing is sent through the proxies). Every rollout is deployed and stays in a one-hour pause at weight
# 10, passing each verdict.
#
# Once every rollout has a verdict, it measures:
#   cpu       the daemon's user+system time over WINDOW seconds
#             (/proc/PID/stat), as a share of one core; nothing else is
#             asked of the daemon during the window
#   verdicts  how many verdicts it made in the window (serin_verdicts_total),
#             against the N × WINDOW / 10 expected
#   rss       VmRSS after the window (and the peak, VmHWM)
#   api       REQUESTS sequential `GET /api/v1/rollouts` on one keep-alive
#             connection (curl's time_total): p50, p99, max
#   dashboard median of 5 loads of the dashboard in headless Chromium, from
#             navigation start to the first frame painted with all N cards
#             (bench/dashboard-load.mjs)
# then stops the daemon. Everything listens on 127.0.0.1 and is stopped on
# exit. Needs python3, curl, node (20+) and chromium.
set -euo pipefail

COUNTS=${1:-"10 100 500"}
WINDOW=${2:-60}
REQUESTS=${3:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for tool in python3 curl node chromium; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done
# Every rollout's proxy listener and metric-source connection is a file:
# as many as the hard limit allows (500 rollouts need about 1,100).
hard=$(ulimit -Hn)
[ "$hard" = unlimited ] && hard=65536
ulimit -n "$hard" 2>/dev/null || true
[ "$(ulimit -n)" -ge 4096 ] || echo "warning: ulimit -n is $(ulimit -n); 500 rollouts need about 1,100 files" >&2

echo "building serin (release)..." >&2
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p serin)
SERIN=$TARGET/release/serin

TMP=$(mktemp -d)
PIDS=()
DAEMON=
stop_daemon() {
    [ -n "$DAEMON" ] || return 0
    kill -TERM "$DAEMON" 2>/dev/null || true
    for _ in $(seq 600); do kill -0 "$DAEMON" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON" 2>/dev/null || true
    DAEMON=
}
cleanup() {
    stop_daemon
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

# free_ports N: N distinct ports free a moment ago, below the ephemeral range
# (so that no client socket takes one meanwhile).
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
n, held, port = int(sys.argv[1]), [], 20000
while len(held) < n and port < 32000:
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        held.append(s)
    except OSError:
        s.close()
    port += 1
if len(held) < n:
    sys.exit("not enough free ports")
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}
wait_http() { # URL: answers within 20 s
    for _ in $(seq 200); do
        curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing answers at $1" >&2
    return 1
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
verdicts() { # total verdicts the daemon at $1 has made
    curl -fsS --max-time 30 "http://127.0.0.1:$1/metrics" |
        awk '/^serin_verdicts_total/ {s += $NF} END {printf "%d\n", s}'
}

read -r PROM UP1 UP2 < <(free_ports 3)
python3 "$ROOT/bench/prometheus-standin.py" 3600 "$PROM" "$UP1" "$UP2" >"$TMP/standin.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PROM/api/v1/query?query=requests_stable" 2>/dev/null && break
    sleep 0.1
done

echo "$(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); window ${WINDOW} s; $REQUESTS API requests"
ROWS=()
for N in $COUNTS; do
    API=$(free_ports 1)
    RUST_LOG=warn setsid "$SERIN" serve --listen "127.0.0.1:$API" --state-dir "$TMP/state-$N" \
        2>"$TMP/serve-$N.log" &
    DAEMON=$!
    wait_http "http://127.0.0.1:$API/healthz"

    # Register and deploy N rollouts, one after another, on one connection.
    t0=$(date +%s.%N)
    python3 - "$API" "$PROM" "$UP1" "$UP2" $(free_ports "$N") <<'PY'
import http.client, json, sys
api, prom, stable, canary = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ports = sys.argv[5:]
conn = http.client.HTTPConnection("127.0.0.1", api, timeout=60)
def post(path, body, kind):
    conn.request("POST", path, body=body, headers={"content-type": kind})
    r = conn.getresponse()
    text = r.read().decode()
    if r.status // 100 != 2:
        sys.exit(f"POST {path}: {r.status} {text}")
for i, port in enumerate(ports):
    name = f"r-{i}"
    yaml = f"""name: {name}
stable:
  version: v1
  upstream: http://127.0.0.1:{stable}
canary:
  version: v2
  upstream: http://127.0.0.1:{canary}
traffic:
  provider: builtin
  listen: 127.0.0.1:{port}
steps:
  - setWeight: 10
  - pause: {{ duration: 1h }}
analysis:
  interval: 10s
  minRequests: 100
  errorRate: {{ max: 5%, maxRatioToStable: 2.0 }}
  latencyP95: {{ max: 1000ms, maxRatioToStable: 1.5 }}
  noDataLimit: 3
  prometheus:
    address: http://127.0.0.1:{prom}
    requests: requests_{{{{version}}}}
    errors: errors_{{{{version}}}}
    latencyBuckets: latency_{{{{version}}}}
"""
    post("/api/v1/rollouts", yaml, "application/yaml")
    post(f"/api/v1/rollouts/{name}/deploy", json.dumps({"version": "v2"}), "application/json")
PY
    t1=$(date +%s.%N)
    # Until every rollout has been judged at least once (bounded: 2 min).
    python3 - "$API" "$N" <<'PY'
import json, sys, time, urllib.request
api, n = sys.argv[1], int(sys.argv[2])
deadline = time.time() + 120
while True:
    rows = json.load(urllib.request.urlopen(f"http://127.0.0.1:{api}/api/v1/rollouts", timeout=60))
    judged = [r for r in rows if r.get("lastVerdict")]
    if len(rows) == n and len(judged) == n:
        break
    if time.time() > deadline:
        sys.exit(f"after 120 s: {len(rows)} rollouts, {len(judged)} judged")
    time.sleep(1)
PY
    t2=$(date +%s.%N)

    v0=$(verdicts "$API")
    c0=$(ticks "$DAEMON"); w0=$(date +%s.%N)
    sleep "$WINDOW"
    c1=$(ticks "$DAEMON"); w1=$(date +%s.%N)
    v1=$(verdicts "$API")
    cpu=$(awk -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v a="$w0" -v b="$w1" \
        'BEGIN {printf "%.1f", 100 * c / hz / (b - a)}')
    rss=$(( $(status_kb "$DAEMON" VmRSS) / 1024 ))
    hwm=$(( $(status_kb "$DAEMON" VmHWM) / 1024 ))
    threads=$(status_kb "$DAEMON" Threads)

    urls=()
    for _ in $(seq "$REQUESTS"); do urls+=(-o /dev/null "http://127.0.0.1:$API/api/v1/rollouts"); done
    api=$(curl -fsS --max-time 600 -w '%{time_total}\n' "${urls[@]}" | sort -g |
        awk '{a[NR] = $1 * 1000} END {printf "%.1f / %.1f / %.1f", a[int((NR + 1) / 2)], a[int(NR * 0.99 + 0.5)], a[NR]}')
    bytes=$(curl -fsS --max-time 60 "http://127.0.0.1:$API/api/v1/rollouts" | wc -c)
    TMPDIR=$TMP node --experimental-websocket "$ROOT/bench/dashboard-load.mjs" "http://127.0.0.1:$API/" "$N" 5 \
        >"$TMP/dash-$N.log" 2>&1 || true
    dash=$(awk '/^median/ {print $2}' "$TMP/dash-$N.log")
    [ -n "$dash" ] || { cat "$TMP/dash-$N.log" >&2; dash="?"; }
    phases=$(curl -fsS --max-time 60 "http://127.0.0.1:$API/api/v1/rollouts" |
        python3 -c 'import collections, json, sys; print(dict(collections.Counter(r["phase"] for r in json.load(sys.stdin))))')
    stop_daemon

    printf "N=%s: registered in %.1f s, all judged %.1f s later; phases at the end %s\n" \
        "$N" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" "$(awk -v a="$t1" -v b="$t2" 'BEGIN {print b - a}')" "$phases"
    printf "  cpu %s %% of one core over %.1f s; verdicts %s (expected %s); rss %s MB (peak %s MB); %s threads\n" \
        "$cpu" "$(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}')" "$((v1 - v0))" "$((N * WINDOW / 10))" "$rss" "$hwm" "$threads"
    echo "  GET /api/v1/rollouts ($bytes bytes) p50 / p99 / max: $api ms; dashboard: $dash ms"
    grep -i -E "warn|error" "$TMP/serve-$N.log" | head -3 || true
    ROWS+=("| $N | $cpu % | $rss MB | $api ms | $dash ms | $((v1 - v0)) of $((N * WINDOW / 10)) |")
done

echo
echo "| rollouts | CPU (one core) | RSS | GET /api/v1/rollouts p50 / p99 / max | dashboard | verdicts in ${WINDOW} s |"
echo "|---|---|---|---|---|---|"
printf "%s\n" "${ROWS[@]}"
