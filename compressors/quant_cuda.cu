/*
 * quant and sign on the GPU: the format and arithmetic of quant.h, bit for bit (--fmad=false,
 * IEEE division; every formula is the header's TERSE_HD function).
 *
 * One warp per scale bucket, 8 buckets per block. Buckets of all layers of a table are
 * numbered consecutively ("slots"; a layer of 0 elements takes one slot for its header); a
 * warp finds its layer by binary search in the device-side table (rule 10).
 *
 *   compress:   pass 1 loads v = in + residual into registers (up to 32 per lane, so buckets
 *               of up to 1024 values read HBM once; larger buckets reload from L2), reduces
 *               min/max/finiteness (quant) or the 32 ordered |v| partial sums (sign);
 *               pass 2 rounds with Philox uniforms, packs 32 codes per step through shared
 *               memory into bytes, writes residual = v - decoded, sums the squared error.
 *   decompress: validates the header and the bucket's scales, then decodes (or adds).
 *   fixup:      one small launch per call: a non-finite input zeroes the payload body and the
 *               residual and sets the header flag; a rejected payload turns the output NaN;
 *               then the last block of each layer commits its status block.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "cuda_kernels.h"
#include "quant.h"
#include "quant_cuda.h"
#include "sign_cuda.h"

#define Q_WARPS 8 /* buckets per block */
#define Q_FIX_BLOCKS 16

typedef struct q_cuda {
    unsigned         family;
    unsigned         bits;
    uint32_t         bucket;
    terse_cu_stat_t *stat;
} q_cuda_t;

/* A table entry as the kernels see it: the public entry resolved against its instance. */
typedef struct q_dev_layer {
    const uint8_t   *in;
    float           *residual;
    uint8_t         *out;
    uint64_t         n;
    uint64_t         bytes;
    uint64_t         first; /* first slot */
    terse_rng_t      rng;
    terse_cu_stat_t *stat;
    uint32_t         bucket;
    uint32_t         bits;
    uint32_t         family;
    int              dtype;
    float            scale;
    uint32_t         vec;   /* the dense buffers are 16-byte aligned: vector accesses */
    uint64_t         nb;      /* buckets (fast paths; set by q_launch) */
    uint32_t         size_ok; /* bytes is the payload size of n values (fast decode) */
    uint32_t         user;    /* TERSE_CU_QUSER_*: in / out are offsets from the run's base */
} q_dev_layer_t;

typedef struct q_table {
    q_dev_layer_t   *dev;
    size_t           nlayers;
    uint64_t         nslots;
    uint32_t         maxbucket;
    terse_cu_qmode_t mode;
} q_table_t;
static_assert(offsetof(q_table_t, dev) == 0, "terse__cuda_table_free frees the first member");

static size_t
q_scale_bytes(unsigned family)
{
    return (family == TERSE_QUANT_FAMILY_SIGN) ? 4 : 8;
}

static int
q_aligned(const void *p)
{
    return ((uintptr_t)p & 15u) == 0;
}

static uint64_t
q_nslots(uint64_t n, uint32_t bucket)
{
    uint64_t nb = (n + bucket - 1) / bucket;
    return (nb > 0) ? nb : 1;
}

/* A table entry as this run sees it: user-relative pointers (terse_cu_qlayer_t.user) moved
 * onto the run's base, and the vector flag of the resulting addresses (compress: the gradient
 * and residual; decode: the output). */
__device__ __forceinline__ q_dev_layer_t
q_entry(const q_dev_layer_t &e, const uint8_t *user, int compress)
{
    q_dev_layer_t L = e;

    if (L.user != 0) {
        terse_cu_table_rebase<TERSE_CU_QUSER_IN, TERSE_CU_QUSER_OUT>(&L, user);
        L.vec = compress ? (((((uintptr_t)L.in | (uintptr_t)L.residual) & 15u) == 0) ? 1u : 0u)
                         : ((((uintptr_t)L.out & 15u) == 0) ? 1u : 0u);
    }
    return L;
}

__device__ __forceinline__ const q_dev_layer_t *
q_find(const q_dev_layer_t *tab, uint32_t ntab, uint64_t slot)
{
    return &tab[terse_cu_table_find(tab, ntab, slot, &q_dev_layer_t::first)];
}

__device__ __forceinline__ void
q_write_header(uint8_t *out, uint32_t family, uint32_t bits, uint32_t bucket, uint64_t n)
{
    terse_cu_st_u32(out, TERSE_QUANT_MAGIC);
    out[4] = (uint8_t)TERSE_QUANT_VERSION;
    out[5] = (uint8_t)family;
    out[6] = (uint8_t)bits;
    out[7] = 0;
    terse_cu_st_u32(out + 8, bucket);
    terse_cu_st_u32(out + 12, 0);
    terse_cu_st_u32(out + 16, (uint32_t)n);
    terse_cu_st_u32(out + 20, (uint32_t)(n >> 32));
}

/* A lane's share of a 256-value step of a bucket: 8 consecutive values, so that 8 codes make
 * exactly `bits` whole bytes and 8 aligned values share one Philox block. */
__device__ __forceinline__ int
q_cnt(uint32_t m, uint32_t e0)
{
    int c = (int)m - (int)e0;
    return (c < 0) ? 0 : ((c > 8) ? 8 : c);
}

/* All 8 values of the lane's share present. Not `q_cnt(..) == 8`: ptxas of CUDA 13.0 (sm_90)
 * folds that test into the clamp's VIMNMX.RELU and gets it wrong, true for 1..8 values left
 * and false for more (121 of 1312 lanes wrong in a 30-line reproducer on an H100), so tails
 * took the 16-byte paths - reads and writes past a layer's end - and whole shares the scalar
 * ones. Tested from the unclamped difference, the branch is right (test_quant_cuda "vector
 * paths at tails" and compute-sanitizer). */
__device__ __forceinline__ int
q_full(uint32_t m, uint32_t e0)
{
    return ((int)m - (int)e0) >= 8;
}

/* x[0..8) = in + residual at i0 (0 beyond cnt); whole: 16-byte aligned buffers and all 8
 * values present (q_full), read as vectors. */
__device__ __forceinline__ void
q_load8(const uint8_t *in, int dtype, const float *res, uint64_t i0, int cnt, int whole, float *x)
{
    if (whole) {
        if (dtype == TERSE_FLOAT32) {
            const float4 *p = (const float4 *)((const float *)in + i0);
            float4 a = __ldg(p), b = __ldg(p + 1);
            x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
            x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
        } else {
            uint4 h = __ldg((const uint4 *)((const uint16_t *)in + i0));
            uint32_t w[4] = {h.x, h.y, h.z, h.w};
#pragma unroll
            for (int t = 0; t < 8; ++t) {
                uint16_t b16 = (uint16_t)(w[t >> 1] >> ((t & 1) * 16));
                x[t] = (dtype == TERSE_FLOAT16) ? terse_cu_half_to_float(b16)
                                                : terse_bf16_to_float(b16);
            }
        }
        if (res != NULL) {
            const float4 *r = (const float4 *)(res + i0);
            float4 a = r[0], b = r[1];
            x[0] = x[0] + a.x; x[1] = x[1] + a.y; x[2] = x[2] + a.z; x[3] = x[3] + a.w;
            x[4] = x[4] + b.x; x[5] = x[5] + b.y; x[6] = x[6] + b.z; x[7] = x[7] + b.w;
        }
        return;
    }
#pragma unroll
    for (int t = 0; t < 8; ++t) {
        x[t] = 0.0f;
        if (t < cnt) {
            x[t] = terse_cu_load(in, (terse_dtype_t)dtype, i0 + t);
            if (res != NULL) {
                x[t] = x[t] + res[i0 + t];
            }
        }
    }
}

__device__ __forceinline__ void
q_store8_f32(float *dst, uint64_t i0, int cnt, int whole, const float *y)
{
    if (whole) {
        float4 *p = (float4 *)(dst + i0);
        p[0] = make_float4(y[0], y[1], y[2], y[3]);
        p[1] = make_float4(y[4], y[5], y[6], y[7]);
        return;
    }
#pragma unroll
    for (int t = 0; t < 8; ++t) {
        if (t < cnt) {
            dst[i0 + t] = y[t];
        }
    }
}

typedef struct q_bucket {
    const uint8_t *in;
    float         *res;
    uint8_t       *codes;
    terse_rng_t    rng;
    uint64_t       start;
    uint32_t       m, bits;
    int            dtype, vec, is_sign;
    float          qlo, unit, inv, Lf, scale;
} q_bucket_t;

/* Pass 1 of one step: min/max/finiteness (quant), the ordered |v| lane sums (sign). */
__device__ __forceinline__ void
q_p1(const q_bucket_t &B, uint32_t st, int lane, float *x, float *lo, float *hi, float *probe,
     float *s, float *shs)
{
    const uint32_t e0 = st * 256u + 8u * lane;
    const int cnt     = q_cnt(B.m, e0);

    q_load8(B.in, B.dtype, B.res, B.start + e0, cnt, B.vec && q_full(B.m, e0), x);
    if (B.is_sign) {
        /* s[l] sums |v[i]| for i % 32 == l in increasing i: through shared memory, lane l
         * reads values 32 q + l of the step, q = 0..7 */
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            shs[8 * lane + t] = (t < cnt) ? fabsf(x[t]) : 0.0f;
        }
        __syncwarp();
#pragma unroll
        for (int q = 0; q < 8; ++q) {
            *s = *s + shs[32 * q + lane];
        }
        __syncwarp();
    } else {
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            if (t < cnt) {
                *lo    = (x[t] < *lo) ? x[t] : *lo;
                *hi    = (x[t] > *hi) ? x[t] : *hi;
                *probe = *probe + x[t] * 0.0f;
            }
        }
    }
}

