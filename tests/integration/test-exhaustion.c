/* SPDX-License-Identifier: MIT */
/*
 * Integration tests of what a hostile local user can exhaust, and that the
 * daemon keeps serving everyone else when one does (issue 7, points 7, 8, 11
 * and the last part of 12): file descriptors (a max_connections that does not
 * fit RLIMIT_NOFILE is refused at start and on reload; with every connection
 * slot taken, the watchdog, a reload and an admin still work), the output one
 * uid's slow readers pin together, the process budgets
 * limits.max_tracked_processes keeps (usage is never forgotten to make room,
 * exited processes make room, and one user's processes must not lock the
 * admins out), and the log lines a connection flood causes (at most a burst
 * per interval, the rest counted).
 * Each test runs the real daemon with tight limits, some under a fake
 * $NOTIFY_SOCKET; the bounds one connection hits alone are test-limits.c's.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "tb-check.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/sockios.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define N_ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- helpers ---- */

static char *daemon_log(const TestDaemon *d) {
        char *text = harness_read_file(d->log_path, NULL);

        ck_assert_msg(text, "cannot read the daemon's stderr %s: %s", d->log_path, strerror(errno));
        return text;
}

static size_t count_substr(const char *text, const char *needle) {
        size_t n = 0;

        for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

static bool log_contains(const TestDaemon *d, const char *needle) {
        char *text = daemon_log(d);
        bool found = strstr(text, needle) != NULL;

        free(text);
        return found;
}

/* Replaces the config file at once (rename), so a reload never reads half of it. */
static void config_rewrite(const TestDaemon *d, const char *text) {
        char tmp[320];
        FILE *f;

        snprintf(tmp, sizeof(tmp), "%s.new", d->config_path);
        f = fopen(tmp, "we");
        ck_assert_msg(f, "cannot create %s: %s", tmp, strerror(errno));
        fputs(text, f);
        ck_assert_msg(fclose(f) == 0, "cannot write %s: %s", tmp, strerror(errno));
        ck_assert_msg(rename(tmp, d->config_path) == 0, "rename %s: %s", tmp, strerror(errno));
}

static RawConn *raw_from_fd(int fd) {
        RawConn *r = calloc(1, sizeof(*r));

        ck_assert_ptr_nonnull(r);
        r->fd = fd;
        return r;
}

static void assert_getinfo(RawConn *r, const char *what) {
        json_object *reply = raw_call(r, HARNESS_GETINFO_CALL, what);

        ck_assert_msg(!reply_error(reply), "%s: GetInfo answered %s", what,
                      json_object_to_json_string(reply));
        json_object_put(reply);
}

static json_object *admin_status(tb_client *admin) {
        return harness_admin(admin, "Status");
}

/* ---- a fake $NOTIFY_SOCKET ---- */

#define NOTIFY_MSG_MAX 4096

/* Binds a datagram socket in the test case's directory; its path in path. */
static int notify_socket_open(char *path, size_t size) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        int fd;

        ck_assert_msg((size_t)snprintf(path, size, "%s/notify", harness_dir()) < size &&
                              strlen(path) < sizeof(sa.sun_path),
                      "notify socket path in %s is too long", harness_dir());
        strcpy(sa.sun_path, path);
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ck_assert_msg(fd >= 0, "socket(AF_UNIX, SOCK_DGRAM): %s", strerror(errno));
        ck_assert_msg(bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0, "bind %s: %s", path,
                      strerror(errno));
        return fd;
}

/* One datagram within timeout_ms: 1 (NUL-terminated in buf), 0 none. */
static int notify_recv(int fd, int timeout_ms, char *buf, size_t size) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        ssize_t n;
        int p;

        do
                p = poll(&pfd, 1, timeout_ms);
        while (p < 0 && errno == EINTR);
        ck_assert_msg(p >= 0, "poll on the notify socket: %s", strerror(errno));
        if (p == 0)
                return 0;
        n = recv(fd, buf, size - 1, MSG_DONTWAIT);
        ck_assert_msg(n >= 0, "recv on the notify socket: %s", strerror(errno));
        buf[n] = 0;
        return 1;
}

/* Whether a line of the sd_notify message msg starts with prefix (and contains contains). */
static bool msg_has_line(const char *msg, const char *prefix, const char *contains) {
        for (const char *line = msg; *line;) {
                size_t len = strcspn(line, "\n");

                if (strncmp(line, prefix, strlen(prefix)) == 0 &&
                    (!contains || memmem(line, len, contains, strlen(contains))))
                        return true;
                line += len;
                if (*line == '\n')
                        line++;
        }
        return false;
}

static void notify_drain(int fd) {
        char buf[NOTIFY_MSG_MAX];

        while (notify_recv(fd, 0, buf, sizeof(buf)) == 1)
                ;
}

/* Waits for a message with a line starting with prefix (and containing contains). */
static bool notify_wait(int fd, const char *prefix, const char *contains, int timeout_ms) {
        uint64_t deadline = harness_now_usec() + (uint64_t)timeout_ms * 1000u;
        char buf[NOTIFY_MSG_MAX];

        for (;;) {
                uint64_t now = harness_now_usec();

                if (now >= deadline ||
                    notify_recv(fd, (int)((deadline - now + 999) / 1000), buf, sizeof(buf)) == 0)
                        return false;
                if (msg_has_line(buf, prefix, contains))
                        return true;
        }
}

