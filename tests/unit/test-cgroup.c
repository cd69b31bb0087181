/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/core/cgroup.c: rows of cgroup paths, each with the
 * units, slices and owner it must give, written from libsystemd 252's rules
 * (cgroup-util.c, unit-name.c) and the layouts systemd makes: the root,
 * init.scope, system services and their sub-cgroups, template instances in
 * their own slice, login sessions, the user manager with its own slices and
 * units, machines, deep slices, the '_' escape and "\x2d" in names, names
 * that end the walk, and paths that are refused. Then the unit name rules
 * on their own, and cgroup_path_shift() for containers. Each path is parsed
 * from a heap copy, so a sanitizer build sees any read past its end.
 * tests/integration/test-cgroup.c compares the same function with
 * libsystemd itself on real cgroups.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cgroup.h"
#include "tb-check.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

#define NO_OWNER -1
#define U1000    "/user.slice/user-1000.slice/user@1000.service"

typedef struct Row {
        const char *name;
        const char *path;
        int ret;
        const char *unit;        /* NULL: none */
        const char *slices;      /* joined with ' ', "" for none */
        const char *user_unit;   /* NULL: none */
        const char *user_slices; /* joined with ' ' */
        long long owner;         /* NO_OWNER or the uid */
} Row;

static const Row rows[] = {
        /* system */
        {"root", "/", 0, NULL, "", NULL, "", NO_OWNER},
        {"init.scope", "/init.scope", 0, "init.scope", "", NULL, "", NO_OWNER},
        {"service", "/system.slice/foo.service", 0, "foo.service", "system.slice", NULL, "", NO_OWNER},
        {"sub-cgroup of a service", "/system.slice/foo.service/worker", 0, "foo.service", "system.slice",
         NULL, "", NO_OWNER},
        {"units below a unit are its own business", "/system.slice/foo.service/bar.slice/baz.service", 0,
         "foo.service", "system.slice", NULL, "", NO_OWNER},
        {"template instance in its slice", "/system.slice/system-getty.slice/getty@tty1.service", 0,
         "getty@tty1.service", "system.slice system-getty.slice", NULL, "", NO_OWNER},
        {"service at the top", "/foo.service", 0, "foo.service", "", NULL, "", NO_OWNER},
        {"slice only", "/system.slice", 0, NULL, "system.slice", NULL, "", NO_OWNER},
        {"slice with a stray cgroup", "/system.slice/stray", 0, NULL, "system.slice", NULL, "", NO_OWNER},
        {"mount unit", "/system.slice/home.mount", 0, "home.mount", "system.slice", NULL, "", NO_OWNER},
        {"swap unit", "/system.slice/dev-sda2.swap", 0, "dev-sda2.swap", "system.slice", NULL, "", NO_OWNER},
        {"socket unit", "/system.slice/dbus.socket", 0, "dbus.socket", "system.slice", NULL, "", NO_OWNER},
        {"machine scope and its payload", "/machine.slice/machine-foo.scope/payload/system.slice/x.service",
         0, "machine-foo.scope", "machine.slice", NULL, "", NO_OWNER},
        {"nspawn service", "/machine.slice/systemd-nspawn@foo.service/payload", 0,
         "systemd-nspawn@foo.service", "machine.slice", NULL, "", NO_OWNER},
        {"deep slices", "/a.slice/a-b.slice/a-b-c.slice/x.service", 0, "x.service",
         "a.slice a-b.slice a-b-c.slice", NULL, "", NO_OWNER},
        {"slices past the 6th are not kept",
         "/a.slice/a-b.slice/a-b-c.slice/a-b-c-d.slice/a-b-c-d-e.slice/a-b-c-d-e-f.slice/"
         "a-b-c-d-e-f-g.slice/a-b-c-d-e-f-g-h.slice/x.service",
         0, "x.service", "a.slice a-b.slice a-b-c.slice a-b-c-d.slice a-b-c-d-e.slice a-b-c-d-e-f.slice",
         NULL, "", NO_OWNER},
        {"slices need not nest by name", "/batch.slice/system.slice/x.service", 0, "x.service",
         "batch.slice system.slice", NULL, "", NO_OWNER},
        {"repeated and trailing slashes", "//system.slice///foo.service//", 0, "foo.service", "system.slice",
         NULL, "", NO_OWNER},

        /* escapes */
        {"\\x2d kept as written", "/system.slice/system-foo\\x2dbar.slice/foo\\x2dbar@a\\x2db.service", 0,
         "foo\\x2dbar@a\\x2db.service", "system.slice system-foo\\x2dbar.slice", NULL, "", NO_OWNER},
        {"'_' escape of a kernel name", "/system.slice/_cpu.service", 0, "cpu.service", "system.slice", NULL,
         "", NO_OWNER},
        {"'_' escape of a slice", "/_system.slice/foo.service", 0, "foo.service", "system.slice", NULL, "",
         NO_OWNER},
        {"only one '_' is an escape", "/system.slice/__x.service", 0, "_x.service", "system.slice", NULL, "",
         NO_OWNER},
        {"':' is a name character", "/system.slice/foo:bar.service", 0, "foo:bar.service", "system.slice",
         NULL, "", NO_OWNER},
        {"several '@' in an instance", "/system.slice/foo@bar@baz.service", 0, "foo@bar@baz.service",
         "system.slice", NULL, "", NO_OWNER},
        {"-.slice is left out", "/-.slice/foo.service", 0, "foo.service", "", NULL, "", NO_OWNER},

        /* components that end the walk */
        {"space", "/system.slice/not a unit/foo.service", 0, NULL, "system.slice", NULL, "", NO_OWNER},
        {"no suffix", "/system.slice/foo", 0, NULL, "system.slice", NULL, "", NO_OWNER},
        {"unknown suffix", "/system.slice/foo.bar", 0, NULL, "system.slice", NULL, "", NO_OWNER},
        {"suffix of a suffix", "/system.slice/foo.service.d", 0, NULL, "system.slice", NULL, "", NO_OWNER},
        {"upper-case suffix", "/system.slice/foo.SERVICE", 0, NULL, "system.slice", NULL, "", NO_OWNER},
        {"template", "/system.slice/foo@.service", 0, NULL, "system.slice", NULL, "", NO_OWNER},
        {"no prefix", "/system.slice/@foo.service", 0, NULL, "system.slice", NULL, "", NO_OWNER},
        {"only a suffix", "/system.slice/.service", 0, NULL, "system.slice", NULL, "", NO_OWNER},
        {"UTF-8", "/system.slice/caf\xc3\xa9.service", 0, NULL, "system.slice", NULL, "", NO_OWNER},
        {"control byte", "/system.slice/a\tb.service", 0, NULL, "system.slice", NULL, "", NO_OWNER},
        {"instance slice is neither slice nor unit", "/system.slice/foo@bar.slice/x.service", 0, NULL,
         "system.slice", NULL, "", NO_OWNER},
        {"'_' alone before the suffix", "/_.slice/foo.service", 0, NULL, "", NULL, "", NO_OWNER},
        {"'..'", "/../system.slice/foo.service", 0, NULL, "", NULL, "", NO_OWNER},
        {"not a slice at the top", "/lxc/foo/system.slice/foo.service", 0, NULL, "", NULL, "", NO_OWNER},

        /* sessions: no user units (libsystemd would read "foo.service" below one) */
        {"session scope", "/user.slice/user-1000.slice/session-2.scope", 0, "session-2.scope",
         "user.slice user-1000.slice", NULL, "", NO_OWNER},
        {"below a session scope", "/user.slice/user-1000.slice/session-c2.scope/foo.service", 0,
         "session-c2.scope", "user.slice user-1000.slice", NULL, "", NO_OWNER},

        /* the user manager */
        {"user manager itself", U1000, 0, "user@1000.service", "user.slice user-1000.slice", NULL, "", 1000},
        {"user manager's init.scope", U1000 "/init.scope", 0, "user@1000.service",
         "user.slice user-1000.slice", "init.scope", "", 1000},
        {"app scope in app.slice", U1000 "/app.slice/app-gnome-x.scope", 0, "user@1000.service",
         "user.slice user-1000.slice", "app-gnome-x.scope", "app.slice", 1000},
        {"app scope's sub-cgroup", U1000 "/app.slice/app-gnome-firefox-1234.scope/tab-5", 0,
         "user@1000.service", "user.slice user-1000.slice", "app-gnome-firefox-1234.scope", "app.slice",
         1000},
        {"user service in session.slice", U1000 "/session.slice/org.gnome.Shell@x11.service", 0,
         "user@1000.service", "user.slice user-1000.slice", "org.gnome.Shell@x11.service", "session.slice",
         1000},
        {"nested user slices", U1000 "/app.slice/app-flatpak.slice/app-flatpak-x.scope", 0,
         "user@1000.service", "user.slice user-1000.slice", "app-flatpak-x.scope",
         "app.slice app-flatpak.slice", 1000},
        {"user slice only", U1000 "/app.slice", 0, "user@1000.service", "user.slice user-1000.slice", NULL,
         "app.slice", 1000},
        {"user's own names end the walk", U1000 "/not a slice/x.scope", 0, "user@1000.service",
         "user.slice user-1000.slice", NULL, "", 1000},
        {"more than 6 user slices",
         U1000
         "/a.slice/a-b.slice/a-b-c.slice/a-b-c-d.slice/a-b-c-d-e.slice/a-b-c-d-e-f.slice/g.slice/x.scope",
         0, "user@1000.service", "user.slice user-1000.slice", "x.scope",
         "a.slice a-b.slice a-b-c.slice a-b-c-d.slice a-b-c-d-e.slice a-b-c-d-e-f.slice", 1000},
        {"root's user manager", "/user.slice/user-0.slice/user@0.service/app.slice/x.service", 0,
         "user@0.service", "user.slice user-0.slice", "x.service", "app.slice", 0},
        {"user manager outside user.slice", "/user@1000.service/app.slice/x.scope", 0, "user@1000.service",
         "", "x.scope", "app.slice", 1000},
        {"largest uid", "/user.slice/user@4294967294.service/x.scope", 0, "user@4294967294.service",
         "user.slice", "x.scope", "", 4294967294LL},
        {"uid (uid_t)-1 is not one", "/user.slice/user@4294967295.service/x.scope", 0,
         "user@4294967295.service", "user.slice", NULL, "", NO_OWNER},
        {"uid 65535 is not one", "/user.slice/user@65535.service/x.scope", 0, "user@65535.service",
         "user.slice", NULL, "", NO_OWNER},
        {"uid past 32 bits", "/user.slice/user@4294967296.service/x.scope", 0, "user@4294967296.service",
         "user.slice", NULL, "", NO_OWNER},
        {"uid with a leading zero", "/user.slice/user@01000.service/x.scope", 0, "user@01000.service",
         "user.slice", NULL, "", NO_OWNER},
        {"uid not a number", "/user.slice/user@alice.service/x.scope", 0, "user@alice.service", "user.slice",
         NULL, "", NO_OWNER},
        {"uid 0", "/user@0.service/x.scope", 0, "user@0.service", "", "x.scope", "", 0},
        {"escaped user manager is not one", "/user.slice/_user@1000.service/x.scope", 0, "user@1000.service",
         "user.slice", NULL, "", NO_OWNER},
        {"user manager below a unit", "/system.slice/foo.service/user@1000.service/x.scope", 0,
         "foo.service", "system.slice", NULL, "", NO_OWNER},

        /* refused */
        {"empty", "", -EINVAL},
        {"relative", "system.slice/foo.service", -EINVAL},
        {"relative dot", "./system.slice/foo.service", -EINVAL},
};

