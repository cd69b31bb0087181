/* SPDX-License-Identifier: MIT */
/*
 * io.tokenbudget.admin.History and budgetctl history against the real
 * daemon: a database prefilled with the store API (daemon/store.h) in a
 * state directory of the test, the daemon started on it, then raw Varlink
 * calls (every grouping with its exact sums, since/until, the day offset,
 * each refused parameter, the cap on groups) and the real budgetctl (every
 * --by, --since/--until in several forms, --json, bad arguments naming
 * themselves). A non-admin (uid 65534, root only) sees its own rows and is
 * refused another uid's; a memory-only daemon answers HistoryUnavailable,
 * which budgetctl says in words.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "store.h"
#include "tb-check.h"

#define SEC              UINT64_C(1000000)
#define HOUR_SEC         UINT64_C(3600)
#define DAY_SEC          UINT64_C(86400)
#define RUN_TIMEOUT_MSEC 10000
#define OTHER_UID        65534

/* The day the rows start: UTC midnight three days ago (inside the daemon's
 * 90 days of retention, so its pruning leaves them). */
static uint64_t d0_sec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t)ts.tv_sec / DAY_SEC * DAY_SEC - 3 * DAY_SEC;
}

static const char *const scopes[] = {"global"};

typedef struct Row {
        uint64_t offset_sec; /* after d0 */
        uint32_t uid;
        const char *user, *unit, *agent, *class_name, *model;
        uint64_t granted, input, output, count;
        StoreOutcome outcome;
} Row;

/* Five rows; what each grouping must add up to is in the tests below. */
static const Row rows[] = {
        {10 * HOUR_SEC, 0, "root", "a.service", "ops", "interactive", "big", 100, 40, 2, 1,
         STORE_OUTCOME_RELEASED},
        {10 * HOUR_SEC + 1800, 1000, "alice", "b.service", "coder", "batch", "small", 200, 50, 5, 1,
         STORE_OUTCOME_RELEASED},
        {11 * HOUR_SEC, 1000, "alice", "b.service", "coder", "batch", "small", 0, 0, 0, 3,
         STORE_OUTCOME_REFUSED},
        {DAY_SEC + 2 * HOUR_SEC, OTHER_UID, "nobody", NULL, NULL, NULL, NULL, 300, 60, 6, 1,
         STORE_OUTCOME_ABANDONED},
        {2 * DAY_SEC + 23 * HOUR_SEC, 1000, "alice", "b.service", "coder", "batch", "big", 400, 70, 7, 1,
         STORE_OUTCOME_EXPIRED},
};

static void add_row(Store *s, uint64_t d0, const Row *r) {
        StoreHistoryRow h = {
                .realtime_usec = (d0 + r->offset_sec) * SEC,
                .uid = r->uid,
                .user = r->user,
                .unit = r->unit,
                .comm = "agent",
                .agent = r->agent,
                .class_name = r->class_name,
                .model = r->model,
                .estimate = 100,
                .granted = r->granted,
                .input = r->input,
                .output = r->output,
                .outcome = r->outcome,
                .count = r->count,
                .scopes = scopes,
                .n_scopes = 1,
        };

        ck_assert_int_eq(store_add_history(s, &h), 0);
}

/* A fresh state directory under the TCase's directory (which its tests
 * share: each runs in a process of its own). */
static char *state_dir(const char *name) {
        char *dir;

        ck_assert_int_ge(asprintf(&dir, "%s/%s-%d", harness_dir(), name, (int)getpid()), 0);
        ck_assert_msg(mkdir(dir, 0700) == 0, "%s: %s", dir, strerror(errno));
        return dir;
}

static Store *store_at(const char *dir) {
        char path[512], *reason = NULL;
        Store *s = NULL;
        int r;

        snprintf(path, sizeof(path), "%s/tokenbudget.db", dir);
        r = store_open(path, STORE_SYNC_NORMAL, 0, &s, &reason);
        ck_assert_msg(r == 0, "store_open(%s): %d: %s", path, r, reason ?: "(no reason)");
        return s;
}

/* The five rows in a new state directory; the daemon on it. */
static TestDaemon *daemon_with_rows(uint64_t d0) {
        char *dir = state_dir("state-rows");
        Store *s = store_at(dir);
        HarnessDaemonOptions o = {.state_dir = dir};
        TestDaemon *d;

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
                add_row(s, d0, &rows[i]);
        ck_assert_int_eq(store_commit(s), 0);
        store_free(s);
        d = harness_daemon_start_with("", &o);
        free(dir);
        return d;
}

/* The parameters of a History reply (fails on an error reply). */
static json_object *history_ok(json_object *reply, const char *call) {
        const char *e = reply_error(reply);

        ck_assert_msg(!e, "%s: error %s: %s", call, e, json_object_to_json_string(reply));
        return reply_parameters(reply);
}

