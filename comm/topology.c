/*
 * Topology: node-local ranks (the hierarchy) and hwloc locality. See topology.h.
 *
 * Grouping is a pure function of (spec, every rank's host key), so every rank computes the
 * same hierarchy from the same allgathered keys. The spec travels with the key: when ranks
 * were given different TERSE_TOPOLOGY values, every rank sees the disagreement in the same
 * gathered array and fails alike, instead of grouping differently and hanging later.
 *
 * Locality (hwloc) is per rank and never feeds a collective decision: the reference object
 * is the GPU (by PCI bus id) or the smallest object covering the rank's CPU binding; the
 * nearest NIC is the network or OpenFabrics OS device whose common ancestor with the
 * reference lies deepest in the tree (then: fewest hops from the NIC up to it, then hwloc's
 * order).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "topology.h"
#include "transport.h"

#if TERSE_HAVE_HWLOC
#include <hwloc.h>
#endif

/* ---------------------------------------------------------------- spec */
terse_status_t
terse_topo_spec_parse(const char *str, terse_topo_spec_t *spec_p)
{
    terse_topo_spec_t spec = {TERSE_TOPO_AUTO, 0};
    const char *p;
    long long v = 0;

    if ((str == NULL) || (*str == '\0')) {
        terse_error(TERSE_LOG_COMM, "TERSE_TOPOLOGY is empty: expected auto, flat or a number of "
                                    "ranks per node");
        return TERSE_ERR_INVALID;
    }
    if (strcasecmp(str, "auto") == 0) {
        spec.mode = TERSE_TOPO_AUTO;
    } else if (strcasecmp(str, "flat") == 0) {
        spec.mode = TERSE_TOPO_FLAT;
    } else {
        for (p = str; *p != '\0'; ++p) {
            if (!isdigit((unsigned char)*p) || (v > INT_MAX)) {
                break;
            }
            v = (v * 10) + (*p - '0');
        }
        if ((*p != '\0') || (v < 1) || (v > INT_MAX)) {
            terse_error(TERSE_LOG_COMM, "TERSE_TOPOLOGY '%s' is invalid: expected auto, flat or "
                                        "a number of ranks per node 1..%d", str, INT_MAX);
            return TERSE_ERR_INVALID;
        }
        spec.mode           = TERSE_TOPO_BLOCK;
        spec.ranks_per_node = (int)v;
    }
    *spec_p = spec;
    return TERSE_OK;
}

/* ---------------------------------------------------------------- host key */
static size_t
topo_read_small_file(const char *path, char *buf, size_t len)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (f == NULL) {
        return 0;
    }
    n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    return n;
}

uint64_t
terse_topo_host_key(void)
{
    char buf[256];
    uint64_t h = 0xcbf29ce484222325ull;
    ssize_t n;

    /* Same hostname and boot id: the same kernel. Same network namespace too: not a
     * simulated host of bench/cluster.sh (nor a container with its own network). */
    if (gethostname(buf, sizeof(buf)) == 0) {
        buf[sizeof(buf) - 1] = '\0';
        h = terse__hash64(buf, strlen(buf), h);
    }
    h = terse__hash64(buf, topo_read_small_file("/proc/sys/kernel/random/boot_id", buf,
                                                sizeof(buf)), h);
    n = readlink("/proc/self/ns/net", buf, sizeof(buf) - 1);
    if (n > 0) {
        h = terse__hash64(buf, (size_t)n, h);
    }
    return (h == 0) ? 1 : h;
}

