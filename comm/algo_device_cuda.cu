/*
 * The one kernel the device wire algorithms need of their own (comm/algo_device.c): fp32
 * accumulators to the caller's dtype, times the AVG scale, with the CPU reference's rounding
 * (terse__convert_from_f32), so the device path's sparse and requant results can be compared
 * with the host path's bit for bit; for one layer, or for many in one launch (a table).
 * Everything else runs in the compressors' kernels or NCCL.
 */
#include <stddef.h>
#include <stdlib.h>

#include <cuda_runtime.h>

#include "cuda_kernels.h"
#include "cuda_util.h"
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

/* ---------------------------------------------------------------- multi-layer */
/* One layer of a from-f32 table: its sums at src + src_off (floats), its output at element
 * dst_off of the caller's buffer, n values, from tile `first` of the launch. */
typedef struct dev_f32_entry {
    uint64_t src_off, dst_off, n, first;
} dev_f32_entry_t;

typedef struct dev_f32_table {
    dev_f32_entry_t *dev;
    uint32_t         n;
    uint64_t         ntiles;
} dev_f32_table_t;
static_assert(offsetof(dev_f32_table_t, dev) == 0, "terse__cuda_table_free frees the first member");

#define DEV_F32_TILE 4096u

/* Persistent blocks over the tiles of every layer; a tile finds its layer by a binary search
 * over `first`; the same single rounding per value as dev_from_f32_kernel. */
__global__ void __launch_bounds__(256)
dev_from_f32_table_kernel(const dev_f32_entry_t *e, uint32_t n, uint64_t ntiles,
                          const float *__restrict__ src, float scale, uint8_t *__restrict__ dst,
                          terse_dtype_t dtype)
{
    for (uint64_t tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const dev_f32_entry_t en = e[terse_cu_table_find(e, n, tile, &dev_f32_entry_t::first)];
        const uint64_t i0 = (tile - en.first) * DEV_F32_TILE;
        const uint64_t i1 = (i0 + DEV_F32_TILE < en.n) ? i0 + DEV_F32_TILE : en.n;
        const float *s = src + en.src_off;
        uint8_t *d = dst + en.dst_off * ((dtype == TERSE_FLOAT32) ? 4u : 2u);
        for (uint64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
            terse_cu_store(d, dtype, i, (scale == 1.0f) ? s[i] : __fmul_rn(s[i], scale));
        }
    }
}

extern "C" terse_status_t
terse__dev_from_f32_table_create(const size_t *src_off, const size_t *dst_off, const size_t *n,
                                 size_t count, void **table_p)
{
    dev_f32_table_t *t = NULL;
    dev_f32_entry_t *h = NULL;
    terse_status_t status;
    uint64_t tiles = 0;
    size_t i;

    *table_p = NULL;
    if ((count == 0) || (count > UINT32_MAX)) {
        return TERSE_ERR_INVALID;
    }
    h = (dev_f32_entry_t *)calloc(count, sizeof(*h));
    t = (dev_f32_table_t *)calloc(1, sizeof(*t));
    if ((h == NULL) || (t == NULL)) {
        status = TERSE_ERR_NOMEM;
        goto err;
    }
    for (i = 0; i < count; ++i) {
        h[i] = (dev_f32_entry_t){src_off[i], dst_off[i], n[i], tiles};
        tiles += (n[i] + DEV_F32_TILE - 1) / DEV_F32_TILE;
    }
    TERSE_CHECK_GOTO(terse__cuda_table_upload((void **)&t->dev, h, count * sizeof(*h)), status,
                     err);
    t->n      = (uint32_t)count;
    t->ntiles = tiles;
    free(h);
    *table_p = t;
    return TERSE_OK;

err:
    terse__cuda_table_free(t);
    free(h);
    return status;
}

extern "C" void
terse__dev_from_f32_table_destroy(void *table)
{
    terse__cuda_table_free(table);
}

extern "C" terse_status_t
terse__dev_from_f32_table_run(void *table, const float *src, float scale, void *dst,
                              terse_dtype_t dtype, terse_stream_t stream)
{
    const dev_f32_table_t *t = (const dev_f32_table_t *)table;
    const uint64_t grid      = (t->ntiles < 8192) ? t->ntiles : 8192;

    if (grid == 0) {
        return TERSE_OK;
    }
    dev_from_f32_table_kernel<<<(unsigned)grid, 256, 0, (cudaStream_t)stream>>>(
        t->dev, t->n, t->ntiles, src, scale, (uint8_t *)dst, dtype);
    return terse__cuda_check_launch("dev_from_f32_table_kernel");
}