/* How many messages with the line "line" arrive within window_ms. */
static unsigned notify_count(int fd, const char *line, int window_ms) {
        uint64_t deadline = harness_now_usec() + (uint64_t)window_ms * 1000u;
        char buf[NOTIFY_MSG_MAX];
        unsigned n = 0;

        for (;;) {
                uint64_t now = harness_now_usec();

                if (now >= deadline ||
                    notify_recv(fd, (int)((deadline - now + 999) / 1000), buf, sizeof(buf)) == 0)
                        return n;
                if (msg_has_line(buf, line, NULL))
                        n++;
        }
}

/* ---- file descriptors (point 7) ---- */

/* The daemon's RLIMIT_NOFILE in these tests; it keeps 64 (SERVER_RESERVED_FDS)
 * for itself, so 136 connections is the most that fits. */
#define FD_NOFILE 200
#define FD_LIMITS_CONFIG                                                                                    \
        "limits: { max_connections = 136; max_connections_per_uid = 120; admin_connections = 8; };\n"
/* uid 65534 floods; uid 65533 takes what is left of the 136 - 8 non-admin slots. */
#define FD_FLOOD_ATTEMPTS  300
#define FD_FLOOD_HELD      120
#define FD_FILLER_ATTEMPTS 10
#define FD_FILLER_HELD     8
#define FD_ROOT_HELD       8 /* the admin slots: a raw connection, the admin client and 6 more */
/* WATCHDOG_USEC=600000: the daemon pets every 300 ms, so ~6 in 2 s; 3 leaves room for a slow machine. */
#define FD_WATCHDOG_WINDOW_MSEC 2000
#define FD_WATCHDOG_MIN         3
#define FD_DEFAULT_ESTIMATE     777

START_TEST(test_fd_limit_refused_at_start) {
        /* What a person needs to fix it: the setting, its value, the limit, what fits (200 - 64). */
        static const char *const expected[] = {"limits.max_connections", "1024", "200", "136",
                                               "file descriptor limit"};
        char *err = NULL;
        int status = harness_daemon_run_to_exit("limits: { max_connections = 1024; };\n",
                                                &(HarnessDaemonOptions){.nofile = FD_NOFILE}, 5000, &err);

        ck_assert_msg(
                status == 2,
                "tokenbudgetd with max_connections = 1024 under RLIMIT_NOFILE %d exited %d, expected 2 "
                "(a configuration error); stderr:\n%s",
                FD_NOFILE, status, err);
        for (size_t i = 0; i < N_ELEMENTS(expected); i++)
                ck_assert_msg(strstr(err, expected[i]),
                              "the refusal does not name \"%s\" (expected the setting, its value 1024, the "
                              "limit %d and the largest value that fits, 136); stderr:\n%s",
                              expected[i], FD_NOFILE, err);
        free(err);
}
END_TEST

/*
 * Opens attempts connections as uid and waits until the daemon has closed all
 * but held of them (the rest are over a limit: accepted, then closed). The
 * closed ones are closed here too; the held ones stay in fds.
 */
