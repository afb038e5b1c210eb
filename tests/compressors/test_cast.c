/* compressors/cast.c: bf16 round to nearest even, fp16 pre-scaling and saturation (p payloads
 * summed in fp16 never overflow), residuals, decode factors, non-finite inputs (NaN payloads
 * that survive a sum), sizes, fp16/bf16 inputs, and the parameter spelling. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "compressor.h"
#include "cast.h"
#include "quant.h"

static void *
cs_make(double kind, size_t count, int nranks)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("cast");
    terse_cmp_params_t p;
    void *ctx = NULL;

    memset(&p, 0, sizeof(p));
    p.size   = sizeof(p);
    p.param  = kind;
    p.count  = count;
    p.dtype  = TERSE_FLOAT32;
    p.mem    = TERSE_MEM_HOST;
    p.nranks = nranks;
    CU_ASSERT_FATAL(ops != NULL);
    CU_ASSERT_FATAL(ops->create(&p, &ctx) == TERSE_OK);
    return ctx;
}

/* fp16 addition as a summing collective does it: round after every add. */
static uint16_t
cs_hadd(uint16_t a, uint16_t b)
{
    return terse__float_to_half(terse__half_to_float(a) + terse__half_to_float(b));
}

static void
test_cast_bf16(void)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("cast");
    const size_t n = 1001;
    float x[1001], r[1001], r0[1001], d[1001];
    uint16_t p[1001];
    void *ctx = cs_make(TERSE_CAST_BF16, n, 4);
    terse_buf_t in = {x, n, TERSE_FLOAT32, TERSE_MEM_HOST};
    terse_buf_t out = {d, n, TERSE_FLOAT32, TERSE_MEM_HOST};
    uint32_t flags;
    double sq, ref = 0;
    size_t bytes, i;
    int ok = 1;

    terse_test_gaussian(3, x, n);
    terse_test_gaussian(4, r, n);
    for (i = 0; i < n; ++i) {
        r[i] = r0[i] = r[i] * 1e-3f;
    }
    TERSE_TEST_OK(ops->payload_size(ctx, n, 0, &bytes));
    CU_ASSERT_EQUAL(bytes, 2 * n);
    TERSE_TEST_OK(ops->compress(ctx, &in, r, NULL, p, bytes, &flags, &sq, NULL));
    CU_ASSERT_EQUAL(flags, 0);
    for (i = 0; i < n; ++i) {
        float v = x[i] + r0[i];
        union { float f; uint32_t u; } c = {v};
        /* round to nearest even by hand */
        uint32_t lsb = (c.u >> 16) & 1u, h = (c.u + 0x7fffu + lsb) >> 16;
        float own;
        ok &= (p[i] == (uint16_t)h);
        c.u = h << 16;
        own = c.f;
        ok &= (r[i] == v - own);
        ref += ((double)v - own) * ((double)v - own);
    }
    CU_ASSERT(ok);
    TERSE_TEST_NEAR(sq, ref, 1e-9 * ref);
    TERSE_TEST_OK(ops->decompress(ctx, p, bytes, 0.25f, &out, NULL));
    for (i = 0; i < n; ++i) {
        ok &= (d[i] == terse_bf16_to_float(p[i]) * 0.25f);
    }
    CU_ASSERT(ok);
    /* ties go to even */
    {
        float tie_down = 1.0f + 1.0f / 256.0f;        /* halfway between 1 and 1 + 2^-7 */
        float tie_up   = 1.0f + 3.0f / 256.0f;        /* halfway, odd below */
        CU_ASSERT_EQUAL(terse_float_to_bf16(tie_down), 0x3f80);
        CU_ASSERT_EQUAL(terse_float_to_bf16(tie_up), 0x3f82);
    }
    TERSE_TEST_STATUS(ops->decompress(ctx, p, bytes - 2, 1.0f, &out, NULL), TERSE_ERR_PAYLOAD);
    TERSE_TEST_STATUS(ops->decompress(ctx, p, bytes + 1, 1.0f, &out, NULL), TERSE_ERR_PAYLOAD);
    ops->destroy(ctx);
}

/* For every p, p saturated payloads summed in fp16 (rounding after each add) stay finite,
 * and the bound is not needlessly small. */
