/*
 * terse-plan-bench: the scheduler's two benchmark figures (issue 5).
 *
 *   1. planning time: terse__sched_solve on 500 layers x 20 candidates (target <= 10 ms),
 *      time objective (outer loop over wire-class sets) and bytes objective;
 *   2. on the layer shapes of ResNet-50 and GPT-2-small with per-layer statistics derived
 *      from real LM gradients (bench/plan_data/<model>.tsv, made by bench/derive_layer_stats.py),
 *      the bytes sent by the adaptive plan against the best uniform setting over all
 *      families at the same total error (target >= 1.5x fewer).
 *
 * Payload bytes come from the compressor registry (terse__cmp_find + create + payload_size,
 * summed over stages) when the family is registered, else from terse__sched_payload_bytes.
 * Bytes are "bytes sent" per rank and step (DESIGN.md section 9) at -p ranks.
 *
 * Usage: terse-plan-bench [-p nranks] [-a alpha] [-n reps] [-d plan_data_dir] [-x family]...
 *                         [-v]
 *   -x leaves a family out of the model comparison (adaptive and uniform alike); -v prints
 *   the adaptive plans as CSV and the solver's debug lines.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "terse_base.h"
#include "compressor.h"
#include "terse_sched.h"

#define TERSE_PLAN_DATA_DIR TERSE_SOURCE_DIR "/bench/plan_data"

static int bench_verbose;
static unsigned bench_exclude; /* families left out of the model comparison (-x) */
static size_t bench_from_registry, bench_from_formula;

/* ---------------------------------------------------------------- payload bytes */
static uint64_t
bench_payload(int fam, double param, size_t count, size_t rows, size_t cols, uint32_t bucket,
              int nranks)
{
    const terse_cmp_ops_t *ops = terse__cmp_find(terse__sched_fam_name(fam));
    terse_cmp_params_t params;
    void *ctx = NULL;
    uint64_t total = 0;
    unsigned s, ns;

    if ((fam == TERSE_SCHED_FAM_POWERSGD) && (rows == 0)) {
        return UINT64_MAX;
    }
    if (ops != NULL) {
        memset(&params, 0, sizeof(params));
        params.size   = sizeof(params);
        params.param  = param;
        params.count  = count;
        params.rows   = rows;
        params.cols   = cols;
        params.dtype  = TERSE_FLOAT32;
        params.mem    = TERSE_MEM_HOST;
        params.bucket = bucket;
        params.nranks = nranks;
        params.seed   = 1;
        if (ops->create(&params, &ctx) == TERSE_OK) {
            ns = (ops->nstages != NULL) ? ops->nstages(ctx) : 1;
            for (s = 0; s < ns; ++s) {
                size_t b = 0;
                if (ops->payload_size(ctx, count, s, &b) != TERSE_OK) {
                    total = 0;
                    break;
                }
                total += b;
            }
            ops->destroy(ctx);
            if (total > 0) {
                ++bench_from_registry;
                return total;
            }
        }
    }
    ++bench_from_formula;
    return terse__sched_payload_bytes(fam, param, count, rows, cols, bucket);
}

