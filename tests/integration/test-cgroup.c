/* SPDX-License-Identifier: MIT */
/*
 * Who a peer is (daemon/identity.c, daemon/core/cgroup.c), against the real
 * parts.
 *
 * Units (root only): children are moved into real cgroups in the cgroup2
 * hierarchy libsystemd reads (/sys/fs/cgroup when it is cgroup2, else
 * /sys/fs/cgroup/unified on a hybrid host) by writing their pids to
 * cgroup.procs: a unit at the top, system services and their sub-cgroups,
 * a template instance in its slice, nested slices, "\x2d" and '_' in names,
 * a session scope, the user manager with its init.scope, apps in its
 * app.slice and nested user slices, a machine's payload, a component that
 * is no unit, and the root. For each, libsystemd 252 itself
 * (sd_pid_get_cgroup(), sd_pid_get_unit(), sd_pid_get_user_unit(),
 * sd_pid_get_slice(), sd_pid_get_user_slice()) must agree with
 * cgroup_units_parse() and identity_read_units(), and both with what the
 * row expects; procfs_parse_cgroup() on the child's /proc/PID/cgroup must
 * give the path sd_pid_get_cgroup() gives. Agreeing means: "-.slice" from
 * libsystemd is no slice here, -ENODATA is NULL, and below a session scope
 * libsystemd's user slice "-.slice" is no user slice here (cgroup.h says
 * why). The test's cgroups are all its own ("tb-cgroup-PID.*" at the
 * top); the children are moved back and reaped and the cgroups removed
 * whatever happened, and leftovers of a killed run are removed first.
 *
 * What it cannot cover: these are cgroups with unit names, not units. Real
 * (transient) units, sessions and user managers need systemd as PID 1 and
 * logind, which our machines do not run, so it shows the parsing on the
 * paths systemd makes, not that systemd makes them; nor a legacy-only host
 * (name=systemd without cgroup2), which the unit rows of
 * tests/unit/test-procfs.c cover from captured text.
 *
 * Also here: the peer's supplementary groups (SO_PEERGROUPS, more than fit
 * the first buffer when root can set 300 of them), admin by uid, primary
 * gid and supplementary group, and the executable's name (a deleted one, a
 * zombie's, and another user's, which a process without CAP_SYS_PTRACE may
 * not read).
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <systemd/sd-login.h>

#include "cgroup.h"
#include "identity.h"
#include "procfs.h"
#include "tb-check.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270 /* linux/magic.h */
#endif

#define NO_OWNER -1

/* ---- small helpers ---- */

static int write_file(const char *path, const char *text) {
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        ssize_t n;
        int r = 0;

        if (fd < 0)
                return -errno;
        n = write(fd, text, strlen(text));
        if (n < 0)
                r = -errno;
        close(fd);
        return r;
}

/* The whole of a small file, NUL-terminated; its length in *ret_len. */
static char *read_file(const char *path, size_t *ret_len) {
        char *buf = malloc(65536);
        size_t n = 0;
        int fd;

        if (!buf)
                return NULL;
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
                free(buf);
                return NULL;
        }
        for (;;) {
                ssize_t k = read(fd, buf + n, 65535 - n);
                if (k <= 0)
                        break;
                n += (size_t)k;
        }
        close(fd);
        buf[n] = 0;
        *ret_len = n;
        return buf;
}

/* The "0::" line of /proc/PID/cgroup: where a process is in cgroup2. */
static char *unified_path_of(pid_t pid) {
        char path[64], *text, *line, *ret = NULL;
        size_t len;

        snprintf(path, sizeof(path), "/proc/%d/cgroup", (int)pid);
        text = read_file(path, &len);
        if (!text)
                return NULL;
        for (line = text; line && *line;) {
                char *nl = strchr(line, '\n');

                if (nl)
                        *nl = 0;
                if (strncmp(line, "0::", 3) == 0) {
                        ret = strdup(line + 3);
                        break;
                }
                line = nl ? nl + 1 : NULL;
        }
        free(text);
        return ret;
}

/* ---- failures that do not stop the test, so that it always cleans up ---- */

