/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for daemon/core/power.c, the pure part of power awareness
 * (issue 11): readings to conditions with hysteresis, one table row per
 * case (previous mask, readings, config) naming the threshold it exercises;
 * conditions to the state shown and to each priority's factor (the smallest
 * of the active conditions'); when polling is worth it (power_near); scaling
 * a limit by a factor; and sequences stepped one reading at a time (a
 * battery discharging from 100 % to 5 % and charging again, a charge that
 * wobbles around the thresholds, a CPU heating to 100 °C and cooling), with
 * the state expected at every step. The configs come from
 * config_init_defaults() and from config_parse() of a short text, so the
 * defaults tested are the ones the daemon runs with.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "power.h"
#include "tb-check.h"

#define N_ROWS(t) (sizeof(t) / sizeof((t)[0]))

#define U     POWER_UNKNOWN
#define PAUSE POWER_FACTOR_PAUSE

/* Condition bits, as power_conditions() returns them. */
#define BAT  (1u << POWER_BATTERY)
#define LOW  (1u << POWER_LOW_BATTERY)
#define MEM  (1u << POWER_MEMORY_PRESSURE)
#define HOT  (1u << POWER_HOT)
#define CRIT (1u << POWER_CRITICAL)
#define ALL  (BAT | LOW | MEM | HOT | CRIT)

/* Readings: on AC?, battery permille, temperature millidegrees, pressure hundredths. */
#define AC(b, t, p)                                                                                         \
        { .on_ac = true, .battery_permille = b, .temperature_mc = t, .pressure_cp = p }
#define BATTERY(b, t, p)                                                                                    \
        { .on_ac = false, .battery_permille = b, .temperature_mc = t, .pressure_cp = p }

/* The configs rows use. */
typedef enum Cfg {
        CFG_DEFAULT,  /* the built-in defaults */
        CFG_DISABLED, /* power.enabled = false */
        CFG_CUSTOM,   /* other thresholds and a policy that sets every entry of some states */
        _CFG_MAX,
} Cfg;

static const char *const cfg_texts[_CFG_MAX] = {
        [CFG_DEFAULT] = "",
        [CFG_DISABLED] = "power = { enabled = false; };",
        [CFG_CUSTOM] = "power = {\n"
                       "  low_battery_percent = 10; low_battery_release_percent = 12.5;\n"
                       "  hot_celsius = 70; hot_release_celsius = 69.5;\n"
                       "  critical_celsius = 90; critical_release_celsius = 60;\n"
                       "  memory_pressure_percent = 0.5; memory_pressure_release_percent = 0;\n"
                       "  policy = {\n"
                       "    ac = { interactive = 1.0; normal = 0.9; background = 0.3; };\n"
                       "    battery = { interactive = 0.8; normal = 0.6; background = 0.5; };\n"
                       "    hot = { interactive = 0.95; normal = 0.7; };\n"
                       "    critical = { interactive = \"pause\"; };\n"
                       "  };\n"
                       "};\n",
};

static Config cfgs[_CFG_MAX];

static void cfgs_setup(void) {
        for (int i = 0; i < _CFG_MAX; i++) {
                char *errors = NULL;
                int r = config_parse(cfg_texts[i], "test.conf", &cfgs[i], &errors);

                ck_assert_msg(r == 0, "config %d: %d, %s", i, r, errors ?: "");
        }
}

static void cfgs_teardown(void) {
        for (int i = 0; i < _CFG_MAX; i++)
                config_done(&cfgs[i]);
}

static const PowerConfig *cfg(Cfg c) {
        return &cfgs[c].power;
}

/* "BAT|LOW" for a mask, for messages. */
static const char *mask_text(unsigned m, char buf[static 64]) {
        static const char *const names[_POWER_STATE_MAX] = {"AC!", "BAT", "LOW", "MEM", "HOT", "CRIT"};
        size_t len = 0;

        buf[0] = '\0';
        for (int s = 0; s < _POWER_STATE_MAX; s++)
                if (m & (1u << s))
                        len += (size_t)snprintf(buf + len, 64 - len, "%s%s", len ? "|" : "", names[s]);
        if (!len)
                snprintf(buf, 64, "0");
        return buf;
}

/* ---- names and readings ---- */

