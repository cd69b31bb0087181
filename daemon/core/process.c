/* SPDX-License-Identifier: MIT */
/*
 * Process scopes (see process.h). Entries sit in a pid hashmap and in a list
 * of all entries, newest first; unreferenced ones also in a lingering list
 * whose tail is the oldest, swept first. Per-uid counts live in a second
 * hashmap, kept while non-zero.
 */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "hashmap.h"
#include "macro.h"
#include "process.h"

struct ProcessEntry {
        pid_t pid;
        uint64_t start_time;
        uid_t uid; /* the uid that first connected from it, charged for it */
        LedgerScope *scope;
        unsigned n_connections;
        unsigned n_allocations;
        bool lingering;
        LIST_FIELDS(ProcessEntry, all);       /* newest first */
        LIST_FIELDS(ProcessEntry, lingering); /* unreferenced, newest first */
};

struct ProcessTable {
        Ledger *ledger;
        ProcessTableLimits limits;
        ProcessAliveFunc alive;
        void *userdata;
        Hashmap *by_pid;     /* pid -> ProcessEntry */
        Hashmap *uid_counts; /* uid -> (uintptr_t) entries created by it */
        ProcessEntry *all, *lingering, *lingering_tail;
        unsigned n;
        uint64_t dead_scan_usec; /* last search for lingering processes that exited; 0: never */
};

ProcessTable *process_table_new(Ledger *ledger, const ProcessTableLimits *limits, ProcessAliveFunc alive,
                                void *userdata) {
        ProcessTable *t = calloc(1, sizeof(*t));

        if (!t)
                return NULL;
        t->ledger = ledger;
        t->limits = *limits;
        t->alive = alive;
        t->userdata = userdata;
        t->by_pid = hashmap_new();
        t->uid_counts = hashmap_new();
        if (!t->by_pid || !t->uid_counts)
                return process_table_free(t);
        return t;
}

static unsigned uid_count(const ProcessTable *t, uid_t uid) {
        return (unsigned)(uintptr_t)hashmap_get(t->uid_counts, uid);
}

static int uid_count_add(ProcessTable *t, uid_t uid, int delta) {
        unsigned n = uid_count(t, uid);

        assert(delta > 0 || n > 0);
        n = (unsigned)((int)n + delta);
        if (n == 0) {
                hashmap_remove(t->uid_counts, uid);
                return 0;
        }
        if (delta > 0 && n == 1)
                return hashmap_put(t->uid_counts, uid, (void *)(uintptr_t)n);
        /* The key exists: replace its value in place. */
        hashmap_remove(t->uid_counts, uid);
        return hashmap_put(t->uid_counts, uid, (void *)(uintptr_t)n);
}

static void lingering_remove(ProcessTable *t, ProcessEntry *e) {
        if (!e->lingering)
                return;
        if (t->lingering_tail == e)
                t->lingering_tail = e->lingering_prev;
        LIST_REMOVE(lingering, t->lingering, e);
        e->lingering = false;
}

static void entry_free(ProcessTable *t, ProcessEntry *e) {
        lingering_remove(t, e);
        LIST_REMOVE(all, t->all, e);
        hashmap_remove(t->by_pid, (uint64_t)e->pid);
        (void)ledger_scope_free(t->ledger, e->scope);
        (void)uid_count_add(t, e->uid, -1);
        t->n--;
        free(e);
}

ProcessTable *process_table_free(ProcessTable *t) {
        if (!t)
                return NULL;
        while (t->all)
                entry_free(t, t->all);
        hashmap_free(t->by_pid);
        hashmap_free(t->uid_counts);
        free(t);
        return NULL;
}

void process_table_set_limits(ProcessTable *t, const ProcessTableLimits *limits) {
        t->limits = *limits;
        for (ProcessEntry *e = t->all; e; e = e->all_next)
                ledger_scope_set_limits(e->scope, &t->limits.scope);
}

/* Drops lingering entries whose windows have emptied, oldest first; stops at
 * the first that still holds usage (newer ones are unlikely to be idle). */
static void sweep_idle(ProcessTable *t, uint64_t now) {
        while (t->lingering_tail && ledger_scope_is_idle(t->lingering_tail->scope, now))
                entry_free(t, t->lingering_tail);
}

/* Frees lingering entries whose process has exited: a process budget is
 * keyed by pid and start time, so no process can spend from them again and
 * dropping them loses nothing (global and other scopes keep their usage). */
static void forget_exited(ProcessTable *t, uint64_t now) {
        ProcessEntry *prev;

        if (!t->alive ||
            (t->dead_scan_usec != 0 && now - t->dead_scan_usec < PROCESS_DEAD_SCAN_INTERVAL_USEC))
                return;
        t->dead_scan_usec = now ?: 1;
        for (ProcessEntry *e = t->lingering_tail; e; e = prev) {
                prev = e->lingering_prev;
                if (!t->alive(e->pid, e->start_time, t->userdata))
                        entry_free(t, e);
        }
}

