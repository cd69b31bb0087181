/* SPDX-License-Identifier: MIT */
/*
 * Power awareness on the real daemon (issue 11), driven by a PSI fixture
 * file (power.pressure_file): a machine without batteries or thermal zones
 * still has memory pressure, and the daemon reads the file with pread(2)
 * exactly as it reads /proc/pressure/memory. Memory pressure at or above
 * power.memory_pressure_percent pauses background work (refused PowerPaused,
 * or queued and served when the pressure goes) and scales normal work (its
 * request cap and window limits, by 0.5 by default); the Request reply says
 * powerState and powerFactor, Status has the power object, budgetctl status
 * a power line, and hysteresis keeps the state until the release value.
 * Batteries, AC and thermal zones: tests/system/test-power-umockdev.c.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "tb-check.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OPEN_SCOPES                                                                                         \
        "process: { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; "                       \
        "max_tokens_in_flight = 0; };\n"                                                                    \
        "user: { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; "                          \
        "max_tokens_in_flight = 0; };\n"                                                                    \
        "warn_multiplier = 1.0; hard_multiplier = 1.0;\n"

#define REQUEST "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{"

/* Writes the PSI file as the kernel formats it, some avg10 = percent. The
 * daemon keeps it open: the file is rewritten in place, not replaced. */
static void psi_write(const char *path, const char *some_avg10) {
        char text[256];
        int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644), n;

        ck_assert_int_ge(fd, 0);
        n = snprintf(text, sizeof(text),
                     "some avg10=%s avg60=3.10 avg300=1.05 total=123456789\n"
                     "full avg10=0.00 avg60=0.00 avg300=0.00 total=4242\n",
                     some_avg10);
        ck_assert_int_eq(ftruncate(fd, 0), 0);
        ck_assert_int_eq(pwrite(fd, text, (size_t)n, 0), n);
        close(fd);
}

static char *psi_path(void) {
        char *p;

        ck_assert_int_ge(asprintf(&p, "%s/pressure-memory", harness_dir()), 0);
        return p;
}

/* extra: top-level settings; power_extra: more of the power group. */
static TestDaemon *start(const char *psi, const char *extra, const char *power_extra) {
        char *conf;
        TestDaemon *d;

        ck_assert_int_ge(asprintf(&conf,
                                  OPEN_SCOPES "power: { pressure_file = \"%s\"; poll_sec = 1; %s };\n%s",
                                  psi, power_extra ?: "", extra ?: ""),
                         0);
        d = harness_daemon_start(conf);
        free(conf);
        return d;
}

static json_object *status(RawConn *r) {
        return harness_callf(r, "{\"method\":\"io.tokenbudget.admin.Status\",\"parameters\":{}}");
}

static json_object *power_of(json_object *st) {
        json_object *p;

        ck_assert_msg(json_object_object_get_ex(reply_parameters(st), "power", &p),
                      "Status without power: %s", json_object_to_json_string(st));
        return p;
}

static double json_double(json_object *o, const char *key) {
        json_object *v;

        ck_assert_msg(json_object_object_get_ex(o, key, &v) && (json_object_is_type(v, json_type_double) ||
                                                                json_object_is_type(v, json_type_int)),
                      "no number %s in %s", key, json_object_to_json_string(o));
        return json_object_get_double(v);
}

static void assert_state(json_object *reply, const char *state, double factor) {
        json_object *p = reply_parameters(reply);

        ck_assert_msg(!reply_error(reply), "refused: %s", json_object_to_json_string(reply));
        ck_assert_msg(strcmp(json_str(p, "powerState", "Request"), state) == 0 &&
                              json_double(p, "powerFactor") == factor,
                      "expected powerState %s, powerFactor %.3f: %s", state, factor,
                      json_object_to_json_string(reply));
}

