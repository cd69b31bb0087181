/* SPDX-License-Identifier: MIT */
/*
 * The whole daemon against fake power supplies and thermal zones (issue 11):
 * the test makes a umockdev testbed, starts the real tokenbudgetd under the
 * umockdev preload (it inherits LD_PRELOAD from umockdev-wrapper and
 * UMOCKDEV_DIR from the testbed), and drives it as upower's tests drive
 * upowerd: attributes change, uevents are sent (umockdev delivers them to the
 * daemon's sd_device_monitor through its event sockets), and the test asks
 * the daemon over Varlink what it now grants. Cases: AC unplugged applies
 * the battery policy within one uevent (no poll can have done it: polls are
 * an hour apart); the battery falling through low_battery_percent enters
 * low-battery (background paused, normal x0.5) and rising past the release
 * leaves it; a thermal zone over hot_celsius pauses background work and its
 * queued Request is served when it cools (temperatures are polled while
 * someone waits); a mouse battery (scope=Device) is ignored; no supplies is
 * "ac"; a battery that never sends uevents is seen by the safety poll.
 */
#define _GNU_SOURCE
#include "harness.h"
#include "tb-check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <umockdev.h>

#define OPEN_SCOPES                                                                                         \
        "process: { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; "                       \
        "max_tokens_in_flight = 0; };\n"                                                                    \
        "user: { tokens_per_minute = 0; tokens_per_hour = 0; tokens_per_day = 0; "                          \
        "max_tokens_in_flight = 0; };\n"                                                                    \
        "warn_multiplier = 1.0; hard_multiplier = 1.0; max_request_tokens = 1000;\n"

#define REQUEST "{\"method\":\"io.tokenbudget.agent.Request\",\"parameters\":{"
#define STATUS  "{\"method\":\"io.tokenbudget.admin.Status\",\"parameters\":{}}"

static UMockdevTestbed *tb;

static bool testbed_new(void) {
        tb = umockdev_testbed_new();
        ck_assert_ptr_nonnull(tb);
        if (!umockdev_in_mock_environment()) {
                tb_check_skip("power-daemon: not running under the umockdev preload (meson runs it through "
                              "umockdev-wrapper)");
                g_object_unref(tb);
                tb = NULL;
                return false;
        }
        return true;
}

static void testbed_free(void) {
        if (tb)
                g_object_unref(tb);
        tb = NULL;
}

static TestDaemon *start(const char *power) {
        char *conf;
        TestDaemon *d;

        /* No PSI: this machine's real pressure must not get in the way. */
        ck_assert_int_ge(asprintf(&conf, OPEN_SCOPES "power: { pressure_file = \"\"; %s };\n", power), 0);
        d = harness_daemon_start(conf);
        free(conf);
        return d;
}

static json_object *call(RawConn *r, const char *json) {
        return raw_call(r, json, json);
}

/* The power state Status reports. */
static char *state_of(RawConn *r) {
        json_object *st = call(r, STATUS), *p;
        char *s;

        ck_assert_msg(json_object_object_get_ex(reply_parameters(st), "power", &p), "no power: %s",
                      json_object_to_json_string(st));
        s = strdup(json_str(p, "state", "power"));
        json_object_put(st);
        return s;
}

/* Waits up to timeout_ms for Status to say state; fails naming what it said. */
static void wait_state(RawConn *r, const char *state, int timeout_ms, const char *what) {
        uint64_t end = harness_now_usec() + (uint64_t)timeout_ms * 1000;
        char *s = NULL;

        for (;;) {
                free(s);
                s = state_of(r);
                if (strcmp(s, state) == 0 || harness_now_usec() > end)
                        break;
                harness_sleep_msec(20);
        }
        ck_assert_msg(strcmp(s, state) == 0, "%s: state %s after %d ms, expected %s", what, s, timeout_ms,
                      state);
        free(s);
}

static void assert_state_stays(RawConn *r, const char *state, int msec, const char *what) {
        harness_sleep_msec(msec);
        char *s = state_of(r);
        ck_assert_msg(strcmp(s, state) == 0, "%s: state %s, expected %s", what, s, state);
        free(s);
}

