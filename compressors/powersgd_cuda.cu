/*
 * powersgd on the GPU (powersgd_cuda.h). Matrices are row-major, factors k-major (powersgd.h);
 * a flat layer's padded tail (row i holds min(cols, count - i cols) real entries) is skipped.
 *
 *   ps_mq      one warp per row (PS_WARPS rows a block), lane l owning the 4-element groups
 *              l, l + 32, ...: M = in + residual written back, P[k][i] = warp butterfly of
 *              the lanes' partial dots, Q read through L1. VEC (cols and count multiples of 4,
 *              pointers aligned): 16-byte loads and stores (8-byte fp16 / bf16 input loads);
 *              otherwise scalar, in the same per-lane order (the same bits)
 *   ps_orth    one block (PS_OB_ORTH threads): classical Gram-Schmidt twice, a column's
 *              dots against the earlier columns (and its norm) in one vector reduction of
 *              doubles a pass, the norm after the second pass by Pythagoras (2 barriers a
 *              column), a fixed order; a degenerate column (powersgd.h) takes the CPU's
 *              per-column modified Gram-Schmidt; the columns in dynamic shared memory when
 *              they fit (sh_max), in basis otherwise
 *   ps_orth_batch  ps_orth of many layers in one launch (block b: layer b's ps_orth)
 *   ps_mtp     Q partials per (column tile, row chunk), a thread summing its columns over the
 *              chunk's rows in order (4 columns with 16-byte loads up to rank 8 when VEC, one
 *              otherwise), then ps_mtp_sum adds the chunks in order (deterministic split-K
 *              without atomics; chunk loads unrolled)
 *   ps_sub     ps_mq's shape: residual = M - P^ Q^T (same per-element order as the CPU)
 *   ps_keep    one block (PS_OB_KEEP threads), warm start: Q <- summed Q with unit columns, the r
 *              norms in one vector reduction (staged in shared memory when it fits)
 *   ps_write   out = scale P^ Q^T: 2-D tiles, a thread owns 4 columns (their Q in registers)
 *              and walks rows; VEC: one 16-byte (8-byte fp16 / bf16) store per lane and row
 * The vector paths change load widths, never the arithmetic: results do not depend on them.
 *
 * Batches (DESIGN.md section 8 rule 10): each kernel is a __device__ body taking its block
 * index and grid as arguments; its one-layer kernel passes blockIdx / gridDim, and its _batch
 * kernel runs every layer of a rank class in one flattened 1-D grid, a block finding its layer
 * by binary search over the layers' first blocks (ps_find) and passing its index in that
 * layer's own grid (the one its one-layer launch has). A layer thus gets the bits of its own
 * launches: ps_mq_batch, ps_fix_compress_batch (compress), ps_orth_batch, ps_mtp_batch,
 * ps_mtp_sum_batch, ps_sub_batch, ps_fix_stage_batch (stage 1), ps_keep_batch, ps_write_batch
 * (decompress). ps_mtp_batch alone changes the block size of the scalar path (its columns'
 * sums do not depend on it).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "cuda_kernels.h"
#include "powersgd.h"
#include "powersgd_cuda.h"

#define PS_R      TERSE_PSGD_CUDA_MAX_RANK
#define PS_WARPS  4   /* rows (one warp each) per ps_mq / ps_sub block */
#define PS_WX     64  /* 4-column groups per ps_write block (a warp: 128 columns) */
#define PS_WY     4   /* rows in flight per ps_write block */
#define PS_WGRID  2048 /* ps_write blocks, about (16 per SM, enough to stream the output) */
#define PS_TI     32  /* rows of P^ per shared-memory tile in ps_mtp */
#define PS_CHUNKS 64  /* row chunks of ps_mtp, at most */

typedef struct ps_dev {
    uint32_t bad;      /* this step's compress or stage met a non-finite value */
    uint32_t basis_ok; /* stage 1 produced P^ */
    uint32_t dec_bad;  /* decompress writes NaN */
    uint32_t m_is_res; /* m is the caller's residual (stage 1 writes it back) */
    float   *m;        /* this step's M, set by compress: where a batched stage 1 finds it */
} ps_dev_t;

typedef struct ps_cuda {
    size_t           count, rows, cols, rank, nchunk, chunk_rows;
    uint64_t         seed;
    uint32_t         layer;
    float           *q;       /* cols x r */
    float           *basis;   /* rows x r */
    float           *partial; /* nchunk x r x cols */
    float           *scratch; /* count, or NULL */
    float           *m;       /* this step's M: the residual or the scratch */
    int              m_is_res;
    int              next;    /* 0: compress, 1: stage 1, 2: decompress */
    size_t           sh_max;  /* dynamic shared bytes ps_orth / ps_keep may use (0: none) */
    ps_dev_t        *dev;
    terse_cu_stat_t *stat;
} ps_cuda_t;

typedef struct ps_shape {
    uint64_t count, rows, cols;
    int      r;
} ps_shape_t;

__device__ __forceinline__ uint32_t
ps_row_len(const ps_shape_t &s, uint64_t i)
{
    uint64_t left = s.count - i * s.cols;
    return (uint32_t)((left < s.cols) ? left : s.cols);
}

/* Four consecutive elements from e (a multiple of 4; the address aligned to four elements):
 * the same conversions as terse_cu_load, one 16-byte (fp32) or 8-byte (fp16, bf16) load.
 * Streaming (evict-first) loads, as ps_mq's residual and ps_sub's M: a row of a matrix is read
 * once, and left in L1 it evicted Q, which every row reads again (ps_q4). */
__device__ __forceinline__ void
ps_load4(const void *p, int dtype, uint64_t e, float *x)
{
    if ((dtype == TERSE_FLOAT16) || (dtype == TERSE_BFLOAT16)) {
        uint2 w = __ldcs((const uint2 *)((const uint16_t *)p + e));
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            uint16_t h = (uint16_t)(((u < 2) ? w.x : w.y) >> (16 * (u & 1)));
            x[u]       = (dtype == TERSE_FLOAT16) ? terse_cu_half_to_float(h)
                                                  : terse_bf16_to_float(h);
        }
    } else {
        float4 v = __ldcs((const float4 *)((const float *)p + e));
        x[0]     = v.x;
        x[1]     = v.y;
        x[2]     = v.z;
        x[3]     = v.w;
    }
}

/* The store twin of ps_load4 (the conversions of terse_cu_store) for the decompressed output:
 * streaming stores (written once, not read back here), through the intrinsics so that the
 * store stays one vector instruction (a plain float4 store came out as four scalar stores). */
__device__ __forceinline__ void
ps_store4(void *p, int dtype, uint64_t e, const float *v)
{
    if ((dtype == TERSE_FLOAT16) || (dtype == TERSE_BFLOAT16)) {
        uint32_t h[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            h[u] = (dtype == TERSE_FLOAT16) ? terse_cu_float_to_half(v[u])
                                            : terse_float_to_bf16(v[u]);
        }
        __stcs((uint2 *)((uint16_t *)p + e), make_uint2(h[0] | (h[1] << 16), h[2] | (h[3] << 16)));
    } else {
        __stcs((float4 *)((float *)p + e), make_float4(v[0], v[1], v[2], v[3]));
    }
}

/* Q[k][j .. j + 3] (k-major, read-only in the kernel). VEC: the group is whole and 16-byte
 * aligned (one load); otherwise the columns from lim on read as 0. */
template <int VEC>
__device__ __forceinline__ void
ps_q4(const float *q, uint64_t cols, int k, uint64_t j, uint64_t lim, float *v)
{
    const float *qk = q + (uint64_t)k * cols + j;

    if (VEC) {
        float4 t = __ldg((const float4 *)qk);
        v[0]     = t.x;
        v[1]     = t.y;
        v[2]     = t.z;
        v[3]     = t.w;
    } else {
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            v[u] = (j + u < lim) ? __ldg(qk + u) : 0.0f;
        }
    }
}

/* One group of M (nv valid elements x[0 .. nv - 1] at columns j ..) into the lane's sums, in
 * element order. */
template <int RM, int VEC>
__device__ __forceinline__ void
ps_mq_acc(const float *x, int nv, const float *q, const ps_shape_t &s, uint64_t j, uint32_t len,
          float *acc, double *tot_p, float *probe_p)
{
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        if (u < nv) {
            *tot_p   = *tot_p + (double)x[u] * (double)x[u];
            *probe_p = *probe_p + x[u] * 0.0f;
        }
    }
#pragma unroll
    for (int k = 0; k < RM; ++k) {
        if (k < s.r) {
            float qk[4];
            ps_q4<VEC>(q, s.cols, k, j, len, qk);
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                if (u < nv) {
                    acc[k] = acc[k] + x[u] * qk[u];
                }
            }
        }
    }
}

/* Lane l of a row's warp owns the 4-element groups l, l + 32, ... and adds each group's
 * elements in order: the same per-lane order whether the groups are vector loads (VEC: whole
 * groups, aligned; two groups' loads issued before either is used) or scalar loads, so the
 * two paths give the same bits. */
template <int RM, int VEC>
__device__ __forceinline__ void
ps_mq_body(const void *in, int dtype, int add_res, float *m, const float *q, float *p,
           const ps_shape_t &s, terse_cu_stat_t *st, uint32_t bx, double *shd)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint64_t i = (uint64_t)bx * PS_WARPS + warp;
    const uint32_t len = (i < s.rows) ? ps_row_len(s, i) : 0;
    float acc[RM];
    double tot = 0.0;
    float probe = 0.0f;

#pragma unroll
    for (int k = 0; k < RM; ++k) {
        acc[k] = 0.0f;
    }
    /* Q (cols x r, small) is read through the L1 cache: no staging, no block barrier, so
     * every warp streams its row at its own pace */
    if (VEC) {
        for (uint32_t j = (uint32_t)lane * 4; j < len; j += 256) {
            const uint64_t e = i * s.cols + j;
            const int two    = (j + 128 < len);
            float x[4], y[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            ps_load4(in, dtype, e, x);
            if (two) {
                ps_load4(in, dtype, e + 128, y);
            }
            if (add_res) {
                const float4 z = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                float4 r       = __ldcs((const float4 *)(m + e));
                float4 t       = two ? __ldcs((const float4 *)(m + e + 128)) : z;

                x[0] = r.x + x[0];
                x[1] = r.y + x[1];
                x[2] = r.z + x[2];
                x[3] = r.w + x[3];
                y[0] = t.x + y[0];
                y[1] = t.y + y[1];
                y[2] = t.z + y[2];
                y[3] = t.w + y[3];
            }
            *(float4 *)(m + e) = make_float4(x[0], x[1], x[2], x[3]);
            if (two) {
                *(float4 *)(m + e + 128) = make_float4(y[0], y[1], y[2], y[3]);
            }
            ps_mq_acc<RM, 1>(x, 4, q, s, j, len, acc, &tot, &probe);
            if (two) {
                ps_mq_acc<RM, 1>(y, 4, q, s, j + 128, len, acc, &tot, &probe);
            }
        }
    } else {
        for (uint32_t j = (uint32_t)lane * 4; j < len; j += 128) {
            const uint64_t e = i * s.cols + j;
            const int nv     = (int)((len - j < 4) ? len - j : 4);
            float x[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                x[u] = 0.0f;
                if (u < nv) {
                    float y = terse_cu_load(in, (terse_dtype_t)dtype, e + u);
                    if (add_res) {
                        y = m[e + u] + y;
                    }
                    m[e + u] = y;
                    x[u]     = y;
                }
            }
            ps_mq_acc<RM, 0>(x, nv, q, s, j, len, acc, &tot, &probe);
        }
    }
#pragma unroll
    for (int k = 0; k < RM; ++k) {
        if (k < s.r) {
            float v = terse_cu_warp_sum(acc[k]);
            if ((lane == 0) && (i < s.rows)) {
                p[(uint64_t)k * s.rows + i] = v;
            }
        }
    }
    if (__syncthreads_or(probe != 0.0f) && (threadIdx.x == 0)) {
        atomicOr(&st->call, (uint32_t)TERSE_CMP_NONFINITE);
    }
    tot = terse_cu_block_sum(tot, shd);
    if ((threadIdx.x == 0) && (tot != 0.0)) {
        atomicAdd(&st->sq_acc, tot);
    }
}

