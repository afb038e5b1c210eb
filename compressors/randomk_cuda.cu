/*
 * randomk on the GPU (randomk_cuda.h). Two passes, like the CPU reference:
 *   1. elementwise: v = in + residual into the residual, finiteness and sum of v^2;
 *   2. one thread per sent position j: idx(j) of the Feistel permutation, out[j] = v[idx],
 *      residual[idx] = 0 (indices are distinct: no two threads touch one element).
 * A fixup launch zeroes the residual on a non-finite input and commits the status block.
 *
 * Tables (many layers, a fixed number of launches): the same per-element code over tiles of
 * RK_TILE elements (pass 1, decompress's zeroing) or RK_TILE sent positions (pass 2, the
 * scatter), a block finding its tile's layer by binary search. The fixup folds into pass 2:
 * pass 1 has finished when pass 2 starts, so each tile already knows whether its layer was
 * non-finite (it then writes NaN and zeroes a strided share of the residual instead of
 * sending), and the last tile of a layer to finish commits the layer's status block (a
 * per-layer count of tiles in the block's `done`). Compress and decompress take two launches
 * each, whatever the number of layers.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "cuda_kernels.h"
#include "randomk.h"
#include "randomk_cuda.h"

#define RK_THREADS 256
#define RK_GRID    4096
#define RK_TILE    (RK_THREADS * 8) /* elements, or sent positions, per tile of a table launch */
#define RK_MAX_LAYERS 65535

typedef struct rk_cuda {
    size_t           count;
    size_t           k;
    uint32_t        *index; /* device, k */
    terse_cu_stat_t *stat;  /* device */
} rk_cuda_t;

/* Element i of pass 1: v = in + residual (into the residual), its finiteness and v^2. */
__device__ __forceinline__ void
rk_add(const void *in, int dtype, float *residual, uint64_t i, int *bad, double *acc)
{
    float x = terse_cu_load(in, (terse_dtype_t)dtype, i);

    if (residual != NULL) {
        x           = residual[i] + x;
        residual[i] = x;
    }
    *bad |= !terse_cu_isfinite(x);
    *acc = *acc + (double)x * (double)x;
}

/* A block's pass-1 flag and sum of v^2 into the status block (every thread calls it). */
__device__ __forceinline__ void
rk_add_commit(int bad, double acc, double *sh, terse_cu_stat_t *st)
{
    if (__syncthreads_or(bad) && (threadIdx.x == 0)) {
        atomicOr(&st->call, (uint32_t)TERSE_CMP_NONFINITE);
    }
    acc = terse_cu_block_sum(acc, sh);
    if ((threadIdx.x == 0) && (acc != 0.0)) {
        atomicAdd(&st->sq_acc, acc);
    }
}

/* Sent position j of pass 2: out[j] = v[idx(j)], the residual's entry cleared; returns v. */
__device__ __forceinline__ float
rk_send(const void *in, int dtype, float *residual, const terse_randomk_perm_t *perm,
        uint64_t j, float *out, uint32_t *index)
{
    uint32_t idx = (uint32_t)terse_randomk_index(perm, j);
    float x;

    if (residual != NULL) {
        x             = residual[idx];
        residual[idx] = 0.0f;
    } else {
        x = terse_cu_load(in, (terse_dtype_t)dtype, idx);
    }
    index[j] = idx;
    out[j]   = x;
    return x;
}

/* Sent position j of decompress: a NaN keeps its bits, as the CPU's multiply does (the GPU
 * would canonicalise). */
__device__ __forceinline__ void
rk_put(const float *in, float scale, const uint32_t *index, uint64_t j, void *out, int dtype)
{
    float x = in[j];

    terse_cu_store(out, (terse_dtype_t)dtype, index[j], (x != x) ? x : scale * x);
}

/* The compress commit of the one-layer fixup (thread 0 of the call's last block): a finite
 * total - sent summed in another order may dip below 0. */
__device__ __forceinline__ void
rk_commit(terse_cu_stat_t *st, int compress)
{
    const uint32_t call = *(volatile uint32_t *)&st->call;

    if (compress && !(call & TERSE_CMP_NONFINITE) && (*(volatile double *)&st->sq_acc < 0.0)) {
        st->sq_acc = 0.0;
    }
    terse_cu_stat_commit(st, compress);
}

__global__ void __launch_bounds__(RK_THREADS)
rk_pass1(const void *in, int dtype, float *residual, uint64_t n, terse_cu_stat_t *st)
{
    __shared__ double sh[32];
    uint64_t i;
    double acc = 0.0;
    int bad = 0;

    for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        rk_add(in, dtype, residual, i, &bad, &acc);
    }
    rk_add_commit(bad, acc, sh, st);
}

