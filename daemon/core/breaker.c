/* SPDX-License-Identifier: MIT */
/*
 * Runaway breakers (see breaker.h). Breakers are found by a keyed SipHash of
 * the name xor a multiple of the discriminator in the uint64 hashmap, with
 * breakers of an equal hash chained (as scopes.c does). The breach times are
 * a ring that holds at most settings.breaches entries: the oldest is dropped
 * for a new one, so only the last `breaches` can be within the window, and
 * the ring grows by doubling (from 4) only for entities that keep breaching.
 * A breach at time T counts while now < T + window_usec.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "breaker.h"
#include "hashmap.h"
#include "macro.h"
#include "siphash.h"

/* A full table sweeps for droppable breakers at most this often, so a flood
 * of new names cannot make every breach walk the table. */
#define SWEEP_WHEN_FULL_INTERVAL_USEC UINT64_C(1000000)

#define RING_CAPACITY_MIN 4u

struct Breaker {
        BreakerTable *table;
        char *name;
        uint64_t disc, hash;
        Breaker *hash_next; /* same hash */
        LIST_FIELDS(Breaker, all);
        int64_t owner;
        BreakerState state;
        bool probe_in_flight;
        uint64_t open_until;    /* open: when it turns half-open */
        uint64_t cooldown_usec; /* of the current opening; settings.cooldown_usec while closed */
        uint64_t *times;        /* ring of breach times, oldest at first */
        uint32_t n_times, times_capacity, first;
};

struct BreakerTable {
        BreakerSettings settings;
        size_t max_entries;
        SipHashKey key;
        Hashmap *by_hash; /* hash -> first Breaker with it */
        Breaker *all;     /* newest first */
        size_t n;
        uint64_t last_full_sweep_usec;
        bool swept_once;
};

static const char *const state_names[_BREAKER_STATE_MAX] = {
        [BREAKER_CLOSED] = "closed",
        [BREAKER_OPEN] = "open",
        [BREAKER_HALF_OPEN] = "half-open",
};

const char *breaker_state_to_string(BreakerState s) {
        return (unsigned)s < _BREAKER_STATE_MAX ? state_names[s] : NULL;
}

