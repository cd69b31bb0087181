/* SPDX-License-Identifier: MIT */
/*
 * The flat fast path (declared in varlink.h): a recursive-descent reader over
 * the two levels a flat call has, without json-c and without allocating. It
 * accepts a strict subset of what the strict path (json-codec.c: its
 * lexical check and parser) accepts, so that a 1 from it never disagrees
 * with the strict path; the method name goes through the same grammar
 * (varlink-internal.h). Nothing is written to msg until the whole message
 * has been read and checked. Pure: no I/O, no clock, no global state.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <string.h>

#include "utf8.h"
#include "varlink-internal.h"
#include "varlink.h"

/* 18 decimal digits stay below INT64_MAX (9223372036854775807, 19 digits):
 * no overflow check, and json-c reads the same digits as the same int64. */
#define FLAT_INT_DIGITS_MAX 18

typedef struct FlatReader {
        const unsigned char *s;
        size_t len;
        size_t i;
} FlatReader;

typedef enum FlatHeader {
        FLAT_METHOD,
        FLAT_PARAMETERS,
        FLAT_ONEWAY,
        FLAT_MORE,
        FLAT_UPGRADE,
        _FLAT_HEADER_MAX,
} FlatHeader;

static const char *const flat_header_names[_FLAT_HEADER_MAX] = {
        [FLAT_METHOD] = "method", [FLAT_PARAMETERS] = "parameters", [FLAT_ONEWAY] = "oneway",
        [FLAT_MORE] = "more",     [FLAT_UPGRADE] = "upgrade",
};

static void flat_skip_space(FlatReader *r) {
        while (r->i < r->len && json_is_space(r->s[r->i]))
                r->i++;
}

static bool flat_take(FlatReader *r, unsigned char c) {
        flat_skip_space(r);
        if (r->i >= r->len || r->s[r->i] != c)
                return false;
        r->i++;
        return true;
}

static bool flat_literal(FlatReader *r, const char *word) {
        size_t n = strlen(word);

        if (r->len - r->i < n || memcmp(r->s + r->i, word, n) != 0)
                return false;
        r->i += n;
        return true;
}

/* A string without escapes, with the bytes json-codec.c's json_scan_string() passes
 * (0x20-0x7F, strict UTF-8), and nothing that would make json-c's copy
 * differ from the raw bytes. Returns the offset and length of its content. */
static bool flat_string(FlatReader *r, size_t *ret_start, size_t *ret_len) {
        if (r->i >= r->len || r->s[r->i] != '"')
                return false;
        for (size_t i = r->i + 1; i < r->len;) {
                unsigned char c = r->s[i];
                size_t n;

                if (c == '"') {
                        *ret_start = r->i + 1;
                        *ret_len = i - r->i - 1;
                        r->i = i + 1;
                        return true;
                }
                if (c >= 0x20 && c < 0x80 && c != '\\') {
                        i++;
                        continue;
                }
                if (c < 0x80)
                        return false; /* control character or escape */
                n = utf8_sequence_len(r->s + i, r->len - i);
                if (n == 0)
                        return false;
                i += n;
        }
        return false;
}

/* 0 or [1-9][0-9]* of at most FLAT_INT_DIGITS_MAX digits; what follows is
 * checked by the caller (a separator, so "1.5" and "1e3" fail there). */
static bool flat_integer(FlatReader *r, int64_t *ret) {
        size_t start = r->i;
        int64_t v = 0;

        for (; r->i < r->len && r->s[r->i] >= '0' && r->s[r->i] <= '9'; r->i++) {
                if (r->i - start == FLAT_INT_DIGITS_MAX)
                        return false;
                v = v * 10 + (r->s[r->i] - '0');
        }
        if (r->i == start || (r->i - start > 1 && r->s[start] == '0'))
                return false;
        *ret = v;
        return true;
}

