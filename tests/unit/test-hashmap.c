/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for common/hashmap.c: the basic operations, -EEXIST, growth and
 * shrinking over many keys, and a long random run against a shadow array that
 * exercises backward-shift deletion with clustered and adversarial keys.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

#include "heap-stats.h"

#include "hashmap.h"
#include "splitmix64.h"
#include "tb-check.h"

/* Values are addresses inside this array, so each key's value is distinct. */
static char values[4096];

static void *value_for(size_t i) {
        return &values[i % sizeof(values)];
}

typedef struct BasicOp {
        const char *name;
        char op; /* 'p'ut, 'g'et, 'r'emove */
        uint64_t key;
        size_t value;   /* index into values for put, expected for get/remove */
        bool absent;    /* get/remove expect NULL */
        int expect_ret; /* put */
        size_t expect_size;
} BasicOp;

static const BasicOp basic_ops[] = {
        {"get on empty", 'g', 1, 0, true, 0, 0},
        {"remove on empty", 'r', 1, 0, true, 0, 0},
        {"put 1", 'p', 1, 10, false, 0, 1},
        {"get 1", 'g', 1, 10, false, 0, 1},
        {"put 1 again", 'p', 1, 11, false, -EEXIST, 1},
        {"get 1 unchanged", 'g', 1, 10, false, 0, 1},
        {"put key 0", 'p', 0, 20, false, 0, 2},
        {"put key max", 'p', UINT64_MAX, 30, false, 0, 3},
        {"get key 0", 'g', 0, 20, false, 0, 3},
        {"get key max", 'g', UINT64_MAX, 30, false, 0, 3},
        {"get absent", 'g', 2, 0, true, 0, 3},
        {"remove 1", 'r', 1, 10, false, 0, 2},
        {"get removed", 'g', 1, 0, true, 0, 2},
        {"remove removed", 'r', 1, 0, true, 0, 2},
        {"put 1 after removal", 'p', 1, 12, false, 0, 3},
        {"get 1 new value", 'g', 1, 12, false, 0, 3},
        {"remove key 0", 'r', 0, 20, false, 0, 2},
        {"remove key max", 'r', UINT64_MAX, 30, false, 0, 1},
};

START_TEST(test_basic) {
        Hashmap *h = hashmap_new();

        ck_assert_ptr_nonnull(h);
        for (size_t i = 0; i < sizeof(basic_ops) / sizeof(basic_ops[0]); i++) {
                const BasicOp *o = &basic_ops[i];
                void *expect = o->absent ? NULL : value_for(o->value);

                switch (o->op) {
                case 'p': {
                        int r = hashmap_put(h, o->key, value_for(o->value));
                        ck_assert_msg(r == o->expect_ret, "row '%s': put returned %d", o->name, r);
                        break;
                }
                case 'g':
                        ck_assert_msg(hashmap_get(h, o->key) == expect, "row '%s': wrong get", o->name);
                        break;
                case 'r':
                        ck_assert_msg(hashmap_remove(h, o->key) == expect, "row '%s': wrong remove",
                                      o->name);
                        break;
                default:
                        ck_abort_msg("row '%s': bad op", o->name);
                }
                ck_assert_msg(hashmap_size(h) == o->expect_size, "row '%s': size %zu, expected %zu", o->name,
                              hashmap_size(h), o->expect_size);
        }
        ck_assert_ptr_null(hashmap_free(h));
        ck_assert_ptr_null(hashmap_free(NULL));
}
END_TEST

/* Key families that stress the mix: dense, only high bits, strided, and near
 * UINT64_MAX. */
static uint64_t key_of(unsigned family, uint64_t i) {
        switch (family % 4) {
        case 0:
                return i;
        case 1:
                return i << 32;
        case 2:
                return i * 4096;
        default:
                return UINT64_MAX - i;
        }
}

