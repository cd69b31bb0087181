/* SPDX-License-Identifier: MIT */
/*
 * The escalation ladder as a pure function (see decide.h for the rungs).
 * Each rung is a small function that either settles the decision (returns
 * true) or narrows what the next rung aims for. The ledger is asked only at
 * the last rung, through the caller's room callback, so every earlier rung
 * costs nothing and the table-driven test can play the ledger with a number.
 */
#include <assert.h>
#include <stddef.h>

#include "decide.h"
#include "power.h"

const char *decision_kind_to_string(DecisionKind k) {
        static const char *const names[] = {
                [DECISION_GRANT] = "grant",
                [DECISION_WAIT] = "wait",
                [DECISION_HOLD] = "hold",
                [DECISION_REFUSE] = "refuse",
        };

        if ((unsigned)k >= _DECISION_KIND_MAX)
                return NULL;
        return names[k];
}

const char *decision_reason_to_string(DecisionReason r) {
        static const char *const names[] = {
                [REASON_NONE] = NULL,           [REASON_REQUEST_CAP] = "request-cap",
                [REASON_BUDGET] = "budget",     [REASON_POOL_DEGRADED] = "pool-degraded",
                [REASON_APPROVED] = "approved", [REASON_POWER] = "power",
        };

        if ((unsigned)r >= _DECISION_REASON_MAX)
                return NULL;
        return names[r];
}

const char *refusal_reason_to_string(RefusalReason r) {
        static const char *const names[] = {
                [REFUSE_BUDGET] = "budget",
                [REFUSE_POOL_DEGRADED] = "pool-degraded",
                [REFUSE_QUEUED_AHEAD] = "queued-ahead",
                [REFUSE_ESCALATED] = "escalated",
                [REFUSE_CIRCUIT_OPEN] = "circuit-open",
                [REFUSE_POWER_PAUSED] = "power-paused",
        };

        if ((unsigned)r >= _REFUSAL_REASON_MAX)
                return NULL;
        return names[r];
}

static uint64_t min_u64(uint64_t a, uint64_t b) {
        return a < b ? a : b;
}

static uint64_t max_u64(uint64_t a, uint64_t b) {
        return a > b ? a : b;
}

/* Tokens below 10^12 times at most 10000 permille: the product fits, but
 * saturate anyway rather than trust the caller's ranges. */
static uint64_t escalate_cap(uint64_t cap_tokens, uint32_t permille) {
        if (permille != 0 && cap_tokens > UINT64_MAX / permille)
                return UINT64_MAX / 1000;
        return cap_tokens * permille / 1000;
}

/* A request that cannot be granted now: it waits when it asked to, else it
 * is refused, and refusal is what it says either way. */
static void wait_or_refuse(const DecideInput *in, RefusalReason refusal, Decision *d) {
        d->kind = in->wait_usec > 0 ? DECISION_WAIT : DECISION_REFUSE;
        d->refusal = refusal;
}

/* Rungs 1, 2 and 2b: the breaker gate, escalation and the power pause. */
static bool rung_gate_and_escalation(const DecideInput *in, Decision *d) {
        if (in->gate == GATE_OPEN) {
                d->kind = DECISION_REFUSE;
                d->refusal = REFUSE_CIRCUIT_OPEN;
                return true;
        }
        if (!in->approved && in->estimate > d->escalate_cap) {
                if (in->on_escalate == ESCALATE_HOLD)
                        d->kind = DECISION_HOLD;
                else {
                        d->kind = DECISION_REFUSE;
                        d->refusal = REFUSE_ESCALATED;
                }
                return true;
        }
        if (in->power_paused) {
                wait_or_refuse(in, REFUSE_POWER_PAUSED, d);
                return true;
        }
        return false;
}

/* Rung 3: the request cap (scaled by the power factor), or the admin's
 * approval, sets the target. */
static void rung_target(const DecideInput *in, Decision *d) {
        if (in->approved) {
                d->target = min_u64(max_u64(in->approved_tokens, 1), in->estimate);
                if (d->target < in->estimate)
                        d->reason = REASON_APPROVED;
        } else {
                uint64_t cap = power_scale(in->max_request_tokens, in->power_permille ?: POWER_FACTOR_ONE);

                d->target = min_u64(in->estimate, cap);
                if (d->target < in->estimate)
                        d->reason = cap < in->max_request_tokens && in->estimate > cap ? REASON_POWER
                                                                                       : REASON_REQUEST_CAP;
        }
        d->min_tokens = in->min_tokens != 0 ? min_u64(in->min_tokens, d->target) : d->target;
}

/* Rung 4: the pool breaker. The reason changes only when it lowers the
 * target (a normal request whose minTokens is its target is not degraded). */
static bool rung_pool(const DecideInput *in, Decision *d) {
        uint64_t target;

        if (!in->pool_degraded)
                return false;

        switch (in->priority) {
        case PRIORITY_BACKGROUND:
                wait_or_refuse(in, REFUSE_POOL_DEGRADED, d);
                return true;
        case PRIORITY_NORMAL:
                target = in->min_tokens != 0 ? d->min_tokens : max_u64(1, d->target / 2);
                if (target < d->target) {
                        d->target = target;
                        d->reason = REASON_POOL_DEGRADED;
                }
                d->min_tokens = min_u64(d->min_tokens, d->target);
                return false;
        default:
                return false;
        }
}

/* Rung 5: the starvation rule. */
static bool rung_queue(const DecideInput *in, Decision *d) {
        if (in->retry || !in->queued_ahead)
                return false;
        wait_or_refuse(in, REFUSE_QUEUED_AHEAD, d);
        return true;
}

/* Rung 6: the ledger. */
static void rung_room(const DecideInput *in, DecideRoomFunc room, void *userdata, Decision *d) {
        uint64_t fits = min_u64(room(d->target, userdata), d->target);

        if (fits >= d->target)
                d->granted = d->target;
        else if (fits >= d->min_tokens) {
                d->granted = fits;
                d->reason = REASON_BUDGET;
        } else {
                wait_or_refuse(in, REFUSE_BUDGET, d);
                return;
        }
        d->kind = DECISION_GRANT;
        if (d->granted == in->estimate)
                d->reason = REASON_NONE;
}

void decide(const DecideInput *in, DecideRoomFunc room, void *userdata, Decision *ret) {
        Decision d = {
                .kind = DECISION_REFUSE,
                .reason = REASON_NONE,
                .refusal = REFUSE_BUDGET,
        };

        assert(in);
        assert(room);
        assert(ret);
        assert(in->estimate >= 1);
        assert(in->max_request_tokens >= 1);
        assert((unsigned)in->priority < _PRIORITY_MAX);

        d.escalate_cap = escalate_cap(in->max_request_tokens, in->escalate_permille);
        if (rung_gate_and_escalation(in, &d))
                goto done;
        rung_target(in, &d);
        if (rung_pool(in, &d) || rung_queue(in, &d))
                goto done;
        rung_room(in, room, userdata, &d);
done:
        /* Only a grant carries a degrade reason. */
        if (d.kind != DECISION_GRANT)
                d.reason = REASON_NONE;
        *ret = d;
}
