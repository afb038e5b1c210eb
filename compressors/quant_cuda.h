/*
 * CUDA kernels of quant and sign (quant_cuda.cu): the payload format and arithmetic of
 * quant.h, bit for bit. C-callable launchers with plain arguments: the family's .c file keeps
 * its context private and holds one opaque `cuda` pointer per instance.
 *
 * Every launcher enqueues on `stream` and returns without waiting: no host synchronisation,
 * no allocation. Results that the host would have to wait for (the non-finite flag, the
 * squared error, a decoder's verdict on a payload) go to the instance's device status block,
 * read lazily with terse__cmp_quant_cuda_stat (DESIGN.md section 8 rule 6); the compressed
 * payload itself carries the non-finite flag to the other ranks (rule 3), and a rejected
 * payload turns the output layer into NaN inside the kernels.
 *
 * Hook in quant.c (and sign.c with the sign_ names), see the report of issue 6:
 *   create:     if (params->mem == TERSE_MEM_CUDA) -> terse__cmp_quant_cuda_create(...)
 *   compress:   if (in->mem == TERSE_MEM_CUDA)     -> terse__cmp_quant_cuda_compress(...)
 *   decompress, decompress_add: likewise; destroy: terse__cmp_quant_cuda_destroy(q->cuda).
 */
#ifndef TERSE_QUANT_CUDA_H
#define TERSE_QUANT_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "compressor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Creates the device state of one quant (family TERSE_QUANT_FAMILY_QUANT, bits 2..8) or sign
 * (TERSE_QUANT_FAMILY_SIGN, bits 1) instance: its status block. bucket: a multiple of 32 (as
 * resolved by terse__quant_bucket).
 *   [out] cuda_p  owned by the caller; release with terse__cmp_quant_cuda_destroy
 * Returns TERSE_OK, TERSE_ERR_INVALID, TERSE_ERR_NOMEM or TERSE_ERR_CUDA. Synchronous. */
terse_status_t terse__cmp_quant_cuda_create(unsigned family, unsigned bits, size_t bucket,
                                            void **cuda_p);
void           terse__cmp_quant_cuda_destroy(void *cuda);

/* compress of quant.h on device buffers: v = in + residual (residual may be NULL), payload
 * into out (device, out_bytes == terse_quant_payload_bytes(n, ...)), residual updated (reset
 * to 0 when the input is non-finite). rng is read on the host (copied into the launch).
 * *flags_p and *sq_err_p (either may be NULL) are set to 0: the real values are in the status
 * block once the stream gets there. Returns TERSE_OK, TERSE_ERR_INVALID (sizes) or
 * TERSE_ERR_CUDA. */
terse_status_t terse__cmp_quant_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype,
                                              size_t n, float *residual, const terse_rng_t *rng,
                                              void *out, size_t out_bytes, uint32_t *flags_p,
                                              double *sq_err_p, terse_stream_t stream);

/* out[0..n) (dtype) = scale * D(payload). The payload is validated inside the kernel: a bad
 * one sets TERSE_CU_ERR_PAYLOAD in the status block and writes NaN over the whole output.
 * A size mismatch known on the host (in_bytes) also returns TERSE_ERR_PAYLOAD (the output is
 * NaN as well). Returns TERSE_OK, TERSE_ERR_PAYLOAD or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_quant_cuda_decompress(void *cuda, const void *in, size_t in_bytes,
                                                float scale, void *out, terse_dtype_t dtype,
                                                size_t n, terse_stream_t stream);

/* acc[0..n) += D(payload) (fp32), validated as above (a bad payload makes acc NaN). *flags_p
 * (may be NULL) is set to 0; the payload's flag reaches the status block. */
terse_status_t terse__cmp_quant_cuda_decompress_add(void *cuda, const void *in, size_t in_bytes,
                                                    float *acc, size_t n, uint32_t *flags_p,
                                                    terse_stream_t stream);

/* Lazy read of the status block (waits for `stream`): flags since the last read (non-finite
 * input, rejected payloads), last compress's squared error (Inf when non-finite). */
terse_status_t terse__cmp_quant_cuda_stat(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                                          double *sq_err_p);

