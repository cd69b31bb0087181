/* SPDX-License-Identifier: MIT */
/*
 * The durable store: the ledger's committed usage, the allocations open at
 * the last commit, the settled-allocation history with hourly aggregates,
 * persistent limits, breaker states and a few meta values, in one SQLite
 * database (WAL mode) in the state directory. Shell code: SQLite and files,
 * no libevent, no clock (every time is a parameter). It decides nothing: the
 * manager stages what the iteration's calls did and commits at the commit
 * point.
 *
 * How it is used (the daemon):
 *  - At start: store_open(path, sync, flags, &s, &reason); on failure log the
 *    reason (it names the file and what to do) and exit: never start from
 *    zero silently. Then store_ledger_key() and store_meta_get_u64("serial")
 *    for allocation ids unique across restarts; store_load_usage(since =
 *    now - longest window) to rebuild the sliding windows;
 *    store_load_allocations() to settle what was open at a crash (at its last
 *    acknowledged usage, as abandoned: a history row each, then
 *    store_drop_allocation()); store_load_limits() and store_load_breakers().
 *  - Per message (no SQL): store_add_usage() for committed tokens,
 *    store_put_allocation() when an allocation is granted,
 *    store_put_allocation_usage() when it reports (only its totals),
 *    store_drop_allocation() + store_add_history() when it is settled,
 *    store_add_history() for a refusal, store_meta_put_u64("serial", hwm).
 *  - At the commit point (PeerSetOps.commit_pending = store_pending,
 *    .commit = store_commit): everything staged since the last commit is
 *    written in ONE transaction, as one row of the commit log, then the
 *    replies leave. The log is applied to the tables in larger steps (a
 *    commit with STORE_APPLY_OPS staged, store_apply() when idle, before a
 *    history query and at stop): an allocation granted and settled between
 *    two applies is never written to the allocations table, and each page
 *    of the tables is written once per apply instead of once per commit. On failure (-ENOSPC, -EIO, -EROFS,
 *    ...) what was staged is kept and retried at the next commit; the
 *    daemon goes on enforcing from memory and reports store_error_message()
 *    (journal, STATUS=) until a commit succeeds again. The replies may still
 *    leave: the caller decides (durability degraded).
 *  - When idle: store_prune_step() with a small max_rows (a few ms each).
 *  - Admin: store_history_query() for io.tokenbudget.admin.History;
 *    store_put_limit()/store_delete_limit() for set --persistent and
 *    store_put_breaker()/store_delete_breaker() are written at once, each in
 *    its own transaction (rare; the caller answers after it returns).
 *
 * Schema version 3 (PRAGMA user_version; STORE_SCHEMA_VERSION; version 1
 * had usage and hourly keyed scope first, with indexes on the time;
 * version 2 had no log):
 *  meta(key TEXT PRIMARY KEY, value)  -- "ledger_key" (16 random bytes, hex,
 *      created once), "serial" (the allocation serial high-water mark), and
 *      whatever later versions need.
 *  usage(second, scope, tokens) PK(second, scope) WITHOUT ROWID -- committed
 *      tokens per scope per realtime second (time first: one commit's rows
 *      share a leaf page; pruning and the restore read a key range).
 *  allocations(id PK (the 64-bit wire id as SQLite's signed integer), granted_usec, granted, reservation,
 * estimate, input, output, priority, pid, uid, comm, agent, class, model, unit, scopes)
 *      -- open at the last commit, with their last acknowledged usage; scopes
 *      is the scope names joined by '\n'.
 *  history(id INTEGER PRIMARY KEY, realtime_usec, uid, user, unit, comm,
 *      agent, class, model, priority, estimate, granted, input, output,
 *      outcome TEXT, count, scopes) -- one row per settled allocation, or a
 *      refusal (count: identical refusals the caller folded into one row);
 *      indexes on (realtime_usec) and (uid, realtime_usec).
 *  hourly(hour, scope, requests, refused, tokens_in, tokens_out, granted)
 *      PK(hour, scope) WITHOUT ROWID -- per scope per realtime hour (hour =
 *      realtime seconds / 3600), updated at commit from the staged history.
 *  limits(scope, field, value) PK(scope, field) WITHOUT ROWID -- runtime
 *      limits made with budgetctl set --persistent, one row per setting
 *      (field "minute", "hour", "day", "in_flight", ...: the caller's names).
 *  estimators(uid, class, seen_usec, state) PK(uid, class) WITHOUT ROWID --
 *      what the estimator learned per class (state: the daemon's JSON;
 *      seen_usec realtime of the last sample; saved every minute and at stop).
 *  log(seq INTEGER PRIMARY KEY, ops BLOB) -- the commit log: per commit what
 *      its iteration staged, encoded (store.c: kind byte, varints, strings
 *      with a NUL); replayed in seq order at open, deleted when applied.
 *  breakers(name, disc, state, breaches, cooldown_usec, until_usec, owner)
 *      PK(name, disc) WITHOUT ROWID -- open and half-open runaway breakers
 *      (until_usec realtime; owner the uid, -1 shared; version 1 had no owner).
 * A later version appends its SQL to the migration table in store.c; each
 * step runs in its own transaction; a database of a newer version refuses to
 * open.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define STORE_SCHEMA_VERSION 3
/* A commit applies the log once this many operations are staged (see
 * store_commit()): about 2,000 agent cycles, a few milliseconds of SQL. */
