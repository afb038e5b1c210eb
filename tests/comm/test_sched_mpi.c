/*
 * comm over MPI (the mpi runner, 2, 3 and 4 ranks): TERSE_COMPRESSOR=auto end to end on
 * MPI_COMM_WORLD with the cost model calibrated by real timed allreduces (reduced with MAX).
 * Timings differ between ranks and runs; the plans must not: every rank holds the same plan
 * checksum on every step, switches on the same step, and gets bitwise the same result.
 * References come from PMPI_Allgather, independent of terse.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mpi.h>

#include "terse_test.h"
#include "terse_internal.h"

#define SMPI_STEPS 12

static const size_t smpi_counts[] = {128 * 96, 20000, 64};
static const size_t smpi_rows[]   = {128, 0, 0};
static const size_t smpi_cols[]   = {96, 0, 0};
#define SMPI_NL 3
#define SMPI_TOTAL (128 * 96 + 20000 + 64)

/* 1 when every rank passed the same value. */
static int
smpi_same(uint64_t v)
{
    uint64_t h[2] = {v, ~v};

    PMPI_Allreduce(MPI_IN_PLACE, h, 2, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    return (h[0] == v) && (h[1] == ~v);
}

static const terse_slot_t *
smpi_reg_slot(const terse_ctx_t *ctx)
{
    const terse_slot_t *s;

    for (s = ctx->slots; s != NULL; s = s->next) {
        if (s->key == TERSE_KEY_REG) {
            return s;
        }
    }
    return NULL;
}

static void
smpi_run(int slow)
{
    static MPI_Comm world = MPI_COMM_WORLD;
    terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
    terse_ctx_t *ctx = NULL;
    float *x = malloc(SMPI_TOTAL * sizeof(float)), *y = malloc(SMPI_TOTAL * sizeof(float));
    uint64_t sums[SMPI_STEPS];
    int rank, s, l, switched = -1;

    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    params.transport = TERSE_TRANSPORT_MPI;
    params.comm      = &world;
    params.seed      = 3;
    TERSE_TEST_OK(terse_ctx_create(&params, &ctx));
    for (l = 0; l < SMPI_NL; ++l) {
        TERSE_TEST_OK(terse_layer_register(ctx, NULL, smpi_counts[l], smpi_rows[l],
                                           smpi_cols[l], NULL));
    }
    ctx->auto_reg     = 1;
    ctx->sched_warmup = 2;
    ctx->sched_replan = 4;
    if (slow) {
        /* a modelled slow link (the calibration is skipped): compression must pay */
        terse_sched_cost_t cost;
        terse__sched_cost_default(&cost, ctx->nranks, 1e6);
        terse__ctx_set_cost(ctx, &cost);
    }
    for (s = 0; s < SMPI_STEPS; ++s) {
        const terse_slot_t *slot;
        terse_test_lowrank(40 + (uint64_t)s, 128, 96, 3, 0.1f, x);
        terse_test_gaussian(7000 + 31 * (uint64_t)rank + (uint64_t)s, x + 128 * 96,
                            SMPI_TOTAL - 128 * 96);
        TERSE_TEST_OK(terse_allreduce(ctx, x, y, SMPI_TOTAL, TERSE_FLOAT32, TERSE_OP_AVG,
                                      TERSE_MEM_HOST, NULL));
        slot = smpi_reg_slot(ctx);
        CU_ASSERT_PTR_NOT_NULL_FATAL(slot);
        sums[s] = slot->plan_sum;
        CU_ASSERT(smpi_same(sums[s]));
        CU_ASSERT(smpi_same(terse__hash64(y, SMPI_TOTAL * sizeof(float), 1)));
        if ((switched < 0) && (sums[s] != 0)) {
            switched = s;
        }
    }
    /* the first plan is in force from step warmup on, on every rank */
    CU_ASSERT_EQUAL(switched, 2);
    CU_ASSERT(smpi_same((uint64_t)switched));
    if (slow) {
        terse_plan_entry_t e[SMPI_NL];
        size_t n;
        TERSE_TEST_OK(terse_plan_get(ctx, e, SMPI_NL, &n));
        CU_ASSERT(strcmp(e[0].compressor, "none") != 0);
        CU_ASSERT(strcmp(e[1].compressor, "none") != 0);
    }
    terse_ctx_destroy(ctx);
    free(x);
    free(y);
}

static void
test_smpi_calibrated(void)
{
    smpi_run(0);
}

static void
test_smpi_slow(void)
{
    smpi_run(1);
}

static CU_TestInfo test_sched_mpi_tests[] = {
    {"auto, calibrated cost: same plan on every rank", test_smpi_calibrated},
    {"auto, slow modelled link compresses", test_smpi_slow},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_sched_mpi_suites[] = {
    {"comm_sched_mpi", NULL, NULL, NULL, NULL, test_sched_mpi_tests},
    CU_SUITE_INFO_NULL,
};
