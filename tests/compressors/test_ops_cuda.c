/* compressors/<family>.c device hooks (label gpu): every family through its OPS TABLE, one
 * TERSE_MEM_HOST and one TERSE_MEM_CUDA instance fed the same input, residual and stream.
 * Payloads, residuals and decoded outputs must match bit for bit (PowerSGD: within 1e-4
 * relative, other summation orders); the device flags and squared error, read lazily through
 * terse__cmp_<family>_cuda_stat, must match the host's, and a NaN input must raise
 * TERSE_CMP_NONFINITE there. Also device residuals (feedback.c with TERSE_MEM_CUDA). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "terse_test_cuda.h"
#include "compressor.h"
#include "cuda_util.h"
#include "cast_cuda.h"
#include "powersgd_cuda.h"
#include "quant_cuda.h"
#include "randomk_cuda.h"
#include "sign_cuda.h"
#include "topk_cuda.h"

/* Defined beside each family's ops table (compressors/<family>.c, CUDA builds). */
void *terse__cmp_quant_cuda_handle(void *ctx);
void *terse__cmp_sign_cuda_handle(void *ctx);
void *terse__cmp_cast_cuda_handle(void *ctx);
void *terse__cmp_randomk_cuda_handle(void *ctx);
void *terse__cmp_topk_cuda_handle(void *ctx);
void *terse__cmp_psgd_cuda_handle(void *ctx);

typedef terse_status_t (*oc_stat_fn)(void *cuda, terse_stream_t stream, uint32_t *flags_p,
                                     double *sq_err_p);
typedef void *(*oc_handle_fn)(void *ctx);

typedef struct oc_family {
    const char  *spec;
    oc_handle_fn handle;
    oc_stat_fn   stat;
} oc_family_t;

static const oc_family_t oc_families[] = {
    {"quant:4", terse__cmp_quant_cuda_handle, terse__cmp_quant_cuda_stat},
    {"sign", terse__cmp_sign_cuda_handle, terse__cmp_sign_cuda_stat},
    {"cast:bf16", terse__cmp_cast_cuda_handle, terse__cmp_cast_cuda_stat},
    {"cast:fp16", terse__cmp_cast_cuda_handle, terse__cmp_cast_cuda_stat},
    {"randomk:0.01", terse__cmp_randomk_cuda_handle, terse__cmp_randomk_cuda_stat},
    {"topk:0.01", terse__cmp_topk_cuda_handle, terse__cmp_topk_cuda_stat},
    {"topkt:0.01", terse__cmp_topk_cuda_handle, terse__cmp_topk_cuda_stat},
    {"powersgd:4", terse__cmp_psgd_cuda_handle, terse__cmp_psgd_cuda_stat},
};

#define OC_NFAMILIES (sizeof(oc_families) / sizeof(oc_families[0]))
#define OC_PSGD_TOL  1e-4

static void *
oc_get(const void *dev, size_t bytes)
{
    void *h = malloc((bytes > 0) ? bytes : 1);

    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    if (bytes > 0) {
        CU_ASSERT_FATAL(terse__cuda_memcpy(h, dev, bytes) == TERSE_OK);
    }
    return h;
}

/* ||a - b|| / ||b|| over n elements of dtype */
static double
oc_rel(const void *a, const void *b, terse_dtype_t dt, size_t n)
{
    double d = 0.0, r = 0.0;
    size_t i;

    for (i = 0; i < n; ++i) {
        double x = terse__load_f32(a, dt, i), y = terse__load_f32(b, dt, i);
        d += (x - y) * (x - y);
        r += y * y;
    }
    return sqrt(d / ((r > 0.0) ? r : 1.0));
}

static int
oc_all_zero(const float *x, size_t n)
{
    size_t i;

    for (i = 0; i < n; ++i) {
        if (x[i] != 0.0f) {
            return 0;
        }
    }
    return 1;
}

/* |a - b| <= tol * max(|a|, |b|) (both finite) */
static int
oc_close(double a, double b, double tol)
{
    return isfinite(a) && isfinite(b) && (fabs(a - b) <= tol * fmax(fmax(fabs(a), fabs(b)), 1e-30));
}

/* One instance pair of a family. */
typedef struct oc_pair {
    const terse_cmp_ops_t *ops;
    const oc_family_t     *fam;
    void                  *host, *dev, *cuda;
    size_t                 count, rows, cols;
    int                    psgd;
} oc_pair_t;

