/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of the bounds tokenbudgetd puts on what one client can
 * grow, each set through the config file: message size, connections in total
 * and per uid, open allocations per process, and output queued for a peer
 * that never reads (closed, other clients unaffected, the daemon's memory
 * bounded).
 */
#define _GNU_SOURCE
#include "harness.h"
#include "tb-check.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static void assert_works(RawConn *r, const char *what) {
        json_object *reply = raw_call(r, HARNESS_GETINFO_CALL, what);

        ck_assert_msg(!reply_error(reply), "%s: %s", what, json_object_to_json_string(reply));
        json_object_put(reply);
}

START_TEST(test_max_message_bytes) {
        TestDaemon *d = harness_daemon_start("limits: { max_message_bytes = 1024; };\n");
        char *just = harness_padded_getinfo(1024), *over = harness_padded_getinfo(1025);
        RawConn *r = raw_open(d->socket_path);
        json_object *reply;
        int k;

        ck_assert_ptr_nonnull(r);
        reply = raw_call(r, just, "a message of exactly max_message_bytes (1024)");
        ck_assert_msg(!reply_error(reply), "1024-byte GetInfo: %s", json_object_to_json_string(reply));
        json_object_put(reply);
        k = raw_send_msg(r, over);
        ck_assert_msg(k == 0 || k == -EPIPE, "write: %s", strerror(-k));
        ck_assert_msg(raw_expect_eof(r, HARNESS_REPLY_TIMEOUT_MSEC, NULL) == 0,
                      "a 1025-byte message (max_message_bytes 1024) did not close the connection silently");
        raw_close(r);

        /* Without its NUL: the daemon must not wait for the end of the message. */
        r = raw_open(d->socket_path);
        ck_assert_ptr_nonnull(r);
        k = raw_send(r, over, 1025);
        ck_assert_msg(k == 0 || k == -EPIPE, "write: %s", strerror(-k));
        ck_assert_msg(raw_expect_eof(r, HARNESS_REPLY_TIMEOUT_MSEC, NULL) == 0,
                      "1025 bytes without NUL (max_message_bytes 1024) did not close the connection");
        raw_close(r);
        free(just);
        free(over);
        harness_daemon_stop(d);
}
END_TEST

/* As uid 65534 in a forked child: a GetInfo must work although root is at its limit. */
static int other_uid_getinfo(const TestDaemon *d) {
        int status = 0;
        pid_t pid = fork();

        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                RawConn *r;
                char *msg = NULL;

                if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(2);
                r = raw_open(d->socket_path);
                if (!r || raw_send_msg(r, HARNESS_GETINFO_CALL) < 0 ||
                    raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg) != 1 || !strstr(msg, "tokenbudgetd"))
                        _exit(1);
                _exit(0);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/*
 * Fills the limit, checks that one more is rejected, and (as root) what a
 * connection from uid 65534 gets: other_uid_status 0 = works, 1 = rejected.
 */
static void check_connection_limit(const char *config, size_t limit, const char *what,
                                   int other_uid_status) {
        TestDaemon *d = harness_daemon_start(config);
        RawConn *conns[16];

        ck_assert(limit < 16);
        for (size_t i = 0; i < limit; i++)
                conns[i] = harness_open_working(d, what);
        harness_assert_refused(d, what);
        if (tb_check_need_root_part(what)) { /* uid 65534 at the limit */
                int k = other_uid_getinfo(d);

                ck_assert_msg(k == other_uid_status,
                              "%s: a connection from uid 65534 while uid 0 is at the limit: "
                              "child status %d, expected %d (0 served, 1 closed)",
                              what, k, other_uid_status);
        }
        for (size_t i = 0; i < limit; i++)
                assert_works(conns[i], "a connection within the limit, after the rejection");
        conns[0] = raw_close(conns[0]);
        conns[0] = harness_open_working(d, "a new connection after closing one");
        for (size_t i = 0; i < limit; i++)
                raw_close(conns[i]);
        harness_daemon_stop(d);
}

/* The total applies across uids: 3 of root's and 1 of uid 65534 fill 4, and
 * then neither gets another (no slots are kept for admins here). */