/* Pass 2 of one step: codes, residual, squared error, packed bytes. */
__device__ __forceinline__ void
q_p2(const q_bucket_t &B, uint32_t st, int lane, const float *x, double *err)
{
    const uint32_t e0 = st * 256u + 8u * lane;
    const int cnt     = q_cnt(B.m, e0);
    float d[8];
    uint64_t w = 0;

    if (cnt == 0) {
        return;
    }
    if (B.is_sign) {
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            uint32_t c = (x[t] < 0.0f) ? 1u : 0u;
            d[t]       = c ? -B.scale : B.scale;
            if (t < cnt) {
                w |= (uint64_t)c << t;
            }
        }
    } else {
        const uint64_t a0 = B.rng.offset + B.start + e0;
        terse_rng4_t r0 = terse_rng_block(&B.rng, a0 >> 3), r1 = r0;
        if ((a0 & 7u) != 0) {
            r1 = terse_rng_block(&B.rng, (a0 >> 3) + 1);
        }
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            uint64_t a   = a0 + t;
            terse_rng4_t rb = ((a >> 3) == (a0 >> 3)) ? r0 : r1;
            float u      = terse_rng_u16_to_float(terse_rng_u16_of(rb, (unsigned)(a & 7u)));
            uint32_t c   = terse_quant_code(x[t], B.qlo, B.inv, u, B.Lf);
            d[t]         = terse_quant_decode(c, B.qlo, B.unit);
            if (t < cnt) {
                w |= (uint64_t)c << (t * B.bits);
            }
        }
    }
#pragma unroll
    for (int t = 0; t < 8; ++t) {
        if (t < cnt) {
            double de = (double)x[t] - (double)d[t];
            *err      = *err + de * de;
            d[t]      = x[t] - d[t]; /* the residual */
        }
    }
    if (B.res != NULL) {
        q_store8_f32(B.res, B.start + e0, cnt, B.vec && q_full(B.m, e0), d);
    }
    {
        const uint32_t nbytes = ((uint32_t)cnt * B.bits + 7u) / 8u;
        uint8_t *dst          = B.codes + (uint64_t)(st * 32u + lane) * B.bits;
#pragma unroll
        for (uint32_t j = 0; j < 8; ++j) {
            if (j < nbytes) {
                dst[j] = (uint8_t)(w >> (8 * j));
            }
        }
    }
}

/* One bucket of compress; returns the lane's squared error. NS steps of 256 values stay in
 * registers (buckets up to 256 NS); larger buckets reload the rest (from L2). */
template <int NS>
__device__ __forceinline__ double
q_compress_bucket(const q_dev_layer_t &L, uint64_t k, int lane, float *shs)
{
    q_bucket_t B;
    const uint64_t n = L.n;
    const uint32_t bucket = L.bucket;
    float v[NS][8];
    float lo = __int_as_float(0x7f800000), hi = -lo, probe = 0.0f, s = 0.0f;
    double err = 0.0;
    uint32_t nsteps, st;
    uint64_t nb;

    if ((k == 0) && (lane == 0)) {
        q_write_header(L.out, L.family, L.bits, bucket, n);
    }
    if (n == 0) {
        return 0.0;
    }
    B.in      = L.in;
    B.res     = L.residual;
    B.rng     = L.rng;
    B.start   = k * bucket;
    B.m       = (uint32_t)min((uint64_t)bucket, n - B.start);
    B.bits    = L.bits;
    B.dtype   = L.dtype;
    B.vec     = (int)L.vec;
    B.is_sign = (L.family == TERSE_QUANT_FAMILY_SIGN);
    B.Lf      = (float)((1u << B.bits) - 1u);
    nb        = (n + bucket - 1) / bucket;
    B.codes   = L.out + TERSE_QUANT_HDR_BYTES + nb * (B.is_sign ? 4u : 8u) +
                k * (uint64_t)bucket * B.bits / 8u;
    nsteps    = (B.m + 255u) / 256u;

#pragma unroll
    for (int j = 0; j < NS; ++j) {
        if ((uint32_t)j < nsteps) {
            q_p1(B, j, lane, v[j], &lo, &hi, &probe, &s, shs);
        }
    }
    for (st = NS; st < nsteps; ++st) {
        float x[8];
        q_p1(B, st, lane, x, &lo, &hi, &probe, &s, shs);
    }
    if (B.is_sign) {
#pragma unroll
        for (int w = 16; w > 0; w >>= 1) {
            s = s + __shfl_down_sync(0xffffffffu, s, w);
        }
        s       = __shfl_sync(0xffffffffu, s, 0);
        B.scale = s / (float)B.m;
        if ((B.scale - B.scale) != 0.0f) {
            if (lane == 0) {
                atomicOr(&L.stat->call, (uint32_t)TERSE_CMP_NONFINITE);
            }
            return 0.0;
        }
        if (lane == 0) {
            terse_cu_st_u32(L.out + TERSE_QUANT_HDR_BYTES + k * 4u, __float_as_uint(B.scale));
        }
    } else {
#pragma unroll
        for (int w = 16; w > 0; w >>= 1) {
            float a = __shfl_xor_sync(0xffffffffu, lo, w);
            float b = __shfl_xor_sync(0xffffffffu, hi, w);
            lo      = (a < lo) ? a : lo;
            hi      = (b > hi) ? b : hi;
            probe   = probe + __shfl_xor_sync(0xffffffffu, probe, w);
        }
        if ((probe != 0.0f) ||
            !terse_quant_bucket_params(lo, hi, B.bits, &B.qlo, &B.unit, &B.inv)) {
            if (lane == 0) {
                atomicOr(&L.stat->call, (uint32_t)TERSE_CMP_NONFINITE);
            }
            return 0.0;
        }
        if (lane == 0) {
            uint8_t *sc = L.out + TERSE_QUANT_HDR_BYTES + k * 8u;
            terse_cu_st_u32(sc, __float_as_uint(B.qlo));
            terse_cu_st_u32(sc + 4, __float_as_uint(B.unit));
        }
    }
#pragma unroll
    for (int j = 0; j < NS; ++j) {
        if ((uint32_t)j < nsteps) {
            q_p2(B, j, lane, v[j], &err);
        }
    }
    for (st = NS; st < nsteps; ++st) {
        const uint32_t e0 = st * 256u + 8u * lane;
        float x[8];
        q_load8(B.in, B.dtype, B.res, B.start + e0, q_cnt(B.m, e0), B.vec && q_full(B.m, e0),
                x);
        q_p2(B, st, lane, x, &err);
    }
    return err;
}