START_TEST(test_state_names) {
        static const char *const names[] = {"ac",  "battery", "low-battery", "memory-pressure",
                                            "hot", "critical"};

        ck_assert_int_eq(_POWER_STATE_MAX, (int)N_ROWS(names));
        for (int i = 0; i < _POWER_STATE_MAX; i++) {
                ck_assert_str_eq(power_state_to_string((PowerState)i), names[i]);
                ck_assert_int_eq(power_state_from_string(names[i]), i);
        }
        ck_assert_ptr_null(power_state_to_string(_POWER_STATE_MAX));
        ck_assert_ptr_null(power_state_to_string((PowerState)-1));
        /* The underscores are the config file's spelling only. */
        ck_assert_int_eq(power_state_from_string("low_battery"), -EINVAL);
        ck_assert_int_eq(power_state_from_string("AC"), -EINVAL);
        ck_assert_int_eq(power_state_from_string(""), -EINVAL);
        ck_assert_int_eq(power_state_from_string(NULL), -EINVAL);
}
END_TEST

START_TEST(test_readings) {
        PowerReadings a, b;

        memset(&a, 0x5a, sizeof(a));
        power_readings_init(&a);
        ck_assert(a.on_ac);
        ck_assert_int_eq(a.battery_permille, POWER_UNKNOWN);
        ck_assert_int_eq(a.temperature_mc, POWER_UNKNOWN);
        ck_assert_int_eq(a.pressure_cp, POWER_UNKNOWN);
        ck_assert_str_eq(a.sensor, "");
        power_readings_init(&b);
        ck_assert(power_readings_equal(&a, &b));
        b.on_ac = false;
        ck_assert(!power_readings_equal(&a, &b));
        power_readings_init(&b);
        b.battery_permille = 500;
        ck_assert(!power_readings_equal(&a, &b));
        power_readings_init(&b);
        b.temperature_mc = 0;
        ck_assert(!power_readings_equal(&a, &b));
        power_readings_init(&b);
        b.pressure_cp = 0;
        ck_assert(!power_readings_equal(&a, &b));
        power_readings_init(&b);
        snprintf(b.sensor, sizeof(b.sensor), "x86_pkg_temp");
        ck_assert(!power_readings_equal(&a, &b));
        /* No condition on a machine with nothing to read. */
        ck_assert_uint_eq(power_conditions(cfg(CFG_DEFAULT), &a, 0), 0);
        ck_assert_uint_eq(power_conditions(cfg(CFG_DEFAULT), &a, ALL), 0);
}
END_TEST

/* ---- readings to conditions ---- */

typedef struct ConditionsRow {
        const char *name;
        Cfg cfg;
        unsigned prev;
        PowerReadings readings;
        unsigned want;
} ConditionsRow;

