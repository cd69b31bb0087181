/* SPDX-License-Identifier: MIT */
/*
 * The integration test harness (see harness.h): starts and stops the real
 * tokenbudgetd, runs the real tools, speaks raw Varlink. It contains no
 * knowledge of budgets; the test files decide what is right.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "tb-check.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Set by the unchecked setup in the runner process; inherited by forked tests. */
static char tcase_dir[200];

/* Daemons started by this process and not yet reaped (for CK_FORK=no runs). */
#define MAX_DAEMONS 32
static pid_t live_daemons[MAX_DAEMONS];

const char *harness_env(const char *name) {
        const char *v = getenv(name);

        ck_assert_msg(v && *v, "environment variable %s is not set (tests/integration/meson.build sets it)",
                      name);
        return v;
}

uint64_t harness_now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void harness_sleep_msec(int msec) {
        struct timespec ts = {.tv_sec = msec / 1000, .tv_nsec = (long)(msec % 1000) * 1000000L};

        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

const char *harness_dir(void) {
        ck_assert_msg(tcase_dir[0], "harness_tcase_setup() was not run for this test case");
        return tcase_dir;
}

TCase *harness_tcase(const char *name, double timeout_sec) {
        TCase *tc = tcase_create(name);

        tcase_add_unchecked_fixture(tc, harness_tcase_setup, harness_tcase_teardown);
        tcase_set_timeout(tc, timeout_sec);
        return tc;
}

/* The shared runner (tests/common/tb-check.h): skips are counted and listed,
 * and a binary whose every test skipped exits 77. */
int harness_main(Suite *s) {
        /* A daemon closing a raw connection must fail a write, not kill the test. */
        (void)signal(SIGPIPE, SIG_IGN);
        return tb_check_main(s); /* CK_VERBOSITY=verbose lists every test */
}

void harness_tcase_setup(void) {
        const char *tmp = getenv("TMPDIR");

        snprintf(tcase_dir, sizeof(tcase_dir), "%s/tb-it-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(tcase_dir)) {
                fprintf(stderr, "mkdtemp(%s): %m\n", tcase_dir);
                abort();
        }
        /* Other uids (the PermissionDenied test) must reach the sockets inside. */
        (void)chmod(tcase_dir, 0755);
}

static int remove_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void)remove(path);
        return 0;
}

/* Prints the captured stderr of a daemon that was not stopped cleanly. */
static void dump_unclean_log(const char *daemon_dir) {
        char path[1024];
        size_t len = 0;
        char *text;

        snprintf(path, sizeof(path), "%s/stopped-ok", daemon_dir);
        if (access(path, F_OK) == 0)
                return;
        snprintf(path, sizeof(path), "%s/stderr", daemon_dir);
        text = harness_read_file(path, &len);
        if (!text)
                return;
        fprintf(stderr, "---- tokenbudgetd stderr (%s) ----\n%s%s---- end ----\n", path, text,
                len && text[len - 1] != '\n' ? "\n" : "");
        free(text);
}

void harness_tcase_teardown(void) {
        char pattern[512];
        FILE *ls;
        char line[512];

        for (size_t i = 0; i < MAX_DAEMONS; i++) {
                if (live_daemons[i] <= 0)
                        continue;
                (void)kill(live_daemons[i], SIGKILL);
                (void)waitpid(live_daemons[i], NULL, 0);
                live_daemons[i] = 0;
        }
        if (!tcase_dir[0])
                return;
        /* Every daemon directory is tcase_dir/d-XXXXXX. */
        snprintf(pattern, sizeof(pattern), "ls -d '%s'/d-* 2>/dev/null", tcase_dir);
        ls = popen(pattern, "r");
        if (ls) {
                while (fgets(line, sizeof(line), ls)) {
                        line[strcspn(line, "\n")] = 0;
                        dump_unclean_log(line);
                }
                pclose(ls);
        }
        (void)nftw(tcase_dir, remove_cb, 16, FTW_DEPTH | FTW_PHYS);
        tcase_dir[0] = 0;
}

