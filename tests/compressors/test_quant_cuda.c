/* compressors/quant_cuda.cu (label gpu): quant and sign kernels against the CPU reference, bit
 * for bit (payload, residual, decompress, decompress_add) for fp32/fp16/bf16 inputs, odd and
 * tiny sizes, sub-range offsets, buckets that do not fit the register cache; non-finite
 * inputs; corrupted payloads (device flag, NaN output); the multi-tensor table. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "terse_test_cuda.h"
#include "compressor.h"
#include "cuda_util.h"
#include "quant.h"
#include "quant_cuda.h"
#include "sign_cuda.h"

static int
qc_all_nan(const float *x, size_t n)
{
    size_t i;

    for (i = 0; i < n; ++i) {
        if (!isnan(x[i])) {
            return 0;
        }
    }
    return 1;
}

/* One compress/decompress/decompress_add round on CPU and GPU; asserts bit equality. */
static void
qc_case(int sign, unsigned bits, uint32_t bucket, size_t n, terse_dtype_t dt, int with_res,
        uint64_t offset, int inject, uint64_t seed)
{
    const terse_cmp_ops_t *ops = terse__cmp_find(sign ? "sign" : "quant");
    terse_cmp_params_t p;
    void *ctx = NULL, *cuda = NULL, *in, *d_in, *d_out, *d_dec;
    float *res_c = NULL, *res_g = NULL, *d_res = NULL, *dec_c, *dec_g, *acc_c, *acc_g, *d_acc;
    uint8_t *pay_c, *pay_g;
    size_t bytes = 0;
    uint32_t flags_c = 0, flags_g = 0;
    double err_c = 0.0, err_g = 0.0;
    terse_buf_t buf;
    terse_rng_t rng = terse_rng_make(seed, TERSE_RNG_QUANT, 5, 9, 2);
    int fail = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ops);
    memset(&p, 0, sizeof(p));
    p.size   = sizeof(p);
    p.param  = sign ? 0.0 : (double)bits;
    p.count  = n + 1;
    p.dtype  = dt;
    p.mem    = TERSE_MEM_HOST;
    p.bucket = bucket;
    p.nranks = 1;
    TERSE_TEST_OK(ops->create(&p, &ctx));
    TERSE_TEST_OK(ops->payload_size(ctx, n, 0, &bytes));
    if (sign) {
        TERSE_TEST_OK(terse__cmp_sign_cuda_create(bucket, &cuda));
    } else {
        TERSE_TEST_OK(terse__cmp_quant_cuda_create(TERSE_QUANT_FAMILY_QUANT, bits, bucket, &cuda));
    }
    rng.offset = offset;
    in         = terse_test_input(seed, n, dt, 1.0f, inject);
    if (with_res) {
        res_c = terse_test_input(seed + 1, n, TERSE_FLOAT32, 0.3f, 0);
        res_g = malloc((n + 1) * sizeof(float));
        d_res = terse_test_cuda_dev(res_c, n * sizeof(float));
    }
    pay_c = malloc(bytes);
    pay_g = malloc(bytes);
    d_in  = terse_test_cuda_dev(in, n * terse_dtype_size(dt));
    d_out = terse_test_cuda_dev(NULL, bytes);

    buf.ptr   = in;
    buf.count = n;
    buf.dtype = dt;
    buf.mem   = TERSE_MEM_HOST;
    TERSE_TEST_OK(ops->compress(ctx, &buf, res_c, &rng, pay_c, bytes, &flags_c, &err_c, NULL));
    TERSE_TEST_OK(terse__cmp_quant_cuda_compress(cuda, d_in, dt, n, d_res, &rng, d_out, bytes,
                                                 NULL, NULL, NULL));
    TERSE_TEST_OK(terse__cmp_quant_cuda_stat(cuda, NULL, &flags_g, &err_g));
    terse_test_cuda_get(pay_g, d_out, bytes);
    if (memcmp(pay_c, pay_g, bytes) != 0) {
        size_t i;
        for (i = 0; (i < bytes) && (pay_c[i] == pay_g[i]); ++i) {
        }
        fprintf(stderr, "payload differs at byte %zu of %zu (cpu %02x gpu %02x)\n", i, bytes,
                pay_c[i], pay_g[i]);
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
        TERSE_TEST_NEAR(err_g, err_c, 1e-9 * (err_c + 1e-30));
    } else {
        CU_ASSERT(isinf(err_g));
    }
    if (fail) {
        fprintf(stderr, "case: %s bits %u bucket %u n %zu dtype %d res %d offset %llu inject %d\n",
                sign ? "sign" : "quant", bits, bucket, n, (int)dt, with_res,
                (unsigned long long)offset, inject);
    }
    CU_ASSERT(!fail);

    /* decompress (scale 0.5, the input's dtype) and decompress_add, from the GPU payload */
    {
        terse_buf_t ob;
        size_t ob_bytes = n * terse_dtype_size(dt);
        dec_c = malloc(ob_bytes + 4);
        dec_g = malloc(ob_bytes + 4);
        d_dec = terse_test_cuda_dev(NULL, ob_bytes);
        ob.ptr   = dec_c;
        ob.count = n;
        ob.dtype = dt;
        ob.mem   = TERSE_MEM_HOST;
        TERSE_TEST_OK(ops->decompress(ctx, pay_c, bytes, 0.5f, &ob, NULL));
        TERSE_TEST_OK(terse__cmp_quant_cuda_decompress(cuda, d_out, bytes, 0.5f, d_dec, dt, n,
                                                       NULL));
        terse_test_cuda_get(dec_g, d_dec, ob_bytes);
        CU_ASSERT(memcmp(dec_c, dec_g, ob_bytes) == 0);

        acc_c = terse_test_input(seed + 2, n, TERSE_FLOAT32, 1.0f, 0);
        acc_g = malloc((n + 1) * sizeof(float));
        d_acc = terse_test_cuda_dev(acc_c, n * sizeof(float));
        TERSE_TEST_OK(ops->decompress_add(ctx, pay_c, bytes, acc_c, n, &flags_c, NULL));
        TERSE_TEST_OK(terse__cmp_quant_cuda_decompress_add(cuda, d_out, bytes, d_acc, n, NULL,
                                                           NULL));
        terse_test_cuda_get(acc_g, d_acc, n * sizeof(float));
        CU_ASSERT(memcmp(acc_c, acc_g, n * sizeof(float)) == 0);
        TERSE_TEST_OK(terse__cmp_quant_cuda_stat(cuda, NULL, &flags_g, NULL));
        CU_ASSERT_EQUAL(flags_g & TERSE_CU_ERR_PAYLOAD, 0);
        CU_ASSERT_EQUAL(flags_g & TERSE_CMP_NONFINITE, flags_c & TERSE_CMP_NONFINITE);
        terse__cuda_free(d_dec);
        terse__cuda_free(d_acc);
        free(dec_c);
        free(dec_g);
        free(acc_c);
        free(acc_g);
    }

    terse__cuda_free(d_in);
    terse__cuda_free(d_out);
    terse__cuda_free(d_res);
    free(in);
    free(res_c);
    free(res_g);
    free(pay_c);
    free(pay_g);
    terse__cmp_quant_cuda_destroy(cuda);
    ops->destroy(ctx);
}

