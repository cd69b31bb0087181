/* SPDX-License-Identifier: MIT */
/*
 * Stopping a process at its hard limit (see terminate.h): one entry per
 * process being stopped, each with its pidfd, a read event on it (readable
 * once the process has exited) and the grace timer. A handful at a time at
 * most (one per runaway process), so a plain list.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "identity.h"
#include "macro.h"
#include "terminate.h"
#include "time-util.h"

#define PROC_ROOT "/proc"
/* /proc/PID/status is about 1.5 KiB on Linux 6; "Uid:" is its ninth line. */
#define STATUS_READ_MAX 4096

typedef struct TerminateEntry TerminateEntry;

struct TerminateEntry {
        Terminator *terminator;
        pid_t pid;
        uint64_t start_time;
        int pidfd;
        struct event *exit_event;
        struct event *grace_event;
        uint64_t started_usec;
        bool killed; /* SIGKILL sent */
        LIST_FIELDS(TerminateEntry, entries);
};

struct Terminator {
        struct event_base *base;
        TerminateDoneFunc done;
        void *userdata;
        TerminateEntry *entries;
        size_t n_entries;
};

static const char *const outcome_names[_TERMINATE_OUTCOME_MAX] = {
        [TERMINATE_EXITED] = "exited",
        [TERMINATE_KILLED] = "killed",
        [TERMINATE_FAILED] = "failed",
};

const char *terminate_outcome_to_string(TerminateOutcome o) {
        return (unsigned)o < _TERMINATE_OUTCOME_MAX ? outcome_names[o] : NULL;
}

/* ---- entries ---- */

static TerminateEntry *entry_free(TerminateEntry *e) {
        if (!e)
                return NULL;
        if (e->exit_event)
                event_free(e->exit_event);
        if (e->grace_event)
                event_free(e->grace_event);
        if (e->pidfd >= 0)
                close(e->pidfd);
        free(e);
        return NULL;
}

static void entry_unlink(TerminateEntry *e) {
        Terminator *t = e->terminator;

        LIST_REMOVE(entries, t->entries, e);
        t->n_entries--;
}

/* Ends e and tells the owner. Nothing is touched after done(): it may free
 * the terminator. */
static void entry_finish(TerminateEntry *e, TerminateOutcome outcome, int error) {
        Terminator *t = e->terminator;
        TerminateDoneFunc done = t->done;
        void *userdata = t->userdata;
        uint64_t now = now_usec();
        uint64_t elapsed = now > e->started_usec ? now - e->started_usec : 0;
        pid_t pid = e->pid;

        entry_unlink(e);
        entry_free(e);
        if (done)
                done(userdata, pid, outcome, error, elapsed);
}

static void exit_cb(evutil_socket_t fd, short what, void *userdata) {
        TerminateEntry *e = userdata;

        entry_finish(e, e->killed ? TERMINATE_KILLED : TERMINATE_EXITED, 0);
}

static void grace_cb(evutil_socket_t fd, short what, void *userdata) {
        TerminateEntry *e = userdata;

        if (pidfd_send_signal(e->pidfd, SIGKILL, NULL, 0) == 0) {
                e->killed = true;
                return; /* exit_cb sees it go */
        }
        /* ESRCH: it has been reaped by its parent since the last turn of the
         * loop, so it exited within the grace period after all (its exit
         * event is ready too, and goes with the entry). */
        if (errno == ESRCH)
                entry_finish(e, TERMINATE_EXITED, 0);
        else
                entry_finish(e, TERMINATE_FAILED, -errno);
}

static TerminateEntry *entry_find(const Terminator *t, pid_t pid, uint64_t start_time) {
        for (TerminateEntry *e = t->entries; e; e = e->entries_next)
                if (e->pid == pid && e->start_time == start_time)
                        return e;
        return NULL;
}

/* ---- what /proc says ---- */

/* The real uid of process pid, from the "Uid:" line of its status (real,
 * effective, saved, filesystem). -ESRCH when it is gone. */
static int read_real_uid(pid_t pid, uid_t *ret) {
        char path[64], text[STATUS_READ_MAX];
        _cleanup_close_ int fd = -1;
        const char *line;
        unsigned long uid;
        char *end;
        size_t len = 0;

        snprintf(path, sizeof(path), PROC_ROOT "/%d/status", (int)pid);
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return errno == ENOENT ? -ESRCH : -errno;
        while (len < sizeof(text) - 1) {
                ssize_t n = read(fd, text + len, sizeof(text) - 1 - len);

                if (n < 0)
                        return errno == ESRCH ? -ESRCH : -errno;
                if (n == 0)
                        break;
                len += (size_t)n;
        }
        text[len] = 0;
        line = strstr(text, "\nUid:\t");
        if (!line)
                return -EIO;
        line += strlen("\nUid:\t");
        errno = 0;
        uid = strtoul(line, &end, 10);
        if (errno != 0 || end == line || (*end != '\t' && *end != ' ') || uid != (uid_t)uid)
                return -EIO;
        *ret = (uid_t)uid;
        return 0;
}

