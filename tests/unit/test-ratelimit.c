/* SPDX-License-Identifier: MIT */
/*
 * Tests for common/ratelimit.c: each row is a script of steps (an event at a
 * time, taking the suppressed count, asking when the interval ends, changing
 * the settings) with the answer each step must give. Time moves by parameter.
 */
#include <check.h>
#include <stdlib.h>

#include "ratelimit.h"
#include "tb-check.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define SEC           UINT64_C(1000000)
#define NEVER         RATELIMIT_NEVER_USEC

typedef enum Op {
        OP_DONE,      /* the end of a script (a zeroed step) */
        OP_TEST,      /* ratelimit_test(a) must return want, `times` times */
        OP_TAKE,      /* ratelimit_take_suppressed() must return want */
        OP_END,       /* ratelimit_end_usec() must return want */
        OP_OVER,      /* ratelimit_interval_over(a) must return want */
        OP_CONFIGURE, /* ratelimit_configure(interval a, burst want) */
} Op;

typedef struct Step {
        Op op;
        uint64_t a;
        uint64_t want;
        unsigned times; /* 0 means once */
} Step;

#define PASS(now)                                                                                           \
        { OP_TEST, (now), true, 0 }
#define DROP(now)                                                                                           \
        { OP_TEST, (now), false, 0 }
#define PASS_N(now, n)                                                                                      \
        { OP_TEST, (now), true, (n) }
#define DROP_N(now, n)                                                                                      \
        { OP_TEST, (now), false, (n) }
#define TAKE(n)                                                                                             \
        { OP_TAKE, 0, (n), 0 }
#define END(usec)                                                                                           \
        { OP_END, 0, (usec), 0 }
#define OVER(now, b)                                                                                        \
        { OP_OVER, (now), (b), 0 }
#define CONFIGURE(iv, b)                                                                                    \
        { OP_CONFIGURE, (iv), (b), 0 }

typedef struct Row {
        const char *name;
        uint64_t interval_usec, burst;
        Step steps[16];
} Row;

static const Row rows[] = {
        {"burst then suppressed, summary count",
         10 * SEC,
         3,
         {PASS(0), PASS(1), PASS(2), END(10 * SEC), DROP(3), DROP(10 * SEC - 1), TAKE(2), TAKE(0),
          PASS(10 * SEC), END(20 * SEC)}},
        {"the interval end is exclusive",
         10 * SEC,
         1,
         {PASS(5), OVER(10 * SEC + 4, false), DROP(10 * SEC + 4), OVER(10 * SEC + 5, true),
          PASS(10 * SEC + 5), DROP(10 * SEC + 6), TAKE(2)}},
        {"default burst of 20 per 10 s",
         10 * SEC,
         20,
         {PASS_N(1000, 20), DROP_N(2000, 100), TAKE(100), PASS_N(10 * SEC + 1000, 20), DROP(10 * SEC + 2000),
          TAKE(1)}},
        {"interval 0 is unlimited", 0, 5, {PASS_N(0, 1000), TAKE(0), END(NEVER), OVER(0, true)}},
        {"burst 0 is unlimited", 10 * SEC, 0, {PASS_N(7, 1000), TAKE(0), END(NEVER), OVER(7, true)}},
        {"no interval before the first event",
         10 * SEC,
         2,
         {END(NEVER), OVER(0, true), PASS(0), END(10 * SEC)}},
        {"an event at time 0 starts an interval", SEC, 1, {PASS(0), DROP(0), OVER(0, false), TAKE(1)}},
        {"the next interval starts at the next event, not at the end",
         10 * SEC,
         1,
         {PASS(0), PASS(25 * SEC), END(35 * SEC), DROP(34 * SEC), PASS(35 * SEC)}},
        {"the count survives intervals until taken",
         10 * SEC,
         1,
         {PASS(0), DROP(1), PASS(20 * SEC), DROP(20 * SEC + 1), TAKE(2), TAKE(0)}},
        {"time going backwards stays inside the interval",
         10 * SEC,
         1,
         {PASS(100 * SEC), DROP(50 * SEC), DROP(0), OVER(0, false), TAKE(2)}},
        {"the end saturates", NEVER, 1, {PASS(5), END(NEVER - 1), DROP(NEVER - 2), PASS(NEVER - 1)}},
        {"configure restarts the interval and keeps the count",
         10 * SEC,
         1,
         {PASS(0), DROP(1), CONFIGURE(10 * SEC, 2), END(NEVER), PASS(2), PASS(3), DROP(4), TAKE(2)}},
        {"configure to unlimited keeps the count to take",
         10 * SEC,
         1,
         {PASS(0), DROP(1), DROP(2), CONFIGURE(0, 5), PASS_N(3, 50), END(NEVER), TAKE(2), TAKE(0)}},
        {"configure from unlimited", 0, 0, {PASS_N(0, 10), CONFIGURE(SEC, 1), PASS(1), DROP(2), TAKE(1)}},
};

