/* compressors/powersgd_cuda.cu (label gpu): the two-stage powersgd kernels against the CPU
 * reference over two steps (warm start). Not bit-exact (other summation orders): every factor,
 * the output and the residual must agree within a relative Frobenius difference of 1e-4 (the
 * float rounding of a 1000-long dot is ~1e-6; the rest is margin for Gram-Schmidt), and
 * exactly where no rounding happens (zero input: unit-vector basis). Also: flat reshape with a
 * padded last row, ranks 1..32, non-finite input (NaN travels, residual and Q reset).
 * Suite powersgd_cuda_batch: the batched stage 1 against the per-layer one, and the full batch
 * (compress, stage 1, decompress) against the per-layer calls, bit for bit; the full batch's
 * launches per pass against the count of layers. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

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

/* ---------------------------------------------------------------- full batch */
/* A layer of the full batch: pc_fill's kind (in sp), no residual (the instance's scratch), a
 * residual 4 bytes past 16-byte alignment (the scalar paths of ps_mq and ps_sub, ps_mtp's
 * 4-column scalar loads), the decompress scale, and plain in / out pointers instead of offsets
 * from the run's bases. */
typedef struct pf_layer {
    pb_layer_t sp;
    int        scratch, misalign;
    float      scale;
    int        plain;
} pf_layer_t;

/* Copy 0 runs through the full batch, copy 1 through the per-layer calls. The inputs and
 * outputs of the non-plain layers sit at in_off / out_off in arenas: two input arenas with
 * different gradients (A at a 256-byte boundary, B 4 bytes past one: the vector paths off),
 * and per copy two output arenas placed alike. */
typedef struct pf_pair {
    pf_layer_t sp;
    size_t     R, C, pb, qb, esz, in_off, out_off;
    void      *cuda[2], *d_p[2], *d_q[2], *d_in, *d_out[2];
    float     *d_mem[2], *d_res[2];
} pf_pair_t;

#define PF_ALIGN(_x) (((_x) + 255) & ~(size_t)255)
#define PF_SLACK     256

static void
pf_pair_init(pf_pair_t *x, const pf_layer_t *sp, uint64_t seed)
{
    const pb_layer_t *b = &sp->sp;
    float *res;
    int v;

    memset(x, 0, sizeof(*x));
    x->sp = *sp;
    terse_psgd_shape(b->count, b->rows, b->cols, &x->R, &x->C);
    x->pb  = x->R * b->rank * sizeof(float);
    x->qb  = x->C * b->rank * sizeof(float);
    x->esz = terse_dtype_size(b->dt);
    res    = terse_test_input(seed + 1, b->count, TERSE_FLOAT32,
                              ((b->kind == 1) || (b->kind == 3)) ? 0.0f : 0.05f, 0);
    for (v = 0; v < 2; ++v) {
        TERSE_TEST_OK(terse__cmp_psgd_cuda_create(b->count, b->rows, b->cols, b->rank, seed,
                                                  (uint32_t)seed, sp->scratch, &x->cuda[v]));
        x->d_p[v] = terse_test_cuda_dev(NULL, x->pb);
        x->d_q[v] = terse_test_cuda_dev(NULL, x->qb);
        if (!sp->scratch) {
            x->d_mem[v] = terse_test_cuda_dev(NULL, (b->count + 4) * sizeof(float));
            x->d_res[v] = x->d_mem[v] + (sp->misalign ? 1 : 0);
            TERSE_TEST_OK(terse__cuda_memcpy(x->d_res[v], res, b->count * sizeof(float)));
        }
        if (sp->plain) {
            x->d_out[v] = terse_test_cuda_dev(NULL, b->count * x->esz);
        }
    }
    free(res);
}

static void
pf_pair_fini(pf_pair_t *x)
{
    int v;

    terse__cuda_free(x->d_in);
    for (v = 0; v < 2; ++v) {
        terse__cmp_psgd_cuda_destroy(x->cuda[v]);
        terse__cuda_free(x->d_p[v]);
        terse__cuda_free(x->d_q[v]);
        terse__cuda_free(x->d_mem[v]);
        terse__cuda_free(x->d_out[v]);
    }
}

