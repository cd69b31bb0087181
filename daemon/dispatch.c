/* SPDX-License-Identifier: MIT */
/*
 * Method dispatch for org.varlink.service, io.tokenbudget.agent and
 * io.tokenbudget.admin. One table row per method: its parameter table (so
 * validation happens before any handler runs), whether it is an admin method,
 * and a handler that turns the call into ledger operations and a reply.
 * The scopes an allocation is charged to are chosen here (global, then the
 * calling process); the policy engine will take that over.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "dispatch.h"
#include "log.h"
#include "tb-config.h"

#define AGENT_INTERFACE   "io.tokenbudget.agent"
#define ADMIN_INTERFACE   "io.tokenbudget.admin"
#define SERVICE_INTERFACE "org.varlink.service"

/* Declared strings (class, agent, model) are labels, not payloads. */
#define LABEL_MAX_BYTES  255
#define TOKENS_FIELD_MAX (LEDGER_TOKENS_MAX - 1)

typedef int (*MethodHandler)(Server *s, Peer *p, const VarlinkValue *v, uint64_t now);

typedef struct Method {
        const char *name;
        MethodHandler handler;
        const VarlinkField *fields;
        size_t n_fields;
        bool admin;
} Method;

static json_object *json_u64(uint64_t v) {
        return json_object_new_int64((int64_t)v);
}

/* Adds key: value to o; value NULL (allocation failure) makes the whole reply fail. */
static int add(json_object *o, const char *key, json_object *value) {
        if (!value || json_object_object_add(o, key, value) < 0) {
                json_object_put(value);
                return -ENOMEM;
        }
        return 0;
}

/* Appends value to array; a NULL value (allocation failure) fails. */
static int array_add(json_object *array, json_object *value) {
        if (!value || json_object_array_add(array, value) < 0) {
                json_object_put(value);
                return -ENOMEM;
        }
        return 0;
}

static int reply_built(Peer *p, json_object *o, int r) {
        if (r < 0) {
                json_object_put(o);
                return -ENOMEM;
        }
        return peer_reply(p, o);
}

/* ---- org.varlink.service ---- */

static int method_get_info(Server *s, Peer *p, const VarlinkValue *v, uint64_t now) {
        json_object *o = json_object_new_object(), *list = json_object_new_array();
        int r = 0;

        if (!o || !list) {
                json_object_put(o);
                json_object_put(list);
                return -ENOMEM;
        }
        for (size_t i = 0; varlink_interfaces[i]; i++)
                r = r ?: array_add(list, json_object_new_string(varlink_interfaces[i]));
        r = r ?: add(o, "vendor", json_object_new_string("tokenbudget"));
        r = r ?: add(o, "product", json_object_new_string("tokenbudgetd"));
        r = r ?: add(o, "version", json_object_new_string(TB_VERSION));
        r = r ?: add(o, "url", json_object_new_string("man:tokenbudgetd(8)"));
        if (r < 0)
                json_object_put(list);
        else
                r = add(o, "interfaces", list);
        return reply_built(p, o, r);
}

static int method_get_interface_description(Server *s, Peer *p, const VarlinkValue *v, uint64_t now) {
        const char *text = varlink_interface_description(v[0].s);
        json_object *o;

        if (!text) {
                o = json_object_new_object();
                if (add(o, "interface", json_object_new_string(v[0].s)) < 0)
                        return reply_built(p, o, -ENOMEM);
                return peer_error(p, VARLINK_ERROR_INTERFACE_NOT_FOUND, o);
        }
        o = json_object_new_object();
        return reply_built(p, o, add(o, "description", json_object_new_string(text)));
}

/* ---- io.tokenbudget.agent ---- */

static int error_allocation(Peer *p, const char *error, const char *id) {
        json_object *o = json_object_new_object();

        if (add(o, "allocation", json_object_new_string(id)) < 0)
                return reply_built(p, o, -ENOMEM);
        return peer_error(p, error, o);
}

