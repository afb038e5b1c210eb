/*
 * CUDA kernels of sign: quant.h's 1-bit family (TERSE_QUANT_FAMILY_SIGN), implemented in
 * quant_cuda.cu beside quant (one kernel serves both; sign has no random stream). The
 * launchers behave as their quant_cuda.h twins; multi-tensor tables (quant_cuda.h) may mix
 * quant and sign instances.
 */
#ifndef TERSE_SIGN_CUDA_H
#define TERSE_SIGN_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "compressor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* bucket: a multiple of 32. [out] cuda_p: release with terse__cmp_sign_cuda_destroy. */
terse_status_t terse__cmp_sign_cuda_create(size_t bucket, void **cuda_p);
void           terse__cmp_sign_cuda_destroy(void *cuda);
terse_status_t terse__cmp_sign_cuda_compress(void *cuda, const void *in, terse_dtype_t dtype,
                                             size_t n, float *residual, const terse_rng_t *rng,
                                             void *out, size_t out_bytes, uint32_t *flags_p,
                                             double *sq_err_p, terse_stream_t stream);
terse_status_t terse__cmp_sign_cuda_decompress(void *cuda, const void *in, size_t in_bytes,
                                               float scale, void *out, terse_dtype_t dtype,
                                               size_t n, terse_stream_t stream);
terse_status_t terse__cmp_sign_cuda_decompress_add(void *cuda, const void *in, size_t in_bytes,
                                                   float *acc, size_t n, uint32_t *flags_p,
                                                   terse_stream_t stream);
terse_status_t terse__cmp_sign_cuda_stat(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                                         double *sq_err_p);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_SIGN_CUDA_H */
