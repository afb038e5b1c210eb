/* compressors/randomk_cuda.cu and cast_cuda.cu (label gpu): the summable families against the
 * CPU reference, bit for bit (payload, residual, decompress) on fp32/fp16/bf16 inputs, odd and
 * tiny sizes, non-finite inputs, and payloads of the wrong size (NaN output). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "terse_test_cuda.h"
#include "cast.h"
#include "cast_cuda.h"
#include "compressor.h"
#include "cuda_util.h"
#include "randomk_cuda.h"
#include "topk.h"

static float sc_sigma = 1.0f; /* input scale of sc_case */

/* family "randomk" (param density) or "cast" (param kind, nranks p). */
static void
sc_case(const char *family, double param, int nranks, size_t n, terse_dtype_t dt, int with_res,
        int inject, uint64_t seed)
{
    const terse_cmp_ops_t *ops = terse__cmp_find(family);
    const int is_cast = (strcmp(family, "cast") == 0);
    terse_cmp_params_t p;
    void *ctx = NULL, *cuda = NULL, *in, *d_in, *d_out, *d_dec, *dec_c, *dec_g;
    float *res_c = NULL, *res_g = NULL, *d_res = NULL;
    uint8_t *pay_c, *pay_g;
    size_t bytes = 0, k = 0;
    uint32_t flags_c = 0, flags_g = 0;
    double err_c = 0.0, err_g = 0.0;
    terse_buf_t buf, ob;
    terse_rng_t rng = terse_rng_make(seed, TERSE_RNG_RANDOMK, 4, 6, TERSE_RNG_SHARED);
    int fail = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ops);
    memset(&p, 0, sizeof(p));
    p.size   = sizeof(p);
    p.param  = param;
    p.layer  = 4;
    p.count  = n;
    p.dtype  = dt;
    p.mem    = TERSE_MEM_HOST;
    p.nranks = nranks;
    p.seed   = seed;
    TERSE_TEST_OK(ops->create(&p, &ctx));
    TERSE_TEST_OK(ops->payload_size(ctx, n, 0, &bytes));
    if (is_cast) {
        TERSE_TEST_OK(terse__cmp_cast_cuda_create((int)param, nranks, &cuda));
    } else {
        k = terse_topk_k(param, n);
        CU_ASSERT_EQUAL_FATAL(bytes, k * sizeof(float));
        TERSE_TEST_OK(terse__cmp_randomk_cuda_create(n, k, &cuda));
    }
    in = terse_test_input(seed, n, dt, sc_sigma, inject);
    if (with_res) {
        res_c = terse_test_input(seed + 1, n, TERSE_FLOAT32, 0.3f, 0);
        res_g = malloc((n + 1) * sizeof(float));
        d_res = terse_test_cuda_dev(res_c, n * sizeof(float));
    }
    pay_c = malloc(bytes + 1);
    pay_g = malloc(bytes + 1);
    d_in  = terse_test_cuda_dev(in, n * terse_dtype_size(dt));
    d_out = terse_test_cuda_dev(NULL, bytes);
    buf.ptr   = in;
    buf.count = n;
    buf.dtype = dt;
    buf.mem   = TERSE_MEM_HOST;
    TERSE_TEST_OK(ops->compress(ctx, &buf, res_c, &rng, pay_c, bytes, &flags_c, &err_c, NULL));
    if (is_cast) {
        TERSE_TEST_OK(terse__cmp_cast_cuda_compress(cuda, d_in, dt, n, d_res, &rng, d_out, bytes,
                                                    NULL, NULL, NULL));
        TERSE_TEST_OK(terse__cmp_cast_cuda_stat(cuda, NULL, &flags_g, &err_g));
    } else {
        TERSE_TEST_OK(terse__cmp_randomk_cuda_compress(cuda, d_in, dt, n, d_res, &rng, d_out,
                                                       bytes, NULL, NULL, NULL));
        TERSE_TEST_OK(terse__cmp_randomk_cuda_stat(cuda, NULL, &flags_g, &err_g));
    }
    terse_test_cuda_get(pay_g, d_out, bytes);
    /* randomk leaves the payload unspecified on a non-finite input (the sentinel carries it) */
    if (!is_cast && (flags_c & TERSE_CMP_NONFINITE)) {
        CU_ASSERT(terse_test_all_nan(pay_g, TERSE_FLOAT32, k)); /* the sum carries the flag */
    } else if (memcmp(pay_c, pay_g, bytes) != 0) {
        fprintf(stderr, "payload differs\n");
        fail = 1;
    }
    if (with_res) {
        terse_test_cuda_get(res_g, d_res, n * sizeof(float));
        if (memcmp(res_c, res_g, n * sizeof(float)) != 0) {
            fprintf(stderr, "residual differs\n");
            fail = 1;
        }
    }
    CU_ASSERT_EQUAL(flags_c & TERSE_CMP_NONFINITE, flags_g & TERSE_CMP_NONFINITE);
    if (isfinite(err_c)) {
        /* randomk: total - sent in double; the GPU sums in another order */
        TERSE_TEST_NEAR(err_g, err_c, 1e-9 * (err_c + 1e-30) + (is_cast ? 0.0 : 1e-6));
    } else {
        CU_ASSERT(isinf(err_g));
    }
    if (fail) {
        fprintf(stderr, "case: %s param %g p %d n %zu dtype %d res %d inject %d\n", family, param,
                nranks, n, (int)dt, with_res, inject);
    }
    CU_ASSERT(!fail);

    /* decompress of the CPU payload (as if summed), scale 0.5, into the input's dtype */
    dec_c    = malloc(n * terse_dtype_size(dt) + 4);
    dec_g    = malloc(n * terse_dtype_size(dt) + 4);
    d_dec    = terse_test_cuda_dev(NULL, n * terse_dtype_size(dt));
    ob.ptr   = dec_c;
    ob.count = n;
    ob.dtype = dt;
    ob.mem   = TERSE_MEM_HOST;
    TERSE_TEST_OK(ops->decompress(ctx, pay_c, bytes, 0.5f, &ob, NULL));
    CU_ASSERT_FATAL(terse__cuda_memcpy(d_out, pay_c, bytes) == TERSE_OK);
    if (is_cast) {
        TERSE_TEST_OK(terse__cmp_cast_cuda_decompress(cuda, d_out, bytes, 0.5f, d_dec, dt, n,
                                                      NULL));
    } else {
        TERSE_TEST_OK(terse__cmp_randomk_cuda_decompress(cuda, d_out, bytes, 0.5f, d_dec, dt, n,
                                                         NULL));
    }
    terse_test_cuda_get(dec_g, d_dec, n * terse_dtype_size(dt));
    CU_ASSERT(memcmp(dec_c, dec_g, n * terse_dtype_size(dt)) == 0);
    /* a payload of the wrong size: TERSE_ERR_PAYLOAD, device flag, NaN output */
    if (n > 0) {
        uint32_t flags = 0;
        if (is_cast) {
            TERSE_TEST_STATUS(terse__cmp_cast_cuda_decompress(cuda, d_out, bytes - 2, 1.0f, d_dec,
                                                              dt, n, NULL),
                              TERSE_ERR_PAYLOAD);
            TERSE_TEST_OK(terse__cmp_cast_cuda_stat(cuda, NULL, &flags, NULL));
        } else {
            TERSE_TEST_STATUS(terse__cmp_randomk_cuda_decompress(cuda, d_out, bytes + 4, 1.0f,
                                                                 d_dec, dt, n, NULL),
                              TERSE_ERR_PAYLOAD);
            TERSE_TEST_OK(terse__cmp_randomk_cuda_stat(cuda, NULL, &flags, NULL));
        }
        CU_ASSERT(flags & TERSE_CU_ERR_PAYLOAD);
        terse_test_cuda_get(dec_g, d_dec, n * terse_dtype_size(dt));
        CU_ASSERT(terse_test_all_nan(dec_g, dt, n));
    }
    terse__cuda_free(d_dec);
    terse__cuda_free(d_in);
    terse__cuda_free(d_out);
    terse__cuda_free(d_res);
    free(dec_c);
    free(dec_g);
    free(in);
    free(res_c);
    free(res_g);
    free(pay_c);
    free(pay_g);
    if (is_cast) {
        terse__cmp_cast_cuda_destroy(cuda);
    } else {
        terse__cmp_randomk_cuda_destroy(cuda);
    }
    ops->destroy(ctx);
}

