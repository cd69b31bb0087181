/* SPDX-License-Identifier: MIT */
/*
 * io.tokenbudget.admin.History: the durable history (daemon/store.h) added
 * up per user, unit, agent, class, model, hour or day, for everyone
 * (non-admins: their own uid's rows only, as in Status and List). It checks
 * the query, asks store_history_query() and turns the groups into a reply of
 * at most HISTORY_GROUPS_MAX of them. It parses no times (the client sends
 * realtime microseconds and its zone's offset) and reads no clock; a daemon
 * without a database (memory only) answers HistoryUnavailable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-util.h"
#include "macro.h"
#include "method.h"
#include "store.h"
#include "varlink-names.h"

/* The most groups one reply holds: hour grouping over the default 90 days
 * of history.retention_days is 2160, so this leaves room for longer
 * retention; a group is about 150 bytes of JSON, so the reply stays near
 * 1.5 MB (a single reply may pass limits.max_output_bytes, see peer.c). */
#define HISTORY_GROUPS_MAX 10000
/* utcOffsetSec is taken modulo a day: 0..86399. */
#define HISTORY_UTC_OFFSET_MAX 86399
/* Realtime microseconds the store accepts (it binds them as SQLite int64). */
#define HISTORY_USEC_MAX INT64_MAX

static const char *const group_names[_STORE_GROUP_MAX] = {
        [STORE_GROUP_USER] = "user",   [STORE_GROUP_UNIT] = "unit",   [STORE_GROUP_AGENT] = "agent",
        [STORE_GROUP_CLASS] = "class", [STORE_GROUP_MODEL] = "model", [STORE_GROUP_HOUR] = "hour",
        [STORE_GROUP_DAY] = "day",
};

static int group_from_string(const char *s) {
        for (size_t i = 0; i < ELEMENTSOF(group_names); i++)
                if (strcmp(s, group_names[i]) == 0)
                        return (int)i;
        return -EINVAL;
}

enum { HISTORY_SINCE, HISTORY_UNTIL, HISTORY_BY, HISTORY_UID, HISTORY_UTC_OFFSET };
static const VarlinkField history_fields[] = {
        [HISTORY_SINCE] = {VL_IN_ADMIN_HISTORY_SINCE, VARLINK_FIELD_INT, true, HISTORY_USEC_MAX},
        [HISTORY_UNTIL] = {VL_IN_ADMIN_HISTORY_UNTIL, VARLINK_FIELD_INT, true, HISTORY_USEC_MAX},
        [HISTORY_BY] = {VL_IN_ADMIN_HISTORY_BY, VARLINK_FIELD_STRING, true, 16},
        [HISTORY_UID] = {VL_IN_ADMIN_HISTORY_UID, VARLINK_FIELD_INT, true, UINT32_MAX - 1},
        [HISTORY_UTC_OFFSET] = {VL_IN_ADMIN_HISTORY_UTC_OFFSET_SEC, VARLINK_FIELD_INT, true,
                                HISTORY_UTC_OFFSET_MAX},
};

/* The groups collected so far; the store's callback stops at one too many. */
typedef struct HistoryReply {
        json_object *groups;
        size_t n;
        bool truncated;
} HistoryReply;

static json_object *group_json(const StoreHistoryGroup *g, StoreGroup by) {
        json_object *o = json_object_new_object();
        int r = 0;

        if (g->key)
                r = json_add(o, VL_FIELD_ADMIN_HISTORY_GROUP_KEY, json_object_new_string(g->key));
        if (by == STORE_GROUP_USER)
                r = r ?: json_add(o, VL_FIELD_ADMIN_HISTORY_GROUP_UID, json_u64(g->key_uid));
        if (by == STORE_GROUP_HOUR || by == STORE_GROUP_DAY)
                r = r ?: json_add(o, VL_FIELD_ADMIN_HISTORY_GROUP_START, json_u64(g->key_usec));
        r = r ?: json_add(o, VL_FIELD_ADMIN_HISTORY_GROUP_REQUESTS, json_u64(g->requests));
        r = r ?: json_add(o, VL_FIELD_ADMIN_HISTORY_GROUP_REFUSED, json_u64(g->refused));
        r = r ?: json_add(o, VL_FIELD_ADMIN_HISTORY_GROUP_TOKENS_IN, json_u64(g->tokens_in));
        r = r ?: json_add(o, VL_FIELD_ADMIN_HISTORY_GROUP_TOKENS_OUT, json_u64(g->tokens_out));
        r = r ?: json_add(o, VL_FIELD_ADMIN_HISTORY_GROUP_GRANTED, json_u64(g->granted));
        if (r < 0)
                return json_object_put(o), NULL;
        return o;
}

typedef struct HistoryCollect {
        HistoryReply *reply;
        StoreGroup by;
} HistoryCollect;

