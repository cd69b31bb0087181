/* SPDX-License-Identifier: MIT */
/*
 * The integration test harness: runs the real tokenbudgetd on a private socket
 * in a temporary directory with a config written per test, talks to it over
 * raw sockets, runs the real command line tools, and reads admin Status/List
 * replies. Every helper that cannot do its job fails the current Check test
 * with a message saying why. It does not mock anything: paths of the binaries
 * under test come from the environment (TOKENBUDGETD, BUDGETCTL,
 * EXAMPLE_AGENT, SRCDIR), set by tests/integration/meson.build.
 *
 * Failure reporting: each Check test case (TCase) gets a fresh directory from
 * harness_tcase_setup() (an unchecked fixture, so it runs in the runner
 * process). Each daemon lives in its own subdirectory with its config, socket
 * and captured stderr; harness_daemon_stop() marks it as cleanly stopped.
 * harness_tcase_teardown() prints the stderr of every daemon that was not
 * cleanly stopped (the test failed or crashed) and removes the directory. A
 * daemon dies with the test process that started it (PR_SET_PDEATHSIG).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <check.h>
#include <json-c/json.h>

#include "tokenbudget.h"

/* Starting the daemon: connect() must succeed within this long. */
#define HARNESS_START_TIMEOUT_MSEC 10000
/* Stopping the daemon: it must exit with status 0 within this long of SIGTERM. */
#define HARNESS_STOP_TIMEOUT_MSEC 5000
/* How long a raw receive waits for a reply or EOF by default. */
#define HARNESS_REPLY_TIMEOUT_MSEC 3000

/* The value of a required environment variable; fails the test when unset. */
const char *harness_env(const char *name);

/*
 * A TCase named name with the harness's unchecked fixture and a timeout;
 * harness_main() runs a suite (SIGPIPE ignored) and returns the exit status.
 */
TCase *harness_tcase(const char *name, double timeout_sec);
int harness_main(Suite *s);

/* Unchecked fixture pair: one temporary directory per TCase. */
void harness_tcase_setup(void);
void harness_tcase_teardown(void);
/* The current TCase's directory (mode 0755, so another uid can reach sockets in it). */
const char *harness_dir(void);

typedef struct TestDaemon {
        pid_t pid;
        char dir[256];
        char socket_path[108]; /* sizeof(sun_path) */
        char config_path[300];
        char log_path[300];
} TestDaemon;

/*
 * Writes config_text to a fresh config file, starts tokenbudgetd with
 * --config and --socket, and waits until its socket accepts a connection.
 * Fails the test (stderr printed by the teardown) when it exits or does not
 * listen in time.
 */
TestDaemon *harness_daemon_start(const char *config_text);
/* The same, listening on socket_path instead of a socket in its own directory. */
TestDaemon *harness_daemon_start_at(const char *config_text, const char *socket_path);
/* How to run a daemon beyond its config: extra environment entries
 * ("NAME=VALUE", NULL-terminated, may be NULL) and, when nofile > 0, its
 * RLIMIT_NOFILE (soft and hard). */
typedef struct HarnessDaemonOptions {
        const char *const *env;
        unsigned nofile;
        size_t config_size;    /* > 0: the config is this many bytes (NULs included), not a string */
        bool no_config_option; /* run without --config: the daemon looks for its default file */
        /* --state-dir: NULL gives <the daemon's dir>/state (created), "" memory
         * only, anything else that directory (a restart on the same state). */
        const char *state_dir;
        bool no_state_option; /* run without --state-dir (the config or the environment decides) */
} HarnessDaemonOptions;
TestDaemon *harness_daemon_start_with(const char *config_text, const HarnessDaemonOptions *options);
/* Writes config_text and runs the daemon with options to its end (it is
 * expected to refuse to start): its exit status, its stderr in *ret_err (the
 * teardown does not print it: the caller checks both). */
int harness_daemon_run_to_exit(const char *config_text, const HarnessDaemonOptions *options, int timeout_ms,
                               char **ret_err);
/* Opens n connections to path as uid (and gid) in a forked child and hands
 * them over (SCM_RIGHTS): the daemon sees that uid on each (SO_PEERCRED is
 * taken at connect). Fills fds; returns how many connected (the rest are -1). */
