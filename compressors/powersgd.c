/*
 * PowerSGD, CPU reference: families "powersgd" (two stages: P then Q) and "powersgd1" (one
 * stage, alternating sides). Shapes, layouts, the math of both and the degenerate-column rule:
 * powersgd.h.
 *
 * The products are written for the tall-skinny case (r <= 32: memory-bound): plain loops over
 * rows of M that gcc vectorises, each row read once per product while it sits in L1, no BLAS
 * and no threads (a preloaded shim must never start a thread pool in someone's MPI program).
 */
#include <stdlib.h>
#include <string.h>

#include "compressor.h"
#include "powersgd.h"
/* Device hooks; the MPI shim's copy of this file (TERSE_CMP_HOST_ONLY) has none. */
#if TERSE_HAVE_CUDA && !defined(TERSE_CMP_HOST_ONLY)
#define CMP_PSGD_CUDA 1
#include "powersgd_cuda.h"
#define CMP_PSGD_CAP_CUDA TERSE_CMP_CAP_CUDA
#else
#define CMP_PSGD_CUDA 0
#define CMP_PSGD_CAP_CUDA 0
#endif

typedef struct cmp_psgd {
    int       alternating; /* powersgd1 */
    uint32_t  layer;
    uint64_t  seed;
    size_t    count, rows, cols, rank;
    size_t    len_max;     /* max(rows, cols) */
    float    *q;           /* powersgd: warm-start Q (r x cols); powersgd1: the shared factor F
                              (r x rows or r x cols, per f_is_p). r x len_max, owned */
    int       f_is_p;      /* powersgd1: F is a P */
    float    *basis;       /* this step's orthonormal factor (P^ or Q^), r x len_max, owned */
    int       basis_ok;    /* basis holds a finite factor of this step */
    float    *local;       /* this rank's factor (P_i or Q_i), r x len_max, owned */
    float    *row;         /* cols floats, owned */
    float    *scratch;     /* count floats for M without error feedback; allocated then, owned */
    float    *m;           /* M between compress and stage 1: the residual or scratch */
    unsigned  next;        /* 0 compress, 1 stage 1, 2 decompress (repeatable) */
    int       sent_p;      /* powersgd1: this step sent a P */
    int       nonfinite;   /* this step's local M was not finite */
    void     *cuda;        /* device state (powersgd_cuda.h) of a TERSE_MEM_CUDA instance, else
                              NULL; such an instance has none of the host buffers above */
} cmp_psgd_t;

static terse_status_t
cmp_psgd_param_parse(const char *text, double *param_p)
{
    char *end;
    long r;

    if ((text == NULL) || (text[0] < '0') || (text[0] > '9')) {
        return TERSE_ERR_INVALID;
    }
    r = strtol(text, &end, 10);
    if ((*end != '\0') || (r < 1) || (r > TERSE_PSGD_MAX_RANK)) {
        return TERSE_ERR_INVALID;
    }
    *param_p = (double)r;
    return TERSE_OK;
}

/* ---------------------------------------------------------------- kernels */
/* Dot product with 8 independent lanes (vectorisable without reassociation), fixed order. */
static float
psgd_dot(const float *a, const float *b, size_t n)
{
    float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    float t    = 0.0f;
    size_t j, l;

    for (j = 0; j + 8 <= n; j += 8) {
        for (l = 0; l < 8; ++l) {
            s[l] += a[j + l] * b[j + l];
        }
    }
    for (; j < n; ++j) {
        t += a[j] * b[j];
    }
    return (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))) + t;
}

static void
psgd_axpy(float *y, float a, const float *x, size_t n)
{
    size_t j;

    for (j = 0; j < n; ++j) {
        y[j] += a * x[j];
    }
}

/* Double-precision dot with 4 lanes, fixed order (Gram-Schmidt). */
static double
psgd_ddot(const float *a, const float *b, size_t n)
{
    double s[4] = {0.0, 0.0, 0.0, 0.0}, t = 0.0;
    size_t j, l;

    for (j = 0; j + 4 <= n; j += 4) {
        for (l = 0; l < 4; ++l) {
            s[l] += (double)a[j + l] * (double)b[j + l];
        }
    }
    for (; j < n; ++j) {
        t += (double)a[j] * (double)b[j];
    }
    return ((s[0] + s[1]) + (s[2] + s[3])) + t;
}

