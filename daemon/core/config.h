/* SPDX-License-Identifier: MIT */
/*
 * tokenbudgetd's configuration: the built-in defaults and the parser and
 * validator for the libconfig file format. Pure: the caller reads the file and
 * passes its text (libconfig's @include is refused), so tests use strings.
 * Every setting has a built-in default; conf/tokenbudgetd.conf lists them all
 * and tests/unit/test-config.c keeps the two equal.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ledger.h"

typedef enum LogLevel {
        LOG_LEVEL_ERR = 3,
        LOG_LEVEL_WARNING = 4,
        LOG_LEVEL_NOTICE = 5,
        LOG_LEVEL_INFO = 6,
        LOG_LEVEL_DEBUG = 7,
} LogLevel;

typedef struct Config {
        /* top level */
        char *socket_path;           /* "socket"; default "/run/tokenbudget/io.tokenbudget" */
        uint64_t default_estimate;   /* "default_estimate"; 4000 */
        uint64_t max_request_tokens; /* "max_request_tokens"; 200000; larger estimates are clamped */
        uint32_t warn_permille;      /* "warn_multiplier" = 1.5 */
        uint32_t hard_permille;      /* "hard_multiplier" = 2.0, 1.0..5.0, >= warn */
        LogLevel log_level;          /* "log_level" = "info": err, warning, notice, info, debug */

        /* "global" and "process" groups: tokens_per_minute, tokens_per_hour,
         * tokens_per_day, max_tokens_in_flight; 0 = no limit */
        LedgerLimits global;
        LedgerLimits process;

        /* "limits" group */
        uint64_t max_message_bytes;             /* 65536, 1024..16 MiB */
        uint64_t max_output_bytes;              /* 1 MiB, >= 64 KiB: queued output per peer */
        uint64_t max_connections;               /* 1024, >= 1 */
        uint64_t max_connections_per_uid;       /* 128, >= 1 */
        uint64_t max_allocations_per_process;   /* 64, >= 1 */
        uint64_t max_tracked_processes;         /* 4096, >= 1: process scopes kept, live or idle */
        uint64_t max_tracked_processes_per_uid; /* 1024, >= 1: of those, for one non-admin uid */
        uint64_t max_output_bytes_per_uid;      /* 8 MiB, >= max_output_bytes: queued output of one uid */
        uint64_t admin_connections;             /* 8, < max_connections: slots only admins may take */
        uint64_t idle_timeout_usec;             /* "idle_timeout_sec" = 900: a connection holding no
                                                 * allocation that sends nothing is closed; 0: never */
        uint64_t allocation_idle_timeout_usec;  /* "allocation_idle_timeout_sec" = 3600: an allocation
                                                 * with no report for this long is settled as expired */

        /* "journal" group: structured events (journal.h). Rate limiting is per
         * event kind; an interval or burst of 0 turns it off. */
        bool journal_log_granted;                  /* "log_granted" = false: a debug event per grant */
        uint64_t journal_rate_limit_interval_usec; /* "rate_limit_interval_sec" = 10, 0..3600 s */
        uint64_t journal_rate_limit_burst;         /* "rate_limit_burst" = 20 events, 0..1000000 */
} Config;

/* Fills *c with the built-in defaults. Returns 0 or -ENOMEM. */
int config_init_defaults(Config *c);
void config_done(Config *c);

/*
 * Parses and validates text (the contents of filename, used only in messages).
 * Settings absent from the text keep their built-in defaults. On success
 * returns 0 and fills *ret (free with config_done()). On failure returns
 * -EINVAL (or -ENOMEM) and sets *ret_errors to a malloc'ed string of one line
 * per error, each "FILE:LINE: message" (e.g. "x.conf:7: hard_multiplier must be
 * between 1.0 and 5.0, got 7.5"), covering every error found: syntax errors
 * (libconfig stops at the first), unknown settings, wrong types, values out of
 * range.
 */
int config_parse(const char *text, const char *filename, Config *ret, char **ret_errors);
/* The same for size bytes that need not end in a NUL (a file as read): a NUL
 * byte anywhere in them is an error naming its line and offset, and nothing is
 * parsed then (libconfig would stop reading at it and silently keep the
 * defaults for the rest). */
int config_parse_buffer(const char *text, size_t size, const char *filename, Config *ret, char **ret_errors);

/* Writes the configuration in the file format, every setting, to a malloc'ed
 * string (what conf/tokenbudgetd.conf holds for the defaults, minus comments). */
char *config_format(const Config *c);

bool config_equal(const Config *a, const Config *b);

const char *log_level_to_string(LogLevel l);
