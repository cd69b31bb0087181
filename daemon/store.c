/* SPDX-License-Identifier: MIT */
/*
 * The durable store (see store.h): staging in memory, one transaction per
 * commit through statements prepared once (SQLITE_PREPARE_PERSISTENT), the
 * schema's migrations, and the checks at open that make bad state loud.
 * Staged usage and hourly aggregates are small open-addressing tables keyed
 * (scope, second) and (scope, hour), so a scope charged many times in one
 * commit is one upsert of each; allocation changes are one entry per id (the
 * latest wins, a drop replaces a put, a Report only updates the totals);
 * history rows and meta values are plain arrays.
 */
#define _GNU_SOURCE
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <sqlite3.h>

#include "hashmap.h"
#include "macro.h"
#include "store.h"
#include "varlink.h"

#define ERROR_MAX 1024
/* How long a statement waits for a lock another process holds (the sqlite3
 * shell reading the file): short, since it blocks the loop. */
#define BUSY_TIMEOUT_MSEC 50
#define USEC_PER_HOUR     UINT64_C(3600000000)
#define USEC_PER_DAY      UINT64_C(86400000000)

/* ---- schema ---- */

/* migrations[n] takes a database from version n to n + 1, in one
 * transaction. Append; never edit a released step. */
static const char *const migrations[] = {
        /* 0 -> 1 */
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value);"
        "CREATE TABLE usage(scope TEXT NOT NULL, second INTEGER NOT NULL, tokens INTEGER NOT NULL,"
        " PRIMARY KEY(scope, second)) WITHOUT ROWID;"
        "CREATE INDEX usage_second ON usage(second);"
        "CREATE TABLE allocations(id INTEGER PRIMARY KEY, granted_usec INTEGER, granted INTEGER,"
        " reservation INTEGER, estimate INTEGER, input INTEGER, output INTEGER, priority INTEGER,"
        " pid INTEGER, uid INTEGER, comm TEXT, agent TEXT, class TEXT, model TEXT, unit TEXT,"
        " scopes TEXT);"
        "CREATE TABLE history(id INTEGER PRIMARY KEY, realtime_usec INTEGER NOT NULL, uid INTEGER,"
        " user TEXT, unit TEXT, comm TEXT, agent TEXT, class TEXT, model TEXT, priority INTEGER,"
        " estimate INTEGER, granted INTEGER, input INTEGER, output INTEGER, outcome TEXT NOT NULL,"
        " count INTEGER NOT NULL DEFAULT 1, scopes TEXT);"
        "CREATE INDEX history_time ON history(realtime_usec);"
        "CREATE INDEX history_uid_time ON history(uid, realtime_usec);"
        "CREATE TABLE hourly(scope TEXT NOT NULL, hour INTEGER NOT NULL, requests INTEGER NOT NULL,"
        " refused INTEGER NOT NULL, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,"
        " granted INTEGER NOT NULL, PRIMARY KEY(scope, hour)) WITHOUT ROWID;"
        "CREATE INDEX hourly_hour ON hourly(hour);"
        "CREATE TABLE limits(scope TEXT NOT NULL, field TEXT NOT NULL, value INTEGER NOT NULL,"
        " PRIMARY KEY(scope, field)) WITHOUT ROWID;"
        "CREATE TABLE breakers(name TEXT NOT NULL, disc INTEGER NOT NULL, state TEXT NOT NULL,"
        " breaches INTEGER NOT NULL, cooldown_usec INTEGER NOT NULL, until_usec INTEGER NOT NULL,"
        " PRIMARY KEY(name, disc)) WITHOUT ROWID;",
        /* 1 -> 2: usage and hourly keyed by time first, so that what one
         * commit adds (every scope's row of this second, of this hour) lands
         * on one leaf page instead of a page per scope, and the time indexes
         * are the keys themselves. */
        "CREATE TABLE usage_v2(second INTEGER NOT NULL, scope TEXT NOT NULL, tokens INTEGER NOT NULL,"
        " PRIMARY KEY(second, scope)) WITHOUT ROWID;"
        "INSERT INTO usage_v2(second, scope, tokens) SELECT second, scope, tokens FROM usage;"
        "DROP TABLE usage;"
        "ALTER TABLE usage_v2 RENAME TO usage;"
        "CREATE TABLE hourly_v2(hour INTEGER NOT NULL, scope TEXT NOT NULL, requests INTEGER NOT NULL,"
        " refused INTEGER NOT NULL, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,"
        " granted INTEGER NOT NULL, PRIMARY KEY(hour, scope)) WITHOUT ROWID;"
        "INSERT INTO hourly_v2(hour, scope, requests, refused, tokens_in, tokens_out, granted)"
        " SELECT hour, scope, requests, refused, tokens_in, tokens_out, granted FROM hourly;"
        "DROP TABLE hourly;"
        "ALTER TABLE hourly_v2 RENAME TO hourly;"
        /* and the uid a breaker belongs to (-1: shared), as the table had it */
        "ALTER TABLE breakers ADD COLUMN owner INTEGER NOT NULL DEFAULT -1;"
        /* what the estimator learned per class (issue 13) */
        "CREATE TABLE estimators(uid INTEGER NOT NULL, class TEXT NOT NULL, seen_usec INTEGER NOT NULL,"
        " state TEXT NOT NULL, PRIMARY KEY(uid, class)) WITHOUT ROWID;",
        /* 2 -> 3: the commit log. A commit point appends one row holding what
         * its iteration staged, in a compact encoding (1 to 3 pages written
         * instead of a page per table and index touched); the rows are
         * applied to the tables above in larger steps and then deleted, and
         * replayed at open when the daemon stopped before applying them. */
        "CREATE TABLE log(seq INTEGER PRIMARY KEY, ops BLOB NOT NULL);",
};
_Static_assert(ELEMENTSOF(migrations) == STORE_SCHEMA_VERSION, "one migration per schema version");

typedef enum Statement {
        STMT_BEGIN,
        STMT_COMMIT,
        STMT_META_PUT,
        STMT_USAGE_ADD,
        STMT_ALLOC_PUT,
        STMT_ALLOC_DROP,
        STMT_ALLOC_USAGE,
        STMT_HISTORY_ADD,
        STMT_HOURLY_ADD,
        STMT_ESTIMATOR_PUT,
        STMT_LOG_ADD,
        STMT_LOG_CLEAR,
        _STMT_MAX,
} Statement;

static const char *const statement_sql[_STMT_MAX] = {
        [STMT_BEGIN] = "BEGIN IMMEDIATE",
        [STMT_COMMIT] = "COMMIT",
        [STMT_META_PUT] = "INSERT INTO meta(key, value) VALUES(?1, ?2)"
                          " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [STMT_USAGE_ADD] = "INSERT INTO usage(scope, second, tokens) VALUES(?1, ?2, ?3)"
                           " ON CONFLICT(second, scope) DO UPDATE SET tokens = tokens + excluded.tokens",
        [STMT_ALLOC_PUT] =
                "INSERT OR REPLACE INTO allocations(id, granted_usec, granted, reservation, estimate,"
                " input, output, priority, pid, uid, comm, agent, class, model, unit, scopes)"
                " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        [STMT_ALLOC_DROP] = "DELETE FROM allocations WHERE id = ?1",
        [STMT_ALLOC_USAGE] = "UPDATE allocations SET input = ?2, output = ?3 WHERE id = ?1",
        [STMT_HISTORY_ADD] =
                "INSERT INTO history(realtime_usec, uid, user, unit, comm, agent, class, model,"
                " priority, estimate, granted, input, output, outcome, count, scopes)"
                " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
        [STMT_LOG_ADD] = "INSERT INTO log(ops) VALUES(?1)",
        [STMT_LOG_CLEAR] = "DELETE FROM log WHERE seq <= ?1",
        [STMT_ESTIMATOR_PUT] = "INSERT OR REPLACE INTO estimators(uid, class, seen_usec, state)"
                               " VALUES(?1, ?2, ?3, ?4)",
        [STMT_HOURLY_ADD] =
                "INSERT INTO hourly(scope, hour, requests, refused, tokens_in, tokens_out, granted)"
                " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT(hour, scope) DO UPDATE SET"
                " requests = requests + excluded.requests, refused = refused + excluded.refused,"
                " tokens_in = tokens_in + excluded.tokens_in,"
                " tokens_out = tokens_out + excluded.tokens_out, granted = granted + excluded.granted",
};

/* ---- staging ---- */

/* A staged counter row keyed (scope, bucket): usage per second (v[0] the
 * tokens) and hourly aggregates per hour (v[] as HOURLY_*). Rows with the
 * same key within one commit add up, so a busy scope is one upsert per
 * commit however many messages charged it. */
enum { HOURLY_REQUESTS, HOURLY_REFUSED, HOURLY_IN, HOURLY_OUT, HOURLY_GRANTED, _CELL_VALUES };

/* The strings of what is staged, each kept once until the next apply: the
 * staged operations point into it (nothing is copied per operation), cells
 * compare scopes by pointer, and a log row writes each string once and
 * refers back to it after (row_gen and row_index: where it was defined in
 * the row being encoded). */
typedef struct PoolString {
        uint64_t hash;
        uint64_t row_gen;
        uint32_t row_index;
        uint32_t len;
        char str[]; /* len bytes and a NUL */
} PoolString;

typedef struct PoolChunk {
        struct PoolChunk *next;
        size_t used, size;
        alignas(PoolString) char data[];
} PoolChunk;

typedef struct StrPool {
        uint64_t seed; /* random: a client cannot choose names that collide */
        size_t n;
        PoolString **index; /* open addressing, NULL empty; n_index a power of two */
        size_t n_index;
        PoolChunk *chunks;
} StrPool;

typedef struct Cell {
        const char *scope; /* pooled */
        uint64_t bucket, hash;
        uint64_t v[_CELL_VALUES];
} Cell;

typedef struct CellTable {
        Cell *cells;
        size_t n, cap;
        uint32_t *index; /* cell index + 1, 0 empty; n_index a power of two */
        size_t n_index;
} CellTable;

typedef enum AllocOpKind {
        ALLOC_OP_DROP,  /* delete the row */
        ALLOC_OP_PUT,   /* the whole row */
        ALLOC_OP_USAGE, /* only input and output: the row was written by an earlier apply */
        ALLOC_OP_NONE   /* put and dropped before an apply: nothing to write */
} AllocOpKind;

typedef struct AllocOp {
        AllocOpKind kind;
        bool new_row;      /* first staged as a put: no row of it in the tables yet */
        StoreAllocation a; /* strings pooled; scopes unused (joined below) */
        const char *scopes;
} AllocOp;

typedef struct HistoryOp {
        StoreHistoryRow h; /* strings pooled; scopes unused (joined below) */
        const char *scopes;
} HistoryOp;

typedef struct EstimatorOp {
        uint32_t uid;
        const char *class_name, *state; /* pooled */
        uint64_t seen_usec;
} EstimatorOp;

typedef struct MetaOp {
        const char *key; /* pooled */
        uint64_t value;
} MetaOp;

struct Store {
        char *path;
        StoreSync sync;
        sqlite3 *db;
        sqlite3_stmt *stmt[_STMT_MAX];
        uint8_t ledger_key[16];

        StrPool pool;
        CellTable usage;  /* (scope, second) */
        CellTable hourly; /* (scope, hour) */

        AllocOp *allocs;
        size_t n_allocs, cap_allocs;
        Hashmap *alloc_by_id; /* id -> (void *)(index + 1) */

