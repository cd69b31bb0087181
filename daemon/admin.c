/* SPDX-License-Identifier: MIT */
/*
 * io.tokenbudget.admin: Status and List for everyone (non-admins see the
 * global scope and their own uid's scopes and allocations), SetLimits and
 * Reload for admins.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json-util.h"
#include "macro.h"
#include "method.h"
#include "tb-config.h"
#include "time-util.h"
#include "varlink-names.h"

static json_object *window_json(LedgerScope *scope, LedgerWindow w, uint64_t now) {
        const LedgerLimits *limits = ledger_scope_get_limits(scope);
        json_object *o = json_object_new_object();
        uint64_t frees;
        int r;

        r = json_add(o, VL_FIELD_ADMIN_WINDOW_SPAN, json_object_new_string(ledger_window_to_string(w)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_WINDOW_SPAN_USEC, json_u64(ledger_window_span_usec(w)));
        if (limits->window_tokens[w] > 0)
                r = r ?: json_add(o, VL_FIELD_ADMIN_WINDOW_LIMIT, json_u64(limits->window_tokens[w]));
        r = r ?: json_add(o, VL_FIELD_ADMIN_WINDOW_USED, json_u64(ledger_scope_window_used(scope, w, now)));
        frees = ledger_scope_window_frees_in(scope, w, now);
        if (frees > 0)
                r = r ?: json_add(o, VL_FIELD_ADMIN_WINDOW_FREES_IN_USEC, json_u64(frees));
        if (r < 0)
                return json_object_put(o), NULL;
        return o;
}

/* kind, owner uid (-1: shared) and pid (0: not a process scope) of a scope. */
static json_object *scope_json(LedgerScope *scope, ScopeKind kind, int64_t owner, pid_t pid, uint64_t now) {
        const LedgerLimits *limits = ledger_scope_get_limits(scope);
        json_object *o = json_object_new_object(), *windows = json_object_new_array();
        int r = 0;

        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX && r == 0; w++)
                r = json_append(windows, window_json(scope, w, now));
        r = r ?: json_add(o, VL_FIELD_ADMIN_SCOPE_NAME, json_object_new_string(ledger_scope_name(scope)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_SCOPE_KIND, json_object_new_string(scope_kind_to_string(kind)));
        if (owner >= 0)
                r = r ?: json_add(o, VL_FIELD_ADMIN_SCOPE_UID, json_object_new_int64(owner));
        if (pid > 0)
                r = r ?: json_add(o, VL_FIELD_ADMIN_SCOPE_PID, json_object_new_int64(pid));
        if (r < 0) {
                json_object_put(windows);
                return json_object_put(o), NULL;
        }
        r = json_add(o, VL_FIELD_ADMIN_SCOPE_WINDOWS, windows);
        if (limits->in_flight_tokens > 0)
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_SCOPE_IN_FLIGHT_LIMIT,
                                        json_u64(limits->in_flight_tokens));
        if (limits->max_allocations > 0)
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_SCOPE_ALLOCATIONS_LIMIT,
                                        json_u64(limits->max_allocations));
        r = r ?: json_add(o, VL_FIELD_ADMIN_SCOPE_RESERVED, json_u64(ledger_scope_reserved(scope)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_SCOPE_COMMITTED, json_u64(ledger_scope_committed_total(scope)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_SCOPE_ALLOCATIONS, json_u64(ledger_scope_n_allocations(scope)));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_SCOPE_DEGRADED,
                                json_object_new_boolean(ledger_scope_get_degraded(scope)));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_SCOPE_UTILISATION_PERMILLE,
                                json_u64(ledger_scope_utilisation_permille(scope, now)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_SCOPE_WAITERS, json_u64(budget_scope_waiters(scope)));
        if (r < 0)
                return json_object_put(o), NULL;
        return o;
}

