/* SPDX-License-Identifier: MIT */
/*
 * Strict JSON for the Varlink codec (json-codec.h): a lexical check, a
 * recursive-descent parser that builds json-c objects, and a writer into a
 * VarlinkBuffer. Both replace json-c's own code paths, which do not check
 * their allocations (json-c 0.16: the tokener's unchecked strdup() of a key
 * crashes, its printbuf appends drop data; the serializer ignores printbuf
 * growth failures, upstream too); here every allocation is checked, and a
 * failure frees what was built and returns -ENOMEM. Everything else
 * follows json-c 0.16 (Debian 12) to the byte, including its quirks, which
 * are named where they are kept. json-c stays the object model and, in the
 * tests only, the oracle. It does not know Varlink: varlink.c applies the
 * message rules on top. Pure: no I/O, no clock, no global state.
 */
#include <assert.h>
#include <errno.h>
#include <langinfo.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "json-codec.h"
#include "utf8.h"
#include "varlink-internal.h"

/*
 * Lexical check. json-c 0.16 in strict mode still accepts single-quoted
 * strings, NaN and Infinity, raw control characters inside strings, and its
 * UTF-8 validation lets overlong forms and surrogates through. One pass over
 * the bytes rejects all of that, finds trailing data after the top-level
 * value, keys containing \u0000 (json-c would silently truncate them, so
 * "method\u0000x" would become "method") and counts the object members in
 * the text. It runs over the whole text before the parser, so its reasons
 * come first wherever they are in the text.
 */

/* Bytes allowed outside strings: JSON whitespace, structure, numbers and the
 * letters of true, false and null. */
static const bool json_outside_allowed[256] = {
        [' '] = true, ['\t'] = true, ['\n'] = true, ['\r'] = true, ['{'] = true, ['}'] = true, ['['] = true,
        [']'] = true, [':'] = true,  [','] = true,  ['0'] = true,  ['1'] = true, ['2'] = true, ['3'] = true,
        ['4'] = true, ['5'] = true,  ['6'] = true,  ['7'] = true,  ['8'] = true, ['9'] = true, ['+'] = true,
        ['-'] = true, ['.'] = true,  ['e'] = true,  ['E'] = true,  ['t'] = true, ['r'] = true, ['u'] = true,
        ['f'] = true, ['a'] = true,  ['l'] = true,  ['s'] = true,  ['n'] = true,
};

/* Scans the string whose opening quote is at s[*i]; leaves *i after the
 * closing quote. */
static const char *json_scan_string(const unsigned char *s, size_t len, size_t *i, bool *ret_has_nul) {
        size_t p = *i + 1;

        *ret_has_nul = false;
        while (p < len) {
                unsigned char c = s[p];
                size_t n;

                if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
                        p++;
                        continue;
                }
                if (c == '"') {
                        *i = p + 1;
                        return NULL;
                }
                if (c == '\\') {
                        if (len - p >= 6 && memcmp(s + p + 1, "u0000", 5) == 0)
                                *ret_has_nul = true;
                        /* Skip the escaped byte so \" does not end the string;
                         * the parser checks the escape itself. */
                        p += 2;
                        continue;
                }
                if (c < 0x20)
                        return "invalid JSON: control character in string";
                n = utf8_sequence_len(s + p, len - p);
                if (n == 0)
                        return "invalid UTF-8";
                p += n;
        }
        return "invalid JSON";
}

const char *json_codec_scan(const char *text, size_t len, size_t *ret_n_members) {
        const unsigned char *s = (const unsigned char *)text;
        bool closed = false, nul_string = false;
        size_t depth = 0, n_members = 0;

        for (size_t i = 0; i < len;) {
                unsigned char c = s[i];
                const char *reason;

                if (closed && !json_is_space(c))
                        return "trailing data after JSON object";
                if (c == '"') {
                        reason = json_scan_string(s, len, &i, &nul_string);
                        if (reason)
                                return reason;
                        continue;
                }
                if (!json_outside_allowed[c])
                        return c >= 0x80 && utf8_sequence_len(s + i, len - i) == 0 ? "invalid UTF-8"
                                                                                   : "invalid JSON";
                if (c == '{' || c == '[')
                        depth++;
                else if (c == '}' || c == ']') {
                        if (depth == 0)
                                return "invalid JSON";
                        closed = --depth == 0;
                } else if (c == ':') {
                        if (nul_string)
                                return "NUL in object key";
                        n_members++;
                }
                if (!json_is_space(c))
                        nul_string = false;
                i++;
        }
        if (ret_n_members)
                *ret_n_members = n_members;
        return NULL;
}

