/* SPDX-License-Identifier: MIT */
/*
 * libtokenbudget: the C client of tokenbudgetd (see tokenbudget.h).
 *
 * One handle is one AF_UNIX stream connection speaking Varlink. Calls queue
 * up: each one appends its message to the output buffer and a pending entry
 * to a FIFO; the daemon answers in order, so each reply completes the oldest
 * pending call. tb_client_process() is the only place that sends, receives
 * and runs callbacks, without ever blocking; a blocking call is an async call
 * on an otherwise idle handle followed by process()/poll() until it is
 * answered. Framing and reply parsing go through the shared codec
 * (protocol/varlink.h); the hot-path requests (Request, Report, Release) are
 * formatted with snprintf into a reused buffer rather than json-c objects,
 * and the FIFO is a reused ring, so a call allocates nothing of its own. It
 * does not retry, and it keeps no global state: distinct handles are
 * independent.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1 /* asprintf, vasprintf */
#endif
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
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
#include "json-codec.h"
#include "time-util.h"
#include "tokenbudget.h"
#include "utf8.h"
#include "varlink-names.h"
#include "varlink.h"

#define TB_EXPORT __attribute__((visibility("default")))

/* The largest reply accepted: a List of many allocations stays far below it. */
#define TB_REPLY_MAX_BYTES ((size_t)16 * 1024 * 1024)
/* Smallest free space offered to recv(): a typical reply is a few hundred bytes. */
#define TB_READ_CHUNK_BYTES   ((size_t)16 * 1024)
#define TB_USER_SOCKET_SUFFIX "/tokenbudget/io.tokenbudget"
/* $TOKENBUDGET_SOCKET, the system socket, the user-session socket. */
#define TB_MAX_CANDIDATES 3
/* The first size of the ring of pending calls; it doubles when full. */
#define TB_CALLS_MIN 8

#define METHOD_REQUEST VL_METHOD_AGENT_REQUEST
#define METHOD_REPORT  VL_METHOD_AGENT_REPORT
#define METHOD_RELEASE VL_METHOD_AGENT_RELEASE

/*
 * The ABI promise (tokenbudget.h) checked where the compiler can: on LP64 the
 * structs have these sizes for good, and the fields announced for later fit in
 * their reserved space (each layout below is the struct with those fields
 * carved out of reserved[], and must keep the size).
 */
#if UINTPTR_MAX == UINT64_MAX
_Static_assert(sizeof(tb_request_params) == 168, "tb_request_params changed size");
_Static_assert(sizeof(tb_grant) == 304, "tb_grant changed size");
_Static_assert(sizeof(tb_report_params) == 152, "tb_report_params changed size");
_Static_assert(sizeof(tb_report_reply) == 160, "tb_report_reply changed size");
_Static_assert(sizeof(tb_release_params) == 152, "tb_release_params changed size");
_Static_assert(sizeof(tb_release_reply) == 144, "tb_release_reply changed size");

_Static_assert(offsetof(tb_request_params, min_tokens) == 40 &&
                       offsetof(tb_request_params, prompt_tokens) == 56 &&
                       offsetof(tb_request_params, reserved) == 64,
               "tb_request_params' 1.2 fields are not where reserved[0..2] were");
_Static_assert(offsetof(tb_report_reply, action_name) == 32 && offsetof(tb_report_reply, reserved) == 56,
               "tb_report_reply's action_name is not where reserved[0..2] was");

_Static_assert(offsetof(tb_grant, priority) == 112 && offsetof(tb_grant, priority_name) == 120 &&
                       offsetof(tb_grant, requested_priority) == 144 &&
                       offsetof(tb_grant, requested_priority_name) == 152 &&
                       offsetof(tb_grant, reason) == 176,
               "tb_grant's priority fields are not where reserved[0..7] of 1.0 were");
_Static_assert(offsetof(tb_grant, reason) == 176 && offsetof(tb_grant, reason_name) == 184 &&
                       offsetof(tb_grant, waited_usec) == 208 &&
                       offsetof(tb_grant, suggested_max_tokens) == 216 &&
                       offsetof(tb_grant, suggested_model) == 224 &&
                       offsetof(tb_grant, would_be_name) == 232 &&
                       offsetof(tb_grant, would_be_reason_name) == 240 &&
                       offsetof(tb_grant, power_state_name) == 248,
               "tb_grant's 1.2 fields are not where reserved[0..8] of 1.1 were");
_Static_assert(offsetof(tb_grant, power_state_name) == 248 &&
                       offsetof(tb_grant, power_factor_permille) == 256 &&
                       offsetof(tb_grant, reserved) == 264,
               "tb_grant's 1.3 fields are not where reserved[0..1] of 1.2 were");

/* What is left must still hold the hints planned for later: the learned
 * prediction (issue 13: predicted, predictedOutput, samples and the hard
 * multiplier applied), with a slot to spare. */
struct grant_planned {
        char head[offsetof(tb_grant, reserved)];
        uint64_t predicted, predicted_output, samples;
        uint64_t hard_multiplier_permille; /* or an enum naming where it came from: one slot either way */
        uint64_t reserved[1];
};
_Static_assert(sizeof(struct grant_planned) == sizeof(tb_grant), "planned hints do not fit");
#endif

typedef enum CallKind {
        CALL_REQUEST,
        CALL_REPORT,
        CALL_RELEASE,
        CALL_GENERIC,
} CallKind;

/* A call sent (or queued to be sent) and not answered yet. */
typedef struct PendingCall {
        CallKind kind;
        union {
                tb_request_cb request;
                tb_report_cb report;
                tb_release_cb release;
                tb_call_cb call;
        } callback;
        void *userdata;
        uint64_t timeout_usec;  /* what it was given, for the message */
        uint64_t deadline_usec; /* TB_USEC_INFINITY: none */
        char *method;           /* CALL_GENERIC only (a copy, for messages); else NULL */
} PendingCall;

/* What a reply becomes before its callback sees it. */
typedef union CallReply {
        tb_grant grant;
        tb_report_reply report;
        tb_release_reply release;
        const char *json; /* CALL_GENERIC: the parameters as JSON text, owned by the parsed reply */
} CallReply;

struct tb_client {
        int fd; /* -1 after a transport error: every call then fails with -ENOTCONN */
        uint64_t timeout_usec;
        char *address;
        VarlinkBuffer in;   /* received bytes not consumed yet */
        size_t in_scanned;  /* bytes at the front of in known to hold no NUL */
        VarlinkBuffer out;  /* messages of the pending calls not sent yet */
        size_t out_sent;    /* bytes at the front of out already sent */
        PendingCall *calls; /* ring of calls_cap entries: n_calls from calls_head, oldest first */
        size_t calls_head, n_calls, calls_cap;
        unsigned dispatching; /* > 0 while a callback runs */
        bool closed;          /* tb_client_close() inside a callback: freed when process() returns */
        char *error;          /* NULL reads as "" */
        char *error_name;
        json_object *error_parameters; /* of the last daemon error reply; NULL otherwise */
        uint64_t retry_after_usec;
        uint64_t last_io_usec; /* when the connection last carried a reply (or opened) */
        /* The strings a tb_grant points to (suggested_model, would_be_name,
         * would_be_reason_name, power_state_name), of the last Request
         * answered; NULL: not sent. */
        char *grant_strings[4];
};

