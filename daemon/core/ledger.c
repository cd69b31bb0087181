/* SPDX-License-Identifier: MIT */
/*
 * The ledger: scopes with sliding-window budgets and allocations that reserve
 * their worst case in every scope they are charged to (see ledger.h for the
 * contract and its invariants).
 *
 * Windows are rings of buckets so that memory and time stay bounded: the
 * minute's span is 60 buckets of 1 s, the hour's 60 of 60 s, the day's 96 of
 * 15 min, and each ring has one bucket more than its span. Tokens committed
 * at time t count in the window while now_usec / bucket <= t / bucket +
 * nbuckets (nbuckets = span / bucket), so they count at every now with
 * now - t <= span and leave between span and span + one bucket after they
 * were committed: the window errs on the safe side only, and every true
 * interval of the span sees at most the limit (issue 7, point 9: with the
 * old ring of nbuckets buckets they left up to one bucket before the span was
 * over, and a burst at a bucket edge doubled a limit in one real minute).
 * Each ring keeps its running sum and the absolute index of its newest
 * bucket; moving to a later now clears at most nbuckets + 1 buckets, so every
 * operation stays O(1) amortised.
 *
 * Time is the caller's monotonic now_usec. A now earlier than one already seen
 * (which callers must not pass) is treated as the latest now seen, so rings
 * never run backwards.
 *
 * Allocations live in a slab of chunks of doubling size (never moved, so the
 * pointers handed out stay valid) with a free list. Each allocation has a
 * serial, (generation << 32) | (slot + 1): never 0, and never repeated
 * because the generation is bumped on every reuse of a slot (a slot whose
 * generation would wrap is retired instead). Live allocations also sit on a
 * doubly linked list in grant order.
 *
 * An allocation's id is a keyed pseudo-random permutation of its serial
 * (issue 7, point 12: ids must be unguessable): a Feistel network over the
 * two 32-bit halves whose round function is SipHash-2-4 (siphash.h) of the
 * half and the round number, keyed by ledger_set_id_key(). Being a
 * permutation, it keeps ids as unique as serials; the one serial that it
 * sends to 0 takes the image of serial 0 (never a serial) instead, so no id
 * is 0. ledger_find() runs the network backwards (as cheap as forwards) and
 * checks the slot's generation: O(1) without a map, and a made-up id finds a
 * live allocation only with probability (live allocations) / 2^64. With a
 * fresh random key per start, ids of different runs are independent: n ids
 * over all runs collide with probability about n^2 / 2^65.
 *
 * Why 6 rounds: Luby and Rackoff (SIAM J. Comput. 17(2), 1988) prove 4
 * rounds of a pseudo-random function a strong pseudo-random permutation only
 * up to about 2^(32/2) = 65,536 ids with 32-bit halves, and chosen-input
 * attacks on 4 rounds at that many are known; a client does choose serials
 * somewhat (by freeing and reusing slots). Patarin ("Security of random
 * Feistel schemes with 5 or more rounds", CRYPTO 2004) proves 5 rounds
 * secure against adaptive chosen inputs and 6 against chosen inputs and
 * outputs (ledger_find() answers about ids), for far fewer than 2^32 ids.
 * The cost is 6 x 6 SipRounds: 61-65 ns per direction measured on a KVM
 * Xeon core with gcc -O2 (4 rounds: 39-44 ns), once per Request (forwards)
 * and once per ledger_find() (backwards).
 *
 * The ledger decides nothing about policy: which scopes an allocation is
 * charged to, who owns it and what happens when it is refused are the
 * caller's business. No clock, no I/O, no logging.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ledger.h"
#include "siphash.h"

#define USEC_PER_SEC UINT64_C(1000000)

typedef struct WindowSpec {
        const char *name;
        uint64_t bucket_usec;
        unsigned n_buckets; /* in the span */
        unsigned ring_size; /* n_buckets + 1: the bucket the span starts in */
        unsigned offset;    /* of the ring's first bucket in LedgerScope.buckets */
} WindowSpec;

/* Spans of 60 x 1 s, 60 x 1 min, 96 x 15 min: usage stays at most one bucket
 * (1/60 or 1/96 of the span) longer than the span, and a scope's rings cost
 * 219 x 8 bytes. */
static const WindowSpec window_specs[_LEDGER_WINDOW_MAX] = {
        [LEDGER_WINDOW_MINUTE] = {"minute", 1 * USEC_PER_SEC, 60, 61, 0},
        [LEDGER_WINDOW_HOUR] = {"hour", 60 * USEC_PER_SEC, 60, 61, 61},
        [LEDGER_WINDOW_DAY] = {"day", 900 * USEC_PER_SEC, 96, 97, 122},
};
#define WINDOW_BUCKETS_TOTAL (61 + 61 + 97)

typedef struct WindowRing {
        uint64_t sum_tokens;
        uint64_t head; /* absolute index (now_usec / bucket_usec) of the newest bucket */
} WindowRing;

