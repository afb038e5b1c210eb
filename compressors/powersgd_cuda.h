/*
 * CUDA kernels of powersgd (powersgd_cuda.cu): the two-stage family of powersgd.h on device
 * buffers, with our own tall-skinny kernels (no cuBLAS: DESIGN.md section 3). Deterministic:
 * every reduction has a fixed order (warp butterflies, per-chunk partial sums added in chunk
 * order; no split-K atomics), so every rank gets the same bits from the same summed payloads.
 * Not bit-identical to the CPU reference (other summation orders): the tests bound the
 * difference. Layout, warm start, degenerate columns and non-finite handling follow
 * powersgd.h. Ranks up to TERSE_PSGD_CUDA_MAX_RANK.
 *
 *   compress:   M = in + residual (kept in the residual, or the instance's scratch), P = M Q
 *   stage 1:    P^ = orth(summed P) (one block a layer, modified Gram-Schmidt twice, double
 *               dots; a batch of layers in one launch),
 *               Q_i = M^T P^ (column tiles x row chunks, chunks summed in order),
 *               residual = M - P^ Q_i^T, squared error
 *   decompress: out = scale * P^ Q^T, Q <- summed Q with unit columns (warm start)
 * Launchers never wait; flags and squared errors go to the status block. A batch runs every
 * pass of many layers with launches that grow with the rank classes present, not the layers
 * (DESIGN.md section 8 rule 10), bit for bit the one-layer launchers.
 */
#ifndef TERSE_POWERSGD_CUDA_H
#define TERSE_POWERSGD_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "compressor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_PSGD_CUDA_MAX_RANK 32

/* Device state of one layer: count elements, shape (rows, cols) as params (0, 0: flat, reshaped
 * by terse_psgd_shape), rank 1..32 below min(rows, cols), the Q stream's seed and layer.
 * with_scratch: 1 to allocate count floats for M (calls without a residual); 0 when every
 * compress gets a residual. Synchronous (initialises Q).
 * [out] cuda_p: release with terse__cmp_psgd_cuda_destroy. Returns TERSE_OK,
 * TERSE_ERR_INVALID, TERSE_ERR_UNSUPPORTED (rank above 32), TERSE_ERR_NOMEM or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_psgd_cuda_create(size_t count, size_t rows, size_t cols, size_t rank,
                                           uint64_t seed, uint32_t layer, int with_scratch,
                                           void **cuda_p);
void           terse__cmp_psgd_cuda_destroy(void *cuda);
/* Resets Q to its seeded initial value (and forgets the step in progress). Synchronous. */
terse_status_t terse__cmp_psgd_cuda_reset(void *cuda);
/* Stage 0: out (rows * r fp32, device) = P_i. Returns TERSE_OK, TERSE_ERR_INVALID or
 * TERSE_ERR_CUDA. *flags_p, *sq_err_p (may be NULL) are set to 0. */
terse_status_t terse__cmp_psgd_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype,
                                             size_t n, float *residual, void *out,
                                             size_t out_bytes, uint32_t *flags_p,
                                             double *sq_err_p, terse_stream_t stream);
/* Stage 1: summed P (rows * r) -> out (cols * r) = Q_i; residual = M - P^ Q_i^T. Returns
 * TERSE_OK, TERSE_ERR_INVALID, TERSE_ERR_USAGE (no compress before) or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_psgd_cuda_stage(void *cuda, unsigned stage, const void *summed,
                                          size_t summed_bytes, void *out, size_t out_bytes,
                                          double *sq_err_p, terse_stream_t stream);
/* A batch of layers for stage 1: the summed P and the Q output of every layer are device
 * buffers that stay valid as long as the batch (the communication layer's workspace), so the
 * device table is built once. Synchronous (plan time).
 * cudas: n distinct instances (borrowed: destroy the batch first or after, but stage only while
 * they live); summed[i], out[i]: layer i's arguments of terse__cmp_psgd_cuda_stage, checked as
 * it checks them; out[i] must not overlap summed[j] for j > i (the layers in order would read
 * the Q). Launches per stage 1: ps_orth once for the layers of rank <= 8 and once for those
 * above (its two block sizes), ps_mtp and ps_sub once per rank class present (rank <= 4, 8,
 * 16, 32), ps_mtp_sum and the status fixup once.
 * [out] batch_p: release with terse__cmp_psgd_cuda_batch_destroy. Returns TERSE_OK,
 * TERSE_ERR_INVALID (naming the layer), TERSE_ERR_NOMEM or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_psgd_cuda_batch_create(void *const *cudas, const void *const *summed,
                                                 const size_t *summed_bytes, void *const *out,
                                                 const size_t *out_bytes, size_t n, void **batch_p);
void           terse__cmp_psgd_cuda_batch_destroy(void *batch);
/* Stage 1 of every layer of the batch: as terse__cmp_psgd_cuda_stage(cudas[i], 1, summed[i],
 * summed_bytes[i], out[i], out_bytes[i], NULL, stream) for i in order, bit for bit (P^, Q,
 * residual, flags, squared errors). Returns TERSE_OK, TERSE_ERR_INVALID (batch NULL),
 * TERSE_ERR_USAGE (a layer without compress before: then nothing is launched and no layer
 * changes state) or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_psgd_cuda_batch_stage(void *batch, terse_stream_t stream);

/* One layer of a full batch (compress, stage 1 and decompress batched). `in` (compress: the
 * gradient, of dtype) and `out` (decompress: the output, of dtype) may be byte offsets from the
 * base each run gives (flags TERSE_CU_PUSER_* in `user`: the caller's buffers move from call
 * to call); every other buffer is a device buffer that outlives the batch's use. */
