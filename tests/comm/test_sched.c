/*
 * comm: the scheduler wired into the library (TERSE_COMPRESSOR=auto), over the loop transport
 * (ranks as threads). The cost model is fixed through terse__ctx_set_cost, so plans depend only
 * on the data: a slow modelled link makes the planner compress, a fast one makes it stop; every
 * rank holds the same plan on every step and switches on the same step; budget 0 means no
 * compression; TERSE_PLAN pins a plan and a malformed file fails clearly; TERSE_STATS lines
 * are JSON; a run saved at step t and restarted continues bitwise identically.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "terse_test.h"
#include "terse_internal.h"

#define SCHED_MAXP 4
#define SCHED_MAXSTEP 16
#define SCHED_NL 3

/* A low-rank matrix, a flat gaussian vector, a bias; the flat variant has no matrix (so
 * PowerSGD is never chosen). */
static const size_t sched_counts[SCHED_NL] = {64 * 48, 6000, 40};
static const size_t sched_rows[SCHED_NL]   = {64, 0, 0};
static const size_t sched_cols[SCHED_NL]   = {48, 0, 0};
#define SCHED_TOTAL (64 * 48 + 6000 + 40)

typedef struct sched_run {
    int         steps;
    int         warmup, replan;
    double      budget;        /* TERSE_ERROR_BUDGET */
    double      bw, lat;       /* modelled link */
    int         flat;          /* register every layer flat */
    int         save_at;       /* > 0: save before this step, restart, load */
    int         pin_bad;       /* pin a malformed plan file */
    const char *pin;           /* plan file to pin, or NULL */
    const char *state;         /* state file pattern */
    const char *stats;         /* TERSE_STATS file pattern, or NULL */
    uint32_t    lag;           /* TERSE_STATS_ASYNC's lag (0: synchronous re-plans) */
    int         try_save_at;   /* > 0: try terse_state_save before this step (save_status) */
    /* results */
    char        cmp[SCHED_MAXP][SCHED_MAXSTEP][SCHED_NL][TERSE_NAME_MAX];
    double      param[SCHED_MAXP][SCHED_MAXSTEP][SCHED_NL];
    uint64_t    out[SCHED_MAXP][SCHED_MAXSTEP];   /* hash of each step's output */
    uint64_t    plan_sum[SCHED_MAXP][SCHED_MAXSTEP];
    terse_status_t status[SCHED_MAXP];
    terse_status_t load_status[SCHED_MAXP];
    terse_status_t pin_status[SCHED_MAXP];
    terse_status_t save_status[SCHED_MAXP];
} sched_run_t;

static terse_status_t
sched_ctx(void *ep, const sched_run_t *run, int rank, terse_ctx_t **ctx_p)
{
    terse_ctx_params_t params = TERSE_CTX_PARAMS_INIT;
    terse_sched_cost_t cost;
    terse_ctx_t *ctx;
    char file[256];
    int l, w;

    params.transport = TERSE_TRANSPORT_LOOP;
    params.comm      = ep;
    params.seed      = 7;
    TERSE_CHECK(terse_ctx_create(&params, &ctx));
    for (l = 0; l < SCHED_NL; ++l) {
        TERSE_CHECK(terse_layer_register(ctx, (l == 0) ? "mat" : (l == 1) ? "vec" : "bias",
                                         sched_counts[l], run->flat ? 0 : sched_rows[l],
                                         run->flat ? 0 : sched_cols[l], NULL));
    }
    /* auto whatever TERSE_COMPRESSOR says in the environment */
    ctx->auto_reg       = 1;
    ctx->sched_warmup   = run->warmup;
    ctx->sched_replan   = run->replan;
    ctx->sched_alpha    = run->budget;
    ctx->sched_fraction = 0.0;
    ctx->sched_lag      = run->lag;
    terse__sched_cost_default(&cost, ctx->nranks, run->bw);
    for (w = 0; w < TERSE_SCHED_WIRE_COUNT; ++w) {
        cost.level[0].alpha[w] = run->lat;
    }
    terse__ctx_set_cost(ctx, &cost);
    if (run->stats != NULL) {
        TERSE_CHECK(terse__path_expand(run->stats, rank, file, sizeof(file)));
        ctx->stats_file = fopen(file, "w");
    }
    *ctx_p = ctx;
    return TERSE_OK;
}

static void
sched_input(int rank, int step, float *x)
{
    size_t i;

    /* a common low-rank part plus per-rank noise: gradients of one model on several ranks */
    terse_test_lowrank(500 + (uint64_t)step, 64, 48, 2, 0.0f, x);
    for (i = 0; i < 64 * 48; ++i) {
        x[i] += 0.05f * (float)(terse_test_uniform(900 + 31 * (uint64_t)rank, i + 7919u * step) - 0.5);
    }
    terse_test_gaussian(100000 + 100 * (uint64_t)step + (uint64_t)rank, x + 64 * 48, 6040);
}

static uint64_t
sched_hash(const float *y, size_t n)
{
    return terse__hash64(y, n * sizeof(float), 0x1234);
}

