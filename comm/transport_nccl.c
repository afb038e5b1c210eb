/*
 * The NCCL transport: terse's traffic over a private communicator split from the caller's
 * (transport_nccl.h says why), through the NCCL resolved at run time (nccl_loader.h).
 *
 * Two kinds of use:
 *   - the device wire algorithms (algo_device.c) call NCCL directly on terse_nccl_tp_t.comm
 *     with device buffers and the caller's stream: no host synchronisation, no allocation;
 *   - the ops table below serves what the library root sends from host memory (agreement
 *     words when a slot is created or a plan switches, the scheduler's statistics on re-plan
 *     steps, the cost model's calibration). These copy through a device staging buffer on the
 *     transport's own stream and wait for it: they are rare by construction, never per step.
 *     isend/irecv only record the operation; the next waitall runs every recorded operation
 *     in one ncclGroupStart/End (NCCL's send/recv must be grouped to avoid deadlock), so a
 *     waitall completes every request posted before it.
 */
#include <stdlib.h>
#include <string.h>

#include "transport_nccl.h"

#define NCCL_TP_CHECK(_tp, _call, _what) TERSE_CHECK(terse__nccl_status((_tp)->api, (_call), _what))

#define NCCL_CUDA_CHECK(_call, _what)                                                          \
    do {                                                                                       \
        cudaError_t _e = (_call);                                                              \
        if (_e != cudaSuccess) {                                                               \
            terse_error(TERSE_LOG_COMM, "%s failed: %s", _what, cudaGetErrorString(_e));       \
            return TERSE_ERR_CUDA;                                                             \
        }                                                                                      \
    } while (0)

ncclDataType_t
terse__nccl_dtype(terse_dtype_t dtype)
{
    switch (dtype) {
    case TERSE_FLOAT16:
        return ncclFloat16;
    case TERSE_BFLOAT16:
        return ncclBfloat16;
    case TERSE_FLOAT64:
        return ncclFloat64;
    default:
        return ncclFloat32;
    }
}

terse_status_t
terse__nccl_tp_enter(terse_nccl_tp_t *tp, int *prev_p)
{
    NCCL_CUDA_CHECK(cudaGetDevice(prev_p), "cudaGetDevice");
    if (*prev_p != tp->device) {
        NCCL_CUDA_CHECK(cudaSetDevice(tp->device), "cudaSetDevice");
    }
    return TERSE_OK;
}

void
terse__nccl_tp_leave(int prev)
{
    int cur;

    if ((cudaGetDevice(&cur) == cudaSuccess) && (cur != prev)) {
        cudaSetDevice(prev);
    }
}

/* Grows the device staging buffer to at least bytes (synchronous: host-buffer paths only). */
static terse_status_t
nccl_tp_stage(terse_nccl_tp_t *tp, size_t bytes)
{
    void *p;

    if (bytes <= tp->stage_cap) {
        return TERSE_OK;
    }
    bytes = TERSE_ALIGN_UP(TERSE_MAX(bytes, (size_t)4096), (size_t)4096);
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        terse_error(TERSE_LOG_COMM, "failed to allocate %zu bytes of nccl staging", bytes);
        return TERSE_ERR_NOMEM;
    }
    if (tp->stage != NULL) {
        cudaFree(tp->stage);
    }
    tp->stage     = p;
    tp->stage_cap = bytes;
    return TERSE_OK;
}

/* ---------------------------------------------------------------- ops */
static terse_status_t
nccl_tp_query(void *comm, int *usable_p)
{
    const terse_nccl_api_t *api;
    int n = 0;

    *usable_p = 0;
    if ((comm == NULL) || (terse__nccl_api(NULL, &api) != TERSE_OK)) {
        return TERSE_OK;
    }
    *usable_p = (api->CommCount((ncclComm_t)comm, &n) == ncclSuccess) && (n > 0);
    return TERSE_OK;
}

static void nccl_tp_finalize(terse_transport_t *base);

