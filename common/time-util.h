/* SPDX-License-Identifier: MIT */
/*
 * The one clock: CLOCK_MONOTONIC in microseconds. Only shell code reads it
 * (once per event, passing the value down); daemon/core/ never does, which
 * tests/unit/check-core-boundary enforces.
 */
#pragma once

#include <stdint.h>
#include <time.h>

#define USEC_PER_SEC  UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)

static inline uint64_t now_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}
