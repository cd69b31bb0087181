/* SPDX-License-Identifier: MIT */
/*
 * Tests for client/budgetctl-format.c: each table row is an input and the
 * exact text wanted (or, for parse_duration(), the text and the value or
 * error wanted), at every unit boundary from 0 to UINT64_MAX; then
 * sweeps read the token and duration texts back and check that none shows
 * more than the value (a count shown is compared against a limit) and none
 * loses more than its precision; then the power factors and the power line of
 * status, and a power line too long for its buffer; the durability line of
 * status (working, memory only, degraded) and one too long for its buffer;
 * the counts, money and lines of budgetctl estimate, and its text too long
 * for its buffer. Failure messages name the row or the value.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "budgetctl-format.h"
#include "tb-check.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define SEC           UINT64_C(1000000)
#define MIN           (60 * SEC)
#define HOUR          (60 * MIN)
#define DAY           (24 * HOUR)

/* ck_assert_msg() for the sweeps' hundreds of thousands of checks: Check's
 * asserts report each passing one to the parent process, which makes a sweep
 * 10 times slower; this reports only a failure. */
#define CHECK(cond, ...)                                                                                    \
        do {                                                                                                \
                if (!(cond))                                                                                \
                        ck_abort_msg(__VA_ARGS__);                                                          \
        } while (0)

/* ---- token counts ---- */

typedef struct TokensRow {
        const char *name;
        uint64_t tokens;
        const char *want;
} TokensRow;

static const TokensRow tokens_rows[] = {
        {"zero", 0, "0"},
        {"one", 1, "1"},
        {"the largest exact", 999, "999"},
        {"the first k", 1000, "1k"},
        {"1001 is not 1.0k", 1001, "1k"},
        {"1099 is not rounded to 1.1k", 1099, "1k"},
        {"1100", 1100, "1.1k"},
        {"1234", 1234, "1.2k"},
        {"1999 is not 2k", 1999, "1.9k"},
        {"9999 is not 10k", 9999, "9.9k"},
        {"10000", 10000, "10k"},
        {"14100", 14100, "14.1k"},
        {"14199 is not 14.2k", 14199, "14.1k"},
        {"99999 is not 100k", 99999, "99.9k"},
        {"100000: whole units from 100 up", 100000, "100k"},
        {"100999 is not 101k", 100999, "100k"},
        {"123456", 123456, "123k"},
        {"999999 is not 1M", 999999, "999k"},
        {"the first M", 1000000, "1M"},
        {"1049999", 1049999, "1M"},
        {"1999999 is not 2M", 1999999, "1.9M"},
        {"2.5M", 2500000, "2.5M"},
        {"99999999 is not 100M", 99999999, "99.9M"},
        {"100M", 100000000, "100M"},
        {"999999999 is not 1G", 999999999, "999M"},
        {"the first G", UINT64_C(1000000000), "1G"},
        {"9999999999", UINT64_C(9999999999), "9.9G"},
        {"999999999999 is not 1T", UINT64_C(999999999999), "999G"},
        {"the first T", UINT64_C(1000000000000), "1T"},
        {"999999999999999 is not 1P", UINT64_C(999999999999999), "999T"},
        {"the first P", UINT64_C(1000000000000000), "1P"},
        {"999999999999999999 is not 1E", UINT64_C(999999999999999999), "999P"},
        {"the first E", UINT64_C(1000000000000000000), "1E"},
        {"9999999999999999999", UINT64_C(9999999999999999999), "9.9E"},
        {"10^19", UINT64_C(10000000000000000000), "10E"},
        {"18399999999999999999", UINT64_C(18399999999999999999), "18.3E"},
        {"UINT64_MAX is not 18.5E", UINT64_MAX, "18.4E"},
};

START_TEST(test_tokens_row) {
        const TokensRow *row = &tokens_rows[_i];
        char buf[FORMAT_TOKENS_MAX];

        ck_assert_msg(strcmp(format_tokens(buf, row->tokens), row->want) == 0,
                      "row '%s': format_tokens(%" PRIu64 ") = \"%s\", want \"%s\"", row->name, row->tokens,
                      buf, row->want);
}
END_TEST

/*
 * Reads a format_tokens() text back: *ret_shown is the value it stands for,
 * *ret_step what its last digit is worth. Fails the test on a text outside
 * the documented forms.
 */
static void tokens_parse(const char *text, uint64_t v, uint64_t *ret_shown, uint64_t *ret_step) {
        static const char units[] = "kMGTPE";
        uint64_t whole = 0, tenth = 0, scale = 1;
        const char *p = text, *u;
        bool decimal = false;

        CHECK(strlen(text) >= 1 && strlen(text) <= 5, "%" PRIu64 ": \"%s\" is not 1 to 5 characters", v,
              text);
        for (; *p >= '0' && *p <= '9'; p++)
                whole = whole * 10 + (uint64_t)(*p - '0');
        CHECK(p > text && (text[0] != '0' || p == text + 1), "%" PRIu64 ": \"%s\" has no whole part", v,
              text);
        if (*p == '.') {
                CHECK(p[1] >= '1' && p[1] <= '9', "%" PRIu64 ": \"%s\": the decimal is not 1-9", v, text);
                tenth = (uint64_t)(p[1] - '0');
                decimal = true;
                p += 2;
        }
        if (*p == '\0') {
                CHECK(!decimal && whole < 1000, "%" PRIu64 ": \"%s\" has no unit", v, text);
                *ret_shown = whole;
                *ret_step = 1;
                return;
        }
        u = strchr(units, *p);
        CHECK(u && *u && p[1] == '\0', "%" PRIu64 ": \"%s\" does not end in one SI unit", v, text);
        for (const char *q = units; q <= u; q++)
                scale *= 1000;
        /* The largest unit not above v: 1 to 999 of it; a decimal only below 100. */
        CHECK(whole >= 1 && whole < 1000 && (!decimal || whole < 100),
              "%" PRIu64 ": \"%s\" is not in the largest unit, or has a decimal from 100 up", v, text);
        *ret_shown = whole * scale + tenth * (scale / 10);
        *ret_step = whole < 100 ? scale / 10 : scale;
}

static void tokens_check(uint64_t v) {
        char buf[FORMAT_TOKENS_MAX];
        uint64_t shown, step;

        tokens_parse(format_tokens(buf, v), v, &shown, &step);
        CHECK(shown <= v, "%" PRIu64 " is shown as \"%s\", more than it is", v, buf);
        /* v - shown, not shown + step: that overflows near UINT64_MAX. */
        CHECK(v - shown < step, "%" PRIu64 " is shown as \"%s\", more than its last digit below it", v, buf);
}

/* Every value below 200k, then both sides of every power of ten and of every 10^k - 1. */
START_TEST(test_tokens_boundaries) {
        uint64_t p = 1;

        for (uint64_t v = 0; v < 200000; v++)
                tokens_check(v);
        for (int k = 0; k <= 19; k++) {
                for (uint64_t d = 0; d <= 2; d++) {
                        tokens_check(p + d);
                        if (p > d)
                                tokens_check(p - 1 - d);
                }
                if (k < 19)
                        p *= 10;
        }
        for (uint64_t d = 0; d < 1000; d++)
                tokens_check(UINT64_MAX - d);
}
END_TEST

/* Values spread over the whole range: growing by about 0.1% a step, some 45,000 of them. */
START_TEST(test_tokens_sweep) {
        for (uint64_t v = 1;; v += v / 1024 + 1) {
                tokens_check(v);
                if (v > UINT64_MAX - (v / 1024 + 1))
                        break;
        }
}
END_TEST

/* ---- durations ---- */