typedef struct Report {
        char text[1800];
        size_t len;
        unsigned failures;
} Report;

__attribute__((format(printf, 2, 3))) static void report_fail(Report *r, const char *fmt, ...) {
        char line[512];
        va_list ap;
        int n;

        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        fprintf(stderr, "test-cgroup: %s\n", line);
        r->failures++;
        if (r->len < sizeof(r->text) - 1) {
                n = snprintf(r->text + r->len, sizeof(r->text) - r->len, "%s; ", line);
                if (n > 0)
                        r->len = r->len + (size_t)n >= sizeof(r->text) ? sizeof(r->text) - 1
                                                                       : r->len + (size_t)n;
        }
}

static bool str_eq(const char *a, const char *b) {
        return (a == NULL) == (b == NULL) && (!a || strcmp(a, b) == 0);
}

/* ---- the test's own cgroups and children ---- */

#define MAX_DIRS     128
#define MAX_CHILDREN 32

typedef struct Cgroups {
        char base[64];        /* the cgroup2 mount */
        char own[PATH_MAX];   /* where this process is, to move children back to */
        char prefix[64];      /* "tb-cgroup-PID" */
        char *dirs[MAX_DIRS]; /* created, in order */
        size_t n_dirs;
        pid_t children[MAX_CHILDREN];
        int child_pipe[2]; /* children wait for EOF on [0] */
        size_t n_children;
} Cgroups;

static Cgroups cgroups = {.child_pipe = {-1, -1}};

/* A cgroup2 hierarchy where libsystemd looks for the unified line
 * (cg_unified_cached()): /sys/fs/cgroup itself, or /sys/fs/cgroup/unified
 * below a tmpfs (hybrid). NULL and a reason otherwise. */
static const char *find_hierarchy(const char **ret_reason) {
        struct statfs fs;

        if (statfs("/sys/fs/cgroup", &fs) < 0) {
                *ret_reason = "nothing mounted on /sys/fs/cgroup";
                return NULL;
        }
        if (fs.f_type == CGROUP2_SUPER_MAGIC)
                return "/sys/fs/cgroup";
        if (statfs("/sys/fs/cgroup/unified", &fs) == 0 && fs.f_type == CGROUP2_SUPER_MAGIC)
                return "/sys/fs/cgroup/unified";
        *ret_reason =
                "no cgroup2 hierarchy on /sys/fs/cgroup or /sys/fs/cgroup/unified (legacy cgroup v1 only)";
        return NULL;
}

/* Removes DIR and everything below it that is an empty cgroup (depth first). */
static void remove_tree(const char *dir) {
        DIR *d = opendir(dir);
        struct dirent *de;

        if (d) {
                while ((de = readdir(d))) {
                        char sub[PATH_MAX];

                        if (de->d_type != DT_DIR || strcmp(de->d_name, ".") == 0 ||
                            strcmp(de->d_name, "..") == 0)
                                continue;
                        snprintf(sub, sizeof(sub), "%s/%s", dir, de->d_name);
                        remove_tree(sub);
                }
                closedir(d);
        }
        (void)rmdir(dir);
}

/* A run that was killed (a timeout) left its cgroups: its children died
 * with it (they wait for a pipe), so the cgroups are empty. */
static void remove_leftovers(const char *base) {
        DIR *d = opendir(base);
        struct dirent *de;

        if (!d)
                return;
        while ((de = readdir(d))) {
                char dir[PATH_MAX];
                int pid;

                if (sscanf(de->d_name, "tb-cgroup-%d.", &pid) != 1 || (kill(pid, 0) == 0 || errno != ESRCH))
                        continue;
                snprintf(dir, sizeof(dir), "%s/%s", base, de->d_name);
                remove_tree(dir);
        }
        closedir(d);
}