#define STORE_APPLY_OPS 4096
/* Scope names per allocation or history row (the core has a handful). */
#define STORE_SCOPES_MAX 32
/* What may be staged between commits (usage cells + allocation changes +
 * history rows + meta values): about 200 bytes each, so at most ~200 MB
 * while commits fail. Past it store_add_*() return -ENOBUFS and stage
 * nothing: that much is lost to the database (counted, store_lost()), never
 * to the daemon's memory of the windows. A commit that succeeds empties it. */
#define STORE_STAGED_MAX (1u << 20)

typedef struct Store Store;

typedef enum StoreSync {
        STORE_SYNC_NORMAL, /* synchronous=NORMAL: survives a daemon crash; a power cut may lose the last
                              commits */
        STORE_SYNC_FULL,   /* synchronous=FULL: an fsync per commit; survives a power cut */
        _STORE_SYNC_MAX,
} StoreSync;

typedef enum StoreOpenFlags {
        /* PRAGMA quick_check at open: reads the whole file (finds a truncated
         * or damaged database before it is used, at a cost of its size). */
        STORE_OPEN_CHECK = 1 << 0,
} StoreOpenFlags;

typedef enum StoreOutcome {
        STORE_OUTCOME_RELEASED,
        STORE_OUTCOME_ABANDONED,
        STORE_OUTCOME_TERMINATED,
        STORE_OUTCOME_EXPIRED,
        STORE_OUTCOME_SHUTDOWN,
        STORE_OUTCOME_REFUSED,
        _STORE_OUTCOME_MAX,
} StoreOutcome;

/* Strings are borrowed (copied when staged); NULL reads back as NULL. */
typedef struct StoreAllocation {
        uint64_t id;
        uint64_t granted_usec; /* realtime */
        uint64_t granted, reservation, estimate;
        uint64_t input, output; /* last acknowledged */
        int32_t priority;
        int64_t pid;
        uint32_t uid;
        const char *comm, *agent, *class_name, *model, *unit;
        const char *const *scopes; /* names without '\n' */
        size_t n_scopes;
} StoreAllocation;

typedef struct StoreHistoryRow {
        uint64_t realtime_usec;
        uint32_t uid;
        const char *user, *unit, *comm, *agent, *class_name, *model;
        int32_t priority;
        uint64_t estimate, granted, input, output;
        StoreOutcome outcome;
        uint64_t count; /* 0 reads as 1 */
        const char *const *scopes;
        size_t n_scopes;
} StoreHistoryRow;

