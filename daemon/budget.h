/* SPDX-License-Identifier: MIT */
/*
 * The budget: the ledger with its scopes (the scope table: global, users,
 * units, slices, agents, rules; the process table), and the open allocations
 * of every connected client. This is the one place that
 * creates, links, counts, settles and unlinks an allocation, and that emits
 * the journal events about one (granted, refused, warning, exceeded,
 * abandoned, expired, settled at shutdown). Handlers turn calls into these
 * functions; nothing here knows about sockets or Varlink.
 *
 * A Client is what one connection may spend from: its identity (with its
 * groups, cgroup units and executable, gathered once at connect), its scope
 * chain, its allocations. Allocations belong to the connection: another
 * client, even of the same process, cannot see them.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "breaker.h"
#include "estimator.h"
#include "config.h"
#include "decide.h"
#include "identity.h"
#include "journal.h"
#include "ledger.h"
#include "power.h"
#include "process.h"
#include "scopes.h"
#include "store.h"

typedef struct Budget Budget;
typedef struct Client Client;
typedef struct Allocation Allocation;
/* A Request whose answer comes later: queued (waiting for room) or held for
 * an admin (escalated). */
typedef struct Ticket Ticket;

/* How an allocation was settled other than by its owner's Release. */
typedef enum SettleCause {
        SETTLE_ABANDONED, /* its connection closed */
        SETTLE_SHUTDOWN,  /* the daemon is stopping */
        SETTLE_EXPIRED,   /* no report for limits.allocation_idle_timeout_sec */
} SettleCause;

typedef struct BudgetRequest {
        uint64_t estimate;                      /* 0: the configured default_estimate */
        int priority;                           /* a Priority, or -1: the rule's default */
        const char *task_class, *agent, *model; /* NULL when not given; copied */
        uint64_t min_tokens;                    /* 0: not given (no degrading unless asked) */
        uint64_t wait_usec;                     /* 0: refuse at once rather than wait */
        uint64_t prompt_tokens;                 /* 0: not given */
} BudgetRequest;

typedef enum BudgetRefusalKind {
        REFUSAL_BUDGET,      /* a scope has no room: ledger, reason (budget, pool-degraded, queued-ahead) */
        REFUSAL_ALLOCATIONS, /* a scope holds its most allocations: limit, scope */
        REFUSAL_SCOPES,      /* no budget can be kept for the caller: limit, scope */
        REFUSAL_ESCALATED,   /* requested, limit (the cap), scope, escalation */
        REFUSAL_QUEUE_TIMEOUT, /* ledger (the scope it waited for), waited_usec */
        REFUSAL_QUEUE_FULL,    /* limit, scope ("queue", "queue:UID") */
        REFUSAL_CIRCUIT_OPEN,  /* scope, retry_after_usec, breaches */
        REFUSAL_POWER_PAUSED,  /* scope: the power state's name */
} BudgetRefusalKind;

typedef struct BudgetRefusal {
        BudgetRefusalKind kind;
        RefusalReason reason; /* REFUSAL_BUDGET: which rung refused */
        LedgerRefusal ledger;
        uint64_t limit;
        uint64_t requested;        /* REFUSAL_ESCALATED */
        const char *escalation;    /* REFUSAL_ESCALATED: "policy", "denied", "timeout" */
        uint64_t waited_usec;      /* REFUSAL_QUEUE_TIMEOUT */
        uint64_t retry_after_usec; /* REFUSAL_CIRCUIT_OPEN */
        uint64_t breaches;         /* REFUSAL_CIRCUIT_OPEN */
        char scope[512];
} BudgetRefusal;

/* How a grant came about, for the reply. */
typedef struct BudgetGrant {
        DecisionReason reason;         /* why less than the estimate; REASON_NONE */
        bool deferred;                 /* the reply waited (queued or held) */
        uint64_t waited_usec;          /* then: for how long */
        uint64_t suggested_max_tokens; /* granted - promptTokens, at least 1 */
        const char *suggested_model;   /* the next cheaper model_tiers entry, or NULL (config's) */
        bool dry_run;                  /* enforce = false: would_be says what enforcing would do */
        const char *would_be;          /* "granted", "degraded", "queued", "held" or an error name */
        const char *would_be_reason;   /* a DecisionReason or RefusalReason word, or NULL */
        PowerState power_state;        /* when it was decided */
        unsigned power_factor;         /* permille applied to its priority (1000: none) */
        /* What the estimator learned of the request's class (issue 13), when
         * it has seen one: the expected total (prompt + output, or the
         * learned total without promptTokens), the output, and from how many
         * released allocations. */
        bool has_prediction;
        uint64_t predicted, predicted_output, samples;
        /* The learned prediction was reserved (estimate_source), and the
         * hard multiplier that applied (the class's adaptive one then). */
        bool learned;
        uint32_t hard_permille;
} BudgetGrant;

