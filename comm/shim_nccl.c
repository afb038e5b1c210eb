/*
 * libterse-nccl.so: `LD_PRELOAD=libterse-nccl.so torchrun ...` compresses the job's gradient
 * allreduces without a code change (DESIGN.md sections 1, 3 and 8, rule 8).
 *
 * ncclAllReduce is defined here over the real NCCL, resolved at run time from the copy the
 * process already loaded (comm/nccl_loader.h: never a second copy, no DT_NEEDED on libnccl).
 * A call is compressed only when all of these hold, every one of them the same on every rank:
 *   - datatype fp32, fp16 or bf16, op ncclSum or ncclAvg;
 *   - every rank's TERSE_* configuration is valid and equal (a 24-byte MAX allreduce on the
 *     user's communicator and stream at the first such call on it, read back with one stream
 *     synchronisation: once per communicator, never on the hot path);
 *   - count * size >= TERSE_MIN_BYTES and the plan compresses at all;
 *   - not inside the user's ncclGroupStart/End (NCCL defers the launch to the outermost
 *     GroupEnd: the depth is counted per thread by wrapping both), not during CUDA graph
 *     capture of the stream, not on a nonblocking communicator (the blocking mode is recorded
 *     by wrapping communicator creation: ncclCommInitRank, ncclCommInitRankConfig,
 *     ncclCommInitAll, ncclCommInitRankScalable, ncclCommSplit);
 *   - the call's place in the communicator's per-step call cycle (comm/callcycle.h, shared
 *     with the MPI shim) has recurred TERSE_MPI_CYCLE_RECUR times;
 *   - the layout of that place was agreed by every rank (comm/terse.c: plan, sizes, memory).
 * Everything else goes to the real ncclAllReduce untouched: bit-identical to a run without the
 * shim. A call skipped for a reason other than its type, op or size (group, capture,
 * nonblocking, unknown communicator, a failed context) warns once with that reason.
 *
 * terse's own traffic runs on a private communicator that the NCCL transport splits from the
 * user's when the first cycle locks (comm/transport_nccl.h says why), on the caller's stream.
 * ncclCommDestroy, ncclCommAbort and ncclCommFinalize drop terse's context of that
 * communicator first. The device of the communicator (ncclCommCuDevice) is made current on
 * entry to anything that does CUDA work and the caller's device restored on return (terse's
 * static CUDA runtime keeps its own current device). One mutex per communicator: PyTorch
 * calls from the autograd thread (buckets) and the main thread (loss, barrier: stream 0).
 *
 * Nothing happens in a constructor. At exit the shim logs (INFO) what it caught, and warns if
 * a libnccl is loaded but no ncclAllReduce came through (NCCL linked statically, or called
 * through a symbol the shim does not define).
 *
 * Layouts (DESIGN.md section 3): terse_nccl_register_layout() gives the per-parameter shapes of
 * a buffer (a DDP bucket), so PowerSGD and the scheduler see matrices instead of flat
 * segments. The PyTorch helper (examples/ddp/terse_helper) calls it once per bucket at the
 * same step on every rank, before that bucket's allreduce; the layout binds at the next call
 * whose receive buffer is that pointer with that many elements, and the place's slot is
 * rebuilt with it (agreed again, like any layout).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>
#include <nccl.h>

#include "callcycle.h"
#include "nccl_loader.h"
#include "terse_internal.h"
#include "transport.h"

typedef enum shim_state {
    SHIM_NEW = 0, /* configuration not agreed yet */
    SHIM_ON,      /* compress what qualifies */
    SHIM_OFF,     /* pass everything through (disagreement, TERSE_SHIM=0, no context) */
    SHIM_BADCFG   /* some rank has an invalid TERSE_* value: candidate calls fail */
} shim_state_t;

/* A registered layout (terse_nccl_register_layout): the layers of the buffer at `buf`. */
typedef struct shim_layout {
    struct shim_layout *next;
    const void         *buf;       /* the caller's pointer: binds local state only */
    size_t              n, total;  /* layers, elements */
    size_t             *count, *rows, *cols;   /* owned, n each */
    char              (*name)[TERSE_NAME_MAX]; /* owned, n */
    uint32_t            gen;       /* registrations of this pointer so far */
} shim_layout_t;

/* What a cycle place is bound to. */
typedef struct shim_place {
    const shim_layout_t *lay;      /* NULL: no registered layout */
    uint32_t             gen;      /* lay->gen when bound */
    uint32_t             key_gen;  /* part of the place's slot key: changes with its binding */
    int                  ran;      /* the place has a slot in the context */
} shim_place_t;

typedef struct shim_comm {
    struct shim_comm *next;        /* registry list */
    pthread_mutex_t   lock;
    ncclComm_t        comm;        /* the user's communicator (not owned) */
    int               blocking;    /* 1, 0, or -1 when its creation was not seen */
    int               device, rank, nranks;
    shim_state_t      state;
    terse_ctx_t      *ctx;         /* created when the first cycle locks; owns the split */
    int               ctx_failed;
    terse_cycle_t     cycle;
    shim_place_t     *places;      /* owned; cycle.period entries while locked */
    size_t            nplaces;
    uint64_t         *agree_buf;   /* device, 3 words (the configuration agreement) */
    uint32_t          layout_gen;  /* bindings so far: a new binding's slot key */
} shim_comm_t;

