/*
 * Function:    terse__sched_solve
 *
 * Accepts:     - nlayers layers, each with 1..255 candidates (family, parameter, payload
 *                bytes, predicted absolute squared error, predicted time, wire class)
 *              - an error budget (absolute sum of squared errors, 0..+Inf)
 *              - the objective: predicted time (with latency per class set) or wire bytes
 *              - a cost model (ranks, latency per class, buckets per step)
 *
 * Returns:     - a plan: one candidate per layer, minimising the objective subject to
 *                sum_l err(l, c_l) <= budget, with its predicted time, bytes and error
 *              - TERSE_ERR_BUDGET when no combination fits (no zero-error candidate)
 *
 * Description: L-GreCo's knapsack (DESIGN.md section 5), made rank-invariant and
 *              latency-aware.
 *
 *   1. Integers first. E = max(error_buckets, 2 x nlayers), at most 4096, error units of
 *      u = budget / E (u shrunk by 1e-9 relative). Every error becomes w = ceil(err / u),
 *      rounded UP, so an integer plan with sum w <= E never exceeds the real budget; a
 *      non-finite error or w > E marks the candidate infeasible. Costs become integers too
 *      (time in 0.1 ns units, bytes as wire bytes). Budget 0: only zero-error candidates
 *      (w = 0) are feasible; budget +Inf: every finite error weighs 0. libm results differ
 *      between CPUs, integers do not: every rank gets the same plan from the same inputs.
 *   2. Outer loop over class sets S (bit w = wire class w; time objective only). Messages
 *      are fused per class per bucket, so latency is a fixed cost lat(S) of the set of
 *      classes used, not of a layer. For each S with a feasible candidate in every layer:
 *        - greedy: each layer's cheapest candidate in S; if its integer error fits, it is
 *          the optimum for S (so a huge budget gives the cheapest plan, no DP);
 *        - bound: a Lagrangian lower bound max_lambda sum_l min_c (cost + lambda w) -
 *          lambda E over a few lambdas; S is skipped when bound + lat(S) exceeds the best
 *          plan found so far (it cannot win);
 *        - otherwise the knapsack over layers below.
 *      The best (cost + lat(S)) wins; ties keep the lowest S. The bytes objective has no
 *      latency: one knapsack over all classes. If the caller names the reference setting
 *      (problem.reference) and it fits the budget in real numbers but beats the knapsack's
 *      plan (rounding up can exclude it), the reference is returned: never worse than it.
 *   3. Knapsack ("at most" form): dp_l[e] = min cost of layers 0..l with total weight <= e,
 *        dp_-1[e] = 0,   dp_l[e] = min_{c in S, w_c <= e} dp_{l-1}[e - w_c] + cost_c,
 *      choice[l][e] = the minimising c. Candidates dominated within S (weight and cost no
 *      lower than another's, ties by index) are dropped first, which cannot change the
 *      optimum; ties between totals go to the candidate of lowest weight (least error),
 *      then lowest cost, then lowest index. The plan is read back from e = E, last layer
 *      first: c = choice[l][e], e -= w_c, where choice is the first survivor (in that
 *      order) attaining dp_l[e] from the kept rows. The knapsack runs on int32 lanes (costs
 *      scaled by a power of two below 2^29); class sets are explored with two rolling rows,
 *      and the winning set is solved once more keeping every row.
 *
 *   Worked example, 3 layers, E = 6 error units, costs in time units, latency 0:
 *
 *     layer  candidates (w, cost)                                   dp_l[e] for e = 0..6
 *     A      none (0, 100)  quant:4 (2, 30)  powersgd:4 (3, 8)      100 100  30   8   8   8   8
 *     B      none (0, 40)   quant:4 (2, 12)  topk:0.01 (5, 6)       140 140  70  48  42  20  20
 *     C      none (0, 1)    quant:4 (1, 2)                          141 141  71  49  43  21  21
 *
 *   dp_C[6] = 21. Read back: C at e = 6 takes none (dp_B[6] + 1 = 21 beats
 *   dp_B[5] + 2 = 22), B at e = 6 takes quant:4 (dp_A[4] + 12 = 20), e = 4; A at e = 4 takes
 *   powersgd:4 (8). Plan: A powersgd:4, B quant:4, C none; weight 5 <= 6, cost 21. Greedy
 *   (powersgd:4, topk, none: weight 8) did not fit, and uniform quant:4 costs 44.
 *
 * Complexity:  time O(#S x sum_l ncand_l x E) in the worst case (#S <= 15 class sets; most
 *              are pruned by the bound), O(sum_l ncand_l) per bound; memory
 *              O(nlayers x E) int32 for the kept rows.
 *              500 layers x 20 candidates, E = 2048 (terse-plan-bench, median of 101 on
 *              an idle Xeon core): 1.3-1.8 ms for bytes, 5.7-7.8 ms for time (4 class sets
 *              survive the bounds there; each knapsack ~1 ms).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_sched.h"

#define DP_INF (INT64_MAX / 4)
#define DP_TIME_UNITS 1e10 /* cost units per second: 0.1 ns */
/* Costs are scaled (by a power of two) so that any plan's total stays below DP_CAP: the
 * knapsack then runs on int32 lanes (4 or 8 per vector instruction). */