char *harness_read_file(const char *path, size_t *ret_len) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        char *buf = NULL;
        size_t len = 0, cap = 0;

        if (fd < 0)
                return NULL;
        for (;;) {
                ssize_t n;

                if (cap - len < 4096) {
                        char *nb = realloc(buf, cap + 65536);
                        if (!nb) {
                                free(buf);
                                close(fd);
                                errno = ENOMEM;
                                return NULL;
                        }
                        buf = nb;
                        cap += 65536;
                }
                n = read(fd, buf + len, cap - len - 1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int e = errno;
                        free(buf);
                        close(fd);
                        errno = e;
                        return NULL;
                }
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        close(fd);
        buf[len] = 0;
        if (ret_len)
                *ret_len = len;
        return buf;
}

static void write_file(const char *path, const char *text) {
        FILE *f = fopen(path, "we");

        ck_assert_msg(f, "cannot create %s: %s", path, strerror(errno));
        fputs(text, f);
        ck_assert_msg(fclose(f) == 0, "cannot write %s: %s", path, strerror(errno));
}

static int try_connect(const char *path) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
                int r = -errno;
                close(fd);
                return r;
        }
        return fd;
}

static void track_daemon(pid_t pid, bool add) {
        for (size_t i = 0; i < MAX_DAEMONS; i++) {
                if (add && live_daemons[i] <= 0) {
                        live_daemons[i] = pid;
                        return;
                }
                if (!add && live_daemons[i] == pid) {
                        live_daemons[i] = 0;
                        return;
                }
        }
}

static void exec_daemon(const TestDaemon *d, const char *binary, pid_t parent,
                        const HarnessDaemonOptions *options) {
        int log = open(d->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644);
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);

        /* The daemon must not outlive a test that failed before stopping it. */
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent || log < 0 || null < 0)
                _exit(127);
        for (size_t i = 0; options && options->env && options->env[i]; i++)
                if (putenv((char *)options->env[i]) < 0)
                        _exit(127);
        if (options && options->nofile > 0) {
                struct rlimit rl = {.rlim_cur = options->nofile, .rlim_max = options->nofile};
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
                        dprintf(log, "harness: setrlimit(RLIMIT_NOFILE, %u): %m\n", options->nofile);
                        _exit(127);
                }
        }
        (void)dup2(null, STDIN_FILENO);
        (void)dup2(log, STDOUT_FILENO);
        (void)dup2(log, STDERR_FILENO);
        {
                char state[sizeof(d->dir) + 8];
                const char *argv[9];
                size_t n = 0;

                argv[n++] = "tokenbudgetd";
                if (!options || !options->no_config_option) {
                        argv[n++] = "--config";
                        argv[n++] = d->config_path;
                }
                argv[n++] = "--socket";
                argv[n++] = d->socket_path;
                if (!options || !options->no_state_option) {
                        snprintf(state, sizeof(state), "%s/state", d->dir);
                        if (!options || !options->state_dir)
                                (void)mkdir(state, 0700);
                        argv[n++] = "--state-dir";
                        argv[n++] = options && options->state_dir ? options->state_dir : state;
                }
                argv[n] = NULL;
                execv(binary, (char *const *)argv);
        }
        dprintf(STDERR_FILENO, "harness: exec %s: %m\n", binary);
        _exit(127);
}

static char *describe_status(int status, char *buf, size_t size) {
        if (WIFEXITED(status))
                snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
        else if (WIFSIGNALED(status))
                snprintf(buf, size, "killed by signal %d (%s)", WTERMSIG(status),
                         strsignal(WTERMSIG(status)));
        else
                snprintf(buf, size, "wait status 0x%x", status);
        return buf;
}

TestDaemon *harness_daemon_start(const char *config_text) {
        return harness_daemon_start_at(config_text, NULL);
}

