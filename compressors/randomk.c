/*
 * Random-k sparsification with shared indices, CPU reference: family "randomk". The index
 * permutation and payload layout are described in randomk.h.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "randomk.h"
#include "topk.h"
/* Device hooks; the MPI shim's copy of this file (TERSE_CMP_HOST_ONLY) has none. */
#if TERSE_HAVE_CUDA && !defined(TERSE_CMP_HOST_ONLY)
#define CMP_RANDOMK_CUDA 1
#include "randomk_cuda.h"
#define CMP_RANDOMK_CAP_CUDA TERSE_CMP_CAP_CUDA
#else
#define CMP_RANDOMK_CUDA 0
#define CMP_RANDOMK_CAP_CUDA 0
#endif

typedef struct cmp_randomk {
    size_t    count;
    size_t    k;
    uint32_t  layer;
    uint32_t *index;  /* k indices of the last compress (decompress scatters to them), owned */
    int       have_index;
    void     *cuda;   /* device state (randomk_cuda.h) of a TERSE_MEM_CUDA instance, else NULL */
} cmp_randomk_t;

static void
cmp_randomk_destroy(void *ctx)
{
    cmp_randomk_t *r = ctx;

    if (r != NULL) {
#if CMP_RANDOMK_CUDA
        if (r->cuda != NULL) {
            terse__cmp_randomk_cuda_destroy(r->cuda);
        }
#endif
        free(r->index);
        free(r);
    }
}

static terse_status_t
cmp_randomk_create(const terse_cmp_params_t *params, void **ctx_p)
{
    cmp_randomk_t *r;

    TERSE_CHECK(terse__cmp_check_mem("randomk", params->mem));
    if ((params->count == 0) || (params->count > UINT32_MAX) || !(params->param > 0.0) ||
        (params->param > 1.0)) {
        terse_error(TERSE_LOG_CMP, "randomk: layer %u count %zu density %g out of range",
                    params->layer, params->count, params->param);
        return TERSE_ERR_INVALID;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL) {
        goto err_nomem;
    }
    r->count = params->count;
    r->k     = terse_topk_k(params->param, params->count);
    r->layer = params->layer;
    r->index = malloc(r->k * sizeof(*r->index));
    if (r->index == NULL) {
        goto err_free_randomk;
    }
#if CMP_RANDOMK_CUDA
    if (params->mem == TERSE_MEM_CUDA) {
        terse_status_t st = terse__cmp_randomk_cuda_create(r->count, r->k, &r->cuda);
        if (st != TERSE_OK) {
            free(r->index);
            free(r);
            return st;
        }
    }
#endif
    *ctx_p = r;
    return TERSE_OK;

err_free_randomk:
    free(r);
err_nomem:
    terse_error(TERSE_LOG_CMP, "randomk: failed to allocate the instance of layer %u",
                params->layer);
    return TERSE_ERR_NOMEM;
}

static terse_status_t
cmp_randomk_payload_size(void *ctx, size_t n, unsigned stage, size_t *bytes_p)
{
    cmp_randomk_t *r = ctx;

    if ((stage != 0) || (n != r->count)) {
        return TERSE_ERR_INVALID;
    }
    *bytes_p = r->k * sizeof(float);
    return TERSE_OK;
}

static unsigned
cmp_randomk_nstages(void *ctx)
{
    (void)ctx;
    return 1;
}

