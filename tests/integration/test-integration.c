/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of the allocation lifecycle against the real tokenbudgetd
 * through the real libtokenbudget: a full request/report/release cycle with
 * exact thresholds, ownership, 64 clients racing for one small budget,
 * connections and processes that die with open allocations, the service
 * interface, and PermissionDenied for steering calls from another uid. Limits,
 * bad input and the command line tools have their own test files.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "tb-check.h"

#include <errno.h>
#include <grp.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- 1. the full cycle ---------------------------------------------------- */

/* hard_multiplier 2.5 makes ceil() visible: 333 * 2.5 = 832.5 → 833. */
static const char cycle_config[] = "default_estimate = 1000;\n"
                                   "max_request_tokens = 50000;\n"
                                   "warn_multiplier = 1.5;\n"
                                   "hard_multiplier = 2.5;\n";

static const struct request_row {
        int64_t estimate; /* < 0: not sent */
        const char *decision;
        uint64_t granted, warn_at, hard_limit;
} request_rows[] = {
        {-1, "granted", 1000, 1500, 2500},         /* default_estimate */
        {333, "granted", 333, 500, 833},           /* ceil of 499.5 and 832.5 */
        {1, "granted", 1, 2, 3},                   /* ceil of 1.5 and 2.5 */
        {50000, "granted", 50000, 75000, 125000},  /* exactly max_request_tokens */
        {50001, "degraded", 50000, 75000, 125000}, /* clamped */
};

static const struct report_row {
        uint64_t input, output;
        int rc;
        tb_state state;
        uint64_t used;
        const char *parameter; /* named in the error when rc < 0 */
} report_rows[] = {
        /* allocation 0: granted 1000, warnAt 1500, hardLimit 2500 */
        {100, 200, 0, TB_STATE_OK, 300, NULL},
        {700, 799, 0, TB_STATE_OK, 1499, NULL},
        {700, 800, 0, TB_STATE_WARNING, 1500, NULL}, /* exactly warnAt */
        {700, 800, 0, TB_STATE_WARNING, 1500, NULL}, /* retried: harmless */
        {1000, 1499, 0, TB_STATE_WARNING, 2499, NULL},
        {1000, 1500, 0, TB_STATE_EXCEEDED, 2500, NULL}, /* exactly hardLimit */
        {999, 1600, -EINVAL, 0, 0, "inputTokens"},      /* input went down */
        {1000, 1499, -EINVAL, 0, 0, "outputTokens"},    /* output went down */
        {1000, 2000, 0, TB_STATE_EXCEEDED, 3000, NULL}, /* past the hard limit: still accounted */
        {1000, 2000, 0, TB_STATE_EXCEEDED, 3000, NULL},
};

static void assert_settled(tb_client *admin, int64_t committed, const char *what) {
        json_object *st = harness_admin(admin, "Status");
        json_object *global = status_scope(st, "global");

        ck_assert_msg(global, "%s: Status has no \"global\" scope: %s", what,
                      json_object_to_json_string(st));
        ck_assert_msg(json_int(global, "committed", what) == committed,
                      "%s: global committed is %" PRId64 ", expected %" PRId64, what,
                      json_int(global, "committed", what), committed);
        ck_assert_msg(json_int(global, "reserved", what) == 0,
                      "%s: global reserved is %" PRId64 ", expected 0", what,
                      json_int(global, "reserved", what));
        ck_assert_msg(json_int(st, "reserved", what) == 0, "%s: Status reserved is %" PRId64 ", expected 0",
                      what, json_int(st, "reserved", what));
        ck_assert_msg(json_int(st, "allocations", what) == 0,
                      "%s: Status allocations is %" PRId64 ", expected 0", what,
                      json_int(st, "allocations", what));
        json_object_put(st);
}

