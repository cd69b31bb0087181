/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for daemon/core/ledger.c: table-driven cases for grants, refusals
 * (every window kind and the in-flight cap, with the exact refusal fields),
 * all-or-nothing reservation, reports, states, settlement, window ageing at
 * bucket granularity, ids (SipHash-2-4 against its reference vectors, keyed,
 * unique across reused slots), iteration, scope lifetime, memory per
 * allocation, limits.max_allocations (its refusal, all or nothing, settling
 * making room), per-allocation multipliers (ledger_reserve_params()) and
 * ledger_scope_window_frees_in() at bucket edges, and issue 10's additions:
 * ledger_room() against brute force on random states (its answer is the
 * largest grant ledger_reserve_params() accepts, its refusal reserve's),
 * ledger_reserve_unchecked() past every limit and its saturation,
 * ledger_scope_utilisation_permille(), the degraded flag and the queue
 * slot. The seeded property runs (a million ids, thousands of random
 * operations against a shadow model, every true interval of a window) are
 * tests/property/property-ledger.c. Time moves by parameter only.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heap-stats.h"

#include "ledger.h"
#include "siphash.h"
#include "splitmix64.h"
#include "tb-check.h"

#define SEC(x)    ((uint64_t)((x)*1000000.0 + 0.5))
#define N_ROWS(t) (sizeof(t) / sizeof((t)[0]))

/* Aligned to every bucket size (1 s, 60 s, 900 s), so offsets are easy to
 * reason about. */
#define T_BASE SEC(900 * 200)

static const LedgerParams params_default = {.warn_permille = 1500, .hard_permille = 2000};
static const LedgerLimits limits_none = {};

/* ck_assert_msg() for the random runs' hundreds of thousands of checks:
 * Check's asserts report each passing one to the parent process (a write
 * each), which makes a run many times slower; this reports only a failure. */
#define CHECK(cond, ...)                                                                                    \
        do {                                                                                                \
                if (!(cond))                                                                                \
                        ck_abort_msg(__VA_ARGS__);                                                          \
        } while (0)

static uint64_t sat_sub_test(uint64_t a, uint64_t b) {
        return a > b ? a - b : 0;
}

/* Commits `used` tokens in the given scopes at now by reserving and settling. */
static void commit_tokens(Ledger *l, LedgerScope *const *scopes, size_t n, uint64_t used,
                          uint64_t now_usec) {
        LedgerAllocation *a;
        LedgerRefusal refusal;
        uint64_t ret_used;

        ck_assert_int_eq(ledger_reserve(l, scopes, n, used / 2 + 1, now_usec, &a, &refusal), 0);
        ck_assert_int_eq(ledger_settle(l, a, used, 0, now_usec, &ret_used, NULL), 0);
        ck_assert_uint_eq(ret_used, used);
}

START_TEST(test_strings) {
        ck_assert_str_eq(ledger_window_to_string(LEDGER_WINDOW_MINUTE), "minute");
        ck_assert_str_eq(ledger_window_to_string(LEDGER_WINDOW_HOUR), "hour");
        ck_assert_str_eq(ledger_window_to_string(LEDGER_WINDOW_DAY), "day");
        ck_assert_ptr_null(ledger_window_to_string(_LEDGER_WINDOW_MAX));
        ck_assert_uint_eq(ledger_window_span_usec(LEDGER_WINDOW_MINUTE), SEC(60));
        ck_assert_uint_eq(ledger_window_span_usec(LEDGER_WINDOW_HOUR), SEC(3600));
        ck_assert_uint_eq(ledger_window_span_usec(LEDGER_WINDOW_DAY), SEC(86400));
        ck_assert_str_eq(ledger_state_to_string(LEDGER_STATE_OK), "ok");
        ck_assert_str_eq(ledger_state_to_string(LEDGER_STATE_WARNING), "warning");
        ck_assert_str_eq(ledger_state_to_string(LEDGER_STATE_EXCEEDED), "exceeded");
        ck_assert_ptr_null(ledger_state_to_string(LEDGER_STATE_EXCEEDED + 1));
}
END_TEST

/*
 * Each row: 100 tokens committed at T0 = 1000 s, one live allocation holding a
 * reservation of 200, then the row's limits, then a grant of 100 (reservation
 * 200 at 2x) asked at T0 + 10 s. A commit leaves a window one span after the
 * start of the next bucket: the minute window at 1061 s, the hour window at
 * 4620 s (bucket 960..1020 s) and the day window at 88200 s (bucket
 * 900..1800 s).
 */
typedef struct RefusalRow {
        const char *name;
        LedgerLimits limits;
        int expect_ret;
        int window;
        uint64_t limit_tokens, used_tokens, reserved_tokens, retry_after_usec;
} RefusalRow;

static const RefusalRow refusal_rows[] = {
        {"within all limits", {{1000, 10000, 100000}, 5000}, 0},
        {"minute exactly full", {{500, 0, 0}, 0}, 0},
        {"hour exactly full", {{0, 500, 0}, 0}, 0},
        {"day exactly full", {{0, 0, 500}, 0}, 0},
        {"in flight exactly full", {{0, 0, 0}, 400}, 0},
        {"minute one short", {{499, 0, 0}, 0}, -EDQUOT, LEDGER_WINDOW_MINUTE, 499, 100, 200, SEC(51)},
        {"minute too small even empty", {{399, 0, 0}, 0}, -EDQUOT, LEDGER_WINDOW_MINUTE, 399, 100, 200, 0},
        {"hour one short", {{0, 499, 0}, 0}, -EDQUOT, LEDGER_WINDOW_HOUR, 499, 100, 200, SEC(3610)},
        {"day one short", {{0, 0, 499}, 0}, -EDQUOT, LEDGER_WINDOW_DAY, 499, 100, 200, SEC(87190)},
        {"in flight one short", {{0, 0, 0}, 399}, -EDQUOT, -1, 399, 0, 200, 0},
        {"minute before hour", {{499, 499, 0}, 0}, -EDQUOT, LEDGER_WINDOW_MINUTE, 499, 100, 200, SEC(51)},
        {"hour before day", {{0, 499, 499}, 0}, -EDQUOT, LEDGER_WINDOW_HOUR, 499, 100, 200, SEC(3610)},
        {"window before cap", {{0, 0, 499}, 399}, -EDQUOT, LEDGER_WINDOW_DAY, 499, 100, 200, SEC(87190)},
};

START_TEST(test_reserve_refusal) {
        for (size_t i = 0; i < N_ROWS(refusal_rows); i++) {
                const RefusalRow *row = &refusal_rows[i];
                Ledger *l = ledger_new(&params_default);
                LedgerScope *s = ledger_scope_new(l, "s", &limits_none);
                LedgerAllocation *held, *a = NULL;
                LedgerRefusal refusal = {};
                int r;

                commit_tokens(l, &s, 1, 100, SEC(1000));
                ck_assert_int_eq(ledger_reserve(l, &s, 1, 100, SEC(1000), &held, &refusal), 0);
                ledger_scope_set_limits(s, &row->limits);

                r = ledger_reserve(l, &s, 1, 100, SEC(1010), &a, &refusal);
                ck_assert_msg(r == row->expect_ret, "row '%s': returned %d", row->name, r);
                if (r == 0) {
                        ck_assert_msg(ledger_scope_reserved(s) == 400, "row '%s': reserved", row->name);
                        ck_assert_msg(ledger_allocation_hard_limit(a) == 200, "row '%s': hard limit",
                                      row->name);
                        ledger_free(l);
                        continue;
                }
                ck_assert_msg(refusal.scope == s, "row '%s': scope", row->name);
                ck_assert_msg(refusal.window == row->window, "row '%s': window %d", row->name,
                              refusal.window);
                ck_assert_msg(refusal.limit_tokens == row->limit_tokens, "row '%s': limit", row->name);
                ck_assert_msg(refusal.used_tokens == row->used_tokens, "row '%s': used %" PRIu64, row->name,
                              refusal.used_tokens);
                ck_assert_msg(refusal.reserved_tokens == row->reserved_tokens, "row '%s': reserved",
                              row->name);
                ck_assert_msg(refusal.retry_after_usec == row->retry_after_usec,
                              "row '%s': retry after %" PRIu64 " usec", row->name, refusal.retry_after_usec);
                ck_assert_msg(ledger_scope_reserved(s) == 200 && ledger_scope_n_allocations(s) == 1 &&
                                      ledger_n_allocations(l) == 1,
                              "row '%s': refusal changed the scope", row->name);
                ledger_free(l);
        }
}
END_TEST

START_TEST(test_all_or_nothing) {
        static const LedgerLimits tight = {{100, 0, 0}, 0};
        Ledger *l = ledger_new(&params_default);
        LedgerScope *a = ledger_scope_new(l, "a", &limits_none);
        LedgerScope *b = ledger_scope_new(l, "b", &tight);
        LedgerAllocation *x;
        LedgerRefusal refusal = {};

        /* Refused in the second scope: the first is untouched. */
        ck_assert_int_eq(ledger_reserve(l, (LedgerScope *[]){a, b}, 2, 100, T_BASE, &x, &refusal), -EDQUOT);
        ck_assert_ptr_eq(refusal.scope, b);
        ck_assert_uint_eq(ledger_scope_reserved(a), 0);
        ck_assert_uint_eq(ledger_scope_n_allocations(a), 0);
        ck_assert_uint_eq(ledger_n_allocations(l), 0);
        ck_assert(ledger_scope_is_idle(a, T_BASE));

        /* A grant that fits charges both. */
        ck_assert_int_eq(ledger_reserve(l, (LedgerScope *[]){a, b}, 2, 50, T_BASE, &x, &refusal), 0);
        ck_assert_uint_eq(ledger_scope_reserved(a), 100);
        ck_assert_uint_eq(ledger_scope_reserved(b), 100);

        /* Both full: the refusal names the first scope in the order given. */
        ledger_scope_set_limits(a, &tight);
        ck_assert_int_eq(ledger_reserve(l, (LedgerScope *[]){b, a}, 2, 1, T_BASE, &x, &refusal), -EDQUOT);
        ck_assert_ptr_eq(refusal.scope, b);
        ck_assert_int_eq(ledger_reserve(l, (LedgerScope *[]){a, b}, 2, 1, T_BASE, &x, &refusal), -EDQUOT);
        ck_assert_ptr_eq(refusal.scope, a);
        ck_assert_uint_eq(ledger_scope_reserved(a), 100);
        ck_assert_uint_eq(ledger_scope_reserved(b), 100);
        ck_assert_uint_eq(ledger_n_allocations(l), 1);

        /* A NULL refusal pointer is allowed. */
        ck_assert_int_eq(ledger_reserve(l, (LedgerScope *[]){a, b}, 2, 1, T_BASE, &x, NULL), -EDQUOT);
        ledger_free(l);
}
END_TEST

/* One allocation of 100 (warn at 150, hard at 200) driven through reports. */
typedef struct ReportStep {
        const char *name;
        uint64_t input_tokens, output_tokens;
        int expect_ret;
        LedgerState state;
        uint64_t used_tokens, still_reserved_tokens;
} ReportStep;

static const ReportStep report_steps[] = {
        {"first report", 10, 20, 0, LEDGER_STATE_OK, 30, 170},
        {"retried identical report", 10, 20, 0, LEDGER_STATE_OK, 30, 170},
        {"lower input", 5, 30, -ERANGE, LEDGER_STATE_OK, 30, 170},
        {"lower output", 10, 19, -ERANGE, LEDGER_STATE_OK, 30, 170},
        {"just below warn", 100, 49, 0, LEDGER_STATE_OK, 149, 51},
        {"at warn", 100, 50, 0, LEDGER_STATE_WARNING, 150, 50},
        {"just below hard", 100, 99, 0, LEDGER_STATE_WARNING, 199, 1},
        {"at hard", 100, 100, 0, LEDGER_STATE_EXCEEDED, 200, 0},
        {"past hard is still committed", 100, 300, 0, LEDGER_STATE_EXCEEDED, 400, 0},
        {"input out of range", LEDGER_TOKENS_MAX, 300, -ERANGE, LEDGER_STATE_EXCEEDED, 400, 0},
        {"output out of range", 100, LEDGER_TOKENS_MAX, -ERANGE, LEDGER_STATE_EXCEEDED, 400, 0},
        {"largest totals", LEDGER_TOKENS_MAX - 1, LEDGER_TOKENS_MAX - 1, 0, LEDGER_STATE_EXCEEDED,
         2 * (LEDGER_TOKENS_MAX - 1), 0},
};

START_TEST(test_report) {
        Ledger *l = ledger_new(&params_default);
        LedgerScope *s = ledger_scope_new(l, "s", &limits_none);
        LedgerAllocation *a;
        LedgerRefusal refusal;

        ck_assert_int_eq(ledger_reserve(l, &s, 1, 100, T_BASE, &a, &refusal), 0);
        for (size_t i = 0; i < N_ROWS(report_steps); i++) {
                const ReportStep *st = &report_steps[i];
                LedgerState state = (LedgerState)99;
                uint64_t now = T_BASE + SEC(i);
                int r = ledger_report(l, a, st->input_tokens, st->output_tokens, now, &state);

                ck_assert_msg(r == st->expect_ret, "row '%s': returned %d", st->name, r);
                if (r == 0)
                        ck_assert_msg(state == st->state, "row '%s': state %s", st->name,
                                      ledger_state_to_string(state));
                ck_assert_msg(ledger_allocation_state(a) == st->state, "row '%s': allocation state",
                              st->name);
                ck_assert_msg(ledger_allocation_used(a) == st->used_tokens, "row '%s': used %" PRIu64,
                              st->name, ledger_allocation_used(a));
                ck_assert_msg(ledger_allocation_reserved(a) == st->still_reserved_tokens,
                              "row '%s': reserved", st->name);
                ck_assert_msg(ledger_scope_reserved(s) == st->still_reserved_tokens,
                              "row '%s': scope reserved", st->name);
                ck_assert_msg(ledger_scope_committed_total(s) == st->used_tokens, "row '%s': committed",
                              st->name);
                for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++)
                        ck_assert_msg(ledger_scope_window_used(s, w, now) == st->used_tokens,
                                      "row '%s': %s window", st->name, ledger_window_to_string(w));
        }
        ledger_free(l);
}
END_TEST

