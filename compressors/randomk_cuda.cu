/*
 * randomk on the GPU (randomk_cuda.h). Two passes, like the CPU reference:
 *   1. elementwise: v = in + residual into the residual, finiteness and sum of v^2;
 *   2. one thread per sent position j: idx(j) of the Feistel permutation, out[j] = v[idx],
 *      residual[idx] = 0 (indices are distinct: no two threads touch one element).
 * A fixup launch zeroes the residual on a non-finite input and commits the status block.
 */
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "cuda_kernels.h"
#include "randomk.h"
#include "randomk_cuda.h"

#define RK_THREADS 256

typedef struct rk_cuda {
    size_t           count;
    size_t           k;
    uint32_t        *index; /* device, k */
    terse_cu_stat_t *stat;  /* device */
} rk_cuda_t;

__global__ void __launch_bounds__(RK_THREADS)
rk_pass1(const void *in, int dtype, float *residual, uint64_t n, terse_cu_stat_t *st)
{
    __shared__ double sh[32];
    uint64_t i;
    double acc = 0.0;
    int bad = 0;

    for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        float x = terse_cu_load(in, (terse_dtype_t)dtype, i);
        if (residual != NULL) {
            x           = residual[i] + x;
            residual[i] = x;
        }
        bad |= !terse_cu_isfinite(x);
        acc = acc + (double)x * (double)x;
    }
    if (__syncthreads_or(bad) && (threadIdx.x == 0)) {
        atomicOr(&st->call, (uint32_t)TERSE_CMP_NONFINITE);
    }
    acc = terse_cu_block_sum(acc, sh);
    if ((threadIdx.x == 0) && (acc != 0.0)) {
        atomicAdd(&st->sq_acc, acc);
    }
}

__global__ void __launch_bounds__(RK_THREADS)
rk_pass2(const void *in, int dtype, float *residual, terse_randomk_perm_t perm, uint64_t k,
         float *out, uint32_t *index, terse_cu_stat_t *st)
{
    __shared__ double sh[32];
    uint64_t j = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    double acc = 0.0;

    if (j < k) {
        uint32_t idx = (uint32_t)terse_randomk_index(&perm, j);
        float x;
        if (residual != NULL) {
            x             = residual[idx];
            residual[idx] = 0.0f;
        } else {
            x = terse_cu_load(in, (terse_dtype_t)dtype, idx);
        }
        index[j] = idx;
        out[j]   = x;
        acc      = (double)x * (double)x;
    }
    acc = terse_cu_block_sum(acc, sh);
    if ((threadIdx.x == 0) && (acc != 0.0)) {
        atomicAdd(&st->sq_acc, -acc);
    }
}

/* mode 0: compress (zero the residual when non-finite); 1: decompress (NaN when rejected). */
__global__ void
rk_fixup(float *residual, void *out, int dtype, uint64_t n, uint64_t k, terse_cu_stat_t *st,
         int mode)
{
    const uint32_t call = *(volatile uint32_t *)&st->call;
    uint64_t i;

    if ((mode == 0) && (call & TERSE_CMP_NONFINITE)) {
        /* the payload turns NaN: on the device no host-side sentinel knows the flag in time,
         * so the sum itself carries it (rule 3), as cast and powersgd payloads do */
        for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < k;
             i += (uint64_t)gridDim.x * blockDim.x) {
            ((float *)out)[i] = TERSE_CU_NAN;
        }
        for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; (residual != NULL) && (i < n);
             i += (uint64_t)gridDim.x * blockDim.x) {
            residual[i] = 0.0f;
        }
    } else if ((mode == 1) && (call & TERSE_CU_ERR_PAYLOAD)) {
        for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
             i += (uint64_t)gridDim.x * blockDim.x) {
            terse_cu_store(out, (terse_dtype_t)dtype, i, TERSE_CU_NAN);
        }
    }
    __syncthreads();
    if ((threadIdx.x == 0) && terse_cu_last_block(&st->done, gridDim.x)) {
        if ((mode == 0) && !(call & TERSE_CMP_NONFINITE) && (st->sq_acc < 0.0)) {
            st->sq_acc = 0.0; /* total - sent, summed in another order */
        }
        terse_cu_stat_commit(st, mode == 0);
    }
}

__global__ void
rk_set_flag(terse_cu_stat_t *st, uint32_t flag)
{
    atomicOr(&st->call, flag);
}

__global__ void __launch_bounds__(RK_THREADS)
rk_scatter(const float *in, float scale, const uint32_t *index, uint64_t k, void *out, int dtype)
{
    uint64_t j = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;

    if (j < k) {
        float x = in[j];
        /* a NaN keeps its bits, as the CPU's multiply does (the GPU would canonicalise) */
        terse_cu_store(out, (terse_dtype_t)dtype, index[j], (x != x) ? x : scale * x);
    }
}

static unsigned
rk_grid(uint64_t n)
{
    uint64_t b = (n + RK_THREADS - 1) / RK_THREADS;
    b          = (b > 4096) ? 4096 : b;
    return (unsigned)((b > 0) ? b : 1);
}