template <int RM, int VEC>
__global__ void __launch_bounds__(PS_WARPS * 32)
ps_mq(const void *in, int dtype, int add_res, float *m, const float *q, float *p, ps_shape_t s,
      terse_cu_stat_t *st)
{
    __shared__ double shd[32];

    ps_mq_body<RM, VEC>(in, dtype, add_res, m, q, p, s, st, blockIdx.x, shd);
}

/* After compress: a non-finite M (or an infinite ||M||^2) sends NaN and zeroes the residual;
 * the last block records the step's M (m, the residual when res is not NULL) for stage 1.
 * Block bx of gx (PS_FIXC_GRID). */
#define PS_FIXC_GRID 64

__device__ __forceinline__ void
ps_fix_compress_body(ps_dev_t *dev, float *p, uint64_t plen, float *res, float *m,
                     uint64_t count, terse_cu_stat_t *st, uint32_t bx, uint32_t gx)
{
    const uint32_t call = *(volatile uint32_t *)&st->call;
    const double tot    = *(volatile double *)&st->sq_acc;
    const int bad       = (call & TERSE_CMP_NONFINITE) || !(tot - tot == 0.0);
    const uint64_t t0 = (uint64_t)bx * blockDim.x + threadIdx.x;
    const uint64_t step = (uint64_t)gx * blockDim.x;
    uint64_t i;

    if (bad) {
        for (i = t0; i < plen; i += step) {
            p[i] = TERSE_CU_NAN;
        }
        for (i = t0; (res != NULL) && (i < count); i += step) {
            res[i] = 0.0f;
        }
    }
    __syncthreads();
    if ((threadIdx.x == 0) && terse_cu_last_block(&st->done, gx)) {
        dev->bad      = (uint32_t)bad;
        dev->basis_ok = 0;
        dev->m        = m;
        dev->m_is_res = (res != NULL);
        if (bad) {
            st->call |= TERSE_CMP_NONFINITE;
        }
        terse_cu_stat_commit(st, 1);
    }
}

__global__ void
ps_fix_compress(ps_dev_t *dev, float *p, uint64_t plen, float *res, float *m, uint64_t count,
                terse_cu_stat_t *st)
{
    ps_fix_compress_body(dev, p, plen, res, m, count, st, blockIdx.x, gridDim.x);
}

/* ---------------------------------------------------------------- orthonormalisation */
/* Threads of the one-block kernels: as many as their registers allow (the rank-sized vectors
 * of doubles), for the warps that hide the latency of their per-thread element loops. */
#define PS_OB_ORTH(_rm) (((_rm) <= 8) ? 512 : 256)
#define PS_OB_KEEP(_rm) (((_rm) <= 8) ? 1024 : 256)

__device__ __forceinline__ double
ps_ddot(const float *a, const float *b, uint64_t len, double *sh)
{
    double s = 0.0;

    for (uint64_t t = threadIdx.x; t < len; t += blockDim.x) {
        s = s + (double)a[t] * (double)b[t];
    }
    return terse_cu_block_sum(s, sh);
}

__device__ __forceinline__ void
ps_project_out(float *a, uint64_t len, int c, double *sh)
{
    float *ac = a + (uint64_t)c * len;

    for (int pass = 0; pass < 2; ++pass) {
        for (int j = 0; j < c; ++j) {
            const float *aj = a + (uint64_t)j * len;
            float f         = (float)-ps_ddot(aj, ac, len, sh);
            for (uint64_t t = threadIdx.x; t < len; t += blockDim.x) {
                ac[t] = ac[t] + f * aj[t];
            }
            __syncthreads();
        }
    }
}

/* Warp reduce-scatter of P (a power of two, <= 32) doubles a lane: each step halves the vector,
 * a lane keeping the half its offset bit selects and adding its partner's copy of it (P - 1
 * shuffles instead of 5 P), then the last steps sum the one value left. Lane l returns the warp
 * sum of element l / (32 / P); a fixed order, so every run gives the same bits. */
template <int P>
__device__ __forceinline__ double
ps_warp_rs(double *v, int lane)
{
#pragma unroll
    for (int k = 0; (P >> (k + 1)) >= 1; ++k) {
        const int h = P >> (k + 1), o = 16 >> k, hi = (lane & o) != 0;
#pragma unroll
        for (int i = 0; i < h; ++i) {
            const double send = hi ? v[i] : v[i + h];
            const double keep = hi ? v[i + h] : v[i];
            v[i]              = keep + __shfl_xor_sync(0xffffffffu, send, o);
        }
    }
    double s = v[0];
#pragma unroll
    for (int o = 16 / P; o >= 1; o >>= 1) {
        s = s + __shfl_xor_sync(0xffffffffu, s, o);
    }
    return s;
}

/* Block sum of the P doubles v of every thread (NW warps, all threads call it):
 * tot[j] = the sum over the block of v[j], the same bits in every thread. One barrier: the
 * warps' sums go to buf[warp][j], then lane j of every warp adds the NW of them in warp
 * order and the warp broadcasts the P totals. buf is read after the barrier, so the caller
 * alternates two buffers: a call's writes to buf come after the barrier of the call between,
 * which every thread reaches only once done reading buf of the call before. */
template <int P, int NW>
__device__ __forceinline__ void
ps_block_vsum(double *v, double *buf, double *tot)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    double s = ps_warp_rs<P>(v, lane);

    if ((lane & (32 / P - 1)) == 0) {
        buf[warp * P + lane / (32 / P)] = s;
    }
    __syncthreads();
    s = 0.0;
    if (lane < P) {
#pragma unroll
        for (int w = 0; w < NW; ++w) {
            s = s + buf[w * P + lane];
        }
    }
#pragma unroll
    for (int j = 0; j < P; ++j) {
        tot[j] = __shfl_sync(0xffffffffu, s, j);
    }
}

/* Dynamic shared memory of the one-block kernels (SH = 1): their working copy, so the many
 * dependent passes of Gram-Schmidt and the warm start wait on shared memory, not on L2. */
extern __shared__ __align__(16) float ps_dyn[];

/* n floats of src to dst (and to dst2 when not NULL), eight loads in flight per thread, 16-byte
 * ones when every pointer is aligned and n a multiple of 4 (the same values either way: the
 * callers' barrier follows); *bad_p |= some value is not finite. Every thread of the block
 * calls it. */
__device__ __forceinline__ void
ps_stage(const float *src, float *dst, float *dst2, uint64_t n, int *bad_p)
{
    const uint64_t nt = blockDim.x;
    int bad = 0;

    if (((((uintptr_t)src | (uintptr_t)dst | (uintptr_t)dst2) & 15) == 0) && ((n & 3) == 0)) {
        const float4 *s4 = (const float4 *)src;
        float4 *d4 = (float4 *)dst, *e4 = (float4 *)dst2;
        for (uint64_t t0 = threadIdx.x; t0 < n / 4; t0 += 8 * nt) {
            float4 x[8];
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                uint64_t t = t0 + (uint64_t)u * nt;
                x[u]       = (t < n / 4) ? s4[t] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                uint64_t t = t0 + (uint64_t)u * nt;
                if (t < n / 4) {
                    d4[t] = x[u];
                    if (dst2 != NULL) {
                        e4[t] = x[u];
                    }
                    bad |= !terse_cu_isfinite(x[u].x) | !terse_cu_isfinite(x[u].y) |
                           !terse_cu_isfinite(x[u].z) | !terse_cu_isfinite(x[u].w);
                }
            }
        }
    } else {
        for (uint64_t t0 = threadIdx.x; t0 < n; t0 += 8 * nt) {
            float x[8];
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                uint64_t t = t0 + (uint64_t)u * nt;
                x[u]       = (t < n) ? src[t] : 0.0f;
            }
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                uint64_t t = t0 + (uint64_t)u * nt;
                if (t < n) {
                    dst[t] = x[u];
                    if (dst2 != NULL) {
                        dst2[t] = x[u];
                    }
                    bad |= !terse_cu_isfinite(x[u]);
                }
            }
        }
    }
    *bad_p |= bad;
}

/* Column c of a (columns 0 .. c - 1 orthonormal) is degenerate: the per-column path of the
 * CPU reference (powersgd.h): the unit vector e_t maximising 1 - sum_j a_j[t]^2, lowest t on
 * ties, modified Gram-Schmidt twice against columns 0 .. c - 1; returns its norm. */