/* One group as the test writes it: "KEY|UID|START requests refused in out granted". */
static void group_text(json_object *g, char *buf, size_t size) {
        json_object *key = json_object_object_get(g, "key"), *uid = json_object_object_get(g, "uid"),
                    *start = json_object_object_get(g, "start");

        snprintf(buf, size, "%s|%s|%s %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64,
                 key ? json_object_get_string(key) : "-", uid ? json_object_get_string(uid) : "-",
                 start ? json_object_get_string(start) : "-", json_int(g, "requests", "group"),
                 json_int(g, "refused", "group"), json_int(g, "tokensIn", "group"),
                 json_int(g, "tokensOut", "group"), json_int(g, "granted", "group"));
}

/* Calls History with the parameters (a JSON object's inside) and compares
 * the groups with want (one group_text() each, then NULL). */
static json_object *expect_groups(RawConn *c, const char *params, const char *const *want) {
        json_object *reply, *p, *groups;
        char call[512], got[256];
        size_t n = 0;

        snprintf(call, sizeof(call), "{\"method\":\"io.tokenbudget.admin.History\",\"parameters\":{%s}}",
                 params);
        reply = raw_call(c, call, call);
        p = history_ok(reply, call);
        ck_assert_msg(json_object_object_get_ex(p, "groups", &groups) &&
                              json_object_is_type(groups, json_type_array),
                      "%s: no groups: %s", call, json_object_to_json_string(p));
        while (want[n])
                n++;
        ck_assert_msg(json_object_array_length(groups) == n, "%s: %zu groups, want %zu: %s", call,
                      json_object_array_length(groups), n, json_object_to_json_string(groups));
        for (size_t i = 0; i < n; i++) {
                group_text(json_object_array_get_idx(groups, i), got, sizeof(got));
                ck_assert_msg(strcmp(got, want[i]) == 0, "%s: group %zu is '%s', want '%s'", call, i, got,
                              want[i]);
        }
        return reply;
}

static void expect_groups_put(RawConn *c, const char *params, const char *const *want) {
        json_object_put(expect_groups(c, params, want));
}

/* A start (realtime µs) as the decimal text group_text() shows. */
static const char *usec_text(char buf[static 32], uint64_t sec) {
        snprintf(buf, 32, "%" PRIu64, sec * SEC);
        return buf;
}

/* ---- the raw interface ---- */

START_TEST(test_groupings) {
        uint64_t d0 = d0_sec();
        TestDaemon *d = daemon_with_rows(d0);
        RawConn *c = harness_open_working(d, "history");
        char w[8][128], t[4][32];

        /* Users: by uid, with the name last seen. */
        expect_groups_put(c, "\"by\":\"user\"",
                          (const char *const[]){"root|0|- 1 0 40 2 100", "alice|1000|- 2 3 120 12 600",
                                                "nobody|65534|- 1 0 60 6 300", NULL});
        /* The rows without a unit, agent, class or model first, with no key. */
        expect_groups_put(c, "\"by\":\"unit\"",
                          (const char *const[]){"-|-|- 1 0 60 6 300", "a.service|-|- 1 0 40 2 100",
                                                "b.service|-|- 2 3 120 12 600", NULL});
        expect_groups_put(c, "\"by\":\"agent\"",
                          (const char *const[]){"-|-|- 1 0 60 6 300", "coder|-|- 2 3 120 12 600",
                                                "ops|-|- 1 0 40 2 100", NULL});
        expect_groups_put(c, "\"by\":\"class\"",
                          (const char *const[]){"-|-|- 1 0 60 6 300", "batch|-|- 2 3 120 12 600",
                                                "interactive|-|- 1 0 40 2 100", NULL});
        expect_groups_put(c, "\"by\":\"model\"",
                          (const char *const[]){"-|-|- 1 0 60 6 300", "big|-|- 2 0 110 9 500",
                                                "small|-|- 1 3 50 5 200", NULL});
        /* Hours: the start of each UTC hour. */
        snprintf(w[0], sizeof(w[0]), "-|-|%s 2 0 90 7 300", usec_text(t[0], d0 + 10 * HOUR_SEC));
        snprintf(w[1], sizeof(w[1]), "-|-|%s 0 3 0 0 0", usec_text(t[1], d0 + 11 * HOUR_SEC));
        snprintf(w[2], sizeof(w[2]), "-|-|%s 1 0 60 6 300", usec_text(t[2], d0 + DAY_SEC + 2 * HOUR_SEC));
        snprintf(w[3], sizeof(w[3]), "-|-|%s 1 0 70 7 400",
                 usec_text(t[3], d0 + 2 * DAY_SEC + 23 * HOUR_SEC));
        expect_groups_put(c, "\"by\":\"hour\"", (const char *const[]){w[0], w[1], w[2], w[3], NULL});
        /* Days in UTC, the default grouping and offset. */
        snprintf(w[0], sizeof(w[0]), "-|-|%s 2 3 90 7 300", usec_text(t[0], d0));
        snprintf(w[1], sizeof(w[1]), "-|-|%s 1 0 60 6 300", usec_text(t[1], d0 + DAY_SEC));
        snprintf(w[2], sizeof(w[2]), "-|-|%s 1 0 70 7 400", usec_text(t[2], d0 + 2 * DAY_SEC));
        expect_groups_put(c, "", (const char *const[]){w[0], w[1], w[2], NULL});
        expect_groups_put(c, "\"by\":\"day\",\"utcOffsetSec\":0",
                          (const char *const[]){w[0], w[1], w[2], NULL});
        harness_daemon_stop(d);
        raw_close(c);
}
END_TEST

