/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * tokenbudget-proxy: HTTP in front of model servers (OpenAI-compatible,
 * Ollama, Anthropic) that asks tokenbudgetd before forwarding, clamps the max
 * output to the grant, counts the usage of replies and streams, and cuts a
 * stream at its hard limit. This file is the wiring: options, the config,
 * the event loop with the listeners, the upstream multi handle and the daemon
 * pool, and a clean stop on SIGTERM/SIGINT. See tokenbudget-proxy(1).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "api.h"
#include "config.h"
#include "daemon-client.h"
#include "exchange.h"
#include "listener.h"
#include "tb-config.h"

static void usage(FILE *f) {
        fprintf(f,
                "Usage: tokenbudget-proxy --listen ADDR --upstream URL [--api KIND] [--socket "
                "DAEMON_SOCKET]\n"
                "       tokenbudget-proxy --upstream URL ...   (socket-activated: the one socket passed)\n"
                "       tokenbudget-proxy --config FILE [--socket DAEMON_SOCKET]\n"
                "\n"
                "  -l, --listen ADDR      127.0.0.1:PORT, [::1]:PORT, unix:PATH or systemd:NAME (the\n"
                "                         socket passed by systemd with that FileDescriptorName=);\n"
                "                         default with --upstream: the only socket systemd passed\n"
                "  -u, --upstream URL     http://HOST:PORT[/base], https://..., unix:PATH[:/base]\n"
                "  -a, --api KIND         auto (by path, the default), openai, ollama, anthropic\n"
                "  -s, --socket PATH      the daemon's socket (default: $TOKENBUDGET_SOCKET, the system\n"
                "                         socket, the user's)\n"
                "  -c, --config FILE      listeners and settings (libconfig; see tokenbudget-proxy(1))\n"
                "      --check-config FILE  read FILE, check every listener's address and upstream, print\n"
                "                         the settings in effect and exit (0 when valid, 2 when not)\n"
                "      --fail MODE        closed (503 when the daemon is down, the default) or open\n"
                "      --forward-malformed  forward bodies that are not the API's JSON unbudgeted\n"
                "  -v, --verbose          log every request (debug)\n"
                "  -h, --help, --version\n");
}

static void stop_cb(evutil_socket_t sig, short what, void *userdata) {
        event_base_loopbreak(userdata);
}

/* No reload yet: SIGHUP (which would end the process) is said and ignored. */
static void hup_cb(evutil_socket_t sig, short what, void *userdata) {
        log_notice("SIGHUP: the configuration is not reloaded (restart the proxy to apply changes)");
}

typedef struct Options {
        const char *listen, *upstream, *api, *socket, *config, *fail, *check_config;
        bool forward_malformed, verbose;
} Options;