/* clang-format off */
static const ConditionsRow conditions_rows[] = {
        /* AC and battery */
        {"ac, nothing known", CFG_DEFAULT, 0, AC(U, U, U), 0},
        {"ac, full battery", CFG_DEFAULT, 0, AC(1000, U, U), 0},
        {"battery, charge unknown", CFG_DEFAULT, 0, BATTERY(U, U, U), BAT},
        {"battery, 50 %", CFG_DEFAULT, 0, BATTERY(500, U, U), BAT},
        {"unplugged", CFG_DEFAULT, 0, BATTERY(800, U, U), BAT},
        {"plugged in", CFG_DEFAULT, BAT, AC(800, U, U), 0},
        /* low battery: entered below 20 %, left above 25 % */
        {"battery at 20.1 %", CFG_DEFAULT, BAT, BATTERY(201, U, U), BAT},
        {"battery at exactly 20 % is not yet low", CFG_DEFAULT, BAT, BATTERY(200, U, U), BAT},
        {"falls through 20 %: 19.9 %", CFG_DEFAULT, BAT, BATTERY(199, U, U), BAT | LOW},
        {"empty", CFG_DEFAULT, BAT, BATTERY(0, U, U), BAT | LOW},
        {"first reading already low", CFG_DEFAULT, 0, BATTERY(100, U, U), BAT | LOW},
        {"low stays at 20 %", CFG_DEFAULT, BAT | LOW, BATTERY(200, U, U), BAT | LOW},
        {"low stays at 22 %", CFG_DEFAULT, BAT | LOW, BATTERY(220, U, U), BAT | LOW},
        {"low stays at exactly 25 %", CFG_DEFAULT, BAT | LOW, BATTERY(250, U, U), BAT | LOW},
        {"rises past 25 %: 25.1 % leaves", CFG_DEFAULT, BAT | LOW, BATTERY(251, U, U), BAT},
        {"22 % without low before stays not low", CFG_DEFAULT, BAT, BATTERY(220, U, U), BAT},
        {"plugging in leaves low battery", CFG_DEFAULT, BAT | LOW, AC(100, U, U), 0},
        {"on AC with an empty battery", CFG_DEFAULT, 0, AC(0, U, U), 0},
        {"charge unknown leaves low battery", CFG_DEFAULT, BAT | LOW, BATTERY(U, U, U), BAT},
        /* hot: entered at 85 °C, left below 80 °C */
        {"84.999 °C", CFG_DEFAULT, 0, AC(U, 84999, U), 0},
        {"hot at exactly 85.0 °C", CFG_DEFAULT, 0, AC(U, 85000, U), HOT},
        {"hot at 80.5 °C keeps", CFG_DEFAULT, HOT, AC(U, 80500, U), HOT},
        {"hot at exactly 80.0 °C keeps", CFG_DEFAULT, HOT, AC(U, 80000, U), HOT},
        {"hot at 79.9 °C leaves", CFG_DEFAULT, HOT, AC(U, 79900, U), 0},
        {"80.5 °C without hot before", CFG_DEFAULT, 0, AC(U, 80500, U), 0},
        {"freezing", CFG_DEFAULT, HOT, AC(U, -40000, U), 0},
        {"sensor gone leaves hot", CFG_DEFAULT, HOT, AC(U, U, U), 0},
        /* critical: entered at 95 °C, left below 90 °C; hot comes with it */
        {"critical at 95 °C sets hot too", CFG_DEFAULT, 0, AC(U, 95000, U), HOT | CRIT},
        {"critical from hot", CFG_DEFAULT, HOT, AC(U, 95000, U), HOT | CRIT},
        {"94.999 °C is only hot", CFG_DEFAULT, 0, AC(U, 94999, U), HOT},
        {"critical stays at 90 °C", CFG_DEFAULT, HOT | CRIT, AC(U, 90000, U), HOT | CRIT},
        {"critical leaves at 89.999 °C, hot stays", CFG_DEFAULT, HOT | CRIT, AC(U, 89999, U), HOT},
        {"from critical to cool at once", CFG_DEFAULT, HOT | CRIT, AC(U, 50000, U), 0},
        {"sensor gone leaves critical", CFG_DEFAULT, HOT | CRIT, BATTERY(U, U, U), BAT},
        /* critical's release below hot's: hot stays set with critical */
        {"custom: critical holds hot below its release", CFG_CUSTOM, HOT | CRIT, AC(U, 65000, U), HOT | CRIT},
        {"custom: critical left below 60 °C", CFG_CUSTOM, HOT | CRIT, AC(U, 59999, U), 0},
        {"custom: hot at 70 °C", CFG_CUSTOM, 0, AC(U, 70000, U), HOT},
        {"custom: hot left at 69.499 °C", CFG_CUSTOM, HOT, AC(U, 69499, U), 0},
        /* memory pressure: entered at 20 %, left below 10 % */
        {"pressure 19.99 %", CFG_DEFAULT, 0, AC(U, U, 1999), 0},
        {"pressure at exactly 20 %", CFG_DEFAULT, 0, AC(U, U, 2000), MEM},
        {"pressure stays at 10 %", CFG_DEFAULT, MEM, AC(U, U, 1000), MEM},
        {"pressure leaves at 9.99 %", CFG_DEFAULT, MEM, AC(U, U, 999), 0},
        {"pressure at 15 % without it before", CFG_DEFAULT, 0, AC(U, U, 1500), 0},
        {"PSI gone leaves memory pressure", CFG_DEFAULT, MEM, AC(U, U, U), 0},
        {"custom: pressure at 0.5 %", CFG_CUSTOM, 0, AC(U, U, 50), MEM},
        /* Release 0: left only below 0, which PSI never reports. */
        {"custom: pressure 0 keeps", CFG_CUSTOM, MEM, AC(U, U, 0), MEM},
        {"custom: low battery below 10 %", CFG_CUSTOM, BAT, BATTERY(99, U, U), BAT | LOW},
        {"custom: 15 % is not low", CFG_CUSTOM, 0, BATTERY(150, U, U), BAT},
        {"custom: low left above 12.5 %", CFG_CUSTOM, BAT | LOW, BATTERY(126, U, U), BAT},
        /* everything at once, and conditions independent of each other */
        {"everything", CFG_DEFAULT, 0, BATTERY(50, 99000, 9000), ALL},
        {"everything ends on AC, cool, calm", CFG_DEFAULT, ALL, AC(50, 40000, 0), 0},
        {"hot on battery", CFG_DEFAULT, BAT, BATTERY(600, 86000, 100), BAT | HOT},
        {"low battery and pressure", CFG_DEFAULT, BAT | LOW, BATTERY(210, 60000, 2500), BAT | LOW | MEM},
        /* A stray AC bit in the previous mask is no condition. */
        {"AC bit in prev", CFG_DEFAULT, 1u << POWER_AC, AC(U, U, U), 0},
        {"garbage bits in prev", CFG_DEFAULT, ~0u, AC(U, U, U), 0},
        /* power.enabled = false: always AC */
        {"disabled: on battery, empty, critical, swapping", CFG_DISABLED, 0, BATTERY(0, 120000, 10000), 0},
        {"disabled: previous conditions dropped", CFG_DISABLED, ALL, BATTERY(0, 120000, 10000), 0},
};
/* clang-format on */

