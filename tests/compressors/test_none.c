/* compressors/compressor.c: the none family (exact round trip, residual drained) and the
 * element conversions (fp16 exhaustively, bf16), checked against independent arithmetic. */
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "compressor.h"

static void
test_none_roundtrip(void)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("none");
    const size_t n = 1001;
    float x[1001], r[1001], p[1001], d[1001 + 1];
    terse_cmp_params_t par;
    terse_buf_t in = {x, n, TERSE_FLOAT32, TERSE_MEM_HOST};
    terse_buf_t out = {d + 1, n, TERSE_FLOAT32, TERSE_MEM_HOST}; /* unaligned by a float */
    void *ctx;
    size_t bytes, i;
    uint32_t flags = 9;
    double sq = -1;
    int ok = 1;

    CU_ASSERT_FATAL(ops != NULL);
    memset(&par, 0, sizeof(par));
    par.size  = sizeof(par);
    par.count = n;
    TERSE_TEST_OK(ops->create(&par, &ctx));
    TERSE_TEST_OK(ops->payload_size(ctx, n, 0, &bytes));
    CU_ASSERT_EQUAL(bytes, n * sizeof(float));
    terse_test_gaussian(1, x, n);
    terse_test_gaussian(2, r, n);
    TERSE_TEST_OK(ops->compress(ctx, &in, r, NULL, p, bytes, &flags, &sq, NULL));
    CU_ASSERT_EQUAL(flags, 0);
    CU_ASSERT_EQUAL(sq, 0.0);
    TERSE_TEST_OK(ops->decompress(ctx, p, bytes, 1.0f, &out, NULL));
    for (i = 0; i < n; ++i) {
        ok &= (r[i] == 0.0f); /* drained */
        ok &= (d[i + 1] == p[i]);
    }
    CU_ASSERT(ok);
    /* payload = in + residual exactly */
    terse_test_gaussian(2, r, n);
    for (i = 0; i < n; ++i) {
        ok &= (p[i] == x[i] + r[i]);
    }
    CU_ASSERT(ok);
    TERSE_TEST_STATUS(ops->decompress(ctx, p, bytes - 4, 1.0f, &out, NULL), TERSE_ERR_PAYLOAD);
    /* non-finite input raises the flag */
    x[7] = NAN;
    TERSE_TEST_OK(ops->compress(ctx, &in, NULL, NULL, p, bytes, &flags, NULL, NULL));
    CU_ASSERT_EQUAL(flags, TERSE_CMP_NONFINITE);
    ops->destroy(ctx);
}

/* Independent reference: the nearest fp16 (ties to even) by exhaustive search in double. */
static uint16_t
half_ref(float f)
{
    double v = fabs((double)f), best = 1e300;
    uint16_t sign = signbit(f) ? 0x8000u : 0, h, pick = 0;

    if (isnan(f)) {
        return 0x7fffu;
    }
    if (v >= 65520.0) {
        return (uint16_t)(sign | 0x7c00u);
    }
    for (h = 0; h < 0x7c00u; ++h) {
        double e = fabs((double)terse__half_to_float(h) - v);
        if ((e < best) || ((e == best) && ((h & 1u) == 0))) {
            best = e;
            pick = h;
        }
    }
    return (uint16_t)(sign | pick);
}

/* Every half converts to float and back unchanged (NaNs stay NaN); the decoded values are the
 * IEEE ones. */
static void
test_half_all(void)
{
    uint32_t h;
    int ok = 1;

    for (h = 0; h < 0x10000u; ++h) {
        float f       = terse__half_to_float((uint16_t)h);
        uint32_t exp  = (h >> 10) & 0x1fu, man = h & 0x3ffu;
        double sign   = (h & 0x8000u) ? -1.0 : 1.0;
        double want;
        if (exp == 0x1fu) {
            ok &= man ? isnan(f) : (isinf(f) && ((f < 0) == (sign < 0)));
            if (man != 0) {
                ok &= isnan(terse__half_to_float(terse__float_to_half(f)));
                continue;
            }
        } else {
            want = sign * ((exp == 0) ? ldexp((double)man, -24)
                                      : ldexp(1.0 + (double)man / 1024.0, (int)exp - 15));
            ok &= ((double)f == want);
        }
        ok &= (terse__float_to_half(f) == h);
    }
    CU_ASSERT(ok);
}

