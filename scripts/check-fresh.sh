#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# check-fresh.sh: the README on a new user's machine. Builds a minbase
# Debian 12 root with debootstrap (cached as a tarball in
# $TOKENBUDGET_FRESH_CACHE, default /var/cache/tokenbudget-check-fresh),
# clones the committed HEAD of this repository into a fresh copy of it and,
# each in a private mount namespace chrooted into that root (TESTING.md's
# recipe), runs the README's commands: ./scripts/run.sh (until it prints its
# socket and `budgetctl status` answers there, then SIGTERM, which must give
# exit 0), ./scripts/test.sh (it must end "tests: N passed, 0 failed, N
# skipped"), and the "Installing" section (meson install with --prefix=/usr,
# the config in /etc/tokenbudget, the catalog, the README's C example built
# with pkg-config against the installed library and run against the
# installed daemon). Prints one result line per step and exits 1 if any
# failed. Needs root and Debian's mirror (it downloads a few hundred MB); not
# part of CI. Uncommitted changes are not tested. Logs stay in the work
# directory it names ($TOKENBUDGET_FRESH_WORK, default /var/tmp); the root is
# deleted at the end unless TOKENBUDGET_FRESH_KEEP=1.
set -euo pipefail

die() { echo "check-fresh: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, mount namespaces, chroot): run it as root"
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel) ||
    die "$(dirname "$0")/.. is not a git checkout: run the copy inside the repository"
head=$(git -C "$repo" rev-parse HEAD)
cache=${TOKENBUDGET_FRESH_CACHE:-/var/cache/tokenbudget-check-fresh}
tarball=$cache/bookworm-minbase.tar.gz
sources=/etc/apt/sources.list.d/debian.sources

[ -r "$sources" ] || die "$sources is missing: it names the Debian mirror (deb822 'URIs:' line) to bootstrap from"
mirror=$(awk '$1 == "URIs:" { print $2; exit }' "$sources")
[ -n "$mirror" ] || die "no 'URIs:' line in $sources"
for tool in unshare chroot mount tar; do
    command -v "$tool" >/dev/null || die "$tool is not installed (util-linux, coreutils, mount, tar)"
done
if ! command -v debootstrap >/dev/null; then
    echo "check-fresh: installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null ||
        die "could not install debootstrap: apt-get install debootstrap, then rerun"
fi

if [ ! -f "$tarball" ]; then
    echo "check-fresh: debootstrap --variant=minbase bookworm from $mirror (a few minutes; cached in $tarball)"
    mkdir -p "$cache"
    staging=$(mktemp -d "$cache/bootstrap.XXXXXX")
    chmod 0755 "$staging" # the root directory of the root: mktemp made it 0700
    if ! debootstrap --variant=minbase bookworm "$staging" "$mirror" >"$cache/debootstrap.log" 2>&1; then
        tail -n 20 "$cache/debootstrap.log" >&2
        rm -rf "$staging"
        die "debootstrap failed (above; whole log: $cache/debootstrap.log): check that $mirror is reachable"
    fi
    tar -C "$staging" --numeric-owner -czf "$tarball.part" . && mv "$tarball.part" "$tarball"
    rm -rf "$staging"
fi

work=$(mktemp -d "${TOKENBUDGET_FRESH_WORK:-/var/tmp}/tb-fresh.XXXXXX")
root=$work/root
logs=$work/logs
mkdir -p "$root" "$logs"

# Processes a step left running inside the root (none should) die with it.
cleanup() {
    local proc
    for proc in /proc/[0-9]*; do
        [ "$(readlink "$proc/root" 2>/dev/null)" = "$root" ] && kill -KILL "${proc#/proc/}" 2>/dev/null
    done
    if [ "${TOKENBUDGET_FRESH_KEEP:-0}" = 1 ]; then
        echo "check-fresh: root kept in $root"
    else
        rm -rf "$root"
    fi
}
trap cleanup EXIT