/* ---------------------------------------------------------------- 1. planning time */
static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void
bench_planning_time(int nranks, int reps)
{
    enum { NL = 500, NC = 20 };
    terse_sched_grid_t grid;
    terse_sched_cost_t cost;
    terse_sched_cand_t *cand = calloc(NL * NC, sizeof(*cand));
    terse_sched_layer_t *layer = calloc(NL, sizeof(*layer));
    int *ref = calloc(NL, sizeof(int));
    int opt[TERSE_SCHED_GRID_MAX], nopt = 0, obj;
    terse_rng_t rng = terse_rng_make(42, 13, 0, 0, 0);
    uint64_t draw = 0;
    double *t = calloc((size_t)reps, sizeof(double));
    size_t l, i;

    terse__sched_grid_default(&grid, 512);
    terse__sched_cost_default(&cost, nranks, 0.0);
    /* 20 of the 28 default options (topkt is estimated as topk: its rows would repeat). */
    for (i = 0; i < grid.n; ++i) {
        const terse_sched_option_t *o = &grid.opt[i];
        if (((o->fam == TERSE_SCHED_FAM_RANDOMK) && (o->param != 0.01) && (o->param != 0.1)) ||
            ((o->fam == TERSE_SCHED_FAM_TOPK) && (o->param == 0.003)) ||
            (o->fam == TERSE_SCHED_FAM_TOPKT)) {
            continue;
        }
        opt[nopt++] = (int)i;
    }
    if (nopt != NC) {
        fprintf(stderr, "the default grid changed: %d options, %d wanted\n", nopt, NC);
        exit(1);
    }
    for (l = 0; l < NL; ++l) {
#define U01() (((double)terse_rng_u32(&rng, draw++) + 0.5) / 4294967296.0)
        size_t rows = (size_t)ldexp(1.0, 4 + (int)(U01() * 9)), cols = 64 + (size_t)(U01() * 4000);
        size_t count = rows * cols;
        double norm = U01() + 0.01, decay = 0.5 + 2.0 * U01(), qscale = 0.05 + U01();
        for (i = 0; i < NC; ++i) {
            const terse_sched_option_t *o = &grid.opt[opt[i]];
            terse_sched_cand_t *c = &cand[l * NC + i];
            double rel;
            switch (o->fam) {
            case TERSE_SCHED_FAM_NONE: rel = 0.0; break;
            case TERSE_SCHED_FAM_CAST: rel = 3e-6; break;
            case TERSE_SCHED_FAM_QUANT: rel = qscale * ldexp(1.0, -2 * (int)o->param) * 16; break;
            case TERSE_SCHED_FAM_SIGN: rel = 0.3 + 0.4 * U01(); break;
            case TERSE_SCHED_FAM_TOPK: rel = pow(1.0 - o->param, 8.0 * decay) * (0.5 + 0.5 * U01()); break;
            case TERSE_SCHED_FAM_RANDOMK: rel = 1.0 - o->param; break;
            default: rel = pow(o->param, -decay) * (0.3 + 0.7 * U01()); break;
            }
            c->fam    = o->fam;
            c->param  = o->param;
            c->sq_err = rel * norm;
            c->bytes  = terse__sched_payload_bytes(o->fam, o->param, count, rows, cols, 512);
            c->wire   = terse__sched_fam_wire(o->fam);
            c->time   = terse__sched_cost_cand_time(&cost, c->wire, count, c->bytes,
                                                    terse__sched_cost_cmp_time(&cost, o->fam,
                                                                               count));
            if ((o->fam == TERSE_SCHED_FAM_QUANT) && (o->param == 4.0)) {
                ref[l] = (int)i;
            }
        }
#undef U01
        layer[l].count = count;
        layer[l].rows  = rows;
        layer[l].cols  = cols;
        layer[l].ncand = NC;
        layer[l].cand  = &cand[l * NC];
    }
    for (obj = 0; obj < 2; ++obj) {
        terse_sched_problem_t prob;
        terse_plan_t plan;
        double budget;
        int r;

        memset(&prob, 0, sizeof(prob));
        terse__sched_budget_reference(layer, NL, TERSE_SCHED_FAM_QUANT, 4.0, 1.0, &budget);
        prob.nlayers   = NL;
        prob.layer     = layer;
        prob.budget    = budget;
        prob.objective = (terse_sched_objective_t)obj;
        prob.cost      = &cost;
        prob.reference = ref;
        for (r = 0; r < reps; ++r) {
            double t0 = terse__time_now();
            if (terse__sched_solve(&prob, &plan) != TERSE_OK) {
                fprintf(stderr, "solve failed\n");
                exit(1);
            }
            t[r] = terse__time_now() - t0;
            if (r + 1 < reps) {
                terse__sched_plan_free(&plan);
            }
        }
        qsort(t, (size_t)reps, sizeof(double), cmp_double);
        printf("# planning %d layers x %d candidates, objective %-5s: median %7.3f ms  min %7.3f "
               "ms  max %7.3f ms  (%d runs; error units %u; classes used 0x%x)\n",
               NL, NC, obj ? "bytes" : "time", 1e3 * t[reps / 2], 1e3 * t[0],
               1e3 * t[reps - 1], reps, TERSE_MAX(TERSE_SCHED_ERROR_BUCKETS_DEFAULT, 2 * NL),
               plan.wire_set);
        terse__sched_plan_free(&plan);
    }
    free(t);
    free(cand);
    free(layer);
    free(ref);
}

