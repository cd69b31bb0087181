/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/core/estimator.c, with seeded generators (splitmix64; no
 * rand(), no clock) of the spread the Azure traces have: a stationary class
 * converges, and its average prediction is unbiased even with a heavy
 * (lognormal, CV 1.9) tail; a step change of the mean (x2) is followed at
 * the documented half-life, not faster and not slower; a single 100x outlier
 * moves a settled estimate (700 samples or more) by less than 20%, a young
 * one by at most the documented amount, while a real tail of them is
 * learned in full; a prompt bucket is used once it has min_samples and an
 * empty or young one falls back to the class; the learned total without a
 * prompt; block-total errors of a stationary noisy class shrink with the
 * block size far below the single-request WAPE; the spread quantile of a
 * tight and of a noisy class; settings out of range; the table full and bad
 * names; the sweep forgetting what retention says; and a save/restore round
 * trip predicting exactly what the original does, then and after more
 * learning, with damaged states refused. Project intervals
 * (estimator_project): the ratio each block keeps against the prediction
 * frozen at its start; the arguments, expected values to the token and
 * when there is an interval; the quantiles and their interpolation in log N
 * on a state of chosen ratios; the skew of a lognormal class; and coverage
 * of the 90% interval on drifting and stationary generators (issue 13
 * point 8), next to a 50% interval and the i.i.d. formula, which it tells
 * apart.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "estimator.h"
#include "splitmix64.h"
#include "tb-check.h"

#define SEC UINT64_C(1000000)
#define T0  (1000 * SEC)

static double uniform01(uint64_t *rng) {
        return (double)(splitmix64(rng) >> 11) * 0x1.0p-53;
}

/* Generators of output tokens with a given mean. */
typedef enum Gen {
        GEN_TIGHT,     /* uniform in [0.9, 1.1] x mean: CV 0.06 */
        GEN_UNIFORM,   /* uniform in [0, 2] x mean: CV 0.58 */
        GEN_LOGNORMAL, /* lognormal, sigma 1.2: CV 1.9 (the code trace has 2.15) */
} Gen;

static double gen_sample(Gen g, double mean, uint64_t *rng) {
        double u1, u2, z, sigma = 1.2;

        switch (g) {
        case GEN_TIGHT:
                return mean * (0.9 + 0.2 * uniform01(rng));
        case GEN_UNIFORM:
                return mean * 2.0 * uniform01(rng);
        case GEN_LOGNORMAL:
        default:
                u1 = uniform01(rng);
                u2 = uniform01(rng);
                z = sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2); /* Box-Muller */
                return mean * exp(sigma * z - sigma * sigma / 2.0);
        }
}

static uint64_t gen_tokens(Gen g, double mean, uint64_t *rng) {
        return (uint64_t)llround(gen_sample(g, mean, rng));
}

static void observe(EstimatorTable *t, const char *cls, uint64_t prompt, uint64_t output, uint64_t now) {
        ck_assert_int_eq(estimator_observe(t, 1000, cls, prompt, prompt, output, now), 0);
}

static EstimatorPrediction predict(const EstimatorTable *t, const char *cls, uint64_t prompt) {
        EstimatorPrediction p;

        ck_assert(estimator_predict(t, 1000, cls, prompt, &p));
        return p;
}

static EstimatorTable *table_new(uint32_t half_life, size_t max_entries) {
        EstimatorSettings s = ESTIMATOR_SETTINGS_DEFAULT;
        EstimatorTable *t;

        if (half_life)
                s.half_life_samples = half_life;
        t = estimator_table_new(&s, max_entries);
        ck_assert_ptr_nonnull(t);
        return t;
}

START_TEST(test_settings) {
        static const struct {
                const char *what;
                EstimatorSettings s;
                int r;
        } rows[] = {
                {"defaults", ESTIMATOR_SETTINGS_DEFAULT, 0},
                {"half-life 0", {0, 1000, 4.0, 20, 950}, -EINVAL},
                {"tail shorter than half-life", {100, 50, 4.0, 20, 950}, -EINVAL},
                {"tail equal", {100, 100, 4.0, 20, 950}, 0},
                {"clip 1", {50, 1000, 1.0, 20, 950}, -EINVAL},
                {"clip NaN", {50, 1000, NAN, 20, 950}, -EINVAL},
                {"clip inf", {50, 1000, INFINITY, 20, 950}, -EINVAL},
                {"min_samples 0", {50, 1000, 4.0, 0, 950}, -EINVAL},
                {"quantile 0", {50, 1000, 4.0, 20, 0}, -EINVAL},
                {"quantile 1000", {50, 1000, 4.0, 20, 1000}, -EINVAL},
                {"quantile 999", {50, 1000, 4.0, 20, 999}, 0},
        };

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                EstimatorTable *t = estimator_table_new(&rows[i].s, 10);

                ck_assert_msg(estimator_settings_validate(&rows[i].s) == rows[i].r, "row %s", rows[i].what);
                ck_assert_msg((t != NULL) == (rows[i].r == 0), "row %s: table_new", rows[i].what);
                estimator_table_free(t);
        }
        ck_assert_ptr_null(estimator_table_free(NULL));

        /* New settings (a reload): refused when invalid, else what is learned
         * from now on follows them and what was learned stays. */
        {
                EstimatorSettings fast = ESTIMATOR_SETTINGS_DEFAULT;
                EstimatorTable *t = estimator_table_new(&fast, 10);
                EstimatorPrediction p;

                ck_assert_ptr_nonnull(t);
                for (int i = 0; i < 100; i++)
                        ck_assert_int_eq(estimator_observe(t, 1, "c", 0, 0, 100, 1), 0);
                ck_assert_int_eq(estimator_table_set_settings(t, &rows[1].s, 10), -EINVAL);
                fast.half_life_samples = 1;
                fast.tail_half_life_samples = 1;
                ck_assert_int_eq(estimator_table_set_settings(t, &fast, 1), 0);
                ck_assert(estimator_predict(t, 1, "c", 0, &p) && p.predicted_output == 100);
                /* Half-life 1: one sample of 300 moves it halfway. */
                ck_assert_int_eq(estimator_observe(t, 1, "c", 0, 0, 300, 2), 0);
                ck_assert(estimator_predict(t, 1, "c", 0, &p));
                ck_assert_msg(p.predicted_output == 200, "after the new half-life: %" PRIu64,
                              p.predicted_output);
                /* max_entries 1: the table is full. */
                ck_assert_int_eq(estimator_observe(t, 1, "d", 0, 0, 300, 2), -EUSERS);
                estimator_table_free(t);
        }
}
END_TEST

/* After warm-up, the prediction is near the true mean and, averaged over
 * many predictions, unbiased: the clipped excess is learned by the tail (a
 * clip alone would put the lognormal row's average about 15% low). */
