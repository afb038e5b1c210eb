/*
 * Cheap per-layer error estimators (DESIGN.md section 5): one pass or one sketch per family
 * gives the error of every parameter in the grid.
 *   - PowerSGD: one randomized range finder (Halko, Martinsson, Tropp 2011, alg. 4.4) gives
 *     the top singular values, hence the tail energy of every rank;
 *   - top-k: one histogram of |v| with 16 log-spaced bins per octave (the float's exponent
 *     and 4 mantissa bits), per bin count and energy, gives every density;
 *   - quant: the exact expected error of unbiased stochastic rounding, per element
 *     (x - l)(l + unit - x), on each bucket's max-min grid, one pass per bit width;
 *   - sign: per-bucket sums; cast:bf16: the exact rounding error.
 * Statistics are summed across ranks by the caller; nothing here needs to be bitwise equal
 * across ranks (the reduced sums are), so libm is allowed in this file.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "terse_sched.h"
#include "compressor.h"

/* Random stream purpose of the range finder's sketch (distinct from compressor purposes). */
#define SCHED_RNG_SKETCH 14u

#define SCHED_HIST_SHIFT 19u                      /* 23 - 4 mantissa bits */
#define SCHED_HIST_BINS (1u << (31 - SCHED_HIST_SHIFT))

/* The weight of element i of a weighted estimate (1 when unweighted). */
#define SCHED_W(w, i) (((w) != NULL) ? (double)(w)[i] : 1.0)

static const double sched_default_topk[]    = {0.001, 0.003, 0.01, 0.03, 0.1};
static const double sched_default_randomk[] = {0.001, 0.01, 0.03, 0.1};
static const unsigned sched_default_ranks[] = {1, 2, 4, 8, 16, 32};

void
terse__sched_grid_default(terse_sched_grid_t *grid, uint32_t bucket)
{
    static const unsigned bits[] = {2, 3, 4, 6, 8};
    size_t i, n = 0;

    memset(grid, 0, sizeof(*grid));
    grid->opt[n].fam   = TERSE_SCHED_FAM_NONE;
    grid->opt[n++].param = 0.0;
    grid->opt[n].fam   = TERSE_SCHED_FAM_CAST;
    grid->opt[n++].param = 0.0; /* bf16 */
    for (i = 0; i < sizeof(bits) / sizeof(bits[0]); ++i) {
        grid->opt[n].fam     = TERSE_SCHED_FAM_QUANT;
        grid->opt[n++].param = bits[i];
    }
    grid->opt[n].fam     = TERSE_SCHED_FAM_SIGN;
    grid->opt[n++].param = 0.0;
    for (i = 0; i < sizeof(sched_default_topk) / sizeof(double); ++i) {
        grid->opt[n].fam     = TERSE_SCHED_FAM_TOPK;
        grid->opt[n++].param = sched_default_topk[i];
    }
    for (i = 0; i < sizeof(sched_default_randomk) / sizeof(double); ++i) {
        grid->opt[n].fam     = TERSE_SCHED_FAM_RANDOMK;
        grid->opt[n++].param = sched_default_randomk[i];
    }
    for (i = 0; i < sizeof(sched_default_ranks) / sizeof(unsigned); ++i) {
        grid->opt[n].fam     = TERSE_SCHED_FAM_POWERSGD;
        grid->opt[n++].param = sched_default_ranks[i];
    }
    /* appended (the order above is what older plans and tests index). Not powersgd1: its
     * estimate is PowerSGD's steady state, and on the C trainer the planner then put the
     * output layer on powersgd1:16-32 at re-plans and lost held-out loss outside the seeds'
     * band; it stays available to pinned plans and TERSE_COMPRESSOR. */
    for (i = 0; i < sizeof(sched_default_topk) / sizeof(double); ++i) {
        grid->opt[n].fam     = TERSE_SCHED_FAM_TOPKT;
        grid->opt[n++].param = sched_default_topk[i];
    }
    grid->n            = n;
    grid->quant_bucket = (bucket == 0) ? 512 : bucket;
    grid->oversample   = 8;
    grid->power_iters  = 1;
    grid->share        = 1;
}