static void
test_cast_fp16_clip(void)
{
    int p, k;

    for (p = 1; p <= 256; p = (p < 16) ? p + 1 : p * 2) {
        float clip    = terse__cast_fp16_clip(p);
        uint16_t h    = terse__float_to_half(clip), s = h;
        uint16_t next = (uint16_t)(h + 1);
        CU_ASSERT_EQUAL(terse__half_to_float(h), clip); /* an fp16 value */
        for (k = 1; k < p; ++k) {
            s = cs_hadd(s, h);
        }
        CU_ASSERT((s & 0x7c00u) != 0x7c00u); /* finite */
        CU_ASSERT(clip * (float)p <= 65504.0f);
        CU_ASSERT(clip >= 0.85f * 65504.0f / (float)p);
        if (p == 3) {
            /* the naive bound 65504 / 3 rounds to 21840, and 3 of those overflow */
            uint16_t naive = terse__float_to_half(65504.0f / 3.0f);
            CU_ASSERT_EQUAL(cs_hadd(cs_hadd(naive, naive), naive) & 0x7fffu, 0x7c00u);
            CU_ASSERT(terse__half_to_float(next) > clip);
        }
    }
}

/* fp16: v / p, saturated, clipped part to the residual, decoded times p * scale; the sum of
 * p ranks' payloads decodes to the sum of their values. */
static void
test_cast_fp16(void)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("cast");
    const int p = 4;
    const size_t n = 513;
    float x[4][513], r[513], d[513];
    uint16_t pl[4][513], sum[513];
    void *ctx = cs_make(TERSE_CAST_FP16, n, p);
    terse_buf_t out = {d, n, TERSE_FLOAT32, TERSE_MEM_HOST};
    float clip = terse__cast_fp16_clip(p);
    size_t bytes, i;
    int k, ok = 1;
    uint32_t flags;
    double sq;

    TERSE_TEST_OK(ops->payload_size(ctx, n, 0, &bytes));
    for (k = 0; k < p; ++k) {
        terse_buf_t in = {x[k], n, TERSE_FLOAT32, TERSE_MEM_HOST};
        terse_test_gaussian(50 + k, x[k], n);
        x[k][0] = 1e6f;   /* saturates */
        x[k][1] = -1e6f;
        for (i = 0; i < n; ++i) {
            r[i] = 0.0f;
        }
        TERSE_TEST_OK(ops->compress(ctx, &in, r, NULL, pl[k], bytes, &flags, &sq, NULL));
        CU_ASSERT_EQUAL(flags, 0);
        CU_ASSERT_EQUAL(terse__half_to_float(pl[k][0]), clip);
        CU_ASSERT_EQUAL(terse__half_to_float(pl[k][1]), -clip);
        CU_ASSERT_EQUAL(r[0], 1e6f - clip * (float)p);
        for (i = 2; i < n; ++i) {
            float w = x[k][i] * (1.0f / (float)p);
            ok &= (pl[k][i] == terse__float_to_half(w));
            ok &= (r[i] == x[k][i] - terse__half_to_float(pl[k][i]) * (float)p);
        }
    }
    CU_ASSERT(ok);
    for (i = 0; i < n; ++i) {
        sum[i] = pl[0][i];
        for (k = 1; k < p; ++k) {
            sum[i] = cs_hadd(sum[i], pl[k][i]);
        }
    }
    TERSE_TEST_OK(ops->decompress(ctx, sum, bytes, 1.0f, &out, NULL));
    for (i = 2; i < n; ++i) {
        double want = 0;
        for (k = 0; k < p; ++k) {
            want += x[k][i];
        }
        ok &= (fabs(d[i] - want) <= 4e-3 * (fabs(want) + 1.0));
    }
    CU_ASSERT(ok);
    CU_ASSERT(isfinite(d[0]) && (d[0] > 60000.0f));
    /* AVG: scale 1/p gives the mean */
    TERSE_TEST_OK(ops->decompress(ctx, sum, bytes, 0.25f, &out, NULL));
    CU_ASSERT_EQUAL(d[5], terse__half_to_float(sum[5]) * (4.0f * 0.25f));
    ops->destroy(ctx);
}

