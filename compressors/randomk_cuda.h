/*
 * CUDA kernels of randomk (randomk_cuda.cu): randomk.h's keyed permutation, one thread per
 * sent index, so payloads and residuals match the CPU reference bit for bit. Launchers take
 * plain arguments and never wait; flags and the squared error go to the status block
 * (terse__cmp_randomk_cuda_stat reads it lazily). The summed payload carries no header: its
 * size is checked on the host (rule 6).
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

#ifdef __cplusplus
}
#endif

#endif /* TERSE_RANDOMK_CUDA_H */
