/* The NCCL device path (comm/transport_nccl.c, comm/algo_device.c; label gpu). One process,
 * one communicator per visible GPU from ncclCommInitAll, one thread per rank, each with its
 * own stream and a TERSE_TRANSPORT_NCCL context on device buffers. Every family against the
 * exact sum (double) within the error of the host path (loop transport, same seeds, same
 * plan), bitwise identical on every rank, bitwise equal to the host path where the algorithm
 * promises it (requant: quant, sign; sparse: top-k), pass-through bit-identical to a plain
 * ncclAllReduce (family none, doubles), non-finite input on one rank -> NaN on every rank,
 * fp16 / bf16 input, odd counts, in place and AVG.
 *
 * NCCL is not linked (nothing in terse may link it): the suite dlopens libnccl.so.2 the way an
 * application would have loaded it, then terse finds that copy (nccl_loader.h). Without a
 * libnccl or a GPU the tests say so and pass; with one GPU only the 1-rank cases run. */
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "terse_test.h"
#include "terse_test_cuda.h"
#include "compressor.h"
#include "cuda_util.h"
#include "nccl_loader.h"
#include "transport_nccl.h"
#include "terse_internal.h"

#define NC_MAXP  8
#define NC_SEED  42

typedef struct nc_world {
    int                     p;        /* 0: no NCCL or no GPU (tests skip, visibly) */
    const terse_nccl_api_t *api;
    ncclComm_t              comms[NC_MAXP];
    terse_ctx_t            *ctx[NC_MAXP]; /* one context per rank for the whole suite */
    char                    why[128];
} nc_world_t;

static nc_world_t nc_w;

/* A hung collective (one rank failed, the other waits in NCCL) must not hide which case it
 * was: every phase is logged to stderr as it starts, and a watchdog ends the runner with the
 * case's name when one case takes longer than NC_CASE_SECONDS. */
#define NC_CASE_SECONDS 25
static pthread_mutex_t nc_dog_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t  nc_dog_cond = PTHREAD_COND_INITIALIZER;
static int             nc_dog_done;
static char            nc_dog_case[128];

static void *
nc_dog(void *arg)
{
    struct timespec until;

    (void)arg;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += NC_CASE_SECONDS;
    pthread_mutex_lock(&nc_dog_lock);
    while (!nc_dog_done) {
        if (pthread_cond_timedwait(&nc_dog_cond, &nc_dog_lock, &until) != 0) {
            fprintf(stderr, "\nWATCHDOG: case %s did not finish in %d s (a rank failed alone or "
                    "a collective hung)\n", nc_dog_case, NC_CASE_SECONDS);
            fflush(NULL);
            _exit(3);
        }
    }
    pthread_mutex_unlock(&nc_dog_lock);
    return NULL;
}

static void
nc_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void
nc_note(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fflush(stderr);
}

typedef struct nc_case {
    const char   *spec;
    terse_dtype_t dtype;
    size_t        n;
    int           steps;
    int           nan_rank;   /* -1: none */
    terse_op_t    op;
    int           inplace;
    int           equal_host; /* the algorithm promises bitwise equality with the host path */
    const char   *layout;     /* a TERSE_LAYOUT file cutting the buffer into layers, or NULL */
} nc_case_t;

typedef struct nc_run {
    const nc_case_t *c;
    int              p;
    int              device;  /* 1: NCCL contexts on device buffers; 0: loop transport, host */
    terse_status_t   status[NC_MAXP];
    void            *out[NC_MAXP];    /* steps * n elements of dtype, per rank */
    void            *plain[NC_MAXP];  /* device run: a plain ncclAllReduce of the input */
    uint64_t         passthrough[NC_MAXP];
} nc_run_t;

typedef struct nc_thread {
    nc_run_t *run;
    int       rank;
    void     *ep;
} nc_thread_t;

