/* SPDX-License-Identifier: MIT */
/*
 * The server shell: listening socket, peers, framing, per-client limits, and
 * the process scopes. Reads and writes are plain non-blocking syscalls into
 * our own buffers on libevent events (a bufferevent costs ~5 syscalls per
 * read where this costs 1; see shared/TESTING.md). Time is read once per
 * event and passed down; the ledger never reads the clock.
 *
 * What it does not do: decide anything about budgets (ledger.c), know any
 * method (dispatch.c), or parse JSON (protocol/varlink.c).
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>
#include <systemd/sd-daemon.h>

#include "dispatch.h"
#include "hashmap.h"
#include "log.h"
#include "notify.h"
#include "server.h"
#include "tb-config.h"

/* Bytes asked of read(2) at a time: one typical burst of pipelined calls. */
#define READ_CHUNK_BYTES 16384
/* Connections accepted per wakeup of the listening socket, so a flood of
 * connects cannot starve the peers already connected. */
#define ACCEPT_BATCH 64
/* How long to stop accepting after EMFILE/ENFILE. */
#define ACCEPT_RETRY_USEC 100000

static void peer_read_cb(evutil_socket_t fd, short what, void *userdata);
static void peer_write_cb(evutil_socket_t fd, short what, void *userdata);

uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * UINT64_C(1000000) + (uint64_t)ts.tv_nsec / 1000;
}

const char *priority_to_string(Priority p) {
        static const char *const names[_PRIORITY_MAX] = {
                [PRIORITY_INTERACTIVE] = "interactive",
                [PRIORITY_NORMAL] = "normal",
                [PRIORITY_BACKGROUND] = "background",
        };
        return p < _PRIORITY_MAX ? names[p] : NULL;
}

int priority_from_string(const char *s) {
        for (Priority p = 0; p < _PRIORITY_MAX; p++)
                if (strcmp(s, priority_to_string(p)) == 0)
                        return (int)p;
        return -EINVAL;
}

/* Allocation ids on the wire: the ledger's 64-bit id as 16 lower-case hex
 * digits. Opaque to clients. */
void allocation_format_id(uint64_t id, char buf[static 17]) {
        snprintf(buf, 17, "%016" PRIx64, id);
}

static int allocation_parse_id(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (strlen(s) != 16)
                return -EINVAL;
        for (size_t i = 0; i < 16; i++) {
                char c = s[i];
                unsigned d;

                if (c >= '0' && c <= '9')
                        d = (unsigned)(c - '0');
                else if (c >= 'a' && c <= 'f')
                        d = (unsigned)(c - 'a' + 10);
                else
                        return -EINVAL;
                v = v << 4 | d;
        }
        *ret = v;
        return 0;
}

AllocInfo *server_find_allocation(Server *s, const char *id) {
        LedgerAllocation *a;
        uint64_t v;

        if (allocation_parse_id(id, &v) < 0)
                return NULL;
        a = ledger_find(s->ledger, v);
        return a ? ledger_allocation_get_userdata(a) : NULL;
}

/* ---- connections and processes per uid ---- */

/* The uid's counts, created on first need; freed when nothing refers to it. */
static UidCount *uid_count_get_or_new(Server *s, uid_t uid) {
        UidCount *c = hashmap_get(s->connections_by_uid, uid);

        if (c)
                return c;
        c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->uid = uid;
        if (hashmap_put(s->connections_by_uid, uid, c) < 0) {
                free(c);
                return NULL;
        }
        return c;
}

static void uid_count_maybe_free(Server *s, UidCount *c) {
        if (c->n_connections == 0 && c->n_processes == 0)
                free(hashmap_remove(s->connections_by_uid, c->uid));
}

static int uid_count_ref(Server *s, uid_t uid, UidCount **ret) {
        UidCount *c = uid_count_get_or_new(s, uid);

        if (!c)
                return -ENOMEM;
        c->n_connections++;
        *ret = c;
        return 0;
}

static void uid_count_unref(Server *s, UidCount *c) {
        if (!c)
                return;
        assert(c->n_connections > 0);
        c->n_connections--;
        uid_count_maybe_free(s, c);
}

static unsigned uid_count_get(Server *s, uid_t uid) {
        UidCount *c = hashmap_get(s->connections_by_uid, uid);
        return c ? c->n_connections : 0;
}

/* Root and the daemon's own user: the admin interface's callers, who get
 * the limits.admin_connections slots. */
static bool uid_is_admin(const Server *s, uid_t uid) {
        return uid == 0 || uid == s->euid;
}

/* ---- process scopes ---- */

static void process_free(Server *s, ProcessEntry *e) {
        if (e->lingering) {
                if (s->lingering_tail == e)
                        s->lingering_tail = e->lingering_prev;
                LIST_REMOVE(lingering, s->lingering, e);
        }
        LIST_REMOVE(processes, s->processes, e);
        hashmap_remove(s->processes_by_pid, (uint64_t)e->pid);
        (void)ledger_scope_free(s->ledger, e->scope);
        s->n_processes--;
        e->owner->n_processes--;
        uid_count_maybe_free(s, e->owner);
        free(e);
}

/* Drops lingering entries whose windows have emptied, oldest first; stops at
 * the first that still holds usage (newer ones are unlikely to be idle). */
static void processes_sweep(Server *s, uint64_t now) {
        while (s->lingering_tail && ledger_scope_is_idle(s->lingering_tail->scope, now))
                process_free(s, s->lingering_tail);
}

static void process_unlinger(Server *s, ProcessEntry *e) {
        if (!e->lingering)
                return;
        if (s->lingering_tail == e)
                s->lingering_tail = e->lingering_prev;
        LIST_REMOVE(lingering, s->lingering, e);
        e->lingering = false;
}

