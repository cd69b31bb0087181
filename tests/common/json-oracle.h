/* SPDX-License-Identifier: MIT */
/*
 * json-c as the oracle of protocol/json-codec.c, for the unit rows
 * (tests/unit/test-json.c), the property runs (tests/common/flat-differential.c)
 * and the codec fuzzer (tests/fuzz/fuzz-codec.c): what varlink.c did before
 * json-codec.c replaced json-c's tokener. Header-only and free of Check, so
 * the fuzz target (built without Check) includes it too.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#include "json-codec.h"
#include "varlink.h"

/* Members of all objects in the tree. */
static inline size_t json_oracle_count_members(struct json_object *o) {
        size_t n = 0;

        if (json_object_is_type(o, json_type_object)) {
                json_object_object_foreach(o, key, value) {
                        (void)key;
                        n += 1 + json_oracle_count_members(value);
                }
        } else if (json_object_is_type(o, json_type_array))
                for (size_t j = 0; j < json_object_array_length(o); j++)
                        n += json_oracle_count_members(json_object_array_get_idx(o, j));
        return n;
}

/* json-c's strict tokener as the codec had it configured, over exactly
 * text[0..len) (a bare scalar finished with the NUL json-c expects).
 * Returns 0 with *ret, -EBADMSG with the codec's reason for json-c's
 * error, or -ENOMEM when json-c cannot make a tokener. */
static inline int json_oracle_tokener(const char *text, size_t len, struct json_object **ret,
                                      const char **ret_reason) {
        struct json_tokener *tok = json_tokener_new_ex(VARLINK_MAX_DEPTH);
        enum json_tokener_error e;
        struct json_object *o;
        bool consumed;

        *ret = NULL;
        *ret_reason = NULL;
        if (!tok)
                return -ENOMEM;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        o = json_tokener_parse_ex(tok, text, (int)len);
        e = json_tokener_get_error(tok);
        consumed = json_tokener_get_parse_end(tok) == len;
        if (e == json_tokener_continue) {
                o = json_tokener_parse_ex(tok, "", 1);
                e = json_tokener_get_error(tok);
        }
        json_tokener_free(tok);
        if (e != json_tokener_success) {
                *ret_reason = e == json_tokener_error_depth               ? "JSON nested too deeply"
                              : e == json_tokener_error_parse_utf8_string ? "invalid UTF-8"
                                                                          : "invalid JSON";
                return -EBADMSG;
        }
        if (!consumed) {
                json_object_put(o);
                *ret_reason = "trailing data after JSON object";
                return -EBADMSG;
        }
        *ret = o;
        return 0;
}

/* The whole of what varlink.c did: the lexical check, the tokener, and
 * fewer members in the tree than colons in the text for a duplicate key. */
static inline int json_oracle_parse(const char *text, size_t len, struct json_object **ret,
                                    bool *ret_duplicate, const char **ret_reason) {
        size_t n_members = 0;
        int r;

        *ret = NULL;
        *ret_duplicate = false;
        *ret_reason = json_codec_scan(text, len, &n_members);
        if (*ret_reason)
                return -EBADMSG;
        r = json_oracle_tokener(text, len, ret, ret_reason);
        if (r < 0)
                return r;
        *ret_duplicate = json_oracle_count_members(*ret) != n_members;
        return 0;
}