static void join(char *buf, size_t size, const char *const *v, size_t n) {
        buf[0] = 0;
        for (size_t i = 0; i < n; i++) {
                ck_assert_ptr_nonnull(v[i]);
                if (i > 0)
                        strncat(buf, " ", size - strlen(buf) - 1);
                strncat(buf, v[i], size - strlen(buf) - 1);
        }
}

static void check_name(const Row *row, const char *what, const char *got, const char *want) {
        ck_assert_msg((got == NULL) == (want == NULL) && (!got || strcmp(got, want) == 0),
                      "row '%s': %s \"%s\", expected \"%s\"", row->name, what, got ? got : "(none)",
                      want ? want : "(none)");
}

START_TEST(test_rows) {
        const Row *row = &rows[_i];
        char *copy = strdup(row->path), buf[1024];
        CgroupUnits u;
        int r;

        ck_assert_ptr_nonnull(copy);
        r = cgroup_units_parse(copy, &u);
        free(copy); /* the result must not point into the argument */
        ck_assert_msg(r == row->ret, "row '%s': returned %d, expected %d", row->name, r, row->ret);
        if (r < 0) {
                ck_assert_msg(!u.unit && !u.buffer && u.n_slices == 0, "row '%s': not left empty",
                              row->name);
                return;
        }
        check_name(row, "unit", u.unit, row->unit);
        check_name(row, "user unit", u.user_unit, row->user_unit);
        join(buf, sizeof(buf), u.slices, u.n_slices);
        check_name(row, "slices", buf, row->slices);
        join(buf, sizeof(buf), u.user_slices, u.n_user_slices);
        check_name(row, "user slices", buf, row->user_slices);
        ck_assert_msg(u.has_owner == (row->owner != NO_OWNER), "row '%s': has_owner %d", row->name,
                      u.has_owner);
        if (u.has_owner)
                ck_assert_msg((long long)u.owner_uid == row->owner, "row '%s': owner %u, expected %lld",
                              row->name, (unsigned)u.owner_uid, row->owner);
        /* Every name it gives is a valid unit name. */
        ck_assert(!u.unit || cgroup_unit_name_valid(u.unit));
        ck_assert(!u.user_unit || cgroup_unit_name_valid(u.user_unit));
        cgroup_units_done(&u);
        ck_assert_ptr_null(u.buffer);
        ck_assert_ptr_null(u.unit);
}
END_TEST

