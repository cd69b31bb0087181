/* SPDX-License-Identifier: MIT */
/*
 * Stopping a process at its hard limit (daemon/terminate.c) with real
 * processes on a real event loop: a child that dies of SIGTERM (exited), one
 * that ignores it (killed after a 200 ms grace period), a zombie (exited at
 * once), two at a time; the refusals: pid 0 and 1, the test itself, a wrong
 * start time, a wrong uid, a child already reaped (-ESRCH), a second start
 * for the same process (-EALREADY); and terminator_free() with processes
 * still being stopped, from outside and from inside the callback (no
 * callback, no signal after it, nothing leaked under ASan). Root only: a
 * child that is really of another uid (65534), refused for the test's uid
 * and stopped for its own.
 *
 * The children are the test's own, so each is reaped with waitpid() and its
 * wait status says which signal ended it. Timing bounds are loose (the
 * machines are shared): only "not before the grace period" and "well within
 * a generous bound" are checked.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "identity.h"
#include "tb-check.h"
#include "terminate.h"

#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC  UINT64_C(1000000)

/* The grace period for the children that ignore SIGTERM. */
#define GRACE_USEC (200 * USEC_PER_MSEC)
/* Long enough that it never ends in a test that expects SIGTERM to do. */
#define LONG_GRACE_USEC (60 * USEC_PER_SEC)
/* How long the loop may run before a test gives up on the callback. */
#define LOOP_LIMIT_USEC (30 * USEC_PER_SEC)
/* A generous bound on how long a stop may take on a busy machine. */
#define SLOW_USEC (20 * USEC_PER_SEC)

#define UID_NOBODY 65534

typedef enum ChildKind {
        CHILD_DEFAULT,     /* SIGTERM kills it */
        CHILD_IGNORE_TERM, /* SIGTERM ignored: only SIGKILL stops it */
        CHILD_EXIT,        /* exits as soon as it is told to */
} ChildKind;

typedef struct Child {
        pid_t pid;
        uint64_t start_time;
        uid_t uid;
        int go_fd; /* CHILD_EXIT: closing it lets the child exit */
} Child;

typedef struct Result {
        int calls;
        pid_t pid;
        TerminateOutcome outcome;
        int error;
        uint64_t elapsed_usec;
        struct event_base *base;
        Terminator **free_in_callback; /* set: the callback frees *it */
        int stop_after;                /* break the loop after this many calls */
} Result;

static uint64_t monotonic_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

/* Forks a child of that kind, which first becomes uid when uid is not the
 * test's (root only), and returns once it is ready (its SIGTERM disposition
 * set, its uid changed), with its start time from /proc. */
static Child child_spawn(ChildKind kind, uid_t uid) {
        int ready[2], go[2];
        Child c = {.uid = uid, .go_fd = -1};
        Identity id;
        char byte;
        pid_t pid;

        ck_assert_int_eq(pipe2(ready, O_CLOEXEC), 0);
        ck_assert_int_eq(pipe2(go, O_CLOEXEC), 0);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                close(ready[0]);
                close(go[1]);
                /* Check's runner forwards SIGTERM to the process group from
                 * a handler this fork inherits: the child must not. */
                signal(SIGTERM, kind == CHILD_IGNORE_TERM ? SIG_IGN : SIG_DFL);
                if (uid != getuid() && (setgroups(0, NULL) < 0 || setgid(uid) < 0 || setuid(uid) < 0))
                        _exit(3);
                if (write(ready[1], "r", 1) != 1)
                        _exit(4);
                close(ready[1]);
                /* Until the parent closes go (CHILD_EXIT) or a signal ends it. */
                while (read(go[0], &byte, 1) < 0 && errno == EINTR)
                        ;
                if (kind == CHILD_EXIT)
                        _exit(0);
                for (;;)
                        pause();
        }
        close(ready[1]);
        close(go[0]);
        ck_assert_int_eq(read(ready[0], &byte, 1), 1);
        close(ready[0]);
        c.pid = pid;
        c.go_fd = go[1];
        id = (Identity){.pid = pid};
        ck_assert_int_eq(identity_read_proc("/proc", &id), 0);
        ck_assert_uint_ne(id.start_time, 0);
        c.start_time = id.start_time;
        return c;
}

