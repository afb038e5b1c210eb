/*
 * comm: the MPI transport's operations on MPI_COMM_WORLD (mpi runner, 2-4 ranks), against
 * closed-form expectations: sums of rank-dependent small integers (exact in every format),
 * MAX of unsigned words, allgather order, point-to-point with a wrong length.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "terse_test.h"
#include "terse_internal.h"

static terse_transport_t *
tp_world(void)
{
    static MPI_Comm world = MPI_COMM_WORLD;
    terse_transport_t *tp = NULL;
    int usable            = 0;

    TERSE_TEST_OK(terse_transport_mpi_ops.query(&world, &usable));
    CU_ASSERT(usable);
    TERSE_TEST_OK(terse_transport_mpi_ops.init(&world, &tp));
    return tp;
}

static void
test_tp_allreduce(void)
{
    terse_transport_t *tp = tp_world();
    const size_t n = 1000;
    float f[1000];
    double d[1000];
    uint16_t h[1000], b[1000];
    uint64_t u[2];
    int p, r, k;
    size_t i;

    if (tp == NULL) {
        return;
    }
    p = tp->nranks;
    r = tp->rank;
    for (i = 0; i < n; ++i) {
        f[i] = (float)(r + (int)(i % 7));
        d[i] = (double)(r * 1000 + (int)i);
        h[i] = terse__float_to_half((float)(r + (int)(i % 5)));
        b[i] = terse_float_to_bf16((float)(r + (int)(i % 3)));
    }
    TERSE_TEST_OK(terse__tp_allreduce(tp, f, f, n, TERSE_TP_SUM_F32));
    TERSE_TEST_OK(terse__tp_allreduce(tp, d, d, n, TERSE_TP_SUM_F64));
    TERSE_TEST_OK(terse__tp_allreduce(tp, h, h, n, TERSE_TP_SUM_F16));
    TERSE_TEST_OK(terse__tp_allreduce(tp, b, b, n, TERSE_TP_SUM_BF16));
    for (i = 0, k = 0; i < n; ++i) {
        double base = p * (p - 1) / 2.0;
        k += (f[i] != (float)(base + p * (double)(i % 7)));
        k += (d[i] != 1000.0 * base + p * (double)i);
        k += (terse__half_to_float(h[i]) != (float)(base + p * (double)(i % 5)));
        k += (terse_bf16_to_float(b[i]) != (float)(base + p * (double)(i % 3)));
    }
    CU_ASSERT_EQUAL(k, 0);
    u[0] = (uint64_t)r << 40;
    u[1] = ~((uint64_t)r << 40);
    TERSE_TEST_OK(terse__tp_allreduce(tp, u, u, 2, TERSE_TP_MAX_U64));
    CU_ASSERT(u[0] == ((uint64_t)(p - 1) << 40));
    CU_ASSERT(u[1] == ~(uint64_t)0);
    CU_ASSERT(tp->bytes_sent > 0);
    tp->ops->finalize(tp);
}

static void
test_tp_allgather_p2p(void)
{
    terse_transport_t *tp = tp_world();
    int mine[3], *all, p, r, q, bad = 0;
    char sbuf[64], rbuf[64];
    terse_req_t req[2];

    if (tp == NULL) {
        return;
    }
    p = tp->nranks;
    r = tp->rank;
    mine[0] = r;
    mine[1] = r * r;
    mine[2] = -r;
    all = malloc(3 * sizeof(int) * (size_t)p);
    TERSE_TEST_OK(terse__tp_allgather(tp, mine, all, sizeof(mine)));
    for (q = 0; q < p; ++q) {
        bad += (all[3 * q] != q) || (all[3 * q + 1] != q * q) || (all[3 * q + 2] != -q);
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* ring: send 16 bytes to the right; the left neighbour's message arrives intact */
    memset(sbuf, r, sizeof(sbuf));
    TERSE_TEST_OK(terse__tp_irecv(tp, rbuf, 16, (r + p - 1) % p, 5, &req[0]));
    TERSE_TEST_OK(terse__tp_isend(tp, sbuf, 16, (r + 1) % p, 5, &req[1]));
    TERSE_TEST_OK(terse__tp_waitall(tp, req, 2));
    CU_ASSERT(rbuf[0] == (char)((r + p - 1) % p) && rbuf[15] == rbuf[0]);
    /* a shorter message than posted is reported, not silently accepted */
    TERSE_TEST_OK(terse__tp_irecv(tp, rbuf, 32, (r + p - 1) % p, 6, &req[0]));
    TERSE_TEST_OK(terse__tp_isend(tp, sbuf, 8, (r + 1) % p, 6, &req[1]));
    TERSE_TEST_STATUS(terse__tp_waitall(tp, req, 2), TERSE_ERR_PAYLOAD);
    TERSE_TEST_OK(tp->ops->barrier(tp));
    free(all);
    tp->ops->finalize(tp);
}

CU_TestInfo test_transport_mpi_tests[] = {
    {"allreduce: fp32, fp64, fp16, bf16 sums, u64 max", test_tp_allreduce},
    {"allgather order, point-to-point, length check", test_tp_allgather_p2p},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_transport_mpi_suites[] = {
    {"comm_transport_mpi", NULL, NULL, NULL, NULL, test_transport_mpi_tests},
    CU_SUITE_INFO_NULL,
};
