/* SPDX-License-Identifier: MIT */
/*
 * Learned cost estimates per task class (see estimator.h for the statistic
 * and why). Classes are found by a keyed SipHash of the name xor a multiple
 * of the uid in the uint64 hashmap, equal hashes chained, as breaker.c does.
 * All of a class's learning is one EstimatorClassState of plain numbers, so
 * saving and restoring it is a copy. Each observation costs a fixed amount
 * of work (the ratio histogram's 64 bins decay in place), whatever the
 * class's history.
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "estimator.h"
#include "hashmap.h"
#include "macro.h"
#include "siphash.h"

const uint32_t estimator_block_sizes[ESTIMATOR_BLOCK_SIZES] = {10, 100, 1000};

/* Quarter-octave bins: bin i covers log2 ratios [(i - 32) / 4, (i - 31) / 4). */
#define RATIO_BINS_PER_OCTAVE 4
#define RATIO_BIN_OFFSET      (ESTIMATOR_RATIO_BINS / 2)

struct EstimatorClass {
        char *name;
        uint32_t uid;
        uint64_t hash;
        EstimatorClass *hash_next; /* same hash */
        LIST_FIELDS(EstimatorClass, all);
        EstimatorClassState st;
        bool dirty; /* learned since estimator_class_mark_saved() (or since made) */
};

struct EstimatorTable {
        EstimatorSettings settings;
        double alpha, alpha_tail; /* per-sample weights of the two half-lives */
        size_t max_entries;
        SipHashKey key;
        Hashmap *by_hash;    /* hash -> first class with it */
        EstimatorClass *all; /* newest first */
        size_t n;
        size_t max_per_uid; /* SIZE_MAX: no share */
        Hashmap *per_uid;   /* uid -> (void *)classes of it, while > 0 */
};

static size_t uid_count(const EstimatorTable *t, uint32_t uid) {
        return (uintptr_t)hashmap_get(t->per_uid, uid);
}

/* 0 or -ENOMEM; by -1 never fails (the removed key left room). */
static int uid_add(EstimatorTable *t, uint32_t uid, int by) {
        size_t n = by > 0 ? uid_count(t, uid) + 1 : uid_count(t, uid) - 1;

        hashmap_remove(t->per_uid, uid); /* hashmap_put() does not replace */
        return n == 0 ? 0 : hashmap_put(t->per_uid, uid, (void *)(uintptr_t)n);
}

int estimator_settings_validate(const EstimatorSettings *s) {
        if (s->half_life_samples < 1 || s->tail_half_life_samples < s->half_life_samples)
                return -EINVAL;
        if (!isfinite(s->clip_factor) || s->clip_factor <= 1.0)
                return -EINVAL;
        if (s->min_samples < 1 || s->ratio_quantile_permille < 1 || s->ratio_quantile_permille > 999)
                return -EINVAL;
        return 0;
}

/* The weight of a sample for a half-life of h samples: (1 - a)^h = 1/2. */
static double half_life_alpha(uint32_t h) {
        return -expm1(-M_LN2 / (double)h);
}

EstimatorTable *estimator_table_new(const EstimatorSettings *s, size_t max_entries) {
        EstimatorTable *t;

        if (estimator_settings_validate(s) < 0)
                return NULL;
        t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->by_hash = hashmap_new();
        t->per_uid = hashmap_new();
        if (!t->by_hash || !t->per_uid)
                return estimator_table_free(t);
        t->max_per_uid = SIZE_MAX;
        t->settings = *s;
        t->alpha = half_life_alpha(s->half_life_samples);
        t->alpha_tail = half_life_alpha(s->tail_half_life_samples);
        t->max_entries = max_entries;
        return t;
}

static void class_free(EstimatorTable *t, EstimatorClass *c) {
        EstimatorClass *first = hashmap_get(t->by_hash, c->hash);

        if (first == c) {
                hashmap_remove(t->by_hash, c->hash);
                if (c->hash_next)
                        (void)hashmap_put(t->by_hash, c->hash, c->hash_next); /* a removed key had room */
        } else {
                while (first->hash_next != c)
                        first = first->hash_next;
                first->hash_next = c->hash_next;
        }
        LIST_REMOVE(all, t->all, c);
        t->n--;
        (void)uid_add(t, c->uid, -1);
        free(c->name);
        free(c);
}

