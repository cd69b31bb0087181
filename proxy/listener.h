/* SPDX-License-Identifier: MIT */
/*
 * One listening address of tokenbudget-proxy: an evhttp server (libevent's
 * HTTP/1.1) on a localhost TCP port or a Unix socket, with the limits on
 * request bodies, header sections and idle time, handing every request to an
 * exchange (exchange.h) bound for this listener's upstream.
 */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "config.h"
#include "upstream.h"

struct event_base;
struct evhttp;

typedef struct DaemonPool DaemonPool;
typedef struct Exchange Exchange;

/* The listening sockets systemd passed (LISTEN_FDS, LISTEN_FDNAMES: the socket unit's
 * FileDescriptorName=, else "unknown"), fds SD_LISTEN_FDS_START + i. A listener takes the one whose
 * address is its listen address, or the one named NAME for "systemd:NAME" ("systemd:" alone: the only
 * one passed); otherwise it binds its address itself. */
typedef struct PassedSockets {
        int n;
        char **names;
        bool *used;
} PassedSockets;

/* Takes them (and unsets LISTEN_FDS): 0 with n = 0 when none were passed, or a negative errno. */
int passed_sockets_take(PassedSockets *ret);
/* Closes the ones no listener took, each said in a warning, and frees the rest. */
void passed_sockets_done(PassedSockets *p);

/* What every exchange needs, owned by main. */
typedef struct ProxyContext {
        struct event_base *base;
        Upstream *upstream;
        DaemonPool *daemon;
        const ProxyConfig *config;
        PassedSockets *passed; /* from systemd, NULL or none when started by hand */
        Exchange *exchanges;   /* in flight */
        unsigned n_exchanges;
        /* stats */
        uint64_t n_budgeted, n_passthrough, n_refused, n_cut;
} ProxyContext;

/* A client connection that sent a request: counted against limits.max_connections (the listener
 * stops accepting while the count is there), with who the client is, looked up once. */
typedef struct ProxyConn {
        struct ProxyListener *listener;
        struct evhttp_connection *evcon;
        Exchange *exchange; /* the one in flight, told when the connection closes */
        bool peer_looked_up;
        int peer_error;
        uid_t peer_uid;
        pid_t peer_pid;
        LIST_FIELDS(struct ProxyConn, conns);
} ProxyConn;

typedef struct ProxyListener {
        ProxyContext *ctx;
        const ListenerConfig *config;
        UpstreamTarget target;
        struct evhttp *http;
        int fd;
        bool is_unix;
        bool passed;     /* the socket came from systemd: it is not ours to remove */
        char *unix_path; /* removed at the end (NULL for a passed socket) */
        char *name;      /* the address actually bound, "127.0.0.1:41234" */
        struct evhttp_bound_socket *bound;
        ProxyConn *conns;
        unsigned n_conns;
        bool paused;  /* at max_connections: not accepting */
        bool closing; /* evhttp_free() closes the connections: nothing to resume */
} ProxyListener;

/* Whether listen is an address proxy_listener_new() takes (its form, without binding): 127.0.0.1:PORT,
 * [::1]:PORT, unix:PATH or systemd:NAME. */
int proxy_listener_check_address(const char *listen, char **ret_error);

/* The record of evcon (made on its first request). */
ProxyConn *proxy_conn_get(ProxyListener *l, struct evhttp_connection *evcon);

/* Binds and listens: 0, or a negative errno with the reason in *ret_error (malloc'ed). */
int proxy_listener_new(ProxyContext *ctx, const ListenerConfig *config, ProxyListener **ret,
                       char **ret_error);
ProxyListener *proxy_listener_free(ProxyListener *l);
