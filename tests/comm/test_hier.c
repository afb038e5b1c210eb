/*
 * comm: the hierarchical allreduce (comm/algo_hier.c) over the loop transport, with simulated
 * nodes (terse__hier_ctx_init with a TERSE_TOPOLOGY value after terse_ctx_create). Checked
 * against independent references: the exact sum in double of every rank's input, bitwise
 * identity across ranks, the bound that the reported errors give, the flat algorithm on
 * integer inputs (exact sums: the summation order cannot matter), non-finite propagation to
 * the whole layer, error feedback, tiny and odd counts, 16-bit inputs, and uneven nodes
 * (flat on every rank).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_internal.h"
#include "terse_sched.h"
#include "terse_test.h"

#define HIER_MAXP 6

/* Layers: a bias, a matrix, an odd flat vector, a second matrix. */
static const size_t hier_counts[] = {100, 96 * 64, 5003, 40 * 33};
static const size_t hier_rows[]   = {0, 96, 0, 40};
static const size_t hier_cols[]   = {0, 64, 0, 33};
#define HIER_NLAYERS 4
#define HIER_TOTAL (100 + 96 * 64 + 5003 + 40 * 33)

typedef struct hier_run {
    const char   *spec;
    const char   *topo;          /* TERSE_TOPOLOGY value, NULL: flat (no hierarchy) */
    size_t        chunk_bytes;   /* pipeline chunk */
    int           steps;
    int           nan_rank;      /* puts a NaN into layer 1 (-1: none) */
    int           integers;      /* small integer inputs: every sum exact */
    size_t        count;         /* 0: the registered layout, else one unregistered buffer */
    terse_dtype_t dtype;
    terse_op_t    op;
    /* per rank */
    float        *out[HIER_MAXP];     /* last output, as fp32 */
    double       *run_sum[HIER_MAXP]; /* sum of outputs over the steps */
    double        rel_err[HIER_MAXP];
    double        in_norm[HIER_MAXP];
    int           hier[HIER_MAXP];    /* ctx had a hierarchy */
    terse_status_t status[HIER_MAXP];
    terse_status_t save[HIER_MAXP];   /* terse_state_save at the end (hierarchical only) */
    terse_stats_t  stats[HIER_MAXP];
} hier_run_t;

static size_t
hier_n(const hier_run_t *run)
{
    return (run->count > 0) ? run->count : HIER_TOTAL;
}

static void
hier_input(const hier_run_t *run, int rank, size_t n, float *x)
{
    size_t i;

    terse_test_gaussian(7000 + (uint64_t)rank, x, n);
    if (run->integers) {
        for (i = 0; i < n; ++i) {
            x[i] = (float)(int)(x[i] * 8.0f);
        }
    }
    if ((run->nan_rank == rank) && (n > 200)) {
        x[150] = NAN; /* layer 1 */
    }
}

