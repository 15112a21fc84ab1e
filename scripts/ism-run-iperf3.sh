#!/usr/bin/env bash
# iperf3 (a real, unmodified C program: select, non-blocking sockets, a control connection
# and data connections) under ism-run at both ends: on an LPAR board, a loopback board, a
# loopback board with --nocopy and one with --busy-poll 50 (peer bells), each with a plain run, -R (the server sends), -P 4
# (four data connections), -Z and -Z -R (the sender uses sendfile), for a few seconds each; then a plain iperf3 client against an
# ism-run server and an ism-run client against a plain server (both must fall back to
# TCP and work). Checks every exit status, iperf3's JSON (-J: no error, bytes sent and
# received, the number of streams), that every connection of the ism-run pairs was SMC-D,
# and that the board's counters moved (copy boards: at least the bytes iperf3 received;
# no-copy: signals). Installs iperf3 (Debian package iperf3) if missing.
#
#   scripts/ism-run-iperf3.sh [SECONDS]     (default 2 per run)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${1:-2}"

if ! command -v iperf3 >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3 >/dev/null
fi
cargo build -p ism-sim -p ism-run
BIN="$ROOT/target/debug/ism-sim"

NAME=ism-run-iperf3
# shellcheck source=scripts/ism-run-lib.sh
source "$ROOT/scripts/ism-run-lib.sh"

# run NAME BOARD SERVER_UNDER CLIENT_UNDER [IPERF3 CLIENT OPTIONS...]
#   *_UNDER: "run" (under ism-sim run on BOARD, with RUNOPTS) or "plain"
run() {
    local name=$1 board=$2 su=$3 cu=$4
    shift 4
    local port
    port=$(free_port)
    local spre=() cpre=()
    [ "$su" = run ] && spre=("$BIN" run --board "$board" "${RUNOPTS[@]}" --)
    [ "$cu" = run ] && cpre=("$BIN" run --board "$board" "${RUNOPTS[@]}" --)
    ISM_RUN_DEBUG=1 timeout $((SECS + 60)) "${spre[@]}" iperf3 -s -1 -J -B 127.0.0.1 -p "$port" \
        >"$DIR/$name-server.json" 2>"$DIR/$name-server.log" &
    local sp=$!
    pids+=("$sp")
    for _ in $(seq 200); do
        ss -ltn 2>/dev/null | grep -q "127.0.0.1:$port " && break
        sleep 0.05
    done
    ISM_RUN_DEBUG=1 timeout $((SECS + 60)) "${cpre[@]}" iperf3 -c 127.0.0.1 -p "$port" -t "$SECS" -J "$@" \
        >"$DIR/$name-client.json" 2>"$DIR/$name-client.log" || fail "$name: client exited with $?"
    wait "$sp" || fail "$name: server exited with $?"
}

# check NAME STREAMS SMC(yes|no): iperf3's JSON and the ism-run lines
check() {
    local name=$1 streams=$2 smc=$3
    python3 - "$DIR/$name-client.json" "$DIR/$name-server.json" "$streams" >"$DIR/$name.sum" <<'EOF' || fail "$name: iperf3's JSON"
import json, sys
c, s, streams = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
for j in (c, s):
    assert "error" not in j, j.get("error")
# The client reports both ends' counts (exchanged at the end); the server its own side.
e = c["end"]
assert e["sum_sent"]["bytes"] > 0 and e["sum_received"]["bytes"] > 0, e
e = s["end"]
assert e["sum_sent"]["bytes"] + e["sum_received"]["bytes"] > 0, e
assert len(c["end"]["streams"]) == streams, len(c["end"]["streams"])
print(f'{c["end"]["sum_received"]["bytes"]} {c["end"]["sum_received"]["bits_per_second"] / 8e6:.0f}')
EOF
    local conns=$((streams + 1)) # the control connection and the data connections
    local sc cc
    sc=$(grep -c "SMC-D$" "$DIR/$name-server.log" || true)
    cc=$(grep -c "SMC-D$" "$DIR/$name-client.log" || true)
    if [ "$smc" = yes ]; then
        [ "$sc" = "$conns" ] && [ "$cc" = "$conns" ] ||
            fail "$name: $sc server and $cc client connections on SMC-D, not $conns"
    else
        [ "$sc" = 0 ] && [ "$cc" = 0 ] || fail "$name: SMC-D used with a plain peer"
    fi
}

for cfg in lpar loopback loopback-nocopy loopback-busy; do
    kind=${cfg%-nocopy}
    kind=${kind%-busy}
    RUNOPTS=()
    [ "$cfg" = loopback-nocopy ] && RUNOPTS=(--nocopy)
    # The sender rings the receiver's doorbell, and select spins before it sleeps.
    [ "$cfg" = loopback-busy ] && RUNOPTS=(--busy-poll 50)
    board="iperf3-$cfg"
    start_board "$kind" "$board"
    for mode in plain reverse parallel zerocopy zerocopy-reverse; do
        opts=() streams=1
        case $mode in
        reverse) opts=(-R) ;;
        parallel) opts=(-P 4) streams=4 ;;
        zerocopy) opts=(-Z) ;;               # the sender uses sendfile (emulated: pread + SMC-D)
        zerocopy-reverse) opts=(-Z -R) ;;
        esac
        c=$(counters "$board") || fail "$board: status"
        read -r moved0 signals0 moves0 <<<"$c"
        run "$cfg-$mode" "$board" run run "${opts[@]}"
        c=$(counters "$board") || fail "$board: status"
        read -r moved1 signals1 moves1 <<<"$c"
        check "$cfg-$mode" "$streams" yes
        read -r received mbps <"$DIR/$cfg-$mode.sum"
        if [ "$cfg" = loopback-nocopy ]; then
            # No-copy: the data goes straight into the peer's memory; only CDCs move
            # (signalled or not: with doorbells, the default, most go unsignalled).
            [ $((moves1 - moves0)) -gt 0 ] || fail "$cfg-$mode: no CDC moves on the board"
        else
            [ $((moved1 - moved0)) -ge "$received" ] ||
                fail "$cfg-$mode: the board moved $((moved1 - moved0)) bytes, iperf3 received $received"
        fi
        echo "$cfg $mode: $received bytes, $mbps MB/s, board: $((moved1 - moved0)) bytes moved, $((signals1 - signals0)) signals"
    done
    stop_board
done

# Mixed pairs: the plain side never sees a CLC byte, both fall back to TCP.
RUNOPTS=()
start_board lpar iperf3-mixed
c=$(counters iperf3-mixed) || fail "status"
read -r moved0 _ <<<"$c"
run plain-client "iperf3-mixed" run plain
check plain-client 1 no
grep -q "not an ism-run client: TCP" "$DIR/plain-client-server.log" || fail "plain-client: no fallback line"
run plain-server "iperf3-mixed" plain run
check plain-server 1 no
grep -q "no ism-run listener there: TCP" "$DIR/plain-server-client.log" || fail "plain-server: no fallback line"
c=$(counters iperf3-mixed) || fail "status"
read -r moved1 _ <<<"$c"
[ "$moved1" = "$moved0" ] || fail "mixed pairs: the board moved $((moved1 - moved0)) bytes"
stop_board
echo "mixed: a plain client against an ism-run server and an ism-run client against a plain server: TCP, ok"
echo "ism-run-iperf3: ok"