static int error_budget_exhausted(Peer *p, const LedgerRefusal *refusal) {
        json_object *o = json_object_new_object();
        int r;

        r = add(o, "scope", json_object_new_string(ledger_scope_name(refusal->scope)));
        r = r ?: add(o, "limit", json_u64(refusal->limit_tokens));
        r = r ?: add(o, "used", json_u64(refusal->used_tokens));
        r = r ?: add(o, "reserved", json_u64(refusal->reserved_tokens));
        r = r ?: add(o, "retryAfterUsec", json_u64(refusal->retry_after_usec));
        if (r < 0)
                return reply_built(p, o, r);
        return peer_error(p, AGENT_INTERFACE ".BudgetExhausted", o);
}

static AllocInfo *alloc_info_new(const VarlinkValue *label_values, Priority priority) {
        size_t lengths[3], total = 0;
        AllocInfo *info;
        char *q;

        for (size_t i = 0; i < 3; i++) {
                lengths[i] = label_values[i].present ? strlen(label_values[i].s) + 1 : 0;
                total += lengths[i];
        }
        info = calloc(1, sizeof(*info) + total);
        if (!info)
                return NULL;
        info->priority = priority;
        q = info->strings;
        const char **targets[3] = {&info->task_class, &info->agent, &info->model};
        for (size_t i = 0; i < 3; i++) {
                if (!lengths[i])
                        continue;
                memcpy(q, label_values[i].s, lengths[i]);
                *targets[i] = q;
                q += lengths[i];
        }
        return info;
}

enum { REQ_ESTIMATE, REQ_CLASS, REQ_AGENT, REQ_MODEL, REQ_PRIORITY };
static const VarlinkField request_fields[] = {
        [REQ_ESTIMATE] = {"estimate", VARLINK_FIELD_INT, true, TOKENS_FIELD_MAX},
        [REQ_CLASS] = {"class", VARLINK_FIELD_STRING, true, LABEL_MAX_BYTES},
        [REQ_AGENT] = {"agent", VARLINK_FIELD_STRING, true, LABEL_MAX_BYTES},
        [REQ_MODEL] = {"model", VARLINK_FIELD_STRING, true, LABEL_MAX_BYTES},
        [REQ_PRIORITY] = {"priority", VARLINK_FIELD_STRING, true, LABEL_MAX_BYTES},
};

/* The hot methods' replies are formatted straight into the output: their
 * values are numbers, a hex id and fixed words, which need no escaping. */
static int request_reply(Peer *p, LedgerAllocation *a, bool clamped) {
        char id[17];

        allocation_format_id(ledger_allocation_id(a), id);
        return peer_reply_fields(p,
                                 (const ReplyField[]){
                                         {"allocation", id, 0},
                                         {"decision", clamped ? "degraded" : "granted", 0},
                                         {"granted", NULL, ledger_allocation_granted(a)},
                                         {"warnAt", NULL, ledger_allocation_warn_at(a)},
                                         {"hardLimit", NULL, ledger_allocation_hard_limit(a)},
                                 },
                                 5);
}

/* Why a refusal happened, in words an admin can act on. */
static void emit_refused(Server *s, Peer *p, const VarlinkValue *v, uint64_t estimate, uint64_t granted,
                         const LedgerRefusal *refusal, uint64_t now) {
        uint64_t reservation = (granted * s->config.hard_permille + 999) / 1000;
        const char *scope = ledger_scope_name(refusal->scope);
        char reason[256];
        Event e = {
                .pid = p->identity.pid,
                .uid = p->identity.uid,
                .has_uid = true,
                .comm = p->identity.comm,
                .agent = v[REQ_AGENT].present ? v[REQ_AGENT].s : NULL,
                .task_class = v[REQ_CLASS].present ? v[REQ_CLASS].s : NULL,
                .estimate = estimate,
                .has_estimate = true,
                .scope = scope,
                .decision = "refused",
                .reason = reason,
        };

        if (refusal->window >= 0)
                snprintf(reason, sizeof(reason),
                         "%s window of %s: %" PRIu64 " used + %" PRIu64 " reserved + %" PRIu64
                         " requested > %" PRIu64,
                         ledger_window_to_string((LedgerWindow)refusal->window), scope, refusal->used_tokens,
                         refusal->reserved_tokens, reservation, refusal->limit_tokens);
        else
                snprintf(reason, sizeof(reason),
                         "tokens in flight of %s: %" PRIu64 " reserved + %" PRIu64 " requested > %" PRIu64,
                         scope, refusal->reserved_tokens, reservation, refusal->limit_tokens);
        journal_emit(s->journal, EVENT_REFUSED, &e, now, "Refused %" PRIu64 " tokens to %s (pid %d): %s",
                     estimate, p->identity.comm, (int)p->identity.pid, reason);
}