__device__ __noinline__ double
ps_orth_degenerate(float *a, uint64_t len, int c, double *sh, double *sw, uint64_t *st_)
{
    float *ac = a + (uint64_t)c * len;
    double bw = -1.0;
    uint64_t bt = 0;
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;

    for (uint64_t t = threadIdx.x; t < len; t += blockDim.x) {
        double w = 1.0;
        for (int j = 0; j < c; ++j) {
            double x = (double)a[(uint64_t)j * len + t];
            w        = w - x * x;
        }
        if (w > bw) {
            bw = w;
            bt = t;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        double w2   = __shfl_xor_sync(0xffffffffu, bw, o);
        uint64_t t2 = __shfl_xor_sync(0xffffffffu, bt, o);
        if ((w2 > bw) || ((w2 == bw) && (t2 < bt))) {
            bw = w2;
            bt = t2;
        }
    }
    __syncthreads();
    if (lane == 0) {
        sw[warp]  = bw;
        st_[warp] = bt;
    }
    __syncthreads();
    bw = sw[0];
    bt = st_[0];
    for (int w = 1; w < nw; ++w) {
        if ((sw[w] > bw) || ((sw[w] == bw) && (st_[w] < bt))) {
            bw = sw[w];
            bt = st_[w];
        }
    }
    for (uint64_t t = threadIdx.x; t < len; t += blockDim.x) {
        ac[t] = (t == bt) ? 1.0f : 0.0f;
    }
    __syncthreads();
    ps_project_out(a, len, c, sh);
    return sqrt(ps_ddot(ac, ac, len, sh));
}

/* One block of PS_OB_ORTH(RM) threads: basis = orth(summed), or dev->bad when summed is not
 * finite. SH: the columns are worked on in ps_dyn (r * len floats) and copied to basis at the
 * end; basis gets summed at the start either way, as without SH.
 *
 * Classical Gram-Schmidt twice (CGS2), the same basis as the CPU's modified Gram-Schmidt twice
 * up to rounding and as safe (both keep orthogonality at working precision while the column
 * is not numerically dependent, which the degenerate rule catches), with 2 block reductions a
 * column instead of 2 + 2 c. Column c (c >= 1), dots in double, updates in float in j order:
 *   R1  d_j = a_j . a_c (j < c), n0^2 = a_c . a_c     one vector reduction
 *       a_c' = a_c - sum_j d_j a_j; then e_j = a_j . a_c' (j < c), s = a_c' . a_c'
 *   R2  the e_j and s                                  one vector reduction
 *       nc^2 = s - sum_j e_j^2 (Pythagoras: a_c'' = a_c' - sum_j e_j a_j, a_j orthonormal);
 *       under 2e-6 n0 (cancellation, or near the 1e-6 threshold) a_c'' is formed and nc is its
 *       reduced norm instead, so the degenerate decision reads the norm of the vector itself
 *   a_c = a_c'' / nc, fused with R1 of column c + 1.
 * A degenerate column (n0 0 or not finite, nc <= 1e-6 n0) takes the per-column path of the CPU
 * (ps_orth_degenerate), and the next column starts with its own R1. Every thread works on its
 * own elements t = threadIdx.x + k B of every column, so the only barriers of the common
 * path are those of the reductions. */
#define PS_ORTH_RED(_rm) ((PS_OB_ORTH(_rm) / 32) * (_rm)) /* doubles of one reduction buffer */

/* The static shared memory of a ps_orth block, declared by the kernels (ps_orth,
 * ps_orth_batch) so that a kernel running either SH instance of the body holds one copy. */
template <int RM>
struct ps_orth_sh {
    double   sh[32];
    double   sw[32];
    uint64_t st_[32];
    double   red[2][PS_ORTH_RED(RM)];
};

template <int RM, int SH>
__device__ __forceinline__ void
ps_orth_body(const float *summed, float *basis, uint64_t len, int r, ps_dev_t *dev,
             ps_orth_sh<RM> &w)
{
    constexpr int B = PS_OB_ORTH(RM);
    double *sh = w.sh, *sw = w.sw;
    uint64_t *st_ = w.st_;
    double (*red)[PS_ORTH_RED(RM)] = w.red;
    float *a = SH ? ps_dyn : basis;
    int bad = 0, rb = 0, have = 0;
    double tot[RM]; /* R1 of column c: tot[j] = a_j . a_c (j < c), tot[RM - 1] = a_c . a_c */

    if (dev->bad) {
        return;
    }
    ps_stage(summed, a, SH ? basis : NULL, (uint64_t)r * len, &bad);
    if (__syncthreads_or(bad)) {
        if (threadIdx.x == 0) {
            dev->bad = 1;
        }
        return;
    }
    for (int c = 0; c < r; ++c) {
        float *ac = a + (uint64_t)c * len;
        float g[RM]; /* the pass-2 coefficients -e_j while not yet applied (pending) */
        double n0, nc = 0.0;
        int degen, pending = 0;

        if (!have) {
            double v[RM];
#pragma unroll
            for (int j = 0; j < RM; ++j) {
                v[j] = 0.0;
            }
            for (uint64_t t = threadIdx.x; t < len; t += B) {
                const double x = (double)ac[t];
#pragma unroll
                for (int j = 0; j < RM - 1; ++j) {
                    if (j < c) {
                        v[j] = v[j] + (double)a[(uint64_t)j * len + t] * x;
                    }
                }
                v[RM - 1] = v[RM - 1] + x * x;
            }
            ps_block_vsum<RM, B / 32>(v, red[rb], tot);
            rb ^= 1;
        }
        have  = 0;
        n0    = sqrt(tot[RM - 1]);
        degen = !(n0 > 0.0) || !(n0 - n0 == 0.0);
        if (!degen && (c == 0)) {
            nc = n0; /* nothing to project out: the CPU's second norm is the first */
        } else if (!degen) {
            float f[RM];
            double v[RM], e[RM], e2 = 0.0, ncsq;
#pragma unroll
            for (int j = 0; j < RM; ++j) {
                f[j] = (j < c) ? (float)-tot[j] : 0.0f;
                v[j] = 0.0;
            }
            for (uint64_t t = threadIdx.x; t < len; t += B) {
                float aj[RM], x = ac[t];
                double xd;
#pragma unroll
                for (int j = 0; j < RM - 1; ++j) {
                    if (j < c) {
                        aj[j] = a[(uint64_t)j * len + t];
                        x     = x + f[j] * aj[j];
                    }
                }
                ac[t] = x;
                xd    = (double)x;
#pragma unroll
                for (int j = 0; j < RM - 1; ++j) {
                    if (j < c) {
                        v[j] = v[j] + (double)aj[j] * xd;
                    }
                }
                v[RM - 1] = v[RM - 1] + xd * xd;
            }
            ps_block_vsum<RM, B / 32>(v, red[rb], e);
            rb ^= 1;
#pragma unroll
            for (int j = 0; j < RM - 1; ++j) {
                g[j] = (j < c) ? (float)-e[j] : 0.0f;
                if (j < c) {
                    e2 = e2 + e[j] * e[j];
                }
            }
            ncsq = e[RM - 1] - e2;
            if (ncsq > 4e-12 * tot[RM - 1]) {
                nc      = sqrt(ncsq);
                pending = 1;
            } else {
                double s = 0.0;
                for (uint64_t t = threadIdx.x; t < len; t += B) {
                    float x = ac[t];
#pragma unroll
                    for (int j = 0; j < RM - 1; ++j) {
                        if (j < c) {
                            x = x + g[j] * a[(uint64_t)j * len + t];
                        }
                    }
                    ac[t] = x;
                    s     = s + (double)x * (double)x;
                }
                nc = sqrt(terse_cu_block_sum(s, sh));
            }
            degen = !(nc > 1e-6 * n0);
        }
        if (degen) {
            nc = ps_orth_degenerate(a, len, c, sh, sw, st_);
            {
                float inv = (float)(1.0 / nc);
                for (uint64_t t = threadIdx.x; t < len; t += B) {
                    ac[t] = ac[t] * inv;
                }
                __syncthreads();
            }
        } else {
            /* a_c'' (when pending), a_c = a_c'' / nc, and R1 of column c + 1 from the same
             * registers: the same operations, in the same order, as two passes */
            const float inv = (float)(1.0 / nc);
            const int next  = (c + 1 < r);
            const float *an = ac + len;
            double v[RM];
#pragma unroll
            for (int j = 0; j < RM; ++j) {
                v[j] = 0.0;
            }
            for (uint64_t t = threadIdx.x; t < len; t += B) {
                float aj[RM], x = ac[t];
#pragma unroll
                for (int j = 0; j < RM - 1; ++j) {
                    if (j < c) {
                        aj[j] = a[(uint64_t)j * len + t];
                        if (pending) {
                            x = x + g[j] * aj[j];
                        }
                    }
                }
                x     = x * inv;
                ac[t] = x;
                if (next) {
                    const double y = (double)an[t];
#pragma unroll
                    for (int j = 0; j < RM - 1; ++j) {
                        if (j < c) {
                            v[j] = v[j] + (double)aj[j] * y;
                        } else if (j == c) {
                            v[j] = v[j] + (double)x * y;
                        }
                    }
                    v[RM - 1] = v[RM - 1] + y * y;
                }
            }
            if (next) {
                ps_block_vsum<RM, B / 32>(v, red[rb], tot);
                rb ^= 1;
                have = 1;
            }
        }
    }
    if (SH) {
        /* the flat copy crosses the per-column ownership of the elements (len is not a
         * multiple of B in general): the last column's writes must be visible */
        __syncthreads();
        for (uint64_t t = threadIdx.x; t < (uint64_t)r * len; t += B) {
            basis[t] = a[t];
        }
    }
    if (threadIdx.x == 0) {
        dev->basis_ok = 1;
    }
}

template <int RM, int SH>
__global__ void __launch_bounds__(PS_OB_ORTH(RM))
ps_orth(const float *summed, float *basis, uint64_t len, int r, ps_dev_t *dev)
{
    __shared__ ps_orth_sh<RM> w;

    ps_orth_body<RM, SH>(summed, basis, len, r, dev, w);
}

/* One layer of ps_orth_batch: ps_orth's arguments, and whether its columns fit ps_dyn. */
typedef struct ps_orth_job {
    const float *summed;
    float       *basis;
    ps_dev_t    *dev;
    uint64_t     len;
    int          r;
    int          sh;
} ps_orth_job_t;

/* ps_orth of many layers in one launch, block b doing job b exactly as ps_orth<RM', SH> would
 * (SH: the job's flag). RM is the largest rank bound of the launch's layers, and every one of
 * them has PS_OB_ORTH(RM) == PS_OB_ORTH(RM'): the bits do not depend on RM beyond that block
 * size (the vector reductions add each element over the same lanes and warps in the same tree,
 * and the columns from r on are never touched). */
template <int RM>
__global__ void __launch_bounds__(PS_OB_ORTH(RM))
ps_orth_batch(const ps_orth_job_t *jobs)
{
    __shared__ ps_orth_sh<RM> w;
    const ps_orth_job_t *j = jobs + blockIdx.x;

    if (j->sh) {
        ps_orth_body<RM, 1>(j->summed, j->basis, j->len, j->r, j->dev, w);
    } else {
        ps_orth_body<RM, 0>(j->summed, j->basis, j->len, j->r, j->dev, w);
    }
}

/* ---------------------------------------------------------------- Q = M^T P^ */
/* A thread owns V columns from j and sums its chunk's rows in order, so a column's partial does
 * not depend on V nor on the block size. V = 4: whole groups (cols and count multiples of 4),
 * one 16-byte load per row when ld4 (m aligned), four scalar loads otherwise (the same sums).
 * Block (bx, by): column tile bx, row chunk by; sp: RM * PS_TI floats of shared memory. */
template <int RM, int V>
__device__ __forceinline__ void
ps_mtp_body(const float *m, int ld4, const float *pb, float *partial, const ps_shape_t &s,
            uint64_t chunk_rows, const ps_dev_t *dev, uint32_t bx, uint32_t by, float *sp)
{
    const uint64_t j  = ((uint64_t)bx * blockDim.x + threadIdx.x) * V;
    const uint64_t i0 = (uint64_t)by * chunk_rows;
    const uint64_t i1 = (i0 + chunk_rows < s.rows) ? i0 + chunk_rows : s.rows;
    float acc[RM][V];

    if (dev->bad) {
        return;
    }
#pragma unroll
    for (int k = 0; k < RM; ++k) {
#pragma unroll
        for (int u = 0; u < V; ++u) {
            acc[k][u] = 0.0f;
        }
    }
    for (uint64_t ib = i0; ib < i1; ib += PS_TI) {
        const uint64_t nt = (i1 - ib < PS_TI) ? i1 - ib : PS_TI;
        __syncthreads();
        for (int t = threadIdx.x; t < s.r * PS_TI; t += blockDim.x) {
            int k = t / PS_TI, ii = t % PS_TI;
            sp[t] = ((uint64_t)ii < nt) ? pb[(uint64_t)k * s.rows + ib + ii] : 0.0f;
        }
        __syncthreads();
#pragma unroll 4
        for (uint64_t ii = 0; ii < nt; ++ii) {
            const uint64_t e = (ib + ii) * s.cols + j;
            const int ok     = (j < s.cols) && (e < s.count);
            float x[4]       = {0.0f, 0.0f, 0.0f, 0.0f}; /* the first V are used */
            if ((V == 4) && ld4) {
                if (ok) {
                    float4 t = *(const float4 *)(m + e);
                    x[0]     = t.x;
                    x[1]     = t.y;
                    x[2]     = t.z;
                    x[3]     = t.w;
                }
            } else if ((V == 4) && ok) {
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    x[u] = m[e + u];
                }
            } else if (ok) {
                x[0] = m[e];
            }
#pragma unroll
            for (int k = 0; k < RM; ++k) {
                if (k < s.r) {
                    const float pk = sp[k * PS_TI + ii];
#pragma unroll
                    for (int u = 0; u < V; ++u) {
                        acc[k][u] = acc[k][u] + x[u] * pk;
                    }
                }
            }
        }
    }
    if (j < s.cols) {
#pragma unroll
        for (int k = 0; k < RM; ++k) {
            if (k < s.r) {
                float *pp = partial + ((uint64_t)by * s.r + k) * s.cols + j;
#pragma unroll
                for (int u = 0; u < V; ++u) {
                    pp[u] = acc[k][u];
                }
            }
        }
    }
}

template <int RM, int V>
__global__ void __launch_bounds__(256)
ps_mtp(const float *m, const float *pb, float *partial, ps_shape_t s, uint64_t chunk_rows,
       const ps_dev_t *dev)
{
    __shared__ float sp[RM * PS_TI];

    ps_mtp_body<RM, V>(m, 1, pb, partial, s, chunk_rows, dev, blockIdx.x, blockIdx.y, sp);
}

/* Q[t] (t = k cols + j) = the chunks' partials added in chunk order. */
__device__ __forceinline__ void
ps_mtp_sum_body(const float *partial, float *q, const ps_shape_t &s, uint64_t nchunk,
                const ps_dev_t *dev, uint64_t t)
{
    const int bad = (int)dev->bad;

    if (t < (uint64_t)s.r * s.cols) {
        float v = 0.0f;
        if (!bad) {
            uint64_t k = t / s.cols, j = t % s.cols;
            /* unrolled: several chunks' loads in flight, still added in chunk order */
#pragma unroll 8
            for (uint64_t c = 0; c < nchunk; ++c) {
                v = v + partial[(c * s.r + k) * s.cols + j];
            }
        } else {
            v = TERSE_CU_NAN;
        }
        q[t] = v;
    }
}

__global__ void
ps_mtp_sum(const float *partial, float *q, ps_shape_t s, uint64_t nchunk, const ps_dev_t *dev)
{
    ps_mtp_sum_body(partial, q, s, nchunk, dev, (uint64_t)blockIdx.x * blockDim.x + threadIdx.x);
}

/* One group of ps_sub: x[u] = x[u] - p_k Q[j + u][k] in k order, then the squared error of
 * the nv valid elements in element order. */