static void
hier_rank(void *ep, int rank, int nranks, void *arg)
{
    hier_run_t *run           = arg;
    terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
    const size_t n            = hier_n(run);
    const size_t es           = terse_dtype_size(run->dtype);
    terse_ctx_t *ctx          = NULL;
    float *x                  = malloc(TERSE_MAX(n, 1) * sizeof(float));
    unsigned char *in         = malloc(TERSE_MAX(n, 1) * es);
    unsigned char *o          = malloc(TERSE_MAX(n, 1) * es);
    size_t i;
    int l, s;

    (void)nranks;
    params.transport   = TERSE_TRANSPORT_LOOP;
    params.comm        = ep;
    params.seed        = 42;
    run->out[rank]     = calloc(TERSE_MAX(n, 1), sizeof(float));
    run->run_sum[rank] = calloc(TERSE_MAX(n, 1), sizeof(double));
    run->status[rank]  = terse_ctx_create(&params, &ctx);
    if (run->status[rank] != TERSE_OK) {
        goto out_free;
    }
    run->status[rank] = terse__hier_ctx_init(ctx, (run->topo != NULL) ? run->topo : "flat",
                                             (run->topo != NULL) ? TERSE_HIER_ON
                                                                 : TERSE_HIER_FLAT,
                                             run->chunk_bytes);
    run->hier[rank] = (ctx->hier != NULL);
    if (run->count > 0) {
        terse__ctx_set_uniform(ctx, run->spec);
    } else {
        terse_plan_entry_t e[HIER_NLAYERS];
        terse_cmp_spec_t sp;
        terse__cmp_spec_parse(run->spec, &sp, NULL, 0);
        for (l = 0; l < HIER_NLAYERS; ++l) {
            terse_layer_register(ctx, NULL, hier_counts[l], hier_rows[l], hier_cols[l], NULL);
            e[l].layer = l;
            snprintf(e[l].compressor, sizeof(e[l].compressor), "%s", sp.ops->name);
            e[l].param = sp.param;
        }
        terse_plan_set(ctx, e, HIER_NLAYERS);
    }
    hier_input(run, rank, n, x);
    for (i = 0; i < n; ++i) {
        if (isfinite(x[i])) {
            run->in_norm[rank] += (double)x[i] * x[i];
        }
        terse__store_f32(in, run->dtype, i, x[i]);
    }
    for (s = 0; s < run->steps; ++s) {
        /* odd steps in place */
        unsigned char *dst = (s & 1) ? in : o;
        terse_status_t st  = terse_allreduce(ctx, in, dst, n, run->dtype, run->op,
                                            TERSE_MEM_HOST, NULL);
        if (st != TERSE_OK) {
            run->status[rank] = st;
        }
        for (i = 0; i < n; ++i) {
            run->out[rank][i] = terse__load_f32(dst, run->dtype, i);
            run->run_sum[rank][i] += run->out[rank][i];
        }
        if (s & 1) {
            for (i = 0; i < n; ++i) {
                terse__store_f32(in, run->dtype, i, x[i]);
            }
        }
        if (s == 0) {
            run->stats[rank].size = sizeof(run->stats[rank]);
            terse_stats_get(ctx, &run->stats[rank]);
            run->rel_err[rank] = run->stats[rank].last_rel_err;
        }
    }
    run->stats[rank].size = sizeof(run->stats[rank]);
    terse_stats_get(ctx, &run->stats[rank]);
    if (run->integers && (ctx->hier != NULL)) {
        run->save[rank] = terse_state_save(ctx, "/nonexistent/terse_hier_%r.bin");
    }
    terse_ctx_destroy(ctx);
out_free:
    free(x);
    free(in);
    free(o);
}

static void
hier_free(hier_run_t *run, int p)
{
    int r;

    for (r = 0; r < p; ++r) {
        free(run->out[r]);
        free(run->run_sum[r]);
        run->out[r]     = NULL;
        run->run_sum[r] = NULL;
    }
}

static double *
hier_exact(const hier_run_t *run, int p)
{
    const size_t n = hier_n(run);
    double *e      = calloc(TERSE_MAX(n, 1), sizeof(double));
    float *x       = malloc(TERSE_MAX(n, 1) * sizeof(float));
    size_t i;
    int r;

    for (r = 0; r < p; ++r) {
        hier_input(run, r, n, x);
        for (i = 0; i < n; ++i) {
            e[i] += x[i];
        }
    }
    free(x);
    return e;
}

static int
hier_registered(const char *spec)
{
    terse_cmp_spec_t s;

    return terse__cmp_spec_parse(spec, &s, NULL, 0) == TERSE_OK;
}

static void
hier_base(hier_run_t *run, const char *spec, const char *topo, size_t chunk)
{
    memset(run, 0, sizeof(*run));
    run->spec        = spec;
    run->topo        = topo;
    run->chunk_bytes = chunk;
    run->steps       = 1;
    run->nan_rank    = -1;
    run->dtype       = TERSE_FLOAT32;
    run->op          = TERSE_OP_SUM;
}

/* Every family, 2 nodes x 2 ranks, unpipelined and in chunks: bitwise equal on every rank,
 * within the bound of the reported errors; traffic inside and between nodes counted. */
