/* SPDX-License-Identifier: MIT */
/* The listening socket and accept (see listener.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-daemon.h>

#include "listener.h"
#include "log.h"
#include "macro.h"
#include "ratelimit.h"
#include "tb-config.h"
#include "time-util.h"

/* Connections accepted per wakeup of the listening socket, so a flood of
 * connects cannot starve the peers already connected. */
#define ACCEPT_BATCH 64
/* How long to stop accepting after EMFILE/ENFILE. */
#define ACCEPT_RETRY_USEC 100000

enum { LOG_REFUSED, LOG_ACCEPT_FAILED, LOG_CREDENTIALS, LOG_GROUPS, _LOG_MAX };

struct Listener {
        struct event_base *base;
        const PeerSet *peers;
        ListenerLimits limits;
        ListenerConnectionFunc connection;
        void *userdata;
        int fd;
        bool owns_socket_file;
        char *socket_path;
        struct event *listen_event;
        struct event *retry_event;
        RateLimit log_limits[_LOG_MAX];
};

static void listen_cb(evutil_socket_t listen_fd, short what, void *userdata);

static void retry_cb(evutil_socket_t fd, short what, void *userdata) {
        Listener *l = userdata;

        event_add(l->listen_event, NULL);
}

Listener *listener_new(struct event_base *base, const PeerSet *peers, const ListenerLimits *limits,
                       ListenerConnectionFunc connection, void *userdata) {
        Listener *l = calloc(1, sizeof(*l));

        if (!l)
                return NULL;
        l->base = base;
        l->peers = peers;
        l->connection = connection;
        l->userdata = userdata;
        l->fd = -1;
        listener_set_limits(l, limits);
        l->retry_event = evtimer_new(base, retry_cb, l);
        if (!l->retry_event)
                return listener_free(l);
        return l;
}

Listener *listener_free(Listener *l) {
        if (!l)
                return NULL;
        if (l->listen_event)
                event_free(l->listen_event);
        if (l->retry_event)
                event_free(l->retry_event);
        if (l->fd >= 0)
                close(l->fd);
        if (l->owns_socket_file && l->socket_path)
                (void)unlink(l->socket_path);
        free(l->socket_path);
        free(l);
        return NULL;
}

void listener_set_limits(Listener *l, const ListenerLimits *limits) {
        l->limits = *limits;
        for (size_t i = 0; i < ELEMENTSOF(l->log_limits); i++)
                ratelimit_configure(&l->log_limits[i], limits->log_interval_usec, limits->log_burst);
}

const char *listener_socket_path(const Listener *l) {
        return l->socket_path;
}

void listener_stop(Listener *l) {
        if (l->listen_event)
                event_del(l->listen_event);
        event_del(l->retry_event);
}

/* ---- accept ---- */

/* Over a limit, a connection is accepted and closed at once. The last
 * limits.admin_connections slots are for admins only, so no number of other
 * users' connections can lock budgetctl out. */
static const char *accept_refusal(const Listener *l, const Identity *id) {
        unsigned n = peer_set_size(l->peers);

        if (n >= l->limits.max_connections)
                return "limits.max_connections reached";
        if (!identity_is_admin(id) && n >= l->limits.max_connections - l->limits.admin_connections)
                return "limits.max_connections reached (the rest is limits.admin_connections, for admins)";
        if (peer_set_uid_connections(l->peers, id->uid) >= l->limits.max_connections_per_uid)
                return "limits.max_connections_per_uid reached";
        return NULL;
}

static void accept_one(Listener *l, int fd) {
        uint64_t now = now_usec();
        _cleanup_free_ gid_t *groups = NULL;
        size_t n_groups = 0;
        const char *limit;
        Identity id;
        int r;

        r = identity_from_socket(fd, &id);
        if (r < 0) {
                log_limited(&l->log_limits[LOG_CREDENTIALS], now, LOG_LEVEL_WARNING,
                            "cannot read credentials of a new connection: %s", strerror(-r));
                close(fd);
                return;
        }
        /* Without its groups a peer is still served, as what its uid and
         * primary gid make it: membership of admin_group through a
         * supplementary group is then not seen (fails closed). */
        r = identity_peer_groups(fd, &groups, &n_groups);
        if (r < 0)
                log_limited(&l->log_limits[LOG_GROUPS], now, LOG_LEVEL_WARNING,
                            "cannot read the groups of pid %d uid %u: %s", (int)id.pid, (unsigned)id.uid,
                            strerror(-r));
        identity_set_admin_groups(&id, groups, n_groups, l->limits.has_admin_gid, l->limits.admin_gid);
        limit = accept_refusal(l, &id);
        if (limit) {
                log_limited(&l->log_limits[LOG_REFUSED], now, LOG_LEVEL_WARNING,
                            "refusing connection of pid %d uid %u: %s", (int)id.pid, (unsigned)id.uid,
                            limit);
                close(fd);
                return;
        }
        (void)identity_read_proc("/proc", &id);
        l->connection(l->userdata, fd, &id, TAKE_PTR(groups), n_groups, now);
}