/* Benchmark knob (no policy: terse-bench-gpu compares them): min_blocks 0 turns the streaming
 * fast paths of one layer off (the bucket-slot kernels run everything); 2 (default) or 3 turns
 * them on and picks the slot compress kernel compiled for that many resident blocks per SM.
 * Not thread-safe; call before use. */
void terse__cmp_quant_cuda_tune(int min_blocks);
/* Benchmark knob: fast-path variants, a bit mask (0 = default), each bit the previous choice:
 * 1 plain instead of streaming (evict-first) stores in decompress, 2 decompress prefetching
 * the codes and scales of 3 iterations ahead into L2, 4 quant compress (bucket 512) compiled
 * for 4 instead of 3 resident blocks per SM, 8 decompress with 16 groups of 4 values in
 * flight per thread instead of 4, 16 fp32 decompress through block-contiguous tiles of 8192
 * values staged in shared memory (q_decode_tile_kernel).
 * Not thread-safe. */
void terse__cmp_quant_cuda_variant(unsigned variant);

/* ---------------------------------------------------------------- multi-tensor */
/* One layer of a multi-tensor launch (DESIGN.md section 8 rule 10: launches per bucket grow
 * with the number of families, not layers). All pointers are device pointers that stay valid
 * as long as the table; the table is built once per (bucket, plan) and reused every step. */
typedef struct terse_cu_qlayer {
    void          *cuda;     /* the layer's instance (family, bits, bucket, status block) */
    const void    *in;       /* compress: gradient of dtype; decode: the payload */
    float         *residual; /* compress: fp32 residual or NULL */
    void          *out;      /* compress: payload; decompress: output of dtype; add: fp32 acc */
    uint64_t       n;        /* elements */
    uint64_t       bytes;    /* payload bytes (compress: out; decode: in) */
    terse_rng_t    rng;      /* compress: the stream; hi[0] (the step) is set per launch */
    terse_dtype_t  dtype;    /* compress: in's dtype; decompress: out's dtype */
    float          scale;    /* decompress only */
    uint32_t       user;     /* TERSE_CU_QUSER_* bits: pointers given as byte offsets */
} terse_cu_qlayer_t;

/* The caller's buffers move from call to call (the communication layer's workspace does not):
 * a layer with TERSE_CU_QUSER_IN holds `in` (TERSE_CU_QUSER_OUT: `out`) as a byte offset from
 * the base that each terse__cmp_quant_cuda_table_run_at gives; the 16-byte vector paths are
 * then chosen per run from the actual addresses. */
#define TERSE_CU_QUSER_IN  1u
#define TERSE_CU_QUSER_OUT 2u

typedef enum terse_cu_qmode {
    TERSE_CU_Q_COMPRESS       = 0,
    TERSE_CU_Q_DECOMPRESS     = 1,
    TERSE_CU_Q_DECOMPRESS_ADD = 2,
    /* tables only: out (dtype) = (0 + D) * scale, the scale skipped when 1: bit for bit a
     * zeroed fp32 accumulator, decompress_add and terse__dev_from_f32, in one pass */
    TERSE_CU_Q_DECOMPRESS_SET = 3
} terse_cu_qmode_t;

/* Uploads a table of nlayers layers (quant and sign instances may be mixed) for `mode`.
 * Synchronous (plan time). [out] table_p: release with terse__cmp_quant_cuda_table_destroy.
 * Returns TERSE_OK, TERSE_ERR_INVALID (a payload size does not match its layer),
 * TERSE_ERR_NOMEM or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_quant_cuda_table_create(const terse_cu_qlayer_t *layers,
                                                  size_t nlayers, terse_cu_qmode_t mode,
                                                  void **table_p);
void           terse__cmp_quant_cuda_table_destroy(void *table);
/* Runs the table's operation over every layer in two launches (the work, then a fixup that
 * handles flags and commits each layer's status block). step replaces rng.hi[0] of every layer
 * (compress only). Returns TERSE_OK or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_quant_cuda_table_run(void *table, uint32_t step,
                                               terse_stream_t stream);
/* The same with `user` as the base of the layers' TERSE_CU_QUSER_* offsets (a device address;
 * NULL when no layer has them). */
terse_status_t terse__cmp_quant_cuda_table_run_at(void *table, uint32_t step, const void *user,
                                                  terse_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_QUANT_CUDA_H */