static int method_request(Server *s, Peer *p, const VarlinkValue *v, uint64_t now) {
        uint64_t estimate = s->config.default_estimate, granted;
        Priority priority = PRIORITY_NORMAL;
        LedgerScope *scopes[] = {s->global, p->process->scope};
        LedgerRefusal refusal;
        LedgerAllocation *a;
        AllocInfo *info;
        int r;

        if (v[REQ_ESTIMATE].present) {
                if (v[REQ_ESTIMATE].i == 0)
                        return peer_invalid_parameter(p, "estimate");
                estimate = (uint64_t)v[REQ_ESTIMATE].i;
        }
        if (v[REQ_PRIORITY].present) {
                r = priority_from_string(v[REQ_PRIORITY].s);
                if (r < 0)
                        return peer_invalid_parameter(p, "priority");
                priority = (Priority)r;
        }
        if (p->process->n_allocations >= s->config.max_allocations_per_process) {
                json_object *o = json_object_new_object();
                if (add(o, "limit", json_u64(s->config.max_allocations_per_process)) < 0)
                        return reply_built(p, o, -ENOMEM);
                return peer_error(p, AGENT_INTERFACE ".TooManyAllocations", o);
        }

        /* Oversized requests are clamped to the per-request cap. */
        granted = estimate < s->config.max_request_tokens ? estimate : s->config.max_request_tokens;

        info = alloc_info_new(v + REQ_CLASS, priority);
        if (!info)
                return -ENOMEM;
        r = ledger_reserve(s->ledger, scopes, ELEMENTSOF(scopes), granted, now, &a, &refusal);
        if (r < 0) {
                free(info);
                if (r == -EDQUOT) {
                        s->n_refused++;
                        emit_refused(s, p, v, estimate, granted, &refusal, now);
                        return error_budget_exhausted(p, &refusal);
                }
                return r;
        }
        info->owner = p;
        info->allocation = a;
        info->estimate = estimate;
        info->last_report_usec = now;
        ledger_allocation_set_userdata(a, info);
        LIST_PREPEND(allocs, p->allocs, info);
        p->n_allocations++;
        p->process->n_allocations++;
        s->n_granted++;
        server_changed(s);
        /* Granted events are the hot path: not even formatted unless asked for. */
        if (s->config.journal_log_granted) {
                char id[17];
                allocation_format_id(ledger_allocation_id(a), id);
                server_emit_allocation(
                        s, EVENT_GRANTED, info, now, granted < estimate ? "degraded" : "granted", NULL,
                        "Granted %" PRIu64 " of %" PRIu64 " tokens to %s (pid %d) as allocation %s", granted,
                        estimate, p->identity.comm, (int)p->identity.pid, id);
        }
        return request_reply(p, a, granted < estimate);
}

/* The allocation named by the call's "allocation", if this peer owns it;
 * otherwise the matching error is queued and NULL returned with *ret_r set. */
static AllocInfo *own_allocation(Server *s, Peer *p, const char *id, int *ret_r) {
        AllocInfo *info = server_find_allocation(s, id);

        /* Another peer's allocation gets the same answer as one that does not
         * exist: nobody learns which ids are live by asking. */
        if (!info || info->owner != p) {
                *ret_r = error_allocation(p, AGENT_INTERFACE ".UnknownAllocation", id);
                return NULL;
        }
        return info;
}