/* Called when a reference goes away: an entry nobody refers to is freed when
 * it holds no usage, else kept (lingering) so a reconnect keeps its budget. */
static void process_release(Server *s, ProcessEntry *e, uint64_t now) {
        if (e->n_peers > 0 || e->n_allocations > 0)
                return;
        if (ledger_scope_is_idle(e->scope, now)) {
                process_free(s, e);
                return;
        }
        LIST_PREPEND(lingering, s->lingering, e);
        if (!s->lingering_tail)
                s->lingering_tail = e;
        e->lingering = true;
}

/* A flood of connections at the limit must not make us read /proc for every
 * tracked process each time: one search per second at most. */
#define DEAD_SCAN_INTERVAL_USEC 1000000

/* Frees unreferenced entries whose process has exited: a process budget is
 * keyed by pid and start time, so no process can ever spend from them again
 * and dropping them loses nothing (global and the other scopes keep their
 * own usage). */
static void processes_forget_exited(Server *s, uint64_t now) {
        ProcessEntry *e, *prev;

        if (s->dead_scan_usec != 0 && now - s->dead_scan_usec < DEAD_SCAN_INTERVAL_USEC)
                return;
        s->dead_scan_usec = now;
        for (e = s->lingering_tail; e; e = prev) {
                Identity id = {.pid = e->pid};

                prev = e->lingering_prev;
                if (identity_read_proc(s->proc_root, &id) < 0 || id.start_time != e->start_time)
                        process_free(s, e);
        }
}

/* Whether owner may have one more process tracked: -EUSERS when the table
 * is full, -ETOOMANYREFS when the uid has its share. Usage is never dropped
 * to make room: a process that is alive (and could reconnect) keeps its
 * budget, and new processes wait; exited ones are dropped first. A uid's
 * share keeps one user's sleeping processes from locking every other user
 * out, and admins are never refused (budgetctl must always get in). */
static int process_admit(Server *s, const UidCount *owner, uint64_t now) {
        bool full, share;

        if (uid_is_admin(s, owner->uid))
                return 0;
        full = s->n_processes >= s->config.max_tracked_processes;
        share = owner->n_processes >= s->config.max_tracked_processes_per_uid;
        if (full || share) {
                processes_forget_exited(s, now);
                full = s->n_processes >= s->config.max_tracked_processes;
                share = owner->n_processes >= s->config.max_tracked_processes_per_uid;
        }
        return full ? -EUSERS : share ? -ETOOMANYREFS : 0;
}

static int process_new(Server *s, const Identity *id, UidCount *owner, uint64_t now, ProcessEntry **ret) {
        char name[32];
        ProcessEntry *e;
        int r;

        processes_sweep(s, now);
        r = process_admit(s, owner, now);
        if (r < 0)
                return r;

        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        snprintf(name, sizeof(name), "process:%d", (int)id->pid);
        e->scope = ledger_scope_new(s->ledger, name, &s->config.process);
        if (!e->scope) {
                free(e);
                return -ENOMEM;
        }
        e->pid = id->pid;
        e->start_time = id->start_time;
        r = hashmap_put(s->processes_by_pid, (uint64_t)e->pid, e);
        if (r < 0) {
                (void)ledger_scope_free(s->ledger, e->scope);
                free(e);
                return r;
        }
        LIST_PREPEND(processes, s->processes, e);
        s->n_processes++;
        e->owner = owner;
        owner->n_processes++;
        *ret = e;
        return 0;
}

/* The entry for the peer's process, created on first sight. A pid that now
 * belongs to a different process (other start time) gets a fresh entry when
 * the old one is unreferenced; if the old one is still referenced (a socket
 * inherited across exec), the two share it. */
static int process_get(Server *s, const Identity *id, UidCount *owner, uint64_t now, ProcessEntry **ret) {
        ProcessEntry *e = hashmap_get(s->processes_by_pid, (uint64_t)id->pid);

        if (e && e->start_time != id->start_time && e->n_peers == 0 && e->n_allocations == 0) {
                process_free(s, e);
                e = NULL;
        }
        if (!e) {
                int r = process_new(s, id, owner, now, &e);
                if (r < 0)
                        return r;
        }
        process_unlinger(s, e);
        *ret = e;
        return 0;
}

/* ---- allocations ---- */

int server_settle(Server *s, AllocInfo *info, uint64_t input_tokens, uint64_t output_tokens, uint64_t now,
                  uint64_t *ret_used, uint64_t *ret_refunded) {
        Peer *p = info->owner;
        int r;

        r = ledger_settle(s->ledger, info->allocation, input_tokens, output_tokens, now, ret_used,
                          ret_refunded);
        if (r < 0)
                return r;
        LIST_REMOVE(allocs, p->allocs, info);
        p->n_allocations--;
        p->process->n_allocations--;
        free(info);
        return 0;
}

/* ---- status and events ---- */

/* Circuit breakers (a later issue) enter degraded mode here: 80% of a pool. */
#define DEGRADED_PERMILLE 800

static unsigned permille(uint64_t part, uint64_t whole) {
        if (whole == 0)
                return 0;
        return part >= whole ? 1000 : (unsigned)(part * 1000 / whole);
}

unsigned server_global_utilisation_permille(Server *s, uint64_t now) {
        const LedgerLimits *limits = ledger_scope_get_limits(s->global);
        uint64_t reserved = ledger_scope_reserved(s->global);
        unsigned worst = permille(reserved, limits->in_flight_tokens);

        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++) {
                unsigned u;
                if (limits->window_tokens[w] == 0)
                        continue;
                u = permille(ledger_scope_window_used(s->global, w, now) + reserved,
                             limits->window_tokens[w]);
                if (u > worst)
                        worst = u;
        }
        return worst;
}