START_TEST(test_stationary_converges) {
        static const struct {
                Gen gen;
                uint32_t half_life;
                double last_tol, avg_tol;
        } rows[] = {
                /* standard error of one estimate: CV / sqrt(2.9 H) = 2.4%, 4.8% */
                {GEN_TIGHT, 50, 0.02, 0.01},
                {GEN_UNIFORM, 200, 0.08, 0.02},
                {GEN_UNIFORM, 50, 0.15, 0.03},
                /* 1.9 / sqrt(2.9 x 400) = 5.6%; the tail adds its own */
                {GEN_LOGNORMAL, 400, 0.25, 0.06},
        };
        const double mean = 300.0;

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                EstimatorTable *t = table_new(rows[i].half_life, 10);
                uint64_t rng = 42 + i;
                double sum = 0.0, last;
                int n = 0;

                for (int k = 0; k < 30000; k++) {
                        if (k >= 5000) {
                                sum += (double)predict(t, "c", 0).predicted_output;
                                n++;
                        }
                        observe(t, "c", 0, gen_tokens(rows[i].gen, mean, &rng), T0 + (uint64_t)k);
                }
                last = (double)predict(t, "c", 0).predicted_output;
                ck_assert_msg(fabs(last / mean - 1.0) < rows[i].last_tol, "row %zu: last %.1f", i, last);
                ck_assert_msg(fabs(sum / n / mean - 1.0) < rows[i].avg_tol, "row %zu: average %.1f", i,
                              sum / n);
                ck_assert_uint_eq(predict(t, "c", 0).samples, 30000);
                estimator_table_free(t);
        }
}
END_TEST

/* A step from 100 to 200: half the gap is closed after one half-life (not
 * after half of it), all but 1/32 after five. */
START_TEST(test_step_change) {
        static const uint32_t half_lives[] = {20, 50, 200};

        for (size_t i = 0; i < sizeof(half_lives) / sizeof(half_lives[0]); i++) {
                uint32_t h = half_lives[i];
                EstimatorTable *t = table_new(h, 10);
                uint64_t rng = 7;
                double p;

                for (uint32_t k = 0; k < 10 * h; k++)
                        observe(t, "c", 0, gen_tokens(GEN_TIGHT, 100.0, &rng), T0);
                p = (double)predict(t, "c", 0).predicted_output;
                ck_assert_msg(fabs(p - 100.0) < 3.0, "H %u: before the step %.1f", h, p);
                for (uint32_t k = 0; k < h / 2; k++)
                        observe(t, "c", 0, gen_tokens(GEN_TIGHT, 200.0, &rng), T0);
                p = (double)predict(t, "c", 0).predicted_output;
                ck_assert_msg(p > 120.0 && p < 140.0, "H %u: half a half-life %.1f", h, p); /* 129.3 */
                for (uint32_t k = h / 2; k < h; k++)
                        observe(t, "c", 0, gen_tokens(GEN_TIGHT, 200.0, &rng), T0);
                p = (double)predict(t, "c", 0).predicted_output;
                ck_assert_msg(p > 142.0 && p < 158.0, "H %u: one half-life %.1f", h, p); /* 150 */
                for (uint32_t k = h; k < 5 * h; k++)
                        observe(t, "c", 0, gen_tokens(GEN_TIGHT, 200.0, &rng), T0);
                p = (double)predict(t, "c", 0).predicted_output;
                ck_assert_msg(p > 192.0 && p < 202.0, "H %u: five half-lives %.1f", h, p); /* 196.9 */
                estimator_table_free(t);
        }
}
END_TEST

/* A settled class (see estimator.h: the tail's warm-up is a plain mean, so
 * the bound holds from ~700 samples on; a young class moves more, and by
 * no more than the mean of what it saw). */
START_TEST(test_outlier) {
        static const struct {
                Gen gen;
                int settled;
                double max_move;
        } rows[] = {
                {GEN_TIGHT, 2000, 0.2},  {GEN_UNIFORM, 2000, 0.2}, {GEN_TIGHT, 700, 0.2},
                {GEN_UNIFORM, 700, 0.2}, {GEN_TIGHT, 100, 1.0},    {GEN_TIGHT, 20, 5.0},
        };

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                EstimatorTable *t = table_new(0, 10); /* the defaults */
                uint64_t rng = 11;
                double before, after;

                for (int k = 0; k < rows[i].settled; k++)
                        observe(t, "c", 0, gen_tokens(rows[i].gen, 100.0, &rng), T0);
                before = (double)predict(t, "c", 0).predicted_output;
                observe(t, "c", 0, 100 * 100, T0);
                after = (double)predict(t, "c", 0).predicted_output;
                ck_assert_msg(after > before, "row %zu: the outlier is not ignored (%.1f)", i, after);
                ck_assert_msg(after < (1.0 + rows[i].max_move) * before, "row %zu: %.1f -> %.1f", i, before,
                              after);
                estimator_table_free(t);
        }
}
END_TEST

/* 5% of the requests take 100x: that is the class, and the mean (595) is
 * learned, not clipped away. */
START_TEST(test_real_tail) {
        EstimatorTable *t = table_new(0, 10);
        uint64_t rng = 3;
        double sum = 0.0, mean = 0.95 * 100.0 + 0.05 * 10000.0;
        int n = 0;

        for (int k = 0; k < 40000; k++) {
                uint64_t x = uniform01(&rng) < 0.05 ? 10000 : gen_tokens(GEN_TIGHT, 100.0, &rng);

                if (k >= 10000) {
                        sum += (double)predict(t, "c", 0).predicted_output;
                        n++;
                }
                observe(t, "c", 0, x, T0);
        }
        ck_assert_msg(fabs(sum / n / mean - 1.0) < 0.1, "average %.1f, mean %.1f", sum / n, mean);
        estimator_table_free(t);
}
END_TEST

/* Prompts of 1000 tokens (bucket 9) give 500, of 100 (bucket 6) give 50. */
START_TEST(test_bucket_fallback) {
        EstimatorTable *t = table_new(0, 10);
        EstimatorPrediction p;

        for (int k = 0; k < 100; k++)
                observe(t, "c", 1000, 500, T0);
        for (int k = 0; k < 19; k++)
                observe(t, "c", 100, 50, T0);
        /* 19 < min_samples: the class (mostly the 500s) */
        p = predict(t, "c", 100);
        ck_assert(!p.bucket_used);
        ck_assert_uint_eq(p.bucket, 6);
        ck_assert_uint_eq(p.bucket_samples, 19);
        ck_assert_uint_eq(p.samples, 119);
        ck_assert_uint_gt(p.predicted_output, 300);
        observe(t, "c", 127, 50, T0); /* 127 is bucket 6 too */
        p = predict(t, "c", 64);
        ck_assert(p.bucket_used);
        ck_assert_uint_eq(p.bucket_samples, 20);
        ck_assert_uint_eq(p.predicted_output, 50);
        ck_assert_uint_eq(p.predicted_total, 64 + 50);
        p = predict(t, "c", 1023);
        ck_assert(p.bucket_used);
        ck_assert_uint_eq(p.bucket, 9);
        ck_assert_uint_eq(p.predicted_output, 500);

        /* An empty bucket (8192 tokens: 13) and a prompt larger than the last
         * bucket's start fall back to the class. */
        p = predict(t, "c", 8192);
        ck_assert(!p.bucket_used);
        ck_assert_uint_eq(p.bucket, 13);
        ck_assert_uint_eq(p.bucket_samples, 0);
        ck_assert_uint_gt(p.predicted_output, 300);
        ck_assert_uint_lt(p.predicted_output, 500);
        ck_assert_uint_eq(p.predicted_total, 8192 + p.predicted_output);
        p = predict(t, "c", UINT64_MAX);
        ck_assert(!p.bucket_used);
        ck_assert_uint_eq(p.bucket, ESTIMATOR_BUCKETS - 1);
        ck_assert_uint_eq(p.predicted_total, UINT64_MAX); /* saturates */

        /* Without a prompt: the class's output, and the learned total
         * (input + output: here the input is the prompt). */
        p = predict(t, "c", 0);
        ck_assert(!p.bucket_used);
        ck_assert_uint_eq(p.bucket_samples, 0);
        ck_assert_uint_gt(p.predicted_total, p.predicted_output + 600);
        estimator_table_free(t);
}
END_TEST