/* ---------------------------------------------------------------- grouping (pure) */
static terse_topo_t *
topo_alloc(int nranks)
{
    terse_topo_t *topo;
    size_t n = (size_t)nranks;
    /* node_of, local_rank_of, ranks_by_node: nranks each; node_size, node_first, leaders:
     * at most nranks each. */
    size_t bytes = sizeof(*topo) + (6 * n * sizeof(int));
    int *a;

    topo = calloc(1, bytes);
    if (topo == NULL) {
        terse_error(TERSE_LOG_COMM, "failed to allocate the topology of %d ranks", nranks);
        return NULL;
    }
    a                   = (int *)(topo + 1);
    topo->node_of       = a;
    topo->local_rank_of = a + n;
    topo->ranks_by_node = a + (2 * n);
    topo->node_size     = a + (3 * n);
    topo->node_first    = a + (4 * n);
    topo->leaders       = a + (5 * n);
    topo->loc.numa_node     = -1;
    topo->loc.numa_nodes    = 0;
    topo->loc.nic_numa_node = -1;
    return topo;
}

terse_status_t
terse_topo_group(const uint64_t *keys, int nranks, int rank, const terse_topo_spec_t *spec,
                 terse_topo_t **topo_p)
{
    terse_topo_t *topo;
    int r, q, n, node, nnodes = 0;

    if ((nranks < 1) || (rank < 0) || (rank >= nranks) || (spec == NULL) ||
        ((spec->mode == TERSE_TOPO_AUTO) && (keys == NULL)) ||
        ((spec->mode == TERSE_TOPO_BLOCK) && (spec->ranks_per_node < 1)) ||
        ((spec->mode != TERSE_TOPO_AUTO) && (spec->mode != TERSE_TOPO_FLAT) &&
         (spec->mode != TERSE_TOPO_BLOCK))) {
        terse_error(TERSE_LOG_COMM, "invalid topology arguments: nranks %d rank %d", nranks,
                    rank);
        return TERSE_ERR_INVALID;
    }
    topo = topo_alloc(nranks);
    if (topo == NULL) {
        return TERSE_ERR_NOMEM;
    }
    topo->spec   = *spec;
    topo->rank   = rank;
    topo->nranks = nranks;

    /* Node of every rank; nodes numbered in order of their lowest rank. */
    for (r = 0; r < nranks; ++r) {
        switch (spec->mode) {
        case TERSE_TOPO_FLAT:
            node = r;
            break;
        case TERSE_TOPO_BLOCK:
            node = r / spec->ranks_per_node;
            break;
        default:
            /* The first earlier rank with this key, else a new node. O(nranks * nnodes). */
            node = -1;
            for (n = 0; n < nnodes; ++n) {
                if (keys[topo->leaders[n]] == keys[r]) {
                    node = n;
                    break;
                }
            }
            break;
        }
        if ((node < 0) || (node == nnodes)) {
            node                 = nnodes++;
            topo->leaders[node]  = r;
            topo->node_size[node] = 0;
        }
        topo->node_of[r]       = node;
        topo->local_rank_of[r] = topo->node_size[node]++;
    }
    topo->nnodes = nnodes;

    /* Ranks ordered by (node, local rank): a counting sort keeps rank order inside a node. */
    topo->max_local_size = 0;
    topo->uniform        = 1;
    for (n = 0, q = 0; n < nnodes; ++n) {
        topo->node_first[n]  = q;
        q                   += topo->node_size[n];
        topo->max_local_size = TERSE_MAX(topo->max_local_size, topo->node_size[n]);
        if (topo->node_size[n] != topo->node_size[0]) {
            topo->uniform = 0;
        }
    }
    for (r = 0; r < nranks; ++r) {
        n = topo->node_of[r];
        topo->ranks_by_node[topo->node_first[n] + topo->local_rank_of[r]] = r;
    }

    topo->node       = topo->node_of[rank];
    topo->local_rank = topo->local_rank_of[rank];
    topo->local_size = topo->node_size[topo->node];
    topo->digest     = terse__hash64(topo->node_of, (size_t)nranks * sizeof(int),
                                     terse__hash64(&nranks, sizeof(nranks), 0x746f706f));
    *topo_p = topo;
    return TERSE_OK;
}