START_TEST(test_day_offsets) {
        uint64_t d0 = d0_sec();
        TestDaemon *d = daemon_with_rows(d0);
        RawConn *c = harness_open_working(d, "history");
        char w[4][128], t[4][32], params[64];

        /* UTC+02:00: the last row (23:00 UTC) is 01:00 of the next local day. */
        snprintf(w[0], sizeof(w[0]), "-|-|%s 2 3 90 7 300", usec_text(t[0], d0 - 2 * HOUR_SEC));
        snprintf(w[1], sizeof(w[1]), "-|-|%s 1 0 60 6 300", usec_text(t[1], d0 + DAY_SEC - 2 * HOUR_SEC));
        snprintf(w[2], sizeof(w[2]), "-|-|%s 1 0 70 7 400",
                 usec_text(t[2], d0 + 3 * DAY_SEC - 2 * HOUR_SEC));
        expect_groups_put(c, "\"by\":\"day\",\"utcOffsetSec\":7200",
                          (const char *const[]){w[0], w[1], w[2], NULL});
        /* UTC-05:00, sent modulo a day (68400): 02:00 UTC of the second day is
         * 21:00 of the first local day, which begins at 05:00 UTC. */
        snprintf(params, sizeof(params), "\"by\":\"day\",\"utcOffsetSec\":%u", 86400 - 5 * 3600);
        snprintf(w[0], sizeof(w[0]), "-|-|%s 3 3 150 13 600", usec_text(t[0], d0 + 5 * HOUR_SEC));
        snprintf(w[1], sizeof(w[1]), "-|-|%s 1 0 70 7 400",
                 usec_text(t[1], d0 + 2 * DAY_SEC + 5 * HOUR_SEC));
        expect_groups_put(c, params, (const char *const[]){w[0], w[1], NULL});
        harness_daemon_stop(d);
        raw_close(c);
}
END_TEST

START_TEST(test_since_until) {
        uint64_t d0 = d0_sec();
        TestDaemon *d = daemon_with_rows(d0);
        RawConn *c = harness_open_working(d, "history");
        char params[160];
        json_object *reply, *p;

        /* [10:30, next day 03:00): rows 2, 3 and 4; until is not included. */
        snprintf(params, sizeof(params), "\"by\":\"user\",\"since\":%" PRIu64 ",\"until\":%" PRIu64,
                 (d0 + 10 * HOUR_SEC + 1800) * SEC, (d0 + DAY_SEC + 2 * HOUR_SEC) * SEC);
        expect_groups_put(c, params, (const char *const[]){"alice|1000|- 1 3 50 5 200", NULL});
        snprintf(params, sizeof(params), "\"by\":\"user\",\"since\":%" PRIu64 ",\"until\":%" PRIu64,
                 (d0 + 10 * HOUR_SEC + 1800) * SEC, (d0 + DAY_SEC + 2 * HOUR_SEC) * SEC + 1);
        reply = expect_groups(
                c, params,
                (const char *const[]){"alice|1000|- 1 3 50 5 200", "nobody|65534|- 1 0 60 6 300", NULL});
        /* The reply says what it answered. */
        p = reply_parameters(reply);
        ck_assert_str_eq(json_str(p, "by", "reply"), "user");
        ck_assert_int_eq(json_int(p, "since", "reply"), (int64_t)((d0 + 10 * HOUR_SEC + 1800) * SEC));
        ck_assert_int_eq(json_int(p, "until", "reply"), (int64_t)((d0 + DAY_SEC + 2 * HOUR_SEC) * SEC + 1));
        ck_assert(!json_object_get_boolean(json_object_object_get(p, "truncated")));
        json_object_put(reply);
        /* since alone; until absent in the reply. */
        snprintf(params, sizeof(params), "\"by\":\"model\",\"since\":%" PRIu64, (d0 + 2 * DAY_SEC) * SEC);
        reply = expect_groups(c, params, (const char *const[]){"big|-|- 1 0 70 7 400", NULL});
        ck_assert_ptr_null(json_object_object_get(reply_parameters(reply), "until"));
        json_object_put(reply);
        /* An empty range is no error. */
        snprintf(params, sizeof(params), "\"since\":%" PRIu64 ",\"until\":%" PRIu64, d0 * SEC, d0 * SEC);
        expect_groups_put(c, params, (const char *const[]){NULL});
        harness_daemon_stop(d);
        raw_close(c);
}
END_TEST

