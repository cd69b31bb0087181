/* SPDX-License-Identifier: MIT */
/*
 * Learned cost estimates per task class (issue 13, point 1, and the numbers
 * points 3, 4 and 7 need). A class is (uid, name): the caller picks the name
 * (the declared task class, else the agent, else the command) and this module
 * treats it as an opaque client-chosen string, found by a keyed SipHash
 * (estimator_table_set_hash_key()), equal hashes chained, as breaker.c does.
 * The table holds at most max_entries classes; a new class beyond that is
 * refused (-EUSERS) until estimator_table_sweep() forgets the ones unseen for
 * the retention period.
 *
 * What a class learns, from each settled allocation (estimator_observe()):
 * the output tokens, over the whole class and per prompt-size bucket when the
 * Request gave promptTokens (bucket b holds prompts of 2^b .. 2^(b+1)-1
 * tokens, bit length minus one; the last bucket takes everything larger),
 * and the total (actual input + output) over the whole class, for Requests
 * without promptTokens. A prediction uses the prompt's bucket when it has
 * min_samples, else the whole class (so an empty or young bucket falls back).
 *
 * The statistic, and why:
 * - Exponentially weighted, with the half-life counted in samples, not in
 *   time. The Azure traces (shared/data/traces/SOURCES.md) drift within the
 *   hour (the conversation service's 5-minute mean moves between 143 and 281
 *   tokens), so a cumulative mean is wrong. Samples rather than time because
 *   the noise of the estimate depends on how many samples it averages (an
 *   EWMA of half-life H averages about 2.9 H of them: standard error
 *   CV / sqrt(2.9 H)), whatever the request rate; a time half-life would
 *   average thousands of requests in a busy class and forget a quiet one
 *   between two uses. Forgetting a quiet class is the sweep's job.
 *   Default 50 samples: on the two traces (plain EWMA, all 100-blocks, with
 *   buckets) half-lives of 25, 50, 100, 200 and 400 gave a median 100-block
 *   error of 3.3, 3.9, 4.4, 4.9 and 5.8% (conversation); 50 still keeps a
 *   stationary class's estimate within about 6% (CV 0.77 / sqrt(145)) and
 *   follows drift within ~10 s at the conversation service's 5 requests/s.
 * - Warm-up: the weight of a sample is max(1/n, 1 - 2^(-1/H)), so the first
 *   ~1.44 H samples give their plain mean instead of leaning on the zero start.
 * - Robust to a single outlier without being biased on heavy tails: a sample
 *   above clip_factor x the current estimate is cut there, and the cut-off
 *   part (the excess) is learned by a second, slow average (half-life
 *   tail_half_life_samples); the estimate is the sum of both. A 100x outlier
 *   then moves a settled estimate by about (k - 1) a + (100 - k) a_tail
 *   (11% with the defaults 4, 50 and 1000; < 20% from ~700 samples on),
 *   while a class whose tail is real still gets it counted in full over
 *   time (clipping alone biased the
 *   code trace, CV 2.15, low: its 100-block error went from 9.6 to 25.8% at
 *   k = 3). Learning in log space was tried and rejected: its mean is the
 *   geometric one, and the lognormal correction exp(mu + s^2/2) misses on
 *   these traces (median 100-block error 5.9% against 3.9%, conversation).
 *   The price: the tail's warm-up is a plain mean too (weight max(1/n,
 *   a_tail)), so a young class cannot tell a one-off outlier from its tail:
 *   a 100x sample moves it 5.7x at 20 samples, 2x at 100, 1.2x at 500. A
 *   tail with no warm-up (a_tail from the start) was robust from 20 samples
 *   but learned heavy tails too slowly: the code trace with buckets was
 *   biased 13% low. The ratio quantile below and the caller's floor and hard
 *   limit are what protect a young class.
 * - The spread for the adaptive hard limit (point 3): a histogram of
 *   log2(actual / predicted output) in quarter-octave bins from 1/256 to 256,
 *   decayed like the tail (tail_half_life_samples, as a high quantile needs
 *   many samples); ratio_q is the upper edge of the bin where the weight
 *   reaches ratio_quantile_permille (default 950: p95), so it errs high.
 *
 * Error metrics (point 4), counted for every observation once the class had
 * min_samples (the predictions the daemon would reserve with), comparing the
 * output-token prediction made before the sample with the actual: the
 * weighted absolute percentage error sum|pred - act| / sum act and the bias
 * (sum pred - sum act) / sum act since the class was first seen; and for
 * blocks of 10, 100 and 1000 consecutive such observations the error of the
 * block total |sum pred - sum act| / sum act, of which the last
 * ESTIMATOR_BLOCK_RING completed blocks are kept (a ring) and read back as
 * median and p90.
 *
 * Project intervals (point 5): what N tasks of a class will cost, with a
 * central interval of coverage c (estimator_project()). The expected output
 * is N x the one-task prediction (with the prompt's bucket when it has
 * min_samples), the expected total N x the predicted total. The interval is
 * calibrated on the class's own history, not on an i.i.d. formula
 * (CV / sqrt(N) would say a block of 100 is within 8%, but drift within the
 * hour makes neighbouring requests move together, so real block totals
 * spread more, and the EWMA's lag adds its own): each block of 10, 100 and
 * 1000 (counted from min_samples on, like the errors) also freezes, at its
 * first observation, m0 = the class-level output prediction (what a project
 * estimate made then, without a prompt, would have multiplied), and keeps
 * at its end ratio = sum act / (size x m0) in a second ring of
 * ESTIMATOR_BLOCK_RING (skipped when m0 is 0, and m0 is 0 for a block
 * begun before the class had 2 x half_life_samples: a young class's project
 * estimate is as noisy as its few samples, and its blocks would widen every
 * later interval until the ring forgets them; on the conversation trace one
 * such 1000-block ratio of 2.98 set the upper end of every 1000-task
 * interval for 64,000 requests). A ratio, signed, so the
 * interval can be asymmetric (lognormal sums are skewed up). From these:
 * - the quantiles (1 - c)/2 and (1 + c)/2 of a size's kept ratios, linear
 *   between order statistics at the positions (n + 1) p, clamped to the
 *   extremes (they cover c on average for i.i.d. ratios from n = 19 on for
 *   90%, and 82% with 10 kept, where the (n - 1) p + 1 positions give 74%);
 *   a size is usable with ESTIMATOR_PROJECT_MIN_BLOCKS (10) ratios kept, so
 *   blocks of 1000 need 10,000 predictions, and the rings remember the last
 *   64 blocks (640, 6,400, 64,000 requests: recent drift counts, old does not);
 * - N = 1 ("size 1"): the single-request ratio histogram above (actual /
 *   predicted output, decayed over tail_half_life_samples), read with linear
 *   interpolation in log2 inside the quarter-octave bin, usable once 10
 *   predictions were counted;
 * - N between two usable sizes: the log of each quantile interpolated
 *   linearly in log N (basis_block_size is then the larger size, the one
 *   with fewer blocks behind it); N equal to a size: that size's;
 * - N past the largest usable size: that size's quantiles as they are, not
 *   shrunk by sqrt(N / size) (basis_scaled): drift does not average out the
 *   way noise does, and too narrow an interval is the costly error;
 * - nothing usable (fewer than 10 predictions): no interval (basis 1 and the
 *   predictions counted);
 * - output interval = expected output x [q_low, q_high]; the total's is that
 *   plus the input part (expected total - expected output, at least 0)
 *   unchanged at both ends: prompts are known or learned, outputs vary.
 * The ratios are against the class-level prediction while the expectation
 * may use a bucket's: the bucket's own blocks would be too few to calibrate
 * on, and a bucket's relative spread is assumed like its class's. Ratios of
 * 0 (blocks without output) are floored at 1/256 for the logarithm.
 * Measured on generators with CV 0.8 after 20,000 requests (test-estimator,
 * seeds 1..10): the 90% interval held 0.88..0.93 of the next 100 requests'
 * sums (stationary, log random walk, sinusoid, random steps of the level)
 * and 0.86..0.92 of the next 1000, each end missing about half the rest;
 * the i.i.d. formula held 0.65..0.71 (100) and 0.14..0.22 (1000) on the
 * walk. The interval of a stationary class's 1000 tasks is still about
 * +-11%, not the +-4% of CV / sqrt(N): the estimate multiplied is an EWMA
 * with its own noise (CV / sqrt(2.9 H), 6.6%), which no later block
 * averages away. Not covered well: a level that jumps periodically at a
 * multiple of the block size (steps every 3000 requests: 0.73..0.83 of
 * the next 1000, 100 trials, seeds 1..6), as the blocks kept then see only a few phases of it.
 *
 * Persistence (point 7): EstimatorClassState is all of a class's state as
 * plain numbers; estimator_class_state() reads it, estimator_restore() puts
 * it back (validated: a damaged row is refused, never trusted), so a restored
 * class predicts exactly what the saved one did.
 *
 * Pure: no clock (time is `now`, µs, only for retention), no I/O, no logging.
 * An EstimatorClass pointer is valid until the next estimator_table_sweep().
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct EstimatorSettings {
        uint32_t half_life_samples;       /* >= 1; default 50 */
        uint32_t tail_half_life_samples;  /* >= half_life_samples; default 1000 */
        double clip_factor;               /* > 1; default 4 */
        uint32_t min_samples;             /* >= 1; default 20 (a bucket, and the metrics) */
        uint32_t ratio_quantile_permille; /* 1..999; default 950 */
} EstimatorSettings;