template <int NS, int MINB>
__global__ void __launch_bounds__(Q_WARPS * 32, MINB)
q_compress_kernel(q_dev_layer_t one, const q_dev_layer_t *tab, uint32_t ntab, uint64_t nslots,
                  uint32_t step, int set_step, const uint8_t *user)
{
    __shared__ float sh_abs[Q_WARPS][256];
    __shared__ double sh_err[Q_WARPS];
    __shared__ terse_cu_stat_t *sh_stat[Q_WARPS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint64_t slot = (uint64_t)blockIdx.x * Q_WARPS + warp;
    double err = 0.0;
    terse_cu_stat_t *st = NULL;

    if (slot < nslots) {
        q_dev_layer_t L = (tab != NULL) ? q_entry(*q_find(tab, ntab, slot), user, 1) : one;
        if (set_step) {
            L.rng.hi[0] = step;
        }
        st  = L.stat;
        err = q_compress_bucket<NS>(L, slot - L.first, lane, sh_abs[warp]);
    }
    err = terse_cu_warp_sum(err);
    if (lane == 0) {
        sh_err[warp]  = err;
        sh_stat[warp] = st;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        /* one atomic per layer present in the block (the error is a statistic: any order) */
        double acc = 0.0;
        terse_cu_stat_t *cur = NULL;
        for (int w = 0; w < Q_WARPS; ++w) {
            if (sh_stat[w] != cur) {
                if ((cur != NULL) && (acc != 0.0)) {
                    atomicAdd(&cur->sq_acc, acc);
                }
                cur = sh_stat[w];
                acc = 0.0;
            }
            acc = acc + sh_err[w];
        }
        if ((cur != NULL) && (acc != 0.0)) {
            atomicAdd(&cur->sq_acc, acc);
        }
    }
}

/* Decodes one bucket. add = 0: out = scale * D, of dtype; 1: acc += D (fp32); 2: out =
 * (0 + D) * scale, of dtype (TERSE_CU_Q_DECOMPRESS_SET: a zeroed accumulator plus D, then
 * the conversion of terse__dev_from_f32, bit for bit, in one pass). */
__device__ __forceinline__ void
q_decode_bucket(const q_dev_layer_t &Lr, uint64_t k, int lane, int add)
{
    const uint8_t *in  = Lr.in;
    void *out          = Lr.out;
    const uint64_t n   = Lr.n;
    const uint32_t bucket = Lr.bucket, bits = Lr.bits, family = Lr.family;
    const int is_sign  = (family == TERSE_QUANT_FAMILY_SIGN);
    const int dtype    = Lr.dtype, vec = (int)Lr.vec;
    const float oscale = Lr.scale;
    terse_cu_stat_t *stat = Lr.stat;
    const uint64_t start = k * bucket;
    const uint64_t nb    = (n + bucket - 1) / bucket;
    const uint32_t sb    = is_sign ? 4u : 8u;
    const uint32_t mask  = (1u << bits) - 1u;
    uint32_t m, nsteps, st, flags;
    float qlo = 0.0f, unit = 0.0f, scale = 0.0f;
    const uint8_t *codes;
    int bad = 0;

    {
        uint64_t full = n / bucket, rest = n - full * bucket;
        uint64_t want = TERSE_QUANT_HDR_BYTES + nb * sb + full * ((uint64_t)bucket * bits / 8u) +
                        (rest * bits + 7u) / 8u;
        bad = (Lr.bytes != want);
    }
    if (!bad) {
        bad = (terse_cu_ld_u32(in) != TERSE_QUANT_MAGIC) || (in[4] != TERSE_QUANT_VERSION) ||
              (in[5] != family) || (in[6] != bits) || (terse_cu_ld_u32(in + 8) != bucket) ||
              (terse_cu_ld_u32(in + 12) != 0) || (terse_cu_ld_u64(in + 16) != n) ||
              ((in[7] & ~(uint32_t)TERSE_CMP_NONFINITE) != 0);
    }
    if (bad) {
        if (lane == 0) {
            atomicOr(&stat->call, (uint32_t)TERSE_CU_ERR_PAYLOAD);
        }
        return;
    }
    if (n == 0) {
        return;
    }
    flags  = in[7];
    m      = (uint32_t)min((uint64_t)bucket, n - start);
    nsteps = (m + 255u) / 256u;
    if (flags & TERSE_CMP_NONFINITE) {
        if ((k == 0) && (lane == 0)) {
            atomicOr(&stat->call, (uint32_t)TERSE_CMP_NONFINITE);
        }
        for (uint32_t e = lane; e < m; e += 32) {
            if (add == 1) {
                ((float *)out)[start + e] = TERSE_CU_NAN;
            } else {
                terse_cu_store(out, (terse_dtype_t)dtype, start + e, TERSE_CU_NAN);
            }
        }
        return;
    }
    if (is_sign) {
        scale = __uint_as_float(terse_cu_ld_u32(in + TERSE_QUANT_HDR_BYTES + k * 4u));
        bad   = !((scale - scale) == 0.0f) || !(scale >= 0.0f);
    } else {
        qlo  = __uint_as_float(terse_cu_ld_u32(in + TERSE_QUANT_HDR_BYTES + k * 8u));
        unit = __uint_as_float(terse_cu_ld_u32(in + TERSE_QUANT_HDR_BYTES + k * 8u + 4u));
        bad  = !terse_quant_scales_ok(qlo, unit, bits);
    }
    if (bad) {
        if (lane == 0) {
            atomicOr(&stat->call, (uint32_t)TERSE_CU_ERR_PAYLOAD);
        }
        return;
    }
    codes = in + TERSE_QUANT_HDR_BYTES + nb * sb + k * (uint64_t)bucket * bits / 8u;
    for (st = 0; st < nsteps; ++st) {
        const uint32_t e0 = st * 256u + 8u * lane;
        const int cnt     = q_cnt(m, e0);
        const int whole   = vec && q_full(m, e0);
        const uint32_t nbytes = ((uint32_t)cnt * bits + 7u) / 8u;
        const uint8_t *src    = codes + (uint64_t)(st * 32u + lane) * bits;
        const uint64_t i0     = start + e0;
        uint64_t w = 0;
        float d[8];

        if (cnt == 0) {
            continue;
        }
#pragma unroll
        for (uint32_t j = 0; j < 8; ++j) {
            if (j < nbytes) {
                w |= (uint64_t)src[j] << (8 * j); /* predicated: the 8 loads issue together */
            }
        }
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            uint32_t c = (uint32_t)(w >> (t * bits)) & mask;
            d[t] = is_sign ? (c ? -scale : scale) : terse_quant_decode(c, qlo, unit);
        }
        if (add == 2) {
#pragma unroll
            for (int t = 0; t < 8; ++t) {
                d[t] = 0.0f + d[t]; /* -0 becomes +0, as in 0 + D */
            }
        }
        if (add == 1) {
            float *acc = (float *)out;
            float a[8];
            if (whole) {
                const float4 *p = (const float4 *)(acc + i0);
                float4 x0 = p[0], x1 = p[1];
                a[0] = x0.x; a[1] = x0.y; a[2] = x0.z; a[3] = x0.w;
                a[4] = x1.x; a[5] = x1.y; a[6] = x1.z; a[7] = x1.w;
            } else {
#pragma unroll
                for (int t = 0; t < 8; ++t) {
                    a[t] = (t < cnt) ? acc[i0 + t] : 0.0f;
                }
            }
#pragma unroll
            for (int t = 0; t < 8; ++t) {
                a[t] = a[t] + d[t];
            }
            q_store8_f32(acc, i0, cnt, whole, a);
        } else if (dtype == TERSE_FLOAT32) {
#pragma unroll
            for (int t = 0; t < 8; ++t) {
                d[t] = d[t] * oscale; /* exact for 1: terse__dev_from_f32's skip */
            }
            q_store8_f32((float *)out, i0, cnt, whole, d);
        } else {
            uint16_t h[8];
#pragma unroll
            for (int t = 0; t < 8; ++t) {
                float y = d[t] * oscale;
                h[t] = (dtype == TERSE_FLOAT16) ? terse_cu_float_to_half(y) : terse_float_to_bf16(y);
            }
            if (whole) {
                *(uint4 *)((uint16_t *)out + i0) =
                    make_uint4((uint32_t)h[0] | ((uint32_t)h[1] << 16),
                               (uint32_t)h[2] | ((uint32_t)h[3] << 16),
                               (uint32_t)h[4] | ((uint32_t)h[5] << 16),
                               (uint32_t)h[6] | ((uint32_t)h[7] << 16));
            } else {
#pragma unroll
                for (int t = 0; t < 8; ++t) {
                    if (t < cnt) {
                        ((uint16_t *)out)[i0 + t] = h[t];
                    }
                }
            }
        }
    }
}

__global__ void __launch_bounds__(Q_WARPS * 32)
q_decode_kernel(q_dev_layer_t one, const q_dev_layer_t *tab, uint32_t ntab, uint64_t nslots,
                int add, const uint8_t *user)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint64_t slot = (uint64_t)blockIdx.x * Q_WARPS + warp;

    if (slot < nslots) {
        const q_dev_layer_t L = (tab != NULL) ? q_entry(*q_find(tab, ntab, slot), user, 0) : one;
        q_decode_bucket(L, slot - L.first, lane, add);
    }
}

/* grid (Q_FIX_BLOCKS, nlayers). */
__global__ void
q_fixup_kernel(q_dev_layer_t one, const q_dev_layer_t *tab, int mode, const uint8_t *user)
{
    const q_dev_layer_t L  = (tab != NULL)
                                 ? q_entry(tab[blockIdx.y], user, mode == TERSE_CU_Q_COMPRESS)
                                 : one;
    terse_cu_stat_t *st    = L.stat;
    const uint32_t call    = *(volatile uint32_t *)&st->call;
    const uint64_t stride  = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t t0      = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    uint64_t i;

    if ((mode == TERSE_CU_Q_COMPRESS) && (call & TERSE_CMP_NONFINITE)) {
        for (i = TERSE_QUANT_HDR_BYTES + t0; i < L.bytes; i += stride) {
            L.out[i] = 0;
        }
        for (i = t0; (L.residual != NULL) && (i < L.n); i += stride) {
            L.residual[i] = 0.0f;
        }
        if (t0 == 0) {
            L.out[7] = (uint8_t)TERSE_CMP_NONFINITE;
        }
    } else if ((mode != TERSE_CU_Q_COMPRESS) && (call & TERSE_CU_ERR_PAYLOAD)) {
        for (i = t0; i < L.n; i += stride) {
            if (mode == TERSE_CU_Q_DECOMPRESS_ADD) {
                ((float *)L.out)[i] = TERSE_CU_NAN;
            } else {
                terse_cu_store(L.out, (terse_dtype_t)L.dtype, i, TERSE_CU_NAN);
            }
        }
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        if (terse_cu_last_block(&st->done, gridDim.x)) {
            terse_cu_stat_commit(st, mode == TERSE_CU_Q_COMPRESS);
        }
    }
}

/* ---------------------------------------------------------------- streaming fast paths
 * One layer in the common case (the slot kernels above run everything else and every
 * multi-tensor table): compress with buckets of 256, 512 or 1024 values and a 4-byte aligned
 * payload (quant also: 16-byte aligned dense buffers, rng->offset % 8 == 0); decompress with a
 * power-of-two bucket, a 4-byte aligned payload and a 16-byte aligned output.
 *
 *   compress:   one warp per full bucket, grid-stride (bytes in flight: the whole bucket and
 *               its residual are loaded before any use). quant keeps lane l on values
 *               128 r + 4 l + t (t < 4): loads and residual stores are whole 16-byte vectors of
 *               a coalesced row; one Philox block per lane per 256 values, its halves passed on
 *               by shuffles; a lane's 4 codes form a 4 * bits field and the row's 4 * bits code
 *               words are assembled by shuffles and written whole. sign keeps lane l on values
 *               32 p + l, so the partial sums of quant.h accumulate in place, and each code
 *               word is a ballot. The last partial bucket (and count 0) goes to the slot kernel.
 *   decompress: grid-stride over groups of 4 values (one 16-byte streaming store each, 4
 *               groups' loads in flight per thread); element i's code sits at bit i * bits of
 *               the code
 *               section, so a group's 4 * bits field comes from at most two aligned words; the
 *               header is checked once per block, the scales per group.
 */