struct LedgerScope {
        Ledger *ledger;
        LedgerScope *prev, *next; /* all scopes of the ledger, for ledger_free() */
        char *name;
        LedgerLimits limits;
        uint64_t reserved_tokens;
        uint64_t committed_total_tokens; /* saturating: it only grows */
        size_t n_allocations;
        void *userdata;
        void *queue;   /* the wait list's slot (waitq.c) */
        bool degraded; /* the pool breaker's state, kept by the shell */
        /* An unchecked reservation (the dry run) would have passed 2^64 - 1:
         * reserved_tokens stays at UINT64_MAX, an over-estimate that refuses
         * every checked reservation, until the scope's last allocation is
         * settled (then nothing is reserved, and the count is exact again). */
        bool reserved_saturated;
        WindowRing rings[_LEDGER_WINDOW_MAX];
        uint64_t buckets[WINDOW_BUCKETS_TOTAL];
};

/* 360 bytes on 64-bit (32 scope pointers): with the slab's worst slack (a
 * chunk just started, capacity < 2 x live) 100,000 open allocations stay
 * under 512 bytes each, as test-ledger measures. */
struct LedgerAllocation {
        LedgerAllocation *prev, *next; /* grant order while live; next = free list when free */
        uint32_t slot;
        uint32_t generation;
        uint8_t n_scopes;
        bool live;
        uint64_t id; /* the permuted serial, computed once at grant */
        uint64_t granted_tokens;
        uint64_t warn_at_tokens;
        uint64_t reservation_tokens; /* = hard limit, reserved in each scope at grant */
        uint64_t still_reserved_tokens;
        uint64_t input_tokens;
        uint64_t output_tokens;
        uint64_t granted_usec;
        void *userdata;
        LedgerScope *scopes[LEDGER_SCOPES_MAX];
};

_Static_assert(sizeof(void *) != 8 || sizeof(LedgerAllocation) == 360,
               "LedgerAllocation is 360 bytes on 64-bit: see the memory budget above");

/* Chunk c holds SLAB_CHUNK0_SLOTS << c slots. 26 chunks give 2^32 - 64 slots:
 * every slot + 1 fits the low 32 bits of an id. */
#define SLAB_CHUNK0_SLOTS 64u
#define SLAB_CHUNKS_MAX   26u

struct Ledger {
        LedgerParams params;
        uint64_t now_usec; /* the latest now seen */
        LedgerScope *scopes;
        LedgerAllocation *chunks[SLAB_CHUNKS_MAX];
        unsigned n_chunks;
        uint64_t n_slots;   /* slots handed out at least once */
        uint64_t cap_slots; /* slots in the allocated chunks */
        LedgerAllocation *free_slots;
        LedgerAllocation *first, *last; /* live allocations in grant order */
        size_t n_allocations;
        SipHashKey id_key;
        uint64_t id_of_serial_0;   /* the permutation of serial 0, which is never used */
        uint64_t serial_of_id_0;   /* the serial the permutation sends to 0 */
        uint32_t generation_floor; /* new slots start here (ledger_set_generation_floor()) */
        uint32_t generation_high;  /* the highest generation handed out */
};

static const LedgerParams params_default = {
        .warn_permille = 1500,
        .hard_permille = 2000,
};