/* ---------------------------------------------------------------- world */
static int
nc_suite_init(void)
{
    int ndev = 0, devs[NC_MAXP], i;

    memset(&nc_w, 0, sizeof(nc_w));
    setvbuf(stdout, NULL, _IONBF, 0); /* the log must hold everything if a case hangs */
    /* as an application would: load NCCL first (global, so terse's lookup finds it) */
    if (dlopen("libnccl.so.2", RTLD_NOW | RTLD_GLOBAL) == NULL) {
        snprintf(nc_w.why, sizeof(nc_w.why), "no libnccl.so.2 (%s)", dlerror());
        return 0;
    }
    if ((cudaGetDeviceCount(&ndev) != cudaSuccess) || (ndev < 1)) {
        snprintf(nc_w.why, sizeof(nc_w.why), "no CUDA device");
        return 0;
    }
    if (terse__nccl_api(NULL, &nc_w.api) != TERSE_OK) {
        snprintf(nc_w.why, sizeof(nc_w.why), "terse could not resolve the loaded NCCL");
        return 0;
    }
    ndev = TERSE_MIN(ndev, NC_MAXP);
    for (i = 0; i < ndev; ++i) {
        devs[i] = i;
    }
    if (nc_w.api->CommInitAll(nc_w.comms, ndev, devs) != ncclSuccess) {
        snprintf(nc_w.why, sizeof(nc_w.why), "ncclCommInitAll over %d GPUs failed", ndev);
        return 0;
    }
    nc_w.p = ndev;
    printf("\n  [nccl %d from %s (%s), %d GPUs]\n", nc_w.api->version, nc_w.api->path,
           nc_w.api->how, ndev);
    return 0;
}

static void *
nc_destroy_rank(void *arg)
{
    const int r = (int)(intptr_t)arg;

    cudaSetDevice(r);
    terse_ctx_destroy(nc_w.ctx[r]);
    nc_w.ctx[r] = NULL;
    return NULL;
}

static int
nc_suite_clean(void)
{
    pthread_t tid[NC_MAXP];
    int i;

    for (i = 0; i < nc_w.p; ++i) {
        pthread_create(&tid[i], NULL, nc_destroy_rank, (void *)(intptr_t)i);
    }
    for (i = 0; i < nc_w.p; ++i) {
        pthread_join(tid[i], NULL);
    }
    for (i = 0; i < nc_w.p; ++i) {
        cudaSetDevice(i);
        nc_w.api->CommDestroy(nc_w.comms[i]);
    }
    nc_w.p = 0;
    return 0;
}

static int
nc_skip(int need)
{
    if (nc_w.p >= need) {
        return 0;
    }
    printf("\n  SKIPPED (%s): needs %d GPUs with NCCL, have %d ", (nc_w.p == 0) ? nc_w.why :
           "too few GPUs", need, nc_w.p);
    return 1;
}

/* ---------------------------------------------------------------- ranks */
static void *
nc_input(const nc_case_t *c, int rank)
{
    return terse_test_input(1000 + (uint64_t)rank, c->n, c->dtype, 1.0f,
                            (rank == c->nan_rank) ? 1 : 0);
}

static size_t
nc_esize(terse_dtype_t dt)
{
    return (dt == TERSE_FLOAT64) ? 8 : terse_dtype_size(dt);
}

/* Inputs of doubles: the fp32 input widened. */
static void *
nc_input_any(const nc_case_t *c, int rank)
{
    if (c->dtype == TERSE_FLOAT64) {
        nc_case_t f = *c;
        float *x;
        double *d = malloc(c->n * sizeof(double));
        size_t i;
        f.dtype = TERSE_FLOAT32;
        x       = nc_input(&f, rank);
        for (i = 0; i < c->n; ++i) {
            d[i] = x[i];
        }
        free(x);
        return d;
    }
    return nc_input(c, rank);
}

static void
nc_setup_ctx(nc_run_t *run, terse_ctx_t *ctx, int rank)
{
    if (strcmp(run->c->spec, "auto") == 0) {
        ctx->sched_warmup = 1;
        ctx->sched_replan = 2;
    }
    run->status[rank] = terse__ctx_set_uniform(ctx, run->c->spec);
    if ((run->status[rank] == TERSE_OK) && (run->c->layout != NULL)) {
        run->status[rank] = terse__ctx_set_layout(ctx, run->c->layout);
    }
}