static TestDaemon *daemon_start(const char *config_text, const char *socket_path,
                                const HarnessDaemonOptions *options);

TestDaemon *harness_daemon_start_at(const char *config_text, const char *socket_path) {
        return daemon_start(config_text, socket_path, NULL);
}

TestDaemon *harness_daemon_start_with(const char *config_text, const HarnessDaemonOptions *options) {
        return daemon_start(config_text, NULL, options);
}

static void daemon_prepare(TestDaemon *d, const char *config_text, const char *socket_path);

int harness_daemon_run_to_exit(const char *config_text, const HarnessDaemonOptions *options, int timeout_ms,
                               char **ret_err) {
        TestDaemon d = {};
        uint64_t deadline = harness_now_usec() + (uint64_t)timeout_ms * 1000u;
        pid_t parent = getpid();
        int status = 0;

        daemon_prepare(&d, config_text, NULL);
        if (options && options->config_size > 0) {
                FILE *f = fopen(d.config_path, "we");

                ck_assert_msg(f && fwrite(config_text, 1, options->config_size, f) == options->config_size &&
                                      fclose(f) == 0,
                              "writing %s: %s", d.config_path, strerror(errno));
        }
        d.pid = fork();
        ck_assert_msg(d.pid >= 0, "fork: %s", strerror(errno));
        if (d.pid == 0)
                exec_daemon(&d, harness_env("TOKENBUDGETD"), parent, options);
        for (;;) {
                pid_t r = waitpid(d.pid, &status, WNOHANG);

                ck_assert_msg(r >= 0, "waitpid: %s", strerror(errno));
                if (r == d.pid)
                        break;
                if (harness_now_usec() >= deadline) {
                        kill(d.pid, SIGKILL);
                        waitpid(d.pid, &status, 0);
                        ck_abort_msg(
                                "tokenbudgetd (config %s) still ran after %d ms; expected it to refuse to "
                                "start",
                                d.config_path, timeout_ms);
                }
                harness_sleep_msec(5);
        }
        *ret_err = harness_read_file(d.log_path, NULL);
        ck_assert_ptr_nonnull(*ret_err);
        /* The caller wanted it to exit and checks how: the teardown need not print its stderr. */
        {
                char path[300];

                snprintf(path, sizeof(path), "%s/stopped-ok", d.dir);
                write_file(path, "");
        }
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

RawConn *harness_open_working(const TestDaemon *d, const char *what) {
        uint64_t deadline = harness_now_usec() + 2000000;

        for (;;) {
                RawConn *r = raw_open(d->socket_path);
                char *msg = NULL;
                int k;

                ck_assert_msg(r, "%s: connect: %s", what, strerror(errno));
                k = raw_send_msg(r, HARNESS_GETINFO_CALL);
                if (k == 0)
                        k = raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg);
                if (k == 1 && strstr(msg, "tokenbudgetd")) {
                        free(msg);
                        return r;
                }
                free(msg);
                raw_close(r);
                ck_assert_msg(harness_now_usec() < deadline,
                              "%s: no working connection within 2 s (last: %d)", what, k);
                harness_sleep_msec(20);
        }
}

void harness_assert_refused(const TestDaemon *d, const char *what) {
        RawConn *r = raw_open(d->socket_path);
        char *data = NULL;
        int k;

        ck_assert_msg(r, "%s: connect() itself failed (%s); expected accept then EOF", what,
                      strerror(errno));
        k = raw_expect_eof(r, HARNESS_REPLY_TIMEOUT_MSEC, &data);
        ck_assert_msg(k == 0, "%s: expected EOF, got %s%s", what, k == -EBADMSG ? "data: " : strerror(-k),
                      k == -EBADMSG ? data : "");
        free(data);
        raw_close(r);
}

