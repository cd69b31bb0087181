/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer entry point for the Varlink codec: splits the input into frames
 * the way the server does (varlink_frame_next over a buffer), parses every
 * frame as a call and as a reply, validates call parameters against a
 * table like io.tokenbudget.agent.Request's, and checks that a parsed
 * message (call, reply or error) formatted again parses to the same values.
 * It also runs the flat fast path over every frame: when it takes a message,
 * the strict path must accept it with the same method, flags and parameter
 * values, and both parameter validators must agree; when it refuses, the
 * message must be untouched. Every frame also goes through the JSON parser
 * (protocol/json-codec.c) and through json-c 0.16's strict tokener behind the
 * same lexical check, as varlink.c used it before: both must accept or
 * refuse it alike, with the same reason and duplicate-key verdict, and give
 * identical values, which the codec's writer must write as json-c does;
 * the frame's bytes as a string and as a key must be written as json-c
 * writes them too. Every frame, taken as a name, must be a valid qualified name
 * for varlink_method_split() exactly when a second, literal reading of the
 * UAPI.20 grammar says so, and taken as an allocation identifier it must
 * parse exactly when it is 16 lower-case hex digits, and format back to
 * itself. The codec is compiled into the target under the same
 * instrumentation (tests/fuzz/meson.build), so libFuzzer sees its branches.
 * It does not exercise any I/O.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "allocation-id.h"
#include "json-codec.h"
#include "json-oracle.h"
#include "varlink.h"

/* Well below libFuzzer's default -max_len of 4096, so that inputs reach the
 * size limit (a frame of 1024 bytes plus its NUL passes, one more fails). */
#define FUZZ_MAX_MESSAGE_BYTES 1024

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const VarlinkField fuzz_fields[] = {
        {"estimate", VARLINK_FIELD_INT, true, 1000000000000},
        {"class", VARLINK_FIELD_STRING, true, 64},
        {"agent", VARLINK_FIELD_STRING, true, 64},
        {"priority", VARLINK_FIELD_STRING, false, 0},
        {"oneshot", VARLINK_FIELD_BOOL, true, 0},
};

/* Formats the parsed call as a reply and as a call, and parses both back. */
static void fuzz_round_trip(const VarlinkCall *call) {
        VarlinkBuffer b = {};
        VarlinkReply reply;
        VarlinkCall again;
        const char *reason;
        size_t frame_len;

        if (varlink_format_reply(&b, call->parameters, call->more) < 0 ||
            varlink_format_call(&b, call->method, call->parameters, call->oneway, call->more) < 0)
                abort();

        if (varlink_frame_next(b.data, b.len, b.len, &frame_len) != 1 ||
            varlink_reply_parse(b.data, frame_len, &reply, &reason) < 0 ||
            !json_object_equal(reply.parameters, call->parameters) || reply.continues != call->more)
                abort();
        varlink_reply_done(&reply);
        varlink_buffer_consume(&b, frame_len + 1);

        if (varlink_frame_next(b.data, b.len, b.len, &frame_len) != 1 ||
            varlink_call_parse(b.data, frame_len, &again, &reason) < 0 ||
            strcmp(again.method, call->method) != 0 || again.oneway != call->oneway ||
            again.more != call->more || !json_object_equal(again.parameters, call->parameters))
                abort();
        varlink_call_done(&again);
        varlink_buffer_clear(&b);

        /* No parameters and empty parameters are written alike. */
        if (json_object_object_length(call->parameters) == 0) {
                VarlinkBuffer none = {};

                if (varlink_format_call(&none, call->method, NULL, call->oneway, call->more) < 0 ||
                    varlink_format_call(&b, call->method, call->parameters, call->oneway, call->more) < 0 ||
                    none.len != b.len || memcmp(none.data, b.data, b.len) != 0)
                        abort();
                varlink_buffer_clear(&none);
                varlink_buffer_clear(&b);
        }
}

