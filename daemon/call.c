/* SPDX-License-Identifier: MIT */
/*
 * Calls (see call.h). A peer keeps one Call and reuses it for each message;
 * only a deferred call makes it allocate a new one for the next message.
 * The call writes into the peer's output buffer through a pointer and tells
 * the peer about a late answer through a callback, so it calls no peer code.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "call.h"

struct Call {
        unsigned n_ref;
        VarlinkBuffer *out; /* NULL once cancelled or detached */
        CallCompletedFunc completed;
        void *owner;
        Identity identity;
        void *session;
        CallCancelFunc cancel;
        void *cancel_userdata;
        bool oneway;
        bool answered;
        bool deferred;
};

Call *call_new(VarlinkBuffer *out, CallCompletedFunc completed, void *owner, const Identity *identity,
               void *session) {
        Call *c = calloc(1, sizeof(*c));

        if (!c)
                return NULL;
        c->n_ref = 1;
        c->out = out;
        c->completed = completed;
        c->owner = owner;
        c->identity = *identity;
        c->session = session;
        return c;
}

void call_begin(Call *c, bool oneway) {
        assert(call_is_reusable(c));
        c->oneway = oneway;
        c->answered = false;
        c->deferred = false;
        c->cancel = NULL;
        c->cancel_userdata = NULL;
}

bool call_is_pending(const Call *c) {
        return c->deferred && !c->answered && c->out;
}

bool call_is_reusable(const Call *c) {
        return c->n_ref == 1 && !c->deferred;
}

bool call_is_answered(const Call *c) {
        return c->answered || c->oneway;
}

void call_cancel(Call *c) {
        CallCancelFunc cancel = c->cancel;
        bool pending = call_is_pending(c);

        c->out = NULL;
        c->completed = NULL;
        c->owner = NULL;
        c->cancel = NULL;
        if (pending && cancel)
                cancel(c, c->cancel_userdata);
}

Call *call_ref(Call *c) {
        c->n_ref++;
        return c;
}

Call *call_unref(Call *c) {
        if (!c)
                return NULL;
        assert(c->n_ref > 0);
        if (--c->n_ref == 0)
                free(c);
        return NULL;
}

bool call_is_oneway(const Call *c) {
        return c->oneway;
}

const Identity *call_identity(const Call *c) {
        return &c->identity;
}

void *call_session(const Call *c) {
        return c->session;
}

/* After an answer of a deferred call: the peer may dispatch its next message. */
static int answered(Call *c, int r) {
        bool was_deferred = c->deferred;

        c->answered = true;
        if (was_deferred) {
                c->deferred = false;
                if (c->completed)
                        c->completed(c->owner);
        }
        return r;
}

/* Whether an answer is to be written at all. */
static bool writes(const Call *c) {
        return !c->oneway && !c->answered && c->out;
}

int call_reply(Call *c, struct json_object *parameters) {
        int r = 0;

        if (writes(c))
                r = varlink_format_reply(c->out, parameters, false);
        json_object_put(parameters);
        return answered(c, r);
}

int call_error(Call *c, const char *error, struct json_object *parameters) {
        int r = 0;

        if (writes(c))
                r = varlink_format_error(c->out, error, parameters);
        json_object_put(parameters);
        return answered(c, r);
}

int call_invalid_parameter(Call *c, const char *parameter) {
        int r = 0;

        if (writes(c))
                r = varlink_format_invalid_parameter(c->out, parameter);
        return answered(c, r);
}

/* Decimal digits of v, written backwards from end; returns the start. */
static char *format_u64(char *end, uint64_t v) {
        do {
                *--end = (char)('0' + v % 10);
                v /= 10;
        } while (v);
        return end;
}

static int reply_fields_write(VarlinkBuffer *b, const ReplyField *fields, size_t n_fields) {
        static const char head[] = "{\"parameters\":{", tail[] = "}}";
        size_t need = sizeof(head) + sizeof(tail);
        char *q;
        int r;

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
                if (fields[i].raw)
                        q = stpcpy(q, fields[i].string);
                else if (fields[i].string) {
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

int call_reply_fields(Call *c, const ReplyField *fields, size_t n_fields) {
        int r = 0;

        if (writes(c))
                r = reply_fields_write(c->out, fields, n_fields);
        return answered(c, r);
}

Call *call_defer(Call *c, CallCancelFunc cancel, void *userdata) {
        if (c->answered)
                return NULL;
        if (c->oneway) {
                /* Nothing to keep in order: the peer goes on, and the answer is dropped. */
                c->answered = true;
                return call_ref(c);
        }
        c->deferred = true;
        c->cancel = cancel;
        c->cancel_userdata = userdata;
        return call_ref(c);
}
