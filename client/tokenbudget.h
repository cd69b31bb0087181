/* SPDX-License-Identifier: MIT */
/*
 * libtokenbudget: the C client of tokenbudgetd, the LLM token budget daemon.
 *
 * An agent asks before it spends (tb_request), reports cumulative usage as it
 * spends (tb_report) and releases when done (tb_release). Each call exists
 * twice: blocking (it returns when the daemon answered or the handle's timeout
 * passed, 5 s by default) and asynchronous (tb_request_async() and friends
 * queue the call and return; an event loop drives the handle with
 * tb_client_get_fd(), tb_client_get_events(), tb_client_get_timeout() and
 * tb_client_process(), which runs the call's callback when the answer is in).
 *
 * ABI and versioning. The library is libtokenbudget.so.1 and every symbol is
 * versioned (TOKENBUDGET_1, see client/libtokenbudget.sym). Within soname 1
 * changes are additive only: new functions (in a new version node, e.g.
 * TOKENBUDGET_1.1, so a program that needs them fails at load time, naming the
 * version, rather than at a call), new fields carved out of the reserved space
 * of the structs below, new enum values. Nothing declared here changes its
 * size, layout, signature or meaning; a change that must is a new soname. So
 * a program built against soname 1 runs on every later 1.x library.
 *
 * Structs that grow. Every params and reply struct has a fixed size with a
 * reserved tail (uint64_t reserved[]), and:
 * - In params, zero means "not sent" for every optional field (the daemon's
 *   default applies; the required ones, e.g. Report's totals, are always sent
 *   and there zero is a value). So initialise params with designated
 *   initialisers ({.agent = "x"}) or memset, and a program built against an
 *   older header sends nothing for fields it does not know.
 * - The library refuses (-EINVAL, and tb_client_error() names the slot) params
 *   whose reserved space is not zero: a program built against a newer header,
 *   setting a field this library does not know, fails loudly instead of having
 *   the field ignored.
 * - The library zero-fills the whole reply struct first, so a field this
 *   library does not fill reads as zero ("not given").
 * - A new field takes whole uint64_t slots from the front of the reserved
 *   array: integers are uint64_t; a pointer or an enum is declared in an
 *   anonymous union with a uint64_t, so it takes one slot on every
 *   architecture. String fields of replies point into the handle (valid
 *   until the next call completes on it, or for an async call until its
 *   callback returns): copy what you keep.
 * - Enums: zero is "unknown" in replies (a value this library version does
 *   not know; the name the daemon sent is kept beside it) and "not sent" in
 *   params.
 * Pointers in params are only read during the call that takes them: an async
 * call formats its message before it returns.
 *
 * Times are microseconds in uint64_t: durations are relative, deadlines are
 * absolute CLOCK_MONOTONIC; UINT64_MAX means "never" (no timeout, no
 * deadline).
 *
 * Deferred replies (since 1.2). A Request with wait_usec waits in the daemon's
 * queue up to wait_usec for room, and one whose estimate is escalated under a
 * rule with on_escalate = "hold" waits for an admin (budgetctl approve/deny)
 * up to the daemon's escalation.timeout_sec (5 min by default): the reply
 * comes when it is decided. A Request's deadline is the handle's timeout plus
 * its wait_usec, which covers the queue; a caller that may be held for an
 * admin sets a handle timeout longer than escalation.timeout_sec, or
 * TB_USEC_INFINITY (the daemon answers Escalated with reason "timeout" when
 * nobody decides). While one call waits, the calls queued behind it on the
 * same handle wait too (replies come in order): use another handle, or the
 * async calls, to go on meanwhile.
 *
 * Power (since 1.3). The daemon scales what each priority may spend by the
 * machine's power state (on battery, low battery, memory pressure, hot,
 * critical temperature: its power.policy): a grant says the state and the
 * factor applied to its window limits and request cap (tb_grant's
 * power_state_name and power_factor_permille; reason TB_REASON_POWER when the
 * scaled cap shrank it). A state may pause a priority: such a Request waits in
 * the queue when it asked to (wait_usec; it is served when the state changes,
 * or fails with QueueTimeout), else it is refused with PowerPaused (-EBUSY).
 *
 * Errors: functions return 0 (or a count) on success and a negative errno on
 * failure; tb_client_error() then describes the failure in words, including the
 * Varlink error name and its parameters, e.g.
 *   "io.tokenbudget.agent.BudgetExhausted: scope=global limit=100000 used=99000
 *    reserved=0 retryAfterUsec=41000000"
 * Mapping of daemon errors: BudgetExhausted and QueueTimeout (no room, even
 * after waiting wait_usec) -EDQUOT; TooManyAllocations, TooManyScopes and
 * QueueFull -EUSERS (a cap on how many the daemon keeps for the caller);
 * Escalated (the estimate is above escalate_multiplier x max_request_tokens:
 * refused by policy, denied by an admin or not decided in time) -EFBIG;
 * CircuitOpen (a runaway breaker of the caller is open) -EAGAIN;
 * PowerPaused (the power state pauses the request's priority: "state" names
 * the state, retryAfterUsec is 0 because nobody can tell when the battery is
 * charged or the machine cools; ask with wait_usec to queue instead) -EBUSY
 * (since 1.3; a 1.2 library returns -EBADE for it), told apart from the
 * -EBUSY of a blocking call on a busy handle (below) by tb_client_error_name(),
 * which is NULL for that one;
 * tb_client_error_name() tells errors of one errno apart and
 * tb_client_error_parameter() gives their parameters ("scope", "limit",
 * "reason", "state", ...); UnknownAllocation and the admin interface's UnknownScope
 * and UnknownRequest -ENOENT; PermissionDenied -EACCES, InvalidParameter -EINVAL,
 * InterfaceNotFound/MethodNotFound/MethodNotImplemented -EOPNOTSUPP, any
 * other daemon error (e.g. ReloadRejected) -EBADE. Transport:
 * -ETIMEDOUT, -ECONNRESET (daemon closed the connection), -EPROTO (malformed
 * reply), connect() errors as they are (-ENOENT, -ECONNREFUSED, -EACCES).
 * After -ETIMEDOUT, -ECONNRESET or -EPROTO the connection is closed (every
 * call still pending on it fails with the same error) and every further call
 * returns -ENOTCONN: open a new handle. A blocking call while async calls are
 * pending, or from inside a callback, returns -EBUSY. The daemon closes a
 * connection that holds no allocation and sends nothing for its
 * limits.idle_timeout_sec (15 min by default); a handle notices that when a
 * call starts with none pending and connects again on its own, so an idle
 * agent sees nothing (an event loop sees a new descriptor, see
 * tb_client_get_fd()).
 *
 * Thread safety: a handle is not thread-safe; use one handle per thread (or
 * lock around every call). Distinct handles are independent. Allocations
 * belong to the connection: another handle, even in the same process, gets
 * UnknownAllocation (as for an id that does not exist); closing the handle makes the daemon settle its open
 * allocations at the usage reported so far.
 */