/* How a daemon error maps to an errno (tokenbudget.h); anything else is -EBADE. */
static const struct {
        const char *name;
        int error;
} error_map[] = {
        {VL_ERROR_AGENT_BUDGET_EXHAUSTED, EDQUOT},
        {VL_ERROR_AGENT_QUEUE_TIMEOUT, EDQUOT}, /* budget exhaustion after waiting */
        {VL_ERROR_AGENT_TOO_MANY_ALLOCATIONS, EUSERS},
        {VL_ERROR_AGENT_TOO_MANY_SCOPES, EUSERS},
        {VL_ERROR_AGENT_QUEUE_FULL, EUSERS},
        {VL_ERROR_AGENT_ESCALATED, EFBIG},
        {VL_ERROR_AGENT_CIRCUIT_OPEN, EAGAIN},
        {VL_ERROR_AGENT_POWER_PAUSED, EBUSY}, /* a blocking call's own -EBUSY has no error name */
        {VL_ERROR_AGENT_UNKNOWN_ALLOCATION, ENOENT},
        {VL_ERROR_ADMIN_UNKNOWN_SCOPE, ENOENT},
        {VL_ERROR_ADMIN_UNKNOWN_REQUEST, ENOENT},
        {VL_ERROR_SERVICE_PERMISSION_DENIED, EACCES},
        {VL_ERROR_SERVICE_INVALID_PARAMETER, EINVAL},
        {VL_ERROR_SERVICE_INTERFACE_NOT_FOUND, EOPNOTSUPP},
        {VL_ERROR_SERVICE_METHOD_NOT_FOUND, EOPNOTSUPP},
        {VL_ERROR_SERVICE_METHOD_NOT_IMPLEMENTED, EOPNOTSUPP},
};

/* ---- what the last failure was ---- */

static void client_set_error(tb_client *c, char *text, char *name, json_object *parameters) {
        free(c->error);
        free(c->error_name);
        json_object_put(c->error_parameters);
        c->error = text;
        c->error_name = name;
        c->error_parameters = parameters;
        c->retry_after_usec = 0;
}

/* Records a failure that is not a daemon error; returns r (a negative errno). */
static int client_failv(tb_client *c, int r, const char *fmt, va_list ap)
        __attribute__((format(printf, 3, 0)));
static int client_failv(tb_client *c, int r, const char *fmt, va_list ap) {
        char *text = NULL;

        if (vasprintf(&text, fmt, ap) < 0)
                text = NULL;
        /* Transport and argument errors have no Varlink name. */
        client_set_error(c, text, NULL, NULL);
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

static int error_to_errno(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(error_map); i++)
                if (strcmp(error_map[i].name, name) == 0)
                        return error_map[i].error;
        return EBADE;
}

/* The errors whose retryAfterUsec tb_client_retry_after_usec() gives (the same field name in each). */
static bool error_has_retry_after(const char *name) {
        static const char *const names[] = {
                VL_ERROR_AGENT_BUDGET_EXHAUSTED, VL_ERROR_AGENT_QUEUE_TIMEOUT, VL_ERROR_AGENT_CIRCUIT_OPEN,
                VL_ERROR_AGENT_POWER_PAUSED, /* always 0 now: kept should it ever know */
        };

        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (strcmp(names[i], name) == 0)
                        return true;
        return false;
}

/* Records "NAME: key=value key=value" from an error reply, keys in the order sent; returns its errno. */
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

        client_set_error(c, text, strdup(reply->error), json_object_get(reply->parameters));
        if (error_has_retry_after(reply->error)) {
                json_object *retry = json_object_object_get(
                        reply->parameters, VL_FIELD_AGENT_BUDGET_EXHAUSTED_RETRY_AFTER_USEC);

                if (json_object_is_type(retry, json_type_int) && json_object_get_int64(retry) > 0)
                        c->retry_after_usec = (uint64_t)json_object_get_int64(retry);
        }
        return r;
}