static json_object *breaker_json(const Breaker *br, uint64_t now) {
        json_object *o = json_object_new_object();
        int64_t owner = breaker_owner(br);
        int r;

        r = json_add(o, VL_FIELD_ADMIN_BREAKER_SCOPE, json_object_new_string(breaker_name(br)));
        if (owner >= 0)
                r = r ?: json_add(o, VL_FIELD_ADMIN_BREAKER_UID, json_object_new_int64(owner));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_BREAKER_STATE,
                                json_object_new_string(breaker_state_to_string(breaker_state(br))));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_BREAKER_RETRY_AFTER_USEC,
                                json_u64(breaker_retry_after(br, now)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_BREAKER_BREACHES, json_u64(breaker_breaches(br, now)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_BREAKER_COOLDOWN_USEC, json_u64(breaker_cooldown(br)));
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

enum { STATUS_ALL, STATUS_KIND, STATUS_UID };
static const VarlinkField status_fields[] = {
        [STATUS_ALL] = {VL_IN_ADMIN_STATUS_ALL, VARLINK_FIELD_BOOL, true, 0},
        [STATUS_KIND] = {VL_IN_ADMIN_STATUS_KIND, VARLINK_FIELD_STRING, true, 16},
        [STATUS_UID] = {VL_IN_ADMIN_STATUS_UID, VARLINK_FIELD_INT, true, UINT32_MAX - 1},
};

/* What one Status call shows. */
typedef struct StatusFilter {
        bool all;
        int kind;    /* a ScopeKind, or -1: every kind */
        int64_t uid; /* -1: every uid */
        json_object *scopes;
        uint64_t hidden;
        uint64_t now;
        Budget *budget;
} StatusFilter;

static int status_add(StatusFilter *f, LedgerScope *scope, ScopeKind kind, int64_t owner, pid_t pid) {
        /* Degraded mode also ends when usage ages out: look again. */
        budget_scope_refresh(f->budget, scope, f->now);
        /* Global is always shown: the aggregate everyone may see. */
        if (kind != SCOPE_GLOBAL) {
                if (f->kind >= 0 && (int)kind != f->kind)
                        return 0;
                if (f->uid >= 0 && owner != f->uid)
                        return 0;
                if (!f->all && !scope_is_interesting(scope, f->now)) {
                        f->hidden++;
                        return 0;
                }
        }
        return json_append(f->scopes, scope_json(scope, kind, owner, pid, f->now));
}

/* A reading as a JSON number written as we format it ("61.5", not 61.500000000000001). */
static json_object *json_fixed(int64_t value, unsigned decimals) {
        char buf[24];

        power_format_fixed(buf, value, decimals);
        return json_object_new_double_s(strtod(buf, NULL), buf);
}

/* The power object: state, conditions, readings, since (realtime), factors. */
static json_object *power_json(const DispatchContext *ctx, uint64_t now) {
        json_object *o = json_object_new_object(), *conditions = json_object_new_array(),
                    *factors = json_object_new_object();
        static const char *const factor_keys[_PRIORITY_MAX] = {
                [PRIORITY_INTERACTIVE] = VL_FIELD_ADMIN_POWER_FACTORS_INTERACTIVE,
                [PRIORITY_NORMAL] = VL_FIELD_ADMIN_POWER_FACTORS_NORMAL,
                [PRIORITY_BACKGROUND] = VL_FIELD_ADMIN_POWER_FACTORS_BACKGROUND,
        };
        BudgetPower p;
        struct timespec ts;
        uint64_t since, realtime;
        int r = 0;

        if (!o || !conditions || !factors) {
                json_object_put(o);
                json_object_put(conditions);
                json_object_put(factors);
                return NULL;
        }
        budget_power(ctx->budget, &p);
        clock_gettime(CLOCK_REALTIME, &ts);
        realtime = (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
        since = p.since_usec ?: ctx->start_usec;
        since = now > since && realtime > now - since ? realtime - (now - since) : realtime;
        for (unsigned st = POWER_AC + 1; st < _POWER_STATE_MAX && r == 0; st++)
                if (p.conditions & (1u << st))
                        r = json_append(conditions,
                                        json_object_new_string(power_state_to_string((PowerState)st)));
        for (unsigned pr = 0; pr < _PRIORITY_MAX && r == 0; pr++)
                r = json_add(factors, factor_keys[pr],
                             json_fixed(budget_power_factor(ctx->budget, (Priority)pr), 3));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_POWER_STATE,
                                json_object_new_string(power_state_to_string(p.state)));
        if (r == 0) {
                r = json_add(o, VL_FIELD_ADMIN_POWER_CONDITIONS, conditions);
                conditions = NULL;
        }
        r = r ?: json_add(o, VL_FIELD_ADMIN_POWER_ON_AC, json_object_new_boolean(p.readings->on_ac));
        if (p.readings->battery_permille != POWER_UNKNOWN)
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_POWER_BATTERY_PERCENT,
                                        json_fixed(p.readings->battery_permille, 1));
        if (p.readings->temperature_mc != POWER_UNKNOWN) {
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_POWER_TEMPERATURE_CELSIUS,
                                        json_fixed(p.readings->temperature_mc / 100, 1));
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_POWER_SENSOR,
                                        json_object_new_string(p.readings->sensor));
        }
        if (p.readings->pressure_cp != POWER_UNKNOWN)
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_POWER_MEMORY_PRESSURE,
                                        json_fixed(p.readings->pressure_cp, 2));
        r = r ?: json_add(o, VL_FIELD_ADMIN_POWER_SINCE, json_u64(since));
        if (r == 0) {
                r = json_add(o, VL_FIELD_ADMIN_POWER_FACTORS, factors);
                factors = NULL;
        }
        json_object_put(conditions);
        json_object_put(factors);
        if (r < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

/* The durable ledger's object. */
static json_object *durability_json(const DispatchContext *ctx) {
        Store *st = ctx->store;
        json_object *o = json_object_new_object();
        const char *error = st ? store_error_message(st) : NULL;
        int r = o ? 0 : -ENOMEM;

        if (st)
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_DURABILITY_DATABASE,
                                        json_object_new_string(store_path(st)));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_DURABILITY_SYNC,
                                json_object_new_string(st ? store_sync_to_string(store_sync(st)) : "none"));
        r = r ?: json_add(o, VL_FIELD_ADMIN_DURABILITY_DEGRADED, json_object_new_boolean(error != NULL));
        if (error)
                r = r ?: json_add(o, VL_FIELD_ADMIN_DURABILITY_ERROR, json_object_new_string(error));
        r = r ?: json_add(o, VL_FIELD_ADMIN_DURABILITY_PENDING, json_u64(st ? store_unlogged(st) : 0));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_DURABILITY_LOST,
                                json_u64((st ? store_lost(st) : 0) + budget_store_failures(ctx->budget)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_DURABILITY_COMMITS, json_u64(st ? store_commits(st) : 0));
        if (r < 0) {
                json_object_put(o);
                return NULL;
        }
        return o;
}