static bool flat_value(FlatReader *r, VarlinkFlatParam *v) {
        size_t start;

        if (r->i >= r->len)
                return false;
        switch (r->s[r->i]) {
        case '"':
                if (!flat_string(r, &start, &v->s_len))
                        return false;
                v->type = VARLINK_FIELD_STRING;
                v->s = (const char *)r->s + start;
                return true;
        case 't':
        case 'f':
                v->type = VARLINK_FIELD_BOOL;
                v->b = r->s[r->i] == 't';
                return flat_literal(r, v->b ? "true" : "false");
        case 'n':
                v->is_null = true;
                return flat_literal(r, "null");
        default:
                v->type = VARLINK_FIELD_INT;
                return flat_integer(r, &v->i);
        }
}

/* Steps to the next member of the object whose '{' was taken: returns 1 with
 * the key and r->i at the value, 0 after the closing brace, -1 otherwise. */
static int flat_member_next(FlatReader *r, bool first, size_t *ret_key, size_t *ret_key_len) {
        flat_skip_space(r);
        if (r->i >= r->len)
                return -1;
        if (r->s[r->i] == '}') {
                r->i++;
                return 0;
        }
        if (!first) {
                if (r->s[r->i] != ',')
                        return -1;
                r->i++;
                flat_skip_space(r);
        }
        if (!flat_string(r, ret_key, ret_key_len) || !flat_take(r, ':'))
                return -1;
        flat_skip_space(r);
        return 1;
}

static bool flat_parameters(FlatReader *r, VarlinkFlatCall *call) {
        if (!flat_take(r, '{'))
                return false;
        for (bool first = true;; first = false) {
                VarlinkFlatParam *v;
                size_t key, key_len;
                int k = flat_member_next(r, first, &key, &key_len);

                if (k <= 0)
                        return k == 0;
                if (call->n_params == VARLINK_FLAT_PARAMS_MAX)
                        return false;
                v = &call->params[call->n_params++];
                *v = (VarlinkFlatParam){.name = (const char *)r->s + key, .name_len = key_len};
                if (!flat_value(r, v))
                        return false;
        }
}

static bool flat_header_value(FlatReader *r, FlatHeader h, VarlinkFlatCall *call) {
        size_t start;
        bool *flag;

        switch (h) {
        case FLAT_METHOD:
                if (!flat_string(r, &start, &call->method_len))
                        return false;
                call->method = (const char *)r->s + start;
                return true;
        case FLAT_PARAMETERS:
                return flat_literal(r, "null") || flat_parameters(r, call);
        case FLAT_ONEWAY:
        case FLAT_MORE:
        case FLAT_UPGRADE:
                flag = h == FLAT_ONEWAY ? &call->oneway : h == FLAT_MORE ? &call->more : &call->upgrade;
                *flag = flat_literal(r, "true");
                return *flag || flat_literal(r, "false");
        case _FLAT_HEADER_MAX:
                break;
        }
        assert(!"unknown flat header");
        return false;
}

static int flat_header_find(const unsigned char *key, size_t key_len) {
        for (int h = 0; h < _FLAT_HEADER_MAX; h++)
                if (strlen(flat_header_names[h]) == key_len &&
                    memcmp(flat_header_names[h], key, key_len) == 0)
                        return h;
        return -1;
}

static bool flat_names_equal(const VarlinkFlatParam *a, const VarlinkFlatParam *b) {
        return a->name_len == b->name_len && memcmp(a->name, b->name, a->name_len) == 0;
}

/* The checks varlink_call_parse() makes after parsing, plus the duplicate
 * parameter names it refuses. */
static bool flat_call_valid(const VarlinkFlatCall *call) {
        size_t interface_len;

        if (!call->method || !varlink_qualified_name_split(call->method, call->method_len, &interface_len))
                return false;
        if (call->oneway + call->more + call->upgrade > 1)
                return false;
        for (size_t a = 0; a < call->n_params; a++)
                for (size_t b = a + 1; b < call->n_params; b++)
                        if (flat_names_equal(&call->params[a], &call->params[b]))
                                return false;
        return true;
}

