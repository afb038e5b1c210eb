/*
 * terse-bench -m allreduce -T nccl: the compressed allreduce over NCCL on device buffers,
 * nccl-tests style, with plain ncclAllReduce rows measured in the same run (the first table).
 * The columns are those of the MPI mode (bench_allreduce.c): size, count, type, ratio, time,
 * algbw, busbw ("effective" when compressed), wirebw, relerr, #wrong.
 *
 * Ranks: one thread per visible GPU in one process (ncclCommInitAll), or, under mpirun in a
 * build with MPI, one process per rank (MPI only broadcasts the ncclUniqueId; the device is
 * the local rank modulo the visible GPUs). Everything else (barriers, MAX of times, the exact
 * sum for relerr, the broadcast for #wrong) runs over NCCL on the caller's communicator.
 *
 * Per size, every rank's input comes from -D salted by its rank; one terse context per
 * compressor lives through the whole run, so each size is a fresh layout (its first call has
 * no residual: that call gives relerr and #wrong). Then -w warm-up calls (auto: give it at
 * least TERSE_WARMUP_STEPS + 2 so the plan is in force) and -n timed calls; time is the
 * slowest rank's mean per call.
 *
 * NCCL is not linked: terse-bench dlopens TERSE_NCCL_LIBRARY or libnccl.so.2 first (as an
 * application would have loaded it) and terse resolves that copy.
 */
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

#include "bench.h"
#include "nccl_loader.h"
#include "terse_internal.h"
#include "transport_nccl.h"

#if TERSE_HAVE_MPI
#include <mpi.h>
#endif

#define BN_MAXP 8

typedef struct bn_row {
    double   time_us;
    double   ratio;
    double   wire_per_call;
    double   relerr;
    uint64_t wrong;
    int      failed;
} bn_row_t;

typedef struct bn_world {
    const terse_bench_opts_t *b;
    const terse_nccl_api_t   *api;
    const char               *cmp[TERSE_BENCH_MAX_SPECS];
    int                       ncmp;
    terse_dtype_t             dtype;
    terse_op_t                op;
    int                       p;
    size_t                    nsizes;
    size_t                    sizes[64];
    bn_row_t                 *rows;   /* [(c + 1) * nsizes + z], written by rank 0 */
    ncclComm_t                comms[BN_MAXP];
    int                       devices[BN_MAXP];
    int                       rc[BN_MAXP];
} bn_world_t;

typedef struct bn_rank {
    bn_world_t   *w;
    int           r;
    ncclComm_t    comm;
    int           device;
    cudaStream_t  s;
    terse_ctx_t  *ctx[TERSE_BENCH_MAX_SPECS];
    void         *dx, *dy, *dref, *dtmp;
    double       *dex;
    float        *in;
    void         *x, *y, *ref;
    double       *ex;
} bn_rank_t;