static void cycle_requests(tb_client *c, tb_grant *grants) {
        for (size_t i = 0; i < sizeof(request_rows) / sizeof(request_rows[0]); i++) {
                const struct request_row *row = &request_rows[i];
                tb_request_params p = {.estimate = row->estimate > 0 ? (uint64_t)row->estimate : 0,
                                       .task_class = "it-cycle"};
                int r = tb_request(c, row->estimate < 0 ? NULL : &p, &grants[i]);

                ck_assert_msg(r == 0, "request row %zu (estimate %" PRId64 "): %d %s", i, row->estimate, r,
                              tb_client_error(c));
                ck_assert_msg(
                        strcmp(grants[i].decision_name, row->decision) == 0 &&
                                grants[i].granted == row->granted && grants[i].warn_at == row->warn_at &&
                                grants[i].hard_limit == row->hard_limit,
                        "request row %zu (estimate %" PRId64 "): got %s granted=%" PRIu64 " warnAt=%" PRIu64
                        " hardLimit=%" PRIu64 ", expected %s %" PRIu64 " %" PRIu64 " %" PRIu64,
                        i, row->estimate, grants[i].decision_name, grants[i].granted, grants[i].warn_at,
                        grants[i].hard_limit, row->decision, row->granted, row->warn_at, row->hard_limit);
                ck_assert_msg(grants[i].allocation[0] && strlen(grants[i].allocation) <= 63,
                              "request row %zu: bad allocation id \"%s\"", i, grants[i].allocation);
        }
}

static void cycle_reports(tb_client *c, const char *id) {
        for (size_t i = 0; i < sizeof(report_rows) / sizeof(report_rows[0]); i++) {
                const struct report_row *row = &report_rows[i];
                tb_report_reply reply;
                int r = tb_report(c,
                                  &(tb_report_params){.allocation = id,
                                                      .input_tokens = row->input,
                                                      .output_tokens = row->output},
                                  &reply);
                tb_state state = reply.state;
                uint64_t used = reply.used;

                ck_assert_msg(r == row->rc,
                              "report row %zu (%" PRIu64 ", %" PRIu64 "): returned %d (%s), expected %d", i,
                              row->input, row->output, r, tb_client_error(c), row->rc);
                if (r < 0) {
                        ck_assert_msg(strstr(tb_client_error(c), row->parameter),
                                      "report row %zu: error \"%s\" does not name %s", i, tb_client_error(c),
                                      row->parameter);
                        continue;
                }
                ck_assert_msg(state == row->state && used == row->used,
                              "report row %zu (%" PRIu64 ", %" PRIu64 "): state %s used %" PRIu64
                              ", expected %s %" PRIu64,
                              i, row->input, row->output, tb_state_to_string(state), used,
                              tb_state_to_string(row->state), row->used);
        }
}

static void assert_release(tb_client *c, const char *id, const uint64_t *in, const uint64_t *out,
                           uint64_t want_used, uint64_t want_refunded, const char *what) {
        tb_release_reply reply;
        int r = tb_release(c,
                           &(tb_release_params){.allocation = id,
                                                .input_tokens = in ? *in : 0,
                                                .output_tokens = out ? *out : 0},
                           &reply);
        uint64_t used = reply.used, refunded = reply.refunded;

        ck_assert_msg(r == 0, "%s: tb_release = %d (%s)", what, r, tb_client_error(c));
        ck_assert_msg(used == want_used && refunded == want_refunded,
                      "%s: used %" PRIu64 " refunded %" PRIu64 ", expected %" PRIu64 " %" PRIu64, what, used,
                      refunded, want_used, want_refunded);
}