size_t harness_connect_as(const char *path, uid_t uid, size_t n, int *fds) {
        int sv[2], status = 0;
        size_t got = 0;
        pid_t pid;

        ck_assert_msg(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair: %s",
                      strerror(errno));
        pid = fork();
        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                close(sv[0]);
                if (setgroups(0, NULL) < 0 || setgid(uid) < 0 || setuid(uid) < 0)
                        _exit(2);
                for (size_t i = 0; i < n; i++) {
                        int fd = try_connect(path);
                        char byte = fd >= 0 ? 1 : 0;
                        char control[CMSG_SPACE(sizeof(int))] = {0};
                        struct iovec iov = {.iov_base = &byte, .iov_len = 1};
                        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

                        if (fd >= 0) {
                                struct cmsghdr *cm;

                                mh.msg_control = control;
                                mh.msg_controllen = sizeof(control);
                                cm = CMSG_FIRSTHDR(&mh);
                                cm->cmsg_level = SOL_SOCKET;
                                cm->cmsg_type = SCM_RIGHTS;
                                cm->cmsg_len = CMSG_LEN(sizeof(int));
                                memcpy(CMSG_DATA(cm), &fd, sizeof(int));
                        }
                        if (sendmsg(sv[1], &mh, 0) != 1)
                                _exit(3);
                        if (fd >= 0)
                                close(fd);
                }
                _exit(0);
        }
        close(sv[1]);
        for (size_t i = 0; i < n; i++) {
                char byte = 0;
                char control[CMSG_SPACE(sizeof(int))];
                struct iovec iov = {.iov_base = &byte, .iov_len = 1};
                struct msghdr mh = {.msg_iov = &iov,
                                    .msg_iovlen = 1,
                                    .msg_control = control,
                                    .msg_controllen = sizeof(control)};
                struct cmsghdr *cm;

                fds[i] = -1;
                if (recvmsg(sv[0], &mh, MSG_CMSG_CLOEXEC) != 1)
                        break;
                cm = CMSG_FIRSTHDR(&mh);
                if (byte == 1 && cm && cm->cmsg_type == SCM_RIGHTS) {
                        memcpy(&fds[i], CMSG_DATA(cm), sizeof(int));
                        got++;
                }
        }
        close(sv[0]);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "connecting child as uid %u: status 0x%x", (unsigned)uid, status);
        return got;
}

static void daemon_prepare(TestDaemon *d, const char *config_text, const char *socket_path) {
        snprintf(d->dir, sizeof(d->dir), "%s/d-XXXXXX", harness_dir());
        ck_assert_msg(mkdtemp(d->dir), "mkdtemp(%s): %s", d->dir, strerror(errno));
        (void)chmod(d->dir, 0755);
        /* sun_path holds 108 bytes: a long TMPDIR cannot work, say so. */
        if (socket_path)
                ck_assert_msg(snprintf(d->socket_path, sizeof(d->socket_path), "%s", socket_path) <
                                      (int)sizeof(d->socket_path),
                              "socket path %s is too long for sun_path", socket_path);
        else
                ck_assert_msg(snprintf(d->socket_path, sizeof(d->socket_path), "%s/sock", d->dir) <
                                      (int)sizeof(d->socket_path),
                              "socket path in %s is too long for sun_path", d->dir);
        ck_assert(snprintf(d->config_path, sizeof(d->config_path), "%s/tokenbudgetd.conf", d->dir) <
                  (int)sizeof(d->config_path));
        ck_assert(snprintf(d->log_path, sizeof(d->log_path), "%s/stderr", d->dir) <
                  (int)sizeof(d->log_path));
        write_file(d->config_path, config_text);
}

