/* SPDX-License-Identifier: MIT */
/*
 * One listening address of tokenbudget-proxy: an evhttp server (libevent's
 * HTTP/1.1) on a localhost TCP port or a Unix socket, with the limits on
 * request bodies, header sections and idle time, handing every request to an
 * exchange (exchange.h) bound for this listener's upstream.
 */
#pragma once

#include <stdbool.h>

#include "config.h"
#include "upstream.h"

struct event_base;
struct evhttp;

typedef struct DaemonPool DaemonPool;
typedef struct Exchange Exchange;

/* What every exchange needs, owned by main. */
typedef struct ProxyContext {
        struct event_base *base;
        Upstream *upstream;
        DaemonPool *daemon;
        const ProxyConfig *config;
        Exchange *exchanges; /* in flight */
        unsigned n_exchanges;
        /* stats */
        uint64_t n_budgeted, n_passthrough, n_refused, n_cut;
} ProxyContext;

typedef struct ProxyListener {
        ProxyContext *ctx;
        const ListenerConfig *config;
        UpstreamTarget target;
        struct evhttp *http;
        int fd;
        bool is_unix;
        char *unix_path; /* removed at the end */
        char *name;      /* the address actually bound, "127.0.0.1:41234" */
} ProxyListener;

/* Binds and listens: 0, or a negative errno with the reason in *ret_error (malloc'ed). */
int proxy_listener_new(ProxyContext *ctx, const ListenerConfig *config, ProxyListener **ret,
                       char **ret_error);
ProxyListener *proxy_listener_free(ProxyListener *l);
