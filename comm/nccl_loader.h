/*
 * The NCCL terse calls: resolved at run time from the copy the process already loaded, never a
 * second copy (DESIGN.md section 3). Nothing in terse carries a DT_NEEDED on libnccl; this file
 * needs only libdl. Used by the NCCL transport (comm/transport_nccl.c), the NCCL shim
 * (libterse-nccl.so), the gpu tests and terse-bench.
 *
 * Resolution, done once (lazily, thread-safe), first match wins:
 *   1. TERSE_NCCL_LIBRARY (a path or soname): the user's explicit choice. Taken from the loaded
 *      copy if one of that name is mapped (RTLD_NOLOAD); otherwise it is loaded (RTLD_LOCAL),
 *      the only case in which terse loads NCCL itself.
 *   2. The copy the caller links: `caller` is an address inside the calling object (the shim
 *      passes __builtin_return_address(0) of its ncclAllReduce); dladdr names that object, and
 *      dlsym on its RTLD_NOLOAD handle searches the object and its own dependencies, i.e. the
 *      libnccl it was linked against, even when it was loaded RTLD_LOCAL (torch).
 *   3. dlsym(RTLD_NEXT): the next definition after terse in the global scope (NULL under
 *      PyTorch, which loads its NCCL RTLD_LOCAL).
 *   4. dlopen("libnccl.so.2", RTLD_NOLOAD | RTLD_LAZY): a copy already mapped under the soname.
 *   5. Any other mapped object whose file name contains "libnccl" (dl_iterate_phdr).
 * Every function is looked up as pnccl<Name> first (NCCL's PMPI-style alias, which an
 * interposer does not define), then nccl<Name>; a symbol that resolves into the object holding
 * this loader (the shim itself) is rejected. When dl_iterate_phdr finds more than one mapped
 * libnccl, the resolution logs both at WARN and names the one used.
 */
#ifndef TERSE_NCCL_LOADER_H
#define TERSE_NCCL_LOADER_H

#include "terse_base.h"

#if TERSE_HAVE_NCCL
#include <nccl.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The real NCCL entry points. Every member is non-NULL once terse__nccl_api returned
 * TERSE_OK, except those marked optional (NULL when the loaded NCCL lacks them). */
typedef struct terse_nccl_api {
    ncclResult_t (*AllReduce)(const void *sendbuff, void *recvbuff, size_t count,
                              ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                              cudaStream_t stream);
    ncclResult_t (*AllGather)(const void *sendbuff, void *recvbuff, size_t sendcount,
                              ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream);
    ncclResult_t (*Send)(const void *sendbuff, size_t count, ncclDataType_t datatype, int peer,
                         ncclComm_t comm, cudaStream_t stream);
    ncclResult_t (*Recv)(void *recvbuff, size_t count, ncclDataType_t datatype, int peer,
                         ncclComm_t comm, cudaStream_t stream);
    ncclResult_t (*Broadcast)(const void *sendbuff, void *recvbuff, size_t count,
                              ncclDataType_t datatype, int root, ncclComm_t comm,
                              cudaStream_t stream);
    ncclResult_t (*GroupStart)(void);
    ncclResult_t (*GroupEnd)(void);
    ncclResult_t (*CommSplit)(ncclComm_t comm, int color, int key, ncclComm_t *newcomm,
                              ncclConfig_t *config);
    ncclResult_t (*CommCount)(const ncclComm_t comm, int *count);
    ncclResult_t (*CommUserRank)(const ncclComm_t comm, int *rank);
    ncclResult_t (*CommCuDevice)(const ncclComm_t comm, int *device);
    ncclResult_t (*CommDestroy)(ncclComm_t comm);
    ncclResult_t (*CommAbort)(ncclComm_t comm);
    ncclResult_t (*CommGetAsyncError)(ncclComm_t comm, ncclResult_t *asyncError);
    const char  *(*GetErrorString)(ncclResult_t result);
    const char  *(*GetLastError)(ncclComm_t comm);            /* optional */
    ncclResult_t (*GetVersion)(int *version);
    /* tests and benchmarks */
    ncclResult_t (*GetUniqueId)(ncclUniqueId *uniqueId);
    ncclResult_t (*CommInitRank)(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank);
    ncclResult_t (*CommInitRankConfig)(ncclComm_t *comm, int nranks, ncclUniqueId commId,
                                       int rank, ncclConfig_t *config);
    ncclResult_t (*CommInitAll)(ncclComm_t *comm, int ndev, const int *devlist);

    int   version;             /* ncclGetVersion's code, e.g. 22809 */
    int   copies;              /* libnccl objects mapped in the process at resolution */
    char  path[512];           /* the object the functions came from (dladdr) */
    const char *how;           /* "TERSE_NCCL_LIBRARY", "caller", "RTLD_NEXT", ... (static) */
} terse_nccl_api_t;

/* Resolves the real NCCL once per process and returns it.
 *   [in]  caller  an address inside the object whose libnccl should be used, or NULL; only the
 *                 first call that resolves uses it (later calls return the same table)
 *   [out] api_p   static storage, valid for the life of the process; never NULL on TERSE_OK
 * Returns TERSE_OK, or TERSE_ERR_UNSUPPORTED when no NCCL is loaded (and TERSE_NCCL_LIBRARY
 * is unset or unloadable) or a required symbol is missing (logged once; later calls return the
 * same status without logging again). Thread-safe. Does no CUDA or NCCL work itself. */
terse_status_t terse__nccl_api(const void *caller, const terse_nccl_api_t **api_p);

/* Maps an NCCL result to a status, logging `what` and NCCL's description on failure. */
terse_status_t terse__nccl_status(const terse_nccl_api_t *api, ncclResult_t result,
                                  const char *what);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_HAVE_NCCL */

#endif /* TERSE_NCCL_LOADER_H */
