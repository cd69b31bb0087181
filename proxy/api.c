/* SPDX-License-Identifier: MIT */
/*
 * The model APIs as the proxy sees them (see api.h). Facts, from the APIs'
 * own clients and servers (../shared/PROXY-NOTES.md has the sources):
 * - OpenAI chat/completions: usage {prompt_tokens, completion_tokens}; a
 *   stream is "data: {chunk}" events ending in "data: [DONE]", with usage
 *   only in an extra chunk (choices: []) when stream_options.include_usage
 *   is true; llama.cpp adds timings {prompt_n, cache_n, predicted_n}.
 * - OpenAI Responses: usage {input_tokens, output_tokens}; typed events, the
 *   terminal response.completed / .incomplete / .failed carry response.usage.
 * - Ollama native: NDJSON, streaming unless "stream": false; counts
 *   (prompt_eval_count, eval_count) only in the last object, done: true, and
 *   omitted when zero (Go omitempty in ollama's api/types.go Metrics).
 * - Anthropic: SSE events message_start (input and cache counts),
 *   content_block_*, message_delta (output_tokens cumulative: the last value
 *   counts, never the sum), message_stop, ping, error; input is
 *   input_tokens + cache_creation_input_tokens + cache_read_input_tokens.
 * JSON is read with json-c's strict tokener behind a lexical check for what
 * it lets through (NaN, Infinity, single quotes, comments, raw control
 * characters in strings, data after the value). Pure: no I/O, no clock.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "macro.h"
#include "sse.h"

/* Deep enough for any real request (tool schemas nest), small enough that
 * json-c's recursive put and print stay shallow. */
#define API_JSON_MAX_DEPTH 64
/* Choices of an OpenAI stream the cut closes; n above this is not seen in practice. */
#define API_MAX_CHOICES 128
/* Responses: the output items and text parts a cut rebuilds, and the text it keeps for them (the
 * client saw it as deltas; the incomplete response the cut sends carries it, as OpenAI's does). */
#define API_MAX_OUTPUT_ITEMS 64
#define API_MAX_TEXT_PARTS   16

static const char *const kind_names[_API_KIND_MAX] = {
        [API_KIND_AUTO] = "auto",
        [API_KIND_OPENAI] = "openai",
        [API_KIND_OLLAMA] = "ollama",
        [API_KIND_ANTHROPIC] = "anthropic",
};

const char *api_kind_to_string(ApiKind k) {
        return (unsigned)k < _API_KIND_MAX ? kind_names[k] : NULL;
}

int api_kind_from_string(const char *s) {
        for (ApiKind k = 0; s && k < _API_KIND_MAX; k++)
                if (strcmp(s, kind_names[k]) == 0)
                        return (int)k;
        return -EINVAL;
}

static const char *const endpoint_names[_API_EP_MAX] = {
        [API_EP_NONE] = "none",
        [API_EP_OPENAI_CHAT] = "openai-chat",
        [API_EP_OPENAI_COMPLETIONS] = "openai-completions",
        [API_EP_OPENAI_RESPONSES] = "openai-responses",
        [API_EP_OLLAMA_CHAT] = "ollama-chat",
        [API_EP_OLLAMA_GENERATE] = "ollama-generate",
        [API_EP_ANTHROPIC_MESSAGES] = "anthropic-messages",
};

const char *api_endpoint_to_string(ApiEndpoint ep) {
        return (unsigned)ep < _API_EP_MAX ? endpoint_names[ep] : NULL;
}

/* ---- endpoints ---- */

