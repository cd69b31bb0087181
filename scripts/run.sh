#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what the build needs, builds, and runs tokenbudgetd in the
# foreground with built-in defaults. Stop it with Ctrl-C: it settles open
# allocations and exits 0.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
install_packages "${BUILD_PACKAGES[@]}"

[ -d build ] || meson setup build -Dtests=false >/dev/null
meson compile -C build >/dev/null

if [ -n "${TOKENBUDGET_SOCKET:-}" ]; then
    socket=$TOKENBUDGET_SOCKET
elif [ "$(id -u)" -eq 0 ]; then
    socket=/run/tokenbudget/io.tokenbudget
else
    socket=${XDG_RUNTIME_DIR:-/tmp}/tokenbudget/io.tokenbudget
fi
echo "tokenbudgetd: socket $socket"
echo "  try: ./build/client/budgetctl --socket $socket status"
echo "       TOKENBUDGET_SOCKET=$socket ./build/client/example-agent"
exec ./build/daemon/tokenbudgetd --socket "$socket"