static terse_status_t
nccl_tp_init(void *comm, terse_transport_t **tp_p)
{
    terse_nccl_tp_t *tp;
    terse_status_t status;
    int prev = 0, entered = 0;

    tp = calloc(1, sizeof(*tp));
    if (tp == NULL) {
        return TERSE_ERR_NOMEM;
    }
    tp->head.ops = &terse_transport_nccl_ops;
    tp->user     = (ncclComm_t)comm;
    TERSE_CHECK_GOTO(terse__nccl_api(NULL, &tp->api), status, err_free);
    TERSE_CHECK_GOTO(terse__nccl_status(tp->api, tp->api->CommCount(tp->user, &tp->head.nranks),
                                        "ncclCommCount"), status, err_free);
    TERSE_CHECK_GOTO(terse__nccl_status(tp->api, tp->api->CommUserRank(tp->user, &tp->head.rank),
                                        "ncclCommUserRank"), status, err_free);
    TERSE_CHECK_GOTO(terse__nccl_status(tp->api, tp->api->CommCuDevice(tp->user, &tp->device),
                                        "ncclCommCuDevice"), status, err_free);
    TERSE_CHECK_GOTO(terse__nccl_tp_enter(tp, &prev), status, err_free);
    entered = 1;
    /* collective over the caller's ranks, once per context: the private communicator */
    TERSE_CHECK_GOTO(terse__nccl_status(tp->api, tp->api->CommSplit(tp->user, 0, tp->head.rank,
                                                                    &tp->comm, NULL),
                                        "ncclCommSplit"), status, err_free);
    if (tp->comm == NULL) {
        terse_error(TERSE_LOG_COMM, "ncclCommSplit gave no communicator");
        status = TERSE_ERR_NCCL;
        goto err_free;
    }
    if (cudaStreamCreateWithFlags(&tp->aux, cudaStreamNonBlocking) != cudaSuccess) {
        terse_error(TERSE_LOG_COMM, "failed to create the nccl transport's stream");
        status = TERSE_ERR_CUDA;
        goto err_free;
    }
    terse__nccl_tp_leave(prev);
    terse_info(TERSE_LOG_COMM, "nccl transport: rank %d of %d on device %d, private "
               "communicator split from the caller's", tp->head.rank, tp->head.nranks,
               tp->device);
    *tp_p = &tp->head;
    return TERSE_OK;

err_free:
    nccl_tp_finalize(&tp->head);
    if (entered) {
        terse__nccl_tp_leave(prev);
    }
    return status;
}

static void
nccl_tp_finalize(terse_transport_t *base)
{
    terse_nccl_tp_t *tp = (terse_nccl_tp_t *)base;
    int prev;

    if (tp == NULL) {
        return;
    }
    if ((tp->api != NULL) && (terse__nccl_tp_enter(tp, &prev) == TERSE_OK)) {
        if (tp->aux != NULL) {
            cudaStreamSynchronize(tp->aux);
            cudaStreamDestroy(tp->aux);
        }
        if (tp->comm != NULL) {
            tp->api->CommDestroy(tp->comm);
        }
        if (tp->stage != NULL) {
            cudaFree(tp->stage);
        }
        if (tp->host != NULL) {
            cudaFreeHost(tp->host);
        }
        terse__nccl_tp_leave(prev);
    }
    free(tp->ops);
    free(tp);
}

