/* SPDX-License-Identifier: MIT */
/*
 * The durable ledger (issue 12) against the real daemon, from outside: what
 * an agent was told is what survives. Concurrent agents (forked children,
 * raw Varlink connections) run Request/Report/Release cycles with known
 * token counts while the daemon is killed with SIGKILL; restarted on the same
 * state directory, its windows hold exactly the acknowledged usage (at most
 * plus what was sent and never answered: nothing counted twice), the history
 * (read with SQLite after it stopped) has a released row per acknowledged
 * Release and an abandoned row per allocation open at the kill, and their
 * tokens add up to the windows. A clean stop keeps the windows too, and
 * allocation ids never repeat across restarts. A damaged, truncated or newer
 * database is refused at start (exit 1) with a reason naming the file and
 * what to do. Root only: a read-only state directory (a read-only tmpfs) is
 * refused; on a full tmpfs the replies still come, Status says durability is
 * degraded naming the file, and when the disk has room again it recovers
 * within seconds and what was acknowledged meanwhile is in the database. A
 * memory-only daemon says so and starts from zero.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tb-check.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

/* Limits far above the load: nothing is refused, nothing degraded. */
#define CONFIG                                                                                              \
        "global = { tokens_per_minute = 900000000000; tokens_per_hour = 900000000000; "                     \
        "tokens_per_day = 900000000000; max_tokens_in_flight = 0; };\n"                                     \
        "process = { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; "                      \
        "max_tokens_in_flight = 0; };\n"                                                                    \
        "user = { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; "                         \
        "max_tokens_in_flight = 0; max_allocations = 0; };\n"                                               \
        "unit = { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; "                         \
        "max_tokens_in_flight = 0; max_allocations = 0; };\n"                                               \
        "warn_multiplier = 1.0; hard_multiplier = 1.0;\n"

#define N_AGENTS      12
#define IDS_MAX       16384
#define ID_SIZE       64
#define LOAD_MSEC     700
#define RECV_MSEC     5000
#define RUN_EXIT_MSEC 10000
/* Tokens per cycle: the Report's totals, then the Release's (cumulative). */
#define REPORT_IN(i)      (3 + (i))
#define REPORT_OUT        5
#define RELEASE_IN(i)     (REPORT_IN(i) + 4)
#define RELEASE_OUT       (REPORT_OUT + 3)
#define REPORT_TOKENS(i)  (REPORT_IN(i) + REPORT_OUT)
#define RELEASE_TOKENS(i) (RELEASE_IN(i) + RELEASE_OUT)

static const char *const spans[] = {"minute", "hour", "day"};

/* ---- small helpers ---- */

static char *path_in(const char *dir, const char *name) {
        char *p;

        ck_assert_int_ge(asprintf(&p, "%s/%s", dir, name), 0);
        return p;
}

/* A fresh directory under the TCase's directory (its tests share it). */
static char *fresh_dir(const char *name) {
        static unsigned n;
        char *dir;

        ck_assert_int_ge(asprintf(&dir, "%s/%s-%d-%u", harness_dir(), name, (int)getpid(), n++), 0);
        ck_assert_msg(mkdir(dir, 0700) == 0, "%s: %s", dir, strerror(errno));
        return dir;
}

static TestDaemon *start_on(const char *state_dir) {
        HarnessDaemonOptions o = {.state_dir = state_dir};

        return harness_daemon_start_with(CONFIG, &o);
}

static json_object *status(RawConn *r) {
        json_object *st = harness_callf(r, "{\"method\":\"io.tokenbudget.admin.Status\",\"parameters\":"
                                           "{\"all\":true}}");

        ck_assert_msg(!reply_error(st), "Status: %s", json_object_to_json_string(st));
        return st;
}

/* The used of a window of a scope (0 when the scope is not tracked: nothing used). */
static int64_t used_of(json_object *st, const char *scope, const char *span) {
        json_object *s = status_scope(reply_parameters(st), scope);

        return s ? scope_window_used(s, span, NULL) : 0;
}

static json_object *durability_of(json_object *st) {
        json_object *d;

        ck_assert_msg(json_object_object_get_ex(reply_parameters(st), "durability", &d) && d,
                      "Status without durability: %s", json_object_to_json_string(st));
        return d;
}

static bool durability_degraded(json_object *st) {
        json_object *v;

        ck_assert(json_object_object_get_ex(durability_of(st), "degraded", &v));
        return json_object_get_boolean(v);
}

static char *user_scope(void) {
        char *s;

        ck_assert_int_ge(asprintf(&s, "user:%u", (unsigned)getuid()), 0);
        return s;
}

/* Window usage of global and the test's user, every span. */
typedef struct Windows {
        int64_t used[2][3];
} Windows;

static Windows windows_of(const TestDaemon *d) {
        RawConn *r = harness_open_working(d, "Status");
        json_object *st = status(r);
        char *user = user_scope();
        Windows w;

        for (size_t s = 0; s < 3; s++) {
                w.used[0][s] = used_of(st, "global", spans[s]);
                w.used[1][s] = used_of(st, user, spans[s]);
        }
        json_object_put(st);
        raw_close(r);
        free(user);
        return w;
}

/* Every window of global and the user holds between lo and hi tokens. */
static void assert_windows(const Windows *w, int64_t lo, int64_t hi, const char *what) {
        for (size_t k = 0; k < 2; k++)
                for (size_t s = 0; s < 3; s++)
                        ck_assert_msg(w->used[k][s] >= lo && w->used[k][s] <= hi,
                                      "%s: %s %s window used %" PRId64 ", expected %s%" PRId64
                                      " .. %" PRId64,
                                      what, k ? "user" : "global", spans[s], w->used[k][s],
                                      lo == hi ? "exactly " : "", lo, hi);
}

/* One cycle on a raw connection, with room for what it uses (no hard-limit
 * breach, no breaker); the id granted in id (ID_SIZE). */
static void cycle(RawConn *r, int in, int out, char *id, bool release) {
        json_object *g = harness_callf(r,
                                       "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":"
                                       "{\"estimate\":%d}}",
                                       in + out + 100),
                    *rep;

        ck_assert_msg(!reply_error(g), "Request: %s", json_object_to_json_string(g));
        snprintf(id, ID_SIZE, "%s", json_str(reply_parameters(g), "allocation", "Request"));
        json_object_put(g);
        rep = harness_callf(
                r,
                "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":\"%s\","
                "\"inputTokens\":%d,\"outputTokens\":%d}}",
                id, in / 2, out / 2);
        ck_assert_msg(!reply_error(rep), "Report: %s", json_object_to_json_string(rep));
        json_object_put(rep);
        if (!release)
                return;
        rep = harness_callf(
                r,
                "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%s\","
                "\"inputTokens\":%d,\"outputTokens\":%d}}",
                id, in, out);
        ck_assert_msg(!reply_error(rep), "Release: %s", json_object_to_json_string(rep));
        json_object_put(rep);
}

