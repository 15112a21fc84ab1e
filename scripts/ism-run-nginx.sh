#!/usr/bin/env bash
# nginx (a real, unmodified C server that forks its workers after `listen`) under ism-run,
# with curl and wrk under ism-run as clients, on an LPAR board and on a loopback board
# (with and without copies), with `worker_processes 1` and `2`. For each: curl fetches a
# 1 MiB and a 615-byte file (checksums compared with the originals), wrk runs for a second
# (no errors, no non-2xx answers); every client connection must have used SMC-D (debug
# lines), the board's counters must have moved, and after nginx stops the board must hold
# no function, no DMB and no registration. Installs nginx-light, wrk and curl (Debian
# packages) if missing.
#
# `sendfile on`: nginx sends files with sendfile, which the library emulates on SMC-D.
# On loopback boards the programs exchange doorbells (the default); one case runs them
# with `--no-peer-bell` (the interrupt thread tells of data), a last one with
# `--busy-poll 50` (epoll spinning).
#
#   scripts/ism-run-nginx.sh [WRK_SECONDS]     (default 1)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECS="${1:-1}"

need=()
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v curl >/dev/null || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build -p ism-sim -p ism-run
BIN="$ROOT/target/debug/ism-sim"

DIR="$(mktemp -d)"
chmod 755 "$DIR"
export ISM_SIM_DIR="$DIR/boards"
mkdir -p "$ISM_SIM_DIR" "$DIR/www" "$DIR/tmp"
head -c 1048576 /dev/urandom >"$DIR/www/big.bin"
head -c 615 /dev/urandom >"$DIR/www/small.html"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

