/* SPDX-License-Identifier: MIT */
/*
 * Power sensing (issue 11), the shell part: power supplies through sd-device
 * (an enumeration at start, then a uevent monitor embedded in the libevent
 * loop, plus a slow safety poll of the batteries while one charges or
 * discharges, for machines without udevd), temperatures from thermal zones
 * and hwmon and memory pressure from PSI, read with pread(2) on kept-open
 * files, polled only while the caller says it is busy or near a threshold.
 * It turns sysfs into PowerReadings (core/power.h) and calls back when they
 * change; what they mean is the core's business.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>

#include "power.h"

typedef struct PowerMonitor PowerMonitor;

/* The readings changed (any field). r is the monitor's: valid until the next call into it. */
typedef void (*PowerMonitorFunc)(void *userdata, const PowerReadings *r);

typedef struct PowerMonitorSettings {
        const char *sensor;         /* PowerConfig.sensor: NULL or "" for the default choice */
        const char *pressure_file;  /* NULL or "": no memory pressure */
        uint64_t poll_usec;         /* temperatures and pressure, while polling is on */
        uint64_t battery_poll_usec; /* batteries, while one is charging or discharging */
} PowerMonitorSettings;

/*
 * Enumerates supplies and sensors and reads everything once (the first
 * readings are there when this returns; no callback for them). Nothing found
 * is no error: readings stay "on AC, unknown". A monitor that cannot be made
 * (no netlink socket: sandboxed) is no error either: logged once, supplies
 * are then read by the safety poll only. Returns 0 or -ENOMEM (-errno of
 * libevent or sd-event setup).
 */
int power_monitor_new(struct event_base *base, const PowerMonitorSettings *s, PowerMonitorFunc changed,
                      void *userdata, PowerMonitor **ret);
PowerMonitor *power_monitor_free(PowerMonitor *m); /* NULL-safe; returns NULL */

/* Polls temperatures and pressure every poll_usec while on (reading them at
 * once when turning on and the last reading is older than poll_usec); after
 * turning off, one last round when the timer is due, then not at all (so
 * going busy and idle at every request costs no timer changes). Cheap when
 * unchanged: call it as often as you like. */
void power_monitor_set_polling(PowerMonitor *m, bool on, uint64_t now_usec);
/* Reads temperatures and pressure now if the last reading is older than
 * poll_usec (before a Request after an idle spell); calls back on a change. */
void power_monitor_refresh(PowerMonitor *m, uint64_t now_usec);
const PowerReadings *power_monitor_readings(const PowerMonitor *m);

/* What was found, for the log and Status. */
size_t power_monitor_n_supplies(const PowerMonitor *m); /* system supplies (scope=Device ignored) */
size_t power_monitor_n_sensors(const PowerMonitor *m);  /* temperature sensors that match */
bool power_monitor_has_uevents(const PowerMonitor *m);  /* the sd-device monitor is running */
/* Wakeups of its timers so far (the idle-wakeup benchmark and tests). */
uint64_t power_monitor_n_wakeups(const PowerMonitor *m);