/*
 * Whether the pidfd is the process the caller means. The pidfd was opened
 * first, so: if stat (read after it) has the expected start time, the pid
 * still belonged to that process then, and the pidfd, opened on the same pid
 * no earlier than the caller learnt that start time, is that process. The
 * status read after it might belong to a newer process if that one exited
 * and was reaped in between; the signal 0 through the pidfd afterwards says
 * it was not reaped (a reaped process gives ESRCH), so the pid was not
 * reused and status was its own too.
 */
static int verify(int pidfd, pid_t pid, uint64_t start_time, uid_t uid) {
        Identity id = {.pid = pid};
        uid_t real_uid;
        int r;

        r = identity_read_proc(PROC_ROOT, &id);
        if (r < 0)
                return r == -ENOENT ? -ESRCH : r;
        if (id.start_time != start_time)
                return -ESRCH;
        r = read_real_uid(pid, &real_uid);
        if (r < 0)
                return r;
        if (pidfd_send_signal(pidfd, 0, NULL, 0) < 0)
                return -errno;
        if (real_uid != uid)
                return -EPERM;
        return 0;
}

/* ---- the API ---- */

Terminator *terminator_new(struct event_base *base, TerminateDoneFunc done, void *userdata) {
        Terminator *t;

        assert(base);

        t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->base = base;
        t->done = done;
        t->userdata = userdata;
        return t;
}

Terminator *terminator_free(Terminator *t) {
        if (!t)
                return NULL;
        while (t->entries) {
                TerminateEntry *e = t->entries;

                entry_unlink(e);
                entry_free(e);
        }
        free(t);
        return NULL;
}

static TerminateEntry *entry_new(Terminator *t, pid_t pid, uint64_t start_time, int pidfd) {
        TerminateEntry *e = calloc(1, sizeof(*e));

        if (!e)
                return NULL;
        /* pidfd stays the caller's until it hands it over. */
        *e = (TerminateEntry){.terminator = t, .pid = pid, .start_time = start_time, .pidfd = -1};
        e->exit_event = event_new(t->base, pidfd, EV_READ, exit_cb, e);
        e->grace_event = evtimer_new(t->base, grace_cb, e);
        if (!e->exit_event || !e->grace_event)
                return entry_free(e);
        return e;
}

int terminator_start(Terminator *t, pid_t pid, uint64_t start_time, uid_t uid, uint64_t grace_usec) {
        _cleanup_close_ int pidfd = -1;
        TerminateEntry *e;
        struct timeval tv;
        int r;

        assert(t);

        if (pid <= 1 || pid == getpid())
                return -EPERM;
        if (entry_find(t, pid, start_time))
                return -EALREADY;
        pidfd = pidfd_open(pid, 0);
        if (pidfd < 0)
                return -errno;
        r = verify(pidfd, pid, start_time, uid);
        if (r < 0)
                return r;

        /* Everything that can fail for want of memory before the signal, so
         * that a SIGTERM sent always has its follow-up. */
        e = entry_new(t, pid, start_time, pidfd);
        if (!e)
                return -ENOMEM;
        if (grace_usec > (uint64_t)INT32_MAX * USEC_PER_SEC)
                grace_usec = (uint64_t)INT32_MAX * USEC_PER_SEC; /* time_t of 32 bits: ~68 years */
        tv = (struct timeval){.tv_sec = (time_t)(grace_usec / USEC_PER_SEC),
                              .tv_usec = (suseconds_t)(grace_usec % USEC_PER_SEC)};
        if (event_add(e->exit_event, NULL) < 0 || evtimer_add(e->grace_event, &tv) < 0) {
                entry_free(e);
                return -ENOMEM;
        }
        e->started_usec = now_usec();
        if (pidfd_send_signal(pidfd, SIGTERM, NULL, 0) < 0) {
                r = -errno;
                entry_free(e);
                return r;
        }
        e->pidfd = TAKE_FD(pidfd);
        LIST_PREPEND(entries, t->entries, e);
        t->n_entries++;
        return 0;
}

size_t terminator_active(const Terminator *t) {
        return t ? t->n_entries : 0;
}
