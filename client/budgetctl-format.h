/* SPDX-License-Identifier: MIT */
/*
 * budgetctl's formatting of values for a terminal: token counts with SI
 * suffixes, durations in their two largest units, waits to the millisecond,
 * percentages, used/limit ratios, and the cleaning of daemon strings before
 * they reach a terminal, power factors, the power and durability lines of
 * status, the counts, money and lines of estimate; and the parsing of the
 * durations it is given. Pure: values in,
 * text out into a caller's buffer; no allocation, no I/O, no locale, no
 * clock (times come in as a struct tm the caller made with localtime_r(), or
 * as realtime microseconds: parse_time() is given now, and reads the C
 * library's local zone, TZ, through localtime_r() and mktime()). Tables and
 * their widths are budgetctl's (it measures with utf8_width()).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

/* Buffer sizes. The longest outputs are far shorter ("99.9k", "213503982d 8h",
 * "99.9k/99.9k"); the room is for snprintf's worst case. */
#define FORMAT_TOKENS_MAX   32
#define FORMAT_DURATION_MAX 32
#define FORMAT_RATIO_MAX    64

/*
 * A token count, never more than it is (it is compared against limits):
 *   below 1000       exact: "0", "999"
 *   from 1000 up     in the largest SI unit not above it (k 10^3, M 10^6,
 *                    G 10^9, T 10^12, P 10^15, E 10^18), truncated, never
 *                    rounded up:
 *                      below 100 units: one decimal, ".0" left out
 *                        ("1k" for 1000..1099, "14.1k" for 14199, "99.9k")
 *                      100 units and more: whole units ("100k", "999k")
 *   UINT64_MAX       "18.4E"
 * So the text is at most 5 characters, and shown <= count < shown + step,
 * where step is a tenth of the unit below 100 units and the unit from 100 up
 * (the largest loss is just under 10%, at 1099 shown as "1k"). Returns buf.
 */
const char *format_tokens(char buf[static FORMAT_TOKENS_MAX], uint64_t tokens);

/*
 * A duration in whole seconds (truncated) in its two largest units:
 * "42s" below a minute, "5min 12s" below an hour, "2h 5min" below a day,
 * else "3d 4h" (days are the largest unit: UINT64_MAX is "213503982d 8h").
 * Returns buf.
 */
const char *format_duration(char buf[static FORMAT_DURATION_MAX], uint64_t usec);

/* "used/limit" with both as format_tokens(), and "-" for the limit when there
 * is none ("14.1k/2M", "0/-"). Returns buf. */
const char *format_ratio(char buf[static FORMAT_RATIO_MAX], uint64_t used, bool has_limit, uint64_t limit);

/*
 * A short wait, to the millisecond where that matters (truncated, never
 * rounded up): "0ms" to "999ms" below a second, "1.5s" (a tenth; ".0" left
 * out: "42s") below a minute, else as format_duration() ("2min 5s").
 * Returns buf.
 */
const char *format_wait(char buf[static FORMAT_DURATION_MAX], uint64_t usec);

/* A utilisation in permille as a whole percent, truncated: 0 "0%", 855
 * "85%", 1000 "100%", 1500 "150%" (past the limit). Returns buf. */
#define FORMAT_PERCENT_MAX 24
const char *format_percent(char buf[static FORMAT_PERCENT_MAX], uint64_t permille);

/*
 * Parses a duration of the command line: a number, with an optional
 * fraction of up to 6 digits, and an optional unit: "us", "ms", "s" (the
 * default: "2" is 2 s), "min" or "h" ("500ms", "1.5s", "1min", "1h",
 * "0.25h"). Returns 0 and *ret_usec, -EINVAL when s is no duration, or
 * -ERANGE when it is above max_usec (fractions of a microsecond are
 * truncated).
 */
int parse_duration(const char *s, uint64_t max_usec, uint64_t *ret_usec);

/* Replaces each control character of s with '?', in place: C0 (below 0x20),
 * DEL, and C1 (U+0080..U+009F, whose CSI some terminals obey), and each byte
 * that is not UTF-8, so no string an agent chose can drive the admin's
 * terminal. Returns s. */
char *format_sanitize(char *s);

/* Upper-cases the ASCII letters of s in place ("minute" -> "MINUTE", a
 * column header); other bytes are left alone. Returns s. */
char *format_upper(char *s);

/* An error in permille of the actual (a fraction x 1000, rounded by the
 * caller) as a percent with one decimal: 52 "5.2%", 0 "0.0%", 12345
 * "1234.5%"; with sign, a bias: 52 "+5.2%", -52 "-5.2%", 0 "0.0%".
 * Returns buf. */
#define FORMAT_ERROR_MAX 32
const char *format_error(char buf[static FORMAT_ERROR_MAX], int64_t permille, bool sign);