static void
test_cast_nonfinite(void)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("cast");
    const size_t n = 1500;
    float x[1500], r[1500], d[1500];
    uint16_t p[1500];
    int kind;
    size_t i;

    for (kind = 0; kind < 2; ++kind) {
        void *ctx = cs_make(kind, n, 2);
        terse_buf_t in = {x, n, TERSE_FLOAT32, TERSE_MEM_HOST};
        terse_buf_t out = {d, n, TERSE_FLOAT32, TERSE_MEM_HOST};
        uint32_t flags;
        double sq;
        int ok = 1;

        terse_test_gaussian(9, x, n);
        x[1234] = (kind == 0) ? NAN : -INFINITY;
        for (i = 0; i < n; ++i) {
            r[i] = 1.0f;
        }
        TERSE_TEST_OK(ops->compress(ctx, &in, r, NULL, p, 2 * n, &flags, &sq, NULL));
        CU_ASSERT_EQUAL(flags, TERSE_CMP_NONFINITE);
        CU_ASSERT(!(sq < INFINITY));
        for (i = 0; i < n; ++i) {
            ok &= (r[i] == 0.0f);
            /* NaN survives a sum with any finite payload */
            ok &= isnan(kind ? terse__half_to_float(cs_hadd(p[i], 0x3c00u))
                             : terse_bf16_to_float(p[i]) + 1.0f);
        }
        CU_ASSERT(ok);
        TERSE_TEST_OK(ops->decompress(ctx, p, 2 * n, 1.0f, &out, NULL));
        for (i = 0; i < n; ++i) {
            ok &= isnan(d[i]);
        }
        CU_ASSERT(ok);
        ops->destroy(ctx);
    }
}

/* sizes 0, 1, odd; fp16/bf16 input; fp16/bf16 output; unaligned payload */
static void
test_cast_sizes_dtypes(void)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("cast");
    static const size_t sizes[] = {0, 1, 3, 511, 513};
    float x[513], xf[513], d[513];
    uint16_t h[513], ho[513], ref[513];
    uint8_t p32[1100], p16[1100];
    size_t zi, i;
    int kind;

    terse_test_gaussian(77, x, 513);
    for (kind = 0; kind < 2; ++kind) {
        for (zi = 0; zi < 5; ++zi) {
            size_t n = sizes[zi];
            void *ctx = cs_make(kind, 513, 1);
            terse_dtype_t dt = kind ? TERSE_FLOAT16 : TERSE_BFLOAT16;
            terse_buf_t in16 = {h, n, dt, TERSE_MEM_HOST};
            terse_buf_t in32 = {xf, n, TERSE_FLOAT32, TERSE_MEM_HOST};
            terse_buf_t o16 = {ho, n, dt, TERSE_MEM_HOST};
            terse_buf_t o32 = {d, n, TERSE_FLOAT32, TERSE_MEM_HOST};
            uint32_t flags;

            terse__convert_from_f32(x, 1.0f, h, dt, n);
            terse__convert_to_f32(h, dt, xf, n);
            TERSE_TEST_OK(ops->compress(ctx, &in16, NULL, NULL, p16 + 1, 2 * n, &flags, NULL,
                                        NULL));
            TERSE_TEST_OK(ops->compress(ctx, &in32, NULL, NULL, p32, 2 * n, &flags, NULL, NULL));
            CU_ASSERT(memcmp(p16 + 1, p32, 2 * n) == 0);
            TERSE_TEST_OK(ops->decompress(ctx, p16 + 1, 2 * n, 1.0f, &o32, NULL));
            TERSE_TEST_OK(ops->decompress(ctx, p16 + 1, 2 * n, 1.0f, &o16, NULL));
            terse__convert_from_f32(d, 1.0f, ref, dt, n);
            CU_ASSERT(memcmp(ho, ref, 2 * n) == 0);
            for (i = 0; i < n; ++i) {
                CU_ASSERT_EQUAL(d[i], xf[i]); /* a 16-bit input casts exactly (p = 1) */
            }
            ops->destroy(ctx);
        }
    }
}

/* fp16 payloads equal terse__float_to_half on every fp16 value, every tie between neighbours,
 * and values just off the ties (the kernels may convert with F16C): p = 1, no saturation. */
