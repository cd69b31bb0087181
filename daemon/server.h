/* SPDX-License-Identifier: MIT */
/*
 * The server: the listening socket, the connected peers with their own input
 * and output buffers (plain non-blocking read/write on libevent events; no
 * bufferevents on the hot path), the ledger and the scopes of every process
 * that talks to us. It frames messages, enforces the per-client limits and
 * hands each call to dispatch.c; it settles a peer's allocations when the
 * peer goes away. A peer is never freed inside its own callback: it is marked
 * dead and freed on the next loop turn (as tmux does).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "identity.h"
#include "journal.h"
#include "ledger.h"
#include "macro.h"
#include "ratelimit.h"
#include "varlink.h"

struct event_base;
struct event;
struct json_object;

typedef struct Server Server;
typedef struct Peer Peer;
typedef struct ProcessEntry ProcessEntry;
typedef struct AllocInfo AllocInfo;
typedef struct UidCount UidCount;

/* Connections, tracked processes and queued output of one uid
 * (limits.max_connections_per_uid, max_tracked_processes_per_uid,
 * max_output_bytes_per_uid). Kept while any of them is not zero. */
struct UidCount {
        uid_t uid;
        unsigned n_connections;
        unsigned n_processes; /* process scopes tracked for it (limits.max_tracked_processes_per_uid) */
        size_t output_bytes;  /* unsent output of all its connections */
};

/* Log lines a client can cause, each rate limited on its own (log_limited()). */
typedef enum LogLimitKind {
        LOG_LIMIT_REFUSED_CONNECTION,
        LOG_LIMIT_ACCEPT_FAILED,
        LOG_LIMIT_CREDENTIALS,
        LOG_LIMIT_CLOSED,
        _LOG_LIMIT_MAX,
} LogLimitKind;

/* How an allocation was settled other than by its owner's Release. */
typedef enum SettleCause {
        SETTLE_ABANDONED, /* its connection closed */
        SETTLE_SHUTDOWN,  /* the daemon is stopping */
        SETTLE_EXPIRED,   /* no report for limits.allocation_idle_timeout_sec */
} SettleCause;

typedef enum Priority {
        PRIORITY_INTERACTIVE,
        PRIORITY_NORMAL,
        PRIORITY_BACKGROUND,
        _PRIORITY_MAX,
} Priority;

/* What the server keeps about an allocation beyond the ledger's numbers:
 * its owner and what the agent declared. Ledger userdata points here. */
struct AllocInfo {
        Peer *owner;
        LedgerAllocation *allocation;
        LIST_FIELDS(AllocInfo, allocs); /* the owner's list */
        Priority priority;
        uint64_t estimate;                      /* what the agent asked for, before clamping */
        uint64_t last_report_usec;              /* grant or last Report, for the expiry sweep */
        const char *agent, *task_class, *model; /* into strings[], NULL when not given */
        char strings[];
};

/* A process we have seen: its scope, and how many connections and open
 * allocations refer to it. Unreferenced entries linger until their windows
 * are empty, so reconnecting does not reset a process's budget. */
struct ProcessEntry {
        pid_t pid;
        uint64_t start_time;
        LedgerScope *scope;
        UidCount *owner; /* the uid that first connected from it */
        unsigned n_peers;
        unsigned n_allocations;
        bool lingering;
        LIST_FIELDS(ProcessEntry, processes); /* all entries, newest first */
        LIST_FIELDS(ProcessEntry, lingering); /* unreferenced entries */
};

struct Peer {
        Server *server;
        int fd;
        struct event *read_event;
        struct event *write_event;
        VarlinkBuffer in;
        size_t in_scanned; /* bytes at the front of in known to hold no NUL */
        VarlinkBuffer out;
        size_t out_offset; /* bytes of out already written */
        Identity identity;
        ProcessEntry *process;
        UidCount *uid_count;
        size_t output_counted;    /* of the unsent output, what uid_count->output_bytes holds */
        uint64_t last_input_usec; /* connect or last bytes received, for limits.idle_timeout_sec */
        AllocInfo *allocs;
        unsigned n_allocations;
        bool dead;
        bool closing;        /* reads no more; closed once its queued replies are out (or it stalls) */
        bool current_oneway; /* the call being dispatched wants no reply */
        LIST_FIELDS(Peer, peers);
        LIST_FIELDS(Peer, dead);
};