/* A power factor in permille as a multiplier, exact, its trailing zeros left
 * out: 1000 "1", 500 "0.5", 250 "0.25", 125 "0.125", 10 "0.01", 0 "0",
 * 1500 "1.5". Returns buf. */
#define FORMAT_FACTOR_MAX 32
const char *format_factor(char buf[static FORMAT_FACTOR_MAX], uint64_t permille);

/* A reading or factor of FormatPower that is not known (not sent). */
#define FORMAT_POWER_UNKNOWN INT64_MIN

/* The priorities of FormatPower.factor_permille, in the daemon's order. */
enum {
        FORMAT_PRIORITY_INTERACTIVE,
        FORMAT_PRIORITY_NORMAL,
        FORMAT_PRIORITY_BACKGROUND,
        _FORMAT_PRIORITY_MAX,
};

/* The daemon's power object (admin Status), in integers of the units it
 * writes with fixed decimals. */
typedef struct FormatPower {
        const char *state;        /* "ac", "battery", ... as the daemon sent it */
        bool on_ac;               /* the "on AC" rule */
        int64_t battery_permille; /* charge, tenths of a percent; or FORMAT_POWER_UNKNOWN */
        int64_t temperature_dc;   /* tenths of a degree Celsius; or FORMAT_POWER_UNKNOWN */
        const char *sensor;       /* what read temperature_dc; NULL: not said */
        int64_t pressure_cp;      /* PSI memory "some avg10", hundredths of a percent; or unknown */
        const struct tm *since;   /* local time the state was entered; NULL: not shown */
        const struct tm *now; /* local time now (since shows its date on another day); NULL: date shown */
        int64_t factor_permille[_FORMAT_PRIORITY_MAX]; /* per priority; 0: paused; or unknown */
} FormatPower;

/*
 * The power line of budgetctl status, without its "power: " label:
 *   STATE (on AC|on battery[, B%][, T °C[ SENSOR]][, memory pressure P%])
 *         [since TIME][; PRIORITY xF|PRIORITY paused, ...]
 * e.g. "battery (on battery, 43%, 61.5 °C x86_pkg_temp, memory pressure
 * 0.00%) since 10:02:11; background x0.5", or "ac (on AC)". Unknown readings
 * are left out; the battery is a whole percent, truncated (14.9% is "14%",
 * below a 15% threshold as it is). since is shown for every state but "ac"
 * (how long the machine has been held back), as HH:MM:SS, with the date
 * before it (YYYY-MM-DD) when it is not now's day. The factors listed are
 * those not x1 (none in "ac"), in priority order. The daemon's strings
 * (state, sensor) are cleaned as format_sanitize() does, and a line too long
 * for buf is cut. Returns buf.
 */
#define FORMAT_POWER_MAX 512
const char *format_power(char buf[static FORMAT_POWER_MAX], const FormatPower *p);

/* The daemon's durability object (admin Status): its durable ledger. */
typedef struct FormatDurability {
        const char *database; /* the database file; NULL: memory only */
        const char *sync;     /* durability.sync: "normal", "full"; NULL: not said */
        bool degraded;        /* commits fail: the daemon enforces from memory and retries */
        const char *error;    /* why, while degraded; NULL: not said */
        uint64_t pending;     /* writes staged, not yet committed */
        uint64_t lost;        /* writes dropped since the start (never made durable) */
        uint64_t commits;     /* transactions written since the start */
} FormatDurability;

/*
 * The durability line of budgetctl status, without its "Durability: " label:
 *   memory only      "memory only (nothing survives a restart)"
 *   working          "DATABASE (sync SYNC), N commits[, M writes lost since the start]"
 *   degraded         "DEGRADED (N writes pending, M lost; enforcing from memory): ERROR"
 *                    (the database instead of ERROR when no error is said)
 * e.g. "/var/lib/tokenbudget/tokenbudget.db (sync normal), 1234 commits".
 * Counts are exact, "1 commit" singular. The daemon's strings are cleaned as
 * format_sanitize() does, and a line too long for buf is cut. Returns buf.
 */
#define FORMAT_DURABILITY_MAX 1024
const char *format_durability(char buf[static FORMAT_DURABILITY_MAX], const FormatDurability *d);

