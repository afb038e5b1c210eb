/*
 * comm: the wire algorithms and the C API over the loop transport (ranks as threads), for
 * every registered compressor family. Checked against independent references: the exact sum
 * (in double, from every rank's input), bitwise identity across ranks, the error bound that
 * follows from the errors the compressors report, error-feedback convergence, non-finite
 * propagation, and odd sizes.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "terse_internal.h"

#define ALGO_MAXP 4

/* Specs tried; families not registered in this build are skipped. */
static const char *const algo_specs[] = {"none",      "quant:4",     "quant:8",   "quant:2",
                                         "sign",      "cast:bf16",   "cast:fp16", "topk:0.01",
                                         "topk:0.2",  "randomk:0.1", "powersgd:4", NULL};

static int
algo_spec_list(const char **out, int max)
{
    return terse_test_spec_list(algo_specs, out, max);
}


/* Layers: a bias, a matrix, an odd flat vector. */
static const size_t algo_counts[] = {100, 96 * 64, 5003};
static const size_t algo_rows[]   = {0, 96, 0};
static const size_t algo_cols[]   = {0, 64, 0};
#define ALGO_NLAYERS 3
#define ALGO_TOTAL (100 + 96 * 64 + 5003)

typedef struct algo_run {
    const char *spec;
    int         steps;           /* allreduce calls with the same input */
    int         nan_rank;        /* rank that puts a NaN into layer 1 (-1: none) */
    size_t      count;           /* 0: the registered layout; else an unregistered count */
    int         unregistered;
    terse_op_t  op;
    /* results, per rank */
    float      *out[ALGO_MAXP];      /* last output */
    double     *run_sum[ALGO_MAXP];  /* sum of outputs over the steps */
    double      rel_err[ALGO_MAXP];  /* stats.last_rel_err after step 0 */
    double      in_norm[ALGO_MAXP];
    terse_status_t status[ALGO_MAXP];
    terse_stats_t  stats[ALGO_MAXP];
    size_t      mem[ALGO_MAXP];
} algo_run_t;

static void
algo_input(int rank, size_t n, float *x)
{
    terse_test_gaussian(1000 + (uint64_t)rank, x, n);
}

