/* SPDX-License-Identifier: MIT */
/*
 * The power monitor (daemon/power-monitor.c) with its real sd-device code
 * against fake sysfs devices and uevents from umockdev, the way upower tests
 * itself: each test makes a UMockdevTestbed (power supplies, thermal zones,
 * hwmon sensors), starts a PowerMonitor on a real libevent loop, changes
 * attributes, sends uevents and runs the loop until the callback says what
 * changed (or, where nothing may happen, for a while). Memory pressure comes
 * from a PSI fixture file in a temporary directory.
 *
 * Runs under the umockdev preload (meson runs it through umockdev-wrapper);
 * without it every test skips. umockdev_testbed_set_attribute() replaces an
 * attribute file by a new one (g_file_set_contents() renames), which is not
 * what sysfs does and which a kept-open fd never sees: the temperature, mode
 * and PSI files, read with pread() on fds the monitor keeps, are rewritten
 * in place (write_in_place()), as the kernel's are. Supplies are re-read
 * through fresh sd_device objects, so set_attribute() is fine for them.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <umockdev.h>

#include "power-monitor.h"
#include "tb-check.h"

#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_SEC  UINT64_C(1000000)

/* Polls in the tests: short enough to be quick, long enough to count. */
#define SHORT_POLL_USEC (100 * USEC_PER_MSEC)
/* A poll that never comes during a test: what happens is the uevent's doing. */
#define LONG_POLL_USEC (3600 * USEC_PER_SEC)
/* How long the loop may run before a test gives up on the callback (the
 * machines are shared; only "well within a generous bound" is checked). */
#define LOOP_LIMIT_USEC (10 * USEC_PER_SEC)

static uint64_t monotonic_usec(void) {
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * USEC_PER_SEC + (uint64_t)ts.tv_nsec / 1000;
}

typedef struct Fixture {
        UMockdevTestbed *tb;
        struct event_base *base;
        PowerMonitor *m;
        int calls;
        int stop_after; /* break the loop once calls reaches this */
        PowerReadings last;
        char tmpdir[64]; /* for PSI fixtures; "" when not made */
} Fixture;

static void changed_cb(void *userdata, const PowerReadings *r) {
        Fixture *f = userdata;

        f->calls++;
        f->last = *r;
        if (f->stop_after > 0 && f->calls >= f->stop_after)
                event_base_loopbreak(f->base);
}

/* A testbed and an event loop; false (the test skipped) without the preload. */
static bool fixture_init(Fixture *f) {
        *f = (Fixture){};
        f->tb = umockdev_testbed_new();
        ck_assert_ptr_nonnull(f->tb);
        /* Asked after the testbed exists: the preload redirects /sys only then. */
        if (!umockdev_in_mock_environment()) {
                tb_check_skip("power monitor: not running under the umockdev preload (run it through "
                              "umockdev-wrapper, or LD_PRELOAD=libumockdev-preload.so.0)");
                g_object_unref(f->tb);
                f->tb = NULL;
                return false;
        }
        f->base = event_base_new();
        ck_assert_ptr_nonnull(f->base);
        return true;
}

static void fixture_done(Fixture *f) {
        f->m = power_monitor_free(f->m);
        if (f->base)
                event_base_free(f->base);
        if (f->tmpdir[0]) {
                char path[128];

                snprintf(path, sizeof(path), "%s/memory", f->tmpdir);
                unlink(path);
                ck_assert_int_eq(rmdir(f->tmpdir), 0);
        }
        if (f->tb)
                g_object_unref(f->tb);
}

static PowerMonitorSettings settings(uint64_t poll_usec, uint64_t battery_poll_usec) {
        return (PowerMonitorSettings){.poll_usec = poll_usec, .battery_poll_usec = battery_poll_usec};
}

static void monitor_start(Fixture *f, const PowerMonitorSettings *s) {
        ck_assert_int_eq(power_monitor_new(f->base, s, changed_cb, f, &f->m), 0);
        ck_assert_ptr_nonnull(f->m);
        /* umockdev fakes the netlink socket: the monitor must be there. */
        ck_assert(power_monitor_has_uevents(f->m));
        f->last = *power_monitor_readings(f->m);
}

static const PowerReadings *readings(const Fixture *f) {
        return power_monitor_readings(f->m);
}

static void limit_cb(evutil_socket_t fd, short what, void *userdata) {
        event_base_loopbreak(userdata);
}

/* Runs the loop for limit_usec or until the callback has run calls more
 * times (0: the whole time); returns the number of callbacks seen. */
static int run_loop(Fixture *f, int calls, uint64_t limit_usec) {
        struct event *limit = evtimer_new(f->base, limit_cb, f->base);
        struct timeval tv = {.tv_sec = (time_t)(limit_usec / USEC_PER_SEC),
                             .tv_usec = (suseconds_t)(limit_usec % USEC_PER_SEC)};
        int before = f->calls;

        ck_assert_ptr_nonnull(limit);
        ck_assert_int_eq(evtimer_add(limit, &tv), 0);
        f->stop_after = calls > 0 ? f->calls + calls : 0;
        ck_assert_int_ge(event_base_dispatch(f->base), 0);
        f->stop_after = 0;
        event_free(limit);
        return f->calls - before;
}

