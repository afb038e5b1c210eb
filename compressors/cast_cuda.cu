/*
 * cast on the GPU (cast_cuda.h): one grid-stride pass, the formulas of cast.h; a fixup launch
 * writes the NaN payload and zeroes the residual on a non-finite input, then commits. Tables
 * (many layers, one launch): the same per-element code over tiles of CAST_TILE elements, a
 * block finding its tile's layer by binary search; a fixup per layer (grid.y).
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "cast.h"
#include "cast_cuda.h"
#include "cuda_kernels.h"

#define CAST_THREADS 256
#define CAST_GRID    4096
#define CAST_TILE    (CAST_THREADS * 8) /* elements per tile of a table launch */

typedef struct cast_cuda {
    int              kind;
    float            inv_p;
    float            fp;
    float            clip;
    terse_cu_stat_t *stat;
} cast_cuda_t;

/* Element i of compress: payload, residual, the finiteness probe and squared error. */
__device__ __forceinline__ void
cast_one(const void *in, int dtype, float *residual, uint16_t *out, uint64_t i, int kind,
         float inv_p, float fp, float clip, float *probe, double *acc)
{
    float v = terse_cu_load(in, (terse_dtype_t)dtype, i), own;
    uint16_t h;

    if (residual != NULL) {
        v = v + residual[i];
    }
    if (kind == TERSE_CAST_BF16) {
        h   = terse_float_to_bf16(v);
        own = terse_bf16_to_float(h);
    } else {
        float w = v * inv_p;
        w       = (w < clip) ? w : clip;
        w       = (w > -clip) ? w : -clip;
        h       = terse_cu_float_to_half(w);
        own     = terse_cu_half_to_float(h) * fp;
    }
    out[i] = h;
    *probe = *probe + v * 0.0f;
    if (residual != NULL) {
        residual[i] = v - own;
    }
    {
        double e = (double)v - (double)own;
        *acc     = *acc + e * e;
    }
}

/* A block's flag and squared error into the status block (every thread calls it). */
__device__ __forceinline__ void
cast_block_commit(float probe, double acc, double *sh, terse_cu_stat_t *st)
{
    if (__syncthreads_or(probe != 0.0f) && (threadIdx.x == 0)) {
        atomicOr(&st->call, (uint32_t)TERSE_CMP_NONFINITE);
    }
    acc = terse_cu_block_sum(acc, sh);
    if ((threadIdx.x == 0) && (acc != 0.0)) {
        atomicAdd(&st->sq_acc, acc);
    }
}

/* Element i of decompress: a NaN keeps its bits, as the CPU's multiply does (the GPU would
 * canonicalise). */
__device__ __forceinline__ void
cast_dec_one(const uint8_t *in, uint64_t i, int kind, float factor, void *out, int dtype)
{
    uint16_t h = (uint16_t)(in[2 * i] | (in[2 * i + 1] << 8)); /* need not be aligned */
    float d    = (kind == TERSE_CAST_BF16) ? terse_bf16_to_float(h) : terse_cu_half_to_float(h);

    terse_cu_store(out, (terse_dtype_t)dtype, i, (d != d) ? d : d * factor);
}

__global__ void __launch_bounds__(CAST_THREADS)
cast_compress_kernel(const void *in, int dtype, float *residual, uint64_t n, uint16_t *out,
                     int kind, float inv_p, float fp, float clip, terse_cu_stat_t *st)
{
    __shared__ double sh[32];
    double acc = 0.0;
    float probe = 0.0f;
    uint64_t i;

    for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        cast_one(in, dtype, residual, out, i, kind, inv_p, fp, clip, &probe, &acc);
    }
    cast_block_commit(probe, acc, sh, st);
}

/* mode 0: compress fixup; 1: decompress (NaN on a rejected payload). */
__global__ void
cast_fixup(float *residual, void *out, int dtype, uint64_t n, uint16_t nan16,
           terse_cu_stat_t *st, int mode)
{
    const uint32_t call = *(volatile uint32_t *)&st->call;
    uint64_t i;

    if ((mode == 0) && (call & TERSE_CMP_NONFINITE)) {
        for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
             i += (uint64_t)gridDim.x * blockDim.x) {
            ((uint16_t *)out)[i] = nan16;
            if (residual != NULL) {
                residual[i] = 0.0f;
            }
        }
    } else if ((mode == 1) && (call & TERSE_CU_ERR_PAYLOAD)) {
        for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
             i += (uint64_t)gridDim.x * blockDim.x) {
            terse_cu_store(out, (terse_dtype_t)dtype, i, TERSE_CU_NAN);
        }
    }
    __syncthreads();
    if ((threadIdx.x == 0) && terse_cu_last_block(&st->done, gridDim.x)) {
        terse_cu_stat_commit(st, mode == 0);
    }
}

