/* SPDX-License-Identifier: MIT */
/*
 * One call from a peer, answered now or later. A handler answers with
 * call_reply(), call_reply_fields(), call_error() or
 * call_invalid_parameter() before it returns, or keeps the call with
 * call_defer() and answers it later (from a timer, a release, an admin's
 * decision). While a call of a peer is deferred, the peer's next message is
 * not dispatched, so replies stay in order (as sd-varlink does). When the peer
 * disconnects first, the cancel callback runs, exactly once, and a later
 * answer is dropped.
 *
 * A oneway call has no reply: answering it writes nothing, and deferring it
 * does not hold up the peer's next message (nothing to keep in order); its
 * reference is detached from the peer at once and never cancelled.
 *
 * Replies are appended to the peer's output; the peer writes them only after
 * the loop iteration's commit hook ran (peer.h). What a handler reads from
 * the call (parameters, identity) is valid only while it runs; a deferred
 * call keeps its identity and session.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "identity.h"
#include "varlink.h"

struct json_object;

typedef struct Call Call;

typedef void (*CallCancelFunc)(Call *call, void *userdata);
/* Tells the owner (the peer) that a deferred call was answered. */
typedef void (*CallCompletedFunc)(void *owner);

/* ---- for the peer that owns the call ---- */

/* out: where replies go (the peer's output buffer). */
Call *call_new(VarlinkBuffer *out, CallCompletedFunc completed, void *owner, const Identity *identity,
               void *session);
/* Prepares the call for the next message. */
void call_begin(Call *c, bool oneway);
/* Whether the handler kept the call to answer later and has not answered yet. */
bool call_is_pending(const Call *c);
/* Whether nothing but the owner holds it: it may be reused for the next message. */
bool call_is_reusable(const Call *c);
/* The peer is gone: the cancel callback of a pending call runs (once), and
 * later answers are dropped. */
void call_cancel(Call *c);
/* Whether the call was answered (or was oneway) since call_begin(). */
bool call_is_answered(const Call *c);

Call *call_ref(Call *c);
/* NULL-safe; returns NULL. */
Call *call_unref(Call *c);

/* ---- for handlers ---- */

bool call_is_oneway(const Call *c);
const Identity *call_identity(const Call *c);
/* What the owner attached to the connection (the daemon's Client). */
void *call_session(const Call *c);

/*
 * Answers. parameters is consumed (json_object_put) and may be NULL. Each
 * returns 0 (also when nothing was written: oneway, cancelled) or -ENOMEM,
 * after which the call counts as answered and the peer is dropped.
 */
int call_reply(Call *c, struct json_object *parameters);
int call_error(Call *c, const char *error, struct json_object *parameters);
int call_invalid_parameter(Call *c, const char *parameter);

/* A reply written straight into the output, for the hot methods: keys and
 * string values are trusted (fixed words, hex ids: nothing to escape);
 * string NULL means the number is written; raw writes string unquoted (a
 * JSON literal the caller formatted, such as a float). */
typedef struct ReplyField {
        const char *key;
        const char *string;
        uint64_t number;
        bool raw;
} ReplyField;
int call_reply_fields(Call *c, const ReplyField *fields, size_t n_fields);

/*
 * Keeps the call to answer later: returns a new reference (drop it with
 * call_unref() after answering, or in cancel). cancel (may be NULL) runs
 * when the peer disconnects before the answer. Returns NULL only for a call
 * already answered.
 */
Call *call_defer(Call *c, CallCancelFunc cancel, void *userdata);