static terse_status_t
cmp_randomk_compress(void *ctx, const terse_buf_t *in, float *residual, const terse_rng_t *rng,
                     void *out, size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                     terse_stream_t stream)
{
    cmp_randomk_t *r = ctx;
    terse_randomk_perm_t perm;
    const float *src;
    float *o = out;
    double total = 0.0, sent = 0.0;
    size_t i, n = r->count;
    int bad = 0;

#if CMP_RANDOMK_CUDA
    if ((in != NULL) && (in->mem == TERSE_MEM_CUDA) && (r->cuda != NULL)) {
        return terse__cmp_randomk_cuda_compress(r->cuda, in->ptr, in->dtype, in->count,
                                                residual, rng, out, out_bytes, flags_p,
                                                sq_err_p, stream);
    }
#endif
    (void)stream;
    if ((in == NULL) || (in->count != n) || (in->mem != TERSE_MEM_HOST) || (rng == NULL) ||
        (out == NULL) || (out_bytes != r->k * sizeof(float))) {
        terse_error(TERSE_LOG_CMP, "randomk: bad compress arguments (count %zu, %zu bytes)",
                    (in != NULL) ? in->count : 0, out_bytes);
        return TERSE_ERR_INVALID;
    }
    if (rng->hi[1] != TERSE_RNG_SHARED) {
        terse_warn_once(TERSE_LOG_CMP, "randomk: layer %u got a per-rank stream: payloads of "
                        "different ranks will not add up", r->layer);
    }

    /* v = in + residual, in the residual; its energy (a non-finite v makes it non-finite) */
    if (residual != NULL) {
        if (in->dtype == TERSE_FLOAT32) {
            src   = in->ptr;
            total = terse__cmp_add_energy(residual, src, n);
        } else {
            for (i = 0; i < n; ++i) {
                residual[i] += terse__load_f32(in->ptr, in->dtype, i);
            }
            total = terse__cmp_energy(residual, n);
        }
    } else if (in->dtype == TERSE_FLOAT32) {
        total = terse__cmp_energy(in->ptr, n);
    } else {
        for (i = 0; i < n; ++i) {
            float x = terse__load_f32(in->ptr, in->dtype, i);
            total += (double)x * (double)x;
        }
    }
    bad = !isfinite(total);

    perm = terse_randomk_perm_make(rng, n);
    for (i = 0; i < r->k; ++i) {
        uint32_t idx = (uint32_t)terse_randomk_index(&perm, i);
        float x = (residual != NULL) ? residual[idx]
                                     : terse__load_f32(in->ptr, in->dtype, idx);

        r->index[i] = idx;
        o[i]        = x;
        sent += (double)x * (double)x;
        if (residual != NULL) {
            residual[idx] = 0.0f;
        }
    }
    r->have_index = 1;

    if (bad) {
        /* rule 3: the payload may hold the NaN or not; the sentinel carries the flag */
        if (residual != NULL) {
            memset(residual, 0, n * sizeof(float));
        }
        *flags_p = TERSE_CMP_NONFINITE;
        if (sq_err_p != NULL) {
            *sq_err_p = INFINITY;
        }
        return TERSE_OK;
    }
    *flags_p = 0;
    if (sq_err_p != NULL) {
        *sq_err_p = (total > sent) ? total - sent : 0.0;
    }
    return TERSE_OK;
}

static terse_status_t
cmp_randomk_decompress(void *ctx, const void *in, size_t in_bytes, float scale,
                       const terse_buf_t *out, terse_stream_t stream)
{
    cmp_randomk_t *r = ctx;
    const float *vals = in;
    size_t i;

#if CMP_RANDOMK_CUDA
    if ((out != NULL) && (out->mem == TERSE_MEM_CUDA) && (r->cuda != NULL)) {
        return terse__cmp_randomk_cuda_decompress(r->cuda, in, in_bytes, scale, out->ptr,
                                                  out->dtype, out->count, stream);
    }
#endif
    (void)stream;
    if ((out == NULL) || (out->count != r->count) || (out->mem != TERSE_MEM_HOST) ||
        (terse_dtype_size(out->dtype) == 0)) {
        return TERSE_ERR_INVALID;
    }
    if ((in == NULL) || (in_bytes != r->k * sizeof(float))) {
        terse_debug(TERSE_LOG_CMP, "randomk: payload of %zu bytes, expected %zu", in_bytes,
                    r->k * sizeof(float));
        return TERSE_ERR_PAYLOAD;
    }
    if (!r->have_index) {
        terse_error(TERSE_LOG_CMP, "randomk: decompress before any compress on layer %u",
                    r->layer);
        return TERSE_ERR_USAGE;
    }
    memset(out->ptr, 0, r->count * terse_dtype_size(out->dtype));
    for (i = 0; i < r->k; ++i) {
        terse__store_f32(out->ptr, out->dtype, r->index[i], scale * vals[i]);
    }
    return TERSE_OK;
}

#if CMP_RANDOMK_CUDA
/* The device state (the `cuda` argument of randomk_cuda.h's launchers, e.g. for the lazy
 * terse__cmp_randomk_cuda_stat) of an ops instance of randomk; NULL for a host instance.
 * Borrowed: owned by the instance. */
void *terse__cmp_randomk_cuda_handle(void *ctx);

void *
terse__cmp_randomk_cuda_handle(void *ctx)
{
    return (ctx != NULL) ? ((cmp_randomk_t *)ctx)->cuda : NULL;
}
#endif

static const double cmp_randomk_grid[] = {0.001, 0.01, 0.03, 0.1, -1.0};

const terse_cmp_ops_t terse_cmp_randomk_ops = {
    .size           = sizeof(terse_cmp_ops_t),
    .name           = "randomk",
    .caps           = TERSE_CMP_CAP_CPU | TERSE_CMP_CAP_SUMMABLE | TERSE_CMP_CAP_RNG |
                      CMP_RANDOMK_CAP_CUDA,
    .param_doc      = "density in (0, 1]",
    .sum_dtype      = TERSE_FLOAT32,
    .grid           = cmp_randomk_grid,
    .param_parse    = terse__cmp_parse_density,
    .create         = cmp_randomk_create,
    .payload_size   = cmp_randomk_payload_size,
    .nstages        = cmp_randomk_nstages,
    .compress       = cmp_randomk_compress,
    .stage          = NULL,
    .decompress     = cmp_randomk_decompress,
    .decompress_add = NULL,
    .reset          = NULL,
    .destroy        = cmp_randomk_destroy,
};
