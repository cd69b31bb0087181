/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of libtokenbudget's own behaviour against the real
 * daemon: where it connects (argument, then $TOKENBUDGET_SOCKET, then the
 * system socket, then $XDG_RUNTIME_DIR/tokenbudget/io.tokenbudget; "unix:"
 * addresses), what it says when nothing answers, the per-call timeout in
 * microseconds, the errno and text of daemon errors (TooManyAllocations and
 * TooManyScopes with the scope they name), the rules that let its structs
 * grow (zero is "not sent", reserved space must be zero, unknown decisions,
 * states and priorities are kept as names; the priority granted and the one
 * a rule lowered), the async API driven by a real
 * poll() loop, and that its symbols are versioned. Each Check test runs in
 * its own process, so changing the environment here touches no other test.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
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
 * answers, named name in the TCase's directory. */
static int silent_socket(const char *name, char *path, size_t size) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd;

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", harness_dir(), name);
        snprintf(path, size, "%s", sa.sun_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(fd, 16), 0);
        return fd;
}

/* On a socket that never answers, the call gives up after the handle's timeout. */
START_TEST(test_timeout) {
        char path[108];
        uint64_t start, elapsed_msec;
        tb_client *c;
        tb_grant g;
        int fd, r;

        fd = silent_socket("silent-blocking", path, sizeof(path));
        ck_assert_int_eq(tb_client_open(path, &c, NULL), 0);
        ck_assert_int_eq(tb_client_set_timeout_usec(c, 300 * 1000), 0);
        start = harness_now_usec();
        r = tb_request(c, NULL, &g);
        elapsed_msec = (harness_now_usec() - start) / 1000;
        ck_assert_msg(r == -ETIMEDOUT, "expected -ETIMEDOUT, got %d (%s)", r, tb_client_error(c));
        ck_assert_msg(strstr(tb_client_error(c), "did not answer within 300 ms"), "timeout text: %s",
                      tb_client_error(c));
        ck_assert_msg(elapsed_msec >= 300 && elapsed_msec < 3000,
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

        r = tb_report(c, &(tb_report_params){.allocation = "00000000deadbeef", .input_tokens = 1}, NULL);
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
        /* A failure that is not a daemon error has no parameters. */
        ck_assert_int_eq(tb_report(c, &(tb_report_params){}, NULL), -EINVAL);
        ck_assert_ptr_null(tb_client_error_parameter(c, "parameter"));
        ck_assert_ptr_null(tb_client_error_name(c));

        /* Errors do not close the connection. */
        ck_assert_int_eq(tb_request(c, &(tb_request_params){.estimate = 100}, &g), 0);
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* TooManyAllocations names the budget that is full: the process's cap, or a
 * scope's max_allocations; the admin interface's UnknownScope is -ENOENT. */
START_TEST(test_too_many_allocations) {
        TestDaemon *d = harness_daemon_start("agent: { max_allocations = 1; };\n"
                                             "limits: { max_allocations_per_process = 2; };\n");
        tb_client *c = harness_client(d);
        char agent_scope[64], process_scope[64];
        tb_grant g;
        int r;

        snprintf(agent_scope, sizeof(agent_scope), "agent:%u:it-many", (unsigned)getuid());
        snprintf(process_scope, sizeof(process_scope), "process:%d", (int)getpid());
        ck_assert_msg(tb_request(c, &(tb_request_params){.estimate = 10, .agent = "it-many"}, &g) == 0,
                      "first request of the agent: %s", tb_client_error(c));
        r = tb_request(c, &(tb_request_params){.estimate = 10, .agent = "it-many"}, &g);
        ck_assert_msg(r == -EUSERS, "agent's max_allocations: %d %s", r, tb_client_error(c));
        ck_assert_pstr_eq(tb_client_error_name(c), "io.tokenbudget.agent.TooManyAllocations");
        ck_assert_pstr_eq(tb_client_error_parameter(c, "scope"), agent_scope);
        ck_assert_pstr_eq(tb_client_error_parameter(c, "limit"), "1");
        ck_assert_msg(strstr(tb_client_error(c), "limit=1") && strstr(tb_client_error(c), agent_scope),
                      "TooManyAllocations text lacks its parameters: %s", tb_client_error(c));

        ck_assert_msg(tb_request(c, &(tb_request_params){.estimate = 10}, &g) == 0, "second request: %s",
                      tb_client_error(c));
        r = tb_request(c, &(tb_request_params){.estimate = 10}, &g);
        ck_assert_msg(r == -EUSERS, "max_allocations_per_process: %d %s", r, tb_client_error(c));
        ck_assert_pstr_eq(tb_client_error_parameter(c, "scope"), process_scope);
        ck_assert_pstr_eq(tb_client_error_parameter(c, "limit"), "2");

        r = tb_call(c, "io.tokenbudget.admin.SetLimits",
                    "{\"scope\":\"rule:no-such-rule\",\"tokensPerMinute\":1}", NULL);
        ck_assert_msg(r == -ENOENT, "UnknownScope: %d %s", r, tb_client_error(c));
        ck_assert_pstr_eq(tb_client_error_name(c), "io.tokenbudget.admin.UnknownScope");
        ck_assert_pstr_eq(tb_client_error_parameter(c, "scope"), "rule:no-such-rule");
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* ---- the µs timeout: 0 is the default, TB_USEC_INFINITY none ---- */

/* The deadline of one Request queued under timeout_usec on a socket that never answers. */
static int queued_deadline(const char *path, uint64_t timeout_usec, uint64_t *ret_start, uint64_t *ret_end,
                           uint64_t *ret_deadline) {
        tb_client *c;
        int r;

        ck_assert_int_eq(tb_client_open(path, &c, NULL), 0);
        ck_assert_int_eq(tb_client_set_timeout_usec(c, timeout_usec), 0);
        ck_assert_int_eq(tb_client_get_timeout(c, ret_deadline), 0);
        ck_assert_msg(*ret_deadline == TB_USEC_INFINITY, "a deadline with nothing pending");
        *ret_start = harness_now_usec();
        ck_assert_int_eq(tb_request_async(c, NULL, NULL, NULL), 0);
        *ret_end = harness_now_usec();
        r = tb_client_get_timeout(c, ret_deadline);
        tb_client_close(c);
        return r;
}

/* tb_call()'s parameter text is parsed by the codec's own parser (the
 * daemon's grammar), and refused before anything is sent. */
START_TEST(test_call_bad_parameters) {
        static const struct {
                const char *text, *want;
        } rows[] = {
                {"[1]", "not a JSON object"},
                {"{", "invalid JSON"},
                {"{\"a\":1,\"a\":2}", "a key is given twice"},
                {"{\"a\":\"\xff\"}", "invalid UTF-8"},
                {"{\"a\":1} x", "trailing"},
        };
        TestDaemon *d = harness_daemon_start("");
        tb_client *c = harness_client(d);

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                int r = tb_call(c, "org.varlink.service.GetInfo", rows[i].text, NULL);
                ck_assert_msg(r == -EINVAL && strstr(tb_client_error(c), rows[i].want),
                              "row %zu (%s): %d '%s', want -EINVAL with '%s'", i, rows[i].text, r,
                              tb_client_error(c), rows[i].want);
        }
        /* Nothing went out: the connection still answers in order. */
        ck_assert_int_eq(tb_call(c, "org.varlink.service.GetInfo", "{}", NULL), 0);
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

START_TEST(test_timeout_usec) {
        static const struct {
                uint64_t set_usec, want_usec; /* want TB_USEC_INFINITY: no deadline */
        } rows[] = {
                {250 * 1000, 250 * 1000},
                {1, 1},
                {0, TB_TIMEOUT_DEFAULT_USEC},
                {TB_USEC_INFINITY, TB_USEC_INFINITY},
        };
        char path[108];
        int fd = silent_socket("silent-deadlines", path, sizeof(path));

        ck_assert_int_eq(tb_client_set_timeout_usec(NULL, 1), -EINVAL);
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                uint64_t start, end, deadline;
                int r = queued_deadline(path, rows[i].set_usec, &start, &end, &deadline);

                if (rows[i].want_usec == TB_USEC_INFINITY) {
                        ck_assert_msg(r == 0 && deadline == TB_USEC_INFINITY,
                                      "row %zu: timeout %" PRIu64 " gave a deadline (%d, %" PRIu64 ")", i,
                                      rows[i].set_usec, r, deadline);
                        continue;
                }
                ck_assert_msg(r == 1 && deadline >= start + rows[i].want_usec &&
                                      deadline <= end + rows[i].want_usec,
                              "row %zu: timeout %" PRIu64 ": deadline %+" PRId64
                              " us from the start, expected %" PRIu64,
                              i, rows[i].set_usec, (int64_t)(deadline - start), rows[i].want_usec);
        }
        close(fd);
}
END_TEST

/* ---- structs that grow ---- */

/* The List entry of the only allocation open, or fails. */
static json_object *only_allocation(tb_client *admin, json_object **ret_list) {
        json_object *list = harness_admin(admin, "List"), *allocations;

        ck_assert_msg(json_object_object_get_ex(list, "allocations", &allocations) &&
                              json_object_array_length(allocations) == 1,
                      "expected one allocation: %s", json_object_to_json_string(list));
        *ret_list = list;
        return json_object_array_get_idx(allocations, 0);
}

/* Zero fields are not sent: the daemon's defaults apply (an estimate of 0
 * would be refused; a priority sent would show). */
START_TEST(test_zero_is_not_sent) {
        TestDaemon *d = harness_daemon_start("default_estimate = 777;\n");
        tb_client *c = harness_client(d), *admin = harness_client(d);
        tb_report_reply rep;
        tb_release_reply rel;
        json_object *list, *a, *v;
        tb_grant g;

        ck_assert_msg(tb_request(c, &(tb_request_params){.agent = "zero-test"}, &g) == 0, "request: %s",
                      tb_client_error(c));
        ck_assert_msg(g.granted == 777 && g.decision == TB_DECISION_GRANTED,
                      "zero estimate: granted %" PRIu64 " (%s), expected default_estimate 777", g.granted,
                      g.decision_name);
        a = only_allocation(admin, &list);
        ck_assert_str_eq(json_str(a, "agent", "List"), "zero-test");
        ck_assert_msg(!json_object_object_get_ex(a, "class", &v) &&
                              !json_object_object_get_ex(a, "model", &v),
                      "NULL strings were sent: %s", json_object_to_json_string(a));
        ck_assert_str_eq(json_str(a, "priority", "List"), "normal");
        json_object_put(list);

        /* Report's totals are always sent; Release's zero totals are not: the
         * reported ones stand (a 0 sent would be lower, and refused). */
        ck_assert_int_eq(tb_report(c,
                                   &(tb_report_params){.allocation = g.allocation,
                                                       .input_tokens = 100,
                                                       .output_tokens = 50},
                                   &rep),
                         0);
        ck_assert_int_eq(rep.used, 150);
        ck_assert_msg(tb_release(c, &(tb_release_params){.allocation = g.allocation}, &rel) == 0,
                      "release with zero totals: %s", tb_client_error(c));
        ck_assert_int_eq(rel.used, 150);
        ck_assert_int_eq(rel.refunded, g.hard_limit - 150);

        /* NULL params: everything default. */
        ck_assert_int_eq(tb_request(c, NULL, &g), 0);
        ck_assert_int_eq(g.granted, 777);
        tb_client_close(c);
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

static void count_cb(tb_client *c, int error, const tb_grant *g, void *userdata) {
        (*(int *)userdata)++;
}

/* A field this library does not know (reserved space set by a newer
 * caller) is refused before anything is sent, naming the slot. */
START_TEST(test_reserved_refused) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *c = harness_client(d), *admin = harness_client(d);
        tb_request_params p = {.estimate = 10};
        tb_report_params rp = {.allocation = "00000000deadbeef"};
        tb_release_params lp = {.allocation = "00000000deadbeef"};
        json_object *list;
        tb_grant g;
        int called = 0;

        p.reserved[5] = 1;
        ck_assert_int_eq(tb_request(c, &p, &g), -EINVAL);
        ck_assert_msg(strstr(tb_client_error(c), "tb_request_params.reserved[5] is not zero"), "text: %s",
                      tb_client_error(c));
        ck_assert_int_eq(tb_request_async(c, &p, count_cb, &called), -EINVAL);
        ck_assert_int_eq(tb_client_pending(c), 0);
        rp.reserved[0] = 1;
        ck_assert_int_eq(tb_report(c, &rp, NULL), -EINVAL);
        ck_assert_msg(strstr(tb_client_error(c), "tb_report_params.reserved[0]"), "text: %s",
                      tb_client_error(c));
        lp.reserved[15] = UINT64_MAX;
        ck_assert_int_eq(tb_release(c, &lp, NULL), -EINVAL);
        ck_assert_msg(strstr(tb_client_error(c), "tb_release_params.reserved[15]"), "text: %s",
                      tb_client_error(c));
        ck_assert_int_eq(tb_report(c, NULL, NULL), -EINVAL);
        ck_assert_int_eq(tb_request(c, &(tb_request_params){.priority = (tb_priority)99}, &g), -EINVAL);

        /* Nothing reached the daemon, and the handle works. */
        list = harness_admin(admin, "List");
        ck_assert_msg(json_object_array_length(json_object_object_get(list, "allocations")) == 0,
                      "a refused request reached the daemon: %s", json_object_to_json_string(list));
        json_object_put(list);
        p.reserved[5] = 0;
        ck_assert_msg(tb_request(c, &p, &g) == 0, "request: %s", tb_client_error(c));
        ck_assert_int_eq(called, 0);
        tb_client_close(c);
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

START_TEST(test_decisions) {
        TestDaemon *d = harness_daemon_start("max_request_tokens = 1000;\n");
        tb_client *c = harness_client(d);
        tb_grant g;

        ck_assert_int_eq(tb_request(c, &(tb_request_params){.estimate = 1000}, &g), 0);
        ck_assert_int_eq(g.decision, TB_DECISION_GRANTED);
        ck_assert_str_eq(g.decision_name, "granted");
        ck_assert_int_eq(tb_request(c, &(tb_request_params){.estimate = 1001}, &g), 0);
        ck_assert_int_eq(g.decision, TB_DECISION_DEGRADED);
        ck_assert_str_eq(g.decision_name, "degraded");
        ck_assert_int_eq(g.granted, 1000);
        for (size_t i = 0; i < sizeof(g.reserved) / sizeof(g.reserved[0]); i++)
                ck_assert_msg(g.reserved[i] == 0, "tb_grant.reserved[%zu] is not zero", i);

        ck_assert_pstr_eq(tb_decision_to_string(TB_DECISION_GRANTED), "granted");
        ck_assert_pstr_eq(tb_decision_to_string(TB_DECISION_DEGRADED), "degraded");
        ck_assert_ptr_null(tb_decision_to_string(TB_DECISION_UNKNOWN));
        ck_assert_ptr_null(tb_decision_to_string((tb_decision)42));
        ck_assert_pstr_eq(tb_state_to_string(TB_STATE_OK), "ok");
        ck_assert_pstr_eq(tb_state_to_string(TB_STATE_EXCEEDED), "exceeded");
        ck_assert_ptr_null(tb_state_to_string(TB_STATE_UNKNOWN));
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* The priority granted, and the one asked for when a rule's max_priority lowered it. */
START_TEST(test_priorities) {
        TestDaemon *d = harness_daemon_start(
                "rules = (\n"
                "  { name = \"capped\"; match = { agent = \"capped-*\"; }; max_priority = \"normal\"; },\n"
                "  { name = \"batch\"; match = { agent = \"batch-*\"; }; priority = \"background\"; }\n"
                ");\n");
        static const struct {
                const char *name;
                const char *agent;
                tb_priority asked, granted, requested;
                const char *granted_name, *requested_name;
        } rows[] = {
                {"the default", NULL, TB_PRIORITY_DEFAULT, TB_PRIORITY_NORMAL, TB_PRIORITY_UNKNOWN, "normal",
                 ""},
                {"asked for", NULL, TB_PRIORITY_INTERACTIVE, TB_PRIORITY_INTERACTIVE, TB_PRIORITY_UNKNOWN,
                 "interactive", ""},
                {"lowered to the rule's ceiling", "capped-1", TB_PRIORITY_INTERACTIVE, TB_PRIORITY_NORMAL,
                 TB_PRIORITY_INTERACTIVE, "normal", "interactive"},
                {"below the ceiling", "capped-1", TB_PRIORITY_BACKGROUND, TB_PRIORITY_BACKGROUND,
                 TB_PRIORITY_UNKNOWN, "background", ""},
                {"the rule's default", "batch-1", TB_PRIORITY_DEFAULT, TB_PRIORITY_BACKGROUND,
                 TB_PRIORITY_UNKNOWN, "background", ""},
        };
        tb_client *c = harness_client(d);

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                tb_grant g;

                ck_assert_msg(tb_request(c,
                                         &(tb_request_params){.estimate = 10,
                                                              .agent = rows[i].agent,
                                                              .priority = rows[i].asked},
                                         &g) == 0,
                              "row '%s': %s", rows[i].name, tb_client_error(c));
                ck_assert_msg(g.priority == rows[i].granted &&
                                      strcmp(g.priority_name, rows[i].granted_name) == 0,
                              "row '%s': priority %d '%s', expected %d '%s'", rows[i].name, (int)g.priority,
                              g.priority_name, (int)rows[i].granted, rows[i].granted_name);
                ck_assert_msg(g.requested_priority == rows[i].requested &&
                                      strcmp(g.requested_priority_name, rows[i].requested_name) == 0,
                              "row '%s': requested priority %d '%s', expected %d '%s'", rows[i].name,
                              (int)g.requested_priority, g.requested_priority_name, (int)rows[i].requested,
                              rows[i].requested_name);
                for (size_t j = 0; j < sizeof(g.reserved) / sizeof(g.reserved[0]); j++)
                        ck_assert_msg(g.reserved[j] == 0, "row '%s': tb_grant.reserved[%zu] is not zero",
                                      rows[i].name, j);
        }
        ck_assert_pstr_eq(tb_priority_to_string(TB_PRIORITY_INTERACTIVE), "interactive");
        ck_assert_pstr_eq(tb_priority_to_string(TB_PRIORITY_NORMAL), "normal");
        ck_assert_pstr_eq(tb_priority_to_string(TB_PRIORITY_BACKGROUND), "background");
        ck_assert_ptr_null(tb_priority_to_string(TB_PRIORITY_UNKNOWN));
        ck_assert_ptr_null(tb_priority_to_string((tb_priority)42));
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/*
 * A stand-in for a newer daemon on path: a child that accepts one
 * connection and answers each message it reads with the next of replies.
 */
static pid_t fake_daemon(const char path[108], const char *const *replies) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        pid_t pid;

        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        ck_assert_int_ge(lfd, 0);
        ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
        ck_assert_int_eq(listen(lfd, 4), 0);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                int fd = accept(lfd, NULL, NULL);
                char ch;

                for (size_t i = 0; fd >= 0 && replies[i]; i++) {
                        do
                                if (read(fd, &ch, 1) != 1)
                                        _exit(1);
                        while (ch != '\0');
                        if (write(fd, replies[i], strlen(replies[i]) + 1) < 0)
                                _exit(1);
                }
                while (fd >= 0 && read(fd, &ch, 1) > 0)
                        ;
                _exit(0);
        }
        close(lfd);
        return pid;
}

/* Names a newer daemon may send: the value is "unknown", the name kept (when it fits). */
START_TEST(test_unknown_names) {
        static const char *const replies[] = {
                "{\"parameters\":{\"allocation\":\"a1\",\"decision\":\"shadow\",\"granted\":5,\"warnAt\":8,"
                "\"hardLimit\":10,\"suggestedModel\":\"small\"}}",
                "{\"parameters\":{\"state\":\"throttled\",\"used\":3}}",
                "{\"parameters\":{\"allocation\":\"a2\",\"decision\":\"a-decision-name-too-long-to-keep\","
                "\"granted\":5,\"warnAt\":8,\"hardLimit\":10}}",
                "{\"parameters\":{\"allocation\":\"a3\",\"decision\":7,\"granted\":5,\"warnAt\":8,"
                "\"hardLimit\":10}}",
                NULL,
        };
        static const char *const priority_replies[] = {
                "{\"parameters\":{\"allocation\":\"a4\",\"decision\":\"granted\",\"granted\":5,\"warnAt\":8,"
                "\"hardLimit\":10,\"priority\":\"urgent\",\"requestedPriority\":\"critical\"}}",
                "{\"parameters\":{\"allocation\":\"a5\",\"decision\":\"granted\",\"granted\":5,\"warnAt\":8,"
                "\"hardLimit\":10,\"priority\":\"normal\",\"requestedPriority\":null}}",
                "{\"parameters\":{\"allocation\":\"a6\",\"decision\":\"granted\",\"granted\":5,\"warnAt\":8,"
                "\"hardLimit\":10,\"priority\":7}}",
                NULL,
        };
        char path[108];
        tb_report_reply rep;
        tb_client *c;
        tb_grant g;
        pid_t pid;
        int status;

        snprintf(path, sizeof(path), "%s/newer", harness_dir());
        pid = fake_daemon(path, replies);
        ck_assert_int_eq(tb_client_open(path, &c, NULL), 0);
        ck_assert_msg(tb_request(c, NULL, &g) == 0, "unknown decision: %s", tb_client_error(c));
        ck_assert_int_eq(g.decision, TB_DECISION_UNKNOWN);
        ck_assert_str_eq(g.decision_name, "shadow");
        ck_assert_int_eq(g.granted, 5);
        /* A daemon from before priorities in the reply: not malformed, just not said. */
        ck_assert_int_eq(g.priority, TB_PRIORITY_UNKNOWN);
        ck_assert_str_eq(g.priority_name, "");
        ck_assert_int_eq(g.requested_priority, TB_PRIORITY_UNKNOWN);
        ck_assert_str_eq(g.requested_priority_name, "");
        ck_assert_msg(tb_report(c, &(tb_report_params){.allocation = "a1"}, &rep) == 0, "unknown state: %s",
                      tb_client_error(c));
        ck_assert_int_eq(rep.state, TB_STATE_UNKNOWN);
        ck_assert_str_eq(rep.state_name, "throttled");
        ck_assert_int_eq(rep.used, 3);
        ck_assert_int_eq(tb_request(c, NULL, &g), 0);
        ck_assert_int_eq(g.decision, TB_DECISION_UNKNOWN);
        ck_assert_str_eq(g.decision_name, "");
        /* Not a string at all is malformed (and closes the connection). */
        ck_assert_int_eq(tb_request(c, NULL, &g), -EPROTO);
        ck_assert_msg(strstr(tb_client_error(c), "'decision'"), "text: %s", tb_client_error(c));
        ck_assert_int_eq(g.granted, 0);
        tb_client_close(c);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the fake daemon failed: %d", status);

        snprintf(path, sizeof(path), "%s/newer-priorities", harness_dir());
        pid = fake_daemon(path, priority_replies);
        ck_assert_int_eq(tb_client_open(path, &c, NULL), 0);
        ck_assert_msg(tb_request(c, NULL, &g) == 0, "unknown priorities: %s", tb_client_error(c));
        ck_assert_int_eq(g.priority, TB_PRIORITY_UNKNOWN);
        ck_assert_str_eq(g.priority_name, "urgent");
        ck_assert_int_eq(g.requested_priority, TB_PRIORITY_UNKNOWN);
        ck_assert_str_eq(g.requested_priority_name, "critical");
        ck_assert_msg(tb_request(c, NULL, &g) == 0, "a null requestedPriority: %s", tb_client_error(c));
        ck_assert_int_eq(g.priority, TB_PRIORITY_NORMAL);
        ck_assert_str_eq(g.priority_name, "normal");
        ck_assert_int_eq(g.requested_priority, TB_PRIORITY_UNKNOWN);
        ck_assert_str_eq(g.requested_priority_name, "");
        ck_assert_int_eq(tb_request(c, NULL, &g), -EPROTO);
        ck_assert_msg(strstr(tb_client_error(c), "'priority'"), "text: %s", tb_client_error(c));
        tb_client_close(c);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the fake daemon failed: %d", status);
}
END_TEST

/* powerState/powerFactor (1.3): absent from an older daemon (NULL, 1000),
 * floats and integers read as permille, out of range or not a number
 * malformed; a new state name is kept. */
START_TEST(test_power_fields) {
#define GRANT_PREFIX                                                                                        \
        "{\"parameters\":{\"allocation\":\"p1\",\"decision\":\"granted\",\"granted\":5,\"warnAt\":8,"       \
        "\"hardLimit\":10"
        static const char *const replies[] = {
                GRANT_PREFIX "}}",
                GRANT_PREFIX ",\"powerState\":\"battery\",\"powerFactor\":0.25}}",
                GRANT_PREFIX ",\"powerState\":\"ac\",\"powerFactor\":1}}",
                GRANT_PREFIX ",\"powerState\":\"solar-flare\",\"powerFactor\":0.5}}",
                GRANT_PREFIX ",\"powerState\":\"hot\",\"powerFactor\":-1}}",
                NULL,
        };
#undef GRANT_PREFIX
        char path[108];
        tb_client *c;
        tb_grant g;
        pid_t pid;
        int status;

        snprintf(path, sizeof(path), "%s/power", harness_dir());
        pid = fake_daemon(path, replies);
        ck_assert_int_eq(tb_client_open(path, &c, NULL), 0);
        ck_assert_msg(tb_request(c, NULL, &g) == 0, "no power fields: %s", tb_client_error(c));
        ck_assert_ptr_null(g.power_state_name);
        ck_assert_uint_eq(g.power_factor_permille, 1000);
        ck_assert_msg(tb_request(c, NULL, &g) == 0, "battery x0.25: %s", tb_client_error(c));
        ck_assert_str_eq(g.power_state_name, "battery");
        ck_assert_uint_eq(g.power_factor_permille, 250);
        ck_assert_msg(tb_request(c, NULL, &g) == 0, "an integer factor: %s", tb_client_error(c));
        ck_assert_str_eq(g.power_state_name, "ac");
        ck_assert_uint_eq(g.power_factor_permille, 1000);
        ck_assert_msg(tb_request(c, NULL, &g) == 0, "a new state: %s", tb_client_error(c));
        ck_assert_str_eq(g.power_state_name, "solar-flare");
        ck_assert_uint_eq(g.power_factor_permille, 500);
        ck_assert_int_eq(tb_request(c, NULL, &g), -EPROTO);
        ck_assert_msg(strstr(tb_client_error(c), "powerFactor"), "text: %s", tb_client_error(c));
        tb_client_close(c);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the fake daemon failed: %d", status);
}
END_TEST

/* TooManyScopes: -EUSERS like TooManyAllocations, its limit and scope in the parameters. */
START_TEST(test_too_many_scopes) {
        static const char *const replies[] = {
                "{\"error\":\"io.tokenbudget.agent.TooManyScopes\",\"parameters\":{\"limit\":1024,"
                "\"scope\":\"agent:1000:worker-1025\"}}",
                "{\"error\":\"io.tokenbudget.agent.TooManyAllocations\",\"parameters\":{\"limit\":64}}",
                NULL,
        };
        char path[108];
        tb_client *c;
        tb_grant g;
        pid_t pid;
        int status, r;

        snprintf(path, sizeof(path), "%s/scopes", harness_dir());
        pid = fake_daemon(path, replies);
        ck_assert_int_eq(tb_client_open(path, &c, NULL), 0);
        r = tb_request(c, &(tb_request_params){.agent = "worker-1025"}, &g);
        ck_assert_msg(r == -EUSERS, "TooManyScopes: %d %s", r, tb_client_error(c));
        ck_assert_pstr_eq(tb_client_error_name(c), "io.tokenbudget.agent.TooManyScopes");
        ck_assert_pstr_eq(tb_client_error_parameter(c, "limit"), "1024");
        ck_assert_pstr_eq(tb_client_error_parameter(c, "scope"), "agent:1000:worker-1025");
        ck_assert_str_eq(tb_client_error(c),
                         "io.tokenbudget.agent.TooManyScopes: limit=1024 scope=agent:1000:worker-1025");
        /* From a daemon that does not name the scope. */
        r = tb_request(c, NULL, &g);
        ck_assert_msg(r == -EUSERS, "TooManyAllocations without a scope: %d %s", r, tb_client_error(c));
        ck_assert_pstr_eq(tb_client_error_parameter(c, "limit"), "64");
        ck_assert_ptr_null(tb_client_error_parameter(c, "scope"));
        tb_client_close(c);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the fake daemon failed: %d", status);
}
END_TEST

/* ---- the async API, driven by a real poll() loop ---- */

/* What callbacks saw, in the order they ran. */
typedef struct Log {
        int n;
        int order[16];
        int error[16];
        tb_grant grant[16];
        tb_report_reply report[16];
        tb_release_reply release[16];
        char text[16][256];
        char json[16][512];
        tb_client *close_in_callback;
} Log;

/* userdata: a Log with the call's index packed beside it. */
typedef struct Tag {
        Log *log;
        int index;
} Tag;

static int log_add(const Tag *t, tb_client *c, int error) {
        Log *l = t->log;
        int n = l->n++;

        ck_assert_int_lt(n, 16);
        l->order[n] = t->index;
        l->error[n] = error;
        snprintf(l->text[n], sizeof(l->text[n]), "%s", error < 0 ? tb_client_error(c) : "");
        if (l->close_in_callback)
                l->close_in_callback = tb_client_close(l->close_in_callback);
        return n;
}

static void log_request_cb(tb_client *c, int error, const tb_grant *g, void *userdata) {
        const Tag *t = userdata;
        int n = log_add(t, c, error);

        t->log->grant[n] = *g;
}

static void log_report_cb(tb_client *c, int error, const tb_report_reply *r, void *userdata) {
        const Tag *t = userdata;
        int n = log_add(t, c, error);

        t->log->report[n] = *r;
        if (error == -ENOENT)
                snprintf(t->log->json[n], sizeof(t->log->json[n]), "%s|%s",
                         tb_client_error_name(c) ? tb_client_error_name(c) : "",
                         tb_client_error_parameter(c, "allocation")
                                 ? tb_client_error_parameter(c, "allocation")
                                 : "");
}

static void log_release_cb(tb_client *c, int error, const tb_release_reply *r, void *userdata) {
        const Tag *t = userdata;
        int n = log_add(t, c, error);

        t->log->release[n] = *r;
}

static void log_call_cb(tb_client *c, int error, const char *json, void *userdata) {
        const Tag *t = userdata;
        int n = log_add(t, c, error);

        snprintf(t->log->json[n], sizeof(t->log->json[n]), "%s", json ? json : "(null)");
}

/*
 * An application's event loop: poll() on what the handle asks for, with its
 * deadline, then tb_client_process() until it has nothing to do. Runs until
 * the log has want entries; returns the last error of process (0 if none).
 */
static int run_loop(tb_client *c, Log *log, int want, int max_msec) {
        uint64_t end = harness_now_usec() + (uint64_t)max_msec * 1000;
        int last = 0;

        while (log->n < want) {
                struct pollfd p = {.fd = tb_client_get_fd(c)};
                int events = tb_client_get_events(c), timeout_ms = 100, r;
                uint64_t deadline, now = harness_now_usec();

                ck_assert_msg(now < end, "the loop ran %d ms with %d of %d callbacks", max_msec, log->n,
                              want);
                ck_assert_msg(events > 0, "%d callbacks of %d, yet nothing to wait for (%d)", log->n, want,
                              events);
                p.events = (short)events;
                if (tb_client_get_timeout(c, &deadline) > 0)
                        timeout_ms = deadline <= now ? 0 : (int)((deadline - now + 999) / 1000);
                ck_assert_int_ge(poll(&p, 1, timeout_ms), 0);
                do
                        r = tb_client_process(c);
                while (r > 0 && log->n < want);
                if (r < 0)
                        last = r;
                if (r < 0)
                        break;
        }
        return last;
}

START_TEST(test_async_pipeline) {
        static const uint64_t estimates[] = {100, 200, 300};
        TestDaemon *d = harness_daemon_start("");
        tb_client *c = harness_client(d), *admin = harness_client(d);
        Log log = {};
        Tag tags[16];
        json_object *st;
        int n = 0;

        for (int i = 0; i < 16; i++)
                tags[i] = (Tag){&log, i};
        /* Three Requests and a generic call in flight at once. */
        for (size_t i = 0; i < 3; i++)
                ck_assert_int_eq(tb_request_async(c, &(tb_request_params){.estimate = estimates[i]},
                                                  log_request_cb, &tags[n++]),
                                 0);
        ck_assert_int_eq(tb_call_async(c, "org.varlink.service.GetInfo", NULL, log_call_cb, &tags[n++]), 0);
        ck_assert_int_eq(tb_client_pending(c), 4);
        ck_assert_int_ne(tb_client_get_events(c) & POLLIN, 0);
        ck_assert_int_eq(run_loop(c, &log, 4, 5000), 0);
        for (int i = 0; i < 4; i++)
                ck_assert_msg(log.order[i] == i && log.error[i] == 0, "callback %d: call %d, error %d (%s)",
                              i, log.order[i], log.error[i], log.text[i]);
        for (int i = 0; i < 3; i++)
                ck_assert_msg(log.grant[i].granted == estimates[i] &&
                                      log.grant[i].decision == TB_DECISION_GRANTED,
                              "grant %d: %" PRIu64 " (%s), expected %" PRIu64, i, log.grant[i].granted,
                              log.grant[i].decision_name, estimates[i]);
        ck_assert_msg(strstr(log.json[3], "\"vendor\""), "GetInfo reply: %s", log.json[3]);
        ck_assert_int_eq(tb_client_pending(c), 0);
        ck_assert_int_eq(tb_client_get_events(c), 0);

        /* Report then Release each, all six pipelined. */
        for (int i = 0; i < 3; i++) {
                ck_assert_int_eq(tb_report_async(c,
                                                 &(tb_report_params){.allocation = log.grant[i].allocation,
                                                                     .input_tokens = 10 * (uint64_t)(i + 1),
                                                                     .output_tokens = 1},
                                                 log_report_cb, &tags[n++]),
                                 0);
                ck_assert_int_eq(
                        tb_release_async(c, &(tb_release_params){.allocation = log.grant[i].allocation},
                                         log_release_cb, &tags[n++]),
                        0);
        }
        ck_assert_int_eq(run_loop(c, &log, 10, 5000), 0);
        for (int i = 4; i < 10; i++)
                ck_assert_msg(log.order[i] == i && log.error[i] == 0, "callback %d: call %d, error %d (%s)",
                              i, log.order[i], log.error[i], log.text[i]);
        for (int i = 0; i < 3; i++) {
                uint64_t used = 10 * (uint64_t)(i + 1) + 1;

                ck_assert_int_eq(log.report[4 + 2 * i].used, used);
                ck_assert_int_eq(log.report[4 + 2 * i].state, TB_STATE_OK);
                ck_assert_int_eq(log.release[5 + 2 * i].used, used);
                ck_assert_int_eq(log.release[5 + 2 * i].refunded, log.grant[i].hard_limit - used);
        }
        st = harness_admin(admin, "Status");
        ck_assert_int_eq(json_int(st, "allocations", "Status"), 0);
        json_object_put(st);
        tb_client_close(c);
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

/* A daemon error fails only its own call, with its errno and parameters while the callback runs. */
START_TEST(test_async_errors) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *c = harness_client(d);
        Log log = {};
        Tag t0 = {&log, 0}, t1 = {&log, 1}, t2 = {&log, 2};

        ck_assert_int_eq(tb_report_async(c, &(tb_report_params){.allocation = "00000000deadbeef"},
                                         log_report_cb, &t0),
                         0);
        ck_assert_int_eq(tb_call_async(c, "io.tokenbudget.agent.Nope", NULL, log_call_cb, &t1), 0);
        ck_assert_int_eq(tb_request_async(c, NULL, log_request_cb, &t2), 0);
        ck_assert_int_eq(run_loop(c, &log, 3, 5000), 0);
        ck_assert_int_eq(log.error[0], -ENOENT);
        ck_assert_str_eq(log.json[0], "io.tokenbudget.agent.UnknownAllocation|00000000deadbeef");
        ck_assert_int_eq(log.report[0].used, 0);
        ck_assert_int_eq(log.error[1], -EOPNOTSUPP);
        ck_assert_str_eq(log.json[1], "(null)");
        ck_assert_msg(log.error[2] == 0 && log.grant[2].granted > 0, "the call after two errors: %d %s",
                      log.error[2], log.text[2]);
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* A pending call past its deadline fails through its callback, and every call behind it. */
START_TEST(test_async_timeout) {
        char path[108];
        Log log = {};
        Tag t0 = {&log, 0}, t1 = {&log, 1};
        uint64_t start, elapsed_msec;
        tb_client *c;
        int fd, r;

        fd = silent_socket("silent-async", path, sizeof(path));
        ck_assert_int_eq(tb_client_open(path, &c, NULL), 0);
        ck_assert_int_eq(tb_client_set_timeout_usec(c, 200 * 1000), 0);
        start = harness_now_usec();
        ck_assert_int_eq(tb_request_async(c, NULL, log_request_cb, &t0), 0);
        ck_assert_int_eq(tb_report_async(c, &(tb_report_params){.allocation = "x"}, log_report_cb, &t1), 0);
        r = run_loop(c, &log, 2, 3000);
        elapsed_msec = (harness_now_usec() - start) / 1000;
        ck_assert_int_eq(r, -ETIMEDOUT);
        ck_assert_msg(elapsed_msec >= 200 && elapsed_msec < 2000, "timed out after %llu ms with 200 ms",
                      (unsigned long long)elapsed_msec);
        ck_assert_int_eq(log.n, 2);
        ck_assert_msg(log.order[0] == 0 && log.error[0] == -ETIMEDOUT &&
                              strstr(log.text[0], "did not answer within 200 ms"),
                      "first: call %d error %d (%s)", log.order[0], log.error[0], log.text[0]);
        ck_assert_msg(log.order[1] == 1 && log.error[1] == -ETIMEDOUT && strstr(log.text[1], "Report"),
                      "second: call %d error %d (%s)", log.order[1], log.error[1], log.text[1]);
        /* A failed call's reply is all zeros. */
        ck_assert_msg(log.grant[0].allocation[0] == '\0' && log.grant[0].granted == 0 &&
                              log.grant[0].decision == TB_DECISION_UNKNOWN && log.report[1].used == 0,
                      "a timed-out call's reply is not zero");
        /* Closed, as after a blocking timeout. */
        ck_assert_int_eq(tb_client_get_fd(c), -ENOTCONN);
        ck_assert_int_eq(tb_client_process(c), -ENOTCONN);
        ck_assert_int_eq(tb_request_async(c, NULL, log_request_cb, &t0), -ENOTCONN);
        ck_assert_int_eq(log.n, 2);
        tb_client_close(c);
        close(fd);
}
END_TEST

static void busy_cb(tb_client *c, int error, const tb_grant *g, void *userdata) {
        int *r = userdata;
        tb_grant other;

        r[0] = tb_request(c, NULL, &other);
        r[1] = tb_client_process(c);
        r[2] = 1;
}

/* A blocking call needs the handle to itself. */
START_TEST(test_async_busy) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *c = harness_client(d);
        int inside[3] = {0, 0, 0};
        Log log = {};
        Tag t0 = {&log, 0};
        tb_grant g;

        ck_assert_int_eq(tb_request_async(c, NULL, log_request_cb, &t0), 0);
        ck_assert_int_eq(tb_request(c, NULL, &g), -EBUSY);
        ck_assert_msg(strstr(tb_client_error(c), "asynchronous"), "text: %s", tb_client_error(c));
        ck_assert_int_eq(tb_call(c, "org.varlink.service.GetInfo", NULL, NULL), -EBUSY);
        ck_assert_int_eq(tb_report(c, &(tb_report_params){.allocation = "x"}, NULL), -EBUSY);
        ck_assert_int_eq(tb_client_pending(c), 1);
        ck_assert_int_eq(run_loop(c, &log, 1, 5000), 0);
        ck_assert_int_eq(log.error[0], 0);
        /* Idle again: blocking works. */
        ck_assert_msg(tb_request(c, NULL, &g) == 0, "after the async call: %s", tb_client_error(c));

        /* Nor from inside a callback. */
        ck_assert_int_eq(tb_request_async(c, NULL, busy_cb, inside), 0);
        while (inside[2] == 0) {
                ck_assert_int_ge(tb_client_wait(c, 5 * 1000000), 0);
                ck_assert_int_ge(tb_client_process(c), 0);
        }
        ck_assert_int_eq(inside[0], -EBUSY);
        ck_assert_int_eq(inside[1], -EBUSY);
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* Closing with calls pending runs no callbacks, also from inside one. */
START_TEST(test_async_close) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *c = harness_client(d);
        Log log = {};
        Tag t0 = {&log, 0}, t1 = {&log, 1}, t2 = {&log, 2};
        int r;

        ck_assert_int_eq(tb_request_async(c, NULL, log_request_cb, &t0), 0);
        ck_assert_int_eq(tb_request_async(c, NULL, log_request_cb, &t1), 0);
        tb_client_close(c);
        ck_assert_int_eq(log.n, 0);

        c = harness_client(d);
        log.close_in_callback = c;
        for (int i = 0; i < 3; i++)
                ck_assert_int_eq(tb_request_async(c, NULL, log_request_cb,
                                                  i == 0   ? &t0
                                                  : i == 1 ? &t1
                                                           : &t2),
                                 0);
        /* Wait until all three replies are in, so one process() could run them all. */
        harness_sleep_msec(200);
        do {
                ck_assert_int_ge(tb_client_wait(c, 5 * 1000000), 0);
                r = tb_client_process(c);
        } while (log.n == 0 && r >= 0);
        /* c is freed now (0: nothing more to do on it); only the first callback ran. */
        ck_assert_int_eq(r, 0);
        ck_assert_int_eq(log.n, 1);
        ck_assert_ptr_null(log.close_in_callback);
        harness_daemon_stop(d);
}
END_TEST

static void reconnect_cb(tb_client *c, int error, const tb_grant *g, void *userdata) {
        *(int *)userdata = error < 0 ? error : 1;
}

/* The idle reconnect in the async path: the same call works, on a new descriptor. */
START_TEST(test_async_reconnect) {
        TestDaemon *d = harness_daemon_start("limits: { idle_timeout_sec = 1; };\n");
        tb_client *c = harness_client(d);
        int old_fd, done = 0;

        ck_assert_int_eq(tb_call(c, "org.varlink.service.GetInfo", NULL, NULL), 0);
        old_fd = tb_client_get_fd(c);
        harness_sleep_msec(2500);
        ck_assert_int_eq(tb_request_async(c, NULL, reconnect_cb, &done), 0);
        ck_assert_msg(tb_client_get_fd(c) >= 0 && tb_client_get_fd(c) != old_fd,
                      "after the daemon closed the idle handle: fd %d, was %d", tb_client_get_fd(c), old_fd);
        while (done == 0) {
                ck_assert_int_ge(tb_client_wait(c, 5 * 1000000), 0);
                ck_assert_int_ge(tb_client_process(c), 0);
        }
        ck_assert_msg(done == 1, "the call after the reconnect: %d %s", done, tb_client_error(c));
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* ---- the ABI: soname 1, every symbol at its version node, nothing else exported ---- */

START_TEST(test_symbols_versioned) {
        /* Added after 1.0: each in its own node (libtokenbudget.sym). */
        static const struct {
                const char *symbol, *version;
        } later[] = {
                {"tb_priority_to_string", "TOKENBUDGET_1.1"},
        };
        static const char *const symbols[] = {
                "tb_call",
                "tb_call_async",
                "tb_client_address",
                "tb_client_addresses",
                "tb_client_close",
                "tb_client_error",
                "tb_client_error_name",
                "tb_client_error_parameter",
                "tb_client_get_events",
                "tb_client_get_fd",
                "tb_client_get_timeout",
                "tb_client_open",
                "tb_client_pending",
                "tb_client_process",
                "tb_client_retry_after_usec",
                "tb_client_set_timeout_usec",
                "tb_client_wait",
                "tb_decision_to_string",
                "tb_release",
                "tb_release_async",
                "tb_report",
                "tb_report_async",
                "tb_request",
                "tb_request_async",
                "tb_state_to_string",
                "tb_strv_free",
                "tb_version",
        };
        void *lib = dlopen("libtokenbudget.so.1", RTLD_NOW | RTLD_NOLOAD);

        ck_assert_msg(lib, "libtokenbudget.so.1 is not the library this test runs with: %s", dlerror());
        for (size_t i = 0; i < sizeof(symbols) / sizeof(symbols[0]); i++)
                ck_assert_msg(dlvsym(lib, symbols[i], "TOKENBUDGET_1"), "%s is not at TOKENBUDGET_1",
                              symbols[i]);
        for (size_t i = 0; i < sizeof(later) / sizeof(later[0]); i++) {
                ck_assert_msg(dlvsym(lib, later[i].symbol, later[i].version), "%s is not at %s",
                              later[i].symbol, later[i].version);
                ck_assert_msg(!dlvsym(lib, later[i].symbol, "TOKENBUDGET_1"),
                              "%s is at TOKENBUDGET_1 too: a program built against 1.0 would not see it is "
                              "missing",
                              later[i].symbol);
        }
        /* The codec linked into the library stays inside it. */
        ck_assert_ptr_null(dlsym(lib, "varlink_reply_parse"));
        ck_assert_ptr_null(dlsym(lib, "utf8_valid"));
        dlclose(lib);
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
        tcase_add_test(tc, test_timeout_usec);
        tcase_add_test(tc, test_error_mapping);
        tcase_add_test(tc, test_too_many_allocations);
        tcase_add_test(tc, test_too_many_scopes);
        tcase_add_test(tc, test_call_bad_parameters);
        suite_add_tcase(s, tc);
        tc = harness_tcase("growth", 30);
        tcase_add_test(tc, test_zero_is_not_sent);
        tcase_add_test(tc, test_reserved_refused);
        tcase_add_test(tc, test_decisions);
        tcase_add_test(tc, test_priorities);
        tcase_add_test(tc, test_unknown_names);
        tcase_add_test(tc, test_power_fields);
        tcase_add_test(tc, test_symbols_versioned);
        suite_add_tcase(s, tc);
        tc = harness_tcase("async", 30);
        tcase_add_test(tc, test_async_pipeline);
        tcase_add_test(tc, test_async_errors);
        tcase_add_test(tc, test_async_timeout);
        tcase_add_test(tc, test_async_busy);
        tcase_add_test(tc, test_async_close);
        tcase_add_test(tc, test_async_reconnect);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return harness_main(client_suite());
}