#define DP_CAP (INT64_C(1) << 29)
#define DP_INF32 (INT32_C(1) << 30)

typedef struct dp_work {
    size_t    nl, ntot;
    size_t   *off;     /* per layer: first candidate in the flat arrays; off[nl] = ntot */
    uint32_t *w;
    int64_t  *c;
    int64_t   lat[16];
    uint32_t  E;
    uint8_t  *alive;   /* per candidate: feasible (w <= E, finite cost) */
    uint8_t  *wire;    /* per candidate: its wire class */
    uint8_t  *ord;     /* per layer: candidates by (weight, cost, index) */
    int32_t  *prev, *cur;
    int32_t  *table;   /* nl x (E + 1): the dp rows of the winning set, for the read-back */
    /* survivors of one class set, layer-major: weight, cost, candidate index */
    uint32_t *sw;
    int32_t  *sc;
    uint8_t  *si;
    size_t   *soff;
} dp_work_t;

static int64_t
dp_to_int(double x)
{
    if (!(x >= 0.0)) {
        return DP_INF;
    }
    if (x >= (double)(DP_INF / 1024)) {
        return DP_INF;
    }
    return (int64_t)(x + 0.5);
}

static terse_status_t
dp_validate(const terse_sched_problem_t *prob)
{
    size_t l;

    if ((prob == NULL) || (prob->layer == NULL) || (prob->nlayers == 0) ||
        (prob->cost == NULL)) {
        terse_error(TERSE_LOG_SCHED, "invalid planning problem (no layers or no cost model)");
        return TERSE_ERR_INVALID;
    }
    if (isnan(prob->budget) || (prob->budget < 0.0)) {
        terse_error(TERSE_LOG_SCHED, "invalid error budget %g", prob->budget);
        return TERSE_ERR_INVALID;
    }
    if (prob->error_buckets > TERSE_SCHED_ERROR_BUCKETS_MAX) {
        terse_error(TERSE_LOG_SCHED, "error buckets %u above the maximum %u",
                    prob->error_buckets, TERSE_SCHED_ERROR_BUCKETS_MAX);
        return TERSE_ERR_INVALID;
    }
    if ((prob->cost->nlevels < 1) || (prob->cost->nlevels > TERSE_SCHED_MAX_LEVELS)) {
        terse_error(TERSE_LOG_SCHED, "cost model with %d levels", prob->cost->nlevels);
        return TERSE_ERR_INVALID;
    }
    for (l = 0; l < prob->nlayers; ++l) {
        const terse_sched_layer_t *ly = &prob->layer[l];
        size_t i;
        if ((ly->ncand == 0) || (ly->ncand > 255) || (ly->cand == NULL)) {
            terse_error(TERSE_LOG_SCHED, "layer %zu has %zu candidates (1..255 allowed)", l,
                        ly->ncand);
            return TERSE_ERR_INVALID;
        }
        for (i = 0; i < ly->ncand; ++i) {
            if ((unsigned)ly->cand[i].wire >= TERSE_SCHED_WIRE_COUNT) {
                terse_error(TERSE_LOG_SCHED, "layer %zu candidate %zu has wire class %d", l, i,
                            (int)ly->cand[i].wire);
                return TERSE_ERR_INVALID;
            }
        }
    }
    return TERSE_OK;
}

