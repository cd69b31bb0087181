/* SPDX-License-Identifier: MIT */
/*
 * The Varlink codec: framing, parsing and formatting of Varlink messages
 * (one JSON object followed by one NUL byte, https://varlink.org/Method-Call).
 * Pure: takes bytes and json-c objects, returns values; no I/O, no clock, no
 * event loop. Used by the daemon (calls in, replies out) and by
 * libtokenbudget (calls out, replies in). It does not know any interface but
 * org.varlink.service's error names.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct json_object;

/* The standard errors of org.varlink.service, like every wire name, are in
 * the generated varlink-names.h (VL_ERROR_SERVICE_*). */

/* JSON nesting deeper than this is a protocol violation (json-c's default is 32). */
#define VARLINK_MAX_DEPTH 32

/*
 * Finds the end of the next frame in buf[0..len). Returns 1 and sets
 * *ret_frame_len to the length of the message without its NUL when a whole
 * frame is there; 0 when more bytes are needed; -EMSGSIZE when no NUL is found
 * within max_message_bytes (the message is too long: close the peer). A frame
 * of exactly max_message_bytes bytes plus its NUL is accepted.
 */
int varlink_frame_next(const char *buf, size_t len, size_t max_message_bytes, size_t *ret_frame_len);

typedef struct VarlinkCall {
        struct json_object *root;       /* owns everything below; put with varlink_call_done() */
        const char *method;             /* fully qualified, e.g. "io.tokenbudget.agent.Request" */
        struct json_object *parameters; /* always an object: absent and null become an empty object */
        bool oneway;
        bool more;
        bool upgrade;
} VarlinkCall;

/*
 * Parses one call message (msg[0..len), without the NUL). Strict JSON, UTF-8
 * validated, the whole message must be consumed (protocol/json-codec.h). No
 * state is kept between messages. Returns 0, -ENOMEM (with a NULL reason),
 * or -EBADMSG with a
 * static reason in *ret_reason for: invalid JSON, trailing bytes, a non-object,
 * a missing or non-string method, a method name that is not a valid
 * fully-qualified Varlink method name, unknown unprefixed keys (keys containing
 * a '.' are vendor headers and ignored), non-boolean flags, more than one of
 * oneway/more/upgrade, parameters that is neither an object nor null. An
 * embedded NUL byte in msg is invalid JSON.
 */
int varlink_call_parse(const char *msg, size_t len, VarlinkCall *ret, const char **ret_reason);
void varlink_call_done(VarlinkCall *call);

/* Splits "a.b.c.Method" into interface length (up to the last dot). Returns 0, or -EINVAL for a
 * name outside the UAPI.20 grammar (https://uapi-group.org/specifications/specs/varlink/; the rules
 * are at their definition in varlink.c): upper case in interface names is valid, so
 * "com.example.DoesNotExist.Foo" splits, and an unknown interface is the caller's InterfaceNotFound. */
int varlink_method_split(const char *method, size_t *ret_interface_len);

typedef struct VarlinkReply {
        struct json_object *root;       /* owns everything below; put with varlink_reply_done() */
        const char *error;              /* NULL for a successful reply */
        struct json_object *parameters; /* always an object */
        bool continues;
} VarlinkReply;

/* Parses one reply message (client side), same strictness as varlink_call_parse(). */
int varlink_reply_parse(const char *msg, size_t len, VarlinkReply *ret, const char **ret_reason);
void varlink_reply_done(VarlinkReply *reply);

/*
 * Formatting. Each appends one whole message including its trailing NUL to a
 * growable byte buffer and returns 0, or -ENOMEM with the buffer holding what
 * it held before (no partial message; its capacity may have grown).
 * parameters may be NULL (an empty object is written); its text is what
 * json_object_to_json_string_ext(JSON_C_TO_STRING_PLAIN |
 * JSON_C_TO_STRING_NOSLASHESCAPE) gives (protocol/json-codec.h).
 */
typedef struct VarlinkBuffer {
        char *data;
        size_t len;
        size_t cap;
} VarlinkBuffer;

int varlink_buffer_reserve(VarlinkBuffer *b, size_t extra);
void varlink_buffer_consume(VarlinkBuffer *b, size_t n); /* drops n bytes from the front */
void varlink_buffer_clear(VarlinkBuffer *b);             /* frees the memory */

int varlink_format_reply(VarlinkBuffer *b, struct json_object *parameters, bool continues);
int varlink_format_error(VarlinkBuffer *b, const char *error, struct json_object *parameters);
/* Convenience: {"error":"org.varlink.service.InvalidParameter","parameters":{"parameter":NAME}} */
int varlink_format_invalid_parameter(VarlinkBuffer *b, const char *parameter);
int varlink_format_call(VarlinkBuffer *b, const char *method, struct json_object *parameters, bool oneway,
                        bool more);