/* Four dot products of a with b0..b3 in one pass over a; each is bit-identical to
 * psgd_dot(a, bc, n). */
static void
psgd_dot4(const float *a, const float *b0, const float *b1, const float *b2, const float *b3,
          size_t n, float *out)
{
    float s0[8] = {0}, s1[8] = {0}, s2[8] = {0}, s3[8] = {0};
    float t0 = 0.0f, t1 = 0.0f, t2 = 0.0f, t3 = 0.0f;
    size_t j, l;

    for (j = 0; j + 8 <= n; j += 8) {
        for (l = 0; l < 8; ++l) {
            float x = a[j + l];
            s0[l] += x * b0[j + l];
            s1[l] += x * b1[j + l];
            s2[l] += x * b2[j + l];
            s3[l] += x * b3[j + l];
        }
    }
    for (; j < n; ++j) {
        t0 += a[j] * b0[j];
        t1 += a[j] * b1[j];
        t2 += a[j] * b2[j];
        t3 += a[j] * b3[j];
    }
#define PSGD_SUM8(_s)                                                                          \
    ((((_s)[0] + (_s)[1]) + ((_s)[2] + (_s)[3])) + (((_s)[4] + (_s)[5]) + ((_s)[6] + (_s)[7])))
    out[0] = PSGD_SUM8(s0) + t0;
    out[1] = PSGD_SUM8(s1) + t1;
    out[2] = PSGD_SUM8(s2) + t2;
    out[3] = PSGD_SUM8(s3) + t3;
#undef PSGD_SUM8
}

/* y_c += a_c * x for c = 0..3 in one pass over x; bit-identical to four psgd_axpy. */
static void
psgd_axpy4(float *restrict y0, float *restrict y1, float *restrict y2, float *restrict y3,
           const float *a, const float *restrict x, size_t n)
{
    const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    size_t j;

    for (j = 0; j < n; ++j) {
        float v = x[j];
        y0[j] += a0 * v;
        y1[j] += a1 * v;
        y2[j] += a2 * v;
        y3[j] += a3 * v;
    }
}

/* y += a_0 x_0 + ... + a_3 x_3, added in that order; bit-identical to four psgd_axpy. */
static void
psgd_axpy_sum4(float *restrict y, const float *a, const float *restrict x0,
               const float *restrict x1, const float *restrict x2, const float *restrict x3,
               size_t n)
{
    const float a0 = a[0], a1 = a[1], a2 = a[2], a3 = a[3];
    size_t j;

    for (j = 0; j < n; ++j) {
        float v = y[j];
        v += a0 * x0[j];
        v += a1 * x1[j];
        v += a2 * x2[j];
        v += a3 * x3[j];
        y[j] = v;
    }
}

static size_t
psgd_row_len(const cmp_psgd_t *s, size_t i)
{
    size_t left = s->count - i * s->cols;

    return (left < s->cols) ? left : s->cols;
}

/* pt (r x rows) = M Q, qt (r x cols). The padded tail of the last row is zero: skipped. */
static void
psgd_mul_mq(const cmp_psgd_t *s, const float *m, const float *qt, float *pt)
{
    size_t i, k, c = s->cols;
    float d[4];

    for (i = 0; i < s->rows; ++i) {
        const float *mi = m + i * c;
        size_t len      = psgd_row_len(s, i);
        for (k = 0; k + 4 <= s->rank; k += 4) {
            psgd_dot4(mi, qt + k * c, qt + (k + 1) * c, qt + (k + 2) * c, qt + (k + 3) * c, len,
                      d);
            pt[k * s->rows + i]       = d[0];
            pt[(k + 1) * s->rows + i] = d[1];
            pt[(k + 2) * s->rows + i] = d[2];
            pt[(k + 3) * s->rows + i] = d[3];
        }
        for (; k < s->rank; ++k) {
            pt[k * s->rows + i] = psgd_dot(mi, qt + k * c, len);
        }
    }
}

/* The four coefficients pt[k..k+3][i] (scaled by sign). */
static void
psgd_coef4(const cmp_psgd_t *s, const float *pt, size_t k, size_t i, float sign, float *a)
{
    a[0] = sign * pt[k * s->rows + i];
    a[1] = sign * pt[(k + 1) * s->rows + i];
    a[2] = sign * pt[(k + 2) * s->rows + i];
    a[3] = sign * pt[(k + 3) * s->rows + i];
}

