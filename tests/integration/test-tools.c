/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of the programs as a user runs them: budgetctl (human and
 * JSON output against allocations the test holds open, exit codes), the
 * example agent, and tokenbudgetd's own command line (--help, --version,
 * --check-config, bad config at start, stale and live sockets, SIGTERM with
 * open allocations).
 */
#define _GNU_SOURCE
#include "harness.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RUN_TIMEOUT_MSEC 10000

/* Runs budgetctl --socket PATH ARGS...; the result is in *ret. */
static void budgetctl(const char *socket_path, const char *a1, const char *a2, CommandResult *ret) {
        char *argv[] = {(char *)harness_env("BUDGETCTL"),
                        "--socket",
                        (char *)socket_path,
                        (char *)a1,
                        (char *)a2,
                        NULL};

        harness_run(argv, NULL, RUN_TIMEOUT_MSEC, ret);
}

static json_object *parse_json_output(const CommandResult *res, const char *what) {
        json_object *o = json_tokener_parse(res->out);

        ck_assert_msg(res->status == 0, "%s exited %d: %s", what, res->status, res->err);
        ck_assert_msg(o && json_object_is_type(o, json_type_object), "%s did not print a JSON object: %s",
                      what, res->out);
        return o;
}

/* ---- 9. budgetctl and the example agent --------------------------------------- */

START_TEST(test_budgetctl_human) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *c = harness_client(d);
        tb_request_params p = {.estimate = 1234, .task_class = "it-tools", .agent = "integration"};
        char process_scope[64];
        CommandResult res;
        tb_grant g;

        ck_assert_msg(tb_request(c, &p, &g) == 0, "request: %s", tb_client_error(c));
        snprintf(process_scope, sizeof(process_scope), "process:%d", (int)getpid());

        budgetctl(d->socket_path, "status", NULL, &res);
        ck_assert_msg(res.status == 0, "budgetctl status exited %d: %s", res.status, res.err);
        ck_assert_msg(strstr(res.out, "global") && strstr(res.out, process_scope),
                      "budgetctl status does not show the scopes \"global\" and \"%s\":\n%s", process_scope,
                      res.out);
        command_result_done(&res);

        budgetctl(d->socket_path, "list", NULL, &res);
        ck_assert_msg(res.status == 0, "budgetctl list exited %d: %s", res.status, res.err);
        ck_assert_msg(strstr(res.out, g.allocation),
                      "budgetctl list does not show the open allocation %s:\n%s", g.allocation, res.out);
        command_result_done(&res);

        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