static TestDaemon *daemon_start(const char *config_text, const char *socket_path,
                                const HarnessDaemonOptions *options) {
        TestDaemon *d = calloc(1, sizeof(*d));
        const char *binary = harness_env("TOKENBUDGETD");
        pid_t parent = getpid();
        uint64_t deadline;

        ck_assert_ptr_nonnull(d);
        daemon_prepare(d, config_text, socket_path);
        d->pid = fork();
        ck_assert_msg(d->pid >= 0, "fork: %s", strerror(errno));
        if (d->pid == 0)
                exec_daemon(d, binary, parent, options);
        track_daemon(d->pid, true);

        deadline = harness_now_usec() + HARNESS_START_TIMEOUT_MSEC * 1000ull;
        for (;;) {
                int status, fd = try_connect(d->socket_path);
                char why[128];

                if (fd >= 0) {
                        close(fd);
                        return d;
                }
                if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
                        track_daemon(d->pid, false);
                        ck_abort_msg("tokenbudgetd %s before listening on %s (config %s; stderr below)",
                                     describe_status(status, why, sizeof(why)), d->socket_path,
                                     d->config_path);
                }
                ck_assert_msg(harness_now_usec() < deadline,
                              "tokenbudgetd did not accept connections on %s within %d ms (last error: %s)",
                              d->socket_path, HARNESS_START_TIMEOUT_MSEC, strerror(-fd));
                harness_sleep_msec(10);
        }
}

void harness_daemon_stop(TestDaemon *d) {
        uint64_t deadline = harness_now_usec() + HARNESS_STOP_TIMEOUT_MSEC * 1000ull;
        char path[300], why[128];
        int status = 0;

        ck_assert_msg(kill(d->pid, SIGTERM) == 0, "kill(%d, SIGTERM): %s", (int)d->pid, strerror(errno));
        for (;;) {
                pid_t r = waitpid(d->pid, &status, WNOHANG);

                ck_assert_msg(r >= 0, "waitpid(%d): %s", (int)d->pid, strerror(errno));
                if (r == d->pid)
                        break;
                ck_assert_msg(harness_now_usec() < deadline,
                              "tokenbudgetd (pid %d) did not exit within %d ms of SIGTERM", (int)d->pid,
                              HARNESS_STOP_TIMEOUT_MSEC);
                harness_sleep_msec(5);
        }
        track_daemon(d->pid, false);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "tokenbudgetd %s after SIGTERM, expected exit status 0 (stderr below)",
                      describe_status(status, why, sizeof(why)));
        snprintf(path, sizeof(path), "%s/stopped-ok", d->dir);
        write_file(path, "");
        free(d);
}

void harness_daemon_kill(TestDaemon *d) {
        char path[300];

        ck_assert_msg(kill(d->pid, SIGKILL) == 0, "kill(%d, SIGKILL): %s", (int)d->pid, strerror(errno));
        ck_assert_int_eq(waitpid(d->pid, NULL, 0), d->pid);
        track_daemon(d->pid, false);
        snprintf(path, sizeof(path), "%s/stopped-ok", d->dir);
        write_file(path, "");
        free(d);
}

long harness_daemon_mem_kib(const TestDaemon *d, const char *field) {
        char path[64], key[32], *text, *p;
        long kib = -1;

        snprintf(path, sizeof(path), "/proc/%d/status", (int)d->pid);
        snprintf(key, sizeof(key), "\n%s:", field);
        text = harness_read_file(path, NULL);
        ck_assert_msg(text, "cannot read %s: %s", path, strerror(errno));
        p = strstr(text, key);
        ck_assert_msg(p && sscanf(p + strlen(key), "%ld", &kib) == 1, "no %s in %s", field, path);
        free(text);
        return kib;
}

tb_client *harness_client(const TestDaemon *d) {
        tb_client *c = NULL;
        char *error = NULL;
        int r = tb_client_open(d->socket_path, &c, &error);

        ck_assert_msg(r == 0 && c, "tb_client_open(%s) = %d (%s): %s", d->socket_path, r, strerror(-r),
                      error ? error : "(no description)");
        free(error);
        tb_client_set_timeout_usec(c, 10 * 1000000);
        return c;
}

RawConn *raw_open(const char *path) {
        int fd = try_connect(path);
        RawConn *r;

        if (fd < 0) {
                errno = -fd;
                return NULL;
        }
        r = calloc(1, sizeof(*r));
        if (!r) {
                close(fd);
                errno = ENOMEM;
                return NULL;
        }
        r->fd = fd;
        return r;
}

