/*
 * topk / topkt on the GPU (topk_cuda.h): the exact top-k set (ties: lowest index), output in
 * index order, bit for bit the CPU payload. Two paths, both launched; each kernel checks on
 * the device which one applies (no host synchronisation):
 *
 * Sampled path (both families, layers of >= 64 Ki values with k <= n / 8):
 *   sample   1 block: the key at rank ~1.5 k n / m among m random draws (radix select)
 *   pass S   persistent warps, each striding over chunks of TK_CHUNK values with no block
 *            barrier (aligned fp32 without a residual streams in through cp.async, the next
 *            chunk in flight while one is examined): v = in + residual (into the residual),
 *            finiteness, the energy below the threshold, and every value at or above it
 *            written as an (index, value) pair, in index order, into the chunk's slots (or,
 *            when more than fit, into an overflow buffer at an offset one atomic reserves),
 *            so the layer is read once; per-tile candidate counts, the candidates' level-0
 *            histogram and (last block) its walk
 *   gather   one scan over the tiles, then a warp per tile copies its chunks' candidates into
 *            one array in index order
 *   decide   (with the scan) k <= candidates <= capacity, else mode 2: the radix path
 *            takes over on the prepared v
 *   select   radix levels 1 and 2 over the candidates (each walk in the histogram's last
 *            block) give t and `need` (ties taken)
 *   output   per chunk of 4096 candidates: counts above / equal to t, one scan over the
 *            chunks, then the selected pairs into their slots (index order again, a warp per
 *            512 candidates); their residual becomes 0
 * Radix path (mode 0: no sampled path; mode 2: the sample missed):
 *   A    grid-stride: v = in + residual (into the residual), finiteness, level-0 histogram
 *        (key >> 20, 2048 bins; shared-memory counts flushed with integer atomics)
 *   walk the bin where the running count from the top reaches k (block scan), run by the last
 *        block of the kernel before it to finish (tk_then_walk: no launch of its own)
 *   B    persistent blocks over tiles: per-tile count above the level-0 bin, level-1
 *        histogram ((key >> 9) & 2047) of the bin's members, which are compacted into the
 *        candidate buffer (warp-aggregated atomics; their order there does not matter); walk
 *   level-2 histogram (key & 511) over the candidates; walk: threshold t and `need`, the
 *        number of entries equal to t that the selection takes (the lowest indices)
 *   counts per tile of candidates > t and == t; one block scans the tiles (ties first, then
 *        the selected counts) into each tile's output offset
 *   C    persistent blocks over tiles: block scans give every selected value its pair slot;
 *        the residual of a selected value becomes 0; the squared error of the rest is summed
 * When the radix candidates overflow their buffer (many equal keys), the level-2 histogram
 * and the tile counts take a full pass instead (each kernel chooses on the device).
 * fixup: header, non-finite payload, status commit.
 * Multi-tensor tables (rule 10): the radix kernels' bodies run per layer on a slice of one
 * launch (a layer's tiles, or block l for the scan): 8 launches for any number of layers.
 * Tables skip the sampled path (same payload; they hold layers of at most a few million
 * values, where three reads cost less than the sampled path's dozen launches).
 */
#include <math.h>
#include <stddef.h>
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
/* The sampled path (1); 0 runs the radix kernels only (same payload). */
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
    uint32_t sthr; /* sampled threshold */
    uint32_t mode; /* 0 exact path; 1 sampled path succeeded; 2 sampled path fell back */
    uint32_t over_next; /* sampled pass: overflow pairs reserved so far */
    uint32_t arrive[6]; /* blocks done, per kernel whose last block walks (tk_then_walk) */
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
    unsigned long long *segs;     /* sampled path: a segment word per chunk (TK_SEG_*) */
    uint2           *slots;       /* sampled path: slot_n pairs per chunk */
    uint2           *over;        /* sampled path: chunks with more than slot_n candidates */
    uint2           *cpairs;      /* sampled path: (index, value) of the candidates, index order */
    size_t           caps;        /* capacity of over and of cpairs */
    size_t           nchunks, slot_n;
    uint32_t        *skeys;       /* sampled path: the sample's keys */
    size_t           nsample, ks; /* draws, and the rank of the threshold among them */
    int              miss;        /* tests: the sample always misses (terse__cmp_topk_cuda_tune) */
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
    unsigned long long *segs;
    uint2           *slots, *over, *cpairs;
    uint64_t         caps, nchunks, slot_n;
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

/* One block (256 or 1024 threads): finds the bin of level `level` holding the k-th largest key;
 * thread t owns the bins of ranks [t B, t B + B) counted from the top. The counts come from
 * other blocks' atomics: read through L2. */
__device__ __forceinline__ void
tk_walk_body(const tk_args_t &a, int level, int sampled, unsigned bx, unsigned gx)
{
    __shared__ unsigned sh[33];
    const int nb = (level == 2) ? 512 : TK_BINS;
    const int B  = (nb + (int)blockDim.x - 1) / (int)blockDim.x; /* 1 .. 8 */
    const uint64_t above = __ldcg((const unsigned long long *)&a.sel->above);
    const uint64_t kr    = a.k - above; /* >= 1 */
    unsigned h[8], sum = 0, base, total;

    (void)bx;
    (void)gx;
    /* sampled: 0 the radix path's walk, 1 the sampled path's, 2 pass S's (before the mode) */
    if (tk_nonfinite(a) || ((sampled == 1) && (tk_mode(a) != 1)) ||
        ((sampled == 0) && (tk_mode(a) == 1))) {
        return;
    }
#pragma unroll
    for (int u = 0; u < 8; ++u) {
        const int r = (int)threadIdx.x * B + u;
        h[u] = ((u < B) && (r < nb)) ? __ldcg(&a.sel->hist[level][nb - 1 - r]) : 0u;
        sum += h[u];
    }
    base = terse_cu_block_exscan(sum, sh, &total);
    if (((uint64_t)base < kr) && (kr <= (uint64_t)base + sum)) {
        uint64_t run = base;
#pragma unroll
        for (int u = 0; u < 8; ++u) {
            if ((run < kr) && (kr <= run + h[u])) {
                const uint32_t win = (uint32_t)(nb - 1 - ((int)threadIdx.x * B + u));
                a.sel->bin[level] = win;
                a.sel->above      = above + run;
                if (level == 2) {
                    a.sel->thr  = (__ldcg(&a.sel->bin[0]) << 20) |
                                  (__ldcg(&a.sel->bin[1]) << 9) | win;
                    a.sel->need = a.k - (above + run);
                }
            }
            run += h[u];
        }
    }
}

/* After a kernel's work (every thread of the block calls it): the last of the kernel's gx
 * blocks to finish runs the walk of `level`, saving a launch (the classic threadfence
 * reduction, each thread fencing: every block's histogram atomics are visible to it). A
 * kernel whose blocks all left early (the mode or the non-finite flag) walks nothing, as the
 * walk would not. */
__device__ __forceinline__ void
tk_then_walk(const tk_args_t &a, int slot, int level, int sampled, unsigned gx)
{
    __shared__ int last;

    /* every thread's histogram atomics performed before its block counts as arrived: thread
     * 0's fence alone does not order the other threads' reductions (the walks then read
     * partial histograms) */
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        last = terse_cu_last_block(&a.sel->arrive[slot], gx);
    }
    __syncthreads();
    if (last) {
        tk_walk_body(a, level, sampled, 0, 1);
    }
}

__device__ __forceinline__ void
tk_pass_a_body(const tk_args_t &a, unsigned bx, unsigned gx)
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
    for (i = (uint64_t)bx * blockDim.x + threadIdx.x; i < a.n;
         i += (uint64_t)gx * blockDim.x) {
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
    tk_then_walk(a, 0, 0, 0, gx);
}