static void
sched_rank(void *ep, int rank, int nranks, void *arg)
{
    sched_run_t *run = arg;
    terse_ctx_t *ctx = NULL;
    terse_plan_entry_t e[SCHED_NL];
    const terse_slot_t *slot;
    float *x = malloc(SCHED_TOTAL * sizeof(float)), *y = malloc(SCHED_TOTAL * sizeof(float));
    size_t n;
    int s, l;

    (void)nranks;
    run->status[rank] = sched_ctx(ep, run, rank, &ctx);
    if (run->status[rank] != TERSE_OK) {
        goto out;
    }
    if (run->pin != NULL) {
        run->pin_status[rank] = terse__ctx_pin_plan(ctx, run->pin);
        if (run->pin_status[rank] != TERSE_OK) {
            goto out;
        }
    }
    for (s = 0; s < run->steps; ++s) {
        if ((run->save_at > 0) && (s == run->save_at)) {
            if (terse_state_save(ctx, run->state) != TERSE_OK) {
                run->status[rank] = TERSE_ERR_SYSTEM;
            }
            terse_ctx_destroy(ctx);
            ctx = NULL;
            run->status[rank] = sched_ctx(ep, run, rank, &ctx);
            if (run->status[rank] != TERSE_OK) {
                goto out;
            }
            run->load_status[rank] = terse_state_load(ctx, run->state);
        }
        if ((run->try_save_at > 0) && (s == run->try_save_at) && (run->state != NULL)) {
            run->save_status[rank] = terse_state_save(ctx, run->state);
        }
        sched_input(rank, s, x);
        if (terse_allreduce(ctx, x, y, SCHED_TOTAL, TERSE_FLOAT32, TERSE_OP_AVG,
                            TERSE_MEM_HOST, NULL) != TERSE_OK) {
            run->status[rank] = TERSE_ERR_INTERNAL;
        }
        run->out[rank][s] = sched_hash(y, SCHED_TOTAL);
        terse_plan_get(ctx, e, SCHED_NL, &n);
        for (l = 0; l < SCHED_NL; ++l) {
            snprintf(run->cmp[rank][s][l], TERSE_NAME_MAX, "%s", e[l].compressor);
            run->param[rank][s][l] = e[l].param;
        }
        slot = ctx->slots;
        while ((slot != NULL) && (slot->key != TERSE_KEY_REG)) {
            slot = slot->next;
        }
        run->plan_sum[rank][s] = (slot != NULL) ? slot->plan_sum : 0;
    }
out:
    terse_ctx_destroy(ctx);
    free(x);
    free(y);
}

static sched_run_t *
sched_run_new(void)
{
    sched_run_t *run = calloc(1, sizeof(*run));

    run->steps   = 10;
    run->warmup  = 3;
    run->replan  = 4;
    run->budget  = 1.0;
    run->bw      = 1e6;   /* 1 MB/s: compressing pays */
    run->lat     = 1e-6;
    return run;
}

/* Every rank: same plan, same output, on every step. */
static void
sched_check_ranks(const sched_run_t *run, int p)
{
    int r, s, l;

    for (r = 0; r < p; ++r) {
        CU_ASSERT_EQUAL(run->status[r], TERSE_OK);
    }
    for (r = 1; r < p; ++r) {
        for (s = 0; s < run->steps; ++s) {
            CU_ASSERT_EQUAL(run->out[r][s], run->out[0][s]);
            CU_ASSERT_EQUAL(run->plan_sum[r][s], run->plan_sum[0][s]);
            for (l = 0; l < SCHED_NL; ++l) {
                CU_ASSERT_STRING_EQUAL(run->cmp[r][s][l], run->cmp[0][s][l]);
                CU_ASSERT_EQUAL(run->param[r][s][l], run->param[0][s][l]);
            }
        }
    }
}

static int
sched_compressing(const sched_run_t *run, int s)
{
    int l, c = 0;

    for (l = 0; l < SCHED_NL; ++l) {
        c += (strcmp(run->cmp[0][s][l], "none") != 0);
    }
    return c;
}

static void
test_sched_slow_link_compresses(void)
{
    int p, s;

    for (p = 2; p <= SCHED_MAXP; p += 2) {
        sched_run_t *run = sched_run_new();
        TERSE_TEST_OK(terse_loop_run(p, sched_rank, run));
        sched_check_ranks(run, p);
        /* warm-up: nothing compressed; the first plan (statistics of step warmup - 1) takes
         * effect exactly at step `warmup` on every rank */
        for (s = 0; s < run->warmup; ++s) {
            CU_ASSERT_EQUAL(sched_compressing(run, s), 0);
            CU_ASSERT_EQUAL(run->plan_sum[0][s], 0);
        }
        CU_ASSERT(run->plan_sum[0][run->warmup] != 0);
        /* the big layers are compressed on a 1 MB/s link */
        CU_ASSERT(strcmp(run->cmp[0][run->warmup][0], "none") != 0);
        CU_ASSERT(strcmp(run->cmp[0][run->warmup][1], "none") != 0);
        /* the next plan switches at warmup + replan, not before */
        for (s = run->warmup; s < run->warmup + run->replan; ++s) {
            CU_ASSERT_EQUAL(run->plan_sum[0][s], run->plan_sum[0][run->warmup]);
        }
        free(run);
    }
}