        HistoryOp *history;
        size_t n_history, cap_history;

        MetaOp *meta;
        size_t n_meta, cap_meta;

        EstimatorOp *estimators;
        size_t n_estimators, cap_estimators;

        /* The commit log's next row: what was staged since the last commit,
         * encoded (log_*()); log_ops operations in it. log_rows: rows
         * committed since the last apply. A row's strings are written once
         * (log_gen tells rows apart, log_strings counts those written) and its
         * ids and times as differences from the previous record's (log_id,
         * log_usec, log_second). */
        VarlinkBuffer log;
        uint64_t log_gen;
        uint32_t log_strings;
        uint64_t log_id, log_usec, log_second;
        size_t log_ops;
        uint64_t log_rows;
        size_t apply_ops;
        bool replaying; /* staging from the log at open: nothing to encode */

        uint64_t lost, commits, applies;
        bool failing;
        char error[ERROR_MAX];
};

static const char *const sync_names[_STORE_SYNC_MAX] = {
        [STORE_SYNC_NORMAL] = "normal",
        [STORE_SYNC_FULL] = "full",
};

static const char *const outcome_names[_STORE_OUTCOME_MAX] = {
        [STORE_OUTCOME_RELEASED] = "released",     [STORE_OUTCOME_ABANDONED] = "abandoned",
        [STORE_OUTCOME_TERMINATED] = "terminated", [STORE_OUTCOME_EXPIRED] = "expired",
        [STORE_OUTCOME_SHUTDOWN] = "shutdown",     [STORE_OUTCOME_REFUSED] = "refused",
};

const char *store_sync_to_string(StoreSync sync) {
        return (unsigned)sync < _STORE_SYNC_MAX ? sync_names[sync] : NULL;
}

const char *store_outcome_to_string(StoreOutcome o) {
        return (unsigned)o < _STORE_OUTCOME_MAX ? outcome_names[o] : NULL;
}

int store_outcome_from_string(const char *s) {
        for (size_t i = 0; s && i < _STORE_OUTCOME_MAX; i++)
                if (strcmp(s, outcome_names[i]) == 0)
                        return (int)i;
        return -EINVAL;
}

/* Grows an array of n elements to hold one more. */
static int grow(void **p, size_t *cap, size_t n, size_t size) {
        size_t new_cap;
        void *q;

        if (n < *cap)
                return 0;
        new_cap = *cap ? *cap * 2 : 16;
        q = reallocarray(*p, new_cap, size);
        if (!q)
                return -ENOMEM;
        *p = q;
        *cap = new_cap;
        return 0;
}

/* ---- the string pool ---- */

#define POOL_CHUNK_SIZE 65536

static uint64_t mix(uint64_t a, uint64_t b) {
        unsigned __int128 m = (unsigned __int128)a * b;
        return (uint64_t)m ^ (uint64_t)(m >> 64);
}

/* Eight bytes at a time (these are hashed at every staged operation; a
 * byte at a time was a few percent of the durable daemon), keyed. */
static uint64_t str_hash(uint64_t seed, const char *str, size_t len) {
        uint64_t h = seed ^ mix(len, UINT64_C(0x9e3779b97f4a7c15)), w;

        for (; len >= 8; str += 8, len -= 8) {
                memcpy(&w, str, 8);
                h = mix(h ^ w, UINT64_C(0xa0761d6478bd642f));
        }
        if (len > 0) {
                w = 0;
                memcpy(&w, str, len);
                h = mix(h ^ w, UINT64_C(0xe7037ed1a0b428db));
        }
        return mix(h, UINT64_C(0x8ebc6af09c88c6e3));
}

static int pool_index_rebuild(StrPool *p, size_t n_index) {
        PoolString **index = calloc(n_index, sizeof(*index));

        if (!index)
                return -ENOMEM;
        for (size_t i = 0; i < p->n_index; i++) {
                size_t j;

                if (!p->index[i])
                        continue;
                for (j = p->index[i]->hash & (n_index - 1); index[j]; j = (j + 1) & (n_index - 1))
                        ;
                index[j] = p->index[i];
        }
        free(p->index);
        p->index = index;
        p->n_index = n_index;
        return 0;
}

static PoolString *pool_new(StrPool *p, const char *str, size_t len) {
        size_t need = (sizeof(PoolString) + len + 1 + alignof(PoolString) - 1) & ~(alignof(PoolString) - 1);
        PoolChunk *c = p->chunks;
        PoolString *e;

        if (!c || c->size - c->used < need) {
                size_t size = need > POOL_CHUNK_SIZE / 4 ? need : POOL_CHUNK_SIZE;

                c = malloc(sizeof(*c) + size);
                if (!c)
                        return NULL;
                *c = (PoolChunk){.size = size};
                if (size == POOL_CHUNK_SIZE || !p->chunks) {
                        c->next = p->chunks;
                        p->chunks = c;
                } else { /* a big one of its own: the current chunk stays current */
                        c->next = p->chunks->next;
                        p->chunks->next = c;
                }
        }
        e = (PoolString *)(void *)(c->data + c->used);
        c->used += need;
        *e = (PoolString){.len = (uint32_t)len};
        memcpy(e->str, str, len);
        e->str[len] = 0;
        return e;
}

/* The pooled copy of str[0..len), made when new; it stays where it is until
 * pool_clear(). */
static int pool_intern(StrPool *p, const char *str, size_t len, PoolString **ret) {
        uint64_t hash = str_hash(p->seed, str, len);
        PoolString *e;
        size_t j;
        int r;

        for (j = p->n_index ? hash & (p->n_index - 1) : 0; p->n_index && p->index[j];
             j = (j + 1) & (p->n_index - 1)) {
                e = p->index[j];
                if (e->hash == hash && e->len == len && memcmp(e->str, str, len) == 0) {
                        *ret = e;
                        return 0;
                }
        }
        if (len > UINT32_MAX - 1)
                return -E2BIG;
        if ((p->n + 1) * 2 > p->n_index) { /* load at most 1/2 */
                r = pool_index_rebuild(p, p->n_index ? p->n_index * 2 : 256);
                if (r < 0)
                        return r;
        }
        e = pool_new(p, str, len);
        if (!e)
                return -ENOMEM;
        e->hash = hash;
        for (j = hash & (p->n_index - 1); p->index[j]; j = (j + 1) & (p->n_index - 1))
                ;
        p->index[j] = e;
        p->n++;
        *ret = e;
        return 0;
}

/* Empties the pool, keeping one chunk and the arrays for reuse. */
static void pool_clear(StrPool *p) {
        PoolChunk *keep = NULL;

        while (p->chunks) {
                PoolChunk *c = p->chunks;

                p->chunks = c->next;
                if (!keep && c->size == POOL_CHUNK_SIZE) {
                        keep = c;
                        continue;
                }
                free(c);
        }
        if (keep) {
                keep->used = 0;
                keep->next = NULL;
                p->chunks = keep;
        }
        p->n = 0;
        if (p->index)
                memset(p->index, 0, p->n_index * sizeof(*p->index));
}

static void pool_free(StrPool *p) {
        pool_clear(p);
        free(p->chunks);
        free(p->index);
        *p = (StrPool){};
}

/* The pooled copy of an optional string (NULL for NULL). */
static int pool_opt(Store *s, const char *str, const char **ret) {
        PoolString *e;
        int r;

        *ret = NULL;
        if (!str)
                return 0;
        r = pool_intern(&s->pool, str, strlen(str), &e);
        if (r < 0)
                return r;
        *ret = e->str;
        return 0;
}

/* ---- the commit log's encoding ----
 *
 * A log row is a sequence of records, each a kind byte and its fields in a
 * fixed order: integers as LEB128 varints (signed ones zigzagged). Rows of
 * format 2 (schema 3 since tokenbudget's second commit-log encoding) start
 * with the byte LOG_FORMAT_2 and then:
 *   - a string is a varint v: 0 NULL; odd, the (v >> 1)-th string this row
 *     has defined; even, a new one, (v >> 1) - 1 bytes and a NUL follow (so
 *     that a replay reads it in place), numbered next;
 *   - allocation ids, granted and history times and usage seconds are the
 *     zigzagged difference from the row's previous id, time (microseconds)
 *     or second (each 0 at the row's start).
 * Rows of format 1 (those written before; their first byte is a kind) write
 * every string whole (a varint of its length + 1, 0: NULL, the bytes, a
 * NUL) and every value whole. A scope list is its count and the names.
 * Every staging function encodes its record before staging and takes it
 * back when staging fails, so the row holds exactly what was staged. */
enum {
        LOG_FORMAT_2 = 2,
        LOG_USAGE = 'U',
        LOG_ALLOC_PUT = 'P',
        LOG_ALLOC_USAGE = 'A',
        LOG_ALLOC_DROP = 'D',
        LOG_HISTORY = 'H',
        LOG_META = 'M',
        LOG_ESTIMATOR = 'E',
};

/* Where a record began: what log_end() takes back when it was not staged. */
typedef struct LogMark {
        size_t len;
        uint32_t strings;
        uint64_t id, usec, second;
} LogMark;

static int log_u64(Store *s, uint64_t v) {
        int r;

        if (s->replaying)
                return 0;
        r = varlink_buffer_reserve(&s->log, 11);
        if (r < 0)
                return r;
        if (s->log.len == 0) { /* a new row */
                s->log.data[s->log.len++] = LOG_FORMAT_2;
                s->log_gen++;
                s->log_strings = 0;
                s->log_id = s->log_usec = s->log_second = 0;
        }
        for (; v >= 0x80; v >>= 7)
                s->log.data[s->log.len++] = (char)(uint8_t)(v | 0x80);
        s->log.data[s->log.len++] = (char)(uint8_t)v;
        return 0;
}

