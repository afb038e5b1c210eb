/*
 * CUDA kernels of randomk (randomk_cuda.cu): randomk.h's keyed permutation, one thread per
 * sent index, so payloads and residuals match the CPU reference bit for bit. Launchers take
 * plain arguments and never wait; flags and the squared error go to the status block
 * (terse__cmp_randomk_cuda_stat reads it lazily). The summed payload carries no header: its
 * size is checked on the host (rule 6). Multi-tensor tables (rule 10) run every layer of a
 * bucket in two launches, bit for bit the one-layer launchers.
 */
#ifndef TERSE_RANDOMK_CUDA_H
#define TERSE_RANDOMK_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "compressor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Device state of one layer of `count` elements sending k (1 <= k <= count <= 2^32): the k
 * indices of the last compress and a status block. [out] cuda_p: release with
 * terse__cmp_randomk_cuda_destroy. Returns TERSE_OK, TERSE_ERR_INVALID, TERSE_ERR_NOMEM or
 * TERSE_ERR_CUDA. Synchronous. */
terse_status_t terse__cmp_randomk_cuda_create(size_t count, size_t k, void **cuda_p);
void           terse__cmp_randomk_cuda_destroy(void *cuda);
/* out (k fp32, device) = v[idx(0..k-1)], v = in + residual; residual = v with the sent
 * entries zeroed (all zero on a non-finite input, where the payload is all NaN, so that the
 * summed payload carries the flag without a host-side sentinel). *flags_p, *sq_err_p (may be
 * NULL) are set to 0: the real values reach the status block. Returns TERSE_OK,
 * TERSE_ERR_INVALID or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_randomk_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype,
                                                size_t n, float *residual,
                                                const terse_rng_t *rng, void *out,
                                                size_t out_bytes, uint32_t *flags_p,
                                                double *sq_err_p, terse_stream_t stream);
/* out (n of dtype) = 0 except scale * in[j] at the last compress's idx(j). Returns TERSE_OK,
 * TERSE_ERR_PAYLOAD (in_bytes != 4 k: the output is then NaN), TERSE_ERR_INVALID or
 * TERSE_ERR_CUDA. */
terse_status_t terse__cmp_randomk_cuda_decompress(void *cuda, const void *in, size_t in_bytes,
                                                  float scale, void *out, terse_dtype_t dtype,
                                                  size_t n, terse_stream_t stream);
terse_status_t terse__cmp_randomk_cuda_stat(void *cuda, terse_stream_t stream,
                                            uint32_t *flags_p, double *sq_err_p);
/* The device array of the k indices of the last compress (owned by the instance). */
const uint32_t *terse__cmp_randomk_cuda_index(void *cuda);

/* ---------------------------------------------------------------- multi-tensor */
/* One layer of a random-k table (DESIGN.md section 8 rule 10: launches per bucket grow with the
 * number of families, not layers). Compress reads `in` (the gradient, n of dtype) plus
 * `residual` into the payload `pay` (k fp32) and the instance's index array; decompress writes
 * `out` (n of dtype) = 0 except scale * pay[j] at the last compress's idx(j). A pointer flagged
 * in `user` (TERSE_CU_RUSER_*) is a byte offset from the base each run gives (the caller's
 * buffers move; the payloads and residuals do not). Every other pointer is a device pointer that
 * stays valid as long as the table. */
#define TERSE_CU_RUSER_IN  1u
#define TERSE_CU_RUSER_OUT 2u
typedef struct terse_cu_rlayer {
    void          *cuda;     /* the layer's instance (count, k, indices, status block); once per
                              * table */
    const void    *in;       /* compress: gradient */
    float         *residual; /* compress: fp32 residual or NULL */
    float         *pay;      /* the payload: k fp32 (written by compress, read by decompress) */
    void          *out;      /* decompress: output */
    uint64_t       n;        /* elements: the instance's count */
    uint64_t       k;        /* payload values: the instance's k */
    terse_dtype_t  dtype;    /* in's (compress) or out's (decompress) dtype */
    float          scale;    /* decompress */
    terse_rng_t    rng;      /* compress: the layer's shared stream; hi[0] (the step) is set by
                              * each run */
    uint32_t       user;
} terse_cu_rlayer_t;
/* decompress 0: compress every layer; 1: decompress every layer. Synchronous (plan time): the
 * table is uploaded once and reused every step. [out] table_p: release with
 * terse__cmp_randomk_cuda_table_destroy. Returns TERSE_OK, TERSE_ERR_INVALID (no layers, more
 * than 65535, an instance twice, unknown user flags, n or k not the instance's, a missing
 * pointer), TERSE_ERR_NOMEM or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_randomk_cuda_table_create(const terse_cu_rlayer_t *layers, size_t n,
                                                    int decompress, void **table_p);
void           terse__cmp_randomk_cuda_table_destroy(void *table);
/* Every layer in two launches, whatever the number of layers (compress: pass 1 over all the
 * elements, pass 2 over all the sent positions, which also handles a non-finite layer and
 * commits each status block; decompress: zero every output, then scatter and commit). step
 * replaces rng.hi[0] of every layer (compress only); `user`: the base of the TERSE_CU_RUSER_*
 * offsets (NULL when no layer has them). Never waits, never allocates. Returns TERSE_OK,
 * TERSE_ERR_INVALID (no table) or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_randomk_cuda_table_run(void *table, uint32_t step, const void *user,
                                                 terse_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_RANDOMK_CUDA_H */