static void
test_hier_every_family(void)
{
    static const char *const fixed[] = {"none",     "quant:4",     "quant:2",    "sign",
                                        "cast:bf16", "topk:0.05",  "randomk:0.1", "powersgd:4",
                                        NULL};
    static const size_t chunks[] = {0, 4096};
    const char *specs[64];
    const int p = 4;
    int k, c, r, tested = 0;

    terse_test_spec_list(fixed, specs, 63);
    for (k = 0; specs[k] != NULL; ++k) {
        if (!hier_registered(specs[k])) {
            continue;
        }
        for (c = 0; c < 2; ++c) {
            hier_run_t run;
            double *exact, err = 0.0, norm = 0.0, bound = 0.0, f;
            size_t i;

            hier_base(&run, specs[k], "2", chunks[c]);
            TERSE_TEST_OK(terse_loop_run(p, hier_rank, &run));
            exact = hier_exact(&run, p);
            for (r = 0; r < p; ++r) {
                TERSE_TEST_OK(run.status[r]);
                CU_ASSERT(run.hier[r]);
                CU_ASSERT(memcmp(run.out[r], run.out[0], HIER_TOTAL * sizeof(float)) == 0);
                bound += run.rel_err[r] * sqrt(run.in_norm[r]);
                CU_ASSERT(run.stats[r].bytes_intra > 0);
                CU_ASSERT(run.stats[r].bytes_inter > 0);
                CU_ASSERT(run.stats[r].bytes_sent >=
                          run.stats[r].bytes_intra + run.stats[r].bytes_inter);
            }
            for (i = 0; i < HIER_TOTAL; ++i) {
                const double d = run.out[0][i] - exact[i];
                err += d * d;
                norm += exact[i] * exact[i];
            }
            err  = sqrt(err);
            norm = sqrt(norm);
            /* the inter-node stage compresses node sums: its reported errors bound the error
             * (requantisation and 16-bit rounding of summed payloads: the same order again) */
            f = ((strncmp(specs[k], "quant", 5) == 0) || (strcmp(specs[k], "sign") == 0) ||
                 (strncmp(specs[k], "cast", 4) == 0))
                    ? 2.5
                    : 1.01;
            if (!(err <= f * bound + 1e-5 * norm * p)) {
                fprintf(stderr, "%s chunk %zu: error %.4g above bound %.4g (norm %.4g)\n",
                        specs[k], chunks[c], err, f * bound, norm);
            }
            CU_ASSERT(err <= f * bound + 1e-5 * norm * p);
            if (strcmp(specs[k], "none") == 0) {
                CU_ASSERT(err <= 1e-5 * norm);
                CU_ASSERT(run.stats[0].passthrough == 1);
            } else {
                CU_ASSERT(run.stats[0].steps == 1);
                CU_ASSERT(run.rel_err[0] > 0.0);
            }
            if (terse_test_verbose()) {
                printf("\n  %-12s chunk %5zu relerr %.3e bound %.3e intra %llu inter %llu",
                       specs[k], chunks[c], err / norm, f * bound / norm,
                       (unsigned long long)run.stats[0].bytes_intra,
                       (unsigned long long)run.stats[0].bytes_inter);
            }
            ++tested;
            free(exact);
            hier_free(&run, p);
        }
    }
    CU_ASSERT(tested >= 8);
}

/* Uncompressed: on integer inputs every sum is exact, so the hierarchical result equals the
 * flat one bit for bit (and the exact sum), pipelined or not, 2 or 3 ranks per node. */