/* Values i0 .. i0 + 3 of in (16-byte aligned fp32 or 8-byte aligned 16-bit), plus residual. */
__device__ __forceinline__ void
q_load4(const uint8_t *in, int dtype, const float *res, uint64_t i0, float *x)
{
    if (dtype == TERSE_FLOAT32) {
        float4 a = __ldg((const float4 *)((const float *)in + i0));
        x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
    } else {
        uint2 h = __ldg((const uint2 *)((const uint16_t *)in + i0));
        uint32_t w[2] = {h.x, h.y};
#pragma unroll
        for (int t = 0; t < 4; ++t) {
            uint16_t b16 = (uint16_t)(w[t >> 1] >> ((t & 1) * 16));
            x[t] = (dtype == TERSE_FLOAT16) ? terse_cu_half_to_float(b16)
                                            : terse_bf16_to_float(b16);
        }
    }
    if (res != NULL) {
        float4 r = *(const float4 *)(res + i0);
        x[0] = x[0] + r.x; x[1] = x[1] + r.y; x[2] = x[2] + r.z; x[3] = x[3] + r.w;
    }
}

/* quant compress of the full buckets, NR rows of 128 values per bucket (NR even). */
template <int NR, int MINB>
__global__ void __launch_bounds__(Q_WARPS * 32, MINB)
q_quant_fast_kernel(q_dev_layer_t L, uint64_t nfull)
{
    const int lane        = threadIdx.x & 31;
    const uint32_t bits   = L.bits;
    const uint32_t nfield = 4u * bits; /* bits of a lane's 4 codes = code words of a row */
    const uint32_t J      = (8u + bits - 1u) / bits + 1u; /* lanes feeding one code word */
    const int l0          = (int)((8u * (uint32_t)lane) / bits);
    const float Lf        = (float)((1u << bits) - 1u);
    uint32_t *sc32        = (uint32_t *)(L.out + TERSE_QUANT_HDR_BYTES);
    uint32_t *codes32     = (uint32_t *)(L.out + TERSE_QUANT_HDR_BYTES + L.nb * 8u);
    double err = 0.0;

    if ((blockIdx.x == 0) && (threadIdx.x == 0)) {
        q_write_header(L.out, L.family, bits, L.bucket, L.n);
    }
    for (uint64_t k = (uint64_t)blockIdx.x * Q_WARPS + (threadIdx.x >> 5); k < nfull;
         k += (uint64_t)gridDim.x * Q_WARPS) {
        const uint64_t start = k * (uint64_t)(NR * 128);
        float v[NR][4];
        float lo = __int_as_float(0x7f800000), hi = -lo, probe = 0.0f, qlo, unit, inv;

#pragma unroll
        for (int r = 0; r < NR; ++r) {
            q_load4(L.in, L.dtype, L.residual, start + 128u * r + 4u * lane, v[r]);
        }
#pragma unroll
        for (int r = 0; r < NR; ++r) {
#pragma unroll
            for (int t = 0; t < 4; ++t) {
                lo    = (v[r][t] < lo) ? v[r][t] : lo;
                hi    = (v[r][t] > hi) ? v[r][t] : hi;
                probe = probe + v[r][t] * 0.0f;
            }
        }
#pragma unroll
        for (int w = 16; w > 0; w >>= 1) {
            float a = __shfl_xor_sync(0xffffffffu, lo, w);
            float b = __shfl_xor_sync(0xffffffffu, hi, w);
            lo      = (a < lo) ? a : lo;
            hi      = (b > hi) ? b : hi;
            probe   = probe + __shfl_xor_sync(0xffffffffu, probe, w);
        }
        if ((probe != 0.0f) || !terse_quant_bucket_params(lo, hi, bits, &qlo, &unit, &inv)) {
            if (lane == 0) {
                atomicOr(&L.stat->call, (uint32_t)TERSE_CMP_NONFINITE);
            }
            continue;
        }
        if (lane == 0) {
            sc32[2 * k]     = __float_as_uint(qlo);
            sc32[2 * k + 1] = __float_as_uint(unit);
        }
#pragma unroll
        for (int mm = 0; mm < NR / 2; ++mm) {
            /* lane j draws the block of values 8 j .. 8 j + 7 of these 256 */
            const terse_rng4_t blk =
                terse_rng_block(&L.rng, ((L.rng.offset + start + 256u * mm) >> 3) + lane);
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r   = 2 * mm + h;
                const int src = 16 * h + (lane >> 1);
                const uint32_t w0 = __shfl_sync(0xffffffffu, blk.v[0], src);
                const uint32_t w1 = __shfl_sync(0xffffffffu, blk.v[1], src);
                const uint32_t w2 = __shfl_sync(0xffffffffu, blk.v[2], src);
                const uint32_t w3 = __shfl_sync(0xffffffffu, blk.v[3], src);
                const uint32_t ulo = (lane & 1) ? w2 : w0, uhi = (lane & 1) ? w3 : w1;
                uint32_t F = 0, word = 0;
                float d[4];
#pragma unroll
                for (int t = 0; t < 4; ++t) {
                    const uint32_t u16 = (((t < 2) ? ulo : uhi) >> ((t & 1) * 16)) & 0xffffu;
                    const uint32_t c   = terse_quant_code(v[r][t], qlo, inv,
                                                          terse_rng_u16_to_float(u16), Lf);
                    const float dec    = terse_quant_decode(c, qlo, unit);
                    const double de    = (double)v[r][t] - (double)dec;
                    err  = err + de * de;
                    d[t] = v[r][t] - dec;
                    F |= c << (t * bits);
                }
                if (L.residual != NULL) {
                    *(float4 *)(L.residual + start + 128u * r + 4u * lane) =
                        make_float4(d[0], d[1], d[2], d[3]);
                }
                /* code word `lane` of the row: fields of lanes l0 .. l0 + J - 1 */
#pragma unroll
                for (uint32_t j = 0; j < 5; ++j) {
                    if (j < J) {
                        const int s    = min(l0 + (int)j, 31);
                        const uint32_t Fs = __shfl_sync(0xffffffffu, F, s);
                        const int pos  = (int)nfield * s - 32 * lane;
                        if ((pos >= 0) && (pos < 32)) {
                            word |= Fs << pos;
                        } else if ((pos < 0) && (pos > -(int)nfield)) {
                            word |= Fs >> (-pos);
                        }
                    }
                }
                if ((uint32_t)lane < nfield) {
                    codes32[k * (uint64_t)(NR * nfield) + (uint64_t)r * nfield + lane] = word;
                }
            }
        }
    }
    err = terse_cu_warp_sum(err);
    if ((lane == 0) && (err != 0.0)) {
        atomicAdd(&L.stat->sq_acc, err);
    }
}

/* sign compress of the full buckets, NP words of 32 values per bucket. */
template <int NP, int MINB>
__global__ void __launch_bounds__(Q_WARPS * 32, MINB)
q_sign_fast_kernel(q_dev_layer_t L, uint64_t nfull)
{
    const int lane    = threadIdx.x & 31;
    uint32_t *sc32    = (uint32_t *)(L.out + TERSE_QUANT_HDR_BYTES);
    uint32_t *codes32 = (uint32_t *)(L.out + TERSE_QUANT_HDR_BYTES + L.nb * 4u);
    double err = 0.0;

    if ((blockIdx.x == 0) && (threadIdx.x == 0)) {
        q_write_header(L.out, L.family, 1u, L.bucket, L.n);
    }
    for (uint64_t k = (uint64_t)blockIdx.x * Q_WARPS + (threadIdx.x >> 5); k < nfull;
         k += (uint64_t)gridDim.x * Q_WARPS) {
        const uint64_t start = k * (uint64_t)(NP * 32) + lane;
        float v[NP], s = 0.0f, scale;
        uint32_t myw = 0;

        if (L.dtype == TERSE_FLOAT32) {
#pragma unroll
            for (int p = 0; p < NP; ++p) {
                v[p] = __ldg((const float *)L.in + start + 32u * p);
            }
        } else {
#pragma unroll
            for (int p = 0; p < NP; ++p) {
                const uint16_t h = __ldg((const unsigned short *)L.in + start + 32u * p);
                v[p] = (L.dtype == TERSE_FLOAT16) ? terse_cu_half_to_float(h)
                                                  : terse_bf16_to_float(h);
            }
        }
        if (L.residual != NULL) {
            float r[NP];
#pragma unroll
            for (int p = 0; p < NP; ++p) {
                r[p] = L.residual[start + 32u * p];
            }
#pragma unroll
            for (int p = 0; p < NP; ++p) {
                v[p] = v[p] + r[p];
            }
        }
#pragma unroll
        for (int p = 0; p < NP; ++p) {
            s = s + fabsf(v[p]);
        }
#pragma unroll
        for (int w = 16; w > 0; w >>= 1) {
            s = s + __shfl_down_sync(0xffffffffu, s, w);
        }
        s     = __shfl_sync(0xffffffffu, s, 0);
        scale = s / (float)(NP * 32);
        if ((scale - scale) != 0.0f) {
            if (lane == 0) {
                atomicOr(&L.stat->call, (uint32_t)TERSE_CMP_NONFINITE);
            }
            continue;
        }
        if (lane == 0) {
            sc32[k] = __float_as_uint(scale);
        }
#pragma unroll
        for (int p = 0; p < NP; ++p) {
            const int neg       = v[p] < 0.0f;
            const uint32_t bal  = __ballot_sync(0xffffffffu, neg);
            const float dec     = neg ? -scale : scale;
            const double de     = (double)v[p] - (double)dec;
            err = err + de * de;
            myw = (lane == p) ? bal : myw;
            v[p] = v[p] - dec;
        }
        if (L.residual != NULL) {
#pragma unroll
            for (int p = 0; p < NP; ++p) {
                L.residual[start + 32u * p] = v[p];
            }
        }
        if (lane < NP) {
            codes32[k * NP + lane] = myw;
        }
    }
    err = terse_cu_warp_sum(err);
    if ((lane == 0) && (err != 0.0)) {
        atomicAdd(&L.stat->sq_acc, err);
    }
}

