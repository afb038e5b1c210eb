/*
 * The scheduler's internal API (DESIGN.md section 5): pure C, deterministic, no CUDA, no MPI,
 * no I/O except the plan file functions of plan.c. Plain arrays in, a plan out.
 *
 * How the runtime (comm/terse.c) drives it, every re-plan:
 *
 *   1. terse__sched_grid_default(&grid, bucket)        once: the candidate options
 *   2. per layer: terse__sched_stats_layer(&grid, v, count, rows, cols, seed,
 *                                            stats + l * terse__sched_stats_stride(&grid))
 *      on the layer's fp32 gradient (host copy, accumulated over recent steps)
 *   3. one allreduce SUM of the flat `stats` array (nlayers x stride doubles) across ranks;
 *      measured compress times reduced with MAX (or terse__sched_cost_cmp_time's defaults)
 *   4. per layer and option: payload bytes from the compressor ops' payload_size (or
 *      terse__sched_payload_bytes), then terse__sched_layer_fill() builds the candidates
 *   5. terse__sched_budget_reference() (alpha x error of the uniform reference setting) or
 *      terse__sched_budget_fraction(), then terse__sched_solve() -> terse_plan_t
 *   6. terse__sched_plan_checksum() is compared across ranks (MIN/MAX allreduce); the switch
 *      happens at a fixed later step.
 *
 * Every rank feeding the same reduced doubles gets bitwise the same plan: the solver uses no
 * libm function on its decision path (only IEEE +, -, *, /, comparisons, in a fixed order),
 * converts errors to integers before the knapsack, and breaks ties by fixed rules (dp.c:
 * least error, then lowest cost, then lowest candidate index; among class sets the lowest).
 */
#ifndef TERSE_SCHED_H
#define TERSE_SCHED_H

#include <stddef.h>
#include <stdint.h>

#include "terse_base.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- families and wire classes */
/* The families the statistics know how to estimate. The order is part of the statistics
 * layout and of the plan checksum: append only. */
typedef enum terse_sched_fam {
    TERSE_SCHED_FAM_NONE     = 0,
    TERSE_SCHED_FAM_CAST     = 1, /* param 0: bf16, 1: fp16 (the registry's cast params) */
    TERSE_SCHED_FAM_QUANT    = 2, /* param: bits */
    TERSE_SCHED_FAM_SIGN     = 3, /* param 0 */
    TERSE_SCHED_FAM_TOPK     = 4, /* param: density in (0, 1] */
    TERSE_SCHED_FAM_RANDOMK  = 5, /* param: density in (0, 1] */
    TERSE_SCHED_FAM_POWERSGD = 6, /* param: rank */
    TERSE_SCHED_FAM_POWERSGD1 = 7, /* alternating PowerSGD (one factor per step): rank */
    TERSE_SCHED_FAM_TOPKT    = 8, /* threshold-sampled top-k (DGC): density */
    TERSE_SCHED_FAM_COUNT    = 9
} terse_sched_fam_t;

/* "none", "cast", ... as in compressor specs; NULL when out of range. */
const char *terse__sched_fam_name(int fam);
/* The family of a name; -1 when unknown. */
int terse__sched_fam_find(const char *name);

/* Wire classes (DESIGN.md section 1). Bit i of a class set is class i. */
typedef enum terse_sched_wire {
    TERSE_SCHED_WIRE_NATIVE   = 0, /* uncompressed allreduce */
    TERSE_SCHED_WIRE_SUMMABLE = 1, /* allreduce of the payload */
    TERSE_SCHED_WIRE_REQUANT  = 2, /* compressed reduce-scatter + allgather */
    TERSE_SCHED_WIRE_SPARSE   = 3, /* allgather of the payload */
    TERSE_SCHED_WIRE_COUNT    = 4
} terse_sched_wire_t;

/* The wire class of a family. */
terse_sched_wire_t terse__sched_fam_wire(int fam);

