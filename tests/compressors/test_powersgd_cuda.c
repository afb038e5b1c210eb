/* compressors/powersgd_cuda.cu (label gpu): the two-stage powersgd kernels against the CPU
 * reference over two steps (warm start). Not bit-exact (other summation orders): every factor,
 * the output and the residual must agree within a relative Frobenius difference of 1e-4 (the
 * float rounding of a 1000-long dot is ~1e-6; the rest is margin for Gram-Schmidt), and
 * exactly where no rounding happens (zero input: unit-vector basis). Also: flat reshape with a
 * padded last row, ranks 1..32, non-finite input (NaN travels, residual and Q reset).
 * Suite powersgd_cuda_batch: the batched stage 1 against the per-layer one, bit for bit. */
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

/* count values of a layer of R rows: kind 0 low-rank + noise, 1 all zero, 2 with a NaN, 3 exactly
 * rank 2 (rank-deficient P above rank 2: the columns from 2 on are numerically dependent) */
static void
pc_fill(int kind, size_t count, size_t R, uint64_t seed, float *f32)
{
    const size_t full = R * (count / R);

    if (kind == 1) {
        memset(f32, 0, count * sizeof(float));
        return;
    }
    terse_test_lowrank(seed, R, count / R, (kind == 3) ? 2 : 3, (kind == 3) ? 0.0f : 0.1f, f32);
    terse_test_gaussian(seed + 5, f32 + full, count - full);
    if (kind == 2) {
        f32[count / 3] = NAN;
    }
}

/* kind: as pc_fill's (0 .. 2) */
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
    pc_fill(kind, count, R, seed, f32);
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

/* ---------------------------------------------------------------- batched stage 1 */
/* kind: pc_fill's */
typedef struct pb_layer {
    size_t        count, rows, cols, rank;
    terse_dtype_t dt;
    int           kind;
} pb_layer_t;

/* Two identical instances of one layer: A staged by the batch, B by the per-layer stage. */
typedef struct pb_pair {
    pb_layer_t sp;
    size_t     R, C, pb, qb;
    void      *cuda[2], *d_in, *d_p[2], *d_q[2], *d_out[2];
    float     *d_res[2];
} pb_pair_t;

static void
pb_pair_init(pb_pair_t *x, const pb_layer_t *sp, uint64_t seed)
{
    float *f32 = malloc(sp->count * sizeof(float)), *res;
    void *in = malloc(sp->count * 4);
    int v;

    memset(x, 0, sizeof(*x));
    x->sp = *sp;
    terse_psgd_shape(sp->count, sp->rows, sp->cols, &x->R, &x->C);
    x->pb = x->R * sp->rank * sizeof(float);
    x->qb = x->C * sp->rank * sizeof(float);
    pc_fill(sp->kind, sp->count, x->R, seed, f32);
    terse__convert_from_f32(f32, 1.0f, in, sp->dt, sp->count);
    res = terse_test_input(seed + 1, sp->count, TERSE_FLOAT32,
                           ((sp->kind == 1) || (sp->kind == 3)) ? 0.0f : 0.05f, 0);
    x->d_in = terse_test_cuda_dev(in, sp->count * terse_dtype_size(sp->dt));
    for (v = 0; v < 2; ++v) {
        TERSE_TEST_OK(terse__cmp_psgd_cuda_create(sp->count, sp->rows, sp->cols, sp->rank, seed,
                                                  (uint32_t)seed, 0, &x->cuda[v]));
        x->d_res[v] = terse_test_cuda_dev(res, sp->count * sizeof(float));
        x->d_p[v]   = terse_test_cuda_dev(NULL, x->pb);
        x->d_q[v]   = terse_test_cuda_dev(NULL, x->qb);
        x->d_out[v] = terse_test_cuda_dev(NULL, sp->count * sizeof(float));
    }
    free(f32);
    free(in);
    free(res);
}

