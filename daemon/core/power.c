/* SPDX-License-Identifier: MIT */
/*
 * Readings to conditions, conditions to a state and to factors (power.h).
 * Each condition is a threshold with hysteresis: entered at or past the
 * threshold, left only past the release value, kept in between.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "power.h"

void power_readings_init(PowerReadings *r) {
        assert(r);
        *r = (PowerReadings){
                .on_ac = true,
                .battery_permille = POWER_UNKNOWN,
                .temperature_mc = POWER_UNKNOWN,
                .pressure_cp = POWER_UNKNOWN,
        };
}

bool power_readings_equal(const PowerReadings *a, const PowerReadings *b) {
        return a->on_ac == b->on_ac && a->battery_permille == b->battery_permille &&
               a->temperature_mc == b->temperature_mc && a->pressure_cp == b->pressure_cp &&
               strcmp(a->sensor, b->sensor) == 0;
}

/* A condition that is entered when value reaches enter (rising: value >=
 * enter; falling: value < enter) and left past leave (rising: value < leave;
 * falling: value > leave). */
static bool hysteresis(bool was, int32_t value, int32_t enter, int32_t leave, bool rising) {
        if (value == POWER_UNKNOWN)
                return false;
        if (rising)
                return was ? value >= leave : value >= enter;
        return was ? value <= leave : value < enter;
}

#define BIT(s) (1u << (s))

unsigned power_conditions(const PowerConfig *c, const PowerReadings *r, unsigned prev) {
        unsigned m = 0;

        assert(c);
        assert(r);
        if (!c->enabled)
                return 0;
        if (!r->on_ac) {
                m |= BIT(POWER_BATTERY);
                if (hysteresis(prev & BIT(POWER_LOW_BATTERY), r->battery_permille, c->low_battery_permille,
                               c->low_battery_release_permille, false))
                        m |= BIT(POWER_LOW_BATTERY);
        }
        if (hysteresis(prev & BIT(POWER_MEMORY_PRESSURE), r->pressure_cp, c->pressure_cp,
                       c->pressure_release_cp, true))
                m |= BIT(POWER_MEMORY_PRESSURE);
        if (hysteresis(prev & BIT(POWER_HOT), r->temperature_mc, c->hot_mc, c->hot_release_mc, true))
                m |= BIT(POWER_HOT);
        if (hysteresis(prev & BIT(POWER_CRITICAL), r->temperature_mc, c->critical_mc, c->critical_release_mc,
                       true))
                m |= BIT(POWER_CRITICAL) | BIT(POWER_HOT);
        return m;
}

PowerState power_state(unsigned conditions) {
        for (int s = _POWER_STATE_MAX - 1; s > POWER_AC; s--)
                if (conditions & BIT(s))
                        return (PowerState)s;
        return POWER_AC;
}

unsigned power_factor(const PowerConfig *c, unsigned conditions, Priority p) {
        unsigned f = c->factor[POWER_AC][p];

        assert((unsigned)p < _PRIORITY_MAX);
        for (unsigned s = POWER_AC + 1; s < _POWER_STATE_MAX; s++)
                if ((conditions & BIT(s)) && c->factor[s][p] < f)
                        f = c->factor[s][p];
        return f;
}

#define NEAR_MC 5000 /* 5 °C */
#define NEAR_CP 500  /* 5 percentage points */

bool power_near(const PowerConfig *c, const PowerReadings *r, unsigned conditions) {
        if (!c->enabled)
                return false;
        if (conditions & (BIT(POWER_HOT) | BIT(POWER_CRITICAL) | BIT(POWER_MEMORY_PRESSURE)))
                return true;
        if (r->temperature_mc != POWER_UNKNOWN && (int64_t)r->temperature_mc >= (int64_t)c->hot_mc - NEAR_MC)
                return true;
        return r->pressure_cp != POWER_UNKNOWN &&
               (int64_t)r->pressure_cp >= (int64_t)c->pressure_cp - NEAR_CP;
}

uint64_t power_scale(uint64_t tokens, unsigned factor) {
        uint64_t scaled;

        if (tokens == 0 || factor >= POWER_FACTOR_ONE)
                return tokens;
        /* tokens x factor overflows only above 1.8 x 10^16 tokens: divide first there. */
        scaled = tokens <= UINT64_MAX / POWER_FACTOR_ONE ? tokens * factor / POWER_FACTOR_ONE
                                                         : tokens / POWER_FACTOR_ONE * factor;
        return scaled ? scaled : 1;
}

const char *power_format_fixed(char buf[static 24], int64_t value, unsigned decimals) {
        uint64_t scale = 1, magnitude;
        size_t len;

        assert(decimals >= 1 && decimals <= 6);
        for (unsigned i = 0; i < decimals; i++)
                scale *= 10;
        magnitude = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;
        len = (size_t)snprintf(buf, 24, "%s%" PRIu64 ".%0*" PRIu64, value < 0 ? "-" : "", magnitude / scale,
                               (int)decimals, magnitude % scale);
        while (len > 0 && buf[len - 1] == '0' && buf[len - 2] != '.')
                buf[--len] = '\0';
        return buf;
}
