/*
 * Device helpers shared by the CUDA compressors (compressors/x_cuda.cu). CUDA only: include
 * from .cu files. The host-callable half lives in cuda_util.h.
 *
 * Conversions here are bit-identical to the CPU reference (compressor.c): the CUDA tests
 * compare payloads byte for byte. Every kernel runs on the caller's stream; nothing here
 * allocates or synchronises.
 */
#ifndef TERSE_CUDA_KERNELS_H
#define TERSE_CUDA_KERNELS_H

#include <cuda_runtime.h>
#include <stdint.h>

#include "compressor.h"
#include "cuda_util.h"
#include "rng.h"

#define TERSE_CUDA_CHECK_ST(_call, _what)                                                      \
    do {                                                                                       \
        cudaError_t _e = (_call);                                                              \
        if (_e != cudaSuccess) {                                                               \
            terse_error(TERSE_LOG_CMP, "%s failed: %s", _what, cudaGetErrorString(_e));        \
            return TERSE_ERR_CUDA;                                                             \
        }                                                                                      \
    } while (0)

/* Checks the launch just made (cudaPeekAtLastError: never consumes the application's error). */
#define TERSE_CUDA_LAUNCHED(_what) TERSE_CHECK(terse__cuda_check_launch(_what))

#define TERSE_CU_WARP 32

/* ---------------------------------------------------------------- element conversion */
__device__ __forceinline__ float
terse_cu_half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp  = (h >> 10) & 0x1fu;
    uint32_t man  = h & 0x3ffu;
    uint32_t u;

    if (exp == 0x1fu) {
        u = sign | 0x7f800000u | (man << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        u = sign;
    } else {
        u = __float_as_uint(__fmul_rn((float)man, 1.0f / 16777216.0f)) | sign;
    }
    return __uint_as_float(u);
}

__device__ __forceinline__ uint16_t
terse_cu_float_to_half(float f)
{
    uint32_t u = __float_as_uint(f);
    uint32_t sign = (u >> 16) & 0x8000u, abs = u & 0x7fffffffu, exp, man, shift, half, rem, hw;

    if (abs > 0x7f800000u) {
        return (uint16_t)(sign | 0x7fffu);
    }
    if (abs >= 0x477ff000u) {
        return (uint16_t)(sign | 0x7c00u);
    }
    exp = abs >> 23;
    if (exp >= 113) {
        half = ((exp - 112u) << 10) | ((abs >> 13) & 0x3ffu);
        rem  = abs & 0x1fffu;
        if ((rem > 0x1000u) || ((rem == 0x1000u) && (half & 1u))) {
            ++half;
        }
        return (uint16_t)(sign | half);
    }
    if (exp < 102) {
        return (uint16_t)sign;
    }
    man   = (abs & 0x7fffffu) | 0x800000u;
    shift = 126u - exp;
    half  = man >> shift;
    rem   = man & ((1u << shift) - 1u);
    hw    = 1u << (shift - 1u);
    if ((rem > hw) || ((rem == hw) && (half & 1u))) {
        ++half;
    }
    return (uint16_t)(sign | half);
}

/* Element i of a buffer of dtype (fp32, fp16, bf16) as float. */
__device__ __forceinline__ float
terse_cu_load(const void *p, terse_dtype_t dtype, size_t i)
{
    if (dtype == TERSE_FLOAT16) {
        return terse_cu_half_to_float(__ldg((const unsigned short *)p + i));
    }
    if (dtype == TERSE_BFLOAT16) {
        return terse_bf16_to_float(__ldg((const unsigned short *)p + i));
    }
    return __ldg((const float *)p + i);
}

__device__ __forceinline__ void
terse_cu_store(void *p, terse_dtype_t dtype, size_t i, float v)
{
    if (dtype == TERSE_FLOAT16) {
        ((uint16_t *)p)[i] = terse_cu_float_to_half(v);
    } else if (dtype == TERSE_BFLOAT16) {
        ((uint16_t *)p)[i] = terse_float_to_bf16(v);
    } else {
        ((float *)p)[i] = v;
    }
}

__device__ __forceinline__ int
terse_cu_isfinite(float v)
{
    return (__float_as_uint(v) & 0x7f800000u) != 0x7f800000u;
}

/* ---------------------------------------------------------------- reductions */
/* Warp sum in a fixed butterfly order: the same inputs give the same bits. */
template <typename T>
__device__ __forceinline__ T
terse_cu_warp_sum(T v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

__device__ __forceinline__ float
terse_cu_warp_max(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    return v;
}

__device__ __forceinline__ float
terse_cu_warp_min(float v)
{
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        v = fminf(v, __shfl_xor_sync(0xffffffffu, v, o));
    }
    return v;
}

