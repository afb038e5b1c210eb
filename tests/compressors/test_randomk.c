/* compressors/randomk.c: shared indices (identical per (base, layer, step), distinct, in
 * range, uniform), summability across simulated ranks, error feedback, non-finite input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "compressor.h"
#include "randomk.h"
#include "topk.h"

typedef struct rk_run {
    const terse_cmp_ops_t *ops;
    void   *ctx;
    size_t  count, k, bytes;
} rk_run_t;

static int
rk_open(rk_run_t *t, size_t count, double density, uint32_t layer)
{
    terse_cmp_params_t p;

    memset(&p, 0, sizeof(p));
    memset(t, 0, sizeof(*t));
    p.size   = sizeof(p);
    p.param  = density;
    p.layer  = layer;
    p.count  = count;
    p.dtype  = TERSE_FLOAT32;
    p.mem    = TERSE_MEM_HOST;
    p.nranks = 1;
    t->ops   = terse__cmp_find("randomk");
    CU_ASSERT_PTR_NOT_NULL_FATAL(t->ops);
    TERSE_TEST_OK(t->ops->create(&p, &t->ctx));
    if (t->ctx == NULL) {
        return 0;
    }
    t->count = count;
    t->k     = terse_topk_k(density, count);
    TERSE_TEST_OK(t->ops->payload_size(t->ctx, count, 0, &t->bytes));
    CU_ASSERT_EQUAL(t->bytes, t->k * sizeof(float));
    return 1;
}

static terse_rng_t
rk_stream(uint64_t base, uint32_t layer, uint32_t step)
{
    return terse_rng_make(base, TERSE_RNG_RANDOMK, layer, step, TERSE_RNG_SHARED);
}

static terse_status_t
rk_compress(rk_run_t *t, const float *in, float *residual, const terse_rng_t *rng, float *out,
            uint32_t *flags_p, double *sq_err_p)
{
    terse_buf_t b = {(void *)in, t->count, TERSE_FLOAT32, TERSE_MEM_HOST};

    return t->ops->compress(t->ctx, &b, residual, rng, out, t->bytes, flags_p, sq_err_p, NULL);
}

/* The first k positions of the permutation, distinct and in range. */
static int
rk_indices(const terse_rng_t *rng, size_t count, size_t k, uint32_t *idx)
{
    terse_randomk_perm_t p = terse_randomk_perm_make(rng, count);
    unsigned char *seen    = calloc(count, 1);
    size_t j;
    int ok = 1;

    for (j = 0; j < k; ++j) {
        uint64_t x = terse_randomk_index(&p, j);
        if ((x >= count) || seen[x]) {
            ok = 0;
            break;
        }
        seen[x] = 1;
        idx[j]  = (uint32_t)x;
    }
    free(seen);
    return ok;
}

static void
test_randomk_permutation(void)
{
    static const size_t counts[] = {1, 2, 3, 4, 5, 17, 1000, 4097, 65536, 100003};
    size_t c;

    for (c = 0; c < sizeof(counts) / sizeof(counts[0]); ++c) {
        terse_rng_t rng = rk_stream(9, 1, (uint32_t)c);
        uint32_t *idx   = malloc(counts[c] * sizeof(uint32_t));
        /* the whole permutation is a bijection of [0, count) */
        CU_ASSERT(rk_indices(&rng, counts[c], counts[c], idx));
        free(idx);
    }
}

