/* SPDX-License-Identifier: MIT */
/*
 * A simple interval rate limiter: at most `burst` events pass per interval of
 * `interval_usec`; the interval starts with the first event that passes after
 * the previous one ended, and the events refused meanwhile are counted until
 * someone takes the count (to say "N similar events suppressed"). Pure core:
 * time is the caller's monotonic now_usec, nothing here reads a clock, arms a
 * timer or does I/O. Not a token bucket: nothing refills mid-interval.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

/* A time that never comes: ratelimit_end_usec() of a limiter with nothing to end. */
#define RATELIMIT_NEVER_USEC UINT64_MAX

typedef struct RateLimit {
        uint64_t interval_usec; /* 0: unlimited */
        uint64_t burst;         /* events passed per interval; 0: unlimited */
        uint64_t begin_usec;    /* start of the current interval, when n_passed > 0 */
        uint64_t n_passed;      /* in the current interval; 0: no interval running */
        uint64_t n_suppressed;  /* refused since the count was last taken */
} RateLimit;

#define RATELIMIT_INIT(interval, b) ((RateLimit){.interval_usec = (interval), .burst = (b)})

bool ratelimit_is_unlimited(const RateLimit *rl);

/* Whether an event at now_usec may pass. True: it counts against the burst of
 * the current interval (starting a new interval when none runs or the last
 * one ended). False: it is counted as suppressed. An unlimited limiter passes
 * everything and counts nothing. */
bool ratelimit_test(RateLimit *rl, uint64_t now_usec);

/* Returns the number of events suppressed since the last call, and resets it. */
uint64_t ratelimit_take_suppressed(RateLimit *rl);

/* When the current interval ends (begin + interval, saturating), or
 * RATELIMIT_NEVER_USEC when no interval runs or the limiter is unlimited. */
uint64_t ratelimit_end_usec(const RateLimit *rl);

/* Whether no interval is running at now_usec (none started, or the last one
 * has ended), so the next event passes. */
bool ratelimit_interval_over(const RateLimit *rl, uint64_t now_usec);

/* Changes interval and burst and forgets the running interval; the count of
 * suppressed events is kept for the caller to take. */
void ratelimit_configure(RateLimit *rl, uint64_t interval_usec, uint64_t burst);
