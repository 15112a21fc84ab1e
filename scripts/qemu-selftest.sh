#!/usr/bin/env bash
# Bare-metal self-test of the ISM firmware: builds firmware/qemu-selftest for the Cortex-M4
# (thumbv7em-none-eabihf) and runs it under QEMU's mps2-an386 with semihosting; its defmt log
# frames are decoded by defmt-print (firmware/qemu-selftest/qemu-run.sh, the cargo runner).
# The exit status is the self-test's: 0 only if every check passed (124 if it timed out).
# `cargo selftest` from the repository root does the same once the tools are installed.
#
# Installs what is missing: the Rust target (rustup), qemu-system-arm (apt-get, Debian) and
# defmt-print (cargo install).
# Environment: QEMU_SELFTEST_TIMEOUT (seconds for the QEMU run, default 120).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CRATE="$ROOT/firmware/qemu-selftest"
TARGET=thumbv7em-none-eabihf
RUN_TIMEOUT="${QEMU_SELFTEST_TIMEOUT:-120}"

log() { printf 'qemu-selftest: %s\n' "$*" >&2; }

# --- the Rust target --------------------------------------------------------------------
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        log "installing Rust target $TARGET"
        rustup target add "$TARGET"
    fi
else
    log "rustup not found; assuming the toolchain already has $TARGET"
fi

# --- QEMU -------------------------------------------------------------------------------
if ! command -v qemu-system-arm >/dev/null 2>&1; then
    log "installing qemu-system-arm"
    SUDO=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { log "need root or sudo to install qemu-system-arm"; exit 1; }
        SUDO=(sudo)
    fi
    if ! "${SUDO[@]}" apt-get update || ! "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends qemu-system-arm; then
        log "could not install qemu-system-arm: install it yourself (Debian/Ubuntu: apt-get install qemu-system-arm)"
        exit 1
    fi
fi
# --- defmt-print (decodes the firmware's log frames) -------------------------------------
if ! command -v defmt-print >/dev/null 2>&1; then
    log "installing defmt-print (cargo install)"
    cargo install --locked defmt-print ||
        { log "could not install defmt-print: run 'cargo install defmt-print' yourself"; exit 1; }
fi
command -v timeout >/dev/null 2>&1 || { log "timeout (coreutils) not found"; exit 1; }

# --- build and run ------------------------------------------------------------------------
# The crate is outside the main workspace; its .cargo/config.toml (target, runner) applies
# when cargo runs from its directory; build.rs passes the linker scripts.
cd "$CRATE"
log "building ($TARGET, release)"
cargo build --release

log "running under qemu-system-arm -machine mps2-an386 (timeout ${RUN_TIMEOUT}s)"
start=$SECONDS
status=0
timeout "$RUN_TIMEOUT" cargo run --release --quiet || status=$?
elapsed=$((SECONDS - start))

case "$status" in
    0) log "PASS (${elapsed}s)" ;;
    124) log "FAIL: timed out after ${RUN_TIMEOUT}s" ;;
    *) log "FAIL: exit status $status (${elapsed}s)" ;;
esac
exit "$status"
