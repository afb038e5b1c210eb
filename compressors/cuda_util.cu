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