START_TEST(test_total_without_prompt) {
        EstimatorTable *t = table_new(0, 10);
        EstimatorPrediction p;

        for (int k = 0; k < 50; k++)
                ck_assert_int_eq(estimator_observe(t, 1000, "c", 0, 2000, 300, T0), 0);
        p = predict(t, "c", 0);
        ck_assert_uint_eq(p.predicted_output, 300);
        ck_assert_uint_eq(p.predicted_total, 2300);
        p = predict(t, "c", 100); /* a prompt now: prompt + output */
        ck_assert_uint_eq(p.predicted_total, 400);
        estimator_table_free(t);
}
END_TEST

/* Totals of blocks are predictable where single requests are not (the
 * traces: WAPE 60%, 100-blocks near 5%). A stationary uniform class has
 * WAPE about 0.5; its 100-block error is about 0.06 (CV / sqrt(100) plus
 * the estimate's own noise), the 1000-block one smaller. */
START_TEST(test_block_errors) {
        EstimatorTable *t = table_new(0, 10);
        EstimatorMetrics m;
        uint64_t rng = 99;
        const int n = 70020;

        for (int k = 0; k < n; k++)
                observe(t, "c", 0, gen_tokens(GEN_UNIFORM, 300.0, &rng), T0);
        estimator_class_metrics(estimator_find(t, 1000, "c"), &m);
        ck_assert_uint_eq(m.n_predicted, n - 20); /* from min_samples on */
        ck_assert_msg(m.wape > 0.4 && m.wape < 0.6, "wape %.3f", m.wape);
        ck_assert_msg(fabs(m.bias) < 0.02, "bias %.3f", m.bias);
        ck_assert_uint_eq(m.blocks[0].block_size, 10);
        ck_assert_uint_eq(m.blocks[1].block_size, 100);
        ck_assert_uint_eq(m.blocks[2].block_size, 1000);
        for (int i = 0; i < 3; i++)
                ck_assert_uint_eq(m.blocks[i].n_blocks, ESTIMATOR_BLOCK_RING); /* 70 1000-blocks, ring 64 */
        ck_assert_msg(m.blocks[1].median < m.wape / 4, "100: %.3f, wape %.3f", m.blocks[1].median, m.wape);
        ck_assert_msg(m.blocks[1].median < m.blocks[0].median, "10: %.3f", m.blocks[0].median);
        ck_assert_msg(m.blocks[2].median < m.blocks[1].median, "1000: %.3f", m.blocks[2].median);
        for (int i = 0; i < 3; i++)
                ck_assert_msg(m.blocks[i].p90 >= m.blocks[i].median && m.blocks[i].median > 0.0, "block %d",
                              i);
        estimator_table_free(t);

        /* Fewer than a block: none kept, and nothing at all before min_samples. */
        t = table_new(0, 10);
        for (int k = 0; k < 20; k++)
                observe(t, "c", 0, 100, T0);
        estimator_class_metrics(estimator_find(t, 1000, "c"), &m);
        ck_assert_uint_eq(m.n_predicted, 0);
        ck_assert(m.wape == 0.0 && m.blocks[0].n_blocks == 0);
        for (int k = 0; k < 10; k++)
                observe(t, "c", 0, 110, T0);
        estimator_class_metrics(estimator_find(t, 1000, "c"), &m);
        ck_assert_uint_eq(m.n_predicted, 10);
        ck_assert_uint_eq(m.blocks[0].n_blocks, 1);
        ck_assert_uint_eq(m.blocks[1].n_blocks, 0);
        ck_assert_msg(m.bias < -0.05 && m.bias > -0.1, "bias %.3f", m.bias); /* predicted ~100..103 of 110 */
        estimator_table_free(t);
}
END_TEST

/* The p95 of actual / predicted: near 1 for a tight class, well above 2
 * for a lognormal one (its p95 is exp(1.645 x 1.2 - 0.72) = 3.5). */
START_TEST(test_ratio_quantile) {
        static const struct {
                Gen gen;
                double lo, hi;
        } rows[] = {
                {GEN_TIGHT, 1.05, 1.25},
                {GEN_UNIFORM, 1.6, 2.2}, /* 1.9 */
                {GEN_LOGNORMAL, 2.5, 5.0},
        };

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                EstimatorTable *t = table_new(0, 10);
                uint64_t rng = 5;
                double q;

                ck_assert_int_eq(estimator_observe(t, 1000, "c", 0, 0, 100, T0), 0);
                ck_assert(predict(t, "c", 0).ratio_q == 0.0); /* none yet */
                for (int k = 0; k < 20000; k++)
                        observe(t, "c", 0, gen_tokens(rows[i].gen, 300.0, &rng), T0);
                q = predict(t, "c", 0).ratio_q;
                ck_assert_msg(q >= rows[i].lo && q <= rows[i].hi, "row %zu: %.3f", i, q);
                estimator_table_free(t);
        }
}
END_TEST

/* One uid's share: past it, its new classes are refused while other uids'
 * still learn; a class swept away gives its place back. */
START_TEST(test_per_uid_share) {
        EstimatorTable *t = table_new(0, 100);

        estimator_table_set_max_per_uid(t, 2);
        ck_assert_int_eq(estimator_observe(t, 7, "a", 0, 0, 1, T0), 0);
        ck_assert_int_eq(estimator_observe(t, 7, "b", 0, 0, 1, T0 + 10), 0);
        ck_assert_int_eq(estimator_observe(t, 7, "c", 0, 0, 1, T0 + 20), -EUSERS);
        ck_assert_int_eq(estimator_observe(t, 7, "a", 0, 0, 1, T0 + 30), 0);  /* known ones still learn */
        ck_assert_int_eq(estimator_observe(t, 8, "c", 0, 0, 1, T0 + 100), 0); /* another uid has its own */
        ck_assert_int_eq(estimator_observe(t, 8, "d", 0, 0, 1, T0 + 100), 0);
        ck_assert_uint_eq(estimator_table_size(t), 4);
        /* b (last seen T0 + 10) is a retention old at T0 + 1010; a (T0 + 30) and uid 8's stay */
        ck_assert_uint_eq(estimator_table_sweep(t, T0 + 10 + 1000, 1000), 1);
        ck_assert_ptr_null(estimator_find(t, 7, "b"));
        ck_assert_int_eq(estimator_observe(t, 7, "c", 0, 0, 1, T0 + 2000), 0);
        ck_assert_int_eq(estimator_observe(t, 7, "e", 0, 0, 1, T0 + 2000), -EUSERS);
        estimator_table_free(t);
}
END_TEST

/* Dirty: learned since marked saved; a restored class is not. */
START_TEST(test_dirty) {
        EstimatorTable *t = table_new(0, 10), *t2 = table_new(0, 10);
        EstimatorClassState st;
        EstimatorClass *c;

        observe(t, "a", 0, 10, T0);
        c = estimator_find(t, 1000, "a");
        ck_assert(estimator_class_dirty(c));
        estimator_class_mark_saved(c);
        ck_assert(!estimator_class_dirty(c));
        observe(t, "a", 0, 10, T0 + 1);
        ck_assert(estimator_class_dirty(c));
        estimator_class_state(c, &st);
        ck_assert_int_eq(estimator_restore(t2, 1000, "a", &st), 0);
        ck_assert(!estimator_class_dirty(estimator_find(t2, 1000, "a")));
        estimator_table_free(t);
        estimator_table_free(t2);
}
END_TEST