static uint32_t
dp_units(const terse_sched_problem_t *prob)
{
    uint32_t E = (prob->error_buckets == 0) ? TERSE_SCHED_ERROR_BUCKETS_DEFAULT
                                            : prob->error_buckets;
    if ((size_t)E < 2 * prob->nlayers) {
        E = (uint32_t)TERSE_MIN(2 * prob->nlayers, (size_t)TERSE_SCHED_ERROR_BUCKETS_MAX);
    }
    if (prob->budget == 0.0) {
        E = 0;
    }
    return E;
}

static uint32_t
dp_weight(double err, double budget, double unit, uint32_t E)
{
    double q;

    if (!isfinite(err) || (err < 0.0)) {
        return E + 1;
    }
    if (err == 0.0) {
        return 0;
    }
    if (budget == 0.0) {
        return E + 1;
    }
    if (isinf(budget)) {
        return 0;
    }
    q = err / unit;
    if (!(q <= (double)E)) {
        return E + 1;
    }
    return (uint32_t)ceil(q);
}

static int64_t
dp_cost(const terse_sched_problem_t *prob, const terse_sched_cand_t *c)
{
    const terse_sched_cost_t *cost = prob->cost;

    if (prob->objective == TERSE_SCHED_OBJ_BYTES) {
        return dp_to_int(terse__sched_wire_bytes(c->wire, (double)c->bytes,
                                                 cost->level[cost->nlevels - 1].nranks));
    }
    if (!isfinite(c->time)) {
        return DP_INF;
    }
    return dp_to_int(c->time * DP_TIME_UNITS);
}

terse_status_t
terse__sched_discretise(const terse_sched_problem_t *prob, uint32_t *w, int64_t *c,
                        int64_t *lat, uint32_t *E_p)
{
    uint32_t E;
    double unit;
    size_t l, i, k = 0;
    unsigned s;

    TERSE_CHECK(dp_validate(prob));
    E    = dp_units(prob);
    unit = (E > 0) ? prob->budget / (double)E * (1.0 - 1e-9) : 0.0;
    for (l = 0; l < prob->nlayers; ++l) {
        for (i = 0; i < prob->layer[l].ncand; ++i, ++k) {
            const terse_sched_cand_t *cd = &prob->layer[l].cand[i];
            w[k] = dp_weight(cd->sq_err, prob->budget, unit, E);
            c[k] = dp_cost(prob, cd);
            if (c[k] >= DP_INF) {
                w[k] = E + 1;
            }
        }
    }
    for (s = 0; s < 16; ++s) {
        lat[s] = (prob->objective == TERSE_SCHED_OBJ_BYTES)
                     ? 0
                     : dp_to_int(terse__sched_cost_set_latency(prob->cost, s) * DP_TIME_UNITS);
    }
    /* Scale by 2^-shift so that the most expensive plan stays below DP_CAP. */
    {
        int64_t maxtot = 0, maxlat = 0;
        unsigned shift = 0;
        for (l = 0, k = 0; l < prob->nlayers; ++l) {
            int64_t m = 0;
            for (i = 0; i < prob->layer[l].ncand; ++i, ++k) {
                if ((w[k] <= E) && (c[k] > m)) {
                    m = c[k];
                }
            }
            maxtot += m;
        }
        for (s = 0; s < 16; ++s) {
            maxlat = (lat[s] < DP_INF) ? TERSE_MAX(maxlat, lat[s]) : maxlat;
        }
        maxtot += maxlat;
        while ((maxtot >> shift) >= DP_CAP) {
            ++shift;
        }
        if (shift > 0) {
            int64_t half = INT64_C(1) << (shift - 1);
            for (l = 0, k = 0; l < prob->nlayers; ++l) {
                for (i = 0; i < prob->layer[l].ncand; ++i, ++k) {
                    c[k] = (w[k] <= E) ? (c[k] + half) >> shift : DP_INF;
                }
            }
            for (s = 0; s < 16; ++s) {
                lat[s] = (lat[s] < DP_INF) ? (lat[s] + half) >> shift : DP_INF;
            }
        }
    }
    *E_p = E;
    return TERSE_OK;
}