/* The InvalidParameter named for each bad query. */
START_TEST(test_invalid) {
        static const struct {
                const char *params, *parameter;
        } bad[] = {
                {"\"by\":\"week\"", "by"},
                {"\"by\":\"\"", "by"},
                {"\"by\":7", "by"},
                {"\"since\":200,\"until\":100", "until"},
                {"\"until\":0", "until"},
                {"\"since\":-1", "since"},
                {"\"since\":1.5", "since"},
                {"\"until\":\"tomorrow\"", "until"},
                {"\"utcOffsetSec\":86400", "utcOffsetSec"},
                {"\"utcOffsetSec\":-3600", "utcOffsetSec"},
                {"\"uid\":4294967295", "uid"},
                {"\"group\":\"day\"", "group"},
        };
        TestDaemon *d = daemon_with_rows(d0_sec());
        RawConn *c = harness_open_working(d, "history");

        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                json_object *reply =
                        harness_callf(c, "{\"method\":\"io.tokenbudget.admin.History\",\"parameters\":{%s}}",
                                      bad[i].params);
                const char *e = reply_error(reply);

                ck_assert_msg(e && strcmp(e, "org.varlink.service.InvalidParameter") == 0, "{%s}: %s",
                              bad[i].params, json_object_to_json_string(reply));
                ck_assert_str_eq(json_str(reply_parameters(reply), "parameter", bad[i].params),
                                 bad[i].parameter);
                json_object_put(reply);
        }
        harness_daemon_stop(d);
        raw_close(c);
}
END_TEST

/* More groups than a reply holds: the first 10000, and truncated. */
START_TEST(test_truncated) {
        char *dir = state_dir("state-many"), agent[32];
        Store *s = store_at(dir);
        HarnessDaemonOptions o = {.state_dir = dir};
        uint64_t d0 = d0_sec();
        TestDaemon *d;
        RawConn *c;
        json_object *reply, *p, *groups;
        CommandResult res;

        for (unsigned i = 0; i < 10001; i++) {
                Row r = {HOUR_SEC + i, 1000, "alice", "b.service", agent, "batch",
                         "small",      10,   1,       1,           1,     STORE_OUTCOME_RELEASED};

                snprintf(agent, sizeof(agent), "agent-%05u", i);
                add_row(s, d0, &r);
        }
        ck_assert_int_eq(store_commit(s), 0);
        store_free(s);
        d = harness_daemon_start_with("", &o);
        c = harness_open_working(d, "history");
        reply = harness_callf(
                c, "{\"method\":\"io.tokenbudget.admin.History\",\"parameters\":{\"by\":\"agent\"}}");
        p = history_ok(reply, "History by agent");
        ck_assert(json_object_get_boolean(json_object_object_get(p, "truncated")));
        ck_assert(json_object_object_get_ex(p, "groups", &groups));
        ck_assert_uint_eq(json_object_array_length(groups), 10000);
        ck_assert_str_eq(json_str(json_object_array_get_idx(groups, 9999), "key", "group"), "agent-09999");
        json_object_put(reply);
        /* Fewer: not truncated. */
        reply = harness_callf(
                c, "{\"method\":\"io.tokenbudget.admin.History\",\"parameters\":{\"by\":\"user\"}}");
        ck_assert(
                !json_object_get_boolean(json_object_object_get(history_ok(reply, "by user"), "truncated")));
        json_object_put(reply);
        /* budgetctl says so on stderr, and still prints the rows. */
        harness_run((char *const[]){(char *)harness_env("BUDGETCTL"), "--socket", d->socket_path, "history",
                                    "--by", "agent", NULL},
                    NULL, 6 * RUN_TIMEOUT_MSEC, &res); /* 10,000 rows take >10 s under ASan */
        ck_assert_msg(res.status == 0, "exit %d: %s", res.status, res.err);
        ck_assert_msg(strstr(res.err, "only the first 10000 groups"), "stderr: %s", res.err);
        ck_assert_msg(strstr(res.out, "agent-09999"), "no last group");
        command_result_done(&res);
        harness_daemon_stop(d);
        raw_close(c);
        free(dir);
}
END_TEST

/* ---- budgetctl history ---- */

/* budgetctl --socket PATH history ARGS... in UTC (TZ=UTC0); args NULL-terminated. */
static void history_run(const TestDaemon *d, const char *const *args, CommandResult *ret) {
        char *argv[24] = {(char *)harness_env("BUDGETCTL"), "--socket", (char *)d->socket_path, "history"};
        char *env[] = {"TZ=UTC0", NULL};
        size_t n = 4;

        for (size_t i = 0; args[i]; i++) {
                ck_assert(n + 1 < sizeof(argv) / sizeof(argv[0]));
                argv[n++] = (char *)args[i];
        }
        harness_run(argv, env, RUN_TIMEOUT_MSEC, ret);
}