/* TERSE_STATS_ASYNC: the statistics of plan step P run on a helper thread and the plan takes
 * effect at P + lag + 1 instead of P + 1 on every rank: the same plans as synchronous
 * re-planning, `lag` steps later (the inputs do not depend on earlier outputs). A state save
 * while a re-plan is pending is refused, one outside it is not. */
static void
test_sched_async(void)
{
    char pattern[128], file[256];
    sched_run_t *sync = sched_run_new(), *as = sched_run_new();
    int s, r, n = 0;

    sync->steps = as->steps = SCHED_MAXSTEP;
    sync->replan = as->replan = 5;
    as->lag = 2;
    snprintf(pattern, sizeof(pattern), "/tmp/terse_test_async_%d_%%r.bin", (int)getpid());
    as->state       = pattern;
    as->try_save_at = 9; /* plan steps 2, 7, 12: 7's job is pending until step 9 */
    TERSE_TEST_OK(terse_loop_run(3, sched_rank, sync));
    TERSE_TEST_OK(terse_loop_run(3, sched_rank, as));
    sched_check_ranks(sync, 3);
    sched_check_ranks(as, 3);
    for (s = 0; s < as->steps; ++s) {
        const uint64_t want = (s >= (int)as->lag) ? sync->plan_sum[0][s - (int)as->lag] : 0;
        CU_ASSERT_EQUAL(as->plan_sum[0][s], want);
        n += (s > 0) && (as->plan_sum[0][s] != as->plan_sum[0][s - 1]);
    }
    CU_ASSERT(n >= 2); /* the plans did change: the comparison above compared something */
    CU_ASSERT(as->plan_sum[0][sync->warmup] == 0);     /* not yet: the first plan is late */
    CU_ASSERT(sync->plan_sum[0][sync->warmup] != 0);
    for (r = 0; r < 3; ++r) {
        CU_ASSERT_EQUAL(as->save_status[r], TERSE_ERR_UNSUPPORTED);
    }
    free(as);
    as = sched_run_new();
    as->steps = SCHED_MAXSTEP, as->replan = 5, as->lag = 2, as->state = pattern;
    as->try_save_at = 11; /* between re-plans */
    TERSE_TEST_OK(terse_loop_run(3, sched_rank, as));
    for (r = 0; r < 3; ++r) {
        CU_ASSERT_EQUAL(as->save_status[r], TERSE_OK);
        TERSE_TEST_OK(terse__path_expand(pattern, r, file, sizeof(file)));
        unlink(file);
    }
    free(as);
    free(sync);
}

static void
test_sched_fast_link_stops(void)
{
    sched_run_t *run = sched_run_new();
    int s;

    run->bw  = 1e13; /* compress time exceeds the wire time saved */
    run->lat = 1e-9;
    TERSE_TEST_OK(terse_loop_run(3, sched_rank, run));
    sched_check_ranks(run, 3);
    for (s = 0; s < run->steps; ++s) {
        CU_ASSERT_EQUAL(sched_compressing(run, s), 0);
    }
    CU_ASSERT(run->plan_sum[0][run->steps - 1] != 0); /* a plan was solved: all none */
    free(run);
}

static void
test_sched_budget_zero(void)
{
    sched_run_t *run = sched_run_new();
    int s;

    run->budget = 0.0;
    TERSE_TEST_OK(terse_loop_run(2, sched_rank, run));
    sched_check_ranks(run, 2);
    for (s = 0; s < run->steps; ++s) {
        CU_ASSERT_EQUAL(sched_compressing(run, s), 0);
    }
    free(run);
}

/* The same job run twice gives the same plans and results (no timing enters the decision). */
static void
test_sched_deterministic(void)
{
    sched_run_t *a = sched_run_new(), *b = sched_run_new();
    int s;

    TERSE_TEST_OK(terse_loop_run(2, sched_rank, a));
    TERSE_TEST_OK(terse_loop_run(2, sched_rank, b));
    for (s = 0; s < a->steps; ++s) {
        CU_ASSERT_EQUAL(a->out[0][s], b->out[0][s]);
        CU_ASSERT_EQUAL(a->plan_sum[0][s], b->plan_sum[0][s]);
    }
    free(a);
    free(b);
}