static const size_t qc_sizes[] = {0, 1, 31, 33, 1000, 1000003};

static void
test_quant_parity(void)
{
    static const unsigned bits[] = {2, 3, 4, 6, 8};
    static const terse_dtype_t dts[] = {TERSE_FLOAT32, TERSE_FLOAT16, TERSE_BFLOAT16};
    size_t s, b, d;

    for (s = 0; s < sizeof(qc_sizes) / sizeof(qc_sizes[0]); ++s) {
        for (b = 0; b < 5; ++b) {
            for (d = 0; d < 3; ++d) {
                qc_case(0, bits[b], 512, qc_sizes[s], dts[d], (int)((s + b + d) % 2), 0, 0,
                        100 + s * 17 + b * 3 + d);
            }
        }
    }
}

static void
test_quant_parity_shapes(void)
{
    qc_case(0, 4, 32, 1000003, TERSE_FLOAT32, 1, 0, 0, 7);     /* smallest bucket */
    qc_case(0, 4, 256, 70001, TERSE_FLOAT32, 1, 0, 0, 8);      /* 8-register variant */
    qc_case(0, 5, 2048, 100003, TERSE_FLOAT16, 1, 0, 0, 9);    /* reload path */
    qc_case(0, 7, 4096, 9000, TERSE_BFLOAT16, 0, 0, 0, 10);
    qc_case(0, 4, 512, 4096, TERSE_FLOAT32, 1, 3 * 512, 0, 11); /* sub-range of a layer */
    qc_case(0, 2, 512, 1000, TERSE_FLOAT32, 1, 5, 0, 12);       /* odd offset: rng only */
    /* the streaming fast paths: every code width, buckets 256 / 1024, rng offsets that are a
     * multiple of 8 but not of the bucket, a partial last bucket after full ones */
    qc_case(0, 5, 512, 70001, TERSE_FLOAT32, 1, 0, 0, 13);
    qc_case(0, 7, 512, 70001, TERSE_BFLOAT16, 1, 0, 0, 14);
    qc_case(0, 3, 1024, 100003, TERSE_FLOAT32, 1, 0, 0, 15);
    qc_case(0, 8, 1024, 4096, TERSE_FLOAT16, 0, 0, 0, 16);
    qc_case(0, 6, 256, 70001, TERSE_FLOAT32, 0, 0, 0, 17);
    qc_case(0, 4, 512, 9000, TERSE_FLOAT32, 1, 8 * 37, 0, 18);
    qc_case(0, 2, 256, 5000, TERSE_FLOAT16, 1, 8 * 5, 0, 19);
}

static void
test_sign_parity(void)
{
    static const terse_dtype_t dts[] = {TERSE_FLOAT32, TERSE_FLOAT16, TERSE_BFLOAT16};
    size_t s, d;

    for (s = 0; s < sizeof(qc_sizes) / sizeof(qc_sizes[0]); ++s) {
        for (d = 0; d < 3; ++d) {
            qc_case(1, 1, 512, qc_sizes[s], dts[d], (int)((s + d) % 2), 0, 0, 300 + s * 5 + d);
        }
    }
    qc_case(1, 1, 32, 100003, TERSE_FLOAT32, 1, 0, 0, 301);
    qc_case(1, 1, 4096, 100003, TERSE_FLOAT32, 1, 0, 0, 302);
    qc_case(1, 1, 256, 70001, TERSE_FLOAT32, 1, 0, 0, 303);  /* fast path, 8 words */
    qc_case(1, 1, 1024, 100003, TERSE_BFLOAT16, 1, 0, 0, 304); /* fast path, 32 words */
    qc_case(1, 1, 1024, 4096, TERSE_FLOAT16, 0, 0, 0, 305);
}