static void
oc_pair_create(oc_pair_t *t, const oc_family_t *fam, size_t count, size_t rows, size_t cols,
               terse_dtype_t dt)
{
    terse_cmp_spec_t spec;
    terse_cmp_params_t p;

    memset(t, 0, sizeof(*t));
    TERSE_TEST_OK(terse__cmp_spec_parse(fam->spec, &spec, NULL, 0));
    CU_ASSERT_PTR_NOT_NULL_FATAL(spec.ops);
    CU_ASSERT_FATAL((spec.ops->caps & TERSE_CMP_CAP_CUDA) != 0);
    t->ops   = spec.ops;
    t->fam   = fam;
    t->count = count;
    t->rows  = rows;
    t->cols  = cols;
    t->psgd  = (spec.ops->stage != NULL);
    memset(&p, 0, sizeof(p));
    p.size   = sizeof(p);
    p.param  = spec.param;
    p.layer  = 3;
    p.count  = count;
    p.rows   = rows;
    p.cols   = cols;
    p.dtype  = dt;
    p.nranks = 2; /* cast:fp16 pre-scales by 1/2 */
    p.seed   = 0x5eedull;
    p.mem    = TERSE_MEM_HOST;
    TERSE_TEST_OK(t->ops->create(&p, &t->host));
    p.mem = TERSE_MEM_CUDA;
    TERSE_TEST_OK(t->ops->create(&p, &t->dev));
    CU_ASSERT_PTR_NULL(fam->handle(t->host));
    t->cuda = fam->handle(t->dev);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t->cuda);
}

static void
oc_pair_destroy(oc_pair_t *t)
{
    t->ops->destroy(t->host);
    t->ops->destroy(t->dev);
}

/* Compress (and, for PowerSGD, stage 1 with this rank's P as the sum) on both instances.
 * Returns the final payloads (host copies, caller frees) and their size. */
static void
oc_compress(oc_pair_t *t, const void *in, terse_dtype_t dt, float *res_h, float *d_res,
            const terse_rng_t *rng, void **pay_h_p, void **pay_g_p, size_t *bytes_p,
            uint32_t *flags_h_p, double *err_h_p)
{
    size_t n = t->count, pb = 0, qb = 0;
    void *d_in = terse_test_cuda_dev(in, n * terse_dtype_size(dt)), *pay_h, *d_pay, *pay_g;
    terse_buf_t bh = {(void *)in, n, dt, TERSE_MEM_HOST};
    terse_buf_t bg = {d_in, n, dt, TERSE_MEM_CUDA};
    uint32_t flags_g = 7;
    double err_g = -1.0;

    TERSE_TEST_OK(t->ops->payload_size(t->host, n, 0, &pb));
    pay_h = malloc(pb);
    d_pay = terse_test_cuda_dev(NULL, pb);
    TERSE_TEST_OK(t->ops->compress(t->host, &bh, res_h, rng, pay_h, pb, flags_h_p, err_h_p,
                                   NULL));
    TERSE_TEST_OK(t->ops->compress(t->dev, &bg, d_res, rng, d_pay, pb, &flags_g, &err_g, NULL));
    /* device calls only enqueue: the real values wait in the status block */
    CU_ASSERT_EQUAL(flags_g, 0);
    CU_ASSERT_EQUAL(err_g, 0.0);
    if (t->psgd) {
        void *q_h, *d_q, *d_p = d_pay;
        TERSE_TEST_OK(t->ops->payload_size(t->host, n, 1, &qb));
        if (*flags_h_p == 0) { /* a flagged P is NaN */
            pay_g = oc_get(d_p, pb);
            CU_ASSERT(oc_rel(pay_g, pay_h, TERSE_FLOAT32, pb / 4) <= OC_PSGD_TOL);
            free(pay_g);
        }
        q_h = malloc(qb);
        d_q = terse_test_cuda_dev(NULL, qb);
        TERSE_TEST_OK(t->ops->stage(t->host, 1, pay_h, pb, q_h, qb, err_h_p, NULL));
        TERSE_TEST_OK(t->ops->stage(t->dev, 1, d_p, pb, d_q, qb, &err_g, NULL));
        CU_ASSERT_EQUAL(err_g, 0.0);
        free(pay_h);
        terse__cuda_free(d_p);
        pay_h = q_h;
        d_pay = d_q;
        pb    = qb;
    }
    pay_g = oc_get(d_pay, pb);
    terse__cuda_free(d_pay);
    terse__cuda_free(d_in);
    *pay_h_p = pay_h;
    *pay_g_p = pay_g;
    *bytes_p = pb;
}