/* Waits for the child and returns its wait status. */
static int child_reap(Child *c) {
        int status = 0;
        pid_t r;

        do
                r = waitpid(c->pid, &status, 0);
        while (r < 0 && errno == EINTR);
        ck_assert_int_eq(r, c->pid);
        if (c->go_fd >= 0)
                close(c->go_fd);
        c->go_fd = -1;
        return status;
}

/* Whether the child still runs (not exited: no wait status yet). */
static bool child_alive(const Child *c) {
        siginfo_t si = {};

        ck_assert_int_eq(waitid(P_PID, (id_t)c->pid, &si, WEXITED | WNOHANG | WNOWAIT), 0);
        return si.si_pid == 0;
}

static void child_kill(Child *c) {
        kill(c->pid, SIGKILL);
        ck_assert(WIFSIGNALED(child_reap(c)));
}

static void done_cb(void *userdata, pid_t pid, TerminateOutcome outcome, int error, uint64_t elapsed_usec) {
        Result *res = userdata;

        res->calls++;
        res->pid = pid;
        res->outcome = outcome;
        res->error = error;
        res->elapsed_usec = elapsed_usec;
        if (res->free_in_callback)
                *res->free_in_callback = terminator_free(*res->free_in_callback);
        if (res->calls >= res->stop_after)
                event_base_loopbreak(res->base);
}

static void limit_cb(evutil_socket_t fd, short what, void *userdata) {
        event_base_loopbreak(userdata);
}

/* Runs the loop until the callback has run res->stop_after times, or for
 * at most limit_usec. */
static void run_loop(Result *res, uint64_t limit_usec) {
        struct event *limit = evtimer_new(res->base, limit_cb, res->base);
        struct timeval tv = {.tv_sec = (time_t)(limit_usec / USEC_PER_SEC),
                             .tv_usec = (suseconds_t)(limit_usec % USEC_PER_SEC)};

        ck_assert_ptr_nonnull(limit);
        ck_assert_int_eq(evtimer_add(limit, &tv), 0);
        if (res->calls < res->stop_after)
                ck_assert_int_ge(event_base_dispatch(res->base), 0);
        event_free(limit);
}

typedef struct Fixture {
        struct event_base *base;
        Terminator *t;
        Result res;
} Fixture;

static void fixture_init(Fixture *f) {
        *f = (Fixture){};
        f->base = event_base_new();
        ck_assert_ptr_nonnull(f->base);
        f->res = (Result){.base = f->base, .stop_after = 1, .outcome = _TERMINATE_OUTCOME_MAX};
        f->t = terminator_new(f->base, done_cb, &f->res);
        ck_assert_ptr_nonnull(f->t);
}

static void fixture_done(Fixture *f) {
        f->t = terminator_free(f->t);
        event_base_free(f->base);
}

/* ---- stopping ---- */

START_TEST(test_outcome_names) {
        ck_assert_str_eq(terminate_outcome_to_string(TERMINATE_EXITED), "exited");
        ck_assert_str_eq(terminate_outcome_to_string(TERMINATE_KILLED), "killed");
        ck_assert_str_eq(terminate_outcome_to_string(TERMINATE_FAILED), "failed");
        ck_assert_ptr_null(terminate_outcome_to_string(_TERMINATE_OUTCOME_MAX));
        ck_assert_ptr_null(terminator_free(NULL));
        ck_assert_uint_eq(terminator_active(NULL), 0);
}
END_TEST

START_TEST(test_exits_on_sigterm) {
        Fixture f;
        Child c;
        int status;

        fixture_init(&f);
        c = child_spawn(CHILD_DEFAULT, getuid());
        ck_assert_int_eq(terminator_start(f.t, c.pid, c.start_time, c.uid, LONG_GRACE_USEC), 0);
        ck_assert_uint_eq(terminator_active(f.t), 1);
        ck_assert_int_eq(f.res.calls, 0); /* never from within start */
        run_loop(&f.res, LOOP_LIMIT_USEC);
        ck_assert_int_eq(f.res.calls, 1);
        ck_assert_int_eq(f.res.pid, c.pid);
        ck_assert_str_eq(terminate_outcome_to_string(f.res.outcome), "exited");
        ck_assert_int_eq(f.res.error, 0);
        ck_assert_uint_lt(f.res.elapsed_usec, SLOW_USEC);
        ck_assert_uint_eq(terminator_active(f.t), 0);
        status = child_reap(&c);
        ck_assert(WIFSIGNALED(status));
        ck_assert_int_eq(WTERMSIG(status), SIGTERM);
        fixture_done(&f);
}
END_TEST