static void
test_nonfinite(void)
{
    qc_case(0, 4, 512, 100003, TERSE_FLOAT32, 1, 0, 1, 20);
    qc_case(0, 4, 512, 100003, TERSE_FLOAT16, 0, 0, 2, 21);
    qc_case(0, 8, 512, 33, TERSE_BFLOAT16, 1, 0, 1, 22);
    qc_case(1, 1, 512, 100003, TERSE_FLOAT32, 1, 0, 1, 23);
    qc_case(1, 1, 512, 1000, TERSE_FLOAT32, 0, 0, 2, 24);
    /* a range beyond FLT_MAX is non-finite for quant although every value is finite */
    {
        const terse_cmp_ops_t *ops = terse__cmp_find("quant");
        float x[64];
        void *cuda, *d_in, *d_out;
        size_t bytes = terse_quant_payload_bytes(64, 4, 32, 8), i;
        uint32_t flags = 0;
        double err = 0.0;
        terse_rng_t rng = terse_rng_make(1, TERSE_RNG_QUANT, 0, 0, 0);
        uint8_t *pay = malloc(bytes);

        (void)ops;
        for (i = 0; i < 64; ++i) {
            x[i] = (i % 2) ? 3e38f : -3e38f;
        }
        TERSE_TEST_OK(terse__cmp_quant_cuda_create(TERSE_QUANT_FAMILY_QUANT, 4, 32, &cuda));
        d_in  = terse_test_cuda_dev(x, sizeof(x));
        d_out = terse_test_cuda_dev(NULL, bytes);
        TERSE_TEST_OK(terse__cmp_quant_cuda_compress(cuda, d_in, TERSE_FLOAT32, 64, NULL, &rng,
                                                     d_out, bytes, NULL, NULL, NULL));
        TERSE_TEST_OK(terse__cmp_quant_cuda_stat(cuda, NULL, &flags, &err));
        terse_test_cuda_get(pay, d_out, bytes);
        CU_ASSERT(flags & TERSE_CMP_NONFINITE);
        CU_ASSERT(isinf(err));
        CU_ASSERT_EQUAL(pay[7], TERSE_CMP_NONFINITE);
        for (i = TERSE_QUANT_HDR_BYTES; i < bytes; ++i) {
            CU_ASSERT_EQUAL_FATAL(pay[i], 0);
        }
        terse__cuda_free(d_in);
        terse__cuda_free(d_out);
        terse__cmp_quant_cuda_destroy(cuda);
        free(pay);
    }
}