#ifndef TOKENBUDGET_H
#define TOKENBUDGET_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TB_SYSTEM_SOCKET "/run/tokenbudget/io.tokenbudget"
#define TB_SOCKET_ENV    "TOKENBUDGET_SOCKET"

/* The timeout of a handle until tb_client_set_timeout_usec() changes it. */
#define TB_TIMEOUT_DEFAULT_USEC UINT64_C(5000000)
/* No timeout, no deadline. */
#define TB_USEC_INFINITY UINT64_MAX

typedef struct tb_client tb_client;

/* ---- connecting ---- */

/*
 * Connects to the daemon. address is a socket path or "unix:PATH"; when NULL,
 * $TOKENBUDGET_SOCKET, then the system socket, then the user-session socket
 * ($XDG_RUNTIME_DIR/tokenbudget/io.tokenbudget) are tried, in that order (the
 * next is tried when one does not exist or refuses). On failure returns a
 * negative errno and, when ret_error is not NULL, a malloc'ed description
 * naming the address(es) tried.
 */
int tb_client_open(const char *address, tb_client **ret, char **ret_error);
/*
 * The socket paths tb_client_open(address) would try, in its order, as
 * connect() sees them ("unix:PATH;key=value" becomes PATH; "@name" is an
 * abstract socket): a malloc'ed NULL-terminated array (free it with
 * tb_strv_free()). Returns the count, or -EINVAL/-ENAMETOOLONG when an address
 * is not a socket address, or -ENOMEM.
 */
