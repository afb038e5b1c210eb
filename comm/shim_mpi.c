/*
 * libterse-mpi.so: `mpirun -x LD_PRELOAD=libterse-mpi.so ./app` compresses the application's
 * gradient allreduces without a code change (DESIGN.md sections 1, 3 and 8, rule 8).
 *
 * MPI_Allreduce is defined here over PMPI_Allreduce. A call is compressed only when all of
 * these hold, every one of them the same on every rank:
 *   - op MPI_SUM on an intracommunicator, datatype MPI_FLOAT (16-bit floats where the MPI
 *     has them; MPI_DOUBLE with TERSE_COMPRESS_DOUBLE=1), host memory;
 *   - every rank's TERSE_* configuration is valid and equal (checked by a 24-byte allreduce
 *     at the first such call on each communicator);
 *   - count * size >= TERSE_MIN_BYTES and the plan compresses at all;
 *   - the call's place in the communicator's per-step call cycle (the sequence of
 *     (count, datatype) of such calls: comm/callcycle.h, shared with the NCCL shim) has
 *     recurred TERSE_MPI_CYCLE_RECUR times;
 *   - the layout of that place was agreed by every rank (comm/terse.c: plan, sizes, memory).
 * Everything else goes to PMPI_Allreduce untouched, so it is bit-identical to a run without
 * the shim (MPI_IN_PLACE included). Device pointers pass through: the CUDA runtime is asked
 * only if the process already loaded it (dlsym of cudaPointerGetAttributes), never linked.
 *
 * Nothing happens in a constructor: the first call initialises. terse's own traffic runs on a
 * communicator duplicated once per user communicator (inside the terse context), freed when
 * the user frees its communicator or, at MPI_Finalize, from a delete-attribute callback on
 * MPI_COMM_SELF. A mutex per communicator (and one for the registry) keeps threads apart.
 *
 * TERSE_STATE_DIR: each context is saved (terse_state_save: residuals, plans, PowerSGD Q,
 * steps) to DIR/terse-state.RANK.bin (the N-th context after the first: .cN.bin) at
 * MPI_Finalize and every TERSE_STATE_EVERY call cycles, and loaded when it is created if any
 * rank has its file; a file refused on any rank leaves every rank starting fresh.
 */

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpi.h>

#include "callcycle.h"
#include "terse_internal.h"

typedef enum shim_state {
    SHIM_NEW = 0,     /* configuration not agreed yet */
    SHIM_ON,          /* compress what qualifies */
    SHIM_OFF,         /* pass everything through (disagreement, TERSE_SHIM=0) */
    SHIM_BADCFG       /* some rank has an invalid TERSE_* value: candidate calls fail */
} shim_state_t;

typedef struct shim_comm {
    struct shim_comm *next;     /* registry list */
    pthread_mutex_t   lock;
    MPI_Comm          comm;     /* the user's communicator (not owned) */
    shim_state_t      state;
    terse_ctx_t      *ctx;      /* created when a cycle locks; owns the duplicate */
    int               ctx_failed;
    terse_cycle_t     cycle;    /* the per-step call cycle (callcycle.h) */
    int               dead;     /* the context was destroyed at MPI_Finalize */
    unsigned          index;    /* activation order of the context (TERSE_STATE_DIR file) */
    uint64_t          cycles;   /* call cycles completed with the context */
} shim_comm_t;

static pthread_mutex_t shim_lock = PTHREAD_MUTEX_INITIALIZER;
static shim_comm_t    *shim_list;
static int             shim_keyval      = MPI_KEYVAL_INVALID;
static int             shim_self_keyval = MPI_KEYVAL_INVALID;
static int             shim_finalizing;
static int             shim_thread_level = -1;
static unsigned        shim_nctx;       /* contexts activated so far */

typedef int (*shim_cuda_attr_fn_t)(void *attr, const void *ptr);
static shim_cuda_attr_fn_t shim_cuda_attr;
static int                 shim_cuda_looked;

/* ---------------------------------------------------------------- helpers */
/* 1 if ptr is device memory according to an already-loaded CUDA runtime. */
static int
shim_is_device_ptr(const void *ptr)
{
    struct {
        int   type;   /* cudaMemoryType: 0 unregistered, 1 host, 2 device, 3 managed */
        int   device;
        void *dptr;
        void *hptr;
        char  reserved[64];
    } attr;

    if ((ptr == NULL) || (ptr == MPI_IN_PLACE)) {
        return 0;
    }
    if (!__atomic_load_n(&shim_cuda_looked, __ATOMIC_ACQUIRE)) {
        shim_cuda_attr = (shim_cuda_attr_fn_t)dlsym(RTLD_DEFAULT, "cudaPointerGetAttributes");
        __atomic_store_n(&shim_cuda_looked, 1, __ATOMIC_RELEASE);
    }
    if (shim_cuda_attr == NULL) {
        return 0;
    }
    memset(&attr, 0, sizeof(attr));
    if (shim_cuda_attr(&attr, ptr) != 0) {
        return 0; /* an error here means "not CUDA memory" on old runtimes */
    }
    return (attr.type == 2) || (attr.type == 3);
}