/* Lock order: shim_lock before a record's lock (terse_nccl_counters_get); a record's lock before
 * shim_layout_lock (the allreduce binding a layout). */
static pthread_mutex_t shim_lock        = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t shim_layout_lock = PTHREAD_MUTEX_INITIALIZER;
static shim_comm_t    *shim_list;
static shim_layout_t  *shim_layouts;
static __thread int    shim_group_depth;

/* counters for the exit log and terse_nccl_counters_get() */
static uint64_t shim_ncalls;       /* ncclAllReduce calls */
static uint64_t shim_ncompressed;  /* calls terse compressed */
static uint64_t shim_pass_bytes;   /* plain-equivalent bytes of calls passed through */
static uint64_t shim_dead_sent;    /* bytes_sent / bytes_plain of destroyed contexts */
static uint64_t shim_dead_plain;

/* ---------------------------------------------------------------- the real NCCL */
static const terse_nccl_api_t *
shim_api(const void *caller)
{
    const terse_nccl_api_t *api = NULL;

    if (terse__nccl_api(caller, &api) != TERSE_OK) {
        terse_error(TERSE_LOG_SHIM, "no real NCCL is loaded in this process: the call fails");
        return NULL;
    }
    return api;
}

/* A function the loader's table lacks, from the object the table came from (pnccl alias
 * first). NULL if absent or if it resolves into this shim. */
static void *
shim_extra_sym(const terse_nccl_api_t *api, const char *name)
{
    char sym[96];
    Dl_info self, got;
    void *h, *p;

    h = dlopen(api->path, RTLD_NOLOAD | RTLD_LAZY);
    if (h == NULL) {
        return NULL;
    }
    snprintf(sym, sizeof(sym), "p%s", name);
    p = dlsym(h, sym);
    if (p == NULL) {
        p = dlsym(h, name);
    }
    dlclose(h);
    if ((p != NULL) && dladdr((void *)shim_extra_sym, &self) && dladdr(p, &got) &&
        (self.dli_fbase == got.dli_fbase)) {
        return NULL;
    }
    return p;
}

/* ---------------------------------------------------------------- helpers */
static int
shim_env_blocking(void)
{
    const char *e = getenv("NCCL_COMM_BLOCKING");

    return ((e != NULL) && (e[0] == '0')) ? 0 : 1;
}

/* TERSE_MIN_BYTES, or "never" while the configuration is invalid (then only the agreement
 * looks at a call, and fails it). */
static size_t
shim_min_bytes(void)
{
    const terse_config_t *cfg = terse__config();

    return (cfg != NULL) ? (size_t)cfg->MIN_BYTES : SIZE_MAX;
}

static int
shim_dtype(ncclDataType_t dt, terse_dtype_t *dtype_p)
{
    switch (dt) {
    case ncclFloat32:
        *dtype_p = TERSE_FLOAT32;
        return 1;
    case ncclFloat16:
        *dtype_p = TERSE_FLOAT16;
        return 1;
    case ncclBfloat16:
        *dtype_p = TERSE_BFLOAT16;
        return 1;
    default:
        return 0;
    }
}

static int
shim_op(ncclRedOp_t op, terse_op_t *op_p)
{
    if (op == ncclSum) {
        *op_p = TERSE_OP_SUM;
        return 1;
    }
    if (op == ncclAvg) {
        *op_p = TERSE_OP_AVG;
        return 1;
    }
    return 0; /* prod, max, min, PreMulSum and other user ops */
}

/* Makes `device` current in terse's runtime; *prev_p gets the device to restore. */
static void
shim_enter(int device, int *prev_p)
{
    int prev = -1;

    if (cudaGetDevice(&prev) != cudaSuccess) {
        prev = -1;
    }
    if ((device >= 0) && (prev != device)) {
        cudaSetDevice(device);
    }
    *prev_p = prev;
}

static void
shim_leave(int device, int prev)
{
    if ((prev >= 0) && (prev != device)) {
        cudaSetDevice(prev);
    }
}

/* The record of comm, created on first use (blocking -1 when its creation was not seen).
 * NULL when out of memory. */
static shim_comm_t *
shim_comm_get(ncclComm_t comm, int blocking)
{
    shim_comm_t *sc;

    (void)terse_init(); /* the log level; a bad value is reported at the agreement */
    pthread_mutex_lock(&shim_lock);
    for (sc = shim_list; sc != NULL; sc = sc->next) {
        if (sc->comm == comm) {
            if (blocking >= 0) {
                sc->blocking = blocking;
            }
            goto out;
        }
    }
    sc = calloc(1, sizeof(*sc));
    if (sc == NULL) {
        goto out;
    }
    pthread_mutex_init(&sc->lock, NULL);
    terse__cycle_init(&sc->cycle, 1); /* the configured recurrence once agreed */
    sc->comm     = comm;
    sc->blocking = blocking;
    sc->device   = -1;
    sc->next     = shim_list;
    shim_list    = sc;
out:
    pthread_mutex_unlock(&shim_lock);
    return sc;
}

static int
shim_comm_blocking_of(ncclComm_t comm)
{
    shim_comm_t *sc;
    int b = -1;

    pthread_mutex_lock(&shim_lock);
    for (sc = shim_list; sc != NULL; sc = sc->next) {
        if (sc->comm == comm) {
            b = sc->blocking;
            break;
        }
    }
    pthread_mutex_unlock(&shim_lock);
    return b;
}

