/* SPDX-License-Identifier: MIT */
/*
 * The ledger: budgets ("scopes") as sliding windows of committed tokens plus
 * a cap on tokens in flight, and allocations that reserve their worst case
 * (granted x hard multiplier) in every scope they are charged to, all or
 * nothing. Reports commit usage as it happens; settlement commits the final
 * usage and refunds the rest of the reservation. Usage past the reservation is
 * still committed, never dropped.
 *
 * Pure core: no clock (now_usec is a monotonic time passed in), no I/O, no
 * logging. Every operation is O(scopes of the allocation), never
 * O(allocations). The ledger does not decide which scopes an allocation is
 * charged to (the caller passes the list), nor who owns an allocation.
 *
 * Windows: tokens committed at time t count in a window at every now with
 * now - t <= span (60 s, 3600 s, 86400 s), and leave it no later than span +
 * one bucket (1 s, 60 s, 15 min) after t: windows are kept at bucket
 * granularity and err only on the safe side.
 *
 * Invariants (checked by tests/unit/test-ledger.c):
 *   - for every scope and window: committed in the window + reserved <= limit,
 *     as long as no allocation's usage went past its reservation and no limit
 *     was lowered below what was already reserved; hence, under the same
 *     conditions, the tokens committed in any true interval [x, x + span]
 *     are at most the limit;
 *   - scope reserved == sum over its live allocations of
 *     (reservation - min(used, reservation)), unless unchecked reservations
 *     (ledger_reserve_unchecked()) pushed that sum past 2^64 - 1: then it
 *     stays UINT64_MAX until the scope has no live allocation;
 *   - scope committed_total == sum over its live and settled allocations of used.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct Ledger Ledger;
typedef struct LedgerScope LedgerScope;
typedef struct LedgerAllocation LedgerAllocation;

/* Token counts at or above this are out of range everywhere (protocol and
 * config): 10^12 x a multiplier of at most 5000 permille stays far below 2^63. */
#define LEDGER_TOKENS_MAX UINT64_C(1000000000000)

/* The most scopes one allocation can be charged to: global, user, unit and
 * its slices, process and rules (later issues) fit. */
#define LEDGER_SCOPES_MAX 32

typedef enum LedgerWindow {
        LEDGER_WINDOW_MINUTE,
        LEDGER_WINDOW_HOUR,
        LEDGER_WINDOW_DAY,
        _LEDGER_WINDOW_MAX,
} LedgerWindow;

/* "minute", "hour", "day" */
const char *ledger_window_to_string(LedgerWindow w);
/* The window's span in microseconds (60 s, 3600 s, 86400 s). */
uint64_t ledger_window_span_usec(LedgerWindow w);

typedef struct LedgerLimits {
        uint64_t window_tokens[_LEDGER_WINDOW_MAX]; /* 0: no limit */
        uint64_t in_flight_tokens;                  /* reserved tokens at once; 0: no limit */
        uint64_t max_allocations;                   /* live allocations at once; 0: no limit */
} LedgerLimits;

typedef struct LedgerParams {
        uint32_t warn_permille; /* 1000..hard_permille; 1500 = 1.5x */
        uint32_t hard_permille; /* 1000..5000; 2000 = 2.0x */
        /* 0 or 1000: the window limits as set; 1..999: for this reservation
         * each window limit counts as floor(limit x limit_permille / 1000),
         * at least 1 (the power factor, issue 11). In-flight caps and
         * max_allocations are not scaled. */
        uint32_t limit_permille;
} LedgerParams;

typedef enum LedgerState {
        LEDGER_STATE_OK,
        LEDGER_STATE_WARNING,  /* used >= warn_at */
        LEDGER_STATE_EXCEEDED, /* used >= hard_limit */
} LedgerState;

/* "ok", "warning", "exceeded" */
const char *ledger_state_to_string(LedgerState s);

#define LEDGER_REFUSAL_IN_FLIGHT   (-1) /* limits.in_flight_tokens */
#define LEDGER_REFUSAL_ALLOCATIONS (-2) /* limits.max_allocations: used_tokens is then the count */

/* Why a reservation was refused: the first scope (in the order given) that
 * had no room, and which of its limits. */
typedef struct LedgerRefusal {
        const LedgerScope *scope;
        int window;               /* a LedgerWindow, or LEDGER_REFUSAL_IN_FLIGHT / _ALLOCATIONS */
        uint64_t limit_tokens;    /* the limit that would be passed */
        uint64_t used_tokens;     /* committed in that window (0 for the in-flight cap) */
        uint64_t reserved_tokens; /* reserved in the scope now */
        /* The earliest delay after which the same reservation fits in this
         * window if nothing else changes; 0 when no ageing can make room
         * (reserved plus the reservation pass the limit) and for the
         * in-flight cap. */
        uint64_t retry_after_usec;
} LedgerRefusal;

