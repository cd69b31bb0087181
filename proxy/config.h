/* SPDX-License-Identifier: MIT */
/*
 * tokenbudget-proxy's settings: its listeners (each an address, an upstream
 * URL, an API kind and what to do when things fail), the limits on what a
 * client can make it hold, how often it reports a stream's usage to the
 * daemon, and its diagnostics (one line per message on stderr, with the
 * sd-daemon priority prefix, as the daemon writes them). Every default is
 * here and in conf/tokenbudget-proxy.conf.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "api.h"
#include "macro.h"

typedef enum ProxyFail {
        PROXY_FAIL_CLOSED, /* daemon down: 503 */
        PROXY_FAIL_OPEN,   /* daemon down: forward unbudgeted, logged loudly */
} ProxyFail;

typedef struct ListenerConfig {
        char *listen;   /* "127.0.0.1:PORT", "[::1]:PORT", "unix:PATH" */
        char *upstream; /* "http://...", "https://...", "unix:PATH[:/base]" */
        ApiKind api;
        ProxyFail fail;
        bool forward_malformed;        /* a body that is not the API's JSON: forwarded unbudgeted, not 400 */
        bool allow_model_substitution; /* the grant's suggestedModel replaces the request's model */
} ListenerConfig;

#define PROXY_LISTENERS_MAX 64

typedef struct ProxyConfig {
        ListenerConfig *listeners;
        size_t n_listeners;
        char *daemon_socket; /* NULL: libtokenbudget's order ($TOKENBUDGET_SOCKET, system, user) */
        /* limits */
        uint64_t max_body_bytes;       /* request bodies: 413 above (8 MiB) */
        uint64_t max_header_bytes;     /* request header section (64 KiB) */
        uint64_t max_response_bytes;   /* a non-streamed budgeted response kept to read its usage (16 MiB) */
        uint64_t idle_timeout_sec;     /* a client connection idle this long is closed (60) */
        uint64_t max_connections;      /* client connections per listener; more wait in the backlog (256) */
        uint64_t connect_timeout_msec; /* connecting to the upstream (10000) */
        /* budgeting */
        uint64_t default_max_output;      /* tokens asked for when the request names no max output (4096) */
        uint64_t report_tokens;           /* a stream reports at least every this many tokens (256) */
        uint64_t report_interval_msec;    /* ... or this often while tokens flow (500) */
        uint64_t daemon_idle_connections; /* idle daemon connections kept (8) */
        int log_level;                    /* 3 err .. 7 debug (6 info) */
} ProxyConfig;

void proxy_config_init(ProxyConfig *c);
void proxy_config_done(ProxyConfig *c);
/* Adds a listener with the defaults for everything but listen and upstream (copied). */
int proxy_config_add_listener(ProxyConfig *c, const char *listen, const char *upstream, ApiKind api,
                              ListenerConfig **ret);
/* Reads a libconfig file over the defaults: 0, or a negative errno with "FILE:LINE: what" in
 * *ret_error (malloc'ed). */
int proxy_config_load(ProxyConfig *c, const char *path, char **ret_error);

/* The settings in effect, in the file's syntax (tokenbudget-proxy --check-config). */
void proxy_config_print(const ProxyConfig *c, FILE *f);

void proxy_log_set_level(int level);
void proxy_log(int level, const char *fmt, ...) _printf_(2, 3);
#define log_err(...)     proxy_log(3, __VA_ARGS__)
#define log_warning(...) proxy_log(4, __VA_ARGS__)
#define log_notice(...)  proxy_log(5, __VA_ARGS__)
#define log_info(...)    proxy_log(6, __VA_ARGS__)
#define log_debug(...)   proxy_log(7, __VA_ARGS__)
