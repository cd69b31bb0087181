/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the codec's JSON parser and writer (protocol/json-codec.c):
 * rows of text with the value or the reason json-c 0.16 gives for it (each
 * row that passes the lexical check is run through json-c's strict tokener
 * too, which must agree), rows of json-c objects with the bytes json-c
 * writes for them (json-c's own writer must agree), the depth limit, key
 * order and duplicates, tables that grow, and the decimal point of another
 * locale. The generated differential runs against json-c are in
 * tests/property/property-codec.c and tests/fuzz/fuzz-codec.c.
 *
 * Out of memory: this binary replaces malloc, calloc, realloc, free, strdup
 * and strndup (they forward to glibc's, or ASan's, allocator), so it can make
 * exactly the n-th allocation fail, or every one from the n-th on, in our
 * code and inside json-c alike. The parser, the writer and the varlink
 * calls over both run once per allocation they make, each time with that
 * one failing: every run must give -ENOMEM with nothing left allocated and
 * the output untouched, or succeed with the exact value (json-c tolerates
 * some failures, an array's shrink), never crash or leak (the replacement
 * counts the blocks alive).
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <locale.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "json-codec.h"
#include "json-oracle.h"
#include "tb-check.h"
#include "varlink.h"

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))
#define BYTES(s)      (s), (sizeof(s) - 1)

/* ---- the allocator, with failures on demand ---- */

#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(__SANITIZE_ADDRESS__)
#define __SANITIZE_ADDRESS__ 1
#endif
#endif

/* Under AddressSanitizer the allocator is ASan's: replacing it there crashed
 * ASan's own start-up in some builds (its dlsym runs our calloc before it is
 * ready), so the allocation-failure tests run in the other builds only and
 * skip here; ASan still checks every other test for memory errors. */
#if !defined(__SANITIZE_ADDRESS__)
#define TEST_JSON_INTERPOSE 1
/* glibc's allocator under the names it exports for this (GLIBC_2.2.5). */
void *__libc_malloc(size_t size);
void *__libc_calloc(size_t n, size_t size);
void *__libc_realloc(void *p, size_t size);
void __libc_free(void *p);
#define REAL(f) __libc_##f
#endif

static struct {
        bool armed;
        bool fail_rest;        /* every allocation from fail_at on fails */
        unsigned long fail_at; /* index, counted from arming */
        unsigned long n;       /* allocations while armed */
        unsigned long n_injected;
        long live; /* blocks allocated and not freed, counted always */
} fa;

static void fa_arm(unsigned long fail_at, bool fail_rest) {
        fa.fail_at = fail_at;
        fa.fail_rest = fail_rest;
        fa.n = fa.n_injected = 0;
        fa.armed = true;
}

/* Returns the allocations seen while armed. */
static unsigned long fa_disarm(void) {
        fa.armed = false;
        return fa.n;
}

static __attribute__((unused)) bool fa_fail(void) {
        unsigned long n;

        if (!fa.armed)
                return false;
        n = fa.n++;
        if (n != fa.fail_at && !(fa.fail_rest && n > fa.fail_at))
                return false;
        fa.n_injected++;
        errno = ENOMEM;
        return true;
}

#if TEST_JSON_INTERPOSE
void *malloc(size_t size) {
        void *p = fa_fail() ? NULL : REAL(malloc)(size);

        fa.live += p != NULL;
        return p;
}

void *calloc(size_t n, size_t size) {
        void *p = fa_fail() ? NULL : REAL(calloc)(n, size);

        fa.live += p != NULL;
        return p;
}

void *realloc(void *ptr, size_t size) {
        void *p;

        /* realloc(p, 0) frees p: that must keep working. */
        if ((size > 0 || !ptr) && fa_fail())
                return NULL;
        p = REAL(realloc)(ptr, size);
        if (!ptr && p)
                fa.live++;
        else if (ptr && size == 0 && !p)
                fa.live--;
        return p;
}

void free(void *p) {
        fa.live -= p != NULL;
        REAL(free)(p);
}

/* json-c copies keys with strdup(); ASan would otherwise allocate them
 * itself, unseen. */
char *strdup(const char *s) {
        size_t n = strlen(s) + 1;
        char *p = malloc(n);

        if (p)
                memcpy(p, s, n);
        return p;
}

char *strndup(const char *s, size_t max) {
        size_t n = strnlen(s, max);
        char *p = malloc(n + 1);

        if (p) {
                memcpy(p, s, n);
                p[n] = '\0';
        }
        return p;
}
#endif

/* ---- helpers ---- */

/* The text json_codec_write() gives for o; malloc'ed. */
static char *written(struct json_object *o) {
        VarlinkBuffer b = {};
        char *s;

        ck_assert_int_eq(json_codec_write(&b, o), 0);
        s = strndup(b.data ? b.data : "", b.len);
        ck_assert_ptr_nonnull(s);
        varlink_buffer_clear(&b);
        return s;
}

/* Equal values, and written alike (so also the int kinds, the text a double
 * keeps, member order). */
static bool same_value(struct json_object *a, struct json_object *b) {
        char *wa, *wb;
        bool same;

        if (!json_object_equal(a, b))
                return false;
        wa = written(a);
        wb = written(b);
        same = strcmp(wa, wb) == 0;
        free(wa);
        free(wb);
        return same;
}

/* ---- parsing ---- */

typedef struct ParseRow {
        const char *text;
        size_t len;
        const char *written; /* the value, as written back; NULL: refused */
        const char *reason;  /* when refused */
        bool duplicate_key;
} ParseRow;