/* A finite round: payloads, residuals, status block, decoded outputs. */
static void
oc_round(const oc_family_t *fam, size_t count, size_t rows, size_t cols, terse_dtype_t dt,
         uint64_t seed)
{
    oc_pair_t t;
    size_t n = count, pb = 0, es = terse_dtype_size(dt);
    float *x = malloc(n * sizeof(float)), *res_h = malloc(n * sizeof(float)), *res_g;
    void *in = malloc(n * 4), *pay_h = NULL, *pay_g = NULL, *d_pay, *out_h, *out_g, *d_out;
    float *d_res;
    uint32_t flags_h = 7, flags_g = 7;
    double err_h = -1.0, err_g = -1.0;
    terse_rng_t rng;
    size_t i;

    oc_pair_create(&t, fam, count, rows, cols, dt);
    if ((rows > 0) && (cols > 0)) {
        terse_test_lowrank(seed, rows, cols, 3, 0.1f, x);
    } else {
        terse_test_gaussian(seed, x, n);
    }
    terse__convert_from_f32(x, 1.0f, in, dt, n);
    terse_test_gaussian(seed + 1, res_h, n);
    for (i = 0; i < n; ++i) {
        res_h[i] *= 0.05f;
    }
    d_res = terse_test_cuda_dev(res_h, n * sizeof(float));
    rng   = terse_rng_make(seed, TERSE_RNG_RANDOMK, 3, 11, TERSE_RNG_SHARED);

    oc_compress(&t, in, dt, res_h, d_res, &rng, &pay_h, &pay_g, &pb, &flags_h, &err_h);
    CU_ASSERT_EQUAL(flags_h, 0);
    res_g = oc_get(d_res, n * sizeof(float));
    if (t.psgd) {
        CU_ASSERT(oc_rel(pay_g, pay_h, TERSE_FLOAT32, pb / 4) <= OC_PSGD_TOL);
        CU_ASSERT(oc_rel(res_g, res_h, TERSE_FLOAT32, n) <= OC_PSGD_TOL);
    } else {
        CU_ASSERT(memcmp(pay_g, pay_h, pb) == 0);
        CU_ASSERT(memcmp(res_g, res_h, n * sizeof(float)) == 0);
    }
    TERSE_TEST_OK(fam->stat(t.cuda, NULL, &flags_g, &err_g));
    CU_ASSERT_EQUAL(flags_g, 0);
    CU_ASSERT(oc_close(err_g, err_h, t.psgd ? 1e-3 : 1e-5));
    if (!oc_close(err_g, err_h, t.psgd ? 1e-3 : 1e-5)) {
        fprintf(stderr, "\n  %s: squared error host %.9g device %.9g\n", fam->spec, err_h, err_g);
    }

    /* decode the payload (as this rank's sum) through both instances */
    d_pay = terse_test_cuda_dev(pay_h, pb);
    out_h = malloc(n * es);
    d_out = terse_test_cuda_dev(NULL, n * es);
    {
        terse_buf_t oh = {out_h, n, dt, TERSE_MEM_HOST};
        terse_buf_t og = {d_out, n, dt, TERSE_MEM_CUDA};
        TERSE_TEST_OK(t.ops->decompress(t.host, pay_h, pb, 0.5f, &oh, NULL));
        TERSE_TEST_OK(t.ops->decompress(t.dev, d_pay, pb, 0.5f, &og, NULL));
    }
    out_g = oc_get(d_out, n * es);
    if (t.psgd) {
        CU_ASSERT(oc_rel(out_g, out_h, dt, n) <= OC_PSGD_TOL);
    } else {
        CU_ASSERT(memcmp(out_g, out_h, n * es) == 0);
    }
    if (t.ops->decompress_add != NULL) {
        /* acc = the residual: a non-trivial base to add to */
        float *d_acc = terse_test_cuda_dev(res_h, n * sizeof(float)), *acc_g;
        uint32_t fh = 7, fg = 7;
        TERSE_TEST_OK(t.ops->decompress_add(t.host, pay_h, pb, res_h, n, &fh, NULL));
        TERSE_TEST_OK(t.ops->decompress_add(t.dev, d_pay, pb, d_acc, n, &fg, NULL));
        CU_ASSERT_EQUAL(fh, 0);
        CU_ASSERT_EQUAL(fg, 0);
        acc_g = oc_get(d_acc, n * sizeof(float));
        CU_ASSERT(memcmp(acc_g, res_h, n * sizeof(float)) == 0);
        free(acc_g);
        terse__cuda_free(d_acc);
    }
    TERSE_TEST_OK(fam->stat(t.cuda, NULL, &flags_g, NULL));
    CU_ASSERT_EQUAL(flags_g, 0); /* every decoder accepted the payload */

    free(out_g);
    free(out_h);
    terse__cuda_free(d_out);
    terse__cuda_free(d_pay);
    free(pay_h);
    free(pay_g);
    free(res_g);
    terse__cuda_free(d_res);
    oc_pair_destroy(&t);
    free(in);
    free(res_h);
    free(x);
}