/* History rows of an outcome in the database (the daemon stopped): count
 * and tokens. */
static int64_t history_rows(const char *db, const char *outcome, int64_t *ret_tokens) {
        sqlite3 *s = NULL;
        sqlite3_stmt *q = NULL;
        int64_t n;
        int r;

        r = sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL);
        ck_assert_msg(r == SQLITE_OK, "sqlite3_open(%s): %s", db, s ? sqlite3_errmsg(s) : "?");
        r = sqlite3_prepare_v2(s,
                               "SELECT count(*), coalesce(sum(input + output), 0) FROM history "
                               "WHERE outcome = ?1",
                               -1, &q, NULL);
        ck_assert_msg(r == SQLITE_OK, "%s: %s", db, sqlite3_errmsg(s));
        sqlite3_bind_text(q, 1, outcome, -1, SQLITE_STATIC);
        ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
        n = sqlite3_column_int64(q, 0);
        if (ret_tokens)
                *ret_tokens = sqlite3_column_int64(q, 1);
        sqlite3_finalize(q);
        sqlite3_close(s);
        return n;
}

static int64_t sql_count(const char *db, const char *sql) {
        sqlite3 *s = NULL;
        sqlite3_stmt *q = NULL;
        int64_t n;

        ck_assert_int_eq(sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ck_assert_msg(sqlite3_prepare_v2(s, sql, -1, &q, NULL) == SQLITE_OK, "%s: %s", sql,
                      sqlite3_errmsg(s));
        ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
        n = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
        sqlite3_close(s);
        return n;
}

static void sql_exec(const char *db, const char *sql) {
        sqlite3 *s = NULL;
        char *err = NULL;

        ck_assert_int_eq(sqlite3_open(db, &s), SQLITE_OK);
        ck_assert_msg(sqlite3_exec(s, sql, NULL, NULL, &err) == SQLITE_OK, "%s: %s: %s", db, sql, err);
        sqlite3_close(s);
}

/* Ids are unique: sorted, no two neighbours equal. */
static int id_cmp(const void *a, const void *b) {
        return strcmp(*(char *const *)a, *(char *const *)b);
}

static void assert_unique(char **ids, size_t n, const char *what) {
        qsort(ids, n, sizeof(char *), id_cmp);
        for (size_t i = 1; i < n; i++)
                ck_assert_msg(strcmp(ids[i - 1], ids[i]) != 0, "%s: allocation id %s issued twice (%zu ids)",
                              what, ids[i], n);
}

/* ---- 1: SIGKILL mid-load ---- */

typedef enum AgentState {
        AGENT_IDLE,         /* between cycles: nothing open */
        AGENT_REQUEST_SENT, /* a Request unanswered: maybe granted */
        AGENT_OPEN,         /* granted (a Report maybe unanswered) */
        AGENT_RELEASE_SENT, /* a Release unanswered: maybe settled */
} AgentState;

typedef struct Agent {
        uint64_t acked_tokens;   /* in Reports and Releases answered */
        uint64_t pending_tokens; /* in the one sent and not answered */
        uint64_t releases_acked;
        AgentState state;
        int failed;
        char error[256];
        size_t n_ids;
        char ids[IDS_MAX][ID_SIZE];
} Agent;

/* Sends msg; 1 with the reply's parameters parsed, 0 when the daemon went
 * away (no reply), -1 on a reply that is an error (recorded). */
static int agent_call(Agent *a, RawConn *r, const char *msg, json_object **ret) {
        char *text = NULL;
        json_object *o;
        int k;

        *ret = NULL;
        if (raw_send_msg(r, msg) < 0)
                return 0; /* maybe sent in part: counted as sent */
        k = raw_recv(r, RECV_MSEC, &text);
        if (k <= 0)
                return 0;
        o = json_tokener_parse(text);
        if (!o || reply_error(o)) {
                snprintf(a->error, sizeof(a->error), "%s -> %s", msg, text);
                a->failed = 1;
                free(text);
                json_object_put(o);
                return -1;
        }
        free(text);
        *ret = o;
        return 1;
}

static void agent_run(Agent *a, int i, const char *socket_path) {
        RawConn *r = raw_open(socket_path);
        char msg[512];

        if (!r) {
                snprintf(a->error, sizeof(a->error), "connect: %s", strerror(errno));
                a->failed = 1;
                return;
        }
        for (;;) {
                json_object *o;
                char id[ID_SIZE];
                int k;

                a->state = AGENT_REQUEST_SENT;
                k = agent_call(
                        a, r,
                        "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":100}}",
                        &o);
                if (k <= 0)
                        break;
                snprintf(id, sizeof(id), "%s",
                         json_object_get_string(json_object_object_get(reply_parameters(o), "allocation")));
                json_object_put(o);
                a->state = AGENT_OPEN;
                if (a->n_ids < IDS_MAX)
                        snprintf(a->ids[a->n_ids++], ID_SIZE, "%s", id);

                snprintf(msg, sizeof(msg),
                         "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":\"%s\","
                         "\"inputTokens\":%d,\"outputTokens\":%d}}",
                         id, REPORT_IN(i), REPORT_OUT);
                a->pending_tokens = REPORT_TOKENS(i);
                k = agent_call(a, r, msg, &o);
                if (k <= 0)
                        break;
                json_object_put(o);
                a->acked_tokens += REPORT_TOKENS(i);
                a->pending_tokens = 0;

                snprintf(
                        msg, sizeof(msg),
                        "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%s\","
                        "\"inputTokens\":%d,\"outputTokens\":%d}}",
                        id, RELEASE_IN(i), RELEASE_OUT);
                a->state = AGENT_RELEASE_SENT;
                a->pending_tokens = RELEASE_TOKENS(i) - REPORT_TOKENS(i);
                k = agent_call(a, r, msg, &o);
                if (k <= 0)
                        break;
                json_object_put(o);
                a->acked_tokens += a->pending_tokens;
                a->pending_tokens = 0;
                a->releases_acked++;
                a->state = AGENT_IDLE;
        }
        raw_close(r);
}