START_TEST(test_conditions) {
        const ConditionsRow *row = &conditions_rows[_i];
        unsigned got = power_conditions(cfg(row->cfg), &row->readings, row->prev);
        char g[64], w[64];

        ck_assert_msg(got == row->want, "row '%s': got %s, want %s", row->name, mask_text(got, g),
                      mask_text(row->want, w));
}
END_TEST

/* ---- conditions to the state shown ---- */

static const struct {
        unsigned conditions;
        PowerState want;
} state_rows[] = {
        {0, POWER_AC},
        {1u << POWER_AC, POWER_AC},
        {BAT, POWER_BATTERY},
        {BAT | LOW, POWER_LOW_BATTERY},
        {LOW, POWER_LOW_BATTERY},
        {BAT | MEM, POWER_MEMORY_PRESSURE},
        {BAT | LOW | MEM, POWER_MEMORY_PRESSURE},
        {MEM, POWER_MEMORY_PRESSURE},
        {HOT, POWER_HOT},
        {BAT | LOW | HOT, POWER_HOT},
        {MEM | HOT, POWER_HOT},
        {HOT | CRIT, POWER_CRITICAL},
        {CRIT, POWER_CRITICAL},
        {ALL, POWER_CRITICAL},
        {BAT | CRIT, POWER_CRITICAL},
};

START_TEST(test_state) {
        char buf[64];
        PowerState got = power_state(state_rows[_i].conditions);

        ck_assert_msg(got == state_rows[_i].want, "row %d (%s): got %s, want %s", _i,
                      mask_text(state_rows[_i].conditions, buf), power_state_to_string(got),
                      power_state_to_string(state_rows[_i].want));
}
END_TEST

/* ---- conditions to factors ---- */

typedef struct FactorRow {
        const char *name;
        Cfg cfg;
        unsigned conditions;
        unsigned want[_PRIORITY_MAX]; /* interactive, normal, background */
} FactorRow;