/*
 * The parser: json-c 0.16's strict grammar (json_tokener_parse_ex() with
 * JSON_TOKENER_STRICT) over text that passed the lexical check, so every
 * byte outside strings is one it allows and strings are valid UTF-8 without
 * raw control characters. Errors are "invalid JSON" except the depth limit,
 * which json-c checks where a member value starts, before looking at it,
 * and a \u escape cut short by a non-ASCII character, "invalid UTF-8" (see
 * hex4()): the first error in the text wins, as in json-c.
 */

/* Strings and numbers up to this long are decoded on the stack. */
#define PARSER_STACK_BYTES 256
/* Keys up to this long, per nesting level (a key lives until its value is parsed). */
#define KEY_STACK_BYTES 128

typedef struct JsonParser {
        const char *s;
        size_t len;
        size_t i;
        unsigned max_depth;
        bool duplicate_key;
        const char *reason; /* with -EBADMSG */
        char *heap;         /* scratch for longer strings, freed at the end */
        size_t heap_size;
        char stack[PARSER_STACK_BYTES];
} JsonParser;

static int parser_invalid(JsonParser *p) {
        p->reason = "invalid JSON";
        return -EBADMSG;
}

static int parser_bad_escape(JsonParser *p, int r) {
        if (r != -EILSEQ)
                return parser_invalid(p);
        p->reason = "invalid UTF-8";
        return -EBADMSG;
}

/* The next byte, or NUL at the end (what json-c sees there: the codec
 * finishes a parse with a NUL; the lexical check let no NUL through). */
static unsigned char parser_peek(const JsonParser *p) {
        return p->i < p->len ? (unsigned char)p->s[p->i] : '\0';
}

static void parser_skip_space(JsonParser *p) {
        while (p->i < p->len && json_is_space((unsigned char)p->s[p->i]))
                p->i++;
}

/* A buffer of at least n bytes, valid until the next call. */
static char *parser_scratch(JsonParser *p, size_t n) {
        char *h;

        if (n <= sizeof(p->stack))
                return p->stack;
        if (n <= p->heap_size)
                return p->heap;
        h = malloc(n);
        if (!h)
                return NULL;
        free(p->heap);
        p->heap = h;
        p->heap_size = n;
        return h;
}

/* The string whose opening quote is at s[p->i]: its content is
 * s[*ret_start..*ret_end); p->i moves past the closing quote. */
static int parser_string_span(JsonParser *p, size_t *ret_start, size_t *ret_end, bool *ret_escaped) {
        bool escaped = false;

        for (size_t i = p->i + 1; i < p->len;) {
                char c = p->s[i];

                if (c == '"') {
                        *ret_start = p->i + 1;
                        *ret_end = i;
                        *ret_escaped = escaped;
                        p->i = i + 1;
                        return 0;
                }
                if (c == '\\') {
                        escaped = true;
                        i += 2;
                } else
                        i++;
        }
        return parser_invalid(p);
}

/* json-c 0.16's tests, kept as they are: they look at the low 16 bits only,
 * so a pair that decodes to U+xD800-U+xDFFF above U+FFFF (U+1D800 is
 * \ud836\udc00) is taken for a surrogate again and becomes U+FFFD, where
 * the same character sent as raw UTF-8 passes. json-c 0.19 masks with
 * 0xFFFFFC00 (upstream commit 7974657); changing the masks below is the
 * whole fix, once the codec may differ from the json-c it replaces. */
#define IS_HIGH_SURROGATE(u)          (((u)&0xFC00) == 0xD800)
#define IS_LOW_SURROGATE(u)           (((u)&0xFC00) == 0xDC00)
#define DECODE_SURROGATE_PAIR(hi, lo) ((((hi)&0x3FF) << 10) + ((lo)&0x3FF) + 0x10000)