/* Corrupts a valid payload in several ways; each must flag and turn the output NaN. */
static void
qc_corrupt_family(int sign)
{
    const size_t n = 10000, bucket = 512;
    const unsigned bits = sign ? 1 : 4;
    const size_t bytes  = terse_quant_payload_bytes(n, bits, bucket, sign ? 4 : 8);
    terse_rng_t rng     = terse_rng_make(5, TERSE_RNG_QUANT, 1, 1, 1);
    void *cuda, *in = terse_test_input(40, n, TERSE_FLOAT32, 1.0f, 0), *d_in, *d_pay, *d_out;
    uint8_t *good = malloc(bytes), *bad = malloc(bytes);
    float *out = malloc(n * sizeof(float));
    uint32_t flags;
    int v;

    if (sign) {
        TERSE_TEST_OK(terse__cmp_sign_cuda_create(bucket, &cuda));
    } else {
        TERSE_TEST_OK(terse__cmp_quant_cuda_create(TERSE_QUANT_FAMILY_QUANT, bits, bucket, &cuda));
    }
    d_in  = terse_test_cuda_dev(in, n * sizeof(float));
    d_pay = terse_test_cuda_dev(NULL, bytes);
    d_out = terse_test_cuda_dev(NULL, n * sizeof(float));
    TERSE_TEST_OK(terse__cmp_quant_cuda_compress(cuda, d_in, TERSE_FLOAT32, n, NULL, &rng, d_pay,
                                                 bytes, NULL, NULL, NULL));
    terse_test_cuda_get(good, d_pay, bytes);
    for (v = 0; v < 10; ++v) {
        size_t use = bytes;
        terse_status_t want = TERSE_OK, got;
        float neg = -1.0f, nan = NAN;
        memcpy(bad, good, bytes);
        switch (v) {
        case 0: bad[0] ^= 1; break;                          /* magic */
        case 1: bad[4] = 2; break;                           /* version */
        case 2: bad[5] = sign ? 1 : 2; break;                /* family */
        case 3: bad[6] ^= 2; break;                          /* bits */
        case 4: bad[7] = 2; break;                           /* unknown flag */
        case 5: bad[12] = 1; break;                          /* reserved */
        case 6: bad[16] ^= 4; break;                         /* count */
        case 7: /* a scale: sign negative, quant unit negative */
            memcpy(bad + TERSE_QUANT_HDR_BYTES + 3 * (sign ? 4 : 8) + (sign ? 0 : 4), &neg, 4);
            break;
        case 8: /* a NaN scale */
            memcpy(bad + TERSE_QUANT_HDR_BYTES + 5 * (sign ? 4 : 8), &nan, 4);
            break;
        default: use = bytes - 1; want = TERSE_ERR_PAYLOAD; break; /* truncated */
        }
        CU_ASSERT_FATAL(terse__cuda_memcpy(d_pay, bad, bytes) == TERSE_OK);
        CU_ASSERT_FATAL(terse__cuda_memset_async(d_out, 0, n * sizeof(float), NULL) == TERSE_OK);
        got = terse__cmp_quant_cuda_decompress(cuda, d_pay, use, 1.0f, d_out, TERSE_FLOAT32, n,
                                               NULL);
        CU_ASSERT_EQUAL(got, want);
        TERSE_TEST_OK(terse__cmp_quant_cuda_stat(cuda, NULL, &flags, NULL));
        CU_ASSERT(flags & TERSE_CU_ERR_PAYLOAD);
        terse_test_cuda_get(out, d_out, n * sizeof(float));
        if (!qc_all_nan(out, n)) {
            fprintf(stderr, "%s corruption %d: output not all NaN\n", sign ? "sign" : "quant", v);
            CU_FAIL("output not NaN");
        }
        CU_ASSERT_FATAL(terse__cuda_memset_async(d_out, 0, n * sizeof(float), NULL) == TERSE_OK);
        got = terse__cmp_quant_cuda_decompress_add(cuda, d_pay, use, d_out, n, NULL, NULL);
        CU_ASSERT_EQUAL(got, want);
        TERSE_TEST_OK(terse__cmp_quant_cuda_stat(cuda, NULL, &flags, NULL));
        CU_ASSERT(flags & TERSE_CU_ERR_PAYLOAD);
        terse_test_cuda_get(out, d_out, n * sizeof(float));
        CU_ASSERT(qc_all_nan(out, n));
    }
    /* the flag is per call: a good payload decodes cleanly afterwards */
    CU_ASSERT_FATAL(terse__cuda_memcpy(d_pay, good, bytes) == TERSE_OK);
    TERSE_TEST_OK(terse__cmp_quant_cuda_decompress(cuda, d_pay, bytes, 1.0f, d_out,
                                                   TERSE_FLOAT32, n, NULL));
    TERSE_TEST_OK(terse__cmp_quant_cuda_stat(cuda, NULL, &flags, NULL));
    CU_ASSERT_EQUAL(flags, 0);
    terse_test_cuda_get(out, d_out, n * sizeof(float));
    CU_ASSERT(isfinite(out[0]) && isfinite(out[n - 1]));
    terse__cuda_free(d_in);
    terse__cuda_free(d_pay);
    terse__cuda_free(d_out);
    terse__cmp_quant_cuda_destroy(cuda);
    free(in);
    free(good);
    free(bad);
    free(out);
}

static void
test_corrupt(void)
{
    qc_corrupt_family(0);
    qc_corrupt_family(1);
}

