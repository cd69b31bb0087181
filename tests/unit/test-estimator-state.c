/* SPDX-License-Identifier: MIT */
/*
 * The estimator state as the durable ledger keeps it (daemon/estimator-state.c):
 * a class's state written as JSON and read back is the same state to the bit
 * (every double, every counter), so a restarted daemon predicts exactly what
 * the stopped one would have; anything not of that shape or version is
 * refused, never half read; a state of the previous version (before the
 * project-interval rings) still reads, with those rings empty.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "estimator-state.h"
#include "splitmix64.h"
#include "tb-check.h"

#define T0 UINT64_C(5000000000)

/* A class with buckets, a tail, blocks of every size and a ratio histogram. */
static EstimatorTable *learned(EstimatorClassState *ret) {
        EstimatorTable *t = estimator_table_new(&ESTIMATOR_SETTINGS_DEFAULT, 16);
        uint64_t rng = 42;

        ck_assert_ptr_nonnull(t);
        for (unsigned i = 0; i < 2500; i++) {
                uint64_t prompt = i % 7 ? 100 + splitmix64(&rng) % 5000 : 0;
                uint64_t out = 50 + splitmix64(&rng) % 400;

                if (i % 97 == 0)
                        out *= 100; /* outliers feed the tail */
                ck_assert_int_eq(estimator_observe(t, 1000, "class:c", prompt, prompt, out, T0 + i), 0);
        }
        estimator_class_state(estimator_find(t, 1000, "class:c"), ret);
        return t;
}

static void assert_stat_eq(const EstimatorStat *a, const EstimatorStat *b, const char *what) {
        ck_assert_msg(a->mean == b->mean && a->tail == b->tail && a->samples == b->samples,
                      "%s: %.17g/%.17g/%llu against %.17g/%.17g/%llu", what, a->mean, a->tail,
                      (unsigned long long)a->samples, b->mean, b->tail, (unsigned long long)b->samples);
}

/* Field by field: the structs have padding (memcmp would compare it). */
static void assert_state_eq(const EstimatorClassState *a, const EstimatorClassState *b) {
        assert_stat_eq(&a->output, &b->output, "output");
        assert_stat_eq(&a->total, &b->total, "total");
        for (size_t i = 0; i < ESTIMATOR_BUCKETS; i++)
                assert_stat_eq(&a->bucket[i], &b->bucket[i], "bucket");
        for (size_t i = 0; i < ESTIMATOR_RATIO_BINS; i++)
                ck_assert_msg(a->ratio_hist[i] == b->ratio_hist[i], "ratio bin %zu", i);
        ck_assert(a->err_abs == b->err_abs && a->err_pred == b->err_pred && a->err_act == b->err_act);
        ck_assert_uint_eq(a->n_predicted, b->n_predicted);
        for (size_t k = 0; k < ESTIMATOR_BLOCK_SIZES; k++) {
                const EstimatorBlocks *x = &a->blocks[k], *y = &b->blocks[k];

                ck_assert(x->sum_pred == y->sum_pred && x->sum_act == y->sum_act);
                ck_assert_uint_eq(x->count, y->count);
                ck_assert_uint_eq(x->n_errors, y->n_errors);
                ck_assert_uint_eq(x->next, y->next);
                for (size_t i = 0; i < ESTIMATOR_BLOCK_RING; i++)
                        ck_assert_msg(x->errors[i] == y->errors[i], "block %zu error %zu", k, i);
                ck_assert_msg(x->m0 == y->m0, "block %zu m0 %.17g against %.17g", k, x->m0, y->m0);
                ck_assert_uint_eq(x->n_ratios, y->n_ratios);
                ck_assert_uint_eq(x->next_ratio, y->next_ratio);
                for (size_t i = 0; i < ESTIMATOR_BLOCK_RING; i++)
                        ck_assert_msg(x->ratios[i] == y->ratios[i], "block %zu ratio %zu", k, i);
        }
}