static int
shim_dtype(MPI_Datatype dt, terse_dtype_t *dtype_p)
{
    if (dt == MPI_FLOAT) {
        *dtype_p = TERSE_FLOAT32;
        return 1;
    }
    if (dt == MPI_DOUBLE) {
        *dtype_p = TERSE_FLOAT64;
        return 1;
    }
#if defined(MPIX_C_FLOAT16)
    if (dt == MPIX_C_FLOAT16) {
        *dtype_p = TERSE_FLOAT16;
        return 1;
    }
#endif
    return 0;
}

/* ---------------------------------------------------------------- TERSE_STATE_DIR */
/* The state file pattern of sc's context: DIR/terse-state.%r.bin for the first context
 * activated, DIR/terse-state.%r.cN.bin for the N-th after it (the same order on every run of
 * the same program). */
static void
shim_state_pattern(const shim_comm_t *sc, char *buf, size_t len)
{
    const char *dir = terse__config()->STATE_DIR;

    if (sc->index == 0) {
        snprintf(buf, len, "%s/terse-state.%%r.bin", dir);
    } else {
        snprintf(buf, len, "%s/terse-state.%%r.c%u.bin", dir, sc->index);
    }
}

/* Saves sc's context (local, no communication). why: "finalize" or "step". */
static void
shim_state_save(shim_comm_t *sc, const char *why)
{
    char pattern[1200];
    terse_status_t st;

    if ((sc->ctx == NULL) || (terse__config()->STATE_DIR[0] == '\0')) {
        return;
    }
    shim_state_pattern(sc, pattern, sizeof(pattern));
    st = terse_state_save(sc->ctx, pattern);
    if (st != TERSE_OK) {
        terse_warn_once(TERSE_LOG_SHIM, "cannot save the state to %s (%s)", pattern,
                        terse_status_str(st));
    } else {
        terse_info(TERSE_LOG_SHIM, "state saved to %s (%s, %llu call cycles)", pattern, why,
                   (unsigned long long)sc->cycles);
    }
}

/* Loads sc's state at activation if any rank has its file. Collective over the user's
 * communicator and the context's: every rank calls it at the same call (the cycle locks at
 * the same call everywhere). A refused file leaves every rank starting fresh. */
static void
shim_state_load(shim_comm_t *sc)
{
    char pattern[1200], file[1300];
    terse_status_t st;
    int rank = 0, v[2];

    if (terse__config()->STATE_DIR[0] == '\0') {
        return;
    }
    shim_state_pattern(sc, pattern, sizeof(pattern));
    PMPI_Comm_rank(sc->comm, &rank);
    v[0] = (terse__path_expand(pattern, rank, file, sizeof(file)) == TERSE_OK) &&
           (access(file, R_OK) == 0);
    v[1] = !v[0];
    if (PMPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_INT, MPI_MAX, sc->comm) != MPI_SUCCESS) {
        terse_warn(TERSE_LOG_SHIM, "the state file agreement failed: starting fresh");
        return;
    }
    if (v[0] == 0) {
        terse_info(TERSE_LOG_SHIM, "no state file %s: starting fresh", file);
        return;
    }
    st = terse_state_load(sc->ctx, pattern);
    if (st == TERSE_OK) {
        terse_info(TERSE_LOG_SHIM, "state loaded from %s", file);
    } else {
        terse_warn(TERSE_LOG_SHIM, "state file %s refused (%s): every rank starts fresh", file,
                   terse_status_str(st));
    }
}

static void
shim_comm_free_ctx(shim_comm_t *sc)
{
    if (sc->ctx != NULL) {
        terse_ctx_destroy(sc->ctx);
        sc->ctx = NULL;
    }
}

/* Called by MPI when the user frees a communicator we track (or at finalize for the
 * predefined ones, if the library does so). */
static int
shim_comm_delete_fn(MPI_Comm comm, int keyval, void *attr, void *extra)
{
    shim_comm_t *sc = attr, **pp;

    (void)comm;
    (void)keyval;
    (void)extra;
    pthread_mutex_lock(&shim_lock);
    for (pp = &shim_list; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == sc) {
            *pp = sc->next;
            break;
        }
    }
    pthread_mutex_unlock(&shim_lock);
    if (!sc->dead) {
        shim_comm_free_ctx(sc);
    }
    pthread_mutex_destroy(&sc->lock);
    terse__cycle_free(&sc->cycle);
    free(sc);
    return MPI_SUCCESS;
}

