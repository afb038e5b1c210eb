/* comm/base: status table, environment parsing, README sync, path expansion. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "terse_test.h"
#include "terse_base.h"

static void
test_status_strings(void)
{
    CU_ASSERT_STRING_EQUAL(terse_status_str(TERSE_OK), "success");
    CU_ASSERT_STRING_EQUAL(terse_status_name(TERSE_ERR_INVALID), "ERR_INVALID");
    CU_ASSERT_STRING_EQUAL(terse_status_str(TERSE_ERR_PAYLOAD), "malformed or corrupted payload");
    CU_ASSERT_STRING_EQUAL(terse_status_str((terse_status_t)-999), "unknown status");
    CU_ASSERT_EQUAL(terse_dtype_size(TERSE_BFLOAT16), 2);
    CU_ASSERT_EQUAL(terse_dtype_size((terse_dtype_t)42), 0);
}

static void
test_env_defaults(void)
{
    terse_config_t cfg;
    char *env[] = {NULL};

    TERSE_TEST_OK(terse__config_parse(env, 1, &cfg));
    CU_ASSERT_EQUAL(cfg.LOG_LEVEL, TERSE_LOG_LEVEL_WARN);
    CU_ASSERT_STRING_EQUAL(cfg.COMPRESSOR, terse__env_table[TERSE_ENV_ID_COMPRESSOR].def);
    CU_ASSERT_EQUAL(cfg.QUANT_BUCKET, 512);
    CU_ASSERT_EQUAL(cfg.ERROR_FEEDBACK, 1);
    CU_ASSERT_EQUAL(cfg.is_set[TERSE_ENV_ID_LOG_LEVEL], 0);
}

static void
test_env_values(void)
{
    terse_config_t cfg;
    char *env[] = {"PATH=/bin", "TERSE_LOG_LEVEL=Debug", "TERSE_QUANT_BUCKET=1024",
                   "TERSE_ERROR_FEEDBACK=off", "TERSE_COMPRESSOR=none", "TERSE_SEED=7", NULL};

    TERSE_TEST_OK(terse__config_parse(env, 1, &cfg));
    CU_ASSERT_EQUAL(cfg.LOG_LEVEL, TERSE_LOG_LEVEL_DEBUG);
    CU_ASSERT_EQUAL(cfg.QUANT_BUCKET, 1024);
    CU_ASSERT_EQUAL(cfg.ERROR_FEEDBACK, 0);
    CU_ASSERT_STRING_EQUAL(cfg.COMPRESSOR, "none");
    CU_ASSERT_EQUAL(cfg.SEED, 7);
    CU_ASSERT_EQUAL(cfg.is_set[TERSE_ENV_ID_LOG_LEVEL], 1);
    CU_ASSERT_EQUAL(cfg.is_set[TERSE_ENV_ID_LOG_FILE], 0);
}

/* Every kind of bad value fails with TERSE_ERR_INVALID. */
static void
test_env_bad_values(void)
{
    static const char *const bad[] = {
        "TERSE_LOG_LEVEL=loud",      "TERSE_LOG_LEVEL=",        "TERSE_QUANT_BUCKET=100",
        "TERSE_QUANT_BUCKET=16",     "TERSE_QUANT_BUCKET=4k",   "TERSE_QUANT_BUCKET=1e3",
        "TERSE_ERROR_FEEDBACK=2",    "TERSE_SEED=-1",           "TERSE_COMPRESSOR=zip",
        "TERSE_COMPRESSOR=none:3",   "TERSE_LOG_SUBSYS=cmp,gpu", "TERSE_SEED=99999999999",
    };
    terse_config_t cfg;
    char *env[2];
    size_t i;
    int saved = terse__log_level;

    terse__log_level = -1; /* the parser logs each error; keep the test output readable */
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
        env[0] = (char *)bad[i];
        env[1] = NULL;
        if (terse__config_parse(env, 1, &cfg) != TERSE_ERR_INVALID) {
            fprintf(stderr, "accepted %s\n", bad[i]);
            CU_FAIL("bad value accepted");
        }
    }
    terse__log_level = saved;
}

