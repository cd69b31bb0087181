/* SPDX-License-Identifier: MIT */
/*
 * budgetctl's value formatting (budgetctl-format.h): token counts, durations,
 * ratios and terminal-safe strings. Integer arithmetic only, so no value is
 * rounded up on its way to the screen. Pure; tests/unit/test-format.c covers
 * every magnitude.
 */
#include "budgetctl-format.h"
#include "utf8.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define USEC_PER_SEC UINT64_C(1000000)
#define SEC_PER_MIN  UINT64_C(60)
#define SEC_PER_HOUR UINT64_C(3600)
#define SEC_PER_DAY  UINT64_C(86400)

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
