/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of libtokenbudget's own behaviour against the real
 * daemon: where it connects (argument, then $TOKENBUDGET_SOCKET, then the
 * system socket, then $XDG_RUNTIME_DIR/tokenbudget/io.tokenbudget; "unix:"
 * addresses), what it says when nothing answers, the per-call timeout, and
 * the errno and text of daemon errors. Each Check test runs in its own
 * process, so changing the environment here touches no other test.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* Whether the handle is served by the daemon d: the process scope of our pid
 * exists there after a call. */
static bool served_by(tb_client *c, TestDaemon *d) {
        tb_client *admin = harness_client(d);
        json_object *status;
        char name[64];
        bool found;

        ck_assert_int_eq(tb_call(c, "org.varlink.service.GetInfo", NULL, NULL), 0);
        status = harness_admin(admin, "Status");
        snprintf(name, sizeof(name), "process:%d", (int)getpid());
        found = status_scope(status, name) != NULL;
        json_object_put(status);
        tb_client_close(admin);
        return found;
}

/* The system socket is outside the test's control: the fallback to the
 * user-session socket is only checkable when nothing answers there. */
static bool system_socket_answers(void) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX, .sun_path = TB_SYSTEM_SOCKET};
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool answers;

        ck_assert_int_ge(fd, 0);
        answers = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        close(fd);
        return answers;
}

START_TEST(test_address_order) {
        TestDaemon *a = harness_daemon_start(""), *b = harness_daemon_start("");
        char unix_address[128];
        tb_client *c;

        /* The argument wins over the environment. */
        ck_assert_int_eq(setenv(TB_SOCKET_ENV, b->socket_path, 1), 0);
        ck_assert_int_eq(tb_client_open(a->socket_path, &c, NULL), 0);
        ck_assert_msg(served_by(c, a), "an explicit address lost to $%s", TB_SOCKET_ENV);
        tb_client_close(c);

        /* Without an argument, the environment. */
        ck_assert_int_eq(tb_client_open(NULL, &c, NULL), 0);
        ck_assert_str_eq(tb_client_address(c), b->socket_path);
        ck_assert_msg(served_by(c, b), "$%s was not used", TB_SOCKET_ENV);
        tb_client_close(c);

        /* Varlink-style addresses. */
        snprintf(unix_address, sizeof(unix_address), "unix:%s", a->socket_path);
        ck_assert_int_eq(tb_client_open(unix_address, &c, NULL), 0);
        ck_assert_msg(served_by(c, a), "%s was not served by its daemon", unix_address);
        tb_client_close(c);

        harness_daemon_stop(a);
        harness_daemon_stop(b);
}
END_TEST

START_TEST(test_user_session_fallback) {
        char runtime_dir[256], dir[300], path[340];
        TestDaemon *d;
        tb_client *c;

        if (system_socket_answers()) {
                printf("SKIP user-session fallback: a daemon answers on %s\n", TB_SYSTEM_SOCKET);
                return;
        }
        snprintf(runtime_dir, sizeof(runtime_dir), "%s/runtime", harness_dir());
        snprintf(dir, sizeof(dir), "%s/tokenbudget", runtime_dir);
        snprintf(path, sizeof(path), "%s/io.tokenbudget", dir);
        ck_assert_int_eq(mkdir(runtime_dir, 0700), 0);
        d = harness_daemon_start_at("", path);

        ck_assert_int_eq(unsetenv(TB_SOCKET_ENV), 0);
        ck_assert_int_eq(setenv("XDG_RUNTIME_DIR", runtime_dir, 1), 0);
        ck_assert_int_eq(tb_client_open(NULL, &c, NULL), 0);
        ck_assert_str_eq(tb_client_address(c), path);
        ck_assert_msg(served_by(c, d), "the user-session socket was not used");
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* tb_client_addresses() lists what tb_client_open() tries, in its order, as
 * connect() sees each path. */
START_TEST(test_addresses) {
        char runtime_dir[256], user_path[340], **paths = NULL;
        int n;

        snprintf(runtime_dir, sizeof(runtime_dir), "%s/runtime", harness_dir());
        snprintf(user_path, sizeof(user_path), "%s/tokenbudget/io.tokenbudget", runtime_dir);
        ck_assert_int_eq(setenv(TB_SOCKET_ENV, "unix:/tmp/from-env.sock;mode=0600", 1), 0);
        ck_assert_int_eq(setenv("XDG_RUNTIME_DIR", runtime_dir, 1), 0);
        n = tb_client_addresses(NULL, &paths);
        ck_assert_int_eq(n, 3);
        ck_assert_str_eq(paths[0], "/tmp/from-env.sock");
        ck_assert_str_eq(paths[1], TB_SYSTEM_SOCKET);
        ck_assert_str_eq(paths[2], user_path);
        ck_assert_ptr_null(paths[3]);
        paths = tb_strv_free(paths);

        /* An empty $TOKENBUDGET_SOCKET and a relative $XDG_RUNTIME_DIR count as unset. */
        ck_assert_int_eq(setenv(TB_SOCKET_ENV, "", 1), 0);
        ck_assert_int_eq(setenv("XDG_RUNTIME_DIR", "relative", 1), 0);
        ck_assert_int_eq(tb_client_addresses(NULL, &paths), 1);
        ck_assert_str_eq(paths[0], TB_SYSTEM_SOCKET);
        ck_assert_ptr_null(paths[1]);
        paths = tb_strv_free(paths);

        /* An argument is the only address; "unix:" is stripped, "@" kept. */
        ck_assert_int_eq(tb_client_addresses("unix:@abstract;mode=0600", &paths), 1);
        ck_assert_str_eq(paths[0], "@abstract");
        paths = tb_strv_free(paths);
        ck_assert_int_eq(tb_client_addresses("unix:", &paths), -EINVAL);
        ck_assert_ptr_null(tb_strv_free(NULL));
}
END_TEST

START_TEST(test_nothing_answers) {
        char missing[256], *error = NULL;
        tb_client *c = NULL;
        int r;

        snprintf(missing, sizeof(missing), "%s/no-daemon-here", harness_dir());
        r = tb_client_open(missing, &c, &error);
        ck_assert_int_eq(r, -ENOENT);
        ck_assert_ptr_null(c);
        ck_assert_msg(error && strstr(error, missing), "the error does not name the address: %s",
                      error ? error : "(none)");
        free(error);
}
END_TEST

/* A socket that accepts connections (the kernel's backlog does) but never
 * answers: the call must give up after the handle's timeout. */
START_TEST(test_timeout) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        uint64_t start, elapsed_msec;
        tb_client *c;
        tb_grant g;
        int fd, r;

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/silent", harness_dir());
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(fd, 4), 0);

        ck_assert_int_eq(tb_client_open(sa.sun_path, &c, NULL), 0);
        tb_client_set_timeout(c, 300);
        start = harness_now_usec();
        r = tb_request(c, NULL, &g);
        elapsed_msec = (harness_now_usec() - start) / 1000;
        ck_assert_msg(r == -ETIMEDOUT, "expected -ETIMEDOUT, got %d (%s)", r, tb_client_error(c));
        ck_assert_msg(elapsed_msec >= 250 && elapsed_msec < 3000,
                      "timed out after %llu ms with a 300 ms timeout", (unsigned long long)elapsed_msec);
        /* The connection is unusable after a timeout. */
        ck_assert_int_eq(tb_request(c, NULL, &g), -ENOTCONN);
        tb_client_close(c);
        close(fd);
}
END_TEST

