/* SPDX-License-Identifier: MIT */
/*
 * The systemd units and slices of a process, from its cgroup path (what
 * sd_pid_get_cgroup() returns: the path in the unified hierarchy, or in
 * name=systemd on a legacy host). Derived by the rules libsystemd 252 uses
 * for sd_pid_get_unit(), sd_pid_get_user_unit(), sd_pid_get_slice() and
 * sd_pid_get_user_slice(), so the daemon reads the cgroup once per
 * connection instead of four times; tests/integration/test-cgroup.c checks
 * that both agree on real cgroups.
 *
 * Where this differs from libsystemd, on purpose: libsystemd also reads user
 * units and slices below a session scope ("session-2.scope/foo.service" has
 * the user unit "foo.service", from the days before user@.service); here
 * only the user manager, user@UID.service, has them, so every user unit has
 * an owner. A literal "-.slice" component is left out of the slices like the
 * root slice it names. Past CGROUP_SLICES_MAX slices, the deeper ones are
 * not kept (libsystemd's sd_pid_get_slice() names the innermost).
 *
 * Pure: a string in, a struct out.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Slices above a process that are kept (outermost first); deeper ones are
 * not charged (a path this deep does not occur in practice). */
#define CGROUP_SLICES_MAX 6

typedef struct CgroupUnits {
        /* The system unit ("foo.service", "session-2.scope",
         * "user@1000.service"), NULL when the process is in none (the root
         * cgroup, "init.scope" counts as a unit). */
        const char *unit;
        /* Within a user manager (unit "user@UID.service", has_owner): the
         * user unit, or NULL. */
        const char *user_unit;
        /* The system slices above unit, outermost first, "-.slice" left out
         * (every process is in it): "user.slice", "user-1000.slice". */
        const char *slices[CGROUP_SLICES_MAX];
        size_t n_slices;
        /* The same inside the user manager: "app.slice". */
        const char *user_slices[CGROUP_SLICES_MAX];
        size_t n_user_slices;
        /* The uid of the user manager when unit is "user@UID.service". */
        bool has_owner;
        uid_t owner_uid;
        char *buffer; /* owns the strings above */
} CgroupUnits;

/* The kernel's limit: /proc/PID/cgroup fails with ENAMETOOLONG rather than
 * print a path of PATH_MAX bytes or more (proc_cgroup_show()). */
#define CGROUP_PATH_MAX 4096

/*
 * Parses a cgroup path ("/system.slice/foo.service", "/" ...). Components
 * that are not valid unit names end the walk (what follows is a unit's own
 * sub-cgroups, e.g. "/system.slice/foo.service/worker"). A leading '_' is
 * the kernel-name escape (cg_escape(): "_cpu.service") and is removed.
 * Returns 0 (also for paths in no unit: then unit is NULL), -EINVAL for a
 * path that is not absolute or not shorter than CGROUP_PATH_MAX, or -ENOMEM.
 * *ret is always initialized; free it with cgroup_units_done().
 */
int cgroup_units_parse(const char *path, CgroupUnits *ret);
/* NULL-safe; leaves *u empty. */
void cgroup_units_done(CgroupUnits *u);

/*
 * What sd_pid_get_unit() and its siblings parse, as opposed to
 * sd_pid_get_cgroup(): the path relative to the root systemd manages, which
 * is PID 1's own cgroup without a trailing "/init.scope" (or the older
 * "/system.slice", "/system"), as libsystemd's cg_shift_path() does. In a
 * container without a cgroup namespace, PID 1 is in
 * "/machine.slice/machine-x.scope/init.scope" and a service of that
 * container in "/machine.slice/machine-x.scope/system.slice/foo.service",
 * which is "/system.slice/foo.service" shifted. Returns a pointer into path:
 * path itself when it is not below that root (a host's PID 1 is in
 * "/init.scope", or "/" without systemd: nothing to shift), "/" for the
 * root itself. pid1_path NULL: nothing to shift.
 */
const char *cgroup_path_shift(const char *path, const char *pid1_path);

/* Whether s is a valid systemd unit name of any type (as unit_name_is_valid()
 * with UNIT_NAME_PLAIN|UNIT_NAME_INSTANCE): at most 255 bytes, a valid
 * suffix, allowed characters. */
bool cgroup_unit_name_valid(const char *s);
