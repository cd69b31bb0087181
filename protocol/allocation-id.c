/* SPDX-License-Identifier: MIT */
/*
 * Allocation identifiers: 16 lower-case hexadecimal digits (allocation-id.h).
 * Formatting is done by hand rather than with snprintf so that it cannot
 * fail or depend on the locale; parsing accepts only what formatting writes.
 */
#include <errno.h>

#include "allocation-id.h"

#define ALLOCATION_ID_DIGITS (ALLOCATION_ID_STRING_MAX - 1)

void allocation_id_format(uint64_t id, char buf[static ALLOCATION_ID_STRING_MAX]) {
        static const char hex[] = "0123456789abcdef";

        for (int i = ALLOCATION_ID_DIGITS - 1; i >= 0; i--) {
                buf[i] = hex[id & 0xF];
                id >>= 4;
        }
        buf[ALLOCATION_ID_DIGITS] = '\0';
}

static int hex_digit_value(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        return -1;
}

int allocation_id_parse(const char *s, uint64_t *ret) {
        uint64_t v = 0;

        if (!s)
                return -EINVAL;
        /* Stops at the first non-digit, the NUL included: never reads past it. */
        for (int i = 0; i < ALLOCATION_ID_DIGITS; i++) {
                int d = hex_digit_value(s[i]);

                if (d < 0)
                        return -EINVAL;
                v = v << 4 | (uint64_t)d;
        }
        if (s[ALLOCATION_ID_DIGITS] != '\0')
                return -EINVAL;
        if (ret)
                *ret = v;
        return 0;
}
