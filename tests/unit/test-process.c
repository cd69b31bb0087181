/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/core/process.c: entries per pid and start time,
 * lingering while their windows hold usage, pid reuse, the table's bounds
 * (total and per uid, admins exempt) and that usage is never dropped to make
 * room, only exited processes (asked through the callback at most once per
 * PROCESS_DEAD_SCAN_INTERVAL_USEC). Time moves by parameter.
 */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "ledger.h"
#include "macro.h"
#include "process.h"
#include "tb-check.h"

#define SEC  UINT64_C(1000000)
#define DAY  (86400 * SEC)
#define T0   (1000 * SEC)
#define UID  1000
#define UID2 1001

/* The callback's view of which processes run: pids listed as dead have exited. */
typedef struct World {
        pid_t dead[8];
        size_t n_dead;
        unsigned n_asked;
} World;

static bool alive_cb(pid_t pid, uint64_t start_time, void *userdata) {
        World *w = userdata;

        w->n_asked++;
        for (size_t i = 0; i < w->n_dead; i++)
                if (w->dead[i] == pid)
                        return false;
        return true;
}

typedef struct Fixture {
        Ledger *ledger;
        ProcessTable *table;
        World world;
} Fixture;

static void fixture_init(Fixture *f, uint64_t max_tracked, uint64_t max_per_uid) {
        LedgerParams params = {.warn_permille = 1500, .hard_permille = 2000};
        ProcessTableLimits limits = {.max_tracked = max_tracked, .max_tracked_per_uid = max_per_uid};

        *f = (Fixture){};
        f->ledger = ledger_new(&params);
        ck_assert_ptr_nonnull(f->ledger);
        f->table = process_table_new(f->ledger, &limits, alive_cb, &f->world);
        ck_assert_ptr_nonnull(f->table);
}

static void fixture_done(Fixture *f) {
        f->table = process_table_free(f->table);
        ledger_free(f->ledger);
}

/* Spends tokens from e's scope and settles, so its windows hold usage. */
static void spend(Fixture *f, ProcessEntry *e, uint64_t tokens, uint64_t now) {
        LedgerScope *scope = process_entry_scope(e);
        LedgerAllocation *a;
        LedgerRefusal refusal;

        ck_assert_int_eq(ledger_reserve(f->ledger, &scope, 1, tokens, now, &a, &refusal), 0);
        ck_assert_int_eq(ledger_settle(f->ledger, a, tokens, 0, now, NULL, NULL), 0);
}

static ProcessEntry *connect_ok(Fixture *f, pid_t pid, uint64_t start, uid_t uid, uint64_t now) {
        ProcessEntry *e = NULL;
        int r = process_table_connect(f->table, pid, start, uid, false, now, &e);

        ck_assert_msg(r == 0, "connect pid %d start %lu: %d", (int)pid, (unsigned long)start, r);
        ck_assert_int_eq(process_entry_pid(e), pid);
        return e;
}

START_TEST(test_unused_entry_goes_at_once) {
        Fixture f;
        ProcessEntry *e;

        fixture_init(&f, 16, 16);
        e = connect_ok(&f, 100, 7, UID, T0);
        ck_assert_uint_eq(process_table_size(f.table), 1);
        ck_assert_uint_eq(process_entry_n_connections(e), 1);
        ck_assert_uint_eq(process_table_uid_count(f.table, UID), 1);
        process_table_disconnect(f.table, e, T0);
        ck_assert_uint_eq(process_table_size(f.table), 0);
        ck_assert_uint_eq(process_table_uid_count(f.table, UID), 0);
        fixture_done(&f);
}
END_TEST

START_TEST(test_second_connection_shares_entry) {
        Fixture f;
        ProcessEntry *a, *b;

        fixture_init(&f, 16, 16);
        a = connect_ok(&f, 100, 7, UID, T0);
        b = connect_ok(&f, 100, 7, UID, T0);
        ck_assert_ptr_eq(a, b);
        ck_assert_uint_eq(process_entry_n_connections(a), 2);
        process_table_disconnect(f.table, a, T0);
        ck_assert_uint_eq(process_table_size(f.table), 1);
        process_table_disconnect(f.table, a, T0);
        ck_assert_uint_eq(process_table_size(f.table), 0);
        fixture_done(&f);
}
END_TEST

