/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer entry point for the pure parsers of what the kernel says about a
 * process. Every input goes to all three:
 *
 * procfs_parse_stat() gets the raw input as the /proc/PID/stat text the
 * shell read (libFuzzer's buffer is exactly the input's size, so ASan sees
 * any read past it). Besides "no crash, no undefined behaviour" it compares
 * every answer with a reference written here from the format's description
 * alone (proc(5)): the comm is what lies between the first '(' and the last
 * ')', cut to 15 bytes, control bytes as '?'; after it come ") " and fields
 * 3 to 21 separated by single spaces, then field 22, the start time: digits
 * (1 to 23, leading zeros included) whose value fits a uint64_t, followed
 * by a space or a newline. The two must agree on success or failure and on
 * both values; the comm is always NUL-terminated and printable.
 *
 * procfs_parse_cgroup() gets the same bytes as /proc/PID/cgroup text, and
 * is compared with a reference of the rule procfs.h states: lines
 * "ID:CONTROLLERS:PATH", the first "0:" line and the first line naming
 * name=systemd, the first unless its path is "/" and the other exists.
 *
 * cgroup_units_parse() gets the input up to its first NUL as a cgroup path
 * (and cgroup_path_shift() that path with the bytes after the NUL as PID
 * 1's), compared with a reference that splits the path into components
 * first and applies libsystemd 252's rules to the list (cgroup.h); every
 * name it returns must also be a valid unit name.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup.h"
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

static void fuzz_stat(const uint8_t *data, size_t size) {
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
                return;
        fuzz_check(memchr(comm, 0, PROCFS_COMM_MAX) != NULL, "comm not NUL-terminated", data, size);
        for (size_t i = 0; comm[i]; i++)
                fuzz_check((unsigned char)comm[i] >= 0x20 && comm[i] != 0x7f, "control byte in comm", data,
                           size);
        fuzz_check(strcmp(comm, ref_comm) == 0, "comm differs from the reference", data, size);
        fuzz_check(start == ref_start, "start time differs from the reference", data, size);
}

/* ---- /proc/PID/cgroup ---- */

typedef struct RefLine {
        bool found;
        size_t start, len;
} RefLine;

/* The reference of procfs_parse_cgroup(): index arithmetic on the bytes. */
static int reference_cgroup(const uint8_t *t, size_t n, size_t *ret_start, size_t *ret_len) {
        static const char deleted[] = " (deleted)";
        RefLine unified = {false, 0, 0}, legacy = {false, 0, 0}, *pick;
        size_t i = 0;

        while (i < n) {
                size_t e = i, c1 = SIZE_MAX, c2 = SIZE_MAX, p, len;
                bool nul = false, systemd = false;

                while (e < n && t[e] != '\n')
                        e++;
                for (size_t k = i; k < e; k++)
                        if (t[k] == ':') {
                                if (c1 == SIZE_MAX)
                                        c1 = k;
                                else if (c2 == SIZE_MAX)
                                        c2 = k;
                        }
                if (c2 != SIZE_MAX) {
                        p = c2 + 1;
                        len = e - p;
                        for (size_t k = p; k < e; k++)
                                nul = nul || t[k] == 0;
                        if (len >= strlen(deleted) &&
                            memcmp(t + e - strlen(deleted), deleted, strlen(deleted)) == 0)
                                len -= strlen(deleted);
                        /* controllers: words between c1 and c2, split at ',' */
                        for (size_t w = c1 + 1; w <= c2;) {
                                size_t we = w;

                                while (we < c2 && t[we] != ',')
                                        we++;
                                systemd =
                                        systemd || (we - w == 12 && memcmp(t + w, "name=systemd", 12) == 0);
                                w = we + 1;
                        }
                        if (!nul && (len == 0 || t[p] == '/')) {
                                if (c1 == i + 1 && t[i] == '0') {
                                        if (!unified.found)
                                                unified = (RefLine){true, p, len};
                                } else if (systemd && !legacy.found)
                                        legacy = (RefLine){true, p, len};
                        }
                }
                i = e + 1;
        }
        if (unified.found &&
            !(legacy.found && (unified.len == 0 || (unified.len == 1 && t[unified.start] == '/'))))
                pick = &unified;
        else if (legacy.found)
                pick = &legacy;
        else
                return -EINVAL;
        *ret_start = pick->start;
        *ret_len = pick->len;
        return 0;
}

static void fuzz_cgroup_text(const uint8_t *data, size_t size) {
        size_t ref_start = 0, ref_len = 0;
        char *path = NULL;
        int r, ref;

        r = procfs_parse_cgroup((const char *)data, size, &path);
        fuzz_check(r == 0 || r == -EINVAL || r == -ENOMEM, "cgroup: returned another error", data, size);
        if (r == -ENOMEM)
                return;
        ref = reference_cgroup(data, size, &ref_start, &ref_len);
        fuzz_check(r == ref,
                   r == 0 ? "cgroup: accepted what the reference refuses"
                          : "cgroup: refused what the reference accepts",
                   data, size);
        if (r < 0) {
                fuzz_check(path == NULL, "cgroup: a path with an error", data, size);
                return;
        }
        fuzz_check(path[0] == '/', "cgroup: path not absolute", data, size);
        fuzz_check(ref_len == 0 ? strcmp(path, "/") == 0
                                : strlen(path) == ref_len && memcmp(path, data + ref_start, ref_len) == 0,
                   "cgroup: path differs from the reference", data, size);
        fuzz_check(!strchr(path, '\n'), "cgroup: newline in the path", data, size);
        free(path);
}

/* ---- cgroup paths ---- */

#define REF_COMPONENTS_MAX 4096

typedef struct RefComponent {
        const char *s;
        size_t n;
} RefComponent;

/* unit_name_is_valid() as unit-name.c describes it, written apart from cgroup.c. */
static bool reference_name(const char *s, size_t n, bool instance) {
        static const char *const types[] = {"service", "socket", "target", "device", "mount", "automount",
                                            "swap",    "timer",  "path",   "slice",  "scope"};
        static const char allowed[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\";
        size_t dot = SIZE_MAX, first_at = SIZE_MAX;
        bool type_ok = false;

        if (n < 1 || n > 255)
                return false;
        for (size_t i = 0; i < n; i++)
                if (s[i] == '.')
                        dot = i;
        if (dot == SIZE_MAX || dot == 0)
                return false;
        for (size_t k = 0; k < sizeof(types) / sizeof(types[0]); k++)
                type_ok = type_ok || (strlen(types[k]) == n - dot - 1 &&
                                      memcmp(types[k], s + dot + 1, n - dot - 1) == 0);
        if (!type_ok)
                return false;
        for (size_t i = 0; i < dot; i++) {
                if (s[i] == '@') {
                        if (first_at == SIZE_MAX)
                                first_at = i;
                } else if (s[i] == 0 || !strchr(allowed, s[i]))
                        return false;
        }
        if (first_at == SIZE_MAX)
                return true;
        return instance && first_at != 0 && first_at + 1 < dot;
}

static RefComponent ref_unescape(RefComponent c) {
        if (c.n > 0 && c.s[0] == '_')
                return (RefComponent){c.s + 1, c.n - 1};
        return c;
}

static bool ref_ends(RefComponent c, const char *suffix) {
        return c.n >= strlen(suffix) && memcmp(c.s + c.n - strlen(suffix), suffix, strlen(suffix)) == 0;
}

static bool ref_is_slice(RefComponent c) {
        RefComponent u = ref_unescape(c);

        return c.n >= 7 && ref_ends(c, ".slice") && reference_name(u.s, u.n, false);
}

static bool ref_is_unit(RefComponent c) {
        RefComponent u = ref_unescape(c);

        return c.n >= 3 && reference_name(u.s, u.n, true) && !ref_ends(u, ".slice");
}

static bool ref_user_manager(RefComponent c, uid_t *uid) {
        uint64_t v = 0;
        size_t n;

        if (c.n < 14 || memcmp(c.s, "user@", 5) != 0 || !ref_ends(c, ".service"))
                return false;
        n = c.n - 5 - 8;
        if (n > 10 || (c.s[5] == '0' && n != 1))
                return false;
        for (size_t i = 0; i < n; i++) {
                if (c.s[5 + i] < '0' || c.s[5 + i] > '9')
                        return false;
                v = v * 10 + (uint64_t)(c.s[5 + i] - '0');
        }
        if (v >= 0xFFFFFFFFu || v == 0xFFFF)
                return false;
        *uid = (uid_t)v;
        return true;
}

static bool ref_eq(RefComponent c, const char *s) {
        return s && strlen(s) == c.n && memcmp(s, c.s, c.n) == 0;
}

static void fuzz_check_slices(const RefComponent *comp, size_t *i, size_t nc, const char *const *got,
                              size_t n_got, const uint8_t *data, size_t size) {
        size_t kept = 0;

        for (; *i < nc && ref_is_slice(comp[*i]); (*i)++) {
                RefComponent u = ref_unescape(comp[*i]);

                if (u.n == 7 && memcmp(u.s, "-.slice", 7) == 0)
                        continue;
                if (kept < CGROUP_SLICES_MAX) {
                        fuzz_check(kept < n_got && ref_eq(u, got[kept]), "units: slice differs", data, size);
                        kept++;
                }
        }
        fuzz_check(kept == n_got, "units: number of slices differs", data, size);
}

static void fuzz_units(const uint8_t *data, size_t size) {
        static RefComponent comp[REF_COMPONENTS_MAX];
        char *path = malloc(size + 1), *rest;
        size_t len, nc = 0, i = 0;
        CgroupUnits u;
        uid_t uid = 0;
        int r;

        if (!path)
                return;
        memcpy(path, data, size);
        path[size] = 0;
        len = strlen(path);
        r = cgroup_units_parse(path, &u);
        fuzz_check(r == 0 || r == -EINVAL || r == -ENOMEM, "units: returned another error", data, size);
        if (r == -ENOMEM)
                goto shift;
        if (len == 0 || path[0] != '/' || len >= CGROUP_PATH_MAX) {
                fuzz_check(r == -EINVAL && !u.unit && !u.buffer, "units: accepted a path to refuse", data,
                           size);
                goto shift;
        }
        fuzz_check(r == 0, "units: refused a path", data, size);
        for (size_t k = 0; k < len;) {
                size_t e = k;

                while (e < len && path[e] != '/')
                        e++;
                if (e > k && nc < REF_COMPONENTS_MAX)
                        comp[nc++] = (RefComponent){path + k, e - k};
                k = e + 1;
        }
        fuzz_check_slices(comp, &i, nc, u.slices, u.n_slices, data, size);
        if (i < nc && ref_is_unit(comp[i])) {
                fuzz_check(ref_eq(ref_unescape(comp[i]), u.unit), "units: unit differs", data, size);
                if (ref_user_manager(comp[i], &uid)) {
                        fuzz_check(u.has_owner && u.owner_uid == uid, "units: owner differs", data, size);
                        i++;
                        fuzz_check_slices(comp, &i, nc, u.user_slices, u.n_user_slices, data, size);
                        if (i < nc && ref_is_unit(comp[i]))
                                fuzz_check(ref_eq(ref_unescape(comp[i]), u.user_unit),
                                           "units: user unit differs", data, size);
                        else
                                fuzz_check(!u.user_unit, "units: a user unit the reference has not", data,
                                           size);
                } else
                        fuzz_check(!u.has_owner && !u.user_unit && u.n_user_slices == 0,
                                   "units: an owner the reference has not", data, size);
        } else
                fuzz_check(!u.unit && !u.has_owner && !u.user_unit, "units: a unit the reference has not",
                           data, size);
        fuzz_check(!u.unit || cgroup_unit_name_valid(u.unit), "units: invalid unit name", data, size);
        fuzz_check(!u.user_unit || cgroup_unit_name_valid(u.user_unit), "units: invalid user unit", data,
                   size);
        cgroup_units_done(&u);

shift:
        /* PID 1's path: the bytes after the first NUL, up to the next. */
        rest = len < size ? path + len + 1 : NULL;
        {
                const char *shifted = cgroup_path_shift(path, rest);
                size_t sl = strlen(shifted);

                fuzz_check(
                        shifted == path || strcmp(shifted, "/") == 0 ||
                                (shifted > path && shifted < path + len && shifted[0] == '/' && sl <= len),
                        "shift: not the path, \"/\" or a tail of it", data, size);
        }
        free(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        fuzz_stat(data, size);
        fuzz_cgroup_text(data, size);
        fuzz_units(data, size);
        return 0;
}
