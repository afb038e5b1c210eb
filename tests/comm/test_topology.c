/* comm/topology: TERSE_TOPOLOGY parsing, grouping (auto/flat/N) against an independent
 * reference, collective creation over threads (agreement on the spec), hwloc locality. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "terse_test.h"
#include "terse_base.h"
#include "topology.h"

/* ---------------------------------------------------------------- helpers */
static int
quiet_begin(void)
{
    int saved = terse__log_level;

    terse__log_level = -1; /* expected errors are logged; keep the output readable */
    return saved;
}

static void
quiet_end(int saved)
{
    terse__log_level = saved;
}

/* Checks every invariant of a grouping against the keys it came from, with a brute-force
 * reference: same node <=> same key (AUTO), nodes numbered by their lowest rank, local rank =
 * number of lower ranks on the same node, and the derived arrays consistent. */
static void
check_grouping(const terse_topo_t *t, const int *expect_node, int nranks, int rank)
{
    int r, q, n, below, total = 0, ok = 1;

    CU_ASSERT_EQUAL_FATAL(t->nranks, nranks);
    CU_ASSERT_EQUAL(t->rank, rank);
    for (r = 0; r < nranks; ++r) {
        ok &= (t->node_of[r] == expect_node[r]);
        below = 0;
        for (q = 0; q < r; ++q) {
            below += (expect_node[q] == expect_node[r]);
        }
        ok &= (t->local_rank_of[r] == below);
        ok &= (terse_topo_rank(t, t->node_of[r], t->local_rank_of[r]) == r);
    }
    CU_ASSERT(ok);
    for (n = 0, ok = 1; n < t->nnodes; ++n) {
        /* the leader is the lowest rank of the node, and leaders increase */
        for (r = 0; (r < nranks) && (expect_node[r] != n); ++r) {
        }
        ok &= (t->leaders[n] == r);
        ok &= (n == 0) || (t->leaders[n] > t->leaders[n - 1]);
        ok &= (terse_topo_rank(t, n, 0) == t->leaders[n]);
        ok &= (terse_topo_rank(t, n, t->node_size[n]) == -1);
        ok &= (t->node_first[n] == total);
        total += t->node_size[n];
        ok &= (t->node_size[n] <= t->max_local_size);
        ok &= (t->node_size[n] == t->node_size[0]) || !t->uniform;
    }
    CU_ASSERT(ok);
    CU_ASSERT_EQUAL(total, nranks);
    CU_ASSERT_EQUAL(t->node, expect_node[rank]);
    CU_ASSERT_EQUAL(t->local_size, t->node_size[t->node]);
    CU_ASSERT_EQUAL(t->local_rank, t->local_rank_of[rank]);
    CU_ASSERT_EQUAL(terse_topo_rank(t, -1, 0), -1);
    CU_ASSERT_EQUAL(terse_topo_rank(t, t->nnodes, 0), -1);
    CU_ASSERT_EQUAL(terse_topo_rank(t, 0, -1), -1);
}

