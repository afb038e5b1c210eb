/* scheduler/stats.c: the cheap estimators against exact computations. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "terse_sched.h"
#include "compressor.h"

/* ---------------------------------------------------------------- SVD */
/* Determinant of a small symmetric positive matrix by Gaussian elimination with pivoting. */
static double
det(double *a, size_t n)
{
    double d = 1.0;
    size_t i, j, k, p;

    for (i = 0; i < n; ++i) {
        p = i;
        for (j = i + 1; j < n; ++j) {
            if (fabs(a[j * n + i]) > fabs(a[p * n + i])) {
                p = j;
            }
        }
        if (p != i) {
            for (k = 0; k < n; ++k) {
                double t = a[i * n + k];
                a[i * n + k] = a[p * n + k];
                a[p * n + k] = t;
            }
            d = -d;
        }
        d *= a[i * n + i];
        for (j = i + 1; j < n; ++j) {
            double f = a[j * n + i] / a[i * n + i];
            for (k = i; k < n; ++k) {
                a[j * n + k] -= f * a[i * n + k];
            }
        }
    }
    return d;
}

static void
test_stats_svd(void)
{
    size_t shapes[][2] = {{6, 4}, {4, 6}, {5, 5}, {1, 7}, {9, 1}};
    size_t s, i, j, k;

    for (s = 0; s < sizeof(shapes) / sizeof(shapes[0]); ++s) {
        size_t r = shapes[s][0], c = shapes[s][1], m = TERSE_MIN(r, c);
        double a[64], sig[8], gram[64], fro = 0.0, ss = 0.0, prod = 1.0, v[8], lam = 0.0;
        float g[64];
        int it;

        terse_test_gaussian(300 + s, g, r * c);
        for (i = 0; i < r * c; ++i) {
            a[i] = g[i];
            fro += a[i] * a[i];
        }
        TERSE_TEST_OK(terse__sched_svd_values(a, r, c, sig));
        for (i = 0; i < m; ++i) {
            ss += sig[i] * sig[i];
            prod *= sig[i] * sig[i];
            if (i > 0) {
                CU_ASSERT(sig[i] <= sig[i - 1]);
            }
        }
        TERSE_TEST_NEAR(ss, fro, 1e-12 * fro);
        /* prod sigma^2 = det of the small Gram matrix; sigma_1^2 its top eigenvalue. */
        for (i = 0; i < m; ++i) {
            for (j = 0; j < m; ++j) {
                double d = 0.0;
                for (k = 0; k < TERSE_MAX(r, c); ++k) {
                    d += (r <= c) ? a[i * c + k] * a[j * c + k] : a[k * c + i] * a[k * c + j];
                }
                gram[i * m + j] = d;
            }
        }
        for (i = 0; i < m; ++i) {
            v[i] = 1.0 + 0.1 * (double)i;
        }
        for (it = 0; it < 500; ++it) {
            double w[8], nrm = 0.0;
            for (i = 0; i < m; ++i) {
                w[i] = 0.0;
                for (j = 0; j < m; ++j) {
                    w[i] += gram[i * m + j] * v[j];
                }
                nrm += w[i] * w[i];
            }
            nrm = sqrt(nrm);
            lam = nrm;
            for (i = 0; i < m; ++i) {
                v[i] = w[i] / nrm;
            }
        }
        TERSE_TEST_NEAR(sig[0] * sig[0], lam, 1e-8 * lam);
        TERSE_TEST_NEAR(prod, det(gram, m), 1e-9 * fabs(prod) + 1e-300);
    }
}

