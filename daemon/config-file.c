/* SPDX-License-Identifier: MIT */
/* Reading the configuration file and resolving its names, in this process
 * or in a child (see config-file.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config-file.h"
#include "macro.h"
#include "time-util.h"

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

/* ---- names ---- */

/* An entry of a group with thousands of members (a directory's "staff") needs
 * far more than sysconf(_SC_GETGR_R_SIZE_MAX) suggests; past this, the lookup
 * is reported as failed rather than grown further. */
#define NSS_BUFFER_MAX_BYTES (16u * 1024 * 1024)

/* A ConfigLookupFunc through NSS: the files, systemd-userdb, LDAP, ... */
static int nss_lookup(bool group, const char *name, uint32_t *ret_id, void *userdata) {
        for (size_t size = 4096;; size *= 2) {
                _cleanup_free_ char *buf = malloc(size);
                int r;

                if (!buf)
                        return -ENOMEM;
                if (group) {
                        struct group gr, *found = NULL;
                        r = getgrnam_r(name, &gr, buf, size, &found);
                        if (r == 0 && found) {
                                *ret_id = found->gr_gid;
                                return 0;
                        }
                } else {
                        struct passwd pw, *found = NULL;
                        r = getpwnam_r(name, &pw, buf, size, &found);
                        if (r == 0 && found) {
                                *ret_id = found->pw_uid;
                                return 0;
                        }
                }
                if (r == ERANGE && size < NSS_BUFFER_MAX_BYTES)
                        continue;
                /* getpwnam_r(3): "not found" comes as 0 with no entry, or as
                 * ENOENT, ESRCH, EBADF or EPERM from some modules. */
                if (r == 0 || r == ENOENT || r == ESRCH || r == EBADF || r == EPERM)
                        return -ENOENT;
                return -r;
        }
}

int config_load_file(const char *path, Config *ret, char **ret_errors, char **ret_warnings) {
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        Config c;
        int r;

        *ret_errors = NULL;
        if (ret_warnings)
                *ret_warnings = NULL;
        r = read_file(path, CONFIG_FILE_MAX_BYTES, &text, &size);
        if (r < 0) {
                if (asprintf(ret_errors, "%s: cannot read: %s\n", path, strerror(-r)) < 0)
                        *ret_errors = NULL;
                return r;
        }
        r = config_parse_buffer(text, size, path, &c, ret_errors);
        if (r < 0)
                return r;
        r = config_resolve_names(&c, path, nss_lookup, NULL, ret_warnings);
        if (r < 0) {
                config_done(&c);
                return r;
        }
        *ret = c;
        return 0;
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

/* What the child writes: this header, then the packed Config (none when r <
 * 0), the errors' and the warnings' bytes. */
typedef struct ConfigMessage {
        int32_t r;
        uint32_t config_len;
        uint32_t errors_len;
        uint32_t warnings_len;
} ConfigMessage;

/* Errors or warnings past this are cut at a line, and the rest counted: a
 * 1 MiB file can make a quarter of a million errors (an unknown setting every
 * four bytes), each naming the path. */
#define CONFIG_TEXT_MAX_BYTES (4u * 1024 * 1024)

/* A packed Config is at most the file's strings (1 MiB) and some 150 bytes of
 * numbers per rule (1.5 MB for CONFIG_RULES_MAX); with the two texts and the
 * note after each cut, a child sending more than this is not to be believed. */
#define CONFIG_MESSAGE_MAX_BYTES (32u * 1024 * 1024)

/* A child that neither finishes nor dies (an NSS module waiting on a
 * directory server that is gone) is killed after this: the daemon serves no
 * one while it waits, and the user unit's watchdog (WatchdogSec=20s, petted
 * every 10 s) must not fire. A lookup from local files takes microseconds. */
#define CONFIG_CHILD_TIMEOUT_USEC (5 * USEC_PER_SEC)

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

/* Cuts *text past CONFIG_TEXT_MAX_BYTES at a line and says how many lines
 * were left out. */
static void text_cap(char **text, const char *path) {
        size_t len = *text ? strlen(*text) : 0, cut = CONFIG_TEXT_MAX_BYTES, lines = 0;
        char *capped;

        if (len <= CONFIG_TEXT_MAX_BYTES)
                return;
        while (cut > 0 && (*text)[cut - 1] != '\n')
                cut--;
        for (size_t i = cut; i < len; i++)
                lines += (*text)[i] == '\n';
        if (asprintf(&capped, "%.*s%s: %zu more lines not shown\n", (int)cut, *text, path, lines) < 0) {
                (*text)[cut] = 0;
                return;
        }
        free(*text);
        *text = capped;
}

static _noreturn_ void child_load(int fd, const char *path) {
        char *errors = NULL, *warnings = NULL, *packed = NULL;
        size_t packed_len = 0;
        Config c = {};
        ConfigMessage m;
        int r;

        r = config_load_file(path, &c, &errors, &warnings);
        if (r >= 0)
                r = config_pack(&c, &packed, &packed_len);
        if (r >= 0 && packed_len > UINT32_MAX)
                r = -E2BIG;
        text_cap(&errors, path);
        text_cap(&warnings, path);
        m = (ConfigMessage){
                .r = r,
                .config_len = r >= 0 ? (uint32_t)packed_len : 0,
                .errors_len = errors ? (uint32_t)strlen(errors) : 0,
                .warnings_len = warnings ? (uint32_t)strlen(warnings) : 0,
        };
        if (write_all(fd, &m, sizeof(m)) < 0 || write_all(fd, packed, m.config_len) < 0 ||
            write_all(fd, errors, m.errors_len) < 0 || write_all(fd, warnings, m.warnings_len) < 0)
                _exit(EXIT_FAILURE);
        _exit(EXIT_SUCCESS);
}

/* Reads what the child sent until it closes the pipe, up to
 * CONFIG_MESSAGE_MAX_BYTES (-EPROTO when it sent more) and until
 * deadline_usec (-ETIMEDOUT). */
static int read_message(int fd, uint64_t deadline_usec, char **ret, size_t *ret_len) {
        size_t len = 0, cap = 4096;
        char *buf = malloc(cap);
        int r = 0;

        if (!buf)
                return -ENOMEM;
        for (;;) {
                struct pollfd p = {.fd = fd, .events = POLLIN};
                uint64_t now = now_usec();
                ssize_t k;
                int n;

                if (len == cap) {
                        char *bigger;
                        if (cap >= CONFIG_MESSAGE_MAX_BYTES) {
                                r = -EPROTO;
                                break;
                        }
                        bigger = realloc(buf, cap * 2);
                        if (!bigger) {
                                r = -ENOMEM;
                                break;
                        }
                        buf = bigger;
                        cap *= 2;
                }
                n = now < deadline_usec ? poll(&p, 1, (int)((deadline_usec - now + 999) / 1000)) : 0;
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0) {
                        r = n < 0 ? -errno : -ETIMEDOUT;
                        break;
                }
                k = read(fd, buf + len, cap - len);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        r = -errno;
                        break;
                }
                if (k == 0)
                        break;
                len += (size_t)k;
        }
        if (r < 0) {
                free(buf);
                return r;
        }
        *ret = buf;
        *ret_len = len;
        return 0;
}