static char *server_status_text(void *userdata) {
        Server *s = userdata;
        unsigned u = server_global_utilisation_permille(s, now_usec());
        char *text;

        if (asprintf(&text, "%s%sServing: %zu allocation(s) in flight, %s%u%% of the global pool used%s",
                     s->status_note ?: "", s->status_note ? "; " : "", ledger_n_allocations(s->ledger),
                     u >= DEGRADED_PERMILLE ? "DEGRADED (" : "", u / 10,
                     u >= DEGRADED_PERMILLE ? ")" : "") < 0)
                return NULL;
        return text;
}

void server_changed(Server *s) {
        notify_status_changed(s->notify);
}

void server_emit_allocation(Server *s, EventKind kind, const AllocInfo *info, uint64_t now,
                            const char *decision, const char *reason, const char *fmt, ...) {
        const Identity *id = &info->owner->identity;
        const LedgerAllocation *a = info->allocation;
        char sid[17], message[512];
        va_list ap;
        Event e = {
                .allocation = sid,
                .pid = id->pid,
                .uid = id->uid,
                .has_uid = true,
                .comm = id->comm,
                .agent = info->agent,
                .task_class = info->task_class,
                .granted = ledger_allocation_granted(a),
                .has_granted = true,
                .used = ledger_allocation_used(a),
                .has_used = true,
                .estimate = info->estimate,
                .has_estimate = true,
                .decision = decision,
                .reason = reason,
        };

        allocation_format_id(ledger_allocation_id(a), sid);
        va_start(ap, fmt);
        vsnprintf(message, sizeof(message), fmt, ap);
        va_end(ap);
        journal_emit(s->journal, kind, &e, now, "%s", message);
}

/* ---- peers ---- */

static void peer_free(Peer *p) {
        Server *s = p->server;

        if (p->read_event)
                event_free(p->read_event);
        if (p->write_event)
                event_free(p->write_event);
        if (p->fd >= 0)
                close(p->fd);
        varlink_buffer_clear(&p->in);
        varlink_buffer_clear(&p->out);
        free(p);
        (void)s;
}

/* Settles an allocation its owner did not release, at the usage it reported
 * (the unreported rest is unknown, and the reservation is what a crashed or
 * stuck agent must not keep), with the journal event that says why. */
void server_settle_unreleased(Server *s, AllocInfo *info, SettleCause cause, uint64_t now) {
        static const struct {
                EventKind kind;
                const char *reason, *what;
        } causes[] = {
                [SETTLE_ABANDONED] = {EVENT_ABANDONED,
                                      "its connection closed before it released the allocation",
                                      "abandoned: its connection closed"},
                [SETTLE_SHUTDOWN] = {EVENT_SHUTDOWN, "the daemon is stopping", "settled at shutdown"},
                [SETTLE_EXPIRED] = {EVENT_EXPIRED, "no report for limits.allocation_idle_timeout_sec",
                                    "expired: no report for limits.allocation_idle_timeout_sec"},
        };
        const Identity *id = &info->owner->identity;
        LedgerAllocation *a = info->allocation;
        char sid[17];

        allocation_format_id(ledger_allocation_id(a), sid);
        server_emit_allocation(s, causes[cause].kind, info, now, NULL, causes[cause].reason,
                               "Allocation %s of %s (pid %d) %s; settled at %" PRIu64
                               " tokens used, %" PRIu64 " refunded",
                               sid, id->comm, (int)id->pid, causes[cause].what, ledger_allocation_used(a),
                               ledger_allocation_reserved(a));
        (void)server_settle(s, info, ledger_allocation_input_tokens(a), ledger_allocation_output_tokens(a),
                            now, NULL, NULL);
        if (cause == SETTLE_EXPIRED)
                s->n_expired++;
        else if (cause == SETTLE_ABANDONED)
                s->n_abandoned++;
        server_changed(s);
}

/* Keeps the uid's total of unsent output equal to the sum over its peers. */
static void peer_count_output(Peer *p) {
        size_t pending = p->dead ? 0 : p->out.len - p->out_offset;

        if (!p->uid_count)
                return;
        p->uid_count->output_bytes = p->uid_count->output_bytes - p->output_counted + pending;
        p->output_counted = pending;
}

/* Settles what the peer left open; closes it; the memory goes on the next
 * loop turn (reap_cb), never inside its own callback. */
static void peer_kill(Peer *p, const char *why) {
        Server *s = p->server;
        uint64_t now;

        if (p->dead)
                return;
        p->dead = true;
        now = now_usec();

        while (p->allocs)
                server_settle_unreleased(s, p->allocs, s->stopping ? SETTLE_SHUTDOWN : SETTLE_ABANDONED,
                                         now);

        if (why)
                log_limited(&s->log_limits[LOG_LIMIT_CLOSED], now, LOG_LEVEL_DEBUG,
                            "closing connection of pid %d (%s): %s", (int)p->identity.pid, p->identity.comm,
                            why);

        event_del(p->read_event);
        event_del(p->write_event);
        if (p->process) {
                p->process->n_peers--;
                process_release(s, p->process, now);
                p->process = NULL;
        }
        peer_count_output(p);
        uid_count_unref(s, p->uid_count);
        p->uid_count = NULL;
        LIST_REMOVE(peers, s->peers, p);
        s->n_peers--;
        LIST_PREPEND(dead, s->dead_peers, p);
        event_active(s->reap_event, EV_READ, 0);
}

static void reap_cb(evutil_socket_t fd, short what, void *userdata) {
        Server *s = userdata;

        while (s->dead_peers) {
                Peer *p = s->dead_peers;
                LIST_REMOVE(dead, s->dead_peers, p);
                peer_free(p);
        }
}

int peer_reply(Peer *p, struct json_object *parameters) {
        int r = 0;

        if (!p->current_oneway)
                r = varlink_format_reply(&p->out, parameters, false);
        json_object_put(parameters);
        return r;
}