/* qt (r x cols) = M^T P, pt (r x rows). Sums over rows in order i = 0, 1, ... */
static void
psgd_mul_mtp(const cmp_psgd_t *s, const float *m, const float *pt, float *qt)
{
    size_t i, k, c = s->cols;
    float a[4];

    memset(qt, 0, s->rank * c * sizeof(float));
    for (i = 0; i < s->rows; ++i) {
        const float *mi = m + i * c;
        size_t len      = psgd_row_len(s, i);
        for (k = 0; k + 4 <= s->rank; k += 4) {
            psgd_coef4(s, pt, k, i, 1.0f, a);
            psgd_axpy4(qt + k * c, qt + (k + 1) * c, qt + (k + 2) * c, qt + (k + 3) * c, a, mi,
                       len);
        }
        for (; k < s->rank; ++k) {
            psgd_axpy(qt + k * c, pt[k * s->rows + i], mi, len);
        }
    }
}

/* M -= P Q^T in place over the real entries (terms subtracted in order k = 0, 1, ...);
 * returns the squared norm of the result. */
static double
psgd_sub_pqt(const cmp_psgd_t *s, float *m, const float *pt, const float *qt)
{
    double err = 0.0;
    size_t i, k, c = s->cols;
    float a[4];

    for (i = 0; i < s->rows; ++i) {
        float *mi  = m + i * c;
        size_t len = psgd_row_len(s, i);
        for (k = 0; k + 4 <= s->rank; k += 4) {
            psgd_coef4(s, pt, k, i, -1.0f, a);
            psgd_axpy_sum4(mi, a, qt + k * c, qt + (k + 1) * c, qt + (k + 2) * c,
                           qt + (k + 3) * c, len);
        }
        for (; k < s->rank; ++k) {
            psgd_axpy(mi, -pt[k * s->rows + i], qt + k * c, len);
        }
        err += terse__cmp_energy(mi, len);
    }
    return err;
}

/* out = scale * P Q^T (real entries, out's dtype). */
static void
psgd_write_pqt(const cmp_psgd_t *s, const float *pt, const float *qt, float scale,
               const terse_buf_t *out)
{
    size_t esize = terse_dtype_size(out->dtype);
    size_t i, k, c = s->cols;
    float a[4];

    for (i = 0; i < s->rows; ++i) {
        memset(s->row, 0, c * sizeof(float));
        for (k = 0; k + 4 <= s->rank; k += 4) {
            psgd_coef4(s, pt, k, i, 1.0f, a);
            psgd_axpy_sum4(s->row, a, qt + k * c, qt + (k + 1) * c, qt + (k + 2) * c,
                           qt + (k + 3) * c, c);
        }
        for (; k < s->rank; ++k) {
            psgd_axpy(s->row, pt[k * s->rows + i], qt + k * c, c);
        }
        terse__convert_from_f32(s->row, scale, (char *)out->ptr + i * c * esize, out->dtype,
                                psgd_row_len(s, i));
    }
}

/* Two passes of modified Gram-Schmidt of column c against columns 0..c-1. */
static void
psgd_project_out(float *a, size_t len, size_t c)
{
    float *ac = a + c * len;
    size_t pass, j;

    for (pass = 0; pass < 2; ++pass) {
        for (j = 0; j < c; ++j) {
            double d = psgd_ddot(a + j * len, ac, len);
            psgd_axpy(ac, (float)-d, a + j * len, len);
        }
    }
}

/* Orthonormalises the r columns (k-major, len each) of a; the rule for degenerate columns is
 * in powersgd.h. Requires r < len. */
static void
psgd_orthonormalise(float *a, size_t len, size_t r)
{
    size_t c, j, t, best;
    double n0, nc, w, best_w;

    for (c = 0; c < r; ++c) {
        float *ac = a + c * len;

        n0 = sqrt(psgd_ddot(ac, ac, len));
        psgd_project_out(a, len, c);
        nc = sqrt(psgd_ddot(ac, ac, len));
        if (!(n0 > 0.0) || !isfinite(n0) || !(nc > 1e-6 * n0)) {
            best   = 0;
            best_w = -1.0;
            for (t = 0; t < len; ++t) {
                w = 1.0;
                for (j = 0; j < c; ++j) {
                    w -= (double)a[j * len + t] * (double)a[j * len + t];
                }
                if (w > best_w) {
                    best_w = w;
                    best   = t;
                }
            }
            memset(ac, 0, len * sizeof(float));
            ac[best] = 1.0f;
            psgd_project_out(a, len, c);
            nc = sqrt(psgd_ddot(ac, ac, len));
        }
        {
            float inv = (float)(1.0 / nc);
            for (j = 0; j < len; ++j) {
                ac[j] *= inv;
            }
        }
    }
}

