# SPDX-License-Identifier: MIT
# Sourced by run.sh, test.sh and bench/run.sh: the Debian packages each needs,
# and a function that installs the missing ones (apt-get, as root).

BUILD_PACKAGES=(gcc pkg-config meson ninja-build python3
    libevent-dev libconfig-dev libsystemd-dev libjson-c-dev)
# Check for the unit tests; Go and Debian's varlink-go for the conformance test;
# clang-format for the format check; systemd (journald, journalctl,
# systemd-socket-activate, systemd-analyze) for the system suite.
TEST_PACKAGES=(check golang-go golang-github-varlink-go-dev clang-format systemd man-db)

install_packages() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing packages: ${missing[*]}; install them (as root: apt-get install ${missing[*]})" >&2
        return 1
    fi
    echo "installing: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