/* Five layers (quant of several widths, sign, an empty layer) in one table, against the CPU. */
static void
test_table(void)
{
    enum { NL = 5 };
    static const size_t ns[NL]         = {1000003, 33, 5000, 0, 70001};
    static const unsigned bits[NL]     = {4, 2, 1, 8, 3};
    static const int sign[NL]          = {0, 0, 1, 0, 0};
    static const uint32_t buckets[NL]  = {512, 512, 512, 512, 1024};
    static const terse_dtype_t dts[NL] = {TERSE_FLOAT32, TERSE_FLOAT16, TERSE_BFLOAT16,
                                          TERSE_FLOAT32, TERSE_FLOAT32};
    static const int res[NL]           = {1, 0, 1, 1, 1};
    terse_cu_qlayer_t L[NL];
    void *ctx[NL], *cuda[NL], *in[NL], *pay_c[NL], *dec_c[NL], *acc_c[NL];
    float *res_c[NL];
    size_t bytes[NL];
    void *tc = NULL, *td = NULL, *ta = NULL;
    const uint32_t step = 11;
    int l;

    memset(L, 0, sizeof(L));
    for (l = 0; l < NL; ++l) {
        const terse_cmp_ops_t *ops = terse__cmp_find(sign[l] ? "sign" : "quant");
        terse_cmp_params_t p;
        terse_buf_t buf;
        terse_rng_t rng = terse_rng_make(77, TERSE_RNG_QUANT, (uint32_t)l, step, 2);
        uint32_t flags;
        double err;
        size_t n = ns[l];

        memset(&p, 0, sizeof(p));
        p.size   = sizeof(p);
        p.param  = sign[l] ? 0.0 : bits[l];
        p.count  = n + 1;
        p.dtype  = dts[l];
        p.mem    = TERSE_MEM_HOST;
        p.bucket = buckets[l];
        p.nranks = 1;
        TERSE_TEST_OK(ops->create(&p, &ctx[l]));
        TERSE_TEST_OK(ops->payload_size(ctx[l], n, 0, &bytes[l]));
        TERSE_TEST_OK(terse__cmp_quant_cuda_create(sign[l] ? TERSE_QUANT_FAMILY_SIGN
                                                           : TERSE_QUANT_FAMILY_QUANT,
                                                   bits[l], buckets[l], &cuda[l]));
        in[l]    = terse_test_input(500 + l, n, dts[l], 1.0f, 0);
        res_c[l] = res[l] ? terse_test_input(600 + l, n, TERSE_FLOAT32, 0.2f, 0) : NULL;
        pay_c[l] = malloc(bytes[l]);
        L[l].cuda     = cuda[l];
        L[l].in       = terse_test_cuda_dev(in[l], n * terse_dtype_size(dts[l]));
        L[l].residual = res[l] ? terse_test_cuda_dev(res_c[l], n * sizeof(float)) : NULL;
        L[l].out      = terse_test_cuda_dev(NULL, bytes[l]);
        L[l].n        = n;
        L[l].bytes    = bytes[l];
        L[l].rng      = terse_rng_make(77, TERSE_RNG_QUANT, (uint32_t)l, 0, 2); /* step set by run */
        L[l].dtype    = dts[l];
        L[l].scale    = 1.0f;
        buf.ptr   = in[l];
        buf.count = n;
        buf.dtype = dts[l];
        buf.mem   = TERSE_MEM_HOST;
        TERSE_TEST_OK(ops->compress(ctx[l], &buf, res_c[l], &rng, pay_c[l], bytes[l], &flags,
                                    &err, NULL));
        /* CPU decompress (fp32) and decompress_add references */
        {
            terse_buf_t ob;
            dec_c[l] = malloc(n * sizeof(float) + 4);
            acc_c[l] = terse_test_input(700 + l, n, TERSE_FLOAT32, 1.0f, 0);
            ob.ptr   = dec_c[l];
            ob.count = n;
            ob.dtype = TERSE_FLOAT32;
            ob.mem   = TERSE_MEM_HOST;
            TERSE_TEST_OK(ops->decompress(ctx[l], pay_c[l], bytes[l], 1.0f, &ob, NULL));
            TERSE_TEST_OK(ops->decompress_add(ctx[l], pay_c[l], bytes[l], acc_c[l], n, &flags,
                                              NULL));
        }
    }
    TERSE_TEST_OK(terse__cmp_quant_cuda_table_create(L, NL, TERSE_CU_Q_COMPRESS, &tc));
    TERSE_TEST_OK(terse__cmp_quant_cuda_table_run(tc, step, NULL));
    for (l = 0; l < NL; ++l) {
        uint8_t *g = malloc(bytes[l]);
        terse_test_cuda_get(g, L[l].out, bytes[l]);
        if (memcmp(g, pay_c[l], bytes[l]) != 0) {
            fprintf(stderr, "table layer %d: payload differs\n", l);
            CU_FAIL("table payload");
        }
        if (res[l]) {
            float *r = malloc(ns[l] * sizeof(float) + 4);
            terse_test_cuda_get(r, L[l].residual, ns[l] * sizeof(float));
            CU_ASSERT(memcmp(r, res_c[l], ns[l] * sizeof(float)) == 0);
            free(r);
        }
        free(g);
    }
    /* decode tables: payloads in, fp32 outputs / accumulators out */
    {
        terse_cu_qlayer_t D[NL], A[NL];
        for (l = 0; l < NL; ++l) {
            D[l]       = L[l];
            D[l].in    = L[l].out;
            D[l].out   = terse_test_cuda_dev(NULL, ns[l] * sizeof(float));
            D[l].dtype = TERSE_FLOAT32;
            A[l]       = D[l];
        }
        for (l = 0; l < NL; ++l) {
            float *tmp = terse_test_input(700 + l, ns[l], TERSE_FLOAT32, 1.0f, 0);
            A[l].out   = terse_test_cuda_dev(tmp, ns[l] * sizeof(float));
            free(tmp);
        }
        TERSE_TEST_OK(terse__cmp_quant_cuda_table_create(D, NL, TERSE_CU_Q_DECOMPRESS, &td));
        TERSE_TEST_OK(terse__cmp_quant_cuda_table_create(A, NL, TERSE_CU_Q_DECOMPRESS_ADD, &ta));
        TERSE_TEST_OK(terse__cmp_quant_cuda_table_run(td, 0, NULL));
        TERSE_TEST_OK(terse__cmp_quant_cuda_table_run(ta, 0, NULL));
        for (l = 0; l < NL; ++l) {
            float *g = malloc(ns[l] * sizeof(float) + 4);
            uint32_t flags = 0;
            terse_test_cuda_get(g, D[l].out, ns[l] * sizeof(float));
            CU_ASSERT(memcmp(g, dec_c[l], ns[l] * sizeof(float)) == 0);
            terse_test_cuda_get(g, A[l].out, ns[l] * sizeof(float));
            CU_ASSERT(memcmp(g, acc_c[l], ns[l] * sizeof(float)) == 0);
            TERSE_TEST_OK(terse__cmp_quant_cuda_stat(cuda[l], NULL, &flags, NULL));
            CU_ASSERT_EQUAL(flags, 0);
            free(g);
            terse__cuda_free(D[l].out);
            terse__cuda_free(A[l].out);
        }
        terse__cmp_quant_cuda_table_destroy(td);
        terse__cmp_quant_cuda_table_destroy(ta);
    }
    terse__cmp_quant_cuda_table_destroy(tc);
    for (l = 0; l < NL; ++l) {
        const terse_cmp_ops_t *ops = terse__cmp_find(sign[l] ? "sign" : "quant");
        terse__cuda_free((void *)L[l].in);
        terse__cuda_free(L[l].residual);
        terse__cuda_free(L[l].out);
        terse__cmp_quant_cuda_destroy(cuda[l]);
        ops->destroy(ctx[l]);
        free(in[l]);
        free(res_c[l]);
        free(pay_c[l]);
        free(dec_c[l]);
        free(acc_c[l]);
    }
}

