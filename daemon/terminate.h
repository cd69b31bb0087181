/* SPDX-License-Identifier: MIT */
/*
 * Stops a process at its hard limit (on_hard_limit = "terminate"): SIGTERM
 * through a pidfd, SIGKILL after the grace period if it is still alive, its
 * exit seen through the pidfd's readability on the event loop (no polling,
 * no SIGCHLD: the processes are not our children). The pidfd pins the
 * process, so a signal can never reach a process that reused the pid; the
 * start time and real uid read from /proc after opening it say that the
 * pidfd is the process the caller means. It never signals pid 0 or 1, the
 * daemon itself, or a process of another uid than the one given. What to
 * stop and when is the caller's (budget.c); this module only carries it out.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct event_base;

typedef enum TerminateOutcome {
        TERMINATE_EXITED, /* it exited after SIGTERM within the grace period */
        TERMINATE_KILLED, /* SIGKILL was sent after the grace period, and it exited */
        TERMINATE_FAILED, /* a signal could not be sent (error says why) */
        _TERMINATE_OUTCOME_MAX,
} TerminateOutcome;

/* error: 0, or for TERMINATE_FAILED the -errno of the SIGKILL that failed.
 * elapsed_usec: from the SIGTERM to the exit seen (or to the failure). The
 * callback may call terminator_start() or terminator_free(). */
typedef void (*TerminateDoneFunc)(void *userdata, pid_t pid, TerminateOutcome outcome, int error,
                                  uint64_t elapsed_usec);

typedef struct Terminator Terminator;

/* NULL when out of memory. */
Terminator *terminator_new(struct event_base *base, TerminateDoneFunc done, void *userdata);
/* Forgets every process being stopped (no further signal, no callback). NULL-safe. */
Terminator *terminator_free(Terminator *t);

/*
 * Opens a pidfd for pid, checks (through /proc/PID after pidfd_open, so the
 * pidfd is known to be that process) that it still has start_time (field 22
 * of stat, as Identity.start_time) and real uid uid, then sends SIGTERM with
 * pidfd_send_signal(). Returns 0 (done() runs later exactly once, never from
 * within this call), -ESRCH (gone, or a different process now has the pid),
 * -EPERM (pid <= 1, the daemon itself, another uid, or the kernel refused
 * the signal), -EALREADY (that process, pid and start time, is already
 * being stopped), -ENOMEM, -errno (-EINVAL for the id of a thread that is
 * not a process's main thread). A process already exited but not yet reaped
 * (a zombie) is stopped at once: 0, and done() says TERMINATE_EXITED.
 * grace_usec 0 sends SIGKILL on the next turn of the loop.
 */
int terminator_start(Terminator *t, pid_t pid, uint64_t start_time, uid_t uid, uint64_t grace_usec);

/* How many processes are being stopped (started, done() not yet run). */
size_t terminator_active(const Terminator *t);

const char *terminate_outcome_to_string(TerminateOutcome o); /* "exited", "killed", "failed" */