typedef struct DurationRow {
        const char *name;
        uint64_t usec;
        const char *want;
} DurationRow;

static const DurationRow duration_rows[] = {
        {"zero", 0, "0s"},
        {"just under a second", SEC - 1, "0s"},
        {"one second", SEC, "1s"},
        {"just under a minute", MIN - 1, "59s"},
        {"one minute", MIN, "1min 0s"},
        {"61 s", MIN + SEC, "1min 1s"},
        {"just under an hour", HOUR - 1, "59min 59s"},
        {"one hour", HOUR, "1h 0min"},
        {"an hour less a microsecond is not 1h", HOUR - 1, "59min 59s"},
        {"61 min", HOUR + MIN, "1h 1min"},
        {"an hour and 59.999999 s drops the seconds", HOUR + MIN - 1, "1h 0min"},
        {"just under a day", DAY - 1, "23h 59min"},
        {"one day", DAY, "1d 0h"},
        {"25 h", DAY + HOUR, "1d 1h"},
        {"a day and 59 min drops the minutes", DAY + HOUR - 1, "1d 0h"},
        {"days stay the largest unit", 400 * DAY + 5 * HOUR, "400d 5h"},
        {"UINT64_MAX", UINT64_MAX, "213503982d 8h"},
};

START_TEST(test_duration_row) {
        const DurationRow *row = &duration_rows[_i];
        char buf[FORMAT_DURATION_MAX];

        ck_assert_msg(strcmp(format_duration(buf, row->usec), row->want) == 0,
                      "row '%s': format_duration(%" PRIu64 ") = \"%s\", want \"%s\"", row->name, row->usec,
                      buf, row->want);
}
END_TEST

/* Reads a format_duration() text back into microseconds; *ret_step is what its last unit is worth. */
static uint64_t duration_parse(const char *text, uint64_t usec, uint64_t *ret_step) {
        uint64_t a = 0, b = 0;
        char ua[4] = "", ub[4] = "";
        int n = -1;

        if (sscanf(text, "%" SCNu64 "%3[a-z] %" SCNu64 "%3[a-z]%n", &a, ua, &b, ub, &n) == 4 &&
            (size_t)n == strlen(text)) {
                if (strcmp(ua, "min") == 0 && strcmp(ub, "s") == 0 && a < 60 && b < 60) {
                        *ret_step = SEC;
                        return a * MIN + b * SEC;
                }
                if (strcmp(ua, "h") == 0 && strcmp(ub, "min") == 0 && a < 24 && b < 60) {
                        *ret_step = MIN;
                        return a * HOUR + b * MIN;
                }
                if (strcmp(ua, "d") == 0 && strcmp(ub, "h") == 0 && b < 24) {
                        *ret_step = HOUR;
                        return a * DAY + b * HOUR;
                }
        } else if (sscanf(text, "%" SCNu64 "s%n", &a, &n) == 1 && (size_t)n == strlen(text) && a < 60) {
                *ret_step = SEC;
                return a * SEC;
        }
        ck_abort_msg("%" PRIu64 " us is shown as \"%s\", not one of the documented forms", usec, text);
        return 0;
}

static void duration_check(uint64_t usec) {
        char buf[FORMAT_DURATION_MAX];
        uint64_t shown, step;

        shown = duration_parse(format_duration(buf, usec), usec, &step);
        CHECK(shown <= usec, "%" PRIu64 " us is shown as \"%s\", longer than it is", usec, buf);
        CHECK(usec - shown < step, "%" PRIu64 " us is shown as \"%s\", short by more than its last unit",
              usec, buf);
}

/* Both sides of every unit boundary, then the whole range. */
START_TEST(test_duration_sweep) {
        static const uint64_t boundaries[] = {SEC, MIN, HOUR, DAY};

        for (size_t i = 0; i < ELEMENTSOF(boundaries); i++)
                for (uint64_t k = 1; k <= 3; k++)
                        for (uint64_t d = 0; d <= 2; d++) {
                                duration_check(k * boundaries[i] - d);
                                duration_check(k * boundaries[i] + d);
                        }
        for (uint64_t usec = 0;; usec += usec / 512 + 1) {
                duration_check(usec);
                if (usec > UINT64_MAX - (usec / 512 + 1))
                        break;
        }
        duration_check(UINT64_MAX);
}
END_TEST

/* ---- ratios ---- */

typedef struct RatioRow {
        const char *name;
        uint64_t used;
        bool has_limit;
        uint64_t limit;
        const char *want;
} RatioRow;

static const RatioRow ratio_rows[] = {
        {"nothing used, no limit", 0, false, 0, "0/-"},
        {"a limit of 0", 0, true, 0, "0/0"},
        {"no limit ignores the limit value", 1, false, 12345, "1/-"},
        {"both in the same unit", 14199, true, 500000, "14.1k/500k"},
        {"different units", 14199, true, 2000000, "14.1k/2M"},
        {"exact against k", 999, true, 1000, "999/1k"},
        {"used above the limit", 2500000, true, 1999999, "2.5M/1.9M"},
        {"the longest", UINT64_MAX, true, UINT64_MAX, "18.4E/18.4E"},
};

START_TEST(test_ratio_row) {
        const RatioRow *row = &ratio_rows[_i];
        char buf[FORMAT_RATIO_MAX];

        ck_assert_msg(strcmp(format_ratio(buf, row->used, row->has_limit, row->limit), row->want) == 0,
                      "row '%s': format_ratio(%" PRIu64 ", %s, %" PRIu64 ") = \"%s\", want \"%s\"",
                      row->name, row->used, row->has_limit ? "true" : "false", row->limit, buf, row->want);
}
END_TEST

/* ---- strings ---- */

typedef struct StringRow {
        const char *name;
        const char *in;
        const char *want;
} StringRow;

static const StringRow sanitize_rows[] = {
        {"empty", "", ""},
        {"plain", "process:4242", "process:4242"},
        {"a newline", "a\nb", "a?b"},
        {"an escape sequence", "\x1b[31mred", "?[31mred"},
        {"a tab and a carriage return", "\ta\r", "?a?"},
        {"the first and last C0 controls", "\x01x\x1f", "?x?"},
        {"DEL", "x\x7f", "x?"},
        {"a space stays", "a b", "a b"},
        {"UTF-8 stays", "caf\xc3\xa9 \xe2\x82\xac", "caf\xc3\xa9 \xe2\x82\xac"},
        {"a C1 CSI (U+009B)",
         "a\xc2\x9b"
         "31mb",
         "a?31mb"},
        {"the first and last C1 controls", "\xc2\x80x\xc2\x9f", "?x?"},
        {"U+00A0 stays",
         "a\xc2\xa0"
         "b",
         "a\xc2\xa0"
         "b"},
        {"a lone continuation byte",
         "a\x9b"
         "b",
         "a?b"},
        {"a cut sequence", "a\xe2\x82", "a??"},
        {"an overlong form", "\xc0\xaf", "??"},
};

START_TEST(test_sanitize_row) {
        const StringRow *row = &sanitize_rows[_i];
        char buf[64];

        snprintf(buf, sizeof(buf), "%s", row->in);
        ck_assert_msg(format_sanitize(buf) == buf && strcmp(buf, row->want) == 0,
                      "row '%s': format_sanitize() gave \"%s\", want \"%s\"", row->name, buf, row->want);
}
END_TEST

static const StringRow upper_rows[] = {
        {"empty", "", ""},
        {"a span", "minute", "MINUTE"},
        {"already upper", "DAY", "DAY"},
        {"digits and punctuation stay", "in-flight 2", "IN-FLIGHT 2"},
        {"the letters at the ends", "az", "AZ"},
        {"UTF-8 stays", "\xc3\xa9t\xc3\xa9", "\xc3\xa9T\xc3\xa9"},
};

