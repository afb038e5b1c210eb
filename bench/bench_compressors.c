/*
 * terse-bench -m compressors: every compressor on flat host buffers, one CPU core.
 *
 * For each size (-b .. -e bytes of -d elements, times -f) and compressor (-C, or every family
 * and grid parameter that works on flat host buffers, with a `none` baseline row per size):
 *   ratio       uncompressed bytes / payload bytes
 *   compress    GB/s of fp32-equivalent input (4 bytes x count / time), with error feedback
 *               (v = in + residual, residual updated), mean over -n calls after -w warm-ups
 *   decompress  GB/s likewise (scale 1, into a buffer of -d elements)
 *   relerr      ||D(C(x)) - x|| / ||x|| of one compress without residual
 *   #wrong      with -c 1: elements where decompress_add onto zeros differs from decompress,
 *               plus 1 when the compressor's reported squared error is not the error it made
 *               (relative 1e-5), plus 1 when a finite input raised the non-finite flag
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"
#include "compressor.h"

typedef struct bc_spec {
    const terse_cmp_ops_t *ops;
    double                 param;
    char                   label[TERSE_BENCH_SPEC_LEN];
} bc_spec_t;

static void
bc_label(const terse_cmp_ops_t *ops, double param, char *buf, size_t len)
{
    if (strcmp(ops->name, "cast") == 0) {
        snprintf(buf, len, "cast:%s", (param == 1.0) ? "fp16" : "bf16");
        return;
    }
    terse__cmp_spec_format(ops, param, buf, len);
}

/* Fills specs: the user's, or the default set; `none` always comes first. */
static int
bc_specs(const terse_bench_opts_t *opts, bc_spec_t *specs, size_t max, size_t *n_p)
{
    size_t n = 0, i, g;
    terse_cmp_spec_t s;
    char why[256];

    specs[n].ops   = terse__cmp_find("none");
    specs[n].param = 0.0;
    strcpy(specs[n].label, "none");
    ++n;
    if (opts->nspecs > 0) {
        for (i = 0; i < opts->nspecs; ++i) {
            if (terse__cmp_spec_parse(opts->specs[i], &s, why, sizeof(why)) != TERSE_OK) {
                fprintf(stderr, "terse-bench: -C %s: %s\n", opts->specs[i], why);
                return -1;
            }
            if (s.is_auto) {
                fprintf(stderr, "terse-bench: -C auto is a plan, not a compressor\n");
                return -1;
            }
            if ((strcmp(s.ops->name, "none") == 0) || (n >= max)) {
                continue;
            }
            specs[n].ops   = s.ops;
            specs[n].param = s.param;
            bc_label(s.ops, s.param, specs[n].label, sizeof(specs[n].label));
            ++n;
        }
    } else {
        for (i = 0; terse__cmp_builtin[i] != NULL; ++i) {
            const terse_cmp_ops_t *ops = terse__cmp_builtin[i];
            if ((strcmp(ops->name, "none") == 0) || !(ops->caps & TERSE_CMP_CAP_CPU) ||
                (ops->caps & TERSE_CMP_CAP_MATRIX)) {
                continue;
            }
            for (g = 0; (ops->grid != NULL) && (ops->grid[g] >= 0.0) && (n < max); ++g) {
                specs[n].ops   = ops;
                specs[n].param = ops->grid[g];
                bc_label(ops, ops->grid[g], specs[n].label, sizeof(specs[n].label));
                ++n;
            }
        }
    }
    *n_p = n;
    return 0;
}

typedef struct bc_bufs {
    void    *in;       /* count elements of dtype */
    float   *x;        /* the same values as fp32 (aliases in for fp32) */
    float   *residual;
    void    *out;      /* count elements of dtype */
    float   *dec;      /* fp32 decode for relerr and checks */
    float   *acc;
    uint8_t *payload;  /* stage payloads alternate between payload and payload2 */
    uint8_t *payload2;
    void    *last;     /* the last stage's payload of the latest round trip */
    size_t   payload_cap;
} bc_bufs_t;

typedef struct bc_row {
    double ratio, comp_gbs, decomp_gbs, relerr;
    long   wrong;
} bc_row_t;

