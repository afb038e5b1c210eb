/*
 * Top-k sparsification, CPU reference: families "topk" (exact) and "topkt" (threshold-sampled,
 * DGC style). Payload format, tie rule and validation: topk.h.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "topk.h"
/* Device hooks; the MPI shim's copy of this file (TERSE_CMP_HOST_ONLY) has none. */
#if TERSE_HAVE_CUDA && !defined(TERSE_CMP_HOST_ONLY)
#define CMP_TOPK_CUDA 1
#include "topk_cuda.h"
#define CMP_TOPK_CAP_CUDA TERSE_CMP_CAP_CUDA
#else
#define CMP_TOPK_CUDA 0
#define CMP_TOPK_CAP_CUDA 0
#endif

#define TOPK_HIST_BINS     65536u
#define TOPK_MIN_SAMPLE    4096u   /* sampled threshold: at least this many draws */
#define TOPK_SAMPLE_FACTOR 64.0    /* ... and 64 / density, so ~64 draws land above it */
#define TOPK_OVERSAMPLE    1.5     /* aim for 1.5 k candidates: fewer than k falls back */

typedef struct cmp_topk {
    uint16_t  family;    /* TERSE_TOPK_FAMILY_* */
    size_t    count;
    size_t    k;
    uint32_t *hist;      /* TOPK_HIST_BINS counters, owned */
    float    *scratch;   /* count floats for v when there is no residual and in is not fp32;
                            allocated on first such call, owned */
    size_t    nsample;   /* topkt: draws per step; 0: the layer is too small, select exactly */
    float    *sample;    /* topkt: nsample floats, owned */
    size_t    cand_cap;  /* at most this many candidates (0: none kept), else the full select */
    uint32_t *cand;      /* candidate indices, owned */
    float    *cand_v;    /* candidate values, owned */
    void     *cuda;      /* device state (topk_cuda.h) of a TERSE_MEM_CUDA instance, else NULL;
                            such an instance has none of the host buffers above */
} cmp_topk_t;

static void
cmp_topk_destroy(void *ctx)
{
    cmp_topk_t *t = ctx;

    if (t == NULL) {
        return;
    }
#if CMP_TOPK_CUDA
    if (t->cuda != NULL) {
        terse__cmp_topk_cuda_destroy(t->cuda);
    }
#endif
    free(t->hist);
    free(t->scratch);
    free(t->sample);
    free(t->cand);
    free(t->cand_v);
    free(t);
}

static terse_status_t
cmp_topk_create_family(const terse_cmp_params_t *params, uint16_t family, void **ctx_p)
{
    const char *name = (family == TERSE_TOPK_FAMILY_EXACT) ? "topk" : "topkt";
    cmp_topk_t *t;
    double m;

    TERSE_CHECK(terse__cmp_check_mem(name, params->mem));
    if ((params->count == 0) || (params->count > UINT32_MAX) || !(params->param > 0.0) ||
        (params->param > 1.0)) {
        terse_error(TERSE_LOG_CMP, "%s: layer %u count %zu density %g out of range", name,
                    params->layer, params->count, params->param);
        return TERSE_ERR_INVALID;
    }
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        goto err_nomem;
    }
    t->family = family;
    t->count  = params->count;
    t->k      = terse_topk_k(params->param, params->count);
#if CMP_TOPK_CUDA
    if (params->mem == TERSE_MEM_CUDA) {
        terse_status_t st = terse__cmp_topk_cuda_create(t->count, t->k, family, &t->cuda);
        if (st != TERSE_OK) {
            cmp_topk_destroy(t);
            return st;
        }
        *ctx_p = t;
        return TERSE_OK;
    }
#endif
    t->hist   = malloc(TOPK_HIST_BINS * sizeof(*t->hist));
    if (t->hist == NULL) {
        goto err_free_topk;
    }
    if (t->k <= t->count / 4) {
        /* candidate buffers: twice the payload */
        t->cand_cap = 2 * t->k + 1024;
        t->cand     = malloc(t->cand_cap * sizeof(uint32_t));
        t->cand_v   = malloc(t->cand_cap * sizeof(float));
        if ((t->cand == NULL) || (t->cand_v == NULL)) {
            goto err_free_topk;
        }
        /* sampling pays only where the sample is small against the layer */
        m = ceil(TOPK_SAMPLE_FACTOR / params->param);
        m = (m < TOPK_MIN_SAMPLE) ? TOPK_MIN_SAMPLE : m;
        if ((family == TERSE_TOPK_FAMILY_SAMPLED) && (m <= (double)(t->count / 16))) {
            t->nsample = (size_t)m;
            t->sample  = malloc(t->nsample * sizeof(float));
            if (t->sample == NULL) {
                goto err_free_topk;
            }
        }
    }
    *ctx_p = t;
    return TERSE_OK;