static uint64_t sat_add(uint64_t a, uint64_t b) {
        return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_sub(uint64_t a, uint64_t b) {
        return a > b ? a - b : 0;
}

static uint64_t min_u64(uint64_t a, uint64_t b) {
        return a < b ? a : b;
}

/* tokens < LEDGER_TOKENS_MAX and permille <= 5000: the product is < 2^53. */
static uint64_t tokens_permille_ceil(uint64_t tokens, uint32_t permille) {
        return (tokens * permille + 999) / 1000;
}

static bool params_valid(const LedgerParams *p) {
        return p->warn_permille >= 1000 && p->warn_permille <= p->hard_permille &&
               p->hard_permille <= 5000 && p->limit_permille <= 1000;
}

/* A window limit as it counts for a reservation with limit_permille (see
 * LedgerParams): 0 (no limit) and UINT64_MAX stay what they are. */
static uint64_t scaled_limit(uint64_t limit, uint32_t limit_permille) {
        uint64_t scaled;

        if (limit == 0 || limit == UINT64_MAX || limit_permille == 0 || limit_permille >= 1000)
                return limit;
        scaled = limit <= UINT64_MAX / 1000 ? limit * limit_permille / 1000 : limit / 1000 * limit_permille;
        return scaled ? scaled : 1;
}

const char *ledger_window_to_string(LedgerWindow w) {
        if ((unsigned)w >= _LEDGER_WINDOW_MAX)
                return NULL;
        return window_specs[w].name;
}

uint64_t ledger_window_span_usec(LedgerWindow w) {
        assert((unsigned)w < _LEDGER_WINDOW_MAX);
        return window_specs[w].bucket_usec * window_specs[w].n_buckets;
}

const char *ledger_state_to_string(LedgerState s) {
        static const char *const names[] = {
                [LEDGER_STATE_OK] = "ok",
                [LEDGER_STATE_WARNING] = "warning",
                [LEDGER_STATE_EXCEEDED] = "exceeded",
        };

        if ((unsigned)s >= sizeof(names) / sizeof(names[0]))
                return NULL;
        return names[s];
}

/* Time never runs backwards inside the ledger. */
static uint64_t ledger_clamp_now(Ledger *l, uint64_t now_usec) {
        if (now_usec > l->now_usec)
                l->now_usec = now_usec;
        return l->now_usec;
}

/* --- window rings --- */

static uint64_t *ring_buckets(LedgerScope *s, LedgerWindow w) {
        return s->buckets + window_specs[w].offset;
}

/* Moves the ring's head to now, zeroing the buckets that left the window. */
static void ring_advance(LedgerScope *s, LedgerWindow w, uint64_t now_usec) {
        const WindowSpec *spec = &window_specs[w];
        WindowRing *r = &s->rings[w];
        uint64_t *b = ring_buckets(s, w);
        uint64_t idx = now_usec / spec->bucket_usec;

        if (idx <= r->head)
                return;

        if (idx - r->head >= spec->ring_size) {
                memset(b, 0, spec->ring_size * sizeof(uint64_t));
                r->sum_tokens = 0;
        } else
                for (uint64_t i = r->head + 1; i <= idx; i++) {
                        r->sum_tokens = sat_sub(r->sum_tokens, b[i % spec->ring_size]);
                        b[i % spec->ring_size] = 0;
                }
        r->head = idx;
}

static uint64_t ring_used(LedgerScope *s, LedgerWindow w, uint64_t now_usec) {
        ring_advance(s, w, now_usec);
        return s->rings[w].sum_tokens;
}

static void ring_commit(LedgerScope *s, LedgerWindow w, uint64_t now_usec, uint64_t tokens) {
        uint64_t *slot;

        ring_advance(s, w, now_usec);
        slot = &ring_buckets(s, w)[s->rings[w].head % window_specs[w].ring_size];
        *slot = sat_add(*slot, tokens);
        s->rings[w].sum_tokens = sat_add(s->rings[w].sum_tokens, tokens);
}

/* Tokens committed at at_usec, put in their bucket if it is still in the
 * window as of now_usec (the bucket of index j counts while the head is at
 * most j + n_buckets); a time past the head counts in the head's. */
static void ring_restore(LedgerScope *s, LedgerWindow w, uint64_t now_usec, uint64_t at_usec,
                         uint64_t tokens) {
        const WindowSpec *spec = &window_specs[w];
        WindowRing *r = &s->rings[w];
        uint64_t idx = at_usec / spec->bucket_usec, *slot;

        ring_advance(s, w, now_usec);
        if (idx > r->head)
                idx = r->head;
        if (r->head - idx > spec->n_buckets)
                return;
        slot = &ring_buckets(s, w)[idx % spec->ring_size];
        *slot = sat_add(*slot, tokens);
        r->sum_tokens = sat_add(r->sum_tokens, tokens);
}

/* How long until enough of the window ages out for need_tokens (reserved +
 * the new reservation) to fit under limit_tokens; 0 when even an empty window
 * is too small. The ring has been advanced to now_usec. */
static uint64_t ring_retry_after(LedgerScope *s, LedgerWindow w, uint64_t now_usec, uint64_t need_tokens,
                                 uint64_t limit_tokens) {
        const WindowSpec *spec = &window_specs[w];
        const WindowRing *r = &s->rings[w];
        const uint64_t *b = ring_buckets(s, w);
        uint64_t aged = 0;

        if (need_tokens > limit_tokens)
                return 0;

        /* With m = ring_size = n_buckets + 1, the bucket at ring position
         * (head + k) % m is the one of index j = head + k - m; it counts while
         * the head is <= j + n_buckets, so it leaves when the head reaches
         * head + k, at (head + k) x bucket. */
        for (uint64_t k = 1; k <= spec->ring_size; k++) {
                aged = sat_add(aged, b[(r->head + k) % spec->ring_size]);
                if (sat_add(sat_sub(r->sum_tokens, aged), need_tokens) <= limit_tokens) {
                        uint64_t leaves_usec = (r->head + k) * spec->bucket_usec;
                        return leaves_usec > now_usec ? leaves_usec - now_usec : 1;
                }
        }
        return 0; /* only reachable when sums saturated */
}

/* --- allocation ids --- */

/* Rounds of the Feistel network; see the file comment for why this many. */
#define ID_FEISTEL_ROUNDS 6

/* The round function: the low 32 bits of SipHash-2-4 of the half and the
 * round number, 5 bytes, so one compression and the finalisation. */
static uint32_t id_round(const SipHashKey *k, unsigned round, uint32_t half) {
        return (uint32_t)siphash24_short(k, (uint64_t)half | ((uint64_t)round << 32), 5);
}

static uint64_t id_permute(const SipHashKey *k, uint64_t v) {
        uint32_t left = (uint32_t)(v >> 32), right = (uint32_t)v;

        for (unsigned i = 0; i < ID_FEISTEL_ROUNDS; i++) {
                uint32_t t = left ^ id_round(k, i, right);

                left = right;
                right = t;
        }
        return ((uint64_t)left << 32) | right;
}

static uint64_t id_unpermute(const SipHashKey *k, uint64_t v) {
        uint32_t left = (uint32_t)(v >> 32), right = (uint32_t)v;

        for (unsigned i = ID_FEISTEL_ROUNDS; i-- > 0;) {
                uint32_t t = right ^ id_round(k, i, left);

                right = left;
                left = t;
        }
        return ((uint64_t)left << 32) | right;
}

static void id_set_key(Ledger *l, const uint8_t key[16]) {
        l->id_key = siphash_key(key);
        l->id_of_serial_0 = id_permute(&l->id_key, 0);
        l->serial_of_id_0 = id_unpermute(&l->id_key, 0);
}

/* serial != 0. The serial the permutation sends to 0 takes the image of
 * serial 0 instead: a bijection from serials != 0 onto ids != 0. */
static uint64_t id_from_serial(const Ledger *l, uint64_t serial) {
        uint64_t id = id_permute(&l->id_key, serial);

        return id != 0 ? id : l->id_of_serial_0;
}

/* 0 for id 0, which is no allocation's. */
static uint64_t id_to_serial(const Ledger *l, uint64_t id) {
        if (id == 0)
                return 0;
        if (id == l->id_of_serial_0)
                return l->serial_of_id_0;
        return id_unpermute(&l->id_key, id);
}

static uint64_t allocation_serial(const LedgerAllocation *a) {
        return ((uint64_t)a->generation << 32) | ((uint64_t)a->slot + 1);
}

/* --- ledger and scopes --- */

Ledger *ledger_new(const LedgerParams *params) {
        static const uint8_t zero_key[16] = {0};
        Ledger *l = calloc(1, sizeof(*l));

        if (!l)
                return NULL;
        ledger_set_params(l, params);
        id_set_key(l, zero_key);
        return l;
}

void ledger_set_id_key(Ledger *l, const uint8_t key[16]) {
        assert(l);
        assert(key);
        /* Ids already handed out were permuted with the old key: a new one
         * could repeat them. */
        assert(l->n_slots == 0);
        id_set_key(l, key);
}

static void scope_destroy(LedgerScope *s) {
        free(s->name);
        free(s);
}

Ledger *ledger_free(Ledger *l) {
        if (!l)
                return NULL;

        for (LedgerScope *s = l->scopes, *next; s; s = next) {
                next = s->next;
                scope_destroy(s);
        }
        for (unsigned c = 0; c < l->n_chunks; c++)
                free(l->chunks[c]);
        free(l);
        return NULL;
}

/* NULL means the built-in defaults (1.5x warn, 2x hard). */
void ledger_set_params(Ledger *l, const LedgerParams *params) {
        assert(l);
        assert(!params || params_valid(params));
        l->params = params ? *params : params_default;
}

const LedgerParams *ledger_get_params(const Ledger *l) {
        assert(l);
        return &l->params;
}

LedgerScope *ledger_scope_new(Ledger *l, const char *name, const LedgerLimits *limits) {
        LedgerScope *s;

        assert(l);
        assert(name);
        assert(limits);

        s = calloc(1, sizeof(*s));
        if (!s)
                return NULL;
        s->name = strdup(name);
        if (!s->name) {
                free(s);
                return NULL;
        }
        s->ledger = l;
        s->limits = *limits;

        s->next = l->scopes;
        if (l->scopes)
                l->scopes->prev = s;
        l->scopes = s;
        return s;
}

int ledger_scope_free(Ledger *l, LedgerScope *s) {
        assert(l);
        if (!s)
                return 0;
        assert(s->ledger == l);

        if (s->n_allocations > 0)
                return -EBUSY;

        if (s->prev)
                s->prev->next = s->next;
        else
                l->scopes = s->next;
        if (s->next)
                s->next->prev = s->prev;
        scope_destroy(s);
        return 0;
}

void ledger_scope_set_limits(LedgerScope *s, const LedgerLimits *limits) {
        assert(s);
        assert(limits);
        s->limits = *limits;
}

const LedgerLimits *ledger_scope_get_limits(const LedgerScope *s) {
        assert(s);
        return &s->limits;
}

const char *ledger_scope_name(const LedgerScope *s) {
        assert(s);
        return s->name;
}

uint64_t ledger_scope_reserved(const LedgerScope *s) {
        assert(s);
        return s->reserved_tokens;
}

int ledger_scope_restore(LedgerScope *s, uint64_t age_usec, uint64_t tokens, uint64_t now_usec) {
        uint64_t at_usec;

        assert(s);
        if (tokens >= LEDGER_TOKENS_MAX)
                return -ERANGE;
        now_usec = ledger_clamp_now(s->ledger, now_usec);
        at_usec = age_usec < now_usec ? now_usec - age_usec : 0;
        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++)
                ring_restore(s, w, now_usec, at_usec, tokens);
        s->committed_total_tokens = sat_add(s->committed_total_tokens, tokens);
        return 0;
}