int
terse_topo_rank(const terse_topo_t *topo, int node, int local_rank)
{
    if ((topo == NULL) || (node < 0) || (node >= topo->nnodes) || (local_rank < 0) ||
        (local_rank >= topo->node_size[node])) {
        return -1;
    }
    return topo->ranks_by_node[topo->node_first[node] + local_rank];
}

/* ---------------------------------------------------------------- hwloc */
#if TERSE_HAVE_HWLOC
typedef struct topo_hw {
    hwloc_topology_t topology;
    hwloc_bitmap_t   cpus;    /* CPUs near the reference, within the process binding */
    hwloc_bitmap_t   nodes;   /* the NUMA node chosen (one bit), or empty */
} topo_hw_t;

static void
topo_hw_destroy(topo_hw_t *hw)
{
    if (hw == NULL) {
        return;
    }
    hwloc_bitmap_free(hw->cpus);
    hwloc_bitmap_free(hw->nodes);
    hwloc_topology_destroy(hw->topology);
    free(hw);
}

/* Number of parent hops from obj to the root. */
static int
topo_hw_depth(hwloc_obj_t obj)
{
    int d = 0;

    for (; (obj != NULL) && (obj->parent != NULL); obj = obj->parent) {
        ++d;
    }
    return d;
}

/* The deepest common ancestor of a and b (works for I/O objects too, unlike
 * hwloc_get_common_ancestor_obj, which compares depths that are negative for them);
 * *hops_a_p gets the number of hops from a up to it. */
static hwloc_obj_t
topo_hw_common(hwloc_obj_t a, hwloc_obj_t b, int *hops_a_p)
{
    hwloc_obj_t x, y;
    int hops = 0;

    for (x = a; x != NULL; x = x->parent, ++hops) {
        for (y = b; y != NULL; y = y->parent) {
            if (x == y) {
                *hops_a_p = hops;
                return x;
            }
        }
    }
    *hops_a_p = hops;
    return NULL;
}

/* First NUMA node (OS index) of a CPU set, and how many it spans. */
static int
topo_hw_numa_of(hwloc_topology_t t, hwloc_const_cpuset_t cpus, int *count_p,
                hwloc_bitmap_t first_p)
{
    hwloc_bitmap_t nodes = hwloc_bitmap_alloc();
    int first = -1;

    if (nodes == NULL) {
        *count_p = 0;
        return -1;
    }
    hwloc_cpuset_to_nodeset(t, cpus, nodes);
    *count_p = hwloc_bitmap_weight(nodes);
    first    = hwloc_bitmap_first(nodes);
    if ((first_p != NULL) && (first >= 0)) {
        hwloc_bitmap_only(first_p, (unsigned)first);
    }
    hwloc_bitmap_free(nodes);
    return first;
}