err_free_topk:
    cmp_topk_destroy(t);
err_nomem:
    terse_error(TERSE_LOG_CMP, "%s: failed to allocate the instance of layer %u", name,
                params->layer);
    return TERSE_ERR_NOMEM;
}

static terse_status_t
cmp_topk_create(const terse_cmp_params_t *params, void **ctx_p)
{
    return cmp_topk_create_family(params, TERSE_TOPK_FAMILY_EXACT, ctx_p);
}

static terse_status_t
cmp_topkt_create(const terse_cmp_params_t *params, void **ctx_p)
{
    return cmp_topk_create_family(params, TERSE_TOPK_FAMILY_SAMPLED, ctx_p);
}

static size_t
topk_payload_bytes(const cmp_topk_t *t)
{
    return TERSE_TOPK_HEADER_BYTES + t->k * TERSE_TOPK_PAIR_BYTES;
}

static terse_status_t
cmp_topk_payload_size(void *ctx, size_t n, unsigned stage, size_t *bytes_p)
{
    cmp_topk_t *t = ctx;

    if ((stage != 0) || (n != t->count)) {
        return TERSE_ERR_INVALID; /* whole layer only: no TERSE_CMP_CAP_RANGE */
    }
    *bytes_p = topk_payload_bytes(t);
    return TERSE_OK;
}

static unsigned
cmp_topk_nstages(void *ctx)
{
    (void)ctx;
    return 1;
}

/* ---------------------------------------------------------------- selection */
/* Histogram of the high 16 bits of the keys of v[0..n). */
static void
topk_hist_high(const float *v, size_t n, uint32_t *hist)
{
    size_t i;

    memset(hist, 0, TOPK_HIST_BINS * sizeof(*hist));
    for (i = 0; i < n; ++i) {
        ++hist[terse_topk_key(v[i]) >> 16];
    }
}

/* Walks a histogram from the top: returns the bin where the running count (starting at
 * *above_p) reaches k, and leaves in *above_p the count strictly above that bin. The total
 * is >= k, so bin 0 is reached at the latest. */
static uint32_t
topk_hist_walk(const uint32_t *hist, size_t k, size_t *above_p)
{
    size_t cum = *above_p;
    uint32_t b;

    for (b = TOPK_HIST_BINS - 1; b > 0; --b) {
        if (cum + hist[b] >= k) {
            break;
        }
        cum += hist[b];
    }
    *above_p = cum;
    return b;
}

/* Radix select: with hist holding topk_hist_high(v), finds the k-th largest key t and the
 * number `need` of entries equal to t that the selection takes (the lowest indices):
 * selected = {key > t} + the first `need` entries with key == t. Destroys hist. */
static void
topk_select(const float *v, size_t n, size_t k, uint32_t *hist, uint32_t *t_p, size_t *need_p)
{
    size_t above = 0, i;
    uint32_t hi, lo, key;

    hi = topk_hist_walk(hist, k, &above);
    memset(hist, 0, TOPK_HIST_BINS * sizeof(*hist));
    for (i = 0; i < n; ++i) {
        key = terse_topk_key(v[i]);
        if ((key >> 16) == hi) {
            ++hist[key & 0xffffu];
        }
    }
    lo      = topk_hist_walk(hist, k, &above);
    *t_p    = (hi << 16) | lo;
    *need_p = k - above;
}

static void
topk_put_pair(uint8_t *pairs, size_t j, uint32_t index, float value)
{
    memcpy(pairs + j * TERSE_TOPK_PAIR_BYTES, &index, sizeof(index));
    memcpy(pairs + j * TERSE_TOPK_PAIR_BYTES + 4, &value, sizeof(value));
}

static void
topk_put_header(const cmp_topk_t *t, uint32_t flags, void *out)
{
    terse_topk_header_t h;

    memset(&h, 0, sizeof(h));
    h.magic   = TERSE_TOPK_MAGIC;
    h.version = TERSE_TOPK_VERSION;
    h.family  = t->family;
    h.flags   = flags;
    h.count   = t->count;
    h.k       = t->k;
    memcpy(out, &h, sizeof(h));
}

