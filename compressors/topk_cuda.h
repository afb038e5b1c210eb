/*
 * CUDA kernels of topk and topkt (topk_cuda.cu): the payload of topk.h, bit for bit. Both
 * families select the exact top-k of |v| (ties: lowest index), emitted in increasing index
 * order; they differ only in the header's family field (topk.h: the sampled threshold changes
 * the cost, never the set).
 *
 * Selection: radix select on the key |v| bits, 11 + 11 + 9 bits. Pass A adds the residual and
 * builds the level-0 histogram; pass B the level-1 histogram of the chosen bin, counts per tile
 * what lies above it, and compacts the chosen bin's members (candidates); level 2 and the tie
 * counts then run over the candidates only (a full pass only when they overflow their buffer),
 * and pass C writes the pairs in index order from per-tile prefix sums. Three reads of v in the
 * common case; integer atomics only (counts do not depend on order), so the payload is
 * deterministic. topkt first tries its sampled threshold: one pass compacts the values at or
 * above it (in index order per tile) and the select runs over those ~1.5 k candidates only;
 * when the sample misses (fewer than k, or too many) the exact kernels run on the same
 * launch (each kernel checks on the device which path is live). Launchers never wait; flags
 * and the squared error go to the status block.
 */
#ifndef TERSE_TOPK_CUDA_H
#define TERSE_TOPK_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "compressor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Device state of one layer: count elements (1..UINT32_MAX), k (1..count), family
 * TERSE_TOPK_FAMILY_EXACT or _SAMPLED (header field only). Scratch is sized here.
 * [out] cuda_p: release with terse__cmp_topk_cuda_destroy. Returns TERSE_OK,
 * TERSE_ERR_INVALID, TERSE_ERR_NOMEM or TERSE_ERR_CUDA. Synchronous. */
terse_status_t terse__cmp_topk_cuda_create(size_t count, size_t k, unsigned family,
                                           void **cuda_p);
void           terse__cmp_topk_cuda_destroy(void *cuda);
/* out (device, 32 + 8 k bytes) = topk.h payload of v = in + residual; residual (may be NULL)
 * = v with the selected entries zeroed (all zero on a non-finite input). rng is unused (the
 * sampled family's set is the exact set). *flags_p, *sq_err_p (may be NULL) are set to 0.
 * Returns TERSE_OK, TERSE_ERR_INVALID or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_topk_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype,
                                             size_t n, float *residual, const terse_rng_t *rng,
                                             void *out, size_t out_bytes, uint32_t *flags_p,
                                             double *sq_err_p, terse_stream_t stream);
/* out (n of dtype) = scale * D(payload): validated in the kernels; a rejected payload sets
 * TERSE_CU_ERR_PAYLOAD and makes the output NaN. TERSE_ERR_PAYLOAD is also returned when the
 * host already knows (in_bytes). */
terse_status_t terse__cmp_topk_cuda_decompress(void *cuda, const void *in, size_t in_bytes,
                                               float scale, void *out, terse_dtype_t dtype,
                                               size_t n, terse_stream_t stream);
/* acc[0..n) += D(payload), validated as above (a rejected payload makes acc NaN). */
terse_status_t terse__cmp_topk_cuda_decompress_add(void *cuda, const void *in, size_t in_bytes,
                                                   float *acc, size_t n, uint32_t *flags_p,
                                                   terse_stream_t stream);
terse_status_t terse__cmp_topk_cuda_stat(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                                         double *sq_err_p);
/* Benchmarks and tests: 0 makes instances created afterwards run the radix path only (no
 * sampled candidate threshold); 2 keeps the sampled path but makes its sample miss, so the
 * radix path takes over on the device (the fallback); 1 (the default) restores it. Same
 * payloads in every case. */
void           terse__cmp_topk_cuda_tune(int sampled);

/* ---------------------------------------------------------------- multi-tensor */
/* One layer of a top-k table (DESIGN.md section 8 rule 10: launches per bucket grow with the
 * number of families, not layers). Compress: `in` the gradient (of dtype), `residual` (or
 * NULL), `out` the payload (32 + 8 k bytes). Decode: `in` the payload, `out` the fp32
 * accumulator. A pointer flagged in `user` (TERSE_CU_TUSER_*) is a byte offset from the base
 * each run gives (the caller's buffers move; the payloads do not). */
#define TERSE_CU_TUSER_IN  1u
#define TERSE_CU_TUSER_OUT 2u
typedef struct terse_cu_tlayer {
    void          *cuda;     /* the layer's instance (count, k, family); once per table */
    const void    *in;
    float         *residual;
    void          *out;
    uint64_t       n;        /* the instance's count */
    terse_dtype_t  dtype;    /* compress: in's dtype */
    uint32_t       user;
} terse_cu_tlayer_t;
/* COMPRESS: each layer's payload and residual as terse__cmp_topk_cuda_compress (the radix
 * path: a table does not take the sampled threshold, whose payload is the same); DECOMPRESS_ADD:
 * acc += D(payload), validated, as terse__cmp_topk_cuda_decompress_add; DECOMPRESS_SET: the
 * accumulator zeroed first (bit for bit a memset and decompress_add). */
#define TERSE_CU_T_COMPRESS       0
#define TERSE_CU_T_DECOMPRESS_ADD 1
#define TERSE_CU_T_DECOMPRESS_SET 2
/* Synchronous (plan time). Returns TERSE_OK, TERSE_ERR_INVALID (no layers, more than 65535,
 * an instance twice, a count that is not the instance's, bad flags), TERSE_ERR_NOMEM or
 * TERSE_ERR_CUDA. [out] table_p: release with terse__cmp_topk_cuda_table_destroy. */
terse_status_t terse__cmp_topk_cuda_table_create(const terse_cu_tlayer_t *layers, size_t n,
                                                 int mode, void **table_p);
void           terse__cmp_topk_cuda_table_destroy(void *table);
/* Every layer of the table: 8 launches (compress), 2 or 3 (decode), whatever their number;
 * bit for bit the one-layer launchers, each layer's status block committed as theirs.
 * `user`: the base of the TERSE_CU_TUSER_* offsets. Returns TERSE_OK or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_topk_cuda_table_run(void *table, const void *user,
                                              terse_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_TOPK_CUDA_H */
