/* SPDX-License-Identifier: MIT */
/*
 * Peers and the set of them (see peer.h). Time is read once per event and
 * passed down.
 *
 * Buffers are lent, so an idle connection holds none and the hot path
 * allocates none. Input: a peer reads into a buffer of the set's small pool
 * and keeps it only while a partial message remains. Output: the replies of
 * every peer served in one loop iteration are appended to one arena, each
 * peer's as one segment, and written from there at the commit point; only
 * what a peer does not take at once (EAGAIN) is copied into a buffer of its
 * own. One hot buffer for a whole iteration, as the single scratch buffer
 * was before replies waited for the commit.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>

#include "hashmap.h"
#include "log.h"
#include "macro.h"
#include "peer.h"
#include "ratelimit.h"
#include "time-util.h"

/* Bytes asked of recv(2) at a time: one typical burst of pipelined calls. */
#define READ_CHUNK_BYTES 16384
/* The pool keeps a few buffers of up to this size: input is given back as
 * soon as it is handled, so one or two are in use at a time. */
#define POOL_BUFFER_MAX_BYTES (64 * 1024)
#define POOL_MAX              8
#define POOL_MAX_BYTES        (256 * 1024)
/* An arena grown past this by one large reply is freed after its turn. */
#define ARENA_KEEP_BYTES (1024 * 1024)

/* Connections and queued output of one uid. Kept while it has connections. */
typedef struct UidConns {
        uid_t uid;
        unsigned n_connections;
        size_t output_bytes; /* unsent output of all its connections */
} UidConns;

typedef struct Peer Peer;

struct Peer {
        PeerSet *set;
        int fd;
        struct event *read_event;
        struct event *write_event;
        VarlinkBuffer in;
        size_t in_scanned;    /* bytes at the front of in known to hold no NUL */
        VarlinkBuffer out;    /* its own output (or, while lent, the arena) */
        size_t out_offset;    /* bytes of out already written (while lent: where its segment starts) */
        size_t out_committed; /* bytes of out that passed a commit: only those may be written */
        size_t seg_start;     /* its segment of the arena: replies of this iteration, before out */
        size_t seg_len;
        bool has_seg;
        bool seg_committed;
        bool lent; /* out is the arena, while its input is handled */
        Identity identity;
        void *session;
        Call *call; /* the call being handled, or reused for the next message */
        UidConns *uid;
        size_t output_counted;    /* of the unsent output, what uid->output_bytes holds */
        uint64_t last_input_usec; /* connect or last bytes received */
        bool dead;
        bool closing;        /* reads no more; closed once its queued replies are out (or it stalls) */
        bool dirty;          /* in set->dirty (or set->batch): output queued this iteration */
        bool in_batch;       /* in set->batch: committed, being flushed */
        bool resume;         /* in set->resume: its deferred call was answered */
        bool reading_paused; /* input full while a call is deferred */
        LIST_FIELDS(Peer, peers);
        LIST_FIELDS(Peer, dead);
        LIST_FIELDS(Peer, dirty);
        LIST_FIELDS(Peer, resume);
};

struct PeerSet {
        struct event_base *base;
        PeerSetLimits limits;
        PeerSetOps ops;
        void *userdata;
        Peer *peers, *dead, *dirty, *resume;
        Peer *batch; /* dirty peers whose output was committed, being flushed */
        unsigned n_peers;
        Hashmap *uids;            /* uid -> UidConns */
        struct event *turn_event; /* the end of an iteration: resume, commit, flush */
        struct event *reap_event; /* frees dead peers */
        VarlinkBuffer pool[POOL_MAX];
        size_t n_pool, pool_bytes;
        VarlinkBuffer arena; /* this iteration's replies; empty while lent to a peer */
        bool arena_lent;
        unsigned n_segments; /* peers with a segment in the arena */
        RateLimit log_closed;
};

static void peer_read_cb(evutil_socket_t fd, short what, void *userdata);
static void peer_write_cb(evutil_socket_t fd, short what, void *userdata);
static void peer_kill(Peer *p, const char *why);

/* ---- buffers ---- */

static void buffer_borrow(PeerSet *s, VarlinkBuffer *b) {
        if (b->data || s->n_pool == 0)
                return;
        *b = s->pool[--s->n_pool];
        s->pool_bytes -= b->cap;
        b->len = 0;
}

