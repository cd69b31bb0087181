#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what the tests need (scripts/deps.sh names every package), builds,
# and runs every test suite (unit, property, integration, system, ...); then
# the unit, property and integration suites again in an address+undefined
# sanitizer build; then the README's C example, built against build/ as the
# README says before installing; then each libFuzzer target for 60 s, one per
# core at a time (when clang is there). A failing step says what failed; a
# rerun after a failure sets up what is missing and goes on.
# Ends with the checks skipped inside test binaries that otherwise passed
# (a root-only part, say), then one line "tests: N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
install_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"

status=0
summary() { # BUILD_DIR: counts from meson's test log (no log: the build failed)
    [ -f "$1/meson-logs/testlog.json" ] || { echo 0 1 0; return; }
    python3 - "$1/meson-logs/testlog.json" <<'PY'
import json, sys
counts = {'OK': 0, 'FAIL': 0, 'SKIP': 0}
for line in open(sys.argv[1]):
    r = json.loads(line)['result']
    counts['OK' if r in ('OK', 'EXPECTEDFAIL') else 'SKIP' if r == 'SKIP' else 'FAIL'] += 1
print(counts['OK'], counts['FAIL'], counts['SKIP'])
PY
}
compile() { # BUILD_DIR
    meson compile -C "$1" && return 0
    echo "test.sh: the build in $1 failed (above); fix it and rerun ./scripts/test.sh" >&2
    return 1
}
# Steps outside meson count as one test each.
ok3=0 fail3=0 skip3=0
step() { # STATUS: 0 passed, 77 skipped, else failed
    case $1 in
    0) ok3=$((ok3 + 1)) ;;
    77) skip3=$((skip3 + 1)) ;;
    *) fail3=$((fail3 + 1)) status=1 ;;
    esac
}

echo "== format check"
if ! clang-format --dry-run --Werror $(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build*'); then
    echo "format check failed: run clang-format -i on the files above" >&2
    status=1
fi

echo "== build"
# run.sh may have configured build/ without the tests: set what the tests need.
if [ -f build/meson-private/coredata.dat ]; then
    meson configure build -Dtests=true -Dwerror=true >/dev/null
else
    meson_setup build -Dwerror=true
fi
compile build || status=1
echo "== tests (all suites)"
rm -f build/meson-logs/testlog.json
meson test -C build --print-errorlogs || status=1
read -r ok1 fail1 skip1 < <(summary build)

echo "== sanitizer build (address,undefined): unit, property and integration suites"
meson_setup build-san -Dwerror=true -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false
compile build-san || status=1
rm -f build-san/meson-logs/testlog.json
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    meson test -C build-san --suite unit --suite property --suite integration --print-errorlogs || status=1
read -r ok2 fail2 skip2 < <(summary build-san)

# The first ```LANG block of README.md that contains WORD.
readme_block() { # LANG WORD
    awk -v lang="$1" -v word="$2" '
        $0 == "```" lang { inside = 1; block = ""; next }
        inside && $0 == "```" { if (index(block, word)) { printf "%s", block; exit } inside = 0; next }
        inside { block = block $0 "\n" }' README.md
}
# The README's C example, built and run with the README's commands for a
# build tree (the uninstalled pkg-config file, the library in build/client)
# in a directory of its own, against a daemon on a private socket.
readme_example() {
    local dir pid rc=0
    dir=$(mktemp -d)
    readme_block c tb_client_open >"$dir/my-agent.c"
    readme_block sh meson-uninstalled >"$dir/build-it.sh"
    if [ ! -s "$dir/my-agent.c" ] || [ ! -s "$dir/build-it.sh" ]; then
        echo "README.md has no C example (a \`\`\`c block calling tb_client_open) or no commands building it" \
            "against build/ (a \`\`\`sh block naming meson-uninstalled)" >&2
        rm -rf "$dir"
        return 1
    fi
    if [ ! -x build/daemon/tokenbudgetd ]; then
        echo "build/ has no tokenbudgetd: the build failed (above)" >&2
        rm -rf "$dir"
        return 1
    fi
    ln -s "$PWD/build" "$dir/build"
    ./build/daemon/tokenbudgetd --socket "$dir/tb.sock" --state-dir "$dir/state" 2>"$dir/daemon.log" &
    pid=$!
    for _ in $(seq 100); do
        [ -S "$dir/tb.sock" ] && break
        sleep 0.05
    done
    echo "in a directory with my-agent.c and build/, TOKENBUDGET_SOCKET=$dir/tb.sock:"
    sed 's/^/  $ /' "$dir/build-it.sh"
    (cd "$dir" && TOKENBUDGET_SOCKET=$dir/tb.sock bash -euo pipefail build-it.sh) || {
        rc=$?
        echo "the README's C example did not build or run as the README says (above)" >&2
    }
    kill -TERM "$pid"
    wait "$pid" || { rc=1; echo "tokenbudgetd did not exit 0 after SIGTERM:" >&2; cat "$dir/daemon.log" >&2; }
    rm -rf "$dir"
    [ $rc -eq 0 ] && echo "README C example: OK"
    return $rc
}
echo "== README: the C example, built against build/ before installing"
rc=0
readme_example || rc=$?
step $rc

echo "== fuzz targets (libFuzzer, 60 s each, one per core at a time)"
if [ ! -f tests/fuzz/run-fuzz.sh ]; then
    echo "skipped: tests/fuzz/run-fuzz.sh does not exist yet"
    step 77
elif ! command -v clang >/dev/null || ! dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q 'install ok installed'; then
    echo "skipped: needs clang and libclang-rt-14-dev (apt-get install clang libclang-rt-14-dev)"
    step 77
elif ! CC=clang meson_setup build-fuzz -Dfuzz=true -Dtests=false; then
    step 1
else
    rc=0
    tests/fuzz/run-fuzz.sh -j "$(nproc)" build-fuzz 60 || rc=$?
    step $rc
fi

# What the shared Check runner (tests/common/tb-check.c) listed as not checked
# in binaries that meson counts as passed.
not_checked() { # BUILD_DIR...
    python3 - "$@" <<'PY'
import json, os, sys
lines = []
for build in sys.argv[1:]:
    log = os.path.join(build, 'meson-logs', 'testlog.json')
    if not os.path.exists(log):
        continue
    for line in open(log):
        r = json.loads(line)
        for out in (r.get('stdout') or '', r.get('stderr') or ''):
            for l in out.splitlines():
                if l.startswith(('  skipped ', '  part not run in ')):
                    lines.append(f"{build}: {r['name']}: {l.strip()}")
if lines:
    print(f"not checked inside test binaries that passed ({len(lines)}):")
    print('\n'.join('  ' + l for l in lines))
PY
}
not_checked build build-san || true

echo "tests: $((ok1 + ok2 + ok3)) passed, $((fail1 + fail2 + fail3)) failed, $((skip1 + skip2 + skip3)) skipped"
exit $status