static terse_status_t
topo_hw_locality(const char *gpu_busid, terse_topo_locality_t *loc, topo_hw_t **hw_p)
{
    topo_hw_t *hw;
    hwloc_bitmap_t bound = NULL, refcpus = NULL;
    hwloc_obj_t ref = NULL, obj, best = NULL, anc;
    int best_depth = -1, best_hops = INT_MAX, depth, hops, count;
    terse_status_t status = TERSE_ERR_SYSTEM;

    hw = calloc(1, sizeof(*hw));
    if (hw == NULL) {
        terse_error(TERSE_LOG_COMM, "failed to allocate hwloc state");
        return TERSE_ERR_NOMEM;
    }
    if (hwloc_topology_init(&hw->topology) != 0) {
        terse_warn(TERSE_LOG_COMM, "hwloc_topology_init failed: %s", strerror(errno));
        free(hw);
        return TERSE_ERR_SYSTEM;
    }
    hwloc_topology_set_io_types_filter(hw->topology, HWLOC_TYPE_FILTER_KEEP_IMPORTANT);
#if HWLOC_API_VERSION >= 0x00020100
    {
        /* The linux component reads PCI from sysfs by itself; the libpciaccess one leaks
         * (LeakSanitizer) and the GPU plugins would initialise CUDA/OpenCL behind the
         * application's back. Unknown names are ignored. */
        static const char *const skip[] = {"pci", "cuda", "nvml", "opencl", "rsmi",
                                           "levelzero", "gl"};
        size_t i;

        for (i = 0; i < sizeof(skip) / sizeof(skip[0]); ++i) {
            (void)hwloc_topology_set_components(hw->topology,
                                                HWLOC_TOPOLOGY_COMPONENTS_FLAG_BLACKLIST,
                                                skip[i]);
        }
    }
#endif
    hw->cpus  = hwloc_bitmap_alloc();
    hw->nodes = hwloc_bitmap_alloc();
    bound     = hwloc_bitmap_alloc();
    refcpus   = hwloc_bitmap_alloc();
    if ((hw->cpus == NULL) || (hw->nodes == NULL) || (bound == NULL) || (refcpus == NULL)) {
        terse_error(TERSE_LOG_COMM, "failed to allocate hwloc bitmaps");
        status = TERSE_ERR_NOMEM;
        goto err_free;
    }
    if (hwloc_topology_load(hw->topology) != 0) {
        terse_warn(TERSE_LOG_COMM, "hwloc_topology_load failed: %s", strerror(errno));
        goto err_free;
    }

    /* The process's binding (unbound: every CPU of the machine). */
    if ((hwloc_get_cpubind(hw->topology, bound, HWLOC_CPUBIND_PROCESS) != 0) ||
        hwloc_bitmap_iszero(bound)) {
        hwloc_bitmap_copy(bound, hwloc_topology_get_topology_cpuset(hw->topology));
    }

    if ((gpu_busid != NULL) && (gpu_busid[0] != '\0')) {
        snprintf(loc->gpu_busid, sizeof(loc->gpu_busid), "%s", gpu_busid);
        ref = hwloc_get_pcidev_by_busidstring(hw->topology, gpu_busid);
        if (ref == NULL) {
            terse_warn(TERSE_LOG_COMM, "hwloc does not know pci device %s: using the cpu set",
                       gpu_busid);
        } else {
            obj = hwloc_get_non_io_ancestor_obj(hw->topology, ref);
            hwloc_bitmap_copy(refcpus, obj->cpuset);
        }
    }
    if (ref == NULL) {
        hwloc_bitmap_copy(refcpus, bound);
        ref = hwloc_get_obj_covering_cpuset(hw->topology, bound);
        if (ref == NULL) {
            ref = hwloc_get_root_obj(hw->topology);
        }
    }

    loc->numa_node = topo_hw_numa_of(hw->topology, refcpus, &loc->numa_nodes, hw->nodes);
    if (loc->numa_node < 0) {
        hwloc_bitmap_zero(hw->nodes);
    }

    /* CPUs for helper threads: near the reference, but within our binding. */
    hwloc_bitmap_and(hw->cpus, refcpus, bound);
    if (hwloc_bitmap_iszero(hw->cpus)) {
        hwloc_bitmap_copy(hw->cpus, bound);
    }
    hwloc_bitmap_list_snprintf(loc->cpus, sizeof(loc->cpus), hw->cpus);

    for (obj = hwloc_get_next_osdev(hw->topology, NULL); obj != NULL;
         obj = hwloc_get_next_osdev(hw->topology, obj)) {
        if ((obj->attr->osdev.type != HWLOC_OBJ_OSDEV_NETWORK) &&
            (obj->attr->osdev.type != HWLOC_OBJ_OSDEV_OPENFABRICS)) {
            continue;
        }
        anc = topo_hw_common(obj, ref, &hops);
        if (anc == NULL) {
            continue;
        }
        depth = topo_hw_depth(anc);
        if ((depth > best_depth) || ((depth == best_depth) && (hops < best_hops))) {
            best       = obj;
            best_depth = depth;
            best_hops  = hops;
        }
    }
    if (best != NULL) {
        snprintf(loc->nic, sizeof(loc->nic), "%s", (best->name != NULL) ? best->name : "?");
        obj                = hwloc_get_non_io_ancestor_obj(hw->topology, best);
        loc->nic_numa_node = topo_hw_numa_of(hw->topology, obj->cpuset, &count, NULL);
    }

    hwloc_bitmap_free(bound);
    hwloc_bitmap_free(refcpus);
    *hw_p = hw;
    return TERSE_OK;

err_free:
    hwloc_bitmap_free(bound);
    hwloc_bitmap_free(refcpus);
    topo_hw_destroy(hw);
    return status;
}
#endif /* TERSE_HAVE_HWLOC */