typedef struct BudgetStats {
        uint64_t n_granted, n_refused, n_abandoned, n_expired;
        uint64_t n_degraded, n_queued, n_queue_timeouts, n_held, n_escalated;
        uint64_t n_pool_degraded_entered, n_breakers_opened, n_terminated;
        uint64_t n_dry_run_overrides; /* requests granted only because enforce = false */
        uint64_t n_power_paused;      /* requests refused or queued because the power state paused them */
        uint64_t n_power_changes;     /* power state changes */
} BudgetStats;

/* The answer to a deferred request: r is 0 with the allocation and how it
 * was granted, -EDQUOT with the refusal, or -ENOMEM. The ticket is gone when
 * this returns. */
typedef void (*TicketDoneFunc)(void *userdata, int r, Allocation *a, const BudgetGrant *grant,
                               const BudgetRefusal *refusal);
/* The earliest time the budget must be woken (budget_wake()), UINT64_MAX for
 * never; called when it changes. */
typedef void (*BudgetWakeFunc)(void *userdata, uint64_t when_usec);
/* A process reached its hard limit under on_hard_limit = "terminate". */
typedef void (*BudgetTerminateFunc)(void *userdata, pid_t pid, uint64_t start_time, uid_t uid,
                                    uint64_t grace_usec);

/* Before a Request: the power readings may be refreshed (budget_set_power()). */
typedef void (*BudgetRefreshFunc)(void *userdata, uint64_t now);

/* Something STATUS= shows changed (allocations, usage). */
typedef void (*BudgetChangedFunc)(void *userdata);

/* config stays owned by the caller and must outlive the budget (or the next
 * budget_set_config()). The ledger's id key comes from the caller (random,
 * new at every start); the scope table's hash key is derived from it. */
int budget_new(const Config *config, Journal *journal, const uint8_t id_key[16], BudgetChangedFunc changed,
               void *userdata, Budget **ret);
/* Where the budget asks to be woken and processes are stopped (the manager). */
void budget_set_hooks(Budget *b, BudgetWakeFunc wake, BudgetTerminateFunc terminate, void *userdata);
void budget_set_refresh_hook(Budget *b, BudgetRefreshFunc refresh, void *userdata);
/* Frees everything; clients must be gone. NULL-safe; returns NULL. */
Budget *budget_free(Budget *b);
/* A new configuration: limits of every scope change at once, runtime limits
 * are dropped, rules apply to new reservations. -ENOMEM: the old rules stay. */
int budget_set_config(Budget *b, const Config *config);

/* The client of a new connection, with its process scope; groups (the
 * peer's supplementary groups, malloc'ed) are taken, also on failure. Reads
 * the cgroup and executable of the process. Returns 0, -ENOMEM, -EUSERS or
 * -ETOOMANYREFS (process_table_connect()). */
int budget_client_new(Budget *b, const Identity *identity, gid_t *groups, size_t n_groups, uint64_t now,
                      Client **ret);
/* The connection is gone: what it left open is settled for cause. */
void budget_client_free(Budget *b, Client *c, SettleCause cause, uint64_t now);
bool budget_client_has_allocations(const Client *c);
/* Whether c may Request onBehalfOf another process: root or a uid in
 * trusted_proxies (issue 14). */
bool budget_client_may_delegate(const Budget *b, const Client *c);
/* The client a trusted proxy's Request onBehalfOf (pid, uid) is charged as:
 * pid's own identity, groups, units and process scope, as if it had
 * connected; kept on proxy (its allocations are the proxy connection's to
 * report, release, and settle when it closes) and reused for the same
 * process. 0, -ESRCH (no such process), -EPERM (its uid is not uid),
 * -EINVAL, -EUSERS / -ETOOMANYREFS (process_table_connect()), -ENOMEM. */
int budget_client_delegate(Budget *b, Client *proxy, pid_t pid, uid_t uid, uint64_t now, Client **ret);
/* Whether the client holds allocations or waits for a deferred answer (then
 * its connection is not idle). */
bool budget_client_busy(const Client *c);

/*
 * Decides a Request (decide.h: the escalation ladder) and reserves, in every
 * scope of the client's chain for the declared agent. Returns 0 with *ret
 * (owned by c) and *ret_grant, -EDQUOT with *ret_refusal filled when refused,
 * -EINPROGRESS with *ret_ticket when the answer comes later (queued or held):
 * set its callback with ticket_set_done() before returning to the loop;
 * or -ENOMEM.
 */
