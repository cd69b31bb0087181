/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/core/breaker.c: every transition (closed -> open with N
 * breaches in the window, N-1 then one after the first left the window does
 * not trip, the window's edge; open -> half-open at the cool-down's end,
 * reported once; a probe in flight refusing others; a probe within its limit
 * closing and forgetting the breaches; a failed probe reopening with the
 * cool-down doubled up to the cap, reported through breaker_breach() or
 * breaker_probe_done(); a non-probe breach while half-open leaving the
 * decision to the probe), breaches 0 tracking nothing, sweeping, the table
 * full (refused, then swept when full at most once a second), the
 * discriminator separating a reused pid, many names found, and the ring of
 * breach times when the setting changes. Time moves by parameter.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "tb-check.h"

#define SEC    UINT64_C(1000000)
#define T0     (1000 * SEC)
#define WINDOW (600 * SEC)
#define COOL   (300 * SEC)
#define MAXC   (1000 * SEC)

static const BreakerSettings settings_default = {
        .breaches = 3,
        .window_usec = WINDOW,
        .cooldown_usec = COOL,
        .max_cooldown_usec = MAXC,
};

static BreakerState breach(BreakerTable *t, const char *name, uint64_t disc, bool probe, uint64_t now,
                           bool *ret_changed) {
        BreakerState state = _BREAKER_STATE_MAX;
        bool changed = true;

        ck_assert_int_eq(breaker_breach(t, name, disc, 1000, probe, now, &state, &changed), 0);
        if (ret_changed)
                *ret_changed = changed;
        return state;
}

static BreakerGate gate(BreakerTable *t, const char *name, uint64_t disc, uint64_t now, uint64_t *ret_retry,
                        bool *ret_changed) {
        return breaker_gate(breaker_find(t, name, disc), now, ret_retry, ret_changed);
}

/* Trips "p" open at T0 with three breaches. */
static Breaker *trip(BreakerTable *t, const char *name, uint64_t disc, uint64_t at) {
        bool changed;

        ck_assert_int_eq(breach(t, name, disc, false, at - 2 * SEC, &changed), BREAKER_CLOSED);
        ck_assert(!changed);
        ck_assert_int_eq(breach(t, name, disc, false, at - SEC, &changed), BREAKER_CLOSED);
        ck_assert(!changed);
        ck_assert_int_eq(breach(t, name, disc, false, at, &changed), BREAKER_OPEN);
        ck_assert(changed);
        return breaker_find(t, name, disc);
}

START_TEST(test_state_strings) {
        ck_assert_str_eq(breaker_state_to_string(BREAKER_CLOSED), "closed");
        ck_assert_str_eq(breaker_state_to_string(BREAKER_OPEN), "open");
        ck_assert_str_eq(breaker_state_to_string(BREAKER_HALF_OPEN), "half-open");
        ck_assert_ptr_null(breaker_state_to_string(_BREAKER_STATE_MAX));
        ck_assert_ptr_null(breaker_state_to_string((BreakerState)-1));
}
END_TEST

START_TEST(test_no_breach_no_breaker) {
        BreakerTable *t = breaker_table_new(&settings_default, 10);
        uint64_t retry = 7;
        bool changed = true;

        ck_assert_ptr_nonnull(t);
        ck_assert_ptr_null(breaker_find(t, "process:42", 1));
        ck_assert_int_eq(breaker_gate(NULL, T0, &retry, &changed), GATE_CLOSED);
        ck_assert_uint_eq(retry, 0);
        ck_assert(!changed);
        ck_assert_uint_eq(breaker_table_size(t), 0);
        ck_assert_ptr_null(breaker_table_next(t, NULL));
        ck_assert(!breaker_probe_done(t, "process:42", 1, false, T0));
        breaker_probe_started(NULL);
        ck_assert_ptr_null(breaker_table_free(t));
        ck_assert_ptr_null(breaker_table_free(NULL));
}
END_TEST

