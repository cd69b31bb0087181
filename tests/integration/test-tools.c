/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of the programs as a user runs them: budgetctl (human and
 * JSON output against allocations the test holds open, idle scopes left out
 * unless --all, exit codes, verbs and their arguments, the hint when no daemon
 * answers; set, reload and status --kind/--user against the running daemon,
 * each argument error's message, and what a user who is no admin sees and
 * may do; set --persistent across restarts and reloads, refused by a daemon
 * in memory only, and the durability line of status; classes against what
 * the daemon learned, durable and memory only, as a non-admin, and against
 * replies of a fake daemon); estimate and io.tokenbudget.admin.Estimate
 * against what the daemon learned (the expectation, the interval young and
 * grown, the same after a restart, the cost at configured prices and after
 * a reload, bad parameters, another uid's classes) and against replies of a fake daemon; the example
 * agent,
 * and tokenbudgetd's own
 * command line (--help, --version,
 * --check-config, bad config at start, stale and live sockets, SIGTERM with
 * open allocations).
 */
#define _GNU_SOURCE
#include "harness.h"
#include "tb-check.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define RUN_TIMEOUT_MSEC 10000

/*
 * Runs budgetctl [--socket PATH] ARGS... (args NULL-terminated, at most 12) with
 * the extra environment env (may be NULL; "NAME" alone unsets NAME, a glibc
 * putenv() extension); the result is in *ret.
 */
static void budgetctl_run(const char *socket_path, char *const env[], const char *const args[],
                          CommandResult *ret) {
        char *argv[16] = {(char *)harness_env("BUDGETCTL")};
        size_t n = 1;

        if (socket_path) {
                argv[n++] = "--socket";
                argv[n++] = (char *)socket_path;
        }
        for (size_t i = 0; args[i]; i++) {
                ck_assert(n + 1 < sizeof(argv) / sizeof(argv[0]));
                argv[n++] = (char *)args[i];
        }
        harness_run(argv, env, RUN_TIMEOUT_MSEC, ret);
}

/* Runs budgetctl --socket PATH ARGS...; the result is in *ret. */
static void budgetctl(const char *socket_path, const char *a1, const char *a2, CommandResult *ret) {
        const char *args[] = {a1, a2, NULL};

        budgetctl_run(socket_path, NULL, args, ret);
}

/* Whether the table in out has a row whose first column is exactly name. */
static bool table_has_row(const char *out, const char *name) {
        size_t n = strlen(name);

        for (const char *line = out; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL)
                if (strncmp(line, name, n) == 0 && (line[n] == ' ' || line[n] == '\n' || line[n] == '\0'))
                        return true;
        return false;
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
        ck_assert_msg(tb_report(c,
                                &(tb_report_params){.allocation = g.allocation,
                                                    .input_tokens = 100,
                                                    .output_tokens = 11},
                                NULL) == 0,
                      "report: %s", tb_client_error(c));

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

/*
 * A child that stays connected with an idle process scope: one Request and a
 * Release with no usage, then "OK" on fd and it waits until the test kills it.
 */
_Noreturn static void idle_child(const char *socket_path, int fd) {
        tb_request_params p = {.estimate = 100};
        tb_client *c = NULL;
        tb_grant g;

        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (tb_client_open(socket_path, &c, NULL) < 0 || tb_request(c, &p, &g) < 0 ||
            tb_release(c, &(tb_release_params){.allocation = g.allocation}, NULL) < 0) {
                dprintf(fd, "ERR %s\n", c ? tb_client_error(c) : "cannot connect");
                _exit(1);
        }
        dprintf(fd, "OK\n");
        for (;;)
                pause();
}

static pid_t idle_child_start(const TestDaemon *d) {
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
                idle_child(d->socket_path, pipefd[1]);
        }
        close(pipefd[1]);
        pfd = (struct pollfd){.fd = pipefd[0], .events = POLLIN};
        ck_assert_msg(poll(&pfd, 1, 10000) == 1, "idle child did not report within 10 s");
        n = read(pipefd[0], line, sizeof(line) - 1);
        ck_assert_msg(n > 0 && strncmp(line, "OK", 2) == 0, "idle child failed: %s",
                      n > 0 ? line : "(nothing)");
        close(pipefd[0]);
        return pid;
}

/*
 * status shows the global scope and busy scopes only, and says how many idle
 * ones it left out; --all shows them too. Needs a daemon whose Status takes
 * "all" and answers hiddenScopes (io.tokenbudget.admin).
 */
START_TEST(test_budgetctl_status_idle) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *c = harness_client(d);
        const char *call = "", *json_all[] = {"--json", "--all", "status", NULL};
        char busy[64], idle[64];
        unsigned n_hidden = 0;
        json_object *o, *hidden;
        CommandResult res;
        const char *note;
        pid_t child;
        int r;

        r = harness_cycle(c, 1000, &call);
        ck_assert_msg(r == 0, "cycle with usage: %s: %d %s", call, r, tb_client_error(c));
        child = idle_child_start(d);
        snprintf(busy, sizeof(busy), "process:%d", (int)getpid());
        snprintf(idle, sizeof(idle), "process:%d", (int)child);

        budgetctl(d->socket_path, "status", NULL, &res);
        ck_assert_msg(res.status == 0, "budgetctl status exited %d: %s", res.status, res.err);
        ck_assert_msg(table_has_row(res.out, "global") && table_has_row(res.out, busy),
                      "budgetctl status does not list global and the busy %s:\n%s", busy, res.out);
        ck_assert_msg(!table_has_row(res.out, idle), "budgetctl status lists the idle %s:\n%s", idle,
                      res.out);
        note = strstr(res.out, "\n(");
        ck_assert_msg(note && sscanf(note, "\n(%u idle scope", &n_hidden) == 1 && n_hidden >= 1 &&
                              strstr(note, "not shown; budgetctl status --all lists them)\n"),
                      "budgetctl status does not say how many idle scopes it left out:\n%s", res.out);
        command_result_done(&res);

        budgetctl(d->socket_path, "status", "--all", &res);
        ck_assert_msg(res.status == 0, "budgetctl status --all exited %d: %s", res.status, res.err);
        ck_assert_msg(table_has_row(res.out, "global") && table_has_row(res.out, busy) &&
                              table_has_row(res.out, idle),
                      "budgetctl status --all does not list global, %s and the idle %s:\n%s", busy, idle,
                      res.out);
        ck_assert_msg(!strstr(res.out, "not shown"), "budgetctl status --all still has a note:\n%s",
                      res.out);
        command_result_done(&res);

        budgetctl(d->socket_path, "--no-legend", "status", &res);
        ck_assert_msg(res.status == 0 && table_has_row(res.out, busy) && !strstr(res.out, "not shown") &&
                              !strstr(res.out, "NAME"),
                      "budgetctl --no-legend status: exit %d, expected only rows:\n%s", res.status, res.out);
        command_result_done(&res);

        budgetctl(d->socket_path, "--json", "status", &res);
        o = parse_json_output(&res, "budgetctl --json status");
        ck_assert_msg(status_scope(o, busy) && !status_scope(o, idle) &&
                              json_int(o, "hiddenScopes", "status --json") == n_hidden,
                      "status --json: expected %s, not %s, and hiddenScopes %u: %s", busy, idle, n_hidden,
                      res.out);
        json_object_put(o);
        command_result_done(&res);

        budgetctl_run(d->socket_path, NULL, json_all, &res);
        o = parse_json_output(&res, "budgetctl --json --all status");
        ck_assert_msg(status_scope(o, busy) && status_scope(o, idle), "status --json --all: no %s or %s: %s",
                      busy, idle, res.out);
        ck_assert_msg(!json_object_object_get_ex(o, "hiddenScopes", &hidden) || !hidden ||
                              json_object_get_int64(hidden) == 0,
                      "status --json --all: hiddenScopes is not absent or 0: %s", res.out);
        json_object_put(o);
        command_result_done(&res);

        budgetctl(d->socket_path, "list", "--all", &res);
        ck_assert_msg(res.status == 2, "budgetctl list --all: exit %d, expected 2 (stderr: %s)", res.status,
                      res.err);
        command_result_done(&res);

        ck_assert_int_eq(kill(child, SIGKILL), 0);
        ck_assert_int_eq(waitpid(child, NULL, 0), child);
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

static size_t lines(const char *text) {
        size_t n = 0;

        for (; *text; text++)
                n += *text == '\n';
        return n;
}

/*
 * The verb table: arguments counted per verb, options after the verb, --all
 * only where it applies, a suggestion for a slip, help listing the verbs.
 */
static const struct usage_row {
        const char *name;
        const char *args[4];
        int status;
        const char *out; /* in stdout, or NULL */
        const char *err; /* in stderr, or NULL */
} usage_rows[] = {
        {"an argument to status", {"status", "extra"}, 2, NULL, "budgetctl: 'status' takes no arguments\n"},
        {"an argument to list", {"list", "x", "y"}, 2, NULL, "budgetctl: 'list' takes no arguments\n"},
        {"a slip of status", {"stauts"}, 2, NULL, "unknown command 'stauts'; did you mean 'status'?"},
        {"a slip of list", {"lst"}, 2, NULL, "did you mean 'list'?"},
        {"nothing close", {"frobnicate"}, 2, NULL, "unknown command 'frobnicate' (try 'budgetctl --help')"},
        {"no command", {"--json"}, 2, NULL, "missing command"},
        {"--all on list", {"list", "--all"}, 2, NULL, "--all applies only to 'status'\n"},
        {"help lists the verbs", {"help"}, 0, "\n  status ", NULL},
        {"help lists list", {"help"}, 0, "\n  list ", NULL},
        {"help lists help", {"help"}, 0, "\n  help ", NULL},
        {"--help lists the verbs", {"--help"}, 0, "COMMAND [ARGS...]", NULL},
        {"an argument to help", {"help", "status"}, 2, NULL, "'help' takes no arguments"},
        {"an option after the verb", {"list", "--json"}, 0, "\"allocations\"", NULL},
        {"options on both sides", {"--no-legend", "status", "--json"}, 0, "\"scopes\"", NULL},
};

START_TEST(test_budgetctl_usage) {
        const struct usage_row *row = &usage_rows[_i];
        TestDaemon *d = harness_daemon_start("");
        CommandResult res;

        budgetctl_run(d->socket_path, NULL, row->args, &res);
        ck_assert_msg(res.status == row->status, "row '%s': exit %d, expected %d (stderr: %s)", row->name,
                      res.status, row->status, res.err);
        ck_assert_msg(!row->out || strstr(res.out, row->out), "row '%s': stdout does not have \"%s\":\n%s",
                      row->name, row->out, res.out);
        ck_assert_msg(!row->err || strstr(res.err, row->err), "row '%s': stderr does not have \"%s\":\n%s",
                      row->name, row->err, res.err);
        ck_assert_msg(row->status != 2 || lines(res.err) == 1,
                      "row '%s': a usage error of more than one line:\n%s", row->name, res.err);
        command_result_done(&res);
        harness_daemon_stop(d);
}
END_TEST

/*
 * A daemon that answers one call with reply (a Varlink message without its
 * NUL) and exits: listens at path before it returns, serves in a child.
 */
static pid_t fake_daemon_start(const char *path, const char *reply) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        pid_t pid;

        ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
        ck_assert(strlen(path) < sizeof(sa.sun_path));
        strcpy(sa.sun_path, path);
        ck_assert_msg(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 4) == 0,
                      "bind/listen %s: %s", path, strerror(errno));
        pid = fork();
        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                char c = 1;
                int conn;

                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                conn = accept(fd, NULL, NULL);
                while (conn >= 0 && c != '\0' && read(conn, &c, 1) == 1)
                        ;
                if (conn < 0 || write(conn, reply, strlen(reply) + 1) != (ssize_t)strlen(reply) + 1)
                        _exit(1);
                _exit(0);
        }
        close(fd);
        return pid;
}

/*
 * A daemon from before Status took "all" refuses the parameter: budgetctl
 * says so (tb_client_error_parameter() names it); InvalidParameter for
 * another parameter is just the daemon's error.
 */
START_TEST(test_budgetctl_too_old_for_all) {
        static const struct {
                const char *parameter;
                const char *want;
        } rows[] = {
                {"all",
                 "budgetctl: this tokenbudgetd is too old for --all (it refused the parameter 'all'); "
                 "its plain 'budgetctl status' lists every scope\n"},
                {"allx", "budgetctl: org.varlink.service.InvalidParameter"},
        };

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                const char *args[] = {"--all", "status", NULL};
                char path[300], reply[200];
                CommandResult res;
                pid_t pid;
                int status;

                snprintf(path, sizeof(path), "%s/old-%zu.sock", harness_dir(), i);
                snprintf(reply, sizeof(reply),
                         "{\"error\":\"org.varlink.service.InvalidParameter\",\"parameters\":{\"parameter\":"
                         "\"%s\"}}",
                         rows[i].parameter);
                pid = fake_daemon_start(path, reply);
                budgetctl_run(path, NULL, args, &res);
                ck_assert_msg(res.status == 1, "parameter %s: exit %d, expected 1 (stderr: %s)",
                              rows[i].parameter, res.status, res.err);
                ck_assert_msg(strstr(res.err, rows[i].want),
                              "parameter %s: stderr does not have \"%s\":\n%s", rows[i].parameter,
                              rows[i].want, res.err);
                ck_assert_msg(i == 0 || !strstr(res.err, "too old"), "parameter %s: taken for 'all':\n%s",
                              rows[i].parameter, res.err);
                command_result_done(&res);
                ck_assert_int_eq(waitpid(pid, &status, 0), pid);
                ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                              "the fake daemon did not answer");
        }
}
END_TEST

/* Runs budgetctl status with env (and --socket when socket_path) and expects exit 3 and want in stderr. */
static void expect_not_running(const char *socket_path, char *const env[], const char *want,
                               const char *what) {
        const char *args[] = {"status", NULL};
        CommandResult res;

        budgetctl_run(socket_path, env, args, &res);
        ck_assert_msg(res.status == 3, "%s: exit %d, expected 3 (stderr: %s)", what, res.status, res.err);
        ck_assert_msg(strstr(res.err, want), "%s: stderr does not say \"%s\":\n%s", what, want, res.err);
        ck_assert_msg(lines(res.err) <= 2, "%s: more than two lines:\n%s", what, res.err);
        command_result_done(&res);
}

/* Binds a Unix socket at path and closes it without unlinking: what a crashed daemon leaves. */
static void make_stale_socket(const char *path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

        ck_assert_msg(fd >= 0, "socket: %s", strerror(errno));
        ck_assert(strlen(path) < sizeof(sa.sun_path));
        strcpy(sa.sun_path, path);
        ck_assert_msg(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind %s: %s", path,
                      strerror(errno));
        close(fd);
}

static void make_unit_dir(const char *dir, bool with_unit) {
        char path[300];
        FILE *f;

        ck_assert_msg(mkdir(dir, 0755) == 0, "mkdir %s: %s", dir, strerror(errno));
        if (!with_unit)
                return;
        snprintf(path, sizeof(path), "%s/tokenbudgetd.socket", dir);
        f = fopen(path, "we");
        ck_assert_msg(f, "%s: %s", path, strerror(errno));
        fputs("[Socket]\nListenStream=/run/tokenbudget/io.tokenbudget\n", f);
        ck_assert_int_eq(fclose(f), 0);
}

/* Whether a daemon serves the system socket here: budgetctl would reach it in its default search. */
static bool system_socket_answers(const char *what) {
        RawConn *live = raw_open(TB_SYSTEM_SOCKET);

        if (!live)
                return false;
        raw_close(live);
        fprintf(stderr, "%s: %s answers on this machine: skipped\n", what, TB_SYSTEM_SOCKET);
        return true;
}

/*
 * The message when no daemon answers names the address and who named it
 * (--socket, $TOKENBUDGET_SOCKET), and says when a socket was left behind.
 */
START_TEST(test_budgetctl_not_running) {
        char missing[300], stale[300], want[1000], unix_address[330], xdg[300];
        char *env[] = {NULL, "XDG_RUNTIME_DIR", NULL};

        snprintf(missing, sizeof(missing), "%s/no-daemon-here.sock", harness_dir());
        snprintf(want, sizeof(want), "tokenbudgetd is not running at %s (named by --socket)", missing);
        expect_not_running(missing, NULL, want, "--socket at a missing path");
        snprintf(want, sizeof(want), "start it by hand with 'tokenbudgetd --socket %s'", missing);
        expect_not_running(missing, NULL, want, "--socket at a missing path");

        snprintf(stale, sizeof(stale), "%s/stale.sock", harness_dir());
        make_stale_socket(stale);
        snprintf(want, sizeof(want),
                 "a socket exists at %s (named by --socket) but no daemon answers (it was stopped or "
                 "crashed)",
                 stale);
        expect_not_running(stale, NULL, want, "--socket at a stale socket");

        /* The path as connect() sees it, from the library (tb_client_addresses()). */
        snprintf(unix_address, sizeof(unix_address), "unix:%s;mode=0600", missing);
        snprintf(want, sizeof(want), "tokenbudgetd is not running at %s (named by --socket)\n", missing);
        expect_not_running(unix_address, NULL, want, "--socket at unix:PATH;mode=0600");

        if (system_socket_answers("TOKENBUDGET_SOCKET at a missing path"))
                return;
        ck_assert(asprintf(&env[0], "TOKENBUDGET_SOCKET=%s", missing) >= 0);
        snprintf(want, sizeof(want), "tokenbudgetd is not running at %s (named by $TOKENBUDGET_SOCKET)",
                 missing);
        expect_not_running(NULL, env, want, "TOKENBUDGET_SOCKET at a missing path");

        /* Every address of the search, in the library's order. */
        snprintf(xdg, sizeof(xdg), "%s/xdg-order", harness_dir());
        ck_assert(asprintf(&env[1], "XDG_RUNTIME_DIR=%s", xdg) >= 0);
        snprintf(want, sizeof(want),
                 "tokenbudgetd is not running at %s (named by $TOKENBUDGET_SOCKET) or " TB_SYSTEM_SOCKET
                 " or %s/tokenbudget/io.tokenbudget\n",
                 missing, xdg);
        expect_not_running(NULL, env, want, "TOKENBUDGET_SOCKET, the system and the user-session socket");
        free(env[1]);
        free(env[0]);
}
END_TEST

/*
 * The second line says how to start the daemon: with systemctl (--user for the
 * user-session socket) when the unit is installed, else by hand.
 * $SYSTEMD_UNIT_PATH points the unit search at the test's own directories.
 */