/* Overwrites the closing quotes: the only write to msg, after every check. */
static void flat_terminate(char *msg, const VarlinkFlatCall *call) {
        msg[call->method - msg + (ptrdiff_t)call->method_len] = '\0';
        for (size_t k = 0; k < call->n_params; k++) {
                const VarlinkFlatParam *v = &call->params[k];

                msg[v->name - msg + (ptrdiff_t)v->name_len] = '\0';
                if (!v->is_null && v->type == VARLINK_FIELD_STRING)
                        msg[v->s - msg + (ptrdiff_t)v->s_len] = '\0';
        }
}

int varlink_call_parse_flat(char *msg, size_t len, VarlinkFlatCall *ret) {
        FlatReader r = {(const unsigned char *)msg, len, 0};
        VarlinkFlatCall call = {};
        unsigned seen = 0;

        assert(msg || len == 0);
        assert(ret);

        /* The strict path refuses these (json-c's int length limit, kept). */
        if (len > INT_MAX || !flat_take(&r, '{'))
                return 0;
        for (bool first = true;; first = false) {
                size_t key, key_len;
                int k = flat_member_next(&r, first, &key, &key_len), h;

                if (k < 0)
                        return 0;
                if (k == 0)
                        break;
                /* Vendor keys and duplicates are rare: the strict path has them. */
                h = flat_header_find(r.s + key, key_len);
                if (h < 0 || (seen & (1u << h)) || !flat_header_value(&r, (FlatHeader)h, &call))
                        return 0;
                seen |= 1u << h;
        }
        flat_skip_space(&r);
        if (r.i != len || !flat_call_valid(&call))
                return 0;
        flat_terminate(msg, &call);
        *ret = call;
        return 1;
}

static const VarlinkFlatParam *flat_param_find(const VarlinkFlatCall *call, const char *name) {
        for (size_t k = 0; k < call->n_params; k++)
                if (strcmp(call->params[k].name, name) == 0)
                        return &call->params[k];
        return NULL;
}

/* varlink.c's param_valid() for a flat value: the same limits, on the types json-c would
 * have built (flat strings contain no NUL, flat integers are never negative). */
static bool flat_param_valid(const VarlinkField *f, const VarlinkFlatParam *v, VarlinkValue *ret) {
        uint64_t limit = f->max == 0 || f->max > INT64_MAX ? INT64_MAX : f->max;

        if (v->type != f->type)
                return false;
        switch (f->type) {
        case VARLINK_FIELD_INT:
                if ((uint64_t)v->i > limit)
                        return false;
                ret->i = v->i;
                return true;
        case VARLINK_FIELD_STRING:
                if (f->max != 0 && v->s_len > f->max)
                        return false;
                ret->s = v->s;
                return true;
        case VARLINK_FIELD_BOOL:
                ret->b = v->b;
                return true;
        case VARLINK_FIELD_OBJECT: /* a flat call's values are scalars: never one */
                return false;
        }
        assert(!"unknown field type");
        return false;
}

/* Mirrors varlink_params_parse() step by step: unknown names first, in
 * message order (json-c iterates in insertion order, and a flat call has no
 * duplicates), then the table in order, null counting as absent. */
int varlink_flat_params_parse(const VarlinkFlatCall *call, const VarlinkField *fields, size_t n_fields,
                              VarlinkValue *ret_values, const char **ret_bad_parameter) {
        assert(call);
        assert(fields || n_fields == 0);
        assert(ret_values || n_fields == 0);

        if (ret_bad_parameter)
                *ret_bad_parameter = NULL;

        for (size_t k = 0; k < call->n_params; k++)
                if (!varlink_field_known(fields, n_fields, call->params[k].name)) {
                        if (ret_bad_parameter)
                                *ret_bad_parameter = call->params[k].name;
                        return -EINVAL;
                }

        for (size_t i = 0; i < n_fields; i++) {
                const VarlinkFlatParam *v = flat_param_find(call, fields[i].name);
                bool ok;

                ret_values[i] = (VarlinkValue){};
                if (v && v->is_null)
                        v = NULL;
                ok = v ? flat_param_valid(&fields[i], v, &ret_values[i]) : fields[i].optional;
                if (!ok) {
                        if (ret_bad_parameter)
                                *ret_bad_parameter = fields[i].name;
                        return -EINVAL;
                }
                ret_values[i].present = v != NULL;
        }
        return 0;
}