static void run_step(RateLimit *rl, const Row *row, size_t i) {
        const Step *s = &row->steps[i];
        unsigned times = s->times ?: 1;

        switch (s->op) {
        case OP_DONE:
                break;
        case OP_TEST:
                for (unsigned k = 0; k < times; k++) {
                        bool passed = ratelimit_test(rl, s->a);
                        ck_assert_msg(passed == (bool)s->want, "row '%s', step %zu (event %u at %llu): %s",
                                      row->name, i, k, (unsigned long long)s->a,
                                      passed ? "passed" : "suppressed");
                }
                break;
        case OP_TAKE: {
                uint64_t n = ratelimit_take_suppressed(rl);
                ck_assert_msg(n == s->want, "row '%s', step %zu: took %llu suppressed, want %llu", row->name,
                              i, (unsigned long long)n, (unsigned long long)s->want);
                break;
        }
        case OP_END: {
                uint64_t end = ratelimit_end_usec(rl);
                ck_assert_msg(end == s->want, "row '%s', step %zu: end %llu, want %llu", row->name, i,
                              (unsigned long long)end, (unsigned long long)s->want);
                break;
        }
        case OP_OVER: {
                bool over = ratelimit_interval_over(rl, s->a);
                ck_assert_msg(over == (bool)s->want, "row '%s', step %zu: over at %llu = %d", row->name, i,
                              (unsigned long long)s->a, over);
                break;
        }
        case OP_CONFIGURE:
                ratelimit_configure(rl, s->a, s->want);
                ck_assert_uint_eq(rl->interval_usec, s->a);
                ck_assert_uint_eq(rl->burst, s->want);
                break;
        }
}

START_TEST(test_script) {
        const Row *row = &rows[_i];
        RateLimit rl = RATELIMIT_INIT(row->interval_usec, row->burst);
        size_t n = 0;

        for (size_t i = 0; i < ELEMENTSOF(row->steps) && row->steps[i].op != OP_DONE; i++) {
                run_step(&rl, row, i);
                n++;
        }
        ck_assert_msg(n > 0, "row '%s' has no steps", row->name);
}
END_TEST

/* The suppressed count saturates instead of wrapping to a small number. */
START_TEST(test_count_saturates) {
        RateLimit rl = RATELIMIT_INIT(SEC, 1);

        ck_assert(ratelimit_test(&rl, 0));
        rl.n_suppressed = UINT64_MAX - 1;
        ck_assert(!ratelimit_test(&rl, 1));
        ck_assert(!ratelimit_test(&rl, 2));
        ck_assert_uint_eq(ratelimit_take_suppressed(&rl), UINT64_MAX);
        ck_assert_uint_eq(ratelimit_take_suppressed(&rl), 0);
}
END_TEST

static Suite *ratelimit_suite(void) {
        Suite *s = suite_create("ratelimit");
        TCase *tc = tcase_create("core");

        tcase_add_loop_test(tc, test_script, 0, (int)ELEMENTSOF(rows));
        tcase_add_test(tc, test_count_saturates);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(ratelimit_suite());
}