static void
shim_ctx_drop(shim_comm_t *sc)
{
    terse_stats_t st;

    if (sc->ctx == NULL) {
        return;
    }
    memset(&st, 0, sizeof(st));
    st.size = sizeof(st);
    if (terse_stats_get(sc->ctx, &st) == TERSE_OK) {
        __atomic_add_fetch(&shim_dead_sent, st.bytes_sent, __ATOMIC_RELAXED);
        __atomic_add_fetch(&shim_dead_plain, st.bytes_plain, __ATOMIC_RELAXED);
    }
    terse_ctx_destroy(sc->ctx);
    sc->ctx = NULL;
}

/* Forgets comm (ncclCommDestroy, Abort, Finalize): terse's context first, while the user's
 * communicator still exists. */
static void
shim_comm_drop(ncclComm_t comm)
{
    shim_comm_t *sc, **pp;
    int prev;

    pthread_mutex_lock(&shim_lock);
    for (pp = &shim_list; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->comm == comm) {
            break;
        }
    }
    sc = *pp;
    if (sc != NULL) {
        *pp = sc->next;
    }
    pthread_mutex_unlock(&shim_lock);
    if (sc == NULL) {
        return;
    }
    pthread_mutex_lock(&sc->lock);
    if ((sc->ctx != NULL) || (sc->agree_buf != NULL)) {
        shim_enter(sc->device, &prev);
        shim_ctx_drop(sc);
        if (sc->agree_buf != NULL) {
            cudaFree(sc->agree_buf);
        }
        shim_leave(sc->device, prev);
    }
    pthread_mutex_unlock(&sc->lock);
    pthread_mutex_destroy(&sc->lock);
    terse__cycle_free(&sc->cycle);
    free(sc->places);
    free(sc);
}

/* Rule 1 for the configuration, collective over the user's communicator on the caller's
 * stream: every rank's TERSE_* values valid and equal. Synchronises the stream once per
 * communicator (the caller is not capturing: checked before). */
static void
shim_agree_config(shim_comm_t *sc, const terse_nccl_api_t *api, cudaStream_t stream)
{
    static const shim_state_t of[] = {SHIM_ON, SHIM_OFF, SHIM_BADCFG};
    terse_shim_agree_t ag;
    ncclResult_t nr;

    terse__shim_agree_begin(&ag);
    if ((sc->agree_buf == NULL) &&
        (cudaMalloc((void **)&sc->agree_buf, sizeof(ag.v)) != cudaSuccess)) {
        /* 24 bytes of device memory: the device is exhausted, and the other ranks may wait
         * in this agreement as they would in any NCCL call on such a device */
        (void)cudaGetLastError();
        sc->agree_buf = NULL;
        terse_error(TERSE_LOG_SHIM, "cannot allocate the agreement words: passing through");
        sc->state = SHIM_OFF;
        return;
    }
    nr = ncclSuccess;
    if ((cudaMemcpyAsync(sc->agree_buf, ag.v, sizeof(ag.v), cudaMemcpyHostToDevice, stream) !=
         cudaSuccess) ||
        ((nr = api->AllReduce(sc->agree_buf, sc->agree_buf, 3, ncclUint64, ncclMax, sc->comm,
                              stream)) != ncclSuccess) ||
        (cudaMemcpyAsync(ag.v, sc->agree_buf, sizeof(ag.v), cudaMemcpyDeviceToHost, stream) !=
         cudaSuccess) ||
        (cudaStreamSynchronize(stream) != cudaSuccess)) {
        terse_warn(TERSE_LOG_SHIM, "the configuration agreement failed (%s): passing through",
                   (nr != ncclSuccess) ? api->GetErrorString(nr) : "cuda error");
        sc->state = SHIM_OFF;
        return;
    }
    sc->state = of[terse__shim_agree_end(&ag, "ncclAllReduce", "ncclInvalidArgument")];
    if (sc->state == SHIM_ON) {
        terse__cycle_init(&sc->cycle, (size_t)terse__config()->MPI_CYCLE_RECUR);
    }
}

/* 1 when stream is being captured into a CUDA graph, or when that cannot be told. */
static int
shim_capturing(cudaStream_t stream)
{
    enum cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;

    if (cudaStreamIsCapturing(stream, &cs) != cudaSuccess) {
        (void)cudaGetLastError(); /* terse's own runtime: the application's errors are not here */
        return 1;
    }
    return cs != cudaStreamCaptureStatusNone;
}

/* The registered layout of buf with `count` elements, or NULL. Called with sc->lock held. */
static const shim_layout_t *
shim_layout_find(const void *buf, size_t count)
{
    const shim_layout_t *l;

    pthread_mutex_lock(&shim_layout_lock);
    for (l = shim_layouts; l != NULL; l = l->next) {
        if ((l->buf == buf) && (l->total == count)) {
            break;
        }
    }
    pthread_mutex_unlock(&shim_layout_lock);
    return l;
}

/* Makes sc->places hold one entry per place of the locked cycle (all unbound after a lock). */
static int
shim_places_fit(shim_comm_t *sc)
{
    shim_place_t *p;

    if (sc->nplaces == sc->cycle.period) {
        return 1;
    }
    p = calloc(sc->cycle.period, sizeof(*p));
    if (p == NULL) {
        return 0;
    }
    free(sc->places);
    sc->places  = p;
    sc->nplaces = sc->cycle.period;
    return 1;
}