static void
test_hier_equals_flat(void)
{
    static const struct {
        int         p;
        const char *topo;
        size_t      chunk;
    } cases[] = {{4, "2", 0}, {4, "2", 2048}, {6, "3", 1024}, {6, "2", 0}};
    size_t c, i;
    int r;

    for (c = 0; c < sizeof(cases) / sizeof(cases[0]); ++c) {
        hier_run_t hr, fr;
        double *exact;

        hier_base(&hr, "none", cases[c].topo, cases[c].chunk);
        hr.integers = 1;
        hr.steps    = 2;
        hier_base(&fr, "none", NULL, 0);
        fr.integers = 1;
        fr.steps    = 2;
        TERSE_TEST_OK(terse_loop_run(cases[c].p, hier_rank, &hr));
        TERSE_TEST_OK(terse_loop_run(cases[c].p, hier_rank, &fr));
        exact = hier_exact(&hr, cases[c].p);
        for (r = 0; r < cases[c].p; ++r) {
            TERSE_TEST_OK(hr.status[r]);
            CU_ASSERT(hr.hier[r]);
            CU_ASSERT(!fr.hier[r]);
            /* residuals of the pieces are not in the state format: refused, not half saved */
            TERSE_TEST_STATUS(hr.save[r], TERSE_ERR_UNSUPPORTED);
            CU_ASSERT(memcmp(hr.out[r], fr.out[r], HIER_TOTAL * sizeof(float)) == 0);
        }
        for (i = 0; i < HIER_TOTAL; ++i) {
            CU_ASSERT_EQUAL_FATAL((double)hr.out[0][i], exact[i]);
        }
        /* the hierarchy sends half of the flat traffic's inter-node share... and all of it
         * is counted: intra + inter = everything but the agreement words */
        CU_ASSERT(hr.stats[0].bytes_inter < fr.stats[0].bytes_sent);
        free(exact);
        hier_free(&hr, cases[c].p);
        hier_free(&fr, cases[c].p);
    }
}

/* A NaN on one rank: the whole layer non-finite on every rank, the other layers finite,
 * also on the next (clean) step: residuals were reset. */
static void
test_hier_nonfinite(void)
{
    static const char *const specs[] = {"quant:4", "topk:0.05", "powersgd:4", "randomk:0.1",
                                        "cast:bf16", "none", NULL};
    int k, r, c;

    for (k = 0; specs[k] != NULL; ++k) {
        if (!hier_registered(specs[k])) {
            continue;
        }
        for (c = 0; c < 2; ++c) {
            hier_run_t run;
            size_t i;
            int l1_nan = 0, l1_all = 1, others_finite = 1;

            hier_base(&run, specs[k], "2", c ? 2048 : 0);
            run.nan_rank = 3;
            run.steps    = 2;
            TERSE_TEST_OK(terse_loop_run(4, hier_rank, &run));
            for (r = 0; r < 4; ++r) {
                CU_ASSERT(memcmp(run.out[r], run.out[0], HIER_TOTAL * sizeof(float)) == 0);
            }
            for (i = 0; i < HIER_TOTAL; ++i) {
                const int in1 = (i >= 100) && (i < 100 + 96 * 64);
                if (in1) {
                    l1_nan |= !isfinite(run.out[0][i]);
                    l1_all &= !isfinite(run.out[0][i]);
                } else if (!isfinite(run.out[0][i])) {
                    others_finite = 0;
                }
            }
            if (!l1_nan || !others_finite ||
                (!l1_all && (strcmp(specs[k], "none") != 0))) {
                fprintf(stderr, "%s chunk %d: layer 1 nan %d all %d, others finite %d\n",
                        specs[k], c, l1_nan, l1_all, others_finite);
            }
            CU_ASSERT(l1_nan);
            CU_ASSERT(others_finite);
            if (strcmp(specs[k], "none") != 0) {
                CU_ASSERT(l1_all); /* compressed layers go NaN as a whole (rule 3) */
                CU_ASSERT(run.stats[0].nonfinite_steps == 2);
            }
            hier_free(&run, 4);
        }
    }
}

