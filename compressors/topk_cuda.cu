/*
 * topk / topkt on the GPU (topk_cuda.h): exact radix select on the key (|v| bits), output in
 * index order, bit for bit the CPU payload.
 *
 *   A    grid-stride: v = in + residual (into the residual), finiteness, level-0 histogram
 *        (key >> 20, 2048 bins; shared-memory counts flushed with integer atomics)
 *   walk 1 block: the bin where the running count from the top reaches k (block scan)
 *   B    one block per tile of TK_TILE values: per-tile count above the level-0 bin, level-1
 *        histogram ((key >> 9) & 2047) of the bin's members, which are compacted into the
 *        candidate buffer (warp-aggregated atomics; their order there does not matter)
 *   walk, level-2 histogram (key & 511) over the candidates, walk: threshold t and `need`,
 *        the number of entries equal to t that the selection takes (the lowest indices)
 *   counts per tile of candidates > t and == t; one block scans the tiles (ties first, then
 *        the selected counts) into each tile's output offset
 *   C    one block per tile: block scans give every selected value its pair slot; the
 *        residual of a selected value becomes 0; the squared error of the rest is summed
 *   fixup: header, non-finite payload, status commit.
 * When the candidates overflow their buffer (many equal keys), the level-2 histogram and the
 * tile counts take a full pass instead; both variants are launched, each checks on the device
 * which one applies (no host synchronisation).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "cuda_kernels.h"
#include "topk.h"
#include "topk_cuda.h"

#define TK_THREADS 256
#define TK_PER     16
#define TK_TILE    (TK_THREADS * TK_PER)
#define TK_BINS    2048
#define TK_GRID    2048 /* grid-stride kernels */
/* topkt's sampled path (1); 0 makes topkt run the exact kernels only (same payload). */
#ifndef TERSE_TOPK_CUDA_SAMPLED
#define TERSE_TOPK_CUDA_SAMPLED 1
#endif

typedef struct tk_sel {
    uint32_t hist[3][TK_BINS];
    uint32_t bin[3];
    uint32_t thr;
    uint64_t above; /* values strictly above the current prefix */
    uint64_t need;
    uint32_t ncand;
    uint32_t sthr; /* sampled threshold (topkt) */
    uint32_t mode; /* 0 exact path; 1 sampled path succeeded; 2 sampled path fell back */
} tk_sel_t;

typedef struct tk_cuda {
    size_t           count;
    size_t           k;
    size_t           cap;
    size_t           ntiles;
    unsigned         family;
    void            *scratch;    /* one allocation, carved below */
    size_t           zero_bytes; /* leading bytes cleared every call */
    tk_sel_t        *sel;
    uint32_t        *tile_above; /* values above the level-0 bin */
    uint32_t        *tile_gtin;  /* values of the level-0 bin above t */
    uint32_t        *tile_eq;    /* values equal to t */
    uint32_t        *tile_eqbase;
    uint32_t        *tile_out;
    uint32_t        *cand;
    uint32_t        *tile_cbase;  /* sampled path: the tile's first candidate pair */
    uint32_t        *tile_ccnt;   /* ... and its number of candidates */
    uint2           *cpairs;      /* sampled path: (index, value) of the candidates */
    size_t           caps;        /* capacity of cpairs */
    uint32_t        *skeys;       /* sampled path: the sample's keys */
    size_t           nsample, ks; /* draws, and the rank of the threshold among them */
    terse_cu_stat_t *stat;
} tk_cuda_t;

typedef struct tk_args {
    const void      *in;
    int              dtype;
    float           *res;
    uint64_t         n;
    uint64_t         k;
    uint64_t         cap;
    uint64_t         ntiles;
    tk_sel_t        *sel;
    uint32_t        *tile_above, *tile_gtin, *tile_eq, *tile_eqbase, *tile_out, *cand;
    uint32_t        *tile_cbase, *tile_ccnt;
    uint2           *cpairs;
    uint64_t         caps;
    terse_cu_stat_t *stat;
} tk_args_t;

__device__ __forceinline__ int
tk_nonfinite(const tk_args_t &a)
{
    return (*(volatile uint32_t *)&a.stat->call & TERSE_CMP_NONFINITE) != 0;
}

/* The exact kernels run unless the sampled path succeeded (mode 1). */
__device__ __forceinline__ int
tk_mode(const tk_args_t &a)
{
    return (int)*(volatile uint32_t *)&a.sel->mode;
}

/* v after pass A: the residual holds it; else the input (0 + x for 16-bit inputs, as the CPU
 * reference's zeroed scratch gives: -0 becomes +0). */
__device__ __forceinline__ float
tk_v(const tk_args_t &a, uint64_t i)
{
    if (a.res != NULL) {
        return a.res[i];
    }
    if (a.dtype == TERSE_FLOAT32) {
        return __ldg((const float *)a.in + i);
    }
    return 0.0f + terse_cu_load(a.in, (terse_dtype_t)a.dtype, i);
}

__global__ void __launch_bounds__(TK_THREADS)
tk_pass_a(tk_args_t a)
{
    __shared__ uint32_t h[TK_BINS];
    uint64_t i;
    int bad = 0, b;

    const int mode = tk_mode(a);

    if ((mode == 1) || tk_nonfinite(a)) {
        return;
    }
    for (b = threadIdx.x; b < TK_BINS; b += blockDim.x) {
        h[b] = 0;
    }
    __syncthreads();
    for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < a.n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        float x;
        if ((a.res != NULL) && (mode == 0)) { /* mode 2: the sampled pass prepared v */
            x        = a.res[i] + terse_cu_load(a.in, (terse_dtype_t)a.dtype, i);
            a.res[i] = x;
        } else {
            x = tk_v(a, i);
        }
        bad |= !terse_cu_isfinite(x);
        atomicAdd(&h[terse_topk_key(x) >> 20], 1u);
    }
    if (__syncthreads_or(bad) && (threadIdx.x == 0)) {
        atomicOr(&a.stat->call, (uint32_t)TERSE_CMP_NONFINITE);
    }
    for (b = threadIdx.x; b < TK_BINS; b += blockDim.x) {
        if (h[b] != 0) {
            atomicAdd(&a.sel->hist[0][b], h[b]);
        }
    }
}