static int parse_options(int argc, char **argv, Options *o) {
        static const struct option longopts[] = {
                {"listen", required_argument, NULL, 'l'},
                {"upstream", required_argument, NULL, 'u'},
                {"api", required_argument, NULL, 'a'},
                {"socket", required_argument, NULL, 's'},
                {"config", required_argument, NULL, 'c'},
                {"fail", required_argument, NULL, 'F'},
                {"forward-malformed", no_argument, NULL, 'M'},
                {"verbose", no_argument, NULL, 'v'},
                {"check-config", required_argument, NULL, 'C'},
                {"help", no_argument, NULL, 'h'},
                {"version", no_argument, NULL, 'V'},
                {},
        };
        int c;

        while ((c = getopt_long(argc, argv, "l:u:a:s:c:vh", longopts, NULL)) >= 0) {
                switch (c) {
                case 'l':
                        o->listen = optarg;
                        break;
                case 'u':
                        o->upstream = optarg;
                        break;
                case 'a':
                        o->api = optarg;
                        break;
                case 's':
                        o->socket = optarg;
                        break;
                case 'c':
                        o->config = optarg;
                        break;
                case 'F':
                        o->fail = optarg;
                        break;
                case 'M':
                        o->forward_malformed = true;
                        break;
                case 'C':
                        o->check_config = optarg;
                        break;
                case 'v':
                        o->verbose = true;
                        break;
                case 'h':
                        usage(stdout);
                        exit(EXIT_SUCCESS);
                case 'V':
                        printf("tokenbudget-proxy %s\n", TB_VERSION);
                        exit(EXIT_SUCCESS);
                default:
                        usage(stderr);
                        return -EINVAL;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "tokenbudget-proxy: unexpected argument '%s'\n", argv[optind]);
                return -EINVAL;
        }
        if (o->listen && !o->upstream) {
                fprintf(stderr, "tokenbudget-proxy: --listen needs --upstream\n");
                return -EINVAL;
        }
        /* Socket-activated with one socket: --upstream alone serves it. */
        if (o->upstream && !o->listen)
                o->listen = "systemd:";
        if (o->check_config) {
                if (o->config) {
                        fprintf(stderr,
                                "tokenbudget-proxy: --check-config and --config do not go together\n");
                        return -EINVAL;
                }
                o->config = o->check_config;
        }
        if (!o->listen && !o->config) {
                usage(stderr);
                return -EINVAL;
        }
        return 0;
}

static int build_config(const Options *o, ProxyConfig *cfg) {
        char *err = NULL;
        int r;

        if (o->config) {
                r = proxy_config_load(cfg, o->config, &err);
                if (r < 0) {
                        fprintf(stderr, "tokenbudget-proxy: %s\n", err ? err : strerror(-r));
                        free(err);
                        return r;
                }
        }
        if (o->listen) {
                int kind = o->api ? api_kind_from_string(o->api) : API_KIND_AUTO;
                ListenerConfig *l;
                if (kind < 0) {
                        fprintf(stderr,
                                "tokenbudget-proxy: --api %s: expected auto, openai, ollama or anthropic\n",
                                o->api);
                        return -EINVAL;
                }
                r = proxy_config_add_listener(cfg, o->listen, o->upstream, kind, &l);
                if (r < 0)
                        return r;
                if (o->fail && strcmp(o->fail, "open") == 0)
                        l->fail = PROXY_FAIL_OPEN;
                else if (o->fail && strcmp(o->fail, "closed") != 0) {
                        fprintf(stderr, "tokenbudget-proxy: --fail %s: expected closed or open\n", o->fail);
                        return -EINVAL;
                }
                l->forward_malformed = o->forward_malformed;
        }
        if (cfg->n_listeners == 0) {
                fprintf(stderr, "tokenbudget-proxy: %s has no listeners\n", o->config);
                return -EINVAL;
        }
        if (o->socket) {
                free(cfg->daemon_socket);
                cfg->daemon_socket = strdup(o->socket);
        }
        if (o->verbose)
                cfg->log_level = 7;
        return 0;
}

/* What binding would find without binding: the upstream URL and the listen address's form. */
static int check_listeners(const ProxyConfig *cfg) {
        int ret = 0;

        for (size_t i = 0; i < cfg->n_listeners; i++) {
                const ListenerConfig *l = &cfg->listeners[i];
                UpstreamTarget t;
                const char *reason;
                char *err = NULL;

                if (upstream_target_parse(l->upstream, &t, &reason) < 0) {
                        fprintf(stderr, "tokenbudget-proxy: listener %zu: upstream %s: %s\n", i + 1,
                                l->upstream, reason);
                        ret = -EINVAL;
                } else
                        upstream_target_done(&t);
                if (proxy_listener_check_address(l->listen, &err) < 0) {
                        fprintf(stderr, "tokenbudget-proxy: listener %zu: %s\n", i + 1,
                                err ? err : l->listen);
                        ret = -EINVAL;
                }
                free(err);
        }
        return ret;
}