int
terse__sched_grid_find(const terse_sched_grid_t *grid, int fam, double param)
{
    size_t i;

    for (i = 0; i < grid->n; ++i) {
        if ((grid->opt[i].fam == fam) && (grid->opt[i].param == param)) {
            return (int)i;
        }
    }
    return -1;
}

size_t
terse__sched_stats_stride(const terse_sched_grid_t *grid)
{
    return TERSE_SCHED_STATS_HEAD + grid->n;
}

/* ---------------------------------------------------------------- top-k */
void
terse__sched_topk_err(const float *v, size_t n, const double *dens, size_t nd, double *err_p)
{
    terse__sched_topk_err_w(v, NULL, n, dens, nd, err_p);
}

void
terse__sched_topk_err_w(const float *v, const float *w, size_t n, const double *dens, size_t nd,
                        double *err_p)
{
    uint32_t *cnt;
    double *ene, total = 0.0;
    size_t i, d;
    long b;

    /* selection goes by |v|; what a bin loses is its weighted energy sum w v^2 */
    cnt = calloc(SCHED_HIST_BINS, sizeof(*cnt));
    ene = calloc(SCHED_HIST_BINS, sizeof(*ene));
    if ((cnt == NULL) || (ene == NULL)) {
        /* No histogram: the conservative answer (nothing kept). */
        for (i = 0; i < n; ++i) {
            total += SCHED_W(w, i) * (double)v[i] * (double)v[i];
        }
        for (d = 0; d < nd; ++d) {
            err_p[d] = total;
        }
        free(cnt);
        free(ene);
        return;
    }
    for (i = 0; i < n; ++i) {
        union {
            float    f;
            uint32_t u;
        } x;
        x.f = v[i];
        x.u &= 0x7fffffffu;
        cnt[x.u >> SCHED_HIST_SHIFT] += 1;
        ene[x.u >> SCHED_HIST_SHIFT] += SCHED_W(w, i) * (double)x.f * (double)x.f;
    }
    for (b = 0; b < (long)SCHED_HIST_BINS; ++b) {
        total += ene[b];
    }
    for (d = 0; d < nd; ++d) {
        size_t k = terse__sched_density_k(dens[d], n), cum = 0;
        double kept = 0.0;

        for (b = (long)SCHED_HIST_BINS - 1; (b >= 0) && (cum < k); --b) {
            if (cnt[b] == 0) {
                continue;
            }
            if (cum + cnt[b] <= k) {
                cum += cnt[b];
                kept += ene[b];
            } else {
                /* Inside the boundary bin magnitudes differ by at most 2^(1/16): share its
                 * energy by count. */
                kept += ene[b] * (double)(k - cum) / (double)cnt[b];
                cum = k;
            }
        }
        err_p[d] = (total > kept) ? total - kept : 0.0;
    }
    free(cnt);
    free(ene);
}

/* ---------------------------------------------------------------- quant, sign, bf16 */
double
terse__sched_quant_err(const float *v, size_t n, uint32_t bucket, unsigned bits)
{
    return terse__sched_quant_err_w(v, NULL, n, bucket, bits);
}

double
terse__sched_quant_err_w(const float *v, const float *w, size_t n, uint32_t bucket,
                         unsigned bits)
{
    double err = 0.0, levels = (double)((1u << bits) - 1u);
    size_t s, i, e;

    if (bucket == 0) {
        bucket = 512;
    }
    for (s = 0; s < n; s += bucket) {
        float lo = v[s], hi = v[s];
        double unit, inv, acc = 0.0;

        e = TERSE_MIN(n, s + bucket);
        for (i = s + 1; i < e; ++i) {
            lo = (v[i] < lo) ? v[i] : lo;
            hi = (v[i] > hi) ? v[i] : hi;
        }
        unit = ((double)hi - (double)lo) / levels;
        if (!(unit > 0.0)) {
            continue;
        }
        inv = 1.0 / unit;
        for (i = s; i < e; ++i) {
            double t = ((double)v[i] - (double)lo) * inv, f, j;
            t = (t < levels) ? t : levels; /* also NaN: no undefined conversion below */
            t = (t > 0.0) ? t : 0.0;
            j = (double)(int64_t)t;        /* t >= 0: truncation is floor, without libm */
            if (j > levels - 1.0) {
                j = levels - 1.0;
            }
            f = t - j;
            acc += SCHED_W(w, i) * f * (1.0 - f);
        }
        err += acc * unit * unit;
    }
    return err;
}

