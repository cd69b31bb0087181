/* SPDX-License-Identifier: MIT */
/*
 * The proxy's connections to tokenbudgetd: libtokenbudget handles driven by
 * the proxy's event_base (tb_client_get_fd/get_events/get_timeout and
 * tb_client_process). Varlink answers in order per connection, so an exchange
 * takes a connection of its own for its whole life (Request, Reports,
 * Release: the allocation belongs to that connection) from a small pool of
 * idle ones, and gives it back at its end. Knows nothing of HTTP.
 */
#pragma once

#include <stdbool.h>

#include "tokenbudget.h"

struct event_base;

typedef struct DaemonPool DaemonPool;
typedef struct DaemonConn DaemonConn;

/* address: a socket path, or NULL for libtokenbudget's default order. Keeps up to max_idle idle. */
DaemonPool *daemon_pool_new(struct event_base *base, const char *address, unsigned max_idle);
DaemonPool *daemon_pool_free(DaemonPool *p);
/* An idle connection, or a new one: 0, or the negative errno of tb_client_open() with its words
 * in *ret_error (malloc'ed). */
int daemon_pool_get(DaemonPool *p, DaemonConn **ret, char **ret_error);
/* Gives the connection back: kept idle when it is healthy, nothing is pending and the pool has
 * room, else closed (its open allocations are settled by the daemon). NULL-safe. */
void daemon_pool_put(DaemonPool *p, DaemonConn *c);
tb_client *daemon_conn_client(DaemonConn *c);
/* Not to be kept idle (an allocation may be left open on it): daemon_pool_put() closes it. */
void daemon_conn_discard(DaemonConn *c);
/* Watch the connection again after calls were queued on it. */
void daemon_conn_arm(DaemonConn *c);
/* The daemon refused onBehalfOf with PermissionDenied (the proxy's user is not trusted): leave it out
 * from now on. */
bool daemon_pool_on_behalf_supported(const DaemonPool *p);
void daemon_pool_set_on_behalf_unsupported(DaemonPool *p);
