/* SPDX-License-Identifier: MIT */
/*
 * The durable store (daemon/store.c) against real SQLite files in private
 * temporary directories: what is committed comes back exactly after a
 * reopen and nothing staged-but-uncommitted does; 10,000 staged operations
 * are one transaction (one commit frame in the WAL); a newer schema, random
 * bytes, a truncated file, a foreign database, an unreadable file and a
 * missing directory refuse with a reason naming the file; migrations from
 * every earlier version; a full disk (a 2 MiB tmpfs in a private mount
 * namespace, root only) fails commits with -ENOSPC keeping what was staged,
 * and the commit after space is freed loses nothing; history queries for
 * every grouping; pruning in bounded steps; the commit log: a commit is a
 * log row, a close without an apply (kill -9) is replayed at the next open
 * exactly once, a commit applies once STORE_APPLY_OPS are staged, a damaged
 * log row refuses the open. Prints staged operations per
 * second at commit for synchronous=NORMAL and FULL (a figure, not a check).
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "macro.h"
#include "store.h"
#include "tb-check.h"

#define T0_USEC UINT64_C(1700000000000000) /* 2023-11-14 22:13:20 UTC */
#define HOUR    UINT64_C(3600000000)
#define DAY     (24 * HOUR)

typedef struct Dir {
        char path[256];
        char db[300];
} Dir;

static void dir_init(Dir *d) {
        snprintf(d->path, sizeof(d->path), "/tmp/test-store-XXXXXX");
        ck_assert_ptr_nonnull(mkdtemp(d->path));
        snprintf(d->db, sizeof(d->db), "%s/tokenbudget.db", d->path);
}

static void dir_done(Dir *d) {
        char cmd[300];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->path);
        ck_assert_int_eq(system(cmd), 0);
}

static Store *open_ok(const char *path, StoreSync sync) {
        Store *s = NULL;
        char *reason = NULL;
        int r = store_open(path, sync, STORE_OPEN_CHECK, &s, &reason);

        ck_assert_msg(r == 0, "store_open(%s): %d: %s", path, r, reason ?: "(no reason)");
        free(reason);
        return s;
}

/* Opening must fail with want, and the reason name the file and contain
 * every word given. */
static void open_refused(const char *path, int want, const char *const *words) {
        Store *s = NULL;
        char *reason = NULL;
        int r = store_open(path, STORE_SYNC_NORMAL, 0, &s, &reason);

        ck_assert_msg(r == want, "store_open(%s) = %d (%s), want %d", path, r, strerror(-r), want);
        ck_assert_ptr_null(s);
        ck_assert_ptr_nonnull(reason);
        ck_assert_msg(strstr(reason, path), "reason does not name %s: %s", path, reason);
        for (size_t i = 0; words && words[i]; i++)
                ck_assert_msg(strstr(reason, words[i]), "reason lacks \"%s\": %s", words[i], reason);
        printf("refused as expected: %s\n", reason);
        free(reason);
}

/* Plain SQL on a file, as another program (or an earlier version) would. */
static void sql_exec(const char *path, const char *sql) {
        sqlite3 *db = NULL;
        char *err = NULL;

        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        ck_assert_msg(sqlite3_exec(db, sql, NULL, NULL, &err) == SQLITE_OK, "%s: %s", sql, err);
        sqlite3_close(db);
}

static long long sql_int(const char *path, const char *sql) {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        long long v;

        ck_assert_int_eq(sqlite3_open(path, &db), SQLITE_OK);
        ck_assert_int_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
        ck_assert_int_eq(sqlite3_step(st), SQLITE_ROW);
        v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return v;
}

/* ---- collecting what loads give ---- */

typedef struct Loaded {
        char text[16384];
        size_t len;
        unsigned n;
} Loaded;