static void buffer_give_back(PeerSet *s, VarlinkBuffer *b) {
        if (b->len > 0)
                return;
        if (b->data && b->cap <= POOL_BUFFER_MAX_BYTES && s->n_pool < POOL_MAX &&
            s->pool_bytes + b->cap <= POOL_MAX_BYTES) {
                s->pool[s->n_pool++] = *b;
                s->pool_bytes += b->cap;
        } else
                free(b->data);
        *b = (VarlinkBuffer){};
}

/* ---- per-uid counts ---- */

static int uid_ref(PeerSet *s, uid_t uid, UidConns **ret) {
        UidConns *u = hashmap_get(s->uids, uid);

        if (!u) {
                u = calloc(1, sizeof(*u));
                if (!u)
                        return -ENOMEM;
                u->uid = uid;
                if (hashmap_put(s->uids, uid, u) < 0) {
                        free(u);
                        return -ENOMEM;
                }
        }
        u->n_connections++;
        *ret = u;
        return 0;
}

static void uid_unref(PeerSet *s, UidConns *u) {
        if (!u)
                return;
        assert(u->n_connections > 0);
        if (--u->n_connections == 0)
                free(hashmap_remove(s->uids, u->uid));
}

static size_t peer_pending_output(const Peer *p) {
        return (p->has_seg ? p->seg_len : 0) + p->out.len - p->out_offset;
}

/* Replies go into the arena while the peer has nothing else pending (else
 * after what it has, in its own buffer, to keep them in order). */
static void peer_output_begin(Peer *p) {
        PeerSet *s = p->set;

        if (p->lent || s->arena_lent || p->has_seg || p->out.len > 0)
                return;
        varlink_buffer_clear(&p->out);
        p->out = TAKE_STRUCT(s->arena);
        p->out_offset = p->out.len;
        s->arena_lent = p->lent = true;
}

/* The arena back; what was appended is the peer's segment. */
static void peer_output_end(Peer *p) {
        PeerSet *s = p->set;
        size_t start = p->out_offset, len;

        if (!p->lent)
                return;
        len = p->out.len - start;
        s->arena = TAKE_STRUCT(p->out);
        p->out_offset = 0;
        s->arena_lent = p->lent = false;
        if (len > 0) {
                p->seg_start = start;
                p->seg_len = len;
                p->has_seg = true;
                p->seg_committed = false;
                s->n_segments++;
        } else if (s->n_segments == 0)
                s->arena.len = 0;
}

/* The segment is sent or moved out; with none left the arena starts over. */
static void peer_segment_gone(Peer *p) {
        PeerSet *s = p->set;

        if (!p->has_seg)
                return;
        p->has_seg = false;
        if (--s->n_segments == 0 && !s->arena_lent)
                s->arena.len = 0;
}

/* Moves the unsent rest of the segment into the peer's own buffer, in front
 * of what is there: before the arena is reset, or when the peer did not
 * take all of it. */
static int peer_output_keep(Peer *p) {
        PeerSet *s = p->set;
        size_t own = p->out.len - p->out_offset, committed;
        VarlinkBuffer b = {};

        if (!p->has_seg)
                return 0;
        committed = (p->seg_committed ? p->seg_len : 0) +
                    (p->out_committed > p->out_offset ? p->out_committed - p->out_offset : 0);
        if (varlink_buffer_reserve(&b, p->seg_len + own) < 0)
                return -ENOMEM;
        memcpy(b.data, s->arena.data + p->seg_start, p->seg_len);
        if (own > 0)
                memcpy(b.data + p->seg_len, p->out.data + p->out_offset, own);
        b.len = p->seg_len + own;
        varlink_buffer_clear(&p->out);
        p->out = b;
        p->out_offset = 0;
        p->out_committed = committed;
        peer_segment_gone(p);
        return 0;
}

/* Keeps the uid's total of unsent output equal to the sum over its peers. */
static void peer_count_output(Peer *p) {
        size_t pending = p->dead ? 0 : peer_pending_output(p);

        if (!p->uid)
                return;
        p->uid->output_bytes = p->uid->output_bytes - p->output_counted + pending;
        p->output_counted = pending;
}

/* Output a uid's peers have queued and not sent, with p's newest replies. */
static size_t uid_pending_output(const Peer *p) {
        if (!p->uid)
                return 0;
        return p->uid->output_bytes - p->output_counted + peer_pending_output(p);
}