static uint64_t
shim_plain_bytes(int nranks, size_t bytes)
{
    return (nranks > 0) ? (2 * (uint64_t)(nranks - 1) * (uint64_t)bytes) / (uint64_t)nranks : 0;
}

static ncclResult_t
shim_pass(const terse_nccl_api_t *api, const void *sendbuff, void *recvbuff, size_t count,
          ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream,
          size_t bytes, int nranks)
{
    __atomic_add_fetch(&shim_pass_bytes, shim_plain_bytes(nranks, bytes), __ATOMIC_RELAXED);
    return api->AllReduce(sendbuff, recvbuff, count, datatype, op, comm, stream);
}

/* Runs the compressed allreduce of place `place` (sc->lock held, device current). */
static terse_status_t
shim_compress(shim_comm_t *sc, size_t place, const void *sendbuff, void *recvbuff,
              size_t count, terse_dtype_t dtype, terse_op_t op, cudaStream_t stream)
{
    const shim_layout_t *lay = shim_layout_find(recvbuff, count);
    shim_place_t *pl         = &sc->places[place];
    terse_ctx_t *ctx         = sc->ctx;
    size_t lay_n, lay_total, *lay_count, *lay_rows, *lay_cols;
    char (*lay_name)[TERSE_NAME_MAX];
    terse_status_t st;
    uint64_t key;

    if ((lay != pl->lay) || ((lay != NULL) && (lay->gen != pl->gen))) {
        /* a new binding, at the same call on every rank (the registration came at the same
         * step everywhere): its slot is built afresh, any old slot of the place dropped */
        if (pl->ran) {
            terse__ctx_set_uniform(ctx, terse__config()->COMPRESSOR);
            for (size_t i = 0; i < sc->nplaces; ++i) {
                sc->places[i].ran = 0;
            }
        }
        pl->lay     = lay;
        pl->gen     = (lay != NULL) ? lay->gen : 0;
        pl->key_gen = ++sc->layout_gen;
        if (lay != NULL) {
            terse_info(TERSE_LOG_SHIM, "place %zu of the call cycle uses a registered layout "
                       "of %zu layers", place, lay->n);
        }
    }
    key = TERSE_KEY_SHIM | ((uint64_t)(pl->key_gen & 0x3fffffffu) << 32) | (uint64_t)place;
    /* The slot of a new key is built inside the call from ctx->lay_* when the count matches
     * (comm/terse.c ctx_build_slot): lend the place's layout for the call. */
    lay_n     = ctx->lay_n;
    lay_total = ctx->lay_total;
    lay_count = ctx->lay_count;
    lay_rows  = ctx->lay_rows;
    lay_cols  = ctx->lay_cols;
    lay_name  = ctx->lay_name;
    if (lay != NULL) {
        ctx->lay_n     = lay->n;
        ctx->lay_total = lay->total;
        ctx->lay_count = lay->count;
        ctx->lay_rows  = lay->rows;
        ctx->lay_cols  = lay->cols;
        ctx->lay_name  = lay->name;
    }
    ctx->stream = stream;
    st          = terse__allreduce_keyed(ctx, key, sendbuff, recvbuff, count, dtype, op);
    ctx->lay_n     = lay_n;
    ctx->lay_total = lay_total;
    ctx->lay_count = lay_count;
    ctx->lay_rows  = lay_rows;
    ctx->lay_cols  = lay_cols;
    ctx->lay_name  = lay_name;
    pl->ran        = 1;
    return st;
}

/* ---------------------------------------------------------------- group depth */
TERSE_EXPORT ncclResult_t
ncclGroupStart(void)
{
    const terse_nccl_api_t *api = shim_api(__builtin_return_address(0));
    ncclResult_t r;

    if (api == NULL) {
        return ncclSystemError;
    }
    r = api->GroupStart();
    if (r == ncclSuccess) {
        ++shim_group_depth;
    }
    return r;
}

TERSE_EXPORT ncclResult_t
ncclGroupEnd(void)
{
    const terse_nccl_api_t *api = shim_api(__builtin_return_address(0));

    if (api == NULL) {
        return ncclSystemError;
    }
    if (shim_group_depth > 0) {
        --shim_group_depth;
    }
    return api->GroupEnd();
}

/* ---------------------------------------------------------------- communicators */
TERSE_EXPORT ncclResult_t
ncclCommInitRank(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank)
{
    const terse_nccl_api_t *api = shim_api(__builtin_return_address(0));
    ncclResult_t r;

    if (api == NULL) {
        return ncclSystemError;
    }
    r = api->CommInitRank(comm, nranks, commId, rank);
    if (((r == ncclSuccess) || (r == ncclInProgress)) && (comm != NULL) && (*comm != NULL)) {
        (void)shim_comm_get(*comm, shim_env_blocking());
    }
    return r;
}

static int
shim_config_blocking(const ncclConfig_t *config, int dflt)
{
    if ((config == NULL) || (config->blocking == NCCL_CONFIG_UNDEF_INT)) {
        return dflt;
    }
    return config->blocking != 0;
}

