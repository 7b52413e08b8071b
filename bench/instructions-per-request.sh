#!/usr/bin/env bash
# User-space instructions per proxied request, serin proxy vs nginx, counted
# by valgrind's callgrind: unlike requests/s on a shared 2-core machine, the
# count repeats to within about 2 % from run to run.
#
#   bench/instructions-per-request.sh [SECONDS]        (default 10)
#
# Starts, on free 127.0.0.1 ports in a temporary directory: one nginx with two
# upstream servers answering 200 "ok" (as bench/proxy-vs-nginx.sh does); then
# each proxy twice under callgrind, once with no load and once under
# `wrk -t1 -c8` for SECONDS, and prints
#   (instructions with load - instructions without) / requests.
# nginx runs as one process (master_process off) with the same 50/50
# split_clients configuration as in bench/proxy-vs-nginx.sh; serin runs its
# release build with --weight 50. Needs valgrind, wrk and nginx.
set -euo pipefail

SECS=${1:-10}
NGINX=${NGINX:-/usr/sbin/nginx}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
for tool in valgrind wrk; do
    command -v "$tool" >/dev/null || { echo "$tool not found" >&2; exit 1; }
done

echo "building serin (release)..." >&2
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p serin)
SERIN=$TARGET/release/serin

TMP=$(mktemp -d)
cleanup() {
    [ -f "$TMP/up/nginx.pid" ] && kill "$(cat "$TMP/up/nginx.pid")" 2>/dev/null || true
    sleep 0.3
    rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

source "$ROOT/bench/nginx-conf.sh"
UP1=$(free_port); UP2=$(free_port); PORT=$(free_port)
mkdir -p "$TMP/up" "$TMP/px"
upstream_conf "$TMP/up" "$UP1" "$UP2" > "$TMP/up/nginx.conf"
proxy_conf "$TMP/px" "$PORT" "$UP1" "$UP2" "master_process off; daemon off; worker_processes 1;" \
    > "$TMP/px/nginx.conf"
"$NGINX" -p "$TMP/up" -e "$TMP/up/error.log" -c "$TMP/up/nginx.conf"

# count NAME SECONDS STOP-SIGNAL CMD...: prints "requests instructions".
count() {
    local name=$1 secs=$2 signal=$3
    shift 3
    valgrind --tool=callgrind --callgrind-out-file="$TMP/$name.$secs.out" "$@" \
        >/dev/null 2>"$TMP/$name.$secs.log" &
    local pid=$!
    for _ in $(seq 150); do
        curl -fsS -o /dev/null "http://127.0.0.1:$PORT/" 2>/dev/null && break
        sleep 0.2
    done
    local n=1
    if [ "$secs" != 0 ]; then
        n=$(wrk -t1 -c8 -d"${secs}s" "http://127.0.0.1:$PORT/" | awk '/requests in/ {print $1}')
        n=$((n + 1))
    fi
    kill "-$signal" "$pid"
    wait "$pid" || true
    echo "$n $(awk '/^(summary|totals):/ {print $2; exit}' "$TMP/$name.$secs.out"*)"
}

measure() {
    local name=$1 signal=$2
    shift 2
    local n0 i0 n1 i1
    read -r n0 i0 < <(count "$name" 0 "$signal" "$@")
    read -r n1 i1 < <(count "$name" "$SECS" "$signal" "$@")
    printf "%-6s %8d requests  %8d instructions/request\n" "$name" "$n1" $(((i1 - i0) / (n1 - n0)))
}

echo "callgrind, wrk -t1 -c8 -d${SECS}s; $("$NGINX" -v 2>&1)"
export RUST_LOG=warn
measure serin TERM "$SERIN" proxy --listen "127.0.0.1:$PORT" \
    --stable "http://127.0.0.1:$UP1" --canary "http://127.0.0.1:$UP2" --weight 50 --name bench
measure nginx QUIT "$NGINX" -p "$TMP/px" -e "$TMP/px/error.log" -c "$TMP/px/nginx.conf"