/* 1 block of 1024 threads: finds the bin of level `level` holding the k-th largest key. */
__global__ void __launch_bounds__(1024)
tk_walk(tk_args_t a, int level, int sampled)
{
    __shared__ unsigned sh[33];
    const int nb = (level == 2) ? 512 : TK_BINS;
    const uint64_t above = a.sel->above;
    const uint64_t kr    = a.k - above; /* >= 1 */
    int r0 = 2 * threadIdx.x, b0 = nb - 1 - r0, b1 = b0 - 1;
    unsigned h0 = 0, h1 = 0, base, total;

    if (tk_nonfinite(a) || (sampled ? (tk_mode(a) != 1) : (tk_mode(a) == 1))) {
        return;
    }
    if (r0 < nb) {
        h0 = a.sel->hist[level][b0];
    }
    if (r0 + 1 < nb) {
        h1 = a.sel->hist[level][b1];
    }
    base = terse_cu_block_exscan(h0 + h1, sh, &total);
    {
        int win = -1;
        uint64_t wabove = 0;
        if ((r0 < nb) && ((uint64_t)base < kr) && (kr <= (uint64_t)base + h0)) {
            win    = b0;
            wabove = base;
        } else if ((r0 + 1 < nb) && ((uint64_t)base + h0 < kr) &&
                   (kr <= (uint64_t)base + h0 + h1)) {
            win    = b1;
            wabove = (uint64_t)base + h0;
        }
        if (win >= 0) {
            a.sel->bin[level] = (uint32_t)win;
            a.sel->above      = above + wabove;
            if (level == 2) {
                a.sel->thr  = (a.sel->bin[0] << 20) | (a.sel->bin[1] << 9) | (uint32_t)win;
                a.sel->need = a.k - (above + wabove);
            }
        }
    }
}

__global__ void __launch_bounds__(TK_THREADS)
tk_pass_b(tk_args_t a)
{
    __shared__ uint32_t h[TK_BINS];
    __shared__ uint32_t cl[TK_TILE]; /* the tile's candidates (any order) */
    __shared__ unsigned cnt[32];
    __shared__ unsigned cn, cbase;
    const uint64_t tile0 = (uint64_t)blockIdx.x * TK_TILE;
    const int lane = threadIdx.x & 31;
    uint32_t b0;
    unsigned above = 0;
    int r, b;

    if (tk_nonfinite(a) || (tk_mode(a) == 1)) {
        return;
    }
    b0 = a.sel->bin[0];
    for (b = threadIdx.x; b < TK_BINS; b += blockDim.x) {
        h[b] = 0;
    }
    if (threadIdx.x == 0) {
        cn = 0;
    }
    __syncthreads();
    for (r = 0; r < TK_PER; ++r) {
        uint64_t i  = tile0 + (uint64_t)r * TK_THREADS + threadIdx.x;
        int is_cand = 0;
        if (i < a.n) {
            uint32_t key = terse_topk_key(tk_v(a, i));
            uint32_t top = key >> 20;
            if (top > b0) {
                ++above;
            } else if (top == b0) {
                is_cand = 1;
                atomicAdd(&h[(key >> 9) & 0x7ffu], 1u);
            }
        }
        {
            unsigned mask = __ballot_sync(0xffffffffu, is_cand);
            if (mask != 0) {
                unsigned base = 0;
                int leader    = __ffs(mask) - 1;
                if (lane == leader) {
                    base = atomicAdd(&cn, (unsigned)__popc(mask));
                }
                base = __shfl_sync(0xffffffffu, base, leader);
                if (is_cand) {
                    cl[base + __popc(mask & ((1u << lane) - 1u))] = (uint32_t)i;
                }
            }
        }
    }
    above = terse_cu_block_sum(above, cnt);
    if (threadIdx.x == 0) {
        a.tile_above[blockIdx.x] = above;
        cbase = (cn > 0) ? atomicAdd(&a.sel->ncand, cn) : 0u; /* one global atomic per tile */
    }
    __syncthreads();
    for (unsigned c = threadIdx.x; c < cn; c += blockDim.x) {
        if ((uint64_t)cbase + c < a.cap) {
            a.cand[cbase + c] = cl[c];
        }
    }
    for (b = threadIdx.x; b < TK_BINS; b += blockDim.x) {
        if (h[b] != 0) {
            atomicAdd(&a.sel->hist[1][b], h[b]);
        }
    }
}

/* Level-2 histogram: over the candidates (full = 0) or over the layer (full = 1); each
 * variant runs only when it applies. */
__global__ void __launch_bounds__(TK_THREADS)
tk_hist2(tk_args_t a, int full)
{
    __shared__ uint32_t h[512];
    const uint32_t ncand = a.sel->ncand;
    const uint32_t b0 = a.sel->bin[0], b1 = a.sel->bin[1];
    const uint64_t lim = full ? a.n : ncand;
    uint64_t c;
    int b;

    if (tk_nonfinite(a) || (tk_mode(a) == 1) || ((ncand > a.cap) != (full != 0))) {
        return;
    }
    for (b = threadIdx.x; b < 512; b += blockDim.x) {
        h[b] = 0;
    }
    __syncthreads();
    for (c = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; c < lim;
         c += (uint64_t)gridDim.x * blockDim.x) {
        uint32_t key = terse_topk_key(tk_v(a, full ? c : a.cand[c]));
        if (((key >> 20) == b0) && (((key >> 9) & 0x7ffu) == b1)) {
            atomicAdd(&h[key & 0x1ffu], 1u);
        }
    }
    __syncthreads();
    for (b = threadIdx.x; b < 512; b += blockDim.x) {
        if (h[b] != 0) {
            atomicAdd(&a.sel->hist[2][b], h[b]);
        }
    }
}