static void check_parse_rows(const ParseRow *rows, size_t n) {
        for (size_t i = 0; i < n; i++) {
                const ParseRow *row = &rows[i];
                struct json_object *o = (struct json_object *)rows, *ref = NULL;
                const char *reason = "unset", *ref_reason = NULL;
                bool dup = !row->duplicate_key;
                int r = json_codec_parse(row->text, row->len, VARLINK_MAX_DEPTH, &o, &dup, &reason), rr;

                if (!row->written) {
                        ck_assert_msg(r == -EBADMSG && reason && strcmp(reason, row->reason) == 0 && !o,
                                      "row %zu (%.*s): got %d (%s), expected '%s'", i, (int)row->len,
                                      row->text, r, reason ? reason : "-", row->reason);
                } else {
                        char *w;

                        ck_assert_msg(r == 0 && !reason, "row %zu (%.*s): got %d (%s)", i, (int)row->len,
                                      row->text, r, reason ? reason : "-");
                        w = written(o);
                        ck_assert_msg(strcmp(w, row->written) == 0, "row %zu: written '%s', expected '%s'",
                                      i, w, row->written);
                        ck_assert_msg(dup == row->duplicate_key, "row %zu: duplicate key %d", i, dup);
                        free(w);
                }
                /* json-c, behind the lexical check, gives the same. */
                if (!json_codec_scan(row->text, row->len, NULL)) {
                        rr = json_oracle_tokener(row->text, row->len, &ref, &ref_reason);
                        ck_assert_msg(rr == r, "row %zu: json-c %d (%s)", i, rr,
                                      ref_reason ? ref_reason : "-");
                        if (r < 0)
                                ck_assert_msg(strcmp(reason, ref_reason) == 0, "row %zu: json-c says '%s'",
                                              i, ref_reason);
                        else
                                ck_assert_msg(same_value(o, ref), "row %zu: json-c's value differs", i);
                        json_object_put(ref);
                }
                json_object_put(o);
        }
}

START_TEST(test_parse_values) {
        static const ParseRow rows[] = {
                {BYTES("{}"), "{}"},
                {BYTES(" \t\r\n{ \n} \t"), "{}"},
                {BYTES("[]"), "[]"},
                {BYTES("[ ]"), "[]"},
                {BYTES("null"), "null"},
                {BYTES("true"), "true"},
                {BYTES("false"), "false"},
                {BYTES("\"a\""), "\"a\""},
                {BYTES("[null,true,false,{},[],\"\"]"), "[null,true,false,{},[],\"\"]"},
                {BYTES("{\"a\":{\"b\":[1,{\"c\":null}]},\"d\":\"e\"}"),
                 "{\"a\":{\"b\":[1,{\"c\":null}]},\"d\":\"e\"}"},
                /* integers: strtoll()/strtoull() saturate, so nothing is out of range */
                {BYTES("0"), "0"},
                {BYTES("-0"), "0"},
                {BYTES("00"), "0"},
                {BYTES("-00"), "0"},
                {BYTES("-01"), "-1"},
                {BYTES("[123,-45]"), "[123,-45]"},
                {BYTES("9223372036854775807"), "9223372036854775807"},
                {BYTES("9223372036854775808"), "9223372036854775808"},
                {BYTES("18446744073709551615"), "18446744073709551615"},
                {BYTES("18446744073709551616"), "18446744073709551615"},
                {BYTES("99999999999999999999999"), "18446744073709551615"},
                {BYTES("-9223372036854775808"), "-9223372036854775808"},
                {BYTES("-9223372036854775809"), "-9223372036854775808"},
                {BYTES("-99999999999999999999999"), "-9223372036854775808"},
                /* doubles keep their text, whatever the C library reads */
                {BYTES("1.5"), "1.5"},
                {BYTES("1."), "1."},
                {BYTES("-.5"), "-.5"},
                {BYTES("01.5"), "01.5"},
                {BYTES("1.e5"), "1.e5"},
                {BYTES("1E+2"), "1E+2"},
                {BYTES("2.5e-3"), "2.5e-3"},
                {BYTES("1e400"), "1e400"},
                {BYTES("-0.0"), "-0.0"},
                {BYTES("[0.1,100.0]"), "[0.1,100.0]"},
                /* strings */
                {BYTES("\"\\u0041\\u00e9\\u20ac\\ud83d\\ude00\""),
                 "\"A\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\""},
                {BYTES("\"\\uD83D\\uDE00\""), "\"\xf0\x9f\x98\x80\""},
                {BYTES("\"\\ud835\\udc00\""), "\"\xf0\x9d\x90\x80\""},
                {BYTES("\"\\/\\b\\f\\n\\r\\t\\\"\\\\\""), "\"/\\b\\f\\n\\r\\t\\\"\\\\\""},
                {BYTES("\"\\u0000\\u001f\\u007f\""), "\"\\u0000\\u001f\x7f\""},
                {BYTES("\"caf\xc3\xa9 \xf0\x9f\x98\x80\""), "\"caf\xc3\xa9 \xf0\x9f\x98\x80\""},
                /* lone surrogates become U+FFFD, as in json-c */
                {BYTES("\"\\ud83d\""), "\"\xef\xbf\xbd\""},
                {BYTES("\"\\ude00\""), "\"\xef\xbf\xbd\""},
                {BYTES("\"\\ud83dx\""), "\"\xef\xbf\xbdx\""},
                {BYTES("\"\\ud83d\\n\""), "\"\xef\xbf\xbd\\n\""},
                {BYTES("\"\\ud83d\\u0041\""), "\"\xef\xbf\xbd"
                                              "A\""},
                {BYTES("\"\\ud83d\\ud83d\\ude00\""), "\"\xef\xbf\xbd\xf0\x9f\x98\x80\""},
                {BYTES("\"\\ude00\\ud83d\""), "\"\xef\xbf\xbd\xef\xbf\xbd\""},
                /* json-c 0.16's bug, kept: U+1D800 and U+1DC00 sent as pairs */
                {BYTES("\"\\ud836\\udc00\""), "\"\xef\xbf\xbd\""},
                {BYTES("\"\\ud837\\udc00\""), "\"\xef\xbf\xbd\""},
                {BYTES("\"\\ud836\\udc00\\udc00\""), "\"\xf0\x90\x80\x80\""},
                /* the same characters as raw UTF-8 pass */
                {BYTES("\"\xf0\x9d\xa0\x80\""), "\"\xf0\x9d\xa0\x80\""},
                /* keys: duplicates keep the first place and the last value */
                {BYTES("{\"a\":1,\"b\":2,\"a\":3}"), "{\"a\":3,\"b\":2}", NULL, true},
                {BYTES("{\"a\":{\"x\":1,\"x\":[2]}}"), "{\"a\":{\"x\":[2]}}", NULL, true},
                {BYTES("{\"a\":1,\"A\":2,\"\\u0061b\":3}"), "{\"a\":1,\"A\":2,\"ab\":3}"},
                {BYTES("{\"a\":1,\"\\u0061\":2}"), "{\"a\":2}", NULL, true},
                {BYTES("{\"k\":\"v\\u0000\"}"), "{\"k\":\"v\\u0000\"}"},
                {BYTES("{\"\":\"\"}"), "{\"\":\"\"}"},
                {BYTES("{\"\\ud83d\":1}"), "{\"\xef\xbf\xbd\":1}"},
        };

        check_parse_rows(rows, ELEMENTSOF(rows));
}
END_TEST

