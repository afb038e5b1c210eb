/* scheduler/dp.c: the knapsack against brute force, budgets, ties, links fast and slow. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "compressor.h"
#include "terse_sched.h"

/* ---------------------------------------------------------------- helpers */
/* The worked example of dp.c's header: costs in time units (0.1 ns), no latency. */
static void
test_dp_worked_example(void)
{
    static const double tu = 1e-10;
    terse_sched_cand_t a[] = {
        {TERSE_SCHED_FAM_NONE, 0, 400, 0.0, 100 * tu, TERSE_SCHED_WIRE_NATIVE},
        {TERSE_SCHED_FAM_QUANT, 4, 60, 2.0, 30 * tu, TERSE_SCHED_WIRE_REQUANT},
        {TERSE_SCHED_FAM_POWERSGD, 4, 20, 3.0, 8 * tu, TERSE_SCHED_WIRE_SUMMABLE},
    };
    terse_sched_cand_t b[] = {
        {TERSE_SCHED_FAM_NONE, 0, 400, 0.0, 40 * tu, TERSE_SCHED_WIRE_NATIVE},
        {TERSE_SCHED_FAM_QUANT, 4, 60, 2.0, 12 * tu, TERSE_SCHED_WIRE_REQUANT},
        {TERSE_SCHED_FAM_TOPK, 0.01, 20, 5.0, 6 * tu, TERSE_SCHED_WIRE_SPARSE},
    };
    terse_sched_cand_t c[] = {
        {TERSE_SCHED_FAM_NONE, 0, 4, 0.0, 1 * tu, TERSE_SCHED_WIRE_NATIVE},
        {TERSE_SCHED_FAM_QUANT, 4, 2, 1.0, 2 * tu, TERSE_SCHED_WIRE_REQUANT},
    };
    terse_sched_layer_t layers[] = {
        {"A", 100, 10, 10, 3, a},
        {"B", 100, 0, 0, 3, b},
        {"C", 1, 0, 0, 2, c},
    };
    terse_sched_cost_t cost;
    terse_sched_problem_t prob;
    terse_plan_t plan;
    uint32_t w[8], E;
    int64_t cc[8], lat[16];
    int w_max;

    terse__sched_cost_default(&cost, 2, 1e9);
    for (w_max = 0; w_max < TERSE_SCHED_WIRE_COUNT; ++w_max) {
        cost.level[0].alpha[w_max] = 0.0;
    }
    memset(&prob, 0, sizeof(prob));
    prob.nlayers       = 3;
    prob.layer         = layers;
    prob.budget        = 6.0 / (1.0 - 1e-9) * (1.0 + 1e-12); /* errors are exact units */
    prob.objective     = TERSE_SCHED_OBJ_TIME;
    prob.cost          = &cost;
    prob.error_buckets = 6;
    TERSE_TEST_OK(terse__sched_discretise(&prob, w, cc, lat, &E));
    CU_ASSERT_EQUAL(E, 6);
    CU_ASSERT_EQUAL(w[2], 3);
    CU_ASSERT_EQUAL(cc[2], 8);
    CU_ASSERT_EQUAL(lat[15], 0);

    TERSE_TEST_OK(terse__sched_solve(&prob, &plan));
    CU_ASSERT_EQUAL(plan.layer[0].fam, TERSE_SCHED_FAM_POWERSGD);
    CU_ASSERT_EQUAL(plan.layer[1].fam, TERSE_SCHED_FAM_QUANT);
    CU_ASSERT_EQUAL(plan.layer[2].fam, TERSE_SCHED_FAM_NONE);
    TERSE_TEST_NEAR(plan.predicted_time, 21 * tu, 1e-15);
    TERSE_TEST_NEAR(plan.sq_err, 5.0, 1e-12);
    CU_ASSERT_STRING_EQUAL(plan.layer[1].name, "B");
    terse__sched_plan_free(&plan);
}

/* Deterministic small random instances. */
typedef struct rnd_inst {
    terse_sched_cand_t   cand[8][6];
    terse_sched_layer_t  layer[8];
    terse_sched_cost_t   cost;
    terse_sched_problem_t prob;
} rnd_inst_t;

static double
u01(uint64_t seed, uint64_t *ctr)
{
    return terse_test_uniform(seed, (*ctr)++);
}

