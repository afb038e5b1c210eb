/*
 * bench/cluster_bw.c: plain-MPI bandwidth row for bench/cluster.sh (no terse inside).
 *
 * Proves that traffic between simulated hosts crosses the shaped link: between rank 0 and
 * the first rank on another node (nodes as Open MPI sees them: MPI_Comm_split_type
 * SHARED), it measures the small-message latency, ping-pong bandwidth, one-way streaming
 * bandwidth and bidirectional bandwidth (per direction), then an allreduce over all ranks.
 * MB is 10^6 bytes; "stream Gbit/s" counts payload bits only (TCP/IP headers take ~5 %
 * of the wire at MTU 1500, so a 1 Gbit/s link gives about 0.94 Gbit/s of payload).
 * "bidir" is MPI_Sendrecv between the same pair: Open MPI's tcp btl carries both directions
 * of a pair over one connection and reaches only about half the one-way rate per direction
 * (measured here both shaped and unshaped; two plain TCP flows in opposite directions over
 * the same shaped link each get the full rate), so it is a property of the MPI path.
 *
 * Usage: cluster_bw [-s bytes] [-n iters] [-r rate-label] [-d delay-label]
 * Built by cluster.sh with mpicc into a temporary folder.
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define TAG 77

static double
pingpong(char *buf, size_t bytes, int iters, int rank, int peer)
{
    double t0;
    int i;

    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    for (i = 0; i < iters; ++i) {
        if (rank == 0) {
            MPI_Send(buf, (int)bytes, MPI_BYTE, peer, TAG, MPI_COMM_WORLD);
            MPI_Recv(buf, (int)bytes, MPI_BYTE, peer, TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        } else if (rank == peer) {
            MPI_Recv(buf, (int)bytes, MPI_BYTE, 0, TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(buf, (int)bytes, MPI_BYTE, 0, TAG, MPI_COMM_WORLD);
        }
    }
    return (MPI_Wtime() - t0) / (2.0 * iters); /* one way */
}