/* An unknown TERSE_* name warns but does not fail. */
static void
test_env_unknown_name(void)
{
    terse_config_t cfg;
    char *env[] = {"TERSE_NOT_A_VARIABLE=1", NULL};
    char buf[4096] = "";
    FILE *saved    = stderr;
    FILE *mem      = fmemopen(buf, sizeof(buf), "w");

    CU_ASSERT_PTR_NOT_NULL_FATAL(mem);
    stderr = mem;
    TERSE_TEST_OK(terse__config_parse(env, 1, &cfg));
    fflush(mem);
    stderr = saved;
    fclose(mem);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "unknown variable TERSE_NOT_A_VARIABLE"));
}

/* The error names the variable and the accepted values. */
static void
test_env_error_message(void)
{
    terse_config_t cfg;
    char *env[] = {"TERSE_LOG_LEVEL=loud", NULL};
    char buf[4096] = "";
    FILE *saved    = stderr;
    FILE *mem      = fmemopen(buf, sizeof(buf), "w");

    CU_ASSERT_PTR_NOT_NULL_FATAL(mem);
    stderr = mem;
    TERSE_TEST_STATUS(terse__config_parse(env, 1, &cfg), TERSE_ERR_INVALID);
    fflush(mem);
    stderr = saved;
    fclose(mem);
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "TERSE_LOG_LEVEL"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "error|warn|info|debug|trace"));
    CU_ASSERT_PTR_NOT_NULL(strstr(buf, "loud"));
}

/* The README's environment table is exactly what terse-info -e -m prints. */
static void
test_env_readme_in_sync(void)
{
    char path[1024];
    char *readme, *table;
    size_t len, tlen;
    FILE *f, *mem;

    snprintf(path, sizeof(path), "%s/README.md", TERSE_SOURCE_DIR);
    f = fopen(path, "r");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, 0, SEEK_END);
    len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    readme = calloc(1, len + 1);
    CU_ASSERT_EQUAL(fread(readme, 1, len, f), len);
    fclose(f);

    table = NULL;
    tlen  = 0;
    mem   = open_memstream(&table, &tlen);
    terse__env_print(mem, 1);
    fclose(mem);
    if (strstr(readme, table) == NULL) {
        fprintf(stderr, "README.md's environment table is stale: paste `terse-info -e -m`:\n%s",
                table);
        CU_FAIL("README environment table out of sync");
    }
    free(table);
    free(readme);
}

static void
test_path_expand(void)
{
    char out[256];
    char expect[64];

    TERSE_TEST_OK(terse__path_expand("/tmp/x.%r.log", 3, out, sizeof(out)));
    CU_ASSERT_STRING_EQUAL(out, "/tmp/x.3.log");
    snprintf(expect, sizeof(expect), "a%db", (int)getpid());
    TERSE_TEST_OK(terse__path_expand("a%pb", 0, out, sizeof(out)));
    CU_ASSERT_STRING_EQUAL(out, expect);
    TERSE_TEST_STATUS(terse__path_expand("0123456789", 0, out, 5), TERSE_ERR_INVALID);
}

static void
test_hash(void)
{
    CU_ASSERT_NOT_EQUAL(terse__hash64("a", 1, 0), terse__hash64("b", 1, 0));
    CU_ASSERT_NOT_EQUAL(terse__hash64("a", 1, 0), terse__hash64("a", 1, 1));
    CU_ASSERT_EQUAL(terse__hash64("abc", 3, 5), terse__hash64("abc", 3, 5));
}

static CU_TestInfo env_tests[] = {
    {"status strings", test_status_strings},
    {"defaults", test_env_defaults},
    {"values", test_env_values},
    {"bad values fail", test_env_bad_values},
    {"unknown name warns", test_env_unknown_name},
    {"error names variable and accepted values", test_env_error_message},
    {"README table in sync", test_env_readme_in_sync},
    {"path expansion", test_path_expand},
    {"hash", test_hash},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_env_suites[] = {
    {"base/env", NULL, NULL, NULL, NULL, env_tests},
    CU_SUITE_INFO_NULL,
};
