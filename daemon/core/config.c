/* SPDX-License-Identifier: MIT */
/*
 * tokenbudgetd's configuration: built-in defaults, and a parser and validator
 * for the libconfig file format that reports every error it finds as
 * "FILE:LINE: message", naming each setting by its full path
 * ("limits.max_connections", "rules[2] ('nightly').match.unit"). Two tables
 * of settings, one for the file's top level and its groups and one for a
 * rule, drive parsing, validation, formatting, comparison, freeing and
 * packing, so a setting cannot be known to one and missing from another.
 * A row's group may be nested, its path written with dots: the power
 * factors are the rows of "power.policy.hot" and its siblings, so every
 * policy entry is a setting like any other.
 *
 * Pure: the caller reads the file and passes its text, and resolves user and
 * group names through a lookup function it passes in; nothing here opens a
 * file, asks NSS, logs or reads the clock. libconfig's @include is refused
 * (the daemon's configuration is one file, and an include would be file I/O
 * behind the caller's back). Before libconfig sees the text, a small lexical
 * pre-pass that mirrors libconfig's lexer refuses @include and rewrites
 * integer literals: libconfig 1.5 stores a decimal literal without an L
 * suffix in a C int and silently wraps it (4294967297 parses as 1), so every
 * integer literal is handed over as a 64-bit one with its exact value,
 * saturated at the 64-bit limits.
 *
 * config_pack()/config_unpack() turn a Config into self-contained bytes and
 * back for the reload's parser child; unpacking accepts only what parsing can
 * produce (every value in range, every string valid), so bytes from a child
 * gone wrong cannot put a value into the daemon that the file could not.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "config.h"
#include "utf8.h"

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))

#define DEFAULT_SOCKET_PATH "/run/tokenbudget/io.tokenbudget"

/* PSI (Documentation/accounting/psi.rst); "" turns memory pressure off. */
#define DEFAULT_PRESSURE_FILE "/proc/pressure/memory"

/* Token counts must stay below LEDGER_TOKENS_MAX (see ledger.h). */
#define TOKENS_SETTING_MAX (LEDGER_TOKENS_MAX - 1)

/* The hard multiplier is bounded by PRODUCT.md ("configurable 1.0-5.0"); the
 * warning threshold lies below it. */
#define MULTIPLIER_MIN_PERMILLE 1000u
#define MULTIPLIER_MAX_PERMILLE 5000u
/* escalate_multiplier (issue 10): past the hard limit, up to 10x. */
#define ESCALATE_MAX_PERMILLE 10000u

/* terminate_grace_sec: an hour between SIGTERM and SIGKILL is more than any
 * process needs to flush and exit. */
#define TERMINATE_GRACE_MAX_SEC 3600u

/* A socket path must fit sockaddr_un.sun_path with its terminating NUL. */
#define SOCKET_PATH_SIZE sizeof(((struct sockaddr_un *)NULL)->sun_path)

/* Strings from the file are quoted in messages; keep a line readable. */
#define QUOTE_MAX_BYTES 64

#define USEC_PER_SEC UINT64_C(1000000)

/* A rule's name is part of scope names ("rule:NAME:KEY") on the wire and in
 * the journal: short, and nothing that needs quoting. */
#define RULE_NAME_MAX_BYTES 64

/* glibc's LOGIN_NAME_MAX; longer names exist nowhere we would look. */
#define ID_NAME_MAX_BYTES 256

/* Unit names are at most 255 bytes (systemd's UNIT_NAME_MAX - 1), as are
 * file names; a longer pattern would match nothing it could not match
 * shorter, and fnmatch(3) backtracks over every '*' in it. */
#define GLOB_MAX_BYTES 256

/* power.sensor: a thermal zone's type is at most 19 bytes (THERMAL_NAME_LENGTH),
 * an hwmon name and label each a line of sysfs; 255 holds "NAME/LABEL" of any. */
#define SENSOR_MAX_BYTES 255
/* Setting.scale of a SETTING_NAMES row of user names (trusted_proxies). */
#define NAMES_USERS 1
/* prices.currency: "USD", "EUR", "€", "credits". */
#define CURRENCY_MAX_BYTES 16
/* Per million tokens. */
#define PRICE_MAX 1000000.0

/* power.pressure_file: a path open(2) takes (PATH_MAX, with its NUL). */
#define PATH_SETTING_MAX_BYTES 4095
_Static_assert(PATH_SETTING_MAX_BYTES == PATH_MAX - 1, "a path and its NUL fit PATH_MAX");

/* The largest uid or gid: (uid_t) -1 means "no id" to the kernel. */
#define ID_MAX UINT32_C(4294967294)

_Static_assert(sizeof(uid_t) == sizeof(uint32_t) && sizeof(gid_t) == sizeof(uint32_t),
               "ids travel as uint32_t");

/* ---- names of enumerations ---- */

static const char *const log_level_names[] = {
        [LOG_LEVEL_ERR] = "err",   [LOG_LEVEL_WARNING] = "warning", [LOG_LEVEL_NOTICE] = "notice",
        [LOG_LEVEL_INFO] = "info", [LOG_LEVEL_DEBUG] = "debug",
};

static const char *const priority_names[_PRIORITY_MAX] = {
        [PRIORITY_INTERACTIVE] = "interactive",
        [PRIORITY_NORMAL] = "normal",
        [PRIORITY_BACKGROUND] = "background",
};

static const char *const rule_per_names[_RULE_PER_MAX] = {
        [RULE_PER_RULE] = "rule",       [RULE_PER_USER] = "user",   [RULE_PER_UNIT] = "unit",
        [RULE_PER_PROCESS] = "process", [RULE_PER_AGENT] = "agent",
};

static const char *const escalate_action_names[_ESCALATE_ACTION_MAX] = {
        [ESCALATE_REFUSE] = "refuse",
        [ESCALATE_HOLD] = "hold",
};

static const char *const hard_limit_action_names[_HARD_LIMIT_ACTION_MAX] = {
        [HARD_LIMIT_NONE] = "none",
        [HARD_LIMIT_TERMINATE] = "terminate",
};

static const char *const durability_sync_names[_DURABILITY_SYNC_MAX] = {
        [DURABILITY_NORMAL] = "normal",
        [DURABILITY_FULL] = "full",
};

static const char *const estimate_source_names[_ESTIMATE_SOURCE_MAX] = {
        [ESTIMATE_CLIENT] = "client",
        [ESTIMATE_LEARNED] = "learned",
        [ESTIMATE_MAX] = "max",
};

static const char *const power_state_names[_POWER_STATE_MAX] = {
        [POWER_AC] = "ac",
        [POWER_BATTERY] = "battery",
        [POWER_LOW_BATTERY] = "low-battery",
        [POWER_MEMORY_PRESSURE] = "memory-pressure",
        [POWER_HOT] = "hot",
        [POWER_CRITICAL] = "critical",
};

static const char *name_of(const char *const *names, size_t n, unsigned i) {
        return i < n ? names[i] : NULL;
}

static int index_of(const char *const *names, size_t n, const char *s) {
        if (!s)
                return -EINVAL;
        for (size_t i = 0; i < n; i++)
                if (names[i] && strcmp(names[i], s) == 0)
                        return (int)i;
        return -EINVAL;
}

const char *log_level_to_string(LogLevel l) {
        return name_of(log_level_names, ELEMENTSOF(log_level_names), (unsigned)l);
}

const char *priority_to_string(Priority p) {
        return name_of(priority_names, ELEMENTSOF(priority_names), (unsigned)p);
}

int priority_from_string(const char *s) {
        return index_of(priority_names, ELEMENTSOF(priority_names), s);
}

const char *power_state_to_string(PowerState st) {
        return name_of(power_state_names, ELEMENTSOF(power_state_names), (unsigned)st);
}

int power_state_from_string(const char *s) {
        return index_of(power_state_names, ELEMENTSOF(power_state_names), s);
}

const char *rule_per_to_string(RulePer p) {
        return name_of(rule_per_names, ELEMENTSOF(rule_per_names), (unsigned)p);
}

int rule_per_from_string(const char *s) {
        return index_of(rule_per_names, ELEMENTSOF(rule_per_names), s);
}

const char *escalate_action_to_string(EscalateAction a) {
        return name_of(escalate_action_names, ELEMENTSOF(escalate_action_names), (unsigned)a);
}

int escalate_action_from_string(const char *s) {
        return index_of(escalate_action_names, ELEMENTSOF(escalate_action_names), s);
}

const char *hard_limit_action_to_string(HardLimitAction a) {
        return name_of(hard_limit_action_names, ELEMENTSOF(hard_limit_action_names), (unsigned)a);
}

int hard_limit_action_from_string(const char *s) {
        return index_of(hard_limit_action_names, ELEMENTSOF(hard_limit_action_names), s);
}

const char *durability_sync_to_string(DurabilitySync s) {
        return name_of(durability_sync_names, ELEMENTSOF(durability_sync_names), (unsigned)s);
}

int durability_sync_from_string(const char *s) {
        return index_of(durability_sync_names, ELEMENTSOF(durability_sync_names), s);
}

const char *estimate_source_to_string(EstimateSource s) {
        return name_of(estimate_source_names, ELEMENTSOF(estimate_source_names), (unsigned)s);
}

int estimate_source_from_string(const char *s) {
        return index_of(estimate_source_names, ELEMENTSOF(estimate_source_names), s);
}

/* ---- the tables ---- */

typedef enum SettingKind {
        SETTING_SOCKET,          /* char *, an absolute path that fits sun_path */
        SETTING_UINT,            /* uint64_t in [min, max] */
        SETTING_MULTIPLIER,      /* uint32_t permille, from a number in [min, max] permille */
        SETTING_LOG_LEVEL,       /* LogLevel, from its name */
        SETTING_BOOL,            /* bool, from true or false */
        SETTING_SECONDS,         /* uint64_t microseconds, from whole seconds in [min, max] */
        SETTING_USER,            /* char *, a user name or a uid, and the has_id/id fields */
        SETTING_GROUP,           /* char *, a group name or a gid, and the has_id/id fields */
        SETTING_GLOB,            /* char *, an fnmatch(3) pattern */
        SETTING_PRIORITY,        /* Priority, from its name */
        SETTING_RULE_PER,        /* RulePer, from its name */
        SETTING_RULE_NAME,       /* char *, [A-Za-z0-9_.-]{1,64} */
        SETTING_ESCALATE,        /* EscalateAction, from its name */
        SETTING_HARD_LIMIT,      /* HardLimitAction, from its name */
        SETTING_SYNC,            /* DurabilitySync, from its name */
        SETTING_ESTIMATE_SOURCE, /* EstimateSource, from its name */
        SETTING_TEXT,            /* char *, [min, max] bytes of UTF-8 without control characters */
        SETTING_PRICE,           /* double, a number in [0, PRICE_MAX] */
        SETTING_NAMES,           /* char ** and a size_t count: an array of model names (scale
                                  * NAMES_USERS: of user names or uids, trusted_proxies) */
        SETTING_SENSOR,          /* char *, "" or an fnmatch(3) pattern of at most SENSOR_MAX_BYTES */
        SETTING_PATH,            /* char *, "" (off) or an absolute path */
        SETTING_DECIMAL,         /* int32_t, from a number in [decimal_min, decimal_max] / scale */
        SETTING_FACTOR,          /* uint16_t permille, from a number in [min, max] permille or "pause" */
        _SETTING_KIND_MAX,
} SettingKind;

typedef struct Setting {
        const char *group; /* NULL at the level of the table */
        const char *name;
        SettingKind kind;
        size_t offset; /* of the field in Config or RuleConfig */
        /* SETTING_UINT, _SECONDS (in seconds), _MULTIPLIER (in permille): the
         * range; SETTING_USER, _GROUP: the name's length (min 0: "" allowed). */
        uint64_t min, max;
        /* In a rule: the RULE_SET_* bit the setting marks when given; its
         * value counts only then (0: always counts). */
        uint32_t set_bit;
        /* String kinds: NULL is allowed and means "not given". */
        bool optional;
        /* SETTING_USER, _GROUP: the bool saying the id is known, and the id. */
        size_t has_id_offset, id_offset;
        /* SETTING_NAMES: the size_t count of the array at offset. */
        size_t count_offset;
        /* SETTING_DECIMAL: the range in stored units, and how many stored units
         * one written unit is (10: a percentage stored in permille). */
        int32_t decimal_min, decimal_max;
        uint32_t scale;
} Setting;

#define ROW(g, n, k, type, member, lo, hi)                                                                  \
        { .group = g, .name = n, .kind = k, .offset = offsetof(type, member), .min = lo, .max = hi }
#define UINT_ROW(g, n, member, lo, hi) ROW(g, n, SETTING_UINT, Config, member, lo, hi)

/* The budgets of a LedgerLimits: "tokens_per_*" and "max_tokens_in_flight";
 * 0 is no limit. */
#define LIMITS_ROWS(g, type, limits)                                                                        \
        ROW(g, "tokens_per_minute", SETTING_UINT, type, limits.window_tokens[LEDGER_WINDOW_MINUTE], 0,      \
            TOKENS_SETTING_MAX),                                                                            \
                ROW(g, "tokens_per_hour", SETTING_UINT, type, limits.window_tokens[LEDGER_WINDOW_HOUR], 0,  \
                    TOKENS_SETTING_MAX),                                                                    \
                ROW(g, "tokens_per_day", SETTING_UINT, type, limits.window_tokens[LEDGER_WINDOW_DAY], 0,    \
                    TOKENS_SETTING_MAX),                                                                    \
                ROW(g, "max_tokens_in_flight", SETTING_UINT, type, limits.in_flight_tokens, 0,              \
                    TOKENS_SETTING_MAX)
/* The same and "max_allocations" (allocations in flight; 0: no limit). The
 * ledger keeps counts far below 10^12; one bound for every budget number. */
#define LIMITS_ROWS_WITH_ALLOCATIONS(g, type, limits)                                                       \
        LIMITS_ROWS(g, type, limits), ROW(g, "max_allocations", SETTING_UINT, type, limits.max_allocations, \
                                          0, TOKENS_SETTING_MAX)

/* A number in [lo, hi] written, stored times scale (an int32_t). */
#define DECIMAL_ROW(g, n, member, lo, hi, sc)                                                               \
        {                                                                                                   \
                .group = g, .name = n, .kind = SETTING_DECIMAL, .offset = offsetof(Config, member),         \
                .decimal_min = (lo) * (sc), .decimal_max = (hi) * (sc), .scale = sc                         \
        }
/* A percentage, 0 to 100, stored in permille (sc 10) or hundredths (sc 100). */
#define PERCENT_ROW(n, member, sc) DECIMAL_ROW("power", n, member, 0, 100, sc)
/* Degrees Celsius, -50 to 200, stored in millidegrees. */
#define CELSIUS_ROW(n, member) DECIMAL_ROW("power", n, member, -50, 200, 1000)

/* power.policy.STATE.PRIORITY: 0.01 to 1.0, or "pause" (stored as 0; a
 * number 0 is refused, so a pause is always written as one). */
#define FACTOR_ROW(state, st, prio, pr)                                                                     \
        {                                                                                                   \
                .group = "power.policy." state, .name = prio, .kind = SETTING_FACTOR,                       \
                .offset = offsetof(Config, power.factor[st][pr]), .min = 10, .max = POWER_FACTOR_ONE        \
        }
/* The three priorities of a state, in the order of enum Priority. */
#define POLICY_ROWS(state, st)                                                                              \
        FACTOR_ROW(state, st, "interactive", PRIORITY_INTERACTIVE),                                         \
                FACTOR_ROW(state, st, "normal", PRIORITY_NORMAL),                                           \
                FACTOR_ROW(state, st, "background", PRIORITY_BACKGROUND)

_Static_assert(_POWER_STATE_MAX == 6 && _PRIORITY_MAX == 3, "a policy row for every state and priority");

/* The file's top level and groups, grouped by group (a nested group right
 * after its parent's own rows), in the order config_format() writes them
 * ("rules" comes last, see config_format()). */
