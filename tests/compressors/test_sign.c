/* compressors/sign.c: a bit-exact reference of quant.h's sign formula (the 32-lane sum order,
 * bit packing) on every CPU kernel version, the sign of zero, the L1-preserving scale, and
 * error feedback on real gradients. Bad payloads, sizes, alignment, dtypes, ranges and
 * non-finite inputs are covered for sign by test_quant.c's shared cases. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "compressor.h"
#include "quant.h"

static void *
sg_make(size_t count, uint32_t bucket)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("sign");
    terse_cmp_params_t p;
    void *ctx = NULL;

    memset(&p, 0, sizeof(p));
    p.size   = sizeof(p);
    p.count  = count;
    p.dtype  = TERSE_FLOAT32;
    p.mem    = TERSE_MEM_HOST;
    p.bucket = bucket;
    CU_ASSERT_FATAL(ops != NULL);
    CU_ASSERT_FATAL(ops->create(&p, &ctx) == TERSE_OK);
    return ctx;
}

/* From quant.h's comment, scalar: lane sums, shfl_down tree, division, bit = v < 0. */
static uint8_t *
sg_reference(const float *v, size_t n, size_t bucket, float *decoded)
{
    size_t bytes = terse_quant_payload_bytes(n, 1, bucket, 4);
    size_t nb = (n + bucket - 1) / bucket, k, i, l, w;
    uint8_t *p = calloc(1, bytes);
    uint8_t *codes = p + 24 + nb * 4;
    uint32_t magic = TERSE_QUANT_MAGIC, b32 = (uint32_t)bucket;
    uint64_t n64 = n;

    memcpy(p, &magic, 4);
    p[4] = TERSE_QUANT_VERSION;
    p[5] = TERSE_QUANT_FAMILY_SIGN;
    p[6] = 1;
    memcpy(p + 8, &b32, 4);
    memcpy(p + 16, &n64, 8);
    for (k = 0; k < nb; ++k) {
        size_t s = k * bucket, m = (n - s < bucket) ? n - s : bucket;
        float lane[32] = {0}, scale;
        for (i = 0; i < m; ++i) {
            lane[i % 32] += fabsf(v[s + i]);
        }
        for (w = 16; w >= 1; w /= 2) {
            for (l = 0; l < w; ++l) {
                lane[l] += lane[l + w];
            }
        }
        scale = lane[0] / (float)m;
        memcpy(p + 24 + k * 4, &scale, 4);
        for (i = 0; i < m; ++i) {
            size_t bit = s + i;
            int neg    = v[s + i] < 0.0f;
            decoded[s + i] = neg ? -scale : scale;
            if (neg) {
                codes[bit / 8] |= (uint8_t)(1u << (bit % 8));
            }
        }
    }
    return p;
}

static void
test_sign_reference(void)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("sign");
    static const size_t sizes[] = {1, 5, 32, 33, 500, 1024, 3001};
    static const uint32_t buckets[] = {32, 160, 512, 1024};
    size_t si, bi, i;
    int isa;

    for (si = 0; si < 7; ++si) {
        for (bi = 0; bi < 4; ++bi) {
            size_t n = sizes[si], bytes;
            void *ctx = sg_make(n, buckets[bi]);
            float *x = malloc(n * 4), *dref = malloc(n * 4), *d = malloc(n * 4);
            terse_buf_t in = {x, n, TERSE_FLOAT32, TERSE_MEM_HOST};
            terse_buf_t out = {d, n, TERSE_FLOAT32, TERSE_MEM_HOST};
            uint8_t *ref, *got;

            terse_test_gaussian(200 + n, x, n);
            for (i = 0; i < n; i += 7) {
                x[i] = (i % 2) ? 0.0f : -0.0f; /* zeros of both signs decode to + */
            }
            ref = sg_reference(x, n, buckets[bi], dref);
            TERSE_TEST_OK(ops->payload_size(ctx, n, 0, &bytes));
            got = malloc(bytes);
            for (isa = TERSE_QUANT_ISA_AVX512; isa >= TERSE_QUANT_ISA_BASE; --isa) {
                uint32_t flags = 7;
                double sq = -1.0;
                terse__quant_isa_max = isa;
                TERSE_TEST_OK(ops->compress(ctx, &in, NULL, NULL, got, bytes, &flags, &sq, NULL));
                CU_ASSERT_EQUAL(flags, 0);
                CU_ASSERT(memcmp(got, ref, bytes) == 0);
                TERSE_TEST_OK(ops->decompress(ctx, got, bytes, 1.0f, &out, NULL));
                CU_ASSERT(memcmp(d, dref, n * 4) == 0);
                TERSE_TEST_NEAR(sq, terse_test_sq_diff(x, d, n), 1e-9 * sq + 1e-30);
            }
            terse__quant_isa_max = TERSE_QUANT_ISA_AVX512;
            for (i = 0; i < n; i += 7) {
                CU_ASSERT(d[i] >= 0.0f);
            }
            free(ref);
            free(got);
            free(x);
            free(dref);
            free(d);
            ops->destroy(ctx);
        }
    }
}

