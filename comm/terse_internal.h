/*
 * Internals of the library root (comm/): the context, its "slots" (one per layout a
 * terse_allreduce can see: the registered layers, an unregistered count, a shim call-cycle
 * position), and the wire algorithms' entry points. Not installed.
 *
 * A slot holds everything one layout needs across steps, allocated once from the plan
 * (DESIGN.md section 8, rule 9): the compressor instance of each layer, the sender residuals,
 * the chunk owner's requantisation residuals, and each algorithm's message buffers.
 */
#ifndef TERSE_INTERNAL_H
#define TERSE_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "compressor.h"
#include "terse_base.h"
#include "terse_sched.h"
#include "transport.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Wire classes (DESIGN.md section 1), in the order a call runs them. */
typedef enum terse_class {
    TERSE_CLASS_NATIVE = 0,
    TERSE_CLASS_SUMMABLE,
    TERSE_CLASS_REQUANT,
    TERSE_CLASS_SPARSE,
    TERSE_CLASS_COUNT
} terse_class_t;

/* Message tags (0..1023), one per algorithm step. */
enum {
    TERSE_TAG_SUM_RS = 10,
    TERSE_TAG_SUM_AG = 11,
    TERSE_TAG_RQ_RS  = 20,
    TERSE_TAG_RQ_AG  = 21
};

typedef struct terse_layer_state {
    size_t                 offset;  /* first element in the caller's buffer */
    size_t                 count;
    size_t                 rows, cols;
    const terse_cmp_ops_t *ops;     /* the family this layer runs with (after fall-backs) */
    double                 param;
    terse_class_t          cls;
    void                  *cmp;     /* compressor instance, owned; NULL for native */
    /* requant: chunk j of this layer is [j * chunk, min((j + 1) * chunk, count)) */
    size_t                 chunk;
    size_t                 msg_off; /* offset of this layer inside each fused message (bytes) */
} terse_layer_state_t;

typedef struct terse_slot {
    struct terse_slot   *next;
    uint64_t             key;       /* count-key, or shim call-cycle position */
    terse_dtype_t        dtype;     /* element type the instances were created for */
    size_t               count;     /* total elements */
    size_t               nlayers;
    terse_layer_state_t *layers;    /* owned */
    terse_fb_t           fb;        /* sender residuals, one per layer */
    terse_fb_t           rq_fb;     /* owner residuals, one per (layer, owned chunk) */
    uint32_t             step;      /* compressed calls of this slot so far */
    int                  alloc_ok;  /* 0: something failed to allocate (agreed fall-back) */
    int                  agreed;    /* 0 not yet, 1 agreed, -1 ranks disagree: pass through */
    int                  nclass[TERSE_CLASS_COUNT];
    void                *ws[TERSE_CLASS_COUNT]; /* per-algorithm buffers, owned by the algo */
    size_t               mem_bytes; /* everything above, for terse_stats_t.mem_bytes */
    const struct terse_dev_path *dev; /* device slot (NCCL context): its algorithms own ws[] */
    /* The layout and the plan the slot was built from (owned; kept for rebuilds). */
    terse_cmp_spec_t    *specs;     /* per layer */
    char               (*names)[TERSE_NAME_MAX]; /* per layer */
    /* The scheduler (TERSE_COMPRESSOR=auto, comm/terse.c "scheduler"): every rank takes the
     * statistics on the same step, solves the same plan and switches on the same step. */
    int                  sched;       /* 1: this slot is planned by the scheduler */
    uint32_t             next_plan;   /* step whose input gives the next statistics */
    uint32_t             switch_step; /* step at which `pending` takes effect */
    terse_cmp_spec_t    *pending;     /* owned; NULL when no switch is due */
    terse_plan_t         plan;        /* the solved plan in force (nlayers 0: none yet) */
    terse_plan_t         pending_plan;
    uint64_t             plan_sum;    /* checksum of `plan` (0: none yet) */
    double               last_plan_s; /* seconds the last re-plan took on this rank */
    int                  nranks;      /* ranks of the transport the slot was built for */
    struct terse_hier_slot *hier;     /* owned: the hierarchical allreduce (algo_hier.c), or
                                         NULL: the flat algorithms over the context's transport */
    /* TERSE_ERROR_MEASURE=adam: per layer, sums of squared gradients (row, column, total) over
     * the steps of the window before the next plan (comm/terse.c, sched_win_*). Owned; NULL
     * until the first window step. Saved with the state, so a restart plans the same. */
    double              *win;
    size_t               win_len;    /* doubles in win */
    uint32_t             win_steps;  /* steps summed in win since the last plan */
    /* TERSE_STATS_ASYNC: a re-plan whose statistics run on a helper thread (owned; NULL: none
     * pending); its collective half runs at join_step on every rank. */
    struct terse_sched_job *job;
    uint32_t             join_step;
} terse_slot_t;