/* Thresholds round up; the probes are used = warn_at - 1, warn_at,
 * hard - 1, hard, hard + 1, each on a fresh allocation. */
typedef struct StateRow {
        const char *name;
        uint64_t granted_tokens;
        LedgerParams params;
        uint64_t warn_at, hard_limit;
        LedgerState states[5];
} StateRow;

#define OK LEDGER_STATE_OK
#define WA LEDGER_STATE_WARNING
#define EX LEDGER_STATE_EXCEEDED
/* clang-format off */
static const StateRow state_rows[] = {
        { "defaults", 100, { 1500, 2000 }, 150, 200, { OK, WA, WA, EX, EX } },
        { "rounding up", 3, { 1500, 2000 }, 5, 6, { OK, WA, WA, EX, EX } },
        { "1x and 1x", 1, { 1000, 1000 }, 1, 1, { OK, EX, OK, EX, EX } },
        { "odd permille", 7, { 1001, 5000 }, 8, 35, { OK, WA, WA, EX, EX } },
        { "largest grant", LEDGER_TOKENS_MAX - 1, { 1000, 1500 }, 999999999999, 1499999999999, { OK, WA, WA, EX, EX } },
};
/* clang-format on */
#undef OK
#undef WA
#undef EX

START_TEST(test_states) {
        for (size_t i = 0; i < N_ROWS(state_rows); i++) {
                const StateRow *row = &state_rows[i];
                Ledger *l = ledger_new(&row->params);
                LedgerScope *s = ledger_scope_new(l, "s", &limits_none);
                uint64_t probes[5] = {row->warn_at - 1, row->warn_at, row->hard_limit - 1, row->hard_limit,
                                      row->hard_limit + 1};

                for (size_t p = 0; p < 5; p++) {
                        LedgerAllocation *a;
                        LedgerRefusal refusal;
                        LedgerState state;
                        uint64_t input = probes[p] < LEDGER_TOKENS_MAX ? probes[p] : LEDGER_TOKENS_MAX - 1;

                        ck_assert_int_eq(ledger_reserve(l, &s, 1, row->granted_tokens, T_BASE, &a, &refusal),
                                         0);
                        ck_assert_msg(ledger_allocation_granted(a) == row->granted_tokens, "row '%s'",
                                      row->name);
                        ck_assert_msg(ledger_allocation_warn_at(a) == row->warn_at,
                                      "row '%s': warn_at %" PRIu64, row->name, ledger_allocation_warn_at(a));
                        ck_assert_msg(ledger_allocation_hard_limit(a) == row->hard_limit,
                                      "row '%s': hard limit %" PRIu64, row->name,
                                      ledger_allocation_hard_limit(a));
                        ck_assert_msg(ledger_allocation_state(a) == LEDGER_STATE_OK, "row '%s': fresh",
                                      row->name);
                        ck_assert_int_eq(ledger_report(l, a, input, probes[p] - input, T_BASE, &state), 0);
                        ck_assert_msg(state == row->states[p], "row '%s', probe %zu (used %" PRIu64 "): %s",
                                      row->name, p, probes[p], ledger_state_to_string(state));
                        ck_assert_int_eq(ledger_settle(l, a, input, probes[p] - input, T_BASE, NULL, NULL),
                                         0);
                }
                ledger_free(l);
        }
}
END_TEST

/* One allocation of 100 (reservation 200), an optional report, then settle. */
typedef struct SettleRow {
        const char *name;
        uint64_t report_in, report_out; /* 0, 0: no report */
        uint64_t settle_in, settle_out;
        int expect_ret;
        uint64_t used_tokens, refunded_tokens;
} SettleRow;

static const SettleRow settle_rows[] = {
        {"nothing used", 0, 0, 0, 0, 0, 0, 200},
        {"part used", 0, 0, 30, 20, 0, 50, 150},
        {"after a report", 40, 20, 50, 30, 0, 80, 120},
        {"settle equal to report", 40, 20, 40, 20, 0, 60, 140},
        {"lower than the report", 40, 20, 39, 30, -ERANGE, 60, 140},
        {"exactly the hard limit", 0, 0, 100, 100, 0, 200, 0},
        {"overrun", 0, 0, 200, 100, 0, 300, 0},
        {"overrun after a report", 150, 100, 150, 150, 0, 300, 0},
        {"out of range", 0, 0, LEDGER_TOKENS_MAX, 0, -ERANGE, 0, 200},
};

START_TEST(test_settle) {
        for (size_t i = 0; i < N_ROWS(settle_rows); i++) {
                const SettleRow *row = &settle_rows[i];
                Ledger *l = ledger_new(&params_default);
                LedgerScope *s = ledger_scope_new(l, "s", &limits_none);
                LedgerAllocation *a;
                LedgerRefusal refusal;
                uint64_t used = UINT64_MAX, refunded = UINT64_MAX, id;
                int r;

                ck_assert_int_eq(ledger_reserve(l, &s, 1, 100, T_BASE, &a, &refusal), 0);
                id = ledger_allocation_id(a);
                if (row->report_in + row->report_out > 0)
                        ck_assert_int_eq(ledger_report(l, a, row->report_in, row->report_out, T_BASE, NULL),
                                         0);
                r = ledger_settle(l, a, row->settle_in, row->settle_out, T_BASE + SEC(1), &used, &refunded);
                ck_assert_msg(r == row->expect_ret, "row '%s': returned %d", row->name, r);
                ck_assert_msg(ledger_scope_committed_total(s) == row->used_tokens, "row '%s': committed",
                              row->name);
                ck_assert_msg(ledger_scope_window_used(s, LEDGER_WINDOW_MINUTE, T_BASE + SEC(1)) ==
                                      row->used_tokens,
                              "row '%s': window", row->name);
                if (r < 0) {
                        ck_assert_msg(ledger_find(l, id) == a, "row '%s': failed settle freed it",
                                      row->name);
                        ck_assert_msg(ledger_scope_reserved(s) == row->refunded_tokens, "row '%s': reserved",
                                      row->name);
                        ck_assert_msg(ledger_allocation_used(a) == row->used_tokens, "row '%s': used",
                                      row->name);
                        ledger_free(l);
                        continue;
                }
                ck_assert_msg(used == row->used_tokens, "row '%s': used %" PRIu64, row->name, used);
                ck_assert_msg(refunded == row->refunded_tokens, "row '%s': refunded %" PRIu64, row->name,
                              refunded);
                ck_assert_msg(ledger_scope_reserved(s) == 0, "row '%s': reserved left", row->name);
                ck_assert_msg(ledger_scope_n_allocations(s) == 0, "row '%s': still charged", row->name);
                ck_assert_msg(ledger_n_allocations(l) == 0, "row '%s': still live", row->name);
                ck_assert_msg(ledger_find(l, id) == NULL, "row '%s': still found", row->name);
                ledger_free(l);
        }
}
END_TEST

/* A commit at T_BASE + 5.3 s is in the window for at least the span, and
 * until one span after the end of the bucket it fell in (bucket granularity,
 * on the safe side): 66 s, 3660 s, 87300 s. */
typedef struct EdgeRow {
        LedgerWindow window;
        uint64_t last_in_usec, first_out_usec; /* offsets from T_BASE */
} EdgeRow;

static const EdgeRow edge_rows[] = {
        {LEDGER_WINDOW_MINUTE, SEC(66) - 1, SEC(66)},
        {LEDGER_WINDOW_HOUR, SEC(3660) - 1, SEC(3660)},
        {LEDGER_WINDOW_DAY, SEC(87300) - 1, SEC(87300)},
};

START_TEST(test_window_edges) {
        for (size_t i = 0; i < N_ROWS(edge_rows); i++) {
                const EdgeRow *row = &edge_rows[i];
                const char *name = ledger_window_to_string(row->window);
                Ledger *l = ledger_new(&params_default);
                LedgerScope *s = ledger_scope_new(l, "s", &limits_none);

                commit_tokens(l, &s, 1, 600, T_BASE + SEC(5.3));
                ck_assert_msg(ledger_scope_window_used(s, row->window, T_BASE + SEC(5.3)) == 600, "%s: now",
                              name);
                ck_assert_msg(ledger_scope_window_used(s, row->window, T_BASE + row->last_in_usec) == 600,
                              "%s: last instant in", name);
                ck_assert_msg(!ledger_scope_is_idle(s, T_BASE + row->last_in_usec), "%s: idle too early",
                              name);
                ck_assert_msg(ledger_scope_window_used(s, row->window, T_BASE + row->first_out_usec) == 0,
                              "%s: first instant out", name);
                /* Time does not run backwards: an earlier now sees the latest state. */
                ck_assert_msg(ledger_scope_window_used(s, row->window, T_BASE) == 0, "%s: backwards", name);
                ck_assert_uint_eq(ledger_scope_committed_total(s), 600);
                ledger_free(l);
        }
}
END_TEST

/*
 * Commits of 300 tokens at the given offsets, then a limit on one window, then
 * a grant (reservation = 2x) at probe_usec: the refusal's retry_after_usec must
 * be exactly when room appears. Offsets are from T_BASE.
 */
typedef struct RetryRow {
        const char *name;
        LedgerWindow window;
        uint64_t commit_usec[3];
        uint64_t probe_usec;
        uint64_t granted_tokens;
        uint64_t retry_after_usec;
} RetryRow;