/* Exact select over the whole layer, emitting pairs in index order. hist holds
 * topk_hist_high(v) on entry. Returns the number of pairs written (k, or else a bug) and
 * their energy in *kept_p. */
static size_t
topk_select_exact(cmp_topk_t *t, const float *v, float *residual, uint8_t *pairs,
                  double *kept_p)
{
    size_t n = t->count, need, eq = 0, j = 0, i;
    double kept = 0.0;
    uint32_t thr, key;

    topk_select(v, n, t->k, t->hist, &thr, &need);
    for (i = 0; i < n; ++i) {
        key = terse_topk_key(v[i]);
        if ((key > thr) || ((key == thr) && (eq < need))) {
            eq += (key == thr);
            if (j < t->k) {
                topk_put_pair(pairs, j, (uint32_t)i, v[i]);
            }
            ++j;
            kept += (double)v[i] * (double)v[i];
            if (residual != NULL) {
                residual[i] = 0.0f;
            }
        }
    }
    *kept_p = kept;
    return j;
}

/* Collects the indices of the keys >= thr (at most cand_cap of them); returns how many
 * there are in all. */
static size_t
topk_collect(cmp_topk_t *t, const float *v, uint32_t thr)
{
    size_t c = 0, i;

    for (i = 0; i < t->count; ++i) {
        if (terse_topk_key(v[i]) >= thr) {
            if (c < t->cand_cap) {
                t->cand[c] = (uint32_t)i;
            }
            ++c;
        }
    }
    return c;
}

/* Selects from the c candidates (k <= c <= cand_cap), which hold every key >= some key that
 * is <= the k-th largest candidate: every non-candidate lies below the k-th largest key of
 * the layer, so truncating the candidates by the exact rule gives the exact top-k of the
 * layer. Returns the number of pairs written and their energy in *kept_p. */
static size_t
topk_select_candidates(cmp_topk_t *t, size_t c, const float *v, float *residual,
                       uint8_t *pairs, double *kept_p)
{
    size_t need, eq = 0, j = 0, i;
    double kept = 0.0;
    uint32_t thr, key;

    for (i = 0; i < c; ++i) {
        t->cand_v[i] = v[t->cand[i]];
    }
    topk_hist_high(t->cand_v, c, t->hist);
    topk_select(t->cand_v, c, t->k, t->hist, &thr, &need);
    for (i = 0; i < c; ++i) {
        key = terse_topk_key(t->cand_v[i]);
        if ((key > thr) || ((key == thr) && (eq < need))) {
            eq += (key == thr);
            if (j < t->k) {
                topk_put_pair(pairs, j, t->cand[i], t->cand_v[i]);
            }
            ++j;
            kept += (double)t->cand_v[i] * (double)t->cand_v[i];
            if (residual != NULL) {
                residual[t->cand[i]] = 0.0f;
            }
        }
    }
    *kept_p = kept;
    return j;
}

/* Exact family, first step: with hist holding topk_hist_high(v), the top buckets down to the
 * one holding the k-th largest key are the candidates when they are few (no heavy ties):
 * one collecting pass then replaces the second histogram pass and the emitting pass over the
 * layer. Returns 0 when they are too many (the caller runs topk_select_exact; hist is kept). */
static size_t
topk_select_buckets(cmp_topk_t *t, const float *v, float *residual, uint8_t *pairs,
                    double *kept_p)
{
    size_t above = 0, c;
    uint32_t hi;

    if (t->cand == NULL) {
        return 0;
    }
    hi = topk_hist_walk(t->hist, t->k, &above);
    if (above + t->hist[hi] > t->cand_cap) {
        return 0;
    }
    c = topk_collect(t, v, hi << 16);
    return topk_select_candidates(t, c, v, residual, pairs, kept_p);
}

/* Threshold-sampled select (topkt). Returns 0 when the sample missed (fewer than k or more
 * than cand_cap candidates): the caller then runs the exact select. Else the number of pairs
 * written, and the kept energy in *kept_p. */