static int
psgd_all_finite(const float *x, size_t n)
{
    int bad = 0;
    size_t i;

    for (i = 0; i < n; ++i) {
        bad |= !isfinite(x[i]);
    }
    return !bad;
}

static void
psgd_init_q(cmp_psgd_t *s)
{
    terse_rng_t rng = terse_rng_make(s->seed, TERSE_RNG_PSGD_Q, s->layer, 0, TERSE_RNG_SHARED);
    size_t e;

    for (e = 0; e < s->rank * s->cols; ++e) {
        s->q[e] = terse_psgd_init_q(&rng, e);
    }
    s->f_is_p   = 0;
    s->basis_ok = 0;
    s->next     = 0;
}

static void
cmp_psgd_reset(void *ctx)
{
#if CMP_PSGD_CUDA
    cmp_psgd_t *s = ctx;

    if (s->cuda != NULL) {
        if (terse__cmp_psgd_cuda_reset(s->cuda) != TERSE_OK) {
            terse_error(TERSE_LOG_CMP, "powersgd: failed to reset Q of layer %u", s->layer);
        }
        return;
    }
#endif
    psgd_init_q(ctx);
}

/* ---------------------------------------------------------------- ops */
static void
cmp_psgd_destroy(void *ctx)
{
    cmp_psgd_t *s = ctx;

    if (s == NULL) {
        return;
    }
#if CMP_PSGD_CUDA
    if (s->cuda != NULL) {
        terse__cmp_psgd_cuda_destroy(s->cuda);
    }
#endif
    free(s->q);
    free(s->basis);
    free(s->local);
    free(s->row);
    free(s->scratch);
    free(s);
}

static terse_status_t
cmp_psgd_create_family(const terse_cmp_params_t *params, int alternating, void **ctx_p)
{
    const char *name = alternating ? "powersgd1" : "powersgd";
    cmp_psgd_t *s;
    size_t rows, cols, rank;

    TERSE_CHECK(terse__cmp_check_mem(name, params->mem));
    if ((params->mem != TERSE_MEM_HOST) && alternating) {
        terse_error(TERSE_LOG_CMP, "powersgd1: device buffers are not supported (use powersgd)");
        return TERSE_ERR_UNSUPPORTED;
    }
    if ((params->count == 0) || !(params->param >= 1.0) ||
        !(params->param <= TERSE_PSGD_MAX_RANK)) {
        terse_error(TERSE_LOG_CMP, "%s: layer %u count %zu rank %g out of range", name,
                    params->layer, params->count, params->param);
        return TERSE_ERR_INVALID;
    }
    rank = (size_t)params->param;
    terse_psgd_shape(params->count, params->rows, params->cols, &rows, &cols);
    if (rank >= TERSE_MIN(rows, cols)) {
        terse_info(TERSE_LOG_CMP, "%s: rank %zu is not below min(%zu, %zu) on layer %u", name,
                   rank, rows, cols, params->layer);
        return TERSE_ERR_INVALID;
    }
    s = calloc(1, sizeof(*s));
    if (s == NULL) {
        goto err_nomem;
    }
    s->alternating = alternating;
    s->layer       = params->layer;
    s->seed        = params->seed;
    s->count       = params->count;
    s->rows        = rows;
    s->cols        = cols;
    s->rank        = rank;
    s->len_max     = TERSE_MAX(rows, cols);
#if CMP_PSGD_CUDA
    if (params->mem == TERSE_MEM_CUDA) {
        terse_status_t st = terse__cmp_psgd_cuda_create(s->count, params->rows, params->cols,
                                                        rank, s->seed, s->layer, 1, &s->cuda);
        if (st != TERSE_OK) {
            cmp_psgd_destroy(s);
            return st;
        }
        *ctx_p = s;
        return TERSE_OK;
    }
#endif
    s->q           = malloc(rank * s->len_max * sizeof(float));
    s->basis       = malloc(rank * s->len_max * sizeof(float));
    s->local       = malloc(rank * s->len_max * sizeof(float));
    s->row         = malloc(cols * sizeof(float));
    if ((s->q == NULL) || (s->basis == NULL) || (s->local == NULL) || (s->row == NULL)) {
        goto err_free_psgd;
    }
    psgd_init_q(s);
    *ctx_p = s;
    return TERSE_OK;

err_free_psgd:
    cmp_psgd_destroy(s);
err_nomem:
    terse_error(TERSE_LOG_CMP, "%s: failed to allocate the instance of layer %u", name,
                params->layer);
    return TERSE_ERR_NOMEM;
}