/* clang-format off */
static const FactorRow factor_rows[] = {
        /* the built-in policy */
        {"none", CFG_DEFAULT, 0, {1000, 1000, 1000}},
        {"battery", CFG_DEFAULT, BAT, {1000, 1000, 500}},
        {"low battery", CFG_DEFAULT, BAT | LOW, {1000, 500, PAUSE}},
        {"memory pressure", CFG_DEFAULT, MEM, {1000, 500, PAUSE}},
        {"hot", CFG_DEFAULT, HOT, {1000, 500, PAUSE}},
        {"battery and hot", CFG_DEFAULT, BAT | HOT, {1000, 500, PAUSE}},
        {"critical", CFG_DEFAULT, HOT | CRIT, {1000, PAUSE, PAUSE}},
        {"everything", CFG_DEFAULT, ALL, {1000, PAUSE, PAUSE}},
        {"battery and memory pressure", CFG_DEFAULT, BAT | MEM, {1000, 500, PAUSE}},
        /* the smallest of every active condition's, the ac entry included
         * (it is the base every condition can only lower) */
        {"custom: none is ac's", CFG_CUSTOM, 0, {1000, 900, 300}},
        {"custom: battery, ac's background smaller", CFG_CUSTOM, BAT, {800, 600, 300}},
        {"custom: hot", CFG_CUSTOM, HOT, {950, 700, PAUSE}},
        {"custom: battery and hot", CFG_CUSTOM, BAT | HOT, {800, 600, PAUSE}},
        {"custom: critical pauses interactive", CFG_CUSTOM, HOT | CRIT, {PAUSE, PAUSE, PAUSE}},
        {"custom: low battery (defaults kept)", CFG_CUSTOM, BAT | LOW, {800, 500, PAUSE}},
        /* Disabled, power_conditions() gives 0; the factors of a mask are still the policy's. */
        {"disabled: none", CFG_DISABLED, 0, {1000, 1000, 1000}},
};
/* clang-format on */

START_TEST(test_factor) {
        const FactorRow *row = &factor_rows[_i];

        for (int p = 0; p < _PRIORITY_MAX; p++) {
                unsigned got = power_factor(cfg(row->cfg), row->conditions, (Priority)p);

                ck_assert_msg(got == row->want[p], "row '%s', %s: got %u, want %u", row->name,
                              priority_to_string((Priority)p), got, row->want[p]);
        }
}
END_TEST

/* ---- when polling is worth it ---- */

typedef struct NearRow {
        const char *name;
        Cfg cfg;
        PowerReadings readings;
        unsigned conditions;
        bool want;
} NearRow;

/* clang-format off */
static const NearRow near_rows[] = {
        {"nothing known", CFG_DEFAULT, AC(U, U, U), 0, false},
        {"cool", CFG_DEFAULT, AC(U, 50000, U), 0, false},
        {"79.999 °C is not near", CFG_DEFAULT, AC(U, 79999, U), 0, false},
        {"80 °C is within 5 °C of hot", CFG_DEFAULT, AC(U, 80000, U), 0, true},
        {"84 °C", CFG_DEFAULT, AC(U, 84000, U), 0, true},
        {"hot, sensor gone", CFG_DEFAULT, AC(U, U, U), HOT, true},
        {"hot, cooled to 60 °C", CFG_DEFAULT, AC(U, 60000, U), HOT, true},
        {"critical", CFG_DEFAULT, AC(U, U, U), CRIT, true},
        {"memory pressure", CFG_DEFAULT, AC(U, U, 0), MEM, true},
        {"pressure 14.99 %", CFG_DEFAULT, AC(U, U, 1499), 0, false},
        {"pressure 15 % is within 5 points", CFG_DEFAULT, AC(U, U, 1500), 0, true},
        /* The battery is event-driven and polled by its own rule. */
        {"low battery, cool", CFG_DEFAULT, BATTERY(100, 40000, 0), BAT | LOW, false},
        {"far below zero", CFG_DEFAULT, AC(U, -50000, U), 0, false},
        {"custom: 65 °C near a 70 °C hot", CFG_CUSTOM, AC(U, 65000, U), 0, true},
        {"custom: 64.999 °C", CFG_CUSTOM, AC(U, 64999, U), 0, false},
        /* A 0.5 % threshold: any pressure is near it. */
        {"custom: pressure 0", CFG_CUSTOM, AC(U, U, 0), 0, true},
        {"disabled: hot and near", CFG_DISABLED, AC(U, 99000, 9000), HOT | MEM, false},
};
/* clang-format on */

START_TEST(test_near) {
        const NearRow *row = &near_rows[_i];
        bool got = power_near(cfg(row->cfg), &row->readings, row->conditions);

        ck_assert_msg(got == row->want, "row '%s': got %d, want %d", row->name, got, row->want);
}
END_TEST

/* ---- scaling ---- */