double
terse__sched_sign_err(const float *v, size_t n, uint32_t bucket)
{
    return terse__sched_sign_err_w(v, NULL, n, bucket);
}

double
terse__sched_sign_err_w(const float *v, const float *w, size_t n, uint32_t bucket)
{
    double err = 0.0;
    size_t s, i, e;

    if (bucket == 0) {
        bucket = 512;
    }
    for (s = 0; s < n; s += bucket) {
        double sa = 0.0, ss = 0.0, d;
        e = TERSE_MIN(n, s + bucket);
        for (i = s; i < e; ++i) {
            sa += fabs((double)v[i]);
            ss += (double)v[i] * (double)v[i];
        }
        if (w == NULL) {
            d = ss - sa * sa / (double)(e - s);
            err += (d > 0.0) ? d : 0.0;
            continue;
        }
        sa /= (double)(e - s); /* the bucket's scale: every value becomes +-sa */
        for (i = s; i < e; ++i) {
            d = fabs((double)v[i]) - sa;
            err += (double)w[i] * d * d;
        }
    }
    return err;
}

static double
sched_cast_err(const float *v, const float *w, size_t n, double param)
{
    double err = 0.0, d;
    size_t i;

    for (i = 0; i < n; ++i) {
        float r = (param == 0.0) ? terse_bf16_to_float(terse_float_to_bf16(v[i]))
                                 : terse__half_to_float(terse__float_to_half(v[i]));
        d = (double)v[i] - (double)r;
        err += SCHED_W(w, i) * d * d;
    }
    return err;
}

/* ---------------------------------------------------------------- SVD (one-sided Jacobi) */
/* Orthogonalises the m vectors of length len stored contiguously in w (vector i at i * len);
 * their norms are then the singular values. Fixed sweep order: deterministic. */
static void
sched_jacobi(double *w, size_t m, size_t len)
{
    const double eps = 1e-15;
    int sweep;
    size_t p, q, i;

    for (sweep = 0; sweep < 60; ++sweep) {
        int rotated = 0;
        for (p = 0; p + 1 < m; ++p) {
            for (q = p + 1; q < m; ++q) {
                double *a = w + p * len, *b = w + q * len;
                double al = 0.0, be = 0.0, ga = 0.0, zeta, t, c, s;

                for (i = 0; i < len; ++i) {
                    al += a[i] * a[i];
                    be += b[i] * b[i];
                    ga += a[i] * b[i];
                }
                if ((ga == 0.0) || (fabs(ga) <= eps * sqrt(al * be))) {
                    continue;
                }
                rotated = 1;
                zeta = (be - al) / (2.0 * ga);
                t    = ((zeta >= 0.0) ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1.0 + zeta * zeta));
                c    = 1.0 / sqrt(1.0 + t * t);
                s    = c * t;
                for (i = 0; i < len; ++i) {
                    double x = a[i], y = b[i];
                    a[i] = c * x - s * y;
                    b[i] = s * x + c * y;
                }
            }
        }
        if (!rotated) {
            break;
        }
    }
}

/* sched_jacobi, then the norm of every vector (the singular values, unsorted) into nrm. */
static void
sched_jacobi_norms(double *w, size_t m, size_t len, double *nrm)
{
    size_t i, j;

    sched_jacobi(w, m, len);
    for (i = 0; i < m; ++i) {
        double s = 0.0;
        for (j = 0; j < len; ++j) {
            s += w[i * len + j] * w[i * len + j];
        }
        nrm[i] = sqrt(s);
    }
}

terse_status_t
terse__sched_svd_values(const double *a, size_t rows, size_t cols, double *sigma_p)
{
    size_t m = TERSE_MIN(rows, cols), len = TERSE_MAX(rows, cols), i, j;
    double *w;

    w = malloc(m * len * sizeof(*w));
    if (w == NULL) {
        terse_error(TERSE_LOG_SCHED, "failed to allocate %zu x %zu svd workspace", m, len);
        return TERSE_ERR_NOMEM;
    }
    if (rows <= cols) {
        memcpy(w, a, rows * cols * sizeof(*w));
    } else {
        for (i = 0; i < rows; ++i) {
            for (j = 0; j < cols; ++j) {
                w[j * rows + i] = a[i * cols + j];
            }
        }
    }
    sched_jacobi_norms(w, m, len, sigma_p);
    /* Insertion sort, descending. */
    for (i = 1; i < m; ++i) {
        double x = sigma_p[i];
        for (j = i; (j > 0) && (sigma_p[j - 1] < x); --j) {
            sigma_p[j] = sigma_p[j - 1];
        }
        sigma_p[j] = x;
    }
    free(w);
    return TERSE_OK;
}

