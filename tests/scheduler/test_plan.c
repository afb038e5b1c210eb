/* scheduler/plan.c: CSV round trip, malformed input, checksum, binding rows to layers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "terse_test.h"
#include "terse_sched.h"

static void
plan_sample(terse_plan_t *plan)
{
    static const struct {
        const char *name;
        int64_t     count;
        int         fam;
        double      param;
        int64_t     bytes;
        double      err;
    } rows[] = {
        {"body.layers.0.self_attn.in_proj_weight", 3145728, TERSE_SCHED_FAM_POWERSGD, 4, 65540,
         1.2345678901234567e-3},
        {"emb.weight", 262144, TERSE_SCHED_FAM_TOPK, 0.003, 6308, 0.1},
        {"head.bias", 256, TERSE_SCHED_FAM_NONE, 0, 1024, 0.0},
        {"norm", 1024, TERSE_SCHED_FAM_QUANT, 3, 416, 7.0e-12},
        {"x", 1000, TERSE_SCHED_FAM_CAST, 1, 2004, 1.0 / 3.0},
        {"y", 1000, TERSE_SCHED_FAM_SIGN, 0, 141, 2.5},
        {"z", 1000, TERSE_SCHED_FAM_RANDOMK, 0.1, 404, 9e300},
        {"w", 1024, TERSE_SCHED_FAM_POWERSGD1, 2, 256, 0.5},
        {"t", 1000, TERSE_SCHED_FAM_TOPKT, 0.01, 112, 0.25},
    };
    size_t i, n = sizeof(rows) / sizeof(rows[0]);

    TERSE_TEST_OK(terse__sched_plan_alloc(n, plan));
    for (i = 0; i < n; ++i) {
        terse_plan_layer_t *pl = &plan->layer[i];
        pl->layer = (int)i;
        snprintf(pl->name, sizeof(pl->name), "%s", rows[i].name);
        pl->count           = rows[i].count;
        pl->fam             = rows[i].fam;
        pl->param           = rows[i].param;
        pl->bytes           = rows[i].bytes;
        pl->expected_sq_err = rows[i].err;
    }
    plan->budget = 1.0;
}

static char *
tmp_path(void)
{
    static char path[64];
    int fd;

    snprintf(path, sizeof(path), "/tmp/terse_plan_XXXXXX");
    fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    close(fd);
    return path;
}

static void
test_plan_roundtrip(void)
{
    terse_plan_t plan, back;
    char *path = tmp_path();
    size_t i;

    plan_sample(&plan);
    TERSE_TEST_OK(terse__sched_plan_write(&plan, path));
    TERSE_TEST_OK(terse__sched_plan_read(path, &back, NULL, 0));
    CU_ASSERT_EQUAL_FATAL(back.nlayers, plan.nlayers);
    for (i = 0; i < plan.nlayers; ++i) {
        CU_ASSERT_EQUAL(back.layer[i].layer, plan.layer[i].layer);
        CU_ASSERT_STRING_EQUAL(back.layer[i].name, plan.layer[i].name);
        CU_ASSERT_EQUAL(back.layer[i].count, plan.layer[i].count);
        CU_ASSERT_EQUAL(back.layer[i].fam, plan.layer[i].fam);
        CU_ASSERT_EQUAL(back.layer[i].param, plan.layer[i].param);
        CU_ASSERT_EQUAL(back.layer[i].bytes, plan.layer[i].bytes);
        CU_ASSERT_EQUAL(back.layer[i].expected_sq_err, plan.layer[i].expected_sq_err);
    }
    CU_ASSERT_EQUAL(terse__sched_plan_checksum(&back), terse__sched_plan_checksum(&plan));
    terse__sched_plan_free(&back);
    terse__sched_plan_free(&plan);
    unlink(path);
}

/* Rows with -1 ("any"), comments, blank lines, CRLF and spaces around fields. */
static void
test_plan_any_and_bind(void)
{
    const char *text = "# a pinned plan\r\n"
                       "\n"
                       "  2 , big , 4096 , powersgd , 8 , -1 , -1 \r\n"
                       "-1,-,256,none,0,-1,-1\n"
                       "-1,-,-1,quant,4,-1,-1";
    size_t counts[4] = {256, 1000, 4096, 256};
    const char *names[4] = {"a", "b", "c", NULL};
    terse_plan_t rows, plan;
    int saved = terse__log_level;

    TERSE_TEST_OK(terse__sched_plan_parse(text, "inline", &rows, NULL, 0));
    CU_ASSERT_EQUAL_FATAL(rows.nlayers, 3);
    CU_ASSERT_EQUAL(rows.layer[0].layer, 2);
    CU_ASSERT_STRING_EQUAL(rows.layer[0].name, "big");
    CU_ASSERT_EQUAL(rows.layer[2].count, -1);
    TERSE_TEST_OK(terse__sched_plan_bind(&rows, 4, counts, names, &plan));
    CU_ASSERT_EQUAL(plan.layer[0].fam, TERSE_SCHED_FAM_NONE);  /* count 256 */
    CU_ASSERT_EQUAL(plan.layer[1].fam, TERSE_SCHED_FAM_QUANT); /* the catch-all */
    CU_ASSERT_EQUAL(plan.layer[2].fam, TERSE_SCHED_FAM_POWERSGD);
    CU_ASSERT_EQUAL(plan.layer[2].param, 8.0);
    CU_ASSERT_EQUAL(plan.layer[3].fam, TERSE_SCHED_FAM_NONE);
    CU_ASSERT_EQUAL(plan.layer[3].layer, 3);
    CU_ASSERT_EQUAL(plan.layer[1].count, 1000);
    CU_ASSERT_STRING_EQUAL(plan.layer[2].name, "c");
    CU_ASSERT_STRING_EQUAL(plan.layer[3].name, "-");
    terse__sched_plan_free(&plan);

    terse__log_level = -1;
    /* A layer no row matches; a row naming a layer the model lacks. */
    rows.layer[2].count = 5;
    TERSE_TEST_STATUS(terse__sched_plan_bind(&rows, 4, counts, NULL, &plan), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(terse__sched_plan_bind(&rows, 2, counts, NULL, &plan), TERSE_ERR_INVALID);
    terse__log_level = saved;
    terse__sched_plan_free(&rows);
}

static void
test_plan_malformed(void)
{
    static const struct {
        const char *text;
        const char *why; /* expected substring */
    } bad[] = {
        {"0,a,10,quant,4,100\n", "line 1: expected 7"},
        {"# c\n0,a,10,zip,4,1,1\n", "line 2: unknown compressor 'zip'"},
        {"0,a,10,quant,9,1,1\n", "quant bits"},
        {"0,a,10,quant,3.5,1,1\n", "quant bits"},
        {"0,a,0,none,0,1,1\n", "count '0'"},
        {"-2,a,10,none,0,1,1\n", "layer '-2'"},
        {"x,a,10,none,0,1,1\n", "layer 'x'"},
        {"0,a,10,topk,abc,1,1\n", "param 'abc'"},
        {"0,a,10,topk,1.5,1,1\n", "density"},
        {"0,a,10,topk,nan,1,1\n", "param 'nan'"},
        {"0,a,10,powersgd,0,1,1\n", "rank"},
        {"0,a,10,cast,16,1,1\n", "cast parameter"},
        {"0,a,10,none,1,1,1\n", "no parameter"},
        {"0,a,10,none,0,-2,1\n", "bytes '-2'"},
        {"0,a,10,none,0,12x,1\n", "bytes '12x'"},
        {"0,a,10,none,0,1,-5\n", "expected_sq_err '-5'"},
        {"0,a b,10,none,0,1,1\n", "name 'a b'"},
        {"0,,10,none,0,1,1\n", "name ''"},
        {"0,a,10,none,0,1,1,9\n", "got 8"},
        {"0,a,10,none,0,1,1\n1,b,10,none,0,1\n", "line 2"},
        {"# only comments\n\n", "no plan rows"},
        {"", "no plan rows"},
    };
    size_t i;
    int saved = terse__log_level;

    terse__log_level = -1;
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        terse_plan_t plan;
        char why[256] = "";
        terse_status_t st = terse__sched_plan_parse(bad[i].text, "p.csv", &plan, why, sizeof(why));
        if ((st != TERSE_ERR_INVALID) || (strstr(why, bad[i].why) == NULL)) {
            fprintf(stderr, "case %zu: status %d why '%s' (wanted '%s')\n", i, (int)st, why,
                    bad[i].why);
        }
        CU_ASSERT_EQUAL(st, TERSE_ERR_INVALID);
        CU_ASSERT_PTR_NOT_NULL(strstr(why, bad[i].why));
        CU_ASSERT_PTR_NOT_NULL(strstr(why, "p.csv line "));
    }
    /* A missing file and an unwritable path fail with ERR_SYSTEM. */
    {
        terse_plan_t plan;
        TERSE_TEST_STATUS(terse__sched_plan_read("/nonexistent/terse.csv", &plan, NULL, 0),
                          TERSE_ERR_SYSTEM);
        plan_sample(&plan);
        TERSE_TEST_STATUS(terse__sched_plan_write(&plan, "/nonexistent/terse.csv"),
                          TERSE_ERR_SYSTEM);
        /* A name that the format cannot hold is refused. */
        snprintf(plan.layer[0].name, sizeof(plan.layer[0].name), "a,b");
        TERSE_TEST_STATUS(terse__sched_plan_write(&plan, "/tmp/never_written.csv"),
                          TERSE_ERR_INVALID);
        terse__sched_plan_free(&plan);
    }
    terse__log_level = saved;
}

