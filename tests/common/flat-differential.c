/* SPDX-License-Identifier: MIT */
/*
 * The codec's differentials (see flat-differential.h): the strict and flat
 * call parsers, and the JSON parser and writer against json-c. The tables
 * are the shapes the daemon's handlers use: the Request method's fields,
 * every kind of field, and subsets with required and optional ones.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "flat-differential.h"
#include "json-codec.h"
#include "json-oracle.h"

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

/* io.tokenbudget.agent.Request's parameters, as in tests/unit/test-codec.c. */
static const VarlinkField flat_request_fields[] = {
        {"estimate", VARLINK_FIELD_INT, true, 1000},    {"class", VARLINK_FIELD_STRING, true, 8},
        {"allocation", VARLINK_FIELD_STRING, false, 0}, {"count", VARLINK_FIELD_INT, false, 0},
        {"flag", VARLINK_FIELD_BOOL, true, 0},
};

const VarlinkField flat_tables_all[FLAT_TABLES_ALL_N] = {
        {"allocation", VARLINK_FIELD_STRING, false, 16}, {"inputTokens", VARLINK_FIELD_INT, true, 1000},
        {"outputTokens", VARLINK_FIELD_INT, true, 0},    {"flag", VARLINK_FIELD_BOOL, true, 0},
        {"class", VARLINK_FIELD_STRING, true, 0},        {"", VARLINK_FIELD_INT, true, 0},
        {"count", VARLINK_FIELD_INT, false, 1},
};

static const struct {
        const VarlinkField *fields;
        size_t n_fields;
} flat_tables[] = {
        {flat_request_fields, ELEMENTSOF(flat_request_fields)},
        {flat_tables_all, ELEMENTSOF(flat_tables_all)},
        {flat_tables_all, 5}, /* allocation required, the rest optional */
        {flat_tables_all + 1, 4},
        {NULL, 0},
};

#define FLAT_SENTINEL ((const char *)flat_tables)

/* Both return values, the named parameter and every value slot agree. */
static void flat_compare_params(const char *label, struct json_object *parameters, const VarlinkFlatCall *fc,
                                const VarlinkField *fields, size_t n_fields) {
        VarlinkValue strict[8], flat[8];
        const char *strict_bad = "unset", *flat_bad = "unset";
        int rs, rf;

        ck_assert(n_fields <= ELEMENTSOF(strict));
        for (size_t i = 0; i < ELEMENTSOF(strict); i++)
                strict[i] = flat[i] = (VarlinkValue){true, -7, FLAT_SENTINEL, true};
        rs = varlink_params_parse(parameters, fields, n_fields, strict, &strict_bad);
        rf = varlink_flat_params_parse(fc, fields, n_fields, flat, &flat_bad);
        ck_assert_msg(rs == rf, "%s: strict %d, flat %d", label, rs, rf);
        ck_assert_msg((!strict_bad && !flat_bad) ||
                              (strict_bad && flat_bad && strcmp(strict_bad, flat_bad) == 0),
                      "%s: bad parameter '%s' vs '%s'", label, strict_bad ? strict_bad : "(null)",
                      flat_bad ? flat_bad : "(null)");
        for (size_t i = 0; i < ELEMENTSOF(strict); i++) {
                const VarlinkValue *a = &strict[i], *b = &flat[i];

                ck_assert_msg(a->present == b->present && a->i == b->i && a->b == b->b, "%s: value %zu",
                              label, i);
                ck_assert_msg(a->s == b->s || (a->s && b->s && a->s != FLAT_SENTINEL &&
                                               b->s != FLAT_SENTINEL && strcmp(a->s, b->s) == 0),
                              "%s: string value %zu", label, i);
        }
}

/* The flat values equal the strict parameters object member by member, in
 * the same (insertion) order. */
