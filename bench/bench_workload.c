/*
 * terse-bench -m workload: one model-shaped training step's gradient allreduce over MPI (host
 * buffers), timed end to end (issue 9 item 4; DESIGN.md section 6).
 *
 * The model: -M resnet50|bert-base|gpt2-small (bench/model_shapes/<name>.txt) or a path to a
 * file of lines "name d0 [d1 ...]" in registration order. Every parameter is registered
 * through the C API (terse_layer_register): a tensor of two or more dimensions as the matrix
 * (d0, d1 x d2 x ...), so a conv weight (out, in, kh, kw) is (out, in*kh*kw); a 1-D tensor
 * as a flat layer (0, 0). One step is one terse_allreduce (SUM, fp32) of the whole flat
 * gradient, as a trainer with one bucket would issue it.
 *
 * Settings, all in the same job (rows in this order):
 *   plain       MPI_Allreduce of the flat buffer (the baseline; its result is the reference)
 *   auto        the error-budget scheduler (TERSE_ERROR_BUDGET etc. as configured); its
 *               TERSE_WARMUP_STEPS uncompressed steps and the planning step run untimed first
 *   -C spec...  uniform settings, every layer the same compressor through terse_plan_set
 *               (default: quant:4 topk:0.01 powersgd:4); -C auto adds no second auto row
 * Per setting: the untimed scheduler warm-up (auto only), one check step (the first
 * compressed one: no residual yet), -w warm-up steps, -n timed steps.
 *
 * Columns:
 *   time    mean step time of the timed steps, the slowest rank's (ms)
 *   algbw   gradient bytes / time (GB/s; "effective" when compressed)
 *   speedup plain time / time (same job)
 *   ratio   plain ring bytes / bytes terse handed to MPI per step (agreement traffic included)
 *   relerr  ||y - y_plain|| / ||y_plain|| of the check step, y_plain = the plain row's result
 *   #wrong  ranks whose result differs bitwise from rank 0's (a 64-bit hash of the output,
 *           allgathered) plus non-finite output elements over all ranks: 0 when healthy
 *   cmp     layers the plan compresses (not "none") / layers
 *   intra, inter  of the bytes sent per step (rank 0, MB): inside the node uncompressed and
 *           between nodes compressed, when the allreduce is hierarchical (TERSE_HIERARCHY)
 * Input: each rank draws N(0, 1) (-D gaussian, salted by the rank) and scales each layer so
 * its squared norm matches the layer's sq_norm in bench/plan_data/<model>.tsv (per-layer
 * statistics of real gradients) when that file exists and names the layer; layers it does not
 * name take the RMS scale of those it does; without a file the input stays N(0, 1). The
 * header says which. -D lowrank|file fill the flat buffer unscaled. fp32 only.
 * A progress line goes to stderr (rank 0) at most every 2 s while a setting runs.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <mpi.h>

#include "bench.h"
#include "terse_internal.h"

#ifndef TERSE_BENCH_SRC_DIR
#define TERSE_BENCH_SRC_DIR "bench"
#endif

int terse_bench_workload(const terse_bench_opts_t *opts, const char *model);

/* ---------------------------------------------------------------- the model */
typedef struct bw_layer {
    char   name[TERSE_NAME_MAX];
    size_t count, rows, cols;
    double scale;   /* input scale of this layer's N(0, 1) draw */
    int    matched; /* found in the plan_data statistics */
} bw_layer_t;

typedef struct bw_model {
    char        name[128];  /* "gpt2-small", or the file's base name */
    char        path[4096]; /* the shape file */
    bw_layer_t *layer;      /* owned */
    size_t      nlayers, total;
    char        input[8800]; /* how the input was made, for the header */
} bw_model_t;

static int
bw_exists(const char *path)
{
    struct stat st;

    return (stat(path, &st) == 0) && S_ISREG(st.st_mode);
}