START_TEST(test_table_full_and_names) {
        EstimatorTable *t = table_new(0, 2);
        EstimatorPrediction p = {.samples = 7};
        char long_name[ESTIMATOR_NAME_MAX + 2];

        observe(t, "a", 0, 10, T0);
        ck_assert_int_eq(estimator_observe(t, 1001, "a", 0, 0, 20, T0), 0); /* another uid: another class */
        ck_assert_uint_eq(estimator_table_size(t), 2);
        ck_assert_int_eq(estimator_observe(t, 1000, "b", 0, 0, 10, T0), -EUSERS);
        ck_assert(!estimator_predict(t, 1000, "b", 0, &p));
        ck_assert_uint_eq(p.samples, 0); /* zeroed */
        observe(t, "a", 0, 10, T0);      /* known ones still learn */
        ck_assert_uint_eq(predict(t, "a", 0).samples, 2);
        ck_assert(estimator_predict(t, 1001, "a", 0, &p));
        ck_assert_uint_eq(p.predicted_output, 20);
        ck_assert_uint_eq(p.samples, 1);

        memset(long_name, 'x', sizeof(long_name) - 1);
        long_name[sizeof(long_name) - 1] = 0;
        ck_assert_int_eq(estimator_observe(t, 1000, NULL, 0, 0, 1, T0), -EINVAL);
        ck_assert_int_eq(estimator_observe(t, 1000, "", 0, 0, 1, T0), -EINVAL);
        ck_assert_int_eq(estimator_observe(t, 1000, long_name, 0, 0, 1, T0), -EINVAL);
        ck_assert(!estimator_predict(t, 1000, NULL, 0, &p));
        ck_assert_ptr_null(estimator_find(t, 1000, long_name));
        estimator_table_free(t);

        /* The longest name fits; names differing in the last byte are two. */
        t = table_new(0, 10);
        long_name[ESTIMATOR_NAME_MAX] = 0;
        observe(t, long_name, 0, 1, T0);
        long_name[ESTIMATOR_NAME_MAX - 1] = 'y';
        observe(t, long_name, 0, 2, T0);
        ck_assert_uint_eq(estimator_table_size(t), 2);
        ck_assert_uint_eq(predict(t, long_name, 0).predicted_output, 2);
        estimator_table_free(t);
}
END_TEST