/* The four hex digits of a \u escape at s[i..). -EBADMSG when one is
 * missing; -EILSEQ when a non-ASCII byte stands in their place: json-c
 * validates UTF-8 byte by byte as it reads, and an error on a lead byte
 * (its character unfinished) or on a byte that starts none (one escaped by
 * a backslash, which the lexical check skips) is reported as invalid
 * UTF-8. */
static int hex4(const char *s, size_t n, size_t i, unsigned *ret) {
        unsigned u = 0;

        for (size_t k = i; k < i + 4; k++) {
                char c = k < n ? s[k] : '"';

                if (c >= '0' && c <= '9')
                        u = u << 4 | (unsigned)(c - '0');
                else if (c >= 'a' && c <= 'f')
                        u = u << 4 | (unsigned)(c - 'a' + 10);
                else if (c >= 'A' && c <= 'F')
                        u = u << 4 | (unsigned)(c - 'A' + 10);
                else
                        return (unsigned char)c >= 0x80 ? -EILSEQ : -EBADMSG;
        }
        *ret = u;
        return 0;
}

static size_t put_replacement(char *out) {
        memcpy(out, "\xEF\xBF\xBD", 3);
        return 3;
}

/* What json-c appends for a complete \u code point; *high receives a high
 * surrogate, which waits for the next escape. */