/* ---------------------------------------------------------------- candidate grid */
#define TERSE_SCHED_GRID_MAX 48

typedef struct terse_sched_option {
    int    fam;    /* TERSE_SCHED_FAM_* */
    double param;  /* bits, density, rank; cast 0 (bf16) or 1 (fp16); 0 where unused */
} terse_sched_option_t;

typedef struct terse_sched_grid {
    size_t               n;             /* options in opt[] */
    terse_sched_option_t opt[TERSE_SCHED_GRID_MAX];
    uint32_t             quant_bucket;  /* values per scale bucket of quant and sign (>= 1) */
    unsigned             oversample;    /* extra columns of the range finder (default 8) */
    unsigned             power_iters;   /* power iterations of the range finder (default 1) */
    /* Ranks whose gradients PowerSGD approximates in ONE shared subspace (default 1). The
     * statistics see one rank's gradient; PowerSGD's rank r spans the sum of `share` of them,
     * which can be up to `share` times richer (a rank's gradient over a batch of b examples
     * has rank <= b, so rank-32 PowerSGD looks exact on one rank's batch of 32 and is not on
     * the sum). The estimate therefore charges rank r the tail of one rank's gradient at rank
     * max(1, r / share): exact when the ranks' subspaces are independent, conservative when
     * they share directions (as real gradients do). */
    unsigned             share;
} terse_sched_grid_t;

/* The default grid (DESIGN.md section 4), in this order:
 *   none, cast:0 (bf16), quant:2 3 4 6 8, sign, topk:0.001 0.003 0.01 0.03 0.1,
 *   randomk:0.001 0.01 0.03 0.1, powersgd:1 2 4 8 16 32,
 *   topkt:0.001 0.003 0.01 0.03 0.1                               (28 options)
 * The same grids as the compressor registry's families (their ops->grid). topkt is
 * estimated like topk (it selects exactly top-k's set) and differs in compress time, which
 * the planner weighs. powersgd1 is estimated like powersgd (its steady state: optimistic, it
 * refreshes one factor a step) and is NOT in the default grid: given the choice the planner
 * put the C trainer's output layer on powersgd1 and training lost accuracy; add it to opt[]
 * to let the planner choose it anyway.
 *   [out] grid  filled; quant_bucket = bucket (0: 512) */
void terse__sched_grid_default(terse_sched_grid_t *grid, uint32_t bucket);

/* Index of (fam, param) in the grid, or -1. Params compare exactly. */
int terse__sched_grid_find(const terse_sched_grid_t *grid, int fam, double param);

/* ---------------------------------------------------------------- statistics (stats.c) */
/* Layout of one layer's statistics: stride = TERSE_SCHED_STATS_HEAD + grid->n doubles,
 *   [0]                         ||v||^2
 *   [1]                         non-finite flag: 1 if v held Inf or NaN, else 0
 *   [TERSE_SCHED_STATS_HEAD + i] predicted ||v - D(C(v))||^2 of option i (with error
 *                                feedback off: the error of this one compression); +Inf where
 *                                the option does not apply (PowerSGD on a flat layer) and for
 *                                every compressing option on a non-finite layer.
 * Every entry is a sum over elements (or over ranks' contributions), so summing the vectors
 * of all ranks (one allreduce SUM of nlayers x stride doubles) gives the statistics of the
 * job: the total squared error every rank's compression makes. */
#define TERSE_SCHED_STATS_NORM 0
#define TERSE_SCHED_STATS_NONFINITE 1
#define TERSE_SCHED_STATS_HEAD 2

size_t terse__sched_stats_stride(const terse_sched_grid_t *grid);