/* MPI_Finalize deletes MPI_COMM_SELF's attributes first: free every duplicate while MPI can
 * still do so. The records stay until their own communicators are deleted. */
static int
shim_self_delete_fn(MPI_Comm comm, int keyval, void *attr, void *extra)
{
    shim_comm_t *sc;

    (void)comm;
    (void)keyval;
    (void)attr;
    (void)extra;
    pthread_mutex_lock(&shim_lock);
    shim_finalizing = 1;
    for (sc = shim_list; sc != NULL; sc = sc->next) {
        shim_state_save(sc, "finalize");
        shim_comm_free_ctx(sc);
        sc->dead = 1;
    }
    pthread_mutex_unlock(&shim_lock);
    return MPI_SUCCESS;
}

/* The record of comm, created at first use. NULL when the shim cannot track it. */
static shim_comm_t *
shim_comm_get(MPI_Comm comm)
{
    shim_comm_t *sc = NULL;
    void *attr;
    int found = 0;

    pthread_mutex_lock(&shim_lock);
    if (shim_finalizing) {
        goto out;
    }
    if (shim_keyval == MPI_KEYVAL_INVALID) {
        if ((PMPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, shim_comm_delete_fn, &shim_keyval,
                                     NULL) != MPI_SUCCESS) ||
            (PMPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, shim_self_delete_fn,
                                     &shim_self_keyval, NULL) != MPI_SUCCESS) ||
            (PMPI_Comm_set_attr(MPI_COMM_SELF, shim_self_keyval, NULL) != MPI_SUCCESS)) {
            shim_keyval = MPI_KEYVAL_INVALID;
            goto out;
        }
        PMPI_Query_thread(&shim_thread_level);
        terse_init(); /* the log level; a bad value is reported at the agreement */
        terse_info(TERSE_LOG_SHIM, "mpi shim active, application thread level %d",
                   shim_thread_level);
    }
    if ((PMPI_Comm_get_attr(comm, shim_keyval, &attr, &found) == MPI_SUCCESS) && found) {
        sc = attr;
        goto out;
    }
    sc = calloc(1, sizeof(*sc));
    if (sc == NULL) {
        goto out;
    }
    pthread_mutex_init(&sc->lock, NULL);
    terse__cycle_init(&sc->cycle, 1); /* the configured recurrence once agreed */
    sc->comm = comm;
    if (PMPI_Comm_set_attr(comm, shim_keyval, sc) != MPI_SUCCESS) {
        pthread_mutex_destroy(&sc->lock);
        free(sc);
        sc = NULL;
        goto out;
    }
    sc->next  = shim_list;
    shim_list = sc;
out:
    pthread_mutex_unlock(&shim_lock);
    return sc;
}

/* Rule 1 for the configuration: every rank's TERSE_* values valid and equal. Collective over
 * the user's communicator (a predefined-op allreduce on it: it cannot match any p2p). */
static void
shim_agree_config(shim_comm_t *sc)
{
    static const shim_state_t of[] = {SHIM_ON, SHIM_OFF, SHIM_BADCFG};
    terse_shim_agree_t ag;

    terse__shim_agree_begin(&ag);
    if (PMPI_Allreduce(MPI_IN_PLACE, ag.v, 3, MPI_UINT64_T, MPI_MAX, sc->comm) != MPI_SUCCESS) {
        terse_warn(TERSE_LOG_SHIM, "the configuration agreement failed: passing through");
        sc->state = SHIM_OFF;
        return;
    }
    sc->state = of[terse__shim_agree_end(&ag, "MPI_Allreduce", "MPI_ERR_ARG")];
    if (sc->state == SHIM_ON) {
        terse__cycle_init(&sc->cycle, (size_t)terse__config()->MPI_CYCLE_RECUR);
    }
}

static int
shim_fail(MPI_Comm comm, int code)
{
    PMPI_Comm_call_errhandler(comm, code);
    return code;
}