/* Runs history with args and checks that it succeeded and printed exactly want. */
static void expect_output(const TestDaemon *d, const char *const *args, const char *want) {
        CommandResult res;

        history_run(d, args, &res);
        ck_assert_msg(res.status == 0, "history %s: exit %d: %s", args[0] ?: "", res.status, res.err);
        ck_assert_msg(strcmp(res.out, want) == 0, "history %s %s: printed\n%s\nwant\n%s", args[0] ?: "",
                      args[0] && args[1] ? args[1] : "", res.out, want);
        command_result_done(&res);
}

static void day_text(char buf[static 16], uint64_t sec) {
        time_t t = (time_t)sec;
        struct tm tm;

        gmtime_r(&t, &tm);
        strftime(buf, 16, "%Y-%m-%d", &tm);
}

START_TEST(test_budgetctl_tables) {
        uint64_t d0 = d0_sec();
        TestDaemon *d = daemon_with_rows(d0);
        char want[1024], day[3][16], hour[4][24], since[32], until[32];

        for (int i = 0; i < 3; i++)
                day_text(day[i], d0 + (uint64_t)i * DAY_SEC);
        /* The default: by day, in local time (UTC here), with a total. */
        snprintf(want, sizeof(want),
                 "DAY         REQUESTS  REFUSED  GRANTED  INPUT  OUTPUT\n"
                 "%s         2        3      300     90       7\n"
                 "%s         1        0      300     60       6\n"
                 "%s         1        0      400     70       7\n"
                 "TOTAL              4        3       1k    220      20\n",
                 day[0], day[1], day[2]);
        expect_output(d, (const char *const[]){NULL}, want);
        expect_output(d, (const char *const[]){"--by", "day", "--since", "-4d", NULL}, want);
        /* --no-legend: the rows alone. */
        snprintf(want, sizeof(want),
                 "%s  2  3  300  90  7\n"
                 "%s  1  0  300  60  6\n"
                 "%s  1  0  400  70  7\n",
                 day[0], day[1], day[2]);
        expect_output(d, (const char *const[]){"--no-legend", NULL}, want);
        expect_output(d, (const char *const[]){"--by", "user", NULL},
                      "USER      UID  REQUESTS  REFUSED  GRANTED  INPUT  OUTPUT\n"
                      "root        0         1        0      100     40       2\n"
                      "alice    1000         2        3      600    120      12\n"
                      "nobody  65534         1        0      300     60       6\n"
                      "TOTAL                 4        3       1k    220      20\n");
        expect_output(d, (const char *const[]){"--by", "unit", NULL},
                      "UNIT       REQUESTS  REFUSED  GRANTED  INPUT  OUTPUT\n"
                      "-                 1        0      300     60       6\n"
                      "a.service         1        0      100     40       2\n"
                      "b.service         2        3      600    120      12\n"
                      "TOTAL             4        3       1k    220      20\n");
        expect_output(d, (const char *const[]){"--by", "agent", NULL},
                      "AGENT  REQUESTS  REFUSED  GRANTED  INPUT  OUTPUT\n"
                      "-             1        0      300     60       6\n"
                      "coder         2        3      600    120      12\n"
                      "ops           1        0      100     40       2\n"
                      "TOTAL         4        3       1k    220      20\n");
        expect_output(d, (const char *const[]){"--by", "class", NULL},
                      "CLASS        REQUESTS  REFUSED  GRANTED  INPUT  OUTPUT\n"
                      "-                   1        0      300     60       6\n"
                      "batch               2        3      600    120      12\n"
                      "interactive         1        0      100     40       2\n"
                      "TOTAL               4        3       1k    220      20\n");
        expect_output(d, (const char *const[]){"--by", "model", NULL},
                      "MODEL  REQUESTS  REFUSED  GRANTED  INPUT  OUTPUT\n"
                      "-             1        0      300     60       6\n"
                      "big           2        0      500    110       9\n"
                      "small         1        3      200     50       5\n"
                      "TOTAL         4        3       1k    220      20\n");
        snprintf(hour[0], sizeof(hour[0]), "%s 10:00", day[0]);
        snprintf(hour[1], sizeof(hour[1]), "%s 11:00", day[0]);
        snprintf(hour[2], sizeof(hour[2]), "%s 02:00", day[1]);
        snprintf(hour[3], sizeof(hour[3]), "%s 23:00", day[2]);
        snprintf(want, sizeof(want),
                 "HOUR              REQUESTS  REFUSED  GRANTED  INPUT  OUTPUT\n"
                 "%s         2        0      300     90       7\n"
                 "%s         0        3        0      0       0\n"
                 "%s         1        0      300     60       6\n"
                 "%s         1        0      400     70       7\n"
                 "TOTAL                    4        3       1k    220      20\n",
                 hour[0], hour[1], hour[2], hour[3]);
        expect_output(d, (const char *const[]){"--by", "hour", NULL}, want);
        /* --since and --until as dates, ISO times and @EPOCH: [day 1 00:00, day 2 23:00). */
        snprintf(since, sizeof(since), "%s", day[1]);
        snprintf(until, sizeof(until), "%sT23:00:00", day[2]);
        snprintf(want, sizeof(want),
                 "HOUR              REQUESTS  REFUSED  GRANTED  INPUT  OUTPUT\n"
                 "%s         1        0      300     60       6\n",
                 hour[2]);
        expect_output(d, (const char *const[]){"--by", "hour", "--since", since, "--until", until, NULL},
                      want);
        snprintf(since, sizeof(since), "@%" PRIu64, d0 + DAY_SEC);
        snprintf(until, sizeof(until), "@%" PRIu64, d0 + 2 * DAY_SEC + 23 * HOUR_SEC);
        expect_output(d, (const char *const[]){"-S", since, "-U", until, "--by", "hour", NULL}, want);
        /* yesterday (UTC) is day 2: the last row only. */
        snprintf(want, sizeof(want),
                 "DAY         REQUESTS  REFUSED  GRANTED  INPUT  OUTPUT\n"
                 "%s         1        0      400     70       7\n",
                 day[2]);
        expect_output(d, (const char *const[]){"--since", "yesterday", NULL}, want);
        /* Nothing in the last hour. */
        {
                CommandResult res;

                history_run(d, (const char *const[]){"--since", "-1h", NULL}, &res);
                ck_assert_msg(res.status == 0, "exit %d: %s", res.status, res.err);
                ck_assert_msg(strncmp(res.out, "No history since ", 17) == 0, "printed %s", res.out);
                command_result_done(&res);
        }
        harness_daemon_stop(d);
}
END_TEST

