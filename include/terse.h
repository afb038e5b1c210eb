/*
 * terse: compressed gradient allreduce for data-parallel training.
 *
 * One header, installed as <terse.h>. It includes neither mpi.h nor nccl.h nor any CUDA
 * header: communicators and streams travel as opaque pointers.
 *
 * The life of a custom trainer:
 *
 *     terse_ctx_params_t p = TERSE_CTX_PARAMS_INIT;
 *     MPI_Comm comm = MPI_COMM_WORLD;
 *     p.transport = TERSE_TRANSPORT_MPI;
 *     p.comm      = &comm;                       // the address of an MPI_Comm
 *     terse_ctx_create(&p, &ctx);
 *     terse_layer_register(ctx, "fc1.weight", 784 * 512, 512, 784, &id);   // in buffer order
 *     ...
 *     for (step...) {
 *         backward(grads);
 *         terse_allreduce(ctx, grads, grads, n, TERSE_FLOAT32, TERSE_OP_AVG, TERSE_MEM_HOST, NULL);
 *         sgd(params, grads);
 *     }
 *     terse_ctx_destroy(ctx);
 *
 * Thread safety: a context may be used by one thread at a time. Different contexts may be
 * used concurrently. terse_init() and the query functions are thread-safe.
 *
 * ABI: every parameter struct starts with a `size` member (set by the *_INIT macros), so
 * fields can be appended without breaking binaries built against an older header.
 */
#ifndef TERSE_H
#define TERSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_VERSION_MAJOR 0
#define TERSE_VERSION_MINOR 1
#define TERSE_VERSION_PATCH 0
#define TERSE_VERSION_CODE                                                                     \
    ((TERSE_VERSION_MAJOR * 10000) + (TERSE_VERSION_MINOR * 100) + TERSE_VERSION_PATCH)

#if defined(__GNUC__)
#define TERSE_API __attribute__((visibility("default")))
#else
#define TERSE_API
#endif

/* ---------------------------------------------------------------------------------------
 * Status codes: one table. Negative values are errors, categorised by who is to blame
 * (the caller, the system, a library terse depends on, or terse itself).
 */
#define TERSE_STATUS_MAP(X)                                                                    \
    X(OK, 0, "success")                                                                        \
    X(INPROGRESS, 1, "operation still in progress")                                            \
    X(ERR_INVALID, -1, "invalid argument")                                                     \
    X(ERR_USAGE, -2, "invalid usage (call order, state)")                                      \
    X(ERR_NOMEM, -3, "out of host or device memory")                                           \
    X(ERR_UNSUPPORTED, -4, "not supported by this build or device")                            \
    X(ERR_CUDA, -5, "CUDA error")                                                              \
    X(ERR_NCCL, -6, "NCCL error")                                                              \
    X(ERR_MPI, -7, "MPI error")                                                                \
    X(ERR_SYSTEM, -8, "system call failed")                                                    \
    X(ERR_BUDGET, -9, "no plan meets the error budget")                                        \
    X(ERR_INTERNAL, -10, "internal error (a bug in terse)")                                    \
    X(ERR_PAYLOAD, -11, "malformed or corrupted payload")                                      \
    X(ERR_MISMATCH, -12, "ranks disagree (configuration, plan or layout)")

#define TERSE_STATUS_ENUM(_name, _val, _str) TERSE_##_name = (_val),
typedef enum terse_status { TERSE_STATUS_MAP(TERSE_STATUS_ENUM) } terse_status_t;
#undef TERSE_STATUS_ENUM

/* Returns a static, never NULL, description of `status` ("unknown status" if not in the map). */
TERSE_API const char *terse_status_str(terse_status_t status);
/* Returns the symbolic name of `status`, e.g. "ERR_INVALID". */
TERSE_API const char *terse_status_name(terse_status_t status);

/* ---------------------------------------------------------------------------------------
 * Version.
 */
/* Writes the library's version (which may differ from the header's). Any pointer may be NULL. */
TERSE_API void terse_version(int *major_p, int *minor_p, int *patch_p);
/* Returns "0.1.0 (git abcdef0)"; static storage. */
TERSE_API const char *terse_version_string(void);

/* ---------------------------------------------------------------------------------------
 * Basic types.
 */
typedef enum terse_dtype {
    TERSE_FLOAT32  = 0,
    TERSE_FLOAT16  = 1,
    TERSE_BFLOAT16 = 2,
    TERSE_FLOAT64  = 3, /* passed through uncompressed unless TERSE_COMPRESS_DOUBLE=1 */
    TERSE_DTYPE_LAST
} terse_dtype_t;

typedef enum terse_op {
    TERSE_OP_SUM = 0,
    TERSE_OP_AVG = 1, /* sum divided by the number of ranks */
    TERSE_OP_LAST
} terse_op_t;

typedef enum terse_mem {
    TERSE_MEM_HOST = 0,
    TERSE_MEM_CUDA = 1, /* device memory: requires a CUDA build and, for traffic, NCCL */
    TERSE_MEM_LAST
} terse_mem_t;

