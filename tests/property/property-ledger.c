/* SPDX-License-Identifier: MIT */
/*
 * Property runs of daemon/core/ledger.c, seeded and reproducible (a failure
 * names its seed and operation): a million reservations whose ids must be
 * unique and look random; thousands of random reserve/report/settle/advance
 * operations checked after every one against an independent shadow model
 * (reservations, windows at bucket granularity, totals), within the hard
 * limits and with overruns; and, for each window kind, that no true interval
 * of the window's span ever holds more than its limit, with refusals retried
 * exactly at retry_after_usec. Seconds of work, hence their own meson suite
 * (property); the table-driven cases are in tests/unit/test-ledger.c. Time
 * moves by parameter only.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ledger.h"
#include "splitmix64.h"
#include "tb-check.h"

#define SEC(x)    ((uint64_t)((x)*1000000.0 + 0.5))
#define N_ROWS(t) (sizeof(t) / sizeof((t)[0]))

/* Aligned to every bucket size (1 s, 60 s, 900 s), as in the unit tests. */
#define T_BASE SEC(900 * 200)

static const LedgerParams params_default = {.warn_permille = 1500, .hard_permille = 2000};
static const LedgerLimits limits_none = {};

static uint64_t sat_sub_u64(uint64_t a, uint64_t b) {
        return a > b ? a - b : 0;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
        return x < y ? -1 : x > y;
}

/*
 * A million reservations, up to 1,000 live at once and the rest settled at
 * random (so slots are reused and generations move): every id is non-zero,
 * found while live (checked for every 64th and for those live at the end),
 * never repeated, and looks random: consecutive ids differ in 32 of 64 bits
 * on average (sequential ids differ in about 2) and every bit is set in half
 * of the first 100,000 ids. Bounds: the mean of 10^6 popcounts of random
 * xors has a standard deviation of 4 / 1000 bits, a bit's frequency in 10^5
 * ids one of 0.16 %; the bounds below are over 10 of them away. Kept cheap
 * for valgrind runs.
 */
START_TEST(test_ids_random) {
        enum { N = 1000000, LIVE = 1000, N_BITS_SAMPLE = 100000 };
        Ledger *l = ledger_new(&params_default);
        LedgerScope *s = ledger_scope_new(l, "s", &limits_none);
        LedgerAllocation *live[LIVE];
        uint64_t *ids = malloc(N * sizeof(uint64_t)), rng = 42, bits_changed = 0;
        uint64_t bit_set[64] = {0};
        size_t n_live = 0;
        LedgerRefusal refusal;

        ck_assert_ptr_nonnull(ids);
        for (size_t i = 0; i < N; i++) {
                LedgerAllocation *a;

                if (n_live == LIVE || (n_live > 0 && splitmix64(&rng) % 2 == 0)) {
                        size_t k = splitmix64(&rng) % n_live;

                        ck_assert_int_eq(ledger_settle(l, live[k], 0, 0, T_BASE, NULL, NULL), 0);
                        live[k] = live[--n_live];
                }
                ck_assert_int_eq(ledger_reserve(l, &s, 1, 1, T_BASE, &a, &refusal), 0);
                live[n_live++] = a;
                ids[i] = ledger_allocation_id(a);
                ck_assert_msg(ids[i] != 0, "reservation %zu: id 0", i);
                if (i % 64 == 0)
                        ck_assert_msg(ledger_find(l, ids[i]) == a,
                                      "reservation %zu: id %016" PRIx64 " not found", i, ids[i]);
                if (i > 0)
                        bits_changed += (uint64_t)__builtin_popcountll(ids[i] ^ ids[i - 1]);
                if (i < N_BITS_SAMPLE)
                        for (unsigned b = 0; b < 64; b++)
                                bit_set[b] += (ids[i] >> b) & 1;
        }

        ck_assert_msg(bits_changed >= UINT64_C(31950000) && bits_changed <= UINT64_C(32050000),
                      "consecutive ids differ in %.3f bits on average", (double)bits_changed / (N - 1));
        for (unsigned b = 0; b < 64; b++)
                ck_assert_msg(bit_set[b] >= N_BITS_SAMPLE / 100 * 48 &&
                                      bit_set[b] <= N_BITS_SAMPLE / 100 * 52,
                              "bit %u set in %" PRIu64 " of %d ids", b, bit_set[b], N_BITS_SAMPLE);

        /* A live id is found; its neighbours (one bit flipped) find nothing. */
        for (size_t k = 0; k < n_live; k++) {
                uint64_t id = ledger_allocation_id(live[k]);

                ck_assert_msg(ledger_find(l, id) == live[k], "live id %016" PRIx64 " not found", id);
                for (unsigned b = 0; b < 64; b += 7)
                        ck_assert_msg(ledger_find(l, id ^ (UINT64_C(1) << b)) == NULL,
                                      "id %016" PRIx64 " with bit %u flipped found", id, b);
        }

        qsort(ids, N, sizeof(uint64_t), cmp_u64);
        for (size_t i = 1; i < N; i++)
                ck_assert_msg(ids[i] != ids[i - 1], "id %016" PRIx64 " handed out twice", ids[i]);
        free(ids);
        ledger_free(l);
}
END_TEST

