#!/usr/bin/env bash
# Mutation testing (cargo-mutants) of the security-relevant files, each group with the fast
# tests that guard it. Prints, per file, how many mutants the tests caught, missed, timed
# out on, and how many did not build (unviable). docs/reliability.md records the figures
# and explains every survivor.
#
#   scripts/mutants.sh                 all three groups (hours on 2 cores; see the figures)
#   scripts/mutants.sh firmware        firmware/src/dmb.rs, lease.rs, wire/move_request.rs
#   scripts/mutants.sh protocol        host-driver/src/smcd/cdc.rs and the CLC parsers
#   scripts/mutants.sh conn            host-driver/src/smcd/conn.rs against the host driver's
#                                      unit tests (conn.rs's own drive one connection against
#                                      a scripted peer; the SMC-D integration tests would
#                                      rebuild the simulator for every mutant)
#
# Runs one mutant at a time (-j 1: the machine is shared) in a copy of the tree; results go
# to target/mutants/<group>/mutants.out/. Exit status: 0 if no mutant was missed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked

# The wire formats may live in the firmware or in their own crate (ism-abi).
first_existing() { for f in "$@"; do [ -e "$f" ] && { echo "$f"; return; }; done; }

status=0
run_group() {
    local group=$1; shift
    local out="target/mutants/$group"
    printf '\n==== mutants: %s ====\n' "$group"
    mkdir -p "$out"
    # Exit 2: missed mutants, 3: timeouts; both are reported below.
    # Test helpers (`mod tests`) are not what is under test: their mutants are excluded.
    cargo mutants --no-shuffle -j 1 --timeout 120 --build-timeout 900 -o "$out" \
        --exclude-re 'tests::' "$@" \
        >"$out/log.txt" 2>&1 || true
    local dir="$out/mutants.out"
    if [ ! -f "$dir/outcomes.json" ]; then
        tail -n 30 "$out/log.txt"
        status=1
        return
    fi
    printf '%-45s %7s %7s %7s %9s\n' file caught missed timeout unviable
    local files
    files=$(cat "$dir"/{caught,missed,timeout,unviable}.txt 2>/dev/null | cut -d: -f1 | sort -u)
    for f in $files; do
        local n=()
        for k in caught missed timeout unviable; do
            n+=("$(grep -c "^$f:" "$dir/$k.txt" 2>/dev/null || true)")
        done
        printf '%-45s %7s %7s %7s %9s\n' "$f" "${n[@]}"
    done
    if [ -s "$dir/missed.txt" ]; then
        echo "missed:"
        sed 's/^/  /' "$dir/missed.txt"
        status=1
    fi
}

group_firmware() {
    local wire
    wire=$(first_existing firmware/src/wire/move_request.rs abi/src/wire/move_request.rs)
    # The firmware's unit tests, the command tests and the lease's threaded tests (the
    # model and move property tests take a minute each and add nothing here).
    run_group firmware -p ism-firmware \
        -f firmware/src/dmb.rs -f firmware/src/lease.rs ${wire:+-f "$wire"} \
        -- --lib --test commands --test lease_threads
}

group_protocol() {
    run_group protocol -p ism-host-driver \
        -f host-driver/src/smcd/cdc.rs -f 'host-driver/src/smcd/clc/*.rs' \
        -- --lib
}

group_conn() {
    run_group conn -p ism-host-driver -f host-driver/src/smcd/conn.rs -- --lib
}

if [ $# -eq 0 ]; then
    set -- firmware protocol conn
fi
for g in "$@"; do
    case "$g" in
        firmware|protocol|conn) "group_$g" ;;
        *) echo "usage: $0 [firmware] [protocol] [conn]" >&2; exit 2 ;;
    esac
done
exit $status