/* A NaN in the input: flagged in the device status block (Inf squared error), the residual
 * restarts from 0 on both. */
static void
oc_nonfinite(const oc_family_t *fam, size_t count, size_t rows, size_t cols, uint64_t seed)
{
    oc_pair_t t;
    size_t n = count, pb = 0;
    float *x = malloc(n * sizeof(float)), *res_h = malloc(n * sizeof(float)), *res_g, *d_res;
    void *pay_h = NULL, *pay_g = NULL;
    uint32_t flags_h = 0, flags_g = 0;
    double err_h = 0.0, err_g = 0.0;
    terse_rng_t rng = terse_rng_make(seed, TERSE_RNG_RANDOMK, 3, 12, TERSE_RNG_SHARED);

    oc_pair_create(&t, fam, count, rows, cols, TERSE_FLOAT32);
    terse_test_gaussian(seed, x, n);
    x[n / 3] = NAN;
    terse_test_gaussian(seed + 1, res_h, n);
    d_res = terse_test_cuda_dev(res_h, n * sizeof(float));
    oc_compress(&t, x, TERSE_FLOAT32, res_h, d_res, &rng, &pay_h, &pay_g, &pb, &flags_h, &err_h);
    CU_ASSERT_EQUAL(flags_h, TERSE_CMP_NONFINITE);
    TERSE_TEST_OK(fam->stat(t.cuda, NULL, &flags_g, &err_g));
    CU_ASSERT(flags_g & TERSE_CMP_NONFINITE);
    CU_ASSERT(isinf(err_g));
    res_g = oc_get(d_res, n * sizeof(float));
    CU_ASSERT(oc_all_zero(res_h, n));
    CU_ASSERT(oc_all_zero(res_g, n));
    /* the read cleared the flags */
    TERSE_TEST_OK(fam->stat(t.cuda, NULL, &flags_g, NULL));
    CU_ASSERT_EQUAL(flags_g, 0);
    free(res_g);
    free(pay_h);
    free(pay_g);
    terse__cuda_free(d_res);
    oc_pair_destroy(&t);
    free(res_h);
    free(x);
}

static const oc_family_t *
oc_find(const char *spec)
{
    size_t i;

    for (i = 0; i < OC_NFAMILIES; ++i) {
        if (strcmp(oc_families[i].spec, spec) == 0) {
            return &oc_families[i];
        }
    }
    CU_FAIL_FATAL("unknown family");
    return NULL;
}

static void
oc_flat(const char *spec, size_t count)
{
    const oc_family_t *fam = oc_find(spec);

    oc_round(fam, count, 0, 0, TERSE_FLOAT32, 101);
    oc_round(fam, count, 0, 0, TERSE_BFLOAT16, 202);
    oc_round(fam, count, 0, 0, TERSE_FLOAT16, 303);
    oc_nonfinite(fam, count, 0, 0, 404);
}

static void test_ops_quant(void) { oc_flat("quant:4", 100003); }
static void test_ops_sign(void) { oc_flat("sign", 100003); }
static void test_ops_cast_bf16(void) { oc_flat("cast:bf16", 100003); }
static void test_ops_cast_fp16(void) { oc_flat("cast:fp16", 100003); }
static void test_ops_randomk(void) { oc_flat("randomk:0.01", 100003); }
static void test_ops_topk(void) { oc_flat("topk:0.01", 100003); }
/* large enough for the CPU's sampled threshold (count / 16 >= 6400 draws) */
static void test_ops_topkt(void) { oc_flat("topkt:0.01", 150001); }