START_TEST(test_killed_after_grace) {
        Fixture f;
        Child c;
        uint64_t start;
        int status;

        fixture_init(&f);
        c = child_spawn(CHILD_IGNORE_TERM, getuid());
        start = monotonic_usec();
        ck_assert_int_eq(terminator_start(f.t, c.pid, c.start_time, c.uid, GRACE_USEC), 0);
        /* Still there after SIGTERM: it ignores it. */
        usleep(50 * USEC_PER_MSEC);
        ck_assert(child_alive(&c));
        run_loop(&f.res, LOOP_LIMIT_USEC);
        ck_assert_int_eq(f.res.calls, 1);
        ck_assert_str_eq(terminate_outcome_to_string(f.res.outcome), "killed");
        ck_assert_int_eq(f.res.error, 0);
        /* Not before the grace period (libevent may round a little: 10 ms). */
        ck_assert_uint_ge(f.res.elapsed_usec, GRACE_USEC - 10 * USEC_PER_MSEC);
        ck_assert_uint_ge(monotonic_usec() - start, GRACE_USEC - 10 * USEC_PER_MSEC);
        ck_assert_uint_lt(f.res.elapsed_usec, SLOW_USEC);
        status = child_reap(&c);
        ck_assert(WIFSIGNALED(status));
        ck_assert_int_eq(WTERMSIG(status), SIGKILL);
        fixture_done(&f);
}
END_TEST

START_TEST(test_zombie) {
        Fixture f;
        Child c;
        siginfo_t si = {};

        fixture_init(&f);
        c = child_spawn(CHILD_EXIT, getuid());
        close(c.go_fd);
        c.go_fd = -1;
        /* Exited, not reaped: its /proc entry and start time stay. */
        ck_assert_int_eq(waitid(P_PID, (id_t)c.pid, &si, WEXITED | WNOWAIT), 0);
        ck_assert_int_eq(terminator_start(f.t, c.pid, c.start_time, c.uid, LONG_GRACE_USEC), 0);
        run_loop(&f.res, LOOP_LIMIT_USEC);
        ck_assert_int_eq(f.res.calls, 1);
        ck_assert_str_eq(terminate_outcome_to_string(f.res.outcome), "exited");
        ck_assert_uint_lt(f.res.elapsed_usec, SLOW_USEC);
        ck_assert(WIFEXITED(child_reap(&c)));
        fixture_done(&f);
}
END_TEST

START_TEST(test_two_at_once) {
        Fixture f;
        Child a, b;

        fixture_init(&f);
        a = child_spawn(CHILD_DEFAULT, getuid());
        b = child_spawn(CHILD_IGNORE_TERM, getuid());
        ck_assert_int_eq(terminator_start(f.t, a.pid, a.start_time, a.uid, LONG_GRACE_USEC), 0);
        ck_assert_int_eq(terminator_start(f.t, b.pid, b.start_time, b.uid, GRACE_USEC), 0);
        ck_assert_uint_eq(terminator_active(f.t), 2);
        f.res.stop_after = 2;
        run_loop(&f.res, LOOP_LIMIT_USEC);
        ck_assert_int_eq(f.res.calls, 2);
        /* The one that ignores SIGTERM goes last. */
        ck_assert_int_eq(f.res.pid, b.pid);
        ck_assert_str_eq(terminate_outcome_to_string(f.res.outcome), "killed");
        ck_assert_uint_eq(terminator_active(f.t), 0);
        ck_assert_int_eq(WTERMSIG(child_reap(&a)), SIGTERM);
        ck_assert_int_eq(WTERMSIG(child_reap(&b)), SIGKILL);
        fixture_done(&f);
}
END_TEST