START_TEST(test_round_trip) {
        EstimatorClassState st, back;
        EstimatorTable *t = learned(&st), *t2;
        EstimatorPrediction p1, p2;
        char *text = estimator_state_to_json(&st);

        ck_assert_ptr_nonnull(text);
        ck_assert_uint_gt(st.bucket[7].samples, 0);
        ck_assert(st.output.tail > 0);
        ck_assert_uint_gt(st.blocks[2].n_errors, 0);
        /* The interval rings: full for 10, some of 1000, and blocks in
         * progress with their m0 (2480 predictions: 80 into a 100-block). */
        ck_assert_uint_eq(st.blocks[0].n_ratios, ESTIMATOR_BLOCK_RING);
        ck_assert_uint_eq(st.blocks[2].n_ratios, 1); /* the first began before 2 half-lives */
        ck_assert(st.blocks[1].m0 > 0.0 && st.blocks[2].m0 > 0.0);
        printf("a learned class's saved state: %zu bytes of JSON\n", strlen(text));
        ck_assert_int_eq(estimator_state_from_json(text, &back), 0);
        ck_assert_uint_eq(back.last_seen_usec, 0); /* not in the text: the ledger keeps it apart */
        back.last_seen_usec = st.last_seen_usec;
        assert_state_eq(&st, &back);

        /* Restored into another table: the same predictions, to the token. */
        t2 = estimator_table_new(&ESTIMATOR_SETTINGS_DEFAULT, 16);
        ck_assert_ptr_nonnull(t2);
        ck_assert_int_eq(estimator_restore(t2, 1000, "class:c", &back), 0);
        for (uint64_t prompt = 0; prompt < 10000; prompt += 333) {
                ck_assert(estimator_predict(t, 1000, "class:c", prompt, &p1));
                ck_assert(estimator_predict(t2, 1000, "class:c", prompt, &p2));
                ck_assert_uint_eq(p1.predicted_total, p2.predicted_total);
                ck_assert_uint_eq(p1.predicted_output, p2.predicted_output);
                ck_assert_uint_eq(p1.samples, p2.samples);
                ck_assert(p1.ratio_q == p2.ratio_q);
        }
        for (uint64_t n = 1; n <= 10000; n *= 10) {
                EstimatorProject r1, r2;

                ck_assert_int_eq(estimator_project(t, 1000, "class:c", n, 0, 900, &r1), 0);
                ck_assert_int_eq(estimator_project(t2, 1000, "class:c", n, 0, 900, &r2), 0);
                ck_assert_msg(r1.has_interval && r1.output_low == r2.output_low &&
                                      r1.output_high == r2.output_high &&
                                      r1.basis_block_size == r2.basis_block_size,
                              "project of %llu", (unsigned long long)n);
        }
        free(text);
        estimator_table_free(t);
        estimator_table_free(t2);
}
END_TEST

/* A copy of text with the first "from" replaced by "to". */
static char *replaced(const char *text, const char *from, const char *to) {
        const char *at = strstr(text, from);
        char *out;

        ck_assert_msg(at, "'%s' not in the state", from);
        ck_assert_int_ge(asprintf(&out, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from)), 0);
        return out;
}

START_TEST(test_refused) {
        EstimatorClassState st, back;
        EstimatorTable *t = learned(&st);
        char *text = estimator_state_to_json(&st);
        static const char *const whole[] = {
                "", "[]", "{}", "null", "{\"v\":1}", "{\"v\":2}", "not json", "{\"v\":2,\"output\":[1,2,3]",
        };
        static const struct {
                const char *from, *to;
        } edits[] = {
                {"{\"v\":2,", "{\"v\":3,"},                   /* a later version */
                {"{\"v\":2,", "{\"v\":0,"},                   /* no such version */
                {"{\"v\":2,", "{\"v\":\"2\","},               /* mistyped */
                {"{\"v\":2,", "{\"v\":2.0,"},                 /* mistyped */
                {"\"output\":[", "\"output\":[\"x\","},       /* a string for a number */
                {"\"output\":[", "\"output\":[1,"},           /* four numbers for three */
                {"\"predicted\":", "\"predicted\":-"},        /* negative count */
                {"\"count\":", "\"count\":99999999999"},      /* past uint32 */
                {"\"errors\":[", "\"errors\":[0.5,"},         /* one error too many */
                {"\"buckets\":[[", "\"buckets\":[[9,9,9],["}, /* a bucket too many */
                {"\"ratio\":", "\"ratio_\":"},                /* a field missing */
                {"\"m0\":", "\"m0\":\"x\",\"m\":"},           /* a string for m0 */
                {"\"ratiosKept\":", "\"ratiosKept_\":"},      /* version 2 without its fields */
                {"\"ratios\":[", "\"ratios\":[0.5,"},         /* one ratio too many */
                {"\"ratiosNext\":", "\"ratiosNext\":-"},      /* negative */
        };

        ck_assert_ptr_nonnull(text);
        ck_assert_int_eq(estimator_state_from_json(NULL, &back), -EBADMSG);
        for (size_t i = 0; i < sizeof(whole) / sizeof(whole[0]); i++)
                ck_assert_msg(estimator_state_from_json(whole[i], &back) == -EBADMSG, "'%s' was read",
                              whole[i]);
        for (size_t i = 0; i < sizeof(edits) / sizeof(edits[0]); i++) {
                char *bad = replaced(text, edits[i].from, edits[i].to);

                ck_assert_msg(estimator_state_from_json(bad, &back) == -EBADMSG,
                              "edit %zu (%s -> %s) was read", i, edits[i].from, edits[i].to);
                free(bad);
        }
        ck_assert_int_eq(estimator_state_from_json(text, &back), 0); /* the original still reads */
        free(text);
        estimator_table_free(t);
}
END_TEST

/* A state as the version 1 daemon wrote it (commit c6dbda9's
 * estimator-state.c; 45 samples of one class, two thirds with a 300-token
 * prompt: two blocks of 10 done, one in progress 5 in, the larger blocks 25
 * in), before the interval rings existed. */