static void
topo_locality_reset(terse_topo_locality_t *loc)
{
    memset(loc, 0, sizeof(*loc));
    loc->numa_node     = -1;
    loc->nic_numa_node = -1;
}

terse_status_t
terse_topo_locality(const char *gpu_busid, terse_topo_locality_t *loc)
{
    topo_locality_reset(loc);
#if TERSE_HAVE_HWLOC
    {
        topo_hw_t *hw = NULL;
        terse_status_t status = topo_hw_locality(gpu_busid, loc, &hw);

        topo_hw_destroy(hw);
        return status;
    }
#else
    return TERSE_ERR_UNSUPPORTED;
#endif
}

terse_status_t
terse_topo_bind_thread(const terse_topo_t *topo)
{
#if TERSE_HAVE_HWLOC
    const topo_hw_t *hw = (topo != NULL) ? (const topo_hw_t *)topo->hw : NULL;

    if ((hw == NULL) || hwloc_bitmap_iszero(hw->cpus)) {
        return TERSE_ERR_UNSUPPORTED;
    }
    if (hwloc_set_cpubind(hw->topology, hw->cpus, HWLOC_CPUBIND_THREAD) != 0) {
        terse_warn(TERSE_LOG_COMM, "failed to bind a thread to cpus %s: %s", topo->loc.cpus,
                   strerror(errno));
        return TERSE_ERR_SYSTEM;
    }
    return TERSE_OK;
#else
    return TERSE_ERR_UNSUPPORTED;
#endif
}

terse_status_t
terse_topo_membind(const terse_topo_t *topo, void *ptr, size_t bytes)
{
#if TERSE_HAVE_HWLOC
    const topo_hw_t *hw = (topo != NULL) ? (const topo_hw_t *)topo->hw : NULL;

    if ((hw == NULL) || hwloc_bitmap_iszero(hw->nodes)) {
        return TERSE_ERR_UNSUPPORTED;
    }
    if ((bytes == 0) ||
        (hwloc_get_nbobjs_by_type(hw->topology, HWLOC_OBJ_NUMANODE) <= 1)) {
        return TERSE_OK;
    }
    if (hwloc_set_area_membind(hw->topology, ptr, bytes, hw->nodes, HWLOC_MEMBIND_BIND,
                               HWLOC_MEMBIND_BYNODESET) != 0) {
        terse_warn(TERSE_LOG_COMM, "failed to bind %zu bytes to numa node %d: %s", bytes,
                   topo->loc.numa_node, strerror(errno));
        return TERSE_ERR_SYSTEM;
    }
    return TERSE_OK;
#else
    return TERSE_ERR_UNSUPPORTED;
#endif
}

/* ---------------------------------------------------------------- create / destroy */
static const char *
topo_configured_spec(void)
{
    const terse_config_t *cfg = terse__config();
    const char *env;

    if (cfg != NULL) {
        return cfg->TOPOLOGY;
    }
    env = getenv("TERSE_TOPOLOGY");
    return (env != NULL) ? env : terse__env_table[TERSE_ENV_ID_TOPOLOGY].def;
}