static void *
nc_device_rank(void *arg)
{
    nc_thread_t *th = arg;
    nc_run_t *run   = th->run;
    const nc_case_t *c = run->c;
    const int r     = th->rank;
    const size_t bytes = c->n * nc_esize(c->dtype);
    terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
    terse_ctx_t *ctx = NULL;
    cudaStream_t s   = NULL;
    void *x = nc_input_any(c, r), *dx = NULL, *dy = NULL, *dp = NULL;
    terse_stats_t st0, st;
    int k;

    run->out[r]   = calloc((size_t)c->steps * bytes + 1, 1);
    run->plain[r] = calloc(bytes + 1, 1);
    if ((cudaSetDevice(r) != cudaSuccess) ||
        (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) ||
        (cudaMalloc(&dx, bytes + 1) != cudaSuccess) || (cudaMalloc(&dy, bytes + 1) != cudaSuccess) ||
        (cudaMalloc(&dp, bytes + 1) != cudaSuccess)) {
        run->status[r] = TERSE_ERR_CUDA;
        goto out;
    }
    /* One context per rank for the suite, as a trainer holds one per communicator: each case
     * sets its plan (terse__ctx_set_uniform drops the slots, so residuals and steps start
     * afresh, as in the host path's new context). Re-creating contexts: test_nccl_recreate. */
    if (nc_w.ctx[r] == NULL) {
        params.transport = TERSE_TRANSPORT_NCCL;
        params.comm      = nc_w.comms[r];
        params.seed      = NC_SEED;
        run->status[r]   = terse_ctx_create(&params, &nc_w.ctx[r]);
        if (run->status[r] != TERSE_OK) {
            goto out;
        }
    }
    ctx = nc_w.ctx[r];
    st0.size = sizeof(st0);
    terse_stats_get(ctx, &st0);
    nc_setup_ctx(run, ctx, r);
    for (k = 0; (k < c->steps) && (run->status[r] == TERSE_OK); ++k) {
        void *o = c->inplace ? dx : dy;
        terse_status_t rc;
        /* on s: a pageable cudaMemcpy runs on the legacy stream, which a non-blocking stream
         * does not wait for, and returns before its last staged part lands (the in-place
         * cases then compressed part of the last step's output) */
        cudaMemcpyAsync(dx, x, bytes, cudaMemcpyHostToDevice, s);
        rc = terse_allreduce(ctx, dx, o, c->n, c->dtype, c->op, TERSE_MEM_CUDA, s);
        if ((rc != TERSE_OK) || (cudaStreamSynchronize(s) != cudaSuccess)) {
            run->status[r] = (rc != TERSE_OK) ? rc : TERSE_ERR_CUDA;
            nc_note("  [%s: rank %d step %d failed: %s (%s)]\n", c->spec, r, k,
                    terse_status_name(rc), cudaGetErrorString(cudaGetLastError()));
            break;
        }
        cudaMemcpy((unsigned char *)run->out[r] + (size_t)k * bytes, o, bytes,
                   cudaMemcpyDeviceToHost);
    }
    st.size = sizeof(st);
    terse_stats_get(ctx, &st);
    run->passthrough[r] = st.passthrough - st0.passthrough;
    /* the plain reference: NCCL's own allreduce of the same input on the caller's comm */
    cudaMemcpyAsync(dx, x, bytes, cudaMemcpyHostToDevice, s);
    if ((nc_w.api->AllReduce(dx, dp, c->n, terse__nccl_dtype(c->dtype),
                             (c->op == TERSE_OP_AVG) ? ncclAvg : ncclSum, nc_w.comms[r], s) !=
         ncclSuccess) ||
        (cudaStreamSynchronize(s) != cudaSuccess)) {
        run->status[r] = TERSE_ERR_NCCL;
    }
    cudaMemcpy(run->plain[r], dp, bytes, cudaMemcpyDeviceToHost);
out:
    cudaFree(dx);
    cudaFree(dy);
    cudaFree(dp);
    if (s != NULL) {
        cudaStreamDestroy(s);
    }
    free(x);
    return NULL;
}

static void
nc_host_rank(void *ep, int r, int nranks, void *arg)
{
    nc_run_t *run      = arg;
    const nc_case_t *c = run->c;
    const size_t bytes = c->n * nc_esize(c->dtype);
    terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
    terse_ctx_t *ctx = NULL;
    void *x = nc_input_any(c, r), *y = malloc(bytes + 1), *in = malloc(bytes + 1);
    int k;

    (void)nranks;
    run->out[r]      = calloc((size_t)c->steps * bytes + 1, 1);
    params.transport = TERSE_TRANSPORT_LOOP;
    params.comm      = ep;
    params.seed      = NC_SEED;
    run->status[r]   = terse_ctx_create(&params, &ctx);
    if (run->status[r] == TERSE_OK) {
        nc_setup_ctx(run, ctx, r);
        for (k = 0; (k < c->steps) && (run->status[r] == TERSE_OK); ++k) {
            void *o = c->inplace ? in : y;
            memcpy(in, x, bytes);
            run->status[r] = terse_allreduce(ctx, in, o, c->n, c->dtype, c->op, TERSE_MEM_HOST,
                                             NULL);
            memcpy((unsigned char *)run->out[r] + (size_t)k * bytes, o, bytes);
        }
        terse_ctx_destroy(ctx);
    }
    free(x);
    free(y);
    free(in);
}