/* Estimates one layer's statistics.
 *   [in]  grid    the options
 *   [in]  v       count fp32 values (host memory; not modified, not kept)
 *   [in]  rows, cols  matrix shape (rows * cols == count), or 0, 0 for a flat layer
 *   [in]  seed    seeds the range finder's gaussian sketch: pass the same on every rank
 *                 (e.g. terse_rng_mix64(base ^ layer)) for reproducible plans
 *   [out] out     stride doubles (layout above)
 * Estimators (DESIGN.md section 5):
 *   none      0
 *   cast      exact: sum (v - bf16_rne(v))^2 (param 0), or fp16 (param 1)
 *   quant:b   exact expectation of unbiased stochastic rounding on the max-min grid of each
 *             bucket (levels lo + j * unit, unit = (max - min) / (2^b - 1)):
 *             sum over elements of (x - l)(l + unit - x), l the grid level below x
 *   sign      per bucket ||v_B||^2 - (sum |v_B|)^2 / |B| (scale = mean |v_B|)
 *   topk:d    energy outside the k = ceil(d n) largest magnitudes, from one histogram of
 *             |v| with 16 log-spaced bins per octave (interpolated inside the boundary bin)
 *   randomk:d (1 - k / n) ||v||^2 (unscaled, as with error feedback)
 *   powersgd:r ||M||^2 - sum_{i<=r} sigma_i^2, sigma from ONE randomized range finder:
 *             Y = M Omega (Omega cols x (R + oversample) gaussian, R the grid's largest rank),
 *             power_iters rounds of Y = M (M^T Y), Gram-Schmidt, B = Q^T M, one-sided Jacobi
 *             on B. sigma_i(B) <= sigma_i(M), so the estimate never undercounts the error.
 * Cost: O(count x (#quant widths + R + oversample) x (2 + power_iters)); on one core of our
 * VM a 3072 x 1024 gradient takes ~0.1 s without PowerSGD options and ~0.4 s with them
 * (power_iters 0 or 1): run it off the hot path (a helper thread) or on a subsample of
 * rows for very large layers.
 * Returns TERSE_OK, TERSE_ERR_INVALID (NULL pointers, rows * cols != count), TERSE_ERR_NOMEM. */
terse_status_t terse__sched_stats_layer(const terse_sched_grid_t *grid, const float *v,
                                        size_t count, size_t rows, size_t cols, uint64_t seed,
                                        double *out);

/* The same with a weight per element: every entry above becomes a weighted sum over elements,
 * sum_i w_i (v_i - D(C(v))_i)^2 (and [0] = sum_i w_i v_i^2); w NULL is stats_layer. With
 * w_i = 1 / E[v_i^2] this is the error as Adam-type optimizers see it: they divide every
 * coordinate by its own RMS, so noise on a coordinate whose gradients are small (a rare
 * token's output column) costs as much as noise on a large one, which an unweighted
 * squared error hides (comm/terse.c, TERSE_ERROR_MEASURE). Estimators as above, weighted:
 * quant, sign, cast and random-k exactly; top-k selects by |v| and loses the weighted energy
 * of what it drops; PowerSGD the weighted residual of the range finder's rank-r
 * approximation (an upper bound of the best rank-r error within that subspace).
 *   [in] w  count weights >= 0 (host memory; not kept), or NULL */
terse_status_t terse__sched_stats_layer_w(const terse_sched_grid_t *grid, const float *v,
                                          const float *w, size_t count, size_t rows,
                                          size_t cols, uint64_t seed, double *out);

/* The estimators one at a time (used by stats_layer, exposed for tests).
 * Top-k: err_p[i] for densities dens[0..nd) from one histogram. */
void terse__sched_topk_err(const float *v, size_t n, const double *dens, size_t nd,
                           double *err_p);
/* Quant: expected squared error of b-bit stochastic rounding, buckets of `bucket` values. */
double terse__sched_quant_err(const float *v, size_t n, uint32_t bucket, unsigned bits);
/* Sign with per-bucket mean-magnitude scale. */
double terse__sched_sign_err(const float *v, size_t n, uint32_t bucket);
/* PowerSGD: tail_p[i] = estimated ||M||^2 - sum_{j<=ranks[i]} sigma_j^2 for nr ranks.
 * Returns TERSE_OK or TERSE_ERR_NOMEM. */