extern "C" terse_status_t
terse__cmp_randomk_cuda_create(size_t count, size_t k, void **cuda_p)
{
    rk_cuda_t *r;
    terse_status_t status;

    if ((k == 0) || (k > count) || (count > ((size_t)1 << 32))) {
        terse_error(TERSE_LOG_CMP, "randomk cuda: bad k %zu of %zu", k, count);
        return TERSE_ERR_INVALID;
    }
    r = (rk_cuda_t *)calloc(1, sizeof(*r));
    if (r == NULL) {
        terse_error(TERSE_LOG_CMP, "failed to allocate randomk cuda state");
        return TERSE_ERR_NOMEM;
    }
    r->count = count;
    r->k     = k;
    TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&r->index, k * sizeof(uint32_t)), status,
                     err_free_r);
    TERSE_CHECK_GOTO(terse__cuda_stat_create(&r->stat), status, err_free_index);
    *cuda_p = r;
    return TERSE_OK;

err_free_index:
    terse__cuda_free(r->index);
err_free_r:
    free(r);
    return status;
}

extern "C" void
terse__cmp_randomk_cuda_destroy(void *cuda)
{
    rk_cuda_t *r = (rk_cuda_t *)cuda;

    if (r != NULL) {
        terse__cuda_free(r->stat);
        terse__cuda_free(r->index);
        free(r);
    }
}

extern "C" terse_status_t
terse__cmp_randomk_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype, size_t n,
                                 float *residual, const terse_rng_t *rng, void *out,
                                 size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                                 terse_stream_t stream)
{
    rk_cuda_t *r   = (rk_cuda_t *)cuda;
    cudaStream_t s = (cudaStream_t)stream;
    terse_randomk_perm_t perm;

    if ((r == NULL) || (in == NULL) || (n != r->count) || (rng == NULL) || (out == NULL) ||
        (dtype >= TERSE_FLOAT64) || (out_bytes != r->k * sizeof(float))) {
        terse_error(TERSE_LOG_CMP, "randomk cuda: bad compress arguments (count %zu, %zu bytes)",
                    n, out_bytes);
        return TERSE_ERR_INVALID;
    }
    perm = terse_randomk_perm_make(rng, n);
    rk_pass1<<<rk_grid(n), RK_THREADS, 0, s>>>(in, (int)dtype, residual, n, r->stat);
    TERSE_CUDA_LAUNCHED("randomk pass 1");
    rk_pass2<<<terse_cu_blocks(r->k, RK_THREADS), RK_THREADS, 0, s>>>(
        in, (int)dtype, residual, perm, r->k, (float *)out, r->index, r->stat);
    TERSE_CUDA_LAUNCHED("randomk pass 2");
    rk_fixup<<<64, RK_THREADS, 0, s>>>(residual, out, 0, n, r->k, r->stat, 0);
    TERSE_CUDA_LAUNCHED("randomk fixup");
    if (flags_p != NULL) {
        *flags_p = 0;
    }
    if (sq_err_p != NULL) {
        *sq_err_p = 0.0;
    }
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_randomk_cuda_decompress(void *cuda, const void *in, size_t in_bytes, float scale,
                                   void *out, terse_dtype_t dtype, size_t n,
                                   terse_stream_t stream)
{
    rk_cuda_t *r   = (rk_cuda_t *)cuda;
    cudaStream_t s = (cudaStream_t)stream;
    int bad;

    if ((r == NULL) || (out == NULL) || (n != r->count) || (dtype >= TERSE_FLOAT64)) {
        return TERSE_ERR_INVALID;
    }
    bad = (in == NULL) || (in_bytes != r->k * sizeof(float));
    TERSE_CUDA_CHECK_ST(cudaMemsetAsync(out, 0, n * terse_dtype_size(dtype), s),
                        "cudaMemsetAsync");
    if (bad) {
        rk_set_flag<<<1, 1, 0, s>>>(r->stat, TERSE_CU_ERR_PAYLOAD);
    } else {
        rk_scatter<<<terse_cu_blocks(r->k, RK_THREADS), RK_THREADS, 0, s>>>(
            (const float *)in, scale, r->index, r->k, out, (int)dtype);
    }
    TERSE_CUDA_LAUNCHED("randomk scatter");
    rk_fixup<<<64, RK_THREADS, 0, s>>>(NULL, out, (int)dtype, n, r->k, r->stat, 1);
    TERSE_CUDA_LAUNCHED("randomk fixup");
    return bad ? TERSE_ERR_PAYLOAD : TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_randomk_cuda_stat(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                             double *sq_err_p)
{
    return terse__cuda_stat_read(((rk_cuda_t *)cuda)->stat, stream, flags_p, sq_err_p);
}

extern "C" const uint32_t *
terse__cmp_randomk_cuda_index(void *cuda)
{
    return ((rk_cuda_t *)cuda)->index;
}
