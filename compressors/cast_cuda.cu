/*
 * cast on the GPU (cast_cuda.h): one grid-stride pass, the formulas of cast.h; a fixup launch
 * writes the NaN payload and zeroes the residual on a non-finite input, then commits.
 */
#include <stdlib.h>

#include <cuda_runtime.h>

#include "cast.h"
#include "cast_cuda.h"
#include "cuda_kernels.h"

#define CAST_THREADS 256
#define CAST_GRID    4096

typedef struct cast_cuda {
    int              kind;
    float            inv_p;
    float            fp;
    float            clip;
    terse_cu_stat_t *stat;
} cast_cuda_t;

__global__ void __launch_bounds__(CAST_THREADS)
cast_compress_kernel(const void *in, int dtype, float *residual, uint64_t n, uint16_t *out,
                     int kind, float inv_p, float fp, float clip, terse_cu_stat_t *st)
{
    __shared__ double sh[32];
    double acc = 0.0;
    float probe = 0.0f;
    uint64_t i;

    for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        float v = terse_cu_load(in, (terse_dtype_t)dtype, i), own;
        uint16_t h;
        if (residual != NULL) {
            v = v + residual[i];
        }
        if (kind == TERSE_CAST_BF16) {
            h   = terse_float_to_bf16(v);
            own = terse_bf16_to_float(h);
        } else {
            float w = v * inv_p;
            w       = (w < clip) ? w : clip;
            w       = (w > -clip) ? w : -clip;
            h       = terse_cu_float_to_half(w);
            own     = terse_cu_half_to_float(h) * fp;
        }
        out[i] = h;
        probe  = probe + v * 0.0f;
        if (residual != NULL) {
            residual[i] = v - own;
        }
        {
            double e = (double)v - (double)own;
            acc      = acc + e * e;
        }
    }
    if (__syncthreads_or(probe != 0.0f) && (threadIdx.x == 0)) {
        atomicOr(&st->call, (uint32_t)TERSE_CMP_NONFINITE);
    }
    acc = terse_cu_block_sum(acc, sh);
    if ((threadIdx.x == 0) && (acc != 0.0)) {
        atomicAdd(&st->sq_acc, acc);
    }
}

/* mode 0: compress fixup; 1: decompress (NaN on a rejected payload). */
__global__ void
cast_fixup(float *residual, void *out, int dtype, uint64_t n, uint16_t nan16,
           terse_cu_stat_t *st, int mode)
{
    const uint32_t call = *(volatile uint32_t *)&st->call;
    uint64_t i;

    if ((mode == 0) && (call & TERSE_CMP_NONFINITE)) {
        for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
             i += (uint64_t)gridDim.x * blockDim.x) {
            ((uint16_t *)out)[i] = nan16;
            if (residual != NULL) {
                residual[i] = 0.0f;
            }
        }
    } else if ((mode == 1) && (call & TERSE_CU_ERR_PAYLOAD)) {
        for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
             i += (uint64_t)gridDim.x * blockDim.x) {
            terse_cu_store(out, (terse_dtype_t)dtype, i, TERSE_CU_NAN);
        }
    }
    __syncthreads();
    if ((threadIdx.x == 0) && terse_cu_last_block(&st->done, gridDim.x)) {
        terse_cu_stat_commit(st, mode == 0);
    }
}

__global__ void __launch_bounds__(CAST_THREADS)
cast_decompress_kernel(const uint8_t *in, uint64_t n, int kind, float factor, void *out,
                       int dtype, int bad, terse_cu_stat_t *st)
{
    uint64_t i;

    if (bad) {
        if ((blockIdx.x == 0) && (threadIdx.x == 0)) {
            atomicOr(&st->call, (uint32_t)TERSE_CU_ERR_PAYLOAD);
        }
        return;
    }
    for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        uint16_t h = (uint16_t)(in[2 * i] | (in[2 * i + 1] << 8)); /* need not be aligned */
        float d    = (kind == TERSE_CAST_BF16) ? terse_bf16_to_float(h) : terse_cu_half_to_float(h);
        /* a NaN keeps its bits, as the CPU's multiply does (the GPU would canonicalise) */
        terse_cu_store(out, (terse_dtype_t)dtype, i, (d != d) ? d : d * factor);
    }
}

static unsigned
cast_grid(uint64_t n)
{
    unsigned g = terse_cu_blocks(n, CAST_THREADS);
    return (g > CAST_GRID) ? CAST_GRID : g;
}