/* A total lower than the last one reported is an error naming the field. */
static const char *decreased_field(const LedgerAllocation *a, uint64_t input, uint64_t output) {
        if (input < ledger_allocation_input_tokens(a))
                return "inputTokens";
        if (output < ledger_allocation_output_tokens(a))
                return "outputTokens";
        return NULL;
}

/* An event when usage crosses the warning or the hard limit (once each:
 * later reports in the same state say nothing new). */
static void emit_crossing(Server *s, const AllocInfo *info, LedgerState before, LedgerState after,
                          uint64_t now) {
        const LedgerAllocation *a = info->allocation;
        const Identity *id = &info->owner->identity;
        char sid[17];

        if (after <= before)
                return;
        allocation_format_id(ledger_allocation_id(a), sid);
        if (after == LEDGER_STATE_EXCEEDED)
                server_emit_allocation(s, EVENT_EXCEEDED, info, now, NULL, NULL,
                                       "Allocation %s of %s (pid %d) exceeded its hard limit: %" PRIu64
                                       " tokens used, hard limit %" PRIu64 " (granted %" PRIu64 ")",
                                       sid, id->comm, (int)id->pid, ledger_allocation_used(a),
                                       ledger_allocation_hard_limit(a), ledger_allocation_granted(a));
        else
                server_emit_allocation(s, EVENT_WARNING, info, now, NULL, NULL,
                                       "Allocation %s of %s (pid %d) passed its warning threshold: %" PRIu64
                                       " tokens used, warning at %" PRIu64 " (granted %" PRIu64 ")",
                                       sid, id->comm, (int)id->pid, ledger_allocation_used(a),
                                       ledger_allocation_warn_at(a), ledger_allocation_granted(a));
}

enum { USAGE_ALLOCATION, USAGE_INPUT, USAGE_OUTPUT };
static const VarlinkField report_fields[] = {
        [USAGE_ALLOCATION] = {"allocation", VARLINK_FIELD_STRING, false, LABEL_MAX_BYTES},
        [USAGE_INPUT] = {"inputTokens", VARLINK_FIELD_INT, false, TOKENS_FIELD_MAX},
        [USAGE_OUTPUT] = {"outputTokens", VARLINK_FIELD_INT, false, TOKENS_FIELD_MAX},
};
static const VarlinkField release_fields[] = {
        [USAGE_ALLOCATION] = {"allocation", VARLINK_FIELD_STRING, false, LABEL_MAX_BYTES},
        [USAGE_INPUT] = {"inputTokens", VARLINK_FIELD_INT, true, TOKENS_FIELD_MAX},
        [USAGE_OUTPUT] = {"outputTokens", VARLINK_FIELD_INT, true, TOKENS_FIELD_MAX},
};

/* Records cumulative totals (Report, and Release before it settles), with an
 * event when they cross a threshold. Returns 0, or -ERANGE with the field that
 * went down (or out of range) in *ret_bad. */
static int record_usage(Server *s, AllocInfo *info, uint64_t input, uint64_t output, uint64_t now,
                        LedgerState *ret_state, const char **ret_bad) {
        LedgerState before = ledger_allocation_state(info->allocation);

        *ret_bad = decreased_field(info->allocation, input, output);
        if (*ret_bad)
                return -ERANGE;
        if (ledger_report(s->ledger, info->allocation, input, output, now, ret_state) < 0) {
                *ret_bad = "inputTokens";
                return -ERANGE;
        }
        info->last_report_usec = now;
        emit_crossing(s, info, before, *ret_state, now);
        return 0;
}

