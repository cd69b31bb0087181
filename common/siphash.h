/* SPDX-License-Identifier: MIT */
/*
 * SipHash-2-4, the keyed 64-bit pseudo-random function of Aumasson and
 * Bernstein ("SipHash: a fast short-input PRF", INDOCRYPT 2012; constants
 * and the round from section 2 of the paper), written from the paper. It is
 * the round function of the ledger's allocation-id permutation. Header-only
 * so that the few calls on the hot path inline; pure (no state, no I/O).
 * tests/unit/test-ledger.c checks it against the reference test vectors,
 * including the paper's appendix A example.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

typedef struct SipHashKey {
        uint64_t k0, k1; /* the 16 key bytes, read as two little-endian words */
} SipHashKey;

static inline uint64_t siphash_le64(const uint8_t *p, size_t n) {
        uint64_t v = 0;

        for (size_t i = 0; i < n; i++)
                v |= (uint64_t)p[i] << (8 * i);
        return v;
}

static inline SipHashKey siphash_key(const uint8_t key[16]) {
        return (SipHashKey){siphash_le64(key, 8), siphash_le64(key + 8, 8)};
}

static inline uint64_t siphash_rotl(uint64_t x, unsigned b) {
        return (x << b) | (x >> (64 - b));
}

typedef struct SipHashState {
        uint64_t v0, v1, v2, v3;
} SipHashState;

static inline void siphash_round(SipHashState *s) {
        s->v0 += s->v1;
        s->v1 = siphash_rotl(s->v1, 13);
        s->v1 ^= s->v0;
        s->v0 = siphash_rotl(s->v0, 32);
        s->v2 += s->v3;
        s->v3 = siphash_rotl(s->v3, 16);
        s->v3 ^= s->v2;
        s->v0 += s->v3;
        s->v3 = siphash_rotl(s->v3, 21);
        s->v3 ^= s->v0;
        s->v2 += s->v1;
        s->v1 = siphash_rotl(s->v1, 17);
        s->v1 ^= s->v2;
        s->v2 = siphash_rotl(s->v2, 32);
}

/* "somepseudorandomlygeneratedbytes", the paper's initialisation constants. */
static inline SipHashState siphash_init(const SipHashKey *k) {
        return (SipHashState){
                k->k0 ^ UINT64_C(0x736f6d6570736575),
                k->k1 ^ UINT64_C(0x646f72616e646f6d),
                k->k0 ^ UINT64_C(0x6c7967656e657261),
                k->k1 ^ UINT64_C(0x7465646279746573),
        };
}

/* c = 2 compression rounds per 8-byte word. */
static inline void siphash_compress(SipHashState *s, uint64_t m) {
        s->v3 ^= m;
        siphash_round(s);
        siphash_round(s);
        s->v0 ^= m;
}

/* d = 4 finalisation rounds. */
static inline uint64_t siphash_finish(SipHashState *s) {
        s->v2 ^= 0xff;
        siphash_round(s);
        siphash_round(s);
        siphash_round(s);
        siphash_round(s);
        return s->v0 ^ s->v1 ^ s->v2 ^ s->v3;
}

/* SipHash-2-4 of len bytes at data. */
static inline uint64_t siphash24(const SipHashKey *k, const void *data, size_t len) {
        const uint8_t *p = data;
        SipHashState s = siphash_init(k);
        size_t n_words = len / 8;

        for (size_t i = 0; i < n_words; i++)
                siphash_compress(&s, siphash_le64(p + 8 * i, 8));
        /* The last word: the remaining bytes, and len mod 256 in the top byte. */
        siphash_compress(&s, siphash_le64(p + 8 * n_words, len % 8) | ((uint64_t)(len & 0xff) << 56));
        return siphash_finish(&s);
}

/* SipHash-2-4 of a message of len <= 7 bytes given as a little-endian
 * integer (m < 2^(8 len)): the same value as siphash24() of those bytes, in
 * one compression and the finalisation. */
static inline uint64_t siphash24_short(const SipHashKey *k, uint64_t m, size_t len) {
        SipHashState s = siphash_init(k);

        siphash_compress(&s, m | ((uint64_t)len << 56));
        return siphash_finish(&s);
}