static int hexval(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* path (up to '?' or '#') percent-decoded, with empty, "." and ".." segments resolved, into out (of
 * strlen(path) + 2 bytes at least): "/a/b", or "" for the root. false for an escaped NUL. */
static bool normalize_path(const char *path, char *out) {
        size_t o = 0, seg = 0;
        bool started = false; /* the segment in progress has its slash in out */

        for (const char *p = path;; p++) {
                char c = *p;

                if (c == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
                        c = (char)(hexval(p[1]) << 4 | hexval(p[2]));
                        p += 2;
                        if (c == '\0')
                                return false;
                } else if (c == '?' || c == '#')
                        c = '\0';
                if (c != '/' && c != '\0') {
                        if (!started) {
                                out[o++] = '/';
                                seg = o;
                                started = true;
                        }
                        out[o++] = c;
                        continue;
                }
                if (started && o - seg == 1 && out[seg] == '.')
                        o = seg - 1;
                else if (started && o - seg == 2 && out[seg] == '.' && out[seg + 1] == '.') {
                        o = seg - 1;
                        while (o > 0 && out[--o] != '/')
                                ;
                }
                started = false;
                if (c == '\0')
                        break;
        }
        out[o] = '\0';
        return true;
}

ApiEndpoint api_endpoint(ApiKind kind, const char *method, const char *path, bool *ret_ollama_flavor) {
        static const struct {
                const char *path;
                ApiEndpoint ep;
                bool ollama_v1; /* an OpenAI endpoint Ollama also serves */
        } table[] = {
                {"/v1/chat/completions", API_EP_OPENAI_CHAT, true},
                {"/v1/completions", API_EP_OPENAI_COMPLETIONS, true},
                {"/v1/responses", API_EP_OPENAI_RESPONSES, false},
                {"/api/chat", API_EP_OLLAMA_CHAT, false},
                {"/api/generate", API_EP_OLLAMA_GENERATE, false},
                {"/v1/messages", API_EP_ANTHROPIC_MESSAGES, false},
        };
        _cleanup_free_ char *norm = NULL;

        if (ret_ollama_flavor)
                *ret_ollama_flavor = false;
        if (!method || !path || strcmp(method, "POST") != 0)
                return API_EP_NONE;
        /* a path the proxy cannot look at is forwarded unbudgeted only when memory is out */
        if (!(norm = malloc(strlen(path) + 2)) || !normalize_path(path, norm))
                return API_EP_NONE;
        for (size_t i = 0; i < ELEMENTSOF(table); i++)
                if (strcmp(norm, table[i].path) == 0) {
                        if (ret_ollama_flavor)
                                *ret_ollama_flavor = kind == API_KIND_OLLAMA && table[i].ollama_v1;
                        return table[i].ep;
                }
        return API_EP_NONE;
}

/* ---- buffers ---- */

void api_buffer_done(ApiBuffer *b) {
        if (!b)
                return;
        free(b->data);
        *b = (ApiBuffer){};
}

int api_buffer_append(ApiBuffer *b, const void *p, size_t n) {
        size_t want, cap;
        char *d;

        if (n > SIZE_MAX - b->len - 1)
                return -ENOMEM;
        want = b->len + n + 1;
        if (want > b->cap) {
                cap = b->cap ? b->cap : 512;
                while (cap < want)
                        cap = cap > SIZE_MAX / 2 ? want : cap * 2;
                d = realloc(b->data, cap);
                if (!d)
                        return -ENOMEM;
                b->data = d;
                b->cap = cap;
        }
        if (n)
                memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
}

static int buffer_puts(ApiBuffer *b, const char *s) {
        return api_buffer_append(b, s, strlen(s));
}

/* ---- JSON ---- */

/* What json-c 0.16's strict mode still accepts and JSON does not: outside strings only JSON's
 * structural characters, numbers and the letters of true, false and null; inside strings no raw
 * control characters; nothing after the top-level object or array closes. NULL or the reason. */
static const char *json_lexical_check(const char *s, size_t len) {
        bool in_string = false, closed = false;
        size_t depth = 0;

        for (size_t i = 0; i < len; i++) {
                unsigned char c = (unsigned char)s[i];

                if (in_string) {
                        if (c == '\\')
                                i++;
                        else if (c == '"')
                                in_string = false;
                        else if (c < 0x20)
                                return "body: a control character in a string";
                        continue;
                }
                if (closed && !strchr(" \t\n\r", c))
                        return "body: data after the JSON object";
                if (c == '"')
                        in_string = true;
                else if (c == '{' || c == '[')
                        depth++;
                else if ((c == '}' || c == ']') && depth > 0)
                        closed = --depth == 0;
                else if (!strchr(" \t\n\r{}[]:,-+.0123456789truefalsnE", c) || c == '\0')
                        return "body: not JSON (NaN, Infinity, a comment, a single quote or a byte JSON has "
                               "not)";
        }
        return NULL;
}

static void json_tokener_freep(json_tokener **t) {
        if (*t)
                json_tokener_free(*t);
}

/* Parses s[0..len), which must be one JSON object with only whitespace around it; the reasons are
 * static and name the body. *reuse (may be NULL) keeps a tokener from one call to the next (a stream's
 * events): one that failed is freed, never reset and reused (json-c 0.16 keeps half a surrogate pair
 * across a reset after an error: tests/fuzz/corpus/codec/crash-tokener-surrogate-state). */
static int json_parse_object_with(json_tokener **reuse, const char *s, size_t len, json_object **ret,
                                  const char **ret_error) {
        _cleanup_(json_tokener_freep) json_tokener *tok = NULL;
        json_object *o;
        const char *why;
        size_t end;

        *ret = NULL;
        if (len > INT_MAX) {
                *ret_error = "body: too long";
                return -EBADMSG;
        }
        if ((why = json_lexical_check(s, len))) {
                *ret_error = why;
                return -EBADMSG;
        }
        if (reuse && *reuse) {
                tok = TAKE_PTR(*reuse);
                json_tokener_reset(tok);
        } else if (!(tok = json_tokener_new_ex(API_JSON_MAX_DEPTH)))
                return -ENOMEM;
        json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
        o = json_tokener_parse_ex(tok, s, (int)len);
        switch (json_tokener_get_error(tok)) {
        case json_tokener_success:
                break;
        case json_tokener_continue:
                *ret_error = "body: incomplete JSON";
                return -EBADMSG;
        case json_tokener_error_depth:
                *ret_error = "body: JSON nested too deeply (64 levels)";
                return -EBADMSG;
        case json_tokener_error_parse_utf8_string:
                *ret_error = "body: invalid UTF-8";
                return -EBADMSG;
        default:
                *ret_error = "body: invalid JSON";
                return -EBADMSG;
        }
        for (end = json_tokener_get_parse_end(tok); end < len; end++)
                if (!strchr(" \t\n\r", s[end])) {
                        json_object_put(o);
                        *ret_error = "body: data after the JSON object";
                        return -EBADMSG;
                }
        if (!json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                *ret_error = "body: not a JSON object";
                return -EBADMSG;
        }
        *ret = o;
        if (reuse)
                *reuse = TAKE_PTR(tok);
        return 0;
}

static int json_parse_object(const char *s, size_t len, json_object **ret, const char **ret_error) {
        return json_parse_object_with(NULL, s, len, ret, ret_error);
}

static void json_object_putp(json_object **o) {
        json_object_put(*o);
}

/* The member key of o, NULL when absent or null (or o is not an object). */
static json_object *member(json_object *o, const char *key) {
        json_object *v;

        if (!json_object_is_type(o, json_type_object) || !json_object_object_get_ex(o, key, &v))
                return NULL;
        return v; /* NULL for a JSON null */
}

static const char *member_string(json_object *o, const char *key) {
        json_object *v = member(o, key);

        return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static size_t member_string_len(json_object *o, const char *key) {
        json_object *v = member(o, key);

        return json_object_is_type(v, json_type_string) ? (size_t)json_object_get_string_len(v) : 0;
}

typedef enum IntResult {
        INT_ABSENT,  /* absent or null */
        INT_OK,      /* an integer (or a double with an integral value) in int64's range */
        INT_NOT_INT, /* another type, or a fraction */
        INT_RANGE,   /* beyond int64 (json-c saturates: caught here) */
} IntResult;

static IntResult member_int(json_object *o, const char *key, int64_t *ret) {
        json_object *v = member(o, key);
        double d;

        if (!v)
                return INT_ABSENT;
        switch (json_object_get_type(v)) {
        case json_type_int:
                /* json-c keeps an integer above INT64_MAX as uint64, saturating at UINT64_MAX;
                 * one below INT64_MIN saturates there */
                if (json_object_get_uint64(v) > (uint64_t)INT64_MAX)
                        return INT_RANGE;
                *ret = json_object_get_int64(v);
                return *ret == INT64_MIN ? INT_RANGE : INT_OK;
        case json_type_double:
                d = json_object_get_double(v);
                /* 2^63 is the first double out of int64's range */
                if (!(d > -9223372036854775808.0 && d < 9223372036854775808.0))
                        return INT_RANGE;
                if ((double)(int64_t)d != d)
                        return INT_NOT_INT;
                *ret = (int64_t)d;
                return INT_OK;
        default:
                return INT_NOT_INT;
        }
}

/* A token count sent by an upstream: absent/null is 0 with *has false; else a non-negative integer. */
static int member_count(json_object *o, const char *key, uint64_t *ret, bool *has) {
        int64_t v = 0;

        switch (member_int(o, key, &v)) {
        case INT_ABSENT:
                *ret = 0;
                if (has)
                        *has = false;
                return 0;
        case INT_OK:
                if (v < 0)
                        return -EBADMSG;
                *ret = (uint64_t)v;
                if (has)
                        *has = true;
                return 0;
        default:
                return -EBADMSG;
        }
}

static uint64_t add_sat(uint64_t a, uint64_t b) {
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static int json_to_buffer(json_object *o, ApiBuffer *b) {
        size_t n;
        const char *s = json_object_to_json_string_length(
                o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);

        return s ? api_buffer_append(b, s, n) : -ENOMEM;
}

static int json_set(json_object *o, const char *key, json_object *v) {
        if (!v)
                return -ENOMEM;
        if (json_object_object_add(o, key, v) < 0) {
                json_object_put(v);
                return -ENOMEM;
        }
        return 0;
}

static int json_set_int(json_object *o, const char *key, uint64_t v) {
        return json_set(o, key, json_object_new_int64(v > INT64_MAX ? INT64_MAX : (int64_t)v));
}

static int json_set_string(json_object *o, const char *key, const char *v) {
        return json_set(o, key, json_object_new_string(v));
}

/* ---- requests ---- */

static bool ep_openai_shaped(ApiEndpoint ep) {
        return ep == API_EP_OPENAI_CHAT || ep == API_EP_OPENAI_COMPLETIONS;
}

static bool ep_ollama_native(ApiEndpoint ep) {
        return ep == API_EP_OLLAMA_CHAT || ep == API_EP_OLLAMA_GENERATE;
}

/* The messages a request field gives for each way it can be wrong; static, for *ret_error. */
typedef struct MaxField {
        const char *name;
        bool negative_unlimited; /* -1 means no limit (llama.cpp's n_predict, Ollama's num_predict) */
        const char *not_int, *negative, *range;
} MaxField;

#define MAX_FIELD(n, neg)                                                                                   \
        {                                                                                                   \
                n, neg, n ": not an integer", n ": must not be negative",                                   \
                        n ": out of range (integers up to 9223372036854775807)"                             \
        }

static const MaxField field_max_tokens = MAX_FIELD("max_tokens", false);
static const MaxField field_max_completion_tokens = MAX_FIELD("max_completion_tokens", false);
static const MaxField field_max_output_tokens = MAX_FIELD("max_output_tokens", false);
static const MaxField field_n_predict = MAX_FIELD("n_predict", true);
static const MaxField field_num_predict = MAX_FIELD("options.num_predict", true);

/* The fields that bound the output, per endpoint: the client's max is the smallest given. */
static void max_fields(ApiEndpoint ep, bool ollama_flavor, const MaxField *ret[3]) {
        ret[0] = ret[1] = ret[2] = NULL;
        switch (ep) {
        case API_EP_OPENAI_CHAT:
                ret[0] = &field_max_completion_tokens;
                ret[1] = &field_max_tokens;
                ret[2] = ollama_flavor ? NULL : &field_n_predict;
                break;
        case API_EP_OPENAI_COMPLETIONS:
                ret[0] = &field_max_tokens;
                ret[1] = ollama_flavor ? NULL : &field_n_predict;
                break;
        case API_EP_OPENAI_RESPONSES:
                ret[0] = &field_max_output_tokens;
                break;
        case API_EP_OLLAMA_CHAT:
        case API_EP_OLLAMA_GENERATE:
                ret[0] = &field_num_predict;
                break;
        case API_EP_ANTHROPIC_MESSAGES:
                ret[0] = &field_max_tokens;
                break;
        default:
                break;
        }
}

static json_object *field_parent(json_object *body, const MaxField *f) {
        return f == &field_num_predict ? member(body, "options") : body;
}

static const char *field_key(const MaxField *f) {
        return f == &field_num_predict ? "num_predict" : f->name;
}

static int read_max_field(json_object *body, const MaxField *f, bool *has, uint64_t *max,
                          const char **ret_error) {
        int64_t v = 0;

        switch (member_int(field_parent(body, f), field_key(f), &v)) {
        case INT_ABSENT:
                return 0;
        case INT_NOT_INT:
                *ret_error = f->not_int;
                return -EBADMSG;
        case INT_RANGE:
                *ret_error = f->range;
                return -EBADMSG;
        case INT_OK:
                break;
        }
        if (v < 0) {
                if (f->negative_unlimited)
                        return 0;
                *ret_error = f->negative;
                return -EBADMSG;
        }
        if (!*has || (uint64_t)v < *max)
                *max = (uint64_t)v;
        *has = true;
        return 0;
}

/* The bytes of the text a request sends the model: strings under the keys that carry text, tool
 * arguments and inputs as their JSON, token arrays as 4 bytes a token; images and other data are not
 * text. depth is bounded by the parser's. */
static uint64_t text_bytes(json_object *v, unsigned depth);

static uint64_t text_member_bytes(json_object *o, unsigned depth) {
        static const char *const keys[] = {
                "content",    "text",         "thinking", "reasoning_content", "refusal", "output",
                "tool_calls", "function",     "name",     "messages",          "prompt",  "system",
                "suffix",     "instructions", "input",    "arguments",
        };
        uint64_t n = 0;
        json_object *v;

        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                if (!(v = member(o, keys[i])))
                        continue;
                if ((strcmp(keys[i], "arguments") == 0 || strcmp(keys[i], "input") == 0) &&
                    json_object_is_type(v, json_type_object))
                        n = add_sat(n, strlen(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN)));
                else
                        n = add_sat(n, text_bytes(v, depth + 1));
        }
        return n;
}

static uint64_t text_bytes(json_object *v, unsigned depth) {
        uint64_t n = 0;

        if (depth > API_JSON_MAX_DEPTH)
                return 0;
        switch (json_object_get_type(v)) {
        case json_type_string:
                return (uint64_t)json_object_get_string_len(v);
        case json_type_int:
                return 4; /* a token id of a prompt given as tokens */
        case json_type_array:
                for (size_t i = 0, k = json_object_array_length(v); i < k; i++)
                        n = add_sat(n, text_bytes(json_object_array_get_idx(v, i), depth + 1));
                return n;
        case json_type_object:
                return text_member_bytes(v, depth);
        default:
                return 0;
        }
}

static uint64_t prompt_estimate(json_object *body) {
        static const char *const keys[] = {"messages", "prompt",       "system",
                                           "suffix",   "instructions", "input"};
        uint64_t n = 0;
        json_object *v;

        for (size_t i = 0; i < ELEMENTSOF(keys); i++)
                if ((v = member(body, keys[i])))
                        n = add_sat(n, text_bytes(v, 1));
        /* tool definitions are part of the prompt the model reads */
        if ((v = member(body, "tools")))
                n = add_sat(n, strlen(json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN)));
        n = n / 4 + (n % 4 != 0);
        return n ? n : 1;
}

