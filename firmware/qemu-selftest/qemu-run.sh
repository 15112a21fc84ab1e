#!/usr/bin/env bash
# Cargo runner of the self-test: runs the ELF under QEMU's mps2-an386 with semihosting and
# decodes its defmt frames with `defmt-print` (install: `cargo install defmt-print`).
# The exit status is QEMU's, i.e. the self-test's verdict (0 only if every check passed).
set -euo pipefail
elf="$1"
if ! command -v defmt-print >/dev/null 2>&1; then
    echo "qemu-run.sh: defmt-print not found; install it with: cargo install defmt-print" >&2
    exit 127
fi
qemu-system-arm -cpu cortex-m4 -machine mps2-an386 -nographic \
    -semihosting-config enable=on,target=native -kernel "$elf" \
    | defmt-print -e "$elf"