/* "300 ms", "1500 us": for messages about timeouts. */
static const char *format_usec(char buf[static 32], uint64_t usec) {
        if (usec % USEC_PER_MSEC == 0)
                snprintf(buf, 32, "%" PRIu64 " ms", usec / USEC_PER_MSEC);
        else
                snprintf(buf, 32, "%" PRIu64 " us", usec);
        return buf;
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

/* Appends to what b holds: calls queue up behind each other. */
static int buf_begin_call(VarlinkBuffer *b, const char *method) {
        return buf_printf(b, "{\"method\":\"%s\",\"parameters\":{", method);
}

/* Closes the parameters and the message, and adds the NUL that ends the frame. */
static int buf_end_call(VarlinkBuffer *b) {
        return buf_put(b, "}}", 3);
}

/* ---- checking and formatting the caller's params ---- */

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

/*
 * Reserved space set by the caller is a field this library does not know (a
 * program built against a newer tokenbudget.h): refuse it rather than drop it.
 */
static int client_check_reserved(tb_client *c, const char *type, const uint64_t *reserved, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (reserved[i] != 0)
                        return client_fail(
                                c, -EINVAL,
                                "invalid argument: %s.reserved[%zu] is not zero: a field this "
                                "libtokenbudget (%s) does not know (was the program built against "
                                "a newer tokenbudget.h?)",
                                type, i, TB_VERSION);
        return 0;
}

static const char *const priority_names[] = {
        [TB_PRIORITY_INTERACTIVE] = "interactive",
        [TB_PRIORITY_NORMAL] = "normal",
        [TB_PRIORITY_BACKGROUND] = "background",
};

static int request_check(tb_client *c, const tb_request_params *p) {
        if (client_check_reserved(c, "tb_request_params", p->reserved, ELEMENTSOF(p->reserved)) < 0)
                return -EINVAL;
        if ((int)p->priority < (int)TB_PRIORITY_DEFAULT || (int)p->priority > (int)TB_PRIORITY_BACKGROUND)
                return client_fail(c, -EINVAL, "invalid argument: unknown priority %d", (int)p->priority);
        if (client_check_string(c, "class", p->task_class, true) < 0 ||
            client_check_string(c, "agent", p->agent, true) < 0 ||
            client_check_string(c, "model", p->model, true) < 0)
                return -EINVAL;
        return 0;
}

/* Appends the Request message; zero fields are not sent. */
static int request_format(VarlinkBuffer *b, const tb_request_params *p) {
        bool first = true;

        if (buf_begin_call(b, METHOD_REQUEST) < 0 ||
            (p->estimate > 0 &&
             buf_put_uint_param(b, &first, VL_IN_AGENT_REQUEST_ESTIMATE, p->estimate) < 0) ||
            buf_put_string_param(b, &first, VL_IN_AGENT_REQUEST_CLASS, p->task_class) < 0 ||
            buf_put_string_param(b, &first, VL_IN_AGENT_REQUEST_AGENT, p->agent) < 0 ||
            buf_put_string_param(b, &first, VL_IN_AGENT_REQUEST_MODEL, p->model) < 0 ||
            (p->priority != TB_PRIORITY_DEFAULT &&
             buf_put_string_param(b, &first, VL_IN_AGENT_REQUEST_PRIORITY, priority_names[p->priority]) <
                     0) ||
            (p->min_tokens > 0 &&
             buf_put_uint_param(b, &first, VL_IN_AGENT_REQUEST_MIN_TOKENS, p->min_tokens) < 0) ||
            (p->wait_usec > 0 &&
             buf_put_uint_param(b, &first, VL_IN_AGENT_REQUEST_WAIT_USEC, p->wait_usec) < 0) ||
            (p->prompt_tokens > 0 &&
             buf_put_uint_param(b, &first, VL_IN_AGENT_REQUEST_PROMPT_TOKENS, p->prompt_tokens) < 0) ||
            buf_end_call(b) < 0)
                return -ENOMEM;
        return 0;
}

static int report_check(tb_client *c, const tb_report_params *p) {
        if (!p)
                return client_fail(c, -EINVAL, "invalid argument: %s needs its params", METHOD_REPORT);
        if (client_check_reserved(c, "tb_report_params", p->reserved, ELEMENTSOF(p->reserved)) < 0)
                return -EINVAL;
        return client_check_string(c, "allocation", p->allocation, false);
}

/* Appends the Report message: both totals always (zero is a total). */
static int report_format(VarlinkBuffer *b, const tb_report_params *p) {
        bool first = true;

        if (buf_begin_call(b, METHOD_REPORT) < 0 ||
            buf_put_string_param(b, &first, VL_IN_AGENT_REPORT_ALLOCATION, p->allocation) < 0 ||
            buf_put_uint_param(b, &first, VL_IN_AGENT_REPORT_INPUT_TOKENS, p->input_tokens) < 0 ||
            buf_put_uint_param(b, &first, VL_IN_AGENT_REPORT_OUTPUT_TOKENS, p->output_tokens) < 0 ||
            buf_end_call(b) < 0)
                return -ENOMEM;
        return 0;
}

static int release_check(tb_client *c, const tb_release_params *p) {
        if (!p)
                return client_fail(c, -EINVAL, "invalid argument: %s needs its params", METHOD_RELEASE);
        if (client_check_reserved(c, "tb_release_params", p->reserved, ELEMENTSOF(p->reserved)) < 0)
                return -EINVAL;
        return client_check_string(c, "allocation", p->allocation, false);
}

/* Appends the Release message; a zero total is not sent (the last reported one stands). */
static int release_format(VarlinkBuffer *b, const tb_release_params *p) {
        bool first = true;

        if (buf_begin_call(b, METHOD_RELEASE) < 0 ||
            buf_put_string_param(b, &first, VL_IN_AGENT_RELEASE_ALLOCATION, p->allocation) < 0 ||
            (p->input_tokens > 0 &&
             buf_put_uint_param(b, &first, VL_IN_AGENT_RELEASE_INPUT_TOKENS, p->input_tokens) < 0) ||
            (p->output_tokens > 0 &&
             buf_put_uint_param(b, &first, VL_IN_AGENT_RELEASE_OUTPUT_TOKENS, p->output_tokens) < 0) ||
            buf_end_call(b) < 0)
                return -ENOMEM;
        return 0;
}

/* Parses parameters_json (NULL: none) into *ret; the caller puts it. */
static int call_check(tb_client *c, const char *method, const char *parameters_json, json_object **ret) {
        size_t interface_len;

        *ret = NULL;
        if (!method || varlink_method_split(method, &interface_len) < 0)
                return client_fail(c, -EINVAL, "invalid argument: '%s' is not a Varlink method name",
                                   method ? method : "(null)");
        if (parameters_json) {
                /* The codec's parser, not json-c's tokener: json-c 0.16's crashes
                 * when malloc fails, and it is the daemon's grammar. */
                const char *reason = NULL;
                json_object *params = NULL;
                bool duplicate = false;
                int r = json_codec_parse(parameters_json, strlen(parameters_json), VARLINK_MAX_DEPTH,
                                         &params, &duplicate, &reason);

                if (r == -ENOMEM)
                        return client_fail(c, r, "out of memory parsing the parameters of %s", method);
                if (r < 0 || !json_object_is_type(params, json_type_object) || duplicate) {
                        json_object_put(params);
                        return client_fail(c, -EINVAL,
                                           "invalid argument: parameters of %s are not a JSON object%s%s",
                                           method, r < 0 || duplicate ? ": " : "",
                                           r < 0       ? reason
                                           : duplicate ? "a key is given twice"
                                                       : "");
                }
                *ret = params;
        }
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

static int socket_connect(const struct sockaddr_un *sa, socklen_t len, uint64_t timeout_usec, int *ret_fd) {
        struct timeval tv = {
                .tv_sec = (time_t)(timeout_usec / USEC_PER_SEC),
                .tv_usec = (suseconds_t)(timeout_usec % USEC_PER_SEC),
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
                r = socket_connect(&sa, len, TB_TIMEOUT_DEFAULT_USEC, ret_fd);
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
        c->timeout_usec = TB_TIMEOUT_DEFAULT_USEC;
        c->last_io_usec = now_usec();
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

/* ---- the handle ---- */

static void client_disconnect(tb_client *c) {
        if (c->fd >= 0)
                close(c->fd);
        c->fd = -1;
        varlink_buffer_clear(&c->in);
        c->in_scanned = 0;
        c->out.len = c->out_sent = 0;
}

/* Forgets every pending call without running its callback. */
static void calls_drop(tb_client *c) {
        for (size_t i = 0; i < c->n_calls; i++)
                free(c->calls[(c->calls_head + i) % c->calls_cap].method);
        c->n_calls = c->calls_head = 0;
}

static void client_free(tb_client *c) {
        for (size_t i = 0; i < ELEMENTSOF(c->grant_strings); i++)
                free(c->grant_strings[i]);
        varlink_buffer_clear(&c->out);
        free(c->calls);
        free(c->address);
        client_set_error(c, NULL, NULL, NULL);
        free(c);
}

TB_EXPORT tb_client *tb_client_close(tb_client *c) {
        if (!c)
                return NULL;
        client_disconnect(c);
        calls_drop(c);
        if (c->dispatching > 0)
                c->closed = true; /* the callback's caller still uses c: tb_client_process() frees it */
        else
                client_free(c);
        return NULL;
}

TB_EXPORT int tb_client_set_timeout_usec(tb_client *c, uint64_t timeout_usec) {
        if (!c)
                return -EINVAL;
        c->timeout_usec = timeout_usec == 0 ? TB_TIMEOUT_DEFAULT_USEC : timeout_usec;
        return 0;
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

/* ---- the FIFO of pending calls ---- */

static const char *const call_methods[] = {
        [CALL_REQUEST] = METHOD_REQUEST,
        [CALL_REPORT] = METHOD_REPORT,
        [CALL_RELEASE] = METHOD_RELEASE,
};

static const char *call_method(const PendingCall *p) {
        return p->kind == CALL_GENERIC ? p->method : call_methods[p->kind];
}

static const PendingCall *calls_at(const tb_client *c, size_t i) {
        return &c->calls[(c->calls_head + i) % c->calls_cap];
}

static int calls_push(tb_client *c, const PendingCall *p) {
        if (c->n_calls == c->calls_cap) {
                size_t cap = c->calls_cap > 0 ? c->calls_cap * 2 : TB_CALLS_MIN;
                PendingCall *calls = reallocarray(NULL, cap, sizeof(*calls));

                if (!calls)
                        return -ENOMEM;
                for (size_t i = 0; i < c->n_calls; i++)
                        calls[i] = *calls_at(c, i);
                free(c->calls);
                c->calls = calls;
                c->calls_cap = cap;
                c->calls_head = 0;
        }
        c->calls[(c->calls_head + c->n_calls) % c->calls_cap] = *p;
        c->n_calls++;
        return 0;
}

static PendingCall calls_pop(tb_client *c) {
        PendingCall p = c->calls[c->calls_head];

        c->calls_head = (c->calls_head + 1) % c->calls_cap;
        c->n_calls--;
        return p;
}

/* ---- completing calls ---- */

static void complete_request(tb_client *c, const PendingCall *p, int error, const CallReply *reply) {
        if (p->callback.request)
                p->callback.request(c, error, &reply->grant, p->userdata);
}

static void complete_report(tb_client *c, const PendingCall *p, int error, const CallReply *reply) {
        if (p->callback.report)
                p->callback.report(c, error, &reply->report, p->userdata);
}

static void complete_release(tb_client *c, const PendingCall *p, int error, const CallReply *reply) {
        if (p->callback.release)
                p->callback.release(c, error, &reply->release, p->userdata);
}

static void complete_generic(tb_client *c, const PendingCall *p, int error, const CallReply *reply) {
        if (p->callback.call)
                p->callback.call(c, error, error < 0 ? NULL : reply->json, p->userdata);
}

/* Where a reply field is wrong: for the message about a malformed reply. */
typedef struct ReplyFault {
        const char *field;
        const char *what;
} ReplyFault;

static int parse_grant(tb_client *c, json_object *params, CallReply *ret, ReplyFault *ret_fault);
static int parse_report(tb_client *c, json_object *params, CallReply *ret, ReplyFault *ret_fault);
static int parse_release(tb_client *c, json_object *params, CallReply *ret, ReplyFault *ret_fault);
static int parse_generic(tb_client *c, json_object *params, CallReply *ret, ReplyFault *ret_fault);

static const struct {
        int (*parse)(tb_client *c, json_object *params, CallReply *ret, ReplyFault *ret_fault);
        void (*complete)(tb_client *c, const PendingCall *p, int error, const CallReply *reply);
} call_types[] = {
        [CALL_REQUEST] = {parse_grant, complete_request},
        [CALL_REPORT] = {parse_report, complete_report},
        [CALL_RELEASE] = {parse_release, complete_release},
        [CALL_GENERIC] = {parse_generic, complete_generic},
};

/* Runs p's callback (p is already off the FIFO) and frees what p holds. */
static void call_complete(tb_client *c, PendingCall *p, int error, const CallReply *reply) {
        c->dispatching++;
        call_types[p->kind].complete(c, p, error, reply);
        c->dispatching--;
        free(p->method);
}

/*
 * The connection cannot go on (a timeout, a close, a malformed reply): close
 * it and fail every pending call with r, oldest first, each with its own
 * message while its callback runs. Returns r.
 */
static int client_abort(tb_client *c, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int client_abort(tb_client *c, int r, const char *fmt, ...) {
        char *reason = NULL;
        CallReply zero;
        va_list ap;
        bool first = true;

        client_disconnect(c);
        va_start(ap, fmt);
        if (vasprintf(&reason, fmt, ap) < 0)
                reason = NULL;
        va_end(ap);
        memset(&zero, 0, sizeof(zero));
        if (c->n_calls == 0)
                client_fail(c, r, "%s", reason ? reason : strerror(-r));
        while (c->n_calls > 0 && !c->closed) {
                PendingCall p = calls_pop(c);

                if (first)
                        client_fail(c, r, "%s: %s", call_method(&p), reason ? reason : strerror(-r));
                else
                        client_fail(c, r,
                                    "%s: not answered: the connection was closed after the call before it "
                                    "failed (%s)",
                                    call_method(&p), reason ? reason : strerror(-r));
                first = false;
                call_complete(c, &p, r, &zero);
        }
        free(reason);
        return r;
}

/* The transport failed with r: the message says how. */
static int client_abort_io(tb_client *c, int r) {
        switch (r) {
        case -ECONNRESET:
                return client_abort(c, r, "tokenbudgetd closed the connection");
        case -EMSGSIZE:
                return client_abort(c, -EPROTO, "reply from tokenbudgetd exceeds %zu bytes",
                                    TB_REPLY_MAX_BYTES);
        default:
                return client_abort(c, r, "%s", strerror(-r));
        }
}

/* ---- moving bytes, never blocking ---- */

/* Sends what the socket takes; returns 1 when something went out, 0 when nothing, or -errno. */
static int client_send_some(tb_client *c) {
        bool sent = false;

        while (c->out_sent < c->out.len) {
                ssize_t n = send(c->fd, c->out.data + c->out_sent, c->out.len - c->out_sent,
                                 MSG_DONTWAIT | MSG_NOSIGNAL);

                if (n >= 0) {
                        c->out_sent += (size_t)n;
                        sent = sent || n > 0;
                        continue;
                }
                if (errno == EINTR)
                        continue;
                if (errno == EAGAIN)
                        break;
                return errno == EPIPE ? -ECONNRESET : -errno;
        }
        if (c->out_sent == c->out.len)
                c->out.len = c->out_sent = 0;
        return sent;
}

/* One recv() of what is there; returns 1 when bytes came, 0 when none, or -errno. */
static int client_receive_some(tb_client *c) {
        size_t space = c->in.len < TB_READ_CHUNK_BYTES ? TB_READ_CHUNK_BYTES : c->in.len;
        ssize_t n;

        if (varlink_buffer_reserve(&c->in, space) < 0)
                return -ENOMEM;
        n = recv(c->fd, c->in.data + c->in.len, c->in.cap - c->in.len, MSG_DONTWAIT);
        if (n == 0)
                return -ECONNRESET;
        if (n < 0)
                return errno == EINTR || errno == EAGAIN ? 0 : errno == EPIPE ? -ECONNRESET : -errno;
        c->in.len += (size_t)n;
        return 1;
}

/* Whether a whole frame is buffered: 1 and its length without the NUL, 0, or -EMSGSIZE. */
static int client_next_frame(tb_client *c, size_t *ret_frame_len) {
        size_t frame_len;
        int r;

        if (c->in.len <= c->in_scanned)
                return 0;
        r = varlink_frame_next(c->in.data + c->in_scanned, c->in.len - c->in_scanned,
                               TB_REPLY_MAX_BYTES - c->in_scanned, &frame_len);
        if (r < 0)
                return -EMSGSIZE;
        if (r == 0) {
                c->in_scanned = c->in.len;
                return 0;
        }
        *ret_frame_len = c->in_scanned + frame_len;
        return 1;
}

/* Completes the oldest pending call with the reply in the first frame_len bytes of c->in. */
static int client_dispatch_frame(tb_client *c, size_t frame_len, uint64_t now) {
        const char *reason = NULL;
        ReplyFault fault = {};
        VarlinkReply reply;
        CallReply out;
        PendingCall p;
        int r;

        r = varlink_reply_parse(c->in.data, frame_len, &reply, &reason);
        varlink_buffer_consume(&c->in, frame_len + 1);
        c->in_scanned = 0;
        if (r < 0)
                return client_abort(c, -EPROTO, "malformed reply from tokenbudgetd: %s",
                                    reason ? reason : "invalid message");
        if (c->n_calls == 0 || reply.continues) {
                varlink_reply_done(&reply);
                return client_abort(c, -EPROTO, "malformed reply from tokenbudgetd: %s",
                                    c->n_calls == 0 ? "a reply to no call"
                                                    : "'continues' set on a call that did not ask for more");
        }
        c->last_io_usec = now;
        memset(&out, 0, sizeof(out));
        if (reply.error) {
                p = calls_pop(c);
                r = client_fail_reply(c, &reply);
                call_complete(c, &p, r, &out);
                varlink_reply_done(&reply);
                return 0;
        }
        r = call_types[c->calls[c->calls_head].kind].parse(c, reply.parameters, &out, &fault);
        if (r < 0) {
                varlink_reply_done(&reply);
                if (r == -ENOMEM)
                        return client_abort(c, -ENOMEM, "out of memory reading the reply from tokenbudgetd");
                return client_abort(c, -EPROTO, "malformed reply from tokenbudgetd: '%s' is missing or %s",
                                    fault.field, fault.what);
        }
        p = calls_pop(c);
        call_complete(c, &p, 0, &out);
        varlink_reply_done(&reply); /* after the callback: a generic reply's JSON text lives in it */
        return 0;
}

/* Completes every call whose reply is buffered; returns how many, or -errno after an abort. */
static int client_dispatch(tb_client *c, uint64_t now) {
        int n = 0, r;

        while (!c->closed && c->fd >= 0) {
                size_t frame_len = 0;

                r = client_next_frame(c, &frame_len);
                if (r < 0)
                        return client_abort_io(c, r);
                if (r == 0)
                        break;
                r = client_dispatch_frame(c, frame_len, now);
                if (r < 0)
                        return r;
                n++;
        }
        return n;
}

static uint64_t calls_deadline(const tb_client *c) {
        uint64_t deadline = TB_USEC_INFINITY;

        for (size_t i = 0; i < c->n_calls; i++)
                if (calls_at(c, i)->deadline_usec < deadline)
                        deadline = calls_at(c, i)->deadline_usec;
        return deadline;
}

/* Fails everything when a pending call is past its deadline (the replies come in order). */
static int client_check_timeouts(tb_client *c, uint64_t now) {
        char buf[32];

        for (size_t i = 0; i < c->n_calls; i++) {
                const PendingCall *p = calls_at(c, i);

                if (now >= p->deadline_usec)
                        return client_abort(c, -ETIMEDOUT, "tokenbudgetd did not answer within %s",
                                            format_usec(buf, p->timeout_usec));
        }
        return 0;
}

TB_EXPORT int tb_client_process(tb_client *c) {
        int did = 0, r;

        if (!c)
                return -EINVAL;
        if (c->dispatching > 0)
                return -EBUSY;
        if (c->fd < 0)
                return -ENOTCONN;
        r = client_send_some(c);
        if (r < 0) {
                r = client_abort_io(c, r);
                goto finish;
        }
        did |= r;
        if (c->n_calls > 0) {
                r = client_receive_some(c);
                if (r < 0) {
                        r = client_abort_io(c, r);
                        goto finish;
                }
                did |= r;
        }
        r = client_dispatch(c, now_usec());
        if (r < 0)
                goto finish;
        did |= r > 0;
        if (!c->closed && c->n_calls > 0)
                r = client_check_timeouts(c, now_usec());
finish:
        if (c->closed) {
                /* 0 ends the caller's "until it returns 0" loop, without its error path. */
                client_free(c);
                return 0;
        }
        return r < 0 ? r : did;
}

TB_EXPORT int tb_client_get_fd(const tb_client *c) {
        if (!c)
                return -EINVAL;
        return c->fd >= 0 ? c->fd : -ENOTCONN;
}

TB_EXPORT int tb_client_get_events(const tb_client *c) {
        if (!c)
                return -EINVAL;
        if (c->fd < 0)
                return -ENOTCONN;
        return (c->n_calls > 0 ? POLLIN : 0) | (c->out_sent < c->out.len ? POLLOUT : 0);
}

TB_EXPORT int tb_client_get_timeout(const tb_client *c, uint64_t *ret_usec) {
        uint64_t deadline;

        if (!c || !ret_usec)
                return -EINVAL;
        deadline = calls_deadline(c);
        *ret_usec = deadline;
        return deadline != TB_USEC_INFINITY;
}

TB_EXPORT unsigned tb_client_pending(const tb_client *c) {
        return c ? (unsigned)c->n_calls : 0;
}

TB_EXPORT int tb_client_wait(tb_client *c, uint64_t timeout_usec) {
        uint64_t deadline, now = now_usec();
        int events, timeout_ms = -1, r;
        struct pollfd p;

        events = tb_client_get_events(c);
        if (events <= 0)
                return events;
        deadline = calls_deadline(c);
        if (timeout_usec != TB_USEC_INFINITY && timeout_usec < TB_USEC_INFINITY - now &&
            now + timeout_usec < deadline)
                deadline = now + timeout_usec;
        if (deadline != TB_USEC_INFINITY) {
                /* Round up so that poll() never wakes just before the deadline. */
                uint64_t ms = deadline > now ? (deadline - now + USEC_PER_MSEC - 1) / USEC_PER_MSEC : 0;

                timeout_ms = ms > INT_MAX ? INT_MAX : (int)ms;
        }
        p = (struct pollfd){.fd = c->fd, .events = (short)events};
        r = poll(&p, 1, timeout_ms);
        if (r < 0)
                return errno == EINTR ? 0 : -errno;
        return r > 0;
}

/* ---- starting calls ---- */

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
 * UnknownAllocation, as they would have on the old connection.) The new
 * socket is made before the old one is closed, so its number differs.
 */
static void client_reconnect_if_closed(tb_client *c, uint64_t now) {
        struct sockaddr_un sa;
        socklen_t len;
        char byte;
        ssize_t n;
        int fd;

        if (c->n_calls > 0 || c->in.len > 0 || now - c->last_io_usec < TB_IDLE_CHECK_USEC)
                return;
        n = recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        if (n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR)))
                return;
        path_to_sockaddr(c->address, &sa, &len);
        if (socket_connect(&sa, len,
                           c->timeout_usec < TB_TIMEOUT_DEFAULT_USEC ? c->timeout_usec
                                                                     : TB_TIMEOUT_DEFAULT_USEC,
                           &fd) < 0)
                return; /* the send or receive then reports the closed connection */
        close(c->fd);
        c->fd = fd;
        c->in_scanned = 0;
        c->last_io_usec = now;
}

/* Whether a call can start on c; sets the error text when not. */
static int client_can_start(tb_client *c, const char *method) {
        if (c->fd < 0)
                return client_fail(c, -ENOTCONN,
                                   "%s: not connected to tokenbudgetd: the connection was closed after an "
                                   "earlier error; open a new handle",
                                   method ? method : "call");
        return 0;
}

/*
 * Queues the call whose message was appended to c->out from mark on; on
 * failure the message is taken back. Sends what it can at once (errors are
 * left for tb_client_process() to find).
 */
static int client_queue(tb_client *c, PendingCall *p, size_t mark, uint64_t wait_usec) {
        uint64_t now = now_usec();
        int r;

        /* A Request that may wait in the daemon's queue: its reply comes up to wait_usec later. */
        p->timeout_usec = wait_usec > TB_USEC_INFINITY - c->timeout_usec ? TB_USEC_INFINITY
                                                                         : c->timeout_usec + wait_usec;
        p->deadline_usec =
                p->timeout_usec > TB_USEC_INFINITY - now ? TB_USEC_INFINITY : now + p->timeout_usec;
        r = calls_push(c, p);
        if (r < 0) {
                c->out.len = mark;
                return client_fail(c, r, "%s: out of memory", call_method(p));
        }
        (void)client_send_some(c);
        return 0;
}

/* Before formatting: a handle the daemon closed while idle connects again. */
static void client_prepare(tb_client *c) {
        if (c->n_calls == 0)
                client_reconnect_if_closed(c, now_usec());
}

static int request_start(tb_client *c, const tb_request_params *params, tb_request_cb callback,
                         void *userdata) {
        static const tb_request_params defaults = {};
        PendingCall p = {.kind = CALL_REQUEST, .callback.request = callback, .userdata = userdata};
        size_t mark;
        int r;

        if (!params)
                params = &defaults;
        r = client_can_start(c, METHOD_REQUEST);
        if (r >= 0)
                r = request_check(c, params);
        if (r < 0)
                return r;
        client_prepare(c);
        mark = c->out.len;
        if (request_format(&c->out, params) < 0) {
                c->out.len = mark;
                return client_fail(c, -ENOMEM, "%s: out of memory", METHOD_REQUEST);
        }
        return client_queue(c, &p, mark, params->wait_usec);
}

static int report_start(tb_client *c, const tb_report_params *params, tb_report_cb callback,
                        void *userdata) {
        PendingCall p = {.kind = CALL_REPORT, .callback.report = callback, .userdata = userdata};
        size_t mark;
        int r;

        r = client_can_start(c, METHOD_REPORT);
        if (r >= 0)
                r = report_check(c, params);
        if (r < 0)
                return r;
        client_prepare(c);
        mark = c->out.len;
        if (report_format(&c->out, params) < 0) {
                c->out.len = mark;
                return client_fail(c, -ENOMEM, "%s: out of memory", METHOD_REPORT);
        }
        return client_queue(c, &p, mark, 0);
}

static int release_start(tb_client *c, const tb_release_params *params, tb_release_cb callback,
                         void *userdata) {
        PendingCall p = {.kind = CALL_RELEASE, .callback.release = callback, .userdata = userdata};
        size_t mark;
        int r;

        r = client_can_start(c, METHOD_RELEASE);
        if (r >= 0)
                r = release_check(c, params);
        if (r < 0)
                return r;
        client_prepare(c);
        mark = c->out.len;
        if (release_format(&c->out, params) < 0) {
                c->out.len = mark;
                return client_fail(c, -ENOMEM, "%s: out of memory", METHOD_RELEASE);
        }
        return client_queue(c, &p, mark, 0);
}

static int call_start(tb_client *c, const char *method, const char *parameters_json, tb_call_cb callback,
                      void *userdata) {
        PendingCall p = {.kind = CALL_GENERIC, .callback.call = callback, .userdata = userdata};
        json_object *params = NULL;
        size_t mark;
        int r;

        r = client_can_start(c, method);
        if (r >= 0)
                r = call_check(c, method, parameters_json, &params);
        if (r < 0)
                return r;
        client_prepare(c);
        mark = c->out.len;
        r = varlink_format_call(&c->out, method, params, false, false);
        json_object_put(params);
        p.method = strdup(method);
        if (r < 0 || !p.method) {
                c->out.len = mark;
                free(p.method);
                return client_fail(c, -ENOMEM, "%s: out of memory", method);
        }
        r = client_queue(c, &p, mark, 0);
        if (r < 0)
                free(p.method);
        return r;
}

TB_EXPORT int tb_request_async(tb_client *c, const tb_request_params *params, tb_request_cb callback,
                               void *userdata) {
        return c ? request_start(c, params, callback, userdata) : -EINVAL;
}

TB_EXPORT int tb_report_async(tb_client *c, const tb_report_params *params, tb_report_cb callback,
                              void *userdata) {
        return c ? report_start(c, params, callback, userdata) : -EINVAL;
}

TB_EXPORT int tb_release_async(tb_client *c, const tb_release_params *params, tb_release_cb callback,
                               void *userdata) {
        return c ? release_start(c, params, callback, userdata) : -EINVAL;
}

TB_EXPORT int tb_call_async(tb_client *c, const char *method, const char *parameters_json,
                            tb_call_cb callback, void *userdata) {
        return c ? call_start(c, method, parameters_json, callback, userdata) : -EINVAL;
}

/* ---- parsing replies ---- */

static int reply_fault(ReplyFault *ret, const char *field, const char *what) {
        *ret = (ReplyFault){field, what};
        return -EPROTO;
}

static int reply_get_uint(json_object *params, const char *field, uint64_t *ret, ReplyFault *ret_fault) {
        json_object *v = json_object_object_get(params, field);

        if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0)
                return reply_fault(ret_fault, field, "not a non-negative integer");
        *ret = (uint64_t)json_object_get_int64(v);
        return 0;
}

/* Copies a string field into ret[size]; longer strings are malformed. */
static int reply_get_string(json_object *params, const char *field, char *ret, size_t size,
                            ReplyFault *ret_fault) {
        json_object *v = json_object_object_get(params, field);
        size_t n;

        if (!json_object_is_type(v, json_type_string))
                return reply_fault(ret_fault, field, "not a string");
        n = (size_t)json_object_get_string_len(v);
        if (n == 0 || n >= size || memchr(json_object_get_string(v), '\0', n))
                return reply_fault(ret_fault, field, "not a string of the expected length");
        memcpy(ret, json_object_get_string(v), n + 1);
        return 0;
}

/*
 * A name the daemon sent for a decision or state: the value of names[] it
 * matches, else 0 (unknown to this library: a newer daemon). The name is kept
 * when it fits.
 */
static int reply_get_name(json_object *params, const char *field, const char *const *names, size_t n_names,
                          int *ret_value, char ret_name[static TB_NAME_MAX], ReplyFault *ret_fault) {
        json_object *v = json_object_object_get(params, field);
        const char *s;
        size_t len;

        if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0)
                return reply_fault(ret_fault, field, "not a non-empty string");
        s = json_object_get_string(v);
        len = (size_t)json_object_get_string_len(v);
        *ret_value = 0;
        for (size_t i = 1; i < n_names; i++)
                if (names[i] && strcmp(s, names[i]) == 0)
                        *ret_value = (int)i;
        if (len < TB_NAME_MAX && !memchr(s, '\0', len))
                memcpy(ret_name, s, len + 1);
        return 0;
}

/* The same for a name that may be absent or null: 0 and "" then. */
static int reply_get_optional_name(json_object *params, const char *field, const char *const *names,
                                   size_t n_names, int *ret_value, char ret_name[static TB_NAME_MAX],
                                   ReplyFault *ret_fault) {
        if (!json_object_object_get(params, field)) {
                *ret_value = 0;
                ret_name[0] = '\0';
                return 0;
        }
        return reply_get_name(params, field, names, n_names, ret_value, ret_name, ret_fault);
}

static const char *const decision_names[] = {
        [TB_DECISION_GRANTED] = "granted",
        [TB_DECISION_DEGRADED] = "degraded",
};

static const char *const state_names[] = {
        [TB_STATE_OK] = "ok",
        [TB_STATE_WARNING] = "warning",
        [TB_STATE_EXCEEDED] = "exceeded",
};

/*
 * priority is in every reply of a daemon that has rules; one from before
 * them does not send it, and is not malformed for that (TB_PRIORITY_UNKNOWN,
 * name "").
 */
static int parse_grant_priority(json_object *params, tb_grant *g, ReplyFault *ret_fault) {
        int priority = 0, requested = 0;

        if (reply_get_optional_name(params, VL_OUT_AGENT_REQUEST_PRIORITY, priority_names,
                                    ELEMENTSOF(priority_names), &priority, g->priority_name,
                                    ret_fault) < 0 ||
            reply_get_optional_name(params, VL_OUT_AGENT_REQUEST_REQUESTED_PRIORITY, priority_names,
                                    ELEMENTSOF(priority_names), &requested, g->requested_priority_name,
                                    ret_fault) < 0)
                return -EPROTO;
        g->priority = (tb_priority)priority;
        g->requested_priority = (tb_priority)requested;
        return 0;
}

static const char *const reason_names[] = {
        [TB_REASON_REQUEST_CAP] = "request-cap",
        [TB_REASON_BUDGET] = "budget",
        [TB_REASON_POOL_DEGRADED] = "pool-degraded",
        [TB_REASON_APPROVED] = "approved",
        [TB_REASON_POWER] = "power",
};

/* An optional integer: 0 when absent or null (a daemon from before it). */
static int reply_get_optional_uint(json_object *params, const char *field, uint64_t *ret,
                                   ReplyFault *ret_fault) {
        if (!json_object_object_get(params, field)) {
                *ret = 0;
                return 0;
        }
        return reply_get_uint(params, field, ret, ret_fault);
}

/* An optional string of any length, copied (malloc'ed into *ret); NULL when absent or null. */
static int reply_get_optional_text(json_object *params, const char *field, char **ret,
                                   ReplyFault *ret_fault) {
        json_object *v = json_object_object_get(params, field);
        size_t n;

        *ret = NULL;
        if (!v)
                return 0;
        if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0)
                return reply_fault(ret_fault, field, "not a non-empty string");
        n = (size_t)json_object_get_string_len(v);
        if (memchr(json_object_get_string(v), '\0', n))
                return reply_fault(ret_fault, field, "not a string without NUL");
        *ret = strndup(json_object_get_string(v), n);
        return *ret ? 0 : -ENOMEM;
}