static terse_status_t
cmp_psgd_create(const terse_cmp_params_t *params, void **ctx_p)
{
    return cmp_psgd_create_family(params, 0, ctx_p);
}

static terse_status_t
cmp_psgd1_create(const terse_cmp_params_t *params, void **ctx_p)
{
    return cmp_psgd_create_family(params, 1, ctx_p);
}

static size_t
psgd_stage_bytes(const cmp_psgd_t *s, unsigned stage)
{
    if (s->alternating) {
        return s->rank * s->len_max * sizeof(float);
    }
    return s->rank * ((stage == 0) ? s->rows : s->cols) * sizeof(float);
}

static terse_status_t
cmp_psgd_payload_size(void *ctx, size_t n, unsigned stage, size_t *bytes_p)
{
    cmp_psgd_t *s = ctx;

    if ((n != s->count) || (stage >= (s->alternating ? 1u : 2u))) {
        return TERSE_ERR_INVALID;
    }
    *bytes_p = psgd_stage_bytes(s, stage);
    return TERSE_OK;
}

static unsigned
cmp_psgd_nstages(void *ctx)
{
    cmp_psgd_t *s = ctx;

    return s->alternating ? 1 : 2;
}

/* M = in + residual into the residual (or the scratch); sets s->m; returns 0 when the
 * scratch cannot be allocated. */
static int
psgd_prepare(cmp_psgd_t *s, const terse_buf_t *in, float *residual, double *total_p)
{
    double total = 0.0;
    size_t i, n = s->count;
    float *m;

    if (residual != NULL) {
        m = residual;
        if (in->dtype == TERSE_FLOAT32) {
            total = terse__cmp_add_energy(m, in->ptr, n);
        } else {
            for (i = 0; i < n; ++i) {
                m[i] += terse__load_f32(in->ptr, in->dtype, i);
            }
            total = terse__cmp_energy(m, n);
        }
    } else {
        if (s->scratch == NULL) {
            s->scratch = malloc(n * sizeof(float));
            if (s->scratch == NULL) {
                terse_error(TERSE_LOG_CMP, "powersgd: failed to allocate %zu scratch floats", n);
                return 0;
            }
        }
        m = s->scratch;
        terse__convert_to_f32(in->ptr, in->dtype, m, n);
        total = terse__cmp_energy(m, n);
    }
    /* the energy is non-finite exactly when some m[i] is */
    s->m         = m;
    s->nonfinite = !isfinite(total);
    *total_p     = total;
    return 1;
}

static void
psgd_fill_nan(float *x, size_t n)
{
    size_t i;

    for (i = 0; i < n; ++i) {
        x[i] = NAN;
    }
}