static void cgroups_cleanup(void) {
        char procs[PATH_MAX + 80];

        snprintf(procs, sizeof(procs), "%s%s/cgroup.procs", cgroups.base, cgroups.own);
        for (size_t i = 0; i < cgroups.n_children; i++) {
                char pid[32];

                snprintf(pid, sizeof(pid), "%d", (int)cgroups.children[i]);
                (void)write_file(procs, pid);
                (void)kill(cgroups.children[i], SIGKILL);
                (void)waitpid(cgroups.children[i], NULL, 0);
        }
        cgroups.n_children = 0;
        for (size_t i = cgroups.n_dirs; i > 0; i--) {
                /* The kernel may take a moment to let go of a reaped child's cgroup. */
                for (int tries = 0; tries < 100 && rmdir(cgroups.dirs[i - 1]) < 0 && errno == EBUSY; tries++)
                        usleep(10000);
                free(cgroups.dirs[i - 1]);
        }
        cgroups.n_dirs = 0;
        if (cgroups.child_pipe[1] >= 0)
                close(cgroups.child_pipe[1]);
        if (cgroups.child_pipe[0] >= 0)
                close(cgroups.child_pipe[0]);
        cgroups.child_pipe[0] = cgroups.child_pipe[1] = -1;
}

/* mkdir -p below the base, remembering what it made. */
static int cgroups_mkdir(const char *rel) {
        char path[PATH_MAX];
        size_t n;

        n = (size_t)snprintf(path, sizeof(path), "%s%s", cgroups.base, rel);
        for (size_t i = strlen(cgroups.base) + 1; i <= n; i++) {
                char c = path[i];

                if (c != '/' && c != 0)
                        continue;
                path[i] = 0;
                if (mkdir(path, 0755) == 0) {
                        if (cgroups.n_dirs == MAX_DIRS)
                                return -ENOSPC;
                        cgroups.dirs[cgroups.n_dirs] = strdup(path);
                        if (!cgroups.dirs[cgroups.n_dirs])
                                return -ENOMEM;
                        cgroups.n_dirs++;
                } else if (errno != EEXIST)
                        return -errno;
                path[i] = c;
        }
        return 0;
}

/* A child that waits (for the pipe to close, or its parent to die) in rel. */
static int cgroups_child(const char *rel, pid_t *ret) {
        char procs[PATH_MAX + 80], text[32];
        pid_t pid;
        int r;

        if (cgroups.n_children == MAX_CHILDREN)
                return -ENOSPC;
        pid = fork();
        if (pid < 0)
                return -errno;
        if (pid == 0) {
                char c;

                (void)prctl(PR_SET_PDEATHSIG, SIGKILL);
                close(cgroups.child_pipe[1]);
                (void)!read(cgroups.child_pipe[0], &c, 1);
                _exit(0);
        }
        cgroups.children[cgroups.n_children++] = pid;
        snprintf(procs, sizeof(procs), "%s%s/cgroup.procs", cgroups.base, strcmp(rel, "/") == 0 ? "" : rel);
        snprintf(text, sizeof(text), "%d", (int)pid);
        r = write_file(procs, text);
        if (r < 0)
                return r;
        *ret = pid;
        return 0;
}

/* ---- the rows ---- */

typedef struct UnitRow {
        const char *name;
        const char *path; /* below the hierarchy; "@" stands for the test's prefix */
        const char *unit; /* "@" likewise */
        const char *slices, *user_unit, *user_slices;
        long long owner;
} UnitRow;

#define U1000 "/@.slice/user.slice/user-1000.slice/user@1000.service"

