/* SPDX-License-Identifier: MIT */
/*
 * io.tokenbudget.agent: Request, Report, Release. Each handler turns the
 * validated parameters into a budget operation (budget.h) and answers. The
 * replies of these hot methods are formatted straight into the output: their
 * values are numbers, a hex id and fixed words, which need no escaping.
 */
#include <errno.h>
#include <stdlib.h>

#include "json-util.h"
#include "macro.h"
#include "method.h"
#include "varlink-names.h"

/* Declared strings (class, agent, model) are labels, not payloads. */
#define LABEL_MAX_BYTES  255
#define TOKENS_FIELD_MAX (LEDGER_TOKENS_MAX - 1)
/* waitUsec: up to a day (queue.max_wait_sec shortens it further). */
#define WAIT_USEC_MAX (UINT64_C(86400) * 1000000)

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

static int error_budget_exhausted(Call *call, const char *error, const BudgetRefusal *refusal) {
        const LedgerRefusal *lr = &refusal->ledger;
        json_object *o = json_object_new_object();
        bool timeout = refusal->kind == REFUSAL_QUEUE_TIMEOUT;
        int r;

        r = json_add(o, VL_FIELD_AGENT_BUDGET_EXHAUSTED_SCOPE,
                     json_object_new_string(lr->scope ? ledger_scope_name(lr->scope) : refusal->scope));
        if (timeout)
                r = r
                            ?: json_add(o, VL_FIELD_AGENT_QUEUE_TIMEOUT_WAITED_USEC,
                                        json_u64(refusal->waited_usec));
        r = r ?: json_add(o, VL_FIELD_AGENT_BUDGET_EXHAUSTED_LIMIT, json_u64(lr->limit_tokens));
        r = r ?: json_add(o, VL_FIELD_AGENT_BUDGET_EXHAUSTED_USED, json_u64(lr->used_tokens));
        r = r ?: json_add(o, VL_FIELD_AGENT_BUDGET_EXHAUSTED_RESERVED, json_u64(lr->reserved_tokens));
        r = r
                    ?: json_add(o, VL_FIELD_AGENT_BUDGET_EXHAUSTED_RETRY_AFTER_USEC,
                                json_u64(lr->retry_after_usec));
        if (!timeout) {
                const char *reason = refusal->reason == REFUSE_POOL_DEGRADED  ? "pool-degraded"
                                     : refusal->reason == REFUSE_QUEUED_AHEAD ? "queued-ahead"
                                     : lr->window >= 0                        ? "window"
                                                                              : "in-flight";
                r = r ?: json_add(o, VL_FIELD_AGENT_BUDGET_EXHAUSTED_REASON, json_object_new_string(reason));
                if (lr->window >= 0)
                        r = r
                                    ?: json_add(o, VL_FIELD_AGENT_BUDGET_EXHAUSTED_WINDOW,
                                                json_object_new_string(
                                                        ledger_window_to_string((LedgerWindow)lr->window)));
        }
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_error(call, error, o);
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

static int error_escalated(Call *call, const BudgetRefusal *refusal) {
        json_object *o = json_object_new_object();
        int r;

        r = json_add(o, VL_FIELD_AGENT_ESCALATED_SCOPE, json_object_new_string(refusal->scope));
        r = r ?: json_add(o, VL_FIELD_AGENT_ESCALATED_REQUESTED, json_u64(refusal->requested));
        r = r ?: json_add(o, VL_FIELD_AGENT_ESCALATED_CAP, json_u64(refusal->limit));
        r = r
                    ?: json_add(o, VL_FIELD_AGENT_ESCALATED_REASON,
                                json_object_new_string(refusal->escalation ?: "policy"));
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_error(call, VL_ERROR_AGENT_ESCALATED, o);
}

static int error_circuit_open(Call *call, const BudgetRefusal *refusal) {
        json_object *o = json_object_new_object();
        int r;

        r = json_add(o, VL_FIELD_AGENT_CIRCUIT_OPEN_SCOPE, json_object_new_string(refusal->scope));
        r = r
                    ?: json_add(o, VL_FIELD_AGENT_CIRCUIT_OPEN_RETRY_AFTER_USEC,
                                json_u64(refusal->retry_after_usec));
        r = r ?: json_add(o, VL_FIELD_AGENT_CIRCUIT_OPEN_BREACHES, json_u64(refusal->breaches));
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_error(call, VL_ERROR_AGENT_CIRCUIT_OPEN, o);
}

static int error_refused(Call *call, const BudgetRefusal *refusal) {
        switch (refusal->kind) {
        case REFUSAL_POWER_PAUSED: {
                json_object *o = json_object_new_object();
                int r = json_add(o, VL_FIELD_AGENT_POWER_PAUSED_STATE,
                                 json_object_new_string(refusal->scope));

                r = r ?: json_add(o, VL_FIELD_AGENT_POWER_PAUSED_RETRY_AFTER_USEC, json_u64(0));
                if (r < 0) {
                        json_object_put(o);
                        return r;
                }
                return call_error(call, VL_ERROR_AGENT_POWER_PAUSED, o);
        }
        case REFUSAL_ALLOCATIONS:
                return error_limit_scope(
                        call, VL_ERROR_AGENT_TOO_MANY_ALLOCATIONS, VL_FIELD_AGENT_TOO_MANY_ALLOCATIONS_LIMIT,
                        VL_FIELD_AGENT_TOO_MANY_ALLOCATIONS_SCOPE, refusal->limit, refusal->scope);
        case REFUSAL_SCOPES:
                return error_limit_scope(
                        call, VL_ERROR_AGENT_TOO_MANY_SCOPES, VL_FIELD_AGENT_TOO_MANY_SCOPES_LIMIT,
                        VL_FIELD_AGENT_TOO_MANY_SCOPES_SCOPE, refusal->limit, refusal->scope);
        case REFUSAL_QUEUE_FULL:
                return error_limit_scope(call, VL_ERROR_AGENT_QUEUE_FULL, VL_FIELD_AGENT_QUEUE_FULL_LIMIT,
                                         VL_FIELD_AGENT_QUEUE_FULL_SCOPE, refusal->limit, refusal->scope);
        case REFUSAL_ESCALATED:
                return error_escalated(call, refusal);
        case REFUSAL_CIRCUIT_OPEN:
                return error_circuit_open(call, refusal);
        case REFUSAL_QUEUE_TIMEOUT:
                return error_budget_exhausted(call, VL_ERROR_AGENT_QUEUE_TIMEOUT, refusal);
        default:
                return error_budget_exhausted(call, VL_ERROR_AGENT_BUDGET_EXHAUSTED, refusal);
        }
}

enum {
        REQ_ESTIMATE,
        REQ_CLASS,
        REQ_AGENT,
        REQ_MODEL,
        REQ_PRIORITY,
        REQ_MIN_TOKENS,
        REQ_WAIT_USEC,
        REQ_PROMPT_TOKENS,
        REQ_ON_BEHALF_OF,
};
static const VarlinkField request_fields[] = {
        [REQ_ESTIMATE] = {VL_IN_AGENT_REQUEST_ESTIMATE, VARLINK_FIELD_INT, true, TOKENS_FIELD_MAX},
        [REQ_CLASS] = {VL_IN_AGENT_REQUEST_CLASS, VARLINK_FIELD_STRING, true, LABEL_MAX_BYTES},
        [REQ_AGENT] = {VL_IN_AGENT_REQUEST_AGENT, VARLINK_FIELD_STRING, true, LABEL_MAX_BYTES},
        [REQ_MODEL] = {VL_IN_AGENT_REQUEST_MODEL, VARLINK_FIELD_STRING, true, LABEL_MAX_BYTES},
        [REQ_PRIORITY] = {VL_IN_AGENT_REQUEST_PRIORITY, VARLINK_FIELD_STRING, true, LABEL_MAX_BYTES},
        [REQ_MIN_TOKENS] = {VL_IN_AGENT_REQUEST_MIN_TOKENS, VARLINK_FIELD_INT, true, TOKENS_FIELD_MAX},
        [REQ_WAIT_USEC] = {VL_IN_AGENT_REQUEST_WAIT_USEC, VARLINK_FIELD_INT, true, WAIT_USEC_MAX},
        [REQ_PROMPT_TOKENS] = {VL_IN_AGENT_REQUEST_PROMPT_TOKENS, VARLINK_FIELD_INT, true, TOKENS_FIELD_MAX},
        [REQ_ON_BEHALF_OF] = {VL_IN_AGENT_REQUEST_ON_BEHALF_OF, VARLINK_FIELD_OBJECT, true, 0},
};

/* OnBehalfOf's members: a pid (pid_max is at most 2^22) and a uid. */
enum { OBO_PID, OBO_UID };
static const VarlinkField on_behalf_of_fields[] = {
        [OBO_PID] = {VL_FIELD_AGENT_ON_BEHALF_OF_PID, VARLINK_FIELD_INT, false, INT32_MAX},
        [OBO_UID] = {VL_FIELD_AGENT_ON_BEHALF_OF_UID, VARLINK_FIELD_INT, false, UINT32_MAX - 1},
};

/* The client a Request is charged as: the caller's, or with onBehalfOf the
 * delegate for that process (trusted proxies only). 0 with *ret, or the
 * error answered (r > 0 as call_error() returns) and NULL. */
static int request_session(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now,
                           Client **ret) {
        Client *session = call_session(call);
        VarlinkValue obo[ELEMENTSOF(on_behalf_of_fields)];
        int r;

        *ret = NULL;
        if (!v->present) {
                *ret = session;
                return 0;
        }
        if (!budget_client_may_delegate(ctx->budget, session))
                return call_error(call, VL_ERROR_SERVICE_PERMISSION_DENIED, NULL);
        if (varlink_params_parse(v->o, on_behalf_of_fields, ELEMENTSOF(on_behalf_of_fields), obo, NULL) < 0)
                return call_invalid_parameter(call, VL_IN_AGENT_REQUEST_ON_BEHALF_OF);
        r = budget_client_delegate(ctx->budget, session, (pid_t)obo[OBO_PID].i, (uid_t)obo[OBO_UID].i, now,
                                   ret);
        if (r == -ENOMEM)
                return r;
        /* No such process, another uid's, or none can be tracked: the proxy
         * named what cannot be charged. */
        if (r < 0)
                return call_invalid_parameter(call, VL_IN_AGENT_REQUEST_ON_BEHALF_OF);
        return 0;
}

static const char *label(const VarlinkValue *v) {
        return v->present ? v->s : NULL;
}

/* The grant, formatted straight into the output. */
static int reply_granted(Call *call, Allocation *a, const BudgetGrant *g) {
        const LedgerAllocation *la = allocation_ledger(a);
        int requested = allocation_requested_priority(a);
        uint64_t granted = ledger_allocation_granted(la);
        const char *reason = decision_reason_to_string(g->reason);
        ReplyField fields[19];
        size_t n = 0;
        char id[17], factor[24], hard[24];

        allocation_format_id(a, id);
        fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_ALLOCATION, id, 0};
        fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_DECISION,
                                   granted < allocation_estimate(a) ? "degraded" : "granted", 0};
        fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_GRANTED, NULL, granted};
        fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_WARN_AT, NULL, ledger_allocation_warn_at(la)};
        fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_HARD_LIMIT, NULL, ledger_allocation_hard_limit(la)};
        fields[n++] =
                (ReplyField){VL_OUT_AGENT_REQUEST_PRIORITY, priority_to_string(allocation_priority(a)), 0};
        if (requested >= 0)
                fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_REQUESTED_PRIORITY,
                                           priority_to_string((Priority)requested), 0};
        if (reason && granted < allocation_estimate(a))
                fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_REASON, reason, 0};
        else if (g->learned)
                fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_REASON, "learned", 0};
        if (g->deferred)
                fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_WAITED_USEC, NULL, g->waited_usec};
        fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_SUGGESTED_MAX_TOKENS, NULL, g->suggested_max_tokens};
        if (g->dry_run) {
                fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_WOULD_BE, g->would_be, 0};
                if (g->would_be_reason)
                        fields[n++] =
                                (ReplyField){VL_OUT_AGENT_REQUEST_WOULD_BE_REASON, g->would_be_reason, 0};
        }
        fields[n++] =
                (ReplyField){VL_OUT_AGENT_REQUEST_POWER_STATE, power_state_to_string(g->power_state), 0};
        if (g->has_prediction) {
                fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_PREDICTED, NULL, g->predicted};
                fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_PREDICTED_OUTPUT, NULL, g->predicted_output};
                fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_SAMPLES, NULL, g->samples};
        }
        fields[n++] = (ReplyField){VL_OUT_AGENT_REQUEST_HARD_MULTIPLIER,
                                   power_format_fixed(hard, g->hard_permille, 3), 0, true};
        fields[n++] = (ReplyField){
                VL_OUT_AGENT_REQUEST_POWER_FACTOR,
                g->power_factor == POWER_FACTOR_ONE ? "1.0" : power_format_fixed(factor, g->power_factor, 3),
                0, true};
        /* A model name is the admin's configuration, not a fixed word: it
         * may need escaping, so it takes the JSON path. */
        if (g->suggested_model) {
                json_object *o = json_object_new_object();
                int r = 0;

                for (size_t i = 0; i < n && r >= 0; i++)
                        r = json_add(o, fields[i].key,
                                     fields[i].raw ? json_object_new_double_s(strtod(fields[i].string, NULL),
                                                                              fields[i].string)
                                     : fields[i].string ? json_object_new_string(fields[i].string)
                                                        : json_u64(fields[i].number));
                r = r
                            ?: json_add(o, VL_OUT_AGENT_REQUEST_SUGGESTED_MODEL,
                                        json_object_new_string(g->suggested_model));
                if (r < 0) {
                        json_object_put(o);
                        return r;
                }
                return call_reply(call, o);
        }
        return call_reply_fields(call, fields, n);
}

