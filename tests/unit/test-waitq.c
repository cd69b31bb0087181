/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/core/waitq.c: a scope's order (priority, FIFO within a
 * priority, waitq_has_ahead() for each priority, iteration), waitq_move()
 * keeping a waiter's place by serial and the per-scope lists hung in the
 * ledger scopes' queue slots (allocated with the first waiter, cleared with
 * the last and by waitq_free()), wake times (min of deadline and retry time,
 * ties by age), per-uid counts, a seeded random run of adds, removes, moves
 * and retry changes against a brute-force model checked after every step,
 * and 100,000 waiters added, retried and removed with every operation's work
 * (heap comparisons and list steps, waitq_work()) within 2 log2(n) + 2.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "ledger.h"
#include "splitmix64.h"
#include "tb-check.h"
#include "waitq.h"

#define N_SCOPES 4

/* ck_assert() reports every passing check to the runner (a write per call):
 * the loops over thousands of waiters check with this instead. */
#define CHECK(cond, ...)                                                                                    \
        do {                                                                                                \
                if (!(cond))                                                                                \
                        ck_abort_msg(__VA_ARGS__);                                                          \
        } while (0)

static const LedgerParams params_default = {.warn_permille = 1500, .hard_permille = 2000};
static const LedgerLimits no_limits = {};

typedef struct Fixture {
        Ledger *ledger;
        LedgerScope *scopes[N_SCOPES];
        WaitQueue *q;
} Fixture;

static void fixture_init(Fixture *f) {
        *f = (Fixture){};
        f->ledger = ledger_new(&params_default);
        ck_assert_ptr_nonnull(f->ledger);
        for (size_t i = 0; i < N_SCOPES; i++) {
                char name[32];

                snprintf(name, sizeof(name), "scope-%zu", i);
                f->scopes[i] = ledger_scope_new(f->ledger, name, &no_limits);
                ck_assert_ptr_nonnull(f->scopes[i]);
        }
        f->q = waitq_new();
        ck_assert_ptr_nonnull(f->q);
}

static void fixture_done(Fixture *f) {
        f->q = waitq_free(f->q);
        for (size_t i = 0; i < N_SCOPES; i++)
                ck_assert_ptr_null(ledger_scope_get_queue(f->scopes[i]));
        ledger_free(f->ledger);
}

static Waiter *add(Fixture *f, size_t scope, Priority p, uid_t uid, uint64_t deadline, uint64_t retry_at,
                   void *userdata) {
        Waiter *w = NULL;

        CHECK(waitq_add(f->q, f->scopes[scope], p, uid, deadline, retry_at, userdata, &w) == 0 && w, "add");
        return w;
}

/* The scope's list, in iteration order, equals want[0..n). */
static void check_order(const LedgerScope *s, Waiter *const *want, size_t n, const char *what) {
        size_t i = 0;

        for (Waiter *w = waitq_next_in_scope(s, NULL); w; w = waitq_next_in_scope(s, w), i++) {
                CHECK(i < n, "%s: more than %zu waiters", what, n);
                CHECK(w == want[i], "%s: position %zu is serial %" PRIu64 ", want %" PRIu64, what, i,
                      waiter_serial(w), waiter_serial(want[i]));
                CHECK(waiter_scope(w) == s, "%s: position %zu in another scope", what, i);
        }
        CHECK(i == n, "%s: %zu waiters, want %zu", what, i, n);
        CHECK(waitq_scope_count(s) == n, "%s: count %zu, want %zu", what, waitq_scope_count(s), n);
        CHECK(waitq_head(s) == (n > 0 ? want[0] : NULL), "%s: head", what);
}

