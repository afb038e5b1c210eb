/* compressors/powersgd_cuda.cu (label gpu): the two-stage powersgd kernels against the CPU
 * reference over two steps (warm start). Not bit-exact (other summation orders): every factor,
 * the output and the residual must agree within a relative Frobenius difference of 1e-4 (the
 * float rounding of a 1000-long dot is ~1e-6; the rest is margin for Gram-Schmidt), and
 * exactly where no rounding happens (zero input: unit-vector basis). Also: flat reshape with a
 * padded last row, ranks 1..32, non-finite input (NaN travels, residual and Q reset). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "terse_test_cuda.h"
#include "compressor.h"
#include "cuda_util.h"
#include "powersgd.h"
#include "powersgd_cuda.h"

static double
pc_rel(const float *a, const float *b, size_t n)
{
    double d = terse_test_sq_diff(a, b, n), r = terse_test_sq_norm(b, n);
    return sqrt(d / ((r > 0.0) ? r : 1.0));
}

#define PC_TOL 1e-4

/* kind 0 low-rank + noise, 1 all zero, 2 with a NaN */
static void
pc_case(size_t count, size_t rows, size_t cols, size_t rank, terse_dtype_t dt, int kind,
        uint64_t seed)
{
    const terse_cmp_ops_t *ops = terse__cmp_find("powersgd");
    terse_cmp_params_t p;
    void *ctx = NULL, *cuda = NULL, *in, *d_in, *d_p, *d_q, *d_out;
    float *res_c, *res_g, *d_res, *f32, *pc, *pg, *qc, *qg, *oc, *og;
    size_t R, C, pb = 0, qb = 0, i;
    uint32_t flags_c = 0, flags_g = 0;
    double err_c = 0.0, err_g = 0.0;
    terse_buf_t buf, ob;
    int step;

    CU_ASSERT_PTR_NOT_NULL_FATAL(ops);
    terse_psgd_shape(count, rows, cols, &R, &C);
    memset(&p, 0, sizeof(p));
    p.size   = sizeof(p);
    p.param  = (double)rank;
    p.layer  = 7;
    p.count  = count;
    p.rows   = rows;
    p.cols   = cols;
    p.dtype  = dt;
    p.mem    = TERSE_MEM_HOST;
    p.nranks = 1;
    p.seed   = seed;
    TERSE_TEST_OK(ops->create(&p, &ctx));
    TERSE_TEST_OK(ops->payload_size(ctx, count, 0, &pb));
    TERSE_TEST_OK(ops->payload_size(ctx, count, 1, &qb));
    CU_ASSERT_EQUAL_FATAL(pb, R * rank * sizeof(float));
    CU_ASSERT_EQUAL_FATAL(qb, C * rank * sizeof(float));
    TERSE_TEST_OK(terse__cmp_psgd_cuda_create(count, rows, cols, rank, seed, 7, 0, &cuda));
    f32 = malloc(count * sizeof(float));
    if (kind == 1) {
        memset(f32, 0, count * sizeof(float));
    } else {
        terse_test_lowrank(seed, R, count / R, 3, 0.1f, f32); /* fills R * (count / R) */
        terse_test_gaussian(seed + 5, f32 + R * (count / R), count - R * (count / R));
        if (kind == 2) {
            f32[count / 3] = NAN;
        }
    }
    in = malloc(count * 4);
    terse__convert_from_f32(f32, 1.0f, in, dt, count);
    res_c = terse_test_input(seed + 1, count, TERSE_FLOAT32, (kind == 1) ? 0.0f : 0.05f, 0);
    res_g = malloc(count * sizeof(float));
    pc = malloc(pb);
    pg = malloc(pb);
    qc = malloc(qb);
    qg = malloc(qb);
    oc = malloc(count * sizeof(float));
    og = malloc(count * sizeof(float));
    d_in  = terse_test_cuda_dev(in, count * terse_dtype_size(dt));
    d_res = terse_test_cuda_dev(res_c, count * sizeof(float));
    d_p   = terse_test_cuda_dev(NULL, pb);
    d_q   = terse_test_cuda_dev(NULL, qb);
    d_out = terse_test_cuda_dev(NULL, count * sizeof(float));
    buf.ptr   = in;
    buf.count = count;
    buf.dtype = dt;
    buf.mem   = TERSE_MEM_HOST;
    ob.ptr    = oc;
    ob.count  = count;
    ob.dtype  = TERSE_FLOAT32;
    ob.mem    = TERSE_MEM_HOST;
    for (step = 0; step < 2; ++step) {
        double rp, rq, ro, rr;
        TERSE_TEST_OK(ops->compress(ctx, &buf, res_c, NULL, pc, pb, &flags_c, &err_c, NULL));
        TERSE_TEST_OK(terse__cmp_psgd_cuda_compress(cuda, d_in, dt, count, d_res, d_p, pb, NULL,
                                                    NULL, NULL));
        TERSE_TEST_OK(terse__cmp_psgd_cuda_stat(cuda, NULL, &flags_g, NULL));
        CU_ASSERT_EQUAL(flags_c & TERSE_CMP_NONFINITE, flags_g & TERSE_CMP_NONFINITE);
        terse_test_cuda_get(pg, d_p, pb);
        /* each side continues from its own P: the comparison measures one step's drift */
        TERSE_TEST_OK(ops->stage(ctx, 1, pc, pb, qc, qb, &err_c, NULL));
        TERSE_TEST_OK(terse__cmp_psgd_cuda_stage(cuda, 1, d_p, pb, d_q, qb, NULL, NULL));
        TERSE_TEST_OK(terse__cmp_psgd_cuda_stat(cuda, NULL, NULL, &err_g));
        terse_test_cuda_get(qg, d_q, qb);
        TERSE_TEST_OK(ops->decompress(ctx, qc, qb, 1.0f, &ob, NULL));
        TERSE_TEST_OK(terse__cmp_psgd_cuda_decompress(cuda, d_q, qb, 1.0f, d_out, TERSE_FLOAT32,
                                                      count, NULL));
        terse_test_cuda_get(og, d_out, count * sizeof(float));
        terse_test_cuda_get(res_g, d_res, count * sizeof(float));
        if (kind == 2) {
            CU_ASSERT(flags_g & TERSE_CMP_NONFINITE);
            CU_ASSERT(isinf(err_g));
            CU_ASSERT(terse_test_all_nan(pg, TERSE_FLOAT32, pb / 4));
            CU_ASSERT(terse_test_all_nan(qg, TERSE_FLOAT32, qb / 4));
            CU_ASSERT(terse_test_all_nan(og, TERSE_FLOAT32, count));
            for (i = 0; i < count; ++i) {
                CU_ASSERT_EQUAL_FATAL(res_g[i], 0.0f);
            }
            break;
        }
        rp = pc_rel(pg, pc, pb / 4);
        rq = pc_rel(qg, qc, qb / 4);
        ro = pc_rel(og, oc, count);
        rr = pc_rel(res_g, res_c, count);
        if ((rp > PC_TOL) || (rq > PC_TOL) || (ro > PC_TOL) || (rr > PC_TOL) ||
            (fabs(err_g - err_c) > PC_TOL * (err_c + 1e-30) * 10)) {
            fprintf(stderr, "powersgd %zux%zu (count %zu) r %zu dtype %d step %d: rel P %.2e Q "
                            "%.2e out %.2e res %.2e, err %.6g vs %.6g\n",
                    R, C, count, rank, (int)dt, step, rp, rq, ro, rr, err_g, err_c);
        }
        CU_ASSERT(rp <= PC_TOL);
        CU_ASSERT(rq <= PC_TOL);
        CU_ASSERT(ro <= PC_TOL);
        CU_ASSERT(rr <= PC_TOL);
        TERSE_TEST_NEAR(err_g, err_c, PC_TOL * (err_c + 1e-30) * 10);
        if (kind == 1) {
            CU_ASSERT(memcmp(og, oc, count * sizeof(float)) == 0);
        }
        /* the next step starts from each side's own residual and Q */
    }
    if (kind == 2) {
        /* Q went back to its seeded start: equal to a fresh instance's */
        void *fresh = NULL;
        float *q1 = malloc(C * rank * sizeof(float)), *q2 = malloc(C * rank * sizeof(float));
        TERSE_TEST_OK(terse__cmp_psgd_cuda_create(count, rows, cols, rank, seed, 7, 0, &fresh));
        terse_test_cuda_get(q1, terse__cmp_psgd_cuda_q(cuda), C * rank * sizeof(float));
        terse_test_cuda_get(q2, terse__cmp_psgd_cuda_q(fresh), C * rank * sizeof(float));
        CU_ASSERT(memcmp(q1, q2, C * rank * sizeof(float)) == 0);
        terse__cmp_psgd_cuda_destroy(fresh);
        free(q1);
        free(q2);
    }
    terse__cuda_free(d_in);
    terse__cuda_free(d_res);
    terse__cuda_free(d_p);
    terse__cuda_free(d_q);
    terse__cuda_free(d_out);
    free(f32);
    free(in);
    free(res_c);
    free(res_g);
    free(pc);
    free(pg);
    free(qc);
    free(qg);
    free(oc);
    free(og);
    terse__cmp_psgd_cuda_destroy(cuda);
    ops->destroy(ctx);
}