static void
test_ops_powersgd(void)
{
    const oc_family_t *fam = oc_find("powersgd:4");

    oc_round(fam, 96 * 64, 96, 64, TERSE_FLOAT32, 505);
    oc_round(fam, 96 * 64, 96, 64, TERSE_BFLOAT16, 606);
    oc_nonfinite(fam, 96 * 64, 96, 64, 707);
}

/* Create-time rules: powersgd1 has no device path; host buffers are refused by device-only
 * instances; the CUDA capability bit is set exactly where a device path exists. */
static void
test_ops_rules(void)
{
    const terse_cmp_ops_t *p1 = terse__cmp_find("powersgd1"), *tk = terse__cmp_find("topk");
    terse_cmp_params_t p;
    void *ctx = NULL;
    float x[256] = {0}, out[256];
    terse_buf_t b = {x, 256, TERSE_FLOAT32, TERSE_MEM_HOST};
    terse_rng_t rng = terse_rng_make(1, TERSE_RNG_RANDOMK, 0, 0, TERSE_RNG_SHARED);
    uint32_t flags;
    size_t i;

    CU_ASSERT_PTR_NOT_NULL_FATAL(p1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tk);
    CU_ASSERT((p1->caps & TERSE_CMP_CAP_CUDA) == 0);
    for (i = 0; i < OC_NFAMILIES; ++i) {
        terse_cmp_spec_t spec;
        TERSE_TEST_OK(terse__cmp_spec_parse(oc_families[i].spec, &spec, NULL, 0));
        CU_ASSERT((spec.ops->caps & TERSE_CMP_CAP_CUDA) != 0);
    }
    memset(&p, 0, sizeof(p));
    p.size   = sizeof(p);
    p.param  = 2;
    p.count  = 96 * 64;
    p.rows   = 96;
    p.cols   = 64;
    p.dtype  = TERSE_FLOAT32;
    p.mem    = TERSE_MEM_CUDA;
    p.nranks = 1;
    TERSE_TEST_STATUS(p1->create(&p, &ctx), TERSE_ERR_UNSUPPORTED);

    p.param = 0.1;
    p.count = 256;
    p.rows  = 0;
    p.cols  = 0;
    TERSE_TEST_OK(tk->create(&p, &ctx));
    TERSE_TEST_STATUS(tk->compress(ctx, &b, NULL, &rng, out, 32 + 8 * 26, &flags, NULL, NULL),
                      TERSE_ERR_INVALID);
    tk->destroy(ctx);
}

/* feedback.c: device residuals, zeroed, reset per layer and as a whole, usable as the residual
 * of a device compress. */