START_TEST(test_full_cycle) {
        TestDaemon *d = harness_daemon_start(cycle_config);
        tb_client *c = harness_client(d), *admin = harness_client(d);
        tb_grant g[sizeof(request_rows) / sizeof(request_rows[0])];
        uint64_t in, out;
        int r;

        cycle_requests(c, g);
        cycle_reports(c, g[0].allocation);

        /* 3000 used of a 2500 reservation: all of it committed, nothing refunded. */
        assert_release(c, g[0].allocation, NULL, NULL, 3000, 0, "release of allocation 0 without totals");
        {
                json_object *st = harness_admin(admin, "Status");
                json_object *global = status_scope(st, "global");

                ck_assert_msg(global && json_int(global, "committed", "global") == 3000,
                              "usage past the hard limit not committed: Status %s",
                              json_object_to_json_string(st));
                ck_assert_msg(scope_window_used(global, "minute", NULL) == 3000,
                              "global minute window used is not 3000: %s",
                              json_object_to_json_string(global));
                json_object_put(st);
        }

        ck_assert_msg(tb_report(c,
                                &(tb_report_params){.allocation = g[1].allocation,
                                                    .input_tokens = 100,
                                                    .output_tokens = 100},
                                NULL) == 0,
                      "report on 1: %s", tb_client_error(c));
        in = 150;
        out = 150;
        assert_release(c, g[1].allocation, &in, &out, 300, 833 - 300, "release of allocation 1 with totals");
        assert_release(c, g[2].allocation, NULL, NULL, 0, 3, "release of allocation 2, never reported");
        ck_assert_msg(tb_report(c,
                                &(tb_report_params){.allocation = g[3].allocation,
                                                    .input_tokens = 10,
                                                    .output_tokens = 20},
                                NULL) == 0,
                      "report on 3: %s", tb_client_error(c));
        in = 50;
        assert_release(c, g[3].allocation, &in, NULL, 70, 125000 - 70,
                       "release of allocation 3 with input only");
        out = 5;
        assert_release(c, g[4].allocation, NULL, &out, 5, 125000 - 5,
                       "release of allocation 4 with output only");

        r = tb_release(c, &(tb_release_params){.allocation = g[0].allocation}, NULL);
        ck_assert_msg(r == -ENOENT, "second release of %s returned %d (%s), expected -ENOENT",
                      g[0].allocation, r, tb_client_error(c));
        ck_assert_msg(tb_client_error_name(c) &&
                              strcmp(tb_client_error_name(c), "io.tokenbudget.agent.UnknownAllocation") == 0,
                      "second release: error name %s, expected UnknownAllocation", tb_client_error_name(c));
        ck_assert_msg(strstr(tb_client_error(c), g[0].allocation),
                      "UnknownAllocation \"%s\" does not name %s", tb_client_error(c), g[0].allocation);
        r = tb_report(c,
                      &(tb_report_params){
                              .allocation = g[1].allocation, .input_tokens = 500, .output_tokens = 500},
                      NULL);
        ck_assert_msg(r == -ENOENT, "report after release returned %d (%s), expected -ENOENT", r,
                      tb_client_error(c));

        assert_settled(admin, 3000 + 300 + 0 + 70 + 5, "after all releases");
        tb_client_close(c);
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

/* ---- 2. ownership ---------------------------------------------------------- */

START_TEST(test_not_owner) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *a = harness_client(d), *b = harness_client(d), *admin = harness_client(d);
        tb_request_params p = {.estimate = 100};
        tb_report_reply rep;
        tb_grant g;
        int r;

        ck_assert_msg(tb_request(a, &p, &g) == 0, "request: %s", tb_client_error(a));
        /* Another connection's allocation looks exactly like one that does
         * not exist, so nobody learns which ids are live by asking. */
        for (int i = 0; i < 2; i++) {
                const char *id = i == 0 ? g.allocation : "00000000deadbeef";
                char want[128], got[256];

                r = tb_report(b,
                              &(tb_report_params){.allocation = id, .input_tokens = 10, .output_tokens = 10},
                              NULL);
                ck_assert_msg(r == -ENOENT,
                              "report of %s by another connection returned %d (%s), expected -ENOENT", id, r,
                              tb_client_error(b));
                snprintf(got, sizeof(got), "%s", tb_client_error(b));
                snprintf(want, sizeof(want), "io.tokenbudget.agent.UnknownAllocation: allocation=%s", id);
                ck_assert_msg(strcmp(got, want) == 0,
                              "report of %s by another connection: '%s', expected '%s'", id, got, want);
                r = tb_release(b, &(tb_release_params){.allocation = id}, NULL);
                ck_assert_msg(r == -ENOENT,
                              "release of %s by another connection returned %d (%s), expected -ENOENT", id,
                              r, tb_client_error(b));
        }

        /* The owner is unaffected by the intruder's attempts. */
        ck_assert_msg(tb_report(a,
                                &(tb_report_params){
                                        .allocation = g.allocation, .input_tokens = 30, .output_tokens = 20},
                                &rep) == 0 &&
                              rep.used == 50,
                      "owner's report failed or wrong used %" PRIu64 ": %s", rep.used, tb_client_error(a));
        assert_release(a, g.allocation, NULL, NULL, 50, 150, "owner's release");
        assert_settled(admin, 50, "after another connection's attempts");
        tb_client_close(a);
        tb_client_close(b);
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

/* ---- 3. 64 clients racing for one small budget ------------------------------ */

#define RACE_CLIENTS      64
#define RACE_USEC         1500000
#define RACE_LIMIT_TOKENS 20000
#define RACE_ESTIMATE     100 /* hardLimit 200 with hard_multiplier 2.0 */

static const char race_config[] =
        "hard_multiplier = 2.0;\n"
        "global: { tokens_per_minute = 20000; tokens_per_hour = 0; tokens_per_day = 0; max_tokens_in_flight "
        "= 0; };\n"
        "process: { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; max_tokens_in_flight = "
        "0; };\n"
        "limits: { max_allocations_per_process = 256; max_connections_per_uid = 256; };\n"
        /* The clients spend to their hard limits on purpose (the runaway
         * breaker would cut the one process off) and fill the pool (degraded
         * mode would refuse background requests from 80%). */
        "breaker: { runaway_breaches = 0; pool_threshold = 1.0; pool_release = 0.9; };\n";

typedef struct RaceClient {
        const char *socket_path;
        uint64_t start_usec;
        uint64_t grants, refusals, used_tokens;
        uint64_t min_retry_usec, max_retry_usec;
        char failure[512];
} RaceClient;

/* One grant: report the full hard limit, release without totals. Returns false on failure. */
static bool race_spend(tb_client *c, RaceClient *rc, const tb_grant *g) {
        tb_report_reply rep;
        tb_release_reply rel;
        int r = tb_report(c,
                          &(tb_report_params){.allocation = g->allocation,
                                              .input_tokens = g->hard_limit / 2,
                                              .output_tokens = g->hard_limit - g->hard_limit / 2},
                          &rep);
        tb_state state = rep.state;
        uint64_t used = rep.used, refunded;

        if (r < 0 || state != TB_STATE_EXCEEDED || used != g->hard_limit) {
                snprintf(rc->failure, sizeof(rc->failure),
                         "report of the hard limit: r=%d state=%s used=%" PRIu64 " (%s)", r,
                         tb_state_to_string(state), used, tb_client_error(c));
                return false;
        }
        r = tb_release(c, &(tb_release_params){.allocation = g->allocation}, &rel);
        used = rel.used;
        refunded = rel.refunded;
        if (r < 0 || used != g->hard_limit || refunded != 0) {
                snprintf(rc->failure, sizeof(rc->failure),
                         "release: r=%d used=%" PRIu64 " refunded=%" PRIu64 " (%s)", r, used, refunded,
                         tb_client_error(c));
                return false;
        }
        rc->grants++;
        rc->used_tokens += used;
        return true;
}

static bool race_refused(tb_client *c, RaceClient *rc) {
        const char *e = tb_client_error(c);
        uint64_t retry = tb_client_retry_after_usec(c);

        if (!tb_client_error_name(c) ||
            strcmp(tb_client_error_name(c), "io.tokenbudget.agent.BudgetExhausted") != 0 ||
            !strstr(e, "scope=global") || !strstr(e, "retryAfterUsec=")) {
                snprintf(rc->failure, sizeof(rc->failure), "-EDQUOT with unexpected error \"%s\"", e);
                return false;
        }
        rc->refusals++;
        if (rc->min_retry_usec == 0 || retry < rc->min_retry_usec)
                rc->min_retry_usec = retry;
        if (retry > rc->max_retry_usec)
                rc->max_retry_usec = retry;
        harness_sleep_msec(2);
        return true;
}

static void *race_thread(void *arg) {
        RaceClient *rc = arg;
        tb_request_params p = {.estimate = RACE_ESTIMATE, .priority = TB_PRIORITY_BACKGROUND};
        tb_client *c = NULL;
        char *error = NULL;
        int r = tb_client_open(rc->socket_path, &c, &error);

        if (r < 0) {
                snprintf(rc->failure, sizeof(rc->failure), "tb_client_open: %d %s", r, error ? error : "");
                free(error);
                return NULL;
        }
        while (harness_now_usec() < rc->start_usec)
                harness_sleep_msec(1);
        while (harness_now_usec() < rc->start_usec + RACE_USEC) {
                tb_grant g;

                r = tb_request(c, &p, &g);
                if (r == -EDQUOT) {
                        if (!race_refused(c, rc))
                                break;
                        continue;
                }
                if (r < 0) {
                        snprintf(rc->failure, sizeof(rc->failure), "tb_request: %d %s", r,
                                 tb_client_error(c));
                        break;
                }
                if (!race_spend(c, rc, &g))
                        break;
        }
        tb_client_close(c);
        return NULL;
}

START_TEST(test_concurrent_clients) {
        TestDaemon *d = harness_daemon_start(race_config);
        static RaceClient rc[RACE_CLIENTS];
        pthread_t th[RACE_CLIENTS];
        uint64_t grants = 0, refusals = 0, used = 0, start = harness_now_usec() + 300000;
        tb_client *admin;
        json_object *st, *global;
        int64_t limit = 0, window_used;

        for (size_t i = 0; i < RACE_CLIENTS; i++) {
                rc[i] = (RaceClient){.socket_path = d->socket_path, .start_usec = start};
                ck_assert_int_eq(pthread_create(&th[i], NULL, race_thread, &rc[i]), 0);
        }
        for (size_t i = 0; i < RACE_CLIENTS; i++)
                pthread_join(th[i], NULL);
        for (size_t i = 0; i < RACE_CLIENTS; i++) {
                ck_assert_msg(!rc[i].failure[0], "client %zu failed: %s", i, rc[i].failure);
                /* Usage leaves the minute window between 60 and 61 s after it was committed
                 * (one 1 s bucket late, never early: daemon/ledger.h). */
                ck_assert_msg(rc[i].refusals == 0 ||
                                      (rc[i].min_retry_usec > 0 && rc[i].max_retry_usec <= 61000000),
                              "client %zu: retryAfterUsec out of (0, 61 s] for a minute window: %" PRIu64
                              "..%" PRIu64,
                              i, rc[i].min_retry_usec, rc[i].max_retry_usec);
                grants += rc[i].grants;
                refusals += rc[i].refusals;
                used += rc[i].used_tokens;
        }
        ck_assert_msg(refusals > 0, "no request was refused (grants %" PRIu64 ")", grants);

        admin = harness_client(d);
        st = harness_admin(admin, "Status");
        global = status_scope(st, "global");
        ck_assert_msg(global, "no global scope in %s", json_object_to_json_string(st));
        window_used = scope_window_used(global, "minute", &limit);
        ck_assert_msg(limit == RACE_LIMIT_TOKENS, "global minute limit %" PRId64 ", expected %d", limit,
                      RACE_LIMIT_TOKENS);
        ck_assert_msg(window_used <= limit,
                      "global minute window overspent: used %" PRId64 " > limit %" PRId64, window_used,
                      limit);
        ck_assert_msg(json_int(global, "committed", "global") == (int64_t)used,
                      "global committed %" PRId64 " != sum of the clients' usage %" PRIu64 " (%" PRIu64
                      " grants)",
                      json_int(global, "committed", "global"), used, grants);
        ck_assert_msg(window_used == (int64_t)used,
                      "global minute used %" PRId64 " != clients' usage %" PRIu64, window_used, used);
        /* Reservations of 200 fill 20000 exactly: every one of the 100 must have been granted. */
        ck_assert_msg(grants == RACE_LIMIT_TOKENS / (2 * RACE_ESTIMATE),
                      "%" PRIu64 " grants, expected exactly %d (the budget holds that many reservations)",
                      grants, RACE_LIMIT_TOKENS / (2 * RACE_ESTIMATE));
        ck_assert_msg(json_int(global, "reserved", "global") == 0 && json_int(st, "reserved", "Status") == 0,
                      "reservations left after all clients finished: %s", json_object_to_json_string(st));
        json_object_put(st);
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

/* ---- 4. abrupt disconnects ------------------------------------------------------ */

/* Polls Status for up to 2 s until nothing is reserved or open; returns the last Status. */
static json_object *wait_settled(tb_client *admin) {
        uint64_t deadline = harness_now_usec() + 2000000;

        for (;;) {
                json_object *st = harness_admin(admin, "Status");

                if ((json_int(st, "reserved", "Status") == 0 &&
                     json_int(st, "allocations", "Status") == 0) ||
                    harness_now_usec() >= deadline)
                        return st;
                json_object_put(st);
                harness_sleep_msec(10);
        }
}

static void assert_disconnect_settled(tb_client *admin, int64_t committed, const char *what) {
        json_object *st = wait_settled(admin), *list, *allocs;
        json_object *global = status_scope(st, "global");

        ck_assert_msg(json_int(st, "reserved", what) == 0 && json_int(st, "allocations", what) == 0,
                      "%s: not settled within 2 s: %s", what, json_object_to_json_string(st));
        ck_assert_msg(global && json_int(global, "reserved", what) == 0, "%s: global still reserved: %s",
                      what, json_object_to_json_string(st));
        ck_assert_msg(json_int(global, "committed", what) == committed,
                      "%s: global committed %" PRId64 ", expected the reported %" PRId64, what,
                      json_int(global, "committed", what), committed);
        list = harness_admin(admin, "List");
        ck_assert_msg(json_object_object_get_ex(list, "allocations", &allocs) &&
                              json_object_array_length(allocs) == 0,
                      "%s: List still shows allocations: %s", what, json_object_to_json_string(list));
        json_object_put(list);
        json_object_put(st);
}

/* Runs in a forked child: opens two allocations, reports 300 + 400, tells the parent, waits. */
static void disconnect_child(const char *socket_path, int fd) {
        tb_request_params p1 = {.estimate = 1000}, p2 = {.estimate = 2000};
        tb_client *c = NULL;
        tb_grant g1, g2;

        if (tb_client_open(socket_path, &c, NULL) < 0 || tb_request(c, &p1, &g1) < 0 ||
            tb_request(c, &p2, &g2) < 0 ||
            tb_report(c,
                      &(tb_report_params){
                              .allocation = g1.allocation, .input_tokens = 100, .output_tokens = 200},
                      NULL) < 0 ||
            tb_report(c,
                      &(tb_report_params){
                              .allocation = g2.allocation, .input_tokens = 400, .output_tokens = 0},
                      NULL) < 0) {
                dprintf(fd, "ERR %s\n", c ? tb_client_error(c) : "cannot connect");
                _exit(1);
        }
        dprintf(fd, "OK\n");
        for (;;)
                pause();
}

START_TEST(test_disconnect_killed) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *admin = harness_client(d);
        json_object *list, *allocs;
        struct pollfd pfd;
        char line[256] = "";
        int pipefd[2];
        ssize_t n;
        pid_t pid;

        ck_assert_int_eq(pipe(pipefd), 0);
        pid = fork();
        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                close(pipefd[0]);
                disconnect_child(d->socket_path, pipefd[1]);
        }
        close(pipefd[1]);
        pfd = (struct pollfd){.fd = pipefd[0], .events = POLLIN};
        ck_assert_msg(poll(&pfd, 1, 10000) == 1, "child did not report within 10 s");
        n = read(pipefd[0], line, sizeof(line) - 1);
        ck_assert_msg(n > 0 && strncmp(line, "OK", 2) == 0, "child failed: %s", n > 0 ? line : "(nothing)");
        close(pipefd[0]);

        list = harness_admin(admin, "List");
        ck_assert_msg(json_object_object_get_ex(list, "allocations", &allocs) &&
                              json_object_array_length(allocs) == 2,
                      "List should show the child's 2 allocations: %s", json_object_to_json_string(list));
        for (size_t i = 0; i < 2; i++)
                ck_assert_msg(json_int(json_object_array_get_idx(allocs, i), "pid", "allocation") == pid,
                              "allocation %zu does not belong to the child %d: %s", i, (int)pid,
                              json_object_to_json_string(list));
        json_object_put(list);

        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
        assert_disconnect_settled(admin, 700, "after SIGKILL of the client");
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

START_TEST(test_disconnect_closed) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *admin = harness_client(d), *c = harness_client(d);
        tb_request_params p = {.estimate = 500};
        tb_grant g1, g2;

        ck_assert_msg(tb_request(c, &p, &g1) == 0 && tb_request(c, &p, &g2) == 0, "request: %s",
                      tb_client_error(c));
        ck_assert_msg(tb_report(c,
                                &(tb_report_params){.allocation = g1.allocation,
                                                    .input_tokens = 50,
                                                    .output_tokens = 50},
                                NULL) == 0,
                      "report: %s", tb_client_error(c));
        ck_assert_msg(tb_report(c,
                                &(tb_report_params){
                                        .allocation = g2.allocation, .input_tokens = 0, .output_tokens = 30},
                                NULL) == 0,
                      "report: %s", tb_client_error(c));
        c = tb_client_close(c);
        assert_disconnect_settled(admin, 130, "after the client closed its socket");
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

/* ---- 7. the service interface --------------------------------------------------- */

static const char *const interfaces[] = {"org.varlink.service", "io.tokenbudget.agent",
                                         "io.tokenbudget.admin"};

START_TEST(test_get_info) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *c = harness_client(d);
        json_object *info, *list;
        char *text = NULL;
        int r = tb_call(c, "org.varlink.service.GetInfo", NULL, &text);

        ck_assert_msg(r == 0, "GetInfo: %d %s", r, tb_client_error(c));
        info = json_tokener_parse(text);
        ck_assert_msg(info, "GetInfo reply is not JSON: %s", text);
        ck_assert_str_eq(json_str(info, "vendor", "GetInfo"), "tokenbudget");
        ck_assert_str_eq(json_str(info, "product", "GetInfo"), "tokenbudgetd");
        ck_assert_str_eq(json_str(info, "version", "GetInfo"), "0.1.0");
        ck_assert_str_eq(json_str(info, "url", "GetInfo"), "man:tokenbudgetd(8)");
        ck_assert_msg(json_object_object_get_ex(info, "interfaces", &list) &&
                              json_object_array_length(list) == 3,
                      "GetInfo interfaces should have 3 entries: %s", text);
        for (size_t i = 0; i < 3; i++)
                ck_assert_msg(strcmp(json_object_get_string(json_object_array_get_idx(list, i)),
                                     interfaces[i]) == 0,
                              "GetInfo interfaces[%zu] is not %s: %s", i, interfaces[i], text);
        free(text);
        json_object_put(info);
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

START_TEST(test_interface_descriptions) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *c = harness_client(d);
        char *text = NULL;
        int r;

        for (size_t i = 0; i < 3; i++) {
                char path[512], params[128];
                char *file, *reply = NULL;
                json_object *o;

                snprintf(path, sizeof(path), "%s/protocol/%s.varlink", harness_env("SRCDIR"), interfaces[i]);
                file = harness_read_file(path, NULL);
                ck_assert_msg(file, "cannot read %s", path);
                snprintf(params, sizeof(params), "{\"interface\":\"%s\"}", interfaces[i]);
                r = tb_call(c, "org.varlink.service.GetInterfaceDescription", params, &reply);
                ck_assert_msg(r == 0, "GetInterfaceDescription(%s): %d %s", interfaces[i], r,
                              tb_client_error(c));
                o = json_tokener_parse(reply);
                ck_assert_msg(o, "reply for %s is not JSON", interfaces[i]);
                ck_assert_msg(strcmp(json_str(o, "description", interfaces[i]), file) == 0,
                              "description of %s differs from %s:\n%s", interfaces[i], path,
                              json_str(o, "description", interfaces[i]));
                json_object_put(o);
                free(reply);
                free(file);
        }
        r = tb_call(c, "org.varlink.service.GetInterfaceDescription", "{\"interface\":\"org.example.none\"}",
                    &text);
        ck_assert_msg(r == -EOPNOTSUPP, "unknown interface: %d (%s), expected -EOPNOTSUPP", r,
                      tb_client_error(c));
        ck_assert_msg(tb_client_error_name(c) &&
                              strcmp(tb_client_error_name(c), "org.varlink.service.InterfaceNotFound") ==
                                      0 &&
                              strstr(tb_client_error(c), "org.example.none"),
                      "unknown interface: error \"%s\", expected InterfaceNotFound naming org.example.none",
                      tb_client_error(c));
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* ---- 8. PermissionDenied ----------------------------------------------------------- */

/* In a forked child running as nobody: steering denied; Status, List and the
 * agent calls allowed (what Status and List show a non-admin is test-scopes'). */
static void permission_child(const char *socket_path, int fd) {
        static const char *const methods[] = {"io.tokenbudget.admin.Reload",
                                              "io.tokenbudget.admin.SetLimits"};
        static const char *const params[] = {NULL, "{\"scope\":\"global\",\"tokensPerMinute\":1}"};
        tb_request_params p = {.estimate = 10};
        tb_client *c = NULL;
        char *error = NULL;
        tb_grant g;
        int r;

        if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0 || getuid() != 65534) {
                dprintf(fd, "cannot become uid 65534: %m\n");
                _exit(1);
        }
        r = tb_client_open(socket_path, &c, &error);
        if (r < 0) {
                dprintf(fd, "uid 65534 cannot connect: %d %s\n", r, error ? error : "");
                _exit(1);
        }
        for (size_t i = 0; i < 2; i++) {
                r = tb_call(c, i == 0 ? "io.tokenbudget.admin.Status" : "io.tokenbudget.admin.List", NULL,
                            NULL);
                if (r < 0) {
                        dprintf(fd, "%s as uid 65534 returned %d (%s), expected an answer\n",
                                i == 0 ? "Status" : "List", r, tb_client_error(c));
                        _exit(1);
                }
        }
        for (size_t i = 0; i < 2; i++) {
                r = tb_call(c, methods[i], params[i], NULL);
                if (r != -EACCES || !tb_client_error_name(c) ||
                    strcmp(tb_client_error_name(c), "org.varlink.service.PermissionDenied") != 0) {
                        dprintf(fd, "%s as uid 65534 returned %d (%s), expected -EACCES PermissionDenied\n",
                                methods[i], r, tb_client_error(c));
                        _exit(1);
                }
        }
        r = tb_request(c, &p, &g);
        if (r < 0 || tb_release(c, &(tb_release_params){.allocation = g.allocation}, NULL) < 0) {
                dprintf(fd, "agent calls as uid 65534 failed: %d %s\n", r, tb_client_error(c));
                _exit(1);
        }
        dprintf(fd, "OK\n");
        _exit(0);
}

