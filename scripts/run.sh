#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs what the build needs (scripts/deps.sh names every package), builds
# into build/, and runs tokenbudgetd in the foreground with built-in
# defaults. Stop it with Ctrl-C: it settles open allocations and exits 0. A
# failing step prints its output and what to do; rerunning after a fix
# continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
install_packages "${BUILD_PACKAGES[@]}"

meson_setup build -Dtests=false
if ! out=$(meson compile -C build 2>&1); then
    printf '%s\n' "$out" >&2
    echo "run.sh: the build failed (above); fix it and rerun ./scripts/run.sh" >&2
    exit 1
fi

if [ -n "${TOKENBUDGET_SOCKET:-}" ]; then
    socket=$TOKENBUDGET_SOCKET
elif [ "$(id -u)" -eq 0 ]; then
    socket=/run/tokenbudget/io.tokenbudget
else
    socket=${XDG_RUNTIME_DIR:-/tmp}/tokenbudget/io.tokenbudget
fi
# The durable ledger (window usage, history): kept across runs, like the
# installed service keeps it in /var/lib/tokenbudget. TOKENBUDGET_STATE_DIR
# chooses another; '' keeps everything in memory.
if [ -n "${TOKENBUDGET_STATE_DIR+set}" ]; then
    state=$TOKENBUDGET_STATE_DIR
elif [ "$(id -u)" -eq 0 ]; then
    state=/var/lib/tokenbudget
else
    state=${XDG_STATE_HOME:-$HOME/.local/state}/tokenbudget
fi
[ -z "$state" ] || mkdir -p "$state"
echo "tokenbudgetd: socket $socket"
echo "tokenbudgetd: state directory ${state:-(none: memory only)}"
echo "  try: ./build/client/budgetctl --socket $socket status"
echo "       TOKENBUDGET_SOCKET=$socket ./build/client/example-agent"
exec ./build/daemon/tokenbudgetd --socket "$socket" --state-dir "$state"
