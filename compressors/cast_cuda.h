/*
 * CUDA kernels of cast (cast_cuda.cu): cast.h's bf16 and fp16 formulas, bit for bit, one
 * elementwise pass (v = in + residual, payload, residual, squared error, finiteness). The
 * summed payload carries no header: its size is checked on the host. Launchers never wait;
 * flags and the squared error go to the status block (terse__cmp_cast_cuda_stat).
 */
#ifndef TERSE_CAST_CUDA_H
#define TERSE_CAST_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "compressor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* kind: TERSE_CAST_BF16 or TERSE_CAST_FP16; nranks as params->nranks (fp16 pre-scales by
 * 1/p). [out] cuda_p: release with terse__cmp_cast_cuda_destroy. Synchronous. */
terse_status_t terse__cmp_cast_cuda_create(int kind, int nranks, void **cuda_p);
void           terse__cmp_cast_cuda_destroy(void *cuda);
/* out (n 16-bit values, device, out_bytes == 2 n) from v = in + residual; residual (may be
 * NULL) = v - own (0 on a non-finite input, where every payload value is NaN). *flags_p and
 * *sq_err_p (may be NULL) are set to 0: the real values reach the status block. */
terse_status_t terse__cmp_cast_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype,
                                             size_t n, float *residual, const terse_rng_t *rng,
                                             void *out, size_t out_bytes, uint32_t *flags_p,
                                             double *sq_err_p, terse_stream_t stream);
/* out (n of dtype) = decoded summed payload * scale. Returns TERSE_ERR_PAYLOAD when
 * in_bytes != 2 n (the output is then NaN). */
terse_status_t terse__cmp_cast_cuda_decompress(void *cuda, const void *in, size_t in_bytes,
                                               float scale, void *out, terse_dtype_t dtype,
                                               size_t n, terse_stream_t stream);
terse_status_t terse__cmp_cast_cuda_stat(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                                         double *sq_err_p);

/* ---------------------------------------------------------------- multi-tensor */
/* One layer of a cast table (DESIGN.md section 8 rule 10): compress reads `in` (the gradient,
 * of dtype) plus `residual` into the 16-bit payload `pay`; decompress writes scale times the
 * decoded `pay` into `out` (of dtype). A pointer flagged in `user` (TERSE_CU_CUSER_*) is a byte
 * offset from the base each run gives (the caller's buffers move; the payloads do not). */
#define TERSE_CU_CUSER_IN  1u
#define TERSE_CU_CUSER_OUT 2u
typedef struct terse_cu_clayer {
    void          *cuda;     /* the layer's instance (kind, p, status block); once per table */
    const void    *in;       /* compress: gradient */
    float         *residual; /* compress: fp32 residual or NULL */
    void          *pay;      /* the payload: n 16-bit values (written, or read) */
    void          *out;      /* decompress: output */
    uint64_t       n;
    terse_dtype_t  dtype;    /* in's (compress) or out's (decompress) dtype */
    float          scale;    /* decompress */
    uint32_t       user;
} terse_cu_clayer_t;
/* decompress 0: compress every layer; 1: decompress every layer. Synchronous (plan time).
 * Returns TERSE_OK, TERSE_ERR_INVALID (no layers, more than 65535, an instance twice, bad
 * flags), TERSE_ERR_NOMEM or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_cast_cuda_table_create(const terse_cu_clayer_t *layers, size_t n,
                                                 int decompress, void **table_p);
void           terse__cmp_cast_cuda_table_destroy(void *table);
/* Every layer in two launches (the work, then the fixup that writes a non-finite layer's NaN
 * payload and commits each layer's status block), bit for bit the one-layer launchers;
 * `user`: the base of the TERSE_CU_CUSER_* offsets. Returns TERSE_OK or TERSE_ERR_CUDA. */
terse_status_t terse__cmp_cast_cuda_table_run(void *table, const void *user,
                                              terse_stream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_CAST_CUDA_H */