/* A Request of priority for estimate tokens: granted (0) or the error name's tail. */
static json_object *request(RawConn *r, const char *priority, int estimate) {
        char msg[256];

        snprintf(msg, sizeof(msg), REQUEST "\"estimate\":%d,\"priority\":\"%s\"}}", estimate, priority);
        return call(r, msg);
}

static void assert_granted(json_object *reply, int64_t granted, const char *state, double factor) {
        json_object *p = reply_parameters(reply), *f;

        ck_assert_msg(!reply_error(reply), "refused: %s", json_object_to_json_string(reply));
        ck_assert_msg(json_int(p, "granted", "grant") == granted &&
                              strcmp(json_str(p, "powerState", "grant"), state) == 0 &&
                              json_object_object_get_ex(p, "powerFactor", &f) &&
                              json_object_get_double(f) == factor,
                      "expected %" PRId64 " granted in %s at x%.2f: %s", granted, state, factor,
                      json_object_to_json_string(reply));
}

/* Takes reply. */
static void assert_paused(json_object *reply, const char *state) {
        const char *e = reply_error(reply);

        ck_assert_msg(e && strcmp(e, "io.tokenbudget.agent.PowerPaused") == 0 &&
                              strcmp(json_str(reply_parameters(reply), "state", "PowerPaused"), state) == 0,
                      "expected PowerPaused %s: %s", state, json_object_to_json_string(reply));
        json_object_put(reply);
}

/* Grants and releases at once (a grant left open would keep the daemon polling). */
static void expect_grant(RawConn *r, const char *priority, int estimate, int64_t granted, const char *state,
                         double factor) {
        json_object *reply = request(r, priority, estimate);
        char msg[256];

        assert_granted(reply, granted, state, factor);
        snprintf(msg, sizeof(msg),
                 "{\"method\":\"io.tokenbudget.agent.Release\",\"parameters\":{\"allocation\":\"%s\"}}",
                 json_str(reply_parameters(reply), "allocation", "grant"));
        json_object_put(reply);
        json_object_put(call(r, msg));
}

/* Rewrites a testbed file in place (the daemon keeps temperature files
 * open; umockdev_testbed_set_attribute() would replace the file). */
static void write_in_place(const char *syspath, const char *attr, const char *value) {
        g_autofree char *root = umockdev_testbed_get_root_dir(tb);
        char *path;
        int fd;

        ck_assert_int_ge(asprintf(&path, "%s%s/%s", root, syspath, attr), 0);
        fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
        ck_assert_msg(fd >= 0, "open %s: %s", path, strerror(errno));
        ck_assert_int_eq(write(fd, value, strlen(value)), (ssize_t)strlen(value));
        close(fd);
        free(path);
}

/* Polls an hour apart: whatever happens within a test is a uevent's doing. */
#define NO_POLLS "poll_sec = 3600; battery_poll_sec = 3600;"

/* AC unplugged: the battery policy (background x0.5) within one uevent. */
START_TEST(test_ac_unplug) {
        TestDaemon *d;
        RawConn *r;
        char *ac, *bat;

        if (!testbed_new())
                return;
        ac = umockdev_testbed_add_device(tb, "power_supply", "AC", NULL, "type", "Mains", "online", "1",
                                         NULL, "POWER_SUPPLY_ONLINE", "1", NULL);
        bat = umockdev_testbed_add_device(tb, "power_supply", "BAT0", NULL, "type", "Battery", "scope",
                                          "System", "present", "1", "status", "Charging", "capacity", "80",
                                          NULL, NULL);
        d = start(NO_POLLS);
        r = harness_open_working(d, "ac");
        wait_state(r, "ac", 0, "plugged in");
        expect_grant(r, "background", 1000, 1000, "ac", 1.0);

        umockdev_testbed_set_attribute(tb, ac, "online", "0");
        umockdev_testbed_set_attribute(tb, bat, "status", "Discharging");
        umockdev_testbed_uevent(tb, ac, "change");
        wait_state(r, "battery", 2000, "AC unplugged");
        expect_grant(r, "background", 1000, 500, "battery", 0.5);
        expect_grant(r, "normal", 1000, 1000, "battery", 1.0);

        umockdev_testbed_set_attribute(tb, ac, "online", "1");
        umockdev_testbed_set_attribute(tb, bat, "status", "Charging");
        umockdev_testbed_uevent(tb, ac, "change");
        wait_state(r, "ac", 2000, "plugged in again");
        expect_grant(r, "background", 1000, 1000, "ac", 1.0);
        raw_close(r);
        harness_daemon_stop(d);
        free(ac);
        free(bat);
        testbed_free();
}
END_TEST

