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

#include "config.h"
#include "identity.h"
#include "journal.h"
#include "ledger.h"
#include "process.h"
#include "scopes.h"

typedef struct Budget Budget;
typedef struct Client Client;
typedef struct Allocation Allocation;

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
} BudgetRequest;

typedef enum BudgetRefusalKind {
        REFUSAL_BUDGET,      /* a scope has no room: ledger */
        REFUSAL_ALLOCATIONS, /* a scope holds its most allocations: limit, scope */
        REFUSAL_SCOPES,      /* no budget can be kept for the caller: limit, scope */
} BudgetRefusalKind;

typedef struct BudgetRefusal {
        BudgetRefusalKind kind;
        LedgerRefusal ledger;
        uint64_t limit;
        char scope[512];
} BudgetRefusal;

typedef struct BudgetStats {
        uint64_t n_granted, n_refused, n_abandoned, n_expired;
} BudgetStats;

/* Something STATUS= shows changed (allocations, usage). */
typedef void (*BudgetChangedFunc)(void *userdata);

/* config stays owned by the caller and must outlive the budget (or the next
 * budget_set_config()). The ledger's id key comes from the caller (random,
 * new at every start); the scope table's hash key is derived from it. */
int budget_new(const Config *config, Journal *journal, const uint8_t id_key[16], BudgetChangedFunc changed,
               void *userdata, Budget **ret);
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

/*
 * Reserves for a Request, in every scope of the client's chain for the
 * declared agent. Returns 0 with *ret (owned by c), -EDQUOT with
 * *ret_refusal filled when refused, or -ENOMEM.
 */
int budget_request(Budget *b, Client *c, const BudgetRequest *req, uint64_t now, Allocation **ret,
                   BudgetRefusal *ret_refusal);
/* The client's allocation with this wire id, or NULL (also for another
 * client's: nobody learns which ids are live by asking). */
Allocation *budget_client_find(Budget *b, const Client *c, const char *id);
/* Cumulative totals; -ERANGE with the field in *ret_bad when one went down
 * or out of range. */
int budget_report(Budget *b, Allocation *a, uint64_t input_tokens, uint64_t output_tokens, uint64_t now,
                  LedgerState *ret_state, const char **ret_bad);
/* Final totals (NULL: the last reported) and settlement; a is freed. */
int budget_release(Budget *b, Allocation *a, const uint64_t *input_tokens, const uint64_t *output_tokens,
                   uint64_t now, uint64_t *ret_used, uint64_t *ret_refunded, const char **ret_bad);
/* Settles allocations with no report for limits.allocation_idle_timeout_sec. */
void budget_expire(Budget *b, uint64_t now);
/* Whether the client is an admin (root, the daemon's user, admin_group). */
bool budget_client_is_admin(const Client *c);

/* Utilisation of the global pool in permille: the highest of its limited
 * windows' (used + reserved) / limit and of reserved / in-flight cap. */
unsigned budget_global_utilisation_permille(const Budget *b, uint64_t now);
BudgetStats budget_stats(const Budget *b);

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
