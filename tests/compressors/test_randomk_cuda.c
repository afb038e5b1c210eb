/* compressors/randomk_cuda.cu tables (label gpu): eight layers of odd sizes (k = 1 and
 * k = count among them; fp32, fp16 and bf16; with and without residuals) compressed and
 * decompressed by one table each, three steps, the gradient and the output given as offsets
 * from a base that moves every step; payloads, index arrays, residuals, outputs and flags byte
 * for byte what one-layer launches give on identical copies, a non-finite layer touching no
 * other, and the layer lists a table must reject. All on one cudaStreamNonBlocking stream. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "terse_test.h"
#include "terse_test_cuda.h"
#include "compressor.h"
#include "cuda_util.h"
#include "randomk_cuda.h"
#include "rng.h"

#define RT_NL    8
#define RT_STEPS 3
#define RT_ABS   6 /* the layer whose gradient and output are absolute pointers */
#define RT_SEED  77

static const size_t rt_n[RT_NL] = {1, 7, 1000, 4097, 70001, ((size_t)1 << 20) + 3, 5000, 33};
static const size_t rt_k[RT_NL] = {1, 3, 1000, 1, 4500, 10486, 4097, 5};
static const terse_dtype_t rt_dt[RT_NL] = {TERSE_FLOAT32, TERSE_FLOAT16, TERSE_BFLOAT16,
                                           TERSE_FLOAT32, TERSE_FLOAT16, TERSE_FLOAT32,
                                           TERSE_BFLOAT16, TERSE_FLOAT16};
static const int rt_res[RT_NL]     = {1, 1, 1, 0, 1, 1, 1, 0}; /* has a residual */
static const float rt_scale[RT_NL] = {0.5f, 1.0f, 0.25f, 2.0f, 0.5f, 1.0f / 3.0f, 0.75f, -1.0f};
static const uint32_t rt_step[RT_STEPS] = {7, 8, 1000003};

/* Non-finite input of layer l at step s: 1 NaN, 2 +Inf (terse_test_input's inject), 0 none.
 * Layer 4 has a residual (it must be reset, by three tiles of sent positions sharing it),
 * layer 7 has none. */
static int
rt_inject(int l, int s)
{
    return ((l == 4) && (s == 1)) ? 1 : (((l == 7) && (s == 2)) ? 2 : 0);
}

static void
rt_put(void *dev, const void *host, size_t bytes, cudaStream_t s)
{
    CU_ASSERT_FATAL(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, s) == cudaSuccess);
    CU_ASSERT_FATAL(cudaStreamSynchronize(s) == cudaSuccess);
}

static void
rt_get(void *host, const void *dev, size_t bytes, cudaStream_t s)
{
    CU_ASSERT_FATAL(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, s) == cudaSuccess);
    CU_ASSERT_FATAL(cudaStreamSynchronize(s) == cudaSuccess);
}

/* 1 when a and b (device, bytes) hold the same bytes; names the difference otherwise. */
static int
rt_same(const void *a, const void *b, size_t bytes, cudaStream_t s, const char *what, int l,
        int step)
{
    uint8_t *x = malloc(bytes + 1), *y = malloc(bytes + 1);
    size_t i;
    int same;

    CU_ASSERT_FATAL((x != NULL) && (y != NULL));
    rt_get(x, a, bytes, s);
    rt_get(y, b, bytes, s);
    same = (memcmp(x, y, bytes) == 0);
    if (!same) {
        for (i = 0; (i < bytes) && (x[i] == y[i]); ++i) {
        }
        fprintf(stderr, "randomk table layer %d step %d: %s differs (first at byte %zu of %zu)\n",
                l, step, what, i, bytes);
    }
    free(x);
    free(y);
    return same;
}

