/* SPDX-License-Identifier: MIT */
/*
 * onBehalfOf (issue 14, point 2): a trusted proxy asks for another process,
 * and the allocation is charged exactly as if that process had asked itself
 * (its process and user scopes), while it belongs to the proxy's connection
 * (Report, Release, and settling when that connection closes). Only root and
 * the users in trusted_proxies may; anyone else is PermissionDenied, and a
 * pid that is not a live process of the given uid, or a malformed
 * onBehalfOf, is InvalidParameter. Every case runs processes of other uids:
 * root only.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tb-check.h"

#define PROXY_UID 65534
#define AGENT_UID 65533

/* A process that sleeps as uid (0: as root) until killed. */
static pid_t spawn_sleeper(uid_t uid) {
        pid_t pid = fork();

        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                if (uid != 0 && (setgroups(0, NULL) < 0 || setgid(uid) < 0 || setuid(uid) < 0))
                        _exit(127);
                execlp("sleep", "sleep", "60", (char *)NULL);
                _exit(127);
        }
        /* Until it has its uid and its own comm, /proc says the test's. */
        for (int i = 0; i < 200; i++) {
                char path[64], *text;
                size_t len;

                snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
                text = harness_read_file(path, &len);
                if (text && strncmp(text, "sleep", 5) == 0) {
                        free(text);
                        return pid;
                }
                free(text);
                harness_sleep_msec(10);
        }
        ck_abort_msg("the sleeper %d did not start", (int)pid);
        return -1;
}

static void reap(pid_t pid) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
}

static RawConn *connect_as(const TestDaemon *d, uid_t uid) {
        RawConn *r = calloc(1, sizeof(*r));
        int fd;

        ck_assert_ptr_nonnull(r);
        ck_assert_int_eq(harness_connect_as(d->socket_path, uid, 1, &fd), 1);
        r->fd = fd;
        return r;
}

static json_object *request_for(RawConn *r, pid_t pid, uid_t uid, int64_t estimate) {
        return harness_callf(
                r,
                "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":%lld,"
                "\"onBehalfOf\":{\"pid\":%d,\"uid\":%u}}}",
                (long long)estimate, (int)pid, (unsigned)uid);
}

static void expect_error(json_object *reply, const char *error, const char *parameter, const char *what) {
        const char *e = reply_error(reply);

        ck_assert_msg(e && strcmp(e, error) == 0, "%s: expected %s: %s", what, error,
                      json_object_to_json_string(reply));
        if (parameter)
                ck_assert_str_eq(json_str(reply_parameters(reply), "parameter", what), parameter);
        json_object_put(reply);
}

/* The in-flight tokens of a scope in a Status reply (0 when absent). */
static int64_t scope_reserved(const TestDaemon *d, const char *name) {
        tb_client *c = harness_client(d);
        json_object *status = harness_admin(c, "Status"), *scope = status_scope(status, name), *v = NULL;
        int64_t reserved = -1;

        if (scope && json_object_object_get_ex(scope, "reserved", &v))
                reserved = json_object_get_int64(v);
        else if (scope)
                reserved = 0;
        json_object_put(status);
        tb_client_close(c);
        return reserved;
}

static int64_t scope_minute_used(const TestDaemon *d, const char *name) {
        tb_client *c = harness_client(d);
        json_object *status = harness_admin(c, "Status"), *scope = status_scope(status, name);
        int64_t used = scope ? scope_window_used(scope, "minute", NULL) : -1;

        json_object_put(status);
        tb_client_close(c);
        return used;
}

/* The daemon settles a closed connection's allocations when it reads the close. */
static void expect_released(const TestDaemon *d, const char *scope) {
        for (int i = 0; i < 100 && scope_reserved(d, scope) != 0; i++)
                harness_sleep_msec(10);
        ck_assert_int_eq(scope_reserved(d, scope), 0);
}

/* Root asks for a root process and for one of another uid: each is charged
 * to its own process and user scopes, and released through root's connection. */