/* Tables over buffers that move: layers whose gradient (compress) or output (SET decode) is
 * an offset from the base each run gives, at 16-byte aligned and unaligned offsets; compress
 * must match the single-layer launch from either base, and TERSE_CU_Q_DECOMPRESS_SET must
 * equal a zeroed accumulator, decompress_add and the conversion (the CPU's), bit for bit. */
#define NU 4

static void *
qc_host_ctx(int sign, unsigned bits, uint32_t bucket, size_t n, terse_dtype_t dt)
{
    const terse_cmp_ops_t *ops = terse__cmp_find(sign ? "sign" : "quant");
    terse_cmp_params_t p;
    void *ctx = NULL;

    memset(&p, 0, sizeof(p));
    p.size   = sizeof(p);
    p.param  = sign ? 0.0 : (double)bits;
    p.count  = n;
    p.dtype  = dt;
    p.mem    = TERSE_MEM_HOST;
    p.bucket = bucket;
    p.nranks = 1;
    TERSE_TEST_OK(ops->create(&p, &ctx));
    return ctx;
}

static void
test_table_user(void)
{
    static const size_t ns[NU] = {7, 1000, 70001, 33};
    static const terse_dtype_t dts[NU] = {TERSE_FLOAT32, TERSE_FLOAT16, TERSE_FLOAT32,
                                          TERSE_BFLOAT16};
    static const int sgn[NU] = {0, 0, 1, 0};
    static const unsigned bits[NU] = {4, 8, 1, 3};
    static const uint32_t buckets[NU] = {512, 96, 512, 256};
    static const float scales[2] = {1.0f, 0.25f};
    terse_cu_qlayer_t C[NU], D[NU], bad[2];
    void *cuda[NU], *hctx[NU], *in_h[NU], *res_h[NU], *tc = NULL, *td = NULL, *tx = NULL;
    float *res_t[NU], *res_r[NU];
    uint8_t *pay_t[NU], *pay_r[NU], *ub, *base[2], *obase;
    size_t off[NU], ooff[NU], bytes[NU], total = 0, ototal = 0;
    int l, b, k;

    memset(C, 0, sizeof(C));
    memset(D, 0, sizeof(D));
    for (l = 0; l < NU; ++l) {
        const size_t es = terse_dtype_size(dts[l]);
        /* 16-byte aligned, except layer 2 (fp32 at 4 mod 16: the scalar paths) */
        off[l]  = TERSE_ALIGN_UP(total, (size_t)16) + ((l == 2) ? 4 : 0);
        total   = off[l] + ns[l] * es;
        ooff[l] = TERSE_ALIGN_UP(ototal, (size_t)16) + ((l == 3) ? 2 : 0);
        ototal  = ooff[l] + ns[l] * es;
        bytes[l] = terse_quant_payload_bytes(ns[l], bits[l], buckets[l], sgn[l] ? 4 : 8);
        if (sgn[l]) {
            TERSE_TEST_OK(terse__cmp_sign_cuda_create(buckets[l], &cuda[l]));
        } else {
            TERSE_TEST_OK(terse__cmp_quant_cuda_create(TERSE_QUANT_FAMILY_QUANT, bits[l],
                                                       buckets[l], &cuda[l]));
        }
        hctx[l]  = qc_host_ctx(sgn[l], bits[l], buckets[l], ns[l], dts[l]);
        in_h[l]  = terse_test_input(800 + (uint64_t)l, ns[l], dts[l], 1.0f, 0);
        res_h[l] = terse_test_input(900 + (uint64_t)l, ns[l], TERSE_FLOAT32, 0.2f, 0);
        res_t[l] = terse_test_cuda_dev(res_h[l], ns[l] * sizeof(float));
        res_r[l] = terse_test_cuda_dev(res_h[l], ns[l] * sizeof(float));
        pay_t[l] = terse_test_cuda_dev(NULL, bytes[l]);
        pay_r[l] = terse_test_cuda_dev(NULL, bytes[l]);
    }
    ub = calloc(total, 1);
    for (l = 0; l < NU; ++l) {
        memcpy(ub + off[l], in_h[l], ns[l] * terse_dtype_size(dts[l]));
    }
    base[0] = terse_test_cuda_dev(ub, total);
    base[1] = terse_test_cuda_dev(ub, total);
    obase   = terse_test_cuda_dev(NULL, ototal);
    for (l = 0; l < NU; ++l) {
        terse_rng_t rng = terse_rng_make(91, TERSE_RNG_QUANT, (uint32_t)l, 3, 1);
        TERSE_TEST_OK(terse__cmp_quant_cuda_compress(cuda[l], base[0] + off[l], dts[l], ns[l],
                                                     res_r[l], &rng, pay_r[l], bytes[l], NULL,
                                                     NULL, NULL));
        C[l].cuda     = cuda[l];
        C[l].in       = (const void *)(uintptr_t)off[l];
        C[l].residual = res_t[l];
        C[l].out      = pay_t[l];
        C[l].n        = ns[l];
        C[l].bytes    = bytes[l];
        C[l].rng      = terse_rng_make(91, TERSE_RNG_QUANT, (uint32_t)l, 0, 1); /* step: run */
        C[l].dtype    = dts[l];
        C[l].scale    = 1.0f;
        C[l].user     = TERSE_CU_QUSER_IN;
    }
    TERSE_TEST_OK(terse__cmp_quant_cuda_table_create(C, NU, TERSE_CU_Q_COMPRESS, &tc));
    for (b = 0; b < 2; ++b) {
        for (l = 0; l < NU; ++l) { /* each run starts from the same residual */
            terse__cuda_free(res_t[l]);
        }
        terse__cmp_quant_cuda_table_destroy(tc);
        for (l = 0; l < NU; ++l) {
            res_t[l]      = terse_test_cuda_dev(res_h[l], ns[l] * sizeof(float));
            C[l].residual = res_t[l];
        }
        TERSE_TEST_OK(terse__cmp_quant_cuda_table_create(C, NU, TERSE_CU_Q_COMPRESS, &tc));
        TERSE_TEST_OK(terse__cmp_quant_cuda_table_run_at(tc, 3, base[b], NULL));
        for (l = 0; l < NU; ++l) {
            uint8_t *g = malloc(bytes[l]), *r = malloc(bytes[l]);
            float *gr = malloc(ns[l] * sizeof(float)), *rr = malloc(ns[l] * sizeof(float));
            terse_test_cuda_get(g, pay_t[l], bytes[l]);
            terse_test_cuda_get(r, pay_r[l], bytes[l]);
            terse_test_cuda_get(gr, res_t[l], ns[l] * sizeof(float));
            terse_test_cuda_get(rr, res_r[l], ns[l] * sizeof(float));
            if ((memcmp(g, r, bytes[l]) != 0) || (memcmp(gr, rr, ns[l] * sizeof(float)) != 0)) {
                fprintf(stderr, "user table, base %d, layer %d: payload or residual differs\n",
                        b, l);
                CU_FAIL("user-offset compress table");
            }
            free(g);
            free(r);
            free(gr);
            free(rr);
        }
    }
    /* SET decode into the moving output, scale 1 and 0.25, against the CPU's three steps */
    for (k = 0; k < 2; ++k) {
        for (l = 0; l < NU; ++l) {
            D[l].cuda  = cuda[l];
            D[l].in    = pay_r[l];
            D[l].out   = (void *)(uintptr_t)ooff[l];
            D[l].n     = ns[l];
            D[l].bytes = bytes[l];
            D[l].dtype = dts[l];
            D[l].scale = scales[k];
            D[l].user  = TERSE_CU_QUSER_OUT;
        }
        TERSE_TEST_OK(terse__cmp_quant_cuda_table_create(D, NU, TERSE_CU_Q_DECOMPRESS_SET, &td));
        TERSE_TEST_OK(terse__cmp_quant_cuda_table_run_at(td, 0, obase, NULL));
        for (l = 0; l < NU; ++l) {
            const terse_cmp_ops_t *ops = terse__cmp_find(sgn[l] ? "sign" : "quant");
            const size_t ob = ns[l] * terse_dtype_size(dts[l]);
            uint8_t *pay = malloc(bytes[l]), *want = malloc(ob + 4), *got = malloc(ob + 4);
            float *acc = calloc(ns[l], sizeof(float));
            uint32_t flags = 0;
            terse_test_cuda_get(pay, pay_r[l], bytes[l]);
            TERSE_TEST_OK(ops->decompress_add(hctx[l], pay, bytes[l], acc, ns[l], &flags, NULL));
            terse__convert_from_f32(acc, scales[k], want, dts[l], ns[l]);
            terse_test_cuda_get(got, obase + ooff[l], ob);
            if (memcmp(want, got, ob) != 0) {
                fprintf(stderr, "SET table, scale %g, layer %d differs\n", scales[k], l);
                CU_FAIL("DECOMPRESS_SET table");
            }
            free(pay);
            free(want);
            free(got);
            free(acc);
        }
        terse__cmp_quant_cuda_table_destroy(td);
    }
    /* refused: one instance twice (its status block), unknown user bits */
    bad[0] = C[0];
    bad[1] = C[0];
    CU_ASSERT_EQUAL(terse__cmp_quant_cuda_table_create(bad, 2, TERSE_CU_Q_COMPRESS, &tx),
                    TERSE_ERR_INVALID);
    bad[1]      = C[1];
    bad[1].user = 4u;
    CU_ASSERT_EQUAL(terse__cmp_quant_cuda_table_create(bad, 2, TERSE_CU_Q_COMPRESS, &tx),
                    TERSE_ERR_INVALID);
    terse__cmp_quant_cuda_table_destroy(tc);
    for (l = 0; l < NU; ++l) {
        const terse_cmp_ops_t *ops = terse__cmp_find(sgn[l] ? "sign" : "quant");
        terse__cuda_free(res_t[l]);
        terse__cuda_free(res_r[l]);
        terse__cuda_free(pay_t[l]);
        terse__cuda_free(pay_r[l]);
        terse__cmp_quant_cuda_destroy(cuda[l]);
        ops->destroy(hctx[l]);
        free(in_h[l]);
        free(res_h[l]);
    }
    terse__cuda_free(base[0]);
    terse__cuda_free(base[1]);
    terse__cuda_free(obase);
    free(ub);
}