START_TEST(test_parse_refused) {
        static const ParseRow rows[] = {
                {BYTES(""), NULL, "invalid JSON"},
                {BYTES("   "), NULL, "invalid JSON"},
                {BYTES("{"), NULL, "invalid JSON"},
                {BYTES("["), NULL, "invalid JSON"},
                {BYTES("\"a"), NULL, "invalid JSON"},
                {BYTES("}"), NULL, "invalid JSON"},
                /* numbers */
                {BYTES("01"), NULL, "invalid JSON"},
                {BYTES("[01]"), NULL, "invalid JSON"},
                {BYTES("012345678901234567890"), NULL, "invalid JSON"},
                {BYTES("-"), NULL, "invalid JSON"},
                {BYTES("--1"), NULL, "invalid JSON"},
                {BYTES("+1"), NULL, "invalid JSON"},
                {BYTES(".5"), NULL, "invalid JSON"},
                {BYTES("1e"), NULL, "invalid JSON"},
                {BYTES("1e+"), NULL, "invalid JSON"},
                {BYTES("1.5e"), NULL, "invalid JSON"},
                {BYTES("[1.5.5]"), NULL, "invalid JSON"},
                {BYTES("[1e5e5]"), NULL, "invalid JSON"},
                {BYTES("[1-2]"), NULL, "invalid JSON"},
                {BYTES("[1.-5]"), NULL, "invalid JSON"},
                {BYTES("[1"), NULL, "invalid JSON"},
                {BYTES("[1a]"), NULL, "invalid JSON"},
                {BYTES("NaN"), NULL, "invalid JSON"},
                {BYTES("[nan]"), NULL, "invalid JSON"},
                {BYTES("[-Infinity]"), NULL, "invalid JSON"},
                {BYTES("0x10"), NULL, "invalid JSON"},
                /* literals */
                {BYTES("tru"), NULL, "invalid JSON"},
                {BYTES("nul"), NULL, "invalid JSON"},
                {BYTES("nulll"), NULL, "invalid JSON"},
                {BYTES("[true1]"), NULL, "invalid JSON"},
                {BYTES("True"), NULL, "invalid JSON"},
                {BYTES("[fals]"), NULL, "invalid JSON"},
                /* structure, strict */
                {BYTES("{\"a\":1,}"), NULL, "invalid JSON"},
                {BYTES("[1,]"), NULL, "invalid JSON"},
                {BYTES("[,1]"), NULL, "invalid JSON"},
                {BYTES("{,}"), NULL, "invalid JSON"},
                {BYTES("{\"a\"}"), NULL, "invalid JSON"},
                {BYTES("{\"a\":}"), NULL, "invalid JSON"},
                {BYTES("{\"a\" 1}"), NULL, "invalid JSON"},
                {BYTES("{\"a\":1 \"b\":2}"), NULL, "invalid JSON"},
                {BYTES("{1:2}"), NULL, "invalid JSON"},
                {BYTES("{'a':1}"), NULL, "invalid JSON"},
                {BYTES("['a']"), NULL, "invalid JSON"},
                {BYTES("[1 2]"), NULL, "invalid JSON"},
                {BYTES("\"a\" \"b\""), NULL, "invalid JSON"},
                {BYTES("1 2"), NULL, "invalid JSON"},
                {BYTES("1{}"), NULL, "invalid JSON"},
                {BYTES("{}x"), NULL, "trailing data after JSON object"},
                {BYTES("{} {}"), NULL, "trailing data after JSON object"},
                {BYTES("[]]"), NULL, "trailing data after JSON object"},
                {BYTES("{}/**/"), NULL, "trailing data after JSON object"},
                {BYTES("/**/{}"), NULL, "invalid JSON"},
                {BYTES("{}\0"), NULL, "trailing data after JSON object"},
                {BYTES("[\0]"), NULL, "invalid JSON"},
                {BYTES("\xef\xbb\xbf{}"), NULL, "invalid JSON"},
                {BYTES("\v{}"), NULL, "invalid JSON"},
                /* escapes */
                {BYTES("\"\\x\""), NULL, "invalid JSON"},
                {BYTES("\"\\u12\""), NULL, "invalid JSON"},
                {BYTES("\"\\u12g4\""), NULL, "invalid JSON"},
                {BYTES("\"\\U0041\""), NULL, "invalid JSON"},
                {BYTES("\"\\'\""), NULL, "invalid JSON"},
                {BYTES("\"\\ud83d\\uzzzz\""), NULL, "invalid JSON"},
                {BYTES("\"\\ud83d\\u\""), NULL, "invalid JSON"},
                {BYTES("{\"\\x\":1}"), NULL, "invalid JSON"},
                /* json-c validates UTF-8 as it reads: an escape cut short by a
                 * character, or a backslash before a byte that starts none */
                {BYTES("\"\\u12\xc3\xa9\""), NULL, "invalid UTF-8"},
                {BYTES("\"\\u\xc3\xa9\""), NULL, "invalid UTF-8"},
                {BYTES("\"\\\x80\""), NULL, "invalid UTF-8"},
                {BYTES("\"\\\xc3"
                       "a\""),
                 NULL, "invalid UTF-8"},
                {BYTES("\"\\ud83d\\\x80\""), NULL, "invalid UTF-8"},
                {BYTES("{\"\\u1\xc3\xa9\":1}"), NULL, "invalid UTF-8"},
                /* the lexical check's */
                {BYTES("\"\\\xc3\xa9\""), NULL, "invalid UTF-8"},
                {BYTES("\"\xff\""), NULL, "invalid UTF-8"},
                {BYTES("\"\xc0\x80\""), NULL, "invalid UTF-8"},
                {BYTES("\"\xed\xa0\x80\""), NULL, "invalid UTF-8"},
                {BYTES("\xc3\xa9"), NULL, "invalid JSON"},
                {BYTES("\xff"), NULL, "invalid UTF-8"},
                {BYTES("\"a\tb\""), NULL, "invalid JSON: control character in string"},
                {BYTES("{\"a\\u0000\":1}"), NULL, "NUL in object key"},
                /* its reasons come first, wherever they are */
                {BYTES("[1 2, \"\x01\"]"), NULL, "invalid JSON: control character in string"},
                {BYTES("{\"a\" 1, \"\xff\":1}"), NULL, "invalid UTF-8"},
        };

        check_parse_rows(rows, ELEMENTSOF(rows));
}
END_TEST