/* No file, no sensors: "ac", factor 1.0 everywhere, nothing unknown shown. */
START_TEST(test_quiet_machine) {
        TestDaemon *d = start("/nonexistent/pressure", NULL, NULL);
        RawConn *r = harness_open_working(d, "quiet");
        json_object *reply = harness_callf(r, REQUEST "\"estimate\":100,\"priority\":\"background\"}}"), *st,
                    *p, *f;

        assert_state(reply, "ac", 1.0);
        /* On the wire a float: 1.0, not 1 (json-c parses the one as a double, the other as an int). */
        ck_assert_msg(json_object_is_type(json_object_object_get(reply_parameters(reply), "powerFactor"),
                                          json_type_double),
                      "powerFactor is not a float: %s", json_object_to_json_string(reply));
        json_object_put(reply);
        st = status(r);
        p = power_of(st);
        ck_assert_str_eq(json_str(p, "state", "power"), "ac");
        ck_assert_msg(json_object_get_boolean(json_object_object_get(p, "onAC")), "onAC");
        ck_assert_int_eq(json_object_array_length(json_object_object_get(p, "conditions")), 0);
        ck_assert_msg(!json_object_object_get(p, "batteryPercent") &&
                              !json_object_object_get(p, "temperatureCelsius") &&
                              !json_object_object_get(p, "sensor") &&
                              !json_object_object_get(p, "memoryPressure"),
                      "unknown readings shown: %s", json_object_to_json_string(p));
        ck_assert_int_gt(json_int(p, "since", "power"), 1700000000LL * 1000000);
        f = json_object_object_get(p, "factors");
        ck_assert(json_double(f, "interactive") == 1.0 && json_double(f, "normal") == 1.0 &&
                  json_double(f, "background") == 1.0);
        json_object_put(st);
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

/* Memory pressure: background refused PowerPaused, normal's cap and window
 * limits halved (reason power), interactive untouched; Status and budgetctl
 * show it; the hysteresis keeps the state between release and threshold. */
START_TEST(test_pressure_pauses_and_scales) {
        char *psi = psi_path();
        TestDaemon *d;
        RawConn *r;
        json_object *reply, *st, *p, *f;
        CommandResult res;

        psi_write(psi, "35.50");
        d = start(psi, "max_request_tokens = 1000;\nglobal: { tokens_per_minute = 1200; };\n", NULL);
        r = harness_open_working(d, "pressure");

        reply = harness_callf(r, REQUEST "\"estimate\":100,\"priority\":\"background\"}}");
        ck_assert_msg(reply_error(reply) &&
                              strcmp(reply_error(reply), "io.tokenbudget.agent.PowerPaused") == 0,
                      "background under pressure: %s", json_object_to_json_string(reply));
        p = reply_parameters(reply);
        ck_assert_str_eq(json_str(p, "state", "PowerPaused"), "memory-pressure");
        ck_assert_int_eq(json_int(p, "retryAfterUsec", "PowerPaused"), 0);
        json_object_put(reply);

        /* normal: the cap 1000 counts as 500 */
        reply = harness_callf(r, REQUEST "\"estimate\":800,\"priority\":\"normal\"}}");
        assert_state(reply, "memory-pressure", 0.5);
        ck_assert_int_eq(json_int(reply_parameters(reply), "granted", "normal"), 500);
        ck_assert_str_eq(json_str(reply_parameters(reply), "reason", "normal"), "power");
        json_object_put(reply);
        /* the minute window 1200 counts as 600 for normal: 100 left */
        reply = harness_callf(r, REQUEST "\"estimate\":400,\"minTokens\":50,\"priority\":\"normal\"}}");
        assert_state(reply, "memory-pressure", 0.5);
        ck_assert_int_eq(json_int(reply_parameters(reply), "granted", "normal 2"), 100);
        ck_assert_str_eq(json_str(reply_parameters(reply), "reason", "normal 2"), "budget");
        json_object_put(reply);
        reply = harness_callf(r, REQUEST "\"estimate\":10,\"priority\":\"normal\"}}");
        ck_assert_msg(reply_error(reply) &&
                              strcmp(reply_error(reply), "io.tokenbudget.agent.BudgetExhausted") == 0 &&
                              json_int(reply_parameters(reply), "limit", "exhausted") == 600,
                      "normal past the scaled window: %s", json_object_to_json_string(reply));
        json_object_put(reply);
        /* interactive: the whole window (600 used of 1200) */
        reply = harness_callf(r, REQUEST "\"estimate\":600,\"priority\":\"interactive\"}}");
        assert_state(reply, "memory-pressure", 1.0);
        ck_assert_int_eq(json_int(reply_parameters(reply), "granted", "interactive"), 600);
        json_object_put(reply);

        st = status(r);
        p = power_of(st);
        ck_assert_str_eq(json_str(p, "state", "power"), "memory-pressure");
        ck_assert_int_eq(json_object_array_length(json_object_object_get(p, "conditions")), 1);
        ck_assert(json_double(p, "memoryPressure") == 35.5);
        f = json_object_object_get(p, "factors");
        ck_assert(json_double(f, "interactive") == 1.0 && json_double(f, "normal") == 0.5 &&
                  json_double(f, "background") == 0.0);
        json_object_put(st);

        {
                char *argv[] = {(char *)harness_env("BUDGETCTL"), "--socket", d->socket_path, "status",
                                NULL};
                harness_run(argv, NULL, 5000, &res);
                ck_assert_msg(res.status == 0 && strstr(res.out, "power: memory-pressure") &&
                                      strstr(res.out, "background paused"),
                              "budgetctl status: %d %s%s", res.status, res.out, res.err);
                command_result_done(&res);
        }

        /* 15% is between the release (10%) and the threshold (20%): kept. */
        psi_write(psi, "15.00");
        harness_sleep_msec(1300);
        st = status(r);
        ck_assert_str_eq(json_str(power_of(st), "state", "power"), "memory-pressure");
        ck_assert(json_double(power_of(st), "memoryPressure") == 15.0);
        json_object_put(st);
        /* 9.99%: left. */
        psi_write(psi, "9.99");
        harness_sleep_msec(1300);
        st = status(r);
        ck_assert_str_eq(json_str(power_of(st), "state", "power"), "ac");
        json_object_put(st);
        raw_close(r); /* settles the open allocations */
        harness_daemon_stop(d);
        free(psi);
}
END_TEST

/* A paused background Request that waits is served when the pressure goes:
 * the daemon polls while someone waits, with no Request to trigger it. */
START_TEST(test_paused_waiter_served) {
        char *psi = psi_path();
        TestDaemon *d;
        RawConn *r, *w;
        json_object *reply, *st;
        uint64_t t0;

        psi_write(psi, "60.00");
        d = start(psi, NULL, NULL);
        r = harness_open_working(d, "admin");
        w = harness_open_working(d, "waiter");
        ck_assert_int_eq(raw_send_msg(w, REQUEST "\"estimate\":100,\"priority\":\"background\","
                                                 "\"waitUsec\":20000000}}"),
                         0);
        reply = harness_reply_within(w, 1500);
        ck_assert_msg(!reply, "answered while paused: %s", json_object_to_json_string(reply));
        st = status(r);
        ck_assert_int_eq(json_int(reply_parameters(st), "waiters", "Status"), 1);
        json_object_put(st);

        t0 = harness_now_usec();
        psi_write(psi, "0.50");
        reply = harness_reply_within(w, 5000);
        ck_assert_msg(reply, "the waiter was not served within 5 s of the pressure going");
        ck_assert_msg(harness_now_usec() - t0 < 2500000, "served after %.1f s (poll_sec = 1)",
                      (double)(harness_now_usec() - t0) / 1e6);
        assert_state(reply, "ac", 1.0);
        ck_assert_int_eq(json_int(reply_parameters(reply), "granted", "waiter"), 100);
        ck_assert_int_gt(json_int(reply_parameters(reply), "waitedUsec", "waiter"), 1000000);
        json_object_put(reply);
        raw_close(w);
        raw_close(r);
        harness_daemon_stop(d);
        free(psi);
}
END_TEST

/* A malformed file is "unknown" (not pressure, not a crash); the policy is
 * the admin's: a configured factor applies, power.enabled = false ignores it. */
START_TEST(test_malformed_and_policy) {
        char *psi = psi_path();
        TestDaemon *d;
        RawConn *r;
        json_object *reply, *st;
        int fd;

        fd = open(psi, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(write(fd, "some avg10=banana\n", 18), 18);
        close(fd);
        d = start(psi, NULL, NULL);
        r = harness_open_working(d, "malformed");
        st = status(r);
        ck_assert_str_eq(json_str(power_of(st), "state", "power"), "ac");
        ck_assert_msg(!json_object_object_get(power_of(st), "memoryPressure"), "%s",
                      json_object_to_json_string(st));
        json_object_put(st);
        raw_close(r);
        harness_daemon_stop(d);

        psi_write(psi, "30.00");
        d = start(psi, "max_request_tokens = 1000;\n",
                  "policy: { memory_pressure: { interactive = 0.25; background = 0.1; }; };");
        r = harness_open_working(d, "policy");
        reply = harness_callf(r, REQUEST "\"estimate\":1000,\"priority\":\"interactive\"}}");
        assert_state(reply, "memory-pressure", 0.25);
        ck_assert_int_eq(json_int(reply_parameters(reply), "granted", "interactive"), 250);
        json_object_put(reply);
        reply = harness_callf(r, REQUEST "\"estimate\":1000,\"priority\":\"background\"}}");
        assert_state(reply, "memory-pressure", 0.1);
        ck_assert_int_eq(json_int(reply_parameters(reply), "granted", "background"), 100);
        json_object_put(reply);
        raw_close(r);
        harness_daemon_stop(d);
        free(psi);
}
END_TEST

/* libtokenbudget: the grant's power_state_name and power_factor_permille,
 * reason TB_REASON_POWER; PowerPaused as -EBUSY with its "state". */
START_TEST(test_library) {
        char *psi = psi_path();
        TestDaemon *d;
        tb_client *c;
        tb_grant g = {};
        int r;

        psi_write(psi, "40.00");
        d = start(psi, "max_request_tokens = 1000;\n", NULL);
        c = harness_client(d);
        r = tb_request(c, &(tb_request_params){.estimate = 800, .priority = TB_PRIORITY_NORMAL}, &g);
        ck_assert_int_eq(r, 0);
        ck_assert_str_eq(g.power_state_name, "memory-pressure");
        ck_assert_uint_eq(g.power_factor_permille, 500);
        ck_assert_uint_eq(g.granted, 500);
        ck_assert_int_eq(g.reason, TB_REASON_POWER);
        ck_assert_int_eq(tb_release(c, &(tb_release_params){.allocation = g.allocation}, NULL), 0);
        r = tb_request(c, &(tb_request_params){.estimate = 100, .priority = TB_PRIORITY_BACKGROUND}, &g);
        ck_assert_int_eq(r, -EBUSY);
        ck_assert_str_eq(tb_client_error_name(c), "io.tokenbudget.agent.PowerPaused");
        ck_assert_str_eq(tb_client_error_parameter(c, "state"), "memory-pressure");
        r = tb_request(c, &(tb_request_params){.estimate = 100, .priority = TB_PRIORITY_INTERACTIVE}, &g);
        ck_assert_int_eq(r, 0);
        ck_assert_uint_eq(g.power_factor_permille, 1000);
        ck_assert_int_eq(tb_release(c, &(tb_release_params){.allocation = g.allocation}, NULL), 0);
        tb_client_close(c);
        harness_daemon_stop(d);
        free(psi);
}
END_TEST

/* A dry run decides as enforcing would and grants: wouldBe PowerPaused. A
 * reload with a higher threshold applies it to the last readings at once. */
START_TEST(test_dry_run_and_reload) {
        char *psi = psi_path(), *conf;
        TestDaemon *d;
        RawConn *r;
        json_object *reply, *st;
        FILE *f;

        psi_write(psi, "35.00");
        d = start(psi, "enforce = false;\n", NULL);
        r = harness_open_working(d, "dry");
        reply = harness_callf(r, REQUEST "\"estimate\":100,\"priority\":\"background\"}}");
        ck_assert_msg(!reply_error(reply), "dry run refused: %s", json_object_to_json_string(reply));
        ck_assert_int_eq(json_int(reply_parameters(reply), "granted", "dry"), 100);
        ck_assert_str_eq(json_str(reply_parameters(reply), "wouldBe", "dry"), "PowerPaused");
        ck_assert_str_eq(json_str(reply_parameters(reply), "wouldBeReason", "dry"), "power-paused");
        json_object_put(reply);
        raw_close(r);

        /* memory_pressure_percent = 50: 35% is no pressure any more. */
        ck_assert_int_ge(asprintf(&conf,
                                  OPEN_SCOPES "power: { pressure_file = \"%s\"; poll_sec = 1; "
                                              "memory_pressure_percent = 50; "
                                              "memory_pressure_release_percent = 40; };\n",
                                  psi),
                         0);
        f = fopen(d->config_path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(conf, f);
        fclose(f);
        free(conf);
        ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
        r = harness_open_working(d, "after reload");
        for (int i = 0; i < 100; i++) {
                st = status(r);
                if (strcmp(json_str(power_of(st), "state", "power"), "ac") == 0)
                        break;
                json_object_put(st);
                st = NULL;
                harness_sleep_msec(20);
        }
        ck_assert_msg(st, "still memory-pressure 2 s after a reload raised the threshold to 50%%");
        json_object_put(st);
        raw_close(r);
        harness_daemon_stop(d);
        free(psi);
}
END_TEST

int main(void) {
        Suite *s = suite_create("power");
        TCase *tc = harness_tcase("power", 60);

        tcase_add_test(tc, test_quiet_machine);
        tcase_add_test(tc, test_pressure_pauses_and_scales);
        tcase_add_test(tc, test_paused_waiter_served);
        tcase_add_test(tc, test_malformed_and_policy);
        tcase_add_test(tc, test_library);
        tcase_add_test(tc, test_dry_run_and_reload);
        suite_add_tcase(s, tc);
        return harness_main(s);
}
