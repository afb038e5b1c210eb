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
} q_dev_layer_t;

typedef struct q_table {
    q_dev_layer_t   *dev;
    size_t           nlayers;
    uint64_t         nslots;
    terse_cu_qmode_t mode;
} q_table_t;

static size_t
q_scale_bytes(unsigned family)
{
    return (family == TERSE_QUANT_FAMILY_SIGN) ? 4 : 8;
}

static uint64_t
q_nslots(uint64_t n, uint32_t bucket)
{
    uint64_t nb = (n + bucket - 1) / bucket;
    return (nb > 0) ? nb : 1;
}

__device__ __forceinline__ const q_dev_layer_t *
q_find(const q_dev_layer_t *tab, uint32_t ntab, uint64_t slot)
{
    uint32_t lo = 0, hi = ntab - 1;

    while (lo < hi) {
        uint32_t mid = (lo + hi + 1) >> 1;
        if (tab[mid].first <= slot) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return &tab[lo];
}

__device__ __forceinline__ float
q_v(const q_dev_layer_t &L, uint64_t i)
{
    float x = terse_cu_load(L.in, (terse_dtype_t)L.dtype, i);

    if (L.residual != NULL) {
        x = x + L.residual[i];
    }
    return x;
}

/* Packs the 32 codes of sh (one per lane, already written) into 4 * bits bytes; byte t goes to
 * dst[t] when t < limit. */
__device__ __forceinline__ void
q_pack32(const uint8_t *sh, unsigned bits, int lane, uint8_t *dst, uint64_t limit)
{
    if ((unsigned)lane < 4u * bits && (uint64_t)lane < limit) {
        unsigned b0 = 8u * (unsigned)lane;
        unsigned e0 = b0 / bits, e1 = (b0 + 7u) / bits, e;
        uint32_t w  = 0;

        if (e1 > 31u) {
            e1 = 31u;
        }
        for (e = e0; e <= e1; ++e) {
            w |= (uint32_t)sh[e] << ((e - e0) * bits);
        }
        dst[lane] = (uint8_t)(w >> (b0 - e0 * bits));
    }
}

__device__ __forceinline__ void
q_write_header(uint8_t *out, const q_dev_layer_t &L)
{
    terse_cu_st_u32(out, TERSE_QUANT_MAGIC);
    out[4] = (uint8_t)TERSE_QUANT_VERSION;
    out[5] = (uint8_t)L.family;
    out[6] = (uint8_t)L.bits;
    out[7] = 0;
    terse_cu_st_u32(out + 8, L.bucket);
    terse_cu_st_u32(out + 12, 0);
    terse_cu_st_u32(out + 16, (uint32_t)L.n);
    terse_cu_st_u32(out + 20, (uint32_t)(L.n >> 32));
}

typedef struct q_group {
    uint64_t start;
    uint32_t m;
    unsigned bits;
    int      is_sign;
    float    qlo, unit, inv, Lf, scale;
    uint8_t *codes;
    uint64_t stream_bytes;
} q_group_t;

/* Rounds, writes the residual and packs group j (32 values) of a bucket. */
__device__ __forceinline__ void
q_round_group(const q_dev_layer_t &L, const q_group_t &g, uint32_t j, int lane, float x,
              uint8_t *sh, double *err)
{
    uint32_t e = 32u * j + lane, code = 0;
    uint64_t done = 4ull * g.bits * j;

    if (e < g.m) {
        float d;
        if (g.is_sign) {
            code = (x < 0.0f) ? 1u : 0u;
            d    = code ? -g.scale : g.scale;
        } else {
            float u = terse_quant_uniform(&L.rng, L.rng.offset + g.start + e);
            code    = terse_quant_code(x, g.qlo, g.inv, u, g.Lf);
            d       = terse_quant_decode(code, g.qlo, g.unit);
        }
        if (L.residual != NULL) {
            L.residual[g.start + e] = x - d;
        }
        {
            double de = (double)x - (double)d;
            *err      = *err + de * de;
        }
    }
    sh[lane] = (uint8_t)code;
    __syncwarp();
    q_pack32(sh, g.bits, lane, g.codes + done, (g.stream_bytes > done) ? g.stream_bytes - done : 0);
    __syncwarp();
}

/* One bucket of compress; returns the lanes' squared error. */
template <int NR>
__device__ __forceinline__ double
q_compress_bucket(const q_dev_layer_t &L, uint64_t k, int lane, uint8_t *sh)
{
    const unsigned bits = L.bits;
    const int is_sign   = (L.family == TERSE_QUANT_FAMILY_SIGN);
    const uint64_t n = L.n, start = k * L.bucket;
    const uint64_t nb = (n + L.bucket - 1) / L.bucket;
    uint8_t *codes;
    uint32_t m, ng, j;
    float v[NR > 0 ? NR : 1];
    float lo = __int_as_float(0x7f800000), hi = -lo, probe = 0.0f, s = 0.0f;
    float qlo = 0.0f, unit = 0.0f, inv = 0.0f, scale = 0.0f;
    const float Lf = (float)((1u << bits) - 1u);
    double err = 0.0;

    if ((k == 0) && (lane == 0)) {
        q_write_header(L.out, L);
    }
    if (n == 0) {
        return 0.0;
    }
    m     = (uint32_t)min((uint64_t)L.bucket, n - start);
    ng    = (m + 31u) >> 5;
    codes = L.out + TERSE_QUANT_HDR_BYTES + nb * (is_sign ? 4u : 8u) +
            k * (uint64_t)L.bucket * bits / 8u;

    /* pass 1 */
#pragma unroll
    for (int jj = 0; jj < NR; ++jj) {
        if ((uint32_t)jj < ng) {
            uint32_t e = 32u * jj + lane;
            float x    = 0.0f;
            if (e < m) {
                x     = q_v(L, start + e);
                lo    = (x < lo) ? x : lo;
                hi    = (x > hi) ? x : hi;
                probe = probe + x * 0.0f;
                s     = s + fabsf(x);
            }
            v[jj] = x;
        }
    }
    for (j = NR; j < ng; ++j) {
        uint32_t e = 32u * j + lane;
        if (e < m) {
            float x = q_v(L, start + e);
            lo      = (x < lo) ? x : lo;
            hi      = (x > hi) ? x : hi;
            probe   = probe + x * 0.0f;
            s       = s + fabsf(x);
        }
    }
    if (is_sign) {
#pragma unroll
        for (int w = 16; w > 0; w >>= 1) {
            s = s + __shfl_down_sync(0xffffffffu, s, w);
        }
        s     = __shfl_sync(0xffffffffu, s, 0);
        scale = s / (float)m;
        if ((scale - scale) != 0.0f) {
            if (lane == 0) {
                atomicOr(&L.stat->call, (uint32_t)TERSE_CMP_NONFINITE);
            }
            return 0.0;
        }
        if (lane == 0) {
            uint8_t *sc = L.out + TERSE_QUANT_HDR_BYTES + k * 4u;
            terse_cu_st_u32(sc, __float_as_uint(scale));
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
        if ((probe != 0.0f) || !terse_quant_bucket_params(lo, hi, bits, &qlo, &unit, &inv)) {
            if (lane == 0) {
                atomicOr(&L.stat->call, (uint32_t)TERSE_CMP_NONFINITE);
            }
            return 0.0;
        }
        if (lane == 0) {
            uint8_t *sc = L.out + TERSE_QUANT_HDR_BYTES + k * 8u;
            terse_cu_st_u32(sc, __float_as_uint(qlo));
            terse_cu_st_u32(sc + 4, __float_as_uint(unit));
        }
    }

    /* pass 2 */
    {
        const uint64_t stream_bytes = ((uint64_t)m * bits + 7u) / 8u;
        q_group_t g;
        g.start = start;
        g.m = m;
        g.bits = bits;
        g.is_sign = is_sign;
        g.qlo = qlo;
        g.unit = unit;
        g.inv = inv;
        g.Lf = Lf;
        g.scale = scale;
        g.codes = codes;
        g.stream_bytes = stream_bytes;
#pragma unroll
        for (int jj = 0; jj < NR; ++jj) {
            if ((uint32_t)jj < ng) {
                q_round_group(L, g, jj, lane, v[jj], sh, &err);
            }
        }
        for (j = NR; j < ng; ++j) {
            uint32_t e = 32u * j + lane;
            q_round_group(L, g, j, lane, (e < m) ? q_v(L, start + e) : 0.0f, sh, &err);
        }
    }
    return err;
}

template <int NR>
__global__ void __launch_bounds__(Q_WARPS * 32)
q_compress_kernel(q_dev_layer_t one, const q_dev_layer_t *tab, uint32_t ntab, uint64_t nslots,
                  uint32_t step, int set_step)
{
    __shared__ uint8_t sh_code[Q_WARPS][32];
    __shared__ double sh_err[Q_WARPS];
    __shared__ terse_cu_stat_t *sh_stat[Q_WARPS];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint64_t slot = (uint64_t)blockIdx.x * Q_WARPS + warp;
    double err = 0.0;
    terse_cu_stat_t *st = NULL;

    if (slot < nslots) {
        q_dev_layer_t L = (tab != NULL) ? *q_find(tab, ntab, slot) : one;
        if (set_step) {
            L.rng.hi[0] = step;
        }
        st  = L.stat;
        err = q_compress_bucket<NR>(L, slot - L.first, lane, sh_code[warp]);
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

/* Decodes (add = 0: out = scale * D, of dtype; add = 1: acc += D) one bucket. */
__device__ __forceinline__ void
q_decode_bucket(const q_dev_layer_t &L, uint64_t k, int lane, int add)
{
    const unsigned bits = L.bits;
    const int is_sign   = (L.family == TERSE_QUANT_FAMILY_SIGN);
    const uint64_t n = L.n, start = k * L.bucket;
    const uint64_t nb = (n + L.bucket - 1) / L.bucket;
    const size_t sb   = is_sign ? 4u : 8u;
    const uint8_t *in = L.in;
    uint32_t m, e, flags;
    float qlo = 0.0f, unit = 0.0f, scale = 0.0f;
    const uint8_t *codes;
    int bad = 0;

    /* the size (no read before it is known), then every header field */
    {
        uint64_t full = n / L.bucket, rest = n - full * L.bucket;
        uint64_t want = TERSE_QUANT_HDR_BYTES + nb * sb + full * ((uint64_t)L.bucket * bits / 8u) +
                        (rest * bits + 7u) / 8u;
        if (L.bytes != want) {
            bad = 1;
        }
    }
    if (!bad) {
        bad = (terse_cu_ld_u32(in) != TERSE_QUANT_MAGIC) || (in[4] != TERSE_QUANT_VERSION) ||
              (in[5] != L.family) || (in[6] != bits) || (terse_cu_ld_u32(in + 8) != L.bucket) ||
              (terse_cu_ld_u32(in + 12) != 0) || (terse_cu_ld_u64(in + 16) != n) ||
              ((in[7] & ~(uint32_t)TERSE_CMP_NONFINITE) != 0);
    }
    if (bad) {
        if (lane == 0) {
            atomicOr(&L.stat->call, (uint32_t)TERSE_CU_ERR_PAYLOAD);
        }
        return;
    }
    if (n == 0) {
        return;
    }
    flags = in[7];
    m     = (uint32_t)min((uint64_t)L.bucket, n - start);
    if (flags & TERSE_CMP_NONFINITE) {
        if ((k == 0) && (lane == 0)) {
            atomicOr(&L.stat->call, (uint32_t)TERSE_CMP_NONFINITE);
        }
        for (e = lane; e < m; e += 32) {
            if (add) {
                ((float *)L.out)[start + e] = TERSE_CU_NAN;
            } else {
                terse_cu_store(L.out, (terse_dtype_t)L.dtype, start + e, TERSE_CU_NAN);
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
            atomicOr(&L.stat->call, (uint32_t)TERSE_CU_ERR_PAYLOAD);
        }
        return;
    }
    codes = in + TERSE_QUANT_HDR_BYTES + nb * sb + k * (uint64_t)L.bucket * bits / 8u;
    for (e = lane; e < m; e += 32) {
        uint32_t bit0 = e * bits, code;
        uint32_t w    = codes[bit0 >> 3];
        float d;
        if (((bit0 & 7u) + bits) > 8u) {
            w |= (uint32_t)codes[(bit0 >> 3) + 1] << 8;
        }
        code = (w >> (bit0 & 7u)) & ((1u << bits) - 1u);
        if (is_sign) {
            d = code ? -scale : scale;
        } else {
            d = terse_quant_decode(code, qlo, unit);
        }
        if (add) {
            float *acc     = (float *)L.out;
            acc[start + e] = acc[start + e] + d;
        } else {
            terse_cu_store(L.out, (terse_dtype_t)L.dtype, start + e, d * L.scale);
        }
    }
}

__global__ void __launch_bounds__(Q_WARPS * 32)
q_decode_kernel(q_dev_layer_t one, const q_dev_layer_t *tab, uint32_t ntab, uint64_t nslots,
                int add)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint64_t slot = (uint64_t)blockIdx.x * Q_WARPS + warp;

    if (slot < nslots) {
        const q_dev_layer_t &L = (tab != NULL) ? *q_find(tab, ntab, slot) : one;
        q_decode_bucket(L, slot - L.first, lane, add);
    }
}

/* grid (Q_FIX_BLOCKS, nlayers). */
__global__ void
q_fixup_kernel(q_dev_layer_t one, const q_dev_layer_t *tab, int mode)
{
    const q_dev_layer_t &L = (tab != NULL) ? tab[blockIdx.y] : one;
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

/* ---------------------------------------------------------------- launch */
static terse_status_t
q_launch(const q_dev_layer_t *one, const q_dev_layer_t *tab, uint32_t ntab, uint64_t nslots,
         uint32_t maxbucket, terse_cu_qmode_t mode, uint32_t step, int set_step, cudaStream_t s)
{
    unsigned grid = terse_cu_blocks(nslots, Q_WARPS);
    q_dev_layer_t dummy;

    if (one == NULL) {
        memset(&dummy, 0, sizeof(dummy));
        one = &dummy;
    }
    if (mode == TERSE_CU_Q_COMPRESS) {
        if (maxbucket <= 256) {
            q_compress_kernel<8><<<grid, Q_WARPS * 32, 0, s>>>(*one, tab, ntab, nslots, step,
                                                               set_step);
        } else {
            q_compress_kernel<32><<<grid, Q_WARPS * 32, 0, s>>>(*one, tab, ntab, nslots, step,
                                                                set_step);
        }
    } else {
        q_decode_kernel<<<grid, Q_WARPS * 32, 0, s>>>(*one, tab, ntab, nslots,
                                                      mode == TERSE_CU_Q_DECOMPRESS_ADD);
    }
    TERSE_CUDA_LAUNCHED("quant kernel");
    q_fixup_kernel<<<dim3(Q_FIX_BLOCKS, (tab != NULL) ? ntab : 1), 256, 0, s>>>(*one, tab,
                                                                               (int)mode);
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
    if (flags_p != NULL) {
        *flags_p = 0;
    }
    if (sq_err_p != NULL) {
        *sq_err_p = 0.0;
    }
    return q_launch(&L, NULL, 1, q_nslots(n, q->bucket), q->bucket, TERSE_CU_Q_COMPRESS, 0, 0,
                    (cudaStream_t)stream);
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
    if (in == NULL) {
        L.bytes = 0; /* rejected in the kernel without a read */
    }
    TERSE_CHECK(q_launch(&L, NULL, 1, q_nslots(n, q->bucket), q->bucket, mode, 0, 0, s));
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
        q_layer_init(q, &h[i]);
        h[i].in       = (const uint8_t *)layers[i].in;
        h[i].residual = layers[i].residual;
        h[i].out      = (uint8_t *)layers[i].out;
        h[i].n        = layers[i].n;
        h[i].bytes    = layers[i].bytes;
        h[i].rng      = layers[i].rng;
        h[i].dtype    = (int)layers[i].dtype;
        h[i].scale    = layers[i].scale;
        h[i].first    = slot;
        slot += q_nslots(layers[i].n, q->bucket);
        maxbucket = (q->bucket > maxbucket) ? q->bucket : maxbucket;
    }
    TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&t->dev, nlayers * sizeof(*h)), status,
                     err_free_host);
    TERSE_CHECK_GOTO(terse__cuda_memcpy(t->dev, h, nlayers * sizeof(*h)), status, err_free_dev);
    t->nlayers = nlayers;
    t->nslots  = slot;
    t->mode    = mode;
    /* the register variant is chosen from the largest bucket (kept in the high bits) */
    t->nslots |= (uint64_t)(maxbucket > 256) << 63;
    free(h);
    *table_p = t;
    return TERSE_OK;

err_free_dev:
    terse__cuda_free(t->dev);
err_free_host:
    free(h);
    free(t);
    return status;
}

extern "C" void
terse__cmp_quant_cuda_table_destroy(void *table)
{
    q_table_t *t = (q_table_t *)table;

    if (t != NULL) {
        terse__cuda_free(t->dev);
        free(t);
    }
}

extern "C" terse_status_t
terse__cmp_quant_cuda_table_run(void *table, uint32_t step, terse_stream_t stream)
{
    q_table_t *t      = (q_table_t *)table;
    uint64_t nslots   = t->nslots & ~(1ull << 63);
    uint32_t maxbucket = (t->nslots >> 63) ? 1024u : 256u;

    return q_launch(NULL, t->dev, (uint32_t)t->nlayers, nslots, maxbucket, t->mode, step, 1,
                    (cudaStream_t)stream);
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