START_TEST(test_trip) {
        BreakerTable *t = breaker_table_new(&settings_default, 10);
        uint64_t retry;
        bool changed;
        Breaker *b;

        ck_assert_int_eq(breach(t, "agent:1000:x", 0, false, T0, &changed), BREAKER_CLOSED);
        ck_assert(!changed);
        b = breaker_find(t, "agent:1000:x", 0);
        ck_assert_ptr_nonnull(b);
        ck_assert_str_eq(breaker_name(b), "agent:1000:x");
        ck_assert_int_eq(breaker_owner(b), 1000);
        ck_assert_uint_eq(breaker_disc(b), 0);
        ck_assert_uint_eq(breaker_breaches(b, T0), 1);
        ck_assert_int_eq(breaker_gate(b, T0, &retry, &changed), GATE_CLOSED);
        ck_assert_int_eq(breach(t, "agent:1000:x", 0, false, T0 + 10 * SEC, NULL), BREAKER_CLOSED);
        ck_assert_uint_eq(breaker_breaches(b, T0 + 10 * SEC), 2);
        /* The third within the window (the first is 599 s old) trips it. */
        ck_assert_int_eq(breach(t, "agent:1000:x", 0, false, T0 + WINDOW - 1, &changed), BREAKER_OPEN);
        ck_assert(changed);
        ck_assert_int_eq(breaker_state(b), BREAKER_OPEN);
        ck_assert_uint_eq(breaker_cooldown(b), COOL);
        ck_assert_uint_eq(breaker_retry_after(b, T0 + WINDOW - 1), COOL);
        ck_assert_int_eq(breaker_gate(b, T0 + WINDOW, &retry, &changed), GATE_OPEN);
        ck_assert_uint_eq(retry, COOL - 1);
        ck_assert(!changed);
        /* More breaches while open: recorded, nothing changes, the cool-down is not extended. */
        ck_assert_int_eq(breach(t, "agent:1000:x", 0, false, T0 + WINDOW + SEC, &changed), BREAKER_OPEN);
        ck_assert(!changed);
        ck_assert_uint_eq(breaker_retry_after(b, T0 + WINDOW + SEC), COOL - 1 - SEC);
        breaker_table_free(t);
}
END_TEST

START_TEST(test_window_edge) {
        BreakerTable *t = breaker_table_new(&settings_default, 10);
        Breaker *b;

        /* N-1 in the window, then one when the first has left it: no trip. */
        ck_assert_int_eq(breach(t, "p", 0, false, T0, NULL), BREAKER_CLOSED);
        ck_assert_int_eq(breach(t, "p", 0, false, T0 + SEC, NULL), BREAKER_CLOSED);
        ck_assert_int_eq(breach(t, "p", 0, false, T0 + WINDOW, NULL), BREAKER_CLOSED);
        b = breaker_find(t, "p", 0);
        ck_assert_uint_eq(breaker_breaches(b, T0 + WINDOW), 2);
        /* One more while the second and third are still in it: trips. */
        ck_assert_int_eq(breach(t, "p", 0, false, T0 + SEC + WINDOW - 1, NULL), BREAKER_OPEN);
        breaker_table_free(t);
}
END_TEST