static const struct {
        uint64_t tokens;
        unsigned factor;
        uint64_t want;
} scale_rows[] = {
        {1000, 500, 500},
        {999, 500, 499}, /* rounded down */
        {1999, 1, 1},
        {2000000, 13, 26000},
        {200000, 999, 199800},
        {1, 500, 1}, /* at least 1 */
        {3, 10, 1},  /* 0.03 */
        {100, 0, 1}, /* "pause" is decided before scaling; scaled, it is still at least 1 */
        {0, 500, 0}, /* 0 is no limit, and stays so */
        {0, 0, 0},
        {0, 1000, 0},
        {1000, 1000, 1000}, /* x1.0 unchanged */
        {12345, 1000, 12345},
        {12345, 1500, 12345}, /* above x1.0: unchanged, never raised */
        {UINT64_MAX, 1000, UINT64_MAX},
        /* no overflow: the largest that multiplies first, and beyond */
        {UINT64_MAX / 1000, 999, UINT64_MAX / 1000 * 999 / 1000},
        {UINT64_MAX / 1000 + 1, 999, (UINT64_MAX / 1000 + 1) / 1000 * 999},
        {UINT64_MAX, 500, UINT64_MAX / 1000 * 500},
        {UINT64_MAX, 1, UINT64_MAX / 1000},
        {999999999999, 500, 499999999999},
};

START_TEST(test_scale) {
        uint64_t got = power_scale(scale_rows[_i].tokens, scale_rows[_i].factor);

        ck_assert_msg(got == scale_rows[_i].want, "row %d: %" PRIu64 " x %u: got %" PRIu64 ", want %" PRIu64,
                      _i, scale_rows[_i].tokens, scale_rows[_i].factor, got, scale_rows[_i].want);
        /* Never more than the limit, never 0 from a limit. */
        ck_assert(got <= scale_rows[_i].tokens);
        ck_assert(scale_rows[_i].tokens == 0 || got >= 1);
}
END_TEST

/* ---- sequences ---- */

/* Readings stepped from `from` to `to` (inclusive) by `step`; every step
 * expects `state` and the background factor `background`. The mask carries
 * over from step to step and from segment to segment. */
typedef struct Segment {
        bool on_ac;
        enum { STEP_BATTERY, STEP_TEMPERATURE } what;
        int32_t from, to, step; /* permille or millidegrees */
        PowerState state;
        unsigned background;
} Segment;

typedef struct Sequence {
        const char *name;
        const Segment *segments;
        size_t n_segments;
} Sequence;

#define SEQ(name, s)                                                                                        \
        { name, s, N_ROWS(s) }

/* Unplugged at 100 %, discharging 1 % a step to 5 %, then plugged in and
 * charging to 30 %, then unplugged at 30 % and discharging again to 18 %. */
static const Segment discharge[] = {
        {false, STEP_BATTERY, 1000, 200, -10, POWER_BATTERY, 500},     /* 100 % .. 20 %: not yet below 20 */
        {false, STEP_BATTERY, 190, 50, -10, POWER_LOW_BATTERY, PAUSE}, /* 19 % .. 5 % */
        {true, STEP_BATTERY, 50, 300, 10, POWER_AC, 1000},        /* charging: on AC, whatever the charge */
        {false, STEP_BATTERY, 300, 200, -10, POWER_BATTERY, 500}, /* unplugged at 30 %: low was left on AC */
        {false, STEP_BATTERY, 190, 180, -10, POWER_LOW_BATTERY, PAUSE},
};

/* A charge that wobbles (a battery's gauge recalibrating, a heavy load) on
 * battery: once low, it stays low until above 25 %. */
static const Segment wobble[] = {
        {false, STEP_BATTERY, 230, 200, -10, POWER_BATTERY, 500},
        {false, STEP_BATTERY, 190, 190, -10, POWER_LOW_BATTERY, PAUSE},
        {false, STEP_BATTERY, 200, 250, 10, POWER_LOW_BATTERY, PAUSE}, /* back up to exactly 25 %: kept */
        {false, STEP_BATTERY, 240, 200, -10, POWER_LOW_BATTERY, PAUSE},
        {false, STEP_BATTERY, 210, 250, 10, POWER_LOW_BATTERY, PAUSE},
        {false, STEP_BATTERY, 260, 270, 10, POWER_BATTERY, 500},  /* past 25 %: left */
        {false, STEP_BATTERY, 260, 200, -10, POWER_BATTERY, 500}, /* and not entered again until below 20 */
};