/* Decimal digits of v, written backwards from end; returns the start. */
static char *format_u64(char *end, uint64_t v) {
        do {
                *--end = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        return end;
}

int peer_reply_fields(Peer *p, const ReplyField *fields, size_t n_fields) {
        static const char head[] = "{\"parameters\":{", tail[] = "}}";
        VarlinkBuffer *b = &p->out;
        size_t need = sizeof(head) + sizeof(tail);
        char *q;
        int r;

        if (p->current_oneway)
                return 0;
        for (size_t i = 0; i < n_fields; i++)
                need += strlen(fields[i].key) + 6 + (fields[i].string ? strlen(fields[i].string) : 20);
        r = varlink_buffer_reserve(b, need);
        if (r < 0)
                return r;

        q = mempcpy(b->data + b->len, head, sizeof(head) - 1);
        for (size_t i = 0; i < n_fields; i++) {
                char digits[20], *d;

                if (i > 0)
                        *q++ = ',';
                *q++ = '"';
                q = stpcpy(q, fields[i].key);
                *q++ = '"';
                *q++ = ':';
                if (fields[i].string) {
                        *q++ = '"';
                        q = stpcpy(q, fields[i].string);
                        *q++ = '"';
                } else {
                        d = format_u64(digits + sizeof(digits), fields[i].number);
                        q = mempcpy(q, d, (size_t)(digits + sizeof(digits) - d));
                }
        }
        q = mempcpy(q, tail, sizeof(tail)); /* with the NUL that ends the message */
        b->len = (size_t)(q - b->data);
        return 0;
}

int peer_error(Peer *p, const char *error, struct json_object *parameters) {
        int r = 0;

        if (!p->current_oneway)
                r = varlink_format_error(&p->out, error, parameters);
        json_object_put(parameters);
        return r;
}

int peer_invalid_parameter(Peer *p, const char *parameter) {
        if (p->current_oneway)
                return 0;
        return varlink_format_invalid_parameter(&p->out, parameter);
}

/* Buffers are lent: a peer with nothing pending reads into and replies from
 * the server's scratch buffers, and keeps one only while a partial message
 * or unsent output remains. So an idle connection holds no buffer and the hot
 * path allocates none. */
#define SCRATCH_MAX_BYTES (64 * 1024)

static void buffer_borrow(VarlinkBuffer *b, VarlinkBuffer *scratch) {
        if (b->data || !scratch->data)
                return;
        *b = *scratch;
        b->len = 0;
        *scratch = (VarlinkBuffer){};
}

static void buffer_give_back(VarlinkBuffer *b, VarlinkBuffer *scratch) {
        if (b->len > 0)
                return;
        if (!scratch->data && b->cap <= SCRATCH_MAX_BYTES)
                *scratch = *b;
        else
                free(b->data);
        *b = (VarlinkBuffer){};
}

/* Writes what is queued. Returns 0 when all of it went out or the rest waits
 * for EV_WRITE, -errno when the peer is gone. */
static int peer_flush(Peer *p) {
        int r = 0;

        while (p->out_offset < p->out.len) {
                ssize_t n = send(p->fd, p->out.data + p->out_offset, p->out.len - p->out_offset,
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
        p->out.len = 0;
        p->out_offset = 0;
        buffer_give_back(&p->out, &p->server->scratch_out);
        event_del(p->write_event);
        peer_count_output(p);
        return 0;
}

static size_t peer_pending_output(const Peer *p) {
        return p->out.len - p->out_offset;
}

/* A peer is closed only after the replies to what it sent before are out:
 * the calls that came in the same read as a protocol violation (or before
 * EOF) took effect, so their answers must arrive. It reads no more; the
 * sweep closes it if it does not read them either. */
static void peer_close_after_flush(Peer *p, const char *why) {
        int r;

        if (p->dead)
                return;
        p->closing = true;
        event_del(p->read_event);
        r = peer_flush(p);
        if (r < 0 || peer_pending_output(p) == 0)
                peer_kill(p, why);
        else
                log_limited(&p->server->log_limits[LOG_LIMIT_CLOSED], now_usec(), LOG_LEVEL_DEBUG,
                            "closing connection of pid %d (%s) once its replies are out: %s",
                            (int)p->identity.pid, p->identity.comm, why);
}

/* Output a uid's peers have queued and not sent, with p's newest replies. */
static size_t uid_pending_output(const Peer *p) {
        if (!p->uid_count)
                return 0;
        return p->uid_count->output_bytes - p->output_counted + peer_pending_output(p);
}

/* Handles every whole message in the input buffer, in order. Returns 0, or
 * -errno with *ret_why set when the peer must be closed. */
static int peer_process_input(Peer *p, uint64_t now, const char **ret_why) {
        Server *s = p->server;
        size_t offset = 0;
        int r = 0;

        while (!p->dead) {
                VarlinkFlatCall flat;
                VarlinkCall call;
                size_t frame_len;

                /* Skip what earlier reads already scanned without finding a
                 * NUL, so a message trickling in byte by byte costs O(n), not
                 * O(n^2). */
                if (p->in_scanned > s->config.max_message_bytes) { /* the limit shrank on reload */
                        r = -EMSGSIZE;
                        *ret_why = "message exceeds limits.max_message_bytes";
                        break;
                }
                r = varlink_frame_next(p->in.data + offset + p->in_scanned,
                                       p->in.len - offset - p->in_scanned,
                                       s->config.max_message_bytes - p->in_scanned, &frame_len);
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
                if (peer_pending_output(p) > s->config.max_output_bytes) {
                        r = -ENOBUFS;
                        *ret_why = "queued output exceeds limits.max_output_bytes";
                        break;
                }
                if (uid_pending_output(p) > s->config.max_output_bytes_per_uid) {
                        r = -ENOBUFS;
                        *ret_why = "queued output of its uid exceeds limits.max_output_bytes_per_uid";
                        break;
                }
                /* Most calls are flat (scalar parameters, no escapes): parsed in
                 * place without json-c; anything else takes the strict path. */
                if (varlink_call_parse_flat(p->in.data + offset, frame_len, &flat) == 1) {
                        offset += frame_len + 1;
                        p->current_oneway = flat.oneway;
                        r = dispatch_flat_call(s, p, &flat, now);
                        p->current_oneway = false;
                        if (r < 0) {
                                *ret_why = "out of memory";
                                break;
                        }
                        continue;
                }
                r = varlink_call_parse_with(s->tokener, p->in.data + offset, frame_len, &call, ret_why);
                offset += frame_len + 1;
                if (r < 0)
                        break;
                p->current_oneway = call.oneway;
                r = dispatch_call(s, p, &call, now);
                p->current_oneway = false;
                varlink_call_done(&call);
                if (r < 0) {
                        *ret_why = "out of memory";
                        break;
                }
        }
        varlink_buffer_consume(&p->in, offset);
        buffer_give_back(&p->in, &s->scratch_in);
        return r < 0 ? r : 0;
}

static void peer_read_cb(evutil_socket_t fd, short what, void *userdata) {
        Peer *p = userdata;
        const char *why = NULL;
        ssize_t n;
        int r;

        buffer_borrow(&p->in, &p->server->scratch_in);
        buffer_borrow(&p->out, &p->server->scratch_out);
        r = varlink_buffer_reserve(&p->in, READ_CHUNK_BYTES);
        if (r < 0)
                return peer_kill(p, "out of memory");
        n = recv(fd, p->in.data + p->in.len, READ_CHUNK_BYTES, MSG_DONTWAIT);
        if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                        buffer_give_back(&p->in, &p->server->scratch_in);
                        buffer_give_back(&p->out, &p->server->scratch_out);
                        return;
                }
                return peer_kill(p, strerror(errno));
        }
        if (n == 0) {
                /* A half-closed peer may still read the replies to what it sent. */
                buffer_give_back(&p->in, &p->server->scratch_in);
                return peer_close_after_flush(p, "end of file");
        }
        p->in.len += (size_t)n;
        p->last_input_usec = now_usec();

        r = peer_process_input(p, p->last_input_usec, &why);
        if (r < 0)
                return peer_close_after_flush(p, why);
        if (p->dead)
                return;
        /* limits.max_output_bytes is enforced before each new message (in
         * peer_process_input()), not here: one large admin reply (Status with
         * thousands of processes) may exceed it and is still delivered to a
         * peer that reads. */
        r = peer_flush(p);
        if (r < 0)
                return peer_kill(p, strerror(-r));
}

static void peer_write_cb(evutil_socket_t fd, short what, void *userdata) {
        Peer *p = userdata;
        int r = peer_flush(p);

        if (r < 0)
                peer_kill(p, strerror(-r));
        else if (p->closing && peer_pending_output(p) == 0)
                peer_kill(p, "replies sent before closing");
}

static int peer_new(Server *s, int fd, Peer **ret) {
        Peer *p = calloc(1, sizeof(*p));

        if (!p)
                return -ENOMEM;
        p->server = s;
        p->fd = fd;
        p->read_event = event_new(s->base, fd, EV_READ | EV_PERSIST, peer_read_cb, p);
        p->write_event = event_new(s->base, fd, EV_WRITE | EV_PERSIST, peer_write_cb, p);
        if (!p->read_event || !p->write_event) {
                p->fd = -1;
                peer_free(p);
                return -ENOMEM;
        }
        *ret = p;
        return 0;
}

static void sweep_schedule(Server *s);

/* Over a limit, a connection is accepted and closed at once: the client sees
 * EOF instead of hanging in the listen backlog. The last
 * limits.admin_connections slots are for admins only, so no number of other
 * users' connections can lock budgetctl out. */
static const char *accept_refusal(Server *s, const Identity *id) {
        if (s->n_peers >= s->config.max_connections)
                return "limits.max_connections reached";
        if (!uid_is_admin(s, id->uid) &&
            s->n_peers >= s->config.max_connections - s->config.admin_connections)
                return "limits.max_connections reached (the rest is limits.admin_connections, for admins)";
        if (uid_count_get(s, id->uid) >= s->config.max_connections_per_uid)
                return "limits.max_connections_per_uid reached";
        return NULL;
}

static void accept_one(Server *s, int fd) {
        uint64_t now = now_usec();
        Identity id;
        const char *limit;
        Peer *p;
        int r;

        r = identity_from_socket(fd, &id);
        if (r < 0) {
                log_limited(&s->log_limits[LOG_LIMIT_CREDENTIALS], now, LOG_LEVEL_WARNING,
                            "cannot read credentials of a new connection: %s", strerror(-r));
                close(fd);
                return;
        }
        limit = accept_refusal(s, &id);
        if (limit) {
                log_limited(&s->log_limits[LOG_LIMIT_REFUSED_CONNECTION], now, LOG_LEVEL_WARNING,
                            "refusing connection of pid %d uid %u: %s", (int)id.pid, (unsigned)id.uid,
                            limit);
                close(fd);
                return;
        }
        (void)identity_read_proc(s->proc_root, &id);

        r = peer_new(s, fd, &p);
        if (r < 0) {
                close(fd);
                return;
        }
        p->identity = id;
        p->last_input_usec = now;
        r = uid_count_ref(s, id.uid, &p->uid_count);
        if (r < 0) {
                peer_free(p);
                return;
        }
        r = process_get(s, &id, p->uid_count, now, &p->process);
        if (r < 0) {
                log_limited(&s->log_limits[LOG_LIMIT_REFUSED_CONNECTION], now, LOG_LEVEL_WARNING,
                            "refusing connection of pid %d uid %u: %s", (int)id.pid, (unsigned)id.uid,
                            r == -EUSERS         ? "limits.max_tracked_processes reached: every tracked "
                                                   "process is alive and holds usage"
                            : r == -ETOOMANYREFS ? "limits.max_tracked_processes_per_uid reached: every "
                                                   "process of this uid is alive and holds usage"
                                                 : strerror(-r));
                uid_count_unref(s, p->uid_count);
                peer_free(p);
                return;
        }
        p->process->n_peers++;
        LIST_PREPEND(peers, s->peers, p);
        s->n_peers++;
        event_add(p->read_event, NULL);
        sweep_schedule(s);
        log_debug("connection from pid %d (%s) uid %u", (int)id.pid, id.comm, (unsigned)id.uid);
}

/* ---- the sweep: idle connections and expired allocations ---- */

/* A closing peer that does not read its last replies within this long is cut off. */
#define CLOSING_GRACE_USEC (5 * UINT64_C(1000000))
/* The sweep runs at a quarter of the shortest timeout, so a timeout is
 * enforced at most 25% late, but never more often than 10 times a second nor
 * less often than every 30 s. It runs only while clients are connected: an
 * idle daemon has no timer at all. */
#define SWEEP_MIN_USEC UINT64_C(100000)
#define SWEEP_MAX_USEC (30 * UINT64_C(1000000))

static uint64_t sweep_interval_usec(const Server *s) {
        uint64_t t = s->config.allocation_idle_timeout_usec;

        if (s->config.idle_timeout_usec > 0 && s->config.idle_timeout_usec < t)
                t = s->config.idle_timeout_usec;
        if (CLOSING_GRACE_USEC < t)
                t = CLOSING_GRACE_USEC;
        t /= 4;
        return t < SWEEP_MIN_USEC ? SWEEP_MIN_USEC : t > SWEEP_MAX_USEC ? SWEEP_MAX_USEC : t;
}

static void sweep_schedule(Server *s) {
        uint64_t usec = sweep_interval_usec(s);
        struct timeval tv = {.tv_sec = (time_t)(usec / 1000000), .tv_usec = (suseconds_t)(usec % 1000000)};

        if (s->n_peers > 0 && !s->stopping && !evtimer_pending(s->sweep_event, NULL))
                evtimer_add(s->sweep_event, &tv);
}

static void sweep_peers(Server *s, uint64_t now) {
        Peer *next;

        for (Peer *p = s->peers; p; p = next) {
                next = p->peers_next;
                if (p->closing) {
                        if (now - p->last_input_usec >= CLOSING_GRACE_USEC)
                                peer_kill(p, "it did not read its last replies");
                } else if (p->n_allocations == 0 && s->config.idle_timeout_usec > 0 &&
                           now - p->last_input_usec >= s->config.idle_timeout_usec)
                        peer_kill(p, "idle for limits.idle_timeout_sec with no allocation");
        }
}

/* Allocations with no report for limits.allocation_idle_timeout_sec are
 * settled at what they reported: a stuck agent must not hold its
 * reservation, and so other agents' budget, forever. */
static void sweep_allocations(Server *s, uint64_t now) {
        LedgerAllocation *next;

        for (LedgerAllocation *a = ledger_next(s->ledger, NULL); a; a = next) {
                AllocInfo *info = ledger_allocation_get_userdata(a);

                next = ledger_next(s->ledger, a);
                if (now - info->last_report_usec >= s->config.allocation_idle_timeout_usec)
                        server_settle_unreleased(s, info, SETTLE_EXPIRED, now);
        }
}

static void sweep_cb(evutil_socket_t fd, short what, void *userdata) {
        Server *s = userdata;
        uint64_t now = now_usec();

        sweep_allocations(s, now);
        sweep_peers(s, now);
        sweep_schedule(s);
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *userdata) {
        Server *s = userdata;

        event_add(s->listen_event, NULL);
}

static void listen_cb(evutil_socket_t listen_fd, short what, void *userdata) {
        Server *s = userdata;

        for (int i = 0; i < ACCEPT_BATCH; i++) {
                int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0) {
                        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                                struct timeval tv = {0, ACCEPT_RETRY_USEC};
                                log_limited(&s->log_limits[LOG_LIMIT_ACCEPT_FAILED], now_usec(),
                                            LOG_LEVEL_WARNING, "cannot accept connections: %s; pausing",
                                            strerror(errno));
                                event_del(s->listen_event);
                                event_add(s->accept_retry_event, &tv);
                        }
                        return;
                }
                accept_one(s, fd);
        }
}

