#!/usr/bin/env bash
# How the kernel schedules each proxy under load: CPU time, time spent
# runnable but waiting for a CPU, and context switches, per request; and,
# when perf is there, the longest single wait of any proxy thread.
#
#   bench/sched-waits.sh [SECONDS] [ROUNDS]        (default 10 2)
#   SESSIONS=shared bench/sched-waits.sh           (both in wrk's session)
#
# Same setup as bench/proxy-vs-nginx.sh (bench/side-by-side.sh; wrk -t2
# -c64). Reads /proc/PID/task/*/schedstat and status
# around each wrk run; `perf sched record` (root) samples 2 s in the middle.
# A thread that waits for a CPU holds every request it serves: the p99 at
# saturation on a 2-core machine is mostly such waits.
set -euo pipefail

SECS=${1:-10}
ROUNDS=${2:-2}
NGINX=${NGINX:-/usr/sbin/nginx}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
command -v wrk >/dev/null || { echo "wrk not found" >&2; exit 1; }
PERF=
if command -v perf >/dev/null && [ "$(id -u)" = 0 ]; then PERF=perf; fi
source "$ROOT/bench/side-by-side.sh"

# Sums over every thread of the given processes:
# cpu_ns wait_ns voluntary_switches involuntary_switches
snap() {
    local cpu=0 wait=0 vol=0 invol=0 t a b
    for p in "$@"; do
        for t in /proc/"$p"/task/*; do
            read -r a b _ < "$t/schedstat"
            cpu=$((cpu + a)); wait=$((wait + b))
            vol=$((vol + $(awk '/^voluntary_ctxt_switches/ {print $2}' "$t/status")))
            invol=$((invol + $(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$t/status")))
        done
    done
    echo "$cpu $wait $vol $invol"
}

measure() { # name port pids...
    local name=$1 port=$2; shift 2
    local before after out n max=""
    read -r -a before <<<"$(snap "$@")"
    wrk -t2 -c64 -d"${SECS}s" --latency "http://127.0.0.1:$port/" > "$TMP/wrk.out" &
    local w=$!
    PIDS+=("$w")
    if [ -n "$PERF" ] && [ "$SECS" -ge 6 ]; then
        sleep 3
        # Where the sched tracepoints are missing (some containers) perf
        # fails: the longest wait is then left out, not the whole run.
        perf sched record -a -o "$TMP/sched.data" -- sleep 2 >/dev/null 2>&1 || true
        # Longest wait of any of the proxy's threads (perf sched latency's
        # max, per thread id: the upstream's nginx is not the proxy's).
        local ids
        ids=$(for p in "$@"; do ls "/proc/$p/task"; done | paste -sd'|')
        max=$(perf sched latency -p -i "$TMP/sched.data" 2>/dev/null |
            awk -v ids="^($ids)\$" '{ split($1, c, ":"); if (c[2] ~ ids) for (i = 1; i <= NF; i++) if ($i == "max:") print $(i + 1) }' |
            sort -g | tail -1) || max=
    fi
    wait "$w"
    read -r -a after <<<"$(snap "$@")"
    out=$(cat "$TMP/wrk.out")
    n=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -v name="$name" -v n="$n" \
        -v p50="$(awk '$1 == "50%" {print $2}' <<<"$out")" \
        -v p99="$(awk '$1 == "99%" {print $2}' <<<"$out")" \
        -v cpu=$((after[0] - before[0])) -v wait=$((after[1] - before[1])) \
        -v vol=$((after[2] - before[2])) -v invol=$((after[3] - before[3])) -v max="${max:--}" \
        'BEGIN { printf "%-6s %9d req  p50 %7s  p99 %7s | per request: cpu %6.0f ns  waiting %6.0f ns | switches per 1000: voluntary %5.1f  involuntary %5.1f | longest wait %s ms\n",
            name, n, p50, p99, cpu / n, wait / n, vol * 1000 / n, invol * 1000 / n, max }'
}

echo "wrk -t2 -c64 -d${SECS}s; proxies in $SESSIONS sessions; longest wait: ${PERF:-perf not available (needs root)}"
wrk -t1 -c8 -d2s "http://127.0.0.1:$SRN/" >/dev/null
wrk -t1 -c8 -d2s "http://127.0.0.1:$NGX/" >/dev/null
for _ in $(seq "$ROUNDS"); do
    # shellcheck disable=SC2086 # one pid per word
    measure nginx "$NGX" $NGINX_WORKERS
    measure serin "$SRN" "$SERIN_PID"
done
