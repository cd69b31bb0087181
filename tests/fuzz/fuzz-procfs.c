/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer entry point for the /proc/PID/stat parser: hands the raw input to
 * procfs_parse_stat() as the text the shell read (libFuzzer's buffer is
 * exactly the input's size, so ASan sees any read past it). Besides "no
 * crash, no undefined behaviour" it compares every answer with a reference
 * written here from the format's description alone (proc(5)): the comm is
 * what lies between the first '(' and the last ')', cut to 15 bytes, control
 * bytes as '?'; after it come ") " and fields 3 to 21 separated by single
 * spaces, then field 22, the start time: digits (1 to 23, leading zeros
 * included) whose value fits a uint64_t, followed by a space or a newline. The two must agree on success or
 * failure and on both values; the comm is always NUL-terminated and printable.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "procfs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_check(bool ok, const char *what, const uint8_t *data, size_t size) {
        if (ok)
                return;
        fprintf(stderr, "fuzz-procfs: %s (input %zu bytes: \"%.*s\")\n", what, size,
                (int)(size < 200 ? size : 200), (const char *)data);
        abort();
}

/* The reference: returns 0 or -EINVAL, like procfs_parse_stat(). */
static int reference_parse(const uint8_t *t, size_t n, char comm[PROCFS_COMM_MAX], uint64_t *start) {
        size_t open = SIZE_MAX, close = SIZE_MAX, i, len, digits = 0;
        uint64_t v = 0;

        for (i = 0; i < n && open == SIZE_MAX; i++)
                if (t[i] == '(')
                        open = i;
        if (open == SIZE_MAX)
                return -EINVAL;
        for (i = open + 1; i < n; i++)
                if (t[i] == ')')
                        close = i;
        if (close == SIZE_MAX)
                return -EINVAL;
        len = close - open - 1;
        if (len > PROCFS_COMM_MAX - 1)
                len = PROCFS_COMM_MAX - 1;
        for (i = 0; i < len; i++) {
                uint8_t c = t[open + 1 + i];
                comm[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
        }
        comm[len] = 0;

        /* ") " then fields 3..21, each ending at the next space. */
        i = close + 1;
        for (int field = 3; field <= 21; field++) {
                if (i >= n || t[i] != ' ')
                        return -EINVAL;
                for (i++; i < n && t[i] != ' '; i++)
                        ;
        }
        if (i >= n || t[i] != ' ')
                return -EINVAL;
        for (i++; i < n && t[i] >= '0' && t[i] <= '9'; i++, digits++) {
                uint64_t d = (uint64_t)(t[i] - '0');

                if (v > (UINT64_MAX - d) / 10)
                        return -EINVAL; /* does not fit */
                v = v * 10 + d;
        }
        /* More than 23 digits are refused whatever their value (leading
         * zeros; the kernel writes none). */
        if (digits == 0 || digits > 23 || i >= n || (t[i] != ' ' && t[i] != '\n'))
                return -EINVAL;
        *start = v;
        return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        char comm[PROCFS_COMM_MAX], ref_comm[PROCFS_COMM_MAX];
        uint64_t start = 0, ref_start = 0;
        int r, ref;

        r = procfs_parse_stat((const char *)data, size, comm, &start);
        fuzz_check(r == 0 || r == -EINVAL, "returned neither 0 nor -EINVAL", data, size);
        ref = reference_parse(data, size, ref_comm, &ref_start);
        fuzz_check(r == ref,
                   r == 0 ? "accepted what the reference refuses" : "refused what the reference accepts",
                   data, size);
        if (r < 0)
                return 0;
        fuzz_check(memchr(comm, 0, PROCFS_COMM_MAX) != NULL, "comm not NUL-terminated", data, size);
        for (size_t i = 0; comm[i]; i++)
                fuzz_check((unsigned char)comm[i] >= 0x20 && comm[i] != 0x7f, "control byte in comm", data,
                           size);
        fuzz_check(strcmp(comm, ref_comm) == 0, "comm differs from the reference", data, size);
        fuzz_check(start == ref_start, "start time differs from the reference", data, size);
        return 0;
}