static const char state_v1[] =
        "{\"v\":1,\"output\":[125.11111111111106,0.0,45],\"total\":[425.11111111111114,0.0,45],\"buckets\":["
        "[0.0,"
        "0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[125."
        "83333333333331,0.0,30],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],["
        "0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],["
        "0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],[0.0,0.0,0],["
        "0.0,0.0,0]],\"ratio\":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0"
        ",0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.9841640030403993,8.9268958967256005,12.8938824259"
        "88709,0.98828565150073222,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0."
        "0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0],\"err\":[310.0,3124.0,3150.0],\"predicted\":25,"
        "\"b"
        "locks\":[{\"sumPredicted\":627.0,\"sumActual\":620.0,\"count\":5,\"kept\":2,\"next\":2,\"errors\":["
        "0.01818181"
        "8181818181,0.0079051383399209481,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0"
        ",0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0"
        ",0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0]},{\"sum"
        "Predicted\":3124.0,\"sumActual\":3150.0,\"count\":25,\"kept\":0,\"next\":0,\"errors\":[0.0,0.0,0.0,"
        "0.0,0.0,"
        "0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,"
        "0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,"
        "0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0]},{\"sumPredicted\":3124.0,\"sumActual\":3150.0,"
        "\"count\":"
        "25,\"kept\":0,\"next\":0,\"errors\":[0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0."
        "0,0"
        ".0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0"
        ".0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0]}"
        "]}";

/* The previous version still reads: every field it has as it was, the new
 * rings empty and m0 0, so the block in progress keeps no ratio and the
 * next one does. */
START_TEST(test_version_1) {
        EstimatorTable *t = estimator_table_new(&ESTIMATOR_SETTINGS_DEFAULT, 16);
        EstimatorClassState st, after;
        EstimatorPrediction p;
        EstimatorProject pr;

        ck_assert_ptr_nonnull(t);
        ck_assert_int_eq(estimator_state_from_json(state_v1, &st), 0);
        ck_assert_uint_eq(st.output.samples, 45);
        ck_assert(st.output.mean == 125.11111111111106);
        ck_assert(st.total.mean == 425.11111111111114);
        ck_assert_uint_eq(st.bucket[8].samples, 30);
        ck_assert(st.ratio_hist[32] == 12.893882425988709);
        ck_assert(st.err_abs == 310.0 && st.err_pred == 3124.0 && st.err_act == 3150.0);
        ck_assert_uint_eq(st.n_predicted, 25);
        ck_assert_uint_eq(st.blocks[0].count, 5);
        ck_assert_uint_eq(st.blocks[0].n_errors, 2);
        ck_assert(st.blocks[0].errors[1] == 0.0079051383399209481);
        ck_assert_uint_eq(st.blocks[1].count, 25);
        for (size_t k = 0; k < ESTIMATOR_BLOCK_SIZES; k++)
                ck_assert_msg(st.blocks[k].m0 == 0.0 && st.blocks[k].n_ratios == 0 &&
                                      st.blocks[k].next_ratio == 0,
                              "block %zu", k);
        ck_assert_int_eq(estimator_restore(t, 1000, "v1", &st), 0);
        ck_assert(estimator_predict(t, 1000, "v1", 0, &p));
        ck_assert_uint_eq(p.predicted_output, 125);
        ck_assert_int_eq(estimator_project(t, 1000, "v1", 1, 0, 900, &pr), 0);
        ck_assert(pr.has_interval); /* 25 single predictions */
        ck_assert_int_eq(estimator_project(t, 1000, "v1", 10, 0, 900, &pr), 0);
        ck_assert_uint_eq(pr.basis_block_size, 1); /* no ratio of 10 yet */

        /* The block in progress ends: its error is kept, no ratio (m0 unknown). */
        for (int i = 0; i < 5; i++)
                ck_assert_int_eq(estimator_observe(t, 1000, "v1", 0, 0, 130, T0), 0);
        estimator_class_state(estimator_find(t, 1000, "v1"), &after);
        ck_assert_uint_eq(after.blocks[0].n_errors, 3);
        ck_assert_uint_eq(after.blocks[0].n_ratios, 0);
        /* The next blocks keep one once the class has 2 half-lives (100 samples). */
        for (int i = 0; i < 100; i++)
                ck_assert_int_eq(estimator_observe(t, 1000, "v1", 0, 0, 130, T0), 0);
        estimator_class_state(estimator_find(t, 1000, "v1"), &after);
        ck_assert_uint_ge(after.blocks[0].n_ratios, 1);
        ck_assert(after.blocks[0].ratios[0] > 0.9 && after.blocks[0].ratios[0] < 1.1);

        /* Saved again, it is version 2. */
        {
                char *text = estimator_state_to_json(&after);

                ck_assert_ptr_nonnull(text);
                ck_assert(strncmp(text, "{\"v\":2,", 7) == 0);
                free(text);
        }
        estimator_table_free(t);
}
END_TEST

static Suite *estimator_state_suite(void) {
        Suite *s = suite_create("estimator-state");
        TCase *tc = tcase_create("json");

        tcase_add_test(tc, test_round_trip);
        tcase_add_test(tc, test_refused);
        tcase_add_test(tc, test_version_1);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(estimator_state_suite());
}
