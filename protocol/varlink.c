/* SPDX-License-Identifier: MIT */
/*
 * The Varlink codec: finds NUL-terminated frames in an input buffer, parses
 * call and reply messages strictly (json-codec.c: a lexical check and a
 * parser of our own building json-c objects, accepting what json-c's strict
 * tokener accepted), validates parameters against a field table and formats
 * replies, errors and calls into a growable output buffer (json-codec.c's
 * writer, the bytes json-c wrote). Out of memory is -ENOMEM, never a crash
 * or a partial message. It is pure and reentrant: no I/O, no clock, no
 * global state. It does not know the methods of any interface; dispatch is
 * the server's job. The flat fast path is in varlink-flat.c; the name
 * grammar and the field lookup both paths use are declared in
 * varlink-internal.h.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "json-codec.h"
#include "varlink-internal.h"
#include "varlink-names.h"
#include "varlink.h"

int varlink_frame_next(const char *buf, size_t len, size_t max_message_bytes, size_t *ret_frame_len) {
        const char *nul;
        size_t scan_bytes;

        assert(buf || len == 0);
        assert(ret_frame_len);

        /* The NUL of a maximal frame sits at index max_message_bytes, so look
         * at one byte more than the limit; never rescan past it. */
        scan_bytes = len > max_message_bytes ? max_message_bytes + 1 : len;
        nul = scan_bytes > 0 ? memchr(buf, '\0', scan_bytes) : NULL;
        if (nul) {
                *ret_frame_len = (size_t)(nul - buf);
                return 1;
        }
        if (len > max_message_bytes)
                return -EMSGSIZE;
        return 0;
}

/* Parses msg as one JSON object (json-codec.c), refusing duplicate keys
 * only after the rest: the reasons come in the order json-c and the
 * lexical check used to give them. */
static int json_parse_object(const char *msg, size_t len, struct json_object **ret,
                             const char **ret_reason) {
        struct json_object *o = NULL;
        bool duplicate_key = false;
        int r;

        assert(msg || len == 0);

        r = json_codec_parse(msg, len, VARLINK_MAX_DEPTH, &o, &duplicate_key, ret_reason);
        if (r < 0)
                return r;
        if (!json_object_is_type(o, json_type_object)) {
                json_object_put(o);
                *ret_reason = "message is not a JSON object";
                return -EBADMSG;
        }
        if (duplicate_key) {
                json_object_put(o);
                *ret_reason = "duplicate key";
                return -EBADMSG;
        }
        *ret = o;
        return 0;
}

/*
 * Names, per the grammar of UAPI.20 "Varlink IPC", section Interface
 * Definition (https://uapi-group.org/specifications/specs/varlink/; it
 * differs from varlink.org's in allowing upper case in interface names, as
 * systemd's varlink_idl_interface_name_is_valid() does):
 *   interface_name  [A-Za-z]([-]*[A-Za-z0-9])*(\.[A-Za-z0-9]([-]*[A-Za-z0-9])*)+
 *   name            [A-Z][A-Za-z0-9]*      (the method or error after the last dot)
 * So an interface has at least two dot-separated labels, none empty; each
 * label is ASCII letters, digits and dashes, neither starting nor ending with
 * a dash; the first label starts with a letter, the others with a letter or
 * a digit. Runs of dashes inside a label are allowed (the grammar's [-]*;
 * systemd allows single dashes only, and a one-label interface name). There is
 * no length limit but the message size limit. Names are case-sensitive:
 * io.TokenBudget.agent is another interface than io.tokenbudget.agent.
 */