uint64_t ledger_scope_committed_total(const LedgerScope *s) {
        assert(s);
        return s->committed_total_tokens;
}

size_t ledger_scope_n_allocations(const LedgerScope *s) {
        assert(s);
        return s->n_allocations;
}

uint64_t ledger_scope_window_used(LedgerScope *s, LedgerWindow w, uint64_t now_usec) {
        assert(s);
        assert((unsigned)w < _LEDGER_WINDOW_MAX);
        return ring_used(s, w, ledger_clamp_now(s->ledger, now_usec));
}

uint64_t ledger_scope_window_frees_in(LedgerScope *s, LedgerWindow w, uint64_t now_usec) {
        const WindowSpec *spec;
        const uint64_t *b;
        WindowRing *r;

        assert(s);
        assert((unsigned)w < _LEDGER_WINDOW_MAX);
        now_usec = ledger_clamp_now(s->ledger, now_usec);
        ring_advance(s, w, now_usec);
        spec = &window_specs[w];
        r = &s->rings[w];
        b = ring_buckets(s, w);
        if (r->sum_tokens == 0)
                return 0;
        /* The oldest non-empty bucket leaves first (see ring_retry_after()). */
        for (uint64_t k = 1; k <= spec->ring_size; k++)
                if (b[(r->head + k) % spec->ring_size] > 0) {
                        uint64_t leaves_usec = (r->head + k) * spec->bucket_usec;
                        return leaves_usec > now_usec ? leaves_usec - now_usec : 1;
                }
        return 0;
}