__global__ void __launch_bounds__(TK_THREADS)
tk_pass_a(tk_args_t a)
{
    tk_pass_a_body(a, blockIdx.x, gridDim.x);
}

__device__ __forceinline__ void
tk_pass_b_body(const tk_args_t &a, unsigned bx, unsigned gx)
{
    __shared__ uint32_t h[TK_BINS];
    __shared__ uint32_t cl[TK_TILE]; /* the tile's candidates (any order) */
    __shared__ unsigned cnt[32];
    __shared__ unsigned cn, cbase;
    const int lane = threadIdx.x & 31;
    uint32_t b0;
    int b;

    if (tk_nonfinite(a) || (tk_mode(a) == 1)) {
        return;
    }
    b0 = a.sel->bin[0];
    for (b = threadIdx.x; b < TK_BINS; b += blockDim.x) {
        h[b] = 0;
    }
    /* persistent blocks over the tiles: a skipped call (mode 1) launches few blocks */
    for (uint64_t tile = bx; tile < a.ntiles; tile += gx) {
        const uint64_t tile0 = tile * TK_TILE;
        unsigned above = 0;
        if (threadIdx.x == 0) {
            cn = 0;
        }
        __syncthreads();
        for (int r = 0; r < TK_PER; ++r) {
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
            a.tile_above[tile] = above;
            cbase = (cn > 0) ? atomicAdd(&a.sel->ncand, cn) : 0u; /* one global atomic per tile */
        }
        __syncthreads();
        for (unsigned c = threadIdx.x; c < cn; c += blockDim.x) {
            if ((uint64_t)cbase + c < a.cap) {
                a.cand[cbase + c] = cl[c];
            }
        }
        __syncthreads(); /* cn and cl are rewritten by the next tile */
    }
    for (b = threadIdx.x; b < TK_BINS; b += blockDim.x) {
        if (h[b] != 0) {
            atomicAdd(&a.sel->hist[1][b], h[b]);
        }
    }
    tk_then_walk(a, 1, 1, 0, gx);
}

__global__ void __launch_bounds__(TK_THREADS)
tk_pass_b(tk_args_t a)
{
    tk_pass_b_body(a, blockIdx.x, gridDim.x);
}

/* Level-2 histogram: over the candidates, or over the layer when they overflowed their buffer;
 * then the level-2 walk. */
__device__ __forceinline__ void
tk_hist2_body(const tk_args_t &a, unsigned bx, unsigned gx)
{
    __shared__ uint32_t h[512];
    const uint32_t ncand = a.sel->ncand;
    const uint32_t b0 = a.sel->bin[0], b1 = a.sel->bin[1];
    const int full     = ncand > a.cap;
    const uint64_t lim = full ? a.n : ncand;
    uint64_t c;
    int b;

    if (tk_nonfinite(a) || (tk_mode(a) == 1)) {
        return;
    }
    for (b = threadIdx.x; b < 512; b += blockDim.x) {
        h[b] = 0;
    }
    __syncthreads();
    for (c = (uint64_t)bx * blockDim.x + threadIdx.x; c < lim;
         c += (uint64_t)gx * blockDim.x) {
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
    tk_then_walk(a, 2, 2, 0, gx);
}

__global__ void __launch_bounds__(TK_THREADS)
tk_hist2(tk_args_t a)
{
    tk_hist2_body(a, blockIdx.x, gridDim.x);
}

/* Per-tile counts of the level-0 bin's values above t and equal to t (over the candidates, or
 * the layer when they overflowed). */
__device__ __forceinline__ void
tk_counts_body(const tk_args_t &a, unsigned bx, unsigned gx)
{
    const uint32_t ncand = a.sel->ncand;
    const uint32_t b0 = a.sel->bin[0], thr = a.sel->thr;
    const int full     = ncand > a.cap;
    const uint64_t lim = full ? a.n : ncand;
    uint64_t c;

    if (tk_nonfinite(a) || (tk_mode(a) == 1)) {
        return;
    }
    /* a uniform trip count per warp: the whole warp meets every __match_any_sync */
    for (c = (uint64_t)bx * blockDim.x + (threadIdx.x & ~31u); c < lim;
         c += (uint64_t)gx * blockDim.x) {
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

__global__ void __launch_bounds__(TK_THREADS)
tk_counts(tk_args_t a)
{
    tk_counts_body(a, blockIdx.x, gridDim.x);
}

/* 1 block of 1024: tie offsets, then output offsets, per tile (in tile order), in rounds of
 * 4 tiles a thread so that a warp's loads are consecutive (a thread owning a run of tiles
 * made every load a scattered one: ~100 us for 24 Ki tiles). */
__device__ __forceinline__ void
tk_scan_body(const tk_args_t &a, int sampled, unsigned bx, unsigned gx)
{
    __shared__ unsigned sh[33];
    const uint64_t nt = a.ntiles;
    const long long need = (long long)a.sel->need;
    unsigned eq_carry = 0, out_carry = 0;

    if (tk_nonfinite(a) || (sampled ? (tk_mode(a) != 1) : (tk_mode(a) == 1))) {
        return;
    }
    for (uint64_t r0 = 0; r0 < nt; r0 += 4 * (uint64_t)blockDim.x) {
        const uint64_t t = r0 + 4 * (uint64_t)threadIdx.x;
        unsigned eq[4], sel[4], eb[4], se = 0, ss = 0, e, o, total;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            eq[u]  = (t + u < nt) ? a.tile_eq[t + u] : 0u;
            sel[u] = (t + u < nt) ? a.tile_above[t + u] + a.tile_gtin[t + u] : 0u;
            se += eq[u];
        }
        e = eq_carry + terse_cu_block_exscan(se, sh, &total);
        eq_carry += total;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            long long allow = need - (long long)e;
            allow = (allow < 0) ? 0 : ((allow > (long long)eq[u]) ? (long long)eq[u] : allow);
            eb[u] = e;
            sel[u] += (unsigned)allow;
            e += eq[u];
            ss += sel[u];
        }
        o = out_carry + terse_cu_block_exscan(ss, sh, &total);
        out_carry += total;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            if (t + u < nt) {
                a.tile_eqbase[t + u] = eb[u];
                a.tile_out[t + u]    = o;
            }
            o += sel[u];
        }
    }
}

__global__ void __launch_bounds__(1024)
tk_scan(tk_args_t a, int sampled)
{
    tk_scan_body(a, sampled, blockIdx.x, gridDim.x);
}

/* The output step of pass C and of the sampled path, for one block's run of TK_TILE values:
 * warp w holds entries first + r * 32 + lane (r < TK_PER) of the run, valid below lim, with
 * values v (and indices ix, or with PAIRS 0 the entry number itself); ballots of "above t"
 * and "equal to t", one exchange of the per-warp counts (sgt, seq), then every selected entry
 * gets its pair slot from popcounts (index order: warp, round, lane; the first `allow` ties).
 * Selected: pair written, residual 0. Returns the energy of the rest (PAIRS 0) or minus that
 * of the selected (PAIRS 1: pass S summed every value). Every thread of the block calls it. */
template <int ALIGNED, int PAIRS>
__device__ __forceinline__ double
tk_emit(const tk_args_t &a, uint8_t *pairs, uint32_t thr, long long allow, unsigned out_base,
        uint64_t first, uint64_t lim, const float *v, const uint32_t *ix, unsigned *sgt,
        unsigned *seq)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const unsigned lt = (1u << lane) - 1u;
    unsigned gtm[TK_PER], eqm[TK_PER], cg = 0, ce = 0, gt_before = 0, eq_before = 0, gr = 0, er;
    double e = 0.0;

    allow = (allow < 0) ? 0 : allow;
