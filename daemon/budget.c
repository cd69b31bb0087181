/* SPDX-License-Identifier: MIT */
/*
 * The budget (see budget.h). An Allocation is the ledger's allocation plus
 * what the daemon keeps beside the numbers: its owner and what the agent
 * declared; the ledger's userdata points at it. Each client keeps its
 * allocations in a list, so a disconnect settles them without a search.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "allocation-id.h"
#include "budget.h"
#include "macro.h"
#include "siphash.h"

struct Client {
        Identity identity;
        ProcessEntry *process;
        Allocation *allocations;
        unsigned n_allocations;
        gid_t *groups;
        char *exe;
        CgroupUnits units;
        Principal principal; /* points into the above */
        ScopeChain *chain;
};

struct Allocation {
        Client *owner;
        LedgerAllocation *ledger;
        LIST_FIELDS(Allocation, allocations); /* the owner's list */
        Priority priority;
        int requested_priority;                 /* when the rule's ceiling lowered it, else -1 */
        uint64_t estimate;                      /* what the agent asked for, before clamping */
        uint64_t last_report_usec;              /* grant or last Report, for the expiry sweep */
        const char *agent, *task_class, *model; /* into strings[], NULL when not given */
        char strings[];
};

struct Budget {
        const Config *config;
        Journal *journal;
        BudgetChangedFunc changed;
        void *userdata;
        Ledger *ledger;
        ScopeTable *scopes;
        ProcessTable *processes;
        ProcessTableLimits process_limits; /* the config's, with runtime changes */
        BudgetStats stats;
};

/* ---- setup ---- */

/* Whether a lingering process still runs: the same pid with the same start time. */
static bool process_alive(pid_t pid, uint64_t start_time, void *userdata) {
        Identity id = {.pid = pid};

        return identity_read_proc("/proc", &id) >= 0 && id.start_time == start_time;
}

static ProcessTableLimits process_limits(const Config *c) {
        return (ProcessTableLimits){
                .max_tracked = c->max_tracked_processes,
                .max_tracked_per_uid = c->max_tracked_processes_per_uid,
                .scope = c->process,
        };
}

static LedgerParams ledger_params(const Config *c) {
        return (LedgerParams){
                .warn_permille = c->warn_permille,
                .hard_permille = c->hard_permille,
        };
}

int budget_new(const Config *config, Journal *journal, const uint8_t id_key[16], BudgetChangedFunc changed,
               void *userdata, Budget **ret) {
        LedgerParams params = ledger_params(config);
        Budget *b = calloc(1, sizeof(*b));

        if (!b)
                return -ENOMEM;
        b->config = config;
        b->journal = journal;
        b->changed = changed;
        b->userdata = userdata;
        b->process_limits = process_limits(config);
        b->ledger = ledger_new(&params);
        if (b->ledger) {
                SipHashKey k = siphash_key(id_key);
                uint64_t derived[2] = {siphash24(&k, "scopes", 6), siphash24(&k, "SCOPES", 6)};

                ledger_set_id_key(b->ledger, id_key);
                b->scopes = scope_table_new(b->ledger, config);
                if (b->scopes)
                        scope_table_set_hash_key(b->scopes, (const uint8_t *)derived);
                b->processes = process_table_new(b->ledger, &b->process_limits, process_alive, NULL);
        }
        if (!b->ledger || !b->scopes || !b->processes) {
                budget_free(b);
                return -ENOMEM;
        }
        *ret = b;
        return 0;
}

Budget *budget_free(Budget *b) {
        if (!b)
                return NULL;
        process_table_free(b->processes);
        scope_table_free(b->scopes);
        ledger_free(b->ledger);
        free(b);
        return NULL;
}

int budget_set_config(Budget *b, const Config *config) {
        LedgerParams params = ledger_params(config);
        int r;

        r = scope_table_set_config(b->scopes, config);
        if (r < 0)
                return r;
        b->config = config;
        ledger_set_params(b->ledger, &params);
        b->process_limits = process_limits(config);
        process_table_set_limits(b->processes, &b->process_limits);
        return 0;
}

static void budget_changed(Budget *b) {
        if (b->changed)
                b->changed(b->userdata);
}

/* ---- journal events ---- */