START_TEST(test_charged_as_the_process) {
        TestDaemon *d;
        RawConn *proxy;
        json_object *g, *rel;
        pid_t agent;
        char scope[64];

        if (!tb_check_need_root("processes of another uid"))
                return;
        d = harness_daemon_start("");
        proxy = harness_open_working(d, "proxy");
        agent = spawn_sleeper(AGENT_UID);
        g = request_for(proxy, agent, AGENT_UID, 1000);
        ck_assert_msg(!reply_error(g), "Request onBehalfOf: %s", json_object_to_json_string(g));
        snprintf(scope, sizeof(scope), "process:%d", (int)agent);
        ck_assert_int_eq(scope_reserved(d, scope), 2000); /* granted x hard_multiplier */
        snprintf(scope, sizeof(scope), "user:%d", AGENT_UID);
        ck_assert_int_eq(scope_reserved(d, scope), 2000);
        ck_assert_int_le(scope_reserved(d, "user:0"), 0); /* not the proxy's */
        rel = harness_callf(
                proxy,
                "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%s\","
                "\"inputTokens\":100,\"outputTokens\":23}}",
                json_str(reply_parameters(g), "allocation", "grant"));
        ck_assert_msg(!reply_error(rel), "Release: %s", json_object_to_json_string(rel));
        ck_assert_int_eq(json_int(reply_parameters(rel), "used", "release"), 123);
        ck_assert_int_eq(scope_minute_used(d, scope), 123);
        json_object_put(rel);
        json_object_put(g);

        /* Closing the proxy's connection settles what it holds for others. */
        g = request_for(proxy, agent, AGENT_UID, 500);
        ck_assert_msg(!reply_error(g), "second Request: %s", json_object_to_json_string(g));
        json_object_put(g);
        ck_assert_int_eq(scope_reserved(d, scope), 1000);
        raw_close(proxy);
        expect_released(d, scope);
        reap(agent);
        harness_daemon_stop(d);
}
END_TEST

/* Only root and trusted_proxies may ask for others; a trusted proxy's
 * Requests name live processes of the uid given, in a well-formed object. */
START_TEST(test_who_may) {
        TestDaemon *d;
        RawConn *untrusted, *trusted;
        json_object *g;
        pid_t agent, gone;
        char scope[64];

        if (!tb_check_need_root("other uids"))
                return;
        d = harness_daemon_start("trusted_proxies = [ \"65534\" ];\n");
        agent = spawn_sleeper(AGENT_UID);
        untrusted = connect_as(d, AGENT_UID);
        expect_error(request_for(untrusted, agent, AGENT_UID, 100), "org.varlink.service.PermissionDenied",
                     NULL, "an untrusted uid for its own process");
        raw_close(untrusted);

        trusted = connect_as(d, PROXY_UID);
        g = request_for(trusted, agent, AGENT_UID, 100);
        ck_assert_msg(!reply_error(g), "a trusted proxy: %s", json_object_to_json_string(g));
        json_object_put(g);
        snprintf(scope, sizeof(scope), "user:%d", AGENT_UID);
        ck_assert_int_eq(scope_reserved(d, scope), 200);
        /* The wrong uid for the pid, a pid that is gone, pid 0. */
        expect_error(request_for(trusted, agent, PROXY_UID, 100), "org.varlink.service.InvalidParameter",
                     "onBehalfOf", "the wrong uid");
        gone = spawn_sleeper(AGENT_UID);
        reap(gone);
        expect_error(request_for(trusted, gone, AGENT_UID, 100), "org.varlink.service.InvalidParameter",
                     "onBehalfOf", "a pid that is gone");
        expect_error(request_for(trusted, 0, AGENT_UID, 100), "org.varlink.service.InvalidParameter",
                     "onBehalfOf", "pid 0");
        /* A process asked for before, then gone: its delegate is not taken for it. */
        gone = spawn_sleeper(AGENT_UID);
        g = request_for(trusted, gone, AGENT_UID, 10);
        ck_assert_msg(!reply_error(g), "before it went: %s", json_object_to_json_string(g));
        json_object_put(harness_callf(trusted,
                                      "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{"
                                      "\"allocation\":\"%s\"}}",
                                      json_str(reply_parameters(g), "allocation", "grant")));
        json_object_put(g);
        expect_error(request_for(trusted, gone, PROXY_UID, 10), "org.varlink.service.InvalidParameter",
                     "onBehalfOf", "a known process under the wrong uid");
        reap(gone);
        expect_error(request_for(trusted, gone, AGENT_UID, 10), "org.varlink.service.InvalidParameter",
                     "onBehalfOf", "a known process that is gone");
        /* Malformed objects. */
        {
                static const char *const bad[] = {
                        "\"onBehalfOf\":5",
                        "\"onBehalfOf\":\"1\"",
                        "\"onBehalfOf\":{}",
                        "\"onBehalfOf\":{\"pid\":1}",
                        "\"onBehalfOf\":{\"pid\":\"1\",\"uid\":0}",
                        "\"onBehalfOf\":{\"pid\":1,\"uid\":0,\"gid\":0}",
                        "\"onBehalfOf\":{\"pid\":-1,\"uid\":0}",
                        "\"onBehalfOf\":{\"pid\":1,\"uid\":4294967295}",
                        "\"onBehalfOf\":[1,0]",
                };

                for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                        expect_error(harness_callf(trusted,
                                                   "{\"method\":\"io.tokenbudget.agent.Request\","
                                                   "\"parameters\":{\"estimate\":100,%s}}",
                                                   bad[i]),
                                     "org.varlink.service.InvalidParameter", "onBehalfOf", bad[i]);
        }
        /* The reservation is still the agent's, and only the proxy's connection held it. */
        ck_assert_int_eq(scope_reserved(d, scope), 200);
        raw_close(trusted);
        expect_released(d, scope);
        reap(agent);
        harness_daemon_stop(d);
}
END_TEST