/* ---------------------------------------------------------------- spec parsing */
static void
test_spec_parse(void)
{
    static const char *const bad[] = {"",   "0",     "-1",   "abc",        "3x",  " 4", "4 ",
                                      "+2", "0x4",   "auto2", "2147483648", "1.5", "flat,2",
                                      "99999999999999999999999"};
    terse_topo_spec_t spec = {TERSE_TOPO_FLAT, 77};
    size_t i;
    int saved;

    TERSE_TEST_OK(terse_topo_spec_parse("auto", &spec));
    CU_ASSERT_EQUAL(spec.mode, TERSE_TOPO_AUTO);
    CU_ASSERT_EQUAL(spec.ranks_per_node, 0);
    TERSE_TEST_OK(terse_topo_spec_parse("FLAT", &spec));
    CU_ASSERT_EQUAL(spec.mode, TERSE_TOPO_FLAT);
    TERSE_TEST_OK(terse_topo_spec_parse("8", &spec));
    CU_ASSERT_EQUAL(spec.mode, TERSE_TOPO_BLOCK);
    CU_ASSERT_EQUAL(spec.ranks_per_node, 8);
    TERSE_TEST_OK(terse_topo_spec_parse("2147483647", &spec));
    CU_ASSERT_EQUAL(spec.ranks_per_node, 2147483647);

    saved = quiet_begin();
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        spec.mode           = TERSE_TOPO_FLAT;
        spec.ranks_per_node = 77;
        if (terse_topo_spec_parse(bad[i], &spec) != TERSE_ERR_INVALID) {
            fprintf(stderr, "accepted TERSE_TOPOLOGY '%s'\n", bad[i]);
            CU_FAIL("bad TERSE_TOPOLOGY accepted");
        }
        /* the output is untouched on error */
        CU_ASSERT((spec.mode == TERSE_TOPO_FLAT) && (spec.ranks_per_node == 77));
    }
    CU_ASSERT_EQUAL(terse_topo_spec_parse(NULL, &spec), TERSE_ERR_INVALID);
    quiet_end(saved);

    /* the table row exists, defaults to auto, and the default parses */
    CU_ASSERT_STRING_EQUAL(terse__env_table[TERSE_ENV_ID_TOPOLOGY].name, "TERSE_TOPOLOGY");
    TERSE_TEST_OK(terse_topo_spec_parse(terse__env_table[TERSE_ENV_ID_TOPOLOGY].def, &spec));
    CU_ASSERT_EQUAL(spec.mode, TERSE_TOPO_AUTO);
}

/* ---------------------------------------------------------------- grouping */
static void
test_group_auto_small(void)
{
    /* interleaved hosts: ranks 0,2 on host A, 1,3,4 on host B */
    const uint64_t keys[] = {0xa, 0xb, 0xa, 0xb, 0xb};
    const int node[]      = {0, 1, 0, 1, 1};
    const terse_topo_spec_t spec = {TERSE_TOPO_AUTO, 0};
    terse_topo_t *t[5];
    int r;

    for (r = 0; r < 5; ++r) {
        TERSE_TEST_OK(terse_topo_group(keys, 5, r, &spec, &t[r]));
        check_grouping(t[r], node, 5, r);
        CU_ASSERT_EQUAL(t[r]->digest, t[0]->digest);
        CU_ASSERT_EQUAL(memcmp(t[r]->ranks_by_node, t[0]->ranks_by_node, 5 * sizeof(int)), 0);
    }
    CU_ASSERT_EQUAL(t[0]->nnodes, 2);
    CU_ASSERT_EQUAL(t[0]->uniform, 0);
    CU_ASSERT_EQUAL(t[0]->max_local_size, 3);
    CU_ASSERT_EQUAL(t[3]->local_rank, 1);
    CU_ASSERT_EQUAL(t[4]->local_rank, 2);
    CU_ASSERT_EQUAL(t[4]->local_size, 3);
    CU_ASSERT_EQUAL(t[0]->ranks_by_node[0], 0);
    CU_ASSERT_EQUAL(t[0]->ranks_by_node[1], 2);
    CU_ASSERT_EQUAL(t[0]->ranks_by_node[2], 1);
    CU_ASSERT_EQUAL(t[0]->ranks_by_node[4], 4);
    CU_ASSERT_EQUAL(t[0]->leaders[1], 1);
    for (r = 0; r < 5; ++r) {
        terse_topo_destroy(t[r]);
    }
}

/* Many ranks on a few hosts in random order: the result must match a brute-force reference
 * that numbers distinct keys by first appearance. */