START_TEST(test_upper_row) {
        const StringRow *row = &upper_rows[_i];
        char buf[64];

        snprintf(buf, sizeof(buf), "%s", row->in);
        ck_assert_msg(format_upper(buf) == buf && strcmp(buf, row->want) == 0,
                      "row '%s': format_upper() gave \"%s\", want \"%s\"", row->name, buf, row->want);
}
END_TEST

/* ---- waits, percentages, durations given ---- */

static const DurationRow wait_rows[] = {
        {"zero", 0, "0ms"},
        {"below a millisecond", 999, "0ms"},
        {"one millisecond", 1000, "1ms"},
        {"999.999 ms is not 1s", SEC - 1, "999ms"},
        {"one second", SEC, "1s"},
        {"1.05 s is not 1.1s", SEC + 50000, "1s"},
        {"1.5 s", SEC + 500000, "1.5s"},
        {"1.999 s is not 2s", 2 * SEC - 1, "1.9s"},
        {"42 s", 42 * SEC, "42s"},
        {"59.9 s", MIN - 100000, "59.9s"},
        {"a minute: format_duration()", MIN, "1min 0s"},
        {"a minute and a half", MIN + 30 * SEC + 500000, "1min 30s"},
        {"two hours", 2 * HOUR, "2h 0min"},
        {"UINT64_MAX", UINT64_MAX, "213503982d 8h"},
};

START_TEST(test_wait_row) {
        const DurationRow *row = &wait_rows[_i];
        char buf[FORMAT_DURATION_MAX];

        ck_assert_msg(strcmp(format_wait(buf, row->usec), row->want) == 0,
                      "row '%s': format_wait(%" PRIu64 ") = \"%s\", want \"%s\"", row->name, row->usec, buf,
                      row->want);
}
END_TEST

typedef struct PercentRow {
        const char *name;
        uint64_t permille;
        const char *want;
} PercentRow;

static const PercentRow percent_rows[] = {
        {"zero", 0, "0%"},
        {"9 permille is not 1%", 9, "0%"},
        {"a percent", 10, "1%"},
        {"85.5% is not 86%", 855, "85%"},
        {"99.9% is not 100%", 999, "99%"},
        {"the limit", 1000, "100%"},
        {"past the limit", 1500, "150%"},
        {"UINT32_MAX", UINT32_MAX, "429496729%"},
        {"UINT64_MAX", UINT64_MAX, "1844674407370955161%"},
};

START_TEST(test_percent_row) {
        const PercentRow *row = &percent_rows[_i];
        char buf[FORMAT_PERCENT_MAX];

        ck_assert_msg(strcmp(format_percent(buf, row->permille), row->want) == 0,
                      "row '%s': format_percent(%" PRIu64 ") = \"%s\", want \"%s\"", row->name,
                      row->permille, buf, row->want);
}
END_TEST

typedef struct ParseDurationRow {
        const char *name;
        const char *in;
        uint64_t max_usec;
        int want_r;
        uint64_t want_usec;
} ParseDurationRow;

static const ParseDurationRow parse_duration_rows[] = {
        {"plain seconds", "2", DAY, 0, 2 * SEC},
        {"zero", "0", DAY, 0, 0},
        {"zero with a unit", "0ms", DAY, 0, 0},
        {"seconds", "2s", DAY, 0, 2 * SEC},
        {"milliseconds", "500ms", DAY, 0, 500000},
        {"microseconds", "250us", DAY, 0, 250},
        {"a minute", "1min", DAY, 0, MIN},
        {"an hour", "1h", DAY, 0, HOUR},
        {"a fraction of a second", "1.5s", DAY, 0, 1500000},
        {"a plain fraction", "0.25", DAY, 0, 250000},
        {"a fraction of an hour", "0.25h", DAY, 0, 15 * MIN},
        {"six fraction digits", "1.000001s", DAY, 0, 1000001},
        {"a fraction of a microsecond is truncated", "1.5us", DAY, 0, 1},
        {"exactly the maximum", "24h", DAY, 0, DAY},
        {"above the maximum", "86401", DAY, -ERANGE, 0},
        {"a microsecond above", "86400.000001", DAY, -ERANGE, 0},
        {"overflow of the number", "99999999999999999999999", UINT64_MAX, -ERANGE, 0},
        {"overflow with the unit", "18446744073710h", UINT64_MAX, -ERANGE, 0},
        {"empty", "", DAY, -EINVAL, 0},
        {"no number", "s", DAY, -EINVAL, 0},
        {"a sign", "-1", DAY, -EINVAL, 0},
        {"a plus", "+1", DAY, -EINVAL, 0},
        {"a space", "1 s", DAY, -EINVAL, 0},
        {"an unknown unit", "1d", DAY, -EINVAL, 0},
        {"m is not a unit", "1m", DAY, -EINVAL, 0},
        {"a trailing dot", "1.", DAY, -EINVAL, 0},
        {"a leading dot", ".5", DAY, -EINVAL, 0},
        {"seven fraction digits", "1.0000001", DAY, -EINVAL, 0},
        {"two units", "1min30s", DAY, -EINVAL, 0},
        {"upper case", "1S", DAY, -EINVAL, 0},
};

START_TEST(test_parse_duration_row) {
        const ParseDurationRow *row = &parse_duration_rows[_i];
        uint64_t usec = UINT64_C(12345);
        int r = parse_duration(row->in, row->max_usec, &usec);

        ck_assert_msg(r == row->want_r, "row '%s': parse_duration(\"%s\") = %d, want %d", row->name, row->in,
                      r, row->want_r);
        if (r == 0)
                ck_assert_msg(usec == row->want_usec,
                              "row '%s': parse_duration(\"%s\") gave %" PRIu64 " us, want %" PRIu64,
                              row->name, row->in, usec, row->want_usec);
        else
                ck_assert_msg(usec == UINT64_C(12345), "row '%s': a failed parse_duration() wrote *ret_usec",
                              row->name);
}
END_TEST

/* ---- estimator errors (budgetctl classes) ---- */

typedef struct ErrorRow {
        const char *name;
        int64_t permille;
        bool sign;
        const char *want;
} ErrorRow;

static const ErrorRow error_rows[] = {
        {"none", 0, false, "0.0%"},
        {"a tenth of a percent", 1, false, "0.1%"},
        {"five percent", 52, false, "5.2%"},
        {"a whole percent keeps its decimal", 10, false, "1.0%"},
        {"far off", 12345, false, "1234.5%"},
        {"a bias of none has no sign", 0, true, "0.0%"},
        {"over", 52, true, "+5.2%"},
        {"under", -52, true, "-5.2%"},
        {"under without sign still says so", -7, false, "-0.7%"},
        {"INT64_MIN", INT64_MIN, true, "-922337203685477580.8%"},
        {"INT64_MAX", INT64_MAX, true, "+922337203685477580.7%"},
};

START_TEST(test_error_row) {
        const ErrorRow *row = &error_rows[_i];
        char buf[FORMAT_ERROR_MAX];

        ck_assert_msg(strcmp(format_error(buf, row->permille, row->sign), row->want) == 0,
                      "row '%s': format_error(%" PRId64 ", %d) = \"%s\", want \"%s\"", row->name,
                      row->permille, row->sign, buf, row->want);
}
END_TEST

/* ---- power factors and the power line ---- */

typedef struct FactorRow {
        const char *name;
        uint64_t permille;
        const char *want;
} FactorRow;