typedef enum StoreGroup {
        STORE_GROUP_USER, /* by uid (key: the last user name seen, key_uid the uid) */
        STORE_GROUP_UNIT,
        STORE_GROUP_AGENT,
        STORE_GROUP_CLASS,
        STORE_GROUP_MODEL,
        STORE_GROUP_HOUR, /* key_usec: start of the hour (realtime) */
        STORE_GROUP_DAY,  /* key_usec: start of the day in the caller's zone (utc_offset_sec) */
        _STORE_GROUP_MAX,
} StoreGroup;

typedef struct StoreQuery {
        uint64_t since_usec, until_usec; /* realtime, [since, until); until 0: no end */
        bool filter_uid;
        uint32_t uid;
        StoreGroup group;
        int32_t utc_offset_sec; /* for STORE_GROUP_DAY */
} StoreQuery;

typedef struct StoreHistoryGroup {
        const char *key; /* NULL for rows without it (and for hour/day) */
        uint32_t key_uid;
        uint64_t key_usec;
        uint64_t requests; /* settled allocations */
        uint64_t refused;  /* refused requests (sum of counts) */
        uint64_t tokens_in, tokens_out, granted;
} StoreHistoryGroup;

typedef struct StoreBreaker {
        const char *name;
        uint64_t disc;
        const char *state; /* "closed", "open", "half-open" */
        uint32_t breaches;
        uint64_t cooldown_usec, until_usec; /* until_usec realtime: when it turns (or turned) half-open */
        int64_t owner;                      /* the uid it belongs to, -1 shared */
} StoreBreaker;

/* Callbacks return 0 to go on, negative to stop (the load returns it). */
typedef int (*StoreUsageFunc)(void *userdata, const char *scope, uint64_t second, uint64_t tokens);
typedef int (*StoreAllocationFunc)(void *userdata, const StoreAllocation *a);
typedef int (*StoreLimitFunc)(void *userdata, const char *scope, const char *field, int64_t value);
typedef int (*StoreBreakerFunc)(void *userdata, const StoreBreaker *b);
typedef int (*StoreEstimatorFunc)(void *userdata, uint32_t uid, const char *class_name, uint64_t seen_usec,
                                  const char *state);
typedef int (*StoreHistoryFunc)(void *userdata, const StoreHistoryGroup *g);

/*
 * Opens (or creates) the database at path; its directory must exist.
 * Returns 0, or -errno with *ret_reason (to free) naming the file and what to
 * do: -ENOENT (no directory), -EACCES/-EROFS (unreadable or read-only),
 * -EBADMSG (not a database, damaged, or not ours), -EPROTONOSUPPORT (written
 * by a newer version), -ENOMEM, -EIO.
 */
int store_open(const char *path, StoreSync sync, unsigned flags, Store **ret, char **ret_reason);
/* Closes; what is staged and not committed is dropped. NULL-safe. */
Store *store_free(Store *s);

const char *store_path(const Store *s);
StoreSync store_sync(const Store *s);
const char *store_sync_to_string(StoreSync sync); /* "normal", "full" */
const char *store_outcome_to_string(StoreOutcome o);
int store_outcome_from_string(const char *s); /* StoreOutcome or -EINVAL */

/* Staging (memory only). 0, -EINVAL (bad argument), -ENOBUFS (cap), -ENOMEM. */
int store_add_usage(Store *s, const char *scope, uint64_t realtime_sec, uint64_t tokens);
int store_put_allocation(Store *s, const StoreAllocation *a);
/* The allocation's acknowledged totals, for a row put by store_put_allocation()
 * (in this commit or an earlier one): only input and output are written. */
int store_put_allocation_usage(Store *s, uint64_t id, uint64_t input, uint64_t output);
int store_drop_allocation(Store *s, uint64_t id);
int store_add_history(Store *s, const StoreHistoryRow *h);
int store_meta_put_u64(Store *s, const char *key, uint64_t value);
/* What the estimator learned of (uid, class), as text the caller made
 * (seen_usec: realtime of its last sample); written at the next commit. */