TERSE_EXPORT ncclResult_t
ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId commId, int rank,
                       ncclConfig_t *config)
{
    const terse_nccl_api_t *api = shim_api(__builtin_return_address(0));
    ncclResult_t r;

    if (api == NULL) {
        return ncclSystemError;
    }
    r = api->CommInitRankConfig(comm, nranks, commId, rank, config);
    if (((r == ncclSuccess) || (r == ncclInProgress)) && (comm != NULL) && (*comm != NULL)) {
        (void)shim_comm_get(*comm, shim_config_blocking(config, shim_env_blocking()));
    }
    return r;
}

TERSE_EXPORT ncclResult_t
ncclCommInitAll(ncclComm_t *comms, int ndev, const int *devlist)
{
    const terse_nccl_api_t *api = shim_api(__builtin_return_address(0));
    ncclResult_t r;
    int i;

    if (api == NULL) {
        return ncclSystemError;
    }
    r = api->CommInitAll(comms, ndev, devlist);
    if ((r == ncclSuccess) && (comms != NULL)) {
        for (i = 0; i < ndev; ++i) {
            if (comms[i] != NULL) {
                (void)shim_comm_get(comms[i], shim_env_blocking());
            }
        }
    }
    return r;
}

typedef ncclResult_t (*shim_init_scalable_fn_t)(ncclComm_t *, int, int, int, ncclUniqueId *,
                                                ncclConfig_t *);

TERSE_EXPORT ncclResult_t
ncclCommInitRankScalable(ncclComm_t *newcomm, int nranks, int myrank, int nId,
                         ncclUniqueId *commIds, ncclConfig_t *config)
{
    const terse_nccl_api_t *api = shim_api(__builtin_return_address(0));
    shim_init_scalable_fn_t fn;
    ncclResult_t r;

    if (api == NULL) {
        return ncclSystemError;
    }
    fn = (shim_init_scalable_fn_t)shim_extra_sym(api, "ncclCommInitRankScalable");
    if (fn == NULL) {
        terse_error(TERSE_LOG_SHIM, "the loaded NCCL (%d) has no ncclCommInitRankScalable",
                    api->version);
        return ncclInvalidUsage;
    }
    r = fn(newcomm, nranks, myrank, nId, commIds, config);
    if (((r == ncclSuccess) || (r == ncclInProgress)) && (newcomm != NULL) &&
        (*newcomm != NULL)) {
        (void)shim_comm_get(*newcomm, shim_config_blocking(config, shim_env_blocking()));
    }
    return r;
}

TERSE_EXPORT ncclResult_t
ncclCommSplit(ncclComm_t comm, int color, int key, ncclComm_t *newcomm, ncclConfig_t *config)
{
    const terse_nccl_api_t *api = shim_api(__builtin_return_address(0));
    ncclResult_t r;
    int parent;

    if (api == NULL) {
        return ncclSystemError;
    }
    parent = shim_comm_blocking_of(comm);
    r      = api->CommSplit(comm, color, key, newcomm, config);
    if (((r == ncclSuccess) || (r == ncclInProgress)) && (newcomm != NULL) &&
        (*newcomm != NULL)) {
        /* without a config the child inherits the parent's */
        (void)shim_comm_get(*newcomm, shim_config_blocking(config, (parent >= 0)
                                                                       ? parent
                                                                       : shim_env_blocking()));
    }
    return r;
}

TERSE_EXPORT ncclResult_t
ncclCommFinalize(ncclComm_t comm)
{
    const terse_nccl_api_t *api = shim_api(__builtin_return_address(0));
    ncclResult_t (*fn)(ncclComm_t);

    if (api == NULL) {
        return ncclSystemError;
    }
    shim_comm_drop(comm);
    fn = (ncclResult_t(*)(ncclComm_t))shim_extra_sym(api, "ncclCommFinalize");
    if (fn == NULL) {
        terse_error(TERSE_LOG_SHIM, "the loaded NCCL (%d) has no ncclCommFinalize",
                    api->version);
        return ncclInvalidUsage;
    }
    return fn(comm);
}

TERSE_EXPORT ncclResult_t
ncclCommDestroy(ncclComm_t comm)
{
    const terse_nccl_api_t *api = shim_api(__builtin_return_address(0));

    if (api == NULL) {
        return ncclSystemError;
    }
    shim_comm_drop(comm);
    return api->CommDestroy(comm);
}

TERSE_EXPORT ncclResult_t
ncclCommAbort(ncclComm_t comm)
{
    const terse_nccl_api_t *api = shim_api(__builtin_return_address(0));

    if (api == NULL) {
        return ncclSystemError;
    }
    shim_comm_drop(comm);
    return api->CommAbort(comm);
}

