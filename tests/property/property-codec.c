/* SPDX-License-Identifier: MIT */
/*
 * Property runs of the Varlink codec, seeded (a failure names the round that
 * replays it); the hand-written rows are in tests/unit/test-codec.c and
 * tests/unit/test-json.c.
 *
 * The flat fast path (protocol/varlink-flat.c): 40,000 generated calls, half
 * of them mutated a few bytes at a time (quotes, escapes, digits, NUL, bad
 * UTF-8, cuts), each through both parsers with flat_differential()
 * (tests/common/flat-differential.c). The flat path may refuse anything,
 * but what it accepts the strict path must accept with the same values, and
 * it must take a good share of the generated calls, or the run proves
 * nothing.
 *
 * The JSON parser (protocol/json-codec.c) against json-c's strict tokener
 * with json_differential(): 60,000 generated documents, nested past the
 * depth limit now and then, with every kind of escape, surrogates paired and
 * not, numbers in the forms json-c reads its own way and duplicate keys,
 * half of them mutated; both must agree on each, on the reason and to the
 * bit on the value, and the run must reach acceptance, refusal, the depth
 * limit and duplicates often enough. The writer against json-c's with
 * json_writer_differential(): 20,000 generated trees of every kind json-c
 * holds (strings of any bytes, int64 and uint64, doubles of any bit
 * pattern, doubles that keep a text).
 */
#include <check.h>
#include <json-c/json.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "flat-differential.h"
#include "json-codec.h"
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

/* ---- JSON documents ---- */

typedef struct JsonGen {
        uint64_t *state;
        char *buf;
        size_t cap, len;
} JsonGen;

static void json_gen_put(JsonGen *g, const char *s) {
        flat_append(g->buf, g->cap, &g->len, s);
}

static void json_gen_space(JsonGen *g) {
        flat_append_space(g->state, g->buf, g->cap, &g->len);
}

/* Escapes, surrogates paired and lone, a pair json-c 0.16 mistakes for a
 * surrogate again (\ud836\udc00 is U+1D800), raw UTF-8, and escapes json-c
 * refuses. */
static void json_gen_string(JsonGen *g) {
        static const char *const pieces[] = {
                "a",
                "Z",
                " ",
                "/",
                "'",
                "\\\"",
                "\\\\",
                "\\/",
                "\\b",
                "\\f",
                "\\n",
                "\\r",
                "\\t",
                "\\u0000",
                "\\u001f",
                "\\u0041",
                "\\u00e9",
                "\\u07ff",
                "\\u0800",
                "\\uffff",
                "\\ufffd",
                "\\ud83d",
                "\\ude00",
                "\\ud83d\\ude00",
                "\\udbff\\udfff",
                "\\ud800\\udc00",
                "\\ud836\\udc00",
                "\\ud837\\udc00",
                "\\uD83D\\uDE00",
                "\\ud83d\\u0041",
                "\\ud83d\\n",
                "\\ud83d\\ud83d",
                "\xc3\xa9",
                "\xe2\x82\xac",
                "\xf0\x9f\x98\x80",
                "\x7f",
                "\\x",
                "\\u12",
                "\\u12g4",
                "\\U0041",
                "\\'",
                "\\ud83d\\u",
                "\\ud83d\\uzz",
        };
        size_t n = flat_random(g->state) % 7;

        json_gen_put(g, "\"");
        for (size_t k = 0; k < n; k++) {
                if (flat_random(g->state) % 4 == 0) {
                        char esc[8];
                        unsigned u = (unsigned)(flat_random(g->state) & 0xFFFF);

                        snprintf(esc, sizeof(esc), flat_random(g->state) % 2 ? "\\u%04x" : "\\u%04X", u);
                        json_gen_put(g, esc);
                } else
                        json_gen_put(g, FLAT_PICK(g->state, pieces));
        }
        json_gen_put(g, "\"");
}

