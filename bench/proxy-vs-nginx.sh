#!/usr/bin/env bash
# serin proxy vs nginx, same 50/50 split, same upstreams, same load.
#
#   bench/proxy-vs-nginx.sh [ROUNDS] [SECONDS] [CONNECTIONS]    (default 3 10 64)
#
# Starts the two upstreams, nginx as the proxy and serin's proxy as
# bench/side-by-side.sh says (same 50/50 split, upstream keep-alive and
# request rewriting on both; each proxy in a session of its own unless
# SESSIONS=shared).
# Besides them, `serin run` on a rollout file with the built-in provider and
# the same two upstreams, held at weight 50 for the whole run (one step, then
# an hour's pause; judged every 10 s on its own recorder): the data plane a
# rollout gets, in its own session like serin's proxy.
# Then runs wrk against direct-to-upstream (the ceiling), nginx, serin's proxy
# and `serin run`'s data plane in turn, ROUNDS times each, and prints
# requests/s and p99 for every run and the median per target. All processes
# are stopped on exit.
set -euo pipefail

ROUNDS=${1:-3}
SECS=${2:-10}
CONNS=${3:-64}
THREADS=${WRK_THREADS:-2}
NGINX=${NGINX:-/usr/sbin/nginx}
WRK=${WRK:-wrk}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v "$WRK" >/dev/null || { echo "wrk not found" >&2; exit 1; }
source "$ROOT/bench/side-by-side.sh"

# `serin run`: the rollout's own proxy at weight 50 (state in TMP).
RUN=$(free_port)
cat >"$TMP/rollout.yaml" <<YAML
name: bench
stable:
  version: v1
  upstream: http://127.0.0.1:$UP1
canary:
  version: v2
  upstream: http://127.0.0.1:$UP2
traffic:
  provider: builtin
  listen: 127.0.0.1:$RUN
steps:
  - setWeight: 50
  - pause: { duration: 1h }
analysis:
  interval: 10s
  minRequests: 100
  errorRate: { max: 5% }
  latencyP95: { max: 1000ms }
YAML
RUST_LOG=warn SERIN_STATE_DIR=$TMP/state $SETSID "$SERIN" run "$TMP/rollout.yaml" \
    >"$TMP/run.out" 2>"$TMP/run.log" &
PIDS+=($!)
# Until the step at 50 % is in force (its line goes to stderr once applied).
for _ in $(seq 150); do
    grep -q "canary weight set to 50 %" "$TMP/run.log" 2>/dev/null && break
    sleep 0.2
done
grep -q "canary weight set to 50 %" "$TMP/run.log" &&
    curl -fsS -o /dev/null "http://127.0.0.1:$RUN/" ||
    { echo "serin run did not reach weight 50" >&2; cat "$TMP/run.out" "$TMP/run.log" >&2; exit 1; }

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
"$WRK" -t1 -c8 -d2s "http://127.0.0.1:$RUN/" >/dev/null
for r in $(seq "$ROUNDS"); do
    run direct "$UP1" "$r"
    run nginx "$NGX" "$r"
    run serin "$SRN" "$r"
    run run "$RUN" "$r"
done

# p99 as wrk prints it (us/ms/s) to microseconds, for the median.
to_us() { awk '{ v=$1; if (v ~ /us$/) {sub(/us$/,"",v); print v} else if (v ~ /ms$/) {sub(/ms$/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1000000} }'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "median of $ROUNDS rounds:"
for t in direct nginx serin run; do
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
grep -E " (WARN|ERROR) " "$TMP/run.log" | head -5 || true
echo "serin run, its last verdict:"
grep -E "verdict" "$TMP/run.log" | tail -1