static int method_status(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        const ProcessTable *processes = budget_processes(ctx->budget);
        const ScopeTable *table = budget_scopes(ctx->budget);
        LedgerScope *global = budget_global(ctx->budget);
        const Identity *caller = call_identity(call);
        json_object *o = json_object_new_object();
        StatusFilter f = {
                .all = v[STATUS_ALL].present && v[STATUS_ALL].b,
                .kind = -1,
                .uid = -1,
                .scopes = json_object_new_array(),
                .now = now,
                .budget = ctx->budget,
        };
        json_object *breakers = json_object_new_array();
        const BreakerTable *bt = budget_breakers(ctx->budget);
        int r = 0;

        if (v[STATUS_KIND].present) {
                f.kind = scope_kind_from_string(v[STATUS_KIND].s);
                if (f.kind < 0) {
                        json_object_put(f.scopes);
                        json_object_put(breakers);
                        json_object_put(o);
                        return call_invalid_parameter(call, VL_IN_ADMIN_STATUS_KIND);
                }
        }
        if (v[STATUS_UID].present)
                f.uid = v[STATUS_UID].i;
        if (!identity_is_admin(caller)) {
                /* Everyone may see their own budgets, and only those. */
                if (f.uid >= 0 && f.uid != (int64_t)caller->uid) {
                        json_object_put(f.scopes);
                        json_object_put(breakers);
                        json_object_put(o);
                        return call_error(call, VL_ERROR_SERVICE_PERMISSION_DENIED, NULL);
                }
                f.uid = caller->uid;
        }

        /* Kind by kind, in chain order. */
        for (ScopeKind k = 0; k < _SCOPE_KIND_MAX && r == 0; k++) {
                if (k == SCOPE_PROCESS) {
                        for (ProcessEntry *e = process_table_next(processes, NULL); e && r == 0;
                             e = process_table_next(processes, e))
                                r = status_add(&f, process_entry_scope(e), SCOPE_PROCESS,
                                               process_entry_uid(e), process_entry_pid(e));
                        continue;
                }
                for (ScopeEntry *e = scope_table_next(table, NULL); e && r == 0;
                     e = scope_table_next(table, e))
                        if (scope_entry_kind(e) == k)
                                r = status_add(&f, scope_entry_scope(e), k, scope_entry_owner(e), 0);
        }
        if (f.hidden > 0)
                r = r ?: json_add(o, VL_OUT_ADMIN_STATUS_HIDDEN_SCOPES, json_u64(f.hidden));
        r = r ?: json_add(o, VL_OUT_ADMIN_STATUS_VERSION, json_object_new_string(TB_VERSION));
        r = r ?: json_add(o, VL_OUT_ADMIN_STATUS_UPTIME_USEC, json_u64(now - ctx->start_usec));
        r = r ?: json_add(o, VL_OUT_ADMIN_STATUS_CONNECTIONS, json_u64(peer_set_size(ctx->peers)));
        r = r
                    ?: json_add(o, VL_OUT_ADMIN_STATUS_ALLOCATIONS,
                                json_u64(ledger_n_allocations(budget_ledger(ctx->budget))));
        r = r ?: json_add(o, VL_OUT_ADMIN_STATUS_RESERVED, json_u64(ledger_scope_reserved(global)));
        r = r ?: json_add(o, VL_OUT_ADMIN_STATUS_WAITERS, json_u64(budget_n_waiters(ctx->budget)));
        r = r ?: json_add(o, VL_OUT_ADMIN_STATUS_HELD, json_u64(budget_n_held(ctx->budget)));
        r = r
                    ?: json_add(o, VL_OUT_ADMIN_STATUS_ENFORCE,
                                json_object_new_boolean(budget_enforcing(ctx->budget)));
        if (r == 0) {
                json_object *power = power_json(ctx, now);

                r = power ? json_add(o, VL_OUT_ADMIN_STATUS_POWER, power) : -ENOMEM;
        }
        if (r == 0) {
                json_object *durability = durability_json(ctx);

                r = durability ? json_add(o, VL_OUT_ADMIN_STATUS_DURABILITY, durability) : -ENOMEM;
        }
        /* Breakers that are not closed, of the uids the caller may see. */
        for (Breaker *br = breaker_table_next(bt, NULL); br && r == 0; br = breaker_table_next(bt, br))
                if (breaker_state(br) != BREAKER_CLOSED && (f.uid < 0 || breaker_owner(br) == f.uid))
                        r = json_append(breakers, breaker_json(br, now));
        if (r < 0) {
                json_object_put(f.scopes);
                json_object_put(breakers);
                json_object_put(o);
                return r;
        }
        r = json_add(o, VL_OUT_ADMIN_STATUS_BREAKERS, breakers);
        if (r < 0) {
                json_object_put(f.scopes);
                json_object_put(o);
                return r;
        }
        r = json_add(o, VL_OUT_ADMIN_STATUS_SCOPES, f.scopes);
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

        const Identity *caller = call_identity(call);
        bool admin = identity_is_admin(caller);

        for (Allocation *a = budget_next_allocation(ctx->budget, NULL); a && r == 0;
             a = budget_next_allocation(ctx->budget, a))
                if (admin || allocation_identity(a)->uid == caller->uid)
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

#define TOKENS_FIELD_MAX (LEDGER_TOKENS_MAX - 1)

enum { SET_SCOPE, SET_MINUTE, SET_HOUR, SET_DAY, SET_IN_FLIGHT, SET_ALLOCATIONS, SET_PERSISTENT };
static const VarlinkField set_limits_fields[] = {
        [SET_SCOPE] = {VL_IN_ADMIN_SET_LIMITS_SCOPE, VARLINK_FIELD_STRING, false, 511},
        [SET_MINUTE] = {VL_IN_ADMIN_SET_LIMITS_TOKENS_PER_MINUTE, VARLINK_FIELD_INT, true, TOKENS_FIELD_MAX},
        [SET_HOUR] = {VL_IN_ADMIN_SET_LIMITS_TOKENS_PER_HOUR, VARLINK_FIELD_INT, true, TOKENS_FIELD_MAX},
        [SET_DAY] = {VL_IN_ADMIN_SET_LIMITS_TOKENS_PER_DAY, VARLINK_FIELD_INT, true, TOKENS_FIELD_MAX},
        [SET_IN_FLIGHT] = {VL_IN_ADMIN_SET_LIMITS_MAX_TOKENS_IN_FLIGHT, VARLINK_FIELD_INT, true,
                           TOKENS_FIELD_MAX},
        /* The configuration's bound for max_allocations, as for every budget number. */
        [SET_ALLOCATIONS] = {VL_IN_ADMIN_SET_LIMITS_MAX_ALLOCATIONS, VARLINK_FIELD_INT, true,
                             TOKENS_FIELD_MAX},
        [SET_PERSISTENT] = {VL_IN_ADMIN_SET_LIMITS_PERSISTENT, VARLINK_FIELD_BOOL, true, 0},
};

static int method_set_limits(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        const char *scope = v[SET_SCOPE].s;
        ScopeLimitsChange change = {};
        json_object *o;
        int r;

        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++)
                if (v[SET_MINUTE + w].present) {
                        change.mask |= 1u << w;
                        change.values.window_tokens[w] = (uint64_t)v[SET_MINUTE + w].i;
                }
        if (v[SET_IN_FLIGHT].present) {
                change.mask |= SCOPE_LIMIT_IN_FLIGHT;
                change.values.in_flight_tokens = (uint64_t)v[SET_IN_FLIGHT].i;
        }
        if (v[SET_ALLOCATIONS].present) {
                change.mask |= SCOPE_LIMIT_ALLOCATIONS;
                change.values.max_allocations = (uint64_t)v[SET_ALLOCATIONS].i;
        }
        r = budget_set_limits(ctx->budget, scope, &change);
        if (r == -EINVAL)
                return call_invalid_parameter(call, VL_IN_ADMIN_SET_LIMITS_SCOPE);
        if (r == -ENOENT) {
                o = json_object_new_object();
                r = json_add(o, VL_FIELD_ADMIN_UNKNOWN_SCOPE_SCOPE, json_object_new_string(scope));
                if (r < 0) {
                        json_object_put(o);
                        return r;
                }
                return call_error(call, VL_ERROR_ADMIN_UNKNOWN_SCOPE, o);
        }
        if (r < 0)
                return r;
        /* A limit raised lets waiters go on. */
        budget_retry_all(ctx->budget, now);
        if (v[SET_PERSISTENT].present && v[SET_PERSISTENT].b) {
                const char *why = NULL;
                int p = budget_persist_limits(ctx->budget, scope, &change, &why);

                if (p < 0) {
                        o = json_object_new_object();
                        p = json_add(o, VL_FIELD_ADMIN_NOT_PERSISTENT_REASON,
                                     json_object_new_string(why ?: strerror(-p)));
                        if (p < 0) {
                                json_object_put(o);
                                return p;
                        }
                        return call_error(call, VL_ERROR_ADMIN_NOT_PERSISTENT, o);
                }
        }
        return call_reply_fields(call,
                                 (const ReplyField[]){
                                         {VL_OUT_ADMIN_SET_LIMITS_SCOPE, scope, 0},
                                         {VL_OUT_ADMIN_SET_LIMITS_SCOPES, NULL, (uint64_t)r},
                                 },
                                 2);
}

