/* SPDX-License-Identifier: MIT */
/*
 * The escalation ladder (issue 10): what to do with one Request, as a value.
 * The rungs, in order (the first that applies decides):
 *
 *   1. a runaway breaker of the caller is open, or half-open with its one
 *      probe in flight (GATE_OPEN): REFUSE circuit-open;
 *   2. not approved by an admin and estimate > escalate_cap = max_request_tokens
 *      x escalate_permille / 1000 (rounded down): HOLD (on_escalate "hold") or
 *      REFUSE escalated ("refuse");
 *   2b. the power state pauses this priority: WAIT (wait_usec > 0) or REFUSE
 *      power-paused (issue 11; after escalation, which retrying cannot cure);
 *   3. target = min(estimate, cap) where cap = max_request_tokens scaled by
 *      the power factor (reason request-cap, or power when the factor made
 *      the cap bind), or the approved tokens (reason approved); min_tokens =
 *      min(min_tokens or target, target);
 *   4. a scope of the chain in degraded mode: background WAITs (wait_usec > 0)
 *      or is REFUSEd pool-degraded; normal aims at its min_tokens when it gave
 *      one, else at half the target (at least 1), reason pool-degraded;
 *      interactive is unchanged;
 *   5. waiters of the same or a higher priority queued for a scope of the
 *      chain (and this is not the head waiter being retried): WAIT or REFUSE
 *      queued-ahead (the starvation rule: a head waiter gets what frees up);
 *   6. room = the most that fits now (the callback, ledger_room()): GRANT the
 *      target when it fits, else GRANT room when room >= min_tokens (reason
 *      budget), else WAIT (wait_usec > 0) or REFUSE budget.
 *
 * What the shell does with it (reserving, queueing, holding, replying, the
 * dry run that grants the estimate anyway) is not decided here. Pure: no
 * clock, no I/O; the only call out is the room callback, at most once.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

typedef enum DecisionKind {
        DECISION_GRANT,
        DECISION_WAIT,
        DECISION_HOLD,
        DECISION_REFUSE,
        _DECISION_KIND_MAX,
} DecisionKind;

/* "grant", "wait", "hold", "refuse"; NULL out of range. */
const char *decision_kind_to_string(DecisionKind k);

/* Why a grant is below the estimate. */
typedef enum DecisionReason {
        REASON_NONE,
        REASON_REQUEST_CAP,
        REASON_BUDGET,
        REASON_POOL_DEGRADED,
        REASON_APPROVED,
        REASON_POWER, /* the power factor lowered the request cap */
        _DECISION_REASON_MAX,
} DecisionReason;

/* NULL (REASON_NONE and out of range), "request-cap", "budget",
 * "pool-degraded", "approved", "power": the Request reply's reason. */
const char *decision_reason_to_string(DecisionReason r);

/* Why a request is refused (or, for a WAIT, what its timeout will say). */
typedef enum RefusalReason {
        REFUSE_BUDGET,        /* the ledger: see the room refusal */
        REFUSE_POOL_DEGRADED, /* background in degraded mode */
        REFUSE_QUEUED_AHEAD,  /* the starvation rule */
        REFUSE_ESCALATED,     /* above escalate x cap, on_escalate refuse */
        REFUSE_CIRCUIT_OPEN,  /* a runaway breaker */
        REFUSE_POWER_PAUSED,  /* the power state pauses the priority */
        _REFUSAL_REASON_MAX,
} RefusalReason;

/* "budget", "pool-degraded", "queued-ahead", "escalated", "circuit-open",
 * "power-paused"; NULL out of range. */
const char *refusal_reason_to_string(RefusalReason r);

/* The caller's runaway breakers, combined: all closed; half-open with no
 * probe in flight (this request may be the probe: it goes through the
 * ladder like any other, and the shell marks the probe started if it is
 * granted); open, or half-open with the probe in flight. */
typedef enum BreakerGate {
        GATE_CLOSED,
        GATE_PROBE,
        GATE_OPEN,
} BreakerGate;

typedef struct DecideInput {
        uint64_t estimate;           /* >= 1, default applied */
        uint64_t min_tokens;         /* 0: not given (= target) */
        uint64_t wait_usec;          /* 0: no waiting */
        Priority priority;           /* after the rule's ceiling */
        uint64_t max_request_tokens; /* >= 1 */
        uint32_t escalate_permille;  /* >= 1000 */
        EscalateAction on_escalate;
        bool approved;            /* an admin approved it: rung 2 skipped */
        uint64_t approved_tokens; /* 1..estimate when approved (clamped to that) */
        bool retry;               /* the head waiter retried: rung 5 skipped */
        bool pool_degraded;       /* a scope of the chain is in degraded mode */
        bool queued_ahead;        /* rung 5's condition, computed by the caller */
        BreakerGate gate;
        /* The power state (issue 11), for this priority: paused (rung 2b), or
         * the request cap scaled by power_permille (0 or 1000: unscaled; the
         * caller scales the window limits, through LedgerParams). */
        bool power_paused;
        uint32_t power_permille;
} DecideInput;

/* The most granted tokens <= want that fit now (ledger_room()); a larger
 * answer is taken as want. */
typedef uint64_t (*DecideRoomFunc)(uint64_t want, void *userdata);

typedef struct Decision {
        DecisionKind kind;
        uint64_t granted;      /* GRANT: 1..estimate; 0 otherwise */
        uint64_t target;       /* what rung 6 aimed for (0 when rung 1 or 2 decided) */
        uint64_t min_tokens;   /* the least it may get (WAIT: what must fit); 0 when rung 1 or 2 decided */
        DecisionReason reason; /* GRANT: REASON_NONE when granted == estimate; NONE otherwise */
        RefusalReason refusal; /* REFUSE; for WAIT, what a timeout will say; REFUSE_BUDGET otherwise */
        uint64_t escalate_cap; /* max_request_tokens x escalate_permille / 1000, always filled */
} Decision;

/* Runs the ladder. room is called at most once, only when rung 6 is reached. */
void decide(const DecideInput *in, DecideRoomFunc room, void *userdata, Decision *ret);