void api_request_done(ApiRequest *r) {
        if (!r)
                return;
        free(r->model);
        json_object_put(r->body);
        *r = (ApiRequest){};
}

/* OpenAI's n and completions' best_of: the choices the output is made of. */
static int read_choices(ApiEndpoint ep, bool ollama_flavor, json_object *body, uint64_t *ret,
                        const char **ret_error) {
        static const struct {
                const char *key, *not_int, *range;
                int64_t max; /* OpenAI's limits */
        } fields[] = {
                {"n", "n: not an integer", "n: out of range (1 to 128)", 128},
                {"best_of", "best_of: not an integer", "best_of: out of range (1 to 20)", 20},
        };
        int64_t v = 1;

        *ret = 1;
        if (!ep_openai_shaped(ep) || ollama_flavor)
                return 0;
        for (size_t i = 0; i < (ep == API_EP_OPENAI_COMPLETIONS ? 2u : 1u); i++)
                switch (member_int(body, fields[i].key, &v)) {
                case INT_ABSENT:
                        break;
                case INT_NOT_INT:
                        *ret_error = fields[i].not_int;
                        return -EBADMSG;
                default:
                        if (v < 1 || v > fields[i].max) {
                                *ret_error = fields[i].range;
                                return -EBADMSG;
                        }
                        if ((uint64_t)v > *ret)
                                *ret = (uint64_t)v;
                }
        return 0;
}

static uint64_t mul_sat(uint64_t a, uint64_t b) {
        return b && a > UINT64_MAX / b ? UINT64_MAX : a * b;
}

static int request_check_types(ApiEndpoint ep, json_object *body, ApiRequest *r, const char **ret_error) {
        json_object *v, *so;

        v = member(body, "model");
        if (v && !json_object_is_type(v, json_type_string)) {
                *ret_error = "model: not a string";
                return -EBADMSG;
        }
        if (v && !(r->model = strdup(json_object_get_string(v))))
                return -ENOMEM;
        /* Ollama's native API streams unless told not to (api/types.go: "true by default") */
        r->stream = ep_ollama_native(ep);
        v = member(body, "stream");
        if (v && !json_object_is_type(v, json_type_boolean)) {
                *ret_error = "stream: not a boolean";
                return -EBADMSG;
        }
        if (v)
                r->stream = json_object_get_boolean(v);
        if (ep_openai_shaped(ep) && (so = member(body, "stream_options"))) {
                if (!json_object_is_type(so, json_type_object)) {
                        *ret_error = "stream_options: not an object";
                        return -EBADMSG;
                }
                v = member(so, "include_usage");
                if (v && !json_object_is_type(v, json_type_boolean)) {
                        *ret_error = "stream_options.include_usage: not a boolean";
                        return -EBADMSG;
                }
                r->client_wants_usage = v && json_object_get_boolean(v);
        }
        if (ep_ollama_native(ep) && (v = member(body, "options")) &&
            !json_object_is_type(v, json_type_object)) {
                *ret_error = "options: not an object";
                return -EBADMSG;
        }
        return 0;
}

int api_request_parse(ApiEndpoint ep, bool ollama_flavor, const char *body, size_t len, ApiRequest *ret,
                      const char **ret_error) {
        _cleanup_(api_request_done) ApiRequest r = {};
        const MaxField *fields[3];
        const char *why = NULL;
        int k;

        *ret = (ApiRequest){};
        *ret_error = NULL;
        k = json_parse_object(body ? body : "", body ? len : 0, &r.body, &why);
        if (k == -EBADMSG)
                *ret_error = why;
        if (k < 0)
                return k;
        if ((k = request_check_types(ep, r.body, &r, ret_error)) < 0)
                return k;
        max_fields(ep, ollama_flavor, fields);
        for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                if (fields[i] &&
                    (k = read_max_field(r.body, fields[i], &r.has_max_output, &r.max_output, ret_error)) < 0)
                        return k;
        if ((k = read_choices(ep, ollama_flavor, r.body, &r.choices, ret_error)) < 0)
                return k;
        r.max_output = mul_sat(r.max_output, r.choices);
        r.prompt_estimate = prompt_estimate(r.body);
        *ret = TAKE_STRUCT(r);
        return 0;
}

static int rewrite_max(ApiEndpoint ep, bool ollama_flavor, json_object *body, uint64_t v) {
        json_object *options;
        int r = 0;

        switch (ep) {
        case API_EP_OPENAI_CHAT:
                if (ollama_flavor)
                        return json_set_int(body, "max_tokens", v);
                if (member(body, "max_completion_tokens") || !member(body, "max_tokens"))
                        r = json_set_int(body, "max_completion_tokens", v);
                if (r >= 0 && member(body, "max_tokens"))
                        r = json_set_int(body, "max_tokens", v);
                if (r >= 0 && member(body, "n_predict"))
                        r = json_set_int(body, "n_predict", v);
                return r;
        case API_EP_OPENAI_COMPLETIONS:
                r = json_set_int(body, "max_tokens", v);
                if (r >= 0 && !ollama_flavor && member(body, "n_predict"))
                        r = json_set_int(body, "n_predict", v);
                return r;
        case API_EP_OPENAI_RESPONSES:
                return json_set_int(body, "max_output_tokens", v);
        case API_EP_OLLAMA_CHAT:
        case API_EP_OLLAMA_GENERATE:
                if (!(options = member(body, "options"))) {
                        if ((r = json_set(body, "options", json_object_new_object())) < 0)
                                return r;
                        options = member(body, "options");
                }
                return json_set_int(options, "num_predict", v);
        case API_EP_ANTHROPIC_MESSAGES:
                return json_set_int(body, "max_tokens", v);
        default:
                return 0;
        }
}

