#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer): builds every target of fuzz/ and runs each for a fixed
# time, seeded from fuzz/corpus/<target>/. Fails if any target finds a crash.
#
#   scripts/fuzz.sh              60 s per target
#   scripts/fuzz.sh 300          300 s per target
#   scripts/fuzz.sh --ci         45 s per target, no checker self-test (what .ci/run calls)
#   FUZZ_TARGETS="clc moves" scripts/fuzz.sh   only these targets
#
# New inputs go to fuzz/target/corpus-work/<target> (the committed seeds stay as they are);
# crashes go to fuzz/artifacts/<target>/ and are replayed with
#   cd fuzz && cargo +nightly fuzz run <target> -s none artifacts/<target>/crash-...
#
# The targets are built without a sanitizer (`-s none`): the code under test is safe Rust
# (the firmware forbids `unsafe`), so AddressSanitizer would only slow the run; overflow
# checks and debug assertions stay on.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT/fuzz"

SECS=60
CI_MODE=0
for arg in "$@"; do
    case "$arg" in
        --ci) SECS=45; CI_MODE=1 ;;
        ''|*[!0-9]*) echo "usage: $0 [--ci] [seconds]" >&2; exit 2 ;;
        *) SECS="$arg" ;;
    esac
done
TARGETS="${FUZZ_TARGETS:-commands moves clc cdc_receive conn}"

stage() { printf '\n==== %s ====\n' "$*"; }

stage "fuzz toolchain"
if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz --version

# The checker's own tests (a stray write, a wrong DMB count, a wrong move verdict are
# caught). Skipped with --ci to keep CI's fuzzing stage within ~5 minutes: they need a
# second, non-instrumented build.
if [ "$CI_MODE" = 0 ]; then
    stage "the checker catches what it claims to (unit tests of fuzz/src)"
    cargo +nightly test --lib --quiet
fi

stage "build fuzz targets"
start=$(date +%s)
cargo +nightly fuzz build -s none
echo "built in $(($(date +%s) - start)) s"

failed=()
for t in $TARGETS; do
    stage "fuzz $t for ${SECS} s"
    mkdir -p "target/corpus-work/$t"
    log="target/fuzz-$t.log"
    if cargo +nightly fuzz run -s none "$t" "target/corpus-work/$t" "corpus/$t" -- \
        -max_total_time="$SECS" -print_final_stats=1 >"$log" 2>&1; then
        grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$log" || true
    else
        tail -n 40 "$log"
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]} (inputs under fuzz/artifacts/)" >&2
    exit 1
fi
stage "fuzzing found no crash"