/* ---------------------------------------------------------------- PowerSGD */
/* Gram-Schmidt (modified, twice) of k column vectors of length len, stored contiguously.
 * A column that vanishes is left zero, and so is one that lies in the span of the earlier
 * ones up to rounding (what remains is below 1e-9 of its norm): normalising that remainder
 * would give a vector dominated by rounding, not orthogonal to the others, and every
 * singular value estimated from such a basis would be inflated (a rank-2 matrix sketched
 * with 30 columns showed sigma_1 sqrt(5) times too large and no error at rank 1). */
static void
sched_orthonormalise(double *y, size_t k, size_t len)
{
    size_t c, d, i;
    int pass;

    for (c = 0; c < k; ++c) {
        double *a = y + c * len, nrm = 0.0, nrm0 = 0.0;
        for (i = 0; i < len; ++i) {
            nrm0 += a[i] * a[i];
        }
        for (pass = 0; pass < 2; ++pass) {
            for (d = 0; d < c; ++d) {
                const double *b = y + d * len;
                double dot = 0.0;
                for (i = 0; i < len; ++i) {
                    dot += a[i] * b[i];
                }
                for (i = 0; i < len; ++i) {
                    a[i] -= dot * b[i];
                }
            }
        }
        for (i = 0; i < len; ++i) {
            nrm += a[i] * a[i];
        }
        if (!(nrm > 1e-18 * nrm0)) { /* sqrt-free: |a| <= 1e-9 |a0| */
            nrm = 0.0;
        }
        nrm = sqrt(nrm);
        for (i = 0; i < len; ++i) {
            a[i] = (nrm > 0.0) ? a[i] / nrm : 0.0;
        }
    }
}

/* y (k columns of length rows) = M x (x: k columns of length cols). xt (cols x k) and acc
 * (k) are scratch: the inner loop runs over the k columns (axpy form), which vectorises
 * without reassociating any sum. */
static void
sched_mul(const float *m, size_t rows, size_t cols, const double *x, size_t k, double *y,
          double *xt, double *acc)
{
    size_t i, j, c;

    for (c = 0; c < k; ++c) {
        for (j = 0; j < cols; ++j) {
            xt[j * k + c] = x[c * cols + j];
        }
    }
    for (i = 0; i < rows; ++i) {
        const float *row = m + i * cols;
        for (c = 0; c < k; ++c) {
            acc[c] = 0.0;
        }
        for (j = 0; j < cols; ++j) {
            const double *xr = xt + j * k;
            double mij       = (double)row[j];
            for (c = 0; c < k; ++c) {
                acc[c] += mij * xr[c];
            }
        }
        for (c = 0; c < k; ++c) {
            y[c * rows + i] = acc[c];
        }
    }
}

/* z (k columns of length cols) = M^T y (y: k columns of length rows). */
static void
sched_mul_t(const float *m, size_t rows, size_t cols, const double *y, size_t k, double *z)
{
    size_t i, j, c;

    memset(z, 0, k * cols * sizeof(*z));
    for (c = 0; c < k; ++c) {
        double *zc = z + c * cols;
        const double *yc = y + c * rows;
        for (i = 0; i < rows; ++i) {
            const float *row = m + i * cols;
            double q = yc[i];
            if (q == 0.0) {
                continue;
            }
            for (j = 0; j < cols; ++j) {
                zc[j] += q * (double)row[j];
            }
        }
    }
}

/* Weighted tails sum w (M - M_r)^2, M_r = Q B V_r V_r^T the rank-r approximation inside the
 * range finder's subspace: one-sided Jacobi on the rows of B (k x cols, k <= cols) leaves row i
 * = sigma_i v_i^T, so M_r = M_{r-1} + (Q B v_r) v_r^T, one rank-1 update of the residual per
 * rank. B is consumed (rotated in place). Returns TERSE_OK or TERSE_ERR_NOMEM. */