static void
dp_work_free(dp_work_t *wk)
{
    free(wk->off);
    free(wk->w);
    free(wk->c);
    free(wk->alive);
    free(wk->wire);
    free(wk->ord);
    free(wk->prev);
    free(wk->cur);
    free(wk->table);
    free(wk->sw);
    free(wk->sc);
    free(wk->si);
    free(wk->soff);
}

/* Marks infeasible candidates dead. */
static void
dp_prune(dp_work_t *wk)
{
    size_t k;

    for (k = 0; k < wk->ntot; ++k) {
        wk->alive[k] = ((wk->w[k] <= wk->E) && (wk->c[k] < DP_INF)) ? 1 : 0;
    }
}

static inline int
dp_in_set(const dp_work_t *wk, size_t l, size_t i, unsigned set)
{
    return (set >> wk->wire[wk->off[l] + i]) & 1u;
}

/* Greedy pick in set S: per layer the cheapest alive candidate (lowest index on ties).
 * Returns 0 if some layer has none; else fills pick, *cost_p, *weight_p. */
static int
dp_greedy(const dp_work_t *wk, const terse_sched_problem_t *prob, unsigned set, uint8_t *pick,
          int64_t *cost_p, uint64_t *weight_p)
{
    int64_t cost = 0;
    uint64_t weight = 0;
    size_t l, i;

    for (l = 0; l < wk->nl; ++l) {
        size_t o = wk->off[l], n = wk->off[l + 1] - o, bi = n;
        for (i = 0; i < n; ++i) {
            if (wk->alive[o + i] && dp_in_set(wk, l, i, set) &&
                ((bi == n) || (wk->c[o + i] < wk->c[o + bi]))) {
                bi = i;
            }
        }
        if (bi == n) {
            return 0;
        }
        pick[l] = (uint8_t)bi;
        cost += wk->c[o + bi];
        weight += wk->w[o + bi];
    }
    *cost_p   = cost;
    *weight_p = weight;
    return 1;
}

/* A Lagrangian lower bound of the knapsack over the current survivors (double; only used
 * to skip class sets): max over lambda of sum_l min_c (cost + lambda w) - lambda E, over a
 * few lambdas, starting at the one that served last (*kbest). Stops above thresh. */
static double
dp_bound(const dp_work_t *wk, double lam0, double thresh, int *kbest)
{
    double best = 0.0;
    int step, k;
    size_t l, i;

    for (step = 0; step < 11; ++step) {
        double b = 0.0, lam;
        k   = *kbest + ((step & 1) ? -(step + 1) : step); /* kbest, -2, +2, -4, +4 ... */
        lam = ldexp(lam0, k);
        for (l = 0; l < wk->nl; ++l) {
            double m = INFINITY;
            for (i = wk->soff[l]; i < wk->soff[l + 1]; ++i) {
                double v = (double)wk->sc[i] + lam * (double)wk->sw[i];
                m        = (v < m) ? v : m;
            }
            b += m;
        }
        b -= lam * (double)wk->E;
        if (b > best) {
            best   = b;
            *kbest = k;
        }
        if (best > thresh) {
            break;
        }
    }
    return best;
}

/* Per layer, candidate indices sorted by (weight, cost, index): insertion sort. */
static void
dp_order(dp_work_t *wk)
{
    size_t l, i, j;

    for (l = 0; l < wk->nl; ++l) {
        size_t o = wk->off[l], n = wk->off[l + 1] - o;
        uint8_t *ord = wk->ord + o;
        for (i = 0; i < n; ++i) {
            uint8_t x = (uint8_t)i;
            for (j = i; j > 0; --j) {
                uint8_t y = ord[j - 1];
                if ((wk->w[o + y] < wk->w[o + x]) ||
                    ((wk->w[o + y] == wk->w[o + x]) && (wk->c[o + y] <= wk->c[o + x]))) {
                    break;
                }
                ord[j] = y;
            }
            ord[j] = x;
        }
    }
}

/* The survivors of set S: alive candidates of a class in S that no other such candidate
 * dominates (weight and cost no higher, one of them lower, or both equal and a lower index).
 * Dropping them cannot change the optimum. In (weight, cost, index) order a candidate
 * survives exactly when its cost is below that of every earlier one; survivors are kept in
 * that order, so that the knapsack's strict comparison resolves equal totals towards the
 * lowest weight (least error), then the lowest cost, then the lowest index. */