static int method_reload(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        _cleanup_free_ char *errors = NULL;
        json_object *o;
        int r;

        r = ctx->reload(ctx->userdata, &errors);
        if (r >= 0)
                return call_reply(call, NULL);
        if (r == -ENOMEM && !errors)
                return r;
        o = json_object_new_object();
        r = json_add(o, VL_FIELD_ADMIN_RELOAD_REJECTED_REASON,
                     json_object_new_string(errors ?: "the configuration could not be read"));
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_error(call, VL_ERROR_ADMIN_RELOAD_REJECTED, o);
}

static json_object *pending_json(const Ticket *t, uint64_t now) {
        const BudgetRequest *req = ticket_request(t);
        const Identity *id = ticket_identity(t);
        json_object *o = json_object_new_object();
        char sid[24];
        int r;

        snprintf(sid, sizeof(sid), "%" PRIu64, ticket_id(t));
        r = json_add(o, VL_FIELD_ADMIN_PENDING_REQUEST_ID, json_object_new_string(sid));
        r = r ?: json_add(o, VL_FIELD_ADMIN_PENDING_REQUEST_PID, json_object_new_int64(id->pid));
        r = r ?: json_add(o, VL_FIELD_ADMIN_PENDING_REQUEST_UID, json_object_new_int64(id->uid));
        r = r ?: json_add(o, VL_FIELD_ADMIN_PENDING_REQUEST_COMMAND, json_object_new_string(id->comm));
        if (req->agent)
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_PENDING_REQUEST_AGENT,
                                        json_object_new_string(req->agent));
        if (req->task_class)
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_PENDING_REQUEST_CLASS,
                                        json_object_new_string(req->task_class));
        if (req->model)
                r = r
                            ?: json_add(o, VL_FIELD_ADMIN_PENDING_REQUEST_MODEL,
                                        json_object_new_string(req->model));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_PENDING_REQUEST_PRIORITY,
                                json_object_new_string(priority_to_string(ticket_priority(t))));
        r = r ?: json_add(o, VL_FIELD_ADMIN_PENDING_REQUEST_SCOPE, json_object_new_string(ticket_scope(t)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_PENDING_REQUEST_REQUESTED, json_u64(req->estimate));
        r = r ?: json_add(o, VL_FIELD_ADMIN_PENDING_REQUEST_CAP, json_u64(ticket_cap(t)));
        r = r ?: json_add(o, VL_FIELD_ADMIN_PENDING_REQUEST_HELD_USEC, json_u64(now - ticket_since(t)));
        r = r
                    ?: json_add(o, VL_FIELD_ADMIN_PENDING_REQUEST_TIMEOUT_IN_USEC,
                                json_u64(ticket_deadline(t) > now ? ticket_deadline(t) - now : 0));
        if (r < 0)
                return json_object_put(o), NULL;
        return o;
}