static void
nc_run(nc_run_t *run, const nc_case_t *c, int p, int device)
{
    nc_thread_t th[NC_MAXP];
    pthread_t tid[NC_MAXP];
    int r;

    memset(run, 0, sizeof(*run));
    nc_note("  [%s dtype %d n %zu p %d nan %d: %s]\n", c->spec, (int)c->dtype, c->n, p,
            c->nan_rank, device ? "device" : "host");
    run->c      = c;
    run->p      = p;
    run->device = device;
    if (!device) {
        TERSE_TEST_OK(terse_loop_run(p, nc_host_rank, run));
        return;
    }
    for (r = 0; r < p; ++r) {
        th[r] = (nc_thread_t){run, r, NULL};
        CU_ASSERT_FATAL(pthread_create(&tid[r], NULL, nc_device_rank, &th[r]) == 0);
    }
    for (r = 0; r < p; ++r) {
        pthread_join(tid[r], NULL);
    }
}

static void
nc_run_free(nc_run_t *run)
{
    int r;

    for (r = 0; r < run->p; ++r) {
        free(run->out[r]);
        free(run->plain[r]);
    }
}

/* ---------------------------------------------------------------- checks */
static double
nc_load(const void *buf, terse_dtype_t dt, size_t i)
{
    return (dt == TERSE_FLOAT64) ? ((const double *)buf)[i] : (double)terse__load_f32(buf, dt, i);
}

/* relerr of step 0 against the exact sum of the inputs (double). */
static double
nc_relerr(const nc_case_t *c, int p, const void *out)
{
    double *e = calloc(c->n, sizeof(double)), err = 0.0, norm = 0.0, d;
    size_t i;
    int r;

    for (r = 0; r < p; ++r) {
        void *x = nc_input_any(c, r);
        for (i = 0; i < c->n; ++i) {
            e[i] += nc_load(x, c->dtype, i);
        }
        free(x);
    }
    for (i = 0; i < c->n; ++i) {
        if (c->op == TERSE_OP_AVG) {
            e[i] /= p;
        }
        d = nc_load(out, c->dtype, i) - e[i];
        err += d * d;
        norm += e[i] * e[i];
    }
    free(e);
    return (norm > 0.0) ? sqrt(err / norm) : sqrt(err);
}

static int
nc_has_nan(const void *buf, terse_dtype_t dt, size_t n)
{
    size_t i;

    for (i = 0; i < n; ++i) {
        if (isnan(nc_load(buf, dt, i))) {
            return 1;
        }
    }
    return 0;
}

static size_t
nc_mismatches(const void *a, const void *b, size_t n, size_t es)
{
    size_t i, bad = 0, first = 0, last = 0;

    for (i = 0; i < n; ++i) {
        if (memcmp((const unsigned char *)a + i * es, (const unsigned char *)b + i * es, es) != 0) {
            first = (bad == 0) ? i : first;
            last  = i;
            ++bad;
        }
    }
    if (bad != 0) { /* where: a tail, one bucket or spread tells races from kernel bugs */
        printf("\n  mismatches at [%zu, %zu] of %zu ", first, last, n);
    }
    return bad;
}