Ledger *ledger_new(const LedgerParams *params);
/*
 * Keys the allocation ids. Call it once, right after ledger_new() and before
 * the first reservation, with 16 bytes from getrandom(2): ids are then
 * unguessable without the key and independent from one start to the next
 * (n ids over all runs collide with probability about n^2 / 2^65). Without
 * it the key is all zeros and the ids are the same in every run (for tests).
 */
void ledger_set_id_key(Ledger *l, const uint8_t key[16]);
/*
 * Ids unique across restarts (issue 12): with the same key in every run (the
 * durable store keeps it), serials must not repeat. Every slot's generation
 * starts at floor instead of 0 (call it before the first reservation), and
 * ledger_generation_high() is the highest generation handed out: a run that
 * starts at the last run's high + 1 repeats no serial of it, hence no id.
 */
void ledger_set_generation_floor(Ledger *l, uint32_t floor);
uint32_t ledger_generation_high(const Ledger *l);
/* Frees every allocation and every scope still linked to the ledger. NULL-safe. */
Ledger *ledger_free(Ledger *l);
/* Takes effect for allocations granted from now on. */
void ledger_set_params(Ledger *l, const LedgerParams *params);
const LedgerParams *ledger_get_params(const Ledger *l);

/* Scopes. name is copied. Returns NULL on allocation failure. */
LedgerScope *ledger_scope_new(Ledger *l, const char *name, const LedgerLimits *limits);
/* Frees a scope. Returns -EBUSY (and frees nothing) while live allocations are charged to it. */
int ledger_scope_free(Ledger *l, LedgerScope *s);
/* New limits apply to reservations from now on; what is already reserved stays. */
void ledger_scope_set_limits(LedgerScope *s, const LedgerLimits *limits);
const LedgerLimits *ledger_scope_get_limits(const LedgerScope *s);
const char *ledger_scope_name(const LedgerScope *s);
uint64_t ledger_scope_reserved(const LedgerScope *s);
uint64_t ledger_scope_committed_total(const LedgerScope *s);
size_t ledger_scope_n_allocations(const LedgerScope *s); /* live allocations charged to it */
/*
 * Usage committed before this run, from a durable record (issue 12): tokens
 * committed age_usec before now_usec are put in every window they still
 * count in, in the bucket they were committed in, exactly as if they had
 * been committed then (a window of span S counts them until it would have:
 * at most one bucket past S), and committed_total grows by them. Usage too
 * old for any window adds to committed_total only. now_usec must not be
 * before the scope's last commit; age_usec past now_usec counts from time 0.
 * The values come from a file: tokens at or above LEDGER_TOKENS_MAX are
 * refused with -ERANGE (nothing restored), else 0.
 */
int ledger_scope_restore(LedgerScope *s, uint64_t age_usec, uint64_t tokens, uint64_t now_usec);
/* Tokens committed inside window w as of now_usec (ages out old commits). */
uint64_t ledger_scope_window_used(LedgerScope *s, LedgerWindow w, uint64_t now_usec);
/* Microseconds until the oldest tokens in window w leave it (at least 1); 0
 * when the window is empty. */
uint64_t ledger_scope_window_frees_in(LedgerScope *s, LedgerWindow w, uint64_t now_usec);
/* True when no allocation is charged to the scope and every window is empty as
 * of now_usec: dropping the scope then loses nothing. */
bool ledger_scope_is_idle(LedgerScope *s, uint64_t now_usec);
void ledger_scope_set_userdata(LedgerScope *s, void *userdata);
void *ledger_scope_get_userdata(const LedgerScope *s);
/* A second userdata slot, for the scope's wait list (waitq.c). */
void ledger_scope_set_queue(LedgerScope *s, void *queue);
void *ledger_scope_get_queue(const LedgerScope *s);
/* Pool breaker state (degraded mode), kept by the shell (budget.c) with
 * hysteresis; the ledger only stores it. New scopes are not degraded. */
bool ledger_scope_get_degraded(const LedgerScope *s);
void ledger_scope_set_degraded(LedgerScope *s, bool degraded);
/*
 * The scope's utilisation in permille, the highest of (used in the window +
 * reserved) / limit over its limited windows and reserved / in-flight cap
 * (max_allocations does not count). Not capped at 1000 (1500 = 150%: a
 * limit lowered below what is used), rounded down, saturating at
 * UINT32_MAX; 0 when the scope has no token limit. Ages the windows to now_usec.
 */
uint32_t ledger_scope_utilisation_permille(LedgerScope *s, uint64_t now_usec);

/*
 * Reserves granted_tokens x hard multiplier in each of the n_scopes scopes, all
 * or nothing, refusing at a scope's max_allocations live allocations too. 1 <= granted_tokens <
 * LEDGER_TOKENS_MAX, 1 <= n_scopes <= LEDGER_SCOPES_MAX, no scope twice (programming errors otherwise).
 * Returns 0 and the new allocation; -EDQUOT with *ret_refusal filled when a
 * scope has no room (a scope whose reserved total would pass 2^64-1 refuses
 * as an in-flight cap of UINT64_MAX); -ENOMEM.
 */
