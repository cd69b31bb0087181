/* SPDX-License-Identifier: MIT */
/*
 * io.tokenbudget.agent: Request, Report, Release. Each handler turns the
 * validated parameters into a budget operation (budget.h) and answers. The
 * replies of these hot methods are formatted straight into the output: their
 * values are numbers, a hex id and fixed words, which need no escaping.
 */
#include <errno.h>

#include "json-util.h"
#include "macro.h"
#include "method.h"
#include "varlink-names.h"

/* Declared strings (class, agent, model) are labels, not payloads. */
#define LABEL_MAX_BYTES  255
#define TOKENS_FIELD_MAX (LEDGER_TOKENS_MAX - 1)

/* An error whose parameters are one string field. */
static int error_string_field(Call *call, const char *error, const char *key, const char *value) {
        json_object *o = json_object_new_object();
        int r = json_add(o, key, json_object_new_string(value));

        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_error(call, error, o);
}

static int error_budget_exhausted(Call *call, const LedgerRefusal *refusal) {
        json_object *o = json_object_new_object();
        int r;

        r = json_add(o, VL_FIELD_AGENT_BUDGET_EXHAUSTED_SCOPE,
                     json_object_new_string(ledger_scope_name(refusal->scope)));
        r = r ?: json_add(o, VL_FIELD_AGENT_BUDGET_EXHAUSTED_LIMIT, json_u64(refusal->limit_tokens));
        r = r ?: json_add(o, VL_FIELD_AGENT_BUDGET_EXHAUSTED_USED, json_u64(refusal->used_tokens));
        r = r ?: json_add(o, VL_FIELD_AGENT_BUDGET_EXHAUSTED_RESERVED, json_u64(refusal->reserved_tokens));
        r = r
                    ?: json_add(o, VL_FIELD_AGENT_BUDGET_EXHAUSTED_RETRY_AFTER_USEC,
                                json_u64(refusal->retry_after_usec));
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_error(call, VL_ERROR_AGENT_BUDGET_EXHAUSTED, o);
}

/* TooManyAllocations and TooManyScopes: a limit and the scope it is of. */
static int error_limit_scope(Call *call, const char *error, const char *limit_key, const char *scope_key,
                             uint64_t limit, const char *scope) {
        json_object *o = json_object_new_object();
        int r = json_add(o, limit_key, json_u64(limit));

        r = r ?: json_add(o, scope_key, json_object_new_string(scope));
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_error(call, error, o);
}

static int error_refused(Call *call, const BudgetRefusal *refusal) {
        switch (refusal->kind) {
        case REFUSAL_ALLOCATIONS:
                return error_limit_scope(
                        call, VL_ERROR_AGENT_TOO_MANY_ALLOCATIONS, VL_FIELD_AGENT_TOO_MANY_ALLOCATIONS_LIMIT,
                        VL_FIELD_AGENT_TOO_MANY_ALLOCATIONS_SCOPE, refusal->limit, refusal->scope);
        case REFUSAL_SCOPES:
                return error_limit_scope(
                        call, VL_ERROR_AGENT_TOO_MANY_SCOPES, VL_FIELD_AGENT_TOO_MANY_SCOPES_LIMIT,
                        VL_FIELD_AGENT_TOO_MANY_SCOPES_SCOPE, refusal->limit, refusal->scope);
        default:
                return error_budget_exhausted(call, &refusal->ledger);
        }
}

enum { REQ_ESTIMATE, REQ_CLASS, REQ_AGENT, REQ_MODEL, REQ_PRIORITY };
static const VarlinkField request_fields[] = {
        [REQ_ESTIMATE] = {VL_IN_AGENT_REQUEST_ESTIMATE, VARLINK_FIELD_INT, true, TOKENS_FIELD_MAX},
        [REQ_CLASS] = {VL_IN_AGENT_REQUEST_CLASS, VARLINK_FIELD_STRING, true, LABEL_MAX_BYTES},
        [REQ_AGENT] = {VL_IN_AGENT_REQUEST_AGENT, VARLINK_FIELD_STRING, true, LABEL_MAX_BYTES},
        [REQ_MODEL] = {VL_IN_AGENT_REQUEST_MODEL, VARLINK_FIELD_STRING, true, LABEL_MAX_BYTES},
        [REQ_PRIORITY] = {VL_IN_AGENT_REQUEST_PRIORITY, VARLINK_FIELD_STRING, true, LABEL_MAX_BYTES},
};

static const char *label(const VarlinkValue *v) {
        return v->present ? v->s : NULL;
}