static void
test_tables(void)
{
    cudaStream_t s = NULL;
    void *tab[RT_NL], *ref[RT_NL], *tc = NULL, *td = NULL;
    float *pay_t[RT_NL], *pay_r[RT_NL], *res_t[RT_NL], *res_r[RT_NL];
    uint8_t *out_r[RT_NL], *base[2], *obase[2], *ub, *abs_in, *abs_out;
    size_t off[RT_NL], ooff[RT_NL], total = 0, ototal = 0;
    terse_cu_rlayer_t C[RT_NL], D[RT_NL];
    int l, st;

    CU_ASSERT_FATAL(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    for (l = 0; l < RT_NL; ++l) {
        const size_t es = terse_dtype_size(rt_dt[l]);
        /* 16-byte aligned, except 16-bit layers at odd layer numbers: 2 bytes past it */
        off[l]  = ((total + 15) & ~(size_t)15) + (((es == 2) && (l & 1)) ? 2 : 0);
        total   = off[l] + rt_n[l] * es;
        ooff[l] = ((ototal + 15) & ~(size_t)15) + (((es == 2) && !(l & 1)) ? 2 : 0);
        ototal  = ooff[l] + rt_n[l] * es;
        TERSE_TEST_OK(terse__cmp_randomk_cuda_create(rt_n[l], rt_k[l], &tab[l]));
        TERSE_TEST_OK(terse__cmp_randomk_cuda_create(rt_n[l], rt_k[l], &ref[l]));
        pay_t[l] = terse_test_cuda_dev(NULL, rt_k[l] * sizeof(float));
        pay_r[l] = terse_test_cuda_dev(NULL, rt_k[l] * sizeof(float));
        out_r[l] = terse_test_cuda_dev(NULL, rt_n[l] * es);
        res_t[l] = NULL;
        res_r[l] = NULL;
        if (rt_res[l]) {
            float *h = terse_test_input(RT_SEED + 100 + (uint64_t)l, rt_n[l], TERSE_FLOAT32, 0.3f,
                                        0);
            res_t[l] = terse_test_cuda_dev(NULL, rt_n[l] * sizeof(float));
            res_r[l] = terse_test_cuda_dev(NULL, rt_n[l] * sizeof(float));
            rt_put(res_t[l], h, rt_n[l] * sizeof(float), s);
            rt_put(res_r[l], h, rt_n[l] * sizeof(float), s);
            free(h);
        }
    }
    ub       = calloc(total, 1);
    base[0]  = terse_test_cuda_dev(NULL, total);
    base[1]  = terse_test_cuda_dev(NULL, total);
    obase[0] = terse_test_cuda_dev(NULL, ototal);
    obase[1] = terse_test_cuda_dev(NULL, ototal);
    abs_in   = terse_test_cuda_dev(NULL, rt_n[RT_ABS] * terse_dtype_size(rt_dt[RT_ABS]));
    abs_out  = terse_test_cuda_dev(NULL, rt_n[RT_ABS] * terse_dtype_size(rt_dt[RT_ABS]));
    CU_ASSERT_FATAL(ub != NULL);

    memset(C, 0, sizeof(C));
    memset(D, 0, sizeof(D));
    for (l = 0; l < RT_NL; ++l) {
        const int a = (l == RT_ABS);
        /* a stale step: every run must set its own */
        const terse_rng_t stale = terse_rng_make(RT_SEED, TERSE_RNG_RANDOMK, (uint32_t)l,
                                                 0xdeadbeefu, TERSE_RNG_SHARED);
        C[l] = (terse_cu_rlayer_t){.cuda     = tab[l],
                                   .in       = a ? (const void *)abs_in
                                                 : (const void *)(uintptr_t)off[l],
                                   .residual = res_t[l],
                                   .pay      = pay_t[l],
                                   .n        = rt_n[l],
                                   .k        = rt_k[l],
                                   .dtype    = rt_dt[l],
                                   .scale    = 1.0f,
                                   .rng      = stale,
                                   .user     = a ? 0u : TERSE_CU_RUSER_IN};
        D[l] = (terse_cu_rlayer_t){.cuda  = tab[l],
                                   .pay   = pay_t[l],
                                   .out   = a ? (void *)abs_out : (void *)(uintptr_t)ooff[l],
                                   .n     = rt_n[l],
                                   .k     = rt_k[l],
                                   .dtype = rt_dt[l],
                                   .scale = rt_scale[l],
                                   .user  = a ? 0u : TERSE_CU_RUSER_OUT};
    }
    TERSE_TEST_OK(terse__cmp_randomk_cuda_table_create(C, RT_NL, 0, &tc));
    TERSE_TEST_OK(terse__cmp_randomk_cuda_table_create(D, RT_NL, 1, &td));
    CU_ASSERT_PTR_NOT_NULL_FATAL(tc);
    CU_ASSERT_PTR_NOT_NULL_FATAL(td);

    for (st = 0; st < RT_STEPS; ++st) {
        uint8_t *b = base[st & 1], *ob = obase[st & 1];
        const void *in_l[RT_NL];

        /* this step's gradients into this step's base (the other base holds an older step's:
         * a table reading a stale base differs) */
        for (l = 0; l < RT_NL; ++l) {
            const size_t bytes = rt_n[l] * terse_dtype_size(rt_dt[l]);
            void *h = terse_test_input(RT_SEED + 1000 * (uint64_t)st + (uint64_t)l, rt_n[l],
                                       rt_dt[l], 1.0f, rt_inject(l, st));
            if (l == RT_ABS) {
                rt_put(abs_in, h, bytes, s);
                in_l[l] = abs_in;
            } else {
                memcpy(ub + off[l], h, bytes);
                in_l[l] = b + off[l];
            }
            free(h);
        }
        rt_put(b, ub, total, s);
        /* outputs start as garbage: the zeroing must happen */
        CU_ASSERT_FATAL(cudaMemsetAsync(ob, 0xff, ototal, s) == cudaSuccess);
        CU_ASSERT_FATAL(cudaMemsetAsync(abs_out, 0xff,
                                        rt_n[RT_ABS] * terse_dtype_size(rt_dt[RT_ABS]),
                                        s) == cudaSuccess);
        for (l = 0; l < RT_NL; ++l) {
            CU_ASSERT_FATAL(cudaMemsetAsync(out_r[l], 0xff, rt_n[l] * terse_dtype_size(rt_dt[l]),
                                            s) == cudaSuccess);
        }

        /* the reference: one layer at a time */
        for (l = 0; l < RT_NL; ++l) {
            terse_rng_t rng = terse_rng_make(RT_SEED, TERSE_RNG_RANDOMK, (uint32_t)l, rt_step[st],
                                             TERSE_RNG_SHARED);
            TERSE_TEST_OK(terse__cmp_randomk_cuda_compress(ref[l], in_l[l], rt_dt[l], rt_n[l],
                                                           res_r[l], &rng, pay_r[l],
                                                           rt_k[l] * sizeof(float), NULL, NULL,
                                                           (terse_stream_t)s));
            TERSE_TEST_OK(terse__cmp_randomk_cuda_decompress(ref[l], pay_r[l],
                                                             rt_k[l] * sizeof(float), rt_scale[l],
                                                             out_r[l], rt_dt[l], rt_n[l],
                                                             (terse_stream_t)s));
        }
        /* the tables: every layer, four launches */
        TERSE_TEST_OK(terse__cmp_randomk_cuda_table_run(tc, rt_step[st], b, (terse_stream_t)s));
        TERSE_TEST_OK(terse__cmp_randomk_cuda_table_run(td, 0, ob, (terse_stream_t)s));
        CU_ASSERT_FATAL(cudaStreamSynchronize(s) == cudaSuccess);

        for (l = 0; l < RT_NL; ++l) {
            const size_t kb     = rt_k[l] * sizeof(float);
            const size_t obytes = rt_n[l] * terse_dtype_size(rt_dt[l]);
            const uint32_t want = rt_inject(l, st) ? (uint32_t)TERSE_CMP_NONFINITE : 0u;
            const void *out_t   = (l == RT_ABS) ? (const void *)abs_out
                                                : (const void *)(ob + ooff[l]);
            uint32_t flags_t = 0xffffffffu, flags_r = 0xffffffffu;
            double err_t = -1.0, err_r = -1.0, sent = 0.0;
            float *p = malloc(kb);
            size_t j;

            CU_ASSERT_FATAL(p != NULL);
            CU_ASSERT(rt_same(pay_t[l], pay_r[l], kb, s, "payload", l, st));
            CU_ASSERT(rt_same(terse__cmp_randomk_cuda_index(tab[l]),
                              terse__cmp_randomk_cuda_index(ref[l]), rt_k[l] * sizeof(uint32_t),
                              s, "index array", l, st));
            if (rt_res[l]) {
                CU_ASSERT(rt_same(res_t[l], res_r[l], rt_n[l] * sizeof(float), s, "residual", l,
                                  st));
            }
            CU_ASSERT(rt_same(out_t, out_r[l], obytes, s, "decompressed output", l, st));
            TERSE_TEST_OK(terse__cmp_randomk_cuda_stat(tab[l], (terse_stream_t)s, &flags_t,
                                                       &err_t));
            TERSE_TEST_OK(terse__cmp_randomk_cuda_stat(ref[l], (terse_stream_t)s, &flags_r,
                                                       &err_r));
            CU_ASSERT_EQUAL(flags_t, flags_r);
            CU_ASSERT_EQUAL(flags_t, want); /* the other layers keep their flags clear */

            /* the reference payload, to tell a real payload from one that is all NaN or 0 */
            rt_get(p, pay_r[l], kb, s);
            for (j = 0; j < rt_k[l]; ++j) {
                sent += (double)p[j] * (double)p[j];
            }
            if (want != 0) {
                CU_ASSERT(terse_test_all_nan(p, TERSE_FLOAT32, rt_k[l]));
                CU_ASSERT(isinf(err_t) && isinf(err_r));
                if (rt_res[l]) { /* reset, as the one-layer path does */
                    float *r = malloc(rt_n[l] * sizeof(float));
                    int zero = 1;
                    CU_ASSERT_FATAL(r != NULL);
                    rt_get(r, res_t[l], rt_n[l] * sizeof(float), s);
                    for (j = 0; j < rt_n[l]; ++j) {
                        zero = zero && (r[j] == 0.0f);
                    }
                    CU_ASSERT(zero);
                    free(r);
                }
            } else {
                CU_ASSERT(isfinite(sent) && (sent > 0.0));
                CU_ASSERT(isfinite(err_t) && (err_t >= 0.0));
                /* err = total - sent, summed in another order (atomics): relative to the total */
                TERSE_TEST_NEAR(err_t, err_r, 1e-9 * (err_r + sent) + 1e-30);
            }
            free(p);
        }
    }

    /* run without a table; creates the plan must refuse (the table pointer stays NULL) */
    CU_ASSERT_EQUAL(terse__cmp_randomk_cuda_table_run(NULL, 0, NULL, (terse_stream_t)s),
                    TERSE_ERR_INVALID);
    {
        terse_cu_rlayer_t bad[3];
        void *tx = (void *)&bad; /* not NULL: a refusal must clear it */

        CU_ASSERT_EQUAL(terse__cmp_randomk_cuda_table_create(C, 0, 0, &tx), TERSE_ERR_INVALID);
        CU_ASSERT_PTR_NULL(tx);
        bad[0] = C[2];
        bad[1] = C[5];
        bad[2] = C[2]; /* an instance twice */
        tx     = (void *)&bad;
        CU_ASSERT_EQUAL(terse__cmp_randomk_cuda_table_create(bad, 3, 0, &tx), TERSE_ERR_INVALID);
        CU_ASSERT_PTR_NULL(tx);
        bad[2] = C[3];
        tx     = NULL;
        TERSE_TEST_OK(terse__cmp_randomk_cuda_table_create(bad, 3, 0, &tx)); /* the control */
        terse__cmp_randomk_cuda_table_destroy(tx);
        bad[1].n += 1; /* n is not the instance's */
        tx = (void *)&bad;
        CU_ASSERT_EQUAL(terse__cmp_randomk_cuda_table_create(bad, 3, 0, &tx), TERSE_ERR_INVALID);
        CU_ASSERT_PTR_NULL(tx);
        bad[1] = C[5];
        bad[1].k -= 1; /* k is not the instance's */
        CU_ASSERT_EQUAL(terse__cmp_randomk_cuda_table_create(bad, 3, 0, &tx), TERSE_ERR_INVALID);
        bad[1] = C[5];
        bad[1].user |= 4u; /* an unknown flag */
        CU_ASSERT_EQUAL(terse__cmp_randomk_cuda_table_create(bad, 3, 0, &tx), TERSE_ERR_INVALID);
        bad[1] = D[5]; /* a decompress layer without a gradient, in a compress table */
        bad[1].user = 0;
        bad[1].out  = abs_out;
        CU_ASSERT_EQUAL(terse__cmp_randomk_cuda_table_create(bad, 3, 0, &tx), TERSE_ERR_INVALID);
        bad[1].dtype = TERSE_FLOAT64; /* and one of a dtype no kernel reads */
        bad[1].in    = abs_in;
        CU_ASSERT_EQUAL(terse__cmp_randomk_cuda_table_create(bad, 3, 0, &tx), TERSE_ERR_INVALID);
        CU_ASSERT_PTR_NULL(tx);
    }

    terse__cmp_randomk_cuda_table_destroy(tc);
    terse__cmp_randomk_cuda_table_destroy(td);
    for (l = 0; l < RT_NL; ++l) {
        terse__cuda_free(pay_t[l]);
        terse__cuda_free(pay_r[l]);
        terse__cuda_free(out_r[l]);
        terse__cuda_free(res_t[l]);
        terse__cuda_free(res_r[l]);
        terse__cmp_randomk_cuda_destroy(tab[l]);
        terse__cmp_randomk_cuda_destroy(ref[l]);
    }
    terse__cuda_free(base[0]);
    terse__cuda_free(base[1]);
    terse__cuda_free(obase[0]);
    terse__cuda_free(obase[1]);
    terse__cuda_free(abs_in);
    terse__cuda_free(abs_out);
    free(ub);
    CU_ASSERT(cudaStreamDestroy(s) == cudaSuccess);
}

static CU_TestInfo rt_tests[] = {
    {"tables over moving buffers, against one-layer launches", test_tables},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_randomk_cuda_suites[] = {
    {"randomk_cuda_tables", NULL, NULL, NULL, NULL, rt_tests},
    CU_SUITE_INFO_NULL,
};