/* The 4 * bits-bit code field of group T (values 4 T .. 4 T + 3); codes: the 4-byte aligned
 * code section, cend its length in bytes (nothing past it is read). */
__device__ __forceinline__ uint32_t
q_field(const uint8_t *codes, uint64_t cend, uint64_t T, uint32_t bits)
{
    const uint64_t bit0 = 4ull * T * bits;
    const uint64_t wi   = bit0 >> 5;
    const uint32_t s    = (uint32_t)bit0 & 31u;
    uint32_t w0, w1 = 0;

    if (4u * wi + 8u <= cend) {
        const uint32_t *c32 = (const uint32_t *)codes;
        w0 = __ldg(c32 + wi);
        if (s + 4u * bits > 32u) {
            w1 = __ldg(c32 + wi + 1);
        }
    } else {
        uint64_t w = 0;
        for (uint32_t j = 0; j < 8; ++j) {
            if (4u * wi + j < cend) {
                w |= (uint64_t)codes[4u * wi + j] << (8 * j);
            }
        }
        w0 = (uint32_t)w;
        w1 = (uint32_t)(w >> 32);
    }
    return __funnelshift_r(w0, w1, s);
}

/* Iterations ahead that the decoder prefetches codes and scales into L2 (PF; a variant: on an
 * H100 it did not help, 1 GiB quant:4 decompress 38.5 % of peak without, 37.8 % with). */
#define Q_DEC_PD 3

__device__ __forceinline__ void
q_prefetch_l2(const void *p)
{
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/* The fast decoders' header check (thread 0 reads it, the block shares the answer): 0 decode,
 * 1 rejected (TERSE_CU_ERR_PAYLOAD), 2 the payload carries the non-finite flag (output NaN);
 * block 0 raises the status flag once. Every thread of the block must call it. */
__device__ __forceinline__ uint32_t
q_fast_header_state(const q_dev_layer_t &L, uint32_t *sh_state)
{
    if (threadIdx.x == 0) {
        const uint8_t *in = L.in;
        uint32_t state    = 1;
        if (L.size_ok) {
            int bad = (terse_cu_ld_u32(in) != TERSE_QUANT_MAGIC) ||
                      (in[4] != TERSE_QUANT_VERSION) ||
                      (in[5] != L.family) || (in[6] != L.bits) ||
                      (terse_cu_ld_u32(in + 8) != L.bucket) || (terse_cu_ld_u32(in + 12) != 0) ||
                      (terse_cu_ld_u64(in + 16) != L.n) ||
                      ((in[7] & ~(uint32_t)TERSE_CMP_NONFINITE) != 0);
            state = bad ? 1u : ((in[7] & TERSE_CMP_NONFINITE) ? 2u : 0u);
        }
        if ((blockIdx.x == 0) && (state == 1)) {
            atomicOr(&L.stat->call, (uint32_t)TERSE_CU_ERR_PAYLOAD);
        }
        if ((blockIdx.x == 0) && (state == 2) && (L.n > 0)) {
            atomicOr(&L.stat->call, (uint32_t)TERSE_CMP_NONFINITE);
        }
        *sh_state = state;
    }
    __syncthreads();
    return *sh_state;
}

template <int ADD, int CS, int U, int PF>
__global__ void __launch_bounds__(256)
q_decode_fast_kernel(q_dev_layer_t L, uint32_t bshift)
{
    __shared__ uint32_t sh_state;
    const uint8_t *in     = L.in;
    const uint64_t n      = L.n, n4 = (n + 3) / 4;
    const uint32_t bits   = L.bits, mask = (1u << bits) - 1u;
    const int is_sign     = (L.family == TERSE_QUANT_FAMILY_SIGN);
    const uint64_t coff   = TERSE_QUANT_HDR_BYTES + L.nb * (is_sign ? 4u : 8u);
    const uint8_t *codes  = in + coff;
    const uint64_t cend   = L.bytes - coff;
    const uint32_t *sc32  = (const uint32_t *)(in + TERSE_QUANT_HDR_BYTES);
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const float oscale    = L.scale;
    uint32_t state;

    state = q_fast_header_state(L, &sh_state);
    if ((state == 1) || (n == 0)) {
        return;
    }
    if (state == 2) {
        for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
            if (ADD) {
                ((float *)L.out)[i] = TERSE_CU_NAN;
            } else {
                terse_cu_store(L.out, (terse_dtype_t)L.dtype, i, TERSE_CU_NAN);
            }
        }
        return;
    }
    for (uint64_t base = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; base < n4;
         base += U * stride) {
        uint32_t f[U];
        float s0[U], s1[U];
        float4 a[U];

        if (PF) {
            /* codes and scales of iteration + Q_DEC_PD into L2: the loads below then wait for
             * L2, not for DRAM queued behind the output's writes */
#pragma unroll
            for (int u = 0; u < U; ++u) {
                const uint64_t T = base + (uint64_t)(Q_DEC_PD * U + u) * stride;
                if ((T < n4) && ((threadIdx.x & 7) == 0)) {
                    q_prefetch_l2(codes + 4u * ((4u * T * bits) >> 5));
                    if ((threadIdx.x & 31) == 0) {
                        const uint64_t k = (4u * T) >> bshift;
                        q_prefetch_l2(sc32 + (is_sign ? k : 2 * k));
                    }
                }
            }
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const uint64_t T = base + u * stride;
            if (T < n4) {
                const uint64_t k = (4u * T) >> bshift;
                f[u] = q_field(codes, cend, T, bits);
                if (is_sign) {
                    s0[u] = __uint_as_float(__ldg(sc32 + k));
                    s1[u] = 0.0f;
                } else {
                    s0[u] = __uint_as_float(__ldg(sc32 + 2 * k));
                    s1[u] = __uint_as_float(__ldg(sc32 + 2 * k + 1));
                }
                if (ADD && (4u * T + 4u <= n)) {
                    a[u] = *(const float4 *)((const float *)L.out + 4u * T);
                }
            }
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const uint64_t T = base + u * stride;
            float d[4];
            int cnt, bad;
            if (T >= n4) {
                break;
            }
            if (is_sign) {
                bad = !((s0[u] - s0[u]) == 0.0f) || !(s0[u] >= 0.0f);
            } else {
                bad = !terse_quant_scales_ok(s0[u], s1[u], bits);
            }
            if (bad) {
                atomicOr(&L.stat->call, (uint32_t)TERSE_CU_ERR_PAYLOAD);
                continue;
            }
#pragma unroll
            for (int t = 0; t < 4; ++t) {
                const uint32_t c = (f[u] >> (t * bits)) & mask;
                d[t] = is_sign ? (c ? -s0[u] : s0[u]) : terse_quant_decode(c, s0[u], s1[u]);
            }
            cnt = (4u * T + 4u <= n) ? 4 : (int)(n - 4u * T);
            if (ADD) {
                float *acc = (float *)L.out + 4u * T;
                if (cnt == 4) {
                    const float4 y = make_float4(a[u].x + d[0], a[u].y + d[1], a[u].z + d[2],
                                                 a[u].w + d[3]);
                    if (CS) {
                        __stcs((float4 *)acc, y);
                    } else {
                        *(float4 *)acc = y;
                    }
                } else {
#pragma unroll
                    for (int t = 0; t < 4; ++t) {
                        if (t < cnt) {
                            acc[t] = acc[t] + d[t];
                        }
                    }
                }
            } else if (L.dtype == TERSE_FLOAT32) {
                float *o = (float *)L.out + 4u * T;
#pragma unroll
                for (int t = 0; t < 4; ++t) {
                    d[t] = d[t] * oscale;
                }
                if (cnt == 4) {
                    if (CS) {
                        __stcs((float4 *)o, make_float4(d[0], d[1], d[2], d[3]));
                    } else {
                        *(float4 *)o = make_float4(d[0], d[1], d[2], d[3]);
                    }
                } else {
#pragma unroll
                    for (int t = 0; t < 4; ++t) {
                        if (t < cnt) {
                            o[t] = d[t];
                        }
                    }
                }
            } else {
                uint16_t h[4];
                uint16_t *o = (uint16_t *)L.out + 4u * T;
#pragma unroll
                for (int t = 0; t < 4; ++t) {
                    const float y = d[t] * oscale;
                    h[t] = (L.dtype == TERSE_FLOAT16) ? terse_cu_float_to_half(y)
                                                      : terse_float_to_bf16(y);
                }
                if (cnt == 4) {
                    *(uint2 *)o = make_uint2((uint32_t)h[0] | ((uint32_t)h[1] << 16),
                                             (uint32_t)h[2] | ((uint32_t)h[3] << 16));
                } else {
#pragma unroll
                    for (int t = 0; t < 4; ++t) {
                        if (t < cnt) {
                            o[t] = h[t];
                        }
                    }
                }
            }
        }
    }
}

