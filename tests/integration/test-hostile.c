/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of what a hostile or careless local user tried against
 * the foundation (issue 7), each against the real daemon: the connection
 * slots only admins may take, idle connections and allocations that never
 * report, replies that must arrive although the connection is being closed,
 * allocation ids nobody can guess, and a config file full of NUL bytes. The
 * descriptor, memory and log-flood limits are in test-exhaustion.c.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "tb-check.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* Whether a connection made now is served (GetInfo answered) or closed at once. */
static bool served(const char *path) {
        RawConn *r = raw_open(path);
        char *msg = NULL;
        bool ok;

        ck_assert_msg(r, "connect %s: %s", path, strerror(errno));
        ok = raw_send_msg(r, HARNESS_GETINFO_CALL) == 0 &&
             raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg) == 1 && strstr(msg, "tokenbudgetd");
        free(msg);
        raw_close(r);
        return ok;
}

/* ---- admin slots (point 6) ---- */

/* Four users with two connections each fill every slot but the two kept for
 * admins: a fifth user is turned away, root (budgetctl) still gets in. Before,
 * 8 uids x 128 idle connections locked root out of the default 1024. */
START_TEST(test_admin_slots) {
        static const uid_t users[] = {65534, 65533, 65532, 65531};
        int fds[4][2], extra;
        TestDaemon *d;

        if (!tb_check_need_root("admin slots: connections of uids 65530 to 65534"))
                return;
        d = harness_daemon_start("limits: { max_connections = 10; max_connections_per_uid = 2; "
                                 "admin_connections = 2; };\n");
        for (size_t i = 0; i < 4; i++)
                ck_assert_uint_eq(harness_connect_as(d->socket_path, users[i], 2, fds[i]), 2);
        /* Connected does not mean counted yet: give the daemon a moment to accept. */
        harness_sleep_msec(200);
        ck_assert_uint_eq(harness_connect_as(d->socket_path, 65530, 1, &extra), 1);
        RawConn fifth = {.fd = extra};
        int eof = raw_expect_eof(&fifth, HARNESS_REPLY_TIMEOUT_MSEC, NULL);
        free(fifth.buf);
        close(extra);
        ck_assert_msg(eof == 0, "a fifth user got one of the slots kept for admins");

        char *const argv[] = {(char *)harness_env("BUDGETCTL"), "--socket", d->socket_path, "status", NULL};
        CommandResult res;
        harness_run(argv, NULL, 10000, &res);
        ck_assert_msg(res.status == 0, "budgetctl status as root with every other slot taken: exit %d: %s",
                      res.status, res.err);
        command_result_done(&res);
        ck_assert_msg(served(d->socket_path), "a root connection was not served");

        for (size_t i = 0; i < 4; i++)
                for (size_t k = 0; k < 2; k++)
                        close(fds[i][k]);
        harness_daemon_stop(d);
}
END_TEST

/* ---- idle connections (point 6) ---- */

START_TEST(test_idle_connection_closed) {
        TestDaemon *d = harness_daemon_start("limits: { idle_timeout_sec = 1; };\n");
        RawConn *idle = raw_open(d->socket_path), *holder = raw_open(d->socket_path);
        json_object *reply;
        uint64_t start = harness_now_usec();
        int k;

        ck_assert_ptr_nonnull(idle);
        ck_assert_ptr_nonnull(holder);
        reply = raw_call(holder,
                         "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":10}}",
                         "a Request on the connection that holds an allocation");
        ck_assert_msg(!reply_error(reply), "Request: %s", json_object_to_json_string(reply));
        json_object_put(reply);

        /* Closed between 1 s and 1 s + the sweep's quarter of it (plus a noisy machine). */
        k = raw_expect_eof(idle, 5000, NULL);
        ck_assert_msg(k == 0, "an idle connection was not closed within 5 s of idle_timeout_sec = 1: %s",
                      k == -ETIMEDOUT ? "still open" : "data arrived");
        ck_assert_msg(harness_now_usec() - start >= 900000,
                      "the idle connection was closed after %" PRIu64 " us", harness_now_usec() - start);
        /* One that holds an allocation is not idle, however quiet. */
        harness_sleep_msec(1500);
        reply = raw_call(holder, HARNESS_GETINFO_CALL,
                         "GetInfo on the quiet connection holding an allocation");
        ck_assert_msg(!reply_error(reply), "GetInfo: %s", json_object_to_json_string(reply));
        json_object_put(reply);
        raw_close(idle);
        raw_close(holder);
        harness_daemon_stop(d);
}
END_TEST