static int log_i64(Store *s, int64_t v) {
        return log_u64(s, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

/* v as the difference from *last, which becomes v. */
static int log_delta(Store *s, uint64_t *last, uint64_t v) {
        int r = log_i64(s, (int64_t)(v - *last));

        if (r >= 0 && !s->replaying)
                *last = v;
        return r;
}

/* A pooled string (NULL for NULL): a reference when this row has it. */
static int log_pooled(Store *s, PoolString *e) {
        int r;

        if (s->replaying)
                return 0;
        if (!e)
                return log_u64(s, 0);
        if (s->log.len > 0 && e->row_gen == s->log_gen && e->row_index < s->log_strings)
                return log_u64(s, ((uint64_t)e->row_index << 1) | 1);
        r = log_u64(s, ((uint64_t)e->len + 1) << 1);
        r = r ?: varlink_buffer_reserve(&s->log, e->len + 1);
        if (r < 0)
                return r;
        memcpy(s->log.data + s->log.len, e->str, e->len + 1);
        s->log.len += e->len + 1;
        e->row_gen = s->log_gen;
        e->row_index = s->log_strings++;
        return 0;
}

/* An optional string: pooled (*ret, for staging) and logged. */
static int log_str(Store *s, const char *str, const char **ret) {
        PoolString *e = NULL;
        int r;

        if (str) {
                r = pool_intern(&s->pool, str, strlen(str), &e);
                if (r < 0)
                        return r;
        }
        if (ret)
                *ret = e ? e->str : NULL;
        return log_pooled(s, e);
}

/* The scope names, pooled into pooled[] when it is not NULL. */
static int log_scopes(Store *s, const char *const *scopes, size_t n, PoolString **pooled) {
        int r = log_u64(s, n);

        for (size_t i = 0; r >= 0 && i < n; i++) {
                PoolString *e = NULL;

                r = pool_intern(&s->pool, scopes[i], strlen(scopes[i]), &e);
                r = r ?: log_pooled(s, e);
                if (pooled)
                        pooled[i] = e;
        }
        return r;
}

static LogMark log_mark(const Store *s) {
        return (LogMark){.len = s->log.len,
                         .strings = s->log_strings,
                         .id = s->log_id,
                         .usec = s->log_usec,
                         .second = s->log_second};
}

/* The end of a staging function: its record stays in the log row when it
 * was staged (r >= 0), else it is taken back. */
static int log_end(Store *s, LogMark mark, int r) {
        if (s->replaying)
                return r;
        if (r < 0) {
                s->log.len = mark.len;
                s->log_strings = mark.strings; /* the strings it defined are undefined again */
                s->log_id = mark.id;
                s->log_usec = mark.usec;
                s->log_second = mark.second;
        } else
                s->log_ops++;
        return r;
}

static size_t staged_count(const Store *s) {
        return s->usage.n + s->hourly.n + s->n_allocs + s->n_history + s->n_meta + s->n_estimators;
}

static int check_room(Store *s) {
        if (staged_count(s) < STORE_STAGED_MAX)
                return 0;
        s->lost++;
        return -ENOBUFS;
}

static uint64_t cell_hash(const PoolString *scope, uint64_t bucket) {
        uint64_t h = scope->hash ^ (bucket * UINT64_C(0x9e3779b97f4a7c15));
        return h ^ (h >> 29);
}

static int index_rebuild(CellTable *t, size_t n_index) {
        uint32_t *index = calloc(n_index, sizeof(*index));

        if (!index)
                return -ENOMEM;
        for (size_t i = 0; i < t->n; i++) {
                size_t j = t->cells[i].hash & (n_index - 1);

                while (index[j])
                        j = (j + 1) & (n_index - 1);
                index[j] = (uint32_t)(i + 1);
        }
        free(t->index);
        t->index = index;
        t->n_index = n_index;
        return 0;
}

/* Adds v[] to the cell (scope, bucket), making it when new. */
static int cell_add(Store *s, CellTable *t, const PoolString *scope, uint64_t bucket,
                    const uint64_t v[static _CELL_VALUES]) {
        uint64_t hash = cell_hash(scope, bucket);
        Cell *c;
        size_t j;
        int r;

        for (j = t->n_index ? hash & (t->n_index - 1) : 0; t->n_index && t->index[j];
             j = (j + 1) & (t->n_index - 1)) {
                c = &t->cells[t->index[j] - 1];
                if (c->bucket == bucket && c->scope == scope->str) {
                        for (size_t k = 0; k < _CELL_VALUES; k++)
                                c->v[k] += v[k]; /* two INT64_MAX never come from a ledger */
                        return 0;
                }
        }
        r = check_room(s);
        if (r < 0)
                return r;
        if ((t->n + 1) * 2 > t->n_index) { /* load at most 1/2 */
                r = index_rebuild(t, t->n_index ? t->n_index * 2 : 64);
                if (r < 0)
                        return r;
        }
        r = grow((void **)&t->cells, &t->cap, t->n, sizeof(*t->cells));
        if (r < 0)
                return r;
        c = &t->cells[t->n];
        *c = (Cell){.scope = scope->str, .bucket = bucket, .hash = hash};
        memcpy(c->v, v, sizeof(c->v));
        t->n++;
        j = hash & (t->n_index - 1);
        while (t->index[j])
                j = (j + 1) & (t->n_index - 1);
        t->index[j] = (uint32_t)t->n;
        return 0;
}

static void cells_clear(CellTable *t) {
        t->n = 0;
        if (t->index)
                memset(t->index, 0, t->n_index * sizeof(*t->index));
}

static void cells_free(CellTable *t) {
        cells_clear(t);
        free(t->cells);
        free(t->index);
        *t = (CellTable){};
}

int store_add_usage(Store *s, const char *scope, uint64_t realtime_sec, uint64_t tokens) {
        PoolString *e;
        LogMark mark;
        int r;

        assert(s);
        if (!scope || !*scope || realtime_sec > INT64_MAX || tokens > INT64_MAX)
                return -EINVAL;
        if (tokens == 0)
                return 0;
        r = pool_intern(&s->pool, scope, strlen(scope), &e);
        if (r < 0)
                return r;
        mark = log_mark(s);
        r = log_u64(s, LOG_USAGE);
        r = r ?: log_pooled(s, e);
        r = r ?: log_delta(s, &s->log_second, realtime_sec);
        r = r ?: log_u64(s, tokens);
        r = r ?: cell_add(s, &s->usage, e, realtime_sec, (uint64_t[_CELL_VALUES]){tokens});
        return log_end(s, mark, r);
}

/* The pooled "a\nb\nc", or -EINVAL for a name that is empty or has a newline. */
static int scopes_join(Store *s, const char *const *scopes, size_t n, const char **ret) {
        char stack[1024], *buf = stack, *p;
        size_t len = 1;
        int r;

        if (n > STORE_SCOPES_MAX || (n > 0 && !scopes))
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (!scopes[i] || !*scopes[i] || strchr(scopes[i], '\n'))
                        return -EINVAL;
                len += strlen(scopes[i]) + 1;
        }
        if (len > sizeof(stack)) {
                buf = malloc(len);
                if (!buf)
                        return -ENOMEM;
        }
        p = buf;
        *p = 0;
        for (size_t i = 0; i < n; i++)
                p = stpcpy(stpcpy(p, i ? "\n" : ""), scopes[i]);
        r = pool_opt(s, buf, ret);
        if (buf != stack)
                free(buf);
        return r;
}

/* The staged entry of id, creating an empty one. */
static int alloc_op_get(Store *s, uint64_t id, AllocOp **ret) {
        void *v = hashmap_get(s->alloc_by_id, id);
        int r;

        if (v) {
                *ret = &s->allocs[(uintptr_t)v - 1];
                return 0;
        }
        r = check_room(s);
        if (r < 0)
                return r;
        r = grow((void **)&s->allocs, &s->cap_allocs, s->n_allocs, sizeof(*s->allocs));
        if (r < 0)
                return r;
        r = hashmap_put(s->alloc_by_id, id, (void *)(uintptr_t)(s->n_allocs + 1));
        if (r < 0)
                return r;
        s->allocs[s->n_allocs] = (AllocOp){.kind = ALLOC_OP_DROP, .a.id = id};
        *ret = &s->allocs[s->n_allocs++];
        return 0;
}

static bool valid_scopes(const char *const *scopes, size_t n) {
        if (n > STORE_SCOPES_MAX || (n > 0 && !scopes))
                return false;
        for (size_t i = 0; i < n; i++)
                if (!scopes[i] || !*scopes[i] || strchr(scopes[i], '\n'))
                        return false;
        return true;
}

/* Logs the allocation and fills out with it, its strings pooled. */
static int log_allocation(Store *s, const StoreAllocation *a, AllocOp *out) {
        int r = log_u64(s, LOG_ALLOC_PUT);

        *out = (AllocOp){.a = *a};
        out->a.scopes = NULL;
        out->a.n_scopes = 0;
        r = r ?: log_delta(s, &s->log_id, a->id);
        r = r ?: log_delta(s, &s->log_usec, a->granted_usec);
        r = r ?: log_u64(s, a->granted);
        r = r ?: log_u64(s, a->reservation);
        r = r ?: log_u64(s, a->estimate);
        r = r ?: log_u64(s, a->input);
        r = r ?: log_u64(s, a->output);
        r = r ?: log_i64(s, a->priority);
        r = r ?: log_i64(s, a->pid);
        r = r ?: log_u64(s, a->uid);
        r = r ?: log_str(s, a->comm, &out->a.comm);
        r = r ?: log_str(s, a->agent, &out->a.agent);
        r = r ?: log_str(s, a->class_name, &out->a.class_name);
        r = r ?: log_str(s, a->model, &out->a.model);
        r = r ?: log_str(s, a->unit, &out->a.unit);
        r = r ?: log_scopes(s, a->scopes, a->n_scopes, NULL);
        return r ?: scopes_join(s, a->scopes, a->n_scopes, &out->scopes);
}

int store_put_allocation(Store *s, const StoreAllocation *a) {
        AllocOp *op, n;
        LogMark mark;
        bool fresh, new_row;
        int r;

        assert(s);
        if (!a || !valid_scopes(a->scopes, a->n_scopes))
                return -EINVAL;
        mark = log_mark(s);
        r = log_allocation(s, a, &n);
        if (r < 0)
                return log_end(s, mark, r);
        fresh = !hashmap_get(s->alloc_by_id, a->id);
        r = alloc_op_get(s, a->id, &op);
        if (r < 0)
                return log_end(s, mark, r);
        new_row = fresh || op->new_row;
        *op = n;
        op->kind = ALLOC_OP_PUT;
        op->new_row = new_row;
        return log_end(s, mark, 0);
}

int store_put_allocation_usage(Store *s, uint64_t id, uint64_t input, uint64_t output) {
        AllocOp *op;
        bool fresh = !hashmap_get(s->alloc_by_id, id);
        LogMark mark;
        int r;

        assert(s);
        if (!fresh) {
                op = &s->allocs[(uintptr_t)hashmap_get(s->alloc_by_id, id) - 1];
                if (op->kind == ALLOC_OP_DROP || op->kind == ALLOC_OP_NONE)
                        return 0; /* settled since the last apply already: nothing to update */
        }
        mark = log_mark(s);
        r = log_u64(s, LOG_ALLOC_USAGE);
        r = r ?: log_delta(s, &s->log_id, id);
        r = r ?: log_u64(s, input);
        r = r ?: log_u64(s, output);
        r = r ?: alloc_op_get(s, id, &op);
        if (r < 0)
                return log_end(s, mark, r);
        if (fresh)
                op->kind = ALLOC_OP_USAGE;
        op->a.input = input;
        op->a.output = output;
        return log_end(s, mark, 0);
}

int store_drop_allocation(Store *s, uint64_t id) {
        AllocOp *op;
        LogMark mark;
        bool new_row;
        int r;

        assert(s);
        mark = log_mark(s);
        r = log_u64(s, LOG_ALLOC_DROP);
        r = r ?: log_delta(s, &s->log_id, id);
        r = r ?: alloc_op_get(s, id, &op);
        if (r < 0)
                return log_end(s, mark, r);
        new_row = op->new_row;
        /* Granted and settled between two applies: the tables never see it. */
        *op = (AllocOp){.kind = new_row ? ALLOC_OP_NONE : ALLOC_OP_DROP, .a.id = id, .new_row = new_row};
        return log_end(s, mark, 0);
}

/* Logs the row and fills out with it, its strings pooled. */
static int log_history(Store *s, const StoreHistoryRow *h, HistoryOp *out, PoolString **scopes) {
        int r = log_u64(s, LOG_HISTORY);

        *out = (HistoryOp){.h = *h};
        out->h.scopes = NULL;
        out->h.n_scopes = 0;
        if (out->h.count == 0)
                out->h.count = 1;
        r = r ?: log_delta(s, &s->log_usec, h->realtime_usec);
        r = r ?: log_u64(s, h->uid);
        r = r ?: log_str(s, h->user, &out->h.user);
        r = r ?: log_str(s, h->unit, &out->h.unit);
        r = r ?: log_str(s, h->comm, &out->h.comm);
        r = r ?: log_str(s, h->agent, &out->h.agent);
        r = r ?: log_str(s, h->class_name, &out->h.class_name);
        r = r ?: log_str(s, h->model, &out->h.model);
        r = r ?: log_i64(s, h->priority);
        r = r ?: log_u64(s, h->estimate);
        r = r ?: log_u64(s, h->granted);
        r = r ?: log_u64(s, h->input);
        r = r ?: log_u64(s, h->output);
        r = r ?: log_u64(s, (uint64_t)h->outcome);
        r = r ?: log_u64(s, h->count);
        r = r ?: log_scopes(s, h->scopes, h->n_scopes, scopes);
        return r ?: scopes_join(s, h->scopes, h->n_scopes, &out->scopes);
}

int store_add_history(Store *s, const StoreHistoryRow *h) {
        PoolString *scopes[STORE_SCOPES_MAX];
        HistoryOp op;
        bool refused;
        LogMark mark;
        int r;

        assert(s);
        if (!h || (unsigned)h->outcome >= _STORE_OUTCOME_MAX || h->realtime_usec > INT64_MAX ||
            !valid_scopes(h->scopes, h->n_scopes))
                return -EINVAL;
        /* Room for the row and a new hourly cell per scope, or none of them. */
        if (staged_count(s) + 1 + h->n_scopes > STORE_STAGED_MAX) {
                s->lost++;
                return -ENOBUFS;
        }
        mark = log_mark(s);
        r = log_history(s, h, &op, scopes);
        r = r ?: grow((void **)&s->history, &s->cap_history, s->n_history, sizeof(*s->history));
        if (r < 0)
                return log_end(s, mark, r);
        /* Cells first, then the row: a cell that fails midway leaves the
         * earlier cells added (the log record is taken back; -ENOMEM only). */
        refused = h->outcome == STORE_OUTCOME_REFUSED;
        for (size_t i = 0; i < h->n_scopes; i++) {
                uint64_t v[_CELL_VALUES] = {
                        [HOURLY_REQUESTS] = refused ? 0 : op.h.count,
                        [HOURLY_REFUSED] = refused ? op.h.count : 0,
                        [HOURLY_IN] = h->input,
                        [HOURLY_OUT] = h->output,
                        [HOURLY_GRANTED] = h->granted,
                };
                r = cell_add(s, &s->hourly, scopes[i], h->realtime_usec / USEC_PER_HOUR, v);
                if (r < 0)
                        return log_end(s, mark, r);
        }
        s->history[s->n_history++] = op;
        return log_end(s, mark, 0);
}

int store_meta_put_u64(Store *s, const char *key, uint64_t value) {
        const char *pooled;
        LogMark mark;
        int r;

        assert(s);
        if (!key || !*key || value > INT64_MAX)
                return -EINVAL;
        mark = log_mark(s);
        r = log_u64(s, LOG_META);
        r = r ?: log_str(s, key, &pooled);
        r = r ?: log_u64(s, value);
        if (r < 0)
                return log_end(s, mark, r);
        for (size_t i = 0; i < s->n_meta; i++)
                if (s->meta[i].key == pooled) {
                        s->meta[i].value = value;
                        return log_end(s, mark, 0);
                }
        r = check_room(s);
        r = r ?: grow((void **)&s->meta, &s->cap_meta, s->n_meta, sizeof(*s->meta));
        if (r < 0)
                return log_end(s, mark, r);
        s->meta[s->n_meta++] = (MetaOp){.key = pooled, .value = value};
        return log_end(s, mark, 0);
}

int store_put_estimator(Store *s, uint32_t uid, const char *class_name, uint64_t seen_usec,
                        const char *state) {
        EstimatorOp op = {.uid = uid, .seen_usec = seen_usec};
        LogMark mark;
        int r;

        assert(s);
        if (!class_name || !*class_name || !state || seen_usec > INT64_MAX)
                return -EINVAL;
        mark = log_mark(s);
        r = log_u64(s, LOG_ESTIMATOR);
        r = r ?: log_u64(s, uid);
        r = r ?: log_str(s, class_name, &op.class_name);
        r = r ?: log_u64(s, seen_usec);
        r = r ?: log_str(s, state, &op.state);
        r = r ?: check_room(s);
        r = r ?: grow((void **)&s->estimators, &s->cap_estimators, s->n_estimators, sizeof(*s->estimators));
        if (r < 0)
                return log_end(s, mark, r);
        s->estimators[s->n_estimators++] = op;
        return log_end(s, mark, 0);
}

static void staging_clear(Store *s) {
        cells_clear(&s->usage);
        cells_clear(&s->hourly);
        for (size_t i = 0; i < s->n_allocs; i++)
                hashmap_remove(s->alloc_by_id, s->allocs[i].a.id);
        s->n_allocs = 0;
        s->n_history = 0;
        s->n_meta = 0;
        s->n_estimators = 0;
        pool_clear(&s->pool);
}

bool store_pending(const Store *s) {
        return s && s->log_ops > 0;
}

size_t store_unlogged(const Store *s) {
        return s ? s->log_ops : 0;
}

size_t store_staged(const Store *s) {
        return s ? staged_count(s) : 0;
}

uint64_t store_lost(const Store *s) {
        return s ? s->lost : 0;
}

uint64_t store_commits(const Store *s) {
        return s ? s->commits : 0;
}

uint64_t store_applies(const Store *s) {
        return s ? s->applies : 0;
}

void store_set_apply_ops(Store *s, size_t ops) {
        s->apply_ops = ops ?: 1;
}

const char *store_path(const Store *s) {
        return s ? s->path : NULL;
}

StoreSync store_sync(const Store *s) {
        return s->sync;
}

const char *store_error_message(const Store *s) {
        return s && s->failing ? s->error : NULL;
}

void store_ledger_key(const Store *s, uint8_t ret[16]) {
        memcpy(ret, s->ledger_key, sizeof(s->ledger_key));
}

/* ---- errors ---- */

static int errno_from_sqlite(int code) {
        switch (code & 0xff) {
        case SQLITE_OK:
        case SQLITE_DONE:
        case SQLITE_ROW:
                return 0;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG;
        case SQLITE_CANTOPEN:
        case SQLITE_PERM:
        case SQLITE_AUTH:
                return -EACCES;
        case SQLITE_CONSTRAINT:
        case SQLITE_MISMATCH:
        case SQLITE_RANGE:
                return -EINVAL;
        default:
                return -EIO;
        }
}

static void set_error(Store *s, const char *fmt, ...) _printf_(2, 3);
static void set_error(Store *s, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(s->error, sizeof(s->error), fmt, ap);
        va_end(ap);
        s->failing = true;
}

/* The error of the last call on db, as -errno, with the message recorded. */
static int db_error(Store *s, const char *what) {
        int code = sqlite3_extended_errcode(s->db);

        set_error(s, "%s: %s failed: %s (SQLite error %d)", s->path, what, sqlite3_errmsg(s->db), code);
        return errno_from_sqlite(code) ?: -EIO;
}

/* ---- binding ---- */

static int bind_text(sqlite3_stmt *st, int i, const char *text) {
        return text ? sqlite3_bind_text(st, i, text, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}

static int bind_u64(sqlite3_stmt *st, int i, uint64_t v) {
        return sqlite3_bind_int64(st, i, (sqlite3_int64)v);
}

/* Steps a prepared statement to its end and resets it: SQLITE_DONE or the error. */
static int step_done(sqlite3_stmt *st) {
        int rc = sqlite3_step(st);

        if (rc == SQLITE_ROW)
                while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                        ;
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
        return rc == SQLITE_DONE ? SQLITE_DONE : rc;
}

static const char *column_text(sqlite3_stmt *st, int i) {
        return (const char *)sqlite3_column_text(st, i);
}

static uint64_t column_u64(sqlite3_stmt *st, int i) {
        sqlite3_int64 v = sqlite3_column_int64(st, i);
        return v < 0 ? 0 : (uint64_t)v;
}

/* ---- commit ---- */

static int write_meta(Store *s) {
        sqlite3_stmt *st = s->stmt[STMT_META_PUT];

        for (size_t i = 0; i < s->n_meta; i++) {
                bind_text(st, 1, s->meta[i].key);
                bind_u64(st, 2, s->meta[i].value);
                if (step_done(st) != SQLITE_DONE)
                        return db_error(s, "writing meta values");
        }
        return 0;
}

static int write_estimators(Store *s) {
        sqlite3_stmt *st = s->stmt[STMT_ESTIMATOR_PUT];

        for (size_t i = 0; i < s->n_estimators; i++) {
                sqlite3_bind_int64(st, 1, s->estimators[i].uid);
                bind_text(st, 2, s->estimators[i].class_name);
                bind_u64(st, 3, s->estimators[i].seen_usec);
                bind_text(st, 4, s->estimators[i].state);
                if (step_done(st) != SQLITE_DONE)
                        return db_error(s, "writing estimator state");
        }
        return 0;
}

static int write_usage(Store *s) {
        sqlite3_stmt *st = s->stmt[STMT_USAGE_ADD];

        for (size_t i = 0; i < s->usage.n; i++) {
                bind_text(st, 1, s->usage.cells[i].scope);
                bind_u64(st, 2, s->usage.cells[i].bucket);
                bind_u64(st, 3, s->usage.cells[i].v[0]);
                if (step_done(st) != SQLITE_DONE)
                        return db_error(s, "writing usage");
        }
        return 0;
}

static int write_hourly(Store *s) {
        sqlite3_stmt *st = s->stmt[STMT_HOURLY_ADD];

        for (size_t i = 0; i < s->hourly.n; i++) {
                const Cell *c = &s->hourly.cells[i];

                bind_text(st, 1, c->scope);
                bind_u64(st, 2, c->bucket);
                bind_u64(st, 3, c->v[HOURLY_REQUESTS]);
                bind_u64(st, 4, c->v[HOURLY_REFUSED]);
                bind_u64(st, 5, c->v[HOURLY_IN]);
                bind_u64(st, 6, c->v[HOURLY_OUT]);
                bind_u64(st, 7, c->v[HOURLY_GRANTED]);
                if (step_done(st) != SQLITE_DONE)
                        return db_error(s, "writing hourly aggregates");
        }
        return 0;
}

static int write_allocation(Store *s, const AllocOp *op) {
        sqlite3_stmt *st;

        switch (op->kind) {
        case ALLOC_OP_NONE:
                return 0;
        case ALLOC_OP_DROP:
                st = s->stmt[STMT_ALLOC_DROP];
                sqlite3_bind_int64(st, 1, (sqlite3_int64)op->a.id); /* all 64 bits: two's complement */
                break;
        case ALLOC_OP_USAGE:
                st = s->stmt[STMT_ALLOC_USAGE];
                sqlite3_bind_int64(st, 1, (sqlite3_int64)op->a.id);
                bind_u64(st, 2, op->a.input);
                bind_u64(st, 3, op->a.output);
                break;
        default:
                st = s->stmt[STMT_ALLOC_PUT];
                sqlite3_bind_int64(st, 1, (sqlite3_int64)op->a.id); /* all 64 bits: two's complement */
                bind_u64(st, 2, op->a.granted_usec);
                bind_u64(st, 3, op->a.granted);
                bind_u64(st, 4, op->a.reservation);
                bind_u64(st, 5, op->a.estimate);
                bind_u64(st, 6, op->a.input);
                bind_u64(st, 7, op->a.output);
                sqlite3_bind_int(st, 8, op->a.priority);
                sqlite3_bind_int64(st, 9, op->a.pid);
                sqlite3_bind_int64(st, 10, op->a.uid);
                bind_text(st, 11, op->a.comm);
                bind_text(st, 12, op->a.agent);
                bind_text(st, 13, op->a.class_name);
                bind_text(st, 14, op->a.model);
                bind_text(st, 15, op->a.unit);
                bind_text(st, 16, op->scopes);
                break;
        }
        return step_done(st) == SQLITE_DONE ? 0 : db_error(s, "writing allocations");
}

static int write_history(Store *s, const HistoryOp *op) {
        sqlite3_stmt *st = s->stmt[STMT_HISTORY_ADD];

        bind_u64(st, 1, op->h.realtime_usec);
        sqlite3_bind_int64(st, 2, op->h.uid);
        bind_text(st, 3, op->h.user);
        bind_text(st, 4, op->h.unit);
        bind_text(st, 5, op->h.comm);
        bind_text(st, 6, op->h.agent);
        bind_text(st, 7, op->h.class_name);
        bind_text(st, 8, op->h.model);
        sqlite3_bind_int(st, 9, op->h.priority);
        bind_u64(st, 10, op->h.estimate);
        bind_u64(st, 11, op->h.granted);
        bind_u64(st, 12, op->h.input);
        bind_u64(st, 13, op->h.output);
        bind_text(st, 14, store_outcome_to_string(op->h.outcome));
        bind_u64(st, 15, op->h.count);
        bind_text(st, 16, op->scopes);
        if (step_done(st) != SQLITE_DONE)
                return db_error(s, "writing history");
        return 0;
}

static int write_staged(Store *s) {
        int r;

        r = write_meta(s);
        if (r < 0)
                return r;
        r = write_usage(s);
        if (r < 0)
                return r;
        r = write_hourly(s);
        if (r < 0)
                return r;
        r = write_estimators(s);
        if (r < 0)
                return r;
        for (size_t i = 0; i < s->n_allocs; i++) {
                r = write_allocation(s, &s->allocs[i]);
                if (r < 0)
                        return r;
        }
        for (size_t i = 0; i < s->n_history; i++) {
                r = write_history(s, &s->history[i]);
                if (r < 0)
                        return r;
        }
        return 0;
}

static void rollback(Store *s) {
        if (!sqlite3_get_autocommit(s->db))
                sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Writes everything staged into the tables and deletes the log rows up to
 * seq (they hold nothing else), in one transaction. */
static int apply(Store *s, int64_t upto_seq) {
        sqlite3_stmt *st = s->stmt[STMT_LOG_CLEAR];
        int r;

        if (staged_count(s) == 0 && s->log_rows == 0)
                return 0;
        if (step_done(s->stmt[STMT_BEGIN]) != SQLITE_DONE) {
                r = db_error(s, "beginning to apply the commit log");
                rollback(s);
                return r;
        }
        r = write_staged(s);
        if (r >= 0 && s->log_rows > 0) {
                sqlite3_bind_int64(st, 1, upto_seq);
                if (step_done(st) != SQLITE_DONE)
                        r = db_error(s, "deleting applied commit log rows");
        }
        if (r >= 0 && step_done(s->stmt[STMT_COMMIT]) != SQLITE_DONE)
                r = db_error(s, "committing the applied commit log");
        if (r < 0) {
                rollback(s);
                return r; /* everything stays staged (and logged) */
        }
        staging_clear(s);
        if (!s->replaying) {
                /* what the next log row would have held is in the tables now */
                s->log.len = s->log_ops = 0;
                s->log_rows = 0;
        }
        s->commits++;
        s->applies++;
        s->failing = false;
        return 0;
}

int store_apply(Store *s) {
        assert(s);
        return apply(s, INT64_MAX);
}

int store_commit(Store *s) {
        sqlite3_stmt *st = s->stmt[STMT_LOG_ADD];
        int r;

        assert(s);
        if (!store_pending(s))
                return 0;
        if (staged_count(s) >= s->apply_ops)
                return apply(s, INT64_MAX);
        if (step_done(s->stmt[STMT_BEGIN]) != SQLITE_DONE) {
                r = db_error(s, "beginning the commit");
                rollback(s);
                return r;
        }
        sqlite3_bind_blob(st, 1, s->log.data, (int)s->log.len, SQLITE_STATIC);
        r = step_done(st) == SQLITE_DONE ? 0 : db_error(s, "writing the commit log");
        if (r >= 0 && step_done(s->stmt[STMT_COMMIT]) != SQLITE_DONE)
                r = db_error(s, "committing");
        if (r < 0) {
                rollback(s);
                return r; /* the row stays encoded for the next commit */
        }
        s->log.len = s->log_ops = 0;
        s->log_rows++;
        s->commits++;
        s->failing = false;
        return 0;
}

/* ---- open ---- */

static int reason_set(char **ret_reason, const char *fmt, ...) _printf_(2, 3);
static int reason_set(char **ret_reason, const char *fmt, ...) {
        va_list ap;

        if (!ret_reason)
                return 0;
        va_start(ap, fmt);
        if (vasprintf(ret_reason, fmt, ap) < 0)
                *ret_reason = NULL;
        va_end(ap);
        return 0;
}

/* Whether path's directory is on a file system mounted read-only. */
static bool on_read_only_fs(const char *path) {
        _cleanup_free_ char *copy = strdup(path);
        struct statvfs v;

        return copy && statvfs(dirname(copy), &v) == 0 && (v.f_flag & ST_RDONLY);
}

/* The reason for a failure of SQLite at open, from its error code. */
static int open_error(Store *s, const char *what, char **ret_reason) {
        int code = s->db ? sqlite3_extended_errcode(s->db) : SQLITE_NOMEM;
        const char *msg = s->db ? sqlite3_errmsg(s->db) : "out of memory";
        int r = errno_from_sqlite(code) ?: -EIO;

        switch (r) {
        case -EBADMSG:
                reason_set(ret_reason,
                           "%s is damaged or not a database (%s: %s). Move it away to start with empty "
                           "windows and history (what it held is lost), or put back a backup",
                           s->path, what, msg);
                break;
        case -EACCES:
        case -EROFS:
                if (on_read_only_fs(s->path)) {
                        reason_set(ret_reason,
                                   "%s cannot be opened for writing (%s: %s): its file system is mounted "
                                   "read-only; give the daemon a state directory on a writable one "
                                   "(state_directory, --state-dir), or --state-dir '' to run in memory only",
                                   s->path, what, msg);
                        return -EROFS;
                }
                reason_set(ret_reason,
                           "%s cannot be opened for reading and writing (%s: %s): check the ownership and "
                           "mode of the file and of its directory (the daemon writes FILE-wal next to it)",
                           s->path, what, msg);
                break;
        case -EBUSY:
                reason_set(
                        ret_reason,
                        "%s is in use by another process (%s: %s): another tokenbudgetd on the same state "
                        "directory? Stop it, or give this one its own --state-dir",
                        s->path, what, msg);
                break;
        default:
                reason_set(ret_reason, "%s: %s failed: %s (SQLite error %d)", s->path, what, msg, code);
        }
        return r;
}

/* The directory must exist (StateDirectory= creates it): a missing one is a
 * mistake in the configuration, never something to create here. */
static int check_directory(const char *path, char **ret_reason) {
        _cleanup_free_ char *copy = strdup(path);
        struct stat st;
        const char *dir;

        if (!copy)
                return -ENOMEM;
        dir = dirname(copy);
        if (stat(dir, &st) < 0) {
                int r = -errno;
                reason_set(ret_reason,
                           "%s: its directory %s cannot be used (%s): create it (systemd's StateDirectory= "
                           "does) or set state_directory / --state-dir to one that exists",
                           path, dir, strerror(-r));
                return r;
        }
        if (!S_ISDIR(st.st_mode)) {
                reason_set(ret_reason, "%s: %s is not a directory: set state_directory to a directory", path,
                           dir);
                return -ENOTDIR;
        }
        return 0;
}

/* Opening it ourselves first gives the precise reason SQLite would only
 * call "unable to open database file". */
static int check_file(const char *path, char **ret_reason) {
        int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
        struct stat st;
        int r;

        if (fd < 0) {
                r = -errno;
                if (r == -ENOENT)
                        return 0; /* created */
                if (r == -EROFS) {
                        reason_set(ret_reason,
                                   "%s cannot be opened for writing: its file system is mounted read-only; "
                                   "give the daemon a state directory on a writable one (state_directory, "
                                   "--state-dir), or --state-dir '' to run in memory only",
                                   path);
                        return r;
                }
                reason_set(ret_reason,
                           "%s cannot be opened for reading and writing (%s): check its ownership and mode "
                           "(the daemon's user must own it), or move it away to start afresh",
                           path, strerror(-r));
                return r;
        }
        r = fstat(fd, &st) < 0 ? -errno : 0;
        close(fd);
        if (r == 0 && !S_ISREG(st.st_mode)) {
                reason_set(ret_reason, "%s is not a regular file: move it away", path);
                return -EBADMSG;
        }
        return r;
}

static uint32_t be32(const unsigned char *p) {
        return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* A database file shorter than its header says was truncated (a copy cut
 * short, a full disk while copying): SQLite would only notice at the first
 * page it misses. Its header (https://www.sqlite.org/fileformat.html, 1.3):
 * page size at 16 (1 means 65536), page count at 28, valid when the change
 * counter at 24 equals the one at 92. With a WAL of content the file may
 * legitimately lag its header, so only without one. */
static int check_truncated(const char *path, char **ret_reason) {
        _cleanup_free_ char *wal = NULL;
        unsigned char h[100];
        struct stat st, wst;
        uint64_t page_size, want;
        ssize_t n;
        int fd;

        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 0; /* not there yet */
        n = pread(fd, h, sizeof(h), 0);
        if (fstat(fd, &st) < 0)
                st.st_size = 0;
        close(fd);
        if (n != (ssize_t)sizeof(h) || memcmp(h, "SQLite format 3", 16) != 0)
                return 0; /* empty, or not SQLite: SQLite says which */
        if (asprintf(&wal, "%s-wal", path) < 0)
                return -ENOMEM;
        if (stat(wal, &wst) == 0 && wst.st_size > 0)
                return 0;
        if (be32(h + 24) != be32(h + 92))
                return 0;
        page_size = (uint32_t)h[16] << 8 | h[17];
        if (page_size == 1)
                page_size = 65536;
        want = page_size * be32(h + 28);
        if ((uint64_t)st.st_size >= want)
                return 0;
        reason_set(ret_reason,
                   "%s is truncated (%jd bytes where its header says %ju). Move it away to start with empty "
                   "windows and history (what it held is lost), or put back a backup",
                   path, (intmax_t)st.st_size, (uintmax_t)want);
        return -EBADMSG;
}

/* The single value of a one-row query, as text into buf (or "" for none). */
static int query_text(Store *s, const char *sql, char *buf, size_t size) {
        sqlite3_stmt *st = NULL;
        int rc;

        buf[0] = 0;
        rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
        if (rc == SQLITE_OK) {
                rc = sqlite3_step(st);
                if (rc == SQLITE_ROW) {
                        snprintf(buf, size, "%s", column_text(st, 0) ?: "");
                        rc = SQLITE_OK;
                } else if (rc == SQLITE_DONE)
                        rc = SQLITE_OK;
        }
        sqlite3_finalize(st);
        return rc;
}

static int migrate(Store *s, long from, char **ret_reason) {
        for (long v = from; v < STORE_SCHEMA_VERSION; v++) {
                char sql[64];

                snprintf(sql, sizeof(sql), "PRAGMA user_version = %ld", v + 1);
                if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK ||
                    sqlite3_exec(s->db, migrations[v], NULL, NULL, NULL) != SQLITE_OK ||
                    sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK ||
                    sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
                        char what[64];
                        int r;

                        snprintf(what, sizeof(what), "migrating from schema version %ld", v);
                        r = open_error(s, what, ret_reason);
                        rollback(s);
                        return r;
                }
        }
        return 0;
}

/* A damaged page is found when it is read: without a full check (which
 * reads every page: seconds at start for months of history) the pages the
 * daemon reads and writes first are read now, so that damage there is
 * refused at start instead of failing the first commits: each table's and
 * index's root and its ends (where rows are added and pruned). */
static const char *const probe_sql[] = {
        /* one min() or max() each: SQLite then reads that b-tree's edge
         * (with both, it may scan a smaller index instead of the table) */
        "SELECT count(*) FROM meta",
        "SELECT min(second) FROM usage",
        "SELECT max(second) FROM usage",
        "SELECT min(rowid) FROM allocations",
        "SELECT max(rowid) FROM allocations",
        "SELECT min(rowid) FROM history",
        "SELECT max(rowid) FROM history",
        "SELECT min(realtime_usec) FROM history",
        "SELECT max(realtime_usec) FROM history",
        "SELECT max(realtime_usec) FROM history INDEXED BY history_uid_time WHERE uid = 0",
        "SELECT min(hour) FROM hourly",
        "SELECT max(hour) FROM hourly",
        "SELECT count(*) FROM limits",
        "SELECT count(*) FROM breakers",
        "SELECT count(*) FROM estimators",
};

static int probe_tables(Store *s, char **ret_reason) {
        for (size_t i = 0; i < ELEMENTSOF(probe_sql); i++)
                if (sqlite3_exec(s->db, probe_sql[i], NULL, NULL, NULL) != SQLITE_OK)
                        return open_error(s, "reading its tables", ret_reason);
        return 0;
}

static int check_version(Store *s, char **ret_reason) {
        char buf[64];
        long version;

        if (query_text(s, "PRAGMA user_version", buf, sizeof(buf)) != SQLITE_OK)
                return open_error(s, "reading the schema version", ret_reason);
        version = strtol(buf, NULL, 10);
        if (version > STORE_SCHEMA_VERSION) {
                reason_set(ret_reason,
                           "%s was written by a newer tokenbudget (schema version %ld; this one knows up to "
                           "%d): run that version, or move the file away to start afresh (what it held is "
                           "lost to this version)",
                           s->path, version, STORE_SCHEMA_VERSION);
                return -EPROTONOSUPPORT;
        }
        if (version <= 0) {
                if (query_text(s, "SELECT count(*) FROM sqlite_schema", buf, sizeof(buf)) != SQLITE_OK)
                        return open_error(s, "reading the schema", ret_reason);
                if (strcmp(buf, "0") != 0) {
                        reason_set(ret_reason,
                                   "%s is an SQLite database but not tokenbudget's (it has tables and no "
                                   "schema version): set another state_directory, or move the file away",
                                   s->path);
                        return -EBADMSG;
                }
                version = 0;
        }
        return migrate(s, version, ret_reason);
}

static int configure(Store *s, StoreSync sync, unsigned flags, char **ret_reason) {
        char buf[64];
        char sql[64];
        int r;

        sqlite3_extended_result_codes(s->db, 1);
        sqlite3_busy_timeout(s->db, BUSY_TIMEOUT_MSEC);
        if (sqlite3_db_readonly(s->db, "main") == 1) {
                reason_set(ret_reason,
                           "%s can only be read: check the ownership and mode of the file and its directory",
                           s->path);
                return -EROFS;
        }
        /* One daemon owns the file: with the lock held from the first access,
         * WAL keeps its index in memory (no -shm file, no lock calls per
         * transaction: the hot path's commits cost only their writes), and a
         * second daemon on the same directory is refused instead of
         * interleaving its writes. */
        if (query_text(s, "PRAGMA locking_mode = EXCLUSIVE", buf, sizeof(buf)) != SQLITE_OK)
                return open_error(s, "locking it", ret_reason);
        if (query_text(s, "PRAGMA journal_mode = WAL", buf, sizeof(buf)) != SQLITE_OK)
                return open_error(s, "reading it", ret_reason);
        if (strcmp(buf, "wal") != 0) {
                reason_set(ret_reason,
                           "%s: the file system does not support SQLite's WAL mode (journal mode stayed "
                           "\"%s\"): "
                           "put state_directory on a local file system",
                           s->path, buf);
                return -EOPNOTSUPP;
        }
        if (flags & STORE_OPEN_CHECK) {
                if (query_text(s, "PRAGMA quick_check(1)", buf, sizeof(buf)) != SQLITE_OK)
                        return open_error(s, "checking it", ret_reason);
                if (strcmp(buf, "ok") != 0) {
                        reason_set(
                                ret_reason,
                                "%s is damaged (quick_check: %s). Move it away to start with empty windows "
                                "and history (what it held is lost), or put back a backup",
                                s->path, buf);
                        return -EBADMSG;
                }
        }
        snprintf(sql, sizeof(sql), "PRAGMA synchronous = %s", sync == STORE_SYNC_FULL ? "FULL" : "NORMAL");
        if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
                return open_error(s, "setting synchronous", ret_reason);
        /* Checkpoints (copying the WAL into the file, with an fdatasync of
         * each) run inside a commit and block the loop: every 4096 pages
         * (16 MiB of WAL) instead of SQLite's 1000, a fourth as often, and
         * pages rewritten in between are copied once. The WAL file is cut
         * back to 32 MiB after one. A 16 MiB page cache keeps the pages the
         * commits touch and the tables' upper levels in memory. */
        if (sqlite3_exec(s->db,
                         "PRAGMA wal_autocheckpoint = 4096; PRAGMA journal_size_limit = 33554432;"
                         " PRAGMA cache_size = -16384",
                         NULL, NULL, NULL) != SQLITE_OK)
                return open_error(s, "setting the checkpoint interval", ret_reason);
        r = check_version(s, ret_reason);
        if (r < 0)
                return r;
        return probe_tables(s, ret_reason);
}

static int prepare_all(Store *s, char **ret_reason) {
        for (size_t i = 0; i < _STMT_MAX; i++)
                if (sqlite3_prepare_v3(s->db, statement_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->stmt[i],
                                       NULL) != SQLITE_OK)
                        return open_error(s, "preparing statements", ret_reason);
        return 0;
}

static int hex_decode(const char *hex, uint8_t *out, size_t n) {
        if (!hex || strlen(hex) != n * 2)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                unsigned v;

                if (sscanf(hex + 2 * i, "%2x", &v) != 1)
                        return -EINVAL;
                out[i] = (uint8_t)v;
        }
        return 0;
}

/* Reads the ledger key, creating it at the first open. */
static int load_ledger_key(Store *s, char **ret_reason) {
        char hex[64], sql[128];

        if (query_text(s, "SELECT value FROM meta WHERE key = 'ledger_key'", hex, sizeof(hex)) != SQLITE_OK)
                return open_error(s, "reading the ledger key", ret_reason);
        if (hex[0])
                return hex_decode(hex, s->ledger_key, sizeof(s->ledger_key)) < 0
                               ? (reason_set(
                                          ret_reason,
                                          "%s: the ledger key in table meta is not 32 hex digits: move the "
                                          "file away",
                                          s->path),
                                  -EBADMSG)
                               : 0;
        if (getrandom(s->ledger_key, sizeof(s->ledger_key), 0) != (ssize_t)sizeof(s->ledger_key))
                return -errno;
        for (size_t i = 0; i < sizeof(s->ledger_key); i++)
                snprintf(hex + 2 * i, 3, "%02x", s->ledger_key[i]);
        snprintf(sql, sizeof(sql), "INSERT INTO meta(key, value) VALUES('ledger_key', '%s')", hex);
        if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
                return open_error(s, "writing the ledger key", ret_reason);
        return 0;
}

/* ---- replaying the commit log ---- */

typedef struct LogReader {
        const uint8_t *p, *start, *end;
        bool bad, nomem;
        int format;           /* 1 or 2 (see the encoding) */
        const char **strings; /* format 2: the row's strings so far */
        size_t n_strings, cap_strings;
        uint64_t id, usec, second; /* format 2: the previous record's */
} LogReader;

static uint64_t rd_u64(LogReader *rd) {
        uint64_t v = 0;

        for (unsigned shift = 0; shift < 64; shift += 7) {
                uint8_t b;

                if (rd->p >= rd->end)
                        break;
                b = *rd->p++;
                v |= (uint64_t)(b & 0x7f) << shift;
                if (!(b & 0x80))
                        return v;
        }
        rd->bad = true;
        return 0;
}

static int64_t rd_i64(LogReader *rd) {
        uint64_t u = rd_u64(rd);
        return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

static const char *rd_str(LogReader *rd) {
        uint64_t n = rd_u64(rd);
        const char *str = (const char *)rd->p;

        if (rd->bad || n == 0)
                return NULL;
        if (rd->format == 2) {
                if (n & 1) { /* one this row defined */
                        if ((n >> 1) >= rd->n_strings) {
                                rd->bad = true;
                                return NULL;
                        }
                        return rd->strings[n >> 1];
                }
                n >>= 1;
        }
        if (n > (uint64_t)(rd->end - rd->p) || rd->p[n - 1] != 0 || memchr(str, 0, n - 1)) {
                rd->bad = true;
                return NULL;
        }
        rd->p += n;
        if (rd->format == 2) {
                if (grow((void **)&rd->strings, &rd->cap_strings, rd->n_strings, sizeof(*rd->strings)) < 0) {
                        rd->nomem = rd->bad = true;
                        return NULL;
                }
                rd->strings[rd->n_strings++] = str;
        }
        return str;
}

/* An id, time or second: format 2 writes the difference from *last. */
static uint64_t rd_delta(LogReader *rd, uint64_t *last) {
        uint64_t u = rd_u64(rd);

        if (rd->format != 2)
                return u;
        *last += (uint64_t)((int64_t)(u >> 1) ^ -(int64_t)(u & 1));
        return *last;
}

static size_t rd_scopes(LogReader *rd, const char *scopes[static STORE_SCOPES_MAX]) {
        uint64_t n = rd_u64(rd);

        if (n > STORE_SCOPES_MAX) {
                rd->bad = true;
                return 0;
        }
        for (size_t i = 0; i < n; i++)
                if (!(scopes[i] = rd_str(rd)))
                        rd->bad = true;
        return rd->bad ? 0 : n;
}

static uint32_t rd_u32(LogReader *rd) {
        uint64_t v = rd_u64(rd);

        if (v > UINT32_MAX)
                rd->bad = true;
        return (uint32_t)v;
}

static int32_t rd_i32(LogReader *rd) {
        int64_t v = rd_i64(rd);

        if (v < INT32_MIN || v > INT32_MAX)
                rd->bad = true;
        return (int32_t)v;
}

/* Stages one record; -EBADMSG when it is not one. */
static int replay_record(Store *s, LogReader *rd) {
        const char *scopes[STORE_SCOPES_MAX];
        uint8_t kind = *rd->p++;
        int r = 0;

        switch (kind) {
        case LOG_USAGE: {
                const char *scope = rd_str(rd);
                uint64_t second = rd_delta(rd, &rd->second), tokens = rd_u64(rd);

                if (!rd->bad)
                        r = store_add_usage(s, scope, second, tokens);
                break;
        }
        case LOG_ALLOC_PUT: {
                StoreAllocation a = {.id = rd_delta(rd, &rd->id)};

                a.granted_usec = rd_delta(rd, &rd->usec);
                a.granted = rd_u64(rd);
                a.reservation = rd_u64(rd);
                a.estimate = rd_u64(rd);
                a.input = rd_u64(rd);
                a.output = rd_u64(rd);
                a.priority = rd_i32(rd);
                a.pid = rd_i64(rd);
                a.uid = rd_u32(rd);
                a.comm = rd_str(rd);
                a.agent = rd_str(rd);
                a.class_name = rd_str(rd);
                a.model = rd_str(rd);
                a.unit = rd_str(rd);
                a.n_scopes = rd_scopes(rd, scopes);
                a.scopes = scopes;
                if (!rd->bad)
                        r = store_put_allocation(s, &a);
                break;
        }
        case LOG_ALLOC_USAGE: {
                uint64_t id = rd_delta(rd, &rd->id), input = rd_u64(rd), output = rd_u64(rd);

                if (!rd->bad)
                        r = store_put_allocation_usage(s, id, input, output);
                break;
        }
        case LOG_ALLOC_DROP: {
                uint64_t id = rd_delta(rd, &rd->id);

                if (!rd->bad)
                        r = store_drop_allocation(s, id);
                break;
        }
        case LOG_HISTORY: {
                StoreHistoryRow h = {.realtime_usec = rd_delta(rd, &rd->usec)};

                h.uid = rd_u32(rd);
                h.user = rd_str(rd);
                h.unit = rd_str(rd);
                h.comm = rd_str(rd);
                h.agent = rd_str(rd);
                h.class_name = rd_str(rd);
                h.model = rd_str(rd);
                h.priority = rd_i32(rd);
                h.estimate = rd_u64(rd);
                h.granted = rd_u64(rd);
                h.input = rd_u64(rd);
                h.output = rd_u64(rd);
                h.outcome = (StoreOutcome)rd_u32(rd);
                h.count = rd_u64(rd);
                h.n_scopes = rd_scopes(rd, scopes);
                h.scopes = scopes;
                if (!rd->bad)
                        r = store_add_history(s, &h);
                break;
        }
        case LOG_META: {
                const char *key = rd_str(rd);
                uint64_t value = rd_u64(rd);

                if (!rd->bad)
                        r = store_meta_put_u64(s, key, value);
                break;
        }
        case LOG_ESTIMATOR: {
                uint32_t uid = rd_u32(rd);
                const char *class_name = rd_str(rd);
                uint64_t seen = rd_u64(rd);
                const char *state = rd_str(rd);

                if (!rd->bad)
                        r = store_put_estimator(s, uid, class_name, seen, state);
                break;
        }
        default:
                rd->bad = true;
        }
        if (rd->nomem)
                return -ENOMEM;
        if (rd->bad || r == -EINVAL)
                return -EBADMSG;
        return r;
}

/* Stages what the commit log holds, row by row in order, applying (and
 * deleting the rows applied) whenever as much is staged as a commit would
 * apply, and at the end: the tables are then whole and the log empty. */
static int replay_log(Store *s, char **ret_reason) {
        LogReader rd = {};
        sqlite3_stmt *st = NULL;
        int64_t seq = 0;
        uint64_t rows = 0;
        int r = 0, rc;

        if (sqlite3_prepare_v2(s->db, "SELECT seq, ops FROM log WHERE seq > ?1 ORDER BY seq LIMIT 1", -1,
                               &st, NULL) != SQLITE_OK)
                return open_error(s, "reading its commit log", ret_reason);
        s->replaying = true;
        for (;;) {
                sqlite3_bind_int64(st, 1, seq);
                rc = sqlite3_step(st);
                if (rc != SQLITE_ROW)
                        break;
                seq = sqlite3_column_int64(st, 0);
                rd = (LogReader){.strings = rd.strings, .cap_strings = rd.cap_strings, .format = 1};
                rd.start = rd.p = sqlite3_column_blob(st, 1);
                rd.end = rd.p + sqlite3_column_bytes(st, 1);
                if (rd.p < rd.end && *rd.p == LOG_FORMAT_2) {
                        rd.format = 2;
                        rd.p++;
                }
                while (r >= 0 && rd.p < rd.end)
                        r = replay_record(s, &rd);
                sqlite3_reset(st);
                if (r == -EBADMSG) {
                        reason_set(
                                ret_reason,
                                "%s: row %lld of its commit log (table log) is damaged (byte %zu of %zu). "
                                "Move the file away to start with empty windows and history (what it "
                                "held is lost), or put back a backup",
                                s->path, (long long)seq, (size_t)(rd.p - rd.start),
                                (size_t)(rd.end - rd.start));
                        break;
                }
                if (r < 0) {
                        reason_set(ret_reason, "%s: replaying row %lld of its commit log: %s", s->path,
                                   (long long)seq, strerror(-r));
                        break;
                }
                s->log_rows = ++rows;
                if (staged_count(s) >= s->apply_ops) {
                        r = apply(s, seq);
                        if (r < 0)
                                break;
                        s->log_rows = rows = 0;
                }
        }
        sqlite3_finalize(st);
        free(rd.strings);
        if (r >= 0 && rc != SQLITE_DONE)
                r = open_error(s, "reading its commit log", ret_reason);
        if (r >= 0)
                r = apply(s, INT64_MAX);
        s->replaying = false;
        if (r < 0 && ret_reason && !*ret_reason)
                reason_set(ret_reason, "%s: applying its commit log failed: %s", s->path,
                           store_error_message(s) ?: strerror(-r));
        s->log_rows = 0;
        return r;
}

int store_open(const char *path, StoreSync sync, unsigned flags, Store **ret, char **ret_reason) {
        Store *s;
        int r;

        assert(ret);
        if (ret_reason)
                *ret_reason = NULL;
        if (!path || !*path || (unsigned)sync >= _STORE_SYNC_MAX)
                return -EINVAL;
        r = check_directory(path, ret_reason);
        if (r < 0)
                return r;
        r = check_file(path, ret_reason);
        if (r < 0)
                return r;
        r = check_truncated(path, ret_reason);
        if (r < 0)
                return r;

        s = calloc(1, sizeof(*s));
        if (!s)
                return -ENOMEM;
        s->path = strdup(path);
        s->sync = sync;
        s->apply_ops = STORE_APPLY_OPS;
        s->alloc_by_id = hashmap_new();
        if (getrandom(&s->pool.seed, sizeof(s->pool.seed), 0) != (ssize_t)sizeof(s->pool.seed))
                s->pool.seed = (uint64_t)(uintptr_t)s ^ (uint64_t)getpid(); /* only the pool's spread */
        if (!s->path || !s->alloc_by_id) {
                store_free(s);
                return -ENOMEM;
        }
        if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                            NULL) != SQLITE_OK)
                r = open_error(s, "opening it", ret_reason);
        if (r >= 0)
                r = configure(s, sync, flags, ret_reason);
        if (r >= 0)
                r = prepare_all(s, ret_reason);
        if (r >= 0)
                r = load_ledger_key(s, ret_reason);
        if (r >= 0)
                r = replay_log(s, ret_reason);
        if (r < 0) {
                store_free(s);
                return r;
        }
        *ret = s;
        return 0;
}

Store *store_free(Store *s) {
        if (!s)
                return NULL;
        staging_clear(s);
        for (size_t i = 0; i < _STMT_MAX; i++)
                sqlite3_finalize(s->stmt[i]);
        sqlite3_close(s->db);
        cells_free(&s->usage);
        cells_free(&s->hourly);
        pool_free(&s->pool);
        free(s->allocs);
        hashmap_free(s->alloc_by_id);
        free(s->history);
        free(s->meta);
        free(s->estimators);
        varlink_buffer_clear(&s->log);
        free(s->path);
        free(s);
        return NULL;
}

/* ---- reading ---- */

static int prepare(Store *s, const char *sql, sqlite3_stmt **ret) {
        if (sqlite3_prepare_v2(s->db, sql, -1, ret, NULL) != SQLITE_OK)
                return db_error(s, "preparing a query");
        return 0;
}

int store_meta_get_u64(Store *s, const char *key, uint64_t *ret) {
        sqlite3_stmt *st;
        int r, rc;

        assert(s && key && ret);
        for (size_t i = 0; i < s->n_meta; i++)
                if (strcmp(s->meta[i].key, key) == 0) {
                        *ret = s->meta[i].value;
                        return 0;
                }
        r = prepare(s, "SELECT value FROM meta WHERE key = ?1", &st);
        if (r < 0)
                return r;
        bind_text(st, 1, key);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                *ret = column_u64(st, 0);
        r = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : db_error(s, "reading meta");
        sqlite3_finalize(st);
        return r;
}

/* Steps st, calling row(userdata) for each row; finalizes it. */
static int each_row(Store *s, sqlite3_stmt *st, int (*row)(sqlite3_stmt *st, void *cb, void *userdata),
                    void *cb, void *userdata, const char *what) {
        int n = 0, r = 0, rc;

        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                r = row(st, cb, userdata);
                if (r < 0)
                        break;
                n++;
        }
        if (r >= 0 && rc != SQLITE_DONE)
                r = db_error(s, what);
        sqlite3_finalize(st);
        return r < 0 ? r : n;
}

static int usage_row(sqlite3_stmt *st, void *cb, void *userdata) {
        return ((StoreUsageFunc)cb)(userdata, column_text(st, 0), column_u64(st, 1), column_u64(st, 2));
}

int store_load_usage(Store *s, uint64_t since_sec, StoreUsageFunc cb, void *userdata) {
        sqlite3_stmt *st;
        int r;

        assert(s && cb);
        (void)store_apply(s); /* the tables hold everything staged */
        r = prepare(s, "SELECT scope, second, tokens FROM usage WHERE second >= ?1 ORDER BY scope, second",
                    &st);
        if (r < 0)
                return r;
        bind_u64(st, 1, since_sec > INT64_MAX ? INT64_MAX : since_sec);
        return each_row(s, st, usage_row, (void *)cb, userdata, "loading usage");
}

static int allocation_row(sqlite3_stmt *st, void *cb, void *userdata) {
        const char *scopes[STORE_SCOPES_MAX];
        _cleanup_free_ char *joined = NULL;
        StoreAllocation a = {
                .id = (uint64_t)sqlite3_column_int64(st, 0),
                .granted_usec = column_u64(st, 1),
                .granted = column_u64(st, 2),
                .reservation = column_u64(st, 3),
                .estimate = column_u64(st, 4),
                .input = column_u64(st, 5),
                .output = column_u64(st, 6),
                .priority = sqlite3_column_int(st, 7),
                .pid = sqlite3_column_int64(st, 8),
                .uid = (uint32_t)sqlite3_column_int64(st, 9),
                .comm = column_text(st, 10),
                .agent = column_text(st, 11),
                .class_name = column_text(st, 12),
                .model = column_text(st, 13),
                .unit = column_text(st, 14),
                .scopes = scopes,
        };

        if (column_text(st, 15) && *column_text(st, 15)) {
                joined = strdup(column_text(st, 15));
                if (!joined)
                        return -ENOMEM;
                for (char *p = joined, *save = NULL, *t; (t = strtok_r(p, "\n", &save)); p = NULL)
                        if (a.n_scopes < STORE_SCOPES_MAX)
                                scopes[a.n_scopes++] = t;
        }
        return ((StoreAllocationFunc)cb)(userdata, &a);
}

int store_load_allocations(Store *s, StoreAllocationFunc cb, void *userdata) {
        sqlite3_stmt *st;
        int r;

        assert(s && cb);
        (void)store_apply(s); /* the tables hold everything staged */
        r = prepare(
                s,
                "SELECT id, granted_usec, granted, reservation, estimate, input, output, priority, pid, uid,"
                " comm, agent, class, model, unit, scopes FROM allocations ORDER BY id",
                &st);
        if (r < 0)
                return r;
        return each_row(s, st, allocation_row, (void *)cb, userdata, "loading allocations");
}

static int limit_row(sqlite3_stmt *st, void *cb, void *userdata) {
        return ((StoreLimitFunc)cb)(userdata, column_text(st, 0), column_text(st, 1),
                                    sqlite3_column_int64(st, 2));
}

int store_load_limits(Store *s, StoreLimitFunc cb, void *userdata) {
        sqlite3_stmt *st;
        int r;

        assert(s && cb);
        (void)store_apply(s); /* the tables hold everything staged */
        r = prepare(s, "SELECT scope, field, value FROM limits ORDER BY scope, field", &st);
        if (r < 0)
                return r;
        return each_row(s, st, limit_row, (void *)cb, userdata, "loading limits");
}

static int run_write(Store *s, sqlite3_stmt *st, const char *what) {
        int rc = sqlite3_step(st);
        int r = rc == SQLITE_DONE ? 0 : db_error(s, what);

        sqlite3_finalize(st);
        return r;
}

static int estimator_row(sqlite3_stmt *st, void *cb, void *userdata) {
        sqlite3_int64 uid = sqlite3_column_int64(st, 0);

        if (uid < 0 || uid > UINT32_MAX || !column_text(st, 1) || !column_text(st, 3))
                return 0; /* not a row this daemon wrote: skipped */
        return ((StoreEstimatorFunc)cb)(userdata, (uint32_t)uid, column_text(st, 1), column_u64(st, 2),
                                        column_text(st, 3));
}

int store_load_estimators(Store *s, uint64_t seen_since_usec, StoreEstimatorFunc cb, void *userdata) {
        sqlite3_stmt *st;
        int r;

        assert(s && cb);
        (void)store_apply(s); /* the tables hold everything staged */
        /* Classes unseen since then are forgotten, here as in memory. */
        r = prepare(s, "DELETE FROM estimators WHERE seen_usec < ?1", &st);
        if (r < 0)
                return r;
        bind_u64(st, 1, seen_since_usec);
        r = run_write(s, st, "forgetting old estimator state");
        if (r < 0)
                return r;
        r = prepare(s, "SELECT uid, class, seen_usec, state FROM estimators ORDER BY uid, class", &st);
        if (r < 0)
                return r;
        return each_row(s, st, estimator_row, (void *)cb, userdata, "loading estimator state");
}

static int breaker_row(sqlite3_stmt *st, void *cb, void *userdata) {
        StoreBreaker b = {
                .name = column_text(st, 0),
                .disc = column_u64(st, 1),
                .state = column_text(st, 2),
                .breaches = (uint32_t)sqlite3_column_int64(st, 3),
                .cooldown_usec = column_u64(st, 4),
                .until_usec = column_u64(st, 5),
                .owner = sqlite3_column_int64(st, 6),
        };
        return ((StoreBreakerFunc)cb)(userdata, &b);
}

int store_load_breakers(Store *s, StoreBreakerFunc cb, void *userdata) {
        sqlite3_stmt *st;
        int r;

        assert(s && cb);
        (void)store_apply(s); /* the tables hold everything staged */
        r = prepare(s,
                    "SELECT name, disc, state, breaches, cooldown_usec, until_usec, owner FROM breakers "
                    "ORDER BY "
                    "name, disc",
                    &st);
        if (r < 0)
                return r;
        return each_row(s, st, breaker_row, (void *)cb, userdata, "loading breakers");
}

/* ---- written at once ---- */

/* Runs a prepared write in its own (implicit) transaction and finalizes it. */

int store_put_limit(Store *s, const char *scope, const char *field, int64_t value) {
        sqlite3_stmt *st;
        int r;

        assert(s);
        if (!scope || !*scope || !field || !*field)
                return -EINVAL;
        r = prepare(s, "INSERT OR REPLACE INTO limits(scope, field, value) VALUES(?1, ?2, ?3)", &st);
        if (r < 0)
                return r;
        bind_text(st, 1, scope);
        bind_text(st, 2, field);
        sqlite3_bind_int64(st, 3, value);
        return run_write(s, st, "writing a limit");
}

int store_delete_limit(Store *s, const char *scope, const char *field) {
        sqlite3_stmt *st;
        int r;

        assert(s);
        if (!scope)
                return -EINVAL;
        r = prepare(s, "DELETE FROM limits WHERE scope = ?1 AND (?2 IS NULL OR field = ?2)", &st);
        if (r < 0)
                return r;
        bind_text(st, 1, scope);
        bind_text(st, 2, field);
        return run_write(s, st, "deleting a limit");
}

int store_put_breaker(Store *s, const StoreBreaker *b) {
        sqlite3_stmt *st;
        int r;

        assert(s);
        if (!b || !b->name || !b->state || b->disc > INT64_MAX)
                return -EINVAL;
        r = prepare(s,
                    "INSERT OR REPLACE INTO breakers(name, disc, state, breaches, cooldown_usec, until_usec,"
                    " owner) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    &st);
        if (r < 0)
                return r;
        bind_text(st, 1, b->name);
        bind_u64(st, 2, b->disc);
        bind_text(st, 3, b->state);
        sqlite3_bind_int64(st, 4, b->breaches);
        bind_u64(st, 5, b->cooldown_usec);
        bind_u64(st, 6, b->until_usec);
        sqlite3_bind_int64(st, 7, b->owner);
        return run_write(s, st, "writing a breaker");
}

int store_delete_breaker(Store *s, const char *name, uint64_t disc) {
        sqlite3_stmt *st;
        int r;

        assert(s);
        if (!name || disc > INT64_MAX)
                return -EINVAL;
        r = prepare(s, "DELETE FROM breakers WHERE name = ?1 AND disc = ?2", &st);
        if (r < 0)
                return r;
        bind_text(st, 1, name);
        bind_u64(st, 2, disc);
        return run_write(s, st, "deleting a breaker");
}

/* ---- history ---- */

static const char *const group_key_sql[_STORE_GROUP_MAX] = {
        [STORE_GROUP_USER] = "uid",
        [STORE_GROUP_UNIT] = "unit",
        [STORE_GROUP_AGENT] = "agent",
        [STORE_GROUP_CLASS] = "class",
        [STORE_GROUP_MODEL] = "model",
        [STORE_GROUP_HOUR] = "realtime_usec / 3600000000 * 3600000000",
        [STORE_GROUP_DAY] = "(realtime_usec + ?5) / 86400000000 * 86400000000 - ?5",
};

typedef struct HistoryCtx {
        StoreGroup group;
        StoreHistoryFunc cb;
        void *userdata;
} HistoryCtx;

static int history_row(sqlite3_stmt *st, void *cb, void *userdata) {
        HistoryCtx *ctx = userdata;
        StoreHistoryGroup g = {
                .requests = column_u64(st, 2),
                .refused = column_u64(st, 3),
                .tokens_in = column_u64(st, 4),
                .tokens_out = column_u64(st, 5),
                .granted = column_u64(st, 6),
        };

        switch (ctx->group) {
        case STORE_GROUP_USER:
                g.key_uid = (uint32_t)sqlite3_column_int64(st, 0);
                g.key = column_text(st, 1);
                break;
        case STORE_GROUP_HOUR:
        case STORE_GROUP_DAY:
                g.key_usec = column_u64(st, 0);
                break;
        default:
                g.key = column_text(st, 0);
        }
        return ctx->cb(ctx->userdata, &g);
}

int store_history_query(Store *s, const StoreQuery *q, StoreHistoryFunc cb, void *userdata) {
        _cleanup_free_ char *sql = NULL;
        HistoryCtx ctx;
        sqlite3_stmt *st;
        int r;

        assert(s && cb);
        if (!q || (unsigned)q->group >= _STORE_GROUP_MAX || q->since_usec > INT64_MAX ||
            q->until_usec > INT64_MAX || (q->until_usec && q->until_usec < q->since_usec) ||
            q->utc_offset_sec < -86400 || q->utc_offset_sec > 86400)
                return -EINVAL;
        /* What the last commits logged is in the answer; when the apply
         * fails (the error is kept for Status), the tables as they are. */
        (void)store_apply(s);
        if (asprintf(&sql,
                     "SELECT %s, max(user),"
                     " sum(CASE outcome WHEN 'refused' THEN 0 ELSE count END),"
                     " sum(CASE outcome WHEN 'refused' THEN count ELSE 0 END),"
                     " sum(input), sum(output), sum(granted)"
                     " FROM history WHERE realtime_usec >= ?1%s%s GROUP BY 1 ORDER BY 1",
                     group_key_sql[q->group], q->until_usec ? " AND realtime_usec < ?2" : "",
                     q->filter_uid ? " AND uid = ?3" : "") < 0)
                return -ENOMEM;
        r = prepare(s, sql, &st);
        if (r < 0)
                return r;
        bind_u64(st, 1, q->since_usec);
        if (q->until_usec)
                bind_u64(st, 2, q->until_usec);
        if (q->filter_uid)
                sqlite3_bind_int64(st, 3, q->uid);
        if (q->group == STORE_GROUP_DAY)
                sqlite3_bind_int64(st, 5, (sqlite3_int64)q->utc_offset_sec * 1000000);
        ctx = (HistoryCtx){.group = q->group, .cb = cb, .userdata = userdata};
        return each_row(s, st, history_row, NULL, &ctx, "querying history");
}

/* ---- pruning ---- */

static const char *const prune_sql[] = {
        "DELETE FROM history WHERE id IN (SELECT id FROM history WHERE realtime_usec < ?1 LIMIT ?2)",
        "DELETE FROM hourly WHERE (hour, scope) IN (SELECT hour, scope FROM hourly WHERE hour < ?1 LIMIT "
        "?2)",
        "DELETE FROM usage WHERE (second, scope) IN (SELECT second, scope FROM usage WHERE second < ?1 "
        "LIMIT ?2)",
};

int store_prune_step(Store *s, uint64_t history_before_usec, uint64_t usage_before_sec, size_t max_rows) {
        const uint64_t before[ELEMENTSOF(prune_sql)] = {
                history_before_usec,
                history_before_usec / USEC_PER_HOUR, /* hourly rows whose hour began before it */
                usage_before_sec,
        };
        size_t done = 0;
        int r = 0;

        assert(s);
        if (max_rows == 0)
                return 0;
        (void)store_apply(s); /* old rows still in the commit log are pruned too */
        if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
                return db_error(s, "beginning pruning");
        for (size_t i = 0; i < ELEMENTSOF(prune_sql) && done < max_rows && r >= 0; i++) {
                sqlite3_stmt *st;

                r = prepare(s, prune_sql[i], &st);
                if (r < 0)
                        break;
                bind_u64(st, 1, before[i] > INT64_MAX ? INT64_MAX : before[i]);
                bind_u64(st, 2, max_rows - done);
                r = run_write(s, st, "pruning");
                if (r >= 0)
                        done += (size_t)sqlite3_changes(s->db);
        }
        if (r >= 0 && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
                r = db_error(s, "committing pruning");
        if (r < 0) {
                rollback(s);
                return r;
        }
        return (int)(done > INT32_MAX ? INT32_MAX : done);
}