/* ---------------------------------------------------------------- PowerSGD */
static void
check_powersgd(const float *m, size_t rows, size_t cols, double tol_rel)
{
    static const unsigned ranks[] = {1, 2, 4, 8, 16, 32};
    size_t nr = 6, i, mind = TERSE_MIN(rows, cols);
    double *a = malloc(rows * cols * sizeof(double)), *sig = malloc(mind * sizeof(double));
    double tail[6], total = 0.0;

    for (i = 0; i < rows * cols; ++i) {
        a[i] = m[i];
        total += a[i] * a[i];
    }
    TERSE_TEST_OK(terse__sched_svd_values(a, rows, cols, sig));
    TERSE_TEST_OK(terse__sched_powersgd_err(m, rows, cols, ranks, nr, 8, 1, 77, tail));
    for (i = 0; i < nr; ++i) {
        double exact = total, kept = 0.0;
        size_t j;
        for (j = 0; (j < ranks[i]) && (j < mind); ++j) {
            kept += sig[j] * sig[j];
        }
        exact = (ranks[i] >= mind) ? 0.0 : total - kept;
        /* Never below the exact tail (sigma_i(Q^T M) <= sigma_i(M)), and close to it. */
        CU_ASSERT(tail[i] >= exact - 1e-9 * total);
        if (!(fabs(tail[i] - exact) <= tol_rel * total)) {
            fprintf(stderr, "%zu x %zu rank %u: estimate %.6g exact %.6g total %.6g\n", rows,
                    cols, ranks[i], tail[i], exact, total);
        }
        CU_ASSERT(fabs(tail[i] - exact) <= tol_rel * total);
    }
    free(a);
    free(sig);
}

static void
test_stats_powersgd_lowrank(void)
{
    float *m = malloc(96 * 64 * sizeof(float));

    terse_test_lowrank(11, 96, 64, 3, 0.05f, m);
    check_powersgd(m, 96, 64, 0.01);
    terse_test_lowrank(12, 40, 120, 6, 0.2f, m);
    check_powersgd(m, 40, 120, 0.02);
    /* Small matrices: ranks beyond min(rows, cols) cost nothing. */
    terse_test_gaussian(13, m, 5 * 9);
    check_powersgd(m, 5, 9, 1e-9);
    free(m);
}

/* A real gradient: the top-left 128 x 512 block of the LM's head weight at step 300. */
static void
test_stats_powersgd_real(void)
{
    size_t rows, cols, i;
    float *g = terse_test_load_named_gradient("head.weight", 300, &rows, &cols), *m;

    if (g == NULL) {
        CU_FAIL("real gradient missing");
        return;
    }
    m = malloc(128 * 512 * sizeof(float));
    for (i = 0; i < 128; ++i) {
        memcpy(m + i * 512, g + i * cols, 512 * sizeof(float));
    }
    check_powersgd(m, 128, 512, 0.02);
    free(m);
    free(g);
}

/* ---------------------------------------------------------------- top-k */
static int
cmp_desc(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x < y) - (x > y);
}

static void
check_topk(const float *v, size_t n)
{
    static const double dens[] = {0.001, 0.003, 0.01, 0.03, 0.1, 0.5, 1.0};
    size_t nd = sizeof(dens) / sizeof(dens[0]), i, d;
    double *sq = malloc(n * sizeof(double)), total = 0.0, err[8];

    for (i = 0; i < n; ++i) {
        sq[i] = (double)v[i] * (double)v[i];
        total += sq[i];
    }
    qsort(sq, n, sizeof(double), cmp_desc);
    terse__sched_topk_err(v, n, dens, nd, err);
    for (d = 0; d < nd; ++d) {
        size_t k = terse__sched_density_k(dens[d], n);
        double kept = 0.0, exact;
        for (i = 0; i < k; ++i) {
            kept += sq[i];
        }
        exact = total - kept;
        /* Inside the boundary bin squares differ by at most 2^(2/16) - 1 < 9 %. */
        if (!(fabs(err[d] - exact) <= 0.09 * kept + 1e-9 * total)) {
            fprintf(stderr, "topk %g: estimate %.9g exact %.9g\n", dens[d], err[d], exact);
        }
        CU_ASSERT(fabs(err[d] - exact) <= 0.09 * kept + 1e-9 * total);
        /* and much closer in practice */
        CU_ASSERT(fabs(err[d] - exact) <= 0.01 * total);
    }
    free(sq);
}