static bool char_is_alnum(char c) {
        return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static bool interface_label_valid(const char *s, size_t n, bool first) {
        if (n == 0 || s[0] == '-' || s[n - 1] == '-')
                return false;
        if (first && !((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z')))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!char_is_alnum(s[i]) && s[i] != '-')
                        return false;
        return true;
}

static bool interface_name_valid(const char *s, size_t n) {
        size_t labels = 0;

        for (size_t start = 0;;) {
                const char *dot = memchr(s + start, '.', n - start);
                size_t end = dot ? (size_t)(dot - s) : n;

                if (!interface_label_valid(s + start, end - start, labels == 0))
                        return false;
                labels++;
                if (!dot)
                        return labels >= 2;
                start = end + 1;
        }
}

static bool member_name_valid(const char *s, size_t n) {
        if (n == 0 || !(s[0] >= 'A' && s[0] <= 'Z'))
                return false;
        for (size_t i = 1; i < n; i++)
                if (!char_is_alnum(s[i]))
                        return false;
        return true;
}

bool varlink_qualified_name_split(const char *s, size_t n, size_t *ret_interface_len) {
        const char *dot = NULL;

        for (size_t i = n; i > 0; i--)
                if (s[i - 1] == '.') {
                        dot = s + i - 1;
                        break;
                }
        if (!dot)
                return false;
        if (!interface_name_valid(s, (size_t)(dot - s)) ||
            !member_name_valid(dot + 1, n - (size_t)(dot - s) - 1))
                return false;
        *ret_interface_len = (size_t)(dot - s);
        return true;
}

int varlink_method_split(const char *method, size_t *ret_interface_len) {
        size_t interface_len;

        if (!method || !varlink_qualified_name_split(method, strlen(method), &interface_len))
                return -EINVAL;
        if (ret_interface_len)
                *ret_interface_len = interface_len;
        return 0;
}

/* Header keys of calls and replies, applied by type into the output struct. */
typedef enum HeaderKind {
        HEADER_NAME,   /* a string without NUL, stored as const char * */
        HEADER_OBJECT, /* an object or null, stored as struct json_object * */
        HEADER_FLAG,   /* a boolean, stored as bool */
} HeaderKind;

typedef struct HeaderKey {
        const char *name;
        HeaderKind kind;
        size_t offset;
        const char *reason;  /* when the value has the wrong type */
        const char *invalid; /* when a name contains a NUL */
} HeaderKey;

static const HeaderKey call_keys[] = {
        {"method", HEADER_NAME, offsetof(VarlinkCall, method), "method is not a string",
         "invalid method name"},
        {"parameters", HEADER_OBJECT, offsetof(VarlinkCall, parameters), "parameters is not an object"},
        {"oneway", HEADER_FLAG, offsetof(VarlinkCall, oneway), "oneway is not a boolean"},
        {"more", HEADER_FLAG, offsetof(VarlinkCall, more), "more is not a boolean"},
        {"upgrade", HEADER_FLAG, offsetof(VarlinkCall, upgrade), "upgrade is not a boolean"},
};

static const HeaderKey reply_keys[] = {
        {"error", HEADER_NAME, offsetof(VarlinkReply, error), "error is not a string", "invalid error name"},
        {"parameters", HEADER_OBJECT, offsetof(VarlinkReply, parameters), "parameters is not an object"},
        {"continues", HEADER_FLAG, offsetof(VarlinkReply, continues), "continues is not a boolean"},
};

static const char *header_apply(const HeaderKey *k, struct json_object *value, void *ret) {
        char *field = (char *)ret + k->offset;

        switch (k->kind) {
        case HEADER_NAME: {
                const char *s;

                if (!json_object_is_type(value, json_type_string))
                        return k->reason;
                s = json_object_get_string(value);
                /* A NUL inside would make the C string differ from the JSON one. */
                if (memchr(s, '\0', (size_t)json_object_get_string_len(value)))
                        return k->invalid;
                memcpy(field, &s, sizeof(s));
                return NULL;
        }
        case HEADER_OBJECT:
                /* json-c represents null as a NULL object. */
                if (value && !json_object_is_type(value, json_type_object))
                        return k->reason;
                memcpy(field, &value, sizeof(value));
                return NULL;
        case HEADER_FLAG: {
                bool b;

                if (!json_object_is_type(value, json_type_boolean))
                        return k->reason;
                b = json_object_get_boolean(value);
                memcpy(field, &b, sizeof(b));
                return NULL;
        }
        }
        assert(!"unknown header kind");
        return "unknown key";
}

static const char *header_parse(struct json_object *root, const HeaderKey *keys, size_t n_keys, void *ret) {
        json_object_object_foreach(root, key, value) {
                const HeaderKey *k = NULL;
                const char *reason;

                /* Vendor-prefixed keys ("org.example": ...) are extensions we ignore. */
                if (strchr(key, '.'))
                        continue;
                for (size_t i = 0; i < n_keys && !k; i++)
                        if (strcmp(key, keys[i].name) == 0)
                                k = &keys[i];
                if (!k)
                        return "unknown key";
                reason = header_apply(k, value, ret);
                if (reason)
                        return reason;
        }
        return NULL;
}

/* Absent and null parameters become an empty object owned by root. */
static int parameters_ensure(struct json_object *root, struct json_object **parameters) {
        struct json_object *o;

        if (*parameters)
                return 0;
        o = json_object_new_object();
        if (!o)
                return -ENOMEM;
        /* A constant key: json-c copies nothing, so a failed insert loses
         * nothing (it leaks its copy of the key when growing the table
         * fails, json-codec.c). A "parameters": null there gets its value
         * replaced in place. */
        if (json_object_object_add_ex(root, "parameters", o, JSON_C_OBJECT_ADD_CONSTANT_KEY) < 0) {
                json_object_put(o);
                return -ENOMEM;
        }
        *parameters = o;
        return 0;
}

static const char *call_check(const VarlinkCall *call) {
        size_t interface_len;

        if (!call->method)
                return "missing method";
        if (!varlink_qualified_name_split(call->method, strlen(call->method), &interface_len))
                return "invalid method name";
        if (call->oneway + call->more + call->upgrade > 1)
                return "more than one of oneway, more, upgrade";
        return NULL;
}

int varlink_call_parse(const char *msg, size_t len, VarlinkCall *ret, const char **ret_reason) {
        const char *reason = NULL;
        VarlinkCall call = {};
        int r;

        assert(ret);

        r = json_parse_object(msg, len, &call.root, &reason);
        if (r >= 0) {
                reason = header_parse(call.root, call_keys, sizeof(call_keys) / sizeof(call_keys[0]), &call);
                if (!reason)
                        reason = call_check(&call);
                r = reason ? -EBADMSG : parameters_ensure(call.root, &call.parameters);
        }
        if (ret_reason)
                *ret_reason = r == -EBADMSG ? reason : NULL;
        if (r < 0) {
                varlink_call_done(&call);
                *ret = (VarlinkCall){};
                return r;
        }
        *ret = call;
        return 0;
}

void varlink_call_done(VarlinkCall *call) {
        if (!call)
                return;
        json_object_put(call->root);
        *call = (VarlinkCall){};
}

static const char *reply_check(const VarlinkReply *reply) {
        size_t interface_len;

        if (reply->error &&
            !varlink_qualified_name_split(reply->error, strlen(reply->error), &interface_len))
                return "invalid error name";
        /* An error ends the call (varlink.org/Method-Call), so it cannot continue. */
        if (reply->error && reply->continues)
                return "error reply with continues";
        return NULL;
}

int varlink_reply_parse(const char *msg, size_t len, VarlinkReply *ret, const char **ret_reason) {
        const char *reason = NULL;
        VarlinkReply reply = {};
        int r;

        assert(ret);

        r = json_parse_object(msg, len, &reply.root, &reason);
        if (r >= 0) {
                reason = header_parse(reply.root, reply_keys, sizeof(reply_keys) / sizeof(reply_keys[0]),
                                      &reply);
                if (!reason)
                        reason = reply_check(&reply);
                r = reason ? -EBADMSG : parameters_ensure(reply.root, &reply.parameters);
        }
        if (ret_reason)
                *ret_reason = r == -EBADMSG ? reason : NULL;
        if (r < 0) {
                varlink_reply_done(&reply);
                *ret = (VarlinkReply){};
                return r;
        }
        *ret = reply;
        return 0;
}

void varlink_reply_done(VarlinkReply *reply) {
        if (!reply)
                return;
        json_object_put(reply->root);
        *reply = (VarlinkReply){};
}

/* Growth starts at 4 KiB: most replies fit, and the buffer is reused per
 * connection. */
#define BUFFER_MIN_BYTES 4096

int varlink_buffer_reserve(VarlinkBuffer *b, size_t extra) {
        size_t need, cap;
        char *data;

        assert(b);

        /* No object can be larger than PTRDIFF_MAX; do not ask malloc. */
        if (extra > (size_t)PTRDIFF_MAX - b->len)
                return -ENOMEM;
        need = b->len + extra;
        if (need <= b->cap)
                return 0;

        cap = b->cap > BUFFER_MIN_BYTES ? b->cap : BUFFER_MIN_BYTES;
        while (cap < need)
                cap = cap > (size_t)PTRDIFF_MAX / 2 ? need : cap * 2;
        data = realloc(b->data, cap);
        if (!data)
                return -ENOMEM;
        b->data = data;
        b->cap = cap;
        return 0;
}

void varlink_buffer_consume(VarlinkBuffer *b, size_t n) {
        assert(b);
        assert(n <= b->len);

        if (n < b->len)
                memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
}

void varlink_buffer_clear(VarlinkBuffer *b) {
        if (!b)
                return;
        free(b->data);
        *b = (VarlinkBuffer){};
}

/* Appends after a reserve that guaranteed the room. */
static void buffer_put(VarlinkBuffer *b, const char *s, size_t n) {
        assert(b->cap - b->len >= n);
        memcpy(b->data + b->len, s, n);
        b->len += n;
}

#define BUFFER_PUT_LITERAL(b, s) buffer_put((b), (s), sizeof(s) - 1)

static int buffer_append(VarlinkBuffer *b, const char *s, size_t n) {
        if (varlink_buffer_reserve(b, n) < 0)
                return -ENOMEM;
        buffer_put(b, s, n);
        return 0;
}

#define BUFFER_APPEND_LITERAL(b, s) buffer_append((b), (s), sizeof(s) - 1)

/* JSON string escaping for names we write ourselves: quote, backslash and
 * control characters; UTF-8 passes through. */
static size_t json_quoted_len(const char *s) {
        size_t n = 2;

        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;

                n += c == '"' || c == '\\' ? 2 : c < 0x20 ? 6 : 1;
        }
        return n;
}

static int buffer_append_quoted(VarlinkBuffer *b, const char *s) {
        static const char hex[] = "0123456789abcdef";

        if (varlink_buffer_reserve(b, json_quoted_len(s)) < 0)
                return -ENOMEM;
        BUFFER_PUT_LITERAL(b, "\"");
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;

                if (c == '"' || c == '\\') {
                        char esc[2] = {'\\', (char)c};
                        buffer_put(b, esc, sizeof(esc));
                } else if (c < 0x20) {
                        char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 0xF]};
                        buffer_put(b, esc, sizeof(esc));
                } else
                        buffer_put(b, (const char *)&c, 1);
        }
        BUFFER_PUT_LITERAL(b, "\"");
        return 0;
}

