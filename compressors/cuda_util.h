/*
 * Device memory, error and status helpers shared by the CUDA compressors (C-callable; defined
 * in cuda_util.cu). Only built when TERSE_HAVE_CUDA.
 */
#ifndef TERSE_CUDA_UTIL_H
#define TERSE_CUDA_UTIL_H

#include <stddef.h>
#include <stdint.h>

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
/* Waits for the stream (tests, benchmarks and lazy status reads only). */
terse_status_t terse__cuda_stream_sync(terse_stream_t s);
/* Blocks of `threads` that fill the current device once with `kernel` (a __global__ function:
 * resident blocks per SM times the SMs, both cached), at most `want`, at least 1: what a
 * grid-stride or persistent kernel launches to run one even wave. */
unsigned       terse__cuda_fill_grid(const void *kernel, int threads, uint64_t want);

/* The device status block of one CUDA compressor instance (DESIGN.md section 8 rule 6: the host
 * reads it lazily, never on the hot path). Kernels of a call add their squared error into
 * sq_acc (in any order: a statistic, not a payload) and OR flags into call; the call's last
 * kernel commits: flags |= call, sq_err = sq_acc (Inf when the input was non-finite),
 * ncalls += 1, and clears the rest. */
#define TERSE_CU_ERR_PAYLOAD (1u << 8) /* a decoder rejected a payload; the layer became NaN */

typedef struct terse_cu_stat {
    double   sq_acc;  /* call in flight */
    double   sq_err;  /* last committed compress: ||v - D(C(v))||^2 */
    uint32_t call;    /* call in flight: TERSE_CMP_NONFINITE | TERSE_CU_ERR_PAYLOAD */
    uint32_t flags;   /* OR of committed calls since the last read */
    uint32_t done;    /* fixup blocks of the call in flight that finished */
    uint32_t ncalls;  /* committed calls */
} terse_cu_stat_t;

/* 1 when two of the n pointers at first, first + stride, ... (the `cuda` fields of an array of
 * table layers) are equal, or when the check cannot allocate: a multi-tensor table holds an
 * instance once, or one entry's fixup would commit its status block while another's still
 * reads the call's flags. */
int terse__cuda_ptr_twice(const void *first, size_t n, size_t stride);

/* Multi-tensor tables (quant, cast, randomk, topk, comm's from-f32): each table struct starts
 * with `dev`, its device array of entries. terse__cuda_table_upload puts `bytes` of host
 * entries into a new device array *dev_p (synchronous, plan time; left NULL on failure);
 * terse__cuda_table_free releases such a struct and its array (NULL: nothing). Returns
 * TERSE_OK, TERSE_ERR_NOMEM or TERSE_ERR_CUDA. */
terse_status_t terse__cuda_table_upload(void **dev_p, const void *host, size_t bytes);
void           terse__cuda_table_free(void *table);

/* Allocates a zeroed status block in device memory. [out] *stat_p: owned by the caller,
 * release with terse__cuda_free. Returns TERSE_OK, TERSE_ERR_NOMEM or TERSE_ERR_CUDA. */
terse_status_t terse__cuda_stat_create(terse_cu_stat_t **stat_p);
/* Waits for `s`, then reads the status block: *flags_p the OR of flags since the last read
 * (then cleared), *sq_err_p the last committed squared error; either pointer may be NULL.
 * Synchronises: call it lazily (telemetry, statistics, tests), never per layer per step. */
terse_status_t terse__cuda_stat_read(terse_cu_stat_t *stat, terse_stream_t s, uint32_t *flags_p,
                                     double *sq_err_p);

#ifdef __cplusplus
}
#endif

#endif
