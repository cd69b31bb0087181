/* SPDX-License-Identifier: MIT */
/*
 * Peers: the connected clients, each with its own input and output buffers
 * (plain non-blocking recv/send on libevent events; no bufferevents on the
 * hot path: a bufferevent costs ~5 syscalls per read where this costs 1).
 * A peer frames messages, enforces the per-client limits (message size,
 * queued output per connection and per uid, idle time) and hands each call
 * to the set's call handler as a Call (call.h). It does not know any method.
 *
 * The commit point: while the set's owner has writes to commit
 * (commit_pending), replies wait for the end of the loop iteration, where the
 * commit hook runs once and then every waiting peer is flushed. So no reply
 * to a call whose change must be durable is written before the change is
 * committed, and one commit serves every call of the iteration. With nothing
 * to commit (an in-memory ledger), holding replies would only delay clients:
 * they are written as soon as a peer's messages are handled. Either way a
 * burst of pipelined calls costs one send(). A peer is never freed inside its own callback: it is marked
 * dead and freed on the next loop turn (as tmux does).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "call.h"
#include "identity.h"
#include "varlink.h"

struct event_base;

typedef struct PeerSet PeerSet;

typedef struct PeerSetOps {
        /* One call, parsed strictly or by the flat fast path. Returns 0 (it
         * was answered, deferred, or was oneway) or -ENOMEM: the peer is
         * dropped. */
        int (*handle_call)(void *userdata, Call *call, const VarlinkCall *message, uint64_t now);
        int (*handle_flat_call)(void *userdata, Call *call, const VarlinkFlatCall *message, uint64_t now);
        /* The connection is gone; session is what peer_set_add() was given. */
        void (*disconnected)(void *userdata, void *session, uint64_t now);
        /* Whether the idle timeout may close the connection (it holds nothing). */
        bool (*may_close_idle)(void *userdata, void *session);
        /* Whether the calls handled since the last commit left writes that
         * must be committed before their replies leave. While it says so,
         * replies wait for the end of the loop iteration, where commit runs
         * once for all of them (group commit); otherwise (or NULL) they are
         * written as soon as their peer's messages are handled. */
        bool (*commit_pending)(void *userdata);
        /* Once per loop iteration in which replies waited, before any of them
         * is written. May be NULL. */
        void (*commit)(void *userdata);
} PeerSetOps;

typedef struct PeerSetLimits {
        uint64_t max_message_bytes;
        uint64_t max_output_bytes;         /* per connection, checked before each new message */
        uint64_t max_output_bytes_per_uid; /* over all connections of a uid */
        uint64_t idle_timeout_usec;        /* 0: never */
        uint64_t log_interval_usec;        /* rate limit of the lines a client can cause */
        unsigned log_burst;
} PeerSetLimits;

PeerSet *peer_set_new(struct event_base *base, const PeerSetLimits *limits, const PeerSetOps *ops,
                      void *userdata);
/* Closes every peer (disconnected runs for each). NULL-safe; returns NULL. */
PeerSet *peer_set_free(PeerSet *s);
void peer_set_set_limits(PeerSet *s, const PeerSetLimits *limits);

/* Serves the connected socket fd (taken, closed on failure). */
int peer_set_add(PeerSet *s, int fd, const Identity *identity, void *session, uint64_t now);
/* Closes every connection (disconnected runs for each), for shutdown. */
void peer_set_close_all(PeerSet *s, const char *why);
/* Runs the end of an iteration now (the commit, then every waiting reply is
 * written as far as the sockets take it): before closing at shutdown. */
void peer_set_turn_now(PeerSet *s);
/* Idle connections and closing ones that do not read their last replies. */
void peer_set_sweep(PeerSet *s, uint64_t now);

unsigned peer_set_size(const PeerSet *s);
unsigned peer_set_uid_connections(const PeerSet *s, uid_t uid);

/* A closing peer that does not read its last replies within this long is cut off. */
#define PEER_CLOSING_GRACE_USEC (5 * UINT64_C(1000000))