typedef struct terse_sched_job terse_sched_job_t;

/* At a plan switch: a layer that keeps a PowerSGD family (same ops), with rank r in o and r'
 * in n, takes the first min(r, r') columns of o's Q into n (whose other columns stay as
 * seeded); nothing otherwise (other families, device instances, powersgd1 holding a P).
 * Both borrowed. comm/terse.c. */
void terse__layer_carry_state(const terse_layer_state_t *o, terse_layer_state_t *n);

/* What one call hands to the algorithms. */
typedef struct terse_call {
    terse_transport_t *tp;
    const void        *send;        /* caller's input (never written) */
    void              *recv;        /* caller's output; may equal send */
    terse_dtype_t      dtype;
    float              scale;       /* 1, or 1/p for AVG */
    uint64_t           seed;
    uint32_t           step;
    int                error_feedback;
    double             sq_err;      /* out: squared error of this rank's compressed input */
    uint64_t           nonfinite;   /* out: layers written as NaN */
    terse_stream_t     stream;      /* device calls: the caller's stream (everything goes there) */
} terse_call_t;

/* ---------------------------------------------------------------- algorithms */
/* Each algorithm: setup sizes and allocates slot->ws[class] for the layers of its class
 * (TERSE_ERR_NOMEM leaves the slot usable for pass-through only), run moves and reduces every
 * layer of its class in one fused message per step, cleanup frees ws. */
terse_status_t terse__algo_native_setup(terse_slot_t *slot, terse_transport_t *tp);
terse_status_t terse__algo_native_run(terse_slot_t *slot, terse_call_t *call);
void           terse__algo_native_cleanup(terse_slot_t *slot);

terse_status_t terse__algo_summable_setup(terse_slot_t *slot, terse_transport_t *tp);
terse_status_t terse__algo_summable_run(terse_slot_t *slot, terse_call_t *call);
void           terse__algo_summable_cleanup(terse_slot_t *slot);

terse_status_t terse__algo_requant_setup(terse_slot_t *slot, terse_transport_t *tp);
terse_status_t terse__algo_requant_run(terse_slot_t *slot, terse_call_t *call);
void           terse__algo_requant_cleanup(terse_slot_t *slot);

terse_status_t terse__algo_sparse_setup(terse_slot_t *slot, terse_transport_t *tp);
terse_status_t terse__algo_sparse_run(terse_slot_t *slot, terse_call_t *call);
void           terse__algo_sparse_cleanup(terse_slot_t *slot);

/* ---------------------------------------------------------------- device path */
/* The NCCL context's device path (comm/algo_device.c, comm/transport_nccl.c), built only with
 * CUDA and NCCL headers. It lives outside the objects the MPI shim links (no CUDA there), so
 * the library root reaches it through the weak table terse__nccl_path (NULL when absent).
 * Every function enqueues on the call's stream and returns without waiting, except where
 * noted. */
typedef struct terse_dev_path {
    const terse_transport_ops_t *tp_ops;  /* the NCCL transport */
    /* Allocates slot->ws for every class (device buffers, once per slot). Synchronous. */
    terse_status_t (*setup)(terse_ctx_t *ctx, terse_slot_t *slot);
    void           (*cleanup)(terse_slot_t *slot);
    /* Runs every class of the slot in the fixed order of the host path. */
    terse_status_t (*run)(terse_ctx_t *ctx, terse_slot_t *slot, terse_call_t *call);
    /* The exact result: ncclAllReduce of the caller's buffer (AVG when scale != 1). */
    terse_status_t (*passthrough)(terse_ctx_t *ctx, const void *send, void *recv, size_t count,
                                  terse_dtype_t dtype, float scale, terse_stream_t stream);
    /* Copies `bytes` of device memory at src to a host staging buffer owned by the transport
     * (valid until the next call) and waits: re-plan steps only. */
    terse_status_t (*stage)(terse_ctx_t *ctx, const void *src, size_t bytes,
                            terse_stream_t stream, const void **host_p);
} terse_dev_path_t;

extern const terse_dev_path_t terse__nccl_path __attribute__((weak));

/* The deterministic sum every summing path uses (algo_native.c): a direct reduce-scatter
 * (rank r owns chunk r; peers' chunks are added in fixed rank order in fp32, fp64 for
 * doubles) and an allgather, so the result is bitwise identical on every rank whatever the
 * transport does. recv may equal send. ws: terse__algo_sum_ws_size() bytes. */
size_t         terse__algo_sum_ws_size(int nranks, size_t count, terse_dtype_t dtype);
terse_status_t terse__algo_sum(terse_transport_t *tp, const void *send, void *recv,
                               size_t count, terse_dtype_t dtype, float scale, void *ws);