EstimatorTable *estimator_table_free(EstimatorTable *t) {
        if (!t)
                return NULL;
        while (t->all)
                class_free(t, t->all);
        hashmap_free(t->by_hash);
        hashmap_free(t->per_uid);
        free(t);
        return NULL;
}

void estimator_table_set_max_per_uid(EstimatorTable *t, size_t max_per_uid) {
        t->max_per_uid = max_per_uid ?: 1;
}

void estimator_table_set_hash_key(EstimatorTable *t, const uint8_t key[16]) {
        assert(t->n == 0);
        t->key = siphash_key(key);
}

size_t estimator_table_size(const EstimatorTable *t) {
        return t->n;
}

EstimatorClass *estimator_table_next(const EstimatorTable *t, const EstimatorClass *c) {
        return c ? c->all_next : t->all;
}

static bool name_valid(const char *cls) {
        return cls && cls[0] && strnlen(cls, ESTIMATOR_NAME_MAX + 1) <= ESTIMATOR_NAME_MAX;
}

static uint64_t name_hash(const EstimatorTable *t, uint32_t uid, const char *cls) {
        return siphash24(&t->key, cls, strlen(cls)) ^ ((uint64_t)uid * UINT64_C(0x9e3779b97f4a7c15));
}

static EstimatorClass *find_hashed(const EstimatorTable *t, uint32_t uid, const char *cls, uint64_t hash) {
        for (EstimatorClass *c = hashmap_get(t->by_hash, hash); c; c = c->hash_next)
                if (c->uid == uid && strcmp(c->name, cls) == 0)
                        return c;
        return NULL;
}

EstimatorClass *estimator_find(const EstimatorTable *t, uint32_t uid, const char *cls) {
        if (!name_valid(cls))
                return NULL;
        return find_hashed(t, uid, cls, name_hash(t, uid, cls));
}

/* Finds or creates (uid, cls); 0, -EUSERS, -ENOMEM. */
static int class_get(EstimatorTable *t, uint32_t uid, const char *cls, EstimatorClass **ret) {
        _cleanup_free_ EstimatorClass *c = NULL;
        uint64_t hash = name_hash(t, uid, cls);
        EstimatorClass *first = find_hashed(t, uid, cls, hash);
        int r;

        if (first) {
                *ret = first;
                return 0;
        }
        if (t->n >= t->max_entries || uid_count(t, uid) >= t->max_per_uid)
                return -EUSERS;
        c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->name = strdup(cls);
        if (!c->name)
                return -ENOMEM;
        r = uid_add(t, uid, +1);
        if (r < 0) {
                free(c->name);
                return r;
        }
        first = hashmap_get(t->by_hash, hash);
        if (first) {
                c->hash_next = first->hash_next;
                first->hash_next = c;
        } else {
                r = hashmap_put(t->by_hash, hash, c);
                if (r < 0) {
                        (void)uid_add(t, uid, -1);
                        free(c->name);
                        return r;
                }
        }
        c->uid = uid;
        c->hash = hash;
        LIST_PREPEND(all, t->all, c);
        t->n++;
        *ret = TAKE_PTR(c);
        return 0;
}

/* ---- the weighted average ---- */

static double stat_estimate(const EstimatorStat *s) {
        return s->mean + s->tail;
}

/* The cut is at clip_factor x the estimate so far (at least 1 token, so a
 * class that started at 0 is not all excess); nothing is cut from the first
 * sample. */