/* A reconnect keeps the budget: the entry lingers while its windows hold usage. */
START_TEST(test_lingering_keeps_usage) {
        Fixture f;
        ProcessEntry *e, *again;

        fixture_init(&f, 16, 16);
        e = connect_ok(&f, 100, 7, UID, T0);
        spend(&f, e, 500, T0);
        process_table_disconnect(f.table, e, T0);
        ck_assert_uint_eq(process_table_size(f.table), 1);
        ck_assert(process_entry_is_lingering(e));

        again = connect_ok(&f, 100, 7, UID, T0 + 10 * SEC);
        ck_assert_ptr_eq(again, e);
        ck_assert(!process_entry_is_lingering(e));
        ck_assert_uint_eq(ledger_scope_window_used(process_entry_scope(e), LEDGER_WINDOW_DAY, T0 + 10 * SEC),
                          500);
        process_table_disconnect(f.table, e, T0 + 10 * SEC);

        /* Once the day window is empty, the next new entry sweeps it away. */
        connect_ok(&f, 200, 9, UID, T0 + 2 * DAY);
        ck_assert_uint_eq(process_table_size(f.table), 1);
        ck_assert_ptr_eq(process_table_next(f.table, NULL), process_table_next(f.table, NULL));
        ck_assert_int_eq(process_entry_pid(process_table_next(f.table, NULL)), 200);
        fixture_done(&f);
}
END_TEST

/* An open allocation keeps the entry referenced after its connections go. */
START_TEST(test_allocation_keeps_entry) {
        Fixture f;
        ProcessEntry *e;

        fixture_init(&f, 16, 16);
        e = connect_ok(&f, 100, 7, UID, T0);
        process_entry_allocation_added(e);
        process_table_disconnect(f.table, e, T0);
        ck_assert_uint_eq(process_table_size(f.table), 1);
        ck_assert(!process_entry_is_lingering(e));
        ck_assert_uint_eq(process_entry_n_allocations(e), 1);
        process_table_allocation_removed(f.table, e, T0);
        ck_assert_uint_eq(process_table_size(f.table), 0);
        fixture_done(&f);
}
END_TEST

/* A pid now held by another process (another start time) gets a fresh,
 * empty budget once the old entry is unreferenced... */
START_TEST(test_pid_reuse_fresh_entry) {
        Fixture f;
        ProcessEntry *old, *fresh;

        fixture_init(&f, 16, 16);
        old = connect_ok(&f, 100, 7, UID, T0);
        spend(&f, old, 500, T0);
        process_table_disconnect(f.table, old, T0);
        ck_assert_uint_eq(process_table_size(f.table), 1);

        fresh = connect_ok(&f, 100, 8, UID2, T0 + SEC);
        ck_assert_uint_eq(process_entry_start_time(fresh), 8);
        ck_assert_uint_eq(process_table_size(f.table), 1);
        ck_assert_uint_eq(ledger_scope_window_used(process_entry_scope(fresh), LEDGER_WINDOW_DAY, T0 + SEC),
                          0);
        ck_assert_uint_eq(process_table_uid_count(f.table, UID), 0);
        ck_assert_uint_eq(process_table_uid_count(f.table, UID2), 1);
        fixture_done(&f);
}
END_TEST

/* ...but while the old one is referenced (a socket inherited across exec),
 * the new process shares it rather than escaping its budget. */
START_TEST(test_pid_reuse_shares_referenced_entry) {
        Fixture f;
        ProcessEntry *old, *next;

        fixture_init(&f, 16, 16);
        old = connect_ok(&f, 100, 7, UID, T0);
        next = connect_ok(&f, 100, 8, UID, T0 + SEC);
        ck_assert_ptr_eq(old, next);
        ck_assert_uint_eq(process_entry_n_connections(old), 2);
        ck_assert_uint_eq(process_entry_start_time(old), 7);
        fixture_done(&f);
}
END_TEST

/* The table full of lingering entries with usage: nothing is dropped while
 * their processes live; exited ones make room. */