template <int RM, int VEC>
__device__ __forceinline__ void
ps_sub_group(float *x, int nv, const float *pk, const float *q, const ps_shape_t &s, uint64_t j,
             uint32_t len, double *err_p)
{
#pragma unroll
    for (int k = 0; k < RM; ++k) {
        if (k < s.r) {
            float qk[4];
            ps_q4<VEC>(q, s.cols, k, j, len, qk);
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                x[u] = x[u] + pk[k] * qk[u];
            }
        }
    }
#pragma unroll
    for (int u = 0; u < 4; ++u) {
        if (u < nv) {
            *err_p = *err_p + (double)x[u] * (double)x[u];
        }
    }
}

/* residual = M - P^ Q^T over the real entries (zero when the step is non-finite); the lanes'
 * groups as in ps_mq. Per element x = M, then x = x - p_k q_k for k = 0, 1, ... (the CPU's
 * order); only the squared error's per-lane order follows the groups. */
template <int RM, int VEC>
__device__ __forceinline__ void
ps_sub_body(float *m, int m_is_res, const float *pb, const float *q, const ps_shape_t &s,
            const ps_dev_t *dev, terse_cu_stat_t *st, uint32_t bx, double *shd)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint64_t i = (uint64_t)bx * PS_WARPS + warp;
    const uint32_t len = (i < s.rows) ? ps_row_len(s, i) : 0;
    const int bad = (int)dev->bad;
    float pk[RM];
    double err = 0.0;

    if (bad) {
        for (uint32_t j = lane; m_is_res && (j < len); j += 32) {
            m[i * s.cols + j] = 0.0f;
        }
        return;
    }
#pragma unroll
    for (int k = 0; k < RM; ++k) {
        pk[k] = ((k < s.r) && (i < s.rows)) ? -pb[(uint64_t)k * s.rows + i] : 0.0f;
    }
    if (VEC) {
        for (uint32_t j = (uint32_t)lane * 4; j < len; j += 256) {
            const uint64_t e = i * s.cols + j;
            const int two    = (j + 128 < len);
            float x[4], y[4];
            const float4 z = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            float4 t       = __ldcs((const float4 *)(m + e));
            float4 w       = two ? __ldcs((const float4 *)(m + e + 128)) : z;

            x[0] = t.x;
            x[1] = t.y;
            x[2] = t.z;
            x[3] = t.w;
            y[0] = w.x;
            y[1] = w.y;
            y[2] = w.z;
            y[3] = w.w;
            ps_sub_group<RM, 1>(x, 4, pk, q, s, j, len, &err);
            __stcs((float4 *)(m + e), make_float4(x[0], x[1], x[2], x[3]));
            if (two) {
                ps_sub_group<RM, 1>(y, 4, pk, q, s, j + 128, len, &err);
                __stcs((float4 *)(m + e + 128), make_float4(y[0], y[1], y[2], y[3]));
            }
        }
    } else {
        for (uint32_t j = (uint32_t)lane * 4; j < len; j += 128) {
            const uint64_t e = i * s.cols + j;
            const int nv     = (int)((len - j < 4) ? len - j : 4);
            float x[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                x[u] = (u < nv) ? m[e + u] : 0.0f;
            }
            ps_sub_group<RM, 0>(x, nv, pk, q, s, j, len, &err);
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                if (u < nv) {
                    m[e + u] = x[u];
                }
            }
        }
    }
    err = terse_cu_block_sum(err, shd);
    if ((threadIdx.x == 0) && (err != 0.0)) {
        atomicAdd(&st->sq_acc, err);
    }
}

template <int RM, int VEC>
__global__ void __launch_bounds__(PS_WARPS * 32)
ps_sub(float *m, int m_is_res, const float *pb, const float *q, ps_shape_t s,
       const ps_dev_t *dev, terse_cu_stat_t *st)
{
    __shared__ double shd[32];

    ps_sub_body<RM, VEC>(m, m_is_res, pb, q, s, dev, st, blockIdx.x, shd);
}

__device__ __forceinline__ void
ps_fix_stage_body(ps_dev_t *dev, terse_cu_stat_t *st)
{
    if (dev->bad) {
        st->call |= TERSE_CMP_NONFINITE;
        dev->basis_ok = 0;
    }
    terse_cu_stat_commit(st, 1);
}

__global__ void
ps_fix_stage(ps_dev_t *dev, terse_cu_stat_t *st)
{
    ps_fix_stage_body(dev, st);
}

/* ---------------------------------------------------------------- decompress */
__global__ void
ps_init_q(float *q, uint64_t n, terse_rng_t rng)
{
    for (uint64_t e = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; e < n;
         e += (uint64_t)gridDim.x * blockDim.x) {
        q[e] = terse_psgd_init_q(&rng, e);
    }
}

/* One block of PS_OB_KEEP(RM) threads: decides dec_bad, then the warm start of Q. SH: the
 * summed Q is staged in ps_dyn (r * cols floats) by the finiteness pass, and the norms and
 * the scaling read it there. The r column norms are one vector reduction (ps_block_vsum); a
 * column of norm 0 leaves that column of Q as it is. */
#define PS_KEEP_RED(_rm) ((PS_OB_KEEP(_rm) / 32) * (_rm)) /* doubles of red */

template <int RM, int SH>
__device__ __forceinline__ void
ps_keep_body(const float *qs, float *q, const ps_shape_t &s, const terse_rng_t &rng,
             ps_dev_t *dev, double *red)
{
    constexpr int B = PS_OB_KEEP(RM);
    const uint64_t n = (uint64_t)s.r * s.cols;
    const float *f   = SH ? ps_dyn : qs;
    int bad          = !dev->basis_ok;

    if (SH) {
        ps_stage(qs, ps_dyn, NULL, n, &bad);
    } else {
        for (uint64_t t = threadIdx.x; t < n; t += B) {
            bad |= !terse_cu_isfinite(qs[t]);
        }
    }
    bad = __syncthreads_or(bad); /* also the barrier after staging */
    if (bad) {
        for (uint64_t t = threadIdx.x; t < n; t += B) {
            q[t] = terse_psgd_init_q(&rng, t);
        }
    } else {
        double v[RM], nsq[RM];
#pragma unroll
        for (int k = 0; k < RM; ++k) {
            v[k] = 0.0;
        }
        for (uint64_t j = threadIdx.x; j < s.cols; j += B) {
#pragma unroll
            for (int k = 0; k < RM; ++k) {
                if (k < s.r) {
                    const double x = (double)f[(uint64_t)k * s.cols + j];
                    v[k]           = v[k] + x * x;
                }
            }
        }
        ps_block_vsum<RM, B / 32>(v, red, nsq);
#pragma unroll
        for (int k = 0; k < RM; ++k) {
            const double nrm = sqrt(nsq[k]);
            if ((k < s.r) && (nrm > 0.0)) {
                const float *fk = f + (uint64_t)k * s.cols;
                const float inv = (float)(1.0 / nrm);
                for (uint64_t j = threadIdx.x; j < s.cols; j += B) {
                    q[(uint64_t)k * s.cols + j] = fk[j] * inv;
                }
            }
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        dev->dec_bad = (uint32_t)bad; /* P^ stays until the next compress: a repeat is equal */
    }
}

template <int RM, int SH>
__global__ void __launch_bounds__(PS_OB_KEEP(RM))
ps_keep(const float *qs, float *q, ps_shape_t s, terse_rng_t rng, ps_dev_t *dev)
{
    __shared__ double red[PS_KEEP_RED(RM)];

    ps_keep_body<RM, SH>(qs, q, s, rng, dev, red);
}

/* out = scale * P^ Q^T. Block (PS_WX, PS_WY): thread x owns the 4 columns j .. j + 3 of its
 * column tile and keeps their Q in registers; thread y walks the rows y, y + PS_WY * gridDim.y,
 * ... of its row block. A warp writes 512 contiguous bytes of a row (VEC: one 16-byte store
 * per lane, 8 bytes for fp16 / bf16). Per element the formula of the CPU: sum_k P^[i][k] Q[j][k]
 * in k order, times scale. */
template <int RM, int VEC>
__device__ __forceinline__ void
ps_write_body(const float *pb, const float *qs, float scale, void *out, int dtype,
              const ps_shape_t &s, const ps_dev_t *dev, terse_cu_stat_t *st, uint32_t bx,
              uint32_t by, uint32_t gx, uint32_t gy)
{
    const int bad = (int)dev->dec_bad;
    const uint64_t j = ((uint64_t)bx * PS_WX + threadIdx.x) * 4;
    float qv[RM][4];

#pragma unroll
    for (int k = 0; k < RM; ++k) {
        if ((k < s.r) && (j < s.cols)) {
            ps_q4<VEC>(qs, s.cols, k, j, s.cols, qv[k]);
        } else {
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                qv[k][u] = 0.0f;
            }
        }
    }
    for (uint64_t i = (uint64_t)by * PS_WY + threadIdx.y; (j < s.cols) && (i < s.rows);
         i += (uint64_t)gy * PS_WY) {
        const uint32_t len = ps_row_len(s, i);
        const uint64_t e   = i * s.cols + j;
        float v[4];
        if (j >= len) {
            continue; /* the padded last row of a flat layer */
        }
        if (bad) {
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                v[u] = TERSE_CU_NAN;
            }
        } else {
            float row[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int k = 0; k < RM; ++k) {
                if (k < s.r) {
                    const float p = __ldg(pb + (uint64_t)k * s.rows + i);
#pragma unroll
                    for (int u = 0; u < 4; ++u) {
                        row[u] = row[u] + p * qv[k][u];
                    }
                }
            }
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                v[u] = row[u] * scale;
            }
        }
        if (VEC) {
            ps_store4(out, dtype, e, v);
        } else {
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                if (j + u < len) {
                    terse_cu_store(out, (terse_dtype_t)dtype, e + u, v[u]);
                }
            }
        }
    }
    __syncthreads();
    if ((threadIdx.x == 0) && (threadIdx.y == 0) && terse_cu_last_block(&st->done, gx * gy)) {
        if (bad) {
            st->call |= TERSE_CMP_NONFINITE;
        }
        terse_cu_stat_commit(st, 0);
    }
}

template <int RM, int VEC>
__global__ void __launch_bounds__(PS_WX * PS_WY)
ps_write(const float *pb, const float *qs, float scale, void *out, int dtype, ps_shape_t s,
         const ps_dev_t *dev, terse_cu_stat_t *st)
{
    ps_write_body<RM, VEC>(pb, qs, scale, out, dtype, s, dev, st, blockIdx.x, blockIdx.y,
                           gridDim.x, gridDim.y);
}

/* ---------------------------------------------------------------- batched passes */
/* One layer of a batch (DESIGN.md section 8 rule 10): the arguments its one-layer launches
 * get, and its share of each flattened grid. A batch holds its layers sorted by rank class
 * (the bound RM 4, 8, 16, 32 of PS_BY_RANK), each class a contiguous run launched once per
 * pass with its RM; a block finds its layer by binary search over the class's block starts
 * and runs the one-layer body with its local block index and grid, so every layer gets the
 * bits of its own launches. The vector paths are decided per layer in the kernel from the
 * pointers of the run (the caller's buffers move), as ps_vec decides them on the host. */
typedef struct ps_bl {
    ps_shape_t       s;
    const void      *in;      /* compress: gradient (of dtype), or an offset (PUSER_IN) */
    float           *res;     /* compress: residual or NULL */
    float           *m;       /* compress: M (res, or the instance's scratch) */
    float           *p;       /* compress: P_i */
    float           *qout;    /* stage 1: Q_i */
    const float     *qsum;    /* decompress: summed Q */
    void            *out;     /* decompress: output (of dtype), or an offset (PUSER_OUT) */
    float           *q, *basis, *partial;
    ps_dev_t        *dev;
    terse_cu_stat_t *st;
    terse_rng_t      rng;     /* Q's seeded start (ps_q_rng) */
    uint64_t         chunk_rows, nchunk;
    float            scale;
    int              dtype;
    uint32_t         user;    /* TERSE_CU_PUSER_* */
    uint32_t         svec;    /* ps_vec's shape half: cols, count multiples of 4, q aligned */
    uint32_t         v4;      /* ps_mtp: 4 columns a thread (the 16-byte loads: m aligned) */
    uint32_t         keep_sh; /* ps_keep stages the summed Q in ps_dyn */
    uint32_t         tiles;   /* ps_mtp's column tiles */
    uint32_t         gx, gy;  /* ps_write's grid */
} ps_bl_t;

