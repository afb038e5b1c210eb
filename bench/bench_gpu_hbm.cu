/*
 * HBM calibration kernels of terse-bench-gpu (bench_gpu.c): what a plain kernel reaches when it
 * only writes, written three ways, so that the decoders' rows can be read against the write
 * ceiling of ordinary stores rather than against cudaMemset's:
 *   mode 0  16-byte st.global per thread, grid-stride, one wave of blocks
 *   mode 1  the same with st.global.cs (streaming, evict-first), as the decoders store
 *   mode 2  each block fills a 16 KiB shared-memory tile and one thread writes it out with a
 *           TMA bulk copy (cp.async.bulk.global.shared::cta, sm_90): whole lines, one request
 *   mode 3  read-only: a float4 sum per thread (the read ceiling)
 * Every mode writes the value 1.0f (not zero) so that no fill shortcut applies.
 */
#include <stdint.h>

#include <cuda_runtime.h>

#include "cuda_util.h"

#define HB_THREADS 256
#define HB_TILE    16384 /* bytes per TMA tile */

extern "C" int bg_hbm_kernel(void *dst, size_t bytes, int mode, cudaStream_t s);

__global__ void __launch_bounds__(HB_THREADS)
hb_store(float4 *dst, size_t n4, int cs)
{
    const float4 one = make_float4(1.0f, 1.0f, 1.0f, 1.0f);

    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4;
         i += (size_t)gridDim.x * blockDim.x) {
        if (cs) {
            __stcs(dst + i, one);
        } else {
            dst[i] = one;
        }
    }
}

__global__ void __launch_bounds__(HB_THREADS)
hb_read(const float4 *src, size_t n4, float *sink)
{
    float acc = 0.0f;

    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4;
         i += (size_t)gridDim.x * blockDim.x) {
        float4 v = __ldcs(src + i);
        acc += v.x + v.y + v.z + v.w;
    }
    if (acc == 12345.678f) {
        *sink = acc; /* never true for the test data: keeps the loads */
    }
}

__global__ void __launch_bounds__(HB_THREADS)
hb_tma(uint8_t *dst, size_t ntiles)
{
    __shared__ __align__(128) float4 buf[2][HB_TILE / 16];
    int b = 0;

    for (size_t t = blockIdx.x; t < ntiles; t += gridDim.x, b ^= 1) {
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
        if (threadIdx.x == 0) {
            /* the copy issued from this buffer two tiles ago has finished reading it */
            asm volatile("cp.async.bulk.wait_group.read 1;" ::: "memory");
        }
        __syncthreads();
        for (int i = threadIdx.x; i < HB_TILE / 16; i += blockDim.x) {
            buf[b][i] = make_float4(1.0f, 1.0f, 1.0f, 1.0f);
        }
        asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
        __syncthreads();
        if (threadIdx.x == 0) {
            uint32_t src = (uint32_t)__cvta_generic_to_shared(&buf[b][0]);
            asm volatile("cp.async.bulk.global.shared::cta.bulk_group [%0], [%1], %2;"
                         :: "l"(dst + t * HB_TILE), "r"(src), "n"(HB_TILE) : "memory");
            asm volatile("cp.async.bulk.commit_group;" ::: "memory");
        }
#else
        (void)b;
        for (int i = threadIdx.x; i < HB_TILE / 16; i += blockDim.x) {
            ((float4 *)(dst + t * HB_TILE))[i] = make_float4(1.0f, 1.0f, 1.0f, 1.0f);
        }
#endif
    }
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900)
    if (threadIdx.x == 0) {
        asm volatile("cp.async.bulk.wait_group 0;" ::: "memory");
    }
#endif
}

/* Returns 0, or -1 when the mode is unknown or the launch failed. bytes: a multiple of 16 KiB. */
/* One even wave of resident blocks (grid-stride kernels). */
#define HB_GRID(_k) terse__cuda_fill_grid((const void *)(_k), HB_THREADS, UINT64_MAX)

extern "C" int
bg_hbm_kernel(void *dst, size_t bytes, int mode, cudaStream_t s)
{
    static float *sink;

    switch (mode) {
    case 0:
    case 1:
        hb_store<<<HB_GRID(hb_store), HB_THREADS, 0, s>>>((float4 *)dst, bytes / 16, mode);
        break;
    case 2:
        hb_tma<<<HB_GRID(hb_tma), HB_THREADS, 0, s>>>((uint8_t *)dst, bytes / HB_TILE);
        break;
    case 3:
        if ((sink == NULL) && (cudaMalloc((void **)&sink, sizeof(float)) != cudaSuccess)) {
            return -1;
        }
        hb_read<<<HB_GRID(hb_read), HB_THREADS, 0, s>>>((const float4 *)dst, bytes / 16, sink);
        break;
    default:
        return -1;
    }
    return (cudaGetLastError() == cudaSuccess) ? 0 : -1;
}