static size_t put_code_point(char *out, unsigned u, unsigned *high) {
        if (u < 0x80) {
                out[0] = (char)u;
                return 1;
        }
        if (u < 0x800) {
                out[0] = (char)(0xC0 | u >> 6);
                out[1] = (char)(0x80 | (u & 0x3F));
                return 2;
        }
        if (IS_HIGH_SURROGATE(u)) {
                *high = u;
                return 0;
        }
        if (IS_LOW_SURROGATE(u))
                return put_replacement(out);
        if (u < 0x10000) {
                out[0] = (char)(0xE0 | u >> 12);
                out[1] = (char)(0x80 | ((u >> 6) & 0x3F));
                out[2] = (char)(0x80 | (u & 0x3F));
                return 3;
        }
        out[0] = (char)(0xF0 | ((u >> 18) & 0x07));
        out[1] = (char)(0x80 | ((u >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((u >> 6) & 0x3F));
        out[3] = (char)(0x80 | (u & 0x3F));
        return 4;
}

static char unescape(char c) {
        switch (c) {
        case '"':
        case '\\':
        case '/':
                return c;
        case 'b':
                return '\b';
        case 'f':
                return '\f';
        case 'n':
                return '\n';
        case 'r':
                return '\r';
        case 't':
                return '\t';
        default:
                return 0;
        }
}

/*
 * Decodes a string's content s[0..n) into out (n bytes are enough: nothing
 * decodes longer than its escape) as json-c does: a high surrogate waits for
 * a \u escape and, when that is no low surrogate (or another escape or a
 * plain byte follows), becomes U+FFFD, the next one then read on its own; a
 * lone low surrogate becomes U+FFFD too. Returns -EBADMSG for a bad escape
 * (-EILSEQ, see hex4()).
 * s never ends in a lone backslash: the span ends at an unescaped quote.
 */
static int decode_string(const char *s, size_t n, char *out, size_t *ret_len) {
        unsigned high = 0;
        size_t o = 0;

        for (size_t i = 0; i < n;) {
                unsigned u;
                char c = s[i];
                int r;

                if (c != '\\') {
                        if (high) {
                                o += put_replacement(out + o);
                                high = 0;
                        }
                        out[o++] = c;
                        i++;
                        continue;
                }
                c = s[i + 1];
                i += 2;
                if (c != 'u') {
                        if (high) {
                                o += put_replacement(out + o);
                                high = 0;
                        }
                        if ((unsigned char)c >= 0x80)
                                return -EILSEQ; /* see hex4() */
                        c = unescape(c);
                        if (!c)
                                return -EBADMSG;
                        out[o++] = c;
                        continue;
                }
                r = hex4(s, n, i, &u);
                if (r < 0)
                        return r;
                i += 4;
                if (high) {
                        if (IS_LOW_SURROGATE(u))
                                u = DECODE_SURROGATE_PAIR(high, u);
                        else
                                o += put_replacement(out + o);
                        high = 0;
                }
                o += put_code_point(out + o, u, &high);
        }
        if (high)
                o += put_replacement(out + o);
        *ret_len = o;
        return 0;
}

static int parse_string(JsonParser *p, struct json_object **ret) {
        size_t start, end, n;
        bool escaped;
        char *buf;
        int r;

        r = parser_string_span(p, &start, &end, &escaped);
        if (r < 0)
                return r;
        if (!escaped) {
                *ret = json_object_new_string_len(p->s + start, (int)(end - start));
                return *ret ? 0 : -ENOMEM;
        }
        buf = parser_scratch(p, end - start);
        if (!buf)
                return -ENOMEM;
        r = decode_string(p->s + start, end - start, buf, &n);
        if (r < 0)
                return parser_bad_escape(p, r);
        *ret = json_object_new_string_len(buf, (int)n);
        return *ret ? 0 : -ENOMEM;
}

/* A key, NUL-terminated, in stack (cap bytes) or, when longer, in memory
 * the caller frees when *ret_key != stack. */
static int parse_key(JsonParser *p, char *stack, size_t cap, char **ret_key) {
        size_t start, end, n = 0;
        bool escaped;
        char *key;
        int r;

        r = parser_string_span(p, &start, &end, &escaped);
        if (r < 0)
                return r;
        key = end - start < cap ? stack : malloc(end - start + 1);
        if (!key)
                return -ENOMEM;
        if (!escaped) {
                n = end - start;
                memcpy(key, p->s + start, n);
        } else {
                r = decode_string(p->s + start, end - start, key, &n);
                if (r < 0) {
                        if (key != stack)
                                free(key);
                        return parser_bad_escape(p, r);
                }
        }
        key[n] = '\0';
        *ret_key = key;
        return 0;
}

/* strtod() as json-c calls it, in the C locale (it switches LC_NUMERIC to
 * "C" around each parse, with allocations we avoid): text[0..n) is
 * NUL-terminated and must be read whole. Another locale's decimal point
 * replaces the '.' in a copy. */
static int strtod_c(const char *text, size_t n, double *ret) {
        const char *radix = nl_langinfo(RADIXCHAR), *dot = memchr(text, '.', n);
        size_t radix_len = radix ? strlen(radix) : 0;
        char *end, *copy;
        int r = 0;

        if (!dot || radix_len == 0 || strcmp(radix, ".") == 0) {
                *ret = strtod(text, &end);
                return end == text + n ? 0 : -EBADMSG;
        }
        /* One '.' at most: the number grammar takes a second as its end. */
        copy = malloc(n + radix_len);
        if (!copy)
                return -ENOMEM;
        memcpy(copy, text, (size_t)(dot - text));
        memcpy(copy + (dot - text), radix, radix_len);
        memcpy(copy + (dot - text) + radix_len, dot + 1, n - (size_t)(dot - text)); /* with the NUL */
        *ret = strtod(copy, &end);
        if (end != copy + n - 1 + radix_len)
                r = -EBADMSG;
        free(copy);
        return r;
}

/* -?[0-9]+ as json-c reads it with strtoll()/strtoull(): saturating, so
 * every integer is accepted, INT64_MIN and UINT64_MAX standing for those
 * beyond; int64 up to INT64_MAX, uint64 above. Strict mode refuses a
 * leading zero, but only before a non-zero value of a non-negative number:
 * "00" is 0 and "-01" is -1, as in json-c. */
static int parse_integer(const char *s, size_t n, struct json_object **ret) {
        bool negative = s[0] == '-', overflow = false;
        uint64_t v = 0;

        if (n == (size_t)negative)
                return -EBADMSG;
        for (size_t i = negative; i < n; i++) {
                unsigned d = (unsigned)(s[i] - '0');

                if (v > (UINT64_MAX - d) / 10)
                        overflow = true;
                else
                        v = v * 10 + d;
        }
        if (negative) {
                if (overflow || v >= (uint64_t)INT64_MAX + 1)
                        *ret = json_object_new_int64(INT64_MIN);
                else
                        *ret = json_object_new_int64(-(int64_t)v);
        } else {
                if (overflow)
                        v = UINT64_MAX;
                if (v != 0 && s[0] == '0')
                        return -EBADMSG;
                *ret = v <= INT64_MAX ? json_object_new_int64((int64_t)v) : json_object_new_uint64(v);
        }
        return *ret ? 0 : -ENOMEM;
}

/* A double keeps its text, which json-c writes back instead of formatting
 * the value (json_object_new_double_s()). */
static int parse_double(JsonParser *p, const char *s, size_t n, struct json_object **ret) {
        char *text = parser_scratch(p, n + 1);
        double d;
        int r;

        if (!text)
                return -ENOMEM;
        memcpy(text, s, n);
        text[n] = '\0';
        r = strtod_c(text, n, &d);
        if (r < 0)
                return r;
        *ret = json_object_new_double_s(d, text);
        return *ret ? 0 : -ENOMEM;
}

/* Where json-c lets a number inside a container end (its '/', 'I' and 'i'
 * then fail as the next token, as does anything else here). */
static bool number_end_valid(unsigned char c) {
        return c == ',' || c == ']' || c == '}' || c == '/' || c == 'I' || c == 'i' || json_is_space(c);
}

/* json-c's number state: the characters it takes are digits, one '.'
 * before any exponent, e or E once, and a sign first or right after the
 * '.' or the e; what they spell is then checked by strtoll(), strtoull() or
 * strtod(). So "1.", "-.5", "01.5" and "1.e5" are doubles (the C library
 * reads them), "1.5e" is not. */
static int parse_number(JsonParser *p, unsigned depth, struct json_object **ret) {
        bool is_double = false, is_exponent = false, neg_ok = true, pos_ok = false;
        size_t start = p->i;
        int r;

        for (; p->i < p->len; p->i++) {
                char c = p->s[p->i];

                if (!((c >= '0' && c <= '9') || (!is_exponent && (c == 'e' || c == 'E')) ||
                      (neg_ok && c == '-') || (pos_ok && c == '+') || (!is_double && c == '.')))
                        break;
                neg_ok = pos_ok = false;
                if (c == '.')
                        is_double = neg_ok = pos_ok = true;
                else if (c == 'e' || c == 'E')
                        is_exponent = is_double = neg_ok = pos_ok = true;
        }
        /* At the top level anything may follow: the caller refuses it. */
        if (depth > 0 && !number_end_valid(parser_peek(p)))
                return parser_invalid(p);
        if (is_double)
                r = parse_double(p, p->s + start, p->i - start, ret);
        else
                r = parse_integer(p->s + start, p->i - start, ret);
        return r == -EBADMSG ? parser_invalid(p) : r;
}

static int parse_literal(JsonParser *p, const char *word, size_t n) {
        if (p->len - p->i < n || memcmp(p->s + p->i, word, n) != 0)
                return parser_invalid(p);
        p->i += n;
        return 0;
}

static int parse_value(JsonParser *p, unsigned depth, struct json_object **ret);

/* A member value or an array element of the container at depth: json-c
 * refuses it as too deep before it looks at it, but at the end of the text
 * it reports the end instead (every error it finds on the NUL that
 * finishes the text becomes "unexpected end of data"). */
static int parse_element(JsonParser *p, unsigned depth, struct json_object **ret) {
        if (depth >= p->max_depth - 1 && p->i < p->len) {
                p->reason = "JSON nested too deeply";
                return -EBADMSG;
        }
        return parse_value(p, depth + 1, ret);
}

/*
 * json-c 0.16 (upstream too) loses its copy of the key when an insert has
 * to grow the table and that fails: json_object_object_add_ex() strdup()s
 * the key, lh_table_insert_w_hash() fails, and the copy leaks. So before an
 * insert that may grow the table (a new object's holds
 * JSON_OBJECT_DEF_HASH_ENTRIES * LH_LOAD_FACTOR members before its first
 * resize), the table grows for a member whose key is constant, which
 * json-c does not copy, and that member goes again: the real insert then
 * fits without growing. GROW_KEY is no valid UTF-8, so it is never a key
 * here (json_codec_scan()).
 */
#define GROW_KEY "\xff"

static int object_add(JsonParser *p, struct json_object *obj, const char *key, struct json_object *value) {
        int n = json_object_object_length(obj);

        if (n >= JSON_OBJECT_DEF_HASH_ENTRIES * LH_LOAD_FACTOR) {
                if (json_object_object_add_ex(obj, GROW_KEY, NULL,
                                              JSON_C_OBJECT_ADD_KEY_IS_NEW |
                                                      JSON_C_OBJECT_ADD_CONSTANT_KEY) < 0) {
                        json_object_put(value);
                        return -ENOMEM;
                }
                json_object_object_del(obj, GROW_KEY);
        }
        /* A key given again replaces the value in the first one's place, as json-c does. */
        if (json_object_object_add_ex(obj, key, value, 0) < 0) {
                json_object_put(value);
                return -ENOMEM;
        }
        if (json_object_object_length(obj) == n)
                p->duplicate_key = true;
        return 0;
}

/* "key" ws ":" ws value, from the key's opening quote. */
static int parse_member(JsonParser *p, unsigned depth, struct json_object *obj) {
        char stack[KEY_STACK_BYTES], *key;
        struct json_object *value = NULL;
        int r;

        r = parse_key(p, stack, sizeof(stack), &key);
        if (r < 0)
                return r;
        parser_skip_space(p);
        if (parser_peek(p) != ':')
                r = parser_invalid(p);
        else {
                p->i++;
                parser_skip_space(p);
                r = parse_element(p, depth, &value);
        }
        if (r >= 0)
                r = object_add(p, obj, key, value);
        if (key != stack)
                free(key);
        return r;
}

/* Strict: no trailing comma, keys in double quotes only. */
static int parse_object(JsonParser *p, unsigned depth, struct json_object **ret) {
        struct json_object *obj = json_object_new_object();
        int r = 0;

        if (!obj)
                return -ENOMEM;
        p->i++;
        parser_skip_space(p);
        if (parser_peek(p) == '}')
                p->i++;
        else
                for (;;) {
                        if (parser_peek(p) != '"') {
                                r = parser_invalid(p);
                                break;
                        }
                        r = parse_member(p, depth, obj);
                        if (r < 0)
                                break;
                        parser_skip_space(p);
                        if (parser_peek(p) == '}') {
                                p->i++;
                                break;
                        }
                        if (parser_peek(p) != ',') {
                                r = parser_invalid(p);
                                break;
                        }
                        p->i++;
                        parser_skip_space(p);
                }
        if (r < 0) {
                json_object_put(obj);
                return r;
        }
        *ret = obj;
        return 0;
}

static int parse_array(JsonParser *p, unsigned depth, struct json_object **ret) {
        struct json_object *arr = json_object_new_array();
        int r = 0;

        if (!arr)
                return -ENOMEM;
        p->i++;
        parser_skip_space(p);
        if (parser_peek(p) == ']')
                p->i++;
        else
                for (;;) {
                        struct json_object *value = NULL;

                        r = parse_element(p, depth, &value);
                        if (r < 0)
                                break;
                        if (json_object_array_add(arr, value) < 0) {
                                json_object_put(value);
                                r = -ENOMEM;
                                break;
                        }
                        parser_skip_space(p);
                        if (parser_peek(p) == ']') {
                                p->i++;
                                break;
                        }
                        if (parser_peek(p) != ',') {
                                r = parser_invalid(p);
                                break;
                        }
                        p->i++;
                        parser_skip_space(p);
                        if (parser_peek(p) == ']') {
                                r = parser_invalid(p);
                                break;
                        }
                }
        if (r < 0) {
                json_object_put(arr);
                return r;
        }
        /* json-c's tokener gives back the unused slots (a failure keeps them). */
        (void)json_object_array_shrink(arr, 0);
        *ret = arr;
        return 0;
}

static int parse_value(JsonParser *p, unsigned depth, struct json_object **ret) {
        int r;

        *ret = NULL;
        switch (parser_peek(p)) {
        case '{':
                return parse_object(p, depth, ret);
        case '[':
                return parse_array(p, depth, ret);
        case '"':
                return parse_string(p, ret);
        case 't':
                r = parse_literal(p, "true", 4);
                if (r >= 0 && !(*ret = json_object_new_boolean(1)))
                        r = -ENOMEM;
                return r;
        case 'f':
                r = parse_literal(p, "false", 5);
                if (r >= 0 && !(*ret = json_object_new_boolean(0)))
                        r = -ENOMEM;
                return r;
        case 'n':
                return parse_literal(p, "null", 4); /* json-c's null is NULL */
        case '-':
        case '0' ... '9':
                return parse_number(p, depth, ret);
        default:
                return parser_invalid(p);
        }
}

int json_codec_parse(const char *text, size_t len, unsigned max_depth, struct json_object **ret,
                     bool *ret_duplicate_key, const char **ret_reason) {
        JsonParser p = {.s = text, .len = len, .max_depth = max_depth};
        struct json_object *o = NULL;
        const char *reason;
        int r;

        assert(text || len == 0);
        assert(ret);
        assert(max_depth >= 1);

        *ret = NULL;
        if (ret_duplicate_key)
                *ret_duplicate_key = false;
        if (ret_reason)
                *ret_reason = NULL;

        /* json-c took an int length; the limit stays. */
        reason = len > INT_MAX ? "message too long" : json_codec_scan(text, len, NULL);
        if (reason) {
                if (ret_reason)
                        *ret_reason = reason;
                return -EBADMSG;
        }

        parser_skip_space(&p);
        r = parse_value(&p, 0, &o);
        if (r >= 0) {
                parser_skip_space(&p);
                /* Strict json-c refuses anything after the value. */
                if (p.i < p.len) {
                        json_object_put(o);
                        r = parser_invalid(&p);
                }
        }
        free(p.heap);
        if (r < 0) {
                if (ret_reason && r == -EBADMSG)
                        *ret_reason = p.reason;
                return r;
        }
        if (ret_duplicate_key)
                *ret_duplicate_key = p.duplicate_key;
        *ret = o;
        return 0;
}

/*
 * The writer: json-c 0.16's serializers (json_object.c) with
 * JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, appending
 * straight to the buffer with checked growth.
 */

static int put(VarlinkBuffer *b, const char *s, size_t n) {
        if (n == 0)
                return 0;
        if (b->cap - b->len < n && varlink_buffer_reserve(b, n) < 0)
                return -ENOMEM;
        memcpy(b->data + b->len, s, n);
        b->len += n;
        return 0;
}

#define PUT_LITERAL(b, s) put((b), (s), sizeof(s) - 1)

/* json_escape_str(): quote, backslash and the control characters, these as
 * \b \f \n \r \t or \u00XX (lower-case hex); '/' (NOSLASHESCAPE), DEL and
 * every byte from 0x80 on, valid UTF-8 or not, pass as they are. */
static int write_string(VarlinkBuffer *b, const char *s, size_t n) {
        static const char hex[] = "0123456789abcdef";
        size_t start = 0;

        if (PUT_LITERAL(b, "\"") < 0)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char)s[i];
                char esc[6] = {'\\', (char)c};
                size_t k = 2;

                if (c >= 0x20 && c != '"' && c != '\\')
                        continue;
                switch (c) {
                case '"':
                case '\\':
                        break;
                case '\b':
                        esc[1] = 'b';
                        break;
                case '\f':
                        esc[1] = 'f';
                        break;
                case '\n':
                        esc[1] = 'n';
                        break;
                case '\r':
                        esc[1] = 'r';
                        break;
                case '\t':
                        esc[1] = 't';
                        break;
                default:
                        memcpy(esc + 1, "u00", 3);
                        esc[4] = hex[c >> 4];
                        esc[5] = hex[c & 0xF];
                        k = 6;
                        break;
                }
                if (put(b, s + start, i - start) < 0 || put(b, esc, k) < 0)
                        return -ENOMEM;
                start = i + 1;
        }
        if (put(b, s + start, n - start) < 0 || PUT_LITERAL(b, "\"") < 0)
                return -ENOMEM;
        return 0;
}

