/*
 * Topology: which ranks share a node (the hierarchy), and where this rank sits on its node
 * (hwloc: NUMA node, nearest NIC, CPUs near the GPU or the rank's CPU set). DESIGN.md
 * section 6. Not installed.
 *
 * The hierarchy is computed from one allgather over the communicator, through a callback, so
 * it serves any transport (MPI, NCCL, the loop transport of the tests):
 *
 *     terse_topo_t *topo;
 *     TERSE_CHECK(terse_topo_create_tp(tp, NULL, 0, NULL, &topo));  // TERSE_TOPOLOGY, own host
 *     terse_topo_log(topo);
 *     ... topo->node, topo->local_rank, terse_topo_rank(topo, node, local_rank) ...
 *     terse_topo_destroy(topo);
 *
 * TERSE_TOPOLOGY chooses the grouping (the same value on every rank, or creation fails with
 * TERSE_ERR_MISMATCH on every rank):
 *   auto  ranks with the same host key share a node; the key defaults to a hash of the
 *         hostname, the boot id and the network namespace (simulated hosts of
 *         bench/cluster.sh share the first two but not the third). A transport with a better
 *         notion of "node" may pass its own key instead, e.g. over MPI: 1 + the lowest world
 *         rank of the rank's MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) group (rank 0 of
 *         that group broadcasts its world rank). tests/comm/test_topology_mpi.c checks that
 *         the default key groups ranks as Open MPI does, also inside bench/cluster.sh.
 *   flat  no hierarchy: every rank is a node of its own (one level; every link is treated as
 *         inter-node, so a hierarchical algorithm degenerates to the flat one).
 *   N     consecutive groups of N ranks (ranks 0..N-1 form node 0, ...); the last node is
 *         smaller when N does not divide the rank count (then topo->uniform is 0).
 * Nodes are numbered by their lowest rank; local ranks follow global rank order. Every
 * field of the hierarchy is identical on every rank; only topo->loc is per rank.
 */
#ifndef TERSE_TOPOLOGY_H
#define TERSE_TOPOLOGY_H

#include <stddef.h>
#include <stdint.h>

#include "terse_base.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_TOPO_NAME_MAX   64
#define TERSE_TOPO_CPUSET_MAX 256
#define TERSE_TOPO_NO_LOCALITY "-" /* gpu_busid of terse_topo_create: skip hwloc */

typedef enum terse_topo_mode {
    TERSE_TOPO_AUTO  = 0, /* by host key */
    TERSE_TOPO_FLAT  = 1, /* every rank its own node */
    TERSE_TOPO_BLOCK = 2  /* consecutive groups of ranks_per_node */
} terse_topo_mode_t;

typedef struct terse_topo_spec {
    terse_topo_mode_t mode;
    int               ranks_per_node; /* BLOCK only (>= 1); 0 otherwise */
} terse_topo_spec_t;

/* Where this rank sits on its node (hwloc). Fields are -1 or "" where unknown (no hwloc, or
 * the machine does not say). */
typedef struct terse_topo_locality {
    int  numa_node;     /* OS index of the NUMA node nearest the reference: the GPU when a
                           bus id was given, else the rank's CPU set */
    int  numa_nodes;    /* how many NUMA nodes the reference's CPUs span */
    char nic[TERSE_TOPO_NAME_MAX]; /* nearest network device ("eth0", "mlx5_0"); "" none */
    int  nic_numa_node; /* NUMA node of that NIC */
    char gpu_busid[TERSE_TOPO_NAME_MAX]; /* the GPU the reference is, "" for the CPU set */
    char cpus[TERSE_TOPO_CPUSET_MAX];    /* CPUs near the reference, within this process's
                                            binding ("0-23,48-71"): for helper threads */
} terse_topo_locality_t;

typedef struct terse_topo {
    terse_topo_spec_t spec;
    int      rank, nranks;
    int      node, nnodes;            /* this rank's node index, number of nodes */
    int      local_rank, local_size;  /* within this rank's node */
    int      max_local_size;          /* largest node */
    int      uniform;                 /* 1: every node has the same number of ranks */
    uint64_t digest;                  /* hash of the grouping; equal on every rank */
    /* Arrays, owned by the topo (one allocation with it); identical on every rank. */
    int     *node_of;       /* [nranks] node of each rank */
    int     *local_rank_of; /* [nranks] local rank of each rank */
    int     *node_size;     /* [nnodes] ranks on each node */
    int     *node_first;    /* [nnodes] where node n starts in ranks_by_node */
    int     *ranks_by_node; /* [nranks] ranks ordered by (node, local rank) */
    int     *leaders;       /* [nnodes] global rank of local rank 0 of each node */
    terse_topo_locality_t loc; /* this rank only */
    void    *hw;            /* hwloc state kept for bind/membind; NULL without hwloc */
} terse_topo_t;

/* Allgather callback: recv (nranks * bytes) = every rank's `bytes` bytes of send, in rank
 * order. Collective. Returns TERSE_OK or a negative status (then every rank should fail). */