/* clang-format off */
static const RetryRow retry_rows[] = {
        { "minute: oldest bucket", LEDGER_WINDOW_MINUTE, { SEC(10), SEC(20), SEC(30) }, SEC(40), 200, SEC(31) },
        { "minute: two buckets", LEDGER_WINDOW_MINUTE, { SEC(10), SEC(20), SEC(30) }, SEC(40), 350, SEC(41) },
        { "minute: all buckets", LEDGER_WINDOW_MINUTE, { SEC(10), SEC(20), SEC(30) }, SEC(40), 500, SEC(51) },
        { "minute: never fits", LEDGER_WINDOW_MINUTE, { SEC(10), SEC(20), SEC(30) }, SEC(40), 501, 0 },
        { "minute: mid-bucket", LEDGER_WINDOW_MINUTE, { SEC(10.5), SEC(20), SEC(30) }, SEC(40.25), 200, SEC(30.75) },
        /* Committed in the last usec of a bucket: still counted a full span later. */
        { "minute: bucket's last usec", LEDGER_WINDOW_MINUTE, { SEC(10) - 1, SEC(20), SEC(30) }, SEC(40), 200, SEC(30) },
        { "hour: oldest bucket", LEDGER_WINDOW_HOUR, { SEC(10), SEC(70), SEC(130) }, SEC(200), 200, SEC(3460) },
        { "hour: two buckets", LEDGER_WINDOW_HOUR, { SEC(10), SEC(70), SEC(130) }, SEC(200), 350, SEC(3520) },
        { "hour: same bucket", LEDGER_WINDOW_HOUR, { SEC(10), SEC(20), SEC(130) }, SEC(200), 350, SEC(3460) },
        { "hour: bucket's last usec", LEDGER_WINDOW_HOUR, { SEC(60) - 1, SEC(70), SEC(130) }, SEC(200), 200, SEC(3460) },
        { "day: oldest bucket", LEDGER_WINDOW_DAY, { SEC(10), SEC(1000), SEC(1001) }, SEC(2000), 200, SEC(85300) },
        { "day: two buckets", LEDGER_WINDOW_DAY, { SEC(10), SEC(1000), SEC(1001) }, SEC(2000), 350, SEC(86200) },
};
/* clang-format on */

START_TEST(test_retry_after) {
        for (size_t i = 0; i < N_ROWS(retry_rows); i++) {
                const RetryRow *row = &retry_rows[i];
                Ledger *l = ledger_new(&params_default);
                LedgerScope *s = ledger_scope_new(l, "s", &limits_none);
                LedgerLimits limits = {};
                LedgerAllocation *a;
                LedgerRefusal refusal = {};
                uint64_t probe = T_BASE + row->probe_usec;

                for (size_t c = 0; c < 3; c++)
                        commit_tokens(l, &s, 1, 300, T_BASE + row->commit_usec[c]);
                limits.window_tokens[row->window] = 1000;
                ledger_scope_set_limits(s, &limits);

                ck_assert_msg(ledger_reserve(l, &s, 1, row->granted_tokens, probe, &a, &refusal) == -EDQUOT,
                              "row '%s': granted", row->name);
                ck_assert_msg(refusal.window == (int)row->window, "row '%s': window", row->name);
                ck_assert_msg(refusal.used_tokens == 900, "row '%s': used %" PRIu64, row->name,
                              refusal.used_tokens);
                ck_assert_msg(refusal.retry_after_usec == row->retry_after_usec,
                              "row '%s': retry after %" PRIu64 " usec", row->name, refusal.retry_after_usec);
                if (row->retry_after_usec == 0) {
                        ledger_free(l);
                        continue;
                }
                ck_assert_msg(ledger_reserve(l, &s, 1, row->granted_tokens,
                                             probe + row->retry_after_usec - 1, &a, &refusal) == -EDQUOT,
                              "row '%s': room appeared before retry_after", row->name);
                ck_assert_msg(ledger_reserve(l, &s, 1, row->granted_tokens, probe + row->retry_after_usec,
                                             &a, &refusal) == 0,
                              "row '%s': no room at retry_after", row->name);
                ledger_free(l);
        }
}
END_TEST

START_TEST(test_backwards_time) {
        Ledger *l = ledger_new(&params_default);
        LedgerScope *s = ledger_scope_new(l, "s", &limits_none);
        LedgerAllocation *a;
        LedgerRefusal refusal;

        ck_assert_int_eq(ledger_reserve(l, &s, 1, 100, T_BASE + SEC(100), &a, &refusal), 0);
        /* A report stamped 90 s in the past counts at the latest now seen. */
        ck_assert_int_eq(ledger_report(l, a, 10, 10, T_BASE + SEC(10), NULL), 0);
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_MINUTE, T_BASE + SEC(161) - 1), 20);
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_MINUTE, T_BASE + SEC(161)), 0);
        /* Even from time 0. */
        ck_assert_int_eq(ledger_settle(l, a, 20, 20, 0, NULL, NULL), 0);
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_MINUTE, 0), 20);
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_HOUR, 0), 40);
        ck_assert_int_eq(ledger_reserve(l, &s, 1, 100, 0, &a, &refusal), 0);
        ck_assert_uint_eq(ledger_allocation_granted_usec(a), T_BASE + SEC(161));
        ledger_free(l);
}
END_TEST

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

START_TEST(test_ids) {
        enum { N_KEEP = 100, N_CYCLES = 2000 };
        Ledger *l = ledger_new(&params_default);
        LedgerScope *s = ledger_scope_new(l, "s", &limits_none);
        LedgerAllocation *kept[N_KEEP], *a;
        LedgerRefusal refusal;
        uint64_t *ids = malloc((N_KEEP + N_CYCLES) * sizeof(uint64_t));
        size_t n_ids = 0;

        ck_assert_ptr_nonnull(ids);
        ck_assert_ptr_null(ledger_find(l, 0));
        ck_assert_ptr_null(ledger_find(l, 1));
        for (size_t i = 0; i < N_KEEP; i++) {
                ck_assert_int_eq(ledger_reserve(l, &s, 1, 1, T_BASE, &kept[i], &refusal), 0);
                ids[n_ids++] = ledger_allocation_id(kept[i]);
                ck_assert_uint_ne(ids[n_ids - 1], 0);
        }

        /* Settle and re-grant over and over: slots are reused, ids are not,
         * and a stale id never finds the slot's new tenant. */
        for (size_t i = 0; i < N_CYCLES; i++) {
                size_t k = (i * 7) % N_KEEP;
                uint64_t old = ledger_allocation_id(kept[k]);

                ck_assert_int_eq(ledger_settle(l, kept[k], 0, 0, T_BASE, NULL, NULL), 0);
                ck_assert_ptr_null(ledger_find(l, old));
                ck_assert_int_eq(ledger_reserve(l, &s, 1, 1, T_BASE, &kept[k], &refusal), 0);
                ck_assert_ptr_null(ledger_find(l, old));
                ids[n_ids++] = ledger_allocation_id(kept[k]);
                ck_assert_ptr_eq(ledger_find(l, ids[n_ids - 1]), kept[k]);
        }
        for (size_t i = 0; i < N_KEEP; i++)
                ck_assert_ptr_eq(ledger_find(l, ledger_allocation_id(kept[i])), kept[i]);
        ck_assert_ptr_null(ledger_find(l, UINT64_MAX));
        ck_assert_ptr_null(ledger_find(l, UINT64_C(0xffffffff)));

        qsort(ids, n_ids, sizeof(uint64_t), cmp_u64);
        for (size_t i = 1; i < n_ids; i++)
                ck_assert_msg(ids[i] != ids[i - 1], "id %" PRIu64 " handed out twice", ids[i]);

        /* Settling everything and starting over still does not repeat ids. */
        for (size_t i = 0; i < N_KEEP; i++)
                ck_assert_int_eq(ledger_settle(l, kept[i], 0, 0, T_BASE, NULL, NULL), 0);
        ck_assert_int_eq(ledger_reserve(l, &s, 1, 1, T_BASE, &a, &refusal), 0);
        ck_assert_ptr_null(
                bsearch(&(uint64_t){ledger_allocation_id(a)}, ids, n_ids, sizeof(uint64_t), cmp_u64));
        free(ids);
        ledger_free(l);
}
END_TEST

/* SipHash-2-4 against the reference vectors (github.com/veorq/SipHash,
 * vectors.h: key 00 01 .. 0f, message 00 01 .. len-1); the 15-byte one is the
 * example of the paper's appendix A. Both code paths: the tail alone (len <
 * 8, also through siphash24_short()) and whole words plus a tail. */
typedef struct SipRow {
        const char *name;
        size_t len;
        uint64_t expect;
} SipRow;

static const SipRow sip_rows[] = {
        {"empty", 0, UINT64_C(0x726fdb47dd0e0e31)},
        {"1 byte", 1, UINT64_C(0x74f839c593dc67fd)},
        {"2 bytes", 2, UINT64_C(0x0d6c8009d9a94f5a)},
        {"3 bytes", 3, UINT64_C(0x85676696d7fb7e2d)},
        {"4 bytes", 4, UINT64_C(0xcf2794e0277187b7)},
        {"5 bytes (the id round's length)", 5, UINT64_C(0x18765564cd99a68d)},
        {"6 bytes", 6, UINT64_C(0xcbc9466e58fee3ce)},
        {"7 bytes", 7, UINT64_C(0xab0200f58b01d137)},
        {"one word", 8, UINT64_C(0x93f5f5799a932462)},
        {"9 bytes", 9, UINT64_C(0x9e0082df0ba9e4b0)},
        {"12 bytes", 12, UINT64_C(0x751e8fbc860ee5fb)},
        {"paper, appendix A (15 bytes)", 15, UINT64_C(0xa129ca6149be45e5)},
        {"two words", 16, UINT64_C(0x3f2acc7f57c29bdb)},
};

START_TEST(test_siphash_vectors) {
        uint8_t key_bytes[16], msg[16];
        SipHashKey key;

        for (size_t i = 0; i < sizeof(key_bytes); i++)
                key_bytes[i] = msg[i] = (uint8_t)i;
        key = siphash_key(key_bytes);
        for (size_t i = 0; i < N_ROWS(sip_rows); i++) {
                const SipRow *row = &sip_rows[i];
                uint64_t got = siphash24(&key, msg, row->len);

                ck_assert_msg(got == row->expect, "row '%s': %016" PRIx64 ", expected %016" PRIx64,
                              row->name, got, row->expect);
                if (row->len < 8) {
                        uint64_t m = 0;

                        for (size_t b = 0; b < row->len; b++)
                                m |= (uint64_t)msg[b] << (8 * b);
                        got = siphash24_short(&key, m, row->len);
                        ck_assert_msg(got == row->expect, "row '%s': short form %016" PRIx64, row->name,
                                      got);
                }
        }
}
END_TEST

/* Two ledgers, the same operations: the same key gives the same ids, another
 * key other ids, none of which the first ledger finds. NULL: no
 * ledger_set_id_key() (the all-zero key). */
static const uint8_t key_zero[16] = {0};
static const uint8_t key_a[16] = {0x8f, 0x1c, 0x3e, 0x55, 0x02, 0xa9, 0x71, 0xd4,
                                  0x6b, 0x90, 0x2f, 0xee, 0x13, 0x48, 0xc7, 0x5a};
static const uint8_t key_a_last_bit[16] = {0x8f, 0x1c, 0x3e, 0x55, 0x02, 0xa9, 0x71, 0xd4,
                                           0x6b, 0x90, 0x2f, 0xee, 0x13, 0x48, 0xc7, 0xda};
static const uint8_t key_a_first_bit[16] = {0x8e, 0x1c, 0x3e, 0x55, 0x02, 0xa9, 0x71, 0xd4,
                                            0x6b, 0x90, 0x2f, 0xee, 0x13, 0x48, 0xc7, 0x5a};

typedef struct KeyRow {
        const char *name;
        const uint8_t *key1, *key2;
        bool same;
} KeyRow;

static const KeyRow key_rows[] = {
        {"no key is the zero key", NULL, key_zero, true},
        {"same key", key_a, key_a, true},
        {"zero key against a random one", NULL, key_a, false},
        {"keys differing in the first bit", key_a, key_a_first_bit, false},
        {"keys differing in the last bit", key_a, key_a_last_bit, false},
};

static Ledger *keyed_ledger(const uint8_t *key, LedgerScope **ret_scope) {
        Ledger *l = ledger_new(&params_default);

        ck_assert_ptr_nonnull(l);
        if (key)
                ledger_set_id_key(l, key);
        *ret_scope = ledger_scope_new(l, "s", &limits_none);
        ck_assert_ptr_nonnull(*ret_scope);
        return l;
}