terse_status_t terse__sched_powersgd_err(const float *m, size_t rows, size_t cols,
                                         const unsigned *ranks, size_t nr, unsigned oversample,
                                         unsigned power_iters, uint64_t seed, double *tail_p);
/* Weighted variants (w NULL: the unweighted ones above). PowerSGD: wtail_p[i] gets the
 * weighted residual of rank ranks[i]; tail_p is filled as without weights. */
void terse__sched_topk_err_w(const float *v, const float *w, size_t n, const double *dens,
                             size_t nd, double *err_p);
double terse__sched_quant_err_w(const float *v, const float *w, size_t n, uint32_t bucket,
                                unsigned bits);
double terse__sched_sign_err_w(const float *v, const float *w, size_t n, uint32_t bucket);
terse_status_t terse__sched_powersgd_err_w(const float *m, const float *w, size_t rows,
                                           size_t cols, const unsigned *ranks, size_t nr,
                                           unsigned oversample, unsigned power_iters,
                                           uint64_t seed, double *tail_p, double *wtail_p);
/* Singular values of a rows x cols row-major matrix (double, rows >= 1, cols >= 1) by
 * one-sided Jacobi, descending, into sigma_p[0..min(rows, cols)). Deterministic (fixed sweep
 * order). Returns TERSE_OK or TERSE_ERR_NOMEM. */
terse_status_t terse__sched_svd_values(const double *a, size_t rows, size_t cols,
                                       double *sigma_p);

/* Payload bytes of an option by formulas matching the compressor registry's payload_size
 * (checked against it for every family; payload_size stays authoritative), for benchmarks
 * and callers without a compressor instance:
 *   none 4n; cast 2n; quant 24 (header) + 8 per bucket (min, max) + ceil(n b / 8) (for
 *   buckets whose size times b is a multiple of 8); sign 24 + 4 per bucket + ceil(n / 8);
 *   topk, topkt 32 + 8k (index + value); randomk 4k; powersgd 4 r (rows + cols);
 *   powersgd1 4 r max(rows, cols); 0 for PowerSGD on a flat layer.
 *   k = ceil(d n) clamped to [1, n]. */
uint64_t terse__sched_payload_bytes(int fam, double param, size_t count, size_t rows,
                                    size_t cols, uint32_t bucket);
/* k of a density: ceil(d n), clamped to [1, n] (0 when n == 0). */
size_t terse__sched_density_k(double density, size_t n);
/* The hierarchical allreduce's payload (comm/algo_hier.c): the layer cut into `parts` pieces,
 * one per rank of a node (row blocks of a matrix, equal runs of a flat layer), each compressed
 * on its own; the sum of their terse__sched_payload_bytes, i.e. what one node sends for the
 * layer at the inter-node level. parts <= 1: terse__sched_payload_bytes. */
uint64_t terse__sched_payload_bytes_split(int fam, double param, size_t count, size_t rows,
                                          size_t cols, uint32_t bucket, int parts);

/* ---------------------------------------------------------------- cost model (costmodel.c) */
#define TERSE_SCHED_MAX_LEVELS 3

/* One level of the hierarchy. level[0] is the innermost (inside a node). */
typedef struct terse_sched_level {
    int    nranks;                          /* ranks taking part at this level (>= 1) */
    double alpha[TERSE_SCHED_WIRE_COUNT];   /* seconds per message, per wire class */
    double bw[TERSE_SCHED_WIRE_COUNT];      /* bytes per second (bus bandwidth), per class */
} terse_sched_level_t;