START_TEST(test_order) {
        Fixture f;
        Waiter *n1, *b1, *n2, *i1, *b2, *i2;

        fixture_init(&f);
        LedgerScope *s = f.scopes[0];

        ck_assert_ptr_null(waitq_head(s));
        for (Priority p = 0; p < _PRIORITY_MAX; p++)
                ck_assert(!waitq_has_ahead(s, p));
        n1 = add(&f, 0, PRIORITY_NORMAL, 1000, 100, UINT64_MAX, NULL);
        /* A normal waiter is ahead of normal and background requests, not of interactive ones. */
        ck_assert(!waitq_has_ahead(s, PRIORITY_INTERACTIVE));
        ck_assert(waitq_has_ahead(s, PRIORITY_NORMAL));
        ck_assert(waitq_has_ahead(s, PRIORITY_BACKGROUND));
        b1 = add(&f, 0, PRIORITY_BACKGROUND, 1000, 100, UINT64_MAX, NULL);
        n2 = add(&f, 0, PRIORITY_NORMAL, 1000, 100, UINT64_MAX, NULL);
        i1 = add(&f, 0, PRIORITY_INTERACTIVE, 1000, 100, UINT64_MAX, NULL);
        b2 = add(&f, 0, PRIORITY_BACKGROUND, 1000, 100, UINT64_MAX, NULL);
        i2 = add(&f, 0, PRIORITY_INTERACTIVE, 1000, 100, UINT64_MAX, NULL);
        {
                Waiter *want[] = {i1, i2, n1, n2, b1, b2};
                check_order(s, want, 6, "mixed");
        }
        ck_assert(waitq_has_ahead(s, PRIORITY_INTERACTIVE));
        ck_assert_uint_lt(waiter_serial(n1), waiter_serial(b1));
        ck_assert_int_eq(waiter_priority(i2), PRIORITY_INTERACTIVE);

        /* Removing the head promotes the next of its priority, then the next priority. */
        waitq_remove(f.q, i1);
        waitq_remove(f.q, i2);
        ck_assert(!waitq_has_ahead(s, PRIORITY_INTERACTIVE));
        {
                Waiter *want[] = {n1, n2, b1, b2};
                check_order(s, want, 4, "no interactive");
        }
        waitq_remove(f.q, n2);
        waitq_remove(f.q, n1);
        ck_assert(!waitq_has_ahead(s, PRIORITY_NORMAL));
        ck_assert(waitq_has_ahead(s, PRIORITY_BACKGROUND));
        {
                Waiter *want[] = {b1, b2};
                check_order(s, want, 2, "background only");
        }
        /* The list is freed with its last waiter. */
        waitq_remove(f.q, b1);
        ck_assert_ptr_nonnull(ledger_scope_get_queue(s));
        waitq_remove(f.q, b2);
        ck_assert_ptr_null(ledger_scope_get_queue(s));
        ck_assert_uint_eq(waitq_scope_count(s), 0);
        ck_assert_uint_eq(waitq_size(f.q), 0);
        ck_assert_uint_eq(waitq_next_wake(f.q), UINT64_MAX);
        waitq_remove(f.q, NULL); /* NULL-safe */
        fixture_done(&f);
}
END_TEST

START_TEST(test_move_keeps_order) {
        Fixture f;
        Waiter *w[6];

        fixture_init(&f);
        /* Scope 0: w0 w2 w4; scope 1: w1 w3 w5 (all normal). */
        for (size_t i = 0; i < 6; i++)
                w[i] = add(&f, i % 2, PRIORITY_NORMAL, 1000, 1000, UINT64_MAX, &w[i]);
        ck_assert_ptr_eq(waiter_userdata(w[3]), &w[3]);

        /* The oldest of scope 0 moves to scope 1: it goes first there. */
        ck_assert_int_eq(waitq_move(f.q, w[0], f.scopes[1], 500), 0);
        ck_assert_uint_eq(waiter_retry_at(w[0]), 500);
        ck_assert_uint_eq(waiter_wake(w[0]), 500);
        ck_assert_uint_eq(waitq_next_wake(f.q), 500);
        {
                Waiter *want0[] = {w[2], w[4]}, *want1[] = {w[0], w[1], w[3], w[5]};
                check_order(f.scopes[0], want0, 2, "scope 0 after moving w0");
                check_order(f.scopes[1], want1, 4, "scope 1 after moving w0");
        }
        /* A middle one goes between by serial. */
        ck_assert_int_eq(waitq_move(f.q, w[4], f.scopes[1], UINT64_MAX), 0);
        {
                Waiter *want0[] = {w[2]}, *want1[] = {w[0], w[1], w[3], w[4], w[5]};
                check_order(f.scopes[0], want0, 1, "scope 0 after moving w4");
                check_order(f.scopes[1], want1, 5, "scope 1 after moving w4");
        }
        /* The same scope: only the retry time changes. */
        ck_assert_int_eq(waitq_move(f.q, w[3], f.scopes[1], 200), 0);
        ck_assert_uint_eq(waitq_next_wake(f.q), 200);
        ck_assert_ptr_eq(waitq_due(f.q, 200), w[3]);
        ck_assert_ptr_null(waitq_due(f.q, 199));
        {
                Waiter *want1[] = {w[0], w[1], w[3], w[4], w[5]};
                check_order(f.scopes[1], want1, 5, "scope 1 after a same-scope move");
        }
        /* Moving the last one out frees scope 0's list; into an empty scope makes one. */
        ck_assert_int_eq(waitq_move(f.q, w[2], f.scopes[2], UINT64_MAX), 0);
        ck_assert_ptr_null(ledger_scope_get_queue(f.scopes[0]));
        ck_assert_ptr_null(waitq_head(f.scopes[0]));
        ck_assert_ptr_eq(waitq_head(f.scopes[2]), w[2]);
        ck_assert_uint_eq(waitq_size(f.q), 6);
        /* A moved waiter keeps its priority's order among other priorities. */
        Waiter *i = add(&f, 1, PRIORITY_INTERACTIVE, 1000, 1000, UINT64_MAX, NULL);
        Waiter *b = add(&f, 2, PRIORITY_BACKGROUND, 1000, 1000, UINT64_MAX, NULL);
        ck_assert_int_eq(waitq_move(f.q, b, f.scopes[1], UINT64_MAX), 0);
        {
                Waiter *want1[] = {i, w[0], w[1], w[3], w[4], w[5], b};
                check_order(f.scopes[1], want1, 7, "scope 1 with three priorities");
        }
        fixture_done(&f); /* frees the waiters left and clears the slots */
}
END_TEST