int tb_client_addresses(const char *address, char ***ret_paths);
/* Frees a NULL-terminated array of strings and the strings. NULL-safe; returns NULL. */
char **tb_strv_free(char **strv);
/*
 * Closes the connection and frees the handle. NULL-safe; returns NULL. Calls
 * still pending are dropped without running their callbacks (free what their
 * userdata holds yourself). Allowed inside a callback: no further callback
 * runs, and the handle is freed when tb_client_process() returns (0 then;
 * the handle is gone, do not call it again).
 */
tb_client *tb_client_close(tb_client *c);
/*
 * The timeout of each call started from now on, in microseconds, from its
 * start to its answer: 0 restores the default (TB_TIMEOUT_DEFAULT_USEC),
 * TB_USEC_INFINITY waits for ever. Returns 0, or -EINVAL for a NULL handle.
 */
int tb_client_set_timeout_usec(tb_client *c, uint64_t timeout_usec);
/* The path connected to (as tb_client_addresses() gives it). */
const char *tb_client_address(const tb_client *c);

/* ---- what the last failed call was about ---- */

/* In words; "" when none failed. Inside a failing call's callback: that call. */
const char *tb_client_error(const tb_client *c);
/* The Varlink error name of the last failed call, or NULL for transport and argument errors. */
const char *tb_client_error_name(const tb_client *c);
/*
 * The value of parameter key of the last daemon error reply (e.g. "parameter"
 * of InvalidParameter, "scope" of BudgetExhausted): strings as they are,
 * integers in decimal (other JSON values as their JSON text); NULL when that
 * reply had no such parameter or the last failure was not a daemon error.
 * Valid until the next failed call on the handle.
 */
const char *tb_client_error_parameter(const tb_client *c, const char *key);
/* For BudgetExhausted, QueueTimeout and CircuitOpen: the daemon's retryAfterUsec of the last
 * failed call (when it expects room, or the breaker to let a request through); 0 otherwise,
 * and for PowerPaused, whose end nobody can foresee (its "state" parameter says what pauses it:
 * tb_client_error_parameter(c, "state")). */
uint64_t tb_client_retry_after_usec(const tb_client *c);

/* ---- the agent interface: params and replies ---- */

typedef enum tb_priority {
        TB_PRIORITY_DEFAULT = 0, /* params: not sent (the matching rule's priority, else "normal") */
        TB_PRIORITY_UNKNOWN = 0, /* replies: none sent, or a priority this library does not know */
        TB_PRIORITY_INTERACTIVE,
        TB_PRIORITY_NORMAL,
        TB_PRIORITY_BACKGROUND,
} tb_priority;

typedef struct tb_request_params {
        uint64_t estimate; /* tokens the task expects to use; 0: not sent (the daemon's default_estimate) */
        const char *task_class; /* "class" on the wire; NULL: not sent */
        const char *agent;      /* NULL: not sent */
        const char *model;      /* NULL: not sent */
        tb_priority priority;   /* TB_PRIORITY_DEFAULT: not sent */
        /* Since 1.2 (reserved[0..2] before; a 1.1 library refuses them as unknown). */
        uint64_t min_tokens; /* the least the task can use; 0: not sent (the estimate: no shrinking) */
        /* How long the request may wait for room, in microseconds; 0: not sent
         * (refused at once when it does not fit). The reply is deferred while it
         * waits, so the call's deadline is the handle's timeout plus wait_usec. */
        uint64_t wait_usec;
        uint64_t prompt_tokens; /* the prompt's size, known before the call; 0: not sent */
        uint64_t reserved[13];  /* must be zero */
} tb_request_params;

#define TB_ALLOCATION_ID_MAX 64
/* The longest name of a decision or state kept in a reply, with its NUL. */
#define TB_NAME_MAX 20

typedef enum tb_decision {
        TB_DECISION_UNKNOWN = 0, /* a decision this library does not know: see decision_name */
        TB_DECISION_GRANTED,
        TB_DECISION_DEGRADED, /* less than the estimate was granted */
} tb_decision;

