/* SPDX-License-Identifier: MIT */
/*
 * sd_notify from a libevent loop: a one-shot timer coalesces STATUS=
 * updates (one sendmsg per second at most, however many requests change the
 * numbers), and a persistent timer at half of WATCHDOG_USEC pets the
 * watchdog, as sd_watchdog_enabled(3) recommends.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "notify.h"

/* STATUS= is for humans running systemctl status: once a second is current enough. */
#define STATUS_DELAY_USEC 1000000

struct Notify {
        bool enabled; /* $NOTIFY_SOCKET is set */
        NotifyStatusFunc status;
        void *userdata;
        struct event *status_event;
        struct event *watchdog_event;
        uint64_t watchdog_usec;
};

static struct timeval usec_to_timeval(uint64_t usec) {
        return (struct timeval){.tv_sec = (time_t)(usec / 1000000),
                                .tv_usec = (suseconds_t)(usec % 1000000)};
}

static void send_status(Notify *n) {
        char *text = n->status(n->userdata);

        if (text)
                (void)sd_notifyf(0, "STATUS=%s", text);
        free(text);
}

static void status_cb(evutil_socket_t fd, short what, void *userdata) {
        send_status(userdata);
}

static void watchdog_cb(evutil_socket_t fd, short what, void *userdata) {
        (void)sd_notify(0, "WATCHDOG=1");
}

Notify *notify_new(struct event_base *base, NotifyStatusFunc status, void *userdata) {
        Notify *n = calloc(1, sizeof(*n));
        uint64_t usec = 0;

        if (!n)
                return NULL;
        n->status = status;
        n->userdata = userdata;
        n->enabled = getenv("NOTIFY_SOCKET") != NULL;
        if (!n->enabled)
                return n;
        n->status_event = evtimer_new(base, status_cb, n);
        if (!n->status_event)
                return notify_free(n);
        if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
                struct timeval tv = usec_to_timeval(usec / 2);

                n->watchdog_usec = usec;
                n->watchdog_event = event_new(base, -1, EV_PERSIST, watchdog_cb, n);
                if (!n->watchdog_event || event_add(n->watchdog_event, &tv) < 0)
                        return notify_free(n);
        }
        return n;
}

Notify *notify_free(Notify *n) {
        if (!n)
                return NULL;
        if (n->status_event)
                event_free(n->status_event);
        if (n->watchdog_event)
                event_free(n->watchdog_event);
        free(n);
        return NULL;
}

void notify_ready(Notify *n) {
        if (!n->enabled)
                return;
        (void)sd_notify(0, "READY=1");
        send_status(n);
}

void notify_reloading(Notify *n, uint64_t now_usec) {
        if (n->enabled)
                (void)sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64, now_usec);
}

void notify_stopping(Notify *n) {
        if (!n->enabled)
                return;
        (void)sd_notify(0, "STOPPING=1");
        send_status(n);
}

void notify_status_changed(Notify *n) {
        struct timeval tv = usec_to_timeval(STATUS_DELAY_USEC);

        if (n->enabled && !evtimer_pending(n->status_event, NULL))
                evtimer_add(n->status_event, &tv);
}

uint64_t notify_watchdog_usec(const Notify *n) {
        return n->watchdog_usec;
}