static void
test_half_rounding(void)
{
    int ok = 1, i;

    /* ties to even: 1 + 2^-11 is halfway between 1 and 1 + 2^-10 */
    CU_ASSERT_EQUAL(terse__float_to_half(1.0f + 1.0f / 2048.0f), 0x3c00);
    CU_ASSERT_EQUAL(terse__float_to_half(1.0f + 3.0f / 2048.0f), 0x3c02);
    CU_ASSERT_EQUAL(terse__float_to_half(-(1.0f + 3.0f / 2048.0f)), 0xbc02);
    /* overflow: 65519.99 rounds to 65504, 65520 (the tie) to Inf */
    CU_ASSERT_EQUAL(terse__float_to_half(65504.0f), 0x7bff);
    CU_ASSERT_EQUAL(terse__float_to_half(65519.99f), 0x7bff);
    CU_ASSERT_EQUAL(terse__float_to_half(65520.0f), 0x7c00);
    CU_ASSERT_EQUAL(terse__float_to_half(-1e9f), 0xfc00);
    CU_ASSERT_EQUAL(terse__float_to_half(INFINITY), 0x7c00);
    /* subnormals: 2^-24 is the smallest; 2^-25 ties to 0; 1.5 * 2^-24 ties up to 2 * 2^-24 */
    CU_ASSERT_EQUAL(terse__float_to_half(ldexpf(1.0f, -24)), 0x0001);
    CU_ASSERT_EQUAL(terse__float_to_half(ldexpf(1.0f, -25)), 0x0000);
    CU_ASSERT_EQUAL(terse__float_to_half(ldexpf(1.0f, -25) * 1.0001f), 0x0001);
    CU_ASSERT_EQUAL(terse__float_to_half(ldexpf(3.0f, -25)), 0x0002);
    CU_ASSERT_EQUAL(terse__float_to_half(-ldexpf(1.0f, -30)), 0x8000);
    CU_ASSERT_EQUAL(terse__float_to_half(ldexpf(1023.0f, -24)), 0x03ff);
    CU_ASSERT_EQUAL(terse__float_to_half(ldexpf(1.0f, -14)), 0x0400);
    /* random floats against the exhaustive-search reference */
    for (i = 0; i < 300; ++i) {
        double u = terse_test_uniform(17, (uint64_t)i);
        float f  = (float)ldexp(u * 2.0 - 1.0, (i % 44) - 28);
        ok &= (terse__float_to_half(f) == half_ref(f));
    }
    CU_ASSERT(ok);
}

static void
test_bf16(void)
{
    uint32_t h;
    int ok = 1;

    for (h = 0; h < 0x10000u; ++h) {
        float f = terse_bf16_to_float((uint16_t)h);
        if (isnan(f)) {
            ok &= isnan(terse_bf16_to_float(terse_float_to_bf16(f)));
        } else {
            ok &= (terse_float_to_bf16(f) == h);
        }
    }
    CU_ASSERT(ok);
    CU_ASSERT_EQUAL(terse_float_to_bf16(1.0f + 1.0f / 256.0f), 0x3f80); /* tie, even below */
    CU_ASSERT_EQUAL(terse_float_to_bf16(1.0f + 3.0f / 256.0f), 0x3f82); /* tie, odd below */
    CU_ASSERT_EQUAL(terse_float_to_bf16(1.0f + 1.5f / 256.0f), 0x3f81);
    CU_ASSERT_EQUAL(terse_float_to_bf16(3.4028235e38f), 0x7f80);        /* rounds to Inf */
}

static CU_TestInfo none_tests[] = {
    {"none round trip", test_none_roundtrip},
    {"fp16 every value round-trips", test_half_all},
    {"fp16 rounding, overflow, subnormals", test_half_rounding},
    {"bf16", test_bf16},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_none_suites[] = {
    {"compressors/none", NULL, NULL, NULL, NULL, none_tests},
    CU_SUITE_INFO_NULL,
};