START_TEST(test_wake_times) {
        Fixture f;
        Waiter *a, *b, *c;

        fixture_init(&f);
        ck_assert_ptr_null(waitq_due(f.q, UINT64_MAX));
        a = add(&f, 0, PRIORITY_NORMAL, 1, 1000, UINT64_MAX, NULL); /* wakes at its deadline */
        b = add(&f, 1, PRIORITY_NORMAL, 1, 5000, 300, NULL);        /* at its retry time */
        c = add(&f, 2, PRIORITY_NORMAL, 1, 300, 900, NULL);         /* at its deadline, same as b */
        ck_assert_uint_eq(waiter_deadline(a), 1000);
        ck_assert_uint_eq(waiter_wake(a), 1000);
        ck_assert_uint_eq(waiter_wake(b), 300);
        ck_assert_uint_eq(waiter_wake(c), 300);
        ck_assert_uint_eq(waitq_next_wake(f.q), 300);
        ck_assert_ptr_null(waitq_due(f.q, 299));
        ck_assert_ptr_eq(waitq_due(f.q, 300), b); /* ties: the oldest */
        /* Due stays due until the caller acts. */
        ck_assert_ptr_eq(waitq_due(f.q, 10000), b);
        waitq_set_retry(f.q, b, UINT64_MAX); /* now wakes at its deadline, 5000 */
        ck_assert_uint_eq(waiter_wake(b), 5000);
        ck_assert_ptr_eq(waitq_due(f.q, 300), c);
        waitq_remove(f.q, c);
        ck_assert_uint_eq(waitq_next_wake(f.q), 1000);
        ck_assert_ptr_eq(waitq_due(f.q, 10000), a);
        waitq_set_retry(f.q, b, 10); /* earlier than everything */
        ck_assert_ptr_eq(waitq_due(f.q, 10000), b);
        ck_assert_uint_eq(waitq_next_wake(f.q), 10);
        waitq_remove(f.q, b);
        waitq_remove(f.q, a);
        ck_assert_uint_eq(waitq_next_wake(f.q), UINT64_MAX);
        ck_assert_ptr_null(waitq_due(f.q, UINT64_MAX));
        fixture_done(&f);
}
END_TEST