RawConn *raw_close(RawConn *r) {
        if (!r)
                return NULL;
        if (r->fd >= 0)
                close(r->fd);
        free(r->buf);
        free(r);
        return NULL;
}

int raw_send(RawConn *r, const void *data, size_t len) {
        const char *p = data;

        while (len > 0) {
                ssize_t n = send(r->fd, p, len, MSG_NOSIGNAL);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                p += n;
                len -= (size_t)n;
        }
        return 0;
}

int raw_send_msg(RawConn *r, const char *json) {
        return raw_send(r, json, strlen(json) + 1);
}

/* Takes one complete message from the buffer, if there is one. */
static bool take_message(RawConn *r, char **ret) {
        char *nul = r->len ? memchr(r->buf, 0, r->len) : NULL;
        size_t n;

        if (!nul)
                return false;
        n = (size_t)(nul - r->buf) + 1;
        *ret = strdup(r->buf);
        ck_assert_ptr_nonnull(*ret);
        memmove(r->buf, r->buf + n, r->len - n);
        r->len -= n;
        return true;
}

/* Reads what is there within timeout_ms: >0 bytes read, 0 EOF, -ETIMEDOUT, -errno. */
static ssize_t fill(RawConn *r, int timeout_ms) {
        struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
        ssize_t n;
        int p;

        if (r->cap - r->len < 65536) {
                char *nb = realloc(r->buf, r->cap + 262144);
                ck_assert_ptr_nonnull(nb);
                r->buf = nb;
                r->cap += 262144;
        }
        do
                p = poll(&pfd, 1, timeout_ms);
        while (p < 0 && errno == EINTR);
        if (p < 0)
                return -errno;
        if (p == 0)
                return -ETIMEDOUT;
        n = read(r->fd, r->buf + r->len, r->cap - r->len);
        if (n < 0 && errno == ECONNRESET)
                return 0;
        if (n < 0)
                return -errno;
        r->len += (size_t)n;
        return n;
}

int raw_recv(RawConn *r, int timeout_ms, char **ret) {
        uint64_t deadline = harness_now_usec() + (uint64_t)timeout_ms * 1000u;

        for (;;) {
                uint64_t now;
                ssize_t n;

                if (take_message(r, ret))
                        return 1;
                now = harness_now_usec();
                if (now >= deadline)
                        return -ETIMEDOUT;
                n = fill(r, (int)((deadline - now + 999) / 1000));
                if (n <= 0)
                        return (int)n;
        }
}

int raw_expect_eof(RawConn *r, int timeout_ms, char **ret_data) {
        uint64_t deadline = harness_now_usec() + (uint64_t)timeout_ms * 1000u;

        for (;;) {
                uint64_t now = harness_now_usec();
                ssize_t n = -ETIMEDOUT;

                if (now < deadline)
                        n = fill(r, (int)((deadline - now + 999) / 1000));
                if (n == 0)
                        break;
                /* A reply that came instead of EOF is the better diagnosis than a timeout. */
                if (n < 0 && r->len == 0)
                        return (int)n;
                if (n < 0)
                        break;
        }
        if (r->len == 0)
                return 0;
        if (ret_data) {
                *ret_data = strndup(r->buf, r->len);
                ck_assert_ptr_nonnull(*ret_data);
        }
        return -EBADMSG;
}

json_object *raw_call(RawConn *r, const char *json, const char *what) {
        char *msg = NULL;
        json_object *reply;
        int k = raw_send_msg(r, json);

        ck_assert_msg(k == 0, "%s: sending %s failed: %s", what, json, strerror(-k));
        k = raw_recv(r, HARNESS_REPLY_TIMEOUT_MSEC, &msg);
        ck_assert_msg(k != 0, "%s: daemon closed the connection instead of replying to %s", what, json);
        ck_assert_msg(k > 0, "%s: no reply to %s: %s", what, json, strerror(-k));
        reply = json_tokener_parse(msg);
        ck_assert_msg(reply && json_object_is_type(reply, json_type_object),
                      "%s: reply to %s is not a JSON object: %s", what, json, msg);
        free(msg);
        return reply;
}