struct Server {
        struct event_base *base;
        Config config;
        char *config_path;    /* NULL: built-in defaults */
        bool config_optional; /* config_path is the default file: missing means built-in defaults */
        unsigned fd_limit;    /* RLIMIT_NOFILE at start, that max_connections must fit in */
        uint64_t start_usec;
        uid_t euid;
        Ledger *ledger;
        LedgerScope *global;
        int listen_fd;
        bool owns_socket_file;
        char *socket_path;
        struct event *listen_event;
        struct event *accept_retry_event;
        struct event *reap_event;
        struct event *sweep_event; /* idle connections, expired allocations; only while peers exist */
        struct event *signal_events[3];
        Peer *peers, *dead_peers;
        unsigned n_peers;
        struct Hashmap *processes_by_pid;
        struct Hashmap *connections_by_uid; /* uid -> UidCount */
        ProcessEntry *processes, *lingering, *lingering_tail;
        unsigned n_processes;
        const char *proc_root;
        int exit_code;
        bool stopping; /* SIGTERM came: what is still open is settled as shutdown */
        Journal *journal;
        struct Notify *notify;
        char *status_note; /* why the last reload was rejected; prefixed to STATUS= */
        uint64_t n_granted, n_refused, n_abandoned, n_expired;
        uint64_t dead_scan_usec; /* last search for tracked processes that have exited */
        RateLimit log_limits[_LOG_LIMIT_MAX];
        struct json_tokener *tokener;          /* reused for every call */
        VarlinkBuffer scratch_in, scratch_out; /* lent to the peer being served */
};

/* config_optional: config_path is the default file, read when it exists (also
 * when it appears after start: on reload). */
int server_new(struct event_base *base, Config *config, const char *config_path, bool config_optional,
               Server **ret);
Server *server_free(Server *s);
/* Takes a listening socket: from systemd (LISTEN_FDS) or created at socket_path. */
int server_listen(Server *s, const char *socket_path);
int server_run(Server *s);

uint64_t now_usec(void);

/* File descriptors kept out of max_connections: stdio, the listening socket,
 * the event loop's own, the journal and notify sockets, and the few opened
 * for a moment (the config file on reload, /proc/PID/stat at accept, a
 * connection accepted only to be refused). So the watchdog, the journal, a
 * reload and an admin still work however many clients connect. */
#define SERVER_RESERVED_FDS 64u
/* 0 when c->max_connections fits fd_limit with SERVER_RESERVED_FDS to spare;
 * else -EMFILE and a "PATH: ..." line in *ret_error. */
int server_check_fd_limit(const Config *c, unsigned fd_limit, const char *path, char **ret_error);
/* Reads and parses a configuration file (config_parse() on its contents);
 * errors as config_parse() gives them, one "FILE:LINE: message" per line. */
int config_load_file(const char *path, Config *ret, char **ret_errors);

/* For dispatch.c: queue a reply or an error for the call being handled (nothing
 * when it was oneway). parameters is consumed (json_object_put) and may be NULL. */
int peer_reply(Peer *p, struct json_object *parameters);
int peer_error(Peer *p, const char *error, struct json_object *parameters);
/* A reply written straight into the output, for the hot methods: keys and
 * string values are trusted (fixed words, hex ids: nothing to escape);
 * string NULL means the number is written. */
typedef struct ReplyField {
        const char *key;
        const char *string;
        uint64_t number;
} ReplyField;
int peer_reply_fields(Peer *p, const ReplyField *fields, size_t n_fields);
int peer_invalid_parameter(Peer *p, const char *parameter);
/* Settles and frees one allocation of p (used by Release and on disconnect). */
int server_settle(Server *s, AllocInfo *info, uint64_t input_tokens, uint64_t output_tokens, uint64_t now,
                  uint64_t *ret_used, uint64_t *ret_refunded);
/* Settles an allocation its owner did not release (connection gone, daemon
 * stopping, expired), at its last reported usage, with the journal event. */
void server_settle_unreleased(Server *s, AllocInfo *info, SettleCause cause, uint64_t now);
AllocInfo *server_find_allocation(Server *s, const char *id);
/* Something STATUS= shows changed (allocations, usage). */
void server_changed(Server *s);
/* Journal events about one allocation; the Event is filled from the owner's
 * identity, the declared labels and the ledger's numbers. */
void server_emit_allocation(Server *s, EventKind kind, const AllocInfo *info, uint64_t now,
                            const char *decision, const char *reason, const char *fmt, ...) _printf_(7, 8);
/* Utilisation of the global pool in permille: the highest of its limited
 * windows' (used + reserved) / limit and of reserved / in-flight cap. */
unsigned server_global_utilisation_permille(Server *s, uint64_t now);
void allocation_format_id(uint64_t id, char buf[static 17]);
const char *priority_to_string(Priority p);
int priority_from_string(const char *s);