/* Per-tile counts of the level-0 bin's values above t and equal to t. */
__global__ void __launch_bounds__(TK_THREADS)
tk_counts(tk_args_t a, int full)
{
    const uint32_t ncand = a.sel->ncand;
    const uint32_t b0 = a.sel->bin[0], thr = a.sel->thr;
    const uint64_t lim = full ? a.n : ncand;
    uint64_t c;

    if (tk_nonfinite(a) || (tk_mode(a) == 1) || ((ncand > a.cap) != (full != 0))) {
        return;
    }
    /* a uniform trip count per warp: the whole warp meets every __match_any_sync */
    for (c = (uint64_t)blockIdx.x * blockDim.x + (threadIdx.x & ~31u); c < lim;
         c += (uint64_t)gridDim.x * blockDim.x) {
        const uint64_t cc = c + (threadIdx.x & 31u);
        uint64_t i        = 0;
        int kind          = 0;
        if (cc < lim) {
            uint32_t key;
            i   = full ? cc : a.cand[cc];
            key = terse_topk_key(tk_v(a, i));
            if ((key >> 20) == b0) {
                kind = (key > thr) ? 1 : ((key == thr) ? 2 : 0);
            }
        }
        {
            /* candidates of one tile sit together: one atomic per (tile, kind) per warp */
            const uint32_t tile = (uint32_t)(i / TK_TILE);
            unsigned peers = __match_any_sync(0xffffffffu, (tile << 2) | (uint32_t)kind);
            if ((kind != 0) && ((threadIdx.x & 31) == (unsigned)(__ffs(peers) - 1))) {
                atomicAdd((kind == 1) ? &a.tile_gtin[tile] : &a.tile_eq[tile],
                          (unsigned)__popc(peers));
            }
        }
    }
}

/* 1 block of 1024: tie offsets, then output offsets, per tile (in tile order). */
__global__ void __launch_bounds__(1024)
tk_scan(tk_args_t a, int sampled)
{
    __shared__ unsigned sh[33];
    const uint64_t nt = a.ntiles;
    const uint64_t ch = (nt + blockDim.x - 1) / blockDim.x;
    const uint64_t t0 = threadIdx.x * ch, t1 = (t0 + ch < nt) ? t0 + ch : nt;
    const long long need = (long long)a.sel->need;
    unsigned s = 0, base, total;
    uint64_t t;

    if (tk_nonfinite(a) || (sampled ? (tk_mode(a) != 1) : (tk_mode(a) == 1))) {
        return;
    }
    for (t = t0; t < t1; ++t) {
        s += a.tile_eq[t];
    }
    base = terse_cu_block_exscan(s, sh, &total);
    for (t = t0; t < t1; ++t) {
        a.tile_eqbase[t] = base;
        base += a.tile_eq[t];
    }
    s = 0;
    for (t = t0; t < t1; ++t) {
        long long allow = need - (long long)a.tile_eqbase[t];
        long long eq    = (long long)a.tile_eq[t];
        allow           = (allow < 0) ? 0 : ((allow > eq) ? eq : allow);
        s += a.tile_above[t] + a.tile_gtin[t] + (unsigned)allow;
    }
    base = terse_cu_block_exscan(s, sh, &total);
    for (t = t0; t < t1; ++t) {
        long long allow = need - (long long)a.tile_eqbase[t];
        long long eq    = (long long)a.tile_eq[t];
        allow           = (allow < 0) ? 0 : ((allow > eq) ? eq : allow);
        a.tile_out[t]   = base;
        base += a.tile_above[t] + a.tile_gtin[t] + (unsigned)allow;
    }
}

/* One block per tile; warp w owns values [w * 512, (w + 1) * 512) of the tile, 16 per lane
 * kept in registers with ballots of "above t" and "equal to t"; one block exchange of the
 * per-warp counts, then every selected value gets its slot from popcounts (index order:
 * warp, round, lane). */