static int history_group_cb(void *userdata, const StoreHistoryGroup *g) {
        HistoryCollect *c = userdata;

        if (c->reply->n == HISTORY_GROUPS_MAX) {
                c->reply->truncated = true;
                return -ENOBUFS; /* stops the query: the reply is full */
        }
        c->reply->n++;
        return json_append(c->reply->groups, group_json(g, c->by));
}

/* HistoryUnavailable with reason, printf-formatted. */
static int history_unavailable(Call *call, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int history_unavailable(Call *call, const char *fmt, ...) {
        _cleanup_free_ char *reason = NULL;
        json_object *o;
        va_list ap;
        int r;

        va_start(ap, fmt);
        r = vasprintf(&reason, fmt, ap);
        va_end(ap);
        if (r < 0) {
                reason = NULL;
                return -ENOMEM;
        }
        o = json_object_new_object();
        r = json_add(o, VL_FIELD_ADMIN_HISTORY_UNAVAILABLE_REASON, json_object_new_string(reason));
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_error(call, VL_ERROR_ADMIN_HISTORY_UNAVAILABLE, o);
}

/* The query of the parameters, or an error answered (1 returned). */
static int history_query(Call *call, const VarlinkValue *v, StoreQuery *q, int *ret_r) {
        const Identity *caller = call_identity(call);
        int group = STORE_GROUP_DAY;

        *q = (StoreQuery){
                .since_usec = v[HISTORY_SINCE].present ? (uint64_t)v[HISTORY_SINCE].i : 0,
                .until_usec = v[HISTORY_UNTIL].present ? (uint64_t)v[HISTORY_UNTIL].i : 0,
                .utc_offset_sec = v[HISTORY_UTC_OFFSET].present ? (int32_t)v[HISTORY_UTC_OFFSET].i : 0,
        };
        /* The store's until 0 is no end: an until given is after the epoch. */
        if (v[HISTORY_UNTIL].present && (q->until_usec == 0 || q->until_usec < q->since_usec)) {
                *ret_r = call_invalid_parameter(call, VL_IN_ADMIN_HISTORY_UNTIL);
                return 1;
        }
        if (v[HISTORY_BY].present) {
                group = group_from_string(v[HISTORY_BY].s);
                if (group < 0) {
                        *ret_r = call_invalid_parameter(call, VL_IN_ADMIN_HISTORY_BY);
                        return 1;
                }
        }
        q->group = (StoreGroup)group;
        if (v[HISTORY_UID].present) {
                q->filter_uid = true;
                q->uid = (uint32_t)v[HISTORY_UID].i;
        }
        if (!identity_is_admin(caller)) {
                /* Everyone may see their own history, and only that. */
                if (q->filter_uid && q->uid != caller->uid) {
                        *ret_r = call_error(call, VL_ERROR_SERVICE_PERMISSION_DENIED, NULL);
                        return 1;
                }
                q->filter_uid = true;
                q->uid = caller->uid;
        }
        return 0;
}

static int history_reply(Call *call, const StoreQuery *q, HistoryReply *h) {
        json_object *o = json_object_new_object();
        int r;

        r = json_add(o, VL_OUT_ADMIN_HISTORY_BY, json_object_new_string(group_names[q->group]));
        r = r ?: json_add(o, VL_OUT_ADMIN_HISTORY_SINCE, json_u64(q->since_usec));
        if (q->until_usec > 0)
                r = r ?: json_add(o, VL_OUT_ADMIN_HISTORY_UNTIL, json_u64(q->until_usec));
        r = r ?: json_add(o, VL_OUT_ADMIN_HISTORY_TRUNCATED, json_object_new_boolean(h->truncated));
        if (r == 0) {
                r = json_add(o, VL_OUT_ADMIN_HISTORY_GROUPS, h->groups);
                h->groups = NULL;
        }
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_reply(call, o);
}

static int method_history(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        HistoryReply h = {};
        HistoryCollect c = {.reply = &h};
        StoreQuery q;
        int r = 0;

        if (history_query(call, v, &q, &r) > 0)
                return r;
        if (!ctx->store)
                return history_unavailable(call, "tokenbudgetd keeps no history: it runs memory only "
                                                 "(state_directory = \"\" or --state-dir '')");
        c.by = q.group;
        h.groups = json_object_new_array();
        if (!h.groups)
                return -ENOMEM;
        r = store_history_query(ctx->store, &q, history_group_cb, &c);
        if (r < 0 && !(r == -ENOBUFS && h.truncated)) {
                json_object_put(h.groups);
                if (r == -ENOMEM)
                        return r;
                return history_unavailable(call, "reading the history from %s failed: %s",
                                           store_path(ctx->store), strerror(-r));
        }
        r = history_reply(call, &q, &h);
        json_object_put(h.groups);
        return r;
}

const Method history_methods[] = {
        METHOD(VL_METHOD_ADMIN_HISTORY, method_history, history_fields, false),
};
const size_t history_n_methods = ELEMENTSOF(history_methods);
