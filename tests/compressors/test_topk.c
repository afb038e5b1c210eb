/* compressors/topk.c: exact selection against a sort, ties, the sampled variant, error
 * feedback, non-finite input, and malformed payloads on guarded buffers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "compressor.h"
#include "topk.h"

typedef struct topk_run {
    const terse_cmp_ops_t *ops;
    void   *ctx;
    size_t  count, k, bytes;
} topk_run_t;

static int
topk_open(topk_run_t *t, const char *family, size_t count, double density)
{
    terse_cmp_params_t p;

    memset(&p, 0, sizeof(p));
    memset(t, 0, sizeof(*t));
    p.size   = sizeof(p);
    p.param  = density;
    p.layer  = 3;
    p.count  = count;
    p.dtype  = TERSE_FLOAT32;
    p.mem    = TERSE_MEM_HOST;
    p.nranks = 1;
    p.seed   = 11;
    t->ops   = terse__cmp_find(family);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t->ops);
    TERSE_TEST_OK(t->ops->create(&p, &t->ctx));
    if (t->ctx == NULL) {
        return 0;
    }
    TERSE_TEST_OK(t->ops->payload_size(t->ctx, count, 0, &t->bytes));
    t->count = count;
    t->k     = terse_topk_k(density, count);
    CU_ASSERT_EQUAL(t->bytes, TERSE_TOPK_HEADER_BYTES + t->k * TERSE_TOPK_PAIR_BYTES);
    return 1;
}

static terse_status_t
topk_compress(topk_run_t *t, const float *in, float *residual, uint64_t step, void *out,
              uint32_t *flags_p, double *sq_err_p)
{
    terse_buf_t b = {(void *)in, t->count, TERSE_FLOAT32, TERSE_MEM_HOST};
    terse_rng_t rng = terse_rng_make(5, TERSE_RNG_QUANT, 3, (uint32_t)step, 0);

    return t->ops->compress(t->ctx, &b, residual, &rng, out, t->bytes, flags_p, sq_err_p, NULL);
}

/* The reference: sort indices by (|v| descending, index ascending), keep k. */
static const float *ref_v;

static int
ref_cmp(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;
    float x = fabsf(ref_v[i]), y = fabsf(ref_v[j]);

    if (x != y) {
        return (x > y) ? -1 : 1;
    }
    return (i < j) ? -1 : ((i > j) ? 1 : 0);
}

static int
u32_cmp(const void *a, const void *b)
{
    uint32_t i = *(const uint32_t *)a, j = *(const uint32_t *)b;

    return (i < j) ? -1 : ((i > j) ? 1 : 0);
}

/* Checks one compress of v (residual starts at 0) against the sorted reference. */
static void
topk_check_against_sort(const char *family, const float *v, size_t n, double density)
{
    topk_run_t t;
    uint32_t *order, flags = 1, idx;
    uint8_t *out;
    float *res, val, *expect_res;
    double sq_err = -1.0, ref_err = 0.0;
    size_t j;
    terse_topk_header_t h;

    if (!topk_open(&t, family, n, density)) {
        return;
    }
    order      = malloc(n * sizeof(*order));
    res        = calloc(n, sizeof(float));
    expect_res = malloc(n * sizeof(float));
    out        = malloc(t.bytes);
    for (j = 0; j < n; ++j) {
        order[j] = (uint32_t)j;
    }
    ref_v = v;
    qsort(order, n, sizeof(*order), ref_cmp);
    qsort(order, t.k, sizeof(*order), u32_cmp);
    memcpy(expect_res, v, n * sizeof(float));
    for (j = 0; j < t.k; ++j) {
        expect_res[order[j]] = 0.0f;
    }
    for (j = 0; j < n; ++j) {
        ref_err += (double)expect_res[j] * (double)expect_res[j];
    }

    TERSE_TEST_OK(topk_compress(&t, v, res, 0, out, &flags, &sq_err));
    CU_ASSERT_EQUAL(flags, 0);
    memcpy(&h, out, sizeof(h));
    CU_ASSERT_EQUAL(h.k, t.k);
    CU_ASSERT_EQUAL(h.count, n);
    for (j = 0; j < t.k; ++j) {
        memcpy(&idx, out + TERSE_TOPK_HEADER_BYTES + 8 * j, 4);
        memcpy(&val, out + TERSE_TOPK_HEADER_BYTES + 8 * j + 4, 4);
        if ((idx != order[j]) || (val != v[order[j]])) {
            fprintf(stderr, "%s n %zu k %zu: pair %zu is (%u, %g), expected (%u, %g)\n", family,
                    n, t.k, j, idx, val, order[j], v[order[j]]);
            CU_FAIL("top-k differs from the sorted reference");
            break;
        }
    }
    CU_ASSERT_EQUAL(memcmp(res, expect_res, n * sizeof(float)), 0);
    TERSE_TEST_NEAR(sq_err, ref_err, 1e-9 * (ref_err + 1e-30) + 1e-30);

    /* without error feedback: the same payload */
    {
        uint8_t *out2 = malloc(t.bytes);
        TERSE_TEST_OK(topk_compress(&t, v, NULL, 0, out2, &flags, NULL));
        CU_ASSERT_EQUAL(memcmp(out, out2, t.bytes), 0);
        free(out2);
    }
    t.ops->destroy(t.ctx);
    free(order);
    free(res);
    free(expect_res);
    free(out);
}