/* Formats a parsed error reply again and parses it back: same name, same parameters. */
static void fuzz_error_round_trip(const VarlinkReply *reply) {
        VarlinkBuffer b = {};
        VarlinkReply again;
        const char *reason;
        size_t frame_len;

        if (varlink_format_error(&b, reply->error, reply->parameters) < 0 ||
            varlink_frame_next(b.data, b.len, b.len, &frame_len) != 1 || frame_len + 1 != b.len ||
            varlink_reply_parse(b.data, frame_len, &again, &reason) < 0 || !again.error ||
            strcmp(again.error, reply->error) != 0 || again.continues ||
            !json_object_equal(again.parameters, reply->parameters))
                abort();
        varlink_reply_done(&again);
        varlink_buffer_clear(&b);
}

/* A table where every parameter kind can fail in a different place. */
static const VarlinkField fuzz_flat_fields[] = {
        {"allocation", VARLINK_FIELD_STRING, false, 16},
        {"inputTokens", VARLINK_FIELD_INT, true, 1000},
        {"outputTokens", VARLINK_FIELD_INT, true, 0},
        {"flag", VARLINK_FIELD_BOOL, true, 0},
        {"a", VARLINK_FIELD_INT, true, 0},
        {"", VARLINK_FIELD_STRING, true, 0},
};

#define FUZZ_SENTINEL ((const char *)fuzz_fields)

static bool fuzz_value_equal(const VarlinkValue *a, const VarlinkValue *b) {
        if (a->present != b->present || a->i != b->i || a->b != b->b)
                return false;
        if (a->s == b->s)
                return true;
        return a->s && b->s && a->s != FUZZ_SENTINEL && b->s != FUZZ_SENTINEL && strcmp(a->s, b->s) == 0;
}

static void fuzz_flat_params(struct json_object *parameters, const VarlinkFlatCall *fc,
                             const VarlinkField *fields, size_t n_fields) {
        VarlinkValue strict[8], flat[8];
        const char *strict_bad = "unset", *flat_bad = "unset";

        if (n_fields > 8)
                abort();
        for (size_t i = 0; i < 8; i++)
                strict[i] = flat[i] = (VarlinkValue){true, -7, FUZZ_SENTINEL, true};
        if (varlink_params_parse(parameters, fields, n_fields, strict, &strict_bad) !=
            varlink_flat_params_parse(fc, fields, n_fields, flat, &flat_bad))
                abort();
        if (!strict_bad != !flat_bad || (strict_bad && strcmp(strict_bad, flat_bad) != 0))
                abort();
        for (size_t i = 0; i < 8; i++)
                if (!fuzz_value_equal(&strict[i], &flat[i]))
                        abort();
}

static bool fuzz_flat_param_equal(const VarlinkFlatParam *v, const char *key, struct json_object *o) {
        if (strcmp(key, v->name) != 0 || strlen(v->name) != v->name_len)
                return false;
        if (v->is_null)
                return o == NULL;
        switch (v->type) {
        case VARLINK_FIELD_INT:
                return json_object_is_type(o, json_type_int) && json_object_get_int64(o) == v->i;
        case VARLINK_FIELD_STRING:
                return json_object_is_type(o, json_type_string) &&
                       (size_t)json_object_get_string_len(o) == v->s_len && strlen(v->s) == v->s_len &&
                       memcmp(json_object_get_string(o), v->s, v->s_len) == 0;
        case VARLINK_FIELD_BOOL:
                return json_object_is_type(o, json_type_boolean) && json_object_get_boolean(o) == v->b;
        }
        return false;
}