static void
nc_check_case(const nc_case_t *c, int p)
{
    const size_t es = nc_esize(c->dtype), bytes = c->n * es;
    nc_run_t dev, host;
    double e_dev, e_host;
    size_t bad;
    int r, k;

    pthread_t dog;

    const char *skip = getenv("TNC_SKIP"); /* bench/gpu_nccl.sh: cases that hung before */

    snprintf(nc_dog_case, sizeof(nc_dog_case), "%s dtype %d n %zu nan %d", c->spec,
             (int)c->dtype, c->n, c->nan_rank);
    if ((skip != NULL) && (strstr(skip, nc_dog_case) != NULL)) {
        printf("\n  %s: hung in an earlier run, not run again ", nc_dog_case);
        CU_FAIL("case hung in an earlier run");
        return;
    }
    nc_dog_done = 0;
    CU_ASSERT_FATAL(pthread_create(&dog, NULL, nc_dog, NULL) == 0);
    nc_run(&dev, c, p, 1);
    nc_run(&host, c, p, 0);
    pthread_mutex_lock(&nc_dog_lock);
    nc_dog_done = 1;
    pthread_cond_signal(&nc_dog_cond);
    pthread_mutex_unlock(&nc_dog_lock);
    pthread_join(dog, NULL);
    for (r = 0; r < p; ++r) {
        CU_ASSERT_EQUAL(dev.status[r], TERSE_OK);
        CU_ASSERT_EQUAL(host.status[r], TERSE_OK);
    }
    if ((dev.status[0] != TERSE_OK) || (host.status[0] != TERSE_OK)) {
        printf("\n  %s: status dev %s host %s ", c->spec, terse_status_name(dev.status[0]),
               terse_status_name(host.status[0]));
        goto out;
    }
    /* bitwise identical on every rank, every step */
    for (r = 1; r < p; ++r) {
        bad = nc_mismatches(dev.out[0], dev.out[r], c->n * (size_t)c->steps, es);
        CU_ASSERT_EQUAL(bad, 0);
        if (bad != 0) {
            printf("\n  %s: rank %d differs from rank 0 in %zu values ", c->spec, r, bad);
        }
    }
    if (c->nan_rank >= 0) {
        for (r = 0; r < p; ++r) {
            CU_ASSERT(nc_has_nan(dev.out[r], c->dtype, c->n));
        }
        CU_ASSERT(nc_has_nan(host.out[0], c->dtype, c->n));
        goto out;
    }
    e_dev  = nc_relerr(c, p, dev.out[0]);
    e_host = nc_relerr(c, p, host.out[0]);
    CU_ASSERT(isfinite(e_dev));
    if (strcmp(c->spec, "auto") == 0) {
        CU_ASSERT(e_dev < 0.5); /* plans may differ from the host's (other cost model) */
    } else {
        /* the same plan through other kernels and NCCL's sum: the host path's error */
        CU_ASSERT(e_dev <= 1.25 * e_host + 1e-6);
    }
    if (terse_test_verbose() || !(e_dev <= 1.25 * e_host + 1e-6)) {
        printf("\n  %-12s dtype %d n %zu p %d: relerr device %.3e host %.3e ", c->spec,
               (int)c->dtype, c->n, p, e_dev, e_host);
    }
    if (c->equal_host) {
        for (k = 0; k < c->steps; ++k) {
            bad = nc_mismatches((unsigned char *)dev.out[0] + (size_t)k * bytes,
                                (unsigned char *)host.out[0] + (size_t)k * bytes, c->n, es);
            CU_ASSERT_EQUAL(bad, 0);
            if (bad != 0) {
                printf("\n  %s dtype %d: step %d differs from the host path in %zu of %zu ",
                       c->spec, (int)c->dtype, k, bad, c->n);
            }
        }
    }
    if ((strcmp(c->spec, "none") == 0) || (c->dtype == TERSE_FLOAT64)) {
        /* pass-through: bit-identical to a plain ncclAllReduce, and counted as such */
        for (r = 0; r < p; ++r) {
            for (k = 0; k < c->steps; ++k) {
                bad = nc_mismatches((unsigned char *)dev.out[r] + (size_t)k * bytes,
                                    dev.plain[r], c->n, es);
                CU_ASSERT_EQUAL(bad, 0);
            }
            CU_ASSERT_EQUAL(dev.passthrough[r], (uint64_t)c->steps);
        }
    }
out:
    nc_run_free(&dev);
    nc_run_free(&host);
}