/* libtokenbudget notices that the daemon closed its idle handle and connects
 * again: an agent that thinks for longer than the timeout sees nothing. */
START_TEST(test_idle_handle_reconnects) {
        TestDaemon *d = harness_daemon_start("limits: { idle_timeout_sec = 1; };\n");
        tb_client *c = harness_client(d);
        const char *call = "";
        int k;

        ck_assert_int_eq(harness_cycle(c, 100, &call), 0);
        harness_sleep_msec(2500);
        k = harness_cycle(c, 100, &call);
        ck_assert_msg(k == 0, "a cycle on a handle idle past idle_timeout_sec: %s: %d %s", call, k,
                      tb_client_error(c));
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* ---- allocations that never report (point 10) ---- */

START_TEST(test_allocation_expires) {
        TestDaemon *d = harness_daemon_start("limits: { allocation_idle_timeout_sec = 1; };\n");
        tb_client *stuck = harness_client(d), *busy = harness_client(d), *admin = harness_client(d);
        tb_grant gs, gb;
        json_object *st;
        uint64_t deadline;
        int r;

        ck_assert_int_eq(tb_request(stuck, &(tb_request_params){.estimate = 1000}, &gs), 0);
        ck_assert_int_eq(tb_report(stuck,
                                   &(tb_report_params){.allocation = gs.allocation,
                                                       .input_tokens = 30,
                                                       .output_tokens = 12},
                                   NULL),
                         0);
        ck_assert_int_eq(tb_request(busy, &(tb_request_params){.estimate = 1000}, &gb), 0);
        /* The busy one reports every 300 ms for 3 s: it never expires. */
        for (int i = 1; i <= 10; i++) {
                harness_sleep_msec(300);
                r = tb_report(busy,
                              &(tb_report_params){.allocation = gb.allocation,
                                                  .input_tokens = (uint64_t)i,
                                                  .output_tokens = 0},
                              NULL);
                ck_assert_msg(r == 0, "report %d of an allocation that keeps reporting: %s", i,
                              tb_client_error(busy));
        }
        /* By now the stuck one is settled at what it reported, its reservation free. */
        deadline = harness_now_usec() + 3000000;
        for (;;) {
                st = harness_admin(admin, "Status");
                if (json_int(st, "allocations", "Status") == 1)
                        break;
                json_object_put(st);
                ck_assert_msg(harness_now_usec() < deadline,
                              "the allocation without reports did not expire");
                harness_sleep_msec(100);
        }
        ck_assert_int_eq(json_int(st, "reserved", "Status"), 2000 - 10);
        ck_assert_int_eq(json_int(status_scope(st, "global"), "committed", "global"), 42 + 10);
        json_object_put(st);
        r = tb_report(
                stuck,
                &(tb_report_params){.allocation = gs.allocation, .input_tokens = 50, .output_tokens = 12},
                NULL);
        ck_assert_msg(r == -ENOENT, "Report of an expired allocation: %d (%s), expected -ENOENT", r,
                      tb_client_error(stuck));
        /* Its connection stays: a new request works. */
        ck_assert_int_eq(tb_request(stuck, &(tb_request_params){.estimate = 10}, &gs), 0);
        tb_client_close(stuck);
        tb_client_close(busy);
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

/* ---- replies before close (point 12) ---- */

/* A Request, a Report and a Release, then bytes that are not JSON, in one
 * write: the three calls took effect, so their replies arrive before the
 * connection closes. Before, the Release was applied and never acknowledged. */
START_TEST(test_replies_flushed_before_violation_close) {
        TestDaemon *d = harness_daemon_start("");
        RawConn *r = raw_open(d->socket_path);
        json_object *reply;
        char batch[1024], *msg = NULL;
        const char *id;
        int n, k;

        ck_assert_ptr_nonnull(r);
        reply = raw_call(r,
                         "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":100}}",
                         "Request");
        id = json_str(reply_parameters(reply), "allocation", "Request reply");
        n = snprintf(batch, sizeof(batch),
                     "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":\"%s\","
                     "\"inputTokens\":5,\"outputTokens\":6}}%c"
                     "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%s\"}}%c"
                     "this is not json%c",
                     id, 0, id, 0, 0);
        json_object_put(reply);
        ck_assert_int_eq(raw_send(r, batch, (size_t)n), 0);
        k = raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg);
        ck_assert_msg(k == 1 && strstr(msg, "\"state\":\"ok\""), "Report reply before the close: %d %s", k,
                      msg ?: "");
        free(msg);
        k = raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg);
        ck_assert_msg(k == 1 && strstr(msg, "\"used\":11"), "Release reply before the close: %d %s", k,
                      msg ?: "");
        free(msg);
        ck_assert_msg(raw_expect_eof(r, HARNESS_REPLY_TIMEOUT_MSEC, NULL) == 0,
                      "the connection stayed open after a protocol violation");
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