static void
rnd_make(uint64_t seed, rnd_inst_t *in, terse_sched_objective_t obj)
{
    uint64_t k = 0;
    size_t nl = 1 + (size_t)(u01(seed, &k) * 6), l, i;
    int w;
    double total = 0.0;

    memset(in, 0, sizeof(*in));
    terse__sched_cost_default(&in->cost, 2 + (int)(u01(seed, &k) * 7), 1e9);
    for (w = 0; w < TERSE_SCHED_WIRE_COUNT; ++w) {
        in->cost.level[0].alpha[w] = u01(seed, &k) * 2e-5;
    }
    for (l = 0; l < nl; ++l) {
        size_t nc = 1 + (size_t)(u01(seed, &k) * 5);
        int has_zero = u01(seed, &k) < 0.8;
        for (i = 0; i < nc; ++i) {
            terse_sched_cand_t *c = &in->cand[l][i];
            c->fam    = (int)(i % TERSE_SCHED_FAM_COUNT);
            c->param  = (double)i;
            c->wire   = (terse_sched_wire_t)(u01(seed, &k) * 4);
            c->bytes  = 1 + (uint64_t)(u01(seed, &k) * 100000);
            c->sq_err = (u01(seed, &k) < 0.1) ? 0.0 : u01(seed, &k) * 10.0;
            c->time   = u01(seed, &k) * 1e-4;
            /* a few exact ties in cost */
            if ((i > 0) && (u01(seed, &k) < 0.15)) {
                c->time  = in->cand[l][i - 1].time;
                c->bytes = in->cand[l][i - 1].bytes;
                c->wire  = in->cand[l][i - 1].wire;
            }
            if ((i == 0) && has_zero) {
                c->sq_err = 0.0;
            }
            if (u01(seed, &k) < 0.03) {
                c->sq_err = NAN;
            }
            total += isfinite(c->sq_err) ? c->sq_err : 0.0;
        }
        in->layer[l].count = 1000;
        in->layer[l].ncand = nc;
        in->layer[l].cand  = in->cand[l];
    }
    in->prob.nlayers       = nl;
    in->prob.layer         = in->layer;
    in->prob.budget        = total * u01(seed, &k) * 0.5;
    in->prob.objective     = obj;
    in->prob.cost          = &in->cost;
    in->prob.error_buckets = 16 + (unsigned)(u01(seed, &k) * 200);
    /* Every fifth instance has costs that need scaling below 2^29 (huge bytes, slow links). */
    if (seed % 5 == 0) {
        for (l = 0; l < nl; ++l) {
            for (i = 0; i < in->layer[l].ncand; ++i) {
                in->cand[l][i].bytes *= 1000000;
                in->cand[l][i].time *= 1000;
            }
        }
        for (w = 0; w < TERSE_SCHED_WIRE_COUNT; ++w) {
            in->cost.level[0].alpha[w] *= 1000;
        }
    }
}

/* Brute force over every combination of the same integers. Returns the minimum cost (with
 * the latency of the class set used), or -1 when nothing fits. */
static int64_t
brute(const rnd_inst_t *in, const uint32_t *w, const int64_t *c, const int64_t *lat, uint32_t E)
{
    size_t nl = in->prob.nlayers, off[9], l;
    size_t idx[8] = {0};
    int64_t best = -1;

    off[0] = 0;
    for (l = 0; l < nl; ++l) {
        off[l + 1] = off[l] + in->layer[l].ncand;
    }
    for (;;) {
        uint64_t ws = 0;
        int64_t cs = 0;
        unsigned set = 0;
        int ok = 1;
        for (l = 0; l < nl; ++l) {
            size_t f = off[l] + idx[l];
            if (w[f] > E) {
                ok = 0;
                break;
            }
            ws += w[f];
            cs += c[f];
            set |= 1u << (unsigned)in->layer[l].cand[idx[l]].wire;
        }
        if (ok && (ws <= E)) {
            cs += lat[set];
            if ((best < 0) || (cs < best)) {
                best = cs;
            }
        }
        for (l = 0; l < nl; ++l) {
            if (++idx[l] < in->layer[l].ncand) {
                break;
            }
            idx[l] = 0;
        }
        if (l == nl) {
            break;
        }
    }
    return best;
}