char *harness_padded_getinfo(size_t len) {
        static const char head[] = "{\"method\":\"org.varlink.service.GetInfo\"";
        char *m = malloc(len + 1);

        ck_assert(m && len > sizeof(head));
        memcpy(m, head, sizeof(head) - 1);
        memset(m + sizeof(head) - 1, ' ', len - sizeof(head));
        m[len - 1] = '}';
        m[len] = 0;
        return m;
}

const char *reply_error(json_object *reply) {
        json_object *e;

        if (!json_object_object_get_ex(reply, "error", &e))
                return NULL;
        return json_object_get_string(e);
}

json_object *reply_parameters(json_object *reply) {
        static json_object *empty;
        json_object *p;

        if (json_object_object_get_ex(reply, "parameters", &p) && json_object_is_type(p, json_type_object))
                return p;
        if (!empty)
                empty = json_object_new_object();
        return empty;
}

int64_t json_int(json_object *o, const char *key, const char *what) {
        json_object *v;

        ck_assert_msg(o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_int),
                      "%s: no integer \"%s\" in %s", what, key,
                      o ? json_object_to_json_string(o) : "(null)");
        return json_object_get_int64(v);
}

const char *json_str(json_object *o, const char *key, const char *what) {
        json_object *v;

        ck_assert_msg(o && json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string),
                      "%s: no string \"%s\" in %s", what, key, o ? json_object_to_json_string(o) : "(null)");
        return json_object_get_string(v);
}

json_object *harness_admin(tb_client *c, const char *method) {
        char name[128], *text = NULL;
        json_object *o;
        int r;

        snprintf(name, sizeof(name), "io.tokenbudget.admin.%s", method);
        /* Tests look at idle scopes too: Status lists them only when asked. */
        r = tb_call(c, name, strcmp(method, "Status") == 0 ? "{\"all\":true}" : NULL, &text);
        ck_assert_msg(r == 0, "tb_call(%s) = %d (%s): %s", name, r, strerror(-r), tb_client_error(c));
        ck_assert_msg(text, "tb_call(%s) returned no reply text", name);
        o = json_tokener_parse(text);
        ck_assert_msg(o && json_object_is_type(o, json_type_object), "%s reply is not an object: %s", name,
                      text);
        free(text);
        return o;
}

json_object *status_scope(json_object *status, const char *name) {
        json_object *scopes;

        if (!json_object_object_get_ex(status, "scopes", &scopes) ||
            !json_object_is_type(scopes, json_type_array))
                return NULL;
        for (size_t i = 0; i < json_object_array_length(scopes); i++) {
                json_object *s = json_object_array_get_idx(scopes, i), *n;

                if (json_object_object_get_ex(s, "name", &n) && strcmp(json_object_get_string(n), name) == 0)
                        return s;
        }
        return NULL;
}

int64_t scope_window_used(json_object *scope, const char *span, int64_t *ret_limit) {
        json_object *windows, *limit;

        ck_assert_msg(json_object_object_get_ex(scope, "windows", &windows) &&
                              json_object_is_type(windows, json_type_array),
                      "scope without windows array: %s", json_object_to_json_string(scope));
        for (size_t i = 0; i < json_object_array_length(windows); i++) {
                json_object *w = json_object_array_get_idx(windows, i);

                if (strcmp(json_str(w, "span", "window"), span) != 0)
                        continue;
                if (ret_limit)
                        *ret_limit = json_object_object_get_ex(w, "limit", &limit) && limit
                                             ? json_object_get_int64(limit)
                                             : -1;
                return json_int(w, "used", "window");
        }
        ck_abort_msg("scope has no \"%s\" window: %s", span, json_object_to_json_string(scope));
        return -1;
}