static int method_pending(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        json_object *o = json_object_new_object(), *list = json_object_new_array();
        int r = 0;

        for (Ticket *t = budget_next_held(ctx->budget, NULL); t && r == 0;
             t = budget_next_held(ctx->budget, t))
                r = json_append(list, pending_json(t, now));
        if (r < 0) {
                json_object_put(list);
                json_object_put(o);
                return r;
        }
        r = json_add(o, VL_OUT_ADMIN_PENDING_REQUESTS, list);
        if (r < 0) {
                json_object_put(o);
                return r;
        }
        return call_reply(call, o);
}

/* The held request named by the id, or UnknownRequest answered and NULL. */
static Ticket *held_request(const DispatchContext *ctx, Call *call, const char *id, int *ret_r) {
        Ticket *t = budget_find_held(ctx->budget, id);
        json_object *o;

        if (t)
                return t;
        o = json_object_new_object();
        *ret_r = json_add(o, VL_FIELD_ADMIN_UNKNOWN_REQUEST_ID, json_object_new_string(id));
        if (*ret_r < 0)
                json_object_put(o);
        else
                *ret_r = call_error(call, VL_ERROR_ADMIN_UNKNOWN_REQUEST, o);
        return NULL;
}

enum { DECIDE_ID, DECIDE_TOKENS };
static const VarlinkField approve_fields[] = {
        [DECIDE_ID] = {VL_IN_ADMIN_APPROVE_ID, VARLINK_FIELD_STRING, false, 64},
        [DECIDE_TOKENS] = {VL_IN_ADMIN_APPROVE_TOKENS, VARLINK_FIELD_INT, true, TOKENS_FIELD_MAX},
};
static const VarlinkField deny_fields[] = {
        [DECIDE_ID] = {VL_IN_ADMIN_DENY_ID, VARLINK_FIELD_STRING, false, 64},
};

