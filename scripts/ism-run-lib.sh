# Shared by the scripts that run real programs under ism-run (sourced, not run):
# a scratch directory for the boards, cleanup of every process started, a board per case
# and its counters. The sourcing script sets NAME (its name, for messages) and BIN (the
# ism-sim binary) first.
#
#   start_board KIND BOARD     start a board (lpar|loopback) named BOARD in $DIR, wait for it
#   stop_board                 stop the board started last
#   counters BOARD [CRASHES]   print "bytes_moved signals" (fails if the board saw more
#                              crashes than CRASHES, default 0: a killed ism-run server is one)
#   fail MESSAGE...            print MESSAGE and the logs, exit 1
#   pids+=(PID)                processes killed at exit

DIR="$(mktemp -d)"
export ISM_SIM_DIR="$DIR"
board_pid=""
pids=()

cleanup() {
    for p in "${pids[@]}" $board_pid; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT

fail() {
    echo "$NAME: $*" >&2
    tail -n 20 "$DIR"/*.log "$DIR"/*.json >&2 2>/dev/null || true
    exit 1
}

start_board() { # KIND BOARD
    "$BIN" board --kind "$1" --name "$2" 2>"$DIR/board-$2.log" &
    board_pid=$!
    for _ in $(seq 200); do [ -S "$DIR/$2.sock" ] && return 0; sleep 0.05; done
    fail "board $2 did not start"
}

stop_board() {
    kill "$board_pid" 2>/dev/null || true
    wait "$board_pid" 2>/dev/null || true
    board_pid=""
}

counters() { # BOARD [CRASHES] -> "bytes_moved signals moves"
    "$BIN" board status "$1" --json | python3 -c '
import json, sys
c = json.load(sys.stdin)["counters"]
assert c["crashes"] <= int(sys.argv[1]), c
print(c["bytes_moved"], c["signals"], c["moves"])' "${2:-0}"
}

# A port below the ephemeral range (32768-60999 by default), so no outgoing connection has it.
free_port() {
    echo $((20000 + RANDOM % 12000))
}