/* On AC, a CPU heating 1 °C a step from 70 °C to 100 °C and cooling back. */
static const Segment heat[] = {
        {true, STEP_TEMPERATURE, 70000, 84000, 1000, POWER_AC, 1000},
        {true, STEP_TEMPERATURE, 85000, 94000, 1000, POWER_HOT, PAUSE},
        {true, STEP_TEMPERATURE, 95000, 100000, 1000, POWER_CRITICAL, PAUSE},
        {true, STEP_TEMPERATURE, 99000, 90000, -1000, POWER_CRITICAL, PAUSE}, /* kept down to 90 °C */
        {true, STEP_TEMPERATURE, 89000, 80000, -1000, POWER_HOT, PAUSE},      /* kept down to 80 °C */
        {true, STEP_TEMPERATURE, 79000, 70000, -1000, POWER_AC, 1000},
        {true, STEP_TEMPERATURE, 71000, 84000, 1000, POWER_AC, 1000}, /* warming again: ac until 85 */
        {true, STEP_TEMPERATURE, 85000, 85000, 1000, POWER_HOT, PAUSE},
};

static const Sequence sequences[] = {
        SEQ("discharge 100 % to 5 %, charge to 30 %, discharge to 18 %", discharge),
        SEQ("charge wobbling around 20 % and 25 %", wobble),
        SEQ("heating to 100 °C and cooling", heat),
};

START_TEST(test_sequence) {
        const Sequence *seq = &sequences[_i];
        const PowerConfig *c = cfg(CFG_DEFAULT);
        unsigned mask = 0, steps = 0;

        for (size_t i = 0; i < seq->n_segments; i++) {
                const Segment *s = &seq->segments[i];

                for (int32_t v = s->from; s->step > 0 ? v <= s->to : v >= s->to; v += s->step) {
                        PowerReadings r;
                        PowerState state;
                        unsigned background;
                        char buf[64];

                        power_readings_init(&r);
                        r.on_ac = s->on_ac;
                        if (s->what == STEP_BATTERY)
                                r.battery_permille = v;
                        else
                                r.temperature_mc = v;
                        mask = power_conditions(c, &r, mask);
                        state = power_state(mask);
                        background = power_factor(c, mask, PRIORITY_BACKGROUND);
                        ck_assert_msg(state == s->state && background == s->background,
                                      "%s: segment %zu, %s at %" PRId32 " %s: %s (%s), background %u; "
                                      "want %s, %u",
                                      seq->name, i, s->on_ac ? "on AC" : "on battery", v,
                                      s->what == STEP_BATTERY ? "permille" : "millidegrees",
                                      power_state_to_string(state), mask_text(mask, buf), background,
                                      power_state_to_string(s->state), s->background);
                        /* Interactive work is never slowed by the built-in policy. */
                        ck_assert_uint_eq(power_factor(c, mask, PRIORITY_INTERACTIVE), POWER_FACTOR_ONE);
                        steps++;
                }
        }
        ck_assert_uint_gt(steps, 10);
}
END_TEST

static Suite *power_suite(void) {
        Suite *s = suite_create("power");
        TCase *tc = tcase_create("core");

        tcase_add_unchecked_fixture(tc, cfgs_setup, cfgs_teardown);
        tcase_add_test(tc, test_state_names);
        tcase_add_test(tc, test_readings);
        tcase_add_loop_test(tc, test_conditions, 0, (int)N_ROWS(conditions_rows));
        tcase_add_loop_test(tc, test_state, 0, (int)N_ROWS(state_rows));
        tcase_add_loop_test(tc, test_factor, 0, (int)N_ROWS(factor_rows));
        tcase_add_loop_test(tc, test_near, 0, (int)N_ROWS(near_rows));
        tcase_add_loop_test(tc, test_scale, 0, (int)N_ROWS(scale_rows));
        tcase_add_loop_test(tc, test_sequence, 0, (int)N_ROWS(sequences));
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(power_suite());
}