/* ---------------------------------------------------------------- the interposed call */
TERSE_EXPORT int
MPI_Allreduce(const void *sendbuf, void *recvbuf, int count, MPI_Datatype datatype, MPI_Op op,
              MPI_Comm comm)
{
    const terse_config_t *cfg;
    terse_dtype_t dtype;
    terse_status_t st;
    shim_comm_t *sc;
    size_t place = 0, bytes;
    int inter = 0, size = 0, rc, finalized = 0;

    /* what never qualifies, whatever the configuration */
    if ((op != MPI_SUM) || (count <= 0) || !shim_dtype(datatype, &dtype) ||
        (comm == MPI_COMM_NULL) || (PMPI_Comm_test_inter(comm, &inter) != MPI_SUCCESS) ||
        inter || (PMPI_Finalized(&finalized) != MPI_SUCCESS) || finalized) {
        return PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
    }
    if (shim_is_device_ptr(recvbuf) || shim_is_device_ptr(sendbuf)) {
        terse_warn_once(TERSE_LOG_SHIM, "device buffers pass through uncompressed (the mpi "
                        "shim handles host memory; use libterse-nccl.so for GPU buffers)");
        return PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
    }
    sc = shim_comm_get(comm);
    if (sc == NULL) {
        terse_warn_once(TERSE_LOG_SHIM, "cannot track a communicator: passing through");
        return PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
    }
    pthread_mutex_lock(&sc->lock);
    if (sc->state == SHIM_NEW) {
        shim_agree_config(sc);
    }
    if (sc->state == SHIM_BADCFG) {
        pthread_mutex_unlock(&sc->lock);
        return shim_fail(comm, MPI_ERR_ARG);
    }
    cfg = terse__config();
    PMPI_Type_size(datatype, &size);
    bytes = (size_t)count * (size_t)size;
    if ((sc->state != SHIM_ON) || sc->ctx_failed ||
        ((dtype == TERSE_FLOAT64) && !cfg->COMPRESS_DOUBLE) || (bytes < cfg->MIN_BYTES)) {
        pthread_mutex_unlock(&sc->lock);
        return PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
    }

    /* the call cycle */
    switch (terse__cycle_feed(&sc->cycle, terse__cycle_key((size_t)count, dtype, TERSE_OP_SUM),
                              &place)) {
    case TERSE_CYCLE_BROKEN:
        if (sc->ctx != NULL) {
            terse__ctx_set_uniform(sc->ctx, cfg->COMPRESSOR); /* drops the old places */
        }
        /* fall through */
    case TERSE_CYCLE_LEARNING:
        pthread_mutex_unlock(&sc->lock);
        return PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
    default:
        break;
    }

    if (sc->ctx == NULL) {
        terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
        params.transport = TERSE_TRANSPORT_MPI;
        params.comm      = &sc->comm;
        params.name      = "mpi-shim";
        st = terse_ctx_create(&params, &sc->ctx);
        if (st != TERSE_OK) {
            terse_warn(TERSE_LOG_SHIM, "cannot create a terse context (%s): passing through",
                       terse_status_str(st));
            sc->ctx_failed = 1;
            sc->ctx        = NULL;
            pthread_mutex_unlock(&sc->lock);
            return PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
        }
        if (terse__ctx_plan_is_native(sc->ctx)) {
            /* TERSE_COMPRESSOR none: nothing to do, and plain MPI is bit-identical */
            sc->ctx_failed = 1;
            pthread_mutex_unlock(&sc->lock);
            return PMPI_Allreduce(sendbuf, recvbuf, count, datatype, op, comm);
        }
        pthread_mutex_lock(&shim_lock);
        sc->index = shim_nctx++;
        pthread_mutex_unlock(&shim_lock);
        shim_state_load(sc);
    }
    st = terse__allreduce_keyed(sc->ctx, TERSE_KEY_SHIM | place,
                                (sendbuf == MPI_IN_PLACE) ? recvbuf : sendbuf, recvbuf,
                                (size_t)count, dtype, TERSE_OP_SUM);
    if ((st == TERSE_OK) && (place + 1 == sc->cycle.period)) {
        sc->cycles++;
        if ((cfg->STATE_EVERY > 0) && ((sc->cycles % (uint64_t)cfg->STATE_EVERY) == 0)) {
            shim_state_save(sc, "every");
        }
    }
    pthread_mutex_unlock(&sc->lock);
    if (st == TERSE_ERR_MISMATCH) {
        /* the exact result was delivered; the reason was logged by the agreement */
        terse_warn_once(TERSE_LOG_SHIM, "ranks did not agree on compressing an allreduce of "
                        "%d elements: passing it through", count);
        return MPI_SUCCESS;
    }
    if (st != TERSE_OK) {
        terse_error(TERSE_LOG_SHIM, "compressed allreduce of %d elements failed: %s", count,
                    terse_status_str(st));
        rc = (st == TERSE_ERR_NOMEM) ? MPI_ERR_NO_MEM : MPI_ERR_INTERN;
        return shim_fail(comm, rc);
    }
    return MPI_SUCCESS;
}