int ledger_reserve(Ledger *l, LedgerScope *const *scopes, size_t n_scopes, uint64_t granted_tokens,
                   uint64_t now_usec, LedgerAllocation **ret, LedgerRefusal *ret_refusal);
/* The same with this allocation's multipliers instead of the ledger's
 * (params NULL: the ledger's). */
int ledger_reserve_params(Ledger *l, LedgerScope *const *scopes, size_t n_scopes, uint64_t granted_tokens,
                          const LedgerParams *params, uint64_t now_usec, LedgerAllocation **ret,
                          LedgerRefusal *ret_refusal);

/*
 * The most granted tokens, at most want_granted, that ledger_reserve_params(l,
 * scopes, n_scopes, g, params) would accept now: 0 when not even 1 fits (e.g.
 * a scope at max_allocations). When it is less than want_granted,
 * *ret_refusal (may be NULL) is what reserving want_granted would be refused
 * with (the first scope in order without room, its limit, used, reserved and
 * retry_after_usec, exactly as ledger_reserve_params() fills it); otherwise
 * *ret_refusal is left alone. params NULL: the ledger's. Same preconditions
 * as ledger_reserve_params() (1 <= want_granted < LEDGER_TOKENS_MAX). O(n_scopes):
 * windows are aged to now_usec, nothing is reserved.
 */
uint64_t ledger_room(Ledger *l, LedgerScope *const *scopes, size_t n_scopes, const LedgerParams *params,
                     uint64_t want_granted, uint64_t now_usec, LedgerRefusal *ret_refusal);

/*
 * Reserves like ledger_reserve_params() but checks no limit, max_allocations
 * included (the dry run, enforce = false, grants what it would have
 * refused): returns 0 or -ENOMEM. A scope's reserved total saturates at
 * UINT64_MAX instead of wrapping (checked reservations are then refused
 * there, as the in-flight cap of UINT64_MAX); it is exact again once the
 * scope's last allocation is settled.
 */
int ledger_reserve_unchecked(Ledger *l, LedgerScope *const *scopes, size_t n_scopes, uint64_t granted_tokens,
                             const LedgerParams *params, uint64_t now_usec, LedgerAllocation **ret);

/*
 * Records cumulative usage. Both totals must be >= the last ones (-ERANGE
 * otherwise, nothing changes) and < LEDGER_TOKENS_MAX. The increase is
 * committed in every scope at now_usec. Returns 0 and the state.
 */
int ledger_report(Ledger *l, LedgerAllocation *a, uint64_t input_tokens, uint64_t output_tokens,
                  uint64_t now_usec, LedgerState *ret_state);

/*
 * Settles and frees the allocation: commits the final totals as ledger_report()
 * does (-ERANGE if lower than the last; nothing changes then) and refunds what
 * is left of the reservation. Returns 0 with the final used total and the
 * refunded tokens.
 */
int ledger_settle(Ledger *l, LedgerAllocation *a, uint64_t input_tokens, uint64_t output_tokens,
                  uint64_t now_usec, uint64_t *ret_used, uint64_t *ret_refunded);

/* Looks up a live allocation by id; NULL when unknown or already settled. O(1). */
LedgerAllocation *ledger_find(Ledger *l, uint64_t id);
/* Iterates live allocations in grant order: pass NULL to start. */
LedgerAllocation *ledger_next(Ledger *l, LedgerAllocation *prev);
size_t ledger_n_allocations(const Ledger *l);

/* Ids are never 0, not reused for the lifetime of the ledger object, and
 * pseudo-random 64-bit values (a keyed permutation of an internal serial:
 * see ledger_set_id_key()). */
uint64_t ledger_allocation_id(const LedgerAllocation *a);
uint64_t ledger_allocation_granted(const LedgerAllocation *a);
uint64_t ledger_allocation_warn_at(const LedgerAllocation *a);
uint64_t ledger_allocation_hard_limit(const LedgerAllocation *a); /* = the reservation per scope */
uint64_t ledger_allocation_reserved(const LedgerAllocation *a);   /* what is still reserved */
uint64_t ledger_allocation_input_tokens(const LedgerAllocation *a);
uint64_t ledger_allocation_output_tokens(const LedgerAllocation *a);
uint64_t ledger_allocation_used(const LedgerAllocation *a); /* input + output */
uint64_t ledger_allocation_granted_usec(const LedgerAllocation *a);
LedgerState ledger_allocation_state(const LedgerAllocation *a);
size_t ledger_allocation_scopes(const LedgerAllocation *a, LedgerScope *const **ret_scopes);
void ledger_allocation_set_userdata(LedgerAllocation *a, void *userdata);
void *ledger_allocation_get_userdata(const LedgerAllocation *a);