/* The forms json-c reads its own way, and random runs of number characters. */
static void json_gen_number(JsonGen *g) {
        static const char *const numbers[] = {
                "0",
                "-0",
                "00",
                "-00",
                "01",
                "-01",
                "1",
                "-1",
                "1.",
                "-.5",
                ".5",
                "01.5",
                "1.e5",
                "1e5",
                "1E+5",
                "1e-5",
                "1e",
                "1e+",
                "1.5e",
                "1.0",
                "-0.0",
                "1e400",
                "-1e400",
                "1e-400",
                "100.0",
                "1.5.5",
                "1e5e5",
                "1-2",
                "--1",
                "-",
                "+1",
                "0.1",
                "2.5e-3",
                "123456789012345678",
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775808",
                "-9223372036854775809",
                "18446744073709551615",
                "18446744073709551616",
                "99999999999999999999999",
                "-99999999999999999999999",
                "012345678901234567890",
                "4.9e-324",
                "1.7976931348623157e308",
                "0.30000000000000004",
        };
        static const char alphabet[] = "0123456789-+.eE";

        if (flat_random(g->state) % 3 > 0) {
                json_gen_put(g, FLAT_PICK(g->state, numbers));
                return;
        }
        char run[24];
        size_t n = 1 + flat_random(g->state) % 20;

        run[0] = flat_random(g->state) % 4 == 0 ? '-' : (char)('0' + flat_random(g->state) % 10);
        for (size_t k = 1; k < n; k++)
                run[k] = alphabet[flat_random(g->state) % (sizeof(alphabet) - 1)];
        run[n] = '\0';
        json_gen_put(g, run);
}

static void json_gen_value(JsonGen *g, unsigned depth);

static void json_gen_key(JsonGen *g) {
        static const char *const keys[] = {"\"a\"",      "\"b\"",        "\"\"",
                                           "\"method\"", "\"a\\u0000\"", "\"\\u0061\""};

        if (flat_random(g->state) % 2)
                json_gen_put(g, FLAT_PICK(g->state, keys));
        else
                json_gen_string(g);
}

static void json_gen_container(JsonGen *g, unsigned depth, bool object, size_t n) {
        json_gen_put(g, object ? "{" : "[");
        for (size_t k = 0; k < n; k++) {
                if (k > 0)
                        json_gen_put(g, ",");
                json_gen_space(g);
                if (object) {
                        json_gen_key(g);
                        json_gen_space(g);
                        json_gen_put(g, ":");
                        json_gen_space(g);
                }
                json_gen_value(g, depth + 1);
                json_gen_space(g);
        }
        json_gen_put(g, object ? "}" : "]");
}

static void json_gen_value(JsonGen *g, unsigned depth) {
        static const char *const literals[] = {"true", "false", "null", "tru",
                                               "nul",  "nulll", "nan",  "True"};
        unsigned kind = (unsigned)(flat_random(g->state) % (depth > 3 ? 6 : 9));

        switch (kind) {
        case 0:
                json_gen_put(g, FLAT_PICK(g->state, literals));
                break;
        case 1:
        case 2:
                json_gen_number(g);
                break;
        case 3:
        case 4:
                json_gen_string(g);
                break;
        case 5:
                json_gen_put(g, flat_random(g->state) % 2 ? "{}" : "[]");
                break;
        case 6:
        case 7:
                json_gen_container(g, depth, true, flat_random(g->state) % 5);
                break;
        default:
                json_gen_container(g, depth, false, flat_random(g->state) % 5);
                break;
        }
}

/* Nested exactly n levels around the innermost value (VARLINK_MAX_DEPTH is
 * 32: a value inside the 32nd level is too deep). */
static void json_gen_deep(JsonGen *g, size_t n) {
        char closers[64];

        for (size_t k = 0; k < n && k < sizeof(closers); k++) {
                bool object = flat_random(g->state) % 2;

                json_gen_put(g, object ? "{\"k\":" : "[");
                closers[k] = object ? '}' : ']';
        }
        json_gen_value(g, 4);
        for (size_t k = n < sizeof(closers) ? n : sizeof(closers); k > 0; k--) {
                char c[2] = {closers[k - 1], '\0'};

                json_gen_put(g, c);
        }
}

