/* SPDX-License-Identifier: MIT */
/*
 * What the strict codec (varlink.c) and the flat fast path (varlink-flat.c)
 * share, so that both apply one name grammar and one field lookup: a flat
 * parse must never accept what the strict one refuses. Internal to
 * protocol/; callers use varlink.h.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "varlink.h"

/* JSON whitespace (RFC 8259): nothing else, not \v or \f. */
static inline bool json_is_space(unsigned char c) {
        return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Whether s[0..n) is a fully qualified Varlink member name (interface, a
 * dot, method or error: the grammar is at its definition in varlink.c); on
 * true, *ret_interface_len is the length up to the last dot. s need not be
 * NUL-terminated. */
bool varlink_qualified_name_split(const char *s, size_t n, size_t *ret_interface_len);

/* Whether name is in the table. */
bool varlink_field_known(const VarlinkField *fields, size_t n_fields, const char *name);