/* No rows: one line saying which range was empty. */
START_TEST(test_budgetctl_empty) {
        HarnessDaemonOptions o = {0}; /* a fresh state directory of its own: no rows */
        TestDaemon *d = harness_daemon_start_with("", &o);

        expect_output(d, (const char *const[]){NULL}, "No history.\n");
        expect_output(d, (const char *const[]){"--by", "user", "--since", "2026-12-01 10:00", NULL},
                      "No history since 2026-12-01 10:00:00.\n");
        expect_output(d, (const char *const[]){"--until", "@1764547200", NULL},
                      "No history before 2025-12-01 00:00:00.\n");
        expect_output(d,
                      (const char *const[]){"--since", "2026-12-01", "--until", "2026-12-01T12:00Z", NULL},
                      "No history from 2026-12-01 00:00:00 until 2026-12-01 12:00:00.\n");
        expect_output(d, (const char *const[]){"--no-legend", NULL}, "");
        harness_daemon_stop(d);
}
END_TEST

START_TEST(test_budgetctl_json) {
        uint64_t d0 = d0_sec();
        TestDaemon *d = daemon_with_rows(d0);
        CommandResult res;
        json_object *o, *groups, *g;
        char since[32];

        snprintf(since, sizeof(since), "@%" PRIu64, d0 + DAY_SEC);
        history_run(d, (const char *const[]){"--json", "--by", "user", "--since", since, NULL}, &res);
        ck_assert_msg(res.status == 0, "exit %d: %s", res.status, res.err);
        o = json_tokener_parse(res.out);
        ck_assert_msg(o, "not JSON: %s", res.out);
        ck_assert_str_eq(json_str(o, "by", "--json"), "user");
        ck_assert_int_eq(json_int(o, "since", "--json"), (int64_t)((d0 + DAY_SEC) * SEC));
        ck_assert(json_object_object_get_ex(o, "groups", &groups));
        ck_assert_uint_eq(json_object_array_length(groups), 2);
        g = json_object_array_get_idx(groups, 0);
        ck_assert_int_eq(json_int(g, "uid", "groups[0]"), 1000);
        ck_assert_str_eq(json_str(g, "key", "groups[0]"), "alice");
        ck_assert_int_eq(json_int(g, "tokensIn", "groups[0]"), 70);
        g = json_object_array_get_idx(groups, 1);
        ck_assert_int_eq(json_int(g, "uid", "groups[1]"), OTHER_UID);
        ck_assert_int_eq(json_int(g, "granted", "groups[1]"), 300);
        json_object_put(o);
        command_result_done(&res);
        harness_daemon_stop(d);
}
END_TEST

/* Bad arguments: exit 2 with the argument named, before anything is sent
 * (the socket does not exist). */
