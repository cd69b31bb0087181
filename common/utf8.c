/* SPDX-License-Identifier: MIT */
#include "utf8.h"

size_t utf8_sequence_len(const unsigned char *p, size_t n) {
        unsigned char lo = 0x80, hi = 0xBF;
        size_t need;

        if (p[0] >= 0xC2 && p[0] <= 0xDF)
                need = 1;
        else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
                need = 2;
                if (p[0] == 0xE0)
                        lo = 0xA0;
                else if (p[0] == 0xED)
                        hi = 0x9F;
        } else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
                need = 3;
                if (p[0] == 0xF0)
                        lo = 0x90;
                else if (p[0] == 0xF4)
                        hi = 0x8F;
        } else
                return 0;

        if (n <= need || p[1] < lo || p[1] > hi)
                return 0;
        for (size_t k = 2; k <= need; k++)
                if ((p[k] & 0xC0) != 0x80)
                        return 0;
        return need + 1;
}

bool utf8_valid(const char *s, size_t n) {
        const unsigned char *p = (const unsigned char *)s;

        for (size_t i = 0; i < n;) {
                size_t k;

                if (p[i] < 0x80) {
                        i++;
                        continue;
                }
                k = utf8_sequence_len(p + i, n - i);
                if (k == 0)
                        return false;
                i += k;
        }
        return true;
}

size_t utf8_cut(const char *s, size_t n) {
        size_t k, len;
        unsigned char lead;

        if (n == 0)
                return 0;
        k = n - 1;
        while (k > 0 && n - k < 4 && ((unsigned char)s[k] & 0xc0) == 0x80)
                k--;
        lead = (unsigned char)s[k];
        len = (lead & 0xe0) == 0xc0 ? 2 : (lead & 0xf0) == 0xe0 ? 3 : (lead & 0xf8) == 0xf0 ? 4 : 1;
        return k + len > n ? k : n;
}

size_t utf8_width(const char *s) {
        size_t w = 0;

        for (; *s; s++)
                if (((unsigned char)*s & 0xc0) != 0x80)
                        w++;
        return w;
}