/* Writes NaN into elements [off, off + n) of buf (dtype). */
void terse__fill_nan(void *buf, terse_dtype_t dtype, size_t off, size_t n);
/* Element size of the supported dtypes (fp64 included). */
size_t terse__esize(terse_dtype_t dtype);

/* ---------------------------------------------------------------- context */
struct terse_ctx {
    terse_transport_t     *tp;        /* owned (finalize) */
    const struct terse_dev_path *dev; /* NCCL context: the device path (buffers in device
                                         memory); NULL for host transports */
    terse_stream_t         stream;    /* device path: the stream of the call in progress */
    const terse_config_t  *cfg;       /* the process configuration */
    int                    rank, nranks;
    uint64_t               seed;
    uint64_t               cfg_hash;  /* decision-relevant configuration (agreement) */
    char                   name[TERSE_NAME_MAX];
    /* registered layers */
    size_t                 nreg, reg_cap;
    char                 (*reg_name)[TERSE_NAME_MAX];
    size_t                *reg_count, *reg_rows, *reg_cols;
    size_t                 reg_total;
    int                    frozen;    /* layout frozen by the first allreduce */
    terse_cmp_spec_t       uniform;   /* the plan for unregistered layouts */
    terse_cmp_spec_t      *plan;      /* one entry per registered layer */
    terse_slot_t          *slots;     /* slot list; the registered one has key TERSE_KEY_REG */
    void                  *scratch;   /* fp64 / conversion scratch, grown on demand */
    size_t                 scratch_bytes;
    terse_stats_t          stats;
    /* scheduler (auto mode); tests may change the sched_* values before the first allreduce */
    int                    auto_reg;     /* registered layers are planned by the scheduler */
    int                    auto_unreg;   /* unregistered layouts too */
    long                   sched_warmup; /* TERSE_WARMUP_STEPS */
    long                   sched_replan; /* TERSE_REPLAN_STEPS */
    double                 sched_alpha;  /* TERSE_ERROR_BUDGET */
    double                 sched_fraction; /* TERSE_ERROR_FRACTION (> 0: used instead) */
    int                    sched_objective; /* terse_sched_objective_t */
    size_t                 sched_segment;   /* TERSE_SEGMENT_BYTES */
    uint32_t               sched_lag;       /* TERSE_STATS_ASYNC/LAG: steps from a plan step
                                               to its collective half; 0 synchronous */
    terse_cmp_spec_t       reference;    /* TERSE_REFERENCE */
    terse_sched_grid_t     grid;
    terse_sched_grid_t     ref_grid;     /* the reference option alone (the budget) */
    terse_sched_cost_t     cost;         /* valid when cost_ready */
    int                    cost_ready;
    terse_plan_t           pinned;       /* TERSE_PLAN rows (nlayers 0: none) */
    void                  *stats_file;   /* FILE * of TERSE_STATS, or NULL */
    /* TERSE_LAYOUT: the layer map of unregistered buffers of lay_total elements */
    size_t                 lay_n, lay_total;
    size_t                *lay_count, *lay_rows, *lay_cols;
    char                 (*lay_name)[TERSE_NAME_MAX];
    struct terse_hier_ctx *hier;       /* owned; NULL: no hierarchy (algo_hier.c) */
    float                 *win_tmp;      /* owned scratch of the window steps (sched_win_step) */
    size_t                 win_cap;      /* floats in win_tmp */
};

#define TERSE_KEY_REG   (~0ull)
#define TERSE_KEY_SHIM  (1ull << 62)  /* or-ed into shim call-cycle positions */

/* The allreduce behind terse_allreduce and the shim: `key` names the slot (the shim passes
 * TERSE_KEY_SHIM | position; the API derives its own). Returns as terse_allreduce. */
terse_status_t terse__allreduce_keyed(terse_ctx_t *ctx, uint64_t key, const void *sendbuf,
                                      void *recvbuf, size_t count, terse_dtype_t dtype,
                                      terse_op_t op);
/* Replaces the uniform plan of unregistered layouts (tests, terse-bench's -C); the slots of
 * unregistered layouts are dropped and agreed on again. Local: every rank must call it alike.
 * Returns TERSE_OK or TERSE_ERR_INVALID (bad spec, logged). */
terse_status_t terse__ctx_set_uniform(terse_ctx_t *ctx, const char *spec);
/* Fixes the scheduler's cost model (tests, tools): no calibration is measured. `cost` is
 * copied. Local: every rank must call it alike. */