START_TEST(test_budgetctl_usage) {
        static const struct {
                const char *args[5];
                const char *want;
        } bad[] = {
                {{"--by", "week"},
                 "invalid --by 'week': expected user, unit, agent, class, model, hour or day"},
                {{"--since", "soon"}, "invalid --since 'soon': expected a time"},
                {{"--since", "1h"}, "invalid --since '1h': a relative time needs a sign"},
                {{"--until", "-1x"}, "invalid --until '-1x': unknown time unit"},
                {{"--since", "2026-13-01"}, "invalid --since '2026-13-01': the month is out of range"},
                {{"--until", "@0"}, "invalid --until '@0': nothing is before the epoch"},
                {{"--since", "today", "--until", "yesterday"}, "--since 'today' ("},
                {{"--user", "no-such-user-here"}, "unknown user 'no-such-user-here'"},
                {{"extra"}, "'history' takes no arguments"},
        };
        char socket_path[300];

        snprintf(socket_path, sizeof(socket_path), "%s/none.sock", harness_dir());
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                char *argv[12] = {(char *)harness_env("BUDGETCTL"), "--socket", socket_path, "history"};
                CommandResult res;
                size_t n = 4;

                for (size_t k = 0; bad[i].args[k]; k++)
                        argv[n++] = (char *)bad[i].args[k];
                harness_run(argv, NULL, RUN_TIMEOUT_MSEC, &res);
                ck_assert_msg(res.status == 2, "%s: exit %d, want 2: %s", bad[i].want, res.status, res.err);
                ck_assert_msg(strstr(res.err, bad[i].want), "stderr '%s' lacks '%s'", res.err, bad[i].want);
                command_result_done(&res);
        }
        /* --since and --by belong to history. */
        {
                char *argv[] = {(char *)harness_env("BUDGETCTL"),
                                "--socket",
                                socket_path,
                                "status",
                                "--since",
                                "-1h",
                                NULL};
                CommandResult res;

                harness_run(argv, NULL, RUN_TIMEOUT_MSEC, &res);
                ck_assert_int_eq(res.status, 2);
                ck_assert_msg(strstr(res.err, "--since applies only to 'history'"), "stderr: %s", res.err);
                command_result_done(&res);
        }
}
END_TEST

/* ---- memory only ---- */

START_TEST(test_memory_only) {
        HarnessDaemonOptions o = {.state_dir = ""};
        TestDaemon *d = harness_daemon_start_with("", &o);
        RawConn *c = harness_open_working(d, "history");
        json_object *reply = harness_callf(c, "{\"method\":\"io.tokenbudget.admin.History\"}");
        const char *e = reply_error(reply);
        CommandResult res;

        ck_assert_msg(e && strcmp(e, "io.tokenbudget.admin.HistoryUnavailable") == 0, "%s",
                      json_object_to_json_string(reply));
        ck_assert_msg(
                strstr(json_str(reply_parameters(reply), "reason", "HistoryUnavailable"), "memory only"),
                "%s", json_object_to_json_string(reply));
        json_object_put(reply);
        /* A bad query is still named first. */
        reply = harness_callf(c,
                              "{\"method\":\"io.tokenbudget.admin.History\",\"parameters\":{\"by\":\"x\"}}");
        ck_assert_str_eq(reply_error(reply), "org.varlink.service.InvalidParameter");
        json_object_put(reply);
        history_run(d, (const char *const[]){NULL}, &res);
        ck_assert_msg(res.status == 1, "exit %d: %s", res.status, res.err);
        ck_assert_msg(strstr(res.err,
                             "budgetctl: no history to show: tokenbudgetd keeps no history: it runs "
                             "memory only"),
                      "stderr: %s", res.err);
        ck_assert_str_eq(res.out, "");
        command_result_done(&res);
        harness_daemon_stop(d);
        raw_close(c);
}
END_TEST

/* ---- who sees what (root: another uid) ---- */

static RawConn *conn_as(const TestDaemon *d, uid_t uid) {
        int fd = -1;
        RawConn *c;

        ck_assert_uint_eq(harness_connect_as(d->socket_path, uid, 1, &fd), 1);
        c = calloc(1, sizeof(*c));
        ck_assert_ptr_nonnull(c);
        c->fd = fd;
        return c;
}