__global__ void __launch_bounds__(RK_THREADS)
rk_pass2(const void *in, int dtype, float *residual, terse_randomk_perm_t perm, uint64_t k,
         float *out, uint32_t *index, terse_cu_stat_t *st)
{
    __shared__ double sh[32];
    uint64_t j = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;
    double acc = 0.0;

    if (j < k) {
        float x = rk_send(in, dtype, residual, &perm, j, out, index);
        acc     = (double)x * (double)x;
    }
    acc = terse_cu_block_sum(acc, sh);
    if ((threadIdx.x == 0) && (acc != 0.0)) {
        atomicAdd(&st->sq_acc, -acc);
    }
}

/* mode 0: compress (zero the residual when non-finite); 1: decompress (NaN when rejected). */
__global__ void
rk_fixup(float *residual, void *out, int dtype, uint64_t n, uint64_t k, terse_cu_stat_t *st,
         int mode)
{
    const uint32_t call = *(volatile uint32_t *)&st->call;
    uint64_t i;

    if ((mode == 0) && (call & TERSE_CMP_NONFINITE)) {
        /* the payload turns NaN: on the device no host-side sentinel knows the flag in time,
         * so the sum itself carries it (rule 3), as cast and powersgd payloads do */
        for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < k;
             i += (uint64_t)gridDim.x * blockDim.x) {
            ((float *)out)[i] = TERSE_CU_NAN;
        }
        for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; (residual != NULL) && (i < n);
             i += (uint64_t)gridDim.x * blockDim.x) {
            residual[i] = 0.0f;
        }
    } else if ((mode == 1) && (call & TERSE_CU_ERR_PAYLOAD)) {
        for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
             i += (uint64_t)gridDim.x * blockDim.x) {
            terse_cu_store(out, (terse_dtype_t)dtype, i, TERSE_CU_NAN);
        }
    }
    __syncthreads();
    if ((threadIdx.x == 0) && terse_cu_last_block(&st->done, gridDim.x)) {
        rk_commit(st, mode == 0);
    }
}

__global__ void
rk_set_flag(terse_cu_stat_t *st, uint32_t flag)
{
    atomicOr(&st->call, flag);
}

__global__ void __launch_bounds__(RK_THREADS)
rk_scatter(const float *in, float scale, const uint32_t *index, uint64_t k, void *out, int dtype)
{
    uint64_t j = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x;

    if (j < k) {
        rk_put(in, scale, index, j, out, dtype);
    }
}

/* ---------------------------------------------------------------- tables */
typedef struct rk_entry {
    const uint8_t   *in;
    float           *residual;
    float           *pay;
    uint8_t         *out;
    uint32_t        *index;  /* the instance's */
    terse_cu_stat_t *stat;   /* the instance's */
    uint64_t         n, k;
    uint64_t         first;  /* first tile over the elements (pass 1, zeroing) */
    uint64_t         first2; /* first tile over the sent positions (pass 2, scatter) */
    uint64_t         tiles2; /* tiles over the sent positions: at least 1 (k >= 1) */
    terse_rng_t      rng;
    int              dtype;
    float            scale;
    uint32_t         user;
} rk_entry_t;

typedef struct rk_table {
    rk_entry_t *dev;
    size_t      n;
    uint64_t    tiles, tiles2;
    int         decompress;
} rk_table_t;
static_assert(offsetof(rk_table_t, dev) == 0, "terse__cuda_table_free frees the first member");

/* The entry of tile t (over the sent positions when `sent`), its user pointers moved onto the
 * run's base. Every layer has at least one tile of each kind, so the first tiles strictly
 * increase and the last entry whose first tile is <= t is t's. */
__device__ __forceinline__ rk_entry_t
rk_entry_of(const rk_entry_t *tab, uint32_t n, uint64_t t, int sent, const uint8_t *user)
{
    rk_entry_t e =
        tab[terse_cu_table_find(tab, n, t, sent ? &rk_entry_t::first2 : &rk_entry_t::first)];

    terse_cu_table_rebase<TERSE_CU_RUSER_IN, TERSE_CU_RUSER_OUT>(&e, user);
    return e;
}

/* Compress pass 1 of every layer (rk_pass1 over tiles), or decompress's zeroing of every
 * output (the one-layer path's cudaMemsetAsync). */