static terse_status_t
sched_powersgd_wtail(const float *m, const float *w, size_t rows, size_t cols, const double *q,
                     double *b, size_t k, const unsigned *ranks, size_t nr, double *wtail_p)
{
    const size_t mind = TERSE_MIN(rows, cols);
    double *res = malloc(rows * cols * sizeof(*res)), *bv = malloc(k * sizeof(*bv));
    double *u = malloc(rows * sizeof(*u)), *bcopy = malloc(k * cols * sizeof(*bcopy));
    size_t *order = malloc(k * sizeof(*order)), i, j, c, r, done = 0;
    double *nrm = malloc(k * sizeof(*nrm));
    terse_status_t status = TERSE_OK;

    if ((res == NULL) || (bv == NULL) || (u == NULL) || (bcopy == NULL) || (order == NULL) ||
        (nrm == NULL)) {
        status = TERSE_ERR_NOMEM;
        goto out;
    }
    memcpy(bcopy, b, k * cols * sizeof(*b));
    sched_jacobi_norms(b, k, cols, nrm);
    for (c = 0; c < k; ++c) {
        order[c] = c;
    }
    for (c = 1; c < k; ++c) { /* descending by sigma; stable */
        size_t x = order[c];
        for (i = c; (i > 0) && (nrm[order[i - 1]] < nrm[x]); --i) {
            order[i] = order[i - 1];
        }
        order[i] = x;
    }
    for (i = 0; i < rows * cols; ++i) {
        res[i] = (double)m[i];
    }
    for (r = 0; r <= k; ++r) {
        /* the weighted residual at rank r, for every grid rank equal to r */
        double e = -1.0;
        for (i = 0; i < nr; ++i) {
            if ((ranks[i] == r) || ((r == k) && (ranks[i] > k))) {
                if (e < 0.0) {
                    e = 0.0;
                    for (j = 0; j < rows * cols; ++j) {
                        e += (double)w[j] * res[j] * res[j];
                    }
                }
                wtail_p[i] = (ranks[i] >= mind) ? 0.0 : e;
                ++done;
            }
        }
        if ((r == k) || (done == nr)) {
            break;
        }
        /* v = row order[r] of the rotated B, normalised; bv = B v; u = Q bv */
        {
            const double *vr = b + order[r] * cols;
            const double inv = (nrm[order[r]] > 0.0) ? 1.0 / nrm[order[r]] : 0.0;
            for (c = 0; c < k; ++c) {
                double t = 0.0;
                for (j = 0; j < cols; ++j) {
                    t += bcopy[c * cols + j] * vr[j];
                }
                bv[c] = t * inv;
            }
            for (i = 0; i < rows; ++i) {
                double t = 0.0;
                for (c = 0; c < k; ++c) {
                    t += q[c * rows + i] * bv[c];
                }
                u[i] = t;
            }
            for (i = 0; i < rows; ++i) {
                for (j = 0; j < cols; ++j) {
                    res[i * cols + j] -= u[i] * vr[j] * inv;
                }
            }
        }
    }

out:
    free(res);
    free(bv);
    free(u);
    free(bcopy);
    free(order);
    free(nrm);
    return status;
}

terse_status_t
terse__sched_powersgd_err(const float *m, size_t rows, size_t cols, const unsigned *ranks,
                          size_t nr, unsigned oversample, unsigned power_iters, uint64_t seed,
                          double *tail_p)
{
    return terse__sched_powersgd_err_w(m, NULL, rows, cols, ranks, nr, oversample, power_iters,
                                       seed, tail_p, NULL);
}