static void
test_psgd_shapes(void)
{
    pc_case(64 * 48, 64, 48, 4, TERSE_FLOAT32, 0, 1);
    pc_case(300 * 1000, 300, 1000, 8, TERSE_FLOAT32, 0, 2);
    pc_case(1000 * 300, 1000, 300, 32, TERSE_FLOAT32, 0, 3);
    pc_case(3 * 2, 3, 2, 1, TERSE_FLOAT32, 0, 4);
    pc_case(1000003, 0, 0, 2, TERSE_FLOAT32, 0, 5);   /* flat, padded last row */
    pc_case(4096 * 1024, 4096, 1024, 4, TERSE_BFLOAT16, 0, 6);
    pc_case(768 * 3072, 768, 3072, 16, TERSE_FLOAT16, 0, 7);
}

static void
test_psgd_degenerate(void)
{
    pc_case(200 * 100, 200, 100, 4, TERSE_FLOAT32, 1, 8); /* zero: unit-vector basis */
}

static void
test_psgd_nonfinite(void)
{
    pc_case(200 * 100, 200, 100, 4, TERSE_FLOAT32, 2, 9);
    pc_case(100003, 0, 0, 1, TERSE_FLOAT16, 2, 10);
}

static CU_TestInfo psgd_cuda_tests[] = {
    {"parity within tolerance (shapes, ranks, dtypes)", test_psgd_shapes},
    {"zero input (degenerate columns)", test_psgd_degenerate},
    {"non-finite input", test_psgd_nonfinite},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_powersgd_cuda_suites[] = {
    {"powersgd_cuda", NULL, NULL, NULL, NULL, psgd_cuda_tests},
    CU_SUITE_INFO_NULL,
};