static void
dp_vs_brute(terse_sched_objective_t obj)
{
    static rnd_inst_t in;
    uint32_t w[64], E;
    int64_t c[64], lat[16];
    int trial, nbudget = 0, nok = 0, nscaled = 0, saved = terse__log_level;

    terse__log_level = -1; /* infeasible instances log an error each */

    for (trial = 0; trial < 600; ++trial) {
        terse_plan_t plan;
        terse_status_t st;
        int64_t expect, got = 0;
        size_t l, f = 0;
        unsigned set = 0;
        double err = 0.0;

        rnd_make(1000 + (uint64_t)trial * 7 + (uint64_t)obj, &in, obj);
        TERSE_TEST_OK(terse__sched_discretise(&in.prob, w, c, lat, &E));
        for (l = 0; l < in.prob.nlayers; ++l) {
            size_t i;
            for (i = 0; i < in.layer[l].ncand; ++i, ++f) {
                /* Costs fit the knapsack's int32 lanes: every plan's total below 2^29. */
                CU_ASSERT((w[f] > E) || (c[f] < (INT64_C(1) << 29)));
                nscaled += (c[f] > (INT64_C(1) << 27));
            }
        }
        f      = 0;
        expect = brute(&in, w, c, lat, E);
        st     = terse__sched_solve(&in.prob, &plan);
        if (expect < 0) {
            CU_ASSERT_EQUAL(st, TERSE_ERR_BUDGET);
            ++nbudget;
            continue;
        }
        CU_ASSERT_EQUAL_FATAL(st, TERSE_OK);
        for (l = 0; l < in.prob.nlayers; ++l) {
            int k = plan.layer[l].cand;
            CU_ASSERT_FATAL((k >= 0) && ((size_t)k < in.layer[l].ncand));
            got += c[f + (size_t)k];
            set |= 1u << (unsigned)in.layer[l].cand[k].wire;
            err += in.layer[l].cand[k].sq_err;
            CU_ASSERT_EQUAL(plan.layer[l].fam, in.layer[l].cand[k].fam);
            f += in.layer[l].ncand;
        }
        got += lat[set];
        if (got != expect) {
            fprintf(stderr, "trial %d: dp %lld brute %lld\n", trial, (long long)got,
                    (long long)expect);
        }
        CU_ASSERT_EQUAL(got, expect);
        /* The real-valued error of the plan is within the budget. */
        CU_ASSERT(err <= in.prob.budget);
        CU_ASSERT_EQUAL(plan.wire_set, set);
        ++nok;
        terse__sched_plan_free(&plan);
    }
    terse__log_level = saved;
    /* Both outcomes were exercised. */
    CU_ASSERT(nbudget > 5);
    CU_ASSERT(nok > 300);
    CU_ASSERT(nscaled > 0);
}

static void
test_dp_brute_time(void)
{
    dp_vs_brute(TERSE_SCHED_OBJ_TIME);
}

static void
test_dp_brute_bytes(void)
{
    dp_vs_brute(TERSE_SCHED_OBJ_BYTES);
}

/* ---------------------------------------------------------------- realistic problems */
typedef struct real_prob {
    size_t              nl;
    terse_sched_grid_t  grid;
    terse_sched_cost_t  cost;
    double             *stats;
    terse_sched_cand_t *cand;
    terse_sched_layer_t *layer;
    int                 *ref; /* per layer: index of quant:4 */
} real_prob_t;