/* One turn of the loop (EVLOOP_ONCE: it waits for the first event and runs
 * what is active then), bounded by limit_usec: "within one event". */
static int run_once(Fixture *f, uint64_t limit_usec) {
        struct event *limit = evtimer_new(f->base, limit_cb, f->base);
        struct timeval tv = {.tv_sec = (time_t)(limit_usec / USEC_PER_SEC),
                             .tv_usec = (suseconds_t)(limit_usec % USEC_PER_SEC)};
        int before = f->calls;

        ck_assert_ptr_nonnull(limit);
        ck_assert_int_eq(evtimer_add(limit, &tv), 0);
        ck_assert_int_ge(event_base_loop(f->base, EVLOOP_ONCE), 0);
        event_free(limit);
        return f->calls - before;
}

static char *add_supply_ac(Fixture *f, const char *online) {
        return umockdev_testbed_add_device(f->tb, "power_supply", "AC", NULL, "type", "Mains", "online",
                                           online, NULL, "POWER_SUPPLY_ONLINE", online, NULL);
}

static char *add_battery(Fixture *f, const char *name, const char *status, const char *capacity) {
        return umockdev_testbed_add_device(f->tb, "power_supply", name, NULL, "type", "Battery", "scope",
                                           "System", "present", "1", "status", status, "capacity", capacity,
                                           NULL, NULL);
}

static char *add_zone(Fixture *f, const char *name, const char *type, const char *temp) {
        return umockdev_testbed_add_device(f->tb, "thermal", name, NULL, "type", type, "temp", temp, "mode",
                                           "enabled", NULL, NULL);
}

/* Rewrites a testbed file without replacing it (same inode), as sysfs does. */
static void write_in_place(const char *path, const char *value) {
        int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        size_t n = strlen(value);

        ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
        ck_assert_int_eq(write(fd, value, n), (ssize_t)n);
        ck_assert_int_eq(close(fd), 0);
}

static void attr_in_place(Fixture *f, const char *syspath, const char *attr, const char *value) {
        g_autofree char *root = umockdev_testbed_get_root_dir(f->tb);
        char path[4096];

        snprintf(path, sizeof(path), "%s%s/%s", root, syspath, attr);
        write_in_place(path, value);
}

static void assert_nothing_known(const PowerReadings *r) {
        ck_assert(r->on_ac);
        ck_assert_int_eq(r->battery_permille, POWER_UNKNOWN);
        ck_assert_int_eq(r->temperature_mc, POWER_UNKNOWN);
        ck_assert_int_eq(r->pressure_cp, POWER_UNKNOWN);
        ck_assert_str_eq(r->sensor, "");
}

/* ---- 1. nothing to read ---- */

START_TEST(test_no_supplies_no_sensors) {
        PowerMonitorSettings s = settings(SHORT_POLL_USEC, SHORT_POLL_USEC);
        Fixture f;

        if (!fixture_init(&f))
                return;
        monitor_start(&f, &s);
        assert_nothing_known(readings(&f));
        ck_assert_uint_eq(power_monitor_n_supplies(f.m), 0);
        ck_assert_uint_eq(power_monitor_n_sensors(f.m), 0);

        /* Idle: no timer at all, with polling off and with it on (nothing to poll). */
        ck_assert_int_eq(run_loop(&f, 0, 4 * SHORT_POLL_USEC), 0);
        ck_assert_uint_eq(power_monitor_n_wakeups(f.m), 0);
        power_monitor_set_polling(f.m, true, monotonic_usec() + USEC_PER_SEC);
        ck_assert_int_eq(run_loop(&f, 0, 4 * SHORT_POLL_USEC), 0);
        ck_assert_uint_eq(power_monitor_n_wakeups(f.m), 0);
        power_monitor_refresh(f.m, monotonic_usec() + USEC_PER_SEC);
        ck_assert_int_eq(f.calls, 0);
        assert_nothing_known(readings(&f));
        fixture_done(&f);
}
END_TEST

/* ---- 2. AC unplugged and plugged back ---- */

