/* SPDX-License-Identifier: MIT */
/*
 * The daemon's own diagnostics: one line per message on stderr, prefixed with
 * the sd-daemon priority ("<3>" error ... "<7>" debug) so journald files it at
 * the right level when the daemon runs under systemd. Structured journal
 * events about allocations are a separate module (later); this is for
 * operators reading the daemon's output. Not for the pure core.
 */
#pragma once

#include <stdint.h>

#include "config.h"
#include "macro.h"
#include "ratelimit.h"

void log_set_level(LogLevel level);
LogLevel log_get_level(void);
void log_msg(LogLevel level, const char *fmt, ...) _printf_(2, 3);
/* For every line a client can cause (a refused connection, a limit hit):
 * passes only what rl lets through at now_usec, and the first line after a
 * suppressed stretch says how many similar lines were dropped. A client must
 * not be able to fill the disk or block the daemon on a slow stderr. */
void log_limited(RateLimit *rl, uint64_t now_usec, LogLevel level, const char *fmt, ...) _printf_(4, 5);

#define log_error(...)   log_msg(LOG_LEVEL_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_notice(...)  log_msg(LOG_LEVEL_NOTICE, __VA_ARGS__)
#define log_info(...)    log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                                      \
        do {                                                                                                \
                if (log_get_level() >= LOG_LEVEL_DEBUG)                                                     \
                        log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__);                                              \
        } while (0)
