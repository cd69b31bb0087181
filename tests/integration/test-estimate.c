/* SPDX-License-Identifier: MIT */
/*
 * What the daemon learns per task class (issue 13), from outside: released
 * allocations teach the class's estimator, and a Request of the class then
 * answers predicted (promptTokens + the expected output), predictedOutput
 * and samples. The class is the declared class, else the agent, else the
 * command, within the caller's uid; allocations that were not released
 * (abandoned with their connection) teach nothing; what was learned
 * survives a restart, a damaged saved state only costs that class its
 * learning. Root only: another uid
 * with the same class name learns apart.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "tb-check.h"

#define OTHER_UID 65534

static json_object *request(RawConn *r, const char *params) {
        json_object *reply = harness_callf(
                r, "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{%s}}", params);

        ck_assert_msg(!reply_error(reply), "Request {%s}: %s", params, json_object_to_json_string(reply));
        return reply;
}

static void release(RawConn *r, json_object *grant, int64_t in, int64_t out) {
        json_object *reply = harness_callf(
                r,
                "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%s\","
                "\"inputTokens\":%lld,\"outputTokens\":%lld}}",
                json_str(reply_parameters(grant), "allocation", "grant"), (long long)in, (long long)out);

        ck_assert_msg(!reply_error(reply), "Release: %s", json_object_to_json_string(reply));
        json_object_put(reply);
}

/* n cycles of the class described by params, each released with in/out. */
static void teach(RawConn *r, const char *params, int n, int64_t in, int64_t out) {
        for (int i = 0; i < n; i++) {
                json_object *g = request(r, params);

                release(r, g, in, out);
                json_object_put(g);
        }
}

static bool has(json_object *reply, const char *key) {
        return json_object_object_get_ex(reply_parameters(reply), key, NULL);
}

/* A Request's prediction: fails unless predicted, predictedOutput and
 * samples are there and within 5% (samples exact). */
static void expect_prediction(RawConn *r, const char *params, int64_t predicted, int64_t output,
                              int64_t samples) {
        json_object *g = request(r, params), *p = reply_parameters(g);
        int64_t got = json_int(p, "predicted", "prediction"),
                got_out = json_int(p, "predictedOutput", "prediction");

        ck_assert_msg(got >= predicted * 95 / 100 && got <= predicted * 105 / 100 &&
                              got_out >= output * 95 / 100 && got_out <= output * 105 / 100 &&
                              json_int(p, "samples", "prediction") == samples,
                      "{%s}: expected predicted ~%lld, predictedOutput ~%lld, samples %lld: %s", params,
                      (long long)predicted, (long long)output, (long long)samples,
                      json_object_to_json_string(g));
        release(r, g, 0, 0);
        json_object_put(g);
}

static void expect_none(RawConn *r, const char *params) {
        json_object *g = request(r, params);

        ck_assert_msg(!has(g, "predicted") && !has(g, "predictedOutput") && !has(g, "samples"),
                      "{%s}: a prediction for a class that learned nothing: %s", params,
                      json_object_to_json_string(g));
        release(r, g, 0, 0);
        json_object_put(g);
}

/* The Classes entry of (uid, name) in a Classes reply, or NULL. */
static json_object *class_of(json_object *reply, int64_t uid, const char *name) {
        json_object *list = NULL;

        ck_assert_msg(!reply_error(reply), "Classes: %s", json_object_to_json_string(reply));
        ck_assert(json_object_object_get_ex(reply_parameters(reply), "classes", &list));
        for (size_t i = 0; i < json_object_array_length(list); i++) {
                json_object *c = json_object_array_get_idx(list, i);

                if (json_int(c, "uid", "class") == uid && strcmp(json_str(c, "class", "class"), name) == 0)
                        return c;
        }
        return NULL;
}

#define CLASSES_CALL "{\"method\":\"io.tokenbudget.admin.Classes\",\"parameters\":{}}"

