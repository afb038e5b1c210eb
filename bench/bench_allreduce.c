/*
 * terse-bench -m allreduce: compressed allreduce over MPI (host buffers), nccl-tests style
 * (STYLE.md section 11). For each compressor (-C, repeatable; a plain MPI_Allreduce "none"
 * baseline always runs first in the same job) and each size (-b .. -e, times -f), every rank
 * allreduces (SUM, fp32) its own input through terse_allreduce on MPI_COMM_WORLD.
 *
 * Columns:
 *   size    bytes per rank (uncompressed);  count  fp32 elements
 *   ratio   plain bytes sent / terse bytes sent per call (DESIGN.md section 9; counted by the
 *           transport, agreement traffic included)
 *   time    mean of -n timed calls after -w warm-up calls, the slowest rank's (us)
 *   algbw   uncompressed bytes / time; busbw  algbw x 2(p-1)/p ("effective" when compressed)
 *   wirebw  bytes terse handed to MPI per call / time
 *   relerr  ||x^ - x|| / ||x|| of the first call of a fresh context (no residual yet) against
 *           the exact sum (PMPI_Allreduce of the inputs in double)
 *   #wrong  elements that differ between ranks (the result must be bitwise identical) plus
 *           non-finite elements: collective bugs, 0 when healthy
 * Input: -D (terse_bench_input, salted by the rank: every rank has its own data), printed in
 * the header. -d float|half|bfloat16 and -o sum|avg are honoured; the baseline of 16-bit
 * types is terse's own deterministic sum ("none"), MPI having no 16-bit float SUM.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "bench.h"
#include "terse_internal.h"

typedef struct ba_opts {
    const terse_bench_opts_t *b;
    const char *cmp[TERSE_BENCH_MAX_SPECS];
    int         ncmp;
    terse_dtype_t dtype;
    terse_op_t  op;
} ba_opts_t;

/* ---------------------------------------------------------------- one row */
typedef struct ba_row {
    double   time_us;
    double   ratio;
    double   wire_per_call;
    double   relerr;
    uint64_t wrong;
} ba_row_t;

