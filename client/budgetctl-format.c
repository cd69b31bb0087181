/* SPDX-License-Identifier: MIT */
/*
 * budgetctl's value formatting (budgetctl-format.h): token counts, durations,
 * ratios, terminal-safe strings, power factors, the power and durability
 * lines. Integer arithmetic only, so no value is rounded up on its way to
 * the screen. Pure; tests/unit/test-format.c covers every magnitude.
 * parse_time() is the one that knows a zone: the C library's local one (TZ),
 * through localtime_r() and mktime().
 */
#include "budgetctl-format.h"
#include "utf8.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC  UINT64_C(1000000)
#define SEC_PER_MIN   UINT64_C(60)
#define SEC_PER_HOUR  UINT64_C(3600)
#define SEC_PER_DAY   UINT64_C(86400)
/* U+00B0 DEGREE SIGN (UTF-8 in the output), then C: the source stays ASCII. */
#define DEGREES_CELSIUS "\u00b0C"

const char *format_tokens(char buf[static FORMAT_TOKENS_MAX], uint64_t tokens) {
        /* SI prefixes; E (10^18) is the last one a uint64_t reaches (UINT64_MAX is 18.4E). */
        static const char units[] = "kMGTPE";
        uint64_t scale = 1000, tenths;
        size_t u = 0;

        if (tokens < 1000) {
                snprintf(buf, FORMAT_TOKENS_MAX, "%" PRIu64, tokens);
                return buf;
        }
        /* The largest unit not above tokens: scale <= tokens < 1000 * scale (or E). */
        while (u + 1 < sizeof(units) - 1 && tokens / scale >= 1000) {
                scale *= 1000;
                u++;
        }
        /* Truncating division: what is shown never exceeds the count. */
        tenths = tokens / (scale / 10);
        if (tenths < 1000 && tenths % 10 != 0)
                snprintf(buf, FORMAT_TOKENS_MAX, "%" PRIu64 ".%" PRIu64 "%c", tenths / 10, tenths % 10,
                         units[u]);
        else
                snprintf(buf, FORMAT_TOKENS_MAX, "%" PRIu64 "%c", tenths / 10, units[u]);
        return buf;
}

const char *format_duration(char buf[static FORMAT_DURATION_MAX], uint64_t usec) {
        uint64_t s = usec / USEC_PER_SEC;

        if (s < SEC_PER_MIN)
                snprintf(buf, FORMAT_DURATION_MAX, "%" PRIu64 "s", s);
        else if (s < SEC_PER_HOUR)
                snprintf(buf, FORMAT_DURATION_MAX, "%" PRIu64 "min %" PRIu64 "s", s / SEC_PER_MIN,
                         s % SEC_PER_MIN);
        else if (s < SEC_PER_DAY)
                snprintf(buf, FORMAT_DURATION_MAX, "%" PRIu64 "h %" PRIu64 "min", s / SEC_PER_HOUR,
                         s % SEC_PER_HOUR / SEC_PER_MIN);
        else
                snprintf(buf, FORMAT_DURATION_MAX, "%" PRIu64 "d %" PRIu64 "h", s / SEC_PER_DAY,
                         s % SEC_PER_DAY / SEC_PER_HOUR);
        return buf;
}

const char *format_wait(char buf[static FORMAT_DURATION_MAX], uint64_t usec) {
        uint64_t tenths = usec / (USEC_PER_SEC / 10);

        if (usec < USEC_PER_SEC)
                snprintf(buf, FORMAT_DURATION_MAX, "%" PRIu64 "ms", usec / USEC_PER_MSEC);
        else if (usec < SEC_PER_MIN * USEC_PER_SEC && tenths % 10 != 0)
                snprintf(buf, FORMAT_DURATION_MAX, "%" PRIu64 ".%" PRIu64 "s", tenths / 10, tenths % 10);
        else
                format_duration(buf, usec);
        return buf;
}

const char *format_percent(char buf[static FORMAT_PERCENT_MAX], uint64_t permille) {
        snprintf(buf, FORMAT_PERCENT_MAX, "%" PRIu64 "%%", permille / 10);
        return buf;
}