/* Why less than the estimate was granted (the daemon's reason). Since 1.2. */
typedef enum tb_reason {
        TB_REASON_NONE = 0,      /* not degraded, not sent, or a reason this library does not know */
        TB_REASON_REQUEST_CAP,   /* "request-cap": the estimate was above max_request_tokens */
        TB_REASON_BUDGET,        /* "budget": only this much fitted (at least min_tokens) */
        TB_REASON_POOL_DEGRADED, /* "pool-degraded": a budget is past breaker.pool_threshold */
        TB_REASON_APPROVED,      /* "approved": an admin approved fewer tokens than the estimate */
        TB_REASON_POWER,         /* "power": the power factor lowered the request cap (since 1.3) */
} tb_reason;

typedef struct tb_grant {
        char allocation[TB_ALLOCATION_ID_MAX];
        uint64_t granted;    /* tokens */
        uint64_t warn_at;    /* granted x the warn multiplier */
        uint64_t hard_limit; /* granted x the hard multiplier: what is reserved */
        tb_decision decision;
        char decision_name[TB_NAME_MAX]; /* as the daemon sent it; "" when longer */
        /* The priority granted: the one asked for (or the matching rule's
         * default), or the rule's max_priority when the request asked for more.
         * TB_PRIORITY_UNKNOWN with the daemon's word in priority_name from a
         * newer daemon; with priority_name "" from an older one, which does
         * not say. */
        union {
                tb_priority priority;
                uint64_t priority_slot;
        };
        union {
                char priority_name[TB_NAME_MAX]; /* as the daemon sent it; "" when longer or not sent */
                uint64_t priority_name_slots[3];
        };
        /* What the request asked for when the rule's max_priority lowered it
         * (the daemon's requestedPriority); TB_PRIORITY_UNKNOWN with
         * requested_priority_name "" when it was not lowered. */
        union {
                tb_priority requested_priority;
                uint64_t requested_priority_slot;
        };
        union {
                char requested_priority_name[TB_NAME_MAX]; /* as sent; "" when longer or not sent */
                uint64_t requested_priority_name_slots[3];
        };
        /* Since 1.2 (reserved[0..8] before): */
        /* Why it was degraded; TB_REASON_NONE with the daemon's word in
         * reason_name for a reason this library does not know, with reason_name
         * "" when it was not degraded (or the daemon does not say). */
        union {
                tb_reason reason;
                uint64_t reason_slot;
        };
        union {
                char reason_name[TB_NAME_MAX]; /* as sent; "" when longer or not sent */
                uint64_t reason_name_slots[3];
        };
        /* How long the reply was deferred (queued for room, or held for an
         * admin), in microseconds; 0 when it was answered at once. */
        uint64_t waited_usec;
        /* What to pass as the model's max output tokens: granted minus
         * prompt_tokens (at least 1); 0 from a daemon that does not say. */
        uint64_t suggested_max_tokens;
        /* When degraded and the model asked for is in model_tiers: the next
         * cheaper tier. Points into the handle; NULL when not sent. */
        union {
                const char *suggested_model;
                uint64_t suggested_model_slot;
        };
        /* Dry run (enforce = false): the estimate was granted, and this is what
         * enforcing would have answered: "granted", "degraded", "queued",
         * "held" or an error's name ("BudgetExhausted", "Escalated",
         * "CircuitOpen", "QueueFull", "PowerPaused"), with its reason
         * ("budget", "request-cap", "power", "policy", "queued-ahead",
         * "power-paused", ...). Both point into the handle; NULL when not a
         * dry run (or not sent). */
        union {
                const char *would_be_name;
                uint64_t would_be_name_slot;
        };
        union {
                const char *would_be_reason_name;
                uint64_t would_be_reason_name_slot;
        };
        /* Since 1.3 (reserved[0..1] of 1.2): the machine's power state when it
         * was granted, "ac" (no condition: nothing scaled), "battery",
         * "low-battery", "memory-pressure", "hot" or "critical" (the most
         * severe active one; a newer daemon may send others). Points into
         * the handle; NULL from a daemon that does not say (one from before
         * power awareness, or a 1.2 library, which does not fill it). */
        union {
                const char *power_state_name;
                uint64_t power_state_name_slot;
        };
        /* The factor the state applies to this priority's window limits and
         * request cap, in permille: 1000 is x1.0 (nothing scaled), 500 x0.5.
         * 1000 from a daemon that does not say; 0 with power_state_name NULL
         * from a 1.2 library, which does not fill it. 0 with a state: the
         * priority is paused, which only a dry run grants (would_be_name
         * "PowerPaused"). */
        uint64_t power_factor_permille;
        uint64_t reserved[5]; /* zero; future hints (predicted, predictedOutput, samples, ...) */
} tb_grant;