typedef terse_status_t (*terse_topo_allgather_func_t)(void *arg, const void *send, void *recv,
                                                      size_t bytes);

typedef struct terse_topo_comm {
    int                         rank, nranks;
    terse_topo_allgather_func_t allgather;
    void                       *arg;      /* passed to allgather; borrowed */
} terse_topo_comm_t;

/* Parses a TERSE_TOPOLOGY value: "auto", "flat" (any case) or a decimal 1..2^31-1.
 *   [in]  str     the value (NULL or "" is an error)
 *   [out] spec_p  set only on TERSE_OK
 * Returns TERSE_OK or TERSE_ERR_INVALID (logged, naming TERSE_TOPOLOGY). */
terse_status_t terse_topo_spec_parse(const char *str, terse_topo_spec_t *spec_p);

/* This process's default host key: FNV-1a of hostname, boot id and network namespace.
 * Never 0. */
uint64_t terse_topo_host_key(void);

/* Groups ranks: the pure part of terse_topo_create (no communication, no hwloc).
 *   [in]  keys    nranks host keys in rank order (used by AUTO only; may be NULL otherwise)
 *   [in]  rank    the calling rank, 0 <= rank < nranks
 *   [out] topo_p  a new topo (loc unknown, hw NULL); free with terse_topo_destroy
 * Returns TERSE_OK, TERSE_ERR_INVALID (bad nranks, rank or spec), TERSE_ERR_NOMEM. */
terse_status_t terse_topo_group(const uint64_t *keys, int nranks, int rank,
                                const terse_topo_spec_t *spec, terse_topo_t **topo_p);

/* Builds the hierarchy over a communicator (collective: one allgather of 16 bytes), then
 * fills this rank's locality from hwloc (a failure there is a warning, not an error).
 *   [in]  comm       rank, size and allgather callback; borrowed for the call only
 *   [in]  spec       a TERSE_TOPOLOGY value, or NULL for the configured one (terse_init's
 *                    configuration when loaded, else the environment, else "auto")
 *   [in]  host_key   this rank's node key for AUTO, or 0 for terse_topo_host_key()
 *   [in]  gpu_busid  PCI bus id of this rank's GPU ("0000:65:00.0", as
 *                    cudaDeviceGetPCIBusId gives it), or NULL: locality of the CPU set, or
 *                    TERSE_TOPO_NO_LOCALITY: the hierarchy only (loc unknown, no hwloc: loading
 *                    hwloc's topology takes ~0.1 s, too slow for every context)
 *   [out] topo_p     set only on TERSE_OK; free with terse_topo_destroy
 * Returns TERSE_OK; TERSE_ERR_INVALID (bad spec or comm); TERSE_ERR_MISMATCH (ranks were
 * given different TERSE_TOPOLOGY values: every rank returns it); TERSE_ERR_NOMEM; or the
 * allgather's status. */
terse_status_t terse_topo_create(const terse_topo_comm_t *comm, const char *spec,
                                 uint64_t host_key, const char *gpu_busid,
                                 terse_topo_t **topo_p);

/* terse_topo_create over a transport instance (its allgather; not counted as bytes sent). */
struct terse_transport;
terse_status_t terse_topo_create_tp(struct terse_transport *tp, const char *spec,
                                    uint64_t host_key, const char *gpu_busid,
                                    terse_topo_t **topo_p);

/* Releases a topo (NULL is fine). */
void terse_topo_destroy(terse_topo_t *topo);

/* Global rank of (node, local_rank), or -1 when there is no such rank. */
int terse_topo_rank(const terse_topo_t *topo, int node, int local_rank);

/* Fills `loc` from hwloc for the GPU `gpu_busid` (or the CPU set when NULL). Used by
 * terse_topo_create; exposed for tests and tools.
 * Returns TERSE_OK, TERSE_ERR_UNSUPPORTED (built without hwloc: loc set to unknown),
 * TERSE_ERR_SYSTEM (hwloc failed), TERSE_ERR_NOMEM. */
terse_status_t terse_topo_locality(const char *gpu_busid, terse_topo_locality_t *loc);

/* Binds the calling thread to loc.cpus (helper threads near the GPU's or rank's CPUs).
 * Returns TERSE_OK, TERSE_ERR_UNSUPPORTED (no hwloc or no locality), TERSE_ERR_SYSTEM. */
terse_status_t terse_topo_bind_thread(const terse_topo_t *topo);

/* Binds the pages of [ptr, ptr + bytes) to loc.numa_node (staging buffers; call before the
 * first touch). A no-op returning TERSE_OK on a single-NUMA machine.
 * Returns TERSE_OK, TERSE_ERR_UNSUPPORTED (no hwloc or no NUMA node), TERSE_ERR_SYSTEM. */
terse_status_t terse_topo_membind(const terse_topo_t *topo, void *ptr, size_t bytes);

/* Logs the hierarchy at INFO (COMM): rank 0 the node table, every rank its own place and
 * locality. */
void terse_topo_log(const terse_topo_t *topo);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_TOPOLOGY_H */
