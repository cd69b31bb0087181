/* SPDX-License-Identifier: MIT */
/*
 * Property run of the Varlink codec's flat fast path (protocol/varlink.c):
 * 40,000 generated calls, half of them mutated a few bytes at a time (quotes,
 * escapes, digits, NUL, bad UTF-8, cuts), each through both parsers with
 * flat_differential() (tests/common/flat-differential.c). The flat path may
 * refuse anything, but what it accepts the strict path must accept with the
 * same values, and it must take a good share of the generated calls, or the
 * run proves nothing. The hand-written rows are in tests/unit/test-codec.c.
 * Seeded: a failure names the round that replays it.
 */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "flat-differential.h"
#include "tb-check.h"

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

/* xorshift64*: a fixed seed makes every failure reproducible. */
static uint64_t flat_random(uint64_t *state) {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        return *state * 2685821657736338717ULL;
}

static const char *flat_pick(uint64_t *state, const char *const *choices, size_t n) {
        return choices[flat_random(state) % n];
}

#define FLAT_PICK(state, a) flat_pick((state), (a), ELEMENTSOF(a))

static void flat_append(char *buf, size_t cap, size_t *len, const char *s) {
        size_t n = strlen(s);

        if (*len + n < cap) {
                memcpy(buf + *len, s, n);
                *len += n;
        }
}

static void flat_append_space(uint64_t *state, char *buf, size_t cap, size_t *len) {
        static const char *const spaces[] = {"", "", "", "", " ", "\n", " \t\r\n "};

        flat_append(buf, cap, len, FLAT_PICK(state, spaces));
}

/* A flat-ish parameters object: mostly valid members, some of every kind of
 * value and name the flat path must refuse. */
static void flat_gen_parameters(uint64_t *state, char *buf, size_t cap, size_t *len) {
        static const char *const names[] = {
                "\"allocation\"", "\"inputTokens\"", "\"outputTokens\"", "\"flag\"",
                "\"class\"",      "\"count\"",       "\"estimate\"",     "\"\"",
                "\"x.y\"",        "\"caf\xc3\xa9\"", "\"a\\u006c\"",     "\"count\\u0000\"",
        };
        static const char *const values[] = {
                "0",
                "1",
                "400",
                "1000",
                "1001",
                "999999999999999999",
                "1000000000000000000",
                "9223372036854775807",
                "9223372036854775808",
                "01",
                "-1",
                "-0",
                "1.0",
                "1e3",
                "true",
                "false",
                "null",
                "\"\"",
                "\"0000000100000001\"",
                "\"00000001000000012\"",
                "\"caf\xc3\xa9\"",
                "\"\xf0\x9f\x98\x80\"",
                "\"\x7f\"",
                "\"a\\\"b\"",
                "\"\\u0000\"",
                "\"\xc0\xaf\"",
                "\"\x01\"",
                "{}",
                "[]",
                "{\"a\":1}",
                "[1,2]",
                "\"abcdefgh\"",
                "\"abcdefghi\"",
        };
        size_t n = flat_random(state) % 11;

        flat_append(buf, cap, len, "{");
        for (size_t k = 0; k < n; k++) {
                if (k > 0)
                        flat_append(buf, cap, len, ",");
                flat_append_space(state, buf, cap, len);
                flat_append(buf, cap, len, FLAT_PICK(state, names));
                flat_append_space(state, buf, cap, len);
                flat_append(buf, cap, len, ":");
                flat_append_space(state, buf, cap, len);
                flat_append(buf, cap, len, FLAT_PICK(state, values));
                flat_append_space(state, buf, cap, len);
        }
        flat_append(buf, cap, len, "}");
}