bool ledger_scope_is_idle(LedgerScope *s, uint64_t now_usec) {
        assert(s);

        if (s->n_allocations > 0 || s->reserved_tokens > 0)
                return false;
        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++)
                if (ledger_scope_window_used(s, w, now_usec) > 0)
                        return false;
        return true;
}

void ledger_scope_set_userdata(LedgerScope *s, void *userdata) {
        assert(s);
        s->userdata = userdata;
}

void *ledger_scope_get_userdata(const LedgerScope *s) {
        assert(s);
        return s->userdata;
}

void ledger_scope_set_queue(LedgerScope *s, void *queue) {
        assert(s);
        s->queue = queue;
}

void *ledger_scope_get_queue(const LedgerScope *s) {
        assert(s);
        return s->queue;
}

bool ledger_scope_get_degraded(const LedgerScope *s) {
        assert(s);
        return s->degraded;
}

void ledger_scope_set_degraded(LedgerScope *s, bool degraded) {
        assert(s);
        s->degraded = degraded;
}

/* floor(tokens x 1000 / limit), saturating at UINT32_MAX; limit > 0. The
 * product needs more than 64 bits once tokens pass 1.8 x 10^16 (a saturated
 * reserved total). */
static uint32_t permille_of(uint64_t tokens, uint64_t limit) {
        unsigned __int128 p = (unsigned __int128)tokens * 1000 / limit;

        return p > UINT32_MAX ? UINT32_MAX : (uint32_t)p;
}

static uint32_t max_u32(uint32_t a, uint32_t b) {
        return a > b ? a : b;
}

uint32_t ledger_scope_utilisation_permille(LedgerScope *s, uint64_t now_usec) {
        uint32_t permille = 0;

        assert(s);
        now_usec = ledger_clamp_now(s->ledger, now_usec);
        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++) {
                uint64_t limit = s->limits.window_tokens[w];

                if (limit == 0)
                        continue;
                permille =
                        max_u32(permille,
                                permille_of(sat_add(ring_used(s, w, now_usec), s->reserved_tokens), limit));
        }
        if (s->limits.in_flight_tokens != 0)
                permille = max_u32(permille, permille_of(s->reserved_tokens, s->limits.in_flight_tokens));
        return permille;
}

/* --- the allocation slab --- */

static LedgerAllocation *slab_slot(const Ledger *l, uint64_t slot) {
        /* Chunk c starts at slot 64 * (2^c - 1). */
        uint64_t q = slot / SLAB_CHUNK0_SLOTS + 1;
        unsigned c = 63u - (unsigned)__builtin_clzll(q);

        return &l->chunks[c][slot - SLAB_CHUNK0_SLOTS * ((UINT64_C(1) << c) - 1)];
}

static int slab_grow(Ledger *l) {
        uint64_t n = (uint64_t)SLAB_CHUNK0_SLOTS << l->n_chunks;
        LedgerAllocation *chunk;

        if (l->n_chunks >= SLAB_CHUNKS_MAX || n > SIZE_MAX / sizeof(LedgerAllocation))
                return -ENOMEM;
        chunk = calloc(n, sizeof(LedgerAllocation));
        if (!chunk)
                return -ENOMEM;
        l->chunks[l->n_chunks++] = chunk;
        l->cap_slots += n;
        return 0;
}

static int slab_alloc(Ledger *l, LedgerAllocation **ret) {
        LedgerAllocation *a;

        if (l->free_slots) {
                a = l->free_slots;
                l->free_slots = a->next;
                /* Freed slots with a wrapping generation were retired, so this
                 * cannot repeat an id. */
                a->generation++;
        } else {
                if (l->n_slots == l->cap_slots) {
                        int r = slab_grow(l);
                        if (r < 0)
                                return r;
                }
                a = slab_slot(l, l->n_slots);
                a->slot = (uint32_t)l->n_slots++;
                a->generation = l->generation_floor;
        }
        if (a->generation > l->generation_high)
                l->generation_high = a->generation;
        *ret = a;
        return 0;
}

void ledger_set_generation_floor(Ledger *l, uint32_t floor) {
        assert(l->n_slots == 0);
        l->generation_floor = floor;
        l->generation_high = floor;
}

uint32_t ledger_generation_high(const Ledger *l) {
        return l->generation_high;
}

static void slab_release(Ledger *l, LedgerAllocation *a) {
        uint32_t slot = a->slot, generation = a->generation;

        *a = (LedgerAllocation){.slot = slot, .generation = generation};
        if (generation == UINT32_MAX)
                return; /* retired: one more reuse would repeat id (0 << 32) | slot */
        a->next = l->free_slots;
        l->free_slots = a;
}

static void allocation_link(Ledger *l, LedgerAllocation *a) {
        a->prev = l->last;
        a->next = NULL;
        if (l->last)
                l->last->next = a;
        else
                l->first = a;
        l->last = a;
        l->n_allocations++;
}

static void allocation_unlink(Ledger *l, LedgerAllocation *a) {
        if (a->prev)
                a->prev->next = a->next;
        else
                l->first = a->next;
        if (a->next)
                a->next->prev = a->prev;
        else
                l->last = a->prev;
        l->n_allocations--;
}