__global__ void __launch_bounds__(CAST_THREADS)
cast_decompress_kernel(const uint8_t *in, uint64_t n, int kind, float factor, void *out,
                       int dtype, int bad, terse_cu_stat_t *st)
{
    uint64_t i;

    if (bad) {
        if ((blockIdx.x == 0) && (threadIdx.x == 0)) {
            atomicOr(&st->call, (uint32_t)TERSE_CU_ERR_PAYLOAD);
        }
        return;
    }
    for (i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (uint64_t)gridDim.x * blockDim.x) {
        cast_dec_one(in, i, kind, factor, out, dtype);
    }
}

/* ---------------------------------------------------------------- tables */
typedef struct cast_entry {
    const uint8_t   *in;
    float           *residual;
    uint16_t        *pay;
    uint8_t         *out;
    uint64_t         n, first; /* elements; first tile */
    terse_cu_stat_t *stat;
    int              kind, dtype;
    float            inv_p, fp, clip, factor;
    uint32_t         user;
    uint16_t         nan16;
} cast_entry_t;

typedef struct cast_table {
    cast_entry_t *dev;
    size_t        n;
    uint64_t      ntiles;
    int           decompress;
} cast_table_t;
static_assert(offsetof(cast_table_t, dev) == 0, "terse__cuda_table_free frees the first member");

/* The entry of tile t, its user pointers moved onto the run's base. */
__device__ __forceinline__ cast_entry_t
cast_entry_of(const cast_entry_t *tab, uint32_t n, uint64_t t, const uint8_t *user)
{
    cast_entry_t e = tab[terse_cu_table_find(tab, n, t, &cast_entry_t::first)];

    terse_cu_table_rebase<TERSE_CU_CUSER_IN, TERSE_CU_CUSER_OUT>(&e, user);
    return e;
}

__global__ void __launch_bounds__(CAST_THREADS)
cast_table_kernel(const cast_entry_t *tab, uint32_t n, uint64_t ntiles, int decompress,
                  const uint8_t *user)
{
    __shared__ double sh[32];

    for (uint64_t t = blockIdx.x; t < ntiles; t += gridDim.x) {
        const cast_entry_t e = cast_entry_of(tab, n, t, user);
        const uint64_t i0    = (t - e.first) * CAST_TILE;
        const uint64_t i1    = (i0 + CAST_TILE < e.n) ? i0 + CAST_TILE : e.n;
        float probe = 0.0f;
        double acc  = 0.0;

        for (uint64_t i = i0 + threadIdx.x; i < i1; i += CAST_THREADS) {
            if (decompress) {
                cast_dec_one((const uint8_t *)e.pay, i, e.kind, e.factor, e.out, e.dtype);
            } else {
                cast_one(e.in, e.dtype, e.residual, e.pay, i, e.kind, e.inv_p, e.fp, e.clip,
                         &probe, &acc);
            }
        }
        if (!decompress) {
            cast_block_commit(probe, acc, sh, e.stat); /* block-uniform: t is */
        }
    }
}

/* grid (64, layers): cast_fixup of each layer (compress: its NaN payload; decompress: the
 * commit only: a table's payloads are n 16-bit values by construction, so there is no size
 * to reject, unlike a one-layer decompress given in_bytes). */
__global__ void
cast_table_fixup(const cast_entry_t *tab, int decompress)
{
    const cast_entry_t &e  = tab[blockIdx.y];
    terse_cu_stat_t *st    = e.stat;
    const uint32_t call    = *(volatile uint32_t *)&st->call;

    if (!decompress && (call & TERSE_CMP_NONFINITE)) {
        for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < e.n;
             i += (uint64_t)gridDim.x * blockDim.x) {
            e.pay[i] = e.nan16;
            if (e.residual != NULL) {
                e.residual[i] = 0.0f;
            }
        }
    }
    __syncthreads();
    if ((threadIdx.x == 0) && terse_cu_last_block(&st->done, gridDim.x)) {
        terse_cu_stat_commit(st, !decompress);
    }
}