START_TEST(test_many_classes) {
        EstimatorTable *t = table_new(0, 5000);
        static const uint8_t key[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
        char name[32];

        estimator_table_set_hash_key(t, key);
        for (uint32_t i = 0; i < 5000; i++) {
                snprintf(name, sizeof(name), "class-%u", i / 2);
                ck_assert_int_eq(estimator_observe(t, i % 2, name, 0, 0, i, T0), 0);
        }
        ck_assert_uint_eq(estimator_table_size(t), 5000);
        for (uint32_t i = 0; i < 5000; i++) {
                EstimatorPrediction p;

                snprintf(name, sizeof(name), "class-%u", i / 2);
                ck_assert(estimator_predict(t, i % 2, name, 0, &p));
                ck_assert_msg(p.predicted_output == i, "class %u uid %u", i / 2, i % 2);
        }
        estimator_table_free(t);
}
END_TEST

START_TEST(test_sweep) {
        EstimatorTable *t = table_new(0, 2);
        const uint64_t retention = 3600 * SEC;

        observe(t, "old", 0, 10, T0);
        observe(t, "new", 0, 10, T0 + 10 * SEC);
        ck_assert_uint_eq(estimator_table_sweep(t, T0 + retention - 1, retention), 0);
        ck_assert_uint_eq(estimator_table_sweep(t, T0 + retention, retention), 1);
        ck_assert_ptr_null(estimator_find(t, 1000, "old"));
        ck_assert_ptr_nonnull(estimator_find(t, 1000, "new"));
        observe(t, "third", 0, 10, T0 + retention); /* room again */
        /* Seen again: its retention starts over. */
        observe(t, "new", 0, 10, T0 + retention + 5 * SEC);
        ck_assert_uint_eq(estimator_table_sweep(t, T0 + 10 * SEC + retention, retention), 0);
        ck_assert_uint_eq(estimator_table_sweep(t, T0 + 2 * retention + 5 * SEC, retention), 2);
        ck_assert_uint_eq(estimator_table_size(t), 0);
        ck_assert_ptr_null(estimator_table_next(t, NULL));
        estimator_table_free(t);
}
END_TEST

static void feed_mixed(EstimatorTable *t, uint64_t *rng, int n, uint64_t now) {
        for (int k = 0; k < n; k++) {
                uint64_t prompt = (splitmix64(rng) % 4) == 0 ? 0 : 1 + splitmix64(rng) % 20000;
                double mean = prompt ? 20.0 + (double)prompt / 20.0 : 200.0;

                ck_assert_int_eq(estimator_observe(t, 1000, k % 3 ? "x" : "y", prompt, prompt + 7,
                                                   gen_tokens(GEN_LOGNORMAL, mean, rng), now + (uint64_t)k),
                                 0);
        }
}

static void assert_same_predictions(const EstimatorTable *a, const EstimatorTable *b, const char *when) {
        static const char *const names[] = {"x", "y"};

        for (size_t i = 0; i < 2; i++) {
                EstimatorMetrics ma, mb;

                for (uint64_t prompt = 0; prompt < 40000; prompt = prompt * 2 + 1) {
                        EstimatorPrediction pa, pb;

                        ck_assert(estimator_predict(a, 1000, names[i], prompt, &pa));
                        ck_assert(estimator_predict(b, 1000, names[i], prompt, &pb));
                        ck_assert_msg(pa.predicted_total == pb.predicted_total &&
                                              pa.predicted_output == pb.predicted_output &&
                                              pa.samples == pb.samples &&
                                              pa.bucket_samples == pb.bucket_samples &&
                                              pa.bucket_used == pb.bucket_used && pa.bucket == pb.bucket &&
                                              pa.ratio_q == pb.ratio_q,
                                      "%s: %s prompt %" PRIu64, when, names[i], prompt);
                }
                for (uint64_t n = 1; n < 100000; n *= 3) {
                        EstimatorProject pa, pb;

                        ck_assert_int_eq(estimator_project(a, 1000, names[i], n, 0, 900, &pa), 0);
                        ck_assert_int_eq(estimator_project(b, 1000, names[i], n, 0, 900, &pb), 0);
                        ck_assert_msg(pa.has_interval == pb.has_interval && pa.output_low == pb.output_low &&
                                              pa.output_high == pb.output_high &&
                                              pa.total_low == pb.total_low &&
                                              pa.total_high == pb.total_high &&
                                              pa.basis_block_size == pb.basis_block_size &&
                                              pa.basis_blocks == pb.basis_blocks,
                                      "%s: %s project of %" PRIu64, when, names[i], n);
                }
                estimator_class_metrics(estimator_find(a, 1000, names[i]), &ma);
                estimator_class_metrics(estimator_find(b, 1000, names[i]), &mb);
                ck_assert_msg(memcmp(&ma, &mb, sizeof(ma)) == 0, "%s: metrics of %s", when, names[i]);
        }
}

static bool stat_equal(const EstimatorStat *a, const EstimatorStat *b) {
        return a->mean == b->mean && a->tail == b->tail && a->samples == b->samples;
}

/* Field by field: the structs have padding. */
static void assert_same_state(const EstimatorClassState *a, const EstimatorClassState *b) {
        ck_assert(stat_equal(&a->output, &b->output) && stat_equal(&a->total, &b->total));
        for (uint32_t i = 0; i < ESTIMATOR_BUCKETS; i++)
                ck_assert_msg(stat_equal(&a->bucket[i], &b->bucket[i]), "bucket %u", i);
        for (uint32_t i = 0; i < ESTIMATOR_RATIO_BINS; i++)
                ck_assert_msg(a->ratio_hist[i] == b->ratio_hist[i], "ratio bin %u", i);
        ck_assert(a->err_abs == b->err_abs && a->err_pred == b->err_pred && a->err_act == b->err_act);
        ck_assert_uint_eq(a->n_predicted, b->n_predicted);
        ck_assert_uint_eq(a->last_seen_usec, b->last_seen_usec);
        for (uint32_t i = 0; i < ESTIMATOR_BLOCK_SIZES; i++) {
                const EstimatorBlocks *x = &a->blocks[i], *y = &b->blocks[i];

                ck_assert(x->sum_pred == y->sum_pred && x->sum_act == y->sum_act && x->count == y->count);
                ck_assert(x->n_errors == y->n_errors && x->next == y->next);
                for (uint32_t j = 0; j < ESTIMATOR_BLOCK_RING; j++)
                        ck_assert_msg(x->errors[j] == y->errors[j], "block %u error %u", i, j);
                ck_assert(x->m0 == y->m0 && x->n_ratios == y->n_ratios && x->next_ratio == y->next_ratio);
                for (uint32_t j = 0; j < ESTIMATOR_BLOCK_RING; j++)
                        ck_assert_msg(x->ratios[j] == y->ratios[j], "block %u ratio %u", i, j);
        }
}

START_TEST(test_restore_round_trip) {
        static const uint8_t key[16] = {9};
        EstimatorTable *a = table_new(0, 10), *b = table_new(0, 10);
        EstimatorClassState st, bad;
        uint64_t rng1 = 17, rng2;

        estimator_table_set_hash_key(b, key); /* the key is not part of the state */
        feed_mixed(a, &rng1, 5000, T0);
        for (EstimatorClass *c = estimator_table_next(a, NULL); c; c = estimator_table_next(a, c)) {
                estimator_class_state(c, &st);
                ck_assert_int_eq(estimator_restore(b, estimator_class_uid(c), estimator_class_name(c), &st),
                                 0);
        }
        ck_assert_uint_eq(estimator_table_size(b), 2);
        assert_same_predictions(a, b, "restored");
        estimator_class_state(estimator_find(a, 1000, "x"), &st);
        estimator_class_state(estimator_find(b, 1000, "x"), &bad);
        ck_assert_uint_eq(st.blocks[0].n_ratios, ESTIMATOR_BLOCK_RING);
        ck_assert_uint_gt(st.blocks[2].n_ratios, 0);
        assert_same_state(&st, &bad);

        /* Both learn the same afterwards. */
        rng2 = rng1;
        feed_mixed(a, &rng1, 1234, T0 + SEC);
        feed_mixed(b, &rng2, 1234, T0 + SEC);
        assert_same_predictions(a, b, "after more learning");

        /* Restoring over an existing class replaces it; damaged states are refused. */
        estimator_class_state(estimator_find(a, 1000, "y"), &st);
        ck_assert_int_eq(estimator_restore(b, 1000, "x", &st), 0);
        ck_assert_uint_eq(predict(b, "x", 0).samples, st.output.samples);
        {
                static const char *const what[] = {"NaN mean",
                                                   "negative tail",
                                                   "value without samples",
                                                   "block count",
                                                   "ring index",
                                                   "ring not filled from 0",
                                                   "inf histogram",
                                                   "negative m0",
                                                   "m0 without a block",
                                                   "ratio ring index",
                                                   "ratio ring not filled from 0",
                                                   "NaN ratio"};

                for (size_t i = 0; i < sizeof(what) / sizeof(what[0]); i++) {
                        bad = st;
                        switch (i) {
                        case 0:
                                bad.output.mean = NAN;
                                break;
                        case 1:
                                bad.bucket[3].tail = -1.0;
                                break;
                        case 2:
                                bad.bucket[30] = (EstimatorStat){.mean = 5.0};
                                break;
                        case 3:
                                bad.blocks[0].count = 10;
                                break;
                        case 4:
                                bad.blocks[2].next = ESTIMATOR_BLOCK_RING;
                                break;
                        case 5:
                                bad.blocks[2].n_errors = 1;
                                bad.blocks[2].next = 3;
                                break;
                        case 6:
                                bad.ratio_hist[0] = INFINITY;
                                break;
                        case 7:
                                bad.blocks[1].count = 5;
                                bad.blocks[1].m0 = -1.0;
                                break;
                        case 8:
                                bad.blocks[1].count = 0;
                                bad.blocks[1].m0 = 100.0;
                                break;
                        case 9:
                                bad.blocks[0].next_ratio = ESTIMATOR_BLOCK_RING;
                                break;
                        case 10:
                                bad.blocks[2].n_ratios = 2;
                                bad.blocks[2].next_ratio = 0;
                                break;
                        default:
                                bad.blocks[0].ratios[0] = NAN;
                                break;
                        }
                        ck_assert_msg(estimator_restore(b, 1000, "z", &bad) == -EINVAL, "%s", what[i]);
                }
        }
        ck_assert_ptr_null(estimator_find(b, 1000, "z"));
        ck_assert_int_eq(estimator_restore(b, 1000, "", &st), -EINVAL);
        ck_assert_int_eq(estimator_restore(b, 1000, "z", &(EstimatorClassState){}),
                         0); /* nothing learned yet */
        ck_assert(!estimator_predict(b, 1000, "z", 0, &(EstimatorPrediction){}));
        estimator_table_free(a);
        estimator_table_free(b);
}
END_TEST

/* ---- project intervals (estimator_project) ---- */

static EstimatorProject project(const EstimatorTable *t, const char *cls, uint64_t tasks, uint64_t prompt,
                                uint32_t coverage_permille) {
        EstimatorProject pr;

        ck_assert_int_eq(estimator_project(t, 1000, cls, tasks, prompt, coverage_permille, &pr), 0);
        return pr;
}

/* Drifting classes for the calibration test. The level (the class's true
 * mean) moves; each request is lognormal around it with CV 0.8 (sigma
 * 0.703: sqrt(ln(1 + 0.8^2))), about the conversation trace's 0.77. */
typedef enum Drift {
        DRIFT_NONE,     /* i.i.d.: the level stays */
        DRIFT_WALK,     /* log-level a mean-reverting random walk (see drift_next) */
        DRIFT_SINUSOID, /* level x (1 + 0.4 sin(2 pi k / 5000)) */
        DRIFT_STEPS,    /* the level jumps between x1 and x1.5, on average every 3000 requests */
} Drift;

typedef struct DriftGen {
        Drift drift;
        uint64_t rng, k;
        double log_level; /* DRIFT_WALK's */
} DriftGen;

static double normal01(uint64_t *rng) {
        double u1 = uniform01(rng), u2 = uniform01(rng);

        return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

/* The walk steps 0.01 per request in log (10% over 100 requests, about
 * what the conversation trace's 5-minute means do at 5 requests/s), pulled
 * back with a time constant of 2000 requests (stationary spread 0.32 in
 * log: the level wanders between about x0.5 and x1.9). */
static uint64_t drift_next(DriftGen *g, double mean) {
        const double sigma = 0.703;
        double level = mean;

        switch (g->drift) {
        case DRIFT_WALK:
                g->log_level += -g->log_level / 2000.0 + 0.01 * normal01(&g->rng);
                level = mean * exp(g->log_level);
                break;
        case DRIFT_SINUSOID:
                level = mean * (1.0 + 0.4 * sin(2.0 * M_PI * (double)g->k / 5000.0));
                break;
        case DRIFT_STEPS:
                if (uniform01(&g->rng) < 1.0 / 3000.0)
                        g->log_level = g->log_level == 0.0 ? log(1.5) : 0.0;
                level = mean * exp(g->log_level);
                break;
        case DRIFT_NONE:
        default:
                break;
        }
        g->k++;
        return (uint64_t)llround(level * exp(sigma * normal01(&g->rng) - sigma * sigma / 2.0));
}

typedef struct Coverage {
        uint32_t trials, in90, in50, below90, above90;
        uint32_t in_iid; /* inside expected x (1 +- 1.645 x 0.8 / sqrt(n)): the i.i.d. formula */
        double width90;  /* mean (high - low) / expected of the 90% interval */
} Coverage;

/* Learns `warm` requests of the generator, then `trials` times: projects n
 * tasks (90% and 50%), feeds the next n requests and counts whether their
 * output sum is inside. The projects are made at the trial boundaries,
 * which are not aligned with the blocks the class counts (warm is not a
 * multiple of 10). */
static Coverage coverage_run(Drift drift, uint64_t seed, uint64_t n, uint32_t warm, uint32_t trials) {
        EstimatorTable *t = table_new(0, 10);
        DriftGen g = {.drift = drift, .rng = seed};
        Coverage cov = {.trials = trials};

        for (uint32_t k = 0; k < warm; k++)
                observe(t, "c", 0, drift_next(&g, 300.0), T0);
        for (uint32_t i = 0; i < trials; i++) {
                EstimatorProject p90 = project(t, "c", n, 0, 900), p50 = project(t, "c", n, 0, 500);
                double sum = 0.0;

                ck_assert_msg(p90.has_interval && p50.has_interval, "n %" PRIu64 " trial %u", n, i);
                for (uint64_t k = 0; k < n; k++) {
                        uint64_t x = drift_next(&g, 300.0);

                        sum += (double)x;
                        observe(t, "c", 0, x, T0);
                }
                cov.in90 += sum >= p90.output_low && sum <= p90.output_high;
                cov.below90 += sum < p90.output_low;
                cov.above90 += sum > p90.output_high;
                cov.in50 += sum >= p50.output_low && sum <= p50.output_high;
                cov.in_iid += fabs(sum / p90.expected_output - 1.0) <= 1.645 * 0.8 / sqrt((double)n);
                cov.width90 += (p90.output_high - p90.output_low) / p90.expected_output / trials;
        }
        estimator_table_free(t);
        return cov;
}

/* What a class keeps for intervals: m0 frozen at each block's first
 * observation, ratio sum act / (size x m0) at its end; none while m0 is 0;
 * counted from min_samples on, like the errors. */
START_TEST(test_project_blocks) {
        /* Half-life 10: the ratios count from 2 x 10 = min_samples on. */
        EstimatorTable *t = table_new(10, 10);
        EstimatorClassState st;

        for (int k = 0; k < 20; k++)
                observe(t, "c", 0, 100, T0);
        estimator_class_state(estimator_find(t, 1000, "c"), &st);
        ck_assert_uint_eq(st.blocks[0].n_ratios, 0);
        ck_assert(st.blocks[0].m0 == 0.0); /* no block begun: min_samples just reached */
        observe(t, "c", 0, 200, T0);
        estimator_class_state(estimator_find(t, 1000, "c"), &st);
        for (int i = 0; i < 3; i++)
                ck_assert_msg(st.blocks[i].m0 == 100.0, "size %d: m0 %.17g", i, st.blocks[i].m0);
        for (int k = 1; k < 10; k++)
                observe(t, "c", 0, 200, T0); /* the prediction moves up; m0 stays */
        estimator_class_state(estimator_find(t, 1000, "c"), &st);
        ck_assert_uint_eq(st.blocks[0].n_ratios, 1);
        ck_assert_msg(st.blocks[0].ratios[0] == 2.0, "ratio %.17g",
                      st.blocks[0].ratios[0]); /* 2000 / (10 x 100) */
        ck_assert(st.blocks[0].m0 == 0.0);     /* until the next block */
        ck_assert(st.blocks[1].m0 == 100.0 && st.blocks[1].n_ratios == 0);
        ck_assert_uint_eq(st.blocks[0].n_errors, 1);
        estimator_table_free(t);

        /* A class predicting 0 at a block's start keeps that block's error but no ratio. */
        t = table_new(10, 10);
        for (int k = 0; k < 20; k++)
                observe(t, "z", 0, 0, T0);
        for (int k = 0; k < 10; k++)
                observe(t, "z", 0, 50, T0);
        estimator_class_state(estimator_find(t, 1000, "z"), &st);
        ck_assert_uint_eq(st.blocks[0].n_errors, 1);
        ck_assert_uint_eq(st.blocks[0].n_ratios, 0);
        for (int k = 0; k < 10; k++)
                observe(t, "z", 0, 50, T0);
        estimator_class_state(estimator_find(t, 1000, "z"), &st);
        ck_assert_uint_eq(st.blocks[0].n_ratios, 1);
        estimator_table_free(t);

        /* With the default half-life (50) the blocks begun before 100 samples
         * keep their errors but no ratio: a young class's project estimate is
         * as noisy as its few samples, and would widen later intervals. */
        t = table_new(0, 10);
        for (int k = 0; k < 100; k++)
                observe(t, "c", 0, 100, T0);
        estimator_class_state(estimator_find(t, 1000, "c"), &st);
        ck_assert_uint_eq(st.blocks[0].n_errors, 8); /* predictions 21..100 */
        ck_assert_uint_eq(st.blocks[0].n_ratios, 0);
        ck_assert(st.blocks[0].m0 == 0.0);
        for (int k = 0; k < 10; k++)
                observe(t, "c", 0, 100, T0);
        estimator_class_state(estimator_find(t, 1000, "c"), &st);
        ck_assert_uint_eq(st.blocks[0].n_ratios, 1);
        ck_assert(st.blocks[0].ratios[0] == 1.0);
        estimator_table_free(t);
}
END_TEST

/* Arguments, expected values to the token, and when there is an interval. */
START_TEST(test_project_basics) {
        EstimatorTable *t = table_new(10, 10); /* ratios from min_samples on, as in test_project_blocks */
        EstimatorProject pr = {.tasks = 9};
        EstimatorPrediction p;

        ck_assert_int_eq(estimator_project(t, 1000, "c", 1, 0, 900, &pr), -ENOENT);
        ck_assert_uint_eq(pr.tasks, 0); /* zeroed */
        ck_assert_int_eq(estimator_restore(t, 1000, "empty", &(EstimatorClassState){}), 0);
        ck_assert_int_eq(estimator_project(t, 1000, "empty", 1, 0, 900, &pr), -ENOENT); /* learned nothing */
        ck_assert_int_eq(estimator_project(t, 1000, NULL, 1, 0, 900, &pr), -ENOENT);
        for (int k = 0; k < 20; k++)
                ck_assert_int_eq(estimator_observe(t, 1000, "c", 1000, 1000, 100 + k % 2, T0), 0);
        {
                static const struct {
                        uint64_t tasks;
                        uint32_t permille;
                } bad[] = {{0, 900}, {1, 0}, {1, 1000}, {0, 0}, {UINT64_MAX, 1000}};

                for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                        ck_assert_msg(estimator_project(t, 1000, "c", bad[i].tasks, 0, bad[i].permille,
                                                        &pr) == -EINVAL,
                                      "row %zu", i);
                ck_assert_int_eq(estimator_project(t, 1000, "nope", 0, 0, 900, &pr),
                                 -EINVAL); /* arguments first */
                ck_assert_int_eq(estimator_project(t, 1000, "c", 1, 0, 1, &pr), 0);
                ck_assert_int_eq(estimator_project(t, 1000, "c", 1, 0, 999, &pr), 0);
        }

        /* 20 samples: predictions, but none counted yet (metrics start at min_samples). */
        ck_assert(estimator_predict(t, 1000, "c", 1000, &p));
        pr = project(t, "c", 1, 1000, 900);
        ck_assert_uint_eq(pr.tasks, 1);
        ck_assert_uint_eq(pr.per_task.predicted_output, p.predicted_output);
        ck_assert_uint_eq(pr.per_task.predicted_total, 1000 + p.predicted_output);
        ck_assert(pr.per_task.bucket_used);
        ck_assert(pr.expected_output == (double)p.predicted_output);
        ck_assert(pr.expected_total == (double)(1000 + p.predicted_output));
        ck_assert(!pr.has_interval);
        ck_assert_uint_eq(pr.basis_block_size, 1);
        ck_assert_uint_eq(pr.basis_blocks, 0);
        ck_assert(pr.output_low == 0.0 && pr.output_high == 0.0 && pr.total_low == 0.0);
        pr = project(t, "c", 100, 1000, 900);
        ck_assert(pr.expected_output == 100.0 * (double)p.predicted_output);
        ck_assert(pr.expected_total == 100.0 * (double)(1000 + p.predicted_output));
        ck_assert(!pr.has_interval);

        /* 9 predictions counted: still none; the 10th makes single requests usable. */
        for (int k = 0; k < 9; k++)
                ck_assert_int_eq(estimator_observe(t, 1000, "c", 1000, 1000, 90 + 3 * k, T0), 0);
        pr = project(t, "c", 1, 1000, 900);
        ck_assert(!pr.has_interval);
        ck_assert_uint_eq(pr.basis_blocks, 9);
        ck_assert_int_eq(estimator_observe(t, 1000, "c", 1000, 1000, 120, T0), 0);
        ck_assert(estimator_predict(t, 1000, "c", 1000, &p));
        pr = project(t, "c", 1, 1000, 900);
        ck_assert(pr.has_interval && !pr.basis_scaled);
        ck_assert_uint_eq(pr.basis_block_size, 1);
        ck_assert_uint_eq(pr.basis_blocks, 10);
        ck_assert_msg(pr.output_low < pr.expected_output && pr.output_high > pr.expected_output,
                      "%.1f .. %.1f around %.1f", pr.output_low, pr.output_high, pr.expected_output);
        ck_assert(pr.total_low == pr.output_low + 1000.0 && pr.total_high == pr.output_high + 1000.0);
        /* 100 tasks: only single requests to go by, used as they are (wide). */
        pr = project(t, "c", 100, 1000, 900);
        ck_assert(pr.has_interval && pr.basis_scaled);
        ck_assert_uint_eq(pr.basis_block_size, 1);
        ck_assert(pr.expected_output == 100.0 * (double)p.predicted_output);
        ck_assert(pr.total_low == pr.output_low + 100000.0);

        /* 90 predictions are 9 blocks of 10: not enough; 100 are 10, usable
         * for 10 tasks, interpolated below. */
        for (int k = 0; k < 80; k++)
                ck_assert_int_eq(estimator_observe(t, 1000, "c", 1000, 1000, 100, T0), 0);
        ck_assert_uint_eq(project(t, "c", 10, 1000, 900).basis_block_size, 1);
        for (int k = 0; k < 10; k++)
                ck_assert_int_eq(estimator_observe(t, 1000, "c", 1000, 1000, 100, T0), 0);
        {
                static const struct {
                        uint64_t tasks;
                        uint32_t size, blocks;
                        bool scaled;
                } rows[] = {
                        {1, 1, 100, false}, {2, 10, 10, false},  {10, 10, 10, false},
                        {11, 10, 10, true}, {100, 10, 10, true}, {UINT64_MAX, 10, 10, true},
                };

                for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                        pr = project(t, "c", rows[i].tasks, 1000, 900);
                        ck_assert_msg(pr.has_interval && pr.basis_block_size == rows[i].size &&
                                              pr.basis_blocks == rows[i].blocks &&
                                              pr.basis_scaled == rows[i].scaled,
                                      "row %zu: %u x %u%s", i, pr.basis_block_size, pr.basis_blocks,
                                      pr.basis_scaled ? " scaled" : "");
                        ck_assert_msg(pr.output_low <= pr.output_high && isfinite(pr.output_high), "row %zu",
                                      i);
                }
        }
        /* Without a prompt: the class's output and the learned total (the
         * input was 1000 each time). */
        pr = project(t, "c", 10, 0, 900);
        ck_assert(!pr.per_task.bucket_used);
        ck_assert_msg(fabs(pr.total_low - pr.output_low - 10000.0) < 50.0, "input part %.1f",
                      pr.total_low - pr.output_low);
        estimator_table_free(t);
}
END_TEST

/* A state with known ratios (restored, so every number is chosen): the
 * quantiles at the positions (n + 1) p, clamped; interpolation in log N
 * between usable sizes; past the last usable one, its quantiles as they
 * are; single requests from the histogram, linear in log2 inside a bin. */
START_TEST(test_project_quantiles) {
        EstimatorTable *t = table_new(0, 10);
        EstimatorClassState st = {};
        const double l10 = 0.5 + 2.25 / 64, h10 = 0.5 + 60.75 / 64; /* 65 x 0.05 = 3.25, 65 x 0.95 = 61.75 */
        const double l100 = 0.9005, h100 = 1.0895;                  /* 21 x 0.05 = 1.05, 21 x 0.95 = 19.95 */
        const double l1 = exp2(0.05 / 4), h1 = exp2(0.95 / 4);      /* all in bin [1, 2^(1/4)) */
        double f31 = log(3.1) / log(10.0), f3 = log(3.0) / log(10.0);
        static const char *const what[] = {"1", "3", "10", "31", "100", "1000", "10^9", "100 at 99.9%"};
        struct {
                uint64_t tasks;
                uint32_t permille;
                double low, high;
                uint32_t size, blocks;
                bool scaled;
        } rows[] = {
                {1, 900, l1, h1, 1, 9980, false},
                {3, 900, exp(log(l1) + f3 * (log(l10) - log(l1))), exp(log(h1) + f3 * (log(h10) - log(h1))),
                 10, 64, false},
                {10, 900, l10, h10, 10, 64, false},
                {31, 900, exp(log(l10) + f31 * (log(l100) - log(l10))),
                 exp(log(h10) + f31 * (log(h100) - log(h10))), 100, 20, false},
                {100, 900, l100, h100, 100, 20, false},
                {1000, 900, l100, h100, 100, 20, true}, /* 9 blocks of 1000: not usable */
                {1000000000, 900, l100, h100, 100, 20, true},
                {100, 999, 0.9, 1.09, 100, 20, false}, /* 21 x 0.0005 < 1: the extremes */
        };

        st.output = (EstimatorStat){.mean = 100.0, .samples = 10000};
        st.total = (EstimatorStat){.mean = 150.0, .samples = 10000};
        st.n_predicted = 9980;
        st.ratio_hist[32] = 500.0;
        for (uint32_t k = 0; k < 64; k++) /* 0.5 + k / 64, written in reverse: sorting is tested */
                st.blocks[0].ratios[k] = 0.5 + (double)(63 - k) / 64;
        st.blocks[0].n_ratios = 64;
        st.blocks[0].next_ratio = 17;
        for (uint32_t k = 0; k < 20; k++)
                st.blocks[1].ratios[k] = 0.9 + 0.01 * (double)((k * 7) % 20);
        st.blocks[1].n_ratios = st.blocks[1].next_ratio = 20;
        for (uint32_t k = 0; k < 9; k++)
                st.blocks[2].ratios[k] = 5.0;
        st.blocks[2].n_ratios = st.blocks[2].next_ratio = 9;
        ck_assert_int_eq(estimator_restore(t, 1000, "q", &st), 0);
        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                EstimatorProject pr = project(t, "q", rows[i].tasks, 0, rows[i].permille);
                double e = 100.0 * (double)rows[i].tasks;

                ck_assert_msg(pr.has_interval && pr.expected_output == e && pr.expected_total == 1.5 * e,
                              "row %s", what[i]);
                ck_assert_msg(fabs(pr.output_low / e - rows[i].low) < 1e-12 &&
                                      fabs(pr.output_high / e - rows[i].high) < 1e-12,
                              "row %s: %.15g .. %.15g, want %.15g .. %.15g", what[i], pr.output_low / e,
                              pr.output_high / e, rows[i].low, rows[i].high);
                ck_assert_msg(pr.basis_block_size == rows[i].size && pr.basis_blocks == rows[i].blocks &&
                                      pr.basis_scaled == rows[i].scaled,
                              "row %s: %u x %u", what[i], pr.basis_block_size, pr.basis_blocks);
                ck_assert_msg(pr.total_low == pr.output_low + 0.5 * e &&
                                      pr.total_high == pr.output_high + 0.5 * e,
                              "row %s: total", what[i]);
        }
        estimator_table_free(t);
}
END_TEST

