/* SPDX-License-Identifier: MIT */
/*
 * The sd_notify protocol: READY=1, STATUS=, WATCHDOG=1, RELOADING=1 with
 * MONOTONIC_USEC=, STOPPING=1. Does nothing at all when $NOTIFY_SOCKET is
 * unset. STATUS= is refreshed at most once per second and only after a
 * change, and the watchdog timer exists only when systemd asked for one
 * (WATCHDOG_USEC for our pid), so an idle daemon does not wake up for this.
 */
#pragma once

#include <stdint.h>

struct event_base;

/* Returns the current one-line status, malloc'ed (NULL on failure). */
typedef char *(*NotifyStatusFunc)(void *userdata);

typedef struct Notify Notify;

/* NULL only on allocation failure. */
Notify *notify_new(struct event_base *base, NotifyStatusFunc status, void *userdata);
Notify *notify_free(Notify *n);
void notify_ready(Notify *n);
void notify_reloading(Notify *n, uint64_t now_usec);
void notify_stopping(Notify *n);
/* The status changed: send STATUS= within a second. */
void notify_status_changed(Notify *n);
/* The watchdog interval systemd asked for, 0 when none. */
uint64_t notify_watchdog_usec(const Notify *n);