#define ESTIMATOR_SETTINGS_DEFAULT                                                                          \
        ((EstimatorSettings){                                                                               \
                .half_life_samples = 50,                                                                    \
                .tail_half_life_samples = 1000,                                                             \
                .clip_factor = 4.0,                                                                         \
                .min_samples = 20,                                                                          \
                .ratio_quantile_permille = 950,                                                             \
        })

/* Prompt-size buckets: 0 .. 31 (a prompt of 2^31 tokens or more is in 31). */
#define ESTIMATOR_BUCKETS 32u
/* Quarter-octave bins of log2(actual / predicted) over [-8, 8). */
#define ESTIMATOR_RATIO_BINS 64u
/* Block sizes of the block-total error, and how many completed blocks each keeps. */
#define ESTIMATOR_BLOCK_SIZES 3u
#define ESTIMATOR_BLOCK_RING  64u
/* Kept ratios (or single predictions) a block size needs to calibrate a
 * project interval. */
#define ESTIMATOR_PROJECT_MIN_BLOCKS 10u
/* Longest class name (bytes, without the NUL): longer is -EINVAL, so a client
 * cannot grow the table by the length of its names. */
#define ESTIMATOR_NAME_MAX 255u

extern const uint32_t estimator_block_sizes[ESTIMATOR_BLOCK_SIZES]; /* 10, 100, 1000 */