/*
 * The factor a Request reply says in permille: powerFactor is a float with 3
 * decimals (the daemon keeps factors in permille), so rounding to the nearest
 * permille gives back the daemon's value. 1000 (x1.0) when absent or null (a
 * daemon from before power awareness). A factor above x1000 is nonsense,
 * refused as malformed before the conversion can overflow.
 */
static int reply_get_factor_permille(json_object *params, const char *field, uint64_t *ret,
                                     ReplyFault *ret_fault) {
        json_object *v = json_object_object_get(params, field);
        double d;

        if (!v) {
                *ret = 1000;
                return 0;
        }
        if (!json_object_is_type(v, json_type_double) && !json_object_is_type(v, json_type_int))
                return reply_fault(ret_fault, field, "not a number");
        d = json_object_get_double(v);
        if (!(d >= 0.0 && d <= 1000.0))
                return reply_fault(ret_fault, field, "not a factor from 0 to 1000");
        *ret = (uint64_t)(d * 1000.0 + 0.5);
        return 0;
}

/*
 * The 1.2 fields (the ladder) and the 1.3 ones (power): all optional on the
 * wire as far as this library goes, so that a daemon from before them is not
 * malformed (0, "" and NULL then, and a factor of 1000; suggestedMaxTokens,
 * powerState and powerFactor too, which the protocol always sends now). The
 * strings go into the handle, replacing the last grant's.
 */