static const Setting settings[] = {
        ROW(NULL, "socket", SETTING_SOCKET, Config, socket_path, 0, 0),
        /* The durable ledger (issue 12). Not given: $STATE_DIRECTORY, else
         * /var/lib/tokenbudget (the daemon decides); "": memory only. */
        {.group = NULL,
         .name = "state_directory",
         .kind = SETTING_PATH,
         .offset = offsetof(Config, state_directory),
         .optional = true},
        UINT_ROW(NULL, "default_estimate", default_estimate, 1, TOKENS_SETTING_MAX),
        UINT_ROW(NULL, "max_request_tokens", max_request_tokens, 1, TOKENS_SETTING_MAX),
        ROW(NULL, "warn_multiplier", SETTING_MULTIPLIER, Config, warn_permille, MULTIPLIER_MIN_PERMILLE,
            MULTIPLIER_MAX_PERMILLE),
        ROW(NULL, "hard_multiplier", SETTING_MULTIPLIER, Config, hard_permille, MULTIPLIER_MIN_PERMILLE,
            MULTIPLIER_MAX_PERMILLE),
        /* Past the hard limit, up to 10x: a request 10 times the cap is no longer an estimate. */
        ROW(NULL, "escalate_multiplier", SETTING_MULTIPLIER, Config, escalate_permille,
            MULTIPLIER_MIN_PERMILLE, ESCALATE_MAX_PERMILLE),
        ROW(NULL, "on_escalate", SETTING_ESCALATE, Config, on_escalate, 0, 0),
        ROW(NULL, "on_hard_limit", SETTING_HARD_LIMIT, Config, on_hard_limit, 0, 0),
        /* An hour: a process that has not exited an hour after SIGTERM will not. */
        ROW(NULL, "terminate_grace_sec", SETTING_SECONDS, Config, terminate_grace_usec, 1,
            TERMINATE_GRACE_MAX_SEC),
        ROW(NULL, "enforce", SETTING_BOOL, Config, enforce, 0, 0),
        /* Learned estimates (issue 13). A million samples: an EWMA of half-life 50 has long
         * settled; a floor of 0 lets the learned value stand alone. */
        ROW(NULL, "estimate_source", SETTING_ESTIMATE_SOURCE, Config, estimate_source, 0, 0),
        UINT_ROW(NULL, "estimate_min_samples", estimate_min_samples, 1, 1000000),
        ROW(NULL, "estimate_floor", SETTING_MULTIPLIER, Config, estimate_floor_permille, 0, 1000),
        {.group = NULL,
         .name = "model_tiers",
         .kind = SETTING_NAMES,
         .offset = offsetof(Config, model_tiers),
         .min = 1,
         .max = CONFIG_MODEL_NAME_MAX_BYTES,
         .count_offset = offsetof(Config, n_model_tiers)},
        /* Users whose connections may ask onBehalfOf another process (issue 14). */
        {.group = NULL,
         .name = "trusted_proxies",
         .kind = SETTING_NAMES,
         .offset = offsetof(Config, trusted_proxies),
         .min = 1,
         .max = ID_NAME_MAX_BYTES,
         .count_offset = offsetof(Config, n_trusted_proxies),
         .scale = NAMES_USERS},
        ROW(NULL, "log_level", SETTING_LOG_LEVEL, Config, log_level, 0, 0),
        {.group = NULL,
         .name = "admin_group",
         .kind = SETTING_GROUP,
         .offset = offsetof(Config, admin_group),
         .min = 0,
         .max = ID_NAME_MAX_BYTES,
         .has_id_offset = offsetof(Config, has_admin_gid),
         .id_offset = offsetof(Config, admin_gid)},
        LIMITS_ROWS_WITH_ALLOCATIONS("global", Config, global),
        LIMITS_ROWS("process", Config, process),
        LIMITS_ROWS_WITH_ALLOCATIONS("user", Config, user),
        LIMITS_ROWS_WITH_ALLOCATIONS("unit", Config, unit),
        LIMITS_ROWS_WITH_ALLOCATIONS("agent", Config, agent),
        /* A waiter costs a few hundred bytes and a heap slot; a million is far past any
         * machine's agents. max_waiters_per_uid is at most max_waiters (a relation). */
        UINT_ROW("queue", "max_waiters", queue_max_waiters, 0, 1000000),
        UINT_ROW("queue", "max_waiters_per_uid", queue_max_waiters_per_uid, 0, 1000000),
        /* A day: the longest window that frees budget up. */
        ROW("queue", "max_wait_sec", SETTING_SECONDS, Config, queue_max_wait_usec, 1, 86400),
        /* Utilisation as a fraction of the limit, in permille like the multipliers; 0.01
         * keeps "degraded from the first token" out. pool_release is below pool_threshold
         * (a relation), so the breaker cannot flap on one value. */
        ROW("breaker", "pool_threshold", SETTING_MULTIPLIER, Config, pool_threshold_permille, 10, 1000),
        ROW("breaker", "pool_release", SETTING_MULTIPLIER, Config, pool_release_permille, 0, 1000),
        /* The breaker keeps the time of each of the last runaway_breaches breaches. */
        UINT_ROW("breaker", "runaway_breaches", runaway_breaches, 0, 1000),
        ROW("breaker", "runaway_window_sec", SETTING_SECONDS, Config, runaway_window_usec, 1, 86400),
        ROW("breaker", "cooldown_sec", SETTING_SECONDS, Config, cooldown_usec, 1, 86400),
        /* A week; at least cooldown_sec (a relation). */
        ROW("breaker", "max_cooldown_sec", SETTING_SECONDS, Config, max_cooldown_usec, 1, 604800),
        /* A day: an admin who has not answered by then will not. */
        ROW("escalation", "timeout_sec", SETTING_SECONDS, Config, escalation_timeout_usec, 1, 86400),
        /* Power awareness (issue 11). The relations (each release value on the side of its
         * threshold that gives hysteresis, critical above hot) are checked after parsing. */
        ROW("power", "enabled", SETTING_BOOL, Config, power.enabled, 0, 0),
        ROW("power", "sensor", SETTING_SENSOR, Config, power.sensor, 0, 0),
        ROW("power", "pressure_file", SETTING_PATH, Config, power.pressure_file, 0, 0),
        /* An hour: a temperature read less often than that is no longer watched. */
        ROW("power", "poll_sec", SETTING_SECONDS, Config, power.poll_usec, 1, 3600),
        ROW("power", "battery_poll_sec", SETTING_SECONDS, Config, power.battery_poll_usec, 1, 3600),
        PERCENT_ROW("low_battery_percent", power.low_battery_permille, 10),
        PERCENT_ROW("low_battery_release_percent", power.low_battery_release_permille, 10),
        /* -50 to 200 °C: what hwmon reports for anything that still works (a
         * sensor below -50 °C is broken; silicon dies long before 200 °C). */
        CELSIUS_ROW("hot_celsius", power.hot_mc),
        CELSIUS_ROW("hot_release_celsius", power.hot_release_mc),
        CELSIUS_ROW("critical_celsius", power.critical_mc),
        CELSIUS_ROW("critical_release_celsius", power.critical_release_mc),
        PERCENT_ROW("memory_pressure_percent", power.pressure_cp, 100),
        PERCENT_ROW("memory_pressure_release_percent", power.pressure_release_cp, 100),
        POLICY_ROWS("ac", POWER_AC),
        POLICY_ROWS("battery", POWER_BATTERY),
        POLICY_ROWS("low_battery", POWER_LOW_BATTERY),
        POLICY_ROWS("memory_pressure", POWER_MEMORY_PRESSURE),
        POLICY_ROWS("hot", POWER_HOT),
        POLICY_ROWS("critical", POWER_CRITICAL),
        /* 1 KiB holds any request we define; 16 MiB bounds what one peer can make us buffer. */
        UINT_ROW("limits", "max_message_bytes", max_message_bytes, 1024, 16777216),
        /* 64 KiB holds a few replies; 1 GiB is far past any sane backlog. */
        UINT_ROW("limits", "max_output_bytes", max_output_bytes, 65536, 1073741824),
        UINT_ROW("limits", "max_connections", max_connections, 1, 1000000),
        UINT_ROW("limits", "max_connections_per_uid", max_connections_per_uid, 1, 1000000),
        UINT_ROW("limits", "max_allocations_per_process", max_allocations_per_process, 1, 1000000),
        UINT_ROW("limits", "max_tracked_processes", max_tracked_processes, 1, 10000000),
        UINT_ROW("limits", "max_tracked_processes_per_uid", max_tracked_processes_per_uid, 1, 10000000),
        /* The same bounds as the process table's. */
        UINT_ROW("limits", "max_tracked_scopes", max_tracked_scopes, 1, 10000000),
        UINT_ROW("limits", "max_tracked_scopes_per_uid", max_tracked_scopes_per_uid, 1, 10000000),
        /* The same bounds as max_output_bytes; the relation check keeps it >= that. */
        UINT_ROW("limits", "max_output_bytes_per_uid", max_output_bytes_per_uid, 65536, 1073741824),
        UINT_ROW("limits", "admin_connections", admin_connections, 0, 999999),
        /* A day: past that an idle connection is not an agent thinking. */
        ROW("limits", "idle_timeout_sec", SETTING_SECONDS, Config, idle_timeout_usec, 0, 86400),
        /* A week: no model call runs that long without a report. */
        ROW("limits", "allocation_idle_timeout_sec", SETTING_SECONDS, Config, allocation_idle_timeout_usec,
            1, 604800),
        ROW("journal", "log_granted", SETTING_BOOL, Config, journal_log_granted, 0, 0),
        /* Past an hour, a summary of suppressed events comes too late to help anyone. */
        ROW("journal", "rate_limit_interval_sec", SETTING_SECONDS, Config, journal_rate_limit_interval_usec,
            0, 3600),
        /* A million entries at ~35 us of journald CPU each is already 35 s of CPU per interval. */
        UINT_ROW("journal", "rate_limit_burst", journal_rate_limit_burst, 0, 1000000),
        ROW("durability", "sync", SETTING_SYNC, Config, durability_sync, 0, 0),
        /* A century: longer is forever. */
        UINT_ROW("history", "retention_days", history_retention_days, 1, 36500),
        /* The estimator (issue 13, daemon/core/estimator.h). A half-life of a million
         * samples is a cumulative mean; tail_half_life_samples is at least
         * half_life_samples (a relation). A clip below 1.5x cuts ordinary samples. */
        UINT_ROW("estimator", "half_life_samples", estimator_half_life_samples, 1, 1000000),
        UINT_ROW("estimator", "tail_half_life_samples", estimator_tail_half_life_samples, 1, 10000000),
        ROW("estimator", "clip_factor", SETTING_MULTIPLIER, Config, estimator_clip_permille, 1500, 100000),
        ROW("estimator", "spread_quantile", SETTING_MULTIPLIER, Config, estimator_spread_permille, 500, 999),
        /* Last: config_format() writes the prices group itself, with its models
         * (PRICE_ROWS rows here). "USD", "EUR", "€": a label, not checked. */
        ROW("prices", "currency", SETTING_TEXT, Config, price_currency, 0, CURRENCY_MAX_BYTES),
};
#define PRICE_ROWS 1

/* One element of "prices.models". A million per million tokens is far past
 * any model's price. */
static const Setting price_settings[] = {
        ROW(NULL, "model", SETTING_TEXT, ConfigPrice, model, 1, CONFIG_MODEL_NAME_MAX_BYTES),
        ROW(NULL, "input_per_million", SETTING_PRICE, ConfigPrice, input_per_million, 0, 0),
        ROW(NULL, "output_per_million", SETTING_PRICE, ConfigPrice, output_per_million, 0, 0),
};

#define MATCH_ID_ROW(n, k, member, has, id)                                                                 \
        {                                                                                                   \
                .group = "match", .name = n, .kind = k, .offset = offsetof(RuleConfig, match.member),       \
                .min = 1, .max = ID_NAME_MAX_BYTES, .optional = true,                                       \
                .has_id_offset = offsetof(RuleConfig, match.has),                                           \
                .id_offset = offsetof(RuleConfig, match.id)                                                 \
        }
#define MATCH_GLOB_ROW(n, member)                                                                           \
        {                                                                                                   \
                .group = "match", .name = n, .kind = SETTING_GLOB,                                          \
                .offset = offsetof(RuleConfig, match.member), .optional = true                              \
        }
#define RULE_OPTIONAL_ROW(n, k, member, lo, hi, bit)                                                        \
        {                                                                                                   \
                .name = n, .kind = k, .offset = offsetof(RuleConfig, member), .min = lo, .max = hi,         \
                .set_bit = bit                                                                              \
        }

/* One element of "rules", in the order config_format() writes them. */
static const Setting rule_settings[] = {
        ROW(NULL, "name", SETTING_RULE_NAME, RuleConfig, name, 0, 0),
        MATCH_ID_ROW("user", SETTING_USER, user, has_uid, uid),
        MATCH_ID_ROW("group", SETTING_GROUP, group, has_gid, gid),
        MATCH_GLOB_ROW("unit", unit),
        MATCH_GLOB_ROW("slice", slice),
        MATCH_GLOB_ROW("command", command),
        MATCH_GLOB_ROW("agent", agent),
        ROW(NULL, "per", SETTING_RULE_PER, RuleConfig, per, 0, 0),
        LIMITS_ROWS_WITH_ALLOCATIONS(NULL, RuleConfig, limits),
        RULE_OPTIONAL_ROW("max_request_tokens", SETTING_UINT, max_request_tokens, 1, TOKENS_SETTING_MAX,
                          RULE_SET_MAX_REQUEST_TOKENS),
        RULE_OPTIONAL_ROW("priority", SETTING_PRIORITY, priority, 0, 0, RULE_SET_PRIORITY),
        RULE_OPTIONAL_ROW("max_priority", SETTING_PRIORITY, max_priority, 0, 0, RULE_SET_MAX_PRIORITY),
        RULE_OPTIONAL_ROW("warn_multiplier", SETTING_MULTIPLIER, warn_permille, MULTIPLIER_MIN_PERMILLE,
                          MULTIPLIER_MAX_PERMILLE, RULE_SET_WARN),
        RULE_OPTIONAL_ROW("hard_multiplier", SETTING_MULTIPLIER, hard_permille, MULTIPLIER_MIN_PERMILLE,
                          MULTIPLIER_MAX_PERMILLE, RULE_SET_HARD),
        RULE_OPTIONAL_ROW("escalate_multiplier", SETTING_MULTIPLIER, escalate_permille,
                          MULTIPLIER_MIN_PERMILLE, ESCALATE_MAX_PERMILLE, RULE_SET_ESCALATE),
        RULE_OPTIONAL_ROW("on_escalate", SETTING_ESCALATE, on_escalate, 0, 0, RULE_SET_ON_ESCALATE),
        RULE_OPTIONAL_ROW("on_hard_limit", SETTING_HARD_LIMIT, on_hard_limit, 0, 0, RULE_SET_ON_HARD_LIMIT),
        RULE_OPTIONAL_ROW("terminate_grace_sec", SETTING_SECONDS, terminate_grace_usec, 1,
                          TERMINATE_GRACE_MAX_SEC, RULE_SET_TERMINATE_GRACE),
        RULE_OPTIONAL_ROW("enforce", SETTING_BOOL, enforce, 0, 0, RULE_SET_ENFORCE),
        RULE_OPTIONAL_ROW("estimate_source", SETTING_ESTIMATE_SOURCE, estimate_source, 0, 0,
                          RULE_SET_ESTIMATE_SOURCE),
        RULE_OPTIONAL_ROW("estimate_min_samples", SETTING_UINT, estimate_min_samples, 1, 1000000,
                          RULE_SET_ESTIMATE_MIN_SAMPLES),
        RULE_OPTIONAL_ROW("estimate_floor", SETTING_MULTIPLIER, estimate_floor_permille, 0, 1000,
                          RULE_SET_ESTIMATE_FLOOR),
};

#define RULE_SET_ALL                                                                                        \
        (RULE_SET_MAX_REQUEST_TOKENS | RULE_SET_PRIORITY | RULE_SET_MAX_PRIORITY | RULE_SET_WARN |          \
         RULE_SET_HARD | RULE_SET_ESCALATE | RULE_SET_ON_ESCALATE | RULE_SET_ON_HARD_LIMIT |                \
         RULE_SET_TERMINATE_GRACE | RULE_SET_ENFORCE | RULE_SET_ESTIMATE_SOURCE |                           \
         RULE_SET_ESTIMATE_MIN_SAMPLES | RULE_SET_ESTIMATE_FLOOR)