static void
pb_pair_fini(pb_pair_t *x)
{
    int v;

    terse__cuda_free(x->d_in);
    for (v = 0; v < 2; ++v) {
        terse__cmp_psgd_cuda_destroy(x->cuda[v]);
        terse__cuda_free(x->d_res[v]);
        terse__cuda_free(x->d_p[v]);
        terse__cuda_free(x->d_q[v]);
        terse__cuda_free(x->d_out[v]);
    }
}

/* 1 when the device buffers a and b hold the same bytes (a message names what differs). */
static int
pb_same(const void *a, const void *b, size_t bytes, const char *what, size_t layer, int step)
{
    unsigned char *x = malloc(bytes), *y = malloc(bytes);
    int same;

    terse_test_cuda_get(x, a, bytes);
    terse_test_cuda_get(y, b, bytes);
    same = (memcmp(x, y, bytes) == 0);
    if (!same) {
        fprintf(stderr, "powersgd batch: layer %zu step %d: %s differs\n", layer, step, what);
    }
    free(x);
    free(y);
    return same;
}

/* Stage 1 of layers of every rank class, shape and path (shared and global memory, degenerate,
 * rank-deficient, flat, non-finite) through one batch on copy A and through the per-layer
 * stage on copy B, over three steps (warm start): P^, Q, residual, flags and output must be
 * the same bits. Squared errors are summed with atomics (a statistic): near, not equal. */