static void
test_group_auto_random(void)
{
    enum { NR = 1000, NH = 37 };
    const terse_topo_spec_t spec = {TERSE_TOPO_AUTO, 0};
    uint64_t *keys = malloc(NR * sizeof(*keys));
    int *node      = malloc(NR * sizeof(*node));
    uint64_t seen[NH];
    int nseen = 0, r, h, rank;
    terse_topo_t *t;
    uint64_t digest = 0;

    CU_ASSERT_FATAL((keys != NULL) && (node != NULL));
    for (r = 0; r < NR; ++r) {
        /* host h has key (h + 1) * large odd constant: distinct, nonzero */
        h       = (int)(terse_test_uniform(99, (uint64_t)r) * NH);
        keys[r] = ((uint64_t)h + 1) * 0x9e3779b97f4a7c15ull;
    }
    for (r = 0; r < NR; ++r) {
        for (h = 0; (h < nseen) && (seen[h] != keys[r]); ++h) {
        }
        if (h == nseen) {
            seen[nseen++] = keys[r];
        }
        node[r] = h;
    }
    for (rank = 0; rank < NR; rank += 111) {
        TERSE_TEST_OK(terse_topo_group(keys, NR, rank, &spec, &t));
        check_grouping(t, node, NR, rank);
        CU_ASSERT_EQUAL(t->nnodes, nseen);
        if (rank == 0) {
            digest = t->digest;
        }
        CU_ASSERT_EQUAL(t->digest, digest);
        terse_topo_destroy(t);
    }
    /* one key changed on one rank gives another grouping, hence another digest */
    keys[NR - 1] = 12345;
    TERSE_TEST_OK(terse_topo_group(keys, NR, 0, &spec, &t));
    CU_ASSERT_NOT_EQUAL(t->digest, digest);
    terse_topo_destroy(t);
    free(keys);
    free(node);
}

static void
test_group_flat(void)
{
    const terse_topo_spec_t spec = {TERSE_TOPO_FLAT, 0};
    const uint64_t keys[] = {1, 1, 1, 1, 1, 1};
    int node[6], r;
    terse_topo_t *t;

    for (r = 0; r < 6; ++r) {
        node[r] = r;
    }
    /* keys are ignored (all ranks on one host still form six nodes), and may be NULL */
    TERSE_TEST_OK(terse_topo_group(keys, 6, 4, &spec, &t));
    check_grouping(t, node, 6, 4);
    CU_ASSERT_EQUAL(t->nnodes, 6);
    CU_ASSERT_EQUAL(t->local_size, 1);
    CU_ASSERT_EQUAL(t->uniform, 1);
    terse_topo_destroy(t);
    TERSE_TEST_OK(terse_topo_group(NULL, 1, 0, &spec, &t));
    CU_ASSERT_EQUAL(t->nnodes, 1);
    CU_ASSERT_EQUAL(t->local_size, 1);
    terse_topo_destroy(t);
}

static void
test_group_block(void)
{
    static const struct {
        int nranks, rpn, nnodes, uniform, maxl;
    } cases[] = {{10, 4, 3, 0, 4}, {10, 5, 2, 1, 5}, {10, 1, 10, 1, 1},
                 {3, 8, 1, 1, 3},  {7, 7, 1, 1, 7},  {1, 1, 1, 1, 1}};
    const uint64_t keys[10] = {5, 4, 3, 2, 1, 5, 4, 3, 2, 1}; /* ignored */
    int node[10], r, rank;
    size_t c;
    terse_topo_t *t;

    for (c = 0; c < sizeof(cases) / sizeof(cases[0]); ++c) {
        terse_topo_spec_t spec = {TERSE_TOPO_BLOCK, cases[c].rpn};

        for (r = 0; r < cases[c].nranks; ++r) {
            node[r] = r / cases[c].rpn;
        }
        for (rank = 0; rank < cases[c].nranks; ++rank) {
            TERSE_TEST_OK(terse_topo_group(keys, cases[c].nranks, rank, &spec, &t));
            check_grouping(t, node, cases[c].nranks, rank);
            CU_ASSERT_EQUAL(t->nnodes, cases[c].nnodes);
            CU_ASSERT_EQUAL(t->uniform, cases[c].uniform);
            CU_ASSERT_EQUAL(t->max_local_size, cases[c].maxl);
            CU_ASSERT_EQUAL(t->local_rank, rank % cases[c].rpn);
            terse_topo_destroy(t);
        }
    }
}