tar -C "$root" --numeric-owner -xzf "$tarball"
chmod 0755 "$root"
rm -f "$root/etc/apt/sources.list"
cp "$sources" "$root/etc/apt/sources.list.d/"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
# The network this host reaches the world through: a local certificate
# authority (an egress proxy's) goes in too, so that https from the root (the
# npm registry) verifies as it does here; update-ca-certificates adds it to the
# bundle when test.sh installs ca-certificates. A host without one copies nothing.
mkdir -p "$root/usr/local/share/ca-certificates"
cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/" 2>/dev/null || true
git clone -q --no-hardlinks "$repo" "$root/root/tokenbudget"
git -C "$root/root/tokenbudget" checkout -q --detach "$head"
echo "check-fresh: commit $(git -C "$repo" log -1 --format='%h %s' "$head") in a minbase Debian 12 root ($work)"
[ -z "$(git -C "$repo" status --porcelain --untracked-files=no)" ] ||
    echo "check-fresh: note: $repo has uncommitted changes; they are not tested"

in_root() { # LOG SCRIPT: runs SCRIPT with bash in /root/tokenbudget inside the root
    unshare --mount --fork --kill-child -- /bin/bash -euo pipefail -c '
        root=$1
        mount --make-rprivate /
        mount --bind "$root" "$root"    # so that unshare -m works inside the chroot
        mount -t proc proc "$root/proc"
        mount --rbind /sys "$root/sys"
        mount --rbind /dev "$root/dev"
        mount -t tmpfs tmpfs "$root/run"
        mount -t tmpfs tmpfs "$root/tmp"
        exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
            PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            /bin/bash -euo pipefail -c "cd /root/tokenbudget; $2"' in-root "$root" "$2" >"$1" 2>&1
}

failed=0
result() { # STEP LOG STATUS WHAT_PASSING_MEANS [FAILURE_DETAIL]
    if [ "$3" -eq 0 ]; then
        echo "check-fresh: $1: PASS ($4)"
    else
        failed=1
        echo "check-fresh: $1: FAIL (exit $3${5:+; $5}); last lines of $2:" >&2
        tail -n 30 "$2" | sed 's/^/    /' >&2
    fi
}

# The first ```LANG block of the clone's README.md that contains WORD.
readme_block() { # LANG WORD
    awk -v lang="$1" -v word="$2" '
        $0 == "```" lang { inside = 1; block = ""; next }
        inside && $0 == "```" { if (index(block, word)) { printf "%s", block; exit } inside = 0; next }
        inside { block = block $0 "\n" }' "$root/root/tokenbudget/README.md"
}

# run.sh: started as the README says, stopped like Ctrl-C would (SIGTERM).
echo "check-fresh: ./scripts/run.sh (log: $logs/run.log)"
status=0
in_root "$logs/run.log" '
    ./scripts/run.sh >/root/run.out 2>&1 &
    pid=$!
    trap "kill $pid 2>/dev/null || true; cat /root/run.out" EXIT
    for _ in $(seq 1800); do
        grep -q "^tokenbudgetd: socket " /root/run.out && break
        kill -0 $pid 2>/dev/null || { wait $pid || echo "run.sh exited with status $? before printing its socket"; exit 1; }
        sleep 0.5
    done
    socket=$(sed -n "s/^tokenbudgetd: socket //p" /root/run.out)
    [ -n "$socket" ] || { echo "run.sh printed no socket in 15 minutes"; exit 1; }
    for _ in $(seq 100); do
        ./build/client/budgetctl --socket "$socket" status >/dev/null 2>&1 && break
        kill -0 $pid 2>/dev/null || { echo "tokenbudgetd exited"; exit 1; }
        sleep 0.1
    done
    ./build/client/budgetctl --socket "$socket" status || { echo "budgetctl status got no answer on $socket"; exit 1; }
    kill -TERM $pid
    rc=0
    wait $pid || rc=$?
    trap "cat /root/run.out" EXIT
    echo "tokenbudgetd exit status after SIGTERM: $rc"
    [ $rc -eq 0 ]' || status=$?