/* Finds the shape file of `model` (a name or a path); fills m->name and m->path. */
static int
bw_model_locate(const char *model, bw_model_t *m)
{
    const char *base;
    char name[128];
    size_t i;

    if (bw_exists(model)) {
        snprintf(m->path, sizeof(m->path), "%s", model);
        base = strrchr(model, '/');
        snprintf(m->name, sizeof(m->name), "%s", (base != NULL) ? base + 1 : model);
        if ((strlen(m->name) > 4) && (strcmp(m->name + strlen(m->name) - 4, ".txt") == 0)) {
            m->name[strlen(m->name) - 4] = '\0';
        }
        return 0;
    }
    snprintf(name, sizeof(name), "%s", model);
    for (i = 0; name[i] != '\0'; ++i) {
        if (name[i] == '_') {
            name[i] = '-';
        }
    }
    snprintf(m->name, sizeof(m->name), "%s", name);
    snprintf(m->path, sizeof(m->path), "%s/model_shapes/%s.txt", TERSE_BENCH_SRC_DIR, name);
    if (!bw_exists(m->path)) {
        fprintf(stderr, "terse-bench: no model %s (neither a file nor %s); shipped: resnet50, "
                        "bert-base, gpt2-small\n", model, m->path);
        return -1;
    }
    return 0;
}

static int
bw_model_read(bw_model_t *m)
{
    FILE *f = fopen(m->path, "r");
    char line[1024];
    size_t cap = 0, lineno = 0;

    if (f == NULL) {
        fprintf(stderr, "terse-bench: cannot read %s\n", m->path);
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *tok, *save = NULL;
        size_t dims[8], nd = 0, k;
        bw_layer_t *l;

        ++lineno;
        tok = strtok_r(line, " \t\r\n", &save);
        if ((tok == NULL) || (tok[0] == '#')) {
            continue;
        }
        if (m->nlayers == cap) {
            bw_layer_t *grown;
            cap   = (cap == 0) ? 256 : 2 * cap;
            grown = realloc(m->layer, cap * sizeof(*grown));
            if (grown == NULL) {
                fclose(f);
                fprintf(stderr, "terse-bench: out of memory reading %s\n", m->path);
                return -1;
            }
            m->layer = grown;
        }
        l = &m->layer[m->nlayers];
        memset(l, 0, sizeof(*l));
        snprintf(l->name, sizeof(l->name), "%s", tok);
        while ((tok = strtok_r(NULL, " \t\r\n", &save)) != NULL) {
            char *end;
            unsigned long long v = strtoull(tok, &end, 10);
            if ((*end != '\0') || (v == 0) || (nd == 8)) {
                fclose(f);
                fprintf(stderr, "terse-bench: %s:%zu: bad dimension '%s'\n", m->path, lineno,
                        tok);
                return -1;
            }
            dims[nd++] = (size_t)v;
        }
        if (nd == 0) {
            fclose(f);
            fprintf(stderr, "terse-bench: %s:%zu: a name without a shape\n", m->path, lineno);
            return -1;
        }
        l->count = dims[0];
        for (k = 1; k < nd; ++k) {
            l->count *= dims[k];
        }
        l->rows  = (nd >= 2) ? dims[0] : 0;
        l->cols  = (nd >= 2) ? l->count / dims[0] : 0;
        l->scale = 1.0;
        m->total += l->count;
        ++m->nlayers;
    }
    fclose(f);
    if (m->nlayers == 0) {
        fprintf(stderr, "terse-bench: %s holds no layers\n", m->path);
        return -1;
    }
    return 0;
}

/* Reads sq_norm per layer from bench/plan_data/<model with '_'>.tsv into the layers' scales. */
static void
bw_model_scales(bw_model_t *m)
{
    char path[4300], line[8192], name[128];
    size_t i, matched = 0;
    double rms = 0.0;
    FILE *f;

    snprintf(name, sizeof(name), "%s", m->name);
    for (i = 0; name[i] != '\0'; ++i) {
        if (name[i] == '-') {
            name[i] = '_';
        }
    }
    snprintf(path, sizeof(path), "%s/plan_data/%s.tsv", TERSE_BENCH_SRC_DIR, name);
    f = fopen(path, "r");
    if (f == NULL) {
        snprintf(m->input, sizeof(m->input), "gaussian N(0,1) per rank (no %s)", path);
        return;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *save = NULL, *tok[7];
        int k;
        if ((line[0] == '#') || (strncmp(line, "name\t", 5) == 0)) {
            continue;
        }
        tok[0] = strtok_r(line, "\t\n", &save);
        for (k = 1; (k < 7) && (tok[k - 1] != NULL); ++k) {
            tok[k] = strtok_r(NULL, "\t\n", &save);
        }
        if ((k < 7) || (tok[6] == NULL)) {
            continue;
        }
        for (i = 0; i < m->nlayers; ++i) {
            double sq = strtod(tok[6], NULL);
            if (!m->layer[i].matched && (strcmp(m->layer[i].name, tok[0]) == 0) && (sq > 0.0) &&
                isfinite(sq)) {
                m->layer[i].scale   = sqrt(sq / (double)m->layer[i].count);
                m->layer[i].matched = 1;
                rms += sq;
                ++matched;
                break;
            }
        }
    }
    fclose(f);
    if (matched == 0) {
        snprintf(m->input, sizeof(m->input), "gaussian N(0,1) per rank (%s names no layer)",
                 path);
        return;
    }
    {
        size_t cnt = 0;
        for (i = 0; i < m->nlayers; ++i) {
            cnt += m->layer[i].matched ? m->layer[i].count : 0;
        }
        rms = sqrt(rms / (double)cnt);
    }
    for (i = 0; i < m->nlayers; ++i) {
        if (!m->layer[i].matched) {
            m->layer[i].scale = rms;
        }
    }
    snprintf(m->input, sizeof(m->input),
             "gaussian per rank, each layer scaled to the sq_norm of %s (%zu/%zu layers; the "
             "rest at the RMS scale)", path, matched, m->nlayers);
}