/* The flat path against the strict one, on a private copy it may modify. */
static void fuzz_flat(const char *msg, size_t len) {
        char *copy = malloc(len + 1);
        const char *reason;
        VarlinkFlatCall fc;
        VarlinkCall call;
        size_t k = 0;
        int r;

        if (!copy)
                abort();
        memcpy(copy, msg, len);
        copy[len] = 'X';
        r = varlink_call_parse_flat(copy, len, &fc);
        if (copy[len] != 'X' || (r != 0 && r != 1))
                abort();
        if (r == 0) {
                if (memcmp(copy, msg, len) != 0)
                        abort();
                free(copy);
                return;
        }
        if (varlink_call_parse(msg, len, &call, &reason) < 0 || strcmp(call.method, fc.method) != 0 ||
            strlen(fc.method) != fc.method_len || call.oneway != fc.oneway || call.more != fc.more ||
            call.upgrade != fc.upgrade || (size_t)json_object_object_length(call.parameters) != fc.n_params)
                abort();
        json_object_object_foreach(call.parameters, key, o) {
                if (!fuzz_flat_param_equal(&fc.params[k++], key, o))
                        abort();
        }
        fuzz_flat_params(call.parameters, &fc, fuzz_fields, sizeof(fuzz_fields) / sizeof(fuzz_fields[0]));
        fuzz_flat_params(call.parameters, &fc, fuzz_flat_fields,
                         sizeof(fuzz_flat_fields) / sizeof(fuzz_flat_fields[0]));
        fuzz_flat_params(call.parameters, &fc, fuzz_flat_fields + 1, 3);
        fuzz_flat_params(call.parameters, &fc, NULL, 0);
        varlink_call_done(&call);
        free(copy);
}

/* ---- the JSON parser and writer against json-c ---- */

/* Same type and value through every getter, members in order (see
 * json_identical() in tests/common/flat-differential.c). */
static bool fuzz_json_identical(struct json_object *a, struct json_object *b) {
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
                        if (!fuzz_json_identical(json_object_array_get_idx(a, i),
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
                            !fuzz_json_identical(value, lh_entry_v(eb)))
                                return false;
                        eb = lh_entry_next(eb);
                }
                return true;
        }
        }
        return false;
}

/* json_codec_write() and json-c's writer give the same bytes for o. */
static void fuzz_json_write(struct json_object *o) {
        VarlinkBuffer b = {};
        const char *text;
        size_t len;

        text = json_object_to_json_string_length(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE,
                                                 &len);
        if (!text || json_codec_write(&b, o) < 0 || b.len != len || memcmp(b.data, text, len) != 0)
                abort();
        varlink_buffer_clear(&b);
}

static void fuzz_json(const char *msg, size_t len) {
        struct json_object *ours = NULL, *ref = NULL, *s, *k;
        const char *ours_reason = NULL, *ref_reason = NULL;
        bool ours_dup = false, ref_dup = false;
        char *key;
        int r;

        r = json_codec_parse(msg, len, VARLINK_MAX_DEPTH, &ours, &ours_dup, &ours_reason);
        if (r != json_oracle_parse(msg, len, &ref, &ref_dup, &ref_reason))
                abort();
        if (r < 0) {
                if (ours || !ours_reason || strcmp(ours_reason, ref_reason) != 0)
                        abort();
        } else {
                if (ours_reason || ours_dup != ref_dup || !fuzz_json_identical(ours, ref))
                        abort();
                fuzz_json_write(ours);
        }
        json_object_put(ours);
        json_object_put(ref);

        /* Any bytes as a string, and up to the first NUL as a key. */
        s = json_object_new_string_len(msg, (int)len);
        k = json_object_new_object();
        key = malloc(len + 1);
        if (!s || !k || !key)
                abort();
        memcpy(key, msg, len);
        key[len] = '\0';
        if (json_object_object_add(k, key, json_object_get(s)) < 0)
                abort();
        fuzz_json_write(s);
        fuzz_json_write(k);
        free(key);
        json_object_put(s);
        json_object_put(k);
}