/* ---------------------------------------------------------------- the interposed call */
TERSE_EXPORT ncclResult_t
ncclAllReduce(const void *sendbuff, void *recvbuff, size_t count, ncclDataType_t datatype,
              ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream)
{
    const terse_nccl_api_t *api = shim_api(__builtin_return_address(0));
    const terse_config_t *cfg;
    terse_dtype_t dtype;
    terse_op_t top;
    terse_status_t st;
    shim_comm_t *sc;
    size_t place = 0, bytes;
    int nranks = 0, prev = -1;
    ncclResult_t r;

    if (api == NULL) {
        return ncclSystemError;
    }
    __atomic_add_fetch(&shim_ncalls, 1, __ATOMIC_RELAXED);
    if ((comm == NULL) || (api->CommCount(comm, &nranks) != ncclSuccess)) {
        nranks = 0;
    }
    /* what never qualifies, whatever the configuration */
    if ((count == 0) || !shim_dtype(datatype, &dtype) || !shim_op(op, &top) || (nranks <= 0)) {
        return api->AllReduce(sendbuff, recvbuff, count, datatype, op, comm, stream);
    }
    bytes = count * terse_dtype_size(dtype);
    if (shim_group_depth > 0) {
        if (bytes >= shim_min_bytes()) {
            terse_warn_once(TERSE_LOG_SHIM, "an allreduce of %zu bytes inside ncclGroupStart/End "
                            "passes through uncompressed (NCCL defers grouped launches)", bytes);
        }
        return shim_pass(api, sendbuff, recvbuff, count, datatype, op, comm, stream, bytes,
                         nranks);
    }
    sc = shim_comm_get(comm, -1);
    if ((sc == NULL) || (sc->blocking != 1)) {
        if (sc == NULL) {
            terse_warn_once(TERSE_LOG_SHIM, "cannot track a communicator: passing through");
        } else if (sc->blocking == 0) {
            terse_warn_once(TERSE_LOG_SHIM, "nonblocking communicator: its allreduces pass "
                            "through uncompressed");
        } else {
            terse_warn_once(TERSE_LOG_SHIM, "a communicator created before terse was loaded, "
                            "or by a call terse does not wrap: its allreduces pass through "
                            "uncompressed");
        }
        return shim_pass(api, sendbuff, recvbuff, count, datatype, op, comm, stream, bytes,
                         nranks);
    }
    pthread_mutex_lock(&sc->lock);
    if (sc->device < 0) {
        if (api->CommCuDevice(comm, &sc->device) != ncclSuccess) {
            sc->device = -1;
        }
        api->CommUserRank(comm, &sc->rank);
        sc->nranks = nranks;
    }
    if (sc->state == SHIM_BADCFG) {
        pthread_mutex_unlock(&sc->lock);
        return ncclInvalidArgument;
    }
    if ((sc->state == SHIM_OFF) || sc->ctx_failed ||
        ((sc->state == SHIM_ON) && (bytes < shim_min_bytes()))) {
        /* the common small call (loss, barrier): no CUDA call at all */
        pthread_mutex_unlock(&sc->lock);
        return shim_pass(api, sendbuff, recvbuff, count, datatype, op, comm, stream, bytes,
                         nranks);
    }
    shim_enter(sc->device, &prev);
    if (shim_capturing(stream)) {
        if (bytes >= shim_min_bytes()) {
            terse_warn_once(TERSE_LOG_SHIM, "an allreduce of %zu bytes passes through "
                            "uncompressed: its stream is being captured into a CUDA graph, or "
                            "CUDA cannot tell (no device?)", bytes);
        }
        goto pass;
    }
    if (sc->state == SHIM_NEW) {
        /* the first candidate on this communicator, whatever its size: the same call on
         * every rank */
        shim_agree_config(sc, api, stream);
        if (sc->state == SHIM_BADCFG) {
            shim_leave(sc->device, prev);
            pthread_mutex_unlock(&sc->lock);
            return ncclInvalidArgument;
        }
    }
    cfg = terse__config(); /* valid: the state is ON */
    if ((sc->state != SHIM_ON) || (bytes < cfg->MIN_BYTES)) {
        goto pass;
    }

    switch (terse__cycle_feed(&sc->cycle, terse__cycle_key(count, dtype, top), &place)) {
    case TERSE_CYCLE_BROKEN:
        if (sc->ctx != NULL) {
            terse__ctx_set_uniform(sc->ctx, cfg->COMPRESSOR); /* drops the old places */
        }
        free(sc->places);
        sc->places  = NULL;
        sc->nplaces = 0;
        goto pass;
    case TERSE_CYCLE_LEARNING:
        goto pass;
    case TERSE_CYCLE_LOCKED:
        free(sc->places);
        sc->places  = NULL;
        sc->nplaces = 0;
        break;
    default:
        break;
    }
    if (!shim_places_fit(sc)) {
        terse_warn_once(TERSE_LOG_SHIM, "out of host memory for the call cycle: passing through");
        goto pass;
    }
    if (sc->ctx == NULL) {
        terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
        params.transport = TERSE_TRANSPORT_NCCL;
        params.comm      = (void *)comm;
        params.name      = "nccl-shim";
        st = terse_ctx_create(&params, &sc->ctx);
        if (st != TERSE_OK) {
            terse_warn(TERSE_LOG_SHIM, "cannot create a terse context (%s): passing through",
                       terse_status_str(st));
            sc->ctx_failed = 1;
            sc->ctx        = NULL;
            goto pass;
        }
        if (terse__ctx_plan_is_native(sc->ctx)) {
            /* TERSE_COMPRESSOR none: nothing to do, and plain NCCL is bit-identical */
            sc->ctx_failed = 1;
            goto pass;
        }
        terse_info(TERSE_LOG_SHIM, "caught ncclAllReduce on communicator %p (rank %d of %d, "
                   "device %d, NCCL %d from %s): a call cycle of %zu allreduces, compressing "
                   "with %s", (void *)comm, sc->rank, sc->nranks, sc->device, api->version,
                   api->path, sc->cycle.period, cfg->COMPRESSOR);
    }
    st = shim_compress(sc, place, sendbuff, recvbuff, count, dtype, top, stream);
    shim_leave(sc->device, prev);
    pthread_mutex_unlock(&sc->lock);
    if (st == TERSE_OK) {
        __atomic_add_fetch(&shim_ncompressed, 1, __ATOMIC_RELAXED);
        return ncclSuccess;
    }
    if (st == TERSE_ERR_MISMATCH) {
        /* the exact result was delivered; the reason was logged by the agreement */
        terse_warn_once(TERSE_LOG_SHIM, "ranks did not agree on compressing an allreduce of "
                        "%zu elements: passing it through", count);
        __atomic_add_fetch(&shim_pass_bytes, shim_plain_bytes(nranks, bytes), __ATOMIC_RELAXED);
        return ncclSuccess;
    }
    terse_error(TERSE_LOG_SHIM, "compressed allreduce of %zu elements failed: %s", count,
                terse_status_str(st));
    switch (st) {
    case TERSE_ERR_CUDA:
        return ncclUnhandledCudaError;
    case TERSE_ERR_NOMEM:
    case TERSE_ERR_SYSTEM:
        return ncclSystemError;
    case TERSE_ERR_INVALID:
        return ncclInvalidArgument;
    default:
        return ncclInternalError;
    }

pass:
    shim_leave(sc->device, prev);
    pthread_mutex_unlock(&sc->lock);
    r = shim_pass(api, sendbuff, recvbuff, count, datatype, op, comm, stream, bytes, nranks);
    return r;
}

