/* SPDX-License-Identifier: MIT */
/*
 * The Varlink codec's differentials, for the unit rows
 * (tests/unit/test-codec.c) and the long generated runs
 * (tests/property/property-codec.c); each fails the current Check test
 * when the two sides disagree.
 *
 * flat_differential() runs the strict varlink_call_parse() and the flat
 * varlink_call_parse_flat() over one message. When the flat path takes a
 * message, the strict one must too, with the same method, flags and
 * members in the same order, and varlink_params_parse() and
 * varlink_flat_params_parse() must agree on every field table below; when
 * it refuses one, it must not have changed it. It never writes past the
 * message.
 *
 * json_differential() runs the codec's JSON parser (protocol/json-codec.c)
 * and json-c 0.16's strict tokener behind the same lexical check, the way
 * varlink.c used it before (json-c is the oracle here and nowhere else):
 * the same result, reason and duplicate-key verdict, identical values
 * (json_identical()), and json_writer_differential() on the value.
 * json_writer_differential() compares json_codec_write() with
 * json_object_to_json_string_ext(JSON_C_TO_STRING_PLAIN |
 * JSON_C_TO_STRING_NOSLASHESCAPE) byte for byte.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "varlink.h"

/* Every kind of field, for rows that parse against a table of their own. */
#define FLAT_TABLES_ALL_N 7
extern const VarlinkField flat_tables_all[FLAT_TABLES_ALL_N];

/* Runs both paths over msg (len bytes, not NUL-terminated); returns whether
 * the flat one took it. label names the row or round in a failure. */
bool flat_differential(const char *label, const char *msg, size_t len);

struct json_object;

/* Runs both JSON parsers over text (len bytes); returns whether they
 * accepted it. */
bool json_differential(const char *label, const char *text, size_t len);

/* json_codec_write(o) against json-c's writer. */
void json_writer_differential(const char *label, struct json_object *o);

/* Same type and value, seen through every getter: int64 and uint64 alike,
 * double bit patterns and the text a parsed double keeps, string bytes,
 * members in order. json_object_equal() is looser (it ignores member order,
 * the int kind and the kept text, and NaN is never equal). */
bool json_identical(struct json_object *a, struct json_object *b);