static void
test_sched_pin(void)
{
    char path[128], bad[128];
    sched_run_t *run = sched_run_new();
    terse_plan_t plan;
    FILE *f;
    int s;

    snprintf(path, sizeof(path), "/tmp/terse_test_pin_%d.csv", (int)getpid());
    snprintf(bad, sizeof(bad), "/tmp/terse_test_pinbad_%d.csv", (int)getpid());
    TERSE_TEST_OK(terse__sched_plan_alloc(3, &plan));
    plan.layer[0].layer = 0;
    plan.layer[0].fam   = TERSE_SCHED_FAM_QUANT;
    plan.layer[0].param = 8;
    plan.layer[1].layer = -1; /* any layer: the rest */
    plan.layer[1].count = 6000;
    plan.layer[1].fam   = TERSE_SCHED_FAM_CAST;
    plan.layer[1].param = 0;
    plan.layer[2].layer = -1;
    plan.layer[2].fam   = TERSE_SCHED_FAM_NONE;
    for (s = 0; s < 3; ++s) {
        snprintf(plan.layer[s].name, TERSE_NAME_MAX, "-");
        plan.layer[s].bytes           = -1;
        plan.layer[s].expected_sq_err = -1;
        if (s != 1) {
            plan.layer[s].count = -1;
        }
    }
    TERSE_TEST_OK(terse__sched_plan_write(&plan, path));
    terse__sched_plan_free(&plan);
    run->pin = path;
    TERSE_TEST_OK(terse_loop_run(2, sched_rank, run));
    sched_check_ranks(run, 2);
    for (s = 0; s < run->steps; ++s) {
        /* pinned from the first step: no warm-up, no re-planning */
        CU_ASSERT_STRING_EQUAL(run->cmp[0][s][0], "quant");
        CU_ASSERT_EQUAL(run->param[0][s][0], 8.0);
        CU_ASSERT_STRING_EQUAL(run->cmp[0][s][1], "cast");
        CU_ASSERT_STRING_EQUAL(run->cmp[0][s][2], "none");
    }
    free(run);

    /* a malformed file fails clearly, on every rank */
    f = fopen(bad, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fprintf(f, "0,mat,3072,quant,nine,-1,-1\n");
    fclose(f);
    run = sched_run_new();
    run->pin = bad;
    TERSE_TEST_OK(terse_loop_run(2, sched_rank, run));
    CU_ASSERT_EQUAL(run->pin_status[0], TERSE_ERR_INVALID);
    CU_ASSERT_EQUAL(run->pin_status[1], TERSE_ERR_INVALID);
    free(run);
    run = sched_run_new();
    run->pin = "/nonexistent/terse_plan.csv";
    TERSE_TEST_OK(terse_loop_run(2, sched_rank, run));
    CU_ASSERT_EQUAL(run->pin_status[0], TERSE_ERR_INVALID);
    free(run);
    unlink(path);
    unlink(bad);
}

/* ---------------------------------------------------------------- a small JSON checker */
static const char *json_value(const char *p);

static const char *
json_ws(const char *p)
{
    while ((*p == ' ') || (*p == '\t') || (*p == '\r') || (*p == '\n')) {
        ++p;
    }
    return p;
}

static const char *
json_string(const char *p)
{
    if (*p != '"') {
        return NULL;
    }
    for (++p; *p != '"'; ++p) {
        if ((*p == '\0') || ((unsigned char)*p < 0x20)) {
            return NULL;
        }
        if (*p == '\\') {
            ++p;
            if (strchr("\"\\/bfnrtu", *p) == NULL) {
                return NULL;
            }
        }
    }
    return p + 1;
}

static const char *
json_number(const char *p)
{
    const char *q = p;

    if (*q == '-') {
        ++q;
    }
    if ((*q < '0') || (*q > '9')) {
        return NULL;
    }
    if ((*q == '0') && (q[1] >= '0') && (q[1] <= '9')) {
        return NULL; /* leading zero */
    }
    while ((*q >= '0') && (*q <= '9')) {
        ++q;
    }
    if (*q == '.') {
        ++q;
        if ((*q < '0') || (*q > '9')) {
            return NULL;
        }
        while ((*q >= '0') && (*q <= '9')) {
            ++q;
        }
    }
    if ((*q == 'e') || (*q == 'E')) {
        ++q;
        if ((*q == '+') || (*q == '-')) {
            ++q;
        }
        if ((*q < '0') || (*q > '9')) {
            return NULL;
        }
        while ((*q >= '0') && (*q <= '9')) {
            ++q;
        }
    }
    return q;
}

static const char *
json_value(const char *p)
{
    p = json_ws(p);
    if (*p == '{' || *p == '[') {
        char close = (*p == '{') ? '}' : ']';
        int obj    = (*p == '{');
        p = json_ws(p + 1);
        if (*p == close) {
            return p + 1;
        }
        for (;;) {
            if (obj) {
                p = json_string(json_ws(p));
                if (p == NULL) {
                    return NULL;
                }
                p = json_ws(p);
                if (*p != ':') {
                    return NULL;
                }
                ++p;
            }
            p = json_value(p);
            if (p == NULL) {
                return NULL;
            }
            p = json_ws(p);
            if (*p == close) {
                return p + 1;
            }
            if (*p != ',') {
                return NULL;
            }
            ++p;
        }
    }
    if (*p == '"') {
        return json_string(p);
    }
    if (strncmp(p, "true", 4) == 0) {
        return p + 4;
    }
    if (strncmp(p, "false", 5) == 0) {
        return p + 5;
    }
    if (strncmp(p, "null", 4) == 0) {
        return p + 4;
    }
    return json_number(p);
}

static int
json_valid(const char *line)
{
    const char *end = json_value(line);

    return (end != NULL) && (*json_ws(end) == '\0');
}

static void
test_sched_stats_json(void)
{
    char pattern[128], file[256], line[8192];
    sched_run_t *run = sched_run_new();
    int r, lines, steps_seen;
    FILE *f;

    /* the checker itself */
    CU_ASSERT(json_valid("{\"a\":[1,-2.5e3,{\"b\":\"x\"}],\"c\":true}\n"));
    CU_ASSERT(!json_valid("{\"a\":nan}"));
    CU_ASSERT(!json_valid("{\"a\":1,}"));
    CU_ASSERT(!json_valid("{\"a\":01}"));

    snprintf(pattern, sizeof(pattern), "/tmp/terse_test_stats_%d_%%r.jsonl", (int)getpid());
    run->stats = pattern;
    TERSE_TEST_OK(terse_loop_run(2, sched_rank, run));
    sched_check_ranks(run, 2);
    for (r = 0; r < 2; ++r) {
        TERSE_TEST_OK(terse__path_expand(pattern, r, file, sizeof(file)));
        f = fopen(file, "r");
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        lines = steps_seen = 0;
        while (fgets(line, sizeof(line), f) != NULL) {
            char want[64];
            CU_ASSERT(json_valid(line));
            snprintf(want, sizeof(want), "\"step\":%d,", lines);
            steps_seen += (strstr(line, want) != NULL);
            CU_ASSERT_PTR_NOT_NULL(strstr(line, "\"layer\":\"mat\""));
            CU_ASSERT_PTR_NOT_NULL(strstr(line, "\"mem\":"));
            ++lines;
        }
        fclose(f);
        unlink(file);
        CU_ASSERT_EQUAL(lines, run->steps); /* one line per step per rank */
        CU_ASSERT_EQUAL(steps_seen, run->steps);
    }
    free(run);
}

/* ---------------------------------------------------------------- state */

/* Runs `ref`'s schedule again on 2 loop ranks with a state save before step save_at and a
 * restart from it (pattern: the state files; pin: a pinned plan or NULL; flat: ref's layout),
 * and checks every rank's outputs, and the compressor of layer `flat` (the one that changes),
 * equal ref's at every step (plan sums too on the flat layout). */
static void
sched_state_restart(const sched_run_t *ref, int save_at, const char *pattern, const char *pin,
                    int flat)
{
    sched_run_t *run = sched_run_new();
    int r, s;

    run->flat    = flat;
    run->steps   = ref->steps;
    run->pin     = pin;
    run->save_at = save_at;
    run->state   = pattern;
    TERSE_TEST_OK(terse_loop_run(2, sched_rank, run));
    for (r = 0; r < 2; ++r) {
        CU_ASSERT_EQUAL(run->status[r], TERSE_OK);
        CU_ASSERT_EQUAL(run->load_status[r], TERSE_OK);
        for (s = 0; s < run->steps; ++s) {
            CU_ASSERT_EQUAL(run->out[r][s], ref->out[r][s]);
            CU_ASSERT_STRING_EQUAL(run->cmp[r][s][flat], ref->cmp[r][s][flat]);
            if (flat) {
                CU_ASSERT_EQUAL(run->plan_sum[r][s], ref->plan_sum[r][s]);
            }
        }
    }
    free(run);
}

/* Removes both ranks' state files of `pattern`. */
static void
sched_state_unlink(const char *pattern)
{
    char file[256];
    int r;

    for (r = 0; r < 2; ++r) {
        TERSE_TEST_OK(terse__path_expand(pattern, r, file, sizeof(file)));
        unlink(file);
    }
}

static void
test_sched_state_roundtrip(void)
{
    static const int saves[] = {3, 4, 6, 9};
    char pattern[128];
    sched_run_t *ref = sched_run_new();
    size_t k;

    ref->flat  = 1;
    ref->steps = 14;
    TERSE_TEST_OK(terse_loop_run(2, sched_rank, ref));
    sched_check_ranks(ref, 2);
    CU_ASSERT(sched_compressing(ref, ref->steps - 1) > 0);
    snprintf(pattern, sizeof(pattern), "/tmp/terse_test_state_%d_%%r.bin", (int)getpid());
    /* save before step 3: a plan pending (solved at step 2, due at 3); 4, 6: inside a plan;
     * 9: just before a switch step. Every restart crosses at least one re-plan (steps 6, 10) */
    for (k = 0; k < sizeof(saves) / sizeof(saves[0]); ++k) {
        sched_state_restart(ref, saves[k], pattern, NULL, 1);
    }
    sched_state_unlink(pattern);
    free(ref);
}

/* A pinned plan with PowerSGD on the matrix: the state file holds Q (and powersgd1's factor
 * and side), so a restart at any step continues bitwise identically (a restart with a
 * re-seeded Q gives other outputs: checked by hand when this was written). */
static void
sched_state_psgd(int fam, double rank)
{
    static const int saves[] = {1, 4, 7};
    char pattern[128], path[128];
    sched_run_t *ref = sched_run_new();
    terse_plan_t plan;
    size_t k;
    int s;

    snprintf(path, sizeof(path), "/tmp/terse_test_psgdpin_%d.csv", (int)getpid());
    snprintf(pattern, sizeof(pattern), "/tmp/terse_test_psgdst_%d_%%r.bin", (int)getpid());
    TERSE_TEST_OK(terse__sched_plan_alloc(2, &plan));
    plan.layer[0].layer = 0;
    plan.layer[0].fam   = fam;
    plan.layer[0].param = rank;
    plan.layer[1].layer = -1;
    plan.layer[1].fam   = TERSE_SCHED_FAM_NONE;
    for (s = 0; s < 2; ++s) {
        snprintf(plan.layer[s].name, TERSE_NAME_MAX, "-");
        plan.layer[s].count           = -1;
        plan.layer[s].bytes           = -1;
        plan.layer[s].expected_sq_err = -1;
    }
    TERSE_TEST_OK(terse__sched_plan_write(&plan, path));
    terse__sched_plan_free(&plan);
    ref->pin = path;
    TERSE_TEST_OK(terse_loop_run(2, sched_rank, ref));
    sched_check_ranks(ref, 2);
    CU_ASSERT_STRING_EQUAL(ref->cmp[0][ref->steps - 1][0],
                           (fam == TERSE_SCHED_FAM_POWERSGD) ? "powersgd" : "powersgd1");
    for (k = 0; k < sizeof(saves) / sizeof(saves[0]); ++k) {
        sched_state_restart(ref, saves[k], pattern, path, 0);
    }
    sched_state_unlink(pattern);
    unlink(path);
    free(ref);
}

static void
test_sched_state_powersgd(void)
{
    sched_state_psgd(TERSE_SCHED_FAM_POWERSGD, 2.0);
}

static void
test_sched_state_powersgd1(void)
{
    sched_state_psgd(TERSE_SCHED_FAM_POWERSGD1, 3.0);
}

/* ---------------------------------------------------------------- rank change */
/* A PowerSGD instance of layer 0 (64 x 48) of rank r; with steps > 0 it first runs that many
 * single-rank steps on low-rank inputs, so its Q is no longer the seeded one. */
static void *
sched_psgd_make(const terse_cmp_ops_t *ops, double r, int steps)
{
    terse_cmp_params_t p;
    float *x = malloc(64 * 48 * sizeof(float)), *y = malloc(64 * 48 * sizeof(float));
    float *res = calloc(64 * 48, sizeof(float));
    unsigned char *a = malloc(64 * 48 * 4), *b = malloc(64 * 48 * 4);
    terse_buf_t in = {x, 64 * 48, TERSE_FLOAT32, TERSE_MEM_HOST};
    terse_buf_t out = {y, 64 * 48, TERSE_FLOAT32, TERSE_MEM_HOST};
    terse_rng_t rng = terse_rng_make(7, 0, 0, 0, 0);
    size_t b0 = 0, b1 = 0;
    uint32_t flags;
    double err;
    void *cmp = NULL;
    int s;

    memset(&p, 0, sizeof(p));
    p.size   = sizeof(p);
    p.param  = r;
    p.count  = 64 * 48;
    p.rows   = 64;
    p.cols   = 48;
    p.dtype  = TERSE_FLOAT32;
    p.mem    = TERSE_MEM_HOST;
    p.nranks = 1;
    p.seed   = 7;
    TERSE_TEST_OK(ops->create(&p, &cmp));
    for (s = 0; s < steps; ++s) {
        terse_test_lowrank(700 + (uint64_t)s, 64, 48, 6, 0.01f, x);
        TERSE_TEST_OK(ops->payload_size(cmp, 64 * 48, 0, &b0));
        TERSE_TEST_OK(ops->compress(cmp, &in, res, &rng, a, b0, &flags, &err, NULL));
        if (ops->nstages(cmp) == 2) {
            TERSE_TEST_OK(ops->payload_size(cmp, 64 * 48, 1, &b1));
            TERSE_TEST_OK(ops->stage(cmp, 1, a, b0, b, b1, &err, NULL));
            TERSE_TEST_OK(ops->decompress(cmp, b, b1, 1.0f, &out, NULL));
        } else {
            TERSE_TEST_OK(ops->decompress(cmp, a, b0, 1.0f, &out, NULL));
        }
    }
    free(x);
    free(y);
    free(res);
    free(a);
    free(b);
    return cmp;
}

/* The state of an instance (caller frees); *bytes_p its size. */
static unsigned char *
sched_psgd_state(const terse_cmp_ops_t *ops, void *cmp, size_t *bytes_p)
{
    unsigned char *buf;

    TERSE_TEST_OK(ops->state_size(cmp, bytes_p));
    buf = malloc(*bytes_p);
    TERSE_TEST_OK(ops->state_get(cmp, buf, *bytes_p));
    return buf;
}

/* r -> r': the new instance's Q is the old one's first min(r, r') columns followed by the
 * seeded columns of a fresh rank-r' instance (an independent reference: both read through
 * state_get, the expected buffer assembled column by column from the documented layout). */
static void
sched_carry_case(const char *family, double r_old, double r_new, int steps, int expect_carry)
{
    const terse_cmp_ops_t *ops = terse__cmp_find(family);
    terse_layer_state_t o, n;
    unsigned char *ob, *nb, *fb;
    size_t obytes, nbytes, fbytes, k, keep, cols = 48;
    void *fresh;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ops);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ops->state_get);
    memset(&o, 0, sizeof(o));
    memset(&n, 0, sizeof(n));
    o.ops = ops;
    n.ops = ops;
    o.cmp = sched_psgd_make(ops, r_old, steps);
    n.cmp = sched_psgd_make(ops, r_new, 0);
    fresh = sched_psgd_make(ops, r_new, 0);
    ob    = sched_psgd_state(ops, o.cmp, &obytes);
    fb    = sched_psgd_state(ops, fresh, &fbytes);
    terse__layer_carry_state(&o, &n);
    nb = sched_psgd_state(ops, n.cmp, &nbytes);
    CU_ASSERT_EQUAL(nbytes, fbytes);
    CU_ASSERT_EQUAL(fbytes, 8 + (size_t)r_new * cols * sizeof(float));
    keep = (size_t)((r_old < r_new) ? r_old : r_new);
    for (k = 0; k < (size_t)r_new; ++k) {
        const unsigned char *want = (expect_carry && (k < keep)) ? ob : fb;
        CU_ASSERT(memcmp(nb + 8 + k * cols * 4, want + 8 + k * cols * 4, cols * 4) == 0);
    }
    /* the old Q moved away from the seeded one (else the check above proves nothing) */
    if (expect_carry) {
        CU_ASSERT(memcmp(ob + 8, fb + 8, cols * 4) != 0);
    }
    ops->destroy(o.cmp);
    ops->destroy(n.cmp);
    ops->destroy(fresh);
    free(ob);
    free(nb);
    free(fb);
}