START_TEST(test_half_open_and_probe) {
        BreakerTable *t = breaker_table_new(&settings_default, 10);
        uint64_t retry, open_end = T0 + COOL;
        bool changed;
        Breaker *b = trip(t, "process:42", 77, T0);

        ck_assert_int_eq(gate(t, "process:42", 77, open_end - 1, &retry, &changed), GATE_OPEN);
        ck_assert_uint_eq(retry, 1);
        ck_assert(!changed);
        /* At the cool-down's end: half-open, reported once. */
        ck_assert_int_eq(breaker_gate(b, open_end, &retry, &changed), GATE_PROBE);
        ck_assert(changed);
        ck_assert_uint_eq(retry, 0);
        ck_assert_int_eq(breaker_state(b), BREAKER_HALF_OPEN);
        ck_assert_int_eq(breaker_gate(b, open_end + 1, &retry, &changed), GATE_PROBE);
        ck_assert(!changed);
        /* The probe is granted: everyone else is refused, retry 0. */
        breaker_probe_started(b);
        ck_assert(breaker_probe_in_flight(b));
        retry = 5;
        ck_assert_int_eq(breaker_gate(b, open_end + 2, &retry, &changed), GATE_OPEN);
        ck_assert_uint_eq(retry, 0);
        ck_assert(!changed);
        /* A breach of an older allocation: recorded, the probe still decides. */
        ck_assert_int_eq(breach(t, "process:42", 77, false, open_end + 3, &changed), BREAKER_HALF_OPEN);
        ck_assert(!changed);
        ck_assert(breaker_probe_in_flight(b));
        /* Another entity's probe_done does nothing. */
        ck_assert(!breaker_probe_done(t, "process:42", 78, false, open_end + 4));
        /* The probe settles within its limit: closed, breaches forgotten. */
        ck_assert(breaker_probe_done(t, "process:42", 77, false, open_end + 5));
        ck_assert_int_eq(breaker_state(b), BREAKER_CLOSED);
        ck_assert(!breaker_probe_in_flight(b));
        ck_assert_uint_eq(breaker_breaches(b, open_end + 5), 0);
        ck_assert_uint_eq(breaker_cooldown(b), COOL);
        ck_assert_int_eq(breaker_gate(b, open_end + 5, &retry, &changed), GATE_CLOSED);
        ck_assert(!changed);
        /* A second probe_done (say, a duplicate) does nothing. */
        ck_assert(!breaker_probe_done(t, "process:42", 77, false, open_end + 6));
        /* It needs N new breaches to trip again. */
        ck_assert_int_eq(breach(t, "process:42", 77, false, open_end + 7, NULL), BREAKER_CLOSED);
        ck_assert_int_eq(breach(t, "process:42", 77, false, open_end + 8, NULL), BREAKER_CLOSED);
        ck_assert_int_eq(breach(t, "process:42", 77, false, open_end + 9, NULL), BREAKER_OPEN);
        ck_assert_uint_eq(breaker_cooldown(b), COOL);
        breaker_table_free(t);
}
END_TEST

START_TEST(test_failed_probe_doubles) {
        BreakerTable *t = breaker_table_new(&settings_default, 10);
        uint64_t now = T0, want = COOL, retry;
        bool changed;
        Breaker *b = trip(t, "p", 0, now);

        /* 300 -> 600 -> 1000 (capped) -> 1000 */
        for (int i = 0; i < 4; i++) {
                ck_assert_uint_eq(breaker_cooldown(b), want);
                now += want;
                ck_assert_int_eq(breaker_gate(b, now, &retry, &changed), GATE_PROBE);
                ck_assert(changed);
                breaker_probe_started(b);
                ck_assert_int_eq(breach(t, "p", 0, true, now + SEC, &changed), BREAKER_OPEN);
                ck_assert(changed);
                ck_assert(!breaker_probe_in_flight(b));
                want = want * 2 > MAXC ? MAXC : want * 2;
                ck_assert_msg(breaker_cooldown(b) == want, "round %d: cool-down %" PRIu64 ", want %" PRIu64,
                              i, breaker_cooldown(b), want);
                ck_assert_uint_eq(breaker_retry_after(b, now + SEC), want);
                /* The failed probe's release does not close it. */
                ck_assert(!breaker_probe_done(t, "p", 0, true, now + 2 * SEC));
                ck_assert_int_eq(breaker_state(b), BREAKER_OPEN);
                now += SEC;
        }
        /* A breach reported only at the probe's release (breached = true) reopens too. */
        now += MAXC;
        ck_assert_int_eq(breaker_gate(b, now, NULL, NULL), GATE_PROBE);
        breaker_probe_started(b);
        ck_assert(!breaker_probe_done(t, "p", 0, true, now + SEC));
        ck_assert_int_eq(breaker_state(b), BREAKER_OPEN);
        ck_assert_uint_eq(breaker_cooldown(b), MAXC);
        ck_assert_uint_eq(breaker_retry_after(b, now + SEC), MAXC);
        /* And a success after all that closes and resets the cool-down. */
        now += SEC + MAXC;
        ck_assert_int_eq(breaker_gate(b, now, NULL, NULL), GATE_PROBE);
        breaker_probe_started(b);
        ck_assert(breaker_probe_done(t, "p", 0, false, now + SEC));
        ck_assert_uint_eq(breaker_cooldown(b), COOL);
        breaker_table_free(t);
}
END_TEST