/* nl layers from gaussian, low-rank and tiny inputs; candidates from the statistics. */
static void
real_make(real_prob_t *rp, size_t nl, size_t tiny, double bw, int nranks)
{
    size_t l, stride, i;
    uint64_t bytes[TERSE_SCHED_GRID_MAX];

    memset(rp, 0, sizeof(*rp));
    rp->nl = nl;
    terse__sched_grid_default(&rp->grid, 64);
    terse__sched_cost_default(&rp->cost, nranks, bw);
    stride    = terse__sched_stats_stride(&rp->grid);
    rp->stats = calloc(nl * stride, sizeof(double));
    rp->cand  = calloc(nl * rp->grid.n, sizeof(*rp->cand));
    rp->layer = calloc(nl, sizeof(*rp->layer));
    rp->ref   = calloc(nl, sizeof(*rp->ref));
    for (l = 0; l < nl; ++l) {
        size_t rows = tiny ? 0 : 32 + 16 * (l % 3), cols = tiny ? 0 : 48;
        size_t count = tiny ? 1 + l % 8 : rows * cols;
        float *v = malloc(count * sizeof(float));
        if ((l % 2 == 0) && !tiny) {
            terse_test_lowrank(50 + l, rows, cols, 2, 0.05f, v);
        } else {
            terse_test_gaussian(90 + l, v, count);
        }
        TERSE_TEST_OK(terse__sched_stats_layer(&rp->grid, v, count, rows, cols, 7 + l,
                                               rp->stats + l * stride));
        for (i = 0; i < rp->grid.n; ++i) {
            bytes[i] = terse__sched_payload_bytes(rp->grid.opt[i].fam, rp->grid.opt[i].param,
                                                  count, rows, cols, rp->grid.quant_bucket);
        }
        rp->layer[l].count = count;
        rp->layer[l].rows  = rows;
        rp->layer[l].cols  = cols;
        rp->layer[l].cand  = rp->cand + l * rp->grid.n;
        TERSE_TEST_OK(terse__sched_layer_fill(&rp->grid, &rp->cost, count,
                                              rp->stats + l * stride, bytes, NULL,
                                              rp->cand + l * rp->grid.n, &rp->layer[l].ncand));
        rp->ref[l] = -1;
        for (i = 0; i < rp->layer[l].ncand; ++i) {
            if ((rp->layer[l].cand[i].fam == TERSE_SCHED_FAM_QUANT) &&
                (rp->layer[l].cand[i].param == 4.0)) {
                rp->ref[l] = (int)i;
            }
        }
        free(v);
    }
}

static void
real_free(real_prob_t *rp)
{
    free(rp->stats);
    free(rp->cand);
    free(rp->layer);
    free(rp->ref);
}

static terse_status_t
real_solve(real_prob_t *rp, double budget, terse_sched_objective_t obj, terse_plan_t *plan)
{
    terse_sched_problem_t prob;

    memset(&prob, 0, sizeof(prob));
    prob.nlayers   = rp->nl;
    prob.layer     = rp->layer;
    prob.budget    = budget;
    prob.objective = obj;
    prob.cost      = &rp->cost;
    prob.reference = rp->ref;
    return terse__sched_solve(&prob, plan);
}

static size_t
plan_count_fam(const terse_plan_t *plan, int fam)
{
    size_t l, n = 0;
    for (l = 0; l < plan->nlayers; ++l) {
        n += (plan->layer[l].fam == fam);
    }
    return n;
}

static void
test_dp_budget_zero(void)
{
    real_prob_t rp;
    terse_plan_t plan;

    real_make(&rp, 12, 0, 1e8, 8);
    TERSE_TEST_OK(real_solve(&rp, 0.0, TERSE_SCHED_OBJ_TIME, &plan));
    CU_ASSERT_EQUAL(plan_count_fam(&plan, TERSE_SCHED_FAM_NONE), 12);
    CU_ASSERT_EQUAL(plan.sq_err, 0.0);
    terse__sched_plan_free(&plan);
    TERSE_TEST_OK(real_solve(&rp, 0.0, TERSE_SCHED_OBJ_BYTES, &plan));
    CU_ASSERT_EQUAL(plan_count_fam(&plan, TERSE_SCHED_FAM_NONE), 12);
    terse__sched_plan_free(&plan);
    real_free(&rp);
}

/* A huge budget gives the cheapest candidate of every layer (bytes: no latency coupling). */
static void
test_dp_budget_huge(void)
{
    real_prob_t rp;
    terse_plan_t plan;
    double budgets[] = {INFINITY, 1e300, 1e30};
    size_t b, l, i;

    real_make(&rp, 20, 0, 1e9, 4);
    for (b = 0; b < 3; ++b) {
        TERSE_TEST_OK(real_solve(&rp, budgets[b], TERSE_SCHED_OBJ_BYTES, &plan));
        for (l = 0; l < rp.nl; ++l) {
            const terse_sched_layer_t *ly = &rp.layer[l];
            size_t best = 0;
            double bb = INFINITY;
            for (i = 0; i < ly->ncand; ++i) {
                double wb = terse__sched_wire_bytes(ly->cand[i].wire, (double)ly->cand[i].bytes,
                                                    4);
                if (wb < bb) {
                    bb   = wb;
                    best = i;
                }
            }
            CU_ASSERT_EQUAL(plan.layer[l].cand, (int)best);
        }
        terse__sched_plan_free(&plan);
    }
    real_free(&rp);
}

