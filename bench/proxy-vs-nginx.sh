#!/usr/bin/env bash
# serin proxy vs nginx, same 50/50 split, same upstreams, same load.
#
#   bench/proxy-vs-nginx.sh [ROUNDS] [SECONDS] [CONNECTIONS]    (default 3 10 64)
#
# Starts on free 127.0.0.1 ports, in a temporary directory:
#   - two upstreams: one nginx (1 worker) with two servers answering 200 "ok";
#   - nginx as the proxy: worker_processes 2 (one per core), access_log off,
#     upstream keepalive 64, proxy_http_version 1.1, Connection "", a 50/50
#     split_clients on $request_id, and the same request rewriting serin does
#     (Host kept, X-Forwarded-For appended, X-Forwarded-Proto, Via);
#   - serin proxy (release build) --weight 50, one worker thread per core,
#     RUST_LOG=warn, started with setsid. nginx daemonizes into a session of
#     its own, and Linux's autogroup gives every session its own share of
#     the CPU; started from this script, serin would share one with wrk and
#     wait behind the upstream for whole ticks (perf sched: 4.9 ms waits
#     against nginx's 1.7 ms). setsid puts both proxies on the same footing.
#     SESSIONS=shared runs the other fair comparison: nginx in the foreground
#     (daemon off) and serin without setsid, both sharing wrk's session.
# Then runs wrk against direct-to-upstream (the ceiling), nginx and serin in
# turn, ROUNDS times each, and prints requests/s and p99 for every run and the
# median per target. All processes are stopped on exit.
set -euo pipefail

ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=${3:-64}
THREADS=${WRK_THREADS:-2}
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-wrk}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

SESSIONS=${SESSIONS:-own}
case "$SESSIONS" in
    own) DAEMON="daemon on;"; SETSID=setsid ;;
    shared) DAEMON="daemon off;"; SETSID= ;;
    *) echo "SESSIONS: expected own or shared, got $SESSIONS" >&2; exit 2 ;;
esac
command -v "$WRK" >/dev/null || { echo "wrk not found" >&2; exit 1; }
[ -x "$NGINX" ] || { echo "nginx not found at $NGINX" >&2; exit 1; }

echo "building serin (release)..." >&2
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p serin)
SERIN=$TARGET/release/serin

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -f "$TMP/up/nginx.pid" ] && kill "$(cat "$TMP/up/nginx.pid")" 2>/dev/null || true
    [ -f "$TMP/px/nginx.pid" ] && kill "$(cat "$TMP/px/nginx.pid")" 2>/dev/null || true
    sleep 0.3
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

source "$ROOT/bench/nginx-conf.sh"
UP1=$(free_port); UP2=$(free_port); NGX=$(free_port); SRN=$(free_port)

mkdir -p "$TMP/up" "$TMP/px"
upstream_conf "$TMP/up" "$UP1" "$UP2" > "$TMP/up/nginx.conf"
proxy_conf "$TMP/px" "$NGX" "$UP1" "$UP2" "worker_processes 2; $DAEMON" > "$TMP/px/nginx.conf"

"$NGINX" -p "$TMP/up" -e "$TMP/up/error.log" -c "$TMP/up/nginx.conf"
if [ "$SESSIONS" = own ]; then
    "$NGINX" -p "$TMP/px" -e "$TMP/px/error.log" -c "$TMP/px/nginx.conf"
else
    "$NGINX" -p "$TMP/px" -e "$TMP/px/error.log" -c "$TMP/px/nginx.conf" &
    PIDS+=($!)
fi
RUST_LOG=warn $SETSID "$SERIN" proxy --listen "127.0.0.1:$SRN" --stable "http://127.0.0.1:$UP1" \
    --canary "http://127.0.0.1:$UP2" --weight 50 --name bench 2>"$TMP/serin.log" &
PIDS+=($!)

wait_up() {
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$1/" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing answers on port $1" >&2; cat "$TMP/serin.log" >&2; exit 1
}
wait_up "$UP1"; wait_up "$UP2"; wait_up "$NGX"; wait_up "$SRN"

declare -A RPS P99
run() { # name port round
    local out
    out=$("$WRK" -t"$THREADS" -c"$CONNS" -d"${SECS}s" --latency "http://127.0.0.1:$2/" 2>&1)
    local rps p99 errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
    RPS[$1]+="$rps "
    P99[$1]+="$p99 "
    printf "round %s  %-8s %10s req/s   p99 %8s  %s\n" "$3" "$1" "$rps" "$p99" "$errs"
}

echo "wrk -t$THREADS -c$CONNS -d${SECS}s --latency, $ROUNDS rounds; $(nproc) cores; $("$NGINX" -v 2>&1); proxies in $SESSIONS sessions"
"$WRK" -t1 -c8 -d2s "http://127.0.0.1:$SRN/" >/dev/null   # warm up pools
"$WRK" -t1 -c8 -d2s "http://127.0.0.1:$NGX/" >/dev/null
for r in $(seq "$ROUNDS"); do
    run direct "$UP1" "$r"
    run nginx "$NGX" "$r"
    run serin "$SRN" "$r"
done

# p99 as wrk prints it (us/ms/s) to microseconds, for the median.
to_us() { awk '{ v=$1; if (v ~ /us$/) {sub(/us$/,"",v); print v} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000000} }'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "median of $ROUNDS rounds:"
for t in direct nginx serin; do
    rps=$(echo "${RPS[$t]}" | median)
    p99=$(for v in ${P99[$t]}; do echo "$v" | to_us; done | tr '\n' ' ' | median)
    printf "  %-8s %10s req/s   p99 %8s us\n" "$t" "$rps" "$p99"
done
# Round by round: one round's noise on this machine is larger than the
# difference, so say how often serin came out ahead, not only the medians.
read -r -a nr <<<"${RPS[nginx]}"; read -r -a sr <<<"${RPS[serin]}"
read -r -a np <<<"${P99[nginx]}"; read -r -a sp <<<"${P99[serin]}"
more=0; lower=0
for i in "${!nr[@]}"; do
    awk -v a="${sr[$i]}" -v b="${nr[$i]}" 'BEGIN { exit !(a > b) }' && more=$((more + 1))
    awk -v a="$(echo "${sp[$i]}" | to_us)" -v b="$(echo "${np[$i]}" | to_us)" 'BEGIN { exit !(a < b) }' &&
        lower=$((lower + 1))
done
echo "serin ahead of nginx: more req/s in $more of $ROUNDS rounds, lower p99 in $lower of $ROUNDS"
grep -i -E "warn|error" "$TMP/serin.log" | head -5 || true