/* Unregistered counts: 0, 1, fewer than the ranks, odd; AVG; fp16 and bf16. */
static void
test_hier_odd_counts(void)
{
    static const size_t counts[] = {0, 1, 3, 5, 1001, 70001};
    static const char *const specs[] = {"none", "quant:4", "topk:0.01", "randomk:0.1",
                                        "cast:bf16", "sign", NULL};
    static const terse_dtype_t dtypes[] = {TERSE_FLOAT32, TERSE_FLOAT16, TERSE_BFLOAT16};
    int k, c, r, d;

    for (k = 0; specs[k] != NULL; ++k) {
        if (!hier_registered(specs[k])) {
            continue;
        }
        for (c = 0; c < 6; ++c) {
            for (d = 0; d < 3; ++d) {
                hier_run_t run;
                double *exact, err = 0.0, norm = 0.0;
                const size_t n = counts[c];
                size_t i;

                if ((d > 0) && (c != 4)) {
                    continue; /* 16-bit: one odd size */
                }
                hier_base(&run, specs[k], "2", 1024);
                run.count = n;
                run.dtype = dtypes[d];
                run.op    = TERSE_OP_AVG;
                run.steps = 2;
                TERSE_TEST_OK(terse_loop_run(4, hier_rank, &run));
                exact = hier_exact(&run, 4);
                for (r = 0; r < 4; ++r) {
                    TERSE_TEST_OK(run.status[r]);
                    CU_ASSERT(memcmp(run.out[r], run.out[0], n * sizeof(float)) == 0);
                }
                for (i = 0; i < n; ++i) {
                    const double dd = run.out[0][i] - exact[i] / 4;
                    err += dd * dd;
                    norm += (exact[i] / 4) * (exact[i] / 4);
                }
                if (n > 0) {
                    CU_ASSERT(sqrt(err) <= 1.5 * sqrt(norm) + 1e-6);
                }
                if (strcmp(specs[k], "none") == 0) {
                    /* fp32: rounding only; 16-bit: the output's own rounding */
                    CU_ASSERT(sqrt(err) <= ((d == 0) ? 1e-6 : 4e-3) * sqrt(norm) + 1e-7);
                }
                free(exact);
                hier_free(&run, 4);
            }
        }
    }
}

/* Error feedback per owned piece: with a constant input, the mean of T outputs approaches the
 * exact sum much faster than one step's error. */
static void
test_hier_feedback(void)
{
    static const char *const lossy[] = {"quant:2", "sign", "topk:0.1", "powersgd:4", NULL};
    const int T = 24;
    int k, r;

    for (k = 0; lossy[k] != NULL; ++k) {
        hier_run_t run;
        double *exact, eT = 0.0, e1 = 0.0, norm = 0.0;
        size_t i;

        if (!hier_registered(lossy[k])) {
            continue;
        }
        hier_base(&run, lossy[k], "2", 4096);
        run.steps = T;
        TERSE_TEST_OK(terse_loop_run(4, hier_rank, &run));
        exact = hier_exact(&run, 4);
        for (r = 0; r < 4; ++r) {
            TERSE_TEST_OK(run.status[r]);
            CU_ASSERT(memcmp(run.run_sum[r], run.run_sum[0], HIER_TOTAL * sizeof(double)) == 0);
        }
        for (i = 0; i < HIER_TOTAL; ++i) {
            const double d = run.run_sum[0][i] / T - exact[i];
            eT += d * d;
            norm += exact[i] * exact[i];
        }
        /* one step's relative error of the result, from the first step's report */
        for (r = 0; r < 4; ++r) {
            e1 += run.rel_err[r] * sqrt(run.in_norm[r]);
        }
        e1 /= sqrt(norm);
        eT = sqrt(eT / norm);
        if (terse_test_verbose()) {
            printf("\n  %-12s one step <= %.3e, mean of %d %.3e", lossy[k], e1, T, eT);
        }
        CU_ASSERT(eT < 0.35 * e1 + 1e-6);
        free(exact);
        hier_free(&run, 4);
    }
}

/* Uneven nodes (3 + 1 ranks, 2 + 1) or one node: flat on every rank, still correct. */
static void
test_hier_uneven(void)
{
    static const struct {
        int         p;
        const char *topo;
    } cases[] = {{4, "3"}, {3, "2"}, {4, "4"}, {4, "1"}};
    size_t c, i;
    int r;

    for (c = 0; c < sizeof(cases) / sizeof(cases[0]); ++c) {
        hier_run_t run;
        double *exact, err = 0.0, norm = 0.0;

        hier_base(&run, "quant:8", cases[c].topo, 0);
        TERSE_TEST_OK(terse_loop_run(cases[c].p, hier_rank, &run));
        exact = hier_exact(&run, cases[c].p);
        for (r = 0; r < cases[c].p; ++r) {
            TERSE_TEST_OK(run.status[r]);
            CU_ASSERT(!run.hier[r]);
            CU_ASSERT(run.stats[r].bytes_intra == 0);
            CU_ASSERT(memcmp(run.out[r], run.out[0], HIER_TOTAL * sizeof(float)) == 0);
        }
        for (i = 0; i < HIER_TOTAL; ++i) {
            err += (run.out[0][i] - exact[i]) * (run.out[0][i] - exact[i]);
            norm += exact[i] * exact[i];
        }
        CU_ASSERT(sqrt(err) < 0.05 * sqrt(norm));
        free(exact);
        hier_free(&run, cases[c].p);
    }
}