/* ---------------------------------------------------------------- layouts */
/*
 * Gives the per-parameter layout of the buffer at `buf` (a DDP bucket): layer j holds
 * counts[j] elements from element offsets[j], with matrix shape rows[j] x cols[j] (0, 0 for a
 * flat tensor). Offsets must increase and layers must not overlap; gaps become flat layers.
 * Local: call it on every rank with the same values at the same step, before the allreduce
 * of that buffer; the layout binds at the next compressed call on that pointer with
 * offsets[n-1] + counts[n-1] elements. Registering the same pointer again replaces its layout.
 *   [in] buf      the buffer's address (not dereferenced)
 *   [in] offsets, counts, rows, cols  n entries each; copied
 * Returns TERSE_OK, TERSE_ERR_INVALID (bad arguments, logged), TERSE_ERR_NOMEM.
 */
TERSE_API int terse_nccl_register_layout(const void *buf, size_t n, const uint64_t *offsets,
                                         const uint64_t *counts, const uint64_t *rows,
                                         const uint64_t *cols);

TERSE_API int
terse_nccl_register_layout(const void *buf, size_t n, const uint64_t *offsets,
                           const uint64_t *counts, const uint64_t *rows, const uint64_t *cols)
{
    shim_layout_t *lay, **pp;
    size_t j, k = 0, nl = 0, at = 0;

    (void)terse_init();
    if ((buf == NULL) || (n == 0) || (offsets == NULL) || (counts == NULL) || (rows == NULL) ||
        (cols == NULL)) {
        terse_error(TERSE_LOG_SHIM, "terse_nccl_register_layout: NULL pointer or no layer");
        return TERSE_ERR_INVALID;
    }
    for (j = 0; j < n; ++j) {
        if ((counts[j] == 0) || (offsets[j] < at) ||
            ((rows[j] * cols[j] != counts[j]) && !((rows[j] == 0) && (cols[j] == 0)))) {
            terse_error(TERSE_LOG_SHIM, "terse_nccl_register_layout: layer %zu (offset %llu, "
                        "count %llu, %llu x %llu) overlaps, is empty or has a wrong shape", j,
                        (unsigned long long)offsets[j], (unsigned long long)counts[j],
                        (unsigned long long)rows[j], (unsigned long long)cols[j]);
            return TERSE_ERR_INVALID;
        }
        nl += (offsets[j] > at) ? 2 : 1;
        at  = offsets[j] + counts[j];
    }
    lay = calloc(1, sizeof(*lay));
    if (lay != NULL) {
        lay->count = calloc(nl, sizeof(size_t));
        lay->rows  = calloc(nl, sizeof(size_t));
        lay->cols  = calloc(nl, sizeof(size_t));
        lay->name  = calloc(nl, sizeof(*lay->name));
    }
    if ((lay == NULL) || (lay->count == NULL) || (lay->rows == NULL) || (lay->cols == NULL) ||
        (lay->name == NULL)) {
        if (lay != NULL) {
            free(lay->count);
            free(lay->rows);
            free(lay->cols);
            free(lay->name);
            free(lay);
        }
        return TERSE_ERR_NOMEM;
    }
    at = 0;
    for (j = 0; j < n; ++j) {
        if (offsets[j] > at) {
            lay->count[k] = offsets[j] - at; /* a gap: flat */
            snprintf(lay->name[k], TERSE_NAME_MAX, "gap%zu", j);
            ++k;
        }
        lay->count[k] = counts[j];
        lay->rows[k]  = rows[j];
        lay->cols[k]  = cols[j];
        snprintf(lay->name[k], TERSE_NAME_MAX, "param%zu", j);
        ++k;
        at = offsets[j] + counts[j];
    }
    lay->buf   = buf;
    lay->n     = nl;
    lay->total = at;
    pthread_mutex_lock(&shim_layout_lock);
    for (pp = &shim_layouts; *pp != NULL; pp = &(*pp)->next) {
        if ((*pp)->buf == buf) {
            /* replaced: the old record stays allocated (a place may still point at it) but
             * no longer matches */
            lay->gen      = (*pp)->gen + 1;
            (*pp)->buf    = NULL;
            (*pp)->total  = 0;
            break;
        }
    }
    lay->next    = shim_layouts;
    shim_layouts = lay;
    pthread_mutex_unlock(&shim_layout_lock);
    terse_info(TERSE_LOG_SHIM, "layout of %zu layers (%zu elements) registered for buffer %p",
               nl, at, buf);
    return TERSE_OK;
}

