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

/* CLOCK_REALTIME in microseconds: only for what is kept beyond this run
 * (the durable ledger's times, history), never for timeouts. */
static inline uint64_t realtime_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return ts.tv_sec < 0 ? 0 : (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}