typedef struct terse_sched_cost {
    int                 nlevels;   /* 1..TERSE_SCHED_MAX_LEVELS */
    terse_sched_level_t level[TERSE_SCHED_MAX_LEVELS];
    /* Levels below the outermost carry the layer uncompressed (hierarchical allreduce:
     * reduce-scatter inside the node, compressed across nodes on the shard, allgather inside
     * the node): a cost every candidate pays alike. The outermost level carries the payload. */
    unsigned            nbuckets;  /* fused messages per step: latency is paid once per bucket
                                    * per wire class used (>= 1) */
    /* Compress + decompress throughput per family in input bytes (fp32) per second, and a
     * fixed overhead per call, for candidates whose times were not measured. */
    double              cmp_tput[TERSE_SCHED_FAM_COUNT];
    double              cmp_overhead;
} terse_sched_cost_t;

/* Defaults: one level of nranks ranks, alpha 30 us and bus bandwidth bw (bytes/s; 0 gives
 * 3.5e9, the socket path of DESIGN.md section 7) for every class; one bucket; compress
 * throughputs of GPU kernels (cast 100, quant 50, sign 50, topk 10, randomk 50, powersgd 20
 * GB/s) and 5 us per call. Measured values replace them. */
void terse__sched_cost_default(terse_sched_cost_t *cost, int nranks, double bw);

/* Sets cost's compress throughputs and per-call overhead to the default figures of the GPU
 * kernels (host 0: what terse__sched_cost_default uses) or of the CPU reference code on one
 * core (host 1: cast 2, quant 1, sign 1, topk 0.3, randomk 1, powersgd 0.5 GB/s), for the
 * families whose times are not measured. */
void terse__sched_cost_tput(terse_sched_cost_t *cost, int host);

/* Bytes one rank hands to the transport at the outermost level for a payload of `bytes`,
 * for class `wire` and p ranks (DESIGN.md section 9):
 *   native, summable: ring allreduce 2(p-1)/p x bytes; requant: reduce-scatter + allgather
 *   of compressed chunks 2(p-1)/p x bytes; sparse: allgather (p-1) x bytes. p == 1: 0. */
double terse__sched_wire_bytes(terse_sched_wire_t wire, double bytes, int p);
/* Messages one rank sends per bucket for a class at p ranks: 2(p-1) (allreduce, rs + ag),
 * p-1 (allgather), 0 for p == 1. */
double terse__sched_wire_msgs(terse_sched_wire_t wire, int p);
/* Predicted compress + decompress seconds of family fam on count elements (defaults). */
double terse__sched_cost_cmp_time(const terse_sched_cost_t *cost, int fam, size_t count);
/* Predicted seconds of a candidate without latency: inner levels (uncompressed, 4 x count
 * bytes), the payload's wire bytes / bw at the outermost level, plus time_cmp. */
double terse__sched_cost_cand_time(const terse_sched_cost_t *cost, terse_sched_wire_t wire,
                                   size_t count, uint64_t bytes, double time_cmp);
/* Latency of a class set (bit w = class w) for the whole step: nbuckets x sum over levels
 * and classes in the set of alpha x messages. Inner levels always pay the native class. */
double terse__sched_cost_set_latency(const terse_sched_cost_t *cost, unsigned set);

/* ---------------------------------------------------------------- the problem (dp.c) */
typedef struct terse_sched_cand {
    int                fam;       /* TERSE_SCHED_FAM_* (copied into the plan) */
    double             param;
    uint64_t           bytes;     /* payload bytes of this rank (caller: payload_size) */
    double             sq_err;    /* predicted absolute squared error; non-finite: infinite */
    double             time;      /* predicted seconds without latency (cost_cand_time) */
    terse_sched_wire_t wire;
} terse_sched_cand_t;

typedef struct terse_sched_layer {
    const char               *name;  /* may be NULL; copied into the plan */
    size_t                    count;
    size_t                    rows, cols;
    size_t                    ncand; /* 1..255 */
    const terse_sched_cand_t *cand;  /* ncand candidates; borrowed for the call */
} terse_sched_layer_t;