/* --- reservations --- */

static bool scopes_valid(const Ledger *l, LedgerScope *const *scopes, size_t n_scopes) {
        for (size_t i = 0; i < n_scopes; i++) {
                if (!scopes[i] || scopes[i]->ledger != l)
                        return false;
                for (size_t j = 0; j < i; j++)
                        if (scopes[j] == scopes[i])
                                return false;
        }
        return true;
}

/* Returns true when the scope has room for reservation_tokens; otherwise fills
 * *ret_refusal with its first limit (open allocations, minute, hour, day, in
 * flight) that has no room. */
static bool scope_has_room(LedgerScope *s, uint64_t reservation_tokens, uint32_t limit_permille,
                           uint64_t now_usec, LedgerRefusal *ret_refusal) {
        uint64_t need = sat_add(s->reserved_tokens, reservation_tokens);

        if (s->limits.max_allocations != 0 && s->n_allocations >= s->limits.max_allocations) {
                *ret_refusal = (LedgerRefusal){
                        .scope = s,
                        .window = LEDGER_REFUSAL_ALLOCATIONS,
                        .limit_tokens = s->limits.max_allocations,
                        .used_tokens = s->n_allocations,
                        .reserved_tokens = s->reserved_tokens,
                };
                return false;
        }

        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++) {
                uint64_t limit = scaled_limit(s->limits.window_tokens[w], limit_permille), used;

                /* An unlimited window needs no ageing now: commits advance it. */
                if (limit == 0)
                        continue;
                used = ring_used(s, w, now_usec);
                if (sat_add(used, need) <= limit)
                        continue;
                *ret_refusal = (LedgerRefusal){
                        .scope = s,
                        .window = (int)w,
                        .limit_tokens = limit,
                        .used_tokens = used,
                        .reserved_tokens = s->reserved_tokens,
                        .retry_after_usec = ring_retry_after(s, w, now_usec, need, limit),
                };
                return false;
        }

        /* Without an in-flight cap, 2^64 - 1 is the implicit one: reserved
         * must never wrap, whatever the clients ask for. */
        if ((s->limits.in_flight_tokens != 0 && need > s->limits.in_flight_tokens) || need == UINT64_MAX) {
                *ret_refusal = (LedgerRefusal){
                        .scope = s,
                        .window = LEDGER_REFUSAL_IN_FLIGHT,
                        .limit_tokens =
                                s->limits.in_flight_tokens != 0 ? s->limits.in_flight_tokens : UINT64_MAX,
                        .reserved_tokens = s->reserved_tokens,
                };
                return false;
        }
        return true;
}

int ledger_reserve(Ledger *l, LedgerScope *const *scopes, size_t n_scopes, uint64_t granted_tokens,
                   uint64_t now_usec, LedgerAllocation **ret, LedgerRefusal *ret_refusal) {
        return ledger_reserve_params(l, scopes, n_scopes, granted_tokens, NULL, now_usec, ret, ret_refusal);
}

/* The first scope (in order) without room for reservation_tokens: fills
 * *ret_refusal and returns false; true when every scope has room. */
static bool scopes_have_room(LedgerScope *const *scopes, size_t n_scopes, uint64_t reservation_tokens,
                             uint32_t limit_permille, uint64_t now_usec, LedgerRefusal *ret_refusal) {
        for (size_t i = 0; i < n_scopes; i++)
                if (!scope_has_room(scopes[i], reservation_tokens, limit_permille, now_usec, ret_refusal))
                        return false;
        return true;
}

static void reserve_preconditions(const Ledger *l, LedgerScope *const *scopes, size_t n_scopes,
                                  uint64_t granted_tokens, const LedgerParams *params) {
        assert(l);
        assert(scopes);
        assert(n_scopes >= 1 && n_scopes <= LEDGER_SCOPES_MAX);
        assert(granted_tokens >= 1 && granted_tokens < LEDGER_TOKENS_MAX);
        assert(scopes_valid(l, scopes, n_scopes));
        assert(!params || params_valid(params));
        (void)l, (void)scopes, (void)n_scopes, (void)granted_tokens, (void)params;
}

/* Creates the allocation and reserves it in every scope, whatever their
 * limits (the caller checked them, or is the dry run). */
static int allocation_grant(Ledger *l, LedgerScope *const *scopes, size_t n_scopes, uint64_t granted_tokens,
                            const LedgerParams *params, uint64_t now_usec, LedgerAllocation **ret) {
        uint64_t reservation = tokens_permille_ceil(granted_tokens, params->hard_permille);
        LedgerAllocation *a;
        int r;

        r = slab_alloc(l, &a);
        if (r < 0)
                return r;

        a->live = true;
        a->id = id_from_serial(l, allocation_serial(a));
        a->n_scopes = (uint8_t)n_scopes;
        a->granted_tokens = granted_tokens;
        a->warn_at_tokens = tokens_permille_ceil(granted_tokens, params->warn_permille);
        a->reservation_tokens = reservation;
        a->still_reserved_tokens = reservation;
        a->granted_usec = now_usec;
        for (size_t i = 0; i < n_scopes; i++) {
                LedgerScope *s = scopes[i];

                a->scopes[i] = s;
                if (s->reserved_saturated || s->reserved_tokens > UINT64_MAX - reservation) {
                        s->reserved_tokens = UINT64_MAX;
                        s->reserved_saturated = true;
                } else
                        s->reserved_tokens += reservation;
                s->n_allocations++;
        }
        allocation_link(l, a);

        *ret = a;
        return 0;
}

