/*
 * Transports: one ops table per way of moving bytes between ranks (STYLE.md section 5). The
 * wire algorithms (comm/algo_*.c) call only what is declared here, so they run unchanged over
 * MPI (host buffers), NCCL (later) and the in-process loop transport of the unit tests.
 *
 * Every operation is collective over the transport's ranks except isend/irecv/waitall, whose
 * messages match by (peer, tag) in posting order (MPI's non-overtaking rule). Buffers are host
 * memory. Results of allreduce are bitwise identical on every rank for the loop transport;
 * over MPI that is MPI's promise, so the algorithms sum payloads with their own fixed-order
 * reduce-scatter (terse__algo_sum) and use allreduce only for agreement words and doubles.
 */
#ifndef TERSE_TRANSPORT_H
#define TERSE_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "terse_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A pending point-to-point operation; opaque to the algorithms. A zeroed request is complete
 * (waitall skips it), and waitall zeroes what it completed. */
typedef struct terse_req {
    uintptr_t h[2];
} terse_req_t;

typedef struct terse_transport terse_transport_t;

/* Element types the transport's allreduce accepts (SUM), plus unsigned MAX for agreement. */
typedef enum terse_tp_red {
    TERSE_TP_SUM_F32 = 0,
    TERSE_TP_SUM_F16,
    TERSE_TP_SUM_BF16,
    TERSE_TP_SUM_F64,
    TERSE_TP_MAX_U64
} terse_tp_red_t;

typedef struct terse_transport_ops {
    size_t      size;     /* sizeof(terse_transport_ops_t) */
    const char *name;     /* "mpi", "loop" */
    int         priority; /* higher wins when TERSE_TRANSPORT_AUTO picks among usable ones */
    terse_transport_kind_t kind;

    /* Whether this transport can serve `comm` (the pointer given in terse_ctx_params_t).
     * Returns TERSE_OK and sets *usable_p to 0 or 1. */
    terse_status_t (*query)(void *comm, int *usable_p);

    /* Creates an instance over `comm` (borrowed; duplicated where the library allows it).
     * Collective. [out] tp_p owned by the caller, released with finalize. */
    terse_status_t (*init)(void *comm, terse_transport_t **tp_p);
    void (*finalize)(terse_transport_t *tp);

    /* recv[i] = reduction over ranks of send[i], i < count; send may equal recv. */
    terse_status_t (*allreduce)(terse_transport_t *tp, const void *send, void *recv,
                                size_t count, terse_tp_red_t red);
    /* recv = concatenation of every rank's `bytes` bytes, in rank order. */
    terse_status_t (*allgather)(terse_transport_t *tp, const void *send, void *recv,
                                size_t bytes);
    /* Nonblocking send/receive of `bytes` bytes; the buffer stays owned by the caller and must
     * not be touched until waitall reported completion. tag in 0..1023. */
    terse_status_t (*isend)(terse_transport_t *tp, const void *buf, size_t bytes, int peer,
                            int tag, terse_req_t *req);
    terse_status_t (*irecv)(terse_transport_t *tp, void *buf, size_t bytes, int peer, int tag,
                            terse_req_t *req);
    /* Completes n requests (n may be 0). A receive whose message length differs from the
     * posted length fails with TERSE_ERR_PAYLOAD. */
    terse_status_t (*waitall)(terse_transport_t *tp, terse_req_t *reqs, size_t n);
    terse_status_t (*barrier)(terse_transport_t *tp);
    /* Collective: every rank passes a color (>= 0) and a key; the ranks of one color form a
     * new instance, ranked by (key, old rank) (MPI_Comm_split). The hierarchy's intra- and
     * inter-node sub-transports come from here (comm/algo_hier.c).
     *   [out] sub_p  owned by the caller, released with finalize (before tp's finalize)
     * NULL where the transport cannot split (then no hierarchy). */
    terse_status_t (*split)(terse_transport_t *tp, int color, int key,
                            terse_transport_t **sub_p);
    /* Optional (NULL: the cost model times allreduce on host buffers). Collective: times
     * `reps` SUM allreduces of `count` fp32 in the memory the transport's own traffic uses
     * (device buffers for NCCL, where host staging would add copies and a synchronisation
     * that the wire algorithms never pay) after one warm-up; *best_p = the fastest, seconds,
     * as this rank saw it, or -1 on every rank when one could not time (no memory). */
    terse_status_t (*time_allreduce)(terse_transport_t *tp, size_t count, int reps,
                                     double *best_p);
} terse_transport_ops_t;