/* Lengths: the kernel gives paths shorter than PATH_MAX; unit names are
 * shorter than 256 bytes. */
START_TEST(test_lengths) {
        char *path = malloc(CGROUP_PATH_MAX + 1), name[300];
        CgroupUnits u;
        size_t n;

        ck_assert_ptr_nonnull(path);
        /* "/system.slice/" then 'a's then ".service", exactly len bytes */
        for (size_t len = CGROUP_PATH_MAX - 1; len <= CGROUP_PATH_MAX; len++) {
                strcpy(path, "/system.slice/");
                n = strlen(path);
                memset(path + n, 'a', len - n - strlen(".service"));
                strcpy(path + len - strlen(".service"), ".service");
                ck_assert_uint_eq(strlen(path), len);
                ck_assert_int_eq(cgroup_units_parse(path, &u), len < CGROUP_PATH_MAX ? 0 : -EINVAL);
                /* Either way the component is too long to be a unit. */
                ck_assert_ptr_null(u.unit);
                ck_assert_uint_eq(u.n_slices, len < CGROUP_PATH_MAX ? 1 : 0);
                cgroup_units_done(&u);
        }
        free(path);

        /* A unit name of 255 bytes is valid, 256 is not. */
        for (size_t len = 254; len <= 257; len++) {
                char p[320] = "/";

                memset(name, 'x', len - strlen(".scope"));
                strcpy(name + len - strlen(".scope"), ".scope");
                strcat(p, name);
                ck_assert_int_eq(cgroup_unit_name_valid(name), len < 256);
                ck_assert_int_eq(cgroup_units_parse(p, &u), 0);
                ck_assert_msg((u.unit != NULL) == (len < 256), "unit name of %zu bytes", len);
                cgroup_units_done(&u);
        }
        /* The '_' escape is not counted: "_" + 255 bytes is a unit of 255. */
        strcpy(name, "/_");
        memset(name + 2, 'x', 255 - strlen(".scope"));
        strcpy(name + 2 + 255 - strlen(".scope"), ".scope");
        ck_assert_int_eq(cgroup_units_parse(name, &u), 0);
        ck_assert_ptr_nonnull(u.unit);
        ck_assert_uint_eq(strlen(u.unit), 255);
        cgroup_units_done(&u);
}
END_TEST