START_TEST(test_budgetctl_json) {
        TestDaemon *d = harness_daemon_start("hard_multiplier = 2.0;\n");
        tb_client *c = harness_client(d);
        tb_request_params p = {.estimate = 1234, .task_class = "it-tools"};
        json_object *o, *global, *allocs, *a;
        CommandResult res;
        tb_grant g;

        ck_assert_msg(tb_request(c, &p, &g) == 0, "request: %s", tb_client_error(c));
        ck_assert_msg(tb_report(c, g.allocation, 100, 11, NULL, NULL) == 0, "report: %s",
                      tb_client_error(c));

        budgetctl(d->socket_path, "--json", "status", &res);
        o = parse_json_output(&res, "budgetctl --json status");
        ck_assert_msg(json_int(o, "allocations", "status --json") == 1,
                      "status --json: allocations != 1: %s", res.out);
        ck_assert_msg(json_int(o, "connections", "status --json") >= 1, "status --json: no connections: %s",
                      res.out);
        ck_assert_msg(strcmp(json_str(o, "version", "status --json"), "0.1.0") == 0,
                      "status --json: version: %s", res.out);
        global = status_scope(o, "global");
        ck_assert_msg(global && strcmp(json_str(global, "kind", "global"), "global") == 0,
                      "status --json: no global scope of kind global: %s", res.out);
        ck_assert_msg(json_int(global, "allocations", "global") == 1,
                      "status --json: global allocations != 1: %s", res.out);
        ck_assert_msg(json_int(global, "reserved", "global") > 0 &&
                              json_int(global, "reserved", "global") <= (int64_t)g.hard_limit,
                      "status --json: global reserved not in (0, %" PRIu64 "]: %s", g.hard_limit, res.out);
        json_object_put(o);
        command_result_done(&res);

        budgetctl(d->socket_path, "--json", "list", &res);
        o = parse_json_output(&res, "budgetctl --json list");
        ck_assert_msg(json_object_object_get_ex(o, "allocations", &allocs) &&
                              json_object_array_length(allocs) == 1,
                      "list --json: expected one allocation: %s", res.out);
        a = json_object_array_get_idx(allocs, 0);
        ck_assert_msg(
                strcmp(json_str(a, "id", "list"), g.allocation) == 0 &&
                        json_int(a, "pid", "list") == getpid() && json_int(a, "uid", "list") == getuid() &&
                        json_int(a, "granted", "list") == 1234 && json_int(a, "warnAt", "list") == 1851 &&
                        json_int(a, "hardLimit", "list") == 2468 && json_int(a, "used", "list") == 111 &&
                        strcmp(json_str(a, "class", "list"), "it-tools") == 0 &&
                        strcmp(json_str(a, "state", "list"), "ok") == 0 &&
                        strcmp(json_str(a, "priority", "list"), "normal") == 0,
                "list --json: allocation fields differ from what was requested (id %s, pid %d, granted "
                "1234, "
                "warnAt 1851, hardLimit 2468, used 111, class it-tools, state ok, priority normal): %s",
                g.allocation, (int)getpid(), res.out);
        json_object_put(o);
        command_result_done(&res);

        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

START_TEST(test_budgetctl_exit_codes) {
        TestDaemon *d = harness_daemon_start("");
        char missing[300];
        char *help[] = {(char *)harness_env("BUDGETCTL"), "--help", NULL};
        CommandResult res;

        harness_run(help, NULL, RUN_TIMEOUT_MSEC, &res);
        ck_assert_msg(res.status == 0 && strlen(res.out) > 0, "budgetctl --help: exit %d, output \"%s\"",
                      res.status, res.out);
        command_result_done(&res);

        budgetctl(d->socket_path, "frobnicate", NULL, &res);
        ck_assert_msg(res.status == 2, "budgetctl frobnicate: exit %d, expected 2 (stderr: %s)", res.status,
                      res.err);
        command_result_done(&res);

        snprintf(missing, sizeof(missing), "%s/no-daemon-here.sock", harness_dir());
        budgetctl(missing, "status", NULL, &res);
        ck_assert_msg(res.status == 3, "budgetctl status without a daemon: exit %d, expected 3 (stderr: %s)",
                      res.status, res.err);
        ck_assert_msg(strstr(res.err, missing),
                      "budgetctl status without a daemon: message does not name %s: %s", missing, res.err);
        command_result_done(&res);
        harness_daemon_stop(d);
}
END_TEST

START_TEST(test_example_agent) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *admin = harness_client(d);
        char *argv[] = {(char *)harness_env("EXAMPLE_AGENT"), NULL};
        char *env[2] = {NULL, NULL};
        json_object *st, *global;
        CommandResult res;

        ck_assert(asprintf(&env[0], "TOKENBUDGET_SOCKET=%s", d->socket_path) >= 0);
        harness_run(argv, env, RUN_TIMEOUT_MSEC, &res);
        ck_assert_msg(res.status == 0, "example-agent exited %d:\nstdout: %s\nstderr: %s", res.status,
                      res.out, res.err);
        command_result_done(&res);

        /* It released what it took and what it reported is accounted. */
        st = harness_admin(admin, "Status");
        global = status_scope(st, "global");
        ck_assert_msg(global, "no global scope: %s", json_object_to_json_string(st));
        ck_assert_msg(json_int(st, "allocations", "Status") == 0 &&
                              json_int(global, "reserved", "global") == 0,
                      "example-agent left allocations or reservations: %s", json_object_to_json_string(st));
        ck_assert_msg(json_int(global, "committed", "global") > 0,
                      "example-agent's usage is not accounted: %s", json_object_to_json_string(st));
        json_object_put(st);
        free(env[0]);
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

/* ---- 10. tokenbudgetd's command line ------------------------------------------------ */

static void run_daemon(const char *a1, const char *a2, const char *a3, const char *a4, CommandResult *ret) {
        char *argv[] = {
                (char *)harness_env("TOKENBUDGETD"), (char *)a1, (char *)a2, (char *)a3, (char *)a4, NULL};

        harness_run(argv, NULL, RUN_TIMEOUT_MSEC, ret);
}

static void write_config(const char *name, const char *text, char *path, size_t size) {
        FILE *f;

        snprintf(path, size, "%s/%s", harness_dir(), name);
        f = fopen(path, "we");
        ck_assert_msg(f, "%s: %s", path, strerror(errno));
        fputs(text, f);
        ck_assert_int_eq(fclose(f), 0);
}

START_TEST(test_daemon_help_version) {
        CommandResult res;

        run_daemon("--help", NULL, NULL, NULL, &res);
        ck_assert_msg(res.status == 0 && strstr(res.out, "--check-config"),
                      "tokenbudgetd --help: exit %d, stdout does not mention --check-config: %s", res.status,
                      res.out);
        command_result_done(&res);
        run_daemon("--version", NULL, NULL, NULL, &res);
        ck_assert_msg(res.status == 0 && strstr(res.out, "0.1.0"),
                      "tokenbudgetd --version: exit %d, stdout \"%s\"", res.status, res.out);
        command_result_done(&res);
        run_daemon("--no-such-option", NULL, NULL, NULL, &res);
        ck_assert_msg(res.status == 2, "tokenbudgetd --no-such-option: exit %d, expected 2", res.status);
        command_result_done(&res);
}
END_TEST

static const struct bad_config_row {
        const char *name;
        const char *text;
        int line;
} bad_config_rows[] = {
        {"syntax error", "default_estimate = 4000;\nglobal: { tokens_per_minute = ; };\n", 2},
        {"hard_multiplier above 5.0", "warn_multiplier = 1.5;\n\nhard_multiplier = 7.5;\n", 3},
        {"hard_multiplier below 1.0", "hard_multiplier = 0.5;\n", 1},
        {"max_message_bytes below 1024", "limits: {\n  max_message_bytes = 100;\n};\n", 2},
        {"max_output_bytes below 65536", "limits: {\n  max_output_bytes = 1000;\n};\n", 2},
        {"default_estimate of the wrong type", "log_level = \"info\";\ndefault_estimate = \"lots\";\n", 2},
        {"negative token limit", "global: {\n  tokens_per_minute = -5;\n};\n", 2},
};

START_TEST(test_check_config) {
        char good[300];
        CommandResult res;

        write_config("good.conf",
                     "default_estimate = 2000;\nhard_multiplier = 3.0;\n"
                     "global: { tokens_per_minute = 100000; };\nlimits: { max_output_bytes = 65536; };\n",
                     good, sizeof(good));
        run_daemon("--check-config", good, NULL, NULL, &res);
        ck_assert_msg(res.status == 0, "--check-config on a good file: exit %d: %s%s", res.status, res.out,
                      res.err);
        {
                char ok[320];

                snprintf(ok, sizeof(ok), "%s: OK", good);
                ck_assert_msg(strstr(res.out, ok) || strstr(res.err, ok),
                              "--check-config: \"%s\" not printed: %s%s", ok, res.out, res.err);
        }
        command_result_done(&res);

        for (size_t i = 0; i < sizeof(bad_config_rows) / sizeof(bad_config_rows[0]); i++) {
                char path[300], name[32], where[330];

                snprintf(name, sizeof(name), "bad-%zu.conf", i);
                write_config(name, bad_config_rows[i].text, path, sizeof(path));
                snprintf(where, sizeof(where), "%s:%d:", path, bad_config_rows[i].line);
                run_daemon("--check-config", path, NULL, NULL, &res);
                ck_assert_msg(res.status == 2, "row %zu (%s): --check-config exit %d, expected 2", i,
                              bad_config_rows[i].name, res.status);
                ck_assert_msg(strstr(res.out, where) || strstr(res.err, where),
                              "row %zu (%s): --check-config does not print %s: %s%s", i,
                              bad_config_rows[i].name, where, res.out, res.err);
                command_result_done(&res);
        }
}
END_TEST

START_TEST(test_bad_config_at_start) {
        for (size_t i = 0; i < sizeof(bad_config_rows) / sizeof(bad_config_rows[0]); i++) {
                char path[300], name[32], where[330], sock[300];
                RawConn *r;
                CommandResult res;

                snprintf(name, sizeof(name), "start-%zu.conf", i);
                write_config(name, bad_config_rows[i].text, path, sizeof(path));
                snprintf(where, sizeof(where), "%s:%d:", path, bad_config_rows[i].line);
                snprintf(sock, sizeof(sock), "%s/start-%zu.sock", harness_dir(), i);
                run_daemon("--config", path, "--socket", sock, &res);
                ck_assert_msg(res.status == 2,
                              "row %zu (%s): started with a bad config, exit %d, expected 2: %s", i,
                              bad_config_rows[i].name, res.status, res.err);
                ck_assert_msg(strstr(res.err, where), "row %zu (%s): stderr does not name %s: %s", i,
                              bad_config_rows[i].name, where, res.err);
                r = raw_open(sock);
                ck_assert_msg(!r, "row %zu: something still listens on %s", i, sock);
                command_result_done(&res);
        }
}
END_TEST

START_TEST(test_sigterm_with_open_allocations) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *c = harness_client(d);
        tb_request_params p = {.estimate = 500};
        tb_grant g1, g2;
        int r;

        ck_assert_msg(tb_request(c, &p, &g1) == 0 && tb_request(c, &p, &g2) == 0, "request: %s",
                      tb_client_error(c));
        ck_assert_msg(tb_report(c, g1.allocation, 10, 20, NULL, NULL) == 0, "report: %s",
                      tb_client_error(c));
        harness_daemon_stop(d); /* asserts exit status 0 */
        r = tb_report(c, g1.allocation, 20, 20, NULL, NULL);
        ck_assert_msg(r < 0, "a report after the daemon exited succeeded");
        tb_client_close(c);
}
END_TEST