START_TEST(test_json_differential) {
        uint64_t state = 0xD1B54A32D192ED03ULL;
        size_t n_accepted = 0, n_deep = 0, n_clean = 0, n_clean_accepted = 0;
        const size_t n_rounds = 60000;

        for (size_t round = 0; round < n_rounds; round++) {
                char buf[4096], label[64];
                JsonGen g = {&state, buf, sizeof(buf), 0};
                bool mutated = flat_random(&state) % 2, accepted;

                json_gen_space(&g);
                if (flat_random(&state) % 8 == 0)
                        json_gen_deep(&g, 28 + flat_random(&state) % 8);
                else
                        json_gen_value(&g, 0);
                json_gen_space(&g);
                if (mutated)
                        g.len = flat_mutate(&state, buf, sizeof(buf), g.len);
                snprintf(label, sizeof(label), "json round %zu (%.*s)", round,
                         (int)(g.len < 24 ? g.len : 24), buf);
                accepted = json_differential(label, buf, g.len);
                n_accepted += accepted;
                n_clean += !mutated;
                n_clean_accepted += !mutated && accepted;
                if (!accepted) {
                        struct json_object *o = NULL;
                        const char *reason = NULL;

                        (void)json_codec_parse(buf, g.len, VARLINK_MAX_DEPTH, &o, NULL, &reason);
                        n_deep += reason && strcmp(reason, "JSON nested too deeply") == 0;
                }
        }
        ck_assert_msg(n_accepted > n_rounds / 5 && n_accepted < n_rounds * 4 / 5,
                      "%zu of %zu documents accepted", n_accepted, n_rounds);
        ck_assert_msg(n_clean_accepted > n_clean / 4, "only %zu of %zu unmutated documents accepted",
                      n_clean_accepted, n_clean);
        ck_assert_msg(n_deep > n_rounds / 100, "only %zu documents too deep", n_deep);
}
END_TEST

/* ---- trees for the writer ---- */

static struct json_object *json_gen_tree(uint64_t *state, unsigned depth) {
        static const char *const texts[] = {"1.5", "1e5", "-0.0", "01.5", "1.", "x", ""};
        unsigned kind = (unsigned)(flat_random(state) % (depth > 3 ? 8 : 10));
        uint64_t bits = flat_random(state);
        double d;

        switch (kind) {
        case 0:
                return NULL;
        case 1:
                return json_object_new_boolean(bits & 1);
        case 2:
                return json_object_new_int64((int64_t)bits >> (bits % 64));
        case 3:
                return json_object_new_uint64(bits);
        case 4: {
                static const double special[] = {
                        0.0,  -0.0,        100.0, 1e22,     1e21,     0.1, 5e-324, 1.7976931348623157e308,
                        -1.0, 123456789.0, NAN,   INFINITY, -INFINITY};

                if (bits % 3 == 0)
                        d = special[flat_random(state) % ELEMENTSOF(special)];
                else
                        memcpy(&d, &bits, sizeof(d));
                return bits % 5 == 0
                               ? json_object_new_double_s(d, texts[flat_random(state) % ELEMENTSOF(texts)])
                               : json_object_new_double(d);
        }
        case 5:
        case 6:
        case 7: {
                char s[24];
                size_t n = flat_random(state) % sizeof(s);

                for (size_t k = 0; k < n; k++)
                        s[k] = (char)(flat_random(state) % 4 == 0 ? flat_random(state) % 0x21
                                                                  : flat_random(state) % 256);
                return json_object_new_string_len(s, (int)n);
        }
        case 8: {
                struct json_object *o = json_object_new_object();
                size_t n = flat_random(state) % 14;

                for (size_t k = 0; k < n; k++) {
                        char key[8];
                        size_t m = flat_random(state) % sizeof(key);

                        for (size_t j = 0; j < m; j++)
                                key[j] = (char)(1 + flat_random(state) % 255);
                        key[m] = '\0';
                        if (m > 0 && flat_random(state) % 3 == 0)
                                key[1] = '\0'; /* short keys, so some repeat */
                        json_object_object_add(o, key, json_gen_tree(state, depth + 1));
                }
                return o;
        }
        default: {
                struct json_object *a = json_object_new_array();
                size_t n = flat_random(state) % 6;

                for (size_t k = 0; k < n; k++)
                        json_object_array_add(a, json_gen_tree(state, depth + 1));
                return a;
        }
        }
}

START_TEST(test_json_writer_differential) {
        uint64_t state = 0x8CB92BA72F3D8DD7ULL;

        for (size_t round = 0; round < 20000; round++) {
                struct json_object *o = json_gen_tree(&state, 0);
                char label[48];

                snprintf(label, sizeof(label), "writer round %zu", round);
                json_writer_differential(label, o);
                json_object_put(o);
        }
}
END_TEST

static Suite *codec_property_suite(void) {
        Suite *s = suite_create("codec-property");
        TCase *tc = tcase_create("flat");

        /* Many messages, slowly under sanitizers. */
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_flat_differential);
        suite_add_tcase(s, tc);

        tc = tcase_create("json");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_json_differential);
        tcase_add_test(tc, test_json_writer_differential);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(codec_property_suite());
}
