/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * Parses a listen address, binds it (a TCP socket on 127.0.0.1/::1 or any
 * address given, or a Unix socket whose stale file is replaced) and serves it
 * with evhttp. See listener.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fcntl.h>
#include <systemd/sd-daemon.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "exchange.h"
#include "listener.h"

static int parse_inet(const char *addr, struct sockaddr_storage *ss, socklen_t *ret_len) {
        char host[64];
        const char *port;
        char *end;
        unsigned long p;

        if (addr[0] == '[') {
                const char *close = strchr(addr, ']');
                if (!close || close[1] != ':' || (size_t)(close - addr - 1) >= sizeof(host))
                        return -EINVAL;
                memcpy(host, addr + 1, close - addr - 1);
                host[close - addr - 1] = '\0';
                port = close + 2;
        } else {
                const char *colon = strrchr(addr, ':');
                if (!colon || (size_t)(colon - addr) >= sizeof(host))
                        return -EINVAL;
                memcpy(host, addr, colon - addr);
                host[colon - addr] = '\0';
                port = colon + 1;
        }
        errno = 0;
        p = strtoul(port, &end, 10);
        if (!*port || *end || errno || p > 65535)
                return -EINVAL;
        memset(ss, 0, sizeof(*ss));
        struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
                in4->sin_family = AF_INET;
                in4->sin_port = htons((uint16_t)p);
                *ret_len = sizeof(*in4);
        } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
                in6->sin6_family = AF_INET6;
                in6->sin6_port = htons((uint16_t)p);
                *ret_len = sizeof(*in6);
        } else
                return -EINVAL;
        return 0;
}

/* The address fd is bound to, as a listen address: "127.0.0.1:41234", "[::1]:8080", "unix:/run/x". */
static char *socket_name(int fd) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        char host[INET6_ADDRSTRLEN] = "", *name = NULL;
        int r = -1;

        if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
                return NULL;
        if (ss.ss_family == AF_INET) {
                inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
                r = asprintf(&name, "%s:%u", host, ntohs(((struct sockaddr_in *)&ss)->sin_port));
        } else if (ss.ss_family == AF_INET6) {
                inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
                r = asprintf(&name, "[%s]:%u", host, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
        } else if (ss.ss_family == AF_UNIX) {
                const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
                size_t n = len > offsetof(struct sockaddr_un, sun_path)
                                   ? len - offsetof(struct sockaddr_un, sun_path)
                                   : 0;
                if (n > 0 && un->sun_path[0] == '\0')
                        r = asprintf(&name, "unix:@%.*s", (int)n - 1, un->sun_path + 1);
                else
                        r = asprintf(&name, "unix:%.*s", (int)strnlen(un->sun_path, n), un->sun_path);
        }
        return r < 0 ? NULL : name;
}

int passed_sockets_take(PassedSockets *ret) {
        char **names = NULL;
        int n;

        *ret = (PassedSockets){};
        n = sd_listen_fds_with_names(1, &names);
        if (n <= 0)
                return n;
        ret->used = calloc((size_t)n, sizeof(bool));
        if (!ret->used) {
                for (int i = 0; names && i < n; i++)
                        free(names[i]);
                free(names);
                return -ENOMEM;
        }
        ret->n = n;
        ret->names = names;
        return 0;
}

void passed_sockets_done(PassedSockets *p) {
        for (int i = 0; i < p->n; i++) {
                if (!p->used[i]) {
                        char *name = socket_name(SD_LISTEN_FDS_START + i);
                        log_warning("the socket systemd passed as %s (%s) matches no listener: closed",
                                    p->names && p->names[i] ? p->names[i] : "unknown", name ? name : "?");
                        free(name);
                        close(SD_LISTEN_FDS_START + i);
                }
                if (p->names)
                        free(p->names[i]);
        }
        free(p->names);
        free(p->used);
        *p = (PassedSockets){};
}

/* A FileDescriptorName= systemd accepts: up to 255 printable ASCII characters but ':'. */
static bool fd_name_valid(const char *name) {
        size_t n = strlen(name);

        if (n > 255)
                return false;
        for (const char *c = name; *c; c++)
                if (*c < ' ' || *c > '~' || *c == ':')
                        return false;
        return true;
}

/* Takes passed socket i for l: it must be a listening stream socket. */
static int take_passed(ProxyListener *l, int i, char **ret_error) {
        int fd = SD_LISTEN_FDS_START + i, flags;

        if (sd_is_socket(fd, AF_UNSPEC, SOCK_STREAM, 1) <= 0 ||
            (sd_is_socket(fd, AF_INET, 0, -1) <= 0 && sd_is_socket(fd, AF_INET6, 0, -1) <= 0 &&
             sd_is_socket(fd, AF_UNIX, 0, -1) <= 0))
                return asprintf(ret_error,
                                "%s: the socket systemd passed as %s is not a listening TCP or Unix stream "
                                "socket (ListenStream= in the socket unit)",
                                l->config->listen,
                                l->ctx->passed->names ? l->ctx->passed->names[i] : "?") < 0
                               ? -ENOMEM
                               : -ENOTSOCK;
        flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
                return asprintf(ret_error, "%s: %m", l->config->listen) < 0 ? -ENOMEM : -errno;
        l->ctx->passed->used[i] = true;
        l->fd = fd;
        l->passed = true;
        l->is_unix = sd_is_socket(fd, AF_UNIX, 0, -1) > 0;
        l->name = socket_name(fd);
        return 0;
}