START_TEST(test_budgetctl_start_hint) {
        char xdg[300], user_socket[400], units[300], no_units[300];
        char xdg_env[320], units_env[320], no_units_env[320];
        char *env_user[] = {xdg_env, units_env, "TOKENBUDGET_SOCKET", NULL};
        char *env_user_none[] = {xdg_env, no_units_env, "TOKENBUDGET_SOCKET", NULL};
        char *env_system[] = {units_env, "TOKENBUDGET_SOCKET", NULL};
        char *env_system_none[] = {no_units_env, "TOKENBUDGET_SOCKET", NULL};

        snprintf(xdg, sizeof(xdg), "%s/xdg", harness_dir());
        ck_assert_int_eq(mkdir(xdg, 0700), 0);
        snprintf(user_socket, sizeof(user_socket), "%s/tokenbudget/io.tokenbudget", xdg);
        snprintf(units, sizeof(units), "%s/units", harness_dir());
        snprintf(no_units, sizeof(no_units), "%s/no-units", harness_dir());
        make_unit_dir(units, true);
        make_unit_dir(no_units, false);
        snprintf(xdg_env, sizeof(xdg_env), "XDG_RUNTIME_DIR=%s", xdg);
        snprintf(units_env, sizeof(units_env), "SYSTEMD_UNIT_PATH=%s", units);
        snprintf(no_units_env, sizeof(no_units_env), "SYSTEMD_UNIT_PATH=%s", no_units);

        expect_not_running(user_socket, env_user,
                           "start it with 'systemctl --user start tokenbudgetd.socket'",
                           "the user-session socket, the unit installed");
        expect_not_running(user_socket, env_user_none, "tokenbudgetd is not installed as a service",
                           "the user-session socket, no unit");
        if (system_socket_answers("the system socket"))
                return;
        expect_not_running(TB_SYSTEM_SOCKET, env_system,
                           "start it with 'systemctl start tokenbudgetd.socket'",
                           "the system socket, the unit installed");
        expect_not_running(
                TB_SYSTEM_SOCKET, env_system_none,
                "tokenbudgetd is not installed as a service; start it by hand with 'tokenbudgetd'",
                "the system socket, no unit");
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

/* ---- budgetctl set, reload, status --kind/--user -------------------------------- */

#define ADMINS_TEXT "admins (root, the daemon's user, members of admin_group)"
#define KEYS_TEXT                                                                                           \
        "(keys: tokens_per_minute, tokens_per_hour, tokens_per_day, max_tokens_in_flight, max_allocations)"
#define KINDS_TEXT "(kinds: global, user, slice, unit, process, agent, rule)"

/* The name of the test's own user, for user:NAME. */
static const char *own_user_name(void) {
        struct passwd *pw = getpwuid(getuid());

        ck_assert_msg(pw, "no passwd entry for uid %u", (unsigned)getuid());
        return pw->pw_name;
}

/*
 * Arguments budgetctl checks before it connects: each mistake is a usage
 * error (exit 2) with its own message, and nothing is sent (the socket does
 * not exist: a connection attempt would exit 3).
 */
static const struct set_usage_row {
        const char *name;
        const char *args[6];
        const char *err; /* all of stderr */
} set_usage_rows[] = {
        {"set without a scope",
         {"set"},
         "budgetctl: 'set' needs a SCOPE (usage: budgetctl set SCOPE KEY=VALUE...)\n"},
        {"set without a limit",
         {"set", "global"},
         "budgetctl: 'set' needs a KEY=VALUE (usage: budgetctl set SCOPE KEY=VALUE...)\n"},
        {"a key without a value",
         {"set", "global", "tokens_per_hour"},
         "budgetctl: expected KEY=VALUE, got 'tokens_per_hour' " KEYS_TEXT "\n"},
        {"a value without a key",
         {"set", "global", "=5"},
         "budgetctl: expected KEY=VALUE, got '=5' " KEYS_TEXT "\n"},
        {"an unknown key",
         {"set", "global", "tokens_per_week=5"},
         "budgetctl: unknown key 'tokens_per_week' " KEYS_TEXT "\n"},
        {"a key given twice",
         {"set", "global", "tokens_per_hour=5", "max_allocations=1", "tokens_per_hour=6"},
         "budgetctl: tokens_per_hour is given twice\n"},
        {"a negative value",
         {"set", "global", "tokens_per_hour=-1"},
         "budgetctl: invalid value '-1' for tokens_per_hour: expected an integer from 0 to 999999999999 (0: "
         "no "
         "limit)\n"},
        {"a value over the range",
         {"set", "global", "max_tokens_in_flight=1000000000000"},
         "budgetctl: invalid value '1000000000000' for max_tokens_in_flight: expected an integer from 0 to "
         "999999999999 (0: no limit)\n"},
        {"a value that is not an integer",
         {"set", "global", "tokens_per_day=1e6"},
         "budgetctl: invalid value '1e6' for tokens_per_day: expected an integer from 0 to 999999999999 (0: "
         "no "
         "limit)\n"},
        {"an empty value",
         {"set", "global", "max_allocations="},
         "budgetctl: invalid value '' for max_allocations: expected an integer from 0 to 999999999999 (0: "
         "no "
         "limit)\n"},
        {"an unknown kind",
         {"set", "team:ops", "tokens_per_hour=5"},
         "budgetctl: invalid scope 'team:ops': unknown kind 'team' " KINDS_TEXT "\n"},
        {"an unknown word",
         {"set", "everything", "tokens_per_hour=5"},
         "budgetctl: invalid scope 'everything': expected global, a kind's defaults (user, unit, slice, "
         "agent, "
         "process) or KIND:NAME " KINDS_TEXT "\n"},
        {"rule defaults",
         {"set", "rule", "tokens_per_hour=5"},
         "budgetctl: invalid scope 'rule': rules have no defaults; name one (rule:NAME or rule:NAME:KEY)\n"},
        {"a name under global",
         {"set", "global:x", "tokens_per_hour=5"},
         "budgetctl: invalid scope 'global:x': global has no names under it\n"},
        {"an unknown user",
         {"set", "user:no-such-user-tb", "tokens_per_hour=5"},
         "budgetctl: invalid scope 'user:no-such-user-tb': no user 'no-such-user-tb'\n"},
        {"an unknown user of an agent",
         {"set", "agent:no-such-user-tb:coder", "tokens_per_hour=5"},
         "budgetctl: invalid scope 'agent:no-such-user-tb:coder': no user 'no-such-user-tb'\n"},
        {"a uid out of range",
         {"set", "user:4294967295", "tokens_per_hour=5"},
         "budgetctl: invalid scope 'user:4294967295': uid 4294967295 is out of range (0 to 4294967294)\n"},
        {"an agent without its user",
         {"set", "agent:coder", "tokens_per_hour=5"},
         "budgetctl: invalid scope 'agent:coder': expected agent:USER:NAME\n"},
        {"a process that is no pid",
         {"set", "process:self", "tokens_per_hour=5"},
         "budgetctl: invalid scope 'process:self': expected process:PID\n"},
        {"an empty user",
         {"set", "user:", "tokens_per_hour=5"},
         "budgetctl: invalid scope 'user:': expected user:USER\n"},
        {"--kind on set",
         {"set", "global", "tokens_per_hour=5", "--kind", "user"},
         "budgetctl: --kind applies only to 'status'\n"},
        {"--persistent without a scope",
         {"set", "--persistent"},
         "budgetctl: 'set' needs a SCOPE (usage: budgetctl set SCOPE KEY=VALUE...)\n"},
        {"--persistent with a bad key",
         {"set", "--persistent", "global", "tokens_per_week=5"},
         "budgetctl: unknown key 'tokens_per_week' " KEYS_TEXT "\n"},
        {"--persistent with a bad scope",
         {"set", "user:no-such-user-tb", "--persistent"},
         "budgetctl: invalid scope 'user:no-such-user-tb': no user 'no-such-user-tb'\n"},
        {"--persistent on status",
         {"status", "--persistent"},
         "budgetctl: --persistent applies only to 'set'\n"},
        {"--persistent on reload",
         {"--persistent", "reload"},
         "budgetctl: --persistent applies only to 'set'\n"},
        {"--user on list",
         {"list", "--user", "0"},
         "budgetctl: --user applies only to 'status', 'history', 'classes' and 'estimate'\n"},
        {"an argument to reload", {"reload", "now"}, "budgetctl: 'reload' takes no arguments\n"},
        {"an unknown kind for status",
         {"status", "--kind", "team"},
         "budgetctl: unknown kind 'team' " KINDS_TEXT "\n"},
        {"an unknown user for status",
         {"status", "--user", "no-such-user-tb"},
         "budgetctl: unknown user 'no-such-user-tb' (--user takes a user name or a uid)\n"},
        {"a uid out of range for status",
         {"status", "--user", "4294967295"},
         "budgetctl: invalid uid '4294967295' for --user: uids go from 0 to 4294967294\n"},
};

START_TEST(test_budgetctl_set_usage) {
        const struct set_usage_row *row = &set_usage_rows[_i];
        char missing[300];
        CommandResult res;

        snprintf(missing, sizeof(missing), "%s/no-daemon-here.sock", harness_dir());
        budgetctl_run(missing, NULL, row->args, &res);
        ck_assert_msg(res.status == 2, "row '%s': exit %d, expected 2 (stderr: %s)", row->name, res.status,
                      res.err);
        ck_assert_msg(strcmp(res.err, row->err) == 0, "row '%s': stderr is\n%s\nexpected\n%s", row->name,
                      res.err, row->err);
        ck_assert_msg(res.out[0] == '\0', "row '%s': printed on stdout: %s", row->name, res.out);
        command_result_done(&res);
}
END_TEST

/* Runs budgetctl ARGS... and expects exit 0 and exactly want on stdout (when not NULL). */
static void expect_output(const TestDaemon *d, const char *const args[], const char *want,
                          const char *what) {
        CommandResult res;

        budgetctl_run(d->socket_path, NULL, args, &res);
        ck_assert_msg(res.status == 0, "%s: exit %d (stderr: %s)", what, res.status, res.err);
        ck_assert_msg(!want || strcmp(res.out, want) == 0, "%s: stdout is\n%s\nexpected\n%s", what, res.out,
                      want);
        command_result_done(&res);
}

/* Runs budgetctl ARGS... and expects exit status and exactly want on stderr. */
static void expect_error(const TestDaemon *d, const char *const args[], int status, const char *want,
                         const char *what) {
        CommandResult res;

        budgetctl_run(d->socket_path, NULL, args, &res);
        ck_assert_msg(res.status == status, "%s: exit %d, expected %d (stderr: %s)", what, res.status,
                      status, res.err);
        ck_assert_msg(strcmp(res.err, want) == 0, "%s: stderr is\n%s\nexpected\n%s", what, res.err, want);
        command_result_done(&res);
}

/* The daemon's Status (every scope) and the limit of one window of one scope (-1: none). */
static int64_t status_window_limit(tb_client *admin, const char *scope_name, const char *span) {
        json_object *st = harness_admin(admin, "Status"), *scope = status_scope(st, scope_name);
        int64_t limit = -1;

        ck_assert_msg(scope, "no scope %s in Status: %s", scope_name, json_object_to_json_string(st));
        scope_window_used(scope, span, &limit);
        json_object_put(st);
        return limit;
}

/*
 * set changes a limit on the running daemon, names the scope as the daemon
 * does (a user name becomes the uid) and says how many scopes changed; a
 * Request is then refused naming that scope, and allowed again once the
 * limit is lifted. A kind's defaults reach the scopes that appear later.
 */
START_TEST(test_budgetctl_set) {
        TestDaemon *d = harness_daemon_start("hard_multiplier = 2.0;\n");
        tb_client *c = harness_client(d), *admin = harness_client(d);
        char user_scope[64], by_name[300], want[400], agent_scope[64];
        const char *call = "";
        tb_grant g, g2;
        int r;

        snprintf(user_scope, sizeof(user_scope), "user:%u", (unsigned)getuid());
        snprintf(by_name, sizeof(by_name), "user:%s", own_user_name());
        snprintf(agent_scope, sizeof(agent_scope), "agent:%u:it-set", (unsigned)getuid());
        /* A cycle first, so that the user's scope is tracked (75 tokens used this minute). */
        r = harness_cycle(c, 100, &call);
        ck_assert_msg(r == 0, "cycle: %s: %d %s", call, r, tb_client_error(c));

        snprintf(want, sizeof(want),
                 "%s: tokens_per_minute=1000 max_tokens_in_flight=5000 (1 scope changed)\n", user_scope);
        expect_output(d,
                      (const char *const[]){"set", by_name, "tokens_per_minute=1000",
                                            "max_tokens_in_flight=5000", NULL},
                      want, "set user:NAME");
        ck_assert_int_eq(status_window_limit(admin, user_scope, "minute"), 1000);

        /* 2 x 600 reserved does not fit in 1000 - 75: refused, naming the user's scope. */
        r = tb_request(c, &(tb_request_params){.estimate = 600}, &g);
        ck_assert_msg(r == -EDQUOT, "a request over the new limit: %d %s", r, tb_client_error(c));
        ck_assert_pstr_eq(tb_client_error_parameter(c, "scope"), user_scope);
        ck_assert_pstr_eq(tb_client_error_parameter(c, "limit"), "1000");

        snprintf(want, sizeof(want), "%s: tokens_per_minute=0 (1 scope changed)\n", user_scope);
        expect_output(d, (const char *const[]){"set", user_scope, "tokens_per_minute=0", NULL}, want,
                      "set user:UID ...=0");
        ck_assert_int_eq(status_window_limit(admin, user_scope, "minute"), -1);
        ck_assert_msg(tb_request(c, &(tb_request_params){.estimate = 600}, &g) == 0,
                      "the request once the limit is lifted: %s", tb_client_error(c));

        /* A kind's defaults: an agent scope that appears later has them. */
        {
                CommandResult res;

                budgetctl_run(d->socket_path, NULL,
                              (const char *const[]){"set", "agent", "max_allocations=1", NULL}, &res);
                ck_assert_msg(res.status == 0 &&
                                      strncmp(res.out,
                                              "agent: max_allocations=1 (the defaults of agent "
                                              "scopes; ",
                                              strlen("agent: max_allocations=1 (the defaults of agent "
                                                     "scopes; ")) == 0,
                              "set agent: exit %d, stdout %s, stderr %s", res.status, res.out, res.err);
                command_result_done(&res);
        }
        ck_assert_msg(tb_request(c, &(tb_request_params){.estimate = 10, .agent = "it-set"}, &g2) == 0,
                      "the agent's first request: %s", tb_client_error(c));
        r = tb_request(c, &(tb_request_params){.estimate = 10, .agent = "it-set"}, &g2);
        ck_assert_msg(r == -EUSERS, "the agent's second request: %d %s", r, tb_client_error(c));
        ck_assert_pstr_eq(tb_client_error_parameter(c, "scope"), agent_scope);

        /* What the daemon does not have. */
        expect_error(
                d, (const char *const[]){"set", "process:1", "tokens_per_minute=5", NULL}, 1,
                "budgetctl: unknown scope 'process:1': no such process is tracked (a process scope must "
                "exist to be changed)\n",
                "set process:1");
        expect_error(d, (const char *const[]){"set", "rule:no-such-rule", "tokens_per_minute=5", NULL}, 1,
                     "budgetctl: unknown scope 'rule:no-such-rule': no rule of that name is configured\n",
                     "set rule:no-such-rule");

        /* --json prints the daemon's reply. */
        {
                CommandResult res;
                json_object *o;

                budgetctl_run(
                        d->socket_path, NULL,
                        (const char *const[]){"--json", "set", "global", "tokens_per_day=123456", NULL},
                        &res);
                o = parse_json_output(&res, "budgetctl --json set global");
                ck_assert_msg(strcmp(json_str(o, "scope", "set --json"), "global") == 0 &&
                                      json_int(o, "scopes", "set --json") == 1,
                              "set --json: %s", res.out);
                json_object_put(o);
                command_result_done(&res);
        }
        ck_assert_int_eq(status_window_limit(admin, "global", "day"), 123456);
        tb_client_close(c);
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

#define RELOAD_REFUSED "budgetctl: the configuration was not reloaded; tokenbudgetd keeps the one it has:\n"

static void rewrite_config(const TestDaemon *d, const char *text) {
        char tmp[320];
        FILE *f;

        /* Replaced whole, as an editor or a package manager does. */
        snprintf(tmp, sizeof(tmp), "%s.new", d->config_path);
        f = fopen(tmp, "we");
        ck_assert_msg(f, "%s: %s", tmp, strerror(errno));
        fputs(text, f);
        ck_assert_int_eq(fclose(f), 0);
        ck_assert_msg(rename(tmp, d->config_path) == 0, "rename to %s: %s", d->config_path, strerror(errno));
}

static void expect_report(tb_client *c, const tb_grant *g, uint64_t total, const char *what) {
        tb_report_reply rep;

        ck_assert_msg(tb_report(c, &(tb_report_params){.allocation = g->allocation, .input_tokens = total},
                                &rep) == 0,
                      "%s: report on %s: %s", what, g->allocation, tb_client_error(c));
        ck_assert_msg(rep.used == total, "%s: used %" PRIu64 ", expected %" PRIu64, what, rep.used, total);
}

/*
 * reload applies a good file (limits changed with set are forgotten) and
 * refuses a bad one with every FILE:LINE reason, keeping the old limits;
 * open allocations go on through both.
 */
START_TEST(test_budgetctl_reload) {
        TestDaemon *d = harness_daemon_start("global: { tokens_per_minute = 100000; };\n");
        tb_client *c = harness_client(d), *admin = harness_client(d);
        char want[1200];
        CommandResult res;
        tb_grant g1, g2;

        ck_assert_msg(tb_request(c, &(tb_request_params){.estimate = 1000}, &g1) == 0, "request: %s",
                      tb_client_error(c));
        expect_report(c, &g1, 100, "before the reloads");
        expect_output(d, (const char *const[]){"set", "global", "tokens_per_minute=5000", NULL}, NULL,
                      "set global");
        ck_assert_int_eq(status_window_limit(admin, "global", "minute"), 5000);

        rewrite_config(d, "# a good file\nglobal: { tokens_per_minute = 200000; };\n");
        expect_output(d, (const char *const[]){"reload", NULL}, "tokenbudgetd reloaded its configuration\n",
                      "reload of a good file");
        ck_assert_int_eq(status_window_limit(admin, "global", "minute"), 200000);
        expect_report(c, &g1, 200, "after a good reload");

        ck_assert_msg(tb_request(c, &(tb_request_params){.estimate = 1000}, &g2) == 0, "request: %s",
                      tb_client_error(c));
        rewrite_config(d, "global: {\n  tokens_per_minute = -5;\n};\nhard_multiplier = 7.5;\n");
        budgetctl_run(d->socket_path, NULL, (const char *const[]){"reload", NULL}, &res);
        ck_assert_msg(res.status == 1, "reload of a bad file: exit %d, expected 1 (stderr: %s)", res.status,
                      res.err);
        /* The first line, then the daemon's reasons, one per line (in the daemon's order). */
        ck_assert_msg(strncmp(res.err, RELOAD_REFUSED, strlen(RELOAD_REFUSED)) == 0 && lines(res.err) == 3,
                      "reload of a bad file: stderr does not start with \"%s\" and two reasons:\n%s",
                      RELOAD_REFUSED, res.err);
        snprintf(want, sizeof(want),
                 "\n%s:2: global.tokens_per_minute must be between 0 and 999999999999, got -5\n",
                 d->config_path);
        ck_assert_msg(strstr(res.err, want), "reload of a bad file: no line%s in\n%s", want, res.err);
        snprintf(want, sizeof(want), "\n%s:4: hard_multiplier must be between 1.0 and 5.0, got 7.5\n",
                 d->config_path);
        ck_assert_msg(strstr(res.err, want), "reload of a bad file: no line%s in\n%s", want, res.err);
        ck_assert_msg(res.out[0] == '\0', "reload of a bad file printed on stdout: %s", res.out);
        command_result_done(&res);
        ck_assert_int_eq(status_window_limit(admin, "global", "minute"), 200000);
        expect_report(c, &g1, 300, "after a refused reload");
        expect_report(c, &g2, 50, "after a refused reload");
        ck_assert_msg(tb_release(c, &(tb_release_params){.allocation = g1.allocation}, NULL) == 0 &&
                              tb_release(c, &(tb_release_params){.allocation = g2.allocation}, NULL) == 0,
                      "release after the reloads: %s", tb_client_error(c));
        tb_client_close(c);
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

/* Every scope of a status --json reply passes keep(); global is always there. */
static void expect_scopes(json_object *o, bool (*keep)(json_object *scope, const void *arg), const void *arg,
                          const char *what) {
        json_object *scopes;

        ck_assert_msg(json_object_object_get_ex(o, "scopes", &scopes) && status_scope(o, "global"),
                      "%s: no scopes or no global: %s", what, json_object_to_json_string(o));
        for (size_t i = 0; i < json_object_array_length(scopes); i++) {
                json_object *s = json_object_array_get_idx(scopes, i);

                ck_assert_msg(strcmp(json_str(s, "kind", what), "global") == 0 || keep(s, arg),
                              "%s: scope %s should not be there: %s", what, json_str(s, "name", what),
                              json_object_to_json_string(o));
        }
}

static bool scope_of_kind(json_object *scope, const void *kind) {
        return strcmp(json_str(scope, "kind", "scope"), kind) == 0;
}

static bool scope_of_uid(json_object *scope, const void *uid) {
        json_object *v;

        return json_object_object_get_ex(scope, "uid", &v) && json_object_is_type(v, json_type_int) &&
               json_object_get_int64(v) == *(const int64_t *)uid;
}

static json_object *status_json(const char *socket_path, const char *const args[], const char *what,
                                CommandResult *res) {
        budgetctl_run(socket_path, NULL, args, res);
        return parse_json_output(res, what);
}

/* --kind keeps global and one kind, --user global and one user's scopes; the table says when budget frees.
 */
START_TEST(test_budgetctl_status_filter) {
        TestDaemon *d = harness_daemon_start("");
        tb_client *c = harness_client(d);
        char agent_scope[64], user_scope[64], process_scope[64], uid_text[16];
        int64_t uid = getuid();
        const char *frees;
        CommandResult res;
        json_object *o;
        tb_grant g;

        snprintf(uid_text, sizeof(uid_text), "%u", (unsigned)getuid());
        snprintf(agent_scope, sizeof(agent_scope), "agent:%s:it-filter", uid_text);
        snprintf(user_scope, sizeof(user_scope), "user:%s", uid_text);
        snprintf(process_scope, sizeof(process_scope), "process:%d", (int)getpid());
        ck_assert_msg(tb_request(c, &(tb_request_params){.estimate = 1000, .agent = "it-filter"}, &g) == 0,
                      "request: %s", tb_client_error(c));
        expect_report(c, &g, 100, "status filters");

        o = status_json(d->socket_path, (const char *const[]){"--json", "status", "--kind", "agent", NULL},
                        "status --kind agent", &res);
        expect_scopes(o, scope_of_kind, "agent", "status --kind agent");
        ck_assert_msg(status_scope(o, agent_scope), "status --kind agent: no %s: %s", agent_scope, res.out);
        json_object_put(o);
        command_result_done(&res);

        o = status_json(d->socket_path, (const char *const[]){"--json", "status", "--kind", "process", NULL},
                        "status --kind process", &res);
        expect_scopes(o, scope_of_kind, "process", "status --kind process");
        ck_assert_msg(status_scope(o, process_scope), "status --kind process: no %s: %s", process_scope,
                      res.out);
        json_object_put(o);
        command_result_done(&res);

        o = status_json(d->socket_path,
                        (const char *const[]){"--json", "status", "--user", own_user_name(), NULL},
                        "status --user NAME", &res);
        expect_scopes(o, scope_of_uid, &uid, "status --user NAME");
        ck_assert_msg(status_scope(o, user_scope) && status_scope(o, agent_scope),
                      "status --user NAME: no %s or %s: %s", user_scope, agent_scope, res.out);
        json_object_put(o);
        command_result_done(&res);

        o = status_json(
                d->socket_path,
                (const char *const[]){"--json", "status", "--kind", "user", "--user", uid_text, NULL},
                "status --kind user --user UID", &res);
        expect_scopes(o, scope_of_kind, "user", "status --kind user --user UID");
        expect_scopes(o, scope_of_uid, &uid, "status --kind user --user UID");
        ck_assert_msg(status_scope(o, user_scope), "status --kind user --user UID: no %s: %s", user_scope,
                      res.out);
        json_object_put(o);
        command_result_done(&res);

        /* The table: only those rows, and the usage frees within the minute ("in 59s", "in 1min 0s"). */
        budgetctl_run(d->socket_path, NULL, (const char *const[]){"status", "--kind", "agent", NULL}, &res);
        ck_assert_msg(res.status == 0, "status --kind agent: exit %d: %s", res.status, res.err);
        ck_assert_msg(table_has_row(res.out, "global") && table_has_row(res.out, agent_scope) &&
                              !table_has_row(res.out, user_scope) && !table_has_row(res.out, process_scope),
                      "status --kind agent: rows other than global and %s:\n%s", agent_scope, res.out);
        ck_assert_msg(strstr(res.out, "  FREES\n"), "status: no FREES column:\n%s", res.out);
        /* Committed a moment ago: out of the minute in 60 s, give or take its 1 s buckets. */
        frees = strstr(strstr(res.out, agent_scope), "  in ");
        ck_assert_msg(frees && (strncmp(frees, "  in 1min 0s\n", 13) == 0 ||
                                strncmp(frees, "  in 1min 1s\n", 13) == 0 ||
                                (strncmp(frees, "  in 5", 6) == 0 && frees[7] == 's')),
                      "status: the agent's usage does not free in about a minute:\n%s", res.out);
        ck_assert_msg(strstr(strstr(res.out, agent_scope), "/64 "),
                      "status: the agent's ALLOCS cell is not used/limit (1/64):\n%s", res.out);
        command_result_done(&res);

        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* ---- non-admins: status and list show their own scopes, set and reload are refused ---- */

#define OTHER_UID 65534
#define ADMIN_GID 4242
#define SETPRIV   "/usr/bin/setpriv"

/*
 * Runs budgetctl as uid OTHER_UID (gid the same) through setpriv, with the
 * supplementary group ADMIN_GID when in_admin_group, else none.
 */
static void copy_file(const char *from, const char *to, mode_t mode) {
        size_t len;
        char *data = harness_read_file(from, &len);
        int fd;

        ck_assert_msg(data, "%s: %s", from, strerror(errno));
        fd = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
        ck_assert_msg(fd >= 0, "%s: %s", to, strerror(errno));
        ck_assert_msg(write(fd, data, len) == (ssize_t)len, "%s: short write", to);
        ck_assert_int_eq(fchmod(fd, mode), 0);
        close(fd);
        free(data);
}

/*
 * The build directory may be one that uid 65534 cannot enter (a clone under
 * /root, as in scripts/check-fresh.sh): budgetctl and the library it loads
 * are copied into the test's directory (mode 0755) and run from there.
 */
static const char *other_budgetctl(char ret_libdir[static 300]) {
        static char path[320];
        const char *bin = harness_env("BUDGETCTL");
        char lib[PATH_MAX], dir[300];
        const char *slash = strrchr(bin, '/');

        snprintf(dir, sizeof(dir), "%s/other-bin", harness_dir());
        snprintf(ret_libdir, 300, "%s", dir);
        snprintf(path, sizeof(path), "%s/budgetctl", dir);
        if (access(path, X_OK) == 0)
                return path;
        ck_assert_msg(mkdir(dir, 0755) == 0 || errno == EEXIST, "%s: %s", dir, strerror(errno));
        ck_assert_int_eq(chmod(dir, 0755), 0);
        copy_file(bin, path, 0755);
        snprintf(lib, sizeof(lib), "%.*s/libtokenbudget.so.1", slash ? (int)(slash - bin) : 1,
                 slash ? bin : ".");
        snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "/libtokenbudget.so.1");
        copy_file(lib, dir, 0644);
        return path;
}

static void budgetctl_as_other(const char *socket_path, bool in_admin_group, const char *const args[],
                               CommandResult *ret) {
        char libdir[300], env_lib[320];
        const char *bin = other_budgetctl(libdir);
        char *argv[20] = {SETPRIV,
                          "--reuid=65534",
                          "--regid=65534",
                          in_admin_group ? "--groups=4242" : "--clear-groups",
                          (char *)bin,
                          "--socket",
                          (char *)socket_path};
        char *env[] = {env_lib, NULL};
        size_t n = 7;

        snprintf(env_lib, sizeof(env_lib), "LD_LIBRARY_PATH=%s", libdir);
        for (size_t i = 0; args[i]; i++) {
                ck_assert(n + 1 < sizeof(argv) / sizeof(argv[0]));
                argv[n++] = (char *)args[i];
        }
        harness_run(argv, env, RUN_TIMEOUT_MSEC, ret);
}

/* A child of uid OTHER_UID that holds one allocation of agent "other-agent" until killed. */
_Noreturn static void other_child(const char *socket_path, int fd) {
        tb_request_params p = {.estimate = 100, .agent = "other-agent"};
        tb_client *c = NULL;
        tb_grant g;

        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (setgroups(0, NULL) < 0 || setgid(OTHER_UID) < 0 || setuid(OTHER_UID) < 0) {
                dprintf(fd, "ERR setuid: %s\n", strerror(errno));
                _exit(1);
        }
        if (tb_client_open(socket_path, &c, NULL) < 0 || tb_request(c, &p, &g) < 0) {
                dprintf(fd, "ERR %s\n", c ? tb_client_error(c) : "cannot connect");
                _exit(1);
        }
        dprintf(fd, "OK %s\n", g.allocation);
        for (;;)
                pause();
}

static pid_t other_child_start(const TestDaemon *d, char allocation[static 64]) {
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
                other_child(d->socket_path, pipefd[1]);
        }
        close(pipefd[1]);
        pfd = (struct pollfd){.fd = pipefd[0], .events = POLLIN};
        ck_assert_msg(poll(&pfd, 1, 10000) == 1, "the child of uid %d did not report within 10 s",
                      OTHER_UID);
        n = read(pipefd[0], line, sizeof(line) - 1);
        ck_assert_msg(n > 3 && strncmp(line, "OK ", 3) == 0, "the child of uid %d failed: %s", OTHER_UID,
                      n > 0 ? line : "(nothing)");
        line[strcspn(line, "\n")] = '\0';
        ck_assert_msg(strlen(line + 3) < 64, "the child's allocation id is too long: %s", line + 3);
        memcpy(allocation, line + 3, strlen(line + 3) + 1);
        close(pipefd[0]);
        return pid;
}

/* What uid 65534 may not do, and what budgetctl says. */
static const struct {
        const char *args[5];
        const char *err;
} denied_rows[] = {
        {{"set", "global", "tokens_per_minute=1"},
         "budgetctl: permission denied: 'set' is for " ADMINS_TEXT "\n"},
        {{"set", "user:65534", "tokens_per_minute=1"},
         "budgetctl: permission denied: 'set' is for " ADMINS_TEXT "\n"},
        {{"reload"}, "budgetctl: permission denied: 'reload' is for " ADMINS_TEXT "\n"},
        {{"status", "--user", "0"},
         "budgetctl: permission denied: other users' scopes are for " ADMINS_TEXT "\n"},
};

/*
 * A user who is no admin (uid 65534 through setpriv) sees global and their
 * own scopes and allocations, and is refused set, reload and other users'
 * scopes; a member of admin_group is an admin.
 */
START_TEST(test_budgetctl_non_admin) {
        TestDaemon *d;
        tb_client *c;
        char child_agent[64], child_process[64], own_process[64], allocation[64];
        int64_t other = OTHER_UID;
        json_object *o, *allocs;
        CommandResult res;
        tb_grant g;
        pid_t child;

        if (!tb_check_need_root("budgetctl as uid 65534 (setpriv)"))
                return;
        if (access(SETPRIV, X_OK) != 0) {
                tb_check_skip("budgetctl as uid 65534: no %s (util-linux)", SETPRIV);
                return;
        }
        d = harness_daemon_start("admin_group = 4242;\n");
        c = harness_client(d);
        ck_assert_msg(tb_request(c, &(tb_request_params){.estimate = 100}, &g) == 0, "request: %s",
                      tb_client_error(c));
        child = other_child_start(d, allocation);
        snprintf(child_agent, sizeof(child_agent), "agent:%d:other-agent", OTHER_UID);
        snprintf(child_process, sizeof(child_process), "process:%d", (int)child);
        snprintf(own_process, sizeof(own_process), "process:%d", (int)getpid());

        budgetctl_as_other(d->socket_path, false, (const char *const[]){"--json", "status", "--all", NULL},
                           &res);
        if (res.status == 126 || res.status == 127) {
                tb_check_skip("uid 65534 cannot run %s (is the build directory private?): %s",
                              harness_env("BUDGETCTL"), res.err);
                command_result_done(&res);
                kill(child, SIGKILL);
                waitpid(child, NULL, 0);
                tb_client_close(c);
                harness_daemon_stop(d);
                return;
        }
        o = parse_json_output(&res, "status --all as uid 65534");
        expect_scopes(o, scope_of_uid, &other, "status --all as uid 65534");
        ck_assert_msg(status_scope(o, "user:65534") && status_scope(o, child_agent) &&
                              status_scope(o, child_process) && !status_scope(o, "user:0") &&
                              !status_scope(o, own_process),
                      "status --all as uid 65534: expected global, user:65534, %s and %s only: %s",
                      child_agent, child_process, res.out);
        json_object_put(o);
        command_result_done(&res);

        budgetctl_as_other(d->socket_path, false, (const char *const[]){"status", NULL}, &res);
        ck_assert_msg(res.status == 0 && table_has_row(res.out, "global") &&
                              table_has_row(res.out, "user:65534") && !table_has_row(res.out, "user:0"),
                      "status as uid 65534: exit %d:\n%s%s", res.status, res.out, res.err);
        command_result_done(&res);

        budgetctl_as_other(d->socket_path, false, (const char *const[]){"--json", "list", NULL}, &res);
        o = parse_json_output(&res, "list as uid 65534");
        ck_assert_msg(json_object_object_get_ex(o, "allocations", &allocs) &&
                              json_object_array_length(allocs) == 1 &&
                              strcmp(json_str(json_object_array_get_idx(allocs, 0), "id", "list"),
                                     allocation) == 0,
                      "list as uid 65534: expected only %s: %s", allocation, res.out);
        json_object_put(o);
        command_result_done(&res);

        for (size_t i = 0; i < sizeof(denied_rows) / sizeof(denied_rows[0]); i++) {
                budgetctl_as_other(d->socket_path, false, denied_rows[i].args, &res);
                ck_assert_msg(res.status == 1 && strcmp(res.err, denied_rows[i].err) == 0,
                              "'%s %s' as uid 65534: exit %d, stderr\n%s\nexpected exit 1 and\n%s",
                              denied_rows[i].args[0], denied_rows[i].args[1] ? denied_rows[i].args[1] : "",
                              res.status, res.err, denied_rows[i].err);
                command_result_done(&res);
        }
        ck_assert_int_eq(status_window_limit(c, "global", "minute"), 2000000);

        /* Their own uid, asked for. */
        budgetctl_as_other(d->socket_path, false,
                           (const char *const[]){"--json", "status", "--user", "65534", NULL}, &res);
        o = parse_json_output(&res, "status --user 65534 as uid 65534");
        ck_assert_msg(status_scope(o, "user:65534"), "status --user 65534 as uid 65534: %s", res.out);
        json_object_put(o);
        command_result_done(&res);

        /* A member of admin_group is an admin. */
        budgetctl_as_other(d->socket_path, true, (const char *const[]){"--json", "status", "--all", NULL},
                           &res);
        o = parse_json_output(&res, "status --all in admin_group");
        ck_assert_msg(status_scope(o, "user:0") && status_scope(o, own_process),
                      "status --all in admin_group: does not see root's scopes: %s", res.out);
        json_object_put(o);
        command_result_done(&res);
        budgetctl_as_other(d->socket_path, true,
                           (const char *const[]){"set", "global", "tokens_per_minute=1234", NULL}, &res);
        ck_assert_msg(res.status == 0 &&
                              strcmp(res.out, "global: tokens_per_minute=1234 (1 scope changed)\n") == 0,
                      "set in admin_group: exit %d: %s%s", res.status, res.out, res.err);
        command_result_done(&res);
        ck_assert_int_eq(status_window_limit(c, "global", "minute"), 1234);

        ck_assert_int_eq(kill(child, SIGKILL), 0);
        ck_assert_int_eq(waitpid(child, NULL, 0), child);
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* ---- budgetctl classes: what the estimator learned, as the daemon sent it ---- */

/* n allocations of params, each released with in/out tokens. */
static void classes_teach(tb_client *c, const tb_request_params *params, int n, uint64_t in,
                          uint64_t (*out)(int i)) {
        for (int i = 0; i < n; i++) {
                tb_release_reply rel;
                tb_grant g;

                ck_assert_msg(tb_request(c, params, &g) == 0, "request %d: %s", i, tb_client_error(c));
                ck_assert_msg(tb_release(c,
                                         &(tb_release_params){.allocation = g.allocation,
                                                              .input_tokens = in,
                                                              .output_tokens = out(i)},
                                         &rel) == 0,
                              "release %d: %s", i, tb_client_error(c));
        }
}

/* A class that varies (40 to 58 output tokens) and one that does not. */
static uint64_t classes_varied(int i) {
        return 40 + (uint64_t)(i % 7) * 3;
}
static uint64_t classes_flat(int i) {
        return 200;
}

/* The classes array of Classes' parameters, checked to be one. */
static json_object *classes_list(json_object *params, const char *what) {
        json_object *list;

        ck_assert_msg(json_object_object_get_ex(params, "classes", &list) &&
                              json_object_is_type(list, json_type_array),
                      "%s: no classes array: %s", what, json_object_to_json_string(params));
        return list;
}

static json_object *classes_find(json_object *params, int64_t uid, const char *name, const char *what) {
        json_object *list = classes_list(params, what);

        for (size_t i = 0; i < json_object_array_length(list); i++) {
                json_object *c = json_object_array_get_idx(list, i);

                if (json_int(c, "uid", what) == uid && strcmp(json_str(c, "class", what), name) == 0)
                        return c;
        }
        return NULL;
}

/* To the nearest integer, halves away from zero (as budgetctl rounds). */
static long long classes_round(double x) {
        return (long long)(x < 0 ? x - 0.5 : x + 0.5);
}

/* A fraction as budgetctl shows an error: a percent with one decimal, from permille rounded. */
static void classes_percent(char *buf, size_t size, json_object *c, const char *key, bool sign) {
        json_object *v;
        long long p;

        if (!json_object_object_get_ex(c, key, &v)) {
                snprintf(buf, size, "-");
                return;
        }
        p = classes_round(json_object_get_double(v) * 1000);
        snprintf(buf, size, "%s%lld.%lld%%",
                 p < 0           ? "-"
                 : sign && p > 0 ? "+"
                                 : "",
                 llabs(p) / 10, llabs(p) % 10);
}

/* The cells budgetctl classes should print for c (IDLE left out: it moves), from the JSON alone. */
static void classes_expected(json_object *c, char cells[10][48]) {
        json_object *blocks, *v;
        static const int64_t sizes[] = {10, 100, 1000};

        snprintf(cells[0], 48, "%" PRId64, json_int(c, "uid", "class"));
        snprintf(cells[1], 48, "%s", json_str(c, "class", "class"));
        snprintf(cells[2], 48, "%" PRId64, json_int(c, "samples", "class"));
        ck_assert_msg(json_int(c, "predictedOutput", "class") < 1000, "a test class predicts < 1000");
        snprintf(cells[3], 48, "%" PRId64, json_int(c, "predictedOutput", "class"));
        classes_percent(cells[4], 48, c, "wape", false);
        classes_percent(cells[5], 48, c, "bias", true);
        ck_assert(json_object_object_get_ex(c, "blocks", &blocks));
        for (size_t s = 0; s < 3; s++) {
                snprintf(cells[6 + s], 48, "-");
                for (size_t i = 0; i < json_object_array_length(blocks); i++) {
                        json_object *b = json_object_array_get_idx(blocks, i);

                        if (json_int(b, "size", "blocks") == sizes[s] && json_int(b, "blocks", "blocks") > 0)
                                classes_percent(cells[6 + s], 48, b, "median", false);
                }
        }
        snprintf(cells[9], 48, "-");
        if (json_object_object_get_ex(c, "ratioP95", &v)) {
                long long h = classes_round(json_object_get_double(v) * 100);

                if (h % 100 == 0)
                        snprintf(cells[9], 48, "%lld", h / 100);
                else if (h % 10 == 0)
                        snprintf(cells[9], 48, "%lld.%lld", h / 100, h % 100 / 10);
                else
                        snprintf(cells[9], 48, "%lld.%02lld", h / 100, h % 100);
        }
}

/* The line of the table whose CLASS column is name, split at blanks into 11 cells; false when none. */
static bool classes_table_row(const char *out, const char *name, char cells[11][48]) {
        for (const char *line = out; line && *line;
             line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
                size_t len = strcspn(line, "\n"), n = 0;
                char copy[512], *save = NULL;

                if (len >= sizeof(copy))
                        continue;
                memcpy(copy, line, len);
                copy[len] = '\0';
                for (char *w = strtok_r(copy, " ", &save); w && n < 12; w = strtok_r(NULL, " ", &save))
                        if (n++ < 11)
                                snprintf(cells[n - 1], 48, "%s", w);
                if (n == 11 && strcmp(cells[1], name) == 0)
                        return true;
        }
        return false;
}

#define CLASSES_HEADER                                                                                      \
        "UID  CLASS             SAMPLES  PREDICTED   WAPE   BIAS  BLOCK10  BLOCK100  BLOCK1000  P95RATIO  " \
        "IDLE\n"

/*
 * budgetctl classes against a daemon that learned two classes (one with
 * predictions made and a block of 10 counted, one too young for either):
 * the table shows what the daemon sent (every cell but IDLE computed here
 * from the daemon's own reply), '-' for what is not known yet; --json is
 * what the daemon sent, field for field; --no-legend only the rows; the
 * empty table says so; --user takes a name or uid. Row 0 on a durable
 * daemon, row 1 memory only (the estimator is in memory either way).
 */
START_TEST(test_budgetctl_classes) {
        TestDaemon *d = harness_daemon_start_with("", &(HarnessDaemonOptions){.state_dir = _i ? "" : NULL});
        tb_client *c = harness_client(d), *admin = harness_client(d);
        tb_request_params varied = {.estimate = 1000, .task_class = "it-classes", .prompt_tokens = 100};
        tb_request_params young = {.estimate = 1000, .agent = "it-agent"};
        const char *names[] = {"class:it-classes", "agent:it-agent"};
        json_object *reply, *direct, *printed, *list;
        char want[10][48], got[11][48];
        CommandResult res;

        budgetctl(d->socket_path, "classes", NULL, &res);
        ck_assert_msg(res.status == 0 && strcmp(res.out, "No classes learned yet.\n") == 0,
                      "classes before any: exit %d:\n%s%s", res.status, res.out, res.err);
        command_result_done(&res);
        budgetctl(d->socket_path, "--no-legend", "classes", &res);
        ck_assert_msg(res.status == 0 && strcmp(res.out, "") == 0,
                      "--no-legend classes before any: %d:\n%s%s", res.status, res.out, res.err);
        command_result_done(&res);

        /* 30 samples: min_samples (20) before the first prediction, then 10 predicted, one block of 10. */
        classes_teach(c, &varied, 30, 100, classes_varied);
        classes_teach(c, &young, 5, 0, classes_flat);

        reply = harness_admin(admin, "Classes");
        direct = reply; /* tb_call gives the parameters */
        ck_assert_msg(json_object_array_length(classes_list(direct, "Classes")) == 2,
                      "Classes: expected 2 classes: %s", json_object_to_json_string(direct));
        ck_assert_msg(
                json_object_object_get_ex(classes_find(direct, 0, names[0], "Classes"), "wape", NULL) &&
                        !json_object_object_get_ex(classes_find(direct, 0, names[1], "Classes"), "wape",
                                                   NULL),
                "Classes: expected a wape for %s only: %s", names[0], json_object_to_json_string(direct));

        /* The one block of 10 is the 10 predictions: its error is the bias's size, as shown below. */
        {
                json_object *v = classes_find(direct, 0, names[0], "Classes"), *b, *bias;

                ck_assert_msg(json_int(v, "predictions", "class") == 10 &&
                                      json_object_object_get_ex(v, "bias", &bias) &&
                                      json_object_object_get_ex(v, "blocks", &b) &&
                                      json_int(json_object_array_get_idx(b, 0), "size", "blocks") == 10 &&
                                      json_int(json_object_array_get_idx(b, 0), "blocks", "blocks") == 1,
                              "Classes: expected 10 predictions and one block of 10: %s",
                              json_object_to_json_string(v));
                ck_assert_double_eq_tol(json_object_get_double(json_object_object_get(
                                                json_object_array_get_idx(b, 0), "median")),
                                        fabs(json_object_get_double(bias)), 1e-9);
        }

        budgetctl(d->socket_path, "classes", NULL, &res);
        ck_assert_msg(res.status == 0 && strncmp(res.out, CLASSES_HEADER, strlen(CLASSES_HEADER)) == 0,
                      "classes: exit %d, expected the header\n%sgot:\n%s%s", res.status, CLASSES_HEADER,
                      res.out, res.err);
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                classes_expected(classes_find(direct, 0, names[i], "Classes"), want);
                ck_assert_msg(classes_table_row(res.out, names[i], got), "classes: no row of %s:\n%s",
                              names[i], res.out);
                for (size_t col = 0; col < 10; col++)
                        ck_assert_msg(strcmp(got[col], want[col]) == 0,
                                      "classes: %s column %zu is \"%s\", the daemon sent \"%s\":\n%s",
                                      names[i], col, got[col], want[col], res.out);
                ck_assert_msg(got[10][strlen(got[10]) - 1] == 's', "classes: %s IDLE \"%s\"", names[i],
                              got[10]);
        }
        /* What the young class cannot know yet; what the older one can. */
        ck_assert_msg(strcmp(got[4], "-") == 0 && strcmp(got[6], "-") == 0 && strcmp(got[9], "-") == 0,
                      "classes: %s knows too much:\n%s", names[1], res.out);
        classes_table_row(res.out, names[0], got);
        ck_assert_msg(strcmp(got[2], "30") == 0 && strchr(got[4], '%') && strchr(got[6], '%') &&
                              strcmp(got[7], "-") == 0 && strcmp(got[8], "-") == 0 &&
                              strcmp(got[9], "-") != 0,
                      "classes: %s should have a WAPE, a BLOCK10 and a P95RATIO, no BLOCK100:\n%s", names[0],
                      res.out);
        command_result_done(&res);

        /* --json: what the daemon sent, but for the idle time (it moves). */
        budgetctl(d->socket_path, "--json", "classes", &res);
        printed = parse_json_output(&res, "classes --json");
        command_result_done(&res);
        json_object *both[] = {direct, printed};
        for (size_t k = 0; k < 2; k++) {
                list = classes_list(both[k], "classes");
                for (size_t i = 0; i < json_object_array_length(list); i++)
                        json_object_object_del(json_object_array_get_idx(list, i), "idleUsec");
        }
        ck_assert_msg(json_object_equal(direct, printed),
                      "classes --json is not what the daemon sent:\n%s\n%s",
                      json_object_to_json_string(printed), json_object_to_json_string(direct));
        json_object_put(printed);

        /* --no-legend: the two rows only. */
        budgetctl(d->socket_path, "--no-legend", "classes", &res);
        ck_assert_msg(res.status == 0 && lines(res.out) == 2 && !strstr(res.out, "CLASS"),
                      "--no-legend classes: exit %d:\n%s%s", res.status, res.out, res.err);
        command_result_done(&res);

        /* --user: root's by name and by uid; another uid's (none here) is the empty table. */
        budgetctl_run(d->socket_path, NULL,
                      (const char *const[]){"--no-legend", "classes", "--user", "root", NULL}, &res);
        ck_assert_msg(res.status == 0 && lines(res.out) == 2, "classes --user root: exit %d:\n%s%s",
                      res.status, res.out, res.err);
        command_result_done(&res);
        budgetctl_run(d->socket_path, NULL, (const char *const[]){"classes", "--user", "65534", NULL}, &res);
        ck_assert_msg(res.status == 0 && strcmp(res.out, "No classes learned yet.\n") == 0,
                      "classes --user 65534: exit %d:\n%s%s", res.status, res.out, res.err);
        command_result_done(&res);
        budgetctl_run(d->socket_path, NULL,
                      (const char *const[]){"classes", "--user", "no-such-user-here", NULL}, &res);
        ck_assert_msg(res.status == 2 &&
                              strcmp(res.err, "budgetctl: unknown user 'no-such-user-here' (--user "
                                              "takes a user name or a uid)\n") == 0,
                      "classes --user no-such-user-here: exit %d: %s", res.status, res.err);
        command_result_done(&res);

        json_object_put(reply);
        tb_client_close(c);
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

/* A Classes reply with one class whose fields after "class" are fields (JSON text), and truncated. */
static void fake_classes_reply(char *buf, size_t size, const char *name, const char *fields,
                               bool truncated) {
        snprintf(
                buf, size,
                "{\"parameters\":{\"classes\":[{\"uid\":1000,\"class\":\"%s\",\"samples\":250,\"predicted\":"
                "1500,\"predictedOutput\":1234,\"predictions\":230,%s,\"idleUsec\":125000000}],"
                "\"truncated\":%s}}",
                name, fields, truncated ? "true" : "false");
}

#define FAKE_BLOCKS                                                                                         \
        "\"blocks\":[{\"size\":10,\"blocks\":23,\"median\":0.0449,\"p90\":0.2},{\"size\":100,\"blocks\":2," \
        "\"median\":0.0051,\"p90\":0.01},{\"size\":1000,\"blocks\":0,\"median\":0,\"p90\":0}]"

/*
 * What budgetctl classes makes of replies no real daemon here sends (a fake
 * daemon answers): negative bias and rounding, a large predicted output, a
 * block size it has no column for (ignored), truncated (said on stderr),
 * control characters in a class name, malformed fields refused naming the
 * field, and a daemon without Classes.
 */
START_TEST(test_budgetctl_classes_wire) {
        static const struct {
                const char *name, *fields;
                bool truncated;
                int status;
                const char *out, *err; /* out: the row (status 0), err: stderr, exactly */
        } rows[] = {
                {"class:big", "\"wape\":0.31249,\"bias\":-0.05249," FAKE_BLOCKS ",\"ratioP95\":1.6817928",
                 false, 0, "1000  class:big  250  1.2k  31.2%  -5.2%  4.5%  0.5%  -  1.68  2min 5s\n", ""},
                {"class:cut",
                 "\"wape\":0,\"bias\":0,\"blocks\":[{\"size\":50,\"blocks\":3,\"median\":0.5,\"p90\":0.5}]",
                 true, 0, "1000  class:cut  250  1.2k  0.0%  0.0%  -  -  -  -  2min 5s\n",
                 "budgetctl: only the first 1 classes are shown (the daemon's limit); pass --user for the "
                 "rest\n"},
                {"class:\\u001b[2Jx", "\"blocks\":[]", false, 0,
                 "1000  class:?[2Jx  250  1.2k  -  -  -  -  -  -  2min 5s\n", ""},
                {"class:bad", "\"wape\":\"low\",\"blocks\":[]", false, 1, NULL,
                 "budgetctl: malformed reply from tokenbudgetd: classes[0].wape is missing or not a "
                 "number\n"},
                {"class:bad", "\"blocks\":{}", false, 1, NULL,
                 "budgetctl: malformed reply from tokenbudgetd: classes[0].blocks is missing or not an "
                 "array\n"},
                {"class:bad", "\"blocks\":[{\"size\":10,\"blocks\":-1,\"median\":0,\"p90\":0}]", false, 1,
                 NULL,
                 "budgetctl: malformed reply from tokenbudgetd: classes[0].blocks[0].blocks is missing or "
                 "not a "
                 "non-negative integer\n"},
                {"class:bad", "\"blocks\":[],\"ratioP95\":-1", false, 1, NULL,
                 "budgetctl: malformed reply from tokenbudgetd: classes[0].ratioP95 is negative\n"},
        };

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                char path[300], reply[1200];
                CommandResult res;
                pid_t pid;

                snprintf(path, sizeof(path), "%s/classes-%zu.sock", harness_dir(), i);
                fake_classes_reply(reply, sizeof(reply), rows[i].name, rows[i].fields, rows[i].truncated);
                pid = fake_daemon_start(path, reply);
                budgetctl_run(path, NULL, (const char *const[]){"--no-legend", "classes", NULL}, &res);
                ck_assert_msg(res.status == rows[i].status && strcmp(res.err, rows[i].err) == 0 &&
                                      (!rows[i].out || strcmp(res.out, rows[i].out) == 0),
                              "row %zu: exit %d (want %d), stdout\n%s\nwant\n%s\nstderr\n%s\nwant\n%s", i,
                              res.status, rows[i].status, res.out, rows[i].out ? rows[i].out : "(any)",
                              res.err, rows[i].err);
                command_result_done(&res);
                ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
        }
        {
                char path[300];
                CommandResult res;
                pid_t pid;

                snprintf(path, sizeof(path), "%s/classes-old.sock", harness_dir());
                pid = fake_daemon_start(path,
                                        "{\"error\":\"org.varlink.service.MethodNotFound\","
                                        "\"parameters\":{\"method\":\"io.tokenbudget.admin.Classes\"}}");
                budgetctl(path, "classes", NULL, &res);
                ck_assert_msg(res.status == 1 &&
                                      strcmp(res.err, "budgetctl: this tokenbudgetd is too old for "
                                                      "'classes' (it has no "
                                                      "io.tokenbudget.admin.Classes)\n") == 0,
                              "an old daemon and classes: exit %d, stderr:\n%s", res.status, res.err);
                command_result_done(&res);
                ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
        }
}
END_TEST

/* A child of uid OTHER_UID that teaches class "theirs" 3 samples and exits 0. */
static pid_t classes_other_teach(const TestDaemon *d) {
        pid_t pid = fork();

        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                tb_request_params p = {.estimate = 100, .task_class = "theirs"};
                tb_client *c = NULL;

                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                if (setgroups(0, NULL) < 0 || setgid(OTHER_UID) < 0 || setuid(OTHER_UID) < 0 ||
                    tb_client_open(d->socket_path, &c, NULL) < 0)
                        _exit(1);
                for (int i = 0; i < 3; i++) {
                        tb_grant g;

                        if (tb_request(c, &p, &g) < 0 ||
                            tb_release(c,
                                       &(tb_release_params){.allocation = g.allocation, .output_tokens = 7},
                                       NULL) < 0)
                                _exit(2);
                }
                _exit(0);
        }
        return pid;
}

/*
 * A user who is no admin (uid 65534 through setpriv) sees only their own
 * classes, by default and with --user of their own uid, and is refused
 * another uid's; root sees both and picks one with --user.
 */
START_TEST(test_budgetctl_classes_non_admin) {
        tb_request_params mine = {.estimate = 100, .task_class = "mine"};
        const char *denied = "budgetctl: permission denied: other users' classes are for " ADMINS_TEXT "\n";
        json_object *o, *list;
        TestDaemon *d;
        tb_client *c;
        CommandResult res;
        int status;
        pid_t pid;

        if (!tb_check_need_root("budgetctl classes as uid 65534 (setpriv)"))
                return;
        if (access(SETPRIV, X_OK) != 0) {
                tb_check_skip("budgetctl classes as uid 65534: no %s (util-linux)", SETPRIV);
                return;
        }
        d = harness_daemon_start("");
        c = harness_client(d);
        classes_teach(c, &mine, 3, 0, classes_flat);
        pid = classes_other_teach(d);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child of uid %d failed: %d",
                      OTHER_UID, status);

        budgetctl_as_other(d->socket_path, false, (const char *const[]){"--json", "classes", NULL}, &res);
        if (res.status == 126 || res.status == 127) {
                tb_check_skip("uid 65534 cannot run %s (is the build directory private?): %s",
                              harness_env("BUDGETCTL"), res.err);
                command_result_done(&res);
                tb_client_close(c);
                harness_daemon_stop(d);
                return;
        }
        o = parse_json_output(&res, "classes --json as uid 65534");
        list = classes_list(o, "classes --json as uid 65534");
        ck_assert_msg(json_object_array_length(list) == 1 &&
                              classes_find(o, OTHER_UID, "class:theirs", "classes"),
                      "classes --json as uid 65534: expected class:theirs of uid 65534 only: %s", res.out);
        json_object_put(o);
        command_result_done(&res);

        budgetctl_as_other(d->socket_path, false, (const char *const[]){"classes", NULL}, &res);
        ck_assert_msg(res.status == 0 && strstr(res.out, " class:theirs ") && !strstr(res.out, "class:mine"),
                      "classes as uid 65534: exit %d:\n%s%s", res.status, res.out, res.err);
        command_result_done(&res);
        budgetctl_as_other(d->socket_path, false,
                           (const char *const[]){"--no-legend", "classes", "--user", "65534", NULL}, &res);
        ck_assert_msg(res.status == 0 && lines(res.out) == 1 && strstr(res.out, " class:theirs "),
                      "classes --user 65534 as uid 65534: exit %d:\n%s%s", res.status, res.out, res.err);
        command_result_done(&res);
        budgetctl_as_other(d->socket_path, false, (const char *const[]){"classes", "--user", "0", NULL},
                           &res);
        ck_assert_msg(res.status == 1 && strcmp(res.err, denied) == 0,
                      "classes --user 0 as uid 65534: exit %d, stderr\n%s\nexpected exit 1 and\n%s",
                      res.status, res.err, denied);
        command_result_done(&res);

        /* Root: both uids, and one of them with --user. */
        budgetctl(d->socket_path, "--no-legend", "classes", &res);
        ck_assert_msg(res.status == 0 && lines(res.out) == 2 && strstr(res.out, " class:theirs ") &&
                              strstr(res.out, " class:mine "),
                      "classes as root: exit %d:\n%s%s", res.status, res.out, res.err);
        command_result_done(&res);
        budgetctl_run(d->socket_path, NULL,
                      (const char *const[]){"--json", "classes", "--user", "65534", NULL}, &res);
        o = parse_json_output(&res, "classes --user 65534 as root");
        ck_assert_msg(json_object_array_length(classes_list(o, "classes")) == 1 &&
                              classes_find(o, OTHER_UID, "class:theirs", "classes"),
                      "classes --user 65534 as root: expected class:theirs only: %s", res.out);
        json_object_put(o);
        command_result_done(&res);

        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* ---- budgetctl estimate and io.tokenbudget.admin.Estimate ---- */

/* The estimate tests teach a class by the thousand in a few seconds: no
 * window or in-flight limit of the machine or the process stops them. */
#define ESTIMATE_UNLIMITED                                                                                  \
        "global = { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; max_tokens_in_flight "  \
        "= "                                                                                                \
        "0; };\nprocess = { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; "               \
        "max_tokens_in_flight = 0; };\n"
/* The price table of the estimate tests. */
#define ESTIMATE_PRICES                                                                                     \
        ESTIMATE_UNLIMITED                                                                                  \
        "prices = { currency = \"USD\"; models = ( { model = \"gpt-4o\"; input_per_million = 2.5; "         \
        "output_per_million = 10.0; } ); };\n"

/* Output tokens 100 to 700, spread by a hash of i: a stationary class with
 * a CV of about 0.43 (uniform), the same on every run. */
static uint64_t estimate_spread(int i) {
        uint32_t x = (uint32_t)i * 2654435761u;

        x ^= x >> 15;
        return 100 + x % 601;
}

/* One call of Estimate with params (JSON members), the whole reply. */
static json_object *estimate_call(RawConn *r, const char *params) {
        return harness_callf(r, "{\"method\":\"io.tokenbudget.admin.Estimate\",\"parameters\":{%s}}",
                             params);
}

/* Estimate's reply parameters; fails unless it is a reply (no error). */
static json_object *estimate_ok(RawConn *r, const char *params, json_object **ret_reply) {
        json_object *reply = estimate_call(r, params);

        ck_assert_msg(!reply_error(reply), "Estimate {%s}: %s", params, json_object_to_json_string(reply));
        *ret_reply = reply;
        return reply_parameters(reply);
}

/* Estimate fails with error (and, when field, the parameter it names). */
static void estimate_refused(RawConn *r, const char *params, const char *error, const char *field) {
        json_object *reply = estimate_call(r, params);
        const char *e = reply_error(reply);

        ck_assert_msg(e && strcmp(e, error) == 0 &&
                              (!field ||
                               strcmp(json_str(reply_parameters(reply), "parameter", "error"), field) == 0),
                      "Estimate {%s}: expected %s %s: %s", params, error, field ? field : "",
                      json_object_to_json_string(reply));
        json_object_put(reply);
}

static json_object *estimate_member(json_object *o, const char *key) {
        json_object *v = NULL;

        return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

/* The interval of an Estimate reply is sound: the expectation inside it,
 * the input part the same at both ends, coverage 0.9, from at least 10
 * blocks of block_size, scaled as said. Returns its width / expected output. */
static double estimate_check_interval(json_object *p, int64_t block_size, bool scaled, const char *what) {
        json_object *iv = estimate_member(p, "interval");
        int64_t exp, exp_out, low, high, out_low, out_high;

        ck_assert_msg(iv && !estimate_member(p, "noInterval"), "%s: expected an interval (only): %s", what,
                      json_object_to_json_string(p));
        exp = json_int(p, "expected", what);
        exp_out = json_int(p, "expectedOutput", what);
        low = json_int(iv, "low", what);
        high = json_int(iv, "high", what);
        out_low = json_int(iv, "outputLow", what);
        out_high = json_int(iv, "outputHigh", what);
        ck_assert_msg(low <= exp && exp <= high && out_low <= exp_out && exp_out <= out_high && low < high,
                      "%s: the expectation is outside its interval: %s", what,
                      json_object_to_json_string(p));
        /* The input part (prompts: known or learned) is added to both ends unchanged (±1: rounding). */
        ck_assert_msg(llabs((low - out_low) - (exp - exp_out)) <= 1 &&
                              llabs((high - out_high) - (exp - exp_out)) <= 1,
                      "%s: the input part differs between the ends: %s", what,
                      json_object_to_json_string(p));
        ck_assert_msg(json_object_get_double(estimate_member(iv, "coverage")) == 0.9 &&
                              json_int(iv, "blockSize", what) == block_size &&
                              json_int(iv, "blocks", what) >= 10 &&
                              json_object_get_boolean(estimate_member(iv, "scaled")) == scaled,
                      "%s: expected coverage 0.9, at least 10 blocks of %lld, scaled %d: %s", what,
                      (long long)block_size, scaled, json_object_to_json_string(iv));
        return (double)(out_high - out_low) / (double)exp_out;
}

/*
 * Estimate against what the daemon learned: unknown classes, a young class
 * (the expectation is tasks x the prediction Classes and a Request show, no
 * interval, and why), the defaults, nothing learned from asking; after
 * 1,125 releases an interval for 1, 10, 100 and 5,000 tasks calibrated on
 * blocks of 1, 10 and 100 (5,000: blocks of 100, not narrowed), narrower in
 * proportion for 100 tasks than for one; bad parameters named.
 */
START_TEST(test_estimate_method) {
        TestDaemon *d =
                harness_daemon_start_with(ESTIMATE_UNLIMITED, &(HarnessDaemonOptions){.state_dir = ""});
        tb_client *c = harness_client(d);
        tb_request_params review = {.estimate = 1000, .task_class = "review", .prompt_tokens = 100};
        tb_request_params agent = {.estimate = 1000, .agent = "coder"};
        RawConn *r = harness_open_working(d, "estimate");
        json_object *reply, *p, *classes, *cls, *task;
        double width_1, width_100;
        char long_name[300];

        reply = estimate_call(r, "\"class\":\"class:review\",\"tasks\":3");
        ck_assert_msg(reply_error(reply) &&
                              strcmp(reply_error(reply), "io.tokenbudget.admin.UnknownClass") == 0 &&
                              strcmp(json_str(reply_parameters(reply), "class", "UnknownClass"),
                                     "class:review") == 0,
                      "Estimate of a class never seen: %s", json_object_to_json_string(reply));
        json_object_put(reply);

        /* Young: 25 samples, 5 of them predicted (min_samples 20): no interval yet. */
        classes_teach(c, &review, 25, 100, estimate_spread);
        classes = harness_admin(c, "Classes");
        cls = classes_find(classes, 0, "class:review", "Classes");
        ck_assert_ptr_nonnull(cls);
        p = estimate_ok(r, "\"class\":\"class:review\",\"tasks\":100", &reply);
        task = estimate_member(p, "perTask");
        ck_assert_msg(
                json_int(p, "uid", "Estimate") == 0 && json_int(p, "tasks", "Estimate") == 100 &&
                        strcmp(json_str(p, "class", "Estimate"), "class:review") == 0 &&
                        json_int(p, "samples", "Estimate") == 25 &&
                        json_int(task, "predicted", "perTask") == json_int(cls, "predicted", "Classes") &&
                        json_int(task, "predictedOutput", "perTask") ==
                                json_int(cls, "predictedOutput", "Classes") &&
                        json_int(p, "expected", "Estimate") == 100 * json_int(cls, "predicted", "Classes") &&
                        json_int(p, "expectedOutput", "Estimate") ==
                                100 * json_int(cls, "predictedOutput", "Classes") &&
                        !estimate_member(p, "promptTokens") && !estimate_member(p, "cost") &&
                        !estimate_member(p, "noCost") && !estimate_member(p, "interval"),
                "Estimate of 100 tasks is not 100 x what Classes predicts: %s\nClasses: %s",
                json_object_to_json_string(p), json_object_to_json_string(cls));
        ck_assert_str_eq(json_str(p, "noInterval", "Estimate"),
                         "fewer than 10 predictions checked against their allocations yet (5)");
        json_object_put(reply);
        json_object_put(classes);

        /* With a prompt size: what a Request of it is answered, tasks times. */
        p = estimate_ok(r, "\"class\":\"class:review\",\"tasks\":7,\"promptTokens\":100", &reply);
        {
                json_object *grant = harness_callf(
                                    r, "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":"
                                       "{\"estimate\":1000,\"class\":\"review\",\"promptTokens\":100}}"),
                            *gp = reply_parameters(grant);

                task = estimate_member(p, "perTask");
                ck_assert_msg(json_int(task, "predicted", "perTask") ==
                                              json_int(gp, "predicted", "Request") &&
                                      json_int(task, "predictedOutput", "perTask") ==
                                              json_int(gp, "predictedOutput", "Request") &&
                                      json_int(p, "expected", "Estimate") ==
                                              7 * json_int(gp, "predicted", "Request") &&
                                      json_int(p, "promptTokens", "Estimate") == 100,
                              "Estimate with promptTokens 100 is not 7 x the Request's prediction: "
                              "%s\nRequest: %s",
                              json_object_to_json_string(p), json_object_to_json_string(grant));
                json_object_put(harness_callf(
                        r,
                        "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{"
                        "\"allocation\":\"%s\",\"inputTokens\":100,\"outputTokens\":%llu}}",
                        json_str(gp, "allocation", "Request"), (unsigned long long)estimate_spread(25)));
                json_object_put(grant);
        }
        json_object_put(reply);

        /* The default is one task; asking teaches nothing. */
        for (int i = 0; i < 3; i++) {
                p = estimate_ok(r, "\"class\":\"class:review\"", &reply);
                ck_assert_msg(
                        json_int(p, "tasks", "Estimate") == 1 && json_int(p, "samples", "Estimate") == 26 &&
                                json_int(p, "expected", "Estimate") ==
                                        json_int(estimate_member(p, "perTask"), "predicted", "perTask"),
                        "Estimate without tasks: %s", json_object_to_json_string(p));
                json_object_put(reply);
        }

        /* Grown: 1,125 releases; blocks of 100 have 10 ratios from 1,020 on. */
        classes_teach(c, &review, 1099, 100, estimate_spread);
        p = estimate_ok(r, "\"class\":\"class:review\",\"tasks\":1", &reply);
        width_1 = estimate_check_interval(p, 1, false, "one task");
        json_object_put(reply);
        p = estimate_ok(r, "\"class\":\"class:review\",\"tasks\":10", &reply);
        estimate_check_interval(p, 10, false, "10 tasks");
        json_object_put(reply);
        p = estimate_ok(r, "\"class\":\"class:review\",\"tasks\":100,\"promptTokens\":100", &reply);
        width_100 = estimate_check_interval(p, 100, false, "100 tasks");
        json_object_put(reply);
        p = estimate_ok(r, "\"class\":\"class:review\",\"tasks\":5000", &reply);
        estimate_check_interval(p, 100, true, "5000 tasks");
        json_object_put(reply);
        /* Block totals spread far less than single allocations (uniform outputs: about 1.35 against 0.14).
         */
        ck_assert_msg(width_100 < width_1 / 3,
                      "the interval of 100 tasks (%.3f of the expectation) is not "
                      "narrower than one task's (%.3f)",
                      width_100, width_1);

        /* An agent's class, and the names as Classes writes them. */
        classes_teach(c, &agent, 3, 10, classes_flat);
        p = estimate_ok(r, "\"class\":\"agent:coder\",\"tasks\":2", &reply);
        ck_assert_msg(json_int(p, "samples", "Estimate") == 3 &&
                              json_int(p, "expected", "Estimate") == 2 * 210,
                      "Estimate of agent:coder: %s", json_object_to_json_string(p));
        json_object_put(reply);
        estimate_refused(r, "\"class\":\"coder\"", "io.tokenbudget.admin.UnknownClass", NULL);
        estimate_refused(r, "\"class\":\"review\"", "io.tokenbudget.admin.UnknownClass", NULL);
        estimate_refused(r, "\"class\":\"class:coder\"", "io.tokenbudget.admin.UnknownClass", NULL);

        /* Bad parameters, each named. */
        memset(long_name, 'x', 256);
        memcpy(long_name, "class:", 6);
        long_name[256] = '\0';
        {
                static const struct {
                        const char *params, *field;
                } bad[] = {
                        {"\"class\":\"class:review\",\"tasks\":0", "tasks"},
                        {"\"class\":\"class:review\",\"tasks\":1000000001", "tasks"},
                        {"\"class\":\"class:review\",\"tasks\":-1", "tasks"},
                        {"\"class\":\"class:review\",\"tasks\":1.5", "tasks"},
                        {"\"class\":\"\"", "class"},
                        {"\"tasks\":3", "class"},
                        {"\"class\":7", "class"},
                        {"\"class\":\"class:review\",\"model\":\"\"", "model"},
                        {"\"class\":\"class:review\",\"uid\":4294967295", "uid"},
                        {"\"class\":\"class:review\",\"promptTokens\":1000000000000", "promptTokens"},
                        {"\"class\":\"class:review\",\"coverage\":0.5", "coverage"},
                };
                char params[400];

                for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                        estimate_refused(r, bad[i].params, "org.varlink.service.InvalidParameter",
                                         bad[i].field);
                snprintf(params, sizeof(params), "\"class\":\"%s\"", long_name);
                estimate_refused(r, params, "org.varlink.service.InvalidParameter", "class");
                long_name[255] = '\0';
                snprintf(params, sizeof(params), "\"class\":\"%s\"", long_name);
                estimate_refused(r, params, "io.tokenbudget.admin.UnknownClass", NULL);
        }
        /* Largest project: the integers saturate, nothing overflows. */
        p = estimate_ok(r, "\"class\":\"class:review\",\"tasks\":1000000000,\"promptTokens\":999999999999",
                        &reply);
        ck_assert_msg(json_int(p, "expected", "Estimate") > 0 &&
                              json_int(estimate_member(p, "interval"), "high", "interval") > 0,
                      "the largest project: %s", json_object_to_json_string(p));
        json_object_put(reply);

        raw_close(r);
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/*
 * What Estimate answers survives a restart on the same state directory to
 * the token: the prediction and the interval's blocks (saved at the stop)
 * come back as they were.
 */
START_TEST(test_estimate_restart) {
        static const char *const calls[] = {
                "\"class\":\"class:kept\"",
                "\"class\":\"class:kept\",\"tasks\":10",
                "\"class\":\"class:kept\",\"tasks\":100,\"promptTokens\":200",
                "\"class\":\"class:kept\",\"tasks\":5000",
        };
        tb_request_params kept = {.estimate = 1000, .task_class = "kept", .prompt_tokens = 200};
        json_object *before[sizeof(calls) / sizeof(calls[0])], *reply;
        HarnessDaemonOptions o = {};
        char *state;
        TestDaemon *d;
        tb_client *c;
        RawConn *r;

        ck_assert_int_ge(asprintf(&state, "%s/estimate-restart-%d", harness_dir(), (int)getpid()), 0);
        ck_assert_int_eq(mkdir(state, 0700), 0);
        o.state_dir = state;
        d = harness_daemon_start_with(ESTIMATE_UNLIMITED, &o);
        c = harness_client(d);
        classes_teach(c, &kept, 1125, 200, estimate_spread);
        r = harness_open_working(d, "before the restart");
        for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
                (void)estimate_ok(r, calls[i], &before[i]);
                ck_assert_msg(
                        i == 0 || json_object_object_get_ex(reply_parameters(before[i]), "interval", NULL),
                        "Estimate {%s}: no interval to compare: %s", calls[i],
                        json_object_to_json_string(before[i]));
        }
        raw_close(r);
        tb_client_close(c);
        harness_daemon_stop(d);

        d = harness_daemon_start_with(ESTIMATE_UNLIMITED, &o);
        r = harness_open_working(d, "after the restart");
        for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
                (void)estimate_ok(r, calls[i], &reply);
                ck_assert_msg(json_object_equal(reply, before[i]),
                              "Estimate {%s} after the restart:\n%s\nbefore:\n%s", calls[i],
                              json_object_to_json_string(reply), json_object_to_json_string(before[i]));
                json_object_put(reply);
                json_object_put(before[i]);
        }
        raw_close(r);
        harness_daemon_stop(d);
        free(state);
}
END_TEST

/* The cost of the expectation and of an interval's ends, per million: input x 2.5 + output x 10. */
static double estimate_price(int64_t total, int64_t output) {
        return (double)(total - output) * 2.5 / 1e6 + (double)output * 10.0 / 1e6;
}

/*
 * The cost of a project at the configuration's prices: with and without an
 * interval, a model not priced (said, not an error), no model (no cost), and
 * a reload's new prices taken at once.
 */
START_TEST(test_estimate_cost) {
        TestDaemon *d = harness_daemon_start_with(ESTIMATE_PRICES, &(HarnessDaemonOptions){.state_dir = ""});
        tb_client *c = harness_client(d);
        tb_request_params review = {.estimate = 1000, .task_class = "review", .prompt_tokens = 300};
        RawConn *r = harness_open_working(d, "estimate");
        json_object *reply, *p, *cost, *iv;
        FILE *f;

        classes_teach(c, &review, 25, 300, estimate_spread);
        p = estimate_ok(r,
                        "\"class\":\"class:review\",\"tasks\":100,\"promptTokens\":300,\"model\":\"gpt-4o\"",
                        &reply);
        cost = estimate_member(p, "cost");
        ck_assert_msg(cost && !estimate_member(p, "noCost") &&
                              strcmp(json_str(cost, "model", "cost"), "gpt-4o") == 0 &&
                              strcmp(json_str(cost, "currency", "cost"), "USD") == 0 &&
                              json_object_get_double(estimate_member(cost, "inputPerMillion")) == 2.5 &&
                              json_object_get_double(estimate_member(cost, "outputPerMillion")) == 10.0 &&
                              !estimate_member(cost, "low") && !estimate_member(cost, "high"),
                      "the cost of a young class: %s", json_object_to_json_string(p));
        ck_assert_double_eq_tol(json_object_get_double(estimate_member(cost, "expected")),
                                estimate_price(json_int(p, "expected", "Estimate"),
                                               json_int(p, "expectedOutput", "Estimate")),
                                1e-9);
        /* Floats stay floats on the wire (the IDL says float): 10.0, not 10. */
        ck_assert_msg(json_object_is_type(estimate_member(cost, "outputPerMillion"), json_type_double),
                      "outputPerMillion is not a float: %s", json_object_to_json_string(cost));
        json_object_put(reply);

        classes_teach(c, &review, 200, 300, estimate_spread);
        p = estimate_ok(r,
                        "\"class\":\"class:review\",\"tasks\":100,\"promptTokens\":300,\"model\":\"gpt-4o\"",
                        &reply);
        cost = estimate_member(p, "cost");
        iv = estimate_member(p, "interval");
        ck_assert_msg(cost && iv, "no cost or no interval: %s", json_object_to_json_string(p));
        ck_assert_double_eq_tol(json_object_get_double(estimate_member(cost, "expected")),
                                estimate_price(json_int(p, "expected", "Estimate"),
                                               json_int(p, "expectedOutput", "Estimate")),
                                1e-9);
        /* The ends from the unrounded interval: a token's worth (10 / 10^6) apart at most. */
        ck_assert_double_eq_tol(
                json_object_get_double(estimate_member(cost, "low")),
                estimate_price(json_int(iv, "low", "interval"), json_int(iv, "outputLow", "interval")),
                2e-5);
        ck_assert_double_eq_tol(
                json_object_get_double(estimate_member(cost, "high")),
                estimate_price(json_int(iv, "high", "interval"), json_int(iv, "outputHigh", "interval")),
                2e-5);
        json_object_put(reply);

        p = estimate_ok(r, "\"class\":\"class:review\",\"model\":\"gpt-5\"", &reply);
        ck_assert_msg(!estimate_member(p, "cost") && strcmp(json_str(p, "noCost", "Estimate"),
                                                            "no price configured for model 'gpt-5'") == 0,
                      "a model without a price: %s", json_object_to_json_string(p));
        json_object_put(reply);
        p = estimate_ok(r, "\"class\":\"class:review\"", &reply);
        ck_assert_msg(!estimate_member(p, "cost") && !estimate_member(p, "noCost"), "no model, a cost: %s",
                      json_object_to_json_string(p));
        json_object_put(reply);

        /* A reload's prices apply to the next Estimate; no currency is "". */
        f = fopen(d->config_path, "w");
        ck_assert_ptr_nonnull(f);
        fputs(ESTIMATE_UNLIMITED
              "prices = { models = ( { model = \"gpt-5\"; input_per_million = 1.0; output_per_million = "
              "4.0; } ); };\n",
              f);
        ck_assert_int_eq(fclose(f), 0);
        json_object_put(harness_callf(r, "{\"method\":\"io.tokenbudget.admin.Reload\"}"));
        p = estimate_ok(r, "\"class\":\"class:review\",\"model\":\"gpt-5\"", &reply);
        cost = estimate_member(p, "cost");
        ck_assert_msg(cost && strcmp(json_str(cost, "currency", "cost"), "") == 0 &&
                              json_object_get_double(estimate_member(cost, "outputPerMillion")) == 4.0,
                      "after the reload: %s", json_object_to_json_string(p));
        json_object_put(reply);
        p = estimate_ok(r, "\"class\":\"class:review\",\"model\":\"gpt-4o\"", &reply);
        ck_assert_msg(!estimate_member(p, "cost") && estimate_member(p, "noCost"),
                      "gpt-4o is still priced after the reload: %s", json_object_to_json_string(p));
        json_object_put(reply);

        raw_close(r);
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* n with a comma every three digits, as budgetctl estimate prints counts. */
static const char *estimate_count(char buf[static 32], int64_t n) {
        char digits[24];
        int len = snprintf(digits, sizeof(digits), "%lld", (long long)n);
        size_t o = 0;

        for (int i = 0; i < len; i++) {
                if (i > 0 && (len - i) % 3 == 0)
                        buf[o++] = ',';
                buf[o++] = digits[i];
        }
        buf[o] = '\0';
        return buf;
}

/* Money of at least a cent, to the cent (as budgetctl rounds: millionths first, then the cent). */
static const char *estimate_money(char buf[static 48], double v) {
        long long micros = (long long)(v * 1e6 + 0.5), cents = (micros + 5000) / 10000;

        ck_assert_msg(micros >= 10000, "a cost below a cent (%g): the test wants more", v);
        snprintf(buf, 48, "%lld.%02lld", cents / 100, cents % 100);
        return buf;
}

/* What budgetctl estimate should print for an Estimate reply p with an
 * interval of blocks and a cost, from the reply alone. */
static void estimate_expected_text(json_object *p, char *buf, size_t size) {
        json_object *t = estimate_member(p, "perTask"), *iv = estimate_member(p, "interval"),
                    *cost = estimate_member(p, "cost");
        char a[32], b[32], c2[32], e[32], f[32], g[32], h[32], m[3][48];
        int64_t prompt = estimate_member(p, "promptTokens") ? json_int(p, "promptTokens", "Estimate") : 0;
        int n = 0;

        ck_assert_msg(iv && cost && json_int(iv, "blockSize", "interval") > 1,
                      "the reply has no interval of blocks and cost: %s", json_object_to_json_string(p));
        n += snprintf(buf + n, size - n, "class:review (uid 0), %s samples\n",
                      estimate_count(a, json_int(p, "samples", "Estimate")));
        if (prompt)
                n += snprintf(buf + n, size - n, "one task with a %s-token prompt",
                              estimate_count(a, prompt));
        else
                n += snprintf(buf + n, size - n, "one task");
        n += snprintf(buf + n, size - n, ": %s tokens (output %s)\n",
                      estimate_count(b, json_int(t, "predicted", "t")),
                      estimate_count(c2, json_int(t, "predictedOutput", "t")));
        n += snprintf(
                buf + n, size - n,
                "%s tasks: %s tokens (output %s), 90%% interval %s .. %s (from %s blocks of %lld%s%s%s)\n",
                estimate_count(a, json_int(p, "tasks", "Estimate")),
                estimate_count(b, json_int(p, "expected", "Estimate")),
                estimate_count(c2, json_int(p, "expectedOutput", "Estimate")),
                estimate_count(e, json_int(iv, "low", "interval")),
                estimate_count(f, json_int(iv, "high", "interval")),
                estimate_count(g, json_int(iv, "blocks", "interval")),
                (long long)json_int(iv, "blockSize", "interval"),
                json_object_get_boolean(estimate_member(iv, "scaled")) ? ", not narrowed for " : "",
                json_object_get_boolean(estimate_member(iv, "scaled"))
                        ? estimate_count(h, json_int(p, "tasks", "Estimate"))
                        : "",
                json_object_get_boolean(estimate_member(iv, "scaled")) ? " tasks" : "");
        snprintf(buf + n, size - n, "cost: %s USD (%s .. %s) at gpt-4o prices\n",
                 estimate_money(m[0], json_object_get_double(estimate_member(cost, "expected"))),
                 estimate_money(m[1], json_object_get_double(estimate_member(cost, "low"))),
                 estimate_money(m[2], json_object_get_double(estimate_member(cost, "high"))));
}

/*
 * budgetctl estimate against the real daemon: its text is what the daemon's
 * Estimate reply says (every number computed here from the reply), a bare
 * class name is a declared class, --json is the reply field for field, a
 * young class says why it has no interval, a model without a price is said;
 * an unknown class, --user and every bad option have their message.
 */
START_TEST(test_budgetctl_estimate) {
        TestDaemon *d = harness_daemon_start_with(ESTIMATE_PRICES, &(HarnessDaemonOptions){.state_dir = ""});
        tb_client *c = harness_client(d);
        tb_request_params review = {.estimate = 2000, .task_class = "review", .prompt_tokens = 400};
        RawConn *r = harness_open_working(d, "estimate");
        json_object *reply, *p, *printed;
        char want[2048];
        CommandResult res;

        classes_teach(c, &review, 22, 400, estimate_spread);
        /* Young: no interval yet, and why. */
        p = estimate_ok(r, "\"class\":\"class:review\",\"tasks\":3,\"promptTokens\":400", &reply);
        {
                char n[4][32];

                snprintf(
                        want, sizeof(want),
                        "class:review (uid 0), 22 samples\none task with a 400-token prompt: %s tokens "
                        "(output %s)\n"
                        "3 tasks: %s tokens (output %s); no interval yet: fewer than 10 predictions checked "
                        "against their allocations yet (2)\n",
                        estimate_count(n[0],
                                       json_int(estimate_member(p, "perTask"), "predicted", "perTask")),
                        estimate_count(
                                n[1], json_int(estimate_member(p, "perTask"), "predictedOutput", "perTask")),
                        estimate_count(n[2], json_int(p, "expected", "Estimate")),
                        estimate_count(n[3], json_int(p, "expectedOutput", "Estimate")));
        }
        json_object_put(reply);
        expect_output(d,
                      (const char *const[]){"estimate", "--class", "review", "--tasks", "3",
                                            "--prompt-tokens", "400", NULL},
                      want, "estimate of a young class");

        classes_teach(c, &review, 1100, 400, estimate_spread);
        p = estimate_ok(r,
                        "\"class\":\"class:review\",\"tasks\":250,\"promptTokens\":400,\"model\":\"gpt-4o\"",
                        &reply);
        estimate_expected_text(p, want, sizeof(want));
        expect_output(d,
                      (const char *const[]){"estimate", "--class", "review", "--tasks", "250",
                                            "--prompt-tokens", "400", "--model", "gpt-4o", NULL},
                      want, "estimate --class review");
        expect_output(d,
                      (const char *const[]){"--prompt-tokens", "400", "estimate", "--class", "class:review",
                                            "--model", "gpt-4o", "--tasks", "250", "--user", "root", NULL},
                      want, "estimate --class class:review --user root");
        budgetctl_run(d->socket_path, NULL,
                      (const char *const[]){"--json", "estimate", "--class", "review", "--tasks", "250",
                                            "--prompt-tokens", "400", "--model", "gpt-4o", NULL},
                      &res);
        printed = parse_json_output(&res, "estimate --json");
        ck_assert_msg(json_object_equal(printed, p), "estimate --json is not the daemon's reply:\n%s\n%s",
                      res.out, json_object_to_json_string(p));
        json_object_put(printed);
        command_result_done(&res);
        json_object_put(reply);

        /* One task: the interval on its line; a model without a price. */
        budgetctl_run(d->socket_path, NULL,
                      (const char *const[]){"estimate", "--class", "review", "--model", "gpt-5", NULL},
                      &res);
        ck_assert_msg(res.status == 0 && lines(res.out) == 3 && strstr(res.out, "\none task: ") &&
                              strstr(res.out, "), 90% interval ") &&
                              strstr(res.out, " single predictions)\n") &&
                              strstr(res.out, "\ncost: no price configured for model 'gpt-5'\n"),
                      "estimate of one task with gpt-5: exit %d:\n%s%s", res.status, res.out, res.err);
        command_result_done(&res);

        expect_error(d, (const char *const[]){"estimate", "--class", "nothing", NULL}, 1,
                     "budgetctl: no class 'class:nothing' learned for you (nothing released in it yet, or "
                     "forgotten); 'budgetctl classes' lists the classes\n",
                     "an unknown class");
        expect_error(d, (const char *const[]){"estimate", "--class", "agent:nobody", "--user", "0", NULL}, 1,
                     "budgetctl: no class 'agent:nobody' learned for user 0 (nothing released in it yet, or "
                     "forgotten); 'budgetctl classes' lists the classes\n",
                     "an unknown agent class of --user 0");
        {
                static const struct {
                        const char *args[8];
                        const char *err;
                } usage[] = {
                        {{"estimate"},
                         "budgetctl: 'estimate' needs --class CLASS (a class 'budgetctl classes' lists)\n"},
                        {{"estimate", "review"}, "budgetctl: 'estimate' takes no arguments\n"},
                        {{"estimate", "--class", ""}, "budgetctl: --class needs a non-empty name\n"},
                        {{"estimate", "--class", "review", "--tasks", "0"},
                         "budgetctl: invalid --tasks '0': expected an integer from 1 to 1000000000\n"},
                        {{"estimate", "--class", "review", "--tasks", "1000000001"},
                         "budgetctl: invalid --tasks '1000000001': expected an integer from 1 to "
                         "1000000000\n"},
                        {{"estimate", "--class", "review", "--tasks", "ten"},
                         "budgetctl: invalid --tasks 'ten': expected an integer from 1 to 1000000000\n"},
                        {{"estimate", "--class", "review", "--prompt-tokens", "0"},
                         "budgetctl: invalid --prompt-tokens '0': expected an integer from 1 to "
                         "999999999999\n"},
                        {{"estimate", "--class", "review", "--user", "no-such-user-tb"},
                         "budgetctl: unknown user 'no-such-user-tb' (--user takes a user name or a uid)\n"},
                        {{"estimate", "--class", "review", "--agent", "x"},
                         "budgetctl: --agent applies only to 'request'\n"},
                        {{"status", "--tasks", "3"}, "budgetctl: --tasks applies only to 'estimate'\n"},
                };

                for (size_t i = 0; i < sizeof(usage) / sizeof(usage[0]); i++)
                        expect_error(d, usage[i].args, 2, usage[i].err, usage[i].err);
        }
        raw_close(r);
        tb_client_close(c);
        harness_daemon_stop(d);
}
END_TEST

/* An Estimate reply of class:fake with 250 tasks, whose fields after samples are fields. */
static void fake_estimate_reply(char *buf, size_t size, const char *fields) {
        snprintf(
                buf, size,
                "{\"parameters\":{\"uid\":1000,\"class\":\"class:fake\",\"tasks\":250,\"samples\":1234,%s}}",
                fields);
}

#define FAKE_TASK                                                                                           \
        "\"perTask\":{\"predicted\":812,\"predictedOutput\":412},\"expected\":203000,\"expectedOutput\":"   \
        "103000"
#define FAKE_INTERVAL_FIELDS                                                                                \
        "\"outputLow\":1,\"outputHigh\":2,\"coverage\":0.9,\"blockSize\":100,\"blocks\":37,\"scaled\":"     \
        "false"

/*
 * What budgetctl estimate makes of replies no daemon here sends (a fake
 * daemon answers): money below a cent and in the thousands, no currency, a
 * cost without an interval, malformed fields refused naming the field, and a
 * daemon without Estimate.
 */
START_TEST(test_budgetctl_estimate_wire) {
        static const char head[] =
                "class:fake (uid 1000), 1,234 samples\none task: 812 tokens (output 412)\n";
        static const struct {
                const char *fields;
                int status;
                const char *out, *err; /* out after head (status 0); err exactly */
        } rows[] = {
                {FAKE_TASK
                 ",\"interval\":{\"low\":190000,\"high\":1234567," FAKE_INTERVAL_FIELDS "},"
                 "\"cost\":{\"model\":\"big\",\"currency\":\"EUR\",\"inputPerMillion\":1,"
                 "\"outputPerMillion\":2,\"expected\":1234.5678,\"low\":0.001234,\"high\":99999.999}",
                 0,
                 "250 tasks: 203,000 tokens (output 103,000), 90% interval 190,000 .. 1,234,567 (from 37 "
                 "blocks "
                 "of 100)\ncost: 1,234.57 EUR (0.001234 .. 100,000.00) at big prices\n",
                 ""},
                {FAKE_TASK ",\"noInterval\":\"not yet\",\"cost\":{\"model\":\"m\",\"currency\":\"\","
                           "\"inputPerMillion\":0,\"outputPerMillion\":0,\"expected\":0}",
                 0,
                 "250 tasks: 203,000 tokens (output 103,000); no interval yet: not yet\ncost: 0.00 at m "
                 "prices\n",
                 ""},
                {FAKE_TASK ",\"interval\":{\"low\":5,\"high\":4," FAKE_INTERVAL_FIELDS "}", 1, NULL,
                 "budgetctl: malformed reply from tokenbudgetd: interval.low is below interval.high\n"},
                {FAKE_TASK
                 ",\"interval\":{\"low\":4,\"high\":5,\"outputLow\":1,\"outputHigh\":2,\"coverage\":1.5,"
                 "\"blockSize\":100,\"blocks\":37,\"scaled\":false}",
                 1, NULL,
                 "budgetctl: malformed reply from tokenbudgetd: interval.coverage is not between 0 and 1\n"},
                {FAKE_TASK
                 ",\"cost\":{\"model\":\"m\",\"currency\":\"\",\"inputPerMillion\":0,\"outputPerMillion\":0,"
                 "\"expected\":1,\"low\":0.5}",
                 1, NULL,
                 "budgetctl: malformed reply from tokenbudgetd: cost.high is missing (low is there)\n"},
                {FAKE_TASK
                 ",\"cost\":{\"model\":\"m\",\"currency\":\"\",\"inputPerMillion\":0,\"outputPerMillion\":0,"
                 "\"expected\":-1}",
                 1, NULL, "budgetctl: malformed reply from tokenbudgetd: cost.expected is negative\n"},
                {"\"perTask\":{\"predicted\":812},\"expected\":1,\"expectedOutput\":1", 1, NULL,
                 "budgetctl: malformed reply from tokenbudgetd: perTask.predictedOutput is missing or not a "
                 "non-negative integer\n"},
                {"\"perTask\":[],\"expected\":1,\"expectedOutput\":1", 1, NULL,
                 "budgetctl: malformed reply from tokenbudgetd: perTask is missing or not an object\n"},
        };

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                char path[300], reply[1500], want[1024];
                CommandResult res;
                pid_t pid;

                snprintf(path, sizeof(path), "%s/estimate-%zu.sock", harness_dir(), i);
                fake_estimate_reply(reply, sizeof(reply), rows[i].fields);
                pid = fake_daemon_start(path, reply);
                budgetctl_run(path, NULL, (const char *const[]){"estimate", "--class", "fake", NULL}, &res);
                snprintf(want, sizeof(want), "%s%s", head, rows[i].out ? rows[i].out : "");
                ck_assert_msg(res.status == rows[i].status && strcmp(res.err, rows[i].err) == 0 &&
                                      (!rows[i].out || strcmp(res.out, want) == 0),
                              "row %zu: exit %d (want %d), stdout\n%s\nwant\n%s\nstderr\n%s\nwant\n%s", i,
                              res.status, rows[i].status, res.out, rows[i].out ? want : "(any)", res.err,
                              rows[i].err);
                command_result_done(&res);
                ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
        }
        {
                char path[300];
                CommandResult res;
                pid_t pid;

                snprintf(path, sizeof(path), "%s/estimate-old.sock", harness_dir());
                pid = fake_daemon_start(path,
                                        "{\"error\":\"org.varlink.service.MethodNotFound\","
                                        "\"parameters\":{\"method\":\"io.tokenbudget.admin.Estimate\"}}");
                budgetctl_run(path, NULL, (const char *const[]){"estimate", "--class", "x", NULL}, &res);
                ck_assert_msg(res.status == 1 &&
                                      strcmp(res.err, "budgetctl: this tokenbudgetd is too old for "
                                                      "'estimate' (it has no "
                                                      "io.tokenbudget.admin.Estimate)\n") == 0,
                              "an old daemon and estimate: exit %d, stderr:\n%s", res.status, res.err);
                command_result_done(&res);
                ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
        }
}
END_TEST

/*
 * A user who is no admin (uid 65534) estimates their own classes (the
 * default uid is the caller's), is refused another uid's; root names theirs
 * with uid (or --user) and has no class of that name of its own.
 */
START_TEST(test_estimate_non_admin) {
        const char *denied = "budgetctl: permission denied: other users' classes are for " ADMINS_TEXT "\n";
        json_object *reply, *p;
        TestDaemon *d;
        RawConn *root, *other;
        CommandResult res;
        int fd, status;
        pid_t pid;

        if (!tb_check_need_root("Estimate as uid 65534"))
                return;
        d = harness_daemon_start("");
        pid = classes_other_teach(d);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child of uid %d failed: %d",
                      OTHER_UID, status);
        root = harness_open_working(d, "root");
        ck_assert_int_eq(harness_connect_as(d->socket_path, OTHER_UID, 1, &fd), 1);
        other = calloc(1, sizeof(*other));
        ck_assert_ptr_nonnull(other);
        other->fd = fd;

        p = estimate_ok(other, "\"class\":\"class:theirs\",\"tasks\":2", &reply);
        ck_assert_msg(json_int(p, "uid", "Estimate") == OTHER_UID &&
                              json_int(p, "samples", "Estimate") == 3 &&
                              json_int(p, "expectedOutput", "Estimate") == 14,
                      "Estimate as uid 65534: %s", json_object_to_json_string(p));
        json_object_put(reply);
        p = estimate_ok(other, "\"class\":\"class:theirs\",\"uid\":65534", &reply);
        json_object_put(reply);
        estimate_refused(other, "\"class\":\"class:theirs\",\"uid\":0",
                         "org.varlink.service.PermissionDenied", NULL);
        estimate_refused(other, "\"class\":\"class:nothing\",\"uid\":0",
                         "org.varlink.service.PermissionDenied", NULL);
        p = estimate_ok(root, "\"class\":\"class:theirs\",\"uid\":65534", &reply);
        ck_assert_int_eq(json_int(p, "uid", "Estimate"), OTHER_UID);
        json_object_put(reply);
        estimate_refused(root, "\"class\":\"class:theirs\"", "io.tokenbudget.admin.UnknownClass", NULL);

        if (access(SETPRIV, X_OK) != 0)
                tb_check_skip_part("budgetctl estimate as uid 65534: no %s (util-linux)", SETPRIV);
        else {
                budgetctl_as_other(d->socket_path, false,
                                   (const char *const[]){"estimate", "--class", "theirs", NULL}, &res);
                if (res.status == 126 || res.status == 127)
                        tb_check_skip_part("uid 65534 cannot run %s (is the build directory private?): %s",
                                           harness_env("BUDGETCTL"), res.err);
                else {
                        ck_assert_msg(
                                res.status == 0 &&
                                        strncmp(res.out, "class:theirs (uid 65534), 3 samples\n", 36) == 0,
                                "estimate as uid 65534: exit %d:\n%s%s", res.status, res.out, res.err);
                        command_result_done(&res);
                        budgetctl_as_other(
                                d->socket_path, false,
                                (const char *const[]){"estimate", "--class", "theirs", "--user", "0", NULL},
                                &res);
                        ck_assert_msg(res.status == 1 && strcmp(res.err, denied) == 0,
                                      "estimate --user 0 as uid 65534: exit %d, stderr\n%s\nexpected\n%s",
                                      res.status, res.err, denied);
                }
                command_result_done(&res);
        }
        budgetctl_run(d->socket_path, NULL,
                      (const char *const[]){"estimate", "--class", "theirs", "--user", "65534", NULL}, &res);
        ck_assert_msg(res.status == 0 && strncmp(res.out, "class:theirs (uid 65534), 3 samples\n", 36) == 0,
                      "estimate --user 65534 as root: exit %d:\n%s%s", res.status, res.out, res.err);
        command_result_done(&res);
        raw_close(other);
        raw_close(root);
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
        {"malformed glob in a rule", "rules = (\n  { name = \"r\"; match = { unit = \"[x\"; }; }\n);\n", 2},
        {"unknown per", "rules = ( { name = \"r\";\n per = \"team\"; } );\n", 2},
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

        /* A rule that can never match: a warning on stderr, and still OK. */
        {
                char path[300], expect[512];

                write_config("warn.conf",
                             "rules = (\n  { name = \"ghost\";\n    match = { user = \"no-such-user-tb\"; "
                             "}; }\n);\n",
                             path, sizeof(path));
                run_daemon("--check-config", path, NULL, NULL, &res);
                snprintf(expect, sizeof(expect),
                         "%s:2: warning: rule 'ghost': match.user 'no-such-user-tb' is not a known user; "
                         "the rule "
                         "can never match",
                         path);
                ck_assert_msg(res.status == 0 && strstr(res.err, expect),
                              "--check-config of a rule naming an unknown user: exit %d, expected 0 and "
                              "\"%s\" on stderr: %s%s",
                              res.status, expect, res.out, res.err);
                command_result_done(&res);
        }

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
        ck_assert_msg(tb_report(c,
                                &(tb_report_params){.allocation = g1.allocation,
                                                    .input_tokens = 10,
                                                    .output_tokens = 20},
                                NULL) == 0,
                      "report: %s", tb_client_error(c));
        harness_daemon_stop(d); /* asserts exit status 0 */
        r = tb_report(
                c, &(tb_report_params){.allocation = g1.allocation, .input_tokens = 20, .output_tokens = 20},
                NULL);
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

/* ---- budgetctl set --persistent and the durability line (issue 12) ----------- */

#define PERSIST_CONFIG        "global: { tokens_per_minute = 100000; tokens_per_hour = 1000000; };\n"
#define NOT_PERSISTENT_SET    "budgetctl: 'global' was changed, but not persistently: "
#define NOT_PERSISTENT_FORGET "budgetctl: cannot forget the persistent limits of 'global': "
#define FORGOTTEN             " persistent limits forgotten (the limits it has now last until the next reload)\n"

/* A state directory of the TCase's own, kept across the daemons started on it. */
static char *persist_state_dir(const char *name) {
        char *path;

        ck_assert(asprintf(&path, "%s/%s", harness_dir(), name) > 0);
        ck_assert_msg(mkdir(path, 0700) == 0 || errno == EEXIST, "mkdir %s: %s", path, strerror(errno));
        return path;
}

static TestDaemon *start_on_state(const char *config, const char *state_dir) {
        return harness_daemon_start_with(config, &(HarnessDaemonOptions){.state_dir = state_dir});
}

/* The limit of one window of one scope on a daemon (-1: none), through a connection of its own. */
static int64_t daemon_window_limit(const TestDaemon *d, const char *scope_name, const char *span) {
        tb_client *admin = harness_client(d);
        int64_t limit = status_window_limit(admin, scope_name, span);

        tb_client_close(admin);
        return limit;
}

/* The allocationsLimit of a scope (-1: none). */
static int64_t daemon_allocations_limit(const TestDaemon *d, const char *scope_name) {
        tb_client *admin = harness_client(d);
        json_object *st = harness_admin(admin, "Status"), *scope = status_scope(st, scope_name), *v;
        int64_t limit = -1;

        ck_assert_msg(scope, "no scope %s in Status: %s", scope_name, json_object_to_json_string(st));
        if (json_object_object_get_ex(scope, "allocationsLimit", &v) && v)
                limit = json_object_get_int64(v);
        json_object_put(st);
        tb_client_close(admin);
        return limit;
}

/* A request of estimate tokens on a fresh connection: 0, or the error with the refusing scope and limit. */
static int request_once(const TestDaemon *d, uint64_t estimate, const char *agent,
                        char ret_scope[static 128], char ret_limit[static 32]) {
        tb_client *c = harness_client(d);
        tb_grant g;
        int r = tb_request(c, &(tb_request_params){.estimate = estimate, .agent = agent}, &g);

        snprintf(ret_scope, 128, "%s", r < 0 ? tb_client_error_parameter(c, "scope") ?: "" : "");
        snprintf(ret_limit, 32, "%s", r < 0 ? tb_client_error_parameter(c, "limit") ?: "" : "");
        if (r == 0)
                ck_assert_msg(tb_release(c, &(tb_release_params){.allocation = g.allocation}, NULL) == 0,
                              "release: %s", tb_client_error(c));
        tb_client_close(c);
        return r;
}

/* The hour limit of the test user's scope, which a request makes appear (-1: none). */
static int64_t user_hour_limit(const TestDaemon *d, const char *user_scope) {
        tb_client *c = harness_client(d);
        int64_t limit;
        tb_grant g;

        ck_assert_msg(tb_request(c, &(tb_request_params){.estimate = 10}, &g) == 0, "request: %s",
                      tb_client_error(c));
        limit = daemon_window_limit(d, user_scope, "hour");
        ck_assert_msg(tb_release(c, &(tb_release_params){.allocation = g.allocation}, NULL) == 0,
                      "release: %s", tb_client_error(c));
        tb_client_close(c);
        return limit;
}

/*
 * set --persistent is written at once (it survives SIGKILL right after the
 * reply) and applied at every start: the global window, the test user's scope
 * (restored before the user connects again) and the agent defaults (reaching
 * an agent scope that appears after the restart, whose second allocation is
 * refused); a plain set is gone after a restart. --persistent with SCOPE
 * alone forgets that scope's limits: they stay until the next reload, and the
 * next start has the configuration's, while other scopes keep theirs.
 */
START_TEST(test_budgetctl_set_persistent_restart) {
        char *state = persist_state_dir("persist-restart"), user_scope[64], by_name[300], want[400],
             scope[128], limit[32];
        TestDaemon *d = start_on_state(PERSIST_CONFIG, state);
        int r;

        snprintf(user_scope, sizeof(user_scope), "user:%u", (unsigned)getuid());
        snprintf(by_name, sizeof(by_name), "user:%s", own_user_name());
        expect_output(
                d, (const char *const[]){"set", "--persistent", "global", "tokens_per_minute=5000", NULL},
                "global: tokens_per_minute=5000 (1 scope changed; persistent)\n", "set --persistent global");
        /* Tracked or not yet (the daemon's business): the user's scope has the limit after a restart. */
        {
                CommandResult res;

                snprintf(want, sizeof(want), "%s: tokens_per_hour=70000 (", user_scope);
                budgetctl_run(
                        d->socket_path, NULL,
                        (const char *const[]){"set", by_name, "tokens_per_hour=70000", "--persistent", NULL},
                        &res);
                ck_assert_msg(res.status == 0 && strncmp(res.out, want, strlen(want)) == 0 &&
                                      strstr(res.out, "; persistent)\n"),
                              "set --persistent user:NAME: exit %d, stdout %s, stderr %s", res.status,
                              res.out, res.err);
                command_result_done(&res);
        }
        {
                CommandResult res;
                const char *prefix = "agent: max_allocations=1 (the defaults of agent scopes; ";

                budgetctl_run(
                        d->socket_path, NULL,
                        (const char *const[]){"--persistent", "set", "agent", "max_allocations=1", NULL},
                        &res);
                ck_assert_msg(res.status == 0 && strncmp(res.out, prefix, strlen(prefix)) == 0 &&
                                      strstr(res.out, " changed; persistent)\n"),
                              "set --persistent agent: exit %d, stdout %s, stderr %s", res.status, res.out,
                              res.err);
                command_result_done(&res);
        }
        expect_output(d, (const char *const[]){"set", "global", "tokens_per_day=123456", NULL},
                      "global: tokens_per_day=123456 (1 scope changed)\n", "plain set global");
        ck_assert_int_eq(daemon_window_limit(d, "global", "minute"), 5000);
        ck_assert_int_eq(daemon_window_limit(d, "global", "day"), 123456);

        /* No clean stop: what was acknowledged is on disk already. */
        harness_daemon_kill(d);
        d = start_on_state(PERSIST_CONFIG, state);
        ck_assert_int_eq(daemon_window_limit(d, "global", "minute"), 5000);
        ck_assert_int_eq(daemon_window_limit(d, "global", "hour"), 1000000);
        /* The default: the plain set is gone. */
        ck_assert_int_eq(daemon_window_limit(d, "global", "day"), 100000000);
        ck_assert_int_eq(user_hour_limit(d, user_scope), 70000);
        r = request_once(d, 6000, NULL, scope, limit);
        ck_assert_msg(
                r == -EDQUOT && strcmp(scope, "global") == 0 && strcmp(limit, "5000") == 0,
                "a request over the persistent global limit after a restart: %d, scope '%s', limit '%s'", r,
                scope, limit);
        {
                tb_client *c = harness_client(d);
                char agent_scope[64];
                tb_grant g1, g2;

                snprintf(agent_scope, sizeof(agent_scope), "agent:%u:it-persist", (unsigned)getuid());
                ck_assert_msg(
                        tb_request(c, &(tb_request_params){.estimate = 10, .agent = "it-persist"}, &g1) == 0,
                        "the agent's first request after the restart: %s", tb_client_error(c));
                r = tb_request(c, &(tb_request_params){.estimate = 10, .agent = "it-persist"}, &g2);
                ck_assert_msg(r == -EUSERS, "the agent's second request after the restart: %d %s", r,
                              tb_client_error(c));
                ck_assert_pstr_eq(tb_client_error_parameter(c, "scope"), agent_scope);
                ck_assert_int_eq(daemon_allocations_limit(d, agent_scope), 1);
                tb_client_close(c);
        }

        /* Forgotten: the limit stays until the next reload, a restart has the configuration's. */
        expect_output(d, (const char *const[]){"set", "--persistent", "global", NULL}, "global:" FORGOTTEN,
                      "set --persistent global (forget)");
        ck_assert_int_eq(daemon_window_limit(d, "global", "minute"), 5000);
        harness_daemon_stop(d);
        d = start_on_state(PERSIST_CONFIG, state);
        ck_assert_int_eq(daemon_window_limit(d, "global", "minute"), 100000);
        ck_assert_int_eq(user_hour_limit(d, user_scope), 70000);
        ck_assert_int_eq(request_once(d, 6000, NULL, scope, limit), 0);

        snprintf(want, sizeof(want), "%s:" FORGOTTEN, user_scope);
        expect_output(d, (const char *const[]){"set", "--persistent", by_name, NULL}, want,
                      "set --persistent user:NAME (forget)");
        expect_output(d, (const char *const[]){"set", "--persistent", "agent", NULL}, "agent:" FORGOTTEN,
                      "set --persistent agent (forget)");
        harness_daemon_stop(d);
        d = start_on_state(PERSIST_CONFIG, state);
        /* User scopes have no hour limit by default. */
        ck_assert_int_eq(user_hour_limit(d, user_scope), -1);
        {
                tb_client *c = harness_client(d);
                tb_grant g1, g2;

                ck_assert_msg(tb_request(c, &(tb_request_params){.estimate = 10, .agent = "it-persist"},
                                         &g1) == 0 &&
                                      tb_request(c,
                                                 &(tb_request_params){.estimate = 10, .agent = "it-persist"},
                                                 &g2) == 0,
                              "two agent requests once its defaults are forgotten: %s", tb_client_error(c));
                tb_client_close(c);
        }
        harness_daemon_stop(d);
        free(state);
}
END_TEST

/* Polls until the global hour limit is want (a reload by SIGHUP is done); fails after 5 s. */
static void wait_global_hour_limit(const TestDaemon *d, int64_t want, const char *what) {
        int64_t limit = 0;

        for (int i = 0; i < 250; i++) {
                limit = daemon_window_limit(d, "global", "hour");
                if (limit == want)
                        return;
                harness_sleep_msec(20);
        }
        ck_abort_msg("%s: the global hour limit is %" PRId64 " after 5 s, expected %" PRId64, what, limit,
                     want);
}

/*
 * A reload (budgetctl reload, SIGHUP) forgets plain set and applies
 * persistent limits again, over a configuration file that changed too; each
 * KEY given persistently is kept on its own (a later --persistent set of
 * another key adds to it); forgetting takes effect at the next reload.
 */
START_TEST(test_budgetctl_set_persistent_reload) {
        TestDaemon *d = harness_daemon_start(PERSIST_CONFIG);
        char scope[128], limit[32];

        expect_output(d,
                      (const char *const[]){"set", "--persistent", "global", "tokens_per_minute=5000", NULL},
                      "global: tokens_per_minute=5000 (1 scope changed; persistent)\n", "set --persistent");
        expect_output(d, (const char *const[]){"set", "global", "max_allocations=3", "--persistent", NULL},
                      "global: max_allocations=3 (1 scope changed; persistent)\n",
                      "set --persistent another key");
        expect_output(d, (const char *const[]){"set", "global", "tokens_per_hour=6000", NULL},
                      "global: tokens_per_hour=6000 (1 scope changed)\n", "plain set");
        ck_assert_int_eq(daemon_window_limit(d, "global", "hour"), 6000);

        expect_output(d, (const char *const[]){"reload", NULL}, "tokenbudgetd reloaded its configuration\n",
                      "budgetctl reload");
        ck_assert_int_eq(daemon_window_limit(d, "global", "hour"), 1000000);
        ck_assert_int_eq(daemon_window_limit(d, "global", "minute"), 5000);
        ck_assert_int_eq(daemon_allocations_limit(d, "global"), 3);
        ck_assert_int_eq(request_once(d, 6000, NULL, scope, limit), -EDQUOT);
        ck_assert_pstr_eq(scope, "global");

        /* SIGHUP, with the file changed: the persistent limit wins over the new file's. */
        rewrite_config(d, "global: { tokens_per_minute = 200000; tokens_per_hour = 2000000; };\n");
        expect_output(d, (const char *const[]){"set", "global", "tokens_per_hour=6000", NULL}, NULL,
                      "plain set again");
        ck_assert_int_eq(kill(d->pid, SIGHUP), 0);
        wait_global_hour_limit(d, 2000000, "SIGHUP");
        ck_assert_int_eq(daemon_window_limit(d, "global", "minute"), 5000);
        ck_assert_int_eq(daemon_allocations_limit(d, "global"), 3);

        /* Forgotten: still in force until the next reload, then the file's. */
        expect_output(d, (const char *const[]){"set", "--persistent", "global", NULL}, "global:" FORGOTTEN,
                      "set --persistent global (forget)");
        ck_assert_int_eq(daemon_window_limit(d, "global", "minute"), 5000);
        expect_output(d, (const char *const[]){"reload", NULL}, NULL, "reload after forgetting");
        ck_assert_int_eq(daemon_window_limit(d, "global", "minute"), 200000);
        ck_assert_int_eq(daemon_allocations_limit(d, "global"), -1);
        ck_assert_int_eq(request_once(d, 6000, NULL, scope, limit), 0);
        harness_daemon_stop(d);
}
END_TEST

/* stdout line n (from 0), without its newline, into buf; false when there are fewer lines. */
static bool output_line(const char *out, size_t n, char *buf, size_t size) {
        const char *line = out;
        size_t len;

        for (size_t i = 0; i < n && line; i++) {
                line = strchr(line, '\n');
                line = line ? line + 1 : NULL;
        }
        if (!line || !*line)
                return false;
        len = strcspn(line, "\n");
        snprintf(buf, size, "%.*s", (int)len, line);
        return true;
}

/*
 * A daemon in memory only (--state-dir '') refuses --persistent with
 * NotPersistent: budgetctl prints the daemon's reason on one line and exits 1,
 * and the limits given apply all the same until the next reload (the IDL's
 * promise); status says "memory only"; plain set works as ever.
 */
START_TEST(test_budgetctl_set_persistent_memory_only) {
        TestDaemon *d = harness_daemon_start_with(PERSIST_CONFIG, &(HarnessDaemonOptions){.state_dir = ""});
        char line[512];
        CommandResult res;

        budgetctl_run(d->socket_path, NULL,
                      (const char *const[]){"set", "--persistent", "global", "tokens_per_minute=5000", NULL},
                      &res);
        ck_assert_msg(res.status == 1, "set --persistent in memory only: exit %d, expected 1 (stderr: %s)",
                      res.status, res.err);
        ck_assert_msg(strncmp(res.err, NOT_PERSISTENT_SET, strlen(NOT_PERSISTENT_SET)) == 0 &&
                              strstr(res.err, "memory only") && lines(res.err) == 1 &&
                              res.err[strlen(res.err) - 1] == '\n' && res.out[0] == '\0',
                      "set --persistent in memory only: stdout '%s', stderr:\n%s", res.out, res.err);
        fprintf(stderr, "memory only: %s", res.err);
        command_result_done(&res);
        ck_assert_int_eq(daemon_window_limit(d, "global", "minute"), 5000);

        budgetctl_run(d->socket_path, NULL, (const char *const[]){"set", "global", "--persistent", NULL},
                      &res);
        ck_assert_msg(res.status == 1 &&
                              strncmp(res.err, NOT_PERSISTENT_FORGET, strlen(NOT_PERSISTENT_FORGET)) == 0 &&
                              strstr(res.err, "memory only") && lines(res.err) == 1,
                      "forget in memory only: exit %d, stderr:\n%s", res.status, res.err);
        command_result_done(&res);

        expect_output(d, (const char *const[]){"set", "global", "tokens_per_minute=7000", NULL},
                      "global: tokens_per_minute=7000 (1 scope changed)\n", "plain set in memory only");
        budgetctl_run(d->socket_path, NULL, (const char *const[]){"status", NULL}, &res);
        ck_assert_msg(res.status == 0 && output_line(res.out, 2, line, sizeof(line)) &&
                              strcmp(line, "Durability: memory only (nothing survives a restart)") == 0,
                      "status in memory only: exit %d, stdout:\n%s", res.status, res.out);
        command_result_done(&res);
        harness_daemon_stop(d);
}
END_TEST

/*
 * A process's limits are not kept: after a restart (or once it exits) its
 * pid may name another process, which would inherit them. NotPersistent says
 * so; the change applies until the next reload all the same.
 */
START_TEST(test_budgetctl_set_persistent_process) {
        TestDaemon *d = harness_daemon_start_with(PERSIST_CONFIG, &(HarnessDaemonOptions){});
        RawConn *agent = harness_open_working(d, "a process scope");
        char scope[64], prefix[128], arg[] = "tokens_per_minute=77";
        CommandResult res;

        snprintf(scope, sizeof(scope), "process:%d", (int)getpid());
        budgetctl_run(d->socket_path, NULL, (const char *const[]){"set", "--persistent", scope, arg, NULL},
                      &res);
        snprintf(prefix, sizeof(prefix), "budgetctl: '%s' was changed, but not persistently: ", scope);
        ck_assert_msg(res.status == 1 && strncmp(res.err, prefix, strlen(prefix)) == 0 &&
                              strstr(res.err, "pid may name another process") && lines(res.err) == 1,
                      "set --persistent %s: exit %d, stderr:\n%s", scope, res.status, res.err);
        command_result_done(&res);
        ck_assert_int_eq(daemon_window_limit(d, scope, "minute"), 77);
        raw_close(agent);
        harness_daemon_stop(d);
}
END_TEST

/* "Durability: PATH (sync SYNC), N commits" with N >= 1; its N. */
static uint64_t expect_durability_line(const TestDaemon *d, const char *db, const char *sync) {
        char line[512], prefix[400], tail[64];
        unsigned long long n = 0;
        CommandResult res;

        budgetctl_run(d->socket_path, NULL, (const char *const[]){"status", NULL}, &res);
        snprintf(prefix, sizeof(prefix), "Durability: %s (sync %s), ", db, sync);
        ck_assert_msg(res.status == 0 && output_line(res.out, 2, line, sizeof(line)) &&
                              strncmp(line, prefix, strlen(prefix)) == 0 &&
                              sscanf(line + strlen(prefix), "%llu %63[a-z]", &n, tail) == 2 && n >= 1 &&
                              strcmp(tail, n == 1 ? "commit" : "commits") == 0,
                      "status: no line \"%sN commits\" in:\n%s(stderr: %s)", prefix, res.out, res.err);
        ck_assert_msg(output_line(res.out, 3, line, sizeof(line)) && line[0] == '\0',
                      "status: no empty line under the header:\n%s", res.out);
        command_result_done(&res);
        return n;
}

/*
 * status shows where the ledger is, with durability.sync and the commits
 * (counting up as agents work); --no-legend leaves the header out.
 */
START_TEST(test_budgetctl_status_durability) {
        char *state = persist_state_dir("durability-line"), db[400];
        TestDaemon *d = start_on_state("", state);
        tb_client *c = harness_client(d);
        const char *call = "";
        uint64_t before, after;
        CommandResult res;

        snprintf(db, sizeof(db), "%s/tokenbudget.db", state);
        before = expect_durability_line(d, db, "normal");
        for (int i = 0; i < 3; i++)
                ck_assert_msg(harness_cycle(c, 100, &call) == 0, "cycle: %s: %s", call, tb_client_error(c));
        after = expect_durability_line(d, db, "normal");
        ck_assert_msg(after > before, "commits did not count up over 3 cycles: %" PRIu64 " then %" PRIu64,
                      before, after);
        budgetctl_run(d->socket_path, NULL, (const char *const[]){"--no-legend", "status", NULL}, &res);
        ck_assert_msg(res.status == 0 && !strstr(res.out, "Durability"), "--no-legend status:\n%s", res.out);
        command_result_done(&res);
        tb_client_close(c);
        harness_daemon_stop(d);

        d = start_on_state("durability: { sync = \"full\"; };\n", state);
        expect_durability_line(d, db, "full");
        harness_daemon_stop(d);
        free(state);
}
END_TEST

/* A Status reply with this durability object (JSON text), as a daemon would send it. */
static void fake_status_reply(char *buf, size_t size, const char *durability) {
        snprintf(buf, size,
                 "{\"parameters\":{\"version\":\"0.1.0\",\"uptimeUsec\":61000000,\"connections\":1,"
                 "\"allocations\":0,\"reserved\":0,\"scopes\":[],\"waiters\":0,\"held\":0,\"breakers\":[],"
                 "\"enforce\":true%s%s}}",
                 durability ? ",\"durability\":" : "", durability ? durability : "");
}

/*
 * What budgetctl makes of a durability object from the wire (a fake daemon
 * answers Status): degraded with the daemon's error (control characters
 * replaced), writes lost after a recovery, none from an older daemon (no
 * line), a malformed one refused naming the field; and an older daemon that
 * refuses the persistent parameter.
 */
START_TEST(test_budgetctl_durability_wire) {
        static const struct {
                const char *durability;
                int status;
                const char *want; /* in stdout (status 0) or stderr */
        } rows[] = {
                {"{\"database\":\"/var/lib/tokenbudget/"
                 "tokenbudget.db\",\"sync\":\"normal\",\"degraded\":true,"
                 "\"error\":\"/var/lib/tokenbudget/tokenbudget.db: database or disk is full\\u001b[2J\","
                 "\"pending\":42,\"lost\":0,\"commits\":17}",
                 0,
                 "\nDurability: DEGRADED (42 writes pending, 0 lost; enforcing from memory): "
                 "/var/lib/tokenbudget/tokenbudget.db: database or disk is full?[2J\n\n"},
                {"{\"database\":\"/s/tokenbudget.db\",\"sync\":\"full\",\"degraded\":false,\"pending\":0,"
                 "\"lost\":3,\"commits\":1}",
                 0,
                 "\nDurability: /s/tokenbudget.db (sync full), 1 commit, 3 writes lost since the start\n\n"},
                {"{\"sync\":\"none\",\"degraded\":false,\"pending\":0,\"lost\":0,\"commits\":0}", 0,
                 "\nDurability: memory only (nothing survives a restart)\n\n"},
                {NULL, 0, "Reserved: 0 tokens\n\n"},
                {"{\"sync\":\"none\",\"degraded\":false,\"pending\":0,\"lost\":0,\"commits\":\"many\"}", 1,
                 "budgetctl: malformed reply from tokenbudgetd: durability.commits is missing or not a "
                 "non-negative integer\n"},
                {"[]", 1, "budgetctl: malformed reply from tokenbudgetd: durability is not an object\n"},
        };

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                char path[300], reply[1200];
                CommandResult res;
                pid_t pid;
                int status;

                snprintf(path, sizeof(path), "%s/durability-%zu.sock", harness_dir(), i);
                fake_status_reply(reply, sizeof(reply), rows[i].durability);
                pid = fake_daemon_start(path, reply);
                budgetctl_run(path, NULL, (const char *const[]){"status", NULL}, &res);
                ck_assert_msg(res.status == rows[i].status, "row %zu: exit %d, expected %d (stderr: %s)", i,
                              res.status, rows[i].status, res.err);
                ck_assert_msg(strstr(rows[i].status == 0 ? res.out : res.err, rows[i].want),
                              "row %zu: no \"%s\" in stdout:\n%s\nstderr:\n%s", i, rows[i].want, res.out,
                              res.err);
                ck_assert_msg(rows[i].durability || !strstr(res.out, "Durability"),
                              "row %zu: a line from nothing:\n%s", i, res.out);
                command_result_done(&res);
                ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        }
        {
                char path[300];
                CommandResult res;
                pid_t pid;

                snprintf(path, sizeof(path), "%s/old-persistent.sock", harness_dir());
                pid = fake_daemon_start(path, "{\"error\":\"org.varlink.service.InvalidParameter\","
                                              "\"parameters\":{\"parameter\":\"persistent\"}}");
                budgetctl_run(
                        path, NULL,
                        (const char *const[]){"set", "--persistent", "global", "tokens_per_minute=5", NULL},
                        &res);
                ck_assert_msg(res.status == 1 &&
                                      strcmp(res.err,
                                             "budgetctl: this tokenbudgetd is too old for --persistent (it "
                                             "refused the parameter 'persistent'); nothing was changed\n") ==
                                              0,
                              "an old daemon and --persistent: exit %d, stderr:\n%s", res.status, res.err);
                command_result_done(&res);
                ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
        }
}
END_TEST

