/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "procfs.h"

int procfs_parse_stat(const char *text, size_t len, char ret_comm[PROCFS_COMM_MAX],
                      uint64_t *ret_start_time) {
        const char *open, *close_paren, *p, *end = text + len;
        size_t n;

        /* "PID (COMM) STATE PPID ..." where COMM may itself contain ") ", so
         * the command ends at the last ')'. */
        open = memchr(text, '(', len);
        if (!open)
                return -EINVAL;
        close_paren = NULL;
        for (p = end; p > open; p--)
                if (p[-1] == ')') {
                        close_paren = p - 1;
                        break;
                }
        if (!close_paren)
                return -EINVAL;
        n = (size_t)(close_paren - open - 1);
        if (n >= PROCFS_COMM_MAX)
                n = PROCFS_COMM_MAX - 1;
        memcpy(ret_comm, open + 1, n);
        ret_comm[n] = 0;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)ret_comm[i] < 0x20 || ret_comm[i] == 0x7f)
                        ret_comm[i] = '?';

        /* Field 3 (state) follows ") "; the start time is field 22: skip
         * 19 more separators. A file cut short anywhere is invalid. */
        p = close_paren + 1;
        for (int field = 3; field <= 22; field++) {
                if (p >= end || *p != ' ')
                        return -EINVAL;
                p++;
                if (field == 22)
                        break;
                p = memchr(p, ' ', (size_t)(end - p));
                if (!p)
                        return -EINVAL;
        }
        char buf[24];
        size_t m = 0;
        for (; p < end && *p >= '0' && *p <= '9'; p++) {
                if (m == sizeof(buf) - 1)
                        return -EINVAL; /* more digits than any uint64_t */
                buf[m++] = *p;
        }
        /* The kernel always writes a separator after the start time (field
         * 23 follows): text ending right after its digits was cut short,
         * maybe inside them, and would give a smaller start time. */
        if (m == 0 || p >= end || (*p != ' ' && *p != '\n'))
                return -EINVAL;
        buf[m] = 0;
        errno = 0;
        *ret_start_time = strtoull(buf, NULL, 10);
        return errno == ERANGE ? -EINVAL : 0;
}