#pragma unroll
    for (int r = 0; r < TK_PER; ++r) {
        const int ok       = first + (uint64_t)r * 32 + lane < lim;
        const uint32_t key = terse_topk_key(v[r]);
        gtm[r] = __ballot_sync(0xffffffffu, ok && (key > thr));
        eqm[r] = __ballot_sync(0xffffffffu, ok && (key == thr));
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
        const uint64_t c = first + (uint64_t)r * 32 + lane;
        const uint32_t i = PAIRS ? ix[r] : (uint32_t)c;
        const int g = (gtm[r] >> lane) & 1u, q = (eqm[r] >> lane) & 1u;
        const long long ties = (long long)(er + __popc(eqm[r] & lt));
        const double vd      = (double)v[r];
        if (g || (q && (ties < allow))) {
            const unsigned pos = out_base + gt_before + gr + __popc(gtm[r] & lt) +
                                 (unsigned)((ties < allow) ? ties : allow);
            uint8_t *p = pairs + (uint64_t)pos * TERSE_TOPK_PAIR_BYTES;
            if (ALIGNED) {
                *(uint2 *)p = make_uint2(i, __float_as_uint(v[r]));
            } else {
                terse_cu_st_u32(p, i);
                terse_cu_st_u32(p + 4, __float_as_uint(v[r]));
            }
            if (a.res != NULL) {
                a.res[i] = 0.0f;
            }
            if (PAIRS) {
                e = __fma_rn(-vd, vd, e);
            }
        } else if (!PAIRS && (c < lim)) {
            e = e + vd * vd;
        }
        gr += __popc(gtm[r]);
        er += __popc(eqm[r]);
    }
    return e;
}

/* One block per tile; warp w owns values [w * 512, (w + 1) * 512) of the tile, 16 per lane
 * kept in registers with ballots of "above t" and "equal to t"; one block exchange of the
 * per-warp counts, then every selected value gets its slot from popcounts (index order:
 * warp, round, lane). */
template <int ALIGNED>
__device__ __forceinline__ void
tk_pass_c_body(const tk_args_t &a, uint8_t *pairs, unsigned bx, unsigned gx)
{
    __shared__ unsigned sgt[TK_THREADS / 32], seq[TK_THREADS / 32];
    __shared__ double shd[32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    uint32_t thr;
    double err = 0.0;

    if (tk_nonfinite(a) || (tk_mode(a) == 1)) {
        return;
    }
    thr = a.sel->thr;
    /* persistent blocks over the tiles (see tk_pass_b) */
    for (uint64_t tile = bx; tile < a.ntiles; tile += gx) {
        const uint64_t base = tile * TK_TILE + (uint64_t)warp * (32 * TK_PER);
        float x[TK_PER];

#pragma unroll
        for (int r = 0; r < TK_PER; ++r) {
            uint64_t i = base + (uint64_t)r * 32 + lane;
            x[r] = (i < a.n) ? tk_v(a, i) : 0.0f;
        }
        err += tk_emit<ALIGNED, 0>(a, pairs, thr,
                                   (long long)a.sel->need - (long long)a.tile_eqbase[tile],
                                   a.tile_out[tile], base, a.n, x, NULL, sgt, seq);
        __syncthreads(); /* sgt and seq are rewritten by the next tile */
    }
    err = terse_cu_block_sum(err, shd);
    if ((threadIdx.x == 0) && (err != 0.0)) {
        atomicAdd(&a.stat->sq_acc, err);
    }
}

template <int ALIGNED>
__global__ void __launch_bounds__(TK_THREADS)
tk_pass_c(tk_args_t a, uint8_t *pairs)
{
    tk_pass_c_body<ALIGNED>(a, pairs, blockIdx.x, gridDim.x);
}

/* ---------------------------------------------------------------- sampled path (topkt) */
/* 1 block of 1024: draws the sample (as topk.c: index = u32 * n >> 32 of the stream), then the
 * key of its ks-th largest value by a three-level radix select in shared memory. */
__global__ void __launch_bounds__(1024)
tk_sample(tk_args_t a, terse_rng_t rng, uint32_t m, uint32_t ks, uint32_t *skeys, int miss)
{
    __shared__ unsigned h[TK_BINS];
    __shared__ unsigned sh[33];
    __shared__ uint32_t s_prefix, s_bin;
    __shared__ unsigned long long s_above, s_newabove;
    uint32_t i;

    /* 4 draws per thread in flight: the reads are random, each waits for HBM */
    for (i = threadIdx.x; i < m; i += 4 * blockDim.x) {
        uint64_t idx[4];
        float x[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const uint32_t j = i + (uint32_t)u * blockDim.x;
            idx[u] = (j < m) ? ((uint64_t)terse_rng_u32(&rng, rng.offset + j) * a.n) >> 32 : 0;
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            x[u] = (a.res != NULL)
                       ? a.res[idx[u]] + terse_cu_load(a.in, (terse_dtype_t)a.dtype, idx[u])
                       : tk_v(a, idx[u]);
        }
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const uint32_t j = i + (uint32_t)u * blockDim.x;
            if (j < m) {
                skeys[j] = terse_topk_key(x[u]);
            }
        }
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
        /* miss (tests): a threshold above every key, so the radix path must take over */
        a.sel->sthr = miss ? 0xffffffffu : s_prefix;
    }
}

/* Segment word of a chunk of the sampled pass: where its candidates went, and how many. */
#define TK_CHUNK        (32 * TK_PER)        /* values of a warp's chunk */
#define TK_CPT          (TK_TILE / TK_CHUNK) /* chunks of a tile */
#define TK_SEG_OVER     (1ull << 31)         /* in the overflow buffer (else in its slots) */
#define TK_SEG_OFF(w)   ((uint32_t)((w) >> 32))
#define TK_SEG_CNT(w)   ((uint32_t)((w) & 0x7fffffffu))

/* cp.async (sm_80+): 16 bytes global -> shared without registers, completing in commit groups;
 * each lane later reads only the pieces it copied itself, so no barrier is needed. */
__device__ __forceinline__ void
tk_cp16(void *smem, const void *gmem)
{
    const unsigned sa = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(sa), "l"(gmem) : "memory");
}

__device__ __forceinline__ void
tk_cp_commit(void)
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N>
__device__ __forceinline__ void
tk_cp_wait(void)
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

/* The chunk layout of pass S: lane l holds x[4 r + c] = v of value base + 128 r + 4 l + c
 * (r, c < 4), 0 past rem. */
__device__ __forceinline__ uint32_t
tk_sj(int r, int c, int lane)
{
    return (uint32_t)(128 * r + 4 * lane + c);
}

/* x of a chunk by direct loads: in + residual (written back to the residual), or the input
 * alone as tk_v gives it (0 + x for 16-bit input: -0 becomes +0); 16-byte accesses for a
 * whole chunk of aligned fp32, else per value. Every load issued before any use. */
__device__ __forceinline__ void
tk_load_chunk(const tk_args_t &a, uint64_t base, uint32_t rem, int lane, float *x)
{
    const int f32 = a.dtype == TERSE_FLOAT32;
    const float *in = (const float *)a.in + base;
    float *rp = (a.res != NULL) ? a.res + base : NULL;

    if (f32 && (rem == TK_CHUNK) && ((((uintptr_t)in | (uintptr_t)rp) & 15u) == 0)) {
        float4 v[4], q[4];
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            v[r] = __ldg((const float4 *)in + r * 32 + lane);
            q[r] = (rp != NULL) ? ((const float4 *)rp)[r * 32 + lane] : make_float4(0, 0, 0, 0);
        }
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            if (rp != NULL) {
                v[r] = make_float4(q[r].x + v[r].x, q[r].y + v[r].y, q[r].z + v[r].z,
                                   q[r].w + v[r].w);
                ((float4 *)rp)[r * 32 + lane] = v[r];
            }
            x[4 * r]     = v[r].x;
            x[4 * r + 1] = v[r].y;
            x[4 * r + 2] = v[r].z;
            x[4 * r + 3] = v[r].w;
        }
        return;
    }
