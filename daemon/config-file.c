/* SPDX-License-Identifier: MIT */
/* Reading the configuration file (see config-file.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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

/* ---- in a child process ---- */

/* What the child writes: this header, the Config's bytes (its one pointer,
 * socket_path, meaningless), then socket_path's and the errors' bytes. */
typedef struct ConfigMessage {
        int32_t r;
        uint32_t socket_len;
        uint32_t errors_len;
} ConfigMessage;

/* The errors of a file are at most a few lines per setting; a child sending
 * more than this is not to be believed. */
#define CONFIG_MESSAGE_MAX_BYTES (sizeof(ConfigMessage) + sizeof(Config) + CONFIG_FILE_MAX_BYTES)

static int write_all(int fd, const void *data, size_t n) {
        const char *p = data;

        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return -errno;
                p += k;
                n -= (size_t)k;
        }
        return 0;
}

static _noreturn_ void child_load(int fd, const char *path) {
        char *errors = NULL;
        Config c = {};
        ConfigMessage m;
        int r;

        r = config_load_file(path, &c, &errors);
        m = (ConfigMessage){
                .r = r,
                .socket_len = r >= 0 && c.socket_path ? (uint32_t)strlen(c.socket_path) : 0,
                .errors_len = errors ? (uint32_t)strlen(errors) : 0,
        };
        if (write_all(fd, &m, sizeof(m)) < 0 || write_all(fd, &c, sizeof(c)) < 0 ||
            write_all(fd, c.socket_path, m.socket_len) < 0 || write_all(fd, errors, m.errors_len) < 0)
                _exit(EXIT_FAILURE);
        _exit(EXIT_SUCCESS);
}

/* Reads what the child sent, up to CONFIG_MESSAGE_MAX_BYTES; -EPROTO when it
 * sent more. */
static int read_message(int fd, char **ret, size_t *ret_len) {
        size_t len = 0, cap = 4096;
        char *buf = malloc(cap);

        if (!buf)
                return -ENOMEM;
        for (;;) {
                ssize_t k;

                if (len == cap) {
                        char *bigger;
                        if (cap >= CONFIG_MESSAGE_MAX_BYTES) {
                                free(buf);
                                return -EPROTO;
                        }
                        bigger = realloc(buf, cap * 2);
                        if (!bigger) {
                                free(buf);
                                return -ENOMEM;
                        }
                        buf = bigger;
                        cap *= 2;
                }
                k = read(fd, buf + len, cap - len);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        free(buf);
                        return -errno;
                }
                if (k == 0)
                        break;
                len += (size_t)k;
        }
        *ret = buf;
        *ret_len = len;
        return 0;
}

/* The Config and errors from a whole message; -EPROTO when it is not one. */
static int message_parse(const char *buf, size_t len, Config *ret, char **ret_errors) {
        ConfigMessage m;
        Config c;

        if (len < sizeof(m) + sizeof(c))
                return -EPROTO;
        memcpy(&m, buf, sizeof(m));
        memcpy(&c, buf + sizeof(m), sizeof(c));
        if ((size_t)m.socket_len + m.errors_len != len - sizeof(m) - sizeof(c))
                return -EPROTO;
        buf += sizeof(m) + sizeof(c);
        if (m.errors_len > 0 && !(*ret_errors = strndup(buf + m.socket_len, m.errors_len)))
                return -ENOMEM;
        if (m.r < 0)
                return m.r;
        c.socket_path = strndup(buf, m.socket_len);
        if (!c.socket_path)
                return -ENOMEM;
        *ret = c;
        return 0;
}

/* How the child ended, for the error message. */
static void describe_end(int status, char buf[static 64]) {
        if (WIFSIGNALED(status))
                snprintf(buf, 64, "was killed by signal %d (SIG%s)", WTERMSIG(status),
                         sigabbrev_np(WTERMSIG(status)) ?: "?");
        else
                snprintf(buf, 64, "exited with status %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

int config_load_file_isolated(const char *path, Config *ret, char **ret_errors) {
        _cleanup_free_ char *buf = NULL;
        int fds[2], status = 0, r;
        size_t len = 0;
        char how[64];
        pid_t pid;

        *ret_errors = NULL;
        if (pipe2(fds, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0) {
                r = -errno;
                close(fds[0]);
                close(fds[1]);
                if (asprintf(ret_errors, "%s: cannot start the configuration parser: %s\n", path,
                             strerror(-r)) < 0)
                        *ret_errors = NULL;
                return r;
        }
        if (pid == 0) {
                close(fds[0]);
                child_load(fds[1], path);
        }
        close(fds[1]);
        r = read_message(fds[0], &buf, &len);
        close(fds[0]);
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR) {
                        status = -1;
                        break;
                }
        if (r == -ENOMEM)
                return r;
        if (r >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                r = message_parse(buf, len, ret, ret_errors);
                /* A parser that failed without a word ran out of memory. */
                if (r < 0 && r != -EPROTO && !*ret_errors &&
                    asprintf(ret_errors, "%s: cannot parse: %s\n", path, strerror(-r)) < 0)
                        *ret_errors = NULL;
                if (r != -EPROTO)
                        return r;
        }
        describe_end(status, how);
        free(*ret_errors);
        if (asprintf(ret_errors, "%s: the configuration parser %s (out of memory?)\n", path, how) < 0)
                *ret_errors = NULL;
        return -EIO;
}
