#!/usr/bin/env bash
# flocon at scale: N hosts in network namespaces on one bridge; lookup datagrams, miss latency
# with frozen peers, the "everyone upgrades" burst, a late host whose first datagrams are lost,
# idle traffic. Prints the table and the goals of docs/performance.md ("Lookups at scale").
#
#   sudo bash bench/scale.sh                        # N = 8 and 48, about 4 minutes
#   sudo BENCH_SCALE_N="8 48 96" bash bench/scale.sh
#
# Environment: BENCH_SCALE_N (host counts), BENCH_SCALE_LOOKUPS (lookups per latency row,
# default 200), BENCH_BIN (a flocon binary instead of building target/release/flocon).
# Needs root: it makes network namespaces (deleted at the end); all traffic stays inside them.
# Results: printed, and bench/out/scale.json (gitignored).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench/scale.sh: needs root (network namespaces)" >&2
  exit 2
fi

# iproute2, curl and nftables come with the [tests] section; python3 with [bench].
bash ci/install-packages.sh base tests bench

if [ -z "${BENCH_BIN:-}" ]; then
  echo "scale: cargo build --release"
  cargo build --release --quiet
fi
cargo build --release --quiet --example lookup_client

exec python3 bench/scale.py "$@"