static const UnitRow unit_rows[] = {
        {"root", "/", NULL, "", NULL, "", NO_OWNER},
        {"a unit at the top", "/@.service", "@.service", "", NULL, "", NO_OWNER},
        {"its sub-cgroup", "/@.service/worker", "@.service", "", NULL, "", NO_OWNER},
        {"a slice only", "/@.slice", NULL, "@.slice", NULL, "", NO_OWNER},
        {"service", "/@.slice/system.slice/foo.service", "foo.service", "@.slice system.slice", NULL, "",
         NO_OWNER},
        {"service's sub-cgroup", "/@.slice/system.slice/foo.service/worker", "foo.service",
         "@.slice system.slice", NULL, "", NO_OWNER},
        {"template instance", "/@.slice/system.slice/system-getty.slice/getty@tty1.service",
         "getty@tty1.service", "@.slice system.slice system-getty.slice", NULL, "", NO_OWNER},
        {"nested slices, \\x2d", "/@.slice/a.slice/a-b.slice/a-b-c.slice/x\\x2dy.service", "x\\x2dy.service",
         "@.slice a.slice a-b.slice a-b-c.slice", NULL, "", NO_OWNER},
        {"'_' escape", "/@.slice/system.slice/_cpu.service", "cpu.service", "@.slice system.slice", NULL, "",
         NO_OWNER},
        {"not a unit", "/@.slice/not a unit/x.service", NULL, "@.slice", NULL, "", NO_OWNER},
        {"machine payload", "/@.slice/machine.slice/machine-foo.scope/payload", "machine-foo.scope",
         "@.slice machine.slice", NULL, "", NO_OWNER},
        {"session scope", "/@.slice/user.slice/user-1000.slice/session-2.scope", "session-2.scope",
         "@.slice user.slice user-1000.slice", NULL, "", NO_OWNER},
        {"user manager", U1000 "/init.scope", "user@1000.service", "@.slice user.slice user-1000.slice",
         "init.scope", "", 1000},
        {"app scope", U1000 "/app.slice/app-gnome-x.scope", "user@1000.service",
         "@.slice user.slice user-1000.slice", "app-gnome-x.scope", "app.slice", 1000},
        {"nested user slices", U1000 "/app.slice/app-flatpak.slice/app-flatpak-x.scope/sub",
         "user@1000.service", "@.slice user.slice user-1000.slice", "app-flatpak-x.scope",
         "app.slice app-flatpak.slice", 1000},
        {"user slice only", U1000 "/session.slice", "user@1000.service",
         "@.slice user.slice user-1000.slice", NULL, "session.slice", 1000},
};

/* s with each "@" replaced by the prefix. */
static char *expand(const char *s) {
        static char bufs[4][PATH_MAX];
        static unsigned next;
        char *buf = bufs[next++ % 4];
        size_t n = 0;

        if (!s)
                return NULL;
        for (; *s && n < PATH_MAX - 80; s++) {
                if (*s == '@' && (s[1] == '.' || s[1] == 0)) {
                        n += (size_t)snprintf(buf + n, PATH_MAX - n, "%s", cgroups.prefix);
                        continue;
                }
                buf[n++] = *s;
        }
        buf[n] = 0;
        return buf;
}

static void join(char *buf, size_t size, const char *const *v, size_t n) {
        buf[0] = 0;
        for (size_t i = 0; i < n; i++) {
                if (i > 0)
                        strncat(buf, " ", size - strlen(buf) - 1);
                strncat(buf, v[i], size - strlen(buf) - 1);
        }
}

/* "-.slice" is no slice; the innermost one is what libsystemd names. */
static const char *innermost(const char *const *v, size_t n) {
        return n > 0 ? v[n - 1] : "-.slice";
}

static bool units_equal(const CgroupUnits *a, const CgroupUnits *b) {
        if (!str_eq(a->unit, b->unit) || !str_eq(a->user_unit, b->user_unit) || a->n_slices != b->n_slices ||
            a->n_user_slices != b->n_user_slices || a->has_owner != b->has_owner ||
            (a->has_owner && a->owner_uid != b->owner_uid))
                return false;
        for (size_t i = 0; i < a->n_slices; i++)
                if (strcmp(a->slices[i], b->slices[i]) != 0)
                        return false;
        for (size_t i = 0; i < a->n_user_slices; i++)
                if (strcmp(a->user_slices[i], b->user_slices[i]) != 0)
                        return false;
        return true;
}

/* libsystemd's answer r/s against ours (NULL: none). */
static void compare_sd(Report *rep, const UnitRow *row, const char *what, int r, const char *s,
                       const char *ours) {
        if (r < 0 && r != -ENODATA)
                report_fail(rep, "%s: sd_pid_get_%s() failed: %s", row->name, what, strerror(-r));
        else if (!str_eq(r < 0 ? NULL : s, ours))
                report_fail(rep, "%s: sd_pid_get_%s() says %s, ours %s", row->name, what,
                            r < 0 ? "ENODATA" : s, ours ? ours : "(none)");
}

