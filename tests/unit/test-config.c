/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/core/config.c: built-in defaults, every setting overridden,
 * every kind of invalid input with its "FILE:LINE: message", several errors
 * in one file, the format -> parse round trip, config_equal(), and that
 * conf/tokenbudgetd.conf lists exactly the settings, each at its default.
 * Links only the core library (and libconfig, to walk files independently).
 */
#include <check.h>
#include <errno.h>
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

/* ---- helpers ---- */

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
} FieldType;

typedef struct OverrideRow {
        const char *path;  /* "name" or "group.name" */
        const char *value; /* as written in the file */
        size_t offset;
        FieldType type;
        uint64_t number;
        const char *string;
} OverrideRow;

#define U64(p, v, member, n)                                                                                \
        { p, v, offsetof(Config, member), FIELD_U64, n, NULL }
#define BOOL(p, v, member, n)                                                                               \
        { p, v, offsetof(Config, member), FIELD_BOOL, n, NULL }
#define PERMILLE(p, v, member, n)                                                                           \
        { p, v, offsetof(Config, member), FIELD_PERMILLE, n, NULL }

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
};

static void row_apply(const OverrideRow *row, Config *c) {
        char *p = (char *)c + row->offset;

        switch (row->type) {
        case FIELD_U64:
                *(uint64_t *)p = row->number;
                break;
        case FIELD_PERMILLE:
                *(uint32_t *)p = (uint32_t)row->number;
                break;
        case FIELD_LOG_LEVEL:
                *(LogLevel *)p = (LogLevel)row->number;
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

/* "group.name" = v becomes "group = { name = v; };" */
static void row_text(const OverrideRow *row, char *buf, size_t size) {
        const char *dot = strchr(row->path, '.');

        if (dot)
                snprintf(buf, size, "%.*s = {\n        %s = %s;\n};\n", (int)(dot - row->path), row->path,
                         dot + 1, row->value);
        else
                snprintf(buf, size, "%s = %s;\n", row->path, row->value);
}

/* ---- tests ---- */

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
        config_done(&c);
        ck_assert_ptr_null(c.socket_path);
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
        {"unknown group", "rules = { x = 1; };", 1, "unknown setting 'rules'"},
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

/* ---- the shipped file ---- */

typedef struct Paths {
        char *items[64];
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
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(config_suite());
}
