/*
 * libterse-nccl.so without a GPU, over the stand-in NCCL of fake_nccl.c (tests/comm/
 * shim_nccl_cpu.sh runs it with and without LD_PRELOAD, with CUDA_VISIBLE_DEVICES empty):
 *   shim_nccl_cpu run    every kind of call the shim must pass through reaches the library
 *                        unchanged (results exact, send buffers untouched): a nonblocking
 *                        communicator, one whose creation the shim never saw, a blocking one
 *                        (no GPU: cannot tell the capture state), a group, integers, small
 *                        floats, AVG; creation, finalize, destroy, abort; then prints a hash
 *                        of every result (compared across the two runs) and, under the shim,
 *                        checks terse_nccl_counters_get and terse_nccl_register_layout's checks
 *   shim_nccl_cpu idle   loads the library and calls nothing (the shim's exit warning)
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nccl.h>

int        fake_nccl_calls(void);
ncclComm_t fake_nccl_make_comm(int nranks);

static int failures;
static uint64_t hash = 1469598103934665603ull;

#define CHECK(_cond)                                                                           \
    do {                                                                                       \
        if (!(_cond)) {                                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #_cond);          \
            ++failures;                                                                        \
        }                                                                                      \
    } while (0)

static void
mix(const void *p, size_t bytes)
{
    const unsigned char *b = p;
    size_t i;

    for (i = 0; i < bytes; ++i) {
        hash = (hash ^ b[i]) * 1099511628211ull;
    }
}

/* One float allreduce of n elements on comm: exact result, send untouched. */
static void
float_call(ncclComm_t comm, size_t n, ncclRedOp_t op, int grouped, int nranks)
{
    float *s = malloc(n * sizeof(float)), *s0 = malloc(n * sizeof(float));
    float *r = malloc(n * sizeof(float));
    size_t i, bad = 0;

    for (i = 0; i < n; ++i) {
        s[i] = (float)((double)((i * 2654435761u) % 100003) / 1000.0 - 50.0);
    }
    memcpy(s0, s, n * sizeof(float));
    if (grouped) {
        CHECK(ncclGroupStart() == ncclSuccess);
    }
    CHECK(ncclAllReduce(s, r, n, ncclFloat32, op, comm, NULL) == ncclSuccess);
    if (grouped) {
        CHECK(ncclGroupEnd() == ncclSuccess);
    }
    for (i = 0; i < n; ++i) {
        float want = (op == ncclSum) ? s0[i] * (float)nranks : s0[i];
        bad += (memcmp(&r[i], &want, sizeof(float)) != 0) || (memcmp(&s[i], &s0[i], 4) != 0);
    }
    CHECK(bad == 0);
    mix(r, n * sizeof(float));
    free(s);
    free(s0);
    free(r);
}

int
main(int argc, char **argv)
{
    int (*counters)(uint64_t *, size_t);
    int (*reglay)(const void *, size_t, const uint64_t *, const uint64_t *, const uint64_t *,
                  const uint64_t *);
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    ncclComm_t nb = NULL, b = NULL, u, all[2];
    ncclUniqueId id;
    int ints[5000], i, calls = 0, shim;

    if ((argc > 1) && (strcmp(argv[1], "idle") == 0)) {
        printf("idle %d\n", fake_nccl_calls());
        return 0;
    }
    counters = (int (*)(uint64_t *, size_t))dlsym(RTLD_DEFAULT, "terse_nccl_counters_get");
    reglay   = (int (*)(const void *, size_t, const uint64_t *, const uint64_t *,
                        const uint64_t *, const uint64_t *))
        dlsym(RTLD_DEFAULT, "terse_nccl_register_layout");
    shim = (counters != NULL) && (reglay != NULL);

    CHECK(ncclGetUniqueId(&id) == ncclSuccess);
    cfg.blocking = 0;
    CHECK(ncclCommInitRankConfig(&nb, 2, id, 0, &cfg) == ncclSuccess);
    CHECK(ncclCommInitRank(&b, 2, id, 0) == ncclSuccess);
    CHECK(ncclCommInitAll(all, 2, NULL) == ncclSuccess);
    u = fake_nccl_make_comm(2);

    /* large fp32 SUM on each kind of communicator, several steps (a cycle would lock) */
    for (i = 0; i < 6; ++i) {
        float_call(nb, 100000, ncclSum, 0, 2);
        float_call(u, 100000, ncclSum, 0, 2);
        float_call(b, 100000, ncclSum, 0, 2);
        float_call(all[1], 70000, ncclAvg, 0, 2);
        float_call(b, 50000, ncclSum, 1, 2);  /* inside a group */
        float_call(b, 10, ncclSum, 0, 2);     /* small */
        calls += 6;
    }
    for (i = 0; i < 5000; ++i) {
        ints[i] = i - 2500;
    }
    CHECK(ncclAllReduce(ints, ints, 5000, ncclInt32, ncclSum, b, NULL) == ncclSuccess);
    CHECK((ints[0] == -5000) && (ints[4999] == 4998));
    mix(ints, sizeof(ints));
    ++calls;
    CHECK(fake_nccl_calls() == calls);

    if (shim) {
        uint64_t out[5], off[3] = {0, 100, 164}, cnt[3] = {100, 64, 10}, rows[3] = {10, 8, 0},
                 cols[3] = {10, 8, 0}, badrows[1] = {7}, badcols[1] = {7}, badoff[2] = {0, 50};
        static float buf[1000];
        CHECK(counters(out, 5) == 5);
        CHECK(out[0] == (uint64_t)calls);
        CHECK(out[1] == 0);                         /* nothing compressed without a GPU */
        CHECK(out[4] > 0);                          /* pass-through bytes counted */
        CHECK(counters(out, 4) < 0);
        CHECK(reglay(buf, 3, off, cnt, rows, cols) == 0);
        CHECK(reglay(buf, 3, off, cnt, rows, cols) == 0); /* again: replaces */
        CHECK(reglay(buf, 1, off, cnt, badrows, badcols) < 0);      /* 7 x 7 != 100 */
        CHECK(reglay(buf, 2, badoff, cnt, rows, cols) < 0);         /* overlap */
        CHECK(reglay(NULL, 3, off, cnt, rows, cols) < 0);
        CHECK(reglay(buf, 0, off, cnt, rows, cols) < 0);
    }
    CHECK(ncclCommFinalize(b) == ncclSuccess);
    CHECK(ncclCommDestroy(b) == ncclSuccess);
    CHECK(ncclCommAbort(nb) == ncclSuccess);
    CHECK(ncclCommDestroy(all[0]) == ncclSuccess);
    CHECK(ncclCommDestroy(all[1]) == ncclSuccess);
    CHECK(ncclCommDestroy(u) == ncclSuccess);
    printf("results %016llx calls %d shim %d failures %d\n", (unsigned long long)hash, calls,
           shim, failures);
    return failures != 0;
}