/* ---------------------------------------------------------------- tests */
static const nc_case_t nc_families[] = {
    /* spec            dtype           n       steps nan  op            inpl equal_host */
    {"quant:4",      TERSE_FLOAT32,  100003, 3, -1, TERSE_OP_SUM, 0, 1, NULL},
    {"quant:8",      TERSE_FLOAT32,  100003, 3, -1, TERSE_OP_AVG, 1, 1, NULL},
    {"sign",         TERSE_FLOAT32,  100003, 3, -1, TERSE_OP_SUM, 0, 1, NULL},
    {"cast:bf16",    TERSE_FLOAT32,  100003, 3, -1, TERSE_OP_SUM, 0, 0, NULL},
    {"topk:0.01",    TERSE_FLOAT32,  100003, 3, -1, TERSE_OP_SUM, 0, 1, NULL},
    {"randomk:0.01", TERSE_FLOAT32,  100003, 3, -1, TERSE_OP_SUM, 1, 0, NULL},
    {"powersgd:4",   TERSE_FLOAT32,  100233, 3, -1, TERSE_OP_SUM, 0, 0, NULL},
    {"auto",         TERSE_FLOAT32,  100003, 6, -1, TERSE_OP_SUM, 0, 0, NULL},
};

static void
nc_families_at(int p)
{
    size_t k;

    for (k = 0; k < sizeof(nc_families) / sizeof(nc_families[0]); ++k) {
        nc_check_case(&nc_families[k], p);
    }
}

static void
test_nccl_families_1(void)
{
    /* the communicators span every GPU: a 1-rank run needs a 1-GPU machine */
    if (!nc_skip(1) && (nc_w.p == 1)) {
        nc_families_at(1);
    }
}

static void
test_nccl_families_all(void)
{
    if (!nc_skip(2)) {
        nc_families_at(nc_w.p);
    }
}

static void
test_nccl_passthrough(void)
{
    static const nc_case_t cases[] = {
        {"none",    TERSE_FLOAT32,  100003, 2, -1, TERSE_OP_SUM, 0, 0, NULL},
        {"none",    TERSE_BFLOAT16, 4097,   2, -1, TERSE_OP_AVG, 1, 0, NULL},
        {"quant:4", TERSE_FLOAT64,  4099,   2, -1, TERSE_OP_SUM, 0, 0, NULL},
    };
    size_t k;

    if (nc_skip(1)) {
        return;
    }
    for (k = 0; k < sizeof(cases) / sizeof(cases[0]); ++k) {
        nc_check_case(&cases[k], nc_w.p);
    }
}

static void
test_nccl_nonfinite(void)
{
    static const char *specs[] = {"quant:4", "sign", "cast:bf16", "topk:0.01", "randomk:0.01",
                                  "powersgd:4"};
    size_t k;

    if (nc_skip(2)) {
        return;
    }
    for (k = 0; k < sizeof(specs) / sizeof(specs[0]); ++k) {
        nc_case_t c = {specs[k], TERSE_FLOAT32, 100233, 2, nc_w.p - 1, TERSE_OP_SUM, 0, 0, NULL};
        nc_check_case(&c, nc_w.p);
    }
}

static void
test_nccl_half_odd(void)
{
    static const nc_case_t cases[] = {
        {"quant:4",   TERSE_FLOAT16,  100003, 2, -1, TERSE_OP_SUM, 0, 1, NULL},
        {"quant:4",   TERSE_BFLOAT16, 100003, 2, -1, TERSE_OP_AVG, 1, 1, NULL},
        {"cast:bf16", TERSE_BFLOAT16, 100003, 2, -1, TERSE_OP_SUM, 0, 0, NULL},
        {"topk:0.01", TERSE_FLOAT16,  100003, 2, -1, TERSE_OP_SUM, 0, 1, NULL},
        {"quant:8",   TERSE_FLOAT32,  1001,   2, -1, TERSE_OP_SUM, 0, 1, NULL},
        {"quant:4",   TERSE_FLOAT32,  7,      2, -1, TERSE_OP_SUM, 1, 1, NULL},
    };
    size_t k;

    if (nc_skip(1)) {
        return;
    }
    for (k = 0; k < sizeof(cases) / sizeof(cases[0]); ++k) {
        nc_check_case(&cases[k], nc_w.p);
    }
}

/* Many layers in one buffer (a TERSE_LAYOUT file): the device path runs the quant, sign, cast,
 * top-k and random-k layers up to 2^20 elements as multi-tensor tables (algo_device.c,
 * DEV_TABLE_MAX) and the larger one by itself; quant, sign and top-k bit for bit the host
 * path's per-layer results, cast and random-k within their bounds (NCCL adds the payloads in
 * its own order). Counts: odd, tiny,
 * across buckets, the table limit exactly and one above it; the NaN case's value (n / 2) sits
 * in the 2^20 table layer. The total is used by no other case (the layout applies to that
 * size only, on the suite's shared contexts). */