static void
algo_rank(void *ep, int rank, int nranks, void *arg)
{
    algo_run_t *run = arg;
    terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
    terse_ctx_t *ctx = NULL;
    size_t n = run->unregistered ? run->count : ALGO_TOTAL;
    float *x, *y;
    int l, s;
    size_t i;

    (void)nranks;
    params.transport = TERSE_TRANSPORT_LOOP;
    params.comm      = ep;
    params.seed      = 42;
    x = malloc(TERSE_MAX(n, 1) * sizeof(float));
    y = malloc(TERSE_MAX(n, 1) * sizeof(float));
    run->out[rank]     = calloc(TERSE_MAX(n, 1), sizeof(float));
    run->run_sum[rank] = calloc(TERSE_MAX(n, 1), sizeof(double));
    run->status[rank]  = terse_ctx_create(&params, &ctx);
    if (run->status[rank] != TERSE_OK) {
        return; /* every rank fails alike: nobody waits */
    }
    if (run->unregistered) {
        run->status[rank] = terse__ctx_set_uniform(ctx, run->spec);
    } else {
        for (l = 0; l < ALGO_NLAYERS; ++l) {
            terse_layer_register(ctx, NULL, algo_counts[l], algo_rows[l], algo_cols[l], NULL);
        }
        if (strcmp(run->spec, "default") != 0) {
            terse_plan_entry_t e[ALGO_NLAYERS];
            terse_cmp_spec_t sp;
            terse__cmp_spec_parse(run->spec, &sp, NULL, 0);
            for (l = 0; l < ALGO_NLAYERS; ++l) {
                e[l].layer = l;
                snprintf(e[l].compressor, sizeof(e[l].compressor), "%s", sp.ops->name);
                e[l].param = sp.param;
            }
            run->status[rank] = terse_plan_set(ctx, e, ALGO_NLAYERS);
        }
    }
    algo_input(rank, n, x);
    if ((run->nan_rank == rank) && (n > 200)) {
        x[150] = NAN; /* layer 1 */
    }
    for (i = 0; i < n; ++i) {
        run->in_norm[rank] += (double)x[i] * x[i];
    }
    for (s = 0; s < run->steps; ++s) {
        terse_status_t st = terse_allreduce(ctx, x, (s & 1) ? x : y, n, TERSE_FLOAT32, run->op,
                                            TERSE_MEM_HOST, NULL);
        float *o = (s & 1) ? x : y;
        if (st != TERSE_OK) {
            run->status[rank] = st;
        }
        for (i = 0; i < n; ++i) {
            run->run_sum[rank][i] += o[i];
        }
        memcpy(run->out[rank], o, n * sizeof(float));
        if (s & 1) {
            algo_input(rank, n, x); /* in place: restore the input */
            if ((run->nan_rank == rank) && (n > 200)) {
                x[150] = NAN;
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
    terse_ctx_destroy(ctx);
    free(x);
    free(y);
}

static void
algo_run_free(algo_run_t *run, int p)
{
    int r;

    for (r = 0; r < p; ++r) {
        free(run->out[r]);
        free(run->run_sum[r]);
    }
}

/* Exact sum in double of every rank's input. */
static double *
algo_exact(int p, size_t n)
{
    double *e = calloc(TERSE_MAX(n, 1), sizeof(double));
    float *x  = malloc(TERSE_MAX(n, 1) * sizeof(float));
    size_t i;
    int r;

    for (r = 0; r < p; ++r) {
        algo_input(r, n, x);
        for (i = 0; i < n; ++i) {
            e[i] += x[i];
        }
    }
    free(x);
    return e;
}

static int
algo_registered(const char *spec)
{
    terse_cmp_spec_t s;

    return terse__cmp_spec_parse(spec, &s, NULL, 0) == TERSE_OK;
}

/* One step: bitwise identical on every rank, within the bound that the reported errors give. */
static void
test_algo_every_family(void)
{
    const char *specs_all[64];
    int p, k, r, tested = 0;

    algo_spec_list(specs_all, 63);
    for (k = 0; specs_all[k] != NULL; ++k) {
        if (!algo_registered(specs_all[k])) {
            continue;
        }
        for (p = 1; p <= ALGO_MAXP; ++p) {
            algo_run_t run;
            double *exact, err = 0.0, norm = 0.0, bound = 0.0, c;
            size_t i;

            memset(&run, 0, sizeof(run));
            run.spec     = specs_all[k];
            run.steps    = 1;
            run.nan_rank = -1;
            run.op       = TERSE_OP_SUM;
            TERSE_TEST_OK(terse_loop_run(p, algo_rank, &run));
            exact = algo_exact(p, ALGO_TOTAL);
            for (r = 0; r < p; ++r) {
                TERSE_TEST_OK(run.status[r]);
                CU_ASSERT(memcmp(run.out[r], run.out[0], ALGO_TOTAL * sizeof(float)) == 0);
                bound += run.rel_err[r] * sqrt(run.in_norm[r]);
            }
            for (i = 0; i < ALGO_TOTAL; ++i) {
                double d = run.out[0][i] - exact[i];
                err += d * d;
                norm += exact[i] * exact[i];
            }
            err  = sqrt(err);
            norm = sqrt(norm);
            /* summable and sparse sums are exact sums of the compressed inputs: the triangle
             * inequality bounds the error; requantisation adds the owner's error (<= the
             * same order again) */
            c = ((strncmp(specs_all[k], "quant", 5) == 0) || (strcmp(specs_all[k], "sign") == 0) ||
                 (strncmp(specs_all[k], "cast", 4) == 0))
                    ? 2.5 /* requantisation, or the 16-bit rounding of the summed payload */
                    : 1.01;
            if (!(err <= c * bound + 1e-5 * norm * p)) {
                fprintf(stderr, "%s p %d: error %.4g above bound %.4g (norm %.4g)\n",
                        specs_all[k], p, err, c * bound, norm);
            }
            CU_ASSERT(err <= c * bound + 1e-5 * norm * p);
            if (strcmp(specs_all[k], "none") == 0) {
                CU_ASSERT(run.stats[0].passthrough == 1);
            } else if (p > 1) {
                CU_ASSERT(run.stats[0].steps == 1);
                CU_ASSERT(run.stats[0].mem_bytes > 0);
                CU_ASSERT(run.stats[0].bytes_sent > 0);
            }
            if (terse_test_verbose()) {
                printf("\n  %-12s p %d relerr %.3e bound %.3e sent %llu plain %llu", specs_all[k],
                       p, err / norm, c * bound / norm,
                       (unsigned long long)run.stats[0].bytes_sent,
                       (unsigned long long)run.stats[0].bytes_plain);
            }
            ++tested;
            free(exact);
            algo_run_free(&run, p);
        }
    }
    CU_ASSERT(tested >= 4);
}

/* Error feedback: with a constant input, the mean of T outputs approaches the exact sum much
 * faster than one step's error (the residual keeps what was lost). */
static void
test_algo_feedback_converges(void)
{
    static const char *const lossy[] = {"quant:2", "sign", "topk:0.1", "powersgd:4",
                                        "randomk:0.25", NULL};
    const int p = 3, T = 24;
    int k, r;

    for (k = 0; lossy[k] != NULL; ++k) {
        algo_run_t run;
        double *exact, e1 = 0.0, eT = 0.0, norm = 0.0;
        size_t i;

        if (!algo_registered(lossy[k])) {
            continue;
        }
        memset(&run, 0, sizeof(run));
        run.spec     = lossy[k];
        run.steps    = T;
        run.nan_rank = -1;
        run.op       = TERSE_OP_SUM;
        TERSE_TEST_OK(terse_loop_run(p, algo_rank, &run));
        exact = algo_exact(p, ALGO_TOTAL);
        for (r = 0; r < p; ++r) {
            TERSE_TEST_OK(run.status[r]);
            CU_ASSERT(memcmp(run.run_sum[r], run.run_sum[0], ALGO_TOTAL * sizeof(double)) == 0);
        }
        for (i = 0; i < ALGO_TOTAL; ++i) {
            double d = run.run_sum[0][i] / T - exact[i];
            eT += d * d;
            norm += exact[i] * exact[i];
        }
        e1 = run.rel_err[0];
        eT = sqrt(eT / norm);
        if (terse_test_verbose()) {
            printf("\n  %-12s one step %.3e mean of %d %.3e", lossy[k], e1, T, eT);
        }
        /* without feedback the mean of T equal steps keeps the bias; with it the error of the
         * mean shrinks like 1/T */
        CU_ASSERT(eT < 0.35 * e1 + 1e-6);
        free(exact);
        algo_run_free(&run, p);
    }
}

/* A NaN on one rank makes its layer non-finite on every rank; the other layers stay finite. */
static void
test_algo_nonfinite(void)
{
    const char *specs_all[64];
    int k, r, p;

    algo_spec_list(specs_all, 63);
    for (k = 0; specs_all[k] != NULL; ++k) {
        if (!algo_registered(specs_all[k])) {
            continue;
        }
        for (p = 2; p <= 3; ++p) {
            algo_run_t run;
            size_t i;
            int layer1_nan = 0, others_finite = 1;

            memset(&run, 0, sizeof(run));
            run.spec     = specs_all[k];
            run.steps    = 2;
            run.nan_rank = p - 1;
            run.op       = TERSE_OP_SUM;
            TERSE_TEST_OK(terse_loop_run(p, algo_rank, &run));
            for (r = 0; r < p; ++r) {
                CU_ASSERT(memcmp(run.out[r], run.out[0], ALGO_TOTAL * sizeof(float)) == 0);
            }
            for (i = 0; i < ALGO_TOTAL; ++i) {
                int in1 = (i >= 100) && (i < 100 + 96 * 64);
                if (in1 && !isfinite(run.out[0][i])) {
                    layer1_nan = 1;
                }
                if (!in1 && !isfinite(run.out[0][i])) {
                    others_finite = 0;
                }
            }
            if (!layer1_nan || !others_finite) {
                fprintf(stderr, "%s p %d: layer1 nan %d others finite %d\n", specs_all[k], p,
                        layer1_nan, others_finite);
            }
            CU_ASSERT(layer1_nan);
            CU_ASSERT(others_finite);
            algo_run_free(&run, p);
        }
    }
}

/* Unregistered counts: 0, 1, fewer than the ranks, odd; AVG. */
static void
test_algo_odd_counts(void)
{
    static const size_t counts[] = {0, 1, 3, 1001, 70001};
    static const char *const specs[] = {"none", "quant:4", "topk:0.01", "randomk:0.1",
                                        "cast:bf16", "sign", NULL};
    int k, c, r;
    const int p = 4;

    for (k = 0; specs[k] != NULL; ++k) {
        if (!algo_registered(specs[k])) {
            continue;
        }
        for (c = 0; c < 5; ++c) {
            algo_run_t run;
            double *exact, err = 0.0, norm = 0.0;
            size_t i, n = counts[c];

            memset(&run, 0, sizeof(run));
            run.spec         = specs[k];
            run.steps        = 1;
            run.nan_rank     = -1;
            run.unregistered = 1;
            run.count        = n;
            run.op           = TERSE_OP_AVG;
            TERSE_TEST_OK(terse_loop_run(p, algo_rank, &run));
            exact = algo_exact(p, n);
            for (r = 0; r < p; ++r) {
                TERSE_TEST_OK(run.status[r]);
                CU_ASSERT(memcmp(run.out[r], run.out[0], n * sizeof(float)) == 0);
            }
            for (i = 0; i < n; ++i) {
                double d = run.out[0][i] - exact[i] / p;
                err += d * d;
                norm += (exact[i] / p) * (exact[i] / p);
            }
            if (n > 0) {
                /* every family keeps the average of gaussian inputs within its scale */
                CU_ASSERT(sqrt(err) <= 1.5 * sqrt(norm) + 1e-6);
            }
            if (strcmp(specs[k], "none") == 0) {
                CU_ASSERT(sqrt(err) <= 1e-6 * sqrt(norm) + 1e-7);
            }
            free(exact);
            algo_run_free(&run, p);
        }
    }
}

CU_TestInfo test_algo_tests[] = {
    {"every family: exact-sum bound, bitwise identical", test_algo_every_family},
    {"error feedback converges", test_algo_feedback_converges},
    {"non-finite input reaches every rank", test_algo_nonfinite},
    {"odd and tiny counts, AVG", test_algo_odd_counts},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_algo_suites[] = {
    {"comm_algo_loop", NULL, NULL, NULL, NULL, test_algo_tests},
    CU_SUITE_INFO_NULL,
};