int ledger_reserve_params(Ledger *l, LedgerScope *const *scopes, size_t n_scopes, uint64_t granted_tokens,
                          const LedgerParams *params, uint64_t now_usec, LedgerAllocation **ret,
                          LedgerRefusal *ret_refusal) {
        LedgerRefusal refusal;

        reserve_preconditions(l, scopes, n_scopes, granted_tokens, params);
        assert(ret);

        if (!params)
                params = &l->params;
        now_usec = ledger_clamp_now(l, now_usec);

        /* All or nothing: check every scope before touching any. */
        if (!scopes_have_room(scopes, n_scopes, tokens_permille_ceil(granted_tokens, params->hard_permille),
                              params->limit_permille, now_usec, &refusal)) {
                if (ret_refusal)
                        *ret_refusal = refusal;
                return -EDQUOT;
        }
        return allocation_grant(l, scopes, n_scopes, granted_tokens, params, now_usec, ret);
}

int ledger_reserve_unchecked(Ledger *l, LedgerScope *const *scopes, size_t n_scopes, uint64_t granted_tokens,
                             const LedgerParams *params, uint64_t now_usec, LedgerAllocation **ret) {
        reserve_preconditions(l, scopes, n_scopes, granted_tokens, params);
        assert(ret);

        if (!params)
                params = &l->params;
        return allocation_grant(l, scopes, n_scopes, granted_tokens, params, ledger_clamp_now(l, now_usec),
                                ret);
}

/* The largest reservation scope_has_room() accepts in s now: 0 when none
 * (not even 1 token). It mirrors scope_has_room()'s saturating tests: a
 * window limit of UINT64_MAX never binds there, and reserved plus the
 * reservation must stay below UINT64_MAX. */
static uint64_t scope_max_reservation(LedgerScope *s, uint32_t limit_permille, uint64_t now_usec) {
        uint64_t max;

        if (s->limits.max_allocations != 0 && s->n_allocations >= s->limits.max_allocations)
                return 0;
        if (s->reserved_tokens >= UINT64_MAX - 1)
                return 0;
        max = UINT64_MAX - 1 - s->reserved_tokens;
        if (s->limits.in_flight_tokens != 0)
                max = min_u64(max, sat_sub(s->limits.in_flight_tokens, s->reserved_tokens));

        for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++) {
                uint64_t limit = scaled_limit(s->limits.window_tokens[w], limit_permille), base;

                if (limit == 0 || limit == UINT64_MAX)
                        continue;
                base = sat_add(ring_used(s, w, now_usec), s->reserved_tokens);
                max = min_u64(max, sat_sub(limit, base));
        }
        return max;
}

uint64_t ledger_room(Ledger *l, LedgerScope *const *scopes, size_t n_scopes, const LedgerParams *params,
                     uint64_t want_granted, uint64_t now_usec, LedgerRefusal *ret_refusal) {
        uint64_t max_reservation = UINT64_MAX, want_reservation, room;
        LedgerRefusal refusal;
        bool fits;

        reserve_preconditions(l, scopes, n_scopes, want_granted, params);

        if (!params)
                params = &l->params;
        now_usec = ledger_clamp_now(l, now_usec);
        want_reservation = tokens_permille_ceil(want_granted, params->hard_permille);

        for (size_t i = 0; i < n_scopes; i++)
                max_reservation = min_u64(
                        max_reservation, scope_max_reservation(scopes[i], params->limit_permille, now_usec));
        if (max_reservation >= want_reservation)
                return want_granted;

        /* ceil(g x hard / 1000) <= max iff g <= floor(max x 1000 / hard);
         * max < want_reservation < 5 x 10^15 here, so the product fits. */
        room = max_reservation * 1000 / params->hard_permille;
        assert(room < want_granted);

        fits = scopes_have_room(scopes, n_scopes, want_reservation, params->limit_permille, now_usec,
                                &refusal);
        assert(!fits);
        (void)fits;
        if (ret_refusal)
                *ret_refusal = refusal;
        return room;
}

static LedgerState allocation_state(const LedgerAllocation *a) {
        uint64_t used = a->input_tokens + a->output_tokens;

        if (used >= a->reservation_tokens)
                return LEDGER_STATE_EXCEEDED;
        if (used >= a->warn_at_tokens)
                return LEDGER_STATE_WARNING;
        return LEDGER_STATE_OK;
}

static int totals_valid(const LedgerAllocation *a, uint64_t input_tokens, uint64_t output_tokens) {
        if (input_tokens >= LEDGER_TOKENS_MAX || output_tokens >= LEDGER_TOKENS_MAX)
                return -ERANGE;
        if (input_tokens < a->input_tokens || output_tokens < a->output_tokens)
                return -ERANGE;
        return 0;
}

/* A saturated total stays at UINT64_MAX (see LedgerScope.reserved_saturated). */
static void scope_unreserve(LedgerScope *s, uint64_t tokens) {
        if (s->reserved_saturated)
                return;
        assert(s->reserved_tokens >= tokens);
        s->reserved_tokens -= tokens;
}