static void check_row(Report *rep, const UnitRow *row, pid_t pid) {
        char *sd_cgroup = NULL, *sd_unit = NULL, *sd_user_unit = NULL, *sd_slice = NULL,
             *sd_user_slice = NULL;
        char *pid1 = NULL, *text, *parsed = NULL, proc[64], buf[1024];
        CgroupUnits u = {}, via_identity = {};
        bool session;
        size_t len;
        int r;

        r = sd_pid_get_cgroup(pid, &sd_cgroup);
        if (r < 0) {
                report_fail(rep, "%s: sd_pid_get_cgroup(): %s", row->name, strerror(-r));
                return;
        }
        if (strcmp(sd_cgroup, expand(row->path)) != 0)
                report_fail(rep, "%s: sd_pid_get_cgroup() says %s", row->name, sd_cgroup);
        /* procfs_parse_cgroup() on the same text */
        snprintf(proc, sizeof(proc), "/proc/%d/cgroup", (int)pid);
        text = read_file(proc, &len);
        if (!text || procfs_parse_cgroup(text, len, &parsed) < 0 || strcmp(parsed, sd_cgroup) != 0)
                report_fail(rep, "%s: procfs_parse_cgroup() gives %s, sd_pid_get_cgroup() %s", row->name,
                            parsed ? parsed : "an error", sd_cgroup);
        free(text);
        free(parsed);

        (void)sd_pid_get_cgroup(1, &pid1);
        r = cgroup_units_parse(cgroup_path_shift(sd_cgroup, pid1), &u);
        if (r < 0)
                report_fail(rep, "%s: cgroup_units_parse(%s): %s", row->name, sd_cgroup, strerror(-r));
        r = identity_read_units(pid, &via_identity);
        if (r < 0 || !units_equal(&u, &via_identity))
                report_fail(rep, "%s: identity_read_units() returned %d and other units", row->name, r);

        /* what the row says */
        if (!str_eq(u.unit, expand(row->unit)))
                report_fail(rep, "%s: unit %s", row->name, u.unit ? u.unit : "(none)");
        join(buf, sizeof(buf), u.slices, u.n_slices);
        if (strcmp(buf, expand(row->slices)) != 0)
                report_fail(rep, "%s: slices '%s'", row->name, buf);
        if (!str_eq(u.user_unit, row->user_unit))
                report_fail(rep, "%s: user unit %s", row->name, u.user_unit ? u.user_unit : "(none)");
        join(buf, sizeof(buf), u.user_slices, u.n_user_slices);
        if (strcmp(buf, row->user_slices) != 0)
                report_fail(rep, "%s: user slices '%s'", row->name, buf);
        if (u.has_owner != (row->owner != NO_OWNER) || (u.has_owner && (long long)u.owner_uid != row->owner))
                report_fail(rep, "%s: owner %d/%u", row->name, u.has_owner, (unsigned)u.owner_uid);

        /* what libsystemd says */
        r = sd_pid_get_unit(pid, &sd_unit);
        compare_sd(rep, row, "unit", r, sd_unit, u.unit);
        r = sd_pid_get_slice(pid, &sd_slice);
        compare_sd(rep, row, "slice", r, sd_slice, innermost(u.slices, u.n_slices));
        r = sd_pid_get_user_unit(pid, &sd_user_unit);
        compare_sd(rep, row, "user_unit", r, sd_user_unit, u.user_unit);
        session = u.unit && strncmp(u.unit, "session-", strlen("session-")) == 0;
        r = sd_pid_get_user_slice(pid, &sd_user_slice);
        if (session) /* libsystemd's user slice below a session scope: "-.slice" (see cgroup.h) */
                compare_sd(rep, row, "user_slice", r, sd_user_slice, "-.slice");
        else
                compare_sd(rep, row, "user_slice", r, sd_user_slice,
                           u.has_owner ? innermost(u.user_slices, u.n_user_slices) : NULL);

        cgroup_units_done(&u);
        cgroup_units_done(&via_identity);
        free(sd_cgroup);
        free(sd_unit);
        free(sd_user_unit);
        free(sd_slice);
        free(sd_user_slice);
        free(pid1);
}