START_TEST(test_ac_unplug) {
        PowerMonitorSettings s = settings(LONG_POLL_USEC, LONG_POLL_USEC);
        g_autofree char *ac = NULL, *bat = NULL;
        Fixture f;

        if (!fixture_init(&f))
                return;
        ac = add_supply_ac(&f, "1");
        bat = add_battery(&f, "BAT0", "Charging", "80");
        monitor_start(&f, &s);
        ck_assert(readings(&f)->on_ac);
        ck_assert_int_eq(readings(&f)->battery_permille, 800);
        ck_assert_uint_eq(power_monitor_n_supplies(f.m), 2);

        /* The kernel's uevent for the battery comes later (or never): the AC's
         * is enough. */
        umockdev_testbed_set_attribute(f.tb, ac, "online", "0");
        umockdev_testbed_set_attribute(f.tb, bat, "status", "Discharging");
        umockdev_testbed_uevent(f.tb, ac, "change");
        ck_assert_int_eq(run_once(&f, LOOP_LIMIT_USEC), 1);
        ck_assert(!f.last.on_ac);
        ck_assert_int_eq(f.last.battery_permille, 800);
        ck_assert(!readings(&f)->on_ac);
        ck_assert_uint_eq(power_monitor_n_wakeups(f.m), 0); /* the uevent, not a poll */

        umockdev_testbed_set_attribute(f.tb, ac, "online", "1");
        umockdev_testbed_set_attribute(f.tb, bat, "status", "Charging");
        umockdev_testbed_uevent(f.tb, ac, "change");
        ck_assert_int_eq(run_once(&f, LOOP_LIMIT_USEC), 1);
        ck_assert(f.last.on_ac);

        /* The adapter goes away altogether (remove uevent): on battery. */
        umockdev_testbed_set_attribute(f.tb, bat, "status", "Discharging");
        umockdev_testbed_uevent(f.tb, ac, "remove");
        umockdev_testbed_remove_device(f.tb, ac);
        ck_assert_int_eq(run_once(&f, LOOP_LIMIT_USEC), 1);
        ck_assert(!f.last.on_ac);
        ck_assert_uint_eq(power_monitor_n_supplies(f.m), 1);
        ck_assert_uint_eq(power_monitor_n_wakeups(f.m), 0);
        fixture_done(&f);
}
END_TEST

/* ---- 3. battery charge from uevents ---- */

START_TEST(test_charge_energy) {
        PowerMonitorSettings s = settings(LONG_POLL_USEC, LONG_POLL_USEC);
        g_autofree char *bat0 = NULL, *bat1 = NULL;
        Fixture f;

        if (!fixture_init(&f))
                return;
        bat0 = umockdev_testbed_add_device(f.tb, "power_supply", "BAT0", NULL, "type", "Battery", "present",
                                           "1", "status", "Discharging", "energy_full", "50000000",
                                           "energy_now", "40000000", "capacity", "77", NULL, NULL);
        monitor_start(&f, &s);
        ck_assert(!readings(&f)->on_ac);
        ck_assert_int_eq(readings(&f)->battery_permille, 800); /* energy, not capacity */

        umockdev_testbed_set_attribute(f.tb, bat0, "energy_now", "10000000");
        umockdev_testbed_uevent(f.tb, bat0, "change");
        ck_assert_int_eq(run_once(&f, LOOP_LIMIT_USEC), 1);
        ck_assert_int_eq(f.last.battery_permille, 200);

        /* A second, smaller, full battery is plugged in ("add" uevent): the
         * sum of energies, 40/80, not the mean of the two ratios (600). */
        bat1 = umockdev_testbed_add_device(f.tb, "power_supply", "BAT1", NULL, "type", "Battery", "present",
                                           "1", "status", "Full", "energy_full", "30000000", "energy_now",
                                           "30000000", NULL, NULL);
        ck_assert_int_eq(run_loop(&f, 1, LOOP_LIMIT_USEC), 1);
        ck_assert_uint_eq(power_monitor_n_supplies(f.m), 2);
        ck_assert_int_eq(f.last.battery_permille, 500);

        /* More energy than full (old cells report that): clamped to 1000. */
        umockdev_testbed_set_attribute(f.tb, bat0, "energy_now", "90000000");
        umockdev_testbed_uevent(f.tb, bat0, "change");
        ck_assert_int_eq(run_once(&f, LOOP_LIMIT_USEC), 1);
        ck_assert_int_eq(f.last.battery_permille, 1000);

        /* Taken out (present 0): only BAT1 counts. */
        umockdev_testbed_set_attribute(f.tb, bat0, "energy_now", "10000000");
        umockdev_testbed_set_attribute(f.tb, bat0, "present", "0");
        umockdev_testbed_uevent(f.tb, bat0, "change");
        ck_assert_int_eq(run_once(&f, LOOP_LIMIT_USEC), 1);
        ck_assert_int_eq(f.last.battery_permille, 1000);
        ck_assert(f.last.on_ac); /* the discharging one is not present: no battery discharges */
        fixture_done(&f);
}
END_TEST