static size_t
topk_select_sampled(cmp_topk_t *t, const float *v, float *residual, const terse_rng_t *rng,
                    uint8_t *pairs, double *kept_p)
{
    size_t n = t->count, m = t->nsample, ks, c, need, i;
    double want;
    uint32_t thr, idx;

    for (i = 0; i < m; ++i) {
        idx          = (uint32_t)(((uint64_t)terse_rng_u32(rng, rng->offset + i) * n) >> 32);
        t->sample[i] = v[idx];
    }
    want = ceil(TOPK_OVERSAMPLE * (double)t->k * (double)m / (double)n);
    ks   = (want < 1.0) ? 1 : ((want > (double)m) ? m : (size_t)want);
    topk_hist_high(t->sample, m, t->hist);
    topk_select(t->sample, m, ks, t->hist, &thr, &need);
    c = topk_collect(t, v, thr);
    if ((c < t->k) || (c > t->cand_cap)) {
        return 0;
    }
    return topk_select_candidates(t, c, v, residual, pairs, kept_p);
}

/* v = in + residual, stored in the residual (or scratch, or in itself for fp32 without
 * feedback); returns v and its energy; with hist (exact family) also fills
 * topk_hist_high(v). NULL when the scratch cannot be allocated. */
static const float *
topk_prepare(cmp_topk_t *t, const terse_buf_t *in, float *residual, uint32_t *hist,
             double *total_p)
{
    const float *src = in->ptr;
    float *dst;
    size_t i, n = t->count;

    if (residual != NULL) {
        dst = residual;
        if (in->dtype == TERSE_FLOAT32) {
            *total_p = terse__cmp_add_energy(dst, src, n);
            if (hist != NULL) {
                topk_hist_high(dst, n, hist);
            }
            return dst;
        } else {
            for (i = 0; i < n; ++i) {
                dst[i] += terse__load_f32(in->ptr, in->dtype, i);
            }
        }
    } else if (in->dtype == TERSE_FLOAT32) {
        dst = (float *)src; /* read only from here on */
    } else {
        if (t->scratch == NULL) {
            t->scratch = malloc(n * sizeof(float));
            if (t->scratch == NULL) {
                terse_error(TERSE_LOG_CMP, "topk: failed to allocate %zu scratch floats", n);
                return NULL;
            }
        }
        dst = t->scratch;
        terse__convert_to_f32(in->ptr, in->dtype, dst, n);
    }
    *total_p = terse__cmp_energy(dst, n);
    if (hist != NULL) {
        topk_hist_high(dst, n, hist);
    }
    return dst;
}

static terse_status_t
cmp_topk_compress(void *ctx, const terse_buf_t *in, float *residual, const terse_rng_t *rng,
                  void *out, size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                  terse_stream_t stream)
{
    cmp_topk_t *t = ctx;
    uint8_t *pairs;
    const float *v;
    double total = 0.0, err, kept = 0.0;
    size_t i, got = 0;

#if CMP_TOPK_CUDA
    if (t->cuda != NULL) {
        if ((in == NULL) || (in->mem != TERSE_MEM_CUDA)) {
            terse_error(TERSE_LOG_CMP, "topk: host buffer given to a device instance");
            return TERSE_ERR_INVALID;
        }
        return terse__cmp_topk_cuda_compress(t->cuda, in->ptr, in->dtype, in->count, residual,
                                             rng, out, out_bytes, flags_p, sq_err_p, stream);
    }
#endif
    (void)stream;
    if ((in == NULL) || (in->count != t->count) || (in->mem != TERSE_MEM_HOST) ||
        (out == NULL) || (out_bytes != topk_payload_bytes(t)) ||
        ((t->family == TERSE_TOPK_FAMILY_SAMPLED) && (rng == NULL))) {
        terse_error(TERSE_LOG_CMP, "topk: bad compress arguments (count %zu, %zu bytes)",
                    (in != NULL) ? in->count : 0, out_bytes);
        return TERSE_ERR_INVALID;
    }
    pairs = (uint8_t *)out + TERSE_TOPK_HEADER_BYTES;
    v = topk_prepare(t, in, residual, (t->nsample > 0) ? NULL : t->hist, &total);
    if (v == NULL) {
        return TERSE_ERR_NOMEM;
    }
    if (!isfinite(total)) {
        /* rule 3: flag, drop the residual; the receivers write NaN over the layer */
        if (residual != NULL) {
            memset(residual, 0, t->count * sizeof(float));
        }
        topk_put_header(t, TERSE_CMP_NONFINITE, out);
        for (i = 0; i < t->k; ++i) {
            topk_put_pair(pairs, i, (uint32_t)i, NAN);
        }
        *flags_p = TERSE_CMP_NONFINITE;
        if (sq_err_p != NULL) {
            *sq_err_p = INFINITY;
        }
        return TERSE_OK;
    }

    if (t->nsample > 0) {
        got = topk_select_sampled(t, v, residual, rng, pairs, &kept);
        if (got == 0) {
            topk_hist_high(v, t->count, t->hist); /* the sample missed: exact select */
        }
    }
    if (got == 0) {
        got = topk_select_buckets(t, v, residual, pairs, &kept);
    }
    if (got == 0) {
        got = topk_select_exact(t, v, residual, pairs, &kept);
    }
    /* the energy left behind; total - kept is exact enough (both in double) and is the
     * same for both families */
    err = total - kept;
    err = (err > 0.0) ? err : 0.0;
    if (got != t->k) {
        terse_error(TERSE_LOG_CMP, "topk: selected %zu values instead of %zu", got, t->k);
        return TERSE_ERR_INTERNAL;
    }
    topk_put_header(t, 0, out);
    *flags_p = 0;
    if (sq_err_p != NULL) {
        *sq_err_p = err;
    }
    return TERSE_OK;
}

