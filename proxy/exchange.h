/* SPDX-License-Identifier: MIT */
/*
 * One HTTP request through tokenbudget-proxy, from the client's request to
 * the end of its reply: for a budgeted endpoint (api_endpoint()), the body is
 * parsed, the daemon asked (Request), the max output clamped to the grant and
 * the body forwarded; the upstream's reply streams back to the client as it
 * arrives (paused while the client does not read), its usage is read (and
 * reported every report.tokens or report.interval_msec of a stream), the
 * stream is cut in the API's own terms at the hard limit, and the allocation
 * released with the final usage. Other paths pass through unbudgeted.
 */
#pragma once

struct evhttp_request;
typedef struct ProxyListener ProxyListener;
typedef struct ProxyContext ProxyContext;
typedef struct Exchange Exchange;

void exchange_start(ProxyListener *l, struct evhttp_request *req);
/* Its client's connection closed (libevent frees it after this). */
void exchange_client_closed(Exchange *ex);
/* At shutdown: every exchange still in flight is dropped (upstreams cancelled; the daemon settles
 * their allocations when the connections close). */
void exchange_free_all(ProxyContext *ctx);