static int method_report(Server *s, Peer *p, const VarlinkValue *v, uint64_t now) {
        const char *bad;
        LedgerState state;
        AllocInfo *info;
        int r = 0;

        info = own_allocation(s, p, v[USAGE_ALLOCATION].s, &r);
        if (!info)
                return r;
        if (record_usage(s, info, (uint64_t)v[USAGE_INPUT].i, (uint64_t)v[USAGE_OUTPUT].i, now, &state,
                         &bad) < 0)
                return peer_invalid_parameter(p, bad);

        return peer_reply_fields(p,
                                 (const ReplyField[]){
                                         {"state", ledger_state_to_string(state), 0},
                                         {"used", NULL, ledger_allocation_used(info->allocation)},
                                 },
                                 2);
}

static int method_release(Server *s, Peer *p, const VarlinkValue *v, uint64_t now) {
        uint64_t input, output, used = 0, refunded = 0;
        const char *bad;
        LedgerState state;
        AllocInfo *info;
        int r = 0;

        info = own_allocation(s, p, v[USAGE_ALLOCATION].s, &r);
        if (!info)
                return r;
        input = v[USAGE_INPUT].present ? (uint64_t)v[USAGE_INPUT].i
                                       : ledger_allocation_input_tokens(info->allocation);
        output = v[USAGE_OUTPUT].present ? (uint64_t)v[USAGE_OUTPUT].i
                                         : ledger_allocation_output_tokens(info->allocation);
        /* Final totals can cross a threshold too: say so before the allocation is gone. */
        if (record_usage(s, info, input, output, now, &state, &bad) < 0)
                return peer_invalid_parameter(p, bad);
        r = server_settle(s, info, input, output, now, &used, &refunded);
        if (r < 0)
                return peer_invalid_parameter(p, "inputTokens");
        server_changed(s);

        return peer_reply_fields(p,
                                 (const ReplyField[]){
                                         {"used", NULL, used},
                                         {"refunded", NULL, refunded},
                                 },
                                 2);
}

/* ---- io.tokenbudget.admin ---- */

static json_object *window_json(LedgerScope *scope, LedgerWindow w, uint64_t now) {
        const LedgerLimits *limits = ledger_scope_get_limits(scope);
        json_object *o = json_object_new_object();
        int r;

        r = add(o, "span", json_object_new_string(ledger_window_to_string(w)));
        r = r ?: add(o, "spanUsec", json_u64(ledger_window_span_usec(w)));
        if (limits->window_tokens[w] > 0)
                r = r ?: add(o, "limit", json_u64(limits->window_tokens[w]));
        r = r ?: add(o, "used", json_u64(ledger_scope_window_used(scope, w, now)));
        if (r < 0)
                return json_object_put(o), NULL;
        return o;
}

static json_object *scope_json(LedgerScope *scope, const ProcessEntry *process, uint64_t now) {
        const LedgerLimits *limits = ledger_scope_get_limits(scope);
        json_object *o = json_object_new_object(), *windows = json_object_new_array();
        int r = 0;

        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX && r == 0; w++) {
                r = array_add(windows, window_json(scope, w, now));
        }
        r = r ?: add(o, "name", json_object_new_string(ledger_scope_name(scope)));
        r = r ?: add(o, "kind", json_object_new_string(process ? "process" : "global"));
        if (process)
                r = r ?: add(o, "pid", json_object_new_int64(process->pid));
        if (r < 0 || add(o, "windows", windows) < 0) {
                if (r < 0)
                        json_object_put(windows);
                return json_object_put(o), NULL;
        }
        if (limits->in_flight_tokens > 0)
                r = r ?: add(o, "inFlightLimit", json_u64(limits->in_flight_tokens));
        r = r ?: add(o, "reserved", json_u64(ledger_scope_reserved(scope)));
        r = r ?: add(o, "committed", json_u64(ledger_scope_committed_total(scope)));
        r = r ?: add(o, "allocations", json_u64(ledger_scope_n_allocations(scope)));
        if (r < 0)
                return json_object_put(o), NULL;
        return o;
}

/* Whether a scope has anything to show: usage in a window, a reservation or
 * an open allocation. The rest (processes connected but idle, or gone with
 * their windows not yet empty of zero) only Status(all: true) lists. */