/* The layer's gradient of arena ab (a plain layer reads arena A's every step). */
static void
pf_fill(const pf_pair_t *x, uint64_t seed, int ab, unsigned char *host)
{
    float *f32 = malloc(x->sp.sp.count * sizeof(float));

    pc_fill(x->sp.sp.kind, x->sp.sp.count, x->R, seed + 7 * (uint64_t)ab, f32);
    terse__convert_from_f32(f32, 1.0f, host, x->sp.sp.dt, x->sp.sp.count);
    free(f32);
}

/* Both copies' status blocks after a pass: the same flags, NONFINITE exactly on the layers of
 * kind 2; with err, the same squared error up to the order of the atomics. */
static void
pf_stats(pf_pair_t *x, size_t n, int step, const char *pass, int err)
{
    size_t l;
    int v;

    for (l = 0; l < n; ++l) {
        uint32_t flags[2] = {0, 0};
        double e[2] = {0.0, 0.0};
        for (v = 0; v < 2; ++v) {
            TERSE_TEST_OK(terse__cmp_psgd_cuda_stat(x[l].cuda[v], NULL, &flags[v], &e[v]));
        }
        if ((flags[0] != flags[1]) ||
            (((flags[0] & TERSE_CMP_NONFINITE) != 0) != (x[l].sp.sp.kind == 2))) {
            fprintf(stderr, "powersgd full batch: layer %zu step %d %s: flags %#x vs %#x\n", l,
                    step, pass, flags[0], flags[1]);
        }
        CU_ASSERT_EQUAL(flags[0], flags[1]);
        CU_ASSERT_EQUAL(((flags[0] & TERSE_CMP_NONFINITE) != 0), (x[l].sp.sp.kind == 2));
        if (!err) {
            continue;
        }
        if (x[l].sp.sp.kind == 2) {
            CU_ASSERT(isinf(e[0]) && isinf(e[1]));
        } else {
            TERSE_TEST_NEAR(e[0], e[1], 1e-12 * e[1]);
        }
    }
}

/* The batch copy's outputs (host copy of its output arena ab): NaN on the layer of kind 2
 * only (a non-finite layer spoils no other), finite elsewhere, not all zero on kind 0. */
static void
pf_isolated(const pf_pair_t *x, size_t n, const unsigned char *arena, int step)
{
    size_t l, i;

    for (l = 0; l < n; ++l) {
        const size_t cnt = x[l].sp.sp.count;
        const unsigned char *o;
        unsigned char *plain = NULL;
        float *f = malloc(cnt * sizeof(float));
        int finite = 1;
        if (x[l].sp.plain) {
            plain = malloc(cnt * x[l].esz);
            terse_test_cuda_get(plain, x[l].d_out[0], cnt * x[l].esz);
            o = plain;
        } else {
            o = arena + x[l].out_off;
        }
        terse__convert_to_f32(o, x[l].sp.sp.dt, f, cnt);
        if (x[l].sp.sp.kind == 2) {
            CU_ASSERT(terse_test_all_nan(f, TERSE_FLOAT32, cnt));
        } else {
            for (i = 0; i < cnt; ++i) {
                finite &= isfinite(f[i]) != 0;
            }
            if (!finite) {
                fprintf(stderr, "powersgd full batch: layer %zu step %d: output not finite\n",
                        l, step);
            }
            CU_ASSERT(finite);
        }
        if (x[l].sp.sp.kind == 0) {
            CU_ASSERT(terse_test_sq_norm(f, cnt) > 0.0);
        }
        free(f);
        free(plain);
    }
}

/* Every pass of layers of every rank class, shape and path (tiny, odd, two rows, flat padded
 * tails, fp16 / bf16, degenerate, rank-deficient, non-finite, misaligned residual, scratch,
 * global-memory ps_orth and ps_keep, plain and offset pointers) through one full batch on copy
 * A and through the per-layer calls on copy B, over three steps whose gradients and outputs
 * move (arena A, B, A): P, residual, P^, Q, warm-start Q, outputs (whole arenas, gaps
 * included) and flags must be the same bits. */