START_TEST(test_permission_denied) {
        TestDaemon *d;
        char line[512] = "";
        int pipefd[2], status = 0;
        ssize_t n;
        pid_t pid;

        if (!tb_check_need_root("permission_denied: a client of uid 65534"))
                return;
        d = harness_daemon_start("");
        ck_assert_int_eq(pipe(pipefd), 0);
        pid = fork();
        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                close(pipefd[0]);
                permission_child(d->socket_path, pipefd[1]);
        }
        close(pipefd[1]);
        n = read(pipefd[0], line, sizeof(line) - 1);
        close(pipefd[0]);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(n > 0 && strncmp(line, "OK", 2) == 0, "uid 65534 child: %s",
                      n > 0 ? line : "(no answer)");
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "uid 65534 child exited abnormally");
        harness_daemon_stop(d);
}
END_TEST

static Suite *integration_suite(void) {
        Suite *s = suite_create("integration");
        TCase *tc;

        tc = harness_tcase("full_cycle", 30);
        tcase_add_test(tc, test_full_cycle);
        suite_add_tcase(s, tc);
        tc = harness_tcase("not_owner", 30);
        tcase_add_test(tc, test_not_owner);
        suite_add_tcase(s, tc);
        tc = harness_tcase("concurrent_clients", 60);
        tcase_add_test(tc, test_concurrent_clients);
        suite_add_tcase(s, tc);
        tc = harness_tcase("disconnect_killed", 30);
        tcase_add_test(tc, test_disconnect_killed);
        suite_add_tcase(s, tc);
        tc = harness_tcase("disconnect_closed", 30);
        tcase_add_test(tc, test_disconnect_closed);
        suite_add_tcase(s, tc);
        tc = harness_tcase("service_interface", 30);
        tcase_add_test(tc, test_get_info);
        tcase_add_test(tc, test_interface_descriptions);
        suite_add_tcase(s, tc);
        tc = harness_tcase("permission_denied", 30);
        tb_check_tag_root(tc);
        tcase_add_test(tc, test_permission_denied);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return harness_main(integration_suite());
}