__global__ void __launch_bounds__(RK_THREADS)
rk_table_elems(const rk_entry_t *tab, uint32_t n, uint64_t ntiles, int decompress,
               const uint8_t *user)
{
    __shared__ double sh[32];

    for (uint64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
        const rk_entry_t e = rk_entry_of(tab, n, t, 0, user);
        const uint64_t i0  = (t - e.first) * RK_TILE;
        const uint64_t i1  = (i0 + RK_TILE < e.n) ? i0 + RK_TILE : e.n;
        double acc = 0.0;
        int bad    = 0;

        for (uint64_t i = i0 + threadIdx.x; i < i1; i += RK_THREADS) {
            if (decompress) {
                terse_cu_store(e.out, (terse_dtype_t)e.dtype, i, 0.0f);
            } else {
                rk_add(e.in, e.dtype, e.residual, i, &bad, &acc);
            }
        }
        if (!decompress) {
            rk_add_commit(bad, acc, sh, e.stat); /* block-uniform: t is */
        }
    }
}

/* Compress pass 2 of every layer (rk_pass2, then rk_fixup's work), or decompress's scatter;
 * the last tile of a layer commits its status block. step replaces rng.hi[0]. */
__global__ void __launch_bounds__(RK_THREADS)
rk_table_sent(const rk_entry_t *tab, uint32_t n, uint64_t ntiles, int decompress,
              uint32_t step, const uint8_t *user)
{
    __shared__ double sh[32];

    for (uint64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
        const rk_entry_t e = rk_entry_of(tab, n, t, 1, user);
        const uint64_t tl  = t - e.first2;
        const uint64_t j0  = tl * RK_TILE;
        const uint64_t j1  = (j0 + RK_TILE < e.k) ? j0 + RK_TILE : e.k;
        double acc = 0.0;

        if (decompress) {
            for (uint64_t j = j0 + threadIdx.x; j < j1; j += RK_THREADS) {
                rk_put(e.pay, e.scale, e.index, j, e.out, e.dtype);
            }
            __syncthreads();
        } else {
            /* pass 1 of every layer is done: the flag is final (block-uniform) */
            const int bad = (*(volatile uint32_t *)&e.stat->call & TERSE_CMP_NONFINITE) != 0;
            terse_rng_t rng = e.rng;
            terse_randomk_perm_t perm;

            rng.hi[0] = step;
            perm      = terse_randomk_perm_make(&rng, e.n);
            for (uint64_t j = j0 + threadIdx.x; j < j1; j += RK_THREADS) {
                if (bad) {
                    /* what rk_fixup leaves: the indices, a NaN payload (the sum carries the
                     * flag, rule 3) and a zero residual; nothing of the residual is read, so
                     * the tiles zeroing it race with no one */
                    e.index[j] = (uint32_t)terse_randomk_index(&perm, j);
                    e.pay[j]   = TERSE_CU_NAN;
                } else {
                    float x = rk_send(e.in, e.dtype, e.residual, &perm, j, e.pay, e.index);
                    acc     = acc + (double)x * (double)x;
                }
            }
            if (bad && (e.residual != NULL)) {
                /* this tile's share of the layer's residual; rare (a non-finite step) */
                for (uint64_t i = tl * RK_THREADS + threadIdx.x; i < e.n;
                     i += e.tiles2 * RK_THREADS) {
                    e.residual[i] = 0.0f;
                }
            }
            acc = terse_cu_block_sum(acc, sh); /* ends every thread's read of the flag */
            if ((threadIdx.x == 0) && (acc != 0.0)) {
                atomicAdd(&e.stat->sq_acc, -acc);
            }
        }
        if ((threadIdx.x == 0) && terse_cu_last_block(&e.stat->done, (uint32_t)e.tiles2)) {
            rk_commit(e.stat, !decompress);
        }
    }
}

static unsigned
rk_grid(uint64_t n)
{
    uint64_t b = (n + RK_THREADS - 1) / RK_THREADS;
    b          = (b > 4096) ? 4096 : b;
    return (unsigned)((b > 0) ? b : 1);
}

extern "C" terse_status_t
terse__cmp_randomk_cuda_create(size_t count, size_t k, void **cuda_p)
{
    rk_cuda_t *r;
    terse_status_t status;

    if ((k == 0) || (k > count) || (count > ((size_t)1 << 32))) {
        terse_error(TERSE_LOG_CMP, "randomk cuda: bad k %zu of %zu", k, count);
        return TERSE_ERR_INVALID;
    }
    r = (rk_cuda_t *)calloc(1, sizeof(*r));
    if (r == NULL) {
        terse_error(TERSE_LOG_CMP, "failed to allocate randomk cuda state");
        return TERSE_ERR_NOMEM;
    }
    r->count = count;
    r->k     = k;
    TERSE_CHECK_GOTO(terse__cuda_calloc((void **)&r->index, k * sizeof(uint32_t)), status,
                     err_free_r);
    TERSE_CHECK_GOTO(terse__cuda_stat_create(&r->stat), status, err_free_index);
    *cuda_p = r;
    return TERSE_OK;

err_free_index:
    terse__cuda_free(r->index);
err_free_r:
    free(r);
    return status;
}