/* Another connection of the same uid cannot report on the proxy's allocation. */
START_TEST(test_allocation_is_the_proxys) {
        TestDaemon *d;
        RawConn *proxy, *agent_conn;
        json_object *g, *rep;
        pid_t agent;

        if (!tb_check_need_root("processes of another uid"))
                return;
        d = harness_daemon_start("");
        proxy = harness_open_working(d, "proxy");
        agent = spawn_sleeper(AGENT_UID);
        g = request_for(proxy, agent, AGENT_UID, 100);
        ck_assert_msg(!reply_error(g), "Request: %s", json_object_to_json_string(g));
        agent_conn = connect_as(d, AGENT_UID);
        rep = harness_callf(
                agent_conn,
                "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":\"%s\","
                "\"inputTokens\":1,\"outputTokens\":1}}",
                json_str(reply_parameters(g), "allocation", "grant"));
        ck_assert_str_eq(reply_error(rep), "io.tokenbudget.agent.UnknownAllocation");
        json_object_put(rep);
        rep = harness_callf(
                proxy,
                "{\"method\":\"io.tokenbudget.agent.Report\",\"parameters\":{\"allocation\":\"%s\","
                "\"inputTokens\":1,\"outputTokens\":1}}",
                json_str(reply_parameters(g), "allocation", "grant"));
        ck_assert_msg(!reply_error(rep), "Report from the proxy: %s", json_object_to_json_string(rep));
        json_object_put(rep);
        json_object_put(g);
        raw_close(agent_conn);
        raw_close(proxy);
        reap(agent);
        harness_daemon_stop(d);
}
END_TEST

/* A Request on behalf of another process that waits in the queue, its
 * proxy's connection then closed: the wait is cancelled with the delegate,
 * the daemon carries on (ASan checks the delegate's ticket is not used after
 * it went). */
START_TEST(test_waiting_then_closed) {
        TestDaemon *d;
        RawConn *proxy, *other;
        json_object *g;
        pid_t agent;
        char scope[64];

        if (!tb_check_need_root("processes of another uid"))
                return;
        d = harness_daemon_start("user = { max_tokens_in_flight = 300; };\n");
        proxy = harness_open_working(d, "proxy");
        agent = spawn_sleeper(AGENT_UID);
        g = request_for(proxy, agent, AGENT_UID, 100); /* 200 reserved of the user's 300 */
        ck_assert_msg(!reply_error(g), "first Request: %s", json_object_to_json_string(g));
        json_object_put(g);
        ck_assert_int_eq(raw_send_msg(proxy,
                                      "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{"
                                      "\"estimate\":100,\"waitUsec\":30000000,\"onBehalfOf\":{\"pid\":0,"
                                      "\"uid\":0}}}"),
                         0);
        g = harness_reply_within(proxy, 2000); /* pid 0: refused at once, nothing waits */
        ck_assert_str_eq(reply_error(g), "org.varlink.service.InvalidParameter");
        json_object_put(g);
        {
                char msg[256];

                snprintf(msg, sizeof(msg),
                         "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":100,"
                         "\"waitUsec\":30000000,\"onBehalfOf\":{\"pid\":%d,\"uid\":%d}}}",
                         (int)agent, AGENT_UID);
                ck_assert_int_eq(raw_send_msg(proxy, msg), 0);
        }
        ck_assert_ptr_null(harness_reply_within(proxy, 200)); /* it waits: no reply */
        raw_close(proxy);
        snprintf(scope, sizeof(scope), "user:%d", AGENT_UID);
        expect_released(d, scope);
        /* The daemon carries on. */
        other = harness_open_working(d, "after");
        g = request_for(other, agent, AGENT_UID, 100);
        ck_assert_msg(!reply_error(g), "after the close: %s", json_object_to_json_string(g));
        json_object_put(g);
        raw_close(other);
        reap(agent);
        harness_daemon_stop(d);
}
END_TEST

int main(void) {
        Suite *s = suite_create("onbehalf");
        TCase *tc = harness_tcase("onbehalf-root", 60);

        tb_check_tag_root(tc);
        tcase_add_test(tc, test_charged_as_the_process);
        tcase_add_test(tc, test_who_may);
        tcase_add_test(tc, test_allocation_is_the_proxys);
        tcase_add_test(tc, test_waiting_then_closed);
        suite_add_tcase(s, tc);
        return harness_main(s);
}