/* ---------------------------------------------------------------- 2. models */
typedef struct model_layer {
    char   name[TERSE_NAME_MAX];
    char   kind[32];
    size_t count, rows, cols;
    double sq_norm;
    double rel[TERSE_SCHED_GRID_MAX];  /* per grid option; inf: n/a */
} model_layer_t;

static size_t
model_load(const char *path, const terse_sched_grid_t *grid, model_layer_t **out)
{
    FILE *f = fopen(path, "r");
    char line[8192];
    int col_opt[64], ncol = 0, have_header = 0;
    model_layer_t *ml = NULL;
    size_t n = 0, cap = 0;

    if (f == NULL) {
        fprintf(stderr, "cannot open %s (run bench/derive_layer_stats.py, or pass -d)\n", path);
        exit(1);
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *save = NULL, *tok;
        int c = 0;
        if ((line[0] == '#') || (line[0] == '\n')) {
            continue;
        }
        line[strcspn(line, "\n")] = '\0';
        if (!have_header) {
            for (tok = strtok_r(line, "\t", &save); tok != NULL; tok = strtok_r(NULL, "\t", &save)) {
                col_opt[c] = -1;
                if (strncmp(tok, "rel:", 4) == 0) {
                    char fam[32];
                    double p;
                    if (sscanf(tok + 4, "%31[^:]:%lf", fam, &p) == 2) {
                        col_opt[c] = terse__sched_grid_find(grid, terse__sched_fam_find(fam), p);
                    }
                }
                ++c;
            }
            ncol        = c;
            have_header = 1;
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            ml  = realloc(ml, cap * sizeof(*ml));
        }
        memset(&ml[n], 0, sizeof(ml[n]));
        for (c = 0; c < TERSE_SCHED_GRID_MAX; ++c) {
            ml[n].rel[c] = INFINITY;
        }
        for (tok = strtok_r(line, "\t", &save), c = 0; (tok != NULL) && (c < ncol);
             tok = strtok_r(NULL, "\t", &save), ++c) {
            switch (c) {
            case 0: snprintf(ml[n].name, sizeof(ml[n].name), "%s", tok); break;
            case 1: snprintf(ml[n].kind, sizeof(ml[n].kind), "%s", tok); break;
            case 2: break;
            case 3: ml[n].count = strtoull(tok, NULL, 10); break;
            case 4: ml[n].rows = strtoull(tok, NULL, 10); break;
            case 5: ml[n].cols = strtoull(tok, NULL, 10); break;
            case 6: ml[n].sq_norm = strtod(tok, NULL); break;
            default:
                if (col_opt[c] >= 0) {
                    ml[n].rel[col_opt[c]] = strtod(tok, NULL);
                }
            }
        }
        ++n;
    }
    fclose(f);
    *out = ml;
    return n;
}