/* Commits the increase to the new totals in every scope. The part of it still
 * covered by the reservation moves from reserved to committed, so window +
 * reserved does not change; the rest is an overrun, committed all the same. */
static void allocation_commit(LedgerAllocation *a, uint64_t input_tokens, uint64_t output_tokens,
                              uint64_t now_usec) {
        uint64_t delta = (input_tokens + output_tokens) - (a->input_tokens + a->output_tokens);
        uint64_t from_reserved = min_u64(delta, a->still_reserved_tokens);

        a->input_tokens = input_tokens;
        a->output_tokens = output_tokens;
        a->still_reserved_tokens -= from_reserved;
        if (delta == 0)
                return;

        for (size_t i = 0; i < a->n_scopes; i++) {
                LedgerScope *s = a->scopes[i];

                for (LedgerWindow w = 0; w < _LEDGER_WINDOW_MAX; w++)
                        ring_commit(s, w, now_usec, delta);
                s->committed_total_tokens = sat_add(s->committed_total_tokens, delta);
                scope_unreserve(s, from_reserved);
        }
}

int ledger_report(Ledger *l, LedgerAllocation *a, uint64_t input_tokens, uint64_t output_tokens,
                  uint64_t now_usec, LedgerState *ret_state) {
        int r;

        assert(l);
        assert(a && a->live);

        r = totals_valid(a, input_tokens, output_tokens);
        if (r < 0)
                return r;

        allocation_commit(a, input_tokens, output_tokens, ledger_clamp_now(l, now_usec));
        if (ret_state)
                *ret_state = allocation_state(a);
        return 0;
}

int ledger_settle(Ledger *l, LedgerAllocation *a, uint64_t input_tokens, uint64_t output_tokens,
                  uint64_t now_usec, uint64_t *ret_used, uint64_t *ret_refunded) {
        uint64_t refund;
        int r;

        assert(l);
        assert(a && a->live);

        r = totals_valid(a, input_tokens, output_tokens);
        if (r < 0)
                return r;

        allocation_commit(a, input_tokens, output_tokens, ledger_clamp_now(l, now_usec));

        refund = a->still_reserved_tokens;
        for (size_t i = 0; i < a->n_scopes; i++) {
                LedgerScope *s = a->scopes[i];

                assert(s->n_allocations > 0);
                scope_unreserve(s, refund);
                s->n_allocations--;
                if (s->n_allocations == 0 && s->reserved_saturated) {
                        s->reserved_tokens = 0;
                        s->reserved_saturated = false;
                }
        }

        if (ret_used)
                *ret_used = input_tokens + output_tokens;
        if (ret_refunded)
                *ret_refunded = refund;

        allocation_unlink(l, a);
        slab_release(l, a);
        return 0;
}

LedgerAllocation *ledger_find(Ledger *l, uint64_t id) {
        uint64_t serial, slot_plus_one;
        LedgerAllocation *a;

        assert(l);

        serial = id_to_serial(l, id);
        slot_plus_one = serial & UINT32_MAX;
        if (slot_plus_one == 0 || slot_plus_one > l->n_slots)
                return NULL;
        a = slab_slot(l, slot_plus_one - 1);
        if (!a->live || a->generation != (uint32_t)(serial >> 32))
                return NULL;
        return a;
}

LedgerAllocation *ledger_next(Ledger *l, LedgerAllocation *prev) {
        assert(l);
        if (!prev)
                return l->first;
        assert(prev->live);
        return prev->next;
}

size_t ledger_n_allocations(const Ledger *l) {
        assert(l);
        return l->n_allocations;
}

/* --- allocation accessors --- */

uint64_t ledger_allocation_id(const LedgerAllocation *a) {
        assert(a);
        return a->id;
}

uint64_t ledger_allocation_granted(const LedgerAllocation *a) {
        assert(a);
        return a->granted_tokens;
}

uint64_t ledger_allocation_warn_at(const LedgerAllocation *a) {
        assert(a);
        return a->warn_at_tokens;
}

uint64_t ledger_allocation_hard_limit(const LedgerAllocation *a) {
        assert(a);
        return a->reservation_tokens;
}

uint64_t ledger_allocation_reserved(const LedgerAllocation *a) {
        assert(a);
        return a->still_reserved_tokens;
}

uint64_t ledger_allocation_input_tokens(const LedgerAllocation *a) {
        assert(a);
        return a->input_tokens;
}

uint64_t ledger_allocation_output_tokens(const LedgerAllocation *a) {
        assert(a);
        return a->output_tokens;
}

uint64_t ledger_allocation_used(const LedgerAllocation *a) {
        assert(a);
        return a->input_tokens + a->output_tokens;
}

uint64_t ledger_allocation_granted_usec(const LedgerAllocation *a) {
        assert(a);
        return a->granted_usec;
}

LedgerState ledger_allocation_state(const LedgerAllocation *a) {
        assert(a);
        return allocation_state(a);
}

size_t ledger_allocation_scopes(const LedgerAllocation *a, LedgerScope *const **ret_scopes) {
        assert(a);
        if (ret_scopes)
                *ret_scopes = a->scopes;
        return a->n_scopes;
}

void ledger_allocation_set_userdata(LedgerAllocation *a, void *userdata) {
        assert(a);
        a->userdata = userdata;
}

void *ledger_allocation_get_userdata(const LedgerAllocation *a) {
        assert(a);
        return a->userdata;
}