static bool fuzz_alpha(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

static bool fuzz_alnum(char c) {
        return fuzz_alpha(c) || (c >= '0' && c <= '9');
}

/* The UAPI.20 regular expressions read left to right, apart from the codec's
 * label-by-label check, so that the fuzzer compares two readings:
 *   [A-Za-z]([-]*[A-Za-z0-9])*(\.[A-Za-z0-9]([-]*[A-Za-z0-9])*)+ "." [A-Z][A-Za-z0-9]*
 * The member cannot hold a dot, so it is what follows the last one. */
static bool fuzz_reference_name(const char *s, size_t n) {
        size_t dot = n, i, labels = 0;

        while (dot > 0 && s[dot - 1] != '.')
                dot--;
        if (dot == 0 || dot == n || !(s[dot] >= 'A' && s[dot] <= 'Z'))
                return false;
        for (i = dot + 1; i < n; i++)
                if (!fuzz_alnum(s[i]))
                        return false;
        dot--; /* the interface is s[0..dot) */
        if (dot == 0 || !fuzz_alpha(s[0]))
                return false;
        for (i = 1;;) {
                /* ([-]*[A-Za-z0-9])* */
                while (i < dot && (s[i] == '-' || fuzz_alnum(s[i]))) {
                        while (i < dot && s[i] == '-')
                                i++;
                        if (i == dot || !fuzz_alnum(s[i]))
                                return false;
                        i++;
                }
                labels++;
                if (i == dot)
                        return labels >= 2;
                /* \.[A-Za-z0-9] */
                if (s[i] != '.' || i + 1 == dot || !fuzz_alnum(s[i + 1]))
                        return false;
                i += 2; /* the dot and the first character of the label */
        }
}

/* The frame as a C string (up to its first NUL) for the name and identifier
 * parsers. */
static void fuzz_strings(const char *msg, size_t len) {
        char *s = malloc(len + 1), out[ALLOCATION_ID_STRING_MAX];
        size_t interface_len, n;
        uint64_t id;
        bool hex = true;

        if (!s)
                abort();
        memcpy(s, msg, len);
        s[len] = '\0';
        n = strlen(s);
        if ((varlink_method_split(s, &interface_len) == 0) != fuzz_reference_name(s, n))
                abort();
        for (size_t i = 0; i < n; i++)
                hex = hex && ((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'));
        hex = hex && n == ALLOCATION_ID_STRING_MAX - 1;
        if ((allocation_id_parse(s, &id) == 0) != hex)
                abort();
        if (hex) {
                allocation_id_format(id, out);
                if (strcmp(out, s) != 0)
                        abort();
        }
        free(s);
}

static void fuzz_frame(const char *msg, size_t len) {
        VarlinkValue values[sizeof(fuzz_fields) / sizeof(fuzz_fields[0])];
        const char *reason, *bad;
        VarlinkReply reply;
        VarlinkCall call;
        int r;

        reason = NULL;
        r = varlink_call_parse(msg, len, &call, &reason);
        if (r == 0) {
                size_t interface_len;

                if (varlink_method_split(call.method, &interface_len) < 0)
                        abort();
                if (varlink_params_parse(call.parameters, fuzz_fields,
                                         sizeof(fuzz_fields) / sizeof(fuzz_fields[0]), values, &bad) < 0) {
                        VarlinkBuffer b = {};

                        if (!bad || varlink_format_invalid_parameter(&b, bad) < 0)
                                abort();
                        varlink_buffer_clear(&b);
                }
                fuzz_round_trip(&call);
                varlink_call_done(&call);
        } else if (r != -EBADMSG || !reason)
                abort();

        if (varlink_reply_parse(msg, len, &reply, &reason) == 0) {
                if (reply.error)
                        fuzz_error_round_trip(&reply);
                varlink_reply_done(&reply);
        } else if (!reason)
                abort();
        fuzz_flat(msg, len);
        fuzz_json(msg, len);
        fuzz_strings(msg, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        const char *buf = (const char *)data;
        size_t off = 0, frame_len;
        int r;

        while ((r = varlink_frame_next(buf + off, size - off, FUZZ_MAX_MESSAGE_BYTES, &frame_len)) > 0) {
                fuzz_frame(buf + off, frame_len);
                off += frame_len + 1;
        }
        if (r != 0 && r != -EMSGSIZE)
                abort();
        /* A trailing partial frame is still worth parsing as a whole message. */
        if (r == 0 && off < size)
                fuzz_frame(buf + off, size - off);
        return 0;
}