int parse_duration(const char *s, uint64_t max_usec, uint64_t *ret_usec) {
        static const struct {
                const char *name;
                uint64_t usec;
        } units[] = {
                {"", USEC_PER_SEC},
                {"us", 1},
                {"ms", USEC_PER_MSEC},
                {"s", USEC_PER_SEC},
                {"min", SEC_PER_MIN * USEC_PER_SEC},
                {"h", SEC_PER_HOUR * USEC_PER_SEC},
        };
        uint64_t whole = 0, frac = 0, scale = 1, unit = 0, usec;
        const char *p = s;
        size_t u;

        if (*p < '0' || *p > '9')
                return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
                /* Past max whatever the unit: stop before whole overflows. */
                if (whole > (UINT64_MAX - 9) / 10)
                        return -ERANGE;
                whole = whole * 10 + (uint64_t)(*p - '0');
        }
        if (*p == '.') {
                p++;
                if (*p < '0' || *p > '9')
                        return -EINVAL;
                for (; *p >= '0' && *p <= '9'; p++) {
                        if (scale == 1000000)
                                return -EINVAL; /* more than 6 digits */
                        frac = frac * 10 + (uint64_t)(*p - '0');
                        scale *= 10;
                }
        }
        for (u = 0; u < sizeof(units) / sizeof(units[0]); u++)
                if (strcmp(p, units[u].name) == 0)
                        unit = units[u].usec;
        if (unit == 0)
                return -EINVAL;
        if (whole > UINT64_MAX / unit)
                return -ERANGE;
        /* frac < scale <= 10^6 and unit <= 3.6 * 10^9: the product fits. */
        usec = whole * unit;
        if (usec > UINT64_MAX - frac * unit / scale)
                return -ERANGE;
        usec += frac * unit / scale;
        if (usec > max_usec)
                return -ERANGE;
        *ret_usec = usec;
        return 0;
}

const char *format_ratio(char buf[static FORMAT_RATIO_MAX], uint64_t used, bool has_limit, uint64_t limit) {
        char a[FORMAT_TOKENS_MAX], b[FORMAT_TOKENS_MAX];

        snprintf(buf, FORMAT_RATIO_MAX, "%s/%s", format_tokens(a, used),
                 has_limit ? format_tokens(b, limit) : "-");
        return buf;
}

char *format_sanitize(char *s) {
        const unsigned char *p = (const unsigned char *)s;
        char *q = s;

        while (*p) {
                size_t n = *p < 0x80 ? 1 : utf8_sequence_len(p, strlen((const char *)p));

                /* C0 controls and DEL; C1 controls (U+0080..U+009F, e.g. CSI
                 * U+009B, which some terminals obey); bytes that are not UTF-8. */
                if (n == 0 || *p < 0x20 || *p == 0x7f || (*p == 0xc2 && p[1] < 0xa0)) {
                        *q++ = '?';
                        p += n ?: 1;
                        continue;
                }
                memmove(q, p, n);
                q += n;
                p += n;
        }
        *q = 0;
        return s;
}

char *format_upper(char *s) {
        for (char *p = s; *p; p++)
                if (*p >= 'a' && *p <= 'z')
                        *p = (char)(*p - 'a' + 'A');
        return s;
}

const char *format_error(char buf[static FORMAT_ERROR_MAX], int64_t permille, bool sign) {
        /* The magnitude as unsigned, so INT64_MIN has one too. */
        uint64_t m = permille < 0 ? (uint64_t) - (permille + 1) + 1 : (uint64_t)permille;
        const char *s = permille < 0 ? "-" : sign && permille > 0 ? "+" : "";

        snprintf(buf, FORMAT_ERROR_MAX, "%s%" PRIu64 ".%" PRIu64 "%%", s, m / 10, m % 10);
        return buf;
}

const char *format_factor(char buf[static FORMAT_FACTOR_MAX], uint64_t permille) {
        uint64_t frac = permille % 1000;
        int digits = 3;

        if (frac == 0) {
                snprintf(buf, FORMAT_FACTOR_MAX, "%" PRIu64, permille / 1000);
                return buf;
        }
        for (; frac % 10 == 0; frac /= 10)
                digits--;
        snprintf(buf, FORMAT_FACTOR_MAX, "%" PRIu64 ".%0*" PRIu64, permille / 1000, digits, frac);
        return buf;
}

/* A line built piece by piece into a fixed buffer; what does not fit is cut. */
typedef struct Line {
        char *buf;
        size_t size, len;
} Line;