static const FactorRow factor_rows[] = {
        {"paused", 0, "0"},
        {"x1", 1000, "1"},
        {"a half", 500, "0.5"},
        {"a quarter", 250, "0.25"},
        {"an eighth: three decimals", 125, "0.125"},
        {"the smallest configurable", 10, "0.01"},
        {"a permille", 1, "0.001"},
        {"0.999 is not 1", 999, "0.999"},
        {"above x1", 1500, "1.5"},
        {"x2", 2000, "2"},
        {"UINT64_MAX", UINT64_MAX, "18446744073709551.615"},
};

START_TEST(test_factor_row) {
        const FactorRow *row = &factor_rows[_i];
        char buf[FORMAT_FACTOR_MAX];

        ck_assert_msg(strcmp(format_factor(buf, row->permille), row->want) == 0,
                      "row '%s': format_factor(%" PRIu64 ") = \"%s\", want \"%s\"", row->name, row->permille,
                      buf, row->want);
}
END_TEST

#define U FORMAT_POWER_UNKNOWN
/* Local times: TM(2025, 3, 14, 10, 2, 11) is 2025-03-14 10:02:11. */
#define TM(y, mo, d, h, mi, s)                                                                              \
        (&(const struct tm){.tm_year = (y)-1900,                                                            \
                            .tm_mon = (mo)-1,                                                               \
                            .tm_mday = (d),                                                                 \
                            .tm_hour = (h),                                                                 \
                            .tm_min = (mi),                                                                 \
                            .tm_sec = (s)})
#define NOW TM(2025, 3, 14, 12, 0, 0)

typedef struct PowerRow {
        const char *name;
        FormatPower in;
        const char *want;
} PowerRow;

static const PowerRow power_rows[] = {
        {"ac with nothing known (a machine without sensors)",
         {"ac", true, U, U, NULL, U, TM(2025, 3, 14, 9, 0, 0), NOW, {1000, 1000, 1000}},
         "ac (on AC)"},
        {"the battery example",
         {"battery", false, 430, 615, "x86_pkg_temp", 0, TM(2025, 3, 14, 10, 2, 11), NOW, {1000, 1000, 500}},
         "battery (on battery, 43%, 61.5 \u00b0C x86_pkg_temp, memory pressure 0.00%) since 10:02:11; "
         "background x0.5"},
        {"ac, charged, cool: no since, no factors",
         {"ac", true, 1000, 452, "acpitz", 12, TM(2025, 3, 14, 9, 0, 0), NOW, {1000, 1000, 1000}},
         "ac (on AC, 100%, 45.2 \u00b0C acpitz, memory pressure 0.12%)"},
        {"low battery: truncated, not rounded up past the threshold",
         {"low-battery", false, 149, U, NULL, U, TM(2025, 3, 14, 11, 59, 59), NOW, {1000, 500, 0}},
         "low-battery (on battery, 14%) since 11:59:59; normal x0.5, background paused"},
        {"43.9% is not 44%",
         {"battery", false, 439, U, NULL, U, NULL, NOW, {1000, 1000, 500}},
         "battery (on battery, 43%); background x0.5"},
        {"a charge below zero shows 0%",
         {"battery", false, -5, U, NULL, U, NULL, NOW, {1000, 1000, 1000}},
         "battery (on battery, 0%)"},
        {"critical: everything but interactive paused",
         {"critical",
          true,
          U,
          962,
          "coretemp/Package id 0",
          U,
          TM(2025, 3, 14, 11, 30, 0),
          NOW,
          {1000, 0, 0}},
         "critical (on AC, 96.2 \u00b0C coretemp/Package id 0) since 11:30:00; normal paused, "
         "background paused"},
        {"hot on AC with several factors",
         {"hot", true, U, 871, "Tctl", U, TM(2025, 3, 14, 0, 0, 0), NOW, {750, 500, 0}},
         "hot (on AC, 87.1 \u00b0C Tctl) since 00:00:00; interactive x0.75, normal x0.5, background paused"},
        {"memory pressure",
         {"memory-pressure", true, U, U, NULL, 2550, TM(2025, 3, 14, 10, 0, 5), NOW, {1000, 500, 0}},
         "memory-pressure (on AC, memory pressure 25.50%) since 10:00:05; normal x0.5, background paused"},
        {"since another day: with its date",
         {"battery", false, 800, U, NULL, U, TM(2025, 3, 13, 23, 59, 59), NOW, {1000, 1000, 500}},
         "battery (on battery, 80%) since 2025-03-13 23:59:59; background x0.5"},
        {"since the same time of another month",
         {"battery", false, 800, U, NULL, U, TM(2025, 2, 14, 12, 0, 0), NOW, {1000, 1000, 1000}},
         "battery (on battery, 80%) since 2025-02-14 12:00:00"},
        {"since without now: with its date",
         {"battery", false, 800, U, NULL, U, TM(2025, 3, 14, 8, 5, 0), NULL, {1000, 1000, 1000}},
         "battery (on battery, 80%) since 2025-03-14 08:05:00"},
        {"a temperature below zero",
         {"ac", true, U, -5, "acpitz", U, NULL, NOW, {1000, 1000, 1000}},
         "ac (on AC, -0.5 \u00b0C acpitz)"},
        {"-12.3 degrees",
         {"ac", true, U, -123, NULL, U, NULL, NOW, {1000, 1000, 1000}},
         "ac (on AC, -12.3 \u00b0C)"},
        {"a temperature without its sensor",
         {"ac", true, U, 600, NULL, U, NULL, NOW, {1000, 1000, 1000}},
         "ac (on AC, 60.0 \u00b0C)"},
        {"an empty sensor name",
         {"ac", true, U, 600, "", U, NULL, NOW, {1000, 1000, 1000}},
         "ac (on AC, 60.0 \u00b0C)"},
        {"factors not sent",
         {"battery", false, 500, U, NULL, U, NULL, NOW, {U, U, U}},
         "battery (on battery, 50%)"},
        {"a state of a newer daemon",
         {"solar-flare", true, U, U, NULL, U, TM(2025, 3, 14, 10, 2, 11), NOW, {1000, 1000, 100}},
         "solar-flare (on AC) since 10:02:11; background x0.1"},
        {"no state", {NULL, true, U, U, NULL, U, NULL, NOW, {1000, 1000, 1000}}, "? (on AC)"},
        {"control characters in the daemon's strings",
         {"hot\x1b[2J", true, U, 900, "evil\n\x9b", U, NULL, NOW, {1000, 1000, 1000}},
         "hot?[2J (on AC, 90.0 \u00b0C evil?\?)"},
};

START_TEST(test_power_row) {
        const PowerRow *row = &power_rows[_i];
        char buf[FORMAT_POWER_MAX];

        ck_assert_msg(format_power(buf, &row->in) == buf && strcmp(buf, row->want) == 0,
                      "row '%s': format_power() = \"%s\", want \"%s\"", row->name, buf, row->want);
}
END_TEST

/* A sensor name longer than the line: cut, NUL-terminated, valid UTF-8 (a cut
 * sequence becomes '?'). */