typedef enum terse_transport_kind {
    TERSE_TRANSPORT_AUTO = 0, /* MPI (host buffers); never NCCL: name it explicitly */
    TERSE_TRANSPORT_MPI  = 1, /* comm: pointer to an MPI_Comm (intracommunicator) */
    TERSE_TRANSPORT_NCCL = 2, /* comm: an ncclComm_t (the handle itself, not its address);
                                 device buffers only (see "Device buffers" below) */
    TERSE_TRANSPORT_LOOP = 3, /* comm: a terse loop group (ranks as threads; tests) */
    TERSE_TRANSPORT_LAST
} terse_transport_kind_t;

/* A CUDA stream (cudaStream_t) or NULL for the legacy default stream / host memory. */
typedef void *terse_stream_t;

/* Size in bytes of one element of `dtype`, 0 if invalid. */
TERSE_API size_t terse_dtype_size(terse_dtype_t dtype);

/* ---------------------------------------------------------------------------------------
 * Library initialisation.
 *
 * terse_init() reads every TERSE_* environment variable once (see `terse-info -e`). It is
 * called implicitly by terse_ctx_create(); calling it first lets a program report a bad
 * configuration before it builds its model. Idempotent and thread-safe.
 *
 * Returns TERSE_OK, or TERSE_ERR_INVALID naming the bad variable and its accepted values in
 * the log (the same status on every later call: the configuration is read once).
 */
TERSE_API terse_status_t terse_init(void);

/* ---------------------------------------------------------------------------------------
 * Contexts.
 */
typedef struct terse_ctx terse_ctx_t;

typedef struct terse_ctx_params {
    size_t                 size;      /* sizeof(terse_ctx_params_t); set by TERSE_CTX_PARAMS_INIT */
    terse_transport_kind_t transport;
    void                  *comm;      /* see terse_transport_kind_t; borrowed, must outlive ctx */
    uint64_t               seed;      /* base of every random stream; 0: TERSE_SEED */
    const char            *name;      /* label in logs and telemetry; may be NULL */
} terse_ctx_params_t;

#define TERSE_CTX_PARAMS_INIT {sizeof(terse_ctx_params_t), TERSE_TRANSPORT_AUTO, NULL, 0, NULL}

/* Creates a context over a communicator. Collective: every rank of the communicator calls it.
 * terse duplicates what it needs (e.g. MPI_Comm_dup); the caller keeps ownership of `comm`.
 *   [in]  params  transport and communicator; not retained
 *   [out] ctx_p   the new context, owned by the caller (terse_ctx_destroy)
 * Returns TERSE_OK; TERSE_ERR_INVALID (NULL or bad params, bad TERSE_* configuration);
 * TERSE_ERR_UNSUPPORTED (transport not in this build); TERSE_ERR_NOMEM; TERSE_ERR_MPI /
 * TERSE_ERR_NCCL (the transport failed to initialise). */
TERSE_API terse_status_t terse_ctx_create(const terse_ctx_params_t *params, terse_ctx_t **ctx_p);

/* Destroys a context and everything it allocated. Collective. NULL is accepted. */
TERSE_API void terse_ctx_destroy(terse_ctx_t *ctx);

/* Rank and size of the context's communicator. Either pointer may be NULL. */
TERSE_API terse_status_t terse_ctx_rank(const terse_ctx_t *ctx, int *rank_p, int *nranks_p);

/* ---------------------------------------------------------------------------------------
 * Layers. A gradient buffer passed to terse_allreduce holds the registered layers back to
 * back, in registration order. Registering is collective in effect: every rank must register
 * the same layers in the same order (checked at the first allreduce).
 *
 *   [in]  name   label for logs, plans and telemetry (copied); may be NULL ("layer<N>")
 *   [in]  count  elements; > 0
 *   [in]  rows, cols  matrix shape for low-rank compression, rows * cols == count; 0, 0 for a
 *                flat tensor (terse then chooses a reshape rule for PowerSGD, or skips it)
 *   [out] layer_p the layer's index (0, 1, ...); may be NULL
 * Returns TERSE_OK; TERSE_ERR_INVALID (count 0, shape mismatch); TERSE_ERR_USAGE (after the
 * first allreduce: the layout is frozen); TERSE_ERR_NOMEM.
 */
TERSE_API terse_status_t terse_layer_register(terse_ctx_t *ctx, const char *name, size_t count,
                                              size_t rows, size_t cols, int *layer_p);