START_TEST(test_id_keys) {
        enum { N = 2000 };

        for (size_t i = 0; i < N_ROWS(key_rows); i++) {
                const KeyRow *row = &key_rows[i];
                LedgerScope *s1, *s2;
                Ledger *l1 = keyed_ledger(row->key1, &s1), *l2 = keyed_ledger(row->key2, &s2);
                size_t n_equal = 0, n_found = 0;

                for (size_t k = 0; k < N; k++) {
                        LedgerAllocation *a1, *a2;
                        LedgerRefusal refusal;
                        uint64_t id1, id2;

                        ck_assert_int_eq(ledger_reserve(l1, &s1, 1, 1, T_BASE, &a1, &refusal), 0);
                        ck_assert_int_eq(ledger_reserve(l2, &s2, 1, 1, T_BASE, &a2, &refusal), 0);
                        id1 = ledger_allocation_id(a1);
                        id2 = ledger_allocation_id(a2);
                        n_equal += id1 == id2;
                        n_found += ledger_find(l1, id2) != NULL && id1 != id2;
                        /* Every third one settled at once: reused slots too. */
                        if (k % 3 == 0) {
                                ck_assert_int_eq(ledger_settle(l1, a1, 0, 0, T_BASE, NULL, NULL), 0);
                                ck_assert_int_eq(ledger_settle(l2, a2, 0, 0, T_BASE, NULL, NULL), 0);
                        }
                }
                ck_assert_msg(n_equal == (row->same ? (size_t)N : 0), "row '%s': %zu of %d ids equal",
                              row->name, n_equal, N);
                ck_assert_msg(n_found == 0, "row '%s': %zu ids of the other ledger found", row->name,
                              n_found);
                ledger_free(l1);
                ledger_free(l2);
        }
}
END_TEST

START_TEST(test_scope_lifetime) {
        Ledger *l = ledger_new(&params_default);
        LedgerScope *s = ledger_scope_new(l, "user-1000", &limits_none);
        LedgerScope *g = ledger_scope_new(l, "global", &limits_none);
        LedgerAllocation *a;
        LedgerRefusal refusal;
        int tag;

        ck_assert_str_eq(ledger_scope_name(s), "user-1000");
        ck_assert_ptr_null(ledger_scope_get_userdata(s));
        ledger_scope_set_userdata(s, &tag);
        ck_assert_ptr_eq(ledger_scope_get_userdata(s), &tag);
        ck_assert(ledger_scope_is_idle(s, T_BASE));

        ck_assert_int_eq(ledger_reserve(l, (LedgerScope *[]){g, s}, 2, 10, T_BASE, &a, &refusal), 0);
        ck_assert(!ledger_scope_is_idle(s, T_BASE));
        ck_assert_int_eq(ledger_scope_free(l, s), -EBUSY);
        ck_assert_uint_eq(ledger_scope_n_allocations(s), 1);
        ck_assert_str_eq(ledger_scope_name(s), "user-1000");

        /* Settled with usage: not idle until the day window has let it go. */
        ck_assert_int_eq(ledger_settle(l, a, 5, 0, T_BASE, NULL, NULL), 0);
        ck_assert(!ledger_scope_is_idle(s, T_BASE));
        ck_assert(!ledger_scope_is_idle(s, T_BASE + SEC(86400)));
        ck_assert(!ledger_scope_is_idle(s, T_BASE + SEC(87300) - 1));
        ck_assert(ledger_scope_is_idle(s, T_BASE + SEC(87300)));
        ck_assert_int_eq(ledger_scope_free(l, s), 0);

        /* Settled without usage: idle at once. */
        s = ledger_scope_new(l, "unit", &limits_none);
        ck_assert_int_eq(
                ledger_reserve(l, (LedgerScope *[]){s, g}, 2, 10, T_BASE + SEC(86400), &a, &refusal), 0);
        ck_assert_int_eq(ledger_settle(l, a, 0, 0, T_BASE + SEC(86400), NULL, NULL), 0);
        ck_assert(ledger_scope_is_idle(s, T_BASE + SEC(86400)));
        ck_assert_int_eq(ledger_scope_free(l, NULL), 0);

        /* ledger_free() frees the scopes still linked, and live allocations. */
        ck_assert_int_eq(
                ledger_reserve(l, (LedgerScope *[]){s, g}, 2, 10, T_BASE + SEC(86400), &a, &refusal), 0);
        ck_assert_ptr_null(ledger_free(l));
        ck_assert_ptr_null(ledger_free(NULL));
}
END_TEST

START_TEST(test_set_limits_and_params) {
        static const LedgerLimits roomy = {{0, 0, 0}, 1000};
        static const LedgerLimits small = {{0, 0, 0}, 300};
        static const LedgerParams strict = {.warn_permille = 1000, .hard_permille = 1000};
        Ledger *l = ledger_new(&params_default);
        LedgerScope *s = ledger_scope_new(l, "s", &roomy);
        LedgerAllocation *a, *b;
        LedgerRefusal refusal;

        ck_assert_int_eq(ledger_reserve(l, &s, 1, 200, T_BASE, &a, &refusal), 0);
        ledger_scope_set_limits(s, &small);
        ck_assert_uint_eq(ledger_scope_get_limits(s)->in_flight_tokens, 300);
        /* What is reserved stays; new reservations see the new limit. */
        ck_assert_uint_eq(ledger_scope_reserved(s), 400);
        ck_assert_int_eq(ledger_reserve(l, &s, 1, 1, T_BASE, &b, &refusal), -EDQUOT);
        ck_assert_uint_eq(refusal.limit_tokens, 300);
        ck_assert_uint_eq(refusal.reserved_tokens, 400);
        ledger_scope_set_limits(s, &roomy);

        /* New params apply to new grants only. */
        ledger_set_params(l, &strict);
        ck_assert_uint_eq(ledger_get_params(l)->hard_permille, 1000);
        ck_assert_int_eq(ledger_reserve(l, &s, 1, 200, T_BASE, &b, &refusal), 0);
        ck_assert_uint_eq(ledger_allocation_hard_limit(a), 400);
        ck_assert_uint_eq(ledger_allocation_warn_at(a), 300);
        ck_assert_uint_eq(ledger_allocation_hard_limit(b), 200);
        ck_assert_uint_eq(ledger_allocation_warn_at(b), 200);
        ck_assert_uint_eq(ledger_scope_reserved(s), 600);
        ledger_free(l);
}
END_TEST

START_TEST(test_iteration_and_accessors) {
        Ledger *l = ledger_new(&params_default);
        LedgerScope *g = ledger_scope_new(l, "g", &limits_none);
        LedgerScope *u = ledger_scope_new(l, "u", &limits_none);
        LedgerAllocation *a[6], *it;
        LedgerScope *const *scopes;
        LedgerRefusal refusal;
        size_t expect[] = {0, 2, 4, 5}, n = 0;

        ck_assert_ptr_null(ledger_next(l, NULL));
        for (size_t i = 0; i < 5; i++) {
                ck_assert_int_eq(
                        ledger_reserve(l, (LedgerScope *[]){g, u}, 2, 10 + i, T_BASE + i, &a[i], &refusal),
                        0);
                ledger_allocation_set_userdata(a[i], &expect[0] + i);
        }
        ck_assert_int_eq(ledger_settle(l, a[1], 0, 0, T_BASE, NULL, NULL), 0);
        ck_assert_int_eq(ledger_settle(l, a[3], 0, 0, T_BASE, NULL, NULL), 0);
        /* Reuses a freed slot but goes to the end of grant order. */
        ck_assert_int_eq(ledger_reserve(l, &u, 1, 15, T_BASE + 5, &a[5], &refusal), 0);

        for (it = ledger_next(l, NULL); it; it = ledger_next(l, it)) {
                ck_assert_uint_lt(n, N_ROWS(expect));
                ck_assert_msg(it == a[expect[n]], "position %zu is not allocation %zu", n, expect[n]);
                n++;
        }
        ck_assert_uint_eq(n, N_ROWS(expect));
        ck_assert_uint_eq(ledger_n_allocations(l), 4);
        ck_assert_uint_eq(ledger_scope_n_allocations(g), 3);
        ck_assert_uint_eq(ledger_scope_n_allocations(u), 4);

        ck_assert_ptr_eq(ledger_allocation_get_userdata(a[2]), &expect[2]);
        ck_assert_ptr_null(ledger_allocation_get_userdata(a[5]));
        ck_assert_uint_eq(ledger_allocation_granted_usec(a[4]), T_BASE + 4);
        ck_assert_uint_eq(ledger_allocation_scopes(a[2], &scopes), 2);
        ck_assert_ptr_eq(scopes[0], g);
        ck_assert_ptr_eq(scopes[1], u);
        ck_assert_uint_eq(ledger_allocation_scopes(a[5], &scopes), 1);
        ck_assert_ptr_eq(scopes[0], u);
        ck_assert_int_eq(ledger_report(l, a[2], 3, 4, T_BASE + 6, NULL), 0);
        ck_assert_uint_eq(ledger_allocation_input_tokens(a[2]), 3);
        ck_assert_uint_eq(ledger_allocation_output_tokens(a[2]), 4);
        ck_assert_uint_eq(ledger_allocation_used(a[2]), 7);
        ledger_free(l);
}
END_TEST

/*
 * limits.max_allocations: live allocations charged to the scope at once.
 * Each row: `live` allocations held (granted 10, reserved 20 each), the
 * row's limits, then a reservation of 10.
 */
typedef struct AllocationsRow {
        const char *name;
        size_t live;
        LedgerLimits limits;
        int expect_ret;
        int window;
        uint64_t limit, used;
} AllocationsRow;

/* clang-format off */
static const AllocationsRow allocations_rows[] = {
        {"no limit", 100, {{0, 0, 0}, 0, 0}, 0},
        {"room for one more", 2, {{0, 0, 0}, 0, 3}, 0},
        {"full", 3, {{0, 0, 0}, 0, 3}, -EDQUOT, LEDGER_REFUSAL_ALLOCATIONS, 3, 3},
        {"one", 0, {{0, 0, 0}, 0, 1}, 0},
        {"one, taken", 1, {{0, 0, 0}, 0, 1}, -EDQUOT, LEDGER_REFUSAL_ALLOCATIONS, 1, 1},
        {"lowered below what is live", 5, {{0, 0, 0}, 0, 2}, -EDQUOT, LEDGER_REFUSAL_ALLOCATIONS, 2, 5},
        /* Within one scope, the count is checked before the windows. */
        {"count and minute both full", 2, {{40, 0, 0}, 0, 2}, -EDQUOT, LEDGER_REFUSAL_ALLOCATIONS, 2, 2},
        {"count has room, minute full", 1, {{39, 0, 0}, 0, 2}, -EDQUOT, LEDGER_WINDOW_MINUTE, 39, 0},
        {"count has room, in flight full", 1, {{0, 0, 0}, 39, 2}, -EDQUOT, LEDGER_REFUSAL_IN_FLIGHT, 39, 0},
};
/* clang-format on */