START_TEST(test_max_connections) {
        TestDaemon *d;
        RawConn *conns[3];
        int other[2];

        if (!tb_check_need_root("max_connections: connections of uid 65534"))
                return;
        d = harness_daemon_start("limits: { max_connections = 4; max_connections_per_uid = 3; "
                                 "admin_connections = 0; };\n");
        for (size_t i = 0; i < 3; i++)
                conns[i] = harness_open_working(d, "a root connection within the limit");
        ck_assert_uint_eq(harness_connect_as(d->socket_path, 65534, 1, other), 1);
        harness_assert_refused(d, "a 5th connection (root) with max_connections = 4");
        ck_assert_msg(other_uid_getinfo(d) == 1,
                      "a 5th connection (uid 65534) with max_connections = 4 was served");
        close(other[0]);
        harness_sleep_msec(100);
        ck_assert_msg(other_uid_getinfo(d) == 0, "uid 65534 not served after one connection closed");
        for (size_t i = 0; i < 3; i++)
                raw_close(conns[i]);
        harness_daemon_stop(d);
}
END_TEST

START_TEST(test_max_connections_per_uid) {
        check_connection_limit("limits: { max_connections = 100; max_connections_per_uid = 3; };\n", 3,
                               "max_connections_per_uid = 3", 0);
}
END_TEST

START_TEST(test_max_allocations_per_process) {
        TestDaemon *d = harness_daemon_start("limits: { max_allocations_per_process = 3; };\n");
        tb_client *a = harness_client(d), *b = harness_client(d);
        tb_request_params p = {.estimate = 10};
        tb_grant g[3], extra;
        tb_client *who[3] = {a, a, b};
        int r;

        for (size_t i = 0; i < 3; i++)
                ck_assert_msg(tb_request(who[i], &p, &g[i]) == 0, "request %zu: %s", i,
                              tb_client_error(who[i]));
        /* The limit is per process: both handles of this process count. */
        for (size_t i = 0; i < 2; i++) {
                tb_client *c = i ? a : b;

                r = tb_request(c, &p, &extra);
                ck_assert_msg(r == -EUSERS,
                              "4th open allocation of the process via handle %zu: %d (%s), expected -EUSERS",
                              i, r, tb_client_error(c));
                ck_assert_msg(tb_client_error_name(c) &&
                                      strcmp(tb_client_error_name(c),
                                             "io.tokenbudget.agent.TooManyAllocations") == 0 &&
                                      strstr(tb_client_error(c), "limit=3"),
                              "4th allocation: error \"%s\", expected TooManyAllocations with limit=3",
                              tb_client_error(c));
        }
        ck_assert_msg(tb_release(a, &(tb_release_params){.allocation = g[0].allocation}, NULL) == 0,
                      "release: %s", tb_client_error(a));
        ck_assert_msg(tb_request(b, &p, &extra) == 0, "request after a release: %s", tb_client_error(b));
        tb_client_close(a);
        tb_client_close(b);
        harness_daemon_stop(d);
}
END_TEST

#define FLOOD_CALL                                                                                          \
        "{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":{\"interface\":\"io."   \
        "tokenbudget.agent\"}}"
#define FLOOD_CALLS          20000 /* ~2.8 KB each: ~56 MB of replies if the daemon queued them all */
#define FLOOD_RSS_GROWTH_KIB (16 * 1024)

/* Writes up to FLOOD_CALLS calls without reading, for at most 3 s; returns how many went out. */
static size_t flood(RawConn *r) {
        static const char call[] = FLOOD_CALL;
        uint64_t deadline = harness_now_usec() + 3000000;
        size_t sent_bytes = 0, total = FLOOD_CALLS * sizeof(call);
        char *batch = malloc(total);

        ck_assert_ptr_nonnull(batch);
        for (size_t i = 0; i < FLOOD_CALLS; i++)
                memcpy(batch + i * sizeof(call), call, sizeof(call));
        ck_assert_int_eq(fcntl(r->fd, F_SETFL, O_NONBLOCK), 0);
        while (sent_bytes < total && harness_now_usec() < deadline) {
                ssize_t n = send(r->fd, batch + sent_bytes, total - sent_bytes, MSG_NOSIGNAL);

                if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                        harness_sleep_msec(1);
                        continue;
                }
                if (n < 0) /* EPIPE or ECONNRESET: the daemon closed us, as it should */
                        break;
                sent_bytes += (size_t)n;
        }
        free(batch);
        ck_assert_int_eq(fcntl(r->fd, F_SETFL, 0), 0);
        return sent_bytes / sizeof(call);
}