/* Cumulative totals since the grant (not deltas): both are always sent. */
typedef struct tb_report_params {
        const char *allocation; /* required */
        uint64_t input_tokens;
        uint64_t output_tokens;
        uint64_t reserved[16]; /* must be zero */
} tb_report_params;

typedef enum tb_state {
        TB_STATE_UNKNOWN = 0, /* a state this library does not know: see state_name */
        TB_STATE_OK,
        TB_STATE_WARNING,  /* used has reached warn_at */
        TB_STATE_EXCEEDED, /* used has reached hard_limit */
} tb_state;

typedef struct tb_report_reply {
        uint64_t used; /* tokens */
        tb_state state;
        char state_name[TB_NAME_MAX]; /* as the daemon sent it; "" when longer */
        /* Since 1.2 (reserved[0..2] before): what the daemon does about it,
         * "terminate" when the hard limit was reached under a rule with
         * on_hard_limit = "terminate" (the process is being stopped: SIGTERM,
         * then SIGKILL after terminate_grace_sec); "" when nothing (or longer). */
        union {
                char action_name[TB_NAME_MAX];
                uint64_t action_name_slots[3];
        };
        uint64_t reserved[13]; /* zero */
} tb_report_reply;

/* Final totals. 0: not sent, the last reported total stands (totals never go down, so nothing is lost). */
typedef struct tb_release_params {
        const char *allocation; /* required */
        uint64_t input_tokens;
        uint64_t output_tokens;
        uint64_t reserved[16]; /* must be zero */
} tb_release_params;

typedef struct tb_release_reply {
        uint64_t used;         /* tokens, final */
        uint64_t refunded;     /* reserved tokens returned to the budgets */
        uint64_t reserved[16]; /* zero */
} tb_release_reply;

/* ---- blocking calls ---- */

/* params may be NULL (everything default). *ret is zero-filled first. */
int tb_request(tb_client *c, const tb_request_params *params, tb_grant *ret);
/* ret may be NULL. */
int tb_report(tb_client *c, const tb_report_params *params, tb_report_reply *ret);
/* ret may be NULL. */
int tb_release(tb_client *c, const tb_release_params *params, tb_release_reply *ret);

/*
 * Any method, for other tools (budgetctl): parameters_json is a JSON object or
 * NULL; on success *ret_reply_json (may be NULL) is the reply's parameters as a
 * malloc'ed JSON text (NULL on failure). Daemon errors map as above.
 */
int tb_call(tb_client *c, const char *method, const char *parameters_json, char **ret_reply_json);

/* ---- asynchronous calls and the event loop ---- */

/*
 * Completion callbacks: error is 0 or the negative errno the blocking call
 * would have returned, and tb_client_error() & co. describe it while the
 * callback runs. reply is never NULL; it is all zeros on error (reply_json of
 * tb_call_async() is NULL then) and valid until the callback returns. A
 * callback may start calls and may close the handle; a blocking call or
 * tb_client_process() from inside it returns -EBUSY.
 */
typedef void (*tb_request_cb)(tb_client *c, int error, const tb_grant *reply, void *userdata);
typedef void (*tb_report_cb)(tb_client *c, int error, const tb_report_reply *reply, void *userdata);
typedef void (*tb_release_cb)(tb_client *c, int error, const tb_release_reply *reply, void *userdata);
typedef void (*tb_call_cb)(tb_client *c, int error, const char *reply_json, void *userdata);

/*
 * Queue a call and return at once; several may be in flight on one handle
 * (Varlink answers in order, so callbacks run in the order of the calls).
 * Returns 0 when the call was queued: its callback (may be NULL) then runs
 * exactly once, from tb_client_process() (unless the handle is closed first).
 * Returns a negative errno when it was not (bad params -EINVAL, a closed
 * connection -ENOTCONN, -ENOMEM): no callback runs. Each call's timeout is the
 * handle's when it is queued (a Request's plus its wait_usec), counted from
 * then.
 */