static void loaded_add(Loaded *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void loaded_add(Loaded *l, const char *fmt, ...) {
        va_list ap;

        va_start(ap, fmt);
        l->len += (size_t)vsnprintf(l->text + l->len, sizeof(l->text) - l->len, fmt, ap);
        va_end(ap);
        ck_assert_uint_lt(l->len, sizeof(l->text));
        l->n++;
}

static int usage_cb(void *userdata, const char *scope, uint64_t second, uint64_t tokens) {
        loaded_add(userdata, "%s@%ju=%ju;", scope, (uintmax_t)second, (uintmax_t)tokens);
        return 0;
}

static int count_cb(void *userdata, const char *scope, uint64_t second, uint64_t tokens) {
        return 0;
}

static int allocation_cb(void *userdata, const StoreAllocation *a) {
        loaded_add(userdata, "%ju:%ju/%ju/%ju/%ju/%ju/%ju/%d/%jd/%u/%s/%s/%s/%s/%s/[", (uintmax_t)a->id,
                   (uintmax_t)a->granted_usec, (uintmax_t)a->granted, (uintmax_t)a->reservation,
                   (uintmax_t)a->estimate, (uintmax_t)a->input, (uintmax_t)a->output, a->priority,
                   (intmax_t)a->pid, a->uid, a->comm ?: "-", a->agent ?: "-", a->class_name ?: "-",
                   a->model ?: "-", a->unit ?: "-");
        for (size_t i = 0; i < a->n_scopes; i++)
                loaded_add(userdata, "%s,", a->scopes[i]);
        loaded_add(userdata, "];");
        return 0;
}

static int limit_cb(void *userdata, const char *scope, const char *field, int64_t value) {
        loaded_add(userdata, "%s.%s=%jd;", scope, field, (intmax_t)value);
        return 0;
}

static int breaker_cb(void *userdata, const StoreBreaker *b) {
        loaded_add(userdata, "%s#%ju=%s/%u/%ju/%ju/%jd;", b->name, (uintmax_t)b->disc, b->state, b->breaches,
                   (uintmax_t)b->cooldown_usec, (uintmax_t)b->until_usec, (intmax_t)b->owner);
        return 0;
}

static int group_cb(void *userdata, const StoreHistoryGroup *g) {
        loaded_add(userdata, "%s|%u|%ju:%ju,%ju,%ju,%ju,%ju;", g->key ?: "-", g->key_uid,
                   (uintmax_t)g->key_usec, (uintmax_t)g->requests, (uintmax_t)g->refused,
                   (uintmax_t)g->tokens_in, (uintmax_t)g->tokens_out, (uintmax_t)g->granted);
        return 0;
}

static const char *load_all(Store *s, Loaded *l) {
        *l = (Loaded){};
        ck_assert_int_ge(store_load_usage(s, 0, usage_cb, l), 0);
        loaded_add(l, "|");
        ck_assert_int_ge(store_load_allocations(s, allocation_cb, l), 0);
        loaded_add(l, "|");
        ck_assert_int_ge(store_load_limits(s, limit_cb, l), 0);
        loaded_add(l, "|");
        ck_assert_int_ge(store_load_breakers(s, breaker_cb, l), 0);
        return l->text;
}

static const char *const scopes_ab[] = {"user:1000", "unit:a.service"};

static StoreAllocation allocation(uint64_t id, uint64_t input) {
        return (StoreAllocation){
                .id = id,
                .granted_usec = T0_USEC + id,
                .granted = 1000 + id,
                .reservation = 1200 + id,
                .estimate = 900 + id,
                .input = input,
                .output = input / 2,
                .priority = -3,
                .pid = 4242,
                .uid = 1000,
                .comm = "agent-bin",
                .agent = "coder",
                .class_name = "batch",
                .model = "llama",
                .unit = "a.service",
                .scopes = scopes_ab,
                .n_scopes = 2,
        };
}

static StoreHistoryRow history(uint64_t t, uint32_t uid, const char *unit, StoreOutcome o, uint64_t in,
                               uint64_t out) {
        return (StoreHistoryRow){
                .realtime_usec = t,
                .uid = uid,
                .user = uid == 0 ? "root" : "alice",
                .unit = unit,
                .comm = "bin",
                .agent = uid == 0 ? "ops" : "coder",
                .class_name = o == STORE_OUTCOME_REFUSED ? "bulk" : "interactive",
                .model = in > 100 ? "big" : "small",
                .estimate = 10,
                .granted = o == STORE_OUTCOME_REFUSED ? 0 : 100,
                .input = in,
                .output = out,
                .outcome = o,
                .scopes = scopes_ab,
                .n_scopes = 2,
        };
}

/* ---- round trip ---- */

START_TEST(test_round_trip) {
        Dir d;
        Store *s;
        Loaded l;
        StoreAllocation a;
        StoreHistoryRow h;
        uint8_t key1[16], key2[16];
        uint64_t serial = 0;
        char before[sizeof(l.text)];

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        ck_assert(!store_pending(s));
        store_ledger_key(s, key1);
        ck_assert_int_eq(store_add_usage(s, "user:1000", 1700000000, 5), 0);
        ck_assert_int_eq(store_add_usage(s, "user:1000", 1700000000, 7), 0); /* merges */
        ck_assert_int_eq(store_add_usage(s, "user:1000", 1700000001, 1), 0);
        ck_assert_int_eq(store_add_usage(s, "unit:a.service", 1700000000, 12), 0);
        ck_assert_uint_eq(store_staged(s), 3);
        a = allocation(1, 10);
        ck_assert_int_eq(store_put_allocation(s, &a), 0);
        a = allocation(2, 20);
        ck_assert_int_eq(store_put_allocation(s, &a), 0);
        a = allocation(2, 25); /* the latest wins */
        a.comm = NULL;
        ck_assert_int_eq(store_put_allocation(s, &a), 0);
        a = allocation(3, 30);
        ck_assert_int_eq(store_put_allocation(s, &a), 0);
        ck_assert_int_eq(store_drop_allocation(s, 3), 0); /* put and dropped: nothing */
        h = history(T0_USEC, 1000, "a.service", STORE_OUTCOME_RELEASED, 40, 2);
        ck_assert_int_eq(store_add_history(s, &h), 0);
        ck_assert_int_eq(store_meta_put_u64(s, "serial", 41), 0);
        ck_assert_int_eq(store_meta_put_u64(s, "serial", 42), 0);
        ck_assert_int_eq(store_put_limit(s, "user:1000", "hour", 50000), 0);
        ck_assert_int_eq(store_put_limit(s, "user:1000", "day", 90000), 0);
        ck_assert_int_eq(
                store_put_breaker(s, &(StoreBreaker){"coder", 7, "open", 3, 30000000, T0_USEC, 1000}), 0);
        ck_assert(store_pending(s));
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert(!store_pending(s));
        ck_assert_ptr_null(store_error_message(s));
        ck_assert_str_eq(
                load_all(s, &l),
                "unit:a.service@1700000000=12;user:1000@1700000000=12;user:1000@1700000001=1;|"
                "1:1700000000000001/1001/1201/901/10/5/-3/4242/1000/agent-bin/coder/batch/llama/"
                "a.service/[user:1000,unit:a.service,];"
                "2:1700000000000002/1002/1202/902/25/12/-3/4242/1000/-/coder/batch/llama/a.service/"
                "[user:1000,unit:a.service,];|"
                "user:1000.day=90000;user:1000.hour=50000;|coder#7=open/3/30000000/1700000000000000/1000;");
        snprintf(before, sizeof(before), "%s", l.text);

        /* Staged, never committed: none of it comes back. */
        ck_assert_int_eq(store_add_usage(s, "user:1000", 1700000000, 1000), 0);
        ck_assert_int_eq(store_drop_allocation(s, 1), 0);
        ck_assert_int_eq(store_add_history(s, &h), 0);
        ck_assert_int_eq(store_meta_put_u64(s, "serial", 99), 0);
        s = store_free(s);

        s = open_ok(d.db, STORE_SYNC_FULL);
        store_ledger_key(s, key2);
        ck_assert_mem_eq(key1, key2, sizeof(key1));
        ck_assert_str_eq(load_all(s, &l), before);
        ck_assert_int_eq(store_meta_get_u64(s, "serial", &serial), 0);
        ck_assert_uint_eq(serial, 42);
        ck_assert_int_eq(store_meta_get_u64(s, "nothing", &serial), -ENOENT);
        /* The daemon holds the file exclusively while it is open: closed, another program reads it. */
        s = store_free(s);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM history"), 1);
        ck_assert_int_eq(sql_int(d.db, "SELECT sum(tokens_in) FROM hourly WHERE scope = 'user:1000'"), 40);
        s = open_ok(d.db, STORE_SYNC_FULL);

        /* A later drop removes it; deleting limits and breakers. */
        ck_assert_int_eq(store_drop_allocation(s, 1), 0);
        ck_assert_int_eq(store_drop_allocation(s, 2), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_delete_limit(s, "user:1000", NULL), 0);
        ck_assert_int_eq(store_delete_breaker(s, "coder", 7), 0);
        ck_assert_str_eq(load_all(s, &l),
                         "unit:a.service@1700000000=12;user:1000@1700000000=12;user:1000@1700000001=1;|||");
        /* Bad arguments. */
        ck_assert_int_eq(store_add_usage(s, "", 1, 1), -EINVAL);
        a = allocation(9, 1);
        a.scopes = (const char *const[]){"bad\nname"};
        a.n_scopes = 1;
        ck_assert_int_eq(store_put_allocation(s, &a), -EINVAL);
        store_free(s);
        dir_done(&d);
}
END_TEST

/* ---- group commit ---- */

/* Commit frames in the WAL since its last reset (frames whose salts match
 * the header's and whose "database size after commit" is set;
 * https://www.sqlite.org/fileformat.html, 4.1). */
static unsigned wal_commits(const char *db, unsigned *ret_frames) {
        char path[320];
        unsigned char hdr[32], fh[24];
        unsigned commits = 0, frames = 0;
        uint32_t page_size;
        off_t off = 32;
        int fd;

        snprintf(path, sizeof(path), "%s-wal", db);
        fd = open(path, O_RDONLY);
        if (fd < 0 || pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr)) {
                if (fd >= 0)
                        close(fd);
                *ret_frames = 0;
                return 0;
        }
        page_size = (uint32_t)hdr[8] << 24 | (uint32_t)hdr[9] << 16 | (uint32_t)hdr[10] << 8 | hdr[11];
        while (pread(fd, fh, sizeof(fh), off) == (ssize_t)sizeof(fh) && memcmp(fh + 8, hdr + 16, 8) == 0) {
                frames++;
                if (fh[4] | fh[5] | fh[6] | fh[7])
                        commits++;
                off += 24 + page_size;
        }
        close(fd);
        *ret_frames = frames;
        return commits;
}