/* ---- signals, reload, shutdown ---- */

static void server_shutdown(Server *s) {
        uint64_t now = now_usec();
        unsigned n = ledger_n_allocations(s->ledger);
        Event e = {.has_used = true, .used = ledger_scope_committed_total(s->global)};

        s->stopping = true;
        notify_stopping(s->notify);
        if (s->listen_event)
                event_del(s->listen_event);
        if (s->sweep_event)
                event_del(s->sweep_event);
        journal_emit(s->journal, EVENT_STOPPING, &e, now,
                     "tokenbudgetd stopping after %" PRIu64 " s: settling %u open allocation(s); %" PRIu64
                     " granted, %" PRIu64 " refused, %" PRIu64 " abandoned, %" PRIu64 " tokens used",
                     (now - s->start_usec) / 1000000, n, s->n_granted, s->n_refused, s->n_abandoned, e.used);
        while (s->peers)
                peer_kill(s->peers, "daemon stopping");
        event_base_loopexit(s->base, NULL);
}

static int read_file(const char *path, size_t max_bytes, char **ret, size_t *ret_size) {
        FILE *f = fopen(path, "re");
        char *buf;
        size_t n;

        if (!f)
                return -errno;
        buf = malloc(max_bytes + 1);
        if (!buf) {
                fclose(f);
                return -ENOMEM;
        }
        n = fread(buf, 1, max_bytes + 1, f);
        if (ferror(f)) {
                free(buf);
                fclose(f);
                return -EIO;
        }
        fclose(f);
        if (n > max_bytes) {
                free(buf);
                return -EFBIG;
        }
        buf[n] = 0;
        *ret = buf;
        *ret_size = n;
        return 0;
}