template <int ALIGNED>
__global__ void __launch_bounds__(TK_THREADS)
tk_pass_c(tk_args_t a, uint8_t *pairs)
{
    __shared__ unsigned sgt[TK_THREADS / 32], seq[TK_THREADS / 32];
    __shared__ double shd[32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint64_t base = (uint64_t)blockIdx.x * TK_TILE + (uint64_t)warp * (32 * TK_PER);
    const unsigned lt = (1u << lane) - 1u;
    float x[TK_PER];
    unsigned gtm[TK_PER], eqm[TK_PER], cg = 0, ce = 0, gt_before = 0, eq_before = 0, gr = 0, er;
    uint32_t thr;
    long long allow;
    unsigned out_base;
    double err = 0.0;

    if (tk_nonfinite(a) || (tk_mode(a) == 1)) {
        return;
    }
    thr      = a.sel->thr;
    out_base = a.tile_out[blockIdx.x];
    allow    = (long long)a.sel->need - (long long)a.tile_eqbase[blockIdx.x];
    allow    = (allow < 0) ? 0 : allow;
#pragma unroll
    for (int r = 0; r < TK_PER; ++r) {
        uint64_t i = base + (uint64_t)r * 32 + lane;
        uint32_t key;
        x[r]   = (i < a.n) ? tk_v(a, i) : 0.0f;
        key    = terse_topk_key(x[r]);
        gtm[r] = __ballot_sync(0xffffffffu, (i < a.n) && (key > thr));
        eqm[r] = __ballot_sync(0xffffffffu, (i < a.n) && (key == thr));
        cg += __popc(gtm[r]);
        ce += __popc(eqm[r]);
    }
    if (lane == 0) {
        sgt[warp] = cg;
        seq[warp] = ce;
    }
    __syncthreads();
    for (int w = 0; w < warp; ++w) {
        gt_before += sgt[w];
        eq_before += seq[w];
    }
    er = eq_before;
#pragma unroll
    for (int r = 0; r < TK_PER; ++r) {
        uint64_t i        = base + (uint64_t)r * 32 + lane;
        int g             = (gtm[r] >> lane) & 1u;
        int e             = (eqm[r] >> lane) & 1u;
        long long ties    = (long long)(er + __popc(eqm[r] & lt));
        if (g || (e && (ties < allow))) {
            unsigned pos = out_base + gt_before + gr + __popc(gtm[r] & lt) +
                           (unsigned)((ties < allow) ? ties : allow);
            uint8_t *p   = pairs + (uint64_t)pos * TERSE_TOPK_PAIR_BYTES;
            if (ALIGNED) {
                *(uint2 *)p = make_uint2((uint32_t)i, __float_as_uint(x[r]));
            } else {
                terse_cu_st_u32(p, (uint32_t)i);
                terse_cu_st_u32(p + 4, __float_as_uint(x[r]));
            }
            if (a.res != NULL) {
                a.res[i] = 0.0f;
            }
        } else if (i < a.n) {
            err = err + (double)x[r] * (double)x[r];
        }
        gr += __popc(gtm[r]);
        er += __popc(eqm[r]);
    }
    err = terse_cu_block_sum(err, shd);
    if ((threadIdx.x == 0) && (err != 0.0)) {
        atomicAdd(&a.stat->sq_acc, err);
    }
}

/* ---------------------------------------------------------------- sampled path (topkt) */
/* 1 block of 1024: draws the sample (as topk.c: index = u32 * n >> 32 of the stream), then the
 * key of its ks-th largest value by a three-level radix select in shared memory. */
__global__ void __launch_bounds__(1024)
tk_sample(tk_args_t a, terse_rng_t rng, uint32_t m, uint32_t ks, uint32_t *skeys)
{
    __shared__ unsigned h[TK_BINS];
    __shared__ unsigned sh[33];
    __shared__ uint32_t s_prefix, s_bin;
    __shared__ unsigned long long s_above, s_newabove;
    uint32_t i;

    for (i = threadIdx.x; i < m; i += blockDim.x) {
        uint64_t idx = ((uint64_t)terse_rng_u32(&rng, rng.offset + i) * a.n) >> 32;
        float x      = (a.res != NULL)
                           ? a.res[idx] + terse_cu_load(a.in, (terse_dtype_t)a.dtype, idx)
                           : tk_v(a, idx);
        skeys[i] = terse_topk_key(x);
    }
    if (threadIdx.x == 0) {
        s_prefix = 0;
        s_above  = 0;
    }
    __syncthreads();
    for (int level = 0; level < 3; ++level) {
        const int nb = (level == 2) ? 512 : TK_BINS;
        const int shift = (level == 0) ? 20 : ((level == 1) ? 9 : 0);
        const int hi_shift = (level == 1) ? 20 : 9;
        const unsigned long long kr = (unsigned long long)ks - s_above;
        int r0 = 2 * threadIdx.x, b0 = nb - 1 - r0, b1 = b0 - 1;
        unsigned h0 = 0, h1 = 0, base, total;

        for (int b = threadIdx.x; b < TK_BINS; b += blockDim.x) {
            h[b] = 0;
        }
        __syncthreads();
        for (i = threadIdx.x; i < m; i += blockDim.x) {
            uint32_t key = skeys[i];
            if ((level == 0) || ((key >> hi_shift) == s_prefix)) {
                atomicAdd(&h[(key >> shift) & (uint32_t)(nb - 1)], 1u);
            }
        }
        __syncthreads();
        if (r0 < nb) {
            h0 = h[b0];
        }
        if (r0 + 1 < nb) {
            h1 = h[b1];
        }
        base = terse_cu_block_exscan(h0 + h1, sh, &total);
        if ((r0 < nb) && ((unsigned long long)base < kr) && (kr <= (unsigned long long)base + h0)) {
            s_bin      = (uint32_t)b0;
            s_newabove = s_above + base;
        } else if ((r0 + 1 < nb) && ((unsigned long long)base + h0 < kr) &&
                   (kr <= (unsigned long long)base + h0 + h1)) {
            s_bin      = (uint32_t)b1;
            s_newabove = s_above + base + h0;
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            s_prefix = (level == 0) ? s_bin : ((s_prefix << ((level == 1) ? 11 : 9)) | s_bin);
            s_above  = s_newabove;
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        a.sel->sthr = s_prefix;
    }
}

/* One block per tile: v = in + residual (into the residual), finiteness, energy, and the
 * values at or above the sampled threshold, compacted in index order into the tile's run of
 * candidate pairs (one global atomic per tile). */
__global__ void __launch_bounds__(TK_THREADS)
tk_pass_t(tk_args_t a)
{
    __shared__ unsigned swc[TK_THREADS / 32];
    __shared__ unsigned s_base;
    __shared__ double shd[32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint64_t base = (uint64_t)blockIdx.x * TK_TILE + (uint64_t)warp * (32 * TK_PER);
    const unsigned lt = (1u << lane) - 1u;
    const uint32_t sthr = a.sel->sthr;
    float x[TK_PER];
    unsigned cm[TK_PER], cnt = 0, woff = 0, total = 0, run;
    double tot = 0.0;
    int bad = 0;

#pragma unroll
    for (int r = 0; r < TK_PER; ++r) {
        uint64_t i = base + (uint64_t)r * 32 + lane;
        x[r] = 0.0f;
        if (i < a.n) {
            if (a.res != NULL) {
                x[r]     = a.res[i] + terse_cu_load(a.in, (terse_dtype_t)a.dtype, i);
                a.res[i] = x[r];
            } else {
                x[r] = tk_v(a, i);
            }
            bad |= !terse_cu_isfinite(x[r]);
            tot = tot + (double)x[r] * (double)x[r];
        }
        cm[r] = __ballot_sync(0xffffffffu, (i < a.n) && (terse_topk_key(x[r]) >= sthr));
        cnt += __popc(cm[r]);
    }
    if (lane == 0) {
        swc[warp] = cnt;
    }
    __syncthreads();
    for (int w = 0; w < TK_THREADS / 32; ++w) {
        woff += (w < warp) ? swc[w] : 0u;
        total += swc[w];
    }
    if (threadIdx.x == 0) {
        s_base = (total > 0) ? atomicAdd(&a.sel->ncand, total) : 0u;
        a.tile_cbase[blockIdx.x] = s_base;
        a.tile_ccnt[blockIdx.x]  = total;
    }
    __syncthreads();
    run = s_base + woff;
#pragma unroll
    for (int r = 0; r < TK_PER; ++r) {
        if ((cm[r] >> lane) & 1u) {
            uint64_t pos = (uint64_t)run + __popc(cm[r] & lt);
            if (pos < a.caps) {
                a.cpairs[pos] = make_uint2((uint32_t)(base + (uint64_t)r * 32 + lane),
                                           __float_as_uint(x[r]));
            }
        }
        run += __popc(cm[r]);
    }
    if (__syncthreads_or(bad) && (threadIdx.x == 0)) {
        atomicOr(&a.stat->call, (uint32_t)TERSE_CMP_NONFINITE);
    }
    tot = terse_cu_block_sum(tot, shd);
    if ((threadIdx.x == 0) && (tot != 0.0)) {
        atomicAdd(&a.stat->sq_acc, tot);
    }
}

/* The sample hit when k <= candidates <= capacity; otherwise the exact kernels take over on
 * the prepared v (the energy is then summed by them). */
__global__ void
tk_sdecide(tk_args_t a)
{
    uint32_t nc = a.sel->ncand;

    if (tk_nonfinite(a)) {
        return;
    }
    if (((uint64_t)nc >= a.k) && ((uint64_t)nc <= a.caps)) {
        a.sel->mode = 1;
    } else {
        a.sel->mode   = 2;
        a.sel->ncand  = 0;
        a.stat->sq_acc = 0.0;
    }
}

/* Radix histograms over the candidate pairs (level 0, 1, 2 as the exact path). */
__global__ void __launch_bounds__(TK_THREADS)
tk_chist(tk_args_t a, int level)
{
    __shared__ uint32_t h[TK_BINS];
    const uint32_t nc = a.sel->ncand;
    const uint32_t b0 = a.sel->bin[0], b1 = a.sel->bin[1];
    const int nb = (level == 2) ? 512 : TK_BINS;
    uint64_t c;
    int b;

    if (tk_nonfinite(a) || (tk_mode(a) != 1)) {
        return;
    }
    for (b = threadIdx.x; b < nb; b += blockDim.x) {
        h[b] = 0;
    }
    __syncthreads();
    for (c = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; c < nc;
         c += (uint64_t)gridDim.x * blockDim.x) {
        uint32_t key = terse_topk_key(__uint_as_float(a.cpairs[c].y));
        if (level == 0) {
            atomicAdd(&h[key >> 20], 1u);
        } else if ((key >> 20) == b0) {
            if (level == 1) {
                atomicAdd(&h[(key >> 9) & 0x7ffu], 1u);
            } else if (((key >> 9) & 0x7ffu) == b1) {
                atomicAdd(&h[key & 0x1ffu], 1u);
            }
        }
    }
    __syncthreads();
    for (b = threadIdx.x; b < nb; b += blockDim.x) {
        if (h[b] != 0) {
            atomicAdd(&a.sel->hist[level][b], h[b]);
        }
    }
}

/* One block per tile: counts of its candidates above and equal to t. */
__global__ void __launch_bounds__(TK_THREADS)
tk_ctile_counts(tk_args_t a)
{
    __shared__ unsigned sh[32];
    const uint32_t cb = a.tile_cbase[blockIdx.x], cc = a.tile_ccnt[blockIdx.x];
    const uint32_t thr = a.sel->thr;
    unsigned gt = 0, eq = 0;

    if (tk_nonfinite(a) || (tk_mode(a) != 1)) {
        return;
    }
    for (uint32_t c = threadIdx.x; c < cc; c += blockDim.x) {
        uint32_t key = terse_topk_key(__uint_as_float(a.cpairs[cb + c].y));
        gt += (key > thr);
        eq += (key == thr);
    }
    gt = terse_cu_block_sum(gt, sh);
    eq = terse_cu_block_sum(eq, sh);
    if (threadIdx.x == 0) {
        a.tile_above[blockIdx.x] = 0;
        a.tile_gtin[blockIdx.x]  = gt;
        a.tile_eq[blockIdx.x]    = eq;
    }
}

/* One block per tile: the selected candidates, in index order, into their pair slots. */
template <int ALIGNED>
__global__ void __launch_bounds__(TK_THREADS)
tk_ctile_out(tk_args_t a, uint8_t *pairs)
{
    __shared__ unsigned sh[33];
    __shared__ double shd[32];
    const uint32_t cb = a.tile_cbase[blockIdx.x], cc = a.tile_ccnt[blockIdx.x];
    uint32_t thr;
    long long allow;
    unsigned gt_run = 0, eq_run = 0, out_base;
    double kept = 0.0;

    if (tk_nonfinite(a) || (tk_mode(a) != 1)) {
        return;
    }
    thr      = a.sel->thr;
    out_base = a.tile_out[blockIdx.x];
    allow    = (long long)a.sel->need - (long long)a.tile_eqbase[blockIdx.x];
    allow    = (allow < 0) ? 0 : allow;
    for (uint32_t c0 = 0; c0 < cc; c0 += blockDim.x) {
        uint32_t c = c0 + threadIdx.x;
        uint2 cp   = make_uint2(0, 0);
        unsigned is_gt = 0, is_eq = 0, packed, total;
        if (c < cc) {
            uint32_t key;
            cp    = a.cpairs[cb + c];
            key   = terse_topk_key(__uint_as_float(cp.y));
            is_gt = key > thr;
            is_eq = key == thr;
        }
        packed = terse_cu_block_exscan((is_eq << 16) | is_gt, sh, &total);
        if (c < cc) {
            unsigned gt_ex = packed & 0xffffu, eq_ex = packed >> 16;
            long long tie  = (long long)(eq_run + eq_ex);
            if (is_gt || (is_eq && (tie < allow))) {
                unsigned pos = out_base + gt_run + gt_ex + (unsigned)((tie < allow) ? tie : allow);
                uint8_t *p   = pairs + (uint64_t)pos * TERSE_TOPK_PAIR_BYTES;
                float v      = __uint_as_float(cp.y);
                if (ALIGNED) {
                    *(uint2 *)p = cp;
                } else {
                    terse_cu_st_u32(p, cp.x);
                    terse_cu_st_u32(p + 4, cp.y);
                }
                if (a.res != NULL) {
                    a.res[cp.x] = 0.0f;
                }
                kept = kept + (double)v * (double)v;
            }
        }
        gt_run += total & 0xffffu;
        eq_run += total >> 16;
    }
    kept = terse_cu_block_sum(kept, shd);
    if ((threadIdx.x == 0) && (kept != 0.0)) {
        atomicAdd(&a.stat->sq_acc, -kept);
    }
}

__device__ __forceinline__ void
tk_st_u16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Header, non-finite payload (pairs (j, NaN), residual 0), commit. */
__global__ void
tk_fixup(tk_args_t a, uint8_t *out, unsigned family)
{
    const uint32_t call  = *(volatile uint32_t *)&a.stat->call;
    const uint64_t t0    = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const uint64_t step  = (uint64_t)gridDim.x * blockDim.x;
    const uint32_t flags = call & TERSE_CMP_NONFINITE;
    uint64_t i;

    if (t0 == 0) {
        terse_cu_st_u32(out, TERSE_TOPK_MAGIC);
        tk_st_u16(out + 4, TERSE_TOPK_VERSION);
        tk_st_u16(out + 6, family);
        terse_cu_st_u32(out + 8, flags);
        terse_cu_st_u32(out + 12, 0);
        terse_cu_st_u32(out + 16, (uint32_t)a.n);
        terse_cu_st_u32(out + 20, (uint32_t)(a.n >> 32));
        terse_cu_st_u32(out + 24, (uint32_t)a.k);
        terse_cu_st_u32(out + 28, (uint32_t)(a.k >> 32));
    }
    if (flags) {
        for (i = t0; i < a.k; i += step) {
            uint8_t *p = out + TERSE_TOPK_HEADER_BYTES + i * TERSE_TOPK_PAIR_BYTES;
            terse_cu_st_u32(p, (uint32_t)i);
            terse_cu_st_u32(p + 4, 0x7fc00000u);
        }
        for (i = t0; (a.res != NULL) && (i < a.n); i += step) {
            a.res[i] = 0.0f;
        }
    }
    __syncthreads();
    if ((threadIdx.x == 0) && terse_cu_last_block(&a.stat->done, gridDim.x)) {
        if (a.stat->sq_acc < 0.0) {
            a.stat->sq_acc = 0.0; /* total - kept, summed in another order */
        }
        terse_cu_stat_commit(a.stat, 1);
    }
}

/* ---------------------------------------------------------------- decoding */
/* Every check of topk.h's decoder; one thread per pair (+ the header in thread 0). */
__global__ void __launch_bounds__(TK_THREADS)
tk_validate(const uint8_t *in, uint64_t in_bytes, uint64_t n, uint64_t k, unsigned family,
            terse_cu_stat_t *st)
{
    const uint64_t j = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    int bad = 0;

    if (in_bytes != TERSE_TOPK_HEADER_BYTES + k * TERSE_TOPK_PAIR_BYTES) {
        bad = (j == 0);
    } else {
        uint32_t flags = terse_cu_ld_u32(in + 8);
        if (j == 0) {
            bad = (terse_cu_ld_u32(in) != TERSE_TOPK_MAGIC) ||
                  ((in[4] | (in[5] << 8)) != TERSE_TOPK_VERSION) ||
                  ((in[6] | (in[7] << 8)) != family) ||
                  ((flags & ~(uint32_t)TERSE_CMP_NONFINITE) != 0) ||
                  (terse_cu_ld_u32(in + 12) != 0) || (terse_cu_ld_u64(in + 16) != n) ||
                  (terse_cu_ld_u64(in + 24) != k);
            if (!bad && (flags & TERSE_CMP_NONFINITE)) {
                atomicOr(&st->call, (uint32_t)TERSE_CMP_NONFINITE);
            }
        }
        if (j < k) {
            const uint8_t *p = in + TERSE_TOPK_HEADER_BYTES + j * TERSE_TOPK_PAIR_BYTES;
            uint32_t idx     = terse_cu_ld_u32(p);
            float val        = __uint_as_float(terse_cu_ld_u32(p + 4));
            bad |= (idx >= n) || ((j > 0) && (idx <= terse_cu_ld_u32(p - TERSE_TOPK_PAIR_BYTES))) ||
                   (!(flags & TERSE_CMP_NONFINITE) && !terse_cu_isfinite(val));
        }
    }
    if (bad) {
        atomicOr(&st->call, (uint32_t)TERSE_CU_ERR_PAYLOAD);
    }
}

/* Applies a validated payload (scatter), or NaN over the layer (rejected or non-finite). */
__global__ void __launch_bounds__(TK_THREADS)
tk_apply(const uint8_t *in, uint64_t n, uint64_t k, float scale, void *out, int dtype, int add,
         terse_cu_stat_t *st)
{
    const uint32_t call = *(volatile uint32_t *)&st->call;
    const uint64_t t0   = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const uint64_t step = (uint64_t)gridDim.x * blockDim.x;
    uint64_t i;

    if (call & (TERSE_CU_ERR_PAYLOAD | TERSE_CMP_NONFINITE)) {
        for (i = t0; i < n; i += step) {
            if (add) {
                ((float *)out)[i] = TERSE_CU_NAN;
            } else {
                terse_cu_store(out, (terse_dtype_t)dtype, i, TERSE_CU_NAN);
            }
        }
    } else {
        for (i = t0; i < k; i += step) {
            const uint8_t *p = in + TERSE_TOPK_HEADER_BYTES + i * TERSE_TOPK_PAIR_BYTES;
            uint32_t idx     = terse_cu_ld_u32(p);
            float val        = __uint_as_float(terse_cu_ld_u32(p + 4));
            if (add) {
                ((float *)out)[idx] = ((float *)out)[idx] + val;
            } else {
                terse_cu_store(out, (terse_dtype_t)dtype, idx, scale * val);
            }
        }
    }
    __syncthreads();
    if ((threadIdx.x == 0) && terse_cu_last_block(&st->done, gridDim.x)) {
        terse_cu_stat_commit(st, 0);
    }
}

/* ---------------------------------------------------------------- host */
static size_t
tk_align(size_t x)
{
    return (x + 255) & ~(size_t)255;
}

extern "C" terse_status_t
terse__cmp_topk_cuda_create(size_t count, size_t k, unsigned family, void **cuda_p)
{
    tk_cuda_t *t;
    terse_status_t status;
    size_t off, tiles_bytes;
    uint8_t *base;

    if ((count == 0) || (count > UINT32_MAX) || (k == 0) || (k > count) ||
        ((family != TERSE_TOPK_FAMILY_EXACT) && (family != TERSE_TOPK_FAMILY_SAMPLED))) {
        terse_error(TERSE_LOG_CMP, "topk cuda: bad count %zu k %zu family %u", count, k, family);
        return TERSE_ERR_INVALID;
    }
    t = (tk_cuda_t *)calloc(1, sizeof(*t));
    if (t == NULL) {
        terse_error(TERSE_LOG_CMP, "failed to allocate topk cuda state");
        return TERSE_ERR_NOMEM;
    }
    t->count  = count;
    t->k      = k;
    t->family = family;
    t->ntiles = (count + TK_TILE - 1) / TK_TILE;
    t->cap    = (4 * k > ((size_t)1 << 20)) ? 4 * k : ((size_t)1 << 20);
    t->cap    = (t->cap < count) ? t->cap : count;
    tiles_bytes = tk_align(t->ntiles * sizeof(uint32_t));
    off = tk_align(sizeof(tk_sel_t)) + 3 * tiles_bytes; /* cleared every call */
    t->zero_bytes = off;
    off += 2 * tiles_bytes + t->cap * sizeof(uint32_t);
    TERSE_CHECK_GOTO(terse__cuda_calloc(&t->scratch, off), status, err_free_t);
    base           = (uint8_t *)t->scratch;
    t->sel         = (tk_sel_t *)base;
    t->tile_above  = (uint32_t *)(base + tk_align(sizeof(tk_sel_t)));
    t->tile_gtin   = (uint32_t *)((uint8_t *)t->tile_above + tiles_bytes);
    t->tile_eq     = (uint32_t *)((uint8_t *)t->tile_gtin + tiles_bytes);
    t->tile_eqbase = (uint32_t *)((uint8_t *)t->tile_eq + tiles_bytes);
    t->tile_out    = (uint32_t *)((uint8_t *)t->tile_eqbase + tiles_bytes);
    t->cand        = (uint32_t *)((uint8_t *)t->tile_out + tiles_bytes);
    if (TERSE_TOPK_CUDA_SAMPLED && (family == TERSE_TOPK_FAMILY_SAMPLED)) {
        /* as topk.c: at least 4096 draws and ~64 above the threshold; aim at 1.5 k candidates */
        double m = 64.0 * (double)count / (double)k;
        m = (m < 4096.0) ? 4096.0 : m;
        if (m < 0.5 * (double)count) {
            double ks    = ceil(1.5 * (double)k * m / (double)count);
            t->nsample   = (size_t)m;
            t->ks        = (ks < 1.0) ? 1 : ((ks > m) ? (size_t)m : (size_t)ks);
            t->caps      = TERSE_MIN(count, 4 * k + 65536);
            TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&t->tile_cbase,
                                                2 * t->ntiles * sizeof(uint32_t)),
                             status, err_free_scratch);
            t->tile_ccnt = t->tile_cbase + t->ntiles;
            TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&t->cpairs, t->caps * sizeof(uint2)),
                             status, err_free_scratch);
            TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&t->skeys,
                                                t->nsample * sizeof(uint32_t)),
                             status, err_free_scratch);
        }
    }
    TERSE_CHECK_GOTO(terse__cuda_stat_create(&t->stat), status, err_free_scratch);
    *cuda_p = t;
    return TERSE_OK;

