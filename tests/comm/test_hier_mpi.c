/*
 * comm over MPI: the hierarchical allreduce on MPI_COMM_WORLD with simulated nodes of 2 ranks
 * (terse__hier_ctx_init with TERSE_TOPOLOGY 2 after terse_ctx_create; the sub-communicators
 * come from PMPI_Comm_split). With 4 ranks that is 2 nodes x 2; with 2 or 3 ranks (one node,
 * uneven nodes) every rank must run flat, alike. References are independent of terse: the
 * exact sum from every rank's (reproducible) input in double, bitwise identity from MIN and MAX
 * of a hash, and the flat algorithm on integer inputs (exact sums).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "terse_internal.h"
#include "terse_test.h"

static const size_t hm_counts[] = {100, 96 * 64, 5003, 40 * 33};
static const size_t hm_rows[]   = {0, 96, 0, 40};
static const size_t hm_cols[]   = {0, 64, 0, 33};
#define HM_NLAYERS 4
#define HM_TOTAL (100 + 96 * 64 + 5003 + 40 * 33)

static int
hm_registered(const char *spec)
{
    terse_cmp_spec_t s;

    return terse__cmp_spec_parse(spec, &s, NULL, 0) == TERSE_OK;
}

static void
hm_input(int rank, size_t n, int integers, float *x)
{
    size_t i;

    terse_test_gaussian(9100 + (uint64_t)rank, x, n);
    for (i = 0; integers && (i < n); ++i) {
        x[i] = (float)(int)(x[i] * 8.0f);
    }
}

/* 1 when every rank holds the same bytes. */
static int
hm_identical(const void *buf, size_t bytes)
{
    unsigned long long h = terse__hash64(buf, bytes, 3), lo = h, hi = h;

    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UNSIGNED_LONG_LONG, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    return (lo == h) && (hi == h);
}

/* A context on MPI_COMM_WORLD with nodes of 2 (hier) or none; the uniform plan `spec` on the
 * registered layout (count 0) or for unregistered buffers. */
static terse_ctx_t *
hm_ctx(const char *spec, int hier, size_t chunk, size_t count)
{
    static MPI_Comm world = MPI_COMM_WORLD;
    terse_ctx_params_t p  = TERSE_CTX_PARAMS_INIT;
    terse_ctx_t *ctx      = NULL;
    terse_plan_entry_t e[HM_NLAYERS];
    terse_cmp_spec_t sp;
    int l;

    p.transport = TERSE_TRANSPORT_MPI;
    p.comm      = &world;
    p.seed      = 11;
    TERSE_TEST_OK(terse_ctx_create(&p, &ctx));
    if (ctx == NULL) {
        return NULL;
    }
    TERSE_TEST_OK(terse__hier_ctx_init(ctx, hier ? "2" : "flat",
                                       hier ? TERSE_HIER_ON : TERSE_HIER_FLAT, chunk));
    if (count > 0) {
        TERSE_TEST_OK(terse__ctx_set_uniform(ctx, spec));
        return ctx;
    }
    terse__cmp_spec_parse(spec, &sp, NULL, 0);
    for (l = 0; l < HM_NLAYERS; ++l) {
        terse_layer_register(ctx, NULL, hm_counts[l], hm_rows[l], hm_cols[l], NULL);
        e[l].layer = l;
        snprintf(e[l].compressor, sizeof(e[l].compressor), "%s", sp.ops->name);
        e[l].param = sp.param;
    }
    TERSE_TEST_OK(terse_plan_set(ctx, e, HM_NLAYERS));
    return ctx;
}

/* 1 when this run must be hierarchical: 2 nodes of 2 ranks, or more pairs */
static int
hm_expect_hier(int p)
{
    return (p >= 4) && ((p % 2) == 0);
}

/* Compressed families: bitwise equal everywhere, within the bound of the reported errors,
 * hierarchical exactly when the topology allows it. */