int config_load_file(const char *path, Config *ret, char **ret_errors) {
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        int r;

        /* A configuration file over 1 MiB is a mistake, not a configuration. */
        r = read_file(path, 1024 * 1024, &text, &size);
        if (r < 0) {
                if (asprintf(ret_errors, "%s: cannot read: %s\n", path, strerror(-r)) < 0)
                        *ret_errors = NULL;
                return r;
        }
        return config_parse_buffer(text, size, path, ret, ret_errors);
}

static JournalSettings journal_settings(const Config *c) {
        return (JournalSettings){
                .log_granted = c->journal_log_granted,
                .rate_limit_interval_usec = c->journal_rate_limit_interval_usec,
                .rate_limit_burst = c->journal_rate_limit_burst,
        };
}

/* Log lines a client can cause are limited like the journal's events. */
static void log_limits_configure(Server *s) {
        for (size_t i = 0; i < ELEMENTSOF(s->log_limits); i++)
                ratelimit_configure(&s->log_limits[i], s->config.journal_rate_limit_interval_usec,
                                    s->config.journal_rate_limit_burst);
}

static void server_apply_config(Server *s) {
        LedgerParams params = {
                .warn_permille = s->config.warn_permille,
                .hard_permille = s->config.hard_permille,
        };

        ledger_set_params(s->ledger, &params);
        ledger_scope_set_limits(s->global, &s->config.global);
        for (ProcessEntry *e = s->processes; e; e = e->processes_next)
                ledger_scope_set_limits(e->scope, &s->config.process);
        log_set_level(s->config.log_level);
        JournalSettings js = journal_settings(&s->config);
        journal_set_settings(s->journal, &js);
        log_limits_configure(s);
        /* The timeouts may have changed: the next sweep comes at the new interval. */
        event_del(s->sweep_event);
        sweep_schedule(s);
}