void allocation_format_id(const Allocation *a, char buf[static 17]) {
        allocation_id_format(ledger_allocation_id(a->ledger), buf);
}

static void emit_allocation(Budget *b, EventKind kind, const Allocation *a, uint64_t now,
                            const char *decision, const char *reason, const char *fmt, ...) _printf_(7, 8);
static void emit_allocation(Budget *b, EventKind kind, const Allocation *a, uint64_t now,
                            const char *decision, const char *reason, const char *fmt, ...) {
        const Identity *id = &a->owner->identity;
        char sid[17], message[512];
        va_list ap;
        Event e = {
                .allocation = sid,
                .pid = id->pid,
                .uid = id->uid,
                .has_uid = true,
                .comm = id->comm,
                .agent = a->agent,
                .task_class = a->task_class,
                .granted = ledger_allocation_granted(a->ledger),
                .has_granted = true,
                .used = ledger_allocation_used(a->ledger),
                .has_used = true,
                .estimate = a->estimate,
                .has_estimate = true,
                .decision = decision,
                .reason = reason,
        };

        allocation_format_id(a, sid);
        va_start(ap, fmt);
        vsnprintf(message, sizeof(message), fmt, ap);
        va_end(ap);
        journal_emit(b->journal, kind, &e, now, "%s", message);
}

/* Why a refusal happened, in words an admin can act on. */
static void emit_refused(Budget *b, const Client *c, const BudgetRequest *req, uint64_t estimate,
                         uint64_t granted, uint32_t hard_permille, const BudgetRefusal *refusal,
                         uint64_t now) {
        const LedgerRefusal *lr = &refusal->ledger;
        uint64_t reservation = (granted * hard_permille + 999) / 1000;
        const char *scope = refusal->kind == REFUSAL_BUDGET ? ledger_scope_name(lr->scope) : refusal->scope;
        char reason[1024];
        Event e = {
                .pid = c->identity.pid,
                .uid = c->identity.uid,
                .has_uid = true,
                .comm = c->identity.comm,
                .agent = req->agent,
                .task_class = req->task_class,
                .estimate = estimate,
                .has_estimate = true,
                .scope = scope,
                .decision = "refused",
                .reason = reason,
        };

        if (refusal->kind == REFUSAL_SCOPES)
                snprintf(reason, sizeof(reason),
                         "no budget can be kept for %s: limit of %" PRIu64 " reached", scope,
                         refusal->limit);
        else if (refusal->kind == REFUSAL_ALLOCATIONS)
                snprintf(reason, sizeof(reason), "allocations in flight of %s: limit of %" PRIu64 " reached",
                         scope, refusal->limit);
        else if (lr->window >= 0)
                snprintf(reason, sizeof(reason),
                         "%s window of %s: %" PRIu64 " used + %" PRIu64 " reserved + %" PRIu64
                         " requested > %" PRIu64,
                         ledger_window_to_string((LedgerWindow)lr->window), scope, lr->used_tokens,
                         lr->reserved_tokens, reservation, lr->limit_tokens);
        else
                snprintf(reason, sizeof(reason),
                         "tokens in flight of %s: %" PRIu64 " reserved + %" PRIu64 " requested > %" PRIu64,
                         scope, lr->reserved_tokens, reservation, lr->limit_tokens);
        journal_emit(b->journal, EVENT_REFUSED, &e, now, "Refused %" PRIu64 " tokens to %s (pid %d): %s",
                     estimate, c->identity.comm, (int)c->identity.pid, reason);
}

/* An event when usage crosses the warning or the hard limit (once each:
 * later reports in the same state say nothing new). */
static void emit_crossing(Budget *b, const Allocation *a, LedgerState before, LedgerState after,
                          uint64_t now) {
        const LedgerAllocation *la = a->ledger;
        const Identity *id = &a->owner->identity;
        char sid[17];

        if (after <= before)
                return;
        allocation_format_id(a, sid);
        if (after == LEDGER_STATE_EXCEEDED)
                emit_allocation(b, EVENT_EXCEEDED, a, now, NULL, NULL,
                                "Allocation %s of %s (pid %d) exceeded its hard limit: %" PRIu64
                                " tokens used, hard limit %" PRIu64 " (granted %" PRIu64 ")",
                                sid, id->comm, (int)id->pid, ledger_allocation_used(la),
                                ledger_allocation_hard_limit(la), ledger_allocation_granted(la));
        else
                emit_allocation(b, EVENT_WARNING, a, now, NULL, NULL,
                                "Allocation %s of %s (pid %d) passed its warning threshold: %" PRIu64
                                " tokens used, warning at %" PRIu64 " (granted %" PRIu64 ")",
                                sid, id->comm, (int)id->pid, ledger_allocation_used(la),
                                ledger_allocation_warn_at(la), ledger_allocation_granted(la));
}