static bool scope_is_interesting(LedgerScope *scope, uint64_t now) {
        if (ledger_scope_reserved(scope) > 0 || ledger_scope_n_allocations(scope) > 0)
                return true;
        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++)
                if (ledger_scope_window_used(scope, w, now) > 0)
                        return true;
        return false;
}

enum { STATUS_ALL };
static const VarlinkField status_fields[] = {
        [STATUS_ALL] = {"all", VARLINK_FIELD_BOOL, true, 0},
};

static int method_status(Server *s, Peer *p, const VarlinkValue *v, uint64_t now) {
        json_object *o = json_object_new_object(), *scopes = json_object_new_array();
        bool all = v[STATUS_ALL].present && v[STATUS_ALL].b;
        uint64_t hidden = 0;
        int r = 0;

        r = scopes ? array_add(scopes, scope_json(s->global, NULL, now)) : -ENOMEM;
        for (ProcessEntry *e = s->processes; e && r == 0; e = e->processes_next) {
                if (!all && !scope_is_interesting(e->scope, now)) {
                        hidden++;
                        continue;
                }
                r = array_add(scopes, scope_json(e->scope, e, now));
        }
        if (hidden > 0)
                r = r ?: add(o, "hiddenScopes", json_u64(hidden));
        r = r ?: add(o, "version", json_object_new_string(TB_VERSION));
        r = r ?: add(o, "uptimeUsec", json_u64(now - s->start_usec));
        r = r ?: add(o, "connections", json_u64(s->n_peers));
        r = r ?: add(o, "allocations", json_u64(ledger_n_allocations(s->ledger)));
        r = r ?: add(o, "reserved", json_u64(ledger_scope_reserved(s->global)));
        if (r < 0)
                json_object_put(scopes);
        else
                r = add(o, "scopes", scopes);
        return reply_built(p, o, r);
}

static json_object *allocation_json(LedgerAllocation *a, uint64_t now) {
        const AllocInfo *info = ledger_allocation_get_userdata(a);
        const Identity *id = &info->owner->identity;
        json_object *o = json_object_new_object();
        char sid[17];
        int r;

        allocation_format_id(ledger_allocation_id(a), sid);
        r = add(o, "id", json_object_new_string(sid));
        r = r ?: add(o, "pid", json_object_new_int64(id->pid));
        r = r ?: add(o, "uid", json_object_new_int64(id->uid));
        r = r ?: add(o, "command", json_object_new_string(id->comm));
        if (info->agent)
                r = r ?: add(o, "agent", json_object_new_string(info->agent));
        if (info->task_class)
                r = r ?: add(o, "class", json_object_new_string(info->task_class));
        if (info->model)
                r = r ?: add(o, "model", json_object_new_string(info->model));
        r = r ?: add(o, "priority", json_object_new_string(priority_to_string(info->priority)));
        r = r ?: add(o, "granted", json_u64(ledger_allocation_granted(a)));
        r = r ?: add(o, "warnAt", json_u64(ledger_allocation_warn_at(a)));
        r = r ?: add(o, "hardLimit", json_u64(ledger_allocation_hard_limit(a)));
        r = r ?: add(o, "reserved", json_u64(ledger_allocation_reserved(a)));
        r = r ?: add(o, "used", json_u64(ledger_allocation_used(a)));
        r = r ?: add(o, "state", json_object_new_string(ledger_state_to_string(ledger_allocation_state(a))));
        r = r ?: add(o, "ageUsec", json_u64(now - ledger_allocation_granted_usec(a)));
        if (r < 0)
                return json_object_put(o), NULL;
        return o;
}

static int method_list(Server *s, Peer *p, const VarlinkValue *v, uint64_t now) {
        json_object *o = json_object_new_object(), *list = json_object_new_array();
        int r = list ? 0 : -ENOMEM;

        for (LedgerAllocation *a = ledger_next(s->ledger, NULL); a && r == 0; a = ledger_next(s->ledger, a))
                r = array_add(list, allocation_json(a, now));
        if (r < 0)
                json_object_put(list);
        else
                r = add(o, "allocations", list);
        return reply_built(p, o, r);
}

