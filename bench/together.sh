#!/usr/bin/env bash
# All hosts at once (issue 15): 8 hosts (FLOCON_TOGETHER_HOSTS) in network namespaces run
# `pacman -Sw` of the same 12 packages of 1.5 MB at the same moment, against an nginx mirror
# sending 4 MB/s per connection, over http:// and https:// (a test CA made for the run).
# Prints, for each: mirror bytes / set bytes (the goal: <= 1.05), the mirror's GETs, and the
# slowest host's time / one host alone (the goal: <= 1.3), one host alone measured in the same
# lab just before on a set of the same sizes (docs/performance.md, "All hosts at once").
#
#   sudo bash bench/together.sh
#   sudo FLOCON_TOGETHER_HOSTS=4 FLOCON_TOGETHER_RATE=1500000 bash bench/together.sh
#
# Each scheme runs twice: files in flight not shared (--spool-size 0: no spool and no claims,
# what flocon did before; the control) and shared.
#
# Uses the harness of tests/together.rs (its ignored test `bench_together`) and Debian's
# pacman 6 (the [tests] section). Needs root: it makes network namespaces (deleted at the end);
# all traffic stays inside them.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "bench/together.sh: needs root (network namespaces)" >&2
  exit 2
fi

# iproute2, nginx, openssl and pacman come with the [tests] section.
bash ci/install-packages.sh base tests

export FLOCON_TOGETHER_HOSTS=${FLOCON_TOGETHER_HOSTS:-8}
mkdir -p bench/out
log=bench/out/together-$(date -u +%Y%m%d-%H%M%S).log
# The test profile is optimised (Cargo.toml): the same flocon binary the tests run.
if ! cargo test --quiet --test together bench_together -- --ignored --nocapture --test-threads 1 >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "bench/together.sh: failed; the whole output is in $log" >&2
  exit 1
fi
grep '^together .* hosts, ' "$log"
echo "(the whole output: $log)"
