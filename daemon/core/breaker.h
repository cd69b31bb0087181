/* SPDX-License-Identifier: MIT */
/*
 * Runaway breakers: a process, agent or class (a name, plus a discriminator
 * such as a process's start time so that a reused pid starts closed) that
 * breaches its hard limit `breaches` times within `window_usec` is tripped
 * open for a cool-down: its Requests are refused (CircuitOpen). When the
 * cool-down ends it turns half-open (at the next breaker_gate()): one probe
 * Request goes through; the probe's allocation settling within its hard
 * limit closes the breaker, a breach of it reopens the breaker with the
 * cool-down doubled (capped at max_cooldown_usec). Closing forgets the
 * breaches and the doubling.
 *
 * Only entities with a breach are kept: finding the breaker of a caller with
 * none is one hash lookup and allocates nothing. Names are found by a keyed
 * SipHash (breaker_table_set_hash_key()), with equal hashes chained, so
 * client-chosen names cannot slow lookups down without the key. The table
 * holds at most max_entries breakers; closed ones with no breach left in the
 * window are dropped by breaker_table_sweep() and, when the table is full,
 * before a new one is refused (at most once a second). A breaker keeps the
 * times of its last `breaches` breaches (at most 1000), in a ring grown as
 * breaches come. A Breaker pointer is valid until the next breaker_breach()
 * or breaker_table_sweep() (either may drop breakers).
 *
 * The table decides nothing about requests (decide.c does, from the gate) and
 * says what changed so the caller can emit events. Pure: no clock, no I/O.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "decide.h" /* BreakerGate */

typedef enum BreakerState {
        BREAKER_CLOSED,
        BREAKER_OPEN,
        BREAKER_HALF_OPEN,
        _BREAKER_STATE_MAX,
} BreakerState;

const char *breaker_state_to_string(BreakerState s); /* "closed", "open", "half-open" */

/* breaker.runaway_breaches, runaway_window_sec, cooldown_sec, max_cooldown_sec. */
typedef struct BreakerSettings {
        uint32_t breaches; /* 0: breakers never trip (and open ones let everything through) */
        uint64_t window_usec, cooldown_usec, max_cooldown_usec;
} BreakerSettings;

/* The most breach times a breaker keeps (breaker.runaway_breaches is 0..1000). */
#define BREAKER_BREACHES_MAX 1000u

typedef struct BreakerTable BreakerTable;
typedef struct Breaker Breaker;

BreakerTable *breaker_table_new(const BreakerSettings *s, size_t max_entries);
BreakerTable *breaker_table_free(BreakerTable *t); /* NULL-safe */
/* Keys the name hash; call once, before the first breach, with 16 random
 * bytes. Without it the key is all zeros (for tests). */
void breaker_table_set_hash_key(BreakerTable *t, const uint8_t key[16]);
/* New settings apply from now on: an open breaker keeps its cool-down's end,
 * a lower max_entries drops nothing (new breakers are refused until below). */
void breaker_table_set_settings(BreakerTable *t, const BreakerSettings *s, size_t max_entries);

/* The breaker of name/disc, or NULL when none is kept (a request of a caller
 * with no breach so far finds none: O(1), and nothing is allocated). */
Breaker *breaker_find(const BreakerTable *t, const char *name, uint64_t disc);
/* What a request may do: GATE_CLOSED, GATE_PROBE (half-open and no probe in
 * flight), GATE_OPEN with *ret_retry_after_usec (may be NULL; 0 while the
 * probe is in flight). An open breaker whose cool-down ended turns half-open
 * here: *ret_changed (may be NULL) is set then (the caller emits the
 * half-open event). NULL b, or settings.breaches 0: GATE_CLOSED. */
BreakerGate breaker_gate(Breaker *b, uint64_t now, uint64_t *ret_retry_after_usec, bool *ret_changed);
/* The probe was granted: others see GATE_OPEN until breaker_probe_done() or
 * a breach of the probe. No-op unless half-open. */
void breaker_probe_started(Breaker *b);
/* A hard-limit breach of an allocation of this entity (probe: it was the
 * half-open probe). Creates the breaker when needed (owner: the uid it
 * belongs to, -1 shared). Returns the state after it and whether it changed
 * (opened or reopened; the cool-down doubles, capped, on a failed probe); a
 * breach of a non-probe allocation (granted before the breaker opened)
 * while half-open is recorded but leaves the decision to the probe.
 * Returns 0, -ENOMEM, or -EUSERS when the table is full (then the breach is
 * not tracked); with settings.breaches 0 nothing is tracked (0, closed). */
int breaker_breach(BreakerTable *t, const char *name, uint64_t disc, int64_t owner, bool probe, uint64_t now,
                   BreakerState *ret_state, bool *ret_changed);
/* A breaker the durable ledger kept across a restart: open until open_until
 * (monotonic; past it, it turns half-open at the next gate) with the
 * cool-down it had, or half-open (its probe, if one was in flight, went with
 * the last run: the next request is the probe). breaches (at most the
 * setting) are recorded as breach times at the opening (open_until -
 * cooldown_usec, no earlier than 0), so they age out of the window as the
 * originals would have. Closed: nothing is kept. 0, -ENOMEM, -EUSERS (table
 * full), or -EINVAL (state out of range); with settings.breaches 0 nothing. */
int breaker_restore(BreakerTable *t, const char *name, uint64_t disc, int64_t owner, BreakerState state,
                    uint32_t breaches, uint64_t cooldown_usec, uint64_t open_until, uint64_t now);
/* The probe's allocation settled: within its hard limit (breached false)
 * closes a half-open breaker whose probe is in flight, and returns true when
 * it did. One that was abandoned (no release) counts as within if it did not
 * breach. A probe that breached is reported through breaker_breach(probe =
 * true), which reopens it; breached true here never closes (and reopens, as
 * a failed probe, a breaker still waiting for that probe, so it cannot stay
 * half-open with a probe in flight that will never come back). */
bool breaker_probe_done(BreakerTable *t, const char *name, uint64_t disc, bool breached, uint64_t now);
/* Drops closed breakers with no breach left in the window, and open or
 * half-open ones with no probe in flight whose cool-down ended a whole
 * window ago with no breach since (an entity gone quiet, such as a process
 * that exited). */
void breaker_table_sweep(BreakerTable *t, uint64_t now);

/* Iteration, NULL starts (newest first). */
Breaker *breaker_table_next(const BreakerTable *t, const Breaker *b);
const char *breaker_name(const Breaker *b);
uint64_t breaker_disc(const Breaker *b);
int64_t breaker_owner(const Breaker *b);
/* As last changed: an open breaker whose cool-down ended still says open
 * until breaker_gate() turns it half-open (breaker_retry_after() is 0 then). */
BreakerState breaker_state(const Breaker *b);
uint32_t breaker_breaches(const Breaker *b, uint64_t now);    /* within the window */
uint64_t breaker_retry_after(const Breaker *b, uint64_t now); /* open: until half-open; else 0 */
uint64_t breaker_cooldown(const Breaker *b);                  /* of the current (or next) opening */
bool breaker_probe_in_flight(const Breaker *b);
size_t breaker_table_size(const BreakerTable *t);