/* A client that sends its calls and shuts down its writing side still gets
 * every reply. */
START_TEST(test_replies_after_half_close) {
        TestDaemon *d = harness_daemon_start("");
        RawConn *r = raw_open(d->socket_path);
        char batch[256], *msg = NULL;
        int n, k;

        ck_assert_ptr_nonnull(r);
        n = snprintf(batch, sizeof(batch), "%s%c%s%c", HARNESS_GETINFO_CALL, 0, HARNESS_GETINFO_CALL, 0);
        ck_assert_int_eq(raw_send(r, batch, (size_t)n), 0);
        ck_assert_int_eq(shutdown(r->fd, SHUT_WR), 0);
        for (int i = 0; i < 2; i++) {
                k = raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg);
                ck_assert_msg(k == 1 && strstr(msg, "tokenbudgetd"), "reply %d after shutdown(SHUT_WR): %d",
                              i, k);
                free(msg);
        }
        ck_assert_int_eq(raw_expect_eof(r, HARNESS_REPLY_TIMEOUT_MSEC, NULL), 0);
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

/* ---- allocation ids (point 12) ---- */

#define ID_SAMPLES 64

static void request_ids(const TestDaemon *d, uint64_t ids[ID_SAMPLES]) {
        tb_client *c = harness_client(d);
        tb_grant g;

        for (size_t i = 0; i < ID_SAMPLES; i++) {
                ck_assert_int_eq(tb_request(c, &(tb_request_params){.estimate = 1}, &g), 0);
                ck_assert_msg(strlen(g.allocation) == 16, "id '%s' is not 16 hex digits", g.allocation);
                ids[i] = strtoull(g.allocation, NULL, 16);
                ck_assert_int_eq(tb_release(c, &(tb_release_params){.allocation = g.allocation}, NULL), 0);
        }
        tb_client_close(c);
}

/* Sequential ids let a peer guess another's; a keyed permutation with a key
 * from getrandom(2) makes consecutive ids differ in about half their 64 bits,
 * and a restart gives a different sequence. */
START_TEST(test_ids_unguessable) {
        static uint64_t first[ID_SAMPLES], second[ID_SAMPLES];
        TestDaemon *d = harness_daemon_start("");
        unsigned bits = 0;

        request_ids(d, first);
        harness_daemon_stop(d);
        d = harness_daemon_start("");
        request_ids(d, second);
        harness_daemon_stop(d);

        for (size_t i = 0; i < ID_SAMPLES; i++) {
                if (i > 0)
                        bits += (unsigned)__builtin_popcountll(first[i] ^ first[i - 1]);
                for (size_t k = 0; k < ID_SAMPLES; k++) {
                        ck_assert_msg(k == i || first[i] != first[k], "id %016" PRIx64 " given twice",
                                      first[i]);
                        ck_assert_msg(first[i] != second[k], "id %016" PRIx64 " given again after a restart",
                                      first[i]);
                }
        }
        /* Random: 32 on average, standard deviation 4 per pair, so 63 pairs stay near 32. */
        ck_assert_msg(bits / (ID_SAMPLES - 1) >= 24,
                      "consecutive ids differ in %u bits on average, expected ~32", bits / (ID_SAMPLES - 1));
}
END_TEST

/* ---- a zero-filled config file (point 5) ---- */