static terse_status_t
cmp_psgd_compress(void *ctx, const terse_buf_t *in, float *residual, const terse_rng_t *rng,
                  void *out, size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                  terse_stream_t stream)
{
    cmp_psgd_t *s = ctx;
    double total = 0.0, err;
    size_t r = s->rank, len;

#if CMP_PSGD_CUDA
    if (s->cuda != NULL) {
        if ((in == NULL) || (in->mem != TERSE_MEM_CUDA)) {
            terse_error(TERSE_LOG_CMP, "powersgd: host buffer given to a device instance");
            return TERSE_ERR_INVALID;
        }
        return terse__cmp_psgd_cuda_compress(s->cuda, in->ptr, in->dtype, in->count, residual,
                                             out, out_bytes, flags_p, sq_err_p, stream);
    }
#endif
    (void)rng;
    (void)stream;
    if ((in == NULL) || (in->count != s->count) || (in->mem != TERSE_MEM_HOST) ||
        (out == NULL) || (out_bytes != psgd_stage_bytes(s, 0))) {
        terse_error(TERSE_LOG_CMP, "powersgd: bad compress arguments (count %zu, %zu bytes)",
                    (in != NULL) ? in->count : 0, out_bytes);
        return TERSE_ERR_INVALID;
    }
    if (!psgd_prepare(s, in, residual, &total)) {
        return TERSE_ERR_NOMEM;
    }
    s->basis_ok = 0;
    s->sent_p   = !s->alternating || !s->f_is_p;
    s->next     = s->alternating ? 2 : 1;
    if (s->nonfinite) {
        if (residual != NULL) {
            memset(residual, 0, s->count * sizeof(float));
        }
        psgd_fill_nan(out, out_bytes / sizeof(float));
        *flags_p = TERSE_CMP_NONFINITE;
        if (sq_err_p != NULL) {
            *sq_err_p = INFINITY;
        }
        return TERSE_OK;
    }
    *flags_p = 0;

    if (!s->alternating) {
        psgd_mul_mq(s, s->m, s->q, s->local);
        memcpy(out, s->local, r * s->rows * sizeof(float));
        if (sq_err_p != NULL) {
            *sq_err_p = total; /* provisional: stage 1 gives the final value */
        }
        return TERSE_OK;
    }

    /* powersgd1: orthonormalise the shared factor, send the other side */
    if (s->sent_p) {
        memcpy(s->basis, s->q, r * s->cols * sizeof(float));
        psgd_orthonormalise(s->basis, s->cols, r);
        psgd_mul_mq(s, s->m, s->basis, s->local);
        err = psgd_sub_pqt(s, s->m, s->local, s->basis);
        len = s->rows;
    } else {
        memcpy(s->basis, s->q, r * s->rows * sizeof(float));
        psgd_orthonormalise(s->basis, s->rows, r);
        psgd_mul_mtp(s, s->m, s->basis, s->local);
        err = psgd_sub_pqt(s, s->m, s->basis, s->local);
        len = s->cols;
    }
    s->basis_ok = 1;
    memset(out, 0, out_bytes);
    memcpy(out, s->local, r * len * sizeof(float));
    if (sq_err_p != NULL) {
        *sq_err_p = err;
    }
    return TERSE_OK;
}

static terse_status_t
cmp_psgd_stage(void *ctx, unsigned stage, const void *summed, size_t summed_bytes, void *out,
               size_t out_bytes, double *sq_err_p, terse_stream_t stream)
{
    cmp_psgd_t *s = ctx;
    size_t r = s->rank;
    double err;

#if CMP_PSGD_CUDA
    if (s->cuda != NULL) {
        return terse__cmp_psgd_cuda_stage(s->cuda, stage, summed, summed_bytes, out, out_bytes,
                                          sq_err_p, stream);
    }
#endif
    (void)stream;
    if (s->alternating || (stage != 1) || (summed == NULL) || (out == NULL) ||
        (summed_bytes != psgd_stage_bytes(s, 0)) || (out_bytes != psgd_stage_bytes(s, 1))) {
        terse_error(TERSE_LOG_CMP, "powersgd: bad stage %u arguments (%zu, %zu bytes)", stage,
                    summed_bytes, out_bytes);
        return TERSE_ERR_INVALID;
    }
    if (s->next != 1) {
        terse_error(TERSE_LOG_CMP, "powersgd: stage 1 without compress on layer %u", s->layer);
        return TERSE_ERR_USAGE;
    }
    s->next = 2;
    memcpy(s->basis, summed, r * s->rows * sizeof(float));
    if (s->nonfinite || !psgd_all_finite(s->basis, r * s->rows)) {
        /* some rank flagged: NaN travels on, the residual and Q restart (rule 3) */
        if (s->m != s->scratch) {
            memset(s->m, 0, s->count * sizeof(float));
        }
        psgd_fill_nan(out, out_bytes / sizeof(float));
        if (sq_err_p != NULL) {
            *sq_err_p = INFINITY;
        }
        return TERSE_OK;
    }
    psgd_orthonormalise(s->basis, s->rows, r);
    s->basis_ok = 1;
    psgd_mul_mtp(s, s->m, s->basis, s->local);
    memcpy(out, s->local, r * s->cols * sizeof(float));
    err = psgd_sub_pqt(s, s->m, s->basis, s->local);
    if (sq_err_p != NULL) {
        *sq_err_p = err;
    }
    return TERSE_OK;
}