START_TEST(test_learns_per_class) {
        TestDaemon *d = harness_daemon_start("");
        RawConn *r = harness_open_working(d, "agent"), *gone;
        json_object *g;

        /* Nothing learned yet: no prediction. */
        expect_none(r, "\"estimate\":1000,\"class\":\"summarize\",\"promptTokens\":100");
        /* That first one was released with 0: it taught the class a zero. A
         * fresh class for the rest. */
        teach(r, "\"estimate\":1000,\"class\":\"review\",\"promptTokens\":100", 30, 100, 50);
        expect_prediction(r, "\"estimate\":1000,\"class\":\"review\",\"promptTokens\":100", 150, 50, 30);
        /* Without promptTokens: the learned total (input + output). */
        teach(r, "\"estimate\":1000,\"class\":\"plain\"", 25, 300, 200);
        expect_prediction(r, "\"estimate\":1000,\"class\":\"plain\"", 500, 200, 25);

        /* No class: the agent; a class of the same name is another class. */
        teach(r, "\"estimate\":1000,\"agent\":\"coder\",\"promptTokens\":10", 20, 10, 90);
        expect_prediction(r, "\"estimate\":1000,\"agent\":\"coder\",\"promptTokens\":10", 100, 90, 20);
        expect_none(r, "\"estimate\":1000,\"class\":\"coder\",\"promptTokens\":10");
        /* No class, no agent: the command (this test's). */
        teach(r, "\"estimate\":1000,\"promptTokens\":20", 20, 20, 40);
        expect_prediction(r, "\"estimate\":1000,\"promptTokens\":20", 60, 40, 20);

        /* Abandoned with its connection: not learned from. */
        gone = harness_open_working(d, "an agent that goes away");
        g = request(gone, "\"estimate\":1000,\"class\":\"review\",\"promptTokens\":100");
        json_object_put(
                harness_callf(gone,
                              "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":"
                              "\"%s\",\"inputTokens\":100,\"outputTokens\":900}}",
                              json_str(reply_parameters(g), "allocation", "grant")));
        json_object_put(g);
        raw_close(gone);
        harness_sleep_msec(100);
        /* (the prediction Request above was released with 0 tokens: 31 samples) */
        expect_prediction(r, "\"estimate\":1000,\"class\":\"review\",\"promptTokens\":100", 150, 50, 31);

        /* Classes: every class, with what it learned and how good it was. */
        {
                json_object *reply = harness_callf(r, CLASSES_CALL), *c, *blocks;
                int64_t out;

                c = class_of(reply, 0, "class:review");
                ck_assert_msg(c, "no class:review in %s", json_object_to_json_string(reply));
                ck_assert_int_eq(json_int(c, "samples", "class"), 32);
                out = json_int(c, "predictedOutput", "class");
                ck_assert_msg(out >= 40 && out <= 52, "class:review predictedOutput %lld", (long long)out);
                ck_assert(json_object_object_get_ex(c, "blocks", &blocks));
                ck_assert_int_eq(json_object_array_length(blocks), 3);
                ck_assert_int_eq(json_int(json_object_array_get_idx(blocks, 1), "size", "blocks"), 100);
                ck_assert_ptr_nonnull(class_of(reply, 0, "agent:coder"));
                ck_assert_ptr_nonnull(class_of(reply, 0, "class:coder"));
                ck_assert_ptr_nonnull(class_of(reply, 0, "class:plain"));
                ck_assert_ptr_null(class_of(reply, 0, "class:nothing"));
                json_object_put(reply);
        }
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

/* What was learned survives a restart on the same state directory (saved
 * at the stop, and every minute while running); a damaged saved state is
 * skipped with a warning, the class starting afresh, the others kept. */
START_TEST(test_restart_keeps) {
        char *state, *db, *log, params[128];
        sqlite3 *sql;
        HarnessDaemonOptions o = {};
        TestDaemon *d;
        RawConn *r;

        ck_assert_int_ge(asprintf(&state, "%s/estimate-state-%d", harness_dir(), (int)getpid()), 0);
        ck_assert_int_eq(mkdir(state, 0700), 0);
        ck_assert_int_ge(asprintf(&db, "%s/tokenbudget.db", state), 0);
        o.state_dir = state;
        d = harness_daemon_start_with("", &o);
        r = harness_open_working(d, "agent");
        teach(r, "\"estimate\":1000,\"class\":\"kept\",\"promptTokens\":100", 30, 100, 50);
        teach(r, "\"estimate\":1000,\"class\":\"spoiled\",\"promptTokens\":100", 30, 100, 70);
        /* More classes than one save step (64): the stop saves every one. */
        for (int i = 0; i < 100; i++) {
                snprintf(params, sizeof(params), "\"estimate\":100,\"class\":\"many-%d\"", i);
                teach(r, params, 1, 1, i + 1);
        }
        raw_close(r);
        harness_daemon_stop(d);

        d = harness_daemon_start_with("", &o);
        r = harness_open_working(d, "after the restart");
        expect_prediction(r, "\"estimate\":1000,\"class\":\"kept\",\"promptTokens\":100", 150, 50, 30);
        expect_prediction(r, "\"estimate\":1000,\"class\":\"spoiled\",\"promptTokens\":100", 170, 70, 30);
        for (int i = 0; i < 100; i += 9) {
                snprintf(params, sizeof(params), "\"estimate\":100,\"class\":\"many-%d\"", i);
                expect_prediction(r, params, 1 + i + 1, i + 1, 1);
        }
        /* and a reload keeps it (the prediction Request taught it a zero: 31) */
        ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
        harness_sleep_msec(300);
        expect_prediction(r, "\"estimate\":1000,\"class\":\"spoiled\",\"promptTokens\":100", 170, 70, 31);
        raw_close(r);
        harness_daemon_stop(d);

        ck_assert_int_eq(sqlite3_open(db, &sql), SQLITE_OK);
        ck_assert_int_eq(
                sqlite3_exec(sql, "UPDATE estimators SET state = '{\"v\":1}' WHERE class = 'class:spoiled'",
                             NULL, NULL, NULL),
                SQLITE_OK);
        ck_assert_int_eq(sqlite3_changes(sql), 1);
        sqlite3_close(sql);
        d = harness_daemon_start_with("", &o);
        r = harness_open_working(d, "after a damaged state");
        /* the prediction Request of the last run taught it a zero: 31 */
        expect_prediction(r, "\"estimate\":1000,\"class\":\"kept\",\"promptTokens\":100", 150, 50, 31);
        expect_none(r, "\"estimate\":1000,\"class\":\"spoiled\",\"promptTokens\":100");
        raw_close(r);
        log = harness_read_file(d->log_path, NULL);
        ck_assert_msg(log && strstr(log, "what the estimator learned of class 'class:spoiled'") &&
                              strstr(log, "starts afresh"),
                      "no warning about the damaged state: %s", log ? log : "(no log)");
        free(log);
        harness_daemon_stop(d);
        free(db);
        free(state);
}
END_TEST

/* Another uid's class of the same name learns apart. */
START_TEST(test_within_uid) {
        TestDaemon *d;
        RawConn *root, *other;
        int fd;

        if (!tb_check_need_root("another uid"))
                return;
        d = harness_daemon_start("");
        root = harness_open_working(d, "root");
        teach(root, "\"estimate\":1000,\"class\":\"shared-name\",\"promptTokens\":5", 20, 5, 95);
        ck_assert_int_eq(harness_connect_as(d->socket_path, OTHER_UID, 1, &fd), 1);
        other = calloc(1, sizeof(*other));
        ck_assert_ptr_nonnull(other);
        other->fd = fd;
        expect_none(other, "\"estimate\":1000,\"class\":\"shared-name\",\"promptTokens\":5");
        /* A non-admin's Classes: its own uid's only; another uid's is PermissionDenied. */
        {
                json_object *reply = raw_call(other, CLASSES_CALL, "Classes as another uid");

                ck_assert_ptr_nonnull(class_of(reply, OTHER_UID, "class:shared-name"));
                ck_assert_ptr_null(class_of(reply, 0, "class:shared-name"));
                json_object_put(reply);
                reply = raw_call(other,
                                 "{\"method\":\"io.tokenbudget.admin.Classes\",\"parameters\":{\"uid\":0}}",
                                 "Classes of uid 0 as another uid");
                ck_assert_str_eq(reply_error(reply), "org.varlink.service.PermissionDenied");
                json_object_put(reply);
                reply = harness_callf(root, CLASSES_CALL);
                ck_assert_ptr_nonnull(class_of(reply, 0, "class:shared-name"));
                ck_assert_ptr_nonnull(class_of(reply, OTHER_UID, "class:shared-name"));
                json_object_put(reply);
        }
        expect_prediction(root, "\"estimate\":1000,\"class\":\"shared-name\",\"promptTokens\":5", 100, 95,
                          20);
        raw_close(other);
        raw_close(root);
        harness_daemon_stop(d);
}
END_TEST

/* One user naming classes by the thousand cannot stop another's from being
 * learned: each uid's classes are held to limits.max_tracked_scopes_per_uid. */
START_TEST(test_class_flood) {
        TestDaemon *d;
        RawConn *root, *other;
        json_object *reply, *list = NULL;
        char params[128];
        int fd;

        if (!tb_check_need_root("another uid"))
                return;
        d = harness_daemon_start("limits: { max_tracked_scopes = 24; max_tracked_scopes_per_uid = 8; };\n");
        root = harness_open_working(d, "root");
        ck_assert_int_eq(harness_connect_as(d->socket_path, OTHER_UID, 1, &fd), 1);
        other = calloc(1, sizeof(*other));
        ck_assert_ptr_nonnull(other);
        other->fd = fd;
        for (int i = 0; i < 30; i++) {
                snprintf(params, sizeof(params), "\"estimate\":100,\"class\":\"flood-%d\"", i);
                teach(other, params, 1, 10, 10);
        }
        reply = raw_call(other, CLASSES_CALL, "Classes as the flooding uid");
        ck_assert(json_object_object_get_ex(reply_parameters(reply), "classes", &list));
        ck_assert_int_eq(json_object_array_length(list), 8);
        json_object_put(reply);
        teach(root, "\"estimate\":100,\"class\":\"mine\"", 3, 10, 30);
        expect_prediction(root, "\"estimate\":100,\"class\":\"mine\"", 40, 30, 3);
        raw_close(other);
        raw_close(root);
        harness_daemon_stop(d);
}
END_TEST

/* One Request's reply fields that say what was reserved. */
typedef struct Granted {
        int64_t granted, hard_limit;
        double hard_multiplier;
        char reason[32];
} Granted;

static Granted request_granted(RawConn *r, const char *params) {
        json_object *g = request(r, params), *p = reply_parameters(g), *v = NULL;
        Granted out = {.granted = json_int(p, "granted", "grant"),
                       .hard_limit = json_int(p, "hardLimit", "grant")};

        ck_assert_msg(json_object_object_get_ex(p, "hardMultiplier", &v) &&
                              json_object_is_type(v, json_type_double),
                      "{%s}: no hardMultiplier: %s", params, json_object_to_json_string(g));
        out.hard_multiplier = json_object_get_double(v);
        if (json_object_object_get_ex(p, "reason", &v))
                snprintf(out.reason, sizeof(out.reason), "%s", json_object_get_string(v));
        release(r, g, 0, 0);
        json_object_put(g);
        return out;
}

#define EXPECT_GRANT(got, want_granted, want_reason, params)                                                \
        ck_assert_msg((got).granted == (want_granted) && strcmp((got).reason, (want_reason)) == 0,          \
                      "{%s}: granted %lld reason '%s', expected %lld '%s'", params,                         \
                      (long long)(got).granted, (got).reason, (long long)(want_granted), want_reason)

/* estimate_source (issue 13, point 2): what is reserved, per rule. The
 * classes learn outputs of exactly 100 after prompts of 50 (predicted 150);
 * each Request below is released with 0, which teaches the class a zero:
 * every case uses a class of its own, taught just before. */
START_TEST(test_estimate_source) {
        TestDaemon *d =
                harness_daemon_start("estimate_source = \"learned\";\n"
                                     "estimate_min_samples = 20;\n"
                                     "rules = ( { name = \"mx\"; match = { agent = \"mx-*\"; };\n"
                                     "            estimate_source = \"max\"; },\n"
                                     "          { name = \"cl\"; match = { agent = \"cl\"; };\n"
                                     "            estimate_source = \"client\"; },\n"
                                     "          { name = \"nofloor\"; match = { agent = \"nf\"; };\n"
                                     "            estimate_floor = 0; estimate_min_samples = 5; } );\n");
        RawConn *r = harness_open_working(d, "agent");
        Granted g;
        const char *p;

        /* Below min_samples: the client's estimate, no reason. */
        teach(r, "\"estimate\":200,\"class\":\"young\",\"promptTokens\":50", 19, 50, 100);
        p = "\"estimate\":200,\"class\":\"young\",\"promptTokens\":50";
        g = request_granted(r, p);
        EXPECT_GRANT(g, 200, "", p);
        ck_assert_msg(g.hard_multiplier == 2.0, "young class: hardMultiplier %g, not the configured 2.0",
                      g.hard_multiplier);

        /* Learned: 150 reserved for an estimate of 200 (the floor is 100). */
        /* 40: the spread is learned from the predictions made once the class
         * had 20 samples (until then the configured multiplier applies). */
        teach(r, "\"estimate\":200,\"class\":\"a\",\"promptTokens\":50", 40, 50, 100);
        p = "\"estimate\":200,\"class\":\"a\",\"promptTokens\":50";
        g = request_granted(r, p);
        EXPECT_GRANT(g, 150, "learned", p);
        /* A class that always uses the same: its adaptive hard limit is the
         * least allowed, the warn multiplier 1.5. */
        ck_assert_msg(g.hard_multiplier == 1.5 && g.hard_limit == 225,
                      "a tight class: hardMultiplier %g hardLimit %lld, expected 1.5 and 225",
                      g.hard_multiplier, (long long)g.hard_limit);

        /* The floor: half of an estimate of 1000 is more than the 150 learned. */
        teach(r, "\"estimate\":1000,\"class\":\"b\",\"promptTokens\":50", 20, 50, 100);
        p = "\"estimate\":1000,\"class\":\"b\",\"promptTokens\":50";
        g = request_granted(r, p);
        EXPECT_GRANT(g, 500, "learned", p);
        /* ...and a rule without one. */
        teach(r, "\"estimate\":1000,\"agent\":\"nf\",\"class\":\"c\",\"promptTokens\":50", 5, 50, 100);
        p = "\"estimate\":1000,\"agent\":\"nf\",\"class\":\"c\",\"promptTokens\":50";
        EXPECT_GRANT(request_granted(r, p), 150, "learned", p);
        /* No estimate given: no floor (default_estimate is not the client's guess). */
        teach(r, "\"class\":\"d\",\"promptTokens\":50", 20, 50, 100);
        p = "\"class\":\"d\",\"promptTokens\":50";
        EXPECT_GRANT(request_granted(r, p), 150, "learned", p);

        /* max: the larger of the two. */
        teach(r, "\"estimate\":100,\"agent\":\"mx-1\",\"class\":\"e\",\"promptTokens\":50", 20, 50, 100);
        p = "\"estimate\":100,\"agent\":\"mx-1\",\"class\":\"e\",\"promptTokens\":50";
        EXPECT_GRANT(request_granted(r, p), 150, "learned", p);
        teach(r, "\"estimate\":400,\"agent\":\"mx-2\",\"class\":\"f\",\"promptTokens\":50", 20, 50, 100);
        p = "\"estimate\":400,\"agent\":\"mx-2\",\"class\":\"f\",\"promptTokens\":50";
        g = request_granted(r, p);
        EXPECT_GRANT(g, 400, "", p);
        ck_assert(g.hard_multiplier == 2.0);

        /* client: the estimate, however much was learned. */
        teach(r, "\"estimate\":400,\"agent\":\"cl\",\"class\":\"g\",\"promptTokens\":50", 30, 50, 100);
        p = "\"estimate\":400,\"agent\":\"cl\",\"class\":\"g\",\"promptTokens\":50";
        EXPECT_GRANT(request_granted(r, p), 400, "", p);

        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

/* The adaptive hard limit (issue 13, point 3): a class whose outputs spread
 * widely gets a higher multiplier than a tight one, at most 2.5, so its
 * ordinary long outputs are not breaches; a tight class is caught early. */
START_TEST(test_adaptive_hard_limit) {
        TestDaemon *d = harness_daemon_start("estimate_source = \"learned\";\n");
        RawConn *r = harness_open_working(d, "agent");
        json_object *g, *rep;
        Granted noisy;
        const char *p = "\"estimate\":1000,\"class\":\"noisy\"";

        /* Outputs of 20 and 300 by turns: the p95 of actual / predicted is
         * near 300 / 160, the multiplier past 1.5. */
        for (int i = 0; i < 200; i++)
                teach(r, p, 1, 0, i % 2 ? 300 : 20);
        noisy = request_granted(r, "\"estimate\":100,\"class\":\"noisy\"");
        ck_assert_msg(strcmp(noisy.reason, "learned") == 0 && noisy.hard_multiplier > 1.6 &&
                              noisy.hard_multiplier <= 2.5,
                      "noisy class: reason '%s' hardMultiplier %g granted %lld", noisy.reason,
                      noisy.hard_multiplier, (long long)noisy.granted);
        /* An output of 300 on the noisy class stays within its hard limit... */
        g = request(r, "\"estimate\":100,\"class\":\"noisy\"");
        rep = harness_callf(
                r,
                "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":\"%s\","
                "\"inputTokens\":0,\"outputTokens\":300}}",
                json_str(reply_parameters(g), "allocation", "grant"));
        ck_assert_msg(strcmp(json_str(reply_parameters(rep), "state", "report"), "exceeded") != 0,
                      "an ordinary output of the noisy class exceeded: %s (grant %s)",
                      json_object_to_json_string(rep), json_object_to_json_string(g));
        json_object_put(rep);
        release(r, g, 0, 300);
        json_object_put(g);
        /* ...while the tight class's 1.5 catches 1.8x its usual (the configured 2.0 would not). */
        teach(r, "\"estimate\":1000,\"class\":\"tight\"", 40, 0, 100);
        g = request(r, "\"estimate\":100,\"class\":\"tight\"");
        rep = harness_callf(
                r,
                "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":\"%s\","
                "\"inputTokens\":0,\"outputTokens\":180}}",
                json_str(reply_parameters(g), "allocation", "grant"));
        ck_assert_msg(strcmp(json_str(reply_parameters(rep), "state", "report"), "exceeded") == 0,
                      "1.8x the tight class's usual was not caught: %s (grant %s)",
                      json_object_to_json_string(rep), json_object_to_json_string(g));
        json_object_put(rep);
        release(r, g, 0, 180);
        json_object_put(g);
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

int main(void) {
        Suite *s = suite_create("estimate");
        TCase *tc = harness_tcase("estimate", 60);
        TCase *tc_root = harness_tcase("estimate-root", 60);

        tcase_add_test(tc, test_learns_per_class);
        tcase_add_test(tc, test_restart_keeps);
        tcase_add_test(tc, test_estimate_source);
        tcase_add_test(tc, test_adaptive_hard_limit);
        suite_add_tcase(s, tc);
        tb_check_tag_root(tc_root);
        tcase_add_test(tc_root, test_within_uid);
        tcase_add_test(tc_root, test_class_flood);
        suite_add_tcase(s, tc_root);
        return harness_main(s);
}