/* Issue 13 point 8: the central 90% interval of N tasks, calibrated on
 * the class's own blocks, holds about 90% of the actual sums of the next N
 * requests, on a drifting class (a log random walk, a sinusoid, random
 * steps of the level) as on a stationary one, with each tail missing about
 * half the rest (the interval is not right only by being one-sided).
 * Bands: the trials are near-binomial (measured over 10 seeds, the 90%
 * coverage spread like sqrt(0.09 / trials)), and each band is about 4.5
 * standard deviations of its row's trial count wide either side of 0.9 (so
 * a deterministic run fails only for a real miscalibration): 2000 trials
 * 0.87..0.93, 500: 0.84..0.96, 300: 0.82..0.98. Measured (seeds 1..10):
 * N=100: 0.88..0.93 in every generator; N=1000 (300 trials): 0.86..0.92.
 * What the test can tell apart, in the same trials: the central 50%
 * interval covers about half (0.35..0.65), far below the 90% one; and the
 * i.i.d. formula expected x (1 +- 1.645 CV / sqrt(N)), with the
 * generator's true CV, covers 0.65..0.71 of the random walk's blocks of 100
 * and 0.14..0.22 of its 1000 (measured), which the bands would fail. */
START_TEST(test_project_calibration) {
        static const struct {
                const char *what;
                Drift drift;
                uint64_t n;
                uint32_t trials;
                double lo, hi, iid_max; /* iid_max: the i.i.d. formula must cover less (1: not checked) */
        } rows[] = {
                {"stationary, 1", DRIFT_NONE, 1, 4000, 0.88, 0.92, 1.0},
                {"walk, 1", DRIFT_WALK, 1, 4000, 0.88, 0.92, 1.0},
                {"walk, 10", DRIFT_WALK, 10, 2000, 0.87, 0.93, 1.0},
                {"stationary, 100", DRIFT_NONE, 100, 500, 0.84, 0.96, 1.0},
                {"walk, 100", DRIFT_WALK, 100, 500, 0.84, 0.96, 0.80},
                {"sinusoid, 100", DRIFT_SINUSOID, 100, 500, 0.84, 0.96, 1.0},
                {"steps, 100", DRIFT_STEPS, 100, 500, 0.84, 0.96, 1.0},
                {"stationary, 1000", DRIFT_NONE, 1000, 300, 0.82, 0.98, 1.0},
                {"walk, 1000", DRIFT_WALK, 1000, 300, 0.82, 0.98, 0.40},
        };

        for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
                Coverage c = coverage_run(rows[i].drift, 1 + i, rows[i].n, 20005, rows[i].trials);
                double in90 = (double)c.in90 / c.trials, in50 = (double)c.in50 / c.trials;
                double below = (double)c.below90 / c.trials, above = (double)c.above90 / c.trials;
                double iid = (double)c.in_iid / c.trials;

                printf("%-18s 90%%: %.3f (below %.3f, above %.3f), 50%%: %.3f, i.i.d. formula %.3f, width "
                       "%.3f\n",
                       rows[i].what, in90, below, above, in50, iid, c.width90);
                ck_assert_msg(in90 >= rows[i].lo && in90 <= rows[i].hi, "%s: 90%% interval covered %.3f",
                              rows[i].what, in90);
                ck_assert_msg(below <= 0.11 && above <= 0.11, "%s: below %.3f above %.3f", rows[i].what,
                              below, above);
                ck_assert_msg(in50 >= 0.35 && in50 <= 0.65 && in90 - in50 >= 0.25,
                              "%s: 50%% interval covered %.3f", rows[i].what, in50);
                ck_assert_msg(iid <= rows[i].iid_max, "%s: the i.i.d. formula covered %.3f", rows[i].what,
                              iid);
        }
}
END_TEST

