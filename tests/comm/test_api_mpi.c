/*
 * comm over MPI (the mpi runner, started with 2, 3 and 4 ranks): the C API end to end on
 * MPI_COMM_WORLD for every registered compressor. References are independent of terse: the
 * exact sum comes from PMPI_Allreduce in double, bitwise identity from an allgather of hashes.
 * Every rank runs every assertion; a failure on any rank fails the runner.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpi.h>

#include "terse_test.h"
#include "terse_internal.h"

int
terse_test_runner_init(int argc, char **argv)
{
    int provided;

    (void)argc;
    (void)argv;
    return (MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) == MPI_SUCCESS) ? 0
                                                                                          : 1;
}

void
terse_test_runner_finish(void)
{
    MPI_Finalize();
}

static const char *const api_specs[] = {"none", "quant:4", "quant:8", "sign", "cast:bf16",
                                        "topk:0.01", "randomk:0.1", "powersgd:4", NULL};

static int
api_spec_list(const char **out, int max)
{
    return terse_test_spec_list(api_specs, out, max);
}


static int
api_registered(const char *spec)
{
    terse_cmp_spec_t s;

    return terse__cmp_spec_parse(spec, &s, NULL, 0) == TERSE_OK;
}

static terse_ctx_t *
api_ctx(void)
{
    static MPI_Comm world = MPI_COMM_WORLD;
    terse_ctx_params_t p = TERSE_CTX_PARAMS_INIT;
    terse_ctx_t *ctx     = NULL;

    p.transport = TERSE_TRANSPORT_AUTO;
    p.comm      = &world;
    p.seed      = 7;
    TERSE_TEST_OK(terse_ctx_create(&p, &ctx));
    return ctx;
}

static void
api_input(int rank, int step, size_t n, float *x)
{
    terse_test_gaussian(5000 + 97 * (uint64_t)rank + (uint64_t)step, x, n);
}

/* 1 when every rank holds the same bytes. */
static int
api_identical(const void *buf, size_t bytes)
{
    uint64_t h[2];
    uint64_t mine = terse__hash64(buf, bytes, 1);

    h[0] = mine;
    h[1] = ~mine;
    PMPI_Allreduce(MPI_IN_PLACE, h, 2, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    return (h[0] == mine) && (h[1] == ~mine);
}

static double *
api_exact(const float *x, size_t n)
{
    double *e = malloc(TERSE_MAX(n, 1) * sizeof(double));
    size_t i;

    for (i = 0; i < n; ++i) {
        e[i] = x[i];
    }
    PMPI_Allreduce(MPI_IN_PLACE, e, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return e;
}

/* Every family: the sum within the bound the reported errors give, on every rank alike. */
static void
test_api_every_family(void)
{
    const char *specs_all[64];
    const size_t n = 3 * 65536 + 17;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    int rank, nranks, k;

    api_spec_list(specs_all, 63);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    for (k = 0; specs_all[k] != NULL; ++k) {
        terse_ctx_t *ctx;
        terse_stats_t st;
        double *exact, err = 0.0, norm = 0.0, mine[2], c;
        size_t i;

        if (!api_registered(specs_all[k])) {
            continue;
        }
        memset(&st, 0, sizeof(st));
        st.size = sizeof(st);
        ctx = api_ctx();
        TERSE_TEST_OK(terse__ctx_set_uniform(ctx, specs_all[k]));
        api_input(rank, 0, n, x);
        exact = api_exact(x, n);
        TERSE_TEST_OK(terse_allreduce(ctx, x, y, n, TERSE_FLOAT32, TERSE_OP_SUM, TERSE_MEM_HOST,
                                      NULL));
        TERSE_TEST_OK(terse_stats_get(ctx, &st));
        CU_ASSERT(api_identical(y, n * sizeof(float)));
        mine[0] = st.last_rel_err * sqrt(terse_test_sq_norm(x, n)); /* ||e_r|| */
        mine[1] = 0.0;
        PMPI_Allreduce(MPI_IN_PLACE, mine, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        for (i = 0; i < n; ++i) {
            double d = y[i] - exact[i];
            err += d * d;
            norm += exact[i] * exact[i];
        }
        err  = sqrt(err);
        norm = sqrt(norm);
        c    = ((strncmp(specs_all[k], "quant", 5) == 0) || (strcmp(specs_all[k], "sign") == 0) ||
             (strncmp(specs_all[k], "cast", 4) == 0))
                   ? 2.5
                   : 1.01;
        if (!(err <= c * mine[0] + 1e-5 * norm * nranks)) {
            fprintf(stderr, "rank %d %s: error %.4g above %.4g\n", rank, specs_all[k], err,
                    c * mine[0]);
        }
        CU_ASSERT(err <= c * mine[0] + 1e-5 * norm * nranks);
        if (strcmp(specs_all[k], "none") != 0) {
            CU_ASSERT(err > 0.0);                 /* it did compress */
            CU_ASSERT(st.bytes_sent < st.bytes_plain);
        }
        if ((rank == 0) && terse_test_verbose()) {
            printf("\n  %-12s p %d relerr %.3e ratio %.2f", specs_all[k], nranks, err / norm,
                   (double)st.bytes_plain / (double)TERSE_MAX(st.bytes_sent, 1));
        }
        free(exact);
        terse_ctx_destroy(ctx);
    }
    free(x);
    free(y);
}

/* Registered layers, error feedback over steps: the running sum converges; AVG, in place. */
static void
test_api_feedback(void)
{
    const size_t rows = 256, cols = 192, bias = 300, n = rows * cols + bias;
    float *x = malloc(n * sizeof(float));
    double *run = calloc(n, sizeof(double)), *ex_run = calloc(n, sizeof(double));
    int rank, nranks, s, k;
    static const char *const specs[] = {"quant:4", "powersgd:4", "topk:0.01", NULL};

    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    for (k = 0; specs[k] != NULL; ++k) {
        terse_ctx_t *ctx;
        terse_plan_entry_t plan[2];
        terse_cmp_spec_t sp;
        double e1 = 0.0, eT = 0.0, norm1 = 0.0, normT = 0.0;
        size_t i, nplan = 0;

        if (!api_registered(specs[k])) {
            continue;
        }
        memset(run, 0, n * sizeof(double));
        memset(ex_run, 0, n * sizeof(double));
        ctx = api_ctx();
        TERSE_TEST_OK(terse_layer_register(ctx, "w", rows * cols, rows, cols, NULL));
        TERSE_TEST_OK(terse_layer_register(ctx, "b", bias, 0, 0, NULL));
        terse__cmp_spec_parse(specs[k], &sp, NULL, 0);
        for (i = 0; i < 2; ++i) {
            plan[i].layer = (int)i;
            snprintf(plan[i].compressor, sizeof(plan[i].compressor), "%s", sp.ops->name);
            plan[i].param = sp.param;
        }
        TERSE_TEST_OK(terse_plan_set(ctx, plan, 2));
        for (s = 0; s < 12; ++s) {
            double *exact;
            api_input(rank, 0, n, x); /* the same gradient every step */
            exact = api_exact(x, n);
            TERSE_TEST_OK(terse_allreduce(ctx, x, x, n, TERSE_FLOAT32, TERSE_OP_AVG,
                                          TERSE_MEM_HOST, NULL));
            CU_ASSERT(api_identical(x, n * sizeof(float)));
            for (i = 0; i < n; ++i) {
                double d;
                run[i] += x[i];
                ex_run[i] += exact[i] / nranks;
                if (s == 0) {
                    d = x[i] - exact[i] / nranks;
                    e1 += d * d;
                    norm1 += ex_run[i] * ex_run[i];
                }
            }
            free(exact);
        }
        for (i = 0; i < n; ++i) {
            double d = run[i] - ex_run[i];
            eT += d * d;
            normT += ex_run[i] * ex_run[i];
        }
        e1 = sqrt(e1 / norm1);
        eT = sqrt(eT / normT);
        if ((rank == 0) && terse_test_verbose()) {
            printf("\n  %-12s p %d one step %.3e running sum of 12 %.3e", specs[k], nranks, e1,
                   eT);
        }
        /* without feedback the running mean keeps one step's error; quant's error is
         * unbiased noise that feedback cancels fast; top-k and PowerSGD send a few
         * coordinates / directions a step, so on full-rank gaussian data their residual
         * drains more slowly */
        CU_ASSERT(eT < ((strncmp(specs[k], "quant", 5) == 0) ? 0.2 : 0.9) * e1);
        CU_ASSERT(terse_plan_get(ctx, plan, 2, &nplan) == TERSE_OK);
        CU_ASSERT(nplan == 2);
        terse_ctx_destroy(ctx);
    }
    free(x);
    free(run);
    free(ex_run);
}

/* NaN on the last rank: the layer is non-finite everywhere, the other layer finite. */
static void
test_api_nonfinite(void)
{
    const char *specs_all[64];
    const size_t n1 = 4096, n2 = 70000, n = n1 + n2;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    int rank, nranks, k;

    api_spec_list(specs_all, 63);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    for (k = 0; specs_all[k] != NULL; ++k) {
        terse_ctx_t *ctx;
        terse_stats_t st;
        size_t i;
        int nan2 = 0, fin1 = 1;

        if (!api_registered(specs_all[k])) {
            continue;
        }
        memset(&st, 0, sizeof(st));
        st.size = sizeof(st);
        ctx = api_ctx();
        TERSE_TEST_OK(terse_layer_register(ctx, NULL, n1, 0, 0, NULL));
        TERSE_TEST_OK(terse_layer_register(ctx, NULL, n2, 350, 200, NULL));
        {
            terse_plan_entry_t plan[2];
            terse_cmp_spec_t sp;
            terse__cmp_spec_parse(specs_all[k], &sp, NULL, 0);
            for (i = 0; i < 2; ++i) {
                plan[i].layer = (int)i;
                snprintf(plan[i].compressor, sizeof(plan[i].compressor), "%s", sp.ops->name);
                plan[i].param = sp.param;
            }
            TERSE_TEST_OK(terse_plan_set(ctx, plan, 2));
        }
        api_input(rank, 1, n, x);
        if (rank == nranks - 1) {
            x[n1 + 12345] = INFINITY;
        }
        TERSE_TEST_OK(terse_allreduce(ctx, x, y, n, TERSE_FLOAT32, TERSE_OP_SUM, TERSE_MEM_HOST,
                                      NULL));
        CU_ASSERT(api_identical(y, n * sizeof(float)));
        for (i = 0; i < n; ++i) {
            if ((i < n1) && !isfinite(y[i])) {
                fin1 = 0;
            }
            if ((i >= n1) && !isfinite(y[i])) {
                nan2 = 1;
            }
        }
        CU_ASSERT(fin1);
        CU_ASSERT(nan2);
        if (strcmp(specs_all[k], "none") != 0) {
            TERSE_TEST_OK(terse_stats_get(ctx, &st));
            CU_ASSERT(st.nonfinite_steps == 1);
        }
        terse_ctx_destroy(ctx);
    }
    free(x);
    free(y);
}

/* Counts 0, 1, fewer than the ranks, odd; 16-bit inputs with AVG. */
static void
test_api_counts_dtypes(void)
{
    const char *specs_all[64];
    static const size_t counts[] = {0, 1, 2, 3, 1001, 65537};
    float *x = malloc(65537 * sizeof(float)), *y = malloc(65537 * sizeof(float));
    uint16_t *h = malloc(65537 * sizeof(uint16_t)), *hy = malloc(65537 * sizeof(uint16_t));
    int rank, nranks, c, k, d;

    api_spec_list(specs_all, 63);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    for (k = 0; specs_all[k] != NULL; ++k) {
        terse_ctx_t *ctx;
        if (!api_registered(specs_all[k])) {
            continue;
        }
        ctx = api_ctx();
        TERSE_TEST_OK(terse__ctx_set_uniform(ctx, specs_all[k]));
        for (c = 0; c < 6; ++c) {
            size_t n = counts[c], i;
            double *exact;
            double err = 0.0, norm = 0.0;
            api_input(rank, 2, n, x);
            exact = api_exact(x, n);
            TERSE_TEST_OK(terse_allreduce(ctx, x, y, n, TERSE_FLOAT32, TERSE_OP_AVG,
                                          TERSE_MEM_HOST, NULL));
            CU_ASSERT(api_identical(y, n * sizeof(float)));
            for (i = 0; i < n; ++i) {
                double e = exact[i] / nranks, dd = y[i] - e;
                err += dd * dd;
                norm += e * e;
            }
            CU_ASSERT(sqrt(err) <= 1.5 * sqrt(norm) + 1e-6);
            for (d = 0; d < 2; ++d) {
                terse_dtype_t dt = d ? TERSE_BFLOAT16 : TERSE_FLOAT16;
                terse__convert_from_f32(x, 1.0f, h, dt, n);
                TERSE_TEST_OK(terse_allreduce(ctx, h, hy, n, dt, TERSE_OP_AVG, TERSE_MEM_HOST,
                                              NULL));
                CU_ASSERT(api_identical(hy, n * sizeof(uint16_t)));
            }
            free(exact);
        }
        terse_ctx_destroy(ctx);
    }
    free(x);
    free(y);
    free(h);
    free(hy);
}

/* Ranks that pass different plans: every rank gets TERSE_ERR_MISMATCH and the exact sum. */
static void
test_api_plan_mismatch(void)
{
    const size_t n = 20000;
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    terse_plan_entry_t e = {0, "quant", 4.0};
    terse_ctx_t *ctx;
    double *exact, err = 0.0;
    int rank;
    size_t i;

    if (!api_registered("quant:4")) {
        free(x);
        free(y);
        return;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    ctx = api_ctx();
    TERSE_TEST_OK(terse_layer_register(ctx, NULL, n, 0, 0, NULL));
    if (rank == 0) {
        e.param = 8.0;
    }
    TERSE_TEST_OK(terse_plan_set(ctx, &e, 1));
    api_input(rank, 3, n, x);
    exact = api_exact(x, n);
    TERSE_TEST_STATUS(terse_allreduce(ctx, x, y, n, TERSE_FLOAT32, TERSE_OP_SUM, TERSE_MEM_HOST,
                                      NULL),
                      TERSE_ERR_MISMATCH);
    for (i = 0; i < n; ++i) {
        err = TERSE_MAX(err, fabs(y[i] - exact[i]));
    }
    CU_ASSERT(err < 1e-4);
    /* a collective fix: everyone sets the same plan, and compression resumes */
    e.param = 4.0;
    TERSE_TEST_OK(terse_plan_set(ctx, &e, 1));
    TERSE_TEST_OK(terse_allreduce(ctx, x, y, n, TERSE_FLOAT32, TERSE_OP_SUM, TERSE_MEM_HOST,
                                  NULL));
    CU_ASSERT(api_identical(y, n * sizeof(float)));
    free(exact);
    terse_ctx_destroy(ctx);
    free(x);
    free(y);
}

/* State: a run saved after 3 steps and restored into a fresh context continues bitwise like
 * the uninterrupted one; a file from another layout is refused. */
static void
test_api_state(void)
{
    const size_t n = 30000;
    float *x = malloc(n * sizeof(float)), *a = malloc(n * sizeof(float)),
          *b = malloc(n * sizeof(float));
    char path[256];
    terse_ctx_t *ctx, *ctx2;
    int rank, s;

    if (!api_registered("quant:4")) {
        goto out;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    snprintf(path, sizeof(path), "/tmp/terse_state_%d_%%r.bin", (int)getppid());
    ctx = api_ctx();
    TERSE_TEST_OK(terse__ctx_set_uniform(ctx, "quant:4"));
    TERSE_TEST_OK(terse_layer_register(ctx, NULL, n, 0, 0, NULL));
    {
        terse_plan_entry_t e = {0, "quant", 4.0};
        TERSE_TEST_OK(terse_plan_set(ctx, &e, 1));
    }
    for (s = 0; s < 3; ++s) {
        api_input(rank, s, n, x);
        TERSE_TEST_OK(terse_allreduce(ctx, x, a, n, TERSE_FLOAT32, TERSE_OP_SUM, TERSE_MEM_HOST,
                                      NULL));
    }
    TERSE_TEST_OK(terse_state_save(ctx, path));
    api_input(rank, 3, n, x);
    TERSE_TEST_OK(terse_allreduce(ctx, x, a, n, TERSE_FLOAT32, TERSE_OP_SUM, TERSE_MEM_HOST,
                                  NULL));

    ctx2 = api_ctx();
    TERSE_TEST_OK(terse_layer_register(ctx2, NULL, n, 0, 0, NULL));
    TERSE_TEST_OK(terse_state_load(ctx2, path));
    TERSE_TEST_OK(terse_allreduce(ctx2, x, b, n, TERSE_FLOAT32, TERSE_OP_SUM, TERSE_MEM_HOST,
                                  NULL));
    CU_ASSERT(memcmp(a, b, n * sizeof(float)) == 0);
    terse_ctx_destroy(ctx2);

    ctx2 = api_ctx();
    TERSE_TEST_OK(terse_layer_register(ctx2, NULL, n + 1, 0, 0, NULL));
    TERSE_TEST_STATUS(terse_state_load(ctx2, path), TERSE_ERR_MISMATCH);
    terse_ctx_destroy(ctx2);
    terse_ctx_destroy(ctx);
    {
        char file[256];
        terse__path_expand(path, rank, file, sizeof(file));
        unlink(file);
    }
out:
    free(x);
    free(a);
    free(b);
}

CU_TestInfo test_api_mpi_tests[] = {
    {"every family against the exact sum", test_api_every_family},
    {"error feedback over steps, registered layers", test_api_feedback},
    {"non-finite input on one rank", test_api_nonfinite},
    {"counts 0, 1, < ranks, odd; fp16/bf16 AVG", test_api_counts_dtypes},
    {"plan mismatch passes through exactly", test_api_plan_mismatch},
    {"state save and load", test_api_state},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_api_mpi_suites[] = {
    {"comm_api_mpi", NULL, NULL, NULL, NULL, test_api_mpi_tests},
    CU_SUITE_INFO_NULL,
};
