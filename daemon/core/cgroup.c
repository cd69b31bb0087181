/* SPDX-License-Identifier: MIT */
/*
 * A cgroup path to its systemd units and slices (see cgroup.h), by the rules
 * of libsystemd 252's src/basic/cgroup-util.c: skip_slices() walks over the
 * components that are valid slice names (valid_slice_name()), the next one
 * is the unit if it is a valid unit name that is not a slice
 * (cg_path_decode_unit(), cg_path_get_unit()); when that unit is
 * "user@UID.service" with a strict decimal UID (skip_user_manager(),
 * parse_uid()), the same walk goes on inside it for the user slices and the
 * user unit. Names are checked as unit_name_is_valid() in unit-name.c does.
 * Nothing here reads a file: the path comes from the shell.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup.h"

/* unit-name.h: UNIT_NAME_MAX, names are shorter than this. */
#define UNIT_NAME_MAX 256

/* unit-def.c, unit_type_table: the suffixes after the last '.'. */
static const char *const unit_types[] = {
        "service", "socket", "target", "device", "mount", "automount",
        "swap",    "timer",  "path",   "slice",  "scope",
};

static bool unit_char_valid(char c) {
        /* unit-name.c, VALID_CHARS: ASCII letters and digits and ":-_.\". */
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == ':' ||
               c == '-' || c == '_' || c == '.' || c == '\\';
}

static bool unit_type_valid(const char *s, size_t n) {
        for (size_t i = 0; i < sizeof(unit_types) / sizeof(unit_types[0]); i++)
                if (strlen(unit_types[i]) == n && memcmp(unit_types[i], s, n) == 0)
                        return true;
        return false;
}

/* unit_name_is_valid(s, UNIT_NAME_PLAIN | (instance ? UNIT_NAME_INSTANCE :
 * 0)) on the n bytes at s: "prefix.type" or "prefix@instance.type". */
static bool name_valid(const char *s, size_t n, bool instance) {
        size_t dot = n, at = n;

        if (n == 0 || n >= UNIT_NAME_MAX)
                return false;
        for (size_t i = n; i > 0; i--)
                if (s[i - 1] == '.') {
                        dot = i - 1;
                        break;
                }
        if (dot == n || dot == 0 || !unit_type_valid(s + dot + 1, n - dot - 1))
                return false;
        for (size_t i = 0; i < dot; i++) {
                if (s[i] == '@') {
                        if (at == n)
                                at = i;
                        continue;
                }
                if (!unit_char_valid(s[i]))
                        return false;
        }
        if (at == n)
                return true; /* plain */
        /* An instance needs a prefix and a non-empty instance ("a@.service" is a template). */
        return instance && at > 0 && dot > at + 1;
}

bool cgroup_unit_name_valid(const char *s) {
        return s && name_valid(s, strlen(s), true);
}