START_TEST(test_config_nul_at_start) {
        static const char zeros[] = "default_estimate = 5;\n\0\0\0\0";
        const HarnessDaemonOptions o = {.config_size = sizeof(zeros) - 1};
        char *err = NULL;
        int status;

        status = harness_daemon_run_to_exit(zeros, &o, 5000, &err);
        ck_assert_msg(status == 2, "a config with NUL bytes: exit %d, expected 2; stderr:\n%s", status, err);
        ck_assert_msg(strstr(err, "tokenbudgetd.conf:2: NUL byte at offset 22"),
                      "stderr does not name the file, line and offset:\n%s", err);
        free(err);
}
END_TEST

/* The file zero-filled after start: a reload is rejected, the old limits stay. */
START_TEST(test_config_nul_on_reload) {
        TestDaemon *d = harness_daemon_start("default_estimate = 777;\n");
        RawConn *r = raw_open(d->socket_path);
        FILE *f = fopen(d->config_path, "w");
        json_object *reply;
        char *log;

        ck_assert_ptr_nonnull(r);
        ck_assert_ptr_nonnull(f);
        ck_assert_int_eq(fwrite("\0\0\0\0\0\0\0\0", 1, 8, f), 8);
        ck_assert_int_eq(fclose(f), 0);
        ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
        for (int i = 0; i < 100; i++) {
                log = harness_read_file(d->log_path, NULL);
                if (log && strstr(log, "rejected"))
                        break;
                free(log);
                log = NULL;
                harness_sleep_msec(50);
        }
        ck_assert_msg(log && strstr(log, "tokenbudgetd.conf:1: NUL byte at offset 0"),
                      "no rejection naming the NUL byte in the log:\n%s", log ?: "");
        free(log);
        /* Without an estimate, the Request gets default_estimate: still the old one. */
        reply = raw_call(r, "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{}}",
                         "a Request without an estimate after the rejected reload");
        ck_assert_msg(json_int(reply_parameters(reply), "granted", "Request reply") == 777,
                      "%s after the rejected reload, expected the old default_estimate 777",
                      json_object_to_json_string(reply));
        json_object_put(reply);
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

/* ---- the default config file (point 14) ---- */

static void wait_log(const TestDaemon *d, const char *needle, const char *what) {
        char *log = NULL;

        for (int i = 0; i < 100; i++) {
                log = harness_read_file(d->log_path, NULL);
                if (log && strstr(log, needle))
                        break;
                free(log);
                log = NULL;
                harness_sleep_msec(50);
        }
        ck_assert_msg(log, "%s: no '%s' in the daemon's log", what, needle);
        free(log);
}

static int64_t granted_without_estimate(RawConn *r, const char *what) {
        json_object *reply =
                raw_call(r, "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{}}", what);
        int64_t granted = json_int(reply_parameters(reply), "granted", what);

        json_object_put(reply);
        return granted;
}

/* Started with no file, the daemon runs on the built-in defaults; a file
 * created afterwards is read on SIGHUP, and removing it again goes back to
 * the defaults, as a restart would. The directory is systemd's
 * $CONFIGURATION_DIRECTORY, so the test need not touch /etc. */
START_TEST(test_default_config_created_after_start) {
        char dir[300], path[340], env_entry[360];
        const char *env[] = {env_entry, NULL};
        TestDaemon *d;
        RawConn *r;
        FILE *f;

        snprintf(dir, sizeof(dir), "%s/etc-tokenbudget", harness_dir());
        snprintf(path, sizeof(path), "%s/tokenbudgetd.conf", dir);
        snprintf(env_entry, sizeof(env_entry), "CONFIGURATION_DIRECTORY=%s", dir);
        ck_assert_int_eq(mkdir(dir, 0755), 0);
        d = harness_daemon_start_with("", &(HarnessDaemonOptions){.env = env, .no_config_option = true});
        r = raw_open(d->socket_path);
        ck_assert_ptr_nonnull(r);
        wait_log(d, "with built-in defaults", "start without a file");
        ck_assert_int_eq(granted_without_estimate(r, "Request on the defaults"), 4000);

        f = fopen(path, "w");
        ck_assert_ptr_nonnull(f);
        fputs("default_estimate = 1234;\n", f);
        ck_assert_int_eq(fclose(f), 0);
        ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
        wait_log(d, "reloaded", "reload after the file was created");
        ck_assert_int_eq(granted_without_estimate(r, "Request after the file appeared"), 1234);

        ck_assert_int_eq(unlink(path), 0);
        ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
        wait_log(d, "does not exist, using the built-in defaults", "reload after the file was removed");
        ck_assert_int_eq(granted_without_estimate(r, "Request after the file was removed"), 4000);
        raw_close(r);
        harness_daemon_stop(d);
}
END_TEST

/* Held requests count against queue.max_waiters_per_uid (issue 10): one
 * non-admin uid cannot fill the held list for everyone; root still can be held. */
START_TEST(test_held_per_uid) {
        static const char oversized[] =
                "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":1000}}";
        int fds[3];
        RawConn c[3];
        TestDaemon *d;
        json_object *reply;
        char *msg = NULL;
        RawConn *root, *admin;

        if (!tb_check_need_root("held requests per uid: connections of uid 65534"))
                return;
        d = harness_daemon_start("max_request_tokens = 100; on_escalate = \"hold\";\n"
                                 "queue: { max_waiters = 10; max_waiters_per_uid = 2; };\n");
        ck_assert_uint_eq(harness_connect_as(d->socket_path, 65534, 3, fds), 3);
        for (size_t i = 0; i < 3; i++) {
                c[i] = (RawConn){.fd = fds[i]};
                ck_assert_int_eq(raw_send_msg(&c[i], oversized), 0);
                if (i < 2) /* held: no answer until an admin decides */
                        ck_assert_int_eq(raw_recv(&c[i], 300, &msg), -ETIMEDOUT);
        }
        ck_assert_int_eq(raw_recv(&c[2], HARNESS_REPLY_TIMEOUT_MSEC, &msg), 1);
        reply = json_tokener_parse(msg);
        ck_assert_msg(
                reply && reply_error(reply) &&
                        strcmp(reply_error(reply), "io.tokenbudget.agent.QueueFull") == 0 &&
                        json_int(reply_parameters(reply), "limit", "QueueFull") == 2 &&
                        strcmp(json_str(reply_parameters(reply), "scope", "QueueFull"), "queue:65534") == 0,
                "the third held request of uid 65534: %s", msg);
        json_object_put(reply);
        free(msg);
        msg = NULL;
        /* An admin is held to the total only. */
        root = harness_open_working(d, "root");
        ck_assert_int_eq(raw_send_msg(root, oversized), 0);
        ck_assert_int_eq(raw_recv(root, 300, &msg), -ETIMEDOUT);
        admin = harness_open_working(d, "admin");
        reply = raw_call(admin, "{\"method\":\"io.tokenbudget.admin.Pending\"}", "Pending");
        ck_assert_int_eq(
                json_object_array_length(json_object_object_get(reply_parameters(reply), "requests")), 3);
        json_object_put(reply);
        raw_close(admin);
        raw_close(root);
        for (size_t i = 0; i < 3; i++) {
                free(c[i].buf);
                close(fds[i]);
        }
        harness_daemon_stop(d);
}
END_TEST

static Suite *hostile_suite(void) {
        Suite *s = suite_create("integration-hostile");
        TCase *tc;

        tc = harness_tcase("admin_slots", 30);
        tb_check_tag_root(tc);
        tcase_add_test(tc, test_admin_slots);
        tcase_add_test(tc, test_held_per_uid);
        suite_add_tcase(s, tc);
        tc = harness_tcase("idle", 30);
        tcase_add_test(tc, test_idle_connection_closed);
        tcase_add_test(tc, test_idle_handle_reconnects);
        tcase_add_test(tc, test_allocation_expires);
        suite_add_tcase(s, tc);
        tc = harness_tcase("close", 30);
        tcase_add_test(tc, test_replies_flushed_before_violation_close);
        tcase_add_test(tc, test_replies_after_half_close);
        suite_add_tcase(s, tc);
        tc = harness_tcase("ids", 30);
        tcase_add_test(tc, test_ids_unguessable);
        suite_add_tcase(s, tc);
        tc = harness_tcase("config", 30);
        tcase_add_test(tc, test_config_nul_at_start);
        tcase_add_test(tc, test_config_nul_on_reload);
        tcase_add_test(tc, test_default_config_created_after_start);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return harness_main(hostile_suite());
}