/* --- property runs against a shadow model --- */

enum { M_SCOPES = 7, M_PER_ALLOC = 3 };

typedef struct ShadowAlloc {
        LedgerAllocation *a;
        size_t scopes[M_PER_ALLOC];
        uint64_t granted, input, output, reservation;
} ShadowAlloc;

typedef struct Commit {
        uint64_t usec, tokens;
} Commit;

typedef struct Model {
        uint64_t seed, rng;
        size_t op;
        bool overrun;
        Ledger *l;
        uint64_t now_usec;
        LedgerScope *scopes[M_SCOPES];
        LedgerLimits limits[M_SCOPES];
        uint64_t committed[M_SCOPES];
        Commit *commits[M_SCOPES];
        size_t n_commits[M_SCOPES], cap_commits[M_SCOPES];
        ShadowAlloc *allocs;
        size_t n_allocs, cap_allocs;
} Model;

#define MCHECK(m, cond, fmt, ...)                                                                           \
        ck_assert_msg(cond, "seed %" PRIu64 " op %zu: " fmt, (m)->seed, (m)->op, ##__VA_ARGS__)

/* The bucket sizes documented in ledger.c, modelled independently here: a
 * commit at t counts while now / bucket <= t / bucket + n (buckets in the
 * span). */
static const uint64_t model_bucket_usec[_LEDGER_WINDOW_MAX] = {SEC(1), SEC(60), SEC(900)};
static const uint64_t model_n_buckets[_LEDGER_WINDOW_MAX] = {60, 60, 96};

static uint64_t model_rand(Model *m) {
        return splitmix64(&m->rng);
}

static uint64_t model_range(Model *m, uint64_t n) {
        return model_rand(m) % n;
}

static uint64_t model_window_used(const Model *m, size_t s, LedgerWindow w, uint64_t at_usec) {
        uint64_t now_bucket = at_usec / model_bucket_usec[w], sum = 0;

        for (size_t i = 0; i < m->n_commits[s]; i++)
                if (m->commits[s][i].usec / model_bucket_usec[w] + model_n_buckets[w] >= now_bucket)
                        sum += m->commits[s][i].tokens;
        return sum;
}

static uint64_t model_reserved(const Model *m, size_t s) {
        uint64_t sum = 0;

        for (size_t i = 0; i < m->n_allocs; i++)
                for (size_t j = 0; j < M_PER_ALLOC; j++)
                        if (m->allocs[i].scopes[j] == s) {
                                const ShadowAlloc *x = &m->allocs[i];
                                uint64_t used = x->input + x->output;
                                sum += x->reservation - (used < x->reservation ? used : x->reservation);
                        }
        return sum;
}

static size_t model_n_charged(const Model *m, size_t s) {
        size_t n = 0;

        for (size_t i = 0; i < m->n_allocs; i++)
                for (size_t j = 0; j < M_PER_ALLOC; j++)
                        n += m->allocs[i].scopes[j] == s;
        return n;
}

static void model_commit(Model *m, const ShadowAlloc *x, uint64_t delta) {
        if (delta == 0)
                return;
        for (size_t j = 0; j < M_PER_ALLOC; j++) {
                size_t s = x->scopes[j];

                if (m->n_commits[s] == m->cap_commits[s]) {
                        m->cap_commits[s] = m->cap_commits[s] ? m->cap_commits[s] * 2 : 64;
                        m->commits[s] = realloc(m->commits[s], m->cap_commits[s] * sizeof(Commit));
                        ck_assert_ptr_nonnull(m->commits[s]);
                }
                m->commits[s][m->n_commits[s]++] = (Commit){m->now_usec, delta};
                m->committed[s] += delta;
        }
}

/* Drops commits that left even the day window, to keep checks fast. */
static void model_prune(Model *m) {
        uint64_t day_bucket = m->now_usec / model_bucket_usec[LEDGER_WINDOW_DAY];

        for (size_t s = 0; s < M_SCOPES; s++) {
                size_t keep = 0;

                for (size_t i = 0; i < m->n_commits[s]; i++)
                        if (m->commits[s][i].usec / model_bucket_usec[LEDGER_WINDOW_DAY] +
                                    model_n_buckets[LEDGER_WINDOW_DAY] >=
                            day_bucket)
                                m->commits[s][keep++] = m->commits[s][i];
                m->n_commits[s] = keep;
        }
}

/* Global, two users, four processes (two per user), with small limits so
 * that every kind of refusal happens often. */
static void model_init(Model *m, uint64_t seed, bool overrun) {
        static const LedgerLimits limits[3] = {
                {{3000, 20000, 100000}, 2000},
                {{1500, 10000, 60000}, 1200},
                {{800, 0, 0}, 600},
        };

        *m = (Model){.seed = seed, .rng = seed, .overrun = overrun};
        m->l = ledger_new(&params_default);
        ck_assert_ptr_nonnull(m->l);
        m->now_usec = SEC(1000) + model_range(m, SEC(1000000));
        for (size_t s = 0; s < M_SCOPES; s++) {
                char name[16];

                m->limits[s] = limits[s == 0 ? 0 : s < 3 ? 1 : 2];
                snprintf(name, sizeof(name), "scope-%zu", s);
                m->scopes[s] = ledger_scope_new(m->l, name, &m->limits[s]);
                ck_assert_ptr_nonnull(m->scopes[s]);
        }
}

static void model_done(Model *m) {
        for (size_t s = 0; s < M_SCOPES; s++)
                free(m->commits[s]);
        free(m->allocs);
        ledger_free(m->l);
}

/* Callers must never pass an earlier now, but the ledger must cope: now and
 * then hand it a stale timestamp; the model keeps the latest. */
static uint64_t model_now_arg(Model *m) {
        if (model_range(m, 20) == 0)
                return m->now_usec - model_range(m, m->now_usec);
        return m->now_usec;
}

/* The refusal the model expects for scope s, if any. */
static bool model_scope_refusal(const Model *m, size_t s, uint64_t reservation, LedgerRefusal *ret) {
        uint64_t reserved = model_reserved(m, s), need = reserved + reservation;

        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++) {
                uint64_t limit = m->limits[s].window_tokens[w];
                uint64_t used = model_window_used(m, s, w, m->now_usec);

                if (limit != 0 && used + need > limit) {
                        *ret = (LedgerRefusal){m->scopes[s], (int)w, limit, used, reserved, 0};
                        return true;
                }
        }
        if (m->limits[s].in_flight_tokens != 0 && need > m->limits[s].in_flight_tokens) {
                *ret = (LedgerRefusal){m->scopes[s], -1, m->limits[s].in_flight_tokens, 0, reserved, 0};
                return true;
        }
        return false;
}