/* The stream a compressor gets at step `step`: summable families (random-k) draw from the
 * stream shared by every rank, the others from rank 0's own. */
static terse_rng_t
bc_rng(const terse_bench_opts_t *opts, const terse_cmp_ops_t *ops, uint32_t step)
{
    if (ops->caps & TERSE_CMP_CAP_SUMMABLE) {
        return terse_rng_make(opts->seed, TERSE_RNG_RANDOMK, 0, step, TERSE_RNG_SHARED);
    }
    return terse_rng_make(opts->seed, TERSE_RNG_QUANT, 0, step, 0);
}

/* One single-rank round trip: compress (stage 0), then every later stage of a multi-stage
 * summable family with its own payload standing in for the sum over ranks, then decompress the
 * last stage's payload into dec. bytes[s] are the stage sizes; the last payload is left in
 * b->payload or b->payload2 (returned through last_p). */
static terse_status_t
bc_roundtrip(const terse_cmp_ops_t *ops, void *ctx, const terse_buf_t *in, float *residual,
             const terse_rng_t *rng, bc_bufs_t *b, const size_t *bytes, unsigned nstages,
             uint32_t *flags_p, double *sq_p, const terse_buf_t *dec, int do_decompress)
{
    void *cur = b->payload, *next = b->payload2, *tmp;
    unsigned st;

    TERSE_CHECK(ops->compress(ctx, in, residual, rng, cur, bytes[0], flags_p, sq_p, NULL));
    for (st = 1; st < nstages; ++st) {
        TERSE_CHECK(ops->stage(ctx, st, cur, bytes[st - 1], next, bytes[st], sq_p, NULL));
        tmp  = cur;
        cur  = next;
        next = tmp;
    }
    if (do_decompress) {
        TERSE_CHECK(ops->decompress(ctx, cur, bytes[nstages - 1], 1.0f, dec, NULL));
    }
    b->last = cur;
    return TERSE_OK;
}