static void
dp_survivors(dp_work_t *wk, unsigned set)
{
    size_t l, i, n = 0;

    for (l = 0; l < wk->nl; ++l) {
        size_t o = wk->off[l], nc = wk->off[l + 1] - o;
        int64_t best = DP_INF;
        wk->soff[l] = n;
        for (i = 0; i < nc; ++i) {
            size_t k = o + wk->ord[o + i];
            if (!wk->alive[k] || !((set >> wk->wire[k]) & 1u) || (wk->c[k] >= best)) {
                continue;
            }
            best      = wk->c[k];
            wk->sw[n] = wk->w[k];
            wk->sc[n] = (int32_t)wk->c[k];
            wk->si[n] = wk->ord[o + i];
            ++n;
        }
    }
    wk->soff[wk->nl] = n;
}

/* The hot loops: int32 lanes, compiled for AVX2 too where the compiler can dispatch.
 * cur[e] = min(cur[e], prev[e - wi] + ci) for e in [wi, E1).
 * No saturation is needed: finite values stay below DP_CAP <= DP_INF32 / 2, a sum of
 * DP_INF32 and a cost fits in int32, and cur only takes values below DP_INF32. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__)
#define DP_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define DP_CLONES
#endif

/* The first survivor of a layer writes the whole row. */
DP_CLONES static void
dp_first(int32_t *restrict cur, const int32_t *restrict prev, size_t wi, size_t E1, int32_t ci)
{
    size_t e;

    for (e = 0; (e < wi) && (e < E1); ++e) {
        cur[e] = DP_INF32;
    }
    for (e = wi; e < E1; ++e) {
        cur[e] = prev[e - wi] + ci;
    }
}

/* The other survivors relax it. */
DP_CLONES static void
dp_relax_min(int32_t *restrict cur, const int32_t *restrict prev, size_t wi, size_t E1,
             int32_t ci)
{
    size_t e;

    for (e = wi; e < E1; ++e) {
        int32_t v  = prev[e - wi] + ci;
        int32_t cu = cur[e];
        cur[e]     = (v < cu) ? v : cu;
    }
}

/* The knapsack over the current survivors. With table (nl x (E + 1) int32), row l of dp
 * is kept there for the read-back; else two rows roll. Returns dp[E] (DP_INF when
 * infeasible). */
static int64_t
dp_knapsack(dp_work_t *wk, int32_t *table)
{
    size_t E1 = (size_t)wk->E + 1, l, i, e;
    int32_t *prev = wk->prev, *cur = wk->cur, *tmp;

    for (e = 0; e < E1; ++e) {
        prev[e] = 0;
    }
    for (l = 0; l < wk->nl; ++l) {
        if (table != NULL) {
            cur = table + l * E1;
        }
        i = wk->soff[l];
        if (i == wk->soff[l + 1]) {
            return DP_INF; /* no candidate in this set */
        }
        dp_first(cur, prev, wk->sw[i], E1, wk->sc[i]);
        for (++i; i < wk->soff[l + 1]; ++i) {
            dp_relax_min(cur, prev, wk->sw[i], E1, wk->sc[i]);
        }
        if (table != NULL) {
            prev = cur;
        } else {
            tmp  = prev;
            prev = cur;
            cur  = tmp;
        }
    }
    if (table == NULL) {
        wk->prev = prev;
        wk->cur  = cur;
    }
    return (prev[wk->E] >= DP_INF32) ? DP_INF : (int64_t)prev[wk->E];
}

/* Reads the plan back from the dp rows: at layer l and weight e, the first survivor (in
 * (weight, cost, index) order) that attains row l [e]: the one a recording knapsack with a
 * strict comparison would have kept. */
static void
dp_readback(const dp_work_t *wk, const int32_t *table, uint8_t *pick)
{
    size_t E1 = (size_t)wk->E + 1, l, i;
    uint32_t e = wk->E;

    for (l = wk->nl; l-- > 0;) {
        int32_t want = table[l * E1 + e];
        for (i = wk->soff[l]; i < wk->soff[l + 1]; ++i) {
            uint32_t w = wk->sw[i];
            int32_t before = (l > 0) ? table[(l - 1) * E1 + (e - w)] : 0;
            if ((w <= e) && (before + wk->sc[i] == want)) {
                break;
            }
        }
        pick[l] = wk->si[i];
        e -= wk->sw[i];
    }
}