static void
test_stats_topk(void)
{
    size_t n = 100000, rows, cols, i;
    float *v = malloc(n * sizeof(float)), *g;
    double err[3], dens[3] = {0.25, 0.5, 0.75};

    terse_test_gaussian(21, v, n);
    check_topk(v, n);
    g = terse_test_load_named_gradient("emb.weight", 300, &rows, &cols);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    check_topk(g, rows * cols);
    free(g);
    /* Magnitudes in distinct bins: the histogram is exact. */
    for (i = 0; i < 4; ++i) {
        v[i] = (float)ldexp((i % 2) ? -1.0 : 1.0, (int)i);
    }
    terse__sched_topk_err(v, 4, dens, 3, err);
    TERSE_TEST_NEAR(err[0], 1 + 4 + 16, 0);
    TERSE_TEST_NEAR(err[1], 1 + 4, 0);
    TERSE_TEST_NEAR(err[2], 1, 0);
    free(v);
}

/* ---------------------------------------------------------------- quant, sign */
/* The estimate (an exact expectation) against a simple stochastic quantiser: the mean of T
 * measured errors within 6 sigma, sigma from the per-element variance. */
static void
test_stats_quant(void)
{
    static const unsigned bits[] = {2, 3, 4, 8};
    size_t n = 1 << 15, bucket = 512, i, s, b, t, T = 8;
    float *v = malloc(n * sizeof(float));
    terse_rng_t rng = terse_rng_make(5, TERSE_RNG_TEST, 0, 0, 0);

    terse_test_gaussian(31, v, n);
    for (i = 0; i < n; i += 97) {
        v[i] *= 8.0f; /* outliers widen some ranges */
    }
    for (b = 0; b < sizeof(bits) / sizeof(bits[0]); ++b) {
        double est = terse__sched_quant_err(v, n, bucket, bits[b]), var = 0.0, meas = 0.0;
        double levels = (double)((1u << bits[b]) - 1);
        for (t = 0; t < T; ++t) {
            for (s = 0; s < n; s += bucket) {
                float lo = v[s], hi = v[s];
                double unit;
                for (i = s; i < s + bucket; ++i) {
                    lo = fminf(lo, v[i]);
                    hi = fmaxf(hi, v[i]);
                }
                unit = ((double)hi - lo) / levels;
                for (i = s; i < s + bucket; ++i) {
                    double x = v[i], q, l, f;
                    double u = ((double)terse_rng_u32(&rng, t * n + i) + 0.5) / 4294967296.0;
                    l = lo + floor((x - lo) / unit) * unit;
                    if (l > hi - unit) {
                        l = hi - unit;
                    }
                    f = (x - l) / unit;
                    q = (u < f) ? l + unit : l;
                    meas += (q - x) * (q - x);
                    if (t == 0) {
                        double a = f * unit, c = (1.0 - f) * unit;
                        double m1 = (1.0 - f) * a * a + f * c * c;
                        double m2 = (1.0 - f) * a * a * a * a + f * c * c * c * c;
                        var += m2 - m1 * m1;
                    }
                }
            }
        }
        meas /= (double)T;
        if (!(fabs(meas - est) <= 6.0 * sqrt(var / (double)T) + 1e-9 * est)) {
            fprintf(stderr, "quant %u: estimate %.9g measured %.9g sigma %.3g\n", bits[b], est,
                    meas, sqrt(var / (double)T));
        }
        CU_ASSERT(fabs(meas - est) <= 6.0 * sqrt(var / (double)T) + 1e-9 * est);
        /* Sanity against the uniform-cell approximation unit^2 / 6 per element: same order. */
        CU_ASSERT(est > 0.0);
    }
    /* A constant bucket has no error. */
    for (i = 0; i < 512; ++i) {
        v[i] = 3.0f;
    }
    CU_ASSERT_EQUAL(terse__sched_quant_err(v, 512, 512, 4), 0.0);
    free(v);
}

static void
test_stats_sign(void)
{
    size_t n = 1000, bucket = 128, s, i;
    float *v = malloc(n * sizeof(float));
    double meas = 0.0;

    terse_test_gaussian(41, v, n);
    for (s = 0; s < n; s += bucket) {
        size_t e = TERSE_MIN(n, s + bucket);
        double scale = 0.0;
        for (i = s; i < e; ++i) {
            scale += fabs(v[i]);
        }
        scale /= (double)(e - s);
        for (i = s; i < e; ++i) {
            double q = (v[i] >= 0.0f) ? scale : -scale;
            meas += (q - v[i]) * (q - v[i]);
        }
    }
    TERSE_TEST_NEAR(terse__sched_sign_err(v, n, bucket), meas, 1e-9 * meas);
    free(v);
}

