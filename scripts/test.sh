#!/usr/bin/env bash
# The project's test command: installs what a fresh machine lacks, then runs every check.
#
#   scripts/test.sh          formatting, clippy, the test suites, sockperf, iperf3 and nginx
#                            under ism-run, loom, Miri, the QEMU self-test
#   scripts/test.sh --quick  formatting, clippy, docs and the test suites only (downloads
#                            nothing but crates)
#
# Stages print a header; the script stops at the first failure (exit status non-zero).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

stage() { printf '\n==== %s ====\n' "$*"; }
# Runs an install step; if it fails, stops with what to install by hand.
install() {
    local what="$1"; shift
    if ! "$@"; then
        printf '\ntest.sh: could not install %s (%s).\nInstall it yourself, then run this script again.\n' \
            "$what" "$*" >&2
        exit 1
    fi
}

stage "toolchain components"
rustup component list --installed | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed | grep -q '^clippy' || rustup component add clippy

stage "rust-version is true for the lock file (scripts/check-msrv.sh)"
bash scripts/check-msrv.sh

stage "cargo fmt --check"
cargo fmt --all -- --check

stage "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets -- -D warnings

stage "cargo doc (no broken links, -D warnings)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --quiet

stage "cargo test (workspace)"
cargo test --workspace

stage "conformance suite against process boards in separate processes"
bash scripts/process-conformance.sh

stage "scripts: the benchmark script's parsers and report (python3 unittest)"
python3 -m unittest discover -s scripts -p 'test_*.py'

if [ "$QUICK" = 1 ]; then
    echo "quick run: skipping the bare-metal builds, loom, Miri and QEMU"
    exit 0
fi

stage "ism-run: sockperf (installed if missing) ping-pong, throughput and under-load on three boards, and mixed pairs on TCP"
bash scripts/ism-run-sockperf.sh 3

stage "ism-run: iperf3 (installed if missing) plain, -R, -P 4, -Z over SMC-D, and mixed pairs on TCP"
bash scripts/ism-run-iperf3.sh 2

stage "ism-run: nginx with forked workers, curl and wrk (installed if missing) over SMC-D"
bash scripts/ism-run-nginx.sh 1

stage "ism-run: haproxy in front of Python's http.server (installed if missing), a new SMC-D backend connection per request"
bash scripts/ism-run-haproxy.sh

stage "firmware builds for thumbv7em-none-eabihf (no_std: plain, and with defmt logging)"
rustup target list --installed | grep -qx thumbv7em-none-eabihf ||
    install "the Rust target thumbv7em-none-eabihf" rustup target add thumbv7em-none-eabihf
cargo build -p ism-firmware --target thumbv7em-none-eabihf
cargo build -p ism-firmware --target thumbv7em-none-eabihf --features defmt

stage "host driver builds without std (no_std + alloc, thumbv7em-none-eabihf)"
cargo build -p ism-host-driver --no-default-features --target thumbv7em-none-eabihf

stage "loom: the lease, the SBA signal/clear, cursor update and quiet page protocols (firmware/tests/loom.rs)"
# Its own target directory: `--cfg loom` would otherwise invalidate the main build.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$ROOT/target/loom" \
    cargo test -p ism-firmware --release --lib --test loom

stage "Miri: firmware, HAL, the simulator's unsafe memory code, the preload library's pure tests"
if ! rustup toolchain list | grep -q '^nightly'; then
    install "the nightly toolchain" rustup toolchain install nightly --profile minimal
fi
rustup +nightly component list --installed | grep -q '^miri' ||
    install "Miri (nightly)" rustup +nightly component add miri rust-src
cargo +nightly miri setup >/dev/null
export MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}"
cargo +nightly miri test -p ism-abi -p ism-hal -p ism-firmware
# The simulator's only unsafe code is its memory domain: run those tests under Miri.
cargo +nightly miri test -p ism-sim --lib memory::
# The preload library's tests that need no kernel object Miri lacks (sockets, signal sets,
# resource limits): socket addresses to and from C, the quiet page's words and the
# trampoline's pointer to them, the descriptor table, the environment, errno keeping.
cargo +nightly miri test -p ism-run --lib

stage "QEMU mps2-an386 self-test of the firmware"
# The script installs qemu-system-arm (apt-get) and defmt-print (cargo install) when missing
# and says which one it could not get.
bash scripts/qemu-selftest.sh

stage "all checks passed"