/* Block-contiguous tiles: a decode variant (q_variant & 16; non-ADD fp32 output only). The
 * grid-stride decoder above keeps each warp on 4 output rows a whole grid apart and fetches
 * codes and scales in 4- to 8-byte pieces per group; here a persistent block owns tiles of
 * Q_TV consecutive values at a time:
 *   (a) the tile's codes (Q_TV * bits / 8 bytes, a multiple of 16 for every bits) are copied
 *       to shared memory in aligned 16-byte loads; when the code section is not 16-byte
 *       aligned (it is 4-byte aligned) the copy starts up to 12 bytes early, inside the
 *       scales, and takes one more chunk, so a tile runs here only when that chunk still lies
 *       inside the code section (nothing past it is read). The tile's buckets' scales are
 *       loaded and checked once per bucket into shared memory;
 *   (b) thread t decodes groups t, t + 256, ... of 4 values from shared memory, so one warp
 *       store writes 512 contiguous bytes.
 * The values past the last such tile take the per-group path of q_decode_fast_kernel
 * (q_field, bounds-safe). Header states, error bits and every output value are those of
 * q_decode_fast_kernel<0, 1, U, 0>: the same fields and formulas. */
#define Q_TV  8192u                    /* values per tile: Q_TV / 4 / 256 groups per thread */
#define Q_TW  (Q_TV * 8u / 32u + 4u)   /* shared code words: 8 bits, plus the 16-byte pad */
#define Q_TNB (Q_TV / 32u)             /* buckets per tile at most (bucket >= 32) */

__global__ void __launch_bounds__(256)
q_decode_tile_kernel(q_dev_layer_t L, uint32_t bshift)
{
    __shared__ uint4 sh_code4[Q_TW / 4u];
    __shared__ float sh_s0[Q_TNB], sh_s1[Q_TNB];
    __shared__ uint8_t sh_bad[Q_TNB];
    __shared__ uint32_t sh_state;
    const uint32_t *sh_code = (const uint32_t *)sh_code4;
    const uint8_t *in     = L.in;
    const uint64_t n      = L.n, n4 = (n + 3) / 4;
    const uint32_t bits   = L.bits, mask = (1u << bits) - 1u;
    const int is_sign     = (L.family == TERSE_QUANT_FAMILY_SIGN);
    const uint64_t coff   = TERSE_QUANT_HDR_BYTES + L.nb * (is_sign ? 4u : 8u);
    const uint8_t *codes  = in + coff;
    const uint64_t cend   = L.bytes - coff;
    const uint32_t *sc32  = (const uint32_t *)(in + TERSE_QUANT_HDR_BYTES);
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const float oscale    = L.scale;
    uint32_t state;

    state = q_fast_header_state(L, &sh_state);
    if ((state == 1) || (n == 0)) {
        return;
    }
    if (state == 2) {
        for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
            terse_cu_store(L.out, (terse_dtype_t)L.dtype, i, TERSE_CU_NAN);
        }
        return;
    }

    /* state 0: size_ok holds, so cend = ceil(n * bits / 8) */
    const uint32_t a    = (uint32_t)((uintptr_t)codes & 15u); /* 0, 4, 8 or 12 */
    const uint4 *cb     = (const uint4 *)(codes - a);
    const uint64_t tb   = (uint64_t)(Q_TV / 8u) * bits;      /* code bytes of a tile */
    const uint32_t nch  = (uint32_t)(tb / 16u) + ((a != 0) ? 1u : 0u);
    const uint64_t pad  = (a != 0) ? 16u - a : 0u;          /* bytes read past a tile's end */
    const uint64_t ntc  = (cend >= pad) ? (cend - pad) / tb : 0;
    const uint64_t ntf  = (n / Q_TV < ntc) ? n / Q_TV : ntc; /* tiles taken here */
    const uint32_t nbt  = (bshift <= 13u) ? (Q_TV >> bshift) : 1u;

    for (uint64_t k = blockIdx.x; k < ntf; k += gridDim.x) {
        const uint64_t v0  = k * Q_TV;
        const uint64_t kb0 = v0 >> bshift;
        const uint4 *src   = cb + k * (tb / 16u);

        /* (a) chunks [k tb - a, (k + 1) tb + pad) of the code section, k < ntc: in bounds */
        for (uint32_t j = threadIdx.x; j < nch; j += 256u) {
            sh_code4[j] = __ldg(src + j);
        }
        for (uint32_t j = threadIdx.x; j < nbt; j += 256u) {
            float s0, s1;
            int bad;
            if (is_sign) {
                s0  = __uint_as_float(__ldg(sc32 + kb0 + j));
                s1  = 0.0f;
                bad = !((s0 - s0) == 0.0f) || !(s0 >= 0.0f);
            } else {
                s0  = __uint_as_float(__ldg(sc32 + 2 * (kb0 + j)));
                s1  = __uint_as_float(__ldg(sc32 + 2 * (kb0 + j) + 1));
                bad = !terse_quant_scales_ok(s0, s1, bits);
            }
            if (bad) {
                atomicOr(&L.stat->call, (uint32_t)TERSE_CU_ERR_PAYLOAD);
            }
            sh_s0[j]  = s0;
            sh_s1[j]  = s1;
            sh_bad[j] = (uint8_t)bad;
        }
        __syncthreads();
        /* (b) group g of the tile: code bits 4 g bits .. of the tile, at byte a of sh_code */
#pragma unroll
        for (uint32_t r = 0; r < Q_TV / 4u / 256u; ++r) {
            const uint32_t g    = threadIdx.x + 256u * r;
            const uint32_t bit0 = 4u * g * bits;
            const uint32_t wi   = (a >> 2) + (bit0 >> 5), s = bit0 & 31u;
            const uint32_t w0   = sh_code[wi];
            const uint32_t w1   = (s + 4u * bits > 32u) ? sh_code[wi + 1] : 0u;
            const uint32_t f    = __funnelshift_r(w0, w1, s);
            const uint32_t lb   = (uint32_t)(((v0 + 4u * g) >> bshift) - kb0);
            const float s0 = sh_s0[lb], s1 = sh_s1[lb];
            float d[4];
            if (sh_bad[lb]) {
                continue;
            }
#pragma unroll
            for (int t = 0; t < 4; ++t) {
                const uint32_t c = (f >> (t * bits)) & mask;
                d[t] = (is_sign ? (c ? -s0 : s0) : terse_quant_decode(c, s0, s1)) * oscale;
            }
            __stcs((float4 *)((float *)L.out + v0 + 4u * g), make_float4(d[0], d[1], d[2], d[3]));
        }
        __syncthreads(); /* the next tile overwrites shared memory */
    }

    /* the rest: groups from tile ntf on, one at a time as in q_decode_fast_kernel */
    for (uint64_t T = ntf * (Q_TV / 4u) + (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
         T < n4; T += stride) {
        const uint64_t k = (4u * T) >> bshift;
        const uint32_t f = q_field(codes, cend, T, bits);
        float s0, s1, d[4];
        int cnt, bad;
        float *o = (float *)L.out + 4u * T;
        if (is_sign) {
            s0  = __uint_as_float(__ldg(sc32 + k));
            s1  = 0.0f;
            bad = !((s0 - s0) == 0.0f) || !(s0 >= 0.0f);
        } else {
            s0  = __uint_as_float(__ldg(sc32 + 2 * k));
            s1  = __uint_as_float(__ldg(sc32 + 2 * k + 1));
            bad = !terse_quant_scales_ok(s0, s1, bits);
        }
        if (bad) {
            atomicOr(&L.stat->call, (uint32_t)TERSE_CU_ERR_PAYLOAD);
            continue;
        }
#pragma unroll
        for (int t = 0; t < 4; ++t) {
            const uint32_t c = (f >> (t * bits)) & mask;
            d[t] = (is_sign ? (c ? -s0 : s0) : terse_quant_decode(c, s0, s1)) * oscale;
        }
        cnt = (4u * T + 4u <= n) ? 4 : (int)(n - 4u * T);
        if (cnt == 4) {
            __stcs((float4 *)o, make_float4(d[0], d[1], d[2], d[3]));
        } else {
#pragma unroll
            for (int t = 0; t < 3; ++t) { /* unrolled: d stays in registers */
                if (t < cnt) {
                    o[t] = d[t];
                }
            }
        }
    }
}

/* ---------------------------------------------------------------- launch */
/* Resident blocks per SM the slot compress kernel is compiled for (its launch bounds): 2 keeps
 * every value in registers, 3 trades a few spills for more warps in flight. q_fast: the
 * streaming fast paths of one layer are taken where they apply (0: slot kernels only). */
static int q_min_blocks = 2;
static int q_fast       = 1;
static unsigned q_variant = 0;

extern "C" void
terse__cmp_quant_cuda_variant(unsigned variant)
{
    q_variant = variant;
}

extern "C" void
terse__cmp_quant_cuda_tune(int min_blocks)
{
    q_fast       = (min_blocks > 0);
    q_min_blocks = (min_blocks >= 3) ? 3 : 2;
}

static int
q_pow2_shift(uint32_t b)
{
    int s = 0;

    if ((b & (b - 1u)) != 0) {
        return -1;
    }
    while ((1u << s) < b) {
        ++s;
    }
    return s;
}

/* Blocks of 256 threads that fill the GPU once with `kernel`: grid-stride kernels run one
 * even wave (terse__cuda_fill_grid). */
static unsigned
q_grid(const void *kernel, uint64_t want)
{
    return terse__cuda_fill_grid(kernel, Q_WARPS * 32, want);
}

