/* SPDX-License-Identifier: MIT */
/*
 * Process scopes: the ledger scope of every process that talks to the
 * daemon, keyed by pid and told apart from a later process with the same pid
 * by its start time. An entry is referenced by the connections from the
 * process and by its open allocations; unreferenced entries linger until
 * their windows are empty, so reconnecting does not reset a process's budget.
 *
 * The table is bounded (max_tracked in total, max_tracked_per_uid per uid;
 * admins are exempt). Usage is never dropped to make room: when full, only
 * lingering entries whose process has exited are dropped (no process can
 * ever spend from them again); whether one has exited the shell answers
 * through a callback, asked at most once per DEAD_SCAN_INTERVAL_USEC.
 *
 * Pure: no clock (now is a parameter), no I/O of its own.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ledger.h"

typedef struct ProcessTable ProcessTable;
typedef struct ProcessEntry ProcessEntry;

/* Whether the process pid that started at start_time still runs. */
typedef bool (*ProcessAliveFunc)(pid_t pid, uint64_t start_time, void *userdata);

typedef struct ProcessTableLimits {
        uint64_t max_tracked;         /* entries in total */
        uint64_t max_tracked_per_uid; /* entries first created by one uid */
        LedgerLimits scope;           /* each process's budget */
} ProcessTableLimits;

/* A flood of connections at the limit must not make the shell read /proc
 * for every lingering process each time: one search per second at most. */
#define PROCESS_DEAD_SCAN_INTERVAL_USEC UINT64_C(1000000)

ProcessTable *process_table_new(Ledger *ledger, const ProcessTableLimits *limits, ProcessAliveFunc alive,
                                void *userdata);
/* Frees every entry and its scope. NULL-safe; returns NULL. */
ProcessTable *process_table_free(ProcessTable *t);
/* New limits; existing scopes take the new per-process budget at once. */
void process_table_set_limits(ProcessTable *t, const ProcessTableLimits *limits);

/*
 * The entry for a connection from pid (started at start_time) of uid, created
 * on first sight, with one connection reference taken. A pid now held by a
 * different process (other start time) gets a fresh entry when the old one is
 * unreferenced; if the old one is still referenced (a socket inherited across
 * exec), the two share it. Returns 0, -ENOMEM, -EUSERS (the table is full of
 * live processes) or -ETOOMANYREFS (uid has its share); admin uids are never
 * refused.
 */
int process_table_connect(ProcessTable *t, pid_t pid, uint64_t start_time, uid_t uid, bool admin,
                          uint64_t now, ProcessEntry **ret);
/* Drops a connection reference. */
void process_table_disconnect(ProcessTable *t, ProcessEntry *e, uint64_t now);
/* Open allocations referring to the entry (they keep it alive). */
void process_entry_allocation_added(ProcessEntry *e);
void process_table_allocation_removed(ProcessTable *t, ProcessEntry *e, uint64_t now);

pid_t process_entry_pid(const ProcessEntry *e);
/* The uid that first connected from the process. */
uid_t process_entry_uid(const ProcessEntry *e);
uint64_t process_entry_start_time(const ProcessEntry *e);
LedgerScope *process_entry_scope(const ProcessEntry *e);
unsigned process_entry_n_connections(const ProcessEntry *e);
unsigned process_entry_n_allocations(const ProcessEntry *e);
bool process_entry_is_lingering(const ProcessEntry *e);

/* All entries, newest first: e NULL gives the first, then the one after e. */
ProcessEntry *process_table_next(const ProcessTable *t, const ProcessEntry *e);
unsigned process_table_size(const ProcessTable *t);
/* Entries the uid created and that are still tracked. */
unsigned process_table_uid_count(const ProcessTable *t, uid_t uid);