static void
test_psgd_batch_full(void)
{
    static const pf_layer_t layers[] = {
        {{64 * 48, 64, 48, 4, TERSE_FLOAT32, 0}, 0, 0, 0.5f, 1},      /* plain pointers */
        {{3 * 2, 3, 2, 1, TERSE_FLOAT32, 0}, 1, 0, 1.0f, 0},          /* tiny, scratch */
        {{37 * 29, 37, 29, 3, TERSE_FLOAT32, 0}, 0, 0, 0.25f, 0},     /* odd */
        {{2 * 4099, 2, 4099, 1, TERSE_BFLOAT16, 0}, 0, 0, 1.0f, 0},   /* two rows */
        {{1000003, 0, 0, 2, TERSE_FLOAT32, 0}, 0, 0, 0.5f, 0},        /* flat, padded tail */
        {{100001, 0, 0, 5, TERSE_FLOAT16, 0}, 1, 0, 2.0f, 0},         /* flat fp16, scratch */
        {{200 * 100, 200, 100, 4, TERSE_FLOAT32, 1}, 0, 0, 0.5f, 0},  /* zero: degenerate */
        {{200 * 100, 200, 100, 4, TERSE_FLOAT32, 2}, 0, 0, 0.5f, 0},  /* non-finite */
        {{256 * 128, 256, 128, 6, TERSE_FLOAT32, 3}, 0, 1, 0.5f, 0},  /* rank 2 at 6 */
        {{128 * 256, 128, 256, 8, TERSE_FLOAT32, 0}, 0, 1, 1.0f, 0},  /* misaligned residual */
        {{1000 * 300, 1000, 300, 32, TERSE_FLOAT32, 0}, 0, 0, 0.5f, 0},
        {{8000 * 40, 8000, 40, 12, TERSE_BFLOAT16, 0}, 0, 0, 0.5f, 0}, /* P 384 KB: global */
        {{60000 * 8, 60000, 8, 4, TERSE_FLOAT32, 0}, 0, 0, 0.5f, 0},   /* P 960 KB: global */
        {{48 * 20000, 48, 20000, 4, TERSE_BFLOAT16, 0}, 0, 0, 0.5f, 0}, /* Q 320 KB: global */
        {{768 * 3072, 768, 3072, 16, TERSE_FLOAT16, 0}, 0, 0, 0.5f, 0},
    };
    enum { N = sizeof(layers) / sizeof(layers[0]) };
    pf_pair_t x[N];
    terse_cu_player_t ly[N];
    unsigned char *in_mem[2], *out_mem[2][2], *in_base[2], *out_base[2][2], *host[2];
    size_t tot_in = 0, tot_out = 0, l;
    void *batch = NULL;
    int step, v, ab;

    for (l = 0; l < N; ++l) {
        pf_pair_init(&x[l], &layers[l], 200 + l);
        if (!layers[l].plain) {
            x[l].in_off  = tot_in;
            x[l].out_off = tot_out;
            tot_in += PF_ALIGN(layers[l].sp.count * x[l].esz);
            tot_out += PF_ALIGN(layers[l].sp.count * x[l].esz);
        }
    }
    host[0] = calloc(1, tot_in + tot_out + PF_SLACK);
    host[1] = calloc(1, tot_in + tot_out + PF_SLACK);
    for (ab = 0; ab < 2; ++ab) {
        in_mem[ab]  = terse_test_cuda_dev(NULL, tot_in + PF_SLACK);
        in_base[ab] = in_mem[ab] + (ab ? 4 : 0);
        memset(host[0], 0, tot_in);
        for (l = 0; l < N; ++l) {
            if (layers[l].plain) {
                if (ab == 0) {
                    unsigned char *h = malloc(layers[l].sp.count * x[l].esz);
                    pf_fill(&x[l], 200 + l, 0, h);
                    x[l].d_in = terse_test_cuda_dev(h, layers[l].sp.count * x[l].esz);
                    free(h);
                }
            } else {
                pf_fill(&x[l], 200 + l, ab, host[0] + x[l].in_off);
            }
        }
        TERSE_TEST_OK(terse__cuda_memcpy(in_base[ab], host[0], tot_in));
        for (v = 0; v < 2; ++v) {
            out_mem[v][ab]  = terse_test_cuda_dev(NULL, tot_out + PF_SLACK);
            out_base[v][ab] = out_mem[v][ab] + (ab ? 4 : 0);
        }
    }
    for (l = 0; l < N; ++l) {
        memset(&ly[l], 0, sizeof(ly[l]));
        ly[l].cuda     = x[l].cuda[0];
        ly[l].residual = x[l].d_res[0];
        ly[l].p_out    = x[l].d_p[0];
        ly[l].summed_p = x[l].d_p[0]; /* one rank: the sum is the payload itself */
        ly[l].q_out    = x[l].d_q[0];
        ly[l].summed_q = x[l].d_q[0];
        ly[l].n        = layers[l].sp.count;
        ly[l].dtype    = layers[l].sp.dt;
        ly[l].scale    = layers[l].scale;
        if (layers[l].plain) {
            ly[l].in  = x[l].d_in;
            ly[l].out = x[l].d_out[0];
        } else {
            ly[l].in   = (const void *)(uintptr_t)x[l].in_off;
            ly[l].out  = (void *)(uintptr_t)x[l].out_off;
            ly[l].user = TERSE_CU_PUSER_IN | TERSE_CU_PUSER_OUT;
        }
    }
    TERSE_TEST_OK(terse__cmp_psgd_cuda_batch_create_full(ly, N, &batch));
    CU_ASSERT_PTR_NOT_NULL_FATAL(batch);
    for (step = 0; step < 3; ++step) {
        ab = step & 1;
        /* compress */
        TERSE_TEST_OK(terse__cmp_psgd_cuda_batch_compress(batch, in_base[ab], NULL));
        for (l = 0; l < N; ++l) {
            const void *in = layers[l].plain ? x[l].d_in : (const void *)(in_base[ab] +
                                                                          x[l].in_off);
            TERSE_TEST_OK(terse__cmp_psgd_cuda_compress(x[l].cuda[1], in, layers[l].sp.dt,
                                                        layers[l].sp.count, x[l].d_res[1],
                                                        x[l].d_p[1], x[l].pb, NULL, NULL,
                                                        NULL));
        }
        pf_stats(x, N, step, "compress", 1);
        for (l = 0; l < N; ++l) {
            CU_ASSERT(pb_same(x[l].d_p[0], x[l].d_p[1], x[l].pb, "compress P", l, step));
            if (!layers[l].scratch) {
                CU_ASSERT(pb_same(x[l].d_res[0], x[l].d_res[1],
                                  layers[l].sp.count * sizeof(float), "compress M", l, step));
            }
        }
        /* stage 1 */
        TERSE_TEST_OK(terse__cmp_psgd_cuda_batch_stage(batch, NULL));
        for (l = 0; l < N; ++l) {
            TERSE_TEST_OK(terse__cmp_psgd_cuda_stage(x[l].cuda[1], 1, x[l].d_p[1], x[l].pb,
                                                     x[l].d_q[1], x[l].qb, NULL, NULL));
        }
        pf_stats(x, N, step, "stage 1", 1);
        for (l = 0; l < N; ++l) {
            CU_ASSERT(pb_same(terse__cmp_psgd_cuda_basis(x[l].cuda[0]),
                              terse__cmp_psgd_cuda_basis(x[l].cuda[1]), x[l].pb, "P^", l, step));
            CU_ASSERT(pb_same(x[l].d_q[0], x[l].d_q[1], x[l].qb, "Q", l, step));
            if (!layers[l].scratch) {
                CU_ASSERT(pb_same(x[l].d_res[0], x[l].d_res[1],
                                  layers[l].sp.count * sizeof(float), "residual", l, step));
            }
        }
        /* decompress into outputs poisoned alike (a missing write shows) */
        for (v = 0; v < 2; ++v) {
            TERSE_TEST_OK(terse__cuda_memset_async(out_mem[v][ab], 0xa5, tot_out + PF_SLACK,
                                                   NULL));
            for (l = 0; l < N; ++l) {
                if (layers[l].plain) {
                    TERSE_TEST_OK(terse__cuda_memset_async(
                        x[l].d_out[v], 0xa5, layers[l].sp.count * x[l].esz, NULL));
                }
            }
        }
        TERSE_TEST_OK(terse__cmp_psgd_cuda_batch_decompress(batch, out_base[0][ab], NULL));
        for (l = 0; l < N; ++l) {
            void *out = layers[l].plain ? x[l].d_out[1] : (void *)(out_base[1][ab] +
                                                                   x[l].out_off);
            TERSE_TEST_OK(terse__cmp_psgd_cuda_decompress(x[l].cuda[1], x[l].d_q[1], x[l].qb,
                                                          layers[l].scale, out,
                                                          layers[l].sp.dt, layers[l].sp.count,
                                                          NULL));
        }
        pf_stats(x, N, step, "decompress", 0);
        CU_ASSERT(pb_same(out_mem[0][ab], out_mem[1][ab], tot_out + PF_SLACK, "output arena",
                          0, step));
        for (l = 0; l < N; ++l) {
            if (layers[l].plain) {
                CU_ASSERT(pb_same(x[l].d_out[0], x[l].d_out[1], layers[l].sp.count * x[l].esz,
                                  "output", l, step));
            }
            CU_ASSERT(pb_same(terse__cmp_psgd_cuda_q(x[l].cuda[0]),
                              terse__cmp_psgd_cuda_q(x[l].cuda[1]), x[l].qb, "warm-start Q", l,
                              step));
        }
        terse_test_cuda_get(host[1], out_base[0][ab], tot_out);
        pf_isolated(x, N, host[1], step);
    }
    /* decompress repeats with the same bits; out of order, a usage error launching nothing */
    TERSE_TEST_OK(terse__cuda_memset_async(out_mem[0][0], 0xa5, tot_out + PF_SLACK, NULL));
    TERSE_TEST_OK(terse__cmp_psgd_cuda_batch_decompress(batch, out_base[0][0], NULL));
    CU_ASSERT(pb_same(out_mem[0][0], out_mem[1][0], tot_out + PF_SLACK, "repeated output", 0,
                      step));
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_stage(batch, NULL), TERSE_ERR_USAGE);
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_compress(batch, NULL, NULL), TERSE_ERR_INVALID);
    TERSE_TEST_OK(terse__cmp_psgd_cuda_batch_compress(batch, in_base[0], NULL));
    TERSE_TEST_OK(terse__cuda_memset_async(out_mem[0][0], 0xa5, tot_out + PF_SLACK, NULL));
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_decompress(batch, out_base[0][0], NULL),
                      TERSE_ERR_USAGE);
    TERSE_TEST_OK(terse__cuda_stream_sync(NULL));
    terse_test_cuda_get(host[1], out_mem[0][0], tot_out);
    for (l = 0; (l < tot_out) && (host[1][l] == 0xa5); ++l) {
    }
    CU_ASSERT_EQUAL(l, tot_out); /* nothing was written */
    TERSE_TEST_OK(terse__cmp_psgd_cuda_batch_stage(batch, NULL));
    TERSE_TEST_OK(terse__cuda_stream_sync(NULL));
    terse__cmp_psgd_cuda_batch_destroy(batch);
    for (ab = 0; ab < 2; ++ab) {
        terse__cuda_free(in_mem[ab]);
        for (v = 0; v < 2; ++v) {
            terse__cuda_free(out_mem[v][ab]);
        }
    }
    for (l = 0; l < N; ++l) {
        pf_pair_fini(&x[l]);
    }
    free(host[0]);
    free(host[1]);
}