START_TEST(test_max_allocations) {
        ck_assert_int_eq(LEDGER_REFUSAL_IN_FLIGHT, -1);
        ck_assert_int_ne(LEDGER_REFUSAL_ALLOCATIONS, LEDGER_REFUSAL_IN_FLIGHT);
        for (size_t i = 0; i < N_ROWS(allocations_rows); i++) {
                const AllocationsRow *row = &allocations_rows[i];
                Ledger *l = ledger_new(&params_default);
                LedgerScope *s = ledger_scope_new(l, "s", &limits_none);
                LedgerAllocation *held[100], *a;
                LedgerRefusal refusal = {};
                int r;

                for (size_t k = 0; k < row->live; k++)
                        ck_assert_int_eq(ledger_reserve(l, &s, 1, 10, T_BASE, &held[k], &refusal), 0);
                ledger_scope_set_limits(s, &row->limits);
                ck_assert_msg(ledger_scope_get_limits(s)->max_allocations == row->limits.max_allocations,
                              "row '%s': limits kept", row->name);
                r = ledger_reserve(l, &s, 1, 10, T_BASE, &a, &refusal);
                ck_assert_msg(r == row->expect_ret, "row '%s': returned %d", row->name, r);
                if (r == 0) {
                        ck_assert_msg(ledger_scope_n_allocations(s) == row->live + 1, "row '%s'", row->name);
                        ledger_free(l);
                        continue;
                }
                ck_assert_msg(refusal.scope == s, "row '%s': scope", row->name);
                ck_assert_msg(refusal.window == row->window, "row '%s': window %d", row->name,
                              refusal.window);
                ck_assert_msg(refusal.limit_tokens == row->limit, "row '%s': limit %" PRIu64, row->name,
                              refusal.limit_tokens);
                ck_assert_msg(refusal.used_tokens == row->used, "row '%s': used %" PRIu64, row->name,
                              refusal.used_tokens);
                ck_assert_msg(refusal.reserved_tokens == 20 * row->live, "row '%s': reserved %" PRIu64,
                              row->name, refusal.reserved_tokens);
                ck_assert_msg(refusal.retry_after_usec == 0, "row '%s': retry after", row->name);
                ck_assert_msg(ledger_scope_n_allocations(s) == row->live &&
                                      ledger_n_allocations(l) == row->live &&
                                      ledger_scope_reserved(s) == 20 * row->live,
                              "row '%s': the refusal changed the scope", row->name);
                if (row->window == LEDGER_REFUSAL_ALLOCATIONS) {
                        /* Settling makes room, one by one, down to the limit. */
                        size_t k = row->live;
                        while (k >= row->limits.max_allocations) {
                                ck_assert_int_eq(ledger_reserve(l, &s, 1, 10, T_BASE, &a, &refusal),
                                                 -EDQUOT);
                                ck_assert_int_eq(ledger_settle(l, held[--k], 0, 0, T_BASE, NULL, NULL), 0);
                        }
                        ck_assert_msg(ledger_reserve(l, &s, 1, 10, T_BASE, &a, &refusal) == 0,
                                      "row '%s': no room after settling", row->name);
                        ck_assert_msg(ledger_reserve(l, &s, 1, 10, T_BASE, &a, &refusal) == -EDQUOT,
                                      "row '%s': past the limit after settling", row->name);
                }
                ledger_free(l);
        }
}
END_TEST

/* The count is per scope, all or nothing, and the first full scope in the
 * order given is named. */
START_TEST(test_max_allocations_scopes) {
        static const LedgerLimits one = {{0, 0, 0}, 0, 1};
        static const LedgerLimits minute_20 = {{20, 0, 0}, 0, 0};
        Ledger *l = ledger_new(&params_default);
        LedgerScope *a = ledger_scope_new(l, "a", &limits_none);
        LedgerScope *b = ledger_scope_new(l, "b", &one);
        LedgerScope *c = ledger_scope_new(l, "c", &minute_20);
        LedgerAllocation *x, *y;
        LedgerRefusal refusal = {};

        /* Charged to a and c only: b's count is untouched. */
        ck_assert_int_eq(ledger_reserve(l, (LedgerScope *[]){a, c}, 2, 10, T_BASE, &x, &refusal), 0);
        ck_assert_int_eq(ledger_reserve(l, (LedgerScope *[]){a, b}, 2, 1, T_BASE, &y, &refusal), 0);
        ck_assert_uint_eq(ledger_scope_n_allocations(a), 2);
        ck_assert_uint_eq(ledger_scope_n_allocations(b), 1);

        /* b full, c full: whichever comes first is named; nothing is charged. */
        ck_assert_int_eq(ledger_reserve(l, (LedgerScope *[]){a, b, c}, 3, 1, T_BASE, &x, &refusal), -EDQUOT);
        ck_assert_ptr_eq(refusal.scope, b);
        ck_assert_int_eq(refusal.window, LEDGER_REFUSAL_ALLOCATIONS);
        ck_assert_int_eq(ledger_reserve(l, (LedgerScope *[]){c, b, a}, 3, 1, T_BASE, &x, &refusal), -EDQUOT);
        ck_assert_ptr_eq(refusal.scope, c);
        ck_assert_int_eq(refusal.window, LEDGER_WINDOW_MINUTE);
        ck_assert_uint_eq(ledger_scope_n_allocations(a), 2);
        ck_assert_uint_eq(ledger_scope_reserved(a), 22);
        ck_assert_uint_eq(ledger_n_allocations(l), 2);

        /* Settling y frees b's slot. */
        ck_assert_int_eq(ledger_settle(l, y, 1, 0, T_BASE, NULL, NULL), 0);
        ck_assert_int_eq(ledger_reserve(l, (LedgerScope *[]){a, b}, 2, 1, T_BASE, &y, &refusal), 0);
        ck_assert_uint_eq(ledger_scope_n_allocations(b), 1);
        ledger_free(l);
}
END_TEST

/* ledger_reserve_params(): this allocation's multipliers; NULL the ledger's. */
typedef struct ParamsRow {
        const char *name;
        bool has_params;
        LedgerParams params;
        uint64_t granted;
        uint64_t warn_at, hard_limit;
} ParamsRow;

/* clang-format off */
static const ParamsRow params_rows[] = {
        {"NULL: the ledger's", false, {0, 0}, 100, 150, 200},
        {"1x and 1x", true, {1000, 1000}, 100, 100, 100},
        {"rounding up", true, {1200, 1500}, 7, 9, 11},
        {"5x hard", true, {1000, 5000}, 1, 1, 5},
        {"warn equal to hard", true, {3000, 3000}, 3, 9, 9},
        {"largest grant", true, {2000, 3000}, LEDGER_TOKENS_MAX - 1, 2 * (LEDGER_TOKENS_MAX - 1),
         3 * (LEDGER_TOKENS_MAX - 1)},
};
/* clang-format on */

START_TEST(test_reserve_params) {
        for (size_t i = 0; i < N_ROWS(params_rows); i++) {
                const ParamsRow *row = &params_rows[i];
                Ledger *l = ledger_new(&params_default);
                LedgerScope *s = ledger_scope_new(l, "s", &limits_none);
                LedgerAllocation *a, *b;
                LedgerRefusal refusal;
                LedgerState state;
                uint64_t refunded, half;

                ck_assert_int_eq(ledger_reserve_params(l, &s, 1, row->granted,
                                                       row->has_params ? &row->params : NULL, T_BASE, &a,
                                                       &refusal),
                                 0);
                ck_assert_msg(ledger_allocation_warn_at(a) == row->warn_at, "row '%s': warn_at %" PRIu64,
                              row->name, ledger_allocation_warn_at(a));
                ck_assert_msg(ledger_allocation_hard_limit(a) == row->hard_limit, "row '%s': hard %" PRIu64,
                              row->name, ledger_allocation_hard_limit(a));
                ck_assert_msg(ledger_scope_reserved(s) == row->hard_limit, "row '%s': reserved", row->name);
                /* The ledger's own params are untouched. */
                ck_assert_uint_eq(ledger_get_params(l)->warn_permille, 1500);
                ck_assert_uint_eq(ledger_get_params(l)->hard_permille, 2000);
                ck_assert_int_eq(ledger_reserve(l, &s, 1, 10, T_BASE, &b, &refusal), 0);
                ck_assert_uint_eq(ledger_allocation_hard_limit(b), 20);
                ck_assert_int_eq(ledger_settle(l, b, 0, 0, T_BASE, NULL, NULL), 0);

                /* States follow this allocation's thresholds (totals split in two:
                 * each must stay below LEDGER_TOKENS_MAX). */
                half = row->warn_at / 2;
                ck_assert_int_eq(ledger_report(l, a, half, row->warn_at - 1 - half, T_BASE, &state), 0);
                ck_assert_msg(state == LEDGER_STATE_OK, "row '%s': below warn", row->name);
                ck_assert_int_eq(ledger_report(l, a, half, row->warn_at - half, T_BASE, &state), 0);
                ck_assert_msg(state == (row->warn_at < row->hard_limit ? LEDGER_STATE_WARNING
                                                                       : LEDGER_STATE_EXCEEDED),
                              "row '%s': at warn", row->name);
                ck_assert_int_eq(ledger_settle(l, a, half, row->warn_at - half, T_BASE, NULL, &refunded), 0);
                ck_assert_msg(refunded == row->hard_limit - row->warn_at, "row '%s': refunded %" PRIu64,
                              row->name, refunded);
                ck_assert_uint_eq(ledger_scope_reserved(s), 0);
                ledger_free(l);
        }
}
END_TEST

/* Caps see each allocation's own reservation. */
START_TEST(test_reserve_params_caps) {
        static const LedgerLimits cap = {{0, 0, 0}, 450, 0};
        static const LedgerParams x2_5 = {1000, 2500}, x1 = {1000, 1000};
        Ledger *l = ledger_new(&params_default);
        LedgerScope *s = ledger_scope_new(l, "s", &cap);
        LedgerAllocation *a;
        LedgerRefusal refusal;

        ck_assert_int_eq(ledger_reserve_params(l, &s, 1, 100, &x2_5, T_BASE, &a, &refusal), 0); /* 250 */
        ck_assert_int_eq(ledger_reserve_params(l, &s, 1, 101, NULL, T_BASE, &a, &refusal),
                         -EDQUOT); /* 452 */
        ck_assert_int_eq(refusal.window, LEDGER_REFUSAL_IN_FLIGHT);
        ck_assert_int_eq(ledger_reserve_params(l, &s, 1, 99, NULL, T_BASE, &a, &refusal), 0); /* 198: 448 */
        ck_assert_int_eq(ledger_reserve_params(l, &s, 1, 2, &x1, T_BASE, &a, &refusal), 0);   /* 2: 450 */
        ck_assert_int_eq(ledger_reserve_params(l, &s, 1, 1, &x1, T_BASE, &a, &refusal), -EDQUOT);
        ck_assert_uint_eq(ledger_scope_reserved(s), 450);
        ledger_free(l);
}
END_TEST

/*
 * ledger_scope_window_frees_in(): how long until the oldest tokens in the
 * window leave it. Commits (of 100 tokens each, at offsets from T_BASE),
 * then probes: (offset, expected frees_in) for one window.
 */
typedef struct FreesInRow {
        const char *name;
        LedgerWindow window;
        uint64_t commits[3];
        size_t n_commits;
        struct {
                uint64_t at, frees_in;
        } probes[4];
        size_t n_probes;
} FreesInRow;

/* clang-format off */
static const FreesInRow frees_in_rows[] = {
        {"minute: empty", LEDGER_WINDOW_MINUTE, {0}, 0, {{0, 0}, {SEC(1000), 0}}, 2},
        {"minute: at a bucket's start", LEDGER_WINDOW_MINUTE, {0}, 1,
         {{0, SEC(61)}, {SEC(61) - 1, 1}, {SEC(61), 0}}, 3},
        {"minute: mid-bucket", LEDGER_WINDOW_MINUTE, {SEC(5.3)}, 1,
         {{SEC(5.3), SEC(60.7)}, {SEC(60), SEC(6)}, {SEC(66) - 1, 1}, {SEC(66), 0}}, 4},
        {"minute: a bucket's last usec", LEDGER_WINDOW_MINUTE, {SEC(10) - 1}, 1,
         {{SEC(10) - 1, SEC(60) + 1}, {SEC(70) - 1, 1}, {SEC(70), 0}}, 3},
        {"minute: the oldest of two", LEDGER_WINDOW_MINUTE, {SEC(10), SEC(20)}, 2,
         {{SEC(30), SEC(41)}, {SEC(71) - 1, 1}, {SEC(71), SEC(10)}, {SEC(81), 0}}, 4},
        {"minute: two in one bucket", LEDGER_WINDOW_MINUTE, {SEC(10.1), SEC(10.9)}, 2,
         {{SEC(11), SEC(60)}, {SEC(71), 0}}, 2},
        {"hour: mid-bucket", LEDGER_WINDOW_HOUR, {SEC(5.3)}, 1,
         {{SEC(5.3), SEC(3654.7)}, {SEC(3660) - 1, 1}, {SEC(3660), 0}}, 3},
        {"hour: the oldest of two", LEDGER_WINDOW_HOUR, {SEC(10), SEC(130)}, 2,
         {{SEC(200), SEC(3460)}, {SEC(3660), SEC(120)}, {SEC(3780), 0}}, 3},
        {"day: mid-bucket", LEDGER_WINDOW_DAY, {SEC(5.3)}, 1,
         {{SEC(5.3), SEC(87294.7)}, {SEC(87300) - 1, 1}, {SEC(87300), 0}}, 3},
        {"day: the oldest of two", LEDGER_WINDOW_DAY, {SEC(10), SEC(1000)}, 2,
         {{SEC(2000), SEC(85300)}, {SEC(87300), SEC(900)}, {SEC(88200), 0}}, 3},
        {"day: long after", LEDGER_WINDOW_DAY, {SEC(10)}, 1, {{SEC(86400 * 30), 0}}, 1},
};
/* clang-format on */