static void exec_command(char *const argv[], char *const env_extra[], const char *out, const char *err,
                         pid_t parent) {
        int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int o = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        int e = open(err, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent || null < 0 || o < 0 || e < 0)
                _exit(127);
        (void)dup2(null, STDIN_FILENO);
        (void)dup2(o, STDOUT_FILENO);
        (void)dup2(e, STDERR_FILENO);
        for (size_t i = 0; env_extra && env_extra[i]; i++)
                (void)putenv(env_extra[i]);
        execv(argv[0], argv);
        dprintf(STDERR_FILENO, "harness: exec %s: %m\n", argv[0]);
        _exit(127);
}

void harness_run(char *const argv[], char *const env_extra[], int timeout_ms, CommandResult *ret) {
        char out[300], err[300];
        uint64_t deadline = harness_now_usec() + (uint64_t)timeout_ms * 1000u;
        static unsigned counter;
        pid_t parent = getpid(), pid;
        int status = 0;

        snprintf(out, sizeof(out), "%s/cmd-%d-%u.out", harness_dir(), (int)parent, counter);
        snprintf(err, sizeof(err), "%s/cmd-%d-%u.err", harness_dir(), (int)parent, counter++);
        pid = fork();
        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0)
                exec_command(argv, env_extra, out, err, parent);
        for (;;) {
                pid_t r = waitpid(pid, &status, WNOHANG);

                ck_assert_msg(r >= 0, "waitpid: %s", strerror(errno));
                if (r == pid)
                        break;
                if (harness_now_usec() >= deadline) {
                        (void)kill(pid, SIGKILL);
                        (void)waitpid(pid, NULL, 0);
                        ck_abort_msg("%s did not exit within %d ms", argv[0], timeout_ms);
                }
                harness_sleep_msec(5);
        }
        ret->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        ret->out = harness_read_file(out, NULL);
        ret->err = harness_read_file(err, NULL);
        ck_assert_msg(ret->out && ret->err, "cannot read the output of %s", argv[0]);
}

void command_result_done(CommandResult *r) {
        free(r->out);
        free(r->err);
        r->out = r->err = NULL;
}

int harness_cycle(tb_client *c, int64_t estimate, const char **ret_failed_call) {
        tb_request_params params = {.estimate = estimate > 0 ? (uint64_t)estimate : 0};
        tb_grant g;
        tb_release_reply rel;
        int r;

        r = tb_request(c, &params, &g);
        if (r < 0) {
                *ret_failed_call = "tb_request";
                return r;
        }
        r = tb_report(c,
                      &(tb_report_params){.allocation = g.allocation,
                                          .input_tokens = g.granted / 2,
                                          .output_tokens = g.granted / 4},
                      NULL);
        if (r < 0) {
                *ret_failed_call = "tb_report";
                return r;
        }
        r = tb_release(c, &(tb_release_params){.allocation = g.allocation}, &rel);
        if (r < 0) {
                *ret_failed_call = "tb_release";
                return r;
        }
        if (rel.used != g.granted / 2 + g.granted / 4 || rel.used + rel.refunded != g.hard_limit) {
                *ret_failed_call = "tb_release (wrong used/refunded)";
                return -EBADE;
        }
        return 0;
}

json_object *harness_callf(RawConn *r, const char *fmt, ...) {
        json_object *reply;
        va_list ap;
        char *msg;

        va_start(ap, fmt);
        ck_assert_int_ge(vasprintf(&msg, fmt, ap), 0);
        va_end(ap);
        reply = raw_call(r, msg, msg);
        free(msg);
        return reply;
}

json_object *harness_reply_within(RawConn *r, int timeout_ms) {
        char *msg = NULL;
        json_object *o;

        if (raw_recv(r, timeout_ms, &msg) <= 0)
                return NULL;
        o = json_tokener_parse(msg);
        ck_assert_msg(o, "not JSON: %s", msg);
        free(msg);
        return o;
}