static void flat_compare_call(const char *label, const VarlinkCall *call, const VarlinkFlatCall *fc) {
        size_t k = 0;

        ck_assert_msg(strcmp(call->method, fc->method) == 0 && strlen(fc->method) == fc->method_len,
                      "%s: method '%s' vs '%s'", label, call->method, fc->method);
        ck_assert_msg(call->oneway == fc->oneway && call->more == fc->more && call->upgrade == fc->upgrade,
                      "%s: flags", label);
        ck_assert_msg((size_t)json_object_object_length(call->parameters) == fc->n_params, "%s: %zu params",
                      label, fc->n_params);
        json_object_object_foreach(call->parameters, key, o) {
                const VarlinkFlatParam *v = &fc->params[k++];

                ck_assert_msg(strcmp(key, v->name) == 0 && strlen(v->name) == v->name_len,
                              "%s: param %zu name '%s' vs '%s'", label, k, key, v->name);
                if (v->is_null) {
                        ck_assert_msg(o == NULL, "%s: %s not null", label, key);
                        continue;
                }
                switch (v->type) {
                case VARLINK_FIELD_INT:
                        ck_assert_msg(json_object_is_type(o, json_type_int) &&
                                              json_object_get_int64(o) == v->i,
                                      "%s: %s int", label, key);
                        break;
                case VARLINK_FIELD_STRING:
                        ck_assert_msg(json_object_is_type(o, json_type_string) &&
                                              (size_t)json_object_get_string_len(o) == v->s_len &&
                                              strlen(v->s) == v->s_len &&
                                              memcmp(json_object_get_string(o), v->s, v->s_len) == 0,
                                      "%s: %s string", label, key);
                        break;
                case VARLINK_FIELD_BOOL:
                        ck_assert_msg(json_object_is_type(o, json_type_boolean) &&
                                              json_object_get_boolean(o) == v->b,
                                      "%s: %s bool", label, key);
                        break;
                case VARLINK_FIELD_OBJECT:
                        ck_assert_msg(false, "%s: %s: a flat call holds no object", label, key);
                        break;
                }
        }
}

/* Runs both paths over msg; returns whether the flat one took it. */
bool flat_differential(const char *label, const char *msg, size_t len) {
        char *copy = malloc(len + 1);
        const char *reason = NULL;
        VarlinkFlatCall fc;
        VarlinkCall call;
        int rs, rf;

        ck_assert_ptr_nonnull(copy);
        memcpy(copy, msg, len);
        copy[len] = 'X'; /* the byte after the message must stay too */
        rs = varlink_call_parse(msg, len, &call, &reason);
        rf = varlink_call_parse_flat(copy, len, &fc);
        ck_assert_msg(rf == 0 || rf == 1, "%s: flat returned %d", label, rf);
        ck_assert_msg(copy[len] == 'X', "%s: wrote past the message", label);
        if (rf == 0)
                ck_assert_msg(memcmp(copy, msg, len) == 0, "%s: refused but modified", label);
        else {
                ck_assert_msg(rs == 0, "%s: flat accepted, strict refused (%s)", label, reason);
                flat_compare_call(label, &call, &fc);
                for (size_t t = 0; t < ELEMENTSOF(flat_tables); t++)
                        flat_compare_params(label, call.parameters, &fc, flat_tables[t].fields,
                                            flat_tables[t].n_fields);
        }
        if (rs == 0)
                varlink_call_done(&call);
        free(copy);
        return rf == 1;
}

/* ---- the JSON parser and writer against json-c ---- */