/* int64 or uint64 as "%" PRId64 / PRIu64 would: the getters tell them
 * apart (get_int64 saturates a uint64 at INT64_MAX, get_uint64 gives the
 * value). */
static int write_int(VarlinkBuffer *b, struct json_object *o) {
        char buf[21], *q = buf + sizeof(buf);
        int64_t i = json_object_get_int64(o);
        uint64_t u = i < 0 ? 0 - (uint64_t)i : json_object_get_uint64(o);

        do {
                *--q = (char)('0' + u % 10);
                u /= 10;
        } while (u);
        if (i < 0)
                *--q = '-';
        return put(b, q, (size_t)(buf + sizeof(buf) - q));
}

/* json_object_double_to_json_string_format() with json-c's default
 * "%.17g"; a double parsed from text (json_object_new_double_s(), so
 * with the text as userdata) is that text. */
static int write_double(VarlinkBuffer *b, struct json_object *o) {
        const char *text = json_object_get_userdata(o);
        double d = json_object_get_double(o);
        bool looks_numeric;
        char buf[128], *dot;
        int n;

        if (text)
                return put(b, text, strlen(text));
        if (isnan(d))
                return PUT_LITERAL(b, "NaN");
        if (isinf(d))
                return d > 0 ? PUT_LITERAL(b, "Infinity") : PUT_LITERAL(b, "-Infinity");
        n = snprintf(buf, sizeof(buf), "%.17g", d);
        /* json-c gives up (and so the whole text) when snprintf() fails. */
        if (n < 0 || (size_t)n >= sizeof(buf) - 2)
                return -ENOMEM;
        /* A locale's decimal comma becomes a point. */
        dot = strchr(buf, ',');
        if (dot)
                *dot = '.';
        else
                dot = strchr(buf, '.');
        looks_numeric = (buf[0] >= '0' && buf[0] <= '9') ||
                        (n > 1 && buf[0] == '-' && buf[1] >= '0' && buf[1] <= '9');
        /* Make it look like a double: 100 is written 100.0. */
        if (looks_numeric && !dot && !strchr(buf, 'e')) {
                memcpy(buf + n, ".0", 3);
                n += 2;
        }
        return put(b, buf, (size_t)n);
}