static void
bench_model(const char *dir, const char *model, int nranks, double alpha)
{
    terse_sched_grid_t grid;
    terse_sched_cost_t cost;
    model_layer_t *ml;
    terse_sched_cand_t *cand;
    terse_sched_layer_t *layer;
    uint64_t *bytes;
    int *ref;
    char path[1024];
    size_t nl, l, i, o;
    double u_err[TERSE_SCHED_GRID_MAX], u_bytes[TERSE_SCHED_GRID_MAX], budget, best_u = INFINITY;
    double plain = 0.0, total_sq = 0.0, nparams = 0.0;
    int best_o = -1, iref;
    terse_sched_problem_t prob;
    terse_plan_t plan;
    size_t fams[TERSE_SCHED_FAM_COUNT] = {0};

    terse__sched_grid_default(&grid, 512);
    terse__sched_cost_default(&cost, nranks, 0.0);
    snprintf(path, sizeof(path), "%s/%s.tsv", dir, model);
    nl    = model_load(path, &grid, &ml);
    cand  = calloc(nl * grid.n, sizeof(*cand));
    layer = calloc(nl, sizeof(*layer));
    bytes = calloc(nl * grid.n, sizeof(*bytes));
    ref   = calloc(nl, sizeof(*ref));
    iref  = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_QUANT, 4.0);
    for (o = 0; o < TERSE_SCHED_GRID_MAX; ++o) {
        u_err[o] = u_bytes[o] = 0.0;
    }
    for (l = 0; l < nl; ++l) {
        double st[TERSE_SCHED_STATS_HEAD + TERSE_SCHED_GRID_MAX];
        st[TERSE_SCHED_STATS_NORM]      = ml[l].sq_norm;
        st[TERSE_SCHED_STATS_NONFINITE] = 0.0;
        for (o = 0; o < grid.n; ++o) {
            st[TERSE_SCHED_STATS_HEAD + o] = ml[l].rel[o] * ml[l].sq_norm;
            bytes[l * grid.n + o] = (isinf(ml[l].rel[o]) ||
                                     ((bench_exclude >> grid.opt[o].fam) & 1u))
                                        ? UINT64_MAX
                                        : bench_payload(grid.opt[o].fam, grid.opt[o].param,
                                                        ml[l].count, ml[l].rows, ml[l].cols,
                                                        512, nranks);
        }
        nparams += (double)ml[l].count;
        layer[l].name  = ml[l].name;
        layer[l].count = ml[l].count;
        layer[l].rows  = ml[l].rows;
        layer[l].cols  = ml[l].cols;
        layer[l].cand  = &cand[l * grid.n];
        terse__sched_layer_fill(&grid, &cost, ml[l].count, st, &bytes[l * grid.n], NULL,
                                &cand[l * grid.n], &layer[l].ncand);
        ref[l] = -1;
        for (i = 0; i < layer[l].ncand; ++i) {
            if ((layer[l].cand[i].fam == TERSE_SCHED_FAM_QUANT) && (layer[l].cand[i].param == 4.0)) {
                ref[l] = (int)i;
            }
        }
        plain += terse__sched_wire_bytes(TERSE_SCHED_WIRE_NATIVE, 4.0 * (double)ml[l].count,
                                         nranks);
        total_sq += ml[l].sq_norm;
        /* Uniform settings: the option where it applies, none elsewhere (PowerSGD on flat
         * layers, as PyTorch's PowerSGD hook leaves 1-D tensors uncompressed). */
        for (o = 0; o < grid.n; ++o) {
            if ((bench_exclude >> grid.opt[o].fam) & 1u) {
                u_err[o] = INFINITY;
            } else if (bytes[l * grid.n + o] == UINT64_MAX) {
                u_bytes[o] += terse__sched_wire_bytes(TERSE_SCHED_WIRE_NATIVE,
                                                      4.0 * (double)ml[l].count, nranks);
            } else {
                u_err[o] += ml[l].rel[o] * ml[l].sq_norm;
                u_bytes[o] += terse__sched_wire_bytes(terse__sched_fam_wire(grid.opt[o].fam),
                                                      (double)bytes[l * grid.n + o], nranks);
            }
        }
    }
    budget = alpha * u_err[iref];
    for (o = 0; o < grid.n; ++o) {
        if ((u_err[o] <= budget) && (u_bytes[o] < best_u)) {
            best_u = u_bytes[o];
            best_o = (int)o;
        }
    }
    memset(&prob, 0, sizeof(prob));
    prob.nlayers   = nl;
    prob.layer     = layer;
    prob.budget    = budget;
    prob.objective = TERSE_SCHED_OBJ_BYTES;
    prob.cost      = &cost;
    prob.reference = ref;
    if (terse__sched_solve(&prob, &plan) != TERSE_OK) {
        fprintf(stderr, "%s: solve failed\n", model);
        exit(1);
    }
    for (l = 0; l < nl; ++l) {
        fams[plan.layer[l].fam]++;
    }
    printf("#\n# %s: %zu layers, %.1f M parameters, %d ranks, budget %.3g x error of uniform "
           "quant:4 = %.4g (%.4g of sum ||g||^2)\n",
           model, nl, 1e-6 * nparams, nranks, alpha, budget, budget / total_sq);
    printf("#   adaptive plan: %.0f bytes sent (ratio %.1f vs plain), error %.4g; layers per "
           "family:",
           plan.wire_bytes, plain / plan.wire_bytes, plan.sq_err);
    for (i = 0; i < TERSE_SCHED_FAM_COUNT; ++i) {
        if (fams[i] > 0) {
            printf(" %s %zu", terse__sched_fam_name((int)i), fams[i]);
        }
    }
    printf("\n");
    if (best_o >= 0) {
        char spec[64];
        snprintf(spec, sizeof(spec), "%s:%g", terse__sched_fam_name(grid.opt[best_o].fam),
                 grid.opt[best_o].param);
        printf("#   best uniform setting within the budget: %-14s %.0f bytes, error %.4g\n", spec,
               best_u, u_err[best_o]);
        printf("%-12s  adaptive vs best uniform at the reference budget: %.2fx fewer bytes\n",
               model, best_u / plan.wire_bytes);
    }
    if (bench_verbose) {
        terse__sched_plan_fwrite(&plan, stdout);
    }
    terse__sched_plan_free(&plan);

    /* Every uniform setting against the adaptive plan at its own total error. */
    printf("#   %-16s %14s %12s %14s %8s\n", "uniform", "error", "bytes", "adaptive bytes",
           "ratio");
    {
        double worst = INFINITY;
        const char *worst_spec = "";
        static char ws[64];
        for (o = 0; o < grid.n; ++o) {
            char spec[64];
            if (!(u_err[o] > 0.0) || isinf(u_err[o])) {
                continue;
            }
            /* The uniform setting itself is the reference: never worse than it. */
            for (l = 0; l < nl; ++l) {
                ref[l] = -1;
                for (i = 0; i < layer[l].ncand; ++i) {
                    if ((layer[l].cand[i].fam == grid.opt[o].fam) &&
                        (layer[l].cand[i].param == grid.opt[o].param)) {
                        ref[l] = (int)i;
                    }
                    if ((ref[l] < 0) && (layer[l].cand[i].fam == TERSE_SCHED_FAM_NONE)) {
                        ref[l] = (int)i;
                    }
                }
            }
            prob.budget    = u_err[o];
            prob.reference = ref;
            if (terse__sched_solve(&prob, &plan) != TERSE_OK) {
                continue;
            }
            snprintf(spec, sizeof(spec), "%s:%g", terse__sched_fam_name(grid.opt[o].fam),
                     grid.opt[o].param);
            printf("#   %-16s %14.4g %12.0f %14.0f %8.2f\n", spec, u_err[o], u_bytes[o],
                   plan.wire_bytes, u_bytes[o] / plan.wire_bytes);
            if (u_bytes[o] / plan.wire_bytes < worst) {
                worst = u_bytes[o] / plan.wire_bytes;
                snprintf(ws, sizeof(ws), "%s", spec);
                worst_spec = ws;
            }
            terse__sched_plan_free(&plan);
        }
        printf("%-12s  adaptive vs every uniform setting at its own error: >= %.2fx fewer bytes "
               "(closest: %s)\n",
               model, worst, worst_spec);
    }
    free(ml);
    free(cand);
    free(layer);
    free(bytes);
    free(ref);
}

