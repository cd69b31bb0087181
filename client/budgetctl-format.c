/* SPDX-License-Identifier: MIT */
/*
 * budgetctl's value formatting (budgetctl-format.h): token counts, durations,
 * ratios and terminal-safe strings. Integer arithmetic only, so no value is
 * rounded up on its way to the screen. Pure; tests/unit/test-format.c covers
 * every magnitude.
 */
#include "budgetctl-format.h"
#include "utf8.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC  UINT64_C(1000000)
#define SEC_PER_MIN   UINT64_C(60)
#define SEC_PER_HOUR  UINT64_C(3600)
#define SEC_PER_DAY   UINT64_C(86400)

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