typedef enum terse_sched_objective {
    TERSE_SCHED_OBJ_TIME  = 0, /* predicted seconds: candidate times + latency of the class set */
    TERSE_SCHED_OBJ_BYTES = 1  /* bytes sent at the outermost level (wire bytes), no latency */
} terse_sched_objective_t;

#define TERSE_SCHED_ERROR_BUCKETS_DEFAULT 2048u
#define TERSE_SCHED_ERROR_BUCKETS_MAX 4096u

typedef struct terse_sched_problem {
    size_t                     nlayers;
    const terse_sched_layer_t *layer;         /* nlayers; borrowed */
    double                     budget;        /* allowed sum of squared errors (>= 0, may be
                                               * +Inf) */
    terse_sched_objective_t    objective;
    const terse_sched_cost_t  *cost;          /* latency and p for wire bytes; borrowed */
    unsigned                   error_buckets; /* 0: default; at most ..._MAX */
    /* Optional (NULL: none): per layer the candidate index of the reference setting the
     * budget was measured against (-1 where a layer lacks it). Rounding errors up can make
     * the reference infeasible in integers; the solver then still returns it when its real
     * error fits the budget and it beats the knapsack's plan, so the plan is never worse than
     * the reference. */
    const int                 *reference;
} terse_sched_problem_t;

/* Fills one layer's candidates from its reduced statistics.
 *   [in]  grid, cost
 *   [in]  stats   the layer's stride doubles (after the allreduce)
 *   [in]  bytes   grid->n payload bytes (UINT64_MAX: option unavailable, skipped)
 *   [in]  time_cmp grid->n measured compress + decompress seconds (MAX over ranks), or NULL
 *                 for terse__sched_cost_cmp_time's defaults; negative entries use defaults too
 *   [out] cand    up to grid->n candidates (caller's array); *ncand_p the number written.
 *                 Options with +Inf error are kept out, except none (always present).
 * Returns TERSE_OK or TERSE_ERR_INVALID. */
terse_status_t terse__sched_layer_fill(const terse_sched_grid_t *grid,
                                       const terse_sched_cost_t *cost, size_t count,
                                       const double *stats, const uint64_t *bytes,
                                       const double *time_cmp, terse_sched_cand_t *cand,
                                       size_t *ncand_p);

/* Budget = alpha x sum over layers of the error of the candidate (fam, param); layers that
 * lack that candidate contribute 0 (conservative). Returns TERSE_OK or TERSE_ERR_INVALID
 * (alpha < 0 or NaN, a non-finite reference error). */
terse_status_t terse__sched_budget_reference(const terse_sched_layer_t *layer, size_t nlayers,
                                             int fam, double param, double alpha,
                                             double *budget_p);
/* Budget = fraction x sum over layers of stats[TERSE_SCHED_STATS_NORM] (stats: nlayers x
 * stride). */
double terse__sched_budget_fraction(const double *stats, size_t nlayers, size_t stride,
                                    double fraction);

/* ---------------------------------------------------------------- plans (plan.c) */
typedef struct terse_plan_layer {
    int      layer;                      /* index; -1 = any (plan files only) */
    char     name[TERSE_NAME_MAX];       /* "-" when unnamed */
    int64_t  count;                      /* elements; -1 = any */
    int      fam;                        /* TERSE_SCHED_FAM_* */
    double   param;
    int64_t  bytes;                      /* payload bytes; -1 = unknown */
    double   expected_sq_err;            /* -1 = unknown */
    int      cand;                       /* index of the chosen candidate (solver), else -1 */
} terse_plan_layer_t;

typedef struct terse_plan {
    size_t              nlayers;
    terse_plan_layer_t *layer;           /* owned: free with terse__sched_plan_free */
    /* Filled by the solver (0 for plans read from a file): */
    double              predicted_time;  /* seconds, latency included */
    double              wire_bytes;      /* bytes sent at the outermost level */
    double              sq_err;          /* sum of expected_sq_err */
    double              budget;
    unsigned            wire_set;        /* class set used (bit w = class w) */
} terse_plan_t;