static int method_request(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        BudgetRequest req = {
                .priority = -1,
                .task_class = label(&v[REQ_CLASS]),
                .agent = label(&v[REQ_AGENT]),
                .model = label(&v[REQ_MODEL]),
        };
        BudgetRefusal refusal;
        const LedgerAllocation *la;
        Allocation *a;
        char id[17];
        int r, requested;

        if (v[REQ_ESTIMATE].present) {
                if (v[REQ_ESTIMATE].i == 0)
                        return call_invalid_parameter(call, VL_IN_AGENT_REQUEST_ESTIMATE);
                req.estimate = (uint64_t)v[REQ_ESTIMATE].i;
        }
        /* A name is kept as agent:UID:NAME: an empty one names nothing. */
        if (req.agent && !*req.agent)
                return call_invalid_parameter(call, VL_IN_AGENT_REQUEST_AGENT);
        if (v[REQ_PRIORITY].present) {
                r = priority_from_string(v[REQ_PRIORITY].s);
                if (r < 0)
                        return call_invalid_parameter(call, VL_IN_AGENT_REQUEST_PRIORITY);
                req.priority = r;
        }
        r = budget_request(ctx->budget, call_session(call), &req, now, &a, &refusal);
        if (r == -EDQUOT)
                return error_refused(call, &refusal);
        if (r < 0)
                return r;
        requested = allocation_requested_priority(a);

        la = allocation_ledger(a);
        allocation_format_id(a, id);
        return call_reply_fields(
                call,
                (const ReplyField[]){
                        {VL_OUT_AGENT_REQUEST_ALLOCATION, id, 0},
                        {VL_OUT_AGENT_REQUEST_DECISION,
                         ledger_allocation_granted(la) < allocation_estimate(a) ? "degraded" : "granted", 0},
                        {VL_OUT_AGENT_REQUEST_GRANTED, NULL, ledger_allocation_granted(la)},
                        {VL_OUT_AGENT_REQUEST_WARN_AT, NULL, ledger_allocation_warn_at(la)},
                        {VL_OUT_AGENT_REQUEST_HARD_LIMIT, NULL, ledger_allocation_hard_limit(la)},
                        {VL_OUT_AGENT_REQUEST_PRIORITY, priority_to_string(allocation_priority(a)), 0},
                        {VL_OUT_AGENT_REQUEST_REQUESTED_PRIORITY,
                         requested >= 0 ? priority_to_string((Priority)requested) : NULL, 0},
                },
                requested >= 0 ? 7 : 6);
}

/* The calling client's allocation with this id; otherwise UnknownAllocation
 * is answered and NULL returned with *ret_r set. */
static Allocation *own_allocation(const DispatchContext *ctx, Call *call, const char *id, int *ret_r) {
        Allocation *a = budget_client_find(ctx->budget, call_session(call), id);

        if (!a)
                *ret_r = error_string_field(call, VL_ERROR_AGENT_UNKNOWN_ALLOCATION,
                                            VL_FIELD_AGENT_UNKNOWN_ALLOCATION_ALLOCATION, id);
        return a;
}

enum { USAGE_ALLOCATION, USAGE_INPUT, USAGE_OUTPUT };
static const VarlinkField report_fields[] = {
        [USAGE_ALLOCATION] = {VL_IN_AGENT_REPORT_ALLOCATION, VARLINK_FIELD_STRING, false, LABEL_MAX_BYTES},
        [USAGE_INPUT] = {VL_IN_AGENT_REPORT_INPUT_TOKENS, VARLINK_FIELD_INT, false, TOKENS_FIELD_MAX},
        [USAGE_OUTPUT] = {VL_IN_AGENT_REPORT_OUTPUT_TOKENS, VARLINK_FIELD_INT, false, TOKENS_FIELD_MAX},
};
static const VarlinkField release_fields[] = {
        [USAGE_ALLOCATION] = {VL_IN_AGENT_RELEASE_ALLOCATION, VARLINK_FIELD_STRING, false, LABEL_MAX_BYTES},
        [USAGE_INPUT] = {VL_IN_AGENT_RELEASE_INPUT_TOKENS, VARLINK_FIELD_INT, true, TOKENS_FIELD_MAX},
        [USAGE_OUTPUT] = {VL_IN_AGENT_RELEASE_OUTPUT_TOKENS, VARLINK_FIELD_INT, true, TOKENS_FIELD_MAX},
};

static int method_report(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        const char *bad;
        LedgerState state;
        Allocation *a;
        int r = 0;

        a = own_allocation(ctx, call, v[USAGE_ALLOCATION].s, &r);
        if (!a)
                return r;
        if (budget_report(ctx->budget, a, (uint64_t)v[USAGE_INPUT].i, (uint64_t)v[USAGE_OUTPUT].i, now,
                          &state, &bad) < 0)
                return call_invalid_parameter(call, bad);
        return call_reply_fields(
                call,
                (const ReplyField[]){
                        {VL_OUT_AGENT_REPORT_STATE, ledger_state_to_string(state), 0},
                        {VL_OUT_AGENT_REPORT_USED, NULL, ledger_allocation_used(allocation_ledger(a))},
                },
                2);
}

static int method_release(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        uint64_t input = (uint64_t)v[USAGE_INPUT].i, output = (uint64_t)v[USAGE_OUTPUT].i, used = 0,
                 refunded = 0;
        const char *bad;
        Allocation *a;
        int r = 0;

        a = own_allocation(ctx, call, v[USAGE_ALLOCATION].s, &r);
        if (!a)
                return r;
        if (budget_release(ctx->budget, a, v[USAGE_INPUT].present ? &input : NULL,
                           v[USAGE_OUTPUT].present ? &output : NULL, now, &used, &refunded, &bad) < 0)
                return call_invalid_parameter(call, bad);
        return call_reply_fields(call,
                                 (const ReplyField[]){
                                         {VL_OUT_AGENT_RELEASE_USED, NULL, used},
                                         {VL_OUT_AGENT_RELEASE_REFUNDED, NULL, refunded},
                                 },
                                 2);
}

const Method agent_methods[] = {
        METHOD(VL_METHOD_AGENT_REQUEST, method_request, request_fields, false),
        METHOD(VL_METHOD_AGENT_REPORT, method_report, report_fields, false),
        METHOD(VL_METHOD_AGENT_RELEASE, method_release, release_fields, false),
};
const size_t agent_n_methods = ELEMENTSOF(agent_methods);