/* Block sum in a fixed order (warp butterflies, then warp 0 over the warp sums). Every thread
 * of the block must call it; the result is valid in every thread. `sh` holds 32 T. */
template <typename T>
__device__ __forceinline__ T
terse_cu_block_sum(T v, T *sh)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;

    v = terse_cu_warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 0) {
        sh[warp] = v;
    }
    __syncthreads();
    v = (lane < nw) ? sh[lane] : (T)0;
    v = terse_cu_warp_sum(v);
    return v;
}

/* Exclusive scan of one unsigned per thread across the block; *total_p gets the block total.
 * `sh` holds 33 unsigned. Every thread of the block must call it. */
__device__ __forceinline__ unsigned
terse_cu_block_exscan(unsigned v, unsigned *sh, unsigned *total_p)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    unsigned x = v, y;

#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) {
            x += y;
        }
    }
    __syncthreads(); /* sh may still be read by a previous call */
    if (lane == 31) {
        sh[warp] = x;
    }
    __syncthreads();
    if (warp == 0) {
        unsigned w = (lane < nw) ? sh[lane] : 0u, z = w;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            y = __shfl_up_sync(0xffffffffu, z, o);
            if (lane >= o) {
                z += y;
            }
        }
        sh[lane] = z - w;
        if (lane == 31) {
            sh[32] = z;
        }
    }
    __syncthreads();
    *total_p = sh[32];
    return sh[warp] + x - v;
}

/* ---------------------------------------------------------------- per-call device status */
/* terse_cu_stat_t (cuda_util.h): the kernels add to sq_acc and OR into call; the fixup kernel
 * of each call commits them (terse_cu_stat_commit). */
__device__ __forceinline__ void
terse_cu_stat_commit(terse_cu_stat_t *st, int is_compress)
{
    uint32_t call = *(volatile uint32_t *)&st->call;

    st->flags |= call;
    if (is_compress) {
        st->sq_err = (call & TERSE_CMP_NONFINITE) ? __longlong_as_double(0x7ff0000000000000ll)
                                                  : *(volatile double *)&st->sq_acc;
    }
    st->sq_acc = 0.0;
    st->call   = 0;
    st->done   = 0;
    st->ncalls += 1;
}

/* Multi-tensor tables: the index of the last of the n entries (sorted by `first`, the first
 * tile, slot or block of each layer, entry 0's being 0) whose `first` is <= b, i.e. the layer
 * that unit b of a launch belongs to. */
template <typename E>
__device__ __forceinline__ uint32_t
terse_cu_table_find(const E *tab, uint32_t n, uint64_t b, uint64_t E::*first)
{
    uint32_t lo = 0, hi = n;

    while (hi - lo > 1) {
        const uint32_t mid = (lo + hi) >> 1;
        if (tab[mid].*first <= b) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Multi-tensor tables: an entry's `in` and `out` given as byte offsets (its `user` bits IN and
 * OUT: the caller's buffers move from run to run) moved onto the run's base. */
template <uint32_t IN, uint32_t OUT, typename E>
__device__ __forceinline__ void
terse_cu_table_rebase(E *e, const uint8_t *user)
{
    if (e->user & IN) {
        e->in = user + (uintptr_t)e->in;
    }
    if (e->user & OUT) {
        e->out = (uint8_t *)user + (uintptr_t)e->out;
    }
}

/* The NaN a rejected payload writes into its layer (quiet, positive). */
#define TERSE_CU_NAN __uint_as_float(0x7fc00000u)

/* The last of `nblocks` blocks to call this (thread 0 only, after the block's work) gets 1:
 * the classic threadfence reduction, so one block can commit what all of them did. */
__device__ __forceinline__ int
terse_cu_last_block(uint32_t *counter, uint32_t nblocks)
{
    __threadfence();
    return atomicAdd(counter, 1u) == nblocks - 1u;
}

/* Unaligned little-endian stores and loads (payloads need not be aligned). */
__device__ __forceinline__ void
terse_cu_st_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

__device__ __forceinline__ uint32_t
terse_cu_ld_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

__device__ __forceinline__ uint64_t
terse_cu_ld_u64(const uint8_t *p)
{
    return (uint64_t)terse_cu_ld_u32(p) | ((uint64_t)terse_cu_ld_u32(p + 4) << 32);
}

/* Grid size for n items with `per_block` items per block, at least 1. */
static inline unsigned
terse_cu_blocks(size_t n, size_t per_block)
{
    size_t b = (n + per_block - 1) / per_block;
    return (unsigned)((b > 0) ? b : 1);
}

#endif /* TERSE_CUDA_KERNELS_H */
