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
 * learning, with damaged states refused.
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
                static const char *const what[] = {"NaN mean",     "negative tail", "value without samples",
                                                   "block count",  "ring index",    "ring not filled from 0",
                                                   "inf histogram"};

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
                        default:
                                bad.ratio_hist[0] = INFINITY;
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
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(estimator_suite());
}