/* Runs one (size, compressor) row. Returns 0, or -1 when the family cannot run it (skipped). */
static int
bc_run(const terse_bench_opts_t *opts, const bc_spec_t *sp, size_t count, bc_bufs_t *b,
       bc_row_t *row)
{
    const terse_cmp_ops_t *ops = sp->ops;
    size_t esize = terse_dtype_size(opts->dtype), bytes[4] = {0, 0, 0, 0}, total = 0, i;
    terse_cmp_params_t p;
    terse_buf_t in  = {b->in, count, opts->dtype, TERSE_MEM_HOST};
    terse_buf_t out = {b->out, count, opts->dtype, TERSE_MEM_HOST};
    terse_buf_t dec = {b->dec, count, TERSE_FLOAT32, TERSE_MEM_HOST};
    terse_rng_t rng;
    uint32_t flags = 0;
    double sq = 0.0, err = 0.0, norm = 0.0, t0 = 0.0, t1;
    void *ctx = NULL;
    unsigned nst = 0, st;
    int it, warm;

    memset(&p, 0, sizeof(p));
    p.size   = sizeof(p);
    p.param  = sp->param;
    p.count  = count;
    p.dtype  = opts->dtype;
    p.mem    = TERSE_MEM_HOST;
    p.nranks = 1;
    p.seed   = opts->seed;
    /* low-rank and real-gradient inputs are matrices of 1024 columns; gaussian input is flat
     * (PowerSGD then applies its reshape rule) */
    if ((ops->caps & TERSE_CMP_CAP_MATRIX) && (opts->dist != TERSE_BENCH_GAUSSIAN) &&
        (count % 1024 == 0)) {
        p.rows = count / 1024;
        p.cols = 1024;
    }
    if (ops->create(&p, &ctx) != TERSE_OK) {
        return -1;
    }
    nst = ops->nstages(ctx);
    for (st = 0; st < nst; ++st) {
        if ((st >= sizeof(bytes) / sizeof(bytes[0])) ||
            (ops->payload_size(ctx, count, st, &bytes[st]) != TERSE_OK) ||
            (bytes[st] > b->payload_cap)) {
            ops->destroy(ctx);
            return -1;
        }
        total += bytes[st];
    }
    memset(row, 0, sizeof(*row));
    row->ratio = (double)(count * esize) / (double)total;

    /* error and checks: one compress of x alone (multi-stage families first warm their
     * factors up for a few steps, as in training) */
    warm = ((nst > 1) || (ops->caps & TERSE_CMP_CAP_MATRIX)) ? 5 : 0;
    for (it = 0; it < warm; ++it) {
        rng = bc_rng(opts, ops, (uint32_t)it);
        if (bc_roundtrip(ops, ctx, &in, NULL, &rng, b, bytes, nst, &flags, &sq, &dec, 1) !=
            TERSE_OK) {
            ops->destroy(ctx);
            return -1;
        }
    }
    rng = bc_rng(opts, ops, (uint32_t)warm); /* steps keep increasing (powersgd1 alternates) */
    if (bc_roundtrip(ops, ctx, &in, NULL, &rng, b, bytes, nst, &flags, &sq, &dec, 1) !=
        TERSE_OK) {
        ops->destroy(ctx);
        return -1;
    }
    for (i = 0; i < count; ++i) {
        double d = (double)b->dec[i] - (double)b->x[i];
        err += d * d;
        norm += (double)b->x[i] * (double)b->x[i];
    }
    row->relerr = (norm > 0.0) ? sqrt(err / norm) : 0.0;
    if (opts->check) {
        if (flags != 0) {
            ++row->wrong;
        }
        if (fabs(sq - err) > 1e-5 * err + 1e-30) {
            ++row->wrong;
        }
        if (ops->decompress_add != NULL) {
            memset(b->acc, 0, count * sizeof(float));
            if (ops->decompress_add(ctx, b->last, bytes[nst - 1], b->acc, count, &flags, NULL) !=
                TERSE_OK) {
                row->wrong += (long)count;
            } else {
                for (i = 0; i < count; ++i) {
                    row->wrong += (b->acc[i] != b->dec[i]);
                }
            }
        }
    }

    /* compress (all stages) with error feedback */
    memset(b->residual, 0, count * sizeof(float));
    for (it = 0; it < opts->warmup + opts->iters; ++it) {
        if (it == opts->warmup) {
            t0 = terse_bench_now();
        }
        rng = bc_rng(opts, ops, (uint32_t)(warm + 1 + it));
        bc_roundtrip(ops, ctx, &in, b->residual, &rng, b, bytes, nst, &flags, NULL, &dec, 0);
    }
    t1            = terse_bench_now();
    row->comp_gbs = 4.0 * (double)count * opts->iters / (t1 - t0) / 1e9;

    for (it = 0; it < opts->warmup + opts->iters; ++it) {
        if (it == opts->warmup) {
            t0 = terse_bench_now();
        }
        ops->decompress(ctx, b->last, bytes[nst - 1], 1.0f, &out, NULL);
    }
    t1              = terse_bench_now();
    row->decomp_gbs = 4.0 * (double)count * opts->iters / (t1 - t0) / 1e9;
    ops->destroy(ctx);
    return 0;
}

static void
bc_free(bc_bufs_t *b, terse_dtype_t dtype)
{
    if (dtype != TERSE_FLOAT32) {
        free(b->x);
    }
    free(b->in);
    free(b->residual);
    free(b->out);
    free(b->dec);
    free(b->acc);
    free(b->payload);
    free(b->payload2);
}

