/* SPDX-License-Identifier: MIT */
/*
 * libtokenbudget: the blocking C client of tokenbudgetd (see tokenbudget.h).
 *
 * One handle is one AF_UNIX stream connection speaking Varlink in strict
 * request/reply order: a call writes one message and reads exactly one reply,
 * with a poll()-based deadline covering the whole exchange. Framing and reply
 * parsing go through the shared codec (protocol/varlink.h); the hot-path
 * requests (Request, Report, Release) are formatted with snprintf rather than
 * json-c objects. It does not reconnect, retry, queue, pipeline or run an
 * event loop, and it keeps no global state: distinct handles are independent.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* asprintf, vasprintf */
#endif
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>

#ifndef TB_VERSION
#include "tb-config.h"
#endif
#include "macro.h"
#include "time-util.h"
#include "tokenbudget.h"
#include "utf8.h"
#include "varlink.h"

#define TB_EXPORT __attribute__((visibility("default")))

#define TB_DEFAULT_TIMEOUT_MS 5000
/* The largest reply accepted: a List of many allocations stays far below it. */
#define TB_REPLY_MAX_BYTES ((size_t)16 * 1024 * 1024)
/* Smallest free space offered to recv(): a typical reply is a few hundred bytes. */
#define TB_READ_CHUNK_BYTES   ((size_t)16 * 1024)
#define TB_USER_SOCKET_SUFFIX "/tokenbudget/io.tokenbudget"
/* $TOKENBUDGET_SOCKET, the system socket, the user-session socket. */
#define TB_MAX_CANDIDATES 3

#define METHOD_REQUEST "io.tokenbudget.agent.Request"
#define METHOD_REPORT  "io.tokenbudget.agent.Report"
#define METHOD_RELEASE "io.tokenbudget.agent.Release"

struct tb_client {
        int fd; /* -1 after a transport error: every call then fails with -ENOTCONN */
        int timeout_ms;
        char *address;
        VarlinkBuffer in;  /* received bytes not consumed yet */
        size_t in_scanned; /* bytes at the front of in known to hold no NUL */
        VarlinkBuffer out; /* the call being sent */
        char *error;       /* NULL reads as "" */
        char *error_name;
        json_object *error_parameters; /* of the last daemon error reply; NULL otherwise */
        uint64_t retry_after_usec;
        uint64_t last_call_usec; /* end of the last call, for the idle-close check */
};

/* How a daemon error maps to an errno (tokenbudget.h); anything else is -EBADE. */
static const struct {
        const char *name;
        int error;
} error_map[] = {
        {"io.tokenbudget.agent.BudgetExhausted", EDQUOT},
        {"io.tokenbudget.agent.TooManyAllocations", EUSERS},
        {"io.tokenbudget.agent.UnknownAllocation", ENOENT},
        {VARLINK_ERROR_PERMISSION_DENIED, EACCES},
        {VARLINK_ERROR_INVALID_PARAMETER, EINVAL},
        {VARLINK_ERROR_INTERFACE_NOT_FOUND, EOPNOTSUPP},
        {VARLINK_ERROR_METHOD_NOT_FOUND, EOPNOTSUPP},
        {VARLINK_ERROR_METHOD_NOT_IMPLEMENTED, EOPNOTSUPP},
};

/* Records a failure of the current call; returns r (a negative errno). */
static int client_failv(tb_client *c, int r, const char *fmt, va_list ap)
        __attribute__((format(printf, 3, 0)));
static int client_failv(tb_client *c, int r, const char *fmt, va_list ap) {
        char *text = NULL;

        free(c->error);
        free(c->error_name);
        if (vasprintf(&text, fmt, ap) < 0)
                text = NULL;
        c->error = text;
        c->error_name = NULL; /* transport and argument errors have no Varlink name */
        json_object_put(c->error_parameters);
        c->error_parameters = NULL;
        c->retry_after_usec = 0;
        return r;
}

static int client_fail(tb_client *c, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int client_fail(tb_client *c, int r, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        r = client_failv(c, r, fmt, ap);
        va_end(ap);
        return r;
}

static void client_disconnect(tb_client *c) {
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        varlink_buffer_clear(&c->in);
        c->in_scanned = 0;
}

/* A transport failure leaves the stream out of step: close it (tokenbudget.h). */
static int client_fail_transport(tb_client *c, int r, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));
static int client_fail_transport(tb_client *c, int r, const char *fmt, ...) {
        va_list ap;

        client_disconnect(c);
        va_start(ap, fmt);
        r = client_failv(c, r, fmt, ap);
        va_end(ap);
        return r;
}

