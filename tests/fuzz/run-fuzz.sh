#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Runs every libFuzzer target of a build for a bounded time: each starts from
# a temporary copy of its seed corpus (tests/fuzz/corpus/NAME, so the tree
# stays clean) with its dictionary (tests/fuzz/NAME.dict), and prints one line
# per target: runs, coverage reached (libFuzzer's "cov:", edges of the
# instrumented code) and what the seed corpus alone covered. A crash, leak,
# UB report, timeout or memory blow-up is kept as a reproducer in
# BUILD_DIR/fuzz-artifacts/ and fails the run. It builds the targets first
# when BUILD_DIR is a meson build dir, but never configures one:
#   CC=clang meson setup build-fuzz -Dfuzz=true -Dtests=false
#   tests/fuzz/run-fuzz.sh build-fuzz 20
# -j JOBS runs up to JOBS targets at once (default 1), each still for SECONDS;
# scripts/test.sh runs one per core. The lines come in the order of TARGETS.
# Exit status: 0 all clean, 1 a target failed (or did not build), 77 skipped
# (clang missing, or BUILD_DIR has no fuzz targets), 2 usage.
set -u

TARGETS=(codec config procfs proxy-stream)

usage() {
        echo "usage: $0 [-j JOBS] BUILD_DIR SECONDS" >&2
        exit 2
}

skip() {
        echo "fuzz: skipped: $*"
        exit 77
}

jobs=1
if [ "${1:-}" = -j ]; then
        [ $# -ge 2 ] || usage
        jobs=$2
        shift 2
fi
[ $# -eq 2 ] || usage
build=$1
seconds=$2
[[ $seconds =~ ^[1-9][0-9]*$ ]] || usage
[[ $jobs =~ ^[1-9][0-9]*$ ]] || usage
fuzz_dir=$(cd "$(dirname "$0")" && pwd)

command -v clang >/dev/null || skip "clang is not installed (the fuzz targets need clang's libFuzzer)"
probe=$(mktemp "${TMPDIR:-/tmp}/run-fuzz-probe.XXXXXX") || exit 1
if ! echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }' |
        clang -x c -fsanitize=fuzzer,address,undefined -o "$probe" - 2>/dev/null; then
        rm -f "$probe"
        skip "clang cannot link -fsanitize=fuzzer (apt-get install libclang-rt-14-dev)"
fi
rm -f "$probe"
[ -d "$build" ] || skip "$build does not exist (CC=clang meson setup $build -Dfuzz=true -Dtests=false)"

exes=()
for t in "${TARGETS[@]}"; do
        exes+=("tests/fuzz/fuzz-$t")
done
if [ -f "$build/build.ninja" ]; then
        if ! grep -q "^build tests/fuzz/fuzz-codec:" "$build/build.ninja"; then
                skip "$build was not configured with -Dfuzz=true (meson configure $build -Dfuzz=true)"
        fi
        if ! log=$(ninja -C "$build" "${exes[@]}" 2>&1); then
                echo "fuzz: building the fuzz targets in $build failed:"
                echo "$log" | grep -v '^\[' | head -n 30
                exit 1
        fi
fi
for exe in "${exes[@]}"; do
        [ -x "$build/$exe" ] || skip "$build/$exe is not built (CC=clang meson setup $build -Dfuzz=true)"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/run-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
artifacts=$(cd "$build" && pwd)/fuzz-artifacts
mkdir -p "$artifacts" || exit 1

# A report names the source line; UB aborts (the targets are built with
# -fno-sanitize-recover) and libFuzzer keeps the input that caused it.
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"

# The value of the last "key: N" in libFuzzer's output, e.g. field cov INITED.
last_number() {
        local key=$1 pattern=$2 file=$3
        grep -a "$pattern" "$file" | grep -ao "$key: *[0-9]*" | tail -n 1 | grep -o '[0-9]*$'
}

# Runs target $1 and writes its exit status and elapsed seconds to $tmp/fuzz-$1.rc.
run_target() {
        local t=$1 name=fuzz-$1 start rc
        mkdir -p "$tmp/corpus"
        cp -R "$fuzz_dir/corpus/$t" "$tmp/corpus/$t" || {
                echo "1 0" >"$tmp/$name.rc"
                return
        }
        start=$SECONDS
        # -timeout: one input taking 10 s is a hang (they take microseconds);
        # -rss_limit_mb: ASan's quarantine alone takes some 400 MB.
        "$build/tests/fuzz/$name" \
                -max_total_time="$seconds" \
                -dict="$fuzz_dir/$t.dict" \
                -print_final_stats=1 \
                -timeout=10 \
                -rss_limit_mb=2048 \
                -malloc_limit_mb=512 \
                -error_exitcode=1 \
                -timeout_exitcode=1 \
                -artifact_prefix="$artifacts/$name-" \
                "$tmp/corpus/$t" >"$tmp/$name.log" 2>&1
        rc=$?
        echo "$rc $((SECONDS - start))" >"$tmp/$name.rc"
}

# At most $jobs at once.
running=0
for t in "${TARGETS[@]}"; do
        if [ "$running" -ge "$jobs" ]; then
                wait -n
                running=$((running - 1))
        fi
        run_target "$t" &
        running=$((running + 1))
done
wait

failed=0
for t in "${TARGETS[@]}"; do
        name=fuzz-$t
        log=$tmp/$name.log
        read -r rc elapsed <"$tmp/$name.rc" 2>/dev/null || { rc=1 elapsed=0; }
        runs=$(grep -ao 'stat::number_of_executed_units: *[0-9]*' "$log" 2>/dev/null | grep -o '[0-9]*$')
        seed_cov=$(last_number cov 'INITED' "$log")
        cov=$(last_number cov 'cov:' "$log")
        if [ $rc -eq 0 ] && [ -n "$runs" ]; then
                echo "$name: $runs runs in $elapsed s, coverage ${cov:-?} edges (seed corpus: ${seed_cov:-?}), 0 crashes"
                continue
        fi
        failed=1
        reproducer=$(grep -ao 'Test unit written to .*' "$log" | tail -n 1 | sed 's/^Test unit written to //')
        echo "$name: FAILED (exit $rc) after ${runs:-?} runs in $elapsed s, coverage ${cov:-?} edges" \
                "(seed corpus: ${seed_cov:-?}), 1 crash"
        echo "  reproducer: ${reproducer:-none written} (replay: $build/tests/fuzz/$name ${reproducer:-FILE})"
        echo "  report:"
        # The first lines of the sanitizer's or the harness's report.
        grep -anE -m 1 '==[0-9]+==(ERROR|WARNING)|runtime error|^fuzz-[a-z]+: |deadly signal|ERROR: libFuzzer|ALARM|out-of-memory|malloc\(' \
                "$log" | cut -d: -f1 | {
                read -r first || first=1
                tail -n +"$first" "$log" | head -n 20 | sed 's/^/    /'
        }
        echo "  full log: $artifacts/$name.log"
        cp "$log" "$artifacts/$name.log"
done
exit $failed