START_TEST(test_uid_counts) {
        Fixture f;
        Waiter *w[10];

        fixture_init(&f);
        ck_assert_uint_eq(waitq_uid_count(f.q, 1000), 0);
        for (size_t i = 0; i < 10; i++)
                w[i] = add(&f, i % N_SCOPES, i % 3, i < 7 ? 1000 : 0, 100 + i, UINT64_MAX, NULL);
        ck_assert_uint_eq(waitq_uid_count(f.q, 1000), 7);
        ck_assert_uint_eq(waitq_uid_count(f.q, 0), 3);
        ck_assert_uint_eq(waitq_uid_count(f.q, 1001), 0);
        ck_assert_uint_eq(waitq_uid_count(f.q, (uid_t)-1), 0);
        ck_assert_int_eq(waiter_uid(w[8]), 0);
        /* Moving keeps the count; removing lowers it. */
        ck_assert_int_eq(waitq_move(f.q, w[0], f.scopes[3], 50), 0);
        ck_assert_uint_eq(waitq_uid_count(f.q, 1000), 7);
        for (size_t i = 0; i < 7; i++)
                waitq_remove(f.q, w[i]);
        ck_assert_uint_eq(waitq_uid_count(f.q, 1000), 0);
        ck_assert_uint_eq(waitq_uid_count(f.q, 0), 3);
        ck_assert_uint_eq(waitq_size(f.q), 3);
        /* (uid_t)-1 is a uid like another. */
        Waiter *m = add(&f, 0, PRIORITY_NORMAL, (uid_t)-1, 1, UINT64_MAX, NULL);
        ck_assert_uint_eq(waitq_uid_count(f.q, (uid_t)-1), 1);
        waitq_remove(f.q, m);
        ck_assert_uint_eq(waitq_uid_count(f.q, (uid_t)-1), 0);
        fixture_done(&f);
}
END_TEST

/* ---- a random run against a brute-force model ---- */

#define MODEL_MAX 300

typedef struct Model {
        Waiter *w;
        size_t scope;
        Priority priority;
        uid_t uid;
        uint64_t serial, deadline, retry_at;
} Model;

static uint64_t model_wake(const Model *m) {
        return m->deadline < m->retry_at ? m->deadline : m->retry_at;
}

static int model_cmp_order(const void *a, const void *b) {
        const Model *x = a, *y = b;

        if (x->priority != y->priority)
                return x->priority < y->priority ? -1 : 1;
        return x->serial < y->serial ? -1 : x->serial > y->serial;
}

static void model_check(Fixture *f, const Model *model, size_t n, uint64_t now, uint64_t seed, size_t step) {
        Model sorted[MODEL_MAX];
        const Model *earliest = NULL;

        CHECK(waitq_size(f->q) == n, "seed %" PRIu64 " step %zu: size %zu, want %zu", seed, step,
              waitq_size(f->q), n);
        for (size_t i = 0; i < n; i++) {
                uint64_t wake = model_wake(&model[i]);

                if (!earliest || wake < model_wake(earliest) ||
                    (wake == model_wake(earliest) && model[i].serial < earliest->serial))
                        earliest = &model[i];
        }
        CHECK(waitq_next_wake(f->q) == (earliest ? model_wake(earliest) : UINT64_MAX),
              "seed %" PRIu64 " step %zu: next wake", seed, step);
        CHECK(waitq_due(f->q, now) == (earliest && model_wake(earliest) <= now ? earliest->w : NULL),
              "seed %" PRIu64 " step %zu: due at %" PRIu64, seed, step, now);
        for (uid_t uid = 0; uid < 4; uid++) {
                size_t count = 0;

                for (size_t i = 0; i < n; i++)
                        count += model[i].uid == uid;
                CHECK(waitq_uid_count(f->q, uid) == count, "seed %" PRIu64 " step %zu: uid %u", seed, step,
                      (unsigned)uid);
        }
        for (size_t s = 0; s < N_SCOPES; s++) {
                Waiter *want[MODEL_MAX];
                size_t k = 0;
                char what[80];

                for (size_t i = 0; i < n; i++)
                        if (model[i].scope == s)
                                sorted[k++] = model[i];
                qsort(sorted, k, sizeof(Model), model_cmp_order);
                for (size_t i = 0; i < k; i++)
                        want[i] = sorted[i].w;
                snprintf(what, sizeof(what), "seed %" PRIu64 " step %zu scope %zu", seed, step, s);
                check_order(f->scopes[s], want, k, what);
                for (Priority p = 0; p < _PRIORITY_MAX; p++)
                        CHECK(waitq_has_ahead(f->scopes[s], p) == (k > 0 && sorted[0].priority <= p),
                              "%s: has_ahead %d", what, p);
                CHECK((ledger_scope_get_queue(f->scopes[s]) != NULL) == (k > 0), "%s: slot", what);
        }
}

static uint64_t random_time(uint64_t *rng) {
        /* Small values so that equal wake times happen; sometimes "never". */
        return splitmix64(rng) % 8 == 0 ? UINT64_MAX : splitmix64(rng) % 200;
}