static void
test_sched_rank_change(void)
{
    sched_carry_case("powersgd", 4.0, 2.0, 3, 1);  /* shrink: first 2 of 4 columns */
    sched_carry_case("powersgd", 2.0, 5.0, 3, 1);  /* grow: 2 kept, 3 seeded */
    sched_carry_case("powersgd1", 2.0, 3.0, 2, 1); /* after two steps F is a Q again */
    sched_carry_case("powersgd1", 2.0, 3.0, 1, 0); /* F is a P: starts from the seed */
    sched_carry_case("powersgd", 3.0, 3.0, 3, 1);  /* same rank: all of Q kept */
}

typedef struct sched_ws {
    const char    *pattern;
    int            save;      /* 1: save, 0: load */
    terse_status_t status[SCHED_MAXP];
} sched_ws_t;

static void
sched_ws_rank(void *ep, int rank, int nranks, void *arg)
{
    sched_ws_t *w   = arg;
    sched_run_t *run = sched_run_new();
    terse_ctx_t *ctx = NULL;
    float x[SCHED_TOTAL], y[SCHED_TOTAL];
    int s;

    (void)nranks;
    run->flat = 1;
    if (sched_ctx(ep, run, rank, &ctx) == TERSE_OK) {
        if (w->save) {
            for (s = 0; s < 5; ++s) {
                sched_input(rank, s, x);
                terse_allreduce(ctx, x, y, SCHED_TOTAL, TERSE_FLOAT32, TERSE_OP_SUM,
                                TERSE_MEM_HOST, NULL);
            }
            w->status[rank] = terse_state_save(ctx, w->pattern);
        } else {
            w->status[rank] = terse_state_load(ctx, w->pattern);
        }
    }
    terse_ctx_destroy(ctx);
    free(run);
}