#define BN_CUDA(_call)                                                                         \
    do {                                                                                       \
        cudaError_t _e = (_call);                                                              \
        if (_e != cudaSuccess) {                                                               \
            fprintf(stderr, "terse-bench: %s failed: %s\n", #_call, cudaGetErrorString(_e));   \
            return -1;                                                                         \
        }                                                                                      \
    } while (0)

#define BN_NCCL(_api, _call)                                                                   \
    do {                                                                                       \
        ncclResult_t _r = (_call);                                                             \
        if (_r != ncclSuccess) {                                                               \
            fprintf(stderr, "terse-bench: %s failed: %s\n", #_call, (_api)->GetErrorString(_r)); \
            return -1;                                                                         \
        }                                                                                      \
    } while (0)

/* ---------------------------------------------------------------- collectives over NCCL */
static int
bn_barrier(bn_rank_t *k)
{
    BN_NCCL(k->w->api, k->w->api->AllReduce(k->dtmp, k->dtmp, 1, ncclFloat32, ncclSum, k->comm,
                                            k->s));
    BN_CUDA(cudaStreamSynchronize(k->s));
    return 0;
}

/* MAX (is_max) or SUM of one double over the ranks. */
static int
bn_reduce_double(bn_rank_t *k, double *v, int is_max)
{
    /* on k->s: a pageable cudaMemcpy on the legacy stream may not have landed when k->s runs */
    BN_CUDA(cudaMemcpyAsync(k->dtmp, v, sizeof(double), cudaMemcpyHostToDevice, k->s));
    BN_NCCL(k->w->api, k->w->api->AllReduce(k->dtmp, k->dtmp, 1, ncclFloat64,
                                            is_max ? ncclMax : ncclSum, k->comm, k->s));
    BN_CUDA(cudaStreamSynchronize(k->s));
    BN_CUDA(cudaMemcpy(v, k->dtmp, sizeof(double), cudaMemcpyDeviceToHost));
    return 0;
}

/* ---------------------------------------------------------------- one row */
static int
bn_call(bn_rank_t *k, int c, size_t n)
{
    bn_world_t *w = k->w;

    if (c < 0) {
        BN_NCCL(w->api, w->api->AllReduce(k->dx, k->dy, n, terse__nccl_dtype(w->dtype),
                                          (w->op == TERSE_OP_AVG) ? ncclAvg : ncclSum, k->comm,
                                          k->s));
        return 0;
    }
    return (terse_allreduce(k->ctx[c], k->dx, k->dy, n, w->dtype, w->op, TERSE_MEM_CUDA, k->s) <
            0) ? -1 : 0;
}

static int
bn_row(bn_rank_t *k, int c, size_t n, bn_row_t *row)
{
    bn_world_t *w   = k->w;
    const size_t es = terse_dtype_size(w->dtype);
    const int p     = w->p;
    terse_stats_t st0, st1;
    double t0, t, bad = 0.0;
    size_t i;
    int it;

    memset(row, 0, sizeof(*row));
    if (bn_call(k, c, n) != 0) {
        return -1;
    }
    BN_CUDA(cudaStreamSynchronize(k->s));
    if (w->b->check) {
        /* #wrong: elements that differ from rank 0's result, or are not finite */
        BN_CUDA(cudaMemcpy(k->y, k->dy, n * es, cudaMemcpyDeviceToHost));
        BN_NCCL(w->api, w->api->Broadcast(k->dy, k->dref, n * es, ncclUint8, 0, k->comm, k->s));
        BN_CUDA(cudaStreamSynchronize(k->s));
        BN_CUDA(cudaMemcpy(k->ref, k->dref, n * es, cudaMemcpyDeviceToHost));
        for (i = 0; i < n; ++i) {
            if ((memcmp((unsigned char *)k->ref + i * es, (unsigned char *)k->y + i * es, es) !=
                 0) ||
                !isfinite(terse__load_f32(k->y, w->dtype, i))) {
                bad += 1.0;
            }
        }
        if (bn_reduce_double(k, &bad, 0) != 0) {
            return -1;
        }
        row->wrong = (uint64_t)bad;
        if (k->r == 0) {
            const double scale = (w->op == TERSE_OP_AVG) ? 1.0 / p : 1.0;
            double e0 = 0.0, e1 = 0.0, d;
            for (i = 0; i < n; ++i) {
                d = (double)terse__load_f32(k->y, w->dtype, i) - k->ex[i] * scale;
                e0 += d * d;
                e1 += k->ex[i] * scale * k->ex[i] * scale;
            }
            row->relerr = (e1 > 0.0) ? sqrt(e0 / e1) : 0.0;
        }
    }
    for (it = 0; it < w->b->warmup; ++it) {
        if (bn_call(k, c, n) != 0) {
            return -1;
        }
    }
    memset(&st0, 0, sizeof(st0));
    memset(&st1, 0, sizeof(st1));
    st0.size = st1.size = sizeof(st0);
    if (c >= 0) {
        terse_stats_get(k->ctx[c], &st0);
    }
    if (bn_barrier(k) != 0) {
        return -1;
    }
    t0 = terse_bench_now();
    for (it = 0; it < w->b->iters; ++it) {
        if (bn_call(k, c, n) != 0) {
            return -1;
        }
    }
    BN_CUDA(cudaStreamSynchronize(k->s));
    t = (terse_bench_now() - t0) / TERSE_MAX(w->b->iters, 1);
    if (bn_reduce_double(k, &t, 1) != 0) {
        return -1;
    }
    row->time_us       = t * 1e6;
    row->wire_per_call = 2.0 * (p - 1) / p * (double)n * es;
    row->ratio         = 1.0;
    if (c >= 0) {
        double sent, plainb;
        terse_stats_get(k->ctx[c], &st1);
        sent   = (double)(st1.bytes_sent - st0.bytes_sent) / TERSE_MAX(w->b->iters, 1);
        plainb = (double)(st1.bytes_plain - st0.bytes_plain) / TERSE_MAX(w->b->iters, 1);
        row->wire_per_call = sent;
        row->ratio         = (sent > 0.0) ? plainb / sent : 1.0;
    }
    return 0;
}

/* ---------------------------------------------------------------- one rank */
static int
bn_rank_alloc(bn_rank_t *k, size_t maxn)
{
    const size_t es = terse_dtype_size(k->w->dtype);

    BN_CUDA(cudaSetDevice(k->device));
    BN_CUDA(cudaStreamCreateWithFlags(&k->s, cudaStreamNonBlocking));
    BN_CUDA(cudaMalloc(&k->dx, maxn * es + 16));
    BN_CUDA(cudaMalloc(&k->dy, maxn * es + 16));
    BN_CUDA(cudaMalloc(&k->dtmp, 64));
    BN_CUDA(cudaMemset(k->dtmp, 0, 64));
    k->in = malloc(maxn * sizeof(float) + 16);
    k->x  = malloc(maxn * es + 16);
    if (k->w->b->check) {
        BN_CUDA(cudaMalloc(&k->dref, maxn * es + 16));
        BN_CUDA(cudaMalloc((void **)&k->dex, maxn * sizeof(double) + 16));
        k->y   = malloc(maxn * es + 16);
        k->ref = malloc(maxn * es + 16);
        k->ex  = malloc(maxn * sizeof(double) + 16);
        if ((k->y == NULL) || (k->ref == NULL) || (k->ex == NULL)) {
            return -1;
        }
    }
    return ((k->in == NULL) || (k->x == NULL)) ? -1 : 0;
}

static void
bn_rank_free(bn_rank_t *k)
{
    int c;

    for (c = 0; c < k->w->ncmp; ++c) {
        terse_ctx_destroy(k->ctx[c]);
    }
    cudaFree(k->dx);
    cudaFree(k->dy);
    cudaFree(k->dref);
    cudaFree(k->dex);
    cudaFree(k->dtmp);
    if (k->s != NULL) {
        cudaStreamDestroy(k->s);
    }
    free(k->in);
    free(k->x);
    free(k->y);
    free(k->ref);
    free(k->ex);
}

static int
bn_rank_run(bn_rank_t *k)
{
    bn_world_t *w   = k->w;
    const size_t es = terse_dtype_size(w->dtype);
    const size_t maxn = w->sizes[w->nsizes - 1] / es;
    terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
    size_t z, i;
    int c;

    if (bn_rank_alloc(k, maxn) != 0) {
        return -1;
    }
    for (c = 0; c < w->ncmp; ++c) {
        params.transport = TERSE_TRANSPORT_NCCL;
        params.comm      = k->comm;
        params.seed      = (w->b->seed != 0) ? w->b->seed : 1;
        if ((terse_ctx_create(&params, &k->ctx[c]) != TERSE_OK) ||
            (terse__ctx_set_uniform(k->ctx[c], w->cmp[c]) != TERSE_OK)) {
            fprintf(stderr, "terse-bench: rank %d: no context for %s\n", k->r, w->cmp[c]);
            return -1;
        }
    }
    for (z = 0; z < w->nsizes; ++z) {
        const size_t n = w->sizes[z] / es;
        if (terse_bench_input(w->b, (uint64_t)k->r, k->in, n) != 0) {
            return -1;
        }
        terse__convert_from_f32(k->in, 1.0f, k->x, w->dtype, n);
        BN_CUDA(cudaMemcpyAsync(k->dx, k->x, n * es, cudaMemcpyHostToDevice, k->s));
        if (w->b->check) {
            for (i = 0; i < n; ++i) {
                k->ex[i] = terse__load_f32(k->x, w->dtype, i);
            }
            BN_CUDA(cudaMemcpyAsync(k->dex, k->ex, n * sizeof(double), cudaMemcpyHostToDevice, k->s));
            BN_NCCL(w->api, w->api->AllReduce(k->dex, k->dex, n, ncclFloat64, ncclSum, k->comm,
                                              k->s));
            BN_CUDA(cudaStreamSynchronize(k->s));
            BN_CUDA(cudaMemcpy(k->ex, k->dex, n * sizeof(double), cudaMemcpyDeviceToHost));
        }
        for (c = -1; c < w->ncmp; ++c) {
            bn_row_t row;
            if (bn_row(k, c, n, &row) != 0) {
                fprintf(stderr, "terse-bench: rank %d: %s failed at %zu bytes\n", k->r,
                        (c < 0) ? "plain" : w->cmp[c], w->sizes[z]);
                return -1;
            }
            if (k->r == 0) {
                w->rows[(size_t)(c + 1) * w->nsizes + z] = row;
                /* the row as it comes (the tables print at the end) */
                fprintf(stderr, "# row %-14s %12zu B ratio %7.2f time %10.1f us relerr %7.1e "
                        "wrong %llu\n", (c < 0) ? "plain" : w->cmp[c], w->sizes[z], row.ratio,
                        row.time_us, row.relerr, (unsigned long long)row.wrong);
            }
        }
    }
    return 0;
}

static void *
bn_thread(void *arg)
{
    bn_rank_t *k = arg;

    k->w->rc[k->r] = bn_rank_run(k);
    return NULL;
}

/* ---------------------------------------------------------------- the table */
static void
bn_print(const bn_world_t *w, const char *how)
{
    const size_t es = terse_dtype_size(w->dtype);
    char extra[160];
    size_t z;
    int c;

    snprintf(extra, sizeof(extra), "transport nccl %d (%s) nRanks %d op %s", w->api->version, how,
             w->p, (w->op == TERSE_OP_AVG) ? "avg" : "sum");
    terse_bench_header(w->b, extra);
    for (c = -1; c < w->ncmp; ++c) {
        const char *spec = (c < 0) ? NULL : w->cmp[c];
        double sum_busbw = 0.0;
        int nrows        = 0;
        printf("# compressor %s\n", (spec != NULL) ? spec : "none (plain ncclAllReduce)");
        printf("#        size        count     type   ratio       time   algbw   busbw  "
               "wirebw   relerr  #wrong\n");
        printf("#         (B)   (elements)                        (us)  (GB/s)  (GB/s)  "
               "(GB/s)\n");
        for (z = 0; z < w->nsizes; ++z) {
            const bn_row_t *row = &w->rows[(size_t)(c + 1) * w->nsizes + z];
            const size_t n      = w->sizes[z] / es;
            double algbw, busbw, wirebw;
            if (row->time_us <= 0.0) {
                printf("%13zu %12zu %8s   failed\n", w->sizes[z], n,
                       terse_bench_dtype_name(w->dtype));
                continue;
            }
            algbw  = (double)n * es / (row->time_us * 1e3);
            busbw  = algbw * 2.0 * (w->p - 1) / w->p;
            wirebw = row->wire_per_call / (row->time_us * 1e3);
            sum_busbw += busbw;
            ++nrows;
            printf("%13zu %12zu %8s %7.2f %10.1f %7.3f %7.3f %7.3f  %7.1e %7llu\n", w->sizes[z],
                   n, terse_bench_dtype_name(w->dtype), row->ratio, row->time_us, algbw, busbw,
                   wirebw, row->relerr, (unsigned long long)row->wrong);
            if (w->b->json != NULL) {
                fprintf(w->b->json,
                        "{\"mode\":\"allreduce\",\"transport\":\"nccl\",\"nranks\":%d,"
                        "\"compressor\":\"%s\",\"size\":%zu,\"count\":%zu,\"type\":\"%s\","
                        "\"ratio\":%.4f,\"time_us\":%.2f,\"algbw\":%.4f,\"busbw\":%.4f,"
                        "\"wirebw\":%.4f,\"relerr\":%.4e,\"wrong\":%llu,\"input\":\"%s\"}\n",
                        w->p, (spec != NULL) ? spec : "none", w->sizes[z], n,
                        terse_bench_dtype_name(w->dtype), row->ratio, row->time_us, algbw,
                        busbw, wirebw, row->relerr, (unsigned long long)row->wrong,
                        terse_bench_dist_name(w->b->dist));
            }
        }
        printf("# Avg %sbus bandwidth : %.3f\n", (spec == NULL) ? "" : "effective ",
               (nrows > 0) ? sum_busbw / nrows : 0.0);
        printf("# input: %s\n#\n", terse_bench_dist_name(w->b->dist));
    }
    fflush(stdout);
}

/* ---------------------------------------------------------------- bootstrap */
static int
bn_load_nccl(bn_world_t *w)
{
    const char *lib = getenv("TERSE_NCCL_LIBRARY");

    if (dlopen((lib != NULL) && (lib[0] != '\0') ? lib : "libnccl.so.2",
               RTLD_NOW | RTLD_GLOBAL) == NULL) {
        fprintf(stderr, "terse-bench: cannot load NCCL (%s): set LD_LIBRARY_PATH or "
                "TERSE_NCCL_LIBRARY\n", dlerror());
        return -1;
    }
    if (terse__nccl_api(NULL, &w->api) != TERSE_OK) {
        fprintf(stderr, "terse-bench: terse cannot resolve the loaded NCCL\n");
        return -1;
    }
    return 0;
}

static int
bn_threads(bn_world_t *w)
{
    bn_rank_t ranks[BN_MAXP];
    pthread_t tid[BN_MAXP];
    int ndev = 0, r, rc = 0;

    if ((cudaGetDeviceCount(&ndev) != cudaSuccess) || (ndev < 1)) {
        fprintf(stderr, "terse-bench: no CUDA device\n");
        return 1;
    }
    w->p = TERSE_MIN(ndev, BN_MAXP);
    for (r = 0; r < w->p; ++r) {
        w->devices[r] = r;
    }
    if (w->api->CommInitAll(w->comms, w->p, w->devices) != ncclSuccess) {
        fprintf(stderr, "terse-bench: ncclCommInitAll over %d GPUs failed\n", w->p);
        return 1;
    }
    w->rows = calloc((size_t)(w->ncmp + 1) * w->nsizes, sizeof(bn_row_t));
    memset(ranks, 0, sizeof(ranks));
    for (r = 0; r < w->p; ++r) {
        ranks[r] = (bn_rank_t){.w = w, .r = r, .comm = w->comms[r], .device = r};
        if (pthread_create(&tid[r], NULL, bn_thread, &ranks[r]) != 0) {
            fprintf(stderr, "terse-bench: cannot start rank %d\n", r);
            exit(1); /* the started ranks would wait for it forever */
        }
    }
    for (r = 0; r < w->p; ++r) {
        pthread_join(tid[r], NULL);
        rc |= (w->rc[r] != 0);
    }
    bn_print(w, "threads");
    for (r = 0; r < w->p; ++r) {
        cudaSetDevice(r);
        bn_rank_free(&ranks[r]);
        w->api->CommDestroy(w->comms[r]);
    }
    free(w->rows);
    return rc;
}

#if TERSE_HAVE_MPI
static int
bn_mpi_size(void)
{
    const char *v = getenv("OMPI_COMM_WORLD_SIZE");

    if (v == NULL) {
        v = getenv("PMI_SIZE");
    }
    return (v != NULL) ? atoi(v) : 0;
}

static int
bn_mpi(bn_world_t *w)
{
    bn_rank_t k;
    ncclUniqueId id;
    const char *lr = getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    int provided, rank, size, ndev = 0, rc, all;

    MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if ((size > BN_MAXP * 64) || (cudaGetDeviceCount(&ndev) != cudaSuccess) || (ndev < 1)) {
        fprintf(stderr, "terse-bench: rank %d: no CUDA device\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    if (rank == 0) {
        w->api->GetUniqueId(&id);
    }
    MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD);
    memset(&k, 0, sizeof(k));
    k.w      = w;
    k.r      = rank;
    k.device = ((lr != NULL) ? atoi(lr) : rank) % ndev;
    w->p     = size;
    cudaSetDevice(k.device);
    if (w->api->CommInitRank(&k.comm, size, id, rank) != ncclSuccess) {
        fprintf(stderr, "terse-bench: rank %d: ncclCommInitRank failed\n", rank);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
    w->rows = calloc((size_t)(w->ncmp + 1) * w->nsizes, sizeof(bn_row_t));
    rc      = bn_rank_run(&k);
    MPI_Allreduce(&rc, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (rank == 0) {
        bn_print(w, "mpirun");
    }
    bn_rank_free(&k);
    w->api->CommDestroy(k.comm);
    free(w->rows);
    MPI_Finalize();
    return (all != 0) ? 1 : 0;
}
#endif

int
terse_bench_allreduce_nccl(const terse_bench_opts_t *opts, int argc, char **argv)
{
    static const char *const defaults[] = {"quant:4", "quant:8", "topk:0.01", "powersgd:4",
                                           "auto"};
    bn_world_t *w = calloc(1, sizeof(*w));
    size_t size, i;
    int rc;

    (void)argc;
    (void)argv;
    if (w == NULL) {
        return 1;
    }
    w->b     = opts;
    w->dtype = opts->dtype;
    w->op = ((opts->op != NULL) && (strcmp(opts->op, "avg") == 0)) ? TERSE_OP_AVG : TERSE_OP_SUM;
    for (i = 0; i < opts->nspecs; ++i) {
        if (strcmp(opts->specs[i], "none") != 0) { /* the plain rows always run */
            w->cmp[w->ncmp++] = opts->specs[i];
        }
    }
    if (opts->nspecs == 0) {
        for (i = 0; i < sizeof(defaults) / sizeof(defaults[0]); ++i) {
            w->cmp[w->ncmp++] = defaults[i];
        }
    }
    for (size = opts->min_bytes; (size <= opts->max_bytes) && (w->nsizes < 64);
         size = (opts->step_factor > 1) ? size * opts->step_factor : size * 2) {
        w->sizes[w->nsizes++] = size;
    }
    if ((w->dtype != TERSE_FLOAT32) && (w->dtype != TERSE_FLOAT16) &&
        (w->dtype != TERSE_BFLOAT16)) {
        fprintf(stderr, "terse-bench: -T nccl takes -d float, half or bfloat16\n");
        free(w);
        return 2;
    }
    if (bn_load_nccl(w) != 0) {
        free(w);
        return 1;
    }
#if TERSE_HAVE_MPI
    if (bn_mpi_size() > 1) {
        rc = bn_mpi(w);
        free(w);
        return rc;
    }
#endif
    rc = bn_threads(w);
    free(w);
    return rc;
}
