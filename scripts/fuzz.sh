#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for a bounded number
# of inputs, one target at a time on one core, and prints a table: target,
# runs, seconds, result. Not part of CI: a full run takes a while.
#
#   scripts/fuzz.sh [-runs=N] [-timeout=S] [target ...]
#
#   -runs=N      inputs per target (default 1000000)
#   -timeout=S   seconds one input may take before it counts as a hang (default 10)
#   target ...   only these targets (default: all; `scripts/fuzz.sh -list` lists them)
#
# Environment: FUZZ_SANITIZER (none|address; default none: the code under
# test forbids unsafe, and an uninstrumented build runs several times more
# inputs per second), FUZZ_TOOLCHAIN (default nightly when rustup has it,
# else stable with RUSTC_BOOTSTRAP=1).
#
# Builds go to target/fuzz, the working corpus to target/fuzz/corpus/<target>
# (seeded from the repository's manifests by fuzz/seeds.py; it grows as the
# fuzzer finds new paths and is kept between runs), findings to
# target/fuzz/artifacts/<target>. Inputs saved under fuzz/regressions/<target>
# are replayed before each target runs: a fixed bug stays fixed. A crash or
# hang is copied there for the bug report. Exit status: 0 when every target
# ran its inputs without a finding.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"
out="$root/target/fuzz"
runs=1000000
timeout=10
targets=()
list=false
for arg in "$@"; do
    case "$arg" in
        -runs=*) runs="${arg#-runs=}" ;;
        -timeout=*) timeout="${arg#-timeout=}" ;;
        -list) list=true ;;
        -h | --help)
            sed -n '2,23p' "$0"
            exit 0
            ;;
        -*)
            echo "unknown option $arg" >&2
            exit 2
            ;;
        *) targets+=("$arg") ;;
    esac
done

all_targets=($(sed -n 's/^name = "\([a-z_]*\)"$/\1/p' "$fuzz/Cargo.toml" | grep -v '^wasmkube'))
if $list; then
    printf '%s\n' "${all_targets[@]}"
    exit 0
fi
if [ ${#targets[@]} -eq 0 ]; then
    targets=("${all_targets[@]}")
fi
for t in "${targets[@]}"; do
    if ! printf '%s\n' "${all_targets[@]}" | grep -qx "$t"; then
        echo "no fuzz target $t (have: ${all_targets[*]})" >&2
        exit 2
    fi
done

# The dictionary that suits each target's input syntax.
dict_for() {
    case "$1" in
        patch_* | manifest) echo "$fuzz/dicts/json.dict" ;;
        selectors) echo "$fuzz/dicts/selectors.dict" ;;
        request_query) echo "$fuzz/dicts/request.dict" ;;
        wagi_cgi) echo "$fuzz/dicts/cgi.dict" ;;
        *) echo "" ;;
    esac
}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "installing cargo-fuzz (once)" >&2
    cargo install cargo-fuzz --locked
fi
toolchain="${FUZZ_TOOLCHAIN:-}"
if [ -z "$toolchain" ]; then
    if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
        toolchain=nightly
    else
        # cargo-fuzz's flags need a nightly compiler; stable accepts them
        # when told it may.
        toolchain=stable
        export RUSTC_BOOTSTRAP=1
    fi
fi
sanitizer="${FUZZ_SANITIZER:-none}"

echo "building ${#targets[@]} fuzz target(s) with $toolchain (sanitizer: $sanitizer)" >&2
build_args=(-a -s "$sanitizer" --target-dir "$out")
mkdir -p "$out/logs"
if ! (cd "$fuzz" && cargo "+$toolchain" fuzz build "${build_args[@]}") >"$out/logs/build.log" 2>&1; then
    tail -n 30 "$out/logs/build.log" >&2
    echo "the fuzz targets do not build (log: $out/logs/build.log)" >&2
    exit 1
fi
bin_dir="$out/$(rustc "+$toolchain" -vV | sed -n 's/^host: //p')/release"

python3 "$fuzz/seeds.py" "$out/corpus"

rows=()
failed=0
for t in "${targets[@]}"; do
    bin="$bin_dir/$t"
    if [ ! -x "$bin" ]; then
        rows+=("| $t | 0 | 0 | BUILD FAILED |")
        failed=1
        continue
    fi
    corpus="$out/corpus/$t"
    artifacts="$out/artifacts/$t"
    regressions="$fuzz/regressions/$t"
    mkdir -p "$corpus" "$artifacts"
    log="$out/logs/$t.log"
    mkdir -p "$(dirname "$log")"

    # Saved findings first: each must now pass.
    if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions" 2>/dev/null)" ]; then
        if ! "$bin" -timeout="$timeout" "$regressions"/* >"$log.regressions" 2>&1; then
            rows+=("| $t | - | - | REGRESSION (see $log.regressions) |")
            failed=1
            continue
        fi
    fi

    dict="$(dict_for "$t")"
    args=(-runs="$runs" -timeout="$timeout" -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$artifacts/")
    if [ -n "$dict" ]; then
        args+=(-dict="$dict")
    fi
    echo "fuzzing $t: $runs runs" >&2
    start=$(date +%s.%N)
    set +e
    "$bin" "${args[@]}" "$corpus" >"$log" 2>&1
    rc=$?
    set -e
    end=$(date +%s.%N)
    secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.0f", b - a }')
    done_runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    if [ -z "$done_runs" ]; then
        done_runs=$(sed -n 's/.*#\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    fi
    if [ "$rc" -eq 0 ]; then
        result="ok"
    else
        failed=1
        finding=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
        kind=$(grep -o -m1 -E 'deadly signal|panicked at|timeout after|out-of-memory|leak' "$log" || true)
        result="FAILED rc=$rc ${kind:-}"
        if [ -n "$finding" ] && [ -f "$finding" ]; then
            mkdir -p "$regressions"
            cp "$finding" "$regressions/"
            result="$result: fuzz/regressions/$t/$(basename "$finding")"
        fi
        result="$result (log $log)"
    fi
    rows+=("| $t | ${done_runs:-?} | $secs | $result |")
done

echo
echo "| target | runs | seconds | result |"
echo "| --- | ---: | ---: | --- |"
printf '%s\n' "${rows[@]}"
exit "$failed"
