/* SPDX-License-Identifier: MIT */
/*
 * The listening socket: the one systemd passed (socket activation, the
 * socket named "varlink" or the only one), else one created at a path (a
 * stale socket file is replaced, a live one or anything else is not). It
 * accepts in batches, reads each new peer's credentials (SO_PEERCRED and
 * SO_PEERGROUPS, never a message), decides whether it is an admin (root, the
 * daemon's user, the admin group) and refuses connections over the limits
 * (total, the admin reserve, per uid) by closing them at once, so the client
 * sees EOF instead of hanging in the backlog. The rest it hands to its owner.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "identity.h"
#include "peer.h"

struct event_base;

typedef struct Listener Listener;

/* A connection the limits let in: fd (taken), who it is, and its
 * supplementary groups (taken: the callee frees groups; NULL when n_groups
 * is 0, also when they could not be read). */
typedef void (*ListenerConnectionFunc)(void *userdata, int fd, const Identity *identity, gid_t *groups,
                                       size_t n_groups, uint64_t now);

typedef struct ListenerLimits {
        uint64_t max_connections;
        uint64_t admin_connections; /* the last ones of max_connections, for admins only */
        uint64_t max_connections_per_uid;
        /* admin_group: its members (primary gid or SO_PEERGROUPS) are admins. */
        bool has_admin_gid;
        gid_t admin_gid;
        uint64_t log_interval_usec; /* rate limit of the lines a client can cause */
        unsigned log_burst;
} ListenerLimits;

Listener *listener_new(struct event_base *base, const PeerSet *peers, const ListenerLimits *limits,
                       ListenerConnectionFunc connection, void *userdata);
/* NULL-safe; returns NULL. Removes a socket file it created. */
Listener *listener_free(Listener *l);
void listener_set_limits(Listener *l, const ListenerLimits *limits);
/* Takes the socket from systemd (LISTEN_FDS) or creates it at socket_path,
 * and starts accepting. Logs what went wrong. */
int listener_start(Listener *l, const char *socket_path);
/* Accepts no more (shutdown). */
void listener_stop(Listener *l);
const char *listener_socket_path(const Listener *l);