START_TEST(test_kill_mid_load) {
        char *dir = fresh_dir("state-kill"), *db = path_in(dir, "tokenbudget.db");
        Agent *agents = mmap(NULL, sizeof(Agent) * N_AGENTS, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        TestDaemon *d = start_on(dir);
        pid_t pids[N_AGENTS];
        uint64_t acked = 0, pending = 0, released = 0, n_req_sent = 0, n_open = 0, n_rel_sent = 0;
        int64_t rel_tokens, ab_tokens, n_released, n_abandoned, n_shutdown;
        size_t n_ids = 0;
        char **ids, *log, *p, extra[4][ID_SIZE], log_path[300];
        int64_t n_said;
        Windows w;
        RawConn *r;
        json_object *st;

        ck_assert_ptr_ne(agents, MAP_FAILED);
        memset(agents, 0, sizeof(Agent) * N_AGENTS);
        for (int i = 0; i < N_AGENTS; i++) {
                pids[i] = fork();
                ck_assert_int_ge(pids[i], 0);
                if (pids[i] == 0) {
                        agent_run(&agents[i], i, d->socket_path);
                        _exit(0);
                }
        }
        harness_sleep_msec(LOAD_MSEC);
        harness_daemon_kill(d);
        for (int i = 0; i < N_AGENTS; i++) {
                int ws;

                ck_assert_int_eq(waitpid(pids[i], &ws, 0), pids[i]);
                ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "agent %d died: status %d", i, ws);
        }
        for (int i = 0; i < N_AGENTS; i++) {
                Agent *a = &agents[i];

                ck_assert_msg(!a->failed, "agent %d: %s", i, a->error);
                ck_assert_msg(a->releases_acked > 0, "agent %d finished no cycle in %d ms", i, LOAD_MSEC);
                acked += a->acked_tokens;
                pending += a->pending_tokens;
                released += a->releases_acked;
                n_req_sent += a->state == AGENT_REQUEST_SENT;
                n_open += a->state == AGENT_OPEN;
                n_rel_sent += a->state == AGENT_RELEASE_SENT;
                n_ids += a->n_ids;
        }
        fprintf(stderr,
                "kill mid-load: %" PRIu64 " cycles released by %d agents in %d ms; %" PRIu64
                " tokens acknowledged, %" PRIu64 " sent unanswered; at the kill %" PRIu64
                " Requests, %" PRIu64 " open, %" PRIu64 " Releases unanswered\n",
                released, N_AGENTS, LOAD_MSEC, acked, pending, n_req_sent, n_open, n_rel_sent);

        /* Restarted on the same directory: the windows are what was acknowledged. */
        d = start_on(dir);
        w = windows_of(d);
        assert_windows(&w, (int64_t)acked, (int64_t)(acked + pending), "after SIGKILL and restart");
        r = harness_open_working(d, "after restart");
        st = status(r);
        ck_assert_int_eq(json_int(reply_parameters(st), "allocations", "Status"), 0);
        ck_assert(!durability_degraded(st));
        json_object_put(st);
        /* New ids are not old ones. */
        ids = calloc(n_ids + 8, sizeof(char *));
        ck_assert_ptr_nonnull(ids);
        n_ids = 0;
        for (int i = 0; i < N_AGENTS; i++)
                for (size_t k = 0; k < agents[i].n_ids; k++)
                        ids[n_ids++] = agents[i].ids[k];
        for (int k = 0; k < 4; k++) {
                cycle(r, 10, 10, extra[k], true);
                ids[n_ids++] = extra[k];
        }
        assert_unique(ids, n_ids, "ids before the SIGKILL and after the restart");
        raw_close(r);
        harness_sleep_msec(50); /* the connection's close is seen before the stop */
        snprintf(log_path, sizeof(log_path), "%s", d->log_path);
        harness_daemon_stop(d);
        log = harness_read_file(log_path, NULL);
        ck_assert_ptr_nonnull(log);
        p = strstr(log, " allocation(s) left open by the last run settled as abandoned");
        ck_assert_msg(p, "the restarted daemon did not say what it settled as abandoned: %s", log);
        while (p > log && p[-1] >= '0' && p[-1] <= '9')
                p--;
        n_said = strtoll(p, NULL, 10);
        free(log);

        /* The history: a released row per acknowledged Release (plus perhaps
         * the unanswered ones), an abandoned row per allocation open at the
         * kill, and their tokens are the windows' usage (+ the 4 cycles). */
        n_released = history_rows(db, "released", &rel_tokens);
        n_abandoned = history_rows(db, "abandoned", &ab_tokens);
        n_shutdown = history_rows(db, "shutdown", NULL);
        ck_assert_msg(n_released >= (int64_t)released + 4 &&
                              n_released <= (int64_t)(released + 4 + n_rel_sent),
                      "released rows %" PRId64 ", acknowledged Releases %" PRIu64
                      " (+4 after the restart, +%" PRIu64 " unanswered)",
                      n_released, released, n_rel_sent);
        ck_assert_msg(n_abandoned >= (int64_t)n_open &&
                              n_abandoned <= (int64_t)(n_open + n_req_sent + n_rel_sent),
                      "abandoned rows %" PRId64 ", allocations open at the kill %" PRIu64 " (+%" PRIu64
                      " Requests and %" PRIu64 " Releases unanswered)",
                      n_abandoned, n_open, n_req_sent, n_rel_sent);
        /* Every allocation that existed at the kill is settled exactly once.
         * (This caught the store refusing ids with the top bit set: half the
         * allocations were never staged.) */
        ck_assert_msg(n_released + n_abandoned >= (int64_t)(released + 4 + n_open + n_rel_sent) &&
                              n_released + n_abandoned <=
                                      (int64_t)(released + 4 + n_open + n_rel_sent + n_req_sent),
                      "released + abandoned rows %" PRId64 " + %" PRId64, n_released, n_abandoned);
        ck_assert_int_eq(n_shutdown, 0);
        ck_assert_msg(n_said == n_abandoned,
                      "the daemon said %" PRId64 " settled as abandoned, history has %" PRId64, n_said,
                      n_abandoned);
        ck_assert_msg(rel_tokens + ab_tokens == w.used[0][2] + 4 * 20,
                      "history tokens %" PRId64 " released + %" PRId64
                      " abandoned, global day window %" PRId64 " + 80 after the restart",
                      rel_tokens, ab_tokens, w.used[0][2]);
        munmap(agents, sizeof(Agent) * N_AGENTS);
        free(ids);
        free(db);
        free(dir);
}
END_TEST

/* ---- 2: a clean stop ---- */

