#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Runs the varlink-go conformance test (tests/conformance/*.go) against
# tokenbudgetd: builds the Go program offline into the build directory,
# starts the daemon on a private socket with a private configuration, runs
# the checks, stops the daemon with SIGTERM (it must exit 0) and cleans up on
# every exit path. Exits with the Go program's status; 77 (skip) when Go or
# Debian's varlink-go is not installed; 99 when the harness itself fails.
#
# Usage: run-conformance.sh [DAEMON [SOURCE_DIR [BUILD_DIR]]]
# or the environment variables TOKENBUDGETD, TOKENBUDGET_SOURCE_DIR and
# CONFORMANCE_BUILD_DIR. SOURCE_DIR defaults to the tree this script is in,
# BUILD_DIR to a temporary directory.
set -euo pipefail

VARLINK_GO=/usr/share/gocode/src/github.com/varlink/go
# Must match the expectations passed to the Go program below.
DEFAULT_ESTIMATE=3000
MAX_REQUEST_TOKENS=100000
# The daemon must be listening within this many tenths of a second, and gone
# this long after SIGTERM.
WAIT_TENTHS=100

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
daemon=${1:-${TOKENBUDGETD:-}}
source_dir=${2:-${TOKENBUDGET_SOURCE_DIR:-$script_dir/../..}}
build_dir=${3:-${CONFORMANCE_BUILD_DIR:-}}

if [[ -z $daemon ]]; then
        echo "usage: $0 DAEMON [SOURCE_DIR [BUILD_DIR]]" >&2
        exit 99
fi
if [[ ! -x $daemon ]]; then
        echo "$daemon: not an executable" >&2
        exit 99
fi
if ! command -v go >/dev/null; then
        echo "skip: go is not installed (Debian package golang-go)"
        exit 77
fi
if [[ ! -f $VARLINK_GO/varlink/connection.go ]]; then
        echo "skip: varlink-go is not installed at $VARLINK_GO (Debian package golang-github-varlink-go-dev)"
        exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tokenbudget-conformance.XXXXXX")
daemon_pid=

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
        if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then
                kill -KILL "$daemon_pid" 2>/dev/null || true
                wait "$daemon_pid" 2>/dev/null || true
        fi
        rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -z $build_dir ]]; then
        build_dir=$tmp/build
fi
mkdir -p "$build_dir"
build_dir=$(cd "$build_dir" && pwd)

# Build from a copy so the source tree stays untouched (go may write go.sum).
# HOME may be unset in CI: every Go directory is set explicitly.
go_src=$build_dir/go-src
rm -rf "$go_src"
mkdir -p "$go_src"
cp "$source_dir"/tests/conformance/go.mod "$source_dir"/tests/conformance/*.go "$go_src"/
(
        cd "$go_src"
        env GOPROXY=off GOFLAGS=-mod=mod GO111MODULE=on GOWORK=off GOENV=off GOTOOLCHAIN=local \
                GOCACHE="$build_dir/go-cache" GOPATH="$build_dir/go-path" CGO_ENABLED=0 \
                go build -o "$build_dir/conformance" .
) || {
        echo "building the conformance program failed" >&2
        exit 99
}
program=$build_dir/conformance

socket=$tmp/run/io.tokenbudget
config=$tmp/tokenbudgetd.conf
log=$tmp/tokenbudgetd.log
if ((${#socket} > 107)); then
        echo "socket path $socket is too long for a Unix socket; set TMPDIR shorter" >&2
        exit 99
fi
# Unlimited budgets, so the checks depend on nothing but the estimate
# settings and the multipliers.
cat >"$config" <<CONF
default_estimate = $DEFAULT_ESTIMATE;
max_request_tokens = $MAX_REQUEST_TOKENS;
warn_multiplier = 1.5;
hard_multiplier = 2.0;
global: { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; max_tokens_in_flight = 0; };
process: { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; max_tokens_in_flight = 0; };
CONF

dump_log() {
        echo "--- tokenbudgetd stderr ---" >&2
        cat "$log" >&2 || true
        echo "---" >&2
}

# True while the daemon has not exited: a zombie (exited, not yet reaped by
# wait) still answers kill -0, so look at its state in /proc.
daemon_running() {
        local stat
        stat=$(cat "/proc/$daemon_pid/stat" 2>/dev/null) || return 1
        stat=${stat##*) }
        [[ ${stat:0:1} != Z ]]
}

start_ns=$(date +%s%N)
"$daemon" --config "$config" --socket "$socket" --state-dir "" 2>"$log" &
daemon_pid=$!

tries=0
until "$program" -probe -address "unix:$socket"; do
        if ! daemon_running; then
                status=0
                wait "$daemon_pid" || status=$?
                daemon_pid=
                echo "tokenbudgetd exited with status $status before listening" >&2
                dump_log
                exit 99
        fi
        if ((++tries >= WAIT_TENTHS)); then
                echo "tokenbudgetd is not listening on $socket after $((WAIT_TENTHS / 10)) s" >&2
                dump_log
                exit 99
        fi
        sleep 0.1
done

status=0
"$program" -address "unix:$socket" -protocol-dir "$source_dir/protocol" \
        -default-estimate "$DEFAULT_ESTIMATE" -max-request-tokens "$MAX_REQUEST_TOKENS" || status=$?

kill -TERM "$daemon_pid"
tries=0
while daemon_running && ((tries++ < WAIT_TENTHS)); do
        sleep 0.1
done
if daemon_running; then
        echo "tokenbudgetd still running $((WAIT_TENTHS / 10)) s after SIGTERM" >&2
        dump_log
        exit 1
fi
daemon_status=0
wait "$daemon_pid" || daemon_status=$?
daemon_pid=
if ((daemon_status != 0)); then
        echo "tokenbudgetd exited with status $daemon_status after SIGTERM, want 0" >&2
        dump_log
        exit 1
fi
if ((status != 0)); then
        dump_log
fi
echo "# conformance run took $((($(date +%s%N) - start_ns) / 1000000)) ms (daemon start to exit)"
exit "$status"
