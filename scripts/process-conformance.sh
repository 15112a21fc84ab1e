#!/usr/bin/env bash
# The conformance suite against process boards started as separate processes: for each kind
# (LPAR, loopback) starts `ism-sim board`, runs `tests/tests/process_conformance.rs`'s
# external-board test against it (ISM_CONFORMANCE_BOARD), stops the board with SIGTERM and
# checks that it exits cleanly and leaves no socket or lock file behind.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
cargo build -p ism-sim --bin ism-sim
BIN="$ROOT/target/debug/ism-sim"
DIR="$(mktemp -d)"
export ISM_SIM_DIR="$DIR"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    rm -rf "$DIR"
}
trap cleanup EXIT

for kind in lpar loopback; do
    name="ci-$kind"
    "$BIN" board --kind "$kind" --name "$name" --max-functions 4 2>"$DIR/$kind.log" &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 100); do
        "$BIN" board status "$name" >/dev/null 2>&1 && break
        sleep 0.1
    done
    "$BIN" board status "$name"
    ISM_CONFORMANCE_BOARD="$name" cargo test -p ism-tests --test process_conformance \
        external_board_passes_run_all -- --ignored --exact --nocapture
    kill -TERM "$pid"
    wait "$pid"
    if [ -e "$DIR/$name.sock" ] || [ -e "$DIR/$name.lock" ]; then
        echo "board $name left its socket or lock file behind" >&2
        exit 1
    fi
    cat "$DIR/$kind.log"
done
echo "process boards: conformance passed on lpar and loopback"
