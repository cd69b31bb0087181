#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# with-journald.sh [--catalog FILE] COMMAND...
# Runs COMMAND next to a real, private systemd-journald (TESTING.md): a
# private mount namespace with tmpfs over /run/systemd, /run/log and the
# journal directories, a volatile journald.conf bound over the real one, and
# with --catalog a private catalog directory (the system's catalogs plus
# FILE) whose database is rebuilt for journalctl -x. The host's journal,
# catalog and sockets are never touched. Exits 77 with a reason when this
# machine cannot do it (not root, no journald, no unshare, or a chroot whose
# root is not a mount point: there the new namespace's mounts cannot be made
# private, and unprivate ones would reach the host's).
set -euo pipefail

skip() { echo "SKIP: $*" >&2; exit 77; }

if [ "${1:-}" != --inside ]; then
    [ "$(id -u)" -eq 0 ] || skip "needs root for a private mount namespace and journald"
    for tool in unshare journalctl; do
        command -v "$tool" >/dev/null || skip "$tool is not installed"
    done
    [ -x /lib/systemd/systemd-journald ] || skip "/lib/systemd/systemd-journald is not installed (package systemd)"
    err=$(unshare -m --propagation private true 2>&1) ||
        skip "no private mount namespace here ($err); in a chroot, bind-mount its root onto itself" \
            "before chroot (mount --bind ROOT ROOT), as scripts/check-fresh.sh does"
    exec unshare -m --propagation private "$0" --inside "$@"
fi
shift

catalog=
if [ "${1:-}" = --catalog ]; then
    catalog=$2
    shift 2
fi

private=$(mktemp -d /tmp/tb-journald.XXXXXX)
mount -t tmpfs tmpfs "$private"
# A fresh /run (a chroot's) lacks these; an empty directory left behind
# on the host's /run is harmless.
for dir in /run/systemd /run/log; do
    mkdir -p "$dir"
    mount -t tmpfs tmpfs "$dir"
done
# Storage=volatile writes under /run/log only; a host /var/log/journal is
# hidden so that journalctl reads our entries alone.
[ ! -d /var/log/journal ] || mount -t tmpfs tmpfs /var/log/journal
mkdir -p /run/systemd/journal
printf '[Journal]\nStorage=volatile\nReadKMsg=no\nForwardToSyslog=no\nForwardToWall=no\nForwardToConsole=no\nRateLimitBurst=0\n' \
    >"$private/journald.conf"
mount --bind "$private/journald.conf" /etc/systemd/journald.conf

if [ -n "$catalog" ]; then
    mkdir -p "$private/catalog" "$private/catalog-db"
    cp /usr/lib/systemd/catalog/*.catalog "$private/catalog/" 2>/dev/null || true
    cp "$catalog" "$private/catalog/"
    mount --bind "$private/catalog" /usr/lib/systemd/catalog
    mkdir -p /var/lib/systemd/catalog
    mount --bind "$private/catalog-db" /var/lib/systemd/catalog
    journalctl --update-catalog
fi

/lib/systemd/systemd-journald &
journald=$!
cleanup() {
    kill "$journald" 2>/dev/null || true
    wait "$journald" 2>/dev/null || true
    # The mounts vanish with the namespace; the mount point is on the host.
    umount -l "$private" && rmdir "$private"
}
trap cleanup EXIT

for _ in $(seq 100); do
    [ -S /run/systemd/journal/socket ] && break
    kill -0 "$journald" 2>/dev/null || { echo "systemd-journald exited at start" >&2; exit 1; }
    sleep 0.05
done
[ -S /run/systemd/journal/socket ] || { echo "systemd-journald did not create its socket in 5 s" >&2; exit 1; }

status=0
"$@" || status=$?
exit $status
