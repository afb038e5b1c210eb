/* compressors/feedback.c: residual buffers per layer (offsets, zero start, resets). */
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "compressor.h"

static void
test_fb_layout(void)
{
    static const size_t counts[] = {3, 0, 5, 1};
    terse_fb_t fb;
    size_t i;
    float *l0, *l2, *l3;
    int zero = 1;

    TERSE_TEST_OK(terse__fb_create(counts, 4, TERSE_MEM_HOST, &fb));
    CU_ASSERT_EQUAL(fb.total, 9);
    CU_ASSERT_EQUAL(fb.nlayers, 4);
    l0 = terse__fb_layer(&fb, 0);
    l2 = terse__fb_layer(&fb, 2);
    l3 = terse__fb_layer(&fb, 3);
    CU_ASSERT_PTR_EQUAL(l0, fb.data);
    CU_ASSERT_PTR_EQUAL(terse__fb_layer(&fb, 1), fb.data + 3);
    CU_ASSERT_PTR_EQUAL(l2, fb.data + 3);
    CU_ASSERT_PTR_EQUAL(l3, fb.data + 8);
    for (i = 0; i < fb.total; ++i) {
        zero &= (fb.data[i] == 0.0f);
        fb.data[i] = (float)(i + 1);
    }
    CU_ASSERT(zero);
    CU_ASSERT(terse__fb_bytes(&fb) >= 9 * sizeof(float));
    terse__fb_reset_layer(&fb, 2, counts[2]);
    for (i = 0; i < fb.total; ++i) {
        CU_ASSERT_EQUAL(fb.data[i], ((i >= 3) && (i < 8)) ? 0.0f : (float)(i + 1));
    }
    terse__fb_reset_all(&fb);
    for (i = 0; i < fb.total; ++i) {
        CU_ASSERT_EQUAL(fb.data[i], 0.0f);
    }
    terse__fb_destroy(&fb);
    CU_ASSERT_PTR_NULL(fb.data);
}

static void
test_fb_edge(void)
{
    terse_fb_t fb;
    size_t one = 4;

    TERSE_TEST_OK(terse__fb_create(NULL, 0, TERSE_MEM_HOST, &fb));
    CU_ASSERT_EQUAL(fb.total, 0);
    terse__fb_reset_all(&fb);
    terse__fb_destroy(&fb);
#if !TERSE_HAVE_CUDA /* CUDA builds: device residuals, tested in test_ops_cuda.c */
    TERSE_TEST_STATUS(terse__fb_create(&one, 1, TERSE_MEM_CUDA, &fb), TERSE_ERR_UNSUPPORTED);
#else
    (void)one;
#endif
}

/* A compressor drives the residual: quant's residual for a layer equals v - decoded. */
static void
test_fb_with_compressor(void)
{
    static const size_t counts[] = {100, 64};
    const terse_cmp_ops_t *ops = terse__cmp_find("quant");
    terse_cmp_params_t p;
    terse_fb_t fb;
    void *ctx;
    float x[64], d[64];
    uint8_t payload[256];
    size_t bytes, i;
    uint32_t flags;
    terse_rng_t rng = terse_rng_make(1, TERSE_RNG_QUANT, 1, 0, 0);
    terse_buf_t in = {x, 64, TERSE_FLOAT32, TERSE_MEM_HOST};
    terse_buf_t out = {d, 64, TERSE_FLOAT32, TERSE_MEM_HOST};
    float *res;

    CU_ASSERT_FATAL(ops != NULL);
    memset(&p, 0, sizeof(p));
    p.size = sizeof(p);
    p.param = 2;
    p.count = 64;
    p.bucket = 32;
    TERSE_TEST_OK(ops->create(&p, &ctx));
    TERSE_TEST_OK(terse__fb_create(counts, 2, TERSE_MEM_HOST, &fb));
    res = terse__fb_layer(&fb, 1);
    terse_test_gaussian(3, x, 64);
    TERSE_TEST_OK(ops->payload_size(ctx, 64, 0, &bytes));
    TERSE_TEST_OK(ops->compress(ctx, &in, res, &rng, payload, bytes, &flags, NULL, NULL));
    TERSE_TEST_OK(ops->decompress(ctx, payload, bytes, 1.0f, &out, NULL));
    for (i = 0; i < 64; ++i) {
        CU_ASSERT_EQUAL(res[i], x[i] - d[i]);
    }
    for (i = 0; i < 100; ++i) {
        CU_ASSERT_EQUAL(terse__fb_layer(&fb, 0)[i], 0.0f); /* the other layer untouched */
    }
    terse__fb_destroy(&fb);
    ops->destroy(ctx);
}

static CU_TestInfo fb_tests[] = {
    {"layout and resets", test_fb_layout},
    {"empty and device", test_fb_edge},
    {"residual of a compressor", test_fb_with_compressor},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_feedback_suites[] = {
    {"compressors/feedback", NULL, NULL, NULL, NULL, fb_tests},
    CU_SUITE_INFO_NULL,
};