START_TEST(test_frees_in) {
        for (size_t i = 0; i < N_ROWS(frees_in_rows); i++) {
                const FreesInRow *row = &frees_in_rows[i];
                Ledger *l = ledger_new(&params_default);
                LedgerScope *s = ledger_scope_new(l, "s", &limits_none);

                for (size_t c = 0; c < row->n_commits; c++)
                        commit_tokens(l, &s, 1, 100, T_BASE + row->commits[c]);
                for (size_t p = 0; p < row->n_probes; p++) {
                        uint64_t now = T_BASE + row->probes[p].at;
                        uint64_t got = ledger_scope_window_frees_in(s, row->window, now);

                        ck_assert_msg(got == row->probes[p].frees_in,
                                      "row '%s', probe %zu: frees in %" PRIu64 " usec, expected %" PRIu64,
                                      row->name, p, got, row->probes[p].frees_in);
                        /* It agrees with the window: empty exactly when 0, and the
                         * tokens are still in at now + frees_in - 1 but not all of
                         * the oldest at now + frees_in. */
                        ck_assert_msg((got == 0) == (ledger_scope_window_used(s, row->window, now) == 0),
                                      "row '%s', probe %zu: 0 iff empty", row->name, p);
                }
                ledger_free(l);
        }
}
END_TEST

/* Reservations are not in the windows; overruns are; time does not run
 * backwards; a refusal's retry_after is the oldest tokens' frees_in when
 * they alone make room. */
START_TEST(test_frees_in_more) {
        static const LedgerLimits minute_700 = {{700, 0, 0}, 0, 0};
        Ledger *l = ledger_new(&params_default);
        LedgerScope *s = ledger_scope_new(l, "s", &limits_none);
        LedgerAllocation *a;
        LedgerRefusal refusal = {};

        /* Reserved, nothing used: the windows are empty. */
        ck_assert_int_eq(ledger_reserve(l, &s, 1, 100, T_BASE, &a, &refusal), 0);
        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++)
                ck_assert_uint_eq(ledger_scope_window_frees_in(s, w, T_BASE), 0);
        /* An overrun is committed like the rest. */
        ck_assert_int_eq(ledger_settle(l, a, 300, 0, T_BASE + SEC(10), NULL, NULL), 0);
        ck_assert_uint_eq(ledger_scope_window_frees_in(s, LEDGER_WINDOW_MINUTE, T_BASE + SEC(10)), SEC(61));
        /* An earlier now is the latest seen. */
        ck_assert_uint_eq(ledger_scope_window_frees_in(s, LEDGER_WINDOW_MINUTE, T_BASE + SEC(30)), SEC(41));
        ck_assert_uint_eq(ledger_scope_window_frees_in(s, LEDGER_WINDOW_MINUTE, T_BASE), SEC(41));
        ledger_free(l);

        l = ledger_new(&params_default);
        s = ledger_scope_new(l, "s", &limits_none);
        commit_tokens(l, &s, 1, 300, T_BASE + SEC(10));
        commit_tokens(l, &s, 1, 300, T_BASE + SEC(20));
        ledger_scope_set_limits(s, &minute_700);
        ck_assert_int_eq(ledger_reserve(l, &s, 1, 100, T_BASE + SEC(30), &a, &refusal), -EDQUOT);
        ck_assert_int_eq(refusal.window, LEDGER_WINDOW_MINUTE);
        ck_assert_uint_eq(refusal.retry_after_usec, SEC(41));
        ck_assert_uint_eq(ledger_scope_window_frees_in(s, LEDGER_WINDOW_MINUTE, T_BASE + SEC(30)),
                          refusal.retry_after_usec);
        ledger_free(l);
}
END_TEST

/* 100,000 open allocations must cost under 512 bytes each, slab slack
 * included. Informational output only; no timing. */
START_TEST(test_memory_per_allocation) {
        enum { N = 100000 };
        Ledger *l = ledger_new(&params_default);
        LedgerScope *scopes[3] = {
                ledger_scope_new(l, "g", &limits_none),
                ledger_scope_new(l, "u", &limits_none),
                ledger_scope_new(l, "p", &limits_none),
        };
        LedgerAllocation *a;
        LedgerRefusal refusal;
        bool measured = heap_accounting_works();
        size_t before = heap_bytes_in_use(), per;

        for (size_t i = 0; i < N; i++)
                ck_assert_int_eq(ledger_reserve(l, scopes, 3, 100, T_BASE, &a, &refusal), 0);
        per = (heap_bytes_in_use() - before) / N;
        if (measured) {
                printf("ledger: %zu bytes per open allocation\n", per);
                ck_assert_uint_gt(per, 0);
                ck_assert_uint_lt(per, 512);
        }
        ck_assert_uint_eq(ledger_scope_reserved(scopes[0]), UINT64_C(200) * N);
        ledger_free(l);
}
END_TEST

/* --- ledger_room() (issue 10) --- */

static bool refusals_equal(const LedgerRefusal *a, const LedgerRefusal *b) {
        return a->scope == b->scope && a->window == b->window && a->limit_tokens == b->limit_tokens &&
               a->used_tokens == b->used_tokens && a->reserved_tokens == b->reserved_tokens &&
               a->retry_after_usec == b->retry_after_usec;
}

/* Whether ledger_reserve_params() accepts g now; undoes the reservation (a
 * settlement at zero usage commits nothing and refunds it all). */
static bool reserve_fits(Ledger *l, LedgerScope *const *scopes, size_t n, uint64_t g,
                         const LedgerParams *params, uint64_t now_usec, LedgerRefusal *ret_refusal) {
        LedgerAllocation *a;
        int r = ledger_reserve_params(l, scopes, n, g, params, now_usec, &a, ret_refusal);

        CHECK(r == 0 || r == -EDQUOT, "reserve returned %d", r);
        if (r < 0)
                return false;
        r = ledger_settle(l, a, 0, 0, now_usec, NULL, NULL);
        CHECK(r == 0, "settle returned %d", r);
        return true;
}

static uint64_t rnd(uint64_t *seed, uint64_t max) {
        return splitmix64(seed) % (max + 1);
}

/* A limit near x (below, at, mostly above), none, or UINT64_MAX. */
static uint64_t random_limit_near(uint64_t *seed, uint64_t x) {
        uint64_t dice = rnd(seed, 19);

        if (dice < 6)
                return 0;
        if (dice < 8)
                return UINT64_MAX;
        if (dice == 8)
                return x + rnd(seed, 3);
        if (dice == 9)
                return sat_sub_test(x, rnd(seed, 300));
        return x + rnd(seed, 6000);
}

/* Scopes with commits of the last two hours and live allocations on random
 * subsets (all while unlimited), then random limits around what they hold. */
static void random_room_state(Ledger *l, LedgerScope **scopes, size_t n, uint64_t *seed, uint64_t now_usec) {
        uint64_t t = now_usec - SEC(7200);
        unsigned n_ops = (unsigned)rnd(seed, 12);

        for (unsigned op = 0; op < n_ops; op++) {
                LedgerScope *subset[4];
                size_t k = 0;
                LedgerAllocation *a;
                LedgerRefusal refusal;

                t += rnd(seed, SEC(1200));
                if (t > now_usec)
                        t = now_usec;
                for (size_t i = 0; i < n; i++)
                        if (rnd(seed, 2) != 0)
                                subset[k++] = scopes[i];
                if (k == 0)
                        subset[k++] = scopes[0];
                CHECK(ledger_reserve(l, subset, k, 1 + rnd(seed, 800), t, &a, &refusal) == 0, "reserve");
                if (rnd(seed, 1) == 0)
                        CHECK(ledger_settle(l, a, rnd(seed, 1500), 0, t, NULL, NULL) == 0, "settle");
        }

        for (size_t i = 0; i < n; i++) {
                LedgerScope *s = scopes[i];
                LedgerLimits limits = {};

                for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++)
                        limits.window_tokens[w] = random_limit_near(
                                seed, ledger_scope_window_used(s, w, now_usec) + ledger_scope_reserved(s));
                limits.in_flight_tokens = random_limit_near(seed, ledger_scope_reserved(s));
                if (rnd(seed, 7) == 0)
                        limits.max_allocations = ledger_scope_n_allocations(s);
                else if (rnd(seed, 3) == 0)
                        limits.max_allocations = ledger_scope_n_allocations(s) + 1 + rnd(seed, 2);
                ledger_scope_set_limits(s, &limits);
        }
}

/* ledger_room() is the largest g <= want that ledger_reserve_params()
 * accepts (every g for small wants, the edges otherwise), and its refusal is
 * reserve's at want; it reserves nothing. */
START_TEST(test_room_brute_force) {
        uint64_t seed = 0x7007;

        for (unsigned iter = 0; iter < 3000; iter++) {
                Ledger *l = ledger_new(&params_default);
                LedgerScope *scopes[4];
                size_t n = 1 + rnd(&seed, 3);
                LedgerParams params = {.warn_permille = 1000,
                                       .hard_permille = 1000 + (uint32_t)rnd(&seed, 4000),
                                       /* half the time scaled by a power factor */
                                       .limit_permille = rnd(&seed, 1) ? (uint32_t)rnd(&seed, 1000) : 0};
                const LedgerParams *p = rnd(&seed, 3) == 0 ? NULL : &params;
                uint64_t now_usec = T_BASE + rnd(&seed, SEC(3600)), want = 1 + rnd(&seed, 3000), room;
                LedgerRefusal got = {.window = 99}, expect = {};
                uint64_t reserved_before[4];

                for (size_t i = 0; i < n; i++) {
                        char name[24]; /* room for any size_t */

                        snprintf(name, sizeof(name), "s%zu", i);
                        scopes[i] = ledger_scope_new(l, name, &limits_none);
                }
                random_room_state(l, scopes, n, &seed, now_usec);
                for (size_t i = 0; i < n; i++)
                        reserved_before[i] = ledger_scope_reserved(scopes[i]);

                room = ledger_room(l, scopes, n, p, want, now_usec, &got);
                CHECK(room <= want, "iter %u: room %" PRIu64 " > want %" PRIu64, iter, room, want);
                for (size_t i = 0; i < n; i++)
                        CHECK(ledger_scope_reserved(scopes[i]) == reserved_before[i],
                              "iter %u: room reserved", iter);

                if (want <= 200)
                        for (uint64_t g = 1; g <= want; g++)
                                CHECK(reserve_fits(l, scopes, n, g, p, now_usec, &expect) == (g <= room),
                                      "iter %u: g %" PRIu64 " room %" PRIu64, iter, g, room);
                else {
                        if (room > 0)
                                CHECK(reserve_fits(l, scopes, n, room, p, now_usec, &expect),
                                      "iter %u: room %" PRIu64 " refused", iter, room);
                        if (room < want)
                                CHECK(!reserve_fits(l, scopes, n, room + 1, p, now_usec, &expect),
                                      "iter %u: room + 1 = %" PRIu64 " fits", iter, room + 1);
                }

                if (room < want) {
                        CHECK(!reserve_fits(l, scopes, n, want, p, now_usec, &expect), "iter %u: want fits",
                              iter);
                        CHECK(refusals_equal(&got, &expect),
                              "iter %u: refusal window %d limit %" PRIu64 " used %" PRIu64
                              " reserved %" PRIu64 " retry %" PRIu64 ", reserve says %d %" PRIu64 " %" PRIu64
                              " %" PRIu64 " %" PRIu64,
                              iter, got.window, got.limit_tokens, got.used_tokens, got.reserved_tokens,
                              got.retry_after_usec, expect.window, expect.limit_tokens, expect.used_tokens,
                              expect.reserved_tokens, expect.retry_after_usec);
                } else
                        CHECK(got.window == 99, "iter %u: refusal filled for a fit", iter);
                ledger_free(l);
        }
}
END_TEST