/* Whether uid may have one more entry: -EUSERS when the table is full,
 * -ETOOMANYREFS when the uid has its share. A uid's share keeps one user's
 * sleeping processes from locking every other user out. */
static int admit(ProcessTable *t, uid_t uid, uint64_t now) {
        bool full, share;

        full = t->n >= t->limits.max_tracked;
        share = uid_count(t, uid) >= t->limits.max_tracked_per_uid;
        if (full || share) {
                forget_exited(t, now);
                full = t->n >= t->limits.max_tracked;
                share = uid_count(t, uid) >= t->limits.max_tracked_per_uid;
        }
        return full ? -EUSERS : share ? -ETOOMANYREFS : 0;
}

static int entry_new(ProcessTable *t, pid_t pid, uint64_t start_time, uid_t uid, bool admin, uint64_t now,
                     ProcessEntry **ret) {
        char name[32];
        ProcessEntry *e;
        int r;

        sweep_idle(t, now);
        if (!admin) {
                r = admit(t, uid, now);
                if (r < 0)
                        return r;
        }
        e = calloc(1, sizeof(*e));
        if (!e)
                return -ENOMEM;
        snprintf(name, sizeof(name), "process:%d", (int)pid);
        e->scope = ledger_scope_new(t->ledger, name, &t->limits.scope);
        if (!e->scope) {
                free(e);
                return -ENOMEM;
        }
        e->pid = pid;
        e->start_time = start_time;
        e->uid = uid;
        r = hashmap_put(t->by_pid, (uint64_t)pid, e);
        if (r >= 0) {
                r = uid_count_add(t, uid, +1);
                if (r < 0)
                        hashmap_remove(t->by_pid, (uint64_t)pid);
        }
        if (r < 0) {
                (void)ledger_scope_free(t->ledger, e->scope);
                free(e);
                return r;
        }
        LIST_PREPEND(all, t->all, e);
        t->n++;
        *ret = e;
        return 0;
}

int process_table_connect(ProcessTable *t, pid_t pid, uint64_t start_time, uid_t uid, bool admin,
                          uint64_t now, ProcessEntry **ret) {
        ProcessEntry *e = hashmap_get(t->by_pid, (uint64_t)pid);

        if (e && e->start_time != start_time && e->n_connections == 0 && e->n_allocations == 0) {
                entry_free(t, e);
                e = NULL;
        }
        if (!e) {
                int r = entry_new(t, pid, start_time, uid, admin, now, &e);
                if (r < 0)
                        return r;
        }
        lingering_remove(t, e);
        e->n_connections++;
        *ret = e;
        return 0;
}

/* An entry nobody refers to is freed when it holds no usage, else kept
 * (lingering) so a reconnect keeps its budget. */
static void entry_release(ProcessTable *t, ProcessEntry *e, uint64_t now) {
        if (e->n_connections > 0 || e->n_allocations > 0)
                return;
        if (ledger_scope_is_idle(e->scope, now)) {
                entry_free(t, e);
                return;
        }
        LIST_PREPEND(lingering, t->lingering, e);
        if (!t->lingering_tail)
                t->lingering_tail = e;
        e->lingering = true;
}

void process_table_disconnect(ProcessTable *t, ProcessEntry *e, uint64_t now) {
        assert(e->n_connections > 0);
        e->n_connections--;
        entry_release(t, e, now);
}

void process_entry_allocation_added(ProcessEntry *e) {
        e->n_allocations++;
}

void process_table_allocation_removed(ProcessTable *t, ProcessEntry *e, uint64_t now) {
        assert(e->n_allocations > 0);
        e->n_allocations--;
        entry_release(t, e, now);
}

uid_t process_entry_uid(const ProcessEntry *e) {
        return e->uid;
}

pid_t process_entry_pid(const ProcessEntry *e) {
        return e->pid;
}

uint64_t process_entry_start_time(const ProcessEntry *e) {
        return e->start_time;
}

LedgerScope *process_entry_scope(const ProcessEntry *e) {
        return e->scope;
}

unsigned process_entry_n_connections(const ProcessEntry *e) {
        return e->n_connections;
}

unsigned process_entry_n_allocations(const ProcessEntry *e) {
        return e->n_allocations;
}

bool process_entry_is_lingering(const ProcessEntry *e) {
        return e->lingering;
}

ProcessEntry *process_table_next(const ProcessTable *t, const ProcessEntry *e) {
        return e ? e->all_next : t->all;
}

unsigned process_table_size(const ProcessTable *t) {
        return t->n;
}

unsigned process_table_uid_count(const ProcessTable *t, uid_t uid) {
        return uid_count(t, uid);
}