START_TEST(test_power_long) {
        char sensor[2 * FORMAT_POWER_MAX], buf[FORMAT_POWER_MAX];

        /* U+00E9 (2 bytes in UTF-8) over and over, so the cut can fall inside one. */
        for (size_t i = 0; i + 2 < sizeof(sensor); i += 2)
                memcpy(sensor + i, "\xc3\xa9", 2);
        sensor[sizeof(sensor) - 2] = '\0';
        for (size_t state_len = 1; state_len <= 2; state_len++) {
                FormatPower p = {state_len == 1 ? "h" : "hh", true, U, 900, sensor, U, NULL, NOW,
                                 {1000, 1000, 1000}};
                size_t n;

                format_power(buf, &p);
                n = strlen(buf);
                ck_assert_msg(n == FORMAT_POWER_MAX - 1, "state of %zu: %zu bytes, want %d", state_len, n,
                              FORMAT_POWER_MAX - 1);
                ck_assert_msg(strncmp(buf, p.state, state_len) == 0 && strstr(buf, "90.0 \u00b0C \u00e9"),
                              "state of %zu: \"%.40s\"", state_len, buf);
                for (size_t i = 0; i < n; i++)
                        ck_assert_msg((unsigned char)buf[i] >= 0x20, "state of %zu: byte %zu is 0x%02x",
                                      state_len, i, (unsigned char)buf[i]);
        }
}
END_TEST

#undef U

/* ---- the durability line ---- */

typedef struct DurabilityRow {
        const char *name;
        FormatDurability in;
        const char *want;
} DurabilityRow;

#define DB "/var/lib/tokenbudget/tokenbudget.db"
static const DurabilityRow durability_rows[] = {
        {"working, sync normal", {DB, "normal", false, NULL, 0, 0, 1234}, DB " (sync normal), 1234 commits"},
        {"working, sync full", {DB, "full", false, NULL, 0, 0, 7}, DB " (sync full), 7 commits"},
        {"one commit", {DB, "normal", false, NULL, 0, 0, 1}, DB " (sync normal), 1 commit"},
        {"no commit yet", {DB, "normal", false, NULL, 0, 0, 0}, DB " (sync normal), 0 commits"},
        {"the most commits",
         {DB, "normal", false, NULL, 0, 0, UINT64_MAX},
         DB " (sync normal), 18446744073709551615 commits"},
        /* Pending writes are those of the turn the reply left in: not worth a word while commits work. */
        {"pending while working", {DB, "normal", false, NULL, 12, 0, 5}, DB " (sync normal), 5 commits"},
        {"lost writes after a recovery",
         {DB, "normal", false, NULL, 0, 3, 90},
         DB " (sync normal), 90 commits, 3 writes lost since the start"},
        {"one lost write",
         {DB, "full", false, NULL, 0, 1, 90},
         DB " (sync full), 90 commits, 1 write lost since the start"},
        {"sync not said", {DB, NULL, false, NULL, 0, 0, 2}, DB ", 2 commits"},
        {"memory only", {NULL, "none", false, NULL, 0, 0, 0}, "memory only (nothing survives a restart)"},
        {"degraded",
         {DB, "normal", true, DB ": committing failed: database or disk is full (SQLite error 13)", 125, 0,
          10},
         "DEGRADED (125 writes pending, 0 lost; enforcing from memory): " DB
         ": committing failed: database or disk is full (SQLite error 13)"},
        {"degraded, one pending, some lost",
         {DB, "normal", true, "disk I/O error", 1, 5, 17},
         "DEGRADED (1 write pending, 5 lost; enforcing from memory): disk I/O error"},
        {"degraded without an error",
         {DB, "full", true, NULL, 0, 0, 17},
         "DEGRADED (0 writes pending, 0 lost; enforcing from memory): " DB},
        {"degraded with neither error nor database",
         {NULL, NULL, true, NULL, 2, 0, 0},
         "DEGRADED (2 writes pending, 0 lost; enforcing from memory): commits fail"},
        {"control characters in the daemon's strings",
         {"/tmp/x\x1b[2J.db", "nor\nmal", false, NULL, 0, 0, 3},
         "/tmp/x?[2J.db (sync nor?mal), 3 commits"},
        {"control characters in the error",
         {DB, "normal", true, "bad\x9b\x07", 0, 0, 3},
         "DEGRADED (0 writes pending, 0 lost; enforcing from memory): bad?\?"},
};
#undef DB

START_TEST(test_durability_row) {
        const DurabilityRow *row = &durability_rows[_i];
        char buf[FORMAT_DURABILITY_MAX];

        ck_assert_msg(format_durability(buf, &row->in) == buf && strcmp(buf, row->want) == 0,
                      "row '%s': format_durability() = \"%s\", want \"%s\"", row->name, buf, row->want);
}
END_TEST

/* An error longer than the line: cut, NUL-terminated, no control bytes. */
START_TEST(test_durability_long) {
        char error[2 * FORMAT_DURABILITY_MAX], buf[FORMAT_DURABILITY_MAX];
        FormatDurability d = {"/x.db", "normal", true, error, 0, 0, 0};
        size_t n;

        for (size_t i = 0; i + 2 < sizeof(error); i += 2)
                memcpy(error + i, "\xc3\xa9", 2);
        error[sizeof(error) - 2] = '\0';
        format_durability(buf, &d);
        n = strlen(buf);
        ck_assert_msg(n == FORMAT_DURABILITY_MAX - 1, "%zu bytes, want %d", n, FORMAT_DURABILITY_MAX - 1);
        ck_assert_msg(strstr(buf, "enforcing from memory): \xc3\xa9"), "\"%.80s\"", buf);
        for (size_t i = 0; i < n; i++)
                ck_assert_msg((unsigned char)buf[i] >= 0x20, "byte %zu is 0x%02x", i, (unsigned char)buf[i]);
}
END_TEST

/* ---- points in time ---- */

/* POSIX TZ rules, so the rows need no tzdata: Berlin (CET, UTC+1; CEST,
 * UTC+2, from the last Sunday of March to the last of October), New York
 * (EST, UTC-5; EDT, UTC-4) and UTC. */
#define TZ_BERLIN "CET-1CEST,M3.5.0,M10.5.0/3"
#define TZ_NY     "EST5EDT,M3.2.0,M11.1.0"
#define TZ_UTC    "UTC0"
/* Now in every row: 2026-12-02 07:50:00 UTC (08:50 in Berlin, 02:50 in New York). */
#define TIME_NOW (UINT64_C(1796197800) * SEC)
/* Seconds since the epoch of some UTC times the rows name. */
#define T_1201_2300 UINT64_C(1796166000) /* 2026-12-01 23:00 UTC */
#define T_1130_2300 UINT64_C(1796079600)
#define T_1202_2300 UINT64_C(1796252400)
#define T_1202_0500 UINT64_C(1796187600)
#define T_1201_0500 UINT64_C(1796101200)
#define T_1201_0900 UINT64_C(1796115600)
#define T_0701_0800 UINT64_C(1782892800) /* 2026-07-01 08:00 UTC */
#define T_1201_1500 UINT64_C(1796137200)
#define T_1202_0900 UINT64_C(1796202000)
#define T_1201_1000 UINT64_C(1796119200)
#define T_1201_0430 UINT64_C(1796099400)

typedef struct ParseTimeRow {
        const char *name;
        const char *tz;
        const char *in;
        int want_r;
        uint64_t want_usec; /* when want_r is 0 */
        const char *reason; /* a part of the reason, when want_r is not 0 */
} ParseTimeRow;