START_TEST(test_null_and_done) {
        CgroupUnits u = {.n_slices = 3};

        ck_assert_int_eq(cgroup_units_parse(NULL, &u), -EINVAL);
        ck_assert_uint_eq(u.n_slices, 0);
        cgroup_units_done(&u);
        cgroup_units_done(&u);
        cgroup_units_done(NULL);
}
END_TEST

typedef struct NameRow {
        const char *name;
        bool valid;
} NameRow;

static const NameRow names[] = {
        {"foo.service", true},
        {"a.socket", true},
        {"x.target", true},
        {"dev-sda.device", true},
        {"home.mount", true},
        {"proc-sys-fs-binfmt_misc.automount", true},
        {"dev-sda2.swap", true},
        {"t.timer", true},
        {"p.path", true},
        {"user.slice", true},
        {"-.slice", true},
        {"init.scope", true},
        {"getty@tty1.service", true},
        {"a@b@c.service", true},
        {"a:b\\x2dc_d.e.service", true},
        {"foo.snapshot", false}, /* gone since systemd 228 */
        {"foo.busname", false},
        {"foo@.service", false}, /* a template */
        {"@foo.service", false},
        {"foo", false},
        {".service", false},
        {"foo.", false},
        {"", false},
        {"foo bar.service", false},
        {"foo/bar.service", false},
        {"f\xc3\xb6.service", false},
        {"foo.Service", false},
};