static terse_status_t
nccl_tp_allreduce(terse_transport_t *base, const void *send, void *recv, size_t count,
                  terse_tp_red_t red)
{
    terse_nccl_tp_t *tp = (terse_nccl_tp_t *)base;
    const size_t bytes  = count * terse__tp_red_size(red);
    ncclDataType_t dt   = ncclFloat32;
    ncclRedOp_t op      = ncclSum;
    terse_status_t status;
    int prev;

    if (count == 0) {
        return TERSE_OK;
    }
    switch (red) {
    case TERSE_TP_SUM_F16:
        dt = ncclFloat16;
        break;
    case TERSE_TP_SUM_BF16:
        dt = ncclBfloat16;
        break;
    case TERSE_TP_SUM_F64:
        dt = ncclFloat64;
        break;
    case TERSE_TP_MAX_U64:
        dt = ncclUint64;
        op = ncclMax;
        break;
    default:
        break;
    }
    TERSE_CHECK(terse__nccl_tp_enter(tp, &prev));
    TERSE_CHECK_GOTO(nccl_tp_stage(tp, bytes), status, out);
    status = TERSE_ERR_CUDA;
    if (cudaMemcpyAsync(tp->stage, send, bytes, cudaMemcpyHostToDevice, tp->aux) !=
        cudaSuccess) {
        goto out;
    }
    TERSE_CHECK_GOTO(terse__nccl_status(tp->api, tp->api->AllReduce(tp->stage, tp->stage, count,
                                                                    dt, op, tp->comm, tp->aux),
                                        "ncclAllReduce"), status, out);
    status = TERSE_ERR_CUDA;
    if ((cudaMemcpyAsync(recv, tp->stage, bytes, cudaMemcpyDeviceToHost, tp->aux) !=
         cudaSuccess) ||
        (cudaStreamSynchronize(tp->aux) != cudaSuccess)) {
        terse_error(TERSE_LOG_COMM, "nccl transport: staged allreduce failed");
        goto out;
    }
    status = TERSE_OK;
out:
    terse__nccl_tp_leave(prev);
    return status;
}

static terse_status_t
nccl_tp_allgather(terse_transport_t *base, const void *send, void *recv, size_t bytes)
{
    terse_nccl_tp_t *tp = (terse_nccl_tp_t *)base;
    const size_t total  = bytes * (size_t)tp->head.nranks;
    unsigned char *mine;
    terse_status_t status;
    int prev;

    if (bytes == 0) {
        return TERSE_OK;
    }
    TERSE_CHECK(terse__nccl_tp_enter(tp, &prev));
    TERSE_CHECK_GOTO(nccl_tp_stage(tp, total), status, out);
    mine   = (unsigned char *)tp->stage + (size_t)tp->head.rank * bytes;
    status = TERSE_ERR_CUDA;
    if (cudaMemcpyAsync(mine, send, bytes, cudaMemcpyHostToDevice, tp->aux) != cudaSuccess) {
        goto out;
    }
    TERSE_CHECK_GOTO(terse__nccl_status(tp->api, tp->api->AllGather(mine, tp->stage, bytes,
                                                                    ncclUint8, tp->comm, tp->aux),
                                        "ncclAllGather"), status, out);
    status = TERSE_ERR_CUDA;
    if ((cudaMemcpyAsync(recv, tp->stage, total, cudaMemcpyDeviceToHost, tp->aux) !=
         cudaSuccess) ||
        (cudaStreamSynchronize(tp->aux) != cudaSuccess)) {
        terse_error(TERSE_LOG_COMM, "nccl transport: staged allgather failed");
        goto out;
    }
    status = TERSE_OK;
out:
    terse__nccl_tp_leave(prev);
    return status;
}

static terse_status_t
nccl_tp_post(terse_nccl_tp_t *tp, void *buf, size_t bytes, int peer, int is_send,
             terse_req_t *req)
{
    if ((peer < 0) || (peer >= tp->head.nranks) || (peer == tp->head.rank)) {
        return TERSE_ERR_INVALID;
    }
    if (tp->nops == tp->ops_cap) {
        size_t cap = TERSE_MAX(tp->ops_cap * 2, (size_t)16);
        terse_nccl_op_t *p = realloc(tp->ops, cap * sizeof(*p));
        if (p == NULL) {
            return TERSE_ERR_NOMEM;
        }
        tp->ops     = p;
        tp->ops_cap = cap;
    }
    tp->ops[tp->nops] = (terse_nccl_op_t){buf, bytes, peer, is_send};
    ++tp->nops;
    req->h[0] = 1;
    req->h[1] = 0;
    return TERSE_OK;
}

static terse_status_t
nccl_tp_isend(terse_transport_t *base, const void *buf, size_t bytes, int peer, int tag,
              terse_req_t *req)
{
    (void)tag; /* one group per waitall keeps NCCL's per-peer order, which is MPI's */
    return nccl_tp_post((terse_nccl_tp_t *)base, (void *)buf, bytes, peer, 1, req);
}