static void line_printf(Line *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void line_printf(Line *l, const char *fmt, ...) {
        va_list ap;
        int n;

        if (l->len + 1 >= l->size)
                return;
        va_start(ap, fmt);
        n = vsnprintf(l->buf + l->len, l->size - l->len, fmt, ap);
        va_end(ap);
        if (n > 0)
                l->len = (size_t)n < l->size - l->len ? l->len + (size_t)n : l->size - 1;
}

/* value / 10^decimals with exactly that many decimals, its sign kept: -5 at 1 is "-0.5". */
static void line_fixed(Line *l, int64_t value, unsigned decimals) {
        uint64_t scale = 1, magnitude = value < 0 ? (uint64_t)0 - (uint64_t)value : (uint64_t)value;

        for (unsigned i = 0; i < decimals; i++)
                scale *= 10;
        line_printf(l, "%s%" PRIu64 ".%0*" PRIu64, value < 0 ? "-" : "", magnitude / scale, (int)decimals,
                    magnitude % scale);
}

static bool tm_same_day(const struct tm *a, const struct tm *b) {
        return a->tm_year == b->tm_year && a->tm_mon == b->tm_mon && a->tm_mday == b->tm_mday;
}

/* The readings in parentheses: "on AC" or "on battery", then each one known. */
static void power_readings(Line *l, const FormatPower *p) {
        line_printf(l, " (%s", p->on_ac ? "on AC" : "on battery");
        if (p->battery_permille != FORMAT_POWER_UNKNOWN)
                /* Truncated: a charge shown is never above the threshold it is below. */
                line_printf(l, ", %" PRId64 "%%", p->battery_permille < 0 ? 0 : p->battery_permille / 10);
        if (p->temperature_dc != FORMAT_POWER_UNKNOWN) {
                line_printf(l, ", ");
                line_fixed(l, p->temperature_dc, 1);
                line_printf(l, " " DEGREES_CELSIUS "%s%s", p->sensor && *p->sensor ? " " : "",
                            p->sensor ? p->sensor : "");
        }
        if (p->pressure_cp != FORMAT_POWER_UNKNOWN) {
                line_printf(l, ", memory pressure ");
                line_fixed(l, p->pressure_cp, 2);
                line_printf(l, "%%");
        }
        line_printf(l, ")");
}

/* "; normal x0.5, background paused": the factors that hold a priority back. */
static void power_factors(Line *l, const FormatPower *p) {
        static const char *const names[_FORMAT_PRIORITY_MAX] = {
                [FORMAT_PRIORITY_INTERACTIVE] = "interactive",
                [FORMAT_PRIORITY_NORMAL] = "normal",
                [FORMAT_PRIORITY_BACKGROUND] = "background",
        };
        const char *sep = "; ";

        for (size_t i = 0; i < _FORMAT_PRIORITY_MAX; i++) {
                int64_t f = p->factor_permille[i];
                char factor[FORMAT_FACTOR_MAX];

                if (f == FORMAT_POWER_UNKNOWN || f == 1000 || f < 0)
                        continue;
                if (f == 0)
                        line_printf(l, "%s%s paused", sep, names[i]);
                else
                        line_printf(l, "%s%s x%s", sep, names[i], format_factor(factor, (uint64_t)f));
                sep = ", ";
        }
}

const char *format_power(char buf[static FORMAT_POWER_MAX], const FormatPower *p) {
        Line l = {buf, FORMAT_POWER_MAX, 0};
        const struct tm *t = p->since;

        buf[0] = '\0';
        line_printf(&l, "%s", p->state ? p->state : "?");
        power_readings(&l, p);
        if (t && !(p->state && strcmp(p->state, "ac") == 0)) {
                line_printf(&l, " since ");
                if (!p->now || !tm_same_day(t, p->now))
                        line_printf(&l, "%04d-%02d-%02d ", t->tm_year + 1900, t->tm_mon + 1, t->tm_mday);
                line_printf(&l, "%02d:%02d:%02d", t->tm_hour, t->tm_min, t->tm_sec);
        }
        power_factors(&l, p);
        /* The daemon's strings, and a UTF-8 sequence cut at the end, become '?'. */
        return format_sanitize(buf);
}

/* ---- the durability line ---- */

static const char *plural(uint64_t n, const char *one, const char *many) {
        return n == 1 ? one : many;
}

const char *format_durability(char buf[static FORMAT_DURABILITY_MAX], const FormatDurability *d) {
        Line l = {buf, FORMAT_DURABILITY_MAX, 0};

        buf[0] = '\0';
        if (!d->database && !d->degraded)
                line_printf(&l, "memory only (nothing survives a restart)");
        else if (d->degraded) {
                const char *why = d->error ? d->error : d->database ? d->database : "commits fail";

                /* The counts first: the error is the daemon's, and may be long. */
                line_printf(&l,
                            "DEGRADED (%" PRIu64 " %s pending, %" PRIu64 " lost; enforcing from memory): %s",
                            d->pending, plural(d->pending, "write", "writes"), d->lost, why);
        } else {
                line_printf(&l, "%s", d->database);
                if (d->sync)
                        line_printf(&l, " (sync %s)", d->sync);
                line_printf(&l, ", %" PRIu64 " %s", d->commits, plural(d->commits, "commit", "commits"));
                if (d->lost > 0)
                        line_printf(&l, ", %" PRIu64 " %s lost since the start", d->lost,
                                    plural(d->lost, "write", "writes"));
        }
        /* The daemon's strings, and a UTF-8 sequence cut at the end, become '?'. */
        return format_sanitize(buf);
}

/* ---- points in time (--since, --until) ---- */

#define SEC_PER_WEEK  (7 * SEC_PER_DAY)
#define SEC_PER_MONTH UINT64_C(2629800)  /* 30.44 days, as systemd.time(7) */
#define SEC_PER_YEAR  UINT64_C(31557600) /* 365.25 days, as systemd.time(7) */
/* The last second of 9999-12-31 UTC: four-digit years only. */
#define TIME_SEC_MAX INT64_C(253402300799)

static bool is_digit(char c) {
        return c >= '0' && c <= '9';
}

static bool is_space(char c) {
        return c == ' ' || c == '\t';
}

/* The time span units of systemd.time(7), each its own word. */
static uint64_t span_unit_usec(const char *u, size_t n) {
        static const struct {
                const char *name;
                uint64_t usec;
        } units[] = {
                {"usec", 1},
                {"us", 1},
                {"\u00b5s", 1},
                {"\u03bcs", 1},
                {"msec", USEC_PER_MSEC},
                {"ms", USEC_PER_MSEC},
                {"seconds", USEC_PER_SEC},
                {"second", USEC_PER_SEC},
                {"sec", USEC_PER_SEC},
                {"s", USEC_PER_SEC},
                {"minutes", SEC_PER_MIN * USEC_PER_SEC},
                {"minute", SEC_PER_MIN * USEC_PER_SEC},
                {"min", SEC_PER_MIN * USEC_PER_SEC},
                {"m", SEC_PER_MIN * USEC_PER_SEC},
                {"hours", SEC_PER_HOUR * USEC_PER_SEC},
                {"hour", SEC_PER_HOUR * USEC_PER_SEC},
                {"hr", SEC_PER_HOUR * USEC_PER_SEC},
                {"h", SEC_PER_HOUR * USEC_PER_SEC},
                {"days", SEC_PER_DAY * USEC_PER_SEC},
                {"day", SEC_PER_DAY * USEC_PER_SEC},
                {"d", SEC_PER_DAY * USEC_PER_SEC},
                {"weeks", SEC_PER_WEEK * USEC_PER_SEC},
                {"week", SEC_PER_WEEK * USEC_PER_SEC},
                {"w", SEC_PER_WEEK * USEC_PER_SEC},
                {"months", SEC_PER_MONTH * USEC_PER_SEC},
                {"month", SEC_PER_MONTH * USEC_PER_SEC},
                {"M", SEC_PER_MONTH * USEC_PER_SEC},
                {"years", SEC_PER_YEAR * USEC_PER_SEC},
                {"year", SEC_PER_YEAR * USEC_PER_SEC},
                {"y", SEC_PER_YEAR * USEC_PER_SEC},
        };

        /* No unit: seconds. */
        if (n == 0)
                return USEC_PER_SEC;
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
                if (strlen(units[i].name) == n && memcmp(units[i].name, u, n) == 0)
                        return units[i].usec;
        return 0;
}

/* A span of n bytes of s: "2h", "1h 30min", "1.5d", "90" (seconds). */
static int parse_span(const char *s, size_t n, uint64_t *ret_usec, const char **ret_reason) {
        const char *p = s, *end = s + n;
        uint64_t total = 0;

        while (p < end && is_space(*p))
                p++;
        if (p == end) {
                *ret_reason = "expected a time span after the sign (e.g. 1h, 30min, 2d)";
                return -EINVAL;
        }
        while (p < end) {
                uint64_t whole = 0, frac = 0, scale = 1, unit, usec;
                const char *u;

                if (!is_digit(*p)) {
                        *ret_reason = "expected a number in the time span (e.g. 1h, 30min, 2d)";
                        return -EINVAL;
                }
                for (; p < end && is_digit(*p); p++) {
                        if (whole > (UINT64_MAX - 9) / 10)
                                goto range;
                        whole = whole * 10 + (uint64_t)(*p - '0');
                }
                if (p < end && *p == '.') {
                        p++;
                        if (p == end || !is_digit(*p)) {
                                *ret_reason = "expected digits after the decimal point";
                                return -EINVAL;
                        }
                        for (; p < end && is_digit(*p); p++)
                                if (scale < 1000000) { /* more digits than a microsecond are dropped */
                                        frac = frac * 10 + (uint64_t)(*p - '0');
                                        scale *= 10;
                                }
                }
                while (p < end && is_space(*p))
                        p++;
                for (u = p; p < end && !is_digit(*p) && !is_space(*p) && *p != '.'; p++)
                        ;
                unit = span_unit_usec(u, (size_t)(p - u));
                if (unit == 0) {
                        *ret_reason = "unknown time unit (units: us, ms, s, min, h, d, w, M, y, and their "
                                      "long names)";
                        return -EINVAL;
                }
                if (__builtin_mul_overflow(whole, unit, &usec) ||
                    __builtin_add_overflow(usec, frac * (unit / scale) + frac * (unit % scale) / scale,
                                           &usec) ||
                    __builtin_add_overflow(total, usec, &total))
                        goto range;
                while (p < end && is_space(*p))
                        p++;
        }
        *ret_usec = total;
        return 0;
range:
        *ret_reason = "the time span is too long";
        return -ERANGE;
}

/* Reads exactly min..max digits at *p as a number. */
static bool read_number(const char **p, unsigned min, unsigned max, unsigned *ret) {
        unsigned v = 0, n = 0;

        while (n < max && is_digit((*p)[n])) {
                v = v * 10 + (unsigned)((*p)[n] - '0');
                n++;
        }
        if (n < min || is_digit((*p)[n]))
                return false;
        *p += n;
        *ret = v;
        return true;
}

static bool is_leap(unsigned y) {
        return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(unsigned y, unsigned m) {
        static const unsigned char days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

        return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
        int64_t era, yoe, doy;

        y -= m <= 2;
        era = (y >= 0 ? y : y - 399) / 400;
        yoe = y - era * 400;
        doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
        return era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
}

/* What an absolute time said. */
typedef struct TimeFields {
        int wday; /* -1: not given */
        bool has_date;
        unsigned year, month, day, hour, minute, second;
        uint64_t usec;    /* fraction of the second */
        bool has_zone;    /* UTC or a numeric offset: not the local zone */
        int32_t zone_sec; /* east of UTC */
} TimeFields;

static int parse_weekday(const char **p, TimeFields *f) {
        static const char *const names[7][2] = {
                {"Sun", "Sunday"},   {"Mon", "Monday"}, {"Tue", "Tuesday"},  {"Wed", "Wednesday"},
                {"Thu", "Thursday"}, {"Fri", "Friday"}, {"Sat", "Saturday"},
        };

        f->wday = -1;
        for (int i = 0; i < 7; i++)
                for (int j = 1; j >= 0; j--) {
                        size_t n = strlen(names[i][j]);

                        if (strncasecmp(*p, names[i][j], n) == 0 && is_space((*p)[n])) {
                                f->wday = i;
                                *p += n + 1;
                                return 0;
                        }
                }
        return 0;
}

static int parse_clock(const char **p, TimeFields *f, const char **ret_reason) {
        if (!read_number(p, 1, 2, &f->hour) || **p != ':') {
                *ret_reason = "expected HH:MM or HH:MM:SS after the date";
                return -EINVAL;
        }
        (*p)++;
        if (!read_number(p, 2, 2, &f->minute)) {
                *ret_reason = "expected two digits of minutes (HH:MM)";
                return -EINVAL;
        }
        if (**p == ':') {
                (*p)++;
                if (!read_number(p, 2, 2, &f->second)) {
                        *ret_reason = "expected two digits of seconds (HH:MM:SS)";
                        return -EINVAL;
                }
                if (**p == '.') {
                        uint64_t scale = 1000000;

                        (*p)++;
                        if (!is_digit(**p)) {
                                *ret_reason = "expected digits after the decimal point";
                                return -EINVAL;
                        }
                        for (; is_digit(**p); (*p)++)
                                if (scale > 1) {
                                        scale /= 10;
                                        f->usec += (uint64_t)(**p - '0') * scale;
                                }
                }
        }
        if (f->hour > 23 || f->minute > 59 || f->second > 59) {
                *ret_reason = f->hour > 23 ? "the hour is out of range (0-23)"
                                           : "the minutes or seconds are out of range (0-59)";
                return -ERANGE;
        }
        return 0;
}

/* " UTC", "Z", "+HH:MM", "+HHMM", "+HH" (and "-"), with or without a space before a number. */
static int parse_zone(const char **p, TimeFields *f, const char **ret_reason) {
        const char *q = *p;
        unsigned h = 0, m = 0;
        int sign;

        if (strcmp(q, "Z") == 0 || strcmp(q, " UTC") == 0 || strcmp(q, " Z") == 0) {
                f->has_zone = true;
                *p = q + strlen(q);
                return 0;
        }
        if (is_space(*q))
                q++;
        if (*q != '+' && *q != '-')
                return 0;
        sign = *q == '-' ? -1 : 1;
        q++;
        if (!is_digit(q[0]) || !is_digit(q[1]))
                goto bad;
        h = (unsigned)(q[0] - '0') * 10 + (unsigned)(q[1] - '0');
        q += 2;
        if (*q == ':')
                q++;
        if (is_digit(*q) && !read_number(&q, 2, 2, &m))
                goto bad;
        if (*q || h > 23 || m > 59)
                goto bad;
        f->has_zone = true;
        f->zone_sec = sign * (int32_t)(h * 3600 + m * 60);
        *p = q;
        return 0;
bad:
        *ret_reason = "expected a UTC offset of +HH:MM, +HHMM or +HH (or UTC, Z) after the time";
        return -EINVAL;
}

static int parse_fields(const char *s, TimeFields *f, const char **ret_reason) {
        const char *p = s;
        int r;

        *f = (TimeFields){};
        parse_weekday(&p, f);
        if (is_digit(p[0]) && is_digit(p[1]) && is_digit(p[2]) && is_digit(p[3]) && p[4] == '-') {
                read_number(&p, 4, 4, &f->year);
                p++;
                if (!read_number(&p, 1, 2, &f->month) || *p != '-' ||
                    (p++, !read_number(&p, 1, 2, &f->day))) {
                        *ret_reason = "expected a date of YYYY-MM-DD";
                        return -EINVAL;
                }
                if (f->month < 1 || f->month > 12) {
                        *ret_reason = "the month is out of range (1-12)";
                        return -ERANGE;
                }
                if (f->day < 1 || f->day > days_in_month(f->year, f->month)) {
                        *ret_reason = "the day is out of range for its month";
                        return -ERANGE;
                }
                f->has_date = true;
                if (*p == 'T' || (is_space(*p) && is_digit(p[1])))
                        p++;
                else if (*p && !is_space(*p) && *p != 'Z') {
                        *ret_reason = "expected a space or T between the date and the time";
                        return -EINVAL;
                }
        }
        if (is_digit(*p)) {
                r = parse_clock(&p, f, ret_reason);
                if (r < 0)
                        return r;
        } else if (!f->has_date) {
                *ret_reason = "expected a time";
                return -EINVAL;
        }
        r = parse_zone(&p, f, ret_reason);
        if (r < 0)
                return r;
        if (*p) {
                *ret_reason = "unexpected text after the time";
                return -EINVAL;
        }
        return 0;
}

/* Seconds since the epoch of the fields, in their zone (UTC or offset) or the local one. */
static int fields_to_sec(TimeFields *f, time_t now_sec, int64_t *ret_sec, const char **ret_reason) {
        int64_t sec, days;

        if (!f->has_date) {
                /* A time alone is today's (in its zone). */
                struct tm tm;
                time_t t = now_sec + (f->has_zone ? f->zone_sec : 0);

                if (!(f->has_zone ? gmtime_r(&t, &tm) : localtime_r(&t, &tm))) {
                        *ret_reason = "the time is out of range";
                        return -ERANGE;
                }
                f->year = (unsigned)tm.tm_year + 1900;
                f->month = (unsigned)tm.tm_mon + 1;
                f->day = (unsigned)tm.tm_mday;
        }
        if (f->year < 1970 || f->year > 9999) {
                *ret_reason = "the year is out of range (1970-9999)";
                return -ERANGE;
        }
        days = days_from_civil(f->year, f->month, f->day);
        if (f->wday >= 0 && (days + 4) % 7 != f->wday) {
                *ret_reason = "the weekday is not that of the date";
                return -EINVAL;
        }
        if (f->has_zone)
                sec = days * 86400 + f->hour * 3600 + f->minute * 60 + f->second - f->zone_sec;
        else {
                struct tm tm = {
                        .tm_year = (int)f->year - 1900,
                        .tm_mon = (int)f->month - 1,
                        .tm_mday = (int)f->day,
                        .tm_hour = (int)f->hour,
                        .tm_min = (int)f->minute,
                        .tm_sec = (int)f->second,
                        .tm_isdst = -1, /* the zone's rule decides (a time in a DST gap moves on) */
                };

                sec = (int64_t)mktime(&tm);
        }
        if (sec < 0 || sec > TIME_SEC_MAX) {
                *ret_reason = "the time is out of range (1970-01-01 to 9999-12-31)";
                return -ERANGE;
        }
        *ret_sec = sec;
        return 0;
}

/* Local midnight of now's day plus days (today 0, yesterday -1, tomorrow 1). */
static int day_start(uint64_t now_usec, int days, uint64_t *ret_usec, const char **ret_reason) {
        time_t t = (time_t)(now_usec / USEC_PER_SEC);
        struct tm tm;
        time_t start;

        if (!localtime_r(&t, &tm)) {
                *ret_reason = "the time is out of range";
                return -ERANGE;
        }
        tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
        tm.tm_mday += days;
        tm.tm_isdst = -1;
        start = mktime(&tm);
        if (start < 0) {
                *ret_reason = "the time is out of range (1970-01-01 to 9999-12-31)";
                return -ERANGE;
        }
        *ret_usec = (uint64_t)start * USEC_PER_SEC;
        return 0;
}

/* "@SECONDS[.FRACTION]" since the epoch. */
static int parse_epoch(const char *s, uint64_t *ret_usec, const char **ret_reason) {
        uint64_t sec = 0, usec = 0, scale = USEC_PER_SEC;
        const char *p = s;

        if (!is_digit(*p)) {
                *ret_reason = "expected seconds since the epoch after @ (e.g. @1764547200)";
                return -EINVAL;
        }
        for (; is_digit(*p); p++) {
                sec = sec * 10 + (uint64_t)(*p - '0');
                if (sec > (uint64_t)TIME_SEC_MAX) {
                        *ret_reason = "the time is out of range (1970-01-01 to 9999-12-31)";
                        return -ERANGE;
                }
        }
        if (*p == '.') {
                p++;
                if (!is_digit(*p)) {
                        *ret_reason = "expected digits after the decimal point";
                        return -EINVAL;
                }
                for (; is_digit(*p); p++)
                        if (scale > 1) {
                                scale /= 10;
                                usec += (uint64_t)(*p - '0') * scale;
                        }
        }
        if (*p) {
                *ret_reason = "unexpected text after the seconds since the epoch";
                return -EINVAL;
        }
        *ret_usec = sec * USEC_PER_SEC + usec;
        return 0;
}

/* Whether s ends with the word suffix (after a space); *ret_n is what is before it. */
static bool ends_with_word(const char *s, const char *suffix, size_t *ret_n) {
        size_t n = strlen(s), m = strlen(suffix);

        if (n <= m + 1 || !is_space(s[n - m - 1]) || strcmp(s + n - m, suffix) != 0)
                return false;
        *ret_n = n - m - 1;
        return true;
}

static int relative(uint64_t now_usec, int sign, const char *span, size_t n, uint64_t *ret_usec,
                    const char **ret_reason) {
        uint64_t delta;
        int r = parse_span(span, n, &delta, ret_reason);

        if (r < 0)
                return r;
        if (sign < 0 ? delta > now_usec : delta > (uint64_t)TIME_SEC_MAX * USEC_PER_SEC - now_usec) {
                *ret_reason = sign < 0 ? "the time would be before 1970-01-01 (the epoch)"
                                       : "the time would be after 9999-12-31";
                return -ERANGE;
        }
        *ret_usec = sign < 0 ? now_usec - delta : now_usec + delta;
        return 0;
}

int parse_time(const char *s, uint64_t now_usec, uint64_t *ret_usec, const char **ret_reason) {
        static const struct {
                const char *word;
                int days;
        } days[] = {{"today", 0}, {"yesterday", -1}, {"tomorrow", 1}};
        const char *reason_unused;
        TimeFields f;
        int64_t sec;
        size_t n;
        int r;

        if (!ret_reason)
                ret_reason = &reason_unused;
        if (!*s) {
                *ret_reason = "expected a time, not an empty string";
                return -EINVAL;
        }
        if (strcmp(s, "now") == 0) {
                *ret_usec = now_usec;
                return 0;
        }
        for (size_t i = 0; i < sizeof(days) / sizeof(days[0]); i++)
                if (strcmp(s, days[i].word) == 0)
                        return day_start(now_usec, days[i].days, ret_usec, ret_reason);
        if (s[0] == '@')
                return parse_epoch(s + 1, ret_usec, ret_reason);
        if (s[0] == '-' || s[0] == '+')
                return relative(now_usec, s[0] == '-' ? -1 : 1, s + 1, strlen(s + 1), ret_usec, ret_reason);
        if (ends_with_word(s, "ago", &n))
                return relative(now_usec, -1, s, n, ret_usec, ret_reason);
        if (ends_with_word(s, "left", &n))
                return relative(now_usec, 1, s, n, ret_usec, ret_reason);
        r = parse_fields(s, &f, ret_reason);
        if (r == -EINVAL && parse_span(s, strlen(s), &(uint64_t){0}, &reason_unused) == 0) {
                /* "1h", "30min": a span without a sign. */
                *ret_reason = "a relative time needs a sign or a word: -1h, +1h, 1h ago or 1h left";
                return r;
        }
        if (r < 0)
                return r;
        r = fields_to_sec(&f, (time_t)(now_usec / USEC_PER_SEC), &sec, ret_reason);
        if (r < 0)
                return r;
        *ret_usec = (uint64_t)sec * USEC_PER_SEC + f.usec;
        return 0;
}

const char *format_day(char buf[static FORMAT_TIME_MAX], const struct tm *tm) {
        snprintf(buf, FORMAT_TIME_MAX, "%04d-%02d-%02d", tm->tm_year + 1900, tm->tm_mon + 1, tm->tm_mday);
        return buf;
}

const char *format_minute(char buf[static FORMAT_TIME_MAX], const struct tm *tm) {
        snprintf(buf, FORMAT_TIME_MAX, "%04d-%02d-%02d %02d:%02d", tm->tm_year + 1900, tm->tm_mon + 1,
                 tm->tm_mday, tm->tm_hour, tm->tm_min);
        return buf;
}

/* ---- estimate ---- */

const char *format_count(char buf[static FORMAT_COUNT_MAX], uint64_t n) {
        char digits[24];
        int len = snprintf(digits, sizeof(digits), "%" PRIu64, n);
        size_t o = 0;

        for (int i = 0; i < len; i++) {
                if (i > 0 && (len - i) % 3 == 0)
                        buf[o++] = ',';
                buf[o++] = digits[i];
        }
        buf[o] = '\0';
        return buf;
}

#define MICROS_PER_UNIT UINT64_C(1000000)
#define MICROS_PER_CENT UINT64_C(10000)

const char *format_money(char buf[static FORMAT_MONEY_MAX], int64_t micros) {
        /* The magnitude as unsigned, so INT64_MIN has one too. */
        uint64_t m = micros < 0 ? (uint64_t)0 - (uint64_t)micros : (uint64_t)micros, cents;
        const char *sign = micros < 0 ? "-" : "";
        char whole[FORMAT_COUNT_MAX], frac[24];
        int decimals = 6;

        if (m >= MICROS_PER_CENT || m == 0) {
                /* Rounded to the nearest cent, a half up. */
                cents = m / MICROS_PER_CENT + (m % MICROS_PER_CENT >= MICROS_PER_CENT / 2);
                snprintf(buf, FORMAT_MONEY_MAX, "%s%s.%02" PRIu64, sign, format_count(whole, cents / 100),
                         cents % 100);
                return buf;
        }
        /* Below a cent: every digit there is, at least two decimals. */
        for (; decimals > 2 && m % 10 == 0; decimals--)
                m /= 10;
        snprintf(frac, sizeof(frac), "%0*" PRIu64, decimals, m);
        snprintf(buf, FORMAT_MONEY_MAX, "%s0.%s", sign, frac);
        return buf;
}

/* Starts a line of the daemon's strings: where it begins, for the cleaning. */
static size_t line_start(const Line *l) {
        return l->len;
}

/* Ends a line begun at start: the daemon's strings in it cleaned, then "\n". */
static void line_end(Line *l, size_t start) {
        format_sanitize(l->buf + start);
        line_printf(l, "\n");
}

/* ", 90% interval LOW .. HIGH (from ...)" or "; no interval yet: WHY". */
static void estimate_interval(Line *l, const FormatEstimate *e) {
        char low[FORMAT_COUNT_MAX], high[FORMAT_COUNT_MAX], tasks[FORMAT_COUNT_MAX],
                blocks[FORMAT_COUNT_MAX];

        if (!e->has_interval) {
                line_printf(l, "; no interval yet%s%s", e->no_interval ? ": " : "",
                            e->no_interval ? e->no_interval : "");
                return;
        }
        line_printf(l, ", %" PRIu64, e->coverage_permille / 10);
        if (e->coverage_permille % 10)
                line_printf(l, ".%" PRIu64, e->coverage_permille % 10);
        line_printf(l, "%% interval %s .. %s (from %s ", format_count(low, e->low),
                    format_count(high, e->high), format_count(blocks, e->blocks));
        if (e->block_size <= 1)
                line_printf(l, "single %s", plural(e->blocks, "prediction", "predictions"));
        else
                line_printf(l, "%s of %" PRIu64, plural(e->blocks, "block", "blocks"), e->block_size);
        if (e->scaled)
                line_printf(l, ", not narrowed for %s tasks", format_count(tasks, e->tasks));
        line_printf(l, ")");
}

static void estimate_cost(Line *l, const FormatEstimate *e) {
        char cost[FORMAT_MONEY_MAX], low[FORMAT_MONEY_MAX], high[FORMAT_MONEY_MAX];
        size_t start = line_start(l);

        if (e->no_cost)
                line_printf(l, "cost: %s", e->no_cost);
        else {
                line_printf(l, "cost: %s", format_money(cost, e->cost_micros));
                if (e->currency && *e->currency)
                        line_printf(l, " %s", e->currency);
                if (e->has_cost_interval)
                        line_printf(l, " (%s .. %s)", format_money(low, e->cost_low_micros),
                                    format_money(high, e->cost_high_micros));
                line_printf(l, " at %s prices", e->model ? e->model : "the model's");
        }
        line_end(l, start);
}

const char *format_estimate(char buf[static FORMAT_ESTIMATE_MAX], const FormatEstimate *e) {
        char a[FORMAT_COUNT_MAX], b[FORMAT_COUNT_MAX], c[FORMAT_COUNT_MAX];
        Line l = {buf, FORMAT_ESTIMATE_MAX, 0};
        size_t start;

        buf[0] = '\0';
        start = line_start(&l);
        line_printf(&l, "%s (uid %" PRIu64 "), %s %s", e->class_name, e->uid, format_count(a, e->samples),
                    plural(e->samples, "sample", "samples"));
        line_end(&l, start);

        start = line_start(&l);
        line_printf(&l, "one task");
        if (e->prompt_tokens > 0)
                line_printf(&l, " with a %s-token prompt", format_count(a, e->prompt_tokens));
        line_printf(&l, ": %s tokens (output %s)", format_count(b, e->predicted),
                    format_count(c, e->predicted_output));
        if (e->tasks <= 1)
                estimate_interval(&l, e);
        line_end(&l, start);

        if (e->tasks > 1) {
                start = line_start(&l);
                line_printf(&l, "%s tasks: %s tokens (output %s)", format_count(a, e->tasks),
                            format_count(b, e->expected), format_count(c, e->expected_output));
                estimate_interval(&l, e);
                line_end(&l, start);
        }
        if (e->has_cost || e->no_cost)
                estimate_cost(&l, e);
        return buf;
}