/* Capacity through low_battery_percent (20) enters low-battery; between 20
 * and 25 it stays; past 25 it is left. */
START_TEST(test_low_battery_hysteresis) {
        TestDaemon *d;
        RawConn *r;
        char *bat;

        if (!testbed_new())
                return;
        bat = umockdev_testbed_add_device(tb, "power_supply", "BAT0", NULL, "type", "Battery", "scope",
                                          "System", "present", "1", "status", "Discharging", "capacity",
                                          "30", NULL, NULL);
        d = start(NO_POLLS);
        r = harness_open_working(d, "low");
        wait_state(r, "battery", 0, "discharging at 30%");

        umockdev_testbed_set_attribute(tb, bat, "capacity", "19");
        umockdev_testbed_uevent(tb, bat, "change");
        wait_state(r, "low-battery", 2000, "19%");
        assert_paused(request(r, "background", 100), "low-battery");
        expect_grant(r, "normal", 1000, 500, "low-battery", 0.5);
        expect_grant(r, "interactive", 1000, 1000, "low-battery", 1.0);

        umockdev_testbed_set_attribute(tb, bat, "capacity", "24");
        umockdev_testbed_uevent(tb, bat, "change");
        assert_state_stays(r, "low-battery", 300, "24% (below the release at 25%)");
        umockdev_testbed_set_attribute(tb, bat, "capacity", "26");
        umockdev_testbed_uevent(tb, bat, "change");
        wait_state(r, "battery", 2000, "26%");
        expect_grant(r, "background", 1000, 500, "battery", 0.5);
        raw_close(r);
        harness_daemon_stop(d);
        free(bat);
        testbed_free();
}
END_TEST

/* A package sensor past hot_celsius (85) pauses background work; a queued
 * background Request is served when it cools below hot_release (80). */
START_TEST(test_hot_pauses_then_serves) {
        TestDaemon *d;
        RawConn *r, *w;
        json_object *reply;
        char *zone, *acpi;

        if (!testbed_new())
                return;
        zone = umockdev_testbed_add_device(tb, "thermal", "thermal_zone1", NULL, "type", "x86_pkg_temp",
                                           "temp", "50000", "mode", "enabled", NULL, NULL);
        /* acpitz is only the fallback: hotter, but not chosen. */
        acpi = umockdev_testbed_add_device(tb, "thermal", "thermal_zone0", NULL, "type", "acpitz", "temp",
                                           "99000", "mode", "enabled", NULL, NULL);
        d = start("poll_sec = 1; battery_poll_sec = 3600;");
        r = harness_open_working(d, "admin");
        w = harness_open_working(d, "waiter");
        wait_state(r, "ac", 0, "cool");

        write_in_place(zone, "temp", "90000");
        /* Idle and cool until now, nothing polls: the next Request reads (it
         * is past poll_sec since the last reading, taken at start). */
        harness_sleep_msec(1100);
        assert_paused(request(r, "background", 100), "hot");
        wait_state(r, "hot", 0, "90 °C");
        {
                json_object *st = call(r, STATUS),
                            *p = json_object_object_get(reply_parameters(st), "power");
                ck_assert_str_eq(json_str(p, "sensor", "power"), "x86_pkg_temp");
                ck_assert_msg(json_object_get_double(json_object_object_get(p, "temperatureCelsius")) ==
                                      90.0,
                              "%s", json_object_to_json_string(p));
                json_object_put(st);
        }
        ck_assert_int_eq(raw_send_msg(w, REQUEST "\"estimate\":100,\"priority\":\"background\","
                                                 "\"waitUsec\":20000000}}"),
                         0);
        reply = harness_reply_within(w, 1500);
        ck_assert_msg(!reply, "answered while hot: %s", json_object_to_json_string(reply));
        write_in_place(zone, "temp", "82000"); /* between release and threshold: still hot */
        reply = harness_reply_within(w, 1500);
        ck_assert_msg(!reply, "answered at 82 °C: %s", json_object_to_json_string(reply));
        write_in_place(zone, "temp", "79000");
        reply = harness_reply_within(w, 3000);
        ck_assert_msg(reply, "the waiter was not served within 3 s of cooling to 79 °C");
        assert_granted(reply, 100, "ac", 1.0);
        ck_assert_int_gt(json_int(reply_parameters(reply), "waitedUsec", "waiter"), 2000000);
        json_object_put(reply);
        raw_close(w);
        raw_close(r);
        harness_daemon_stop(d);
        free(zone);
        free(acpi);
        testbed_free();
}
END_TEST

