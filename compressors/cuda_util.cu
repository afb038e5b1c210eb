/* Device memory and error helpers; see cuda_util.h. No policy here. */
#include <cuda_runtime.h>

#include "cuda_util.h"

#define TERSE_CUDA_CHECK(_call, _what)                                                         \
    do {                                                                                       \
        cudaError_t _e = (_call);                                                              \
        if (_e != cudaSuccess) {                                                               \
            terse_error(TERSE_LOG_CMP, "%s failed: %s", _what, cudaGetErrorString(_e));        \
            return TERSE_ERR_CUDA;                                                             \
        }                                                                                      \
    } while (0)

extern "C" terse_status_t
terse__cuda_calloc(void **ptr_p, size_t bytes)
{
    void *p = NULL;
    cudaError_t e;

    e = cudaMalloc(&p, (bytes > 0) ? bytes : 1);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError(); /* our own, non-sticky error: clear it */
        terse_error(TERSE_LOG_CMP, "cudaMalloc of %zu bytes failed: out of device memory", bytes);
        return TERSE_ERR_NOMEM;
    }
    TERSE_CUDA_CHECK(e, "cudaMalloc");
    e = cudaMemset(p, 0, (bytes > 0) ? bytes : 1);
    if (e != cudaSuccess) {
        cudaFree(p);
        TERSE_CUDA_CHECK(e, "cudaMemset");
    }
    *ptr_p = p;
    return TERSE_OK;
}

extern "C" void
terse__cuda_free(void *ptr)
{
    if (ptr != NULL) {
        cudaFree(ptr);
    }
}

extern "C" terse_status_t
terse__cuda_memset_async(void *ptr, int value, size_t bytes, terse_stream_t s)
{
    TERSE_CUDA_CHECK(cudaMemsetAsync(ptr, value, bytes, (cudaStream_t)s), "cudaMemsetAsync");
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cuda_memcpy(void *dst, const void *src, size_t bytes)
{
    TERSE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault), "cudaMemcpy");
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cuda_check_launch(const char *what)
{
    TERSE_CUDA_CHECK(cudaPeekAtLastError(), what);
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cuda_stream_sync(terse_stream_t s)
{
    TERSE_CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)s), "cudaStreamSynchronize");
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cuda_stat_create(terse_cu_stat_t **stat_p)
{
    void *p;

    TERSE_CHECK(terse__cuda_calloc(&p, sizeof(terse_cu_stat_t)));
    *stat_p = (terse_cu_stat_t *)p;
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cuda_stat_read(terse_cu_stat_t *stat, terse_stream_t s, uint32_t *flags_p,
                      double *sq_err_p)
{
    terse_cu_stat_t h;

    TERSE_CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)s), "cudaStreamSynchronize");
    TERSE_CUDA_CHECK(cudaMemcpy(&h, stat, sizeof(h), cudaMemcpyDeviceToHost), "cudaMemcpy");
    if (h.flags != 0) {
        TERSE_CUDA_CHECK(cudaMemset(&stat->flags, 0, sizeof(stat->flags)), "cudaMemset");
    }
    if (flags_p != NULL) {
        *flags_p = h.flags;
    }
    if (sq_err_p != NULL) {
        *sq_err_p = h.sq_err;
    }
    return TERSE_OK;
}