int main(int argc, char **argv) {
        ProxyListener *listeners[PROXY_LISTENERS_MAX] = {};
        ProxyContext ctx = {};
        PassedSockets passed = {};
        ProxyConfig cfg;
        Options o = {};
        struct event *sigterm = NULL, *sigint = NULL, *sighup = NULL;
        int r, ret = EXIT_FAILURE;

        if (parse_options(argc, argv, &o) < 0)
                return 2;
        proxy_config_init(&cfg);
        if (build_config(&o, &cfg) < 0) {
                proxy_config_done(&cfg);
                return 2;
        }
        if (o.check_config) {
                r = check_listeners(&cfg);
                if (r == 0)
                        proxy_config_print(&cfg, stdout);
                proxy_config_done(&cfg);
                return r < 0 ? 2 : EXIT_SUCCESS;
        }
        proxy_log_set_level(cfg.log_level);
        r = passed_sockets_take(&passed);
        if (r < 0) {
                log_err("the sockets systemd passed (LISTEN_FDS): %s", strerror(-r));
                proxy_config_done(&cfg);
                return EXIT_FAILURE;
        }
        if (passed.n > 0)
                log_debug("systemd passed %d socket(s)", passed.n);
        ctx.passed = &passed;
        signal(SIGPIPE, SIG_IGN);
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
                log_err("curl_global_init() failed");
                return EXIT_FAILURE;
        }
        ctx.config = &cfg;
        ctx.base = event_base_new();
        if (!ctx.base)
                goto out;
        ctx.upstream = upstream_new(ctx.base);
        ctx.daemon = daemon_pool_new(ctx.base, cfg.daemon_socket, (unsigned)cfg.daemon_idle_connections);
        if (!ctx.upstream || !ctx.daemon)
                goto out;
        for (size_t i = 0; i < cfg.n_listeners; i++) {
                char *err = NULL;
                r = proxy_listener_new(&ctx, &cfg.listeners[i], &listeners[i], &err);
                if (r < 0) {
                        log_err("cannot listen on %s: %s", cfg.listeners[i].listen,
                                err ? err : strerror(-r));
                        free(err);
                        goto out;
                }
                log_info("listening on %s%s for %s (api %s, fail %s)",
                         listeners[i]->name ? listeners[i]->name : "?",
                         listeners[i]->passed ? " (passed by systemd)" : "", cfg.listeners[i].upstream,
                         api_kind_to_string(cfg.listeners[i].api),
                         cfg.listeners[i].fail == PROXY_FAIL_OPEN ? "open" : "closed");
        }
        passed_sockets_done(&passed); /* the ones no listener took are closed */
        ctx.passed = NULL;
        sigterm = evsignal_new(ctx.base, SIGTERM, stop_cb, ctx.base);
        sigint = evsignal_new(ctx.base, SIGINT, stop_cb, ctx.base);
        sighup = evsignal_new(ctx.base, SIGHUP, hup_cb, NULL);
        if (!sigterm || !sigint || !sighup || evsignal_add(sigterm, NULL) < 0 ||
            evsignal_add(sigint, NULL) < 0 || evsignal_add(sighup, NULL) < 0)
                goto out;
        event_base_dispatch(ctx.base);
        log_info("stopping: %" PRIu64 " budgeted, %" PRIu64 " passed through, %" PRIu64 " refused, %" PRIu64
                 " cut",
                 ctx.n_budgeted, ctx.n_passthrough, ctx.n_refused, ctx.n_cut);
        ret = EXIT_SUCCESS;
out:
        passed_sockets_done(&passed);
        exchange_free_all(&ctx);
        for (size_t i = 0; i < cfg.n_listeners; i++)
                proxy_listener_free(listeners[i]);
        if (sigterm)
                event_free(sigterm);
        if (sigint)
                event_free(sigint);
        if (sighup)
                event_free(sighup);
        daemon_pool_free(ctx.daemon);
        upstream_free(ctx.upstream);
        if (ctx.base)
                event_base_free(ctx.base);
        curl_global_cleanup();
        proxy_config_done(&cfg);
        return ret;
}