/* ---------------------------------------------------------------------------------------
 * Allreduce.
 *
 * Reduces `count` elements of `sendbuf` over all ranks into `recvbuf` (may equal sendbuf).
 * When count equals the sum of the registered layers' counts, each layer is compressed with
 * its planned compressor and error feedback; any other count is treated as a single flat
 * layer of its own (keyed by count), so unregistered use still works.
 * The result is bitwise identical on every rank. Non-finite input on any rank makes the
 * affected layer non-finite on every rank.
 *
 *   [in]     sendbuf  count elements of dtype in mem
 *   [out]    recvbuf  result; for TERSE_MEM_CUDA, enqueued on `stream`
 *   [in]     stream   cudaStream_t for device buffers; ignored for host buffers
 *
 * Device buffers (TERSE_MEM_CUDA) need a context over TERSE_TRANSPORT_NCCL, and such a
 * context takes device buffers only. terse_ctx_create then splits a private communicator off
 * the caller's (ncclCommSplit, collective over its ranks, once), so terse's own operations
 * never interleave with the caller's on the caller's communicator; the caller's communicator
 * is never used for traffic. NCCL is not linked: terse uses the copy the process already
 * loaded (TERSE_NCCL_LIBRARY overrides). A call enqueues everything on `stream`, allocates
 * nothing after its layout's first call and does not wait for the device, except on the
 * rare steps that agree on a new layout or plan (a few words through the host) and the
 * scheduler's re-plan steps (one copy of the gradient to the host). Call it with the
 * communicator's device current (terse allocates a layout's buffers there). Non-finite input
 * reaches every rank's result as NaN in the affected layer (requantised families: the
 * affected chunk); terse_stats_t.last_rel_err is 0 on this path (the error stays on the
 * device). Doubles pass through uncompressed (ncclAllReduce).
 * Returns TERSE_OK; TERSE_ERR_INVALID (NULL buffer with count > 0, bad dtype/op/mem);
 * TERSE_ERR_UNSUPPORTED (device memory in a CPU-only build); TERSE_ERR_MISMATCH (ranks
 * disagree: the call fell back to an uncompressed allreduce and the result is still exact);
 * transport errors.
 */
TERSE_API terse_status_t terse_allreduce(terse_ctx_t *ctx, const void *sendbuf, void *recvbuf,
                                         size_t count, terse_dtype_t dtype, terse_op_t op,
                                         terse_mem_t mem, terse_stream_t stream);

/* ---------------------------------------------------------------------------------------
 * Plans: which compressor each layer uses.
 */
#define TERSE_NAME_MAX 64

typedef struct terse_plan_entry {
    int    layer;                        /* layer index */
    char   compressor[TERSE_NAME_MAX];   /* "none", "cast", "quant", "sign", "topk", ... */
    double param;                        /* bits, density, rank; 0 where unused */
} terse_plan_entry_t;

/* Copies the current plan (one entry per registered layer) into entries[0..max).
 *   [out] n_p  number of layers (may exceed max: then only max entries are written)
 * Returns TERSE_OK; TERSE_ERR_INVALID. */
TERSE_API terse_status_t terse_plan_get(const terse_ctx_t *ctx, terse_plan_entry_t *entries,
                                        size_t max, size_t *n_p);

/* Pins a plan. Collective: every rank passes the same plan (a checksum is compared at the
 * next allreduce; on mismatch every rank keeps its previous plan and the call returns
 * TERSE_ERR_MISMATCH there). Residuals are reset. The scheduler stops re-planning.
 * Returns TERSE_OK; TERSE_ERR_INVALID (unknown compressor, bad parameter, wrong layer). */
TERSE_API terse_status_t terse_plan_set(terse_ctx_t *ctx, const terse_plan_entry_t *entries,
                                        size_t n);

/* ---------------------------------------------------------------------------------------
 * Statistics (this rank; counters since context creation).
 */
typedef struct terse_stats {
    size_t   size;             /* sizeof(terse_stats_t); set by the caller */
    uint64_t steps;            /* terse_allreduce calls that compressed */
    uint64_t passthrough;      /* calls passed through uncompressed */
    uint64_t bytes_sent;       /* bytes handed to the transport (DESIGN.md section 9) */
    uint64_t bytes_plain;      /* what a plain ring allreduce would have sent: 2(p-1)/p x S */
    double   last_rel_err;     /* ||x^ - x|| / ||x|| of this rank's compressed input, last step */
    uint64_t mem_bytes;        /* host + device memory terse holds for this context */
    uint64_t nonfinite_steps;  /* steps on which some layer was non-finite on some rank */
    /* Hierarchical allreduce (TERSE_HIERARCHY): parts of bytes_sent */
    uint64_t bytes_intra;      /* inside the node, uncompressed */
    uint64_t bytes_inter;      /* between nodes, compressed */
} terse_stats_t;

TERSE_API terse_status_t terse_stats_get(const terse_ctx_t *ctx, terse_stats_t *stats);

/* ---------------------------------------------------------------------------------------
 * State: residuals, PowerSGD Q, the plan, random counters and the step, so that a restarted
 * run continues bitwise identically. Each rank saves its own file; `path` may contain %r
 * (rank) and %p (pid). Loading refuses a file from another world size, layer layout or
 * terse version with TERSE_ERR_MISMATCH.
 */
TERSE_API terse_status_t terse_state_save(const terse_ctx_t *ctx, const char *path);
TERSE_API terse_status_t terse_state_load(terse_ctx_t *ctx, const char *path);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_H */