size_t harness_connect_as(const char *path, uid_t uid, size_t n, int *fds);
/* SIGKILL and reap (the test wants a crash: its stderr is not printed); frees d. */
void harness_daemon_kill(TestDaemon *d);
/* SIGTERM, then asserts exit status 0 within HARNESS_STOP_TIMEOUT_MSEC; frees d. */
void harness_daemon_stop(TestDaemon *d);
/* A KiB field of the daemon's /proc/PID/status: "VmRSS" (resident now), "VmHWM" (peak resident). */
long harness_daemon_mem_kib(const TestDaemon *d, const char *field);

/* Opens a libtokenbudget handle to the daemon; fails the test on error. */
tb_client *harness_client(const TestDaemon *d);

/* Reads a whole file; NULL with errno set on failure. */
char *harness_read_file(const char *path, size_t *ret_len);
/* Monotonic clock in microseconds. */
uint64_t harness_now_usec(void);
void harness_sleep_msec(int msec);

/* A raw Varlink connection with a receive buffer (replies may arrive together). */
typedef struct RawConn {
        int fd;
        char *buf;
        size_t len;
        size_t cap;
} RawConn;

/* Connects to path; NULL with errno set on failure. */
RawConn *raw_open(const char *path);
RawConn *raw_close(RawConn *r);
/* Writes all of data (no NUL added); returns 0 or -errno (EPIPE when the daemon closed). */
int raw_send(RawConn *r, const void *data, size_t len);
/* Writes the text plus its terminating NUL. */
int raw_send_msg(RawConn *r, const char *json);
/*
 * Receives one message. Returns 1 with a malloc'ed NUL-terminated message in
 * *ret, 0 on EOF (also ECONNRESET: the daemon closed), -ETIMEDOUT, or -errno.
 */
int raw_recv(RawConn *r, int timeout_ms, char **ret);
/*
 * Waits for the daemon to close the connection. Returns 0 when EOF came and
 * nothing was received, -EBADMSG when bytes arrived first (their text in
 * *ret_data, malloc'ed, when ret_data is not NULL), -ETIMEDOUT when neither.
 */
int raw_expect_eof(RawConn *r, int timeout_ms, char **ret_data);
/* Sends one call, receives one reply, parses it; fails the test (naming what) on error. */
json_object *raw_call(RawConn *r, const char *json, const char *what);
/* raw_call() of a printf-formatted message (named by itself in failures). */
json_object *harness_callf(RawConn *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The next message on r within timeout_ms, parsed (fails the test when it
 * is not JSON); NULL when none came (a deferred reply still pending). */
json_object *harness_reply_within(RawConn *r, int timeout_ms);

#define HARNESS_GETINFO_CALL "{\"method\":\"org.varlink.service.GetInfo\"}"
/* A raw connection that answered GetInfo; retries for 2 s while the daemon
 * still counts a connection just closed. Fails the test naming what. */
RawConn *harness_open_working(const TestDaemon *d, const char *what);
/* A connection over a limit is accepted, then closed without a reply. */
void harness_assert_refused(const TestDaemon *d, const char *what);

/* A GetInfo call padded with blanks inside the object to exactly len bytes (malloc'ed). */
char *harness_padded_getinfo(size_t len);

/* Reply helpers: the error name or NULL; the parameters object (never NULL). */
const char *reply_error(json_object *reply);
json_object *reply_parameters(json_object *reply);

/* JSON access; fail the test naming key and context when absent or mistyped. */
int64_t json_int(json_object *o, const char *key, const char *what);
const char *json_str(json_object *o, const char *key, const char *what);

/* Calls io.tokenbudget.admin.METHOD through tb_call and parses the reply
 * (Status with all: true, so idle scopes are listed too). */
json_object *harness_admin(tb_client *c, const char *method);
/* The scope object named name in a Status reply, or NULL. */
json_object *status_scope(json_object *status, const char *name);
/* The "used" of the window with this span ("minute", ...) in a scope; fails when absent. */
int64_t scope_window_used(json_object *scope, const char *span, int64_t *ret_limit);

/* Result of running a command. */
typedef struct CommandResult {
        int status; /* exit status, or 128 + signal number */
        char *out;
        char *err;
} CommandResult;

/*
 * Runs argv[0] with argv (NULL-terminated), extra environment entries
 * ("NAME=VALUE", NULL-terminated, may be NULL), stdin from /dev/null, stdout
 * and stderr captured; killed after timeout_ms.
 */
void harness_run(char *const argv[], char *const env_extra[], int timeout_ms, CommandResult *ret);
void command_result_done(CommandResult *r);

/* A full request → report → release cycle on c; returns 0 or the failing call's -errno. */
int harness_cycle(tb_client *c, int64_t estimate, const char **ret_failed_call);