/* The parameters object as json-c would write it (json-codec.c), or {}
 * for NULL. */
static int buffer_append_parameters(VarlinkBuffer *b, struct json_object *parameters) {
        if (!parameters)
                return BUFFER_APPEND_LITERAL(b, "{}");
        assert(json_object_is_type(parameters, json_type_object));
        return json_codec_write(b, parameters);
}

/* A message is written piece by piece; when a piece does not fit, the
 * buffer goes back to where the message started. */
static int buffer_abandon(VarlinkBuffer *b, size_t start) {
        b->len = start;
        return -ENOMEM;
}

int varlink_format_reply(VarlinkBuffer *b, struct json_object *parameters, bool continues) {
        size_t start;

        assert(b);

        start = b->len;
        if (BUFFER_APPEND_LITERAL(b, "{\"parameters\":") < 0 ||
            buffer_append_parameters(b, parameters) < 0 ||
            (continues && BUFFER_APPEND_LITERAL(b, ",\"continues\":true") < 0) ||
            buffer_append(b, "}", 2) < 0) /* with the frame's NUL */
                return buffer_abandon(b, start);
        return 0;
}

int varlink_format_error(VarlinkBuffer *b, const char *error, struct json_object *parameters) {
        size_t start;

        assert(b);
        assert(error);

        start = b->len;
        if (BUFFER_APPEND_LITERAL(b, "{\"error\":") < 0 || buffer_append_quoted(b, error) < 0 ||
            BUFFER_APPEND_LITERAL(b, ",\"parameters\":") < 0 ||
            buffer_append_parameters(b, parameters) < 0 || buffer_append(b, "}", 2) < 0)
                return buffer_abandon(b, start);
        return 0;
}