/* Nothing written past a buffer's end: 64 guard bytes after the residual, the payload, the
 * decompressed output and the accumulator must stay as they were. Lanes at a bucket's tail
 * took the 16-byte paths when the "all 8 values present" test was miscompiled (q_full in
 * quant_cuda.cu), writing 8 residuals and `bits` code bytes where fewer belonged. */
#define QC_GUARD 64

static int
qc_guard_ok(const void *dev, size_t bytes, const char *what, size_t n, uint32_t bucket)
{
    uint8_t g[QC_GUARD];
    size_t i;

    terse_test_cuda_get(g, (const uint8_t *)dev + bytes, QC_GUARD);
    for (i = 0; i < QC_GUARD; ++i) {
        if (g[i] != 0xa5) {
            fprintf(stderr, "%s: byte %zu past the end written (n %zu bucket %u)\n", what, i, n,
                    bucket);
            return 0;
        }
    }
    return 1;
}

static void *
qc_guarded(const void *host, size_t bytes)
{
    uint8_t *h = malloc(bytes + QC_GUARD);
    void *d;

    if (host != NULL) {
        memcpy(h, host, bytes);
    } else {
        memset(h, 0, bytes);
    }
    memset(h + bytes, 0xa5, QC_GUARD);
    d = terse_test_cuda_dev(h, bytes + QC_GUARD);
    free(h);
    return d;
}