/* Block size of ps_mtp_batch<RM>: ps_mtp's for its vector path (4 columns a thread up to rank
 * 8); a column's partial does not depend on it. */
#define PS_MTP_BS(_rm) (((_rm) <= 8) ? 128 : 256)

__device__ __forceinline__ int
ps_aligned(const void *a, uint32_t bytes)
{
    return ((uintptr_t)a % bytes) == 0;
}

/* The layer (of nl, block starts `start`, increasing from 0) of flattened block b, and b's
 * index in that layer's own grid. */
__device__ __forceinline__ uint32_t
ps_find(const uint32_t *start, uint32_t nl, uint32_t b, uint32_t *local_p)
{
    uint32_t lo = 0, hi = nl;

    while (hi - lo > 1) {
        const uint32_t mid = (lo + hi) / 2;
        if (start[mid] <= b) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    *local_p = b - start[lo];
    return lo;
}

__device__ __forceinline__ uint32_t
ps_vec_bytes(int dtype)
{
    return (dtype == TERSE_FLOAT32) ? 16u : 8u;
}

template <int RM>
__global__ void __launch_bounds__(PS_WARPS * 32)
ps_mq_batch(const ps_bl_t *bl, const uint32_t *start, uint32_t nl, const uint8_t *user)
{
    __shared__ double shd[32];
    uint32_t bx;
    const ps_bl_t &L   = bl[ps_find(start, nl, blockIdx.x, &bx)];
    const ps_shape_t s = L.s;
    const int dtype    = L.dtype;
    const void *in = (L.user & TERSE_CU_PUSER_IN) ? (const void *)(user + (uintptr_t)L.in) : L.in;
    float *m = L.m;

    if (L.svec && ps_aligned(in, ps_vec_bytes(dtype)) && ps_aligned(m, 16)) {
        ps_mq_body<RM, 1>(in, dtype, L.res != NULL, m, L.q, L.p, s, L.st, bx, shd);
    } else {
        ps_mq_body<RM, 0>(in, dtype, L.res != NULL, m, L.q, L.p, s, L.st, bx, shd);
    }
}

/* PS_FIXC_GRID blocks a layer, every layer of the batch. */
__global__ void
ps_fix_compress_batch(const ps_bl_t *bl)
{
    const ps_bl_t &L = bl[blockIdx.x / PS_FIXC_GRID];

    ps_fix_compress_body(L.dev, L.p, (uint64_t)L.s.r * L.s.rows, L.res, L.m, L.s.count, L.st,
                         blockIdx.x % PS_FIXC_GRID, PS_FIXC_GRID);
}

/* M is the one the layer's compress recorded (dev->m): compress may have been the one-layer
 * launcher, with any residual. */
template <int RM>
__global__ void __launch_bounds__(PS_MTP_BS(RM))
ps_mtp_batch(const ps_bl_t *bl, const uint32_t *start, uint32_t nl)
{
    __shared__ float sp[RM * PS_TI];
    uint32_t b;
    const ps_bl_t &L   = bl[ps_find(start, nl, blockIdx.x, &b)];
    const ps_shape_t s = L.s;
    const uint32_t bx = b % L.tiles, by = b / L.tiles;
    const float *m = L.dev->m;

    if ((RM <= 8) && L.v4) {
        ps_mtp_body<RM, 4>(m, ps_aligned(m, 16), L.basis, L.partial, s, L.chunk_rows, L.dev,
                           bx, by, sp);
    } else {
        ps_mtp_body<RM, 1>(m, 1, L.basis, L.partial, s, L.chunk_rows, L.dev, bx, by, sp);
    }
}

__global__ void __launch_bounds__(256)
ps_mtp_sum_batch(const ps_bl_t *bl, const uint32_t *start, uint32_t nl)
{
    uint32_t b;
    const ps_bl_t &L   = bl[ps_find(start, nl, blockIdx.x, &b)];
    const ps_shape_t s = L.s;

    ps_mtp_sum_body(L.partial, L.qout, s, L.nchunk, L.dev, (uint64_t)b * blockDim.x + threadIdx.x);
}

template <int RM>
__global__ void __launch_bounds__(PS_WARPS * 32)
ps_sub_batch(const ps_bl_t *bl, const uint32_t *start, uint32_t nl)
{
    __shared__ double shd[32];
    uint32_t bx;
    const ps_bl_t &L   = bl[ps_find(start, nl, blockIdx.x, &bx)];
    const ps_shape_t s = L.s;
    float *m           = L.dev->m;
    const int m_is_res = (int)L.dev->m_is_res;

    if (L.svec && ps_aligned(m, 16) && ps_aligned(L.qout, 16)) {
        ps_sub_body<RM, 1>(m, m_is_res, L.basis, L.qout, s, L.dev, L.st, bx, shd);
    } else {
        ps_sub_body<RM, 0>(m, m_is_res, L.basis, L.qout, s, L.dev, L.st, bx, shd);
    }
}

__global__ void
ps_fix_stage_batch(const ps_bl_t *bl, uint32_t n)
{
    const uint32_t t = blockIdx.x * blockDim.x + threadIdx.x;

    if (t < n) {
        ps_fix_stage_body(bl[t].dev, bl[t].st);
    }
}

/* Block b: layer b's ps_keep (RM as in ps_orth_batch: only the block size matters). */
template <int RM>
__global__ void __launch_bounds__(PS_OB_KEEP(RM))
ps_keep_batch(const ps_bl_t *bl)
{
    __shared__ double red[PS_KEEP_RED(RM)];
    const ps_bl_t &L      = bl[blockIdx.x];
    const ps_shape_t s    = L.s;
    const terse_rng_t rng = L.rng;

    if (L.keep_sh) {
        ps_keep_body<RM, 1>(L.qsum, L.q, s, rng, L.dev, red);
    } else {
        ps_keep_body<RM, 0>(L.qsum, L.q, s, rng, L.dev, red);
    }
}

template <int RM>
__global__ void __launch_bounds__(PS_WX * PS_WY)
ps_write_batch(const ps_bl_t *bl, const uint32_t *start, uint32_t nl, uint8_t *user)
{
    uint32_t b;
    const ps_bl_t &L   = bl[ps_find(start, nl, blockIdx.x, &b)];
    const ps_shape_t s = L.s;
    const int dtype    = L.dtype;
    const uint32_t gx = L.gx, gy = L.gy;
    void *out = (L.user & TERSE_CU_PUSER_OUT) ? (void *)(user + (uintptr_t)L.out) : L.out;

    if (L.svec && ps_aligned(out, ps_vec_bytes(dtype)) && ps_aligned(L.qsum, 16)) {
        ps_write_body<RM, 1>(L.basis, L.qsum, L.scale, out, dtype, s, L.dev, L.st, b % gx,
                             b / gx, gx, gy);
    } else {
        ps_write_body<RM, 0>(L.basis, L.qsum, L.scale, out, dtype, s, L.dev, L.st, b % gx,
                             b / gx, gx, gy);
    }
}

/* ---------------------------------------------------------------- host */
static ps_shape_t
ps_shape(const ps_cuda_t *c)
{
    ps_shape_t s;

    s.count = c->count;
    s.rows  = c->rows;
    s.cols  = c->cols;
    s.r     = (int)c->rank;
    return s;
}

static terse_rng_t
ps_q_rng(const ps_cuda_t *c)
{
    return terse_rng_make(c->seed, TERSE_RNG_PSGD_Q, c->layer, 0, TERSE_RNG_SHARED);
}

static unsigned
ps_grid(uint64_t n, unsigned cap)
{
    unsigned g = terse_cu_blocks(n, 256);
    return (g > cap) ? cap : g;
}

/* The row kernels' 4-element groups can be vector loads and stores: every row (the padded
 * last one too) is whole groups, and each pointer is aligned to a group (bytes: its size). */
static int
ps_vec(const ps_cuda_t *c, const void *a, size_t a_bytes, const void *b, size_t b_bytes)
{
    return ((c->cols % 4) == 0) && ((c->count % 4) == 0) && (((uintptr_t)a % a_bytes) == 0) &&
           (((uintptr_t)b % b_bytes) == 0) && (((uintptr_t)c->q % 16) == 0);
}

static size_t
ps_esize(terse_dtype_t dtype)
{
    return (dtype == TERSE_FLOAT32) ? 4 : 2;
}

/* ps_write's grid: column tiles x row blocks, about PS_WGRID blocks in all. */
static void
ps_write_grid(const ps_cuda_t *c, unsigned *gx_p, unsigned *gy_p)
{
    unsigned gx, gy;

    gx    = terse_cu_blocks(TERSE_DIV_UP(c->cols, 4), PS_WX);
    gy    = terse_cu_blocks(c->rows, PS_WY);
    gy    = TERSE_MIN(gy, TERSE_MAX(1u, PS_WGRID / gx));
    *gx_p = gx;
    *gy_p = TERSE_MIN(gy, 65535u);
}

/* Sets the dynamic shared memory limit of the RM instances of ps_orth<RM, 1>, ps_orth_batch<RM>,
 * ps_keep<RM, 1> and ps_keep_batch<RM>; 0 on failure. */
#define PS_SET_SH(_rm, _lim)                                                                   \
    ((cudaFuncSetAttribute(ps_orth<_rm, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,       \
                           (int)(_lim)) == cudaSuccess) &&                                     \
     (cudaFuncSetAttribute(ps_orth_batch<_rm>, cudaFuncAttributeMaxDynamicSharedMemorySize,    \
                           (int)(_lim)) == cudaSuccess) &&                                     \
     (cudaFuncSetAttribute(ps_keep<_rm, 1>, cudaFuncAttributeMaxDynamicSharedMemorySize,       \
                           (int)(_lim)) == cudaSuccess) &&                                     \
     (cudaFuncSetAttribute(ps_keep_batch<_rm>, cudaFuncAttributeMaxDynamicSharedMemorySize,    \
                           (int)(_lim)) == cudaSuccess))

/* The dynamic shared memory the one-block kernels may ask for on the current device: the
 * device's opt-in limit less room for their static arrays (under 5 KiB: ps_orth<32>'s two
 * reduction buffers are 4 KiB), the same on every call so that one instance never lowers the
 * limit another relies on; 0 (global memory) when it cannot be had. */
static size_t
ps_sh_max(void)
{
    int dev = 0, optin = 0;
    size_t lim;

    if ((cudaGetDevice(&dev) != cudaSuccess) ||
        (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) !=
         cudaSuccess) ||
        (optin <= 8192)) {
        (void)cudaGetLastError();
        return 0;
    }
    lim = (size_t)optin - 8192;
    if (!PS_SET_SH(4, lim) || !PS_SET_SH(8, lim) || !PS_SET_SH(16, lim) || !PS_SET_SH(32, lim)) {
        (void)cudaGetLastError();
        return 0;
    }
    return lim;
}

/* Runs _launch(RM) with the kernels' compiled rank bound RM (4, 8, 16 or 32) for rank _r. */
#define PS_BY_RANK(_r, _launch)                                                                \
    do {                                                                                       \
        if ((_r) <= 4) {                                                                       \
            _launch(4);                                                                        \
        } else if ((_r) <= 8) {                                                                \
            _launch(8);                                                                        \
        } else if ((_r) <= 16) {                                                               \
            _launch(16);                                                                       \
        } else {                                                                               \
            _launch(32);                                                                       \
        }                                                                                      \
    } while (0)