static void
test_hier_mpi_families(void)
{
    static const char *const specs[] = {"quant:4", "topk:0.05", "powersgd:4", "cast:bf16",
                                        "none", NULL};
    int rank, p, k, r;

    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &p);
    for (k = 0; specs[k] != NULL; ++k) {
        float *x = malloc(HM_TOTAL * sizeof(float)), *y = malloc(HM_TOTAL * sizeof(float));
        double *exact = calloc(HM_TOTAL, sizeof(double)), err = 0.0, norm = 0.0, in = 0.0;
        double b[1];
        terse_ctx_t *ctx;
        terse_stats_t st;
        size_t i;

        if (!hm_registered(specs[k])) {
            free(x), free(y), free(exact);
            continue;
        }
        ctx = hm_ctx(specs[k], 1, 8192, 0);
        CU_ASSERT_FATAL(ctx != NULL);
        CU_ASSERT((ctx->hier != NULL) == hm_expect_hier(p));
        for (r = 0; r < p; ++r) {
            hm_input(r, HM_TOTAL, 0, x);
            for (i = 0; i < HM_TOTAL; ++i) {
                exact[i] += x[i];
            }
        }
        hm_input(rank, HM_TOTAL, 0, x);
        in = terse_test_sq_norm(x, HM_TOTAL);
        TERSE_TEST_OK(terse_allreduce(ctx, x, y, HM_TOTAL, TERSE_FLOAT32, TERSE_OP_SUM,
                                      TERSE_MEM_HOST, NULL));
        CU_ASSERT(hm_identical(y, HM_TOTAL * sizeof(float)));
        st.size = sizeof(st);
        terse_stats_get(ctx, &st);
        b[0] = st.last_rel_err * sqrt(in);
        MPI_Allreduce(MPI_IN_PLACE, b, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
        for (i = 0; i < HM_TOTAL; ++i) {
            err += (y[i] - exact[i]) * (y[i] - exact[i]);
            norm += exact[i] * exact[i];
        }
        CU_ASSERT(sqrt(err) <= 2.5 * b[0] + 1e-5 * sqrt(norm) * p);
        if (hm_expect_hier(p)) {
            CU_ASSERT(st.bytes_intra > 0);
            CU_ASSERT(st.bytes_inter > 0);
        } else {
            CU_ASSERT(st.bytes_intra == 0);
        }
        terse_ctx_destroy(ctx);
        free(x);
        free(y);
        free(exact);
    }
}

/* Uncompressed on integer inputs: hierarchical (pipelined) = flat = exact, in place too. */
static void
test_hier_mpi_equals_flat(void)
{
    float *x = malloc(HM_TOTAL * sizeof(float)), *yh = malloc(HM_TOTAL * sizeof(float));
    float *yf = malloc(HM_TOTAL * sizeof(float));
    terse_ctx_t *ch = hm_ctx("none", 1, 4096, 0), *cf = hm_ctx("none", 0, 0, 0);
    double *exact = calloc(HM_TOTAL, sizeof(double));
    int rank, p, r, s, same = 1;
    size_t i;

    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &p);
    for (r = 0; r < p; ++r) {
        hm_input(r, HM_TOTAL, 1, x);
        for (i = 0; i < HM_TOTAL; ++i) {
            exact[i] += x[i];
        }
    }
    for (s = 0; s < 2; ++s) {
        hm_input(rank, HM_TOTAL, 1, x);
        memcpy(yh, x, HM_TOTAL * sizeof(float));
        TERSE_TEST_OK(terse_allreduce(ch, yh, yh, HM_TOTAL, TERSE_FLOAT32, TERSE_OP_SUM,
                                      TERSE_MEM_HOST, NULL)); /* in place */
        TERSE_TEST_OK(terse_allreduce(cf, x, yf, HM_TOTAL, TERSE_FLOAT32, TERSE_OP_SUM,
                                      TERSE_MEM_HOST, NULL));
        CU_ASSERT(memcmp(yh, yf, HM_TOTAL * sizeof(float)) == 0);
        for (i = 0; i < HM_TOTAL; ++i) {
            same &= ((double)yh[i] == exact[i]);
        }
    }
    CU_ASSERT(same);
    terse_ctx_destroy(ch);
    terse_ctx_destroy(cf);
    free(x);
    free(yh);
    free(yf);
    free(exact);
}