/* The scale keeps each bucket's L1 norm: sum |decoded| == sum |v| (to float rounding). */
static void
test_sign_l1(void)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("sign");
    const size_t n = 2000, bucket = 512;
    float x[2000], d[2000];
    void *ctx = sg_make(n, bucket);
    terse_buf_t in = {x, n, TERSE_FLOAT32, TERSE_MEM_HOST};
    terse_buf_t out = {d, n, TERSE_FLOAT32, TERSE_MEM_HOST};
    uint8_t payload[4096];
    size_t bytes, k, i;
    uint32_t flags;

    terse_test_gaussian(31, x, n);
    for (i = 0; i < n; ++i) {
        x[i] = x[i] * (float)(1 + i / 512) + 0.3f; /* scales and means differ per bucket */
    }
    TERSE_TEST_OK(ops->payload_size(ctx, n, 0, &bytes));
    TERSE_TEST_OK(ops->compress(ctx, &in, NULL, NULL, payload, bytes, &flags, NULL, NULL));
    TERSE_TEST_OK(ops->decompress(ctx, payload, bytes, 1.0f, &out, NULL));
    for (k = 0; k * bucket < n; ++k) {
        double a = 0, b = 0;
        for (i = k * bucket; (i < n) && (i < (k + 1) * bucket); ++i) {
            a += fabs(x[i]);
            b += fabs(d[i]);
            CU_ASSERT((d[i] < 0) == (x[i] < 0));
        }
        TERSE_TEST_NEAR(a, b, 1e-5 * a);
    }
    ops->destroy(ctx);
}

/* EF-signSGD: with feedback the delivered sum tracks the input sum; without, sign's bias
 * accumulates. */
static void
test_sign_feedback(void)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("sign");
    size_t rows, cols, n, i, t;
    float *g0 = terse_test_load_named_gradient("body.layers.6.self_attn.out_proj.weight", 300,
                                               &rows, &cols);
    float *g1 = terse_test_load_named_gradient("body.layers.6.self_attn.out_proj.weight", 301,
                                               &rows, &cols);
    float *res, *d, *dn;
    double *sin, *sout, *soutn, gap = 0, gapn = 0, norm = 0, sq = 0;
    size_t bytes;
    uint8_t *payload;
    void *ctx;

    CU_ASSERT_FATAL((g0 != NULL) && (g1 != NULL));
    n = 262144; /* a quarter of the matrix keeps the suite fast */
    ctx = sg_make(n, 0);
    TERSE_TEST_OK(ops->payload_size(ctx, n, 0, &bytes));
    payload = malloc(bytes);
    res = calloc(n, 4);
    d = malloc(n * 4);
    dn = malloc(n * 4);
    sin = calloc(n, 8);
    sout = calloc(n, 8);
    soutn = calloc(n, 8);
    for (t = 0; t < 50; ++t) {
        float *g = (t % 2) ? g1 : g0;
        terse_buf_t in = {g, n, TERSE_FLOAT32, TERSE_MEM_HOST};
        terse_buf_t o1 = {d, n, TERSE_FLOAT32, TERSE_MEM_HOST};
        terse_buf_t o2 = {dn, n, TERSE_FLOAT32, TERSE_MEM_HOST};
        uint32_t flags;
        TERSE_TEST_OK(ops->compress(ctx, &in, res, NULL, payload, bytes, &flags, &sq, NULL));
        TERSE_TEST_OK(ops->decompress(ctx, payload, bytes, 1.0f, &o1, NULL));
        TERSE_TEST_OK(ops->compress(ctx, &in, NULL, NULL, payload, bytes, &flags, NULL, NULL));
        TERSE_TEST_OK(ops->decompress(ctx, payload, bytes, 1.0f, &o2, NULL));
        for (i = 0; i < n; ++i) {
            sin[i] += g[i];
            sout[i] += d[i];
            soutn[i] += dn[i];
        }
    }
    for (i = 0; i < n; ++i) {
        gap += (sin[i] - sout[i]) * (sin[i] - sout[i]);
        gapn += (sin[i] - soutn[i]) * (sin[i] - soutn[i]);
        norm += sin[i] * sin[i];
    }
    gap = sqrt(gap);
    gapn = sqrt(gapn);
    if (terse_test_verbose()) {
        printf("sign gap with feedback %.3g (last error %.3g), without %.3g, |sum| %.3g\n", gap,
               sqrt(sq), gapn, sqrt(norm));
    }
    TERSE_TEST_NEAR(gap, sqrt(terse_test_sq_norm(res, n)), 1e-3 * gap);
    TERSE_TEST_NEAR(gap, sqrt(sq), 0.02 * gap);
    CU_ASSERT(3.0 * gap < gapn);
    free(g0);
    free(g1);
    free(payload);
    free(res);
    free(d);
    free(dn);
    free(sin);
    free(sout);
    free(soutn);
    ops->destroy(ctx);
}

static void
test_sign_params(void)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("sign");
    double p = -1;
    char buf[32];

    TERSE_TEST_OK(ops->param_parse(NULL, &p));
    CU_ASSERT_EQUAL(p, 0.0);
    TERSE_TEST_STATUS(ops->param_parse("1", &p), TERSE_ERR_INVALID);
    CU_ASSERT((ops->caps & TERSE_CMP_CAP_REQUANT) != 0);
    CU_ASSERT((ops->caps & TERSE_CMP_CAP_SUMMABLE) == 0);
    CU_ASSERT(ops->decompress_add != NULL);
    terse__cmp_spec_format(ops, 0, buf, sizeof(buf));
    CU_ASSERT_STRING_EQUAL(buf, "sign");
}

static CU_TestInfo sign_tests[] = {
    {"reference (bit-exact, every ISA)", test_sign_reference},
    {"scale keeps the L1 norm", test_sign_l1},
    {"error feedback on real gradients", test_sign_feedback},
    {"parameters", test_sign_params},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_sign_suites[] = {
    {"compressors/sign", NULL, NULL, NULL, NULL, sign_tests},
    CU_SUITE_INFO_NULL,
};