terse_status_t
terse__sched_powersgd_err_w(const float *m, const float *w, size_t rows, size_t cols,
                            const unsigned *ranks, size_t nr, unsigned oversample,
                            unsigned power_iters, uint64_t seed, double *tail_p,
                            double *wtail_p)
{
    size_t mind = TERSE_MIN(rows, cols), k, i, maxr = 0, c;
    double *om = NULL, *y = NULL, *b = NULL, *sig = NULL, *acc = NULL, *xt = NULL, total = 0.0;
    terse_rng_t rng;
    terse_status_t status = TERSE_OK;
    unsigned it;

    for (i = 0; i < rows * cols; ++i) {
        total += (double)m[i] * (double)m[i];
    }
    for (i = 0; i < nr; ++i) {
        maxr = TERSE_MAX(maxr, (size_t)ranks[i]);
    }
    k = TERSE_MIN(maxr + oversample, mind);
    if ((k == 0) || (total == 0.0)) {
        double wt = 0.0;
        for (i = 0; (w != NULL) && (i < rows * cols); ++i) {
            wt += (double)w[i] * (double)m[i] * (double)m[i];
        }
        for (i = 0; i < nr; ++i) {
            tail_p[i] = (ranks[i] >= mind) ? 0.0 : total;
            if (wtail_p != NULL) {
                wtail_p[i] = (ranks[i] >= mind) ? 0.0 : wt;
            }
        }
        return TERSE_OK;
    }
    om  = malloc(k * cols * sizeof(*om));
    y   = malloc(k * rows * sizeof(*y));
    b   = malloc(k * cols * sizeof(*b));
    sig = malloc(k * sizeof(*sig));
    acc = malloc(k * sizeof(*acc));
    xt  = malloc(k * cols * sizeof(*xt));
    if ((om == NULL) || (y == NULL) || (b == NULL) || (sig == NULL) || (acc == NULL) ||
        (xt == NULL)) {
        terse_error(TERSE_LOG_SCHED, "failed to allocate range finder for %zu x %zu rank %zu",
                    rows, cols, k);
        status = TERSE_ERR_NOMEM;
        goto out;
    }
    /* Omega: gaussian columns (Box-Muller on Philox uniforms). */
    rng = terse_rng_make(seed, SCHED_RNG_SKETCH, 0, 0, TERSE_RNG_SHARED);
    for (i = 0; i < k * cols; i += 2) {
        terse_rng4_t r = terse_rng_block(&rng, i / 2);
        double u1 = ((double)r.v[0] + 0.5) / 4294967296.0;
        double u2 = ((double)r.v[1] + 0.5) / 4294967296.0;
        double rad = sqrt(-2.0 * log(u1));
        om[i] = rad * cos(6.283185307179586 * u2);
        if (i + 1 < k * cols) {
            om[i + 1] = rad * sin(6.283185307179586 * u2);
        }
    }
    sched_mul(m, rows, cols, om, k, y, xt, acc);
    for (it = 0; it < power_iters; ++it) {
        sched_orthonormalise(y, k, rows);
        sched_mul_t(m, rows, cols, y, k, om);
        sched_orthonormalise(om, k, cols);
        sched_mul(m, rows, cols, om, k, y, xt, acc);
    }
    sched_orthonormalise(y, k, rows);
    /* B = Q^T M: k x cols, row c = M^T q_c. */
    sched_mul_t(m, rows, cols, y, k, b);
    if (terse__sched_svd_values(b, k, cols, sig) != TERSE_OK) {
        status = TERSE_ERR_NOMEM;
        goto out;
    }
    for (i = 0; i < nr; ++i) {
        double kept = 0.0;
        if (ranks[i] >= mind) {
            tail_p[i] = 0.0;
            continue;
        }
        for (c = 0; (c < ranks[i]) && (c < k); ++c) {
            kept += sig[c] * sig[c];
        }
        tail_p[i] = (total > kept) ? total - kept : 0.0;
    }
    if ((w != NULL) && (wtail_p != NULL)) {
        status = sched_powersgd_wtail(m, w, rows, cols, y, b, k, ranks, nr, wtail_p);
    }

out:
    free(om);
    free(y);
    free(b);
    free(sig);
    free(acc);
    free(xt);
    return status;
}

/* ---------------------------------------------------------------- one layer */
static int
sched_is_topk(int fam)
{
    return (fam == TERSE_SCHED_FAM_TOPK) || (fam == TERSE_SCHED_FAM_TOPKT);
}

static int
sched_is_psgd(int fam)
{
    return (fam == TERSE_SCHED_FAM_POWERSGD) || (fam == TERSE_SCHED_FAM_POWERSGD1);
}