static int parse_grant_ladder(tb_client *c, json_object *params, tb_grant *g, ReplyFault *ret_fault) {
        static const char *const fields[] = {
                VL_OUT_AGENT_REQUEST_SUGGESTED_MODEL,
                VL_OUT_AGENT_REQUEST_WOULD_BE,
                VL_OUT_AGENT_REQUEST_WOULD_BE_REASON,
                VL_OUT_AGENT_REQUEST_POWER_STATE,
        };
        char *strings[ELEMENTSOF(fields)] = {};
        int reason = 0, r = 0;

        _Static_assert(ELEMENTSOF(fields) == ELEMENTSOF(c->grant_strings), "one slot per string");
        if (reply_get_optional_name(params, VL_OUT_AGENT_REQUEST_REASON, reason_names,
                                    ELEMENTSOF(reason_names), &reason, g->reason_name, ret_fault) < 0 ||
            reply_get_optional_uint(params, VL_OUT_AGENT_REQUEST_WAITED_USEC, &g->waited_usec, ret_fault) <
                    0 ||
            reply_get_optional_uint(params, VL_OUT_AGENT_REQUEST_SUGGESTED_MAX_TOKENS,
                                    &g->suggested_max_tokens, ret_fault) < 0 ||
            reply_get_factor_permille(params, VL_OUT_AGENT_REQUEST_POWER_FACTOR, &g->power_factor_permille,
                                      ret_fault) < 0)
                return -EPROTO;
        g->reason = (tb_reason)reason;
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(fields); i++)
                r = reply_get_optional_text(params, fields[i], &strings[i], ret_fault);
        if (r < 0) {
                for (size_t i = 0; i < ELEMENTSOF(fields); i++)
                        free(strings[i]);
                return r;
        }
        for (size_t i = 0; i < ELEMENTSOF(fields); i++) {
                free(c->grant_strings[i]);
                c->grant_strings[i] = strings[i];
        }
        g->suggested_model = c->grant_strings[0];
        g->would_be_name = c->grant_strings[1];
        g->would_be_reason_name = c->grant_strings[2];
        g->power_state_name = c->grant_strings[3];
        return 0;
}