static void
test_topk_k_rule(void)
{
    CU_ASSERT_EQUAL(terse_topk_k(0.1, 1000), 100);
    CU_ASSERT_EQUAL(terse_topk_k(0.01, 262144), 2622);
    CU_ASSERT_EQUAL(terse_topk_k(0.001, 10), 1);
    CU_ASSERT_EQUAL(terse_topk_k(1.0, 7), 7);
    CU_ASSERT_EQUAL(terse_topk_k(0.3, 10), 3);
    CU_ASSERT_EQUAL(terse_topk_k(0.5, 1), 1);
}

static void
test_topk_params(void)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("topk");
    double d = 0.0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ops);
    TERSE_TEST_OK(ops->param_parse("0.01", &d));
    CU_ASSERT_EQUAL(d, 0.01);
    TERSE_TEST_OK(ops->param_parse("1", &d));
    TERSE_TEST_STATUS(ops->param_parse("0", &d), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(ops->param_parse("1.5", &d), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(ops->param_parse("0.1x", &d), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(ops->param_parse("nan", &d), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(ops->param_parse(NULL, &d), TERSE_ERR_INVALID);
    CU_ASSERT((ops->caps & TERSE_CMP_CAP_SPARSE) != 0);
    CU_ASSERT((ops->caps & TERSE_CMP_CAP_RANGE) == 0);
    CU_ASSERT_PTR_NOT_NULL(ops->decompress_add);
    CU_ASSERT_PTR_NOT_NULL(terse__cmp_find("topkt"));
}

static void
test_topk_gaussian(void)
{
    size_t n = 10007;
    float *v = malloc(n * sizeof(float));

    terse_test_gaussian(101, v, n);
    topk_check_against_sort("topk", v, n, 0.01);
    topk_check_against_sort("topk", v, n, 0.1);
    topk_check_against_sort("topk", v, n, 0.001);
    topk_check_against_sort("topk", v, n, 1.0);
    free(v);
}

/* Many equal magnitudes (both signs): the lowest index must win. */
static void
test_topk_ties(void)
{
    size_t n = 5001, i;
    float *v = malloc(n * sizeof(float));

    for (i = 0; i < n; ++i) {
        int u = (int)(terse_test_uniform(7, i) * 7.0) - 3; /* -3..3 */
        v[i]  = (float)u;
    }
    topk_check_against_sort("topk", v, n, 0.01);
    topk_check_against_sort("topk", v, n, 0.1);
    topk_check_against_sort("topk", v, n, 0.5);
    topk_check_against_sort("topkt", v, n, 0.1);
    for (i = 0; i < n; ++i) {
        v[i] = (i & 1) ? -1.0f : 1.0f; /* all equal */
    }
    topk_check_against_sort("topk", v, n, 0.03);
    memset(v, 0, n * sizeof(float)); /* all zero: the first k */
    topk_check_against_sort("topk", v, n, 0.03);
    topk_check_against_sort("topkt", v, n, 0.03);
    free(v);
}

static void
test_topk_small(void)
{
    float one = -2.5f, three[3] = {1.0f, -4.0f, 4.0f};

    topk_check_against_sort("topk", &one, 1, 0.001);
    topk_check_against_sort("topk", &one, 1, 1.0);
    topk_check_against_sort("topk", three, 3, 0.5);
    topk_check_against_sort("topk", three, 3, 1.0);
    topk_check_against_sort("topkt", three, 3, 0.2);
}

/* topkt: exactly k, and (by its deterministic pad/truncate rule) the exact top-k set, both on
 * layers large enough for the sampled path and on heavy-tailed data. */
static void
test_topkt_exact_k(void)
{
    size_t n = 400000, i;
    float *v = malloc(n * sizeof(float));

    terse_test_gaussian(202, v, n);
    topk_check_against_sort("topkt", v, n, 0.01);
    topk_check_against_sort("topkt", v, n, 0.001);
    topk_check_against_sort("topkt", v, n, 0.1);
    for (i = 0; i < n; ++i) {
        v[i] = v[i] * v[i] * v[i]; /* heavy tails */
    }
    topk_check_against_sort("topkt", v, n, 0.003);
    free(v);
}

/* Kept energy of topkt against the exact top-k on gaussian data, steps with fresh streams. */
static void
test_topkt_energy(void)
{
    size_t n = 200000, step, j;
    float *v = malloc(n * sizeof(float));
    topk_run_t a, b;
    uint8_t *pa, *pb;
    uint32_t flags;
    double ea, eb, total;

    terse_test_gaussian(303, v, n);
    total = terse_test_sq_norm(v, n);
    if (!topk_open(&a, "topk", n, 0.01) || !topk_open(&b, "topkt", n, 0.01)) {
        free(v);
        return;
    }
    pa = malloc(a.bytes);
    pb = malloc(b.bytes);
    for (step = 0; step < 4; ++step) {
        TERSE_TEST_OK(topk_compress(&a, v, NULL, step, pa, &flags, &ea));
        TERSE_TEST_OK(topk_compress(&b, v, NULL, step, pb, &flags, &eb));
        CU_ASSERT(total - eb >= 0.9 * (total - ea));
        CU_ASSERT_EQUAL(memcmp(pa + TERSE_TOPK_HEADER_BYTES, pb + TERSE_TOPK_HEADER_BYTES,
                               a.bytes - TERSE_TOPK_HEADER_BYTES), 0);
        for (j = 0; j < n; j += 50000) {
            v[j] = -v[j];
        }
    }
    a.ops->destroy(a.ctx);
    b.ops->destroy(b.ctx);
    free(pa);
    free(pb);
    free(v);
}

/* decompress, decompress_add (with scale, two payloads) and fp16/bf16 input. */
static void
test_topk_decode(void)
{
    size_t n = 3000, i;
    topk_run_t t;
    float *v = malloc(n * sizeof(float)), *w = malloc(n * sizeof(float));
    float *acc = calloc(n, sizeof(float)), *dec = malloc(n * sizeof(float));
    float *ra = calloc(n, sizeof(float)), *rb = calloc(n, sizeof(float));
    uint16_t *h16 = malloc(n * sizeof(uint16_t));
    uint8_t *pa, *pb;
    uint32_t flags = 7;
    terse_buf_t ob = {dec, n, TERSE_FLOAT32, TERSE_MEM_HOST};
    terse_rng_t rng = terse_rng_make(1, TERSE_RNG_QUANT, 0, 0, 0);

    terse_test_gaussian(404, v, n);
    terse_test_gaussian(405, w, n);
    if (!topk_open(&t, "topk", n, 0.05)) {
        return;
    }
    pa = malloc(t.bytes);
    pb = malloc(t.bytes);
    TERSE_TEST_OK(topk_compress(&t, v, ra, 0, pa, &flags, NULL));
    TERSE_TEST_OK(topk_compress(&t, w, rb, 0, pb, &flags, NULL));
    TERSE_TEST_OK(t.ops->decompress_add(t.ctx, pa, t.bytes, acc, n, &flags, NULL));
    CU_ASSERT_EQUAL(flags, 0);
    TERSE_TEST_OK(t.ops->decompress_add(t.ctx, pb, t.bytes, acc, n, &flags, NULL));
    for (i = 0; i < n; ++i) {
        /* v = sent + residual, exactly */
        float sent = (v[i] - ra[i]) + (w[i] - rb[i]);
        if (acc[i] != sent) {
            CU_FAIL("decompress_add differs from the sent values");
            break;
        }
    }
    TERSE_TEST_OK(t.ops->decompress(t.ctx, pa, t.bytes, 0.5f, &ob, NULL));
    for (i = 0; i < n; ++i) {
        if (dec[i] != 0.5f * (v[i] - ra[i])) {
            CU_FAIL("decompress differs from 0.5 * the sent values");
            break;
        }
    }
    TERSE_TEST_STATUS(t.ops->decompress_add(t.ctx, pa, t.bytes, acc, n - 1, &flags, NULL),
                      TERSE_ERR_INVALID);

    /* bf16 input selects as its fp32 conversion does */
    for (i = 0; i < n; ++i) {
        h16[i] = terse_float_to_bf16(v[i]);
        w[i]   = terse_bf16_to_float(h16[i]);
    }
    {
        terse_buf_t b16 = {h16, n, TERSE_BFLOAT16, TERSE_MEM_HOST};
        TERSE_TEST_OK(t.ops->compress(t.ctx, &b16, NULL, &rng, pa, t.bytes, &flags, NULL, NULL));
        TERSE_TEST_OK(topk_compress(&t, w, NULL, 0, pb, &flags, NULL));
        CU_ASSERT_EQUAL(memcmp(pa, pb, t.bytes), 0);
        memset(ra, 0, n * sizeof(float));
        TERSE_TEST_OK(t.ops->compress(t.ctx, &b16, ra, &rng, pa, t.bytes, &flags, NULL, NULL));
        CU_ASSERT_EQUAL(memcmp(pa, pb, t.bytes), 0);
    }
    TERSE_TEST_STATUS(t.ops->payload_size(t.ctx, n - 1, 0, &i), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(t.ops->payload_size(t.ctx, n, 1, &i), TERSE_ERR_INVALID);
    {
        terse_buf_t bv = {v, n, TERSE_FLOAT32, TERSE_MEM_HOST};
        TERSE_TEST_STATUS(t.ops->compress(t.ctx, &bv, NULL, &rng, pa, t.bytes - 1, &flags, NULL,
                                          NULL),
                          TERSE_ERR_INVALID);
        bv.count = n - 1;
        TERSE_TEST_STATUS(t.ops->compress(t.ctx, &bv, NULL, &rng, pa, t.bytes, &flags, NULL,
                                          NULL),
                          TERSE_ERR_INVALID);
    }
    t.ops->destroy(t.ctx);
    free(v);
    free(w);
    free(acc);
    free(dec);
    free(ra);
    free(rb);
    free(h16);
    free(pa);
    free(pb);
}

/* sum over steps of (delivered) + final residual == sum of inputs. */
static void
test_topk_feedback(void)
{
    static const char *const fams[] = {"topk", "topkt"};
    size_t n = 4099, steps = 25, s, i, f;

    for (f = 0; f < 2; ++f) {
        topk_run_t t;
        float *g = malloc(n * sizeof(float)), *res = calloc(n, sizeof(float));
        float *acc = calloc(n, sizeof(float));
        double *sum = calloc(n, sizeof(double)), worst = 0.0;
        uint8_t *out;
        uint32_t flags;

        if (!topk_open(&t, fams[f], n, 0.01)) {
            return;
        }
        out = malloc(t.bytes);
        for (s = 0; s < steps; ++s) {
            terse_test_gaussian(500 + s, g, n);
            for (i = 0; i < n; ++i) {
                sum[i] += g[i];
            }
            TERSE_TEST_OK(topk_compress(&t, g, res, s, out, &flags, NULL));
            TERSE_TEST_OK(t.ops->decompress_add(t.ctx, out, t.bytes, acc, n, &flags, NULL));
        }
        for (i = 0; i < n; ++i) {
            double d = fabs((double)acc[i] + (double)res[i] - sum[i]);
            worst    = (d > worst) ? d : worst;
        }
        CU_ASSERT(worst < 1e-4);
        /* the residual grows to about steps^(1/2) but top-k keeps draining its largest */
        CU_ASSERT(terse_test_sq_norm(res, n) < (double)steps * (double)n);
        t.ops->destroy(t.ctx);
        free(g);
        free(res);
        free(acc);
        free(sum);
        free(out);
    }
}

static void
test_topk_nonfinite(void)
{
    size_t n = 777, i;
    topk_run_t t;
    float *v = malloc(n * sizeof(float)), *res = malloc(n * sizeof(float));
    float *acc = calloc(n, sizeof(float)), *dec = malloc(n * sizeof(float));
    uint8_t *out;
    uint32_t flags = 0;
    double sq = 0.0;
    terse_topk_header_t h;
    terse_buf_t ob = {dec, n, TERSE_FLOAT32, TERSE_MEM_HOST};
    const float bad[2] = {NAN, INFINITY};
    int b;

    if (!topk_open(&t, "topk", n, 0.02)) {
        return;
    }
    out = malloc(t.bytes);
    for (b = 0; b < 2; ++b) {
        terse_test_gaussian(606, v, n);
        for (i = 0; i < n; ++i) {
            res[i] = 1.0f;
        }
        v[123] = bad[b];
        TERSE_TEST_OK(topk_compress(&t, v, res, 0, out, &flags, &sq));
        CU_ASSERT_EQUAL(flags, TERSE_CMP_NONFINITE);
        CU_ASSERT(!isfinite(sq));
        CU_ASSERT_EQUAL(terse_test_sq_norm(res, n), 0.0);
        memcpy(&h, out, sizeof(h));
        CU_ASSERT_EQUAL(h.flags, TERSE_CMP_NONFINITE);
        flags = 0;
        TERSE_TEST_OK(t.ops->decompress_add(t.ctx, out, t.bytes, acc, n, &flags, NULL));
        CU_ASSERT_EQUAL(flags, TERSE_CMP_NONFINITE);
        TERSE_TEST_OK(t.ops->decompress(t.ctx, out, t.bytes, 1.0f, &ob, NULL));
        for (i = 0; i < n; ++i) {
            if (!isnan(acc[i]) || !isnan(dec[i])) {
                CU_FAIL("a flagged payload must write NaN everywhere");
                break;
            }
        }
    }
    t.ops->destroy(t.ctx);
    free(v);
    free(res);
    free(acc);
    free(dec);
    free(out);
}

/* Decodes `bytes` bytes copied to the end of a guarded page; expects TERSE_ERR_PAYLOAD and an
 * untouched accumulator. */
static void
topk_expect_rejected(topk_run_t *t, const void *payload, size_t bytes, const char *what)
{
    void *g     = terse_test_guarded_alloc(bytes > 0 ? bytes : 1);
    float *acc  = terse_test_guarded_alloc(t->count * sizeof(float));
    float *dec  = terse_test_guarded_alloc(t->count * sizeof(float));
    terse_buf_t ob = {dec, t->count, TERSE_FLOAT32, TERSE_MEM_HOST};
    uint32_t flags = 0;
    size_t i;
    terse_status_t st1, st2;
    int touched = 0;

    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    memcpy(g, payload, bytes);
    for (i = 0; i < t->count; ++i) {
        acc[i] = 2.0f;
    }
    st1 = t->ops->decompress_add(t->ctx, g, bytes, acc, t->count, &flags, NULL);
    st2 = t->ops->decompress(t->ctx, g, bytes, 1.0f, &ob, NULL);
    for (i = 0; i < t->count; ++i) {
        touched |= (acc[i] != 2.0f);
    }
    if ((st1 != TERSE_ERR_PAYLOAD) || (st2 != TERSE_ERR_PAYLOAD) || touched) {
        fprintf(stderr, "malformed payload (%s) accepted: %s %s touched %d\n", what,
                terse_status_name(st1), terse_status_name(st2), touched);
    }
    CU_ASSERT_EQUAL(st1, TERSE_ERR_PAYLOAD);
    CU_ASSERT_EQUAL(st2, TERSE_ERR_PAYLOAD);
    CU_ASSERT_FALSE(touched);
    terse_test_guarded_free(g, bytes > 0 ? bytes : 1);
    terse_test_guarded_free(acc, t->count * sizeof(float));
    terse_test_guarded_free(dec, t->count * sizeof(float));
}

static void
topk_patch32(uint8_t *p, size_t off, uint32_t x)
{
    memcpy(p + off, &x, 4);
}

static void
test_topk_malformed(void)
{
    size_t n = 1000, i, s;
    topk_run_t t, tt;
    float *v = malloc(n * sizeof(float));
    uint8_t *good, *bad, *big;
    uint32_t flags;
    float nan = NAN;
    uint64_t x64;

    terse_test_gaussian(707, v, n);
    if (!topk_open(&t, "topk", n, 0.01) || !topk_open(&tt, "topkt", n, 0.01)) {
        return;
    }
    good = malloc(t.bytes);
    bad  = malloc(t.bytes);
    big  = calloc(1, t.bytes + 64);
    TERSE_TEST_OK(topk_compress(&t, v, NULL, 0, good, &flags, NULL));

    /* the guarded path accepts the good payload */
    {
        void *g = terse_test_guarded_alloc(t.bytes);
        float *acc = terse_test_guarded_alloc(n * sizeof(float));
        memcpy(g, good, t.bytes);
        memset(acc, 0, n * sizeof(float));
        TERSE_TEST_OK(t.ops->decompress_add(t.ctx, g, t.bytes, acc, n, &flags, NULL));
        TERSE_TEST_STATUS(tt.ops->decompress_add(tt.ctx, g, t.bytes, acc, n, &flags, NULL),
                          TERSE_ERR_PAYLOAD); /* family field */
        terse_test_guarded_free(g, t.bytes);
        terse_test_guarded_free(acc, n * sizeof(float));
    }
    topk_expect_rejected(&t, good, t.bytes - 1, "truncated by 1");
    topk_expect_rejected(&t, good, t.bytes - 8, "truncated by a pair");
    topk_expect_rejected(&t, good, 16, "half a header");
    topk_expect_rejected(&t, good, 0, "empty");
    memcpy(big, good, t.bytes);
    topk_expect_rejected(&t, big, t.bytes + 8, "oversized");

#define PATCHED(_what, _stmt)                                                                  \
    do {                                                                                       \
        memcpy(bad, good, t.bytes);                                                            \
        _stmt;                                                                                 \
        topk_expect_rejected(&t, bad, t.bytes, _what);                                         \
    } while (0)
    PATCHED("magic", bad[0] ^= 1);
    PATCHED("version", bad[4] = 9);
    PATCHED("family", bad[6] = 2);
    PATCHED("unknown flag", topk_patch32(bad, 8, 2));
    PATCHED("reserved", topk_patch32(bad, 12, 1));
    PATCHED("count", (x64 = n + 1, memcpy(bad + 16, &x64, 8)));
    PATCHED("k", (x64 = t.k - 1, memcpy(bad + 24, &x64, 8)));
    PATCHED("index == count", topk_patch32(bad, TERSE_TOPK_HEADER_BYTES + 8 * (t.k - 1),
                                           (uint32_t)n));
    PATCHED("index huge", topk_patch32(bad, TERSE_TOPK_HEADER_BYTES, 0xffffffffu));
    {
        uint32_t i0;
        memcpy(&i0, good + TERSE_TOPK_HEADER_BYTES, 4);
        PATCHED("duplicate index", topk_patch32(bad, TERSE_TOPK_HEADER_BYTES + 8, i0));
    }
    PATCHED("decreasing", topk_patch32(bad, TERSE_TOPK_HEADER_BYTES + 8 * (t.k - 1), 0));
    PATCHED("nan without flag", memcpy(bad + TERSE_TOPK_HEADER_BYTES + 4, &nan, 4));
#undef PATCHED

    /* random bytes: exact size (header kept valid or not), and random sizes */
    for (s = 0; s < 40; ++s) {
        size_t len = (s < 20) ? t.bytes : (size_t)(terse_test_uniform(900 + s, 0) * 2.0 * t.bytes);
        uint8_t *r = malloc(len + 1);
        for (i = 0; i < len; ++i) {
            r[i] = (uint8_t)(terse_test_uniform(800 + s, i) * 256.0);
        }
        if ((s >= 10) && (s < 20)) {
            memcpy(r, good, TERSE_TOPK_HEADER_BYTES); /* valid header, random pairs */
        }
        if (len != t.bytes || s < 20) {
            topk_expect_rejected(&t, r, len, "random bytes");
        }
        free(r);
    }
    t.ops->destroy(t.ctx);
    tt.ops->destroy(tt.ctx);
    free(v);
    free(good);
    free(bad);
    free(big);
}

CU_TestInfo test_topk_tests[] = {
    {"k rule", test_topk_k_rule},
    {"parameters and caps", test_topk_params},
    {"gaussian vs sort", test_topk_gaussian},
    {"ties: lowest index wins", test_topk_ties},
    {"count 1, 3, k == count", test_topk_small},
    {"topkt exactly k (sampled path)", test_topkt_exact_k},
    {"topkt kept energy", test_topkt_energy},
    {"decode, scale, bf16 input", test_topk_decode},
    {"error feedback tracks the sum", test_topk_feedback},
    {"non-finite input", test_topk_nonfinite},
    {"malformed payloads", test_topk_malformed},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_topk_suites[] = {
    {"compressors/topk", NULL, NULL, NULL, NULL, test_topk_tests},
    CU_SUITE_INFO_NULL,
};