/* ---- clients ---- */

int budget_client_new(Budget *b, const Identity *identity, gid_t *groups, size_t n_groups, uint64_t now,
                      Client **ret) {
        Client *c = calloc(1, sizeof(*c));
        int r;

        if (!c) {
                free(groups);
                return -ENOMEM;
        }
        c->identity = *identity;
        c->groups = groups;
        /* A process gone already, or one whose cgroup or executable the
         * daemon may not read, is in no unit and known by its comm only. */
        if (identity_read_units(identity->pid, &c->units) < 0)
                c->units = (CgroupUnits){};
        if (identity_read_exe("/proc", identity->pid, &c->exe) < 0)
                c->exe = NULL;
        /* Both went by pid: if the peer exited and its pid was reused in
         * between, they describe another process. */
        if (c->units.unit || c->exe) {
                Identity again = {.pid = identity->pid};

                if (identity_read_proc("/proc", &again) < 0 || again.start_time != identity->start_time) {
                        cgroup_units_done(&c->units);
                        c->units = (CgroupUnits){};
                        c->exe = mfree(c->exe);
                }
        }
        c->principal = (Principal){
                .uid = identity->uid,
                .gid = identity->gid,
                .groups = c->groups,
                .n_groups = n_groups,
                .pid = identity->pid,
                .start_time = identity->start_time,
                .comm = c->identity.comm,
                .exe = c->exe,
                .units = &c->units,
        };
        r = process_table_connect(b->processes, identity->pid, identity->start_time, identity->uid,
                                  identity_is_admin(identity), now, &c->process);
        if (r < 0) {
                cgroup_units_done(&c->units);
                free(c->exe);
                free(c->groups);
                free(c);
                return r;
        }
        *ret = c;
        return 0;
}

bool budget_client_is_admin(const Client *c) {
        return identity_is_admin(&c->identity);
}

bool budget_client_has_allocations(const Client *c) {
        return c->n_allocations > 0;
}

/* Unlinks and frees one allocation after the ledger settled it. */
static void allocation_unlink(Budget *b, Allocation *a, uint64_t now) {
        Client *c = a->owner;

        LIST_REMOVE(allocations, c->allocations, a);
        c->n_allocations--;
        process_table_allocation_removed(b->processes, c->process, now);
        free(a);
}

static int allocation_settle(Budget *b, Allocation *a, uint64_t input, uint64_t output, uint64_t now,
                             uint64_t *ret_used, uint64_t *ret_refunded) {
        int r = ledger_settle(b->ledger, a->ledger, input, output, now, ret_used, ret_refunded);

        if (r < 0)
                return r;
        allocation_unlink(b, a, now);
        budget_changed(b);
        return 0;
}

/* Settles an allocation its owner did not release, at the usage it reported
 * (the unreported rest is unknown, and the reservation is what a crashed or
 * stuck agent must not keep), with the journal event that says why. */
static void allocation_settle_unreleased(Budget *b, Allocation *a, SettleCause cause, uint64_t now) {
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
        const Identity *id = &a->owner->identity;
        LedgerAllocation *la = a->ledger;
        char sid[17];

        allocation_format_id(a, sid);
        emit_allocation(b, causes[cause].kind, a, now, NULL, causes[cause].reason,
                        "Allocation %s of %s (pid %d) %s; settled at %" PRIu64 " tokens used, %" PRIu64
                        " refunded",
                        sid, id->comm, (int)id->pid, causes[cause].what, ledger_allocation_used(la),
                        ledger_allocation_reserved(la));
        (void)allocation_settle(b, a, ledger_allocation_input_tokens(la),
                                ledger_allocation_output_tokens(la), now, NULL, NULL);
        if (cause == SETTLE_EXPIRED)
                b->stats.n_expired++;
        else if (cause == SETTLE_ABANDONED)
                b->stats.n_abandoned++;
}