/* "systemd:NAME": the passed socket named NAME; "systemd:" alone, the only one passed. */
static int take_named(ProxyListener *l, const char *name, char **ret_error) {
        const PassedSockets *p = l->ctx->passed;

        if (!p || p->n == 0)
                return asprintf(ret_error,
                                "%s: systemd passed no socket (LISTEN_FDS; start the proxy from its socket "
                                "unit or systemd-socket-activate)",
                                l->config->listen) < 0
                               ? -ENOMEM
                               : -ENOENT;
        if (!*name) {
                if (p->n != 1)
                        return asprintf(
                                       ret_error,
                                       "%s: systemd passed %d sockets: name the one to serve (systemd:NAME, "
                                       "its FileDescriptorName=) or give each listener its address",
                                       l->config->listen, p->n) < 0
                                       ? -ENOMEM
                                       : -EINVAL;
                if (p->used[0])
                        return asprintf(ret_error, "%s: the socket systemd passed is another listener's",
                                        l->config->listen) < 0
                                       ? -ENOMEM
                                       : -EADDRINUSE;
                return take_passed(l, 0, ret_error);
        }
        for (int i = 0; i < p->n; i++)
                if (p->names && p->names[i] && strcmp(p->names[i], name) == 0 && !p->used[i])
                        return take_passed(l, i, ret_error);
        return asprintf(ret_error, "%s: systemd passed no unclaimed socket named %s (FileDescriptorName=)",
                        l->config->listen, name) < 0
                       ? -ENOMEM
                       : -ENOENT;
}

/* The passed socket bound to listen's own address, if any: 1 taken, 0 none, or a negative errno. */
static int take_by_address(ProxyListener *l, const char *listen, char **ret_error) {
        const PassedSockets *p = l->ctx->passed;
        struct sockaddr_storage ss;
        socklen_t len;

        if (!p)
                return 0;
        for (int i = 0; i < p->n; i++) {
                int fd = SD_LISTEN_FDS_START + i, r;
                if (p->used[i])
                        continue;
                if (strncmp(listen, "unix:", 5) == 0)
                        r = sd_is_socket_unix(fd, SOCK_STREAM, 1, listen + 5, 0);
                else if (parse_inet(listen, &ss, &len) == 0)
                        r = sd_is_socket_sockaddr(fd, SOCK_STREAM, (struct sockaddr *)&ss, len, 1);
                else
                        r = 0;
                if (r > 0) {
                        r = take_passed(l, i, ret_error);
                        return r < 0 ? r : 1;
                }
        }
        return 0;
}

