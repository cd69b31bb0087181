/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/core/config.c: built-in defaults, every setting overridden,
 * every kind of invalid input with its "FILE:LINE: message", several errors
 * in one file, the format -> parse round trip, config_equal(), and that
 * conf/tokenbudgetd.conf lists exactly the settings, each at its default.
 * Rules: every key, per, user and group as names and ids, globs valid and
 * malformed, names missing and duplicated, CONFIG_RULES_MAX; each error's
 * exact text. The escalation ladder's settings (issue 10): every value's
 * bounds and wrong types, model_tiers' elements, the relations within the
 * queue and breaker groups, and their rule settings. The power group (issue
 * 11): every setting and policy entry, each bound, wrong type, unknown name
 * at each level of power.policy.STATE, relation and "pause" misspelling; a
 * policy replacing only the entries it names. config_resolve_names() with a
 * table for NSS, and config_pack()/config_unpack() round trips and garbage.
 * Links only the core library (and libconfig, to walk files independently).
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <libconfig.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "tb-check.h"

#ifndef SRCDIR
#error "SRCDIR must point at the source tree"
#endif

#define ELEMENTSOF(x) (sizeof(x) / sizeof((x)[0]))
#define FILENAME      "test.conf"

#define A10  "aaaaaaaaaa"
#define A100 A10 A10 A10 A10 A10 A10 A10 A10 A10 A10
/* An absolute path of 107 bytes (the longest that fits sun_path) and of 108. */
#define SOCKET_107 "/" A100 "aaaaaa"
#define SOCKET_108 "/" A100 "aaaaaaa"
/* The longest power.sensor, 255 bytes. */
#define SENSOR_255 A100 A100 A10 A10 A10 A10 A10 "aaaaa"

/* ---- helpers ---- */

