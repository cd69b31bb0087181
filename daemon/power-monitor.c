/* SPDX-License-Identifier: MIT */
/*
 * Power sensing (power-monitor.h). Power supplies come from sd-device: an
 * enumeration at start, then an sd_device_monitor for "power_supply" whose
 * sd-event loop is one read event in libevent (the sd-event fd, drained with
 * sd_event_run(e, 0)); on any uevent the supply it names is re-read (or
 * dropped) and so are the others, because the kernel sends the battery's
 * uevent some time after the AC adapter's (upower re-reads them all too).
 * sd-device caches attribute values per object, so every re-read uses a
 * fresh sd_device. A libevent timer re-enumerates the supplies every
 * battery_poll_usec while a battery charges or discharges, for machines
 * without udevd, whose monitor receives nothing; on AC with full batteries,
 * or with none, there is no timer at all.
 *
 * Temperatures (thermal zones, hwmon) and memory pressure (PSI) send no
 * events: the chosen sensors' files are opened once and read with pread(2)
 * at offset 0 by a second timer, only while the caller turns polling on and
 * only if there is anything to read. Everything read from sysfs is parsed
 * strictly and bounded: an odd file is "no sample", never a crash, and at
 * most SUPPLIES_MAX supplies and SENSORS_MAX sensors are tracked. What the
 * readings mean (states, hysteresis) is core/power.c's business.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <systemd/sd-device.h>
#include <systemd/sd-event.h>

#include "log.h"
#include "macro.h"
#include "power-monitor.h"
#include "time-util.h"

/* A laptop has two or three supplies (AC, one or two batteries, USB-C
 * ports); a desktop with a UPS a few more. Anything past this is ignored. */
#define SUPPLIES_MAX 64
/* A big server has a package sensor per socket and a few dozen hwmon inputs
 * (DIMMs, NVMe, VRMs); past this are ignored (only matches count). */
#define SENSORS_MAX 64
/* Energy in µWh and charge in µAh: a laptop battery is about 5e7 µWh. Values
 * above 1e12 (a megawatt-hour) are nonsense and read as missing, which keeps
 * SUPPLIES_MAX x 1e12 x 1000 well inside int64_t. */
#define SUPPLY_VALUE_MAX INT64_C(1000000000000)
/* Millidegrees Celsius a sensor may plausibly report; outside: no sample. */
#define TEMP_MIN_MC (-273150)
#define TEMP_MAX_MC 1000000
/* pread buffers: a temperature is at most 8 characters, a thermal zone's mode
 * "disabled\n", PSI's first line about 50 ("some avg10=100.00 avg60=...
 * total=18446744073709551615"). */
#define SMALL_READ_MAX 32
#define PSI_READ_MAX   256
/* Used when a setting is 0 (the config never passes 0): the config defaults. */
#define POLL_USEC_DEFAULT         (5 * USEC_PER_SEC)
#define BATTERY_POLL_USEC_DEFAULT (30 * USEC_PER_SEC)

typedef enum SupplyStatus {
        SUPPLY_STATUS_UNKNOWN,
        SUPPLY_STATUS_CHARGING,
        SUPPLY_STATUS_DISCHARGING,
        SUPPLY_STATUS_NOT_CHARGING,
        SUPPLY_STATUS_FULL,
} SupplyStatus;

typedef struct Supply {
        char *syspath;
        bool battery; /* type "Battery"; anything else (Mains, USB, UPS) is a source */
        bool online;  /* a source: "online" is not 0 */
        bool present; /* a battery: "present" is not 0 (missing: present) */
        SupplyStatus status;
        int64_t capacity;                /* percent, or -1 */
        int64_t energy_now, energy_full; /* µWh, or -1 */
        int64_t charge_now, charge_full; /* µAh, or -1 */
} Supply;

typedef struct Sensor {
        int temp_fd;
        int mode_fd;  /* a thermal zone's "mode", or -1 */
        bool package; /* a CPU package sensor (the default choice before acpitz) */
        char name[sizeof(((PowerReadings *)NULL)->sensor)];
} Sensor;

struct PowerMonitor {
        struct event_base *base;
        PowerMonitorFunc changed;
        void *userdata;
        uint64_t poll_usec, battery_poll_usec;

