/* SPDX-License-Identifier: MIT */
/*
 * loadgen: the load generator of the benchmark. One thread, epoll over N
 * non-blocking Unix stream connections, each running Request -> Report x k ->
 * Release cycles in strict request/reply (one call outstanding per
 * connection). It speaks raw Varlink (tokenbudgetd and the floor echo server)
 * or RESP EVALSHA (Redis with the bench Lua scripts), so one program drives
 * every server and the numbers compare. Latencies go into log-linear
 * histograms (128 sub-buckets per power of two: under 1% error, no
 * allocation on the hot path). Server CPU comes from /proc/PID/stat.
 *
 * Extra modes for the cost-of-scale measurements: --hold M opens M
 * allocations on one extra connection before the run (and reports the
 * server's RSS growth), --cycles-per-conn C stops every connection after C
 * cycles and reports the server's RSS with the connections left idle,
 * --capture prints the sizes of one real cycle's replies (for the floor) and
 * --scopes the budgets the daemon charges one allocation to (from admin
 * Status while the allocation is open), so the bench states what it measured.
 * --agent NAME sets the agent name the Requests declare ("": none).
 *
 * Lockstep: with --socket given several times (up to TARGETS_MAX servers),
 * one connection per server and exactly one call outstanding in all: a
 * cycle on server 0, then one on server 1, ..., then server 0 again. Every
 * server then sees the same moments of this shared host (a preempted stretch
 * hits all of them alike), which time-sliced runs seconds apart cannot give
 * for latency. --server-pid and --hold may be repeated in the same order
 * (a different number of open allocations per server). One output line per
 * server, with target=I; cycles_per_sec is then the rate while it was
 * served (cycles over the time its cycles took), what it would do alone.
 *
 * What it does not do: validate replies beyond what it needs (the allocation
 * id, whether it is an error), or speak any Varlink feature but plain calls.
 * Output is one line of key=value pairs for bench/run.sh.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define NSEC_PER_SEC UINT64_C(1000000000)
/* Largest reply we expect: the daemon's replies are ~100 bytes, Redis' ~40. */
#define IN_MAX_BYTES  4096
#define OUT_MAX_BYTES 1024
/* Requests written at once by --hold: enough to amortise syscalls, small
 * enough that the replies fit the socket buffer. */
#define HOLD_BATCH  256
#define EPOLL_BATCH 512
/* Servers one lockstep run alternates between. */
#define TARGETS_MAX 8

/* Log-linear histogram: exact below 128 ns, then 128 buckets per power of two. */
#define HIST_SUB_BITS 7
#define HIST_SUB      (1u << HIST_SUB_BITS)
#define HIST_BUCKETS  ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

/* What the bench asks for: a grant of 1000 tokens, reports of 400 tokens
 * each (300 in, 100 out: under warnAt, so every reply is "ok"), and a final
 * release one step further, so Report and Release both commit usage. */
#define ESTIMATE_TOKENS    1000
#define STEP_INPUT_TOKENS  300
#define STEP_OUTPUT_TOKENS 100

typedef enum Proto {
        PROTO_VARLINK,
        PROTO_RESP,
} Proto;

typedef enum CallKind {
        CALL_REQUEST,
        CALL_REPORT,
        CALL_RELEASE,
        _CALL_MAX,
} CallKind;

static const char *const call_names[_CALL_MAX] = {"request", "report", "release"};

typedef struct Histogram {
        uint64_t count;
        uint64_t buckets[HIST_BUCKETS];
} Histogram;

typedef struct Options {
        Proto proto;
        const char *socket_paths[TARGETS_MAX];
        unsigned n_targets; /* sockets given; > 1: lockstep */
        unsigned n_conns;
        unsigned n_reports;
        double warmup_sec;
        double duration_sec;
        pid_t server_pids[TARGETS_MAX];
        unsigned n_server_pids;
        const char *sha[_CALL_MAX];
        unsigned holds[TARGETS_MAX]; /* allocations to hold open per server */
        unsigned n_holds;
        unsigned cycles_per_conn;
        bool capture;
        bool scopes;
        const char *agent;     /* declared in every Request; "" or NULL: none */
        uint64_t limit_tokens; /* the limits passed to the Redis reserve script */
} Options;

typedef struct Conn {
        int fd;
        unsigned index;
        unsigned target;     /* which server (lockstep), else 0 */
        CallKind call;       /* the call outstanding */
        unsigned n_reported; /* reports done in this cycle */
        uint64_t n_cycles;   /* cycles completed */
        uint64_t call_start_nsec;
        uint64_t cycle_start_nsec;
        char alloc_id[64];
        char out[OUT_MAX_BYTES];
        size_t out_len, out_off;
        char in[IN_MAX_BYTES];
        size_t in_len;
        bool idle;
} Conn;

typedef struct Stats {
        uint64_t cycles, calls, errors;
        uint64_t cycle_nsec; /* the time the measured cycles took, summed */
        Histogram cycle, call, per_call[_CALL_MAX];
} Stats;

/* What --hold did to one server. */
typedef struct HoldResult {
        unsigned count;
        uint64_t errors, rss0_kib, rss1_kib;
        int fd;
} HoldResult;

typedef struct Run {
        const Options *opt;
        int epoll_fd;
        Conn *conns;
        unsigned n_conns; /* opt->n_conns, or one per server in lockstep */
        bool lockstep;
        unsigned n_idle;
        bool measuring;
        Stats *stats; /* one per server */
        HoldResult holds[TARGETS_MAX];
        char last_error[256];
        pid_t self_pid;
} Run;