int
terse_bench_compressors(const terse_bench_opts_t *opts, int argc, char **argv)
{
    bc_spec_t specs[TERSE_BENCH_MAX_SPECS * 2];
    size_t nspecs = 0, esize = terse_dtype_size(opts->dtype), maxn, size, s;
    bc_bufs_t b;
    int rc = 0;

    (void)argc;
    (void)argv;
    if (bc_specs(opts, specs, sizeof(specs) / sizeof(specs[0]), &nspecs) != 0) {
        return 2;
    }
    maxn = opts->max_bytes / esize;
    memset(&b, 0, sizeof(b));
    b.in          = malloc(maxn * esize + 64);
    b.x           = (opts->dtype == TERSE_FLOAT32) ? b.in : malloc(maxn * sizeof(float) + 64);
    b.residual    = malloc(maxn * sizeof(float) + 64);
    b.out         = malloc(maxn * esize + 64);
    b.dec         = malloc(maxn * sizeof(float) + 64);
    b.acc         = malloc(maxn * sizeof(float) + 64);
    b.payload_cap = 2 * maxn * sizeof(float) + 4096;
    b.payload     = malloc(b.payload_cap);
    b.payload2    = malloc(b.payload_cap);
    if ((b.in == NULL) || (b.x == NULL) || (b.residual == NULL) || (b.out == NULL) ||
        (b.dec == NULL) || (b.acc == NULL) || (b.payload == NULL) ||
        (b.payload2 == NULL)) {
        fprintf(stderr, "terse-bench: out of memory for %zu bytes\n", opts->max_bytes);
        bc_free(&b, opts->dtype);
        return 2;
    }
    if (terse_bench_input(opts, 0, b.x, maxn) != 0) {
        bc_free(&b, opts->dtype);
        return 2;
    }
    if (opts->dtype != TERSE_FLOAT32) {
        terse__convert_from_f32(b.x, 1.0f, b.in, opts->dtype, maxn);
        terse__convert_to_f32(b.in, opts->dtype, b.x, maxn); /* x: what the compressors see */
    }

    terse_bench_header(opts, "threads: 1 (host buffers)");
    printf("# %11s %12s %9s %14s %8s %10s %10s %9s %7s\n", "size", "count", "type", "compressor",
           "ratio", "compress", "decompress", "relerr", "#wrong");
    printf("# %11s %12s %9s %14s %8s %10s %10s %9s %7s\n", "(B)", "(elements)", "", "", "",
           "(GB/s)", "(GB/s)", "", "");
    for (size = opts->min_bytes; size <= opts->max_bytes; size *= opts->step_factor) {
        size_t count = size / esize;
        for (s = 0; s < nspecs; ++s) {
            bc_row_t row;
            if (bc_run(opts, &specs[s], count, &b, &row) != 0) {
                printf("# %zu %s: skipped (the family cannot run on a flat host buffer of this "
                       "size)\n", size, specs[s].label);
                continue;
            }
            printf("  %11zu %12zu %9s %14s %8.2f %10.2f %10.2f %9.2e %7ld\n", count * esize,
                   count, terse_bench_dtype_name(opts->dtype), specs[s].label, row.ratio,
                   row.comp_gbs, row.decomp_gbs, row.relerr, opts->check ? row.wrong : -1L);
            fflush(stdout);
            if (opts->json != NULL) {
                fprintf(opts->json,
                        "{\"size\": %zu, \"count\": %zu, \"type\": \"%s\", \"compressor\": "
                        "\"%s\", \"ratio\": %.6g, \"compress_gbs\": %.6g, \"decompress_gbs\": "
                        "%.6g, \"relerr\": %.6g, \"wrong\": %ld}\n",
                        count * esize, count, terse_bench_dtype_name(opts->dtype),
                        specs[s].label, row.ratio, row.comp_gbs, row.decomp_gbs, row.relerr,
                        opts->check ? row.wrong : -1L);
            }
            if (opts->check && (row.wrong != 0)) {
                rc = 1;
            }
        }
        if (size > opts->max_bytes / opts->step_factor) {
            break; /* the next size would overflow or pass the end */
        }
    }
    printf("# GB/s: 4 bytes x count per second (fp32-equivalent input), one core, error "
           "feedback on\n");
    printf("# input: %s%s\n", terse_bench_dist_name(opts->dist),
           (opts->dist == TERSE_BENCH_GAUSSIAN)
               ? " (i.i.d. N(0,1): a worst case for top-k and low rank)"
               : (opts->dist == TERSE_BENCH_LOWRANK)
                     ? " (rank 4 + 0.1 noise, 1024 columns)"
                     : " (raw lm_grads_step300*.f32 concatenated and cycled)");
    bc_free(&b, opts->dtype);
    return rc;
}
