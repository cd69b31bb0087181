/* SPDX-License-Identifier: MIT */
/*
 * Power awareness (issue 11), the pure part: readings (AC, battery charge,
 * temperature, memory pressure) to the conditions they put the machine in,
 * with hysteresis; the conditions to one state to show and to the factor
 * each priority gets (window limits and per-request caps are scaled by it,
 * or the priority is paused). No clock, no I/O: the shell's monitor
 * (daemon/power-monitor.c) reads sysfs and PSI and passes readings here.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"

/* A reading that is not there (no sensor, no battery, no PSI, a read error). */
#define POWER_UNKNOWN INT32_MIN

typedef struct PowerReadings {
        bool on_ac;               /* the "on AC" rule (TESTING.md); true with no supplies */
        int32_t battery_permille; /* charge of the system batteries, 0..1000, or POWER_UNKNOWN */
        int32_t temperature_mc;   /* millidegrees Celsius of the chosen sensor, or POWER_UNKNOWN */
        int32_t pressure_cp;      /* PSI memory "some avg10", hundredths of a percent, or POWER_UNKNOWN */
        char sensor[64];          /* where temperature_mc came from ("x86_pkg_temp",
                                   * "coretemp/Package id 0"), "" when unknown */
} PowerReadings;

/* Readings of a machine with nothing to read: on AC, all else unknown. */
void power_readings_init(PowerReadings *r);
bool power_readings_equal(const PowerReadings *a, const PowerReadings *b);

/*
 * The active conditions, a mask of 1u << PowerState (POWER_AC is never set:
 * no condition is AC), from the readings and the previous mask (hysteresis):
 *   battery          !on_ac
 *   low-battery      !on_ac and charge known: entered below low_battery, left
 *                    above low_battery_release (or on AC, or charge unknown)
 *   memory-pressure  pressure known: entered at >= pressure, left below
 *                    pressure_release
 *   hot              temperature known: entered at >= hot, left below hot_release
 *   critical         temperature known: entered at >= critical, left below
 *                    critical_release (hot stays set with it)
 * An unknown reading leaves its condition (a sensor that went away is not hot).
 */
unsigned power_conditions(const PowerConfig *c, const PowerReadings *r, unsigned prev);
/* The most severe condition in the mask, POWER_AC for none. */
PowerState power_state(unsigned conditions);
/* The factor for a priority: the smallest of policy.ac's (which applies in
 * every state: a floor, 1000 by default) and the active conditions'; 0
 * (POWER_FACTOR_PAUSE): paused. */
unsigned power_factor(const PowerConfig *c, unsigned conditions, Priority p);
/* Whether temperatures and pressure are worth polling even while idle: a
 * temperature or pressure condition is active, or a reading is within 5 °C
 * (5 percentage points) of entering one. */
bool power_near(const PowerConfig *c, const PowerReadings *r, unsigned conditions);
/* tokens x factor / 1000, rounded down, at least 1 (for tokens >= 1); tokens
 * unchanged at 1000 or for tokens 0 (no limit). */
uint64_t power_scale(uint64_t tokens, unsigned factor);
/* value / 10^decimals (decimals 1..6) as a decimal with trailing zeros
 * dropped but one kept: 432, 1 → "43.2"; 1000, 3 → "1.0"; 500, 3 → "0.5";
 * -55, 1 → "-5.5". Returns buf. */
const char *power_format_fixed(char buf[static 24], int64_t value, unsigned decimals);