START_TEST(test_charge_capacity) {
        PowerMonitorSettings s = settings(LONG_POLL_USEC, LONG_POLL_USEC);
        g_autofree char *bat0 = NULL, *bat1 = NULL;
        Fixture f;

        if (!fixture_init(&f))
                return;
        bat0 = add_battery(&f, "BAT0", "Discharging", "80");
        monitor_start(&f, &s);
        ck_assert_int_eq(readings(&f)->battery_permille, 800);

        umockdev_testbed_set_attribute(f.tb, bat0, "capacity", "15");
        umockdev_testbed_uevent(f.tb, bat0, "change");
        ck_assert_int_eq(run_once(&f, LOOP_LIMIT_USEC), 1);
        ck_assert_int_eq(f.last.battery_permille, 150);

        /* One battery with charge_*, one with capacity only: the mean of capacities. */
        bat1 = umockdev_testbed_add_device(f.tb, "power_supply", "BAT1", NULL, "type", "Battery", "status",
                                           "Discharging", "charge_full", "4000000", "charge_now", "1000000",
                                           "capacity", "25", NULL, NULL);
        ck_assert_int_eq(run_loop(&f, 1, LOOP_LIMIT_USEC), 1);
        ck_assert_int_eq(f.last.battery_permille, 200);

        /* Nonsense capacity: that battery has none, the other's is the mean. */
        umockdev_testbed_set_attribute(f.tb, bat0, "capacity", "99999999999999999999999");
        umockdev_testbed_uevent(f.tb, bat0, "change");
        ck_assert_int_eq(run_once(&f, LOOP_LIMIT_USEC), 1);
        ck_assert_int_eq(f.last.battery_permille, 250);
        umockdev_testbed_set_attribute(f.tb, bat0, "capacity", "");
        umockdev_testbed_set_attribute(f.tb, bat1, "capacity", "-5");
        umockdev_testbed_uevent(f.tb, bat0, "change");
        ck_assert_int_eq(run_once(&f, LOOP_LIMIT_USEC), 1);
        ck_assert_int_eq(f.last.battery_permille, POWER_UNKNOWN);
        ck_assert(!f.last.on_ac);
        fixture_done(&f);
}
END_TEST

/* ---- 4. scope=Device supplies ---- */

START_TEST(test_scope_device_ignored) {
        PowerMonitorSettings s = settings(LONG_POLL_USEC, LONG_POLL_USEC);
        g_autofree char *mouse = NULL, *ac = NULL;
        Fixture f;

        if (!fixture_init(&f))
                return;
        mouse = umockdev_testbed_add_device(f.tb, "power_supply", "hidpp_battery_0", NULL, "type", "Battery",
                                            "scope", "Device", "present", "1", "status", "Discharging",
                                            "capacity", "30", NULL, NULL);
        monitor_start(&f, &s);
        ck_assert(readings(&f)->on_ac);
        ck_assert_int_eq(readings(&f)->battery_permille, POWER_UNKNOWN);
        ck_assert_uint_eq(power_monitor_n_supplies(f.m), 0);
        ck_assert_uint_eq(power_monitor_n_wakeups(f.m), 0);

        /* An adapter that is offline: only the mouse discharges, still AC. */
        ac = add_supply_ac(&f, "0");
        umockdev_testbed_set_attribute(f.tb, mouse, "capacity", "20");
        umockdev_testbed_uevent(f.tb, mouse, "change");
        ck_assert_int_eq(run_loop(&f, 0, 3 * SHORT_POLL_USEC), 0);
        ck_assert(readings(&f)->on_ac);
        ck_assert_int_eq(readings(&f)->battery_permille, POWER_UNKNOWN);
        ck_assert_uint_eq(power_monitor_n_supplies(f.m), 1);
        /* No safety poll for a mouse's battery either. */
        ck_assert_uint_eq(power_monitor_n_wakeups(f.m), 0);
        fixture_done(&f);
}
END_TEST

/* ---- 5. the safety poll ---- */

START_TEST(test_safety_poll) {
        PowerMonitorSettings s = settings(LONG_POLL_USEC, 2 * SHORT_POLL_USEC);
        g_autofree char *ac = NULL, *bat = NULL;
        uint64_t wakeups;
        Fixture f;

        if (!fixture_init(&f))
                return;
        ac = add_supply_ac(&f, "0");
        bat = add_battery(&f, "BAT0", "Discharging", "50");
        monitor_start(&f, &s);
        ck_assert(!readings(&f)->on_ac);
        ck_assert_int_eq(readings(&f)->battery_permille, 500);

        /* No uevent: only the poll can see this. */
        umockdev_testbed_set_attribute(f.tb, bat, "capacity", "40");
        ck_assert_int_eq(run_loop(&f, 1, LOOP_LIMIT_USEC), 1);
        ck_assert_int_eq(f.last.battery_permille, 400);
        ck_assert_uint_ge(power_monitor_n_wakeups(f.m), 1);

        /* Plugged in and full, still without uevents: seen, then no more polls. */
        umockdev_testbed_set_attribute(f.tb, ac, "online", "1");
        umockdev_testbed_set_attribute(f.tb, bat, "status", "Full");
        umockdev_testbed_set_attribute(f.tb, bat, "capacity", "100");
        ck_assert_int_eq(run_loop(&f, 1, LOOP_LIMIT_USEC), 1);
        ck_assert(f.last.on_ac);
        ck_assert_int_eq(f.last.battery_permille, 1000);
        wakeups = power_monitor_n_wakeups(f.m);
        ck_assert_int_eq(run_loop(&f, 0, 4 * s.battery_poll_usec), 0);
        ck_assert_uint_eq(power_monitor_n_wakeups(f.m), wakeups);

        /* Unplugged again (a uevent this time): the poll is armed again and
         * sees the next change that comes without one. */
        umockdev_testbed_set_attribute(f.tb, ac, "online", "0");
        umockdev_testbed_set_attribute(f.tb, bat, "status", "Discharging");
        umockdev_testbed_uevent(f.tb, bat, "change");
        ck_assert_int_eq(run_once(&f, LOOP_LIMIT_USEC), 1);
        ck_assert(!f.last.on_ac);
        ck_assert_uint_eq(power_monitor_n_wakeups(f.m), wakeups);
        umockdev_testbed_set_attribute(f.tb, bat, "capacity", "30");
        ck_assert_int_eq(run_loop(&f, 1, LOOP_LIMIT_USEC), 1);
        ck_assert_int_eq(f.last.battery_permille, 300);
        ck_assert_uint_gt(power_monitor_n_wakeups(f.m), wakeups);
        fixture_done(&f);
}
END_TEST

