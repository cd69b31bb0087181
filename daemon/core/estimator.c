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

int estimator_table_set_settings(EstimatorTable *t, const EstimatorSettings *s, size_t max_entries) {
        if (estimator_settings_validate(s) < 0)
                return -EINVAL;
        t->settings = *s;
        t->alpha = half_life_alpha(s->half_life_samples);
        t->alpha_tail = half_life_alpha(s->tail_half_life_samples);
        t->max_entries = max_entries;
        return 0;
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

/* ---- metrics ---- */

static void ring_put(double *ring, uint32_t *n, uint32_t *next, double x) {
        ring[*next] = x;
        *next = (*next + 1) % ESTIMATOR_BLOCK_RING;
        if (*n < ESTIMATOR_BLOCK_RING)
                (*n)++;
}

/* m0: the class-level output prediction now, frozen at the block's first
 * observation (what a project estimate made then would have used). */
static void blocks_count(EstimatorBlocks *b, uint32_t size, double pred, double act, double m0) {
        if (b->count == 0)
                b->m0 = m0;
        b->sum_pred += pred;
        b->sum_act += act;
        if (++b->count < size)
                return;
        /* A block with no actual tokens has no relative error: it is not kept. */
        if (b->sum_act > 0.0)
                ring_put(b->errors, &b->n_errors, &b->next, fabs(b->sum_pred - b->sum_act) / b->sum_act);
        /* m0 == 0: nothing to scale (or a block begun before the state had m0). */
        if (b->m0 > 0.0)
                ring_put(b->ratios, &b->n_ratios, &b->next_ratio, b->sum_act / ((double)size * b->m0));
        b->sum_pred = b->sum_act = b->m0 = 0.0;
        b->count = 0;
}

/* The prediction made before the sample, as the daemon would have used it. */
static void metrics_count(const EstimatorTable *t, EstimatorClassState *st, uint64_t prompt_tokens,
                          double act) {
        EstimatorPrediction p;
        double pred, m0;

        if (st->output.samples < t->settings.min_samples)
                return;
        predict_state(t, st, prompt_tokens, &p);
        pred = (double)p.predicted_output;
        st->err_abs += fabs(pred - act);
        st->err_pred += pred;
        st->err_act += act;
        st->n_predicted++;
        /* A project estimate made by a young class is as noisy as its few
         * samples: its blocks would widen every later interval until the
         * ring forgets them (64,000 requests for blocks of 1000). So the
         * ratios count from 2 half-lives on, when the average has its
         * steady weight (m0 0: the block keeps no ratio). */
        m0 = st->output.samples >= 2 * (uint64_t)t->settings.half_life_samples ? stat_estimate(&st->output)
                                                                               : 0.0;
        for (uint32_t i = 0; i < ESTIMATOR_BLOCK_SIZES; i++)
                blocks_count(&st->blocks[i], estimator_block_sizes[i], pred, act, m0);
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

/* ---- project intervals ---- */

/* The p quantile of the kept ratios: linear interpolation between order
 * statistics at the Weibull plotting positions, h = (n + 1) p (1-based),
 * clamped to the extremes: E[F(X_(k))] = k / (n + 1) for i.i.d. draws, so
 * the interval between the two quantiles covers c on average once no end
 * is clamped (n >= 19 for 90%); with the 10 a size needs it is the range,
 * 9/11 = 82% on average, where the common h = (n - 1) p + 1 gives
 * (9.55 - 1.45) / 11 = 74%. */
static double ring_quantile(const double *sorted, uint32_t n, double p) {
        double h = (double)(n + 1) * p, f;
        uint32_t k;

        if (h <= 1.0)
                return sorted[0];
        if (h >= (double)n)
                return sorted[n - 1];
        k = (uint32_t)h; /* 1 <= k < n */
        f = h - (double)k;
        return sorted[k - 1] + f * (sorted[k] - sorted[k - 1]);
}

/* The p quantile of the single-request ratio histogram, linear in log2
 * within the bin where the weight reaches it (the end bins as their
 * nominal quarter-octave). */
static double hist_quantile(const EstimatorClassState *st, double p) {
        double total = 0.0, want, cum = 0.0;

        for (uint32_t i = 0; i < ESTIMATOR_RATIO_BINS; i++)
                total += st->ratio_hist[i];
        want = total * p;
        for (uint32_t i = 0; i < ESTIMATOR_RATIO_BINS; i++) {
                double w = st->ratio_hist[i];

                if (w > 0.0 && cum + w >= want) {
                        double f = fmin(fmax((want - cum) / w, 0.0), 1.0);

                        return exp2(((double)i - RATIO_BIN_OFFSET + f) / RATIO_BINS_PER_OCTAVE);
                }
                cum += w;
        }
        return exp2((double)(ESTIMATOR_RATIO_BINS - RATIO_BIN_OFFSET) / RATIO_BINS_PER_OCTAVE);
}

/* The histogram's lowest edge: a quantile of 0 (blocks with no output)
 * cannot be interpolated in log. */
#define PROJECT_RATIO_MIN 0x1p-8

typedef struct Spread {
        uint32_t size, count; /* 1, 10, 100, 1000; ratios (or predictions) behind it */
        bool usable;          /* count >= ESTIMATOR_PROJECT_MIN_BLOCKS */
        double log_low, log_high;
} Spread;

static void spread_of(const EstimatorClassState *st, uint32_t level, double p_low, double p_high,
                      Spread *ret) {
        double low, high;

        *ret = (Spread){.size = level == 0 ? 1 : estimator_block_sizes[level - 1]};
        if (level == 0) {
                double total = 0.0;

                for (uint32_t i = 0; i < ESTIMATOR_RATIO_BINS; i++)
                        total += st->ratio_hist[i];
                ret->count = st->n_predicted > UINT32_MAX ? UINT32_MAX : (uint32_t)st->n_predicted;
                /* No weight: every prediction was 0, so no ratio was learned. */
                if (ret->count < ESTIMATOR_PROJECT_MIN_BLOCKS || !(total > 0.0))
                        return;
                low = hist_quantile(st, p_low);
                high = hist_quantile(st, p_high);
        } else {
                const EstimatorBlocks *b = &st->blocks[level - 1];
                double sorted[ESTIMATOR_BLOCK_RING];

                ret->count = b->n_ratios;
                if (ret->count < ESTIMATOR_PROJECT_MIN_BLOCKS)
                        return;
                memcpy(sorted, b->ratios, b->n_ratios * sizeof(double));
                qsort(sorted, b->n_ratios, sizeof(double), cmp_double);
                low = ring_quantile(sorted, b->n_ratios, p_low);
                high = ring_quantile(sorted, b->n_ratios, p_high);
        }
        ret->usable = true;
        ret->log_low = log(fmax(low, PROJECT_RATIO_MIN));
        ret->log_high = log(fmax(high, PROJECT_RATIO_MIN));
}

/* The ratio quantiles for n tasks (see estimator.h): the usable level at or
 * below n and the next usable one above, interpolated in log n; n past the
 * last usable one takes its quantiles as they are. */
static void project_spread(const EstimatorClassState *st, uint64_t n, double p_low, double p_high,
                           EstimatorProject *ret, double *ret_low, double *ret_high) {
        Spread lo = {}, hi = {}, s;
        double f;

        for (uint32_t level = 0; level <= ESTIMATOR_BLOCK_SIZES; level++) {
                spread_of(st, level, p_low, p_high, &s);
                if (!s.usable)
                        continue;
                if (s.size <= n || !lo.usable)
                        lo = s;
                if (s.size >= n) {
                        hi = s;
                        break;
                }
        }
        if (!lo.usable) { /* none usable: say how many single predictions it has */
                spread_of(st, 0, p_low, p_high, &s);
                ret->basis_block_size = 1;
                ret->basis_blocks = s.count;
                return;
        }
        ret->has_interval = true;
        if (!hi.usable || hi.size == lo.size) {
                ret->basis_scaled = !hi.usable && n > lo.size;
                ret->basis_block_size = lo.size;
                ret->basis_blocks = lo.count;
                *ret_low = exp(lo.log_low);
                *ret_high = exp(lo.log_high);
                return;
        }
        f = (log((double)n) - log((double)lo.size)) / (log((double)hi.size) - log((double)lo.size));
        ret->basis_block_size = hi.size;
        ret->basis_blocks = hi.count;
        *ret_low = exp(lo.log_low + f * (hi.log_low - lo.log_low));
        *ret_high = exp(lo.log_high + f * (hi.log_high - lo.log_high));
}

int estimator_project(const EstimatorTable *t, uint32_t uid, const char *cls, uint64_t tasks,
                      uint64_t prompt_tokens, uint32_t coverage_permille, EstimatorProject *ret) {
        const EstimatorClass *c;
        double c_frac, q_low = 0.0, q_high = 0.0, input;

        *ret = (EstimatorProject){};
        if (tasks == 0 || coverage_permille < 1 || coverage_permille > 999)
                return -EINVAL;
        c = estimator_find(t, uid, cls);
        if (!c || c->st.output.samples == 0)
                return -ENOENT;
        ret->tasks = tasks;
        predict_state(t, &c->st, prompt_tokens, &ret->per_task);
        ret->expected_output = (double)tasks * (double)ret->per_task.predicted_output;
        ret->expected_total = (double)tasks * (double)ret->per_task.predicted_total;
        c_frac = coverage_permille / 1000.0;
        project_spread(&c->st, tasks, (1.0 - c_frac) / 2.0, (1.0 + c_frac) / 2.0, ret, &q_low, &q_high);
        if (!ret->has_interval)
                return 0;
        /* Without a prompt the learned total could sit a little under the
         * output (two averages, each clipped): no negative input part. */
        input = fmax(ret->expected_total - ret->expected_output, 0.0);
        ret->output_low = ret->expected_output * q_low;
        ret->output_high = ret->expected_output * q_high;
        ret->total_low = ret->output_low + input;
        ret->total_high = ret->output_high + input;
        return 0;
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

static bool ring_valid(const double *ring, uint32_t n, uint32_t next) {
        if (n > ESTIMATOR_BLOCK_RING || next >= ESTIMATOR_BLOCK_RING)
                return false;
        if (n < ESTIMATOR_BLOCK_RING && next != n)
                return false; /* a ring not yet full is filled from 0 */
        for (uint32_t i = 0; i < n; i++)
                if (!number_valid(ring[i]))
                        return false;
        return true;
}

static bool blocks_valid(const EstimatorBlocks *b, uint32_t size) {
        if (!number_valid(b->sum_pred) || !number_valid(b->sum_act) || b->count >= size)
                return false;
        /* m0 belongs to a block in progress: none without one. */
        if (!number_valid(b->m0) || (b->count == 0 && b->m0 != 0.0))
                return false;
        return ring_valid(b->errors, b->n_errors, b->next) &&
               ring_valid(b->ratios, b->n_ratios, b->next_ratio);
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
                for (uint32_t j = 0; j < ESTIMATOR_BLOCK_RING; j++) {
                        if (j >= c->st.blocks[i].n_errors)
                                c->st.blocks[i].errors[j] = 0.0;
                        if (j >= c->st.blocks[i].n_ratios)
                                c->st.blocks[i].ratios[j] = 0.0;
                }
        return 0;
}