/* A writable cgroup2 hierarchy: /sys/fs/cgroup itself, or the hybrid one. */
static const char *cgroup2_root(void) {
        static const char *const candidates[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
        struct statfs sf;

        for (size_t i = 0; i < ELEMENTSOF(candidates); i++)
                if (statfs(candidates[i], &sf) == 0 && sf.f_type == 0x63677270 /* CGROUP2_SUPER_MAGIC */ &&
                    access(candidates[i], W_OK) == 0)
                        return candidates[i];
        return NULL;
}

/* A child moved into the cgroup dir (a unit as systemd would make it) runs
 * one released cycle of in + out tokens; its id in id (ID_SIZE, shared
 * memory). 0 when done, the child's failure otherwise. */
static int cycle_in_cgroup(const TestDaemon *d, const char *dir, int in, int out, char *id) {
        char path[600];
        int status = 0;
        pid_t pid;

        snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                char buf[32];
                int fd = open(path, O_WRONLY | O_CLOEXEC);
                RawConn *r;

                snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
                if (fd < 0 || write(fd, buf, strlen(buf)) < 0)
                        _exit(10);
                close(fd);
                r = raw_open(d->socket_path);
                if (!r)
                        _exit(11);
                cycle(r, in, out, id, true); /* a failed assertion exits non-zero */
                raw_close(r);
                _exit(0);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* The unit scope's windows, or -1 in used[0] when Status lacks it. */
static void unit_windows(const TestDaemon *d, const char *unit, int64_t used[3]) {
        RawConn *r = harness_open_working(d, "Status");
        json_object *st = status(r), *s = status_scope(reply_parameters(st), unit);

        for (size_t k = 0; k < 3; k++)
                used[k] = s ? scope_window_used(s, spans[k], NULL) : -1;
        json_object_put(st);
        raw_close(r);
}

/* Agents are children that exit before a restart (a process still running
 * at a restart has its process scope restored: test_restart_live_process). */
#define CLEAN_AGENTS 3
#define CLEAN_CYCLES 40
#define UNIT_IN      700
#define UNIT_OUT     77
#define CYCLE_IN(i)  (10 + (i))
#define CYCLE_OUT(i) (3 + (i) % 7)

/* A child running cycles first, first + step, ... < last (CYCLE_IN/OUT(i)
 * tokens) on one connection, their ids in ids[i] (shared memory). With
 * hold_fd >= 0 it then opens one more allocation (a Report of 31 + 20
 * acknowledged), writes a byte to hold_fd and waits to be killed. */
static pid_t agent_spawn(const TestDaemon *d, int first, int step, int last, char (*ids)[ID_SIZE],
                         int hold_fd) {
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                RawConn *r = raw_open(d->socket_path);
                char id[ID_SIZE];

                if (!r)
                        _exit(11);
                for (int i = first; i < last; i += step)
                        cycle(r, CYCLE_IN(i), CYCLE_OUT(i), ids[i], true);
                if (hold_fd >= 0) {
                        cycle(r, 62, 40, id, false);
                        if (write(hold_fd, "x", 1) != 1)
                                _exit(12);
                        for (;;)
                                pause();
                }
                raw_close(r);
                _exit(0);
        }
        return pid;
}

static void agent_wait(pid_t pid, const char *what) {
        int status = 0;

        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: agent status 0x%x", what, status);
}

/* n released cycles of CYCLE_IN/OUT(0..n-1) tokens by agents that are gone
 * when it returns; their ids in ids (shared memory, may be NULL for n <= 64);
 * returns the tokens. */
static int64_t agent_cycles(const TestDaemon *d, int n, char (*ids)[ID_SIZE]) {
        char(*own)[ID_SIZE] =
                ids ? ids
                    : mmap(NULL, 64 * ID_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        int64_t tokens = 0;

        ck_assert_ptr_ne(own, MAP_FAILED);
        ck_assert(ids || n <= 64);
        agent_wait(agent_spawn(d, 0, 1, n, own, -1), "cycles");
        for (int i = 0; i < n; i++)
                tokens += CYCLE_IN(i) + CYCLE_OUT(i);
        if (!ids)
                munmap(own, 64 * ID_SIZE);
        return tokens;
}

/* SIGTERM and a restart on the same directory: every window of global, the
 * user and a unit holds exactly what was used before; the allocation open at
 * the stop is in the history as shutdown with its reported tokens, every
 * released cycle as released; ids do not repeat. */
START_TEST(test_clean_stop) {
        char *dir = fresh_dir("state-clean"), *db = path_in(dir, "tokenbudget.db");
        char(*ids)[ID_SIZE] = mmap(NULL, (CLEAN_CYCLES + 16) * ID_SIZE, PROT_READ | PROT_WRITE,
                                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        char *id_list[CLEAN_CYCLES + 16], cg_slice[600] = "", cg_unit[700] = "", unit[128] = "", byte;
        const char *cg_root = geteuid() == 0 ? cgroup2_root() : NULL;
        int64_t total = 0, released_tokens = 0, unit_before[3], unit_after[3], rel_tokens, sd_tokens;
        TestDaemon *d = start_on(dir);
        pid_t agents[CLEAN_AGENTS], holder;
        size_t n_ids = CLEAN_CYCLES;
        int hold[2];
        Windows before, after;
        json_object *st;
        RawConn *r;

        ck_assert_ptr_ne(ids, MAP_FAILED);
        for (int c = 0; c < CLEAN_AGENTS; c++)
                agents[c] = agent_spawn(d, c, CLEAN_AGENTS, CLEAN_CYCLES, ids, -1);
        for (int c = 0; c < CLEAN_AGENTS; c++)
                agent_wait(agents[c], "clean stop");
        for (int i = 0; i < CLEAN_CYCLES; i++)
                released_tokens += CYCLE_IN(i) + CYCLE_OUT(i);
        /* Open at the stop: its Report (31 + 20) was acknowledged. */
        ck_assert_int_eq(pipe(hold), 0);
        holder = agent_spawn(d, 0, 1, 0, ids, hold[1]);
        ck_assert_int_eq(read(hold[0], &byte, 1), 1);
        /* A unit, from a real cgroup (root with a writable cgroup2 tree). */
        if (cg_root) {
                int k;

                snprintf(cg_slice, sizeof(cg_slice), "%s/tbdur%d.slice", cg_root, (int)getpid());
                snprintf(cg_unit, sizeof(cg_unit), "%s/tbdur%d.service", cg_slice, (int)getpid());
                snprintf(unit, sizeof(unit), "unit:tbdur%d.service", (int)getpid());
                ck_assert_msg(mkdir(cg_slice, 0755) == 0, "%s: %s", cg_slice, strerror(errno));
                ck_assert_msg(mkdir(cg_unit, 0755) == 0, "%s: %s", cg_unit, strerror(errno));
                k = cycle_in_cgroup(d, cg_unit, UNIT_IN, UNIT_OUT, ids[n_ids++]);
                (void)rmdir(cg_unit);
                (void)rmdir(cg_slice);
                ck_assert_msg(k == 0, "the cycle in %s failed (child status %d)", cg_unit, k);
                released_tokens += UNIT_IN + UNIT_OUT;
                unit_windows(d, unit, unit_before);
                for (size_t s = 0; s < 3; s++)
                        ck_assert_msg(unit_before[s] == UNIT_IN + UNIT_OUT,
                                      "%s %s window before the stop: %" PRId64, unit, spans[s],
                                      unit_before[s]);
        } else
                tb_check_skip_part("a unit's windows across a clean stop: %s",
                                   geteuid() ? "needs root (a real cgroup)"
                                             : "no writable cgroup2 hierarchy");
        total = released_tokens + 31 + 20;
        before = windows_of(d);
        assert_windows(&before, total, total, "before the stop");
        harness_daemon_stop(d); /* the holder's allocation still open */
        ck_assert_int_eq(kill(holder, SIGKILL), 0);
        ck_assert_int_eq(waitpid(holder, NULL, 0), holder);
        close(hold[0]);
        close(hold[1]);

        d = start_on(dir);
        after = windows_of(d);
        assert_windows(&after, total, total, "after SIGTERM and restart");
        if (cg_root) {
                unit_windows(d, unit, unit_after);
                for (size_t s = 0; s < 3; s++)
                        ck_assert_msg(unit_after[s] == UNIT_IN + UNIT_OUT,
                                      "%s %s window after the restart: %" PRId64 ", before %" PRId64, unit,
                                      spans[s], unit_after[s], unit_before[s]);
        }
        r = harness_open_working(d, "after restart");
        st = status(r);
        ck_assert_int_eq(json_int(reply_parameters(st), "allocations", "Status"), 0);
        ck_assert(!durability_degraded(st));
        json_object_put(st);
        for (int k = 0; k < 4; k++)
                cycle(r, 10, 10, ids[n_ids++], true);
        for (size_t k = 0; k < n_ids; k++)
                id_list[k] = ids[k];
        assert_unique(id_list, n_ids, "ids before the SIGTERM and after the restart");
        raw_close(r);
        harness_sleep_msec(50);
        harness_daemon_stop(d);

        ck_assert_int_eq(history_rows(db, "released", &rel_tokens), CLEAN_CYCLES + (cg_root ? 1 : 0) + 4);
        ck_assert_int_eq(rel_tokens, released_tokens + 4 * 20);
        ck_assert_int_eq(history_rows(db, "shutdown", &sd_tokens), 1);
        ck_assert_int_eq(sd_tokens, 31 + 20);
        ck_assert_int_eq(history_rows(db, "abandoned", NULL), 0);
        /* The usage rows' scope keys, exactly ("KIND|OWNER|DISCRIMINATOR|NAME"). */
        {
                char sql[256];

                ck_assert_int_eq(
                        sql_count(db, "SELECT sum(tokens) FROM usage WHERE scope = 'global|-1|0|global'"),
                        total + 4 * 20);
                snprintf(sql, sizeof(sql), "SELECT sum(tokens) FROM usage WHERE scope = 'user|%u|0|user:%u'",
                         (unsigned)getuid(), (unsigned)getuid());
                ck_assert_int_eq(sql_count(db, sql), total + 4 * 20);
                snprintf(sql, sizeof(sql),
                         "SELECT count(*) FROM usage WHERE scope GLOB 'process|%u|[1-9]*|process:[1-9]*'",
                         (unsigned)getuid());
                ck_assert_int_gt(sql_count(db, sql), 0);
        }
        munmap(ids, (CLEAN_CYCLES + 16) * ID_SIZE);
        free(db);
        free(dir);
}
END_TEST

/* A process that used tokens and still runs when the daemon restarts has
 * its process scope restored with its usage. (restore_scope() in budget.c
 * used to connect and disconnect it in the process table before adding the
 * usage, freeing the entry it then read: a use-after-free at start, SIGSEGV;
 * ASan: heap-use-after-free in process_entry_scope.) */
START_TEST(test_restart_live_process) {
        char *dir = fresh_dir("state-live"), id[ID_SIZE];
        TestDaemon *d = start_on(dir);
        RawConn *r = harness_open_working(d, "a live process");
        Windows w;

        cycle(r, 30, 12, id, true); /* this process's scope has usage */
        raw_close(r);
        harness_sleep_msec(50);
        harness_daemon_stop(d);
        d = start_on(dir); /* this process still runs */
        w = windows_of(d);
        assert_windows(&w, 42, 42, "a restart while the process that used them runs");
        harness_daemon_stop(d);
        free(dir);
}
END_TEST

/* ---- 3: memory only ---- */

static char *read_log(const TestDaemon *d) {
        char *log = harness_read_file(d->log_path, NULL);

        ck_assert_msg(log, "%s: %s", d->log_path, strerror(errno));
        return log;
}

static size_t dir_entries(const char *dir) {
        DIR *dh = opendir(dir);
        struct dirent *de;
        size_t n = 0;

        ck_assert_msg(dh, "%s: %s", dir, strerror(errno));
        while ((de = readdir(dh)))
                n += strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
        closedir(dh);
        return n;
}

/* One memory-only run with $STATE_DIRECTORY pointing at a directory: the log
 * says memory only, Status has no database, the windows start at zero, and
 * nothing is written into that directory. */
static void memory_only_run(const char *config, const HarnessDaemonOptions *o, const char *dir,
                            int64_t tokens) {
        TestDaemon *d = harness_daemon_start_with(config, o);
        RawConn *r = harness_open_working(d, "memory only");
        json_object *st = status(r), *du = durability_of(st), *v;
        char *log = read_log(d), id[ID_SIZE];
        Windows w = windows_of(d);

        ck_assert_msg(strstr(log, "running in memory only"), "the log does not say memory only: %s", log);
        ck_assert_msg(!json_object_object_get_ex(du, "database", &v) || !v,
                      "memory only with a database: %s", json_object_to_json_string(du));
        ck_assert_str_eq(json_str(du, "sync", "durability"), "none");
        assert_windows(&w, 0, 0, "a memory-only start");
        cycle(r, (int)tokens - 1, 1, id, true);
        w = windows_of(d);
        assert_windows(&w, tokens, tokens, "memory only after a cycle");
        json_object_put(st);
        raw_close(r);
        free(log);
        harness_daemon_stop(d);
        ck_assert_msg(dir_entries(dir) == 0, "memory only wrote into $STATE_DIRECTORY %s", dir);
}

START_TEST(test_memory_only) {
        char *dir = fresh_dir("state-env"), env[400], *config;
        const char *envs[] = {env, NULL};
        HarnessDaemonOptions flag = {.state_dir = "", .env = envs},
                             conf = {.no_state_option = true, .env = envs};

        snprintf(env, sizeof(env), "STATE_DIRECTORY=%s", dir);
        /* --state-dir '' over $STATE_DIRECTORY, twice: the second starts from zero. */
        memory_only_run(CONFIG, &flag, dir, 40);
        memory_only_run(CONFIG, &flag, dir, 40);
        /* state_directory = "" in the config, the same. */
        ck_assert_int_ge(asprintf(&config, "%sstate_directory = \"\";\n", CONFIG), 0);
        memory_only_run(config, &conf, dir, 50);
        memory_only_run(config, &conf, dir, 50);
        free(config);
        free(dir);
}
END_TEST

/* ---- 4: bad files at start ---- */

/* A database as the daemon writes it: a few released cycles, stopped. Its
 * bytes in *ret_len. */
static char *real_database(size_t *ret_len) {
        char *dir = fresh_dir("state-src"), *db = path_in(dir, "tokenbudget.db"), *bytes;
        TestDaemon *d = start_on(dir);

        (void)agent_cycles(d, 30, NULL);
        harness_daemon_stop(d);
        bytes = harness_read_file(db, ret_len);
        ck_assert_msg(bytes, "%s: %s", db, strerror(errno));
        ck_assert_msg(*ret_len >= 8 * 4096, "%s: only %zu bytes", db, *ret_len);
        free(db);
        free(dir);
        return bytes;
}

static void write_bytes(const char *path, const char *bytes, size_t len) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

        ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
        ck_assert_msg(write(fd, bytes, len) == (ssize_t)len, "%s: %s", path, strerror(errno));
        ck_assert_int_eq(close(fd), 0);
}

/* Deterministic garbage. */
static void garbage(char *p, size_t len, uint32_t seed) {
        for (size_t i = 0; i < len; i++) {
                seed = seed * 1103515245u + 12345u;
                p[i] = (char)(seed >> 16);
        }
}

static char *strcasestr_or_null(const char *hay, const char *needle) {
        return hay ? strcasestr(hay, needle) : NULL;
}

/* The daemon on dir refuses to start: exit 1, its stderr names path and the
 * words; the file at path keeps its bytes (want, len; NULL: not there). */
static void assert_refused(const char *dir, const char *path, const char *want, size_t len,
                           const char *const *words, const char *what) {
        HarnessDaemonOptions o = {.state_dir = dir};
        char *err = NULL, *now;
        size_t now_len = 0;
        int status;

        status = harness_daemon_run_to_exit(CONFIG, &o, RUN_EXIT_MSEC, &err);
        fprintf(stderr, "%s: exit %d: %s", what, status, err);
        ck_assert_msg(status == 1, "%s: exit status %d, expected 1: %s", what, status, err);
        ck_assert_msg(strstr(err, path), "%s: the error does not name %s: %s", what, path, err);
        for (size_t i = 0; words && words[i]; i++)
                ck_assert_msg(strcasestr_or_null(err, words[i]), "%s: the error does not say \"%s\": %s",
                              what, words[i], err);
        if (want) {
                now = harness_read_file(path, &now_len);
                ck_assert_msg(now, "%s: %s is gone: %s", what, path, strerror(errno));
                ck_assert_msg(now_len == len && memcmp(now, want, len) == 0,
                              "%s: %s changed (%zu bytes, was %zu)", what, path, now_len, len);
                free(now);
        }
        free(err);
}

typedef enum Damage {
        DAMAGE_HEADER,    /* garbage over the 100-byte header */
        DAMAGE_PAGES,     /* garbage over every page but the first */
        DAMAGE_TRUNCATED, /* cut in the middle of a page */
        DAMAGE_TEXT,      /* a text file */
        DAMAGE_NEWER,     /* user_version past the daemon's */
} Damage;

typedef struct RefusalRow {
        const char *name;
        Damage damage;
        const char *words[3]; /* besides the path: what it is, what to do */
} RefusalRow;

static const RefusalRow refusal_rows[] = {
        {"header garbage", DAMAGE_HEADER, {"not a database", "move it away", NULL}},
        {"page garbage", DAMAGE_PAGES, {"damaged", "move it away", NULL}},
        {"truncated", DAMAGE_TRUNCATED, {"truncated", "move it away", NULL}},
        {"not a database", DAMAGE_TEXT, {"not a database", "move it away", NULL}},
        {"newer schema", DAMAGE_NEWER, {"newer", "move the file away", NULL}},
};

/* The schema version of a database file (PRAGMA user_version). */
static int64_t user_version(const char *db) {
        sqlite3 *s = NULL;
        sqlite3_stmt *q = NULL;
        int64_t v;

        ck_assert_int_eq(sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_prepare_v2(s, "PRAGMA user_version", -1, &q, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(q), SQLITE_ROW);
        v = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
        sqlite3_close(s);
        return v;
}

/* Writes the damaged copy of real (len bytes) to db; its bytes in *ret_len. */
static char *damaged_copy(const RefusalRow *row, const char *real, size_t len, const char *db,
                          size_t *ret_len) {
        char *b = malloc(len + 4096), sql[64], *out;

        ck_assert_ptr_nonnull(b);
        memcpy(b, real, len);
        switch (row->damage) {
        case DAMAGE_HEADER:
                garbage(b, 100, 1);
                break;
        case DAMAGE_PAGES:
                garbage(b + 4096, len - 4096, 2);
                break;
        case DAMAGE_TRUNCATED:
                len = len / 2 + 100;
                break;
        case DAMAGE_TEXT:
                len = 0;
                for (int i = 0; i < 100; i++)
                        len += (size_t)sprintf(b + len, "this is not a database, line %d\n", i);
                break;
        case DAMAGE_NEWER:
                break;
        }
        write_bytes(db, b, len);
        free(b);
        if (row->damage == DAMAGE_NEWER) {
                snprintf(sql, sizeof(sql), "PRAGMA user_version = %" PRId64, user_version(db) + 1);
                sql_exec(db, sql);
        }
        out = harness_read_file(db, ret_len);
        ck_assert_ptr_nonnull(out);
        return out;
}

/* Damaged, truncated, foreign and newer files: exit 1 at start, the file
 * named with what to do, not a byte changed, nothing else left next to it. */
START_TEST(test_refused_files) {
        size_t real_len, len;
        char *real = real_database(&real_len);

        for (size_t i = 0; i < ELEMENTSOF(refusal_rows); i++) {
                const RefusalRow *row = &refusal_rows[i];
                char *dir = fresh_dir(row->name), *db = path_in(dir, "tokenbudget.db");
                char *bytes = damaged_copy(row, real, real_len, db, &len);

                assert_refused(dir, db, bytes, len, row->words, row->name);
                ck_assert_msg(dir_entries(dir) == 1, "%s: the refused start left files next to %s",
                              row->name, db);
                free(bytes);
                free(db);
                free(dir);
        }
        free(real);
}
END_TEST

/* The root page of a table, from the schema. */
static size_t table_root_page(const char *db, const char *table) {
        sqlite3 *s = NULL;
        sqlite3_stmt *q = NULL;
        size_t page;

        ck_assert_int_eq(sqlite3_open_v2(db, &s, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        ck_assert_int_eq(
                sqlite3_prepare_v2(s, "SELECT rootpage FROM sqlite_schema WHERE name = ?1", -1, &q, NULL),
                SQLITE_OK);
        sqlite3_bind_text(q, 1, table, -1, SQLITE_STATIC);
        ck_assert_msg(sqlite3_step(q) == SQLITE_ROW, "%s: no table %s", db, table);
        page = (size_t)sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
        sqlite3_close(s);
        return page;
}

/* Garbage over the history table's root page only is refused at start
 * (the store reads every table's and index's edges at open). Before that,
 * the daemon read only meta, usage and allocations at start, so it started,
 * went degraded at the first history write ("database disk image is
 * malformed") and kept writing into the damaged file every second. */
START_TEST(test_damaged_history_page) {
        size_t real_len, len;
        char *real = real_database(&real_len), *dir = fresh_dir("history-garbage"),
             *db = path_in(dir, "tokenbudget.db"), *bytes;
        const char *const words[] = {"damaged", "move it away", NULL};
        size_t page;

        write_bytes(db, real, real_len);
        page = table_root_page(db, "history");
        ck_assert(page >= 2 && page * 4096 <= real_len);
        garbage(real + (page - 1) * 4096, 4096, 3);
        write_bytes(db, real, real_len);
        bytes = harness_read_file(db, &len);
        assert_refused(dir, db, bytes, len, words, "garbage over the history pages");
        free(bytes);
        free(db);
        free(dir);
        free(real);
}
END_TEST

/* A missing database in an existing directory (and a missing directory in
 * an existing one) is created, at the daemon's schema version, and kept. */
START_TEST(test_missing_created) {
        char *top = fresh_dir("state-new"), *sub = path_in(top, "sub");
        const char *dirs[] = {top, sub};

        for (size_t i = 0; i < ELEMENTSOF(dirs); i++) {
                char *db = path_in(dirs[i], "tokenbudget.db");
                TestDaemon *d = start_on(dirs[i]);
                int64_t tokens;
                Windows w;

                ck_assert_msg(access(db, F_OK) == 0, "%s was not created at start", db);
                tokens = agent_cycles(d, 3, NULL);
                harness_daemon_stop(d);
                ck_assert_int_gt(user_version(db), 0);
                d = start_on(dirs[i]);
                w = windows_of(d);
                assert_windows(&w, tokens, tokens, "a new database after a restart");
                harness_daemon_stop(d);
                ck_assert_int_eq(history_rows(db, "released", NULL), 3);
                free(db);
        }
        free(sub);
        free(top);
}
END_TEST

/* ---- 5: root: a read-only state directory, a full disk ---- */

/* A private mount namespace for this test (its Check child), or a skip. */
static bool private_mounts(const char *what) {
        if (!tb_check_need_root(what))
                return false;
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
                tb_check_skip("%s: no private mount namespace here (%s)", what, strerror(errno));
                return false;
        }
        return true;
}

static void mount_tmpfs(const char *dir, unsigned long flags, const char *options) {
        ck_assert_msg(mount("tmpfs", dir, "tmpfs", flags, options) == 0, "mount tmpfs on %s (%s): %s", dir,
                      options, strerror(errno));
}

/* The daemon as uid (and gid) on state_dir, run to its end: its exit
 * status, its stderr in *ret_err. Its config, stderr and socket live in a
 * directory that uid can use. */
/* Whether uid could execute path: checked in a child that becomes uid. */
static bool executable_by(const char *path, uid_t uid) {
        int status = 0;
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0)
                        _exit(2);
                _exit(access(path, X_OK) == 0 ? 0 : 1);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int run_as_to_exit(uid_t uid, const char *state_dir, char **ret_err) {
        char *base = fresh_dir("as-uid"), *conf = path_in(base, "tokenbudgetd.conf"),
             *log = path_in(base, "stderr"), *sock = path_in(base, "sock");
        const char *binary = harness_env("TOKENBUDGETD");
        uint64_t deadline = harness_now_usec() + RUN_EXIT_MSEC * 1000ull;
        int status = 0;
        pid_t pid;

        ck_assert_int_eq(chown(base, uid, uid), 0);
        ck_assert_int_eq(chmod(base, 0755), 0);
        write_bytes(conf, CONFIG, strlen(CONFIG));
        ck_assert_int_eq(chmod(conf, 0644), 0);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                int fd;

                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0)
                        _exit(125);
                fd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0)
                        _exit(126);
                execl(binary, "tokenbudgetd", "--config", conf, "--socket", sock, "--state-dir", state_dir,
                      (char *)NULL);
                _exit(127);
        }
        while (waitpid(pid, &status, WNOHANG) == 0) {
                if (harness_now_usec() > deadline) {
                        kill(pid, SIGKILL);
                        waitpid(pid, NULL, 0);
                        ck_abort_msg(
                                "tokenbudgetd as uid %u on %s still ran after %d ms; expected a refusal",
                                (unsigned)uid, state_dir, RUN_EXIT_MSEC);
                }
                harness_sleep_msec(5);
        }
        *ret_err = harness_read_file(log, NULL);
        ck_assert_ptr_nonnull(*ret_err);
        free(sock);
        free(log);
        free(conf);
        free(base);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* A read-only state directory is refused at start, naming the path: a
 * read-only tmpfs, empty and holding a database (its bytes kept), and for
 * an unprivileged daemon (uid 65534, as under DynamicUser=) a directory of
 * its own with mode 0500, empty and holding its database. */
START_TEST(test_read_only_dir) {
        /* a read-only mount is named as such, with where to go instead */
        const char *const ro_fs_words[] = {"mounted read-only", "--state-dir", NULL};
        size_t real_len, len;
        char *real, *bytes, *err = NULL;
        char *empty = fresh_dir("ro-empty"), *full = fresh_dir("ro-db"),
             *db = path_in(full, "tokenbudget.db");
        char *own = fresh_dir("ro-own"), *own_db = path_in(own, "tokenbudget.db"),
             *empty_db = path_in(empty, "tokenbudget.db");
        int status;

        if (!private_mounts("a read-only state directory (read-only tmpfs)"))
                return;
        real = real_database(&real_len);
        mount_tmpfs(empty, MS_RDONLY, "size=1m,mode=0700");
        assert_refused(empty, empty_db, NULL, 0, ro_fs_words, "an empty read-only tmpfs");
        mount_tmpfs(full, 0, "size=1m,mode=0700");
        write_bytes(db, real, real_len);
        ck_assert_int_eq(mount(NULL, full, NULL, MS_REMOUNT | MS_RDONLY, NULL), 0);
        bytes = harness_read_file(db, &len);
        assert_refused(full, db, bytes, len, ro_fs_words, "a read-only tmpfs with a database");
        free(bytes);

        /* Unprivileged: the directory is its own but 0500. (The daemon's
         * binary must be reachable by that uid: a build under /root is not.) */
        if (!executable_by(harness_env("TOKENBUDGETD"), 65534)) {
                tb_check_skip_part("a read-only state directory as uid 65534: it cannot execute %s (a "
                                   "directory above it is closed to it, e.g. /root)",
                                   harness_env("TOKENBUDGETD"));
                goto done;
        }
        ck_assert_int_eq(chown(own, 65534, 65534), 0);
        ck_assert_int_eq(chmod(own, 0500), 0);
        status = run_as_to_exit(65534, own, &err);
        fprintf(stderr, "uid 65534, an empty 0500 directory: exit %d: %s", status, err);
        ck_assert_msg(status == 1, "uid 65534 on an empty 0500 %s: exit %d: %s", own, status, err);
        ck_assert_msg(strstr(err, own), "the error does not name %s: %s", own, err);
        free(err);
        ck_assert_int_eq(chmod(own, 0700), 0);
        write_bytes(own_db, real, real_len);
        ck_assert_int_eq(chown(own_db, 65534, 65534), 0);
        ck_assert_int_eq(chmod(own, 0500), 0);
        status = run_as_to_exit(65534, own, &err);
        fprintf(stderr, "uid 65534, its database in a 0500 directory: exit %d: %s", status, err);
        ck_assert_msg(status == 1, "uid 65534 on %s in a 0500 directory: exit %d: %s", own_db, status, err);
        ck_assert_msg(strstr(err, own_db), "the error does not name %s: %s", own_db, err);
        bytes = harness_read_file(own_db, &len);
        ck_assert_msg(bytes && len == real_len && memcmp(bytes, real, len) == 0, "%s changed", own_db);
        free(bytes);
        free(err);
        ck_assert_int_eq(chmod(own, 0700), 0);
done:
        umount(full);
        umount(empty);
        free(real);
        free(empty_db);
        free(own_db);
        free(own);
        free(db);
        free(full);
        free(empty);
}
END_TEST

/* Writes a file until the file system is full. */
static void fill_disk(const char *path) {
        static char block[65536];
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        ssize_t n;

        ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
        memset(block, 'x', sizeof(block));
        while ((n = write(fd, block, sizeof(block))) > 0)
                ;
        ck_assert_msg(n < 0 && errno == ENOSPC, "filling %s: %s", path, n < 0 ? strerror(errno) : "EOF");
        /* The last partial block too. */
        while (write(fd, block, 1) == 1)
                ;
        close(fd);
}

static int64_t durability_int(json_object *st, const char *key) {
        return json_int(durability_of(st), key, "Status.durability");
}

/* Polls Status until durability.degraded is want or timeout_msec passed;
 * the last Status (the caller puts it). */
static json_object *wait_degraded(RawConn *r, bool want, int timeout_msec, int *ret_msec) {
        uint64_t start = harness_now_usec();

        for (;;) {
                json_object *st = status(r);

                *ret_msec = (int)((harness_now_usec() - start) / 1000);
                if (durability_degraded(st) == want || *ret_msec >= timeout_msec)
                        return st;
                json_object_put(st);
                harness_sleep_msec(20);
        }
}

#define FULL_CYCLES 6 /* each phase: ~30 KiB of WAL per cycle, the tmpfs is 2 MiB */

/* A full disk: replies keep coming, Status says degraded naming the file;
 * with room again it recovers within seconds, nothing lost (README:
 * "keeps enforcing from memory and retries every second"; what failed stays
 * staged), and a restart has every acknowledged token. */
START_TEST(test_full_disk) {
        char *mnt = fresh_dir("full"), *db = path_in(mnt, "tokenbudget.db"),
             *filler = path_in(mnt, "filler");
        int64_t acked = 0, n_cycles = 0, rel_tokens;
        int degraded_msec, recovered_msec;
        json_object *st, *du;
        TestDaemon *d;
        RawConn *r;
        Windows w;

        if (!private_mounts("a full disk (a 2 MiB tmpfs)"))
                return;
        mount_tmpfs(mnt, 0, "size=2m,mode=0700");
        d = start_on(mnt);
        r = harness_open_working(d, "full disk");
        acked += agent_cycles(d, FULL_CYCLES, NULL), n_cycles += FULL_CYCLES;
        st = status(r);
        ck_assert(!durability_degraded(st));
        json_object_put(st);

        fill_disk(filler);
        /* Replies still come (agent_cycles fails on a missing one). */
        acked += agent_cycles(d, FULL_CYCLES, NULL), n_cycles += FULL_CYCLES;
        st = wait_degraded(r, true, 3000, &degraded_msec);
        du = durability_of(st);
        ck_assert_msg(durability_degraded(st), "a full disk and Status says not degraded: %s",
                      json_object_to_json_string(du));
        ck_assert_msg(strstr(json_str(du, "error", "durability"), db), "the error does not name %s: %s", db,
                      json_object_to_json_string(du));
        fprintf(stderr, "full disk: degraded after the cycles in %d ms: %s\n", degraded_msec,
                json_object_to_json_string(du));
        json_object_put(st);
        acked += agent_cycles(d, FULL_CYCLES, NULL), n_cycles += FULL_CYCLES;
        st = status(r);
        ck_assert(durability_degraded(st));
        ck_assert_int_gt(durability_int(st, "pending"), 0);
        ck_assert_int_eq(durability_int(st, "lost"), 0);
        json_object_put(st);

        ck_assert_int_eq(unlink(filler), 0);
        st = wait_degraded(r, false, 5000, &recovered_msec);
        ck_assert_msg(!durability_degraded(st), "room again and still degraded after %d ms: %s",
                      recovered_msec, json_object_to_json_string(durability_of(st)));
        ck_assert_int_eq(durability_int(st, "lost"), 0);
        ck_assert_int_eq(durability_int(st, "pending"), 0);
        fprintf(stderr, "full disk: recovered %d ms after the filler went\n", recovered_msec);
        json_object_put(st);
        acked += agent_cycles(d, FULL_CYCLES, NULL), n_cycles += FULL_CYCLES;
        raw_close(r);
        harness_daemon_stop(d);

        d = start_on(mnt);
        w = windows_of(d);
        assert_windows(&w, acked, acked, "a restart after a full disk");
        harness_daemon_stop(d);
        ck_assert_int_eq(history_rows(db, "released", &rel_tokens), n_cycles);
        ck_assert_int_eq(rel_tokens, acked);
        umount(mnt);
        free(filler);
        free(db);
        free(mnt);
}
END_TEST

int main(void) {
        Suite *s = suite_create("durability");
        TCase *tc = harness_tcase("durability", 120);

        tcase_add_test(tc, test_kill_mid_load);
        tcase_add_test(tc, test_clean_stop);
        tcase_add_test(tc, test_memory_only);
        tcase_add_test(tc, test_refused_files);
        tcase_add_test(tc, test_missing_created);
        tcase_add_test(tc, test_restart_live_process);
        tcase_add_test(tc, test_damaged_history_page);
        suite_add_tcase(s, tc);
        tc = harness_tcase("root", 120);
        tb_check_tag_root(tc);
        tcase_add_test(tc, test_read_only_dir);
        tcase_add_test(tc, test_full_disk);
        suite_add_tcase(s, tc);
        return harness_main(s);
}