/* A state file from another world size is refused, on every rank. */
static void
test_sched_state_world_size(void)
{
    char pattern[128], file[256];
    sched_ws_t w;
    int r;

    snprintf(pattern, sizeof(pattern), "/tmp/terse_test_statews_%d_%%r.bin", (int)getpid());
    memset(&w, 0, sizeof(w));
    w.pattern = pattern;
    w.save    = 1;
    TERSE_TEST_OK(terse_loop_run(2, sched_ws_rank, &w));
    CU_ASSERT_EQUAL(w.status[0], TERSE_OK);
    CU_ASSERT_EQUAL(w.status[1], TERSE_OK);
    /* rank 2 has no file: every rank refuses (the agreement spreads the failure) */
    w.save = 0;
    TERSE_TEST_OK(terse_loop_run(3, sched_ws_rank, &w));
    for (r = 0; r < 3; ++r) {
        CU_ASSERT(w.status[r] < 0);
    }
    CU_ASSERT_EQUAL(w.status[0], TERSE_ERR_MISMATCH);
    /* the same world size loads */
    TERSE_TEST_OK(terse_loop_run(2, sched_ws_rank, &w));
    CU_ASSERT_EQUAL(w.status[0], TERSE_OK);
    CU_ASSERT_EQUAL(w.status[1], TERSE_OK);
    for (r = 0; r < 2; ++r) {
        TERSE_TEST_OK(terse__path_expand(pattern, r, file, sizeof(file)));
        unlink(file);
    }
}

