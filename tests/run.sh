#!/usr/bin/env bash
# The whole test suite, as README.md gives it and .ci/run calls it:
#   bash tests/run.sh
# 1. installs what the tests need (Debian packages, as root) when missing,
# 2. checks formatting and lints,
# 3. runs every unit and integration test (the multi-host ones need root; with
#    CI=true they must run, elsewhere they skip with a printed reason),
# 4. runs the extra checks of the other folders when they exist (fuzz smoke
#    run, packaging, cross builds), each bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

need_pkgs=()
for tool in pacman:pacman-package-manager repo-add:pacman-package-manager \
            bsdtar:libarchive-tools zstd:zstd ip:iproute2 nginx:nginx-light curl:curl \
            gpg:gnupg gpg-agent:gpg-agent; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || need_pkgs+=("${tool#*:}")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    step "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "missing tools (${need_pkgs[*]}): the tests that need them will skip" >&2
  fi
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

step "cargo test"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --all-targets 2>&1 | tee "$results"

# The built binary is checked as packaged (the systemd unit runs it under a
# real systemd when root), cross-built for ARM and run under qemu, and every
# parser is fuzzed briefly.
if [ "${FLOCON_SKIP_EXTRA:-}" != 1 ]; then
  step "ci/packaging-check.sh"
  if [ "$(id -u)" = 0 ]; then
    bash ci/packaging-check.sh --boot target/debug/flocon
  else
    bash ci/packaging-check.sh target/debug/flocon
  fi
  step "ci/cross-check.sh"
  bash ci/cross-check.sh
  if [ -f fuzz/run.sh ]; then
    step "fuzz/run.sh ${FLOCON_FUZZ_SECONDS:-30}"
    bash fuzz/run.sh "${FLOCON_FUZZ_SECONDS:-30}"
  fi
fi

# One closing line for the whole suite (the sum of cargo test's result lines).
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$results"