START_TEST(test_max_output_bytes) {
        TestDaemon *d = harness_daemon_start("limits: { max_output_bytes = 65536; };\n");
        tb_client *other = harness_client(d);
        RawConn *r = raw_open(d->socket_path);
        long rss_before = harness_daemon_mem_kib(d, "VmRSS"), rss_after, peak_after;
        const char *call = "";
        size_t sent, received = 0;
        char *msg = NULL;
        int k;

        ck_assert_ptr_nonnull(r);
        sent = flood(r);
        /* The flooder is still unread (or already closed): others must not notice. */
        for (int i = 0; i < 5; i++) {
                k = harness_cycle(other, 100, &call);
                ck_assert_msg(k == 0, "other client's cycle %d during the flood: %s: %d %s", i, call, k,
                              tb_client_error(other));
        }
        while ((k = raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg)) == 1) {
                received++;
                free(msg);
        }
        ck_assert_msg(k == 0,
                      "the peer that never read was not closed: %zu calls sent, %zu replies read, then %s "
                      "(max_output_bytes = 65536)",
                      sent, received, strerror(-k));
        ck_assert_msg(received < sent,
                      "all %zu replies were delivered; expected the daemon to close the peer", sent);
        /* The peak (VmHWM) catches a queue that grew and was freed again. */
        rss_after = harness_daemon_mem_kib(d, "VmRSS");
        peak_after = harness_daemon_mem_kib(d, "VmHWM");
        ck_assert_msg(
                peak_after - rss_before < FLOOD_RSS_GROWTH_KIB &&
                        rss_after - rss_before < FLOOD_RSS_GROWTH_KIB,
                "daemon memory grew during the flood: VmRSS %ld KiB before, %ld KiB after, peak %ld KiB "
                "(allowed growth %d KiB)",
                rss_before, rss_after, peak_after, FLOOD_RSS_GROWTH_KIB);
        raw_close(r);
        k = harness_cycle(other, 100, &call);
        ck_assert_msg(k == 0, "other client's cycle after the flood: %s: %d %s", call, k,
                      tb_client_error(other));
        tb_client_close(other);
        harness_daemon_stop(d);
}
END_TEST

/* max_output_bytes bounds a backlog, not one reply: a List far larger than
 * the limit, and than the socket's kernel buffer (~200 KiB), still reaches
 * budgetctl, which reads it. */
#define LARGE_LIST_ALLOCATIONS 5000

START_TEST(test_large_reply_over_max_output_bytes) {
        TestDaemon *d =
                harness_daemon_start("limits: { max_output_bytes = 65536; max_allocations_per_process = "
                                     "10000; };\nagent: { max_allocations = 0; };\n");
        tb_client *agent = harness_client(d);
        char *const argv[] = {
                (char *)harness_env("BUDGETCTL"), "--socket", d->socket_path, "--json", "list", NULL};
        CommandResult res;
        json_object *reply, *list;
        tb_grant g;
        int r;

        for (int i = 0; i < LARGE_LIST_ALLOCATIONS; i++) {
                r = tb_request(agent, &(tb_request_params){.estimate = 10, .agent = "large-reply-test"}, &g);
                ck_assert_msg(r == 0, "request %d: %d %s", i, r, tb_client_error(agent));
        }
        harness_run(argv, NULL, 10000, &res);
        ck_assert_msg(res.status == 0, "budgetctl --json list exited %d: %s", res.status, res.err);
        ck_assert_msg(strlen(res.out) > 1024 * 1024,
                      "the List reply is only %zu bytes; the test needs more than the socket buffer",
                      strlen(res.out));
        reply = json_tokener_parse(res.out);
        ck_assert_msg(reply && json_object_object_get_ex(reply, "allocations", &list),
                      "budgetctl --json list printed no allocations array");
        ck_assert_int_eq(json_object_array_length(list), LARGE_LIST_ALLOCATIONS);
        json_object_put(reply);
        command_result_done(&res);
        tb_client_close(agent);
        harness_daemon_stop(d);
}
END_TEST

static Suite *limits_suite(void) {
        Suite *s = suite_create("integration-limits");
        TCase *tc;

        tc = harness_tcase("max_message_bytes", 30);
        tcase_add_test(tc, test_max_message_bytes);
        suite_add_tcase(s, tc);
        tc = harness_tcase("max_connections", 30);
        tcase_add_test(tc, test_max_connections);
        tcase_add_test(tc, test_max_connections_per_uid);
        suite_add_tcase(s, tc);
        tc = harness_tcase("max_allocations_per_process", 30);
        tcase_add_test(tc, test_max_allocations_per_process);
        suite_add_tcase(s, tc);
        tc = harness_tcase("max_output_bytes", 30);
        tcase_add_test(tc, test_max_output_bytes);
        tcase_add_test(tc, test_large_reply_over_max_output_bytes);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return harness_main(limits_suite());
}