START_TEST(test_no_poll_on_ac_full) {
        PowerMonitorSettings s = settings(LONG_POLL_USEC, SHORT_POLL_USEC);
        g_autofree char *ac = NULL, *bat = NULL;
        Fixture f;

        if (!fixture_init(&f))
                return;
        ac = add_supply_ac(&f, "1");
        bat = add_battery(&f, "BAT0", "Full", "100");
        monitor_start(&f, &s);
        ck_assert(readings(&f)->on_ac);
        umockdev_testbed_set_attribute(f.tb, bat, "capacity", "90");
        ck_assert_int_eq(run_loop(&f, 0, 5 * SHORT_POLL_USEC), 0);
        ck_assert_uint_eq(power_monitor_n_wakeups(f.m), 0);
        ck_assert_int_eq(readings(&f)->battery_permille, 1000);
        fixture_done(&f);
}
END_TEST

/* ---- 6. temperatures ---- */

START_TEST(test_thermal_default_package) {
        PowerMonitorSettings s = settings(SHORT_POLL_USEC, LONG_POLL_USEC);
        g_autofree char *pkg = NULL, *acpi = NULL;
        uint64_t wakeups, t0;
        Fixture f;

        if (!fixture_init(&f))
                return;
        pkg = add_zone(&f, "thermal_zone0", "x86_pkg_temp", "45000");
        acpi = add_zone(&f, "thermal_zone1", "acpitz", "60000");
        monitor_start(&f, &s);
        /* The package sensor, though acpitz is hotter: acpitz is the fallback. */
        ck_assert_uint_eq(power_monitor_n_sensors(f.m), 1);
        ck_assert_int_eq(readings(&f)->temperature_mc, 45000);
        ck_assert_str_eq(readings(&f)->sensor, "x86_pkg_temp");

        power_monitor_set_polling(f.m, true, monotonic_usec());
        attr_in_place(&f, pkg, "temp", "70000\n");
        t0 = monotonic_usec();
        ck_assert_int_eq(run_loop(&f, 1, LOOP_LIMIT_USEC), 1);
        ck_assert_int_eq(f.last.temperature_mc, 70000);
        ck_assert_uint_ge(power_monitor_n_wakeups(f.m), 1);
        ck_assert_uint_lt(monotonic_usec() - t0, 5 * USEC_PER_SEC);

        /* Polling off: one last round when the timer is due, then not
         * read, however long. */
        power_monitor_set_polling(f.m, false, monotonic_usec());
        wakeups = power_monitor_n_wakeups(f.m);
        attr_in_place(&f, pkg, "temp", "75000\n");
        ck_assert_int_eq(run_loop(&f, 0, 4 * SHORT_POLL_USEC), 1);
        ck_assert_uint_eq(power_monitor_n_wakeups(f.m), wakeups + 1);
        ck_assert_int_eq(f.last.temperature_mc, 75000);
        wakeups = power_monitor_n_wakeups(f.m);
        attr_in_place(&f, pkg, "temp", "80000\n");
        ck_assert_int_eq(run_loop(&f, 0, 4 * SHORT_POLL_USEC), 0);
        ck_assert_uint_eq(power_monitor_n_wakeups(f.m), wakeups);
        ck_assert_int_eq(readings(&f)->temperature_mc, 75000);
        /* refresh() reads it when the last reading is old enough. */
        power_monitor_refresh(f.m, monotonic_usec() + s.poll_usec);
        ck_assert_int_eq(f.calls, 3);
        ck_assert_int_eq(f.last.temperature_mc, 80000);

        /* The zone disabled: no sample, nothing known. */
        power_monitor_set_polling(f.m, true, monotonic_usec());
        attr_in_place(&f, pkg, "mode", "disabled\n");
        ck_assert_int_eq(run_loop(&f, 1, LOOP_LIMIT_USEC), 1);
        ck_assert_int_eq(f.last.temperature_mc, POWER_UNKNOWN);
        ck_assert_str_eq(f.last.sensor, "");
        attr_in_place(&f, pkg, "mode", "enabled\n");
        ck_assert_int_eq(run_loop(&f, 1, LOOP_LIMIT_USEC), 1);
        ck_assert_int_eq(f.last.temperature_mc, 80000);
        fixture_done(&f);
}
END_TEST