static int method_approve(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        int r = 0;
        Ticket *t = held_request(ctx, call, v[DECIDE_ID].s, &r);

        if (!t)
                return r;
        if (v[DECIDE_TOKENS].present && v[DECIDE_TOKENS].i == 0)
                return call_invalid_parameter(call, VL_IN_ADMIN_APPROVE_TOKENS);
        budget_approve(ctx->budget, t, v[DECIDE_TOKENS].present ? (uint64_t)v[DECIDE_TOKENS].i : 0, now);
        return call_reply(call, NULL);
}

static int method_deny(const DispatchContext *ctx, Call *call, const VarlinkValue *v, uint64_t now) {
        int r = 0;
        Ticket *t = held_request(ctx, call, v[DECIDE_ID].s, &r);

        if (!t)
                return r;
        budget_deny(ctx->budget, t, now);
        return call_reply(call, NULL);
}

const Method admin_methods[] = {
        METHOD(VL_METHOD_ADMIN_STATUS, method_status, status_fields, false),
        METHOD0(VL_METHOD_ADMIN_LIST, method_list, false),
        METHOD(VL_METHOD_ADMIN_SET_LIMITS, method_set_limits, set_limits_fields, true),
        METHOD0(VL_METHOD_ADMIN_RELOAD, method_reload, true),
        METHOD0(VL_METHOD_ADMIN_PENDING, method_pending, true),
        METHOD(VL_METHOD_ADMIN_APPROVE, method_approve, approve_fields, true),
        METHOD(VL_METHOD_ADMIN_DENY, method_deny, deny_fields, true),
};
const size_t admin_n_methods = ELEMENTSOF(admin_methods);
