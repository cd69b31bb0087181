/* SPDX-License-Identifier: MIT */
/*
 * The tests' pseudo-random numbers: splitmix64 (Steele, Lea and Flood, "Fast
 * splittable pseudorandom number generators", OOPSLA 2014). Seeded and
 * reproducible, so a failing property run names the seed that replays it.
 * Not for anything that must be unpredictable.
 */
#pragma once

#include <stdint.h>

static inline uint64_t splitmix64(uint64_t *state) {
        uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

        z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
        return z ^ (z >> 31);
}