/* retry_after_usec is right when room appears exactly then, per the model. */
static void model_check_retry(const Model *m, size_t s, uint64_t reservation, const LedgerRefusal *got) {
        uint64_t need = model_reserved(m, s) + reservation, at;

        if (got->window < 0 || need > got->limit_tokens) {
                MCHECK(m, got->retry_after_usec == 0, "retry %" PRIu64 " for a refusal that cannot clear",
                       got->retry_after_usec);
                return;
        }
        MCHECK(m, got->retry_after_usec > 0, "no retry time for a window refusal");
        at = m->now_usec + got->retry_after_usec;
        MCHECK(m, model_window_used(m, s, got->window, at) + need <= got->limit_tokens, "no room at retry");
        MCHECK(m, model_window_used(m, s, got->window, at - 1) + need > got->limit_tokens,
               "room before retry");
}

static void model_op_reserve(Model *m) {
        size_t p = model_range(m, 4), order[M_PER_ALLOC] = {0, 1 + p / 2, 3 + p};
        uint64_t granted = 1 + model_range(m, 120), reservation = granted * 2;
        LedgerScope *scopes[M_PER_ALLOC];
        LedgerRefusal got = {}, expect = {};
        LedgerAllocation *a;
        bool refused = false;
        int r;

        for (size_t i = M_PER_ALLOC - 1; i > 0; i--) {
                size_t j = model_range(m, i + 1), t = order[i];
                order[i] = order[j];
                order[j] = t;
        }
        for (size_t i = 0; i < M_PER_ALLOC; i++) {
                scopes[i] = m->scopes[order[i]];
                if (!refused)
                        refused = model_scope_refusal(m, order[i], reservation, &expect);
        }

        r = ledger_reserve(m->l, scopes, M_PER_ALLOC, granted, model_now_arg(m), &a, &got);
        MCHECK(m, r == (refused ? -EDQUOT : 0), "reserve returned %d", r);
        if (refused) {
                MCHECK(m, got.scope == expect.scope, "refused by %s, expected %s",
                       ledger_scope_name(got.scope), ledger_scope_name(expect.scope));
                MCHECK(m, got.window == expect.window, "refusal window %d, expected %d", got.window,
                       expect.window);
                MCHECK(m, got.limit_tokens == expect.limit_tokens, "refusal limit");
                MCHECK(m, got.used_tokens == expect.used_tokens,
                       "refusal used %" PRIu64 ", expected %" PRIu64, got.used_tokens, expect.used_tokens);
                MCHECK(m, got.reserved_tokens == expect.reserved_tokens, "refusal reserved");
                for (size_t i = 0; i < M_PER_ALLOC; i++)
                        if (m->scopes[order[i]] == got.scope)
                                model_check_retry(m, order[i], reservation, &got);
                return;
        }

        if (m->n_allocs == m->cap_allocs) {
                m->cap_allocs = m->cap_allocs ? m->cap_allocs * 2 : 64;
                m->allocs = realloc(m->allocs, m->cap_allocs * sizeof(ShadowAlloc));
                ck_assert_ptr_nonnull(m->allocs);
        }
        m->allocs[m->n_allocs++] =
                (ShadowAlloc){a, {order[0], order[1], order[2]}, granted, 0, 0, reservation};
        MCHECK(m, ledger_allocation_granted_usec(a) == m->now_usec, "granted_usec");
}