/* Nested n levels of arrays (or objects) around inner. */
static char *nested(size_t n, bool objects, const char *inner, bool close) {
        size_t cap = n * 8 + strlen(inner) + 1, len = 0;
        char *s = malloc(cap);

        ck_assert_ptr_nonnull(s);
        for (size_t k = 0; k < n; k++)
                len += (size_t)snprintf(s + len, cap - len, "%s", objects ? "{\"k\":" : "[");
        len += (size_t)snprintf(s + len, cap - len, "%s", inner);
        for (size_t k = 0; close && k < n; k++)
                len += (size_t)snprintf(s + len, cap - len, "%s", objects ? "}" : "]");
        return s;
}

START_TEST(test_parse_depth) {
        static const struct {
                unsigned max_depth;
                size_t levels;
                bool objects;
                const char *inner;
                bool close;
                const char *reason; /* NULL: accepted */
        } rows[] = {
                /* VARLINK_MAX_DEPTH 32: the 32nd level may be an empty container */
                {32, 31, false, "1", true, NULL},
                {32, 31, false, "[]", true, NULL},
                {32, 31, false, "{}", true, NULL},
                {32, 32, false, "1", true, "JSON nested too deeply"},
                {32, 31, false, "[1]", true, "JSON nested too deeply"},
                {32, 31, false, "{\"a\":}", true, "JSON nested too deeply"},
                {32, 31, false, "[,]", true, "JSON nested too deeply"},
                {32, 31, true, "{\"a\":1}", true, "JSON nested too deeply"},
                {32, 30, true, "{\"a\":1}", true, NULL},
                {32, 1000, false, "", true, "JSON nested too deeply"},
                /* at the end of the text json-c reports the end */
                {32, 32, false, "", false, "invalid JSON"},
                {32, 32, false, " ", false, "invalid JSON"},
                {32, 31, true, "{\"a\":", false, "invalid JSON"},
                {32, 33, false, "", false, "JSON nested too deeply"},
                /* other limits */
                {1, 0, false, "[]", true, NULL},
                {1, 0, false, "[1]", true, "JSON nested too deeply"},
                {1, 0, false, "{}", true, NULL},
                {1, 0, false, "{\"a\":1}", true, "JSON nested too deeply"},
                {1, 0, false, "1", true, NULL},
                {2, 1, false, "[]", true, NULL},
                {2, 1, false, "[1]", true, "JSON nested too deeply"},
                {2, 0, false, "{\"a\":1,\"b\":[]}", true, NULL},
                {2, 0, false, "{\"a\":1,\"b\":[2]}", true, "JSON nested too deeply"},
                /* the first error wins */
                {2, 0, false, "[[1] x]", true, "invalid JSON"},
                {2, 0, false, "[1 [1]]", true, "invalid JSON"},
                {2, 0, false, "[[1], \"\\x\"]", true, "JSON nested too deeply"},
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                char *text = nested(rows[i].levels, rows[i].objects, rows[i].inner, rows[i].close);
                struct json_object *o = NULL, *ref = NULL;
                const char *reason = NULL, *ref_reason = NULL;
                int r = json_codec_parse(text, strlen(text), rows[i].max_depth, &o, NULL, &reason);

                if (rows[i].reason)
                        ck_assert_msg(r == -EBADMSG && strcmp(reason, rows[i].reason) == 0,
                                      "row %zu: got %d (%s), expected '%s'", i, r, reason ? reason : "-",
                                      rows[i].reason);
                else
                        ck_assert_msg(r == 0, "row %zu: got %d (%s)", i, r, reason);
                /* json-c agrees, at its depth */
                if (rows[i].max_depth == VARLINK_MAX_DEPTH) {
                        int rr = json_oracle_tokener(text, strlen(text), &ref, &ref_reason);

                        ck_assert_msg(rr == r && (r == 0 || strcmp(reason, ref_reason) == 0),
                                      "row %zu: json-c %d (%s)", i, rr, ref_reason ? ref_reason : "-");
                        json_object_put(ref);
                }
                json_object_put(o);
                free(text);
        }
}
END_TEST