static void listen_cb(evutil_socket_t listen_fd, short what, void *userdata) {
        Listener *l = userdata;

        for (int i = 0; i < ACCEPT_BATCH; i++) {
                int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                struct timeval tv = {0, ACCEPT_RETRY_USEC};
                                log_limited(&l->log_limits[LOG_ACCEPT_FAILED], now_usec(), LOG_LEVEL_WARNING,
                                            "cannot accept connections: %s; pausing", strerror(errno));
                                event_del(l->listen_event);
                                event_add(l->retry_event, &tv);
                        }
                        return;
                }
                accept_one(l, fd);
        }
}

/* ---- the socket ---- */

static int mkdir_parents(const char *path, mode_t mode) {
        _cleanup_free_ char *copy = strdup(path);
        char *slash;

        if (!copy)
                return -ENOMEM;
        for (slash = strchr(copy + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
                *slash = 0;
                if (mkdir(copy, mode) < 0 && errno != EEXIST)
                        return -errno;
                *slash = '/';
        }
        return 0;
}

/* A socket file that exists is replaced only when nothing answers on it: a
 * live one means another daemon is serving, and stealing its path would
 * orphan its clients. */
static int socket_file_check_stale(const struct sockaddr_un *sa, socklen_t sa_len) {
        _cleanup_close_ int fd = -1;
        struct stat st;

        if (lstat(sa->sun_path, &st) < 0)
                return errno == ENOENT ? 0 : -errno;
        /* Only a socket file can be stale; anything else at the path is not ours to remove. */
        if (!S_ISSOCK(st.st_mode))
                return -EEXIST;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (connect(fd, (const struct sockaddr *)sa, sa_len) == 0)
                return -EADDRINUSE;
        if (unlink(sa->sun_path) < 0 && errno != ENOENT)
                return -errno;
        return 0;
}

static int socket_create(const char *path, int *ret_fd) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        socklen_t sa_len;
        _cleanup_close_ int fd = -1;
        int r;

        if (strlen(path) >= sizeof(sa.sun_path))
                return -ENAMETOOLONG;
        strcpy(sa.sun_path, path);
        sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);

        r = mkdir_parents(path, 0755);
        if (r < 0)
                return r;
        r = socket_file_check_stale(&sa, sa_len);
        if (r < 0)
                return r;
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        if (bind(fd, (struct sockaddr *)&sa, sa_len) < 0)
                return -errno;
        /* Any local process may ask for a budget; who it is comes from SO_PEERCRED. */
        if (chmod(path, 0666) < 0 || listen(fd, SOMAXCONN) < 0) {
                r = -errno;
                (void)unlink(path);
                return r;
        }
        *ret_fd = TAKE_FD(fd);
        return 0;
}

/* The socket systemd passed: the one named "varlink", or the only one. */
static int socket_from_systemd(int *ret_fd) {
        char **names = NULL;
        int n, fd = -1;

        n = sd_listen_fds_with_names(1, &names);
        if (n <= 0)
                return n;
        for (int i = 0; i < n; i++) {
                if ((names && names[i] && strcmp(names[i], "varlink") == 0) || n == 1)
                        fd = SD_LISTEN_FDS_START + i;
        }
        for (int i = 0; names && i < n; i++)
                free(names[i]);
        free(names);
        if (fd < 0)
                return -ENOENT;
        if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0)
                return -ENOTSOCK;
        if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
                return -errno;
        *ret_fd = fd;
        return 1;
}

int listener_start(Listener *l, const char *socket_path) {
        int r, fd = -1;

        r = socket_from_systemd(&fd);
        if (r < 0)
                return log_error("LISTEN_FDS set, but no usable listening AF_UNIX stream socket named "
                                 "'varlink' was passed: %s",
                                 strerror(-r)),
                       r;
        if (r == 0) {
                r = socket_create(socket_path, &fd);
                if (r == -EADDRINUSE)
                        return log_error("another tokenbudgetd is already answering on %s", socket_path), r;
                if (r == -EEXIST)
                        return log_error("cannot listen on %s: a file that is not a socket is in the way",
                                         socket_path),
                               r;
                if (r < 0)
                        return log_error("cannot listen on %s: %s", socket_path, strerror(-r)), r;
                l->owns_socket_file = true;
                log_info("tokenbudgetd " TB_VERSION " listening on %s", socket_path);
        } else
                log_info("tokenbudgetd " TB_VERSION " serving the socket passed by systemd");

        l->fd = fd;
        l->socket_path = strdup(socket_path);
        l->listen_event = event_new(l->base, fd, EV_READ | EV_PERSIST, listen_cb, l);
        if (!l->socket_path || !l->listen_event || event_add(l->listen_event, NULL) < 0)
                return -ENOMEM;
        return 0;
}
