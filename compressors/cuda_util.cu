/* Device memory and error helpers; see cuda_util.h. No policy here. */
#include <stdlib.h>
#include <string.h>

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
    /* cudaMemset of device memory may return before it is done, on the legacy stream, which
     * does not order against a caller's cudaStreamNonBlocking stream (PyTorch's): done before
     * the pointer is handed out, or the first kernel on that stream can race the zeroing */
    e = cudaMemsetAsync(p, 0, (bytes > 0) ? bytes : 1, 0);
    if (e == cudaSuccess) {
        e = cudaStreamSynchronize(0);
    }
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
    /* a pageable host source: cudaMemcpy returns once the bytes are staged, before the copy
     * lands; synchronised here for the reason of terse__cuda_calloc */
    TERSE_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, 0), "cudaMemcpyAsync");
    TERSE_CUDA_CHECK(cudaStreamSynchronize(0), "cudaStreamSynchronize");
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

static int
cu_ptr_cmp(const void *a, const void *b)
{
    const uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;

    return (x > y) - (x < y);
}

extern "C" int
terse__cuda_ptr_twice(const void *first, size_t n, size_t stride)
{
    void **p = (void **)malloc((n > 0 ? n : 1) * sizeof(*p));
    int twice = 0;
    size_t i;

    if (p == NULL) {
        return 1;
    }
    for (i = 0; i < n; ++i) {
        memcpy(&p[i], (const unsigned char *)first + i * stride, sizeof(void *));
    }
    qsort(p, n, sizeof(*p), cu_ptr_cmp);
    for (i = 1; i < n; ++i) {
        twice = twice || (p[i] == p[i - 1]);
    }
    free(p);
    return twice;
}

extern "C" terse_status_t
terse__cuda_table_upload(void **dev_p, const void *host, size_t bytes)
{
    terse_status_t status;

    *dev_p = NULL;
    TERSE_CHECK(terse__cuda_calloc(dev_p, bytes));
    status = terse__cuda_memcpy(*dev_p, host, bytes);
    if (status != TERSE_OK) {
        terse__cuda_free(*dev_p);
        *dev_p = NULL;
    }
    return status;
}

extern "C" void
terse__cuda_table_free(void *table)
{
    if (table != NULL) {
        terse__cuda_free(*(void **)table); /* `dev`, the struct's first member */
        free(table);
    }
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

    /* on the caller's stream: a cudaMemset on the legacy stream could land after the next
     * call's kernels (on a non-blocking stream) have set a flag, and lose it */
    TERSE_CUDA_CHECK(cudaMemcpyAsync(&h, stat, sizeof(h), cudaMemcpyDeviceToHost,
                                     (cudaStream_t)s),
                     "cudaMemcpyAsync");
    TERSE_CUDA_CHECK(cudaStreamSynchronize((cudaStream_t)s), "cudaStreamSynchronize");
    if (h.flags != 0) {
        TERSE_CUDA_CHECK(cudaMemsetAsync(&stat->flags, 0, sizeof(stat->flags), (cudaStream_t)s),
                         "cudaMemsetAsync");
    }
    if (flags_p != NULL) {
        *flags_p = h.flags;
    }
    if (sq_err_p != NULL) {
        *sq_err_p = h.sq_err;
    }
    return TERSE_OK;
}

/* Streaming multiprocessors of the current device, cached per device (132: an H100's, when the
 * query fails). */
static int
cu_sm_count(void)
{
    static int sms[16];
    int dev = 0;

    if ((cudaGetDevice(&dev) != cudaSuccess) || (dev < 0) || (dev >= 16)) {
        (void)cudaGetLastError();
        return 132;
    }
    if (sms[dev] == 0) {
        int c = 0;
        if ((cudaDeviceGetAttribute(&c, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) ||
            (c <= 0)) {
            (void)cudaGetLastError();
            c = 132;
        }
        sms[dev] = c; /* a benign race: every writer stores the same value */
    }
    return sms[dev];
}

extern "C" unsigned
terse__cuda_fill_grid(const void *kernel, int threads, uint64_t want)
{
    static const void *keys[32];
    static int key_threads[32], vals[32];
    int i, per_sm = 0;
    uint64_t full;

    for (i = 0; (i < 32) && (keys[i] != NULL); ++i) {
        if ((keys[i] == kernel) && (key_threads[i] == threads)) {
            per_sm = vals[i];
            break;
        }
    }
    if (per_sm == 0) {
        if ((cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0) !=
             cudaSuccess) || (per_sm <= 0)) {
            (void)cudaGetLastError(); /* not sticky: only this query failed */
            per_sm = 2;
        }
        if (i < 32) {
            vals[i]        = per_sm; /* a benign race: writers store the same triple */
            key_threads[i] = threads;
            keys[i]        = kernel;
        }
    }
    full = (uint64_t)per_sm * (uint64_t)cu_sm_count();
    want = (want < full) ? want : full;
    return (unsigned)((want > 0) ? want : 1);
}