terse_status_t
terse__sched_solve(const terse_sched_problem_t *prob, terse_plan_t *plan_p)
{
    dp_work_t wk;
    terse_status_t status;
    terse_plan_t plan;
    uint8_t *pick = NULL, *best_pick = NULL;
    unsigned present = 0, set, nsets, best_set = 0, used = 0;
    int have_best = 0, best_from_dp = 0;
    unsigned nknap = 0;
    int kbest = 0;
    int64_t best_cost = DP_INF;
    double lam0 = 0.0;
    size_t l, i, E1;

    TERSE_CHECK(dp_validate(prob));
    memset(&wk, 0, sizeof(wk));
    wk.nl = prob->nlayers;
    wk.E  = dp_units(prob);
    E1    = (size_t)wk.E + 1;
    wk.off = malloc((wk.nl + 1) * sizeof(*wk.off));
    if (wk.off == NULL) {
        status = TERSE_ERR_NOMEM;
        goto err_nomem;
    }
    for (l = 0; l < wk.nl; ++l) {
        wk.off[l] = wk.ntot;
        wk.ntot += prob->layer[l].ncand;
    }
    wk.off[wk.nl] = wk.ntot;
    wk.w       = malloc(wk.ntot * sizeof(*wk.w));
    wk.c       = malloc(wk.ntot * sizeof(*wk.c));
    wk.alive   = malloc(wk.ntot);
    wk.wire    = malloc(wk.ntot);
    wk.ord     = malloc(wk.ntot);
    wk.prev    = malloc(E1 * sizeof(*wk.prev));
    wk.cur     = malloc(E1 * sizeof(*wk.cur));
    wk.sw      = malloc(wk.ntot * sizeof(*wk.sw));
    wk.sc      = malloc(wk.ntot * sizeof(*wk.sc));
    wk.si      = malloc(wk.ntot);
    wk.soff    = malloc((wk.nl + 1) * sizeof(*wk.soff));
    wk.table   = malloc(wk.nl * E1 * sizeof(*wk.table));
    pick       = malloc(wk.nl);
    best_pick  = malloc(wk.nl);
    if ((wk.w == NULL) || (wk.c == NULL) || (wk.alive == NULL) || (wk.prev == NULL) ||
        (wk.cur == NULL) || (wk.table == NULL) || (pick == NULL) ||
        (best_pick == NULL) || (wk.sw == NULL) || (wk.sc == NULL) ||
        (wk.si == NULL) || (wk.soff == NULL) || (wk.wire == NULL) || (wk.ord == NULL)) {
        status = TERSE_ERR_NOMEM;
        goto err_nomem;
    }
    TERSE_CHECK_GOTO(terse__sched_discretise(prob, wk.w, wk.c, wk.lat, &wk.E), status,
                     err_free_work);
    dp_prune(&wk);
    for (l = 0; l < wk.nl; ++l) {
        for (i = 0; i < prob->layer[l].ncand; ++i) {
            wk.wire[wk.off[l] + i] = (uint8_t)prob->layer[l].cand[i].wire;
        }
    }
    dp_order(&wk);

    for (l = 0; l < wk.nl; ++l) {
        int64_t lo = DP_INF, hi = 0;
        for (i = 0; i < prob->layer[l].ncand; ++i) {
            if (wk.alive[wk.off[l] + i]) {
                present |= 1u << (unsigned)prob->layer[l].cand[i].wire;
                lo = TERSE_MIN(lo, wk.c[wk.off[l] + i]);
                hi = TERSE_MAX(hi, wk.c[wk.off[l] + i]);
            }
        }
        if (hi >= lo) {
            lam0 += (double)(hi - lo);
        }
    }
    lam0 = lam0 / (double)(wk.E + 1) + 1e-3;

    /* Sets in a fixed order: the bytes objective has one (every class present). */
    nsets = (prob->objective == TERSE_SCHED_OBJ_BYTES) ? 1 : 16;
    for (set = 1; set <= nsets; ++set) {
        unsigned s = (prob->objective == TERSE_SCHED_OBJ_BYTES) ? present : (16 - set);
        int64_t g_cost, total;
        uint64_t g_weight;

        if ((s == 0) || ((s & present) != s)) {
            continue;
        }
        if (!dp_greedy(&wk, prob, s, pick, &g_cost, &g_weight)) {
            continue;
        }
        if (g_weight <= wk.E) {
            total = g_cost + wk.lat[s];
            if (!have_best || (total < best_cost) || ((total == best_cost) && (s < best_set))) {
                have_best    = 1;
                best_cost    = total;
                best_set     = s;
                best_from_dp = 0;
                memcpy(best_pick, pick, wk.nl);
            }
            continue;
        }
        if (have_best && (g_cost + wk.lat[s] > best_cost)) {
            continue; /* even the budget-free cheapest plan of S loses */
        }
        dp_survivors(&wk, s);
        if (have_best) {
            /* A margin for the double arithmetic of the bound. */
            double thresh = (double)(best_cost - wk.lat[s]) + 2.0 + 1e-9 * (double)best_cost;
            if (dp_bound(&wk, lam0, thresh, &kbest) > thresh) {
                continue;
            }
        }
        total = dp_knapsack(&wk, (nsets == 1) ? wk.table : NULL);
        ++nknap;
        if (total >= DP_INF) {
            continue;
        }
        total += wk.lat[s];
        if (!have_best || (total < best_cost) || ((total == best_cost) && (s < best_set))) {
            have_best    = 1;
            best_cost    = total;
            best_set     = s;
            best_from_dp = 1;
        }
    }
    if (prob->reference != NULL) {
        int64_t rc = 0;
        double rerr = 0.0;
        unsigned rset = 0;
        int ok = 1;
        for (l = 0; (l < wk.nl) && ok; ++l) {
            int r = prob->reference[l];
            if ((r < 0) || ((size_t)r >= prob->layer[l].ncand) ||
                !isfinite(prob->layer[l].cand[r].sq_err) || (wk.c[wk.off[l] + r] >= DP_INF)) {
                ok = 0;
                break;
            }
            rc += wk.c[wk.off[l] + (size_t)r];
            rerr += prob->layer[l].cand[r].sq_err;
            rset |= 1u << (unsigned)prob->layer[l].cand[r].wire;
            pick[l] = (uint8_t)r;
        }
        if (ok && (rerr <= prob->budget) && (!have_best || (rc + wk.lat[rset] < best_cost))) {
            have_best    = 1;
            best_cost    = rc + wk.lat[rset];
            best_set     = rset;
            best_from_dp = 0;
            memcpy(best_pick, pick, wk.nl);
        }
    }
    if (!have_best) {
        terse_error(TERSE_LOG_SCHED,
                    "no plan meets the error budget %g over %zu layers (a layer needs a "
                    "zero-error candidate such as none)",
                    prob->budget, prob->nlayers);
        status = TERSE_ERR_BUDGET;
        goto err_free_work;
    }
    if (best_from_dp) {
        if (nsets > 1) {
            dp_survivors(&wk, best_set);
            dp_knapsack(&wk, wk.table); /* again, keeping every row */
        }
        dp_readback(&wk, wk.table, best_pick);
    }

    TERSE_CHECK_GOTO(terse__sched_plan_alloc(wk.nl, &plan), status, err_free_work);
    for (l = 0; l < wk.nl; ++l) {
        const terse_sched_layer_t *ly = &prob->layer[l];
        const terse_sched_cand_t *cd = &ly->cand[best_pick[l]];
        terse_plan_layer_t *pl = &plan.layer[l];
        const terse_sched_level_t *top = &prob->cost->level[prob->cost->nlevels - 1];

        pl->layer = (int)l;
        snprintf(pl->name, sizeof(pl->name), "%s", (ly->name != NULL) ? ly->name : "-");
        pl->count           = (int64_t)ly->count;
        pl->fam             = cd->fam;
        pl->param           = cd->param;
        pl->bytes           = (int64_t)cd->bytes;
        pl->expected_sq_err = cd->sq_err;
        pl->cand            = best_pick[l];
        plan.predicted_time += cd->time;
        plan.wire_bytes += terse__sched_wire_bytes(cd->wire, (double)cd->bytes, top->nranks);
        plan.sq_err += cd->sq_err;
        used |= 1u << (unsigned)cd->wire;
    }
    plan.predicted_time += terse__sched_cost_set_latency(prob->cost, used);
    plan.budget   = prob->budget;
    plan.wire_set = used;
    terse_debug(TERSE_LOG_SCHED,
                "plan for %zu layers: classes 0x%x time %.3e s bytes %.0f error %.3e budget "
                "%.3e units %u knapsacks %u",
                wk.nl, used, plan.predicted_time, plan.wire_bytes, plan.sq_err, prob->budget,
                wk.E, nknap);
    free(pick);
    free(best_pick);
    dp_work_free(&wk);
    *plan_p = plan;
    return TERSE_OK;

err_nomem:
    terse_error(TERSE_LOG_SCHED, "failed to allocate planner workspace for %zu layers",
                prob->nlayers);
err_free_work:
    free(pick);
    free(best_pick);
    dp_work_free(&wk);
    return status;
}