#pragma unroll
    for (int i = 0; i < TK_PER; ++i) {
        const uint32_t j = tk_sj(i >> 2, i & 3, lane);
        float v = 0.0f;
        if (j < rem) {
            v = f32 ? __ldg((const float *)a.in + base + j)
                    : 0.0f + terse_cu_load(a.in, (terse_dtype_t)a.dtype, base + j);
            if (rp != NULL) {
                v = rp[j] + (f32 ? v : terse_cu_load(a.in, (terse_dtype_t)a.dtype, base + j));
            }
        }
        x[i] = v;
    }
    if (rp != NULL) {
#pragma unroll
        for (int i = 0; i < TK_PER; ++i) {
            const uint32_t j = tk_sj(i >> 2, i & 3, lane);
            if (j < rem) {
                rp[j] = x[i];
            }
        }
    }
}

/* Pass S's look at one chunk (x is 0 past rem): the candidate ballots m and their count, the
 * largest key (a key >= the infinity's bits is not finite), the energy of every
 * value (the output pass subtracts the selected ones': the error is a total less the kept, as
 * the CPU's sampled path reports it) and the candidates' level-0 histogram h. Fused double
 * multiply-adds (the file builds with --fmad=false). FULL: a whole chunk, no range checks. */
template <int FULL>
__device__ __forceinline__ void
tk_s_examine(const float *x, uint32_t rem, int lane, uint32_t sthr, uint32_t *h, unsigned *m,
             unsigned *cnt_p, uint32_t *kmax_p, double *tot_p)
{
    /* two chains of the double sums and of the maxima: one chain of 16 dependent double
     * multiply-adds a chunk left the warps mostly waiting on it */
    uint32_t k0 = 0, k1 = 0;
    double e0 = 0.0, e1 = 0.0;
    unsigned cnt = 0;

#pragma unroll
    for (int i = 0; i < TK_PER; ++i) {
        const uint32_t key = terse_topk_key(x[i]);
        const int cand     = (FULL || (tk_sj(i >> 2, i & 3, lane) < rem)) && (key >= sthr);
        const double xd    = (double)x[i];
        m[i] = __ballot_sync(0xffffffffu, cand);
        if (i & 1) {
            k1 = (key > k1) ? key : k1;
            e1 = __fma_rn(xd, xd, e1);
        } else {
            k0 = (key > k0) ? key : k0;
            e0 = __fma_rn(xd, xd, e0);
        }
        if (cand) {
            atomicAdd(&h[key >> 20], 1u);
        }
    }
#pragma unroll
    for (int i = 0; i < TK_PER; ++i) {
        cnt += __popc(m[i]);
    }
    k0      = (k1 > k0) ? k1 : k0;
    *cnt_p  = cnt;
    *kmax_p = (k0 > *kmax_p) ? k0 : *kmax_p;
    *tot_p  = *tot_p + (e0 + e1);
}

/* The sampled pass; warps are independent (no block barrier in the loop), each striding over
 * chunks of TK_CHUNK values: v = in + residual (into the residual), finiteness, the energy of
 * the values below the sampled threshold, and the values at or above it written as (index,
 * value) pairs, in index order, into the chunk's slot_n slots, or, when more, into the
 * overflow buffer at an offset one atomicAdd reserves; the chunk's segment word says where,
 * its count goes to its tile's (one atomic), its candidates' keys to the block's level-0
 * histogram, and the last block to finish walks level 0 over the candidates.
 * Whole chunks of aligned fp32 input without a residual (the common case, and the target's)
 * stream in through cp.async, two stages a warp: the next chunk is in flight while this one is
 * examined (the register-loading version left too few loads in flight: 230 us for 100 M
 * values, 55 % of HBM bandwidth). Earlier designs made each block of 8 warps agree on a
 * tile's offset (an in-order look-back, then one atomic per tile): the barrier and the wait
 * left too few loads in flight (419-546 us, ~1 TB/s). */
__global__ void __launch_bounds__(TK_THREADS, 3)
tk_pass_s(tk_args_t a)
{
    __shared__ float4 stg[TK_THREADS / 32][2][TK_CHUNK / 4];
    __shared__ uint32_t h[TK_BINS];
    __shared__ double shd[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const unsigned lt = (1u << lane) - 1u;
    const uint32_t sthr = a.sel->sthr;
    const uint64_t nwarps = (uint64_t)gridDim.x * (TK_THREADS / 32);
    const uint64_t nfull  = a.n / TK_CHUNK;
    const int async = (a.dtype == TERSE_FLOAT32) && (a.res == NULL) &&
                      (((uintptr_t)a.in & 15u) == 0);
    double tot = 0.0;
    uint32_t kmax = 0;
    int st = 0;
    uint64_t ch = (uint64_t)blockIdx.x * (TK_THREADS / 32) + (uint64_t)warp;

    for (int b = threadIdx.x; b < TK_BINS; b += blockDim.x) {
        h[b] = 0;
    }
    __syncthreads();
    if (async && (ch < nfull)) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            tk_cp16(&stg[warp][0][r * 32 + lane],
                    (const float4 *)a.in + ch * (TK_CHUNK / 4) + r * 32 + lane);
        }
    }
    tk_cp_commit();
    for (; ch < a.nchunks; ch += nwarps) {
        /* 32-bit offsets within the chunk keep the loop in registers */
        const uint64_t base = ch * TK_CHUNK;
        const uint32_t rem  = (uint32_t)TERSE_MIN(a.n - base, (uint64_t)TK_CHUNK);
        float x[TK_PER];
        unsigned m[TK_PER], cnt, off, over = 0, run = 0;
        uint32_t lim;
        uint2 *dst;

        if (async && (ch < nfull)) {
            const uint64_t nx = ch + nwarps;
            if (nx < nfull) {
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    tk_cp16(&stg[warp][st ^ 1][r * 32 + lane],
                            (const float4 *)a.in + nx * (TK_CHUNK / 4) + r * 32 + lane);
                }
            }
            tk_cp_commit();
            tk_cp_wait<1>(); /* this chunk's group has landed */
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const float4 v = stg[warp][st][r * 32 + lane];
                x[4 * r]     = v.x;
                x[4 * r + 1] = v.y;
                x[4 * r + 2] = v.z;
                x[4 * r + 3] = v.w;
            }
            st ^= 1;
        } else {
            tk_load_chunk(a, base, rem, lane, x);
        }
        if (rem == TK_CHUNK) {
            tk_s_examine<1>(x, rem, lane, sthr, h, m, &cnt, &kmax, &tot);
        } else {
            tk_s_examine<0>(x, rem, lane, sthr, h, m, &cnt, &kmax, &tot);
        }
        if (cnt <= a.slot_n) {
            off = (unsigned)(ch * a.slot_n);
            dst = a.slots + off;
            lim = (uint32_t)a.slot_n;
        } else {
            /* the sum of all reservations is at most n < 2^32 */
            off  = (lane == 0) ? atomicAdd(&a.sel->over_next, cnt) : 0u;
            off  = __shfl_sync(0xffffffffu, off, 0);
            over = 1;
            dst  = a.over + off;
            lim  = (off < a.caps) ? (uint32_t)TERSE_MIN(a.caps - off, (uint64_t)TK_CHUNK) : 0u;
        }
        if (cnt != 0) {
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                /* index order within the 128 values of round r: lane, then component */
                unsigned pos = run + __popc(m[4 * r] & lt) + __popc(m[4 * r + 1] & lt) +
                               __popc(m[4 * r + 2] & lt) + __popc(m[4 * r + 3] & lt);
#pragma unroll
                for (int c = 0; c < 4; ++c) {
                    if ((m[4 * r + c] >> lane) & 1u) {
                        if (pos < lim) {
                            dst[pos] = make_uint2((uint32_t)(base + tk_sj(r, c, lane)),
                                                  __float_as_uint(x[4 * r + c]));
                        }
                        ++pos;
                    }
                }
                run += __popc(m[4 * r]) + __popc(m[4 * r + 1]) + __popc(m[4 * r + 2]) +
                       __popc(m[4 * r + 3]);
            }
        }
        if (lane == 0) {
            a.segs[ch] = ((unsigned long long)off << 32) | (over ? TK_SEG_OVER : 0ull) | cnt;
            if (cnt != 0) {
                atomicAdd(&a.tile_above[ch / TK_CPT], cnt);
            }
        }
    }
    tk_cp_wait<0>();
    if (__syncthreads_or(kmax >= 0x7f800000u) && (threadIdx.x == 0)) {
        atomicOr(&a.stat->call, (uint32_t)TERSE_CMP_NONFINITE);
    }
    tot = terse_cu_block_sum(tot, shd);
    if ((threadIdx.x == 0) && (tot != 0.0)) {
        atomicAdd(&a.stat->sq_acc, tot);
    }
    for (int b = threadIdx.x; b < TK_BINS; b += blockDim.x) {
        if (h[b] != 0) {
            atomicAdd(&a.sel->hist[0][b], h[b]);
        }
    }
    tk_then_walk(a, 3, 0, 2, gridDim.x);
}

