/* SPDX-License-Identifier: MIT */
/*
 * An open-addressing hash map from uint64_t keys to non-NULL pointers.
 * Linear probing over a power-of-two table, indexed by splitmix64's finalizer
 * so that clustered keys (pids, ids with a generation in the high bits) spread
 * out. Deletion shifts later entries of the probe run back instead of leaving
 * tombstones, so lookups never slow down after churn. The table grows at 3/4
 * load and shrinks at 1/8 (never below HASHMAP_CAPACITY_MIN). A NULL value
 * marks an empty slot, which is why values must not be NULL. The map does not
 * own its values.
 */
#include <assert.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

#include "hashmap.h"

/* Small enough that an idle map costs 256 bytes, big enough that a handful of
 * entries never resize. */
#define HASHMAP_CAPACITY_MIN 16u

typedef struct HashmapEntry {
        uint64_t key;
        void *value; /* NULL: empty slot */
} HashmapEntry;

struct Hashmap {
        HashmapEntry *entries;
        size_t capacity; /* a power of two, >= HASHMAP_CAPACITY_MIN */
        size_t size;
};

/* splitmix64's finalizer (Steele, Lea, Flood 2014): a bijection with full
 * avalanche, so the low bits we index with depend on every key bit. */
static uint64_t hash_u64(uint64_t x) {
        x ^= x >> 30;
        x *= UINT64_C(0xbf58476d1ce4e5b9);
        x ^= x >> 27;
        x *= UINT64_C(0x94d049bb133111eb);
        x ^= x >> 31;
        return x;
}

static size_t home_of(const Hashmap *h, uint64_t key) {
        return (size_t)hash_u64(key) & (h->capacity - 1);
}

Hashmap *hashmap_new(void) {
        Hashmap *h = calloc(1, sizeof(*h));
        if (!h)
                return NULL;
        h->entries = calloc(HASHMAP_CAPACITY_MIN, sizeof(HashmapEntry));
        if (!h->entries) {
                free(h);
                return NULL;
        }
        h->capacity = HASHMAP_CAPACITY_MIN;
        return h;
}

Hashmap *hashmap_free(Hashmap *h) {
        if (!h)
                return NULL;
        free(h->entries);
        free(h);
        return NULL;
}

/* Finds key's slot, or the empty slot that ends its probe run. The table is
 * never full (load <= 3/4), so the loop ends. */
static size_t find_slot(const Hashmap *h, uint64_t key) {
        size_t mask = h->capacity - 1;
        size_t i = home_of(h, key);

        while (h->entries[i].value && h->entries[i].key != key)
                i = (i + 1) & mask;
        return i;
}

static int resize(Hashmap *h, size_t capacity) {
        HashmapEntry *old = h->entries;
        size_t old_capacity = h->capacity;
        HashmapEntry *entries;

        assert(capacity >= HASHMAP_CAPACITY_MIN && (capacity & (capacity - 1)) == 0);
        assert(capacity > h->size);

        entries = calloc(capacity, sizeof(HashmapEntry));
        if (!entries)
                return -ENOMEM;

        h->entries = entries;
        h->capacity = capacity;
        for (size_t i = 0; i < old_capacity; i++)
                if (old[i].value)
                        h->entries[find_slot(h, old[i].key)] = old[i];
        free(old);
        return 0;
}

int hashmap_put(Hashmap *h, uint64_t key, void *value) {
        size_t i;

        assert(h);
        assert(value);

        i = find_slot(h, key);
        if (h->entries[i].value)
                return -EEXIST;

        if ((h->size + 1) * 4 > h->capacity * 3) {
                if (h->capacity > SIZE_MAX / 2 / sizeof(HashmapEntry))
                        return -ENOMEM;
                int r = resize(h, h->capacity * 2);
                if (r < 0)
                        return r;
                i = find_slot(h, key);
        }

        h->entries[i] = (HashmapEntry){.key = key, .value = value};
        h->size++;
        return 0;
}

void *hashmap_get(const Hashmap *h, uint64_t key) {
        assert(h);
        return h->entries[find_slot(h, key)].value;
}

/* Backward-shift deletion: walk the run after the hole and move back every
 * entry whose home lies cyclically at or before the hole, so that no probe run
 * is ever broken by an empty slot. */
static void remove_at(Hashmap *h, size_t hole) {
        size_t mask = h->capacity - 1;

        for (size_t j = (hole + 1) & mask; h->entries[j].value; j = (j + 1) & mask) {
                size_t home = home_of(h, h->entries[j].key);

                if (((j - home) & mask) >= ((j - hole) & mask)) {
                        h->entries[hole] = h->entries[j];
                        hole = j;
                }
        }
        h->entries[hole] = (HashmapEntry){};
}

void *hashmap_remove(Hashmap *h, uint64_t key) {
        size_t i;
        void *value;

        assert(h);

        i = find_slot(h, key);
        value = h->entries[i].value;
        if (!value)
                return NULL;

        remove_at(h, i);
        h->size--;

        /* Shrinking is an optimisation: if the smaller table cannot be
         * allocated the bigger one keeps working. */
        if (h->capacity > HASHMAP_CAPACITY_MIN && h->size * 8 < h->capacity)
                (void)resize(h, h->capacity / 2);
        return value;
}

size_t hashmap_size(const Hashmap *h) {
        assert(h);
        return h->size;
}
