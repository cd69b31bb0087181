/* SPDX-License-Identifier: MIT */
/* Parsers for /proc/PID/stat and /proc/PID/cgroup text (see procfs.h). */
#include <errno.h>
#include <stdbool.h>
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

typedef struct CgroupLine {
        const char *path;
        size_t len;
} CgroupLine;

/* Whether the comma-separated list of n bytes at s has the word "name=systemd". */
static bool has_systemd_controller(const char *s, size_t n) {
        static const char word[] = "name=systemd";
        const size_t m = sizeof(word) - 1;

        for (size_t i = 0; i <= n;) {
                const char *comma = memchr(s + i, ',', n - i);
                size_t len = comma ? (size_t)(comma - (s + i)) : n - i;

                if (len == m && memcmp(s + i, word, m) == 0)
                        return true;
                if (!comma)
                        break;
                i += len + 1;
        }
        return false;
}

/* One line, without its newline: "ID:CONTROLLERS:PATH". Sets *unified or
 * *legacy (the first of each) when it is that line. */
static void cgroup_line(const char *s, size_t n, CgroupLine *unified, CgroupLine *legacy) {
        static const char deleted[] = " (deleted)";
        const char *c1, *c2, *path;
        size_t len;

        c1 = memchr(s, ':', n);
        if (!c1)
                return;
        c2 = memchr(c1 + 1, ':', n - (size_t)(c1 + 1 - s));
        if (!c2)
                return;
        path = c2 + 1;
        len = n - (size_t)(path - s);
        if (memchr(path, 0, len))
                return;
        /* cg_pid_get_path(): the cgroup of a zombie whose cgroup is gone. */
        if (len >= sizeof(deleted) - 1 &&
            memcmp(path + len - (sizeof(deleted) - 1), deleted, sizeof(deleted) - 1) == 0)
                len -= sizeof(deleted) - 1;
        if (len > 0 && path[0] != '/')
                return;
        if (c1 - s == 1 && s[0] == '0') {
                if (!unified->path)
                        *unified = (CgroupLine){path, len};
        } else if (has_systemd_controller(c1 + 1, (size_t)(c2 - c1 - 1))) {
                if (!legacy->path)
                        *legacy = (CgroupLine){path, len};
        }
}

static bool cgroup_line_is_root(const CgroupLine *l) {
        return l->len == 0 || (l->len == 1 && l->path[0] == '/');
}

int procfs_parse_cgroup(const char *text, size_t size, char **ret_path) {
        CgroupLine unified = {}, legacy = {}, *pick;
        const char *p = text, *end = text + size;
        char *path;

        while (p < end) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);

                cgroup_line(p, n, &unified, &legacy);
                p += n + 1;
        }
        if (unified.path && !(cgroup_line_is_root(&unified) && legacy.path))
                pick = &unified;
        else if (legacy.path)
                pick = &legacy;
        else
                return -EINVAL;
        /* libsystemd's internal "" for the root is "/" in sd_pid_get_cgroup(). */
        path = pick->len == 0 ? strdup("/") : strndup(pick->path, pick->len);
        if (!path)
                return -ENOMEM;
        *ret_path = path;
        return 0;
}

/* The value of "KEY:\t..." at the start of a line, up to the line's end, or NULL. */
static const char *status_field(const char *text, size_t len, const char *key, size_t *ret_len) {
        size_t k = strlen(key);

        for (size_t i = 0; i < len;) {
                const char *line = text + i, *nl = memchr(line, '\n', len - i);
                size_t n = nl ? (size_t)(nl - line) : len - i;

                if (n > k && memcmp(line, key, k) == 0 && line[k] == ':') {
                        *ret_len = n - k - 1;
                        return line + k + 1;
                }
                i += n + 1;
        }
        return NULL;
}

/* The next decimal number of at most 32 bits in [*p, end), after blanks. */
static int status_number(const char **p, const char *end, uint32_t *ret) {
        uint64_t v = 0;
        const char *q;

        while (*p < end && (**p == ' ' || **p == '\t'))
                (*p)++;
        for (q = *p; q < end && *q >= '0' && *q <= '9'; q++) {
                v = v * 10 + (uint64_t)(*q - '0');
                if (v > UINT32_MAX)
                        return -EINVAL;
        }
        if (q == *p)
                return -EINVAL;
        *p = q;
        *ret = (uint32_t)v;
        return 0;
}

int procfs_parse_status(const char *text, size_t len, uint32_t *ret_uid, uint32_t *ret_gid,
                        uint32_t **ret_groups, size_t *ret_n) {
        const char *v, *end;
        uint32_t *groups = NULL;
        size_t n = 0, cap = 0, vlen;

        *ret_groups = NULL;
        *ret_n = 0;
        v = status_field(text, len, "Uid", &vlen);
        if (!v || status_number(&v, v + vlen, ret_uid) < 0)
                return -EINVAL;
        v = status_field(text, len, "Gid", &vlen);
        if (!v || status_number(&v, v + vlen, ret_gid) < 0)
                return -EINVAL;
        v = status_field(text, len, "Groups", &vlen);
        if (!v)
                return -EINVAL;
        for (end = v + vlen;;) {
                uint32_t g;
                uint32_t *bigger;

                while (v < end && (*v == ' ' || *v == '\t'))
                        v++;
                if (v == end)
                        break;
                if (n >= PROCFS_GROUPS_MAX || status_number(&v, end, &g) < 0) {
                        free(groups);
                        return -EINVAL;
                }
                if (n == cap) {
                        cap = cap ? 2 * cap : 16;
                        bigger = realloc(groups, cap * sizeof(*groups));
                        if (!bigger) {
                                free(groups);
                                return -ENOMEM;
                        }
                        groups = bigger;
                }
                groups[n++] = g;
        }
        *ret_groups = groups;
        *ret_n = n;
        return 0;
}