static void
test_dp_deterministic(void)
{
    real_prob_t rp, rp2;
    terse_plan_t p1, p2, p3;
    double budget;

    real_make(&rp, 30, 0, 2e9, 8);
    real_make(&rp2, 30, 0, 2e9, 8);
    TERSE_TEST_OK(terse__sched_budget_reference(rp.layer, rp.nl, TERSE_SCHED_FAM_QUANT, 4.0,
                                                1.0, &budget));
    CU_ASSERT(budget > 0.0);
    TERSE_TEST_OK(real_solve(&rp, budget, TERSE_SCHED_OBJ_TIME, &p1));
    TERSE_TEST_OK(real_solve(&rp, budget, TERSE_SCHED_OBJ_TIME, &p2));
    TERSE_TEST_OK(real_solve(&rp2, budget, TERSE_SCHED_OBJ_TIME, &p3));
    CU_ASSERT_EQUAL(terse__sched_plan_checksum(&p1), terse__sched_plan_checksum(&p2));
    CU_ASSERT_EQUAL(terse__sched_plan_checksum(&p1), terse__sched_plan_checksum(&p3));
    CU_ASSERT(memcmp(p1.layer, p3.layer, p1.nlayers * sizeof(*p1.layer)) == 0);
    CU_ASSERT(p1.sq_err <= budget);
    /* The adaptive plan is never slower than the uniform reference it is measured against. */
    {
        double tref = 0.0;
        unsigned set = 0;
        size_t l, i;
        for (l = 0; l < rp.nl; ++l) {
            for (i = 0; i < rp.layer[l].ncand; ++i) {
                if ((rp.layer[l].cand[i].fam == TERSE_SCHED_FAM_QUANT) &&
                    (rp.layer[l].cand[i].param == 4.0)) {
                    tref += rp.layer[l].cand[i].time;
                    set |= 1u << (unsigned)rp.layer[l].cand[i].wire;
                }
            }
        }
        tref += terse__sched_cost_set_latency(&rp.cost, set);
        CU_ASSERT(p1.predicted_time <= tref * (1.0 + 1e-9) + 1e-10 * (double)rp.nl);
    }
    terse__sched_plan_free(&p1);
    terse__sched_plan_free(&p2);
    terse__sched_plan_free(&p3);
    real_free(&rp);
    real_free(&rp2);
}

static void
test_dp_one_layer(void)
{
    real_prob_t rp;
    terse_plan_t plan;
    double budget;

    real_make(&rp, 1, 0, 1e9, 8);
    TERSE_TEST_OK(terse__sched_budget_reference(rp.layer, 1, TERSE_SCHED_FAM_QUANT, 4.0, 1.0,
                                                &budget));
    TERSE_TEST_OK(real_solve(&rp, budget, TERSE_SCHED_OBJ_BYTES, &plan));
    CU_ASSERT_EQUAL(plan.nlayers, 1);
    CU_ASSERT(plan.sq_err <= budget);
    /* A low-rank 32 x 48 layer: rank-2 PowerSGD beats 4-bit quantisation on both counts. */
    CU_ASSERT_EQUAL(plan.layer[0].fam, TERSE_SCHED_FAM_POWERSGD);
    terse__sched_plan_free(&plan);
    real_free(&rp);
}

/* Tiny layers: compression does not pay on time (per-call overheads), and any plan fits. */
static void
test_dp_tiny_layers(void)
{
    real_prob_t rp;
    terse_plan_t plan;
    double budget;

    real_make(&rp, 40, 1, 1e9, 8);
    TERSE_TEST_OK(terse__sched_budget_reference(rp.layer, rp.nl, TERSE_SCHED_FAM_QUANT, 4.0,
                                                1.0, &budget));
    TERSE_TEST_OK(real_solve(&rp, budget, TERSE_SCHED_OBJ_TIME, &plan));
    CU_ASSERT_EQUAL(plan_count_fam(&plan, TERSE_SCHED_FAM_NONE), 40);
    CU_ASSERT_EQUAL(plan.wire_set, 1u << TERSE_SCHED_WIRE_NATIVE);
    terse__sched_plan_free(&plan);
    TERSE_TEST_OK(real_solve(&rp, budget, TERSE_SCHED_OBJ_BYTES, &plan));
    CU_ASSERT(plan.sq_err <= budget);
    terse__sched_plan_free(&plan);
    real_free(&rp);
}