/* Lognormal requests: the single-request interval is skewed up, as the
 * ratios are (a signed ratio, not +- an error). */
START_TEST(test_project_asymmetric) {
        EstimatorTable *t = table_new(0, 10);
        DriftGen g = {.drift = DRIFT_NONE, .rng = 77};
        EstimatorProject pr;

        for (int k = 0; k < 5000; k++)
                observe(t, "c", 0, drift_next(&g, 300.0), T0);
        pr = project(t, "c", 1, 0, 900);
        ck_assert_msg(pr.output_high - pr.expected_output > 2.0 * (pr.expected_output - pr.output_low),
                      "%.1f .. %.1f around %.1f", pr.output_low, pr.output_high, pr.expected_output);
        estimator_table_free(t);
}
END_TEST

static Suite *estimator_suite(void) {
        Suite *s = suite_create("estimator");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_settings);
        tcase_add_test(tc, test_stationary_converges);
        tcase_add_test(tc, test_step_change);
        tcase_add_test(tc, test_outlier);
        tcase_add_test(tc, test_real_tail);
        tcase_add_test(tc, test_bucket_fallback);
        tcase_add_test(tc, test_total_without_prompt);
        tcase_add_test(tc, test_block_errors);
        tcase_add_test(tc, test_ratio_quantile);
        tcase_add_test(tc, test_per_uid_share);
        tcase_add_test(tc, test_dirty);
        tcase_add_test(tc, test_table_full_and_names);
        tcase_add_test(tc, test_many_classes);
        tcase_add_test(tc, test_sweep);
        tcase_add_test(tc, test_restore_round_trip);
        tcase_add_test(tc, test_project_blocks);
        tcase_add_test(tc, test_project_basics);
        tcase_add_test(tc, test_project_quantiles);
        tcase_add_test(tc, test_project_asymmetric);
        tcase_add_test(tc, test_project_calibration);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(estimator_suite());
}
