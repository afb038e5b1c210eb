/* compressors/topk_cuda.cu (label gpu): exact top-k kernels against the CPU reference (topk
 * and topkt), bit for bit: payload, residual, decompress, decompress_add; ties (few distinct
 * magnitudes, all equal, all zero), the candidate-overflow path, fp16/bf16 inputs, odd and
 * tiny sizes, non-finite inputs, corrupted payloads (device flag, NaN output). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "terse_test_cuda.h"
#include "compressor.h"
#include "cuda_util.h"
#include "topk.h"
#include "topk_cuda.h"

/* input kinds: 0 gaussian, 1 few distinct magnitudes (ties), 2 all equal, 3 all zero,
 * 4 gaussian with a NaN, 5 gaussian with an Inf, 6 gaussian with its last sixteenth 100x
 * larger (the large values sit together in a few tiles) */
static void *
tc_make(int kind, uint64_t seed, size_t n, terse_dtype_t dt)
{
    float *x;
    void *out;
    size_t i;

    if ((kind == 0) || (kind == 4) || (kind == 5)) {
        return terse_test_input(seed, n, dt, 1.0f, (kind >= 4) ? kind - 3 : 0);
    }
    if (kind == 6) {
        float *g = terse_test_input(seed, n, TERSE_FLOAT32, 1.0f, 0);
        for (i = n - n / 16; i < n; ++i) {
            g[i] *= 100.0f;
        }
        out = malloc((n + 1) * 4);
        terse__convert_from_f32(g, 1.0f, out, dt, n);
        free(g);
        return out;
    }
    x   = malloc((n + 1) * sizeof(float));
    out = malloc((n + 1) * 4);
    for (i = 0; i < n; ++i) {
        if (kind == 1) {
            double u = terse_test_uniform(seed, i);
            x[i]     = (float)((int)(u * 7.0) - 3) * 0.5f; /* -1.5 .. 1.5, ties in |v| */
        } else {
            x[i] = (kind == 2) ? 1.0f : 0.0f;
        }
    }
    terse__convert_from_f32(x, 1.0f, out, dt, n);
    free(x);
    return out;
}