/* Each daemon error comes back as its errno, with the Varlink error name and
 * every parameter in the text. */
START_TEST(test_error_mapping) {
        TestDaemon *d = harness_daemon_start("global: { max_tokens_in_flight = 1000; };\n");
        tb_client *c = harness_client(d);
        tb_grant g;
        int r;

        r = tb_request(c, &(tb_request_params){.estimate = 900}, &g);
        ck_assert_msg(r == -EDQUOT, "BudgetExhausted: %d %s", r, tb_client_error(c));
        ck_assert_str_eq(tb_client_error_name(c), "io.tokenbudget.agent.BudgetExhausted");
        /* Strings as they are, integers in decimal. */
        ck_assert_pstr_eq(tb_client_error_parameter(c, "scope"), "global");
        ck_assert_pstr_eq(tb_client_error_parameter(c, "limit"), "1000");
        ck_assert_msg(strstr(tb_client_error(c), "scope=global") &&
                              strstr(tb_client_error(c), "limit=1000") &&
                              strstr(tb_client_error(c), "retryAfterUsec="),
                      "BudgetExhausted text lacks its parameters: %s", tb_client_error(c));

        r = tb_report(c, "00000000deadbeef", 1, 1, NULL, NULL);
        ck_assert_msg(r == -ENOENT, "UnknownAllocation: %d %s", r, tb_client_error(c));
        ck_assert_msg(strstr(tb_client_error(c), "io.tokenbudget.agent.UnknownAllocation") &&
                              strstr(tb_client_error(c), "allocation=00000000deadbeef"),
                      "UnknownAllocation text: %s", tb_client_error(c));

        r = tb_call(c, "io.tokenbudget.agent.Nope", NULL, NULL);
        ck_assert_msg(r == -EOPNOTSUPP, "MethodNotFound: %d %s", r, tb_client_error(c));
        r = tb_call(c, "io.tokenbudget.agent.Request", "{\"estimate\":-1}", NULL);
        ck_assert_msg(r == -EINVAL && strstr(tb_client_error(c), "parameter=estimate"),
                      "InvalidParameter: %d %s", r, tb_client_error(c));
        ck_assert_pstr_eq(tb_client_error_parameter(c, "parameter"), "estimate");
        ck_assert_ptr_null(tb_client_error_parameter(c, "scope"));

        /* Errors do not close the connection. */
        ck_assert_int_eq(tb_request(c, &(tb_request_params){.estimate = 100}, &g), 0);
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

static Suite *client_suite(void) {
        Suite *s = suite_create("integration-client");
        TCase *tc;

        tc = harness_tcase("address", 30);
        tcase_add_test(tc, test_address_order);
        tcase_add_test(tc, test_user_session_fallback);
        tcase_add_test(tc, test_addresses);
        tcase_add_test(tc, test_nothing_answers);
        suite_add_tcase(s, tc);
        tc = harness_tcase("calls", 30);
        tcase_add_test(tc, test_timeout);
        tcase_add_test(tc, test_error_mapping);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return harness_main(client_suite());
}