START_TEST(test_units) {
        const char *reason = NULL, *base;
        char *own;
        Report rep = {};
        pid_t pids[ELEMENTSOF(unit_rows)];
        int r;

        if (!tb_check_need_root("moving processes between cgroups"))
                return;
        base = find_hierarchy(&reason);
        if (!base) {
                tb_check_skip("%s", reason);
                return;
        }
        own = unified_path_of(getpid());
        if (!own) {
                tb_check_skip("no \"0::\" line in /proc/self/cgroup although %s is cgroup2", base);
                return;
        }
        snprintf(cgroups.base, sizeof(cgroups.base), "%s", base);
        snprintf(cgroups.own, sizeof(cgroups.own), "%s", strcmp(own, "/") == 0 ? "" : own);
        free(own);
        snprintf(cgroups.prefix, sizeof(cgroups.prefix), "tb-cgroup-%d", (int)getpid());
        remove_leftovers(base);
        ck_assert_int_eq(pipe2(cgroups.child_pipe, O_CLOEXEC), 0);

        /* Can we make cgroups here at all? */
        r = cgroups_mkdir(expand("/@.slice"));
        if (r < 0) {
                cgroups_cleanup();
                tb_check_skip("cannot create a cgroup in %s: %s", base, strerror(-r));
                return;
        }

        for (size_t i = 0; i < ELEMENTSOF(unit_rows); i++) {
                const char *path = expand(unit_rows[i].path);

                pids[i] = 0;
                r = strcmp(path, "/") == 0 ? 0 : cgroups_mkdir(path);
                if (r >= 0)
                        r = cgroups_child(path, &pids[i]);
                if (r < 0) {
                        report_fail(&rep, "%s: cannot put a child in %s%s: %s", unit_rows[i].name, base,
                                    path, strerror(-r));
                        pids[i] = 0;
                }
        }
        for (size_t i = 0; i < ELEMENTSOF(unit_rows); i++)
                if (pids[i] > 0)
                        check_row(&rep, &unit_rows[i], pids[i]);

        /* A process that is gone. */
        {
                CgroupUnits u = {.n_slices = 1};
                pid_t pid = cgroups.children[0];

                (void)kill(pid, SIGKILL);
                (void)waitpid(pid, NULL, 0);
                cgroups.children[0] = cgroups.children[--cgroups.n_children];
                r = identity_read_units(pid, &u);
                if (r != -ESRCH || u.unit || u.n_slices)
                        report_fail(&rep, "a process that is gone: identity_read_units() returned %d", r);
        }

        cgroups_cleanup();
        for (size_t i = 0; i < ELEMENTSOF(unit_rows); i++) {
                char dir[PATH_MAX];

                snprintf(dir, sizeof(dir), "%s%s", base, expand(unit_rows[i].path));
                if (strcmp(unit_rows[i].path, "/") != 0 && access(dir, F_OK) == 0)
                        report_fail(&rep, "%s was not removed", dir);
        }
        ck_assert_msg(rep.failures == 0, "%u failures: %s", rep.failures, rep.text);
}
END_TEST

/* ---- groups and admin ---- */

static bool same_set(const gid_t *a, size_t na, const gid_t *b, size_t nb) {
        if (na != nb)
                return false;
        for (size_t i = 0; i < na; i++) {
                bool found = false;
                for (size_t j = 0; j < nb && !found; j++)
                        found = a[i] == b[j];
                if (!found)
                        return false;
        }
        return true;
}

