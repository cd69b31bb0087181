/* SPDX-License-Identifier: MIT */
/*
 * The estimator state as the durable ledger keeps it (daemon/estimator-state.c):
 * a class's state written as JSON and read back is the same state to the bit
 * (every double, every counter), so a restarted daemon predicts exactly what
 * the stopped one would have; anything not of that shape or version is
 * refused, never half read.
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
                "", "[]", "{}", "null", "{\"v\":1}", "not json", "{\"v\":1,\"output\":[1,2,3]",
        };
        static const struct {
                const char *from, *to;
        } edits[] = {
                {"{\"v\":1,", "{\"v\":2,"},                   /* another version */
                {"{\"v\":1,", "{\"v\":\"1\","},               /* mistyped */
                {"\"output\":[", "\"output\":[\"x\","},       /* a string for a number */
                {"\"output\":[", "\"output\":[1,"},           /* four numbers for three */
                {"\"predicted\":", "\"predicted\":-"},        /* negative count */
                {"\"count\":", "\"count\":99999999999"},      /* past uint32 */
                {"\"errors\":[", "\"errors\":[0.5,"},         /* one error too many */
                {"\"buckets\":[[", "\"buckets\":[[9,9,9],["}, /* a bucket too many */
                {"\"ratio\":", "\"ratio_\":"},                /* a field missing */
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

static Suite *estimator_state_suite(void) {
        Suite *s = suite_create("estimator-state");
        TCase *tc = tcase_create("json");

        tcase_add_test(tc, test_round_trip);
        tcase_add_test(tc, test_refused);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(estimator_state_suite());
}