static void
test_randomk_shared(void)
{
    size_t n = 50000, k = 500, j, overlap = 0;
    uint32_t *a = malloc(k * 4), *b = malloc(k * 4), *c = malloc(k * 4), *d = malloc(k * 4);
    unsigned char *in_a = calloc(n, 1);
    terse_rng_t r1 = rk_stream(77, 4, 10), r2 = rk_stream(77, 4, 10);
    terse_rng_t r3 = rk_stream(77, 4, 11), r4 = rk_stream(77, 5, 10);
    double expect, sd;

    CU_ASSERT(rk_indices(&r1, n, k, a));
    CU_ASSERT(rk_indices(&r2, n, k, b));
    CU_ASSERT(rk_indices(&r3, n, k, c));
    CU_ASSERT(rk_indices(&r4, n, k, d));
    CU_ASSERT_EQUAL(memcmp(a, b, k * 4), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(a, c, k * 4), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(a, d, k * 4), 0);
    /* another step draws an independent set: overlap ~ hypergeometric(k, k, n) */
    for (j = 0; j < k; ++j) {
        in_a[a[j]] = 1;
    }
    for (j = 0; j < k; ++j) {
        overlap += in_a[c[j]];
    }
    expect = (double)k * (double)k / (double)n;
    sd     = sqrt(expect);
    CU_ASSERT((double)overlap <= expect + 6.0 * sd + 1.0);
    free(a);
    free(b);
    free(c);
    free(d);
    free(in_a);
}

/* Each element is drawn with probability k / n per step; the first index is uniform too. */
static void
test_randomk_uniform(void)
{
    size_t n = 100, k = 10, steps = 4000, s, j;
    unsigned hits[100], first[100];
    uint32_t idx[10];
    double p = (double)k / (double)n, mean = steps * p, sd = sqrt(steps * p * (1.0 - p));
    double mean1 = (double)steps / (double)n, sd1 = sqrt(steps * (1.0 / n) * (1.0 - 1.0 / n));
    double chi = 0.0;
    int ok = 1;

    memset(hits, 0, sizeof(hits));
    memset(first, 0, sizeof(first));
    for (s = 0; s < steps; ++s) {
        terse_rng_t rng = rk_stream(123, 0, (uint32_t)s);
        ok &= rk_indices(&rng, n, k, idx);
        for (j = 0; j < k; ++j) {
            ++hits[idx[j]];
        }
        ++first[idx[0]];
    }
    CU_ASSERT(ok);
    for (j = 0; j < n; ++j) {
        CU_ASSERT(fabs((double)hits[j] - mean) <= 6.0 * sd);
        CU_ASSERT(fabs((double)first[j] - mean1) <= 6.0 * sd1 + 1.0);
        chi += ((double)hits[j] - mean) * ((double)hits[j] - mean) / mean;
    }
    /* chi-square with 99 degrees of freedom (without replacement: variance (1 - p) of a
     * Poisson's): mean ~ 89, sd ~ 13; 6 sigma */
    if (terse_test_verbose()) {
        printf("\nrandomk uniformity chi2 %.1f\n", chi);
    }
    CU_ASSERT(chi < 99.0 + 6.0 * sqrt(2.0 * 99.0));
}

/* Three ranks with different inputs and the shared stream: payloads add up to the sum of the
 * inputs at the shared indices; decompress scatters the sum; residuals keep the rest. */