static const size_t nc_layer_counts[] = {7, 1000, 33, 4096, 1, 70001, 255, 257,
                                         (size_t)1 << 20, ((size_t)1 << 20) + 1};
#define NC_LAYERS_N (75650 + 2 * ((size_t)1 << 20) + 1)

static void
test_nccl_layers(void)
{
    char path[64];
    FILE *f;
    size_t k, total = 0;

    if (nc_skip(1)) {
        return;
    }
    snprintf(path, sizeof(path), "/tmp/terse_nc_layout_%d.txt", (int)getpid());
    f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    for (k = 0; k < sizeof(nc_layer_counts) / sizeof(nc_layer_counts[0]); ++k) {
        fprintf(f, "%zu 0 0 l%zu\n", nc_layer_counts[k], k);
        total += nc_layer_counts[k];
    }
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(total, NC_LAYERS_N);
    {
        const nc_case_t cases[] = {
            {"quant:4", TERSE_FLOAT32,  NC_LAYERS_N, 3, -1, TERSE_OP_SUM, 0, 1, path},
            {"quant:8", TERSE_FLOAT16,  NC_LAYERS_N, 2, -1, TERSE_OP_AVG, 1, 1, path},
            {"sign",    TERSE_BFLOAT16, NC_LAYERS_N, 2, -1, TERSE_OP_SUM, 0, 1, path},
            {"quant:4", TERSE_FLOAT32,  NC_LAYERS_N, 2, 0,  TERSE_OP_SUM, 0, 0, path},
            /* cast tables (dev_cs_tables), both kinds */
            {"cast:bf16", TERSE_FLOAT32, NC_LAYERS_N, 2, -1, TERSE_OP_SUM, 0, 0, path},
            {"cast:fp16", TERSE_FLOAT16, NC_LAYERS_N, 2, -1, TERSE_OP_AVG, 1, 0, path},
            /* PowerSGD's stage 1 of all layers in one batch (dev_setup_psgd_batch) */
            {"powersgd:4", TERSE_FLOAT32, NC_LAYERS_N, 3, -1, TERSE_OP_SUM, 0, 0, path},
            /* top-k tables (dev_xt_tables): sums in place (fp32 SUM) or in their own buffer
             * then the from-f32 table (fp16 AVG); a NaN in the table layer */
            {"topk:0.01",  TERSE_FLOAT32, NC_LAYERS_N, 3, -1, TERSE_OP_SUM, 0, 1, path},
            {"topkt:0.01", TERSE_FLOAT16, NC_LAYERS_N, 2, -1, TERSE_OP_AVG, 1, 1, path},
            {"topk:0.01",  TERSE_FLOAT32, NC_LAYERS_N, 2, 0,  TERSE_OP_SUM, 0, 0, path},
            /* random-k tables (dev_rk_tables) */
            {"randomk:0.01", TERSE_BFLOAT16, NC_LAYERS_N, 3, -1, TERSE_OP_SUM, 1, 0, path},
        };
        for (k = 0; k < sizeof(cases) / sizeof(cases[0]); ++k) {
            nc_check_case(&cases[k], nc_w.p);
        }
    }
    unlink(path);
}

/* Host buffers on an NCCL context, device buffers on a host context: refused. */
static void
test_nccl_refusals(void)
{
    terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
    terse_ctx_t *ctx = NULL;
    float h[4] = {0};

    if (nc_skip(1) || (nc_w.p != 1)) {
        /* a 1-rank context is the only one a single thread may create alone */
        if (nc_w.p > 1) {
            printf("\n  (runs with one GPU only) ");
        }
        return;
    }
    cudaSetDevice(0);
    params.transport = TERSE_TRANSPORT_NCCL;
    params.comm      = nc_w.comms[0];
    TERSE_TEST_OK(terse_ctx_create(&params, &ctx));
    CU_ASSERT_EQUAL(terse_allreduce(ctx, h, h, 4, TERSE_FLOAT32, TERSE_OP_SUM, TERSE_MEM_HOST,
                                    NULL),
                    TERSE_ERR_UNSUPPORTED);
    terse_ctx_destroy(ctx);
}