/* The fast paths of one layer (see "streaming fast paths"); returns 1 when one ran. */
static int
q_launch_fast(q_dev_layer_t L, terse_cu_qmode_t mode, cudaStream_t s)
{
    const int is_sign = (L.family == TERSE_QUANT_FAMILY_SIGN);
    const size_t sb   = is_sign ? 4 : 8;
    const size_t want = terse_quant_payload_bytes(L.n, L.bits, L.bucket, sb);
    const uint64_t nfull = L.n / L.bucket;

    L.nb      = (L.n + L.bucket - 1) / L.bucket;
    L.size_ok = (want != 0) && (L.bytes == want);
    if (mode == TERSE_CU_Q_COMPRESS) {
        unsigned grid;
        if (((L.bucket != 256) && (L.bucket != 512) && (L.bucket != 1024)) || (nfull == 0) ||
            (((uintptr_t)L.out & 3u) != 0) ||
            (!is_sign && (!L.vec || ((L.rng.offset & 7u) != 0)))) {
            return 0;
        }
        void (*k)(q_dev_layer_t, uint64_t);
        if (is_sign) {
            k = (L.bucket == 256) ? q_sign_fast_kernel<8, 4>
                : (L.bucket == 512) ? q_sign_fast_kernel<16, 4> : q_sign_fast_kernel<32, 2>;
        } else {
            k = (L.bucket == 256) ? q_quant_fast_kernel<2, 4>
                : (L.bucket == 512) ? ((q_variant & 4u) ? q_quant_fast_kernel<4, 4>
                                                        : q_quant_fast_kernel<4, 3>)
                                    : q_quant_fast_kernel<8, 2>;
        }
        grid = q_grid((const void *)k, (nfull + Q_WARPS - 1) / Q_WARPS);
        k<<<grid, Q_WARPS * 32, 0, s>>>(L, nfull);
        TERSE_CUDA_LAUNCHED("quant fast compress kernel");
        if (L.n % L.bucket != 0) {
            /* the partial last bucket: one slot of the slot kernel, whose bucket index is
             * slot - first (mod 2^64), so first = -nfull makes slot 0 bucket nfull; scalar
             * accesses only (vec 0: no vector access can reach past the end of a buffer) */
            q_dev_layer_t Lp = L;
            Lp.first = (uint64_t)0 - nfull;
            Lp.vec   = 0;
            if (L.bucket == 256) {
                q_compress_kernel<1, 2><<<1, Q_WARPS * 32, 0, s>>>(Lp, NULL, 1, 1, 0, 0, NULL);
            } else if (L.bucket == 512) {
                q_compress_kernel<2, 2><<<1, Q_WARPS * 32, 0, s>>>(Lp, NULL, 1, 1, 0, 0, NULL);
            } else {
                q_compress_kernel<4, 2><<<1, Q_WARPS * 32, 0, s>>>(Lp, NULL, 1, 1, 0, 0, NULL);
            }
            TERSE_CUDA_LAUNCHED("quant compress kernel");
        }
        return 1;
    } else if (mode == TERSE_CU_Q_DECOMPRESS_SET) {
        return 0; /* tables only: the slot kernel */
    } else {
        const int sh = q_pow2_shift(L.bucket);
        const uint64_t n4 = (L.n + 3) / 4;
        const int big_u = (mode != TERSE_CU_Q_DECOMPRESS_ADD) && (q_variant & 8u);
        const uint64_t per_block = 256u * (big_u ? 16u : 4u);
        uint64_t g = (n4 + per_block - 1) / per_block;
        if ((sh < 0) || !L.vec || (((uintptr_t)L.in & 3u) != 0)) {
            return 0;
        }
        void (*k)(q_dev_layer_t, uint32_t);
        unsigned grid;
        if ((mode != TERSE_CU_Q_DECOMPRESS_ADD) && (q_variant & 16u) &&
            (L.dtype == TERSE_FLOAT32) && (L.bits >= 1) && (L.bits <= 8) && (L.bucket >= 32)) {
            /* the bounds its shared memory is sized for (the format's own limits) */
            k = q_decode_tile_kernel;
            g = (L.n + Q_TV - 1) / Q_TV; /* one tile per block; the tail needs a block too */
        } else if (mode == TERSE_CU_Q_DECOMPRESS_ADD) {
            k = (q_variant & 1u) ? q_decode_fast_kernel<1, 0, 4, 0>
                                 : q_decode_fast_kernel<1, 1, 4, 0>;
        } else if (big_u) {
            k = q_decode_fast_kernel<0, 1, 16, 0>;
        } else if (q_variant & 2u) {
            k = q_decode_fast_kernel<0, 1, 4, 1>;
        } else {
            k = (q_variant & 1u) ? q_decode_fast_kernel<0, 0, 4, 0>
                                 : q_decode_fast_kernel<0, 1, 4, 0>;
        }
        grid = q_grid((const void *)k, g);
        k<<<grid, 256, 0, s>>>(L, (uint32_t)sh);
        TERSE_CUDA_LAUNCHED("quant fast decode kernel");
        return 1;
    }
}

static terse_status_t
q_launch(const q_dev_layer_t *one, const q_dev_layer_t *tab, uint32_t ntab, uint64_t nslots,
         uint32_t maxbucket, terse_cu_qmode_t mode, uint32_t step, int set_step,
         const uint8_t *user, cudaStream_t s)
{
    unsigned grid = terse_cu_blocks(nslots, Q_WARPS);
    q_dev_layer_t dummy;

    if (one == NULL) {
        memset(&dummy, 0, sizeof(dummy));
        one = &dummy;
    }
    if ((tab == NULL) && q_fast && q_launch_fast(*one, mode, s)) {
        /* done */
    } else if (mode == TERSE_CU_Q_COMPRESS) {
#define Q_LAUNCH(_ns, _mb)                                                                     \
    q_compress_kernel<_ns, _mb><<<grid, Q_WARPS * 32, 0, s>>>(*one, tab, ntab, nslots, step,   \
                                                              set_step, user)
        const int mb = q_min_blocks;
        if (maxbucket <= 256) {
            if (mb >= 3) { Q_LAUNCH(1, 3); } else { Q_LAUNCH(1, 2); }
        } else if (maxbucket <= 512) {
            if (mb >= 3) { Q_LAUNCH(2, 3); } else { Q_LAUNCH(2, 2); }
        } else {
            if (mb >= 3) { Q_LAUNCH(4, 3); } else { Q_LAUNCH(4, 2); }
        }
#undef Q_LAUNCH
        TERSE_CUDA_LAUNCHED("quant kernel");
    } else {
        const int add = (mode == TERSE_CU_Q_DECOMPRESS_ADD) ? 1
                        : (mode == TERSE_CU_Q_DECOMPRESS_SET) ? 2 : 0;
        q_decode_kernel<<<grid, Q_WARPS * 32, 0, s>>>(*one, tab, ntab, nslots, add, user);
        TERSE_CUDA_LAUNCHED("quant kernel");
    }
    q_fixup_kernel<<<dim3(Q_FIX_BLOCKS, (tab != NULL) ? ntab : 1), 256, 0, s>>>(*one, tab,
                                                                               (int)mode, user);
    TERSE_CUDA_LAUNCHED("quant fixup kernel");
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_quant_cuda_create(unsigned family, unsigned bits, size_t bucket, void **cuda_p)
{
    q_cuda_t *q;
    terse_status_t status;

    if (((family == TERSE_QUANT_FAMILY_QUANT) &&
         ((bits < TERSE_QUANT_MIN_BITS) || (bits > TERSE_QUANT_MAX_BITS))) ||
        ((family == TERSE_QUANT_FAMILY_SIGN) && (bits != 1)) ||
        ((family != TERSE_QUANT_FAMILY_QUANT) && (family != TERSE_QUANT_FAMILY_SIGN)) ||
        (bucket == 0) || ((bucket % 32) != 0) || (bucket > UINT32_MAX)) {
        terse_error(TERSE_LOG_CMP, "quant cuda: bad family %u bits %u bucket %zu", family, bits,
                    bucket);
        return TERSE_ERR_INVALID;
    }
    q = (q_cuda_t *)calloc(1, sizeof(*q));
    if (q == NULL) {
        terse_error(TERSE_LOG_CMP, "failed to allocate quant cuda state");
        return TERSE_ERR_NOMEM;
    }
    q->family = family;
    q->bits   = bits;
    q->bucket = (uint32_t)bucket;
    TERSE_CHECK_GOTO(terse__cuda_stat_create(&q->stat), status, err_free_q);
    *cuda_p = q;
    return TERSE_OK;

err_free_q:
    free(q);
    return status;
}

extern "C" void
terse__cmp_quant_cuda_destroy(void *cuda)
{
    q_cuda_t *q = (q_cuda_t *)cuda;

    if (q != NULL) {
        terse__cuda_free(q->stat);
        free(q);
    }
}

static void
q_layer_init(const q_cuda_t *q, q_dev_layer_t *L)
{
    memset(L, 0, sizeof(*L));
    L->stat   = q->stat;
    L->bucket = q->bucket;
    L->bits   = q->bits;
    L->family = q->family;
    L->scale  = 1.0f;
}

extern "C" terse_status_t
terse__cmp_quant_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype, size_t n,
                               float *residual, const terse_rng_t *rng, void *out,
                               size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                               terse_stream_t stream)
{
    const q_cuda_t *q = (const q_cuda_t *)cuda;
    q_dev_layer_t L;

    if ((q == NULL) || (rng == NULL) || (out == NULL) || ((n > 0) && (in == NULL)) ||
        (dtype >= TERSE_FLOAT64) ||
        (out_bytes != terse_quant_payload_bytes(n, q->bits, q->bucket, q_scale_bytes(q->family)))) {
        terse_error(TERSE_LOG_CMP, "quant cuda: bad compress arguments (count %zu, %zu bytes)",
                    n, out_bytes);
        return TERSE_ERR_INVALID;
    }
    q_layer_init(q, &L);
    L.in       = (const uint8_t *)in;
    L.residual = residual;
    L.out      = (uint8_t *)out;
    L.n        = n;
    L.bytes    = out_bytes;
    L.rng      = *rng;
    L.dtype    = (int)dtype;
    L.vec      = q_aligned(in) && q_aligned(residual);
    if (flags_p != NULL) {
        *flags_p = 0;
    }
    if (sq_err_p != NULL) {
        *sq_err_p = 0.0;
    }
    return q_launch(&L, NULL, 1, q_nslots(n, q->bucket), q->bucket, TERSE_CU_Q_COMPRESS, 0, 0,
                    NULL, (cudaStream_t)stream);
}

