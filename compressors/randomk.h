/*
 * Random-k sparsification (private, C-compatible: shared by randomk.c and a future
 * randomk_cuda.cu; the index functions are TERSE_HD, so a kernel computes the same indices).
 *
 * k = max(1, ceil(density * count)) (terse_topk_k's rule), fixed per (layer, plan). The k
 * indices are positions 0..k-1 of a keyed pseudo-random permutation of [0, count), keyed by
 * the SHARED stream (base, TERSE_RNG_RANDOMK, layer, step, TERSE_RNG_SHARED): every rank
 * draws the same indices, so payloads are summable (DESIGN.md section 8, rule 5). Payload:
 * the k fp32 values v[idx(0)], ..., v[idx(k-1)] in that order, no header (rule 6; the wire
 * algorithm appends the per-layer non-finite sentinel). Unscaled: the values travel as they
 * are, and error feedback keeps the rest (residual = v with the sent entries zeroed).
 *
 * The permutation: a balanced Feistel network on 2h bits, h the smallest integer >= 1 with
 * 2^(2h) >= count, with TERSE_RANDOMK_ROUNDS rounds
 *     (L, R) -> (R, L ^ (F(R, key_r) & (2^h - 1)))
 * and cycle-walking: idx(j) applies the network to j, then again to its output, until the
 * value is < count. The network is a bijection of [0, 2^(2h)), so cycle-walking restricts it
 * to a bijection of [0, count) (indices are distinct), and each walk is expected to take at
 * most 4 applications (2^(2h) < 4 count). The round keys key_r are the 8 words of Philox
 * blocks 0 and 1 of the stream; F is a 32-bit integer mix (murmur3's finaliser) of R ^ key_r:
 * integer operations only, so CPU and GPU agree bit for bit. Each index is computed
 * independently (one thread per j on a GPU).
 */
#ifndef TERSE_RANDOMK_H
#define TERSE_RANDOMK_H

#include <stdint.h>

#include "rng.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_RANDOMK_ROUNDS 6

typedef struct terse_randomk_perm {
    uint64_t count;                      /* domain [0, count), count >= 1 */
    uint32_t half_bits;                  /* h */
    uint32_t mask;                       /* 2^h - 1 */
    uint32_t key[TERSE_RANDOMK_ROUNDS];  /* round keys */
} terse_randomk_perm_t;

/* Builds the permutation of [0, count) (1 <= count <= 2^32) for the stream rng. */
TERSE_HD terse_randomk_perm_t
terse_randomk_perm_make(const terse_rng_t *rng, uint64_t count)
{
    terse_randomk_perm_t p;
    terse_rng4_t b0 = terse_rng_block(rng, 0);
    terse_rng4_t b1 = terse_rng_block(rng, 1);
    uint32_t h = 1;
    int r;

    while ((h < 32) && (((uint64_t)1 << (2 * h)) < count)) {
        ++h;
    }
    p.count     = count;
    p.half_bits = h;
    p.mask      = (h >= 32) ? 0xffffffffu : (((uint32_t)1 << h) - 1u);
    for (r = 0; r < TERSE_RANDOMK_ROUNDS; ++r) {
        p.key[r] = (r < 4) ? b0.v[r] : b1.v[r - 4];
    }
    return p;
}

/* The round function: murmur3's 32-bit finaliser of R ^ key. */
TERSE_HD uint32_t
terse_randomk_round(uint32_t x, uint32_t key)
{
    x ^= key;
    x ^= x >> 16;
    x *= 0x85ebca6bu;
    x ^= x >> 13;
    x *= 0xc2b2ae35u;
    x ^= x >> 16;
    return x;
}

/* One pass of the Feistel network over [0, 2^(2h)). */
TERSE_HD uint64_t
terse_randomk_feistel(const terse_randomk_perm_t *p, uint64_t x)
{
    uint32_t l = (uint32_t)(x >> p->half_bits) & p->mask;
    uint32_t r = (uint32_t)x & p->mask;
    uint32_t t;
    int i;

    for (i = 0; i < TERSE_RANDOMK_ROUNDS; ++i) {
        t = l ^ (terse_randomk_round(r, p->key[i]) & p->mask);
        l = r;
        r = t;
    }
    return ((uint64_t)l << p->half_bits) | r;
}

/* Index j (0 <= j < count) of the permuted order: the j-th sent element. */
TERSE_HD uint64_t
terse_randomk_index(const terse_randomk_perm_t *p, uint64_t j)
{
    uint64_t x = j;

    do {
        x = terse_randomk_feistel(p, x);
    } while (x >= p->count);
    return x;
}

#ifdef __cplusplus
}
#endif

#endif /* TERSE_RANDOMK_H */
