#!/usr/bin/env bash
# The whole test suite, as README.md gives it and .ci/run calls it:
#   bash tests/run.sh
# 1. installs the Debian packages of ci/debian-packages.txt that are missing (as root), and
#    builds pacman 7 from source into a private prefix (ci/build-pacman7.sh, cached),
# 2. checks formatting and lints,
# 3. runs every unit and integration test, with --no-fail-fast (the multi-host ones need
#    root; with CI=true they must run, elsewhere they skip with a printed reason); the
#    end-to-end tests run under pacman 6 (Debian's) and pacman 7 (the one Arch ships),
# 4. runs the extra checks of the other folders (packaging and a real systemd boot, ARM
#    cross builds under qemu, a fuzz smoke run), each bounded in time,
# 5. ends with one line "N passed, N failed" for the whole suite, and exits non-zero when
#    anything failed.
# FLOCON_SKIP_EXTRA=1 leaves out step 4; FLOCON_FUZZ_SECONDS sets the fuzz time per target;
# FLOCON_NO_BOOT=1 leaves out the real systemd boot of the packaging check (ci/fresh-check.sh
# --isolated sets it: systemd cannot allocate the unit's DynamicUser inside that chroot).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

step() { printf '\n==> %s\n' "$*"; }
failed_steps=()
# Runs a step; a failure is recorded and the next steps still run.
check() {
  local name=$1
  shift
  step "$name"
  "$@" || failed_steps+=("$name")
}
root=0
[ "$(id -u)" = 0 ] && root=1

step "Debian packages (ci/debian-packages.txt)"
if ((root)); then
  bash ci/install-packages.sh || { echo "run.sh: installing Debian packages failed" >&2; exit 1; }
elif ! missing=$(bash ci/install-packages.sh --missing); then
  echo "not root; missing Debian packages: ${missing//$'\n'/ }" >&2
  echo "the tests that need them will skip (CI=true makes that fatal)" >&2
fi

step "pacman 7 (ci/build-pacman7.sh)"
if ((root)); then
  prefix=$(bash ci/build-pacman7.sh | tee /dev/stderr | tail -n 1) \
    || { echo "run.sh: building pacman 7 failed" >&2; exit 1; }
  export FLOCON_PACMAN7=$prefix
else
  echo "not root: pacman 7 is not built; its tests use \$FLOCON_PACMAN7 when set, else skip"
fi

step "cargo fmt --check"
cargo fmt --all -- --check || failed_steps+=("cargo fmt")

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings || failed_steps+=("cargo clippy")

step "cargo test --no-fail-fast"
results=$(mktemp)
trap 'rm -f "$results"' EXIT
cargo test --all-targets --no-fail-fast 2>&1 | tee "$results"
[ "${PIPESTATUS[0]}" = 0 ] || failed_steps+=("cargo test")

# The built binary is checked as packaged (the systemd unit runs it under a
# real systemd when root), cross-built for ARM and run under qemu, and every
# parser is fuzzed briefly.
if [ "${FLOCON_SKIP_EXTRA:-}" != 1 ]; then
  if ((root)) && [ "${FLOCON_NO_BOOT:-}" != 1 ]; then
    check "ci/packaging-check.sh --boot" bash ci/packaging-check.sh --boot target/debug/flocon
  else
    check "ci/packaging-check.sh" bash ci/packaging-check.sh target/debug/flocon
  fi
  check "ci/cross-check.sh" bash ci/cross-check.sh
  check "fuzz/run.sh ${FLOCON_FUZZ_SECONDS:-30}" bash fuzz/run.sh "${FLOCON_FUZZ_SECONDS:-30}"
fi

if ((${#failed_steps[@]})); then
  step "failed: ${failed_steps[*]}"
  grep -E '^test .* FAILED$|^    [A-Za-z0-9_:]+$' "$results" | sort -u || true
fi
# One closing line for the whole suite: the sum of cargo test's result lines, where each other
# failed step counts as one failure (and so does cargo test failing with no failed test, as
# when a test binary does not build).
others=0
cargo_failed=0
for s in "${failed_steps[@]}"; do
  if [ "$s" = "cargo test" ]; then cargo_failed=1; else others=$((others + 1)); fi
done
awk -v others="$others" -v cargo_failed="$cargo_failed" '
  /^test result:/ { p += $4; f += $6 }
  END {
    if (cargo_failed && f == 0) f = 1
    printf "%d passed, %d failed\n", p, f + others
  }' "$results"
((${#failed_steps[@]} == 0))