static const ParseTimeRow parse_time_rows[] = {
        {"now", TZ_BERLIN, "now", 0, TIME_NOW, NULL},
        {"today: local midnight", TZ_BERLIN, "today", 0, T_1201_2300 *SEC, NULL},
        {"yesterday", TZ_BERLIN, "yesterday", 0, T_1130_2300 *SEC, NULL},
        {"tomorrow", TZ_BERLIN, "tomorrow", 0, T_1202_2300 *SEC, NULL},
        {"today west of UTC", TZ_NY, "today", 0, T_1202_0500 *SEC, NULL},
        {"yesterday west of UTC", TZ_NY, "yesterday", 0, T_1201_0500 *SEC, NULL},
        {"today in UTC", TZ_UTC, "today", 0, (T_1202_0500 - 5 * 3600) * SEC, NULL},
        {"-1h", TZ_BERLIN, "-1h", 0, TIME_NOW - HOUR, NULL},
        {"-30min", TZ_BERLIN, "-30min", 0, TIME_NOW - 30 * MIN, NULL},
        {"-2d", TZ_BERLIN, "-2d", 0, TIME_NOW - 2 * DAY, NULL},
        {"+1h", TZ_BERLIN, "+1h", 0, TIME_NOW + HOUR, NULL},
        {"parts with a space", TZ_BERLIN, "-1h 30min", 0, TIME_NOW - 90 * MIN, NULL},
        {"parts without", TZ_BERLIN, "-1h30min", 0, TIME_NOW - 90 * MIN, NULL},
        {"a fraction", TZ_BERLIN, "-1.5h", 0, TIME_NOW - 90 * MIN, NULL},
        {"no unit: seconds", TZ_BERLIN, "-90", 0, TIME_NOW - 90 * SEC, NULL},
        {"ms", TZ_BERLIN, "-500ms", 0, TIME_NOW - 500000, NULL},
        {"us", TZ_BERLIN, "-7us", 0, TIME_NOW - 7, NULL},
        {"m is minutes", TZ_BERLIN, "-5m", 0, TIME_NOW - 5 * MIN, NULL},
        {"a week", TZ_BERLIN, "-1w", 0, TIME_NOW - 7 * DAY, NULL},
        {"M is a month of 30.44 days", TZ_BERLIN, "-1M", 0, TIME_NOW - UINT64_C(2629800) * SEC, NULL},
        {"y is 365.25 days", TZ_BERLIN, "-1y", 0, TIME_NOW - UINT64_C(31557600) * SEC, NULL},
        {"long names", TZ_BERLIN, "-2 hours 1 minute", 0, TIME_NOW - 121 * MIN, NULL},
        {"ago", TZ_BERLIN, "2h ago", 0, TIME_NOW - 2 * HOUR, NULL},
        {"left", TZ_BERLIN, "5min left", 0, TIME_NOW + 5 * MIN, NULL},
        {"a date: local midnight", TZ_BERLIN, "2026-12-01", 0, T_1130_2300 *SEC, NULL},
        {"date and minutes", TZ_BERLIN, "2026-12-01 10:00", 0, T_1201_0900 *SEC, NULL},
        {"ISO with T", TZ_BERLIN, "2026-12-01T10:00:00", 0, T_1201_0900 *SEC, NULL},
        {"fraction of a second", TZ_BERLIN, "2026-12-01 10:00:05.25", 0, T_1201_0900 *SEC + 5250000, NULL},
        {"summer time", TZ_BERLIN, "2026-07-01 10:00", 0, T_0701_0800 *SEC, NULL},
        {"west of UTC", TZ_NY, "2026-12-01 10:00", 0, T_1201_1500 *SEC, NULL},
        {"one-digit month and day", TZ_UTC, "2026-12-1 10:00", 0, T_1201_1000 *SEC, NULL},
        {"a time alone is today's", TZ_BERLIN, "10:00", 0, T_1202_0900 *SEC, NULL},
        {"with seconds", TZ_BERLIN, "10:00:30", 0, T_1202_0900 *SEC + 30 * SEC, NULL},
        {"UTC", TZ_BERLIN, "2026-12-01 10:00 UTC", 0, T_1201_1000 *SEC, NULL},
        {"Z", TZ_BERLIN, "2026-12-01T10:00:00Z", 0, T_1201_1000 *SEC, NULL},
        {"an offset", TZ_BERLIN, "2026-12-01T10:00:00+05:30", 0, T_1201_0430 *SEC, NULL},
        {"a negative offset", TZ_BERLIN, "2026-12-01 10:00 -0500", 0, T_1201_1500 *SEC, NULL},
        {"the weekday of the date", TZ_UTC, "Tue 2026-12-01 10:00", 0, T_1201_1000 *SEC, NULL},
        {"a long weekday", TZ_UTC, "tuesday 2026-12-01 10:00", 0, T_1201_1000 *SEC, NULL},
        {"a leap day", TZ_UTC, "2028-02-29", 0, UINT64_C(1835395200) * SEC, NULL},
        {"@EPOCH", TZ_BERLIN, "@1764547200", 0, UINT64_C(1764547200) * SEC, NULL},
        {"@EPOCH with a fraction", TZ_BERLIN, "@1764547200.5", 0, UINT64_C(1764547200) * SEC + 500000, NULL},
        {"@0", TZ_BERLIN, "@0", 0, 0, NULL},
        {"the epoch in UTC", TZ_UTC, "1970-01-01", 0, 0, NULL},

        {"empty", TZ_BERLIN, "", -EINVAL, 0, "empty"},
        {"a word", TZ_BERLIN, "soon", -EINVAL, 0, "expected a time"},
        {"a span without a sign", TZ_BERLIN, "1h", -EINVAL, 0, "needs a sign"},
        {"an unknown unit", TZ_BERLIN, "-1x", -EINVAL, 0, "unknown time unit"},
        {"a sign alone", TZ_BERLIN, "-", -EINVAL, 0, "time span"},
        {"ago alone", TZ_BERLIN, "ago", -EINVAL, 0, "expected a time"},
        {"month 13", TZ_BERLIN, "2026-13-01", -ERANGE, 0, "month"},
        {"no 29th of February", TZ_BERLIN, "2026-02-29", -ERANGE, 0, "day"},
        {"hour 24", TZ_BERLIN, "2026-12-01 24:00", -ERANGE, 0, "hour"},
        {"minute 60", TZ_BERLIN, "2026-12-01 10:60", -ERANGE, 0, "minutes"},
        {"an hour alone", TZ_BERLIN, "2026-12-01 10", -EINVAL, 0, "HH:MM"},
        {"text after", TZ_BERLIN, "2026-12-01 10:00 soon", -EINVAL, 0, "after the time"},
        {"the wrong weekday", TZ_BERLIN, "Mon 2026-12-01", -EINVAL, 0, "weekday"},
        {"before 1970", TZ_BERLIN, "1969-12-31", -ERANGE, 0, "year"},
        {"local midnight of 1970 in Berlin is before the epoch", TZ_BERLIN, "1970-01-01", -ERANGE, 0,
         "out of range"},
        {"a century ago", TZ_BERLIN, "-100y", -ERANGE, 0, "before 1970"},
        {"past 9999", TZ_BERLIN, "+10000y", -ERANGE, 0, "after 9999"},
        {"a five-digit year", TZ_BERLIN, "10000-01-01", -EINVAL, 0, ""},
        {"a negative epoch", TZ_BERLIN, "@-5", -EINVAL, 0, "after @"},
        {"text after the epoch", TZ_BERLIN, "@1x", -EINVAL, 0, "after the seconds"},
        {"an epoch past 9999", TZ_BERLIN, "@999999999999999", -ERANGE, 0, "out of range"},
        {"an offset of 25 hours", TZ_BERLIN, "2026-12-01 10:00 +25:00", -EINVAL, 0, "offset"},
        {"a huge span", TZ_BERLIN, "-99999999999999999999h", -ERANGE, 0, "too long"},
};

