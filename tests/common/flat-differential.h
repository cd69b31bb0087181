/* SPDX-License-Identifier: MIT */
/*
 * The Varlink codec's two call parsers side by side, for the unit rows
 * (tests/unit/test-codec.c) and the long generated differential run
 * (tests/property/property-codec.c): flat_differential() runs the strict
 * varlink_call_parse() and the flat varlink_call_parse_flat() over one
 * message and fails the current Check test if they disagree. When the flat
 * path takes a message, the strict one must too, with the same method,
 * flags and members in the same order, and varlink_params_parse() and
 * varlink_flat_params_parse() must agree on every field table below; when it
 * refuses one, it must not have changed it. It never writes past the
 * message.
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