void budget_client_free(Budget *b, Client *c, SettleCause cause, uint64_t now) {
        if (!c)
                return;
        while (c->allocations)
                allocation_settle_unreleased(b, c->allocations, cause, now);
        scope_chain_free(b->scopes, c->chain, now);
        process_table_disconnect(b->processes, c->process, now);
        cgroup_units_done(&c->units);
        free(c->exe);
        free(c->groups);
        free(c);
}

/* ---- allocations ---- */

static Allocation *allocation_new(const BudgetRequest *req) {
        const char *labels[3] = {req->task_class, req->agent, req->model};
        size_t lengths[3], total = 0;
        Allocation *a;
        char *q;

        for (size_t i = 0; i < 3; i++) {
                lengths[i] = labels[i] ? strlen(labels[i]) + 1 : 0;
                total += lengths[i];
        }
        a = calloc(1, sizeof(*a) + total);
        if (!a)
                return NULL;
        q = a->strings;
        const char **targets[3] = {&a->task_class, &a->agent, &a->model};
        for (size_t i = 0; i < 3; i++) {
                if (!lengths[i])
                        continue;
                memcpy(q, labels[i], lengths[i]);
                *targets[i] = q;
                q += lengths[i];
        }
        return a;
}

static int refuse(Budget *b, const Client *c, const BudgetRequest *req, uint64_t estimate, uint64_t granted,
                  uint32_t hard_permille, BudgetRefusal *refusal, uint64_t now) {
        b->stats.n_refused++;
        emit_refused(b, c, req, estimate, granted, hard_permille, refusal, now);
        return -EDQUOT;
}

int budget_request(Budget *b, Client *c, const BudgetRequest *req, uint64_t now, Allocation **ret,
                   BudgetRefusal *ret_refusal) {
        uint64_t estimate = req->estimate ?: b->config->default_estimate, granted;
        const RuleEffective *eff;
        LedgerScope *const *scopes;
        LedgerParams params;
        LedgerAllocation *la;
        ScopeFailure failure;
        Priority priority;
        Allocation *a;
        size_t n;
        int r;

        /* Built at the first Request: a connection that only looks costs nothing. */
        if (!c->chain) {
                c->chain = scope_chain_new(b->scopes, &c->principal, process_entry_scope(c->process),
                                           identity_is_admin(&c->identity));
                if (!c->chain)
                        return -ENOMEM;
        }
        r = scope_chain_resolve(b->scopes, c->chain, req->agent, now, &scopes, &n, &eff, &failure);
        if (r == -EUSERS || r == -ETOOMANYREFS || r == -E2BIG) {
                *ret_refusal = (BudgetRefusal){.kind = REFUSAL_SCOPES, .limit = failure.limit};
                snprintf(ret_refusal->scope, sizeof(ret_refusal->scope), "%s", failure.scope);
                return refuse(b, c, req, estimate, 0, 0, ret_refusal, now);
        }
        if (r < 0)
                return r;
        if (process_entry_n_allocations(c->process) >= b->config->max_allocations_per_process) {
                *ret_refusal = (BudgetRefusal){.kind = REFUSAL_ALLOCATIONS,
                                               .limit = b->config->max_allocations_per_process};
                snprintf(ret_refusal->scope, sizeof(ret_refusal->scope), "%s",
                         ledger_scope_name(process_entry_scope(c->process)));
                return refuse(b, c, req, estimate, 0, 0, ret_refusal, now);
        }
        /* A priority above the rule's ceiling gets the ceiling (a greater
         * value is a lower priority). */
        priority = req->priority >= 0 ? (Priority)req->priority : eff->priority;
        if (priority < eff->max_priority)
                priority = eff->max_priority;
        /* Oversized requests are clamped to the per-request cap. */
        granted = estimate < eff->max_request_tokens ? estimate : eff->max_request_tokens;
        params = (LedgerParams){.warn_permille = eff->warn_permille, .hard_permille = eff->hard_permille};

        a = allocation_new(req);
        if (!a)
                return -ENOMEM;
        r = ledger_reserve_params(b->ledger, scopes, n, granted, &params, now, &la, &ret_refusal->ledger);
        if (r < 0) {
                free(a);
                if (r != -EDQUOT)
                        return r;
                if (ret_refusal->ledger.window == LEDGER_REFUSAL_ALLOCATIONS) {
                        LedgerRefusal lr = ret_refusal->ledger;
                        *ret_refusal = (BudgetRefusal){
                                .kind = REFUSAL_ALLOCATIONS, .limit = lr.limit_tokens, .ledger = lr};
                        snprintf(ret_refusal->scope, sizeof(ret_refusal->scope), "%s",
                                 ledger_scope_name(lr.scope));
                } else
                        ret_refusal->kind = REFUSAL_BUDGET;
                return refuse(b, c, req, estimate, granted, params.hard_permille, ret_refusal, now);
        }
        a->owner = c;
        a->ledger = la;
        a->estimate = estimate;
        a->priority = priority;
        a->requested_priority =
                req->priority >= 0 && (Priority)req->priority != priority ? req->priority : -1;
        a->last_report_usec = now;
        ledger_allocation_set_userdata(la, a);
        LIST_PREPEND(allocations, c->allocations, a);
        c->n_allocations++;
        process_entry_allocation_added(c->process);
        b->stats.n_granted++;
        budget_changed(b);
        /* Granted events are the hot path: not even formatted unless asked for. */
        if (b->config->journal_log_granted) {
                char id[17];
                allocation_format_id(a, id);
                emit_allocation(b, EVENT_GRANTED, a, now, granted < estimate ? "degraded" : "granted", NULL,
                                "Granted %" PRIu64 " of %" PRIu64 " tokens to %s (pid %d) as allocation %s",
                                granted, estimate, c->identity.comm, (int)c->identity.pid, id);
        }
        *ret = a;
        return 0;
}