int varlink_format_invalid_parameter(VarlinkBuffer *b, const char *parameter) {
        size_t start;

        assert(b);
        assert(parameter);

        /* The name may come from the peer (an unknown key): it is escaped. */
        start = b->len;
        if (BUFFER_APPEND_LITERAL(b, "{\"error\":\"" VL_ERROR_SERVICE_INVALID_PARAMETER
                                     "\",\"parameters\":{\"parameter\":") < 0 ||
            buffer_append_quoted(b, parameter) < 0 || buffer_append(b, "}}", 3) < 0)
                return buffer_abandon(b, start);
        return 0;
}

int varlink_format_call(VarlinkBuffer *b, const char *method, struct json_object *parameters, bool oneway,
                        bool more) {
        size_t start;

        assert(b);
        assert(method);
        assert(!(oneway && more));

        start = b->len;
        if (BUFFER_APPEND_LITERAL(b, "{\"method\":") < 0 || buffer_append_quoted(b, method) < 0 ||
            BUFFER_APPEND_LITERAL(b, ",\"parameters\":") < 0 ||
            buffer_append_parameters(b, parameters) < 0 ||
            (oneway && BUFFER_APPEND_LITERAL(b, ",\"oneway\":true") < 0) ||
            (more && BUFFER_APPEND_LITERAL(b, ",\"more\":true") < 0) || buffer_append(b, "}", 2) < 0)
                return buffer_abandon(b, start);
        return 0;
}