/* New totals for a report or settlement: sometimes lower (must be refused),
 * sometimes the same, usually higher; within the reservation unless the run
 * allows overruns. */
static int model_next_totals(Model *m, const ShadowAlloc *x, uint64_t *ret_in, uint64_t *ret_out) {
        uint64_t cap = m->overrun ? 3 * x->reservation : x->reservation;
        uint64_t used = x->input + x->output, room = cap > used ? cap - used : 0;
        uint64_t pick = model_range(m, 10);

        if (pick == 0 && x->input > 0) {
                *ret_in = x->input - 1;
                *ret_out = x->output + 1;
                return -ERANGE;
        }
        if (pick == 1 || room == 0) {
                *ret_in = x->input;
                *ret_out = x->output;
                return 0;
        }
        *ret_in = x->input + model_range(m, room / 2 + 1);
        *ret_out = x->output + model_range(m, room - (*ret_in - x->input) + 1);
        return 0;
}

static void model_apply_totals(Model *m, ShadowAlloc *x, uint64_t in, uint64_t out) {
        uint64_t delta = in + out - x->input - x->output;

        x->input = in;
        x->output = out;
        model_commit(m, x, delta);
}

static void model_op_report(Model *m) {
        ShadowAlloc *x;
        uint64_t in, out, warn_at;
        LedgerState state;
        int expect, r;

        if (m->n_allocs == 0)
                return;
        x = &m->allocs[model_range(m, m->n_allocs)];
        expect = model_next_totals(m, x, &in, &out);
        r = ledger_report(m->l, x->a, in, out, model_now_arg(m), &state);
        MCHECK(m, r == expect, "report returned %d, expected %d", r, expect);
        if (r < 0)
                return;
        model_apply_totals(m, x, in, out);
        /* 1.5x, rounded up, is the warn threshold; 2x the hard limit. */
        warn_at = (x->granted * 3 + 1) / 2;
        MCHECK(m,
               state == (in + out >= x->reservation ? LEDGER_STATE_EXCEEDED
                         : in + out >= warn_at      ? LEDGER_STATE_WARNING
                                                    : LEDGER_STATE_OK),
               "state %s at %" PRIu64 " of %" PRIu64, ledger_state_to_string(state), in + out,
               x->reservation);
}