static double elapsed_sec(const struct timespec *a) {
        struct timespec b;

        clock_gettime(CLOCK_MONOTONIC, &b);
        return (double)(b.tv_sec - a->tv_sec) + (double)(b.tv_nsec - a->tv_nsec) / 1e9;
}

/* n operations: half usage cells on distinct seconds, half history rows. */
static void stage_ops(Store *s, unsigned n, uint64_t base) {
        for (unsigned i = 0; i < n; i++) {
                if (i % 2) {
                        StoreHistoryRow h = history(T0_USEC + (base + i) * 1000, 1000, "a.service",
                                                    STORE_OUTCOME_RELEASED, 3, 4);
                        ck_assert_int_eq(store_add_history(s, &h), 0);
                } else
                        ck_assert_int_eq(store_add_usage(s, "user:1000", 1700000000 + base + i, 2), 0);
        }
}

/* A Report's totals: only input and output change, in the commit of the
 * grant or a later one; nothing for a row settled in the same commit; and
 * many history rows of one scope and hour are one hourly row with the sums. */
START_TEST(test_allocation_usage) {
        Dir d;
        Store *s;
        Loaded l;
        StoreAllocation a;
        StoreHistoryRow h;

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        a = allocation(1, 10);
        ck_assert_int_eq(store_put_allocation(s, &a), 0);
        ck_assert_int_eq(store_put_allocation_usage(s, 1, 11, 3), 0); /* same commit as the put */
        a = allocation(2, 20);
        ck_assert_int_eq(store_put_allocation(s, &a), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_apply(s), 0); /* the rows are in the table: a report is an update */
        ck_assert_uint_eq(store_staged(s), 0);
        ck_assert_int_eq(store_put_allocation_usage(s, 2, 21, 4), 0); /* a later commit */
        ck_assert_int_eq(store_put_allocation_usage(s, 2, 22, 5), 0); /* the latest wins */
        ck_assert_uint_eq(store_staged(s), 1);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_str_eq(load_all(s, &l),
                         "|1:1700000000000001/1001/1201/901/11/3/-3/4242/1000/agent-bin/coder/batch/llama/"
                         "a.service/[user:1000,unit:a.service,];"
                         "2:1700000000000002/1002/1202/902/22/5/-3/4242/1000/agent-bin/coder/batch/llama/"
                         "a.service/[user:1000,unit:a.service,];||");
        ck_assert_int_eq(store_drop_allocation(s, 1), 0);
        ck_assert_int_eq(store_put_allocation_usage(s, 1, 50, 50), 0); /* dropped stays dropped */
        ck_assert_int_eq(store_put_allocation_usage(s, 9, 1, 1), 0);   /* never put: no row appears */
        for (int i = 0; i < 50; i++) {
                h = history(T0_USEC + (uint64_t)i * 1000, 1000, "a.service",
                            i % 5 ? STORE_OUTCOME_RELEASED : STORE_OUTCOME_REFUSED, 3, 4);
                h.count = i % 5 ? 1 : 2;
                ck_assert_int_eq(store_add_history(s, &h), 0);
        }
        ck_assert_uint_eq(store_staged(s), 2 + 50 + 2); /* 2 allocation ops, 50 rows, 2 hourly cells */
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_str_eq(load_all(s, &l),
                         "|2:1700000000000002/1002/1202/902/22/5/-3/4242/1000/agent-bin/coder/batch/llama/"
                         "a.service/[user:1000,unit:a.service,];||");
        s = store_free(s);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM hourly"), 2);
        ck_assert_int_eq(sql_int(d.db, "SELECT requests FROM hourly WHERE scope = 'unit:a.service'"), 40);
        ck_assert_int_eq(sql_int(d.db, "SELECT refused FROM hourly WHERE scope = 'unit:a.service'"), 20);
        ck_assert_int_eq(sql_int(d.db, "SELECT tokens_in FROM hourly WHERE scope = 'user:1000'"), 150);
        ck_assert_int_eq(sql_int(d.db, "SELECT tokens_out FROM hourly WHERE scope = 'user:1000'"), 200);
        ck_assert_int_eq(sql_int(d.db, "SELECT granted FROM hourly WHERE scope = 'user:1000'"), 40 * 100);
}
END_TEST

START_TEST(test_group_commit) {
        Dir d;
        Store *s;
        unsigned frames, commits;

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        store_free(s); /* the last connection checkpoints and removes the WAL */
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        ck_assert_uint_eq(wal_commits(d.db, &frames), 0);
        stage_ops(s, 10000, 0);
        /* + the hourly aggregates: the rows' 2 scopes in one hour, one cell each */
        ck_assert_uint_eq(store_staged(s), 10000 + 2);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_uint_eq(store_commits(s), 1);
        commits = wal_commits(d.db, &frames);
        printf("10,000 staged operations: %u commit frame(s) of %u WAL frames\n", commits, frames);
        ck_assert_uint_eq(commits, 1);
        ck_assert_int_eq(store_commit(s), 0); /* nothing staged: no transaction */
        ck_assert_uint_eq(store_commits(s), 1);
        ck_assert_uint_eq(wal_commits(d.db, &frames), 1);
        store_free(s);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM usage"), 5000);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM history"), 5000);
        dir_done(&d);
}
END_TEST