int api_request_rewrite(ApiEndpoint ep, bool ollama_flavor, ApiRequest *r, uint64_t max_output,
                        const char *model, char **ret_body, size_t *ret_len) {
        json_object *so;
        const char *s;
        size_t n;
        int k;

        *ret_body = NULL;
        *ret_len = 0;
        if (!r->body)
                return -EINVAL;
        if (ep != API_EP_NONE) {
                uint64_t choices = r->choices ? r->choices : 1;
                uint64_t per = max_output / choices, v;

                /* each choice may reach the field's value: the grant shared out, never 0 unless it is */
                if (per == 0 && max_output > 0)
                        per = 1;
                v = r->has_max_output && r->max_output / choices < per ? r->max_output / choices : per;

                if ((k = rewrite_max(ep, ollama_flavor, r->body, v)) < 0)
                        return k;
        }
        if (ep_openai_shaped(ep) && r->stream && !r->client_wants_usage) {
                if (!(so = member(r->body, "stream_options"))) {
                        if ((k = json_set(r->body, "stream_options", json_object_new_object())) < 0)
                                return k;
                        so = member(r->body, "stream_options");
                }
                if ((k = json_set(so, "include_usage", json_object_new_boolean(1))) < 0)
                        return k;
        }
        if (model && (k = json_set_string(r->body, "model", model)) < 0)
                return k;
        s = json_object_to_json_string_length(r->body,
                                              JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &n);
        if (!s || !(*ret_body = strndup(s, n)))
                return -ENOMEM;
        *ret_len = n;
        return 0;
}

/* ---- usage in whole responses ---- */

/* llama.cpp's timings: prompt_n (evaluated now) + cache_n (reused) in, predicted_n out. Its values
 * can be -1 while unknown: then there is no count. */
static bool timings_usage(json_object *o, uint64_t *in, uint64_t *out) {
        json_object *t = member(o, "timings");
        int64_t p = -1, c = 0, g = -1;

        if (!t || member_int(t, "prompt_n", &p) != INT_OK || member_int(t, "predicted_n", &g) != INT_OK)
                return false;
        if (member_int(t, "cache_n", &c) != INT_OK)
                c = 0;
        if (p < 0 || g < 0 || c < 0)
                return false;
        *in = add_sat((uint64_t)p, (uint64_t)c);
        *out = (uint64_t)g;
        return true;
}

static bool openai_choices_length(json_object *o) {
        json_object *choices = member(o, "choices");
        const char *fr;

        for (size_t i = 0, n = json_object_is_type(choices, json_type_array)
                                       ? json_object_array_length(choices)
                                       : 0;
             i < n; i++)
                if ((fr = member_string(json_object_array_get_idx(choices, i), "finish_reason")) &&
                    strcmp(fr, "length") == 0)
                        return true;
        return false;
}

/* Anthropic: input_tokens + both cache fields. */
static int anthropic_usage(json_object *u, uint64_t *in, uint64_t *out) {
        uint64_t i, cc, cr;

        if (member_count(u, "input_tokens", &i, NULL) < 0 ||
            member_count(u, "cache_creation_input_tokens", &cc, NULL) < 0 ||
            member_count(u, "cache_read_input_tokens", &cr, NULL) < 0 ||
            member_count(u, "output_tokens", out, NULL) < 0)
                return -EBADMSG;
        *in = add_sat(add_sat(i, cc), cr);
        return 0;
}

static int response_usage_object(ApiEndpoint ep, json_object *o, ApiUsage *u) {
        json_object *usage = member(o, "usage"), *d;
        const char *s;

        switch (ep) {
        case API_EP_OPENAI_CHAT:
        case API_EP_OPENAI_COMPLETIONS:
                u->length_stop = openai_choices_length(o);
                if (usage) {
                        if (!json_object_is_type(usage, json_type_object) ||
                            member_count(usage, "prompt_tokens", &u->input, NULL) < 0 ||
                            member_count(usage, "completion_tokens", &u->output, NULL) < 0)
                                return -EBADMSG;
                        return 0;
                }
                return timings_usage(o, &u->input, &u->output) ? 0 : -ENODATA;
        case API_EP_OPENAI_RESPONSES:
                d = member(o, "incomplete_details");
                u->length_stop = (s = member_string(o, "status")) && strcmp(s, "incomplete") == 0 &&
                                 (s = member_string(d, "reason")) && strcmp(s, "max_output_tokens") == 0;
                if (!usage)
                        return -ENODATA;
                if (!json_object_is_type(usage, json_type_object) ||
                    member_count(usage, "input_tokens", &u->input, NULL) < 0 ||
                    member_count(usage, "output_tokens", &u->output, NULL) < 0)
                        return -EBADMSG;
                return 0;
        case API_EP_OLLAMA_CHAT:
        case API_EP_OLLAMA_GENERATE:
                /* the counts come with done: true, each omitted when zero */
                if (!(d = member(o, "done")) || !json_object_is_type(d, json_type_boolean) ||
                    !json_object_get_boolean(d))
                        return -ENODATA;
                u->length_stop = (s = member_string(o, "done_reason")) && strcmp(s, "length") == 0;
                if (member_count(o, "prompt_eval_count", &u->input, NULL) < 0 ||
                    member_count(o, "eval_count", &u->output, NULL) < 0)
                        return -EBADMSG;
                return 0;
        case API_EP_ANTHROPIC_MESSAGES:
                u->length_stop = (s = member_string(o, "stop_reason")) && strcmp(s, "max_tokens") == 0;
                if (!usage)
                        return -ENODATA;
                if (!json_object_is_type(usage, json_type_object))
                        return -EBADMSG;
                return anthropic_usage(usage, &u->input, &u->output);
        default:
                return -ENODATA;
        }
}

int api_response_usage(ApiEndpoint ep, const char *body, size_t len, ApiUsage *ret) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        const char *why;
        ApiUsage u = {};
        int r;

        *ret = (ApiUsage){};
        if ((r = json_parse_object(body ? body : "", body ? len : 0, &o, &why)) < 0)
                return r;
        if ((r = response_usage_object(ep, o, &u)) < 0)
                return r;
        u.final = true;
        *ret = u;
        return 0;
}

/* ---- streams ---- */

/* The text of one content part (content_index >= 0) or one function call's arguments (-1). */
typedef struct ResponsesText {
        int64_t output_index, content_index;
        ApiBuffer text;
} ResponsesText;

struct ApiStream {
        ApiEndpoint ep;
        bool strip_usage;
        bool last_dropped; /* the last event was not forwarded */
        SseParser *parser;
        ApiBuffer *out; /* during a feed */
        bool done;      /* the terminal event was seen */
        bool cut;       /* api_stream_cut() ended it */

        uint64_t counted; /* output counted from deltas */
        bool has_usage;   /* the upstream's own count */
        uint64_t usage_in, usage_out;
        bool has_timings; /* llama.cpp's */
        uint64_t timings_in, timings_out;
        uint64_t stream_in; /* input as the stream said it before its count (Anthropic's message_start) */
        bool length_stop;

        /* what the cut needs to speak like the upstream */
        char *id, *model;
        char created_at[64]; /* Ollama: the last object's, RFC 3339 */
        int64_t created;
        unsigned n_choices; /* OpenAI: highest choice index + 1 */
        bool finished;      /* OpenAI: a finish_reason was seen */
        bool usage_sent;    /* OpenAI: a usage chunk went to the client */
        bool started;       /* Anthropic: message_start was seen */
        bool block_open;    /* Anthropic: a content block is open */
        int64_t block_index;
        bool stop_seen;                          /* Anthropic: message_delta with a stop_reason was seen */
        json_object *response;                   /* Responses: the response object of response.created */
        int64_t sequence_number;                 /* Responses: the last seen, -1 before one */
        json_object *items;                      /* Responses: output items by output_index, as added */
        ResponsesText texts[API_MAX_TEXT_PARTS]; /* Responses: text of parts not yet done */
        size_t n_texts, text_bytes;
        uint64_t input_estimate; /* the input a cut reports when the stream gave none */
        json_tokener *tok;       /* for the events, reused while they parse */
};

static uint64_t delta_tokens(uint64_t bytes) {
        /* one token per delta, as OpenAI, Ollama and llama.cpp stream them; more when a delta carries
         * more text than one token (Anthropic's do), at about 4 bytes a token */
        if (bytes == 0)
                return 0;
        return bytes / 4 > 1 ? bytes / 4 : 1;
}