START_TEST(test_breaches_zero) {
        BreakerSettings off = settings_default;
        BreakerTable *t = breaker_table_new(&settings_default, 10);
        BreakerState state;
        bool changed = true;
        Breaker *b = trip(t, "p", 0, T0);

        /* Turned off: open breakers let everything through, nothing new is tracked. */
        off.breaches = 0;
        breaker_table_set_settings(t, &off, 10);
        ck_assert_int_eq(breaker_gate(b, T0 + 1, NULL, NULL), GATE_CLOSED);
        ck_assert_int_eq(breaker_breach(t, "q", 0, -1, false, T0, &state, &changed), 0);
        ck_assert_int_eq(state, BREAKER_CLOSED);
        ck_assert(!changed);
        ck_assert_ptr_null(breaker_find(t, "q", 0));
        ck_assert_uint_eq(breaker_table_size(t), 1);
        /* Back on: the open one is open again until its end. */
        breaker_table_set_settings(t, &settings_default, 10);
        ck_assert_int_eq(breaker_gate(b, T0 + 1, NULL, NULL), GATE_OPEN);
        breaker_table_free(t);
}
END_TEST

START_TEST(test_sweep) {
        BreakerTable *t = breaker_table_new(&settings_default, 10);
        Breaker *open;

        (void)breach(t, "old", 0, false, T0, NULL);
        (void)breach(t, "recent", 0, false, T0 + 100 * SEC, NULL);
        open = trip(t, "open", 0, T0 + 2 * SEC);
        ck_assert_uint_eq(breaker_table_size(t), 3);
        breaker_table_sweep(t, T0 + WINDOW - 1);
        ck_assert_uint_eq(breaker_table_size(t), 3);
        /* "old"'s breach left the window; "open" keeps its state. */
        breaker_table_sweep(t, T0 + WINDOW);
        ck_assert_uint_eq(breaker_table_size(t), 2);
        ck_assert_ptr_null(breaker_find(t, "old", 0));
        ck_assert_ptr_nonnull(breaker_find(t, "recent", 0));
        ck_assert_ptr_eq(breaker_find(t, "open", 0), open);
        /* "recent" left the window; "open" is kept a window past its cool-down's end. */
        breaker_table_sweep(t, T0 + 2 * SEC + COOL + WINDOW - 1);
        ck_assert_uint_eq(breaker_table_size(t), 1);
        ck_assert_ptr_eq(breaker_table_next(t, NULL), open);
        ck_assert_ptr_null(breaker_table_next(t, open));
        /* Half-open with the probe in flight: kept however long. */
        ck_assert_int_eq(breaker_gate(open, T0 + 2 * SEC + COOL, NULL, NULL), GATE_PROBE);
        breaker_probe_started(open);
        breaker_table_sweep(t, T0 + 100 * WINDOW);
        ck_assert_uint_eq(breaker_table_size(t), 1);
        /* Closed by the probe: dropped at the next sweep. */
        ck_assert(breaker_probe_done(t, "open", 0, false, T0 + 100 * WINDOW));
        breaker_table_sweep(t, T0 + 100 * WINDOW);
        ck_assert_uint_eq(breaker_table_size(t), 0);
        /* Open, gone quiet: kept for a window after its cool-down, then dropped. */
        open = trip(t, "quiet", 0, T0 + 200 * WINDOW);
        breaker_table_sweep(t, T0 + 200 * WINDOW + COOL + WINDOW - 1);
        ck_assert_ptr_eq(breaker_find(t, "quiet", 0), open);
        breaker_table_sweep(t, T0 + 200 * WINDOW + COOL + WINDOW);
        ck_assert_ptr_null(breaker_find(t, "quiet", 0));
        breaker_table_free(t);
}
END_TEST