/* Destroying a context and creating another over the same communicator (in one process with
 * a thread per rank). Run alone by bench/gpu_nccl.sh with TNC_RECREATE=1; skipped otherwise.
 * On the 2xH200 machine (NCCL 2.28.9) without the barrier below, round 1 hung: rank 0 had left
 * terse_ctx_destroy and launched the plain allreduce on the parent (a kernel waiting for rank
 * 1) while rank 1 was still inside terse_ctx_destroy, whose cudaFree / ncclCommDestroy wait
 * for device work. So in one process driving several GPUs, every rank's context must be
 * destroyed before any rank enqueues further collectives among them: the barrier. (Not yet
 * rerun on the GPU machine with it.) */
static pthread_barrier_t nc_recreate_bar;

static void *
nc_recreate_rank(void *arg)
{
    const int r = (int)(intptr_t)arg;
    terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
    terse_ctx_t *ctx = NULL;
    cudaStream_t s;
    void *d = NULL;
    int round;

    cudaSetDevice(r);
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    cudaMalloc(&d, 1 << 20);
    cudaMemsetAsync(d, 0, 1 << 20, s);
    params.transport = TERSE_TRANSPORT_NCCL;
    params.comm      = nc_w.comms[r];
    for (round = 0; round < 2; ++round) {
        nc_note("  [recreate rank %d round %d: create]\n", r, round);
        if (terse_ctx_create(&params, &ctx) != TERSE_OK) {
            nc_note("  [recreate rank %d: create failed]\n", r);
            break;
        }
        nc_note("  [recreate rank %d round %d: allreduce]\n", r, round);
        terse__ctx_set_uniform(ctx, "quant:4");
        terse_allreduce(ctx, d, d, 65536, TERSE_FLOAT32, TERSE_OP_SUM, TERSE_MEM_CUDA, s);
        cudaStreamSynchronize(s);
        nc_note("  [recreate rank %d round %d: destroy]\n", r, round);
        terse_ctx_destroy(ctx);
        pthread_barrier_wait(&nc_recreate_bar);
        nc_note("  [recreate rank %d round %d: plain allreduce on the parent]\n", r, round);
        nc_w.api->AllReduce(d, d, 1024, ncclFloat32, ncclSum, nc_w.comms[r], s);
        cudaStreamSynchronize(s);
        nc_note("  [recreate rank %d round %d: done]\n", r, round);
    }
    cudaFree(d);
    cudaStreamDestroy(s);
    return NULL;
}

static void
test_nccl_recreate(void)
{
    pthread_t tid[NC_MAXP];
    int r;

    if ((getenv("TNC_RECREATE") == NULL) || nc_skip(2)) {
        printf("\n  (diagnostic: set TNC_RECREATE=1) ");
        return;
    }
    pthread_barrier_init(&nc_recreate_bar, NULL, (unsigned)nc_w.p);
    for (r = 0; r < nc_w.p; ++r) {
        pthread_create(&tid[r], NULL, nc_recreate_rank, (void *)(intptr_t)r);
    }
    for (r = 0; r < nc_w.p; ++r) {
        pthread_join(tid[r], NULL);
    }
    pthread_barrier_destroy(&nc_recreate_bar);
}

CU_TestInfo test_nccl_recreate_tests[] = {
    {"destroy a context and create another (diagnostic)", test_nccl_recreate},
    CU_TEST_INFO_NULL,
};

CU_TestInfo test_nccl_cuda_tests[] = {
    {"every family, 1 rank", test_nccl_families_1},
    {"every family, all GPUs: exact bound, ranks and host bitwise", test_nccl_families_all},
    {"pass-through bit-identical to ncclAllReduce", test_nccl_passthrough},
    {"non-finite on one rank reaches every rank", test_nccl_nonfinite},
    {"fp16, bf16, odd and tiny counts, in place, AVG", test_nccl_half_odd},
    {"many layers in one buffer: multi-tensor tables", test_nccl_layers},
    {"host buffers on an NCCL context are refused", test_nccl_refusals},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_nccl_cuda_suites[] = {
    {"comm_nccl_cuda", nc_suite_init, nc_suite_clean, NULL, NULL, test_nccl_cuda_tests},
    {"comm_nccl_recreate_cuda", nc_suite_init, nc_suite_clean, NULL, NULL,
     test_nccl_recreate_tests},
    CU_SUITE_INFO_NULL,
};