/* ---------------------------------------------------------------- one layer */
static void
test_stats_layer(void)
{
    terse_sched_grid_t grid;
    size_t rows = 48, cols = 40, n = rows * cols, stride, i;
    float *v = malloc(n * sizeof(float));
    double *st, norm = 0.0, dens[1];
    int k;

    terse__sched_grid_default(&grid, 64);
    CU_ASSERT_EQUAL(grid.n, 28);
    stride = terse__sched_stats_stride(&grid);
    CU_ASSERT_EQUAL(stride, 30);
    st = malloc(stride * sizeof(double));
    terse_test_lowrank(51, rows, cols, 2, 0.1f, v);
    for (i = 0; i < n; ++i) {
        norm += (double)v[i] * v[i];
    }
    TERSE_TEST_OK(terse__sched_stats_layer(&grid, v, n, rows, cols, 3, st));
    TERSE_TEST_NEAR(st[TERSE_SCHED_STATS_NORM], norm, 1e-12 * norm);
    CU_ASSERT_EQUAL(st[TERSE_SCHED_STATS_NONFINITE], 0.0);
    k = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_NONE, 0);
    CU_ASSERT_EQUAL(st[TERSE_SCHED_STATS_HEAD + k], 0.0);
    k = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_QUANT, 4);
    CU_ASSERT_EQUAL(st[TERSE_SCHED_STATS_HEAD + k], terse__sched_quant_err(v, n, 64, 4));
    k = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_SIGN, 0);
    CU_ASSERT_EQUAL(st[TERSE_SCHED_STATS_HEAD + k], terse__sched_sign_err(v, n, 64));
    k = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_RANDOMK, 0.1);
    TERSE_TEST_NEAR(st[TERSE_SCHED_STATS_HEAD + k], (1.0 - 192.0 / 1920.0) * norm, 1e-12 * norm);
    k       = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_TOPK, 0.01);
    dens[0] = 0.01;
    {
        double e;
        terse__sched_topk_err(v, n, dens, 1, &e);
        CU_ASSERT_EQUAL(st[TERSE_SCHED_STATS_HEAD + k], e);
    }
    /* bf16: round to nearest even leaves a relative error near 2^-16 / 3 of ||v||^2. */
    k = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_CAST, 0);
    CU_ASSERT(st[TERSE_SCHED_STATS_HEAD + k] > norm * ldexp(1.0, -20));
    CU_ASSERT(st[TERSE_SCHED_STATS_HEAD + k] < norm * ldexp(1.0, -15));
    /* Rank 2 of a rank-2 + noise matrix keeps almost everything; rank 1 does not. */
    k = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_POWERSGD, 2);
    CU_ASSERT(st[TERSE_SCHED_STATS_HEAD + k] < 0.05 * norm);
    CU_ASSERT(st[TERSE_SCHED_STATS_HEAD + k - 1] > 0.2 * norm);

    /* powersgd1 and topkt, appended to the grid, are estimated like powersgd and topk. */
    {
        terse_sched_grid_t g2 = grid;
        double *st2 = malloc((stride + 2) * sizeof(double));
        int kp = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_POWERSGD, 4);
        int kt = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_TOPK, 0.03);
        g2.opt[g2.n].fam     = TERSE_SCHED_FAM_POWERSGD1;
        g2.opt[g2.n++].param = 4;
        g2.opt[g2.n].fam     = TERSE_SCHED_FAM_TOPKT;
        g2.opt[g2.n++].param = 0.03;
        TERSE_TEST_OK(terse__sched_stats_layer(&g2, v, n, rows, cols, 3, st2));
        CU_ASSERT_EQUAL(st2[TERSE_SCHED_STATS_HEAD + grid.n], st[TERSE_SCHED_STATS_HEAD + kp]);
        CU_ASSERT_EQUAL(st2[TERSE_SCHED_STATS_HEAD + grid.n + 1],
                        st[TERSE_SCHED_STATS_HEAD + kt]);
        CU_ASSERT_EQUAL(terse__sched_fam_wire(TERSE_SCHED_FAM_TOPKT), TERSE_SCHED_WIRE_SPARSE);
        free(st2);
    }
    /* Flat: PowerSGD does not apply. */
    TERSE_TEST_OK(terse__sched_stats_layer(&grid, v, n, 0, 0, 3, st));
    CU_ASSERT(isinf(st[TERSE_SCHED_STATS_HEAD + k]));
    /* Non-finite: flagged, every compressing option infinite, none still 0. */
    v[17] = NAN;
    TERSE_TEST_OK(terse__sched_stats_layer(&grid, v, n, rows, cols, 3, st));
    CU_ASSERT_EQUAL(st[TERSE_SCHED_STATS_NONFINITE], 1.0);
    for (i = 1; i < grid.n; ++i) {
        CU_ASSERT(isinf(st[TERSE_SCHED_STATS_HEAD + i]));
    }
    CU_ASSERT_EQUAL(st[TERSE_SCHED_STATS_HEAD + 0], 0.0);
    /* Bad shape. */
    {
        int saved = terse__log_level;
        terse__log_level = -1;
        TERSE_TEST_STATUS(terse__sched_stats_layer(&grid, v, n, rows, cols + 1, 3, st),
                          TERSE_ERR_INVALID);
        terse__log_level = saved;
    }
    free(st);
    free(v);
}