START_TEST(test_non_admin) {
        uint64_t d0;
        TestDaemon *d;
        RawConn *c;
        json_object *reply;
        char w[64], t[32];

        if (!tb_check_need_root("History as uid 65534"))
                return;
        d0 = d0_sec();
        d = daemon_with_rows(d0);
        c = conn_as(d, OTHER_UID);
        /* Its own rows only, whatever the grouping. */
        expect_groups_put(c, "\"by\":\"user\"", (const char *const[]){"nobody|65534|- 1 0 60 6 300", NULL});
        expect_groups_put(c, "\"by\":\"unit\"", (const char *const[]){"-|-|- 1 0 60 6 300", NULL});
        snprintf(w, sizeof(w), "-|-|%s 1 0 60 6 300", usec_text(t, d0 + DAY_SEC));
        expect_groups_put(c, "", (const char *const[]){w, NULL});
        expect_groups_put(c, "\"uid\":65534", (const char *const[]){w, NULL});
        /* Another uid's, or everyone's by asking for root's: refused. */
        reply = harness_callf(c,
                              "{\"method\":\"io.tokenbudget.admin.History\",\"parameters\":{\"uid\":1000}}");
        ck_assert_str_eq(reply_error(reply), "org.varlink.service.PermissionDenied");
        json_object_put(reply);
        reply = harness_callf(c, "{\"method\":\"io.tokenbudget.admin.History\",\"parameters\":{\"uid\":0}}");
        ck_assert_str_eq(reply_error(reply), "org.varlink.service.PermissionDenied");
        json_object_put(reply);
        raw_close(c);
        /* An admin may ask for any uid. */
        c = harness_open_working(d, "history");
        expect_groups_put(c, "\"by\":\"user\",\"uid\":1000",
                          (const char *const[]){"alice|1000|- 2 3 120 12 600", NULL});
        raw_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* budgetctl as uid 65534: its own history, and "permission denied" in words for --user. */
START_TEST(test_non_admin_budgetctl) {
        TestDaemon *d;
        CommandResult res;
        char bin[300], lib[300], env_lib[320];
        const char *built = harness_env("BUDGETCTL"), *slash = strrchr(built, '/');

        if (!tb_check_need_root("budgetctl history as uid 65534 (setpriv)"))
                return;
        if (access("/usr/bin/setpriv", X_OK) != 0) {
                tb_check_skip("budgetctl history as uid 65534: no /usr/bin/setpriv");
                return;
        }
        d = daemon_with_rows(d0_sec());
        /* The build directory may be closed to uid 65534: run copies from the test's directory. */
        snprintf(bin, sizeof(bin), "%s/budgetctl", harness_dir());
        snprintf(lib, sizeof(lib), "%s/libtokenbudget.so.1", harness_dir());
        {
                char from[PATH_MAX], *cmd;

                snprintf(from, sizeof(from), "%.*s/libtokenbudget.so.1", (int)(slash - built), built);
                ck_assert_int_ge(
                        asprintf(&cmd, "cp '%s' '%s' && cp '%s' '%s' && chmod 0755 '%s' && chmod 0644 '%s'",
                                 built, bin, from, lib, bin, lib),
                        0);
                ck_assert_int_eq(system(cmd), 0);
                free(cmd);
        }
        snprintf(env_lib, sizeof(env_lib), "LD_LIBRARY_PATH=%s", harness_dir());
        {
                char *argv[] = {"/usr/bin/setpriv",
                                "--reuid=65534",
                                "--regid=65534",
                                "--clear-groups",
                                bin,
                                "--socket",
                                d->socket_path,
                                "history",
                                "--by",
                                "user",
                                NULL};
                char *env[] = {env_lib, "TZ=UTC0", NULL};

                harness_run(argv, env, RUN_TIMEOUT_MSEC, &res);
                ck_assert_msg(res.status == 0, "exit %d: %s", res.status, res.err);
                ck_assert_str_eq(res.out, "USER      UID  REQUESTS  REFUSED  GRANTED  INPUT  OUTPUT\n"
                                          "nobody  65534         1        0      300     60       6\n");
                command_result_done(&res);
        }
        {
                char *argv[] = {"/usr/bin/setpriv",
                                "--reuid=65534",
                                "--regid=65534",
                                "--clear-groups",
                                bin,
                                "--socket",
                                d->socket_path,
                                "history",
                                "--user",
                                "0",
                                NULL};
                char *env[] = {env_lib, NULL};

                harness_run(argv, env, RUN_TIMEOUT_MSEC, &res);
                ck_assert_msg(res.status == 1, "exit %d: %s", res.status, res.err);
                ck_assert_msg(strstr(res.err, "permission denied: other users' history is for admins"),
                              "stderr: %s", res.err);
                command_result_done(&res);
        }
        harness_daemon_stop(d);
}
END_TEST

static Suite *history_suite(void) {
        Suite *s = suite_create("history");
        TCase *tc;

        tc = harness_tcase("raw", 60);
        tcase_add_test(tc, test_groupings);
        tcase_add_test(tc, test_day_offsets);
        tcase_add_test(tc, test_since_until);
        tcase_add_test(tc, test_invalid);
        tcase_add_test(tc, test_truncated);
        tcase_add_test(tc, test_memory_only);
        suite_add_tcase(s, tc);
        tc = harness_tcase("budgetctl", 60);
        tcase_add_test(tc, test_budgetctl_tables);
        tcase_add_test(tc, test_budgetctl_empty);
        tcase_add_test(tc, test_budgetctl_json);
        tcase_add_test(tc, test_budgetctl_usage);
        suite_add_tcase(s, tc);
        tc = harness_tcase("non-admin", 60);
        tcase_add_test(tc, test_non_admin);
        tcase_add_test(tc, test_non_admin_budgetctl);
        tb_check_tag_root(tc);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return harness_main(history_suite());
}