static unsigned
cast_grid(uint64_t n)
{
    unsigned g = terse_cu_blocks(n, CAST_THREADS);
    return (g > CAST_GRID) ? CAST_GRID : g;
}

extern "C" terse_status_t
terse__cmp_cast_cuda_create(int kind, int nranks, void **cuda_p)
{
    cast_cuda_t *c;
    terse_status_t status;

    if ((kind != TERSE_CAST_BF16) && (kind != TERSE_CAST_FP16)) {
        terse_error(TERSE_LOG_CMP, "cast cuda: bad kind %d", kind);
        return TERSE_ERR_INVALID;
    }
    c = (cast_cuda_t *)calloc(1, sizeof(*c));
    if (c == NULL) {
        terse_error(TERSE_LOG_CMP, "failed to allocate cast cuda state");
        return TERSE_ERR_NOMEM;
    }
    nranks   = (nranks > 1) ? nranks : 1;
    c->kind  = kind;
    c->fp    = (float)nranks;
    c->inv_p = 1.0f / c->fp;
    c->clip  = terse__cast_fp16_clip(nranks);
    TERSE_CHECK_GOTO(terse__cuda_stat_create(&c->stat), status, err_free_c);
    *cuda_p = c;
    return TERSE_OK;

err_free_c:
    free(c);
    return status;
}

extern "C" void
terse__cmp_cast_cuda_destroy(void *cuda)
{
    cast_cuda_t *c = (cast_cuda_t *)cuda;

    if (c != NULL) {
        terse__cuda_free(c->stat);
        free(c);
    }
}