static void stream_count(ApiStream *s, uint64_t bytes) {
        s->counted = add_sat(s->counted, delta_tokens(bytes));
}

static int remember(char **p, const char *v) {
        if (!v || *p)
                return 0;
        return (*p = strdup(v)) ? 0 : -ENOMEM;
}

ApiStream *api_stream_new(ApiEndpoint ep, bool strip_usage) {
        ApiStream *s;

        if (ep <= API_EP_NONE || ep >= _API_EP_MAX)
                return NULL;
        s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        s->ep = ep;
        s->sequence_number = -1;
        s->strip_usage = strip_usage && ep_openai_shaped(ep);
        s->parser = sse_parser_new(ep_ollama_native(ep) ? SSE_FORMAT_NDJSON : SSE_FORMAT_SSE,
                                   API_STREAM_MAX_EVENT);
        if (!s->parser)
                return api_stream_free(s);
        return s;
}

ApiStream *api_stream_free(ApiStream *s) {
        if (!s)
                return NULL;
        sse_parser_free(s->parser);
        free(s->id);
        free(s->model);
        json_object_put(s->response);
        json_object_put(s->items);
        json_tokener_freep(&s->tok);
        for (size_t i = 0; i < s->n_texts; i++)
                api_buffer_done(&s->texts[i].text);
        free(s);
        return NULL;
}

/* What an event handler says: forward the event, or drop it (the injected usage chunk). */
enum { EV_FORWARD, EV_DROP };

static uint64_t openai_delta_bytes(json_object *choice, bool completions) {
        json_object *delta, *calls;
        uint64_t n = 0;

        if (completions)
                return member_string_len(choice, "text");
        delta = member(choice, "delta");
        n += member_string_len(delta, "content");
        n += member_string_len(delta, "reasoning_content"); /* llama.cpp, vLLM, DeepSeek */
        n += member_string_len(delta, "reasoning");         /* Ollama's /v1, OpenRouter */
        n += member_string_len(delta, "refusal");
        calls = member(delta, "tool_calls");
        for (size_t i = 0,
                    k = json_object_is_type(calls, json_type_array) ? json_object_array_length(calls) : 0;
             i < k; i++) {
                json_object *f = member(json_object_array_get_idx(calls, i), "function");

                n += member_string_len(f, "name") + member_string_len(f, "arguments");
        }
        return n;
}

static int openai_event(ApiStream *s, json_object *o) {
        bool completions = s->ep == API_EP_OPENAI_COMPLETIONS;
        json_object *choices, *usage;
        int64_t created;
        const char *fr;
        int r;

        if (member(o, "error"))
                return EV_FORWARD; /* an error chunk: the client's library raises it */
        choices = member(o, "choices");
        if (choices && !json_object_is_type(choices, json_type_array))
                return -EBADMSG;
        if ((r = remember(&s->id, member_string(o, "id"))) < 0 ||
            (r = remember(&s->model, member_string(o, "model"))) < 0)
                return r;
        if (member_int(o, "created", &created) == INT_OK)
                s->created = created;
        for (size_t i = 0, n = choices ? json_object_array_length(choices) : 0; i < n; i++) {
                json_object *c = json_object_array_get_idx(choices, i);
                int64_t index = 0;

                if (!json_object_is_type(c, json_type_object))
                        return -EBADMSG;
                if (member_int(c, "index", &index) == INT_OK && index >= 0 && index < API_MAX_CHOICES &&
                    (unsigned)index + 1 > s->n_choices)
                        s->n_choices = (unsigned)index + 1;
                stream_count(s, openai_delta_bytes(c, completions));
                if ((fr = member_string(c, "finish_reason"))) {
                        s->finished = true;
                        if (strcmp(fr, "length") == 0)
                                s->length_stop = true;
                }
        }
        if (timings_usage(o, &s->timings_in, &s->timings_out))
                s->has_timings = true;
        usage = member(o, "usage");
        if (!usage)
                return EV_FORWARD;
        if (!json_object_is_type(usage, json_type_object) ||
            member_count(usage, "prompt_tokens", &s->usage_in, NULL) < 0 ||
            member_count(usage, "completion_tokens", &s->usage_out, NULL) < 0)
                return -EBADMSG;
        s->has_usage = true;
        /* the include_usage chunk has no choices; vLLM's continuous usage rides on ordinary chunks */
        if (s->strip_usage && (!choices || json_object_array_length(choices) == 0))
                return EV_DROP;
        s->usage_sent = true;
        return EV_FORWARD;
}

static int anthropic_event(ApiStream *s, json_object *o, const char *type) {
        json_object *m, *d, *u;
        const char *sr;
        int64_t index = 0;
        uint64_t in, cc, cr, out;
        bool has_in, has_cc, has_cr, has_out;
        int r;

        if (strcmp(type, "message_start") == 0) {
                m = member(o, "message");
                if (!json_object_is_type(m, json_type_object))
                        return -EBADMSG;
                if ((r = remember(&s->id, member_string(m, "id"))) < 0 ||
                    (r = remember(&s->model, member_string(m, "model"))) < 0)
                        return r;
                u = member(m, "usage");
                /* output_tokens here is a placeholder: the deltas count until message_delta */
                if (u && (!json_object_is_type(u, json_type_object) ||
                          anthropic_usage(u, &s->stream_in, &out) < 0))
                        return -EBADMSG;
                s->started = true;
        } else if (strcmp(type, "content_block_start") == 0) {
                if (member_int(o, "index", &index) != INT_OK)
                        return -EBADMSG;
                s->block_open = true;
                s->block_index = index;
                m = member(o, "content_block");
                stream_count(s, member_string_len(m, "text") + member_string_len(m, "thinking"));
        } else if (strcmp(type, "content_block_delta") == 0) {
                d = member(o, "delta");
                if (!json_object_is_type(d, json_type_object))
                        return -EBADMSG;
                stream_count(s, member_string_len(d, "text") + member_string_len(d, "thinking") +
                                        member_string_len(d, "partial_json"));
        } else if (strcmp(type, "content_block_stop") == 0) {
                s->block_open = false;
        } else if (strcmp(type, "message_delta") == 0) {
                d = member(o, "delta");
                if ((sr = member_string(d, "stop_reason"))) {
                        s->stop_seen = true;
                        if (strcmp(sr, "max_tokens") == 0)
                                s->length_stop = true;
                }
                u = member(o, "usage");
                if (!u)
                        return EV_FORWARD;
                if (!json_object_is_type(u, json_type_object) ||
                    member_count(u, "output_tokens", &out, &has_out) < 0 ||
                    member_count(u, "input_tokens", &in, &has_in) < 0 ||
                    member_count(u, "cache_creation_input_tokens", &cc, &has_cc) < 0 ||
                    member_count(u, "cache_read_input_tokens", &cr, &has_cr) < 0)
                        return -EBADMSG;
                if (!has_out)
                        return -EBADMSG; /* output_tokens is required in MessageDeltaUsage */
                /* cumulative: the last value is the count; input fields, when given, are too */
                if (has_in || has_cc || has_cr)
                        s->stream_in = add_sat(add_sat(in, cc), cr);
                s->usage_in = s->stream_in;
                s->usage_out = out;
                s->has_usage = true;
        } else if (strcmp(type, "message_stop") == 0 || strcmp(type, "error") == 0)
                s->done = true;
        /* ping and event types added later are forwarded as they are */
        return EV_FORWARD;
}

static ResponsesText *responses_text(ApiStream *s, int64_t oi, int64_t ci, bool create) {
        for (size_t i = 0; i < s->n_texts; i++)
                if (s->texts[i].output_index == oi && s->texts[i].content_index == ci)
                        return &s->texts[i];
        if (!create || s->n_texts >= API_MAX_TEXT_PARTS)
                return NULL;
        s->texts[s->n_texts] = (ResponsesText){.output_index = oi, .content_index = ci};
        return &s->texts[s->n_texts++];
}

/* The part (or all of the item's, ci -1 with all) is done: its text is in the event's part or item. */
static void responses_text_drop(ApiStream *s, int64_t oi, int64_t ci, bool all) {
        for (size_t i = 0; i < s->n_texts;)
                if (s->texts[i].output_index == oi && (all || s->texts[i].content_index == ci)) {
                        s->text_bytes -= s->texts[i].text.len;
                        api_buffer_done(&s->texts[i].text);
                        s->texts[i] = s->texts[--s->n_texts];
                } else
                        i++;
}