terse_status_t
terse__sched_stats_layer(const terse_sched_grid_t *grid, const float *v, size_t count,
                         size_t rows, size_t cols, uint64_t seed, double *out)
{
    return terse__sched_stats_layer_w(grid, v, NULL, count, rows, cols, seed, out);
}

terse_status_t
terse__sched_stats_layer_w(const terse_sched_grid_t *grid, const float *v, const float *w,
                           size_t count, size_t rows, size_t cols, uint64_t seed, double *out)
{
    double dens[TERSE_SCHED_GRID_MAX], terr[TERSE_SCHED_GRID_MAX], perr[TERSE_SCHED_GRID_MAX];
    double pwerr[TERSE_SCHED_GRID_MAX];
    unsigned ranks[TERSE_SCHED_GRID_MAX];
    size_t slot[TERSE_SCHED_GRID_MAX]; /* option -> its entry in terr or perr */
    size_t nd = 0, nr = 0, i;
    double norm = 0.0;
    int finite = 1;

    if ((grid == NULL) || (out == NULL) || ((v == NULL) && (count > 0)) ||
        (grid->n > TERSE_SCHED_GRID_MAX) || ((rows * cols != count) && (rows + cols != 0))) {
        terse_error(TERSE_LOG_SCHED, "invalid statistics request: count %zu shape %zu x %zu",
                    count, rows, cols);
        return TERSE_ERR_INVALID;
    }
    for (i = 0; i < count; ++i) {
        double x = v[i];
        norm += SCHED_W(w, i) * x * x;
        if (!isfinite(v[i])) {
            finite = 0;
        }
    }
    out[TERSE_SCHED_STATS_NORM]      = norm;
    out[TERSE_SCHED_STATS_NONFINITE] = finite ? 0.0 : 1.0;
    for (i = 0; i < grid->n; ++i) {
        const terse_sched_option_t *o = &grid->opt[i];
        slot[i] = 0;
        if (sched_is_topk(o->fam)) {
            slot[i]    = nd;
            dens[nd++] = o->param;
        } else if (sched_is_psgd(o->fam) && (rows > 0)) {
            const unsigned r = (unsigned)o->param, sh = (grid->share > 1) ? grid->share : 1;
            slot[i]     = nr;
            /* rank r over `share` ranks' gradients: see terse_sched_grid_t.share; a rank that
             * covers the whole matrix stays exact */
            ranks[nr++] = (r >= TERSE_MIN(rows, cols)) ? r : TERSE_MAX(1u, r / sh);
        }
    }
    if (finite && (count > 0)) {
        if (nd > 0) {
            terse__sched_topk_err_w(v, w, count, dens, nd, terr);
        }
        if (nr > 0) {
            TERSE_CHECK(terse__sched_powersgd_err_w(v, w, rows, cols, ranks, nr,
                                                    grid->oversample, grid->power_iters, seed,
                                                    perr, pwerr));
        }
    }
    for (i = 0; i < grid->n; ++i) {
        const terse_sched_option_t *o = &grid->opt[i];
        double *e = &out[TERSE_SCHED_STATS_HEAD + i];

        if (o->fam == TERSE_SCHED_FAM_NONE) {
            *e = 0.0;
        } else if (!finite || (sched_is_psgd(o->fam) && (rows == 0))) {
            *e = INFINITY;
        } else if (count == 0) {
            *e = 0.0;
        } else if (o->fam == TERSE_SCHED_FAM_CAST) {
            *e = sched_cast_err(v, w, count, o->param);
        } else if (o->fam == TERSE_SCHED_FAM_QUANT) {
            *e = terse__sched_quant_err_w(v, w, count, grid->quant_bucket, (unsigned)o->param);
        } else if (o->fam == TERSE_SCHED_FAM_SIGN) {
            *e = terse__sched_sign_err_w(v, w, count, grid->quant_bucket);
        } else if (sched_is_topk(o->fam)) {
            *e = terr[slot[i]];
        } else if (o->fam == TERSE_SCHED_FAM_RANDOMK) {
            *e = (1.0 - (double)terse__sched_density_k(o->param, count) / (double)count) * norm;
        } else if (sched_is_psgd(o->fam)) {
            *e = (w != NULL) ? pwerr[slot[i]] : perr[slot[i]];
        } else {
            *e = INFINITY;
        }
    }
    return TERSE_OK;
}