/* A deferred Request is answered. */
static void request_done(void *userdata, int r, Allocation *a, const BudgetGrant *grant,
                         const BudgetRefusal *refusal) {
        Call *call = userdata;

        if (r == 0)
                (void)reply_granted(call, a, grant);
        else if (r == -EDQUOT)
                (void)error_refused(call, refusal);
        else /* out of memory while retrying: there is no better word for it in Varlink */
                (void)call_error(call, VL_ERROR_SERVICE_METHOD_NOT_IMPLEMENTED, NULL);
        call_unref(call);
}

/* The caller went away while its Request waited. */
static void request_cancelled(Call *call, void *userdata) {
        ticket_cancel(userdata);
        call_unref(call);
}

static int method_request(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        BudgetRequest req = {
                .priority = -1,
                .task_class = label(&v[REQ_CLASS]),
                .agent = label(&v[REQ_AGENT]),
                .model = label(&v[REQ_MODEL]),
        };
        BudgetRefusal refusal;
        BudgetGrant grant;
        Ticket *ticket = NULL;
        Allocation *a;
        Call *deferred;
        Client *session;
        int r;

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
        if (v[REQ_MIN_TOKENS].present) {
                /* The least the caller can use: at least 1, at most what it asks for. */
                if (v[REQ_MIN_TOKENS].i == 0 ||
                    (req.estimate && (uint64_t)v[REQ_MIN_TOKENS].i > req.estimate))
                        return call_invalid_parameter(call, VL_IN_AGENT_REQUEST_MIN_TOKENS);
                req.min_tokens = (uint64_t)v[REQ_MIN_TOKENS].i;
        }
        if (v[REQ_WAIT_USEC].present)
                req.wait_usec = (uint64_t)v[REQ_WAIT_USEC].i;
        if (v[REQ_PROMPT_TOKENS].present)
                req.prompt_tokens = (uint64_t)v[REQ_PROMPT_TOKENS].i;
        r = request_session(ctx, call, &v[REQ_ON_BEHALF_OF], now, &session);
        if (!session)
                return r;
        r = budget_request(ctx->budget, session, &req, now, &a, &grant, &refusal, &ticket);
        if (r == -EDQUOT)
                return error_refused(call, &refusal);
        if (r == -EINPROGRESS) {
                /* A oneway Request has nobody to tell a later grant to: it
                 * does not wait (nor hold an admin's attention). */
                deferred = call_is_oneway(call) ? NULL : call_defer(call, request_cancelled, ticket);
                if (!deferred) {
                        ticket_cancel(ticket);
                        return 0;
                }
                ticket_set_done(ticket, request_done, deferred);
                return 0;
        }
        if (r < 0)
                return r;
        return reply_granted(call, a, &grant);
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
                        {VL_OUT_AGENT_REPORT_ACTION, "terminate", 0},
                },
                allocation_terminating(a) ? 3 : 2);
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