static void
test_psgd_batch_bits(void)
{
    static const pb_layer_t layers[] = {
        {64 * 48, 64, 48, 4, TERSE_FLOAT32, 0},
        {300 * 1000, 300, 1000, 8, TERSE_FLOAT32, 0},
        {1000003, 0, 0, 2, TERSE_FLOAT32, 0},          /* flat, padded last row */
        {200 * 100, 200, 100, 4, TERSE_FLOAT32, 1},    /* zero: degenerate columns */
        {200 * 100, 200, 100, 4, TERSE_FLOAT32, 2},    /* non-finite */
        {256 * 128, 256, 128, 6, TERSE_FLOAT32, 3},    /* rank 2 at rank 6 */
        {1000 * 300, 1000, 300, 32, TERSE_FLOAT32, 0},
        {8000 * 40, 8000, 40, 12, TERSE_BFLOAT16, 0},  /* P of 384 KB: global memory */
        {60000 * 8, 60000, 8, 4, TERSE_FLOAT32, 0},    /* P of 960 KB: global memory */
        {768 * 3072, 768, 3072, 16, TERSE_FLOAT16, 0},
    };
    const size_t n = sizeof(layers) / sizeof(layers[0]);
    pb_pair_t x[sizeof(layers) / sizeof(layers[0])];
    void *cudas[sizeof(layers) / sizeof(layers[0])], *out[sizeof(layers) / sizeof(layers[0])];
    const void *summed[sizeof(layers) / sizeof(layers[0])];
    size_t sb[sizeof(layers) / sizeof(layers[0])], ob[sizeof(layers) / sizeof(layers[0])];
    void *batch = NULL;
    size_t l;
    int step, v;

    for (l = 0; l < n; ++l) {
        pb_pair_init(&x[l], &layers[l], 100 + l);
        cudas[l]  = x[l].cuda[0];
        summed[l] = x[l].d_p[0];
        out[l]    = x[l].d_q[0];
        sb[l]     = x[l].pb;
        ob[l]     = x[l].qb;
    }
    TERSE_TEST_OK(terse__cmp_psgd_cuda_batch_create(cudas, summed, sb, out, ob, n, &batch));
    CU_ASSERT_PTR_NOT_NULL_FATAL(batch);
    for (step = 0; step < 3; ++step) {
        for (l = 0; l < n; ++l) {
            for (v = 0; v < 2; ++v) {
                TERSE_TEST_OK(terse__cmp_psgd_cuda_compress(
                    x[l].cuda[v], x[l].d_in, x[l].sp.dt, x[l].sp.count, x[l].d_res[v],
                    x[l].d_p[v], x[l].pb, NULL, NULL, NULL));
            }
        }
        TERSE_TEST_OK(terse__cmp_psgd_cuda_batch_stage(batch, NULL));
        for (l = 0; l < n; ++l) {
            TERSE_TEST_OK(terse__cmp_psgd_cuda_stage(x[l].cuda[1], 1, x[l].d_p[1], x[l].pb,
                                                     x[l].d_q[1], x[l].qb, NULL, NULL));
        }
        for (l = 0; l < n; ++l) {
            uint32_t flags[2] = {0, 0};
            double err[2] = {0.0, 0.0};
            for (v = 0; v < 2; ++v) {
                TERSE_TEST_OK(terse__cmp_psgd_cuda_stat(x[l].cuda[v], NULL, &flags[v], &err[v]));
                TERSE_TEST_OK(terse__cmp_psgd_cuda_decompress(
                    x[l].cuda[v], x[l].d_q[v], x[l].qb, 0.5f, x[l].d_out[v], TERSE_FLOAT32,
                    x[l].sp.count, NULL));
            }
            CU_ASSERT_EQUAL(flags[0], flags[1]);
            CU_ASSERT_EQUAL(((flags[0] & TERSE_CMP_NONFINITE) != 0), (x[l].sp.kind == 2));
            if (x[l].sp.kind == 2) {
                CU_ASSERT(isinf(err[0]) && isinf(err[1]));
            } else {
                TERSE_TEST_NEAR(err[0], err[1], 1e-12 * err[1]);
            }
            CU_ASSERT(pb_same(x[l].d_p[0], x[l].d_p[1], x[l].pb, "P", l, step));
            CU_ASSERT(pb_same(terse__cmp_psgd_cuda_basis(x[l].cuda[0]),
                              terse__cmp_psgd_cuda_basis(x[l].cuda[1]), x[l].pb, "P^", l, step));
            CU_ASSERT(pb_same(x[l].d_q[0], x[l].d_q[1], x[l].qb, "Q", l, step));
            CU_ASSERT(pb_same(x[l].d_res[0], x[l].d_res[1], x[l].sp.count * sizeof(float),
                              "residual", l, step));
            CU_ASSERT(pb_same(x[l].d_out[0], x[l].d_out[1], x[l].sp.count * sizeof(float),
                              "output", l, step));
            CU_ASSERT(pb_same(terse__cmp_psgd_cuda_q(x[l].cuda[0]),
                              terse__cmp_psgd_cuda_q(x[l].cuda[1]), x[l].qb, "warm-start Q", l,
                              step));
        }
    }
    /* stage 1 again without compress: a usage error that changes no layer (decompress may
     * still repeat) */
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_stage(batch, NULL), TERSE_ERR_USAGE);
    TERSE_TEST_OK(terse__cmp_psgd_cuda_decompress(x[0].cuda[0], x[0].d_q[0], x[0].qb, 0.5f,
                                                  x[0].d_out[0], TERSE_FLOAT32, x[0].sp.count,
                                                  NULL));
    CU_ASSERT(pb_same(x[0].d_out[0], x[0].d_out[1], x[0].sp.count * sizeof(float),
                      "repeated output", 0, step));
    /* one layer compressed, the others not: still a usage error, and that layer's stage 1
     * stays possible */
    TERSE_TEST_OK(terse__cmp_psgd_cuda_compress(x[1].cuda[0], x[1].d_in, x[1].sp.dt,
                                                x[1].sp.count, x[1].d_res[0], x[1].d_p[0],
                                                x[1].pb, NULL, NULL, NULL));
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_stage(batch, NULL), TERSE_ERR_USAGE);
    TERSE_TEST_OK(terse__cmp_psgd_cuda_stage(x[1].cuda[0], 1, x[1].d_p[0], x[1].pb, x[1].d_q[0],
                                             x[1].qb, NULL, NULL));
    TERSE_TEST_OK(terse__cuda_stream_sync(NULL));
    terse__cmp_psgd_cuda_batch_destroy(batch);
    for (l = 0; l < n; ++l) {
        pb_pair_fini(&x[l]);
    }
}