static int parse_grant(tb_client *c, json_object *params, CallReply *ret, ReplyFault *ret_fault) {
        tb_grant *g = &ret->grant;
        int decision = 0;

        if (reply_get_string(params, VL_OUT_AGENT_REQUEST_ALLOCATION, g->allocation, sizeof(g->allocation),
                             ret_fault) < 0 ||
            reply_get_name(params, VL_OUT_AGENT_REQUEST_DECISION, decision_names, ELEMENTSOF(decision_names),
                           &decision, g->decision_name, ret_fault) < 0 ||
            reply_get_uint(params, VL_OUT_AGENT_REQUEST_GRANTED, &g->granted, ret_fault) < 0 ||
            reply_get_uint(params, VL_OUT_AGENT_REQUEST_WARN_AT, &g->warn_at, ret_fault) < 0 ||
            reply_get_uint(params, VL_OUT_AGENT_REQUEST_HARD_LIMIT, &g->hard_limit, ret_fault) < 0 ||
            parse_grant_priority(params, g, ret_fault) < 0)
                return -EPROTO;
        g->decision = (tb_decision)decision;
        return parse_grant_ladder(c, params, g, ret_fault);
}

static int parse_report(tb_client *c, json_object *params, CallReply *ret, ReplyFault *ret_fault) {
        tb_report_reply *r = &ret->report;
        int state = 0, action = 0;

        /* action: a name with no enum (yet); absent from a daemon before it, and when nothing is done. */
        if (reply_get_name(params, VL_OUT_AGENT_REPORT_STATE, state_names, ELEMENTSOF(state_names), &state,
                           r->state_name, ret_fault) < 0 ||
            reply_get_uint(params, VL_OUT_AGENT_REPORT_USED, &r->used, ret_fault) < 0 ||
            reply_get_optional_name(params, VL_OUT_AGENT_REPORT_ACTION, NULL, 0, &action, r->action_name,
                                    ret_fault) < 0)
                return -EPROTO;
        r->state = (tb_state)state;
        return 0;
}