static void
test_randomk_summable(void)
{
    size_t n = 9999, r, j, i;
    rk_run_t t[3];
    float *v[3], *res[3], *out[3], *sum, *dec;
    uint32_t flags;
    double sq[3];
    terse_rng_t rng = rk_stream(5, 2, 7);
    terse_buf_t ob;
    int ok = 1;

    for (r = 0; r < 3; ++r) {
        if (!rk_open(&t[r], n, 0.03, 2)) {
            return;
        }
        v[r]   = malloc(n * sizeof(float));
        res[r] = calloc(n, sizeof(float));
        out[r] = malloc(t[r].bytes);
        terse_test_gaussian(40 + r, v[r], n);
        TERSE_TEST_OK(rk_compress(&t[r], v[r], res[r], &rng, out[r], &flags, &sq[r]));
        CU_ASSERT_EQUAL(flags, 0);
        /* sq_err is what the residual kept */
        TERSE_TEST_NEAR(sq[r], terse_test_sq_norm(res[r], n), 1e-6 * sq[r]);
    }
    sum = calloc(t[0].k, sizeof(float));
    dec = malloc(n * sizeof(float));
    for (r = 0; r < 3; ++r) {
        for (j = 0; j < t[0].k; ++j) {
            sum[j] += out[r][j];
        }
    }
    ob = (terse_buf_t){dec, n, TERSE_FLOAT32, TERSE_MEM_HOST};
    TERSE_TEST_OK(t[1].ops->decompress(t[1].ctx, sum, t[0].bytes, 1.0f, &ob, NULL));
    for (i = 0; i < n; ++i) {
        /* sent + kept == input, per rank: the decoded sum is sum_r (v_r - res_r) */
        float expect = 0.0f;
        for (r = 0; r < 3; ++r) {
            expect += v[r][i] - res[r][i];
        }
        ok &= fabsf(dec[i] - expect) <= 1e-6f * (1.0f + fabsf(expect));
        /* an element is either sent by all ranks (residual 0) or by none (residual v) */
        ok &= ((res[0][i] == 0.0f) == (res[1][i] == 0.0f)) || (v[0][i] == 0.0f) ||
              (v[1][i] == 0.0f);
    }
    CU_ASSERT(ok);
    for (r = 0; r < 3; ++r) {
        t[r].ops->destroy(t[r].ctx);
        free(v[r]);
        free(res[r]);
        free(out[r]);
    }
    free(sum);
    free(dec);
}

static void
test_randomk_feedback(void)
{
    size_t n = 3001, steps = 30, s, i;
    rk_run_t t;
    float *g = malloc(n * sizeof(float)), *res = calloc(n, sizeof(float));
    float *out, *dec = malloc(n * sizeof(float));
    double *sum = calloc(n, sizeof(double)), *acc = calloc(n, sizeof(double)), worst = 0.0;
    uint32_t flags;
    terse_buf_t ob = {dec, n, TERSE_FLOAT32, TERSE_MEM_HOST};

    if (!rk_open(&t, n, 0.1, 0)) {
        return;
    }
    out = malloc(t.bytes);
    for (s = 0; s < steps; ++s) {
        terse_rng_t rng = rk_stream(1, 0, (uint32_t)s);
        terse_test_gaussian(600 + s, g, n);
        for (i = 0; i < n; ++i) {
            sum[i] += g[i];
        }
        TERSE_TEST_OK(rk_compress(&t, g, res, &rng, out, &flags, NULL));
        TERSE_TEST_OK(t.ops->decompress(t.ctx, out, t.bytes, 1.0f, &ob, NULL));
        for (i = 0; i < n; ++i) {
            acc[i] += dec[i];
        }
    }
    for (i = 0; i < n; ++i) {
        double d = fabs(acc[i] + res[i] - sum[i]);
        worst    = (d > worst) ? d : worst;
    }
    CU_ASSERT(worst < 1e-4);
    t.ops->destroy(t.ctx);
    free(g);
    free(res);
    free(out);
    free(dec);
    free(sum);
    free(acc);
}