/* Parameter validation. */

static bool param_int_valid(struct json_object *v, uint64_t max, int64_t *ret) {
        uint64_t limit = max == 0 || max > INT64_MAX ? INT64_MAX : max;
        int64_t i;

        /* Doubles (5.0, 1e3) are json_type_double and fail here. */
        if (!json_object_is_type(v, json_type_int))
                return false;
        i = json_object_get_int64(v);
        if (i < 0)
                return false;
        /* json-c 0.16 keeps values above INT64_MAX as uint64 and clamps
         * get_int64 to INT64_MAX: the two getters disagree for those. */
        if (json_object_get_uint64(v) != (uint64_t)i || (uint64_t)i > limit)
                return false;
        *ret = i;
        return true;
}

static bool param_string_valid(struct json_object *v, uint64_t max, const char **ret) {
        const char *s;
        size_t n;

        if (!json_object_is_type(v, json_type_string))
                return false;
        s = json_object_get_string(v);
        n = (size_t)json_object_get_string_len(v);
        if (memchr(s, '\0', n) || (max != 0 && n > max))
                return false;
        *ret = s;
        return true;
}

static bool param_valid(const VarlinkField *f, struct json_object *v, VarlinkValue *ret) {
        switch (f->type) {
        case VARLINK_FIELD_INT:
                return param_int_valid(v, f->max, &ret->i);
        case VARLINK_FIELD_STRING:
                return param_string_valid(v, f->max, &ret->s);
        case VARLINK_FIELD_BOOL:
                if (!json_object_is_type(v, json_type_boolean))
                        return false;
                ret->b = json_object_get_boolean(v);
                return true;
        case VARLINK_FIELD_OBJECT:
                if (!json_object_is_type(v, json_type_object))
                        return false;
                ret->o = v;
                return true;
        }
        assert(!"unknown field type");
        return false;
}

bool varlink_field_known(const VarlinkField *fields, size_t n_fields, const char *name) {
        for (size_t i = 0; i < n_fields; i++)
                if (strcmp(fields[i].name, name) == 0)
                        return true;
        return false;
}

int varlink_params_parse(struct json_object *parameters, const VarlinkField *fields, size_t n_fields,
                         VarlinkValue *ret_values, const char **ret_bad_parameter) {
        assert(fields || n_fields == 0);
        assert(ret_values || n_fields == 0);
        assert(!parameters || json_object_is_type(parameters, json_type_object));

        if (ret_bad_parameter)
                *ret_bad_parameter = NULL;

        if (parameters) {
                json_object_object_foreach(parameters, key, value) {
                        (void)value;
                        if (!varlink_field_known(fields, n_fields, key)) {
                                if (ret_bad_parameter)
                                        *ret_bad_parameter = key;
                                return -EINVAL;
                        }
                }
        }

        for (size_t i = 0; i < n_fields; i++) {
                struct json_object *v = NULL;
                bool ok;

                ret_values[i] = (VarlinkValue){};
                if (parameters)
                        json_object_object_get_ex(parameters, fields[i].name, &v);
                /* json-c represents null as NULL: null counts as absent. */
                ok = v ? param_valid(&fields[i], v, &ret_values[i]) : fields[i].optional;
                if (!ok) {
                        if (ret_bad_parameter)
                                *ret_bad_parameter = fields[i].name;
                        return -EINVAL;
                }
                ret_values[i].present = v != NULL;
        }
        return 0;
}