static void
test_cast_fp16_exact(void)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("cast");
    const size_t n = 3 * 0x7c00;
    float *x = malloc(n * sizeof(float)), *d = malloc(n * sizeof(float));
    uint16_t *p = malloc(n * sizeof(uint16_t));
    void *ctx = cs_make(TERSE_CAST_FP16, n, 1);
    terse_buf_t in = {x, n, TERSE_FLOAT32, TERSE_MEM_HOST};
    terse_buf_t out = {d, n, TERSE_FLOAT32, TERSE_MEM_HOST};
    uint32_t flags, h;
    size_t i;
    int ok = 1, isa;

    for (h = 0; h < 0x7c00u; ++h) {
        float a = terse__half_to_float((uint16_t)h);
        float b = terse__half_to_float((uint16_t)(h + 1)); /* 0x7c00: Inf, beyond the clip */
        float mid = (h + 1 < 0x7c00u) ? a + (b - a) * 0.5f : a;
        x[3 * h]     = ((h % 2) ? -1.0f : 1.0f) * a;
        x[3 * h + 1] = ((h % 3) ? -1.0f : 1.0f) * mid;
        x[3 * h + 2] = nextafterf(mid, (h % 5) ? 0.0f : 1e9f);
    }
    for (isa = 2; isa >= 0; --isa) {
        terse__quant_isa_max = isa;
        TERSE_TEST_OK(ops->compress(ctx, &in, NULL, NULL, p, 2 * n, &flags, NULL, NULL));
        TERSE_TEST_OK(ops->decompress(ctx, p, 2 * n, 1.0f, &out, NULL));
        for (i = 0; i < n; ++i) {
            ok &= (p[i] == terse__float_to_half(x[i]));
            ok &= (d[i] == terse__half_to_float(p[i]));
        }
        CU_ASSERT(ok);
    }
    terse__quant_isa_max = 2;
    free(x);
    free(d);
    free(p);
    ops->destroy(ctx);
}

static void
test_cast_params(void)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("cast");
    terse_cmp_spec_t spec, back;
    char buf[64];
    double p;

    TERSE_TEST_OK(ops->param_parse("bf16", &p));
    CU_ASSERT_EQUAL(p, TERSE_CAST_BF16);
    TERSE_TEST_OK(ops->param_parse(NULL, &p));
    CU_ASSERT_EQUAL(p, TERSE_CAST_BF16);
    TERSE_TEST_OK(ops->param_parse("fp16", &p));
    CU_ASSERT_EQUAL(p, TERSE_CAST_FP16);
    TERSE_TEST_STATUS(ops->param_parse("fp8", &p), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(ops->param_parse("2", &p), TERSE_ERR_INVALID);
    /* the formatted spec parses back to the same parameter */
    TERSE_TEST_OK(terse__cmp_spec_parse("cast:fp16", &spec, NULL, 0));
    terse__cmp_spec_format(spec.ops, spec.param, buf, sizeof(buf));
    TERSE_TEST_OK(terse__cmp_spec_parse(buf, &back, NULL, 0));
    CU_ASSERT_EQUAL(back.param, TERSE_CAST_FP16);
    CU_ASSERT_EQUAL(terse__cast_sum_dtype(TERSE_CAST_FP16), TERSE_FLOAT16);
    CU_ASSERT_EQUAL(terse__cast_sum_dtype(TERSE_CAST_BF16), TERSE_BFLOAT16);
    CU_ASSERT((ops->caps & TERSE_CMP_CAP_SUMMABLE) != 0);
}

static CU_TestInfo cast_tests[] = {
    {"bf16", test_cast_bf16},
    {"fp16 saturation bound", test_cast_fp16_clip},
    {"fp16 pre-scaled sums", test_cast_fp16},
    {"non-finite input", test_cast_nonfinite},
    {"sizes and dtypes", test_cast_sizes_dtypes},
    {"fp16 conversion is exact on every kernel", test_cast_fp16_exact},
    {"parameters", test_cast_params},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_cast_suites[] = {
    {"compressors/cast", NULL, NULL, NULL, NULL, cast_tests},
    CU_SUITE_INFO_NULL,
};
