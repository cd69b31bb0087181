/* SPDX-License-Identifier: MIT */
/*
 * Allocation identifiers on the wire (the "allocation" string of
 * io.tokenbudget.agent and the "id" of io.tokenbudget.admin's Allocation):
 * a 64-bit number written as exactly 16 lower-case hexadecimal digits,
 * zero-padded, e.g. "00000000000000a1". Pure: formats and parses, knows
 * nothing about which numbers the daemon hands out.
 */
#pragma once

#include <stdint.h>

/* 16 digits and the NUL. */
#define ALLOCATION_ID_STRING_MAX 17

/* Writes id as 16 lower-case hexadecimal digits and a NUL into buf. */
void allocation_id_format(uint64_t id, char buf[static ALLOCATION_ID_STRING_MAX]);

/*
 * Parses s, which must be exactly 16 characters from [0-9a-f] followed by its
 * NUL: the only spelling allocation_id_format() produces, so an identifier
 * has one spelling. Everything else is -EINVAL: NULL, empty, shorter or
 * longer, upper case, a "0x" prefix, signs, spaces, any other byte. Returns 0
 * and sets *ret (when ret is not NULL). Reads at most 17 bytes of s.
 */
int allocation_id_parse(const char *s, uint64_t *ret);