/* Kernel launches of each pass, counted as the nodes of a captured graph (nothing runs). */
static size_t
pf_nodes(void *batch, int pass, cudaStream_t s)
{
    cudaGraph_t g = NULL;
    size_t nodes  = 0;
    terse_status_t st;

    CU_ASSERT_FATAL(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal) == cudaSuccess);
    if (pass == 0) {
        st = terse__cmp_psgd_cuda_batch_compress(batch, NULL, (terse_stream_t)s);
    } else if (pass == 1) {
        st = terse__cmp_psgd_cuda_batch_stage(batch, (terse_stream_t)s);
    } else {
        st = terse__cmp_psgd_cuda_batch_decompress(batch, NULL, (terse_stream_t)s);
    }
    CU_ASSERT_FATAL(cudaStreamEndCapture(s, &g) == cudaSuccess);
    CU_ASSERT_EQUAL(st, TERSE_OK);
    CU_ASSERT(cudaGraphGetNodes(g, NULL, &nodes) == cudaSuccess);
    cudaGraphDestroy(g);
    return nodes;
}

/* Launches per pass do not grow with the layers (rule 10): batches of 3 and 12 layers of the
 * rank classes 4, 8 and 32 (G = 3 classes; ps_orth and ps_keep: 2 block sizes) take the same
 * launches: compress G + 1, stage 1 2 + 2 G + 2, decompress 2 + G. */