static const terse_dtype_t sc_dts[] = {TERSE_FLOAT32, TERSE_FLOAT16, TERSE_BFLOAT16};

static void
test_cast_parity(void)
{
    static const size_t sizes[] = {0, 1, 31, 33, 1000003};
    size_t s, d;

    for (s = 0; s < 5; ++s) {
        for (d = 0; d < 3; ++d) {
            sc_case("cast", TERSE_CAST_BF16, 2, sizes[s], sc_dts[d], (int)((s + d) % 2), 0,
                    40 + s * 3 + d);
            sc_case("cast", TERSE_CAST_FP16, 1, sizes[s], sc_dts[d], (int)((s + d + 1) % 2), 0,
                    60 + s * 3 + d);
            sc_case("cast", TERSE_CAST_FP16, 3, sizes[s], sc_dts[d], 1, 0, 80 + s * 3 + d);
        }
    }
}

static void
test_cast_saturation(void)
{
    /* fp16 with p = 3 ranks clips |v / 3| at about 21800: inputs of sigma 1e5 saturate often;
     * what the clip cuts goes to the residual, bit for bit as on the CPU */
    sc_sigma = 1e5f;
    sc_case("cast", TERSE_CAST_FP16, 3, 100003, TERSE_FLOAT32, 1, 0, 5);
    sc_case("cast", TERSE_CAST_FP16, 1, 100003, TERSE_BFLOAT16, 1, 0, 6);
    sc_sigma = 1.0f;
}