static void
qc_guard_case(int sign, unsigned bits, uint32_t bucket, size_t n, terse_dtype_t dt)
{
    const size_t es = terse_dtype_size(dt), sb = sign ? 4 : 8;
    const size_t bytes = terse_quant_payload_bytes(n, bits, bucket, sb);
    terse_rng_t rng    = terse_rng_make(5, TERSE_RNG_QUANT, 1, 2, 3);
    void *cuda = NULL, *in = terse_test_input(40 + n, n, dt, 1.0f, 0);
    void *d_in, *d_res, *d_out, *d_dec, *d_acc;
    int ok = 1;

    if (sign) {
        TERSE_TEST_OK(terse__cmp_sign_cuda_create(bucket, &cuda));
    } else {
        TERSE_TEST_OK(terse__cmp_quant_cuda_create(TERSE_QUANT_FAMILY_QUANT, bits, bucket, &cuda));
    }
    d_in  = qc_guarded(in, n * es);
    d_res = qc_guarded(NULL, n * sizeof(float));
    d_out = qc_guarded(NULL, bytes);
    d_dec = qc_guarded(NULL, n * es);
    d_acc = qc_guarded(NULL, n * sizeof(float));
    TERSE_TEST_OK(terse__cmp_quant_cuda_compress(cuda, d_in, dt, n, d_res, &rng, d_out, bytes,
                                                 NULL, NULL, NULL));
    TERSE_TEST_OK(terse__cmp_quant_cuda_decompress(cuda, d_out, bytes, 1.0f, d_dec, dt, n, NULL));
    TERSE_TEST_OK(terse__cmp_quant_cuda_decompress_add(cuda, d_out, bytes, d_acc, n, NULL, NULL));
    TERSE_TEST_OK(terse__cmp_quant_cuda_stat(cuda, NULL, NULL, NULL));
    ok = ok && qc_guard_ok(d_res, n * sizeof(float), "residual", n, bucket);
    ok = ok && qc_guard_ok(d_out, bytes, "payload", n, bucket);
    ok = ok && qc_guard_ok(d_dec, n * es, "decompress", n, bucket);
    ok = ok && qc_guard_ok(d_acc, n * sizeof(float), "decompress_add", n, bucket);
    CU_ASSERT(ok);
    terse__cuda_free(d_in);
    terse__cuda_free(d_res);
    terse__cuda_free(d_out);
    terse__cuda_free(d_dec);
    terse__cuda_free(d_acc);
    free(in);
    terse__cmp_quant_cuda_destroy(cuda);
}

static void
test_tails(void)
{
    /* bucket 96: slot kernels for everything (no fast path takes it); 512: the fast paths with
     * the slot kernel for the partial last bucket */
    static const uint32_t buckets[] = {96, 512};
    size_t b, n;

    for (b = 0; b < 2; ++b) {
        for (n = 1; n <= 40; ++n) {
            qc_guard_case(0, 4, buckets[b], n, TERSE_FLOAT32);
            qc_guard_case(0, 3, buckets[b], buckets[b] + n, TERSE_FLOAT32);
            qc_guard_case(1, 1, buckets[b], n, TERSE_FLOAT32);
        }
        qc_guard_case(0, 8, buckets[b], 2 * buckets[b] + 13, TERSE_BFLOAT16);
        qc_guard_case(0, 2, buckets[b], 19, TERSE_FLOAT16);
    }
}

static CU_TestInfo quant_cuda_tests[] = {
    {"quant parity (sizes x bits x dtypes)", test_quant_parity},
    {"quant parity (buckets, sub-ranges)", test_quant_parity_shapes},
    {"sign parity", test_sign_parity},
    {"non-finite input", test_nonfinite},
    {"multi-tensor table", test_table},
    {"multi-tensor table over moving buffers, SET decode", test_table_user},
    {"vector paths at tails: nothing written past the end", test_tails},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo quant_cuda_corrupt_tests[] = {
    {"corrupted payloads", test_corrupt},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_quant_cuda_suites[] = {
    {"quant_cuda", NULL, NULL, NULL, NULL, quant_cuda_tests},
    {"quant_cuda_corrupt", NULL, NULL, NULL, NULL, quant_cuda_corrupt_tests},
    CU_SUITE_INFO_NULL,
};