START_TEST(test_names) {
        const NameRow *row = &names[_i];

        ck_assert_msg(cgroup_unit_name_valid(row->name) == row->valid, "'%s': %d, expected %d", row->name,
                      !row->valid, row->valid);
}
END_TEST

typedef struct ShiftRow {
        const char *name;
        const char *path, *pid1, *want;
} ShiftRow;

static const ShiftRow shifts[] = {
        {"host with systemd", "/system.slice/foo.service", "/init.scope", "/system.slice/foo.service"},
        {"host without systemd", "/system.slice/foo.service", "/", "/system.slice/foo.service"},
        {"PID 1 unknown", "/system.slice/foo.service", NULL, "/system.slice/foo.service"},
        {"PID 1 path not absolute", "/system.slice/foo.service", "", "/system.slice/foo.service"},
        {"container", "/machine.slice/machine-x.scope/system.slice/foo.service",
         "/machine.slice/machine-x.scope/init.scope", "/system.slice/foo.service"},
        {"container, old layout", "/lxc/c1/system.slice/foo.service", "/lxc/c1/system.slice",
         "/system.slice/foo.service"},
        {"container, older layout", "/lxc/c1/foo.service", "/lxc/c1/system", "/foo.service"},
        {"PID 1 in no scope", "/lxc/c1/foo.service", "/lxc/c1", "/foo.service"},
        {"outside the container's root", "/system.slice/foo.service",
         "/machine.slice/machine-x.scope/init.scope", "/system.slice/foo.service"},
        {"a prefix that is not a component", "/lxc/c10/foo.service", "/lxc/c1/init.scope",
         "/lxc/c10/foo.service"},
        {"the root itself", "/lxc/c1", "/lxc/c1/init.scope", "/"},
        {"the root itself, trailing slash", "/lxc/c1/", "/lxc/c1/init.scope", "/"},
        {"extra slashes", "//lxc//c1//foo.service", "/lxc/c1/init.scope", "/foo.service"},
        {"the root cgroup on a host", "/", "/init.scope", "/"},
};

START_TEST(test_shift) {
        const ShiftRow *row = &shifts[_i];
        const char *got = cgroup_path_shift(row->path, row->pid1);

        ck_assert_msg(strcmp(got, row->want) == 0, "row '%s': \"%s\", expected \"%s\"", row->name, got,
                      row->want);
}
END_TEST

static Suite *cgroup_suite(void) {
        Suite *s = suite_create("cgroup");
        TCase *tc = tcase_create("units");

        tcase_add_loop_test(tc, test_rows, 0, (int)ELEMENTSOF(rows));
        tcase_add_test(tc, test_lengths);
        tcase_add_test(tc, test_null_and_done);
        tcase_add_loop_test(tc, test_names, 0, (int)ELEMENTSOF(names));
        tcase_add_loop_test(tc, test_shift, 0, (int)ELEMENTSOF(shifts));
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(cgroup_suite());
}