/* ---------------------------------------------------------------- checks */
/* 64-bit hash of a buffer (word-wise multiply-xor; equal buffers give equal hashes). */
static uint64_t
bw_hash(const float *y, size_t n)
{
    const uint32_t *w = (const uint32_t *)y;
    uint64_t h = 0xcbf29ce484222325ull;
    size_t i;

    for (i = 0; i < n; ++i) {
        h = (h ^ w[i]) * 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h;
}

/* Ranks whose output hash differs from rank 0's, plus non-finite elements on all ranks. */
static uint64_t
bw_wrong(const float *y, size_t n, int nranks)
{
    uint64_t h = bw_hash(y, n), *all = malloc((size_t)nranks * sizeof(uint64_t));
    uint64_t bad = 0, total = 0;
    size_t i;
    int r;

    if (all == NULL) {
        return ~0ull;
    }
    for (i = 0; i < n; ++i) {
        bad += !isfinite(y[i]);
    }
    PMPI_Allreduce(&bad, &total, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    PMPI_Allgather(&h, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, MPI_COMM_WORLD);
    for (r = 1; r < nranks; ++r) {
        total += (all[r] != all[0]);
    }
    free(all);
    return total;
}

static double
bw_relerr(const float *y, const float *ref, size_t n)
{
    double e = 0.0, s = 0.0;
    size_t i;

    for (i = 0; i < n; ++i) {
        double d = (double)y[i] - (double)ref[i];
        e += d * d;
        s += (double)ref[i] * (double)ref[i];
    }
    return (s > 0.0) ? sqrt(e / s) : 0.0;
}

/* ---------------------------------------------------------------- one setting */
typedef struct bw_row {
    double   time_ms, ratio, relerr;
    uint64_t wrong;
    size_t   ncmp;      /* layers the plan compresses */
    double   intra, inter; /* bytes per step inside / between nodes (hierarchical) */
    long     presteps;  /* untimed scheduler warm-up steps */
} bw_row_t;

typedef struct bw_run {
    const terse_bench_opts_t *b;
    const bw_model_t         *m;
    int                       rank, nranks;
    const float              *x;
    float                    *y, *ref; /* ref: the plain result (check only) */
    double                    t_start, t_last;
} bw_run_t;

static void
bw_progress(bw_run_t *r, const char *setting, const char *phase, long i, long n)
{
    double now = terse_bench_now();

    if ((r->rank == 0) && (now - r->t_last >= 2.0)) {
        fprintf(stderr, "terse-bench: workload %s %s: %s step %ld/%ld, %.0f s\n", r->m->name,
                setting, phase, i, n, now - r->t_start);
        r->t_last = now;
    }
}

static int
bw_step(bw_run_t *r, terse_ctx_t *ctx)
{
    if (ctx == NULL) {
        return (PMPI_Allreduce(r->x, r->y, (int)r->m->total, MPI_FLOAT, MPI_SUM,
                               MPI_COMM_WORLD) == MPI_SUCCESS) ? 0 : -1;
    }
    return (terse_allreduce(ctx, r->x, r->y, r->m->total, TERSE_FLOAT32, TERSE_OP_SUM,
                            TERSE_MEM_HOST, NULL) == TERSE_OK) ? 0 : -1;
}

/* Context of a setting: layers registered; "auto" planned by the scheduler, a spec pinned
 * on every layer. */
static int
bw_ctx(bw_run_t *r, const char *setting, terse_ctx_t **ctx_p)
{
    MPI_Comm world = MPI_COMM_WORLD;
    terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
    terse_plan_entry_t *plan = NULL;
    terse_cmp_spec_t sp;
    terse_ctx_t *ctx = NULL;
    char why[256];
    size_t l;

    if (terse__cmp_spec_parse(setting, &sp, why, sizeof(why)) != TERSE_OK) {
        if (r->rank == 0) {
            fprintf(stderr, "terse-bench: -C %s: %s\n", setting, why);
        }
        return -1;
    }
    params.transport = TERSE_TRANSPORT_MPI;
    params.comm      = &world;
    params.seed      = (r->b->seed != 0) ? r->b->seed : 1;
    params.name      = "workload";
    if (terse_ctx_create(&params, &ctx) != TERSE_OK) {
        return -1;
    }
    for (l = 0; l < r->m->nlayers; ++l) {
        const bw_layer_t *ly = &r->m->layer[l];
        if (terse_layer_register(ctx, ly->name, ly->count, ly->rows, ly->cols, NULL) !=
            TERSE_OK) {
            goto err_ctx;
        }
    }
    if (sp.is_auto) {
        ctx->auto_reg = 1; /* whatever TERSE_COMPRESSOR says: this row is the scheduler's */
    } else {
        plan = calloc(r->m->nlayers, sizeof(*plan));
        if (plan == NULL) {
            goto err_ctx;
        }
        for (l = 0; l < r->m->nlayers; ++l) {
            plan[l].layer = (int)l;
            snprintf(plan[l].compressor, sizeof(plan[l].compressor), "%s", sp.ops->name);
            plan[l].param = sp.param;
        }
        if (terse_plan_set(ctx, plan, r->m->nlayers) != TERSE_OK) {
            goto err_plan;
        }
        free(plan);
    }
    *ctx_p = ctx;
    return 0;
err_plan:
    free(plan);
err_ctx:
    terse_ctx_destroy(ctx);
    return -1;
}

static size_t
bw_plan_compressed(const terse_ctx_t *ctx, size_t nlayers)
{
    terse_plan_entry_t *e = calloc(nlayers, sizeof(*e));
    size_t n = 0, l, ncmp = 0;

    if ((e == NULL) || (terse_plan_get(ctx, e, nlayers, &n) != TERSE_OK)) {
        free(e);
        return 0;
    }
    for (l = 0; (l < n) && (l < nlayers); ++l) {
        ncmp += (strcmp(e[l].compressor, "none") != 0);
    }
    free(e);
    return ncmp;
}

static int
bw_run_setting(bw_run_t *r, const char *setting, bw_row_t *row)
{
    terse_ctx_t *ctx = NULL;
    terse_stats_t st0, st1;
    const int plain = (setting == NULL);
    const char *label = plain ? "plain" : setting;
    double t0, t, tmax;
    long i;

    memset(row, 0, sizeof(*row));
    if (!plain) {
        if (bw_ctx(r, setting, &ctx) != 0) {
            return -1;
        }
        /* auto: the uncompressed warm-up steps and the planning step (the plan switches one
         * step later) run before the check step, so that it is the first compressed one */
        row->presteps = ctx->auto_reg ? TERSE_MAX(ctx->sched_warmup, 1) : 0;
    }
    for (i = 0; i < row->presteps; ++i) {
        bw_progress(r, label, "scheduler warm-up", i + 1, row->presteps);
        if (bw_step(r, ctx) != 0) {
            goto err_ctx;
        }
    }
    bw_progress(r, label, "check", 1, 1);
    if (bw_step(r, ctx) != 0) {
        goto err_ctx;
    }
    if (r->b->check) {
        if (plain) {
            memcpy(r->ref, r->y, r->m->total * sizeof(float));
        }
        row->relerr = bw_relerr(r->y, r->ref, r->m->total);
        row->wrong  = bw_wrong(r->y, r->m->total, r->nranks);
    }
    for (i = 0; i < r->b->warmup; ++i) {
        bw_progress(r, label, "warm-up", i + 1, r->b->warmup);
        if (bw_step(r, ctx) != 0) {
            goto err_ctx;
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
    for (i = 0; i < r->b->iters; ++i) {
        bw_progress(r, label, "timed", i + 1, r->b->iters);
        if (bw_step(r, ctx) != 0) {
            goto err_ctx;
        }
    }
    t = (MPI_Wtime() - t0) / TERSE_MAX(r->b->iters, 1);
    PMPI_Allreduce(&t, &tmax, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    row->time_ms = tmax * 1e3;
    row->ratio   = 1.0;
    row->ncmp    = 0;
    if (ctx != NULL) {
        double sent, plainb;
        terse_stats_get(ctx, &st1);
        sent       = (double)(st1.bytes_sent - st0.bytes_sent);
        plainb     = (double)(st1.bytes_plain - st0.bytes_plain);
        row->ratio = (sent > 0.0) ? plainb / sent : 1.0;
        row->ncmp  = bw_plan_compressed(ctx, r->m->nlayers);
        row->intra = (double)(st1.bytes_intra - st0.bytes_intra) / TERSE_MAX(r->b->iters, 1);
        row->inter = (double)(st1.bytes_inter - st0.bytes_inter) / TERSE_MAX(r->b->iters, 1);
        terse_ctx_destroy(ctx);
    }
    return 0;
err_ctx:
    terse_ctx_destroy(ctx);
    return -1;
}

/* ---------------------------------------------------------------- the table */
static void
bw_input(const terse_bench_opts_t *opts, const bw_model_t *m, int rank, float *x)
{
    size_t l, off = 0, i;

    if (opts->dist != TERSE_BENCH_GAUSSIAN) {
        return;
    }
    for (l = 0; l < m->nlayers; ++l) {
        const float s = (float)m->layer[l].scale;
        for (i = 0; i < m->layer[l].count; ++i) {
            x[off + i] *= s;
        }
        off += m->layer[l].count;
    }
    (void)rank;
}

static int
bw_table(const terse_bench_opts_t *opts, bw_model_t *m, const char **set, int nset)
{
    const size_t bytes = m->total * sizeof(float);
    bw_run_t r;
    float *x = NULL;
    double plain_ms = 0.0;
    char extra[256];
    int s, rc = 0;

    memset(&r, 0, sizeof(r));
    r.b = opts;
    r.m = m;
    MPI_Comm_rank(MPI_COMM_WORLD, &r.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &r.nranks);
    x     = malloc(bytes);
    r.y   = malloc(bytes);
    r.ref = opts->check ? malloc(bytes) : NULL;
    if ((x == NULL) || (r.y == NULL) || (opts->check && (r.ref == NULL))) {
        fprintf(stderr, "terse-bench: out of memory for %zu bytes of gradient\n", bytes);
        rc = 1;
        goto out;
    }
    if (terse_bench_input(opts, (uint64_t)r.rank, x, m->total) != 0) {
        rc = 1;
        goto out;
    }
    bw_input(opts, m, r.rank, x);
    r.x       = x;
    r.t_start = terse_bench_now();
    r.t_last  = r.t_start;
    if (r.rank == 0) {
        snprintf(extra, sizeof(extra), "transport mpi nRanks %d op sum", r.nranks);
        terse_bench_header(opts, extra);
        printf("# model %s (%s): %zu layers, %zu elements, %zu bytes per step\n", m->name,
               m->path, m->nlayers, m->total, bytes);
        printf("# input: %s\n",
               (opts->dist == TERSE_BENCH_GAUSSIAN) ? m->input : terse_bench_dist_name(opts->dist));
        printf("# per setting: scheduler warm-up (auto only), 1 check step, %d warm-up, %d timed "
               "steps; relerr against the plain row's result\n", opts->warmup, opts->iters);
        printf("#      model      setting        size  pre    time   algbw  speedup   ratio   "
               "relerr  #wrong      cmp    intra    inter\n");
        printf("#                                 (B)         (ms)  (GB/s)                     "
               "                          (MB)     (MB)\n");
        fflush(stdout);
        if (opts->json != NULL) {
            fprintf(opts->json,
                    "{\"mode\":\"workload\",\"model\":\"%s\",\"shapes\":\"%s\",\"layers\":%zu,"
                    "\"count\":%zu,\"size\":%zu,\"nranks\":%d,\"input\":\"%s\"}\n",
                    m->name, m->path, m->nlayers, m->total, bytes, r.nranks,
                    (opts->dist == TERSE_BENCH_GAUSSIAN) ? m->input
                                                         : terse_bench_dist_name(opts->dist));
        }
    }
    for (s = -1; s < nset; ++s) {
        const char *setting = (s < 0) ? NULL : set[s];
        bw_row_t row;
        double algbw;
        if (bw_run_setting(&r, setting, &row) != 0) {
            if (r.rank == 0) {
                printf("# %s: failed\n", (setting != NULL) ? setting : "plain");
            }
            rc = 1;
            break;
        }
        if (setting == NULL) {
            plain_ms = row.time_ms;
        }
        algbw = (double)bytes / (row.time_ms * 1e6);
        if (r.rank == 0) {
            char cmp[32];
            snprintf(cmp, sizeof(cmp), "%zu/%zu", row.ncmp, m->nlayers);
            printf("%12s %12s %11zu %4ld %7.1f %7.3f %8.2f %7.2f  %7.1e %7llu %8s %8.2f %8.2f\n",
                   m->name, (setting != NULL) ? setting : "plain", bytes, row.presteps,
                   row.time_ms, algbw, (row.time_ms > 0.0) ? plain_ms / row.time_ms : 0.0,
                   row.ratio, row.relerr, (unsigned long long)row.wrong,
                   (setting != NULL) ? cmp : "-", row.intra / 1e6, row.inter / 1e6);
            fflush(stdout);
            if (opts->json != NULL) {
                fprintf(opts->json,
                        "{\"mode\":\"workload\",\"model\":\"%s\",\"setting\":\"%s\","
                        "\"nranks\":%d,\"layers\":%zu,\"size\":%zu,\"presteps\":%ld,"
                        "\"time_ms\":%.3f,\"algbw\":%.4f,\"speedup\":%.3f,\"ratio\":%.4f,"
                        "\"relerr\":%.4e,\"wrong\":%llu,\"compressed_layers\":%zu,"
                        "\"check\":%d,\"bytes_intra\":%.0f,\"bytes_inter\":%.0f}\n",
                        m->name, (setting != NULL) ? setting : "plain", r.nranks, m->nlayers,
                        bytes, row.presteps, row.time_ms, algbw,
                        (row.time_ms > 0.0) ? plain_ms / row.time_ms : 0.0, row.ratio,
                        row.relerr, (unsigned long long)row.wrong, row.ncmp, opts->check,
                        row.intra, row.inter);
                fflush(opts->json);
            }
        }
    }
out:
    free(x);
    free(r.y);
    free(r.ref);
    return rc;
}

/* ---------------------------------------------------------------- entry point */
int
terse_bench_workload(const terse_bench_opts_t *opts, const char *model)
{
    static const char *const defaults[] = {"quant:4", "topk:0.01", "powersgd:4"};
    const char *set[TERSE_BENCH_MAX_SPECS + 1];
    bw_model_t m;
    int nset = 0, init = 0, provided, rc;
    size_t i;

    if (opts->dtype != TERSE_FLOAT32) {
        fprintf(stderr, "terse-bench: -m workload takes -d float only\n");
        return 2;
    }
    if ((opts->op != NULL) && (strcmp(opts->op, "sum") != 0)) {
        fprintf(stderr, "terse-bench: -m workload sums (-o sum)\n");
        return 2;
    }
    memset(&m, 0, sizeof(m));
    if ((bw_model_locate((model != NULL) ? model : "resnet50", &m) != 0) ||
        (bw_model_read(&m) != 0)) {
        free(m.layer);
        return 2;
    }
    if (m.total > (size_t)INT32_MAX) {
        fprintf(stderr, "terse-bench: %s has more than 2^31 elements\n", m.name);
        free(m.layer);
        return 2;
    }
    bw_model_scales(&m);
    set[nset++] = "auto";
    for (i = 0; i < ((opts->nspecs > 0) ? opts->nspecs : sizeof(defaults) / sizeof(*defaults));
         ++i) {
        const char *spec = (opts->nspecs > 0) ? opts->specs[i] : defaults[i];
        if ((strcmp(spec, "auto") != 0) && (strcmp(spec, "none") != 0)) {
            set[nset++] = spec;
        }
    }
    MPI_Initialized(&init);
    if (!init) {
        MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided);
    }
    rc = bw_table(opts, &m, set, nset);
    if (!init) {
        MPI_Finalize();
    }
    free(m.layer);
    return rc;
}