terse_status_t
terse_topo_create(const terse_topo_comm_t *comm, const char *spec_str, uint64_t host_key,
                  const char *gpu_busid, terse_topo_t **topo_p)
{
    terse_topo_spec_t spec;
    uint64_t mine[2], *all = NULL, *keys = NULL;
    terse_topo_t *topo = NULL;
    terse_status_t status, parse_status;
    int r;

    if ((comm == NULL) || (comm->allgather == NULL) || (comm->nranks < 1) ||
        (comm->rank < 0) || (comm->rank >= comm->nranks)) {
        terse_error(TERSE_LOG_COMM, "invalid communicator for the topology");
        return TERSE_ERR_INVALID;
    }
    if (spec_str == NULL) {
        spec_str = topo_configured_spec();
    }
    /* A bad value still takes part in the allgather (as an impossible spec), so that the
     * other ranks fail too instead of waiting for this one. */
    parse_status = terse_topo_spec_parse(spec_str, &spec);
    if (parse_status != TERSE_OK) {
        spec.mode           = (terse_topo_mode_t)0xff;
        spec.ranks_per_node = -1;
    }

    all  = malloc(2 * (size_t)comm->nranks * sizeof(*all));
    keys = malloc((size_t)comm->nranks * sizeof(*keys));
    if ((all == NULL) || (keys == NULL)) {
        terse_error(TERSE_LOG_COMM, "failed to allocate topology keys for %d ranks",
                    comm->nranks);
        status = TERSE_ERR_NOMEM;
        goto out_free;
    }
    mine[0] = (host_key != 0) ? host_key : terse_topo_host_key();
    mine[1] = ((uint64_t)(uint32_t)spec.mode << 32) | (uint32_t)spec.ranks_per_node;
    TERSE_CHECK_GOTO(comm->allgather(comm->arg, mine, all, sizeof(mine)), status, out_free);

    for (r = 0; r < comm->nranks; ++r) {
        keys[r] = all[2 * r];
        if (all[(2 * r) + 1] != all[1]) {
            terse_error(TERSE_LOG_COMM, "TERSE_TOPOLOGY differs between ranks (rank 0 and rank "
                                        "%d): set it alike everywhere", r);
            status = TERSE_ERR_MISMATCH;
            goto out_free;
        }
    }
    if (parse_status != TERSE_OK) {
        status = parse_status;
        goto out_free;
    }
    TERSE_CHECK_GOTO(terse_topo_group(keys, comm->nranks, comm->rank, &spec, &topo), status,
                     out_free);

    if ((gpu_busid != NULL) && (strcmp(gpu_busid, TERSE_TOPO_NO_LOCALITY) == 0)) {
        topo_locality_reset(&topo->loc); /* the hierarchy alone: no hwloc (it is slow) */
        *topo_p = topo;
        status  = TERSE_OK;
        goto out_free;
    }
#if TERSE_HAVE_HWLOC
    {
        topo_hw_t *hw = NULL;

        if (topo_hw_locality(gpu_busid, &topo->loc, &hw) == TERSE_OK) {
            topo->hw = hw;
        } else {
            topo_locality_reset(&topo->loc);
            terse_warn(TERSE_LOG_COMM, "no hwloc locality: staging buffers and helper threads "
                                       "stay unplaced");
        }
    }
#else
    topo_locality_reset(&topo->loc);
    if (gpu_busid != NULL) {
        snprintf(topo->loc.gpu_busid, sizeof(topo->loc.gpu_busid), "%s", gpu_busid);
    }
#endif
    *topo_p = topo;
    status  = TERSE_OK;

out_free:
    free(all);
    free(keys);
    return status;
}

static terse_status_t
topo_tp_allgather(void *arg, const void *send, void *recv, size_t bytes)
{
    terse_transport_t *tp = (terse_transport_t *)arg;

    return tp->ops->allgather(tp, send, recv, bytes);
}