START_TEST(test_full_table_evicts_only_exited) {
        Fixture f;
        ProcessEntry *e;

        fixture_init(&f, 3, 3);
        for (pid_t pid = 100; pid < 103; pid++) {
                e = connect_ok(&f, pid, 7, UID, T0);
                spend(&f, e, 10, T0);
                process_table_disconnect(f.table, e, T0);
        }
        ck_assert_uint_eq(process_table_size(f.table), 3);

        ck_assert_int_eq(process_table_connect(f.table, 200, 7, UID2, false, T0, &e), -EUSERS);
        ck_assert_uint_eq(process_table_size(f.table), 3);
        ck_assert_uint_eq(f.world.n_asked, 3);

        /* Within the scan interval nobody is asked again, even after an exit. */
        f.world.dead[f.world.n_dead++] = 101;
        ck_assert_int_eq(process_table_connect(f.table, 200, 7, UID2, false, T0 + SEC / 2, &e), -EUSERS);
        ck_assert_uint_eq(f.world.n_asked, 3);

        e = connect_ok(&f, 200, 7, UID2, T0 + PROCESS_DEAD_SCAN_INTERVAL_USEC);
        ck_assert_uint_eq(process_table_size(f.table), 3);
        for (ProcessEntry *i = process_table_next(f.table, NULL); i; i = process_table_next(f.table, i))
                ck_assert_int_ne(process_entry_pid(i), 101);
        fixture_done(&f);
}
END_TEST

/* A uid's share keeps one user's sleeping processes from locking others out. */
START_TEST(test_per_uid_share) {
        Fixture f;
        ProcessEntry *e;

        fixture_init(&f, 10, 2);
        connect_ok(&f, 100, 7, UID, T0);
        connect_ok(&f, 101, 7, UID, T0);
        ck_assert_int_eq(process_table_connect(f.table, 102, 7, UID, false, T0, &e), -ETOOMANYREFS);
        connect_ok(&f, 103, 7, UID2, T0);
        /* A known process of the uid still connects: no new entry. */
        connect_ok(&f, 100, 7, UID, T0);
        ck_assert_uint_eq(process_table_uid_count(f.table, UID), 2);
        fixture_done(&f);
}
END_TEST

/* Admins (budgetctl) always get in, past both bounds. */
START_TEST(test_admin_exempt) {
        Fixture f;
        ProcessEntry *e;

        fixture_init(&f, 1, 1);
        connect_ok(&f, 100, 7, UID, T0);
        ck_assert_int_eq(process_table_connect(f.table, 101, 7, UID2, false, T0, &e), -EUSERS);
        ck_assert_int_eq(process_table_connect(f.table, 101, 7, 0, true, T0, &e), 0);
        ck_assert_int_eq(process_table_connect(f.table, 102, 7, 0, true, T0, &e), 0);
        ck_assert_uint_eq(process_table_size(f.table), 3);
        fixture_done(&f);
}
END_TEST

/* New limits reach the scopes that exist. */
START_TEST(test_set_limits_applies_to_scopes) {
        ProcessTableLimits limits = {.max_tracked = 16, .max_tracked_per_uid = 16};
        Fixture f;
        ProcessEntry *e;

        fixture_init(&f, 16, 16);
        e = connect_ok(&f, 100, 7, UID, T0);
        limits.scope.window_tokens[LEDGER_WINDOW_HOUR] = 1234;
        process_table_set_limits(f.table, &limits);
        ck_assert_uint_eq(ledger_scope_get_limits(process_entry_scope(e))->window_tokens[LEDGER_WINDOW_HOUR],
                          1234);
        fixture_done(&f);
}
END_TEST

static Suite *process_suite(void) {
        Suite *s = suite_create("process");
        TCase *tc = tcase_create("core");

        tcase_add_test(tc, test_unused_entry_goes_at_once);
        tcase_add_test(tc, test_second_connection_shares_entry);
        tcase_add_test(tc, test_lingering_keeps_usage);
        tcase_add_test(tc, test_allocation_keeps_entry);
        tcase_add_test(tc, test_pid_reuse_fresh_entry);
        tcase_add_test(tc, test_pid_reuse_shares_referenced_entry);
        tcase_add_test(tc, test_full_table_evicts_only_exited);
        tcase_add_test(tc, test_per_uid_share);
        tcase_add_test(tc, test_admin_exempt);
        tcase_add_test(tc, test_set_limits_applies_to_scopes);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(process_suite());
}
