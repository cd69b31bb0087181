#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what the tests need, builds, and runs every test suite (unit,
# integration, system); then the
# unit and integration suites again in an address+undefined sanitizer build.
# Ends with one line "tests: N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
install_packages "${BUILD_PACKAGES[@]}" "${TEST_PACKAGES[@]}"

status=0
summary() { # BUILD_DIR: counts from meson's test log
    python3 - "$1/meson-logs/testlog.json" <<'PY'
import json, sys
counts = {'OK': 0, 'FAIL': 0, 'SKIP': 0}
for line in open(sys.argv[1]):
    r = json.loads(line)['result']
    counts['OK' if r in ('OK', 'EXPECTEDFAIL') else 'SKIP' if r == 'SKIP' else 'FAIL'] += 1
print(counts['OK'], counts['FAIL'], counts['SKIP'])
PY
}

echo "== format check"
if ! clang-format --dry-run --Werror $(git ls-files '*.c' '*.h' 2>/dev/null || find . -name '*.[ch]' -not -path './build*'); then
    echo "format check failed: run clang-format -i on the files above" >&2
    status=1
fi

echo "== build"
# run.sh may have configured build/ without the tests: set what the tests need.
if [ -d build ]; then
    meson configure build -Dtests=true -Dwerror=true >/dev/null
else
    meson setup build -Dwerror=true >/dev/null
fi
meson compile -C build
echo "== tests (all suites)"
meson test -C build --print-errorlogs || status=1
read -r ok1 fail1 skip1 < <(summary build)

echo "== sanitizer build (address,undefined): unit and integration suites"
[ -d build-san ] || meson setup build-san -Dwerror=true -Dbuildtype=debug -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
meson compile -C build-san
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    meson test -C build-san --suite unit --suite integration --print-errorlogs || status=1
read -r ok2 fail2 skip2 < <(summary build-san)

echo "tests: $((ok1 + ok2)) passed, $((fail1 + fail2)) failed, $((skip1 + skip2)) skipped"
exit $status