static int write_value(VarlinkBuffer *b, struct json_object *o);

/* Members in json-c's order (insertion; a replaced value keeps its place);
 * keys are C strings. */
static int write_object(VarlinkBuffer *b, struct json_object *o) {
        bool first = true;

        if (PUT_LITERAL(b, "{") < 0)
                return -ENOMEM;
        json_object_object_foreach(o, key, value) {
                if ((!first && PUT_LITERAL(b, ",") < 0) || write_string(b, key, strlen(key)) < 0 ||
                    PUT_LITERAL(b, ":") < 0 || write_value(b, value) < 0)
                        return -ENOMEM;
                first = false;
        }
        return PUT_LITERAL(b, "}");
}

static int write_array(VarlinkBuffer *b, struct json_object *o) {
        size_t n = json_object_array_length(o);

        if (PUT_LITERAL(b, "[") < 0)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if ((i > 0 && PUT_LITERAL(b, ",") < 0) ||
                    write_value(b, json_object_array_get_idx(o, i)) < 0)
                        return -ENOMEM;
        return PUT_LITERAL(b, "]");
}

/* Recursion follows the tree: parsed trees are bounded by the parser's
 * depth, the daemon builds shallow ones, and json-c's serializer has no
 * limit either. */
static int write_value(VarlinkBuffer *b, struct json_object *o) {
        switch (json_object_get_type(o)) {
        case json_type_null:
                return PUT_LITERAL(b, "null");
        case json_type_boolean:
                return json_object_get_boolean(o) ? PUT_LITERAL(b, "true") : PUT_LITERAL(b, "false");
        case json_type_int:
                return write_int(b, o);
        case json_type_double:
                return write_double(b, o);
        case json_type_string:
                return write_string(b, json_object_get_string(o), (size_t)json_object_get_string_len(o));
        case json_type_object:
                return write_object(b, o);
        case json_type_array:
                return write_array(b, o);
        }
        assert(!"unknown json type");
        return -EINVAL;
}

int json_codec_write(VarlinkBuffer *b, struct json_object *o) {
        size_t start;
        int r;

        assert(b);

        start = b->len;
        r = write_value(b, o);
        if (r < 0)
                b->len = start;
        return r;
}
