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
#include "varlink.h"

struct event_base;
struct event;
struct json_object;

typedef struct Server Server;
typedef struct Peer Peer;
typedef struct ProcessEntry ProcessEntry;
typedef struct AllocInfo AllocInfo;

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
        AllocInfo *allocs;
        unsigned n_allocations;
        bool dead;
        bool current_oneway; /* the call being dispatched wants no reply */
        LIST_FIELDS(Peer, peers);
        LIST_FIELDS(Peer, dead);
};

struct Server {
        struct event_base *base;
        Config config;
        char *config_path; /* NULL: built-in defaults */
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
        struct event *signal_events[3];
        Peer *peers, *dead_peers;
        unsigned n_peers;
        struct Hashmap *processes_by_pid;
        struct Hashmap *connections_by_uid; /* uid -> UidCount */
        ProcessEntry *processes, *lingering, *lingering_tail;
        unsigned n_processes;
        const char *proc_root;
        int exit_code;
        Journal *journal;
        struct Notify *notify;
        char *status_note; /* why the last reload was rejected; prefixed to STATUS= */
        uint64_t n_granted, n_refused, n_abandoned;
        struct json_tokener *tokener;          /* reused for every call */
        VarlinkBuffer scratch_in, scratch_out; /* lent to the peer being served */
};

int server_new(struct event_base *base, Config *config, const char *config_path, Server **ret);
Server *server_free(Server *s);
/* Takes a listening socket: from systemd (LISTEN_FDS) or created at socket_path. */
int server_listen(Server *s, const char *socket_path);
int server_run(Server *s);

uint64_t now_usec(void);
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