/* set_polling(on) reads at once only when the last reading is older than poll_usec. */
START_TEST(test_polling_reads_when_stale) {
        PowerMonitorSettings s = settings(LONG_POLL_USEC, LONG_POLL_USEC);
        g_autofree char *pkg = NULL;
        uint64_t now = monotonic_usec();
        Fixture f;

        if (!fixture_init(&f))
                return;
        pkg = add_zone(&f, "thermal_zone0", "x86_pkg_temp", "45000");
        monitor_start(&f, &s);
        attr_in_place(&f, pkg, "temp", "50000");
        power_monitor_set_polling(f.m, true, now);
        power_monitor_refresh(f.m, now);
        ck_assert_int_eq(f.calls, 0);
        ck_assert_int_eq(readings(&f)->temperature_mc, 45000);
        power_monitor_set_polling(f.m, false, now);
        power_monitor_set_polling(f.m, true, now + 2 * LONG_POLL_USEC);
        ck_assert_int_eq(f.calls, 1);
        ck_assert_int_eq(f.last.temperature_mc, 50000);
        /* On already: nothing read again. */
        attr_in_place(&f, pkg, "temp", "51000");
        power_monitor_set_polling(f.m, true, now + 4 * LONG_POLL_USEC);
        ck_assert_int_eq(f.calls, 1);
        fixture_done(&f);
}
END_TEST

START_TEST(test_thermal_hwmon_hottest) {
        PowerMonitorSettings s = settings(LONG_POLL_USEC, LONG_POLL_USEC);
        g_autofree char *pkg = NULL, *acpi = NULL, *core = NULL, *k10 = NULL, *nvme = NULL;
        Fixture f;

        if (!fixture_init(&f))
                return;
        pkg = add_zone(&f, "thermal_zone0", "x86_pkg_temp", "45000");
        acpi = add_zone(&f, "thermal_zone1", "acpitz", "99000");
        core = umockdev_testbed_add_device(f.tb, "hwmon", "hwmon0", NULL, "name", "coretemp", "temp1_input",
                                           "90000", "temp1_label", "Package id 0", "temp2_input", "99500",
                                           "temp2_label", "Core 0", NULL, NULL);
        nvme = umockdev_testbed_add_device(f.tb, "hwmon", "hwmon2", NULL, "name", "nvme", "temp1_input",
                                           "99900", "temp1_label", "Composite", NULL, NULL);
        monitor_start(&f, &s);
        /* x86_pkg_temp and coretemp's package; not Core 0, acpitz or the NVMe. */
        ck_assert_uint_eq(power_monitor_n_sensors(f.m), 2);
        ck_assert_int_eq(readings(&f)->temperature_mc, 90000);
        ck_assert_str_eq(readings(&f)->sensor, "coretemp/Package id 0");
        f.m = power_monitor_free(f.m);

        /* An AMD one too (k10temp Tctl), hotter. */
        k10 = umockdev_testbed_add_device(f.tb, "hwmon", "hwmon1", NULL, "name", "k10temp", "temp1_input",
                                          "91000", "temp1_label", "Tctl", "temp3_input", "99000",
                                          "temp3_label", "Tccd1", NULL, NULL);
        monitor_start(&f, &s);
        ck_assert_uint_eq(power_monitor_n_sensors(f.m), 3);
        ck_assert_int_eq(readings(&f)->temperature_mc, 91000);
        ck_assert_str_eq(readings(&f)->sensor, "k10temp/Tctl");
        f.m = power_monitor_free(f.m);

        /* Chosen in the config: a zone type, an hwmon label glob, NAME/LABEL, a name. */
        s.sensor = "acpitz";
        monitor_start(&f, &s);
        ck_assert_uint_eq(power_monitor_n_sensors(f.m), 1);
        ck_assert_int_eq(readings(&f)->temperature_mc, 99000);
        ck_assert_str_eq(readings(&f)->sensor, "acpitz");
        f.m = power_monitor_free(f.m);
        s.sensor = "Core *";
        monitor_start(&f, &s);
        ck_assert_uint_eq(power_monitor_n_sensors(f.m), 1);
        ck_assert_str_eq(readings(&f)->sensor, "coretemp/Core 0");
        f.m = power_monitor_free(f.m);
        s.sensor = "k10temp/T*";
        monitor_start(&f, &s);
        ck_assert_uint_eq(power_monitor_n_sensors(f.m), 2);
        ck_assert_int_eq(readings(&f)->temperature_mc, 99000);
        ck_assert_str_eq(readings(&f)->sensor, "k10temp/Tccd1");
        f.m = power_monitor_free(f.m);
        s.sensor = "nvme";
        monitor_start(&f, &s);
        ck_assert_int_eq(readings(&f)->temperature_mc, 99900);
        ck_assert_str_eq(readings(&f)->sensor, "nvme/Composite");
        f.m = power_monitor_free(f.m);
        s.sensor = "no-such-sensor";
        monitor_start(&f, &s);
        ck_assert_uint_eq(power_monitor_n_sensors(f.m), 0);
        assert_nothing_known(readings(&f));
        fixture_done(&f);
}
END_TEST

