/*
 * Device memory and error helpers shared by the CUDA compressors (C-callable; defined in
 * cuda_util.cu). Only built when TERSE_HAVE_CUDA.
 */
#ifndef TERSE_CUDA_UTIL_H
#define TERSE_CUDA_UTIL_H

#include <stddef.h>

#include "terse_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cudaMalloc + cudaMemset to 0 (synchronous; never on the hot path). */
terse_status_t terse__cuda_calloc(void **ptr_p, size_t bytes);
void           terse__cuda_free(void *ptr);
terse_status_t terse__cuda_memset_async(void *ptr, int value, size_t bytes, terse_stream_t s);
terse_status_t terse__cuda_memcpy(void *dst, const void *src, size_t bytes); /* any direction */
/* Returns TERSE_ERR_CUDA (logged) when the last launch failed; never clears a sticky error
 * belonging to the application (cudaPeekAtLastError). */
terse_status_t terse__cuda_check_launch(const char *what);

#ifdef __cplusplus
}
#endif

#endif