/* ---------------------------------------------------------------- weighted statistics */
/* Weighted error of one real CPU compression of v (no residual), mean over `trials` streams. */
static double
real_werr(const char *family, double param, const float *v, const float *w, size_t rows,
          size_t cols, unsigned trials)
{
    const terse_cmp_ops_t *ops = terse__cmp_find(family);
    const size_t n = rows * cols;
    terse_cmp_params_t prm;
    void *cmp = NULL, *pay;
    float *out = malloc(n * sizeof(float));
    size_t bytes = 0, i;
    double err = 0.0;
    uint32_t flags;
    unsigned t;

    memset(&prm, 0, sizeof(prm));
    prm.size   = sizeof(prm);
    prm.param  = param;
    prm.count  = n;
    prm.rows   = rows;
    prm.cols   = cols;
    prm.dtype  = TERSE_FLOAT32;
    prm.mem    = TERSE_MEM_HOST;
    prm.bucket = 64;
    prm.nranks = 1;
    prm.seed   = 9;
    TERSE_TEST_OK(ops->create(&prm, &cmp));
    TERSE_TEST_OK(ops->payload_size(cmp, n, 0, &bytes));
    pay = malloc(bytes);
    for (t = 0; t < trials; ++t) {
        terse_rng_t rng = terse_rng_make(77, TERSE_RNG_QUANT, 0, t, 0);
        terse_buf_t in  = {(void *)v, n, TERSE_FLOAT32, TERSE_MEM_HOST};
        terse_buf_t ob  = {out, n, TERSE_FLOAT32, TERSE_MEM_HOST};
        TERSE_TEST_OK(ops->compress(cmp, &in, NULL, &rng, pay, bytes, &flags, NULL, NULL));
        TERSE_TEST_OK(ops->decompress(cmp, pay, bytes, 1.0f, &ob, NULL));
        for (i = 0; i < n; ++i) {
            const double d = (double)out[i] - (double)v[i];
            err += (double)w[i] * d * d;
        }
    }
    ops->destroy(cmp);
    free(pay);
    free(out);
    return err / (double)trials;
}

/* Weighted statistics (TERSE_ERROR_MEASURE=adam's estimates) against the real compressors on
 * a gradient whose columns differ in scale by 10^4 (an output layer over a vocabulary), with
 * Adafactor-like weights 1 / (row x column mean square): the weighted estimate must follow the
 * real weighted error, and must rank quant:4 far worse than plain squared error does. */