int tb_request_async(tb_client *c, const tb_request_params *params, tb_request_cb callback, void *userdata);
int tb_report_async(tb_client *c, const tb_report_params *params, tb_report_cb callback, void *userdata);
int tb_release_async(tb_client *c, const tb_release_params *params, tb_release_cb callback, void *userdata);
int tb_call_async(tb_client *c, const char *method, const char *parameters_json, tb_call_cb callback,
                  void *userdata);

/*
 * The socket to watch, or -ENOTCONN once the connection is closed. It can be
 * a different descriptor after a call was started (the handle reconnects when
 * the daemon closed it while idle, and the new one never has the old number):
 * an event loop that registers the descriptor (epoll, libevent, sd-event)
 * compares tb_client_get_fd() with the one it registered after starting calls
 * and registers the new one when they differ.
 */
int tb_client_get_fd(const tb_client *c);
/*
 * What to wait for: POLLIN while calls are pending, POLLOUT while part of a
 * call is unsent (values of <poll.h>); 0 when nothing is pending: then do not
 * watch the descriptor at all (poll() and epoll report a hang-up even for no
 * events, and the daemon may close an idle connection). -ENOTCONN once the
 * connection is closed.
 */
int tb_client_get_events(const tb_client *c);
/*
 * The earliest deadline of the pending calls (the oldest call's, unless the
 * timeout was shortened since) as an absolute CLOCK_MONOTONIC time in
 * microseconds: returns 1 and sets *ret_usec; returns 0 with *ret_usec =
 * TB_USEC_INFINITY when nothing pending has a deadline. Call
 * tb_client_process() when it passes.
 */
int tb_client_get_timeout(const tb_client *c, uint64_t *ret_usec);
/*
 * Does what can be done without blocking: sends what the socket takes, reads
 * what is there, runs the callbacks of the answered calls, and fails the calls
 * past their deadline (-ETIMEDOUT; then the connection is closed). Returns >0
 * when it did something (call it again until it returns 0, then wait), 0 when
 * there was nothing to do, or a negative errno when the connection failed
 * (after running every pending call's callback with that error) or was closed
 * before (-ENOTCONN).
 */
int tb_client_process(tb_client *c);
/*
 * Waits up to timeout_usec (TB_USEC_INFINITY: no limit), and never past the
 * deadline of a pending call, for the events of tb_client_get_events().
 * Returns 1 when they came, 0 on timeout, a signal or nothing to wait for,
 * or a negative errno. For programs without an event loop of their own.
 */
int tb_client_wait(tb_client *c, uint64_t timeout_usec);
/* How many calls are pending (queued and not yet answered). */
unsigned tb_client_pending(const tb_client *c);

/* ---- names ---- */

/* "ok", "warning", "exceeded"; NULL for TB_STATE_UNKNOWN and values this library does not know. */
const char *tb_state_to_string(tb_state s);
/* "granted", "degraded"; NULL for TB_DECISION_UNKNOWN and values this library does not know. */
const char *tb_decision_to_string(tb_decision d);
/* "interactive", "normal", "background"; NULL for TB_PRIORITY_UNKNOWN (TB_PRIORITY_DEFAULT) and
 * values this library does not know. Since TOKENBUDGET_1.1. */
const char *tb_priority_to_string(tb_priority p);
/* "request-cap", "budget", "pool-degraded", "approved", "power" (since 1.3); NULL for
 * TB_REASON_NONE and values this library does not know. Since TOKENBUDGET_1.2. These are the
 * reasons a grant was shrunk; a refusal's reasons ("power-paused", "queued-ahead", ...) come as
 * words only (would_be_reason_name, tb_client_error_parameter(c, "reason")). */
const char *tb_reason_to_string(tb_reason r);
/* The library's version, e.g. "0.1.0". */
const char *tb_version(void);

/* ---- scope-bound cleanup (GCC and clang): TB_CLEANUP_CLIENT tb_client *c = NULL; ---- */

static inline void tb_client_closep(tb_client **c) {
        if (c && *c)
                *c = tb_client_close(*c);
}

static inline void tb_strv_freep(char ***strv) {
        if (strv && *strv)
                *strv = tb_strv_free(*strv);
}

#if defined(__GNUC__) || defined(__clang__)
#define TB_CLEANUP_CLIENT __attribute__((cleanup(tb_client_closep)))
#define TB_CLEANUP_STRV   __attribute__((cleanup(tb_strv_freep)))
#endif

#ifdef __cplusplus
}
#endif

#endif