/* Keeps a summed factor (r columns of len) as the next step's start: each column scaled to
 * unit norm, a zero column keeps its previous value. */
static void
psgd_keep_factor(cmp_psgd_t *s, const float *f, size_t len)
{
    size_t k, j;

    for (k = 0; k < s->rank; ++k) {
        const float *fk = f + k * len;
        float *qk       = s->q + k * len;
        double nrm      = sqrt(psgd_ddot(fk, fk, len));
        if (nrm > 0.0) {
            float inv = (float)(1.0 / nrm);
            for (j = 0; j < len; ++j) {
                qk[j] = fk[j] * inv;
            }
        } else if (s->alternating) {
            /* F changes side: no previous column of this length; orth() replaces the
             * zero column by a unit vector (the degenerate rule) */
            memset(qk, 0, len * sizeof(float));
        }
    }
}

static terse_status_t
cmp_psgd_decompress(void *ctx, const void *in, size_t in_bytes, float scale,
                    const terse_buf_t *out, terse_stream_t stream)
{
    cmp_psgd_t *s = ctx;
    size_t i;
    const float *summed = in;

#if CMP_PSGD_CUDA
    if (s->cuda != NULL) {
        if ((out == NULL) || (out->mem != TERSE_MEM_CUDA)) {
            return TERSE_ERR_INVALID;
        }
        return terse__cmp_psgd_cuda_decompress(s->cuda, in, in_bytes, scale, out->ptr,
                                               out->dtype, out->count, stream);
    }
#endif
    (void)stream;
    if ((out == NULL) || (out->count != s->count) || (out->mem != TERSE_MEM_HOST) ||
        (terse_dtype_size(out->dtype) == 0)) {
        return TERSE_ERR_INVALID;
    }
    if ((in == NULL) || (in_bytes != psgd_stage_bytes(s, s->alternating ? 0 : 1))) {
        terse_debug(TERSE_LOG_CMP, "powersgd: payload of %zu bytes rejected", in_bytes);
        return TERSE_ERR_PAYLOAD;
    }
    if (s->next != 2) {
        terse_error(TERSE_LOG_CMP, "powersgd: decompress out of order on layer %u", s->layer);
        return TERSE_ERR_USAGE;
    }
    /* Decompressing the same step again is allowed and gives the same bits: the step's
     * basis stays, and the factor kept for the next step is the same. */
    if (!s->basis_ok || !psgd_all_finite(summed, in_bytes / sizeof(float))) {
        for (i = 0; i < s->count; ++i) {
            terse__store_f32(out->ptr, out->dtype, i, NAN);
        }
        psgd_init_q(s);
        s->next = 2;
        return TERSE_OK;
    }
    if (!s->alternating) {
        psgd_write_pqt(s, s->basis, summed, scale, out);
        psgd_keep_factor(s, summed, s->cols);
    } else if (s->sent_p) {
        psgd_write_pqt(s, summed, s->basis, scale, out);
        psgd_keep_factor(s, summed, s->rows);
        s->f_is_p = 1;
    } else {
        psgd_write_pqt(s, s->basis, summed, scale, out);
        psgd_keep_factor(s, summed, s->cols);
        s->f_is_p = 0;
    }
    return TERSE_OK;
}

void *
terse__cmp_psgd_cuda_of(void *cmp)
{
#if CMP_PSGD_CUDA
    return (cmp != NULL) ? ((cmp_psgd_t *)cmp)->cuda : NULL;
#else
    (void)cmp;
    return NULL;
#endif
}

#if CMP_PSGD_CUDA
/* terse__cmp_psgd_cuda_of under the name every CUDA family's tests use (test_ops_cuda.c):
 * the device state of an ops instance of powersgd (e.g. for the lazy terse__cmp_psgd_cuda_stat);
 * NULL for a host instance. Borrowed: owned by the instance. */
void *terse__cmp_psgd_cuda_handle(void *ctx);

void *
terse__cmp_psgd_cuda_handle(void *ctx)
{
    return terse__cmp_psgd_cuda_of(ctx);
}
#endif

/* ---------------------------------------------------------------- state (powersgd.h) */
static terse_status_t
cmp_psgd_state_size(void *ctx, size_t *bytes_p)
{
    const cmp_psgd_t *s = ctx;

    if (s->cuda != NULL) {
        return TERSE_ERR_UNSUPPORTED;
    }
    *bytes_p = 2 * sizeof(uint32_t) + s->rank * (s->f_is_p ? s->rows : s->cols) * sizeof(float);
    return TERSE_OK;
}