/* 1 block of 1024: each tile's first candidate in index order (tile_out, from the counts pass
 * S added in tile_above), read 4 tiles a thread with coalesced loads; then the decision: the
 * sample hit when k <= candidates <= capacity and the overflow buffer held its share;
 * otherwise mode 2, and the exact kernels take over on the prepared v (and sum the energy
 * themselves). */
__global__ void __launch_bounds__(1024)
tk_sscan(tk_args_t a)
{
    __shared__ unsigned sh[33];
    const uint64_t nt = a.ntiles;
    unsigned long long carry = 0;

    if (tk_nonfinite(a)) {
        return;
    }
    /* rounds of 4 coalesced tiles a thread (one round of a thread's run of up to 32 tiles,
     * every load issued first, took twice as long: each warp load touched 32 sectors) */
    for (uint64_t r0 = 0; r0 < nt; r0 += 4 * (uint64_t)blockDim.x) {
        const uint64_t t = r0 + 4 * (uint64_t)threadIdx.x;
        unsigned c[4], s = 0, ex, total;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            c[u] = (t + u < nt) ? a.tile_above[t + u] : 0u;
            s += c[u];
        }
        ex = terse_cu_block_exscan(s, sh, &total);
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            if (t + u < nt) {
                a.tile_out[t + u] = (uint32_t)(carry + ex);
            }
            ex += c[u];
        }
        carry += total;
    }
    {
        const unsigned long long ov = *(volatile uint32_t *)&a.sel->over_next;
        const int hit = (carry >= a.k) && (carry <= a.caps) && (ov <= a.caps);
        if (!hit) {
            /* pass S's level-0 histogram and walk were over the candidates: the radix path
             * starts from an empty histogram and no prefix */
            for (int b = threadIdx.x; b < TK_BINS; b += blockDim.x) {
                a.sel->hist[0][b] = 0;
            }
        }
        if (threadIdx.x == 0) {
            if (hit) {
                a.sel->mode  = 1;
                a.sel->ncand = (uint32_t)carry;
            } else {
                a.sel->mode    = 2;
                a.sel->ncand   = 0;
                a.sel->above   = 0;
                a.sel->bin[0]  = 0;
                a.stat->sq_acc = 0.0;
            }
        }
    }
}

/* Warp per tile: its chunks' candidates, from their slots or the overflow buffer, to their
 * place in index order in cpairs (lane t of the tile's candidates finds its chunk among the
 * eight by their start offsets, held in registers); on the way, the level-1 histogram of the
 * level-0 bin's members, and (last block) its walk. */
__global__ void __launch_bounds__(TK_THREADS)
tk_gather(tk_args_t a)
{
    __shared__ uint32_t h[TK_BINS];
    const int lane = threadIdx.x & 31;
    const uint64_t nwarps = (uint64_t)gridDim.x * (TK_THREADS / 32);
    uint32_t b0;

    if (tk_nonfinite(a) || (tk_mode(a) != 1)) {
        return;
    }
    b0 = a.sel->bin[0];
    for (int b = threadIdx.x; b < TK_BINS; b += blockDim.x) {
        h[b] = 0;
    }
    __syncthreads();
    for (uint64_t tile = (uint64_t)blockIdx.x * (TK_THREADS / 32) + (threadIdx.x >> 5);
         tile < a.ntiles; tile += nwarps) {
        const uint64_t ch = tile * TK_CPT + (uint64_t)lane;
        const unsigned long long w = ((lane < TK_CPT) && (ch < a.nchunks)) ? a.segs[ch] : 0ull;
        const unsigned cnt = TK_SEG_CNT(w);
        unsigned incl = cnt, e[TK_CPT], total;
        unsigned long long sw[TK_CPT];
        const uint32_t dbase = a.tile_out[tile];

#pragma unroll
        for (int o = 1; o < TK_CPT; o <<= 1) {
            const unsigned y = __shfl_up_sync(0xffffffffu, incl, o);
            incl += (lane >= o) ? y : 0u;
        }
#pragma unroll
        for (int u = 0; u < TK_CPT; ++u) {
            e[u]  = __shfl_sync(0xffffffffu, incl - cnt, u);
            sw[u] = __shfl_sync(0xffffffffu, w, u);
        }
        total = __shfl_sync(0xffffffffu, incl, TK_CPT - 1);
        for (unsigned t = lane; t < total; t += 32) {
            unsigned long long ws = sw[0];
            unsigned es = e[0];
#pragma unroll
            for (int u = 1; u < TK_CPT; ++u) {
                if (e[u] <= t) { /* the last chunk starting at or before t holds it */
                    ws = sw[u];
                    es = e[u];
                }
            }
            const uint2 *src = (ws & TK_SEG_OVER) ? a.over : a.slots;
            const uint2 pr   = src[TK_SEG_OFF(ws) + (t - es)];
            const uint32_t key = terse_topk_key(__uint_as_float(pr.y));
            a.cpairs[dbase + t] = pr;
            if ((key >> 20) == b0) {
                atomicAdd(&h[(key >> 9) & 0x7ffu], 1u);
            }
        }
    }
    __syncthreads();
    for (int b = threadIdx.x; b < TK_BINS; b += blockDim.x) {
        if (h[b] != 0) {
            atomicAdd(&a.sel->hist[1][b], h[b]);
        }
    }
    tk_then_walk(a, 4, 1, 1, gridDim.x);
}

/* The radix histogram of level 2 over the candidate pairs (as the exact path; levels 0 and 1
 * come with pass S and the gather), then the walk; `level` 1 is kept for symmetry. */
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
        if ((key >> 20) == b0) {
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
    tk_then_walk(a, 3 + level, level, 1, gridDim.x);
}

