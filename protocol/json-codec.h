/* SPDX-License-Identifier: MIT */
/*
 * JSON text to json-c objects and back, for the Varlink codec (varlink.c),
 * with every allocation checked: a failure gives -ENOMEM and leaves nothing
 * half-built, where json-c's own tokener (0.16) crashes or silently drops
 * data and its serializer writes text with pieces missing. Otherwise the
 * results are, byte for byte, those of the json-c configuration the codec
 * used before: json_tokener_new_ex(max_depth) with JSON_TOKENER_STRICT |
 * JSON_TOKENER_VALIDATE_UTF8 behind a lexical check, and
 * json_object_to_json_string_ext(JSON_C_TO_STRING_PLAIN |
 * JSON_C_TO_STRING_NOSLASHESCAPE). tests/unit/test-json.c has the rows,
 * tests/property/property-codec.c and tests/fuzz/fuzz-codec.c compare both
 * directions with json-c itself. Internal to protocol/ and its tests;
 * callers use varlink.h. Pure: no I/O, no clock, no global state.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "varlink.h"

struct json_object;

/*
 * The lexical check run before parsing (the gaps json-c's strict mode left
 * open, kept as they were): raw control characters in strings, invalid
 * UTF-8 (RFC 3629: no overlong forms, no surrogates), bytes outside strings
 * that cannot start or continue a JSON token (single quotes, NaN, Infinity,
 * comments, \v, \f, a BOM), data after the closing bracket of a top-level
 * object or array, and a key containing \u0000. Returns NULL or the reason;
 * *ret_n_members (may be NULL) is the number of object members in the text
 * (its colons outside strings).
 */
const char *json_codec_scan(const char *text, size_t len, size_t *ret_n_members);

/*
 * Parses text[0..len) (not NUL-terminated; all of it must be one JSON
 * value, with JSON whitespace around it) into *ret, which is NULL for a
 * top-level null. The reasons, with -EBADMSG: "message too long" (over
 * INT_MAX bytes), those of json_codec_scan(), then "invalid JSON" or "JSON
 * nested too deeply" for what json-c's strict tokener refuses, the first
 * error in the text as json-c finds it: a value inside a container at
 * depth max_depth - 1, counting the top level as 0, is too deep, whatever
 * it is, unless the text ends there; a \u escape cut short by a non-ASCII
 * byte, or a backslash before one, is "invalid UTF-8". -ENOMEM (reason
 * NULL) when an allocation fails, with nothing allocated left. An object
 * key given twice keeps its
 * first place and its last value, as in json-c, and sets
 * *ret_duplicate_key. The values are json-c's: strings with \u escapes
 * decoded as json-c 0.16 does (a lone surrogate becomes U+FFFD, and so does
 * an escaped pair whose code point has D800-DFFF in its low 16 bits, a
 * json-c bug kept for now, see json-codec.c); integers as int64 (saturating
 * at INT64_MIN) or, above INT64_MAX, as uint64 (saturating at UINT64_MAX);
 * fractions and exponents as doubles that keep their text
 * (json_object_new_double_s()), so they are written back as they came.
 */
int json_codec_parse(const char *text, size_t len, unsigned max_depth, struct json_object **ret,
                     bool *ret_duplicate_key, const char **ret_reason);

/*
 * Appends the JSON text of o (NULL is null) to b, the bytes
 * json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
 * JSON_C_TO_STRING_NOSLASHESCAPE) gives: members in json-c's order, strings
 * escaped as json-c does, doubles as "%.17g" (plus ".0" when that looks
 * like an integer, NaN and Infinity spelled out) or as the text they were
 * parsed from. Returns 0, or -ENOMEM with b as it was. Objects carrying a
 * serializer of their own (json_object_set_serializer()) are written as if
 * they had none, except doubles with a text (json_object_new_double_s());
 * json_c_set_serialization_double_format() is not honoured. Nothing in
 * tokenbudget uses either.
 */
int json_codec_write(VarlinkBuffer *b, struct json_object *o);