/* The Config, errors and warnings from a whole message; -EPROTO when it is
 * not one. */
static int message_parse(const char *buf, size_t len, Config *ret, char **ret_errors, char **ret_warnings) {
        const char *errors, *warnings;
        ConfigMessage m;

        if (len < sizeof(m))
                return -EPROTO;
        memcpy(&m, buf, sizeof(m));
        if ((uint64_t)m.config_len + m.errors_len + m.warnings_len != len - sizeof(m))
                return -EPROTO;
        /* An errno, and a Config exactly when there is no error. */
        if (m.r > 0 || m.r < -4095 || (m.r < 0) != (m.config_len == 0))
                return -EPROTO;
        errors = buf + sizeof(m) + m.config_len;
        warnings = errors + m.errors_len;
        if (m.errors_len > 0 && !(*ret_errors = strndup(errors, m.errors_len)))
                return -ENOMEM;
        if (m.warnings_len > 0 && ret_warnings && !(*ret_warnings = strndup(warnings, m.warnings_len)))
                return -ENOMEM;
        if (m.r < 0)
                return m.r;
        return config_unpack(buf + sizeof(m), m.config_len, ret);
}

/* How the child ended, for the error message. */
static void describe_end(int status, char buf[static 64]) {
        if (WIFSIGNALED(status))
                snprintf(buf, 64, "was killed by signal %d (SIG%s)", WTERMSIG(status),
                         sigabbrev_np(WTERMSIG(status)) ?: "?");
        else
                snprintf(buf, 64, "exited with status %d", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

static void set_error(char **ret_errors, const char *format, ...) _printf_(2, 3);
static void set_error(char **ret_errors, const char *format, ...) {
        va_list ap;

        free(*ret_errors);
        va_start(ap, format);
        if (vasprintf(ret_errors, format, ap) < 0)
                *ret_errors = NULL;
        va_end(ap);
}

static void wait_child(pid_t pid, int *ret_status) {
        while (waitpid(pid, ret_status, 0) < 0)
                if (errno != EINTR) {
                        *ret_status = -1;
                        return;
                }
}

int config_load_file_isolated(const char *path, Config *ret, char **ret_errors, char **ret_warnings) {
        _cleanup_free_ char *buf = NULL;
        int fds[2], status = 0, r;
        size_t len = 0;
        char how[64];
        pid_t pid;

        *ret_errors = NULL;
        if (ret_warnings)
                *ret_warnings = NULL;
        if (pipe2(fds, O_CLOEXEC) < 0)
                return -errno;
        pid = fork();
        if (pid < 0) {
                r = -errno;
                close(fds[0]);
                close(fds[1]);
                set_error(ret_errors, "%s: cannot start the configuration parser: %s\n", path, strerror(-r));
                return r;
        }
        if (pid == 0) {
                close(fds[0]);
                child_load(fds[1], path);
        }
        close(fds[1]);
        r = read_message(fds[0], now_usec() + CONFIG_CHILD_TIMEOUT_USEC, &buf, &len);
        close(fds[0]);
        if (r == -ETIMEDOUT)
                (void)kill(pid, SIGKILL);
        wait_child(pid, &status);
        if (r == -ENOMEM)
                return r;
        if (r == -ETIMEDOUT) {
                set_error(ret_errors,
                          "%s: the configuration parser did not finish within %" PRIu64
                          " s (a user or group lookup hanging?) and was killed\n",
                          path, CONFIG_CHILD_TIMEOUT_USEC / USEC_PER_SEC);
                return r;
        }
        if (r >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
                r = message_parse(buf, len, ret, ret_errors, ret_warnings);
                /* A parser that failed without a word ran out of memory. */
                if (r < 0 && r != -EPROTO && !*ret_errors)
                        set_error(ret_errors, "%s: cannot parse: %s\n", path, strerror(-r));
                if (r != -EPROTO)
                        return r;
        }
        describe_end(status, how);
        if (ret_warnings)
                *ret_warnings = mfree(*ret_warnings);
        set_error(ret_errors, "%s: the configuration parser %s (out of memory?)\n", path, how);
        return -EIO;
}
