/* SPDX-License-Identifier: MIT */
/*
 * The daemon's own diagnostics: one line per message on stderr, prefixed with
 * the sd-daemon priority ("<3>" error ... "<7>" debug) so journald files it at
 * the right level when the daemon runs under systemd. Structured journal
 * events about allocations are a separate module (later); this is for
 * operators reading the daemon's output. Not for the pure core.
 */
#pragma once

#include "config.h"
#include "macro.h"

void log_set_level(LogLevel level);
LogLevel log_get_level(void);
void log_msg(LogLevel level, const char *fmt, ...) _printf_(2, 3);

#define log_error(...)   log_msg(LOG_LEVEL_ERR, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __VA_ARGS__)
#define log_notice(...)  log_msg(LOG_LEVEL_NOTICE, __VA_ARGS__)
#define log_info(...)    log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_debug(...)                                                                                      \
        do {                                                                                                \
                if (log_get_level() >= LOG_LEVEL_DEBUG)                                                     \
                        log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__);                                              \
        } while (0)