static void
test_stats_weighted(void)
{
    const size_t rows = 64, cols = 96, n = rows * cols;
    float *v = malloc(n * sizeof(float)), *w = malloc(n * sizeof(float));
    float *ones = malloc(n * sizeof(float));
    terse_sched_grid_t grid;
    double *st, *sw, *s1, tot_w = 0.0, tot = 0.0;
    size_t stride, i, j;
    int k;

    terse_test_gaussian(61, v, n);
    for (i = 0; i < rows; ++i) {
        for (j = 0; j < cols; ++j) {
            const double colscale = pow(10.0, -4.0 * (double)j / (double)(cols - 1));
            v[i * cols + j] *= (float)colscale;
            w[i * cols + j] = (float)(1.0 / (colscale * colscale));
            ones[i * cols + j] = 1.0f;
        }
    }
    terse__sched_grid_default(&grid, 64);
    stride = terse__sched_stats_stride(&grid);
    st = malloc(stride * sizeof(double));
    sw = malloc(stride * sizeof(double));
    s1 = malloc(stride * sizeof(double));
    TERSE_TEST_OK(terse__sched_stats_layer(&grid, v, n, rows, cols, 3, st));
    TERSE_TEST_OK(terse__sched_stats_layer_w(&grid, v, w, n, rows, cols, 3, sw));
    TERSE_TEST_OK(terse__sched_stats_layer_w(&grid, v, ones, n, rows, cols, 3, s1));
    for (i = 0; i < n; ++i) {
        tot_w += (double)w[i] * (double)v[i] * (double)v[i];
        tot += (double)v[i] * (double)v[i];
    }
    TERSE_TEST_NEAR(sw[TERSE_SCHED_STATS_NORM], tot_w, 1e-9 * tot_w);
    /* unit weights give the unweighted statistics (PowerSGD by another route: the residual
     * of the subspace's rank-r approximation instead of the singular value tail) */
    for (i = 0; i < stride; ++i) {
        if (isfinite(st[i])) {
            TERSE_TEST_NEAR(s1[i], st[i], 1e-9 * tot + 1e-300);
        }
    }
    /* against the real compressors */
    k = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_QUANT, 4);
    {
        const double real = real_werr("quant", 4, v, w, rows, cols, 16);
        TERSE_TEST_NEAR(sw[TERSE_SCHED_STATS_HEAD + k], real, 0.05 * real);
        /* the weighted measure sees what squared error hides: most of the weighted norm lost */
        CU_ASSERT(sw[TERSE_SCHED_STATS_HEAD + k] > 0.2 * tot_w);
        CU_ASSERT(sw[TERSE_SCHED_STATS_HEAD + k] / tot_w > 10.0 * st[TERSE_SCHED_STATS_HEAD + k] / tot);
    }
    k = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_SIGN, 0);
    {
        const double real = real_werr("sign", 0, v, w, rows, cols, 1);
        TERSE_TEST_NEAR(sw[TERSE_SCHED_STATS_HEAD + k], real, 1e-4 * real);
    }
    k = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_CAST, 0);
    {
        const double real = real_werr("cast", 0, v, w, rows, cols, 1);
        TERSE_TEST_NEAR(sw[TERSE_SCHED_STATS_HEAD + k], real, 1e-6 * real);
    }
    k = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_TOPK, 0.1);
    {
        const double real = real_werr("topk", 0.1, v, w, rows, cols, 1);
        /* the boundary bin is shared by count */
        TERSE_TEST_NEAR(sw[TERSE_SCHED_STATS_HEAD + k], real, 0.02 * tot_w);
    }
    k = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_RANDOMK, 0.1);
    TERSE_TEST_NEAR(sw[TERSE_SCHED_STATS_HEAD + k],
                    (1.0 - (double)terse__sched_density_k(0.1, n) / (double)n) * tot_w,
                    1e-9 * tot_w);
    free(st);
    free(sw);
    free(s1);
    free(v);
    free(w);
    free(ones);
}

/* Weighted PowerSGD on an exactly rank-2 matrix with known factors: rank 2 loses nothing,
 * rank 1 loses exactly the weighted second component; and `share` charges rank r the tail at
 * rank r / share. */