START_TEST(test_speed) {
        static const StoreSync syncs[] = {STORE_SYNC_NORMAL, STORE_SYNC_FULL};

        for (size_t k = 0; k < ELEMENTSOF(syncs); k++) {
                struct timespec t;
                double big, small;
                Dir d;
                Store *s;

                dir_init(&d);
                s = open_ok(d.db, syncs[k]);
                /* Large batches: staged operations per second at commit. */
                stage_ops(s, 10000, 0);
                clock_gettime(CLOCK_MONOTONIC, &t);
                ck_assert_int_eq(store_commit(s), 0);
                big = elapsed_sec(&t);
                /* Small batches, as one loop iteration of a few messages. */
                clock_gettime(CLOCK_MONOTONIC, &t);
                for (unsigned i = 0; i < 200; i++) {
                        stage_ops(s, 8, 20000 + i * 8);
                        ck_assert_int_eq(store_commit(s), 0);
                }
                small = elapsed_sec(&t);
                printf("synchronous=%s: 10,000 ops in one commit %.1f ms (%.0f ops/s); 200 commits of 8 ops "
                       "%.0f us each (%.0f ops/s)\n",
                       store_sync_to_string(syncs[k]), big * 1e3, 10000 / big, small / 200 * 1e6,
                       1600 / small);
                store_free(s);
                dir_done(&d);
        }
}
END_TEST

/* ---- refusals ---- */

START_TEST(test_newer_schema) {
        Dir d;

        dir_init(&d);
        sql_exec(d.db, "CREATE TABLE meta(key TEXT PRIMARY KEY, value); PRAGMA user_version = 99;");
        open_refused(d.db, -EPROTONOSUPPORT, (const char *const[]){"newer", "99", NULL});
        dir_done(&d);
}
END_TEST

START_TEST(test_random_bytes) {
        Dir d;
        char buf[8192];
        FILE *f;

        dir_init(&d);
        for (size_t i = 0; i < sizeof(buf); i++)
                buf[i] = (char)(random() & 0xff);
        ck_assert_ptr_nonnull(f = fopen(d.db, "w"));
        ck_assert_uint_eq(fwrite(buf, 1, sizeof(buf), f), sizeof(buf));
        fclose(f);
        open_refused(d.db, -EBADMSG, (const char *const[]){"Move it away", NULL});
        dir_done(&d);
}
END_TEST

START_TEST(test_truncated) {
        Dir d;
        Store *s;
        struct stat st;

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        stage_ops(s, 4000, 0);
        ck_assert_int_eq(store_commit(s), 0);
        store_free(s);
        ck_assert_int_eq(stat(d.db, &st), 0);
        ck_assert_int_gt(st.st_size, 8 * 4096);
        ck_assert_int_eq(truncate(d.db, st.st_size / 2), 0);
        open_refused(d.db, -EBADMSG, (const char *const[]){"truncated", "Move it away", NULL});
        dir_done(&d);
}
END_TEST

START_TEST(test_damaged_pages) {
        Dir d;
        Store *s = NULL;
        struct stat st;
        char junk[4096], *reason = NULL;
        int fd;

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        stage_ops(s, 4000, 0);
        ck_assert_int_eq(store_commit(s), 0);
        s = store_free(s);
        /* The same size, pages from the third on overwritten. */
        ck_assert_int_eq(stat(d.db, &st), 0);
        memset(junk, 0x5a, sizeof(junk));
        ck_assert_int_ge(fd = open(d.db, O_WRONLY), 0);
        for (off_t off = 2 * 4096; off + 4096 <= st.st_size; off += 4096)
                ck_assert_int_eq(pwrite(fd, junk, sizeof(junk), off), (ssize_t)sizeof(junk));
        close(fd);
        ck_assert_int_eq(store_open(d.db, STORE_SYNC_NORMAL, STORE_OPEN_CHECK, &s, &reason), -EBADMSG);
        ck_assert_ptr_nonnull(reason);
        ck_assert_ptr_nonnull(strstr(reason, d.db));
        printf("refused as expected: %s\n", reason);
        free(reason);
        dir_done(&d);
}
END_TEST

START_TEST(test_foreign_database) {
        Dir d;

        dir_init(&d);
        sql_exec(d.db, "CREATE TABLE photos(id INTEGER PRIMARY KEY, name TEXT);");
        open_refused(d.db, -EBADMSG, (const char *const[]){"not tokenbudget", NULL});
        dir_done(&d);
}
END_TEST

START_TEST(test_missing_directory) {
        Dir d;
        char path[400];

        dir_init(&d);
        snprintf(path, sizeof(path), "%s/no/such/dir/tokenbudget.db", d.path);
        open_refused(path, -ENOENT, (const char *const[]){"directory", "StateDirectory=", NULL});
        snprintf(path, sizeof(path), "%s/tokenbudget.db/x.db", d.path);
        ck_assert_int_eq(close(creat(d.db, 0600)), 0);
        open_refused(path, -ENOTDIR, (const char *const[]){"not a directory", NULL});
        dir_done(&d);
}
END_TEST

/* As root, in a child of uid 65534 (root may read anything); else chmod 000. */
START_TEST(test_unreadable) {
        Dir d;
        Store *s;
        pid_t pid;
        int status;

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        store_free(s);
        ck_assert_int_eq(chmod(d.db, 0), 0);
        ck_assert_int_eq(chmod(d.path, 0755), 0);
        if (geteuid() != 0) {
                open_refused(d.db, -EACCES, (const char *const[]){"ownership", NULL});
                dir_done(&d);
                return;
        }
        pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
                Store *c = NULL;
                char *reason = NULL;
                int r;

                if (setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
                        _exit(2);
                r = store_open(d.db, STORE_SYNC_NORMAL, 0, &c, &reason);
                printf("as uid 65534: %d: %s\n", r, reason ?: "(none)");
                fflush(stdout);
                _exit(r == -EACCES && reason && strstr(reason, d.db) ? 0 : 1);
        }
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "uid 65534 was not refused (status %d)",
                      status);
        dir_done(&d);
}
END_TEST

/* ---- migrations ---- */

typedef struct MigrationRow {
        int from;
        const char *setup_sql; /* NULL: an empty file */
        const char *check_sql; /* must give 1 after the open */
} MigrationRow;