/* The checksum changes with any field of any layer. */
static void
test_plan_checksum(void)
{
    terse_plan_t plan;
    uint64_t base, h;
    size_t l, f;

    plan_sample(&plan);
    base = terse__sched_plan_checksum(&plan);
    CU_ASSERT_EQUAL(base, terse__sched_plan_checksum(&plan));
    for (l = 0; l < plan.nlayers; ++l) {
        for (f = 0; f < 7; ++f) {
            terse_plan_layer_t saved = plan.layer[l];
            terse_plan_layer_t *pl   = &plan.layer[l];
            switch (f) {
            case 0: pl->layer += 1; break;
            case 1: pl->name[0] ^= 1; break;
            case 2: pl->count += 1; break;
            case 3: pl->fam = (pl->fam + 1) % TERSE_SCHED_FAM_COUNT; break;
            case 4: pl->param = (pl->param == 0.0) ? 1e-9 : pl->param * (1.0 + 1e-6); break;
            case 5: pl->bytes += 1; break;
            default: pl->expected_sq_err = nextafter(pl->expected_sq_err, INFINITY); break;
            }
            h = terse__sched_plan_checksum(&plan);
            if (h == base) {
                fprintf(stderr, "checksum unchanged: layer %zu field %zu\n", l, f);
            }
            CU_ASSERT_NOT_EQUAL(h, base);
            plan.layer[l] = saved;
        }
    }
    /* Swapping two layers changes it too; so does dropping the last. */
    {
        terse_plan_layer_t t = plan.layer[0];
        plan.layer[0]        = plan.layer[1];
        plan.layer[1]        = t;
        CU_ASSERT_NOT_EQUAL(terse__sched_plan_checksum(&plan), base);
        plan.layer[1] = plan.layer[0];
        plan.layer[0] = t;
        plan.nlayers--;
        CU_ASSERT_NOT_EQUAL(terse__sched_plan_checksum(&plan), base);
        plan.nlayers++;
        CU_ASSERT_EQUAL(terse__sched_plan_checksum(&plan), base);
    }
    terse__sched_plan_free(&plan);
}