/* ---------------------------------------------------------------- decoding */
/* Checks everything a decoder relies on; reads only in[0..in_bytes). */
static terse_status_t
topk_validate(const cmp_topk_t *t, const void *in, size_t in_bytes, uint32_t *flags_p)
{
    const uint8_t *pairs;
    terse_topk_header_t h;
    uint32_t idx, prev = 0;
    float val;
    size_t j;

    if ((in == NULL) || (in_bytes != topk_payload_bytes(t))) {
        terse_debug(TERSE_LOG_CMP, "topk: payload of %zu bytes, expected %zu", in_bytes,
                    topk_payload_bytes(t));
        return TERSE_ERR_PAYLOAD;
    }
    memcpy(&h, in, sizeof(h));
    if ((h.magic != TERSE_TOPK_MAGIC) || (h.version != TERSE_TOPK_VERSION) ||
        (h.family != t->family) || ((h.flags & ~TERSE_CMP_NONFINITE) != 0) ||
        (h.reserved != 0) || (h.count != t->count) || (h.k != t->k)) {
        terse_debug(TERSE_LOG_CMP, "topk: payload header rejected");
        return TERSE_ERR_PAYLOAD;
    }
    pairs = (const uint8_t *)in + TERSE_TOPK_HEADER_BYTES;
    for (j = 0; j < t->k; ++j) {
        memcpy(&idx, pairs + j * TERSE_TOPK_PAIR_BYTES, sizeof(idx));
        memcpy(&val, pairs + j * TERSE_TOPK_PAIR_BYTES + 4, sizeof(val));
        if ((idx >= t->count) || ((j > 0) && (idx <= prev)) ||
            (((h.flags & TERSE_CMP_NONFINITE) == 0) && !isfinite(val))) {
            terse_debug(TERSE_LOG_CMP, "topk: payload pair %zu rejected", j);
            return TERSE_ERR_PAYLOAD;
        }
        prev = idx;
    }
    *flags_p = h.flags;
    return TERSE_OK;
}

static terse_status_t
cmp_topk_decompress(void *ctx, const void *in, size_t in_bytes, float scale,
                    const terse_buf_t *out, terse_stream_t stream)
{
    cmp_topk_t *t = ctx;
    const uint8_t *pairs;
    uint32_t flags = 0, idx;
    float val;
    size_t i;

#if CMP_TOPK_CUDA
    if (t->cuda != NULL) {
        if ((out == NULL) || (out->mem != TERSE_MEM_CUDA)) {
            return TERSE_ERR_INVALID;
        }
        return terse__cmp_topk_cuda_decompress(t->cuda, in, in_bytes, scale, out->ptr,
                                               out->dtype, out->count, stream);
    }
#endif
    (void)stream;
    if ((out == NULL) || (out->count != t->count) || (out->mem != TERSE_MEM_HOST) ||
        (terse_dtype_size(out->dtype) == 0)) {
        return TERSE_ERR_INVALID;
    }
    TERSE_CHECK(topk_validate(t, in, in_bytes, &flags));
    if (flags & TERSE_CMP_NONFINITE) {
        for (i = 0; i < t->count; ++i) {
            terse__store_f32(out->ptr, out->dtype, i, NAN);
        }
        return TERSE_OK;
    }
    memset(out->ptr, 0, t->count * terse_dtype_size(out->dtype)); /* +0 in every dtype */
    pairs = (const uint8_t *)in + TERSE_TOPK_HEADER_BYTES;
    for (i = 0; i < t->k; ++i) {
        memcpy(&idx, pairs + i * TERSE_TOPK_PAIR_BYTES, sizeof(idx));
        memcpy(&val, pairs + i * TERSE_TOPK_PAIR_BYTES + 4, sizeof(val));
        terse__store_f32(out->ptr, out->dtype, idx, scale * val);
    }
    return TERSE_OK;
}