/* Elements that differ from rank 0's result (bitwise) or are non-finite, summed over ranks. */
static uint64_t
ba_wrong(const void *y, size_t n, terse_dtype_t dtype)
{
    const size_t es = terse__esize(dtype);
    unsigned char *ref = malloc(TERSE_MAX(n * es, 1));
    uint64_t bad = 0, total = 0;
    int rank;
    size_t i;

    if (ref == NULL) {
        return ~0ull;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) {
        memcpy(ref, y, n * es);
    }
    for (i = 0; i < n * es; i += ((size_t)1 << 28)) {
        int m = (int)TERSE_MIN(n * es - i, (size_t)1 << 28);
        PMPI_Bcast(ref + i, m, MPI_BYTE, 0, MPI_COMM_WORLD);
    }
    for (i = 0; i < n; ++i) {
        if ((memcmp(ref + i * es, (const unsigned char *)y + i * es, es) != 0) ||
            !isfinite(terse__load_f32(y, dtype, i))) {
            ++bad;
        }
    }
    free(ref);
    PMPI_Allreduce(&bad, &total, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    return total;
}

/* ||y - exact|| / ||exact||, exact = the sum (or mean) of every rank's input in double. */
static double
ba_relerr(const ba_opts_t *o, const void *x, const void *y, size_t n, double *exact, int nranks)
{
    double e[2] = {0.0, 0.0}, scale = (o->op == TERSE_OP_AVG) ? 1.0 / nranks : 1.0;
    size_t i;

    for (i = 0; i < n; ++i) {
        exact[i] = terse__load_f32(x, o->dtype, i);
    }
    for (i = 0; i < n; i += ((size_t)1 << 24)) {
        int m = (int)TERSE_MIN(n - i, (size_t)1 << 24);
        PMPI_Allreduce(MPI_IN_PLACE, exact + i, m, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    }
    for (i = 0; i < n; ++i) {
        double d = (double)terse__load_f32(y, o->dtype, i) - exact[i] * scale;
        e[0] += d * d;
        e[1] += exact[i] * scale * exact[i] * scale;
    }
    return (e[1] > 0.0) ? sqrt(e[0] / e[1]) : 0.0;
}

/* The plain baseline: MPI_Allreduce itself for fp32 (AVG divides afterwards, as a trainer
 * would); terse's deterministic native sum for 16-bit types. */
static void
ba_plain(const ba_opts_t *o, terse_ctx_t *native, const void *x, void *y, size_t n, int nranks)
{
    size_t i;

    if (native != NULL) {
        terse_allreduce(native, x, y, n, o->dtype, o->op, TERSE_MEM_HOST, NULL);
        return;
    }
    PMPI_Allreduce(x, y, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (o->op == TERSE_OP_AVG) {
        for (i = 0; i < n; ++i) {
            ((float *)y)[i] /= (float)nranks;
        }
    }
}

static int
ba_run_row(const ba_opts_t *o, const char *spec, size_t n, const void *x, void *y,
           double *exact, int nranks, ba_row_t *row)
{
    MPI_Comm world = MPI_COMM_WORLD;
    terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
    terse_ctx_t *ctx = NULL;
    terse_stats_t st0, st1;
    const int plain = (spec == NULL);
    double t0, t, tmax;
    int it;

    memset(row, 0, sizeof(*row));
    if (!plain || (o->dtype != TERSE_FLOAT32)) {
        params.transport = TERSE_TRANSPORT_MPI;
        params.comm      = &world;
        params.seed      = (o->b->seed != 0) ? o->b->seed : 1;
        if ((terse_ctx_create(&params, &ctx) != TERSE_OK) ||
            (terse__ctx_set_uniform(ctx, plain ? "none" : spec) != TERSE_OK)) {
            terse_ctx_destroy(ctx);
            return -1;
        }
    }
    /* the check call: a fresh context, no residual yet */
    if (plain) {
        ba_plain(o, ctx, x, y, n, nranks);
    } else if (terse_allreduce(ctx, x, y, n, o->dtype, o->op, TERSE_MEM_HOST, NULL) < 0) {
        terse_ctx_destroy(ctx);
        return -1;
    }
    if (o->b->check) {
        row->relerr = ba_relerr(o, x, y, n, exact, nranks);
        row->wrong  = ba_wrong(y, n, o->dtype);
    }
    for (it = 0; it < o->b->warmup; ++it) {
        if (plain) {
            ba_plain(o, ctx, x, y, n, nranks);
        } else {
            terse_allreduce(ctx, x, y, n, o->dtype, o->op, TERSE_MEM_HOST, NULL);
        }
    }
    memset(&st0, 0, sizeof(st0));
    memset(&st1, 0, sizeof(st1));
    st0.size = st1.size = sizeof(st0);
    if (ctx != NULL) {
        terse_stats_get(ctx, &st0);
    }
    PMPI_Barrier(MPI_COMM_WORLD);
    t0 = MPI_Wtime();
    for (it = 0; it < o->b->iters; ++it) {
        if (plain) {
            ba_plain(o, ctx, x, y, n, nranks);
        } else {
            terse_allreduce(ctx, x, y, n, o->dtype, o->op, TERSE_MEM_HOST, NULL);
        }
    }
    t = (MPI_Wtime() - t0) / TERSE_MAX(o->b->iters, 1);
    PMPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    row->time_us = tmax * 1e6;
    row->wire_per_call = 2.0 * (nranks - 1) / nranks * (double)n * terse__esize(o->dtype);
    row->ratio         = 1.0;
    if (ctx != NULL) {
        double sent, plainb;
        terse_stats_get(ctx, &st1);
        sent   = (double)(st1.bytes_sent - st0.bytes_sent) / TERSE_MAX(o->b->iters, 1);
        plainb = (double)(st1.bytes_plain - st0.bytes_plain) / TERSE_MAX(o->b->iters, 1);
        if (!plain) {
            row->wire_per_call = sent;
            row->ratio         = (sent > 0.0) ? plainb / sent : 1.0;
        }
        terse_ctx_destroy(ctx);
    }
    return 0;
}

/* ---------------------------------------------------------------- the table */
static int
ba_run(const ba_opts_t *o)
{
    const size_t es = terse__esize(o->dtype);
    size_t size, maxn = o->b->max_bytes / es;
    int rank, nranks, c, rc = 0;
    char extra[128];
    float *in;
    void *x, *y;
    double *exact = NULL;

    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    in = malloc(TERSE_MAX(maxn, 1) * sizeof(float));
    x  = malloc(TERSE_MAX(maxn, 1) * es);
    y  = malloc(TERSE_MAX(maxn, 1) * es);
    if (o->b->check) {
        exact = malloc(TERSE_MAX(maxn, 1) * sizeof(double));
    }
    if ((in == NULL) || (x == NULL) || (y == NULL) || (o->b->check && (exact == NULL))) {
        fprintf(stderr, "terse-bench: out of memory for %zu bytes\n", o->b->max_bytes);
        rc = 1;
        goto out;
    }
    if (rank == 0) {
        snprintf(extra, sizeof(extra), "transport mpi nRanks %d op %s", nranks,
                 (o->op == TERSE_OP_AVG) ? "avg" : "sum");
        terse_bench_header(o->b, extra);
    }
    for (c = -1; c < o->ncmp; ++c) {
        const char *spec = (c < 0) ? NULL : o->cmp[c];
        double sum_busbw = 0.0;
        int nrows        = 0;
        if ((spec != NULL) && (strcmp(spec, "none") == 0)) {
            continue; /* the baseline row is the none row */
        }
        if (rank == 0) {
            printf("# compressor %s\n",
                   (spec != NULL) ? spec
                                  : ((o->dtype == TERSE_FLOAT32) ? "none (plain MPI_Allreduce)"
                                                                 : "none (terse native sum)"));
            printf("#        size        count     type   ratio       time   algbw   busbw  "
                   "wirebw   relerr  #wrong\n");
            printf("#         (B)   (elements)                        (us)  (GB/s)  (GB/s)  "
                   "(GB/s)\n");
        }
        for (size = o->b->min_bytes; size <= o->b->max_bytes;
             size = (o->b->step_factor > 1) ? size * o->b->step_factor : size * 2) {
            size_t n = size / es;
            ba_row_t row;
            double algbw, busbw, wirebw;
            if (terse_bench_input(o->b, (uint64_t)rank, in, n) != 0) {
                rc = 1;
                break;
            }
            terse__convert_from_f32(in, 1.0f, x, o->dtype, n);
            if (ba_run_row(o, spec, n, x, y, exact, nranks, &row) != 0) {
                if (rank == 0) {
                    printf("# %s: failed at %zu bytes\n", (spec != NULL) ? spec : "none", size);
                }
                rc = 1;
                break;
            }
            algbw  = (double)n * es / (row.time_us * 1e3);
            busbw  = algbw * 2.0 * (nranks - 1) / nranks;
            wirebw = row.wire_per_call / (row.time_us * 1e3);
            sum_busbw += busbw;
            ++nrows;
            if (rank == 0) {
                printf("%13zu %12zu %8s %7.2f %10.1f %7.3f %7.3f %7.3f  %7.1e %7llu\n", size, n,
                       terse_bench_dtype_name(o->dtype), row.ratio, row.time_us, algbw, busbw,
                       wirebw, row.relerr, (unsigned long long)row.wrong);
                fflush(stdout);
                if (o->b->json != NULL) {
                    fprintf(o->b->json,
                            "{\"mode\":\"allreduce\",\"transport\":\"mpi\",\"nranks\":%d,"
                            "\"compressor\":\"%s\",\"size\":%zu,\"count\":%zu,\"type\":\"%s\","
                            "\"ratio\":%.4f,\"time_us\":%.2f,\"algbw\":%.4f,\"busbw\":%.4f,"
                            "\"wirebw\":%.4f,\"relerr\":%.4e,\"wrong\":%llu,\"input\":\"%s\"}\n",
                            nranks, (spec != NULL) ? spec : "none", size, n,
                            terse_bench_dtype_name(o->dtype), row.ratio, row.time_us, algbw,
                            busbw, wirebw, row.relerr, (unsigned long long)row.wrong,
                            terse_bench_dist_name(o->b->dist));
                    fflush(o->b->json);
                }
            }
            if (size == 0) {
                break;
            }
        }
        if (rank == 0) {
            printf("# Avg %sbus bandwidth : %.3f\n", (spec == NULL) ? "" : "effective ",
                   (nrows > 0) ? sum_busbw / nrows : 0.0);
            printf("# input: %s%s\n#\n", terse_bench_dist_name(o->b->dist),
                   ((spec != NULL) && (strncmp(spec, "topk", 4) == 0) &&
                    (o->b->dist == TERSE_BENCH_GAUSSIAN))
                       ? " (top-k of i.i.d. data keeps little: relerr near 1 is expected)"
                       : "");
            fflush(stdout);
        }
        if (rc != 0) {
            break;
        }
    }
out:
    free(in);
    free(x);
    free(y);
    free(exact);
    return rc;
}

/* ---------------------------------------------------------------- entry point */
int
terse_bench_allreduce(const terse_bench_opts_t *opts, int argc, char **argv)
{
    static const char *const defaults[] = {"quant:4", "topk:0.01", "powersgd:4"};
    ba_opts_t o;
    int init = 0, provided, rc;
    size_t i;

    (void)argc;
    (void)argv;
    memset(&o, 0, sizeof(o));
    o.b     = opts;
    o.dtype = opts->dtype;
    o.op    = ((opts->op != NULL) && (strcmp(opts->op, "avg") == 0)) ? TERSE_OP_AVG : TERSE_OP_SUM;
    for (i = 0; i < opts->nspecs; ++i) {
        o.cmp[o.ncmp++] = opts->specs[i];
    }
    if (o.ncmp == 0) {
        for (i = 0; i < sizeof(defaults) / sizeof(defaults[0]); ++i) {
            o.cmp[o.ncmp++] = defaults[i];
        }
    }
    if ((o.dtype != TERSE_FLOAT32) && (o.dtype != TERSE_FLOAT16) && (o.dtype != TERSE_BFLOAT16)) {
        fprintf(stderr, "terse-bench: -m allreduce takes -d float, half or bfloat16\n");
        return 2;
    }
    MPI_Initialized(&init);
    if (!init) {
        MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
    }
    rc = ba_run(&o);
    if (!init) {
        MPI_Finalize();
    }
    return rc;
}