/* One-way stream 0 -> peer; the peer's zero-byte ack closes the clock. Seconds in total. */
static double
stream(char *buf, size_t bytes, int iters, int rank, int peer)
{
    double t0;
    int i;

    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    for (i = 0; i < iters; ++i) {
        if (rank == 0) {
            MPI_Send(buf, (int)bytes, MPI_BYTE, peer, TAG, MPI_COMM_WORLD);
        } else if (rank == peer) {
            MPI_Recv(buf, (int)bytes, MPI_BYTE, 0, TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        }
    }
    if (rank == 0) {
        MPI_Recv(NULL, 0, MPI_BYTE, peer, TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    } else if (rank == peer) {
        MPI_Send(NULL, 0, MPI_BYTE, 0, TAG, MPI_COMM_WORLD);
    }
    return MPI_Wtime() - t0;
}

/* Both directions at once: seconds in total. */
static double
bidir(char *sbuf, char *rbuf, size_t bytes, int iters, int rank, int peer)
{
    double t0;
    int i, other = (rank == 0) ? peer : 0;

    MPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    if ((rank == 0) || (rank == peer)) {
        for (i = 0; i < iters; ++i) {
            MPI_Sendrecv(sbuf, (int)bytes, MPI_BYTE, other, TAG, rbuf, (int)bytes, MPI_BYTE,
                         other, TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        }
    }
    return MPI_Wtime() - t0;
}

int
main(int argc, char **argv)
{
    size_t bytes = 8u << 20;
    int iters = 8, opt, rank, size, i, leader, peer = -1, nnodes = 0, *leaders;
    const char *rate = "?", *delay = "?";
    double lat, pp, st, bd, ar;
    char *a, *b;
    MPI_Comm local;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    while ((opt = getopt(argc, argv, "s:n:r:d:")) != -1) {
        switch (opt) {
        case 's': bytes = strtoull(optarg, NULL, 0); break;
        case 'n': iters = atoi(optarg); break;
        case 'r': rate = optarg; break;
        case 'd': delay = optarg; break;
        default:
            if (rank == 0) {
                fprintf(stderr, "usage: cluster_bw [-s bytes] [-n iters] [-r rate] [-d delay]\n");
            }
            MPI_Abort(MPI_COMM_WORLD, 2);
        }
    }
    bytes = (bytes / sizeof(float)) * sizeof(float);
    if ((bytes == 0) || (bytes > (1u << 30)) || (iters < 1)) {
        if (rank == 0) {
            fprintf(stderr, "cluster_bw: bytes must be 4..1 GiB and iters >= 1\n");
        }
        MPI_Abort(MPI_COMM_WORLD, 2);
    }

    /* Which ranks share a node, as Open MPI sees it: the node's leader is its lowest rank. */
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &local);
    leader = rank;
    MPI_Bcast(&leader, 1, MPI_INT, 0, local);
    MPI_Comm_free(&local);
    leaders = malloc((size_t)size * sizeof(*leaders));
    a       = malloc(bytes);
    b       = malloc(bytes);
    if ((leaders == NULL) || (a == NULL) || (b == NULL)) {
        fprintf(stderr, "cluster_bw: out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    MPI_Allgather(&leader, 1, MPI_INT, leaders, 1, MPI_INT, MPI_COMM_WORLD);
    for (i = 0; i < size; ++i) {
        nnodes += (leaders[i] == i);
        if ((peer < 0) && (leaders[i] != leaders[0])) {
            peer = i;
        }
    }
    if (peer < 0) {
        if (rank == 0) {
            fprintf(stderr, "cluster_bw: all %d ranks are on one node: nothing crosses a link\n",
                    size);
        }
        MPI_Finalize();
        return 1;
    }

    /* Warm-up: connections are opened lazily. */
    pingpong(a, bytes, 1, rank, peer);
    lat = pingpong(a, 8, 100, rank, peer);
    pp  = pingpong(a, bytes, iters, rank, peer);
    st  = stream(a, bytes, iters, rank, peer);
    bd  = bidir(a, b, bytes, iters, rank, peer);
    MPI_Allreduce(a, b, (int)(bytes / sizeof(float)), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    MPI_Barrier(MPI_COMM_WORLD);
    ar = MPI_Wtime();
    for (i = 0; i < iters; ++i) {
        MPI_Allreduce(a, b, (int)(bytes / sizeof(float)), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
    ar = (MPI_Wtime() - ar) / iters;
    MPI_Allreduce(MPI_IN_PLACE, &ar, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);

    if (rank == 0) {
        double mb = (double)bytes / 1e6;
        printf("# cluster_bw: plain Open MPI, nodes %d ranks %d, link peers rank 0 <-> %d, "
               "rate %s delay %s, %d iters\n", nnodes, size, peer, rate, delay, iters);
        printf("#%6s %6s %10s %8s %9s %9s %9s %9s %10s %10s\n", "nodes", "ranks", "bytes",
               "lat", "pingpong", "stream", "stream", "bidir", "allreduce", "allreduce");
        printf("#%6s %6s %10s %8s %9s %9s %9s %9s %10s %10s\n", "", "", "(B)", "(us)", "(MB/s)",
               "(MB/s)", "(Gbit/s)", "(MB/s)", "algbw MB/s", "busbw MB/s");
        printf(" %6d %6d %10zu %8.1f %9.1f %9.1f %9.3f %9.1f %10.1f %10.1f\n", nnodes, size,
               bytes, lat * 1e6, mb / pp, mb * iters / st, 8e-3 * mb * iters / st,
               mb * iters / bd, mb / ar, mb / ar * 2.0 * (size - 1) / size);
        fflush(stdout);
    }
    free(a);
    free(b);
    free(leaders);
    MPI_Finalize();
    return 0;
}