/* A solved plan round-trips with its checksum. */
static void
test_plan_solved_roundtrip(void)
{
    terse_sched_cand_t c[2][2] = {
        {{TERSE_SCHED_FAM_NONE, 0, 4000, 0.0, 1e-3, TERSE_SCHED_WIRE_NATIVE},
         {TERSE_SCHED_FAM_QUANT, 4, 520, 0.1, 1e-4, TERSE_SCHED_WIRE_REQUANT}},
        {{TERSE_SCHED_FAM_NONE, 0, 4000, 0.0, 1e-3, TERSE_SCHED_WIRE_NATIVE},
         {TERSE_SCHED_FAM_TOPK, 0.01, 96, 0.3, 1e-4, TERSE_SCHED_WIRE_SPARSE}},
    };
    terse_sched_layer_t layer[2] = {{"l0", 1000, 0, 0, 2, c[0]}, {NULL, 1000, 0, 0, 2, c[1]}};
    terse_sched_cost_t cost;
    terse_sched_problem_t prob;
    terse_plan_t plan, back;
    char *path = tmp_path();

    terse__sched_cost_default(&cost, 4, 1e9);
    memset(&prob, 0, sizeof(prob));
    prob.nlayers = 2;
    prob.layer   = layer;
    prob.budget  = 0.5;
    prob.cost    = &cost;
    TERSE_TEST_OK(terse__sched_solve(&prob, &plan));
    CU_ASSERT_STRING_EQUAL(plan.layer[1].name, "-");
    TERSE_TEST_OK(terse__sched_plan_write(&plan, path));
    TERSE_TEST_OK(terse__sched_plan_read(path, &back, NULL, 0));
    CU_ASSERT_EQUAL(terse__sched_plan_checksum(&back), terse__sched_plan_checksum(&plan));
    terse__sched_plan_free(&plan);
    terse__sched_plan_free(&back);
    unlink(path);
}

static CU_TestInfo plan_tests[] = {
    {"csv round trip", test_plan_roundtrip},
    {"rows with -1 bind to layers", test_plan_any_and_bind},
    {"malformed lines are rejected with line numbers", test_plan_malformed},
    {"checksum changes with any field", test_plan_checksum},
    {"solved plan round trip", test_plan_solved_roundtrip},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_plan_suites[] = {
    {"scheduler/plan", NULL, NULL, NULL, NULL, plan_tests},
    CU_SUITE_INFO_NULL,
};