int server_check_fd_limit(const Config *c, unsigned fd_limit, const char *path, char **ret_error) {
        if (c->max_connections + SERVER_RESERVED_FDS <= fd_limit)
                return 0;
        if (asprintf(ret_error,
                     "%s: limits.max_connections (%" PRIu64 ") does not fit the file descriptor limit (%u, "
                     "RLIMIT_NOFILE; LimitNOFILE= in the unit) with the %u the daemon keeps for itself: set "
                     "it to at most %u, or raise the limit\n",
                     path ?: "built-in defaults", c->max_connections, fd_limit, SERVER_RESERVED_FDS,
                     fd_limit > SERVER_RESERVED_FDS ? fd_limit - SERVER_RESERVED_FDS : 0) < 0)
                *ret_error = NULL;
        return -EMFILE;
}

/* Errors come one per line; the journal gets them all in the reason field,
 * STATUS= and the MESSAGE the first (STATUS= is one line). */
static void server_reload_rejected(Server *s, char *errors, uint64_t now) {
        Event e = {.reason = errors ? errors : "unreadable"};
        char *first = errors ? strndup(errors, strcspn(errors, "\n")) : NULL;

        free(s->status_note);
        if (asprintf(&s->status_note, "Configuration %s rejected, keeping the old one: %s", s->config_path,
                     first ?: "") < 0)
                s->status_note = NULL;
        journal_emit(s->journal, EVENT_CONFIG_REJECTED, &e, now,
                     "Configuration %s rejected, keeping the old one: %s", s->config_path, first ?: "");
        free(first);
}

static void server_reload(Server *s) {
        _cleanup_free_ char *errors = NULL;
        uint64_t now = now_usec();
        Config c;
        int r;

        notify_reloading(s->notify, now);
        if (!s->config_path) {
                log_info("reload requested; running on built-in defaults, nothing to re-read");
                notify_ready(s->notify);
                return;
        }
        /* The default file is optional: created after start it is read now;
         * removed, the built-in defaults apply, as they would at a start. */
        if (s->config_optional && access(s->config_path, F_OK) < 0 && errno == ENOENT) {
                r = config_init_defaults(&c);
                if (r >= 0)
                        log_info("reload requested; %s does not exist, using the built-in defaults",
                                 s->config_path);
        } else
                r = config_load_file(s->config_path, &c, &errors);
        if (r >= 0) {
                r = server_check_fd_limit(&c, s->fd_limit, s->config_path, &errors);
                if (r < 0)
                        config_done(&c);
        }
        if (r < 0) {
                server_reload_rejected(s, errors, now);
                notify_ready(s->notify);
                return;
        }
        /* The socket we listen on (s->socket_path) stays. */
        if (strcmp(c.socket_path, s->config.socket_path) != 0)
                log_warning("socket changed in %s; the new path takes effect at restart", s->config_path);
        config_done(&s->config);
        s->config = c;
        server_apply_config(s);
        s->status_note = mfree(s->status_note);
        journal_emit(s->journal, EVENT_CONFIG_RELOADED, &(Event){}, now, "Configuration %s reloaded",
                     s->config_path);
        notify_ready(s->notify);
}

static void signal_cb(evutil_socket_t sig, short what, void *userdata) {
        Server *s = userdata;

        if (sig == SIGHUP)
                server_reload(s);
        else
                server_shutdown(s);
}

/* ---- setup ---- */

/* Allocation ids must be unguessable (a peer that could guess another's id
 * could probe it) and differ across restarts: the ledger permutes a counter
 * with a key from the kernel's random source, new at every start. */