extern "C" terse_status_t
terse__cmp_psgd_cuda_reset(void *cuda)
{
    ps_cuda_t *c = (ps_cuda_t *)cuda;

    ps_init_q<<<ps_grid(c->rank * c->cols, 1024), 256>>>(c->q, c->rank * c->cols, ps_q_rng(c));
    TERSE_CUDA_LAUNCHED("powersgd init");
    TERSE_CUDA_CHECK_ST(cudaMemset(c->dev, 0, sizeof(ps_dev_t)), "cudaMemset");
    TERSE_CHECK(terse__cuda_stream_sync(NULL));
    c->next = 0;
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_psgd_cuda_create(size_t count, size_t rows, size_t cols, size_t rank, uint64_t seed,
                            uint32_t layer, int with_scratch, void **cuda_p)
{
    ps_cuda_t *c;
    terse_status_t status;

    if ((count == 0) || (rank == 0)) {
        return TERSE_ERR_INVALID;
    }
    if (rank > TERSE_PSGD_CUDA_MAX_RANK) {
        terse_error(TERSE_LOG_CMP, "powersgd cuda: rank %zu above %d", rank,
                    TERSE_PSGD_CUDA_MAX_RANK);
        return TERSE_ERR_UNSUPPORTED;
    }
    c = (ps_cuda_t *)calloc(1, sizeof(*c));
    if (c == NULL) {
        terse_error(TERSE_LOG_CMP, "failed to allocate powersgd cuda state");
        return TERSE_ERR_NOMEM;
    }
    terse_psgd_shape(count, rows, cols, &c->rows, &c->cols);
    if (rank >= TERSE_MIN(c->rows, c->cols)) {
        free(c);
        return TERSE_ERR_INVALID;
    }
    c->count      = count;
    c->rank       = rank;
    c->seed       = seed;
    c->layer      = layer;
    c->nchunk     = TERSE_MIN((size_t)PS_CHUNKS, TERSE_DIV_UP(c->rows, 32));
    c->chunk_rows = TERSE_DIV_UP(c->rows, c->nchunk);
    c->nchunk     = TERSE_DIV_UP(c->rows, c->chunk_rows);
    c->sh_max     = ps_sh_max();
    TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&c->q, rank * c->cols * sizeof(float)), status,
                     err_free);
    TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&c->basis, rank * c->rows * sizeof(float)),
                     status, err_free);
    TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&c->partial,
                                        c->nchunk * rank * c->cols * sizeof(float)),
                     status, err_free);
    if (with_scratch) {
        TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&c->scratch, count * sizeof(float)), status,
                         err_free);
    }
    TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&c->dev, sizeof(ps_dev_t)), status, err_free);
    TERSE_CHECK_GOTO(terse__cuda_stat_create(&c->stat), status, err_free);
    TERSE_CHECK_GOTO(terse__cmp_psgd_cuda_reset(c), status, err_free);
    *cuda_p = c;
    return TERSE_OK;

err_free:
    terse__cmp_psgd_cuda_destroy(c);
    return status;
}

extern "C" void
terse__cmp_psgd_cuda_destroy(void *cuda)
{
    ps_cuda_t *c = (ps_cuda_t *)cuda;

    if (c != NULL) {
        terse__cuda_free(c->q);
        terse__cuda_free(c->basis);
        terse__cuda_free(c->partial);
        terse__cuda_free(c->scratch);
        terse__cuda_free(c->dev);
        terse__cuda_free(c->stat);
        free(c);
    }
}

extern "C" terse_status_t
terse__cmp_psgd_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype, size_t n,
                              float *residual, void *out, size_t out_bytes, uint32_t *flags_p,
                              double *sq_err_p, terse_stream_t stream)
{
    ps_cuda_t *c   = (ps_cuda_t *)cuda;
    cudaStream_t s = (cudaStream_t)stream;
    float *m;
    int vec;

    if ((c == NULL) || (in == NULL) || (n != c->count) || (out == NULL) ||
        (dtype >= TERSE_FLOAT64) || (out_bytes != c->rank * c->rows * sizeof(float))) {
        terse_error(TERSE_LOG_CMP, "powersgd cuda: bad compress arguments (count %zu, %zu bytes)",
                    n, out_bytes);
        return TERSE_ERR_INVALID;
    }
    m = (residual != NULL) ? residual : c->scratch;
    if (m == NULL) {
        terse_error(TERSE_LOG_CMP, "powersgd cuda: no residual and no scratch (create with "
                                   "with_scratch)");
        return TERSE_ERR_INVALID;
    }
    c->m        = m;
    c->m_is_res = (residual != NULL);
    vec = ps_vec(c, in, 4 * ps_esize(dtype), m, 16);
#define PS_MQ(_rm)                                                                             \
    do {                                                                                       \
        if (vec) {                                                                             \
            ps_mq<_rm, 1><<<terse_cu_blocks(c->rows, PS_WARPS), PS_WARPS * 32, 0, s>>>(        \
                in, (int)dtype, residual != NULL, m, c->q, (float *)out, ps_shape(c), c->stat); \
        } else {                                                                               \
            ps_mq<_rm, 0><<<terse_cu_blocks(c->rows, PS_WARPS), PS_WARPS * 32, 0, s>>>(        \
                in, (int)dtype, residual != NULL, m, c->q, (float *)out, ps_shape(c), c->stat); \
        }                                                                                      \
    } while (0)
    PS_BY_RANK(c->rank, PS_MQ);
#undef PS_MQ
    TERSE_CUDA_LAUNCHED("powersgd mq");
    ps_fix_compress<<<PS_FIXC_GRID, 256, 0, s>>>(c->dev, (float *)out, c->rank * c->rows,
                                                 residual, m, n, c->stat);
    TERSE_CUDA_LAUNCHED("powersgd fixup");
    c->next = 1;
    if (flags_p != NULL) {
        *flags_p = 0;
    }
    if (sq_err_p != NULL) {
        *sq_err_p = 0.0;
    }
    return TERSE_OK;
}

/* The sizes terse__cmp_psgd_cuda_stage accepts for stage 1 (both callers name the culprit). */
static int
ps_stage_args_ok(const ps_cuda_t *c, const void *summed, size_t summed_bytes, const void *out,
                 size_t out_bytes)
{
    return (c != NULL) && (summed != NULL) && (out != NULL) &&
           (summed_bytes == c->rank * c->rows * sizeof(float)) &&
           (out_bytes == c->rank * c->cols * sizeof(float));
}

/* Whether the columns of the layer's P fit ps_orth's dynamic shared memory, and how many bytes
 * they take: the one choice of the single and the batched launch (same choice, same bits). */
static int
ps_orth_sh_fits(const ps_cuda_t *c, size_t *bytes_p)
{
    *bytes_p = c->rank * c->rows * sizeof(float);
    return *bytes_p <= c->sh_max;
}

/* Stage 1 after P^ (ps_orth, launched by the caller): Q_i = M^T P^ into out, the residual,
 * the status commit. Launches only (the caller checks them). ps_mtp_batch, ps_mtp_sum_batch,
 * ps_sub_batch and ps_fix_stage_batch are these launches for a batch. */
static void
ps_stage_rest(ps_cuda_t *c, void *out, cudaStream_t s)
{
    const ps_shape_t sh = ps_shape(c);
    int vec;

    /* 4 columns a thread up to rank 8 (4 x 8 sums in registers), one column above */
    vec = (c->rank <= 8) && ps_vec(c, c->m, 16, c->partial, 16);
#define PS_MTP(_rm, _v, _bs)                                                                   \
    ps_mtp<_rm, _v><<<dim3(terse_cu_blocks(c->cols, (_bs) * (_v)), (unsigned)c->nchunk), _bs,   \
                      0, s>>>(c->m, c->basis, c->partial, sh, c->chunk_rows, c->dev)
    if (c->rank <= 4) {
        if (vec) {
            PS_MTP(4, 4, 128);
        } else {
            PS_MTP(4, 1, 256);
        }
    } else if (c->rank <= 8) {
        if (vec) {
            PS_MTP(8, 4, 128);
        } else {
            PS_MTP(8, 1, 256);
        }
    } else if (c->rank <= 16) {
        PS_MTP(16, 1, 256);
    } else {
        PS_MTP(32, 1, 256);
    }
#undef PS_MTP
    ps_mtp_sum<<<terse_cu_blocks(c->rank * c->cols, 256), 256, 0, s>>>(
        c->partial, (float *)out, sh, c->nchunk, c->dev);
    vec = ps_vec(c, c->m, 16, out, 16);
#define PS_SUB(_rm)                                                                            \
    do {                                                                                       \
        if (vec) {                                                                             \
            ps_sub<_rm, 1><<<terse_cu_blocks(c->rows, PS_WARPS), PS_WARPS * 32, 0, s>>>(       \
                c->m, c->m_is_res, c->basis, (const float *)out, sh, c->dev, c->stat);         \
        } else {                                                                               \
            ps_sub<_rm, 0><<<terse_cu_blocks(c->rows, PS_WARPS), PS_WARPS * 32, 0, s>>>(       \
                c->m, c->m_is_res, c->basis, (const float *)out, sh, c->dev, c->stat);         \
        }                                                                                      \
    } while (0)
    PS_BY_RANK(c->rank, PS_SUB);
#undef PS_SUB
    ps_fix_stage<<<1, 1, 0, s>>>(c->dev, c->stat);
}

extern "C" terse_status_t
terse__cmp_psgd_cuda_stage(void *cuda, unsigned stage, const void *summed, size_t summed_bytes,
                           void *out, size_t out_bytes, double *sq_err_p, terse_stream_t stream)
{
    ps_cuda_t *c   = (ps_cuda_t *)cuda;
    cudaStream_t s = (cudaStream_t)stream;
    size_t shb;

    if ((stage != 1) || !ps_stage_args_ok(c, summed, summed_bytes, out, out_bytes)) {
        terse_error(TERSE_LOG_CMP, "powersgd cuda: bad stage %u arguments", stage);
        return TERSE_ERR_INVALID;
    }
    if (c->next != 1) {
        terse_error(TERSE_LOG_CMP, "powersgd cuda: stage 1 without compress");
        return TERSE_ERR_USAGE;
    }
    c->next = 2;
#define PS_ORTH(_rm)                                                                           \
    do {                                                                                       \
        if (ps_orth_sh_fits(c, &shb)) {                                                        \
            ps_orth<_rm, 1><<<1, PS_OB_ORTH(_rm), shb, s>>>((const float *)summed, c->basis,   \
                                                            c->rows, (int)c->rank, c->dev);    \
        } else {                                                                               \
            ps_orth<_rm, 0><<<1, PS_OB_ORTH(_rm), 0, s>>>((const float *)summed, c->basis,     \
                                                          c->rows, (int)c->rank, c->dev);      \
        }                                                                                      \
    } while (0)
    PS_BY_RANK(c->rank, PS_ORTH);
#undef PS_ORTH
    ps_stage_rest(c, out, s);
    TERSE_CUDA_LAUNCHED("powersgd stage 1");
    if (sq_err_p != NULL) {
        *sq_err_p = 0.0;
    }
    return TERSE_OK;
}

/* ---------------------------------------------------------------- batches */
/* A batch holds its layers sorted by rank class (ps_cls, stable), each class a contiguous run
 * of ps_bl_t launched once per pass with its rank bound. The one-block kernels group by block
 * size instead: ps_orth_batch and ps_keep_batch launch once for the ranks up to 8 (classes 0
 * and 1, also contiguous) and once above, each with its largest rank bound (see
 * ps_orth_batch: the same bits as each layer's own instance). */
#define PS_NGROUP   2
#define PS_NCLS     4
#define PS_GRID_MAX 0x7fffffffu /* gridDim.x */

/* The flattened grids: each layer's first block, counted from its class's first layer (the
 * one launch of ps_mtp_sum_batch: from the batch's first layer). */
enum { PS_K_ROWS, PS_K_MTP, PS_K_WRITE, PS_K_SUM, PS_NKIND };

typedef struct ps_batch_group {
    size_t   rank;     /* largest rank of the group (0: empty group) */
    unsigned first;    /* its layers: bl[first .. first + count - 1], and the same jobs */
    unsigned count;
    size_t   shb;      /* ps_orth's dynamic shared bytes: the largest of its layers in ps_dyn */
    size_t   keep_shb; /* the same for ps_keep */
} ps_batch_group_t;

typedef struct ps_batch_cls {
    unsigned first; /* its layers: bl[first .. first + count - 1] */
    unsigned count;
    uint64_t blocks[PS_NKIND]; /* its flattened grids (PS_K_SUM: unused) */
} ps_batch_cls_t;

typedef struct ps_batch {
    size_t           n;
    int              full;   /* made by batch_create_full: compress and decompress too */
    uint32_t         user;   /* the OR of the layers' TERSE_CU_PUSER_* */
    ps_cuda_t      **layers; /* borrowed, sorted as bl */
    size_t          *orig;   /* each sorted layer's index in the caller's order (messages) */
    ps_bl_t         *host;   /* the layers' records, sorted */
    ps_bl_t         *bl;     /* device copy of host */
    uint32_t        *start;  /* device: PS_NKIND rows of n first blocks */
    ps_orth_job_t   *jobs;   /* device: the orth jobs, sorted as bl */
    uint64_t         sum_blocks;
    ps_batch_group_t grp[PS_NGROUP];
    ps_batch_cls_t   cls[PS_NCLS];
} ps_batch_t;