/* ---------------------------------------------------------------- problem helpers */
terse_status_t
terse__sched_layer_fill(const terse_sched_grid_t *grid, const terse_sched_cost_t *cost,
                        size_t count, const double *stats, const uint64_t *bytes,
                        const double *time_cmp, terse_sched_cand_t *cand, size_t *ncand_p)
{
    size_t i, n = 0;

    if ((grid == NULL) || (cost == NULL) || (stats == NULL) || (bytes == NULL) ||
        (cand == NULL) || (ncand_p == NULL)) {
        terse_error(TERSE_LOG_SCHED, "invalid arguments to layer_fill");
        return TERSE_ERR_INVALID;
    }
    for (i = 0; i < grid->n; ++i) {
        const terse_sched_option_t *o = &grid->opt[i];
        double err = stats[TERSE_SCHED_STATS_HEAD + i], tc;
        uint64_t b = bytes[i];

        if (o->fam == TERSE_SCHED_FAM_NONE) {
            err = 0.0;
            if (b == UINT64_MAX) {
                b = 4 * (uint64_t)count;
            }
        } else if ((b == UINT64_MAX) || !isfinite(err)) {
            continue;
        }
        tc = ((time_cmp != NULL) && (time_cmp[i] >= 0.0))
                 ? time_cmp[i]
                 : terse__sched_cost_cmp_time(cost, o->fam, count);
        cand[n].fam    = o->fam;
        cand[n].param  = o->param;
        cand[n].bytes  = b;
        cand[n].sq_err = err;
        cand[n].wire   = terse__sched_fam_wire(o->fam);
        cand[n].time   = terse__sched_cost_cand_time(cost, cand[n].wire, count, b, tc);
        ++n;
    }
    *ncand_p = n;
    return TERSE_OK;
}