err_free_scratch:
    terse__cuda_free(t->tile_cbase);
    terse__cuda_free(t->cpairs);
    terse__cuda_free(t->skeys);
    terse__cuda_free(t->scratch);
err_free_t:
    free(t);
    return status;
}

extern "C" void
terse__cmp_topk_cuda_destroy(void *cuda)
{
    tk_cuda_t *t = (tk_cuda_t *)cuda;

    if (t != NULL) {
        terse__cuda_free(t->stat);
        terse__cuda_free(t->scratch);
        terse__cuda_free(t->tile_cbase);
        terse__cuda_free(t->cpairs);
        terse__cuda_free(t->skeys);
        free(t);
    }
}

static tk_args_t
tk_make_args(const tk_cuda_t *t, const void *in, terse_dtype_t dtype, float *residual)
{
    tk_args_t a;

    a.in          = in;
    a.dtype       = (int)dtype;
    a.res         = residual;
    a.n           = t->count;
    a.k           = t->k;
    a.cap         = t->cap;
    a.ntiles      = t->ntiles;
    a.sel         = t->sel;
    a.tile_above  = t->tile_above;
    a.tile_gtin   = t->tile_gtin;
    a.tile_eq     = t->tile_eq;
    a.tile_eqbase = t->tile_eqbase;
    a.tile_out    = t->tile_out;
    a.cand        = t->cand;
    a.tile_cbase  = t->tile_cbase;
    a.tile_ccnt   = t->tile_ccnt;
    a.cpairs      = t->cpairs;
    a.caps        = t->caps;
    a.stat        = t->stat;
    return a;
}