extern "C" terse_status_t
terse__cmp_cast_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype, size_t n,
                              float *residual, const terse_rng_t *rng, void *out,
                              size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                              terse_stream_t stream)
{
    cast_cuda_t *c = (cast_cuda_t *)cuda;
    cudaStream_t s = (cudaStream_t)stream;

    (void)rng;
    if ((c == NULL) || ((n > 0) && ((in == NULL) || (out == NULL))) ||
        (dtype >= TERSE_FLOAT64) || (out_bytes != n * sizeof(uint16_t))) {
        terse_error(TERSE_LOG_CMP, "cast cuda: bad compress arguments (count %zu, %zu bytes)", n,
                    out_bytes);
        return TERSE_ERR_INVALID;
    }
    cast_compress_kernel<<<cast_grid(n), CAST_THREADS, 0, s>>>(
        in, (int)dtype, residual, n, (uint16_t *)out, c->kind, c->inv_p, c->fp, c->clip, c->stat);
    TERSE_CUDA_LAUNCHED("cast kernel");
    cast_fixup<<<64, 256, 0, s>>>(residual, out, 0, n,
                                  (c->kind == TERSE_CAST_BF16) ? TERSE_CAST_NAN_BF16
                                                               : TERSE_CAST_NAN_FP16,
                                  c->stat, 0);
    TERSE_CUDA_LAUNCHED("cast fixup");
    if (flags_p != NULL) {
        *flags_p = 0;
    }
    if (sq_err_p != NULL) {
        *sq_err_p = 0.0;
    }
    return TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_cast_cuda_decompress(void *cuda, const void *in, size_t in_bytes, float scale,
                                void *out, terse_dtype_t dtype, size_t n, terse_stream_t stream)
{
    cast_cuda_t *c = (cast_cuda_t *)cuda;
    cudaStream_t s = (cudaStream_t)stream;
    int bad;
    float factor;

    if ((c == NULL) || ((n > 0) && (out == NULL)) || (dtype >= TERSE_FLOAT64)) {
        return TERSE_ERR_INVALID;
    }
    bad    = ((n > 0) && (in == NULL)) || (in_bytes != n * sizeof(uint16_t));
    factor = (c->kind == TERSE_CAST_BF16) ? scale : c->fp * scale;
    cast_decompress_kernel<<<cast_grid(n), CAST_THREADS, 0, s>>>(
        (const uint8_t *)in, n, c->kind, factor, out, (int)dtype, bad, c->stat);
    TERSE_CUDA_LAUNCHED("cast decompress kernel");
    cast_fixup<<<64, 256, 0, s>>>(NULL, out, (int)dtype, n, 0, c->stat, 1);
    TERSE_CUDA_LAUNCHED("cast fixup");
    return bad ? TERSE_ERR_PAYLOAD : TERSE_OK;
}

extern "C" terse_status_t
terse__cmp_cast_cuda_stat(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                          double *sq_err_p)
{
    return terse__cuda_stat_read(((cast_cuda_t *)cuda)->stat, stream, flags_p, sq_err_p);
}

/* ---------------------------------------------------------------- tables (host) */
extern "C" terse_status_t
terse__cmp_cast_cuda_table_create(const terse_cu_clayer_t *layers, size_t n, int decompress,
                                  void **table_p)
{
    cast_table_t *t = NULL;
    cast_entry_t *h = NULL;
    terse_status_t status;
    uint64_t tiles = 0;
    size_t i;

    *table_p = NULL;
    if ((layers == NULL) || (n == 0) || (n > 65535) ||
        terse__cuda_ptr_twice(&layers[0].cuda, n, sizeof(layers[0]))) {
        terse_error(TERSE_LOG_CMP, "cast cuda: a table holds 1..65535 distinct instances (%zu "
                    "layers)", n);
        return TERSE_ERR_INVALID;
    }
    h = (cast_entry_t *)calloc(n, sizeof(*h));
    t = (cast_table_t *)calloc(1, sizeof(*t));
    if ((h == NULL) || (t == NULL)) {
        terse_error(TERSE_LOG_CMP, "failed to allocate a cast cuda table");
        status = TERSE_ERR_NOMEM;
        goto err;
    }
    for (i = 0; i < n; ++i) {
        const terse_cu_clayer_t *l = &layers[i];
        const cast_cuda_t *c       = (const cast_cuda_t *)l->cuda;
        if ((c == NULL) || (l->dtype >= TERSE_FLOAT64) || (l->pay == NULL) ||
            ((l->user & ~(TERSE_CU_CUSER_IN | TERSE_CU_CUSER_OUT)) != 0)) {
            terse_error(TERSE_LOG_CMP, "cast cuda: bad table layer %zu", i);
            status = TERSE_ERR_INVALID;
            goto err;
        }
        h[i].in       = (const uint8_t *)l->in;
        h[i].residual = l->residual;
        h[i].pay      = (uint16_t *)l->pay;
        h[i].out      = (uint8_t *)l->out;
        h[i].n        = l->n;
        h[i].first    = tiles;
        h[i].stat     = c->stat;
        h[i].kind     = c->kind;
        h[i].dtype    = (int)l->dtype;
        h[i].inv_p    = c->inv_p;
        h[i].fp       = c->fp;
        h[i].clip     = c->clip;
        h[i].factor   = (c->kind == TERSE_CAST_BF16) ? l->scale : c->fp * l->scale;
        h[i].user     = l->user;
        h[i].nan16    = (c->kind == TERSE_CAST_BF16) ? TERSE_CAST_NAN_BF16 : TERSE_CAST_NAN_FP16;
        tiles += (l->n + CAST_TILE - 1) / CAST_TILE;
    }
    TERSE_CHECK_GOTO(terse__cuda_table_upload((void **)&t->dev, h, n * sizeof(*h)), status,
                     err);
    t->n          = n;
    t->ntiles     = tiles;
    t->decompress = decompress;
    free(h);
    *table_p = t;
    return TERSE_OK;

err:
    terse__cuda_table_free(t);
    free(h);
    return status;
}

extern "C" void
terse__cmp_cast_cuda_table_destroy(void *table)
{
    terse__cuda_table_free(table);
}

extern "C" terse_status_t
terse__cmp_cast_cuda_table_run(void *table, const void *user, terse_stream_t stream)
{
    const cast_table_t *t = (const cast_table_t *)table;
    cudaStream_t s        = (cudaStream_t)stream;

    if (t->ntiles > 0) {
        cast_table_kernel<<<(unsigned)((t->ntiles < CAST_GRID) ? t->ntiles : CAST_GRID),
                            CAST_THREADS, 0, s>>>(t->dev, (uint32_t)t->n, t->ntiles,
                                                  t->decompress, (const uint8_t *)user);
        TERSE_CUDA_LAUNCHED("cast table kernel");
    }
    cast_table_fixup<<<dim3(64, (unsigned)t->n), 256, 0, s>>>(t->dev, t->decompress);
    TERSE_CUDA_LAUNCHED("cast table fixup");
    return TERSE_OK;
}