#define SCHEMA_V2                                                                                           \
        "CREATE TABLE meta(key TEXT PRIMARY KEY, value);"                                                   \
        "CREATE TABLE usage(second INTEGER NOT NULL, scope TEXT NOT NULL, tokens INTEGER NOT NULL,"         \
        " PRIMARY KEY(second, scope)) WITHOUT ROWID;"                                                       \
        "CREATE TABLE allocations(id INTEGER PRIMARY KEY, granted_usec INTEGER, granted INTEGER,"           \
        " reservation INTEGER, estimate INTEGER, input INTEGER, output INTEGER, priority INTEGER,"          \
        " pid INTEGER, uid INTEGER, comm TEXT, agent TEXT, class TEXT, model TEXT, unit TEXT,"              \
        " scopes TEXT);"                                                                                    \
        "CREATE TABLE history(id INTEGER PRIMARY KEY, realtime_usec INTEGER NOT NULL, uid INTEGER,"         \
        " user TEXT, unit TEXT, comm TEXT, agent TEXT, class TEXT, model TEXT, priority INTEGER,"           \
        " estimate INTEGER, granted INTEGER, input INTEGER, output INTEGER, outcome TEXT NOT NULL,"         \
        " count INTEGER NOT NULL DEFAULT 1, scopes TEXT);"                                                  \
        "CREATE INDEX history_time ON history(realtime_usec);"                                              \
        "CREATE INDEX history_uid_time ON history(uid, realtime_usec);"                                     \
        "CREATE TABLE hourly(hour INTEGER NOT NULL, scope TEXT NOT NULL, requests INTEGER NOT NULL,"        \
        " refused INTEGER NOT NULL, tokens_in INTEGER NOT NULL, tokens_out INTEGER NOT NULL,"               \
        " granted INTEGER NOT NULL, PRIMARY KEY(hour, scope)) WITHOUT ROWID;"                               \
        "CREATE TABLE limits(scope TEXT NOT NULL, field TEXT NOT NULL, value INTEGER NOT NULL,"             \
        " PRIMARY KEY(scope, field)) WITHOUT ROWID;"                                                        \
        "CREATE TABLE breakers(name TEXT NOT NULL, disc INTEGER NOT NULL, state TEXT NOT NULL,"             \
        " breaches INTEGER NOT NULL, cooldown_usec INTEGER NOT NULL, until_usec INTEGER NOT NULL,"          \
        " PRIMARY KEY(name, disc)) WITHOUT ROWID;"                                                          \
        "ALTER TABLE breakers ADD COLUMN owner INTEGER NOT NULL DEFAULT -1;"                                \
        "CREATE TABLE estimators(uid INTEGER NOT NULL, class TEXT NOT NULL, seen_usec INTEGER NOT NULL,"    \
        " state TEXT NOT NULL, PRIMARY KEY(uid, class)) WITHOUT ROWID;"

/* One row per earlier version, each as that version would have left a
 * database with data in it (and the current one); a version 4 adds its row here. */
static const MigrationRow migration_rows[] = {
        {0, NULL, "SELECT count(*) = 0 FROM usage"},
        {1,
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
         " PRIMARY KEY(name, disc)) WITHOUT ROWID;"
         "INSERT INTO meta VALUES('ledger_key', '00112233445566778899aabbccddeeff');"
         "INSERT INTO usage VALUES('user:7', 1700000000, 77);"
         "INSERT INTO usage VALUES('user:7', 1700000001, 7);"
         "INSERT INTO hourly VALUES('user:7', 472222, 3, 1, 10, 20, 30);"
         "INSERT INTO breakers VALUES('agent:7:x', 0, 'open', 3, 300000000, 1700000300000000);"
         "INSERT INTO history(realtime_usec, uid, outcome, count, input) VALUES(1700000000000000, 7, "
         "'released', 1, 5);"
         "PRAGMA user_version = 1;",
         "SELECT (SELECT sum(tokens) FROM usage WHERE scope = 'user:7') = 84 AND"
         " (SELECT tokens FROM usage WHERE second = 1700000001) = 7 AND"
         " (SELECT requests || '/' || refused || '/' || tokens_in || '/' || tokens_out || '/' || granted"
         " FROM hourly WHERE scope = 'user:7' AND hour = 472222) = '3/1/10/20/30' AND"
         " (SELECT value FROM meta WHERE key = 'ledger_key') = '00112233445566778899aabbccddeeff' AND"
         " (SELECT count(*) FROM history) = 1 AND"
         " (SELECT count(*) FROM sqlite_schema WHERE name IN ('usage_second', 'hourly_hour')) = 0 AND"
         " (SELECT pk FROM pragma_table_info('usage') WHERE name = 'second') = 1 AND"
         " (SELECT state || '/' || owner FROM breakers WHERE name = 'agent:7:x') = 'open/-1'"},
        {2,
         SCHEMA_V2 "INSERT INTO meta VALUES('ledger_key', '00112233445566778899aabbccddeeff');"
                   "INSERT INTO usage VALUES(1700000000, 'user:7', 77);"
                   "PRAGMA user_version = 2;",
         "SELECT (SELECT tokens FROM usage WHERE scope = 'user:7') = 77 AND"
         " (SELECT count(*) FROM log) = 0"},
        /* the current version with a commit log row left by a daemon killed
         * before it applied it (encoded by hand: 5 tokens for user:7 at
         * 1700000000, meta serial 42): the open replays it into the tables */
        {3,
         SCHEMA_V2 "CREATE TABLE log(seq INTEGER PRIMARY KEY, ops BLOB NOT NULL);"
                   "INSERT INTO meta VALUES('ledger_key', '00112233445566778899aabbccddeeff');"
                   "INSERT INTO usage VALUES(1700000000, 'user:7', 77);"
                   "INSERT INTO log(ops) VALUES(X'5507757365723a370080e2cfaa06054d0773657269616c002a');"
                   "PRAGMA user_version = 3;",
         "SELECT (SELECT tokens FROM usage WHERE scope = 'user:7') = 82 AND"
         " (SELECT value FROM meta WHERE key = 'serial') = 42 AND (SELECT count(*) FROM log) = 0"},
};
_Static_assert(ELEMENTSOF(migration_rows) == STORE_SCHEMA_VERSION + 1,
               "a migration row per earlier version");

static int high_id_cb(void *userdata, const StoreAllocation *a) {
        *(uint64_t *)userdata = a->id;
        return 0;
}

/* Wire ids use all 64 bits (half have the top bit set): they round-trip
 * (a daemon that refused them lost half its allocations at a kill). */
START_TEST(test_high_ids) {
        const uint64_t id = UINT64_C(0xfedcba9876543210);
        uint64_t got = 0;
        StoreAllocation a = allocation(id, 10);
        Dir d;
        Store *s;

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        ck_assert_int_eq(store_put_allocation(s, &a), 0);
        ck_assert_int_eq(store_commit(s), 0);
        s = store_free(s);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        ck_assert_int_eq(store_load_allocations(s, high_id_cb, &got), 1);
        ck_assert_uint_eq(got, id);
        ck_assert_int_eq(store_drop_allocation(s, id), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_load_allocations(s, high_id_cb, &got), 0);
        store_free(s);
        dir_done(&d);
}
END_TEST