static void model_op_settle(Model *m) {
        size_t i;
        ShadowAlloc *x;
        uint64_t in, out, used, refunded, still, id;
        int expect, r;

        if (m->n_allocs == 0)
                return;
        i = model_range(m, m->n_allocs);
        x = &m->allocs[i];
        id = ledger_allocation_id(x->a);
        expect = model_next_totals(m, x, &in, &out);
        r = ledger_settle(m->l, x->a, in, out, model_now_arg(m), &used, &refunded);
        MCHECK(m, r == expect, "settle returned %d, expected %d", r, expect);
        if (r < 0)
                return;
        model_apply_totals(m, x, in, out);
        still = x->reservation > in + out ? x->reservation - in - out : 0;
        MCHECK(m, used == in + out, "settle used");
        MCHECK(m, refunded == still, "refunded %" PRIu64 ", expected %" PRIu64, refunded, still);
        MCHECK(m, ledger_find(m->l, id) == NULL, "settled allocation still found");
        m->allocs[i] = m->allocs[--m->n_allocs];
}

/* 0..90 s, and now and then a jump of up to 8 h so that hours and days age. */
static void model_op_advance(Model *m) {
        if (model_range(m, 20) == 0)
                m->now_usec += model_range(m, SEC(8 * 3600));
        else
                m->now_usec += model_range(m, SEC(90) + 1);
        model_prune(m);
}

static void model_check(Model *m, bool windows_against_model) {
        MCHECK(m, ledger_n_allocations(m->l) == m->n_allocs, "allocation count");
        for (size_t i = 0; i < m->n_allocs; i++) {
                const ShadowAlloc *x = &m->allocs[i];
                uint64_t used = x->input + x->output;

                MCHECK(m, ledger_find(m->l, ledger_allocation_id(x->a)) == x->a,
                       "live allocation not found");
                MCHECK(m, ledger_allocation_used(x->a) == used, "allocation used");
                MCHECK(m,
                       ledger_allocation_reserved(x->a) ==
                               (used < x->reservation ? x->reservation - used : 0),
                       "allocation still reserved");
        }
        for (size_t s = 0; s < M_SCOPES; s++) {
                LedgerScope *sc = m->scopes[s];
                uint64_t reserved = ledger_scope_reserved(sc);

                MCHECK(m, reserved == model_reserved(m, s),
                       "scope %zu reserved %" PRIu64 ", expected %" PRIu64, s, reserved,
                       model_reserved(m, s));
                MCHECK(m, ledger_scope_committed_total(sc) == m->committed[s], "scope %zu committed total",
                       s);
                MCHECK(m, ledger_scope_n_allocations(sc) == model_n_charged(m, s), "scope %zu allocations",
                       s);
                if (!m->overrun && m->limits[s].in_flight_tokens)
                        MCHECK(m, reserved <= m->limits[s].in_flight_tokens, "scope %zu over in-flight cap",
                               s);
                for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++) {
                        uint64_t used = ledger_scope_window_used(sc, w, m->now_usec);
                        uint64_t limit = m->limits[s].window_tokens[w];

                        if (!m->overrun && limit)
                                MCHECK(m, used + reserved <= limit,
                                       "scope %zu %s window: %" PRIu64 " + %" PRIu64 " > %" PRIu64, s,
                                       ledger_window_to_string(w), used, reserved, limit);
                        if (windows_against_model)
                                MCHECK(m, used == model_window_used(m, s, w, m->now_usec),
                                       "scope %zu %s window used %" PRIu64 ", model %" PRIu64, s,
                                       ledger_window_to_string(w), used,
                                       model_window_used(m, s, w, m->now_usec));
                }
        }
}

static void property_run(uint64_t seed, size_t n_ops, bool overrun) {
        Model m;

        model_init(&m, seed, overrun);
        for (m.op = 0; m.op < n_ops; m.op++) {
                uint64_t pick = model_range(&m, 100);

                if (pick < 40)
                        model_op_reserve(&m);
                else if (pick < 70)
                        model_op_report(&m);
                else if (pick < 90)
                        model_op_settle(&m);
                else
                        model_op_advance(&m);
                model_check(&m, pick >= 90 || m.op % 64 == 0);
        }
        /* Settle everything: every reservation comes back. */
        while (m.n_allocs > 0) {
                ShadowAlloc *x = &m.allocs[m.n_allocs - 1];
                ck_assert_int_eq(ledger_settle(m.l, x->a, x->input, x->output, m.now_usec, NULL, NULL), 0);
                m.n_allocs--;
        }
        model_check(&m, true);
        for (size_t s = 0; s < M_SCOPES; s++)
                MCHECK(&m, ledger_scope_reserved(m.scopes[s]) == 0, "scope %zu kept a reservation", s);
        model_done(&m);
}