Allocation *budget_client_find(Budget *b, const Client *c, const char *id) {
        LedgerAllocation *la;
        Allocation *a;
        uint64_t v;

        if (allocation_id_parse(id, &v) < 0)
                return NULL;
        la = ledger_find(b->ledger, v);
        a = la ? ledger_allocation_get_userdata(la) : NULL;
        return a && a->owner == c ? a : NULL;
}

/* A total lower than the last one reported is an error naming the field. */
static const char *decreased_field(const LedgerAllocation *la, uint64_t input, uint64_t output) {
        if (input < ledger_allocation_input_tokens(la))
                return "inputTokens";
        if (output < ledger_allocation_output_tokens(la))
                return "outputTokens";
        return NULL;
}

int budget_report(Budget *b, Allocation *a, uint64_t input_tokens, uint64_t output_tokens, uint64_t now,
                  LedgerState *ret_state, const char **ret_bad) {
        LedgerState before = ledger_allocation_state(a->ledger);

        *ret_bad = decreased_field(a->ledger, input_tokens, output_tokens);
        if (*ret_bad)
                return -ERANGE;
        if (ledger_report(b->ledger, a->ledger, input_tokens, output_tokens, now, ret_state) < 0) {
                *ret_bad = "inputTokens";
                return -ERANGE;
        }
        a->last_report_usec = now;
        emit_crossing(b, a, before, *ret_state, now);
        return 0;
}

int budget_release(Budget *b, Allocation *a, const uint64_t *input_tokens, const uint64_t *output_tokens,
                   uint64_t now, uint64_t *ret_used, uint64_t *ret_refunded, const char **ret_bad) {
        uint64_t input = input_tokens ? *input_tokens : ledger_allocation_input_tokens(a->ledger);
        uint64_t output = output_tokens ? *output_tokens : ledger_allocation_output_tokens(a->ledger);
        LedgerState state;
        int r;

        /* Final totals can cross a threshold too: say so before the allocation is gone. */
        r = budget_report(b, a, input, output, now, &state, ret_bad);
        if (r < 0)
                return r;
        r = allocation_settle(b, a, input, output, now, ret_used, ret_refunded);
        if (r < 0)
                *ret_bad = "inputTokens";
        return r;
}

/* Allocations with no report for limits.allocation_idle_timeout_sec are
 * settled at what they reported: a stuck agent must not hold its
 * reservation, and so other agents' budget, forever. */