static terse_status_t
cmp_topk_decompress_add(void *ctx, const void *in, size_t in_bytes, float *acc, size_t n,
                        uint32_t *flags_p, terse_stream_t stream)
{
    cmp_topk_t *t = ctx;
    const uint8_t *pairs;
    uint32_t flags = 0, idx;
    float val;
    size_t i;

#if CMP_TOPK_CUDA
    if (t->cuda != NULL) {
        return terse__cmp_topk_cuda_decompress_add(t->cuda, in, in_bytes, acc, n, flags_p,
                                                   stream);
    }
#endif
    (void)stream;
    if ((acc == NULL) || (n != t->count)) {
        return TERSE_ERR_INVALID;
    }
    TERSE_CHECK(topk_validate(t, in, in_bytes, &flags));
    if (flags_p != NULL) {
        *flags_p = flags;
    }
    if (flags & TERSE_CMP_NONFINITE) {
        for (i = 0; i < n; ++i) {
            acc[i] = NAN;
        }
        return TERSE_OK;
    }
    pairs = (const uint8_t *)in + TERSE_TOPK_HEADER_BYTES;
    for (i = 0; i < t->k; ++i) {
        memcpy(&idx, pairs + i * TERSE_TOPK_PAIR_BYTES, sizeof(idx));
        memcpy(&val, pairs + i * TERSE_TOPK_PAIR_BYTES + 4, sizeof(val));
        acc[idx] += val;
    }
    return TERSE_OK;
}

#if CMP_TOPK_CUDA
/* The device state (the `cuda` argument of topk_cuda.h's launchers, e.g. for the lazy
 * terse__cmp_topk_cuda_stat) of an ops instance of topk or topkt; NULL for a host instance.
 * Borrowed: owned by the instance. */
void *terse__cmp_topk_cuda_handle(void *ctx);

void *
terse__cmp_topk_cuda_handle(void *ctx)
{
    return (ctx != NULL) ? ((cmp_topk_t *)ctx)->cuda : NULL;
}
#endif

static const double cmp_topk_grid[] = {0.001, 0.003, 0.01, 0.03, 0.1, -1.0};

const terse_cmp_ops_t terse_cmp_topk_ops = {
    .size           = sizeof(terse_cmp_ops_t),
    .name           = "topk",
    .caps           = TERSE_CMP_CAP_CPU | TERSE_CMP_CAP_SPARSE | CMP_TOPK_CAP_CUDA,
    .param_doc      = "density in (0, 1]",
    .sum_dtype      = TERSE_FLOAT32,
    .grid           = cmp_topk_grid,
    .param_parse    = terse__cmp_parse_density,
    .create         = cmp_topk_create,
    .payload_size   = cmp_topk_payload_size,
    .nstages        = cmp_topk_nstages,
    .compress       = cmp_topk_compress,
    .stage          = NULL,
    .decompress     = cmp_topk_decompress,
    .decompress_add = cmp_topk_decompress_add,
    .reset          = NULL,
    .destroy        = cmp_topk_destroy,
};

const terse_cmp_ops_t terse_cmp_topkt_ops = {
    .size           = sizeof(terse_cmp_ops_t),
    .name           = "topkt",
    .caps           = TERSE_CMP_CAP_CPU | TERSE_CMP_CAP_SPARSE | TERSE_CMP_CAP_RNG |
                      CMP_TOPK_CAP_CUDA,
    .param_doc      = "density in (0, 1]",
    .sum_dtype      = TERSE_FLOAT32,
    .grid           = cmp_topk_grid,
    .param_parse    = terse__cmp_parse_density,
    .create         = cmp_topkt_create,
    .payload_size   = cmp_topk_payload_size,
    .nstages        = cmp_topk_nstages,
    .compress       = cmp_topk_compress,
    .stage          = NULL,
    .decompress     = cmp_topk_decompress,
    .decompress_add = cmp_topk_decompress_add,
    .reset          = NULL,
    .destroy        = cmp_topk_destroy,
};