/* One daemon per database: a second open (another tokenbudgetd on the same
 * directory, started by mistake) is refused while the first holds it, and
 * works once it is closed (or its process died: the lock goes with it). */
START_TEST(test_in_use) {
        static const char *const words[] = {"in use by another process", "--state-dir", NULL};
        Dir d;
        Store *s;

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        ck_assert_int_eq(store_add_usage(s, "global|-1|0|global", 100, 5), 0);
        ck_assert_int_eq(store_commit(s), 0);
        open_refused(d.db, -EBUSY, words);
        store_free(s);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        store_free(s);
        dir_done(&d);
}
END_TEST

START_TEST(test_migrations) {
        for (size_t i = 0; i < ELEMENTSOF(migration_rows); i++) {
                const MigrationRow *m = &migration_rows[i];
                Dir d;
                Store *s;

                dir_init(&d);
                if (m->setup_sql)
                        sql_exec(d.db, m->setup_sql);
                else
                        ck_assert_int_eq(close(creat(d.db, 0600)), 0);
                s = open_ok(d.db, STORE_SYNC_NORMAL);
                store_free(s);
                ck_assert_msg(sql_int(d.db, "PRAGMA user_version") == STORE_SCHEMA_VERSION,
                              "row %zu (from v%d): not at version %d", i, m->from, STORE_SCHEMA_VERSION);
                ck_assert_msg(sql_int(d.db, m->check_sql) == 1, "row %zu (from v%d): data not kept", i,
                              m->from);
                dir_done(&d);
        }
}
END_TEST

/* ---- full disk ---- */

static void fill_disk(const char *path) {
        char buf[4096];
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        ck_assert_int_ge(fd, 0);
        memset(buf, 'x', sizeof(buf));
        while (write(fd, buf, sizeof(buf)) > 0)
                ;
        /* The last few bytes a partial write left. */
        while (write(fd, buf, 1) > 0)
                ;
        close(fd);
}

START_TEST(test_full_disk) {
        char mnt[] = "/tmp/test-store-full-XXXXXX", db[64], filler[64];
        Store *s;
        int r;

        if (!tb_check_need_root("a full disk (tmpfs in a private mount namespace)"))
                return;
        if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
                tb_check_skip("a full disk: no private mount namespace here (%m)");
                return;
        }
        ck_assert_ptr_nonnull(mkdtemp(mnt));
        ck_assert_int_eq(mount("tmpfs", mnt, "tmpfs", 0, "size=2m,mode=0700"), 0);
        snprintf(db, sizeof(db), "%s/tokenbudget.db", mnt);
        snprintf(filler, sizeof(filler), "%s/filler", mnt);

        s = open_ok(db, STORE_SYNC_FULL);
        stage_ops(s, 200, 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_apply(s), 0);
        fill_disk(filler);
        stage_ops(s, 2000, 1000);
        ck_assert_uint_eq(store_staged(s), 2000 + 2); /* + 2 hourly cells */
        r = store_commit(s);
        ck_assert_msg(r == -ENOSPC, "commit on a full disk: %d (%s)", r, strerror(-r));
        ck_assert_ptr_nonnull(store_error_message(s));
        ck_assert_ptr_nonnull(strstr(store_error_message(s), db));
        printf("full disk: %s\n", store_error_message(s));
        ck_assert_uint_eq(store_staged(s), 2000 + 2); /* kept */
        ck_assert(store_pending(s));
        ck_assert_int_eq(store_commit(s), -ENOSPC); /* still full: still kept */
        store_set_apply_ops(s, 1000);               /* now a commit applies: that fails alike */
        ck_assert_int_eq(store_commit(s), -ENOSPC);
        ck_assert_int_eq(store_apply(s), -ENOSPC);
        ck_assert_uint_eq(store_applies(s), 1);
        stage_ops(s, 10, 5000); /* more staged while failing */
        ck_assert_uint_eq(store_staged(s), 2010 + 2);
        ck_assert_int_eq(unlink(filler), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_ptr_null(store_error_message(s));
        ck_assert(!store_pending(s));
        ck_assert_uint_eq(store_applies(s), 2);
        store_free(s);

        s = open_ok(db, STORE_SYNC_NORMAL);
        ck_assert_int_eq(store_load_usage(s, 0, count_cb, NULL), 100 + 1000 + 5);
        store_free(s);
        ck_assert_int_eq(sql_int(db, "SELECT count(*) FROM history"), 100 + 1000 + 5);
        ck_assert_int_eq(sql_int(db, "SELECT sum(tokens) FROM usage"), 2 * (100 + 1000 + 5));
        umount(mnt);
        rmdir(mnt);
}
END_TEST

/* ---- history queries ---- */

static void stage_known_history(Store *s) {
        const StoreHistoryRow rows[] = {
                history(T0_USEC + 0 * HOUR, 1000, "a.service", STORE_OUTCOME_RELEASED, 10, 1),
                history(T0_USEC + 0 * HOUR + 5, 1000, "a.service", STORE_OUTCOME_TERMINATED, 200, 2),
                history(T0_USEC + 1 * HOUR, 0, "b.service", STORE_OUTCOME_ABANDONED, 30, 3),
                history(T0_USEC + 1 * HOUR, 0, "b.service", STORE_OUTCOME_REFUSED, 0, 0),
                history(T0_USEC + 1 * DAY, 1000, NULL, STORE_OUTCOME_RELEASED, 400, 4),
        };
        StoreHistoryRow refused = rows[3];

        for (size_t i = 0; i < ELEMENTSOF(rows); i++)
                ck_assert_int_eq(store_add_history(s, &rows[i]), 0);
        refused.count = 4; /* four identical refusals folded into one row */
        ck_assert_int_eq(store_add_history(s, &refused), 0);
}

typedef struct QueryRow {
        StoreQuery q;
        const char *want;
} QueryRow;

/* T0 is 22:13:20 UTC (and T0 + 1 h still the 14th): hour keys 1699999200000000 and +1 h; UTC day start
 * 1699920000000000. Groups: "key|uid|usec:requests,refused,in,out,granted". */