extern "C" terse_status_t
terse__cmp_cast_cuda_create(int kind, int nranks, void **cuda_p)
{
    cast_cuda_t *c;
    terse_status_t status;

    if ((kind != TERSE_CAST_BF16) && (kind != TERSE_CAST_FP16)) {
        terse_error(TERSE_LOG_CMP, "cast cuda: bad kind %d", kind);
        return TERSE_ERR_INVALID;
    }
    c = (cast_cuda_t *)calloc(1, sizeof(*c));
    if (c == NULL) {
        terse_error(TERSE_LOG_CMP, "failed to allocate cast cuda state");
        return TERSE_ERR_NOMEM;
    }
    nranks   = (nranks > 1) ? nranks : 1;
    c->kind  = kind;
    c->fp    = (float)nranks;
    c->inv_p = 1.0f / c->fp;
    c->clip  = terse__cast_fp16_clip(nranks);
    TERSE_CHECK_GOTO(terse__cuda_stat_create(&c->stat), status, err_free_c);
    *cuda_p = c;
    return TERSE_OK;

err_free_c:
    free(c);
    return status;
}

extern "C" void
terse__cmp_cast_cuda_destroy(void *cuda)
{
    cast_cuda_t *c = (cast_cuda_t *)cuda;

    if (c != NULL) {
        terse__cuda_free(c->stat);
        free(c);
    }
}

extern "C" terse_status_t
terse__cmp_cast_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype, size_t n,
                              float *residual, const terse_rng_t *rng, void *out,
                              size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                              terse_stream_t stream)
{
    cast_cuda_t *c = (cast_cuda_t *)cuda;
    cudaStream_t s = (cudaStream_t)stream;

    (void)rng;
    if ((c == NULL) || ((n > 0) && ((in == NULL) || (out == NULL))) ||
        (dtype >= TERSE_FLOAT64) || (out_bytes != n * sizeof(uint16_t))) {
        terse_error(TERSE_LOG_CMP, "cast cuda: bad compress arguments (count %zu, %zu bytes)", n,
                    out_bytes);
        return TERSE_ERR_INVALID;
    }
    cast_compress_kernel<<<cast_grid(n), CAST_THREADS, 0, s>>>(
        in, (int)dtype, residual, n, (uint16_t *)out, c->kind, c->inv_p, c->fp, c->clip, c->stat);
    TERSE_CUDA_LAUNCHED("cast kernel");
    cast_fixup<<<64, 256, 0, s>>>(residual, out, 0, n,
                                  (c->kind == TERSE_CAST_BF16) ? TERSE_CAST_NAN_BF16
                                                               : TERSE_CAST_NAN_FP16,
                                  c->stat, 0);
    TERSE_CUDA_LAUNCHED("cast fixup");
    if (flags_p != NULL) {
        *flags_p = 0;
    }
    if (sq_err_p != NULL) {
        *sq_err_p = 0.0;
    }
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_cast_cuda_decompress(void *cuda, const void *in, size_t in_bytes, float scale,
                                void *out, terse_dtype_t dtype, size_t n, terse_stream_t stream)
{
    cast_cuda_t *c = (cast_cuda_t *)cuda;
    cudaStream_t s = (cudaStream_t)stream;
    int bad;
    float factor;

    if ((c == NULL) || ((n > 0) && (out == NULL)) || (dtype >= TERSE_FLOAT64)) {
        return TERSE_ERR_INVALID;
    }
    bad    = ((n > 0) && (in == NULL)) || (in_bytes != n * sizeof(uint16_t));
    factor = (c->kind == TERSE_CAST_BF16) ? scale : c->fp * scale;
    cast_decompress_kernel<<<cast_grid(n), CAST_THREADS, 0, s>>>(
        (const uint8_t *)in, n, c->kind, factor, out, (int)dtype, bad, c->stat);
    TERSE_CUDA_LAUNCHED("cast decompress kernel");
    cast_fixup<<<64, 256, 0, s>>>(NULL, out, (int)dtype, n, 0, c->stat, 1);
    TERSE_CUDA_LAUNCHED("cast fixup");
    return bad ? TERSE_ERR_PAYLOAD : TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_cast_cuda_stat(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                          double *sq_err_p)
{
    return terse__cuda_stat_read(((cast_cuda_t *)cuda)->stat, stream, flags_p, sq_err_p);
}