extern "C" terse_status_t
terse__cmp_topk_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype, size_t n,
                              float *residual, const terse_rng_t *rng, void *out,
                              size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                              terse_stream_t stream)
{
    tk_cuda_t *t   = (tk_cuda_t *)cuda;
    cudaStream_t s = (cudaStream_t)stream;
    unsigned grid_n, grid_c;
    uint8_t *pairs;
    tk_args_t a;

    if ((t == NULL) || (in == NULL) || (n != t->count) || (out == NULL) ||
        (dtype >= TERSE_FLOAT64) ||
        (out_bytes != TERSE_TOPK_HEADER_BYTES + t->k * TERSE_TOPK_PAIR_BYTES)) {
        terse_error(TERSE_LOG_CMP, "topk cuda: bad compress arguments (count %zu, %zu bytes)",
                    n, out_bytes);
        return TERSE_ERR_INVALID;
    }
    a      = tk_make_args(t, in, dtype, residual);
    pairs  = (uint8_t *)out + TERSE_TOPK_HEADER_BYTES;
    grid_n = terse_cu_blocks(n, TK_THREADS);
    grid_n = (grid_n > TK_GRID) ? TK_GRID : grid_n;
    grid_c = terse_cu_blocks(t->cap, TK_THREADS);
    grid_c = (grid_c > 1024) ? 1024 : grid_c;

    TERSE_CUDA_CHECK_ST(cudaMemsetAsync(t->scratch, 0, t->zero_bytes, s), "cudaMemsetAsync");
    if (t->nsample > 0) {
        /* topkt: sampled threshold, one pass, select among ~1.5 k candidates; a miss leaves
         * mode 2 and the exact kernels below do the work */
        terse_rng_t r = (rng != NULL) ? *rng : terse_rng_make(0, TERSE_RNG_TEST, 0, 0, 0);
        unsigned grid_s = terse_cu_blocks(t->caps, TK_THREADS);
        grid_s = (grid_s > 1024) ? 1024 : grid_s;
        tk_sample<<<1, 1024, 0, s>>>(a, r, (uint32_t)t->nsample, (uint32_t)t->ks, t->skeys);
        tk_pass_t<<<(unsigned)t->ntiles, TK_THREADS, 0, s>>>(a);
        tk_sdecide<<<1, 1, 0, s>>>(a);
        tk_chist<<<grid_s, TK_THREADS, 0, s>>>(a, 0);
        tk_walk<<<1, 1024, 0, s>>>(a, 0, 1);
        tk_chist<<<grid_s, TK_THREADS, 0, s>>>(a, 1);
        tk_walk<<<1, 1024, 0, s>>>(a, 1, 1);
        tk_chist<<<grid_s, TK_THREADS, 0, s>>>(a, 2);
        tk_walk<<<1, 1024, 0, s>>>(a, 2, 1);
        tk_ctile_counts<<<(unsigned)t->ntiles, TK_THREADS, 0, s>>>(a);
        tk_scan<<<1, 1024, 0, s>>>(a, 1);
        if (((uintptr_t)pairs & 7u) == 0) {
            tk_ctile_out<1><<<(unsigned)t->ntiles, TK_THREADS, 0, s>>>(a, pairs);
        } else {
            tk_ctile_out<0><<<(unsigned)t->ntiles, TK_THREADS, 0, s>>>(a, pairs);
        }
    }
    tk_pass_a<<<grid_n, TK_THREADS, 0, s>>>(a);
    tk_walk<<<1, 1024, 0, s>>>(a, 0, 0);
    tk_pass_b<<<(unsigned)t->ntiles, TK_THREADS, 0, s>>>(a);
    tk_walk<<<1, 1024, 0, s>>>(a, 1, 0);
    tk_hist2<<<grid_c, TK_THREADS, 0, s>>>(a, 0);
    tk_hist2<<<grid_n, TK_THREADS, 0, s>>>(a, 1);
    tk_walk<<<1, 1024, 0, s>>>(a, 2, 0);
    tk_counts<<<grid_c, TK_THREADS, 0, s>>>(a, 0);
    tk_counts<<<grid_n, TK_THREADS, 0, s>>>(a, 1);
    tk_scan<<<1, 1024, 0, s>>>(a, 0);
    if (((uintptr_t)pairs & 7u) == 0) {
        tk_pass_c<1><<<(unsigned)t->ntiles, TK_THREADS, 0, s>>>(a, pairs);
    } else {
        tk_pass_c<0><<<(unsigned)t->ntiles, TK_THREADS, 0, s>>>(a, pairs);
    }
    tk_fixup<<<64, 256, 0, s>>>(a, (uint8_t *)out, t->family);
    TERSE_CUDA_LAUNCHED("topk kernels");
    if (flags_p != NULL) {
        *flags_p = 0;
    }
    if (sq_err_p != NULL) {
        *sq_err_p = 0.0;
    }
    return TERSE_OK;
}