static const QueryRow query_rows[] = {
        {{.group = STORE_GROUP_USER}, "root|0|0:1,5,30,3,100;alice|1000|0:3,0,610,7,300;"},
        {{.group = STORE_GROUP_UNIT},
         "-|0|0:1,0,400,4,100;a.service|0|0:2,0,210,3,200;b.service|0|0:1,5,30,3,100;"},
        {{.group = STORE_GROUP_AGENT}, "coder|0|0:3,0,610,7,300;ops|0|0:1,5,30,3,100;"},
        {{.group = STORE_GROUP_CLASS}, "bulk|0|0:0,5,0,0,0;interactive|0|0:4,0,640,10,400;"},
        {{.group = STORE_GROUP_MODEL}, "big|0|0:2,0,600,6,200;small|0|0:2,5,40,4,200;"},
        {{.group = STORE_GROUP_HOUR},
         "-|0|1699999200000000:2,0,210,3,200;-|0|1700002800000000:1,5,30,3,100;"
         "-|0|1700085600000000:1,0,400,4,100;"},
        {{.group = STORE_GROUP_DAY},
         "-|0|1699920000000000:3,5,240,6,300;-|0|1700006400000000:1,0,400,4,100;"},
        /* UTC+2: T0 is 00:13 on the 15th, all in one local day but the last. */
        {{.group = STORE_GROUP_DAY, .utc_offset_sec = 7200},
         "-|0|1699999200000000:3,5,240,6,300;-|0|1700085600000000:1,0,400,4,100;"},
        {{.group = STORE_GROUP_USER, .since_usec = T0_USEC + 1, .until_usec = T0_USEC + DAY},
         "root|0|0:1,5,30,3,100;alice|1000|0:1,0,200,2,100;"},
        {{.group = STORE_GROUP_USER, .filter_uid = true, .uid = 1000}, "alice|1000|0:3,0,610,7,300;"},
        {{.group = STORE_GROUP_UNIT, .filter_uid = true, .uid = 1000, .until_usec = T0_USEC + HOUR},
         "a.service|0|0:2,0,210,3,200;"},
        {{.group = STORE_GROUP_USER, .since_usec = T0_USEC + 2 * DAY}, ""},
};

START_TEST(test_history_queries) {
        Dir d;
        Store *s;
        Loaded l;

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        stage_known_history(s);
        ck_assert_int_eq(store_commit(s), 0); /* in the commit log, not yet in the tables */
        ck_assert_uint_eq(store_staged(s), 6 + 6);
        for (size_t i = 0; i < ELEMENTSOF(query_rows); i++) { /* a query applies the log first */
                int n;

                l = (Loaded){};
                n = store_history_query(s, &query_rows[i].q, group_cb, &l);
                ck_assert_msg(n >= 0, "row %zu: %d", i, n);
                ck_assert_msg(strcmp(l.text, query_rows[i].want) == 0, "row %zu: got %s, want %s", i, l.text,
                              query_rows[i].want);
        }
        ck_assert_uint_eq(store_staged(s), 0);
        l = (Loaded){};
        ck_assert_int_eq(store_history_query(s, &(StoreQuery){.group = _STORE_GROUP_MAX}, group_cb, &l),
                         -EINVAL);
        ck_assert_int_eq(
                store_history_query(s, &(StoreQuery){.since_usec = 5, .until_usec = 4}, group_cb, &l),
                -EINVAL);
        /* Hourly aggregates: one per scope per hour, refusals counted apart. */
        store_free(s);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM hourly"), 6);
        ck_assert_int_eq(sql_int(d.db, "SELECT refused FROM hourly WHERE scope = 'user:1000' AND"
                                       " hour = 1700002800 / 3600"),
                         5);
        dir_done(&d);
}
END_TEST

/* ---- pruning ---- */

START_TEST(test_prune_steps) {
        Dir d;
        Store *s;
        unsigned total = 0, steps = 0;
        struct timespec t;
        int n;

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        /* 1,000 old history rows over 10 hours from 22:13 (11 hours begun:
         * 22 hourly rows for 2 scopes),
         * 300 old usage cells; 7 new of each. */
        for (unsigned i = 0; i < 1000; i++) {
                StoreHistoryRow h =
                        history(T0_USEC + i * (10 * HOUR / 1000), 1, "u", STORE_OUTCOME_RELEASED, 1, 1);
                ck_assert_int_eq(store_add_history(s, &h), 0);
        }
        for (unsigned i = 0; i < 300; i++)
                ck_assert_int_eq(store_add_usage(s, "user:1", 1700000000 + i, 1), 0);
        for (unsigned i = 0; i < 7; i++) {
                StoreHistoryRow h = history(T0_USEC + 30 * DAY + i, 1, "u", STORE_OUTCOME_RELEASED, 1, 1);
                ck_assert_int_eq(store_add_history(s, &h), 0);
                ck_assert_int_eq(store_add_usage(s, "user:1", 1700000000 + 86400 * 30 + i, 1), 0);
        }
        ck_assert_int_eq(store_commit(s), 0);
        clock_gettime(CLOCK_MONOTONIC, &t);
        while ((n = store_prune_step(s, T0_USEC + 20 * DAY, 1700000000 + 86400 * 20, 128)) > 0) {
                ck_assert_int_le(n, 128);
                total += (unsigned)n;
                steps++;
        }
        ck_assert_int_eq(n, 0);
        printf("pruning: %u rows in %u steps of at most 128, %.2f ms per step\n", total, steps,
               elapsed_sec(&t) * 1e3 / (steps + 1));
        ck_assert_uint_eq(total, 1000 + 22 + 300);
        ck_assert_uint_eq(steps, (1322 + 127) / 128);
        ck_assert_int_eq(store_prune_step(s, UINT64_MAX, UINT64_MAX, 0), 0);
        store_free(s);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM history"), 7);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM usage"), 7);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM hourly"), 2);
        dir_done(&d);
}
END_TEST

/* ---- the staging cap ---- */

START_TEST(test_staging_cap) {
        Dir d;
        Store *s;

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        for (unsigned i = 0; i < STORE_STAGED_MAX; i++)
                ck_assert_int_eq(store_add_usage(s, "user:1", i + 1, 1), 0);
        ck_assert_int_eq(store_add_usage(s, "user:1", STORE_STAGED_MAX + 1, 1), -ENOBUFS);
        ck_assert_int_eq(store_add_usage(s, "user:1", 1, 1), 0); /* an existing cell still merges */
        ck_assert_uint_eq(store_lost(s), 1);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_add_usage(s, "user:1", STORE_STAGED_MAX + 1, 1), 0);
        store_free(s);
        dir_done(&d);
}
END_TEST

/* ---- the commit log ---- */

/* A commit is one log row; a close without an apply (what kill -9 leaves)
 * keeps it there, and the next open replays it into the tables, once. */