static bool streq(const char *a, const char *b) {
        return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static size_t count_lines(const char *s) {
        size_t n = 0;

        for (; s && *s; s++)
                n += *s == '\n';
        return n;
}

/* Whether errors has a line starting with "FILE:LINE: " and containing needle. */
static bool has_error(const char *errors, unsigned line, const char *needle) {
        char prefix[64];
        const char *p = errors;

        snprintf(prefix, sizeof(prefix), FILENAME ":%u: ", line);
        while (p && *p) {
                const char *eol = strchr(p, '\n');
                size_t len = eol ? (size_t)(eol - p) : strlen(p);
                char *l = strndup(p, len);
                bool found = l && strncmp(l, prefix, strlen(prefix)) == 0 && strstr(l, needle);
                free(l);
                if (found)
                        return true;
                p = eol ? eol + 1 : NULL;
        }
        return false;
}

static void parse_ok_named(const char *text, const char *filename, const char *row, Config *ret) {
        char *errors = (char *)"unset";
        int r = config_parse(text, filename, ret, &errors);

        ck_assert_msg(r == 0, "row '%s': config_parse() = %d, errors:\n%s", row, r,
                      errors ? errors : "(none)");
        ck_assert_msg(!errors, "row '%s': errors set on success", row);
}

static void parse_ok(const char *text, const char *row, Config *ret) {
        parse_ok_named(text, FILENAME, row, ret);
}

static char *read_file(const char *path) {
        FILE *f = fopen(path, "re");
        char *buf;
        long size;

        ck_assert_msg(f, "cannot open %s", path);
        ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
        size = ftell(f);
        ck_assert_int_ge(size, 0);
        rewind(f);
        buf = malloc((size_t)size + 1);
        ck_assert_ptr_nonnull(buf);
        ck_assert_uint_eq(fread(buf, 1, (size_t)size, f), (size_t)size);
        buf[size] = '\0';
        fclose(f);
        return buf;
}

/* ---- rows that set one field ---- */

typedef enum FieldType {
        FIELD_U64,
        FIELD_PERMILLE,
        FIELD_LOG_LEVEL,
        FIELD_STRING,
        FIELD_BOOL,
        FIELD_ADMIN_GROUP,     /* string, and number the gid (NO_ID: a name, not resolved) */
        FIELD_RULES,           /* one rule named string, everything else at its default */
        FIELD_ESCALATE,        /* an EscalateAction, number */
        FIELD_HARD_LIMIT,      /* a HardLimitAction, number */
        FIELD_SYNC,            /* a DurabilitySync, number */
        FIELD_ESTIMATE_SOURCE, /* an EstimateSource, number */
        FIELD_NAMES,           /* model_tiers: string is the names joined by commas, "" for none */
        FIELD_PROXIES,         /* trusted_proxies: the same; digits are known uids */
        FIELD_DECIMAL,         /* an int32_t (power thresholds), number (as int64_t) */
        FIELD_FACTOR,          /* a uint16_t power factor in permille, number */
} FieldType;

#define NO_ID UINT64_MAX

typedef struct OverrideRow {
        const char *path;  /* "name" or "group.name" */
        const char *value; /* as written in the file */
        size_t offset;
        FieldType type;
        uint64_t number;
        const char *string;
        int64_t decimal; /* FIELD_DECIMAL */
} OverrideRow;

#define U64(p, v, member, n)                                                                                \
        { p, v, offsetof(Config, member), FIELD_U64, n, NULL }
#define BOOL(p, v, member, n)                                                                               \
        { p, v, offsetof(Config, member), FIELD_BOOL, n, NULL }
#define PERMILLE(p, v, member, n)                                                                           \
        { p, v, offsetof(Config, member), FIELD_PERMILLE, n, NULL }
#define ESCALATE(v, n)                                                                                      \
        { "on_escalate", v, offsetof(Config, on_escalate), FIELD_ESCALATE, n, NULL }
#define HARD_LIMIT(v, n)                                                                                    \
        { "on_hard_limit", v, offsetof(Config, on_hard_limit), FIELD_HARD_LIMIT, n, NULL }
#define SYNC(v, n)                                                                                          \
        { "durability.sync", v, offsetof(Config, durability_sync), FIELD_SYNC, n, NULL }
#define SOURCE(v, n)                                                                                        \
        { "estimate_source", v, offsetof(Config, estimate_source), FIELD_ESTIMATE_SOURCE, n, NULL }
#define PROXIES(v, joined)                                                                                  \
        { "trusted_proxies", v, offsetof(Config, trusted_proxies), FIELD_PROXIES, 0, joined }
#define TIERS(v, joined)                                                                                    \
        { "model_tiers", v, offsetof(Config, model_tiers), FIELD_NAMES, 0, joined }
#define ADMIN(v, string, id)                                                                                \
        { "admin_group", v, offsetof(Config, admin_group), FIELD_ADMIN_GROUP, id, string }
#define STRING(p, v, member, str)                                                                           \
        { p, v, offsetof(Config, member), FIELD_STRING, 0, str }
#define DECIMAL(p, v, member, n)                                                                            \
        { p, v, offsetof(Config, member), FIELD_DECIMAL, 0, NULL, n }
/* power.policy.STATE.PRIORITY = v, stored as n permille. */
#define FACTOR(state, st, prio, pr, v, n)                                                                   \
        { "power.policy." state "." prio, v, offsetof(Config, power.factor[st][pr]), FIELD_FACTOR, n, NULL }
/* The five budgets of a "user", "unit" or "agent" group (and "global"'s max_allocations). */
#define LIMITS5(g, a, b, c, d, e)                                                                           \
        U64(#g ".tokens_per_minute", #a, g.window_tokens[LEDGER_WINDOW_MINUTE], a),                         \
                U64(#g ".tokens_per_hour", #b, g.window_tokens[LEDGER_WINDOW_HOUR], b),                     \
                U64(#g ".tokens_per_day", #c, g.window_tokens[LEDGER_WINDOW_DAY], c),                       \
                U64(#g ".max_tokens_in_flight", #d, g.in_flight_tokens, d),                                 \
                U64(#g ".max_allocations", #e, g.max_allocations, e)

static const OverrideRow override_rows[] = {
        {"socket", "\"/tmp/tb/other.sock\"", offsetof(Config, socket_path), FIELD_STRING, 0,
         "/tmp/tb/other.sock"},
        {"socket", "\"" SOCKET_107 "\"", offsetof(Config, socket_path), FIELD_STRING, 0, SOCKET_107},
        {"socket", "\"/tmp/a\\\"b\\\\c\\td\"", offsetof(Config, socket_path), FIELD_STRING, 0,
         "/tmp/a\"b\\c\td"},
        /* Comment markers, a quote and @include inside strings and comments are not what they seem. */
        {"socket", "\"/tmp/#x//y/*z*/@include\" /* \" */", offsetof(Config, socket_path), FIELD_STRING, 0,
         "/tmp/#x//y/*z*/@include"},
        U64("default_estimate", "1", default_estimate, 1),
        U64("default_estimate", "999999999999", default_estimate, 999999999999),
        U64("max_request_tokens", "123456", max_request_tokens, 123456),
        U64("max_request_tokens", "999999999999L", max_request_tokens, 999999999999),
        PERMILLE("warn_multiplier", "1.25", warn_permille, 1250),
        PERMILLE("warn_multiplier", "1", warn_permille, 1000),
        PERMILLE("warn_multiplier", "1.0006", warn_permille, 1001),
        PERMILLE("warn_multiplier", "1.0004", warn_permille, 1000),
        PERMILLE("hard_multiplier", "3", hard_permille, 3000),
        PERMILLE("hard_multiplier", "5.0", hard_permille, 5000),
        PERMILLE("hard_multiplier", "2.345", hard_permille, 2345),
        PERMILLE("hard_multiplier", ".5e1", hard_permille, 5000),
        PERMILLE("hard_multiplier", "25e-1", hard_permille, 2500),
        PERMILLE("hard_multiplier", "+1.8e+0", hard_permille, 1800),
        {"log_level", "\"err\"", offsetof(Config, log_level), FIELD_LOG_LEVEL, LOG_LEVEL_ERR, NULL},
        {"log_level", "\"warning\"", offsetof(Config, log_level), FIELD_LOG_LEVEL, LOG_LEVEL_WARNING, NULL},
        {"log_level", "\"notice\"", offsetof(Config, log_level), FIELD_LOG_LEVEL, LOG_LEVEL_NOTICE, NULL},
        {"log_level", "\"debug\"", offsetof(Config, log_level), FIELD_LOG_LEVEL, LOG_LEVEL_DEBUG, NULL},
        U64("global.tokens_per_minute", "0", global.window_tokens[LEDGER_WINDOW_MINUTE], 0),
        U64("global.tokens_per_hour", "7", global.window_tokens[LEDGER_WINDOW_HOUR], 7),
        /* libconfig 1.5 alone would wrap this to 1. */
        U64("global.tokens_per_day", "4294967297", global.window_tokens[LEDGER_WINDOW_DAY], 4294967297),
        U64("global.max_tokens_in_flight", "999999999999", global.in_flight_tokens, 999999999999),
        U64("global.max_allocations", "0", global.max_allocations, 0),
        U64("global.max_allocations", "999999999999", global.max_allocations, 999999999999),
        LIMITS5(user, 1, 2, 3, 4, 5),
        LIMITS5(user, 999999999999, 999999999999, 999999999999, 999999999999, 999999999999),
        LIMITS5(unit, 0, 0, 7, 0, 0),
        LIMITS5(unit, 6, 7, 8, 9, 10),
        LIMITS5(agent, 0, 0, 7, 0, 0),
        LIMITS5(agent, 11, 12, 13, 14, 15),
        ADMIN("\"wheel\"", "wheel", NO_ID),
        ADMIN("10", "10", 10),
        ADMIN("\"10\"", "10", 10),
        ADMIN("\"0010\"", "10", 10),
        ADMIN("0", "0", 0),
        ADMIN("4294967294", "4294967294", 4294967294),
        ADMIN("\"\xc3\xa9quipe\"", "\xc3\xa9quipe", NO_ID),
        {"rules", "( { name = \"only\"; } )", offsetof(Config, rules), FIELD_RULES, 0, "only"},
        {"rules", "( { name = \"a-Z_0.9\"; match = { }; } )", offsetof(Config, rules), FIELD_RULES, 0,
         "a-Z_0.9"},
        U64("process.tokens_per_minute", "0x10", process.window_tokens[LEDGER_WINDOW_MINUTE], 16),
        U64("process.tokens_per_hour", "0xFFFFFFFF", process.window_tokens[LEDGER_WINDOW_HOUR], 4294967295),
        U64("process.tokens_per_day", "+0042", process.window_tokens[LEDGER_WINDOW_DAY], 42),
        U64("process.max_tokens_in_flight", "5LL", process.in_flight_tokens, 5),
        U64("limits.max_message_bytes", "1024", max_message_bytes, 1024),
        U64("limits.max_message_bytes", "16777216", max_message_bytes, 16777216),
        U64("limits.max_output_bytes", "65536", max_output_bytes, 65536),
        /* The largest a per-connection bound can be with the default per-uid bound. */
        U64("limits.max_output_bytes", "8388608", max_output_bytes, 8388608),
        U64("limits.max_connections", "1000000", max_connections, 1000000),
        U64("limits.max_connections_per_uid", "1", max_connections_per_uid, 1),
        U64("limits.max_connections_per_uid", "1023", max_connections_per_uid, 1023),
        U64("limits.max_allocations_per_process", "1", max_allocations_per_process, 1),
        U64("limits.max_allocations_per_process", "1000000", max_allocations_per_process, 1000000),
        U64("limits.max_tracked_processes", "1", max_tracked_processes, 1),
        U64("limits.max_tracked_processes", "10000000", max_tracked_processes, 10000000),
        U64("limits.max_tracked_processes_per_uid", "1", max_tracked_processes_per_uid, 1),
        U64("limits.max_tracked_processes_per_uid", "10000000", max_tracked_processes_per_uid, 10000000),
        U64("limits.max_tracked_scopes", "1", max_tracked_scopes, 1),
        U64("limits.max_tracked_scopes", "10000000", max_tracked_scopes, 10000000),
        U64("limits.max_tracked_scopes_per_uid", "1", max_tracked_scopes_per_uid, 1),
        U64("limits.max_tracked_scopes_per_uid", "10000000", max_tracked_scopes_per_uid, 10000000),
        U64("limits.max_output_bytes_per_uid", "1048576", max_output_bytes_per_uid, 1048576),
        U64("limits.max_output_bytes_per_uid", "1073741824", max_output_bytes_per_uid, 1073741824),
        U64("limits.admin_connections", "0", admin_connections, 0),
        U64("limits.admin_connections", "1023", admin_connections, 1023),
        U64("limits.idle_timeout_sec", "0", idle_timeout_usec, 0),
        U64("limits.idle_timeout_sec", "86400", idle_timeout_usec, 86400000000),
        U64("limits.allocation_idle_timeout_sec", "1", allocation_idle_timeout_usec, 1000000),
        U64("limits.allocation_idle_timeout_sec", "604800", allocation_idle_timeout_usec, 604800000000),
        BOOL("journal.log_granted", "true", journal_log_granted, true),
        BOOL("journal.log_granted", "false", journal_log_granted, false),
        /* libconfig spells booleans in any case. */
        BOOL("journal.log_granted", "TRUE", journal_log_granted, true),
        /* Seconds in the file, microseconds in Config. */
        U64("journal.rate_limit_interval_sec", "0", journal_rate_limit_interval_usec, 0),
        U64("journal.rate_limit_interval_sec", "1", journal_rate_limit_interval_usec, 1000000),
        U64("journal.rate_limit_interval_sec", "3600", journal_rate_limit_interval_usec, 3600000000),
        U64("journal.rate_limit_interval_sec", "0x3c", journal_rate_limit_interval_usec, 60000000),
        U64("journal.rate_limit_burst", "0", journal_rate_limit_burst, 0),
        U64("journal.rate_limit_burst", "1", journal_rate_limit_burst, 1),
        U64("journal.rate_limit_burst", "1000000", journal_rate_limit_burst, 1000000),
        /* the escalation ladder */
        PERMILLE("escalate_multiplier", "1", escalate_permille, 1000),
        PERMILLE("escalate_multiplier", "3.25", escalate_permille, 3250),
        PERMILLE("escalate_multiplier", "10.0", escalate_permille, 10000),
        ESCALATE("\"hold\"", ESCALATE_HOLD),
        ESCALATE("\"refuse\"", ESCALATE_REFUSE),
        HARD_LIMIT("\"terminate\"", HARD_LIMIT_TERMINATE),
        HARD_LIMIT("\"none\"", HARD_LIMIT_NONE),
        U64("terminate_grace_sec", "1", terminate_grace_usec, 1000000),
        U64("terminate_grace_sec", "3600", terminate_grace_usec, 3600000000),
        BOOL("enforce", "false", enforce, false),
        BOOL("enforce", "true", enforce, true),
        PROXIES("[ ]", ""),
        PROXIES("[ \"tokenbudget-proxy\" ]", "tokenbudget-proxy"),
        PROXIES("[ \"proxy\", \"1234\", \"0\" ]", "proxy,1234,0"),
        TIERS("[ ]", ""),
        TIERS("[ \"only\" ]", "only"),
        TIERS("[ \"large\", \"medium\", \"small\" ]", "large,medium,small"),
        /* Anything but control characters: a quote, a backslash, UTF-8, spaces. */
        TIERS("[ \"o\\\"k\", \"a\\\\b\", \"\xc4\x8d\", \"gpt 4\" ]", "o\"k,a\\b,\xc4\x8d,gpt 4"),
        TIERS("[\n  \"a\",\n  \"b\"\n]", "a,b"),
        /* max_waiters_per_uid (128 by default) is at most max_waiters. */
        U64("queue.max_waiters", "128", queue_max_waiters, 128),
        U64("queue.max_waiters", "1000000", queue_max_waiters, 1000000),
        U64("queue.max_waiters_per_uid", "0", queue_max_waiters_per_uid, 0),
        U64("queue.max_waiters_per_uid", "1024", queue_max_waiters_per_uid, 1024),
        U64("queue.max_wait_sec", "1", queue_max_wait_usec, 1000000),
        U64("queue.max_wait_sec", "86400", queue_max_wait_usec, 86400000000),
        /* pool_release (0.7 by default) is below pool_threshold. */
        PERMILLE("breaker.pool_threshold", "0.701", pool_threshold_permille, 701),
        PERMILLE("breaker.pool_threshold", "1", pool_threshold_permille, 1000),
        PERMILLE("breaker.pool_threshold", "1.0", pool_threshold_permille, 1000),
        PERMILLE("breaker.pool_release", "0", pool_release_permille, 0),
        PERMILLE("breaker.pool_release", "0.0", pool_release_permille, 0),
        PERMILLE("breaker.pool_release", "0.799", pool_release_permille, 799),
        U64("breaker.runaway_breaches", "0", runaway_breaches, 0),
        U64("breaker.runaway_breaches", "1000", runaway_breaches, 1000),
        U64("breaker.runaway_window_sec", "1", runaway_window_usec, 1000000),
        U64("breaker.runaway_window_sec", "86400", runaway_window_usec, 86400000000),
        /* max_cooldown_sec (3600 by default) is at least cooldown_sec. */
        U64("breaker.cooldown_sec", "1", cooldown_usec, 1000000),
        U64("breaker.cooldown_sec", "3600", cooldown_usec, 3600000000),
        U64("breaker.max_cooldown_sec", "300", max_cooldown_usec, 300000000),
        U64("breaker.max_cooldown_sec", "604800", max_cooldown_usec, 604800000000),
        U64("escalation.timeout_sec", "1", escalation_timeout_usec, 1000000),
        U64("escalation.timeout_sec", "86400", escalation_timeout_usec, 86400000000),
        /* the durable ledger (issue 12) */
        STRING("state_directory", "\"\"", state_directory, ""),
        STRING("state_directory", "\"/var/lib/tokenbudget\"", state_directory, "/var/lib/tokenbudget"),
        STRING("state_directory", "\"/srv/token budget/state\"", state_directory, "/srv/token budget/state"),
        SYNC("\"full\"", DURABILITY_FULL),
        SYNC("\"normal\"", DURABILITY_NORMAL),
        U64("history.retention_days", "1", history_retention_days, 1),
        U64("history.retention_days", "36500", history_retention_days, 36500),
        U64("history.retention_days", "90", history_retention_days, 90),
        /* learned estimates (issue 13); tail_half_life_samples (1000) is at least half_life_samples */
        SOURCE("\"client\"", ESTIMATE_CLIENT),
        SOURCE("\"learned\"", ESTIMATE_LEARNED),
        SOURCE("\"max\"", ESTIMATE_MAX),
        U64("estimate_min_samples", "1", estimate_min_samples, 1),
        U64("estimate_min_samples", "1000000", estimate_min_samples, 1000000),
        U64("estimate_min_samples", "20", estimate_min_samples, 20),
        PERMILLE("estimate_floor", "0", estimate_floor_permille, 0),
        PERMILLE("estimate_floor", "1.0", estimate_floor_permille, 1000),
        PERMILLE("estimate_floor", "0.25", estimate_floor_permille, 250),
        U64("estimator.half_life_samples", "1", estimator_half_life_samples, 1),
        U64("estimator.half_life_samples", "1000", estimator_half_life_samples, 1000),
        U64("estimator.half_life_samples", "50", estimator_half_life_samples, 50),
        U64("estimator.tail_half_life_samples", "10000000", estimator_tail_half_life_samples, 10000000),
        U64("estimator.tail_half_life_samples", "1000", estimator_tail_half_life_samples, 1000),
        PERMILLE("estimator.clip_factor", "1.5", estimator_clip_permille, 1500),
        PERMILLE("estimator.clip_factor", "100", estimator_clip_permille, 100000),
        PERMILLE("estimator.clip_factor", "2.5", estimator_clip_permille, 2500),
        PERMILLE("estimator.spread_quantile", "0.5", estimator_spread_permille, 500),
        PERMILLE("estimator.spread_quantile", "0.999", estimator_spread_permille, 999),
        PERMILLE("estimator.spread_quantile", "0.9", estimator_spread_permille, 900),
        STRING("prices.currency", "\"USD\"", price_currency, "USD"),
        STRING("prices.currency", "\"\xe2\x82\xac\"", price_currency, "\xe2\x82\xac"),
        STRING("prices.currency", "\"sixteen bytes ok\"", price_currency, "sixteen bytes ok"),
        /* the power group (issue 11). Each row is valid with the other
         * settings at their defaults, and the last row of each setting with
         * the last of the others (test_round_trip applies them all). */
        BOOL("power.enabled", "false", power.enabled, false),
        BOOL("power.enabled", "true", power.enabled, true),
        STRING("power.sensor", "\"\"", power.sensor, ""),
        STRING("power.sensor", "\"x86_pkg_temp\"", power.sensor, "x86_pkg_temp"),
        STRING("power.sensor", "\"coretemp/Package id [0-9]*\"", power.sensor, "coretemp/Package id [0-9]*"),
        STRING("power.sensor", "\"" SENSOR_255 "\"", power.sensor, SENSOR_255),
        STRING("power.sensor", "\"k10temp/Tctl\"", power.sensor, "k10temp/Tctl"),
        STRING("power.pressure_file", "\"\"", power.pressure_file, ""),
        STRING("power.pressure_file", "\"/proc/pressure/memory\"", power.pressure_file,
               "/proc/pressure/memory"),
        STRING("power.pressure_file", "\"/tmp/psi fixture\"", power.pressure_file, "/tmp/psi fixture"),
        U64("power.poll_sec", "1", power.poll_usec, 1000000),
        U64("power.poll_sec", "3600", power.poll_usec, 3600000000),
        U64("power.battery_poll_sec", "3600", power.battery_poll_usec, 3600000000),
        U64("power.battery_poll_sec", "1", power.battery_poll_usec, 1000000),
        /* Percentages in permille (battery) or hundredths (pressure), degrees in
         * millidegrees; integers or floats, rounded to nearest. */
        DECIMAL("power.low_battery_percent", "0", power.low_battery_permille, 0),
        DECIMAL("power.low_battery_percent", "24.9", power.low_battery_permille, 249),
        DECIMAL("power.low_battery_percent", "10.04", power.low_battery_permille, 100),
        DECIMAL("power.low_battery_percent", "15", power.low_battery_permille, 150),
        DECIMAL("power.low_battery_release_percent", "100", power.low_battery_release_permille, 1000),
        DECIMAL("power.low_battery_release_percent", "20.1", power.low_battery_release_permille, 201),
        DECIMAL("power.low_battery_release_percent", "30.0", power.low_battery_release_permille, 300),
        DECIMAL("power.hot_celsius", "80.001", power.hot_mc, 80001),
        DECIMAL("power.hot_celsius", "94.999", power.hot_mc, 94999),
        DECIMAL("power.hot_celsius", "90", power.hot_mc, 90000),
        DECIMAL("power.hot_release_celsius", "-50", power.hot_release_mc, -50000),
        DECIMAL("power.hot_release_celsius", "84.9994", power.hot_release_mc, 84999),
        DECIMAL("power.hot_release_celsius", "-0.5", power.hot_release_mc, -500),
        DECIMAL("power.hot_release_celsius", "-0.0004", power.hot_release_mc, 0),
        DECIMAL("power.hot_release_celsius", "-12.3456", power.hot_release_mc, -12346),
        DECIMAL("power.hot_release_celsius", "70.25", power.hot_release_mc, 70250),
        DECIMAL("power.critical_celsius", "90.001", power.critical_mc, 90001),
        DECIMAL("power.critical_celsius", "200", power.critical_mc, 200000),
        DECIMAL("power.critical_celsius", "1e2", power.critical_mc, 100000),
        DECIMAL("power.critical_release_celsius", "-50.0", power.critical_release_mc, -50000),
        DECIMAL("power.critical_release_celsius", "94.999", power.critical_release_mc, 94999),
        DECIMAL("power.critical_release_celsius", "92", power.critical_release_mc, 92000),
        DECIMAL("power.memory_pressure_percent", "10.01", power.pressure_cp, 1001),
        DECIMAL("power.memory_pressure_percent", "100", power.pressure_cp, 10000),
        DECIMAL("power.memory_pressure_percent", "35.25", power.pressure_cp, 3525),
        DECIMAL("power.memory_pressure_release_percent", "0", power.pressure_release_cp, 0),
        DECIMAL("power.memory_pressure_release_percent", "19.99", power.pressure_release_cp, 1999),
        DECIMAL("power.memory_pressure_release_percent", "5.5", power.pressure_release_cp, 550),
        /* A factor: 0.01 to 1.0 (an integer 1 too), rounded to 3 decimals, or "pause". */
        FACTOR("ac", POWER_AC, "interactive", PRIORITY_INTERACTIVE, "\"pause\"", 0),
        FACTOR("ac", POWER_AC, "interactive", PRIORITY_INTERACTIVE, "1", 1000),
        FACTOR("ac", POWER_AC, "normal", PRIORITY_NORMAL, "0.01", 10),
        FACTOR("ac", POWER_AC, "normal", PRIORITY_NORMAL, "0.0125", 13),
        FACTOR("ac", POWER_AC, "normal", PRIORITY_NORMAL, "0.0124", 12),
        FACTOR("ac", POWER_AC, "normal", PRIORITY_NORMAL, "0.999", 999),
        FACTOR("ac", POWER_AC, "background", PRIORITY_BACKGROUND, "0.9", 900),
        FACTOR("battery", POWER_BATTERY, "interactive", PRIORITY_INTERACTIVE, "0.8", 800),
        FACTOR("battery", POWER_BATTERY, "normal", PRIORITY_NORMAL, "0.75", 750),
        FACTOR("battery", POWER_BATTERY, "background", PRIORITY_BACKGROUND, "1.0", 1000),
        FACTOR("battery", POWER_BATTERY, "background", PRIORITY_BACKGROUND, "\"pause\"", 0),
        FACTOR("low_battery", POWER_LOW_BATTERY, "interactive", PRIORITY_INTERACTIVE, "\"pause\"", 0),
        FACTOR("low_battery", POWER_LOW_BATTERY, "normal", PRIORITY_NORMAL, "0.3", 300),
        FACTOR("low_battery", POWER_LOW_BATTERY, "background", PRIORITY_BACKGROUND, "0.1", 100),
        FACTOR("memory_pressure", POWER_MEMORY_PRESSURE, "interactive", PRIORITY_INTERACTIVE, "0.7", 700),
        FACTOR("memory_pressure", POWER_MEMORY_PRESSURE, "normal", PRIORITY_NORMAL, "\"pause\"", 0),
        FACTOR("memory_pressure", POWER_MEMORY_PRESSURE, "background", PRIORITY_BACKGROUND, "0.25", 250),
        FACTOR("hot", POWER_HOT, "interactive", PRIORITY_INTERACTIVE, "0.6", 600),
        FACTOR("hot", POWER_HOT, "normal", PRIORITY_NORMAL, "1", 1000),
        FACTOR("hot", POWER_HOT, "background", PRIORITY_BACKGROUND, "0.05", 50),
        FACTOR("critical", POWER_CRITICAL, "interactive", PRIORITY_INTERACTIVE, "\"pause\"", 0),
        FACTOR("critical", POWER_CRITICAL, "normal", PRIORITY_NORMAL, "0.02", 20),
        FACTOR("critical", POWER_CRITICAL, "background", PRIORITY_BACKGROUND, "0.5", 500),
};

static void rules_clear(Config *c) {
        for (size_t i = 0; i < c->n_rules; i++) {
                RuleConfig *r = &c->rules[i];
                free(r->name);
                free(r->match.user);
                free(r->match.group);
                free(r->match.unit);
                free(r->match.slice);
                free(r->match.command);
                free(r->match.agent);
        }
        free(c->rules);
        c->rules = NULL;
        c->n_rules = 0;
}

static void tiers_clear(Config *c) {
        for (size_t i = 0; i < c->n_model_tiers; i++)
                free(c->model_tiers[i]);
        free(c->model_tiers);
        c->model_tiers = NULL;
        c->n_model_tiers = 0;
}

/* joined: names separated by commas; "" for none. */
static void tiers_set(Config *c, const char *joined) {
        tiers_clear(c);
        for (const char *p = joined; *p;) {
                size_t n = strcspn(p, ",");
                char **names = realloc(c->model_tiers, (c->n_model_tiers + 1) * sizeof(char *));

                ck_assert_ptr_nonnull(names);
                c->model_tiers = names;
                c->model_tiers[c->n_model_tiers] = strndup(p, n);
                ck_assert_ptr_nonnull(c->model_tiers[c->n_model_tiers]);
                c->n_model_tiers++;
                p += n + (p[n] == ',');
        }
}

static void proxies_set(Config *c, const char *joined) {
        for (size_t i = 0; i < c->n_trusted_proxies; i++)
                free(c->trusted_proxies[i]);
        free(c->trusted_proxies);
        c->trusted_proxies = NULL;
        c->n_trusted_proxies = 0;
        memset(c->trusted_proxy_known, 0, sizeof(c->trusted_proxy_known));
        memset(c->trusted_proxy_uid, 0, sizeof(c->trusted_proxy_uid));
        for (const char *p = joined; *p;) {
                size_t n = strcspn(p, ","), i = c->n_trusted_proxies;
                char **names = realloc(c->trusted_proxies, (i + 1) * sizeof(char *));

                ck_assert_ptr_nonnull(names);
                c->trusted_proxies = names;
                names[i] = strndup(p, n);
                ck_assert_ptr_nonnull(names[i]);
                if (n > 0 && strspn(names[i], "0123456789") == n) {
                        c->trusted_proxy_known[i] = true;
                        c->trusted_proxy_uid[i] = (uint32_t)strtoul(names[i], NULL, 10);
                }
                c->n_trusted_proxies++;
                p += n + (p[n] == ',');
        }
}

static void row_apply(const OverrideRow *row, Config *c) {
        char *p = (char *)c + row->offset;

        switch (row->type) {
        case FIELD_ESCALATE:
                *(EscalateAction *)p = (EscalateAction)row->number;
                break;
        case FIELD_HARD_LIMIT:
                *(HardLimitAction *)p = (HardLimitAction)row->number;
                break;
        case FIELD_SYNC:
                *(DurabilitySync *)p = (DurabilitySync)row->number;
                break;
        case FIELD_ESTIMATE_SOURCE:
                *(EstimateSource *)p = (EstimateSource)row->number;
                break;
        case FIELD_NAMES:
                tiers_set(c, row->string);
                break;
        case FIELD_PROXIES:
                proxies_set(c, row->string);
                break;
        case FIELD_ADMIN_GROUP:
                free(c->admin_group);
                c->admin_group = strdup(row->string);
                ck_assert_ptr_nonnull(c->admin_group);
                c->has_admin_gid = row->number != NO_ID;
                c->admin_gid = row->number != NO_ID ? (gid_t)row->number : 0;
                break;
        case FIELD_RULES:
                rules_clear(c);
                c->rules = calloc(1, sizeof(RuleConfig));
                ck_assert_ptr_nonnull(c->rules);
                c->rules[0].name = strdup(row->string);
                ck_assert_ptr_nonnull(c->rules[0].name);
                c->rules[0].per = RULE_PER_RULE;
                c->n_rules = 1;
                break;
        case FIELD_U64:
                *(uint64_t *)p = row->number;
                break;
        case FIELD_PERMILLE:
                *(uint32_t *)p = (uint32_t)row->number;
                break;
        case FIELD_LOG_LEVEL:
                *(LogLevel *)p = (LogLevel)row->number;
                break;
        case FIELD_DECIMAL:
                *(int32_t *)p = (int32_t)row->decimal;
                break;
        case FIELD_FACTOR:
                *(uint16_t *)p = (uint16_t)row->number;
                break;
        case FIELD_BOOL:
                *(bool *)p = row->number != 0;
                break;
        case FIELD_STRING:
                free(*(char **)p);
                *(char **)p = strdup(row->string);
                ck_assert_ptr_nonnull(*(char **)p);
                break;
        }
}

/* "group.name" = v becomes "group = {\n name = v;\n};", and
 * "a.b.c.name" = v "a = {\n b = {\n c = {\n name = v;\n};\n};\n};". */
static void row_text(const OverrideRow *row, char *buf, size_t size) {
        const char *p = row->path, *dot;
        size_t len = 0, depth = 0;

        for (; (dot = strchr(p, '.')); p = dot + 1, depth++)
                len += (size_t)snprintf(buf + len, size - len, "%*s%.*s = {\n", (int)(8 * depth), "",
                                        (int)(dot - p), p);
        len += (size_t)snprintf(buf + len, size - len, "%*s%s = %s;\n", (int)(8 * depth), "", p, row->value);
        while (depth-- > 0)
                len += (size_t)snprintf(buf + len, size - len, "%*s};\n", (int)(8 * depth), "");
        ck_assert_uint_lt(len, size);
}

/* ---- tests ---- */

#define PAUSE POWER_FACTOR_PAUSE

/* The built-in policy (config.h), interactive, normal, background. */
static const unsigned default_factors[_POWER_STATE_MAX][_PRIORITY_MAX] = {
        [POWER_AC] = {1000, 1000, 1000},          [POWER_BATTERY] = {1000, 1000, 500},
        [POWER_LOW_BATTERY] = {1000, 500, PAUSE}, [POWER_MEMORY_PRESSURE] = {1000, 500, PAUSE},
        [POWER_HOT] = {1000, 500, PAUSE},         [POWER_CRITICAL] = {1000, PAUSE, PAUSE},
};

START_TEST(test_defaults) {
        Config c;

        ck_assert_int_eq(config_init_defaults(&c), 0);
        ck_assert_str_eq(c.socket_path, "/run/tokenbudget/io.tokenbudget");
        ck_assert_uint_eq(c.default_estimate, 4000);
        ck_assert_uint_eq(c.max_request_tokens, 200000);
        ck_assert_uint_eq(c.warn_permille, 1500);
        ck_assert_uint_eq(c.hard_permille, 2000);
        ck_assert_int_eq(c.log_level, LOG_LEVEL_INFO);
        ck_assert_uint_eq(c.global.window_tokens[LEDGER_WINDOW_MINUTE], 2000000);
        ck_assert_uint_eq(c.global.window_tokens[LEDGER_WINDOW_HOUR], 20000000);
        ck_assert_uint_eq(c.global.window_tokens[LEDGER_WINDOW_DAY], 100000000);
        ck_assert_uint_eq(c.global.in_flight_tokens, 1000000);
        ck_assert_uint_eq(c.process.window_tokens[LEDGER_WINDOW_MINUTE], 500000);
        ck_assert_uint_eq(c.process.window_tokens[LEDGER_WINDOW_HOUR], 5000000);
        ck_assert_uint_eq(c.process.window_tokens[LEDGER_WINDOW_DAY], 0);
        ck_assert_uint_eq(c.process.in_flight_tokens, 400000);
        ck_assert_uint_eq(c.max_message_bytes, 65536);
        ck_assert_uint_eq(c.max_output_bytes, 1048576);
        ck_assert_uint_eq(c.max_connections, 1024);
        ck_assert_uint_eq(c.max_connections_per_uid, 128);
        ck_assert_uint_eq(c.max_allocations_per_process, 64);
        ck_assert_uint_eq(c.max_tracked_processes, 4096);
        ck_assert_uint_eq(c.max_output_bytes_per_uid, 8388608);
        ck_assert_uint_eq(c.max_tracked_processes_per_uid, 1024);
        ck_assert_uint_eq(c.admin_connections, 8);
        ck_assert_uint_eq(c.idle_timeout_usec, 900000000);
        ck_assert_uint_eq(c.allocation_idle_timeout_usec, 3600000000);
        ck_assert(!c.journal_log_granted);
        ck_assert_uint_eq(c.journal_rate_limit_interval_usec, 10000000);
        ck_assert_uint_eq(c.journal_rate_limit_burst, 20);
        ck_assert_uint_eq(c.global.max_allocations, 0);
        for (size_t w = 0; w < _LEDGER_WINDOW_MAX; w++)
                ck_assert_uint_eq(c.user.window_tokens[w], 0);
        ck_assert_uint_eq(c.user.in_flight_tokens, 0);
        ck_assert_uint_eq(c.user.max_allocations, 0);
        ck_assert_uint_eq(c.unit.window_tokens[LEDGER_WINDOW_MINUTE], 1000000);
        ck_assert_uint_eq(c.unit.window_tokens[LEDGER_WINDOW_HOUR], 10000000);
        ck_assert_uint_eq(c.unit.window_tokens[LEDGER_WINDOW_DAY], 0);
        ck_assert_uint_eq(c.unit.in_flight_tokens, 600000);
        ck_assert_uint_eq(c.unit.max_allocations, 256);
        ck_assert_uint_eq(c.agent.window_tokens[LEDGER_WINDOW_MINUTE], 500000);
        ck_assert_uint_eq(c.agent.window_tokens[LEDGER_WINDOW_HOUR], 5000000);
        ck_assert_uint_eq(c.agent.window_tokens[LEDGER_WINDOW_DAY], 0);
        ck_assert_uint_eq(c.agent.in_flight_tokens, 400000);
        ck_assert_uint_eq(c.agent.max_allocations, 64);
        ck_assert_uint_eq(c.process.max_allocations, 0); /* limits.max_allocations_per_process instead */
        ck_assert_str_eq(c.admin_group, "");
        ck_assert(!c.has_admin_gid);
        ck_assert_uint_eq(c.admin_group_line, 0);
        ck_assert_ptr_null(c.rules);
        ck_assert_uint_eq(c.n_rules, 0);
        ck_assert_uint_eq(c.max_tracked_scopes, 16384);
        ck_assert_uint_eq(c.max_tracked_scopes_per_uid, 1024);
        ck_assert_uint_eq(c.escalate_permille, 2500);
        ck_assert_int_eq(c.on_escalate, ESCALATE_REFUSE);
        ck_assert_int_eq(c.on_hard_limit, HARD_LIMIT_NONE);
        ck_assert_uint_eq(c.terminate_grace_usec, 10000000);
        ck_assert(c.enforce);
        ck_assert_ptr_null(c.model_tiers);
        ck_assert_uint_eq(c.n_model_tiers, 0);
        ck_assert_uint_eq(c.queue_max_waiters, 1024);
        ck_assert_uint_eq(c.queue_max_waiters_per_uid, 128);
        ck_assert_uint_eq(c.queue_max_wait_usec, 3600000000);
        ck_assert_uint_eq(c.pool_threshold_permille, 800);
        ck_assert_uint_eq(c.pool_release_permille, 700);
        ck_assert_uint_eq(c.runaway_breaches, 3);
        ck_assert_uint_eq(c.runaway_window_usec, 600000000);
        ck_assert_uint_eq(c.cooldown_usec, 300000000);
        ck_assert_uint_eq(c.max_cooldown_usec, 3600000000);
        ck_assert_uint_eq(c.escalation_timeout_usec, 300000000);
        ck_assert(c.power.enabled);
        ck_assert_str_eq(c.power.sensor, "");
        ck_assert_str_eq(c.power.pressure_file, "/proc/pressure/memory");
        ck_assert_uint_eq(c.power.poll_usec, 5000000);
        ck_assert_uint_eq(c.power.battery_poll_usec, 30000000);
        ck_assert_int_eq(c.power.low_battery_permille, 200);
        ck_assert_int_eq(c.power.low_battery_release_permille, 250);
        ck_assert_int_eq(c.power.hot_mc, 85000);
        ck_assert_int_eq(c.power.hot_release_mc, 80000);
        ck_assert_int_eq(c.power.critical_mc, 95000);
        ck_assert_int_eq(c.power.critical_release_mc, 90000);
        ck_assert_int_eq(c.power.pressure_cp, 2000);
        ck_assert_int_eq(c.power.pressure_release_cp, 1000);
        for (int st = 0; st < _POWER_STATE_MAX; st++)
                for (int pr = 0; pr < _PRIORITY_MAX; pr++)
                        ck_assert_msg(c.power.factor[st][pr] == default_factors[st][pr],
                                      "policy.%s.%s: %u, want %u", power_state_to_string((PowerState)st),
                                      priority_to_string((Priority)pr), c.power.factor[st][pr],
                                      default_factors[st][pr]);
        config_done(&c);
        ck_assert_ptr_null(c.socket_path);
        ck_assert_ptr_null(c.admin_group);
        ck_assert_ptr_null(c.power.sensor);
        ck_assert_ptr_null(c.power.pressure_file);
        config_done(&c); /* twice is harmless */
        config_done(NULL);
}
END_TEST

static const struct {
        LogLevel level;
        const char *name;
} log_level_rows[] = {
        {LOG_LEVEL_ERR, "err"},   {LOG_LEVEL_WARNING, "warning"}, {LOG_LEVEL_NOTICE, "notice"},
        {LOG_LEVEL_INFO, "info"}, {LOG_LEVEL_DEBUG, "debug"},     {(LogLevel)0, NULL},
        {(LogLevel)8, NULL},
};

START_TEST(test_log_level_to_string) {
        const char *s = log_level_to_string(log_level_rows[_i].level);

        if (log_level_rows[_i].name)
                ck_assert_msg(s && strcmp(s, log_level_rows[_i].name) == 0, "row %d: got %s", _i,
                              s ? s : "NULL");
        else
                ck_assert_msg(!s, "row %d: level %d should have no name", _i, (int)log_level_rows[_i].level);
}
END_TEST

static const char *const empty_rows[] = {
        "",
        "\n\n   \n\t\n",
        "# only a comment\n",
        "// a comment\n/* a block\n   comment */\n# and another\n",
        "/* @include \"/etc/passwd\" inside a comment is only a comment */\n",
};

START_TEST(test_empty) {
        Config c, defaults;

        ck_assert_int_eq(config_init_defaults(&defaults), 0);
        parse_ok(empty_rows[_i], empty_rows[_i], &c);
        ck_assert_msg(config_equal(&c, &defaults), "row %d: not the defaults", _i);
        config_done(&c);
        config_done(&defaults);
}
END_TEST

START_TEST(test_override) {
        const OverrideRow *row = &override_rows[_i];
        Config c, expected;
        char text[512], *formatted;

        row_text(row, text, sizeof(text));
        ck_assert_int_eq(config_init_defaults(&expected), 0);
        row_apply(row, &expected);
        parse_ok(text, row->path, &c);
        formatted = config_format(&c);
        ck_assert_msg(config_equal(&c, &expected), "row %d (%s = %s): parsed as\n%s", _i, row->path,
                      row->value, formatted);
        free(formatted);
        config_done(&c);
        config_done(&expected);
}
END_TEST

START_TEST(test_equal_detects_each_field) {
        const OverrideRow *row = &override_rows[_i];
        Config a, b;

        ck_assert_int_eq(config_init_defaults(&a), 0);
        ck_assert_int_eq(config_init_defaults(&b), 0);
        ck_assert_msg(config_equal(&a, &b), "row %d: defaults differ", _i);
        row_apply(row, &b);
        /* A row may set a field to its default; change it once more then. */
        if (config_equal(&a, &b) && row->type == FIELD_BOOL) {
                *(bool *)((char *)&b + row->offset) = !*(bool *)((char *)&b + row->offset);
        } else if (config_equal(&a, &b) && row->type == FIELD_ESCALATE) {
                b.on_escalate = ESCALATE_HOLD;
        } else if (config_equal(&a, &b) && row->type == FIELD_HARD_LIMIT) {
                b.on_hard_limit = HARD_LIMIT_TERMINATE;
        } else if (config_equal(&a, &b) && row->type == FIELD_SYNC) {
                b.durability_sync = DURABILITY_FULL;
        } else if (config_equal(&a, &b) && row->type == FIELD_ESTIMATE_SOURCE) {
                b.estimate_source = ESTIMATE_MAX;
        } else if (config_equal(&a, &b) && row->type == FIELD_PROXIES) {
                proxies_set(&b, "x");
        } else if (config_equal(&a, &b) && row->type == FIELD_NAMES) {
                tiers_set(&b, "x");
        } else if (config_equal(&a, &b) && row->type == FIELD_STRING) {
                char **p = (char **)((char *)&b + row->offset);
                free(*p);
                *p = strdup("/changed");
                ck_assert_ptr_nonnull(*p);
        } else if (config_equal(&a, &b) && row->type == FIELD_DECIMAL) {
                *(int32_t *)((char *)&b + row->offset) += 1;
        } else if (config_equal(&a, &b) && row->type == FIELD_FACTOR) {
                uint16_t *f = (uint16_t *)((char *)&b + row->offset);
                *f = *f == POWER_FACTOR_PAUSE ? 1 : POWER_FACTOR_PAUSE;
        } else if (config_equal(&a, &b)) {
                ck_assert_int_eq(row->type, FIELD_U64);
                *(uint64_t *)((char *)&b + row->offset) += 1;
        }
        ck_assert_msg(!config_equal(&a, &b), "row %d (%s): difference not seen", _i, row->path);
        ck_assert_msg(!config_equal(&b, &a), "row %d (%s): difference not seen (swapped)", _i, row->path);
        config_done(&a);
        config_done(&b);
}
END_TEST

typedef struct InvalidRow {
        const char *name;
        const char *text;
        unsigned line;
        const char *message; /* a substring of the error on that line */
} InvalidRow;

static const InvalidRow invalid_rows[] = {
        /* out of range, both sides */
        {"estimate 0", "default_estimate = 0;", 1,
         "default_estimate must be between 1 and 999999999999, got 0"},
        {"estimate 10^12", "default_estimate = 1000000000000;", 1,
         "default_estimate must be between 1 and 999999999999, got 1000000000000"},
        {"request 0", "\nmax_request_tokens = 0;", 2,
         "max_request_tokens must be between 1 and 999999999999"},
        {"request 10^12", "max_request_tokens = 1000000000000L;", 1, "got 1000000000000"},
        {"warn 0.99", "warn_multiplier = 0.99;", 1, "warn_multiplier must be between 1.0 and 5.0, got 0.99"},
        {"warn 5.5", "warn_multiplier = 5.5;", 1, "warn_multiplier must be between 1.0 and 5.0, got 5.5"},
        {"hard 7.5", "hard_multiplier = 7.5;", 1, "hard_multiplier must be between 1.0 and 5.0, got 7.5"},
        {"hard 0", "hard_multiplier = 0;", 1, "hard_multiplier must be between 1.0 and 5.0, got 0"},
        {"warn negative", "warn_multiplier = -.5;", 1,
         "warn_multiplier must be between 1.0 and 5.0, got -0.5"},
        {"hard just above 5", "hard_multiplier = 5.0000001;", 1,
         "hard_multiplier must be between 1.0 and 5.0, got 5.0000001"},
        {"hard inf", "hard_multiplier = 1e999;", 1, "hard_multiplier must be between 1.0 and 5.0, got inf"},
        {"global negative", "global = {\n  tokens_per_minute = -1;\n};", 2,
         "global.tokens_per_minute must be between 0 and 999999999999, got -1"},
        {"global 10^12", "global = { tokens_per_hour = 1000000000000; };", 1,
         "global.tokens_per_hour must be between 0 and 999999999999, got 1000000000000"},
        {"global beyond 64 bits", "global = { tokens_per_day = 99999999999999999999; };", 1,
         "global.tokens_per_day must be between 0 and 999999999999, got 9223372036854775807 or more"},
        {"global below 64 bits", "global = { tokens_per_day = -99999999999999999999; };", 1,
         "got -9223372036854775808 or less"},
        {"hex beyond 64 bits", "global = { max_tokens_in_flight = 0x1FFFFFFFFFFFFFFFF; };", 1,
         "global.max_tokens_in_flight must be between 0 and 999999999999, got 9223372036854775807 or more"},
        {"process negative", "process = { tokens_per_hour = -5; };", 1,
         "process.tokens_per_hour must be between 0 and 999999999999, got -5"},
        {"process 10^12", "process = {\n\n max_tokens_in_flight = 1000000000000;\n};", 3,
         "process.max_tokens_in_flight must be between 0 and 999999999999"},
        {"message 1023", "limits = { max_message_bytes = 1023; };", 1,
         "limits.max_message_bytes must be between 1024 and 16777216, got 1023"},
        {"message 16 MiB + 1", "limits = { max_message_bytes = 16777217; };", 1,
         "limits.max_message_bytes must be between 1024 and 16777216, got 16777217"},
        {"output 65535", "limits = { max_output_bytes = 65535; };", 1,
         "limits.max_output_bytes must be between 65536 and 1073741824, got 65535"},
        {"output 1 GiB + 1", "limits = { max_output_bytes = 1073741825; };", 1,
         "limits.max_output_bytes must be between 65536 and 1073741824, got 1073741825"},
        {"connections 0", "\n\nlimits = {\n        max_connections = 0;\n};\n", 4,
         "limits.max_connections must be between 1 and 1000000, got 0"},
        {"connections 10^6 + 1", "limits = { max_connections = 1000001; };", 1,
         "limits.max_connections must be between 1 and 1000000, got 1000001"},
        {"per uid 0", "limits = { max_connections_per_uid = 0; };", 1,
         "limits.max_connections_per_uid must be between 1 and 1000000, got 0"},
        {"per uid 10^6 + 1", "limits = { max_connections_per_uid = 1000001; };", 1,
         "limits.max_connections_per_uid must be between 1 and 1000000, got 1000001"},
        {"allocations 0", "limits = { max_allocations_per_process = 0; };", 1,
         "limits.max_allocations_per_process must be between 1 and 1000000, got 0"},
        {"allocations 10^6 + 1", "limits = { max_allocations_per_process = 1000001; };", 1,
         "limits.max_allocations_per_process must be between 1 and 1000000, got 1000001"},
        {"tracked 0", "limits = { max_tracked_processes = 0; };", 1,
         "limits.max_tracked_processes must be between 1 and 10000000, got 0"},
        {"tracked 10^7 + 1", "limits = { max_tracked_processes = 10000001; };", 1,
         "limits.max_tracked_processes must be between 1 and 10000000, got 10000001"},
        {"interval 3601 s", "journal = { rate_limit_interval_sec = 3601; };", 1,
         "journal.rate_limit_interval_sec must be between 0 and 3600, got 3601"},
        {"interval negative", "journal = {\n        rate_limit_interval_sec = -1;\n};", 2,
         "journal.rate_limit_interval_sec must be between 0 and 3600, got -1"},
        /* Would overflow 64 bits once in microseconds, were it accepted. */
        {"interval huge", "journal = { rate_limit_interval_sec = 18446744073709551; };", 1,
         "journal.rate_limit_interval_sec must be between 0 and 3600, got 18446744073709551"},
        {"burst 10^6 + 1", "journal = { rate_limit_burst = 1000001; };", 1,
         "journal.rate_limit_burst must be between 0 and 1000000, got 1000001"},
        {"burst negative", "journal = { rate_limit_burst = -20; };", 1,
         "journal.rate_limit_burst must be between 0 and 1000000, got -20"},
        /* wrong types */
        {"log_granted integer", "journal = { log_granted = 1; };", 1,
         "journal.log_granted must be a boolean (true or false), got an integer"},
        {"log_granted string", "journal = { log_granted = \"yes\"; };", 1,
         "journal.log_granted must be a boolean (true or false), got a string"},
        {"interval float", "journal = { rate_limit_interval_sec = 0.5; };", 1,
         "journal.rate_limit_interval_sec must be an integer, got a float"},
        {"interval string", "journal = { rate_limit_interval_sec = \"10s\"; };", 1,
         "journal.rate_limit_interval_sec must be an integer, got a string"},
        {"burst bool", "journal = { rate_limit_burst = false; };", 1,
         "journal.rate_limit_burst must be an integer, got a boolean"},
        {"estimate float", "default_estimate = 1.5;", 1, "default_estimate must be an integer, got a float"},
        {"estimate string", "default_estimate = \"4000\";", 1,
         "default_estimate must be an integer, got a string"},
        {"nested string", "global = { tokens_per_minute = \"x\"; };", 1,
         "global.tokens_per_minute must be an integer, got a string"},
        {"nested bool", "limits = { max_connections = true; };", 1,
         "limits.max_connections must be an integer, got a boolean"},
        {"nested array", "limits = { max_connections = [1, 2]; };", 1,
         "limits.max_connections must be an integer, got an array"},
        {"list", "max_request_tokens = (1);", 1, "max_request_tokens must be an integer, got a list"},
        {"multiplier string", "hard_multiplier = \"2\";", 1,
         "hard_multiplier must be a number, got a string"},
        {"log level integer", "log_level = 7;", 1, "log_level must be a string, got an integer"},
        {"log level unknown", "log_level = \"verbose\";", 1,
         "log_level must be one of err, warning, notice, info, debug, got 'verbose'"},
        {"log level unprintable", "log_level = \"a\\nb\";", 1, "got 'a?b'"},
        {"socket bool", "socket = true;", 1, "socket must be a string, got a boolean"},
        {"socket group", "socket = { path = \"/x\"; };", 1, "socket must be a string, got a group"},
        /* unknown settings */
        {"unknown top-level", "tokens_per_week = 5;", 1, "unknown setting 'tokens_per_week'"},
        {"unknown nested", "global = {\n        tokens_per_week = 5;\n};", 2,
         "unknown setting 'global.tokens_per_week'"},
        {"digit in name", "tokens2 = 5;", 1, "unknown setting 'tokens2'"},
        {"rules a group", "rules = { x = 1; };", 1, "rules must be a list ( { ... }, ... ), got a group"},
        {"top-level name in group", "limits = { socket = \"/x\"; };", 1, "unknown setting 'limits.socket'"},
        {"group name in group", "global = { process = { }; };", 1, "unknown setting 'global.process'"},
        /* groups given as scalars */
        {"global scalar", "global = 5;", 1, "global must be a group, got an integer"},
        {"process string", "process = \"x\";", 1, "process must be a group, got a string"},
        {"limits list", "limits = ( 1 );", 1, "limits must be a group, got a list"},
        {"journal bool", "journal = true;", 1, "journal must be a group, got a boolean"},
        {"unknown in journal", "journal = { rate_limit_interval_usec = 5; };", 1,
         "unknown setting 'journal.rate_limit_interval_usec'"},
        /* syntax */
        {"syntax", "socket = ;", 1, "syntax error"},
        {"syntax line 3", "default_estimate = 5;\n\nmax_request_tokens = = 2;", 3, "syntax error"},
        {"duplicate", "default_estimate = 1;\ndefault_estimate = 2;", 2, "duplicate setting name"},
        {"stray @", "@foo = 1;", 1, "syntax error"},
        /* @include */
        {"include", "@include \"/etc/passwd\"\n", 1, "@include is not supported"},
        {"include line 2", "default_estimate = 5;\n   @include \"other.conf\"\n", 2,
         "@include is not supported"},
        {"include mid-line", "default_estimate = 5; @include \"x\"\n", 1, "@include is not supported"},
        /* relations */
        {"warn > default hard", "warn_multiplier = 2.5;", 1,
         "warn_multiplier (2.5) must not be greater than hard_multiplier (2)"},
        {"hard < default warn", "\nhard_multiplier = 1.2;", 2,
         "warn_multiplier (1.5) must not be greater than hard_multiplier (1.2)"},
        {"warn > hard", "hard_multiplier = 1.2;\nwarn_multiplier = 1.3;", 2,
         "warn_multiplier (1.3) must not be greater than hard_multiplier (1.2)"},
        {"per uid > connections",
         "limits = {\n  max_connections = 100;\n  max_connections_per_uid = 200;\n};", 3,
         "limits.max_connections_per_uid (200) must be less than limits.max_connections (100)"},
        {"connections < default per uid",
         "limits = { max_connections = 64; max_connections_per_uid = 8; "
         "admin_connections = 64; };",
         1, "limits.admin_connections (64) must be less than limits.max_connections (64)"},
        /* One uid could take every slot and lock every other user out. */
        {"per uid = connections",
         "limits = {\n  max_connections = 100;\n  max_connections_per_uid = 100;\n};", 3,
         "limits.max_connections_per_uid (100) must be less than limits.max_connections (100)"},
        {"default per uid = connections", "limits = { max_connections = 128; };", 1,
         "limits.max_connections_per_uid (128) must be less than limits.max_connections (128)"},
        {"per uid output < per connection", "limits = { max_output_bytes_per_uid = 65536; };", 1,
         "limits.max_output_bytes_per_uid (65536) must not be less than limits.max_output_bytes (1048576)"},
        {"idle timeout too long", "limits = { idle_timeout_sec = 86401; };", 1,
         "limits.idle_timeout_sec must be between 0 and 86400"},
        {"allocation idle timeout 0", "limits = { allocation_idle_timeout_sec = 0; };", 1,
         "limits.allocation_idle_timeout_sec must be between 1 and 604800"},
        /* socket paths */
        {"relative socket", "socket = \"run/x.sock\";", 1,
         "socket must be an absolute path, got 'run/x.sock'"},
        {"empty socket", "socket = \"\";", 1, "socket must be an absolute path, got ''"},
        {"socket too long", "socket = \"" SOCKET_108 "\";", 1,
         "socket must be shorter than 108 bytes, got 108 bytes"},
};

START_TEST(test_invalid) {
        const InvalidRow *row = &invalid_rows[_i];
        char *errors = NULL;
        Config c;
        int r;

        r = config_parse(row->text, FILENAME, &c, &errors);
        ck_assert_msg(r == -EINVAL, "row '%s': config_parse() = %d, want -EINVAL", row->name, r);
        ck_assert_msg(errors, "row '%s': no error text", row->name);
        ck_assert_msg(has_error(errors, row->line, row->message),
                      "row '%s': want \"%s:%u: ...%s...\", got:\n%s", row->name, FILENAME, row->line,
                      row->message, errors);
        ck_assert_msg(count_lines(errors) == 1, "row '%s': want exactly one error line, got:\n%s", row->name,
                      errors);
        free(errors);
}
END_TEST

/* Text with NUL bytes (a file zero-filled after a power loss, or a binary
 * file): an error naming the line and offset of the first NUL, whatever the
 * rest says, so a damaged file never silently becomes the defaults. */
typedef struct NulRow {
        const char *name;
        const char *data;
        size_t size;
        unsigned line;
        const char *message;
} NulRow;

#define NUL_ROW(name, literal, line, message)                                                               \
        { name, literal, sizeof(literal) - 1, line, message }

static const NulRow nul_rows[] = {
        NUL_ROW("only zeros", "\0\0\0\0\0\0\0\0", 1, "NUL byte at offset 0"),
        NUL_ROW("zeros after a valid line", "default_estimate = 5;\n\0\0\0\0", 2, "NUL byte at offset 22"),
        NUL_ROW("zeros in the middle", "global = {\n\0\0tokens_per_minute = 5; };\n", 2,
                "NUL byte at offset 11"),
        NUL_ROW("NUL inside a string", "socket = \"/run/a\0b\";\n", 1, "NUL byte at offset 16"),
        NUL_ROW("NUL after the last newline", "log_level = \"info\";\n\n\n\0", 4, "NUL byte at offset 22"),
};

START_TEST(test_nul_bytes) {
        const NulRow *row = &nul_rows[_i];
        char *errors = NULL;
        Config c;
        int r;

        r = config_parse_buffer(row->data, row->size, FILENAME, &c, &errors);
        ck_assert_msg(r == -EINVAL, "row '%s': config_parse_buffer() = %d, want -EINVAL", row->name, r);
        ck_assert_msg(errors && has_error(errors, row->line, row->message),
                      "row '%s': want \"%s:%u: ...%s...\", got:\n%s", row->name, FILENAME, row->line,
                      row->message, errors ?: "(none)");
        ck_assert_msg(count_lines(errors) == 1, "row '%s': want one error line, got:\n%s", row->name,
                      errors);
        free(errors);
}
END_TEST

/* Bytes that are not NUL-terminated parse like the same text. */
START_TEST(test_buffer_without_terminator) {
        static const char text[] = "default_estimate = 7;XXXX";
        char *errors = NULL;
        Config c;

        ck_assert_int_eq(config_parse_buffer(text, strlen("default_estimate = 7;"), FILENAME, &c, &errors),
                         0);
        ck_assert_uint_eq(c.default_estimate, 7);
        config_done(&c);
        ck_assert_int_eq(config_parse_buffer("", 0, FILENAME, &c, &errors), 0);
        config_done(&c);
}
END_TEST

START_TEST(test_invalid_without_errors_out) {
        Config c;

        ck_assert_int_eq(config_parse("default_estimate = 0;", FILENAME, &c, NULL), -EINVAL);
}
END_TEST

static const char multi_error_text[] = "socket = \"relative\";\n"       /* 1 */
                                       "default_estimate = 0;\n"        /* 2 */
                                       "global = {\n"                   /* 3 */
                                       "        tokens_per_week = 1;\n" /* 4 */
                                       "        tokens_per_day = \"x\";\n"
                                       "};\n"
                                       "process = 7;\n" /* 7 */
                                       "limits = { max_connections = 0; };\n"
                                       "@include \"x.conf\"\n" /* 9 */
                                       "hard_multiplier = 9.5;\n"
                                       "bogus = 1;\n"; /* 11 */

static const struct {
        unsigned line;
        const char *message;
} multi_error_rows[] = {
        {1, "socket must be an absolute path"},
        {2, "default_estimate must be between 1 and 999999999999, got 0"},
        {4, "unknown setting 'global.tokens_per_week'"},
        {5, "global.tokens_per_day must be an integer, got a string"},
        {7, "process must be a group, got an integer"},
        {8, "limits.max_connections must be between 1 and 1000000, got 0"},
        {9, "@include is not supported"},
        {10, "hard_multiplier must be between 1.0 and 5.0, got 9.5"},
        {11, "unknown setting 'bogus'"},
};

START_TEST(test_multiple_errors) {
        char *errors = NULL;
        unsigned last = 0;
        Config c;

        ck_assert_int_eq(config_parse(multi_error_text, FILENAME, &c, &errors), -EINVAL);
        ck_assert_ptr_nonnull(errors);
        for (size_t i = 0; i < ELEMENTSOF(multi_error_rows); i++)
                ck_assert_msg(has_error(errors, multi_error_rows[i].line, multi_error_rows[i].message),
                              "row %zu: want line %u \"%s\", got:\n%s", i, multi_error_rows[i].line,
                              multi_error_rows[i].message, errors);
        ck_assert_msg(count_lines(errors) == ELEMENTSOF(multi_error_rows), "want %zu errors, got:\n%s",
                      ELEMENTSOF(multi_error_rows), errors);
        /* Sorted by line. */
        for (const char *p = errors; *p; p = strchr(p, '\n') + 1) {
                unsigned line = (unsigned)strtoul(p + strlen(FILENAME ":"), NULL, 10);
                ck_assert_msg(line >= last, "errors not sorted by line:\n%s", errors);
                last = line;
        }
        free(errors);
}
END_TEST

/* An @include does not hide a later syntax error: both are reported. */
START_TEST(test_include_and_syntax_error) {
        char *errors = NULL;
        Config c;

        ck_assert_int_eq(config_parse("@include \"x\"\nsocket = ;\n", FILENAME, &c, &errors), -EINVAL);
        ck_assert_msg(has_error(errors, 1, "@include is not supported"), "got:\n%s", errors);
        ck_assert_msg(has_error(errors, 2, "syntax error"), "got:\n%s", errors);
        ck_assert_uint_eq(count_lines(errors), 2);
        free(errors);
}
END_TEST

/* A value that failed its own check is not compared with another: no
 * spurious relation error. */
START_TEST(test_no_relation_error_from_invalid_value) {
        char *errors = NULL;
        Config c;

        ck_assert_int_eq(
                config_parse("hard_multiplier = 1.2;\nwarn_multiplier = 9;\n", FILENAME, &c, &errors),
                -EINVAL);
        ck_assert_msg(has_error(errors, 2, "warn_multiplier must be between 1.0 and 5.0, got 9"), "got:\n%s",
                      errors);
        ck_assert_msg(count_lines(errors) == 1, "want one error, got:\n%s", errors);
        free(errors);
}
END_TEST

static void check_round_trip(const Config *c, const char *row) {
        char *text = config_format(c), *again;
        Config parsed;

        ck_assert_msg(text, "row %s: config_format() failed", row);
        parse_ok(text, row, &parsed);
        again = config_format(&parsed);
        ck_assert_msg(config_equal(c, &parsed), "row %s: round trip differs:\n%s\nvs\n%s", row, text, again);
        ck_assert_str_eq(text, again);
        free(text);
        free(again);
        config_done(&parsed);
}

START_TEST(test_round_trip) {
        Config c;

        ck_assert_int_eq(config_init_defaults(&c), 0);
        check_round_trip(&c, "defaults");

        /* Every field away from its default, including values libconfig
         * needs an L suffix for and a path that needs escaping. */
        for (size_t i = 0; i < ELEMENTSOF(override_rows); i++)
                row_apply(&override_rows[i], &c);
        c.warn_permille = 1001;
        c.hard_permille = 4999;
        c.global.window_tokens[LEDGER_WINDOW_MINUTE] = 999999999999;
        free(c.socket_path);
        c.socket_path = strdup("/tmp/q\"uo\\te\x01\x7f/s p");
        ck_assert_ptr_nonnull(c.socket_path);
        check_round_trip(&c, "changed");
        config_done(&c);
}
END_TEST

/* Each setting's formatting on its own, at the values of every override row. */
START_TEST(test_round_trip_each_override) {
        Config c;

        ck_assert_int_eq(config_init_defaults(&c), 0);
        row_apply(&override_rows[_i], &c);
        check_round_trip(&c, override_rows[_i].path);
        config_done(&c);
}
END_TEST

/* ---- names of enumerations ---- */

START_TEST(test_enum_names) {
        static const char *const priorities[] = {"interactive", "normal", "background"};
        static const char *const pers[] = {"rule", "user", "unit", "process", "agent"};

        ck_assert_int_eq(_PRIORITY_MAX, (int)ELEMENTSOF(priorities));
        for (int i = 0; i < _PRIORITY_MAX; i++) {
                ck_assert_str_eq(priority_to_string((Priority)i), priorities[i]);
                ck_assert_int_eq(priority_from_string(priorities[i]), i);
        }
        ck_assert_ptr_null(priority_to_string(_PRIORITY_MAX));
        ck_assert_ptr_null(priority_to_string((Priority)-1));
        ck_assert_int_eq(priority_from_string("high"), -EINVAL);
        ck_assert_int_eq(priority_from_string("Normal"), -EINVAL);
        ck_assert_int_eq(priority_from_string(""), -EINVAL);
        ck_assert_int_eq(priority_from_string(NULL), -EINVAL);

        ck_assert_int_eq(_RULE_PER_MAX, (int)ELEMENTSOF(pers));
        for (int i = 0; i < _RULE_PER_MAX; i++) {
                ck_assert_str_eq(rule_per_to_string((RulePer)i), pers[i]);
                ck_assert_int_eq(rule_per_from_string(pers[i]), i);
        }
        ck_assert_ptr_null(rule_per_to_string(_RULE_PER_MAX));
        ck_assert_int_eq(rule_per_from_string("group"), -EINVAL);
        ck_assert_int_eq(rule_per_from_string(NULL), -EINVAL);

        ck_assert_int_eq(_ESCALATE_ACTION_MAX, 2);
        ck_assert_str_eq(escalate_action_to_string(ESCALATE_REFUSE), "refuse");
        ck_assert_str_eq(escalate_action_to_string(ESCALATE_HOLD), "hold");
        ck_assert_ptr_null(escalate_action_to_string(_ESCALATE_ACTION_MAX));
        ck_assert_ptr_null(escalate_action_to_string((EscalateAction)-1));
        ck_assert_int_eq(escalate_action_from_string("refuse"), ESCALATE_REFUSE);
        ck_assert_int_eq(escalate_action_from_string("hold"), ESCALATE_HOLD);
        ck_assert_int_eq(escalate_action_from_string("Hold"), -EINVAL);
        ck_assert_int_eq(escalate_action_from_string(""), -EINVAL);
        ck_assert_int_eq(escalate_action_from_string(NULL), -EINVAL);

        ck_assert_int_eq(_HARD_LIMIT_ACTION_MAX, 2);
        ck_assert_str_eq(hard_limit_action_to_string(HARD_LIMIT_NONE), "none");
        ck_assert_str_eq(hard_limit_action_to_string(HARD_LIMIT_TERMINATE), "terminate");
        ck_assert_ptr_null(hard_limit_action_to_string(_HARD_LIMIT_ACTION_MAX));
        ck_assert_int_eq(hard_limit_action_from_string("none"), HARD_LIMIT_NONE);
        ck_assert_int_eq(hard_limit_action_from_string("terminate"), HARD_LIMIT_TERMINATE);
        ck_assert_int_eq(hard_limit_action_from_string("kill"), -EINVAL);
        ck_assert_int_eq(hard_limit_action_from_string(NULL), -EINVAL);
}
END_TEST

/* ---- errors, exactly ---- */

/* The whole error text, every line, for the settings of issue 9. */
typedef struct ExactRow {
        const char *name;
        const char *text;
        const char *errors; /* without the "test.conf:" of each line */
} ExactRow;

#define LONG_NAME_64 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define LONG_NAME_65 LONG_NAME_64 "a"
#define RULE(body)   "rules = ( { name = \"x\"; " body " } );"
#define GLOB_ROW(name, glob, problem)                                                                       \
        {                                                                                                   \
                name, RULE("match = { unit = \"" glob "\"; };"),                                            \
                        "1: rules[0] ('x').match.unit: malformed glob '" glob "': " problem "\n"            \
        }

static const ExactRow exact_rows[] = {
        /* the new groups and limits */
        {"global allocations negative", "global = { max_allocations = -1; };",
         "1: global.max_allocations must be between 0 and 999999999999, got -1\n"},
        {"user 10^12", "user = {\n  tokens_per_minute = 1000000000000;\n};",
         "2: user.tokens_per_minute must be between 0 and 999999999999, got 1000000000000\n"},
        {"unit string", "unit = { max_allocations = \"x\"; };",
         "1: unit.max_allocations must be an integer, got a string\n"},
        {"agent negative", "agent = { max_tokens_in_flight = -1; };",
         "1: agent.max_tokens_in_flight must be between 0 and 999999999999, got -1\n"},
        {"agent unknown", "agent = { tokens_per_week = 1; };",
         "1: unknown setting 'agent.tokens_per_week'\n"},
        {"process has no max_allocations", "process = { max_allocations = 5; };",
         "1: unknown setting 'process.max_allocations'\n"},
        {"user scalar", "user = 5;", "1: user must be a group, got an integer\n"},
        {"unit list", "unit = ( );", "1: unit must be a group, got a list\n"},
        {"scopes 0", "limits = { max_tracked_scopes = 0; };",
         "1: limits.max_tracked_scopes must be between 1 and 10000000, got 0\n"},
        {"scopes 10^7 + 1", "limits = { max_tracked_scopes = 10000001; };",
         "1: limits.max_tracked_scopes must be between 1 and 10000000, got 10000001\n"},
        {"scopes per uid 0", "limits = { max_tracked_scopes_per_uid = 0; };",
         "1: limits.max_tracked_scopes_per_uid must be between 1 and 10000000, got 0\n"},
        {"scopes per uid 10^7 + 1", "limits = { max_tracked_scopes_per_uid = 10000001; };",
         "1: limits.max_tracked_scopes_per_uid must be between 1 and 10000000, got 10000001\n"},
        /* admin_group */
        {"admin gid negative", "admin_group = -1;",
         "1: admin_group must be a group name or a gid from 0 to 4294967294, got -1\n"},
        {"admin gid -1 as unsigned", "admin_group = 4294967295;",
         "1: admin_group must be a group name or a gid from 0 to 4294967294, got 4294967295\n"},
        {"admin gid string too big", "admin_group = \"4294967295\";",
         "1: admin_group must be a group name or a gid from 0 to 4294967294, got '4294967295'\n"},
        {"admin gid huge string", "admin_group = \"99999999999999999999999\";",
         "1: admin_group must be a group name or a gid from 0 to 4294967294, got "
         "'99999999999999999999999'\n"},
        {"admin bool", "admin_group = true;",
         "1: admin_group must be a group name (a string) or a gid (an integer), got a boolean\n"},
        {"admin float", "admin_group = 1.5;",
         "1: admin_group must be a group name (a string) or a gid (an integer), got a float\n"},
        {"admin control", "admin_group = \"a\\nb\";",
         "1: admin_group must not contain control characters, got 'a?b'\n"},
        {"admin not UTF-8", "admin_group = \"\\xff\";", "1: admin_group must be valid UTF-8, got '?'\n"},
        {"admin too long",
         "admin_group = \"" LONG_NAME_65 LONG_NAME_65 LONG_NAME_65
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\";",
         "1: admin_group must be at most 256 bytes, got '"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'\n"},
        /* the list and its elements */
        {"rules scalar", "rules = 5;", "1: rules must be a list ( { ... }, ... ), got an integer\n"},
        {"rules array", "rules = [ ];", "1: rules must be a list ( { ... }, ... ), got an array\n"},
        {"rule scalar", "rules = ( 5 );", "1: rules[0] must be a group { ... }, got an integer\n"},
        {"rule list", "rules = ( { name = \"a\"; },\n ( ) );",
         "2: rules[1] must be a group { ... }, got a list\n"},
        {"missing name", "rules = ( { } );",
         "1: rules[0]: missing setting 'name' (every rule needs a unique name)\n"},
        {"missing name, other errors", "rules = (\n  {\n    per = \"x\";\n  }\n);",
         "2: rules[0]: missing setting 'name' (every rule needs a unique name)\n"
         "3: rules[0].per must be one of rule, user, unit, process, agent, got 'x'\n"},
        {"name integer", "rules = ( { name = 5; } );",
         "1: rules[0].name must be a string, got an integer\n"},
        {"name empty", "rules = ( { name = \"\"; } );",
         "1: rules[0].name must be 1 to 64 of the characters A-Z a-z 0-9 _ . -, got ''\n"},
        {"name space", "rules = ( { name = \"a b\"; } );",
         "1: rules[0].name must be 1 to 64 of the characters A-Z a-z 0-9 _ . -, got 'a b'\n"},
        {"name colon", "rules = ( { name = \"a:b\"; } );",
         "1: rules[0].name must be 1 to 64 of the characters A-Z a-z 0-9 _ . -, got 'a:b'\n"},
        {"name 65", "rules = ( { name = \"" LONG_NAME_65 "\"; } );",
         "1: rules[0].name must be 1 to 64 of the characters A-Z a-z 0-9 _ . -, got '" LONG_NAME_64
         "...'\n"},
        {"name invalid, later errors unnamed", "rules = ( { name = \"a b\"; tokens_per_week = 1; } );",
         "1: rules[0].name must be 1 to 64 of the characters A-Z a-z 0-9 _ . -, got 'a b'\n"
         "1: rules[0]: unknown setting 'tokens_per_week'\n"},
        {"duplicate names", "rules = (\n { name = \"a\"; },\n { name = \"b\"; },\n { name = \"a\"; }\n);",
         "4: rules[2]: duplicate rule name 'a', first used by rules[0] on line 2\n"},
        {"three of a name", "rules = (\n { name = \"a\"; },\n { name = \"a\"; },\n { name = \"a\"; }\n);",
         "3: rules[1]: duplicate rule name 'a', first used by rules[0] on line 2\n"
         "4: rules[2]: duplicate rule name 'a', first used by rules[0] on line 2\n"},
        {"duplicate key", RULE("per = \"user\"; per = \"unit\";"), "1: duplicate setting name\n"},
        {"trailing comma", "rules = ( { name = \"a\"; }, );", "1: syntax error\n"},
        /* unknown keys */
        {"unknown key", RULE("tokens_per_week = 1;"),
         "1: rules[0] ('x'): unknown setting 'tokens_per_week'\n"},
        {"unknown before name", "rules = ( { tokens_per_week = 1; name = \"x\"; } );",
         "1: rules[0] ('x'): unknown setting 'tokens_per_week'\n"},
        {"unknown in match", RULE("match = { uid = 1; };"),
         "1: rules[0] ('x'): unknown setting 'match.uid'\n"},
        {"predicate outside match", RULE("user = \"alice\";"),
         "1: rules[0] ('x'): unknown setting 'user' (predicates go in match = { ... })\n"},
        {"group in match", RULE("match = { match = { }; };"),
         "1: rules[0] ('x'): unknown setting 'match.match'\n"},
        {"top-level setting in rule", RULE("socket = \"/x\";"),
         "1: rules[0] ('x'): unknown setting 'socket'\n"},
        {"top-level group in rule", RULE("global = { };"), "1: rules[0] ('x'): unknown setting 'global'\n"},
        {"rule setting at top", "per = \"user\";", "1: unknown setting 'per'\n"},
        {"match at top", "match = { };", "1: unknown setting 'match'\n"},
        /* types and values */
        {"match scalar", RULE("match = 5;"), "1: rules[0] ('x').match must be a group, got an integer\n"},
        {"per unknown", RULE("per = \"group\";"),
         "1: rules[0] ('x').per must be one of rule, user, unit, process, agent, got 'group'\n"},
        {"per integer", RULE("per = 1;"), "1: rules[0] ('x').per must be a string, got an integer\n"},
        {"priority unknown", RULE("priority = \"high\";"),
         "1: rules[0] ('x').priority must be one of interactive, normal, background, got 'high'\n"},
        {"max_priority integer", RULE("max_priority = 0;"),
         "1: rules[0] ('x').max_priority must be a string, got an integer\n"},
        {"tokens negative", RULE("tokens_per_hour = -1;"),
         "1: rules[0] ('x').tokens_per_hour must be between 0 and 999999999999, got -1\n"},
        {"tokens 10^12", RULE("tokens_per_day = 1000000000000;"),
         "1: rules[0] ('x').tokens_per_day must be between 0 and 999999999999, got 1000000000000\n"},
        {"in flight float", RULE("max_tokens_in_flight = 1.5;"),
         "1: rules[0] ('x').max_tokens_in_flight must be an integer, got a float\n"},
        {"allocations string", RULE("max_allocations = \"8\";"),
         "1: rules[0] ('x').max_allocations must be an integer, got a string\n"},
        {"request tokens 0", RULE("max_request_tokens = 0;"),
         "1: rules[0] ('x').max_request_tokens must be between 1 and 999999999999, got 0\n"},
        {"warn 0.5", RULE("warn_multiplier = 0.5;"),
         "1: rules[0] ('x').warn_multiplier must be between 1.0 and 5.0, got 0.5\n"},
        {"hard 5.5", RULE("hard_multiplier = 5.5;"),
         "1: rules[0] ('x').hard_multiplier must be between 1.0 and 5.0, got 5.5\n"},
        {"hard string", RULE("hard_multiplier = \"2\";"),
         "1: rules[0] ('x').hard_multiplier must be a number, got a string\n"},
        {"escalate 10.5", RULE("escalate_multiplier = 10.5;"),
         "1: rules[0] ('x').escalate_multiplier must be between 1.0 and 10.0, got 10.5\n"},
        {"escalate 0.999", RULE("escalate_multiplier = 0.999;"),
         "1: rules[0] ('x').escalate_multiplier must be between 1.0 and 10.0, got 0.999\n"},
        {"user negative", RULE("match = { user = -1; };"),
         "1: rules[0] ('x').match.user must be a user name or a uid from 0 to 4294967294, got -1\n"},
        {"user empty", RULE("match = { user = \"\"; };"),
         "1: rules[0] ('x').match.user must not be empty, got ''\n"},
        {"user bool", RULE("match = { user = false; };"),
         "1: rules[0] ('x').match.user must be a user name (a string) or a uid (an integer), got a "
         "boolean\n"},
        {"group float", RULE("match = { group = 1.5; };"),
         "1: rules[0] ('x').match.group must be a group name (a string) or a gid (an integer), got a "
         "float\n"},
        {"group too big", RULE("match = { group = 0x100000000; };"),
         "1: rules[0] ('x').match.group must be a group name or a gid from 0 to 4294967294, got "
         "4294967296\n"},
        {"group control", RULE("match = { group = \"wh\\teel\"; };"),
         "1: rules[0] ('x').match.group must not contain control characters, got 'wh?eel'\n"},
        {"glob integer", RULE("match = { command = 5; };"),
         "1: rules[0] ('x').match.command must be a string, got an integer\n"},
        /* relations inside a rule and with the top level */
        {"priority above max", RULE("priority = \"interactive\";\nmax_priority = \"normal\";"),
         "1: rules[0] ('x').priority ('interactive') must not be above its max_priority ('normal')\n"},
        {"warn above hard", RULE("hard_multiplier = 1.2;\nwarn_multiplier = 1.3;"),
         "2: rules[0] ('x').warn_multiplier (1.3) must not be greater than its hard_multiplier (1.2)\n"},
        {"warn above top-level hard", RULE("warn_multiplier = 2.5;"),
         "1: rules[0] ('x').warn_multiplier (2.5) must not be greater than the top-level hard_multiplier "
         "(2)\n"},
        {"hard below top-level warn", RULE("hard_multiplier = 1.2;"),
         "1: rules[0] ('x').hard_multiplier (1.2) must not be less than the top-level warn_multiplier "
         "(1.5)\n"},
        {"top-level hard later in the file", RULE("warn_multiplier = 2.5;") "\nhard_multiplier = 2.4;",
         "1: rules[0] ('x').warn_multiplier (2.5) must not be greater than the top-level hard_multiplier "
         "(2.4)\n"},
        /* A top-level value that failed its own check is not compared. */
        {"invalid top-level hard", RULE("warn_multiplier = 2.5;") "\nhard_multiplier = 9;",
         "2: hard_multiplier must be between 1.0 and 5.0, got 9\n"},
        {"invalid rule warn", RULE("warn_multiplier = 9;"),
         "1: rules[0] ('x').warn_multiplier must be between 1.0 and 5.0, got 9\n"},
        /* every error of several rules, named by index and name */
        {"the brief's example",
         "rules = (\n { name = \"a\"; },\n { name = \"b\"; },\n {\n  name = \"nightly\";\n"
         "  match = { unit = \"[abc\"; };\n  tokens_per_week = 1;\n  per = \"slice\";\n }\n);",
         "6: rules[2] ('nightly').match.unit: malformed glob '[abc': unbalanced '['\n"
         "7: rules[2] ('nightly'): unknown setting 'tokens_per_week'\n"
         "8: rules[2] ('nightly').per must be one of rule, user, unit, process, agent, got 'slice'\n"},
        /* globs */
        GLOB_ROW("glob empty", "", "empty"),
        GLOB_ROW("glob unbalanced", "[abc", "unbalanced '['"),
        GLOB_ROW("glob only [", "[", "unbalanced '['"),
        GLOB_ROW("glob [] is not closed", "[]", "unbalanced '['"),
        GLOB_ROW("glob [!] is not closed", "[!]", "unbalanced '['"),
        {"glob escaped ] is not a close", RULE("match = { unit = \"[a\\\\]\"; };"),
         "1: rules[0] ('x').match.unit: malformed glob '[a\\]': unbalanced '['\n"},
        GLOB_ROW("glob class not closed", "[[:alpha:]", "unbalanced '['"),
        GLOB_ROW("glob class unterminated", "[[:alpha]", "unbalanced '['"),
        GLOB_ROW("glob unknown class", "[[:foo:]]", "unknown character class"),
        GLOB_ROW("glob second bracket", "a[b]c[d", "unbalanced '['"),
        {"glob trailing backslash", RULE("match = { unit = \"foo\\\\\"; };"),
         "1: rules[0] ('x').match.unit: malformed glob 'foo\\': trailing '\\'\n"},
        {"glob tab", RULE("match = { unit = \"a\\tb\"; };"),
         "1: rules[0] ('x').match.unit: malformed glob 'a?b': a control character\n"},
        {"glob not UTF-8", RULE("match = { agent = \"a\\xc3\"; };"),
         "1: rules[0] ('x').match.agent: malformed glob 'a?': not valid UTF-8\n"},
        {"glob too long",
         RULE("match = { slice = \"" LONG_NAME_65 LONG_NAME_65 LONG_NAME_65 LONG_NAME_65 "\"; };"),
         "1: rules[0] ('x').match.slice: malformed glob '"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...': longer than 256 bytes\n"},
        {"every glob",
         RULE("match = {\n unit = \"[\";\n slice = \"[\";\n command = \"[\";\n agent = \"[\";\n};"),
         "2: rules[0] ('x').match.unit: malformed glob '[': unbalanced '['\n"
         "3: rules[0] ('x').match.slice: malformed glob '[': unbalanced '['\n"
         "4: rules[0] ('x').match.command: malformed glob '[': unbalanced '['\n"
         "5: rules[0] ('x').match.agent: malformed glob '[': unbalanced '['\n"},
        /* the escalation ladder: top level */
        {"escalate 0.5", "escalate_multiplier = 0.5;",
         "1: escalate_multiplier must be between 1.0 and 10.0, got 0.5\n"},
        {"escalate 10.001", "escalate_multiplier = 10.001;",
         "1: escalate_multiplier must be between 1.0 and 10.0, got 10.001\n"},
        {"escalate string", "escalate_multiplier = \"2.5\";",
         "1: escalate_multiplier must be a number, got a string\n"},
        {"on_escalate unknown", "on_escalate = \"ask\";",
         "1: on_escalate must be one of refuse, hold, got 'ask'\n"},
        {"on_escalate case", "on_escalate = \"Hold\";",
         "1: on_escalate must be one of refuse, hold, got 'Hold'\n"},
        {"on_escalate integer", "on_escalate = 1;", "1: on_escalate must be a string, got an integer\n"},
        {"on_hard_limit unknown", "on_hard_limit = \"kill\";",
         "1: on_hard_limit must be one of none, terminate, got 'kill'\n"},
        {"on_hard_limit bool", "on_hard_limit = true;",
         "1: on_hard_limit must be a string, got a boolean\n"},
        {"grace 0", "terminate_grace_sec = 0;",
         "1: terminate_grace_sec must be between 1 and 3600, got 0\n"},
        {"grace 3601", "terminate_grace_sec = 3601;",
         "1: terminate_grace_sec must be between 1 and 3600, got 3601\n"},
        {"grace float", "terminate_grace_sec = 0.5;",
         "1: terminate_grace_sec must be an integer, got a float\n"},
        {"enforce string", "enforce = \"no\";",
         "1: enforce must be a boolean (true or false), got a string\n"},
        {"enforce integer", "enforce = 0;",
         "1: enforce must be a boolean (true or false), got an integer\n"},
        /* model_tiers */
        {"tiers string", "model_tiers = \"large\";",
         "1: model_tiers must be an array of strings [ \"...\", ... ], got a string\n"},
        {"tiers list", "model_tiers = ( \"large\" );",
         "1: model_tiers must be an array of strings [ \"...\", ... ], got a list\n"},
        {"tiers group", "model_tiers = { a = \"large\"; };",
         "1: model_tiers must be an array of strings [ \"...\", ... ], got a group\n"},
        {"tiers integers", "model_tiers = [ 1, 2 ];",
         "1: model_tiers[0] must be a string, got an integer\n"},
        {"tiers booleans", "model_tiers = [ true ];", "1: model_tiers[0] must be a string, got a boolean\n"},
        {"tiers empty name", "model_tiers = [ \"a\", \"\" ];",
         "1: model_tiers[1] must be 1 to 255 bytes, got ''\n"},
        {"tiers 256 bytes", "model_tiers = [ \"" LONG_NAME_64 LONG_NAME_64 LONG_NAME_64 LONG_NAME_64 "\" ];",
         "1: model_tiers[0] must be 1 to 255 bytes, got '" LONG_NAME_64 "...'\n"},
        {"tiers control", "model_tiers = [ \"a\\tb\" ];",
         "1: model_tiers[0] must not contain control characters, got 'a?b'\n"},
        {"tiers not UTF-8", "model_tiers = [ \"\\xff\" ];",
         "1: model_tiers[0] must be valid UTF-8, got '?'\n"},
        {"tiers duplicate", "model_tiers = [\n  \"a\",\n  \"b\",\n  \"a\"\n];",
         "1: model_tiers[2]: duplicate name 'a', first given as model_tiers[0]\n"},
        {"tiers every element", "model_tiers = [\n  \"\",\n  \"b\",\n  \"b\",\n  \"c\\n\"\n];",
         "1: model_tiers[0] must be 1 to 255 bytes, got ''\n"
         "1: model_tiers[2]: duplicate name 'b', first given as model_tiers[1]\n"
         "1: model_tiers[3] must not contain control characters, got 'c?'\n"},
        {"tiers 33",
         "model_tiers = [ \"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", \"8\", \"9\", \"10\", \"11\", "
         "\"12\", \"13\", \"14\", \"15\", \"16\", \"17\", \"18\", \"19\", \"20\", \"21\", \"22\", \"23\", "
         "\"24\", \"25\", \"26\", \"27\", \"28\", \"29\", \"30\", \"31\", \"32\", \"33\" ];",
         "1: model_tiers must have at most 32 names, got 33\n"},
        /* the queue group */
        {"waiters 10^6 + 1", "queue = { max_waiters = 1000001; };",
         "1: queue.max_waiters must be between 0 and 1000000, got 1000001\n"},
        {"waiters negative", "queue = { max_waiters = -1; };",
         "1: queue.max_waiters must be between 0 and 1000000, got -1\n"},
        {"waiters string", "queue = { max_waiters = \"x\"; };",
         "1: queue.max_waiters must be an integer, got a string\n"},
        {"waiters per uid 10^6 + 1", "queue = { max_waiters_per_uid = 1000001; };",
         "1: queue.max_waiters_per_uid must be between 0 and 1000000, got 1000001\n"},
        {"wait 0", "queue = { max_wait_sec = 0; };",
         "1: queue.max_wait_sec must be between 1 and 86400, got 0\n"},
        {"wait 86401", "queue = { max_wait_sec = 86401; };",
         "1: queue.max_wait_sec must be between 1 and 86400, got 86401\n"},
        {"wait float", "queue = { max_wait_sec = 1.5; };",
         "1: queue.max_wait_sec must be an integer, got a float\n"},
        {"queue scalar", "queue = 5;", "1: queue must be a group, got an integer\n"},
        {"queue unknown", "queue = { max_waiters_per_user = 1; };",
         "1: unknown setting 'queue.max_waiters_per_user'\n"},
        /* the breaker group */
        {"threshold 0.005", "breaker = { pool_threshold = 0.005; };",
         "1: breaker.pool_threshold must be between 0.01 and 1.0, got 0.005\n"},
        {"threshold 0", "breaker = { pool_threshold = 0; };",
         "1: breaker.pool_threshold must be between 0.01 and 1.0, got 0\n"},
        {"threshold 1.5", "breaker = { pool_threshold = 1.5; };",
         "1: breaker.pool_threshold must be between 0.01 and 1.0, got 1.5\n"},
        {"threshold string", "breaker = { pool_threshold = \"80%\"; };",
         "1: breaker.pool_threshold must be a number, got a string\n"},
        {"release negative", "breaker = { pool_release = -0.1; };",
         "1: breaker.pool_release must be between 0.0 and 1.0, got -0.1\n"},
        {"release 1.01", "breaker = { pool_release = 1.01; };",
         "1: breaker.pool_release must be between 0.0 and 1.0, got 1.01\n"},
        {"breaches 1001", "breaker = { runaway_breaches = 1001; };",
         "1: breaker.runaway_breaches must be between 0 and 1000, got 1001\n"},
        {"breaches negative", "breaker = { runaway_breaches = -3; };",
         "1: breaker.runaway_breaches must be between 0 and 1000, got -3\n"},
        {"breaches float", "breaker = { runaway_breaches = 2.5; };",
         "1: breaker.runaway_breaches must be an integer, got a float\n"},
        {"window 0", "breaker = { runaway_window_sec = 0; };",
         "1: breaker.runaway_window_sec must be between 1 and 86400, got 0\n"},
        {"window 86401", "breaker = { runaway_window_sec = 86401; };",
         "1: breaker.runaway_window_sec must be between 1 and 86400, got 86401\n"},
        {"cooldown 0", "breaker = { cooldown_sec = 0; };",
         "1: breaker.cooldown_sec must be between 1 and 86400, got 0\n"},
        {"cooldown 86401", "breaker = { cooldown_sec = 86401; };",
         "1: breaker.cooldown_sec must be between 1 and 86400, got 86401\n"},
        {"max cooldown 0", "breaker = { max_cooldown_sec = 0; };",
         "1: breaker.max_cooldown_sec must be between 1 and 604800, got 0\n"},
        {"max cooldown 604801", "breaker = { max_cooldown_sec = 604801; };",
         "1: breaker.max_cooldown_sec must be between 1 and 604800, got 604801\n"},
        {"max cooldown string", "breaker = { max_cooldown_sec = \"1h\"; };",
         "1: breaker.max_cooldown_sec must be an integer, got a string\n"},
        {"breaker list", "breaker = ( );", "1: breaker must be a group, got a list\n"},
        {"breaker unknown", "breaker = { cooldown_usec = 1; };",
         "1: unknown setting 'breaker.cooldown_usec'\n"},
        /* the escalation group */
        /* the durable ledger */
        {"state dir relative", "state_directory = \"var/lib\";",
         "1: state_directory must be an absolute path or \"\" (off), got 'var/lib'\n"},
        {"state dir number", "state_directory = 1;",
         "1: state_directory must be a string, got an integer\n"},
        {"sync unknown", "durability = { sync = \"always\"; };",
         "1: durability.sync must be one of normal, full, got 'always'\n"},
        {"sync unknown key", "durability = { fsync = true; };", "1: unknown setting 'durability.fsync'\n"},
        {"retention 0", "history = { retention_days = 0; };",
         "1: history.retention_days must be between 1 and 36500, got 0\n"},
        {"retention 36501", "history = { retention_days = 36501; };",
         "1: history.retention_days must be between 1 and 36500, got 36501\n"},
        /* learned estimates */
        {"source unknown", "estimate_source = \"guess\";",
         "1: estimate_source must be one of client, learned, max, got 'guess'\n"},
        {"source number", "estimate_source = 1;", "1: estimate_source must be a string, got an integer\n"},
        {"min samples 0", "estimate_min_samples = 0;",
         "1: estimate_min_samples must be between 1 and 1000000, got 0\n"},
        {"floor 1.5", "estimate_floor = 1.5;", "1: estimate_floor must be between 0.0 and 1.0, got 1.5\n"},
        {"floor negative", "estimate_floor = -0.5;",
         "1: estimate_floor must be between 0.0 and 1.0, got -0.5\n"},
        {"half-life 0", "estimator = { half_life_samples = 0; };",
         "1: estimator.half_life_samples must be between 1 and 1000000, got 0\n"},
        {"tail below half-life", "estimator = {\n half_life_samples = 2000;\n};",
         "2: estimator.tail_half_life_samples (1000) must not be less than estimator.half_life_samples "
         "(2000)\n"},
        {"clip 1.2", "estimator = { clip_factor = 1.2; };",
         "1: estimator.clip_factor must be between 1.5 and 100.0, got 1.2\n"},
        {"spread 1", "estimator = { spread_quantile = 1.0; };",
         "1: estimator.spread_quantile must be between 0.5 and 0.999, got 1\n"},
        {"estimator unknown", "estimator = { half_life_sec = 5; };",
         "1: unknown setting 'estimator.half_life_sec'\n"},
        {"price list not a list", "prices = { models = { }; };",
         "1: prices.models must be a list ( { ... }, ... ), got a group\n"},
        {"price missing", "prices = { models = ( { model = \"m\"; input_per_million = 1; } ); };",
         "1: prices.models[0]: missing setting 'output_per_million'\n"},
        {"price model missing",
         "prices = { models = ( { input_per_million = 1; output_per_million = 2; } ); };",
         "1: prices.models[0]: missing setting 'model'\n"},
        {"price negative",
         "prices = { models = ( { model = \"m\"; input_per_million = -1; output_per_million = 2; } ); };",
         "1: prices.models[0].input_per_million must be between 0 and 1000000 (per million tokens), got "
         "-1\n"},
        {"price string",
         "prices = { models = ( { model = \"m\"; input_per_million = \"$1\"; output_per_million = 2; } ); "
         "};",
         "1: prices.models[0].input_per_million must be a number, got a string\n"},
        {"price model empty",
         "prices = { models = ( { model = \"\"; input_per_million = 1; output_per_million = 2; } ); };",
         "1: prices.models[0].model must be 1 to 255 bytes, got ''\n"},
        {"price unknown",
         "prices = { models = ( { model = \"m\"; input_per_million = 1; output_per_million = 2; "
         "cache_per_million = 3; } ); };",
         "1: prices.models[0]: unknown setting 'cache_per_million'\n"},
        {"price twice",
         "prices = { models = (\n { model = \"m\"; input_per_million = 1; output_per_million = 2; },\n"
         " { model = \"m\"; input_per_million = 3; output_per_million = 4; } ); };",
         "3: prices.models[1]: model 'm' is priced twice, first in prices.models[0]\n"},
        {"currency long", "prices = { currency = \"seventeen bytes!!\"; };",
         "1: prices.currency must be 0 to 16 bytes, got 'seventeen bytes!!'\n"},
        {"currency control", "prices = { currency = \"U\\tSD\"; };",
         "1: prices.currency must not contain control characters, got 'U?SD'\n"},
        {"prices unknown", "prices = { tax = 0.2; };", "1: unknown setting 'prices.tax'\n"},
        {"proxies not an array", "trusted_proxies = \"proxy\";",
         "1: trusted_proxies must be an array of strings [ \"...\", ... ], got a string\n"},
        {"proxies number", "trusted_proxies = [ 1000 ];",
         "1: trusted_proxies[0] must be a string, got an integer\n"},
        {"proxies empty name", "trusted_proxies = [ \"\" ];",
         "1: trusted_proxies[0] must not be empty, got ''\n"},
        {"proxies twice", "trusted_proxies = [ \"a\", \"b\", \"a\" ];",
         "1: trusted_proxies[2]: duplicate name 'a', first given as trusted_proxies[0]\n"},
        {"rule source unknown", "rules = ( { name = \"x\"; estimate_source = \"client-ish\"; } );",
         "1: rules[0] ('x').estimate_source must be one of client, learned, max, got 'client-ish'\n"},
        {"timeout 0", "escalation = { timeout_sec = 0; };",
         "1: escalation.timeout_sec must be between 1 and 86400, got 0\n"},
        {"timeout 86401", "escalation = { timeout_sec = 86401; };",
         "1: escalation.timeout_sec must be between 1 and 86400, got 86401\n"},
        {"timeout bool", "escalation = { timeout_sec = true; };",
         "1: escalation.timeout_sec must be an integer, got a boolean\n"},
        {"escalation scalar", "escalation = \"hold\";", "1: escalation must be a group, got a string\n"},
        {"escalation unknown", "escalation = { on_escalate = \"hold\"; };",
         "1: unknown setting 'escalation.on_escalate'\n"},
        /* relations */
        {"release above threshold", "breaker = {\n  pool_release = 0.9;\n};",
         "2: breaker.pool_release must be below breaker.pool_threshold (0.8), got 0.9\n"},
        {"release = threshold", "breaker = { pool_threshold = 0.5; pool_release = 0.5; };",
         "1: breaker.pool_release must be below breaker.pool_threshold (0.5), got 0.5\n"},
        {"threshold below default release", "breaker = {\n  pool_threshold = 0.6;\n};",
         "2: breaker.pool_release must be below breaker.pool_threshold (0.6), got 0.7\n"},
        {"both rounded alike", "breaker = { pool_threshold = 0.5004; pool_release = 0.4996; };",
         "1: breaker.pool_release must be below breaker.pool_threshold (0.5), got 0.5\n"},
        {"invalid threshold not compared", "breaker = {\n  pool_threshold = 2;\n  pool_release = 0.9;\n};",
         "2: breaker.pool_threshold must be between 0.01 and 1.0, got 2\n"},
        {"no waiters, default per uid", "queue = {\n  max_waiters = 0;\n};",
         "2: queue.max_waiters_per_uid (128) must not be greater than queue.max_waiters (0)\n"},
        {"per uid above waiters", "queue = {\n  max_waiters = 10;\n  max_waiters_per_uid = 11;\n};",
         "3: queue.max_waiters_per_uid (11) must not be greater than queue.max_waiters (10)\n"},
        {"per uid above default waiters", "queue = { max_waiters_per_uid = 2000; };",
         "1: queue.max_waiters_per_uid (2000) must not be greater than queue.max_waiters (1024)\n"},
        {"max cooldown below default cooldown", "breaker = { max_cooldown_sec = 100; };",
         "1: breaker.max_cooldown_sec (100) must not be less than breaker.cooldown_sec (300)\n"},
        {"cooldown above default max", "\nbreaker = { cooldown_sec = 7200; };",
         "2: breaker.max_cooldown_sec (3600) must not be less than breaker.cooldown_sec (7200)\n"},
        {"every relation at once",
         "queue = { max_waiters = 1; };\nbreaker = {\n  pool_release = 0.95;\n  max_cooldown_sec = 1;\n};",
         "1: queue.max_waiters_per_uid (128) must not be greater than queue.max_waiters (1)\n"
         "3: breaker.pool_release must be below breaker.pool_threshold (0.8), got 0.95\n"
         "4: breaker.max_cooldown_sec (1) must not be less than breaker.cooldown_sec (300)\n"},
        /* the escalation ladder: rules */
        {"rule on_escalate unknown", RULE("on_escalate = \"ask\";"),
         "1: rules[0] ('x').on_escalate must be one of refuse, hold, got 'ask'\n"},
        {"rule on_escalate integer", RULE("on_escalate = 0;"),
         "1: rules[0] ('x').on_escalate must be a string, got an integer\n"},
        {"rule on_hard_limit unknown", RULE("on_hard_limit = \"kill\";"),
         "1: rules[0] ('x').on_hard_limit must be one of none, terminate, got 'kill'\n"},
        {"rule on_hard_limit list", RULE("on_hard_limit = ( );"),
         "1: rules[0] ('x').on_hard_limit must be a string, got a list\n"},
        {"rule grace 0", RULE("terminate_grace_sec = 0;"),
         "1: rules[0] ('x').terminate_grace_sec must be between 1 and 3600, got 0\n"},
        {"rule grace 3601", RULE("terminate_grace_sec = 3601;"),
         "1: rules[0] ('x').terminate_grace_sec must be between 1 and 3600, got 3601\n"},
        {"rule grace string", RULE("terminate_grace_sec = \"10\";"),
         "1: rules[0] ('x').terminate_grace_sec must be an integer, got a string\n"},
        {"rule enforce string", RULE("enforce = \"false\";"),
         "1: rules[0] ('x').enforce must be a boolean (true or false), got a string\n"},
        {"rule enforce integer", RULE("enforce = 1;"),
         "1: rules[0] ('x').enforce must be a boolean (true or false), got an integer\n"},
        /* Only the top level has these. */
        {"rule model_tiers", RULE("model_tiers = [ ];"),
         "1: rules[0] ('x'): unknown setting 'model_tiers'\n"},
        {"rule queue", RULE("queue = { max_waiters = 1; };"),
         "1: rules[0] ('x'): unknown setting 'queue'\n"},
        {"rule breaker", RULE("breaker = { };"), "1: rules[0] ('x'): unknown setting 'breaker'\n"},
        {"rule escalation", RULE("escalation = { timeout_sec = 1; };"),
         "1: rules[0] ('x'): unknown setting 'escalation'\n"},
        /* the power group (issue 11): values */
        {"power enabled integer", "power = { enabled = 1; };",
         "1: power.enabled must be a boolean (true or false), got an integer\n"},
        {"power sensor integer", "power = { sensor = 0; };",
         "1: power.sensor must be a string, got an integer\n"},
        {"power sensor bad glob", "power = {\n  sensor = \"coretemp/[Package\";\n};",
         "2: power.sensor: malformed glob 'coretemp/[Package': unbalanced '['\n"},
        {"power sensor unknown class", "power = { sensor = \"[[:cpu:]]\"; };",
         "1: power.sensor: malformed glob '[[:cpu:]]': unknown character class\n"},
        {"power sensor trailing backslash", "power = { sensor = \"x\\\\\"; };",
         "1: power.sensor: malformed glob 'x\\': trailing '\\'\n"},
        {"power sensor control", "power = { sensor = \"a\\nb\"; };",
         "1: power.sensor: malformed glob 'a?b': a control character\n"},
        {"power sensor 256 bytes", "power = { sensor = \"" SENSOR_255 "a\"; };",
         "1: power.sensor: malformed glob '" LONG_NAME_64 "...': longer than 255 bytes\n"},
        {"power pressure_file relative", "power = { pressure_file = \"proc/pressure/memory\"; };",
         "1: power.pressure_file must be an absolute path or \"\" (off), got 'proc/pressure/memory'\n"},
        {"power pressure_file control", "power = { pressure_file = \"/proc/\\tx\"; };",
         "1: power.pressure_file must not contain control characters, got '/proc/?x'\n"},
        {"power pressure_file bool", "power = { pressure_file = false; };",
         "1: power.pressure_file must be a string, got a boolean\n"},
        {"power poll 0", "power = { poll_sec = 0; };",
         "1: power.poll_sec must be between 1 and 3600, got 0\n"},
        {"power poll 3601", "power = { poll_sec = 3601; };",
         "1: power.poll_sec must be between 1 and 3600, got 3601\n"},
        {"power poll float", "power = { poll_sec = 2.5; };",
         "1: power.poll_sec must be an integer, got a float\n"},
        {"power battery poll 0", "power = { battery_poll_sec = 0; };",
         "1: power.battery_poll_sec must be between 1 and 3600, got 0\n"},
        {"power battery poll 3601", "power = { battery_poll_sec = 3601; };",
         "1: power.battery_poll_sec must be between 1 and 3600, got 3601\n"},
        {"power low battery negative", "power = { low_battery_percent = -1; };",
         "1: power.low_battery_percent must be between 0 and 100, got -1\n"},
        {"power low battery 100.5", "power = { low_battery_percent = 100.5; };",
         "1: power.low_battery_percent must be between 0 and 100, got 100.5\n"},
        {"power low battery string", "power = { low_battery_percent = \"20%\"; };",
         "1: power.low_battery_percent must be a number, got a string\n"},
        {"power low battery release 101", "power = { low_battery_release_percent = 101; };",
         "1: power.low_battery_release_percent must be between 0 and 100, got 101\n"},
        {"power hot 200.001", "power = { hot_celsius = 200.001; };",
         "1: power.hot_celsius must be between -50 and 200, got 200.001\n"},
        {"power hot 250", "power = { hot_celsius = 250; };",
         "1: power.hot_celsius must be between -50 and 200, got 250\n"},
        {"power hot bool", "power = { hot_celsius = true; };",
         "1: power.hot_celsius must be a number, got a boolean\n"},
        {"power hot release -50.5", "power = { hot_release_celsius = -50.5; };",
         "1: power.hot_release_celsius must be between -50 and 200, got -50.5\n"},
        {"power critical 201", "power = { critical_celsius = 201; };",
         "1: power.critical_celsius must be between -50 and 200, got 201\n"},
        {"power critical release string", "power = { critical_release_celsius = \"90\"; };",
         "1: power.critical_release_celsius must be a number, got a string\n"},
        {"power pressure 101", "power = { memory_pressure_percent = 101; };",
         "1: power.memory_pressure_percent must be between 0 and 100, got 101\n"},
        {"power pressure release -0.01", "power = { memory_pressure_release_percent = -0.01; };",
         "1: power.memory_pressure_release_percent must be between 0 and 100, got -0.01\n"},
        /* factors */
        {"factor Pause", "power = { policy = { hot = { background = \"Pause\"; }; }; };",
         "1: power.policy.hot.background must be a number from 0.01 to 1.0 or \"pause\", got 'Pause'\n"},
        {"factor paused", "power = { policy = { hot = { background = \"paused\"; }; }; };",
         "1: power.policy.hot.background must be a number from 0.01 to 1.0 or \"pause\", got 'paused'\n"},
        {"factor number as string", "power = { policy = { battery = { normal = \"0.5\"; }; }; };",
         "1: power.policy.battery.normal must be a number from 0.01 to 1.0 or \"pause\", got '0.5'\n"},
        {"factor bool", "power = { policy = { ac = { interactive = false; }; }; };",
         "1: power.policy.ac.interactive must be a number from 0.01 to 1.0 or \"pause\", got a boolean\n"},
        {"factor list", "power = { policy = { critical = { normal = ( ); }; }; };",
         "1: power.policy.critical.normal must be a number from 0.01 to 1.0 or \"pause\", got a list\n"},
        {"factor 0", "power = { policy = { hot = { normal = 0; }; }; };",
         "1: power.policy.hot.normal must be between 0.01 and 1.0, or \"pause\", got 0 (write \"pause\" to "
         "pause)\n"},
        {"factor 0.0", "power = { policy = { hot = { normal = 0.0; }; }; };",
         "1: power.policy.hot.normal must be between 0.01 and 1.0, or \"pause\", got 0 (write \"pause\" to "
         "pause)\n"},
        {"factor 0.009", "power = { policy = { low_battery = { normal = 0.009; }; }; };",
         "1: power.policy.low_battery.normal must be between 0.01 and 1.0, or \"pause\", got 0.009\n"},
        {"factor 1.001", "power = { policy = { memory_pressure = { interactive = 1.001; }; }; };",
         "1: power.policy.memory_pressure.interactive must be between 0.01 and 1.0, or \"pause\", got "
         "1.001\n"},
        {"factor 2", "power = { policy = { ac = { background = 2; }; }; };",
         "1: power.policy.ac.background must be between 0.01 and 1.0, or \"pause\", got 2\n"},
        {"factor negative", "power = { policy = { ac = { background = -0.5; }; }; };",
         "1: power.policy.ac.background must be between 0.01 and 1.0, or \"pause\", got -0.5\n"},
        /* unknown settings, at each level */
        {"power unknown", "power = { fan_rpm = 1; };", "1: unknown setting 'power.fan_rpm'\n"},
        {"power unknown state", "power = {\n  policy = {\n    warm = { };\n  };\n};",
         "3: unknown setting 'power.policy.warm'\n"},
        {"power state with a dash", "power = { policy = { low-battery = { normal = 0.5; }; }; };",
         "1: unknown setting 'power.policy.low-battery' (write 'low_battery')\n"},
        {"power setting with a dash", "power = { hot-celsius = 90; };",
         "1: unknown setting 'power.hot-celsius' (write 'hot_celsius')\n"},
        {"power unknown priority", "power = { policy = { hot = { idle = 1.0; }; }; };",
         "1: unknown setting 'power.policy.hot.idle'\n"},
        {"power state in state", "power = { policy = { hot = { critical = { }; }; }; };",
         "1: unknown setting 'power.policy.hot.critical'\n"},
        {"power unknown in policy", "power = { policy = { enabled = true; }; };",
         "1: unknown setting 'power.policy.enabled'\n"},
        {"power state without policy", "power = { hot = { background = 0.5; }; };",
         "1: unknown setting 'power.hot'\n"},
        {"power priority without state", "power = { policy = { background = 0.5; }; };",
         "1: unknown setting 'power.policy.background'\n"},
        {"power ac spelled out", "power = { policy = { AC = { }; }; };",
         "1: unknown setting 'power.policy.AC'\n"},
        {"policy at top", "policy = { };", "1: unknown setting 'policy'\n"},
        {"power setting at top", "hot_celsius = 90;", "1: unknown setting 'hot_celsius'\n"},
        {"rule power", RULE("power = { enabled = false; };"),
         "1: rules[0] ('x'): unknown setting 'power'\n"},
        /* groups given as something else */
        {"power scalar", "power = 5;", "1: power must be a group, got an integer\n"},
        {"policy string", "power = { policy = \"laptop\"; };",
         "1: power.policy must be a group, got a string\n"},
        {"policy list", "power = { policy = ( ); };", "1: power.policy must be a group, got a list\n"},
        {"state string", "power = { policy = { hot = \"pause\"; }; };",
         "1: power.policy.hot must be a group, got a string\n"},
        {"state number", "power = { policy = { battery = 0.5; }; };",
         "1: power.policy.battery must be a group, got a float\n"},
        /* relations: release on the wrong side, critical not above hot */
        {"low battery release = threshold", "power = { low_battery_release_percent = 20; };",
         "1: power.low_battery_release_percent must be above power.low_battery_percent (20), got 20\n"},
        {"low battery above default release", "power = {\n  low_battery_percent = 30;\n};",
         "2: power.low_battery_release_percent must be above power.low_battery_percent (30), got 25\n"},
        {"low battery release below",
         "power = {\n  low_battery_percent = 10;\n  low_battery_release_percent = 9.9;\n};",
         "3: power.low_battery_release_percent must be above power.low_battery_percent (10), got 9.9\n"},
        {"hot release = hot", "power = { hot_release_celsius = 85; };",
         "1: power.hot_release_celsius must be below power.hot_celsius (85), got 85\n"},
        {"hot below default release", "power = {\n  hot_celsius = 79.5;\n};",
         "2: power.hot_release_celsius must be below power.hot_celsius (79.5), got 80\n"},
        {"hot rounded to its release", "power = { hot_celsius = 80.0004; hot_release_celsius = 79.9996; };",
         "1: power.hot_release_celsius must be below power.hot_celsius (80), got 80\n"},
        {"critical = hot", "power = { critical_celsius = 85; critical_release_celsius = 84; };",
         "1: power.critical_celsius must be above power.hot_celsius (85), got 85\n"},
        {"critical below hot", "power = { critical_celsius = 84; critical_release_celsius = 83; };",
         "1: power.critical_celsius must be above power.hot_celsius (85), got 84\n"},
        {"hot above default critical", "power = {\n  hot_celsius = 96;\n};",
         "2: power.critical_celsius must be above power.hot_celsius (96), got 95\n"},
        {"critical = hot, release above", "power = { critical_celsius = 85; };",
         "1: power.critical_celsius must be above power.hot_celsius (85), got 85\n"
         "1: power.critical_release_celsius must be below power.critical_celsius (85), got 90\n"},
        {"critical release = critical", "power = { critical_release_celsius = 95; };",
         "1: power.critical_release_celsius must be below power.critical_celsius (95), got 95\n"},
        {"pressure release above", "power = { memory_pressure_release_percent = 20.5; };",
         "1: power.memory_pressure_release_percent must be below power.memory_pressure_percent (20), got "
         "20.5\n"},
        {"pressure below default release", "power = { memory_pressure_percent = 5; };",
         "1: power.memory_pressure_release_percent must be below power.memory_pressure_percent (5), got "
         "10\n"},
        /* A value that failed its own check is not compared. */
        {"invalid hot not compared", "power = {\n  hot_celsius = 300;\n  hot_release_celsius = 90;\n};",
         "2: power.hot_celsius must be between -50 and 200, got 300\n"},
        {"invalid release not compared",
         "power = { low_battery_release_percent = \"x\"; low_battery_percent = 50; };",
         "1: power.low_battery_release_percent must be a number, got a string\n"},
        /* every error of a policy, each on its line */
        {"every policy error",
         "power = {\n  policy = {\n    hot = {\n      background = \"Pause\";\n      normal = 0;\n"
         "      idle = 1;\n    };\n    warm = { };\n    critical = 5;\n  };\n};",
         "4: power.policy.hot.background must be a number from 0.01 to 1.0 or \"pause\", got 'Pause'\n"
         "5: power.policy.hot.normal must be between 0.01 and 1.0, or \"pause\", got 0 (write \"pause\" to "
         "pause)\n"
         "6: unknown setting 'power.policy.hot.idle'\n"
         "8: unknown setting 'power.policy.warm'\n"
         "9: power.policy.critical must be a group, got an integer\n"},
};

/* Prefixes each line of want with FILENAME ":". */
static char *with_filename(const char *want) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        ck_assert_ptr_nonnull(f);
        for (const char *p = want; *p;) {
                const char *eol = strchr(p, '\n');
                size_t len = eol ? (size_t)(eol - p + 1) : strlen(p);
                fprintf(f, FILENAME ":%.*s", (int)len, p);
                p += len;
        }
        ck_assert_int_eq(fclose(f), 0);
        return buf;
}

START_TEST(test_exact_errors) {
        const ExactRow *row = &exact_rows[_i];
        char *errors = NULL, *want = with_filename(row->errors);
        Config c;
        int r;

        r = config_parse(row->text, FILENAME, &c, &errors);
        ck_assert_msg(r == -EINVAL, "row '%s': config_parse() = %d, want -EINVAL", row->name, r);
        ck_assert_msg(errors && strcmp(errors, want) == 0, "row '%s':\nwant:\n%sgot:\n%s", row->name, want,
                      errors ?: "(none)");
        free(errors);
        free(want);
}
END_TEST

/* ---- rules that parse ---- */

#define S(x) ((char *)(x))

typedef struct RuleRow {
        const char *name;
        const char *body; /* between the rule's { and } */
        RuleConfig want;  /* line is always 1 */
} RuleRow;

/* per = "rule" is RULE_PER_RULE, 0. */
#define NAMED(...)                                                                                          \
        { .name = S("x"), __VA_ARGS__ }

static const RuleRow rule_rows[] = {
        {"name only", "name = \"x\";", NAMED()},
        {"empty match", "name = \"x\"; match = { };", NAMED()},
        {"name of 64", "name = \"" LONG_NAME_64 "\";", {.name = S(LONG_NAME_64)}},
        {"name characters", "name = \"AZaz09_.-\";", {.name = S("AZaz09_.-")}},
        {"per rule", "name = \"x\"; per = \"rule\";", NAMED()},
        {"per user", "name = \"x\"; per = \"user\";", NAMED(.per = RULE_PER_USER)},
        {"per unit", "name = \"x\"; per = \"unit\";", NAMED(.per = RULE_PER_UNIT)},
        {"per process", "name = \"x\"; per = \"process\";", NAMED(.per = RULE_PER_PROCESS)},
        {"per agent", "name = \"x\"; per = \"agent\";", NAMED(.per = RULE_PER_AGENT)},
        {"user name", "name = \"x\"; match = { user = \"alice\"; };", NAMED(.match = {.user = S("alice")})},
        {"uid", "name = \"x\"; match = { user = 1000; };",
         NAMED(.match = {.user = S("1000"), .has_uid = true, .uid = 1000})},
        {"uid as a string", "name = \"x\"; match = { user = \"1000\"; };",
         NAMED(.match = {.user = S("1000"), .has_uid = true, .uid = 1000})},
        {"uid with zeros", "name = \"x\"; match = { user = \"007\"; };",
         NAMED(.match = {.user = S("7"), .has_uid = true, .uid = 7})},
        {"uid 0", "name = \"x\"; match = { user = 0; };", NAMED(.match = {.user = S("0"), .has_uid = true})},
        {"uid hex", "name = \"x\"; match = { user = 0x10; };",
         NAMED(.match = {.user = S("16"), .has_uid = true, .uid = 16})},
        {"uid largest", "name = \"x\"; match = { user = 4294967294; };",
         NAMED(.match = {.user = S("4294967294"), .has_uid = true, .uid = 4294967294u})},
        {"user name with digits", "name = \"x\"; match = { user = \"u1000\"; };",
         NAMED(.match = {.user = S("u1000")})},
        {"group name", "name = \"x\"; match = { group = \"wheel\"; };",
         NAMED(.match = {.group = S("wheel")})},
        {"gid", "name = \"x\"; match = { group = 10; };",
         NAMED(.match = {.group = S("10"), .has_gid = true, .gid = 10})},
        {"globs",
         "name = \"x\"; match = { unit = \"nightly-*.service\"; slice = \"batch.slice\"; "
         "command = \"python3*\"; agent = \"nightly-*\"; };",
         NAMED(.match = {.unit = S("nightly-*.service"),
                         .slice = S("batch.slice"),
                         .command = S("python3*"),
                         .agent = S("nightly-*")})},
        {"limits",
         "name = \"x\"; tokens_per_minute = 1; tokens_per_hour = 2; tokens_per_day = 3; "
         "max_tokens_in_flight = 4; max_allocations = 5;",
         NAMED(.limits = {.window_tokens = {1, 2, 3}, .in_flight_tokens = 4, .max_allocations = 5})},
        {"limits at most", "name = \"x\"; tokens_per_day = 999999999999; max_allocations = 999999999999;",
         NAMED(.limits = {.window_tokens = {0, 0, 999999999999}, .max_allocations = 999999999999})},
        {"max_request_tokens", "name = \"x\"; max_request_tokens = 1;",
         NAMED(.set = RULE_SET_MAX_REQUEST_TOKENS, .max_request_tokens = 1)},
        {"priority", "name = \"x\"; priority = \"background\";",
         NAMED(.set = RULE_SET_PRIORITY, .priority = PRIORITY_BACKGROUND)},
        {"max_priority", "name = \"x\"; max_priority = \"interactive\";",
         NAMED(.set = RULE_SET_MAX_PRIORITY, .max_priority = PRIORITY_INTERACTIVE)},
        {"priority at its max", "name = \"x\"; priority = \"normal\"; max_priority = \"normal\";",
         NAMED(.set = RULE_SET_PRIORITY | RULE_SET_MAX_PRIORITY, .priority = PRIORITY_NORMAL,
               .max_priority = PRIORITY_NORMAL)},
        {"priority below its max",
         "name = \"x\"; priority = \"background\"; max_priority = \"interactive\";",
         NAMED(.set = RULE_SET_PRIORITY | RULE_SET_MAX_PRIORITY, .priority = PRIORITY_BACKGROUND,
               .max_priority = PRIORITY_INTERACTIVE)},
        {"warn below top-level hard", "name = \"x\"; warn_multiplier = 2;",
         NAMED(.set = RULE_SET_WARN, .warn_permille = 2000)},
        {"hard above top-level warn", "name = \"x\"; hard_multiplier = 1.5;",
         NAMED(.set = RULE_SET_HARD, .hard_permille = 1500)},
        /* Its own pair may lie outside the top-level one's. */
        {"own warn and hard", "name = \"x\"; warn_multiplier = 1.1; hard_multiplier = 1.2;",
         NAMED(.set = RULE_SET_WARN | RULE_SET_HARD, .warn_permille = 1100, .hard_permille = 1200)},
        {"hard integer", "name = \"x\"; hard_multiplier = 5;",
         NAMED(.set = RULE_SET_HARD, .hard_permille = 5000)},
        {"escalate", "name = \"x\"; escalate_multiplier = 10.0;",
         NAMED(.set = RULE_SET_ESCALATE, .escalate_permille = 10000)},
        {"escalate 1", "name = \"x\"; escalate_multiplier = 1;",
         NAMED(.set = RULE_SET_ESCALATE, .escalate_permille = 1000)},
        {"on_escalate hold", "name = \"x\"; on_escalate = \"hold\";",
         NAMED(.set = RULE_SET_ON_ESCALATE, .on_escalate = ESCALATE_HOLD)},
        /* The default's value, given: it counts (it overrides a less specific rule). */
        {"on_escalate refuse", "name = \"x\"; on_escalate = \"refuse\";",
         NAMED(.set = RULE_SET_ON_ESCALATE, .on_escalate = ESCALATE_REFUSE)},
        {"on_hard_limit terminate", "name = \"x\"; on_hard_limit = \"terminate\";",
         NAMED(.set = RULE_SET_ON_HARD_LIMIT, .on_hard_limit = HARD_LIMIT_TERMINATE)},
        {"on_hard_limit none", "name = \"x\"; on_hard_limit = \"none\";",
         NAMED(.set = RULE_SET_ON_HARD_LIMIT, .on_hard_limit = HARD_LIMIT_NONE)},
        {"grace 1", "name = \"x\"; terminate_grace_sec = 1;",
         NAMED(.set = RULE_SET_TERMINATE_GRACE, .terminate_grace_usec = 1000000)},
        {"grace 3600", "name = \"x\"; terminate_grace_sec = 0xe10;",
         NAMED(.set = RULE_SET_TERMINATE_GRACE, .terminate_grace_usec = 3600000000)},
        {"dry run", "name = \"x\"; enforce = false;", NAMED(.set = RULE_SET_ENFORCE, .enforce = false)},
        {"enforced", "name = \"x\"; enforce = true;", NAMED(.set = RULE_SET_ENFORCE, .enforce = true)},
        {"learned", "name = \"x\"; estimate_source = \"learned\";",
         NAMED(.set = RULE_SET_ESTIMATE_SOURCE, .estimate_source = ESTIMATE_LEARNED)},
        {"max of both",
         "name = \"x\"; estimate_source = \"max\"; estimate_min_samples = 5; estimate_floor = 0;",
         NAMED(.set = RULE_SET_ESTIMATE_SOURCE | RULE_SET_ESTIMATE_MIN_SAMPLES | RULE_SET_ESTIMATE_FLOOR,
               .estimate_source = ESTIMATE_MAX, .estimate_min_samples = 5, .estimate_floor_permille = 0)},
        {"floor 1", "name = \"x\"; estimate_floor = 1.0;",
         NAMED(.set = RULE_SET_ESTIMATE_FLOOR, .estimate_floor_permille = 1000)},
        {"every key",
         "name = \"nightly\"; match = { user = \"alice\"; group = \"wheel\"; unit = \"nightly-*.service\"; "
         "slice = \"batch.slice\"; command = \"python3*\"; agent = \"nightly-*\"; }; per = \"agent\"; "
         "tokens_per_minute = 10; tokens_per_hour = 100000; tokens_per_day = 1000000; "
         "max_tokens_in_flight = 5000; max_allocations = 8; max_request_tokens = 20000; "
         "priority = \"background\"; max_priority = \"normal\"; warn_multiplier = 1.2; hard_multiplier = "
         "1.5; "
         "escalate_multiplier = 2.5; on_escalate = \"hold\"; on_hard_limit = \"terminate\"; "
         "terminate_grace_sec = 30; enforce = false;",
         {.name = S("nightly"),
          .match = {.user = S("alice"),
                    .group = S("wheel"),
                    .unit = S("nightly-*.service"),
                    .slice = S("batch.slice"),
                    .command = S("python3*"),
                    .agent = S("nightly-*")},
          .per = RULE_PER_AGENT,
          .limits = {.window_tokens = {10, 100000, 1000000}, .in_flight_tokens = 5000, .max_allocations = 8},
          .set = RULE_SET_MAX_REQUEST_TOKENS | RULE_SET_PRIORITY | RULE_SET_MAX_PRIORITY | RULE_SET_WARN |
                 RULE_SET_HARD | RULE_SET_ESCALATE | RULE_SET_ON_ESCALATE | RULE_SET_ON_HARD_LIMIT |
                 RULE_SET_TERMINATE_GRACE | RULE_SET_ENFORCE,
          .max_request_tokens = 20000,
          .priority = PRIORITY_BACKGROUND,
          .max_priority = PRIORITY_NORMAL,
          .warn_permille = 1200,
          .hard_permille = 1500,
          .escalate_permille = 2500,
          .on_escalate = ESCALATE_HOLD,
          .on_hard_limit = HARD_LIMIT_TERMINATE,
          .terminate_grace_usec = 30000000,
          .enforce = false}},
        {"keys in any order, name last", "per = \"user\"; match = { user = 5; }; name = \"x\";",
         NAMED(.per = RULE_PER_USER, .match = {.user = S("5"), .has_uid = true, .uid = 5})},
        {"colon syntax", "name: \"x\"; match: { agent: \"a\"; };", NAMED(.match = {.agent = S("a")})},
};

/* Globs fnmatch(3) reads as written: none is refused. */
static const char *const valid_globs[] = {
        "*",
        "?",
        "a",
        "nightly-*.service",
        "[abc]",
        "[!abc]",
        "[^abc]",
        "[]]",
        "[]x]",
        "[!]x]",
        "[a-z]*",
        "[[:alpha:]]",
        "[[:alnum:][:space:]]x",
        "[[.a.]]",
        "[[=a=]]",
        "\\\\[",
        "a\\\\*b",
        "[a\\\\]]",
        "]",
        "a]b",
        "[[]",
        "\xc4\x8d\x61j-*",
        "x\\\\y",
        "{a,b}",
        "~user",
        "*[*]*",
};

static void check_rule(const RuleConfig *got, const RuleConfig *want, const char *row) {
        ck_assert_msg(streq(got->name, want->name), "row '%s': name %s", row, got->name ?: "NULL");
        ck_assert_msg(streq(got->match.user, want->match.user), "row '%s': user %s", row,
                      got->match.user ?: "NULL");
        ck_assert_msg(streq(got->match.group, want->match.group), "row '%s': group", row);
        ck_assert_msg(streq(got->match.unit, want->match.unit), "row '%s': unit", row);
        ck_assert_msg(streq(got->match.slice, want->match.slice), "row '%s': slice", row);
        ck_assert_msg(streq(got->match.command, want->match.command), "row '%s': command", row);
        ck_assert_msg(streq(got->match.agent, want->match.agent), "row '%s': agent", row);
        ck_assert_msg(got->match.has_uid == want->match.has_uid && got->match.uid == want->match.uid,
                      "row '%s': uid %d %u", row, got->match.has_uid, (unsigned)got->match.uid);
        ck_assert_msg(got->match.has_gid == want->match.has_gid && got->match.gid == want->match.gid,
                      "row '%s': gid %d %u", row, got->match.has_gid, (unsigned)got->match.gid);
        ck_assert_msg(got->per == want->per, "row '%s': per %d", row, (int)got->per);
        ck_assert_msg(memcmp(&got->limits, &want->limits, sizeof(got->limits)) == 0, "row '%s': limits",
                      row);
        ck_assert_msg(got->set == want->set, "row '%s': set 0x%x, want 0x%x", row, got->set, want->set);
        ck_assert_msg(got->max_request_tokens == want->max_request_tokens, "row '%s': max_request_tokens",
                      row);
        ck_assert_msg(got->priority == want->priority && got->max_priority == want->max_priority,
                      "row '%s': priorities %d %d", row, (int)got->priority, (int)got->max_priority);
        ck_assert_msg(got->warn_permille == want->warn_permille &&
                              got->hard_permille == want->hard_permille &&
                              got->escalate_permille == want->escalate_permille,
                      "row '%s': multipliers %u %u %u", row, got->warn_permille, got->hard_permille,
                      got->escalate_permille);
        ck_assert_msg(got->on_escalate == want->on_escalate && got->on_hard_limit == want->on_hard_limit,
                      "row '%s': actions %d %d", row, (int)got->on_escalate, (int)got->on_hard_limit);
        ck_assert_msg(
                got->terminate_grace_usec == want->terminate_grace_usec && got->enforce == want->enforce,
                "row '%s': grace %" PRIu64 ", enforce %d", row, got->terminate_grace_usec, got->enforce);
        ck_assert_msg(got->estimate_source == want->estimate_source &&
                              got->estimate_min_samples == want->estimate_min_samples &&
                              got->estimate_floor_permille == want->estimate_floor_permille,
                      "row '%s': estimate_source %d, estimate_min_samples %" PRIu64 ", estimate_floor %u",
                      row, (int)got->estimate_source, got->estimate_min_samples,
                      got->estimate_floor_permille);
}

START_TEST(test_rule) {
        const RuleRow *row = &rule_rows[_i];
        const RuleConfig *want = &row->want;
        char text[2048];
        Config c;

        snprintf(text, sizeof(text), "rules = ( { %s } );", row->body);
        parse_ok(text, row->name, &c);
        ck_assert_uint_eq(c.n_rules, 1);
        ck_assert_uint_eq(c.rules[0].line, 1);
        check_rule(&c.rules[0], want, row->name);
        check_round_trip(&c, row->name);
        config_done(&c);
}
END_TEST

START_TEST(test_valid_glob) {
        char text[512];
        Config c;

        snprintf(text, sizeof(text),
                 "rules = ( { name = \"g\"; match = { unit = \"%s\"; command = \"%s\"; }; } );",
                 valid_globs[_i], valid_globs[_i]);
        parse_ok(text, valid_globs[_i], &c);
        ck_assert_ptr_nonnull(c.rules[0].match.unit);
        check_round_trip(&c, valid_globs[_i]);
        config_done(&c);
}
END_TEST

/* Rules keep the file's order and lines. */
START_TEST(test_rules_in_order) {
        static const char text[] = "rules = (\n"
                                   "  { name = \"first\"; },\n"
                                   "  {\n"
                                   "    name = \"second\";\n"
                                   "  },\n"
                                   "\n"
                                   "  { name = \"third\"; per = \"unit\"; }\n"
                                   ");\n";
        Config c;

        parse_ok(text, "in order", &c);
        ck_assert_uint_eq(c.n_rules, 3);
        ck_assert_str_eq(c.rules[0].name, "first");
        ck_assert_str_eq(c.rules[1].name, "second");
        ck_assert_str_eq(c.rules[2].name, "third");
        ck_assert_uint_eq(c.rules[0].line, 2);
        ck_assert_uint_eq(c.rules[1].line, 3);
        ck_assert_uint_eq(c.rules[2].line, 7);
        ck_assert_int_eq(c.rules[2].per, RULE_PER_UNIT);
        config_done(&c);
}
END_TEST

/* n rules named r0, r1, ..., one per line from line 2. */
static char *many_rules(size_t n) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);

        ck_assert_ptr_nonnull(f);
        fputs("rules = (\n", f);
        for (size_t i = 0; i < n; i++)
                fprintf(f, "{ name = \"r%zu\"; }%s\n", i, i + 1 < n ? "," : "");
        fputs(");\n", f);
        ck_assert_int_eq(fclose(f), 0);
        return buf;
}

START_TEST(test_rules_max) {
        char *text = many_rules(CONFIG_RULES_MAX), *errors = NULL, want[128];
        Config c;

        parse_ok(text, "CONFIG_RULES_MAX rules", &c);
        ck_assert_uint_eq(c.n_rules, CONFIG_RULES_MAX);
        ck_assert_str_eq(c.rules[CONFIG_RULES_MAX - 1].name, "r9999");
        check_round_trip(&c, "CONFIG_RULES_MAX rules");
        config_done(&c);
        free(text);

        /* One more: one error, on the line of the first rule too many. */
        text = many_rules(CONFIG_RULES_MAX + 1);
        ck_assert_int_eq(config_parse(text, FILENAME, &c, &errors), -EINVAL);
        snprintf(want, sizeof(want), FILENAME ":%d: rules must have at most %d rules, got %d\n",
                 CONFIG_RULES_MAX + 2, CONFIG_RULES_MAX, CONFIG_RULES_MAX + 1);
        ck_assert_str_eq(errors, want);
        free(errors);
        free(text);
}
END_TEST

/* A file with errors in the rules and around them: every one reported, by line. */
START_TEST(test_rules_every_error) {
        static const char text[] = "rules = (\n"                                          /* 1 */
                                   "  { name = \"ok\"; },\n"                              /* 2 */
                                   "  { per = \"unit\"; },\n"                             /* 3 */
                                   "  { name = \"ok\"; priority = \"urgent\"; },\n"       /* 4 */
                                   "  { name = \"g\"; match = { unit = \"a\\\\\"; }; }\n" /* 5 */
                                   ");\n"                                                 /* 6 */
                                   "user = { max_allocations = -1; };\n"                  /* 7 */
                                   "admin_group = 1.0;\n";                                /* 8 */
        static const char want[] = FILENAME
                ":3: rules[1]: missing setting 'name' (every rule needs a unique name)\n" FILENAME
                ":4: rules[2] ('ok').priority must be one of interactive, normal, background, got "
                "'urgent'\n" FILENAME
                ":4: rules[2]: duplicate rule name 'ok', first used by rules[0] on line 2\n" FILENAME
                ":5: rules[3] ('g').match.unit: malformed glob 'a\\': trailing '\\'\n" FILENAME
                ":7: user.max_allocations must be between 0 and 999999999999, got -1\n" FILENAME
                ":8: admin_group must be a group name (a string) or a gid (an integer), got a float\n";
        char *errors = NULL;
        Config c;

        ck_assert_int_eq(config_parse(text, FILENAME, &c, &errors), -EINVAL);
        ck_assert_msg(errors && strcmp(errors, want) == 0, "want:\n%sgot:\n%s", want, errors ?: "(none)");
        free(errors);
}
END_TEST

/* ---- format with rules ---- */

static const char rich_rules[] =
        "admin_group = \"staff\";\n"
        "rules = (\n"
        "  { name = \"nightly\"; match = { user = \"alice\"; group = 10; unit = \"nightly-*.service\"; "
        "slice = \"batch.slice\"; command = \"python3*\"; agent = \"a\\\\*\"; }; per = \"agent\"; "
        "tokens_per_minute = 1; tokens_per_hour = 4294967297; tokens_per_day = 999999999999; "
        "max_tokens_in_flight = 4; max_allocations = 5; max_request_tokens = 6; priority = \"background\"; "
        "max_priority = \"normal\"; warn_multiplier = 1.001; hard_multiplier = 4.999; "
        "escalate_multiplier = 9.5; },\n"
        "  { name = \"all\"; },\n"
        "  { name = \"q\"; match = { user = \"o\\\"brien\"; group = \"x\\\\y\"; }; per = \"process\"; "
        "priority = \"interactive\"; },\n"
        "  { name = \"u\"; per = \"unit\"; match = { user = 0; }; hard_multiplier = 2; },\n"
        "  { name = \"ladder\"; match = { agent = \"bot-*\"; }; on_escalate = \"hold\"; "
        "on_hard_limit = \"terminate\"; terminate_grace_sec = 3600; enforce = false; }\n"
        ");\n"
        "escalate_multiplier = 4.25;\non_escalate = \"hold\";\non_hard_limit = \"terminate\";\n"
        "terminate_grace_sec = 1;\nenforce = false;\nmodel_tiers = [ \"large\", \"m\\\"id\", \"small\" ];\n"
        "queue = { max_waiters = 7; max_waiters_per_uid = 7; max_wait_sec = 86400; };\n"
        "breaker = { pool_threshold = 0.95; pool_release = 0.001; runaway_breaches = 1000; "
        "runaway_window_sec = 1; cooldown_sec = 86400; max_cooldown_sec = 604800; };\n"
        "escalation = { timeout_sec = 2; };\n";

START_TEST(test_round_trip_rules) {
        char *text;
        Config c;

        parse_ok(rich_rules, "rich rules", &c);
        ck_assert_uint_eq(c.n_rules, 5);
        check_round_trip(&c, "rich rules");
        text = config_format(&c);
        ck_assert_ptr_nonnull(text);
        /* Only what a rule sets is written; an id as an integer, a name as a string. */
        ck_assert_msg(
                strstr(text,
                       "                name = \"all\";\n                match = {\n                };\n"
                       "                per = \"rule\";\n"),
                "%s", text);
        ck_assert_msg(strstr(text, "                        group = 10;\n"), "%s", text);
        ck_assert_msg(strstr(text, "                        user = 0;\n"), "%s", text);
        ck_assert_msg(strstr(text, "tokens_per_hour = 4294967297L;\n"), "%s", text);
        ck_assert_msg(strstr(text, "escalate_multiplier = 9.5;\n"), "%s", text);
        ck_assert_msg(strstr(text, "admin_group = \"staff\";\n"), "%s", text);
        ck_assert_msg(strstr(text, "model_tiers = [ \"large\", \"m\\\"id\", \"small\" ];\n"), "%s", text);
        ck_assert_msg(strstr(text, "on_escalate = \"hold\";\n"), "%s", text);
        ck_assert_msg(
                strstr(text, "breaker = {\n        pool_threshold = 0.95;\n        pool_release = 0.001;\n"),
                "%s", text);
        ck_assert_msg(
                strstr(text,
                       "                terminate_grace_sec = 3600;\n                enforce = false;\n"),
                "%s", text);
        free(text);
        config_done(&c);
}
END_TEST

/* config_equal() sees a change in any part of a rule, and in their number. */
START_TEST(test_equal_rules) {
        Config a, b;

        parse_ok(rich_rules, "rich rules", &a);
        for (int change = 0; change < 33; change++) {
                RuleConfig *r;

                parse_ok(rich_rules, "rich rules", &b);
                ck_assert(config_equal(&a, &b));
                r = &b.rules[0];
                switch (change) {
                case 0:
                        r->name[0] = 'N';
                        break;
                case 1:
                        r->match.user[0] = 'A';
                        break;
                case 2:
                        r->match.gid = 11;
                        break;
                case 3:
                        r->match.has_uid = true;
                        break;
                case 4:
                        r->match.unit[0] = 'N';
                        break;
                case 5:
                        r->match.slice[0] = 'B';
                        break;
                case 6:
                        r->match.command[0] = 'P';
                        break;
                case 7:
                        r->match.agent[0] = 'b';
                        break;
                case 8:
                        r->per = RULE_PER_USER;
                        break;
                case 9:
                        r->limits.window_tokens[LEDGER_WINDOW_DAY]--;
                        break;
                case 10:
                        r->limits.max_allocations++;
                        break;
                case 11:
                        r->max_request_tokens++;
                        break;
                case 12:
                        r->priority = PRIORITY_NORMAL;
                        break;
                case 13:
                        r->max_priority = PRIORITY_INTERACTIVE;
                        break;
                case 14:
                        r->warn_permille++;
                        break;
                case 15:
                        r->escalate_permille++;
                        break;
                case 16:
                        r->set &= ~(uint32_t)RULE_SET_ESCALATE;
                        break;
                case 17:
                        b.n_rules--;
                        break;
                case 18:
                        b.has_admin_gid = true;
                        break;
                case 19:
                        free(b.rules[1].match.unit);
                        b.rules[1].match.unit = strdup("*");
                        break;
                case 20:
                        b.rules[4].on_escalate = ESCALATE_REFUSE;
                        break;
                case 21:
                        b.rules[4].on_hard_limit = HARD_LIMIT_NONE;
                        break;
                case 22:
                        b.rules[4].terminate_grace_usec--;
                        break;
                case 23:
                        b.rules[4].enforce = true;
                        break;
                case 24:
                        b.rules[4].set &= ~(uint32_t)RULE_SET_ENFORCE;
                        break;
                case 25:
                        b.model_tiers[1][0] = 'M';
                        break;
                case 26:
                        b.n_model_tiers--;
                        break;
                case 27:
                        b.pool_release_permille++;
                        break;
                case 28:
                        b.queue_max_waiters_per_uid--;
                        break;
                case 29:
                        b.enforce = true;
                        break;
                case 30:
                        b.on_escalate = ESCALATE_REFUSE;
                        break;
                case 31:
                        b.escalation_timeout_usec++;
                        break;
                case 32:
                        b.escalate_permille--;
                        break;
                }
                ck_assert_msg(!config_equal(&a, &b) && !config_equal(&b, &a), "change %d not seen", change);
                if (change == 17)
                        b.n_rules++;
                if (change == 26)
                        b.n_model_tiers++;
                config_done(&b);
        }
        /* What does not count: where things were written, and unset values. */
        parse_ok(rich_rules, "rich rules", &b);
        b.rules[0].line = 99;
        b.admin_group_line = 99;
        b.rules[1].priority = PRIORITY_BACKGROUND;
        b.rules[1].max_request_tokens = 5;
        b.rules[1].on_escalate = ESCALATE_HOLD;
        b.rules[1].on_hard_limit = HARD_LIMIT_TERMINATE;
        b.rules[1].terminate_grace_usec = 5;
        b.rules[1].enforce = true;
        ck_assert(config_equal(&a, &b));
        config_done(&b);
        config_done(&a);
}
END_TEST

/* ---- names to ids ---- */

typedef struct LookupEntry {
        bool group;
        const char *name;
        int r;
        uint32_t id;
} LookupEntry;

static const LookupEntry lookup_entries[] = {
        {false, "alice", 0, 1000},  {false, "root", 0, 0},        {true, "wheel", 0, 10},
        {true, "staff", 0, 50},     {false, "nss-down", -EIO, 0}, {true, "nss-down", -EIO, 0},
        {false, "oom", -ENOMEM, 0}, {true, "alice", 0, 1001},
};

static unsigned lookup_calls;

static int table_lookup(bool group, const char *name, uint32_t *ret_id, void *userdata) {
        ck_assert_ptr_eq(userdata, &lookup_calls);
        lookup_calls++;
        for (size_t i = 0; i < ELEMENTSOF(lookup_entries); i++)
                if (lookup_entries[i].group == group && strcmp(lookup_entries[i].name, name) == 0) {
                        if (lookup_entries[i].r == 0)
                                *ret_id = lookup_entries[i].id;
                        return lookup_entries[i].r;
                }
        return -ENOENT;
}

typedef struct ResolveRow {
        const char *name;
        const char *text;
        int r;
        const char *warnings; /* exact, without "test.conf:"; NULL: none */
        unsigned calls;       /* lookups made */
        int admin_gid;        /* -1: none */
        int uid, gid;         /* of rules[0]; -1: none */
} ResolveRow;

static const ResolveRow resolve_rows[] = {
        {"nothing to resolve", "", 0, NULL, 0, -1, -1, -1},
        {"known user", "rules = ( { name = \"a\"; match = { user = \"alice\"; }; } );", 0, NULL, 1, -1, 1000,
         -1},
        {"known group", "rules = ( { name = \"a\"; match = { group = \"alice\"; }; } );", 0, NULL, 1, -1, -1,
         1001},
        {"both", "rules = ( { name = \"a\"; match = { user = \"root\"; group = \"wheel\"; }; } );", 0, NULL,
         2, -1, 0, 10},
        {"ids need no lookup",
         "admin_group = 5;\nrules = ( { name = \"a\"; match = { user = 7; group = \"8\"; }; } );", 0, NULL,
         0, 5, 7, 8},
        {"admin group", "\n\nadmin_group = \"staff\";", 0, NULL, 1, 50, -1, -1},
        {"unknown user", "rules = (\n { name = \"a\";\n  match = { user = \"bob\"; }; }\n);", 0,
         "2: warning: rule 'a': match.user 'bob' is not a known user; the rule can never match\n", 1, -1, -1,
         -1},
        {"unknown group",
         "rules = ( { name = \"a\"; match = { user = \"alice\"; group = \"nobody-here\"; }; } );", 0,
         "1: warning: rule 'a': match.group 'nobody-here' is not a known group; the rule can never match\n",
         2, -1, 1000, -1},
        {"a user is not a group", "rules = ( { name = \"a\"; match = { group = \"root\"; }; } );", 0,
         "1: warning: rule 'a': match.group 'root' is not a known group; the rule can never match\n", 1, -1,
         -1, -1},
        {"unknown admin group", "admin_group = \"wheel2\";", 0,
         "1: warning: admin_group 'wheel2' is not a known group; it makes nobody an admin\n", 1, -1, -1, -1},
        {"lookup fails", "rules = ( { name = \"a\"; match = { user = \"nss-down\"; }; } );", 0,
         "1: warning: rule 'a': match.user 'nss-down': cannot look the user up (Input/output error); the "
         "rule can "
         "never match\n",
         1, -1, -1, -1},
        {"admin lookup fails", "admin_group = \"nss-down\";", 0,
         "1: warning: admin_group 'nss-down': cannot look the group up (Input/output error); it makes "
         "nobody an "
         "admin\n",
         1, -1, -1, -1},
        {"every warning, by line",
         "rules = (\n { name = \"b\"; match = { user = \"x\"; group = \"y\"; }; },\n { name = \"c\"; match "
         "= { user = "
         "\"alice\"; }; }\n);\nadmin_group = \"z\";",
         0,
         "2: warning: rule 'b': match.user 'x' is not a known user; the rule can never match\n"
         "2: warning: rule 'b': match.group 'y' is not a known group; the rule can never match\n"
         "5: warning: admin_group 'z' is not a known group; it makes nobody an admin\n",
         4, -1, -1, -1},
        {"out of memory", "rules = ( { name = \"a\"; match = { user = \"oom\"; }; } );", -ENOMEM, NULL, 1,
         -1, -1, -1},
};

START_TEST(test_resolve_names) {
        const ResolveRow *row = &resolve_rows[_i];
        char *warnings = (char *)"unset", *want = row->warnings ? with_filename(row->warnings) : NULL;
        Config c;
        int r;

        parse_ok(row->text, row->name, &c);
        lookup_calls = 0;
        r = config_resolve_names(&c, FILENAME, table_lookup, &lookup_calls, &warnings);
        ck_assert_msg(r == row->r, "row '%s': config_resolve_names() = %d, want %d", row->name, r, row->r);
        ck_assert_msg(lookup_calls == row->calls, "row '%s': %u lookups, want %u", row->name, lookup_calls,
                      row->calls);
        if (r == 0) {
                ck_assert_msg(streq(warnings, want), "row '%s': warnings\n%s\nwant\n%s", row->name,
                              warnings ?: "(none)", want ?: "(none)");
                ck_assert_msg(c.has_admin_gid == (row->admin_gid >= 0) &&
                                      (row->admin_gid < 0 || c.admin_gid == (gid_t)row->admin_gid),
                              "row '%s': admin gid %d %u", row->name, c.has_admin_gid,
                              (unsigned)c.admin_gid);
        }
        if (c.n_rules > 0 && r == 0) {
                const RuleMatch *m = &c.rules[0].match;
                ck_assert_msg(m->has_uid == (row->uid >= 0) && (row->uid < 0 || m->uid == (uid_t)row->uid),
                              "row '%s': uid %d %u", row->name, m->has_uid, (unsigned)m->uid);
                ck_assert_msg(m->has_gid == (row->gid >= 0) && (row->gid < 0 || m->gid == (gid_t)row->gid),
                              "row '%s': gid %d %u", row->name, m->has_gid, (unsigned)m->gid);
        }
        if (r == 0) {
                /* Again: what is resolved is not looked up twice; the unknown are. */
                char *again = NULL;
                unsigned before = lookup_calls;

                ck_assert_int_eq(config_resolve_names(&c, FILENAME, table_lookup, &lookup_calls, &again), 0);
                ck_assert_msg(streq(again, want), "row '%s': second warnings differ", row->name);
                ck_assert_msg(lookup_calls - before == (row->warnings ? count_lines(row->warnings) : 0),
                              "row '%s': %u lookups the second time", row->name, lookup_calls - before);
                free(again);
                free(warnings);
        }
        /* Without a place for warnings, names are still resolved. */
        config_done(&c);
        parse_ok(row->text, row->name, &c);
        r = config_resolve_names(&c, FILENAME, table_lookup, &lookup_calls, NULL);
        ck_assert_int_eq(r, row->r);
        config_done(&c);
        free(want);
}
END_TEST

/* ---- the power group ---- */

/* Every power setting away from its default. */
static const char prices_text[] =
        "prices = {\n"
        "  currency = \"USD\";\n"
        "  models = (\n"
        "    { model = \"gpt-4o\"; input_per_million = 2.5; output_per_million = 10.0; },\n"
        "    { model = \"llama3.1:8b\"; input_per_million = 0; output_per_million = 0; },\n"
        "    { model = \"claude \\\"opus\\\"\"; input_per_million = 15; output_per_million = 1000000; }\n"
        "  );\n"
        "};\n";

static const char power_text[] =
        "power = {\n"
        "        enabled = false;\n"
        "        sensor = \"coretemp/Package id *\";\n"
        "        pressure_file = \"\";\n"
        "        poll_sec = 2;\n"
        "        battery_poll_sec = 60;\n"
        "        low_battery_percent = 10.5;\n"
        "        low_battery_release_percent = 15;\n"
        "        hot_celsius = 75.25;\n"
        "        hot_release_celsius = -0.5;\n"
        "        critical_celsius = 100;\n"
        "        critical_release_celsius = 99.999;\n"
        "        memory_pressure_percent = 40.01;\n"
        "        memory_pressure_release_percent = 0;\n"
        "        policy = {\n"
        "                ac = { background = 0.9; };\n"
        "                battery = { interactive = 0.75; background = \"pause\"; };\n"
        "                low_battery = { interactive = \"pause\"; };\n"
        "                memory_pressure = { };\n"
        "                hot = { normal = 0.125; };\n"
        "                critical = { interactive = 0.01; normal = 1; };\n"
        "        };\n"
        "};\n";

START_TEST(test_power_values) {
        unsigned want[_POWER_STATE_MAX][_PRIORITY_MAX];
        Config c;

        memcpy(want, default_factors, sizeof(want));
        want[POWER_AC][PRIORITY_BACKGROUND] = 900;
        want[POWER_BATTERY][PRIORITY_INTERACTIVE] = 750;
        want[POWER_BATTERY][PRIORITY_BACKGROUND] = PAUSE;
        want[POWER_LOW_BATTERY][PRIORITY_INTERACTIVE] = PAUSE;
        want[POWER_HOT][PRIORITY_NORMAL] = 125;
        want[POWER_CRITICAL][PRIORITY_INTERACTIVE] = 10;
        want[POWER_CRITICAL][PRIORITY_NORMAL] = 1000;

        parse_ok(power_text, "power", &c);
        ck_assert(!c.power.enabled);
        ck_assert_str_eq(c.power.sensor, "coretemp/Package id *");
        ck_assert_str_eq(c.power.pressure_file, "");
        ck_assert_uint_eq(c.power.poll_usec, 2000000);
        ck_assert_uint_eq(c.power.battery_poll_usec, 60000000);
        ck_assert_int_eq(c.power.low_battery_permille, 105);
        ck_assert_int_eq(c.power.low_battery_release_permille, 150);
        ck_assert_int_eq(c.power.hot_mc, 75250);
        ck_assert_int_eq(c.power.hot_release_mc, -500);
        ck_assert_int_eq(c.power.critical_mc, 100000);
        ck_assert_int_eq(c.power.critical_release_mc, 99999);
        ck_assert_int_eq(c.power.pressure_cp, 4001);
        ck_assert_int_eq(c.power.pressure_release_cp, 0);
        for (int st = 0; st < _POWER_STATE_MAX; st++)
                for (int pr = 0; pr < _PRIORITY_MAX; pr++)
                        ck_assert_msg(c.power.factor[st][pr] == want[st][pr], "policy.%s.%s: %u, want %u",
                                      power_state_to_string((PowerState)st),
                                      priority_to_string((Priority)pr), c.power.factor[st][pr],
                                      want[st][pr]);
        check_round_trip(&c, "power");
        config_done(&c);
}
END_TEST

/* A policy in the file replaces the built-in value of only the entries it
 * names: one entry given, seventeen left alone. */
typedef struct PolicyRow {
        const char *text;
        PowerState state;
        Priority priority;
        unsigned factor;
} PolicyRow;

static const PolicyRow policy_rows[] = {
        {"power = { policy = { hot = { normal = \"pause\"; }; }; };", POWER_HOT, PRIORITY_NORMAL, PAUSE},
        {"power = { policy = { battery = { background = 1.0; }; }; };", POWER_BATTERY, PRIORITY_BACKGROUND,
         1000},
        {"power = { policy = { critical = { interactive = \"pause\"; }; }; };", POWER_CRITICAL,
         PRIORITY_INTERACTIVE, PAUSE},
        {"power = { policy = { low_battery = { background = 0.2; }; }; };", POWER_LOW_BATTERY,
         PRIORITY_BACKGROUND, 200},
        {"power = { policy = { ac = { }; memory_pressure = { normal = 0.333; }; }; };",
         POWER_MEMORY_PRESSURE, PRIORITY_NORMAL, 333},
        /* An empty policy, or one with empty states, changes nothing. */
        {"power = { policy = { }; };", POWER_AC, PRIORITY_INTERACTIVE, 1000},
        {"power = { policy = { hot = { }; critical = { }; }; };", POWER_AC, PRIORITY_INTERACTIVE, 1000},
        /* The thresholds alone leave the policy as it is. */
        {"power = { hot_celsius = 70; hot_release_celsius = 65; };", POWER_AC, PRIORITY_INTERACTIVE, 1000},
};

START_TEST(test_power_policy_replaces_named) {
        const PolicyRow *row = &policy_rows[_i];
        Config c;

        parse_ok(row->text, row->text, &c);
        for (int st = 0; st < _POWER_STATE_MAX; st++)
                for (int pr = 0; pr < _PRIORITY_MAX; pr++) {
                        unsigned want = st == (int)row->state && pr == (int)row->priority
                                                ? row->factor
                                                : default_factors[st][pr];
                        ck_assert_msg(c.power.factor[st][pr] == want, "row '%s': policy.%s.%s = %u, want %u",
                                      row->text, power_state_to_string((PowerState)st),
                                      priority_to_string((Priority)pr), c.power.factor[st][pr], want);
                }
        config_done(&c);
}
END_TEST

/* config_format() writes the nested groups nested, values as a person writes them. */
START_TEST(test_power_format) {
        static const char *const want[] = {
                "power = {\n        enabled = false;\n        sensor = \"coretemp/Package id *\";\n"
                "        pressure_file = \"\";\n        poll_sec = 2;\n        battery_poll_sec = 60;\n",
                "        low_battery_percent = 10.5;\n        low_battery_release_percent = 15;\n"
                "        hot_celsius = 75.25;\n        hot_release_celsius = -0.5;\n",
                "        critical_release_celsius = 99.999;\n        memory_pressure_percent = 40.01;\n"
                "        memory_pressure_release_percent = 0;\n        policy = {\n                ac = {\n"
                "                        interactive = 1.0;\n                        normal = 1.0;\n"
                "                        background = 0.9;\n                };\n",
                "                critical = {\n                        interactive = 0.01;\n"
                "                        normal = 1.0;\n                        background = \"pause\";\n"
                "                };\n        };\n};\nlimits = {\n",
        };
        Config c;
        char *text;

        parse_ok(power_text, "power", &c);
        text = config_format(&c);
        ck_assert_ptr_nonnull(text);
        for (size_t i = 0; i < ELEMENTSOF(want); i++)
                ck_assert_msg(strstr(text, want[i]), "want\n%s\nin\n%s", want[i], text);
        free(text);
        config_done(&c);
}
END_TEST

static char *repeat_path(size_t n) {
        char *s = malloc(n + 1);

        ck_assert_ptr_nonnull(s);
        memset(s, 'a', n);
        s[0] = '/';
        s[n] = '\0';
        return s;
}

/* power.sensor is at most 255 bytes, power.pressure_file at most 4095 (PATH_MAX). */
START_TEST(test_power_lengths) {
        char *path4095 = repeat_path(4095), *path4096 = repeat_path(4096), text[8192], *errors = NULL;
        Config c;

        snprintf(text, sizeof(text), "power = { pressure_file = \"%s\"; };", path4095);
        parse_ok(text, "4095 bytes", &c);
        ck_assert_str_eq(c.power.pressure_file, path4095);
        config_done(&c);
        snprintf(text, sizeof(text), "power = { pressure_file = \"%s\"; };", path4096);
        ck_assert_int_eq(config_parse(text, FILENAME, &c, &errors), -EINVAL);
        ck_assert_msg(errors && strcmp(errors, FILENAME
                                       ":1: power.pressure_file must be at most 4095 bytes, got '/"
                                       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                       "...'\n") == 0,
                      "got %s", errors ?: "(none)");
        free(errors);
        parse_ok("power = { sensor = \"" SENSOR_255 "\"; };", "255 bytes", &c);
        ck_assert_uint_eq(strlen(c.power.sensor), 255);
        config_done(&c);
        free(path4095);
        free(path4096);
}
END_TEST

/* config_equal() sees a change of any one factor, threshold or power string. */
START_TEST(test_power_equal) {
        Config a, b;

        ck_assert_int_eq(config_init_defaults(&a), 0);
        for (int st = 0; st < _POWER_STATE_MAX; st++)
                for (int pr = 0; pr < _PRIORITY_MAX; pr++) {
                        ck_assert_int_eq(config_init_defaults(&b), 0);
                        ck_assert(config_equal(&a, &b));
                        b.power.factor[st][pr] = b.power.factor[st][pr] == 999 ? 998 : 999;
                        ck_assert_msg(!config_equal(&a, &b) && !config_equal(&b, &a),
                                      "policy.%s.%s not seen", power_state_to_string((PowerState)st),
                                      priority_to_string((Priority)pr));
                        config_done(&b);
                }
        for (int change = 0; change < 6; change++) {
                ck_assert_int_eq(config_init_defaults(&b), 0);
                switch (change) {
                case 0:
                        b.power.enabled = false;
                        break;
                case 1:
                        b.power.sensor[0] = '\0';
                        free(b.power.sensor);
                        b.power.sensor = strdup("acpitz");
                        ck_assert_ptr_nonnull(b.power.sensor);
                        break;
                case 2:
                        b.power.pressure_file[0] = '\0';
                        break;
                case 3:
                        b.power.hot_release_mc--;
                        break;
                case 4:
                        b.power.pressure_release_cp++;
                        break;
                case 5:
                        b.power.battery_poll_usec += 1000000;
                        break;
                }
                ck_assert_msg(!config_equal(&a, &b), "change %d not seen", change);
                config_done(&b);
        }
        config_done(&a);
}
END_TEST

/* ---- pack and unpack ---- */

static void pack_ok(const Config *c, char **ret, size_t *ret_size) {
        ck_assert_int_eq(config_pack(c, ret, ret_size), 0);
        ck_assert_ptr_nonnull(*ret);
        ck_assert_uint_gt(*ret_size, 8);
}

/* Unpacks buf to a Config equal to c, lines, ids and all. */
static void check_unpacks_to(const char *buf, size_t size, const Config *c, const char *row) {
        Config u;
        int r = config_unpack(buf, size, &u);

        ck_assert_msg(r == 0, "row '%s': config_unpack() = %d", row, r);
        ck_assert_msg(config_equal(c, &u), "row '%s': unpacked differs", row);
        ck_assert_uint_eq(u.admin_group_line, c->admin_group_line);
        ck_assert_uint_eq(u.n_rules, c->n_rules);
        for (size_t i = 0; i < c->n_rules; i++)
                ck_assert_uint_eq(u.rules[i].line, c->rules[i].line);
        config_done(&u);
}

/* trusted_proxies (issue 14): uids written as digits are known at once,
 * names when resolved; the ids travel through a pack and count in
 * config_equal(). */
START_TEST(test_trusted_proxies) {
        static const char text[] = "\ntrusted_proxies = [ \"alice\", \"1234\", \"bob\", \"nss-down\" ];";
        char *warnings = NULL, *buf;
        size_t size;
        Config c, d;

        parse_ok(text, "trusted_proxies", &c);
        ck_assert_uint_eq(c.n_trusted_proxies, 4);
        ck_assert(!c.trusted_proxy_known[0] && c.trusted_proxy_known[1] && c.trusted_proxy_uid[1] == 1234 &&
                  !c.trusted_proxy_known[2] && !c.trusted_proxy_known[3]);
        ck_assert_int_eq(config_resolve_names(&c, FILENAME, table_lookup, &lookup_calls, &warnings), 0);
        ck_assert(c.trusted_proxy_known[0] && c.trusted_proxy_uid[0] == 1000);
        ck_assert(c.trusted_proxy_known[1] && c.trusted_proxy_uid[1] == 1234);
        ck_assert(!c.trusted_proxy_known[2] && !c.trusted_proxy_known[3]);
        ck_assert_str_eq(
                warnings, FILENAME
                ":2: warning: trusted_proxies 'bob' is not a known user; it is not trusted\n" FILENAME
                ":2: warning: trusted_proxies 'nss-down': cannot look the user up "
                "(Input/output error); it is not trusted\n");
        free(warnings);
        pack_ok(&c, &buf, &size);
        check_unpacks_to(buf, size, &c, "trusted_proxies");
        free(buf);
        /* A resolved uid counts in config_equal(). */
        parse_ok(text, "trusted_proxies", &d);
        ck_assert_int_eq(config_resolve_names(&d, FILENAME, table_lookup, &lookup_calls, NULL), 0);
        ck_assert(config_equal(&c, &d));
        d.trusted_proxy_uid[0] = 1001;
        ck_assert(!config_equal(&c, &d) && !config_equal(&d, &c));
        d.trusted_proxy_uid[0] = 1000;
        d.trusted_proxy_known[2] = true;
        ck_assert(!config_equal(&c, &d));
        config_done(&d);
        config_done(&c);
}
END_TEST

/* The price table (issue 13, budgetctl estimate's cost). */
START_TEST(test_prices) {
        Config c;

        parse_ok(prices_text, "prices", &c);
        ck_assert_str_eq(c.price_currency, "USD");
        ck_assert_uint_eq(c.n_prices, 3);
        ck_assert_str_eq(c.prices[0].model, "gpt-4o");
        ck_assert(c.prices[0].input_per_million == 2.5 && c.prices[0].output_per_million == 10.0);
        ck_assert_str_eq(c.prices[1].model, "llama3.1:8b");
        ck_assert(c.prices[1].input_per_million == 0.0 && c.prices[1].output_per_million == 0.0);
        ck_assert_str_eq(c.prices[2].model, "claude \"opus\"");
        ck_assert(c.prices[2].input_per_million == 15 && c.prices[2].output_per_million == 1000000.0);
        check_round_trip(&c, "prices");
        /* config_equal() sees each field of each model, and the count. */
        for (int field = 0; field < 4; field++) {
                Config d;

                parse_ok(prices_text, "prices", &d);
                ck_assert(config_equal(&c, &d));
                if (field == 0)
                        d.prices[1].input_per_million = 0.001;
                else if (field == 1)
                        d.prices[2].output_per_million = 999999.0;
                else if (field == 2)
                        d.prices[0].model[0] = 'G';
                else
                        d.n_prices--;
                ck_assert_msg(!config_equal(&c, &d) && !config_equal(&d, &c),
                              "field %d: difference not seen", field);
                if (field == 3)
                        d.n_prices++;
                config_done(&d);
        }
        config_done(&c);
}
END_TEST

START_TEST(test_pack_round_trip) {
        static const char *const texts[] = {
                "",
                rich_rules,
                "rules = ( { name = \"a\"; } );\nadmin_group = 0;",
                "model_tiers = [ \"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", \"8\", \"9\", \"10\", "
                "\"11\", "
                "\"12\", \"13\", \"14\", \"15\", \"16\", \"17\", \"18\", \"19\", \"20\", \"21\", \"22\", "
                "\"23\", "
                "\"24\", \"25\", \"26\", \"27\", \"28\", \"29\", \"30\", \"31\", \"" LONG_NAME_64
                        LONG_NAME_64 LONG_NAME_64
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" ];",
                power_text,
                prices_text};
        char *buf;
        size_t size;
        Config c;

        for (size_t i = 0; i < ELEMENTSOF(texts); i++) {
                parse_ok(texts[i], texts[i], &c);
                pack_ok(&c, &buf, &size);
                check_unpacks_to(buf, size, &c, texts[i]);
                free(buf);
                /* Resolved ids travel too. */
                ck_assert_int_eq(config_resolve_names(&c, FILENAME, table_lookup, &lookup_calls, NULL), 0);
                pack_ok(&c, &buf, &size);
                check_unpacks_to(buf, size, &c, texts[i]);
                free(buf);
                config_done(&c);
        }
        /* The defaults, and every override row's value. */
        ck_assert_int_eq(config_init_defaults(&c), 0);
        for (size_t i = 0; i < ELEMENTSOF(override_rows); i++) {
                row_apply(&override_rows[i], &c);
                pack_ok(&c, &buf, &size);
                check_unpacks_to(buf, size, &c, override_rows[i].path);
                free(buf);
        }
        config_done(&c);
}
END_TEST

/* Every prefix of a packed Config, and it with a byte more, is refused. */
START_TEST(test_unpack_truncated) {
        char *buf, *longer;
        size_t size;
        Config c, u;

        parse_ok(rich_rules, "rich rules", &c);
        pack_ok(&c, &buf, &size);
        for (size_t n = 0; n < size; n++) {
                /* A copy of exactly n bytes, so a read past it is ASan's to see. */
                char *copy = malloc(n ? n : 1);
                ck_assert_ptr_nonnull(copy);
                memcpy(copy, buf, n);
                ck_assert_msg(config_unpack(copy, n, &u) == -EPROTO, "%zu of %zu bytes not refused", n,
                              size);
                free(copy);
        }
        longer = malloc(size + 1);
        ck_assert_ptr_nonnull(longer);
        memcpy(longer, buf, size);
        longer[size] = 0;
        ck_assert_int_eq(config_unpack(longer, size + 1, &u), -EPROTO);
        ck_assert_int_eq(config_unpack(NULL, 0, &u), -EPROTO);
        free(longer);
        free(buf);
        config_done(&c);
}
END_TEST

/* Any byte changed to anything: refused, or a Config that is valid by every
 * rule of the file; never a crash or a leak. */
START_TEST(test_unpack_garbage) {
        static const unsigned char values[] = {0x00, 0x01, 0x02, 0x30, 0x5b, 0x7f, 0x80, 0xfe, 0xff};
        char *buf;
        size_t size;
        Config c, u;

        parse_ok(rich_rules, "rich rules", &c);
        pack_ok(&c, &buf, &size);
        for (size_t i = 0; i < size; i++) {
                char saved = buf[i];
                for (size_t v = 0; v < ELEMENTSOF(values); v++) {
                        int r;

                        buf[i] = (char)values[v];
                        r = config_unpack(buf, size, &u);
                        ck_assert_msg(r == 0 || r == -EPROTO, "byte %zu = 0x%02x: %d", i, values[v], r);
                        if (r == 0) {
                                char *text = config_format(&u);
                                Config again;

                                /* What unpacks formats to a file that parses. */
                                ck_assert_ptr_nonnull(text);
                                if (config_parse(text, FILENAME, &again, NULL) == 0)
                                        config_done(&again);
                                free(text);
                                config_done(&u);
                        }
                }
                buf[i] = saved;
        }
        free(buf);
        config_done(&c);
}
END_TEST

/* Values the file could not hold are refused, not carried into the daemon. */
START_TEST(test_unpack_refuses_invalid_values) {
        for (int change = 0; change < 36; change++) {
                char *buf;
                size_t size;
                Config c, u;

                parse_ok(rich_rules, "rich rules", &c);
                switch (change) {
                case 0:
                        c.default_estimate = 0;
                        break;
                case 1:
                        c.hard_permille = 5001;
                        break;
                case 2:
                        c.log_level = (LogLevel)2;
                        break;
                case 3:
                        c.rules[0].per = _RULE_PER_MAX;
                        break;
                case 4:
                        c.rules[0].match.unit[0] = '[';
                        break;
                case 5:
                        c.rules[0].name[0] = ' ';
                        break;
                case 6:
                        free(c.rules[1].name);
                        c.rules[1].name = strdup("nightly");
                        ck_assert_ptr_nonnull(c.rules[1].name);
                        break;
                case 7:
                        c.rules[0].match.gid = 11; /* "10" with another id */
                        break;
                case 8:
                        c.idle_timeout_usec = 1;
                        break;
                case 9:
                        c.socket_path[0] = 'x';
                        break;
                case 10:
                        c.on_escalate = _ESCALATE_ACTION_MAX;
                        break;
                case 11:
                        c.rules[4].on_hard_limit = _HARD_LIMIT_ACTION_MAX;
                        break;
                case 12:
                        c.rules[4].terminate_grace_usec = 3601 * UINT64_C(1000000);
                        break;
                case 13:
                        c.terminate_grace_usec = 1500000; /* not whole seconds */
                        break;
                case 14:
                        c.pool_threshold_permille = 9;
                        break;
                case 15:
                        c.pool_release_permille = 1001;
                        break;
                case 16:
                        c.escalate_permille = 10001;
                        break;
                case 17:
                        c.runaway_breaches = 1001;
                        break;
                case 18:
                        c.max_cooldown_usec = 0;
                        break;
                case 19:
                        free(c.model_tiers[2]);
                        c.model_tiers[2] = strdup("large"); /* a duplicate */
                        ck_assert_ptr_nonnull(c.model_tiers[2]);
                        break;
                case 20:
                        c.model_tiers[0][0] = '\n';
                        break;
                case 21:
                        c.model_tiers[1][0] = '\0'; /* empty */
                        break;
                case 22:
                        tiers_set(
                                &c,
                                "1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,"
                                "29,30,31,32,33");
                        break;
                case 23:
                        c.queue_max_wait_usec = 0;
                        break;
                /* the power group */
                case 24:
                        c.power.factor[POWER_HOT][PRIORITY_NORMAL] = 9; /* neither pause nor 0.01.. */
                        break;
                case 25:
                        c.power.factor[POWER_AC][PRIORITY_BACKGROUND] = 1001;
                        break;
                case 26:
                        c.power.hot_mc = 200001;
                        break;
                case 27:
                        c.power.critical_release_mc = -50001;
                        break;
                case 28:
                        c.power.low_battery_permille = -1;
                        break;
                case 29:
                        c.power.pressure_release_cp = 10001;
                        break;
                case 30:
                        free(c.power.sensor);
                        c.power.sensor = strdup("[abc");
                        ck_assert_ptr_nonnull(c.power.sensor);
                        break;
                case 31:
                        free(c.power.pressure_file);
                        c.power.pressure_file = strdup("relative");
                        ck_assert_ptr_nonnull(c.power.pressure_file);
                        break;
                case 32:
                        free(c.power.sensor);
                        c.power.sensor = NULL; /* not optional */
                        break;
                case 33:
                        c.power.poll_usec = 0;
                        break;
                case 34:
                        c.power.battery_poll_usec = 3601 * UINT64_C(1000000);
                        break;
                case 35:
                        c.power.low_battery_release_permille = 1001;
                        break;
                }
                pack_ok(&c, &buf, &size);
                ck_assert_msg(config_unpack(buf, size, &u) == -EPROTO, "change %d unpacked", change);
                free(buf);
                config_done(&c);
        }
}
END_TEST

/* ---- the shipped file ---- */

typedef struct Paths {
        char *items[256];
        size_t n;
} Paths;

static void paths_done(Paths *p) {
        for (size_t i = 0; i < p->n; i++)
                free(p->items[i]);
        p->n = 0;
}

static bool paths_contain(const Paths *p, const char *path) {
        for (size_t i = 0; i < p->n; i++)
                if (strcmp(p->items[i], path) == 0)
                        return true;
        return false;
}

/* Collects "name" and "group.name" of every scalar setting, with libconfig
 * alone, independently of config.c's own walk. */
static void collect_paths(const config_setting_t *group, const char *prefix, Paths *ret) {
        for (int i = 0; i < config_setting_length(group); i++) {
                const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
                char path[128];

                snprintf(path, sizeof(path), "%s%s%s", prefix ? prefix : "", prefix ? "." : "",
                         config_setting_name(s));
                if (config_setting_is_group(s)) {
                        collect_paths(s, path, ret);
                        continue;
                }
                ck_assert_uint_lt(ret->n, ELEMENTSOF(ret->items));
                ret->items[ret->n] = strdup(path);
                ck_assert_ptr_nonnull(ret->items[ret->n]);
                ret->n++;
        }
}

static void paths_of_text(const char *text, const char *what, Paths *ret) {
        config_t lc;

        config_init(&lc);
        ck_assert_msg(config_read_string(&lc, text), "%s: libconfig: %s at line %d", what,
                      config_error_text(&lc), config_error_line(&lc));
        collect_paths(config_root_setting(&lc), NULL, ret);
        config_destroy(&lc);
}

START_TEST(test_conf_file) {
        Config defaults, file;
        Paths file_paths = {}, format_paths = {};
        char *text = read_file(SRCDIR "/conf/tokenbudgetd.conf");
        char *formatted;

        ck_assert_int_eq(config_init_defaults(&defaults), 0);
        parse_ok_named(text, "conf/tokenbudgetd.conf", "conf/tokenbudgetd.conf", &file);
        ck_assert_msg(config_equal(&file, &defaults),
                      "conf/tokenbudgetd.conf does not parse to the defaults");

        /* The same settings both ways: none forgotten in the file, none extra. */
        formatted = config_format(&defaults);
        ck_assert_ptr_nonnull(formatted);
        paths_of_text(text, "conf/tokenbudgetd.conf", &file_paths);
        paths_of_text(formatted, "config_format()", &format_paths);
        for (size_t i = 0; i < format_paths.n; i++)
                ck_assert_msg(paths_contain(&file_paths, format_paths.items[i]),
                              "setting '%s' is missing from conf/tokenbudgetd.conf", format_paths.items[i]);
        for (size_t i = 0; i < file_paths.n; i++)
                ck_assert_msg(paths_contain(&format_paths, file_paths.items[i]),
                              "conf/tokenbudgetd.conf has '%s', which config_format() does not write",
                              file_paths.items[i]);
        ck_assert_uint_eq(file_paths.n, format_paths.n);

        /* Every setting has an override row, so each is parsed and compared. */
        for (size_t i = 0; i < format_paths.n; i++) {
                bool found = false;
                for (size_t j = 0; j < ELEMENTSOF(override_rows); j++)
                        found = found || strcmp(override_rows[j].path, format_paths.items[i]) == 0;
                /* The price list is a list of groups, parsed and compared in test_prices. */
                found = found || strcmp(format_paths.items[i], "prices.models") == 0;
                ck_assert_msg(found, "setting '%s' has no row in override_rows", format_paths.items[i]);
        }

        paths_done(&file_paths);
        paths_done(&format_paths);
        free(formatted);
        free(text);
        config_done(&file);
        config_done(&defaults);
}
END_TEST

static Suite *config_suite(void) {
        Suite *s = suite_create("config");
        TCase *tc = tcase_create("core");

        /* test_unpack_garbage parses what every changed byte of a packed
         * Config unpacks to: seconds under the sanitizers at -O0, past
         * Check's default of 4 s on a busy machine. */
        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_defaults);
        tcase_add_loop_test(tc, test_log_level_to_string, 0, (int)ELEMENTSOF(log_level_rows));
        tcase_add_loop_test(tc, test_empty, 0, (int)ELEMENTSOF(empty_rows));
        tcase_add_loop_test(tc, test_override, 0, (int)ELEMENTSOF(override_rows));
        tcase_add_loop_test(tc, test_equal_detects_each_field, 0, (int)ELEMENTSOF(override_rows));
        tcase_add_loop_test(tc, test_invalid, 0, (int)ELEMENTSOF(invalid_rows));
        tcase_add_test(tc, test_invalid_without_errors_out);
        tcase_add_loop_test(tc, test_nul_bytes, 0, (int)ELEMENTSOF(nul_rows));
        tcase_add_test(tc, test_buffer_without_terminator);
        tcase_add_test(tc, test_multiple_errors);
        tcase_add_test(tc, test_include_and_syntax_error);
        tcase_add_test(tc, test_no_relation_error_from_invalid_value);
        tcase_add_test(tc, test_round_trip);
        tcase_add_loop_test(tc, test_round_trip_each_override, 0, (int)ELEMENTSOF(override_rows));
        tcase_add_test(tc, test_conf_file);
        tcase_add_test(tc, test_enum_names);
        tcase_add_loop_test(tc, test_exact_errors, 0, (int)ELEMENTSOF(exact_rows));
        tcase_add_loop_test(tc, test_rule, 0, (int)ELEMENTSOF(rule_rows));
        tcase_add_loop_test(tc, test_valid_glob, 0, (int)ELEMENTSOF(valid_globs));
        tcase_add_test(tc, test_rules_in_order);
        tcase_add_test(tc, test_rules_max);
        tcase_add_test(tc, test_rules_every_error);
        tcase_add_test(tc, test_round_trip_rules);
        tcase_add_test(tc, test_equal_rules);
        tcase_add_loop_test(tc, test_resolve_names, 0, (int)ELEMENTSOF(resolve_rows));
        tcase_add_test(tc, test_prices);
        tcase_add_test(tc, test_trusted_proxies);
        tcase_add_test(tc, test_pack_round_trip);
        tcase_add_test(tc, test_unpack_truncated);
        tcase_add_test(tc, test_unpack_garbage);
        tcase_add_test(tc, test_unpack_refuses_invalid_values);
        tcase_add_test(tc, test_power_values);
        tcase_add_loop_test(tc, test_power_policy_replaces_named, 0, (int)ELEMENTSOF(policy_rows));
        tcase_add_test(tc, test_power_format);
        tcase_add_test(tc, test_power_lengths);
        tcase_add_test(tc, test_power_equal);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(config_suite());
}