int budget_request(Budget *b, Client *c, const BudgetRequest *req, uint64_t now, Allocation **ret,
                   BudgetGrant *ret_grant, BudgetRefusal *ret_refusal, Ticket **ret_ticket);
void ticket_set_done(Ticket *t, TicketDoneFunc done, void *userdata);
/* The caller went away: the ticket is dropped without an answer. */
void ticket_cancel(Ticket *t);
/* Runs what is due at now: waiters whose wait ended or that may fit now,
 * held requests past escalation.timeout_sec. */
void budget_wake(Budget *b, uint64_t now);

/* Held requests (escalated, on_escalate = "hold"), oldest first: a NULL gives the first. */
Ticket *budget_next_held(const Budget *b, const Ticket *t);
/* The held request with this id (decimal), or NULL. */
Ticket *budget_find_held(const Budget *b, const char *id);
/* An admin's decision: approve with tokens (0: its estimate; at most the
 * estimate), or deny. The ticket is answered now or queued: the pointer is
 * invalid afterwards. */
void budget_approve(Budget *b, Ticket *t, uint64_t tokens, uint64_t now);
void budget_deny(Budget *b, Ticket *t, uint64_t now);
/* The daemon is stopping: every held request is refused (Escalated, reason
 * "shutdown"), with a journal event each; an admin cannot decide them after
 * a restart. */
void budget_refuse_held(Budget *b, uint64_t now);
uint64_t ticket_id(const Ticket *t);
const Identity *ticket_identity(const Ticket *t);
const BudgetRequest *ticket_request(const Ticket *t); /* estimate with the default applied */
Priority ticket_priority(const Ticket *t);
uint64_t ticket_since(const Ticket *t);    /* when it was made */
uint64_t ticket_deadline(const Ticket *t); /* when it times out */
uint64_t ticket_cap(const Ticket *t);      /* the escalation cap it passed */
const char *ticket_scope(const Ticket *t); /* the rule whose cap it passed, or "global" */
size_t budget_n_waiters(const Budget *b);
size_t budget_n_held(const Budget *b);
const BreakerTable *budget_breakers(const Budget *b);
/* What was learned per class (issue 13), for io.tokenbudget.admin.Classes. */
const EstimatorTable *budget_estimator(const Budget *b);
/* Waiters queued for a scope. */
size_t budget_scope_waiters(const LedgerScope *s);
bool budget_enforcing(const Budget *b);
/* Limits changed (SetLimits, a reload): every waiter is tried again now. */
void budget_retry_all(Budget *b, uint64_t now);
/* Re-evaluates the degraded mode of a scope that is in it (its usage may
 * have aged out): for Status. */
void budget_scope_refresh(Budget *b, LedgerScope *s, uint64_t now);
/* The client's allocation with this wire id, or NULL (also for another
 * client's: nobody learns which ids are live by asking). */
Allocation *budget_client_find(Budget *b, const Client *c, const char *id);
/* Cumulative totals; -ERANGE with the field in *ret_bad when one went down
 * or out of range. */
int budget_report(Budget *b, Allocation *a, uint64_t input_tokens, uint64_t output_tokens, uint64_t now,
                  LedgerState *ret_state, const char **ret_bad);
/* Whether the allocation's process is being stopped for its hard limit. */
bool allocation_terminating(const Allocation *a);
/* Final totals (NULL: the last reported) and settlement; a is freed. */
int budget_release(Budget *b, Allocation *a, const uint64_t *input_tokens, const uint64_t *output_tokens,
                   uint64_t now, uint64_t *ret_used, uint64_t *ret_refunded, const char **ret_bad);
/* Settles allocations with no report for limits.allocation_idle_timeout_sec. */
void budget_expire(Budget *b, uint64_t now);
/* Whether the client is an admin (root, the daemon's user, admin_group). */
bool budget_client_is_admin(const Client *c);

/*
 * New power readings (the monitor): the conditions are derived again with
 * hysteresis (power.h). When they change: a journal event with the readings,
 * STATUS= is updated, and every waiter is tried again (a paused priority may
 * go on, a scaled one may get more). Returns whether the conditions changed.
 * budget_set_config() applies new thresholds to the last readings the same way.
 */
bool budget_set_power(Budget *b, const PowerReadings *r, uint64_t now);
typedef struct BudgetPower {
        PowerState state;
        unsigned conditions; /* 1u << PowerState of each active condition */
        const PowerReadings *readings;
        uint64_t since_usec; /* monotonic: when the state was entered (0: at start) */
} BudgetPower;
void budget_power(const Budget *b, BudgetPower *ret);
/* The factor a priority gets now, permille; 0: paused. */
unsigned budget_power_factor(const Budget *b, Priority p);
/* Whether allocations are open or requests wait (the monitor polls then). */
bool budget_busy(const Budget *b);