static void connect_as_and_hold(const TestDaemon *d, uid_t uid, int *fds, size_t attempts, size_t held,
                                const char *what) {
        uint64_t deadline = harness_now_usec() + 10000000;
        struct pollfd *pfd = calloc(attempts, sizeof(*pfd));
        size_t closed = 0;

        ck_assert_ptr_nonnull(pfd);
        ck_assert_msg(harness_connect_as(d->socket_path, uid, attempts, fds) == attempts,
                      "%s: not every connect() of uid %u succeeded; the daemon must accept and close those "
                      "over its limits",
                      what, (unsigned)uid);
        while (closed < attempts - held && harness_now_usec() < deadline) {
                for (size_t i = 0; i < attempts; i++)
                        pfd[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
                if (poll(pfd, attempts, 100) <= 0)
                        continue;
                for (size_t i = 0; i < attempts; i++) {
                        char byte;
                        ssize_t n;

                        if (fds[i] < 0 || !pfd[i].revents)
                                continue;
                        n = recv(fds[i], &byte, 1, MSG_DONTWAIT);
                        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                                continue;
                        ck_assert_msg(n <= 0, "%s: the daemon sent data on a connection that sent nothing",
                                      what);
                        close(fds[i]);
                        fds[i] = -1;
                        closed++;
                }
        }
        free(pfd);
        ck_assert_msg(closed == attempts - held,
                      "%s: the daemon closed %zu of %zu connections of uid %u within 10 s, expected %zu "
                      "closed and %zu held",
                      what, closed, attempts, (unsigned)uid, attempts - held, held);
}

static void close_all(int *fds, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (fds[i] >= 0) {
                        close(fds[i]);
                        fds[i] = -1;
                }
}

/* A Request without an estimate is granted default_estimate: the config in force. */
static int64_t default_grant(tb_client *c, const char *what) {
        tb_grant g;
        int r = tb_request(c, &(tb_request_params){}, &g);

        ck_assert_msg(r == 0, "%s: Request without an estimate: %d %s", what, r, tb_client_error(c));
        r = tb_release(c, &(tb_release_params){.allocation = g.allocation}, NULL);
        ck_assert_msg(r == 0, "%s: Release: %d %s", what, r, tb_client_error(c));
        return (int64_t)g.granted;
}

/* Rewrites the config, sends SIGHUP, and waits for RELOADING=1, then READY=1. */
static void reload(const TestDaemon *d, int notify_fd, const char *config, const char *what) {
        config_rewrite(d, config);
        notify_drain(notify_fd);
        ck_assert_msg(kill(d->pid, SIGHUP) == 0, "kill(SIGHUP): %s", strerror(errno));
        ck_assert_msg(notify_wait(notify_fd, "RELOADING=1", NULL, 5000),
                      "%s: no RELOADING=1 on the notify socket within 5 s of SIGHUP", what);
        ck_assert_msg(notify_wait(notify_fd, "READY=1", NULL, 5000),
                      "%s: RELOADING=1 was not followed by READY=1 within 5 s", what);
}

START_TEST(test_fd_exhaustion) {
        char notify_path[108], env_notify[160], config[512];
        const char *env[] = {env_notify, "WATCHDOG_USEC=600000", NULL};
        int notify_fd = notify_socket_open(notify_path, sizeof(notify_path));
        int flood[FD_FLOOD_ATTEMPTS], filler[FD_FILLER_ATTEMPTS];
        bool root = tb_check_need_root_part("fd exhaustion: every slot taken by uids 65534 and 65533");
        RawConn *raw[FD_ROOT_HELD - 1];
        int64_t connections, expected_connections = FD_ROOT_HELD;
        unsigned watchdogs;
        json_object *status;
        tb_client *admin;
        TestDaemon *d;

        snprintf(env_notify, sizeof(env_notify), "NOTIFY_SOCKET=%s", notify_path);
        d = harness_daemon_start_with(FD_LIMITS_CONFIG,
                                      &(HarnessDaemonOptions){.env = env, .nofile = FD_NOFILE});
        ck_assert_msg(notify_wait(notify_fd, "READY=1", NULL, 5000), "no READY=1 within 5 s of the start");

        /* Every slot taken: 120 of uid 65534 (180 more refused), 8 of uid
         * 65533 (the rest of the non-admin slots), and root in the 8 admin ones. */
        if (root) {
                connect_as_and_hold(d, 65534, flood, FD_FLOOD_ATTEMPTS, FD_FLOOD_HELD,
                                    "uid 65534's flood (max_connections_per_uid = 120)");
                connect_as_and_hold(d, 65533, filler, FD_FILLER_ATTEMPTS, FD_FILLER_HELD,
                                    "uid 65533 (136 - 8 admin slots - 120)");
                expected_connections += FD_FLOOD_HELD + FD_FILLER_HELD;
        }
        admin = harness_client(d);
        for (size_t i = 0; i < N_ELEMENTS(raw); i++)
                raw[i] = harness_open_working(d, "a root connection in the admin slots");
        if (root)
                harness_assert_refused(d, "a root connection with all 136 slots taken");

        /* The watchdog keeps coming: under the unit, a missed one restarts the daemon. */
        notify_drain(notify_fd);
        watchdogs = notify_count(notify_fd, "WATCHDOG=1", FD_WATCHDOG_WINDOW_MSEC);
        ck_assert_msg(watchdogs >= FD_WATCHDOG_MIN,
                      "%u WATCHDOG=1 in %d ms with every connection slot taken (WATCHDOG_USEC=600000: "
                      "expected ~6, at least %d)",
                      watchdogs, FD_WATCHDOG_WINDOW_MSEC, FD_WATCHDOG_MIN);

        assert_getinfo(raw[0], "a root raw connection with every slot taken");
        status = admin_status(admin);
        connections = json_int(status, "connections", "Status with every slot taken");
        ck_assert_msg(
                connections == expected_connections,
                "Status: %lld connections, expected %lld (120 of uid 65534, 8 of uid 65533, 8 of root)",
                (long long)connections, (long long)expected_connections);
        json_object_put(status);

        /* A reload with a new value works with every slot taken... */
        snprintf(config, sizeof(config), "%sdefault_estimate = %d;\n", FD_LIMITS_CONFIG,
                 FD_DEFAULT_ESTIMATE);
        reload(d, notify_fd, config, "reload to default_estimate = 777");
        ck_assert_int_eq(default_grant(admin, "after the reload"), FD_DEFAULT_ESTIMATE);

        /* ...and one whose max_connections does not fit is refused, saying why. */
        reload(d, notify_fd,
               "default_estimate = 1234;\nlimits: { max_connections = 1000; max_connections_per_uid = 120; "
               "};\n",
               "reload to max_connections = 1000");
        ck_assert_msg(notify_wait(notify_fd, "STATUS=", "does not fit the file descriptor limit", 3000),
                      "no STATUS= saying the reload was rejected (does not fit the file descriptor limit)");
        ck_assert_msg(log_contains(d, "does not fit the file descriptor limit"),
                      "the daemon's stderr does not say why max_connections = 1000 was rejected under "
                      "RLIMIT_NOFILE %d",
                      FD_NOFILE);
        ck_assert_msg(waitpid(d->pid, NULL, WNOHANG) == 0, "the daemon exited after a rejected reload");
        assert_getinfo(raw[0], "a root raw connection after the rejected reload");
        ck_assert_msg(default_grant(admin, "after the rejected reload") == FD_DEFAULT_ESTIMATE,
                      "after a rejected reload the old config (default_estimate = %d) must stay in force",
                      FD_DEFAULT_ESTIMATE);

        if (root) {
                close_all(flood, FD_FLOOD_ATTEMPTS);
                close_all(filler, FD_FILLER_ATTEMPTS);
        }
        for (size_t i = 0; i < N_ELEMENTS(raw); i++)
                raw_close(raw[i]);
        tb_client_close(admin);
        harness_daemon_stop(d);
        close(notify_fd);
}
END_TEST

/* ---- output queued for one uid (point 11) ---- */

#define FLOOD_CALL                                                                                          \
        "{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":{\"interface\":\"io."   \
        "tokenbudget.agent\"}}"
#define OUTPUT_CONFIG                                                                                       \
        "log_level = \"debug\";\n"                                                                          \
        "limits: { max_output_bytes = 262144; max_output_bytes_per_uid = 524288; };\n"
#define OUTPUT_CONNS       8
#define OUTPUT_BATCH_CALLS 8 /* ~22 KiB of replies (~2.8 KiB each): far below 256 KiB per read */
#define OUTPUT_FLOOD_USEC  (4 * UINT64_C(1000000))
/* Once the per-uid line is logged, the others keep sending this long, to be cut off too. */
#define OUTPUT_AFTER_USEC UINT64_C(500000)
#define OUTPUT_REASON     "limits.max_output_bytes_per_uid"
/*
 * The daemon's peak RSS may grow by this much. Past what the kernel's socket
 * buffers hold (~200 KiB per connection, not the daemon's memory), the
 * per-uid bound leaves at most 512 KiB (+ one reply) queued in the daemon
 * for the 8 connections together, where 8 x 256 KiB = 2 MiB would be without
 * it. 1280 KiB is 512 KiB of queue plus 768 KiB for allocator slack and
 * everything else, and still well below the 2 MiB the per-connection bound
 * alone allows. Measured on x86-64: ~400 KiB of growth with the bound, ~4.8
 * MiB with max_output_bytes_per_uid = 1 GiB (no bound).
 */
#define OUTPUT_HWM_GROWTH_KIB 1280
/* Under ASan (the daemon is built as this test is) freed memory stays
 * resident in its quarantine: the peak says nothing about the queue. */
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(__SANITIZE_ADDRESS__)
#define __SANITIZE_ADDRESS__ 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define OUTPUT_RSS_MEANINGFUL false
#else
#define OUTPUT_RSS_MEANINGFUL true
#endif

/*
 * Sends batches of calls round-robin without reading, a new batch to a
 * connection only once the daemon has read the last one (SIOCOUTQ 0), so
 * that every connection's backlog grows evenly and none reaches 256 KiB
 * alone. Stops OUTPUT_AFTER_USEC after the daemon logs the per-uid reason, or
 * after OUTPUT_FLOOD_USEC. Returns the number of calls sent.
 */
static size_t flood_round_robin(const TestDaemon *d, RawConn **conns) {
        static const char call[] = FLOOD_CALL;
        char batch[OUTPUT_BATCH_CALLS * sizeof(call)];
        size_t offset[OUTPUT_CONNS] = {0}, sent = 0;
        bool gone[OUTPUT_CONNS] = {false};
        uint64_t start = harness_now_usec(), stop = start + OUTPUT_FLOOD_USEC, next_check = start;

        for (size_t i = 0; i < OUTPUT_BATCH_CALLS; i++)
                memcpy(batch + i * sizeof(call), call, sizeof(call));
        for (size_t c = 0; c < OUTPUT_CONNS; c++)
                ck_assert_int_eq(fcntl(conns[c]->fd, F_SETFL, O_NONBLOCK), 0);
        for (uint64_t now = start; now < stop; now = harness_now_usec()) {
                bool progressed = false;

                for (size_t c = 0; c < OUTPUT_CONNS; c++) {
                        int unread = 0;
                        ssize_t n;

                        if (gone[c])
                                continue;
                        if (offset[c] == 0 && (ioctl(conns[c]->fd, SIOCOUTQ, &unread) < 0 || unread > 0))
                                continue;
                        n = send(conns[c]->fd, batch + offset[c], sizeof(batch) - offset[c], MSG_NOSIGNAL);
                        if (n < 0) {
                                /* EPIPE or ECONNRESET: the daemon closed it, as it may */
                                gone[c] = errno != EAGAIN && errno != EINTR;
                                continue;
                        }
                        progressed = true;
                        offset[c] += (size_t)n;
                        if (offset[c] == sizeof(batch)) {
                                offset[c] = 0;
                                sent += OUTPUT_BATCH_CALLS;
                        }
                }
                if (now >= next_check && stop == start + OUTPUT_FLOOD_USEC) {
                        next_check = now + 50000;
                        if (log_contains(d, OUTPUT_REASON))
                                stop = now + OUTPUT_AFTER_USEC;
                }
                if (!progressed)
                        harness_sleep_msec(1);
        }
        for (size_t c = 0; c < OUTPUT_CONNS; c++)
                ck_assert_int_eq(fcntl(conns[c]->fd, F_SETFL, 0), 0);
        return sent;
}

/* Reads replies until EOF (true) or until none comes for 2 s (false). */
static bool drain_to_eof(RawConn *r, size_t *ret_replies) {
        char *msg = NULL;
        int k;

        while ((k = raw_recv(r, 2000, &msg)) == 1) {
                (*ret_replies)++;
                free(msg);
        }
        return k == 0;
}

START_TEST(test_output_per_uid) {
        TestDaemon *d = harness_daemon_start(OUTPUT_CONFIG);
        RawConn *conns[OUTPUT_CONNS], *other = NULL;
        size_t sent, replies = 0, closed = 0;
        long hwm_before, hwm_after;
        const char *call = "";
        tb_client *client;
        int fd, k;

        for (size_t c = 0; c < OUTPUT_CONNS; c++)
                conns[c] = harness_open_working(d, "a connection to flood");
        if (tb_check_need_root_part("per-uid output: uid 65534 served during root's backlog")) {
                ck_assert_uint_eq(harness_connect_as(d->socket_path, 65534, 1, &fd), 1);
                other = raw_from_fd(fd);
                assert_getinfo(other, "uid 65534 before the flood");
        }
        hwm_before = harness_daemon_mem_kib(d, "VmHWM");
        sent = flood_round_robin(d, conns);
        hwm_after = harness_daemon_mem_kib(d, "VmHWM");

        ck_assert_msg(log_contains(d, OUTPUT_REASON),
                      "%zu calls sent over %d unread connections of one uid (each below max_output_bytes = "
                      "256 KiB), and no connection was closed for " OUTPUT_REASON " (512 KiB)",
                      sent, OUTPUT_CONNS);
        if (OUTPUT_RSS_MEANINGFUL)
                ck_assert_msg(hwm_after - hwm_before < OUTPUT_HWM_GROWTH_KIB,
                              "the daemon's peak RSS grew by %ld KiB (VmHWM %ld -> %ld KiB) while one uid's "
                              "unread replies were bounded at 512 KiB; allowed %d KiB",
                              hwm_after - hwm_before, hwm_before, hwm_after, OUTPUT_HWM_GROWTH_KIB);
        else
                printf("NOTE per-uid output: built with ASan, whose quarantine keeps freed buffers "
                       "resident; the peak RSS bound is not checked (growth %ld KiB)\n",
                       hwm_after - hwm_before);
        /* Another uid is not charged for root's backlog. */
        if (other)
                assert_getinfo(other, "uid 65534 while root's connections are cut off");

        for (size_t c = 0; c < OUTPUT_CONNS; c++)
                closed += drain_to_eof(conns[c], &replies);
        ck_assert_msg(closed >= 1,
                      "none of the %d flooding connections reached EOF (%zu calls sent, %zu replies read)",
                      OUTPUT_CONNS, sent, replies);
        ck_assert_msg(replies < sent, "all %zu replies were delivered; expected the daemon to cut some off",
                      sent);
        for (size_t c = 0; c < OUTPUT_CONNS; c++)
                raw_close(conns[c]);
        raw_close(other);

        client = harness_client(d);
        for (int i = 0; i < 3; i++) {
                k = harness_cycle(client, 100, &call);
                ck_assert_msg(k == 0, "a client's cycle %d after the flood: %s: %d %s", i, call, k,
                              tb_client_error(client));
        }
        tb_client_close(client);
        harness_daemon_stop(d);
}
END_TEST

/* ---- max_tracked_processes (point 12) ---- */

/* With max_tracked_processes = 4, the test process (its admin connection)
 * and 3 children fill it. */
#define TRACKED_CHILDREN 3
#define CHILD_TOKENS     100

/* Request (estimate 100), Report (60 + 40), Release: 0 when 100 were used, else what failed. */
static int child_cycle(const char *socket_path) {
        tb_client *c = NULL;
        tb_release_reply rel;
        tb_grant g;
        int r;

        if (tb_client_open(socket_path, &c, NULL) < 0)
                return 10;
        tb_client_set_timeout_usec(c, 10 * 1000000);
        r = tb_request(c, &(tb_request_params){.estimate = CHILD_TOKENS}, &g) < 0 ? 11
            : tb_report(c,
                        &(tb_report_params){.allocation = g.allocation,
                                            .input_tokens = 60,
                                            .output_tokens = CHILD_TOKENS - 60},
                        NULL) < 0
                    ? 12
            : tb_release(c, &(tb_release_params){.allocation = g.allocation}, &rel) < 0 ? 13
            : rel.used != CHILD_TOKENS                                                  ? 14
                                                                                        : 0;
        tb_client_close(c);
        return r;
}

/* In a forked child: become uid (unless it is -1), and die with the test process. */
static bool child_setup(uid_t uid) {
        if (uid != (uid_t)-1 && (setgroups(0, NULL) < 0 || setgid(uid) < 0 || setuid(uid) < 0))
                return false;
        /* After setuid: a change of credentials clears the parent-death signal. */
        (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
        return true;
}

/* A child (as uid) that does one cycle, says how it went on done_fd, and
 * stays alive (a live process whose budget the daemon must keep) until
 * hold[1] is closed. */
static pid_t spawn_holding_child(const TestDaemon *d, uid_t uid, const int hold[2], int done_fd) {
        pid_t pid = fork();

        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                char byte;

                close(hold[1]);
                byte = child_setup(uid) ? (char)child_cycle(d->socket_path) : 20;
                if (write(done_fd, &byte, 1) != 1 || byte != 0)
                        _exit(1);
                while (read(hold[0], &byte, 1) < 0 && errno == EINTR)
                        ;
                _exit(0);
        }
        return pid;
}

static int wait_child(pid_t pid) {
        int status = 0;

        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* A child process that connects and sends GetInfo: exit 0 when it gets EOF (refused), 1 when served. */
static int refused_child(const TestDaemon *d, uid_t uid) {
        pid_t pid = fork();

        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                RawConn *r;
                int k;

                if (!child_setup(uid))
                        _exit(20);
                r = raw_open(d->socket_path);
                if (!r)
                        _exit(2);
                k = raw_send_msg(r, HARNESS_GETINFO_CALL);
                if (k < 0 && k != -EPIPE && k != -ECONNRESET)
                        _exit(3);
                k = raw_expect_eof(r, HARNESS_REPLY_TIMEOUT_MSEC, NULL);
                _exit(k == 0 ? 0 : k == -EBADMSG ? 1 : 4);
        }
        return wait_child(pid);
}

/* A child that retries its cycle for 3 s: the daemon looks for exited processes once a second. */
static int cycling_child(const TestDaemon *d, uid_t uid) {
        pid_t pid = fork();

        ck_assert_msg(pid >= 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                uint64_t deadline = harness_now_usec() + 3000000;
                int r;

                if (!child_setup(uid))
                        _exit(20);
                while ((r = child_cycle(d->socket_path)) != 0 && harness_now_usec() < deadline)
                        harness_sleep_msec(100);
                _exit(r);
        }
        return wait_child(pid);
}

static void assert_process_used(json_object *status, pid_t pid, int64_t expected, const char *what) {
        char name[32];
        json_object *scope;
        int64_t used;

        snprintf(name, sizeof(name), "process:%d", (int)pid);
        scope = status_scope(status, name);
        ck_assert_msg(scope, "%s: Status has no scope %s (its usage was forgotten): %s", what, name,
                      json_object_to_json_string(status));
        used = scope_window_used(scope, "minute", NULL);
        ck_assert_msg(used == expected, "%s: %s used %lld in the minute window, expected %lld", what, name,
                      (long long)used, (long long)expected);
}

/* The agents' uid: not an admin's (root and the daemon's own uid are never
 * refused a process slot), so the test needs root to setuid to it. */
#define TRACKED_AGENT_UID 65534

START_TEST(test_max_tracked_processes) {
        uid_t agent_uid = TRACKED_AGENT_UID;
        TestDaemon *d;
        tb_client *admin;
        pid_t children[TRACKED_CHILDREN];
        int hold[2], done[2], k;
        json_object *status, *global;
        int64_t used;

        if (!tb_check_need_root("max_tracked_processes: agents of uid 65534, which is not an admin"))
                return;
        d = harness_daemon_start("limits: { max_tracked_processes = 4; };\n");
        /* Connected first and kept: the test process is one of the 4 tracked. */
        admin = harness_client(d);
        ck_assert_msg(pipe2(hold, O_CLOEXEC) == 0 && pipe2(done, O_CLOEXEC) == 0, "pipe: %s",
                      strerror(errno));
        for (size_t i = 0; i < TRACKED_CHILDREN; i++) {
                struct pollfd pfd = {.fd = done[0], .events = POLLIN};
                char byte = 1;

                children[i] = spawn_holding_child(d, agent_uid, hold, done[1]);
                ck_assert_msg(poll(&pfd, 1, 15000) == 1 && read(done[0], &byte, 1) == 1,
                              "child %zu did not finish its cycle within 15 s", i);
                ck_assert_msg(byte == 0,
                              "child %zu: its cycle failed (step %d: 10 connect, 11 Request, 12 "
                              "Report, 13 Release, 14 used != 100, 20 setuid)",
                              i, byte);
        }

        /* (a) All 4 tracked processes are alive: a 5th is refused, nobody's usage dropped. */
        k = refused_child(d, agent_uid);
        ck_assert_msg(
                k == 0,
                "a new process with 4 live processes tracked (max_tracked_processes = 4): child status "
                "%d, expected 0 (connection closed; 1: it was served, so some usage was dropped; 20: "
                "setuid)",
                k);
        status = admin_status(admin);
        for (size_t i = 0; i < TRACKED_CHILDREN; i++)
                assert_process_used(status, children[i], CHILD_TOKENS, "a live child after the refusal");
        json_object_put(status);

        /* (b) Once they exit, their budgets can go: no process can spend from them again. */
        close(hold[1]);
        for (size_t i = 0; i < TRACKED_CHILDREN; i++)
                ck_assert_msg((k = wait_child(children[i])) == 0, "holding child %zu exited %d", i, k);
        k = cycling_child(d, agent_uid);
        ck_assert_msg(
                k == 0,
                "a new process after the 3 tracked children exited: its cycle failed (status %d: 10 "
                "connect, 11 Request (refused?), 12 Report, 13 Release, 14 used != 100, 20 setuid) for 3 s",
                k);
        status = admin_status(admin);
        for (size_t i = 0; i < TRACKED_CHILDREN; i++) {
                char name[32];

                snprintf(name, sizeof(name), "process:%d", (int)children[i]);
                ck_assert_msg(!status_scope(status, name), "the scope of exited child %s is still kept",
                              name);
        }
        /* Dropping their scopes lost no usage: global holds all 4 cycles. */
        global = status_scope(status, "global");
        ck_assert_msg(global, "Status has no global scope: %s", json_object_to_json_string(status));
        used = scope_window_used(global, "minute", NULL);
        ck_assert_msg(used == (TRACKED_CHILDREN + 1) * CHILD_TOKENS,
                      "global used %lld in the minute window, expected %d (4 cycles of 100)",
                      (long long)used, (TRACKED_CHILDREN + 1) * CHILD_TOKENS);
        json_object_put(status);

        close(hold[0]);
        close(done[0]);
        close(done[1]);
        tb_client_close(admin);
        harness_daemon_stop(d);
}
END_TEST

/*
 * Point 6: admins always get in. budgetctl is a new process every time, so
 * it needs a process slot too: one unprivileged user whose live processes
 * each spent a token fill max_tracked_processes (and keep it full while they
 * live: a process budget with usage in its day window is kept for a day),
 * and must not lock root out.
 */
START_TEST(test_tracked_processes_admin_not_locked_out) {
        TestDaemon *d;
        pid_t children[TRACKED_CHILDREN];
        char *argv[6];
        int hold[2], done[2], k;
        CommandResult res;

        if (!tb_check_need_root("max_tracked_processes: root locked out by uid 65534's processes"))
                return;
        d = harness_daemon_start("limits: { max_tracked_processes = 3; };\n");
        ck_assert_msg(pipe2(hold, O_CLOEXEC) == 0 && pipe2(done, O_CLOEXEC) == 0, "pipe: %s",
                      strerror(errno));
        for (size_t i = 0; i < TRACKED_CHILDREN; i++) {
                struct pollfd pfd = {.fd = done[0], .events = POLLIN};
                char byte = 1;

                children[i] = spawn_holding_child(d, 65534, hold, done[1]);
                ck_assert_msg(poll(&pfd, 1, 15000) == 1 && read(done[0], &byte, 1) == 1 && byte == 0,
                              "uid 65534's child %zu: its cycle failed (%d: 10 connect, 11 Request, 12 "
                              "Report, 13 Release, 14 used != 100, 20 setuid)",
                              i, byte);
        }
        argv[0] = (char *)harness_env("BUDGETCTL");
        argv[1] = "--socket";
        argv[2] = d->socket_path;
        argv[3] = "--json";
        argv[4] = "status";
        argv[5] = NULL;
        harness_run(argv, NULL, 10000, &res);
        ck_assert_msg(res.status == 0,
                      "root's budgetctl status was refused while 3 live processes of uid 65534 fill "
                      "max_tracked_processes = 3 (exit %d): one unprivileged user locks the admins out; "
                      "stderr: %s",
                      res.status, res.err);
        command_result_done(&res);

        close(hold[1]);
        for (size_t i = 0; i < TRACKED_CHILDREN; i++)
                ck_assert_msg((k = wait_child(children[i])) == 0, "holding child %zu exited %d", i, k);
        close(hold[0]);
        close(done[0]);
        close(done[1]);
        harness_daemon_stop(d);
}
END_TEST

/* One user's share of the table: with its 2 processes alive and holding
 * usage, its 3rd is refused, and another user's process still gets in. */
START_TEST(test_tracked_processes_per_uid) {
        TestDaemon *d;
        pid_t children[2];
        int hold[2], done[2], k;

        if (!tb_check_need_root("max_tracked_processes_per_uid: processes of uid 65534"))
                return;
        d = harness_daemon_start(
                "limits: { max_tracked_processes = 10; max_tracked_processes_per_uid = 2; };\n");
        ck_assert_msg(pipe2(hold, O_CLOEXEC) == 0 && pipe2(done, O_CLOEXEC) == 0, "pipe: %s",
                      strerror(errno));
        for (size_t i = 0; i < 2; i++) {
                struct pollfd pfd = {.fd = done[0], .events = POLLIN};
                char byte = 1;

                children[i] = spawn_holding_child(d, 65534, hold, done[1]);
                ck_assert_msg(poll(&pfd, 1, 15000) == 1 && read(done[0], &byte, 1) == 1 && byte == 0,
                              "uid 65534's child %zu: its cycle failed (%d)", i, byte);
        }
        k = refused_child(d, 65534);
        ck_assert_msg(k == 0, "uid 65534's 3rd live process was served (status %d), its share is 2", k);
        k = cycling_child(d, 65533);
        ck_assert_msg(k == 0,
                      "uid 65533's process could not do a cycle (status %d) while uid 65534 is at its share",
                      k);
        close(hold[1]);
        for (size_t i = 0; i < 2; i++)
                ck_assert_msg((k = wait_child(children[i])) == 0, "holding child %zu exited %d", i, k);
        close(hold[0]);
        close(done[0]);
        close(done[1]);
        harness_daemon_stop(d);
}
END_TEST

/* ---- log floods (point 8) ---- */

#define LOG_FLOOD_ATTEMPTS 300
#define LOG_BURST          5
#define LOG_LIMITS_CONFIG                                                                                   \
        "limits: { max_connections = 4; max_connections_per_uid = 2; admin_connections = 1; };\n"
#define LOG_SUPPRESSED_MARK " similar message(s) suppressed before this one"

START_TEST(test_refusal_log_rate_limited) {
        TestDaemon *d = harness_daemon_start(LOG_LIMITS_CONFIG "journal: { rate_limit_burst = 5; "
                                                               "rate_limit_interval_sec = 60; };\n");
        RawConn *held[2];
        size_t lines;
        char *text;

        for (size_t i = 0; i < N_ELEMENTS(held); i++)
                held[i] = harness_open_working(d, "a connection within max_connections_per_uid = 2");
        for (int i = 0; i < LOG_FLOOD_ATTEMPTS; i++)
                harness_assert_refused(d, "a connection over max_connections_per_uid = 2");

        text = daemon_log(d);
        lines = count_substr(text, "refusing connection");
        ck_assert_msg(lines >= 1 && lines <= LOG_BURST,
                      "%zu \"refusing connection\" lines for %d refused connections, expected 1 to %d "
                      "(journal.rate_limit_burst); stderr:\n%.2000s",
                      lines, LOG_FLOOD_ATTEMPTS, LOG_BURST, text);
        /* The interval (60 s) has not ended: no summary of the suppressed ones yet. */
        ck_assert_msg(!strstr(text, "suppressed"),
                      "a suppression summary within the first 60 s interval; stderr:\n%.2000s", text);
        free(text);
        for (size_t i = 0; i < N_ELEMENTS(held); i++) {
                assert_getinfo(held[i], "a held connection after the flood");
                raw_close(held[i]);
        }
        harness_daemon_stop(d);
}
END_TEST

/* Refusal lines, and how many the suppression notes say were dropped. */
static void count_refusals(const char *text, size_t *ret_lines, uint64_t *ret_suppressed) {
        *ret_lines = 0;
        *ret_suppressed = 0;
        for (const char *line = text; *line;) {
                size_t len = strcspn(line, "\n");
                const char *mark = memmem(line, len, LOG_SUPPRESSED_MARK, strlen(LOG_SUPPRESSED_MARK));

                if (memmem(line, len, "refusing connection", strlen("refusing connection"))) {
                        (*ret_lines)++;
                        if (mark) {
                                const char *start = mark;

                                while (start > line && start[-1] != '(')
                                        start--;
                                *ret_suppressed += strtoull(start, NULL, 10);
                        }
                }
                line += len;
                if (*line == '\n')
                        line++;
        }
}

/* Dropped lines are not lost without a trace: once the interval (1 s) is
 * over, the next refusal's line says how many were suppressed, so the lines
 * plus the counts they carry add up to every refusal. */
START_TEST(test_refusal_log_counts_suppressed) {
        TestDaemon *d = harness_daemon_start(LOG_LIMITS_CONFIG "journal: { rate_limit_burst = 5; "
                                                               "rate_limit_interval_sec = 1; };\n");
        uint64_t start_usec, deadline, suppressed = 0, intervals;
        RawConn *held[2];
        size_t attempts = 0, lines = 0;
        bool noted = false;
        char *text = NULL;

        for (size_t i = 0; i < N_ELEMENTS(held); i++)
                held[i] = harness_open_working(d, "a connection within max_connections_per_uid = 2");
        start_usec = harness_now_usec();
        for (; attempts < LOG_FLOOD_ATTEMPTS; attempts++)
                harness_assert_refused(d, "a connection over max_connections_per_uid = 2");
        /* One more every 100 ms until a line carries the count (the interval is 1 s). */
        deadline = harness_now_usec() + 10000000;
        while (!noted && harness_now_usec() < deadline) {
                const char *last;

                harness_sleep_msec(100);
                harness_assert_refused(d, "a connection over max_connections_per_uid = 2, after the flood");
                attempts++;
                free(text);
                text = daemon_log(d);
                last = strrchr(text, '<'); /* every line starts with <PRIORITY> */
                noted = last && strstr(last, "refusing connection") && strstr(last, LOG_SUPPRESSED_MARK);
        }
        ck_assert_msg(noted, "no refusal line said how many were suppressed within 10 s; stderr:\n%.3000s",
                      text);
        count_refusals(text, &lines, &suppressed);
        ck_assert_msg(
                lines + suppressed == attempts,
                "%zu refusal lines + %llu reported suppressed != %zu refused connections; stderr:\n%.3000s",
                lines, (unsigned long long)suppressed, attempts, text);
        /* At most a burst per interval begun: 5 per started second. */
        intervals = (harness_now_usec() - start_usec) / 1000000 + 1;
        ck_assert_msg(suppressed > 0 && lines <= LOG_BURST * intervals,
                      "%zu lines for %zu refusals in %llu interval(s) of 1 s: the rate limit (5 per "
                      "interval) did not hold",
                      lines, attempts, (unsigned long long)intervals);
        free(text);
        for (size_t i = 0; i < N_ELEMENTS(held); i++)
                raw_close(held[i]);
        harness_daemon_stop(d);
}
END_TEST

static Suite *exhaustion_suite(void) {
        Suite *s = suite_create("integration-exhaustion");
        TCase *tc;

        tc = harness_tcase("file_descriptors", 90);
        tcase_add_test(tc, test_fd_limit_refused_at_start);
        tcase_add_test(tc, test_fd_exhaustion);
        suite_add_tcase(s, tc);
        tc = harness_tcase("output_per_uid", 60);
        tcase_add_test(tc, test_output_per_uid);
        suite_add_tcase(s, tc);
        tc = harness_tcase("max_tracked_processes", 60);
        tb_check_tag_root(tc);
        tcase_add_test(tc, test_max_tracked_processes);
        suite_add_tcase(s, tc);
        tc = harness_tcase("max_tracked_processes_admin", 60);
        tb_check_tag_root(tc);
        tcase_add_test(tc, test_tracked_processes_admin_not_locked_out);
        tcase_add_test(tc, test_tracked_processes_per_uid);
        suite_add_tcase(s, tc);
        tc = harness_tcase("log_floods", 60);
        tcase_add_test(tc, test_refusal_log_rate_limited);
        tcase_add_test(tc, test_refusal_log_counts_suppressed);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return harness_main(exhaustion_suite());
}