static void
test_cast_nonfinite(void)
{
    sc_case("cast", TERSE_CAST_BF16, 1, 100003, TERSE_FLOAT32, 1, 1, 90);
    sc_case("cast", TERSE_CAST_FP16, 2, 1000, TERSE_FLOAT16, 0, 2, 91);
}

static void
test_randomk_parity(void)
{
    static const size_t sizes[]     = {1, 31, 33, 1000003};
    static const double densities[] = {0.001, 0.1, 1.0};
    size_t s, q, d;

    for (s = 0; s < 4; ++s) {
        for (q = 0; q < 3; ++q) {
            for (d = 0; d < 3; ++d) {
                sc_case("randomk", densities[q], 1, sizes[s], sc_dts[d], (int)((s + q + d) % 2),
                        0, 200 + s * 11 + q * 3 + d);
            }
        }
    }
}

static void
test_randomk_nonfinite(void)
{
    sc_case("randomk", 0.01, 1, 100003, TERSE_FLOAT32, 1, 1, 95);
    sc_case("randomk", 0.5, 1, 1000, TERSE_BFLOAT16, 0, 2, 96);
}

/* Tables: layers of both kinds (fp16 with p = 3), dtypes, odd sizes, a gradient at an
 * unaligned offset and a non-finite layer, the gradient and the output given as offsets from a
 * moving base; payloads, residuals and outputs bit for bit the one-layer launches'. */
#define SC_NT 5