START_TEST(test_groups_self) {
        gid_t mine[NGROUPS_MAX], *groups = NULL;
        size_t n = 99;
        int sv[2], k = getgroups(NGROUPS_MAX, mine);
        Identity id;

        ck_assert_int_ge(k, 0);
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        ck_assert_int_eq(identity_peer_groups(sv[0], &groups, &n), 0);
        ck_assert_msg(same_set(groups, n, mine, (size_t)k), "%zu groups, getgroups() says %d", n, k);
        ck_assert(n > 0 || groups == NULL);
        free(groups);

        /* Our own euid is an admin by uid alone. */
        ck_assert_int_eq(identity_from_socket(sv[0], &id), 0);
        ck_assert_int_eq(id.uid, geteuid());
        ck_assert(id.admin);
        ck_assert(identity_is_admin(&id));
        close(sv[0]);
        close(sv[1]);

        /* Not a socket: an error, nothing returned. */
        groups = (gid_t *)mine;
        ck_assert_int_eq(identity_peer_groups(-1, &groups, &n), -EBADF);
        ck_assert_ptr_null(groups);
        ck_assert_uint_eq(n, 0);
}
END_TEST

START_TEST(test_admin_groups) {
        static const gid_t groups[] = {10, 27, 100};
        Identity id = {.uid = 12345, .gid = 500};

        identity_set_admin_groups(&id, groups, ELEMENTSOF(groups), false, 27);
        ck_assert(!id.admin); /* no admin group configured */
        identity_set_admin_groups(&id, groups, ELEMENTSOF(groups), true, 28);
        ck_assert(!id.admin);
        identity_set_admin_groups(&id, NULL, 0, true, 28);
        ck_assert(!id.admin);
        identity_set_admin_groups(&id, groups, ELEMENTSOF(groups), true, 100);
        ck_assert(id.admin); /* supplementary */
        id.admin = false;
        identity_set_admin_groups(&id, NULL, 0, true, 500);
        ck_assert(id.admin); /* primary */
        identity_set_admin_groups(&id, NULL, 0, true, 1);
        ck_assert(id.admin); /* never cleared */
}
END_TEST

/* A child as uid/gid 54321 with 300 supplementary groups connects to us:
 * more than fit the first buffer. */
START_TEST(test_groups_many) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        socklen_t sa_len;
        gid_t want[300], *groups = NULL;
        size_t n = 0;
        int lfd, fd, status;
        Identity id;
        pid_t pid;

        if (!tb_check_need_root("300 supplementary groups"))
                return;
        for (size_t i = 0; i < ELEMENTSOF(want); i++)
                want[i] = (gid_t)(100000 + i);
        /* Abstract: no file whose permissions a uid 54321 would need. */
        snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "tb-test-cgroup-%d", (int)getpid());
        sa_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(sa.sun_path + 1));
        lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ck_assert_int_ge(lfd, 0);
        ck_assert_int_eq(bind(lfd, (struct sockaddr *)&sa, sa_len), 0);
        ck_assert_int_eq(listen(lfd, 1), 0);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                int c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                char b;

                if (setgroups(ELEMENTSOF(want), want) < 0 || setresgid(54321, 54321, 54321) < 0 ||
                    setresuid(54321, 54321, 54321) < 0 || connect(c, (struct sockaddr *)&sa, sa_len) < 0)
                        _exit(1);
                (void)!read(c, &b, 1);
                _exit(0);
        }
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(identity_from_socket(fd, &id), 0);
        ck_assert_int_eq(id.uid, 54321);
        ck_assert_int_eq(id.gid, 54321);
        ck_assert(!id.admin);
        ck_assert_int_eq(identity_peer_groups(fd, &groups, &n), 0);
        ck_assert_msg(same_set(groups, n, want, ELEMENTSOF(want)), "%zu groups", n);
        identity_set_admin_groups(&id, groups, n, true, 99999);
        ck_assert(!id.admin);
        identity_set_admin_groups(&id, groups, n, true, 100299);
        ck_assert(id.admin);
        free(groups);
        close(fd);
        close(lfd);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
}
END_TEST

/* ---- the executable ---- */

START_TEST(test_exe_self) {
        char *name = NULL;

        ck_assert_int_eq(identity_read_exe("/proc", getpid(), &name), 0);
        ck_assert_str_eq(name, "test-cgroup");
        free(name);
        ck_assert_int_eq(identity_read_exe("/proc", 0, &name), -EINVAL);
        ck_assert_int_eq(identity_read_exe("/nonexistent", getpid(), &name), -ENOENT);
}
END_TEST