terse_status_t
terse__sched_budget_reference(const terse_sched_layer_t *layer, size_t nlayers, int fam,
                              double param, double alpha, double *budget_p)
{
    double sum = 0.0;
    size_t l, i;

    if ((layer == NULL) || (budget_p == NULL) || isnan(alpha) || (alpha < 0.0)) {
        terse_error(TERSE_LOG_SCHED, "invalid reference budget (alpha %g)", alpha);
        return TERSE_ERR_INVALID;
    }
    for (l = 0; l < nlayers; ++l) {
        for (i = 0; i < layer[l].ncand; ++i) {
            if ((layer[l].cand[i].fam == fam) && (layer[l].cand[i].param == param)) {
                if (!isfinite(layer[l].cand[i].sq_err)) {
                    terse_error(TERSE_LOG_SCHED, "reference error of layer %zu is not finite",
                                l);
                    return TERSE_ERR_INVALID;
                }
                sum += layer[l].cand[i].sq_err;
                break;
            }
        }
    }
    *budget_p = alpha * sum;
    return TERSE_OK;
}

double
terse__sched_budget_fraction(const double *stats, size_t nlayers, size_t stride,
                             double fraction)
{
    double sum = 0.0;
    size_t l;

    for (l = 0; l < nlayers; ++l) {
        double v = stats[l * stride + TERSE_SCHED_STATS_NORM];
        if (isfinite(v)) {
            sum += v;
        }
    }
    return fraction * sum;
}
