/* SPDX-License-Identifier: MIT */
/* Reading the configuration file (see config-file.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config-file.h"
#include "macro.h"

/* A configuration file over 1 MiB is a mistake, not a configuration. */
#define CONFIG_FILE_MAX_BYTES (1024 * 1024)

static int read_file(const char *path, size_t max_bytes, char **ret, size_t *ret_size) {
        FILE *f = fopen(path, "re");
        char *buf;
        size_t n;

        if (!f)
                return -errno;
        buf = malloc(max_bytes + 1);
        if (!buf) {
                fclose(f);
                return -ENOMEM;
        }
        n = fread(buf, 1, max_bytes + 1, f);
        if (ferror(f)) {
                free(buf);
                fclose(f);
                return -EIO;
        }
        fclose(f);
        if (n > max_bytes) {
                free(buf);
                return -EFBIG;
        }
        buf[n] = 0;
        *ret = buf;
        *ret_size = n;
        return 0;
}

int config_load_file(const char *path, Config *ret, char **ret_errors) {
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        int r;

        r = read_file(path, CONFIG_FILE_MAX_BYTES, &text, &size);
        if (r < 0) {
                if (asprintf(ret_errors, "%s: cannot read: %s\n", path, strerror(-r)) < 0)
                        *ret_errors = NULL;
                return r;
        }
        return config_parse_buffer(text, size, path, ret, ret_errors);
}

int config_check_fd_limit(const Config *c, unsigned fd_limit, const char *path, char **ret_error) {
        if (c->max_connections + DAEMON_RESERVED_FDS <= fd_limit)
                return 0;
        if (asprintf(ret_error,
                     "%s: limits.max_connections (%" PRIu64 ") does not fit the file descriptor limit (%u, "
                     "RLIMIT_NOFILE; LimitNOFILE= in the unit) with the %u the daemon keeps for itself: set "
                     "it to at most %u, or raise the limit\n",
                     path ?: "built-in defaults", c->max_connections, fd_limit, DAEMON_RESERVED_FDS,
                     fd_limit > DAEMON_RESERVED_FDS ? fd_limit - DAEMON_RESERVED_FDS : 0) < 0)
                *ret_error = NULL;
        return -EMFILE;
}