terse_status_t
terse_topo_create_tp(struct terse_transport *tp, const char *spec, uint64_t host_key,
                     const char *gpu_busid, terse_topo_t **topo_p)
{
    terse_topo_comm_t comm;

    if ((tp == NULL) || (tp->ops == NULL)) {
        terse_error(TERSE_LOG_COMM, "invalid transport for the topology");
        return TERSE_ERR_INVALID;
    }
    comm.rank      = tp->rank;
    comm.nranks    = tp->nranks;
    comm.allgather = topo_tp_allgather;
    comm.arg       = tp;
    return terse_topo_create(&comm, spec, host_key, gpu_busid, topo_p);
}

void
terse_topo_destroy(terse_topo_t *topo)
{
    if (topo == NULL) {
        return;
    }
#if TERSE_HAVE_HWLOC
    topo_hw_destroy((topo_hw_t *)topo->hw);
#endif
    free(topo);
}

/* ---------------------------------------------------------------- logging */
/* Appends "a-b" or "a,b,c" style rank lists of node n to buf. */
static void
topo_node_ranks_str(const terse_topo_t *topo, int n, char *buf, size_t len)
{
    const int *r = &topo->ranks_by_node[topo->node_first[n]];
    int i, j, size = topo->node_size[n];
    size_t used = 0;
    int w;

    buf[0] = '\0';
    for (i = 0; (i < size) && (used < len); i = j + 1) {
        for (j = i; ((j + 1) < size) && (r[j + 1] == (r[j] + 1)); ++j) {
        }
        w = (j > i) ? snprintf(buf + used, len - used, "%s%d-%d", (i > 0) ? "," : "", r[i], r[j])
                    : snprintf(buf + used, len - used, "%s%d", (i > 0) ? "," : "", r[i]);
        if (w < 0) {
            break;
        }
        used += (size_t)w;
    }
}

void
terse_topo_log(const terse_topo_t *topo)
{
    char ranks[128], spec[32];
    int n, shown;

    if ((topo == NULL) || !terse__log_on(TERSE_LOG_LEVEL_INFO, TERSE_LOG_COMM)) {
        return;
    }
    if (topo->rank == 0) {
        if (topo->spec.mode == TERSE_TOPO_BLOCK) {
            snprintf(spec, sizeof(spec), "%d ranks per node", topo->spec.ranks_per_node);
        } else {
            snprintf(spec, sizeof(spec), "%s", (topo->spec.mode == TERSE_TOPO_FLAT) ? "flat"
                                                                                  : "auto");
        }
        terse_info(TERSE_LOG_COMM, "topology %s: %d ranks on %d nodes, %s %d per node, "
                   "digest %016llx", spec, topo->nranks, topo->nnodes,
                   topo->uniform ? "uniform" : "up to", topo->max_local_size,
                   (unsigned long long)topo->digest);
        shown = TERSE_MIN(topo->nnodes, 16);
        for (n = 0; n < shown; ++n) {
            topo_node_ranks_str(topo, n, ranks, sizeof(ranks));
            terse_info(TERSE_LOG_COMM, "node %d: %d ranks (%s), leader %d", n,
                       topo->node_size[n], ranks, topo->leaders[n]);
        }
        if (shown < topo->nnodes) {
            terse_info(TERSE_LOG_COMM, "... %d more nodes", topo->nnodes - shown);
        }
    }
    terse_info(TERSE_LOG_COMM, "rank %d: node %d local rank %d of %d, numa %d of %d, nic %s "
               "(numa %d), cpus %s%s%s", topo->rank, topo->node, topo->local_rank,
               topo->local_size, topo->loc.numa_node, topo->loc.numa_nodes,
               (topo->loc.nic[0] != '\0') ? topo->loc.nic : "none", topo->loc.nic_numa_node,
               (topo->loc.cpus[0] != '\0') ? topo->loc.cpus : "unknown",
               (topo->loc.gpu_busid[0] != '\0') ? ", near gpu " : "", topo->loc.gpu_busid);
}