/* ---- the end of an iteration ---- */

/* Output queued after its commit (a peer being flushed gets a late answer,
 * from a disconnect during the flush) waits for the next commit. */
static void peer_mark_dirty(Peer *p) {
        if (p->dead || (p->dirty && !p->in_batch))
                return;
        if (p->in_batch) {
                LIST_REMOVE(dirty, p->set->batch, p);
                p->in_batch = false;
        }
        p->dirty = true;
        LIST_PREPEND(dirty, p->set->dirty, p);
        event_active(p->set->turn_event, EV_READ, 0);
}

/* A deferred call was answered (call.h): its reply waits for the commit,
 * and the messages that came after it are handled at the end of the
 * iteration (never inside the handler that answered). */
static void peer_call_completed(void *owner) {
        Peer *p = owner;

        if (p->dead)
                return;
        peer_mark_dirty(p);
        if (!p->resume) {
                p->resume = true;
                LIST_PREPEND(resume, p->set->resume, p);
        }
}

/* Writes what is queued. Returns 0 when all of it went out or the rest waits
 * for EV_WRITE, -errno when the peer is gone. */
static int peer_flush(Peer *p) {
        int r = 0;

        if (p->has_seg && !p->seg_committed)
                return 0; /* nothing of it may leave before the commit */
        while (p->has_seg) {
                ssize_t n = send(p->fd, p->set->arena.data + p->seg_start, p->seg_len,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno != EAGAIN)
                        return -errno;
                if (n < 0 || (size_t)n < p->seg_len) {
                        if (n > 0) {
                                p->seg_start += (size_t)n;
                                p->seg_len -= (size_t)n;
                        }
                        r = peer_output_keep(p);
                        if (r < 0)
                                return r;
                        break;
                }
                peer_segment_gone(p);
        }
        while (p->out_offset < p->out_committed) {
                ssize_t n = send(p->fd, p->out.data + p->out_offset, p->out_committed - p->out_offset,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                event_add(p->write_event, NULL);
                        else
                                r = -errno;
                        peer_count_output(p);
                        return r;
                }
                p->out_offset += (size_t)n;
        }
        event_del(p->write_event);
        if (p->out_offset == p->out.len) {
                p->out.len = 0;
                p->out_offset = 0;
                p->out_committed = 0;
                buffer_give_back(p->set, &p->out);
        }
        peer_count_output(p);
        return 0;
}

/* Replies were queued: with writes waiting for the commit they wait too
 * (for the end of the iteration); with nothing to commit they leave at
 * once, as the peer's calls are answered, so the client can go on while
 * the daemon serves the next peer. */
static void peer_output_ready(Peer *p) {
        PeerSet *s = p->set;
        int r;

        if (p->dead || peer_pending_output(p) == 0)
                return;
        if (s->ops.commit_pending && s->ops.commit_pending(s->userdata))
                return peer_mark_dirty(p);
        p->out_committed = p->out.len;
        p->seg_committed = true;
        r = peer_flush(p);
        if (r < 0)
                return peer_kill(p, strerror(-r));
        if (p->closing && peer_pending_output(p) == 0)
                return peer_kill(p, "replies sent before closing");
}

/* ---- input ---- */

/* The call object for the next message: the peer's own, unless a handler
 * still holds it (deferred oneway, or kept after answering). */
static int peer_next_call(Peer *p, bool oneway) {
        if (!call_is_reusable(p->call)) {
                call_cancel(p->call);
                p->call = call_unref(p->call);
                p->call = call_new(&p->out, peer_call_completed, p, &p->identity, p->session);
                if (!p->call)
                        return -ENOMEM;
        }
        call_begin(p->call, oneway);
        return 0;
}

/* Handles every whole message in the input buffer, in order, until one is
 * deferred. Returns 0, or -errno with *ret_why set when the peer must be
 * closed. */