/* A NaN on the last rank: layer 1 non-finite as a whole on every rank, the others finite. */
static void
test_hier_mpi_nonfinite(void)
{
    float *x = malloc(HM_TOTAL * sizeof(float)), *y = malloc(HM_TOTAL * sizeof(float));
    terse_ctx_t *ctx = hm_ctx("quant:4", 1, 8192, 0);
    int rank, p, l1_all = 1, others = 1;
    size_t i;

    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &p);
    hm_input(rank, HM_TOTAL, 0, x);
    if (rank == p - 1) {
        x[150] = NAN;
    }
    TERSE_TEST_OK(terse_allreduce(ctx, x, y, HM_TOTAL, TERSE_FLOAT32, TERSE_OP_SUM,
                                  TERSE_MEM_HOST, NULL));
    CU_ASSERT(hm_identical(y, HM_TOTAL * sizeof(float)));
    for (i = 0; i < HM_TOTAL; ++i) {
        if ((i >= 100) && (i < 100 + 96 * 64)) {
            l1_all &= !isfinite(y[i]);
        } else {
            others &= isfinite(y[i]);
        }
    }
    CU_ASSERT(l1_all);
    CU_ASSERT(others);
    terse_ctx_destroy(ctx);
    free(x);
    free(y);
}

/* Unregistered counts below the rank count and odd, AVG, bf16. */
static void
test_hier_mpi_odd_counts(void)
{
    static const size_t counts[] = {1, 3, 1001, 70001};
    static const char *const specs[] = {"none", "quant:4", "randomk:0.1", NULL};
    int rank, p, k, c, r;

    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &p);
    for (k = 0; specs[k] != NULL; ++k) {
        for (c = 0; c < 4; ++c) {
            const size_t n = counts[c];
            const terse_dtype_t dt = (c == 2) ? TERSE_BFLOAT16 : TERSE_FLOAT32;
            float *x = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
            uint16_t *h = malloc(n * sizeof(uint16_t));
            double *exact = calloc(n, sizeof(double)), err = 0.0, norm = 0.0;
            void *buf = (dt == TERSE_FLOAT32) ? (void *)x : (void *)h;
            terse_ctx_t *ctx;
            size_t i;

            if (!hm_registered(specs[k])) {
                free(x), free(v), free(h), free(exact);
                continue;
            }
            ctx = hm_ctx(specs[k], 1, 1024, n);
            for (r = 0; r < p; ++r) {
                hm_input(r, n, 0, v);
                for (i = 0; i < n; ++i) {
                    exact[i] += v[i] / p;
                }
            }
            hm_input(rank, n, 0, x);
            for (i = 0; i < n; ++i) {
                terse__store_f32(h, TERSE_BFLOAT16, i, x[i]);
            }
            TERSE_TEST_OK(terse_allreduce(ctx, buf, buf, n, dt, TERSE_OP_AVG, TERSE_MEM_HOST,
                                          NULL));
            CU_ASSERT(hm_identical(buf, n * terse_dtype_size(dt)));
            for (i = 0; i < n; ++i) {
                const double d = terse__load_f32(buf, dt, i) - exact[i];
                err += d * d;
                norm += exact[i] * exact[i];
            }
            CU_ASSERT(sqrt(err) <= 1.5 * sqrt(norm) + 1e-6);
            if (strcmp(specs[k], "none") == 0) {
                CU_ASSERT(sqrt(err) <= ((dt == TERSE_FLOAT32) ? 1e-6 : 1e-2) * sqrt(norm) + 1e-7);
            }
            terse_ctx_destroy(ctx);
            free(x);
            free(v);
            free(h);
            free(exact);
        }
    }
}

CU_TestInfo test_hier_mpi_tests[] = {
    {"families: bitwise identical, within the reported error", test_hier_mpi_families},
    {"uncompressed equals flat on exact sums", test_hier_mpi_equals_flat},
    {"non-finite input: the whole layer everywhere", test_hier_mpi_nonfinite},
    {"tiny and odd counts, AVG, bf16", test_hier_mpi_odd_counts},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_hier_mpi_suites[] = {
    {"comm_hier_mpi", NULL, NULL, NULL, NULL, test_hier_mpi_tests},
    CU_SUITE_INFO_NULL,
};
