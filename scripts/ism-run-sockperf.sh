#!/usr/bin/env bash
# sockperf (a real, unmodified C++ TCP program) under ism-run at both ends: on an LPAR
# board, a loopback board and a loopback board with --nocopy, its client modes ping-pong
# throughput (64000-byte messages) and under-load for a few seconds each (SOCKPERF_MODES:
# the modes to run, default "ping-pong throughput under-load");
# then a plain sockperf client against an ism-run server and an ism-run client against a
# plain server (both must fall back to TCP and work). Checks that every run exits 0 and
# prints its summary, that every ism-run connection was SMC-D (debug lines), that the
# board carried the data (copy boards: bytes moved; no-copy: CDC moves; no crash) and that
# the mixed pairs moved nothing on the board. Installs sockperf (Debian package) if missing.
#
#   scripts/ism-run-sockperf.sh [SECONDS]     (default 3 per run)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${1:-3}"

if ! command -v sockperf >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sockperf >/dev/null
fi
cargo build -p ism-sim -p ism-run
BIN="$ROOT/target/debug/ism-sim"

NAME=ism-run-sockperf
# shellcheck source=scripts/ism-run-lib.sh
source "$ROOT/scripts/ism-run-lib.sh"

# server BOARD UNDER PORT LOG: a sockperf server, under ism-run (UNDER=run) or plain
server() {
    local pre=()
    [ "$2" = run ] && pre=("$BIN" run --board "$1" "${RUNOPTS[@]}" --)
    ISM_RUN_DEBUG=1 "${pre[@]}" sockperf server --tcp -i 127.0.0.1 -p "$3" >"$4" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
    for _ in $(seq 200); do
        ss -ltn 2>/dev/null | grep -q "127.0.0.1:$3 " && return 0
        sleep 0.05
    done
    fail "sockperf server on port $3 did not listen"
}

# client BOARD UNDER PORT MODE LOG: one sockperf client run
client() {
    local pre=() extra=()
    [ "$2" = run ] && pre=("$BIN" run --board "$1" "${RUNOPTS[@]}" --)
    [ "$4" = throughput ] && extra=(-m 64000)
    ISM_RUN_DEBUG=1 timeout $((SECS + 30)) "${pre[@]}" \
        sockperf "$4" --tcp -i 127.0.0.1 -p "$3" -t "$SECS" "${extra[@]}" \
        >"$5" 2>&1 || fail "$4 exited with $?"
    grep -q "Summary" "$5" || fail "$4 printed no summary"
}

for cfg in lpar loopback loopback-nocopy; do
    kind=${cfg%-nocopy}
    RUNOPTS=()
    [ "$cfg" = loopback-nocopy ] && RUNOPTS=(--nocopy)
    board="sp-$cfg"
    start_board "$kind" "$board"
    port=$(free_port)
    server "$board" run "$port" "$DIR/$cfg-server.log"
    for mode in ${SOCKPERF_MODES:-ping-pong throughput under-load}; do
        read -r moved0 signals0 moves0 <<<"$(counters "$board")" || fail "$board: status"
        log="$DIR/$cfg-$mode.log"
        client "$board" run "$port" "$mode" "$log"
        grep -q ": SMC-D" "$log" || fail "$cfg $mode: the client did not use SMC-D"
        read -r moved1 signals1 moves1 <<<"$(counters "$board")" || fail "$board: status"
        if [ "$cfg" = loopback-nocopy ]; then
            # The data goes straight into the peer's memory; the CDCs are moves (signalled
            # or not: with doorbells, the default, most go without the device's signal).
            [ $((moves1 - moves0)) -gt 0 ] || fail "$cfg $mode: no CDC moves on the board"
        else
            [ $((moved1 - moved0)) -gt 0 ] || fail "$cfg $mode: the board moved nothing"
        fi
        grep -E "Summary|percentile 50.000" "$log" | sed "s/^/$cfg $mode: /"
    done
    grep -q ": SMC-D" "$DIR/$cfg-server.log" || fail "$cfg: the server did not use SMC-D"
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    stop_board
done

# Mixed pairs: the plain side never sees a CLC byte, both fall back to TCP, and the board
# moves nothing. (Stopping the ism-run server kills it: one crash on the board.)
RUNOPTS=()
start_board lpar sp-mixed
port=$(free_port)
server sp-mixed run "$port" "$DIR/mixed-run-server.log"
client sp-mixed plain "$port" ping-pong "$DIR/mixed-plain-client.log"
grep -q "not an ism-run client: TCP" "$DIR/mixed-run-server.log" || fail "plain client: no fallback line"
read -r moved _ _ <<<"$(counters sp-mixed)" || fail "status"
[ "$moved" = 0 ] || fail "plain client: the board moved $moved bytes"
kill "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
port=$(free_port)
server sp-mixed plain "$port" "$DIR/mixed-plain-server.log"
client sp-mixed run "$port" ping-pong "$DIR/mixed-run-client.log"
kill "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
grep -q "no ism-run listener there: TCP" "$DIR/mixed-run-client.log" || fail "plain server: no fallback line"
read -r moved _ _ <<<"$(counters sp-mixed 1)" || fail "status"
[ "$moved" = 0 ] || fail "mixed pairs: the board moved $moved bytes"
stop_board
echo "mixed: a plain client against an ism-run server and an ism-run client against a plain server: TCP, ok"
echo "ism-run-sockperf: ok"