START_TEST(test_random_against_model) {
        for (uint64_t seed = 1; seed <= 20; seed++) {
                Fixture f;
                Model model[MODEL_MAX];
                size_t n = 0;
                uint64_t rng = seed, serial = 0;

                fixture_init(&f);
                for (size_t step = 0; step < 1500; step++) {
                        unsigned op = splitmix64(&rng) % 10;
                        int r;
                        uint64_t now = splitmix64(&rng) % 220;

                        if ((op < 4 || n == 0) && n < MODEL_MAX) {
                                Model *m = &model[n++];

                                m->scope = splitmix64(&rng) % N_SCOPES;
                                m->priority = splitmix64(&rng) % _PRIORITY_MAX;
                                m->uid = splitmix64(&rng) % 4;
                                m->deadline = random_time(&rng);
                                m->retry_at = random_time(&rng);
                                m->serial = ++serial;
                                m->w = add(&f, m->scope, m->priority, m->uid, m->deadline, m->retry_at,
                                           (void *)(uintptr_t)m->serial);
                                CHECK(waiter_serial(m->w) == m->serial, "seed %" PRIu64 " step %zu: serial",
                                      seed, step);
                        } else if (op < 6) {
                                size_t i = splitmix64(&rng) % n;

                                waitq_remove(f.q, model[i].w);
                                model[i] = model[--n];
                        } else if (op < 8) {
                                size_t i = splitmix64(&rng) % n;

                                model[i].scope = splitmix64(&rng) % N_SCOPES;
                                model[i].retry_at = random_time(&rng);
                                r = waitq_move(f.q, model[i].w, f.scopes[model[i].scope], model[i].retry_at);
                                CHECK(r == 0, "seed %" PRIu64 " step %zu: move: %d", seed, step, r);
                        } else if (op < 9) {
                                size_t i = splitmix64(&rng) % n;

                                model[i].retry_at = random_time(&rng);
                                waitq_set_retry(f.q, model[i].w, model[i].retry_at);
                        } else {
                                /* Serve what is due, as the daemon's timer does. */
                                Waiter *w = waitq_due(f.q, now);

                                if (w) {
                                        size_t i = 0;

                                        while (i < n && model[i].w != w)
                                                i++;
                                        CHECK(i < n && (uintptr_t)waiter_userdata(w) == model[i].serial &&
                                                      waiter_wake(w) <= now,
                                              "seed %" PRIu64 " step %zu: due waiter", seed, step);
                                        waitq_remove(f.q, w);
                                        model[i] = model[--n];
                                }
                        }
                        model_check(&f, model, n, now, seed, step);
                }
                fixture_done(&f);
        }
}
END_TEST

/* ---- 100,000 waiters: every operation O(log n) ---- */

static unsigned log2_ceil(size_t n) {
        unsigned k = 0;

        while (((size_t)1 << k) < n)
                k++;
        return k;
}

START_TEST(test_100k) {
        enum { N = 100000 };
        Fixture f;
        Waiter **w = calloc(N, sizeof(Waiter *));
        size_t *perm = calloc(N, sizeof(size_t));
        uint64_t rng = 42, max_add = 0, max_retry = 0, max_remove = 0, last_wake = 0;
        uint64_t bound = 2 * log2_ceil(N) + 2;

        ck_assert_ptr_nonnull(w);
        ck_assert_ptr_nonnull(perm);
        fixture_init(&f);
        for (size_t i = 0; i < N; i++) {
                uint64_t before = waitq_work(f.q), cost;

                int r = waitq_add(f.q, f.scopes[i % N_SCOPES], splitmix64(&rng) % _PRIORITY_MAX,
                                  (uid_t)(i % 100), splitmix64(&rng) % 1000000, UINT64_MAX, NULL, &w[i]);

                CHECK(r == 0, "add %zu: %d", i, r);
                cost = waitq_work(f.q) - before;
                if (cost > max_add)
                        max_add = cost;
                perm[i] = i;
        }
        ck_assert_uint_eq(waitq_size(f.q), N);
        ck_assert_uint_eq(waitq_uid_count(f.q, 7), N / 100);
        for (size_t i = 0; i < N_SCOPES; i++)
                ck_assert_uint_eq(waitq_scope_count(f.scopes[i]), N / N_SCOPES);
        for (size_t i = 0; i < N; i += 7) {
                uint64_t before = waitq_work(f.q), cost;

                waitq_set_retry(f.q, w[i], splitmix64(&rng) % 1000000);
                cost = waitq_work(f.q) - before;
                if (cost > max_retry)
                        max_retry = cost;
        }
        /* Half removed in random order, the rest served earliest first. */
        for (size_t i = N - 1; i > 0; i--) {
                size_t j = splitmix64(&rng) % (i + 1), t = perm[i];

                perm[i] = perm[j];
                perm[j] = t;
        }
        for (size_t i = 0; i < N / 2; i++) {
                uint64_t before = waitq_work(f.q), cost;

                waitq_remove(f.q, w[perm[i]]);
                cost = waitq_work(f.q) - before;
                if (cost > max_remove)
                        max_remove = cost;
        }
        ck_assert_uint_eq(waitq_size(f.q), N - N / 2);
        for (Waiter *d; (d = waitq_due(f.q, UINT64_MAX));) {
                uint64_t before = waitq_work(f.q), cost;

                CHECK(waiter_wake(d) >= last_wake, "served out of order");
                last_wake = waiter_wake(d);
                waitq_remove(f.q, d);
                cost = waitq_work(f.q) - before;
                if (cost > max_remove)
                        max_remove = cost;
        }
        ck_assert_uint_eq(waitq_size(f.q), 0);
        ck_assert_uint_eq(waitq_uid_count(f.q, 7), 0);
        for (size_t i = 0; i < N_SCOPES; i++)
                ck_assert_ptr_null(ledger_scope_get_queue(f.scopes[i]));
        ck_assert_msg(max_add <= bound && max_retry <= bound && max_remove <= bound,
                      "work per operation: add %" PRIu64 ", retry %" PRIu64 ", remove %" PRIu64
                      ", bound 2 log2(n) + 2 = %" PRIu64,
                      max_add, max_retry, max_remove, bound);
        /* An add of random wake times sifts up about 1.6 levels on average:
         * the total is far below the bound times n. */
        fixture_done(&f);
        free(w);
        free(perm);
}
END_TEST