/* 6 x 4,000 = 24,000 operations within the hard limits. */
START_TEST(test_property_within_limits) {
        for (uint64_t seed = 1; seed <= 6; seed++)
                property_run(seed * UINT64_C(0x1234567), 4000, false);
}
END_TEST

/* Overruns allowed: accounting must still balance, limits may be passed. */
START_TEST(test_property_overruns) {
        for (uint64_t seed = 1; seed <= 4; seed++)
                property_run(seed * UINT64_C(0x7654321), 4000, true);
}
END_TEST

/* --- every true interval of a window's span (issue 7, point 9) --- */

/*
 * One scope with a small limit on one window only, driven by random
 * reservations, reports and settlements (usage never past the reservation) at
 * times piled up at bucket edges (k x bucket +- 3 usec, k often a span, a span
 * minus or plus one bucket ahead: where a bucket-granular window is most
 * likely to forget tokens too early). Every commit is recorded here; the run
 * then checks that no true interval of the window's span, [x, x + span] with
 * both ends included, starting or ending at a commit, holds more than the
 * limit. After every operation it also checks the bound documented in
 * ledger.h: the window counts every commit of the last span and none of
 * those at least span + one bucket old. Refusals are retried at
 * retry_after_usec - 1 (still refused) and at retry_after_usec (granted).
 */
typedef struct IntervalRow {
        const char *name;
        LedgerWindow window;
        uint64_t bucket_usec; /* as documented in ledger.c */
        uint64_t limit_tokens;
} IntervalRow;

static const IntervalRow interval_rows[] = {
        {"minute", LEDGER_WINDOW_MINUTE, SEC(1), 1000},
        {"hour", LEDGER_WINDOW_HOUR, SEC(60), 1000},
        {"day", LEDGER_WINDOW_DAY, SEC(900), 1000},
};

enum { I_SEEDS = 8, I_OPS = 4000, I_LIVE_MAX = 12 };

typedef struct IntervalLive {
        LedgerAllocation *a;
        uint64_t reservation, used;
} IntervalLive;

typedef struct IntervalRun {
        const IntervalRow *row;
        uint64_t seed, rng, span_usec, now_usec;
        size_t op;
        Ledger *l;
        LedgerScope *s;
        IntervalLive live[I_LIVE_MAX];
        size_t n_live;
        /* Commits in time order, and prefix sums: prefix[i] = tokens of the first i. */
        Commit *commits;
        uint64_t *prefix;
        size_t n_commits, cap_commits;
        uint64_t n_retries;
} IntervalRun;