static void
tc_case(const char *family, int kind, size_t n, double density, terse_dtype_t dt, int with_res,
        uint64_t seed)
{
    const terse_cmp_ops_t *ops = terse__cmp_find(family);
    terse_cmp_params_t p;
    void *ctx = NULL, *cuda = NULL, *in, *d_in, *d_out, *d_dec, *dec_c, *dec_g;
    float *res_c = NULL, *res_g = NULL, *d_res = NULL, *acc_c, *acc_g, *d_acc;
    uint8_t *pay_c, *pay_g;
    size_t bytes = 0, k;
    uint32_t flags_c = 0, flags_g = 0;
    double err_c = 0.0, err_g = 0.0, tot = 0.0;
    terse_buf_t buf;
    terse_rng_t rng = terse_rng_make(seed, TERSE_RNG_TEST, 2, 4, 1);
    int fail = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ops);
    memset(&p, 0, sizeof(p));
    p.size   = sizeof(p);
    p.param  = density;
    p.layer  = 2;
    p.count  = n;
    p.dtype  = dt;
    p.mem    = TERSE_MEM_HOST;
    p.nranks = 1;
    p.seed   = seed;
    TERSE_TEST_OK(ops->create(&p, &ctx));
    TERSE_TEST_OK(ops->payload_size(ctx, n, 0, &bytes));
    k = terse_topk_k(density, n);
    CU_ASSERT_EQUAL_FATAL(bytes, TERSE_TOPK_HEADER_BYTES + k * TERSE_TOPK_PAIR_BYTES);
    TERSE_TEST_OK(terse__cmp_topk_cuda_create(n, k,
                                              (strcmp(family, "topk") == 0)
                                                  ? TERSE_TOPK_FAMILY_EXACT
                                                  : TERSE_TOPK_FAMILY_SAMPLED,
                                              &cuda));
    in = tc_make(kind, seed, n, dt);
    if (with_res) {
        res_c = terse_test_input(seed + 1, n, TERSE_FLOAT32, 0.25f, 0);
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
    {
        /* energy of v: the sampled CPU path reports total - kept, exact only up to the
         * rounding of total */
        size_t i;
        for (i = 0; i < n; ++i) {
            double x = terse__load_f32(in, dt, i) + (with_res ? res_c[i] : 0.0f);
            tot += x * x;
        }
    }
    TERSE_TEST_OK(ops->compress(ctx, &buf, res_c, &rng, pay_c, bytes, &flags_c, &err_c, NULL));
    TERSE_TEST_OK(terse__cmp_topk_cuda_compress(cuda, d_in, dt, n, d_res, &rng, d_out, bytes,
                                                NULL, NULL, NULL));
    TERSE_TEST_OK(terse__cmp_topk_cuda_stat(cuda, NULL, &flags_g, &err_g));
    terse_test_cuda_get(pay_g, d_out, bytes);
    if (memcmp(pay_c, pay_g, bytes) != 0) {
        size_t i;
        for (i = 0; (i < bytes) && (pay_c[i] == pay_g[i]); ++i) {
        }
        fprintf(stderr, "payload differs at byte %zu of %zu\n", i, bytes);
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
        TERSE_TEST_NEAR(err_g, err_c, 1e-9 * err_c + 1e-12 * tot + 1e-30);
    } else {
        CU_ASSERT(isinf(err_g));
    }
    if (fail) {
        fprintf(stderr, "case: %s kind %d n %zu density %g dtype %d res %d\n", family, kind, n,
                density, (int)dt, with_res);
    }
    CU_ASSERT(!fail);

    /* decoders, from the GPU payload */
    {
        terse_buf_t ob;
        size_t ob_bytes = n * terse_dtype_size(dt);
        dec_c    = malloc(ob_bytes + 4);
        dec_g    = malloc(ob_bytes + 4);
        d_dec    = terse_test_cuda_dev(NULL, ob_bytes);
        ob.ptr   = dec_c;
        ob.count = n;
        ob.dtype = dt;
        ob.mem   = TERSE_MEM_HOST;
        TERSE_TEST_OK(ops->decompress(ctx, pay_c, bytes, 0.5f, &ob, NULL));
        TERSE_TEST_OK(terse__cmp_topk_cuda_decompress(cuda, d_out, bytes, 0.5f, d_dec, dt, n,
                                                      NULL));
        terse_test_cuda_get(dec_g, d_dec, ob_bytes);
        CU_ASSERT(memcmp(dec_c, dec_g, ob_bytes) == 0);
        acc_c = terse_test_input(seed + 2, n, TERSE_FLOAT32, 1.0f, 0);
        acc_g = malloc((n + 1) * sizeof(float));
        d_acc = terse_test_cuda_dev(acc_c, n * sizeof(float));
        TERSE_TEST_OK(ops->decompress_add(ctx, pay_c, bytes, acc_c, n, &flags_c, NULL));
        TERSE_TEST_OK(terse__cmp_topk_cuda_decompress_add(cuda, d_out, bytes, d_acc, n, NULL,
                                                          NULL));
        terse_test_cuda_get(acc_g, d_acc, n * sizeof(float));
        CU_ASSERT(memcmp(acc_c, acc_g, n * sizeof(float)) == 0);
        TERSE_TEST_OK(terse__cmp_topk_cuda_stat(cuda, NULL, &flags_g, NULL));
        CU_ASSERT_EQUAL(flags_g & TERSE_CU_ERR_PAYLOAD, 0);
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
    terse__cmp_topk_cuda_destroy(cuda);
    ops->destroy(ctx);
}

static void
test_topk_parity(void)
{
    static const size_t sizes[]     = {1, 31, 33, 1000, 1000003};
    static const double densities[] = {0.001, 0.01, 0.1, 1.0};
    static const terse_dtype_t dts[] = {TERSE_FLOAT32, TERSE_FLOAT16, TERSE_BFLOAT16};
    size_t s, d, t;

    for (s = 0; s < 5; ++s) {
        for (d = 0; d < 4; ++d) {
            for (t = 0; t < 3; ++t) {
                tc_case((d % 2) ? "topkt" : "topk", 0, sizes[s], densities[d], dts[t],
                        (int)((s + d + t) % 2), 10 + s * 31 + d * 7 + t);
            }
        }
    }
}

static void
test_topk_ties(void)
{
    tc_case("topk", 1, 100003, 0.01, TERSE_FLOAT32, 0, 1);
    tc_case("topk", 1, 100003, 0.3, TERSE_FLOAT32, 1, 2);
    tc_case("topk", 1, 1000003, 0.05, TERSE_BFLOAT16, 0, 3);
    tc_case("topkt", 1, 100003, 0.01, TERSE_FLOAT32, 0, 4);
    tc_case("topk", 2, 100003, 0.01, TERSE_FLOAT32, 0, 5);   /* every key equal */
    tc_case("topk", 3, 33, 0.5, TERSE_FLOAT32, 0, 6);        /* all zero */
    tc_case("topk", 3, 100003, 0.01, TERSE_FLOAT16, 0, 7);
    /* candidates overflow their buffer (cap = max(2^20, 4 k) < n): full-pass fallback */
    tc_case("topk", 2, 3000000, 0.01, TERSE_FLOAT32, 0, 8);
    tc_case("topk", 1, 3000000, 0.001, TERSE_FLOAT32, 1, 9);
}

/* The sampled path's two ways out: forced to miss (the radix kernels take over on the v the
 * sampled pass prepared in the residual), and switched off (the radix path alone, persistent
 * tile loops over many tiles). */
static void
test_topk_paths(void)
{
    int mode;

    for (mode = 0; mode <= 2; mode += 2) {
        terse__cmp_topk_cuda_tune(mode);
        tc_case("topk", 0, 1000003, 0.01, TERSE_FLOAT32, 1, 30 + mode);
        tc_case("topkt", 1, 300007, 0.05, TERSE_BFLOAT16, 1, 31 + mode);
        tc_case("topk", 4, 200003, 0.01, TERSE_FLOAT32, 1, 32 + mode);
        tc_case("topk", 0, 3000017, 0.001, TERSE_FLOAT16, 0, 33 + mode);
    }
    terse__cmp_topk_cuda_tune(1);
    /* the sampled path itself over many tiles (look-back across windows of 32 tiles), with
     * and without a residual, and a layer whose candidates cluster in a few tiles */
    tc_case("topk", 0, 4000037, 0.01, TERSE_FLOAT32, 1, 40);
    tc_case("topkt", 0, 4000037, 0.002, TERSE_FLOAT32, 0, 41);
    tc_case("topk", 6, 2000003, 0.01, TERSE_FLOAT32, 1, 42);
}

static void
test_topk_nonfinite(void)
{
    tc_case("topk", 4, 100003, 0.01, TERSE_FLOAT32, 1, 20);
    tc_case("topk", 5, 100003, 0.01, TERSE_FLOAT16, 0, 21);
    tc_case("topkt", 4, 1000, 0.1, TERSE_FLOAT32, 0, 22);
}

static void
test_topk_corrupt(void)
{
    const size_t n = 10000, k = 100;
    const size_t bytes = TERSE_TOPK_HEADER_BYTES + k * TERSE_TOPK_PAIR_BYTES;
    void *cuda, *in = terse_test_input(50, n, TERSE_FLOAT32, 1.0f, 0), *d_in, *d_pay, *d_out;
    uint8_t *good = malloc(bytes), *bad = malloc(bytes);
    float *out = malloc(n * sizeof(float));
    uint32_t flags;
    int v;

    TERSE_TEST_OK(terse__cmp_topk_cuda_create(n, k, TERSE_TOPK_FAMILY_EXACT, &cuda));
    d_in  = terse_test_cuda_dev(in, n * sizeof(float));
    d_pay = terse_test_cuda_dev(NULL, bytes);
    d_out = terse_test_cuda_dev(NULL, n * sizeof(float));
    TERSE_TEST_OK(terse__cmp_topk_cuda_compress(cuda, d_in, TERSE_FLOAT32, n, NULL, NULL, d_pay,
                                                bytes, NULL, NULL, NULL));
    terse_test_cuda_get(good, d_pay, bytes);
    for (v = 0; v < 13; ++v) {
        size_t use = bytes;
        terse_status_t want = TERSE_OK, got;
        uint8_t *pairs = bad + TERSE_TOPK_HEADER_BYTES;
        uint32_t u32;
        float f;
        memcpy(bad, good, bytes);
        switch (v) {
        case 0: bad[1] ^= 1; break;                 /* magic */
        case 1: bad[4] = 9; break;                  /* version */
        case 2: bad[6] = 2; break;                  /* family */
        case 3: bad[8] |= 4; break;                 /* unknown flag */
        case 4: bad[12] = 1; break;                 /* reserved */
        case 5: bad[16] ^= 1; break;                /* count */
        case 6: bad[24] ^= 1; break;                /* k */
        case 7: u32 = (uint32_t)n; memcpy(pairs + 8 * (k - 1), &u32, 4); break; /* idx >= n */
        case 8: memcpy(pairs + 8 * 10, pairs + 8 * 11, 4); break;             /* duplicate */
        case 9: /* decreasing */
            memcpy(&u32, pairs + 8 * 20, 4);
            memcpy(pairs + 8 * 20, pairs + 8 * 21, 4);
            memcpy(pairs + 8 * 21, &u32, 4);
            break;
        case 10: f = NAN; memcpy(pairs + 8 * 5 + 4, &f, 4); break;      /* NaN, no flag */
        case 11: f = -INFINITY; memcpy(pairs + 4, &f, 4); break;        /* Inf, no flag */
        default: use = bytes - 8; want = TERSE_ERR_PAYLOAD; break;      /* truncated */
        }
        CU_ASSERT_FATAL(terse__cuda_memcpy(d_pay, bad, bytes) == TERSE_OK);
        got = terse__cmp_topk_cuda_decompress(cuda, d_pay, use, 1.0f, d_out, TERSE_FLOAT32, n,
                                              NULL);
        CU_ASSERT_EQUAL(got, want);
        TERSE_TEST_OK(terse__cmp_topk_cuda_stat(cuda, NULL, &flags, NULL));
        CU_ASSERT(flags & TERSE_CU_ERR_PAYLOAD);
        terse_test_cuda_get(out, d_out, n * sizeof(float));
        if (!terse_test_all_nan(out, TERSE_FLOAT32, n)) {
            fprintf(stderr, "topk corruption %d: output not all NaN\n", v);
            CU_FAIL("output not NaN");
        }
        CU_ASSERT_FATAL(terse__cuda_memset_async(d_out, 0, n * sizeof(float), NULL) == TERSE_OK);
        got = terse__cmp_topk_cuda_decompress_add(cuda, d_pay, use, d_out, n, NULL, NULL);
        CU_ASSERT_EQUAL(got, want);
        TERSE_TEST_OK(terse__cmp_topk_cuda_stat(cuda, NULL, &flags, NULL));
        CU_ASSERT(flags & TERSE_CU_ERR_PAYLOAD);
        terse_test_cuda_get(out, d_out, n * sizeof(float));
        CU_ASSERT(terse_test_all_nan(out, TERSE_FLOAT32, n));
    }
    CU_ASSERT_FATAL(terse__cuda_memcpy(d_pay, good, bytes) == TERSE_OK);
    TERSE_TEST_OK(terse__cmp_topk_cuda_decompress(cuda, d_pay, bytes, 1.0f, d_out, TERSE_FLOAT32,
                                                  n, NULL));
    TERSE_TEST_OK(terse__cmp_topk_cuda_stat(cuda, NULL, &flags, NULL));
    CU_ASSERT_EQUAL(flags, 0);
    terse__cuda_free(d_in);
    terse__cuda_free(d_pay);
    terse__cuda_free(d_out);
    terse__cmp_topk_cuda_destroy(cuda);
    free(in);
    free(good);
    free(bad);
    free(out);
}

/* Multi-tensor tables (rule 10) against the one-layer launchers on twin instances, bit for
 * bit: payloads (one at an address that is not 8-byte aligned), residuals, flags, the decoded
 * sums (SET then ADD) over three steps whose inputs sit at offsets from two alternating
 * bases; a NaN layer, tie-heavy and sampled-size layers, k = n; a corrupted payload poisons
 * only its own layer; create's rejections. */
#define TT_L 8
static void
test_topk_tables(void)
{
    static const size_t ns[TT_L]   = {1, 33, 1000, 4097, 100003, 70001, 1 << 20, 300007};
    static const double dens[TT_L] = {1.0, 0.5, 0.01, 0.1, 0.01, 0.01, 0.001, 0.05};
    static const int kinds[TT_L]   = {0, 0, 1, 0, 1, 4, 0, 6};
    static const terse_dtype_t dts[3] = {TERSE_FLOAT32, TERSE_FLOAT16, TERSE_BFLOAT16};
    void *tc[TT_L], *rc[TT_L], *tab_c = NULL, *tab_s = NULL, *tab_a = NULL, *bad_tab = NULL;
    float *res_t[TT_L], *res_r[TT_L];
    size_t k[TT_L], in_off[TT_L], pay_off[TT_L], acc_off[TT_L], in_total = 0, pay_total = 0,
           acc_total = 0, l;
    uint8_t *base[2], *pay_t, *pay_r, *acc_base, *h_t, *h_r;
    float *acc_r[TT_L];
    terse_cu_tlayer_t L[TT_L];
    int step, fail = 0;

    for (l = 0; l < TT_L; ++l) {
        const unsigned fam = (l % 2) ? TERSE_TOPK_FAMILY_SAMPLED : TERSE_TOPK_FAMILY_EXACT;
        k[l] = terse_topk_k(dens[l], ns[l]);
        TERSE_TEST_OK(terse__cmp_topk_cuda_create(ns[l], k[l], fam, &tc[l]));
        TERSE_TEST_OK(terse__cmp_topk_cuda_create(ns[l], k[l], fam, &rc[l]));
        in_off[l]  = in_total;
        in_total  += TERSE_ALIGN_UP(ns[l] * terse_dtype_size(dts[l % 3]), (size_t)16);
        /* layer 3's payload 4 bytes past an 8-byte boundary: the unaligned pair stores */
        pay_off[l] = pay_total + ((l == 3) ? 4 : 0);
        pay_total += TERSE_ALIGN_UP(TERSE_TOPK_HEADER_BYTES + 8 * k[l] + 4, (size_t)16);
        acc_off[l] = acc_total;
        acc_total += TERSE_ALIGN_UP(ns[l] * 4, (size_t)16);
        res_t[l] = (l % 3 == 2) ? NULL : terse_test_cuda_dev(NULL, ns[l] * 4);
        res_r[l] = (l % 3 == 2) ? NULL : terse_test_cuda_dev(NULL, ns[l] * 4);
        acc_r[l] = terse_test_cuda_dev(NULL, ns[l] * 4);
    }
    base[0]  = terse_test_cuda_dev(NULL, in_total);
    base[1]  = terse_test_cuda_dev(NULL, in_total);
    pay_t    = terse_test_cuda_dev(NULL, pay_total);
    pay_r    = terse_test_cuda_dev(NULL, pay_total);
    acc_base = terse_test_cuda_dev(NULL, acc_total);
    h_t      = malloc(TERSE_MAX(pay_total, acc_total));
    h_r      = malloc(TERSE_MAX(pay_total, acc_total));
    for (l = 0; l < TT_L; ++l) {
        L[l] = (terse_cu_tlayer_t){tc[l], (const void *)(uintptr_t)in_off[l], res_t[l],
                                   pay_t + pay_off[l], ns[l], dts[l % 3], TERSE_CU_TUSER_IN};
    }
    TERSE_TEST_OK(terse__cmp_topk_cuda_table_create(L, TT_L, TERSE_CU_T_COMPRESS, &tab_c));
    for (l = 0; l < TT_L; ++l) {
        L[l] = (terse_cu_tlayer_t){tc[l], pay_t + pay_off[l], NULL,
                                   (void *)(uintptr_t)acc_off[l], ns[l], TERSE_FLOAT32,
                                   TERSE_CU_TUSER_OUT};
    }
    TERSE_TEST_OK(terse__cmp_topk_cuda_table_create(L, TT_L, TERSE_CU_T_DECOMPRESS_SET, &tab_s));
    TERSE_TEST_OK(terse__cmp_topk_cuda_table_create(L, TT_L, TERSE_CU_T_DECOMPRESS_ADD, &tab_a));

    for (step = 0; step < 3; ++step) {
        uint8_t *b = base[step & 1];
        for (l = 0; l < TT_L; ++l) {
            void *in = tc_make((step == 1) ? 0 : kinds[l], 100 + 10 * l + step, ns[l], dts[l % 3]);
            CU_ASSERT_FATAL(terse__cuda_memcpy(b + in_off[l], in,
                                               ns[l] * terse_dtype_size(dts[l % 3])) == TERSE_OK);
            free(in);
            TERSE_TEST_OK(terse__cmp_topk_cuda_compress(rc[l], b + in_off[l], dts[l % 3], ns[l],
                                                        res_r[l], NULL, pay_r + pay_off[l],
                                                        TERSE_TOPK_HEADER_BYTES + 8 * k[l], NULL,
                                                        NULL, NULL));
        }
        TERSE_TEST_OK(terse__cmp_topk_cuda_table_run(tab_c, b, NULL));
        for (l = 0; l < TT_L; ++l) {
            const size_t bytes = TERSE_TOPK_HEADER_BYTES + 8 * k[l];
            uint32_t f_t, f_r;
            double e_t, e_r;
            terse_test_cuda_get(h_t, pay_t + pay_off[l], bytes);
            terse_test_cuda_get(h_r, pay_r + pay_off[l], bytes);
            if (memcmp(h_t, h_r, bytes) != 0) {
                fprintf(stderr, "table step %d layer %zu: payload differs\n", step, l);
                fail = 1;
            }
            if (res_t[l] != NULL) {
                terse_test_cuda_get(h_t, res_t[l], ns[l] * 4);
                terse_test_cuda_get(h_r, res_r[l], ns[l] * 4);
                if (memcmp(h_t, h_r, ns[l] * 4) != 0) {
                    fprintf(stderr, "table step %d layer %zu: residual differs\n", step, l);
                    fail = 1;
                }
            }
            TERSE_TEST_OK(terse__cmp_topk_cuda_stat(tc[l], NULL, &f_t, &e_t));
            TERSE_TEST_OK(terse__cmp_topk_cuda_stat(rc[l], NULL, &f_r, &e_r));
            CU_ASSERT_EQUAL(f_t, f_r);
            CU_ASSERT_EQUAL(f_t & TERSE_CMP_NONFINITE,
                            ((step != 1) && (kinds[l] == 4)) ? TERSE_CMP_NONFINITE : 0u);
            if (isfinite(e_r)) {
                TERSE_TEST_NEAR(e_t, e_r, 1e-9 * e_r + 1e-30);
            } else {
                CU_ASSERT(isinf(e_t));
            }
        }
        /* decode: SET then ADD of the same payloads (reference: memset and two adds); the
         * last step corrupts layer 2's magic first */
        if (step == 2) {
            uint8_t x = 0x55;
            CU_ASSERT_FATAL(terse__cuda_memcpy(pay_t + pay_off[2] + 1, &x, 1) == TERSE_OK);
            CU_ASSERT_FATAL(terse__cuda_memcpy(pay_r + pay_off[2] + 1, &x, 1) == TERSE_OK);
        }
        TERSE_TEST_OK(terse__cmp_topk_cuda_table_run(tab_s, acc_base, NULL));
        TERSE_TEST_OK(terse__cmp_topk_cuda_table_run(tab_a, acc_base, NULL));
        for (l = 0; l < TT_L; ++l) {
            const size_t bytes = TERSE_TOPK_HEADER_BYTES + 8 * k[l];
            uint32_t f_t, f_r;
            int q;
            CU_ASSERT_FATAL(terse__cuda_memset_async(acc_r[l], 0, ns[l] * 4, NULL) == TERSE_OK);
            for (q = 0; q < 2; ++q) {
                terse_status_t st = terse__cmp_topk_cuda_decompress_add(
                    rc[l], pay_r + pay_off[l], bytes, acc_r[l], ns[l], NULL, NULL);
                CU_ASSERT(st == TERSE_OK);
            }
            terse_test_cuda_get(h_t, acc_base + acc_off[l], ns[l] * 4);
            terse_test_cuda_get(h_r, acc_r[l], ns[l] * 4);
            if (memcmp(h_t, h_r, ns[l] * 4) != 0) {
                fprintf(stderr, "table step %d layer %zu: decoded sum differs\n", step, l);
                fail = 1;
            }
            if ((step == 2) && (l == 2) && !terse_test_all_nan(h_t, TERSE_FLOAT32, ns[l])) {
                fprintf(stderr, "table: the corrupted layer is not all NaN\n");
                fail = 1;
            }
            TERSE_TEST_OK(terse__cmp_topk_cuda_stat(tc[l], NULL, &f_t, NULL));
            TERSE_TEST_OK(terse__cmp_topk_cuda_stat(rc[l], NULL, &f_r, NULL));
            CU_ASSERT_EQUAL(f_t, f_r);
            CU_ASSERT_EQUAL((f_t & TERSE_CU_ERR_PAYLOAD) != 0, (step == 2) && (l == 2));
        }
    }
    CU_ASSERT(!fail);

    /* rejections: an instance twice, a count that is not the instance's, unknown flags, a
     * residual or a user input in a decode table, no layers */
    L[1].cuda = L[0].cuda;
    CU_ASSERT_EQUAL(terse__cmp_topk_cuda_table_create(L, 2, TERSE_CU_T_DECOMPRESS_ADD, &bad_tab),
                    TERSE_ERR_INVALID);
    L[1].cuda = tc[1];
    L[1].n    = ns[1] + 1;
    CU_ASSERT_EQUAL(terse__cmp_topk_cuda_table_create(L, 2, TERSE_CU_T_DECOMPRESS_ADD, &bad_tab),
                    TERSE_ERR_INVALID);
    L[1].n    = ns[1];
    L[1].user = 4;
    CU_ASSERT_EQUAL(terse__cmp_topk_cuda_table_create(L, 2, TERSE_CU_T_DECOMPRESS_ADD, &bad_tab),
                    TERSE_ERR_INVALID);
    L[1].user     = TERSE_CU_TUSER_OUT;
    L[1].residual = res_t[1];
    CU_ASSERT_EQUAL(terse__cmp_topk_cuda_table_create(L, 2, TERSE_CU_T_DECOMPRESS_ADD, &bad_tab),
                    TERSE_ERR_INVALID);
    L[1].residual = NULL;
    L[1].user     = TERSE_CU_TUSER_OUT | TERSE_CU_TUSER_IN;
    CU_ASSERT_EQUAL(terse__cmp_topk_cuda_table_create(L, 2, TERSE_CU_T_DECOMPRESS_ADD, &bad_tab),
                    TERSE_ERR_INVALID);
    CU_ASSERT_EQUAL(terse__cmp_topk_cuda_table_create(L, 0, TERSE_CU_T_COMPRESS, &bad_tab),
                    TERSE_ERR_INVALID);
    CU_ASSERT_PTR_NULL(bad_tab);

    terse__cmp_topk_cuda_table_destroy(tab_c);
    terse__cmp_topk_cuda_table_destroy(tab_s);
    terse__cmp_topk_cuda_table_destroy(tab_a);
    for (l = 0; l < TT_L; ++l) {
        terse__cmp_topk_cuda_destroy(tc[l]);
        terse__cmp_topk_cuda_destroy(rc[l]);
        terse__cuda_free(res_t[l]);
        terse__cuda_free(res_r[l]);
        terse__cuda_free(acc_r[l]);
    }
    terse__cuda_free(base[0]);
    terse__cuda_free(base[1]);
    terse__cuda_free(pay_t);
    terse__cuda_free(pay_r);
    terse__cuda_free(acc_base);
    free(h_t);
    free(h_r);
}

static CU_TestInfo topk_cuda_tests[] = {
    {"parity (sizes x densities x dtypes)", test_topk_parity},
    {"ties and candidate overflow", test_topk_ties},
    {"sampled path: miss, off, many tiles, clustered", test_topk_paths},
    {"non-finite input", test_topk_nonfinite},
    {"multi-tensor tables against one-layer launches", test_topk_tables},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo topk_cuda_corrupt_tests[] = {
    {"corrupted payloads", test_topk_corrupt},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_topk_cuda_suites[] = {
    {"topk_cuda", NULL, NULL, NULL, NULL, topk_cuda_tests},
    {"topk_cuda_corrupt", NULL, NULL, NULL, NULL, topk_cuda_corrupt_tests},
    CU_SUITE_INFO_NULL,
};
