/* SPDX-License-Identifier: MIT */
/*
 * The interval rate limiter of ratelimit.h, in the spirit of systemd's
 * ratelimit_below(): count what passes in the running interval, refuse (and
 * count) the rest until the interval ends. Pure: no clock, no I/O, no
 * allocation. A now_usec earlier than the interval's start (a caller mixing
 * clocks) counts as inside the interval rather than wrapping around.
 */
#include <assert.h>

#include "ratelimit.h"

bool ratelimit_is_unlimited(const RateLimit *rl) {
        assert(rl);
        return rl->interval_usec == 0 || rl->burst == 0;
}

uint64_t ratelimit_end_usec(const RateLimit *rl) {
        assert(rl);

        if (ratelimit_is_unlimited(rl) || rl->n_passed == 0)
                return RATELIMIT_NEVER_USEC;
        if (rl->begin_usec > RATELIMIT_NEVER_USEC - rl->interval_usec)
                return RATELIMIT_NEVER_USEC - 1;
        return rl->begin_usec + rl->interval_usec;
}

bool ratelimit_interval_over(const RateLimit *rl, uint64_t now_usec) {
        assert(rl);

        if (ratelimit_is_unlimited(rl) || rl->n_passed == 0)
                return true;
        return now_usec >= ratelimit_end_usec(rl);
}

bool ratelimit_test(RateLimit *rl, uint64_t now_usec) {
        assert(rl);

        if (ratelimit_is_unlimited(rl))
                return true;
        if (ratelimit_interval_over(rl, now_usec)) {
                rl->begin_usec = now_usec;
                rl->n_passed = 1;
                return true;
        }
        if (rl->n_passed < rl->burst) {
                rl->n_passed++;
                return true;
        }
        /* Saturate: a count that wraps would report a flood as a trickle. */
        if (rl->n_suppressed < UINT64_MAX)
                rl->n_suppressed++;
        return false;
}

uint64_t ratelimit_take_suppressed(RateLimit *rl) {
        uint64_t n;

        assert(rl);
        n = rl->n_suppressed;
        rl->n_suppressed = 0;
        return n;
}

void ratelimit_configure(RateLimit *rl, uint64_t interval_usec, uint64_t burst) {
        assert(rl);

        rl->interval_usec = interval_usec;
        rl->burst = burst;
        rl->begin_usec = 0;
        rl->n_passed = 0;
}