/* ---- refusals ---- */

START_TEST(test_refuse_init_and_self) {
        Fixture f;
        Identity self = {.pid = getpid()};

        fixture_init(&f);
        ck_assert_int_eq(terminator_start(f.t, 1, 0, 0, GRACE_USEC), -EPERM);
        ck_assert_int_eq(terminator_start(f.t, 0, 0, getuid(), GRACE_USEC), -EPERM);
        ck_assert_int_eq(terminator_start(f.t, -1, 0, getuid(), GRACE_USEC), -EPERM);
        ck_assert_int_eq(identity_read_proc("/proc", &self), 0);
        ck_assert_int_eq(terminator_start(f.t, getpid(), self.start_time, getuid(), GRACE_USEC), -EPERM);
        ck_assert_uint_eq(terminator_active(f.t), 0);
        /* Nothing was sent to us: we are still here, and no callback. */
        run_loop(&f.res, 50 * USEC_PER_MSEC);
        ck_assert_int_eq(f.res.calls, 0);
        fixture_done(&f);
}
END_TEST

START_TEST(test_refuse_wrong_start_time) {
        Fixture f;
        Child c;

        fixture_init(&f);
        c = child_spawn(CHILD_DEFAULT, getuid());
        ck_assert_int_eq(terminator_start(f.t, c.pid, c.start_time + 1, c.uid, GRACE_USEC), -ESRCH);
        ck_assert_int_eq(terminator_start(f.t, c.pid, 0, c.uid, GRACE_USEC), -ESRCH);
        ck_assert_uint_eq(terminator_active(f.t), 0);
        run_loop(&f.res, 50 * USEC_PER_MSEC);
        ck_assert_int_eq(f.res.calls, 0);
        ck_assert(child_alive(&c)); /* no SIGTERM: it would have died of it */
        child_kill(&c);
        fixture_done(&f);
}
END_TEST

START_TEST(test_refuse_wrong_uid) {
        Fixture f;
        Child c;

        fixture_init(&f);
        c = child_spawn(CHILD_DEFAULT, getuid());
        ck_assert_int_eq(terminator_start(f.t, c.pid, c.start_time, c.uid + 1, GRACE_USEC), -EPERM);
        ck_assert_uint_eq(terminator_active(f.t), 0);
        run_loop(&f.res, 50 * USEC_PER_MSEC);
        ck_assert_int_eq(f.res.calls, 0);
        ck_assert(child_alive(&c));
        child_kill(&c);
        fixture_done(&f);
}
END_TEST

START_TEST(test_refuse_gone) {
        Fixture f;
        Child c;

        fixture_init(&f);
        c = child_spawn(CHILD_EXIT, getuid());
        close(c.go_fd);
        c.go_fd = -1;
        ck_assert(WIFEXITED(child_reap(&c)));
        /* Reaped: no such process (or, were the pid reused already, one
         * with another start time). */
        ck_assert_int_eq(terminator_start(f.t, c.pid, c.start_time, c.uid, GRACE_USEC), -ESRCH);
        ck_assert_uint_eq(terminator_active(f.t), 0);
        fixture_done(&f);
}
END_TEST

START_TEST(test_refuse_already) {
        Fixture f;
        Child c;

        fixture_init(&f);
        c = child_spawn(CHILD_IGNORE_TERM, getuid());
        ck_assert_int_eq(terminator_start(f.t, c.pid, c.start_time, c.uid, GRACE_USEC), 0);
        ck_assert_int_eq(terminator_start(f.t, c.pid, c.start_time, c.uid, GRACE_USEC), -EALREADY);
        ck_assert_uint_eq(terminator_active(f.t), 1);
        run_loop(&f.res, LOOP_LIMIT_USEC);
        ck_assert_int_eq(f.res.calls, 1); /* one callback, for the first */
        ck_assert_str_eq(terminate_outcome_to_string(f.res.outcome), "killed");
        ck_assert_int_eq(WTERMSIG(child_reap(&c)), SIGKILL);
        fixture_done(&f);
}
END_TEST

/* ---- freeing while stopping ---- */

