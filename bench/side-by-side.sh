# Sourced by bench/proxy-vs-nginx.sh and bench/sched-waits.sh: builds serin,
# then starts, on free 127.0.0.1 ports in a temporary directory, the two
# upstreams (one nginx, 1 worker), nginx as the proxy (2 workers) and serin's
# proxy (weight 50), and stops them all on exit.
#
# Needs ROOT (the checkout) and NGINX (the nginx binary); honours
# CARGO_TARGET_DIR and SESSIONS:
#   own     (default) each proxy in a session of its own: nginx daemonizes,
#           serin is started with setsid. Linux's autogroup gives every
#           session its own CPU share; started from this script, serin would
#           share one with wrk and wait behind the upstream for whole ticks
#           (docs/benchmarks.md, "Scheduling groups").
#   shared  both in this script's (and wrk's) session: nginx with daemon off,
#           serin without setsid.
# Sets TMP, UP1 and UP2 (the upstreams' ports), NGX (nginx's), SRN (serin's),
# SERIN_PID and NGINX_WORKERS (the proxy nginx's worker pids).

SESSIONS=${SESSIONS:-own}
case "$SESSIONS" in
    own) DAEMON="daemon on;"; SETSID=setsid ;;
    shared) DAEMON="daemon off;"; SETSID= ;;
    *) echo "SESSIONS: expected own or shared, got $SESSIONS" >&2; exit 2 ;;
esac
[ -x "$NGINX" ] || { echo "nginx not found at $NGINX" >&2; exit 1; }

echo "building serin (release)..." >&2
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
(cd "$ROOT" && CARGO_TARGET_DIR=$TARGET cargo build --release -q -p serin)
SERIN=$TARGET/release/serin

TMP=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for d in up px; do
        [ -f "$TMP/$d/nginx.pid" ] && kill "$(cat "$TMP/$d/nginx.pid")" 2>/dev/null || true
    done
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
SERIN_PID=$!
PIDS+=("$SERIN_PID")

for port in "$UP1" "$UP2" "$NGX" "$SRN"; do
    up=
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && { up=1; break; }
        sleep 0.1
    done
    [ -n "$up" ] || { echo "nothing answers on port $port" >&2; cat "$TMP/serin.log" >&2; exit 1; }
done
NGINX_WORKERS=$(pgrep -P "$(cat "$TMP/px/nginx.pid")" | tr '\n' ' ')
