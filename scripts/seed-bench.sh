#!/usr/bin/env bash
# The seed's benchmark table with the seed's own tools (issue 10, item 4): unmodified
# sockperf, iperf3 and nginx+wrk over plain TCP and under `ism-sim run` (loopback board,
# loopback no-copy, LPAR board), interleaved rounds, medians with spreads, ratios to TCP
# beside the loopback-ism series' own, a JSON file and an SVG chart.
#
#   scripts/seed-bench.sh [--rounds N] [--secs S] [--only sockperf-bw,...] \
#                         [--transports tcp,lo,lo-nocopy,lo-irq,lo-busy,lpar] [--pin]
#                         [--out PREFIX]
#
# (`scripts/seed_bench.py --help` lists every option.) Installs the programs it needs
# (Debian packages) if missing, builds release binaries, and runs for about
# rounds x figures x transports x (secs + 1) seconds: 5 x 5 x 6 x 4 s = 10 minutes by
# default. Run it on a quiet machine: it is a benchmark, not a test.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
need=()
command -v sockperf >/dev/null || need+=(sockperf)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v nginx >/dev/null || need+=(nginx-light)
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release -q -p ism-sim -p ism-run
exec python3 scripts/seed_bench.py "$@"