/* ---- the table ---- */

static const VarlinkField interface_fields[] = {
        {"interface", VARLINK_FIELD_STRING, false, 0},
};

#define METHOD(n, h, f, adm)                                                                                \
        { n, h, f, ELEMENTSOF(f), adm }
#define METHOD0(n, h, adm)                                                                                  \
        { n, h, NULL, 0, adm }

static const Method methods[] = {
        METHOD0(SERVICE_INTERFACE ".GetInfo", method_get_info, false),
        METHOD(SERVICE_INTERFACE ".GetInterfaceDescription", method_get_interface_description,
               interface_fields, false),
        METHOD(AGENT_INTERFACE ".Request", method_request, request_fields, false),
        METHOD(AGENT_INTERFACE ".Report", method_report, report_fields, false),
        METHOD(AGENT_INTERFACE ".Release", method_release, release_fields, false),
        METHOD(ADMIN_INTERFACE ".Status", method_status, status_fields, true),
        METHOD0(ADMIN_INTERFACE ".List", method_list, true),
};

#define FIELDS_MAX 8

static int error_not_found(Peer *p, const char *method) {
        json_object *o = json_object_new_object();
        size_t interface_len = strlen(method);
        bool known_interface = false;

        if (varlink_method_split(method, &interface_len) == 0)
                for (size_t i = 0; varlink_interfaces[i]; i++)
                        if (strlen(varlink_interfaces[i]) == interface_len &&
                            strncmp(varlink_interfaces[i], method, interface_len) == 0)
                                known_interface = true;
        if (known_interface) {
                if (add(o, "method", json_object_new_string(method)) < 0)
                        return reply_built(p, o, -ENOMEM);
                return peer_error(p, VARLINK_ERROR_METHOD_NOT_FOUND, o);
        }
        if (add(o, "interface", json_object_new_string_len(method, (int)interface_len)) < 0)
                return reply_built(p, o, -ENOMEM);
        return peer_error(p, VARLINK_ERROR_INTERFACE_NOT_FOUND, o);
}

static const Method *method_find(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(methods); i++)
                if (strcmp(methods[i].name, name) == 0)
                        return &methods[i];
        return NULL;
}

/* After the parameters passed their table: who may call, then the handler. */
static int dispatch_validated(Server *s, Peer *p, const Method *m, const VarlinkValue *values,
                              uint64_t now) {
        if (m->admin && p->identity.uid != 0 && p->identity.uid != s->euid)
                return peer_error(p, VARLINK_ERROR_PERMISSION_DENIED, NULL);
        return m->handler(s, p, values, now);
}

int dispatch_call(Server *s, Peer *p, const VarlinkCall *call, uint64_t now) {
        VarlinkValue values[FIELDS_MAX];
        const char *bad = NULL;
        const Method *m = method_find(call->method);

        if (!m)
                return error_not_found(p, call->method);
        if (call->upgrade)
                return peer_invalid_parameter(p, "upgrade");
        if (varlink_params_parse(call->parameters, m->fields, m->n_fields, values, &bad) < 0)
                return peer_invalid_parameter(p, bad);
        return dispatch_validated(s, p, m, values, now);
}

/* The same checks in the same order as dispatch_call(): the flat parser
 * guarantees identical values and identical bad-parameter names. */
int dispatch_flat_call(Server *s, Peer *p, const VarlinkFlatCall *call, uint64_t now) {
        VarlinkValue values[FIELDS_MAX];
        const char *bad = NULL;
        const Method *m = method_find(call->method);

        if (!m)
                return error_not_found(p, call->method);
        if (call->upgrade)
                return peer_invalid_parameter(p, "upgrade");
        if (varlink_flat_params_parse(call, m->fields, m->n_fields, values, &bad) < 0)
                return peer_invalid_parameter(p, bad);
        return dispatch_validated(s, p, m, values, now);
}
