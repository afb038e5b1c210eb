/*
 * The counter-based random generator of DESIGN.md section 8 rule 5: Philox-4x32-10
 * (Salmon et al., SC'11), written once for the CPU and the GPU (TERSE_HD marks functions that
 * nvcc compiles for both), so a CUDA kernel and the CPU reference draw the same bits.
 *
 * A stream is (key, counter high words); element j of a layer draws from block j / 4 ... see
 * terse_rng_u32() and terse_rng_uniform16(). Streams:
 *   stochastic rounding:    (base, purpose, layer, step, rank)  differs per rank
 *   random-k, PowerSGD Q:   (base, purpose, layer, step, TERSE_RNG_SHARED)  equal on all ranks
 */
#ifndef TERSE_RNG_H
#define TERSE_RNG_H

#include <stdint.h>

#if defined(__CUDACC__)
#define TERSE_HD __host__ __device__ __forceinline__
#else
#define TERSE_HD static inline
#endif

#define TERSE_RNG_SHARED 0xffffffffu

/* What a stream is for; part of the key so that streams of one layer never overlap. */
enum {
    TERSE_RNG_QUANT   = 1, /* sender's stochastic rounding */
    TERSE_RNG_REQUANT = 2, /* chunk owner's requantisation */
    TERSE_RNG_RANDOMK = 3,
    TERSE_RNG_PSGD_Q  = 4,
    TERSE_RNG_TEST    = 15
};

typedef struct terse_rng {
    uint32_t key[2];
    uint32_t hi[2];   /* counter words 2 and 3: step and rank */
    uint64_t offset;  /* element index of element 0 of the buffer this stream is passed with */
} terse_rng_t;

typedef struct terse_rng4 {
    uint32_t v[4];
} terse_rng4_t;

TERSE_HD uint32_t
terse_rng_mulhilo(uint32_t a, uint32_t b, uint32_t *hi)
{
    uint64_t p = (uint64_t)a * (uint64_t)b;
    *hi        = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

/* Philox-4x32-10 of counter (c0, c1, hi[0], hi[1]) under key. */
TERSE_HD terse_rng4_t
terse_philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1)
{
    terse_rng4_t r;
    uint32_t hi0, hi1, lo0, lo1;
    int i;

    for (i = 0; i < 10; ++i) {
        lo0 = terse_rng_mulhilo(0xD2511F53u, c0, &hi0);
        lo1 = terse_rng_mulhilo(0xCD9E8D57u, c2, &hi1);
        c0  = hi1 ^ c1 ^ k0;
        c1  = lo1;
        c2  = hi0 ^ c3 ^ k1;
        c3  = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    r.v[0] = c0;
    r.v[1] = c1;
    r.v[2] = c2;
    r.v[3] = c3;
    return r;
}

/* SplitMix-style mixing of the stream coordinates into a key. */
TERSE_HD uint64_t
terse_rng_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

TERSE_HD terse_rng_t
terse_rng_make(uint64_t base, uint32_t purpose, uint32_t layer, uint32_t step, uint32_t rank)
{
    terse_rng_t r;
    uint64_t k = terse_rng_mix64(base ^ terse_rng_mix64(((uint64_t)purpose << 32) | layer));

    r.key[0] = (uint32_t)k;
    r.key[1] = (uint32_t)(k >> 32);
    r.hi[0]  = step;
    r.hi[1]  = rank;
    r.offset = 0;
    return r;
}

/* The same stream, advanced so that element 0 of a sub-range is element `offset` of the layer. */
TERSE_HD terse_rng_t
terse_rng_advance(terse_rng_t r, uint64_t offset)
{
    r.offset += offset;
    return r;
}

/* Block b of the stream: 128 random bits. */
TERSE_HD terse_rng4_t
terse_rng_block(const terse_rng_t *r, uint64_t b)
{
    return terse_philox((uint32_t)b, (uint32_t)(b >> 32), r->hi[0], r->hi[1], r->key[0],
                        r->key[1]);
}

/* 32 random bits for absolute element index i (block i / 4, lane i % 4). */
TERSE_HD uint32_t
terse_rng_u32(const terse_rng_t *r, uint64_t i)
{
    terse_rng4_t b = terse_rng_block(r, i >> 2);
    return b.v[i & 3];
}

/* Stochastic rounding draws 16 bits per element: block i / 8 feeds 8 elements (lane i % 8 is
 * the low (even lane) or high (odd lane) half of word (i % 8) / 2). The rounding probability
 * is then resolved to 2^-16 of a quantisation step: the bias this leaves, below 1.6e-5 of a
 * step, is far under what any test or training run can see, and it halves the generator's
 * cost on the hot path. */
TERSE_HD uint32_t
terse_rng_u16_of(terse_rng4_t b, unsigned lane)
{
    return (b.v[lane >> 1] >> ((lane & 1u) * 16u)) & 0xffffu;
}

/* u16 -> a float in [0, 1): (u + 0.5) / 65536, exact in fp32. */
TERSE_HD float
terse_rng_u16_to_float(uint32_t u)
{
    return ((float)u + 0.5f) * (1.0f / 65536.0f);
}

#endif /* TERSE_RNG_H */