static void stat_learn(const EstimatorTable *t, EstimatorStat *s, double x) {
        double w, w_tail, cut, excess = 0.0;

        s->samples++;
        w = fmax(1.0 / (double)s->samples, t->alpha);
        w_tail = fmax(1.0 / (double)s->samples, t->alpha_tail);
        if (s->samples > 1) {
                cut = t->settings.clip_factor * fmax(stat_estimate(s), 1.0);
                if (x > cut) {
                        excess = x - cut;
                        x = cut;
                }
        }
        s->mean += w * (x - s->mean);
        s->tail += w_tail * (excess - s->tail);
}

static uint64_t round_tokens(double x) {
        if (!(x > 0.0))
                return 0;
        if (x >= 18446744073709549568.0) /* the largest double below 2^64 */
                return UINT64_MAX;
        return (uint64_t)(x + 0.5);
}

static uint64_t add_sat(uint64_t a, uint64_t b) {
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint32_t prompt_bucket(uint64_t prompt_tokens) {
        uint32_t b = 63 - (uint32_t)__builtin_clzll(prompt_tokens); /* prompt_tokens > 0 */

        return b < ESTIMATOR_BUCKETS ? b : ESTIMATOR_BUCKETS - 1;
}

/* ---- the ratio histogram ---- */

static uint32_t ratio_bin(double ratio) {
        double b;

        if (!(ratio > 0.0))
                return 0;
        b = floor(log2(ratio) * RATIO_BINS_PER_OCTAVE) + RATIO_BIN_OFFSET;
        if (b < 0.0)
                return 0;
        if (b >= ESTIMATOR_RATIO_BINS)
                return ESTIMATOR_RATIO_BINS - 1;
        return (uint32_t)b;
}

static void ratio_learn(const EstimatorTable *t, EstimatorClassState *st, double ratio) {
        double keep = 1.0 - t->alpha_tail;

        for (uint32_t i = 0; i < ESTIMATOR_RATIO_BINS; i++)
                st->ratio_hist[i] *= keep;
        st->ratio_hist[ratio_bin(ratio)] += 1.0;
}

/* The upper edge of the bin where the weight reaches the quantile. */
static double ratio_quantile(const EstimatorTable *t, const EstimatorClassState *st) {
        double total = 0.0, want, cum = 0.0;

        for (uint32_t i = 0; i < ESTIMATOR_RATIO_BINS; i++)
                total += st->ratio_hist[i];
        if (!(total > 0.0))
                return 0.0;
        want = total * t->settings.ratio_quantile_permille / 1000.0;
        for (uint32_t i = 0; i < ESTIMATOR_RATIO_BINS; i++) {
                cum += st->ratio_hist[i];
                if (cum >= want)
                        return exp2((double)((int)i + 1 - (int)RATIO_BIN_OFFSET) / RATIO_BINS_PER_OCTAVE);
        }
        return exp2((double)(ESTIMATOR_RATIO_BINS - RATIO_BIN_OFFSET) / RATIO_BINS_PER_OCTAVE);
}

/* ---- prediction ---- */

static void predict_state(const EstimatorTable *t, const EstimatorClassState *st, uint64_t prompt_tokens,
                          EstimatorPrediction *ret) {
        double output = stat_estimate(&st->output);

        *ret = (EstimatorPrediction){.samples = st->output.samples};
        if (prompt_tokens > 0) {
                const EstimatorStat *b;

                ret->bucket = prompt_bucket(prompt_tokens);
                b = &st->bucket[ret->bucket];
                ret->bucket_samples = b->samples;
                if (b->samples >= t->settings.min_samples) {
                        ret->bucket_used = true;
                        output = stat_estimate(b);
                }
        }
        ret->predicted_output = round_tokens(output);
        ret->predicted_total = prompt_tokens > 0 ? add_sat(prompt_tokens, ret->predicted_output)
                                                 : round_tokens(stat_estimate(&st->total));
        ret->ratio_q = ratio_quantile(t, st);
}

bool estimator_predict(const EstimatorTable *t, uint32_t uid, const char *cls, uint64_t prompt_tokens,
                       EstimatorPrediction *ret) {
        const EstimatorClass *c = estimator_find(t, uid, cls);

        if (!c || c->st.output.samples == 0) {
                *ret = (EstimatorPrediction){};
                return false;
        }
        predict_state(t, &c->st, prompt_tokens, ret);
        return true;
}

/* ---- project intervals ---- */

int estimator_project(const EstimatorTable *t, uint32_t uid, const char *cls, uint64_t tasks,
                      uint64_t prompt_tokens, uint32_t coverage_permille, EstimatorProject *ret) {
        (void)t, (void)uid, (void)cls, (void)tasks, (void)prompt_tokens, (void)coverage_permille;
        *ret = (EstimatorProject){};
        return -ENOSYS;
}

/* ---- metrics ---- */

static void blocks_count(EstimatorBlocks *b, uint32_t size, double pred, double act) {
        b->sum_pred += pred;
        b->sum_act += act;
        if (++b->count < size)
                return;
        /* A block with no actual tokens has no relative error: it is not kept. */
        if (b->sum_act > 0.0) {
                b->errors[b->next] = fabs(b->sum_pred - b->sum_act) / b->sum_act;
                b->next = (b->next + 1) % ESTIMATOR_BLOCK_RING;
                if (b->n_errors < ESTIMATOR_BLOCK_RING)
                        b->n_errors++;
        }
        b->sum_pred = b->sum_act = 0.0;
        b->count = 0;
}

/* The prediction made before the sample, as the daemon would have used it. */
static void metrics_count(const EstimatorTable *t, EstimatorClassState *st, uint64_t prompt_tokens,
                          double act) {
        EstimatorPrediction p;
        double pred;

        if (st->output.samples < t->settings.min_samples)
                return;
        predict_state(t, st, prompt_tokens, &p);
        pred = (double)p.predicted_output;
        st->err_abs += fabs(pred - act);
        st->err_pred += pred;
        st->err_act += act;
        st->n_predicted++;
        for (uint32_t i = 0; i < ESTIMATOR_BLOCK_SIZES; i++)
                blocks_count(&st->blocks[i], estimator_block_sizes[i], pred, act);
        if (pred > 0.0)
                ratio_learn(t, st, act / pred);
}

static int cmp_double(const void *a, const void *b) {
        double x = *(const double *)a, y = *(const double *)b;

        return (x > y) - (x < y);
}

/* Nearest rank: the smallest kept error with at least q of them at or below. */
static void block_metrics(const EstimatorBlocks *b, uint32_t size, EstimatorBlockMetrics *ret) {
        double sorted[ESTIMATOR_BLOCK_RING];
        uint32_t n = b->n_errors;

        *ret = (EstimatorBlockMetrics){.block_size = size, .n_blocks = n};
        if (n == 0)
                return;
        memcpy(sorted, b->errors, n * sizeof(double));
        qsort(sorted, n, sizeof(double), cmp_double);
        ret->median = sorted[(n - 1) / 2];
        ret->p90 = sorted[(uint32_t)ceil(0.9 * n) - 1];
}

void estimator_class_metrics(const EstimatorClass *c, EstimatorMetrics *ret) {
        const EstimatorClassState *st = &c->st;

        *ret = (EstimatorMetrics){.n_predicted = st->n_predicted};
        if (st->err_act > 0.0) {
                ret->wape = st->err_abs / st->err_act;
                ret->bias = (st->err_pred - st->err_act) / st->err_act;
        }
        for (uint32_t i = 0; i < ESTIMATOR_BLOCK_SIZES; i++)
                block_metrics(&st->blocks[i], estimator_block_sizes[i], &ret->blocks[i]);
}

/* ---- learning ---- */

int estimator_observe(EstimatorTable *t, uint32_t uid, const char *cls, uint64_t prompt_tokens,
                      uint64_t input_tokens, uint64_t output_tokens, uint64_t now) {
        EstimatorClass *c;
        EstimatorClassState *st;
        double output = (double)output_tokens;
        int r;

        if (!name_valid(cls))
                return -EINVAL;
        r = class_get(t, uid, cls, &c);
        if (r < 0)
                return r;
        st = &c->st;
        metrics_count(t, st, prompt_tokens, output);
        stat_learn(t, &st->output, output);
        stat_learn(t, &st->total, (double)add_sat(input_tokens, output_tokens));
        if (prompt_tokens > 0)
                stat_learn(t, &st->bucket[prompt_bucket(prompt_tokens)], output);
        if (now > st->last_seen_usec)
                st->last_seen_usec = now;
        c->dirty = true;
        /* Newest first, so the sweep and iteration see recent classes first. */
        if (t->all != c) {
                LIST_REMOVE(all, t->all, c);
                LIST_PREPEND(all, t->all, c);
        }
        return 0;
}

bool estimator_class_dirty(const EstimatorClass *c) {
        return c->dirty;
}

void estimator_class_mark_saved(EstimatorClass *c) {
        c->dirty = false;
}

size_t estimator_table_sweep(EstimatorTable *t, uint64_t now, uint64_t retention_usec) {
        EstimatorClass *next;
        size_t n = 0;

        for (EstimatorClass *c = t->all; c; c = next) {
                next = c->all_next;
                if (now >= c->st.last_seen_usec && now - c->st.last_seen_usec >= retention_usec) {
                        class_free(t, c);
                        n++;
                }
        }
        return n;
}

/* ---- persistence ---- */

uint32_t estimator_class_uid(const EstimatorClass *c) {
        return c->uid;
}

const char *estimator_class_name(const EstimatorClass *c) {
        return c->name;
}

void estimator_class_state(const EstimatorClass *c, EstimatorClassState *ret) {
        *ret = c->st;
}

static bool number_valid(double x) {
        return isfinite(x) && x >= 0.0;
}

static bool stat_valid(const EstimatorStat *s) {
        return number_valid(s->mean) && number_valid(s->tail) &&
               (s->samples > 0 || (s->mean == 0.0 && s->tail == 0.0));
}

static bool blocks_valid(const EstimatorBlocks *b, uint32_t size) {
        if (!number_valid(b->sum_pred) || !number_valid(b->sum_act) || b->count >= size)
                return false;
        if (b->n_errors > ESTIMATOR_BLOCK_RING || b->next >= ESTIMATOR_BLOCK_RING)
                return false;
        if (b->n_errors < ESTIMATOR_BLOCK_RING && b->next != b->n_errors)
                return false; /* a ring not yet full is filled from 0 */
        for (uint32_t i = 0; i < b->n_errors; i++)
                if (!number_valid(b->errors[i]))
                        return false;
        return true;
}

static bool state_valid(const EstimatorClassState *st) {
        if (!stat_valid(&st->output) || !stat_valid(&st->total))
                return false;
        for (uint32_t i = 0; i < ESTIMATOR_BUCKETS; i++)
                if (!stat_valid(&st->bucket[i]))
                        return false;
        for (uint32_t i = 0; i < ESTIMATOR_RATIO_BINS; i++)
                if (!number_valid(st->ratio_hist[i]))
                        return false;
        if (!number_valid(st->err_abs) || !number_valid(st->err_pred) || !number_valid(st->err_act))
                return false;
        for (uint32_t i = 0; i < ESTIMATOR_BLOCK_SIZES; i++)
                if (!blocks_valid(&st->blocks[i], estimator_block_sizes[i]))
                        return false;
        return true;
}

int estimator_restore(EstimatorTable *t, uint32_t uid, const char *cls, const EstimatorClassState *state) {
        EstimatorClass *c;
        int r;

        if (!name_valid(cls) || !state_valid(state))
                return -EINVAL;
        r = class_get(t, uid, cls, &c);
        if (r < 0)
                return r;
        c->st = *state;
        /* Unused slots of a ring not yet full are zero, as a live one has them. */
        for (uint32_t i = 0; i < ESTIMATOR_BLOCK_SIZES; i++)
                for (uint32_t j = c->st.blocks[i].n_errors; j < ESTIMATOR_BLOCK_RING; j++)
                        c->st.blocks[i].errors[j] = 0.0;
        return 0;
}
