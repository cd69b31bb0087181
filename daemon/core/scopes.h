/* SPDX-License-Identifier: MIT */
/*
 * Named scopes and the scope chain of a caller.
 *
 * The ScopeTable holds the global scope and every user, slice, unit, agent
 * and rule scope by name, each a ledger scope with a kind, the uid it belongs
 * to (for who may see it) and the limits that apply to it: its kind's
 * defaults from the config (or its rule's limits), then any runtime change
 * (scope_table_set_limits(): for a kind, a rule, or one name), kept until the
 * next configuration. Process scopes live in the ProcessTable; the chain
 * takes the caller's.
 *
 * A ScopeChain is one connection's list of scopes to charge, built on first
 * use: global, user:UID, the slices and unit of its cgroup, its process, and
 * the rules that match whatever the agent; then, per declared agent name,
 * agent:UID:NAME and the rules that match that name (the last name is cached,
 * so a connection that keeps one name pays for matching once). A new
 * configuration makes every chain rebuild at its next use.
 *
 * Entries referenced by no chain linger while their windows hold usage or an
 * allocation is charged to them, so reconnecting resets nothing; idle ones
 * are dropped by scope_table_sweep() and when the table is full. The table is
 * bounded (limits.max_tracked_scopes in total, max_tracked_scopes_per_uid for
 * the entries one non-admin uid creates); usage is never dropped to make
 * room.
 *
 * Pure: no clock, no I/O.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "ledger.h"
#include "rules.h"

typedef enum ScopeKind {
        SCOPE_GLOBAL,
        SCOPE_USER,
        SCOPE_SLICE,
        SCOPE_UNIT,
        SCOPE_PROCESS,
        SCOPE_AGENT,
        SCOPE_RULE,
        _SCOPE_KIND_MAX,
} ScopeKind;

const char *scope_kind_to_string(ScopeKind k);
int scope_kind_from_string(const char *s);

typedef struct ScopeTable ScopeTable;
typedef struct ScopeEntry ScopeEntry;
typedef struct ScopeChain ScopeChain;

/* config must outlive the table or the next scope_table_set_config(). */
ScopeTable *scope_table_new(Ledger *ledger, const Config *config);
/* Keys the name hash; call once, before the first chain, with 16 random
 * bytes (without it the key is all zeros, for tests). */
void scope_table_set_hash_key(ScopeTable *t, const uint8_t key[16]);
/* Frees every entry (and its ledger scope). Chains must be gone. NULL-safe. */
ScopeTable *scope_table_free(ScopeTable *t);
/* A new configuration: defaults and rule limits apply to every entry at once,
 * runtime changes are dropped, chains rebuild at their next use. Returns 0 or
 * -ENOMEM (then the old rules stay in force). */
int scope_table_set_config(ScopeTable *t, const Config *config);

LedgerScope *scope_table_global(const ScopeTable *t);
const RuleSet *scope_table_rules(const ScopeTable *t);
/* Tracked entries, the global one excluded. */
size_t scope_table_size(const ScopeTable *t);
/* Entries created by uid (a non-admin's share). */
size_t scope_table_uid_count(const ScopeTable *t, uid_t uid);
/* Iterates all entries, global first: NULL starts. */
ScopeEntry *scope_table_next(const ScopeTable *t, const ScopeEntry *e);
/* Drops lingering entries that are idle as of now. */
void scope_table_sweep(ScopeTable *t, uint64_t now);

LedgerScope *scope_entry_scope(const ScopeEntry *e);
ScopeKind scope_entry_kind(const ScopeEntry *e);
/* The uid it belongs to, or -1 for a shared scope. */
int64_t scope_entry_owner(const ScopeEntry *e);
/* Whether a ledger scope is one of the table's, and its entry. */
ScopeEntry *scope_table_entry_of(const LedgerScope *s);
/* What tells entries of one name apart (0 for most; see scope_table_restore()). */
uint64_t scope_entry_discriminator(const ScopeEntry *e);

/*
 * The entry of a name as a previous run of the daemon kept it (the durable
 * ledger restores window usage into it): found, or created unreferenced and
 * lingering (dropped once idle, like any entry no chain holds) with its
 * kind's or rule's limits. Not counted in any uid's share. Returns 0 with
 * *ret, -EINVAL (SCOPE_PROCESS or SCOPE_GLOBAL, which are not the table's
 * to create), -EUSERS (the table is full) or -ENOMEM.
 */
int scope_table_restore(ScopeTable *t, ScopeKind kind, const char *name, uint64_t discriminator,
                        int64_t owner, uint64_t now, LedgerScope **ret);

/* A partial set of limits: only the fields whose SCOPE_LIMIT_* bit is set. */
enum {
        SCOPE_LIMIT_MINUTE = 1u << LEDGER_WINDOW_MINUTE,
        SCOPE_LIMIT_HOUR = 1u << LEDGER_WINDOW_HOUR,
        SCOPE_LIMIT_DAY = 1u << LEDGER_WINDOW_DAY,
        SCOPE_LIMIT_IN_FLIGHT = 1u << 3,
        SCOPE_LIMIT_ALLOCATIONS = 1u << 4,
};

typedef struct ScopeLimitsChange {
        unsigned mask;
        LedgerLimits values;
} ScopeLimitsChange;

/* Applies a change to limits. */
void scope_limits_apply(LedgerLimits *limits, const ScopeLimitsChange *change);

/*
 * Runtime limits: target is a scope name ("user:1000", "rule:nightly",
 * "rule:nightly:1000", "global") or a kind's defaults ("user", "slice",
 * "unit", "agent"). Process targets ("process", "process:PID") are the
 * caller's (ProcessTable). Returns the number of tracked entries changed
 * now, -EINVAL for a target that is not a scope name, -ENOENT for a rule
 * that does not exist, -ENOMEM.
 */
int scope_table_set_limits(ScopeTable *t, const char *target, const ScopeLimitsChange *change);

/* Why a chain could not be resolved (-EUSERS, -ETOOMANYREFS, -E2BIG). */
typedef struct ScopeFailure {
        uint64_t limit;  /* the limit reached */
        char scope[512]; /* the scope that did not fit */
} ScopeFailure;

/* principal must outlive the chain (the caller owns both). process is the
 * caller's process scope. admin: exempt from the per-uid share. */
ScopeChain *scope_chain_new(ScopeTable *t, const Principal *principal, LedgerScope *process, bool admin);
void scope_chain_free(ScopeTable *t, ScopeChain *c, uint64_t now);

/*
 * The scopes to charge for a request declaring agent (NULL: none), in chain
 * order, and the settings that apply. The arrays stay valid until the next
 * call on c or scope_table_set_config(). Returns 0, -ENOMEM, -EUSERS (the
 * table is full), -ETOOMANYREFS (the uid has its share) or -E2BIG (more than
 * LEDGER_SCOPES_MAX scopes), the last three with *ret_failure filled.
 */
int scope_chain_resolve(ScopeTable *t, ScopeChain *c, const char *agent, uint64_t now,
                        LedgerScope *const **ret_scopes, size_t *ret_n, const RuleEffective **ret_effective,
                        ScopeFailure *ret_failure);