/* batch_create refuses what stage 1 would refuse (sizes, naming the layer), an instance twice,
 * an earlier Q output over a later summed P, and an empty batch; *batch_p stays untouched. */
static void
test_psgd_batch_reject(void)
{
    enum { N = 3 };
    void *cudas[N], *out[N], *batch = NULL;
    const void *summed[N];
    size_t sb[N], ob[N], l;
    const void *spare;

    for (l = 0; l < N; ++l) {
        const size_t rows = 64 + 16 * l, cols = 32;
        TERSE_TEST_OK(terse__cmp_psgd_cuda_create(rows * cols, rows, cols, 2 + l, 1,
                                                  (uint32_t)l, 1, &cudas[l]));
        sb[l]     = rows * (2 + l) * sizeof(float);
        ob[l]     = cols * (2 + l) * sizeof(float);
        summed[l] = terse_test_cuda_dev(NULL, sb[l]);
        out[l]    = terse_test_cuda_dev(NULL, ob[l]);
    }
    sb[1] += 4;
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_create(cudas, summed, sb, out, ob, N, &batch),
                      TERSE_ERR_INVALID);
    sb[1] -= 4;
    ob[2] -= 4;
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_create(cudas, summed, sb, out, ob, N, &batch),
                      TERSE_ERR_INVALID);
    ob[2] += 4;
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_create(cudas, summed, sb, out, ob, 0, &batch),
                      TERSE_ERR_INVALID);
    {
        /* layer 0's instance twice, with arguments that fit it both times */
        void *twice[2] = {cudas[0], cudas[0]}, *out2[2] = {out[0], out[1]};
        const void *summed2[2] = {summed[0], summed[1]};
        size_t sb2[2] = {sb[0], sb[0]}, ob2[2] = {ob[0], ob[0]};
        TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_create(twice, summed2, sb2, out2, ob2, 2,
                                                            &batch),
                          TERSE_ERR_INVALID);
    }
    /* addresses only: nothing is read when create refuses */
    spare     = summed[1];
    summed[1] = out[0];
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_create(cudas, summed, sb, out, ob, N, &batch),
                      TERSE_ERR_INVALID);
    summed[1] = spare;
    CU_ASSERT_PTR_NULL(batch);
    TERSE_TEST_OK(terse__cmp_psgd_cuda_batch_create(cudas, summed, sb, out, ob, N, &batch));
    CU_ASSERT_PTR_NOT_NULL(batch);
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_stage(batch, NULL), TERSE_ERR_USAGE);
    terse__cmp_psgd_cuda_batch_destroy(batch);
    for (l = 0; l < N; ++l) {
        terse__cmp_psgd_cuda_destroy(cudas[l]);
        terse__cuda_free((void *)summed[l]);
        terse__cuda_free(out[l]);
    }
}

static CU_TestInfo psgd_cuda_tests[] = {
    {"parity within tolerance (shapes, ranks, dtypes)", test_psgd_shapes},
    {"zero input (degenerate columns)", test_psgd_degenerate},
    {"non-finite input", test_psgd_nonfinite},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo psgd_batch_tests[] = {
    {"batched stage 1 = per-layer stage 1, bit for bit", test_psgd_batch_bits},
    {"batch_create rejects bad layers", test_psgd_batch_reject},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_powersgd_cuda_suites[] = {
    {"powersgd_cuda", NULL, NULL, NULL, NULL, psgd_cuda_tests},
    {"powersgd_cuda_batch", NULL, NULL, NULL, NULL, psgd_batch_tests},
    CU_SUITE_INFO_NULL,
};