static terse_status_t
cmp_psgd_state_get(void *ctx, void *buf, size_t bytes)
{
    const cmp_psgd_t *s = ctx;
    uint32_t w[2];
    size_t need;

    TERSE_CHECK(cmp_psgd_state_size(ctx, &need));
    if ((buf == NULL) || (bytes != need)) {
        return TERSE_ERR_INVALID;
    }
    w[0] = s->f_is_p ? 1u : 0u;
    w[1] = (uint32_t)(s->f_is_p ? s->rows : s->cols);
    memcpy(buf, w, sizeof(w));
    memcpy((char *)buf + sizeof(w), s->q, bytes - sizeof(w));
    return TERSE_OK;
}

static terse_status_t
cmp_psgd_state_set(void *ctx, const void *buf, size_t bytes)
{
    cmp_psgd_t *s = ctx;
    uint32_t w[2];
    size_t len;

    if (s->cuda != NULL) {
        return TERSE_ERR_UNSUPPORTED;
    }
    if ((buf == NULL) || (bytes < sizeof(w))) {
        return TERSE_ERR_INVALID;
    }
    memcpy(w, buf, sizeof(w));
    if ((w[0] > 1u) || ((w[0] == 1u) && !s->alternating)) {
        return TERSE_ERR_INVALID;
    }
    len = (w[0] == 1u) ? s->rows : s->cols;
    if ((w[1] != len) || (bytes != sizeof(w) + s->rank * len * sizeof(float))) {
        return TERSE_ERR_INVALID;
    }
    memcpy(s->q, (const char *)buf + sizeof(w), bytes - sizeof(w));
    s->f_is_p   = (int)w[0];
    s->basis_ok = 0;
    s->next     = 0;
    return TERSE_OK;
}

static const double cmp_psgd_grid[] = {1.0, 2.0, 4.0, 8.0, 16.0, 32.0, -1.0};

const terse_cmp_ops_t terse_cmp_powersgd_ops = {
    .size           = sizeof(terse_cmp_ops_t),
    .name           = "powersgd",
    .caps           = TERSE_CMP_CAP_CPU | TERSE_CMP_CAP_SUMMABLE | TERSE_CMP_CAP_MATRIX |
                      CMP_PSGD_CAP_CUDA,
    .param_doc      = "1..1024 (rank, below min(rows, cols))",
    .sum_dtype      = TERSE_FLOAT32,
    .grid           = cmp_psgd_grid,
    .param_parse    = cmp_psgd_param_parse,
    .create         = cmp_psgd_create,
    .payload_size   = cmp_psgd_payload_size,
    .nstages        = cmp_psgd_nstages,
    .compress       = cmp_psgd_compress,
    .stage          = cmp_psgd_stage,
    .decompress     = cmp_psgd_decompress,
    .decompress_add = NULL,
    .reset          = cmp_psgd_reset,
    .destroy        = cmp_psgd_destroy,
    .state_size     = cmp_psgd_state_size,
    .state_get      = cmp_psgd_state_get,
    .state_set      = cmp_psgd_state_set,
};

const terse_cmp_ops_t terse_cmp_powersgd1_ops = {
    .size           = sizeof(terse_cmp_ops_t),
    .name           = "powersgd1",
    .caps           = TERSE_CMP_CAP_CPU | TERSE_CMP_CAP_SUMMABLE | TERSE_CMP_CAP_MATRIX,
    .param_doc      = "1..1024 (rank, below min(rows, cols))",
    .sum_dtype      = TERSE_FLOAT32,
    .grid           = cmp_psgd_grid,
    .param_parse    = cmp_psgd_param_parse,
    .create         = cmp_psgd1_create,
    .payload_size   = cmp_psgd_payload_size,
    .nstages        = cmp_psgd_nstages,
    .compress       = cmp_psgd_compress,
    .stage          = NULL,
    .decompress     = cmp_psgd_decompress,
    .decompress_add = NULL,
    .reset          = cmp_psgd_reset,
    .destroy        = cmp_psgd_destroy,
    .state_size     = cmp_psgd_state_size,
    .state_get      = cmp_psgd_state_get,
    .state_set      = cmp_psgd_state_set,
};
