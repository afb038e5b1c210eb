/* comm/topology over MPI (mpirun runner): the hierarchy agrees with Open MPI's own view of
 * nodes (MPI_Comm_split_type SHARED), is identical on every rank, and a TERSE_TOPOLOGY that
 * differs between ranks fails on every rank. Run inside bench/cluster.sh, the auto grouping
 * must find the simulated hosts (network namespaces), as Open MPI does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "terse_test.h"
#include "terse_base.h"
#include "topology.h"

static terse_status_t
mpi_allgather(void *arg, const void *send, void *recv, size_t bytes)
{
    MPI_Comm comm = *(MPI_Comm *)arg;

    return (MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, comm) ==
            MPI_SUCCESS) ? TERSE_OK : TERSE_ERR_MPI;
}

static MPI_Comm world = MPI_COMM_NULL;

static void
topo_mpi_finalize(void)
{
    int done = 0;

    MPI_Finalized(&done);
    if (!done) {
        MPI_Finalize();
    }
}

/* The runner's terse_test_runner_init normally starts MPI; start it here if it did not. */
static int
topo_mpi_suite_init(void)
{
    int up = 0;

    MPI_Initialized(&up);
    if (!up) {
        if (MPI_Init(NULL, NULL) != MPI_SUCCESS) {
            return 1;
        }
        atexit(topo_mpi_finalize);
    }
    world = MPI_COMM_WORLD;
    return 0;
}

static terse_status_t
create(const char *spec, uint64_t key, terse_topo_t **topo_p)
{
    terse_topo_comm_t comm;

    MPI_Comm_rank(world, &comm.rank);
    MPI_Comm_size(world, &comm.nranks);
    comm.allgather = mpi_allgather;
    comm.arg       = &world;
    return terse_topo_create(&comm, spec, key, NULL, topo_p);
}

/* 1 on every rank when x is the same on every rank */
static int
same_everywhere(uint64_t x)
{
    uint64_t lo = x, hi = x;

    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, world);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, world);
    return lo == hi;
}

/* auto: the nodes are those of MPI_Comm_split_type, the arrays identical everywhere. */
static void
test_mpi_auto(void)
{
    terse_topo_t *t = NULL;
    MPI_Comm local;
    int rank, size, lrank, lsize, leader, *leaders, n, r, nnodes = 0, ok = 1;

    MPI_Comm_rank(world, &rank);
    MPI_Comm_size(world, &size);
    TERSE_TEST_OK(create("auto", 0, &t));
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);

    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &lrank);
    MPI_Comm_size(local, &lsize);
    leader = rank;
    MPI_Bcast(&leader, 1, MPI_INT, 0, local);
    MPI_Comm_free(&local);
    leaders = malloc((size_t)size * sizeof(*leaders));
    CU_ASSERT_FATAL(leaders != NULL);
    MPI_Allgather(&leader, 1, MPI_INT, leaders, 1, MPI_INT, world);

    CU_ASSERT_EQUAL(t->local_rank, lrank);
    CU_ASSERT_EQUAL(t->local_size, lsize);
    CU_ASSERT_EQUAL(t->leaders[t->node], leader);
    for (r = 0; r < size; ++r) {
        nnodes += (leaders[r] == r);
        ok &= (t->leaders[t->node_of[r]] == leaders[r]);
    }
    CU_ASSERT(ok);
    CU_ASSERT_EQUAL(t->nnodes, nnodes);
    CU_ASSERT(same_everywhere(t->digest));
    for (n = 0, ok = 1; n < t->nnodes; ++n) {
        ok &= same_everywhere((uint64_t)t->leaders[n]);
    }
    CU_ASSERT(ok);
    if (rank == 0) {
        printf("\n    topology auto: %d ranks on %d nodes (Open MPI sees %d)\n", size, t->nnodes,
               nnodes);
    }
    if (terse_test_verbose()) {
        int saved = terse__log_level;

        terse__log_level = TERSE_LOG_LEVEL_INFO;
        terse_topo_log(t);
        terse__log_level = saved;
    }
    terse_topo_destroy(t);
    free(leaders);
}

/* N ranks per node and a caller-given key override the host. */
static void
test_mpi_block_and_key(void)
{
    terse_topo_t *t = NULL;
    int rank, size;

    MPI_Comm_rank(world, &rank);
    MPI_Comm_size(world, &size);
    TERSE_TEST_OK(create("2", 0, &t));
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(t->nnodes, (size + 1) / 2);
    CU_ASSERT_EQUAL(t->node, rank / 2);
    CU_ASSERT_EQUAL(t->local_rank, rank % 2);
    CU_ASSERT_EQUAL(t->uniform, (size % 2) == 0);
    CU_ASSERT(same_everywhere(t->digest));
    terse_topo_destroy(t);

    /* even and odd ranks on two "hosts" */
    TERSE_TEST_OK(create("auto", 100 + (uint64_t)(rank % 2), &t));
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    CU_ASSERT_EQUAL(t->nnodes, (size > 1) ? 2 : 1);
    CU_ASSERT_EQUAL(t->node, rank % 2);
    CU_ASSERT_EQUAL(t->local_rank, rank / 2);
    CU_ASSERT_EQUAL(terse_topo_rank(t, rank % 2, rank / 2), rank);
    CU_ASSERT(same_everywhere(t->digest));
    terse_topo_destroy(t);
}

/* A value set differently on one rank fails on every rank (and nobody hangs). */
static void
test_mpi_mismatch(void)
{
    terse_topo_t *t = NULL;
    terse_status_t st;
    int rank, size, saved = terse__log_level;

    MPI_Comm_rank(world, &rank);
    MPI_Comm_size(world, &size);
    if (size < 2) {
        return;
    }
    terse__log_level = -1;
    st = create((rank == size - 1) ? "flat" : "auto", 0, &t);
    terse__log_level = saved;
    CU_ASSERT_EQUAL(st, TERSE_ERR_MISMATCH);
    CU_ASSERT_PTR_NULL(t);
    CU_ASSERT(same_everywhere((uint64_t)(int64_t)st));
}

static CU_TestInfo topology_mpi_tests[] = {
    {"auto_matches_mpi", test_mpi_auto},
    {"block_and_key", test_mpi_block_and_key},
    {"mismatch", test_mpi_mismatch},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_topology_mpi_suites[] = {
    {"comm_topology_mpi", topo_mpi_suite_init, NULL, NULL, NULL, topology_mpi_tests},
    CU_SUITE_INFO_NULL,
};