static int ledger_key_from_kernel(Ledger *l) {
        uint8_t key[16];
        ssize_t n = getrandom(key, sizeof(key), 0);

        if (n != (ssize_t)sizeof(key))
                return log_error("cannot read a random key for allocation ids: %s",
                                 n < 0 ? strerror(errno) : "short read"),
                       n < 0 ? -errno : -EIO;
        ledger_set_id_key(l, key);
        return 0;
}

int server_new(struct event_base *base, Config *config, const char *config_path, bool config_optional,
               Server **ret) {
        static const int signals[] = {SIGTERM, SIGINT, SIGHUP};
        LedgerParams params = {
                .warn_permille = config->warn_permille,
                .hard_permille = config->hard_permille,
        };
        Server *s = calloc(1, sizeof(*s));
        int r;

        if (!s)
                return -ENOMEM;
        s->base = base;
        s->config_optional = config_optional;
        s->config = *config; /* takes ownership */
        *config = (Config){};
        s->listen_fd = -1;
        s->proc_root = "/proc";
        s->euid = geteuid();
        s->start_usec = now_usec();
        s->exit_code = 0;
        if (config_path && !(s->config_path = strdup(config_path)))
                goto oom;
        s->ledger = ledger_new(&params);
        if (!s->ledger)
                goto oom;
        s->global = ledger_scope_new(s->ledger, "global", &s->config.global);
        s->processes_by_pid = hashmap_new();
        s->connections_by_uid = hashmap_new();
        s->reap_event = event_new(base, -1, 0, reap_cb, s);
        s->accept_retry_event = evtimer_new(base, accept_retry_cb, s);
        s->sweep_event = evtimer_new(base, sweep_cb, s);
        if (!s->global || !s->processes_by_pid || !s->connections_by_uid || !s->reap_event ||
            !s->accept_retry_event || !s->sweep_event)
                goto oom;
        r = ledger_key_from_kernel(s->ledger);
        if (r < 0) {
                server_free(s);
                return r;
        }
        log_limits_configure(s);
        for (size_t i = 0; i < ELEMENTSOF(signals); i++) {
                s->signal_events[i] = evsignal_new(base, signals[i], signal_cb, s);
                if (!s->signal_events[i] || event_add(s->signal_events[i], NULL) < 0)
                        goto oom;
        }
        log_set_level(s->config.log_level);
        JournalSettings js = journal_settings(&s->config);
        s->journal = journal_new(base, &js);
        s->notify = notify_new(base, server_status_text, s);
        s->tokener = varlink_tokener_new();
        if (!s->journal || !s->notify || !s->tokener)
                goto oom;
        *ret = s;
        return 0;
oom:
        server_free(s);
        return -ENOMEM;
}

Server *server_free(Server *s) {
        if (!s)
                return NULL;
        while (s->peers)
                peer_kill(s->peers, NULL);
        if (s->reap_event)
                reap_cb(-1, 0, s);
        while (s->processes)
                process_free(s, s->processes);
        for (size_t i = 0; i < ELEMENTSOF(s->signal_events); i++)
                if (s->signal_events[i])
                        event_free(s->signal_events[i]);
        if (s->listen_event)
                event_free(s->listen_event);
        if (s->accept_retry_event)
                event_free(s->accept_retry_event);
        if (s->sweep_event)
                event_free(s->sweep_event);
        if (s->reap_event)
                event_free(s->reap_event);
        if (s->listen_fd >= 0)
                close(s->listen_fd);
        if (s->owns_socket_file && s->socket_path)
                (void)unlink(s->socket_path);
        s->notify = notify_free(s->notify);
        s->journal = journal_free(s->journal);
        free(s->status_note);
        if (s->tokener)
                json_tokener_free(s->tokener);
        varlink_buffer_clear(&s->scratch_in);
        varlink_buffer_clear(&s->scratch_out);
        hashmap_free(s->processes_by_pid);
        hashmap_free(s->connections_by_uid);
        ledger_free(s->ledger);
        config_done(&s->config);
        free(s->config_path);
        free(s->socket_path);
        free(s);
        return NULL;
}

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

int server_listen(Server *s, const char *socket_path) {
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
                s->owns_socket_file = true;
                log_info("tokenbudgetd " TB_VERSION " listening on %s", socket_path);
        } else
                log_info("tokenbudgetd " TB_VERSION " serving the socket passed by systemd");

        s->listen_fd = fd;
        s->socket_path = strdup(socket_path);
        s->listen_event = event_new(s->base, fd, EV_READ | EV_PERSIST, listen_cb, s);
        if (!s->socket_path || !s->listen_event || event_add(s->listen_event, NULL) < 0)
                return -ENOMEM;
        return 0;
}

/* What the configuration came from, for messages. */
static const char *server_config_source(const Server *s) {
        if (!s->config_path || (s->config_optional && access(s->config_path, F_OK) < 0))
                return "built-in defaults";
        return s->config_path;
}

static void server_emit_started(Server *s) {
        const LedgerLimits *g = &s->config.global;

        journal_emit(s->journal, EVENT_STARTED, &(Event){}, now_usec(),
                     "tokenbudgetd " TB_VERSION " started on %s with %s; global limits per minute %" PRIu64
                     ", hour %" PRIu64 ", day %" PRIu64 ", in flight %" PRIu64 " (0: none)",
                     s->socket_path, server_config_source(s), g->window_tokens[LEDGER_WINDOW_MINUTE],
                     g->window_tokens[LEDGER_WINDOW_HOUR], g->window_tokens[LEDGER_WINDOW_DAY],
                     g->in_flight_tokens);
}

int server_run(Server *s) {
        server_emit_started(s);
        notify_ready(s->notify);
        if (event_base_dispatch(s->base) < 0)
                return -EIO;
        return s->exit_code;
}
