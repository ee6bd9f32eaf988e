#!/usr/bin/env bash
# Builds every fuzz target and runs each, one after the other, for SECONDS (default 30).
#
#   bash fuzz/run.sh [SECONDS]
#
# Each target starts from its committed seeds, fuzz/corpus/<target>/, passed to libFuzzer as
# a read-only second corpus directory; what the run finds goes to a fresh temporary directory
# (the first one), so a run never grows the repository. Prints libFuzzer's final stats line
# per target and exits non-zero if any target crashed, hung, ran out of memory or could not
# run. Needs cargo-fuzz (installed here if missing) and a nightly toolchain (else the default
# toolchain with RUSTC_BOOTSTRAP=1).
set -euo pipefail

seconds=${1:-30}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]" >&2
    exit 2
fi
fuzz_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$fuzz_dir"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$fuzz_dir/target}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "run.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

toolchain=()
if rustc +nightly --version >/dev/null 2>&1; then
    toolchain=(+nightly)
else
    echo "run.sh: no nightly toolchain, using $(rustc --version) with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
fi

# Release with debug assertions and overflow checks, AddressSanitizer (cargo-fuzz defaults).
build_start=$SECONDS
cargo "${toolchain[@]}" fuzz build
echo "run.sh: build took $((SECONDS - build_start)) s"

host=$(rustc "${toolchain[@]}" -vV | sed -n 's/^host: //p')
bin_dir=$CARGO_TARGET_DIR/$host/release
work=$(mktemp -d "${TMPDIR:-/tmp}/flocon-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
failed=()
for target in "${targets[@]}"; do
    mkdir -p "$work/$target/corpus" "$work/$target/artifacts"
    seeds=()
    if [[ -d $fuzz_dir/corpus/$target ]]; then
        seeds=("$fuzz_dir/corpus/$target")
    fi
    log=$work/$target/log
    status=0
    "$bin_dir/$target" "$work/$target/corpus" "${seeds[@]}" \
        -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
        -artifact_prefix="$work/$target/artifacts/" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    if [[ $status -eq 0 && -n $stats ]]; then
        printf '%-20s %s\n' "$target" "$(tr -s '\t ' ' ' <<<"$stats")"
    else
        failed+=("$target")
        printf '%-20s FAILED (exit %s); end of its log:\n' "$target" "$status"
        tail -n 40 "$log" | sed 's/^/    /'
        for artifact in "$work/$target/artifacts"/*; do
            [[ -f $artifact ]] || continue
            echo "    input: $(basename "$artifact") ($(stat -c %s "$artifact") bytes), base64:"
            head -c 4096 "$artifact" | base64 -w 0 | sed 's/^/    /'
            echo
        done
    fi
done

if ((${#failed[@]} > 0)); then
    echo "run.sh: ${#failed[@]} of ${#targets[@]} targets failed: ${failed[*]}"
    exit 1
fi
echo "run.sh: all ${#targets[@]} targets ran ${seconds} s each without a crash"