START_TEST(test_grow_shrink) {
        const size_t n = 50000;
        bool measured = heap_accounting_works();

        for (unsigned family = 0; family < 4; family++) {
                Hashmap *h = hashmap_new();
                uint64_t seed = 42 + family;
                size_t *order = malloc(n * sizeof(size_t));

                size_t base, grown;

                ck_assert_ptr_nonnull(h);
                ck_assert_ptr_nonnull(order);
                base = heap_bytes_in_use();
                for (size_t i = 0; i < n; i++) {
                        ck_assert_msg(hashmap_put(h, key_of(family, i), value_for(i)) == 0,
                                      "family %u: put %zu failed", family, i);
                        order[i] = i;
                }
                ck_assert_uint_eq(hashmap_size(h), n);
                for (size_t i = 0; i < n; i++)
                        ck_assert_msg(hashmap_get(h, key_of(family, i)) == value_for(i),
                                      "family %u: key %zu lost after growth", family, i);
                /* 16-byte entries at most 3/4 full. */
                grown = heap_bytes_in_use() - base;
                ck_assert_msg(!measured || grown >= n * 16 * 4 / 3,
                              "family %u: table did not grow (%zu bytes)", family, grown);

                /* Remove in random order: the map shrinks on the way down and
                 * every remaining key must stay reachable. */
                for (size_t i = n - 1; i > 0; i--) {
                        size_t j = splitmix64(&seed) % (i + 1), t = order[i];
                        order[i] = order[j];
                        order[j] = t;
                }
                for (size_t i = 0; i < n; i++) {
                        ck_assert_msg(hashmap_remove(h, key_of(family, order[i])) == value_for(order[i]),
                                      "family %u: remove %zu (step %zu) failed", family, order[i], i);
                        if (i % 1000 == 999 && i + 1 < n)
                                ck_assert_msg(hashmap_get(h, key_of(family, order[i + 1])) ==
                                                      value_for(order[i + 1]),
                                              "family %u: key %zu lost after shrink", family, order[i + 1]);
                }
                ck_assert_uint_eq(hashmap_size(h), 0);
                /* Shrunk: what is left is the minimum table plus noise from
                 * the test framework, far below the grown table's megabyte. */
                ck_assert_msg(!measured || heap_bytes_in_use() <= base + 16384,
                              "family %u: table did not shrink (%zu bytes)", family,
                              heap_bytes_in_use() - base);
                for (size_t i = 0; i < n; i += 97)
                        ck_assert_ptr_null(hashmap_get(h, key_of(family, i)));

                /* Usable again after shrinking to the minimum. */
                ck_assert_int_eq(hashmap_put(h, key_of(family, 7), value_for(7)), 0);
                ck_assert_ptr_eq(hashmap_get(h, key_of(family, 7)), value_for(7));
                free(order);
                hashmap_free(h);
        }
}
END_TEST

/* Random put/remove/get over a small key universe, so that probe runs are
 * long-lived and deletions happen in the middle of them, checked against a
 * shadow array after every operation. */
static void random_run(uint64_t seed, size_t n_keys, size_t n_ops) {
        Hashmap *h = hashmap_new();
        uint64_t *keys = malloc(n_keys * sizeof(uint64_t));
        void **shadow = calloc(n_keys, sizeof(void *));
        uint64_t state = seed;
        size_t shadow_size = 0;

        ck_assert_ptr_nonnull(h);
        ck_assert_ptr_nonnull(keys);
        ck_assert_ptr_nonnull(shadow);
        for (size_t i = 0; i < n_keys; i++)
                keys[i] = key_of((unsigned)i, i);

        for (size_t op = 0; op < n_ops; op++) {
                uint64_t x = splitmix64(&state);
                size_t k = (size_t)(x >> 8) % n_keys;
                void *v = value_for(op);

                switch (x % 3) {
                case 0: {
                        int r = hashmap_put(h, keys[k], v);
                        ck_assert_msg(r == (shadow[k] ? -EEXIST : 0),
                                      "seed %" PRIu64 " op %zu: put returned %d", seed, op, r);
                        if (!shadow[k]) {
                                shadow[k] = v;
                                shadow_size++;
                        }
                        break;
                }
                case 1:
                        ck_assert_msg(hashmap_remove(h, keys[k]) == shadow[k],
                                      "seed %" PRIu64 " op %zu: remove", seed, op);
                        if (shadow[k]) {
                                shadow[k] = NULL;
                                shadow_size--;
                        }
                        break;
                default:
                        ck_assert_msg(hashmap_get(h, keys[k]) == shadow[k], "seed %" PRIu64 " op %zu: get",
                                      seed, op);
                }
                ck_assert_msg(hashmap_size(h) == shadow_size, "seed %" PRIu64 " op %zu: size", seed, op);

                /* Every so often, check every key, not only the one touched. */
                if (op % 512 == 0)
                        for (size_t i = 0; i < n_keys; i++)
                                ck_assert_msg(hashmap_get(h, keys[i]) == shadow[i],
                                              "seed %" PRIu64 " op %zu: key %zu", seed, op, i);
        }
        free(keys);
        free(shadow);
        hashmap_free(h);
}

START_TEST(test_random_against_shadow) {
        static const struct {
                uint64_t seed;
                size_t n_keys, n_ops;
        } runs[] = {
                {1, 16, 20000},    /* stays near the minimum capacity */
                {2, 200, 50000},   /* oscillates across grow and shrink */
                {3, 3000, 100000}, /* larger tables */
        };

        for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++)
                random_run(runs[i].seed, runs[i].n_keys, runs[i].n_ops);
}
END_TEST

static Suite *hashmap_suite(void) {
        Suite *s = suite_create("hashmap");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_basic);
        tcase_add_test(tc, test_grow_shrink);
        tcase_add_test(tc, test_random_against_shadow);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(hashmap_suite());
}