/* ---- building requests without json-c objects ---- */

static int buf_printf(VarlinkBuffer *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int buf_printf(VarlinkBuffer *b, const char *fmt, ...) {
        va_list ap;
        int n;

        va_start(ap, fmt);
        n = vsnprintf(NULL, 0, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        if (varlink_buffer_reserve(b, (size_t)n + 1) < 0)
                return -ENOMEM;
        va_start(ap, fmt);
        vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
        b->len += (size_t)n;
        return 0;
}

static int buf_put(VarlinkBuffer *b, const char *s, size_t n) {
        if (varlink_buffer_reserve(b, n) < 0)
                return -ENOMEM;
        memcpy(b->data + b->len, s, n);
        b->len += n;
        return 0;
}

/* Appends s as a JSON string: quotes, backslashes and control characters escaped. */
static int buf_put_json_string(VarlinkBuffer *b, const char *s) {
        const char *run = s;
        int r;

        if (buf_put(b, "\"", 1) < 0)
                return -ENOMEM;
        for (; *s; s++) {
                unsigned char ch = (unsigned char)*s;

                if (ch >= 0x20 && ch != '"' && ch != '\\')
                        continue;
                if (buf_put(b, run, (size_t)(s - run)) < 0)
                        return -ENOMEM;
                if (ch == '"' || ch == '\\')
                        r = buf_printf(b, "\\%c", ch);
                else
                        r = buf_printf(b, "\\u%04x", ch);
                if (r < 0)
                        return r;
                run = s + 1;
        }
        if (buf_put(b, run, (size_t)(s - run)) < 0 || buf_put(b, "\"", 1) < 0)
                return -ENOMEM;
        return 0;
}

/* Appends ,"key":"value" (no comma for the first); a NULL value is not sent. */
static int buf_put_string_param(VarlinkBuffer *b, bool *first, const char *key, const char *value) {
        if (!value)
                return 0;
        if (buf_printf(b, "%s\"%s\":", *first ? "" : ",", key) < 0 || buf_put_json_string(b, value) < 0)
                return -ENOMEM;
        *first = false;
        return 0;
}

static int buf_put_uint_param(VarlinkBuffer *b, bool *first, const char *key, uint64_t value) {
        if (buf_printf(b, "%s\"%s\":%" PRIu64, *first ? "" : ",", key, value) < 0)
                return -ENOMEM;
        *first = false;
        return 0;
}

static int buf_begin_call(VarlinkBuffer *b, const char *method) {
        b->len = 0;
        return buf_printf(b, "{\"method\":\"%s\",\"parameters\":{", method);
}

/* Closes the parameters and the message, and adds the NUL that ends the frame. */
static int buf_end_call(VarlinkBuffer *b) {
        return buf_put(b, "}}", 3);
}

/* Checks a caller's string parameter; NULL is allowed only when optional. */
static int client_check_string(tb_client *c, const char *name, const char *value, bool optional) {
        if (!value && optional)
                return 0;
        if (!value || !*value)
                return client_fail(c, -EINVAL, "invalid argument: %s must be a non-empty string", name);
        if (!utf8_valid(value, strlen(value)))
                return client_fail(c, -EINVAL, "invalid argument: %s is not valid UTF-8", name);
        return 0;
}

/* ---- addresses and connecting ---- */

/*
 * The path connect() sees for an address: "unix:PATH;key=value..." becomes
 * PATH, anything else is a path as it is; "@name" is an abstract socket.
 */
static int address_to_path(const char *address, char **ret_path) {
        const char *path = address;
        size_t n;

        if (strncmp(address, "unix:", 5) == 0) {
                path = address + 5;
                n = strcspn(path, ";");
        } else
                n = strlen(path);
        if (n == 0 || (path[0] == '@' && n == 1))
                return -EINVAL;
        if (n > sizeof(((struct sockaddr_un *)NULL)->sun_path) - (path[0] == '@' ? 0 : 1))
                return -ENAMETOOLONG;
        *ret_path = strndup(path, n);
        return *ret_path ? 0 : -ENOMEM;
}

/* A path from address_to_path() as a socket address. */
static void path_to_sockaddr(const char *path, struct sockaddr_un *ret_sa, socklen_t *ret_len) {
        size_t n = strlen(path);

        memset(ret_sa, 0, sizeof(*ret_sa));
        ret_sa->sun_family = AF_UNIX;
        memcpy(ret_sa->sun_path, path, n);
        if (path[0] == '@') {
                /* Abstract: a leading NUL, and the length counts exactly the name's bytes. */
                ret_sa->sun_path[0] = '\0';
                *ret_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
        } else
                *ret_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
}

static int socket_connect(const struct sockaddr_un *sa, socklen_t len, int timeout_ms, int *ret_fd) {
        struct timeval tv = {
                .tv_sec = timeout_ms / 1000,
                .tv_usec = (timeout_ms % 1000) * 1000,
        };
        int fd, r;

        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return -errno;
        /* On AF_UNIX, SO_SNDTIMEO bounds a connect() that waits for a full listen backlog. */
        (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        do
                r = connect(fd, (const struct sockaddr *)sa, len);
        while (r < 0 && errno == EINTR);
        if (r < 0) {
                r = errno == EAGAIN ? -ETIMEDOUT : -errno;
                close(fd);
                return r;
        }
        *ret_fd = fd;
        return 0;
}

TB_EXPORT char **tb_strv_free(char **strv) {
        if (!strv)
                return NULL;
        for (char **i = strv; *i; i++)
                free(*i);
        free(strv);
        return NULL;
}

/* The addresses to try, in order, as given; entries are malloc'ed. Returns the count or -ENOMEM. */
static int address_candidates(const char *address, char *ret[TB_MAX_CANDIDATES]) {
        const char *env, *runtime;
        int n = 0;

        if (address) {
                ret[n] = strdup(address);
                return ret[n] ? 1 : -ENOMEM;
        }
        env = getenv(TB_SOCKET_ENV);
        if (env && *env && !(ret[n++] = strdup(env)))
                goto oom;
        if (!(ret[n++] = strdup(TB_SYSTEM_SOCKET)))
                goto oom;
        runtime = getenv("XDG_RUNTIME_DIR");
        if (runtime && runtime[0] == '/' && asprintf(&ret[n++], "%s" TB_USER_SOCKET_SUFFIX, runtime) < 0)
                goto oom;
        return n;
oom:
        for (int i = 0; i < n - 1; i++)
                free(ret[i]);
        return -ENOMEM;
}

/*
 * The one address search (tb_client_addresses() and tb_client_open()): the
 * paths to try, in order, NULL-terminated. On an address that is not a valid
 * socket address, *ret_bad (when not NULL) is a malloc'ed copy of it.
 */
static int client_addresses(const char *address, char ***ret_paths, char **ret_bad) {
        char *candidates[TB_MAX_CANDIDATES] = {NULL}, **paths;
        int n, r = 0;

        n = address_candidates(address, candidates);
        if (n < 0)
                return n;
        paths = calloc((size_t)n + 1, sizeof(*paths));
        if (!paths)
                r = -ENOMEM;
        for (int i = 0; r >= 0 && i < n; i++) {
                r = address_to_path(candidates[i], &paths[i]);
                if (r < 0 && r != -ENOMEM && ret_bad)
                        *ret_bad = TAKE_PTR(candidates[i]);
        }
        for (int i = 0; i < n; i++)
                free(candidates[i]);
        if (r < 0) {
                tb_strv_free(paths);
                return r;
        }
        *ret_paths = paths;
        return n;
}

TB_EXPORT int tb_client_addresses(const char *address, char ***ret_paths) {
        if (!ret_paths)
                return -EINVAL;
        return client_addresses(address, ret_paths, NULL);
}

/* Whether the next candidate address is worth trying after this error. */
static bool connect_error_try_next(int r) {
        return r == -ENOENT || r == -ENOTDIR || r == -ECONNREFUSED;
}

/* Tries each path; on success *ret_fd and *ret_index are set, else errors lists why. */
static int connect_paths(char **paths, int *ret_fd, int *ret_index, FILE *errors) {
        int r = -ENOENT;

        for (int i = 0; paths[i]; i++) {
                struct sockaddr_un sa;
                socklen_t len;

                path_to_sockaddr(paths[i], &sa, &len);
                r = socket_connect(&sa, len, TB_DEFAULT_TIMEOUT_MS, ret_fd);
                if (r >= 0) {
                        *ret_index = i;
                        return 0;
                }
                fprintf(errors, "%s%s: %s", i > 0 ? "; at " : "", paths[i], strerror(-r));
                if (!connect_error_try_next(r))
                        break;
        }
        return r;
}

TB_EXPORT int tb_client_open(const char *address, tb_client **ret, char **ret_error) {
        char **paths = NULL, *bad = NULL, *errors = NULL;
        size_t errors_len = 0;
        tb_client *c = NULL;
        FILE *f = NULL;
        int n, fd = -1, index = 0, r;

        if (ret_error)
                *ret_error = NULL;
        if (!ret)
                return -EINVAL;
        n = r = client_addresses(address, &paths, &bad);
        if (r == -ENOMEM)
                return r;
        f = open_memstream(&errors, &errors_len);
        if (!f) {
                r = -ENOMEM;
                goto finish;
        }
        fputs("cannot connect to tokenbudgetd at ", f);
        if (r < 0)
                fprintf(f, "%s: %s", bad ? bad : "(null)",
                        r == -EINVAL ? "Invalid socket address" : strerror(-r));
        else
                r = connect_paths(paths, &fd, &index, f);
        if (connect_error_try_next(r))
                fputs(" (is the daemon running?)", f);
        if (fclose(f) != 0 && r >= 0)
                r = -ENOMEM;
        if (r < 0)
                goto finish;

        c = calloc(1, sizeof(*c));
        if (!c) {
                r = -ENOMEM;
                goto finish;
        }
        c->fd = fd;
        c->timeout_ms = TB_DEFAULT_TIMEOUT_MS;
        c->address = paths[index];
        /* Moves the NULL-terminated rest over the taken entry. */
        memmove(&paths[index], &paths[index + 1], (size_t)(n - index) * sizeof(*paths));
        *ret = c;
        fd = -1;
        r = 0;
finish:
        if (r < 0 && ret_error && errors) {
                *ret_error = errors;
                errors = NULL;
        }
        if (fd >= 0)
                close(fd);
        tb_strv_free(paths);
        free(bad);
        free(errors);
        return r;
}

TB_EXPORT tb_client *tb_client_close(tb_client *c) {
        if (!c)
                return NULL;
        client_disconnect(c);
        varlink_buffer_clear(&c->out);
        free(c->address);
        free(c->error);
        free(c->error_name);
        json_object_put(c->error_parameters);
        free(c);
        return NULL;
}

TB_EXPORT void tb_client_set_timeout(tb_client *c, int timeout_ms) {
        if (c)
                c->timeout_ms = timeout_ms;
}

TB_EXPORT const char *tb_client_address(const tb_client *c) {
        return c ? c->address : NULL;
}

TB_EXPORT const char *tb_client_error(const tb_client *c) {
        return c && c->error ? c->error : "";
}

TB_EXPORT const char *tb_client_error_name(const tb_client *c) {
        return c ? c->error_name : NULL;
}

TB_EXPORT const char *tb_client_error_parameter(const tb_client *c, const char *key) {
        json_object *v;

        if (!c || !key || !c->error_parameters)
                return NULL;
        v = json_object_object_get(c->error_parameters, key);
        if (!v)
                return NULL;
        /* Strings as they are; integers (and anything else) as their JSON text, e.g. "41000000". */
        return json_object_is_type(v, json_type_string)
                       ? json_object_get_string(v)
                       : json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN |
                                                                   JSON_C_TO_STRING_NOSLASHESCAPE);
}

TB_EXPORT uint64_t tb_client_retry_after_usec(const tb_client *c) {
        return c ? c->retry_after_usec : 0;
}

/* ---- one exchange: write the call, read one reply ---- */

/* Waits for events on the socket until the deadline (0: none). */
static int client_wait(tb_client *c, short events, uint64_t deadline_usec) {
        for (;;) {
                struct pollfd p = {.fd = c->fd, .events = events};
                int timeout_ms = -1, r;

                if (deadline_usec > 0) {
                        uint64_t now = now_usec();

                        if (now >= deadline_usec)
                                return -ETIMEDOUT;
                        /* Round up so that poll never wakes just before the deadline. */
                        timeout_ms = (int)((deadline_usec - now + 999) / 1000);
                }
                r = poll(&p, 1, timeout_ms);
                if (r < 0 && errno == EINTR)
                        continue;
                if (r < 0)
                        return -errno;
                if (r == 0)
                        return -ETIMEDOUT;
                /* POLLHUP/POLLERR: let send()/recv() report what happened. */
                return 0;
        }
}

static int client_send(tb_client *c, uint64_t deadline_usec) {
        size_t done = 0;

        while (done < c->out.len) {
                ssize_t n = send(c->fd, c->out.data + done, c->out.len - done, MSG_DONTWAIT | MSG_NOSIGNAL);

                if (n >= 0) {
                        done += (size_t)n;
                        continue;
                }
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN)
                        return errno == EPIPE ? -ECONNRESET : -errno;
                int r = client_wait(c, POLLOUT, deadline_usec);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Reads until a whole reply frame is buffered; *ret_frame_len excludes its NUL. */
static int client_receive(tb_client *c, uint64_t deadline_usec, size_t *ret_frame_len) {
        for (;;) {
                size_t frame_len, space;
                ssize_t n;
                int r;

                if (c->in.len > c->in_scanned) {
                        r = varlink_frame_next(c->in.data + c->in_scanned, c->in.len - c->in_scanned,
                                               TB_REPLY_MAX_BYTES - c->in_scanned, &frame_len);
                        if (r < 0)
                                return -EMSGSIZE;
                        if (r > 0) {
                                *ret_frame_len = c->in_scanned + frame_len;
                                return 0;
                        }
                        c->in_scanned = c->in.len;
                }
                r = client_wait(c, POLLIN, deadline_usec);
                if (r < 0)
                        return r;
                space = c->in.len < TB_READ_CHUNK_BYTES ? TB_READ_CHUNK_BYTES : c->in.len;
                if (varlink_buffer_reserve(&c->in, space) < 0)
                        return -ENOMEM;
                n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, MSG_DONTWAIT);
                if (n == 0)
                        return -ECONNRESET;
                if (n < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (n < 0)
                        return errno == EPIPE ? -ECONNRESET : -errno;
                c->in.len += (size_t)n;
        }
}

static int client_fail_io(tb_client *c, const char *method, int r) {
        switch (r) {
        case -ETIMEDOUT:
                return client_fail_transport(c, r, "%s: tokenbudgetd did not answer within %d ms", method,
                                             c->timeout_ms);
        case -ECONNRESET:
                return client_fail_transport(c, r, "%s: tokenbudgetd closed the connection", method);
        case -EMSGSIZE:
                return client_fail_transport(c, -EPROTO, "%s: reply from tokenbudgetd exceeds %zu bytes",
                                             method, TB_REPLY_MAX_BYTES);
        default:
                return client_fail_transport(c, r, "%s: %s", method, strerror(-r));
        }
}

/* Only a handle idle for this long is checked for a close by the daemon:
 * the check costs a system call, and the daemon's idle timeout is minutes. */
#define TB_IDLE_CHECK_USEC 1000000u

/*
 * The daemon closes a connection that holds no allocation and has sent
 * nothing for limits.idle_timeout_sec, and it does so only between calls,
 * without reading anything more. So an end of file already waiting on an idle
 * handle means no call was lost: connect again to the same address and go on,
 * as if the handle had never been closed. (A daemon that restarted has
 * settled the old connection's allocations; calls about them answer
 * UnknownAllocation, as they would have on the old connection.)
 */
static void client_reconnect_if_closed(tb_client *c, uint64_t now) {
        struct sockaddr_un sa;
        socklen_t len;
        char byte;
        ssize_t n;
        int fd;

        if (c->last_call_usec == 0 || now - c->last_call_usec < TB_IDLE_CHECK_USEC || c->in.len > 0)
                return;
        n = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))
                return;
        path_to_sockaddr(c->address, &sa, &len);
        if (socket_connect(&sa, len, c->timeout_ms > 0 ? c->timeout_ms : TB_DEFAULT_TIMEOUT_MS, &fd) < 0)
                return; /* the send or receive then reports the closed connection */
        close(c->fd);
        c->fd = fd;
        c->in_scanned = 0;
}

/* Writes c->out and reads one reply into *ret (which the caller then owns). */
static int client_transact(tb_client *c, const char *method, VarlinkReply *ret) {
        uint64_t deadline_usec = 0, now;
        const char *reason = NULL;
        size_t frame_len = 0;
        int r;

        if (c->fd < 0)
                return client_fail(c, -ENOTCONN,
                                   "%s: not connected to tokenbudgetd: the connection was closed after an "
                                   "earlier error; open a new handle",
                                   method);
        now = now_usec();
        client_reconnect_if_closed(c, now);
        if (c->timeout_ms > 0)
                deadline_usec = now + (uint64_t)c->timeout_ms * 1000u;

        r = client_send(c, deadline_usec);
        c->out.len = 0;
        if (r >= 0)
                r = client_receive(c, deadline_usec, &frame_len);
        if (r < 0)
                return client_fail_io(c, method, r);
        c->last_call_usec = now_usec();

        r = varlink_reply_parse(c->in.data, frame_len, ret, &reason);
        varlink_buffer_consume(&c->in, frame_len + 1);
        c->in_scanned = 0;
        if (r < 0)
                return client_fail_transport(c, -EPROTO, "%s: malformed reply from tokenbudgetd: %s", method,
                                             reason ? reason : "invalid message");
        if (ret->continues) {
                varlink_reply_done(ret);
                return client_fail_transport(c, -EPROTO,
                                             "%s: malformed reply from tokenbudgetd: 'continues' set on a "
                                             "call that did not ask for more",
                                             method);
        }
        return 0;
}

static int error_to_errno(const char *name) {
        for (size_t i = 0; i < sizeof(error_map) / sizeof(error_map[0]); i++)
                if (strcmp(error_map[i].name, name) == 0)
                        return error_map[i].error;
        return EBADE;
}

/* Formats "NAME: key=value key=value" from an error reply, keys in the order sent. */
static int client_fail_reply(tb_client *c, const VarlinkReply *reply) {
        const char *sep = ": ";
        char *text = NULL;
        size_t text_len = 0;
        FILE *f;
        int r = -error_to_errno(reply->error);

        f = open_memstream(&text, &text_len);
        if (!f)
                return client_fail(c, r, "%s", reply->error);
        fputs(reply->error, f);
        json_object_object_foreach(reply->parameters, key, value) {
                if (json_object_is_type(value, json_type_string))
                        fprintf(f, "%s%s=%s", sep, key, json_object_get_string(value));
                else
                        fprintf(f, "%s%s=%s", sep, key,
                                json_object_to_json_string_ext(
                                        value, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                sep = " ";
        }
        if (fclose(f) != 0)
                return client_fail(c, r, "%s", reply->error);

        free(c->error);
        free(c->error_name);
        c->error = text;
        c->error_name = strdup(reply->error);
        json_object_put(c->error_parameters);
        c->error_parameters = json_object_get(reply->parameters);
        c->retry_after_usec = 0;
        if (r == -EDQUOT) {
                json_object *retry = json_object_object_get(reply->parameters, "retryAfterUsec");

                if (json_object_is_type(retry, json_type_int) && json_object_get_int64(retry) > 0)
                        c->retry_after_usec = (uint64_t)json_object_get_int64(retry);
        }
        return r;
}

/* One call: c->out holds the message; a daemon error becomes its errno. */
static int client_call(tb_client *c, const char *method, VarlinkReply *ret) {
        int r;

        r = client_transact(c, method, ret);
        if (r < 0)
                return r;
        if (ret->error) {
                r = client_fail_reply(c, ret);
                varlink_reply_done(ret);
                return r;
        }
        return 0;
}

/* ---- validating replies ---- */

static int client_fail_field(tb_client *c, const char *method, const char *field, const char *what) {
        return client_fail_transport(c, -EPROTO,
                                     "%s: malformed reply from tokenbudgetd: '%s' is missing or %s", method,
                                     field, what);
}

static int reply_get_uint(tb_client *c, const char *method, json_object *params, const char *field,
                          uint64_t *ret) {
        json_object *v = json_object_object_get(params, field);

        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
                return client_fail_field(c, method, field, "not a non-negative integer");
        *ret = (uint64_t)json_object_get_int64(v);
        return 0;
}

/* Copies a string field into ret[size]; longer strings are malformed. */
static int reply_get_string(tb_client *c, const char *method, json_object *params, const char *field,
                            char *ret, size_t size) {
        json_object *v = json_object_object_get(params, field);
        size_t n;

        if (!json_object_is_type(v, json_type_string))
                return client_fail_field(c, method, field, "not a string");
        n = (size_t)json_object_get_string_len(v);
        if (n == 0 || n >= size || memchr(json_object_get_string(v), '\0', n))
                return client_fail_field(c, method, field, "not a string of the expected length");
        memcpy(ret, json_object_get_string(v), n + 1);
        return 0;
}

/* ---- the agent interface ---- */

static const char *const priority_names[] = {
        [TB_PRIORITY_INTERACTIVE] = "interactive",
        [TB_PRIORITY_NORMAL] = "normal",
        [TB_PRIORITY_BACKGROUND] = "background",
};

static int request_format(tb_client *c, const tb_request_params *p) {
        VarlinkBuffer *b = &c->out;
        bool first = true;

        if ((int)p->priority < (int)TB_PRIORITY_DEFAULT || (int)p->priority > (int)TB_PRIORITY_BACKGROUND)
                return client_fail(c, -EINVAL, "invalid argument: unknown priority %d", (int)p->priority);
        if (client_check_string(c, "class", p->task_class, true) < 0 ||
            client_check_string(c, "agent", p->agent, true) < 0 ||
            client_check_string(c, "model", p->model, true) < 0)
                return -EINVAL;
        if (buf_begin_call(b, METHOD_REQUEST) < 0 ||
            (p->estimate >= 0 && buf_put_uint_param(b, &first, "estimate", (uint64_t)p->estimate) < 0) ||
            buf_put_string_param(b, &first, "class", p->task_class) < 0 ||
            buf_put_string_param(b, &first, "agent", p->agent) < 0 ||
            buf_put_string_param(b, &first, "model", p->model) < 0 ||
            (p->priority != TB_PRIORITY_DEFAULT &&
             buf_put_string_param(b, &first, "priority", priority_names[p->priority]) < 0) ||
            buf_end_call(b) < 0)
                return client_fail(c, -ENOMEM, "%s: out of memory", METHOD_REQUEST);
        return 0;
}

TB_EXPORT int tb_request(tb_client *c, const tb_request_params *params, tb_grant *ret) {
        static const tb_request_params defaults = {.estimate = -1};
        VarlinkReply reply;
        tb_grant g = {};
        int r;

        if (!c || !ret)
                return -EINVAL;
        r = request_format(c, params ? params : &defaults);
        if (r < 0)
                return r;
        r = client_call(c, METHOD_REQUEST, &reply);
        if (r < 0)
                return r;

        r = reply_get_string(c, METHOD_REQUEST, reply.parameters, "allocation", g.allocation,
                             sizeof(g.allocation));
        if (r >= 0)
                r = reply_get_string(c, METHOD_REQUEST, reply.parameters, "decision", g.decision,
                                     sizeof(g.decision));
        if (r >= 0 && strcmp(g.decision, "granted") != 0 && strcmp(g.decision, "degraded") != 0)
                r = client_fail_field(c, METHOD_REQUEST, "decision", "neither \"granted\" nor \"degraded\"");
        if (r >= 0)
                r = reply_get_uint(c, METHOD_REQUEST, reply.parameters, "granted", &g.granted);
        if (r >= 0)
                r = reply_get_uint(c, METHOD_REQUEST, reply.parameters, "warnAt", &g.warn_at);
        if (r >= 0)
                r = reply_get_uint(c, METHOD_REQUEST, reply.parameters, "hardLimit", &g.hard_limit);
        varlink_reply_done(&reply);
        if (r < 0)
                return r;
        *ret = g;
        return 0;
}

static int state_from_string(const char *s, tb_state *ret) {
        static const tb_state states[] = {TB_STATE_OK, TB_STATE_WARNING, TB_STATE_EXCEEDED};

        for (size_t i = 0; i < sizeof(states) / sizeof(states[0]); i++)
                if (strcmp(s, tb_state_to_string(states[i])) == 0) {
                        *ret = states[i];
                        return 0;
                }
        return -EINVAL;
}

TB_EXPORT int tb_report(tb_client *c, const char *allocation, uint64_t input_tokens, uint64_t output_tokens,
                        tb_state *ret_state, uint64_t *ret_used) {
        VarlinkBuffer *b;
        VarlinkReply reply;
        json_object *state;
        tb_state s = TB_STATE_OK;
        uint64_t used = 0;
        bool first = true;
        int r;

        if (!c)
                return -EINVAL;
        b = &c->out;
        if (client_check_string(c, "allocation", allocation, false) < 0)
                return -EINVAL;
        if (buf_begin_call(b, METHOD_REPORT) < 0 ||
            buf_put_string_param(b, &first, "allocation", allocation) < 0 ||
            buf_put_uint_param(b, &first, "inputTokens", input_tokens) < 0 ||
            buf_put_uint_param(b, &first, "outputTokens", output_tokens) < 0 || buf_end_call(b) < 0)
                return client_fail(c, -ENOMEM, "%s: out of memory", METHOD_REPORT);
        r = client_call(c, METHOD_REPORT, &reply);
        if (r < 0)
                return r;

        state = json_object_object_get(reply.parameters, "state");
        if (!json_object_is_type(state, json_type_string) ||
            state_from_string(json_object_get_string(state), &s) < 0)
                r = client_fail_field(c, METHOD_REPORT, "state", "not \"ok\", \"warning\" or \"exceeded\"");
        if (r >= 0)
                r = reply_get_uint(c, METHOD_REPORT, reply.parameters, "used", &used);
        varlink_reply_done(&reply);
        if (r < 0)
                return r;
        if (ret_state)
                *ret_state = s;
        if (ret_used)
                *ret_used = used;
        return 0;
}

TB_EXPORT int tb_release(tb_client *c, const char *allocation, const uint64_t *input_tokens,
                         const uint64_t *output_tokens, uint64_t *ret_used, uint64_t *ret_refunded) {
        VarlinkBuffer *b;
        VarlinkReply reply;
        uint64_t used = 0, refunded = 0;
        bool first = true;
        int r;

        if (!c)
                return -EINVAL;
        b = &c->out;
        if (client_check_string(c, "allocation", allocation, false) < 0)
                return -EINVAL;
        if (buf_begin_call(b, METHOD_RELEASE) < 0 ||
            buf_put_string_param(b, &first, "allocation", allocation) < 0 ||
            (input_tokens && buf_put_uint_param(b, &first, "inputTokens", *input_tokens) < 0) ||
            (output_tokens && buf_put_uint_param(b, &first, "outputTokens", *output_tokens) < 0) ||
            buf_end_call(b) < 0)
                return client_fail(c, -ENOMEM, "%s: out of memory", METHOD_RELEASE);
        r = client_call(c, METHOD_RELEASE, &reply);
        if (r < 0)
                return r;

        r = reply_get_uint(c, METHOD_RELEASE, reply.parameters, "used", &used);
        if (r >= 0)
                r = reply_get_uint(c, METHOD_RELEASE, reply.parameters, "refunded", &refunded);
        varlink_reply_done(&reply);
        if (r < 0)
                return r;
        if (ret_used)
                *ret_used = used;
        if (ret_refunded)
                *ret_refunded = refunded;
        return 0;
}

/* ---- any method ---- */

static int call_format(tb_client *c, const char *method, const char *parameters_json) {
        json_object *params = NULL;
        size_t interface_len;
        int r;

        if (!method || varlink_method_split(method, &interface_len) < 0)
                return client_fail(c, -EINVAL, "invalid argument: '%s' is not a Varlink method name",
                                   method ? method : "(null)");
        if (parameters_json) {
                enum json_tokener_error e;

                params = json_tokener_parse_verbose(parameters_json, &e);
                if (!json_object_is_type(params, json_type_object)) {
                        json_object_put(params);
                        return client_fail(c, -EINVAL,
                                           "invalid argument: parameters of %s are not a JSON object%s%s",
                                           method, e != json_tokener_success ? ": " : "",
                                           e != json_tokener_success ? json_tokener_error_desc(e) : "");
                }
        }
        c->out.len = 0;
        r = varlink_format_call(&c->out, method, params, false, false);
        json_object_put(params);
        if (r < 0)
                return client_fail(c, r, "%s: %s", method, strerror(-r));
        return 0;
}

TB_EXPORT int tb_call(tb_client *c, const char *method, const char *parameters_json, char **ret_reply_json) {
        VarlinkReply reply;
        char *text = NULL;
        int r;

        if (!c)
                return -EINVAL;
        r = call_format(c, method, parameters_json);
        if (r < 0)
                return r;
        r = client_call(c, method, &reply);
        if (r < 0)
                return r;
        if (ret_reply_json) {
                text = strdup(json_object_to_json_string_ext(
                        reply.parameters, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
                if (!text)
                        r = client_fail(c, -ENOMEM, "%s: out of memory", method);
                *ret_reply_json = text;
        }
        varlink_reply_done(&reply);
        return r;
}

TB_EXPORT const char *tb_state_to_string(tb_state s) {
        switch (s) {
        case TB_STATE_OK:
                return "ok";
        case TB_STATE_WARNING:
                return "warning";
        case TB_STATE_EXCEEDED:
                return "exceeded";
        }
        return NULL;
}

TB_EXPORT const char *tb_version(void) {
        return TB_VERSION;
}