static terse_status_t
nccl_tp_irecv(terse_transport_t *base, void *buf, size_t bytes, int peer, int tag,
              terse_req_t *req)
{
    (void)tag;
    return nccl_tp_post((terse_nccl_tp_t *)base, buf, bytes, peer, 0, req);
}

/* Runs every posted operation in one group through the staging buffer, then waits. */
static terse_status_t
nccl_tp_flush(terse_nccl_tp_t *tp)
{
    terse_status_t status = TERSE_OK;
    size_t i, total = 0, off;
    int prev;

    if (tp->nops == 0) {
        return TERSE_OK;
    }
    for (i = 0; i < tp->nops; ++i) {
        total += TERSE_ALIGN_UP(tp->ops[i].bytes, (size_t)256);
    }
    TERSE_CHECK(terse__nccl_tp_enter(tp, &prev));
    TERSE_CHECK_GOTO(nccl_tp_stage(tp, total), status, out);
    for (i = 0, off = 0; i < tp->nops; ++i) {
        if (tp->ops[i].is_send &&
            (cudaMemcpyAsync((unsigned char *)tp->stage + off, tp->ops[i].host, tp->ops[i].bytes,
                             cudaMemcpyHostToDevice, tp->aux) != cudaSuccess)) {
            status = TERSE_ERR_CUDA;
            goto out;
        }
        off += TERSE_ALIGN_UP(tp->ops[i].bytes, (size_t)256);
    }
    TERSE_CHECK_GOTO(terse__nccl_status(tp->api, tp->api->GroupStart(), "ncclGroupStart"),
                     status, out);
    for (i = 0, off = 0; i < tp->nops; ++i) {
        void *d = (unsigned char *)tp->stage + off;
        ncclResult_t r = tp->ops[i].is_send ?
                             tp->api->Send(d, tp->ops[i].bytes, ncclUint8, tp->ops[i].peer,
                                           tp->comm, tp->aux) :
                             tp->api->Recv(d, tp->ops[i].bytes, ncclUint8, tp->ops[i].peer,
                                           tp->comm, tp->aux);
        if ((r != ncclSuccess) && (status == TERSE_OK)) {
            status = terse__nccl_status(tp->api, r, "ncclSend/ncclRecv");
        }
        off += TERSE_ALIGN_UP(tp->ops[i].bytes, (size_t)256);
    }
    if ((terse__nccl_status(tp->api, tp->api->GroupEnd(), "ncclGroupEnd") != TERSE_OK) ||
        (status != TERSE_OK)) {
        status = TERSE_ERR_NCCL;
        goto out;
    }
    for (i = 0, off = 0; i < tp->nops; ++i) {
        if (!tp->ops[i].is_send &&
            (cudaMemcpyAsync(tp->ops[i].host, (unsigned char *)tp->stage + off, tp->ops[i].bytes,
                             cudaMemcpyDeviceToHost, tp->aux) != cudaSuccess)) {
            status = TERSE_ERR_CUDA;
            goto out;
        }
        off += TERSE_ALIGN_UP(tp->ops[i].bytes, (size_t)256);
    }
    if (cudaStreamSynchronize(tp->aux) != cudaSuccess) {
        terse_error(TERSE_LOG_COMM, "nccl transport: staged send/recv failed");
        status = TERSE_ERR_CUDA;
    }
out:
    tp->nops = 0;
    terse__nccl_tp_leave(prev);
    return status;
}

static terse_status_t
nccl_tp_waitall(terse_transport_t *base, terse_req_t *reqs, size_t n)
{
    terse_nccl_tp_t *tp = (terse_nccl_tp_t *)base;
    terse_status_t status = TERSE_OK;
    size_t i;
    int pending = 0;

    for (i = 0; i < n; ++i) {
        pending |= (reqs[i].h[0] != 0);
    }
    if (pending) {
        status = nccl_tp_flush(tp); /* completes every posted request, these included */
    }
    memset(reqs, 0, n * sizeof(*reqs));
    return status;
}

static terse_status_t
nccl_tp_barrier(terse_transport_t *base)
{
    uint64_t v = 0;

    return nccl_tp_allreduce(base, &v, &v, 1, TERSE_TP_MAX_U64);
}