        sd_event *sd_event;
        sd_device_monitor *device_monitor;
        struct event *sd_event_event;
        bool uevents_dirty; /* a uevent changed supplies: notify after the drain */

        Supply supplies[SUPPLIES_MAX];
        size_t n_supplies;
        bool supplies_capped; /* the "too many" line was logged */
        struct event *battery_timer;
        bool battery_polling;

        Sensor sensors[SENSORS_MAX];
        size_t n_sensors;
        int pressure_fd;
        struct event *poll_timer;
        bool polling;
        uint64_t sampled_usec; /* when temperatures and pressure were last read */
        int32_t temperature_mc, pressure_cp;
        char sensor[sizeof(((PowerReadings *)NULL)->sensor)];

        uint64_t n_wakeups;
        bool ready; /* power_monitor_new() is done: changes call back */
        PowerReadings readings;
};

static void power_monitor_freep(PowerMonitor **m) {
        power_monitor_free(*m);
}

static struct timeval timeval_from_usec(uint64_t usec) {
        return (struct timeval){.tv_sec = (time_t)(usec / USEC_PER_SEC),
                                .tv_usec = (suseconds_t)(usec % USEC_PER_SEC)};
}

/* ---- strict parsing of what sysfs and procfs say ---- */

/* A decimal integer in [min, max], optionally followed by one newline. */
static int parse_int64(const char *s, int64_t min, int64_t max, int64_t *ret) {
        bool negative = false;
        int64_t v = 0;
        const char *p = s;

        if (!s)
                return -EINVAL;
        if (*p == '-') {
                negative = true;
                p++;
        }
        if (*p < '0' || *p > '9')
                return -EINVAL;
        for (; *p >= '0' && *p <= '9'; p++) {
                if (v > (INT64_MAX - (*p - '0')) / 10)
                        return -ERANGE;
                v = v * 10 + (*p - '0');
        }
        if (*p == '\n')
                p++;
        if (*p != '\0')
                return -EINVAL;
        if (negative)
                v = -v;
        if (v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

/* pread(fd, ..., 0) into buf as a string; -errno, or -EFBIG when the file
 * fills buf (longer than anything valid), -ENODATA when empty. */
static int read_fd_string(int fd, char *buf, size_t size) {
        ssize_t n;

        assert(size > 1);
        do
                n = pread(fd, buf, size - 1, 0);
        while (n < 0 && errno == EINTR);
        if (n < 0)
                return -errno;
        if (n == 0)
                return -ENODATA;
        if ((size_t)n >= size - 1)
                return -EFBIG;
        buf[n] = '\0';
        return 0;
}

/* PSI's first line, "some avg10=X.YZ avg60=...": X.YZ (0.00..100.00, as the
 * kernel prints it, "%lu.%02lu") in hundredths of a percent, or -EINVAL. */
static int parse_psi_some_avg10(const char *buf, int32_t *ret) {
        static const char prefix[] = "some avg10=";
        const char *p = buf;
        int32_t whole = 0;
        int digits = 0;

        if (strncmp(p, prefix, sizeof(prefix) - 1) != 0)
                return -EINVAL;
        p += sizeof(prefix) - 1;
        for (; *p >= '0' && *p <= '9'; p++) {
                if (++digits > 3)
                        return -EINVAL;
                whole = whole * 10 + (*p - '0');
        }
        if (digits == 0 || p[0] != '.' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9')
                return -EINVAL;
        if (p[3] != ' ' && p[3] != '\n' && p[3] != '\0')
                return -EINVAL;
        whole = whole * 100 + (p[1] - '0') * 10 + (p[2] - '0');
        if (whole > 10000)
                return -EINVAL;
        *ret = whole;
        return 0;
}

/* ---- power supplies ---- */

static int64_t sysattr_int(sd_device *d, const char *name, int64_t max) {
        const char *v;
        int64_t x;

        if (sd_device_get_sysattr_value(d, name, &v) < 0 || parse_int64(v, 0, max, &x) < 0)
                return -1;
        return x;
}

static bool sysattr_is(sd_device *d, const char *name, const char *value) {
        const char *v;

        return sd_device_get_sysattr_value(d, name, &v) >= 0 && strcmp(v, value) == 0;
}

static SupplyStatus supply_status_from_string(const char *s) {
        static const char *const names[] = {
                [SUPPLY_STATUS_CHARGING] = "Charging",
                [SUPPLY_STATUS_DISCHARGING] = "Discharging",
                [SUPPLY_STATUS_NOT_CHARGING] = "Not charging",
                [SUPPLY_STATUS_FULL] = "Full",
        };

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (s && names[i] && strcmp(s, names[i]) == 0)
                        return (SupplyStatus)i;
        return SUPPLY_STATUS_UNKNOWN;
}

/* Reads d into *s (syspath not set): 1 for a system supply, 0 for one to
 * ignore (scope "Device": a mouse, a keyboard, a headset). */
static int supply_read(sd_device *d, Supply *s) {
        const char *v;

        if (sysattr_is(d, "scope", "Device"))
                return 0;
        *s = (Supply){
                .battery = sysattr_is(d, "type", "Battery"),
                .present = true,
                .capacity = sysattr_int(d, "capacity", 1000),
                .energy_now = sysattr_int(d, "energy_now", SUPPLY_VALUE_MAX),
                .energy_full = sysattr_int(d, "energy_full", SUPPLY_VALUE_MAX),
                .charge_now = sysattr_int(d, "charge_now", SUPPLY_VALUE_MAX),
                .charge_full = sysattr_int(d, "charge_full", SUPPLY_VALUE_MAX),
        };
        s->online = sysattr_int(d, "online", INT64_MAX) > 0;
        if (sd_device_get_sysattr_value(d, "present", &v) >= 0)
                s->present = sysattr_int(d, "present", INT64_MAX) != 0;
        if (sd_device_get_sysattr_value(d, "status", &v) >= 0)
                s->status = supply_status_from_string(v);
        return 1;
}

static ssize_t supply_find(const PowerMonitor *m, const char *syspath) {
        for (size_t i = 0; i < m->n_supplies; i++)
                if (strcmp(m->supplies[i].syspath, syspath) == 0)
                        return (ssize_t)i;
        return -1;
}

static void supply_drop(PowerMonitor *m, size_t i) {
        assert(i < m->n_supplies);
        free(m->supplies[i].syspath);
        m->supplies[i] = m->supplies[--m->n_supplies];
        m->supplies[m->n_supplies] = (Supply){};
}

static void supplies_clear(PowerMonitor *m) {
        while (m->n_supplies > 0)
                supply_drop(m, m->n_supplies - 1);
}

static void supplies_log_capped(PowerMonitor *m) {
        if (m->supplies_capped)
                return;
        m->supplies_capped = true;
        log_warning("power: more than %d power supplies; ignoring the rest", SUPPLIES_MAX);
}

/* Reads d and puts it in the list (or takes it out: ignored, or unreadable). */
static void supply_update(PowerMonitor *m, sd_device *d, const char *syspath) {
        ssize_t i = supply_find(m, syspath);
        Supply s;
        char *copy;

        if (supply_read(d, &s) <= 0) {
                if (i >= 0)
                        supply_drop(m, (size_t)i);
                return;
        }
        if (i >= 0) {
                s.syspath = m->supplies[i].syspath;
                m->supplies[i] = s;
                return;
        }
        if (m->n_supplies >= SUPPLIES_MAX) {
                supplies_log_capped(m);
                return;
        }
        copy = strdup(syspath);
        if (!copy) {
                log_warning("power: out of memory reading power supply %s", syspath);
                return;
        }
        s.syspath = copy;
        m->supplies[m->n_supplies++] = s;
}

/* Re-reads every known supply but skip (NULL: all), each through a fresh
 * sd_device (an old one would answer from its cache); gone ones are dropped.
 * Backwards: supply_drop() moves the last entry into the hole. */
static void supplies_reread(PowerMonitor *m, const char *skip) {
        for (size_t i = m->n_supplies; i-- > 0;) {
                _cleanup_(sd_device_unrefp) sd_device *d = NULL;

                if (skip && strcmp(m->supplies[i].syspath, skip) == 0)
                        continue;
                if (sd_device_new_from_syspath(&d, m->supplies[i].syspath) < 0)
                        supply_drop(m, i);
                else
                        supply_update(m, d, m->supplies[i].syspath);
        }
}

/* Enumerates the power_supply subsystem afresh: new supplies are added, gone
 * ones dropped. If the enumerator cannot be made, the list stays as it was. */
static int supplies_scan(PowerMonitor *m) {
        _cleanup_(sd_device_enumerator_unrefp) sd_device_enumerator *e = NULL;
        int r;

        r = sd_device_enumerator_new(&e);
        if (r < 0)
                return r;
        r = sd_device_enumerator_add_match_subsystem(e, "power_supply", true);
        if (r < 0)
                return r;
        supplies_clear(m);
        for (sd_device *d = sd_device_enumerator_get_device_first(e); d;
             d = sd_device_enumerator_get_device_next(e)) {
                _cleanup_(sd_device_unrefp) sd_device *fresh = NULL;
                const char *syspath;

                if (sd_device_get_syspath(d, &syspath) < 0)
                        continue;
                /* The enumerator's objects may have read attributes while
                 * matching: read through a fresh one. */
                if (sd_device_new_from_syspath(&fresh, syspath) < 0)
                        continue;
                supply_update(m, fresh, syspath);
        }
        return 0;
}

/* The "on AC" rule (TESTING.md): any source online: AC; else a discharging
 * system battery: battery; else AC (nothing at all is AC too). */
static bool supplies_on_ac(const PowerMonitor *m) {
        bool discharging = false;

        for (size_t i = 0; i < m->n_supplies; i++) {
                const Supply *s = &m->supplies[i];

                if (!s->battery && s->online)
                        return true;
                if (s->battery && s->present && s->status == SUPPLY_STATUS_DISCHARGING)
                        discharging = true;
        }
        return !discharging;
}

/* The charge of the present system batteries, permille: energy (or charge)
 * now over full, summed, when every battery has them; else the mean of their
 * capacity; POWER_UNKNOWN with none. */
static int32_t supplies_charge(const PowerMonitor *m) {
        int64_t energy_now = 0, energy_full = 0, charge_now = 0, charge_full = 0, capacity = 0;
        bool all_energy = true, all_charge = true;
        size_t n = 0, n_capacity = 0;
        int64_t permille;

        for (size_t i = 0; i < m->n_supplies; i++) {
                const Supply *s = &m->supplies[i];

                if (!s->battery || !s->present)
                        continue;
                n++;
                if (s->energy_now >= 0 && s->energy_full > 0) {
                        energy_now += s->energy_now;
                        energy_full += s->energy_full;
                } else
                        all_energy = false;
                if (s->charge_now >= 0 && s->charge_full > 0) {
                        charge_now += s->charge_now;
                        charge_full += s->charge_full;
                } else
                        all_charge = false;
                if (s->capacity >= 0) {
                        capacity += s->capacity;
                        n_capacity++;
                }
        }
        if (n == 0)
                return POWER_UNKNOWN;
        if (all_energy)
                permille = energy_now * 1000 / energy_full;
        else if (all_charge)
                permille = charge_now * 1000 / charge_full;
        else if (n_capacity > 0)
                permille = capacity * 10 / (int64_t)n_capacity;
        else
                return POWER_UNKNOWN;
        return (int32_t)(permille < 0 ? 0 : permille > 1000 ? 1000 : permille);
}

/* Whether a battery's charge moves (charging or discharging): then the
 * safety poll runs, as upower's (which polls those every 30 s). */
static bool supplies_changing(const PowerMonitor *m) {
        for (size_t i = 0; i < m->n_supplies; i++) {
                const Supply *s = &m->supplies[i];

                if (s->battery && s->present &&
                    (s->status == SUPPLY_STATUS_CHARGING || s->status == SUPPLY_STATUS_DISCHARGING))
                        return true;
        }
        return false;
}

static void battery_poll_update(PowerMonitor *m) {
        bool want = supplies_changing(m);

        if (want == m->battery_polling)
                return;
        if (want) {
                struct timeval tv = timeval_from_usec(m->battery_poll_usec);

                if (event_add(m->battery_timer, &tv) < 0) {
                        log_warning("power: cannot arm the battery poll timer");
                        return;
                }
        } else
                event_del(m->battery_timer);
        m->battery_polling = want;
}

/* ---- temperatures and pressure ---- */

static void sensor_close(Sensor *s) {
        if (s->temp_fd >= 0)
                close(s->temp_fd);
        if (s->mode_fd >= 0)
                close(s->mode_fd);
        *s = (Sensor){.temp_fd = -1, .mode_fd = -1};
}

typedef struct SensorScan {
        const char *glob; /* NULL: the default choice */
        bool capped;      /* the "too many" line was logged */
} SensorScan;

/* Opens syspath/temp_attr (and syspath/mode_attr) as a sensor named name. */
static void sensor_add(PowerMonitor *m, SensorScan *scan, const char *syspath, const char *temp_attr,
                       const char *mode_attr, const char *name, bool package) {
        char path[4096];
        Sensor s = {.temp_fd = -1, .mode_fd = -1, .package = package};

        if (m->n_sensors >= SENSORS_MAX) {
                if (!scan->capped)
                        log_warning("power: more than %d temperature sensors match; ignoring the rest",
                                    SENSORS_MAX);
                scan->capped = true;
                return;
        }
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", syspath, temp_attr) >= sizeof(path))
                return;
        s.temp_fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (s.temp_fd < 0) {
                log_debug("power: cannot open %s: %m", path);
                return;
        }
        if (mode_attr && (size_t)snprintf(path, sizeof(path), "%s/%s", syspath, mode_attr) < sizeof(path))
                s.mode_fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        snprintf(s.name, sizeof(s.name), "%s", name);
        log_debug("power: temperature sensor %s (%s/%s)", s.name, syspath, temp_attr);
        m->sensors[m->n_sensors++] = s;
}

static bool glob_match(const char *glob, const char *s) {
        return s && fnmatch(glob, s, 0) == 0;
}

static void sensors_add_zone(PowerMonitor *m, SensorScan *scan, sd_device *d) {
        const char *syspath, *type;
        bool package = false;

        if (sd_device_get_syspath(d, &syspath) < 0 || sd_device_get_sysattr_value(d, "type", &type) < 0)
                return;
        if (scan->glob) {
                if (!glob_match(scan->glob, type))
                        return;
        } else if (strcmp(type, "x86_pkg_temp") == 0)
                package = true;
        else if (strcmp(type, "acpitz") != 0)
                return;
        sensor_add(m, scan, syspath, "temp", "mode", type, package);
}

/* Whether attr is "temp<N>_input" (N decimal); then label_attr is "temp<N>_label". */
static bool hwmon_temp_input(const char *attr, char *label_attr, size_t size) {
        size_t digits;

        if (strncmp(attr, "temp", 4) != 0)
                return false;
        digits = strspn(attr + 4, "0123456789");
        if (digits == 0 || strcmp(attr + 4 + digits, "_input") != 0)
                return false;
        return (size_t)snprintf(label_attr, size, "temp%.*s_label", (int)digits, attr + 4) < size;
}

static bool hwmon_is_package(const char *name, const char *label) {
        if (!label)
                return false;
        return (strcmp(name, "coretemp") == 0 && fnmatch("Package id *", label, 0) == 0) ||
               (strcmp(name, "k10temp") == 0 && strcmp(label, "Tctl") == 0);
}

static void sensors_add_hwmon(PowerMonitor *m, SensorScan *scan, sd_device *d) {
        const char *syspath, *hwname;

        if (sd_device_get_syspath(d, &syspath) < 0)
                return;
        if (sd_device_get_sysattr_value(d, "name", &hwname) < 0 && sd_device_get_sysname(d, &hwname) < 0)
                return;
        for (const char *attr = sd_device_get_sysattr_first(d); attr; attr = sd_device_get_sysattr_next(d)) {
                char label_attr[64], full[sizeof(((Sensor *)NULL)->name)];
                const char *label = NULL;
                bool package = false;

                if (!hwmon_temp_input(attr, label_attr, sizeof(label_attr)))
                        continue;
                if (sd_device_get_sysattr_value(d, label_attr, &label) < 0 || label[0] == '\0')
                        label = NULL;
                if (label)
                        snprintf(full, sizeof(full), "%s/%s", hwname, label);
                else
                        snprintf(full, sizeof(full), "%s", hwname);
                if (scan->glob) {
                        if (!glob_match(scan->glob, hwname) && !glob_match(scan->glob, label) &&
                            !glob_match(scan->glob, full))
                                continue;
                } else if (hwmon_is_package(hwname, label))
                        package = true;
                else
                        continue;
                sensor_add(m, scan, syspath, attr, NULL, full, package);
        }
}

static int sensors_enumerate(PowerMonitor *m, SensorScan *scan, const char *subsystem, const char *sysname,
                             void (*add)(PowerMonitor *, SensorScan *, sd_device *)) {
        _cleanup_(sd_device_enumerator_unrefp) sd_device_enumerator *e = NULL;
        int r;

        r = sd_device_enumerator_new(&e);
        if (r < 0)
                return r;
        r = sd_device_enumerator_add_match_subsystem(e, subsystem, true);
        if (r >= 0 && sysname)
                r = sd_device_enumerator_add_match_sysname(e, sysname);
        if (r < 0)
                return r;
        for (sd_device *d = sd_device_enumerator_get_device_first(e); d;
             d = sd_device_enumerator_get_device_next(e))
                add(m, scan, d);
        return 0;
}

/* The sensors settings.sensor chooses: a glob, or (NULL, "") the CPU package
 * sensors, else the acpitz zones. */
static void sensors_find(PowerMonitor *m, const char *glob) {
        SensorScan scan = {.glob = glob && glob[0] ? glob : NULL};
        bool any_package = false;
        size_t j = 0;
        int r;

        r = sensors_enumerate(m, &scan, "thermal", "thermal_zone*", sensors_add_zone);
        if (r < 0)
                log_warning("power: cannot enumerate thermal zones: %s", strerror(-r));
        r = sensors_enumerate(m, &scan, "hwmon", NULL, sensors_add_hwmon);
        if (r < 0)
                log_warning("power: cannot enumerate hwmon sensors: %s", strerror(-r));
        if (scan.glob)
                return;
        for (size_t i = 0; i < m->n_sensors; i++)
                any_package = any_package || m->sensors[i].package;
        if (!any_package)
                return;
        /* Package sensors found: the acpitz zones were only the fallback. */
        for (size_t i = 0; i < m->n_sensors; i++) {
                if (m->sensors[i].package)
                        m->sensors[j++] = m->sensors[i];
                else
                        sensor_close(&m->sensors[i]);
        }
        for (size_t i = j; i < m->n_sensors; i++)
                m->sensors[i] = (Sensor){.temp_fd = -1, .mode_fd = -1};
        m->n_sensors = j;
}

/* One sensor's sample in millidegrees, or POWER_UNKNOWN: a disabled zone, a
 * read error, anything but a plausible number. */
static int32_t sensor_sample(const Sensor *s) {
        char buf[SMALL_READ_MAX];
        int64_t v;

        if (s->mode_fd >= 0 && read_fd_string(s->mode_fd, buf, sizeof(buf)) >= 0 &&
            strncmp(buf, "disabled", 8) == 0)
                return POWER_UNKNOWN;
        if (read_fd_string(s->temp_fd, buf, sizeof(buf)) < 0 ||
            parse_int64(buf, TEMP_MIN_MC, TEMP_MAX_MC, &v) < 0)
                return POWER_UNKNOWN;
        return (int32_t)v;
}

static bool has_samples(const PowerMonitor *m) {
        return m->n_sensors > 0 || m->pressure_fd >= 0;
}

/* Reads every sensor (the hottest sample wins) and the pressure. */
static void samples_read(PowerMonitor *m, uint64_t now) {
        char buf[PSI_READ_MAX];
        int32_t cp;

        m->temperature_mc = POWER_UNKNOWN;
        m->sensor[0] = '\0';
        for (size_t i = 0; i < m->n_sensors; i++) {
                int32_t t = sensor_sample(&m->sensors[i]);

                if (t == POWER_UNKNOWN || (m->temperature_mc != POWER_UNKNOWN && t <= m->temperature_mc))
                        continue;
                m->temperature_mc = t;
                memcpy(m->sensor, m->sensors[i].name, sizeof(m->sensor));
        }
        m->pressure_cp = POWER_UNKNOWN;
        if (m->pressure_fd >= 0 && read_fd_string(m->pressure_fd, buf, sizeof(buf)) >= 0 &&
            parse_psi_some_avg10(buf, &cp) >= 0)
                m->pressure_cp = cp;
        m->sampled_usec = now;
}

/* ---- readings and callbacks ---- */

/* Recomputes the readings; calls back when they changed (not before
 * power_monitor_new() returned). Every entry point calls this last, so a
 * callback may free the monitor. */
static void readings_update(PowerMonitor *m) {
        PowerReadings r;

        power_readings_init(&r);
        r.on_ac = supplies_on_ac(m);
        r.battery_permille = supplies_charge(m);
        r.temperature_mc = m->temperature_mc;
        r.pressure_cp = m->pressure_cp;
        memcpy(r.sensor, m->sensor, sizeof(r.sensor));
        if (power_readings_equal(&r, &m->readings))
                return;
        m->readings = r;
        if (m->ready && m->changed)
                m->changed(m->userdata, &m->readings);
}

static void poll_timer_cb(evutil_socket_t fd, short what, void *userdata) {
        PowerMonitor *m = userdata;

        m->n_wakeups++;
        samples_read(m, now_usec());
        /* Polling was turned off since the last round: this was the last
         * (turning it off does not touch the timer, so a daemon going busy
         * and idle at every request does not re-arm it each time). */
        if (!m->polling)
                event_del(m->poll_timer);
        readings_update(m);
}

static void battery_timer_cb(evutil_socket_t fd, short what, void *userdata) {
        PowerMonitor *m = userdata;
        int r;

        m->n_wakeups++;
        r = supplies_scan(m);
        if (r < 0)
                log_warning("power: cannot enumerate power supplies: %s", strerror(-r));
        battery_poll_update(m);
        readings_update(m);
}

static int device_monitor_cb(sd_device_monitor *monitor, sd_device *d, void *userdata) {
        PowerMonitor *m = userdata;
        sd_device_action_t action;
        const char *syspath;
        ssize_t i;

        if (sd_device_get_syspath(d, &syspath) < 0 || sd_device_get_action(d, &action) < 0)
                return 0;
        if (action == SD_DEVICE_REMOVE) {
                i = supply_find(m, syspath);
                if (i >= 0)
                        supply_drop(m, (size_t)i);
        } else
                /* d was made from the uevent: nothing of sysfs cached yet. */
                supply_update(m, d, syspath);
        supplies_reread(m, syspath);
        m->uevents_dirty = true;
        return 0;
}

static void sd_event_drain(PowerMonitor *m) {
        int r;

        while ((r = sd_event_run(m->sd_event, 0)) > 0)
                ;
        if (r < 0) {
                /* A broken sd-event loop would keep its fd readable and spin
                 * libevent: give up on uevents, the safety poll remains. */
                log_warning("power: the uevent loop failed (%s); batteries are read by the safety poll only",
                            strerror(-r));
                event_del(m->sd_event_event);
                m->device_monitor = sd_device_monitor_unref(m->device_monitor);
        }
}

static void sd_event_fd_cb(evutil_socket_t fd, short what, void *userdata) {
        PowerMonitor *m = userdata;

        sd_event_drain(m);
        if (!m->uevents_dirty)
                return;
        m->uevents_dirty = false;
        battery_poll_update(m);
        readings_update(m);
}

/* The uevent monitor, embedded in libevent. -errno when there is none
 * (logged by the caller); -ENOMEM from libevent is fatal. */
static int device_monitor_start(PowerMonitor *m) {
        _cleanup_(sd_device_monitor_unrefp) sd_device_monitor *monitor = NULL;
        int r;

        r = sd_device_monitor_new(&monitor);
        if (r < 0)
                return r;
        r = sd_device_monitor_filter_add_match_subsystem_devtype(monitor, "power_supply", NULL);
        if (r < 0)
                return r;
        r = sd_device_monitor_attach_event(monitor, m->sd_event);
        if (r < 0)
                return r;
        r = sd_device_monitor_start(monitor, device_monitor_cb, m);
        if (r < 0)
                return r;
        m->sd_event_event =
                event_new(m->base, sd_event_get_fd(m->sd_event), EV_READ | EV_PERSIST, sd_event_fd_cb, m);
        if (!m->sd_event_event || event_add(m->sd_event_event, NULL) < 0)
                return -ENOMEM;
        m->device_monitor = TAKE_PTR(monitor);
        /* Sources added: sd-event may have work before its fd becomes readable. */
        sd_event_drain(m);
        return 0;
}

static uint64_t usec_or(uint64_t usec, uint64_t fallback) {
        return usec > 0 ? usec : fallback;
}

static void pressure_open(PowerMonitor *m, const char *path) {
        if (!path || !path[0])
                return;
        m->pressure_fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (m->pressure_fd < 0)
                log_debug("power: no memory pressure from %s: %m", path);
}

int power_monitor_new(struct event_base *base, const PowerMonitorSettings *s, PowerMonitorFunc changed,
                      void *userdata, PowerMonitor **ret) {
        _cleanup_(power_monitor_freep) PowerMonitor *m = NULL;
        int r;

        assert(base);
        assert(s);
        assert(ret);

        m = calloc(1, sizeof(*m));
        if (!m)
                return -ENOMEM;
        *m = (PowerMonitor){
                .base = base,
                .changed = changed,
                .userdata = userdata,
                .poll_usec = usec_or(s->poll_usec, POLL_USEC_DEFAULT),
                .battery_poll_usec = usec_or(s->battery_poll_usec, BATTERY_POLL_USEC_DEFAULT),
                .pressure_fd = -1,
                .temperature_mc = POWER_UNKNOWN,
                .pressure_cp = POWER_UNKNOWN,
        };
        for (size_t i = 0; i < SENSORS_MAX; i++)
                m->sensors[i] = (Sensor){.temp_fd = -1, .mode_fd = -1};
        power_readings_init(&m->readings);

        m->battery_timer = event_new(base, -1, EV_PERSIST, battery_timer_cb, m);
        m->poll_timer = event_new(base, -1, EV_PERSIST, poll_timer_cb, m);
        if (!m->battery_timer || !m->poll_timer)
                return -ENOMEM;
        r = sd_event_new(&m->sd_event);
        if (r < 0)
                return r;
        r = device_monitor_start(m);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                log_notice("power: no uevent monitor for power supplies (%s); batteries are read by the "
                           "safety poll only",
                           strerror(-r));

        /* After the monitor started: a change from now on is a uevent. */
        r = supplies_scan(m);
        if (r < 0)
                log_warning("power: cannot enumerate power supplies: %s", strerror(-r));
        sensors_find(m, s->sensor);
        pressure_open(m, s->pressure_file);
        samples_read(m, now_usec());
        battery_poll_update(m);
        readings_update(m);
        m->ready = true;
        *ret = TAKE_PTR(m);
        return 0;
}

PowerMonitor *power_monitor_free(PowerMonitor *m) {
        if (!m)
                return NULL;
        if (m->sd_event_event)
                event_free(m->sd_event_event);
        if (m->battery_timer)
                event_free(m->battery_timer);
        if (m->poll_timer)
                event_free(m->poll_timer);
        sd_device_monitor_unref(m->device_monitor);
        sd_event_unref(m->sd_event);
        supplies_clear(m);
        for (size_t i = 0; i < m->n_sensors; i++)
                sensor_close(&m->sensors[i]);
        if (m->pressure_fd >= 0)
                close(m->pressure_fd);
        free(m);
        return NULL;
}

void power_monitor_set_polling(PowerMonitor *m, bool on, uint64_t now_usec_) {
        struct timeval tv;

        assert(m);
        /* Off: the timer runs out at its next round (poll_timer_cb()). */
        if (!on) {
                m->polling = false;
                return;
        }
        if (m->polling || !has_samples(m))
                return;
        m->polling = true;
        if (!evtimer_pending(m->poll_timer, NULL)) {
                tv = timeval_from_usec(m->poll_usec);
                if (event_add(m->poll_timer, &tv) < 0) {
                        log_warning("power: cannot arm the temperature poll timer");
                        m->polling = false;
                        return;
                }
        }
        power_monitor_refresh(m, now_usec_);
}

void power_monitor_refresh(PowerMonitor *m, uint64_t now_usec_) {
        assert(m);
        if (!has_samples(m) || now_usec_ < m->sampled_usec + m->poll_usec)
                return;
        samples_read(m, now_usec_);
        readings_update(m);
}

const PowerReadings *power_monitor_readings(const PowerMonitor *m) {
        assert(m);
        return &m->readings;
}

size_t power_monitor_n_supplies(const PowerMonitor *m) {
        assert(m);
        return m->n_supplies;
}

size_t power_monitor_n_sensors(const PowerMonitor *m) {
        assert(m);
        return m->n_sensors;
}

bool power_monitor_has_uevents(const PowerMonitor *m) {
        assert(m);
        return m->device_monitor != NULL;
}

uint64_t power_monitor_n_wakeups(const PowerMonitor *m) {
        assert(m);
        return m->n_wakeups;
}