START_TEST(test_parse_time_row) {
        const ParseTimeRow *row = &parse_time_rows[_i];
        const char *reason = NULL;
        uint64_t usec = UINT64_C(12345);
        int r;

        ck_assert_int_eq(setenv("TZ", row->tz, 1), 0);
        tzset();
        r = parse_time(row->in, TIME_NOW, &usec, &reason);
        ck_assert_msg(r == row->want_r, "row '%s': parse_time(\"%s\") = %d (%s), want %d", row->name,
                      row->in, r, reason ?: "no reason", row->want_r);
        if (r == 0)
                ck_assert_msg(usec == row->want_usec,
                              "row '%s': parse_time(\"%s\") gave %" PRIu64 " us, want %" PRIu64 " (%+" PRId64
                              " s)",
                              row->name, row->in, usec, row->want_usec,
                              ((int64_t)usec - (int64_t)row->want_usec) / (int64_t)SEC);
        else {
                ck_assert_msg(usec == UINT64_C(12345), "row '%s': a failed parse_time() wrote *ret_usec",
                              row->name);
                ck_assert_msg(reason && strstr(reason, row->reason), "row '%s': reason '%s' lacks '%s'",
                              row->name, reason ?: "(none)", row->reason);
        }
}
END_TEST

/* Every hour of a year, formatted as a local time and parsed back, is the
 * same time (the hour repeated when DST ends reads as either). */
