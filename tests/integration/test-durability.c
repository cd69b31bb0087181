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
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tb-check.h"

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
        char *dir;

        ck_assert_int_ge(asprintf(&dir, "%s/%s-%d", harness_dir(), name, (int)getpid()), 0);
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

/* One cycle on a raw connection; the id granted in id (ID_SIZE). */
static void cycle(RawConn *r, int in, int out, char *id, bool release) {
        json_object *g = harness_callf(r, "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":"
                                          "{\"estimate\":100}}"),
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

__attribute__((unused)) static void sql_exec(const char *db, const char *sql) {
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

        if (getenv("DUR_DEBUG")) {
                char cmd[600];
                snprintf(cmd, sizeof(cmd), "rm -rf /tmp/dbg-kill; cp -a %s /tmp/dbg-kill", dir);
                (void)!system(cmd);
                for (int i = 0; i < N_AGENTS; i++)
                        fprintf(stderr, "agent %d state %d last id %s\n", i, agents[i].state,
                                agents[i].n_ids ? agents[i].ids[agents[i].n_ids - 1] : "-");
        }
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

int main(void) {
        Suite *s = suite_create("durability");
        TCase *tc = harness_tcase("durability", 120);

        tcase_add_test(tc, test_kill_mid_load);
        suite_add_tcase(s, tc);
        return harness_main(s);
}