/* The common head of every transport instance. */
struct terse_transport {
    const terse_transport_ops_t *ops;
    int      rank;
    int      nranks;
    uint64_t bytes_sent; /* bytes handed to this transport by this rank (DESIGN.md section 9) */
};

extern const terse_transport_ops_t terse_transport_loop_ops;
#if TERSE_HAVE_MPI
extern const terse_transport_ops_t terse_transport_mpi_ops;
#endif

/* ---------------------------------------------------------------- counted wrappers */
/* The algorithms go through these: they count bytes sent the way DESIGN.md section 9 does. */
static inline terse_status_t
terse__tp_isend(terse_transport_t *tp, const void *buf, size_t bytes, int peer, int tag,
                terse_req_t *req)
{
    tp->bytes_sent += bytes;
    return tp->ops->isend(tp, buf, bytes, peer, tag, req);
}

static inline terse_status_t
terse__tp_irecv(terse_transport_t *tp, void *buf, size_t bytes, int peer, int tag,
                terse_req_t *req)
{
    return tp->ops->irecv(tp, buf, bytes, peer, tag, req);
}

static inline terse_status_t
terse__tp_waitall(terse_transport_t *tp, terse_req_t *reqs, size_t n)
{
    return tp->ops->waitall(tp, reqs, n);
}

static inline terse_status_t
terse__tp_allgather(terse_transport_t *tp, const void *send, void *recv, size_t bytes)
{
    tp->bytes_sent += bytes * (uint64_t)(tp->nranks - 1);
    return tp->ops->allgather(tp, send, recv, bytes);
}

static inline size_t
terse__tp_red_size(terse_tp_red_t red)
{
    switch (red) {
    case TERSE_TP_SUM_F16:
    case TERSE_TP_SUM_BF16:
        return 2;
    case TERSE_TP_SUM_F32:
        return 4;
    default:
        return 8;
    }
}

static inline terse_status_t
terse__tp_allreduce(terse_transport_t *tp, const void *send, void *recv, size_t count,
                    terse_tp_red_t red)
{
    /* a ring allreduce sends 2(p-1)/p of the buffer */
    tp->bytes_sent += (2 * (uint64_t)(tp->nranks - 1) * count * terse__tp_red_size(red)) /
                      (uint64_t)tp->nranks;
    return tp->ops->allreduce(tp, send, recv, count, red);
}

/* ---------------------------------------------------------------- loop transport */
/* A group of `nranks` in-process ranks (threads). Each thread uses its own endpoint as the
 * `comm` of TERSE_TRANSPORT_LOOP. Deterministic: collectives combine in rank order. */
typedef struct terse_loop_group terse_loop_group_t;

terse_status_t terse_loop_group_create(int nranks, terse_loop_group_t **group_p);
void           terse_loop_group_destroy(terse_loop_group_t *group);
/* The endpoint of `rank`: pass it as terse_ctx_params_t.comm. Owned by the group. */
void          *terse_loop_endpoint(terse_loop_group_t *group, int rank);

/* Runs fn(endpoint, rank, arg) on nranks threads of a fresh group and joins them.
 * Returns TERSE_OK, or TERSE_ERR_SYSTEM when a thread could not be started. */
typedef void (*terse_loop_func_t)(void *endpoint, int rank, int nranks, void *arg);
terse_status_t terse_loop_run(int nranks, terse_loop_func_t fn, void *arg);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_TRANSPORT_H */