START_TEST(test_table_full) {
        BreakerTable *t = breaker_table_new(&settings_default, 3);
        BreakerState state;
        bool changed;

        (void)breach(t, "a", 0, false, T0, NULL);
        (void)breach(t, "b", 0, false, T0, NULL);
        (void)breach(t, "c", 0, false, T0 + 1, NULL);
        ck_assert_int_eq(breaker_breach(t, "d", 0, -1, false, T0 + 10 * SEC, &state, &changed), -EUSERS);
        ck_assert_ptr_null(breaker_find(t, "d", 0));
        /* Known ones still count. */
        ck_assert_int_eq(breach(t, "a", 0, false, T0 + 20 * SEC, NULL), BREAKER_CLOSED);
        ck_assert_uint_eq(breaker_breaches(breaker_find(t, "a", 0), T0 + 20 * SEC), 2);
        /* "b" left the window: a new one sweeps it out (the last full sweep was > 1 s ago). */
        ck_assert_int_eq(breaker_breach(t, "d", 0, -1, false, T0 + WINDOW, &state, &changed), 0);
        ck_assert_ptr_null(breaker_find(t, "b", 0));
        ck_assert_ptr_nonnull(breaker_find(t, "d", 0));
        ck_assert_int_eq(breaker_owner(breaker_find(t, "d", 0)), -1);
        /* Full again with "c" out of the window, but swept less than a second ago: refused. */
        ck_assert_int_eq(breaker_breach(t, "e", 0, -1, false, T0 + WINDOW + 10, &state, &changed), -EUSERS);
        ck_assert_int_eq(breaker_breach(t, "e", 0, -1, false, T0 + WINDOW + SEC, &state, &changed), 0);
        ck_assert_ptr_null(breaker_find(t, "c", 0));
        /* A lower max_entries drops nothing. */
        breaker_table_set_settings(t, &settings_default, 1);
        ck_assert_uint_eq(breaker_table_size(t), 3);
        /* Zero entries: nothing is tracked. */
        breaker_table_free(t);
        t = breaker_table_new(&settings_default, 0);
        ck_assert_int_eq(breaker_breach(t, "a", 0, -1, false, T0, &state, &changed), -EUSERS);
        breaker_table_free(t);
}
END_TEST

START_TEST(test_disc_separates) {
        BreakerTable *t = breaker_table_new(&settings_default, 10);
        Breaker *old = trip(t, "process:4242", 111, T0);

        /* pid 4242 reused by a process started later: a breaker of its own, closed. */
        ck_assert_ptr_null(breaker_find(t, "process:4242", 222));
        ck_assert_int_eq(gate(t, "process:4242", 222, T0 + 1, NULL, NULL), GATE_CLOSED);
        ck_assert_int_eq(breach(t, "process:4242", 222, false, T0 + 1, NULL), BREAKER_CLOSED);
        ck_assert_ptr_ne(breaker_find(t, "process:4242", 222), old);
        ck_assert_int_eq(gate(t, "process:4242", 111, T0 + 1, NULL, NULL), GATE_OPEN);
        ck_assert_uint_eq(breaker_breaches(breaker_find(t, "process:4242", 222), T0 + 1), 1);
        breaker_table_free(t);
}
END_TEST