START_TEST(test_parse_time_round_trip) {
        ck_assert_int_eq(setenv("TZ", TZ_BERLIN, 1), 0);
        tzset();
        for (uint64_t sec = UINT64_C(1767225600); sec < UINT64_C(1767225600) + 366 * 86400; sec += 3600) {
                time_t t = (time_t)sec;
                char text[FORMAT_TIME_MAX + 8];
                struct tm tm;
                uint64_t usec = 0;
                int r;

                localtime_r(&t, &tm);
                snprintf(text, sizeof(text), "%04d-%02d-%02d %02d:%02d:%02d", tm.tm_year + 1900,
                         tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
                r = parse_time(text, TIME_NOW, &usec, NULL);
                CHECK(r == 0, "parse_time(\"%s\") = %d", text, r);
                /* The hour repeated at the end of DST is ambiguous: either reading. */
                CHECK(usec == sec * SEC || usec + HOUR == sec * SEC || usec == sec * SEC + HOUR,
                      "\"%s\" (%" PRIu64 ") read back as %" PRIu64, text, sec, usec / SEC);
        }
}
END_TEST

typedef struct DayRow {
        const char *name;
        struct tm tm;
        const char *want_day, *want_minute;
} DayRow;

static const DayRow day_rows[] = {
        {"a December morning",
         {.tm_year = 126, .tm_mon = 11, .tm_mday = 1, .tm_hour = 9, .tm_min = 5},
         "2026-12-01",
         "2026-12-01 09:05"},
        {"the epoch", {.tm_year = 70, .tm_mday = 1}, "1970-01-01", "1970-01-01 00:00"},
        {"the last minute of 9999",
         {.tm_year = 8099, .tm_mon = 11, .tm_mday = 31, .tm_hour = 23, .tm_min = 59},
         "9999-12-31",
         "9999-12-31 23:59"},
};

START_TEST(test_day_row) {
        const DayRow *row = &day_rows[_i];
        char buf[FORMAT_TIME_MAX];

        ck_assert_msg(strcmp(format_day(buf, &row->tm), row->want_day) == 0, "row '%s': day '%s', want '%s'",
                      row->name, buf, row->want_day);
        ck_assert_msg(strcmp(format_minute(buf, &row->tm), row->want_minute) == 0,
                      "row '%s': minute '%s', want '%s'", row->name, buf, row->want_minute);
}
END_TEST

/* ---- budgetctl estimate: counts, money and the lines ---- */

typedef struct CountRow {
        const char *name;
        uint64_t n;
        const char *want;
} CountRow;

static const CountRow count_rows[] = {
        {"zero", 0, "0"},
        {"below a thousand", 999, "999"},
        {"a thousand", 1000, "1,000"},
        {"four digits", 1234, "1,234"},
        {"five digits", 81200, "81,200"},
        {"six digits", 100000, "100,000"},
        {"seven digits", 1234567, "1,234,567"},
        {"UINT64_MAX", UINT64_MAX, "18,446,744,073,709,551,615"},
};

START_TEST(test_count_row) {
        const CountRow *row = &count_rows[_i];
        char buf[FORMAT_COUNT_MAX];

        ck_assert_msg(strcmp(format_count(buf, row->n), row->want) == 0,
                      "row '%s': format_count(%" PRIu64 ") = \"%s\", want \"%s\"", row->name, row->n, buf,
                      row->want);
}
END_TEST

typedef struct MoneyRow {
        const char *name;
        int64_t micros;
        const char *want;
} MoneyRow;

static const MoneyRow money_rows[] = {
        {"zero", 0, "0.00"},
        {"a cent", 10000, "0.01"},
        {"rounded down to the cent", 1234999, "1.23"},
        {"a half cent rounds up", 1235000, "1.24"},
        {"rounded up to the cent", 1236000, "1.24"},
        {"rounded up to a whole unit", 999995000, "1,000.00"},
        {"thousands", 1234567890, "1,234.57"},
        {"below a cent: every digit", 1234, "0.001234"},
        {"below a cent: trailing zeros go", 50, "0.00005"},
        {"below a cent: at least two decimals", 1, "0.000001"},
        {"just below a cent", 9999, "0.009999"},
        {"negative", -1234567, "-1.23"},
        {"INT64_MIN", INT64_MIN, "-9,223,372,036,854.78"},
        {"INT64_MAX", INT64_MAX, "9,223,372,036,854.78"},
};

START_TEST(test_money_row) {
        const MoneyRow *row = &money_rows[_i];
        char buf[FORMAT_MONEY_MAX];

        ck_assert_msg(strcmp(format_money(buf, row->micros), row->want) == 0,
                      "row '%s': format_money(%" PRId64 ") = \"%s\", want \"%s\"", row->name, row->micros,
                      buf, row->want);
}
END_TEST

typedef struct EstimateRow {
        const char *name;
        FormatEstimate in;
        const char *want;
} EstimateRow;

#define HEAD "class:review (uid 1000), 1,234 samples\n"
static const EstimateRow estimate_rows[] = {
        {"project with an interval and a cost",
         {.class_name = "class:review",
          .uid = 1000,
          .samples = 1234,
          .tasks = 100,
          .predicted = 812,
          .predicted_output = 412,
          .expected = 81200,
          .expected_output = 41200,
          .has_interval = true,
          .low = 74000,
          .high = 90100,
          .coverage_permille = 900,
          .block_size = 100,
          .blocks = 37,
          .has_cost = true,
          .model = "gpt-4o",
          .currency = "USD",
          .cost_micros = 1230000,
          .has_cost_interval = true,
          .cost_low_micros = 1120000,
          .cost_high_micros = 1370000},
         HEAD "one task: 812 tokens (output 412)\n"
              "100 tasks: 81,200 tokens (output 41,200), 90% interval 74,000 .. 90,100 (from 37 blocks of "
              "100)\n"
              "cost: 1.23 USD (1.12 .. 1.37) at gpt-4o prices\n"},
        {"one task: the interval on its line, from single predictions",
         {.class_name = "class:review",
          .uid = 1000,
          .samples = 1234,
          .tasks = 1,
          .predicted = 812,
          .predicted_output = 412,
          .expected = 812,
          .expected_output = 412,
          .has_interval = true,
          .low = 555,
          .high = 1346,
          .coverage_permille = 900,
          .block_size = 1,
          .blocks = 452},
         HEAD
         "one task: 812 tokens (output 412), 90% interval 555 .. 1,346 (from 452 single predictions)\n"},
        {"scaled: not narrowed",
         {.class_name = "class:review",
          .uid = 1000,
          .samples = 1234,
          .tasks = 5000,
          .predicted = 812,
          .predicted_output = 412,
          .expected = 4060000,
          .expected_output = 2060000,
          .has_interval = true,
          .low = 3000000,
          .high = 5000000,
          .coverage_permille = 900,
          .block_size = 10,
          .blocks = 1,
          .scaled = true},
         HEAD
         "one task: 812 tokens (output 412)\n"
         "5,000 tasks: 4,060,000 tokens (output 2,060,000), 90% interval 3,000,000 .. 5,000,000 (from 1 "
         "block of 10, not narrowed for 5,000 tasks)\n"},
        {"no interval yet, with a prompt, a tenth of a percent",
         {.class_name = "agent:coder",
          .uid = 0,
          .samples = 1,
          .tasks = 10,
          .prompt_tokens = 4000,
          .predicted = 4100,
          .predicted_output = 100,
          .expected = 41000,
          .expected_output = 1000,
          .no_interval = "fewer than 10 predictions checked against their allocations yet (0)"},
         "agent:coder (uid 0), 1 sample\n"
         "one task with a 4,000-token prompt: 4,100 tokens (output 100)\n"
         "10 tasks: 41,000 tokens (output 1,000); no interval yet: fewer than 10 predictions checked "
         "against their allocations yet (0)\n"},
        {"no interval, no reason said",
         {.class_name = "command:make",
          .uid = 7,
          .samples = 3,
          .tasks = 1,
          .predicted = 5,
          .predicted_output = 5,
          .expected = 5,
          .expected_output = 5},
         "command:make (uid 7), 3 samples\none task: 5 tokens (output 5); no interval yet\n"},
        {"coverage with a tenth",
         {.class_name = "class:x",
          .uid = 1,
          .samples = 2,
          .tasks = 1,
          .has_interval = true,
          .low = 1,
          .high = 2,
          .coverage_permille = 975,
          .block_size = 1,
          .blocks = 1},
         "class:x (uid 1), 2 samples\none task: 0 tokens (output 0), 97.5% interval 1 .. 2 (from 1 single "
         "prediction)\n"},
        {"cost without an interval, no currency, below a cent",
         {.class_name = "class:x",
          .uid = 1,
          .samples = 2,
          .tasks = 1,
          .has_interval = false,
          .has_cost = true,
          .model = "small",
          .currency = "",
          .cost_micros = 1234},
         "class:x (uid 1), 2 samples\none task: 0 tokens (output 0); no interval yet\n"
         "cost: 0.001234 at small prices\n"},
        {"a model not priced",
         {.class_name = "class:x",
          .uid = 1,
          .samples = 2,
          .tasks = 1,
          .model = "gpt-9",
          .no_cost = "no price configured for model 'gpt-9'"},
         "class:x (uid 1), 2 samples\none task: 0 tokens (output 0); no interval yet\n"
         "cost: no price configured for model 'gpt-9'\n"},
        {"control characters in the daemon's strings",
         {.class_name = "class:\x1b[2Jx",
          .uid = 1,
          .samples = 2,
          .tasks = 1,
          .no_interval = "a\nb",
          .has_cost = true,
          .model = "m\x07",
          .currency = "U\x9b",
          .cost_micros = 0},
         "class:?[2Jx (uid 1), 2 samples\none task: 0 tokens (output 0); no interval yet: a?b\n"
         "cost: 0.00 U? at m? prices\n"},
};
#undef HEAD

START_TEST(test_estimate_row) {
        const EstimateRow *row = &estimate_rows[_i];
        char buf[FORMAT_ESTIMATE_MAX];

        ck_assert_msg(format_estimate(buf, &row->in) == buf && strcmp(buf, row->want) == 0,
                      "row '%s': format_estimate() =\n%s\nwant\n%s", row->name, buf, row->want);
}
END_TEST

/* A class name and reasons longer than the text: cut, NUL-terminated, clean. */
START_TEST(test_estimate_long) {
        char name[FORMAT_ESTIMATE_MAX], buf[FORMAT_ESTIMATE_MAX];
        FormatEstimate e = {.class_name = name, .tasks = 10, .no_interval = name, .no_cost = name};
        size_t n;

        for (size_t i = 0; i + 2 < sizeof(name); i += 2)
                memcpy(name + i, "\xc3\xa9", 2);
        name[sizeof(name) - 2] = '\0';
        format_estimate(buf, &e);
        n = strlen(buf);
        ck_assert_uint_eq(n, sizeof(buf) - 1);
        for (size_t i = 0; i < n; i++)
                ck_assert_msg((unsigned char)buf[i] >= 0x20 || buf[i] == '\n', "control byte at %zu", i);
}
END_TEST

static Suite *format_suite(void) {
        Suite *s = suite_create("format");
        TCase *tc;

        tc = tcase_create("tokens");
        tcase_add_loop_test(tc, test_tokens_row, 0, (int)ELEMENTSOF(tokens_rows));
        tcase_add_test(tc, test_tokens_boundaries);
        tcase_add_test(tc, test_tokens_sweep);
        suite_add_tcase(s, tc);
        tc = tcase_create("durations");
        tcase_add_loop_test(tc, test_duration_row, 0, (int)ELEMENTSOF(duration_rows));
        tcase_add_test(tc, test_duration_sweep);
        suite_add_tcase(s, tc);
        tc = tcase_create("waits");
        tcase_add_loop_test(tc, test_wait_row, 0, (int)ELEMENTSOF(wait_rows));
        tcase_add_loop_test(tc, test_percent_row, 0, (int)ELEMENTSOF(percent_rows));
        tcase_add_loop_test(tc, test_parse_duration_row, 0, (int)ELEMENTSOF(parse_duration_rows));
        suite_add_tcase(s, tc);
        tc = tcase_create("ratios");
        tcase_add_loop_test(tc, test_ratio_row, 0, (int)ELEMENTSOF(ratio_rows));
        suite_add_tcase(s, tc);
        tc = tcase_create("strings");
        tcase_add_loop_test(tc, test_sanitize_row, 0, (int)ELEMENTSOF(sanitize_rows));
        tcase_add_loop_test(tc, test_upper_row, 0, (int)ELEMENTSOF(upper_rows));
        suite_add_tcase(s, tc);
        tc = tcase_create("error");
        tcase_add_loop_test(tc, test_error_row, 0, (int)ELEMENTSOF(error_rows));
        suite_add_tcase(s, tc);
        tc = tcase_create("power");
        tcase_add_loop_test(tc, test_factor_row, 0, (int)ELEMENTSOF(factor_rows));
        tcase_add_loop_test(tc, test_power_row, 0, (int)ELEMENTSOF(power_rows));
        tcase_add_test(tc, test_power_long);
        suite_add_tcase(s, tc);
        tc = tcase_create("durability");
        tcase_add_loop_test(tc, test_durability_row, 0, (int)ELEMENTSOF(durability_rows));
        tcase_add_test(tc, test_durability_long);
        suite_add_tcase(s, tc);
        tc = tcase_create("times");
        tcase_add_loop_test(tc, test_parse_time_row, 0, (int)ELEMENTSOF(parse_time_rows));
        tcase_add_test(tc, test_parse_time_round_trip);
        tcase_add_loop_test(tc, test_day_row, 0, (int)ELEMENTSOF(day_rows));
        suite_add_tcase(s, tc);
        tc = tcase_create("estimate");
        tcase_add_loop_test(tc, test_count_row, 0, (int)ELEMENTSOF(count_rows));
        tcase_add_loop_test(tc, test_money_row, 0, (int)ELEMENTSOF(money_rows));
        tcase_add_loop_test(tc, test_estimate_row, 0, (int)ELEMENTSOF(estimate_rows));
        tcase_add_test(tc, test_estimate_long);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(format_suite());
}