static int bind_unix(ProxyListener *l, const char *path, char **ret_error) {
        struct sockaddr_un un = {.sun_family = AF_UNIX};
        struct stat st;

        if (strlen(path) >= sizeof(un.sun_path) || path[0] != '/') {
                return asprintf(ret_error,
                                "unix:%s: the socket path must be absolute and shorter than %zu bytes", path,
                                sizeof(un.sun_path)) < 0
                               ? -ENOMEM
                               : -EINVAL;
        }
        strcpy(un.sun_path, path);
        /* A socket file left by an earlier run is replaced; anything else is not touched. */
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
                unlink(path);
        l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (l->fd < 0 || bind(l->fd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(l->fd, 128) < 0) {
                int r = -errno;
                if (asprintf(ret_error, "unix:%s: %s", path, strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        l->is_unix = true;
        l->unix_path = strdup(path);
        if (asprintf(&l->name, "unix:%s", path) < 0)
                l->name = NULL;
        return 0;
}

static int bind_inet(ProxyListener *l, const char *addr, char **ret_error) {
        struct sockaddr_storage ss;
        socklen_t len;
        int one = 1, r;

        if (parse_inet(addr, &ss, &len) < 0)
                return asprintf(ret_error, "%s: expected 127.0.0.1:PORT, [::1]:PORT or unix:PATH", addr) < 0
                               ? -ENOMEM
                               : -EINVAL;
        l->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (l->fd < 0 || setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(l->fd, (struct sockaddr *)&ss, len) < 0 || listen(l->fd, 128) < 0) {
                r = -errno;
                if (asprintf(ret_error, "%s: %s", addr, strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        l->name = socket_name(l->fd);
        return 0;
}

int proxy_listener_check_address(const char *listen, char **ret_error) {
        struct sockaddr_storage ss;
        socklen_t len;

        if (strncmp(listen, "systemd:", 8) == 0) {
                if (fd_name_valid(listen + 8))
                        return 0;
                return asprintf(ret_error,
                                "%s: the name after systemd: is a FileDescriptorName= (up to 255 printable "
                                "characters, no ':')",
                                listen) < 0
                               ? -ENOMEM
                               : -EINVAL;
        }
        if (strncmp(listen, "unix:", 5) == 0) {
                const char *path = listen + 5;
                if (path[0] == '/' && strlen(path) < sizeof(((struct sockaddr_un *)NULL)->sun_path))
                        return 0;
                return asprintf(ret_error, "%s: the socket path must be absolute and shorter than 108 bytes",
                                listen) < 0
                               ? -ENOMEM
                               : -EINVAL;
        }
        if (parse_inet(listen, &ss, &len) == 0)
                return 0;
        return asprintf(ret_error, "%s: expected 127.0.0.1:PORT, [::1]:PORT, unix:PATH or systemd:NAME",
                        listen) < 0
                       ? -ENOMEM
                       : -EINVAL;
}

static void conn_close_cb(struct evhttp_connection *evcon, void *userdata) {
        ProxyConn *c = userdata;
        ProxyListener *l = c->listener;
        Exchange *ex = c->exchange;

        LIST_REMOVE(conns, l->conns, c);
        l->n_conns--;
        free(c);
        if (ex)
                exchange_client_closed(ex);
        if (l->paused && !l->closing && l->n_conns < l->ctx->config->max_connections) {
                l->paused = false;
                evconnlistener_enable(evhttp_bound_socket_get_listener(l->bound));
        }
}

ProxyConn *proxy_conn_get(ProxyListener *l, struct evhttp_connection *evcon) {
        ProxyConn *c;

        for (c = l->conns; c; c = c->conns_next)
                if (c->evcon == evcon)
                        return c;
        c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->listener = l;
        c->evcon = evcon;
        LIST_PREPEND(conns, l->conns, c);
        l->n_conns++;
        evhttp_connection_set_closecb(evcon, conn_close_cb, c);
        if (!l->paused && l->n_conns >= l->ctx->config->max_connections) {
                log_warning(
                        "%s: %u client connections (limits.max_connections): not accepting more until one "
                        "closes",
                        l->name ? l->name : l->config->listen, l->n_conns);
                l->paused = true;
                evconnlistener_disable(evhttp_bound_socket_get_listener(l->bound));
        }
        return c;
}

static void request_cb(struct evhttp_request *req, void *userdata) {
        exchange_start(userdata, req);
}

int proxy_listener_new(ProxyContext *ctx, const ListenerConfig *config, ProxyListener **ret,
                       char **ret_error) {
        ProxyListener *l = calloc(1, sizeof(*l));
        const char *reason;
        int r;

        if (!l)
                return -ENOMEM;
        l->ctx = ctx;
        l->config = config;
        l->fd = -1;
        r = upstream_target_parse(config->upstream, &l->target, &reason);
        if (r < 0) {
                if (asprintf(ret_error, "upstream %s: %s", config->upstream, reason) < 0)
                        *ret_error = NULL;
                proxy_listener_free(l);
                return r;
        }
        if (strncmp(config->listen, "systemd:", 8) == 0)
                r = take_named(l, config->listen + 8, ret_error);
        else {
                r = take_by_address(l, config->listen, ret_error);
                if (r == 0)
                        r = strncmp(config->listen, "unix:", 5) == 0
                                    ? bind_unix(l, config->listen + 5, ret_error)
                                    : bind_inet(l, config->listen, ret_error);
        }
        if (r < 0) {
                proxy_listener_free(l);
                return r;
        }
        l->http = evhttp_new(ctx->base);
        if (!l->http || !(l->bound = evhttp_accept_socket_with_handle(l->http, l->fd))) {
                proxy_listener_free(l);
                return -ENOMEM;
        }
        evhttp_set_max_body_size(l->http, (ev_ssize_t)ctx->config->max_body_bytes);
        evhttp_set_max_headers_size(l->http, (ev_ssize_t)ctx->config->max_header_bytes);
        evhttp_set_timeout(l->http, (int)ctx->config->idle_timeout_sec);
        evhttp_set_allowed_methods(l->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                                    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS |
                                                    EVHTTP_REQ_PATCH);
        evhttp_set_gencb(l->http, request_cb, l);
        *ret = l;
        return 0;
}

ProxyListener *proxy_listener_free(ProxyListener *l) {
        if (!l)
                return NULL;
        l->closing = true;
        if (l->http)
                evhttp_free(l->http); /* closes the bound socket and the connections (conn_close_cb) */
        else if (l->fd >= 0)
                close(l->fd);
        if (l->unix_path)
                unlink(l->unix_path);
        upstream_target_done(&l->target);
        free(l->unix_path);
        free(l->name);
        free(l);
        return NULL;
}