void budget_expire(Budget *b, uint64_t now) {
        LedgerAllocation *next;

        for (LedgerAllocation *la = ledger_next(b->ledger, NULL); la; la = next) {
                Allocation *a = ledger_allocation_get_userdata(la);

                next = ledger_next(b->ledger, la);
                if (now - a->last_report_usec >= b->config->allocation_idle_timeout_usec)
                        allocation_settle_unreleased(b, a, SETTLE_EXPIRED, now);
        }
}

/* ---- what the admin interface and STATUS= show ---- */

static unsigned permille(uint64_t part, uint64_t whole) {
        if (whole == 0)
                return 0;
        return part >= whole ? 1000 : (unsigned)(part * 1000 / whole);
}

unsigned budget_global_utilisation_permille(const Budget *b, uint64_t now) {
        LedgerScope *global = scope_table_global(b->scopes);
        const LedgerLimits *limits = ledger_scope_get_limits(global);
        uint64_t reserved = ledger_scope_reserved(global);
        unsigned worst = permille(reserved, limits->in_flight_tokens);

        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++) {
                unsigned u;
                if (limits->window_tokens[w] == 0)
                        continue;
                u = permille(ledger_scope_window_used(global, w, now) + reserved, limits->window_tokens[w]);
                if (u > worst)
                        worst = u;
        }
        return worst;
}

BudgetStats budget_stats(const Budget *b) {
        return b->stats;
}

Ledger *budget_ledger(const Budget *b) {
        return b->ledger;
}

LedgerScope *budget_global(const Budget *b) {
        return scope_table_global(b->scopes);
}

const ScopeTable *budget_scopes(const Budget *b) {
        return b->scopes;
}

/* "process:PID": the live entry of that pid (several entries of one pid, the
 * newest, as the table lists newest first). */
static ProcessEntry *process_find(const Budget *b, const char *target) {
        const char *p = target + strlen("process:");
        unsigned long pid;
        char *end;

        if (*p < '0' || *p > '9')
                return NULL;
        errno = 0;
        pid = strtoul(p, &end, 10);
        if (errno || *end || pid == 0 || pid > INT32_MAX)
                return NULL;
        for (ProcessEntry *e = process_table_next(b->processes, NULL); e;
             e = process_table_next(b->processes, e))
                if (process_entry_pid(e) == (pid_t)pid)
                        return e;
        return NULL;
}

int budget_set_limits(Budget *b, const char *target, const ScopeLimitsChange *change) {
        if (strcmp(target, "process") == 0) {
                /* process_table_set_limits() gives every process scope the
                 * new defaults at once. */
                scope_limits_apply(&b->process_limits.scope, change);
                process_table_set_limits(b->processes, &b->process_limits);
                return (int)process_table_size(b->processes);
        }
        if (strncmp(target, "process:", 8) == 0) {
                ProcessEntry *e = process_find(b, target);
                LedgerLimits limits;

                if (!e)
                        return strspn(target + 8, "0123456789") == strlen(target + 8) && target[8] ? -ENOENT
                                                                                                   : -EINVAL;
                limits = *ledger_scope_get_limits(process_entry_scope(e));
                scope_limits_apply(&limits, change);
                ledger_scope_set_limits(process_entry_scope(e), &limits);
                return 1;
        }
        return scope_table_set_limits(b->scopes, target, change);
}

void budget_sweep(Budget *b, uint64_t now) {
        budget_expire(b, now);
        scope_table_sweep(b->scopes, now);
}

const ProcessTable *budget_processes(const Budget *b) {
        return b->processes;
}

Allocation *budget_next_allocation(const Budget *b, const Allocation *a) {
        LedgerAllocation *la = ledger_next(b->ledger, a ? a->ledger : NULL);
        return la ? ledger_allocation_get_userdata(la) : NULL;
}

const LedgerAllocation *allocation_ledger(const Allocation *a) {
        return a->ledger;
}

const Identity *allocation_identity(const Allocation *a) {
        return &a->owner->identity;
}

uint64_t allocation_estimate(const Allocation *a) {
        return a->estimate;
}

Priority allocation_priority(const Allocation *a) {
        return a->priority;
}

int allocation_requested_priority(const Allocation *a) {
        return a->requested_priority;
}

const char *allocation_agent(const Allocation *a) {
        return a->agent;
}

const char *allocation_task_class(const Allocation *a) {
        return a->task_class;
}

const char *allocation_model(const Allocation *a) {
        return a->model;
}
