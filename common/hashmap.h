/* SPDX-License-Identifier: MIT */
/*
 * A small open-addressing hash map from uint64_t keys to non-NULL pointers
 * (linear probing, backward-shift deletion, grows at 3/4 load, shrinks at 1/8).
 * Pure; O(1) expected per operation. Used for process scopes by pid.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct Hashmap Hashmap;

Hashmap *hashmap_new(void);
Hashmap *hashmap_free(Hashmap *h); /* frees the map, not the values; NULL-safe */
/* Returns 0, -EEXIST when key is present (nothing changes), -ENOMEM. value must not be NULL. */
int hashmap_put(Hashmap *h, uint64_t key, void *value);
void *hashmap_get(const Hashmap *h, uint64_t key);
/* Removes key and returns its value, or NULL when absent. */
void *hashmap_remove(Hashmap *h, uint64_t key);
size_t hashmap_size(const Hashmap *h);