static int parse_release(tb_client *c, json_object *params, CallReply *ret, ReplyFault *ret_fault) {
        if (reply_get_uint(params, VL_OUT_AGENT_RELEASE_USED, &ret->release.used, ret_fault) < 0 ||
            reply_get_uint(params, VL_OUT_AGENT_RELEASE_REFUNDED, &ret->release.refunded, ret_fault) < 0)
                return -EPROTO;
        return 0;
}

static int parse_generic(tb_client *c, json_object *params, CallReply *ret, ReplyFault *ret_fault) {
        ret->json = json_object_to_json_string_ext(params,
                                                   JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
        return ret->json ? 0 : reply_fault(ret_fault, "parameters", "not printable");
}

/* ---- blocking calls: one async call, driven here until it is answered ---- */

typedef struct SyncCall {
        bool done;
        int error;
        void *ret;   /* where the reply goes; NULL: nowhere */
        size_t size; /* of *ret */
        char **ret_json;
} SyncCall;

static void sync_done(SyncCall *s, int error, const void *reply) {
        s->done = true;
        s->error = error;
        if (error >= 0 && s->ret)
                memcpy(s->ret, reply, s->size);
}

static void sync_request_cb(tb_client *c, int error, const tb_grant *reply, void *userdata) {
        sync_done(userdata, error, reply);
}

static void sync_report_cb(tb_client *c, int error, const tb_report_reply *reply, void *userdata) {
        sync_done(userdata, error, reply);
}

static void sync_release_cb(tb_client *c, int error, const tb_release_reply *reply, void *userdata) {
        sync_done(userdata, error, reply);
}

static void sync_call_cb(tb_client *c, int error, const char *reply_json, void *userdata) {
        SyncCall *s = userdata;

        s->done = true;
        s->error = error;
        if (error >= 0 && s->ret_json) {
                *s->ret_json = strdup(reply_json);
                if (!*s->ret_json)
                        s->error = client_fail(c, -ENOMEM, "%s: out of memory", "reply");
        }
}

/* A blocking call needs the handle to itself. */
static int client_check_idle(tb_client *c, const char *method) {
        if (c->dispatching > 0)
                return client_fail(c, -EBUSY, "%s: a blocking call from inside a callback", method);
        if (c->n_calls > 0)
                return client_fail(c, -EBUSY,
                                   "%s: %zu asynchronous call(s) pending on this handle: a blocking call "
                                   "waits until they are answered (tb_client_process())",
                                   method, c->n_calls);
        return 0;
}

/* Runs the handle until s is done (its timeout is the call's deadline). */
static int sync_run(tb_client *c, SyncCall *s) {
        while (!s->done) {
                int r = tb_client_process(c);

                if (r < 0 && !s->done)
                        return r;
                if (r == 0) {
                        r = tb_client_wait(c, TB_USEC_INFINITY);
                        if (r < 0 && !s->done)
                                return client_abort_io(c, r);
                }
        }
        return s->error;
}

TB_EXPORT int tb_request(tb_client *c, const tb_request_params *params, tb_grant *ret) {
        SyncCall s = {.ret = ret, .size = sizeof(*ret)};
        int r;

        if (!c || !ret)
                return -EINVAL;
        memset(ret, 0, sizeof(*ret));
        r = client_check_idle(c, METHOD_REQUEST);
        if (r >= 0)
                r = request_start(c, params, sync_request_cb, &s);
        return r < 0 ? r : sync_run(c, &s);
}

TB_EXPORT int tb_report(tb_client *c, const tb_report_params *params, tb_report_reply *ret) {
        SyncCall s = {.ret = ret, .size = sizeof(*ret)};
        int r;

        if (!c)
                return -EINVAL;
        if (ret)
                memset(ret, 0, sizeof(*ret));
        r = client_check_idle(c, METHOD_REPORT);
        if (r >= 0)
                r = report_start(c, params, sync_report_cb, &s);
        return r < 0 ? r : sync_run(c, &s);
}

TB_EXPORT int tb_release(tb_client *c, const tb_release_params *params, tb_release_reply *ret) {
        SyncCall s = {.ret = ret, .size = sizeof(*ret)};
        int r;

        if (!c)
                return -EINVAL;
        if (ret)
                memset(ret, 0, sizeof(*ret));
        r = client_check_idle(c, METHOD_RELEASE);
        if (r >= 0)
                r = release_start(c, params, sync_release_cb, &s);
        return r < 0 ? r : sync_run(c, &s);
}

TB_EXPORT int tb_call(tb_client *c, const char *method, const char *parameters_json, char **ret_reply_json) {
        SyncCall s = {.ret_json = ret_reply_json};
        int r;

        if (!c)
                return -EINVAL;
        if (ret_reply_json)
                *ret_reply_json = NULL;
        r = client_check_idle(c, method ? method : "call");
        if (r >= 0)
                r = call_start(c, method, parameters_json, sync_call_cb, &s);
        return r < 0 ? r : sync_run(c, &s);
}

/* ---- names ---- */

TB_EXPORT const char *tb_state_to_string(tb_state s) {
        return (size_t)s < ELEMENTSOF(state_names) ? state_names[s] : NULL;
}

TB_EXPORT const char *tb_decision_to_string(tb_decision d) {
        return (size_t)d < ELEMENTSOF(decision_names) ? decision_names[d] : NULL;
}

TB_EXPORT const char *tb_priority_to_string(tb_priority p) {
        return (size_t)p < ELEMENTSOF(priority_names) ? priority_names[p] : NULL;
}

TB_EXPORT const char *tb_reason_to_string(tb_reason r) {
        return (size_t)r < ELEMENTSOF(reason_names) ? reason_names[r] : NULL;
}

TB_EXPORT const char *tb_version(void) {
        return TB_VERSION;
}