/* A slow link makes it compress; a fast one (NVLink-like) makes it stop. */
static void
test_dp_link_speed(void)
{
    real_prob_t slow, fast;
    terse_plan_t ps, pf;
    double budget;

    real_make(&slow, 16, 0, 1e8, 8);
    real_make(&fast, 16, 0, 1e12, 8);
    TERSE_TEST_OK(terse__sched_budget_reference(slow.layer, slow.nl, TERSE_SCHED_FAM_QUANT,
                                                4.0, 1.0, &budget));
    TERSE_TEST_OK(real_solve(&slow, budget, TERSE_SCHED_OBJ_TIME, &ps));
    TERSE_TEST_OK(real_solve(&fast, budget, TERSE_SCHED_OBJ_TIME, &pf));
    CU_ASSERT(plan_count_fam(&ps, TERSE_SCHED_FAM_NONE) < 4);
    CU_ASSERT_EQUAL(plan_count_fam(&pf, TERSE_SCHED_FAM_NONE), 16);
    CU_ASSERT(ps.sq_err <= budget);
    terse__sched_plan_free(&ps);
    terse__sched_plan_free(&pf);
    real_free(&slow);
    real_free(&fast);
}

/* Budgets: a fraction of sum ||g||^2 (non-finite norms skipped), and statistics of two
 * ranks summed element-wise (what the runtime's allreduce does) give the total error. */
static void
test_dp_budgets(void)
{
    terse_sched_grid_t grid;
    size_t stride, i;
    double st[3][TERSE_SCHED_STATS_HEAD + TERSE_SCHED_GRID_MAX], sum;
    double lay[2 * (TERSE_SCHED_STATS_HEAD + TERSE_SCHED_GRID_MAX)];
    float a[256], b[256], both[512];
    int q4;

    terse__sched_grid_default(&grid, 64);
    stride = terse__sched_stats_stride(&grid);
    terse_test_gaussian(61, a, 256);
    terse_test_gaussian(62, b, 256);
    memcpy(both, a, sizeof(a));
    memcpy(both + 256, b, sizeof(b));
    TERSE_TEST_OK(terse__sched_stats_layer(&grid, a, 256, 0, 0, 1, st[0]));
    TERSE_TEST_OK(terse__sched_stats_layer(&grid, b, 256, 0, 0, 1, st[1]));
    TERSE_TEST_OK(terse__sched_stats_layer(&grid, both, 512, 0, 0, 1, st[2]));
    /* Per-bucket quant and sign errors of two ranks add up to those of their concatenation
     * (buckets of 64 divide 256). */
    q4 = terse__sched_grid_find(&grid, TERSE_SCHED_FAM_QUANT, 4);
    TERSE_TEST_NEAR(st[0][TERSE_SCHED_STATS_HEAD + q4] + st[1][TERSE_SCHED_STATS_HEAD + q4],
                    st[2][TERSE_SCHED_STATS_HEAD + q4], 1e-9 * st[2][TERSE_SCHED_STATS_HEAD + q4]);
    TERSE_TEST_NEAR(st[0][0] + st[1][0], st[2][0], 1e-9 * st[2][0]);
    sum = st[0][0] + st[1][0];
    /* Lay the two layers out at the statistics stride, in a buffer of their own (st[0]'s
     * spare tail is shorter than a stride once the grid has more than half its maximum). */
    memcpy(lay, st[0], stride * sizeof(double));
    memcpy(lay + stride, st[1], stride * sizeof(double));
    TERSE_TEST_NEAR(terse__sched_budget_fraction(lay, 2, stride, 0.25), 0.25 * sum, 1e-12 * sum);
    /* A non-finite layer norm does not poison the fraction budget. */
    lay[stride] = NAN;
    TERSE_TEST_NEAR(terse__sched_budget_fraction(lay, 2, stride, 1.0), st[0][0], 1e-12 * sum);
    for (i = 0; i < stride; ++i) {
        CU_ASSERT(!isnan(lay[i]));
    }
}