/* Objects past the 11 members a fresh json-c table holds before it grows
 * (json-codec.c grows it itself first), arrays past the 32 slots json-c
 * starts with, strings and keys past the parser's stack buffers. */
START_TEST(test_parse_large) {
        char text[40000], *w;
        size_t len = 0;
        struct json_object *o, *ref;
        const char *reason = NULL;
        bool dup = true;
        char big[600];

        memset(big, 'x', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        len += (size_t)snprintf(text + len, sizeof(text) - len, "{");
        for (int k = 0; k < 300; k++)
                len += (size_t)snprintf(text + len, sizeof(text) - len, "%s\"key%d\":[%d,\"v\\u00e9%d\"]",
                                        k ? "," : "", k, k, k);
        len += (size_t)snprintf(text + len, sizeof(text) - len, ",\"%s\\n\":\"%s\\t\",\"a\":[", big, big);
        for (int k = 0; k < 100; k++)
                len += (size_t)snprintf(text + len, sizeof(text) - len, "%s%d.5", k ? "," : "", k);
        len += (size_t)snprintf(text + len, sizeof(text) - len, "]}");
        ck_assert_uint_lt(len, sizeof(text) - 1);

        ck_assert_int_eq(json_codec_parse(text, len, VARLINK_MAX_DEPTH, &o, &dup, &reason), 0);
        ck_assert(!dup);
        ck_assert_int_eq(json_object_object_length(o), 302);
        ck_assert_int_eq(json_oracle_tokener(text, len, &ref, &reason), 0);
        ck_assert(same_value(o, ref));
        w = written(o);
        ck_assert_str_eq(w, json_object_to_json_string_ext(ref, JSON_C_TO_STRING_PLAIN |
                                                                        JSON_C_TO_STRING_NOSLASHESCAPE));
        free(w);
        json_object_put(ref);
        json_object_put(o);
}
END_TEST

START_TEST(test_scan_members) {
        size_t n = 99;

        ck_assert_ptr_null(json_codec_scan(BYTES("{\"a\":{\"b:\":1},\"c\":[{\"d\":2}]}"), &n));
        ck_assert_uint_eq(n, 4);
        ck_assert_ptr_null(json_codec_scan(BYTES("[]"), &n));
        ck_assert_uint_eq(n, 0);
        ck_assert_ptr_null(json_codec_scan(BYTES("{}"), NULL));
}
END_TEST

/* json-c reads numbers in the C locale whatever the process's is; so does
 * the codec, and it writes a decimal point. */
START_TEST(test_locale) {
        static const char *const locales[] = {"de_DE.UTF-8", "fr_FR.UTF-8", "de_DE.utf8", "fr_FR.utf8"};
        struct json_object *o = NULL, *d;
        const char *reason = NULL;
        const char *set = NULL;
        char *w;

        for (size_t i = 0; i < ELEMENTSOF(locales) && !set; i++)
                set = setlocale(LC_NUMERIC, locales[i]);
        if (!set) {
                tb_check_skip("no locale with a decimal comma is installed (de_DE.UTF-8, fr_FR.UTF-8)");
                return;
        }
        ck_assert_int_eq(json_codec_parse(BYTES("[1.5,-2.25e1]"), VARLINK_MAX_DEPTH, &o, NULL, &reason), 0);
        ck_assert(json_object_get_double(json_object_array_get_idx(o, 0)) == 1.5);
        ck_assert(json_object_get_double(json_object_array_get_idx(o, 1)) == -22.5);
        w = written(o);
        ck_assert_str_eq(w, "[1.5,-2.25e1]");
        free(w);
        json_object_put(o);
        ck_assert_int_eq(json_codec_parse(BYTES("[1,5]"), VARLINK_MAX_DEPTH, &o, NULL, &reason), 0);
        ck_assert_int_eq(json_object_array_length(o), 2);
        json_object_put(o);
        d = json_object_new_double(0.5);
        w = written(d);
        ck_assert_str_eq(w, "0.5");
        ck_assert_str_eq(w, json_object_to_json_string_ext(d, JSON_C_TO_STRING_PLAIN));
        free(w);
        json_object_put(d);
        setlocale(LC_NUMERIC, "C");
}
END_TEST

/* ---- writing ---- */

static struct json_object *string_of(const char *s, size_t n) {
        struct json_object *o = json_object_new_string_len(s, (int)n);

        ck_assert_ptr_nonnull(o);
        return o;
}

START_TEST(test_write_values) {
        struct {
                struct json_object *o;
                const char *expected;
        } rows[] = {
                {NULL, "null"},
                {json_object_new_boolean(1), "true"},
                {json_object_new_boolean(0), "false"},
                {json_object_new_int64(0), "0"},
                {json_object_new_int64(-1), "-1"},
                {json_object_new_int64(INT64_MIN), "-9223372036854775808"},
                {json_object_new_int64(INT64_MAX), "9223372036854775807"},
                {json_object_new_uint64(UINT64_MAX), "18446744073709551615"},
                {json_object_new_uint64(5), "5"},
                {json_object_new_int(-7), "-7"},
                {json_object_new_double(100.0), "100.0"},
                {json_object_new_double(-0.0), "-0.0"},
                {json_object_new_double(0.1), "0.10000000000000001"},
                {json_object_new_double(1e22), "1e+22"},
                {json_object_new_double(1e21), "1e+21"},
                {json_object_new_double(123456789012345678.0), "1.2345678901234568e+17"},
                {json_object_new_double(5e-324), "4.9406564584124654e-324"},
                {json_object_new_double(NAN), "NaN"},
                {json_object_new_double(INFINITY), "Infinity"},
                {json_object_new_double(-INFINITY), "-Infinity"},
                {json_object_new_double_s(1.5, "1.50"), "1.50"},
                {json_object_new_double_s(1.5, "not a number"), "not a number"},
                {string_of(BYTES("")), "\"\""},
                {string_of(BYTES("\"\\/\b\f\n\r\t")), "\"\\\"\\\\/\\b\\f\\n\\r\\t\""},
                {string_of(BYTES("\x00\x01\x0b\x1f\x20\x7f")), "\"\\u0000\\u0001\\u000b\\u001f \x7f\""},
                {string_of(BYTES("caf\xc3\xa9 \xf0\x9f\x98\x80 \x80\xff\xc0\xaf")),
                 "\"caf\xc3\xa9 \xf0\x9f\x98\x80 \x80\xff\xc0\xaf\""},
                {json_object_new_object(), "{}"},
                {json_object_new_array(), "[]"},
        };

        for (size_t i = 0; i < ELEMENTSOF(rows); i++) {
                char *w = written(rows[i].o);
                const char *ref = json_object_to_json_string_ext(
                        rows[i].o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);

                ck_assert_msg(strcmp(w, rows[i].expected) == 0, "row %zu: '%s', expected '%s'", i, w,
                              rows[i].expected);
                ck_assert_msg(strcmp(w, ref) == 0, "row %zu: '%s', json-c '%s'", i, w, ref);
                free(w);
                json_object_put(rows[i].o);
        }
}
END_TEST

START_TEST(test_write_containers) {
        struct json_object *o = json_object_new_object(), *a = json_object_new_array(), *inner;
        const char *ref;
        char *w;

        json_object_object_add(o, "b", json_object_new_int(1));
        json_object_object_add(o, "a", NULL);
        json_object_object_add(o, "q\"k\n\x01", json_object_new_string("v"));
        json_object_array_add(a, NULL);
        json_object_array_add(a, json_object_new_boolean(1));
        inner = json_object_new_object();
        json_object_object_add(inner, "x", json_object_new_array());
        json_object_array_add(a, inner);
        json_object_object_add(o, "list", a);
        /* a replaced value keeps its place */
        json_object_object_add(o, "b", json_object_new_string("again"));

        w = written(o);
        ck_assert_str_eq(
                w,
                "{\"b\":\"again\",\"a\":null,\"q\\\"k\\n\\u0001\":\"v\",\"list\":[null,true,{\"x\":[]}]}");
        ref = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        ck_assert_str_eq(w, ref);
        free(w);
        json_object_put(o);
}
END_TEST

/* The varlink messages: appended after what the buffer holds; on failure
 * the buffer holds just that again (tests/unit/test-codec.c has the
 * exact messages). */
START_TEST(test_write_appends) {
        VarlinkBuffer b = {};
        struct json_object *p = json_object_new_object();

        json_object_object_add(p, "d", json_object_new_double_s(2.0, "2.0"));
        ck_assert_int_eq(varlink_buffer_reserve(&b, 3), 0);
        memcpy(b.data, "abc", 3);
        b.len = 3;
        ck_assert_int_eq(json_codec_write(&b, p), 0);
        ck_assert_int_eq(varlink_format_reply(&b, p, true), 0);
        ck_assert_uint_eq(b.len, 3 + 9 + 42);
        ck_assert(memcmp(b.data, "abc{\"d\":2.0}{\"parameters\":{\"d\":2.0},\"continues\":true}", b.len) ==
                  0);
        varlink_buffer_clear(&b);
        json_object_put(p);
}
END_TEST

/* ---- out of memory ---- */

/* Documents that allocate in every way the parser does: objects (and
 * tables that grow), keys, arrays (and their growth and shrink), strings
 * on the stack and on the heap, escapes, doubles with their text,
 * integers of both kinds. */
static const char *const oom_documents[] = {
        "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{\"estimate\":100,\"agent\":"
        "\"o\\u006fm "
        "\\\"strict\\\"\",\"class\":\"t\\tab\"},\"org.example\":{\"x\":[1,2.5,-3e2,null,true]}}",
        "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35]",
        "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8,\"i\":9,\"j\":10,\"k\":11,\"l\":"
        "12,"
        "\"m\":13,\"n\":14,\"o\":15,\"p\":16,\"q\":17,\"r\":18,\"s\":19,\"t\":20,\"u\":21,\"v\":22,\"w\":23,"
        "\"x\":24,\"y\":25,\"z\":26,\"a\":27}",
        "{\"\\ud83d\\ude00 "
        "k\":\"\\ud83d\\ude00\\u0000\",\"big\":18446744073709551615,\"neg\":-5,\"d\":01.5e1}",
        NULL, /* a long string and key, built below */
};

static char *oom_long_document(void) {
        char *s = malloc(2000);
        size_t n = 0;

        ck_assert_ptr_nonnull(s);
        n += (size_t)snprintf(s + n, 2000 - n, "{\"");
        for (int k = 0; k < 200; k++)
                n += (size_t)snprintf(s + n, 2000 - n, "k");
        n += (size_t)snprintf(s + n, 2000 - n, "\":\"");
        for (int k = 0; k < 150; k++)
                n += (size_t)snprintf(s + n, 2000 - n, "\\n%c", 'a' + k % 26);
        snprintf(s + n, 2000 - n, "\"}");
        return s;
}

typedef struct OomTally {
        unsigned long runs, enomem, ok;
} OomTally;

static void oom_parse(const char *label, const char *text, OomTally *t) {
        size_t len = strlen(text);
        struct json_object *ref = NULL;
        const char *reason = NULL;
        unsigned long n;
        bool ref_dup = false;

        fa_arm(ULONG_MAX, false);
        ck_assert_msg(json_codec_parse(text, len, VARLINK_MAX_DEPTH, &ref, &ref_dup, &reason) == 0, "%s: %s",
                      label, reason);
        n = fa_disarm();
        ck_assert_msg(n > 0, "%s: no allocations seen: the replacement allocator is not in use", label);
        for (int rest = 0; rest < 2; rest++)
                for (unsigned long k = 0; k < n; k++) {
                        struct json_object *o = (struct json_object *)text;
                        long live = fa.live;
                        bool dup = !ref_dup;
                        int r;

                        reason = "unset";
                        fa_arm(k, rest);
                        r = json_codec_parse(text, len, VARLINK_MAX_DEPTH, &o, &dup, &reason);
                        (void)fa_disarm();
                        t->runs++;
                        if (r == 0) {
                                if (!same_value(o, ref) || dup != ref_dup || reason)
                                        ck_abort_msg("%s: allocation %lu failing%s: a different value",
                                                     label, k, rest ? " and after" : "");
                                t->ok++;
                                json_object_put(o);
                        } else if (r != -ENOMEM || o || reason)
                                ck_abort_msg("%s: allocation %lu failing%s: %d (%s)", label, k,
                                             rest ? " and after" : "", r, reason ? reason : "-");
                        else
                                t->enomem++;
                        if (fa.live != live)
                                ck_abort_msg("%s: allocation %lu failing%s: %ld blocks leaked", label, k,
                                             rest ? " and after" : "", fa.live - live);
                }
        json_object_put(ref);
}

START_TEST(test_oom_parse) {
#if !TEST_JSON_INTERPOSE
        tb_check_skip("allocation failures are injected only without AddressSanitizer");
        return;
#endif
        OomTally t = {};
        char *long_doc = oom_long_document();

        for (size_t i = 0; i < ELEMENTSOF(oom_documents); i++) {
                char label[32];

                snprintf(label, sizeof(label), "document %zu", i);
                oom_parse(label, oom_documents[i] ? oom_documents[i] : long_doc, &t);
        }
        free(long_doc);
        ck_assert_msg(t.enomem > 100, "only %lu of %lu runs failed", t.enomem, t.runs);
}
END_TEST

/* varlink_call_parse() and varlink_reply_parse(): the header checks and the
 * parameters object they add (a root of 11 members makes the table grow
 * for it). */
static void oom_message(const char *label, const char *msg, bool call, OomTally *t) {
        size_t len = strlen(msg);
        const char *reason = NULL;
        VarlinkCall ref_call = {}, c;
        VarlinkReply ref_reply = {}, rp;
        unsigned long n;
        int r;

        fa_arm(ULONG_MAX, false);
        r = call ? varlink_call_parse(msg, len, &ref_call, &reason)
                 : varlink_reply_parse(msg, len, &ref_reply, &reason);
        n = fa_disarm();
        ck_assert_msg(r == 0, "%s: %s", label, reason);
        for (int rest = 0; rest < 2; rest++)
                for (unsigned long k = 0; k < n; k++) {
                        long live = fa.live;

                        reason = "unset";
                        fa_arm(k, rest);
                        r = call ? varlink_call_parse(msg, len, &c, &reason)
                                 : varlink_reply_parse(msg, len, &rp, &reason);
                        (void)fa_disarm();
                        t->runs++;
                        if (r == 0) {
                                bool same = call ? strcmp(c.method, ref_call.method) == 0 &&
                                                            same_value(c.root, ref_call.root) &&
                                                            same_value(c.parameters, ref_call.parameters)
                                                 : same_value(rp.root, ref_reply.root) &&
                                                            same_value(rp.parameters, ref_reply.parameters);

                                if (!same || reason)
                                        ck_abort_msg("%s: allocation %lu failing: a different message",
                                                     label, k);
                                t->ok++;
                        } else if (r != -ENOMEM || reason || (call ? c.root != NULL : rp.root != NULL))
                                ck_abort_msg("%s: allocation %lu failing: %d (%s)", label, k, r,
                                             reason ? reason : "-");
                        else
                                t->enomem++;
                        if (call)
                                varlink_call_done(&c);
                        else
                                varlink_reply_done(&rp);
                        if (fa.live != live)
                                ck_abort_msg("%s: allocation %lu failing: %ld blocks leaked", label, k,
                                             fa.live - live);
                }
        varlink_call_done(&ref_call);
        varlink_reply_done(&ref_reply);
}

START_TEST(test_oom_messages) {
#if !TEST_JSON_INTERPOSE
        tb_check_skip("allocation failures are injected only without AddressSanitizer");
        return;
#endif
        OomTally t = {};

        oom_message("call", oom_documents[0], true, &t);
        oom_message("call without parameters",
                    "{\"method\":\"a.b.C\",\"a.1\":1,\"a.2\":2,\"a.3\":3,\"a.4\":4,"
                    "\"a.5\":5,\"a.6\":6,\"a.7\":7,\"a.8\":8,\"a.9\":9,\"a.10\":10}",
                    true, &t);
        oom_message("call with null parameters",
                    "{\"method\":\"a.b.C\",\"parameters\":null,\"x.y\":[\"\\n\"]}", true, &t);
        oom_message("reply",
                    "{\"parameters\":{\"scopes\":[{\"name\":\"process:1\",\"used\":5}]},\"continues\":true}",
                    false, &t);
        oom_message("error",
                    "{\"error\":\"io.tokenbudget.agent.NotOwner\",\"a.1\":1,\"a.2\":2,\"a.3\":3,\"a.4\":4,"
                    "\"a.5\":5,\"a.6\":6,\"a.7\":7,\"a.8\":8,\"a.9\":9,\"a.10\":10}",
                    false, &t);
        ck_assert_msg(t.enomem > 50, "only %lu of %lu runs failed", t.enomem, t.runs);
}
END_TEST

/* A reply like admin Status over many process scopes: tens of KiB, so the
 * buffer grows several times while it is written. */
static struct json_object *status_parameters(int n) {
        struct json_object *p = json_object_new_object(), *a = json_object_new_array();

        for (int i = 0; i < n; i++) {
                struct json_object *s = json_object_new_object();
                char name[32];

                snprintf(name, sizeof(name), "process:%d", 1000 + i);
                json_object_object_add(s, "scope", json_object_new_string(name));
                json_object_object_add(s, "limit", json_object_new_int64(100000));
                json_object_object_add(s, "used", json_object_new_uint64((uint64_t)i * 37));
                json_object_object_add(s, "ratio", json_object_new_double(i / 7.0));
                json_object_object_add(s, "label", json_object_new_string("agent \"x\"\tlabel/\xc3\xa9"));
                json_object_object_add(s, "none", NULL);
                json_object_array_add(a, s);
        }
        json_object_object_add(p, "scopes", a);
        return p;
}

typedef enum OomWrite { OOM_REPLY, OOM_ERROR, OOM_CALL, OOM_JSON, _OOM_WRITE_MAX } OomWrite;

static int oom_write_one(OomWrite w, VarlinkBuffer *b, struct json_object *p) {
        switch (w) {
        case OOM_REPLY:
                return varlink_format_reply(b, p, true);
        case OOM_ERROR:
                return varlink_format_error(b, "io.tokenbudget.agent.Budget\"Exhausted", p);
        case OOM_CALL:
                return varlink_format_call(b, "io.tokenbudget.admin.Status", p, false, true);
        default:
                return json_codec_write(b, p);
        }
}

static const char oom_prefix[] = "earlier message\0";

/* One run, armed to fail at allocation fail_at (and after, with rest),
 * into a buffer that holds start bytes of oom_prefix first; returns the
 * result and, in *ret_n, the allocations it made. */
static int oom_write_run(OomWrite w, struct json_object *p, size_t start, unsigned long fail_at, bool rest,
                         VarlinkBuffer *b, unsigned long *ret_n) {
        int r;

        *b = (VarlinkBuffer){};
        if (start > 0) {
                ck_assert_int_eq(varlink_buffer_reserve(b, start), 0);
                memcpy(b->data, oom_prefix, start);
                b->len = start;
        }
        fa_arm(fail_at, rest);
        r = oom_write_one(w, b, p);
        *ret_n = fa_disarm();
        return r;
}

static void oom_write(const char *label, struct json_object *p, OomTally *t) {
        for (OomWrite w = 0; w < _OOM_WRITE_MAX; w++)
                for (size_t start = 0; start <= sizeof(oom_prefix); start += sizeof(oom_prefix)) {
                        VarlinkBuffer ref = {}, b;
                        unsigned long n;

                        ck_assert_int_eq(oom_write_one(w, &ref, p), 0);
                        /* how many allocations a clean run makes */
                        ck_assert_int_eq(oom_write_run(w, p, start, ULONG_MAX, false, &b, &n), 0);
                        varlink_buffer_clear(&b);
                        for (int rest = 0; rest < 2; rest++)
                                for (unsigned long k = 0; k < n; k++) {
                                        long live = fa.live;
                                        unsigned long seen;
                                        int r = oom_write_run(w, p, start, k, rest, &b, &seen);

                                        t->runs++;
                                        if (r == 0) {
                                                if (b.len != start + ref.len ||
                                                    memcmp(b.data + start, ref.data, ref.len) != 0 ||
                                                    memcmp(b.data, oom_prefix, start) != 0)
                                                        ck_abort_msg("%s, kind %d: allocation %lu failing: "
                                                                     "other bytes",
                                                                     label, w, k);
                                                t->ok++;
                                        } else if (r != -ENOMEM || b.len != start ||
                                                   (start && memcmp(b.data, oom_prefix, start) != 0))
                                                ck_abort_msg("%s, kind %d: allocation %lu failing: %d, %zu "
                                                             "bytes left",
                                                             label, w, k, r, b.len);
                                        else
                                                t->enomem++;
                                        varlink_buffer_clear(&b);
                                        if (fa.live != live)
                                                ck_abort_msg("%s, kind %d: allocation %lu failing: %ld "
                                                             "blocks leaked",
                                                             label, w, k, fa.live - live);
                                }
                        varlink_buffer_clear(&ref);
                }
}

START_TEST(test_oom_write) {
#if !TEST_JSON_INTERPOSE
        tb_check_skip("allocation failures are injected only without AddressSanitizer");
        return;
#endif
        struct json_object *small = json_object_new_object(), *big = status_parameters(400);
        OomTally t = {};

        json_object_object_add(small, "allocation", json_object_new_string("0000000100000001"));
        json_object_object_add(small, "granted", json_object_new_int64(100));
        oom_write("small", small, &t);
        oom_write("status", big, &t);
        oom_write("none", NULL, &t);
        json_object_put(small);
        json_object_put(big);
        ck_assert_msg(t.enomem > 20, "only %lu of %lu runs failed", t.enomem, t.runs);
}
END_TEST

static Suite *json_suite(void) {
        Suite *s = suite_create("json");
        TCase *tc = tcase_create("parse");

        tcase_add_test(tc, test_parse_values);
        tcase_add_test(tc, test_parse_refused);
        tcase_add_test(tc, test_parse_depth);
        tcase_add_test(tc, test_parse_large);
        tcase_add_test(tc, test_scan_members);
        tcase_add_test(tc, test_locale);
        suite_add_tcase(s, tc);

        tc = tcase_create("write");
        tcase_add_test(tc, test_write_values);
        tcase_add_test(tc, test_write_containers);
        tcase_add_test(tc, test_write_appends);
        suite_add_tcase(s, tc);

        /* Each allocation failing in turn: slower under the sanitizers. */
        tc = tcase_create("oom");
        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_oom_parse);
        tcase_add_test(tc, test_oom_messages);
        tcase_add_test(tc, test_oom_write);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(json_suite());
}