static int peer_process_input(Peer *p, uint64_t now, const char **ret_why) {
        PeerSet *s = p->set;
        size_t offset = 0;
        int r = 0;

        peer_output_begin(p);
        while (!p->dead && !call_is_pending(p->call)) {
                VarlinkFlatCall flat;
                VarlinkCall call;
                size_t frame_len;

                /* Skip what earlier reads already scanned without finding a
                 * NUL, so a message trickling in byte by byte costs O(n), not
                 * O(n^2). */
                if (p->in_scanned > s->limits.max_message_bytes) { /* the limit shrank on reload */
                        r = -EMSGSIZE;
                        *ret_why = "message exceeds limits.max_message_bytes";
                        break;
                }
                r = varlink_frame_next(p->in.data + offset + p->in_scanned,
                                       p->in.len - offset - p->in_scanned,
                                       s->limits.max_message_bytes - p->in_scanned, &frame_len);
                if (r == 0) {
                        p->in_scanned = p->in.len - offset;
                        break;
                }
                frame_len += p->in_scanned;
                p->in_scanned = 0;
                if (r < 0) {
                        *ret_why = "message exceeds limits.max_message_bytes";
                        break;
                }
                /* A peer that keeps sending while not reading its replies
                 * is cut off instead of growing our memory. */
                if (peer_pending_output(p) > s->limits.max_output_bytes) {
                        r = -ENOBUFS;
                        *ret_why = "queued output exceeds limits.max_output_bytes";
                        break;
                }
                if (uid_pending_output(p) > s->limits.max_output_bytes_per_uid) {
                        r = -ENOBUFS;
                        *ret_why = "queued output of its uid exceeds limits.max_output_bytes_per_uid";
                        break;
                }
                /* Most calls are flat (scalar parameters, no escapes): parsed in
                 * place without json-c; anything else takes the strict path. */
                if (varlink_call_parse_flat(p->in.data + offset, frame_len, &flat) == 1) {
                        offset += frame_len + 1;
                        r = peer_next_call(p, flat.oneway);
                        if (r >= 0)
                                r = s->ops.handle_flat_call(s->userdata, p->call, &flat, now);
                        if (r < 0) {
                                *ret_why = "out of memory";
                                break;
                        }
                        continue;
                }
                r = varlink_call_parse(p->in.data + offset, frame_len, &call, ret_why);
                offset += frame_len + 1;
                if (r == -ENOMEM)
                        *ret_why = "out of memory";
                if (r < 0)
                        break;
                r = peer_next_call(p, call.oneway);
                if (r >= 0)
                        r = s->ops.handle_call(s->userdata, p->call, &call, now);
                varlink_call_done(&call);
                if (r < 0) {
                        *ret_why = "out of memory";
                        break;
                }
        }
        peer_output_end(p);
        varlink_buffer_consume(&p->in, offset);
        buffer_give_back(s, &p->in);
        peer_output_ready(p);
        return r < 0 ? r : 0;
}

/* A peer is closed only after the replies to what it sent before are out:
 * the calls that came in the same read as a protocol violation (or before
 * EOF) took effect, so their answers must arrive. It reads no more; the
 * sweep closes it if it does not read them either. */
static void peer_close_after_flush(Peer *p, const char *why) {
        if (p->dead)
                return;
        call_cancel(p->call);
        p->closing = true;
        event_del(p->read_event);
        if (peer_pending_output(p) == 0)
                return peer_kill(p, why);
        peer_output_ready(p);
        if (p->dead)
                return;
        log_limited(&p->set->log_closed, now_usec(), LOG_LEVEL_DEBUG,
                    "closing connection of pid %d (%s) once its replies are out: %s", (int)p->identity.pid,
                    p->identity.comm, why);
}

/* With a call deferred, input waits in the buffer; a peer that pipelines
 * more than a whole message behind it is not read until the call is
 * answered, so it cannot grow our memory. */
static void peer_update_reading(Peer *p) {
        bool full = call_is_pending(p->call) && p->in.len > p->set->limits.max_message_bytes;

        if (p->dead || p->closing || full == p->reading_paused)
                return;
        p->reading_paused = full;
        if (full)
                event_del(p->read_event);
        else
                event_add(p->read_event, NULL);
}