/* Utilisation of the global pool in permille: the highest of its limited
 * windows' (used + reserved) / limit and of reserved / in-flight cap. */
unsigned budget_global_utilisation_permille(const Budget *b, uint64_t now);
BudgetStats budget_stats(const Budget *b);

/*
 * The durable ledger (issue 12). budget_set_store(): from now on every
 * grant, report and settlement (and every refusal, folded per process per
 * second) is staged in store (NULL: memory only); the manager commits at the
 * commit point. Call before the first client, after budget_set_id_generation().
 */
void budget_set_store(Budget *b, Store *store);
/* Ids unique across restarts: the ledger's generations start at floor
 * (ledger_set_generation_floor()); the high-water mark is staged as the meta
 * value "generation". Before the first allocation. */
void budget_set_id_generation(Budget *b, uint32_t floor);
typedef struct BudgetRestoreStats {
        uint64_t rows, rows_bad;     /* usage rows put back into windows, and refused (out of range) */
        uint64_t scopes, scopes_bad; /* scopes restored, and keys that name none */
        uint64_t scopes_gone;        /* process scopes of processes that have exited */
        uint64_t global_tokens;      /* usage restored into the global scope */
        uint64_t abandoned;          /* allocations open at the last stop, settled now */
        uint64_t breakers;           /* open and half-open runaway breakers put back */
        uint64_t estimator_classes;  /* classes whose learned estimates were put back */
        uint64_t estimator_bad;      /* and the ones not readable (started afresh) */
} BudgetRestoreStats;
/* Puts the store's window usage back into the scopes (the day window's
 * worth, aged by realtime), and settles what was open when the last run
 * ended without settling (a history row and a journal event each). now is
 * monotonic, realtime CLOCK_REALTIME µs. 0 or -errno (of the store). */
int budget_restore(Budget *b, uint64_t now, uint64_t realtime, BudgetRestoreStats *ret);
/* Refusals are staged per process per second: those of seconds before
 * realtime's (all: every one) are staged now. The manager calls it before
 * each commit (all at shutdown). */
void budget_store_flush(Budget *b, uint64_t realtime, bool all);
/* Whether refusals wait to be staged (the manager flushes them later). */
bool budget_store_waiting(const Budget *b);
/* SetLimits with persistent: the change (a mask of 0: forget the target's
 * persistent limits) written to the store at once. 0, or -errno with the
 * reason in *ret_why (-EOPNOTSUPP: memory only). */
int budget_persist_limits(Budget *b, const char *target, const ScopeLimitsChange *change,
                          const char **ret_why);
/* Applies the store's persistent limits (at start, and after every
 * budget_set_config(), which drops runtime limits). Returns how many rows,
 * or -errno. */
int budget_restore_limits(Budget *b);
/* Stagings the store refused (it holds STORE_STAGED_MAX uncommitted writes, or no memory). */
uint64_t budget_store_failures(const Budget *b);

/* For the admin interface. */
Ledger *budget_ledger(const Budget *b);
LedgerScope *budget_global(const Budget *b);
const ProcessTable *budget_processes(const Budget *b);
const ScopeTable *budget_scopes(const Budget *b);
/* Runtime limits (the admin SetLimits): target as scope_table_set_limits()
 * takes, or "process" / "process:PID". Returns the number of tracked scopes
 * changed, -EINVAL (not a scope name), -ENOENT (no such rule or process),
 * -ENOMEM. */
int budget_set_limits(Budget *b, const char *target, const ScopeLimitsChange *change);
/* Settles expired allocations and drops idle scopes. */
void budget_sweep(Budget *b, uint64_t now);
/* Open allocations, oldest first: a NULL gives the first. */
Allocation *budget_next_allocation(const Budget *b, const Allocation *a);

const LedgerAllocation *allocation_ledger(const Allocation *a);
const Identity *allocation_identity(const Allocation *a);
Priority allocation_priority(const Allocation *a);
/* The priority asked for when the rule's ceiling lowered it, else -1. */
int allocation_requested_priority(const Allocation *a);
/* What the agent asked for (or the default), before any clamping. */
uint64_t allocation_estimate(const Allocation *a);
const char *allocation_agent(const Allocation *a);
const char *allocation_task_class(const Allocation *a);
const char *allocation_model(const Allocation *a);
/* The wire id, 16 hex digits. */
void allocation_format_id(const Allocation *a, char buf[static 17]);