START_TEST(test_free_while_stopping) {
        Fixture f;
        Child a, b;

        fixture_init(&f);
        a = child_spawn(CHILD_IGNORE_TERM, getuid());
        b = child_spawn(CHILD_IGNORE_TERM, getuid());
        ck_assert_int_eq(terminator_start(f.t, a.pid, a.start_time, a.uid, 100 * USEC_PER_MSEC), 0);
        ck_assert_int_eq(terminator_start(f.t, b.pid, b.start_time, b.uid, 100 * USEC_PER_MSEC), 0);
        f.t = terminator_free(f.t);
        /* Past the grace period: no SIGKILL, no callback. */
        run_loop(&f.res, 400 * USEC_PER_MSEC);
        ck_assert_int_eq(f.res.calls, 0);
        ck_assert(child_alive(&a));
        ck_assert(child_alive(&b));
        child_kill(&a);
        child_kill(&b);
        fixture_done(&f);
}
END_TEST

START_TEST(test_free_in_callback) {
        Fixture f;
        Child a, b;

        fixture_init(&f);
        a = child_spawn(CHILD_DEFAULT, getuid());
        b = child_spawn(CHILD_IGNORE_TERM, getuid());
        ck_assert_int_eq(terminator_start(f.t, a.pid, a.start_time, a.uid, LONG_GRACE_USEC), 0);
        ck_assert_int_eq(terminator_start(f.t, b.pid, b.start_time, b.uid, GRACE_USEC), 0);
        f.res.free_in_callback = &f.t;
        f.res.stop_after = 2;
        /* a's exit frees the terminator: b is forgotten, never killed. */
        run_loop(&f.res, GRACE_USEC + 500 * USEC_PER_MSEC);
        ck_assert_int_eq(f.res.calls, 1);
        ck_assert_int_eq(f.res.pid, a.pid);
        ck_assert_ptr_null(f.t);
        ck_assert_int_eq(WTERMSIG(child_reap(&a)), SIGTERM);
        ck_assert(child_alive(&b));
        child_kill(&b);
        fixture_done(&f);
}
END_TEST

/* ---- another uid (root) ---- */

START_TEST(test_other_uid) {
        Fixture f;
        Child c;

        if (!tb_check_need_root("a child of uid 65534"))
                return;
        fixture_init(&f);
        c = child_spawn(CHILD_DEFAULT, UID_NOBODY);
        /* The caller says it is ours: refused, and it lives. */
        ck_assert_int_eq(terminator_start(f.t, c.pid, c.start_time, getuid(), GRACE_USEC), -EPERM);
        run_loop(&f.res, 50 * USEC_PER_MSEC);
        ck_assert_int_eq(f.res.calls, 0);
        ck_assert(child_alive(&c));
        /* Its own uid: stopped (root may signal it). */
        ck_assert_int_eq(terminator_start(f.t, c.pid, c.start_time, UID_NOBODY, LONG_GRACE_USEC), 0);
        run_loop(&f.res, LOOP_LIMIT_USEC);
        ck_assert_int_eq(f.res.calls, 1);
        ck_assert_str_eq(terminate_outcome_to_string(f.res.outcome), "exited");
        ck_assert_int_eq(WTERMSIG(child_reap(&c)), SIGTERM);
        fixture_done(&f);
}
END_TEST

static Suite *terminate_suite(void) {
        Suite *s = suite_create("terminate");
        TCase *tc = tcase_create("terminate");

        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_outcome_names);
        tcase_add_test(tc, test_exits_on_sigterm);
        tcase_add_test(tc, test_killed_after_grace);
        tcase_add_test(tc, test_zombie);
        tcase_add_test(tc, test_two_at_once);
        tcase_add_test(tc, test_refuse_init_and_self);
        tcase_add_test(tc, test_refuse_wrong_start_time);
        tcase_add_test(tc, test_refuse_wrong_uid);
        tcase_add_test(tc, test_refuse_gone);
        tcase_add_test(tc, test_refuse_already);
        tcase_add_test(tc, test_free_while_stopping);
        tcase_add_test(tc, test_free_in_callback);
        suite_add_tcase(s, tc);

        tc = tcase_create("root");
        tb_check_tag_root(tc);
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_other_uid);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(terminate_suite());
}
