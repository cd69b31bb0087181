/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for daemon/core/decide.c, the escalation ladder: one table row
 * per case, each naming the rung it exercises, with the full expected
 * Decision and whether (and with what) the room callback was asked. Rungs
 * alone, their order (the breaker before escalation before the pool before
 * the queue before the ledger), combinations (cap + budget, pool + min,
 * approved + budget, the probe gate) and boundaries (an estimate of exactly
 * cap x multiplier is not escalated, room of exactly minTokens grants). A
 * seeded run then checks the invariants on random inputs. The dry run is the
 * caller's (it decides the same way, then grants the estimate): nothing here.
 */
#include <check.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>

#include "decide.h"
#include "splitmix64.h"
#include "tb-check.h"

#define N_ROWS(t) (sizeof(t) / sizeof((t)[0]))
#define INF       UINT64_MAX /* the room callback: everything fits */
#define NO_CALL   UINT64_MAX /* expected want: the callback is not called */

/* ck_assert_msg() for the random runs' hundreds of thousands of checks:
 * Check's asserts report each passing one to the parent process (a write
 * each), which makes a run many times slower; this reports only a failure. */
#define CHECK(cond, ...)                                                                                    \
        do {                                                                                                \
                if (!(cond))                                                                                \
                        ck_abort_msg(__VA_ARGS__);                                                          \
        } while (0)

/* What a row expects: the Decision, and the room callback's argument
 * (NO_CALL: not called). escalate_cap is checked on every row against
 * max_request_tokens x escalate_permille / 1000. */
typedef struct Expect {
        DecisionKind kind;
        uint64_t granted, target, min_tokens;
        DecisionReason reason;
        RefusalReason refusal;
        uint64_t want;
} Expect;