socket=$(sed -n 's/^tokenbudgetd: socket //p' "$logs/run.log" | head -n 1)
result run.sh "$logs/run.log" $status "socket $socket; budgetctl status answered; exit 0 after SIGTERM" \
    "${socket:+socket $socket}"

echo "check-fresh: ./scripts/test.sh (log: $logs/test.log)"
status=0
in_root "$logs/test.log" './scripts/test.sh' || status=$?
line=$(grep -E '^tests: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$logs/test.log" | tail -n 1 || true)
case "$line" in
*", 0 failed, "*) ;;
*) [ $status -ne 0 ] || status=1 ;;
esac
skipped=$(grep -E '^ *[0-9]+/[0-9]+ .* SKIP ' "$logs/test.log" | sed -E 's/^ *[0-9]+\/[0-9]+ +//; s/ +SKIP.*//' |
    tr -s ' \n' ' ' || true)
result test.sh "$logs/test.log" $status "$line${skipped:+; skipped:$skipped}" \
    "${line:-no summary line}${skipped:+; skipped:$skipped}"

# The README's "Installing" section, as written: this root is thrown away.
echo "check-fresh: README Installing (log: $logs/install.log)"
readme_block sh "meson install" >"$root/root/readme-install.sh"
readme_block sh 'cc -o my-agent my-agent.c $(pkg-config' >"$root/root/readme-agent.sh"
readme_block c tb_client_open >"$root/root/my-agent.c"
status=0
in_root "$logs/install.log" '
    for f in readme-install.sh readme-agent.sh my-agent.c; do
        [ -s /root/$f ] || { echo "README.md: no block for /root/$f (Installing commands, agent build, C example)"; exit 1; }
    done
    echo "== the README Installing commands:"; cat /root/readme-install.sh
    bash -euo pipefail -x /root/readme-install.sh
    journalctl --list-catalog >/root/catalog.list
    for id in $(sed -n "s/^-- \([0-9a-f]\{32\}\)\$/\1/p" systemd/tokenbudgetd.catalog); do
        grep -q "^$id " /root/catalog.list || { echo "journalctl --list-catalog lacks $id"; exit 1; }
    done
    echo "journalctl --list-catalog: every MESSAGE_ID of systemd/tokenbudgetd.catalog"
    tokenbudgetd --check-config /etc/tokenbudget/tokenbudgetd.conf
    [ -x /bin/kill ] || { echo "/bin/kill (the units ExecReload=) is missing: procps is not installed"; exit 1; }
    tokenbudgetd >/root/daemon.out 2>&1 &
    pid=$!
    trap "kill $pid 2>/dev/null || true; cat /root/daemon.out" EXIT
    for _ in $(seq 100); do [ -S /run/tokenbudget/io.tokenbudget ] && break; sleep 0.1; done
    echo "== the README agent build, in /root with my-agent.c:"; cat /root/readme-agent.sh
    (cd /root && bash -euo pipefail -x readme-agent.sh)
    budgetctl status
    kill -TERM $pid
    rc=0
    wait $pid || rc=$?
    echo "installed tokenbudgetd exit status after SIGTERM: $rc"
    [ $rc -eq 0 ]' || status=$?
result install "$logs/install.log" $status \
    "meson install --prefix=/usr, /etc/tokenbudget/tokenbudgetd.conf, catalog; README C example built with pkg-config and run against /usr/sbin/tokenbudgetd"

if [ $failed -eq 0 ]; then
    echo "check-fresh: PASS: the README works on a minbase Debian 12 (commit ${head:0:12}; logs in $logs)"
else
    echo "check-fresh: FAIL (commit ${head:0:12}; logs in $logs)" >&2
fi
exit $failed