static uint64_t add_sat(uint64_t a, uint64_t b) {
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* ---- the table ---- */

static void settings_clamp(BreakerTable *t, const BreakerSettings *s, size_t max_entries) {
        t->settings = *s;
        if (t->settings.breaches > BREAKER_BREACHES_MAX)
                t->settings.breaches = BREAKER_BREACHES_MAX;
        if (t->settings.max_cooldown_usec < t->settings.cooldown_usec)
                t->settings.max_cooldown_usec = t->settings.cooldown_usec;
        t->max_entries = max_entries;
}

BreakerTable *breaker_table_new(const BreakerSettings *s, size_t max_entries) {
        BreakerTable *t = calloc(1, sizeof(*t));

        if (!t)
                return NULL;
        t->by_hash = hashmap_new();
        if (!t->by_hash)
                return breaker_table_free(t);
        settings_clamp(t, s, max_entries);
        return t;
}

static void breaker_free(BreakerTable *t, Breaker *b) {
        Breaker *first = hashmap_get(t->by_hash, b->hash);

        if (first == b) {
                hashmap_remove(t->by_hash, b->hash);
                if (b->hash_next)
                        (void)hashmap_put(t->by_hash, b->hash, b->hash_next); /* a removed key had room */
        } else {
                while (first->hash_next != b)
                        first = first->hash_next;
                first->hash_next = b->hash_next;
        }
        LIST_REMOVE(all, t->all, b);
        t->n--;
        free(b->times);
        free(b->name);
        free(b);
}

BreakerTable *breaker_table_free(BreakerTable *t) {
        if (!t)
                return NULL;
        while (t->all)
                breaker_free(t, t->all);
        hashmap_free(t->by_hash);
        free(t);
        return NULL;
}

void breaker_table_set_hash_key(BreakerTable *t, const uint8_t key[16]) {
        assert(t->n == 0);
        t->key = siphash_key(key);
}

void breaker_table_set_settings(BreakerTable *t, const BreakerSettings *s, size_t max_entries) {
        settings_clamp(t, s, max_entries);
        for (Breaker *b = t->all; b; b = b->all_next)
                if (b->state == BREAKER_CLOSED)
                        b->cooldown_usec = t->settings.cooldown_usec;
}

size_t breaker_table_size(const BreakerTable *t) {
        return t->n;
}

Breaker *breaker_table_next(const BreakerTable *t, const Breaker *b) {
        return b ? b->all_next : t->all;
}

static uint64_t name_hash(const BreakerTable *t, const char *name, uint64_t disc) {
        return siphash24(&t->key, name, strlen(name)) ^ (disc * UINT64_C(0x9e3779b97f4a7c15));
}

static Breaker *find_hashed(const BreakerTable *t, const char *name, uint64_t disc, uint64_t hash) {
        for (Breaker *b = hashmap_get(t->by_hash, hash); b; b = b->hash_next)
                if (b->disc == disc && strcmp(b->name, name) == 0)
                        return b;
        return NULL;
}

Breaker *breaker_find(const BreakerTable *t, const char *name, uint64_t disc) {
        return find_hashed(t, name, disc, name_hash(t, name, disc));
}

/* ---- breach times ---- */

static uint64_t ring_at(const Breaker *b, uint32_t i) {
        return b->times[(b->first + i) % b->times_capacity];
}

static void ring_drop_oldest(Breaker *b) {
        b->first = (b->first + 1) % b->times_capacity;
        b->n_times--;
}

/* Grows a full ring (copied out oldest first), up to max entries. */
static int ring_grow(Breaker *b, uint32_t max) {
        uint32_t capacity = b->times_capacity ? b->times_capacity * 2 : RING_CAPACITY_MIN;
        uint64_t *times;

        if (capacity > max)
                capacity = max;
        times = calloc(capacity, sizeof(uint64_t));
        if (!times)
                return -ENOMEM;
        for (uint32_t i = 0; i < b->n_times; i++)
                times[i] = ring_at(b, i);
        free(b->times);
        b->times = times;
        b->times_capacity = capacity;
        b->first = 0;
        return 0;
}

/* Keeps the last max (>= 1) times, now the newest. */
static int ring_push(Breaker *b, uint64_t now, uint32_t max) {
        int r;

        while (b->n_times > 0 && b->n_times >= max)
                ring_drop_oldest(b);
        if (b->n_times == b->times_capacity) {
                r = ring_grow(b, max);
                if (r < 0)
                        return r;
        }
        b->times[(b->first + b->n_times) % b->times_capacity] = now;
        b->n_times++;
        return 0;
}

static uint32_t breaches_in_window(const Breaker *b, uint64_t now) {
        const BreakerSettings *s = &b->table->settings;
        uint32_t n = 0, skip = b->n_times > s->breaches ? b->n_times - s->breaches : 0;

        for (uint32_t i = skip; i < b->n_times; i++)
                if (now < add_sat(ring_at(b, i), s->window_usec))
                        n++;
        return n;
}

/* ---- transitions ---- */

static void breaker_open(Breaker *b, uint64_t now, uint64_t cooldown_usec) {
        b->state = BREAKER_OPEN;
        b->probe_in_flight = false;
        b->cooldown_usec = cooldown_usec;
        b->open_until = add_sat(now, cooldown_usec);
}

static void breaker_reopen_failed_probe(Breaker *b, uint64_t now) {
        const BreakerSettings *s = &b->table->settings;
        uint64_t cooldown =
                b->cooldown_usec > s->max_cooldown_usec / 2 ? s->max_cooldown_usec : b->cooldown_usec * 2;

        if (cooldown < s->cooldown_usec)
                cooldown = s->cooldown_usec;
        breaker_open(b, now, cooldown);
}

static void breaker_close(Breaker *b) {
        b->state = BREAKER_CLOSED;
        b->probe_in_flight = false;
        b->cooldown_usec = b->table->settings.cooldown_usec;
        b->open_until = 0;
        b->n_times = 0;
        b->first = 0;
}

/* Whether sweeping may drop b: closed with no breach left in the window; or
 * open or half-open with no probe in flight, its cool-down over for a whole
 * window and no breach in it (an entity gone quiet, e.g. a process that
 * exited: it would start closed again). */
static bool breaker_droppable(const Breaker *b, uint64_t now) {
        if (breaches_in_window(b, now) > 0)
                return false;
        if (b->state == BREAKER_CLOSED)
                return true;
        return !b->probe_in_flight && now >= add_sat(b->open_until, b->table->settings.window_usec);
}

void breaker_table_sweep(BreakerTable *t, uint64_t now) {
        Breaker *next;

        for (Breaker *b = t->all; b; b = next) {
                next = b->all_next;
                if (breaker_droppable(b, now))
                        breaker_free(t, b);
        }
}

static int breaker_new(BreakerTable *t, const char *name, uint64_t disc, uint64_t hash, int64_t owner,
                       uint64_t now, Breaker **ret) {
        _cleanup_free_ Breaker *b = NULL;
        Breaker *first;
        int r;

        if (t->n >= t->max_entries &&
            (!t->swept_once || now - t->last_full_sweep_usec >= SWEEP_WHEN_FULL_INTERVAL_USEC)) {
                t->swept_once = true;
                t->last_full_sweep_usec = now;
                breaker_table_sweep(t, now);
        }
        if (t->n >= t->max_entries)
                return -EUSERS;
        b = calloc(1, sizeof(*b));
        if (!b)
                return -ENOMEM;
        b->name = strdup(name);
        if (!b->name)
                return -ENOMEM;
        first = hashmap_get(t->by_hash, hash);
        if (first) {
                b->hash_next = first->hash_next;
                first->hash_next = b;
        } else {
                r = hashmap_put(t->by_hash, hash, b);
                if (r < 0) {
                        free(b->name);
                        return r;
                }
        }
        b->table = t;
        b->disc = disc;
        b->hash = hash;
        b->owner = owner;
        b->state = BREAKER_CLOSED;
        b->cooldown_usec = t->settings.cooldown_usec;
        LIST_PREPEND(all, t->all, b);
        t->n++;
        *ret = TAKE_PTR(b);
        return 0;
}

/* The breaker of name/disc, made when there is none: 0, -ENOMEM, -EUSERS. */
static int breaker_get(BreakerTable *t, const char *name, uint64_t disc, int64_t owner, uint64_t now,
                       Breaker **ret) {
        uint64_t hash = name_hash(t, name, disc);

        *ret = find_hashed(t, name, disc, hash);
        return *ret ? 0 : breaker_new(t, name, disc, hash, owner, now, ret);
}

int breaker_breach(BreakerTable *t, const char *name, uint64_t disc, int64_t owner, bool probe, uint64_t now,
                   BreakerState *ret_state, bool *ret_changed) {
        Breaker *b;
        bool changed = false;
        int r;

        if (ret_changed)
                *ret_changed = false;
        if (t->settings.breaches == 0) {
                if (ret_state)
                        *ret_state = BREAKER_CLOSED;
                return 0;
        }
        r = breaker_get(t, name, disc, owner, now, &b);
        if (r < 0)
                return r;
        r = ring_push(b, now, t->settings.breaches);
        if (r < 0)
                return r;
        switch (b->state) {
        case BREAKER_CLOSED:
                if (breaches_in_window(b, now) >= t->settings.breaches) {
                        breaker_open(b, now, t->settings.cooldown_usec);
                        changed = true;
                }
                break;
        case BREAKER_HALF_OPEN:
                /* Only the probe decides: an allocation granted before the
                 * breaker opened says nothing about the entity since. */
                if (probe) {
                        breaker_reopen_failed_probe(b, now);
                        changed = true;
                }
                break;
        case BREAKER_OPEN:
        default:
                break;
        }
        if (ret_state)
                *ret_state = b->state;
        if (ret_changed)
                *ret_changed = changed;
        return 0;
}

int breaker_restore(BreakerTable *t, const char *name, uint64_t disc, int64_t owner, BreakerState state,
                    uint32_t breaches, uint64_t cooldown_usec, uint64_t open_until, uint64_t now) {
        uint64_t opened;
        Breaker *b;
        int r;

        if ((unsigned)state >= _BREAKER_STATE_MAX || !name)
                return -EINVAL;
        if (t->settings.breaches == 0 || state == BREAKER_CLOSED)
                return 0;
        r = breaker_get(t, name, disc, owner, now, &b);
        if (r < 0)
                return r;
        if (cooldown_usec > t->settings.max_cooldown_usec)
                cooldown_usec = t->settings.max_cooldown_usec;
        if (cooldown_usec < t->settings.cooldown_usec)
                cooldown_usec = t->settings.cooldown_usec;
        opened = open_until > cooldown_usec ? open_until - cooldown_usec : 0;
        if (opened > now)
                opened = now;
        if (breaches > t->settings.breaches)
                breaches = t->settings.breaches;
        b->n_times = 0;
        b->first = 0;
        for (uint32_t i = 0; i < breaches; i++) {
                r = ring_push(b, opened, t->settings.breaches);
                if (r < 0)
                        return r;
        }
        b->state = state;
        b->probe_in_flight = false;
        b->cooldown_usec = cooldown_usec;
        b->open_until = state == BREAKER_OPEN ? open_until : 0;
        return 0;
}

BreakerGate breaker_gate(Breaker *b, uint64_t now, uint64_t *ret_retry_after_usec, bool *ret_changed) {
        if (ret_retry_after_usec)
                *ret_retry_after_usec = 0;
        if (ret_changed)
                *ret_changed = false;
        if (!b || b->table->settings.breaches == 0)
                return GATE_CLOSED;
        if (b->state == BREAKER_OPEN) {
                if (now < b->open_until) {
                        if (ret_retry_after_usec)
                                *ret_retry_after_usec = b->open_until - now;
                        return GATE_OPEN;
                }
                b->state = BREAKER_HALF_OPEN;
                b->probe_in_flight = false;
                if (ret_changed)
                        *ret_changed = true;
        }
        if (b->state == BREAKER_HALF_OPEN)
                return b->probe_in_flight ? GATE_OPEN : GATE_PROBE;
        return GATE_CLOSED;
}

void breaker_probe_started(Breaker *b) {
        if (b && b->state == BREAKER_HALF_OPEN)
                b->probe_in_flight = true;
}

bool breaker_probe_done(BreakerTable *t, const char *name, uint64_t disc, bool breached, uint64_t now) {
        Breaker *b = breaker_find(t, name, disc);

        if (!b || b->state != BREAKER_HALF_OPEN || !b->probe_in_flight)
                return false;
        if (breached) {
                /* Not reported through breaker_breach(): still a failed probe,
                 * so the breaker cannot stay half-open with a probe in flight. */
                breaker_reopen_failed_probe(b, now);
                return false;
        }
        breaker_close(b);
        return true;
}

/* ---- accessors ---- */

const char *breaker_name(const Breaker *b) {
        return b->name;
}

uint64_t breaker_disc(const Breaker *b) {
        return b->disc;
}

int64_t breaker_owner(const Breaker *b) {
        return b->owner;
}

BreakerState breaker_state(const Breaker *b) {
        return b->state;
}

uint32_t breaker_breaches(const Breaker *b, uint64_t now) {
        return breaches_in_window(b, now);
}

uint64_t breaker_retry_after(const Breaker *b, uint64_t now) {
        return b->state == BREAKER_OPEN && now < b->open_until ? b->open_until - now : 0;
}

uint64_t breaker_cooldown(const Breaker *b) {
        return b->cooldown_usec;
}

bool breaker_probe_in_flight(const Breaker *b) {
        return b->probe_in_flight;
}