static void peer_read_cb(evutil_socket_t fd, short what, void *userdata) {
        Peer *p = userdata;
        PeerSet *s = p->set;
        const char *why = NULL;
        ssize_t n;
        int r;

        buffer_borrow(s, &p->in);
        r = varlink_buffer_reserve(&p->in, READ_CHUNK_BYTES);
        if (r < 0)
                return peer_kill(p, "out of memory");
        n = recv(fd, p->in.data + p->in.len, READ_CHUNK_BYTES, MSG_DONTWAIT);
        if (n <= 0) {
                if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                        buffer_give_back(s, &p->in);
                        return;
                }
                if (n < 0)
                        return peer_kill(p, strerror(errno));
                /* A half-closed peer may still read the replies to what it sent. */
                buffer_give_back(s, &p->in);
                return peer_close_after_flush(p, "end of file");
        }
        p->in.len += (size_t)n;
        p->last_input_usec = now_usec();

        r = peer_process_input(p, p->last_input_usec, &why);
        if (r < 0)
                return peer_close_after_flush(p, why);
        peer_update_reading(p);
}

static void peer_write_cb(evutil_socket_t fd, short what, void *userdata) {
        Peer *p = userdata;
        int r = peer_flush(p);

        if (r < 0)
                peer_kill(p, strerror(-r));
        else if (p->closing && peer_pending_output(p) == 0)
                peer_kill(p, "replies sent before closing");
}

/* Peers whose deferred call was answered go on with the messages behind it. */
static void turn_resume(PeerSet *s) {
        while (s->resume) {
                Peer *p = s->resume;
                const char *why = NULL;

                LIST_REMOVE(resume, s->resume, p);
                p->resume = false;
                if (peer_process_input(p, now_usec(), &why) < 0) {
                        peer_close_after_flush(p, why);
                        continue;
                }
                peer_update_reading(p);
        }
}

/* The commit point: what the iteration's calls changed is committed, then
 * their replies go out. limits.max_output_bytes is enforced before each new
 * message (in peer_process_input()), not here: one large admin reply (Status
 * with thousands of processes) may exceed it and is still delivered to a
 * peer that reads. */
static void turn_cb(evutil_socket_t fd, short what, void *userdata) {
        PeerSet *s = userdata;

        turn_resume(s);
        if (!s->dirty)
                return;
        if (s->ops.commit)
                s->ops.commit(s->userdata);
        s->batch = TAKE_PTR(s->dirty);
        for (Peer *p = s->batch; p; p = p->dirty_next) {
                p->in_batch = true;
                p->out_committed = p->out.len;
                p->seg_committed = true;
        }
        while (s->batch) {
                Peer *p = s->batch;
                int r;

                LIST_REMOVE(dirty, s->batch, p);
                p->dirty = p->in_batch = false;
                r = peer_flush(p);
                if (r < 0)
                        peer_kill(p, strerror(-r));
                else if (p->closing && peer_pending_output(p) == 0)
                        peer_kill(p, "replies sent before closing");
        }
        /* Output that came after the commit (a late answer during the
         * flush) waits in its peer's own buffer for the next turn. */
        for (Peer *p = s->dirty, *next; p; p = next) {
                next = p->dirty_next;
                if (peer_output_keep(p) < 0)
                        peer_kill(p, "out of memory"); /* its replies cannot be kept */
        }
        if (s->n_segments == 0 && s->arena.cap > ARENA_KEEP_BYTES)
                varlink_buffer_clear(&s->arena);
}

/* ---- life and death ---- */

static void peer_free(Peer *p) {
        if (p->read_event)
                event_free(p->read_event);
        if (p->write_event)
                event_free(p->write_event);
        if (p->fd >= 0)
                close(p->fd);
        varlink_buffer_clear(&p->in);
        varlink_buffer_clear(&p->out);
        call_unref(p->call);
        free(p);
}

/* The session is settled (disconnected), the socket closed; the memory goes
 * on the next loop turn (reap_cb), never inside its own callback. */
static void peer_kill(Peer *p, const char *why) {
        PeerSet *s = p->set;
        uint64_t now;

        if (p->dead)
                return;
        now = now_usec();
        peer_output_end(p);
        peer_segment_gone(p);
        call_cancel(p->call);
        p->dead = true;
        s->ops.disconnected(s->userdata, p->session, now);
        if (why)
                log_limited(&s->log_closed, now, LOG_LEVEL_DEBUG, "closing connection of pid %d (%s): %s",
                            (int)p->identity.pid, p->identity.comm, why);
        event_del(p->read_event);
        event_del(p->write_event);
        peer_count_output(p);
        uid_unref(s, p->uid);
        p->uid = NULL;
        if (p->in_batch)
                LIST_REMOVE(dirty, s->batch, p);
        else if (p->dirty)
                LIST_REMOVE(dirty, s->dirty, p);
        if (p->resume)
                LIST_REMOVE(resume, s->resume, p);
        p->dirty = p->in_batch = p->resume = false;
        LIST_REMOVE(peers, s->peers, p);
        s->n_peers--;
        LIST_PREPEND(dead, s->dead, p);
        event_active(s->reap_event, EV_READ, 0);
}