static void
test_group_invalid(void)
{
    const uint64_t keys[] = {1, 2};
    terse_topo_spec_t spec = {TERSE_TOPO_AUTO, 0};
    terse_topo_t *t = NULL;
    int saved = quiet_begin();

    CU_ASSERT_EQUAL(terse_topo_group(keys, 0, 0, &spec, &t), TERSE_ERR_INVALID);
    CU_ASSERT_EQUAL(terse_topo_group(keys, 2, 2, &spec, &t), TERSE_ERR_INVALID);
    CU_ASSERT_EQUAL(terse_topo_group(keys, 2, -1, &spec, &t), TERSE_ERR_INVALID);
    CU_ASSERT_EQUAL(terse_topo_group(NULL, 2, 0, &spec, &t), TERSE_ERR_INVALID);
    CU_ASSERT_EQUAL(terse_topo_group(keys, 2, 0, NULL, &t), TERSE_ERR_INVALID);
    spec.mode = TERSE_TOPO_BLOCK;
    CU_ASSERT_EQUAL(terse_topo_group(keys, 2, 0, &spec, &t), TERSE_ERR_INVALID);
    spec.mode = (terse_topo_mode_t)9;
    CU_ASSERT_EQUAL(terse_topo_group(keys, 2, 0, &spec, &t), TERSE_ERR_INVALID);
    CU_ASSERT_PTR_NULL(t);
    quiet_end(saved);
    terse_topo_destroy(NULL);
}

static void
test_host_key(void)
{
    uint64_t k = terse_topo_host_key();

    CU_ASSERT_NOT_EQUAL(k, 0);
    CU_ASSERT_EQUAL(terse_topo_host_key(), k);
}

/* ---------------------------------------------------------------- collective creation */
enum { MAXR = 8 };

typedef struct fake_group {
    pthread_barrier_t barrier;
    unsigned char     buf[MAXR * 64];
    int               nranks;
    const char       *spec[MAXR];
    uint64_t          key[MAXR];
    terse_status_t    status[MAXR];
    terse_topo_t     *topo[MAXR];
} fake_group_t;

typedef struct fake_rank {
    fake_group_t *g;
    int           rank;
} fake_rank_t;

static terse_status_t
fake_allgather(void *arg, const void *send, void *recv, size_t bytes)
{
    fake_rank_t *me = arg;

    if (bytes > 64) {
        return TERSE_ERR_INVALID; /* the same on every rank: no one waits */
    }
    memcpy(me->g->buf + ((size_t)me->rank * bytes), send, bytes);
    pthread_barrier_wait(&me->g->barrier);
    memcpy(recv, me->g->buf, (size_t)me->g->nranks * bytes);
    pthread_barrier_wait(&me->g->barrier);
    return TERSE_OK;
}

static void *
fake_rank_main(void *arg)
{
    fake_rank_t *me = arg;
    terse_topo_comm_t comm = {me->rank, me->g->nranks, fake_allgather, me};

    me->g->status[me->rank] = terse_topo_create(&comm, me->g->spec[me->rank],
                                                me->g->key[me->rank], NULL,
                                                &me->g->topo[me->rank]);
    return NULL;
}

/* Runs terse_topo_create on nranks threads; statuses and topos land in g. */
static void
fake_run(fake_group_t *g, int nranks)
{
    pthread_t th[MAXR];
    fake_rank_t ranks[MAXR];
    int r;

    g->nranks = nranks;
    memset(g->topo, 0, sizeof(g->topo));
    CU_ASSERT_FATAL(pthread_barrier_init(&g->barrier, NULL, (unsigned)nranks) == 0);
    for (r = 0; r < nranks; ++r) {
        ranks[r].g    = g;
        ranks[r].rank = r;
        CU_ASSERT_FATAL(pthread_create(&th[r], NULL, fake_rank_main, &ranks[r]) == 0);
    }
    for (r = 0; r < nranks; ++r) {
        pthread_join(th[r], NULL);
    }
    pthread_barrier_destroy(&g->barrier);
}

static void
fake_free(fake_group_t *g)
{
    int r;

    for (r = 0; r < g->nranks; ++r) {
        terse_topo_destroy(g->topo[r]);
        g->topo[r] = NULL;
    }
}