/* ---------------------------------------------------------------- unregistered buffers */
typedef struct sched_unreg {
    size_t         segment;     /* bytes, or 0 */
    const char    *layout;      /* TERSE_LAYOUT file, or NULL */
    size_t         nlayers[SCHED_MAXP];
    char           names[SCHED_MAXP][SCHED_NL][TERSE_NAME_MAX];
    char           cmp[SCHED_MAXP][8][TERSE_NAME_MAX];
    uint64_t       out[SCHED_MAXP];
    terse_status_t status[SCHED_MAXP];
} sched_unreg_t;

static void
sched_unreg_rank(void *ep, int rank, int nranks, void *arg)
{
    sched_unreg_t *u     = arg;
    sched_run_t *run     = sched_run_new();
    terse_ctx_t *ctx     = NULL;
    const terse_slot_t *slot;
    float *x = malloc(SCHED_TOTAL * sizeof(float)), *y = malloc(SCHED_TOTAL * sizeof(float));
    size_t l;
    int s;

    (void)nranks;
    u->status[rank] = sched_ctx(ep, run, rank, &ctx);
    if (u->status[rank] == TERSE_OK) {
        ctx->auto_unreg    = 1;
        ctx->sched_segment = u->segment;
        if (u->layout != NULL) {
            u->status[rank] = terse__ctx_set_layout(ctx, u->layout);
        }
    }
    for (s = 0; (u->status[rank] == TERSE_OK) && (s < run->steps); ++s) {
        sched_input(rank, s, x);
        /* one element short of the registered total: the unregistered path */
        u->status[rank] = terse_allreduce(ctx, x, y, SCHED_TOTAL - 1, TERSE_FLOAT32,
                                          TERSE_OP_SUM, TERSE_MEM_HOST, NULL);
    }
    slot = (ctx != NULL) ? ctx->slots : NULL;
    while ((slot != NULL) && (slot->key != SCHED_TOTAL - 1)) {
        slot = slot->next;
    }
    if (slot != NULL) {
        u->nlayers[rank] = slot->nlayers;
        for (l = 0; l < slot->nlayers; ++l) {
            if (l < SCHED_NL) {
                snprintf(u->names[rank][l], TERSE_NAME_MAX, "%s", slot->names[l]);
            }
            if (l < 8) {
                snprintf(u->cmp[rank][l], TERSE_NAME_MAX, "%s", slot->layers[l].ops->name);
            }
        }
        u->out[rank] = sched_hash(y, SCHED_TOTAL - 1);
    }
    terse_ctx_destroy(ctx);
    free(run);
    free(x);
    free(y);
}