/* Solves the problem (dp.c has the full description).
 *   [out] plan_p  owned by the caller (terse__sched_plan_free); written only on TERSE_OK
 * Returns TERSE_OK; TERSE_ERR_INVALID (NULL, no layers, a layer without candidates or with
 * more than 255, bad budget or bucket count); TERSE_ERR_BUDGET (no candidate combination
 * meets the budget: give every layer a zero-error candidate such as none); TERSE_ERR_NOMEM. */
terse_status_t terse__sched_solve(const terse_sched_problem_t *prob, terse_plan_t *plan_p);

/* The integers the solver works on (for tests and diagnostics):
 *   [out] w      per layer per candidate (sum of ncand, layer-major): error in units of
 *                budget / E, rounded up; E + 1 marks an infeasible candidate
 *   [out] c      the same layout: cost (time objective: 0.1 ns units; bytes: wire bytes)
 *   [out] lat    16 entries: latency of every class set in the same units (0 for bytes)
 *   [out] E_p    the number of error units of the budget
 * Returns TERSE_OK or TERSE_ERR_INVALID. */
terse_status_t terse__sched_discretise(const terse_sched_problem_t *prob, uint32_t *w,
                                       int64_t *c, int64_t *lat, uint32_t *E_p);

void terse__sched_plan_free(terse_plan_t *plan);
/* Allocates a plan of n layers, zeroed, cand -1. Returns TERSE_OK or TERSE_ERR_NOMEM. */
terse_status_t terse__sched_plan_alloc(size_t n, terse_plan_t *plan_p);

/* 64-bit checksum of a plan over a canonical integer encoding: per layer (layer, count, fam,
 * param in units of 1e-9, bytes, expected_sq_err's IEEE bits, name bytes). Identical on every
 * rank that holds the same plan; a plan read back from its CSV has the same checksum. */
uint64_t terse__sched_plan_checksum(const terse_plan_t *plan);

/* Writes the plan as CSV (format documented in plan.c and in the file's '#' lines).
 * Returns TERSE_OK, TERSE_ERR_INVALID (a name with ',', '#', whitespace or control
 * characters), TERSE_ERR_SYSTEM (open/write failed: logged with strerror). */
terse_status_t terse__sched_plan_write(const terse_plan_t *plan, const char *path);
/* The same into a FILE * (stdout for tools). */
terse_status_t terse__sched_plan_fwrite(const terse_plan_t *plan, void *file /* FILE * */);

/* Reads a plan CSV. Rows may use -1 for layer and count ("any"); see terse__sched_plan_bind.
 * Every malformed line fails the read with TERSE_ERR_INVALID and one error line naming the
 * file, the line number and what is wrong (also copied into why, if not NULL).
 *   [out] plan_p  owned by the caller; written only on TERSE_OK
 * Returns TERSE_OK, TERSE_ERR_INVALID, TERSE_ERR_SYSTEM (cannot open), TERSE_ERR_NOMEM. */
terse_status_t terse__sched_plan_read(const char *path, terse_plan_t *plan_p, char *why,
                                      size_t why_len);
/* The same from a string (the whole file's text). */
terse_status_t terse__sched_plan_parse(const char *text, const char *origin,
                                       terse_plan_t *plan_p, char *why, size_t why_len);

/* Binds file rows to a model's layers: layer l takes the first row whose layer is l or -1
 * and whose count is counts[l] or -1 (nccl_tuner.conf's first-match rule).
 *   [out] plan_p  nlayers entries (layer = l, count = counts[l], names from names or the row)
 * Returns TERSE_OK, TERSE_ERR_INVALID (a layer no row matches, or a row naming a layer index
 * >= nlayers), TERSE_ERR_NOMEM. */
terse_status_t terse__sched_plan_bind(const terse_plan_t *rows, size_t nlayers,
                                      const size_t *counts, const char *const *names,
                                      terse_plan_t *plan_p);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_SCHED_H */