#define GRANT(g, t, m, r, w)                                                                                \
        { DECISION_GRANT, g, t, m, REASON_##r, REFUSE_BUDGET, w }
#define WAIT(f, t, m, w)                                                                                    \
        { DECISION_WAIT, 0, t, m, REASON_NONE, REFUSE_##f, w }
#define REFUSE(f, t, m, w)                                                                                  \
        { DECISION_REFUSE, 0, t, m, REASON_NONE, REFUSE_##f, w }
/* Refused by rung 1 or 2: no target yet. */
#define REFUSE_EARLY(f)                                                                                     \
        { DECISION_REFUSE, 0, 0, 0, REASON_NONE, REFUSE_##f, NO_CALL }
#define HOLD                                                                                                \
        { DECISION_HOLD, 0, 0, 0, REASON_NONE, REFUSE_BUDGET, NO_CALL }

typedef struct Row {
        const char *name;
        /* Unset (0) max_request_tokens and escalate_permille mean 1000 and
         * 2500 (escalate cap 2500); priority 0 is interactive, so rows say
         * N (normal) or B (background) when they mean it. */
        DecideInput in;
        uint64_t room; /* what the callback answers */
        Expect expect;
} Row;

#define N PRIORITY_NORMAL
#define B PRIORITY_BACKGROUND
#define I PRIORITY_INTERACTIVE

/* Each row: name, input, room, then GRANT(granted, target, min_tokens,
 * reason, want), WAIT(refusal, target, min_tokens, want), REFUSE(refusal,
 * target, min_tokens, want), REFUSE_EARLY(refusal) or HOLD. */
/* clang-format off */
static const Row rows[] = {
        /* rung 1: the runaway breaker */
        {"1 open refuses",
         {.estimate = 100, .priority = N, .gate = GATE_OPEN},
         INF, REFUSE_EARLY(CIRCUIT_OPEN)},
        {"1 open refuses even when it would wait",
         {.estimate = 100, .wait_usec = 5, .priority = N, .gate = GATE_OPEN},
         INF, REFUSE_EARLY(CIRCUIT_OPEN)},
        {"1 open before escalation",
         {.estimate = 9000, .on_escalate = ESCALATE_HOLD, .priority = N, .gate = GATE_OPEN},
         INF, REFUSE_EARLY(CIRCUIT_OPEN)},
        {"1 open refuses an approved request",
         {.estimate = 9000, .approved = true, .approved_tokens = 9000, .priority = N, .gate = GATE_OPEN},
         INF, REFUSE_EARLY(CIRCUIT_OPEN)},
        {"1 open refuses interactive retried",
         {.estimate = 100, .priority = I, .retry = true, .gate = GATE_OPEN},
         INF, REFUSE_EARLY(CIRCUIT_OPEN)},
        {"1 probe goes through",
         {.estimate = 100, .priority = N, .gate = GATE_PROBE},
         INF, GRANT(100, 100, 100, NONE, 100)},
        {"1 probe is degraded like any",
         {.estimate = 100, .min_tokens = 50, .priority = N, .gate = GATE_PROBE},
         60, GRANT(60, 100, 50, BUDGET, 100)},
        {"1 probe waits like any",
         {.estimate = 100, .wait_usec = 1, .priority = N, .gate = GATE_PROBE},
         99, WAIT(BUDGET, 100, 100, 100)},
        {"1 probe is escalated like any",
         {.estimate = 2501, .priority = N, .gate = GATE_PROBE},
         INF, REFUSE_EARLY(ESCALATED)},

        /* rung 2b: the power pause; rung 3: the power-scaled cap */
        {"2b paused refuses",
         {.estimate = 100, .priority = B, .power_paused = true},
         INF, REFUSE_EARLY(POWER_PAUSED)},
        {"2b paused waits when asked to",
         {.estimate = 100, .wait_usec = 5, .priority = B, .power_paused = true},
         INF, {DECISION_WAIT, 0, 0, 0, REASON_NONE, REFUSE_POWER_PAUSED, NO_CALL}},
        {"2b paused even when approved",
         {.estimate = 100, .approved = true, .approved_tokens = 100, .priority = N, .power_paused = true},
         INF, REFUSE_EARLY(POWER_PAUSED)},
        {"2b after the breaker",
         {.estimate = 100, .priority = N, .power_paused = true, .gate = GATE_OPEN},
         INF, REFUSE_EARLY(CIRCUIT_OPEN)},
        {"2b after escalation",
         {.estimate = 2501, .priority = N, .power_paused = true},
         INF, REFUSE_EARLY(ESCALATED)},
        {"2b before the queue (a retried head waiter is paused too)",
         {.estimate = 100, .wait_usec = 1, .priority = B, .retry = true, .power_paused = true},
         INF, {DECISION_WAIT, 0, 0, 0, REASON_NONE, REFUSE_POWER_PAUSED, NO_CALL}},
        {"3 power halves the cap",
         {.estimate = 800, .priority = B, .power_permille = 500},
         INF, GRANT(500, 500, 500, POWER, 500)},
        {"3 power: below the scaled cap nothing changes",
         {.estimate = 400, .priority = B, .power_permille = 500},
         INF, GRANT(400, 400, 400, NONE, 400)},
        {"3 power binds even above the plain cap",
         {.estimate = 2000, .priority = B, .power_permille = 500},
         INF, GRANT(500, 500, 500, POWER, 500)},
        {"3 power 1000 is the plain cap",
         {.estimate = 2000, .priority = N, .power_permille = 1000},
         INF, GRANT(1000, 1000, 1000, REQUEST_CAP, 1000)},
        {"3 power: minTokens above the scaled cap is lowered to it",
         {.estimate = 900, .min_tokens = 800, .priority = N, .power_permille = 500},
         INF, GRANT(500, 500, 500, POWER, 500)},
        {"3 power does not scale an approval",
         {.estimate = 9000, .approved = true, .approved_tokens = 3000, .priority = N, .power_permille = 500},
         INF, GRANT(3000, 3000, 3000, APPROVED, 3000)},
        {"3 power: the scaled cap is at least 1",
         {.estimate = 2, .max_request_tokens = 1, .priority = B, .power_permille = 1},
         INF, GRANT(1, 1, 1, REQUEST_CAP, 1)},
        {"3 power then the room degrades further",
         {.estimate = 800, .min_tokens = 100, .priority = N, .power_permille = 500},
         300, GRANT(300, 500, 100, BUDGET, 500)},

        /* rung 2: escalation (cap 1000 x 2.5 = 2500) */
        {"2 exactly cap x multiplier is not escalated",
         {.estimate = 2500, .priority = N},
         INF, GRANT(1000, 1000, 1000, REQUEST_CAP, 1000)},
        {"2 one above is refused",
         {.estimate = 2501, .priority = N},
         INF, REFUSE_EARLY(ESCALATED)},
        {"2 one above is held",
         {.estimate = 2501, .on_escalate = ESCALATE_HOLD, .priority = N},
         INF, HOLD},
        {"2 refused at once though it would wait",
         {.estimate = 2501, .wait_usec = 9, .priority = N},
         INF, REFUSE_EARLY(ESCALATED)},
        {"2 before the pool and the queue",
         {.estimate = 2501, .on_escalate = ESCALATE_HOLD, .priority = B, .pool_degraded = true,
          .queued_ahead = true},
         INF, HOLD},
        {"2 a retry is escalated too",
         {.estimate = 2501, .priority = N, .retry = true},
         INF, REFUSE_EARLY(ESCALATED)},
        {"2 cap rounded down: 999 x 1.5 = 1498 passes",
         {.estimate = 1498, .priority = N, .max_request_tokens = 999, .escalate_permille = 1500},
         INF, GRANT(999, 999, 999, REQUEST_CAP, 999)},
        {"2 cap rounded down: 1499 is escalated",
         {.estimate = 1499, .priority = N, .max_request_tokens = 999, .escalate_permille = 1500},
         INF, REFUSE_EARLY(ESCALATED)},
        {"2 multiplier 1.0: the cap itself passes",
         {.estimate = 1000, .priority = N, .escalate_permille = 1000},
         INF, GRANT(1000, 1000, 1000, NONE, 1000)},
        {"2 multiplier 1.0: one above the cap is escalated",
         {.estimate = 1001, .priority = N, .escalate_permille = 1000},
         INF, REFUSE_EARLY(ESCALATED)},
        {"2 multiplier 10.0",
         {.estimate = 10001, .priority = N, .escalate_permille = 10000},
         INF, REFUSE_EARLY(ESCALATED)},
        {"2 approved skips escalation, above the cap",
         {.estimate = 5000, .priority = N, .approved = true, .approved_tokens = 5000},
         INF, GRANT(5000, 5000, 5000, NONE, 5000)},
        {"2 approved fewer tokens",
         {.estimate = 5000, .priority = N, .approved = true, .approved_tokens = 3000},
         INF, GRANT(3000, 3000, 3000, APPROVED, 3000)},
        {"2 approved more than the estimate is the estimate",
         {.estimate = 5000, .priority = N, .approved = true, .approved_tokens = 9000},
         INF, GRANT(5000, 5000, 5000, NONE, 5000)},
        {"2 approved 0 tokens is 1",
         {.estimate = 5000, .priority = N, .approved = true},
         INF, GRANT(1, 1, 1, APPROVED, 1)},
        {"2 approved + budget",
         {.estimate = 5000, .min_tokens = 1000, .priority = N, .approved = true, .approved_tokens = 3000},
         2000, GRANT(2000, 3000, 1000, BUDGET, 3000)},
        {"2 approved + budget short without minTokens",
         {.estimate = 5000, .priority = N, .approved = true, .approved_tokens = 3000},
         2999, REFUSE(BUDGET, 3000, 3000, 3000)},
        {"2 approved + budget short waits",
         {.estimate = 5000, .wait_usec = 7, .priority = N, .approved = true, .approved_tokens = 3000},
         2999, WAIT(BUDGET, 3000, 3000, 3000)},
        {"2 approved + pool degraded normal",
         {.estimate = 1000, .priority = N, .approved = true, .approved_tokens = 600, .pool_degraded = true},
         INF, GRANT(300, 300, 300, POOL_DEGRADED, 300)},
        {"2 approved + queued ahead",
         {.estimate = 5000, .priority = N, .approved = true, .approved_tokens = 3000, .queued_ahead = true},
         INF, REFUSE(QUEUED_AHEAD, 3000, 3000, NO_CALL)},

        /* rung 3: the request cap and minTokens */
        {"3 below the cap, full grant",
         {.estimate = 500, .priority = N},
         INF, GRANT(500, 500, 500, NONE, 500)},
        {"3 exactly the cap is not clamped",
         {.estimate = 1000, .priority = N},
         INF, GRANT(1000, 1000, 1000, NONE, 1000)},
        {"3 one above the cap is clamped",
         {.estimate = 1001, .priority = N},
         INF, GRANT(1000, 1000, 1000, REQUEST_CAP, 1000)},
        {"3 minTokens above the target is the target",
         {.estimate = 2000, .min_tokens = 1500, .priority = N},
         INF, GRANT(1000, 1000, 1000, REQUEST_CAP, 1000)},
        {"3 minTokens above the estimate is the estimate",
         {.estimate = 500, .min_tokens = 900, .priority = N},
         499, REFUSE(BUDGET, 500, 500, 500)},
        {"3 cap + budget",
         {.estimate = 2000, .min_tokens = 200, .priority = N},
         700, GRANT(700, 1000, 200, BUDGET, 1000)},
        {"3 cap + budget below minTokens",
         {.estimate = 2000, .min_tokens = 800, .priority = N},
         700, REFUSE(BUDGET, 1000, 800, 1000)},
        {"3 cap + budget exactly the cap",
         {.estimate = 2000, .min_tokens = 800, .priority = N},
         1000, GRANT(1000, 1000, 800, REQUEST_CAP, 1000)},
        {"3 cap 1",
         {.estimate = 2, .priority = N, .max_request_tokens = 1, .escalate_permille = 2000},
         INF, GRANT(1, 1, 1, REQUEST_CAP, 1)},

        /* rung 4: the pool breaker */
        {"4 background refused",
         {.estimate = 100, .priority = B, .pool_degraded = true},
         INF, REFUSE(POOL_DEGRADED, 100, 100, NO_CALL)},
        {"4 background waits",
         {.estimate = 100, .min_tokens = 10, .wait_usec = 1, .priority = B, .pool_degraded = true},
         INF, WAIT(POOL_DEGRADED, 100, 10, NO_CALL)},
        {"4 background retried still waits",
         {.estimate = 100, .wait_usec = 1, .priority = B, .retry = true, .pool_degraded = true},
         INF, WAIT(POOL_DEGRADED, 100, 100, NO_CALL)},
        {"4 background not degraded is served",
         {.estimate = 100, .priority = B},
         INF, GRANT(100, 100, 100, NONE, 100)},
        {"4 background clamped then refused",
         {.estimate = 2000, .priority = B, .pool_degraded = true},
         INF, REFUSE(POOL_DEGRADED, 1000, 1000, NO_CALL)},
        {"4 normal halved",
         {.estimate = 800, .priority = N, .pool_degraded = true},
         INF, GRANT(400, 400, 400, POOL_DEGRADED, 400)},
        {"4 normal halved, rounded down",
         {.estimate = 801, .priority = N, .pool_degraded = true},
         INF, GRANT(400, 400, 400, POOL_DEGRADED, 400)},
        {"4 normal halved at least 1",
         {.estimate = 1, .priority = N, .pool_degraded = true},
         INF, GRANT(1, 1, 1, NONE, 1)},
        {"4 normal of 2 halved to 1",
         {.estimate = 2, .priority = N, .pool_degraded = true},
         INF, GRANT(1, 1, 1, POOL_DEGRADED, 1)},
        {"4 normal to its minTokens",
         {.estimate = 800, .min_tokens = 300, .priority = N, .pool_degraded = true},
         INF, GRANT(300, 300, 300, POOL_DEGRADED, 300)},
        {"4 normal minTokens above half still wins",
         {.estimate = 800, .min_tokens = 700, .priority = N, .pool_degraded = true},
         INF, GRANT(700, 700, 700, POOL_DEGRADED, 700)},
        {"4 normal minTokens = estimate is not degraded",
         {.estimate = 800, .min_tokens = 800, .priority = N, .pool_degraded = true},
         INF, GRANT(800, 800, 800, NONE, 800)},
        {"4 normal cap then halved",
         {.estimate = 2000, .priority = N, .pool_degraded = true},
         INF, GRANT(500, 500, 500, POOL_DEGRADED, 500)},
        {"4 normal cap, minTokens = cap keeps request-cap",
         {.estimate = 2000, .min_tokens = 1000, .priority = N, .pool_degraded = true},
         INF, GRANT(1000, 1000, 1000, REQUEST_CAP, 1000)},
        {"4 normal halved + budget short",
         {.estimate = 800, .priority = N, .pool_degraded = true},
         399, REFUSE(BUDGET, 400, 400, 400)},
        {"4 normal halved + budget short waits",
         {.estimate = 800, .wait_usec = 3, .priority = N, .pool_degraded = true},
         399, WAIT(BUDGET, 400, 400, 400)},
        {"4 normal minTokens + budget exactly minTokens",
         {.estimate = 800, .min_tokens = 300, .priority = N, .pool_degraded = true},
         300, GRANT(300, 300, 300, POOL_DEGRADED, 300)},
        {"4 normal minTokens + budget below",
         {.estimate = 800, .min_tokens = 300, .priority = N, .pool_degraded = true},
         299, REFUSE(BUDGET, 300, 300, 300)},
        {"4 interactive unchanged",
         {.estimate = 800, .priority = I, .pool_degraded = true},
         INF, GRANT(800, 800, 800, NONE, 800)},
        {"4 interactive + budget",
         {.estimate = 800, .min_tokens = 100, .priority = I, .pool_degraded = true},
         500, GRANT(500, 800, 100, BUDGET, 800)},
        {"4 interactive + cap",
         {.estimate = 2000, .priority = I, .pool_degraded = true},
         INF, GRANT(1000, 1000, 1000, REQUEST_CAP, 1000)},
        {"4 background degraded before queued ahead",
         {.estimate = 100, .priority = B, .pool_degraded = true, .queued_ahead = true},
         INF, REFUSE(POOL_DEGRADED, 100, 100, NO_CALL)},

        /* rung 5: the starvation rule */
        {"5 queued ahead refuses",
         {.estimate = 100, .priority = N, .queued_ahead = true},
         INF, REFUSE(QUEUED_AHEAD, 100, 100, NO_CALL)},
        {"5 queued ahead waits",
         {.estimate = 100, .wait_usec = 1, .priority = N, .queued_ahead = true},
         INF, WAIT(QUEUED_AHEAD, 100, 100, NO_CALL)},
        {"5 queued ahead interactive too",
         {.estimate = 100, .priority = I, .queued_ahead = true},
         INF, REFUSE(QUEUED_AHEAD, 100, 100, NO_CALL)},
        {"5 the head waiter retried is served",
         {.estimate = 100, .priority = N, .retry = true, .queued_ahead = true},
         INF, GRANT(100, 100, 100, NONE, 100)},
        {"5 the head waiter retried still short waits",
         {.estimate = 100, .wait_usec = 1, .priority = N, .retry = true, .queued_ahead = true},
         99, WAIT(BUDGET, 100, 100, 100)},
        {"5 the head waiter retried degrades",
         {.estimate = 100, .min_tokens = 10, .wait_usec = 1, .priority = N, .retry = true,
          .queued_ahead = true},
         10, GRANT(10, 100, 10, BUDGET, 100)},
        {"5 normal degraded then queued ahead",
         {.estimate = 800, .wait_usec = 1, .priority = N, .pool_degraded = true, .queued_ahead = true},
         INF, WAIT(QUEUED_AHEAD, 400, 400, NO_CALL)},
        {"5 capped then queued ahead",
         {.estimate = 2000, .min_tokens = 10, .priority = N, .queued_ahead = true},
         INF, REFUSE(QUEUED_AHEAD, 1000, 10, NO_CALL)},

        /* rung 6: the ledger */
        {"6 room exactly the target",
         {.estimate = 1000, .priority = N},
         1000, GRANT(1000, 1000, 1000, NONE, 1000)},
        {"6 room one short, no minTokens",
         {.estimate = 1000, .priority = N},
         999, REFUSE(BUDGET, 1000, 1000, 1000)},
        {"6 room exactly minTokens grants",
         {.estimate = 1000, .min_tokens = 400, .priority = N},
         400, GRANT(400, 1000, 400, BUDGET, 1000)},
        {"6 room one below minTokens refuses",
         {.estimate = 1000, .min_tokens = 400, .priority = N},
         399, REFUSE(BUDGET, 1000, 400, 1000)},
        {"6 room one below minTokens waits",
         {.estimate = 1000, .min_tokens = 400, .wait_usec = 1000000, .priority = N},
         399, WAIT(BUDGET, 1000, 400, 1000)},
        {"6 room between minTokens and target",
         {.estimate = 1000, .min_tokens = 400, .priority = N},
         999, GRANT(999, 1000, 400, BUDGET, 1000)},
        {"6 fits: no wait although it would",
         {.estimate = 1000, .wait_usec = 5, .priority = N},
         INF, GRANT(1000, 1000, 1000, NONE, 1000)},
        {"6 degrading beats waiting",
         {.estimate = 1000, .min_tokens = 1, .wait_usec = 5, .priority = N},
         1, GRANT(1, 1000, 1, BUDGET, 1000)},
        {"6 nothing fits, minTokens 1",
         {.estimate = 1000, .min_tokens = 1, .priority = N},
         0, REFUSE(BUDGET, 1000, 1, 1000)},
        {"6 a callback answering more than asked",
         {.estimate = 1000, .priority = N},
         5000, GRANT(1000, 1000, 1000, NONE, 1000)},
        {"6 interactive is not exempt from the ledger",
         {.estimate = 1000, .priority = I},
         10, REFUSE(BUDGET, 1000, 1000, 1000)},
};
/* clang-format on */

typedef struct RoomCall {
        uint64_t answer;
        uint64_t want;
        unsigned calls;
} RoomCall;

static uint64_t room_cb(uint64_t want, void *userdata) {
        RoomCall *c = userdata;

        c->want = want;
        c->calls++;
        return c->answer;
}

static const char *reason_name(DecisionReason r) {
        const char *name = decision_reason_to_string(r);

        return name ? name : "none";
}

static DecideInput row_input(const Row *row) {
        DecideInput in = row->in;

        if (in.max_request_tokens == 0)
                in.max_request_tokens = 1000;
        if (in.escalate_permille == 0)
                in.escalate_permille = 2500;
        return in;
}

START_TEST(test_rows) {
        for (size_t i = 0; i < N_ROWS(rows); i++) {
                const Row *row = &rows[i];
                const Expect *e = &row->expect;
                DecideInput in = row_input(row);
                RoomCall call = {.answer = row->room};
                Decision d;

                decide(&in, room_cb, &call, &d);
                ck_assert_msg(d.kind == e->kind, "row '%s': kind %s, expected %s", row->name,
                              decision_kind_to_string(d.kind), decision_kind_to_string(e->kind));
                ck_assert_msg(d.granted == e->granted, "row '%s': granted %" PRIu64 ", expected %" PRIu64,
                              row->name, d.granted, e->granted);
                ck_assert_msg(d.target == e->target, "row '%s': target %" PRIu64 ", expected %" PRIu64,
                              row->name, d.target, e->target);
                ck_assert_msg(d.min_tokens == e->min_tokens,
                              "row '%s': min_tokens %" PRIu64 ", expected %" PRIu64, row->name, d.min_tokens,
                              e->min_tokens);
                ck_assert_msg(d.reason == e->reason, "row '%s': reason %s, expected %s", row->name,
                              reason_name(d.reason), reason_name(e->reason));
                ck_assert_msg(d.refusal == e->refusal, "row '%s': refusal %s, expected %s", row->name,
                              refusal_reason_to_string(d.refusal), refusal_reason_to_string(e->refusal));
                ck_assert_msg(d.escalate_cap == in.max_request_tokens * in.escalate_permille / 1000,
                              "row '%s': escalate_cap %" PRIu64, row->name, d.escalate_cap);
                if (e->want == NO_CALL)
                        ck_assert_msg(call.calls == 0, "row '%s': room asked", row->name);
                else {
                        ck_assert_msg(call.calls == 1, "row '%s': room asked %u times", row->name,
                                      call.calls);
                        ck_assert_msg(call.want == e->want, "row '%s': room asked for %" PRIu64, row->name,
                                      call.want);
                }
        }
}
END_TEST

START_TEST(test_strings) {
        ck_assert_str_eq(decision_kind_to_string(DECISION_GRANT), "grant");
        ck_assert_str_eq(decision_kind_to_string(DECISION_WAIT), "wait");
        ck_assert_str_eq(decision_kind_to_string(DECISION_HOLD), "hold");
        ck_assert_str_eq(decision_kind_to_string(DECISION_REFUSE), "refuse");
        ck_assert_ptr_null(decision_kind_to_string(_DECISION_KIND_MAX));
        ck_assert_ptr_null(decision_reason_to_string(REASON_NONE));
        ck_assert_str_eq(decision_reason_to_string(REASON_REQUEST_CAP), "request-cap");
        ck_assert_str_eq(decision_reason_to_string(REASON_BUDGET), "budget");
        ck_assert_str_eq(decision_reason_to_string(REASON_POOL_DEGRADED), "pool-degraded");
        ck_assert_str_eq(decision_reason_to_string(REASON_APPROVED), "approved");
        ck_assert_str_eq(decision_reason_to_string(REASON_POWER), "power");
        ck_assert_ptr_null(decision_reason_to_string(_DECISION_REASON_MAX));
        ck_assert_str_eq(refusal_reason_to_string(REFUSE_BUDGET), "budget");
        ck_assert_str_eq(refusal_reason_to_string(REFUSE_POOL_DEGRADED), "pool-degraded");
        ck_assert_str_eq(refusal_reason_to_string(REFUSE_QUEUED_AHEAD), "queued-ahead");
        ck_assert_str_eq(refusal_reason_to_string(REFUSE_ESCALATED), "escalated");
        ck_assert_str_eq(refusal_reason_to_string(REFUSE_CIRCUIT_OPEN), "circuit-open");
        ck_assert_str_eq(refusal_reason_to_string(REFUSE_POWER_PAUSED), "power-paused");
        ck_assert_ptr_null(refusal_reason_to_string(_REFUSAL_REASON_MAX));
}
END_TEST

/* Small numbers so that boundaries come up often. */
static uint64_t pick(uint64_t *seed, uint64_t max) {
        return splitmix64(seed) % (max + 1);
}

static DecideInput random_input(uint64_t *seed) {
        DecideInput in = {
                .estimate = 1 + pick(seed, 40),
                .min_tokens = pick(seed, 3) == 0 ? 0 : pick(seed, 45),
                .wait_usec = pick(seed, 1),
                .priority = (Priority)pick(seed, _PRIORITY_MAX - 1),
                .max_request_tokens = 1 + pick(seed, 20),
                .escalate_permille = 1000 + (uint32_t)pick(seed, 2000),
                .on_escalate = (EscalateAction)pick(seed, 1),
                .approved = pick(seed, 3) == 0,
                .retry = pick(seed, 3) == 0,
                .pool_degraded = pick(seed, 2) == 0,
                .queued_ahead = pick(seed, 2) == 0,
                .gate = (BreakerGate)pick(seed, 2),
                .power_paused = pick(seed, 4) == 0,
                .power_permille = pick(seed, 1) ? (uint32_t)pick(seed, 1000) : 0,
        };

        if (in.approved)
                in.approved_tokens = 1 + pick(seed, in.estimate - 1);
        return in;
}

/* Whatever the input: a grant is 1..target, at least min_tokens, at most the
 * estimate, with REASON_NONE exactly when it is the estimate; the ledger is
 * asked once, for the target, exactly when nothing before decided; WAIT only
 * when the request would wait; HOLD only for on_escalate hold. */
START_TEST(test_invariants) {
        uint64_t seed = 0x5eed1ad0e5;

        for (unsigned i = 0; i < 200000; i++) {
                DecideInput in = random_input(&seed);
                RoomCall call = {.answer = pick(&seed, 45)};
                Decision d;

                decide(&in, room_cb, &call, &d);
                CHECK(call.calls <= 1, "case %u: room asked %u times", i, call.calls);
                if (call.calls == 1)
                        CHECK(call.want == d.target, "case %u: room asked for %" PRIu64, i, call.want);
                CHECK(in.gate != GATE_OPEN || d.refusal == REFUSE_CIRCUIT_OPEN, "case %u: gate open", i);
                CHECK(d.kind != DECISION_WAIT || in.wait_usec > 0, "case %u: waits", i);
                CHECK(d.kind != DECISION_HOLD || in.on_escalate == ESCALATE_HOLD, "case %u: holds", i);
                CHECK(d.kind == DECISION_GRANT || d.reason == REASON_NONE, "case %u: reason", i);
                CHECK(d.target <= in.estimate && d.min_tokens <= d.target, "case %u: target", i);
                if (d.kind != DECISION_GRANT) {
                        CHECK(d.granted == 0, "case %u: granted without a grant", i);
                        continue;
                }
                CHECK(call.calls == 1, "case %u: granted without the ledger", i);
                CHECK(d.granted >= 1 && d.granted >= d.min_tokens && d.granted <= d.target,
                      "case %u: granted %" PRIu64, i, d.granted);
                CHECK(d.granted <= call.answer, "case %u: more than fits", i);
                CHECK((d.reason == REASON_NONE) == (d.granted == in.estimate), "case %u: reason %d", i,
                      d.reason);
                CHECK(in.approved || in.estimate <= d.escalate_cap, "case %u: escalated granted", i);
                CHECK(!in.pool_degraded || in.priority != PRIORITY_BACKGROUND,
                      "case %u: background granted in degraded mode", i);
                CHECK(in.retry || !in.queued_ahead, "case %u: granted ahead of the queue", i);
                CHECK(in.approved || d.granted <= in.max_request_tokens, "case %u: past the cap", i);
                CHECK(!in.power_paused, "case %u: granted while paused", i);
                CHECK(in.approved || in.power_permille == 0 ||
                              in.max_request_tokens * in.power_permille < 1000 ||
                              d.granted <= in.max_request_tokens * in.power_permille / 1000,
                      "case %u: past the power-scaled cap", i);
        }
}
END_TEST

static Suite *decide_suite(void) {
        Suite *s = suite_create("decide");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_rows);
        tcase_add_test(tc, test_strings);
        tcase_add_test(tc, test_invariants);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(decide_suite());
}
