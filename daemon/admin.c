/* SPDX-License-Identifier: MIT */
/* io.tokenbudget.admin: Status and List, for root and the daemon's user. */
#include <errno.h>

#include "json-util.h"
#include "macro.h"
#include "method.h"
#include "tb-config.h"
#include "varlink-names.h"

static json_object *window_json(LedgerScope *scope, LedgerWindow w, uint64_t now) {
        const LedgerLimits *limits = ledger_scope_get_limits(scope);
        json_object *o = json_object_new_object();
        int r;

        r = json_add(o, VL_FIELD_ADMIN_WINDOW_SPAN, json_object_new_string(ledger_window_to_string(w)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_WINDOW_SPAN_USEC, json_u64(ledger_window_span_usec(w)));
        if (limits->window_tokens[w] > 0)
                r = r ?: json_add(o, VL_FIELD_ADMIN_WINDOW_LIMIT, json_u64(limits->window_tokens[w]));
        r = r ?: json_add(o, VL_FIELD_ADMIN_WINDOW_USED, json_u64(ledger_scope_window_used(scope, w, now)));
        if (r < 0)
                return json_object_put(o), NULL;
        return o;
}

static json_object *scope_json(LedgerScope *scope, const ProcessEntry *process, uint64_t now) {
        const LedgerLimits *limits = ledger_scope_get_limits(scope);
        json_object *o = json_object_new_object(), *windows = json_object_new_array();
        int r = 0;

        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX && r == 0; w++)
                r = json_append(windows, window_json(scope, w, now));
        r = r ?: json_add(o, VL_FIELD_ADMIN_SCOPE_NAME, json_object_new_string(ledger_scope_name(scope)));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_SCOPE_KIND,
                                json_object_new_string(process ? "process" : "global"));
        if (process)
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_SCOPE_PID,
                                        json_object_new_int64(process_entry_pid(process)));
        if (r < 0) {
                json_object_put(windows);
                return json_object_put(o), NULL;
        }
        r = json_add(o, VL_FIELD_ADMIN_SCOPE_WINDOWS, windows);
        if (limits->in_flight_tokens > 0)
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_SCOPE_IN_FLIGHT_LIMIT,
                                        json_u64(limits->in_flight_tokens));
        r = r ?: json_add(o, VL_FIELD_ADMIN_SCOPE_RESERVED, json_u64(ledger_scope_reserved(scope)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_SCOPE_COMMITTED, json_u64(ledger_scope_committed_total(scope)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_SCOPE_ALLOCATIONS, json_u64(ledger_scope_n_allocations(scope)));
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
        [STATUS_ALL] = {VL_IN_ADMIN_STATUS_ALL, VARLINK_FIELD_BOOL, true, 0},
};

static int method_status(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        const ProcessTable *processes = budget_processes(ctx->budget);
        LedgerScope *global = budget_global(ctx->budget);
        json_object *o = json_object_new_object(), *scopes = json_object_new_array();
        bool all = v[STATUS_ALL].present && v[STATUS_ALL].b;
        uint64_t hidden = 0;
        int r;

        r = json_append(scopes, scope_json(global, NULL, now));
        for (ProcessEntry *e = process_table_next(processes, NULL); e && r == 0;
             e = process_table_next(processes, e)) {
                if (!all && !scope_is_interesting(process_entry_scope(e), now)) {
                        hidden++;
                        continue;
                }
                r = json_append(scopes, scope_json(process_entry_scope(e), e, now));
        }
        if (hidden > 0)
                r = r ?: json_add(o, VL_OUT_ADMIN_STATUS_HIDDEN_SCOPES, json_u64(hidden));
        r = r ?: json_add(o, VL_OUT_ADMIN_STATUS_VERSION, json_object_new_string(TB_VERSION));
        r = r ?: json_add(o, VL_OUT_ADMIN_STATUS_UPTIME_USEC, json_u64(now - ctx->start_usec));
        r = r ?: json_add(o, VL_OUT_ADMIN_STATUS_CONNECTIONS, json_u64(peer_set_size(ctx->peers)));
        r = r
                    ?: json_add(o, VL_OUT_ADMIN_STATUS_ALLOCATIONS,
                                json_u64(ledger_n_allocations(budget_ledger(ctx->budget))));
        r = r ?: json_add(o, VL_OUT_ADMIN_STATUS_RESERVED, json_u64(ledger_scope_reserved(global)));
        if (r < 0) {
                json_object_put(scopes);
                json_object_put(o);
                return r;
        }
        r = json_add(o, VL_OUT_ADMIN_STATUS_SCOPES, scopes);
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_reply(call, o);
}

static json_object *allocation_json(const Allocation *a, uint64_t now) {
        const LedgerAllocation *la = allocation_ledger(a);
        const Identity *id = allocation_identity(a);
        json_object *o = json_object_new_object();
        char sid[17];
        int r;

        allocation_format_id(a, sid);
        r = json_add(o, VL_FIELD_ADMIN_ALLOCATION_ID, json_object_new_string(sid));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_PID, json_object_new_int64(id->pid));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_UID, json_object_new_int64(id->uid));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_COMMAND, json_object_new_string(id->comm));
        if (allocation_agent(a))
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_AGENT,
                                        json_object_new_string(allocation_agent(a)));
        if (allocation_task_class(a))
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_CLASS,
                                        json_object_new_string(allocation_task_class(a)));
        if (allocation_model(a))
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_MODEL,
                                        json_object_new_string(allocation_model(a)));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_PRIORITY,
                                json_object_new_string(priority_to_string(allocation_priority(a))));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_GRANTED, json_u64(ledger_allocation_granted(la)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_WARN_AT, json_u64(ledger_allocation_warn_at(la)));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_HARD_LIMIT,
                                json_u64(ledger_allocation_hard_limit(la)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_RESERVED, json_u64(ledger_allocation_reserved(la)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_USED, json_u64(ledger_allocation_used(la)));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_STATE,
                                json_object_new_string(ledger_state_to_string(ledger_allocation_state(la))));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_ALLOCATION_AGE_USEC,
                                json_u64(now - ledger_allocation_granted_usec(la)));
        if (r < 0)
                return json_object_put(o), NULL;
        return o;
}

static int method_list(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        json_object *o = json_object_new_object(), *list = json_object_new_array();
        int r = 0;

        for (Allocation *a = budget_next_allocation(ctx->budget, NULL); a && r == 0;
             a = budget_next_allocation(ctx->budget, a))
                r = json_append(list, allocation_json(a, now));
        if (r < 0 || !list) {
                json_object_put(list);
                json_object_put(o);
                return -ENOMEM;
        }
        r = json_add(o, VL_OUT_ADMIN_LIST_ALLOCATIONS, list);
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_reply(call, o);
}

const Method admin_methods[] = {
        METHOD(VL_METHOD_ADMIN_STATUS, method_status, status_fields, true),
        METHOD0(VL_METHOD_ADMIN_LIST, method_list, true),
};
const size_t admin_n_methods = ELEMENTSOF(admin_methods);
