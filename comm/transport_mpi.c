/*
 * The MPI transport: host buffers over any intracommunicator. terse's own traffic runs on a
 * communicator duplicated once (PMPI_Comm_dup) per user communicator, so its messages never
 * match the application's wildcard receives, and only PMPI_* entry points are called, so the
 * MPI_Allreduce shim never re-enters itself (DESIGN.md section 8, rule 8). The duplicate
 * returns errors (MPI_ERRORS_RETURN) instead of aborting: terse reports them as
 * TERSE_ERR_MPI / TERSE_ERR_PAYLOAD.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "compressor.h"
#include "transport.h"

typedef struct mpi_tp {
    terse_transport_t tp; /* first */
    MPI_Comm          comm;
    MPI_Op            op_f16;
    MPI_Op            op_bf16;
} mpi_tp_t;

#define MPI_TP_RECV ((uintptr_t)1 << (sizeof(uintptr_t) * 8 - 1)) /* h[1]: a receive */

_Static_assert(sizeof(MPI_Request) <= sizeof(uintptr_t), "MPI_Request does not fit terse_req_t");

static terse_status_t
mpi_fail(int rc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;

    if (PMPI_Error_string(rc, msg, &len) != MPI_SUCCESS) {
        snprintf(msg, sizeof(msg), "error %d", rc);
    }
    terse_error(TERSE_LOG_COMM, "%s failed: %s", what, msg);
    return TERSE_ERR_MPI;
}

#define MPI_TP_CALL(_call, _what)                                                              \
    do {                                                                                       \
        int _rc = (_call);                                                                     \
        if (_rc != MPI_SUCCESS) {                                                              \
            return mpi_fail(_rc, _what);                                                       \
        }                                                                                      \
    } while (0)

/* User reductions for 16-bit floats: MPI has no predefined fp16/bf16 SUM. Each pair is added
 * in fp32 and rounded once. */
static void
mpi_sum_f16(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    uint16_t *a = in, *b = inout;
    int i;

    (void)dt;
    for (i = 0; i < *len; ++i) {
        b[i] = terse__float_to_half(terse__half_to_float(a[i]) + terse__half_to_float(b[i]));
    }
}

static void
mpi_sum_bf16(void *in, void *inout, int *len, MPI_Datatype *dt)
{
    uint16_t *a = in, *b = inout;
    int i;

    (void)dt;
    for (i = 0; i < *len; ++i) {
        b[i] = terse_float_to_bf16(terse_bf16_to_float(a[i]) + terse_bf16_to_float(b[i]));
    }
}

static terse_status_t
mpi_query(void *comm, int *usable_p)
{
    int init = 0, fini = 0, inter = 0;

    *usable_p = 0;
    if (comm == NULL) {
        return TERSE_OK;
    }
    PMPI_Initialized(&init);
    PMPI_Finalized(&fini);
    if (!init || fini || (*(MPI_Comm *)comm == MPI_COMM_NULL)) {
        return TERSE_OK;
    }
    if (PMPI_Comm_test_inter(*(MPI_Comm *)comm, &inter) != MPI_SUCCESS) {
        return TERSE_OK;
    }
    *usable_p = !inter;
    return TERSE_OK;
}

/* A transport instance over `comm`, which it takes over (freed by finalize, or here on
 * failure). */
static terse_status_t
mpi_wrap(MPI_Comm comm, const char *name, terse_transport_t **tp_p)
{
    mpi_tp_t *m = calloc(1, sizeof(*m));

    if (m == NULL) {
        terse_error(TERSE_LOG_COMM, "failed to allocate the mpi transport");
        PMPI_Comm_free(&comm);
        return TERSE_ERR_NOMEM;
    }
    m->comm = comm;
    PMPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
    PMPI_Comm_set_name(m->comm, (char *)name);
    PMPI_Comm_rank(m->comm, &m->tp.rank);
    PMPI_Comm_size(m->comm, &m->tp.nranks);
    PMPI_Op_create(mpi_sum_f16, 1, &m->op_f16);
    PMPI_Op_create(mpi_sum_bf16, 1, &m->op_bf16);
    m->tp.ops = &terse_transport_mpi_ops;
    *tp_p     = &m->tp;
    return TERSE_OK;
}

static terse_status_t
mpi_init(void *comm, terse_transport_t **tp_p)
{
    MPI_Comm dup;
    int usable, rc;

    TERSE_CHECK(mpi_query(comm, &usable));
    if (!usable) {
        terse_error(TERSE_LOG_COMM, "the mpi transport needs an initialised intracommunicator");
        return TERSE_ERR_INVALID;
    }
    rc = PMPI_Comm_dup(*(MPI_Comm *)comm, &dup);
    if (rc != MPI_SUCCESS) {
        return mpi_fail(rc, "PMPI_Comm_dup");
    }
    return mpi_wrap(dup, "terse", tp_p);
}

static void
mpi_finalize(terse_transport_t *tp)
{
    mpi_tp_t *m = (mpi_tp_t *)tp;
    int fini    = 0;

    if (m == NULL) {
        return;
    }
    PMPI_Finalized(&fini);
    if (!fini) {
        PMPI_Op_free(&m->op_f16);
        PMPI_Op_free(&m->op_bf16);
        PMPI_Comm_free(&m->comm);
    }
    free(m);
}

