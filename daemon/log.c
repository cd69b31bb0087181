/* SPDX-License-Identifier: MIT */
/*
 * stderr logging with sd-daemon priority prefixes. Each message is formatted
 * into one buffer and written with a single write(2), so lines from a
 * daemon under load never interleave mid-line.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

static LogLevel log_level = LOG_LEVEL_INFO;

void log_set_level(LogLevel level) {
        log_level = level;
}

LogLevel log_get_level(void) {
        return log_level;
}

void log_msg(LogLevel level, const char *fmt, ...) {
        char line[1024];
        va_list ap;
        int saved_errno = errno, n;

        if (level > log_level)
                return;

        n = snprintf(line, sizeof(line), "<%d>", (int)level);
        va_start(ap, fmt);
        n += vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
        va_end(ap);
        if ((size_t)n > sizeof(line) - 2)
                n = (int)sizeof(line) - 2;
        line[n++] = '\n';
        (void)!write(STDERR_FILENO, line, (size_t)n);
        errno = saved_errno;
}

void log_limited(RateLimit *rl, uint64_t now_usec, LogLevel level, const char *fmt, ...) {
        char line[768];
        uint64_t suppressed;
        va_list ap;

        if (level > log_level || !ratelimit_test(rl, now_usec))
                return;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        suppressed = ratelimit_take_suppressed(rl);
        if (suppressed > 0)
                log_msg(level, "%s (%" PRIu64 " similar message(s) suppressed before this one)", line,
                        suppressed);
        else
                log_msg(level, "%s", line);
}