/* The cost model's timing on device buffers (transport.h): events on the auxiliary stream
 * around each ncclAllReduce; one device allocation for the calibration, freed after. When a
 * rank cannot allocate, every rank returns *best_p = -1 (not timed). */
static terse_status_t
nccl_tp_time_allreduce(terse_transport_t *base, size_t count, int reps, double *best_p)
{
    terse_nccl_tp_t *tp   = (terse_nccl_tp_t *)base;
    cudaEvent_t ev[2]     = {NULL, NULL};
    float *buf            = NULL;
    terse_status_t status = TERSE_ERR_CUDA;
    float ms;
    int prev, r;

    uint64_t failed;

    *best_p = 1e30;
    TERSE_CHECK(terse__nccl_tp_enter(tp, &prev));
    failed = (cudaMalloc((void **)&buf, TERSE_MAX(count, (size_t)1) * sizeof(float)) !=
              cudaSuccess) ||
             (cudaMemsetAsync(buf, 0, count * sizeof(float), tp->aux) != cudaSuccess) ||
             (cudaEventCreate(&ev[0]) != cudaSuccess) ||
             (cudaEventCreate(&ev[1]) != cudaSuccess);
    if (failed) {
        (void)cudaGetLastError(); /* not sticky: an allocation failed */
    }
    /* every rank times, or none does: a rank missing from a collective would hang the rest */
    TERSE_CHECK_GOTO(nccl_tp_allreduce(base, &failed, &failed, 1, TERSE_TP_MAX_U64), status,
                     out);
    if (failed) {
        *best_p = -1.0; /* not timed: the caller keeps its defaults */
        status  = TERSE_OK;
        goto out;
    }
    for (r = -1; r < reps; ++r) {
        if (cudaEventRecord(ev[0], tp->aux) != cudaSuccess) {
            goto out;
        }
        TERSE_CHECK_GOTO(terse__nccl_status(tp->api, tp->api->AllReduce(buf, buf, count,
                                                                        ncclFloat32, ncclSum,
                                                                        tp->comm, tp->aux),
                                            "ncclAllReduce"), status, out);
        status = TERSE_ERR_CUDA;
        if ((cudaEventRecord(ev[1], tp->aux) != cudaSuccess) ||
            (cudaEventSynchronize(ev[1]) != cudaSuccess) ||
            (cudaEventElapsedTime(&ms, ev[0], ev[1]) != cudaSuccess)) {
            goto out;
        }
        if (r >= 0) {
            *best_p = TERSE_MIN(*best_p, 1e-3 * (double)ms); /* r = -1: warm-up */
        }
    }
    base->bytes_sent += (uint64_t)(reps + 1) * 2 * (uint64_t)(base->nranks - 1) * count *
                        sizeof(float) / (uint64_t)base->nranks;
    status = TERSE_OK;
out:
    if (status == TERSE_ERR_CUDA) {
        terse_error(TERSE_LOG_COMM, "nccl transport: timing allreduce of %zu floats failed",
                    count);
    }
    if (ev[0] != NULL) {
        (void)cudaEventDestroy(ev[0]);
    }
    if (ev[1] != NULL) {
        (void)cudaEventDestroy(ev[1]);
    }
    if (buf != NULL) {
        (void)cudaStreamSynchronize(tp->aux);
        (void)cudaFree(buf);
    }
    terse__nccl_tp_leave(prev);
    return status;
}

const terse_transport_ops_t terse_transport_nccl_ops = {
    .size      = sizeof(terse_transport_ops_t),
    .name      = "nccl",
    .priority  = 5,
    .kind      = TERSE_TRANSPORT_NCCL,
    .query     = nccl_tp_query,
    .init      = nccl_tp_init,
    .finalize  = nccl_tp_finalize,
    .allreduce = nccl_tp_allreduce,
    .allgather = nccl_tp_allgather,
    .isend     = nccl_tp_isend,
    .irecv     = nccl_tp_irecv,
    .waitall   = nccl_tp_waitall,
    .barrier   = nccl_tp_barrier,
    .time_allreduce = nccl_tp_time_allreduce,
};