static void
test_create_agree(void)
{
    static fake_group_t g;
    const int node[] = {0, 0, 1, 1};
    int r, saved;

    /* two simulated hosts by key */
    for (r = 0; r < 4; ++r) {
        g.spec[r] = "auto";
        g.key[r]  = (r < 2) ? 0x1111 : 0x2222;
    }
    fake_run(&g, 4);
    for (r = 0; r < 4; ++r) {
        TERSE_TEST_OK(g.status[r]);
        CU_ASSERT_PTR_NOT_NULL_FATAL(g.topo[r]);
        check_grouping(g.topo[r], node, 4, r);
        CU_ASSERT_EQUAL(g.topo[r]->digest, g.topo[0]->digest);
    }
    fake_free(&g);

    /* key 0: the process's own host key, the same for every thread: one node */
    for (r = 0; r < 3; ++r) {
        g.spec[r] = "auto";
        g.key[r]  = 0;
    }
    fake_run(&g, 3);
    for (r = 0; r < 3; ++r) {
        TERSE_TEST_OK(g.status[r]);
        CU_ASSERT_EQUAL(g.topo[r]->nnodes, 1);
        CU_ASSERT_EQUAL(g.topo[r]->local_size, 3);
        CU_ASSERT_EQUAL(g.topo[r]->local_rank, r);
    }
    fake_free(&g);

    /* "2" overrides the host keys: the simulated-hosts case */
    for (r = 0; r < 4; ++r) {
        g.spec[r] = "2";
        g.key[r]  = 0;
    }
    fake_run(&g, 4);
    for (r = 0; r < 4; ++r) {
        TERSE_TEST_OK(g.status[r]);
        check_grouping(g.topo[r], node, 4, r);
    }
    fake_free(&g);

    /* different values on different ranks: every rank fails alike, none hangs */
    saved = quiet_begin();
    for (r = 0; r < 4; ++r) {
        g.spec[r] = (r == 2) ? "flat" : "auto";
    }
    fake_run(&g, 4);
    for (r = 0; r < 4; ++r) {
        CU_ASSERT_EQUAL(g.status[r], TERSE_ERR_MISMATCH);
        CU_ASSERT_PTR_NULL(g.topo[r]);
    }
    /* a bad value on one rank: that rank and all others fail */
    for (r = 0; r < 4; ++r) {
        g.spec[r] = (r == 1) ? "two" : "2";
    }
    fake_run(&g, 4);
    for (r = 0; r < 4; ++r) {
        CU_ASSERT(g.status[r] < 0);
        CU_ASSERT_PTR_NULL(g.topo[r]);
    }
    /* the same bad value everywhere: invalid everywhere */
    for (r = 0; r < 4; ++r) {
        g.spec[r] = "0";
    }
    fake_run(&g, 4);
    for (r = 0; r < 4; ++r) {
        CU_ASSERT_EQUAL(g.status[r], TERSE_ERR_INVALID);
    }
    quiet_end(saved);
    fake_free(&g);
}

static void
test_create_invalid(void)
{
    terse_topo_comm_t comm = {0, 1, NULL, NULL};
    terse_topo_t *t = NULL;
    int saved = quiet_begin();

    CU_ASSERT_EQUAL(terse_topo_create(NULL, "auto", 0, NULL, &t), TERSE_ERR_INVALID);
    CU_ASSERT_EQUAL(terse_topo_create(&comm, "auto", 0, NULL, &t), TERSE_ERR_INVALID);
    CU_ASSERT_EQUAL(terse_topo_create_tp(NULL, "auto", 0, NULL, &t), TERSE_ERR_INVALID);
    CU_ASSERT_PTR_NULL(t);
    quiet_end(saved);
}

/* ---------------------------------------------------------------- hwloc */
/* CPU sets as plain bitmaps (no cpu_set_t: scheduler/sched.h shadows <sched.h> here). */
enum { CPUS_MAX = 4096 };
typedef struct cpus {
    uint64_t w[CPUS_MAX / 64];
} cpus_t;