bool json_identical(struct json_object *a, struct json_object *b) {
        enum json_type t = json_object_get_type(a);

        if (t != json_object_get_type(b))
                return false;
        switch (t) {
        case json_type_null:
                return true;
        case json_type_boolean:
                return json_object_get_boolean(a) == json_object_get_boolean(b);
        case json_type_int:
                return json_object_get_int64(a) == json_object_get_int64(b) &&
                       json_object_get_uint64(a) == json_object_get_uint64(b);
        case json_type_double: {
                double x = json_object_get_double(a), y = json_object_get_double(b);
                const char *tx = json_object_get_userdata(a), *ty = json_object_get_userdata(b);

                return memcmp(&x, &y, sizeof(x)) == 0 && !tx == !ty && (!tx || strcmp(tx, ty) == 0);
        }
        case json_type_string:
                return json_object_get_string_len(a) == json_object_get_string_len(b) &&
                       memcmp(json_object_get_string(a), json_object_get_string(b),
                              (size_t)json_object_get_string_len(a)) == 0;
        case json_type_array: {
                size_t n = json_object_array_length(a);

                if (n != json_object_array_length(b))
                        return false;
                for (size_t i = 0; i < n; i++)
                        if (!json_identical(json_object_array_get_idx(a, i),
                                            json_object_array_get_idx(b, i)))
                                return false;
                return true;
        }
        case json_type_object: {
                struct lh_entry *eb = lh_table_head(json_object_get_object(b));

                if (json_object_object_length(a) != json_object_object_length(b))
                        return false;
                json_object_object_foreach(a, key, value) {
                        if (!eb || strcmp(key, lh_entry_k(eb)) != 0 ||
                            !json_identical(value, lh_entry_v(eb)))
                                return false;
                        eb = lh_entry_next(eb);
                }
                return true;
        }
        }
        return false;
}

void json_writer_differential(const char *label, struct json_object *o) {
        VarlinkBuffer b = {.len = 0};
        const char *text;
        size_t len;
        int r;

        text = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
                                                 &len);
        if (!text)
                ck_abort_msg("%s: json-c cannot write the value", label);
        r = json_codec_write(&b, o);
        if (r < 0 || b.len != len || (len > 0 && memcmp(b.data, text, len) != 0))
                ck_abort_msg("%s: json_codec_write() gave %d '%.*s', json-c '%s'", label, r, (int)b.len,
                             b.data ? b.data : "", text);
        varlink_buffer_clear(&b);
}

/* text as a C string literal, cut at some 300 bytes, for a failure message. */
static const char *json_escaped(const char *text, size_t len, char *buf, size_t cap) {
        size_t o = 0;

        for (size_t i = 0; i < len && o + 5 < cap; i++) {
                unsigned char c = (unsigned char)text[i];

                if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"')
                        buf[o++] = (char)c;
                else
                        o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", c);
        }
        buf[o] = '\0';
        return buf;
}

bool json_differential(const char *label, const char *text, size_t len) {
        char esc[1200];
        struct json_object *ours = NULL, *ref = NULL;
        const char *ours_reason = "unset", *ref_reason = "unset";
        bool ours_dup = false, ref_dup = false;
        int rs, rr;

        rs = json_codec_parse(text, len, VARLINK_MAX_DEPTH, &ours, &ours_dup, &ours_reason);
        rr = json_oracle_parse(text, len, &ref, &ref_dup, &ref_reason);
        if (rs != rr)
                ck_abort_msg("%s: json_codec_parse() %d (%s), json-c %d (%s) for \"%s\"", label, rs,
                             ours_reason ? ours_reason : "-", rr, ref_reason ? ref_reason : "-",
                             json_escaped(text, len, esc, sizeof(esc)));
        if (rr < 0) {
                if (!ours_reason || strcmp(ours_reason, ref_reason) != 0 || ours)
                        ck_abort_msg("%s: reason '%s', json-c '%s' for \"%s\"", label,
                                     ours_reason ? ours_reason : "(null)", ref_reason,
                                     json_escaped(text, len, esc, sizeof(esc)));
                return false;
        }
        if (ours_reason || ours_dup != ref_dup || !json_identical(ours, ref))
                ck_abort_msg("%s: values differ (duplicate key %d vs %d): '%s' vs json-c '%s' for \"%s\"",
                             label, ours_dup, ref_dup, json_object_to_json_string(ours),
                             json_object_to_json_string(ref), json_escaped(text, len, esc, sizeof(esc)));
        json_writer_differential(label, ours);
        json_object_put(ours);
        json_object_put(ref);
        return true;
}