static void
test_stats_weighted_powersgd(void)
{
    const size_t rows = 40, cols = 30, n = rows * cols;
    float *m = malloc(n * sizeof(float)), *w = malloc(n * sizeof(float));
    double u1[40], u2[40], v1[30], v2[30], exact1 = 0.0, nu = 0.0, nv = 0.0, d;
    static const unsigned ranks[] = {1, 2};
    double tail[2], wtail[2];
    terse_sched_grid_t grid;
    double *a, *b;
    size_t i, j, stride;
    int k1, k4;

    /* orthonormal pairs by construction */
    for (i = 0; i < rows; ++i) {
        u1[i] = (i % 2) ? 1.0 : -1.0;
        u2[i] = (i < rows / 2) ? 1.0 : -1.0;
    }
    for (j = 0; j < cols; ++j) {
        v1[j] = 1.0;
        v2[j] = (double)j - (double)(cols - 1) / 2.0;
    }
    for (i = 0; i < rows; ++i) {
        nu += u1[i] * u2[i];
    }
    CU_ASSERT_EQUAL(nu, 0.0);
    nu = sqrt((double)rows);
    for (j = 0, d = 0.0; j < cols; ++j) {
        d += v2[j] * v2[j];
    }
    nv = sqrt(d);
    for (i = 0; i < rows; ++i) {
        for (j = 0; j < cols; ++j) {
            const double c2 = 0.5 * (u2[i] / nu) * (v2[j] / nv);
            m[i * cols + j] = (float)(3.0 * (u1[i] / nu) * (v1[j] / sqrt((double)cols)) + c2);
            w[i * cols + j] = (float)(1.0 + (double)((i * 7 + j * 3) % 5));
        }
    }
    for (i = 0; i < rows; ++i) {
        for (j = 0; j < cols; ++j) {
            /* the float matrix's own rank-1 residual is the second component up to rounding */
            const double c2 = 0.5 * (u2[i] / nu) * (v2[j] / nv);
            exact1 += (double)w[i * cols + j] * c2 * c2;
        }
    }
    TERSE_TEST_OK(terse__sched_powersgd_err_w(m, w, rows, cols, ranks, 2, 8, 1, 5, tail, wtail));
    TERSE_TEST_NEAR(wtail[0], exact1, 1e-5 * exact1);
    CU_ASSERT(wtail[1] < 1e-9 * exact1);
    /* share: with share 4 (as 4 ranks), rank 4 is charged one rank's tail at rank 1 */
    terse__sched_grid_default(&grid, 64);
    stride = terse__sched_stats_stride(&grid);
    a = malloc(stride * sizeof(double));
    b = malloc(stride * sizeof(double));
    TERSE_TEST_OK(terse__sched_stats_layer(&grid, m, n, rows, cols, 3, a));
    grid.share = 4;
    TERSE_TEST_OK(terse__sched_stats_layer(&grid, m, n, rows, cols, 3, b));
    k1 = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_POWERSGD, 1);
    k4 = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_POWERSGD, 4);
    CU_ASSERT(a[TERSE_SCHED_STATS_HEAD + k4] < 1e-9 * a[TERSE_SCHED_STATS_NORM]);
    TERSE_TEST_NEAR(b[TERSE_SCHED_STATS_HEAD + k4], a[TERSE_SCHED_STATS_HEAD + k1], 0.0);
    free(a);
    free(b);
    free(m);
    free(w);
}

static CU_TestInfo stats_tests[] = {
    {"jacobi singular values", test_stats_svd},
    {"powersgd tail vs exact svd (low rank)", test_stats_powersgd_lowrank},
    {"powersgd tail vs exact svd (real gradient)", test_stats_powersgd_real},
    {"topk error vs sort", test_stats_topk},
    {"quant estimate vs stochastic quantiser", test_stats_quant},
    {"sign error", test_stats_sign},
    {"layer statistics layout", test_stats_layer},
    {"weighted statistics vs real compressors", test_stats_weighted},
    {"weighted powersgd and rank sharing", test_stats_weighted_powersgd},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_stats_suites[] = {
    {"scheduler/stats", NULL, NULL, NULL, NULL, stats_tests},
    CU_SUITE_INFO_NULL,
};