/* Parses a Linux/hwloc CPU list ("0-3,8"); 0 on a malformed list. */
static int
parse_cpulist(const char *s, cpus_t *set)
{
    char *end;
    long a, b;

    memset(set, 0, sizeof(*set));
    while ((*s != '\0') && (*s != '\n')) {
        a = strtol(s, &end, 10);
        if (end == s) {
            return 0;
        }
        b = a;
        if (*end == '-') {
            s = end + 1;
            b = strtol(s, &end, 10);
            if (end == s) {
                return 0;
            }
        }
        if ((a < 0) || (b < a) || (b >= CPUS_MAX)) {
            return 0;
        }
        for (; a <= b; ++a) {
            set->w[a / 64] |= 1ull << (a % 64);
        }
        if ((*end != ',') && (*end != '\0') && (*end != '\n')) {
            return 0;
        }
        s = (*end == ',') ? end + 1 : end;
    }
    return 1;
}

static int
cpus_count(const cpus_t *a)
{
    int i, n = 0;

    for (i = 0; i < CPUS_MAX / 64; ++i) {
        n += __builtin_popcountll(a->w[i]);
    }
    return n;
}

/* 1 when a is a subset of b */
static int
cpus_subset(const cpus_t *a, const cpus_t *b)
{
    int i;

    for (i = 0; i < CPUS_MAX / 64; ++i) {
        if ((a->w[i] & ~b->w[i]) != 0) {
            return 0;
        }
    }
    return 1;
}

/* The calling thread's allowed CPUs, from /proc (Cpus_allowed_list). */
static int
thread_cpus(cpus_t *set)
{
    char path[64], line[8192];
    FILE *f;
    int ok = 0;

    snprintf(path, sizeof(path), "/proc/self/task/%ld/status", (long)syscall(SYS_gettid));
    f = fopen(path, "r");
    if (f == NULL) {
        return 0;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "Cpus_allowed_list:", 18) == 0) {
            ok = parse_cpulist(line + 18 + strspn(line + 18, " \t"), set);
            break;
        }
    }
    fclose(f);
    return ok;
}

static void
check_locality_sane(const terse_topo_locality_t *loc)
{
    static cpus_t near, allowed;
    char path[256];
    struct stat st;

    CU_ASSERT(loc->numa_node >= 0);
    CU_ASSERT(loc->numa_nodes >= 1);
    /* the NUMA node exists where Linux shows NUMA nodes */
    if (stat("/sys/devices/system/node", &st) == 0) {
        snprintf(path, sizeof(path), "/sys/devices/system/node/node%d", loc->numa_node);
        CU_ASSERT(stat(path, &st) == 0);
    }
    /* the helper-thread CPUs are a non-empty subset of what this thread may run on */
    CU_ASSERT_FATAL(parse_cpulist(loc->cpus, &near));
    CU_ASSERT(cpus_count(&near) >= 1);
    CU_ASSERT_FATAL(thread_cpus(&allowed));
    CU_ASSERT(cpus_subset(&near, &allowed));
    /* a NIC, when found, is a device Linux knows */
    if (loc->nic[0] != '\0') {
        snprintf(path, sizeof(path), "/sys/class/net/%s", loc->nic);
        if (stat(path, &st) != 0) {
            snprintf(path, sizeof(path), "/sys/class/infiniband/%s", loc->nic);
            CU_ASSERT(stat(path, &st) == 0);
        }
        CU_ASSERT(loc->nic_numa_node >= 0);
    }
}

static void
test_locality(void)
{
    terse_topo_locality_t loc;
    int saved;

#if !TERSE_HAVE_HWLOC
    CU_ASSERT_EQUAL(terse_topo_locality(NULL, &loc), TERSE_ERR_UNSUPPORTED);
    CU_ASSERT_EQUAL(loc.numa_node, -1);
    return;
#endif
    TERSE_TEST_OK(terse_topo_locality(NULL, &loc));
    check_locality_sane(&loc);
    CU_ASSERT_STRING_EQUAL(loc.gpu_busid, "");
    if (terse_test_verbose()) {
        fprintf(stderr, "numa %d of %d nic '%s' (numa %d) cpus %s\n", loc.numa_node,
                loc.numa_nodes, loc.nic, loc.nic_numa_node, loc.cpus);
    }

    /* an unknown GPU falls back to the CPU set, with a warning */
    saved = quiet_begin();
    TERSE_TEST_OK(terse_topo_locality("0000:ff:1f.7", &loc));
    quiet_end(saved);
    check_locality_sane(&loc);
    CU_ASSERT_STRING_EQUAL(loc.gpu_busid, "0000:ff:1f.7");
}