/* One weighted average: the clipped mean plus the slow mean of the excess. */
typedef struct EstimatorStat {
        double mean, tail;
        uint64_t samples;
} EstimatorStat;

typedef struct EstimatorBlocks {
        double sum_pred, sum_act; /* of the block in progress */
        uint32_t count;           /* observations in it */
        uint32_t n_errors, next;  /* completed blocks kept (<= RING); where the next goes */
        double errors[ESTIMATOR_BLOCK_RING];
        /* For project intervals: the class-level output prediction frozen at
         * the block's first observation, and of completed blocks with m0 > 0
         * the ratio sum act / (count x m0), a ring like errors. */
        double m0;
        uint32_t n_ratios, next_ratio;
        double ratios[ESTIMATOR_BLOCK_RING];
} EstimatorBlocks;

/* Everything a class has learned, as plain numbers (saved and restored as is). */
typedef struct EstimatorClassState {
        EstimatorStat output, total;
        EstimatorStat bucket[ESTIMATOR_BUCKETS];
        double ratio_hist[ESTIMATOR_RATIO_BINS];
        double err_abs, err_pred, err_act; /* sums for WAPE and bias */
        uint64_t n_predicted;              /* observations counted in them */
        EstimatorBlocks blocks[ESTIMATOR_BLOCK_SIZES];
        uint64_t last_seen_usec;
} EstimatorClassState;

typedef struct EstimatorPrediction {
        uint64_t predicted_total; /* prompt + predicted output, or the learned total without a prompt */
        uint64_t predicted_output;
        uint64_t samples;        /* the class's (output) samples */
        uint64_t bucket_samples; /* of the prompt's bucket (0 without a prompt) */
        bool bucket_used;        /* the bucket had min_samples and was used */
        uint32_t bucket;         /* the prompt's bucket (0 without a prompt) */
        double ratio_q;          /* the quantile of actual / predicted output; 0 while none */
} EstimatorPrediction;

typedef struct EstimatorBlockMetrics {
        uint32_t block_size, n_blocks; /* n_blocks kept, at most ESTIMATOR_BLOCK_RING */
        double median, p90;            /* of their errors (fractions); 0 with none */
} EstimatorBlockMetrics;

typedef struct EstimatorMetrics {
        uint64_t n_predicted;
        double wape, bias; /* fractions; 0 with nothing counted */
        EstimatorBlockMetrics blocks[ESTIMATOR_BLOCK_SIZES];
} EstimatorMetrics;