static terse_status_t
mpi_allreduce(terse_transport_t *tp, const void *send, void *recv, size_t count,
              terse_tp_red_t red)
{
    mpi_tp_t *m = (mpi_tp_t *)tp;
    MPI_Datatype dt;
    MPI_Op op = MPI_SUM;

    if (count > INT_MAX) {
        terse_error(TERSE_LOG_COMM, "allreduce of %zu elements exceeds the int count of MPI",
                    count);
        return TERSE_ERR_UNSUPPORTED;
    }
    switch (red) {
    case TERSE_TP_SUM_F32:
        dt = MPI_FLOAT;
        break;
    case TERSE_TP_SUM_F64:
        dt = MPI_DOUBLE;
        break;
    case TERSE_TP_SUM_F16:
        dt = MPI_UINT16_T;
        op = m->op_f16;
        break;
    case TERSE_TP_SUM_BF16:
        dt = MPI_UINT16_T;
        op = m->op_bf16;
        break;
    default:
        dt = MPI_UINT64_T;
        op = MPI_MAX;
        break;
    }
    MPI_TP_CALL(PMPI_Allreduce((send == recv) ? MPI_IN_PLACE : send, recv, (int)count, dt, op,
                               m->comm),
                "PMPI_Allreduce");
    return TERSE_OK;
}

static terse_status_t
mpi_allgather(terse_transport_t *tp, const void *send, void *recv, size_t bytes)
{
    mpi_tp_t *m = (mpi_tp_t *)tp;

    if (bytes > INT_MAX) {
        terse_error(TERSE_LOG_COMM, "allgather of %zu bytes per rank exceeds MPI's int count",
                    bytes);
        return TERSE_ERR_UNSUPPORTED;
    }
    MPI_TP_CALL(PMPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, m->comm),
                "PMPI_Allgather");
    return TERSE_OK;
}

static terse_status_t
mpi_isend(terse_transport_t *tp, const void *buf, size_t bytes, int peer, int tag,
          terse_req_t *req)
{
    mpi_tp_t *m = (mpi_tp_t *)tp;
    MPI_Request r;

    if (bytes > INT_MAX) {
        terse_error(TERSE_LOG_COMM, "message of %zu bytes exceeds MPI's int count", bytes);
        return TERSE_ERR_UNSUPPORTED;
    }
    MPI_TP_CALL(PMPI_Isend(buf, (int)bytes, MPI_BYTE, peer, tag, m->comm, &r), "PMPI_Isend");
    memset(req, 0, sizeof(*req));
    memcpy(&req->h[0], &r, sizeof(r));
    req->h[1] = bytes;
    return TERSE_OK;
}

static terse_status_t
mpi_irecv(terse_transport_t *tp, void *buf, size_t bytes, int peer, int tag, terse_req_t *req)
{
    mpi_tp_t *m = (mpi_tp_t *)tp;
    MPI_Request r;

    if (bytes > INT_MAX) {
        terse_error(TERSE_LOG_COMM, "message of %zu bytes exceeds MPI's int count", bytes);
        return TERSE_ERR_UNSUPPORTED;
    }
    MPI_TP_CALL(PMPI_Irecv(buf, (int)bytes, MPI_BYTE, peer, tag, m->comm, &r), "PMPI_Irecv");
    memset(req, 0, sizeof(*req));
    memcpy(&req->h[0], &r, sizeof(r));
    req->h[1] = bytes | MPI_TP_RECV;
    return TERSE_OK;
}

static terse_status_t
mpi_waitall(terse_transport_t *tp, terse_req_t *reqs, size_t n)
{
    terse_status_t status = TERSE_OK;
    MPI_Status st;
    MPI_Request r;
    size_t i;
    int rc, got;

    (void)tp;
    for (i = 0; i < n; ++i) {
        if (reqs[i].h[0] == 0) {
            continue; /* a zeroed request is complete */
        }
        memcpy(&r, &reqs[i].h[0], sizeof(r));
        rc = PMPI_Wait(&r, &st);
        reqs[i].h[0] = 0;
        if (rc != MPI_SUCCESS) {
            if (status == TERSE_OK) {
                status = mpi_fail(rc, "PMPI_Wait");
            }
            continue;
        }
        if ((reqs[i].h[1] & MPI_TP_RECV) != 0) {
            /* a receive: its length must be the posted one */
            got = 0;
            PMPI_Get_count(&st, MPI_BYTE, &got);
            if (((size_t)got != (reqs[i].h[1] & ~MPI_TP_RECV)) && (status == TERSE_OK)) {
                terse_error(TERSE_LOG_COMM, "message from rank %d has %d bytes, expected %zu",
                            st.MPI_SOURCE, got, (size_t)(reqs[i].h[1] & ~MPI_TP_RECV));
                status = TERSE_ERR_PAYLOAD;
            }
        }
    }
    return status;
}

static terse_status_t
mpi_barrier(terse_transport_t *tp)
{
    MPI_TP_CALL(PMPI_Barrier(((mpi_tp_t *)tp)->comm), "PMPI_Barrier");
    return TERSE_OK;
}

/* PMPI_Comm_split of terse's duplicate: the sub-communicator is terse's own too. */
static terse_status_t
mpi_split(terse_transport_t *tp, int color, int key, terse_transport_t **sub_p)
{
    MPI_Comm sub;

    MPI_TP_CALL(PMPI_Comm_split(((mpi_tp_t *)tp)->comm, color, key, &sub), "PMPI_Comm_split");
    return mpi_wrap(sub, "terse-sub", sub_p);
}

const terse_transport_ops_t terse_transport_mpi_ops = {
    .size      = sizeof(terse_transport_ops_t),
    .name      = "mpi",
    .priority  = 10,
    .kind      = TERSE_TRANSPORT_MPI,
    .query     = mpi_query,
    .init      = mpi_init,
    .finalize  = mpi_finalize,
    .allreduce = mpi_allreduce,
    .allgather = mpi_allgather,
    .isend     = mpi_isend,
    .irecv     = mpi_irecv,
    .waitall   = mpi_waitall,
    .barrier   = mpi_barrier,
    .split     = mpi_split,
};