void terse__ctx_set_cost(terse_ctx_t *ctx, const terse_sched_cost_t *cost);
/* Pins the plan CSV at `pattern` (%h %p %r expanded) for the registered layers, as TERSE_PLAN
 * does: the rows bind at the first allreduce and the scheduler stops re-planning them.
 * Returns TERSE_OK, TERSE_ERR_INVALID (unreadable or malformed file: logged with the line),
 * TERSE_ERR_NOMEM. */
terse_status_t terse__ctx_pin_plan(terse_ctx_t *ctx, const char *pattern);
/* Reads a TERSE_LAYOUT file (lines "count rows cols [name]" in buffer order, '#' comments,
 * rows and cols 0 for a flat tensor): unregistered buffers of the file's total size are then
 * cut into these layers. Call before the first allreduce of that size; local, every rank alike.
 * Returns TERSE_OK, TERSE_ERR_INVALID (unreadable, malformed: logged with the line),
 * TERSE_ERR_NOMEM. */
terse_status_t terse__ctx_set_layout(terse_ctx_t *ctx, const char *pattern);
/* 1 when the uniform plan would send every layer natively (compression is off). */
int terse__ctx_plan_is_native(const terse_ctx_t *ctx);
/* ---------------------------------------------------------------- hierarchy (algo_hier.c) */
typedef struct terse_hier_ctx  terse_hier_ctx_t;
typedef struct terse_hier_slot terse_hier_slot_t;

/* TERSE_HIERARCHY values (the env table's index) */
enum { TERSE_HIER_AUTO = 0, TERSE_HIER_FLAT = 1, TERSE_HIER_ON = 2 };

/* Decides the context's hierarchy and builds it: the topology (topo_spec, or NULL for
 * TERSE_TOPOLOGY), then intra- and inter-node sub-transports (the transport's split). mode
 * TERSE_HIER_*; chunk_bytes: pipeline chunk of a rank's shard (0: one chunk). Replaces any
 * hierarchy the context had; call before the first allreduce (tests call it again after
 * terse_ctx_create to simulate nodes). Collective. Uneven nodes, one node, or nodes of one
 * rank leave ctx->hier NULL on every rank.
 * Returns TERSE_OK; TERSE_ERR_MISMATCH / TERSE_ERR_INVALID (TERSE_TOPOLOGY differs or is bad,
 * on every rank); transport errors. */
terse_status_t terse__hier_ctx_init(terse_ctx_t *ctx, const char *topo_spec, int mode,
                                    size_t chunk_bytes);
void           terse__hier_ctx_fini(terse_ctx_t *ctx);
/* 2 with a hierarchy (then *local_p ranks per node, *nodes_p nodes), else 1. */
int            terse__hier_ctx_levels(const terse_ctx_t *ctx, int *local_p, int *nodes_p);
/* The transport of a level: 0 intra-node, 1 inter-node (without a hierarchy: NULL, ctx->tp).
 * Borrowed. */
terse_transport_t *terse__hier_ctx_tp(const terse_ctx_t *ctx, int level);
/* The cost model's two levels (issue 9): (latency, bandwidth) inside a node (L ranks) and
 * between nodes (per node; TERSE_LINK_LATENCY / TERSE_LINK_BANDWIDTH when set), measured with
 * every group at once, MAX over ranks; compress throughputs times L (a node's ranks compress
 * their pieces in parallel). No-op without a hierarchy. Collective. */
terse_status_t terse__hier_calibrate(terse_ctx_t *ctx, terse_sched_cost_t *cost);
/* Builds slot->hier (pieces, inter-node sub-slots, buffers). TERSE_ERR_NOMEM leaves what was
 * built for terse__hier_cleanup. */
terse_status_t terse__hier_setup(terse_ctx_t *ctx, terse_slot_t *slot);
void           terse__hier_cleanup(terse_slot_t *slot);
/* Runs one call over the hierarchy (every layer, every class). Collective. */
terse_status_t terse__hier_run(terse_ctx_t *ctx, terse_slot_t *slot, terse_call_t *call);
/* A slot over transport tp (comm/terse.c's slot_build: the hierarchy's sub-slots over the
 * inter-node transport; never hierarchical itself). [out] slot_p owned by the caller. */
terse_status_t terse__slot_build_tp(terse_ctx_t *ctx, terse_transport_t *tp, uint64_t key,
                                    size_t nlayers, const size_t *counts, const size_t *rows,
                                    const size_t *cols, const terse_cmp_spec_t *specs,
                                    const char (*names)[TERSE_NAME_MAX], terse_dtype_t dtype,
                                    terse_slot_t **slot_p);
void           terse__slot_destroy(terse_slot_t *slot);

/* Hash of the decision-relevant TERSE_* values (every variable but TERSE_LOG_*) and the
 * library version: ranks compare it in their agreement allreduce. */
uint64_t terse__config_hash(const terse_config_t *cfg);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_INTERNAL_H */