static void
test_sched_segments(void)
{
    sched_unreg_t *u = calloc(1, sizeof(*u));
    size_t l;

    u->segment = 8192; /* 2048 floats: 5 segments of 9079 values */
    TERSE_TEST_OK(terse_loop_run(2, sched_unreg_rank, u));
    CU_ASSERT_EQUAL(u->status[0], TERSE_OK);
    CU_ASSERT_EQUAL(u->status[1], TERSE_OK);
    CU_ASSERT_EQUAL(u->nlayers[0], 5);
    CU_ASSERT_EQUAL(u->nlayers[1], 5);
    CU_ASSERT_EQUAL(u->out[0], u->out[1]);
    for (l = 0; l < 5; ++l) {
        CU_ASSERT_STRING_EQUAL(u->cmp[0][l], u->cmp[1][l]);
    }
    CU_ASSERT(strcmp(u->cmp[0][2], "none") != 0); /* a slow link: compressed */
    free(u);
}

static void
test_sched_layout_file(void)
{
    sched_unreg_t *u = calloc(1, sizeof(*u));
    char path[128];
    FILE *f;

    snprintf(path, sizeof(path), "/tmp/terse_test_layout_%d.txt", (int)getpid());
    f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fprintf(f, "# count rows cols name\n3072 64 48 mat\n\n6000 0 0 vec  # flat\n39 0 0\n");
    fclose(f);
    u->layout = path;
    TERSE_TEST_OK(terse_loop_run(2, sched_unreg_rank, u));
    CU_ASSERT_EQUAL(u->status[0], TERSE_OK);
    CU_ASSERT_EQUAL(u->nlayers[0], 3);
    CU_ASSERT_STRING_EQUAL(u->names[0][0], "mat");
    CU_ASSERT_STRING_EQUAL(u->names[0][1], "vec");
    CU_ASSERT_STRING_EQUAL(u->names[0][2], "layer2");
    CU_ASSERT_EQUAL(u->out[0], u->out[1]);
    free(u);

    /* malformed: rows x cols != count */
    f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fprintf(f, "3072 64 47 mat\n");
    fclose(f);
    u = calloc(1, sizeof(*u));
    u->layout = path;
    TERSE_TEST_OK(terse_loop_run(2, sched_unreg_rank, u));
    CU_ASSERT_EQUAL(u->status[0], TERSE_ERR_INVALID);
    CU_ASSERT_EQUAL(u->status[1], TERSE_ERR_INVALID);
    free(u);
    unlink(path);
}

static CU_TestInfo test_sched_tests[] = {
    {"slow link compresses, switch at one step", test_sched_slow_link_compresses},
    {"fast link sends uncompressed", test_sched_fast_link_stops},
    {"asynchronous re-plan: same plans, lag steps later", test_sched_async},
    {"budget 0 compresses nothing", test_sched_budget_zero},
    {"plans and results reproducible", test_sched_deterministic},
    {"TERSE_PLAN pins, malformed fails", test_sched_pin},
    {"TERSE_STATS lines are JSON", test_sched_stats_json},
    {"state round trip bitwise across re-plans", test_sched_state_roundtrip},
    {"state of another world size refused", test_sched_state_world_size},
    {"state round trip bitwise with powersgd (Q)", test_sched_state_powersgd},
    {"state round trip bitwise with powersgd1", test_sched_state_powersgd1},
    {"powersgd rank change keeps min(r, r') columns", test_sched_rank_change},
    {"TERSE_SEGMENT_BYTES segments plan apart", test_sched_segments},
    {"TERSE_LAYOUT maps unregistered buffers", test_sched_layout_file},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_sched_suites[] = {
    {"comm_sched_loop", NULL, NULL, NULL, NULL, test_sched_tests},
    CU_SUITE_INFO_NULL,
};