/* The per-level payload of the planner: row blocks and flat runs, summed. */
static void
test_hier_payload_split(void)
{
    const int q = terse__sched_fam_find("quant"), ps = terse__sched_fam_find("powersgd");

    CU_ASSERT_EQUAL(terse__sched_payload_bytes_split(q, 4, 10000, 0, 0, 512, 1),
                    terse__sched_payload_bytes(q, 4, 10000, 0, 0, 512));
    /* two runs of 5000: each 24 + 8 x 10 + 2500 */
    CU_ASSERT_EQUAL(terse__sched_payload_bytes_split(q, 4, 10000, 0, 0, 512, 2),
                    2 * (24 + 8 * 10 + 2500));
    /* PowerSGD rank 4 on 100 x 50 in two row blocks of 50 x 50: 2 x 4 x 4 x (50 + 50) */
    CU_ASSERT_EQUAL(terse__sched_payload_bytes_split(ps, 4, 5000, 100, 50, 512, 2), 3200);
    CU_ASSERT_EQUAL(terse__sched_payload_bytes_split(ps, 4, 5000, 100, 50, 512, 1), 2400);
    /* more parts than rows: empty blocks cost nothing */
    CU_ASSERT_EQUAL(terse__sched_payload_bytes_split(ps, 1, 150, 3, 50, 512, 4),
                    3 * 4 * (1 + 50));
}

typedef struct hier_auto {
    double   inter_bw;       /* modelled inter-node bandwidth (bytes/s); 0: calibrate */
    int      steps;
    uint64_t out[4][8];      /* hash of each step's output */
    uint64_t plan[4];        /* checksum of the plan in force at the end */
    size_t   ncmp[4];        /* layers compressed at the end */
    int      nlevels[4];
    int      level_ranks[4][2];
    terse_status_t status[4];
} hier_auto_t;

static void
hier_auto_rank(void *ep, int rank, int nranks, void *arg)
{
    hier_auto_t *run          = arg;
    terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
    terse_ctx_t *ctx          = NULL;
    float *x = malloc(HIER_TOTAL * sizeof(float)), *y = malloc(HIER_TOTAL * sizeof(float));
    const terse_slot_t *slot;
    int l, s, w;

    (void)nranks;
    params.transport = TERSE_TRANSPORT_LOOP;
    params.comm      = ep;
    params.seed      = 5;
    run->status[rank] = terse_ctx_create(&params, &ctx);
    if (run->status[rank] != TERSE_OK) {
        goto out;
    }
    run->status[rank] = terse__hier_ctx_init(ctx, "2", TERSE_HIER_ON, 8192);
    for (l = 0; l < HIER_NLAYERS; ++l) {
        terse_layer_register(ctx, NULL, hier_counts[l], hier_rows[l], hier_cols[l], NULL);
    }
    ctx->auto_reg       = 1;
    ctx->sched_warmup   = 1;
    ctx->sched_replan   = 3;
    ctx->sched_alpha    = 1.0;
    ctx->sched_fraction = 0.0;
    if (run->inter_bw > 0.0) {
        terse_sched_cost_t cost;
        terse__sched_cost_default(&cost, 2, 0.0);
        cost.nlevels         = 2;
        cost.level[1]        = cost.level[0];
        cost.level[0].nranks = 2;
        cost.level[1].nranks = 2;
        for (w = 0; w < TERSE_SCHED_WIRE_COUNT; ++w) {
            cost.level[0].alpha[w] = 1e-6;
            cost.level[0].bw[w]    = 10e9;
            cost.level[1].alpha[w] = 1e-6;
            cost.level[1].bw[w]    = run->inter_bw;
        }
        terse__ctx_set_cost(ctx, &cost);
    }
    for (s = 0; s < run->steps; ++s) {
        terse_test_gaussian(300 + 10 * (uint64_t)rank + (uint64_t)s, x, HIER_TOTAL);
        if (terse_allreduce(ctx, x, y, HIER_TOTAL, TERSE_FLOAT32, TERSE_OP_SUM, TERSE_MEM_HOST,
                            NULL) != TERSE_OK) {
            run->status[rank] = TERSE_ERR_INTERNAL;
        }
        run->out[rank][s] = terse__hash64(y, HIER_TOTAL * sizeof(float), 9);
    }
    for (slot = ctx->slots; slot != NULL; slot = slot->next) {
        if (slot->key == TERSE_KEY_REG) {
            run->plan[rank] = slot->plan_sum;
            for (l = 0; l < (int)slot->nlayers; ++l) {
                run->ncmp[rank] += (slot->layers[l].cls != TERSE_CLASS_NATIVE);
            }
            CU_ASSERT(slot->hier != NULL);
        }
    }
    run->nlevels[rank]        = ctx->cost.nlevels;
    run->level_ranks[rank][0] = ctx->cost.level[0].nranks;
    run->level_ranks[rank][1] = ctx->cost.level[1].nranks;
    terse_ctx_destroy(ctx);
out:
    free(x);
    free(y);
}