START_TEST(test_thermal_acpitz_fallback) {
        PowerMonitorSettings s = settings(LONG_POLL_USEC, LONG_POLL_USEC);
        g_autofree char *z0 = NULL, *z1 = NULL, *z2 = NULL, *hw = NULL;
        Fixture f;

        if (!fixture_init(&f))
                return;
        z0 = add_zone(&f, "thermal_zone0", "acpitz", "50000");
        z1 = add_zone(&f, "thermal_zone1", "acpitz", "55000");
        z2 = add_zone(&f, "thermal_zone2", "iwlwifi_1", "70000");
        /* A hwmon without labels: named by its name alone, not a default. */
        hw = umockdev_testbed_add_device(f.tb, "hwmon", "hwmon0", NULL, "name", "acpitz", "temp1_input",
                                         "56000", NULL, NULL);
        monitor_start(&f, &s);
        ck_assert_uint_eq(power_monitor_n_sensors(f.m), 2);
        ck_assert_int_eq(readings(&f)->temperature_mc, 55000);
        ck_assert_str_eq(readings(&f)->sensor, "acpitz");
        f.m = power_monitor_free(f.m);
        s.sensor = "acpi*";
        monitor_start(&f, &s);
        ck_assert_uint_eq(power_monitor_n_sensors(f.m), 3);
        ck_assert_int_eq(readings(&f)->temperature_mc, 56000);
        fixture_done(&f);
}
END_TEST

/* What a sensor's file may hold, and what it reads as. */
static const struct {
        const char *contents;
        int32_t mc;
} temp_rows[] = {
        {"42000\n", 42000},
        {"-5000\n", -5000},
        {"43000", 43000},
        {"", POWER_UNKNOWN},
        {"\n", POWER_UNKNOWN},
        {"abc\n", POWER_UNKNOWN},
        {"42000 \n", POWER_UNKNOWN},
        {"4200O\n", POWER_UNKNOWN},
        {"99999999999999999999999999\n", POWER_UNKNOWN},
        {"2147483648\n", POWER_UNKNOWN},
        {"1000001\n", POWER_UNKNOWN},
        {"-300000\n", POWER_UNKNOWN},
        {"-\n", POWER_UNKNOWN},
        {"0x10\n", POWER_UNKNOWN},
        {"42000\n42000\n", POWER_UNKNOWN},
        {"1234567890123456789012345678901234567890123456789\n", POWER_UNKNOWN},
};

START_TEST(test_thermal_odd_contents) {
        PowerMonitorSettings s = settings(SHORT_POLL_USEC, LONG_POLL_USEC);
        g_autofree char *pkg = NULL;
        uint64_t now;
        Fixture f;

        if (!fixture_init(&f))
                return;
        pkg = add_zone(&f, "thermal_zone0", "x86_pkg_temp", "45000");
        monitor_start(&f, &s);
        now = monotonic_usec() + USEC_PER_SEC;
        for (size_t i = 0; i < sizeof(temp_rows) / sizeof(temp_rows[0]); i++) {
                /* A known value between rows: each row's read must change it. */
                attr_in_place(&f, pkg, "temp", "1000");
                now += 2 * s.poll_usec;
                power_monitor_refresh(f.m, now);
                ck_assert_int_eq(readings(&f)->temperature_mc, 1000);
                attr_in_place(&f, pkg, "temp", temp_rows[i].contents);
                now += 2 * s.poll_usec;
                power_monitor_refresh(f.m, now);
                ck_assert_msg(readings(&f)->temperature_mc == temp_rows[i].mc,
                              "row %zu ('%s'): got %d, want %d", i, temp_rows[i].contents,
                              readings(&f)->temperature_mc, temp_rows[i].mc);
                ck_assert_str_eq(readings(&f)->sensor,
                                 temp_rows[i].mc == POWER_UNKNOWN ? "" : "x86_pkg_temp");
        }
        fixture_done(&f);
}
END_TEST

/* ---- 7. memory pressure ---- */

static const char *psi_fixture(Fixture *f, const char *contents) {
        static char path[128];

        if (!f->tmpdir[0]) {
                snprintf(f->tmpdir, sizeof(f->tmpdir), "/tmp/test-power-monitor.XXXXXX");
                ck_assert_ptr_nonnull(mkdtemp(f->tmpdir));
        }
        snprintf(path, sizeof(path), "%s/memory", f->tmpdir);
        if (access(path, F_OK) < 0) {
                int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

                ck_assert_int_ge(fd, 0);
                close(fd);
        }
        write_in_place(path, contents);
        return path;
}

#define PSI_LINE_FULL "full avg10=1.00 avg60=0.50 avg300=0.10 total=12345\n"

