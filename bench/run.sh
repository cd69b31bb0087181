#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The tokenbudgetd benchmark, in one command (as root on Debian 12):
#   bench/run.sh
# Installs what it needs, builds the daemon (meson, in a temporary dir) and
# the bench programs (cc), starts tokenbudgetd, the floor echo server and
# redis-server on Unix sockets in a temporary dir, runs interleaved load
# points (every configuration's run 1, then every run 2, ...), measures the
# cost of scale and of scopes and rules (the load generator in a cgroup of
# its own, read as a systemd unit), stops every server it started (by pid),
# removes that cgroup and prints one table with a met/NOT met line per
# target. Exits non-zero when a server dies, a run fails or the daemon
# answers any error. See bench/README.md.
#
# Environment: BENCH_DIR (work dir; default a new mktemp dir, removed at the
# end unless BENCH_KEEP=1), TOKENBUDGETD (a built daemon; default: build
# one), BENCH_DURATION (s per run, 3), BENCH_WARMUP (s, 0.5), BENCH_RUNS (3),
# BENCH_CONCURRENCY ("1 16 64 256"), BENCH_REPORTS (Reports per cycle, 1),
# BENCH_PIN (1: servers on CPU 1, loadgen on CPU 0), TOKENBUDGETD_BASELINE
# (another daemon binary, e.g. built from an older commit: it runs as a
# fifth server "base" interleaved with the others, and a before/after
# section compares it with TOKENBUDGETD; unset, nothing changes; the scopes
# section needs it: it is the 2-scope figure), BENCH_SECTIONS (which parts
# to run, any of "matrix durable scale scopes rules queue estimate proxy"; default
# all), BENCH_ESTIMATE_TRACES (the estimate section's trace CSVs, default the
# two Azure traces in ../shared/data/traces), BENCH_ESTIMATE_CLIENT_OUTPUT
# (the output tokens its client adds to ContextTokens in its estimate, 1000),
# BENCH_SCOPES_CONCURRENCY (the scopes section's time-sliced points, "64";
# concurrency 1 runs in lockstep with the baseline),
# BENCH_DURABLE_CONCURRENCY (the durable section's points, BENCH_CONCURRENCY).
# Every tokenbudgetd gets an explicit --state-dir when its --help names it
# (issue 12 and later): '' (memory only) everywhere but in the durable
# section's two daemons with the ledger on disk.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
DURATION=${BENCH_DURATION:-3}
WARMUP=${BENCH_WARMUP:-0.5}
RUNS=${BENCH_RUNS:-3}
CONCURRENCY=${BENCH_CONCURRENCY:-1 16 64 256}
REPORTS=${BENCH_REPORTS:-1}
# matrix: the throughput table (and before/after); scale: cost of scale
# (open allocations, idle connections, idle wakeups, exec to READY); scopes:
# one cycle charged to 2, 3 and 5 scopes; rules: 1 to 1,000 rules.
# queue: one hand-off through a full queue of 2 to 1,000 waiters.
# durable: the cycle with the ledger on disk (durability.sync "normal" and
# "full") next to the memory-only daemon and Redis+Lua with an append-only
# file fsynced every second and on every write.
# estimate: real request traces replayed through the daemon's learned
# estimates (issue 13, point 6): their error on single requests and on
# blocks of 10 to 1,000, how often the daemon's 90% project intervals hold
# the actual, and what learned reservations leave unused (about 15 s).
# proxy: tokenbudget-proxy next to nginx in front of the same upstream
# (issue 14, point 8): added latency, requests/s, CPU per streamed token.
SECTIONS=${BENCH_SECTIONS:-matrix durable scale scopes rules queue estimate proxy}
SCOPES_CONCURRENCY=${BENCH_SCOPES_CONCURRENCY:-64}
DURABLE_CONCURRENCY=${BENCH_DURABLE_CONCURRENCY:-$CONCURRENCY}
# The durable section's servers, interleaved like the matrix: the daemon
# memory only, with sync "normal" and "full"; Redis with appendfsync
# everysec and always.
DURABLE_SERVERS=(dmem dnormal dfull reverysec ralways)
SERVERS=(daemon redis lite floor)
# Before/after: the baseline daemon runs right after the daemon in every run
# (the same limits in the config older daemons read, its own socket, the
# same placement), so each pair of points is seconds apart.
BASELINE=${TOKENBUDGETD_BASELINE:-}
[ -z "$BASELINE" ] || SERVERS=(daemon base redis lite floor)
# Cost of scale: open allocations held while per-call latency is measured,
# and idle connections while RSS is read.
HOLDS=(1 1000 10000 100000)
IDLE_CONNS=10000
# Rules in the config for the rules section: one matches, the others not.
RULE_COUNTS=(1 10 100 1000)
# Waiters in the queue section's full queue.
QUEUE_WAITERS=(2 10 100 1000)
QUEUE_HANDOFFS=${BENCH_QUEUE_HANDOFFS:-5000}
# The unit the load generator runs in for the scopes, holds and rules
# measurements: a cgroup directly under the cgroup2 root, which the daemon
# (sd_pid_get_cgroup) reads as the system unit of that name, no slice.
CGROUP_UNIT=tokenbudget-bench.service
CGROUP_DIR=""      # set when the load generator can run in it
CGROUP_CREATED=""  # we made it: removed at the end
CGROUP_NOTE=""     # why not, when not
# Every limit is checked but none is reached: windows at 10^12 - 1.
LIMIT=999999999999
# Servers on CPU 1, loadgen on CPU 0: every server gets the same placement,
# and a round trip at concurrency 1 always crosses cores (unpinned, the
# scheduler sometimes puts both on one core and halves the latency, which
# made concurrency-1 numbers bimodal). BENCH_PIN=0 turns it off.
SERVER_PIN=()
CLIENT_PIN=()
if [ "${BENCH_PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    SERVER_PIN=(taskset -c 1)
    CLIENT_PIN=(taskset -c 0)
fi

BENCH_DIR=${BENCH_DIR:-$(mktemp -d /tmp/tokenbudget-bench.XXXXXX)}
mkdir -p "$BENCH_DIR"
BIN=$BENCH_DIR/bin
RESULTS=$BENCH_DIR/results.txt

declare -A PID_OF=()   # server name -> pid, for every server running now
declare -A R=()        # "server conns run" -> loadgen output line
declare -A SOCK_OF=()  # tokenbudgetd-like server name -> its socket
declare -A CG_OF=()    # server name -> 1 when its load generator runs in CGROUP_UNIT
declare -A AGENT_OF=() # server name -> the agent its Requests declare ("": none; unset: "loadgen")
declare -A SCOPES_OF=() # server name -> the scopes one allocation is charged to (loadgen --scopes)
declare -A SECTION_SEC=() # section -> seconds it took
declare -A LABEL_OF=() DESC_OF=() # scopes section: column label and description per server
declare -A SHA_OF=()   # durable section's Redis server name -> its loadgen --sha-* arguments
declare -A KNOWS_STATE_DIR=() # daemon binary -> 1 when it takes --state-dir (issue 12), else ""

die() {
    echo "bench: $*" >&2
    exit 1
}

# Stops one server we started, by pid: SIGTERM, then SIGKILL after 5 s.
stop_pid() {
    local pid=$1 _
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

stop_server() {
    local name=$1
    [ -n "${PID_OF[$name]:-}" ] || return 0
    stop_pid "${PID_OF[$name]}"
    wait "${LAUNCHER_OF[$name]:-${PID_OF[$name]}}" 2>/dev/null || true
    unset "PID_OF[$name]"
}

declare -A LAUNCHER_OF=() # server name -> pid of the readytime that is its parent

cleanup() {
    local name
    for name in "${!PID_OF[@]}"; do
        stop_server "$name"
    done
    # Empty by now: every load generator in it has exited.
    [ -z "$CGROUP_CREATED" ] || rmdir "$CGROUP_DIR" 2>/dev/null || true
    if [ "${BENCH_KEEP:-0}" != 1 ] && [[ $BENCH_DIR == /tmp/tokenbudget-bench.* ]]; then
        rm -rf "$BENCH_DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Fails loudly if any server we started has died.
check_alive() {
    local name
    for name in "${!PID_OF[@]}"; do
        kill -0 "${PID_OF[$name]}" 2>/dev/null || die "$name (pid ${PID_OF[$name]}) died; see $BENCH_DIR/*.log"
    done
}

# kv KEY LINE: the value of KEY=... in a loadgen/readytime output line.
kv() {
    local key=$1 line=$2
    sed -n "s/.*\\b$key=\\([^ ]*\\).*/\\1/p" <<<"$line"
}

median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# fmt NUMBER [DECIMALS]
fmt() {
    LC_ALL=C printf "%.${2:-0}f" "$1"
}

ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'
}

# verdict OK-CONDITION-AS-AWK-EXPR: "met" or "NOT met".
verdict() {
    awk "BEGIN { exit !($1) }" && echo "met" || echo "NOT met"
}

# section NAME: whether BENCH_SECTIONS asks for it.
section() {
    [[ " $SECTIONS " == *" $1 "* ]]
}

install_deps() {
    # shellcheck source=../scripts/deps.sh
    . "$ROOT/scripts/deps.sh"
    # sqlite3: the durable section counts the history rows its daemons wrote.
    # nginx: the proxy section's plain reverse proxy (run from a generated
    # config in BENCH_DIR, not as the system service).
    install_packages "${BUILD_PACKAGES[@]}" redis-server sqlite3 nginx
    command -v nginx >/dev/null || die "nginx not installed"
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        die "redis-server not installed"
    fi
}

build() {
    local cflags=(-std=gnu11 -O2 -g -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
        -Wformat=2 -Wvla -Wimplicit-fallthrough -Wno-unused-parameter -Wno-missing-field-initializers)
    local prog
    mkdir -p "$BIN"
    for prog in loadgen floor readytime queue estimate; do
        cc "${cflags[@]}" -o "$BIN/$prog" "$HERE/$prog.c" || die "cannot build $prog"
    done
    if section proxy; then
        cc "${cflags[@]}" -o "$BIN/proxy-load" "$HERE/proxy-load.c" || die "cannot build proxy-load"
        # shellcheck disable=SC2046 # pkg-config's words
        cc "${cflags[@]}" -o "$BIN/proxy-upstream" "$HERE/proxy-upstream.c" $(pkg-config --cflags --libs libevent) ||
            die "cannot build proxy-upstream"
    fi
    if [ -z "${TOKENBUDGETD:-}" ]; then
        echo "bench: building tokenbudgetd (meson, buildtype debugoptimized) in $BENCH_DIR/build" >&2
        [ -d "$BENCH_DIR/build" ] || meson setup "$BENCH_DIR/build" "$ROOT" -Dtests=false >"$BENCH_DIR/build.log"
        ninja -C "$BENCH_DIR/build" >>"$BENCH_DIR/build.log" || die "daemon build failed: $BENCH_DIR/build.log"
        TOKENBUDGETD=$BENCH_DIR/build/daemon/tokenbudgetd
        TOKENBUDGET_PROXY=${TOKENBUDGET_PROXY:-$BENCH_DIR/build/proxy/tokenbudget-proxy}
    fi
    if section proxy; then
        if [ -z "${TOKENBUDGET_PROXY:-}" ]; then
            echo "bench: building tokenbudget-proxy (meson, buildtype debugoptimized) in $BENCH_DIR/build" >&2
            [ -d "$BENCH_DIR/build" ] || meson setup "$BENCH_DIR/build" "$ROOT" -Dtests=false >"$BENCH_DIR/build.log"
            ninja -C "$BENCH_DIR/build" >>"$BENCH_DIR/build.log" || die "proxy build failed: $BENCH_DIR/build.log"
            TOKENBUDGET_PROXY=$BENCH_DIR/build/proxy/tokenbudget-proxy
        fi
        [ -x "$TOKENBUDGET_PROXY" ] || die "no proxy at $TOKENBUDGET_PROXY"
    fi
    [ -x "$TOKENBUDGETD" ] || die "no daemon at $TOKENBUDGETD"
    [ -z "$BASELINE" ] || [ -x "$BASELINE" ] || die "no baseline daemon at TOKENBUDGETD_BASELINE=$BASELINE"
    # Asked once here, so that subshells see the answers too.
    knows_state_dir "$TOKENBUDGETD" || true
    [ -z "$BASELINE" ] || knows_state_dir "$BASELINE" || true
}

# knows_state_dir BINARY: whether that daemon takes --state-dir (issue 12 and
# later: a daemon before it refuses the option, like BASELINE_CONF's keys).
knows_state_dir() {
    local help
    if [ -z "${KNOWS_STATE_DIR[$1]+set}" ]; then
        help=$("$1" --help 2>&1 || true)
        KNOWS_STATE_DIR[$1]=""
        [[ $help != *--state-dir* ]] || KNOWS_STATE_DIR[$1]=1
    fi
    [ -n "${KNOWS_STATE_DIR[$1]}" ]
}

# The limits of one scope kind: every window and the in-flight cap set (so
# each is checked on every Request) but out of reach; with "a", max_allocations too.
limits_of() {
    echo "tokens_per_minute = $LIMIT; tokens_per_hour = $LIMIT; tokens_per_day = $LIMIT;" \
        "max_tokens_in_flight = $LIMIT;${1:+ max_allocations = $LIMIT;}"
}

# rules_config N: the daemon's config with N rules: N - 1 that match nothing
# (match.command "nomatch-I-*"), then "bench", which matches the load
# generator (listed last, so a rule walk passes all the others first).
rules_config() {
    local n=$1 i
    cat "$BENCH_DIR/tokenbudgetd.conf"
    echo "rules = ("
    for ((i = 1; i < n; i++)); do
        echo "  { name = \"nomatch-$i\"; match = { command = \"nomatch-$i-*\"; }; $(limits_of a) },"
    done
    echo "  { name = \"bench\"; match = { command = \"loadgen*\"; }; per = \"rule\"; $(limits_of a) }"
    echo ");"
}

write_configs() {
    local n reason mode
    # base.conf: the settings every daemon since issue 3 reads; the baseline
    # daemon gets it (older daemons refuse keys they do not know).
    cat >"$BENCH_DIR/base.conf" <<EOF
# Generated by bench/run.sh: every window and cap set (so every one is
# checked on every request) but out of reach; client limits above the load.
# The daemon needs max_connections_per_uid < max_connections, and
# max_connections + 64 (its own descriptors) within RLIMIT_NOFILE, which
# run.sh sets to 20000: hence 19900 and 19800, still far above the load
# (256 connections per point, $IDLE_CONNS idle ones, all one uid);
# max_allocations_per_process above the ${HOLDS[-1]} held. Left at their
# defaults: limits.idle_timeout_sec (900) and
# limits.allocation_idle_timeout_sec (3600); no connection or allocation
# here lives more than a few seconds, so neither fires in a run.
global = { $(limits_of) };
process = { $(limits_of) };
limits = { max_connections = 19900; max_connections_per_uid = 19800;
           max_allocations_per_process = 200000; };
EOF
    if [ -n "$BASELINE" ]; then
        "$BASELINE" --check-config "$BENCH_DIR/base.conf" >/dev/null ||
            die "the baseline daemon ($BASELINE) refuses the generated config"
    fi
    # tokenbudgetd.conf: the same for a daemon with user, unit and agent
    # budgets (issue 9), whose defaults are in reach of this load (agent:
    # 500,000 tokens a minute, unit: 256 allocations): out of reach too.
    sed '/^global = /s/};$/max_allocations = '"$LIMIT"'; };/' "$BENCH_DIR/base.conf" >"$BENCH_DIR/tokenbudgetd.conf"
    cat >>"$BENCH_DIR/tokenbudgetd.conf" <<EOF
user = { $(limits_of a) };
unit = { $(limits_of a) };
agent = { $(limits_of a) };
EOF
    for n in "${RULE_COUNTS[@]}"; do
        rules_config "$n" >"$BENCH_DIR/rules-$n.conf"
    done
    NEW_DAEMON=1
    if ! reason=$("$TOKENBUDGETD" --check-config "$BENCH_DIR/rules-${RULE_COUNTS[-1]}.conf" 2>&1 >/dev/null); then
        "$TOKENBUDGETD" --check-config "$BENCH_DIR/base.conf" >/dev/null || die "bad generated config"
        NEW_DAEMON=""
        NEW_DAEMON_NOTE="TOKENBUDGETD=$TOKENBUDGETD refuses user/unit/agent budgets and rules ($(head -n 1 <<<"$reason"))"
        echo "bench: $NEW_DAEMON_NOTE: it runs on base.conf, without the scopes and rules sections" >&2
        cp "$BENCH_DIR/base.conf" "$BENCH_DIR/tokenbudgetd.conf"
    fi
    # A baseline that knows user, unit and agent budgets (issue 9 and later)
    # runs on the same config as the daemon, so both charge the same scopes.
    if [ -n "$BASELINE" ] && "$BASELINE" --check-config "$BENCH_DIR/tokenbudgetd.conf" >/dev/null 2>&1; then
        BASELINE_CONF=$BENCH_DIR/tokenbudgetd.conf
    fi
    # The durable section: the daemon's config with the ledger's sync mode.
    for mode in normal full; do
        { cat "$BENCH_DIR/tokenbudgetd.conf" && echo "durability = { sync = \"$mode\"; };"; } \
            >"$BENCH_DIR/durable-$mode.conf"
    done
    DURABLE_NOTE=""
    if ! knows_state_dir "$TOKENBUDGETD"; then
        DURABLE_NOTE="TOKENBUDGETD=$TOKENBUDGETD takes no --state-dir (a daemon before issue 12: no durable ledger)"
    elif ! reason=$("$TOKENBUDGETD" --check-config "$BENCH_DIR/durable-full.conf" 2>&1 >/dev/null); then
        DURABLE_NOTE="TOKENBUDGETD=$TOKENBUDGETD refuses durability.sync ($(head -n 1 <<<"$reason"))"
    fi
    [ -z "$DURABLE_NOTE" ] || ! section durable || echo "bench: $DURABLE_NOTE: no durable section" >&2
    mkdir -p "$BENCH_DIR/redis-data"
    cat >"$BENCH_DIR/redis.conf" <<EOF
port 0
unixsocket $BENCH_DIR/redis.sock
unixsocketperm 700
daemonize no
dir $BENCH_DIR/redis-data
logfile $BENCH_DIR/redis.log
appendonly yes
appendfsync everysec
save ""
EOF
}

# start_daemon NAME SOCKET [RUNS [BINARY [CONFIG [STATE_DIR]]]]: starts
# tokenbudgetd (or BINARY, with the base config, or CONFIG) under readytime
# (exec -> READY=1, median of RUNS starts); sets PID_OF[NAME], SOCK_OF[NAME],
# READY_LINE. A daemon that takes --state-dir gets --state-dir STATE_DIR,
# '' (memory only) unless given; an older one none (it has no store).
start_daemon() {
    local name=$1 sock=$2 runs=${3:-1} binary=${4:-$TOKENBUDGETD} out=$BENCH_DIR/$1.ready config=${5:-} _
    local state_dir=${6:-} state_args=()
    [ -n "$config" ] || { [ "$binary" = "$TOKENBUDGETD" ] && config=$BENCH_DIR/tokenbudgetd.conf ||
        config=${BASELINE_CONF:-$BENCH_DIR/base.conf}; }
    if knows_state_dir "$binary"; then
        state_args=(--state-dir "$state_dir")
    elif [ -n "$state_dir" ]; then
        die "$binary takes no --state-dir ($name wants $state_dir)"
    fi
    SOCK_OF[$name]=$sock
    : >"$out"
    (
        # Soft and hard; the config's max_connections + 64 must fit it.
        ulimit -n 20000 2>/dev/null || true
        exec "${SERVER_PIN[@]}" "$BIN/readytime" --runs "$runs" --log "$BENCH_DIR/$name.log" -- "$binary" \
            --config "$config" --socket "$sock" "${state_args[@]}" >"$out"
    ) &
    LAUNCHER_OF[$name]=$!
    for _ in $(seq 200); do
        grep -q "pid=" "$out" && break
        kill -0 "${LAUNCHER_OF[$name]}" 2>/dev/null || die "tokenbudgetd ($name) did not start: $BENCH_DIR/$name.log"
        sleep 0.05
    done
    READY_LINE=$(cat "$out")
    PID_OF[$name]=$(kv pid "$READY_LINE")
    [ -n "${PID_OF[$name]}" ] || die "tokenbudgetd ($name) not ready"
}

wait_socket() {
    local sock=$1 pid=$2 _
    for _ in $(seq 100); do
        [ -S "$sock" ] && return 0
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

start_redis() {
    "${SERVER_PIN[@]}" redis-server "$BENCH_DIR/redis.conf" &
    PID_OF[redis]=$!
    PID_OF[lite]=${PID_OF[redis]} # the same server, other scripts
    wait_socket "$BENCH_DIR/redis.sock" "${PID_OF[redis]}" || die "redis-server did not start: $BENCH_DIR/redis.log"
    local _
    for _ in $(seq 100); do
        redis-cli -s "$BENCH_DIR/redis.sock" PING 2>/dev/null | grep -q PONG && break
        sleep 0.05
    done
    read -ra SHA_ARGS_redis <<<"$(load_scripts "" common.lua)"
    read -ra SHA_ARGS_lite <<<"$(load_scripts lite-)"
    if [ ${#SHA_ARGS_redis[@]} -ne 6 ] || [ ${#SHA_ARGS_lite[@]} -ne 6 ]; then
        die "cannot load the Lua scripts"
    fi
}

# load_scripts PREFIX [PRELUDE [SOCKET]]: SCRIPT LOAD of reserve/report/release
# (into the matrix's Redis, or the one on SOCKET).
load_scripts() {
    local prefix=$1 prelude=${2:-} sock=${3:-$BENCH_DIR/redis.sock} call script sha args=""
    for call in request:reserve report:report release:release; do
        script="$HERE/redis/$prefix${call#*:}.lua"
        sha=$(redis-cli -s "$sock" SCRIPT LOAD \
            "$( ([ -z "$prelude" ] || cat "$HERE/redis/$prelude") && cat "$script")")
        [[ $sha =~ ^[0-9a-f]{40}$ ]] || die "SCRIPT LOAD $script: $sha"
        args+=" --sha-${call%%:*} $sha"
    done
    echo "$args"
}

# start_redis_aof NAME FSYNC: the durable section's Redis: the matrix's
# config with appendfsync FSYNC, its AOF in a fresh NAME-data under
# BENCH_DIR (the file system of the daemons' state directories), and the
# full scripts (redis/common.lua + reserve/report/release); sets PID_OF,
# SOCK_OF and SHA_OF[NAME].
start_redis_aof() {
    local name=$1 fsync=$2 sock=$BENCH_DIR/$1.sock _
    rm -rf "$BENCH_DIR/$name-data"
    mkdir -p "$BENCH_DIR/$name-data"
    sed -e "s|^unixsocket .*|unixsocket $sock|" -e "s|^dir .*|dir $BENCH_DIR/$name-data|" \
        -e "s|^logfile .*|logfile $BENCH_DIR/$name.log|" -e "s|^appendfsync .*|appendfsync $fsync|" \
        "$BENCH_DIR/redis.conf" >"$BENCH_DIR/$name.conf"
    grep -qx "appendfsync $fsync" "$BENCH_DIR/$name.conf" || die "cannot write $BENCH_DIR/$name.conf"
    "${SERVER_PIN[@]}" redis-server "$BENCH_DIR/$name.conf" &
    PID_OF[$name]=$!
    SOCK_OF[$name]=$sock
    wait_socket "$sock" "${PID_OF[$name]}" || die "redis-server ($name) did not start: $BENCH_DIR/$name.log"
    for _ in $(seq 100); do
        redis-cli -s "$sock" PING 2>/dev/null | grep -q PONG && break
        sleep 0.05
    done
    SHA_OF[$name]=$(load_scripts "" common.lua "$sock")
    [ "$(wc -w <<<"${SHA_OF[$name]}")" = 6 ] || die "cannot load the Lua scripts into $name"
}

start_floor() {
    local sizes=$1
    "${SERVER_PIN[@]}" "$BIN/floor" --socket "$BENCH_DIR/floor.sock" --sizes "$sizes" 2>"$BENCH_DIR/floor.log" &
    PID_OF[floor]=$!
    SOCK_OF[floor]=$BENCH_DIR/floor.sock
    wait_socket "$BENCH_DIR/floor.sock" "${PID_OF[floor]}" || die "floor did not start"
}

# setup_cgroup: makes CGROUP_UNIT under the cgroup2 root (/sys/fs/cgroup on
# a unified host, /sys/fs/cgroup/unified on a hybrid one) and checks that a
# process can be moved into it; else CGROUP_NOTE says why not.
setup_cgroup() {
    local root dir err
    for root in /sys/fs/cgroup /sys/fs/cgroup/unified ""; do
        [ -z "$root" ] || [ "$(stat -fc %T "$root" 2>/dev/null)" = cgroup2fs ] && break
    done
    if [ -z "$root" ]; then
        CGROUP_NOTE="no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified"
        return 0
    fi
    dir=$root/$CGROUP_UNIT
    if [ ! -d "$dir" ]; then
        err=$(mkdir "$dir" 2>&1) || { CGROUP_NOTE="cannot create $dir: $err"; return 0; }
        CGROUP_CREATED=1
    fi
    CGROUP_DIR=$dir
    if ! err=$(in_cgroup 1 grep -qx "0::/$CGROUP_UNIT" /proc/self/cgroup 2>&1); then
        CGROUP_NOTE="cannot move a process into $dir${err:+: $err}"
        CGROUP_DIR=""
    fi
}

# in_cgroup FLAG COMMAND...: runs COMMAND in CGROUP_UNIT when FLAG is 1 and
# the cgroup is there, else as is.
in_cgroup() {
    local flag=$1
    shift
    if [ "$flag" = 1 ] && [ -n "$CGROUP_DIR" ]; then
        bash -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CGROUP_DIR" "$@"
    else
        "$@"
    fi
}

# client SERVER LOADGEN-ARGS...: loadgen against SERVER (a tokenbudgetd-like
# one), pinned, in the unit when CG_OF says so, with its agent name.
client() {
    client_as "$1" --socket "${SOCK_OF[$1]}" "${@:2}"
}

# client_as SERVER LOADGEN-ARGS...: loadgen set up as SERVER's client (pin,
# unit, agent), against whatever sockets the arguments name.
client_as() {
    local server=$1
    shift
    in_cgroup "${CG_OF[$server]:-0}" "${CLIENT_PIN[@]}" "$BIN/loadgen" \
        ${AGENT_OF[$server]+--agent "${AGENT_OF[$server]}"} "$@" 2>>"$BENCH_DIR/loadgen.err"
}

# lockstep SECONDS-PER-SERVER SERVER[:HOLD]...: one loadgen alternating
# cycle by cycle between the SERVERs (concurrency 1; set up as the first
# one's client), HOLD allocations held open on each first; sets
# LOCKSTEP_LINES to one loadgen line per server, in order.
lockstep() {
    local per=$1 spec args=() out
    shift
    for spec in "$@"; do
        args+=(--socket "${SOCK_OF[${spec%%:*}]}" --server-pid "${PID_OF[${spec%%:*}]}")
        [[ $spec != *:* ]] || args+=(--hold "${spec#*:}")
        [[ $spec == *:* ]] || args+=(--hold 0)
    done
    out=$(client_as "${1%%:*}" "${args[@]}" --conns 1 --reports "$REPORTS" --warmup 0.3 \
        --duration "$(awk -v p="$per" -v n=$# 'BEGIN { print p * n }')") ||
        die "loadgen in lockstep over $* failed: $(tail -n 3 "$BENCH_DIR/loadgen.err")"
    mapfile -t LOCKSTEP_LINES <<<"$out"
    [ "${#LOCKSTEP_LINES[@]}" = $# ] || die "loadgen in lockstep over $*: ${#LOCKSTEP_LINES[@]} lines: $out"
    check_alive
}

# scopes_of SERVER: the scopes one allocation is charged to there (asked of
# the server: loadgen --scopes), e.g. SCOPES_OF[SERVER]="global, user:0,
# process:PID" and N_SCOPES_OF[SERVER]=3.
declare -A N_SCOPES_OF=()
scopes_of() {
    local line
    line=$(client "$1" --scopes) || die "loadgen --scopes against $1 failed: $(tail -n 3 "$BENCH_DIR/loadgen.err")"
    N_SCOPES_OF[$1]=$(kv scopes "$line")
    SCOPES_OF[$1]=$(kv scope_names "$line" | sed 's/process:[0-9]*/process:PID/; s/,/, /g')
    echo "$1 $line" >>"$RESULTS"
}

# load SERVER CONNS: one loadgen run against SERVER; prints its line.
load() {
    local server=$1 conns=$2 args=() common
    common=(--conns "$conns" --reports "$REPORTS" --warmup "$WARMUP" --duration "$DURATION"
        --server-pid "${PID_OF[$server]}")
    case $server in
    redis | lite)
        [ "$server" = redis ] && args=("${SHA_ARGS_redis[@]}") || args=("${SHA_ARGS_lite[@]}")
        "${CLIENT_PIN[@]}" "$BIN/loadgen" --proto resp --socket "$BENCH_DIR/redis.sock" "${args[@]}" \
            --limit "$LIMIT" "${common[@]}" 2>>"$BENCH_DIR/loadgen.err"
        ;;
    reverysec | ralways)
        read -ra args <<<"${SHA_OF[$server]}"
        "${CLIENT_PIN[@]}" "$BIN/loadgen" --proto resp --socket "${SOCK_OF[$server]}" "${args[@]}" \
            --limit "$LIMIT" "${common[@]}" 2>>"$BENCH_DIR/loadgen.err"
        ;;
    *) client "$server" "${common[@]}" ;;
    esac || die "loadgen against $server at concurrency $conns failed (exit $?): $(tail -n 3 "$BENCH_DIR/loadgen.err")"
}

# interleave CONCURRENCY-LIST SERVER...: every server at every point once,
# then all a second time, ...; results in R["server conns run"].
interleave() {
    local points=$1 run conns server line
    shift
    for run in $(seq "$RUNS"); do
        for conns in $points; do
            for server in "$@"; do
                line=$(load "$server" "$conns")
                check_alive
                [ "$(kv errors "$line")" = 0 ] || die "$server answered errors at concurrency $conns: $line"
                R["$server $conns $run"]=$line
                echo "run=$run server=$server $line" >>"$RESULTS"
                echo "bench: run $run/$RUNS $server c=$conns: $(kv cycles_per_sec "$line") cycles/s" >&2
            done
        done
    done
}

# mratio SERVER_A SERVER_B CONNS KEY: median over the runs of A's value
# divided by B's in the same run. Neighbouring runs share the machine's
# mood (this host is shared: a disturbed run slows every server in it), so
# per-run ratios are steadier than a ratio of medians.
mratio() {
    pratio "$1" "$3" "$2" "$3" "$4"
}

# pratio SERVER_A POINT_A SERVER_B POINT_B KEY: mratio across two points.
pratio() {
    local vals=() run
    for run in $(seq "$RUNS"); do
        vals+=("$(ratio "$(kv "$5" "${R["$1 $2 $run"]}")" "$(kv "$5" "${R["$3 $4 $run"]}")")")
    done
    median "${vals[@]}"
}

# med SERVER CONNS KEY: median over the runs.
med() {
    local vals=() run
    for run in $(seq "$RUNS"); do
        vals+=("$(kv "$3" "${R["$1 $2 $run"]}")")
    done
    median "${vals[@]}"
}

# Per-call latency and RSS with HOLDS open allocations: per run a fresh
# daemon per hold count (so RSS growth is that run's), all running, and one
# loadgen in lockstep over them (a cycle on each in turn, 2 s of cycles
# each); with a baseline, a fresh baseline daemon with the largest hold is
# one more server in the same lockstep. A daemon with scopes and rules is
# measured as the scopes section's new-5 (loadgen in the unit, one matching
# rule, no agent), an older one as before (its config, agent "loadgen").
scale_holds() {
    local run hold specs i config=$BENCH_DIR/tokenbudgetd.conf
    [ -z "$NEW_DAEMON" ] || config=$BENCH_DIR/rules-1.conf
    for hold in "${HOLDS[@]}" base; do
        if [ -n "$NEW_DAEMON" ]; then
            CG_OF[hold$hold]=1
            AGENT_OF[hold$hold]=""
        fi
    done
    # What one allocation is charged to, on a daemon of its own (so the
    # points' RSS is not disturbed).
    start_daemon "hold${HOLDS[0]}" "$BENCH_DIR/hold.sock" 1 "$TOKENBUDGETD" "$config"
    scopes_of "hold${HOLDS[0]}"
    SCOPES_OF[scale]=${SCOPES_OF[hold${HOLDS[0]}]}
    N_SCOPES_OF[scale]=${N_SCOPES_OF[hold${HOLDS[0]}]}
    stop_server "hold${HOLDS[0]}"
    for run in $(seq "$RUNS"); do
        specs=()
        for hold in "${HOLDS[@]}"; do
            start_daemon "hold$hold" "$BENCH_DIR/hold$hold.sock" 1 "$TOKENBUDGETD" "$config"
            specs+=("hold$hold:$hold")
        done
        if [ -n "$BASELINE" ]; then
            start_daemon holdbase "$BENCH_DIR/holdbase.sock" 1 "$BASELINE" "${BASELINE_CONF:-$BENCH_DIR/base.conf}"
            specs+=("holdbase:${HOLDS[-1]}")
        fi
        lockstep 2 "${specs[@]}"
        for i in "${!HOLDS[@]}"; do
            hold=${HOLDS[$i]}
            R["hold $hold $run"]=${LOCKSTEP_LINES[$i]}
            echo "run=$run scale=hold ${LOCKSTEP_LINES[$i]}" >>"$RESULTS"
            echo "bench: run $run/$RUNS $hold open allocations: per-call p50 $(kv call_p50_us "${LOCKSTEP_LINES[$i]}") us" >&2
            stop_server "hold$hold"
        done
        if [ -n "$BASELINE" ]; then
            R["basehold ${HOLDS[-1]} $run"]=${LOCKSTEP_LINES[-1]}
            echo "run=$run scale=basehold ${LOCKSTEP_LINES[-1]}" >>"$RESULTS"
            stop_server holdbase
        fi
    done
}

# The scopes section: the same cycle against the baseline (2 scopes: global,
# process), this daemon with the load generator in the root cgroup and no
# rule (3: global, user, process) and with it in CGROUP_UNIT and one
# matching rule (5: global, user, unit, process, rule), all three running
# for the whole section and interleaved like the matrix. The Requests
# declare no agent (which would add an agent scope); the baseline's load
# generator runs in the unit too (it charges none), so only the scopes differ.
scopes_section() {
    local s
    SCOPE_SERVERS=()
    if [ -n "$BASELINE" ]; then
        start_daemon scopebase "$BENCH_DIR/scopebase.sock" 1 "$BASELINE" "$BENCH_DIR/base.conf"
        SCOPE_SERVERS+=(scopebase)
        DESC_OF[scopebase]="TOKENBUDGETD_BASELINE"
    fi
    start_daemon scope3 "$BENCH_DIR/scope3.sock" 1 "$TOKENBUDGETD" "$BENCH_DIR/tokenbudgetd.conf"
    start_daemon scope5 "$BENCH_DIR/scope5.sock" 1 "$TOKENBUDGETD" "$BENCH_DIR/rules-1.conf"
    SCOPE_SERVERS+=(scope3 scope5)
    DESC_OF[scope3]="this daemon, loadgen in the root cgroup, no rule"
    DESC_OF[scope5]="this daemon, loadgen in $CGROUP_UNIT, one matching rule"
    [ -n "$CGROUP_DIR" ] || DESC_OF[scope5]="this daemon, loadgen in the root cgroup (no unit), one matching rule"
    CG_OF[scopebase]=1
    CG_OF[scope5]=1
    for s in "${SCOPE_SERVERS[@]}"; do
        AGENT_OF[$s]=""
        scopes_of "$s"
    done
    LABEL_OF[scopebase]="base-${N_SCOPES_OF[scopebase]:-}"
    LABEL_OF[scope3]="new-${N_SCOPES_OF[scope3]}"
    LABEL_OF[scope5]="new-${N_SCOPES_OF[scope5]}"
    # Concurrency 1 in lockstep, each new daemon paired with the baseline
    # (3 s of cycles each per run): new-5's client in the unit, new-3's in
    # the root cgroup, so two passes (the baseline charges no unit either
    # way). Results in R["server 1ls run"] (the pass with new-5) and
    # R["server 1ls-root run"] (with new-3). Without a baseline there is no
    # pair: concurrency 1 is then only what BENCH_SCOPES_CONCURRENCY asks.
    for run in $(seq "$RUNS"); do
        [ -n "$BASELINE" ] || break
        lockstep 3 scope5 scopebase
        R["scope5 1ls $run"]=${LOCKSTEP_LINES[0]}
        R["scopebase 1ls $run"]=${LOCKSTEP_LINES[1]}
        CG_OF[scopebase]=0
        lockstep 3 scope3 scopebase
        CG_OF[scopebase]=1
        R["scope3 1ls-root $run"]=${LOCKSTEP_LINES[0]}
        R["scopebase 1ls-root $run"]=${LOCKSTEP_LINES[1]}
        printf 'run=%s lockstep=1ls %s\n' "$run" "${LOCKSTEP_LINES[@]}" >>"$RESULTS"
        echo "bench: run $run/$RUNS scopes at concurrency 1 (lockstep): new-5 $(kv cycles_per_sec "${R["scope5 1ls $run"]}")," \
            "base $(kv cycles_per_sec "${R["scopebase 1ls $run"]}") cycles/s" >&2
    done
    interleave "$SCOPES_CONCURRENCY" "${SCOPE_SERVERS[@]}"
    for s in "${SCOPE_SERVERS[@]}"; do
        stop_server "$s"
    done
}

# The rules section: per-call latency at concurrency 1 with RULE_COUNTS
# rules in the config, one daemon per count running for the whole section,
# one loadgen in lockstep over them per run (2 s of cycles each); the load
# generator as new-5's.
rules_section() {
    local n run i
    RULE_SERVERS=()
    for n in "${RULE_COUNTS[@]}"; do
        start_daemon "rules$n" "$BENCH_DIR/rules$n.sock" 1 "$TOKENBUDGETD" "$BENCH_DIR/rules-$n.conf"
        CG_OF[rules$n]=1
        AGENT_OF[rules$n]=""
        RULE_SERVERS+=("rules$n")
    done
    scopes_of "rules${RULE_COUNTS[-1]}"
    for run in $(seq "$RUNS"); do
        lockstep 2 "${RULE_SERVERS[@]}"
        for i in "${!RULE_SERVERS[@]}"; do
            R["${RULE_SERVERS[$i]} 1 $run"]=${LOCKSTEP_LINES[$i]}
            echo "run=$run server=${RULE_SERVERS[$i]} ${LOCKSTEP_LINES[$i]}" >>"$RESULTS"
        done
        echo "bench: run $run/$RUNS rules: per-call p50 $(kv call_p50_us "${LOCKSTEP_LINES[0]}") us with" \
            "${RULE_COUNTS[0]}, $(kv call_p50_us "${LOCKSTEP_LINES[-1]}") us with ${RULE_COUNTS[-1]}" >&2
    done
    for n in "${RULE_SERVERS[@]}"; do
        stop_server "$n"
    done
}

# The queue: a daemon whose global pool holds 100 tokens in flight, one
# allocation of 100 at a time, and N connections waiting for it; each
# hand-off (a release, the daemon granting the head waiter, which queues
# again) is timed by bench/queue.c, N = 2 to 1,000 in turn in every run.
queue_section() {
    local run n line
    cat >"$BENCH_DIR/queue.conf" <<EOF
warn_multiplier = 1.0; hard_multiplier = 1.0;
global = { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; max_tokens_in_flight = 100; };
process = { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; max_tokens_in_flight = 0; };
user = { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; max_tokens_in_flight = 0; };
limits = { max_connections = 19900; max_connections_per_uid = 19800; max_allocations_per_process = 200000; };
queue = { max_waiters = 5000; max_waiters_per_uid = 5000; };
EOF
    start_daemon queue "$BENCH_DIR/queue.sock" 1 "$TOKENBUDGETD" "$BENCH_DIR/queue.conf"
    for run in $(seq "$RUNS"); do
        for n in "${QUEUE_WAITERS[@]}"; do
            line=$( (ulimit -n 20000 2>/dev/null || true
                exec "${CLIENT_PIN[@]}" "$BIN/queue" --socket "$BENCH_DIR/queue.sock" --waiters "$n" \
                    --handoffs "$QUEUE_HANDOFFS") 2>>"$BENCH_DIR/loadgen.err") ||
                die "queue with $n waiters failed: $(tail -n 3 "$BENCH_DIR/loadgen.err")"
            R["queue $n $run"]=$line
            echo "run=$run server=queue $line" >>"$RESULTS"
        done
        echo "bench: run $run/$RUNS queue: $(kv usec_per_handoff "${R["queue 2 $run"]}") us per hand-off with 2" \
            "waiters, $(kv usec_per_handoff "${R["queue ${QUEUE_WAITERS[-1]} $run"]}") us with ${QUEUE_WAITERS[-1]}" >&2
    done
    check_alive
    stop_server queue
}

# The median over the runs of usec_per_handoff with n waiters.
queue_usec() {
    local n=$1 run
    for run in $(seq "$RUNS"); do
        kv usec_per_handoff "${R["queue $n $run"]}"
    done | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

print_queue() {
    local n base
    echo
    echo "full queue: one hand-off (a release; the daemon grants the head waiter, which queues again) with N"
    echo "  connections waiting for a pool of 100 tokens in flight; median of $RUNS runs of $QUEUE_HANDOFFS hand-offs"
    base=$(queue_usec "${QUEUE_WAITERS[0]}")
    printf '  %-10s %14s %12s\n' waiters "us/hand-off" "vs ${QUEUE_WAITERS[0]}"
    for n in "${QUEUE_WAITERS[@]}"; do
        printf '  %-10s %14s %11sx\n' "$n" "$(queue_usec "$n")" "$(ratio "$(queue_usec "$n")" "$base")"
    done
}

print_queue_targets() {
    local r
    r=$(ratio "$(queue_usec "${QUEUE_WAITERS[-1]}")" "$(queue_usec "${QUEUE_WAITERS[0]}")")
    echo "  a hand-off with ${QUEUE_WAITERS[-1]} waiters costs at most 1.5x one with ${QUEUE_WAITERS[0]}" \
        "(O(log n) or better): ${r}x: $(verdict "$r <= 1.5")"
}

scale_idle_conns() {
    start_daemon idle-conns "$BENCH_DIR/idle-conns.sock"
    IDLE_LINE=$("${CLIENT_PIN[@]}" "$BIN/loadgen" --socket "$BENCH_DIR/idle-conns.sock" --conns "$IDLE_CONNS" --cycles-per-conn 1 \
        --server-pid "${PID_OF[idle-conns]}" 2>>"$BENCH_DIR/loadgen.err") ||
        die "loadgen with $IDLE_CONNS idle connections failed: $(tail -n 3 "$BENCH_DIR/loadgen.err")"
    check_alive
    stop_server idle-conns
    echo "scale=idle-conns $IDLE_LINE" >>"$RESULTS"
}

# Context switches of every thread of pid so far.
ctxt_switches() {
    cat /proc/"$1"/task/*/status 2>/dev/null |
        awk '/^(voluntary|nonvoluntary)_ctxt_switches:/ { n += $2 } END { print n + 0 }'
}

machine() {
    local cpu
    cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
    echo "$cpu, $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)," \
        "kernel $(uname -r), $(sed -n 's/^PRETTY_NAME="\(.*\)"$/\1/p' /etc/os-release)"
}

print_table() {
    local conns d rd ll fl
    echo
    echo "tokenbudgetd benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine: $(machine)"
    echo "cycle = Request, Report x $REPORTS, Release in strict request/reply over a Unix socket;"
    echo "median of $RUNS interleaved runs of ${DURATION} s per point (after ${WARMUP} s warmup)"
    echo
    printf '%-5s | %9s %9s %9s %9s | %7s %7s %7s | %9s %9s %9s %9s | %8s %8s %8s %8s\n' \
        conns daemon redis lite floor d/redis d/lite d/floor "p99 d" "p99 r" "p99 l" "p99 f" \
        "cpu d" "cpu r" "cpu l" "cpu f"
    printf '%-5s | %39s | %23s | %39s | %35s\n' "" "cycles/s" "ratios (paired)" "cycle p99 latency (us)" \
        "server CPU per cycle (us)"
    for conns in $CONCURRENCY; do
        d=$(med daemon "$conns" cycles_per_sec)
        rd=$(med redis "$conns" cycles_per_sec)
        ll=$(med lite "$conns" cycles_per_sec)
        fl=$(med floor "$conns" cycles_per_sec)
        printf '%-5s | %9s %9s %9s %9s | %7s %7s %7s | %9s %9s %9s %9s | %8s %8s %8s %8s\n' "$conns" \
            "$(fmt "$d")" "$(fmt "$rd")" "$(fmt "$ll")" "$(fmt "$fl")" \
            "$(mratio daemon redis "$conns" cycles_per_sec)" "$(mratio daemon lite "$conns" cycles_per_sec)" \
            "$(mratio daemon floor "$conns" cycles_per_sec)" \
            "$(med daemon "$conns" cycle_p99_us)" "$(med redis "$conns" cycle_p99_us)" \
            "$(med lite "$conns" cycle_p99_us)" "$(med floor "$conns" cycle_p99_us)" \
            "$(med daemon "$conns" server_cpu_us_per_cycle)" "$(med redis "$conns" server_cpu_us_per_cycle)" \
            "$(med lite "$conns" server_cpu_us_per_cycle)" "$(med floor "$conns" server_cpu_us_per_cycle)"
    done
    local ledger="no durable ledger (a daemon before issue 12)"
    ! knows_state_dir "$TOKENBUDGETD" || ledger="memory only (--state-dir ''; on disk: the durable section)"
    echo "daemon: tokenbudgetd, ${N_SCOPES_OF[daemon]} scopes (${SCOPES_OF[daemon]}), every window and cap checked," \
        "$ledger"
    echo "redis:  Redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') + Lua, 3 scopes, sliding-window" \
        "counters, AOF everysec (bench/redis/*.lua)"
    echo "lite:   the same Redis with counters only (no window, no check): a lower bound for any Redis budget keeper"
    echo "floor:  epoll echo server answering with the daemon's reply sizes (one read, one write per call)"
    echo -n "loadgen CPU use (of its one core) against the floor:"
    for conns in $CONCURRENCY; do
        echo -n " c$conns $(med floor "$conns" client_cpu_util)"
    done
    echo " (near 1.00: the floor is client-bound, its cycles/s a lower bound)"
}

# Before/after: the daemon against the baseline binary, both from the same
# interleaved runs; ratios are medians of the per-run ratios, like the table.
print_baseline() {
    local conns hold=${HOLDS[-1]}
    echo
    echo "before/after (TOKENBUDGETD_BASELINE=$BASELINE vs TOKENBUDGETD=$TOKENBUDGETD; per-run ratios, median)"
    echo "  scopes per allocation: daemon ${N_SCOPES_OF[daemon]} (${SCOPES_OF[daemon]}), base ${N_SCOPES_OF[base]}" \
        "(${SCOPES_OF[base]})"
    printf '%-5s | %9s %9s | %6s | %s\n' conns daemon base d/base "server CPU per cycle (us) d / base"
    for conns in $CONCURRENCY; do
        printf '%-5s | %9s %9s | %6s | %7s / %s\n' "$conns" \
            "$(fmt "$(med daemon "$conns" cycles_per_sec)")" "$(fmt "$(med base "$conns" cycles_per_sec)")" \
            "$(mratio daemon base "$conns" cycles_per_sec)" \
            "$(med daemon "$conns" server_cpu_us_per_cycle)" "$(med base "$conns" server_cpu_us_per_cycle)"
    done
    echo "  (cycles/s; d/base > 1: the daemon is faster)"
    section scale || return 0
    echo "  with $hold open allocations, per-call p50 at concurrency 1 d / base: $(scale_med "$hold" call_p50_us) /" \
        "$(med basehold "$hold" call_p50_us) us (d/base $(mratio hold basehold "$hold" call_p50_us), below 1: the daemon is faster);" \
        "RSS per open allocation $(scale_med "$hold" hold_bytes_per_alloc) / $(med basehold "$hold" hold_bytes_per_alloc) bytes"
}

# hratio HOLD KEY: the HOLD point against the first one, per run, median.
hratio() {
    local vals=() run
    for run in $(seq "$RUNS"); do
        vals+=("$(ratio "$(kv "$2" "${R["hold $1 $run"]}")" "$(kv "$2" "${R["hold ${HOLDS[0]} $run"]}")")")
    done
    median "${vals[@]}"
}

# in_range LO HI VALUE...: an awk condition that every VALUE is in [LO, HI].
in_range() {
    local lo=$1 hi=$2 v cond="1"
    shift 2
    for v in "$@"; do
        cond+=" && $v >= $lo && $v <= $hi"
    done
    echo "$cond"
}

print_scale() {
    local hold rss
    SCALE_LAT_RATIOS=()
    for hold in "${HOLDS[@]:1}"; do
        SCALE_LAT_RATIOS+=("$(hratio "$hold" call_p50_us)")
    done
    SCALE_PER_ALLOC=$(scale_med "${HOLDS[-1]}" hold_bytes_per_alloc)
    SCALE_PER_CONN=$(kv bytes_per_conn "$IDLE_LINE")
    echo
    echo "cost of scale"
    echo "  per-call latency at concurrency 1 with allocations held open on another connection of the same process:"
    echo "  a fresh daemon per point and run, one loadgen in lockstep over them (a cycle on each in turn, 2 s of cycles"
    echo "  each), loadgen and daemons on separate cores; ${N_SCOPES_OF[scale]} scopes per allocation: ${SCOPES_OF[scale]}"
    printf '    %-7s | %7s %7s | %6s %6s | %s\n' open "p50 us" "p99 us" "p50 x" "p99 x" \
        "server CPU per cycle (us) | RSS per open allocation (bytes)"
    for hold in "${HOLDS[@]}"; do
        rss=-
        [ "$hold" -lt 1000 ] || rss=$(scale_med "$hold" hold_bytes_per_alloc)
        printf '    %-7s | %7s %7s | %6s %6s | %8s | %s\n' "$hold" "$(scale_med "$hold" call_p50_us)" \
            "$(scale_med "$hold" call_p99_us)" "$(hratio "$hold" call_p50_us)" "$(hratio "$hold" call_p99_us)" \
            "$(scale_med "$hold" server_cpu_us_per_cycle)" "$rss"
    done
    echo "    (x: against ${HOLDS[0]} open in the same run, median of the per-run ratios)"
    echo "  RSS per open allocation (${HOLDS[-1]} held): ${SCALE_PER_ALLOC} bytes" \
        "(RSS $(scale_med "${HOLDS[-1]}" hold_rss_before_kib) -> $(scale_med "${HOLDS[-1]}" hold_rss_after_kib) KiB)"
    echo "  RSS per idle connection ($IDLE_CONNS, each after one cycle): ${SCALE_PER_CONN} bytes" \
        "(RSS $(kv rss_before_kib "$IDLE_LINE") -> $(kv rss_after_kib "$IDLE_LINE") KiB)"
    echo "  idle daemon: $WAKEUPS_PER_MIN wakeups/minute ($WAKEUPS context switches in ${IDLE_SEC} s," \
        "no allocations, no clients)"
    echo "  exec to READY=1: $(fmt "$(awk -v u="$(kv ready_usec "$READY_IDLE")" 'BEGIN { print u / 1000 }')" 2) ms" \
        "(median of 5 starts: $(kv ready_usec_all "$READY_IDLE") us)"
}

scale_med() {
    local vals=() run
    for run in $(seq "$RUNS"); do
        vals+=("$(kv "$2" "${R["hold $1 $run"]}")")
    done
    median "${vals[@]}"
}

# scopes_row LABEL POINT...: one row of the scopes table; POINT is
# SERVER@CONNS-KEY per column (the ratios: each against the first).
scopes_row() {
    local label=$1 p first=$2 cells=""
    shift
    printf '%-8s |' "$label"
    for p in "$@"; do
        printf ' %9s' "$(fmt "$(med "${p%@*}" "${p#*@}" cycles_per_sec)")"
    done
    printf ' |'
    for p in "${@:2}"; do
        printf ' %12s' "$(pratio "${p%@*}" "${p#*@}" "${first%@*}" "${first#*@}" cycles_per_sec)"
    done
    for p in "$@"; do
        cells+="${cells:+ / }$(med "${p%@*}" "${p#*@}" server_cpu_us_per_cycle)"
    done
    printf ' | %-25s' "$cells"
    cells=""
    for p in "$@"; do
        cells+="${cells:+ / }$(med "${p%@*}" "${p#*@}" call_p50_us)"
    done
    printf ' | %s\n' "$cells"
}

print_scopes() {
    local conns s first=${SCOPE_SERVERS[0]} last=${SCOPE_SERVERS[-1]} points
    echo
    echo "scopes per allocation: the same cycle charged to more budgets (Requests declare no agent here);"
    echo "$RUNS runs, medians; ratios: median of the per-run ratios"
    for s in "${SCOPE_SERVERS[@]}"; do
        printf '  %-7s %s: %s\n' "${LABEL_OF[$s]}" "${DESC_OF[$s]}" "${SCOPES_OF[$s]}"
    done
    [ -z "$CGROUP_NOTE" ] || echo "  (no unit scope: $CGROUP_NOTE)"
    printf '%-8s |' conns
    for s in "${SCOPE_SERVERS[@]}"; do
        printf ' %9s' "${LABEL_OF[$s]}"
    done
    printf ' |'
    for s in "${SCOPE_SERVERS[@]:1}"; do
        printf ' %12s' "${LABEL_OF[$s]}/${LABEL_OF[$first]}"
    done
    echo " | server CPU per cycle (us) | call p50 (us)"
    [ -z "$BASELINE" ] || scopes_row "1 (ls)" scopebase@1ls scope3@1ls-root scope5@1ls
    for conns in $SCOPES_CONCURRENCY; do
        points=()
        for s in "${SCOPE_SERVERS[@]}"; do
            points+=("$s@$conns")
        done
        scopes_row "$conns" "${points[@]}"
    done
    echo "  (cycles/s; CPU and p50 in the order of the columns; ${LABEL_OF[$last]}/${LABEL_OF[$first]} above 1:" \
        "${LABEL_OF[$last]} is faster)"
    [ -z "$BASELINE" ] || echo "  1 (ls): concurrency 1 in lockstep, one loadgen alternating cycle by cycle between" \
        "${LABEL_OF[$last]} and ${LABEL_OF[$first]} (in the unit), then ${LABEL_OF[scope3]} and ${LABEL_OF[$first]}" \
        "(root cgroup), 3 s of cycles each per run;" \
        "${LABEL_OF[$first]}'s figure from the first pair; other rows: $DURATION s per point, time-sliced like the matrix"
}

print_rules() {
    local s first=${RULE_SERVERS[0]}
    echo
    echo "rules in the config: per-call latency at concurrency 1, a daemon per rule count, one loadgen in lockstep over"
    echo "  them (a cycle on each in turn, 2 s of cycles each per run);"
    echo "  one rule matches (\"bench\", listed last), the others match.command \"nomatch-I-*\"; Requests without" \
        "agent; with ${RULE_COUNTS[-1]} rules an allocation is charged to ${SCOPES_OF[rules${RULE_COUNTS[-1]}]}"
    printf '    %-7s | %7s %7s | %6s %6s | %s\n' rules "p50 us" "p99 us" "p50 x" "p99 x" "server CPU per cycle (us)"
    for s in "${RULE_SERVERS[@]}"; do
        printf '    %-7s | %7s %7s | %6s %6s | %8s\n' "${s#rules}" "$(med "$s" 1 call_p50_us)" \
            "$(med "$s" 1 call_p99_us)" "$(mratio "$s" "$first" 1 call_p50_us)" "$(mratio "$s" "$first" 1 call_p99_us)" \
            "$(med "$s" 1 server_cpu_us_per_cycle)"
    done
    echo "    (x: against ${first#rules} rule(s) in the same run, median of the per-run ratios)"
}

# measured CONNS: whether this run measured that concurrency.
measured() {
    [[ " $CONCURRENCY " == *" $1 "* ]]
}

print_matrix_targets() {
    local c r p99_d p99_f run
    for c in $CONCURRENCY; do
        r=$(mratio daemon redis "$c" cycles_per_sec)
        if [ "$c" = 1 ]; then
            echo "  daemon >= 1.0x Redis+Lua cycles/s at concurrency 1: ${r}x: $(verdict "$r >= 1.0")"
        else
            echo "  daemon >= 1.5x Redis+Lua cycles/s at concurrency $c: ${r}x: $(verdict "$r >= 1.5")"
        fi
    done
    # BENCH_CONCURRENCY may leave a point out: its targets are then not judged.
    if measured 64; then
        r=$(mratio daemon floor 64 cycles_per_sec)
        echo "  daemon >= 50% of the floor's cycles/s at concurrency 64: ${r}x: $(verdict "$r >= 0.5")"
    else
        echo "  daemon >= 50% of the floor's cycles/s at concurrency 64: not measured (BENCH_CONCURRENCY)"
    fi
    if measured 1; then
        r=$(mratio daemon floor 1 cycle_p99_us)
        p99_d=$(med daemon 1 cycle_p99_us)
        p99_f=$(med floor 1 cycle_p99_us)
        echo "  cycle p99 at concurrency 1 <= 2x the floor's: ${r}x (medians $p99_d us and $p99_f us):" \
            "$(verdict "$r <= 2")"
        echo -n "    (per run, daemon/floor p99 us:"
        for run in $(seq "$RUNS"); do
            echo -n " $(kv cycle_p99_us "${R["daemon 1 $run"]}")/$(kv cycle_p99_us "${R["floor 1 $run"]}")"
        done
        echo "; ms-scale p99s in a run are this shared host's noise: other jobs preempting a server)"
    else
        echo "  cycle p99 at concurrency 1 <= 2x the floor's: not measured (BENCH_CONCURRENCY)"
    fi
}

print_scale_targets() {
    local i text=""
    for i in "${!SCALE_LAT_RATIOS[@]}"; do
        text+="${text:+, }x${SCALE_LAT_RATIOS[$i]} at ${HOLDS[$((i + 1))]}"
    done
    echo "  per-call latency p50 within 20% from ${HOLDS[0]} to ${HOLDS[-1]} open allocations: $text:" \
        "$(verdict "$(in_range 0.8 1.2 "${SCALE_LAT_RATIOS[@]}")")"
    echo "  RSS <= 2 KiB per idle connection: $SCALE_PER_CONN bytes: $(verdict "$SCALE_PER_CONN <= 2048")"
    echo "  RSS <= 512 bytes per open allocation: $SCALE_PER_ALLOC bytes: $(verdict "$SCALE_PER_ALLOC <= 512")"
    echo "  idle wakeups <= 1 per minute: $WAKEUPS_PER_MIN: $(verdict "$WAKEUPS_PER_MIN <= 1")"
}

print_scopes_targets() {
    local c r n=${N_SCOPES_OF[scope5]} note="" what
    what="cycles/s with $n scopes >= 0.8x the 2-scope"
    [ "$n" = 5 ] || note=" (not 5 scopes: see the scopes section)"
    if [ -z "$BASELINE" ]; then
        echo "  $what daemon's: not measured (needs TOKENBUDGETD_BASELINE, a 2-scope daemon;" \
            "${LABEL_OF[scope5]}/${LABEL_OF[scope3]} at concurrency $SCOPES_CONCURRENCY:" \
            "$(for c in $SCOPES_CONCURRENCY; do echo -n "$(mratio scope5 scope3 "$c" cycles_per_sec)x "; done))"
        return 0
    fi
    what="cycles/s with $n scopes >= 0.8x the ${N_SCOPES_OF[scopebase]}-scope baseline's"
    r=$(pratio scope5 1ls scopebase 1ls cycles_per_sec)
    echo "  $what at concurrency 1 (lockstep): ${r}x$note: $(verdict "$r >= 0.8")"
    for c in $SCOPES_CONCURRENCY; do
        r=$(mratio scope5 scopebase "$c" cycles_per_sec)
        echo "  $what at concurrency $c: ${r}x$note: $(verdict "$r >= 0.8")"
    done
}

print_rules_targets() {
    local s vals=() text=""
    for s in "${RULE_SERVERS[@]:1}"; do
        vals+=("$(mratio "$s" "${RULE_SERVERS[0]}" 1 call_p50_us)")
        text+="${text:+, }x${vals[-1]} at ${s#rules}"
    done
    echo "  per-call latency p50 within 20% from ${RULE_COUNTS[0]} to ${RULE_COUNTS[-1]} rules: $text:" \
        "$(verdict "$(in_range 0.8 1.2 "${vals[@]}")")"
}

print_targets() {
    local with="" total=$((SECONDS - BUILT_SEC)) old=0 name times=""
    echo
    echo "targets (ratios: median of the per-run ratios, each run's points side by side)"
    section matrix && print_matrix_targets
    if section durable; then
        if [ -n "$DURABLE_NOTE" ]; then
            echo "  durable: not measured: $DURABLE_NOTE"
        else
            print_durable_targets
        fi
    fi
    section scale && print_scale_targets
    if section scopes; then
        [ -n "$NEW_DAEMON" ] && print_scopes_targets || echo "  scopes: not measured: $NEW_DAEMON_NOTE"
    fi
    if section rules; then
        [ -n "$NEW_DAEMON" ] && print_rules_targets || echo "  rules: not measured: $NEW_DAEMON_NOTE"
    fi
    if section queue; then
        [ -n "$NEW_DAEMON" ] && print_queue_targets || echo "  queue: not measured: $NEW_DAEMON_NOTE"
    fi
    ! section estimate || print_estimate_targets
    if section proxy; then
        print_proxy_targets
        echo "  proxy section under 3 minutes: ${SECTION_SEC[proxy]} s: $(verdict "${SECTION_SEC[proxy]} < 180")"
    fi
    for name in matrix durable scale scopes rules queue estimate proxy; do
        [ -z "${SECTION_SEC[$name]:-}" ] || times+="${times:+, }$name ${SECTION_SEC[$name]} s"
    done
    [ -z "$BASELINE" ] || with=" (with the baseline points)"
    if section matrix && section scale; then
        old=$((SECTION_SEC[matrix] + SECTION_SEC[scale]))
        echo "  matrix and cost of scale under 5 minutes (after installing): $old s$with: $(verdict "$old < 300")"
    fi
    echo "  whole run under 8 minutes (after installing): $total s ($times): $(verdict "$total < 480")"
}

# The durable section: the matrix's cycle against the daemon memory only
# (--state-dir ''), with its ledger on disk (durability.sync "normal" and
# "full", each a fresh state directory under BENCH_DIR) and Redis+Lua with an
# append-only file (appendfsync everysec and always, each a fresh AOF
# directory under BENCH_DIR: the same file system); all five running for the
# whole section and interleaved like the matrix. Then, with the servers
# stopped, what each left on disk, and the history rows the two durable
# daemons wrote (one per settled allocation: at least one per cycle).
declare -A DISK_BYTES_OF=() HISTORY_ROWS_OF=() CYCLES_OF=()
durable_section() {
    local mode s run conns n
    start_daemon dmem "$BENCH_DIR/dmem.sock" 1 "$TOKENBUDGETD" "$BENCH_DIR/tokenbudgetd.conf" ""
    for mode in normal full; do
        rm -rf "$BENCH_DIR/state-$mode"
        mkdir -p "$BENCH_DIR/state-$mode"
        start_daemon "d$mode" "$BENCH_DIR/d$mode.sock" 1 "$TOKENBUDGETD" "$BENCH_DIR/durable-$mode.conf" \
            "$BENCH_DIR/state-$mode"
        [ -s "$BENCH_DIR/state-$mode/tokenbudget.db" ] ||
            die "d$mode (--state-dir $BENCH_DIR/state-$mode) made no tokenbudget.db there: $BENCH_DIR/d$mode.log"
    done
    start_redis_aof reverysec everysec
    start_redis_aof ralways always
    for s in dmem dnormal dfull; do
        scopes_of "$s"
    done
    interleave "$DURABLE_CONCURRENCY" "${DURABLE_SERVERS[@]}"
    for s in "${DURABLE_SERVERS[@]}"; do
        stop_server "$s"
    done
    for s in "${DURABLE_SERVERS[@]}"; do
        n=0
        for run in $(seq "$RUNS"); do
            for conns in $DURABLE_CONCURRENCY; do
                n=$((n + $(kv cycles "${R["$s $conns $run"]}")))
            done
        done
        CYCLES_OF[$s]=$n
    done
    for mode in normal full; do
        DISK_BYTES_OF[d$mode]=$(du -sb "$BENCH_DIR/state-$mode" | cut -f 1)
        HISTORY_ROWS_OF[d$mode]=$(sqlite3 -readonly "$BENCH_DIR/state-$mode/tokenbudget.db" \
            "SELECT count(*) FROM history" 2>&1) || HISTORY_ROWS_OF[d$mode]="unreadable (${HISTORY_ROWS_OF[d$mode]})"
        echo "durable d$mode disk_bytes=${DISK_BYTES_OF[d$mode]} history_rows=${HISTORY_ROWS_OF[d$mode]}" \
            "measured_cycles=${CYCLES_OF[d$mode]}" >>"$RESULTS"
    done
    for s in reverysec ralways; do
        DISK_BYTES_OF[$s]=$(du -sb "$BENCH_DIR/$s-data" | cut -f 1)
        echo "durable $s disk_bytes=${DISK_BYTES_OF[$s]} measured_cycles=${CYCLES_OF[$s]}" >>"$RESULTS"
    done
    # Gigabytes at full speed: gone at once, not at the end of the run.
    [ "${BENCH_KEEP:-0}" = 1 ] || rm -rf "$BENCH_DIR"/state-normal "$BENCH_DIR"/state-full \
        "$BENCH_DIR"/reverysec-data "$BENCH_DIR"/ralways-data
}

# mib BYTES: in MiB, one decimal.
mib() {
    awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'
}

print_durable() {
    local conns s f
    f='%-5s | %9s %9s %9s %9s %9s | %9s %9s %9s | %8s %8s %8s %8s %8s | %7s %7s %7s %7s %7s\n'
    echo
    echo "durable ledger: the same cycle with the daemon's ledger on disk, next to Redis+Lua with an append-only"
    echo "file; median of $RUNS interleaved runs of ${DURATION} s per point (after ${WARMUP} s warmup); ratios: median"
    echo "of the per-run ratios"
    echo "  memory    tokenbudgetd --state-dir '' (memory only, as in the matrix)"
    echo "  normal    tokenbudgetd --state-dir DIR, durability.sync \"normal\" (SQLite WAL, synchronous=NORMAL)"
    echo "  full      the same with durability.sync \"full\" (synchronous=FULL: an fsync per commit)"
    echo "  everysec  Redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') + Lua (the matrix's scripts)," \
        "appendonly yes, appendfsync everysec"
    echo "  always    the same Redis, appendfsync always (an fsync before the replies of each event-loop turn)"
    echo "  the daemons charge ${N_SCOPES_OF[dmem]} scopes (${SCOPES_OF[dmem]}), Redis 3;" \
        "state directories and AOFs in $BENCH_DIR: $(findmnt -no FSTYPE,SOURCE -T "$BENCH_DIR" | tr -s ' ' | sed 's/ / on /')"
    echo
    # shellcheck disable=SC2059 # the format is ours
    printf "$f" conns memory normal full everysec always n/evsec f/always n/mem "p99 m" "p99 n" "p99 f" "p99 e" \
        "p99 a" "cpu m" "cpu n" "cpu f" "cpu e" "cpu a"
    printf '%-5s | %49s | %29s | %44s | %39s\n' "" "cycles/s" "ratios (paired)" "cycle p99 latency (us)" \
        "server CPU per cycle (us)"
    for conns in $DURABLE_CONCURRENCY; do
        # shellcheck disable=SC2059
        printf "$f" "$conns" \
            "$(fmt "$(med dmem "$conns" cycles_per_sec)")" "$(fmt "$(med dnormal "$conns" cycles_per_sec)")" \
            "$(fmt "$(med dfull "$conns" cycles_per_sec)")" "$(fmt "$(med reverysec "$conns" cycles_per_sec)")" \
            "$(fmt "$(med ralways "$conns" cycles_per_sec)")" \
            "$(mratio dnormal reverysec "$conns" cycles_per_sec)" "$(mratio dfull ralways "$conns" cycles_per_sec)" \
            "$(mratio dnormal dmem "$conns" cycles_per_sec)" \
            "$(fmt "$(med dmem "$conns" cycle_p99_us)")" "$(fmt "$(med dnormal "$conns" cycle_p99_us)")" \
            "$(fmt "$(med dfull "$conns" cycle_p99_us)")" "$(fmt "$(med reverysec "$conns" cycle_p99_us)")" \
            "$(fmt "$(med ralways "$conns" cycle_p99_us)")" \
            "$(fmt "$(med dmem "$conns" server_cpu_us_per_cycle)" 1)" \
            "$(fmt "$(med dnormal "$conns" server_cpu_us_per_cycle)" 1)" \
            "$(fmt "$(med dfull "$conns" server_cpu_us_per_cycle)" 1)" \
            "$(fmt "$(med reverysec "$conns" server_cpu_us_per_cycle)" 1)" \
            "$(fmt "$(med ralways "$conns" server_cpu_us_per_cycle)" 1)"
    done
    echo "  (server CPU: the server process' own threads; the kernel's writeback and journal threads not counted)"
    echo "  on disk after the section: normal $(mib "${DISK_BYTES_OF[dnormal]}"), ${HISTORY_ROWS_OF[dnormal]} history rows;" \
        "full $(mib "${DISK_BYTES_OF[dfull]}"), ${HISTORY_ROWS_OF[dfull]} history rows;" \
        "AOF everysec $(mib "${DISK_BYTES_OF[reverysec]}"), always $(mib "${DISK_BYTES_OF[ralways]}")"
    echo "  (measured cycles: normal ${CYCLES_OF[dnormal]}, full ${CYCLES_OF[dfull]}; a history row per settled" \
        "allocation, warmup cycles too)"
    for s in dnormal dfull; do
        [[ ${HISTORY_ROWS_OF[$s]} =~ ^[0-9]+$ ]] && [ "${HISTORY_ROWS_OF[$s]}" -ge "${CYCLES_OF[$s]}" ] ||
            echo "  WARNING: $s has fewer history rows than measured cycles: its ledger did not all reach the disk"
    done
}

print_durable_targets() {
    local r
    if [[ " $DURABLE_CONCURRENCY " != *" 64 "* ]]; then
        echo "  durable targets at concurrency 64: not measured (BENCH_DURABLE_CONCURRENCY)"
        return 0
    fi
    r=$(mratio dnormal reverysec 64 cycles_per_sec)
    echo "  durable daemon (sync normal) >= 3x Redis+Lua appendfsync everysec cycles/s at concurrency 64: ${r}x:" \
        "$(verdict "$r >= 3")"
    r=$(mratio dfull ralways 64 cycles_per_sec)
    echo "  durable daemon (sync full) >= 3x Redis+Lua appendfsync always cycles/s at concurrency 64: ${r}x:" \
        "$(verdict "$r >= 3")"
    r=$(mratio dnormal dmem 64 cycles_per_sec)
    echo "  durable daemon (sync normal) >= 0.7x the memory-only daemon's cycles/s at concurrency 64: ${r}x:" \
        "$(verdict "$r >= 0.7")"
}

# timed SECTION FUNCTION: runs FUNCTION, records how long it took.
timed() {
    local t0=$SECONDS
    "$2"
    SECTION_SEC[$1]=$((SECONDS - t0))
}

matrix_section() {
    local sizes
    start_daemon daemon "$BENCH_DIR/daemon.sock"
    [ -z "$BASELINE" ] || start_daemon base "$BENCH_DIR/base.sock" 1 "$BASELINE"
    start_redis
    sizes=$(client daemon --capture) || die "cannot capture a daemon cycle: $(tail -n 3 "$BENCH_DIR/loadgen.err")"
    echo "capture $sizes" >>"$RESULTS"
    scopes_of daemon
    [ -z "$BASELINE" ] || scopes_of base
    start_floor "$(kv reply_sizes "$sizes")"

    interleave "$CONCURRENCY" "${SERVERS[@]}"
    stop_server daemon
    stop_server base
    stop_server floor
    stop_server redis
    unset "PID_OF[lite]"
}

scale_section() {
    scale_holds
    scale_idle_conns
    check_alive
    WAKEUPS=$(($(ctxt_switches "${PID_OF[idle]}") - IDLE0))
    IDLE_SEC=$((SECONDS - IDLE_T0))
    WAKEUPS_PER_MIN=$(awk -v n="$WAKEUPS" -v s="$IDLE_SEC" 'BEGIN { printf "%.2f", n * 60 / s }')
    stop_server idle
}

# The estimate section (issue 13, point 6): each trace of
# BENCH_ESTIMATE_TRACES replayed in time order by bench/estimate.c through a
# fresh memory-only daemon per trace and mode (so the class, the trace's
# file name, starts from nothing), with prompt buckets (promptTokens =
# ContextTokens) and without (the class-level estimate). The daemon's config
# is the matrix's (no limit in reach) with the runaway breaker off
# (breaker.runaway_breaches = 0): a trace's long output may pass the hard
# limit of the client's estimate (none of the Azure rows does with the
# default 1000), and a trace is to be measured, not refused as a runaway.
# A third run per trace, "learned", is mode buckets with the daemon
# reserving what it learned (estimate_source = "learned", min_samples 20,
# floor 0.5): what it leaves unused next to 2x the client's estimate.
# estimate.c also asks io.tokenbudget.admin.Estimate for each block of 100
# and 1000 at its start (interval coverage, issue 13 point 5).
ESTIMATE_DIR=$ROOT/../shared/data/traces
ESTIMATE_TRACES=${BENCH_ESTIMATE_TRACES:-$ESTIMATE_DIR/azure-2023-conv.csv $ESTIMATE_DIR/azure-2023-code.csv}
ESTIMATE_CLIENT_OUTPUT=${BENCH_ESTIMATE_CLIENT_OUTPUT:-1000}
ESTIMATE_RUNS=(buckets class learned) # the runs per trace: estimate.c's mode, and "learned" (see above)
ESTIMATE_NAMES=()        # the traces' names (file names without .csv), in order
ESTIMATE_NOTE=""         # why the section measured nothing, when it did not
ESTIMATE_LEARNED_NOTE="" # why the learned run did not run, when it did not
declare -A EST_OF=()     # "name run" -> estimate's output line

estimate_section() {
    local trace name run mode conf line rc
    { cat "$BENCH_DIR/tokenbudgetd.conf" && echo "breaker = { runaway_breaches = 0; };"; } >"$BENCH_DIR/estimate.conf"
    if ! line=$("$TOKENBUDGETD" --check-config "$BENCH_DIR/estimate.conf" 2>&1 >/dev/null); then
        ESTIMATE_NOTE="TOKENBUDGETD=$TOKENBUDGETD refuses the estimate config ($(head -n 1 <<<"$line"))"
        return 0
    fi
    { cat "$BENCH_DIR/estimate.conf" &&
        echo 'estimate_source = "learned"; estimate_min_samples = 20; estimate_floor = 0.5;'; } \
        >"$BENCH_DIR/estimate-learned.conf"
    if ! line=$("$TOKENBUDGETD" --check-config "$BENCH_DIR/estimate-learned.conf" 2>&1 >/dev/null); then
        ESTIMATE_LEARNED_NOTE="TOKENBUDGETD=$TOKENBUDGETD refuses estimate_source ($(head -n 1 <<<"$line"))"
        ESTIMATE_RUNS=(buckets class)
    fi
    for trace in $ESTIMATE_TRACES; do
        if [ ! -r "$trace" ]; then
            [ -z "${BENCH_ESTIMATE_TRACES:-}" ] || die "BENCH_ESTIMATE_TRACES: cannot read $trace"
            ESTIMATE_NOTE="no trace at $trace (see BENCH_ESTIMATE_TRACES)"
            return 0
        fi
        name=$(basename "$trace" .csv)
        ESTIMATE_NAMES+=("$name")
        for run in "${ESTIMATE_RUNS[@]}"; do
            mode=$run conf=$BENCH_DIR/estimate.conf
            [ "$run" != learned ] || mode=buckets conf=$BENCH_DIR/estimate-learned.conf
            start_daemon est "$BENCH_DIR/est.sock" 1 "$TOKENBUDGETD" "$conf"
            rc=0
            line=$("${CLIENT_PIN[@]}" "$BIN/estimate" --socket "$BENCH_DIR/est.sock" --trace "$trace" \
                --class "$name" --mode "$mode" --client-output "$ESTIMATE_CLIENT_OUTPUT" \
                2>>"$BENCH_DIR/estimate.err") || rc=$?
            check_alive
            stop_server est
            if [ "$rc" = 3 ]; then
                ESTIMATE_NOTE="TOKENBUDGETD=$TOKENBUDGETD: $(tail -n 1 "$BENCH_DIR/estimate.err")"
                return 0
            fi
            [ "$rc" = 0 ] || die "estimate on $name ($run) failed: $(tail -n 3 "$BENCH_DIR/estimate.err")"
            EST_OF["$name $run"]=$line
            echo "estimate run=$run $line" >>"$RESULTS"
            echo "bench: estimate $name $run: median 100-block error $(pct "$(kv block100_median "$line")")," \
                "WAPE $(pct "$(kv wape "$line")"), 100-block intervals holding the actual:" \
                "$(est_coverage "$line" 100)" >&2
        done
    done
}

# pct FRACTION: as a percentage, one decimal.
pct() {
    awk -v f="$1" 'BEGIN { printf "%.1f%%", f * 100 }'
}

# mtok TOKENS: in millions (two decimals), thousands (one) or as is.
mtok() {
    awk -v t="$1" 'BEGIN { if (t >= 1e6) printf "%.2fM", t / 1e6; else if (t >= 1e3) printf "%.1fk", t / 1e3;
        else printf "%d", t }'
}

# est_block LINE SIZE: "median / p90" of the SIZE-blocks in an estimate
# line, "-" when the trace had no complete block of that size.
est_block() {
    if [ "$(kv "block$2_n" "$1")" = 0 ]; then
        echo "-"
    else
        echo "$(pct "$(kv "block$2_median" "$1")") / $(pct "$(kv "block$2_p90" "$1")")"
    fi
}

# est_coverage LINE SIZE: "within / intervals (share)" of the SIZE-blocks'
# Estimate intervals, or why there is none.
est_coverage() {
    local l=$1 n=$2
    if [ "$(kv coverage_error "$l")" != none ]; then
        echo "not measured: Estimate answered $(kv coverage_error "$l")"
    elif [ "$(kv "cov${n}_blocks" "$l")" = 0 ]; then
        echo "-"
    elif [ "$(kv "cov${n}_intervals" "$l")" = 0 ]; then
        echo "no interval in $(kv "cov${n}_blocks" "$l") blocks"
    else
        echo "$(pct "$(kv "cov${n}_share" "$l")") ($(kv "cov${n}_within" "$l")/$(kv "cov${n}_intervals" "$l"))"
    fi
}

# est_cov_row LINE SIZE: the coverage table's cells for the SIZE-blocks.
est_cov_row() {
    local l=$1 n=$2 err="-"
    [ "$(kv "cov${n}_expected_n" "$l")" = 0 ] ||
        err="$(pct "$(kv "cov${n}_expected_median" "$l")") / $(pct "$(kv "cov${n}_expected_p90" "$l")")"
    printf '%16s %5s %5s %6s | %15s' "$(est_coverage "$l" "$n")" "$(kv "cov${n}_below" "$l")" \
        "$(kv "cov${n}_above" "$l")" "$(kv "cov${n}_blocks" "$l")" "$err"
}

print_estimate() {
    local name run l f
    echo
    echo "learned estimates on real traces (issue 13, point 6): each trace in time order, per row a Request"
    echo "  (estimate ContextTokens + $ESTIMATE_CLIENT_OUTPUT, class = the trace's name; buckets: promptTokens ="
    echo "  ContextTokens, class: none; learned: as buckets, the daemon reserving what it learned) and a Release"
    echo "  with the actual tokens, in lockstep on one connection to a fresh memory-only daemon per trace and run;"
    echo "  counted from the first reply with a prediction. Output tokens: WAPE of single requests, bias, and"
    echo "  |sum pred - sum actual| / sum actual over consecutive blocks of 10, 100 and 1000 requests (median /"
    echo "  p90 of the blocks; n: how many)"
    if [ -n "$ESTIMATE_NOTE" ]; then
        echo "  not measured: $ESTIMATE_NOTE"
        return 0
    fi
    f='%-16s %-7s | %6s | %6s %6s | %17s | %15s %4s | %15s %3s | %5s\n'
    echo
    # shellcheck disable=SC2059 # the format is ours
    printf "$f" trace run rows WAPE bias "block 10" "block 100" n "block 1000" n s
    for name in "${ESTIMATE_NAMES[@]}"; do
        for run in "${ESTIMATE_RUNS[@]}"; do
            l=${EST_OF["$name $run"]}
            # shellcheck disable=SC2059
            printf "$f" "$name" "$run" "$(kv counted "$l")" "$(pct "$(kv wape "$l")")" "$(pct "$(kv bias "$l")")" \
                "$(est_block "$l" 10)" "$(est_block "$l" 100)" "$(kv block100_n "$l")" \
                "$(est_block "$l" 1000)" "$(kv block1000_n "$l")" "$(kv elapsed_s "$l")"
        done
    done
    echo
    echo "  90% project intervals: io.tokenbudget.admin.Estimate {class, tasks: N} (no promptTokens) at the start"
    echo "  of each block of N counted rows (before its first Release), on a second connection; within: the"
    echo "  blocks whose actual output sum lay in [outputLow, outputHigh], of those that had an interval (below"
    echo "  and above it: the others); blocks: all; expected err: |expectedOutput - actual| / actual (median / p90)"
    f='  %-16s %-7s | %-53s | %s\n'
    # shellcheck disable=SC2059
    printf "$f" "" "" "blocks of 100" "blocks of 1000"
    # shellcheck disable=SC2059
    printf "$f" trace run "          within below above blocks |    expected err" \
        "          within below above blocks |    expected err"
    for name in "${ESTIMATE_NAMES[@]}"; do
        for run in "${ESTIMATE_RUNS[@]}"; do
            l=${EST_OF["$name $run"]}
            if [ "$(kv coverage_error "$l")" != none ]; then
                printf '  %-16s %-7s | %s\n' "$name" "$run" "$(est_coverage "$l" 100)"
                continue
            fi
            # shellcheck disable=SC2059
            printf "$f" "$name" "$run" "$(est_cov_row "$l" 100)" "$(est_cov_row "$l" 1000)"
        done
    done
    echo
    echo "  reserved but unused (sum over the counted rows of max(0, reserved - actual input + output)), and the"
    echo "  actual tokens past the reservation (rows): a client reserving 2x its estimate (what the daemon's hard"
    echo "  limit reserves with hard_multiplier 2), reserving the daemon's predicted (prompt + predicted output;"
    echo "  class: the learned total) and 2x predicted (offline policies, from the replies' predictions), and what"
    echo "  the daemon reserved: each reply's hardLimit (2x the estimate with estimate_source \"client\"; in run"
    echo "  learned, estimate_source \"learned\": the learned reservation, never below 0.5x the estimate, times the"
    echo "  class's hard multiplier; learned: the rows reserved from the prediction). M: millions, k: thousands"
    f='  %-16s %-7s | %7s | %13s %14s | %11s %14s | %14s %14s | %15s %14s %7s\n'
    # shellcheck disable=SC2059
    printf "$f" trace run actual "unused 2x est" "past (rows)" "unused pred" "past (rows)" "unused 2x pred" \
        "past (rows)" "unused reserved" "past (rows)" learned
    for name in "${ESTIMATE_NAMES[@]}"; do
        for run in "${ESTIMATE_RUNS[@]}"; do
            l=${EST_OF["$name $run"]}
            # shellcheck disable=SC2059
            printf "$f" "$name" "$run" "$(mtok "$(kv sum_act_total "$l")")" "$(mtok "$(kv unused_2x "$l")")" \
                "$(mtok "$(kv over_2x "$l")") ($(kv over_2x_rows "$l"))" "$(mtok "$(kv unused_pred "$l")")" \
                "$(mtok "$(kv over_pred "$l")") ($(kv over_pred_rows "$l"))" "$(mtok "$(kv unused_2pred "$l")")" \
                "$(mtok "$(kv over_2pred "$l")") ($(kv over_2pred_rows "$l"))" "$(mtok "$(kv unused_res "$l")")" \
                "$(mtok "$(kv over_res "$l")") ($(kv over_res_rows "$l"))" "$(kv learned_rows "$l")"
        done
    done
    [ -z "$ESTIMATE_LEARNED_NOTE" ] || echo "  run learned: not measured: $ESTIMATE_LEARNED_NOTE"
}

# estimate_target NAME LIMIT WHAT: the median 100-block error of trace NAME
# with buckets against LIMIT (a fraction).
estimate_target() {
    local name=$1 limit=$2 what=$3 l
    what="estimate: median 100-block output error <= $(pct "$limit") on $what (with buckets)"
    l=${EST_OF["$name buckets"]:-}
    if [ -z "$l" ]; then
        echo "  $what: not measured (BENCH_ESTIMATE_TRACES has no $name.csv)"
        return 0
    fi
    if [ "$(kv block100_n "$l")" = 0 ]; then
        echo "  $what: not measured (fewer than 100 rows with a prediction)"
        return 0
    fi
    echo "  $what: $(pct "$(kv block100_median "$l")"): $(verdict "$(kv block100_median "$l") <= $limit")"
}

# coverage_target NAME WHAT: the share of trace NAME's 90% intervals (with
# buckets, blocks of 100 and 1000 together) that held the actual, against
# 85-95%.
coverage_target() {
    local name=$1 what l within n
    what="estimate: 85-95% of 90% project intervals contain the actual on $2 (with buckets, blocks of 100"
    what="$what and 1000)"
    l=${EST_OF["$name buckets"]:-}
    if [ -z "$l" ]; then
        echo "  $what: not measured (BENCH_ESTIMATE_TRACES has no $name.csv)"
        return 0
    fi
    if [ "$(kv coverage_error "$l")" != none ]; then
        echo "  $what: not measured: the daemon's Estimate answered $(kv coverage_error "$l")"
        return 0
    fi
    within=$(($(kv cov100_within "$l") + $(kv cov1000_within "$l")))
    n=$(($(kv cov100_intervals "$l") + $(kv cov1000_intervals "$l")))
    if [ "$n" = 0 ]; then
        echo "  $what: not measured (no block had an interval)"
        return 0
    fi
    echo "  $what: $(pct "$(awk -v a="$within" -v b="$n" 'BEGIN { print a / b }')") ($within of $n):" \
        "$(verdict "$within >= 0.85 * $n && $within <= 0.95 * $n")"
}

# coverage_target_all: the same over every trace's intervals together (the
# issue's target is the share of all 90% project intervals; one trace's 94
# intervals put a true 90% anywhere from about 84% to 96%).
coverage_target_all() {
    local key l within=0 n=0 traces=0
    local what="estimate: 85-95% of 90% project intervals contain the actual, every trace together"
    for key in "${!EST_OF[@]}"; do
        [[ $key == *" buckets" ]] || continue
        l=${EST_OF[$key]}
        [ "$(kv coverage_error "$l")" = none ] || continue
        within=$((within + $(kv cov100_within "$l") + $(kv cov1000_within "$l")))
        n=$((n + $(kv cov100_intervals "$l") + $(kv cov1000_intervals "$l")))
        traces=$((traces + 1))
    done
    if [ "$n" = 0 ]; then
        echo "  $what: not measured (no block had an interval)"
        return 0
    fi
    echo "  $what ($traces traces): $(pct "$(awk -v a="$within" -v b="$n" 'BEGIN { print a / b }')")" \
        "($within of $n): $(verdict "$within >= 0.85 * $n && $within <= 0.95 * $n")"
}

print_estimate_targets() {
    if [ -n "$ESTIMATE_NOTE" ]; then
        echo "  estimate: not measured: $ESTIMATE_NOTE"
        return 0
    fi
    estimate_target azure-2023-conv 0.05 "the conversation trace"
    estimate_target azure-2023-code 0.07 "the code trace"
    coverage_target azure-2023-conv "the conversation trace"
    coverage_target azure-2023-code "the code trace"
    coverage_target_all
}

# The proxy section (issue 14, point 8): tokenbudget-proxy next to Debian's
# nginx as a plain reverse proxy, both in front of the same upstream
# (bench/proxy-upstream.c, evhttp: a fixed small chat completion, or a stream
# of PROXY_CHUNKS chunks one every PROXY_INTERVAL_US), all over loopback TCP.
# The proxy asks a memory-only tokenbudgetd (the matrix's config: every limit
# checked, none reached) for every request. bench/proxy-load.c drives each
# target with keep-alive HTTP/1.1: non-streaming at concurrency 1 and 16
# (per-request latency, requests/s) and streaming at 16 (the CPU time of
# nginx, of the proxy and of its daemon per token received). Every point of
# every target once per run, interleaved; medians of the per-run figures.
# Placement: loadgen and upstream on CPU 0 (the outside world), nginx, the
# proxy and its daemon on CPU 1 (the hop measured).
PROXY_DURATION=${BENCH_PROXY_DURATION:-2}
PROXY_STREAM_DURATION=${BENCH_PROXY_STREAM_DURATION:-3}
PROXY_CONCURRENCY=${BENCH_PROXY_CONCURRENCY:-1 16}
PROXY_STREAM_CONNS=${BENCH_PROXY_STREAM_CONNS:-16}
PROXY_CHUNKS=${BENCH_PROXY_CHUNKS:-200}
PROXY_INTERVAL_US=${BENCH_PROXY_INTERVAL_US:-1000}
PROXY_TARGETS=(direct nginx proxy)
declare -A PORT_OF=() # proxy section: target -> its TCP port on 127.0.0.1

# A TCP port on 127.0.0.1 nothing listens on (from 20000 up).
free_port() {
    local port used
    used=$(ss -Htln 2>/dev/null | awk '{ print $4 }')
    for port in $(seq "${1:-20000}" 20999); do
        grep -q ":$port\$" <<<"$used" || { echo "$port"; return 0; }
    done
    die "no free TCP port in 20000-20999"
}

# wait_port PORT PID: until something accepts on 127.0.0.1:PORT.
wait_port() {
    local _
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

proxy_section() {
    local out=$BENCH_DIR/upstream.out run conns t line pids _ nport pport
    # The upstream.
    : >"$out"
    "${CLIENT_PIN[@]}" "$BIN/proxy-upstream" --port 0 --chunks "$PROXY_CHUNKS" --interval-us "$PROXY_INTERVAL_US" \
        >"$out" 2>"$BENCH_DIR/upstream.log" &
    PID_OF[upstream]=$!
    for _ in $(seq 100); do
        grep -q port= "$out" && break
        sleep 0.05
    done
    PORT_OF[direct]=$(kv port "$(cat "$out")")
    [ -n "${PORT_OF[direct]}" ] || die "proxy-upstream did not start: $BENCH_DIR/upstream.log"
    # nginx: one process (no master), no access log, keep-alive to the client
    # and to the upstream without a request limit, no response buffering (what
    # a reverse proxy for SSE streams is configured with).
    nport=$(free_port 20000)
    mkdir -p "$BENCH_DIR/nginx"
    cat >"$BENCH_DIR/nginx/nginx.conf" <<EOF
# Generated by bench/run.sh: nginx as a plain reverse proxy.
daemon off;
master_process off;
worker_processes 1;
pid $BENCH_DIR/nginx/nginx.pid;
error_log $BENCH_DIR/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $BENCH_DIR/nginx/body;
    proxy_temp_path $BENCH_DIR/nginx/proxy;
    fastcgi_temp_path $BENCH_DIR/nginx/fastcgi;
    uwsgi_temp_path $BENCH_DIR/nginx/uwsgi;
    scgi_temp_path $BENCH_DIR/nginx/scgi;
    keepalive_requests 1000000000;
    keepalive_timeout 300s;
    upstream bench { server 127.0.0.1:${PORT_OF[direct]}; keepalive 64; keepalive_requests 1000000000; }
    server {
        listen 127.0.0.1:$nport;
        location / {
            proxy_pass http://bench;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
}
EOF
    "${SERVER_PIN[@]}" nginx -p "$BENCH_DIR/nginx" -c "$BENCH_DIR/nginx/nginx.conf" 2>"$BENCH_DIR/nginx.log" &
    PID_OF[nginx]=$!
    PORT_OF[nginx]=$nport
    wait_port "$nport" "${PID_OF[nginx]}" || die "nginx did not start: $BENCH_DIR/nginx.log $BENCH_DIR/nginx/error.log"
    # The proxy and its daemon.
    start_daemon proxyd "$BENCH_DIR/proxyd.sock"
    pport=$(free_port $((nport + 1)))
    # Like nginx's: no line per request (log_level "warning"; at "info" the
    # proxy logs every request), and as many idle daemon connections kept as
    # nginx keeps to its upstream (the default, 8, opens a new daemon
    # connection for most requests beyond 8 at a time: each allocation holds
    # its connection until its Release).
    cat >"$BENCH_DIR/proxy.conf" <<EOF
# Generated by bench/run.sh.
log_level = "warning";
daemon_idle_connections = 64;
listeners = ( { listen = "127.0.0.1:$pport"; upstream = "http://127.0.0.1:${PORT_OF[direct]}"; api = "openai"; } );
EOF
    "$TOKENBUDGET_PROXY" --check-config "$BENCH_DIR/proxy.conf" >/dev/null 2>&1 ||
        die "tokenbudget-proxy refuses the generated $BENCH_DIR/proxy.conf"
    "${SERVER_PIN[@]}" "$TOKENBUDGET_PROXY" --config "$BENCH_DIR/proxy.conf" --socket "$BENCH_DIR/proxyd.sock" \
        2>"$BENCH_DIR/proxy.log" &
    PID_OF[proxy]=$!
    PORT_OF[proxy]=$pport
    wait_port "$pport" "${PID_OF[proxy]}" || die "tokenbudget-proxy did not start: $BENCH_DIR/proxy.log"
    for run in $(seq "$RUNS"); do
        for conns in $PROXY_CONCURRENCY stream; do
            for t in "${PROXY_TARGETS[@]}"; do
                case $t in
                direct) pids=(--pid "${PID_OF[upstream]}") ;;
                nginx) pids=(--pid "${PID_OF[nginx]}" --pid "${PID_OF[upstream]}") ;;
                proxy) pids=(--pid "${PID_OF[proxy]}" --pid "${PID_OF[upstream]}" --pid "${PID_OF[proxyd]}") ;;
                esac
                if [ "$conns" = stream ]; then
                    line=$("${CLIENT_PIN[@]}" "$BIN/proxy-load" --port "${PORT_OF[$t]}" --conns "$PROXY_STREAM_CONNS" \
                        --stream --duration "$PROXY_STREAM_DURATION" --warmup "$WARMUP" "${pids[@]}" \
                        2>>"$BENCH_DIR/loadgen.err") ||
                        die "proxy-load (stream) against $t failed: $(tail -n 3 "$BENCH_DIR/loadgen.err")"
                else
                    line=$("${CLIENT_PIN[@]}" "$BIN/proxy-load" --port "${PORT_OF[$t]}" --conns "$conns" \
                        --duration "$PROXY_DURATION" --warmup "$WARMUP" "${pids[@]}" 2>>"$BENCH_DIR/loadgen.err") ||
                        die "proxy-load ($conns conns) against $t failed: $(tail -n 3 "$BENCH_DIR/loadgen.err")"
                fi
                R["proxy-$t $conns $run"]=$line
                echo "run=$run server=proxy-$t conns=$conns $line" >>"$RESULTS"
                check_alive
            done
        done
        echo "bench: run $run/$RUNS proxy: c1 p50 direct/nginx/proxy" \
            "$(kv p50_us "${R["proxy-direct 1 $run"]:-}")/$(kv p50_us "${R["proxy-nginx 1 $run"]:-}")/$(kv p50_us "${R["proxy-proxy 1 $run"]:-}") us" >&2
    done
    for t in proxy proxyd nginx upstream; do
        stop_server "$t"
    done
}

# pmed TARGET CONNS KEY: the median over the runs of KEY of that point.
pmed() {
    local run
    for run in $(seq "$RUNS"); do
        kv "$3" "${R["proxy-$1 $2 $run"]}"
    done | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

# padded TARGET CONNS KEY: the median over the runs of KEY(TARGET) - KEY(direct), each run's pair.
padded() {
    local run
    for run in $(seq "$RUNS"); do
        awk -v a="$(kv "$3" "${R["proxy-$1 $2 $run"]}")" -v b="$(kv "$3" "${R["proxy-direct $2 $run"]}")" \
            'BEGIN { printf "%.1f\n", a - b }'
    done | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

# pcpu TARGET CPUINDEX...: the median over the runs of the summed CPU
# (cpuN_us) of those pids per streamed token.
pcpu() {
    local t=$1 run l i sum
    shift
    for run in $(seq "$RUNS"); do
        l=${R["proxy-$t stream $run"]}
        sum=0
        for i in "$@"; do
            sum=$(awk -v a="$sum" -v b="$(kv "cpu${i}_us" "$l")" 'BEGIN { print a + b }')
        done
        awk -v a="$sum" -v n="$(kv tokens "$l")" 'BEGIN { printf "%.3f\n", (n > 0 ? a / n : 0) }'
    done | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

# pcpu_ratio WHO [KEY]: the median of the per-run ratios of the proxy's CPU
# per token (with its daemon's when WHO is "daemon") to nginx's; KEY cpu
# (utime + stime, /proc/PID/stat: the target's) or run (schedstat's
# nanosecond count; nothing when the kernel has none).
pcpu_ratio() {
    local run lp ln cp key=${2:-cpu}
    for run in $(seq "$RUNS"); do
        lp=${R["proxy-proxy stream $run"]}
        ln=${R["proxy-nginx stream $run"]}
        cp=$(kv "${key}0_us" "$lp")
        [ -n "$cp" ] || return 0
        [ "$1" != daemon ] || cp=$((cp + $(kv "${key}2_us" "$lp")))
        awk -v a="$cp" -v na="$(kv tokens "$lp")" -v b="$(kv "${key}0_us" "$ln")" -v nb="$(kv tokens "$ln")" \
            'BEGIN { printf "%.3f\n", (a / na) / (b / nb) }'
    done | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

print_proxy() {
    local conns t f tps a50 a99
    echo
    echo "proxy: tokenbudget-proxy (memory-only tokenbudgetd behind it) and nginx $(nginx -v 2>&1 | sed 's|.*/||') (plain"
    echo "  reverse proxy, keep-alive both sides, proxy_buffering off) in front of the same upstream over loopback"
    echo "  TCP; keep-alive HTTP/1.1 clients; one small POST /v1/chat/completions at a time per connection;"
    echo "  medians of $RUNS interleaved runs of $PROXY_DURATION s (streams: $PROXY_STREAM_DURATION s; after $WARMUP s warmup); added: median of"
    echo "  the per-run differences to direct"
    f='  %-6s %-7s | %9s %9s | %9s %9s | %10s\n'
    # shellcheck disable=SC2059 # the format is ours
    printf "$f" conns target "p50 us" "p99 us" "added p50" "added p99" "requests/s"
    for conns in $PROXY_CONCURRENCY; do
        for t in "${PROXY_TARGETS[@]}"; do
            a50=- a99=-
            if [ "$t" != direct ]; then
                a50=$(padded "$t" "$conns" p50_us)
                a99=$(padded "$t" "$conns" p99_us)
            fi
            # shellcheck disable=SC2059
            printf "$f" "$conns" "$t" "$(pmed "$t" "$conns" p50_us)" "$(pmed "$t" "$conns" p99_us)" "$a50" "$a99" \
                "$(fmt "$(pmed "$t" "$conns" rps)")"
        done
    done
    echo "  streaming: $PROXY_STREAM_CONNS streams at a time, $PROXY_CHUNKS content chunks (one token each) per stream, one every"
    echo "  $PROXY_INTERVAL_US us, include_usage asked by the client; CPU: utime + stime (/proc/PID/stat) over the run / tokens received"
    f='  %-7s | %12s | %14s | %14s | %15s\n'
    # shellcheck disable=SC2059
    printf "$f" target "tokens/s" "hop us/token" "daemon us/tok" "upstream us/tok"
    for t in "${PROXY_TARGETS[@]}"; do
        tps=$(awk -v n="$(pmed "$t" stream tokens)" -v d="$PROXY_STREAM_DURATION" 'BEGIN { printf "%.0f", n / d }')
        # shellcheck disable=SC2059
        case $t in
        direct) printf "$f" "$t" "$tps" - - "$(pcpu direct 0)" ;;
        nginx) printf "$f" "$t" "$tps" "$(pcpu nginx 0)" - "$(pcpu nginx 1)" ;;
        proxy) printf "$f" "$t" "$tps" "$(pcpu proxy 0)" "$(pcpu proxy 2)" "$(pcpu proxy 1)" ;;
        esac
    done
}

# padded_runs: each run's added p50 at concurrency 1, proxy/nginx.
padded_runs() {
    local run out=""
    for run in $(seq "$RUNS"); do
        out+="${out:+ }$(awk -v p="$(kv p50_us "${R["proxy-proxy 1 $run"]}")" -v n="$(kv p50_us "${R["proxy-nginx 1 $run"]}")" \
            -v d="$(kv p50_us "${R["proxy-direct 1 $run"]}")" 'BEGIN { printf "%.1f/%.1f", p - d, n - d }')"
    done
    echo "$out"
}

print_proxy_targets() {
    local ap an r
    ap=$(padded proxy 1 p50_us)
    an=$(padded nginx 1 p50_us)
    echo "  proxy: added p50 at concurrency 1 <= 2x nginx's: $ap us against $an us:" \
        "$(verdict "$ap <= 2 * $an")"
    echo "    (per run, added p50 us proxy/nginx: $(padded_runs))"
    echo "  proxy: added p50 at concurrency 1 <= 200 us: $ap us: $(verdict "$ap <= 200")"
    r=$(pcpu_ratio daemon)
    echo "  proxy: streaming CPU per token (the proxy's + its daemon's) <= 1.05x nginx's: ${r}x: $(verdict "$r <= 1.05")"
    echo "    (the proxy alone: $(pcpu_ratio proxy)x; from schedstat's nanosecond counts instead of 10 ms ticks:" \
        "$(pcpu_ratio daemon run)x, the proxy alone $(pcpu_ratio proxy run)x)"
}

main() {
    local name
    [ "$(id -u)" -eq 0 ] || echo "bench: not root: cannot install packages or raise limits" >&2
    for name in $SECTIONS; do
        [[ $name =~ ^(matrix|durable|scale|scopes|rules|queue|estimate|proxy)$ ]] || die "BENCH_SECTIONS: unknown section '$name'"
    done
    install_deps
    build
    BUILT_SEC=$SECONDS
    write_configs
    : >"$RESULTS"
    NEW_DAEMON_NOTE=${NEW_DAEMON_NOTE:-}
    setup_cgroup
    [ -z "$CGROUP_NOTE" ] || echo "bench: no unit scope: $CGROUP_NOTE" >&2

    # The idle daemon: exec -> READY five times, the last one kept running
    # untouched through the whole run to count its wakeups.
    if section scale; then
        start_daemon idle "$BENCH_DIR/idle.sock" 5
        READY_IDLE=$READY_LINE
        sleep 1
        IDLE0=$(ctxt_switches "${PID_OF[idle]}")
        IDLE_T0=$SECONDS
    fi
    ! section matrix || timed matrix matrix_section
    [ -n "$DURABLE_NOTE" ] || ! section durable || timed durable durable_section
    [ -z "$NEW_DAEMON" ] || ! section scopes || timed scopes scopes_section
    [ -z "$NEW_DAEMON" ] || ! section rules || timed rules rules_section
    [ -z "$NEW_DAEMON" ] || ! section queue || timed queue queue_section
    ! section scale || timed scale scale_section
    ! section estimate || timed estimate estimate_section
    ! section proxy || timed proxy proxy_section

    {
        if section matrix; then
            print_table
            [ -z "$BASELINE" ] || print_baseline
        fi
        [ -n "$DURABLE_NOTE" ] || ! section durable || print_durable
        ! section scale || print_scale
        [ -z "$NEW_DAEMON" ] || ! section scopes || print_scopes
        [ -z "$NEW_DAEMON" ] || ! section rules || print_rules
        [ -z "$NEW_DAEMON" ] || ! section queue || print_queue
        ! section estimate || print_estimate
        ! section proxy || print_proxy
        print_targets
        echo
        echo "raw results: $RESULTS (kept with BENCH_KEEP=1); reproduce: bench/run.sh"
    } | tee "$BENCH_DIR/table.txt"
}

main "$@"