START_TEST(test_commit_log_replay) {
        Dir d;
        Store *s;
        Loaded l;
        StoreAllocation a;
        StoreHistoryRow h;

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        a = allocation(1, 10);
        ck_assert_int_eq(store_put_allocation(s, &a), 0);
        a = allocation(2, 20);
        ck_assert_int_eq(store_put_allocation(s, &a), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert_int_eq(store_put_allocation_usage(s, 1, 15, 6), 0);
        ck_assert_int_eq(store_drop_allocation(s, 2), 0); /* granted and settled between applies */
        h = history(T0_USEC, 1000, "a.service", STORE_OUTCOME_RELEASED, 20, 10);
        ck_assert_int_eq(store_add_history(s, &h), 0);
        ck_assert_int_eq(store_add_usage(s, "user:1000", 1700000000, 30), 0);
        ck_assert_int_eq(store_meta_put_u64(s, "serial", 7), 0);
        ck_assert_int_eq(store_put_estimator(s, 1000, "batch", T0_USEC, "{\"v\":1}"), 0);
        ck_assert_int_eq(store_commit(s), 0);
        ck_assert(!store_pending(s));
        ck_assert_uint_eq(store_commits(s), 2);
        ck_assert_uint_eq(store_applies(s), 0);
        ck_assert_int_eq(store_add_usage(s, "user:1000", 1700000000, 1000), 0); /* never committed */
        s = store_free(s);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM log"), 2);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM history"), 0);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM allocations"), 0);

        s = open_ok(d.db, STORE_SYNC_NORMAL);
        ck_assert_uint_eq(store_staged(s), 0);
        ck_assert_str_eq(load_all(s, &l),
                         "user:1000@1700000000=30;|1:1700000000000001/1001/1201/901/15/6/-3/4242/1000/"
                         "agent-bin/coder/batch/llama/a.service/[user:1000,unit:a.service,];||");
        s = store_free(s);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM log"), 0);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM history WHERE input = 20 AND output = 10"), 1);
        ck_assert_int_eq(sql_int(d.db, "SELECT value FROM meta WHERE key = 'serial'"), 7);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM estimators WHERE class = 'batch'"), 1);
        ck_assert_int_eq(sql_int(d.db, "SELECT requests FROM hourly WHERE scope = 'user:1000'"), 1);
        /* replayed once: a second open finds nothing more */
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        s = store_free(s);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM history"), 1);
        ck_assert_int_eq(sql_int(d.db, "SELECT sum(tokens) FROM usage"), 30);
        dir_done(&d);
}
END_TEST

/* Once STORE_APPLY_OPS are staged a commit applies instead of logging. */
START_TEST(test_commit_log_apply_threshold) {
        Dir d;
        Store *s;

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        store_set_apply_ops(s, 100);
        for (unsigned i = 0; i < 10; i++) {
                stage_ops(s, 20, i * 20);
                ck_assert_int_eq(store_commit(s), 0);
        }
        /* 20 ops (+ 1 hourly cell per scope) per commit: the 5th reaches 100 */
        ck_assert_uint_eq(store_applies(s), 2);
        ck_assert_uint_eq(store_commits(s), 10);
        s = store_free(s);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM history"), 100);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM log"), 0);
        dir_done(&d);
}
END_TEST

/* A damaged log row is refused at open, naming the file and the row. */
START_TEST(test_commit_log_damaged) {
        static const char *const blobs[] = {
                "X'5A'",                   /* no such record kind */
                "X'5507757365723A37'",     /* a string without its NUL, cut short */
                "X'550775736572003700'",   /* a NUL inside a string */
                "X'550775736572A3370080'", /* a varint running off the end */
                "X'5501000101'",           /* an empty scope name */
                /* format 2 (strings once per row, then referred to) */
                "X'0255010202'",                       /* a reference to a string not defined */
                "X'02550E75736572'",                   /* a definition cut short */
                "X'02550E757365723A3000020255050202'", /* a reference past the row's strings */
                "X'02550E757365723A300002025501'",     /* cut short after a reference */
                "X'0202'",                             /* the format byte twice */
        };
        static const char *const words[] = {"commit log", "damaged", "Move the file away", NULL};

        for (size_t i = 0; i < ELEMENTSOF(blobs); i++) {
                char sql[256];
                Dir d;
                Store *s;

                dir_init(&d);
                s = open_ok(d.db, STORE_SYNC_NORMAL);
                store_free(s);
                snprintf(sql, sizeof(sql), "INSERT INTO log(seq, ops) VALUES(5, %s)", blobs[i]);
                sql_exec(d.db, sql);
                open_refused(d.db, -EBADMSG, words);
                ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM log"), 1); /* kept for a backup */
                dir_done(&d);
        }
}
END_TEST

/* A format-2 row written by hand (an independent check of the encoding):
 * the second record refers back to the first one's string and its second is
 * the first's minus 2 (zigzag 3). */
START_TEST(test_commit_log_format_2) {
        Dir d;
        Store *s;

        dir_init(&d);
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        store_free(s);
        sql_exec(d.db, "INSERT INTO log(seq, ops) VALUES(1, X'02550E676C6F62616C00D00F0555010307')");
        sql_exec(d.db, "INSERT INTO log(seq, ops) VALUES(2, X'02550E676C6F62616C00D00F09')");
        s = open_ok(d.db, STORE_SYNC_NORMAL);
        store_free(s);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM log"), 0);
        ck_assert_int_eq(sql_int(d.db, "SELECT tokens FROM usage WHERE scope = 'global' AND second = 1000"),
                         14);
        ck_assert_int_eq(sql_int(d.db, "SELECT tokens FROM usage WHERE scope = 'global' AND second = 998"),
                         7);
        ck_assert_int_eq(sql_int(d.db, "SELECT count(*) FROM usage"), 2);
        dir_done(&d);
}
END_TEST

static Suite *store_suite(void) {
        Suite *s = suite_create("store");
        TCase *tc = tcase_create("store");

        tcase_set_timeout(tc, 120);
        tcase_add_test(tc, test_round_trip);
        tcase_add_test(tc, test_allocation_usage);
        tcase_add_test(tc, test_group_commit);
        tcase_add_test(tc, test_speed);
        tcase_add_test(tc, test_newer_schema);
        tcase_add_test(tc, test_random_bytes);
        tcase_add_test(tc, test_truncated);
        tcase_add_test(tc, test_damaged_pages);
        tcase_add_test(tc, test_foreign_database);
        tcase_add_test(tc, test_missing_directory);
        tcase_add_test(tc, test_unreadable);
        tcase_add_test(tc, test_in_use);
        tcase_add_test(tc, test_high_ids);
        tcase_add_test(tc, test_migrations);
        tcase_add_test(tc, test_full_disk);
        tcase_add_test(tc, test_history_queries);
        tcase_add_test(tc, test_prune_steps);
        tcase_add_test(tc, test_staging_cap);
        tcase_add_test(tc, test_commit_log_replay);
        tcase_add_test(tc, test_commit_log_apply_threshold);
        tcase_add_test(tc, test_commit_log_damaged);
        tcase_add_test(tc, test_commit_log_format_2);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(store_suite());
}