#define TERSE_CU_PUSER_IN  1u
#define TERSE_CU_PUSER_OUT 2u
typedef struct terse_cu_player {
    void          *cuda;     /* the layer's instance (borrowed); once per batch */
    const void    *in;       /* compress: gradient (n of dtype) */
    float         *residual; /* compress: fp32 residual (n), or NULL: the instance's scratch */
    void          *p_out;    /* compress: P_i (rows * r fp32) */
    const void    *summed_p; /* stage 1: summed P (rows * r fp32) */
    void          *q_out;    /* stage 1: Q_i (cols * r fp32) */
    const void    *summed_q; /* decompress: summed Q (cols * r fp32) */
    void          *out;      /* decompress: output (n of dtype) */
    uint64_t       n;        /* elements: the instance's count */
    terse_dtype_t  dtype;    /* in's and out's: fp32, fp16 or bf16 */
    float          scale;    /* decompress */
    uint32_t       user;     /* TERSE_CU_PUSER_IN | TERSE_CU_PUSER_OUT */
} terse_cu_player_t;
/* A batch of n layers for every pass. Synchronous (plan time). Checks what the one-layer
 * launchers check (sizes follow from the instances; a NULL residual needs an instance created
 * with_scratch), the instances distinct, q_out[j] off summed_p[i] and a plain out[j] off
 * summed_q[i] for j < i (the layers in order would read what an earlier one wrote). The caller
 * keeps the other buffers of different layers apart (a pass writes one layer's while it reads
 * another's). Stage 1 is terse__cmp_psgd_cuda_batch_stage, as for a stage-only batch.
 * Launches: compress one ps_mq per rank class present and one fixup; decompress one ps_keep
 * per block size (rank <= 8, above) and one ps_write per rank class.
 * [out] batch_p: release with terse__cmp_psgd_cuda_batch_destroy. Returns TERSE_OK,
 * TERSE_ERR_INVALID (naming the layer), TERSE_ERR_NOMEM or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_psgd_cuda_batch_create_full(const terse_cu_player_t *layers, size_t n,
                                                      void **batch_p);
/* Compress of every layer: as terse__cmp_psgd_cuda_compress(cuda, in, dtype, n, residual,
 * p_out, ...) for each layer, bit for bit (P, residual or scratch, flags; squared errors are
 * sums of atomics: within rounding). user_in: the base of the PUSER_IN offsets (may be NULL
 * when no layer has one). Returns TERSE_OK, TERSE_ERR_INVALID (batch NULL or stage-only, no
 * base for an offset) or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_psgd_cuda_batch_compress(void *batch, const void *user_in,
                                                   terse_stream_t stream);
/* Decompress of every layer: as terse__cmp_psgd_cuda_decompress(cuda, summed_q, cols * r * 4,
 * scale, out, dtype, n, ...) for each layer, bit for bit (output, warm-start Q, flags).
 * user_out: the base of the PUSER_OUT offsets. Returns TERSE_OK, TERSE_ERR_INVALID (as
 * compress), TERSE_ERR_USAGE (a layer without stage 1 since its compress: then nothing is
 * launched) or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_psgd_cuda_batch_decompress(void *batch, void *user_out,
                                                     terse_stream_t stream);
/* out (n of dtype) = scale * P^ (summed Q)^T; NaN when any summed payload was non-finite.
 * May be repeated on the same step (same bits, same warm start), as on the CPU.
 * Returns TERSE_OK, TERSE_ERR_PAYLOAD (size), TERSE_ERR_USAGE or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_psgd_cuda_decompress(void *cuda, const void *in, size_t in_bytes,
                                               float scale, void *out, terse_dtype_t dtype,
                                               size_t n, terse_stream_t stream);
terse_status_t terse__cmp_psgd_cuda_stat(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                                         double *sq_err_p);
/* The device Q (cols * r, k-major) and P^ (rows * r), owned by the instance (tests). */
const float *terse__cmp_psgd_cuda_q(void *cuda);
const float *terse__cmp_psgd_cuda_basis(void *cuda);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_POWERSGD_CUDA_H */