/* Moving the head waiter (the oldest) of a list to another scope's list of
 * older waiters costs nothing but the heap; into younger ones, one step per
 * younger waiter of its priority (documented in waitq.h). */
START_TEST(test_move_cost) {
        Fixture f;
        Waiter *old, *w[100];
        uint64_t before;

        fixture_init(&f);
        old = add(&f, 0, PRIORITY_NORMAL, 1, 1000, UINT64_MAX, NULL);
        for (size_t i = 0; i < 100; i++)
                w[i] = add(&f, 1, PRIORITY_NORMAL, 1, 1000, UINT64_MAX, NULL);
        /* A younger waiter moves behind the older ones: no scan. */
        before = waitq_work(f.q);
        ck_assert_int_eq(waitq_move(f.q, w[99], f.scopes[2], UINT64_MAX), 0);
        ck_assert_int_eq(waitq_move(f.q, w[98], f.scopes[2], UINT64_MAX), 0);
        ck_assert_uint_le(waitq_work(f.q) - before, 2 * (2 * log2_ceil(101) + 2));
        /* The oldest moves in front of 98 younger ones of its priority. */
        before = waitq_work(f.q);
        ck_assert_int_eq(waitq_move(f.q, old, f.scopes[1], UINT64_MAX), 0);
        ck_assert_uint_ge(waitq_work(f.q) - before, 98);
        ck_assert_uint_le(waitq_work(f.q) - before, 98 + 2 * log2_ceil(101) + 2);
        ck_assert_ptr_eq(waitq_head(f.scopes[1]), old);
        fixture_done(&f);
}
END_TEST

START_TEST(test_free_with_waiters) {
        Fixture f;

        fixture_init(&f);
        for (size_t i = 0; i < 1000; i++)
                (void)add(&f, i % N_SCOPES, i % _PRIORITY_MAX, (uid_t)i, i, UINT64_MAX, NULL);
        for (size_t i = 0; i < N_SCOPES; i++)
                ck_assert_ptr_nonnull(ledger_scope_get_queue(f.scopes[i]));
        fixture_done(&f); /* checks the slots are cleared; ASan checks nothing leaks */
        ck_assert_ptr_null(waitq_free(NULL));
}
END_TEST

static Suite *waitq_suite(void) {
        Suite *s = suite_create("waitq");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_order);
        tcase_add_test(tc, test_move_keeps_order);
        tcase_add_test(tc, test_wake_times);
        tcase_add_test(tc, test_uid_counts);
        tcase_add_test(tc, test_random_against_model);
        tcase_add_test(tc, test_100k);
        tcase_add_test(tc, test_move_cost);
        tcase_add_test(tc, test_free_with_waiters);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(waitq_suite());
}