/* One block per chunk of TK_TILE candidates (index order): its counts above and equal to t. */
__global__ void __launch_bounds__(TK_THREADS)
tk_cchunk_counts(tk_args_t a)
{
    __shared__ unsigned sh[32];
    const uint64_t cb = (uint64_t)blockIdx.x * TK_TILE;
    const uint32_t nc = a.sel->ncand, thr = a.sel->thr;
    unsigned gt = 0, eq = 0;
    uint32_t cc;

    if (tk_nonfinite(a) || (tk_mode(a) != 1) || (cb >= nc)) {
        return;
    }
    cc = (uint32_t)TERSE_MIN((uint64_t)TK_TILE, nc - cb);
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

/* One block per chunk of TK_TILE candidates: the selected ones, in index order, into their pair
 * slots; their residual becomes 0 and their energy leaves the error (pass S summed all).
 * As pass C: warp w owns candidates [w * 512, (w + 1) * 512) of the chunk, 16 per lane, with
 * ballots of "above t" and "equal to t"; one exchange of the per-warp counts (a block scan per
 * 256 candidates took ~48 us for 1.5 M candidates). */
template <int ALIGNED>
__global__ void __launch_bounds__(TK_THREADS)
tk_cchunk_out(tk_args_t a, uint8_t *pairs)
{
    __shared__ unsigned sgt[TK_THREADS / 32], seq[TK_THREADS / 32];
    __shared__ double shd[32];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const uint64_t cb    = (uint64_t)blockIdx.x * TK_TILE;
    const uint64_t first = cb + (uint64_t)warp * (32 * TK_PER);
    const uint32_t nc    = a.sel->ncand;
    float v[TK_PER];
    uint32_t ix[TK_PER];
    double left;

    if (tk_nonfinite(a) || (tk_mode(a) != 1) || (cb >= nc)) {
        return;
    }
#pragma unroll
    for (int r = 0; r < TK_PER; ++r) {
        const uint64_t c = first + (uint64_t)r * 32 + lane;
        const uint2 cp   = (c < nc) ? a.cpairs[c] : make_uint2(0, 0);
        ix[r] = cp.x;
        v[r]  = __uint_as_float(cp.y);
    }
    left = tk_emit<ALIGNED, 1>(a, pairs, a.sel->thr,
                               (long long)a.sel->need - (long long)a.tile_eqbase[blockIdx.x],
                               a.tile_out[blockIdx.x], first, nc, v, ix, sgt, seq);
    left = terse_cu_block_sum(left, shd);
    if ((threadIdx.x == 0) && (left != 0.0)) {
        atomicAdd(&a.stat->sq_acc, left);
    }
}

__device__ __forceinline__ void
tk_st_u16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

/* Header, non-finite payload (pairs (j, NaN), residual 0), commit. */
__device__ __forceinline__ void
tk_fixup_body(const tk_args_t &a, uint8_t *out, unsigned family, unsigned bx, unsigned gx)
{
    const uint32_t call  = *(volatile uint32_t *)&a.stat->call;
    const uint64_t t0    = (uint64_t)bx * blockDim.x + threadIdx.x;
    const uint64_t step  = (uint64_t)gx * blockDim.x;
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
    if ((threadIdx.x == 0) && terse_cu_last_block(&a.stat->done, gx)) {
        terse_cu_stat_commit(a.stat, 1);
    }
}

__global__ void
tk_fixup(tk_args_t a, uint8_t *out, unsigned family)
{
    tk_fixup_body(a, out, family, blockIdx.x, gridDim.x);
}

/* ---------------------------------------------------------------- decoding */
/* Every check of topk.h's decoder; one thread per pair (+ the header in thread 0). */
__device__ __forceinline__ void
tk_validate_body(const uint8_t *in, uint64_t in_bytes, uint64_t n, uint64_t k, unsigned family,
                 terse_cu_stat_t *st, unsigned bx, unsigned gx)
{
    const uint64_t j = (uint64_t)bx * blockDim.x + threadIdx.x;
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

__global__ void __launch_bounds__(TK_THREADS)
tk_validate(const uint8_t *in, uint64_t in_bytes, uint64_t n, uint64_t k, unsigned family,
            terse_cu_stat_t *st)
{
    tk_validate_body(in, in_bytes, n, k, family, st, blockIdx.x, gridDim.x);
}

/* Applies a validated payload (scatter), or NaN over the layer (rejected or non-finite). */
__device__ __forceinline__ void
tk_apply_body(const uint8_t *in, uint64_t n, uint64_t k, float scale, void *out, int dtype,
              int add, terse_cu_stat_t *st, unsigned bx, unsigned gx)
{
    const uint32_t call = *(volatile uint32_t *)&st->call;
    const uint64_t t0   = (uint64_t)bx * blockDim.x + threadIdx.x;
    const uint64_t step = (uint64_t)gx * blockDim.x;
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
    if ((threadIdx.x == 0) && terse_cu_last_block(&st->done, gx)) {
        terse_cu_stat_commit(st, 0);
    }
}

__global__ void __launch_bounds__(TK_THREADS)
tk_apply(const uint8_t *in, uint64_t n, uint64_t k, float scale, void *out, int dtype, int add,
         terse_cu_stat_t *st)
{
    tk_apply_body(in, n, k, scale, out, dtype, add, st, blockIdx.x, gridDim.x);
}


/* ---------------------------------------------------------------- multi-tensor tables */
/* One layer of a table (device copy). The radix kernels run per layer on a slice of one
 * launch: a layer owns `ntiles` consecutive blocks (its tiles, from `first`) of the grid-sized
 * kernels, and block `l` of the per-layer ones (walk, scan, zero); a block finds its layer by a
 * binary search over `first`. Offsets flagged in `user` are added to the run's base. */
typedef struct tk_entry {
    tk_args_t       a;        /* in: the gradient (compress) or the payload (decode) */
    uint8_t        *out;      /* compress: payload; decode: fp32 accumulator */
    uint64_t        first;    /* the layer's first tile in the table */
    uint64_t        zero16;   /* compress: 16-byte words of the scratch cleared per call */
    uint64_t        bytes;    /* decode: payload bytes */
    uint32_t        family;
    uint32_t        user;     /* TERSE_CU_TUSER_* */
} tk_entry_t;

/* The layer of grid block b (tiled kernels), with its slice: bx within it, gx its tiles. */
__device__ __forceinline__ const tk_entry_t *
tk_t_slice(const tk_entry_t *e, uint32_t n, const uint8_t *user, tk_args_t *a, uint8_t **out,
           unsigned *bx, unsigned *gx)
{
    const tk_entry_t *en = &e[terse_cu_table_find(e, n, blockIdx.x, &tk_entry_t::first)];

    *a  = en->a;
    *bx = (unsigned)(blockIdx.x - en->first);
    *gx = (unsigned)en->a.ntiles;
    if (en->user & TERSE_CU_TUSER_IN) {
        a->in = user + (uintptr_t)en->a.in;
    }
    *out = (en->user & TERSE_CU_TUSER_OUT) ? (uint8_t *)(user + (uintptr_t)en->out) : en->out;
    return en;
}

/* Block l: layer l's scratch cleared (compress), or its accumulator (decode, `acc`). */
__global__ void __launch_bounds__(TK_THREADS)
tk_t_zero(const tk_entry_t *e, const uint8_t *user, int acc)
{
    const tk_entry_t *en = &e[blockIdx.x];

    if (!acc) {
        uint4 *p = (uint4 *)en->a.sel;
        for (uint64_t i = threadIdx.x; i < en->zero16; i += blockDim.x) {
            p[i] = make_uint4(0, 0, 0, 0);
        }
    } else {
        float *p = (float *)((en->user & TERSE_CU_TUSER_OUT) ? user + (uintptr_t)en->out
                                                              : en->out);
        for (uint64_t i = threadIdx.x; i < en->a.n; i += blockDim.x) {
            p[i] = 0.0f;
        }
    }
}

/* The radix kernels over every layer (each walk in its layer's last block of the kernel
 * before): OP 0 pass A, 1 pass B, 2 level-2 histogram, 3 counts,
 * 4 pass C, 5 fixup (the candidate or full variants as each layer's candidates fit). */
template <int OP>
__global__ void __launch_bounds__(TK_THREADS)
tk_t_tiled(const tk_entry_t *e, uint32_t n, const uint8_t *user)
{
    tk_args_t a;
    uint8_t *out;
    unsigned bx, gx;
    const tk_entry_t *en = tk_t_slice(e, n, user, &a, &out, &bx, &gx);

    switch (OP) {
    case 0: tk_pass_a_body(a, bx, gx); break;
    case 1: tk_pass_b_body(a, bx, gx); break;
    case 2: tk_hist2_body(a, bx, gx); break;
    case 3: tk_counts_body(a, bx, gx); break;
    case 4:
        if (((uintptr_t)(out + TERSE_TOPK_HEADER_BYTES) & 7u) == 0) {
            tk_pass_c_body<1>(a, out + TERSE_TOPK_HEADER_BYTES, bx, gx);
        } else {
            tk_pass_c_body<0>(a, out + TERSE_TOPK_HEADER_BYTES, bx, gx);
        }
        break;
    default: tk_fixup_body(a, out, en->family, bx, gx); break;
    }
}

/* Block l, 1024 threads: layer l's tile scan. */
__global__ void __launch_bounds__(1024)
tk_t_scan(const tk_entry_t *e)
{
    tk_scan_body(e[blockIdx.x].a, 0, 0, 1);
}

/* Decode tables: validate (a layer's blocks cover its k pairs from `first`, counted in blocks
 * of TK_THREADS pairs: vfirst), then add (its tiles). */
template <int APPLY>
__global__ void __launch_bounds__(TK_THREADS)
tk_t_decode(const tk_entry_t *e, uint32_t n, const uint8_t *user)
{
    tk_args_t a;
    uint8_t *acc;
    unsigned bx, gx;
    const tk_entry_t *en = tk_t_slice(e, n, user, &a, &acc, &bx, &gx);

    if (!APPLY) {
        /* k <= n: a layer's tiles hold ceil(k / TK_THREADS) / TK_PER blocks of pairs; each block
         * of the slice checks TK_PER runs of TK_THREADS pairs */
        for (unsigned r = 0; r < TK_PER; ++r) {
            tk_validate_body((const uint8_t *)a.in, en->bytes, a.n, a.k, en->family, a.stat,
                             bx * TK_PER + r, gx * TK_PER);
        }
    } else {
        tk_apply_body((const uint8_t *)a.in, a.n, a.k, 1.0f, acc, TERSE_FLOAT32, 1, a.stat, bx,
                      gx);
    }
}

/* ---------------------------------------------------------------- host */
static size_t
tk_align(size_t x)
{
    return (x + 255) & ~(size_t)255;
}

/* The sampled path (both families): 1 on, 0 the radix path only (benchmarks), 2 on but made
 * to miss (tests of the fallback). */
static int tk_sampled_on = TERSE_TOPK_CUDA_SAMPLED;

extern "C" void
terse__cmp_topk_cuda_tune(int sampled)
{
    tk_sampled_on = sampled;
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
    if (tk_sampled_on && (count >= 65536) && (k <= count / 8)) {
        /* ~64 draws above the k-th largest (4096 .. 16384 draws, one block reads them); the
         * threshold at 1.5 k (at least the 16th draw from the top) keeps k <= candidates with
         * a margin of many standard deviations; room for 3x the expected candidates */
        double m = 64.0 * (double)count / (double)k, ks, expect;
        m  = (m < 4096.0) ? 4096.0 : ((m > 16384.0) ? 16384.0 : m);
        m  = (m > 0.25 * (double)count) ? floor(0.25 * (double)count) : m;
        ks = ceil(1.5 * (double)k * m / (double)count);
        ks = (ks < 16.0) ? 16.0 : ((ks > m) ? m : ks);
        expect     = ks * (double)count / m;
        t->nsample = (size_t)m;
        t->ks      = (size_t)ks;
        t->miss    = (tk_sampled_on == 2);
        t->caps    = TERSE_MAX(4 * k + 65536, (size_t)(3.0 * expect));
        t->caps    = TERSE_MIN(count, t->caps);
        /* slots for twice a chunk's expected candidates (16 or 32: count / 4 or / 2 bytes);
         * a chunk with more takes overflow space, one atomic */
        t->nchunks = (count + TK_CHUNK - 1) / TK_CHUNK;
        t->slot_n  = (2.0 * expect * TK_CHUNK / (double)count <= 16.0) ? 16 : 32;
    }
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
    if (t->nsample > 0) {
        TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&t->cpairs, t->caps * sizeof(uint2)),
                         status, err_free_scratch);
        TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&t->over, t->caps * sizeof(uint2)), status,
                         err_free_scratch);
        TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&t->slots,
                                            t->nchunks * t->slot_n * sizeof(uint2)),
                         status, err_free_scratch);
        TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&t->segs,
                                            t->nchunks * sizeof(unsigned long long)),
                         status, err_free_scratch);
        TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&t->skeys, t->nsample * sizeof(uint32_t)),
                         status, err_free_scratch);
    }
    TERSE_CHECK_GOTO(terse__cuda_stat_create(&t->stat), status, err_free_scratch);
    *cuda_p = t;
    return TERSE_OK;