typedef struct bind_arg {
    const terse_topo_t *topo;
    terse_status_t      status;
    int                 read_ok;
    cpus_t              after;
} bind_arg_t;

static void *
bind_main(void *arg)
{
    bind_arg_t *b = arg;

    b->status  = terse_topo_bind_thread(b->topo);
    b->read_ok = thread_cpus(&b->after);
    return NULL;
}

static void
test_bind_and_membind(void)
{
    static fake_group_t g;
    static bind_arg_t b;
    static cpus_t near;
    pthread_t th;
    size_t bytes = 1u << 20;
    void *buf    = NULL;

    g.spec[0] = "auto";
    g.key[0]  = 0;
    fake_run(&g, 1);
    TERSE_TEST_OK(g.status[0]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g.topo[0]);
#if TERSE_HAVE_HWLOC
    check_locality_sane(&g.topo[0]->loc);
    /* bind a fresh thread (not the runner's) and read its affinity back */
    b.topo = g.topo[0];
    CU_ASSERT_FATAL(pthread_create(&th, NULL, bind_main, &b) == 0);
    pthread_join(th, NULL);
    TERSE_TEST_OK(b.status);
    CU_ASSERT_FATAL(b.read_ok);
    CU_ASSERT_FATAL(parse_cpulist(g.topo[0]->loc.cpus, &near));
    CU_ASSERT(cpus_subset(&b.after, &near));
    CU_ASSERT(cpus_count(&b.after) >= 1);

    CU_ASSERT_FATAL(posix_memalign(&buf, 4096, bytes) == 0);
    TERSE_TEST_OK(terse_topo_membind(g.topo[0], buf, bytes));
    memset(buf, 0, bytes);
    free(buf);
#else
    CU_ASSERT_EQUAL(terse_topo_bind_thread(g.topo[0]), TERSE_ERR_UNSUPPORTED);
    (void)th; (void)near; (void)bytes; (void)buf;
#endif
    CU_ASSERT_EQUAL(terse_topo_bind_thread(NULL), TERSE_ERR_UNSUPPORTED);
    fake_free(&g);
}

/* The start-up log names every node with its ranks and each rank's place. */
static void
test_log(void)
{
    const uint64_t keys[] = {7, 7, 9, 9, 7};
    const terse_topo_spec_t spec = {TERSE_TOPO_AUTO, 0};
    terse_topo_t *t;
    char path[] = "/tmp/terse-topo-log-XXXXXX", text[4096];
    int fd, saved_fd, saved_level = terse__log_level;
    ssize_t n;

    TERSE_TEST_OK(terse_topo_group(keys, 5, 0, &spec, &t));
    fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    fflush(stderr);
    saved_fd = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    terse__log_level = TERSE_LOG_LEVEL_INFO;
    terse_topo_log(t);
    terse__log_level = saved_level;
    fflush(stderr);
    dup2(saved_fd, STDERR_FILENO);
    close(saved_fd);
    n = pread(fd, text, sizeof(text) - 1, 0);
    close(fd);
    unlink(path);
    text[(n > 0) ? n : 0] = '\0';
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "5 ranks on 2 nodes"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "node 0: 3 ranks (0-1,4), leader 0"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "node 1: 2 ranks (2-3), leader 2"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "rank 0: node 0 local rank 0 of 3"));
    terse_topo_destroy(t);
}

static CU_TestInfo topology_tests[] = {
    {"spec_parse", test_spec_parse},
    {"group_auto_small", test_group_auto_small},
    {"group_auto_random", test_group_auto_random},
    {"group_flat", test_group_flat},
    {"group_block", test_group_block},
    {"group_invalid", test_group_invalid},
    {"host_key", test_host_key},
    {"create_agree", test_create_agree},
    {"create_invalid", test_create_invalid},
    {"locality", test_locality},
    {"bind_and_membind", test_bind_and_membind},
    {"log", test_log},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_topology_suites[] = {
    {"comm_topology", NULL, NULL, NULL, NULL, topology_tests},
    CU_SUITE_INFO_NULL,
};