START_TEST(test_many_names) {
        enum { N = 2000 };
        static const uint8_t key[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
        BreakerTable *t = breaker_table_new(&settings_default, N);
        char name[32];
        size_t seen = 0;

        breaker_table_set_hash_key(t, key);
        for (size_t i = 0; i < N; i++) {
                snprintf(name, sizeof(name), "agent:1000:a%zu", i);
                (void)breach(t, name, i % 3, false, T0 + i, NULL);
        }
        ck_assert_uint_eq(breaker_table_size(t), N);
        for (size_t i = 0; i < N; i++) {
                Breaker *b;

                snprintf(name, sizeof(name), "agent:1000:a%zu", i);
                b = breaker_find(t, name, i % 3);
                ck_assert_msg(b && strcmp(breaker_name(b), name) == 0, "%s", name);
                ck_assert_ptr_null(breaker_find(t, name, i % 3 + 1));
        }
        for (Breaker *b = breaker_table_next(t, NULL); b; b = breaker_table_next(t, b))
                seen++;
        ck_assert_uint_eq(seen, N);
        /* Dropping in the middle of hash chains keeps the rest findable. */
        breaker_table_sweep(t, T0 + WINDOW + N / 2 - 1);
        ck_assert_uint_eq(breaker_table_size(t), N / 2);
        for (size_t i = N / 2; i < N; i++) {
                snprintf(name, sizeof(name), "agent:1000:a%zu", i);
                ck_assert_ptr_nonnull(breaker_find(t, name, i % 3));
        }
        breaker_table_free(t);
}
END_TEST

START_TEST(test_ring) {
        BreakerSettings s = settings_default;
        BreakerTable *t;
        Breaker *b;

        /* 1000 breaches needed: the ring grows to hold them, no more. */
        s.breaches = 1000;
        t = breaker_table_new(&s, 10);
        for (uint64_t i = 0; i < 999; i++)
                ck_assert_int_eq(breach(t, "p", 0, false, T0 + i, NULL), BREAKER_CLOSED);
        b = breaker_find(t, "p", 0);
        ck_assert_uint_eq(breaker_breaches(b, T0 + 999), 999);
        ck_assert_int_eq(breach(t, "p", 0, false, T0 + 999, NULL), BREAKER_OPEN);
        ck_assert_uint_eq(breaker_breaches(b, T0 + 1000), 1000);
        /* Beyond the setting's count the oldest are forgotten. */
        ck_assert_int_eq(breach(t, "p", 0, false, T0 + 1000, NULL), BREAKER_OPEN);
        ck_assert_uint_eq(breaker_breaches(b, T0 + 1000), 1000);
        /* Out-of-range settings are clamped to BREAKER_BREACHES_MAX. */
        s.breaches = 5000;
        breaker_table_set_settings(t, &s, 10);
        ck_assert_uint_eq(breaker_breaches(b, T0 + 1000), 1000);
        /* Lowered: only the last `breaches` count. */
        s.breaches = 2;
        breaker_table_set_settings(t, &s, 10);
        ck_assert_uint_eq(breaker_breaches(b, T0 + 1000), 2);
        (void)breach(t, "q", 0, false, T0, NULL);
        ck_assert_int_eq(breach(t, "q", 0, false, T0 + WINDOW, NULL), BREAKER_CLOSED);
        ck_assert_int_eq(breach(t, "q", 0, false, T0 + WINDOW + 1, NULL), BREAKER_OPEN);
        breaker_table_free(t);
}
END_TEST

/* What the durable ledger puts back at start: an open breaker stays open
 * until its end, then is half-open (the probe of the last run is gone); its
 * breaches age out from the opening; a doubled cool-down is kept (clamped
 * to the settings); closed and bad states restore nothing. */
START_TEST(test_restore) {
        BreakerTable *t = breaker_table_new(&settings_default, 2);
        uint64_t retry;
        bool changed;
        Breaker *b;

        ck_assert_int_eq(
                breaker_restore(t, "agent:1000:x", 0, 1000, BREAKER_OPEN, 3, 2 * COOL, T0 + COOL, T0), 0);
        b = breaker_find(t, "agent:1000:x", 0);
        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(breaker_owner(b), 1000);
        ck_assert_int_eq(breaker_state(b), BREAKER_OPEN);
        ck_assert_uint_eq(breaker_cooldown(b), 2 * COOL);
        ck_assert_uint_eq(breaker_retry_after(b, T0), COOL);
        /* opened at T0 + COOL - 2 COOL, clamped to the restore's now: T0 */
        ck_assert_uint_eq(breaker_breaches(b, T0), 3);
        ck_assert_uint_eq(breaker_breaches(b, T0 + WINDOW), 0);
        ck_assert_int_eq(breaker_gate(b, T0 + COOL - 1, &retry, &changed), GATE_OPEN);
        ck_assert_uint_eq(retry, 1);
        ck_assert_int_eq(breaker_gate(b, T0 + COOL, &retry, &changed), GATE_PROBE);
        ck_assert(changed);
        /* A probe that breaches reopens it with the cool-down doubled again, capped. */
        breaker_probe_started(b);
        ck_assert_int_eq(breach(t, "agent:1000:x", 0, true, T0 + COOL + SEC, &changed), BREAKER_OPEN);
        ck_assert(changed);
        ck_assert_uint_eq(breaker_cooldown(b), MAXC);

        /* Half-open: no probe in flight, the next request is the probe. */
        ck_assert_int_eq(breaker_restore(t, "process:7", 99, 1000, BREAKER_HALF_OPEN, 9, 1, T0 - SEC, T0),
                         0);
        b = breaker_find(t, "process:7", 99);
        ck_assert_ptr_nonnull(b);
        ck_assert_uint_eq(breaker_cooldown(b), COOL);  /* clamped up to the setting */
        ck_assert_uint_eq(breaker_breaches(b, T0), 3); /* at most the setting */
        ck_assert_int_eq(breaker_gate(b, T0, &retry, &changed), GATE_PROBE);
        ck_assert(!changed);
        ck_assert(!breaker_probe_done(t, "process:7", 99, false, T0)); /* no probe yet */
        breaker_probe_started(b);
        ck_assert(breaker_probe_done(t, "process:7", 99, false, T0 + SEC));
        ck_assert_int_eq(breaker_state(b), BREAKER_CLOSED);

        /* Closed and out-of-range states keep nothing; a full table refuses. */
        ck_assert_int_eq(breaker_restore(t, "class:1:y", 0, 1, BREAKER_CLOSED, 3, COOL, T0, T0), 0);
        ck_assert_ptr_null(breaker_find(t, "class:1:y", 0));
        ck_assert_int_eq(breaker_restore(t, "class:1:y", 0, 1, _BREAKER_STATE_MAX, 3, COOL, T0, T0),
                         -EINVAL);
        /* (the closed process:7 is swept to make room, then the table is full) */
        ck_assert_int_eq(breaker_restore(t, "class:1:z", 0, 1, BREAKER_OPEN, 3, COOL, T0 + COOL, T0), 0);
        ck_assert_ptr_null(breaker_find(t, "process:7", 99));
        ck_assert_int_eq(breaker_restore(t, "class:1:w", 0, 1, BREAKER_OPEN, 3, COOL, T0 + COOL, T0),
                         -EUSERS);
        breaker_table_free(t);

        /* breaches 0 (breakers off): nothing is restored. */
        t = breaker_table_new(&(BreakerSettings){.breaches = 0, .window_usec = WINDOW}, 10);
        ck_assert_int_eq(breaker_restore(t, "agent:1000:x", 0, 1000, BREAKER_OPEN, 3, COOL, T0 + COOL, T0),
                         0);
        ck_assert_uint_eq(breaker_table_size(t), 0);
        breaker_table_free(t);
}
END_TEST

static Suite *breaker_suite(void) {
        Suite *s = suite_create("breaker");
        TCase *tc = tcase_create("core");

        tcase_set_timeout(tc, 60);
        tcase_add_test(tc, test_state_strings);
        tcase_add_test(tc, test_no_breach_no_breaker);
        tcase_add_test(tc, test_trip);
        tcase_add_test(tc, test_window_edge);
        tcase_add_test(tc, test_half_open_and_probe);
        tcase_add_test(tc, test_failed_probe_doubles);
        tcase_add_test(tc, test_breaches_zero);
        tcase_add_test(tc, test_sweep);
        tcase_add_test(tc, test_table_full);
        tcase_add_test(tc, test_disc_separates);
        tcase_add_test(tc, test_many_names);
        tcase_add_test(tc, test_ring);
        tcase_add_test(tc, test_restore);
        suite_add_tcase(s, tc);
        return s;
}

int main(void) {
        return tb_check_main(breaker_suite());
}