err_free_scratch:
    terse__cuda_free(t->cpairs);
    terse__cuda_free(t->over);
    terse__cuda_free(t->slots);
    terse__cuda_free(t->segs);
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
        terse__cuda_free(t->cpairs);
        terse__cuda_free(t->over);
        terse__cuda_free(t->slots);
        terse__cuda_free(t->segs);
        terse__cuda_free(t->skeys);
        free(t);
    }
}

/* Blocks of TK_THREADS that fill the GPU once with `kernel`, at most `want`: persistent
 * kernels loop over the tiles (terse__cuda_fill_grid). */
static unsigned
tk_persist_grid(const void *kernel, uint64_t want)
{
    return terse__cuda_fill_grid(kernel, TK_THREADS, want);
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
    a.segs        = t->segs;
    a.slots       = t->slots;
    a.over        = t->over;
    a.cpairs      = t->cpairs;
    a.caps        = t->caps;
    a.nchunks     = t->nchunks;
    a.slot_n      = t->slot_n;
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
    unsigned grid_n;
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

    TERSE_CUDA_CHECK_ST(cudaMemsetAsync(t->scratch, 0, t->zero_bytes, s), "cudaMemsetAsync");
    if (t->nsample > 0) {
        /* sampled threshold at ~1.5 k, one pass compacting the candidates in index order, the
         * exact selection among them; a miss leaves mode 2 and the radix kernels below do the
         * work (each kernel checks the mode on the device: no host synchronisation). The
         * exact family draws from a fixed stream: the payload is the exact set either way. */
        terse_rng_t r = ((rng != NULL) && (t->family == TERSE_TOPK_FAMILY_SAMPLED))
                            ? *rng
                            : terse_rng_make(0, TERSE_RNG_TEST, 0, 0, 0);
        const uint64_t nchunk = (t->caps + TK_TILE - 1) / TK_TILE;
        const unsigned grid_w = tk_persist_grid((const void *)tk_gather, (t->ntiles + 7) / 8);
        tk_args_t ac = a; /* the scan over chunks of the index-ordered candidates */
        unsigned grid_s = terse_cu_blocks(t->caps, TK_THREADS);
        grid_s    = (grid_s > 1024) ? 1024 : grid_s;
        ac.ntiles = nchunk;
        tk_sample<<<1, 1024, 0, s>>>(a, r, (uint32_t)t->nsample, (uint32_t)t->ks, t->skeys,
                                     t->miss);
        tk_pass_s<<<tk_persist_grid((const void *)tk_pass_s, (t->nchunks + 7) / 8), TK_THREADS,
                    0, s>>>(a);
        tk_sscan<<<1, 1024, 0, s>>>(a);
        tk_gather<<<grid_w, TK_THREADS, 0, s>>>(a);
        /* level 0: pass S's histogram and walk; level 1: the gather's */
        tk_chist<<<grid_s, TK_THREADS, 0, s>>>(a, 2);
        tk_cchunk_counts<<<(unsigned)nchunk, TK_THREADS, 0, s>>>(a);
        tk_scan<<<1, 1024, 0, s>>>(ac, 1);
        if (((uintptr_t)pairs & 7u) == 0) {
            tk_cchunk_out<1><<<(unsigned)nchunk, TK_THREADS, 0, s>>>(a, pairs);
        } else {
            tk_cchunk_out<0><<<(unsigned)nchunk, TK_THREADS, 0, s>>>(a, pairs);
        }
    }
    /* the walks run in the last block of the kernel before each (tk_then_walk) */
    /* one wave each (grid-stride or persistent): when the sampled path succeeded they only
     * read the mode, and a second wave of such blocks cost ~3 us a kernel */
    tk_pass_a<<<tk_persist_grid((const void *)tk_pass_a, grid_n), TK_THREADS, 0, s>>>(a);
    tk_pass_b<<<tk_persist_grid((const void *)tk_pass_b, t->ntiles), TK_THREADS, 0, s>>>(a);
    tk_hist2<<<tk_persist_grid((const void *)tk_hist2, grid_n), TK_THREADS, 0, s>>>(a);
    tk_counts<<<tk_persist_grid((const void *)tk_counts, grid_n), TK_THREADS, 0, s>>>(a);
    tk_scan<<<1, 1024, 0, s>>>(a, 0);
    if (((uintptr_t)pairs & 7u) == 0) {
        tk_pass_c<1><<<tk_persist_grid((const void *)tk_pass_c<1>, t->ntiles), TK_THREADS, 0,
                       s>>>(a, pairs);
    } else {
        tk_pass_c<0><<<tk_persist_grid((const void *)tk_pass_c<0>, t->ntiles), TK_THREADS, 0,
                       s>>>(a, pairs);
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

/* ---------------------------------------------------------------- tables (host) */
typedef struct tk_table {
    tk_entry_t *dev;
    size_t      n;
    uint64_t    ntiles; /* of every layer */
    int         mode;
} tk_table_t;
static_assert(offsetof(tk_table_t, dev) == 0, "terse__cuda_table_free frees the first member");

extern "C" terse_status_t
terse__cmp_topk_cuda_table_create(const terse_cu_tlayer_t *layers, size_t n, int mode,
                                  void **table_p)
{
    tk_table_t *t = NULL;
    tk_entry_t *h = NULL;
    terse_status_t status;
    uint64_t tiles = 0;
    size_t i;

    *table_p = NULL;
    if ((layers == NULL) || (n == 0) || (n > 65535) || (mode < TERSE_CU_T_COMPRESS) ||
        (mode > TERSE_CU_T_DECOMPRESS_SET) ||
        terse__cuda_ptr_twice(&layers[0].cuda, n, sizeof(layers[0]))) {
        terse_error(TERSE_LOG_CMP, "topk cuda: a table holds 1..65535 distinct instances (%zu "
                    "layers, mode %d)", n, mode);
        return TERSE_ERR_INVALID;
    }
    h = (tk_entry_t *)calloc(n, sizeof(*h));
    t = (tk_table_t *)calloc(1, sizeof(*t));
    if ((h == NULL) || (t == NULL)) {
        terse_error(TERSE_LOG_CMP, "failed to allocate a topk cuda table");
        status = TERSE_ERR_NOMEM;
        goto err;
    }
    for (i = 0; i < n; ++i) {
        const terse_cu_tlayer_t *l = &layers[i];
        const tk_cuda_t *c         = (const tk_cuda_t *)l->cuda;
        if ((c == NULL) || (l->n != c->count) ||
            ((l->in == NULL) && !(l->user & TERSE_CU_TUSER_IN)) ||
            ((l->out == NULL) && !(l->user & TERSE_CU_TUSER_OUT)) || (l->dtype >= TERSE_FLOAT64) ||
            ((l->user & ~(TERSE_CU_TUSER_IN | TERSE_CU_TUSER_OUT)) != 0) ||
            (c->ntiles > UINT32_MAX - tiles) ||
            ((mode != TERSE_CU_T_COMPRESS) && (l->residual != NULL)) ||
            ((mode != TERSE_CU_T_COMPRESS) && (l->user & TERSE_CU_TUSER_IN))) {
            terse_error(TERSE_LOG_CMP, "topk cuda: bad table layer %zu", i);
            status = TERSE_ERR_INVALID;
            goto err;
        }
        h[i].a      = tk_make_args(c, l->in, (mode == TERSE_CU_T_COMPRESS) ? l->dtype
                                                                          : TERSE_FLOAT32,
                                   l->residual);
        h[i].out    = (uint8_t *)l->out;
        h[i].first  = tiles;
        h[i].zero16 = c->zero_bytes / 16;
        h[i].bytes  = TERSE_TOPK_HEADER_BYTES + c->k * TERSE_TOPK_PAIR_BYTES;
        h[i].family = c->family;
        h[i].user   = l->user;
        tiles += c->ntiles;
    }
    TERSE_CHECK_GOTO(terse__cuda_table_upload((void **)&t->dev, h, n * sizeof(*h)), status,
                     err);
    t->n      = n;
    t->ntiles = tiles;
    t->mode   = mode;
    free(h);
    *table_p = t;
    return TERSE_OK;

err:
    terse__cuda_table_free(t);
    free(h);
    return status;
}

extern "C" void
terse__cmp_topk_cuda_table_destroy(void *table)
{
    terse__cuda_table_free(table);
}

extern "C" terse_status_t
terse__cmp_topk_cuda_table_run(void *table, const void *user, terse_stream_t stream)
{
    const tk_table_t *t = (const tk_table_t *)table;
    const uint8_t *u    = (const uint8_t *)user;
    cudaStream_t s      = (cudaStream_t)stream;
    const unsigned nl = (unsigned)t->n, nt = (unsigned)t->ntiles;

    if (t->mode == TERSE_CU_T_COMPRESS) {
        /* each layer's walks run in its last block of passes A, B and the level-2 histogram */
        tk_t_zero<<<nl, TK_THREADS, 0, s>>>(t->dev, u, 0);
        tk_t_tiled<0><<<nt, TK_THREADS, 0, s>>>(t->dev, nl, u);
        tk_t_tiled<1><<<nt, TK_THREADS, 0, s>>>(t->dev, nl, u);
        tk_t_tiled<2><<<nt, TK_THREADS, 0, s>>>(t->dev, nl, u);
        tk_t_tiled<3><<<nt, TK_THREADS, 0, s>>>(t->dev, nl, u);
        tk_t_scan<<<nl, 1024, 0, s>>>(t->dev);
        tk_t_tiled<4><<<nt, TK_THREADS, 0, s>>>(t->dev, nl, u);
        tk_t_tiled<5><<<nt, TK_THREADS, 0, s>>>(t->dev, nl, u);
    } else {
        if (t->mode == TERSE_CU_T_DECOMPRESS_SET) {
            tk_t_zero<<<nl, TK_THREADS, 0, s>>>(t->dev, u, 1);
        }
        tk_t_decode<0><<<nt, TK_THREADS, 0, s>>>(t->dev, nl, u);
        tk_t_decode<1><<<nt, TK_THREADS, 0, s>>>(t->dev, nl, u);
    }
    TERSE_CUDA_LAUNCHED("topk table kernels");
    return TERSE_OK;
}
