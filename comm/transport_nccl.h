/*
 * The NCCL transport's instance (comm/transport_nccl.c), shared with the device wire
 * algorithms (comm/algo_device.c). CUDA + NCCL builds only; not installed.
 *
 * Why a private communicator: terse's extra operations (payload allreduces, the send/recv
 * groups of the compressed reduce-scatter, allgathers, agreement words) must never interleave
 * with the user's own operations on the user's communicator. NCCL orders operations of one
 * communicator by their launch order on each rank, and the user may enqueue work on that
 * communicator from another thread or stream between two of terse's; a second operation
 * sequence sharing the communicator would then pair differently on different ranks and hang.
 * ncclCommSplit(user, 0, rank) at context creation (collective over the user's ranks, once)
 * gives terse a communicator whose operation sequence only terse writes, in the same order on
 * every rank (DESIGN.md section 8, rule 1). The user's communicator is only read (rank, size,
 * device) and never used for traffic.
 */
#ifndef TERSE_TRANSPORT_NCCL_H
#define TERSE_TRANSPORT_NCCL_H

#include <cuda_runtime.h>

#include "nccl_loader.h"
#include "transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One posted host-buffer send or receive, run at the next waitall (see transport_nccl.c). */
typedef struct terse_nccl_op {
    void  *host;
    size_t bytes;
    int    peer;
    int    is_send;
} terse_nccl_op_t;

typedef struct terse_nccl_tp {
    terse_transport_t        head;
    const terse_nccl_api_t  *api;     /* process-wide, static */
    ncclComm_t               user;    /* the caller's communicator (borrowed, read only) */
    ncclComm_t               comm;    /* private, from ncclCommSplit (owned) */
    int                      device;  /* the communicator's CUDA device */
    cudaStream_t             aux;     /* owned: host-buffer operations (agreement, statistics) */
    void                    *stage;   /* device staging of host-buffer operations (owned) */
    size_t                   stage_cap;
    void                    *host;    /* pinned host staging of terse__nccl_path.stage (owned) */
    size_t                   host_cap;
    terse_nccl_op_t         *ops;     /* posted host-buffer point-to-point operations */
    size_t                   nops, ops_cap;
} terse_nccl_tp_t;

extern const terse_transport_ops_t terse_transport_nccl_ops;

/* Makes the communicator's device current; *prev_p gets the device to restore. */
terse_status_t terse__nccl_tp_enter(terse_nccl_tp_t *tp, int *prev_p);
void           terse__nccl_tp_leave(int prev);

/* dst[0..n) (dtype) = src[i] * scale, rounded as terse__convert_from_f32 (algo_device_cuda.cu).
 * Enqueues on stream. Returns TERSE_OK or TERSE_ERR_CUDA. */
terse_status_t terse__dev_from_f32(const float *src, float scale, void *dst, terse_dtype_t dtype,
                                   size_t n, terse_stream_t stream);
/* The same for `count` layers in one launch: layer i's n[i] sums at src + src_off[i] (floats)
 * into element dst_off[i] of dst. Create uploads the layout (synchronous, plan time; [out]
 * table_p, release with terse__dev_from_f32_table_destroy); run takes the buffers and
 * enqueues. Return TERSE_OK, TERSE_ERR_INVALID, TERSE_ERR_NOMEM or TERSE_ERR_CUDA. */
terse_status_t terse__dev_from_f32_table_create(const size_t *src_off, const size_t *dst_off,
                                                const size_t *n, size_t count, void **table_p);
void           terse__dev_from_f32_table_destroy(void *table);
terse_status_t terse__dev_from_f32_table_run(void *table, const float *src, float scale,
                                             void *dst, terse_dtype_t dtype,
                                             terse_stream_t stream);

/* ncclDataType_t of a terse element type. */
ncclDataType_t terse__nccl_dtype(terse_dtype_t dtype);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_TRANSPORT_NCCL_H */