int
main(int argc, char **argv)
{
    int nranks = 8, reps = 21, ch;
    double alpha = 1.0;
    const char *dir = TERSE_PLAN_DATA_DIR;

    while ((ch = getopt(argc, argv, "p:a:n:d:x:vh")) != -1) {
        switch (ch) {
        case 'x':
            if ((terse__sched_fam_find(optarg) <= TERSE_SCHED_FAM_NONE)) {
                fprintf(stderr, "-x takes a compressing family name, not '%s'\n", optarg);
                return 1;
            }
            bench_exclude |= 1u << terse__sched_fam_find(optarg);
            break;
        case 'p': nranks = atoi(optarg); break;
        case 'a': alpha = atof(optarg); break;
        case 'n': reps = atoi(optarg); break;
        case 'd': dir = optarg; break;
        case 'v':
            bench_verbose    = 1;
            terse__log_level = TERSE_LOG_LEVEL_DEBUG;
            break;
        default:
            fprintf(stderr, "usage: %s [-p nranks] [-a alpha] [-n reps] [-d plan_data_dir] [-x family]... [-v]\n",
                    argv[0]);
            return (ch == 'h') ? 0 : 1;
        }
    }
    if ((nranks < 2) || (reps < 1) || !(alpha >= 0.0)) {
        fprintf(stderr, "need -p >= 2, -n >= 1, -a >= 0\n");
        return 1;
    }
    printf("# terse-plan-bench %s (git %s): scheduler planning time and adaptive vs uniform bytes\n",
           TERSE_VERSION_STRING, TERSE_GIT_REVISION);
    bench_planning_time(nranks, reps);
    bench_model(dir, "resnet50", nranks, alpha);
    bench_model(dir, "gpt2_small", nranks, alpha);
    printf("# payload bytes: %zu from the compressor registry, %zu from scheduler formulas\n",
           bench_from_registry, bench_from_formula);
    return 0;
}