static void reap_cb(evutil_socket_t fd, short what, void *userdata) {
        PeerSet *s = userdata;

        while (s->dead) {
                Peer *p = s->dead;
                LIST_REMOVE(dead, s->dead, p);
                peer_free(p);
        }
}

int peer_set_add(PeerSet *s, int fd, const Identity *identity, void *session, uint64_t now) {
        Peer *p = calloc(1, sizeof(*p));
        int r;

        if (!p) {
                close(fd);
                return -ENOMEM;
        }
        p->set = s;
        p->fd = fd;
        p->identity = *identity;
        p->session = session;
        p->last_input_usec = now;
        p->read_event = event_new(s->base, fd, EV_READ | EV_PERSIST, peer_read_cb, p);
        p->write_event = event_new(s->base, fd, EV_WRITE | EV_PERSIST, peer_write_cb, p);
        p->call = call_new(&p->out, peer_call_completed, p, &p->identity, session);
        if (!p->read_event || !p->write_event || !p->call || event_add(p->read_event, NULL) < 0) {
                peer_free(p);
                return -ENOMEM;
        }
        r = uid_ref(s, identity->uid, &p->uid);
        if (r < 0) {
                peer_free(p);
                return r;
        }
        LIST_PREPEND(peers, s->peers, p);
        s->n_peers++;
        return 0;
}

void peer_set_turn_now(PeerSet *s) {
        turn_cb(-1, 0, s);
}

void peer_set_close_all(PeerSet *s, const char *why) {
        while (s->peers)
                peer_kill(s->peers, why);
}

void peer_set_sweep(PeerSet *s, uint64_t now) {
        Peer *next;

        for (Peer *p = s->peers; p; p = next) {
                next = p->peers_next;
                if (p->closing) {
                        if (now - p->last_input_usec >= PEER_CLOSING_GRACE_USEC)
                                peer_kill(p, "it did not read its last replies");
                } else if (s->limits.idle_timeout_usec > 0 && !call_is_pending(p->call) &&
                           now - p->last_input_usec >= s->limits.idle_timeout_usec &&
                           s->ops.may_close_idle(s->userdata, p->session))
                        peer_kill(p, "idle for limits.idle_timeout_sec with no allocation");
        }
}

unsigned peer_set_size(const PeerSet *s) {
        return s->n_peers;
}

unsigned peer_set_uid_connections(const PeerSet *s, uid_t uid) {
        const UidConns *u = hashmap_get(s->uids, uid);
        return u ? u->n_connections : 0;
}

void peer_set_set_limits(PeerSet *s, const PeerSetLimits *limits) {
        s->limits = *limits;
        ratelimit_configure(&s->log_closed, limits->log_interval_usec, limits->log_burst);
}

PeerSet *peer_set_new(struct event_base *base, const PeerSetLimits *limits, const PeerSetOps *ops,
                      void *userdata) {
        PeerSet *s = calloc(1, sizeof(*s));

        if (!s)
                return NULL;
        s->base = base;
        s->ops = *ops;
        s->userdata = userdata;
        peer_set_set_limits(s, limits);
        s->uids = hashmap_new();
        s->turn_event = event_new(base, -1, 0, turn_cb, s);
        s->reap_event = event_new(base, -1, 0, reap_cb, s);
        if (!s->uids || !s->turn_event || !s->reap_event)
                return peer_set_free(s);
        return s;
}

PeerSet *peer_set_free(PeerSet *s) {
        if (!s)
                return NULL;
        peer_set_close_all(s, NULL);
        if (s->reap_event)
                reap_cb(-1, 0, s);
        if (s->turn_event)
                event_free(s->turn_event);
        if (s->reap_event)
                event_free(s->reap_event);
        for (size_t i = 0; i < s->n_pool; i++)
                free(s->pool[i].data);
        varlink_buffer_clear(&s->arena);
        hashmap_free(s->uids);
        free(s);
        return NULL;
}