static size_t flat_gen_call(uint64_t *state, char *buf, size_t cap) {
        static const char *const keys[] = {
                "\"method\"", "\"method\"",  "\"parameters\"",  "\"parameters\"", "\"oneway\"",
                "\"more\"",   "\"upgrade\"", "\"org.example\"", "\"bogus\"",      "\"\"",
        };
        static const char *const methods[] = {
                "\"io.tokenbudget.agent.Report\"",
                "\"a.b.C\"",
                "\"a.B\"",
                "\"a.b.c\"",
                "\"A.b.C\"",
                "null",
                "\"a.b.C\\u0041\"",
                "\"a-.b.C\"",
                "\"a.b.C\xc3\xa9\"",
        };
        static const char *const flags[] = {"true", "false", "false", "null", "1", "\"true\""};
        static const char *const others[] = {"null", "1", "[]", "\"x\"", "{}"};
        size_t len = 0, n = 1 + flat_random(state) % 4;

        flat_append_space(state, buf, cap, &len);
        flat_append(buf, cap, &len, "{");
        for (size_t k = 0; k < n; k++) {
                const char *key = k == 0 ? "\"method\"" : FLAT_PICK(state, keys);

                if (k > 0)
                        flat_append(buf, cap, &len, ",");
                flat_append_space(state, buf, cap, &len);
                flat_append(buf, cap, &len, key);
                flat_append(buf, cap, &len, ":");
                flat_append_space(state, buf, cap, &len);
                if (strcmp(key, "\"method\"") == 0)
                        flat_append(buf, cap, &len,
                                    k == 0 ? methods[flat_random(state) % 2] : FLAT_PICK(state, methods));
                else if (strcmp(key, "\"parameters\"") == 0 && flat_random(state) % 5 > 0)
                        flat_gen_parameters(state, buf, cap, &len);
                else if (strcmp(key, "\"parameters\"") == 0)
                        flat_append(buf, cap, &len, "null");
                else if (key[1] == 'o' || key[1] == 'm' || key[1] == 'u')
                        flat_append(buf, cap, &len, FLAT_PICK(state, flags));
                else
                        flat_append(buf, cap, &len, FLAT_PICK(state, others));
                flat_append_space(state, buf, cap, &len);
        }
        flat_append(buf, cap, &len, "}");
        flat_append_space(state, buf, cap, &len);
        return len;
}

/* Up to three byte edits: structure, quotes, escapes, digits, NUL, bad UTF-8. */
static size_t flat_mutate(uint64_t *state, char *buf, size_t cap, size_t len) {
        static const char bytes[] = "\"\\{}[],: 0019-.eatnu\x7f\x01\x80\xc3\xff";
        size_t n = flat_random(state) % 4;

        for (size_t k = 0; k < n && len > 0; k++) {
                size_t at = flat_random(state) % len;
                char c = bytes[flat_random(state) % (sizeof(bytes) - 1)];

                switch (flat_random(state) % 4) {
                case 0:
                        buf[at] = c;
                        break;
                case 1:
                        memmove(buf + at, buf + at + 1, len - at - 1);
                        len--;
                        break;
                case 2:
                        if (len + 1 < cap) {
                                memmove(buf + at + 1, buf + at, len - at);
                                buf[at] = c;
                                len++;
                        }
                        break;
                default:
                        len = at;
                        break;
                }
        }
        return len;
}

START_TEST(test_flat_differential) {
        uint64_t state = 0x9E3779B97F4A7C15ULL;
        size_t n_flat = 0, n_clean = 0, n_clean_flat = 0;
        const size_t n_rounds = 40000;

        for (size_t round = 0; round < n_rounds; round++) {
                char buf[1024], label[48];
                size_t len = flat_gen_call(&state, buf, sizeof(buf));
                bool mutated = flat_random(&state) % 2;

                if (mutated)
                        len = flat_mutate(&state, buf, sizeof(buf), len);
                snprintf(label, sizeof(label), "round %zu (%.*s)", round, (int)(len < 20 ? len : 20), buf);
                if (flat_differential(label, buf, len)) {
                        n_flat++;
                        n_clean_flat += !mutated;
                }
                n_clean += !mutated;
        }
        /* The generator must reach the interesting side often, or the test
         * proves nothing. */
        ck_assert_msg(n_flat > n_rounds / 20, "only %zu of %zu messages were flat", n_flat, n_rounds);
        ck_assert_msg(n_clean_flat > n_clean / 10, "only %zu of %zu unmutated messages were flat",
                      n_clean_flat, n_clean);
}
END_TEST

static Suite *codec_property_suite(void) {
        Suite *s = suite_create("codec-property");
        TCase *tc = tcase_create("flat");

        /* Many messages, slowly under sanitizers. */
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_flat_differential);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(codec_property_suite());
}