/* The rank class: PS_BY_RANK's choice of rank bound, 4 << class. */
static int
ps_cls(size_t rank)
{
    return (rank <= 4) ? 0 : ((rank <= 8) ? 1 : ((rank <= 16) ? 2 : 3));
}

/* Whether [a, a + na) and [b, b + nb) share a byte. */
static int
ps_overlap(const void *a, size_t na, const void *b, size_t nb)
{
    const uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;

    return (x < y + nb) && (y < x + na);
}

/* Rejects what terse__cmp_psgd_cuda_stage would, layer by layer, and what would make the one
 * launch differ from the layers in order: an instance twice (the second stage would be a usage
 * error), or an earlier layer's Q output over a later layer's summed P (which the layers in
 * order would read after it was written). */
static terse_status_t
ps_batch_check(void *const *cudas, const void *const *summed, const size_t *summed_bytes,
               void *const *out, const size_t *out_bytes, size_t n)
{
    size_t i, j;

    if ((cudas == NULL) || (summed == NULL) || (summed_bytes == NULL) || (out == NULL) ||
        (out_bytes == NULL) || (n == 0) || (n > UINT32_MAX)) {
        terse_error(TERSE_LOG_CMP, "powersgd cuda: bad batch arguments (%zu layers)", n);
        return TERSE_ERR_INVALID;
    }
    for (i = 0; i < n; ++i) {
        if (!ps_stage_args_ok((const ps_cuda_t *)cudas[i], summed[i], summed_bytes[i], out[i],
                              out_bytes[i])) {
            terse_error(TERSE_LOG_CMP, "powersgd cuda: batch layer %zu: bad stage 1 arguments "
                                       "(summed %zu bytes, out %zu bytes)",
                        i, summed_bytes[i], out_bytes[i]);
            return TERSE_ERR_INVALID;
        }
        for (j = 0; j < i; ++j) {
            if (cudas[j] == cudas[i]) {
                terse_error(TERSE_LOG_CMP, "powersgd cuda: batch layer %zu: the instance of "
                                           "layer %zu again", i, j);
                return TERSE_ERR_INVALID;
            }
            if (ps_overlap(out[j], out_bytes[j], summed[i], summed_bytes[i])) {
                terse_error(TERSE_LOG_CMP, "powersgd cuda: batch layer %zu: summed P overlaps "
                                           "the Q output of layer %zu", i, j);
                return TERSE_ERR_INVALID;
            }
        }
    }
    return TERSE_OK;
}

/* ps_batch_check for a full batch: each layer as the one-layer launchers check it, plus a
 * plain output of an earlier layer over a later layer's summed Q. */
static terse_status_t
ps_batch_check_full(const terse_cu_player_t *ly, size_t n)
{
    const uint32_t flags = TERSE_CU_PUSER_IN | TERSE_CU_PUSER_OUT;
    size_t i, j;

    if ((ly == NULL) || (n == 0) || (n > UINT32_MAX)) {
        terse_error(TERSE_LOG_CMP, "powersgd cuda: bad batch arguments (%zu layers)", n);
        return TERSE_ERR_INVALID;
    }
    for (i = 0; i < n; ++i) {
        const terse_cu_player_t *l = &ly[i];
        const ps_cuda_t *c         = (const ps_cuda_t *)l->cuda;
        if ((c == NULL) || (l->n != c->count) || ((unsigned)l->dtype >= TERSE_FLOAT64) ||
            ((l->user & ~flags) != 0) || ((l->in == NULL) && !(l->user & TERSE_CU_PUSER_IN)) ||
            ((l->out == NULL) && !(l->user & TERSE_CU_PUSER_OUT)) || (l->p_out == NULL) ||
            (l->summed_q == NULL) || ((l->residual == NULL) && (c->scratch == NULL)) ||
            !ps_stage_args_ok(c, l->summed_p, c->rank * c->rows * sizeof(float), l->q_out,
                              c->rank * c->cols * sizeof(float))) {
            terse_error(TERSE_LOG_CMP, "powersgd cuda: batch layer %zu: bad arguments (count "
                                       "%llu, dtype %d, flags %u)",
                        i, (unsigned long long)l->n, (int)l->dtype, l->user);
            return TERSE_ERR_INVALID;
        }
        for (j = 0; j < i; ++j) {
            const terse_cu_player_t *e = &ly[j];
            const ps_cuda_t *d         = (const ps_cuda_t *)e->cuda;
            if (d == c) {
                terse_error(TERSE_LOG_CMP, "powersgd cuda: batch layer %zu: the instance of "
                                           "layer %zu again", i, j);
                return TERSE_ERR_INVALID;
            }
            if (ps_overlap(e->q_out, d->rank * d->cols * sizeof(float), l->summed_p,
                           c->rank * c->rows * sizeof(float)) ||
                (!(e->user & TERSE_CU_PUSER_OUT) &&
                 ps_overlap(e->out, d->count * ps_esize(e->dtype), l->summed_q,
                            c->rank * c->cols * sizeof(float)))) {
                terse_error(TERSE_LOG_CMP, "powersgd cuda: batch layer %zu: a summed payload "
                                           "overlaps an output of layer %zu", i, j);
                return TERSE_ERR_INVALID;
            }
        }
    }
    return TERSE_OK;
}

extern "C" void
terse__cmp_psgd_cuda_batch_destroy(void *batch)
{
    ps_batch_t *b = (ps_batch_t *)batch;

    if (b != NULL) {
        terse__cuda_free(b->bl);
        terse__cuda_free(b->start);
        terse__cuda_free(b->jobs);
        free(b->layers);
        free(b->orig);
        free(b->host);
        free(b);
    }
}

/* Layer l at sorted position k: its record, its first blocks (start) and its orth job. */
static void
ps_batch_layer(ps_batch_t *b, size_t k, const terse_cu_player_t *l, uint32_t *start,
               ps_orth_job_t *jb)
{
    ps_cuda_t *c         = (ps_cuda_t *)l->cuda;
    const int cl         = ps_cls(c->rank);
    ps_batch_cls_t *cs   = &b->cls[cl];
    ps_batch_group_t *gr = &b->grp[(cl <= 1) ? 0 : 1];
    ps_bl_t *h           = &b->host[k];
    const size_t n       = b->n;
    size_t shb;
    unsigned gx, gy;

    b->layers[k] = c;
    b->user |= l->user;
    h->s          = ps_shape(c);
    h->in         = l->in;
    h->res        = l->residual;
    h->m          = (l->residual != NULL) ? l->residual : c->scratch;
    h->p          = (float *)l->p_out;
    h->qout       = (float *)l->q_out;
    h->qsum       = (const float *)l->summed_q;
    h->out        = l->out;
    h->q          = c->q;
    h->basis      = c->basis;
    h->partial    = c->partial;
    h->dev        = c->dev;
    h->st         = c->stat;
    h->rng        = ps_q_rng(c);
    h->chunk_rows = c->chunk_rows;
    h->nchunk     = c->nchunk;
    h->scale      = l->scale;
    h->dtype      = (int)l->dtype;
    h->user       = l->user;
    h->svec       = ((c->cols % 4) == 0) && ((c->count % 4) == 0) && (((uintptr_t)c->q % 16) == 0);
    h->v4         = (c->rank <= 8) && h->svec && (((uintptr_t)c->partial % 16) == 0);
    h->keep_sh    = (c->rank * c->cols * sizeof(float) <= c->sh_max);
    h->tiles      = terse_cu_blocks(c->cols, (cl <= 1) ? (size_t)PS_MTP_BS(8) * (h->v4 ? 4 : 1)
                                                       : (size_t)PS_MTP_BS(32));
    ps_write_grid(c, &gx, &gy);
    h->gx = gx;
    h->gy = gy;
    /* truncated only when a total passes PS_GRID_MAX, which create then refuses */
    start[PS_K_ROWS * n + k]  = (uint32_t)cs->blocks[PS_K_ROWS];
    start[PS_K_MTP * n + k]   = (uint32_t)cs->blocks[PS_K_MTP];
    start[PS_K_WRITE * n + k] = (uint32_t)cs->blocks[PS_K_WRITE];
    start[PS_K_SUM * n + k]   = (uint32_t)b->sum_blocks;
    cs->blocks[PS_K_ROWS] += terse_cu_blocks(c->rows, PS_WARPS);
    cs->blocks[PS_K_MTP] += (uint64_t)h->tiles * c->nchunk;
    cs->blocks[PS_K_WRITE] += (uint64_t)gx * gy;
    b->sum_blocks += terse_cu_blocks(c->rank * c->cols, 256);
    jb->summed = (const float *)l->summed_p;
    jb->basis  = c->basis;
    jb->dev    = c->dev;
    jb->len    = c->rows;
    jb->r      = (int)c->rank;
    jb->sh     = ps_orth_sh_fits(c, &shb);
    if (jb->sh) {
        gr->shb = TERSE_MAX(gr->shb, shb);
    }
    if (h->keep_sh) {
        gr->keep_shb = TERSE_MAX(gr->keep_shb, c->rank * c->cols * sizeof(float));
    }
    gr->rank = TERSE_MAX(gr->rank, c->rank);
    gr->count += 1;
}

/* The batch of ly[0 .. n - 1], checked. */
static terse_status_t
ps_batch_build(const terse_cu_player_t *ly, size_t n, int full, void **batch_p)
{
    ps_batch_t *b;
    ps_orth_job_t *jobs = NULL;
    uint32_t *start = NULL;
    size_t *order = NULL, i, k;
    unsigned next[PS_NCLS];
    uint64_t most = (uint64_t)n * PS_FIXC_GRID;
    terse_status_t status;
    int cl, kind;

    b = (ps_batch_t *)calloc(1, sizeof(*b));
    if ((b == NULL) || ((b->layers = (ps_cuda_t **)calloc(n, sizeof(*b->layers))) == NULL) ||
        ((b->orig = (size_t *)calloc(n, sizeof(*b->orig))) == NULL) ||
        ((b->host = (ps_bl_t *)calloc(n, sizeof(*b->host))) == NULL) ||
        ((jobs = (ps_orth_job_t *)calloc(n, sizeof(*jobs))) == NULL) ||
        ((start = (uint32_t *)calloc(PS_NKIND * n, sizeof(*start))) == NULL) ||
        ((order = (size_t *)calloc(n, sizeof(*order))) == NULL)) {
        terse_error(TERSE_LOG_CMP, "failed to allocate a powersgd cuda batch of %zu layers", n);
        status = TERSE_ERR_NOMEM;
        goto err_free;
    }
    b->n    = n;
    b->full = full;
    /* a stable counting sort by rank class: the classes' runs, then the layers in them */
    for (i = 0; i < n; ++i) {
        b->cls[ps_cls(((const ps_cuda_t *)ly[i].cuda)->rank)].count += 1;
    }
    for (cl = 0; cl < PS_NCLS; ++cl) {
        b->cls[cl].first = (cl == 0) ? 0 : b->cls[cl - 1].first + b->cls[cl - 1].count;
        next[cl]         = b->cls[cl].first;
    }
    b->grp[1].first = b->cls[2].first;
    for (i = 0; i < n; ++i) {
        order[next[ps_cls(((const ps_cuda_t *)ly[i].cuda)->rank)]++] = i;
    }
    for (k = 0; k < n; ++k) {
        b->orig[k] = order[k];
        ps_batch_layer(b, k, &ly[order[k]], start, &jobs[k]);
    }
    for (cl = 0; cl < PS_NCLS; ++cl) {
        for (kind = 0; kind < PS_K_SUM; ++kind) {
            most = TERSE_MAX(most, b->cls[cl].blocks[kind]);
        }
    }
    most = TERSE_MAX(most, b->sum_blocks);
    if (most > PS_GRID_MAX) {
        terse_error(TERSE_LOG_CMP, "powersgd cuda: a batch of %zu layers needs a grid of %llu "
                                   "blocks (at most %u)", n, (unsigned long long)most,
                    PS_GRID_MAX);
        status = TERSE_ERR_INVALID;
        goto err_free;
    }
    TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&b->bl, n * sizeof(*b->host)), status, err_free);
    TERSE_CHECK_GOTO(terse__cuda_memcpy(b->bl, b->host, n * sizeof(*b->host)), status, err_free);
    TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&b->start, PS_NKIND * n * sizeof(*start)),
                     status, err_free);
    TERSE_CHECK_GOTO(terse__cuda_memcpy(b->start, start, PS_NKIND * n * sizeof(*start)), status,
                     err_free);
    TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&b->jobs, n * sizeof(*jobs)), status, err_free);
    TERSE_CHECK_GOTO(terse__cuda_memcpy(b->jobs, jobs, n * sizeof(*jobs)), status, err_free);
    free(jobs);
    free(start);
    free(order);
    *batch_p = b;
    return TERSE_OK;