/* Text for a part: appended (a delta) or set (a .done with the whole text). Past the bound the rest
 * is left out of the cut's response, which the client has in its deltas anyway. */
static int responses_text_put(ApiStream *s, int64_t oi, int64_t ci, json_object *text, bool append) {
        ResponsesText *t;
        size_t n;

        if (!json_object_is_type(text, json_type_string))
                return 0;
        n = (size_t)json_object_get_string_len(text);
        if (!(t = responses_text(s, oi, ci, true)))
                return 0;
        if (!append) {
                s->text_bytes -= t->text.len;
                t->text.len = 0;
        }
        if (s->text_bytes + n > API_STREAM_MAX_EVENT)
                return 0;
        s->text_bytes += n;
        return api_buffer_append(&t->text, json_object_get_string(text), n);
}

static json_object *responses_item(ApiStream *s, int64_t oi) {
        return s->items && oi < (int64_t)json_object_array_length(s->items)
                       ? json_object_array_get_idx(s->items, (size_t)oi)
                       : NULL;
}

/* Follows the output as openai-python's and openai-node's accumulators do, for the cut. */
static int responses_accumulate(ApiStream *s, json_object *o, const char *type) {
        int64_t oi = -1, ci = -1;
        json_object *v, *item, *content;

        if (member_int(o, "output_index", &oi) != INT_OK || oi < 0 || oi >= API_MAX_OUTPUT_ITEMS)
                return 0;
        (void)member_int(o, "content_index", &ci);
        if (strcmp(type, "response.output_item.added") == 0 ||
            strcmp(type, "response.output_item.done") == 0) {
                if (!json_object_is_type(v = member(o, "item"), json_type_object))
                        return 0;
                if (!s->items && !(s->items = json_object_new_array()))
                        return -ENOMEM;
                if (json_object_array_put_idx(s->items, (size_t)oi, json_object_get(v)) < 0) {
                        json_object_put(v);
                        return -ENOMEM;
                }
                if (type[21] == 'd') /* .done: the item has its text */
                        responses_text_drop(s, oi, -1, true);
                return 0;
        }
        item = responses_item(s, oi);
        if (strcmp(type, "response.content_part.added") == 0 ||
            strcmp(type, "response.content_part.done") == 0) {
                content = member(item, "content");
                if (!json_object_is_type(v = member(o, "part"), json_type_object) ||
                    !json_object_is_type(content, json_type_array) || ci < 0 || ci >= API_MAX_OUTPUT_ITEMS)
                        return 0;
                if (json_object_array_put_idx(content, (size_t)ci, json_object_get(v)) < 0) {
                        json_object_put(v);
                        return -ENOMEM;
                }
                if (type[22] == 'd')
                        responses_text_drop(s, oi, ci, false);
                return 0;
        }
        if (strcmp(type, "response.output_text.delta") == 0 || strcmp(type, "response.refusal.delta") == 0)
                return ci >= 0 ? responses_text_put(s, oi, ci, member(o, "delta"), true) : 0;
        if (strcmp(type, "response.output_text.done") == 0)
                return ci >= 0 ? responses_text_put(s, oi, ci, member(o, "text"), false) : 0;
        if (strcmp(type, "response.refusal.done") == 0)
                return ci >= 0 ? responses_text_put(s, oi, ci, member(o, "refusal"), false) : 0;
        if (strcmp(type, "response.function_call_arguments.delta") == 0)
                return responses_text_put(s, oi, -1, member(o, "delta"), true);
        if (strcmp(type, "response.function_call_arguments.done") == 0)
                return responses_text_put(s, oi, -1, member(o, "arguments"), false);
        return 0;
}

static int responses_event(ApiStream *s, json_object *o, const char *type) {
        size_t n = strlen(type);
        int64_t seq;
        json_object *resp;
        ApiUsage u = {};
        int r;

        if (member_int(o, "sequence_number", &seq) == INT_OK && seq >= 0 && seq < INT64_MAX)
                s->sequence_number = seq;
        if ((r = responses_accumulate(s, o, type)) < 0)
                return r;
        if (n > 6 && strcmp(type + n - 6, ".delta") == 0 && !strstr(type, "audio")) {
                stream_count(s, member_string_len(o, "delta"));
                return EV_FORWARD;
        }
        resp = member(o, "response");
        if (strcmp(type, "response.created") == 0 || strcmp(type, "response.in_progress") == 0) {
                if (json_object_is_type(resp, json_type_object) && !s->response) {
                        s->response = json_object_get(resp);
                        if ((r = remember(&s->model, member_string(resp, "model"))) < 0)
                                return r;
                }
                return EV_FORWARD;
        }
        if (strcmp(type, "response.completed") == 0 || strcmp(type, "response.incomplete") == 0 ||
            strcmp(type, "response.failed") == 0) {
                if (!json_object_is_type(resp, json_type_object))
                        return -EBADMSG;
                r = response_usage_object(API_EP_OPENAI_RESPONSES, resp, &u);
                if (r == -EBADMSG)
                        return r;
                if (r == 0) {
                        s->usage_in = u.input;
                        s->usage_out = u.output;
                        s->has_usage = true;
                }
                s->length_stop = s->length_stop || u.length_stop;
                s->done = true;
        }
        return EV_FORWARD;
}

static int ollama_event(ApiStream *s, json_object *o) {
        json_object *done, *m, *calls;
        const char *dr, *ca;
        uint64_t n;
        int r;

        if (member(o, "error")) {
                s->done = true; /* Ollama ends the stream after an error object */
                return EV_FORWARD;
        }
        if ((r = remember(&s->model, member_string(o, "model"))) < 0)
                return r;
        if ((ca = member_string(o, "created_at")) && strlen(ca) < sizeof(s->created_at))
                strcpy(s->created_at, ca);
        if (s->ep == API_EP_OLLAMA_CHAT) {
                m = member(o, "message");
                n = member_string_len(m, "content") + member_string_len(m, "thinking");
                calls = member(m, "tool_calls");
                if (calls)
                        n += strlen(json_object_to_json_string_ext(calls, JSON_C_TO_STRING_PLAIN));
        } else
                n = member_string_len(o, "response") + member_string_len(o, "thinking");
        stream_count(s, n);
        done = member(o, "done");
        if (done && !json_object_is_type(done, json_type_boolean))
                return -EBADMSG;
        if (!done || !json_object_get_boolean(done))
                return EV_FORWARD;
        if (member_count(o, "prompt_eval_count", &s->usage_in, NULL) < 0 ||
            member_count(o, "eval_count", &s->usage_out, NULL) < 0)
                return -EBADMSG;
        s->has_usage = true;
        s->length_stop = (dr = member_string(o, "done_reason")) && strcmp(dr, "length") == 0;
        s->done = true;
        return EV_FORWARD;
}

static int stream_event(ApiStream *s, const SseEvent *ev) {
        _cleanup_(json_object_putp) json_object *o = NULL;
        const char *why, *type;
        bool sse_openai = s->ep == API_EP_OPENAI_CHAT || s->ep == API_EP_OPENAI_COMPLETIONS ||
                          s->ep == API_EP_OPENAI_RESPONSES;
        int r;

        if (!ev->has_data)
                return EV_FORWARD; /* comments, keep-alives, blank lines, an LF after a CR */
        if (sse_openai && ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
                /* also after a Responses stream's terminal event, as some servers send it */
                s->done = true;
                return EV_FORWARD;
        }
        if (s->done)
                return -EBADMSG; /* nothing comes after the terminal event */
        if ((r = json_parse_object_with(&s->tok, ev->data, ev->data_len, &o, &why)) < 0)
                return r;
        switch (s->ep) {
        case API_EP_OPENAI_CHAT:
        case API_EP_OPENAI_COMPLETIONS:
                return openai_event(s, o);
        case API_EP_OLLAMA_CHAT:
        case API_EP_OLLAMA_GENERATE:
                return ollama_event(s, o);
        case API_EP_OPENAI_RESPONSES:
        case API_EP_ANTHROPIC_MESSAGES:
                if (!(type = member_string(o, "type")))
                        return -EBADMSG;
                return s->ep == API_EP_ANTHROPIC_MESSAGES ? anthropic_event(s, o, type)
                                                          : responses_event(s, o, type);
        default:
                return -EBADMSG;
        }
}

