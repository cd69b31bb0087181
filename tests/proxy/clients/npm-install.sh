#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# npm-install.sh DEST: installs the pinned client libraries of
# package-lock.json (next to this script) into DEST/node_modules with npm ci,
# once: a later run with the same lockfile does nothing (DEST/.installed holds
# the lockfile's checksum). npm's own cache is preferred over the registry
# (--prefer-offline), so a machine that installed them once needs no network.
# Concurrent runs take turns (flock). Exit 77 with the reason when node or npm
# is missing or npm cannot install (registry unreachable): the tests that need
# the libraries then skip.
set -euo pipefail
src=$(cd "$(dirname "$0")" && pwd)
dest=${1:?usage: npm-install.sh DEST}

command -v node >/dev/null || { echo "SKIP: node is not installed (apt-get install nodejs)"; exit 77; }
command -v npm >/dev/null || { echo "SKIP: npm is not installed (apt-get install npm)"; exit 77; }
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 18 ]; then
    echo "SKIP: node $(node --version) is older than 18, which the client libraries need"
    exit 77
fi

mkdir -p "$dest"
exec 9>"$dest/.lock"
flock 9
sum=$(sha256sum "$src/package-lock.json" | cut -d' ' -f1)
if [ -d "$dest/node_modules" ] && [ "$(cat "$dest/.installed" 2>/dev/null)" = "$sum" ]; then
    exit 0
fi
log=$dest/npm-ci.log
skip_failed() {
    tail -n 20 "$log"
    echo "SKIP: npm ci could not install the client libraries of $src/package-lock.json" \
        "into $dest (output above, whole log: $log): is the npm registry reachable?"
    exit 77
}
# A failure in the last 10 minutes with this lockfile: skip at once, not
# after npm's timeouts again (the tests that need the libraries run one
# after another).
if [ "$(cat "$dest/.failed" 2>/dev/null)" = "$sum" ] && [ -n "$(find "$dest/.failed" -mmin -10)" ]; then
    skip_failed
fi
rm -f "$dest/.installed" "$dest/.failed"
cp "$src/package.json" "$src/package-lock.json" "$dest/"
# npm's default retries take minutes to give up on an unreachable registry.
if ! (cd "$dest" && timeout 240 npm ci --no-audit --no-fund --prefer-offline --loglevel=error \
    --fetch-retries=1 --fetch-retry-mintimeout=2000 --fetch-retry-maxtimeout=10000 --fetch-timeout=30000) \
    >"$log" 2>&1; then
    echo "$sum" >"$dest/.failed"
    skip_failed
fi
echo "$sum" >"$dest/.installed"