static void
test_psgd_batch_launches(void)
{
    static const size_t rank[3] = {3, 8, 20};
    enum { NMAX = 12 };
    void *cudas[NMAX], *bufs[NMAX][5];
    terse_cu_player_t ly[NMAX];
    const size_t sizes[2] = {3, NMAX};
    size_t got[2][3], l, k;
    cudaStream_t s;

    CU_ASSERT_FATAL(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    for (l = 0; l < NMAX; ++l) {
        const size_t rows = 96 + 8 * l, cols = 80 + 4 * (l % 5), r = rank[l % 3];
        TERSE_TEST_OK(terse__cmp_psgd_cuda_create(rows * cols, rows, cols, r, 3, (uint32_t)l, 0,
                                                  &cudas[l]));
        bufs[l][0] = terse_test_cuda_dev(NULL, rows * cols * 4); /* in */
        bufs[l][1] = terse_test_cuda_dev(NULL, rows * cols * 4); /* residual */
        bufs[l][2] = terse_test_cuda_dev(NULL, rows * r * 4);    /* P */
        bufs[l][3] = terse_test_cuda_dev(NULL, cols * r * 4);    /* Q */
        bufs[l][4] = terse_test_cuda_dev(NULL, rows * cols * 4); /* out */
        memset(&ly[l], 0, sizeof(ly[l]));
        ly[l].cuda     = cudas[l];
        ly[l].in       = bufs[l][0];
        ly[l].residual = bufs[l][1];
        ly[l].p_out    = bufs[l][2];
        ly[l].summed_p = bufs[l][2];
        ly[l].q_out    = bufs[l][3];
        ly[l].summed_q = bufs[l][3];
        ly[l].out      = bufs[l][4];
        ly[l].n        = rows * cols;
        ly[l].dtype    = TERSE_FLOAT32;
        ly[l].scale    = 1.0f;
    }
    for (k = 0; k < 2; ++k) {
        void *batch = NULL;
        int pass;
        TERSE_TEST_OK(terse__cmp_psgd_cuda_batch_create_full(ly, sizes[k], &batch));
        CU_ASSERT_PTR_NOT_NULL_FATAL(batch);
        for (pass = 0; pass < 3; ++pass) {
            got[k][pass] = pf_nodes(batch, pass, s);
        }
        terse__cmp_psgd_cuda_batch_destroy(batch);
        /* the host state advanced without a run: start the instances afresh */
        for (l = 0; l < sizes[k]; ++l) {
            TERSE_TEST_OK(terse__cmp_psgd_cuda_reset(cudas[l]));
        }
    }
    fprintf(stderr, "powersgd full batch launches (compress, stage 1, decompress): 3 layers "
                    "%zu %zu %zu, 12 layers %zu %zu %zu\n",
            got[0][0], got[0][1], got[0][2], got[1][0], got[1][1], got[1][2]);
    for (k = 0; k < 2; ++k) {
        CU_ASSERT_EQUAL(got[k][0], 3 + 1);
        CU_ASSERT_EQUAL(got[k][1], 2 + 2 * 3 + 2);
        CU_ASSERT_EQUAL(got[k][2], 2 + 3);
    }
    for (l = 0; l < NMAX; ++l) {
        terse__cmp_psgd_cuda_destroy(cudas[l]);
        for (k = 0; k < 5; ++k) {
            terse__cuda_free(bufs[l][k]);
        }
    }
    cudaStreamDestroy(s);
}

/* batch_create_full refuses what the one-layer launchers would and what would make the batch
 * differ from the layers in order; *batch_p stays untouched. The run functions refuse a
 * stage-only batch and a missing base. */
static void
test_psgd_batch_full_reject(void)
{
    enum { N = 2 };
    terse_cu_player_t ly[N], bad[N];
    void *cudas[N], *bufs[N][5], *batch = NULL, *stage_only = NULL;
    const void *summed[N];
    void *qout[N];
    size_t sb[N], ob[N], l;

    for (l = 0; l < N; ++l) {
        const size_t rows = 64 + 16 * l, cols = 32, r = 2 + l;
        TERSE_TEST_OK(terse__cmp_psgd_cuda_create(rows * cols, rows, cols, r, 1, (uint32_t)l,
                                                  (int)l, &cudas[l])); /* layer 1: scratch */
        bufs[l][0] = terse_test_cuda_dev(NULL, rows * cols * 4);
        bufs[l][1] = terse_test_cuda_dev(NULL, rows * cols * 4);
        bufs[l][2] = terse_test_cuda_dev(NULL, rows * r * 4);
        bufs[l][3] = terse_test_cuda_dev(NULL, cols * r * 4);
        bufs[l][4] = terse_test_cuda_dev(NULL, rows * cols * 4);
        memset(&ly[l], 0, sizeof(ly[l]));
        ly[l].cuda     = cudas[l];
        ly[l].in       = (const void *)(uintptr_t)(4096 * l); /* offsets from the base */
        ly[l].residual = (l == 0) ? bufs[l][1] : NULL;
        ly[l].p_out    = bufs[l][2];
        ly[l].summed_p = bufs[l][2];
        ly[l].q_out    = bufs[l][3];
        ly[l].summed_q = bufs[l][3];
        ly[l].out      = bufs[l][4];
        ly[l].n        = rows * cols;
        ly[l].dtype    = TERSE_FLOAT32;
        ly[l].scale    = 1.0f;
        ly[l].user     = TERSE_CU_PUSER_IN;
        summed[l] = bufs[l][2];
        qout[l]   = bufs[l][3];
        sb[l]     = rows * r * 4;
        ob[l]     = cols * r * 4;
    }
#define PF_REJECT(_what)                                                                       \
    do {                                                                                       \
        memcpy(bad, ly, sizeof(ly));                                                           \
        _what;                                                                                 \
        TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_create_full(bad, N, &batch),              \
                          TERSE_ERR_INVALID);                                                  \
        CU_ASSERT_PTR_NULL(batch);                                                             \
    } while (0)
    PF_REJECT(bad[1].n -= 1);
    PF_REJECT(bad[0].residual = NULL);          /* no scratch on layer 0 */
    PF_REJECT(bad[0].user |= 4u);
    PF_REJECT(bad[1].user = 0; bad[1].in = NULL); /* a plain NULL input */
    PF_REJECT(bad[1].out = NULL);
    PF_REJECT(bad[0].dtype = TERSE_FLOAT64);
    PF_REJECT(bad[1] = bad[0]);                 /* an instance twice */
    PF_REJECT(bad[0].q_out = bufs[1][2]);       /* layer 0's Q over layer 1's summed P */
    PF_REJECT(bad[0].out = bufs[1][3]);         /* layer 0's output over layer 1's summed Q */
    PF_REJECT(bad[1].summed_q = NULL);
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_create_full(ly, 0, &batch), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_create_full(NULL, N, &batch),
                      TERSE_ERR_INVALID);
    CU_ASSERT_PTR_NULL(batch);