static int stream_event_cb(const SseEvent *ev, void *userdata) {
        ApiStream *s = userdata;
        int r;

        /* the rest of the previous event's terminator: its fate */
        if (ev->crlf_tail)
                return s->last_dropped ? 0 : api_buffer_append(s->out, ev->raw, ev->raw_len);
        r = stream_event(s, ev);
        if (r < 0)
                return r;
        s->last_dropped = r != EV_FORWARD;
        if (r == EV_FORWARD)
                return api_buffer_append(s->out, ev->raw, ev->raw_len);
        return 0;
}

int api_stream_feed(ApiStream *s, const char *data, size_t len, ApiBuffer *out) {
        int r;

        if (s->cut)
                return 0;
        s->out = out;
        r = sse_parser_feed(s->parser, data, len, stream_event_cb, s);
        s->out = NULL;
        return r;
}

void api_stream_usage(const ApiStream *s, ApiUsage *ret) {
        *ret = (ApiUsage){.length_stop = s->length_stop};
        if (s->has_usage) {
                ret->input = s->usage_in;
                ret->output = s->usage_out;
                ret->final = true;
        } else if (s->has_timings) {
                ret->input = s->timings_in;
                ret->output = s->timings_out;
                ret->final = true;
        } else {
                ret->input = s->stream_in;
                ret->output = s->counted;
        }
}

bool api_stream_done(const ApiStream *s) {
        return s->done;
}

void api_stream_set_input_estimate(ApiStream *s, uint64_t tokens) {
        s->input_estimate = tokens;
}

/* ---- the cut ---- */

static int sse_emit(ApiBuffer *out, const char *event, json_object *o) {
        int r;

        if (!o)
                return -ENOMEM;
        if (event && ((r = buffer_puts(out, "event: ")) < 0 || (r = buffer_puts(out, event)) < 0 ||
                      (r = buffer_puts(out, "\n")) < 0))
                return r;
        if ((r = buffer_puts(out, "data: ")) < 0 || (r = json_to_buffer(o, out)) < 0)
                return r;
        return buffer_puts(out, "\n\n");
}

/* An OpenAI chunk's head: id, object, created, model. */
static json_object *openai_chunk_new(const ApiStream *s) {
        json_object *o = json_object_new_object();

        const char *id = s->id                                ? s->id
                         : s->ep == API_EP_OPENAI_COMPLETIONS ? "cmpl-tokenbudget"
                                                              : "chatcmpl-tokenbudget";

        if (!o || json_set_string(o, "id", id) < 0 ||
            json_set_string(o, "object",
                            s->ep == API_EP_OPENAI_COMPLETIONS ? "text_completion"
                                                               : "chat.completion.chunk") < 0 ||
            json_set_int(o, "created", s->created > 0 ? (uint64_t)s->created : 0) < 0 ||
            json_set_string(o, "model", s->model ? s->model : "") < 0)
                return json_object_put(o), NULL;
        return o;
}

/* The last delta: empty, or, when no choice came yet, the first one with its role (openai-node's
 * ChatCompletionStream refuses a choice without one: "missing role for choice 0"). */
static json_object *openai_cut_delta(const ApiStream *s) {
        json_object *d = json_object_new_object();

        if (d && s->n_choices == 0 &&
            (json_set_string(d, "role", "assistant") < 0 || json_set_string(d, "content", "") < 0))
                return json_object_put(d), NULL;
        return d;
}

static int openai_cut(ApiStream *s, const ApiUsage *u, ApiBuffer *out) {
        _cleanup_(json_object_putp) json_object *fin = NULL, *use = NULL;
        json_object *choices, *c, *usage;
        int r;

        if (!s->finished) {
                if (!(fin = openai_chunk_new(s)) || json_set(fin, "choices", json_object_new_array()) < 0)
                        return -ENOMEM;
                choices = member(fin, "choices");
                for (unsigned i = 0; i < (s->n_choices ? s->n_choices : 1); i++) {
                        if (!(c = json_object_new_object()) || json_object_array_add(choices, c) < 0)
                                return json_object_put(c), -ENOMEM;
                        if (json_set_int(c, "index", i) < 0 ||
                            (s->ep == API_EP_OPENAI_COMPLETIONS
                                     ? json_set_string(c, "text", "")
                                     : json_set(c, "delta", openai_cut_delta(s))) < 0 ||
                            json_object_object_add(c, "logprobs", NULL) < 0 ||
                            json_set_string(c, "finish_reason", "length") < 0)
                                return -ENOMEM;
                }
                if ((r = sse_emit(out, NULL, fin)) < 0)
                        return r;
        }
        if (!s->strip_usage && !s->usage_sent) {
                if (!(use = openai_chunk_new(s)) || json_set(use, "choices", json_object_new_array()) < 0 ||
                    json_set(use, "usage", json_object_new_object()) < 0)
                        return -ENOMEM;
                usage = member(use, "usage");
                if (json_set_int(usage, "prompt_tokens", u->input) < 0 ||
                    json_set_int(usage, "completion_tokens", u->output) < 0 ||
                    json_set_int(usage, "total_tokens", add_sat(u->input, u->output)) < 0)
                        return -ENOMEM;
                if ((r = sse_emit(out, NULL, use)) < 0)
                        return r;
        }
        return buffer_puts(out, "data: [DONE]\n\n");
}

static int anthropic_cut(ApiStream *s, const ApiUsage *u, ApiBuffer *out) {
        _cleanup_(json_object_putp) json_object *start = NULL, *stop = NULL, *delta = NULL, *end = NULL;
        json_object *m, *x;
        int r;

        if (!s->started) {
                /* the client has seen nothing: a message for the delta to end */
                if (!(start = json_object_new_object()) ||
                    json_set_string(start, "type", "message_start") < 0 ||
                    json_set(start, "message", json_object_new_object()) < 0)
                        return -ENOMEM;
                m = member(start, "message");
                if (json_set_string(m, "id", s->id ? s->id : "msg_tokenbudget") < 0 ||
                    json_set_string(m, "type", "message") < 0 ||
                    json_set_string(m, "role", "assistant") < 0 ||
                    json_set_string(m, "model", s->model ? s->model : "") < 0 ||
                    json_set(m, "content", json_object_new_array()) < 0 ||
                    json_object_object_add(m, "stop_reason", NULL) < 0 ||
                    json_object_object_add(m, "stop_sequence", NULL) < 0 ||
                    json_set(m, "usage", json_object_new_object()) < 0)
                        return -ENOMEM;
                x = member(m, "usage");
                if (json_set_int(x, "input_tokens", u->input) < 0 || json_set_int(x, "output_tokens", 0) < 0)
                        return -ENOMEM;
                if ((r = sse_emit(out, "message_start", start)) < 0)
                        return r;
        }
        if (s->block_open) {
                if (!(stop = json_object_new_object()) ||
                    json_set_string(stop, "type", "content_block_stop") < 0 ||
                    json_set_int(stop, "index", s->block_index > 0 ? (uint64_t)s->block_index : 0) < 0)
                        return -ENOMEM;
                if ((r = sse_emit(out, "content_block_stop", stop)) < 0)
                        return r;
        }
        if (!s->stop_seen) {
                if (!(delta = json_object_new_object()) ||
                    json_set_string(delta, "type", "message_delta") < 0 ||
                    json_set(delta, "delta", json_object_new_object()) < 0 ||
                    json_set(delta, "usage", json_object_new_object()) < 0)
                        return -ENOMEM;
                x = member(delta, "delta");
                if (json_set_string(x, "stop_reason", "max_tokens") < 0 ||
                    json_object_object_add(x, "stop_sequence", NULL) < 0)
                        return -ENOMEM;
                if (json_set_int(member(delta, "usage"), "output_tokens", u->output) < 0)
                        return -ENOMEM;
                if ((r = sse_emit(out, "message_delta", delta)) < 0)
                        return r;
        }
        if (!(end = json_object_new_object()) || json_set_string(end, "type", "message_stop") < 0)
                return -ENOMEM;
        return sse_emit(out, "message_stop", end);
}

