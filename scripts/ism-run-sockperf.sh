#!/usr/bin/env bash
# sockperf (a real, unmodified C++ TCP program) under ism-run at both ends, on an LPAR
# board: ping-pong and throughput for a few seconds each. Checks that every run exits 0,
# prints its summary, and that the board carried the data (moves and attaches counted,
# no crash). Installs sockperf (Debian package) if missing.
#
#   scripts/ism-run-sockperf.sh [SECONDS]     (default 3 per run)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${1:-3}"

if ! command -v sockperf >/dev/null; then
    apt-get update -qq && apt-get install -y -qq sockperf >/dev/null
fi
cargo build -p ism-sim -p ism-run
BIN="$ROOT/target/debug/ism-sim"

DIR="$(mktemp -d)"
export ISM_SIM_DIR="$DIR"
BOARD=sockperf
PORT=$((20000 + RANDOM % 20000))
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

"$BIN" board --kind lpar --name "$BOARD" 2>"$DIR/board.log" &
pids+=($!)
for _ in $(seq 100); do [ -S "$DIR/$BOARD.sock" ] && break; sleep 0.05; done
ISM_RUN_DEBUG=1 "$BIN" run --board "$BOARD" -- sockperf server --tcp -i 127.0.0.1 -p "$PORT" \
    >"$DIR/server.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "registered" "$DIR/server.log" 2>/dev/null && break; sleep 0.05; done

fail() { echo "ism-run-sockperf: $*" >&2; cat "$DIR"/*.log >&2; exit 1; }

for mode in ping-pong throughput; do
    extra=()
    [ "$mode" = throughput ] && extra=(-m 64000)
    ISM_RUN_DEBUG=1 timeout $((SECS + 30)) "$BIN" run --board "$BOARD" -- \
        sockperf "$mode" --tcp -i 127.0.0.1 -p "$PORT" -t "$SECS" "${extra[@]}" \
        >"$DIR/$mode.log" 2>&1 || fail "$mode exited with $?"
    grep -q "Summary" "$DIR/$mode.log" || fail "$mode printed no summary"
    grep -q ": SMC-D" "$DIR/$mode.log" || fail "$mode did not use SMC-D"
    grep -E "Summary|percentile 50.000" "$DIR/$mode.log" | sed "s/^/$mode: /"
done

status="$("$BIN" board status "$BOARD" --json)"
python3 - "$status" <<'EOF'
import json, sys
s = json.loads(sys.argv[1])
c = s["counters"]
assert c["moves"] > 0 and c["bytes_moved"] > 0, c
assert c["crashes"] == 0, c
assert s["names"]["clients_taken"] >= 2, s["names"]
print(f"board: {c['bytes_moved']} bytes moved in {c['moves']} moves, no crash")
EOF
echo "ism-run-sockperf: ok"