/* Errors, invalid input. */
static void
test_dp_invalid(void)
{
    terse_sched_cand_t c[] = {
        {TERSE_SCHED_FAM_QUANT, 4, 60, 2.0, 1e-6, TERSE_SCHED_WIRE_REQUANT},
    };
    terse_sched_layer_t layer = {"x", 100, 0, 0, 1, c};
    terse_sched_cost_t cost;
    terse_sched_problem_t prob;
    terse_plan_t plan;
    int saved = terse__log_level;

    terse__log_level = -1;
    terse__sched_cost_default(&cost, 4, 0.0);
    memset(&prob, 0, sizeof(prob));
    prob.nlayers = 1;
    prob.layer   = &layer;
    prob.cost    = &cost;
    prob.budget  = 1.0; /* below the only candidate's error */
    TERSE_TEST_STATUS(terse__sched_solve(&prob, &plan), TERSE_ERR_BUDGET);
    prob.budget = 2.5;
    TERSE_TEST_OK(terse__sched_solve(&prob, &plan));
    terse__sched_plan_free(&plan);
    prob.budget = -1.0;
    TERSE_TEST_STATUS(terse__sched_solve(&prob, &plan), TERSE_ERR_INVALID);
    prob.budget = NAN;
    TERSE_TEST_STATUS(terse__sched_solve(&prob, &plan), TERSE_ERR_INVALID);
    prob.budget        = 1.0;
    prob.error_buckets = TERSE_SCHED_ERROR_BUCKETS_MAX + 1;
    TERSE_TEST_STATUS(terse__sched_solve(&prob, &plan), TERSE_ERR_INVALID);
    prob.error_buckets = 0;
    layer.ncand        = 0;
    TERSE_TEST_STATUS(terse__sched_solve(&prob, &plan), TERSE_ERR_INVALID);
    layer.ncand  = 1;
    prob.nlayers = 0;
    TERSE_TEST_STATUS(terse__sched_solve(&prob, &plan), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(terse__sched_solve(NULL, &plan), TERSE_ERR_INVALID);
    terse__log_level = saved;
}

/* Cost model formulas. */
static void
test_dp_costmodel(void)
{
    terse_sched_cost_t cost;

    TERSE_TEST_NEAR(terse__sched_wire_bytes(TERSE_SCHED_WIRE_SUMMABLE, 1000, 4), 1500, 1e-9);
    TERSE_TEST_NEAR(terse__sched_wire_bytes(TERSE_SCHED_WIRE_REQUANT, 1000, 4), 1500, 1e-9);
    TERSE_TEST_NEAR(terse__sched_wire_bytes(TERSE_SCHED_WIRE_SPARSE, 1000, 4), 3000, 1e-9);
    TERSE_TEST_NEAR(terse__sched_wire_bytes(TERSE_SCHED_WIRE_NATIVE, 1000, 1), 0, 0);
    terse__sched_cost_default(&cost, 4, 1e9);
    cost.level[0].alpha[TERSE_SCHED_WIRE_SPARSE] = 1e-3;
    cost.nbuckets                                = 2;
    /* set {native, sparse}: 2 buckets x (6 x 30 us + 3 x 1 ms) */
    TERSE_TEST_NEAR(terse__sched_cost_set_latency(&cost, 0x9), 2 * (6 * 30e-6 + 3e-3), 1e-12);
    /* Top-k pays only below density 1/p: at p = 4, density 0.3 sends more than none. */
    CU_ASSERT(terse__sched_wire_bytes(TERSE_SCHED_WIRE_SPARSE,
                                      terse__sched_payload_bytes(TERSE_SCHED_FAM_TOPK, 0.3, 1000,
                                                                 0, 0, 512),
                                      4) >
              terse__sched_wire_bytes(TERSE_SCHED_WIRE_NATIVE, 4000, 4));
    /* Hierarchy: the inner level adds the same uncompressed cost to every candidate. */
    cost.nlevels         = 2;
    cost.level[1]        = cost.level[0];
    cost.level[0].nranks = 2;
    cost.level[0].bw[TERSE_SCHED_WIRE_NATIVE] = 1e11;
    TERSE_TEST_NEAR(terse__sched_cost_cand_time(&cost, TERSE_SCHED_WIRE_SUMMABLE, 1000, 100, 0.0),
                    4000.0 / 1e11 + 150.0 / 1e9, 1e-15);
}

/* The scheduler's payload formulas equal the registry's payload_size (summed over stages)
 * for every family it knows, on matrices and flat layers (PowerSGD: matrices only). */
static void
test_dp_payload_formulas(void)
{
    static const double params[TERSE_SCHED_FAM_COUNT][3] = {
        {0, 0, 0},  {0, 1, 1},         {2, 3, 8},       {0, 0, 0},      {0.001, 0.01, 0.3},
        {0.001, 0.03, 1}, {1, 4, 32}, {1, 4, 32}, {0.001, 0.01, 0.3},
    };
    static const size_t shapes[][2] = {{1000, 0}, {64, 100}, {768, 2304}, {3, 5}, {1, 1}};
    int fam, p, checked = 0;
    size_t sh;

    for (fam = 0; fam < TERSE_SCHED_FAM_COUNT; ++fam) {
        const terse_cmp_ops_t *ops = terse__cmp_find(terse__sched_fam_name(fam));
        if (ops == NULL) {
            continue; /* not registered in this build */
        }
        for (p = 0; p < 3; ++p) {
            for (sh = 0; sh < sizeof(shapes) / sizeof(shapes[0]); ++sh) {
                terse_cmp_params_t pr;
                void *ctx = NULL;
                size_t total = 0, b, rows = shapes[sh][0], cols = shapes[sh][1];
                unsigned st, ns;

                if ((fam == TERSE_SCHED_FAM_POWERSGD || fam == TERSE_SCHED_FAM_POWERSGD1) &&
                    (cols == 0)) {
                    continue;
                }
                memset(&pr, 0, sizeof(pr));
                pr.size   = sizeof(pr);
                pr.param  = params[fam][p];
                pr.count  = (cols > 0) ? rows * cols : rows;
                pr.rows   = (cols > 0) ? rows : 0;
                pr.cols   = cols;
                pr.dtype  = TERSE_FLOAT32;
                pr.mem    = TERSE_MEM_HOST;
                pr.bucket = 512;
                pr.nranks = 4;
                pr.seed   = 1;
                if (ops->create(&pr, &ctx) != TERSE_OK) {
                    continue;
                }
                ns = (ops->nstages != NULL) ? ops->nstages(ctx) : 1;
                for (st = 0; st < ns; ++st) {
                    TERSE_TEST_OK(ops->payload_size(ctx, pr.count, st, &b));
                    total += b;
                }
                ops->destroy(ctx);
                if (terse__sched_payload_bytes(fam, pr.param, pr.count, pr.rows, pr.cols, 512) !=
                    total) {
                    fprintf(stderr, "%s:%g %zu x %zu: registry %zu formula %llu\n",
                            terse__sched_fam_name(fam), pr.param, rows, cols, total,
                            (unsigned long long)terse__sched_payload_bytes(
                                fam, pr.param, pr.count, pr.rows, pr.cols, 512));
                }
                CU_ASSERT_EQUAL(terse__sched_payload_bytes(fam, pr.param, pr.count, pr.rows,
                                                           pr.cols, 512),
                                total);
                ++checked;
            }
        }
    }
    CU_ASSERT(checked > 20);
}

static CU_TestInfo dp_tests[] = {
    {"worked example of the header", test_dp_worked_example},
    {"dp equals brute force (time, latency per class set)", test_dp_brute_time},
    {"dp equals brute force (bytes)", test_dp_brute_bytes},
    {"budget 0 gives no compression", test_dp_budget_zero},
    {"huge budget gives the cheapest plan", test_dp_budget_huge},
    {"deterministic across runs", test_dp_deterministic},
    {"one layer", test_dp_one_layer},
    {"only tiny layers", test_dp_tiny_layers},
    {"slow link compresses, fast link stops", test_dp_link_speed},
    {"budgets and summed statistics", test_dp_budgets},
    {"invalid input and infeasible budgets", test_dp_invalid},
    {"cost model formulas", test_dp_costmodel},
    {"payload formulas match the compressor registry", test_dp_payload_formulas},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_dp_suites[] = {
    {"scheduler/dp", NULL, NULL, NULL, NULL, dp_tests},
    CU_SUITE_INFO_NULL,
};