static bool ends_with(const char *s, size_t n, const char *suffix) {
        size_t m = strlen(suffix);

        return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

/* cg_unescape(): a component that would clash with a kernel name
 * ("cpu.service", "tasks") is stored with a '_' in front. */
static const char *unescape(const char *s, size_t *n) {
        if (*n > 0 && s[0] == '_') {
                (*n)--;
                return s + 1;
        }
        return s;
}

/* valid_slice_name(): at least "x.slice" and ending so before unescaping,
 * a valid plain name after. */
static bool slice_component_valid(const char *s, size_t n) {
        if (n < strlen("x.slice") || !ends_with(s, n, ".slice"))
                return false;
        s = unescape(s, &n);
        return name_valid(s, n, false);
}

/* cg_path_decode_unit() plus cg_path_get_unit()'s refusal of slices. */
static bool unit_component_valid(const char *s, size_t n) {
        if (n < 3)
                return false;
        s = unescape(s, &n);
        return name_valid(s, n, true) && !ends_with(s, n, ".slice");
}

/* parse_uid(): decimal, no sign, no leading zero, no white space, 32 bits,
 * neither (uid_t)-1 nor the 16-bit -1. */
static bool uid_parse(const char *s, size_t n, uid_t *ret) {
        uint64_t v = 0;

        if (n == 0 || n > 10 || (s[0] == '0' && n > 1))
                return false;
        for (size_t i = 0; i < n; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                v = v * 10 + (uint64_t)(s[i] - '0');
        }
        if (v > UINT32_MAX || v == UINT32_MAX || v == 0xFFFF)
                return false;
        *ret = (uid_t)v;
        return true;
}

/* skip_user_manager(): "user@UID.service" as it is in the path (the user
 * manager's cgroup is never escaped, so "_user@1000.service" is not one). */
static bool user_manager_component(const char *s, size_t n, uid_t *ret_uid) {
        const size_t prefix = strlen("user@"), suffix = strlen(".service");

        if (n < strlen("user@x.service") || memcmp(s, "user@", prefix) != 0 || !ends_with(s, n, ".service"))
                return false;
        return uid_parse(s + prefix, n - prefix - suffix, ret_uid);
}

/* The component at p after any slashes, and its length. */
static char *component(char *p, size_t *ret_n) {
        p += strspn(p, "/");
        *ret_n = strcspn(p, "/");
        return p;
}

/* Ends the component of n bytes at c with a NUL; returns where the rest starts. */
static char *take(char *c, size_t n) {
        char *next = c + n;

        if (*next) {
                *next = 0;
                next++;
        }
        return next;
}

/* skip_slices(): takes the slice components from p on (NUL-terminating
 * them in place), keeps the first CGROUP_SLICES_MAX, and returns the first
 * component that is not a slice. */
static char *walk_slices(char *p, const char **slices, size_t *n_slices) {
        for (;;) {
                size_t n;
                char *c = component(p, &n);
                const char *name;

                if (!slice_component_valid(c, n))
                        return c;
                p = take(c, n);
                name = unescape(c, &n);
                if (strcmp(name, "-.slice") != 0 && *n_slices < CGROUP_SLICES_MAX)
                        slices[(*n_slices)++] = name;
        }
}

/* The unit at c (the first component after the slices), or NULL; *ret_next
 * is where its sub-cgroups start. */
static const char *walk_unit(char *c, char **ret_next, bool *ret_is_user_manager, uid_t *ret_uid) {
        size_t n = strcspn(c, "/");

        *ret_is_user_manager = false;
        if (!unit_component_valid(c, n))
                return NULL;
        *ret_is_user_manager = user_manager_component(c, n, ret_uid);
        *ret_next = take(c, n);
        return unescape(c, &n);
}

int cgroup_units_parse(const char *path, CgroupUnits *ret) {
        CgroupUnits u = {};
        char *c, *next;
        bool user_manager;
        uid_t uid = 0;

        *ret = u;
        if (!path || path[0] != '/' || strnlen(path, CGROUP_PATH_MAX) >= CGROUP_PATH_MAX)
                return -EINVAL;
        u.buffer = strdup(path);
        if (!u.buffer)
                return -ENOMEM;

        c = walk_slices(u.buffer, u.slices, &u.n_slices);
        u.unit = walk_unit(c, &next, &user_manager, &uid);
        if (u.unit && user_manager) {
                u.has_owner = true;
                u.owner_uid = uid;
                c = walk_slices(next, u.user_slices, &u.n_user_slices);
                u.user_unit = walk_unit(c, &next, &user_manager, &uid);
        }
        *ret = u;
        return 0;
}

void cgroup_units_done(CgroupUnits *u) {
        if (!u)
                return;
        free(u->buffer);
        *u = (CgroupUnits){};
}

/* The next component of a path: skips slashes, returns its start (NULL at
 * the end) and sets *p past it. */
static const char *next_path_component(const char **p, const char *end, size_t *ret_n) {
        const char *s = *p;

        while (s < end && *s == '/')
                s++;
        if (s == end) {
                *p = s;
                return NULL;
        }
        *p = s;
        while (*p < end && **p != '/')
                (*p)++;
        *ret_n = (size_t)(*p - s);
        return s;
}

const char *cgroup_path_shift(const char *path, const char *pid1_path) {
        static const char *const suffixes[] = {"/init.scope", "/system.slice", "/system"};
        const char *p = path, *q, *root_end;

        if (!pid1_path || pid1_path[0] != '/' || path[0] != '/')
                return path;
        /* cg_get_root_path(): PID 1's cgroup without its own scope. */
        root_end = pid1_path + strlen(pid1_path);
        for (size_t i = 0; i < sizeof(suffixes) / sizeof(suffixes[0]); i++)
                if (ends_with(pid1_path, (size_t)(root_end - pid1_path), suffixes[i])) {
                        root_end -= strlen(suffixes[i]);
                        break;
                }
        /* path_startswith(): both absolute, component by component. What is
         * left of the root after taking "/init.scope" off "/init.scope" is
         * "", which is not absolute: no shift, as in libsystemd. */
        if (root_end == pid1_path)
                return path;
        q = pid1_path;
        for (;;) {
                size_t np = 0, nq = 0;
                const char *cq = next_path_component(&q, root_end, &nq);
                const char *start = p;
                const char *cp;

                if (!cq) {
                        /* The root matched. libsystemd returns from the
                         * slash before the rest; the root itself is "/". */
                        while (*start == '/')
                                start++;
                        return *start ? start - 1 : "/";
                }
                cp = next_path_component(&p, p + strlen(p), &np);
                if (!cp || np != nq || memcmp(cp, cq, np) != 0)
                        return path;
        }
}
