/* SPDX-License-Identifier: MIT */
/*
 * libtokenbudget: the C client of tokenbudgetd, the LLM token budget daemon.
 *
 * An agent asks before it spends (tb_request), reports cumulative usage as it
 * spends (tb_report) and releases when done (tb_release). Every call blocks
 * until the daemon answers or the handle's timeout passes (default 5 s).
 *
 * Errors: functions return 0 (or a count) on success and a negative errno on
 * failure; tb_client_error() then describes the failure in words, including the
 * Varlink error name and its parameters, e.g.
 *   "io.tokenbudget.agent.BudgetExhausted: scope=global limit=100000 used=99000
 *    reserved=0 retryAfterUsec=41000000"
 * Mapping of daemon errors: BudgetExhausted -EDQUOT, TooManyAllocations
 * -EUSERS, UnknownAllocation -ENOENT, PermissionDenied
 * -EACCES, InvalidParameter -EINVAL, InterfaceNotFound/MethodNotFound/
 * MethodNotImplemented -EOPNOTSUPP, any other daemon error -EBADE. Transport:
 * -ETIMEDOUT, -ECONNRESET (daemon closed the connection), -EPROTO (malformed
 * reply), connect() errors as they are (-ENOENT, -ECONNREFUSED, -EACCES).
 * After -ETIMEDOUT, -ECONNRESET or -EPROTO the connection is closed and every
 * further call returns -ENOTCONN: open a new handle. The daemon closes a
 * connection that holds no allocation and sends nothing for its
 * limits.idle_timeout_sec (15 min by default); a handle notices that at its
 * next call and connects again on its own, so an idle agent sees nothing.
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

typedef struct tb_client tb_client;

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
/* Closes the connection and frees the handle. NULL-safe; returns NULL. */
tb_client *tb_client_close(tb_client *c);
/* Timeout for each call, in milliseconds; 0 or negative waits forever. */
void tb_client_set_timeout(tb_client *c, int timeout_ms);
/* The address connected to. */
const char *tb_client_address(const tb_client *c);
/* What the last failed call on this handle was about; "" when none failed. */
const char *tb_client_error(const tb_client *c);
/* The Varlink error name of the last failed call, or NULL for transport errors. */
const char *tb_client_error_name(const tb_client *c);
/*
 * The value of parameter key of the last daemon error reply (e.g. "parameter"
 * of InvalidParameter, "scope" of BudgetExhausted): strings as they are,
 * integers in decimal (other JSON values as their JSON text); NULL when that
 * reply had no such parameter or the last failure was not a daemon error.
 * Valid until the next failed call on the handle.
 */
const char *tb_client_error_parameter(const tb_client *c, const char *key);
/* For BudgetExhausted: the daemon's retryAfterUsec of the last failed call; 0 otherwise. */
uint64_t tb_client_retry_after_usec(const tb_client *c);

typedef enum tb_priority {
        TB_PRIORITY_DEFAULT = 0, /* not sent: the daemon's default ("normal") */
        TB_PRIORITY_INTERACTIVE,
        TB_PRIORITY_NORMAL,
        TB_PRIORITY_BACKGROUND,
} tb_priority;

typedef struct tb_request_params {
        int64_t estimate;       /* tokens; < 0: not sent, the daemon's default_estimate applies */
        const char *task_class; /* NULL: not sent */
        const char *agent;      /* NULL: not sent */
        const char *model;      /* NULL: not sent */
        tb_priority priority;
} tb_request_params;

#define TB_ALLOCATION_ID_MAX 64

typedef struct tb_grant {
        char allocation[TB_ALLOCATION_ID_MAX];
        char decision[16]; /* "granted" or "degraded" */
        uint64_t granted;
        uint64_t warn_at;
        uint64_t hard_limit;
} tb_grant;

typedef enum tb_state {
        TB_STATE_OK,
        TB_STATE_WARNING,
        TB_STATE_EXCEEDED,
} tb_state;

/* params may be NULL (everything default). */
int tb_request(tb_client *c, const tb_request_params *params, tb_grant *ret);
/* Cumulative totals since the grant. ret_state and ret_used may be NULL. */
int tb_report(tb_client *c, const char *allocation, uint64_t input_tokens, uint64_t output_tokens,
              tb_state *ret_state, uint64_t *ret_used);
/* Final totals; pass NULL for either to keep the last reported value. ret_* may be NULL. */
int tb_release(tb_client *c, const char *allocation, const uint64_t *input_tokens,
               const uint64_t *output_tokens, uint64_t *ret_used, uint64_t *ret_refunded);

/*
 * Any method, for other tools (budgetctl): parameters_json is a JSON object or
 * NULL; on success *ret_reply_json (may be NULL) is the reply's parameters as a
 * malloc'ed JSON text. Daemon errors map as above.
 */
int tb_call(tb_client *c, const char *method, const char *parameters_json, char **ret_reply_json);

const char *tb_state_to_string(tb_state s);
const char *tb_version(void);

#ifdef __cplusplus
}
#endif

#endif