/*
 * Parses a point in time of the command line (--since, --until) as
 * journalctl does (systemd.time(7)), into realtime microseconds since the
 * epoch, given now (realtime microseconds):
 *   "now"
 *   "today", "yesterday", "tomorrow"   local midnight of that day
 *   "-1h", "+30min", "-2d 3h", "-1.5h", "1h ago", "5min left"
 *                                      now minus or plus a time span: a
 *                                      number (a fraction allowed) and a
 *                                      unit, us, ms, s, min (m), h, d, w,
 *                                      M (30.44 days) or y (365.25 days), or
 *                                      their long names ("2 hours", "1 week");
 *                                      no unit is seconds; parts add up
 *   "2026-12-01"                       local midnight of the date
 *   "2026-12-01 10:00", "2026-12-01 10:00:05", "2026-12-01T10:00:05.25"
 *                                      that local time (seconds default to 0)
 *   "10:00", "10:00:05"                that time today
 *   any of the absolute forms with a weekday first ("Tue 2026-12-01"; it
 *   must be the date's) or a zone last: " UTC", "Z", "+01:00", "-0500", "+02"
 *   "@1764547200", "@1764547200.5"     seconds since the epoch
 * A local time in a DST gap moves on by the gap (mktime()); an ambiguous one
 * takes the zone's choice. Returns 0 and *ret_usec, or -EINVAL (not a time)
 * or -ERANGE (before 1970-01-01 or after 9999-12-31 UTC, a month, day, hour,
 * minute or second out of range) with *ret_reason (static text, may be NULL)
 * saying what is wrong in words.
 */
int parse_time(const char *s, uint64_t now_usec, uint64_t *ret_usec, const char **ret_reason);

/* Dates of history tables: "2026-12-01" and "2026-12-01 10:00" of a struct
 * tm (the caller's localtime_r() or gmtime_r()). Return buf. */
#define FORMAT_TIME_MAX 64
const char *format_day(char buf[static FORMAT_TIME_MAX], const struct tm *tm);
const char *format_minute(char buf[static FORMAT_TIME_MAX], const struct tm *tm);

/* A count in full with a comma every three digits: 0 "0", 999 "999", 1234
 * "1,234", 81200 "81,200", UINT64_MAX "18,446,744,073,709,551,615".
 * Returns buf. */
#define FORMAT_COUNT_MAX 32
const char *format_count(char buf[static FORMAT_COUNT_MAX], uint64_t n);

/* An amount of money in millionths (micros, as budgetctl reads the daemon's
 * floats: get_fixed() at 6 decimals), with a comma every three digits:
 * from a cent up rounded to the cent ("1.23", "1,234.57"), below a cent in
 * full without trailing zeros but with at least two decimals ("0.001234",
 * "0.00005"), 0 "0.00"; a negative amount (no daemon sends one) has its
 * '-' first. Returns buf. */
#define FORMAT_MONEY_MAX 40
const char *format_money(char buf[static FORMAT_MONEY_MAX], int64_t micros);

/* The reply of io.tokenbudget.admin.Estimate, as budgetctl read it. */
typedef struct FormatEstimate {
        const char *class_name; /* "class:review", as the daemon sent it */
        uint64_t uid, samples, tasks;
        uint64_t prompt_tokens;               /* each task's prompt; 0: not given */
        uint64_t predicted, predicted_output; /* one task: total and output */
        uint64_t expected, expected_output;   /* all tasks */
        bool has_interval;
        uint64_t low, high;          /* of the total of all tasks */
        uint64_t coverage_permille;  /* 900: the central 90% */
        uint64_t block_size, blocks; /* what calibrated it: 1 (single predictions) or 10, 100, 1000 */
        bool scaled;                 /* the project is larger than block_size: its spread as is */
        const char *no_interval;     /* without an interval: why (the daemon's words); NULL: not said */
        bool has_cost;
        const char *model, *currency; /* of the cost, or model alone with no_cost */
        int64_t cost_micros;          /* expected cost, in millionths of the currency */
        bool has_cost_interval;
        int64_t cost_low_micros, cost_high_micros;
        const char *no_cost; /* a model asked for and not priced: why (the daemon's words); else NULL */
} FormatEstimate;

/*
 * What budgetctl estimate prints, a line each:
 *   CLASS (uid UID), N samples
 *   one task[ with a P-token prompt]: T tokens (output O)[INTERVAL]
 *   N tasks: T tokens (output O)[INTERVAL]          (only when tasks > 1)
 *   cost: C[ CURRENCY][ (LOW .. HIGH)] at MODEL prices   (or: cost: NO_COST)
 * where INTERVAL, on the line of the project (tasks 1: the one task's), is
 * ", 90% interval LOW .. HIGH (from B blocks of S)" (S 1: "B single
 * predictions"; scaled: ", not narrowed for N tasks" inside the
 * parentheses), or "; no interval yet: NO_INTERVAL". Counts as
 * format_count(), money as format_money(). The daemon's strings are
 * cleaned as format_sanitize() does and what does not fit is cut. e.g.
 *   class:review (uid 1000), 1,234 samples
 *   one task: 812 tokens (output 412)
 *   100 tasks: 81,200 tokens (output 41,200), 90% interval 74,000 .. 90,100 (from 37 blocks of 100)
 *   cost: 1.23 USD (1.12 .. 1.37) at gpt-4o prices
 * Returns buf.
 */
#define FORMAT_ESTIMATE_MAX 4096
const char *format_estimate(char buf[static FORMAT_ESTIMATE_MAX], const FormatEstimate *e);