static void
test_ops_feedback(void)
{
    static const size_t counts[] = {1000, 37, 4096};
    const terse_cmp_ops_t *q = terse__cmp_find("quant");
    terse_fb_t fb;
    float *h, *g, *pat;
    size_t total = 1000 + 37 + 4096, i;

    TERSE_TEST_OK(terse__fb_create(counts, 3, TERSE_MEM_CUDA, &fb));
    CU_ASSERT_EQUAL(fb.total, total);
    CU_ASSERT_EQUAL(fb.mem, TERSE_MEM_CUDA);
    h = oc_get(fb.data, total * sizeof(float));
    CU_ASSERT(oc_all_zero(h, total));
    pat = malloc(total * sizeof(float));
    for (i = 0; i < total; ++i) {
        pat[i] = (float)i + 1.0f;
    }
    CU_ASSERT_FATAL(terse__cuda_memcpy(fb.data, pat, total * sizeof(float)) == TERSE_OK);
    CU_ASSERT(terse__fb_layer(&fb, 1) == fb.data + 1000);
    terse__fb_reset_layer(&fb, 1, 37);
    g = oc_get(fb.data, total * sizeof(float));
    CU_ASSERT(memcmp(g, pat, 1000 * sizeof(float)) == 0);
    CU_ASSERT(oc_all_zero(g + 1000, 37));
    CU_ASSERT(memcmp(g + 1037, pat + 1037, 4096 * sizeof(float)) == 0);
    free(g);

    /* layer 2's residual feeds a device quant compress: same bits as a host residual */
    {
        terse_cmp_params_t p;
        void *hc = NULL, *gc = NULL, *d_in, *d_pay, *pay_h, *pay_g;
        float *x = malloc(4096 * sizeof(float)), *res_h = malloc(4096 * sizeof(float));
        terse_rng_t rng = terse_rng_make(9, TERSE_RNG_QUANT, 2, 1, 0);
        size_t pb = 0;
        uint32_t flags;
        terse_buf_t bh, bg;

        for (i = 0; i < 4096; ++i) {
            res_h[i] = pat[1037 + i] * 1e-4f;
        }
        CU_ASSERT_FATAL(terse__cuda_memcpy(terse__fb_layer(&fb, 2), res_h,
                                           4096 * sizeof(float)) == TERSE_OK);
        terse_test_gaussian(77, x, 4096);
        memset(&p, 0, sizeof(p));
        p.size   = sizeof(p);
        p.param  = 3;
        p.layer  = 2;
        p.count  = 4096;
        p.dtype  = TERSE_FLOAT32;
        p.nranks = 1;
        p.mem    = TERSE_MEM_HOST;
        TERSE_TEST_OK(q->create(&p, &hc));
        p.mem = TERSE_MEM_CUDA;
        TERSE_TEST_OK(q->create(&p, &gc));
        TERSE_TEST_OK(q->payload_size(hc, 4096, 0, &pb));
        pay_h = malloc(pb);
        d_pay = terse_test_cuda_dev(NULL, pb);
        d_in  = terse_test_cuda_dev(x, 4096 * sizeof(float));
        bh    = (terse_buf_t){x, 4096, TERSE_FLOAT32, TERSE_MEM_HOST};
        bg    = (terse_buf_t){d_in, 4096, TERSE_FLOAT32, TERSE_MEM_CUDA};
        TERSE_TEST_OK(q->compress(hc, &bh, res_h, &rng, pay_h, pb, &flags, NULL, NULL));
        TERSE_TEST_OK(q->compress(gc, &bg, terse__fb_layer(&fb, 2), &rng, d_pay, pb, &flags,
                                  NULL, NULL));
        pay_g = oc_get(d_pay, pb);
        CU_ASSERT(memcmp(pay_g, pay_h, pb) == 0);
        g = oc_get(terse__fb_layer(&fb, 2), 4096 * sizeof(float));
        CU_ASSERT(memcmp(g, res_h, 4096 * sizeof(float)) == 0);
        CU_ASSERT(!oc_all_zero(g, 4096));
        free(g);
        free(pay_g);
        free(pay_h);
        terse__cuda_free(d_pay);
        terse__cuda_free(d_in);
        q->destroy(hc);
        q->destroy(gc);
        free(res_h);
        free(x);
    }

    terse__fb_reset_all(&fb);
    g = oc_get(fb.data, total * sizeof(float));
    CU_ASSERT(oc_all_zero(g, total));
    free(g);
    terse__fb_destroy(&fb);
    CU_ASSERT_PTR_NULL(fb.data);

    TERSE_TEST_OK(terse__fb_create(NULL, 0, TERSE_MEM_CUDA, &fb));
    terse__fb_reset_all(&fb);
    terse__fb_destroy(&fb);
    free(pat);
    free(h);
}

static CU_TestInfo ops_cuda_tests[] = {
    {"quant:4 host vs device through the ops", test_ops_quant},
    {"sign host vs device through the ops", test_ops_sign},
    {"cast:bf16 host vs device through the ops", test_ops_cast_bf16},
    {"cast:fp16 host vs device through the ops", test_ops_cast_fp16},
    {"randomk:0.01 host vs device through the ops", test_ops_randomk},
    {"topk:0.01 host vs device through the ops", test_ops_topk},
    {"topkt:0.01 host vs device through the ops", test_ops_topkt},
    {"powersgd:4 (96x64) host vs device through the ops", test_ops_powersgd},
    {"create rules and caps", test_ops_rules},
    {"device residuals (feedback)", test_ops_feedback},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_ops_cuda_suites[] = {
    {"ops_cuda", NULL, NULL, NULL, NULL, ops_cuda_tests},
    CU_SUITE_INFO_NULL,
};
