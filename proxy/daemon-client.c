/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * A pool of libtokenbudget handles on the event_base. Each handle is watched
 * only while calls are pending (tb_client_get_events() is 0 otherwise: an idle
 * handle is not watched at all, and the library reconnects on its own when
 * the daemon closed it while idle). See daemon-client.h.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "daemon-client.h"
#include "macro.h"

struct DaemonConn {
        DaemonPool *pool;
        tb_client *client;
        struct event *ev;
        bool in_process;
        bool broken;
        bool in_pool; /* given back: free it (when broken) after tb_client_process() returns */
        LIST_FIELDS(DaemonConn, idle);
};

struct DaemonPool {
        struct event_base *base;
        char *address;
        unsigned max_idle, n_idle;
        bool no_on_behalf;
        DaemonConn *idle;
};

static uint64_t now_monotonic_usec(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static DaemonConn *conn_free(DaemonConn *c) {
        if (!c)
                return NULL;
        if (c->ev)
                event_free(c->ev);
        tb_client_close(c->client);
        free(c);
        return NULL;
}

static void conn_event_cb(evutil_socket_t fd, short what, void *userdata) {
        DaemonConn *c = userdata;
        int r;

        c->in_process = true;
        do
                r = tb_client_process(c->client);
        while (r > 0);
        c->in_process = false;
        if (r < 0)
                c->broken = true;
        if (c->in_pool && c->broken) {
                DaemonPool *p = c->pool;
                LIST_REMOVE(idle, p->idle, c);
                p->n_idle--;
                conn_free(c);
                return;
        }
        daemon_conn_arm(c);
}

void daemon_conn_arm(DaemonConn *c) {
        int fd = tb_client_get_fd(c->client), events = tb_client_get_events(c->client);
        uint64_t deadline;

        if (c->ev) {
                event_free(c->ev);
                c->ev = NULL;
        }
        if (fd < 0 || events <= 0) {
                if (fd < 0)
                        c->broken = true;
                return;
        }
        c->ev = event_new(c->pool->base, fd,
                          ((events & POLLIN) ? EV_READ : 0) | ((events & POLLOUT) ? EV_WRITE : 0),
                          conn_event_cb, c);
        if (!c->ev) {
                c->broken = true;
                return;
        }
        if (tb_client_get_timeout(c->client, &deadline) > 0) {
                uint64_t now = now_monotonic_usec(), left = deadline > now ? deadline - now : 0;
                struct timeval tv = {.tv_sec = left / 1000000, .tv_usec = left % 1000000};
                event_add(c->ev, &tv);
        } else
                event_add(c->ev, NULL);
}

DaemonPool *daemon_pool_new(struct event_base *base, const char *address, unsigned max_idle) {
        DaemonPool *p = calloc(1, sizeof(*p));

        if (!p)
                return NULL;
        p->base = base;
        p->max_idle = max_idle;
        if (address && !(p->address = strdup(address)))
                return mfree(p);
        return p;
}

DaemonPool *daemon_pool_free(DaemonPool *p) {
        if (!p)
                return NULL;
        while (p->idle) {
                DaemonConn *c = p->idle;
                LIST_REMOVE(idle, p->idle, c);
                conn_free(c);
        }
        free(p->address);
        free(p);
        return NULL;
}

int daemon_pool_get(DaemonPool *p, DaemonConn **ret, char **ret_error) {
        DaemonConn *c;
        int r;

        c = p->idle;
        while (c) {
                DaemonConn *next = c->idle_next;

                if (c->in_process) { /* its tb_client_process() is running: left to its event */
                        c = next;
                        continue;
                }
                LIST_REMOVE(idle, p->idle, c);
                p->n_idle--;
                c->in_pool = false;
                if (!c->broken && tb_client_get_fd(c->client) >= 0) {
                        *ret = c;
                        return 0;
                }
                conn_free(c);
                c = next;
        }
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->pool = p;
        r = tb_client_open(p->address, &c->client, ret_error);
        if (r < 0) {
                free(c);
                return r;
        }
        *ret = c;
        return 0;
}

void daemon_pool_put(DaemonPool *p, DaemonConn *c) {
        if (!c)
                return;
        if (c->broken || tb_client_pending(c->client) > 0 || p->n_idle >= p->max_idle) {
                if (c->in_process) {
                        /* Inside its own callback: the handle may be closed there (the library
                         * allows it), but our event and struct go when the loop turn ends. */
                        c->broken = true;
                        c->in_pool = true;
                        LIST_PREPEND(idle, p->idle, c);
                        p->n_idle++;
                        return;
                }
                conn_free(c);
                return;
        }
        c->in_pool = true;
        LIST_PREPEND(idle, p->idle, c);
        p->n_idle++;
        if (!c->in_process)
                daemon_conn_arm(c);
}

void daemon_conn_discard(DaemonConn *c) {
        c->broken = true;
}

tb_client *daemon_conn_client(DaemonConn *c) {
        return c->client;
}

bool daemon_pool_on_behalf_supported(const DaemonPool *p) {
        return !p->no_on_behalf;
}

void daemon_pool_set_on_behalf_unsupported(DaemonPool *p) {
        p->no_on_behalf = true;
}
