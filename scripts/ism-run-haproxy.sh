#!/usr/bin/env bash
# haproxy (a real, unmodified C proxy: one thread, epoll, non-blocking connects) in front
# of Python's http.server (HTTP/1.0: it closes each connection after its answer, a thread
# per request), both under ism-run, with a new backend connection for every request,
# driven by ApacheBench (plain TCP to haproxy) with 40 clients in parallel, on a loopback
# and an LPAR board. Every request must succeed with the file's length, every backend connection
# must have been SMC-D (debug lines of haproxy's connects), and after both stop the board
# must hold no function and no DMB.
#
# This is the churn that found descriptor reuse races: a backend connection closed, its
# number reused at once by the next non-blocking connect, whose placeholder must never
# report what the old connection's file still had (a stale epoll registration reported
# the old end of stream, and haproxy dropped ~1 request in 3000).
#
# Installs haproxy, apache2-utils and curl (Debian packages) if missing.
#
#   scripts/ism-run-haproxy.sh [REQUESTS]     (default 8000 per board)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
REQUESTS="${1:-8000}"

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v ab >/dev/null || need+=(apache2-utils)
command -v curl >/dev/null || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build -p ism-sim -p ism-run
BIN="$ROOT/target/debug/ism-sim"

NAME=ism-run-haproxy
# shellcheck source=scripts/ism-run-lib.sh
source "$ROOT/scripts/ism-run-lib.sh"
mkdir -p "$DIR/www"
head -c 615 /dev/urandom >"$DIR/www/small.html"

run_case() { # KIND
    local kind="$1" board="hp-$1"
    local web front
    web=$(free_port)
    front=$(free_port)
    [ "$front" != "$web" ] || front=$((web + 1))
    rm -f "$DIR"/*.log
    cat >"$DIR/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 1000
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    option http-server-close
    http-reuse never
frontend fe
    bind 127.0.0.1:$front
    default_backend be
backend be
    server web 127.0.0.1:$web
EOF
    start_board "$kind" "$board"
    # SIGINT, which ends the backend through its exit handlers, may come ignored from
    # the shell (a background job of a non-interactive shell, or a CI runner that ignores
    # it), and Python then keeps it ignored: the backend sets its handler itself.
    (cd "$DIR/www" && exec "$BIN" run --board "$board" -- python3 -c '
import runpy, signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.argv = ["http.server", "--bind", "127.0.0.1", sys.argv[1]]
runpy.run_module("http.server", run_name="__main__", alter_sys=True)
' "$web" >"$DIR/backend.log" 2>&1) &
    local backend_pid=$!
    pids+=("$backend_pid")
    ISM_RUN_DEBUG=1 "$BIN" run --board "$board" -- haproxy -f "$DIR/haproxy.cfg" -db \
        >"$DIR/haproxy.log" 2>&1 &
    local haproxy_pid=$!
    pids+=("$haproxy_pid")
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://127.0.0.1:$front/small.html" && break
        sleep 0.1
    done
    ab -k -n "$REQUESTS" -c 40 "http://127.0.0.1:$front/small.html" >"$DIR/ab.log" 2>&1 ||
        fail "$kind: ab failed"
    grep -q "^Complete requests: *$REQUESTS$" "$DIR/ab.log" || fail "$kind: requests missing"
    grep -q "^Failed requests: *0$" "$DIR/ab.log" || fail "$kind: failed requests"
    grep -q "^Non-2xx responses" "$DIR/ab.log" && fail "$kind: non-2xx responses"
    grep -q "^Document Length: *615 bytes" "$DIR/ab.log" || fail "$kind: wrong length"
    local smc tcp
    smc=$(grep -c "connect .* -> 127.0.0.1:$web (non-blocking): SMC-D" "$DIR/haproxy.log" || true)
    tcp=$(grep -c "connect .* -> 127.0.0.1:$web.*TCP" "$DIR/haproxy.log" || true)
    [ "$smc" -ge "$REQUESTS" ] || fail "$kind: $smc backend connections over SMC-D for $REQUESTS requests"
    [ "$tcp" = 0 ] || fail "$kind: $tcp backend connections over TCP"
    # SIGUSR1: haproxy's soft stop (it exits through `exit`; SIGTERM's hard stop does
    # not, and the board counts that as a partition crash).
    kill -USR1 "$haproxy_pid"
    # Python ends on SIGINT through its exit handlers (SIGTERM would kill it outright).
    kill -INT "$backend_pid" 2>/dev/null || true
    wait "$haproxy_pid" "$backend_pid" 2>/dev/null || true
    local after=""
    for _ in $(seq 100); do
        after="$("$BIN" board status "$board" --json)"
        python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if not s["functions"] and s["dmbs_in_use"]==0 and s["names"]["connections"]==0 else 1)' "$after" && break
        sleep 0.05
    done
    python3 - "$after" "$REQUESTS" <<'PY' || fail "$kind: board check"
import json, sys
after, requests = json.loads(sys.argv[1]), int(sys.argv[2])
assert after["names"]["clients_taken"] >= requests, after["names"]
assert after["counters"]["crashes"] == 0, after["counters"]
assert not after["functions"] and after["dmbs_in_use"] == 0, after
assert after["names"]["listeners"] == 0 and after["names"]["connections"] == 0, after["names"]
PY
    stop_board
    echo "ism-run-haproxy: $kind board: $REQUESTS requests through haproxy, $smc backend connections over SMC-D, none failed"
}

run_case loopback
run_case lpar