START_TEST(test_stale_and_live_socket) {
        char sock[300], conf[300];
        TestDaemon *d;
        CommandResult res;
        tb_client *c;
        const char *call = "";
        int r;

        snprintf(sock, sizeof(sock), "%s/shared.sock", harness_dir());
        d = harness_daemon_start_at("", sock);
        harness_daemon_kill(d); /* leaves the socket file behind */
        ck_assert_msg(access(sock, F_OK) == 0, "no stale socket file at %s after SIGKILL", sock);
        d = harness_daemon_start_at("", sock); /* the stale socket is replaced */

        write_config("empty.conf", "", conf, sizeof(conf));
        run_daemon("--config", conf, "--socket", sock, &res);
        ck_assert_msg(res.status != 0, "a second daemon on the live socket %s exited 0", sock);
        command_result_done(&res);
        c = harness_client(d); /* the first daemon still owns the socket */
        r = harness_cycle(c, 100, &call);
        ck_assert_msg(r == 0, "cycle on the first daemon after a second one tried its socket: %s: %d %s",
                      call, r, tb_client_error(c));
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

static Suite *tools_suite(void) {
        Suite *s = suite_create("integration-tools");
        TCase *tc;

        tc = harness_tcase("budgetctl", 30);
        tcase_add_test(tc, test_budgetctl_human);
        tcase_add_test(tc, test_budgetctl_json);
        tcase_add_test(tc, test_budgetctl_exit_codes);
        suite_add_tcase(s, tc);
        tc = harness_tcase("example_agent", 30);
        tcase_add_test(tc, test_example_agent);
        suite_add_tcase(s, tc);
        tc = harness_tcase("daemon_cli", 60);
        tcase_add_test(tc, test_daemon_help_version);
        tcase_add_test(tc, test_check_config);
        tcase_add_test(tc, test_bad_config_at_start);
        tcase_add_test(tc, test_sigterm_with_open_allocations);
        tcase_add_test(tc, test_stale_and_live_socket);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return harness_main(tools_suite());
}