static const struct {
        const char *contents;
        int32_t cp;
} psi_rows[] = {
        {"some avg10=12.34 avg60=5.00 avg300=1.00 total=123456\n" PSI_LINE_FULL, 1234},
        {"some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n" PSI_LINE_FULL, 0},
        {"some avg10=100.00 avg60=0.00 avg300=0.00 total=0\n", 10000},
        {"some avg10=7.05\n", 705},
        {"some avg10=7.05", 705},
        {"some avg10=12.3 avg60=5.00 avg300=1.00 total=1\n", POWER_UNKNOWN},
        {"some avg10=12.345 avg60=5.00 avg300=1.00 total=1\n", POWER_UNKNOWN},
        {"some avg10=.34 avg60=5.00 avg300=1.00 total=1\n", POWER_UNKNOWN},
        {"some avg10=abc avg60=5.00 avg300=1.00 total=1\n", POWER_UNKNOWN},
        {"some avg10=-1.00 avg60=5.00 avg300=1.00 total=1\n", POWER_UNKNOWN},
        {"some avg10=100.01 avg60=5.00 avg300=1.00 total=1\n", POWER_UNKNOWN},
        {"some avg10=1234.00 avg60=5.00 avg300=1.00 total=1\n", POWER_UNKNOWN},
        {"some avg10=12.34x avg60=5.00\n", POWER_UNKNOWN},
        {"some  avg10=12.34 avg60=5.00\n", POWER_UNKNOWN},
        {PSI_LINE_FULL, POWER_UNKNOWN},
        {"\n", POWER_UNKNOWN},
        {"", POWER_UNKNOWN},
        {"some avg10=", POWER_UNKNOWN},
        {"garbage", POWER_UNKNOWN},
};

START_TEST(test_psi) {
        PowerMonitorSettings s = settings(SHORT_POLL_USEC, LONG_POLL_USEC);
        uint64_t now;
        const char *path;
        Fixture f;

        if (!fixture_init(&f))
                return;
        path = psi_fixture(&f, psi_rows[0].contents);
        s.pressure_file = path;
        monitor_start(&f, &s);
        ck_assert_int_eq(readings(&f)->pressure_cp, 1234);
        ck_assert_uint_eq(power_monitor_n_sensors(f.m), 0);

        /* Polled like a temperature, and only while polling is on. */
        power_monitor_set_polling(f.m, true, monotonic_usec());
        psi_fixture(&f, "some avg10=56.78 avg60=5.00 avg300=1.00 total=123999\n" PSI_LINE_FULL);
        ck_assert_int_eq(run_loop(&f, 1, LOOP_LIMIT_USEC), 1);
        ck_assert_int_eq(f.last.pressure_cp, 5678);
        ck_assert_uint_ge(power_monitor_n_wakeups(f.m), 1);
        power_monitor_set_polling(f.m, false, monotonic_usec());

        /* The rows through refresh(), whose clock is the caller's: every call
         * a reading older than poll_usec. */
        now = monotonic_usec() + USEC_PER_SEC;

        for (size_t i = 0; i < sizeof(psi_rows) / sizeof(psi_rows[0]); i++) {
                psi_fixture(&f, "some avg10=99.99 avg60=0.00 avg300=0.00 total=0\n");
                now += 2 * s.poll_usec;
                power_monitor_refresh(f.m, now);
                ck_assert_int_eq(readings(&f)->pressure_cp, 9999);
                psi_fixture(&f, psi_rows[i].contents);
                now += 2 * s.poll_usec;
                power_monitor_refresh(f.m, now);
                ck_assert_msg(readings(&f)->pressure_cp == psi_rows[i].cp, "row %zu ('%s'): got %d, want %d",
                              i, psi_rows[i].contents, readings(&f)->pressure_cp, psi_rows[i].cp);
        }
        fixture_done(&f);
}
END_TEST

START_TEST(test_psi_missing) {
        PowerMonitorSettings s = settings(SHORT_POLL_USEC, LONG_POLL_USEC);
        Fixture f;

        if (!fixture_init(&f))
                return;
        s.pressure_file = "/nonexistent/pressure/memory";
        monitor_start(&f, &s);
        assert_nothing_known(readings(&f));
        /* Nothing to read at all: polling on arms no timer. */
        power_monitor_set_polling(f.m, true, monotonic_usec() + USEC_PER_SEC);
        ck_assert_int_eq(run_loop(&f, 0, 4 * SHORT_POLL_USEC), 0);
        ck_assert_uint_eq(power_monitor_n_wakeups(f.m), 0);
        fixture_done(&f);
}
END_TEST

static Suite *power_monitor_suite(void) {
        Suite *s = suite_create("power-monitor");
        TCase *tc = tcase_create("power-monitor");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_no_supplies_no_sensors);
        tcase_add_test(tc, test_ac_unplug);
        tcase_add_test(tc, test_charge_energy);
        tcase_add_test(tc, test_charge_capacity);
        tcase_add_test(tc, test_scope_device_ignored);
        tcase_add_test(tc, test_safety_poll);
        tcase_add_test(tc, test_no_poll_on_ac_full);
        tcase_add_test(tc, test_thermal_default_package);
        tcase_add_test(tc, test_polling_reads_when_stale);
        tcase_add_test(tc, test_thermal_hwmon_hottest);
        tcase_add_test(tc, test_thermal_acpitz_fallback);
        tcase_add_test(tc, test_thermal_odd_contents);
        tcase_add_test(tc, test_psi);
        tcase_add_test(tc, test_psi_missing);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(power_monitor_suite());
}
