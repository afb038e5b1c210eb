/*
 * A stand-in libnccl.so.2 for the CPU tests of libterse-nccl.so (tests/comm/shim_nccl_cpu.sh):
 * host memory only, no GPU. It exports every function terse's loader requires, under the
 * pncclX names and ncclX aliases like the real library. A communicator is a small struct; an
 * allreduce behaves as if every one of its nranks ranks held the same input (SUM: nranks x
 * input, AVG: the input, MAX/MIN: the input) for fp32 and int32, so a pass-through result is
 * known exactly. fake_nccl_calls() counts the allreduces that reached the library.
 */
#include <stdlib.h>
#include <string.h>

#include <nccl.h>

typedef struct fake_comm {
    int nranks, rank, blocking, magic;
} fake_comm_t;

#define FAKE_MAGIC 0x6e63636c
#define FAKE_API   __attribute__((visibility("default")))
#define FAKE_ALIAS(_name) __attribute__((alias("p" #_name), visibility("default")))

static int fake_calls;
static int fake_group_depth;

FAKE_API int
fake_nccl_calls(void)
{
    return fake_calls;
}

/* A communicator the shim never saw being created. */
FAKE_API ncclComm_t
fake_nccl_make_comm(int nranks)
{
    fake_comm_t *c = calloc(1, sizeof(*c));

    c->nranks   = nranks;
    c->blocking = 1;
    c->magic    = FAKE_MAGIC;
    return (ncclComm_t)c;
}

static fake_comm_t *
fake_of(ncclComm_t comm)
{
    fake_comm_t *c = (fake_comm_t *)comm;

    return ((c != NULL) && (c->magic == FAKE_MAGIC)) ? c : NULL;
}

FAKE_API ncclResult_t
pncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
               ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream)
{
    fake_comm_t *c = fake_of(comm);
    size_t i;

    (void)stream;
    if (c == NULL) {
        return ncclInvalidArgument;
    }
    ++fake_calls;
    if (datatype == ncclFloat32) {
        const float *s = sendbuff;
        float *r       = recvbuff;
        for (i = 0; i < count; ++i) {
            r[i] = (op == ncclSum) ? s[i] * (float)c->nranks : s[i];
        }
        return ncclSuccess;
    }
    if (datatype == ncclInt32) {
        const int *s = sendbuff;
        int *r       = recvbuff;
        for (i = 0; i < count; ++i) {
            r[i] = (op == ncclSum) ? s[i] * c->nranks : s[i];
        }
        return ncclSuccess;
    }
    return ncclInvalidArgument;
}

FAKE_API ncclResult_t
pncclAllGather(const void *sendbuff, void *recvbuff, size_t sendcount, ncclDataType_t datatype,
               ncclComm_t comm, cudaStream_t stream)
{
    return ncclInvalidUsage;
}

FAKE_API ncclResult_t
pncclSend(const void *sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
          cudaStream_t stream)
{
    return ncclInvalidUsage;
}

FAKE_API ncclResult_t
pncclRecv(void *recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
          cudaStream_t stream)
{
    return ncclInvalidUsage;
}

FAKE_API ncclResult_t
pncclBroadcast(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
               int root, ncclComm_t comm, cudaStream_t stream)
{
    return ncclInvalidUsage;
}

FAKE_API ncclResult_t
pncclGroupStart(void)
{
    ++fake_group_depth;
    return ncclSuccess;
}

FAKE_API ncclResult_t
pncclGroupEnd(void)
{
    if (fake_group_depth == 0) {
        return ncclInvalidUsage;
    }
    --fake_group_depth;
    return ncclSuccess;
}

FAKE_API ncclResult_t
pncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t *newcomm, ncclConfig_t *config)
{
    return ncclInvalidUsage;
}

FAKE_API ncclResult_t
pncclCommCount(const ncclComm_t comm, int *count)
{
    fake_comm_t *c = fake_of(comm);

    if (c == NULL) {
        return ncclInvalidArgument;
    }
    *count = c->nranks;
    return ncclSuccess;
}