static void
test_cast_table(void)
{
    static const size_t ns[SC_NT] = {1, 2049, 7, 70001, 4096};
    static const int kinds[SC_NT] = {TERSE_CAST_BF16, TERSE_CAST_FP16, TERSE_CAST_BF16,
                                     TERSE_CAST_FP16, TERSE_CAST_BF16};
    static const terse_dtype_t dts[SC_NT] = {TERSE_FLOAT32, TERSE_FLOAT16, TERSE_BFLOAT16,
                                             TERSE_FLOAT32, TERSE_FLOAT32};
    terse_cu_clayer_t C[SC_NT], D[SC_NT], two[2];
    void *cuda[SC_NT], *in_h[SC_NT], *tc = NULL, *td = NULL, *tx = NULL;
    float *res_h[SC_NT], *res_t[SC_NT], *res_r[SC_NT];
    uint8_t *pay_t[SC_NT], *pay_r[SC_NT], *out_r[SC_NT], *ub, *base, *obase;
    size_t off[SC_NT], ooff[SC_NT], total = 0, ototal = 0;
    int l;

    memset(C, 0, sizeof(C));
    memset(D, 0, sizeof(D));
    for (l = 0; l < SC_NT; ++l) {
        const size_t es = terse_dtype_size(dts[l]);
        off[l]   = ((total + 15) & ~(size_t)15) + ((l == 3) ? 4 : 0);
        total    = off[l] + ns[l] * es;
        ooff[l]  = ((ototal + 15) & ~(size_t)15) + ((l == 1) ? 2 : 0);
        ototal   = ooff[l] + ns[l] * es;
        TERSE_TEST_OK(terse__cmp_cast_cuda_create(kinds[l], (kinds[l] == TERSE_CAST_FP16) ? 3 : 1,
                                                  &cuda[l]));
        in_h[l]  = terse_test_input(40 + (uint64_t)l, ns[l], dts[l], 1.0f, (l == 2) ? 1 : 0);
        res_h[l] = terse_test_input(50 + (uint64_t)l, ns[l], TERSE_FLOAT32, 0.01f, 0);
        res_t[l] = terse_test_cuda_dev(res_h[l], ns[l] * sizeof(float));
        res_r[l] = terse_test_cuda_dev(res_h[l], ns[l] * sizeof(float));
        pay_t[l] = terse_test_cuda_dev(NULL, ns[l] * 2);
        pay_r[l] = terse_test_cuda_dev(NULL, ns[l] * 2);
        out_r[l] = terse_test_cuda_dev(NULL, ns[l] * es);
    }
    ub = calloc(total, 1);
    for (l = 0; l < SC_NT; ++l) {
        memcpy(ub + off[l], in_h[l], ns[l] * terse_dtype_size(dts[l]));
    }
    base  = terse_test_cuda_dev(ub, total);
    obase = terse_test_cuda_dev(NULL, ototal);
    for (l = 0; l < SC_NT; ++l) {
        TERSE_TEST_OK(terse__cmp_cast_cuda_compress(cuda[l], base + off[l], dts[l], ns[l],
                                                    res_r[l], NULL, pay_r[l], ns[l] * 2, NULL,
                                                    NULL, NULL));
        TERSE_TEST_OK(terse__cmp_cast_cuda_decompress(cuda[l], pay_r[l], ns[l] * 2, 0.5f,
                                                      out_r[l], dts[l], ns[l], NULL));
        C[l] = (terse_cu_clayer_t){cuda[l], (const void *)(uintptr_t)off[l], res_t[l], pay_t[l],
                                   NULL, ns[l], dts[l], 1.0f, TERSE_CU_CUSER_IN};
        D[l] = (terse_cu_clayer_t){cuda[l], NULL, NULL, pay_r[l],
                                   (void *)(uintptr_t)ooff[l], ns[l], dts[l], 0.5f,
                                   TERSE_CU_CUSER_OUT};
    }
    TERSE_TEST_OK(terse__cmp_cast_cuda_table_create(C, SC_NT, 0, &tc));
    TERSE_TEST_OK(terse__cmp_cast_cuda_table_create(D, SC_NT, 1, &td));
    TERSE_TEST_OK(terse__cmp_cast_cuda_table_run(tc, base, NULL));
    TERSE_TEST_OK(terse__cmp_cast_cuda_table_run(td, obase, NULL));
    for (l = 0; l < SC_NT; ++l) {
        const size_t ob = ns[l] * terse_dtype_size(dts[l]);
        uint8_t *a = malloc(ob + 2 * ns[l] + 8), *b = malloc(ob + 2 * ns[l] + 8);
        float *ra = malloc(ns[l] * sizeof(float)), *rb = malloc(ns[l] * sizeof(float));
        terse_test_cuda_get(a, pay_t[l], ns[l] * 2);
        terse_test_cuda_get(b, pay_r[l], ns[l] * 2);
        CU_ASSERT(memcmp(a, b, ns[l] * 2) == 0);
        terse_test_cuda_get(ra, res_t[l], ns[l] * sizeof(float));
        terse_test_cuda_get(rb, res_r[l], ns[l] * sizeof(float));
        CU_ASSERT(memcmp(ra, rb, ns[l] * sizeof(float)) == 0);
        terse_test_cuda_get(a, obase + ooff[l], ob);
        terse_test_cuda_get(b, out_r[l], ob);
        if (memcmp(a, b, ob) != 0) {
            fprintf(stderr, "cast table layer %d: decompressed output differs\n", l);
            CU_FAIL("cast table decompress");
        }
        if (l == 2) { /* the non-finite layer: NaN payload, residual reset, as one layer */
            CU_ASSERT(terse_test_all_nan(b, dts[l], ns[l]));
        }
        free(a);
        free(b);
        free(ra);
        free(rb);
    }
    two[0] = C[0];
    two[1] = C[0];
    CU_ASSERT_EQUAL(terse__cmp_cast_cuda_table_create(two, 2, 0, &tx), TERSE_ERR_INVALID);
    terse__cmp_cast_cuda_table_destroy(tc);
    terse__cmp_cast_cuda_table_destroy(td);
    for (l = 0; l < SC_NT; ++l) {
        terse__cuda_free(res_t[l]);
        terse__cuda_free(res_r[l]);
        terse__cuda_free(pay_t[l]);
        terse__cuda_free(pay_r[l]);
        terse__cuda_free(out_r[l]);
        terse__cmp_cast_cuda_destroy(cuda[l]);
        free(in_h[l]);
        free(res_h[l]);
    }
    terse__cuda_free(base);
    terse__cuda_free(obase);
    free(ub);
}

static CU_TestInfo sum_cuda_tests[] = {
    {"cast parity", test_cast_parity},
    {"cast fp16 saturation", test_cast_saturation},
    {"cast non-finite", test_cast_nonfinite},
    {"randomk parity", test_randomk_parity},
    {"randomk non-finite", test_randomk_nonfinite},
    {"cast tables over moving buffers", test_cast_table},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_summable_cuda_suites[] = {
    {"summable_cuda", NULL, NULL, NULL, NULL, sum_cuda_tests},
    CU_SUITE_INFO_NULL,
};