/*
 * Parameter validation against a table. Every key of parameters must be in the
 * table, every non-optional field present; int fields must be JSON integers
 * (not doubles) within [0, max] (max 0 means INT64_MAX); string fields must be
 * strings of at most max bytes (max 0 means no limit) and contain no NUL; bool
 * fields booleans, object fields objects (their members are the caller's to
 * check: varlink_params_parse() again with their own table); null counts as
 * absent for optional fields. Returns 0 and
 * fills the values, or -EINVAL with *ret_bad_parameter naming the field
 * (a pointer into the table or into parameters, valid while both live).
 */
typedef enum VarlinkFieldType {
        VARLINK_FIELD_INT,
        VARLINK_FIELD_STRING,
        VARLINK_FIELD_BOOL,
        VARLINK_FIELD_OBJECT, /* a JSON object, borrowed for the caller to parse (never flat) */
} VarlinkFieldType;

typedef struct VarlinkField {
        const char *name;
        VarlinkFieldType type;
        bool optional;
        uint64_t max;
} VarlinkField;

typedef struct VarlinkValue {
        bool present;
        int64_t i;             /* VARLINK_FIELD_INT */
        const char *s;         /* VARLINK_FIELD_STRING, borrowed from parameters */
        bool b;                /* VARLINK_FIELD_BOOL */
        struct json_object *o; /* VARLINK_FIELD_OBJECT, borrowed from parameters */
} VarlinkValue;

int varlink_params_parse(struct json_object *parameters, const VarlinkField *fields, size_t n_fields,
                         VarlinkValue *ret_values, const char **ret_bad_parameter);

/*
 * The flat fast path (varlink-flat.c): most calls are one object of the header keys whose
 * parameters are a handful of strings, small non-negative integers and
 * booleans. Those are parsed in place, without json-c and without
 * allocating, into a VarlinkFlatCall that borrows from (and NUL-terminates
 * inside) the message buffer.
 *
 * varlink_call_parse_flat() returns 1 and fills *ret only when msg[0..len)
 * is, byte for byte, a message varlink_call_parse() accepts with the same
 * method, flags and parameter values. It accepts: JSON whitespace around
 * tokens; one object whose keys come from method, parameters, oneway, more
 * and upgrade, each at most once; method a valid qualified name; flags
 * true or false, at most one true; parameters null or an object of at most
 * VARLINK_FLAT_PARAMS_MAX distinct names whose values are null, true,
 * false, integers 0 or [1-9][0-9]{0,17}, or strings without escapes (bytes
 * 0x20-0x7F but quote and backslash, or strict UTF-8). Everything else,
 * valid or not, returns 0 with msg untouched: the strict path decides.
 * It never fails on its own. On 1, the closing quotes of method, parameter
 * names and string values are overwritten with NUL, so all pointers are C
 * strings valid as long as msg.
 */
#define VARLINK_FLAT_PARAMS_MAX 8

typedef struct VarlinkFlatParam {
        const char *name; /* into msg, NUL-terminated */
        size_t name_len;
        VarlinkFieldType type; /* INT, STRING or BOOL; meaningless when is_null */
        bool is_null;
        int64_t i;
        bool b;
        const char *s; /* into msg, NUL-terminated */
        size_t s_len;
} VarlinkFlatParam;

typedef struct VarlinkFlatCall {
        const char *method; /* into msg, NUL-terminated */
        size_t method_len;
        bool oneway;
        bool more;
        bool upgrade;
        VarlinkFlatParam params[VARLINK_FLAT_PARAMS_MAX]; /* in message order */
        size_t n_params;
} VarlinkFlatCall;

int varlink_call_parse_flat(char *msg, size_t len, VarlinkFlatCall *ret);

/*
 * varlink_params_parse() over a flat call's parameters, with the same result,
 * the same *ret_bad_parameter (by content: a pointer into the table or into
 * msg) and the same ret_values as varlink_params_parse() gives for the
 * parameters object varlink_call_parse() builds from the same message. String
 * values borrow from msg.
 */
int varlink_flat_params_parse(const VarlinkFlatCall *call, const VarlinkField *fields, size_t n_fields,
                              VarlinkValue *ret_values, const char **ret_bad_parameter);

/*
 * The interface descriptions in protocol/ *.varlink, embedded at build time.
 * varlink_interface_description() returns the text for an interface name or
 * NULL; varlink_interfaces[] lists the names, NULL-terminated.
 */
extern const char *const varlink_interfaces[];
const char *varlink_interface_description(const char *interface);
