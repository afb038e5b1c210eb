/*
 * The one kernel the device wire algorithms need of their own (comm/algo_device.c): fp32
 * accumulators to the caller's dtype, times the AVG scale, with the CPU reference's rounding
 * (terse__convert_from_f32), so the device path's sparse and requant results can be compared
 * with the host path's bit for bit. Everything else runs in the compressors' kernels or NCCL.
 */
#include <cuda_runtime.h>

#include "cuda_kernels.h"
#include "transport_nccl.h"

__global__ void
dev_from_f32_kernel(const float *__restrict__ src, float scale, void *__restrict__ dst,
                    terse_dtype_t dtype, size_t n)
{
    size_t i;

    for (i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        /* __fmul_rn: no contraction, the CPU's single rounding of src * scale */
        terse_cu_store(dst, dtype, i, (scale == 1.0f) ? src[i] : __fmul_rn(src[i], scale));
    }
}

extern "C" terse_status_t
terse__dev_from_f32(const float *src, float scale, void *dst, terse_dtype_t dtype, size_t n,
                    terse_stream_t stream)
{
    const unsigned threads = 256;
    size_t blocks          = (n + threads - 1) / threads;

    if (n == 0) {
        return TERSE_OK;
    }
    if (blocks > 65535u * 8u) {
        blocks = 65535u * 8u;
    }
    dev_from_f32_kernel<<<(unsigned)blocks, threads, 0, (cudaStream_t)stream>>>(src, scale, dst,
                                                                                 dtype, n);
    return terse__cuda_check_launch("dev_from_f32_kernel");
}