static Suite *tools_suite(void) {
        Suite *s = suite_create("integration-tools");
        TCase *tc;

        tc = harness_tcase("budgetctl", 30);
        tcase_add_test(tc, test_budgetctl_human);
        tcase_add_test(tc, test_budgetctl_json);
        tcase_add_test(tc, test_budgetctl_exit_codes);
        tcase_add_loop_test(tc, test_budgetctl_usage, 0, (int)(sizeof(usage_rows) / sizeof(usage_rows[0])));
        tcase_add_test(tc, test_budgetctl_status_idle);
        tcase_add_test(tc, test_budgetctl_too_old_for_all);
        tcase_add_test(tc, test_budgetctl_not_running);
        tcase_add_test(tc, test_budgetctl_start_hint);
        suite_add_tcase(s, tc);
        tc = harness_tcase("budgetctl_steer", 60);
        tcase_add_loop_test(tc, test_budgetctl_set_usage, 0,
                            (int)(sizeof(set_usage_rows) / sizeof(set_usage_rows[0])));
        tcase_add_test(tc, test_budgetctl_set);
        tcase_add_test(tc, test_budgetctl_reload);
        tcase_add_test(tc, test_budgetctl_status_filter);
        suite_add_tcase(s, tc);
        tc = harness_tcase("budgetctl_persistent", 120);
        tcase_add_test(tc, test_budgetctl_set_persistent_restart);
        tcase_add_test(tc, test_budgetctl_set_persistent_reload);
        tcase_add_test(tc, test_budgetctl_set_persistent_memory_only);
        tcase_add_test(tc, test_budgetctl_set_persistent_process);
        tcase_add_test(tc, test_budgetctl_status_durability);
        tcase_add_test(tc, test_budgetctl_durability_wire);
        suite_add_tcase(s, tc);
        tc = harness_tcase("budgetctl_non_admin", 60);
        tb_check_tag_root(tc);
        tcase_add_test(tc, test_budgetctl_non_admin);
        suite_add_tcase(s, tc);
        tc = harness_tcase("budgetctl_classes", 60);
        tcase_add_loop_test(tc, test_budgetctl_classes, 0, 2);
        tcase_add_test(tc, test_budgetctl_classes_wire);
        suite_add_tcase(s, tc);
        tc = harness_tcase("budgetctl_classes_non_admin", 60);
        tb_check_tag_root(tc);
        tcase_add_test(tc, test_budgetctl_classes_non_admin);
        suite_add_tcase(s, tc);
        tc = harness_tcase("budgetctl_estimate", 90);
        tcase_add_test(tc, test_estimate_method);
        tcase_add_test(tc, test_estimate_restart);
        tcase_add_test(tc, test_estimate_cost);
        tcase_add_test(tc, test_budgetctl_estimate);
        tcase_add_test(tc, test_budgetctl_estimate_wire);
        suite_add_tcase(s, tc);
        tc = harness_tcase("budgetctl_estimate_non_admin", 60);
        tb_check_tag_root(tc);
        tcase_add_test(tc, test_estimate_non_admin);
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