int store_put_estimator(Store *s, uint32_t uid, const char *class_name, uint64_t seen_usec,
                        const char *state);

/* Whether anything was staged since the last commit (the commit point's
 * commit_pending): it is not durable until store_commit(). */
bool store_pending(const Store *s);
/* Operations staged and not yet applied to the tables (committed to the
 * log or not). */
size_t store_staged(const Store *s);
/* Operations staged since the last commit: not durable yet (Status'
 * "pending"). */
size_t store_unlogged(const Store *s);
uint64_t store_lost(const Store *s); /* refused with -ENOBUFS since open */

/*
 * The commit point. What was staged since the last commit is appended to
 * the commit log as one row, in one transaction (one to three pages of WAL,
 * whatever the iteration did); once STORE_APPLY_OPS operations are staged,
 * instead, everything staged is applied to the tables and the log emptied
 * in one transaction. Either way it is durable when this returns 0. -errno
 * (-ENOSPC, -EIO, -EROFS, -EBUSY, -ENOMEM, -EBADMSG): nothing of it
 * written, everything kept for the next commit; store_error_message() says
 * what failed until a commit succeeds.
 */
int store_commit(Store *s);
/* Applies everything staged (committed or not) to the tables and empties
 * the log, in one transaction: when idle, before a query, at stop. The log
 * rows left when the daemon died are replayed by store_open(). 0 or -errno
 * as store_commit(). */
int store_apply(Store *s);
uint64_t store_applies(const Store *s); /* successful applies (also counted in commits) */
/* The STORE_APPLY_OPS of this store (tests: small to apply often). */
void store_set_apply_ops(Store *s, size_t ops);
/* The last failure in words (naming the file), or NULL when the last
 * commit (or open) succeeded. */
const char *store_error_message(const Store *s);
uint64_t store_commits(const Store *s); /* successful commits and applies with something to write */

/* The ledger's 16-byte key, created at the first open. */
void store_ledger_key(const Store *s, uint8_t ret[16]);
/* The committed value (or the staged one), -ENOENT when there is none. */
int store_meta_get_u64(Store *s, const char *key, uint64_t *ret);

/* Loading, for restore at start: number of rows given to the callback, or
 * -errno. Each applies what is staged first (store_apply()). */
int store_load_usage(Store *s, uint64_t since_sec, StoreUsageFunc cb, void *userdata);
int store_load_allocations(Store *s, StoreAllocationFunc cb, void *userdata);
int store_load_limits(Store *s, StoreLimitFunc cb, void *userdata);
int store_load_breakers(Store *s, StoreBreakerFunc cb, void *userdata);
/* Deletes the classes last seen before seen_since_usec (realtime), then
 * calls cb for each kept one. */
int store_load_estimators(Store *s, uint64_t seen_since_usec, StoreEstimatorFunc cb, void *userdata);

/* Written at once, in their own transaction: 0 or -errno. field NULL in
 * store_delete_limit deletes every setting of the scope. */
int store_put_limit(Store *s, const char *scope, const char *field, int64_t value);
int store_delete_limit(Store *s, const char *scope, const char *field);
int store_put_breaker(Store *s, const StoreBreaker *b);
int store_delete_breaker(Store *s, const char *name, uint64_t disc);

/* Groups in key order (hour/day ascending), or -errno (-EINVAL for a bad
 * query). Committed rows only. */
int store_history_query(Store *s, const StoreQuery *q, StoreHistoryFunc cb, void *userdata);

/*
 * Deletes at most max_rows rows in one transaction: history and hourly rows
 * before history_before_usec, usage rows before usage_before_sec (realtime).
 * Returns how many (0: nothing older is left), or -errno. About 0.2 ms per
 * step of 128 rows here (test-store prints it), so a caller runs it with
 * max_rows of a few hundred per idle turn.
 */
int store_prune_step(Store *s, uint64_t history_before_usec, uint64_t usage_before_sec, size_t max_rows);