err_free:
    free(jobs);
    free(start);
    free(order);
    terse__cmp_psgd_cuda_batch_destroy(b);
    return status;
}

extern "C" terse_status_t
terse__cmp_psgd_cuda_batch_create(void *const *cudas, const void *const *summed,
                                  const size_t *summed_bytes, void *const *out,
                                  const size_t *out_bytes, size_t n, void **batch_p)
{
    terse_cu_player_t *ly;
    terse_status_t status;
    size_t i;

    TERSE_CHECK(ps_batch_check(cudas, summed, summed_bytes, out, out_bytes, n));
    ly = (terse_cu_player_t *)calloc(n, sizeof(*ly));
    if (ly == NULL) {
        terse_error(TERSE_LOG_CMP, "failed to allocate a powersgd cuda batch of %zu layers", n);
        return TERSE_ERR_NOMEM;
    }
    for (i = 0; i < n; ++i) {
        ly[i].cuda     = cudas[i];
        ly[i].summed_p = summed[i];
        ly[i].q_out    = out[i];
    }
    status = ps_batch_build(ly, n, 0, batch_p);
    free(ly);
    return status;
}

extern "C" terse_status_t
terse__cmp_psgd_cuda_batch_create_full(const terse_cu_player_t *layers, size_t n, void **batch_p)
{
    TERSE_CHECK(ps_batch_check_full(layers, n));
    return ps_batch_build(layers, n, 1, batch_p);
}

extern "C" terse_status_t
terse__cmp_psgd_cuda_batch_compress(void *batch, const void *user_in, terse_stream_t stream)
{
    ps_batch_t *b  = (ps_batch_t *)batch;
    cudaStream_t s = (cudaStream_t)stream;
    size_t i;
    int cl;

    if ((b == NULL) || !b->full || ((b->user & TERSE_CU_PUSER_IN) && (user_in == NULL))) {
        terse_error(TERSE_LOG_CMP, "powersgd cuda: bad batch compress arguments");
        return TERSE_ERR_INVALID;
    }
    for (cl = 0; cl < PS_NCLS; ++cl) {
        const ps_batch_cls_t *cs = &b->cls[cl];
        const ps_bl_t *bl        = b->bl + cs->first;
        const uint32_t *st       = b->start + PS_K_ROWS * b->n + cs->first;
#define PS_MQ_BATCH(_rm)                                                                       \
    ps_mq_batch<_rm><<<(unsigned)cs->blocks[PS_K_ROWS], PS_WARPS * 32, 0, s>>>(               \
        bl, st, cs->count, (const uint8_t *)user_in)
        if (cs->count > 0) {
            PS_BY_RANK((size_t)4 << cl, PS_MQ_BATCH);
        }
#undef PS_MQ_BATCH
    }
    ps_fix_compress_batch<<<(unsigned)(b->n * PS_FIXC_GRID), 256, 0, s>>>(b->bl);
    TERSE_CUDA_LAUNCHED("powersgd batched compress");
    for (i = 0; i < b->n; ++i) {
        b->layers[i]->m        = b->host[i].m;
        b->layers[i]->m_is_res = (b->host[i].res != NULL);
        b->layers[i]->next     = 1;
    }
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_psgd_cuda_batch_stage(void *batch, terse_stream_t stream)
{
    ps_batch_t *b  = (ps_batch_t *)batch;
    cudaStream_t s = (cudaStream_t)stream;
    size_t i;
    int g, cl;

    if (b == NULL) {
        return TERSE_ERR_INVALID;
    }
    /* every layer's state first: a usage error launches nothing */
    for (i = 0; i < b->n; ++i) {
        if (b->layers[i]->next != 1) {
            terse_error(TERSE_LOG_CMP, "powersgd cuda: batch layer %zu: stage 1 without "
                                       "compress", b->orig[i]);
            return TERSE_ERR_USAGE;
        }
    }
    for (i = 0; i < b->n; ++i) {
        b->layers[i]->next = 2;
    }
    for (g = 0; g < PS_NGROUP; ++g) {
        const ps_batch_group_t *gr = &b->grp[g];
        const ps_orth_job_t *jobs  = b->jobs + gr->first;
#define PS_ORTH_BATCH(_rm)                                                                     \
    ps_orth_batch<_rm><<<gr->count, PS_OB_ORTH(_rm), gr->shb, s>>>(jobs)
        if (gr->count > 0) {
            PS_BY_RANK(gr->rank, PS_ORTH_BATCH);
        }
#undef PS_ORTH_BATCH
    }
    for (cl = 0; cl < PS_NCLS; ++cl) {
        const ps_batch_cls_t *cs = &b->cls[cl];
        const ps_bl_t *bl        = b->bl + cs->first;
        const uint32_t *st       = b->start + PS_K_MTP * b->n + cs->first;
#define PS_MTP_BATCH(_rm)                                                                      \
    ps_mtp_batch<_rm><<<(unsigned)cs->blocks[PS_K_MTP], PS_MTP_BS(_rm), 0, s>>>(bl, st, cs->count)
        if (cs->count > 0) {
            PS_BY_RANK((size_t)4 << cl, PS_MTP_BATCH);
        }
#undef PS_MTP_BATCH
    }
    ps_mtp_sum_batch<<<(unsigned)b->sum_blocks, 256, 0, s>>>(b->bl, b->start + PS_K_SUM * b->n,
                                                             (uint32_t)b->n);
    for (cl = 0; cl < PS_NCLS; ++cl) {
        const ps_batch_cls_t *cs = &b->cls[cl];
        const ps_bl_t *bl        = b->bl + cs->first;
        const uint32_t *st       = b->start + PS_K_ROWS * b->n + cs->first;
#define PS_SUB_BATCH(_rm)                                                                      \
    ps_sub_batch<_rm><<<(unsigned)cs->blocks[PS_K_ROWS], PS_WARPS * 32, 0, s>>>(bl, st, cs->count)
        if (cs->count > 0) {
            PS_BY_RANK((size_t)4 << cl, PS_SUB_BATCH);
        }
#undef PS_SUB_BATCH
    }
    ps_fix_stage_batch<<<terse_cu_blocks(b->n, 256), 256, 0, s>>>(b->bl, (uint32_t)b->n);
    TERSE_CUDA_LAUNCHED("powersgd batched stage 1");
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_psgd_cuda_batch_decompress(void *batch, void *user_out, terse_stream_t stream)
{
    ps_batch_t *b  = (ps_batch_t *)batch;
    cudaStream_t s = (cudaStream_t)stream;
    size_t i;
    int g, cl;

    if ((b == NULL) || !b->full || ((b->user & TERSE_CU_PUSER_OUT) && (user_out == NULL))) {
        terse_error(TERSE_LOG_CMP, "powersgd cuda: bad batch decompress arguments");
        return TERSE_ERR_INVALID;
    }
    for (i = 0; i < b->n; ++i) {
        if (b->layers[i]->next != 2) {
            terse_error(TERSE_LOG_CMP, "powersgd cuda: batch layer %zu: decompress out of "
                                       "order", b->orig[i]);
            return TERSE_ERR_USAGE;
        }
    }
    for (g = 0; g < PS_NGROUP; ++g) {
        const ps_batch_group_t *gr = &b->grp[g];
        const ps_bl_t *bl          = b->bl + gr->first;
#define PS_KEEP_BATCH(_rm)                                                                     \
    ps_keep_batch<_rm><<<gr->count, PS_OB_KEEP(_rm), gr->keep_shb, s>>>(bl)
        if (gr->count > 0) {
            PS_BY_RANK(gr->rank, PS_KEEP_BATCH);
        }
#undef PS_KEEP_BATCH
    }
    for (cl = 0; cl < PS_NCLS; ++cl) {
        const ps_batch_cls_t *cs = &b->cls[cl];
        const ps_bl_t *bl        = b->bl + cs->first;
        const uint32_t *st       = b->start + PS_K_WRITE * b->n + cs->first;
#define PS_WRITE_BATCH(_rm)                                                                    \
    ps_write_batch<_rm><<<(unsigned)cs->blocks[PS_K_WRITE], dim3(PS_WX, PS_WY), 0, s>>>(       \
        bl, st, cs->count, (uint8_t *)user_out)
        if (cs->count > 0) {
            PS_BY_RANK((size_t)4 << cl, PS_WRITE_BATCH);
        }
#undef PS_WRITE_BATCH
    }
    TERSE_CUDA_LAUNCHED("powersgd batched decompress");
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_psgd_cuda_decompress(void *cuda, const void *in, size_t in_bytes, float scale,
                                void *out, terse_dtype_t dtype, size_t n, terse_stream_t stream)
{
    ps_cuda_t *c   = (ps_cuda_t *)cuda;
    cudaStream_t s = (cudaStream_t)stream;
    unsigned gx, gy;
    int vec;

    if ((c == NULL) || (out == NULL) || (n != c->count) || (dtype >= TERSE_FLOAT64)) {
        return TERSE_ERR_INVALID;
    }
    if ((in == NULL) || (in_bytes != c->rank * c->cols * sizeof(float))) {
        return TERSE_ERR_PAYLOAD;
    }
    if (c->next != 2) {
        terse_error(TERSE_LOG_CMP, "powersgd cuda: decompress out of order");
        return TERSE_ERR_USAGE;
    }
    /* decompress may repeat on the same step with the same bits (powersgd.h) */
#define PS_KEEP(_rm)                                                                           \
    do {                                                                                       \
        const size_t shb_ = c->rank * c->cols * sizeof(float);                                 \
        if (shb_ <= c->sh_max) {                                                               \
            ps_keep<_rm, 1><<<1, PS_OB_KEEP(_rm), shb_, s>>>((const float *)in, c->q,          \
                                                             ps_shape(c), ps_q_rng(c), c->dev);\
        } else {                                                                               \
            ps_keep<_rm, 0><<<1, PS_OB_KEEP(_rm), 0, s>>>((const float *)in, c->q, ps_shape(c),\
                                                          ps_q_rng(c), c->dev);                \
        }                                                                                      \
    } while (0)
    PS_BY_RANK(c->rank, PS_KEEP);
#undef PS_KEEP
    ps_write_grid(c, &gx, &gy);
    vec = ps_vec(c, out, 4 * ps_esize(dtype), in, 16);
#define PS_WRITE(_rm)                                                                          \
    do {                                                                                       \
        if (vec) {                                                                             \
            ps_write<_rm, 1><<<dim3(gx, gy), dim3(PS_WX, PS_WY), 0, s>>>(                      \
                c->basis, (const float *)in, scale, out, (int)dtype, ps_shape(c), c->dev,      \
                c->stat);                                                                      \
        } else {                                                                               \
            ps_write<_rm, 0><<<dim3(gx, gy), dim3(PS_WX, PS_WY), 0, s>>>(                      \
                c->basis, (const float *)in, scale, out, (int)dtype, ps_shape(c), c->dev,      \
                c->stat);                                                                      \
        }                                                                                      \
    } while (0)
    PS_BY_RANK(c->rank, PS_WRITE);
#undef PS_WRITE
    TERSE_CUDA_LAUNCHED("powersgd decompress");
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_psgd_cuda_stat(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                          double *sq_err_p)
{
    return terse__cuda_stat_read(((ps_cuda_t *)cuda)->stat, stream, flags_p, sq_err_p);
}

extern "C" const float *
terse__cmp_psgd_cuda_q(void *cuda)
{
    return ((ps_cuda_t *)cuda)->q;
}

extern "C" const float *
terse__cmp_psgd_cuda_basis(void *cuda)
{
    return ((ps_cuda_t *)cuda)->basis;
}