/* The scheduler over the hierarchy: a slow modelled inter-node level makes the plan compress,
 * a fast one keeps every layer uncompressed; the calibration measures two levels; every rank
 * agrees on the plan and the outputs, step by step. */
static void
test_hier_auto(void)
{
    static const double bws[] = {1e6, 1e13, 0.0};
    int c, r, s;

    for (c = 0; c < 3; ++c) {
        hier_auto_t run;

        memset(&run, 0, sizeof(run));
        run.inter_bw = bws[c];
        run.steps    = 5;
        TERSE_TEST_OK(terse_loop_run(4, hier_auto_rank, &run));
        for (r = 0; r < 4; ++r) {
            TERSE_TEST_OK(run.status[r]);
            CU_ASSERT(run.plan[r] == run.plan[0]);
            CU_ASSERT(run.plan[r] != 0);
            CU_ASSERT(run.ncmp[r] == run.ncmp[0]);
            for (s = 0; s < run.steps; ++s) {
                CU_ASSERT(run.out[r][s] == run.out[0][s]);
            }
            CU_ASSERT_EQUAL(run.nlevels[r], 2);
            CU_ASSERT_EQUAL(run.level_ranks[r][0], 2);
            CU_ASSERT_EQUAL(run.level_ranks[r][1], 2);
        }
        if (c == 0) {
            CU_ASSERT(run.ncmp[0] == HIER_NLAYERS); /* 1 MB/s between nodes: compress all */
        } else if (c == 1) {
            CU_ASSERT(run.ncmp[0] == 0); /* 10 TB/s: compressing does not pay */
        }
        if (terse_test_verbose()) {
            printf("\n  inter bw %.0e: %zu of %d layers compressed", bws[c], run.ncmp[0],
                   HIER_NLAYERS);
        }
    }
}

CU_TestInfo test_hier_tests[] = {
    {"planner payload of a node's pieces", test_hier_payload_split},
    {"scheduler: two-level cost model, agreed plans", test_hier_auto},
    {"every family: exact-sum bound, bitwise identical", test_hier_every_family},
    {"uncompressed equals flat on exact sums", test_hier_equals_flat},
    {"non-finite input: the whole layer on every rank", test_hier_nonfinite},
    {"odd and tiny counts, AVG, 16-bit", test_hier_odd_counts},
    {"error feedback per owned piece", test_hier_feedback},
    {"uneven nodes and one level run flat", test_hier_uneven},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_hier_suites[] = {
    {"comm_hier_loop", NULL, NULL, NULL, NULL, test_hier_tests},
    CU_SUITE_INFO_NULL,
};