static bool streq_ptr(const char *a, const char *b) {
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* The row of table for group.name (group NULL: the table's own level), or -1. */
static int table_find(const Setting *table, size_t n, const char *group, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (streq_ptr(table[i].group, group) && strcmp(table[i].name, name) == 0)
                        return (int)i;
        return -1;
}

/* Whether name is a group of the table: one with rows of its own, or one
 * that holds a nested group ("power.policy" holds "power.policy.hot"). */
static bool table_has_group(const Setting *table, size_t n, const char *name) {
        size_t len = strlen(name);

        for (size_t i = 0; i < n; i++)
                if (table[i].group && strncmp(table[i].group, name, len) == 0 &&
                    (table[i].group[len] == '\0' || table[i].group[len] == '.'))
                        return true;
        return false;
}

static size_t setting_index(const char *group, const char *name) {
        int i = table_find(settings, ELEMENTSOF(settings), group, name);

        assert(i >= 0);
        return (size_t)i;
}

static size_t rule_setting_index(const char *name) {
        int i = table_find(rule_settings, ELEMENTSOF(rule_settings), NULL, name);

        assert(i >= 0);
        return (size_t)i;
}

static void *field(void *base, const Setting *s) {
        return (char *)base + s->offset;
}

static const void *field_const(const void *base, const Setting *s) {
        return (const char *)base + s->offset;
}

static bool is_string_kind(SettingKind k) {
        return k == SETTING_SOCKET || k == SETTING_USER || k == SETTING_GROUP || k == SETTING_GLOB ||
               k == SETTING_RULE_NAME || k == SETTING_SENSOR || k == SETTING_PATH || k == SETTING_TEXT;
}

static bool is_id_kind(SettingKind k) {
        return k == SETTING_USER || k == SETTING_GROUP;
}

/* Whether a row's value counts: optional rule settings only when given. */
static bool row_counts(const Setting *s, uint32_t set) {
        return !s->set_bit || (set & s->set_bit);
}

/* ---- defaults ---- */

/* The "power" group but its strings. */
static void power_defaults(PowerConfig *p) {
        *p = (PowerConfig){
                .enabled = true,
                /* Every few seconds while busy or near a threshold (power.h): a CPU
                 * heats by some degrees a second under load. */
                .poll_usec = 5 * USEC_PER_SEC,
                /* upower's poll of a discharging battery. */
                .battery_poll_usec = 30 * USEC_PER_SEC,
                /* The issue's numbers: low battery below 20 %, left above 25 %, so a
                 * gauge wobbling by a few percent does not flip it. */
                .low_battery_permille = 200,
                .low_battery_release_permille = 250,
                /* The issue's numbers: hot from 85 °C, cool again below 80 °C. */
                .hot_mc = 85000,
                .hot_release_mc = 80000,
                /* Many CPUs throttle themselves at 100 °C (TjMax): stop all but
                 * interactive work before they must. */
                .critical_mc = 95000,
                .critical_release_mc = 90000,
                /* PSI "some avg10" of 20 %: a fifth of the time some task waits on memory,
                 * well before systemd-oomd acts (60 % by default); below 10 % the
                 * machine is swapping no longer. */
                .pressure_cp = 2000,
                .pressure_release_cp = 1000,
        };
        for (unsigned s = 0; s < _POWER_STATE_MAX; s++)
                for (unsigned q = 0; q < _PRIORITY_MAX; q++)
                        p->factor[s][q] = POWER_FACTOR_ONE;
        /* Laptop-sensible: background work pays for battery and heat first,
         * interactive work is never slowed unless the admin says so. */
        p->factor[POWER_BATTERY][PRIORITY_BACKGROUND] = 500;
        p->factor[POWER_LOW_BATTERY][PRIORITY_NORMAL] = 500;
        p->factor[POWER_LOW_BATTERY][PRIORITY_BACKGROUND] = POWER_FACTOR_PAUSE;
        p->factor[POWER_MEMORY_PRESSURE][PRIORITY_NORMAL] = 500;
        p->factor[POWER_MEMORY_PRESSURE][PRIORITY_BACKGROUND] = POWER_FACTOR_PAUSE;
        p->factor[POWER_HOT][PRIORITY_NORMAL] = 500;
        p->factor[POWER_HOT][PRIORITY_BACKGROUND] = POWER_FACTOR_PAUSE;
        p->factor[POWER_CRITICAL][PRIORITY_NORMAL] = POWER_FACTOR_PAUSE;
        p->factor[POWER_CRITICAL][PRIORITY_BACKGROUND] = POWER_FACTOR_PAUSE;
}

int config_init_defaults(Config *c) {
        assert(c);

        *c = (Config){
                .default_estimate = 4000,
                .max_request_tokens = 200000,
                .warn_permille = 1500,
                .hard_permille = 2000,
                .log_level = LOG_LEVEL_INFO,
                /* PRODUCT.md: far above the cap (2.5x), requests are escalated. */
                .escalate_permille = 2500,
                .on_escalate = ESCALATE_REFUSE,
                .on_hard_limit = HARD_LIMIT_NONE,
                /* systemd's TimeoutStopSec= is 90 s; an agent between two model calls
                 * needs far less to write its state and exit. */
                .terminate_grace_usec = 10 * USEC_PER_SEC,
                .enforce = true,
                /* Learning changes nothing until asked for; 20 samples put a class's
                 * mean within ~17% at CV 0.77 (SOURCES.md's conversation service); a
                 * budget below half the client's guess makes models use more, not fewer. */
                .estimate_source = ESTIMATE_CLIENT,
                .estimate_min_samples = 20,
                .estimate_floor_permille = 500,
                .estimator_half_life_samples = 50,
                .estimator_tail_half_life_samples = 1000,
                .estimator_clip_permille = 4000,
                .estimator_spread_permille = 950,
                .global = {.window_tokens = {2000000, 20000000, 100000000}, .in_flight_tokens = 1000000},
                .process = {.window_tokens = {500000, 5000000, 0}, .in_flight_tokens = 400000},
                /* A laptop has one person: the global budget is theirs. A shared
                 * machine sets these. */
                .user = {},
                /* A service is a program, not a person: a fraction of the global budget, so
                 * one runaway unit cannot spend it all. */
                .unit = {.window_tokens = {1000000, 10000000, 0},
                         .in_flight_tokens = 600000,
                         .max_allocations = 256},
                /* One declared agent: a process's budget, with as many allocations in flight
                 * as one process may hold. */
                .agent = {.window_tokens = {500000, 5000000, 0},
                          .in_flight_tokens = 400000,
                          .max_allocations = 64},
                .max_message_bytes = 65536,
                .max_output_bytes = 1048576,
                .max_connections = 1024,
                .max_connections_per_uid = 128,
                .max_allocations_per_process = 64,
                .max_tracked_processes = 4096,
                /* A quarter: one user's sleeping processes cannot fill the table for everyone. */
                .max_tracked_processes_per_uid = 1024,
                /* Users, units, slices, agents and rule keys: four for each tracked process. */
                .max_tracked_scopes = 16384,
                /* The same share as for processes: one uid cannot fill the table by inventing
                 * agent names. */
                .max_tracked_scopes_per_uid = 1024,
                /* 128 connections of one uid each near max_output_bytes pinned 115 MiB; a uid's
                 * readers together get 8 replies' worth of the per-connection bound. */
                .max_output_bytes_per_uid = 8 * 1048576,
                /* budgetctl and a few admin tools must always get in, however full. */
                .admin_connections = 8,
                /* Well above an agent's think time between tasks (minutes); libtokenbudget
                 * reconnects on its own when an idle handle was closed. */
                .idle_timeout_usec = 900 * USEC_PER_SEC,
                /* Well above a long model call (a local model writing 8k tokens at 5 tokens/s
                 * takes under half an hour) with no report in between. */
                .allocation_idle_timeout_usec = 3600 * USEC_PER_SEC,
                .journal_log_granted = false,
                .journal_rate_limit_interval_usec = 10 * USEC_PER_SEC,
                .journal_rate_limit_burst = 20,
                /* One waiter per connection (max_connections), and the per-uid
                 * share of connections. */
                .queue_max_waiters = 1024,
                .queue_max_waiters_per_uid = 128,
                /* An hour: the hour window frees up within it. */
                .queue_max_wait_usec = 3600 * USEC_PER_SEC,
                /* The issue's numbers: degraded from 80 %, normal again below 70 %. */
                .pool_threshold_permille = 800,
                .pool_release_permille = 700,
                .runaway_breaches = 3,
                .runaway_window_usec = 600 * USEC_PER_SEC,
                .cooldown_usec = 300 * USEC_PER_SEC,
                /* Doubling from 5 min: 10, 20, 40, 60 min. */
                .max_cooldown_usec = 3600 * USEC_PER_SEC,
                .escalation_timeout_usec = 300 * USEC_PER_SEC,
                .durability_sync = DURABILITY_NORMAL,
                /* A quarter: enough to compare this month with the last two. */
                .history_retention_days = 90,
        };
        power_defaults(&c->power);
        c->socket_path = strdup(DEFAULT_SOCKET_PATH);
        c->admin_group = strdup("");
        c->power.sensor = strdup("");
        c->power.pressure_file = strdup(DEFAULT_PRESSURE_FILE);
        c->price_currency = strdup("");
        if (!c->socket_path || !c->admin_group || !c->power.sensor || !c->power.pressure_file ||
            !c->price_currency) {
                config_done(c);
                return -ENOMEM;
        }
        return 0;
}

static size_t *names_count(void *base, const Setting *s) {
        return (size_t *)((char *)base + s->count_offset);
}

static size_t names_count_const(const void *base, const Setting *s) {
        return *(const size_t *)((const char *)base + s->count_offset);
}

static void names_free(char **names, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

static void rows_done(const Setting *table, size_t n, void *base) {
        for (size_t i = 0; i < n; i++)
                if (is_string_kind(table[i].kind)) {
                        char **p = field(base, &table[i]);
                        free(*p);
                        *p = NULL;
                } else if (table[i].kind == SETTING_NAMES) {
                        char ***p = field(base, &table[i]);
                        names_free(*p, *names_count(base, &table[i]));
                        *p = NULL;
                        *names_count(base, &table[i]) = 0;
                }
}

void config_done(Config *c) {
        if (!c)
                return;
        rows_done(settings, ELEMENTSOF(settings), c);
        for (size_t i = 0; i < c->n_rules; i++)
                rows_done(rule_settings, ELEMENTSOF(rule_settings), &c->rules[i]);
        free(c->rules);
        c->rules = NULL;
        c->n_rules = 0;
        for (size_t i = 0; i < c->n_prices; i++)
                rows_done(price_settings, ELEMENTSOF(price_settings), &c->prices[i]);
        free(c->prices);
        c->prices = NULL;
        c->n_prices = 0;
}

/* ---- error collection ---- */

typedef struct ConfigError {
        unsigned line;
        size_t seq; /* keeps errors of one line in the order found */
        char *message;
} ConfigError;

typedef struct Errors {
        const char *filename;
        ConfigError *items;
        size_t n, allocated;
        bool oom;
} Errors;

static void errors_done(Errors *e) {
        for (size_t i = 0; i < e->n; i++)
                free(e->items[i].message);
        free(e->items);
        e->items = NULL;
        e->n = e->allocated = 0;
}

static void errors_add(Errors *e, unsigned line, const char *format, ...)
        __attribute__((format(printf, 3, 4)));
static void errors_add(Errors *e, unsigned line, const char *format, ...) {
        char *message;
        va_list ap;
        int r;

        if (e->n == e->allocated) {
                size_t allocated = e->allocated ? e->allocated * 2 : 8;
                ConfigError *items = reallocarray(e->items, allocated, sizeof(*items));
                if (!items) {
                        e->oom = true;
                        return;
                }
                e->items = items;
                e->allocated = allocated;
        }

        va_start(ap, format);
        r = vsnprintf(NULL, 0, format, ap);
        va_end(ap);
        message = r >= 0 ? malloc((size_t)r + 1) : NULL;
        if (!message) {
                e->oom = true;
                return;
        }
        va_start(ap, format);
        vsnprintf(message, (size_t)r + 1, format, ap);
        va_end(ap);
        e->items[e->n] = (ConfigError){.line = line, .seq = e->n, .message = message};
        e->n++;
}

static int error_compare(const void *a, const void *b) {
        const ConfigError *x = a, *y = b;

        if (x->line != y->line)
                return x->line < y->line ? -1 : 1;
        return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Joins the errors, sorted by line, into "FILE:LINE: message\n" lines. */
static char *errors_join(Errors *e) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        qsort(e->items, e->n, sizeof(e->items[0]), error_compare);
        f = open_memstream(&buf, &size);
        if (!f)
                return NULL;
        for (size_t i = 0; i < e->n; i++)
                fprintf(f, "%s:%u: %s\n", e->filename, e->items[i].line, e->items[i].message);
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

/* ---- lexical pre-pass ---- */

typedef struct Lexer {
        const char *p;
        unsigned line;
        FILE *out;
        Errors *errors;
} Lexer;

static bool is_name_start(char ch) {
        return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '*';
}

static bool is_name_char(char ch) {
        return is_name_start(ch) || (ch >= '0' && ch <= '9') || ch == '-' || ch == '_';
}

static bool is_digit(char ch) {
        return ch >= '0' && ch <= '9';
}

/* Copies n bytes to the output, counting lines. */
static void lexer_copy(Lexer *l, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (l->p[i] == '\n')
                        l->line++;
        fwrite(l->p, 1, n, l->out);
        l->p += n;
}

static size_t span_until_eol(const char *p) {
        return strcspn(p, "\n");
}

static size_t span_block_comment(const char *p) {
        const char *end = strstr(p + 2, "*/");
        return end ? (size_t)(end + 2 - p) : strlen(p);
}

static size_t span_string(const char *p) {
        size_t i = 1;

        while (p[i] && p[i] != '"')
                i += (p[i] == '\\' && p[i + 1]) ? 2 : 1;
        return p[i] ? i + 1 : i;
}

/* A number-like token: digits, letters, dots, and a sign after an exponent. */
static size_t span_number(const char *p) {
        size_t i = (*p == '-' || *p == '+') ? 1 : 0;
        bool hex = p[i] == '0' && (p[i + 1] == 'x' || p[i + 1] == 'X');

        for (; p[i]; i++) {
                if (is_name_char(p[i]) && p[i] != '-')
                        continue;
                if (p[i] == '.')
                        continue;
                if (!hex && i > 0 && (p[i] == '-' || p[i] == '+') && (p[i - 1] == 'e' || p[i - 1] == 'E'))
                        continue;
                break;
        }
        return i;
}

static int digit_value(char ch, unsigned base) {
        if (ch >= '0' && ch <= '9')
                return ch - '0';
        if (base == 16 && ch >= 'a' && ch <= 'f')
                return ch - 'a' + 10;
        if (base == 16 && ch >= 'A' && ch <= 'F')
                return ch - 'A' + 10;
        return -1;
}

/* Parses libconfig's integer syntax ([-+]?[0-9]+ or 0x[0-9a-fA-F]+, then
 * optionally L or LL), saturating at the 64-bit limits. Returns false for
 * anything else (floats, garbage), which is left to libconfig. */
static bool parse_integer_literal(const char *t, size_t n, long long *ret) {
        size_t i = 0, end = n;
        unsigned base = 10;
        bool negative = false;
        unsigned long long v = 0, limit;

        if (end > 0 && t[end - 1] == 'L')
                end--;
        if (end > 0 && t[end - 1] == 'L')
                end--;
        if (t[0] == '-' || t[0] == '+') {
                negative = t[0] == '-';
                i = 1;
        } else if (end > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
                base = 16;
                i = 2;
        }
        if (i >= end)
                return false;

        limit = negative ? (unsigned long long)LLONG_MAX + 1 : (unsigned long long)LLONG_MAX;
        for (; i < end; i++) {
                int d = digit_value(t[i], base);
                if (d < 0)
                        return false;
                v = v > (limit - (unsigned)d) / base ? limit : v * base + (unsigned)d;
        }
        if (negative)
                *ret = v > (unsigned long long)LLONG_MAX ? LLONG_MIN : -(long long)v;
        else
                *ret = (long long)v;
        return true;
}

static void lexer_number(Lexer *l) {
        size_t n = span_number(l->p);
        long long v;

        if (!parse_integer_literal(l->p, n, &v)) {
                lexer_copy(l, n); /* a float, or garbage libconfig will report */
                return;
        }
        fprintf(l->out, "%lldL", v);
        l->p += n;
}

static void lexer_directive(Lexer *l) {
        size_t n = span_until_eol(l->p);

        if (strncmp(l->p, "@include", 8) == 0 && !is_name_char(l->p[8])) {
                errors_add(l->errors, l->line,
                           "@include is not supported: the configuration must be a single file");
                /* Blank the directive so libconfig goes on to check the rest. */
                for (size_t i = 0; i < n; i++)
                        fputc(' ', l->out);
                l->p += n;
                return;
        }
        lexer_copy(l, 1); /* libconfig reports the stray '@' */
}

/* Where libconfig's integer and float patterns can start: 5, -5, .5, -.5 */
static bool is_number_start(const char *p) {
        if (*p == '-' || *p == '+')
                p++;
        return is_digit(p[0]) || (p[0] == '.' && is_digit(p[1]));
}

static void lexer_step(Lexer *l) {
        const char *p = l->p;

        if (*p == '#' || (p[0] == '/' && p[1] == '/'))
                lexer_copy(l, span_until_eol(p));
        else if (p[0] == '/' && p[1] == '*')
                lexer_copy(l, span_block_comment(p));
        else if (*p == '"')
                lexer_copy(l, span_string(p));
        else if (*p == '@')
                lexer_directive(l);
        else if (is_name_start(*p)) {
                size_t n = 1;
                while (is_name_char(p[n]))
                        n++;
                lexer_copy(l, n);
        } else if (is_number_start(p))
                lexer_number(l);
        else
                lexer_copy(l, 1);
}

/* Returns the text to hand to libconfig, or NULL on allocation failure. */
static char *prepare_text(const char *text, Errors *errors) {
        char *buf = NULL;
        size_t size = 0;
        Lexer l = {.p = text, .line = 1, .errors = errors};

        l.out = open_memstream(&buf, &size);
        if (!l.out)
                return NULL;
        while (*l.p)
                lexer_step(&l);
        if (fclose(l.out) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

/* ---- values ---- */

static const char *type_name(int type) {
        switch (type) {
        case CONFIG_TYPE_GROUP:
                return "a group";
        case CONFIG_TYPE_INT:
        case CONFIG_TYPE_INT64:
                return "an integer";
        case CONFIG_TYPE_FLOAT:
                return "a float";
        case CONFIG_TYPE_STRING:
                return "a string";
        case CONFIG_TYPE_BOOL:
                return "a boolean";
        case CONFIG_TYPE_ARRAY:
                return "an array";
        case CONFIG_TYPE_LIST:
                return "a list";
        default:
                return "an unknown type";
        }
}

/* Copies s for a message: at most QUOTE_MAX_BYTES, unprintable bytes as '?'. */
static void quote(const char *s, char buf[static QUOTE_MAX_BYTES + 4]) {
        size_t i;

        for (i = 0; s[i] && i < QUOTE_MAX_BYTES; i++)
                buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
        strcpy(buf + i, s[i] ? "..." : "");
}

typedef struct Context {
        Config *config;
        Errors *errors;
        unsigned lines[ELEMENTSOF(settings)]; /* where each setting was set; 0 if not */
        bool invalid[ELEMENTSOF(settings)];   /* set in the file, but refused */
        /* config->n_rules x ELEMENTSOF(rule_settings): where each rule's settings were
         * set. A refused value is not marked set, so the relation checks skip it. */
        unsigned *rule_lines;
        unsigned *price_lines; /* the same for config->n_prices x ELEMENTSOF(price_settings) */
} Context;

static bool check_type(Context *ctx, const config_setting_t *cs, const char *path, bool number_ok,
                       int type_ok, const char *expected) {
        int type = config_setting_type(cs);

        if (type == type_ok || (number_ok && (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64)))
                return true;
        errors_add(ctx->errors, config_setting_source_line(cs), "%s must be %s, got %s", path, expected,
                   type_name(type));
        return false;
}

/* A string setting's value; -EINVAL (reported) for another type, -ENOMEM when
 * libconfig could not copy it (it leaves the value NULL then). */
static int get_string(Context *ctx, const config_setting_t *cs, const char *path, const char **ret) {
        if (!check_type(ctx, cs, path, false, CONFIG_TYPE_STRING, "a string"))
                return -EINVAL;
        *ret = config_setting_get_string(cs);
        return *ret ? 0 : -ENOMEM;
}

/* Replaces the string at p with a copy of v. */
static int store_string(char **p, const char *v) {
        char *copy = strdup(v);

        if (!copy)
                return -ENOMEM;
        free(*p);
        *p = copy;
        return 0;
}

/* An integer in [s->min, s->max], for SETTING_UINT and SETTING_SECONDS. */
static int parse_uint(Context *ctx, const Setting *s, const config_setting_t *cs, const char *path,
                      uint64_t *ret) {
        unsigned line = config_setting_source_line(cs);
        long long v;

        if (!check_type(ctx, cs, path, true, CONFIG_TYPE_INT64, "an integer"))
                return -EINVAL;
        v = config_setting_get_int64(cs);
        if (v < 0 || (uint64_t)v < s->min || (uint64_t)v > s->max) {
                /* The pre-pass saturates literals beyond 64 bits at the limits. */
                const char *beyond = v == LLONG_MAX ? " or more" : v == LLONG_MIN ? " or less" : "";
                errors_add(ctx->errors, line, "%s must be between %" PRIu64 " and %" PRIu64 ", got %lld%s",
                           path, s->min, s->max, v, beyond);
                return -EINVAL;
        }
        *ret = (uint64_t)v;
        return 0;
}

static int apply_uint(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                      const char *path) {
        return parse_uint(ctx, s, cs, path, field(base, s));
}

static int apply_seconds(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                         const char *path) {
        uint64_t v;
        int r;

        /* The bounds keep v * USEC_PER_SEC far from overflowing. */
        assert(s->max <= UINT64_MAX / USEC_PER_SEC);
        r = parse_uint(ctx, s, cs, path, &v);
        if (r < 0)
                return r;
        *(uint64_t *)field(base, s) = v * USEC_PER_SEC;
        return 0;
}

static int apply_bool(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                      const char *path) {
        if (!check_type(ctx, cs, path, false, CONFIG_TYPE_BOOL, "a boolean (true or false)"))
                return -EINVAL;
        *(bool *)field(base, s) = config_setting_get_bool(cs) != 0;
        return 0;
}

/* The shortest text that reads back as v: "0.99", not "0.98999999999999999". */
static void format_double(double v, char buf[static 32]) {
        /* Plain decimals where a person would write them: "250", not "2.5e+02". */
        if (v > -1e15 && v < 1e15)
                for (int decimals = 0; decimals <= 12; decimals++) {
                        snprintf(buf, 32, "%.*f", decimals, v);
                        if (strtod(buf, NULL) == v)
                                return;
                }
        for (int precision = 1; precision <= 17; precision++) {
                snprintf(buf, 32, "%.*g", precision, v);
                if (strtod(buf, NULL) == v)
                        return;
        }
}

/* 1500 -> "1.5", 2000 -> "2.0", 1234 -> "1.234": exact, and what a person writes. */
static void permille_text(uint64_t permille, char buf[static 32]) {
        unsigned frac = (unsigned)(permille % 1000), digits = 3;

        if (frac == 0) {
                snprintf(buf, 32, "%" PRIu64 ".0", permille / 1000);
                return;
        }
        while (frac % 10 == 0) {
                frac /= 10;
                digits--;
        }
        snprintf(buf, 32, "%" PRIu64 ".%0*u", permille / 1000, (int)digits, frac);
}

/* v / scale exactly, as a person writes it: 85000/1000 -> "85", 80500 ->
 * "80.5", -500 -> "-0.5", 205/10 -> "20.5". scale is a power of 10. */
static void decimal_text(int64_t v, uint32_t scale, char buf[static 32]) {
        uint64_t a = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, frac = a % scale;
        int digits = 0;

        for (uint32_t s = scale; s > 1; s /= 10)
                digits++;
        if (frac == 0) {
                snprintf(buf, 32, "%s%" PRIu64, v < 0 ? "-" : "", a / scale);
                return;
        }
        while (frac % 10 == 0) {
                frac /= 10;
                digits--;
        }
        snprintf(buf, 32, "%s%" PRIu64 ".%0*" PRIu64, v < 0 ? "-" : "", a / scale, digits, frac);
}

/* A number setting's value: an integer or a float. */
static double number_value(const config_setting_t *cs) {
        return config_setting_type(cs) == CONFIG_TYPE_FLOAT ? config_setting_get_float(cs)
                                                            : (double)config_setting_get_int64(cs);
}

static int apply_multiplier(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                            const char *path) {
        double v;

        if (!check_type(ctx, cs, path, true, CONFIG_TYPE_FLOAT, "a number"))
                return -EINVAL;
        v = number_value(cs);
        if (!(v >= s->min / 1000.0 && v <= s->max / 1000.0)) {
                char text[32], lo[32], hi[32];
                format_double(v, text);
                permille_text(s->min, lo);
                permille_text(s->max, hi);
                errors_add(ctx->errors, config_setting_source_line(cs),
                           "%s must be between %s and %s, got %s", path, lo, hi, text);
                return -EINVAL;
        }
        /* Round to nearest; v is positive here, so no libm needed. */
        *(uint32_t *)field(base, s) = (uint32_t)(v * 1000.0 + 0.5);
        return 0;
}

/* A temperature or a percentage, stored as an integer in 1/scale units,
 * rounded to nearest (half away from zero, without libm). */
static int apply_decimal(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                         const char *path) {
        double v, scaled;
        int32_t stored;

        if (!check_type(ctx, cs, path, true, CONFIG_TYPE_FLOAT, "a number"))
                return -EINVAL;
        v = number_value(cs);
        if (!(v >= (double)s->decimal_min / s->scale && v <= (double)s->decimal_max / s->scale)) {
                char text[32], lo[32], hi[32];
                format_double(v, text);
                decimal_text(s->decimal_min, s->scale, lo);
                decimal_text(s->decimal_max, s->scale, hi);
                errors_add(ctx->errors, config_setting_source_line(cs),
                           "%s must be between %s and %s, got %s", path, lo, hi, text);
                return -EINVAL;
        }
        scaled = v * s->scale;
        stored = (int32_t)(scaled < 0 ? scaled - 0.5 : scaled + 0.5);
        /* v was in range; its product may round a hair past the bound. */
        if (stored < s->decimal_min)
                stored = s->decimal_min;
        if (stored > s->decimal_max)
                stored = s->decimal_max;
        *(int32_t *)field(base, s) = stored;
        return 0;
}

/* A power factor: "pause", or a number in [min, max] permille. */
static int apply_factor(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                        const char *path) {
        unsigned line = config_setting_source_line(cs);
        int type = config_setting_type(cs);
        char text[32], lo[32], hi[32], q[QUOTE_MAX_BYTES + 4];
        double v;

        permille_text(s->min, lo);
        permille_text(s->max, hi);
        if (type == CONFIG_TYPE_STRING) {
                const char *str = config_setting_get_string(cs);

                if (!str)
                        return -ENOMEM;
                if (strcmp(str, "pause") == 0) {
                        *(uint16_t *)field(base, s) = POWER_FACTOR_PAUSE;
                        return 0;
                }
                quote(str, q);
                errors_add(ctx->errors, line, "%s must be a number from %s to %s or \"pause\", got '%s'",
                           path, lo, hi, q);
                return -EINVAL;
        }
        if (type != CONFIG_TYPE_FLOAT && type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64) {
                errors_add(ctx->errors, line, "%s must be a number from %s to %s or \"pause\", got %s", path,
                           lo, hi, type_name(type));
                return -EINVAL;
        }
        v = number_value(cs);
        if (!(v >= s->min / 1000.0 && v <= s->max / 1000.0)) {
                format_double(v, text);
                errors_add(ctx->errors, line, "%s must be between %s and %s, or \"pause\", got %s%s", path,
                           lo, hi, text, v == 0 ? " (write \"pause\" to pause)" : "");
                return -EINVAL;
        }
        *(uint16_t *)field(base, s) = (uint16_t)(v * 1000.0 + 0.5);
        return 0;
}

/* The names a choice (SETTING_LOG_LEVEL, _PRIORITY, _RULE_PER, _ESCALATE,
 * _HARD_LIMIT) is written as. */
static const char *const *choice_names(SettingKind k, size_t *ret_n) {
        switch (k) {
        case SETTING_LOG_LEVEL:
                *ret_n = ELEMENTSOF(log_level_names);
                return log_level_names;
        case SETTING_PRIORITY:
                *ret_n = ELEMENTSOF(priority_names);
                return priority_names;
        case SETTING_RULE_PER:
                *ret_n = ELEMENTSOF(rule_per_names);
                return rule_per_names;
        case SETTING_ESCALATE:
                *ret_n = ELEMENTSOF(escalate_action_names);
                return escalate_action_names;
        case SETTING_HARD_LIMIT:
                *ret_n = ELEMENTSOF(hard_limit_action_names);
                return hard_limit_action_names;
        case SETTING_SYNC:
                *ret_n = ELEMENTSOF(durability_sync_names);
                return durability_sync_names;
        case SETTING_ESTIMATE_SOURCE:
                *ret_n = ELEMENTSOF(estimate_source_names);
                return estimate_source_names;
        default:
                assert(!"not a choice");
                *ret_n = 0;
                return NULL;
        }
}

/* The name of choice v of a choice kind, or NULL. */
static const char *choice_name(SettingKind k, unsigned v) {
        size_t n = 0;
        const char *const *names = choice_names(k, &n);

        return name_of(names, n, v);
}

/* A choice's value as an index into its names (each is an enum). */
static unsigned choice_get(const Setting *s, const void *base) {
        const void *p = field_const(base, s);

        switch (s->kind) {
        case SETTING_LOG_LEVEL:
                return (unsigned)*(const LogLevel *)p;
        case SETTING_PRIORITY:
                return (unsigned)*(const Priority *)p;
        case SETTING_ESCALATE:
                return (unsigned)*(const EscalateAction *)p;
        case SETTING_HARD_LIMIT:
                return (unsigned)*(const HardLimitAction *)p;
        case SETTING_SYNC:
                return (unsigned)*(const DurabilitySync *)p;
        case SETTING_ESTIMATE_SOURCE:
                return (unsigned)*(const EstimateSource *)p;
        default:
                return (unsigned)*(const RulePer *)p;
        }
}

static void choice_set(const Setting *s, void *base, unsigned v) {
        void *p = field(base, s);

        switch (s->kind) {
        case SETTING_LOG_LEVEL:
                *(LogLevel *)p = (LogLevel)v;
                break;
        case SETTING_PRIORITY:
                *(Priority *)p = (Priority)v;
                break;
        case SETTING_ESCALATE:
                *(EscalateAction *)p = (EscalateAction)v;
                break;
        case SETTING_HARD_LIMIT:
                *(HardLimitAction *)p = (HardLimitAction)v;
                break;
        case SETTING_SYNC:
                *(DurabilitySync *)p = (DurabilitySync)v;
                break;
        case SETTING_ESTIMATE_SOURCE:
                *(EstimateSource *)p = (EstimateSource)v;
                break;
        default:
                *(RulePer *)p = (RulePer)v;
        }
}

static int apply_choice(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                        const char *path) {
        char q[QUOTE_MAX_BYTES + 4], list[128] = "";
        size_t n = 0, len = 0;
        const char *const *names = choice_names(s->kind, &n);
        const char *v;
        int r = get_string(ctx, cs, path, &v);

        if (r < 0)
                return r;
        r = index_of(names, n, v);
        if (r >= 0) {
                choice_set(s, base, (unsigned)r);
                return 0;
        }
        for (size_t i = 0; i < n; i++)
                if (names[i])
                        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", len ? ", " : "",
                                                names[i]);
        quote(v, q);
        errors_add(ctx->errors, config_setting_source_line(cs), "%s must be one of %s, got '%s'", path, list,
                   q);
        return -EINVAL;
}

static const char *socket_problem(const char *v) {
        if (v[0] != '/')
                return "must be an absolute path";
        if (strlen(v) >= SOCKET_PATH_SIZE)
                return "too long";
        return NULL;
}

static int apply_socket(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                        const char *path) {
        unsigned line = config_setting_source_line(cs);
        char q[QUOTE_MAX_BYTES + 4];
        const char *v;
        int r = get_string(ctx, cs, path, &v);

        if (r < 0)
                return r;
        quote(v, q);
        if (v[0] != '/') {
                errors_add(ctx->errors, line, "%s must be an absolute path, got '%s'", path, q);
                return -EINVAL;
        }
        if (strlen(v) >= SOCKET_PATH_SIZE) {
                errors_add(ctx->errors, line, "%s must be shorter than %zu bytes, got %zu bytes: '%s'", path,
                           SOCKET_PATH_SIZE, strlen(v), q);
                return -EINVAL;
        }
        return store_string(field(base, s), v);
}

static bool is_rule_name_char(char ch) {
        return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
               ch == '_' || ch == '.' || ch == '-';
}

static bool rule_name_valid(const char *v) {
        size_t n = strlen(v);

        if (n < 1 || n > RULE_NAME_MAX_BYTES)
                return false;
        for (size_t i = 0; i < n; i++)
                if (!is_rule_name_char(v[i]))
                        return false;
        return true;
}

static int apply_rule_name(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                           const char *path) {
        char q[QUOTE_MAX_BYTES + 4];
        const char *v;
        int r = get_string(ctx, cs, path, &v);

        if (r < 0)
                return r;
        if (!rule_name_valid(v)) {
                quote(v, q);
                errors_add(ctx->errors, config_setting_source_line(cs),
                           "%s must be 1 to %d of the characters A-Z a-z 0-9 _ . -, got '%s'", path,
                           RULE_NAME_MAX_BYTES, q);
                return -EINVAL;
        }
        return store_string(field(base, s), v);
}

/* Why a user or group name is not one (NULL: it may be), for "PATH %s". */
static const char *id_name_problem(const Setting *s, const char *v) {
        size_t n = strlen(v);

        if (n < s->min)
                return "must not be empty";
        if (n > s->max)
                return "must be at most 256 bytes";
        if (!utf8_valid(v, n))
                return "must be valid UTF-8";
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
                        return "must not contain control characters";
        return NULL;
}

static bool is_all_digits(const char *v) {
        if (!*v)
                return false;
        for (; *v; v++)
                if (*v < '0' || *v > '9')
                        return false;
        return true;
}

/* The id an all-digits string names; false when it is above ID_MAX. */
static bool parse_id(const char *v, uint32_t *ret) {
        uint64_t id = 0;

        for (; *v; v++) {
                id = id * 10 + (uint64_t)(*v - '0');
                if (id > ID_MAX)
                        return false;
        }
        *ret = (uint32_t)id;
        return true;
}

static int store_id(const Setting *s, void *base, const char *text, bool has_id, uint32_t id) {
        int r = store_string(field(base, s), text);

        if (r < 0)
                return r;
        *(bool *)((char *)base + s->has_id_offset) = has_id;
        *(uint32_t *)((char *)base + s->id_offset) = has_id ? id : 0;
        return 0;
}

/* A user or group: a name, resolved later by config_resolve_names(), or an id,
 * resolved now. A string of digits is an id too ("1000" and 1000 are the
 * same; systemd refuses all-digit user names). */
static int apply_id(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                    const char *path) {
        bool group = s->kind == SETTING_GROUP;
        const char *what = group ? "group" : "user", *id_what = group ? "gid" : "uid", *problem, *v;
        unsigned line = config_setting_source_line(cs);
        int type = config_setting_type(cs);
        char q[QUOTE_MAX_BYTES + 4], text[16];
        uint32_t id;

        if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64) {
                long long n = config_setting_get_int64(cs);
                if (n < 0 || (unsigned long long)n > ID_MAX) {
                        errors_add(ctx->errors, line,
                                   "%s must be a %s name or a %s from 0 to %" PRIu32 ", got %lld", path,
                                   what, id_what, ID_MAX, n);
                        return -EINVAL;
                }
                snprintf(text, sizeof(text), "%lld", n);
                return store_id(s, base, text, true, (uint32_t)n);
        }
        if (type != CONFIG_TYPE_STRING) {
                errors_add(ctx->errors, line, "%s must be a %s name (a string) or a %s (an integer), got %s",
                           path, what, id_what, type_name(type));
                return -EINVAL;
        }
        v = config_setting_get_string(cs);
        if (!v)
                return -ENOMEM;
        quote(v, q);
        problem = id_name_problem(s, v);
        if (problem) {
                errors_add(ctx->errors, line, "%s %s, got '%s'", path, problem, q);
                return -EINVAL;
        }
        if (!is_all_digits(v))
                return store_id(s, base, v, false, 0);
        if (!parse_id(v, &id)) {
                errors_add(ctx->errors, line, "%s must be a %s name or a %s from 0 to %" PRIu32 ", got '%s'",
                           path, what, id_what, ID_MAX, q);
                return -EINVAL;
        }
        /* Canonical, so "01000" formats and compares as 1000. */
        snprintf(text, sizeof(text), "%" PRIu32, id);
        return store_id(s, base, text, true, id);
}

static bool is_class_name(const char *p, size_t n) {
        static const char *const classes[] = {"alnum", "alpha", "blank", "cntrl", "digit", "graph",
                                              "lower", "print", "punct", "space", "upper", "xdigit"};

        for (size_t i = 0; i < ELEMENTSOF(classes); i++)
                if (strlen(classes[i]) == n && strncmp(classes[i], p, n) == 0)
                        return true;
        return false;
}

/* The end (the closing ']') of the bracket expression that opens at p[0] ==
 * '[', as fnmatch(3) reads it without flags, or NULL with *ret_problem set.
 * "[]x]" and "[!]x]" hold a ']'; "[[:alpha:]]" a class; '\' escapes. */
static const char *bracket_end(const char *p, const char **ret_problem) {
        const char *q = p + 1;

        if (*q == '!' || *q == '^')
                q++;
        if (*q == ']')
                q++;
        for (; *q; q++) {
                if (*q == '\\') {
                        if (!q[1])
                                break;
                        q++;
                } else if (*q == '[' && (q[1] == ':' || q[1] == '.' || q[1] == '=')) {
                        char delim = q[1];
                        const char *start = q + 2, *end = start;

                        while (*end && !(end[0] == delim && end[1] == ']'))
                                end++;
                        if (!*end)
                                break;
                        if (delim == ':' && !is_class_name(start, (size_t)(end - start))) {
                                *ret_problem = "unknown character class";
                                return NULL;
                        }
                        q = end + 1;
                } else if (*q == ']')
                        return q;
        }
        *ret_problem = "unbalanced '['";
        return NULL;
}

/* Why v is not a pattern fnmatch(3) (no flags) reads as written, or NULL. */
static const char *glob_problem(const char *v) {
        size_t n = strlen(v);

        if (n == 0)
                return "empty";
        if (n > GLOB_MAX_BYTES)
                return "longer than 256 bytes";
        if (!utf8_valid(v, n))
                return "not valid UTF-8";
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
                        return "a control character";
        for (const char *p = v; *p; p++) {
                const char *problem = NULL;

                if (*p == '\\') {
                        if (!p[1])
                                return "trailing '\\'";
                        p++;
                } else if (*p == '[') {
                        p = bracket_end(p, &problem);
                        if (!p)
                                return problem;
                }
        }
        return NULL;
}

/* A string setting that must pass check (a glob, a sensor): the problem is
 * reported as a malformed glob. */
static int apply_checked_glob(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                              const char *path, const char *(*check)(const char *v)) {
        char q[QUOTE_MAX_BYTES + 4];
        const char *v, *problem;
        int r = get_string(ctx, cs, path, &v);

        if (r < 0)
                return r;
        problem = check(v);
        if (problem) {
                quote(v, q);
                errors_add(ctx->errors, config_setting_source_line(cs), "%s: malformed glob '%s': %s", path,
                           q, problem);
                return -EINVAL;
        }
        return store_string(field(base, s), v);
}

static int apply_glob(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                      const char *path) {
        return apply_checked_glob(ctx, s, base, cs, path, glob_problem);
}

#define STRINGIFY_(x) #x
#define STRINGIFY(x)  STRINGIFY_(x)

/* Why v is not a power.sensor (NULL: it may be one): "" is the default
 * choice, anything else a glob. */
static const char *sensor_problem(const char *v) {
        if (!*v)
                return NULL;
        if (strlen(v) > SENSOR_MAX_BYTES)
                return "longer than 255 bytes";
        return glob_problem(v);
}

static int apply_sensor(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                        const char *path) {
        return apply_checked_glob(ctx, s, base, cs, path, sensor_problem);
}

/* Why v is not a path setting (NULL: it may be one), for "PATH %s": "" is
 * off; a path is opened by the shell as given, so relative paths (against
 * whatever directory the daemon runs in) are refused. */
static const char *path_problem(const char *v) {
        size_t n = strlen(v);

        if (n == 0)
                return NULL;
        if (v[0] != '/')
                return "must be an absolute path or \"\" (off)";
        if (n > PATH_SETTING_MAX_BYTES)
                return "must be at most " STRINGIFY(PATH_SETTING_MAX_BYTES) " bytes";
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
                        return "must not contain control characters";
        return NULL;
}

static int apply_path(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                      const char *path) {
        char q[QUOTE_MAX_BYTES + 4];
        const char *v, *problem;
        int r = get_string(ctx, cs, path, &v);

        if (r < 0)
                return r;
        problem = path_problem(v);
        if (problem) {
                quote(v, q);
                errors_add(ctx->errors, config_setting_source_line(cs), "%s %s, got '%s'", path, problem, q);
                return -EINVAL;
        }
        return store_string(field(base, s), v);
}

/* Why v is not a model name (NULL: it may be one), for "PATH %s". A name goes
 * on the wire (suggestedModel) and into the journal: text, one line. */
static const char *model_name_problem(const char *v) {
        size_t n = strlen(v);

        if (n < 1 || n > CONFIG_MODEL_NAME_MAX_BYTES)
                return "must be 1 to " STRINGIFY(CONFIG_MODEL_NAME_MAX_BYTES) " bytes";
        if (!utf8_valid(v, n))
                return "must be valid UTF-8";
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
                        return "must not contain control characters";
        return NULL;
}

/* Why v is not a SETTING_TEXT of s (NULL: it may be one), for "PATH %s". */
static const char *text_problem(const Setting *s, const char *v, char buf[static 64]) {
        size_t n = strlen(v);

        if (n < s->min || n > s->max) {
                snprintf(buf, 64, "must be %" PRIu64 " to %" PRIu64 " bytes", s->min, s->max);
                return buf;
        }
        if (!utf8_valid(v, n))
                return "must be valid UTF-8";
        for (size_t i = 0; i < n; i++)
                if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
                        return "must not contain control characters";
        return NULL;
}

static int apply_text(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                      const char *path) {
        char q[QUOTE_MAX_BYTES + 4], buf[64];
        const char *v, *problem;
        int r = get_string(ctx, cs, path, &v);

        if (r < 0)
                return r;
        problem = text_problem(s, v, buf);
        if (problem) {
                quote(v, q);
                errors_add(ctx->errors, config_setting_source_line(cs), "%s %s, got '%s'", path, problem, q);
                return -EINVAL;
        }
        return store_string(field(base, s), v);
}

static int apply_price(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                       const char *path) {
        char text[32];
        double v;

        if (!check_type(ctx, cs, path, true, CONFIG_TYPE_FLOAT, "a number"))
                return -EINVAL;
        v = number_value(cs);
        if (!(v >= 0.0 && v <= PRICE_MAX)) {
                format_double(v, text);
                errors_add(ctx->errors, config_setting_source_line(cs),
                           "%s must be between 0 and 1000000 (per million tokens), got %s", path, text);
                return -EINVAL;
        }
        *(double *)field(base, s) = v;
        return 0;
}

/* The index of an earlier name equal to names[i], or -1. At most
 * CONFIG_MODEL_TIERS_MAX names: pairwise is cheap. */
static ssize_t names_find_earlier(char *const *names, size_t i) {
        for (size_t j = 0; j < i; j++)
                if (names[j] && names[i] && strcmp(names[j], names[i]) == 0)
                        return (ssize_t)j;
        return -1;
}

/* Stores names (n of them, taking them) in the row, freeing what it held. */
static void names_store(const Setting *s, void *base, char **names, size_t n) {
        char ***p = field(base, s);

        names_free(*p, *names_count(base, s));
        *p = n ? names : NULL;
        *names_count(base, s) = n;
        if (!n)
                free(names);
}

/* One element of an array of names; false when it is refused (reported). */
static int apply_name_elem(Context *ctx, const Setting *s, const config_setting_t *elem, unsigned line,
                           const char *path, char **names, size_t i) {
        char q[QUOTE_MAX_BYTES + 4];
        const char *v, *problem;
        ssize_t first;

        v = config_setting_get_string(elem);
        if (!v)
                return -ENOMEM;
        quote(v, q);
        problem = s->scale == NAMES_USERS ? id_name_problem(s, v) : model_name_problem(v);
        if (problem) {
                errors_add(ctx->errors, line, "%s[%zu] %s, got '%s'", path, i, problem, q);
                return -EINVAL;
        }
        names[i] = strdup(v);
        if (!names[i])
                return -ENOMEM;
        first = names_find_earlier(names, i);
        if (first >= 0) {
                errors_add(ctx->errors, line, "%s[%zu]: duplicate name '%s', first given as %s[%zd]", path,
                           i, q, path, first);
                return -EINVAL;
        }
        return 0;
}

/* trusted_proxies as parsed: a uid written as digits is known now, a name
 * when config_resolve_names() finds it. */
static void trusted_proxies_parsed(Config *c, unsigned line) {
        for (size_t i = 0; i < CONFIG_TRUSTED_PROXIES_MAX; i++) {
                uint32_t id = 0;

                c->trusted_proxy_known[i] = i < c->n_trusted_proxies &&
                                            is_all_digits(c->trusted_proxies[i]) &&
                                            parse_id(c->trusted_proxies[i], &id);
                c->trusted_proxy_uid[i] = c->trusted_proxy_known[i] ? id : 0;
        }
        c->trusted_proxies_line = line;
}

/* An array of names: [ "a", "b" ], every element checked and reported. An
 * element's error names the array's line and the element's index: libconfig
 * gives the last element the line of the token after it (the "]", often on
 * a line of its own). */
static int apply_names(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                       const char *path) {
        unsigned line = config_setting_source_line(cs);
        char **names;
        size_t n;
        int r = 0;

        if (!check_type(ctx, cs, path, false, CONFIG_TYPE_ARRAY, "an array of strings [ \"...\", ... ]"))
                return -EINVAL;
        n = (size_t)config_setting_length(cs);
        if (n > CONFIG_MODEL_TIERS_MAX) {
                errors_add(ctx->errors, line, "%s must have at most %d names, got %zu", path,
                           CONFIG_MODEL_TIERS_MAX, n);
                return -EINVAL;
        }
        names = calloc(n ?: 1, sizeof(*names));
        if (!names)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                const config_setting_t *elem = config_setting_get_elem(cs, (unsigned)i);
                int k;

                /* libconfig's arrays hold one type: one message says it. */
                if (config_setting_type(elem) != CONFIG_TYPE_STRING) {
                        errors_add(ctx->errors, line, "%s[%zu] must be a string, got %s", path, i,
                                   type_name(config_setting_type(elem)));
                        r = -EINVAL;
                        break;
                }
                k = apply_name_elem(ctx, s, elem, line, path, names, i);
                if (k == -ENOMEM) {
                        r = k;
                        break;
                }
                if (k < 0)
                        r = k;
        }
        if (r < 0) {
                names_free(names, n);
                return r;
        }
        names_store(s, base, names, n);
        if (s->scale == NAMES_USERS)
                trusted_proxies_parsed(base, line);
        return 0;
}

typedef int (*ApplyFunc)(Context *ctx, const Setting *s, void *base, const config_setting_t *cs,
                         const char *path);

static const ApplyFunc apply_funcs[_SETTING_KIND_MAX] = {
        [SETTING_SOCKET] = apply_socket,
        [SETTING_UINT] = apply_uint,
        [SETTING_MULTIPLIER] = apply_multiplier,
        [SETTING_LOG_LEVEL] = apply_choice,
        [SETTING_BOOL] = apply_bool,
        [SETTING_SECONDS] = apply_seconds,
        [SETTING_USER] = apply_id,
        [SETTING_GROUP] = apply_id,
        [SETTING_GLOB] = apply_glob,
        [SETTING_PRIORITY] = apply_choice,
        [SETTING_RULE_PER] = apply_choice,
        [SETTING_RULE_NAME] = apply_rule_name,
        [SETTING_ESCALATE] = apply_choice,
        [SETTING_HARD_LIMIT] = apply_choice,
        [SETTING_SYNC] = apply_choice,
        [SETTING_ESTIMATE_SOURCE] = apply_choice,
        [SETTING_NAMES] = apply_names,
        [SETTING_SENSOR] = apply_sensor,
        [SETTING_PATH] = apply_path,
        [SETTING_DECIMAL] = apply_decimal,
        [SETTING_FACTOR] = apply_factor,
        [SETTING_TEXT] = apply_text,
        [SETTING_PRICE] = apply_price,
};

/* ---- the tree walk ---- */

/* One table's settings being read into one struct. */
typedef struct Walk {
        const Setting *table;
        size_t n_table;
        void *base;         /* the Config or RuleConfig the table's offsets are into */
        uint32_t *set;      /* RuleConfig.set, or NULL */
        unsigned *lines;    /* per row: the line that set it; 0 if none */
        bool *invalid;      /* per row: set in the file but refused; NULL: not kept */
        const char *prefix; /* "" at the top level, "rules[3] ('x')" in a rule */
        bool top;           /* the top level, where "rules" lives */
} Walk;

static void make_path(char *buf, size_t size, const char *prefix, const char *group, const char *name) {
        snprintf(buf, size, "%s%s%s%s%s", prefix, *prefix ? "." : "", group ?: "", group ? "." : "", name);
}

static int apply_row(Context *ctx, const Walk *w, size_t index, const config_setting_t *cs,
                     const char *path) {
        const Setting *s = &w->table[index];
        int r = apply_funcs[s->kind](ctx, s, w->base, cs, path);

        if (r >= 0) {
                w->lines[index] = config_setting_source_line(cs);
                if (w->set)
                        *w->set |= s->set_bit;
        } else if (w->invalid)
                w->invalid[index] = true;
        return r;
}

static int walk_rules(Context *ctx, const config_setting_t *cs);
static int walk_prices(Context *ctx, const config_setting_t *cs);

/* A setting of a group (group_name) or of the walk's own level (NULL). */
static int walk_member(Context *ctx, const Walk *w, const config_setting_t *cs, const char *group_name,
                       const char *name);

static int walk_group(Context *ctx, const Walk *w, const config_setting_t *group, const char *group_name) {
        for (int i = 0; i < config_setting_length(group); i++) {
                const config_setting_t *cs = config_setting_get_elem(group, (unsigned)i);
                const char *name = cs ? config_setting_name(cs) : NULL;

                /* libconfig 1.5 leaves a setting nameless when copying its name
                 * failed: out of memory, not a configuration error. */
                if (!name)
                        return -ENOMEM;
                if (walk_member(ctx, w, cs, group_name, name) == -ENOMEM)
                        return -ENOMEM;
        }
        return 0;
}

/* Whether group.name (group NULL: the walk's level) is a setting or a group
 * of the table. */
static bool walk_knows(const Walk *w, const char *group_name, const char *name) {
        char sub[128];

        snprintf(sub, sizeof(sub), "%s%s%s", group_name ?: "", group_name ? "." : "", name);
        return table_find(w->table, w->n_table, group_name, name) >= 0 ||
               table_has_group(w->table, w->n_table, sub);
}

/* " (write 'low_battery')" for a name written with '-' where the file's
 * names have '_' (power states are "low-battery" on the wire), else "". */
static void dash_hint(const Walk *w, const char *group_name, const char *name, char buf[static 96]) {
        char fixed[64];
        size_t n = strlen(name);

        buf[0] = '\0';
        if (!strchr(name, '-') || n >= sizeof(fixed))
                return;
        for (size_t i = 0; i <= n; i++)
                fixed[i] = name[i] == '-' ? '_' : name[i];
        if (walk_knows(w, group_name, fixed))
                snprintf(buf, 96, " (write '%s')", fixed);
}

static void unknown_setting(Context *ctx, const Walk *w, unsigned line, const char *group_name,
                            const char *name) {
        /* A predicate written next to the rule's settings, not in its match group. */
        bool predicate = !w->top && !group_name && table_find(w->table, w->n_table, "match", name) >= 0;
        char hint[96];

        dash_hint(w, group_name, name, hint);
        errors_add(ctx->errors, line, "%s%sunknown setting '%s%s%s'%s%s", w->prefix, *w->prefix ? ": " : "",
                   group_name ?: "", group_name ? "." : "", name,
                   predicate ? " (predicates go in match = { ... })" : "", hint);
}

static int walk_member(Context *ctx, const Walk *w, const config_setting_t *cs, const char *group_name,
                       const char *name) {
        unsigned line = config_setting_source_line(cs);
        char path[192], sub[128];
        int index;

        if (!group_name && w->top && strcmp(name, "rules") == 0)
                return walk_rules(ctx, cs);
        if (group_name && w->top && strcmp(group_name, "prices") == 0 && strcmp(name, "models") == 0)
                return walk_prices(ctx, cs);
        make_path(path, sizeof(path), w->prefix, group_name, name);
        /* The group this member is if it is one: "power", "power.policy", "power.policy.hot". */
        snprintf(sub, sizeof(sub), "%s%s%s", group_name ?: "", group_name ? "." : "", name);
        if (table_has_group(w->table, w->n_table, sub)) {
                if (!check_type(ctx, cs, path, false, CONFIG_TYPE_GROUP, "a group"))
                        return 0;
                return walk_group(ctx, w, cs, sub);
        }
        index = table_find(w->table, w->n_table, group_name, name);
        if (index < 0) {
                unknown_setting(ctx, w, line, group_name, name);
                return 0;
        }
        /* A rule's name was read first, to name the rule in every message. */
        if (!w->top && w->table[index].kind == SETTING_RULE_NAME)
                return 0;
        return apply_row(ctx, w, (size_t)index, cs, path);
}

/* The member of group named name, or NULL; -ENOMEM in *ret_r when libconfig
 * left a member nameless. (Not config_setting_get_member(), which compares
 * those NULL names with strcmp().) */
static const config_setting_t *find_member(const config_setting_t *group, const char *name, int *ret_r) {
        *ret_r = 0;
        for (int i = 0; i < config_setting_length(group); i++) {
                const config_setting_t *cs = config_setting_get_elem(group, (unsigned)i);
                const char *n = cs ? config_setting_name(cs) : NULL;

                if (!n) {
                        *ret_r = -ENOMEM;
                        return NULL;
                }
                if (strcmp(n, name) == 0)
                        return cs;
        }
        return NULL;
}

static void rule_prefix(const RuleConfig *rule, size_t i, char buf[static 96]) {
        if (rule->name)
                snprintf(buf, 96, "rules[%zu] ('%s')", i, rule->name);
        else
                snprintf(buf, 96, "rules[%zu]", i);
}

static int parse_rule(Context *ctx, const config_setting_t *cs, size_t i) {
        RuleConfig *rule = &ctx->config->rules[i];
        const config_setting_t *name;
        char prefix[96], path[128];
        Walk w = {
                .table = rule_settings,
                .n_table = ELEMENTSOF(rule_settings),
                .base = rule,
                .set = &rule->set,
                .lines = ctx->rule_lines + i * ELEMENTSOF(rule_settings),
                .prefix = prefix,
        };
        int r;

        rule->line = config_setting_source_line(cs);
        rule->per = RULE_PER_RULE;
        rule_prefix(rule, i, prefix);
        if (!check_type(ctx, cs, prefix, false, CONFIG_TYPE_GROUP, "a group { ... }"))
                return 0;
        name = find_member(cs, "name", &r);
        if (r < 0)
                return r;
        if (name) {
                snprintf(path, sizeof(path), "%s.name", prefix);
                r = apply_row(ctx, &w, rule_setting_index("name"), name, path);
                if (r == -ENOMEM)
                        return r;
                rule_prefix(rule, i, prefix);
        } else
                errors_add(ctx->errors, rule->line,
                           "%s: missing setting 'name' (every rule needs a unique name)", prefix);
        return walk_group(ctx, &w, cs, NULL);
}

/* A list of groups ("rules", "prices.models"): at most max, each element
 * parsed by parse into the n items of elem_size bytes calloc'ed at *items,
 * with n_fields lines each at *lines. */
typedef struct ListOf {
        const char *path, *what; /* "rules", "rules" */
        size_t max, elem_size, n_fields;
        void **items;
        size_t *n_items;
        unsigned **lines;
        int (*parse)(Context *ctx, const config_setting_t *cs, size_t i);
} ListOf;

static int walk_list(Context *ctx, const config_setting_t *cs, const ListOf *l) {
        size_t n;

        if (!check_type(ctx, cs, l->path, false, CONFIG_TYPE_LIST, "a list ( { ... }, ... )"))
                return 0;
        n = (size_t)config_setting_length(cs);
        if (n > l->max) {
                errors_add(ctx->errors,
                           config_setting_source_line(config_setting_get_elem(cs, (unsigned)l->max)),
                           "%s must have at most %zu %s, got %zu", l->path, l->max, l->what, n);
                n = l->max;
        }
        if (n == 0)
                return 0;
        *l->items = calloc(n, l->elem_size);
        *l->lines = calloc(n * l->n_fields, sizeof(unsigned));
        if (!*l->items || !*l->lines)
                return -ENOMEM;
        *l->n_items = n;
        for (size_t i = 0; i < n; i++) {
                int r = l->parse(ctx, config_setting_get_elem(cs, (unsigned)i), i);
                if (r == -ENOMEM)
                        return r;
        }
        return 0;
}

static int walk_rules(Context *ctx, const config_setting_t *cs) {
        return walk_list(ctx, cs,
                         &(ListOf){.path = "rules",
                                   .what = "rules",
                                   .max = CONFIG_RULES_MAX,
                                   .elem_size = sizeof(RuleConfig),
                                   .n_fields = ELEMENTSOF(rule_settings),
                                   .items = (void **)&ctx->config->rules,
                                   .n_items = &ctx->config->n_rules,
                                   .lines = &ctx->rule_lines,
                                   .parse = parse_rule});
}

/* "prices.models": a list of { model; input_per_million; output_per_million; },
 * each given, no model twice. */
static int parse_price(Context *ctx, const config_setting_t *cs, size_t i) {
        ConfigPrice *price = &ctx->config->prices[i];
        unsigned *lines = ctx->price_lines + i * ELEMENTSOF(price_settings);
        char prefix[64];
        Walk w = {
                .table = price_settings,
                .n_table = ELEMENTSOF(price_settings),
                .base = price,
                .lines = lines,
                .prefix = prefix,
        };
        int r;

        snprintf(prefix, sizeof(prefix), "prices.models[%zu]", i);
        if (!check_type(ctx, cs, prefix, false, CONFIG_TYPE_GROUP, "a group { ... }"))
                return 0;
        r = walk_group(ctx, &w, cs, NULL);
        if (r < 0)
                return r;
        for (size_t j = 0; j < ELEMENTSOF(price_settings); j++)
                if (!lines[j] && !find_member(cs, price_settings[j].name, &r) && r == 0)
                        errors_add(ctx->errors, config_setting_source_line(cs), "%s: missing setting '%s'",
                                   prefix, price_settings[j].name);
        if (!price->model)
                return r;
        for (size_t j = 0; j < i; j++)
                if (ctx->config->prices[j].model &&
                    strcmp(ctx->config->prices[j].model, price->model) == 0) {
                        char q[QUOTE_MAX_BYTES + 4];
                        quote(price->model, q);
                        errors_add(ctx->errors, lines[0],
                                   "%s: model '%s' is priced twice, first in prices.models[%zu]", prefix, q,
                                   j);
                        break;
                }
        return r;
}

static int walk_prices(Context *ctx, const config_setting_t *cs) {
        return walk_list(ctx, cs,
                         &(ListOf){.path = "prices.models",
                                   .what = "models",
                                   .max = CONFIG_PRICES_MAX,
                                   .elem_size = sizeof(ConfigPrice),
                                   .n_fields = ELEMENTSOF(price_settings),
                                   .items = (void **)&ctx->config->prices,
                                   .n_items = &ctx->config->n_prices,
                                   .lines = &ctx->price_lines,
                                   .parse = parse_price});
}

/* ---- relations between settings ---- */

/*
 * Whether a relation between settings a and b can be checked: a value the file
 * got wrong was not stored, and comparing its default with the other value
 * would report a problem the file does not have. *ret_line is the line to
 * blame: a's if the file set it, else b's.
 */
static bool relation_checkable(const Context *ctx, const char *group, const char *a, const char *b,
                               unsigned *ret_line) {
        size_t ia = setting_index(group, a), ib = setting_index(group, b);

        if (ctx->invalid[ia] || ctx->invalid[ib])
                return false;
        *ret_line = ctx->lines[ia] ?: ctx->lines[ib];
        return true;
}

/* The queue's and the breakers' settings (issue 10). */
static void check_ladder_relations(Context *ctx) {
        const Config *c = ctx->config;
        unsigned line;

        if (relation_checkable(ctx, "queue", "max_waiters_per_uid", "max_waiters", &line) &&
            c->queue_max_waiters_per_uid > c->queue_max_waiters)
                errors_add(ctx->errors, line,
                           "queue.max_waiters_per_uid (%" PRIu64
                           ") must not be greater than queue.max_waiters (%" PRIu64 ")",
                           c->queue_max_waiters_per_uid, c->queue_max_waiters);
        /* Equal would leave and enter degraded mode on the same value: no hysteresis. */
        if (relation_checkable(ctx, "breaker", "pool_release", "pool_threshold", &line) &&
            c->pool_release_permille >= c->pool_threshold_permille)
                errors_add(ctx->errors, line,
                           "breaker.pool_release must be below breaker.pool_threshold (%g), got %g",
                           c->pool_threshold_permille / 1000.0, c->pool_release_permille / 1000.0);
        if (relation_checkable(ctx, "breaker", "max_cooldown_sec", "cooldown_sec", &line) &&
            c->max_cooldown_usec < c->cooldown_usec)
                errors_add(ctx->errors, line,
                           "breaker.max_cooldown_sec (%" PRIu64
                           ") must not be less than breaker.cooldown_sec (%" PRIu64 ")",
                           c->max_cooldown_usec / USEC_PER_SEC, c->cooldown_usec / USEC_PER_SEC);
}

/* The power group's hysteresis: each release value on the side of its
 * threshold that leaves the condition only once the reading is clearly
 * back (equal would flap on one value), and critical above hot. Messages
 * in the units of the file. */
typedef struct PowerRelation {
        const char *a, *b; /* a must be above (above) or below b */
        bool above;
        size_t offset_a, offset_b; /* int32_t fields of Config */
        uint32_t scale;
} PowerRelation;

#define POWER_RELATION(a, b, above, fa, fb, sc)                                                             \
        { a, b, above, offsetof(Config, power.fa), offsetof(Config, power.fb), sc }

static const PowerRelation power_relations[] = {
        POWER_RELATION("low_battery_release_percent", "low_battery_percent", true,
                       low_battery_release_permille, low_battery_permille, 10),
        POWER_RELATION("hot_release_celsius", "hot_celsius", false, hot_release_mc, hot_mc, 1000),
        POWER_RELATION("critical_celsius", "hot_celsius", true, critical_mc, hot_mc, 1000),
        POWER_RELATION("critical_release_celsius", "critical_celsius", false, critical_release_mc,
                       critical_mc, 1000),
        POWER_RELATION("memory_pressure_release_percent", "memory_pressure_percent", false,
                       pressure_release_cp, pressure_cp, 100),
};

static void check_power_relations(Context *ctx) {
        const char *c = (const char *)ctx->config;

        for (size_t i = 0; i < ELEMENTSOF(power_relations); i++) {
                const PowerRelation *rel = &power_relations[i];
                int32_t a = *(const int32_t *)(c + rel->offset_a), b = *(const int32_t *)(c + rel->offset_b);
                char ta[32], tb[32];
                unsigned line;

                if (!relation_checkable(ctx, "power", rel->a, rel->b, &line) || (rel->above ? a > b : a < b))
                        continue;
                decimal_text(a, rel->scale, ta);
                decimal_text(b, rel->scale, tb);
                errors_add(ctx->errors, line, "power.%s must be %s power.%s (%s), got %s", rel->a,
                           rel->above ? "above" : "below", rel->b, tb, ta);
        }
}

static void check_top_relations(Context *ctx) {
        const Config *c = ctx->config;
        unsigned line;

        if (relation_checkable(ctx, NULL, "warn_multiplier", "hard_multiplier", &line) &&
            c->warn_permille > c->hard_permille)
                errors_add(ctx->errors, line,
                           "warn_multiplier (%g) must not be greater than hard_multiplier (%g)",
                           c->warn_permille / 1000.0, c->hard_permille / 1000.0);
        /* Equal would let one uid take every slot and lock every other user out. */
        if (relation_checkable(ctx, "limits", "max_connections_per_uid", "max_connections", &line) &&
            c->max_connections_per_uid >= c->max_connections)
                errors_add(ctx->errors, line,
                           "limits.max_connections_per_uid (%" PRIu64
                           ") must be less than limits.max_connections (%" PRIu64 ")",
                           c->max_connections_per_uid, c->max_connections);
        if (relation_checkable(ctx, "limits", "admin_connections", "max_connections", &line) &&
            c->admin_connections >= c->max_connections)
                errors_add(ctx->errors, line,
                           "limits.admin_connections (%" PRIu64
                           ") must be less than limits.max_connections (%" PRIu64 ")",
                           c->admin_connections, c->max_connections);
        if (relation_checkable(ctx, "limits", "max_output_bytes_per_uid", "max_output_bytes", &line) &&
            c->max_output_bytes_per_uid < c->max_output_bytes)
                errors_add(ctx->errors, line,
                           "limits.max_output_bytes_per_uid (%" PRIu64
                           ") must not be less than limits.max_output_bytes (%" PRIu64 ")",
                           c->max_output_bytes_per_uid, c->max_output_bytes);
        if (relation_checkable(ctx, "estimator", "tail_half_life_samples", "half_life_samples", &line) &&
            c->estimator_tail_half_life_samples < c->estimator_half_life_samples)
                errors_add(ctx->errors, line,
                           "estimator.tail_half_life_samples (%" PRIu64
                           ") must not be less than estimator.half_life_samples (%" PRIu64 ")",
                           c->estimator_tail_half_life_samples, c->estimator_half_life_samples);
        check_ladder_relations(ctx);
        check_power_relations(ctx);
}

/* A rule's multipliers: warn <= hard, each of the rule's own against the
 * other of the rule's, or the top-level one when the rule sets only one. */
static void check_rule_multipliers(Context *ctx, const RuleConfig *rule, const unsigned *lines,
                                   const char *prefix) {
        const Config *c = ctx->config;
        bool warn = rule->set & RULE_SET_WARN, hard = rule->set & RULE_SET_HARD;

        if (warn && hard && rule->warn_permille > rule->hard_permille)
                errors_add(ctx->errors, lines[rule_setting_index("warn_multiplier")],
                           "%s.warn_multiplier (%g) must not be greater than its hard_multiplier (%g)",
                           prefix, rule->warn_permille / 1000.0, rule->hard_permille / 1000.0);
        else if (warn && !hard && !ctx->invalid[setting_index(NULL, "hard_multiplier")] &&
                 rule->warn_permille > c->hard_permille)
                errors_add(ctx->errors, lines[rule_setting_index("warn_multiplier")],
                           "%s.warn_multiplier (%g) must not be greater than the top-level hard_multiplier "
                           "(%g)",
                           prefix, rule->warn_permille / 1000.0, c->hard_permille / 1000.0);
        else if (hard && !warn && !ctx->invalid[setting_index(NULL, "warn_multiplier")] &&
                 c->warn_permille > rule->hard_permille)
                errors_add(
                        ctx->errors, lines[rule_setting_index("hard_multiplier")],
                        "%s.hard_multiplier (%g) must not be less than the top-level warn_multiplier (%g)",
                        prefix, rule->hard_permille / 1000.0, c->warn_permille / 1000.0);
}

static void check_rule_relations(Context *ctx, size_t i) {
        const RuleConfig *rule = &ctx->config->rules[i];
        const unsigned *lines = ctx->rule_lines + i * ELEMENTSOF(rule_settings);
        char prefix[96];

        rule_prefix(rule, i, prefix);
        /* A greater value is a lower priority. */
        if ((rule->set & RULE_SET_PRIORITY) && (rule->set & RULE_SET_MAX_PRIORITY) &&
            rule->priority < rule->max_priority)
                errors_add(ctx->errors, lines[rule_setting_index("priority")],
                           "%s.priority ('%s') must not be above its max_priority ('%s')", prefix,
                           priority_to_string(rule->priority), priority_to_string(rule->max_priority));
        check_rule_multipliers(ctx, rule, lines, prefix);
}

typedef struct NamedRule {
        const char *name;
        size_t index;
} NamedRule;

static int named_rule_compare(const void *a, const void *b) {
        const NamedRule *x = a, *y = b;
        int r = strcmp(x->name, y->name);

        if (r != 0)
                return r;
        return x->index < y->index ? -1 : x->index > y->index;
}

/*
 * Calls found(i, first, userdata) for every rule i whose name an earlier rule
 * first has too, in no particular order; rules without a name are skipped.
 * O(n log n): 10000 rules are 50 million comparisons pairwise. Returns 0, or
 * -ENOMEM.
 */
static int find_duplicate_names(const RuleConfig *rules, size_t n, void (*found)(size_t, size_t, void *),
                                void *userdata) {
        NamedRule *sorted;
        size_t m = 0;

        if (n < 2)
                return 0;
        sorted = calloc(n, sizeof(*sorted));
        if (!sorted)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++)
                if (rules[i].name)
                        sorted[m++] = (NamedRule){rules[i].name, i};
        qsort(sorted, m, sizeof(*sorted), named_rule_compare);
        for (size_t i = 1, first = 0; i < m; i++) {
                if (strcmp(sorted[i].name, sorted[first].name) != 0) {
                        first = i;
                        continue;
                }
                found(sorted[i].index, sorted[first].index, userdata);
        }
        free(sorted);
        return 0;
}

static void duplicate_name_found(size_t i, size_t first, void *userdata) {
        Context *ctx = userdata;
        const RuleConfig *rules = ctx->config->rules;
        size_t row = rule_setting_index("name");

        errors_add(ctx->errors, ctx->rule_lines[i * ELEMENTSOF(rule_settings) + row],
                   "rules[%zu]: duplicate rule name '%s', first used by rules[%zu] on line %u", i,
                   rules[i].name, first, ctx->rule_lines[first * ELEMENTSOF(rule_settings) + row]);
}

static int check_relations(Context *ctx) {
        check_top_relations(ctx);
        for (size_t i = 0; i < ctx->config->n_rules; i++)
                check_rule_relations(ctx, i);
        return find_duplicate_names(ctx->config->rules, ctx->config->n_rules, duplicate_name_found, ctx);
}

/* ---- parsing ---- */

/* Parses the prepared text into ctx->config, adding any errors. */
static int parse_prepared(Context *ctx, const char *prepared) {
        Walk w = {
                .table = settings,
                .n_table = ELEMENTSOF(settings),
                .base = ctx->config,
                .lines = ctx->lines,
                .invalid = ctx->invalid,
                .prefix = "",
                .top = true,
        };
        config_t lc;
        int r = 0;

        config_init(&lc);
        if (!config_read_string(&lc, prepared)) {
                errors_add(ctx->errors, (unsigned)config_error_line(&lc), "%s",
                           config_error_text(&lc) ?: "syntax error");
                config_destroy(&lc);
                return 0;
        }
        r = walk_group(ctx, &w, config_root_setting(&lc), NULL);
        config_destroy(&lc);
        if (r < 0)
                return r;
        ctx->config->admin_group_line = ctx->lines[setting_index(NULL, "admin_group")];
        return check_relations(ctx);
}

/* A NUL byte ends the text for libconfig and our lexer alike, so whatever
 * follows it would silently not be read: a file zero-filled by a power loss
 * would become the built-in defaults. Refuse it, naming where it is. */
static void check_no_nul(const char *data, size_t size, Errors *errors) {
        const char *nul = memchr(data, 0, size);
        unsigned line = 1;

        if (!nul)
                return;
        for (const char *p = data; p < nul; p++)
                line += *p == '\n';
        errors_add(errors, line,
                   "NUL byte at offset %zu: not a text file (zero-filled after a crash or power loss?); "
                   "nothing of it was applied",
                   (size_t)(nul - data));
}

int config_parse(const char *text, const char *filename, Config *ret, char **ret_errors) {
        assert(text);
        return config_parse_buffer(text, strlen(text), filename, ret, ret_errors);
}

int config_parse_buffer(const char *text, size_t size, const char *filename, Config *ret,
                        char **ret_errors) {
        Errors errors = {.filename = filename};
        Context ctx = {.errors = &errors};
        Config c;
        char *prepared;
        int r;

        assert(text || size == 0);
        assert(filename);
        assert(ret);

        if (ret_errors)
                *ret_errors = NULL;
        r = config_init_defaults(&c);
        if (r < 0)
                return r;
        ctx.config = &c;

        check_no_nul(text, size, &errors);
        if (errors.n == 0) {
                /* The lexer wants a terminated string; the caller's bytes need not be one. */
                char *copy = strndup(text ?: "", size);

                prepared = copy ? prepare_text(copy, &errors) : NULL;
                r = prepared ? parse_prepared(&ctx, prepared) : -ENOMEM;
                free(prepared);
                free(copy);
        }
        free(ctx.rule_lines);
        free(ctx.price_lines);
        if (r >= 0 && errors.oom)
                r = -ENOMEM;
        if (r >= 0 && errors.n > 0) {
                r = -EINVAL;
                if (ret_errors) {
                        *ret_errors = errors_join(&errors);
                        if (!*ret_errors)
                                r = -ENOMEM;
                }
        }
        errors_done(&errors);
        if (r < 0) {
                config_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}

/* ---- formatting ---- */

static void format_string(FILE *f, const char *s) {
        fputc('"', f);
        for (; *s; s++) {
                unsigned char ch = (unsigned char)*s;
                if (ch == '"' || ch == '\\')
                        fprintf(f, "\\%c", ch);
                else if (ch < 0x20 || ch == 0x7f)
                        fprintf(f, "\\x%02x", ch);
                else
                        fputc(ch, f);
        }
        fputc('"', f);
}

static void format_uint(FILE *f, uint64_t v) {
        /* libconfig itself needs the L suffix past 32 bits. */
        fprintf(f, "%" PRIu64 "%s", v, v > INT_MAX ? "L" : "");
}

static void format_value(FILE *f, const Setting *s, const void *base) {
        const void *p = field_const(base, s);
        char text[32];

        switch (s->kind) {
        case SETTING_SOCKET:
        case SETTING_GLOB:
        case SETTING_RULE_NAME:
        case SETTING_SENSOR:
        case SETTING_PATH:
        case SETTING_TEXT:
                format_string(f, *(char *const *)p ?: "");
                break;
        case SETTING_PRICE:
                format_double(*(const double *)p, text);
                fputs(text, f);
                break;
        case SETTING_DECIMAL:
                decimal_text(*(const int32_t *)p, s->scale, text);
                fputs(text, f);
                break;
        case SETTING_FACTOR:
                if (*(const uint16_t *)p == POWER_FACTOR_PAUSE)
                        fputs("\"pause\"", f);
                else {
                        permille_text(*(const uint16_t *)p, text);
                        fputs(text, f);
                }
                break;
        case SETTING_USER:
        case SETTING_GROUP:
                /* An id was stored as its canonical digits. */
                if (is_all_digits(*(char *const *)p))
                        format_uint(f, strtoull(*(char *const *)p, NULL, 10));
                else
                        format_string(f, *(char *const *)p ?: "");
                break;
        case SETTING_UINT:
                format_uint(f, *(const uint64_t *)p);
                break;
        case SETTING_MULTIPLIER:
                permille_text(*(const uint32_t *)p, text);
                fputs(text, f);
                break;
        case SETTING_LOG_LEVEL:
        case SETTING_PRIORITY:
        case SETTING_RULE_PER:
        case SETTING_ESCALATE:
        case SETTING_HARD_LIMIT:
        case SETTING_SYNC:
        case SETTING_ESTIMATE_SOURCE:
                format_string(f, choice_name(s->kind, choice_get(s, base)) ?: "");
                break;
        case SETTING_BOOL:
                fputs(*(const bool *)p ? "true" : "false", f);
                break;
        case SETTING_NAMES: {
                char *const *names = *(char **const *)p;
                size_t n = names_count_const(base, s);

                fputs("[ ", f);
                for (size_t i = 0; i < n; i++) {
                        format_string(f, names[i]);
                        fputs(i + 1 < n ? ", " : " ", f);
                }
                fputc(']', f);
                break;
        }
        case SETTING_SECONDS:
                /* Parsed from whole seconds, so exact. */
                fprintf(f, "%" PRIu64, *(const uint64_t *)p / USEC_PER_SEC);
                break;
        case _SETTING_KIND_MAX:
                assert(!"unknown setting kind");
        }
}

/* How many groups deep a row's group is: NULL 0, "power" 1, "power.policy.hot" 3. */
static size_t group_depth(const char *group) {
        size_t n = group ? 1 : 0;

        for (; group && *group; group++)
                n += *group == '.';
        return n;
}

/* The length of the first depth components of group ("power.policy" of
 * "power.policy.hot" for 2). */
static size_t group_prefix_len(const char *group, size_t depth) {
        size_t i = 0;

        for (; group[i]; i++)
                if (group[i] == '.' && --depth == 0)
                        break;
        return i;
}

/* How many leading groups a and b share. */
static size_t groups_shared(const char *a, const char *b) {
        size_t da = group_depth(a), db = group_depth(b), k = 0;

        while (k < da && k < db) {
                size_t la = group_prefix_len(a, k + 1), lb = group_prefix_len(b, k + 1);

                if (la != lb || strncmp(a, b, la) != 0)
                        break;
                k++;
        }
        return k;
}

/* From the groups of from to those of to: closes what to is not in, opens
 * what from was not in. */
static void format_groups(FILE *f, const char *from, const char *to, int indent) {
        size_t shared = groups_shared(from, to), depth = group_depth(from);

        for (; depth > shared; depth--)
                fprintf(f, "%*s};\n", indent + 8 * (int)(depth - 1), "");
        for (; depth < group_depth(to); depth++) {
                size_t start = depth ? group_prefix_len(to, depth) + 1 : 0;
                size_t end = group_prefix_len(to, depth + 1);

                fprintf(f, "%*s%.*s = {\n", indent + 8 * (int)depth, "", (int)(end - start), to + start);
        }
}

/* The rows of a table that count, grouped, each line indented by indent. */
static void format_rows(FILE *f, const Setting *table, size_t n, const void *base, uint32_t set,
                        int indent) {
        const char *group = NULL;

        for (size_t i = 0; i < n; i++) {
                const Setting *s = &table[i];

                if (!streq_ptr(group, s->group)) {
                        format_groups(f, group, s->group, indent);
                        group = s->group;
                }
                if (!row_counts(s, set) || (s->optional && !*(char *const *)field_const(base, s)))
                        continue;
                fprintf(f, "%*s%s = ", indent + 8 * (int)group_depth(group), "", s->name);
                format_value(f, s, base);
                fputs(";\n", f);
        }
        format_groups(f, group, NULL, indent);
}

char *config_format(const Config *c) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f;

        assert(c);

        f = open_memstream(&buf, &size);
        if (!f)
                return NULL;
        format_rows(f, settings, ELEMENTSOF(settings) - PRICE_ROWS, c, 0, 0);
        fputs("prices = {\n        currency = ", f);
        format_string(f, c->price_currency ?: "");
        if (c->n_prices == 0)
                fputs(";\n        models = ( );\n};\n", f);
        else {
                fputs(";\n        models = (\n", f);
                for (size_t i = 0; i < c->n_prices; i++) {
                        fputs("                {\n", f);
                        format_rows(f, price_settings, ELEMENTSOF(price_settings), &c->prices[i], 0, 24);
                        fputs(i + 1 < c->n_prices ? "                },\n" : "                }\n", f);
                }
                fputs("        );\n};\n", f);
        }
        if (c->n_rules == 0)
                fputs("rules = ( );\n", f);
        else {
                fputs("rules = (\n", f);
                for (size_t i = 0; i < c->n_rules; i++) {
                        fputs("        {\n", f);
                        format_rows(f, rule_settings, ELEMENTSOF(rule_settings), &c->rules[i],
                                    c->rules[i].set, 16);
                        fputs(i + 1 < c->n_rules ? "        },\n" : "        }\n", f);
                }
                fputs(");\n", f);
        }
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

/* ---- comparison ---- */

static bool row_equal(const Setting *s, const void *a, const void *b) {
        const void *pa = field_const(a, s), *pb = field_const(b, s);

        if (is_id_kind(s->kind)) {
                bool has_a = *(const bool *)((const char *)a + s->has_id_offset);
                bool has_b = *(const bool *)((const char *)b + s->has_id_offset);
                uint32_t id_a = *(const uint32_t *)((const char *)a + s->id_offset);
                uint32_t id_b = *(const uint32_t *)((const char *)b + s->id_offset);

                if (has_a != has_b || (has_a && id_a != id_b))
                        return false;
        }
        if (is_string_kind(s->kind))
                return streq_ptr(*(char *const *)pa, *(char *const *)pb);
        if (s->kind == SETTING_NAMES) {
                size_t n = names_count_const(a, s);

                if (n != names_count_const(b, s))
                        return false;
                for (size_t i = 0; i < n; i++)
                        if (!streq_ptr((*(char **const *)pa)[i], (*(char **const *)pb)[i]))
                                return false;
                if (s->scale == NAMES_USERS) {
                        const Config *ca = a, *cb = b;

                        for (size_t i = 0; i < n && i < CONFIG_TRUSTED_PROXIES_MAX; i++)
                                if (ca->trusted_proxy_known[i] != cb->trusted_proxy_known[i] ||
                                    ca->trusted_proxy_uid[i] != cb->trusted_proxy_uid[i])
                                        return false;
                }
                return true;
        }
        switch (s->kind) {
        case SETTING_UINT:
        case SETTING_SECONDS:
                return *(const uint64_t *)pa == *(const uint64_t *)pb;
        case SETTING_MULTIPLIER:
                return *(const uint32_t *)pa == *(const uint32_t *)pb;
        case SETTING_BOOL:
                return *(const bool *)pa == *(const bool *)pb;
        case SETTING_DECIMAL:
                return *(const int32_t *)pa == *(const int32_t *)pb;
        case SETTING_FACTOR:
                return *(const uint16_t *)pa == *(const uint16_t *)pb;
        case SETTING_PRICE:
                return *(const double *)pa == *(const double *)pb;
        default:
                return choice_get(s, a) == choice_get(s, b);
        }
}

static bool rows_equal(const Setting *table, size_t n, const void *a, const void *b, uint32_t set) {
        for (size_t i = 0; i < n; i++)
                if (row_counts(&table[i], set) && !row_equal(&table[i], a, b))
                        return false;
        return true;
}

/* Where a setting was written (admin_group_line, a rule's line) is not part
 * of the configuration: a formatted copy has other lines. */
bool config_equal(const Config *a, const Config *b) {
        assert(a);
        assert(b);

        if (!rows_equal(settings, ELEMENTSOF(settings), a, b, 0) || a->n_rules != b->n_rules)
                return false;
        for (size_t i = 0; i < a->n_rules; i++)
                if (a->rules[i].set != b->rules[i].set ||
                    !rows_equal(rule_settings, ELEMENTSOF(rule_settings), &a->rules[i], &b->rules[i],
                                a->rules[i].set))
                        return false;
        if (a->n_prices != b->n_prices)
                return false;
        for (size_t i = 0; i < a->n_prices; i++)
                if (!rows_equal(price_settings, ELEMENTSOF(price_settings), &a->prices[i], &b->prices[i], 0))
                        return false;
        return true;
}

/* ---- names to ids ---- */

typedef struct Resolver {
        ConfigLookupFunc lookup;
        void *userdata;
        Errors warnings;
} Resolver;

/* Resolves one name; an unknown one (or a failed lookup) is a warning whose
 * message begins with what, ends with consequence. */
static int resolve_one(Resolver *res, bool group, const char *name, bool *has_id, uint32_t *id,
                       unsigned line, const char *what, const char *consequence) {
        char q[QUOTE_MAX_BYTES + 4];
        uint32_t v = 0;
        int r;

        if (!name || !*name || *has_id)
                return 0;
        r = res->lookup(group, name, &v, res->userdata);
        if (r == -ENOMEM)
                return r;
        if (r >= 0) {
                *has_id = true;
                *id = v;
                return 0;
        }
        quote(name, q);
        if (r == -ENOENT)
                errors_add(&res->warnings, line, "warning: %s '%s' is not a known %s; %s", what, q,
                           group ? "group" : "user", consequence);
        else
                errors_add(&res->warnings, line, "warning: %s '%s': cannot look the %s up (%s); %s", what, q,
                           group ? "group" : "user", strerror(-r), consequence);
        return 0;
}

static int resolve_rule(Resolver *res, RuleConfig *rule) {
        RuleMatch *m = &rule->match;
        char what[128];
        int r;

        snprintf(what, sizeof(what), "rule '%s': match.user", rule->name ?: "");
        r = resolve_one(res, false, m->user, &m->has_uid, &m->uid, rule->line, what,
                        "the rule can never match");
        if (r < 0)
                return r;
        snprintf(what, sizeof(what), "rule '%s': match.group", rule->name ?: "");
        return resolve_one(res, true, m->group, &m->has_gid, &m->gid, rule->line, what,
                           "the rule can never match");
}

int config_resolve_names(Config *c, const char *filename, ConfigLookupFunc lookup, void *userdata,
                         char **ret_warnings) {
        Resolver res = {.lookup = lookup, .userdata = userdata, .warnings = {.filename = filename}};
        int r;

        assert(c);
        assert(filename);
        assert(lookup);

        if (ret_warnings)
                *ret_warnings = NULL;
        r = resolve_one(&res, true, c->admin_group, &c->has_admin_gid, &c->admin_gid, c->admin_group_line,
                        "admin_group", "it makes nobody an admin");
        for (size_t i = 0; r >= 0 && i < c->n_rules; i++)
                r = resolve_rule(&res, &c->rules[i]);
        for (size_t i = 0; r >= 0 && i < c->n_trusted_proxies && i < CONFIG_TRUSTED_PROXIES_MAX; i++)
                r = resolve_one(&res, false, c->trusted_proxies[i], &c->trusted_proxy_known[i],
                                &c->trusted_proxy_uid[i], c->trusted_proxies_line, "trusted_proxies",
                                "it is not trusted");
        if (r >= 0 && res.warnings.oom)
                r = -ENOMEM;
        if (r >= 0 && res.warnings.n > 0 && ret_warnings) {
                *ret_warnings = errors_join(&res.warnings);
                if (!*ret_warnings)
                        r = -ENOMEM;
        }
        errors_done(&res.warnings);
        return r;
}

/* ---- packing ---- */

/* "tokenbudget config", version 3 (issue 11's power group): bump it with any
 * change to what follows. */
static const char pack_magic[8] = {'T', 'B', 'C', 'O', 'N', 'F', 0, 6};

#define PACK_NULL_STRING UINT32_MAX

typedef struct Packer {
        char *data;
        size_t size, allocated;
        int error; /* the first: -ENOMEM, or -E2BIG for a string past 4 GiB */
} Packer;

static void pack_bytes(Packer *p, const void *data, size_t n) {
        if (p->error || n == 0)
                return;
        if (n > p->allocated - p->size) {
                size_t allocated = p->allocated ? p->allocated : 1024;
                char *bigger;

                while (n > allocated - p->size) {
                        if (allocated > SIZE_MAX / 2) {
                                p->error = -ENOMEM;
                                return;
                        }
                        allocated *= 2;
                }
                bigger = realloc(p->data, allocated);
                if (!bigger) {
                        p->error = -ENOMEM;
                        return;
                }
                p->data = bigger;
                p->allocated = allocated;
        }
        memcpy(p->data + p->size, data, n);
        p->size += n;
}

static void pack_u8(Packer *p, uint8_t v) {
        pack_bytes(p, &v, sizeof(v));
}

static void pack_u32(Packer *p, uint32_t v) {
        pack_bytes(p, &v, sizeof(v));
}

static void pack_u64(Packer *p, uint64_t v) {
        pack_bytes(p, &v, sizeof(v));
}

/* A length, then the bytes without the NUL; PACK_NULL_STRING for NULL. */
static void pack_string(Packer *p, const char *s) {
        size_t n = s ? strlen(s) : 0;

        if (n >= PACK_NULL_STRING) {
                p->error = p->error ?: -E2BIG;
                return;
        }
        pack_u32(p, s ? (uint32_t)n : PACK_NULL_STRING);
        pack_bytes(p, s, n);
}

static void pack_row(Packer *p, const Setting *s, const void *base) {
        const void *v = field_const(base, s);

        if (is_string_kind(s->kind))
                pack_string(p, *(char *const *)v);
        if (is_id_kind(s->kind)) {
                pack_u8(p, *(const bool *)((const char *)base + s->has_id_offset));
                pack_u32(p, *(const uint32_t *)((const char *)base + s->id_offset));
        }
        switch (s->kind) {
        case SETTING_UINT:
        case SETTING_SECONDS:
                pack_u64(p, *(const uint64_t *)v);
                break;
        case SETTING_PRICE: {
                uint64_t bits;
                memcpy(&bits, v, sizeof(bits));
                pack_u64(p, bits);
                break;
        }
        case SETTING_MULTIPLIER:
                pack_u32(p, *(const uint32_t *)v);
                break;
        case SETTING_BOOL:
                pack_u8(p, *(const bool *)v);
                break;
        case SETTING_DECIMAL: {
                int32_t d = *(const int32_t *)v;

                pack_u32(p, (uint32_t)d); /* two's complement; unpacking checks the range */
                break;
        }
        case SETTING_FACTOR:
                pack_u32(p, *(const uint16_t *)v);
                break;
        case SETTING_LOG_LEVEL:
        case SETTING_PRIORITY:
        case SETTING_RULE_PER:
        case SETTING_ESCALATE:
        case SETTING_HARD_LIMIT:
        case SETTING_SYNC:
        case SETTING_ESTIMATE_SOURCE:
                pack_u32(p, choice_get(s, base));
                break;
        case SETTING_NAMES: {
                size_t n = names_count_const(base, s);

                /* At most CONFIG_MODEL_TIERS_MAX: unpacking refuses more. */
                pack_u32(p, n > UINT32_MAX ? UINT32_MAX : (uint32_t)n);
                for (size_t i = 0; i < n; i++)
                        pack_string(p, (*(char **const *)v)[i]);
                if (s->scale == NAMES_USERS) {
                        const Config *c = base;

                        for (size_t i = 0; i < n && i < CONFIG_TRUSTED_PROXIES_MAX; i++) {
                                pack_u8(p, c->trusted_proxy_known[i]);
                                pack_u32(p, c->trusted_proxy_uid[i]);
                        }
                }
                break;
        }
        default:
                break;
        }
}

static void pack_rows(Packer *p, const Setting *table, size_t n, const void *base, uint32_t set) {
        for (size_t i = 0; i < n; i++)
                if (row_counts(&table[i], set))
                        pack_row(p, &table[i], base);
}

int config_pack(const Config *c, char **ret, size_t *ret_size) {
        Packer p = {};

        assert(c);
        assert(ret);
        assert(ret_size);

        pack_bytes(&p, pack_magic, sizeof(pack_magic));
        pack_rows(&p, settings, ELEMENTSOF(settings), c, 0);
        pack_u32(&p, c->admin_group_line);
        pack_u32(&p, c->trusted_proxies_line);
        pack_u32(&p, (uint32_t)c->n_rules);
        for (size_t i = 0; i < c->n_rules; i++) {
                pack_u32(&p, c->rules[i].line);
                pack_u32(&p, c->rules[i].set);
                pack_rows(&p, rule_settings, ELEMENTSOF(rule_settings), &c->rules[i], c->rules[i].set);
        }
        pack_u32(&p, (uint32_t)c->n_prices);
        for (size_t i = 0; i < c->n_prices; i++)
                pack_rows(&p, price_settings, ELEMENTSOF(price_settings), &c->prices[i], 0);
        if (p.error) {
                free(p.data);
                return p.error;
        }
        *ret = p.data;
        *ret_size = p.size;
        return 0;
}

typedef struct Unpacker {
        const char *p;
        size_t left;
} Unpacker;

static bool unpack_bytes(Unpacker *u, void *ret, size_t n) {
        if (n > u->left)
                return false;
        memcpy(ret, u->p, n);
        u->p += n;
        u->left -= n;
        return true;
}

static int unpack_string(Unpacker *u, char **ret) {
        uint32_t n;
        char *s;

        if (!unpack_bytes(u, &n, sizeof(n)))
                return -EPROTO;
        if (n == PACK_NULL_STRING) {
                *ret = NULL;
                return 0;
        }
        /* A NUL inside would make the string another, shorter one. */
        if (n > u->left || memchr(u->p, 0, n))
                return -EPROTO;
        s = strndup(u->p, n);
        if (!s)
                return -ENOMEM;
        u->p += n;
        u->left -= n;
        *ret = s;
        return 0;
}

/* Whether a string row holds what apply_funcs[] could have stored. */
static bool string_row_valid(const Setting *s, const void *base) {
        const char *v = *(char *const *)field_const(base, s);
        bool has_id = is_id_kind(s->kind) && *(const bool *)((const char *)base + s->has_id_offset);
        uint32_t id = is_id_kind(s->kind) ? *(const uint32_t *)((const char *)base + s->id_offset) : 0,
                 digits_id;

        if (!v)
                return s->optional && !has_id;
        switch (s->kind) {
        case SETTING_SOCKET:
                return !socket_problem(v);
        case SETTING_GLOB:
                return !glob_problem(v);
        case SETTING_RULE_NAME:
                return rule_name_valid(v);
        case SETTING_SENSOR:
                return !sensor_problem(v);
        case SETTING_PATH:
                return !path_problem(v);
        case SETTING_TEXT: {
                char buf[64];
                return !text_problem(s, v, buf);
        }
        default:
                if (id_name_problem(s, v) || (has_id && id > ID_MAX) || (!has_id && id != 0))
                        return false;
                /* Digits are an id, resolved when parsed, and written canonically. */
                if (!is_all_digits(v))
                        return true;
                return has_id && parse_id(v, &digits_id) && digits_id == id && (v[0] != '0' || !v[1]);
        }
}

static int unpack_scalar_row(Unpacker *u, const Setting *s, void *base) {
        void *p = field(base, s);
        uint64_t v64;
        uint32_t v32;
        uint8_t v8;

        switch (s->kind) {
        case SETTING_UINT:
        case SETTING_SECONDS: {
                uint64_t unit = s->kind == SETTING_SECONDS ? USEC_PER_SEC : 1;
                if (!unpack_bytes(u, &v64, sizeof(v64)) || v64 % unit != 0 || v64 / unit < s->min ||
                    v64 / unit > s->max)
                        return -EPROTO;
                *(uint64_t *)p = v64;
                return 0;
        }
        case SETTING_MULTIPLIER:
                if (!unpack_bytes(u, &v32, sizeof(v32)) || v32 < s->min || v32 > s->max)
                        return -EPROTO;
                *(uint32_t *)p = v32;
                return 0;
        case SETTING_PRICE: {
                double d;
                if (!unpack_bytes(u, &v64, sizeof(v64)))
                        return -EPROTO;
                memcpy(&d, &v64, sizeof(d));
                if (!(d >= 0.0 && d <= PRICE_MAX))
                        return -EPROTO;
                *(double *)p = d;
                return 0;
        }
        case SETTING_BOOL:
                if (!unpack_bytes(u, &v8, sizeof(v8)) || v8 > 1)
                        return -EPROTO;
                *(bool *)p = v8;
                return 0;
        case SETTING_DECIMAL:
                if (!unpack_bytes(u, &v32, sizeof(v32)) || (int32_t)v32 < s->decimal_min ||
                    (int32_t)v32 > s->decimal_max)
                        return -EPROTO;
                *(int32_t *)p = (int32_t)v32;
                return 0;
        case SETTING_FACTOR:
                if (!unpack_bytes(u, &v32, sizeof(v32)) ||
                    (v32 != POWER_FACTOR_PAUSE && (v32 < s->min || v32 > s->max)))
                        return -EPROTO;
                *(uint16_t *)p = (uint16_t)v32;
                return 0;
        default:
                if (!unpack_bytes(u, &v32, sizeof(v32)) || !choice_name(s->kind, v32))
                        return -EPROTO;
                choice_set(s, base, v32);
                return 0;
        }
}

/* An array of names, each what apply_names() could have stored. */
static int unpack_names(Unpacker *u, const Setting *s, void *base) {
        char **names;
        uint32_t n;

        if (!unpack_bytes(u, &n, sizeof(n)) || n > CONFIG_MODEL_TIERS_MAX)
                return -EPROTO;
        if (n == 0)
                return 0;
        names = calloc(n, sizeof(*names));
        if (!names)
                return -ENOMEM;
        /* Stored at once, so config_done() frees what a failure leaves. */
        names_store(s, base, names, n);
        for (size_t i = 0; i < n; i++) {
                int r = unpack_string(u, &names[i]);

                if (r < 0)
                        return r;
                if (!names[i] ||
                    (s->scale == NAMES_USERS ? id_name_problem(s, names[i]) != NULL
                                             : model_name_problem(names[i]) != NULL) ||
                    names_find_earlier(names, i) >= 0)
                        return -EPROTO;
        }
        if (s->scale == NAMES_USERS) {
                Config *c = base;

                for (size_t i = 0; i < n; i++) {
                        uint8_t known;
                        uint32_t id, digits_id;

                        if (!unpack_bytes(u, &known, sizeof(known)) || known > 1 ||
                            !unpack_bytes(u, &id, sizeof(id)) || (!known && id != 0) || id > ID_MAX)
                                return -EPROTO;
                        /* Digits are a uid, known when parsed. */
                        if (is_all_digits(names[i]) &&
                            (!known || !parse_id(names[i], &digits_id) || digits_id != id))
                                return -EPROTO;
                        c->trusted_proxy_known[i] = known;
                        c->trusted_proxy_uid[i] = id;
                }
        }
        return 0;
}

static int unpack_row(Unpacker *u, const Setting *s, void *base) {
        uint8_t has_id;
        uint32_t id;
        int r;

        if (s->kind == SETTING_NAMES)
                return unpack_names(u, s, base);
        if (!is_string_kind(s->kind))
                return unpack_scalar_row(u, s, base);
        r = unpack_string(u, field(base, s));
        if (r < 0)
                return r;
        if (is_id_kind(s->kind)) {
                if (!unpack_bytes(u, &has_id, sizeof(has_id)) || has_id > 1 ||
                    !unpack_bytes(u, &id, sizeof(id)))
                        return -EPROTO;
                *(bool *)((char *)base + s->has_id_offset) = has_id;
                *(uint32_t *)((char *)base + s->id_offset) = id;
        }
        return string_row_valid(s, base) ? 0 : -EPROTO;
}

static int unpack_rows(Unpacker *u, const Setting *table, size_t n, void *base, uint32_t set) {
        for (size_t i = 0; i < n; i++) {
                int r;

                if (!row_counts(&table[i], set))
                        continue;
                r = unpack_row(u, &table[i], base);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void duplicate_found(size_t i, size_t first, void *userdata) {
        (void)i;
        (void)first;
        *(bool *)userdata = true;
}

static int unpack_rules(Unpacker *u, Config *c) {
        bool duplicate = false;
        uint32_t n;
        int r;

        if (!unpack_bytes(u, &n, sizeof(n)) || n > CONFIG_RULES_MAX)
                return -EPROTO;
        if (n == 0)
                return 0;
        c->rules = calloc(n, sizeof(RuleConfig));
        if (!c->rules)
                return -ENOMEM;
        c->n_rules = n;
        for (size_t i = 0; i < n; i++) {
                RuleConfig *rule = &c->rules[i];

                if (!unpack_bytes(u, &rule->line, sizeof(rule->line)) ||
                    !unpack_bytes(u, &rule->set, sizeof(rule->set)) || (rule->set & ~(uint32_t)RULE_SET_ALL))
                        return -EPROTO;
                r = unpack_rows(u, rule_settings, ELEMENTSOF(rule_settings), rule, rule->set);
                if (r < 0)
                        return r;
        }
        r = find_duplicate_names(c->rules, c->n_rules, duplicate_found, &duplicate);
        if (r < 0)
                return r;
        return duplicate ? -EPROTO : 0;
}

static int unpack_prices(Unpacker *u, Config *c) {
        uint32_t n;

        if (!unpack_bytes(u, &n, sizeof(n)) || n > CONFIG_PRICES_MAX)
                return -EPROTO;
        if (n == 0)
                return 0;
        c->prices = calloc(n, sizeof(ConfigPrice));
        if (!c->prices)
                return -ENOMEM;
        c->n_prices = n;
        for (size_t i = 0; i < n; i++) {
                int r = unpack_rows(u, price_settings, ELEMENTSOF(price_settings), &c->prices[i], 0);
                if (r < 0)
                        return r;
                for (size_t j = 0; j < i; j++)
                        if (strcmp(c->prices[j].model, c->prices[i].model) == 0)
                                return -EPROTO;
        }
        return 0;
}

int config_unpack(const char *buf, size_t size, Config *ret) {
        Unpacker u = {.p = buf, .left = size};
        char magic[sizeof(pack_magic)];
        Config c = {};
        int r = -EPROTO;

        assert(buf || size == 0);
        assert(ret);

        if (unpack_bytes(&u, magic, sizeof(magic)) && memcmp(magic, pack_magic, sizeof(magic)) == 0)
                r = unpack_rows(&u, settings, ELEMENTSOF(settings), &c, 0);
        if (r >= 0 && (!unpack_bytes(&u, &c.admin_group_line, sizeof(c.admin_group_line)) ||
                       !unpack_bytes(&u, &c.trusted_proxies_line, sizeof(c.trusted_proxies_line))))
                r = -EPROTO;
        if (r >= 0)
                r = unpack_rules(&u, &c);
        if (r >= 0)
                r = unpack_prices(&u, &c);
        if (r >= 0 && u.left != 0)
                r = -EPROTO;
        if (r < 0) {
                config_done(&c);
                return r;
        }
        *ret = c;
        return 0;
}