fail() {
    echo "ism-run-nginx: $*" >&2
    for f in "$DIR"/*.log; do echo "== $f" >&2; tail -n 40 "$f" >&2; done
    exit 1
}

# As root, nginx runs its workers as `nobody` (its default `user`), who may not connect to
# the board's socket: the library attaches each worker before it drops its privileges
# (docs/ism-run.md, "Servers whose workers drop privileges"), which the debug lines show.

# Ports below the ephemeral range (32768-60999 by default), which curl and wrk take from.
run_case() { # KIND NOCOPY WORKERS [BUSY_POLL_USEC] [irq]
    local kind="$1" nocopy="$2" workers="$3" busy="${4:-}" irq="${5:-}"
    local board="ng-$kind-$nocopy-$workers-$busy$irq" port=$((20000 + RANDOM % 12000))
    local tag="$kind board${nocopy:+, no-copy}${busy:+, --busy-poll $busy}${irq:+, --no-peer-bell}, worker_processes $workers"
    rm -f "$DIR"/*.log
    cat >"$DIR/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes $workers;
error_log stderr;
pid $DIR/nginx.pid;
events { use epoll; worker_connections 256; }
http {
    sendfile on;
    access_log off;
    client_body_temp_path $DIR/tmp;
    proxy_temp_path $DIR/tmp;
    fastcgi_temp_path $DIR/tmp;
    uwsgi_temp_path $DIR/tmp;
    scgi_temp_path $DIR/tmp;
    server { listen 127.0.0.1:$port; root $DIR/www; }
}
EOF
    "$BIN" board --kind "$kind" --name "$board" 2>"$DIR/board.log" &
    local board_pid=$!
    pids+=("$board_pid")
    for _ in $(seq 100); do [ -S "$ISM_SIM_DIR/$board.sock" ] && break; sleep 0.05; done
    local run=("$BIN" run --board "$board")
    [ -n "$nocopy" ] && run+=(--nocopy)
    [ -n "$busy" ] && run+=(--busy-poll "$busy")
    [ -n "$irq" ] && run+=(--no-peer-bell)
    ISM_RUN_DEBUG=1 timeout 120 "${run[@]}" -- nginx -c "$DIR/nginx.conf" -p "$DIR" \
        >"$DIR/nginx.log" 2>&1 &
    local ngx=$!
    pids+=("$ngx")
    # Up when every worker registered the inherited listener (each attaches first).
    registered() { grep -c "inherited over fork, registered" "$DIR/nginx.log" 2>/dev/null || true; }
    for _ in $(seq 200); do
        [ "$(registered)" -ge "$workers" ] && break
        sleep 0.05
    done
    [ "$(registered)" -ge "$workers" ] || fail "$tag: the workers did not register the listener"
    if [ "$(id -u)" = 0 ]; then
        [ "$(grep -c "attached before the process changes its credentials" "$DIR/nginx.log")" -ge "$workers" ] ||
            fail "$tag: the workers did not attach before dropping their privileges"
    fi

    for f in big.bin small.html; do
        ISM_RUN_DEBUG=1 timeout 30 "${run[@]}" -- curl -sS -o "$DIR/got-$f" \
            "http://127.0.0.1:$port/$f" >"$DIR/curl.log" 2>&1 || fail "$tag: curl $f exited with $?"
        grep -q ": SMC-D" "$DIR/curl.log" || fail "$tag: curl $f did not use SMC-D"
        [ "$(sha256sum <"$DIR/got-$f")" = "$(sha256sum <"$DIR/www/$f")" ] ||
            fail "$tag: $f differs from the original"
    done
    ISM_RUN_DEBUG=1 timeout $((SECS + 30)) "${run[@]}" -- \
        wrk -t1 -c4 -d"${SECS}s" "http://127.0.0.1:$port/small.html" >"$DIR/wrk.log" 2>&1 ||
        fail "$tag: wrk exited with $?"
    grep -q "Requests/sec" "$DIR/wrk.log" || fail "$tag: wrk printed no summary"
    ! grep -qE "Socket errors|Non-2xx" "$DIR/wrk.log" || fail "$tag: wrk saw errors"
    [ "$(grep -c ": SMC-D" "$DIR/wrk.log")" -ge 4 ] || fail "$tag: wrk's connections did not all use SMC-D"
    ! grep -q ": TCP\|handshake failed" "$DIR/wrk.log" "$DIR/curl.log" "$DIR/nginx.log" ||
        fail "$tag: a connection fell back to TCP"
    local during
    during="$("$BIN" board status "$board" --json)"

    kill -TERM "$(cat "$DIR/nginx.pid")"
    wait "$ngx" 2>/dev/null || true
    local after=""
    for _ in $(seq 100); do
        after="$("$BIN" board status "$board" --json)"
        python3 -c 'import json,sys; s=json.loads(sys.argv[1]); sys.exit(0 if not s["functions"] and s["dmbs_in_use"]==0 and s["names"]["connections"]==0 else 1)' "$after" && break
        sleep 0.05
    done
    python3 - "$during" "$after" "$workers" "$kind" "$tag" "$busy" <<'EOF' || fail "$tag: board check"
import json, sys
during, after = json.loads(sys.argv[1]), json.loads(sys.argv[2])
workers, kind, tag, busy = int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6]
c = after["counters"]
assert c["moves"] > 0 and (c["signals"] > 0 or busy), c
if kind == "lpar":
    assert c["bytes_moved"] >= 1048576 + 615, c
assert c["crashes"] == 0, c
if kind == "loopback" and tag.find("--no-peer-bell") < 0:
    # Doorbells passed in pairs for curl's two connections and wrk's four.
    assert after["names"]["bells_passed"] >= 2 * 6, after["names"]
else:
    assert after["names"]["bells_passed"] == 0, after["names"]
# nginx's master and each worker: a function each (plus the client of the moment, gone).
assert len(during["functions"]) >= workers + 1, during["functions"]
assert during["names"]["listeners"] == workers + 1, during["names"]
assert not after["functions"] and after["dmbs_in_use"] == 0, after
assert after["names"]["listeners"] == 0 and after["names"]["connections"] == 0, after["names"]
print(f"{tag}: {after['names']['clients_taken']} connections over SMC-D, "
      f"{c['bytes_moved']} bytes moved, {c['signals']} signals; board empty after")
EOF
    grep -E "Requests/sec" "$DIR/wrk.log" | sed "s/^/$tag: wrk /"
    kill "$board_pid" 2>/dev/null || true
    wait "$board_pid" 2>/dev/null || true
}

for workers in 1 2; do
    run_case lpar "" "$workers"
    run_case loopback "" "$workers"
    run_case loopback 1 "$workers"
done
# The interrupt thread tells of data (no doorbells); epoll_wait spins before it sleeps.
run_case loopback "" 2 "" irq
run_case loopback "" 1 50
echo "ism-run-nginx: ok"