#undef PF_REJECT
    TERSE_TEST_OK(terse__cmp_psgd_cuda_batch_create_full(ly, N, &batch));
    CU_ASSERT_PTR_NOT_NULL_FATAL(batch);
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_compress(batch, NULL, NULL), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_decompress(batch, NULL, NULL), TERSE_ERR_USAGE);
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_stage(batch, NULL), TERSE_ERR_USAGE);
    TERSE_TEST_OK(terse__cmp_psgd_cuda_batch_create(cudas, summed, sb, qout, ob, N,
                                                    &stage_only));
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_compress(stage_only, bufs[0][0], NULL),
                      TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_decompress(stage_only, NULL, NULL),
                      TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(terse__cmp_psgd_cuda_batch_compress(NULL, bufs[0][0], NULL),
                      TERSE_ERR_INVALID);
    terse__cmp_psgd_cuda_batch_destroy(stage_only);
    terse__cmp_psgd_cuda_batch_destroy(batch);
    for (l = 0; l < N; ++l) {
        size_t k;
        terse__cmp_psgd_cuda_destroy(cudas[l]);
        for (k = 0; k < 5; ++k) {
            terse__cuda_free(bufs[l][k]);
        }
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
    {"full batch = per-layer calls, bit for bit, buffers moving", test_psgd_batch_full},
    {"full batch launches do not grow with the layers", test_psgd_batch_launches},
    {"batch_create_full rejects bad layers", test_psgd_batch_full_reject},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_powersgd_cuda_suites[] = {
    {"powersgd_cuda", NULL, NULL, NULL, NULL, psgd_cuda_tests},
    {"powersgd_cuda_batch", NULL, NULL, NULL, NULL, psgd_batch_tests},
    CU_SUITE_INFO_NULL,
};