/* --- ledger_scope_restore() (issue 12) --- */

/* Restored usage counts in each window until live usage of that age would
 * have left it, and counts against the limits like live usage. */
START_TEST(test_restore_cases) {
        static const LedgerLimits minute_1000 = {{1000, 0, 0}, 0, 0};
        Ledger *l = ledger_new(&params_default);
        LedgerScope *s = ledger_scope_new(l, "s", &minute_1000);
        const uint64_t t = T_BASE;

        ledger_scope_restore(s, SEC(30), 500, t);
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_MINUTE, t), 500);
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_HOUR, t), 500);
        ck_assert_uint_eq(ledger_scope_committed_total(s), 500);
        /* 500 in the minute window, multiplier 2.0: 250 more fit. */
        ck_assert_uint_eq(ledger_room(l, &s, 1, NULL, 10000, t, NULL), 250);
        /* Committed 30 s before t, in a 1 s bucket: counts at t + 30 s, not at t + 31 s. */
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_MINUTE, t + SEC(30)), 500);
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_MINUTE, t + SEC(31)), 0);
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_HOUR, t + SEC(31)), 500);

        /* Two hours old: the day window only; two days old: no window. */
        ledger_scope_restore(s, SEC(7200), 70, t + SEC(31));
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_HOUR, t + SEC(31)), 500);
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_DAY, t + SEC(31)), 570);
        ledger_scope_restore(s, SEC(2 * 86400), 9, t + SEC(31));
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_DAY, t + SEC(31)), 570);
        ck_assert_uint_eq(ledger_scope_committed_total(s), 579);
        /* Older than the clock itself counts from 0 (long gone here). */
        ck_assert_int_eq(ledger_scope_restore(s, UINT64_MAX, 1, t + SEC(31)), 0);
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_DAY, t + SEC(31)), 570);
        /* A count out of range (a damaged file) is refused, nothing restored. */
        ck_assert_int_eq(ledger_scope_restore(s, SEC(1), LEDGER_TOKENS_MAX, t + SEC(31)), -ERANGE);
        ck_assert_int_eq(ledger_scope_restore(s, SEC(1), UINT64_MAX, t + SEC(31)), -ERANGE);
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_MINUTE, t + SEC(31)), 0);
        ck_assert_uint_eq(ledger_scope_committed_total(s), 580);
        ledger_free(l);
}
END_TEST

/* Usage committed live at random times, and the same usage restored at the
 * end with each commit's age, give the same windows at every later time. */
START_TEST(test_restore_matches_live) {
        uint64_t seed = 0x2e5702e;

        for (unsigned iter = 0; iter < 200; iter++) {
                Ledger *live = ledger_new(&params_default), *restored = ledger_new(&params_default);
                LedgerScope *a = ledger_scope_new(live, "a", &limits_none),
                            *b = ledger_scope_new(restored, "b", &limits_none);
                uint64_t t = T_BASE, times[64], tokens[64], end;
                unsigned n = 1 + (unsigned)rnd(&seed, 63);

                for (unsigned i = 0; i < n; i++) {
                        LedgerAllocation *x;

                        t += rnd(&seed, 3) == 0 ? rnd(&seed, SEC(4000)) : rnd(&seed, SEC(20));
                        times[i] = t;
                        tokens[i] = rnd(&seed, 5000);
                        ck_assert_int_eq(ledger_reserve(live, &a, 1, 1 + tokens[i], t, &x, NULL), 0);
                        ck_assert_int_eq(ledger_settle(live, x, tokens[i], 0, t, NULL, NULL), 0);
                }
                end = t + rnd(&seed, SEC(100));
                for (unsigned i = 0; i < n; i++)
                        ledger_scope_restore(b, end - times[i], tokens[i], end);
                CHECK(ledger_scope_committed_total(a) == ledger_scope_committed_total(b), "iter %u: total",
                      iter);
                for (uint64_t later = end; later < end + SEC(90000); later += SEC(1 + rnd(&seed, 3000)))
                        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++)
                                CHECK(ledger_scope_window_used(a, w, later) ==
                                              ledger_scope_window_used(b, w, later),
                                      "iter %u: window %d at +%" PRIu64 " us: live %" PRIu64
                                      ", restored %" PRIu64,
                                      iter, (int)w, later - end, ledger_scope_window_used(a, w, later),
                                      ledger_scope_window_used(b, w, later));
                ledger_free(live);
                ledger_free(restored);
        }
}
END_TEST

/* limit_permille (the power factor): window limits count scaled, rounded
 * down and at least 1; in-flight caps and max_allocations do not; the
 * refusal names the scaled limit. */
START_TEST(test_room_scaled_limits) {
        static const LedgerLimits minute_1000 = {{1000, 0, 0}, 0, 0}, cap_1000 = {{0, 0, 0}, 1000, 0},
                                  minute_3 = {{3, 0, 0}, 0, 0};
        const LedgerParams half = {1000, 1000, 500}, tenth = {1000, 1000, 100}, none = {1000, 1000, 0},
                           one = {1000, 1000, 1};
        Ledger *l = ledger_new(&params_default);
        LedgerScope *m = ledger_scope_new(l, "m", &minute_1000), *c = ledger_scope_new(l, "c", &cap_1000),
                    *t = ledger_scope_new(l, "t", &minute_3);
        LedgerRefusal refusal = {};
        LedgerAllocation *a;

        ck_assert_int_eq(ledger_reserve_params(l, &m, 1, 300, &none, T_BASE, &a, &refusal), 0);
        ck_assert_uint_eq(ledger_room(l, &m, 1, &none, 10000, T_BASE, NULL), 700);
        ck_assert_uint_eq(ledger_room(l, &m, 1, &half, 10000, T_BASE, &refusal), 200);
        ck_assert_uint_eq(refusal.limit_tokens, 500);
        ck_assert_uint_eq(ledger_room(l, &m, 1, &tenth, 10000, T_BASE, NULL), 0);
        ck_assert_int_eq(ledger_reserve_params(l, &m, 1, 201, &half, T_BASE, &a, &refusal), -EDQUOT);
        ck_assert_uint_eq(refusal.limit_tokens, 500);
        ck_assert_int_eq(ledger_reserve_params(l, &m, 1, 200, &half, T_BASE, &a, &refusal), 0);
        /* The in-flight cap is not scaled. */
        ck_assert_uint_eq(ledger_room(l, &c, 1, &tenth, 10000, T_BASE, NULL), 1000);
        /* floor(3 x 1 / 1000) = 0 counts as 1. */
        ck_assert_uint_eq(ledger_room(l, &t, 1, &one, 10000, T_BASE, NULL), 1);
        ledger_free(l);
}
END_TEST

/* Hand-made cases: the multiplier's rounding, max_allocations, several
 * scopes (the tightest binds, the first refuses), a NULL refusal. */
START_TEST(test_room_cases) {
        static const LedgerLimits cap_1000 = {{0, 0, 0}, 1000, 0}, minute_999 = {{999, 0, 0}, 0, 0},
                                  one_allocation = {{0, 0, 0}, 0, 1};
        static const LedgerParams x1_5 = {1000, 1500};
        Ledger *l = ledger_new(&params_default);
        LedgerScope *a = ledger_scope_new(l, "a", &cap_1000), *b = ledger_scope_new(l, "b", &minute_999);
        LedgerScope *c = ledger_scope_new(l, "c", &one_allocation);
        LedgerScope *ab[] = {a, b}, *ba[] = {b, a}, *abc[] = {a, b, c};
        LedgerAllocation *x;
        LedgerRefusal refusal;

        /* 2x: 1000 / 2 = 500 fits the cap; 999 / 2 = 499 the minute. */
        ck_assert_uint_eq(ledger_room(l, &a, 1, NULL, 10000, T_BASE, NULL), 500);
        ck_assert_uint_eq(ledger_room(l, &a, 1, NULL, 500, T_BASE, &refusal), 500);
        ck_assert_uint_eq(ledger_room(l, ab, 2, NULL, 10000, T_BASE, &refusal), 499);
        ck_assert_ptr_eq(refusal.scope, a); /* the first in order without room for 10000 */
        ck_assert_int_eq(refusal.window, LEDGER_REFUSAL_IN_FLIGHT);
        ck_assert_uint_eq(ledger_room(l, ba, 2, NULL, 10000, T_BASE, &refusal), 499);
        ck_assert_ptr_eq(refusal.scope, b);
        ck_assert_int_eq(refusal.window, LEDGER_WINDOW_MINUTE);
        ck_assert_uint_eq(refusal.limit_tokens, 999);
        ck_assert_uint_eq(refusal.retry_after_usec, 0); /* 20000 never fits 999 */
        /* 1.5x: ceil(666 x 1.5) = 999, ceil(667 x 1.5) = 1001. */
        ck_assert_uint_eq(ledger_room(l, ab, 2, &x1_5, 10000, T_BASE, NULL), 666);
        /* A scope at max_allocations: nothing fits. */
        ck_assert_uint_eq(ledger_room(l, abc, 3, NULL, 10, T_BASE, NULL), 10);
        ck_assert_int_eq(ledger_reserve(l, &c, 1, 1, T_BASE, &x, &refusal), 0);
        ck_assert_uint_eq(ledger_room(l, abc, 3, NULL, 10, T_BASE, &refusal), 0);
        ck_assert_ptr_eq(refusal.scope, c);
        ck_assert_int_eq(refusal.window, LEDGER_REFUSAL_ALLOCATIONS);
        ck_assert_int_eq(ledger_settle(l, x, 0, 0, T_BASE, NULL, NULL), 0);
        /* Reservations and commits take room; windows age. */
        ck_assert_int_eq(ledger_reserve(l, ab, 2, 100, T_BASE, &x, &refusal), 0); /* 200 */
        ck_assert_uint_eq(ledger_room(l, ab, 2, NULL, 10000, T_BASE, NULL), 399);
        ck_assert_int_eq(ledger_settle(l, x, 300, 0, T_BASE, NULL, NULL), 0); /* 300 committed */
        ck_assert_uint_eq(ledger_room(l, ab, 2, NULL, 10000, T_BASE, &refusal), 349);
        ck_assert_ptr_eq(refusal.scope, a);
        ck_assert_uint_eq(ledger_room(l, ab, 2, NULL, 10000, T_BASE + SEC(61), NULL), 499);
        ck_assert_uint_eq(ledger_room(l, ab, 2, NULL, 1, T_BASE + SEC(61), NULL), 1);
        ledger_free(l);
}
END_TEST

/* --- ledger_reserve_unchecked() (issue 10) --- */