typedef struct EstimatorProject {
        uint64_t tasks;                 /* N, >= 1 */
        EstimatorPrediction per_task;   /* estimator_predict() of one task with this prompt */
        double expected_output;         /* N x per_task.predicted_output */
        double expected_total;          /* N x per_task.predicted_total */
        bool has_interval;              /* false: too little history (see basis_blocks) */
        double output_low, output_high; /* central interval of the N tasks' output-token sum */
        double total_low, total_high;   /* the same plus the N tasks' input part (as predicted) */
        uint32_t basis_block_size;      /* what calibrated it: 1 (single requests) or 10, 100, 1000 */
        uint32_t basis_blocks;          /* how many of those it had */
        bool basis_scaled;              /* N is past the largest block size with enough blocks: its
                                           spread was used as is (conservative, not shrunk) */
} EstimatorProject;

typedef struct EstimatorTable EstimatorTable;
typedef struct EstimatorClass EstimatorClass;

/* -EINVAL on settings out of range (see the struct), else 0. */
int estimator_settings_validate(const EstimatorSettings *s);
/* NULL on invalid settings or no memory. */
EstimatorTable *estimator_table_new(const EstimatorSettings *s, size_t max_entries);
EstimatorTable *estimator_table_free(EstimatorTable *t); /* NULL-safe */
/* New settings for what is learned from now on (a reload): what each class
 * learned stays; a table above max_entries keeps its classes and takes no
 * new one until the sweep has made room. 0 or -EINVAL. */
int estimator_table_set_settings(EstimatorTable *t, const EstimatorSettings *s, size_t max_entries);
/* At most this many classes of one uid (at least 1; default: no share, only
 * max_entries), so that one user naming classes cannot keep every other
 * user's from being learned: a new class past it is -EUSERS. */
void estimator_table_set_max_per_uid(EstimatorTable *t, size_t max_per_uid);
/* Keys the name hash; call once, before the first class, with 16 random bytes. */
void estimator_table_set_hash_key(EstimatorTable *t, const uint8_t key[16]);

/* Learns one settled allocation of class (uid, cls): prompt_tokens as the
 * Request declared it (0: none; it picks the bucket), the actual input and
 * output tokens. Counts the metrics first, from the prediction the class
 * would have made for it. 0, -EINVAL (cls NULL, empty or too long), -EUSERS
 * (a new class and the table full: nothing learned), -ENOMEM. */
int estimator_observe(EstimatorTable *t, uint32_t uid, const char *cls, uint64_t prompt_tokens,
                      uint64_t input_tokens, uint64_t output_tokens, uint64_t now);
/* The prediction for a Request of (uid, cls) with prompt_tokens (0: none).
 * false (and *ret zeroed) when the class has learned nothing; the caller
 * decides whether samples are enough (min_samples) to use it. */
bool estimator_predict(const EstimatorTable *t, uint32_t uid, const char *cls, uint64_t prompt_tokens,
                       EstimatorPrediction *ret);

/* The cost of a project of `tasks` tasks of (uid, cls), each with
 * prompt_tokens (0: none), and its central interval of coverage_permille
 * (900: the central 90% interval). 0, -ENOENT (no such class, or it learned
 * nothing), -EINVAL (tasks 0, coverage_permille not in 1..999). */
int estimator_project(const EstimatorTable *t, uint32_t uid, const char *cls, uint64_t tasks,
                      uint64_t prompt_tokens, uint32_t coverage_permille, EstimatorProject *ret);

/* Forgets the classes not observed for retention_usec (now - last seen >=
 * retention). Returns how many. */
size_t estimator_table_sweep(EstimatorTable *t, uint64_t now, uint64_t retention_usec);

/* Iteration, NULL starts (newest first), and what a class is. */
EstimatorClass *estimator_table_next(const EstimatorTable *t, const EstimatorClass *c);
EstimatorClass *estimator_find(const EstimatorTable *t, uint32_t uid, const char *cls);
uint32_t estimator_class_uid(const EstimatorClass *c);
const char *estimator_class_name(const EstimatorClass *c);
void estimator_class_state(const EstimatorClass *c, EstimatorClassState *ret);
/* Whether the class learned since it was last marked saved (a new class has;
 * a restored one has not), and marking it so: how the caller saves only what
 * changed, in steps. */
bool estimator_class_dirty(const EstimatorClass *c);
void estimator_class_mark_saved(EstimatorClass *c);
void estimator_class_metrics(const EstimatorClass *c, EstimatorMetrics *ret);
size_t estimator_table_size(const EstimatorTable *t);

/* Puts a saved class back (replacing the state of one of that name): 0,
 * -EINVAL (a name as for observe, or a state no class can have: a negative
 * or non-finite number, a stat with a value and no samples, a block count or
 * ring index out of range), -EUSERS (a new class and the table full),
 * -ENOMEM. The settings need not be those it was learned with. */
int estimator_restore(EstimatorTable *t, uint32_t uid, const char *cls, const EstimatorClassState *state);