static uint64_t now_nsec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}

/* --- histogram --- */

static unsigned hist_index(uint64_t v) {
        unsigned e;

        if (v < HIST_SUB)
                return (unsigned)v;
        e = 63u - (unsigned)__builtin_clzll(v); /* >= HIST_SUB_BITS */
        return (e - HIST_SUB_BITS + 1) * HIST_SUB + (unsigned)((v >> (e - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

/* The middle of bucket idx, in the unit of the recorded values. */
static double hist_value(unsigned idx) {
        unsigned e, sub;
        uint64_t width;

        if (idx < HIST_SUB)
                return idx;
        e = idx / HIST_SUB + HIST_SUB_BITS - 1;
        sub = idx % HIST_SUB;
        width = UINT64_C(1) << (e - HIST_SUB_BITS);
        return (double)((HIST_SUB + sub) * width) + (double)(width - 1) / 2.0;
}

static void hist_record(Histogram *h, uint64_t v) {
        h->buckets[hist_index(v)]++;
        h->count++;
}

/* The q-quantile (0 < q <= 1) in microseconds; 0 for an empty histogram. */
static double hist_quantile_usec(const Histogram *h, double q) {
        uint64_t target, seen = 0;

        if (h->count == 0)
                return 0;
        target = (uint64_t)(q * (double)h->count + 0.999999);
        if (target < 1)
                target = 1;
        for (unsigned i = 0; i < HIST_BUCKETS; i++) {
                seen += h->buckets[i];
                if (seen >= target)
                        return hist_value(i) / 1000.0;
        }
        return hist_value(HIST_BUCKETS - 1) / 1000.0;
}

/* --- /proc --- */

/* utime + stime of pid (all its threads), in microseconds. */
static int proc_cpu_usec(pid_t pid, uint64_t *ret) {
        char path[64], buf[1024];
        unsigned long utime, stime;
        const char *p;
        ssize_t n;
        int fd;

        snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return -EIO;
        buf[n] = 0;
        p = strrchr(buf, ')');
        if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
                return -EBADMSG;
        *ret = (uint64_t)(utime + stime) * 1000000u / (uint64_t)sysconf(_SC_CLK_TCK);
        return 0;
}

/* VmRSS of pid in KiB. */
static int proc_rss_kib(pid_t pid, uint64_t *ret) {
        char path[64], line[256];
        FILE *f;
        int r = -ENOENT;

        snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
        f = fopen(path, "re");
        if (!f)
                return -errno;
        while (fgets(line, sizeof(line), f))
                if (sscanf(line, "VmRSS: %" SCNu64, ret) == 1) {
                        r = 0;
                        break;
                }
        fclose(f);
        return r;
}

static uint64_t self_cpu_usec(void) {
        struct rusage ru;

        getrusage(RUSAGE_SELF, &ru);
        return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
               (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* --- messages --- */

static size_t resp_append(char *buf, size_t size, size_t off, const char *arg) {
        size_t len = strlen(arg);
        int n = snprintf(buf + off, size - off, "$%zu\r\n%s\r\n", len, arg);

        return n < 0 ? size : off + (size_t)n;
}

/* One RESP command from argv; returns its length, or 0 when it does not fit. */
static size_t resp_command(char *buf, size_t size, unsigned argc, const char *const *argv) {
        int n = snprintf(buf, size, "*%u\r\n", argc);
        size_t off = (size_t)n;

        for (unsigned i = 0; i < argc && off < size; i++)
                off = resp_append(buf, size, off, argv[i]);
        return off < size ? off : 0;
}

static void tokens_at_step(unsigned step, uint64_t *ret_input, uint64_t *ret_output) {
        *ret_input = (uint64_t)step * STEP_INPUT_TOKENS;
        *ret_output = (uint64_t)step * STEP_OUTPUT_TOKENS;
}

/* The agent name of every Request (set once from --agent; NULL: none). It
 * must need no JSON escaping: parse_options() allows [A-Za-z0-9_.-]. */
static const char *request_agent = "loadgen";

static size_t varlink_message(const Conn *c, char *buf, size_t size) {
        uint64_t input, output;
        int n;

        switch (c->call) {
        case CALL_REQUEST:
                n = snprintf(buf, size,
                             "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":%d,"
                             "%s%s%s\"class\":\"bench\"}}",
                             ESTIMATE_TOKENS, request_agent ? "\"agent\":\"" : "", request_agent ?: "",
                             request_agent ? "\"," : "");
                break;
        case CALL_REPORT:
                tokens_at_step(c->n_reported + 1, &input, &output);
                n = snprintf(
                        buf, size,
                        "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":\"%s\","
                        "\"inputTokens\":%" PRIu64 ",\"outputTokens\":%" PRIu64 "}}",
                        c->alloc_id, input, output);
                break;
        default:
                tokens_at_step(c->n_reported + 1, &input, &output);
                n = snprintf(
                        buf, size,
                        "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%s\","
                        "\"inputTokens\":%" PRIu64 ",\"outputTokens\":%" PRIu64 "}}",
                        c->alloc_id, input, output);
                break;
        }
        if (n < 0 || (size_t)n + 1 > size)
                return 0;
        return (size_t)n + 1; /* with the NUL that ends a Varlink message */
}

/* EVALSHA sha 4 scope scope scope alloc args...: the three scopes of the
 * Redis model (global, user, process) plus the allocation's hash. */
static size_t resp_message(const Run *run, const Conn *c, char *buf, size_t size) {
        const Options *opt = run->opt;
        char process_key[64], alloc_key[96], a1[32], a2[32], lim[32];
        uint64_t input, output;
        const char *argv[16];
        unsigned argc = 0;

        snprintf(process_key, sizeof(process_key), "tb:s:process:%d", (int)run->self_pid);
        snprintf(alloc_key, sizeof(alloc_key), "tb:a:%s", c->alloc_id);
        argv[argc++] = "EVALSHA";
        argv[argc++] = opt->sha[c->call];
        argv[argc++] = "4";
        argv[argc++] = "tb:s:global";
        argv[argc++] = "tb:s:user:0";
        argv[argc++] = process_key;
        argv[argc++] = alloc_key;
        if (c->call == CALL_REQUEST) {
                snprintf(a1, sizeof(a1), "%d", ESTIMATE_TOKENS);
                snprintf(lim, sizeof(lim), "%" PRIu64, opt->limit_tokens);
                argv[argc++] = a1;
                argv[argc++] = "1500";           /* warn multiplier, permille */
                argv[argc++] = "2000";           /* hard multiplier, permille */
                for (unsigned i = 0; i < 4; i++) /* minute, hour, day, in flight */
                        argv[argc++] = lim;
        } else {
                tokens_at_step(c->n_reported + 1, &input, &output);
                snprintf(a1, sizeof(a1), "%" PRIu64, input);
                snprintf(a2, sizeof(a2), "%" PRIu64, output);
                argv[argc++] = a1;
                argv[argc++] = a2;
        }
        return resp_command(buf, size, argc, argv);
}

/* Length of the complete RESP value at p, 0 when incomplete, -EBADMSG when
 * malformed; *is_error is set when it is or holds an error. */
static ssize_t resp_parse(const char *p, size_t n, bool *is_error) {
        const char *crlf;
        size_t line, off;
        long count;

        if (n == 0)
                return 0;
        crlf = memmem(p, n, "\r\n", 2);
        if (!crlf)
                return 0;
        line = (size_t)(crlf - p) + 2;
        switch (p[0]) {
        case '-':
                *is_error = true;
                return (ssize_t)line;
        case '+':
        case ':':
                return (ssize_t)line;
        case '$':
                count = strtol(p + 1, NULL, 10);
                if (count < 0)
                        return (ssize_t)line;
                return n < line + (size_t)count + 2 ? 0 : (ssize_t)(line + (size_t)count + 2);
        case '*':
                count = strtol(p + 1, NULL, 10);
                off = line;
                for (long i = 0; i < count; i++) {
                        ssize_t r = resp_parse(p + off, n - off, is_error);
                        if (r <= 0)
                                return r;
                        off += (size_t)r;
                }
                return (ssize_t)off;
        default:
                return -EBADMSG;
        }
}

/* --- connections --- */

static int connect_unix(const char *path, bool nonblocking, int *ret_fd) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* Blocking connect: with thousands of connections the listen backlog
         * fills, and a blocking connect waits where a non-blocking one fails. */
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        if (nonblocking && fcntl(fd, F_SETFL, O_NONBLOCK) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        *ret_fd = fd;
        return 0;
}

static int conn_flush(Run *run, Conn *c) {
        while (c->out_off < c->out_len) {
                ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
                if (n < 0) {
                        if (errno == EAGAIN) {
                                struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                                return epoll_ctl(run->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0 ? -errno : 0;
                        }
                        return -errno;
                }
                c->out_off += (size_t)n;
        }
        return 0;
}

static int conn_send(Run *run, Conn *c, uint64_t now) {
        size_t len = run->opt->proto == PROTO_VARLINK ? varlink_message(c, c->out, sizeof(c->out))
                                                      : resp_message(run, c, c->out, sizeof(c->out));

        if (len == 0)
                return -ENOBUFS;
        c->out_len = len;
        c->out_off = 0;
        c->call_start_nsec = now;
        return conn_flush(run, c);
}

static int conn_start_cycle(Run *run, Conn *c, uint64_t now) {
        c->call = CALL_REQUEST;
        c->n_reported = 0;
        c->cycle_start_nsec = now;
        if (run->opt->proto == PROTO_RESP)
                /* Redis allocation ids come from the client, as gateways use request ids. */
                snprintf(c->alloc_id, sizeof(c->alloc_id), "%d-%u-%" PRIu64, (int)run->self_pid, c->index,
                         c->n_cycles);
        return conn_send(run, c, now);
}

/* Copies the daemon's allocation id out of a Request reply. */
static int varlink_alloc_id(const char *msg, char *id, size_t size) {
        static const char key[] = "\"allocation\":\"";
        const char *p = strstr(msg, key), *end;

        if (!p)
                return -EBADMSG;
        p += sizeof(key) - 1;
        end = strchr(p, '"');
        if (!end || (size_t)(end - p) >= size)
                return -EBADMSG;
        memcpy(id, p, (size_t)(end - p));
        id[end - p] = 0;
        return 0;
}

static void record_call(Run *run, const Conn *c, uint64_t now) {
        uint64_t lat = now - c->call_start_nsec;

        if (!run->measuring)
                return;
        run->stats[c->target].calls++;
        hist_record(&run->stats[c->target].call, lat);
        hist_record(&run->stats[c->target].per_call[c->call], lat);
}

static void record_cycle(Run *run, const Conn *c, uint64_t now) {
        if (!run->measuring)
                return;
        run->stats[c->target].cycles++;
        run->stats[c->target].cycle_nsec += now - c->cycle_start_nsec;
        hist_record(&run->stats[c->target].cycle, now - c->cycle_start_nsec);
}

/* Counts an error reply; the cycle is abandoned and a new one starts (the
 * connection keeps whatever the server holds for it). */
static void record_error(Run *run, const Conn *c, const char *msg) {
        run->stats[c->target].errors++;
        if (run->last_error[0] == 0)
                snprintf(run->last_error, sizeof(run->last_error), "error reply: %.200s", msg);
}

static int conn_next(Run *run, Conn *c, uint64_t now) {
        c->n_cycles++;
        if (run->lockstep) /* the next server's turn */
                return conn_start_cycle(run, &run->conns[(c->index + 1) % run->n_conns], now);
        if (run->opt->cycles_per_conn > 0 && c->n_cycles >= run->opt->cycles_per_conn) {
                c->idle = true;
                run->n_idle++;
                return 0;
        }
        return conn_start_cycle(run, c, now);
}

/* A complete reply to c's outstanding call. */
static int conn_on_reply(Run *run, Conn *c, const char *msg, bool is_error, uint64_t now) {
        record_call(run, c, now);
        if (is_error) {
                record_error(run, c, msg);
                return conn_start_cycle(run, c, now);
        }
        switch (c->call) {
        case CALL_REQUEST:
                if (run->opt->proto == PROTO_VARLINK &&
                    varlink_alloc_id(msg, c->alloc_id, sizeof(c->alloc_id)) < 0) {
                        record_error(run, c, msg);
                        return conn_start_cycle(run, c, now);
                }
                c->call = run->opt->n_reports > 0 ? CALL_REPORT : CALL_RELEASE;
                return conn_send(run, c, now);
        case CALL_REPORT:
                c->n_reported++;
                if (c->n_reported >= run->opt->n_reports)
                        c->call = CALL_RELEASE;
                return conn_send(run, c, now);
        default:
                record_cycle(run, c, now);
                return conn_next(run, c, now);
        }
}

/* Splits c->in into complete replies; leaves a partial one in place. */
static int conn_process_input(Run *run, Conn *c, uint64_t now) {
        size_t off = 0;
        int r = 0;

        while (off < c->in_len && r >= 0) {
                char *msg = c->in + off;
                size_t avail = c->in_len - off, len;
                bool is_error = false;

                if (run->opt->proto == PROTO_VARLINK) {
                        char *nul = memchr(msg, 0, avail);
                        if (!nul)
                                break;
                        len = (size_t)(nul - msg) + 1;
                        is_error = strstr(msg, "\"error\"") != NULL;
                } else {
                        ssize_t n = resp_parse(msg, avail, &is_error);
                        if (n < 0)
                                return (int)n;
                        if (n == 0)
                                break;
                        len = (size_t)n;
                        if (is_error)
                                msg[len - 2] = 0; /* for the message only */
                }
                off += len;
                r = conn_on_reply(run, c, msg, is_error, now);
        }
        if (off > 0) {
                memmove(c->in, c->in + off, c->in_len - off);
                c->in_len -= off;
        }
        return r;
}

static int conn_on_event(Run *run, Conn *c, uint32_t events) {
        if (events & EPOLLOUT) {
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                int r = conn_flush(run, c);
                if (r < 0)
                        return r;
                if (c->out_off == c->out_len && epoll_ctl(run->epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
                        return -errno;
        }
        if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
                ssize_t n = read(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len);
                if (n == 0)
                        return -ECONNRESET;
                if (n < 0)
                        return errno == EAGAIN ? 0 : -errno;
                c->in_len += (size_t)n;
                if (c->in_len == sizeof(c->in))
                        return -EMSGSIZE;
                return conn_process_input(run, c, now_nsec());
        }
        return 0;
}

/* --- runs --- */

static int run_open(Run *run) {
        const Options *opt = run->opt;

        run->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
        if (run->epoll_fd < 0)
                return -errno;
        run->conns = calloc(run->n_conns, sizeof(Conn));
        if (!run->conns)
                return -ENOMEM;
        for (unsigned i = 0; i < run->n_conns; i++) {
                Conn *c = &run->conns[i];
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                int r;

                c->index = i;
                c->target = run->lockstep ? i : 0;
                r = connect_unix(opt->socket_paths[c->target], true, &c->fd);
                if (r < 0) {
                        fprintf(stderr, "loadgen: connection %u to %s: %s\n", i,
                                opt->socket_paths[c->target], strerror(-r));
                        return r;
                }
                if (epoll_ctl(run->epoll_fd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
                        return -errno;
        }
        return 0;
}

static void run_close(Run *run) {
        if (run->conns)
                for (unsigned i = 0; i < run->n_conns; i++)
                        if (run->conns[i].fd > 0)
                                close(run->conns[i].fd);
        free(run->conns);
        run->conns = NULL;
        if (run->epoll_fd >= 0)
                close(run->epoll_fd);
        run->epoll_fd = -1;
}

/* Runs the event loop until deadline (or until every connection is idle). */
static int run_loop(Run *run, uint64_t deadline) {
        struct epoll_event events[EPOLL_BATCH];

        for (;;) {
                uint64_t now = now_nsec();
                int n, timeout_msec;

                if (now >= deadline || (run->n_conns > 0 && run->n_idle == run->n_conns))
                        return 0;
                timeout_msec = (int)((deadline - now + 999999) / 1000000);
                n = epoll_wait(run->epoll_fd, events, EPOLL_BATCH, timeout_msec);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return -errno;
                }
                for (int i = 0; i < n; i++) {
                        Conn *c = events[i].data.ptr;
                        int r = conn_on_event(run, c, events[i].events);
                        if (r < 0) {
                                fprintf(stderr, "loadgen: connection %u: %s\n", c->index, strerror(-r));
                                return r;
                        }
                }
        }
}

static void print_quantiles(const char *name, const Histogram *h) {
        printf(" %s_p50_us=%.1f %s_p99_us=%.1f %s_p999_us=%.1f", name, hist_quantile_usec(h, 0.50), name,
               hist_quantile_usec(h, 0.99), name, hist_quantile_usec(h, 0.999));
}

static void print_results(const Run *run, unsigned target, double elapsed_sec, int64_t server_cpu_usec,
                          uint64_t client_cpu_usec) {
        const Stats *st = &run->stats[target];
        const HoldResult *h = &run->holds[target];
        double cycles = st->cycles > 0 ? (double)st->cycles : 1.0;
        /* In lockstep a server is served only part of the time: its rate is
         * over the time its own cycles took. */
        double served_sec = run->lockstep ? (double)st->cycle_nsec / 1e9 : elapsed_sec;

        if (served_sec <= 0)
                served_sec = elapsed_sec;
        if (run->lockstep)
                printf("target=%u lockstep=%u ", target, run->n_conns);
        if (h->count > 0)
                printf("hold=%u hold_errors=%" PRIu64 " hold_rss_before_kib=%" PRIu64
                       " hold_rss_after_kib=%" PRIu64 " hold_bytes_per_alloc=%.0f ",
                       h->count, h->errors, h->rss0_kib, h->rss1_kib,
                       ((double)h->rss1_kib - (double)h->rss0_kib) * 1024.0 / h->count);
        printf("proto=%s conns=%u reports=%u duration_s=%.3f cycles=%" PRIu64 " calls=%" PRIu64
               " errors=%" PRIu64 " cycles_per_sec=%.0f calls_per_sec=%.0f",
               run->opt->proto == PROTO_VARLINK ? "varlink" : "resp", run->lockstep ? 1 : run->n_conns,
               run->opt->n_reports, elapsed_sec, st->cycles, st->calls, st->errors,
               (double)st->cycles / served_sec, (double)st->calls / served_sec);
        print_quantiles("cycle", &st->cycle);
        print_quantiles("call", &st->call);
        for (CallKind k = 0; k < _CALL_MAX; k++)
                print_quantiles(call_names[k], &st->per_call[k]);
        if (server_cpu_usec >= 0)
                printf(" server_cpu_us_per_cycle=%.2f server_cpu_util=%.2f",
                       (double)server_cpu_usec / cycles, (double)server_cpu_usec / 1e6 / elapsed_sec);
        printf(" client_cpu_us_per_cycle=%.2f client_cpu_util=%.2f\n", (double)client_cpu_usec / cycles,
               (double)client_cpu_usec / 1e6 / elapsed_sec);
}

static int run_timed(Run *run) {
        const Options *opt = run->opt;
        uint64_t start, measure_start, end, cpu0[TARGETS_MAX], cpu1[TARGETS_MAX], self0, self_usec;
        bool have_cpu[TARGETS_MAX];
        int r;

        start = now_nsec();
        /* Lockstep: one cycle outstanding, passed on from server to server. */
        for (unsigned i = 0; i < (run->lockstep ? 1 : run->n_conns); i++) {
                r = conn_start_cycle(run, &run->conns[i], start);
                if (r < 0)
                        return r;
        }
        r = run_loop(run, start + (uint64_t)(opt->warmup_sec * 1e9));
        if (r < 0)
                return r;

        memset(run->stats, 0, sizeof(Stats) * opt->n_targets);
        run->measuring = true;
        for (unsigned t = 0; t < opt->n_targets; t++)
                have_cpu[t] = opt->server_pids[t] > 0 && proc_cpu_usec(opt->server_pids[t], &cpu0[t]) >= 0;
        self0 = self_cpu_usec();
        measure_start = now_nsec();
        r = run_loop(run, measure_start + (uint64_t)(opt->duration_sec * 1e9));
        if (r < 0)
                return r;
        end = now_nsec();
        run->measuring = false;
        self_usec = self_cpu_usec() - self0;
        for (unsigned t = 0; t < opt->n_targets; t++)
                if (have_cpu[t] && proc_cpu_usec(opt->server_pids[t], &cpu1[t]) < 0)
                        have_cpu[t] = false;

        for (unsigned t = 0; t < opt->n_targets; t++) {
                /* loadgen's CPU is shared out by cycles in lockstep. */
                uint64_t all = 0, client;

                for (unsigned u = 0; u < opt->n_targets; u++)
                        all += run->stats[u].cycles;
                client = run->lockstep && all > 0 ? self_usec * run->stats[t].cycles / all : self_usec;
                print_results(run, t, (double)(end - measure_start) / 1e9,
                              have_cpu[t] ? (int64_t)(cpu1[t] - cpu0[t]) : -1, client);
        }
        if (run->last_error[0])
                fprintf(stderr, "loadgen: first error: %s\n", run->last_error);
        return 0;
}

/* --cycles-per-conn: every connection does its cycles, then stays open
 * while the server's RSS is read. */
static int run_until_idle(Run *run) {
        const Options *opt = run->opt;
        uint64_t rss0 = 0, rss1 = 0, start;
        int r;

        if (opt->server_pids[0] <= 0 || proc_rss_kib(opt->server_pids[0], &rss0) < 0)
                return -ESRCH;
        r = run_open(run);
        if (r < 0)
                return r;
        start = now_nsec();
        for (unsigned i = 0; i < opt->n_conns; i++) {
                r = conn_start_cycle(run, &run->conns[i], start);
                if (r < 0)
                        return r;
        }
        r = run_loop(run, start + 120 * NSEC_PER_SEC);
        if (r < 0)
                return r;
        if (run->n_idle != opt->n_conns)
                return -ETIMEDOUT;
        r = proc_rss_kib(opt->server_pids[0], &rss1);
        if (r < 0)
                return r;
        printf("idle_conns=%u errors=%" PRIu64 " rss_before_kib=%" PRIu64 " rss_after_kib=%" PRIu64
               " bytes_per_conn=%.0f\n",
               opt->n_conns, run->stats[0].errors, rss0, rss1,
               ((double)rss1 - (double)rss0) * 1024.0 / opt->n_conns);
        return 0;
}

/* Reads until `want` complete Varlink replies arrived on a blocking fd. */
static int hold_read_replies(int fd, unsigned want, uint64_t *errors) {
        static char buf[65536];
        static size_t len;
        unsigned got = 0;

        while (got < want) {
                ssize_t n = read(fd, buf + len, sizeof(buf) - len);
                size_t off = 0;
                if (n <= 0)
                        return n == 0 ? -ECONNRESET : -errno;
                len += (size_t)n;
                for (char *nul; off < len && (nul = memchr(buf + off, 0, len - off));
                     off = (size_t)(nul - buf) + 1) {
                        if (strstr(buf + off, "\"error\""))
                                (*errors)++;
                        got++;
                }
                memmove(buf, buf + off, len - off);
                len -= off;
        }
        return 0;
}

/* --hold: opens count allocations on server t on one extra connection
 * (kept open for the run), in pipelined batches; notes the server's RSS
 * growth in *h. */
static int hold_allocations(const Options *opt, unsigned t, unsigned count, HoldResult *h) {
        static char batch[HOLD_BATCH * 256];
        Conn proto = {.call = CALL_REQUEST};
        pid_t pid = opt->server_pids[t];
        size_t one;
        int fd, r;

        *h = (HoldResult){.count = count, .fd = -1};
        if (pid <= 0 || proc_rss_kib(pid, &h->rss0_kib) < 0)
                return -ESRCH;
        r = connect_unix(opt->socket_paths[t], false, &fd);
        if (r < 0)
                return r;
        h->fd = fd;
        one = varlink_message(&proto, batch, 256);
        for (unsigned i = 1; i < HOLD_BATCH; i++)
                memcpy(batch + i * one, batch, one);
        for (unsigned done = 0; done < count;) {
                unsigned k = count - done < HOLD_BATCH ? count - done : HOLD_BATCH;
                if (write(fd, batch, k * one) != (ssize_t)(k * one))
                        return -EIO;
                r = hold_read_replies(fd, k, &h->errors);
                if (r < 0)
                        return r;
                done += k;
        }
        r = proc_rss_kib(pid, &h->rss1_kib);
        if (r < 0)
                return r;
        return h->errors > 0 ? -EDQUOT : 0;
}

/* Writes one Varlink message (len bytes with its NUL) on a blocking fd and
 * reads the reply into buf (NUL-terminated); -EMSGSIZE when it does not fit. */
static int call_blocking(int fd, const char *msg, size_t len, char *buf, size_t size, size_t *ret_len) {
        size_t got = 0;

        if (write(fd, msg, len) != (ssize_t)len)
                return -EIO;
        while (got == 0 || buf[got - 1] != 0) {
                ssize_t n;

                if (got == size)
                        return -EMSGSIZE;
                n = read(fd, buf + got, size - got);
                if (n <= 0)
                        return n == 0 ? -ECONNRESET : -errno;
                got += (size_t)n;
        }
        *ret_len = got;
        return 0;
}

/* --capture: one real cycle, blocking; prints request and reply sizes
 * (with the NUL) so the floor answers with the daemon's sizes. */
static int capture(const Options *opt) {
        Conn c = {.call = CALL_REQUEST};
        size_t req[_CALL_MAX], rep[_CALL_MAX];
        int fd, r;

        r = connect_unix(opt->socket_paths[0], false, &fd);
        if (r < 0)
                return r;
        for (CallKind k = 0; k < _CALL_MAX; k++) {
                char in[IN_MAX_BYTES];

                c.call = k;
                req[k] = varlink_message(&c, c.out, sizeof(c.out));
                r = call_blocking(fd, c.out, req[k], in, sizeof(in), &rep[k]);
                if (r < 0)
                        return r;
                fprintf(stderr, "loadgen: %s -> %s\n", c.out, in);
                if (strstr(in, "\"error\""))
                        return -EBADMSG;
                if (k == CALL_REQUEST && varlink_alloc_id(in, c.alloc_id, sizeof(c.alloc_id)) < 0)
                        return -EBADMSG;
                if (k == CALL_REPORT)
                        c.n_reported = 1; /* the release then carries the next step's totals */
        }
        close(fd);
        printf("request_sizes=%zu,%zu,%zu reply_sizes=%zu,%zu,%zu\n", req[0], req[1], req[2], rep[0], rep[1],
               rep[2]);
        return 0;
}

/* --- a minimal JSON walk, for --scopes only --- */

static const char *json_ws(const char *p) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
                p++;
        return p;
}

/* Past the string starting at p (at its '"'); NULL when unterminated. */
static const char *json_skip_string(const char *p) {
        for (p++; *p && *p != '"'; p++)
                if (*p == '\\' && !*++p)
                        return NULL;
        return *p ? p + 1 : NULL;
}

/* Past the value starting at p; NULL when malformed. */
static const char *json_skip_value(const char *p) {
        unsigned depth = 0;

        do {
                p = json_ws(p);
                if (*p == '"')
                        p = json_skip_string(p);
                else if (*p == '{' || *p == '[')
                        depth++, p++;
                else if (*p == '}' || *p == ']')
                        depth--, p++;
                else if (*p == ',' || *p == ':')
                        p++;
                else if (*p) {
                        p += strcspn(p, ",}] \t\r\n");
                } else
                        return NULL;
        } while (p && depth > 0);
        return p;
}

/* One Scope object at p: its name (copied to name, empty when absent) and its
 * allocations; returns the position after the object, NULL when malformed. */
static const char *json_scope(const char *p, char *name, size_t size, uint64_t *ret_allocations) {
        name[0] = 0;
        *ret_allocations = 0;
        p = json_ws(p);
        if (*p++ != '{')
                return NULL;
        for (;;) {
                const char *key, *key_end;

                p = json_ws(p);
                if (*p == '}')
                        return p + 1;
                if (*p == ',')
                        p = json_ws(p + 1);
                if (*p != '"')
                        return NULL;
                key = p + 1;
                key_end = json_skip_string(p);
                if (!key_end || *(p = json_ws(key_end)) != ':')
                        return NULL;
                p = json_ws(p + 1);
                if (key_end - key == 5 && memcmp(key, "name\"", 5) == 0 && *p == '"') {
                        const char *end = json_skip_string(p);
                        if (!end || (size_t)(end - p - 2) >= size)
                                return NULL;
                        memcpy(name, p + 1, (size_t)(end - p - 2));
                        name[end - p - 2] = 0;
                        p = end;
                        continue;
                }
                if (key_end - key == 12 && memcmp(key, "allocations\"", 12) == 0)
                        *ret_allocations = strtoull(p, NULL, 10);
                p = json_skip_value(p);
                if (!p)
                        return NULL;
        }
}

/* --scopes: opens one allocation, asks admin Status which scopes hold an
 * open allocation (ours is the only one: run it on an idle daemon), releases
 * it; prints scopes=N scope_names=a,b,... in Status' order. */
static int scopes(const Options *opt) {
        static const char status[] = "{\"method\":\"io.tokenbudget.admin.Status\",\"parameters\":{}}";
        static char in[1 << 20];
        Conn c = {.call = CALL_REQUEST};
        char names[4096] = "", name[256];
        unsigned n_scopes = 0;
        const char *p;
        size_t len;
        int fd, r;

        r = connect_unix(opt->socket_paths[0], false, &fd);
        if (r < 0)
                return r;
        len = varlink_message(&c, c.out, sizeof(c.out));
        r = call_blocking(fd, c.out, len, in, sizeof(in), &len);
        if (r < 0)
                return r;
        if (strstr(in, "\"error\"") || varlink_alloc_id(in, c.alloc_id, sizeof(c.alloc_id)) < 0) {
                fprintf(stderr, "loadgen: Request -> %s\n", in);
                return -EBADMSG;
        }
        r = call_blocking(fd, status, sizeof(status), in, sizeof(in), &len);
        if (r < 0)
                return r;
        p = strstr(in, "\"scopes\":[");
        if (strstr(in, "\"error\"") || !p) {
                fprintf(stderr, "loadgen: Status -> %.300s\n", in);
                return -EBADMSG;
        }
        for (p = json_ws(p + strlen("\"scopes\":[")); *p != ']'; p = json_ws(p)) {
                uint64_t allocations;

                if (*p == ',')
                        p++;
                p = json_scope(p, name, sizeof(name), &allocations);
                if (!p) {
                        fprintf(stderr, "loadgen: cannot read Status' scopes: %.300s\n", in);
                        return -EBADMSG;
                }
                if (allocations == 0)
                        continue;
                n_scopes++;
                if (strlen(names) + strlen(name) + 2 > sizeof(names))
                        return -ENOBUFS;
                if (names[0])
                        strcat(names, ",");
                strcat(names, name);
        }
        c.call = CALL_RELEASE;
        len = varlink_message(&c, c.out, sizeof(c.out));
        r = call_blocking(fd, c.out, len, in, sizeof(in), &len);
        if (r < 0)
                return r;
        close(fd);
        printf("scopes=%u scope_names=%s\n", n_scopes, names);
        return 0;
}

/* --- options --- */

static void usage(void) {
        fprintf(stderr,
                "usage: loadgen --socket PATH [--socket PATH...] [--proto varlink|resp] [--conns N] "
                "[--reports K]\n"
                "               [--warmup SEC] [--duration SEC] [--server-pid PID...]\n"
                "               [--sha-request SHA --sha-report SHA --sha-release SHA] [--limit TOKENS]\n"
                "               [--hold M] [--cycles-per-conn C] [--capture] [--scopes] [--agent NAME]\n");
}

static int parse_options(int argc, char **argv, Options *opt) {
        static const struct option longopts[] = {
                {"socket", required_argument, NULL, 's'},
                {"proto", required_argument, NULL, 'P'},
                {"conns", required_argument, NULL, 'c'},
                {"reports", required_argument, NULL, 'k'},
                {"warmup", required_argument, NULL, 'w'},
                {"duration", required_argument, NULL, 'd'},
                {"server-pid", required_argument, NULL, 'p'},
                {"sha-request", required_argument, NULL, '1'},
                {"sha-report", required_argument, NULL, '2'},
                {"sha-release", required_argument, NULL, '3'},
                {"hold", required_argument, NULL, 'H'},
                {"cycles-per-conn", required_argument, NULL, 'C'},
                {"capture", no_argument, NULL, 'x'},
                {"limit", required_argument, NULL, 'L'},
                {"scopes", no_argument, NULL, 'S'},
                {"agent", required_argument, NULL, 'a'},
                {},
        };
        int ch;

        *opt = (Options){.n_conns = 1,
                         .n_reports = 1,
                         .warmup_sec = 0.5,
                         .duration_sec = 3,
                         .agent = "loadgen",
                         .limit_tokens = UINT64_C(999999999999)};
        while ((ch = getopt_long(argc, argv, "", longopts, NULL)) >= 0)
                switch (ch) {
                case 's':
                        if (opt->n_targets == TARGETS_MAX)
                                return -E2BIG;
                        opt->socket_paths[opt->n_targets++] = optarg;
                        break;
                case 'P':
                        if (strcmp(optarg, "varlink") != 0 && strcmp(optarg, "resp") != 0)
                                return -EINVAL;
                        opt->proto = strcmp(optarg, "resp") == 0 ? PROTO_RESP : PROTO_VARLINK;
                        break;
                case 'c':
                        opt->n_conns = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'k':
                        opt->n_reports = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'w':
                        opt->warmup_sec = strtod(optarg, NULL);
                        break;
                case 'd':
                        opt->duration_sec = strtod(optarg, NULL);
                        break;
                case 'p':
                        if (opt->n_server_pids == TARGETS_MAX)
                                return -E2BIG;
                        opt->server_pids[opt->n_server_pids++] = (pid_t)strtol(optarg, NULL, 10);
                        break;
                case '1':
                        opt->sha[CALL_REQUEST] = optarg;
                        break;
                case '2':
                        opt->sha[CALL_REPORT] = optarg;
                        break;
                case '3':
                        opt->sha[CALL_RELEASE] = optarg;
                        break;
                case 'H':
                        if (opt->n_holds == TARGETS_MAX)
                                return -E2BIG;
                        opt->holds[opt->n_holds++] = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'C':
                        opt->cycles_per_conn = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'x':
                        opt->capture = true;
                        break;
                case 'L':
                        opt->limit_tokens = strtoull(optarg, NULL, 10);
                        break;
                case 'S':
                        opt->scopes = true;
                        break;
                case 'a':
                        if (strlen(optarg) > 64 ||
                            strspn(optarg, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                           "0123456789_.-") != strlen(optarg))
                                return -EINVAL;
                        opt->agent = optarg;
                        break;
                default:
                        return -EINVAL;
                }
        if (opt->n_targets == 0 || opt->n_conns == 0 || optind != argc)
                return -EINVAL;
        /* Repeated --server-pid and --hold follow the sockets, one each. */
        if (opt->n_server_pids > opt->n_targets || opt->n_holds > opt->n_targets)
                return -EINVAL;
        /* Lockstep is one connection per server, timed runs only. */
        if (opt->n_targets > 1 &&
            (opt->n_conns != 1 || opt->cycles_per_conn > 0 || opt->capture || opt->scopes))
                return -EINVAL;
        if (opt->proto == PROTO_RESP && (!opt->sha[0] || !opt->sha[1] || !opt->sha[2]))
                return -EINVAL;
        if (opt->proto == PROTO_RESP && (opt->n_holds > 0 || opt->capture || opt->scopes))
                return -EINVAL; /* those measure the daemon only */
        return 0;
}

/* Thousands of connections need more descriptors than the default 1024. */
static void raise_nofile(unsigned n_conns) {
        struct rlimit rl;
        rlim_t want = (rlim_t)n_conns + 64;

        if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
                return;
        rl.rlim_cur = want;
        if (rl.rlim_max < want)
                rl.rlim_max = want;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
}

int main(int argc, char **argv) {
        Options opt;
        Run run = {.opt = &opt, .epoll_fd = -1};
        uint64_t errors = 0;
        int r;

        for (unsigned t = 0; t < TARGETS_MAX; t++)
                run.holds[t].fd = -1;
        if (parse_options(argc, argv, &opt) < 0) {
                usage();
                return 2;
        }
        run.self_pid = getpid();
        run.lockstep = opt.n_targets > 1;
        run.n_conns = run.lockstep ? opt.n_targets : opt.n_conns;
        run.stats = calloc(opt.n_targets, sizeof(Stats));
        if (!run.stats)
                return 1;
        request_agent = opt.agent[0] ? opt.agent : NULL;
        raise_nofile(run.n_conns + opt.n_holds);
        if (opt.capture)
                r = capture(&opt);
        else if (opt.scopes)
                r = scopes(&opt);
        else if (opt.cycles_per_conn > 0)
                r = run_until_idle(&run);
        else {
                r = 0;
                for (unsigned t = 0; t < opt.n_holds && r >= 0; t++)
                        if (opt.holds[t] > 0)
                                r = hold_allocations(&opt, t, opt.holds[t], &run.holds[t]);
                r = r ?: run_open(&run);
                r = r ?: run_timed(&run);
        }
        fflush(stdout);
        run_close(&run);
        for (unsigned t = 0; t < TARGETS_MAX; t++)
                if (run.holds[t].fd >= 0)
                        close(run.holds[t].fd);
        for (unsigned t = 0; t < opt.n_targets; t++)
                errors += run.stats[t].errors;
        free(run.stats);
        if (r < 0) {
                fprintf(stderr, "loadgen: %s\n", strerror(-r));
                return 1;
        }
        return errors > 0 ? 3 : 0;
}
