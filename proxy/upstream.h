/* SPDX-License-Identifier: MIT */
/*
 * The upstream side of tokenbudget-proxy: libcurl's multi interface driven by
 * the proxy's libevent loop (CURLMOPT_SOCKETFUNCTION/TIMERFUNCTION and
 * curl_multi_socket_action, the pattern of curl's docs/examples/hiperfifo.c).
 * One UpstreamTransfer is one HTTP request to the model server: its response
 * headers, then its body as it arrives (the caller may pause it: flow
 * control), then its end. Upstream URLs are http://, https:// (certificates
 * verified, curl's default, never turned off) and unix:PATH[:/base] (HTTP over
 * a Unix socket). Knows nothing of budgets or APIs.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;

typedef struct Upstream Upstream;
typedef struct UpstreamTransfer UpstreamTransfer;

/* Where requests go: a base URL (no trailing '/'), and a Unix socket path for unix: upstreams. */
typedef struct UpstreamTarget {
        char *base_url;  /* "https://api.example.com/base", "http://localhost" for unix: */
        char *unix_path; /* NULL for TCP */
} UpstreamTarget;

/* 0, or -EINVAL with a static reason. */
int upstream_target_parse(const char *url, UpstreamTarget *ret, const char **ret_reason);
void upstream_target_done(UpstreamTarget *t);

Upstream *upstream_new(struct event_base *base);
Upstream *upstream_free(Upstream *u);
/* Transfers in flight. */
unsigned upstream_active(const Upstream *u);

/* Return from body() to pause the transfer (the same bytes come again after upstream_transfer_resume()). */
#define UPSTREAM_PAUSE ((size_t)-1)

typedef struct UpstreamCallbacks {
        /* The final response's status and headers ("Name: value" lines without CRLF), once, before the
         * first body byte (or before done() for a response without one). Return 0, or <0 to abort. */
        int (*response)(UpstreamTransfer *t, long status, char **headers, size_t n_headers, void *userdata);
        /* Body bytes as they arrive: return len (consumed), UPSTREAM_PAUSE, or 0 to abort. */
        size_t (*body)(UpstreamTransfer *t, const char *data, size_t len, void *userdata);
        /* The end: error 0, or a negative errno with curl's words in message. The transfer is freed
         * when this returns. Not called after upstream_transfer_cancel(). */
        void (*done)(UpstreamTransfer *t, int error, const char *message, void *userdata);
} UpstreamCallbacks;

typedef struct UpstreamRequest {
        const char *method;         /* "POST", "GET", ... */
        const char *path;           /* the request target: "/v1/chat/completions?x=y" */
        const char *const *headers; /* "Name: value", NULL-terminated; hop-by-hop ones already removed */
        char *body;                 /* taken over (freed with the transfer); may be NULL */
        size_t body_len;
        uint64_t connect_timeout_msec;
} UpstreamRequest;

/* Starts a transfer; 0 with *ret, or a negative errno (no callback runs; the body is freed). */
int upstream_transfer_start(Upstream *u, const UpstreamTarget *target, UpstreamRequest *req,
                            const UpstreamCallbacks *cb, void *userdata, UpstreamTransfer **ret);
/* Continues a paused transfer (body() may run from inside this call). */
void upstream_transfer_resume(UpstreamTransfer *t);
bool upstream_transfer_paused(const UpstreamTransfer *t);
/* Stops and frees it; no callback runs. Not from inside one of its callbacks (return 0 from body()
 * instead). NULL-safe; returns NULL. */
UpstreamTransfer *upstream_transfer_cancel(UpstreamTransfer *t);