static terse_status_t
q_decode(const q_cuda_t *q, const void *in, size_t in_bytes, float scale, void *out,
         terse_dtype_t dtype, size_t n, terse_cu_qmode_t mode, cudaStream_t s)
{
    q_dev_layer_t L;
    terse_status_t status;

    if ((q == NULL) || (out == NULL) || (dtype >= TERSE_FLOAT64)) {
        terse_error(TERSE_LOG_CMP, "quant cuda: bad decompress arguments");
        return TERSE_ERR_INVALID;
    }
    q_layer_init(q, &L);
    L.in    = (const uint8_t *)in;
    L.out   = (uint8_t *)out;
    L.n     = n;
    L.bytes = in_bytes;
    L.dtype = (int)dtype;
    L.scale = scale;
    L.vec   = q_aligned(out);
    if (in == NULL) {
        L.bytes = 0; /* rejected in the kernel without a read */
    }
    TERSE_CHECK(q_launch(&L, NULL, 1, q_nslots(n, q->bucket), q->bucket, mode, 0, 0, NULL, s));
    status = TERSE_OK;
    if ((in == NULL) ||
        (in_bytes != terse_quant_payload_bytes(n, q->bits, q->bucket, q_scale_bytes(q->family)))) {
        status = TERSE_ERR_PAYLOAD; /* known on the host: say so now too */
    }
    return status;
}

extern "C" terse_status_t
terse__cmp_quant_cuda_decompress(void *cuda, const void *in, size_t in_bytes, float scale,
                                 void *out, terse_dtype_t dtype, size_t n, terse_stream_t stream)
{
    return q_decode((const q_cuda_t *)cuda, in, in_bytes, scale, out, dtype, n,
                    TERSE_CU_Q_DECOMPRESS, (cudaStream_t)stream);
}

extern "C" terse_status_t
terse__cmp_quant_cuda_decompress_add(void *cuda, const void *in, size_t in_bytes, float *acc,
                                     size_t n, uint32_t *flags_p, terse_stream_t stream)
{
    if (flags_p != NULL) {
        *flags_p = 0;
    }
    return q_decode((const q_cuda_t *)cuda, in, in_bytes, 1.0f, acc, TERSE_FLOAT32, n,
                    TERSE_CU_Q_DECOMPRESS_ADD, (cudaStream_t)stream);
}

extern "C" terse_status_t
terse__cmp_quant_cuda_stat(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                           double *sq_err_p)
{
    const q_cuda_t *q = (const q_cuda_t *)cuda;

    return terse__cuda_stat_read(q->stat, stream, flags_p, sq_err_p);
}

/* ---------------------------------------------------------------- multi-tensor tables */
extern "C" terse_status_t
terse__cmp_quant_cuda_table_create(const terse_cu_qlayer_t *layers, size_t nlayers,
                                   terse_cu_qmode_t mode, void **table_p)
{
    q_table_t *t;
    q_dev_layer_t *h;
    uint64_t slot = 0;
    uint32_t maxbucket = 0;
    terse_status_t status;
    size_t i;

    if ((nlayers == 0) || (nlayers > 65535) || (layers == NULL)) {
        terse_error(TERSE_LOG_CMP, "quant cuda: a table holds 1..65535 layers, not %zu", nlayers);
        return TERSE_ERR_INVALID;
    }
    h = (q_dev_layer_t *)calloc(nlayers, sizeof(*h));
    t = (q_table_t *)calloc(1, sizeof(*t));
    if ((h == NULL) || (t == NULL)) {
        terse_error(TERSE_LOG_CMP, "failed to allocate a quant cuda table");
        status = TERSE_ERR_NOMEM;
        goto err_free_host;
    }
    for (i = 0; i < nlayers; ++i) {
        const q_cuda_t *q = (const q_cuda_t *)layers[i].cuda;
        size_t want;
        if (q == NULL) {
            status = TERSE_ERR_INVALID;
            goto err_free_host;
        }
        want = terse_quant_payload_bytes(layers[i].n, q->bits, q->bucket,
                                         q_scale_bytes(q->family));
        if ((mode == TERSE_CU_Q_COMPRESS) && (layers[i].bytes != want)) {
            terse_error(TERSE_LOG_CMP, "quant cuda: layer %zu payload %llu bytes, expected %zu", i,
                        (unsigned long long)layers[i].bytes, want);
            status = TERSE_ERR_INVALID;
            goto err_free_host;
        }
        if ((layers[i].user & ~(uint32_t)(TERSE_CU_QUSER_IN | TERSE_CU_QUSER_OUT)) != 0) {
            terse_error(TERSE_LOG_CMP, "quant cuda: layer %zu has unknown user flags %#x", i,
                        (unsigned)layers[i].user);
            status = TERSE_ERR_INVALID;
            goto err_free_host;
        }
        q_layer_init(q, &h[i]);
        h[i].user     = layers[i].user;
        h[i].in       = (const uint8_t *)layers[i].in;
        h[i].residual = layers[i].residual;
        h[i].out      = (uint8_t *)layers[i].out;
        h[i].n        = layers[i].n;
        h[i].bytes    = layers[i].bytes;
        h[i].rng      = layers[i].rng;
        h[i].dtype    = (int)layers[i].dtype;
        h[i].scale    = layers[i].scale;
        h[i].first    = slot;
        h[i].vec      = (mode == TERSE_CU_Q_COMPRESS)
                            ? (q_aligned(layers[i].in) && q_aligned(layers[i].residual))
                            : q_aligned(layers[i].out);
        slot += q_nslots(layers[i].n, q->bucket);
        maxbucket = (q->bucket > maxbucket) ? q->bucket : maxbucket;
    }
    if (terse__cuda_ptr_twice(&layers[0].cuda, nlayers, sizeof(layers[0]))) {
        /* its status block would be committed by one entry's fixup while another's still
         * reads the call's flags (a rejected payload's NaN, a non-finite input's reset) */
        terse_error(TERSE_LOG_CMP, "quant cuda: an instance appears twice in one table");
        status = TERSE_ERR_INVALID;
        goto err_free_host;
    }
    TERSE_CHECK_GOTO(terse__cuda_table_upload((void **)&t->dev, h, nlayers * sizeof(*h)), status,
                     err_free_host);
    t->nlayers = nlayers;
    t->nslots  = slot;
    t->mode    = mode;
    t->maxbucket = maxbucket;
    free(h);
    *table_p = t;
    return TERSE_OK;

err_free_host:
    free(h);
    free(t);
    return status;
}

extern "C" void
terse__cmp_quant_cuda_table_destroy(void *table)
{
    terse__cuda_table_free(table);
}

extern "C" terse_status_t
terse__cmp_quant_cuda_table_run(void *table, uint32_t step, terse_stream_t stream)
{
    return terse__cmp_quant_cuda_table_run_at(table, step, NULL, stream);
}

extern "C" terse_status_t
terse__cmp_quant_cuda_table_run_at(void *table, uint32_t step, const void *user,
                                   terse_stream_t stream)
{
    q_table_t *t = (q_table_t *)table;

    return q_launch(NULL, t->dev, (uint32_t)t->nlayers, t->nslots, t->maxbucket, t->mode, step, 1,
                    (const uint8_t *)user, (cudaStream_t)stream);
}

/* ---------------------------------------------------------------- sign */
extern "C" terse_status_t
terse__cmp_sign_cuda_create(size_t bucket, void **cuda_p)
{
    return terse__cmp_quant_cuda_create(TERSE_QUANT_FAMILY_SIGN, 1, bucket, cuda_p);
}

extern "C" void
terse__cmp_sign_cuda_destroy(void *cuda)
{
    terse__cmp_quant_cuda_destroy(cuda);
}

extern "C" terse_status_t
terse__cmp_sign_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype, size_t n,
                              float *residual, const terse_rng_t *rng, void *out,
                              size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                              terse_stream_t stream)
{
    return terse__cmp_quant_cuda_compress(cuda, in, dtype, n, residual, rng, out, out_bytes,
                                          flags_p, sq_err_p, stream);
}

extern "C" terse_status_t
terse__cmp_sign_cuda_decompress(void *cuda, const void *in, size_t in_bytes, float scale,
                                void *out, terse_dtype_t dtype, size_t n, terse_stream_t stream)
{
    return terse__cmp_quant_cuda_decompress(cuda, in, in_bytes, scale, out, dtype, n, stream);
}

extern "C" terse_status_t
terse__cmp_sign_cuda_decompress_add(void *cuda, const void *in, size_t in_bytes, float *acc,
                                    size_t n, uint32_t *flags_p, terse_stream_t stream)
{
    return terse__cmp_quant_cuda_decompress_add(cuda, in, in_bytes, acc, n, flags_p, stream);
}

extern "C" terse_status_t
terse__cmp_sign_cuda_stat(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                          double *sq_err_p)
{
    return terse__cmp_quant_cuda_stat(cuda, stream, flags_p, sq_err_p);
}
