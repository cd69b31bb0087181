# SPDX-License-Identifier: MIT
# Sourced by run.sh, test.sh and bench/run.sh: the Debian packages each needs,
# every one named (apt-get here never pulls recommended packages, so gcc
# comes without libc6-dev), and a function that installs the missing ones
# (apt-get, as root) or says which are missing and how to install them.

# dpkg-dev: meson asks its dpkg-architecture for the multiarch libdir
# (lib/x86_64-linux-gnu); without it the library would be installed in lib64,
# where neither the loader nor pkg-config look. procps: /bin/kill, which the
# units' ExecReload= runs. gcc brings binutils, whose nm the core boundary
# test reads libtbcore.a with. libsqlite3-dev: the durable store's SQLite
# (daemon/store.c: the ledger's usage, open allocations and history in the
# state directory); it brings the runtime libsqlite3-0. libcurl4-openssl-dev:
# tokenbudget-proxy's upstream side (libcurl's multi interface on the proxy's
# libevent loop: HTTP/1.1 and 2, HTTP over Unix sockets, TLS with OpenSSL
# that verifies certificates); it brings libcurl4. libevent-dev already has
# libevent_extra (evhttp, the proxy's server side).
BUILD_PACKAGES=(gcc libc6-dev dpkg-dev pkg-config meson ninja-build python3
    libevent-dev libconfig-dev libsystemd-dev libjson-c-dev procps libsqlite3-dev
    libcurl4-openssl-dev)
# Check for the unit tests; Go and Debian's varlink-go for the conformance test;
# clang-format for the format check; systemd (journald, journalctl,
# systemd-socket-activate, systemd-analyze) for the system suite and man-db
# for its Documentation= check; clang and libclang-rt-14-dev (the libFuzzer
# runtime, only recommended by clang) for the fuzz targets, and llvm for
# llvm-symbolizer, without which their sanitizer reports name no source line.
# clang-format already brings LLVM's libraries: on a bare Debian 12 these
# three add 32 MB of downloads (200 MB on disk) to the 217 MB the rest needs,
# and the fuzz step 60 s per target, one per core at a time (two minutes on
# two cores for the three targets). strace counts the daemon's system calls
# per message (tests/integration/test-syscalls.py; 1.3 MB). umockdev (its
# umockdev-wrapper and preload library) and libumockdev-dev (umockdev-1.0.pc,
# umockdev.h) fake sysfs devices and uevents for the power monitor's system
# test (tests/system/test-power-monitor.c): batteries, AC adapters and
# thermal zones that our machines lack, seen by the real sd-device code.
# nodejs and npm: tokenbudget-proxy's test upstream (tests/proxy/upstream.js)
# and the real client libraries its tests drive (the openai,
# @anthropic-ai/sdk and ollama npm packages, pinned in
# tests/proxy/clients/package-lock.json, which npm-install.sh installs into the
# build directory from the npm registry; Debian 12's nodejs 18 runs them). A
# nodejs from elsewhere (NodeSource's) bundles its own npm and conflicts with
# Debian's, so npm is named only when there is no npm on PATH. On a bare
# Debian 12 the two bring 387 packages (npm is packaged as node-* modules):
# 47 MB of downloads, 225 MB on disk. curl(1): tests/proxy/test-proxy.c
# drives the proxy with it, as people do (0.3 MB over libcurl4, which the
# proxy needs anyway); ca-certificates: the npm registry over https (nodejs
# reads the system's store), and https upstreams.
TEST_PACKAGES=(check golang-go golang-github-varlink-go-dev clang-format systemd man-db
    clang libclang-rt-14-dev llvm strace umockdev libumockdev-dev nodejs curl ca-certificates)
command -v npm >/dev/null 2>&1 || TEST_PACKAGES+=(npm)

install_packages() {
    local missing=() pkg log
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]}; install them (as root: apt-get install ${missing[*]}) and rerun" >&2
        return 1
    fi
    echo "installing: ${missing[*]}" >&2
    log=$(mktemp)
    if ! { apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "installing ${missing[*]} failed (apt-get output above): check the network and" \
            "/etc/apt/sources.list.d/, install them with apt-get install ${missing[*]}, and rerun" >&2
        return 1
    fi
    rm -f "$log"
}

# meson_setup DIR OPTION...: configures DIR unless a previous setup finished
# there (a failed one leaves a directory without coredata, set up anew);
# prints meson's output only when it fails.
meson_setup() {
    local dir=$1 out
    shift
    [ -f "$dir/meson-private/coredata.dat" ] && return 0
    if ! out=$(meson setup "$dir" "$@" 2>&1); then
        printf '%s\n' "$out" >&2
        echo "meson setup $dir $* failed (above; log: $dir/meson-logs/meson-log.txt): install what it" \
            "names, or remove $dir, and rerun" >&2
        return 1
    fi
}