START_TEST(test_reserve_unchecked) {
        static const LedgerLimits tight = {{100, 100, 100}, 100, 1};
        static const LedgerParams x3 = {1500, 3000};
        Ledger *l = ledger_new(&params_default);
        LedgerScope *s = ledger_scope_new(l, "tight", &tight),
                    *free_scope = ledger_scope_new(l, "free", &limits_none);
        LedgerScope *both[] = {s, free_scope};
        LedgerAllocation *a, *b, *c;
        LedgerRefusal refusal;
        LedgerState state;
        uint64_t used, refunded;

        /* Past every limit of the first scope: window, in flight, max_allocations. */
        ck_assert_int_eq(ledger_reserve_unchecked(l, both, 2, 500, NULL, T_BASE, &a), 0);
        ck_assert_uint_eq(ledger_allocation_hard_limit(a), 1000);
        ck_assert_uint_eq(ledger_allocation_warn_at(a), 750);
        ck_assert_uint_eq(ledger_scope_reserved(s), 1000);
        ck_assert_uint_eq(ledger_scope_reserved(free_scope), 1000);
        ck_assert_int_eq(ledger_reserve_unchecked(l, both, 2, 100, &x3, T_BASE, &b), 0);
        ck_assert_uint_eq(ledger_allocation_hard_limit(b), 300);
        ck_assert_uint_eq(ledger_allocation_warn_at(b), 150);
        ck_assert_uint_eq(ledger_scope_n_allocations(s), 2);
        ck_assert_uint_eq(ledger_scope_reserved(s), 1300);
        ck_assert_ptr_eq(ledger_find(l, ledger_allocation_id(a)), a);
        ck_assert_uint_eq(ledger_n_allocations(l), 2);

        /* Checked reservations see what the unchecked ones hold. */
        ck_assert_int_eq(ledger_reserve(l, both, 2, 1, T_BASE, &c, &refusal), -EDQUOT);
        ck_assert_int_eq(refusal.window, LEDGER_REFUSAL_ALLOCATIONS);
        ck_assert_uint_eq(ledger_room(l, &free_scope, 1, NULL, 10, T_BASE, NULL), 10);
        ck_assert_uint_eq(ledger_room(l, both, 2, NULL, 10, T_BASE, NULL), 0);

        /* Reports and settlement as for any allocation. */
        ck_assert_int_eq(ledger_report(l, a, 400, 400, T_BASE + SEC(1), &state), 0);
        ck_assert_int_eq(state, LEDGER_STATE_WARNING);
        ck_assert_uint_eq(ledger_scope_reserved(s), 500);
        ck_assert_uint_eq(ledger_scope_window_used(s, LEDGER_WINDOW_MINUTE, T_BASE + SEC(1)), 800);
        ck_assert_int_eq(ledger_settle(l, a, 400, 700, T_BASE + SEC(2), &used, &refunded), 0);
        ck_assert_uint_eq(used, 1100);
        ck_assert_uint_eq(refunded, 0);
        ck_assert_uint_eq(ledger_scope_reserved(s), 300);
        ck_assert_uint_eq(ledger_scope_committed_total(s), 1100);
        ck_assert_int_eq(ledger_settle(l, b, 50, 0, T_BASE + SEC(2), &used, &refunded), 0);
        ck_assert_uint_eq(refunded, 250);
        ck_assert_uint_eq(ledger_scope_reserved(s), 0);
        ck_assert_uint_eq(ledger_scope_reserved(free_scope), 0);
        ck_assert_uint_eq(ledger_scope_n_allocations(s), 0);
        ck_assert_uint_eq(ledger_scope_committed_total(free_scope), 1150);
        ck_assert_uint_eq(ledger_n_allocations(l), 0);
        ck_assert_int_eq(ledger_scope_free(l, s), 0);
        ledger_free(l);
}
END_TEST

/* Past 2^64 - 1 reserved the total saturates and stays there (refusing every
 * checked reservation) until the last allocation of the scope is settled. */
START_TEST(test_reserve_unchecked_saturates) {
        static const LedgerParams x5 = {1000, 5000};
        static const LedgerLimits cap_1 = {{0, 0, 0}, 1, 0};
        const uint64_t big = LEDGER_TOKENS_MAX - 1, each = big * 5;
        const size_t n = (size_t)(UINT64_MAX / each) + 2;
        Ledger *l = ledger_new(&params_default);
        LedgerScope *s = ledger_scope_new(l, "s", &limits_none),
                    *other = ledger_scope_new(l, "o", &limits_none);
        LedgerAllocation **held = calloc(n, sizeof(*held)), *a;
        LedgerRefusal refusal;

        ck_assert_ptr_nonnull(held);
        for (size_t i = 0; i < n; i++)
                CHECK(ledger_reserve_unchecked(l, &s, 1, big, &x5, T_BASE, &held[i]) == 0, "unchecked %zu",
                      i);
        ck_assert_uint_eq(ledger_scope_reserved(s), UINT64_MAX);
        ck_assert_uint_eq(ledger_room(l, &s, 1, NULL, 1, T_BASE, &refusal), 0);
        ck_assert_int_eq(refusal.window, LEDGER_REFUSAL_IN_FLIGHT);
        ck_assert_uint_eq(refusal.limit_tokens, UINT64_MAX);
        ck_assert_int_eq(ledger_reserve(l, &s, 1, 1, T_BASE, &a, &refusal), -EDQUOT);
        ck_assert_uint_eq(ledger_scope_utilisation_permille(s, T_BASE), 0); /* no limit */
        ledger_scope_set_limits(s, &cap_1);
        ck_assert_uint_eq(ledger_scope_utilisation_permille(s, T_BASE), UINT32_MAX);
        ledger_scope_set_limits(s, &limits_none);

        /* Usage and settlement keep it saturated, with no underflow. */
        ck_assert_int_eq(ledger_report(l, held[0], big, big, T_BASE, NULL), 0);
        for (size_t i = 0; i + 1 < n; i++) {
                CHECK(ledger_settle(l, held[i], i == 0 ? big : 0, i == 0 ? big : 0, T_BASE, NULL, NULL) == 0,
                      "settle %zu", i);
                CHECK(ledger_scope_reserved(s) == UINT64_MAX, "settle %zu: reserved", i);
        }
        ck_assert_int_eq(ledger_settle(l, held[n - 1], 0, 0, T_BASE, NULL, NULL), 0);
        ck_assert_uint_eq(ledger_scope_reserved(s), 0);
        ck_assert_uint_eq(ledger_scope_committed_total(s), 2 * big);
        /* Exact again: checked reservations count as before. */
        ck_assert_int_eq(ledger_reserve(l, &s, 1, 10, T_BASE, &a, &refusal), 0);
        ck_assert_uint_eq(ledger_scope_reserved(s), 20);
        ck_assert_uint_eq(ledger_scope_reserved(other), 0);
        free(held);
        ledger_free(l);
}
END_TEST

/* --- utilisation, degraded flag, queue slot (issue 10) --- */

typedef struct UtilisationRow {
        const char *name;
        LedgerLimits limits;
        uint64_t at_usec; /* after T_BASE */
        uint32_t expect_permille;
} UtilisationRow;

/* Each row: 300 tokens committed at T_BASE, 200 reserved (one allocation of
 * 100 at 2x), then the row's limits, read at T_BASE + at_usec. */
static const UtilisationRow utilisation_rows[] = {
        {"no limit", {{0, 0, 0}, 0, 0}, 0, 0},
        {"max_allocations does not count", {{0, 0, 0}, 0, 1}, 0, 0},
        {"minute half", {{1000, 0, 0}, 0, 0}, 0, 500},
        {"minute rounded down", {{600, 0, 0}, 0, 0}, 0, 833},
        {"minute exactly full", {{500, 0, 0}, 0, 0}, 0, 1000},
        {"minute past its limit", {{250, 0, 0}, 0, 0}, 0, 2000},
        {"minute aged: only the reservation", {{1000, 0, 0}, 0, 0}, SEC(61), 200},
        {"minute just before ageing", {{1000, 0, 0}, 0, 0}, SEC(61) - 1, 500},
        {"hour", {{0, 2000, 0}, 0, 0}, 0, 250},
        {"day", {{0, 0, 5000}, 0, 0}, 0, 100},
        {"in flight", {{0, 0, 0}, 250, 0}, 0, 800},
        {"in flight ignores commits", {{0, 0, 0}, 1000, 0}, 0, 200},
        {"the tightest window", {{10000, 1000, 100000}, 0, 0}, 0, 500},
        {"the cap tighter than windows", {{10000, 1000, 0}, 210, 0}, 0, 952},
        {"windows tighter than the cap", {{0, 0, 400}, 400, 0}, 0, 1250},
        {"a limit of 1", {{1, 0, 0}, 0, 0}, 0, 500000},
        {"the day remembers after an hour", {{0, 1000, 1000}, 0, 0}, SEC(3661), 500},
};

START_TEST(test_utilisation) {
        for (size_t i = 0; i < N_ROWS(utilisation_rows); i++) {
                const UtilisationRow *row = &utilisation_rows[i];
                Ledger *l = ledger_new(&params_default);
                LedgerScope *s = ledger_scope_new(l, "s", &limits_none);
                LedgerAllocation *a;
                LedgerRefusal refusal;
                uint32_t got;

                commit_tokens(l, &s, 1, 300, T_BASE);
                ck_assert_int_eq(ledger_reserve(l, &s, 1, 100, T_BASE, &a, &refusal), 0);
                ledger_scope_set_limits(s, &row->limits);
                got = ledger_scope_utilisation_permille(s, T_BASE + row->at_usec);
                ck_assert_msg(got == row->expect_permille,
                              "row '%s': %" PRIu32 " permille, expected %" PRIu32, row->name, got,
                              row->expect_permille);
                ledger_free(l);
        }
}
END_TEST

START_TEST(test_utilisation_saturates) {
        static const LedgerLimits minute_1 = {{1, 0, 0}, 0, 0};
        Ledger *l = ledger_new(&params_default);
        LedgerScope *s = ledger_scope_new(l, "s", &limits_none);

        commit_tokens(l, &s, 1, UINT64_C(5000000000), T_BASE); /* x 1000 > UINT32_MAX */
        ledger_scope_set_limits(s, &minute_1);
        ck_assert_uint_eq(ledger_scope_utilisation_permille(s, T_BASE), UINT32_MAX);
        ledger_free(l);
}
END_TEST

START_TEST(test_degraded_and_queue) {
        Ledger *l = ledger_new(&params_default);
        LedgerScope *s = ledger_scope_new(l, "s", &limits_none), *t = ledger_scope_new(l, "t", &limits_none);
        int queue, userdata;

        ck_assert(!ledger_scope_get_degraded(s));
        ck_assert_ptr_null(ledger_scope_get_queue(s));
        ledger_scope_set_degraded(s, true);
        ledger_scope_set_queue(s, &queue);
        ledger_scope_set_userdata(s, &userdata);
        ck_assert(ledger_scope_get_degraded(s));
        ck_assert_ptr_eq(ledger_scope_get_queue(s), &queue);
        ck_assert_ptr_eq(ledger_scope_get_userdata(s), &userdata);
        ck_assert(!ledger_scope_get_degraded(t));
        ck_assert_ptr_null(ledger_scope_get_queue(t));
        /* The ledger only keeps them: limits and reservations are unaffected. */
        ck_assert_uint_eq(ledger_room(l, &s, 1, NULL, 100, T_BASE, NULL), 100);
        ledger_scope_set_degraded(s, false);
        ledger_scope_set_queue(s, NULL);
        ck_assert(!ledger_scope_get_degraded(s));
        ck_assert_ptr_null(ledger_scope_get_queue(s));
        ledger_free(l);
}
END_TEST

static Suite *ledger_suite(void) {
        Suite *s = suite_create("ledger");
        TCase *tc = tcase_create("core");

        /* Generous: sanitizer and valgrind builds run these too. */
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_strings);
        tcase_add_test(tc, test_reserve_refusal);
        tcase_add_test(tc, test_all_or_nothing);
        tcase_add_test(tc, test_report);
        tcase_add_test(tc, test_states);
        tcase_add_test(tc, test_settle);
        tcase_add_test(tc, test_window_edges);
        tcase_add_test(tc, test_retry_after);
        tcase_add_test(tc, test_backwards_time);
        tcase_add_test(tc, test_ids);
        tcase_add_test(tc, test_siphash_vectors);
        tcase_add_test(tc, test_id_keys);
        tcase_add_test(tc, test_scope_lifetime);
        tcase_add_test(tc, test_set_limits_and_params);
        tcase_add_test(tc, test_iteration_and_accessors);
        tcase_add_test(tc, test_max_allocations);
        tcase_add_test(tc, test_max_allocations_scopes);
        tcase_add_test(tc, test_reserve_params);
        tcase_add_test(tc, test_reserve_params_caps);
        tcase_add_test(tc, test_frees_in);
        tcase_add_test(tc, test_frees_in_more);
        tcase_add_test(tc, test_memory_per_allocation);
        tcase_add_test(tc, test_room_brute_force);
        tcase_add_test(tc, test_room_cases);
        tcase_add_test(tc, test_room_scaled_limits);
        tcase_add_test(tc, test_restore_cases);
        tcase_add_test(tc, test_restore_matches_live);
        tcase_add_test(tc, test_reserve_unchecked);
        tcase_add_test(tc, test_reserve_unchecked_saturates);
        tcase_add_test(tc, test_utilisation);
        tcase_add_test(tc, test_utilisation_saturates);
        tcase_add_test(tc, test_degraded_and_queue);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(ledger_suite());
}
