/* SPDX-License-Identifier: MIT */
/*
 * UTF-8, one copy for the codec, the journal, the client and budgetctl:
 * strict validation (RFC 3629: no overlong forms, no surrogates, nothing
 * above U+10FFFF), a cut that never splits a character, and a display width.
 * Pure.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Length (2-4) of the strict multi-byte sequence at p[0..n), or 0 when it is
 * invalid or cut short. p[0] must be >= 0x80. */
size_t utf8_sequence_len(const unsigned char *p, size_t n);
/* Whether s[0..n) is strict UTF-8 (NUL bytes count as valid ASCII). */
bool utf8_valid(const char *s, size_t n);
/* The largest n' <= n such that s[0..n') does not end inside a character
 * whose lead byte says it needs more bytes than are left. */
size_t utf8_cut(const char *s, size_t n);
/* Code points in the NUL-terminated s: a display width good enough for names
 * and numbers (no wide or combining characters there). */
size_t utf8_width(const char *s);
