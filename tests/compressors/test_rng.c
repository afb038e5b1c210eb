/* compressors/rng.h: Philox-4x32-10 known-answer vectors (Random123's kat_vectors), stream
 * separation by purpose/layer/step/rank, offsets, and the 16-bit uniforms of quant. */
#include <stdio.h>
#include <string.h>

#include "terse_test.h"
#include "rng.h"

static void
rng_check_kat(const uint32_t c[4], const uint32_t k[2], const uint32_t want[4])
{
    terse_rng4_t r = terse_philox(c[0], c[1], c[2], c[3], k[0], k[1]);
    int i;

    for (i = 0; i < 4; ++i) {
        if (r.v[i] != want[i]) {
            fprintf(stderr, "philox word %d: %08x, want %08x\n", i, r.v[i], want[i]);
        }
        CU_ASSERT_EQUAL(r.v[i], want[i]);
    }
}

static void
test_rng_kat(void)
{
    static const uint32_t c0[4] = {0, 0, 0, 0}, k0[2] = {0, 0};
    static const uint32_t w0[4] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
    static const uint32_t c1[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    static const uint32_t k1[2] = {0xffffffffu, 0xffffffffu};
    static const uint32_t w1[4] = {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu};
    static const uint32_t c2[4] = {0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u};
    static const uint32_t k2[2] = {0xa4093822u, 0x299f31d0u};
    static const uint32_t w2[4] = {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u};

    rng_check_kat(c0, k0, w0);
    rng_check_kat(c1, k1, w1);
    rng_check_kat(c2, k2, w2);
}

/* Block b of a stream is Philox of counter (b lo, b hi, step, rank) under the stream's key. */
static void
test_rng_block_layout(void)
{
    terse_rng_t r = terse_rng_make(42, TERSE_RNG_QUANT, 7, 100, 3);
    uint64_t b    = 0x100000005ull; /* crosses into counter word 1 */
    terse_rng4_t x = terse_rng_block(&r, b);
    terse_rng4_t y = terse_philox(5, 1, 100, 3, r.key[0], r.key[1]);
    unsigned lane;

    CU_ASSERT(memcmp(&x, &y, sizeof(x)) == 0);
    CU_ASSERT_EQUAL(r.hi[0], 100);
    CU_ASSERT_EQUAL(r.hi[1], 3);
    CU_ASSERT_EQUAL(terse_rng_u32(&r, 4 * b + 2), x.v[2]);
    for (lane = 0; lane < 8; ++lane) {
        uint32_t want = (lane % 2) ? (x.v[lane / 2] >> 16) : (x.v[lane / 2] & 0xffffu);
        CU_ASSERT_EQUAL(terse_rng_u16_of(x, lane), want);
    }
    CU_ASSERT_EQUAL(terse_rng_u16_to_float(0), 0.5f / 65536.0f);
    CU_ASSERT_EQUAL(terse_rng_u16_to_float(65535), 65535.5f / 65536.0f);
    CU_ASSERT(terse_rng_u16_to_float(65535) < 1.0f);
}

/* Changing any coordinate changes the stream; equal coordinates give equal streams. */
static void
test_rng_streams(void)
{
    terse_rng_t base = terse_rng_make(1, TERSE_RNG_QUANT, 2, 3, 4);
    terse_rng_t same = terse_rng_make(1, TERSE_RNG_QUANT, 2, 3, 4);
    terse_rng_t v[6];
    int i, j;

    v[0] = terse_rng_make(2, TERSE_RNG_QUANT, 2, 3, 4);   /* base seed */
    v[1] = terse_rng_make(1, TERSE_RNG_REQUANT, 2, 3, 4); /* purpose */
    v[2] = terse_rng_make(1, TERSE_RNG_QUANT, 5, 3, 4);   /* layer */
    v[3] = terse_rng_make(1, TERSE_RNG_QUANT, 2, 6, 4);   /* step */
    v[4] = terse_rng_make(1, TERSE_RNG_QUANT, 2, 3, 7);   /* rank */
    v[5] = base;
    CU_ASSERT(terse_rng_u32(&base, 0) == terse_rng_u32(&same, 0));
    for (i = 0; i < 5; ++i) {
        int differ = 0;
        for (j = 0; j < 16; ++j) {
            differ += terse_rng_u32(&v[i], (uint64_t)j) != terse_rng_u32(&v[5], (uint64_t)j);
        }
        CU_ASSERT(differ >= 15);
    }
    /* the shared stream is equal on every rank by construction */
    CU_ASSERT_EQUAL(terse_rng_make(1, TERSE_RNG_RANDOMK, 2, 3, TERSE_RNG_SHARED).key[0],
                    terse_rng_make(1, TERSE_RNG_RANDOMK, 2, 3, TERSE_RNG_SHARED).key[0]);
}

/* advance: element i of the advanced stream is element off + i of the original. */
static void
test_rng_advance(void)
{
    terse_rng_t r = terse_rng_make(5, TERSE_RNG_QUANT, 1, 1, 1);
    terse_rng_t a = terse_rng_advance(r, 13);
    terse_rng_t b = terse_rng_advance(a, 7);

    CU_ASSERT_EQUAL(a.offset, 13);
    CU_ASSERT_EQUAL(b.offset, 20);
    CU_ASSERT_EQUAL(r.offset, 0);
    CU_ASSERT(memcmp(a.key, r.key, sizeof(r.key)) == 0);
    CU_ASSERT(memcmp(a.hi, r.hi, sizeof(r.hi)) == 0);
}

/* The 16-bit uniforms are uniform: mean and 16-bin chi-square over 2^17 draws. */
static void
test_rng_uniform(void)
{
    terse_rng_t r = terse_rng_make(8, TERSE_RNG_QUANT, 0, 0, 0);
    const uint64_t n = 1u << 17;
    double sum = 0, chi = 0, sd;
    unsigned bins[16] = {0};
    uint64_t i;
    int k;

    for (i = 0; i < n; ++i) {
        float u = terse_rng_u16_to_float(terse_rng_u16_of(terse_rng_block(&r, i / 8),
                                                          (unsigned)(i % 8)));
        sum += u;
        bins[(int)(u * 16.0f)]++;
    }
    sd = sqrt(1.0 / 12.0 / (double)n);
    CU_ASSERT(fabs(sum / (double)n - 0.5) < 6.0 * sd);
    for (k = 0; k < 16; ++k) {
        double e = (double)n / 16.0;
        chi += ((double)bins[k] - e) * ((double)bins[k] - e) / e;
    }
    /* 15 degrees of freedom: mean 15, sd sqrt(30); 6 sigma is about 48 */
    CU_ASSERT(chi < 48.0);
}

static CU_TestInfo rng_tests[] = {
    {"philox known answers", test_rng_kat},
    {"block and lane layout", test_rng_block_layout},
    {"streams differ", test_rng_streams},
    {"advance", test_rng_advance},
    {"uniformity", test_rng_uniform},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_rng_suites[] = {
    {"compressors/rng", NULL, NULL, NULL, NULL, rng_tests},
    CU_SUITE_INFO_NULL,
};