static int ollama_cut(ApiStream *s, const ApiUsage *u, ApiBuffer *out) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        json_object *m;
        int r;

        /* the order of ollama's ChatResponse/GenerateResponse; zero counts omitted as Go omits them */
        if (!o || json_set_string(o, "model", s->model ? s->model : "") < 0 ||
            json_set_string(o, "created_at", s->created_at[0] ? s->created_at : "1970-01-01T00:00:00Z") < 0)
                return -ENOMEM;
        if (s->ep == API_EP_OLLAMA_CHAT) {
                if (json_set(o, "message", json_object_new_object()) < 0)
                        return -ENOMEM;
                m = member(o, "message");
                if (json_set_string(m, "role", "assistant") < 0 || json_set_string(m, "content", "") < 0)
                        return -ENOMEM;
        } else if (json_set_string(o, "response", "") < 0)
                return -ENOMEM;
        if (json_set_string(o, "done_reason", "length") < 0 ||
            json_set(o, "done", json_object_new_boolean(1)) < 0 ||
            (u->input && json_set_int(o, "prompt_eval_count", u->input) < 0) ||
            (u->output && json_set_int(o, "eval_count", u->output) < 0))
                return -ENOMEM;
        if ((r = json_to_buffer(o, out)) < 0)
                return r;
        return buffer_puts(out, "\n");
}

/* The output so far into resp: the items as added, the text of each part from its deltas, the items
 * still in progress marked incomplete (as an incomplete response from OpenAI has them). */
static int responses_cut_output(ApiStream *s, json_object *resp) {
        json_object *items = NULL, *item, *part;
        const char *st;
        int r;

        if (!s->items)
                return 0;
        if (json_object_deep_copy(s->items, &items, NULL) < 0)
                return -ENOMEM;
        if ((r = json_set(resp, "output", items)) < 0)
                return r;
        for (size_t i = 0; i < s->n_texts; i++) {
                const ResponsesText *t = &s->texts[i];
                json_object *text;

                if (t->output_index >= (int64_t)json_object_array_length(items) ||
                    !(item = json_object_array_get_idx(items, (size_t)t->output_index)))
                        continue;
                if (t->content_index < 0)
                        part = item; /* a function call's arguments */
                else if (!(part = member(item, "content")) || !json_object_is_type(part, json_type_array) ||
                         t->content_index >= (int64_t)json_object_array_length(part) ||
                         !json_object_is_type(
                                 part = json_object_array_get_idx(part, (size_t)t->content_index),
                                 json_type_object))
                        continue;
                text = json_object_new_string_len(t->text.data ? t->text.data : "", (int)t->text.len);
                st = t->content_index < 0                                               ? "arguments"
                     : (st = member_string(part, "type")) && strcmp(st, "refusal") == 0 ? "refusal"
                                                                                        : "text";
                if ((r = json_set(part, st, text)) < 0)
                        return r;
        }
        for (size_t i = json_object_array_length(items); i > 0; i--) {
                item = json_object_array_get_idx(items, i - 1);
                if (!item)
                        json_object_array_del_idx(items, i - 1, 1); /* a gap the upstream left */
                else if ((st = member_string(item, "status")) && strcmp(st, "in_progress") == 0 &&
                         (r = json_set_string(item, "status", "incomplete")) < 0)
                        return r;
        }
        return 0;
}

static int responses_cut(ApiStream *s, const ApiUsage *u, ApiBuffer *out) {
        _cleanup_(json_object_putp) json_object *ev = json_object_new_object(), *resp = NULL;
        json_object *x, *usage;
        int r;

        if (s->response) {
                if (json_object_deep_copy(s->response, &resp, NULL) < 0)
                        return -ENOMEM;
        } else {
                /* the client has seen no response: response.created first, which the accumulators of
                 * openai-python and openai-node want before anything else */
                _cleanup_(json_object_putp) json_object *created = json_object_new_object();

                if (!(resp = json_object_new_object()) ||
                    json_set_string(resp, "id", "resp_tokenbudget") < 0 ||
                    json_set_string(resp, "object", "response") < 0 ||
                    json_set_int(resp, "created_at", 0) < 0 ||
                    json_set_string(resp, "status", "in_progress") < 0 ||
                    json_set_string(resp, "model", s->model ? s->model : "") < 0 ||
                    json_set(resp, "output", json_object_new_array()) < 0 || !created ||
                    json_set_string(created, "type", "response.created") < 0 ||
                    json_set_int(created, "sequence_number", (uint64_t)(++s->sequence_number)) < 0 ||
                    json_set(created, "response", json_object_get(resp)) < 0)
                        return -ENOMEM;
                if ((r = sse_emit(out, "response.created", created)) < 0)
                        return r;
        }
        if ((r = responses_cut_output(s, resp)) < 0)
                return r;
        if (json_set_string(resp, "status", "incomplete") < 0 ||
            json_set(resp, "incomplete_details", json_object_new_object()) < 0 ||
            json_set_string(member(resp, "incomplete_details"), "reason", "max_output_tokens") < 0 ||
            json_set(resp, "usage", json_object_new_object()) < 0)
                return -ENOMEM;
        usage = member(resp, "usage");
        if (json_set_int(usage, "input_tokens", u->input) < 0 ||
            json_set(usage, "input_tokens_details", json_object_new_object()) < 0 ||
            json_set_int(member(usage, "input_tokens_details"), "cached_tokens", 0) < 0 ||
            json_set_int(usage, "output_tokens", u->output) < 0 ||
            json_set(usage, "output_tokens_details", json_object_new_object()) < 0 ||
            json_set_int(member(usage, "output_tokens_details"), "reasoning_tokens", 0) < 0 ||
            json_set_int(usage, "total_tokens", add_sat(u->input, u->output)) < 0)
                return -ENOMEM;
        if (!ev || json_set_string(ev, "type", "response.incomplete") < 0 ||
            json_set_int(ev, "sequence_number", (uint64_t)(s->sequence_number + 1)) < 0)
                return -ENOMEM;
        x = TAKE_PTR(resp);
        if (json_set(ev, "response", x) < 0)
                return -ENOMEM;
        return sse_emit(out, "response.incomplete", ev);
}

int api_stream_cut(ApiStream *s, ApiBuffer *out) {
        ApiUsage u;
        int r;

        if (s->done || s->cut) {
                s->cut = true;
                return 0;
        }
        api_stream_usage(s, &u);
        if (!u.final && u.input == 0)
                u.input = s->input_estimate;
        switch (s->ep) {
        case API_EP_OPENAI_CHAT:
        case API_EP_OPENAI_COMPLETIONS:
                r = openai_cut(s, &u, out);
                break;
        case API_EP_OPENAI_RESPONSES:
                r = responses_cut(s, &u, out);
                break;
        case API_EP_OLLAMA_CHAT:
        case API_EP_OLLAMA_GENERATE:
                r = ollama_cut(s, &u, out);
                break;
        case API_EP_ANTHROPIC_MESSAGES:
                r = anthropic_cut(s, &u, out);
                break;
        default:
                r = -EINVAL;
        }
        if (r < 0)
                return r;
        s->cut = true;
        return 0;
}

/* ---- error bodies ---- */

static const char *default_error_type(bool anthropic, int status) {
        switch (status) {
        case 400:
                return "invalid_request_error";
        case 413:
                return anthropic ? "request_too_large" : "invalid_request_error";
        case 429:
                return "rate_limit_error";
        case 503:
                return anthropic ? "overloaded_error" : "server_error";
        default:
                return status >= 500 ? (anthropic ? "api_error" : "server_error") : "invalid_request_error";
        }
}

char *api_error_body(ApiEndpoint ep, int status, const char *type, const char *message) {
        _cleanup_(json_object_putp) json_object *o = json_object_new_object();
        json_object *e;
        bool anthropic = ep == API_EP_ANTHROPIC_MESSAGES;
        const char *s;

        if (!o)
                return NULL;
        if (!message)
                message = "";
        if (!type)
                type = default_error_type(anthropic, status);
        if (ep_ollama_native(ep)) {
                if (json_set_string(o, "error", message) < 0)
                        return NULL;
        } else if (anthropic) {
                if (json_set_string(o, "type", "error") < 0 ||
                    json_set(o, "error", json_object_new_object()) < 0)
                        return NULL;
                e = member(o, "error");
                if (json_set_string(e, "type", type) < 0 || json_set_string(e, "message", message) < 0)
                        return NULL;
        } else {
                if (json_set(o, "error", json_object_new_object()) < 0)
                        return NULL;
                e = member(o, "error");
                if (json_set_string(e, "message", message) < 0 || json_set_string(e, "type", type) < 0 ||
                    json_object_object_add(e, "param", NULL) < 0)
                        return NULL;
                /* OpenAI's 429 code; otherwise null, as most of its errors have */
                if (status == 429 ? json_set_string(e, "code", "rate_limit_exceeded") < 0
                                  : json_object_object_add(e, "code", NULL) < 0)
                        return NULL;
        }
        s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        return s ? strdup(s) : NULL;
}