extern "C" void
terse__cmp_randomk_cuda_destroy(void *cuda)
{
    rk_cuda_t *r = (rk_cuda_t *)cuda;

    if (r != NULL) {
        terse__cuda_free(r->stat);
        terse__cuda_free(r->index);
        free(r);
    }
}

extern "C" terse_status_t
terse__cmp_randomk_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype, size_t n,
                                 float *residual, const terse_rng_t *rng, void *out,
                                 size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                                 terse_stream_t stream)
{
    rk_cuda_t *r   = (rk_cuda_t *)cuda;
    cudaStream_t s = (cudaStream_t)stream;
    terse_randomk_perm_t perm;

    if ((r == NULL) || (in == NULL) || (n != r->count) || (rng == NULL) || (out == NULL) ||
        (dtype >= TERSE_FLOAT64) || (out_bytes != r->k * sizeof(float))) {
        terse_error(TERSE_LOG_CMP, "randomk cuda: bad compress arguments (count %zu, %zu bytes)",
                    n, out_bytes);
        return TERSE_ERR_INVALID;
    }
    perm = terse_randomk_perm_make(rng, n);
    rk_pass1<<<rk_grid(n), RK_THREADS, 0, s>>>(in, (int)dtype, residual, n, r->stat);
    TERSE_CUDA_LAUNCHED("randomk pass 1");
    rk_pass2<<<terse_cu_blocks(r->k, RK_THREADS), RK_THREADS, 0, s>>>(
        in, (int)dtype, residual, perm, r->k, (float *)out, r->index, r->stat);
    TERSE_CUDA_LAUNCHED("randomk pass 2");
    rk_fixup<<<64, RK_THREADS, 0, s>>>(residual, out, 0, n, r->k, r->stat, 0);
    TERSE_CUDA_LAUNCHED("randomk fixup");
    if (flags_p != NULL) {
        *flags_p = 0;
    }
    if (sq_err_p != NULL) {
        *sq_err_p = 0.0;
    }
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_randomk_cuda_decompress(void *cuda, const void *in, size_t in_bytes, float scale,
                                   void *out, terse_dtype_t dtype, size_t n,
                                   terse_stream_t stream)
{
    rk_cuda_t *r   = (rk_cuda_t *)cuda;
    cudaStream_t s = (cudaStream_t)stream;
    int bad;

    if ((r == NULL) || (out == NULL) || (n != r->count) || (dtype >= TERSE_FLOAT64)) {
        return TERSE_ERR_INVALID;
    }
    bad = (in == NULL) || (in_bytes != r->k * sizeof(float));
    TERSE_CUDA_CHECK_ST(cudaMemsetAsync(out, 0, n * terse_dtype_size(dtype), s),
                        "cudaMemsetAsync");
    if (bad) {
        rk_set_flag<<<1, 1, 0, s>>>(r->stat, TERSE_CU_ERR_PAYLOAD);
    } else {
        rk_scatter<<<terse_cu_blocks(r->k, RK_THREADS), RK_THREADS, 0, s>>>(
            (const float *)in, scale, r->index, r->k, out, (int)dtype);
    }
    TERSE_CUDA_LAUNCHED("randomk scatter");
    rk_fixup<<<64, RK_THREADS, 0, s>>>(NULL, out, (int)dtype, n, r->k, r->stat, 1);
    TERSE_CUDA_LAUNCHED("randomk fixup");
    return bad ? TERSE_ERR_PAYLOAD : TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_randomk_cuda_stat(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                             double *sq_err_p)
{
    return terse__cuda_stat_read(((rk_cuda_t *)cuda)->stat, stream, flags_p, sq_err_p);
}

extern "C" const uint32_t *
terse__cmp_randomk_cuda_index(void *cuda)
{
    return ((rk_cuda_t *)cuda)->index;
}

/* ---------------------------------------------------------------- tables (host) */
static unsigned
rk_table_grid(uint64_t tiles)
{
    return (unsigned)((tiles < RK_GRID) ? tiles : RK_GRID);
}

extern "C" terse_status_t
terse__cmp_randomk_cuda_table_create(const terse_cu_rlayer_t *layers, size_t n, int decompress,
                                     void **table_p)
{
    rk_table_t *t = NULL;
    rk_entry_t *h = NULL;
    terse_status_t status;
    uint64_t tiles = 0, tiles2 = 0;
    size_t i;

    if (table_p == NULL) {
        return TERSE_ERR_INVALID;
    }
    *table_p = NULL;
    if ((layers == NULL) || (n == 0) || (n > RK_MAX_LAYERS) ||
        terse__cuda_ptr_twice(&layers[0].cuda, n, sizeof(layers[0]))) {
        terse_error(TERSE_LOG_CMP, "randomk cuda: a table holds 1..%d distinct instances (%zu "
                    "layers)", RK_MAX_LAYERS, n);
        return TERSE_ERR_INVALID;
    }
    h = (rk_entry_t *)calloc(n, sizeof(*h));
    t = (rk_table_t *)calloc(1, sizeof(*t));
    if ((h == NULL) || (t == NULL)) {
        terse_error(TERSE_LOG_CMP, "failed to allocate a randomk cuda table");
        status = TERSE_ERR_NOMEM;
        goto err;
    }
    for (i = 0; i < n; ++i) {
        const terse_cu_rlayer_t *l = &layers[i];
        const rk_cuda_t *r         = (const rk_cuda_t *)l->cuda;
        /* a user-relative pointer may be offset 0, so only absolute ones must be set */
        const int no_in  = (l->in == NULL) && !(l->user & TERSE_CU_RUSER_IN);
        const int no_out = (l->out == NULL) && !(l->user & TERSE_CU_RUSER_OUT);
        if ((r == NULL) || (l->n != r->count) || (l->k != r->k) || (l->dtype >= TERSE_FLOAT64) ||
            (l->pay == NULL) || (decompress ? no_out : no_in) ||
            ((l->user & ~(TERSE_CU_RUSER_IN | TERSE_CU_RUSER_OUT)) != 0)) {
            terse_error(TERSE_LOG_CMP, "randomk cuda: bad table layer %zu (n %llu k %llu of an "
                        "instance of %zu, %zu; user %#x)", i, (unsigned long long)l->n,
                        (unsigned long long)l->k, (r != NULL) ? r->count : 0,
                        (r != NULL) ? r->k : 0, (unsigned)l->user);
            status = TERSE_ERR_INVALID;
            goto err;
        }
        h[i].in       = (const uint8_t *)l->in;
        h[i].residual = l->residual;
        h[i].pay      = l->pay;
        h[i].out      = (uint8_t *)l->out;
        h[i].index    = r->index;
        h[i].stat     = r->stat;
        h[i].n        = r->count;
        h[i].k        = r->k;
        h[i].first    = tiles;
        h[i].first2   = tiles2;
        h[i].tiles2   = (r->k + RK_TILE - 1) / RK_TILE;
        h[i].rng      = l->rng;
        h[i].dtype    = (int)l->dtype;
        h[i].scale    = l->scale;
        h[i].user     = l->user;
        tiles += (r->count + RK_TILE - 1) / RK_TILE;
        tiles2 += h[i].tiles2;
    }
    TERSE_CHECK_GOTO(terse__cuda_table_upload((void **)&t->dev, h, n * sizeof(*h)), status,
                     err);
    t->n          = n;
    t->tiles      = tiles;
    t->tiles2     = tiles2;
    t->decompress = (decompress != 0);
    free(h);
    *table_p = t;
    return TERSE_OK;

err:
    terse__cuda_table_free(t);
    free(h);
    return status;
}

extern "C" void
terse__cmp_randomk_cuda_table_destroy(void *table)
{
    terse__cuda_table_free(table);
}

extern "C" terse_status_t
terse__cmp_randomk_cuda_table_run(void *table, uint32_t step, const void *user,
                                  terse_stream_t stream)
{
    const rk_table_t *t = (const rk_table_t *)table;
    cudaStream_t s      = (cudaStream_t)stream;

    if (t == NULL) {
        return TERSE_ERR_INVALID;
    }
    rk_table_elems<<<rk_table_grid(t->tiles), RK_THREADS, 0, s>>>(
        t->dev, (uint32_t)t->n, t->tiles, t->decompress, (const uint8_t *)user);
    TERSE_CUDA_LAUNCHED(t->decompress ? "randomk table zeroing" : "randomk table pass 1");
    rk_table_sent<<<rk_table_grid(t->tiles2), RK_THREADS, 0, s>>>(
        t->dev, (uint32_t)t->n, t->tiles2, t->decompress, step, (const uint8_t *)user);
    TERSE_CUDA_LAUNCHED(t->decompress ? "randomk table scatter" : "randomk table pass 2");
    return TERSE_OK;
}