FAKE_API ncclResult_t
pncclCommUserRank(const ncclComm_t comm, int *rank)
{
    fake_comm_t *c = fake_of(comm);

    if (c == NULL) {
        return ncclInvalidArgument;
    }
    *rank = c->rank;
    return ncclSuccess;
}

FAKE_API ncclResult_t
pncclCommCuDevice(const ncclComm_t comm, int *device)
{
    *device = 0;
    return ncclSuccess;
}

FAKE_API ncclResult_t
pncclCommDestroy(ncclComm_t comm)
{
    fake_comm_t *c = fake_of(comm);

    if (c == NULL) {
        return ncclInvalidArgument;
    }
    c->magic = 0;
    free(c);
    return ncclSuccess;
}

FAKE_API ncclResult_t
pncclCommAbort(ncclComm_t comm)
{
    return pncclCommDestroy(comm);
}

FAKE_API ncclResult_t
pncclCommFinalize(ncclComm_t comm)
{
    return (fake_of(comm) != NULL) ? ncclSuccess : ncclInvalidArgument;
}

FAKE_API ncclResult_t
pncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *asyncError)
{
    *asyncError = ncclSuccess;
    return ncclSuccess;
}

FAKE_API const char *
pncclGetErrorString(ncclResult_t result)
{
    return "fake nccl error";
}

FAKE_API ncclResult_t
pncclGetVersion(int *version)
{
    *version = 22809;
    return ncclSuccess;
}

FAKE_API ncclResult_t
pncclGetUniqueId(ncclUniqueId *uniqueId)
{
    memset(uniqueId, 0, sizeof(*uniqueId));
    return ncclSuccess;
}

FAKE_API ncclResult_t
pncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank,
                        ncclConfig_t *config)
{
    fake_comm_t *c = (fake_comm_t *)fake_nccl_make_comm(nranks);

    c->rank     = rank;
    c->blocking = ((config != NULL) && (config->blocking == 0)) ? 0 : 1;
    *comm       = (ncclComm_t)c;
    return ncclSuccess;
}

FAKE_API ncclResult_t
pncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank)
{
    return pncclCommInitRankConfig(comm, nranks, commId, rank, NULL);
}

FAKE_API ncclResult_t
pncclCommInitAll(ncclComm_t *comm, int ndev, const int *devlist)
{
    int i;

    for (i = 0; i < ndev; ++i) {
        comm[i] = fake_nccl_make_comm(ndev);
        ((fake_comm_t *)comm[i])->rank = i;
    }
    return ncclSuccess;
}

ncclResult_t ncclAllReduce(const void *, void *, size_t, ncclDataType_t, ncclRedOp_t, ncclComm_t,
                           cudaStream_t) FAKE_ALIAS(ncclAllReduce);
ncclResult_t ncclGroupStart(void) FAKE_ALIAS(ncclGroupStart);
ncclResult_t ncclGroupEnd(void) FAKE_ALIAS(ncclGroupEnd);
ncclResult_t ncclCommCount(const ncclComm_t, int *) FAKE_ALIAS(ncclCommCount);
ncclResult_t ncclCommDestroy(ncclComm_t) FAKE_ALIAS(ncclCommDestroy);
ncclResult_t ncclCommAbort(ncclComm_t) FAKE_ALIAS(ncclCommAbort);
ncclResult_t ncclCommFinalize(ncclComm_t) FAKE_ALIAS(ncclCommFinalize);
ncclResult_t ncclGetUniqueId(ncclUniqueId *) FAKE_ALIAS(ncclGetUniqueId);
ncclResult_t ncclCommInitRank(ncclComm_t *, int, ncclUniqueId, int) FAKE_ALIAS(ncclCommInitRank);
ncclResult_t ncclCommInitRankConfig(ncclComm_t *, int, ncclUniqueId, int, ncclConfig_t *)
    FAKE_ALIAS(ncclCommInitRankConfig);
ncclResult_t ncclCommInitAll(ncclComm_t *, int, const int *) FAKE_ALIAS(ncclCommInitAll);