/*
 * Counters of this process, for a training script's report (ctypes):
 *   out[0] ncclAllReduce calls seen    out[1] calls terse compressed
 *   out[2] bytes terse handed to NCCL (compressed calls, agreement and statistics included)
 *   out[3] plain-equivalent bytes of those compressed calls, 2(p-1)/p x size
 *   out[4] plain-equivalent bytes of the calls passed through (what NCCL's ring sends)
 * So bytes sent = out[2] + out[4], and plain NCCL would have sent out[3] + out[4].
 * Returns the number of values written (5), or TERSE_ERR_INVALID for NULL / n < 5.
 */
TERSE_API int terse_nccl_counters_get(uint64_t *out, size_t n);

TERSE_API int
terse_nccl_counters_get(uint64_t *out, size_t n)
{
    shim_comm_t *sc;
    terse_stats_t st;

    if ((out == NULL) || (n < 5)) {
        return TERSE_ERR_INVALID;
    }
    out[0] = __atomic_load_n(&shim_ncalls, __ATOMIC_RELAXED);
    out[1] = __atomic_load_n(&shim_ncompressed, __ATOMIC_RELAXED);
    out[2] = __atomic_load_n(&shim_dead_sent, __ATOMIC_RELAXED);
    out[3] = __atomic_load_n(&shim_dead_plain, __ATOMIC_RELAXED);
    out[4] = __atomic_load_n(&shim_pass_bytes, __ATOMIC_RELAXED);
    pthread_mutex_lock(&shim_lock);
    for (sc = shim_list; sc != NULL; sc = sc->next) {
        pthread_mutex_lock(&sc->lock);
        memset(&st, 0, sizeof(st));
        st.size = sizeof(st);
        if ((sc->ctx != NULL) && (terse_stats_get(sc->ctx, &st) == TERSE_OK)) {
            out[2] += st.bytes_sent;
            out[3] += st.bytes_plain;
        }
        pthread_mutex_unlock(&sc->lock);
    }
    pthread_mutex_unlock(&shim_lock);
    return 5;
}

/* ---------------------------------------------------------------- exit */
static int
shim_find_nccl(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    if ((info->dlpi_name != NULL) && (strstr(info->dlpi_name, "libnccl") != NULL)) {
        *(int *)data = 1;
        return 1;
    }
    return 0;
}

/* 1 in a launcher (torchrun passes LD_PRELOAD to its workers and has it itself: it imports
 * torch, so libnccl is mapped, but it never communicates). */
static int
shim_is_launcher(void)
{
    char buf[4096];
    size_t n = 0, i;
    FILE *f = fopen("/proc/self/cmdline", "r");

    if (f != NULL) {
        n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
    }
    for (i = 0; i < n; ++i) {
        if (buf[i] == '\0') {
            buf[i] = ' ';
        }
    }
    buf[n] = '\0';
    return (strstr(buf, "torchrun") != NULL) || (strstr(buf, "torch.distributed.run") != NULL) ||
           (strstr(buf, "torch.distributed.launch") != NULL);
}

/* No CUDA or NCCL work here: a report only. */
__attribute__((destructor)) static void
shim_fini(void)
{
    uint64_t calls = __atomic_load_n(&shim_ncalls, __ATOMIC_RELAXED);
    int loaded     = 0;

    if (calls > 0) {
        terse_info(TERSE_LOG_SHIM, "nccl shim: %llu ncclAllReduce calls, %llu compressed",
                   (unsigned long long)calls,
                   (unsigned long long)__atomic_load_n(&shim_ncompressed, __ATOMIC_RELAXED));
        return;
    }
    dl_iterate_phdr(shim_find_nccl, &loaded);
    if (loaded && !shim_is_launcher()) {
        terse_warn(TERSE_LOG_SHIM, "libnccl was loaded but no ncclAllReduce reached terse's "
                   "shim (NCCL linked statically, or called through a symbol terse does not "
                   "define): nothing was compressed");
    }
}

/* The NCCL shim has no MPI (a torch-only job must not pull in libmpi: DESIGN.md section 3),
 * but the library root names the MPI transport in its table when the build has MPI. This
 * stand-in is never usable, so the NCCL transport is the only one a shim context can get. */
#if TERSE_HAVE_MPI
static terse_status_t
shim_no_mpi_query(void *comm, int *usable_p)
{
    (void)comm;
    *usable_p = 0;
    return TERSE_OK;
}

const terse_transport_ops_t terse_transport_mpi_ops = {
    .size     = sizeof(terse_transport_ops_t),
    .name     = "mpi (not in libterse-nccl.so)",
    .priority = -1,
    .kind     = TERSE_TRANSPORT_MPI,
    .query    = shim_no_mpi_query,
};
#endif