static terse_status_t
tk_decode(tk_cuda_t *t, const void *in, size_t in_bytes, float scale, void *out,
          terse_dtype_t dtype, size_t n, int add, cudaStream_t s)
{
    size_t want;
    unsigned grid;

    if ((t == NULL) || (out == NULL) || (n != t->count) || (dtype >= TERSE_FLOAT64)) {
        return TERSE_ERR_INVALID;
    }
    want = TERSE_TOPK_HEADER_BYTES + t->k * TERSE_TOPK_PAIR_BYTES;
    if (in == NULL) {
        in_bytes = 0; /* rejected without a read */
    }
    if (!add) {
        TERSE_CUDA_CHECK_ST(cudaMemsetAsync(out, 0, n * terse_dtype_size(dtype), s),
                            "cudaMemsetAsync");
    }
    tk_validate<<<terse_cu_blocks(t->k, TK_THREADS), TK_THREADS, 0, s>>>(
        (const uint8_t *)in, in_bytes, n, t->k, t->family, t->stat);
    grid = terse_cu_blocks((n > t->k) ? n : t->k, TK_THREADS);
    grid = (grid > TK_GRID) ? TK_GRID : grid;
    tk_apply<<<grid, TK_THREADS, 0, s>>>((const uint8_t *)in, n, t->k, scale, out, (int)dtype,
                                         add, t->stat);
    TERSE_CUDA_LAUNCHED("topk decode kernels");
    return (in_bytes == want) ? TERSE_OK : TERSE_ERR_PAYLOAD;
}

extern "C" terse_status_t
terse__cmp_topk_cuda_decompress(void *cuda, const void *in, size_t in_bytes, float scale,
                                void *out, terse_dtype_t dtype, size_t n, terse_stream_t stream)
{
    return tk_decode((tk_cuda_t *)cuda, in, in_bytes, scale, out, dtype, n, 0,
                     (cudaStream_t)stream);
}

extern "C" terse_status_t
terse__cmp_topk_cuda_decompress_add(void *cuda, const void *in, size_t in_bytes, float *acc,
                                    size_t n, uint32_t *flags_p, terse_stream_t stream)
{
    if (flags_p != NULL) {
        *flags_p = 0;
    }
    return tk_decode((tk_cuda_t *)cuda, in, in_bytes, 1.0f, acc, TERSE_FLOAT32, n, 1,
                     (cudaStream_t)stream);
}

extern "C" terse_status_t
terse__cmp_topk_cuda_stat(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                          double *sq_err_p)
{
    return terse__cuda_stat_read(((tk_cuda_t *)cuda)->stat, stream, flags_p, sq_err_p);
}