/* A discharging mouse battery (scope=Device) is no reason to save power,
 * and a machine with no supplies at all is on AC. */
START_TEST(test_device_scope_and_none) {
        TestDaemon *d;
        RawConn *r;
        char *mouse;

        if (!testbed_new())
                return;
        d = start(NO_POLLS);
        r = harness_open_working(d, "none");
        wait_state(r, "ac", 0, "no supplies");
        expect_grant(r, "background", 1000, 1000, "ac", 1.0);
        raw_close(r);
        harness_daemon_stop(d);

        mouse = umockdev_testbed_add_device(tb, "power_supply", "hidpp_battery_0", NULL, "type", "Battery",
                                            "scope", "Device", "present", "1", "status", "Discharging",
                                            "capacity", "5", NULL, NULL);
        d = start(NO_POLLS);
        r = harness_open_working(d, "mouse");
        wait_state(r, "ac", 0, "a mouse battery at 5%");
        umockdev_testbed_set_attribute(tb, mouse, "capacity", "4");
        umockdev_testbed_uevent(tb, mouse, "change");
        assert_state_stays(r, "ac", 300, "the mouse battery at 4%");
        expect_grant(r, "background", 1000, 1000, "ac", 1.0);
        raw_close(r);
        harness_daemon_stop(d);
        free(mouse);
        testbed_free();
}
END_TEST

/* No uevents (a machine without udevd): the safety poll sees the battery. */
START_TEST(test_safety_poll) {
        TestDaemon *d;
        RawConn *r;
        char *bat;

        if (!testbed_new())
                return;
        bat = umockdev_testbed_add_device(tb, "power_supply", "BAT0", NULL, "type", "Battery", "scope",
                                          "System", "present", "1", "status", "Discharging", "capacity",
                                          "50", NULL, NULL);
        d = start("poll_sec = 3600; battery_poll_sec = 1;");
        r = harness_open_working(d, "poll");
        wait_state(r, "battery", 0, "discharging at 50%");
        umockdev_testbed_set_attribute(tb, bat, "capacity", "10");
        wait_state(r, "low-battery", 2500, "10% with no uevent");
        raw_close(r);
        harness_daemon_stop(d);
        free(bat);
        testbed_free();
}
END_TEST

int main(void) {
        Suite *s = suite_create("power-daemon");
        TCase *tc = harness_tcase("power-daemon", 60);

        tcase_add_test(tc, test_ac_unplug);
        tcase_add_test(tc, test_low_battery_hysteresis);
        tcase_add_test(tc, test_hot_pauses_then_serves);
        tcase_add_test(tc, test_device_scope_and_none);
        tcase_add_test(tc, test_safety_poll);
        suite_add_tcase(s, tc);
        return harness_main(s);
}