#define ICHECK(r, cond, fmt, ...)                                                                           \
        ck_assert_msg(cond, "row '%s' seed %" PRIu64 " op %zu: " fmt, (r)->row->name, (r)->seed, (r)->op,   \
                      ##__VA_ARGS__)

static uint64_t interval_range(IntervalRun *r, uint64_t n) {
        return splitmix64(&r->rng) % n;
}

/* Index of the first commit at or after usec. */
static size_t interval_lower(const IntervalRun *r, uint64_t usec) {
        size_t lo = 0, hi = r->n_commits;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;

                if (r->commits[mid].usec < usec)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return lo;
}

/* Tokens committed at times in [from_usec, to_usec]. */
static uint64_t interval_sum(const IntervalRun *r, uint64_t from_usec, uint64_t to_usec) {
        size_t i = interval_lower(r, from_usec);
        size_t j = to_usec == UINT64_MAX ? r->n_commits : interval_lower(r, to_usec + 1);

        return j > i ? r->prefix[j] - r->prefix[i] : 0;
}

static void interval_record(IntervalRun *r, uint64_t tokens) {
        if (tokens == 0)
                return;
        if (r->n_commits == r->cap_commits) {
                r->cap_commits = r->cap_commits ? r->cap_commits * 2 : 256;
                r->commits = realloc(r->commits, r->cap_commits * sizeof(Commit));
                r->prefix = realloc(r->prefix, (r->cap_commits + 1) * sizeof(uint64_t));
                ck_assert_ptr_nonnull(r->commits);
                ck_assert_ptr_nonnull(r->prefix);
        }
        r->commits[r->n_commits] = (Commit){r->now_usec, tokens};
        r->prefix[r->n_commits + 1] = r->prefix[r->n_commits] + tokens;
        r->n_commits++;
}

/* A refusal: retry_after_usec is 0 exactly when the reservation cannot fit
 * until something is settled; otherwise the same reservation is refused one
 * usec earlier and granted then. */
static void interval_check_refusal(IntervalRun *r, uint64_t granted, const LedgerRefusal *got) {
        uint64_t need = ledger_scope_reserved(r->s) + 2 * granted, at;
        LedgerRefusal again;
        LedgerAllocation *a;
        int ret;

        ICHECK(r, got->window == (int)r->row->window, "refused by window %d", got->window);
        if (need > r->row->limit_tokens) {
                ICHECK(r, got->retry_after_usec == 0, "retry after %" PRIu64 " usec, but it never fits",
                       got->retry_after_usec);
                return;
        }
        ICHECK(r, got->retry_after_usec > 0, "no retry time for %" PRIu64 " of %" PRIu64, need,
               r->row->limit_tokens);
        if (interval_range(r, 2) == 0 || r->n_live == I_LIVE_MAX)
                return;

        at = r->now_usec + got->retry_after_usec;
        ret = ledger_reserve(r->l, &r->s, 1, granted, at - 1, &a, &again);
        ICHECK(r, ret == -EDQUOT, "granted 1 usec before retry_after (%" PRIu64 " usec)",
               got->retry_after_usec);
        r->now_usec = at;
        ret = ledger_reserve(r->l, &r->s, 1, granted, at, &a, &again);
        ICHECK(r, ret == 0,
               "refused at retry_after (%" PRIu64 " usec): used %" PRIu64 " + reserved %" PRIu64,
               got->retry_after_usec, again.used_tokens, again.reserved_tokens);
        r->live[r->n_live++] = (IntervalLive){a, 2 * granted, 0};
        r->n_retries++;
}

static void interval_op_reserve(IntervalRun *r) {
        uint64_t granted = 1 + interval_range(r, 150);
        LedgerRefusal refusal = {};
        LedgerAllocation *a;
        int ret;

        if (r->n_live == I_LIVE_MAX)
                return;
        ret = ledger_reserve(r->l, &r->s, 1, granted, r->now_usec, &a, &refusal);
        ICHECK(r, ret == 0 || ret == -EDQUOT, "reserve returned %d", ret);
        if (ret < 0) {
                interval_check_refusal(r, granted, &refusal);
                return;
        }
        r->live[r->n_live++] = (IntervalLive){a, 2 * granted, 0};
}

/* New usage within the reservation: half the time all of it (the worst case
 * for the window), otherwise a random part of what is left. */
static uint64_t interval_next_used(IntervalRun *r, const IntervalLive *x) {
        if (interval_range(r, 2) == 0)
                return x->reservation;
        return x->used + interval_range(r, x->reservation - x->used + 1);
}

static void interval_op_report(IntervalRun *r) {
        IntervalLive *x;
        uint64_t used;

        if (r->n_live == 0)
                return;
        x = &r->live[interval_range(r, r->n_live)];
        used = interval_next_used(r, x);
        ICHECK(r, ledger_report(r->l, x->a, used, 0, r->now_usec, NULL) == 0, "report");
        interval_record(r, used - x->used);
        x->used = used;
}

static void interval_op_settle(IntervalRun *r) {
        size_t i;
        uint64_t used;

        if (r->n_live == 0)
                return;
        i = interval_range(r, r->n_live);
        used = interval_next_used(r, &r->live[i]);
        ICHECK(r, ledger_settle(r->l, r->live[i].a, used, 0, r->now_usec, NULL, NULL) == 0, "settle");
        interval_record(r, used - r->live[i].used);
        r->live[i] = r->live[--r->n_live];
}

/* To a bucket edge k buckets ahead, +- 3 usec; k is 0, 1, 2, or the span in
 * buckets minus one, plus zero or plus one. Time never goes back. */
static void interval_op_advance(IntervalRun *r) {
        uint64_t b = r->row->bucket_usec, n = r->span_usec / b;
        const uint64_t ks[] = {0, 1, 2, n - 1, n, n + 1};
        uint64_t k = ks[interval_range(r, N_ROWS(ks))];
        uint64_t t = (r->now_usec / b + k) * b + interval_range(r, 7) - 3;

        if (t > r->now_usec)
                r->now_usec = t;
}

/* The documented bound, at now: every commit of [now - span, now] counts, no
 * commit at or before now - span - bucket does. */
static void interval_check_window(IntervalRun *r) {
        uint64_t used = ledger_scope_window_used(r->s, r->row->window, r->now_usec);
        uint64_t b = r->row->bucket_usec;
        uint64_t must = interval_sum(r, sat_sub_u64(r->now_usec, r->span_usec), r->now_usec);
        uint64_t may = interval_sum(r, sat_sub_u64(r->now_usec, r->span_usec + b) + 1, r->now_usec);

        ICHECK(r, used >= must, "window holds %" PRIu64 ", the last span %" PRIu64, used, must);
        ICHECK(r, used <= may, "window holds %" PRIu64 ", the last span + bucket only %" PRIu64, used, may);
}

/* No true interval [x, x + span] starting or ending at a commit holds more
 * than the limit. */
static void interval_check_all(IntervalRun *r) {
        uint64_t worst = 0, worst_from = 0, limit = r->row->limit_tokens;

        for (size_t i = 0; i < r->n_commits; i++) {
                uint64_t x = r->commits[i].usec;
                uint64_t starting = interval_sum(r, x, x + r->span_usec);
                uint64_t ending = interval_sum(r, sat_sub_u64(x, r->span_usec), x);

                if (starting > worst)
                        worst = starting, worst_from = x;
                if (ending > worst)
                        worst = ending, worst_from = sat_sub_u64(x, r->span_usec);
        }
        ck_assert_msg(worst <= limit,
                      "row '%s' seed %" PRIu64 ": %" PRIu64 " tokens committed in [%" PRIu64 ", %" PRIu64
                      "] usec, one %s, against a limit of %" PRIu64 " (%zu commits)",
                      r->row->name, r->seed, worst, worst_from, worst_from + r->span_usec,
                      ledger_window_to_string(r->row->window), limit, r->n_commits);
}

static void interval_run(const IntervalRow *row, uint64_t seed) {
        LedgerLimits limits = {};
        IntervalRun r = {.row = row, .seed = seed, .rng = seed};

        r.span_usec = ledger_window_span_usec(row->window);
        /* Start on a bucket edge far from 0 so that now - span never wraps. */
        r.now_usec = T_BASE + (interval_range(&r, 1000) * row->bucket_usec);
        limits.window_tokens[row->window] = row->limit_tokens;
        r.l = ledger_new(&params_default);
        ck_assert_ptr_nonnull(r.l);
        r.s = ledger_scope_new(r.l, "s", &limits);
        ck_assert_ptr_nonnull(r.s);
        r.prefix = calloc(1, sizeof(uint64_t));
        ck_assert_ptr_nonnull(r.prefix);

        for (r.op = 0; r.op < I_OPS; r.op++) {
                uint64_t pick = interval_range(&r, 100);

                if (pick < 35)
                        interval_op_reserve(&r);
                else if (pick < 55)
                        interval_op_report(&r);
                else if (pick < 80)
                        interval_op_settle(&r);
                else
                        interval_op_advance(&r);
                interval_check_window(&r);
        }
        while (r.n_live > 0)
                interval_op_settle(&r);
        interval_check_all(&r);
        /* The retry path must have been exercised, or the row proves little. */
        ck_assert_msg(r.n_retries > 0, "row '%s' seed %" PRIu64 ": no refusal was retried", row->name, seed);

        free(r.commits);
        free(r.prefix);
        ledger_free(r.l);
}

/* One loop iteration per row, so that every window kind reports on its own. */
START_TEST(test_property_true_intervals) {
        const IntervalRow *row = &interval_rows[_i];

        for (uint64_t seed = 1; seed <= I_SEEDS; seed++)
                interval_run(row, seed * UINT64_C(0x9e3779b1) + (uint64_t)_i);
}
END_TEST

static Suite *ledger_property_suite(void) {
        Suite *s = suite_create("ledger-property");
        TCase *ids = tcase_create("ids");
        TCase *model = tcase_create("model");
        TCase *intervals = tcase_create("true_intervals");

        /* Generous: seconds here, much longer under sanitizers and valgrind. */
        tcase_set_timeout(ids, 110);
        tcase_add_test(ids, test_ids_random);
        suite_add_tcase(s, ids);
        tcase_set_timeout(model, 110);
        tcase_add_test(model, test_property_within_limits);
        tcase_add_test(model, test_property_overruns);
        suite_add_tcase(s, model);
        /* One loop iteration per window kind, so that each reports on its own. */
        tcase_set_timeout(intervals, 110);
        tcase_add_loop_test(intervals, test_property_true_intervals, 0, N_ROWS(interval_rows));
        suite_add_tcase(s, intervals);
        return s;
}

int main(void) {
        return tb_check_main(ledger_property_suite());
}
