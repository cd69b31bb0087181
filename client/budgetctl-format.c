/* SPDX-License-Identifier: MIT */
/*
 * budgetctl's value formatting (budgetctl-format.h): token counts, durations,
 * ratios, terminal-safe strings, power factors and the power line. Integer
 * arithmetic only, so no value is rounded up on its way to the screen. Pure;
 * tests/unit/test-format.c covers every magnitude.
 */
#include "budgetctl-format.h"
#include "utf8.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

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
