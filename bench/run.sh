#!/usr/bin/env bash
# flocon benchmark: the peer file server and the relay side by side with nginx and a
# single-threaded server, pacman end to end, memory, idle cost, CPU per GiB, binary size.
#
#   sudo bash bench/run.sh                 # full run, about 10 minutes
#   sudo BENCH_QUICK=1 bash bench/run.sh   # smoke run, under 2 minutes
#
# Environment: BENCH_QUICK=1 (small files, one repetition, short runs), BENCH_IDLE_SECONDS=N
# (idle window, default 60, quick 10), BENCH_KEEP=1 (keep the generated files), BENCH_WORK=DIR
# (where they go, default /var/tmp), BENCH_BIN=PATH (benchmark that flocon binary instead of
# building target/release/flocon), DARKHTTPD=PATH (a darkhttpd binary to compare with; without
# one, darkhttpd from PATH, else Debian's lighttpd as the single-threaded server),
# BENCH_ONLY=peer,verified,... (only those parts: idle, peer, relay, miss, pacman, memory,
# verified, binary), BENCH_CURL_REPS=N (downloads per server in each throughput row, default 5).
#
# Needs root: it builds network namespaces (deleted at the end) and runs pacman. All traffic
# stays inside them. Results: bench/out/results.tsv and bench/out/results.md (gitignored),
# server logs in bench/out/logs/. docs/performance.md explains the rows.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench/run.sh: needs root (network namespaces, pacman)" >&2
  exit 2
fi

# Debian packages: what the lab needs ([tests] of ci/debian-packages.txt) and the reference
# servers and tools ([bench]). darkhttpd is used when installed (Debian has it from trixie on);
# lighttpd (one process, one event loop) stands in for it.
bash ci/install-packages.sh base tests bench

if [ -n "${BENCH_BIN:-}" ]; then
  echo "bench: using BENCH_BIN=$BENCH_BIN (no build)"
else
  echo "bench: cargo build --release"
  cargo build --release --quiet
fi

exec python3 bench/bench.py "$@"