static void
test_randomk_edges(void)
{
    rk_run_t t;
    float one = 3.0f, res = 0.5f, out1, all[5] = {1, 2, 3, 4, 5}, out5[5], res5[5] = {0};
    float dec5[5];
    uint32_t flags;
    double sq = -1.0;
    size_t j;
    terse_rng_t rng = rk_stream(3, 0, 0);
    terse_buf_t ob = {dec5, 5, TERSE_FLOAT32, TERSE_MEM_HOST};
    double d = 0.0;

    /* count 1 */
    if (rk_open(&t, 1, 0.001, 0)) {
        TERSE_TEST_OK(rk_compress(&t, &one, &res, &rng, &out1, &flags, &sq));
        CU_ASSERT_EQUAL(out1, 3.5f);
        CU_ASSERT_EQUAL(res, 0.0f);
        CU_ASSERT_EQUAL(sq, 0.0);
        t.ops->destroy(t.ctx);
    }
    /* k == count: a permutation of everything, nothing kept */
    if (rk_open(&t, 5, 1.0, 0)) {
        TERSE_TEST_STATUS(t.ops->decompress(t.ctx, out5, t.bytes, 1.0f, &ob, NULL),
                          TERSE_ERR_USAGE);
        TERSE_TEST_OK(rk_compress(&t, all, res5, &rng, out5, &flags, &sq));
        CU_ASSERT_EQUAL(terse_test_sq_norm(res5, 5), 0.0);
        CU_ASSERT_EQUAL(sq, 0.0);
        TERSE_TEST_OK(t.ops->decompress(t.ctx, out5, t.bytes, 2.0f, &ob, NULL));
        for (j = 0; j < 5; ++j) {
            CU_ASSERT_EQUAL(dec5[j], 2.0f * all[j]);
        }
        TERSE_TEST_STATUS(t.ops->decompress(t.ctx, out5, t.bytes - 4, 1.0f, &ob, NULL),
                          TERSE_ERR_PAYLOAD);
        TERSE_TEST_STATUS(t.ops->decompress(t.ctx, out5, t.bytes + 4, 1.0f, &ob, NULL),
                          TERSE_ERR_PAYLOAD);
        TERSE_TEST_STATUS(t.ops->payload_size(t.ctx, 4, 0, &j), TERSE_ERR_INVALID);
        TERSE_TEST_STATUS(t.ops->compress(t.ctx, &(terse_buf_t){all, 5, TERSE_FLOAT32,
                                                                TERSE_MEM_HOST},
                                          res5, NULL, out5, t.bytes, &flags, NULL, NULL),
                          TERSE_ERR_INVALID);
        t.ops->destroy(t.ctx);
    }
    TERSE_TEST_OK(terse__cmp_find("randomk")->param_parse("0.01", &d));
    TERSE_TEST_STATUS(terse__cmp_find("randomk")->param_parse("0", &d), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(terse__cmp_find("randomk")->param_parse("2", &d), TERSE_ERR_INVALID);
    CU_ASSERT((terse__cmp_find("randomk")->caps & TERSE_CMP_CAP_SUMMABLE) != 0);
}

static void
test_randomk_nonfinite(void)
{
    size_t n = 1000, i;
    rk_run_t t;
    float *v = malloc(n * sizeof(float)), *res = malloc(n * sizeof(float)), *out;
    uint32_t flags = 0;
    double sq = 0.0;
    terse_rng_t rng = rk_stream(3, 0, 0);

    if (!rk_open(&t, n, 0.01, 0)) {
        return;
    }
    out = malloc(t.bytes);
    terse_test_gaussian(1, v, n);
    for (i = 0; i < n; ++i) {
        res[i] = 1.0f;
    }
    v[999] = -INFINITY;
    TERSE_TEST_OK(rk_compress(&t, v, res, &rng, out, &flags, &sq));
    CU_ASSERT_EQUAL(flags, TERSE_CMP_NONFINITE);
    CU_ASSERT(!isfinite(sq));
    CU_ASSERT_EQUAL(terse_test_sq_norm(res, n), 0.0);
    t.ops->destroy(t.ctx);
    free(v);
    free(res);
    free(out);
}

CU_TestInfo test_randomk_tests[] = {
    {"permutation is a bijection", test_randomk_permutation},
    {"indices shared per (base, layer, step)", test_randomk_shared},
    {"indices uniform", test_randomk_uniform},
    {"payloads summable across ranks", test_randomk_summable},
    {"error feedback tracks the sum", test_randomk_feedback},
    {"count 1, k == count, sizes", test_randomk_edges},
    {"non-finite input", test_randomk_nonfinite},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_randomk_suites[] = {
    {"compressors/randomk", NULL, NULL, NULL, NULL, test_randomk_tests},
    CU_SUITE_INFO_NULL,
};