/* A copy of sleep(1), run and then removed (as an upgrade replaces a
 * binary): the link says "... (deleted)", the name is without it. Then the
 * same process as a zombie: no exe at all. */
START_TEST(test_exe_deleted) {
        char dir[] = "/tmp/tb-exe-XXXXXX", path[PATH_MAX], cmd[PATH_MAX + 64], link[PATH_MAX], *name = NULL;
        int sync_pipe[2], status;
        ssize_t k;
        pid_t pid;
        char c;

        ck_assert_ptr_nonnull(mkdtemp(dir));
        snprintf(path, sizeof(path), "%s/tb-exe-deleted", dir);
        snprintf(cmd, sizeof(cmd), "cp /bin/sleep '%s'", path);
        ck_assert_int_eq(system(cmd), 0);
        ck_assert_int_eq(pipe2(sync_pipe, O_CLOEXEC), 0);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                close(sync_pipe[0]);
                execl(path, "tb-exe-deleted", "30", (char *)NULL);
                _exit(127);
        }
        close(sync_pipe[1]);
        /* EOF when the exec closed the write end (O_CLOEXEC). */
        ck_assert_int_eq(read(sync_pipe[0], &c, 1), 0);
        close(sync_pipe[0]);
        ck_assert_int_eq(unlink(path), 0);
        ck_assert_int_eq(rmdir(dir), 0);
        snprintf(cmd, sizeof(cmd), "/proc/%d/exe", (int)pid);
        k = readlink(cmd, link, sizeof(link) - 1);
        ck_assert_int_gt(k, 0);
        link[k] = 0;
        ck_assert_msg(strstr(link, " (deleted)"), "link is %s", link);
        ck_assert_int_eq(identity_read_exe("/proc", pid, &name), 0);
        ck_assert_str_eq(name, "tb-exe-deleted");
        free(name);

        /* A zombie has no executable. */
        ck_assert_int_eq(kill(pid, SIGKILL), 0);
        ck_assert_int_eq(waitid(P_PID, pid, NULL, WEXITED | WNOWAIT), 0);
        ck_assert_int_eq(identity_read_exe("/proc", pid, &name), -ENOENT);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
}
END_TEST

/* A process of another user without CAP_SYS_PTRACE cannot read our exe:
 * what the daemon, running as its own user, gets for other users' peers. */
START_TEST(test_exe_other_user) {
        int result_pipe[2], status, r = 0;
        pid_t pid, parent = getpid();

        if (!tb_check_need_root("reading the exe of another uid's process"))
                return;
        ck_assert_int_eq(pipe2(result_pipe, O_CLOEXEC), 0);
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                char *name = NULL;
                int rr = -EPERM;

                if (setgroups(0, NULL) == 0 && setresgid(65534, 65534, 65534) == 0 &&
                    setresuid(65534, 65534, 65534) == 0)
                        rr = identity_read_exe("/proc", parent, &name);
                (void)!write(result_pipe[1], &rr, sizeof(rr));
                _exit(0);
        }
        close(result_pipe[1]);
        ck_assert_int_eq(read(result_pipe[0], &r, sizeof(r)), (ssize_t)sizeof(r));
        close(result_pipe[0]);
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(r == -EACCES, "identity_read_exe() as uid 65534 on a root process: %d (%s)", r,
                      strerror(-r));
}
END_TEST

static Suite *cgroup_suite(void) {
        Suite *s = suite_create("cgroup");
        TCase *tc = tcase_create("identity");

        tcase_add_test(tc, test_groups_self);
        tcase_add_test(tc, test_admin_groups);
        tcase_add_test(tc, test_exe_self);
        tcase_add_test(tc, test_exe_deleted);
        suite_add_tcase(s, tc);

        tc = tcase_create("root");
        tb_check_tag_root(tc);
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_units);
        tcase_add_test(tc, test_groups_many);
        tcase_add_test(tc, test_exe_other_user);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(cgroup_suite());
}
