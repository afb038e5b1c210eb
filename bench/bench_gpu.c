/*
 * terse-bench-gpu: kernel benchmark of the CUDA compressors on device buffers (issue 6).
 *
 * For each size (fp32 values, -b .. -e bytes, times -f) and compressor it times compress
 * (with error feedback: v = in + residual, residual updated), decompress (fp32 out) and, for
 * the requantizable/sparse families, decompress_add, with CUDA events around -n launches
 * after -w warm-up launches on one stream. Columns:
 *   time   mean time per call (us)
 *   bytes  bytes the kernels must move at least: read + written (input, residual read and
 *          written, payload, output), not counting re-reads served by caches
 *   GB/s   bytes / time;  %peak  GB/s / the HBM peak (H100 3350, H200 4800 GB/s from the
 *          device name, or -P GB/s)
 * Then: top-k with k = 1 M of 100 M fp32 (no residual: the selection itself, and with one),
 * PowerSGD rank 4 on one 4096 x 4096 layer (percent of the HBM roofline of its passes), and
 * PowerSGD rank 4 on every matrix of GPT-2-small (model_shapes.txt) as one batch of launches,
 * then again with the batched stage 1 (every layer's orthogonalisation in one launch), then
 * with the full batch (every pass of every layer in a few launches).
 * Input: N(0, 1)-like values (Irwin-Hall of 4 uniforms), fixed seed.
 *
 * Usage: terse-bench-gpu [-b bytes] [-e bytes] [-f factor] [-n iters] [-w warmup] [-P GB/s]
 *                        [-C name,name,...] [-S shapes file] [-d device]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime.h>

#include "cast.h"
#include "cast_cuda.h"
#include "compressor.h"
#include "cuda_util.h"
#include "powersgd_cuda.h"
#include "quant.h"
#include "quant_cuda.h"
#include "randomk_cuda.h"
#include "terse_config.h"
#include "topk.h"
#include "topk_cuda.h"

#define BG_CHECK(_x)                                                                           \
    do {                                                                                       \
        cudaError_t _e = (_x);                                                                 \
        if (_e != cudaSuccess) {                                                               \
            fprintf(stderr, "terse-bench-gpu: %s: %s\n", #_x, cudaGetErrorString(_e));         \
            exit(2);                                                                           \
        }                                                                                      \
    } while (0)

#define BG_OK(_x)                                                                              \
    do {                                                                                       \
        terse_status_t _s = (_x);                                                              \
        if (_s != TERSE_OK) {                                                                  \
            fprintf(stderr, "terse-bench-gpu: %s: %s\n", #_x, terse_status_name(_s));          \
            exit(2);                                                                           \
        }                                                                                      \
    } while (0)

typedef struct bg_opts {
    size_t      minb, maxb;
    double      factor;
    int         iters, warmup;
    double      peak; /* GB/s */
    const char *only;
    const char *shapes;
} bg_opts_t;

static bg_opts_t bg;
static cudaStream_t bg_stream;
static cudaEvent_t bg_ev0, bg_ev1;

/* ---------------------------------------------------------------- timing */
typedef void (*bg_fn_t)(void *arg);

static double
bg_time_us(bg_fn_t fn, void *arg)
{
    float ms = 0.0f;
    int i;

    for (i = 0; i < bg.warmup; ++i) {
        fn(arg);
    }
    BG_CHECK(cudaEventRecord(bg_ev0, bg_stream));
    for (i = 0; i < bg.iters; ++i) {
        fn(arg);
    }
    BG_CHECK(cudaEventRecord(bg_ev1, bg_stream));
    BG_CHECK(cudaEventSynchronize(bg_ev1));
    BG_CHECK(cudaEventElapsedTime(&ms, bg_ev0, bg_ev1));
    BG_CHECK(cudaGetLastError());
    return 1000.0 * (double)ms / bg.iters;
}

static void
bg_row(const char *name, const char *op, size_t bytes_in, double us, double moved)
{
    double gbs = moved / (us * 1e3);

    if (bg.peak > 0.0) {
        printf("%-14s %-15s %12zu %10.2f %14.0f %8.1f %6.1f\n", name, op, bytes_in, us, moved,
               gbs, 100.0 * gbs / bg.peak);
    } else {
        printf("%-14s %-15s %12zu %10.2f %14.0f %8.1f %6s\n", name, op, bytes_in, us, moved, gbs,
               "-");
    }
    fflush(stdout);
}

static int
bg_selected(const char *name)
{
    const char *p;
    size_t l = strlen(name);

    if (bg.only == NULL) {
        return 1;
    }
    for (p = bg.only; (p = strstr(p, name)) != NULL; p += l) {
        if (((p == bg.only) || (p[-1] == ',')) && ((p[l] == '\0') || (p[l] == ','))) {
            return 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- the families */
typedef struct bg_case {
    int          family; /* 0 quant, 1 sign, 2 cast, 3 randomk, 4 topk */
    void        *cuda;
    const float *in;
    float       *res;
    void        *pay;
    size_t       bytes;
    float       *out;
    size_t       n;
    terse_rng_t  rng;
} bg_case_t;

static void
bg_compress(void *arg)
{
    bg_case_t *c = arg;

    switch (c->family) {
    case 0:
    case 1:
        BG_OK(terse__cmp_quant_cuda_compress(c->cuda, c->in, TERSE_FLOAT32, c->n, c->res, &c->rng,
                                             c->pay, c->bytes, NULL, NULL, bg_stream));
        break;
    case 2:
        BG_OK(terse__cmp_cast_cuda_compress(c->cuda, c->in, TERSE_FLOAT32, c->n, c->res, &c->rng,
                                            c->pay, c->bytes, NULL, NULL, bg_stream));
        break;
    case 3:
        BG_OK(terse__cmp_randomk_cuda_compress(c->cuda, c->in, TERSE_FLOAT32, c->n, c->res,
                                               &c->rng, c->pay, c->bytes, NULL, NULL, bg_stream));
        break;
    default:
        BG_OK(terse__cmp_topk_cuda_compress(c->cuda, c->in, TERSE_FLOAT32, c->n, c->res, &c->rng,
                                            c->pay, c->bytes, NULL, NULL, bg_stream));
        break;
    }
}

static void
bg_decompress(void *arg)
{
    bg_case_t *c = arg;

    switch (c->family) {
    case 0:
    case 1:
        BG_OK(terse__cmp_quant_cuda_decompress(c->cuda, c->pay, c->bytes, 1.0f, c->out,
                                               TERSE_FLOAT32, c->n, bg_stream));
        break;
    case 2:
        BG_OK(terse__cmp_cast_cuda_decompress(c->cuda, c->pay, c->bytes, 1.0f, c->out,
                                              TERSE_FLOAT32, c->n, bg_stream));
        break;
    case 3:
        BG_OK(terse__cmp_randomk_cuda_decompress(c->cuda, c->pay, c->bytes, 1.0f, c->out,
                                                 TERSE_FLOAT32, c->n, bg_stream));
        break;
    default:
        BG_OK(terse__cmp_topk_cuda_decompress(c->cuda, c->pay, c->bytes, 1.0f, c->out,
                                              TERSE_FLOAT32, c->n, bg_stream));
        break;
    }
}

static void
bg_decompress_add(void *arg)
{
    bg_case_t *c = arg;

    if (c->family <= 1) {
        BG_OK(terse__cmp_quant_cuda_decompress_add(c->cuda, c->pay, c->bytes, c->out, c->n, NULL,
                                                   bg_stream));
    } else {
        BG_OK(terse__cmp_topk_cuda_decompress_add(c->cuda, c->pay, c->bytes, c->out, c->n, NULL,
                                                  bg_stream));
    }
}

static void
bg_destroy(bg_case_t *c)
{
    switch (c->family) {
    case 0:
    case 1:
        terse__cmp_quant_cuda_destroy(c->cuda);
        break;
    case 2:
        terse__cmp_cast_cuda_destroy(c->cuda);
        break;
    case 3:
        terse__cmp_randomk_cuda_destroy(c->cuda);
        break;
    default:
        terse__cmp_topk_cuda_destroy(c->cuda);
        break;
    }
}

/* HBM calibration: what plain writes (cudaMemset) and copies (device to device) reach. */
typedef struct bg_hbm {
    void       *dst;
    const void *src;
    size_t      bytes;
} bg_hbm_t;

static void
bg_memset(void *arg)
{
    bg_hbm_t *h = arg;

    BG_CHECK(cudaMemsetAsync(h->dst, 0, h->bytes, bg_stream));
}

/* bench_gpu_hbm.cu: plain-kernel write / read ceilings (modes there). */
extern int bg_hbm_kernel(void *dst, size_t bytes, int mode, cudaStream_t s);

static int bg_hbm_mode;

static void
bg_hbm_kern(void *arg)
{
    bg_hbm_t *h = arg;

    if (bg_hbm_kernel(h->dst, h->bytes, bg_hbm_mode, bg_stream) != 0) {
        fprintf(stderr, "terse-bench-gpu: hbm kernel mode %d failed\n", bg_hbm_mode);
        exit(2);
    }
}

static void
bg_copy(void *arg)
{
    bg_hbm_t *h = arg;

    BG_CHECK(cudaMemcpyAsync(h->dst, h->src, h->bytes, cudaMemcpyDeviceToDevice, bg_stream));
}

/* Runs one family at n values: compress, decompress(, decompress_add) rows. */
static void
bg_family(const char *name, int family, double param, size_t n, const float *d_in, float *d_res,
          float *d_out, void *d_pay)
{
    bg_case_t c;
    double us, moved, comp_extra = 0.0;
    size_t k = 0;

    memset(&c, 0, sizeof(c));
    c.family = family;
    c.in     = d_in;
    c.res    = d_res;
    c.out    = d_out;
    c.pay    = d_pay;
    c.n      = n;
    c.rng    = terse_rng_make(1, TERSE_RNG_QUANT, 0, 0, 0);
    switch (family) {
    case 0:
        BG_OK(terse__cmp_quant_cuda_create(TERSE_QUANT_FAMILY_QUANT, (unsigned)param, 512, &c.cuda));
        c.bytes = terse_quant_payload_bytes(n, (unsigned)param, 512, 8);
        break;
    case 1:
        BG_OK(terse__cmp_quant_cuda_create(TERSE_QUANT_FAMILY_SIGN, 1, 512, &c.cuda));
        c.bytes = terse_quant_payload_bytes(n, 1, 512, 4);
        break;
    case 2:
        BG_OK(terse__cmp_cast_cuda_create((int)param, 1, &c.cuda));
        c.bytes = 2 * n;
        break;
    case 3:
        k = terse_topk_k(param, n);
        BG_OK(terse__cmp_randomk_cuda_create(n, k, &c.cuda));
        c.bytes    = 4 * k;
        comp_extra = 8.0 * (double)k; /* index + gathered value */
        c.rng      = terse_rng_make(1, TERSE_RNG_RANDOMK, 0, 0, TERSE_RNG_SHARED);
        break;
    default:
        k = terse_topk_k(param, n);
        BG_OK(terse__cmp_topk_cuda_create(n, k, TERSE_TOPK_FAMILY_EXACT, &c.cuda));
        c.bytes = TERSE_TOPK_HEADER_BYTES + 8 * k;
        break;
    }
    /* compress: in read, residual read + written, payload written */
    us    = bg_time_us(bg_compress, &c);
    moved = 12.0 * (double)n + (double)c.bytes + comp_extra;
    bg_row(name, "compress", 4 * n, us, moved);
    /* decompress: payload read, fp32 output written (dense families) */
    us    = bg_time_us(bg_decompress, &c);
    moved = (double)c.bytes + 4.0 * (double)n;
    bg_row(name, "decompress", 4 * n, us, moved);
    if ((family <= 1) || (family == 4)) {
        us    = bg_time_us(bg_decompress_add, &c);
        moved = (double)c.bytes + ((family == 4) ? 8.0 * (double)k : 8.0 * (double)n);
        bg_row(name, "decompress_add", 4 * n, us, moved);
    }
    bg_destroy(&c);
}

/* The target rows of top-k, k = 1 M of 100 M fp32: the selection without and with error
 * feedback (residual read and written). */
static void
bg_topk100m(const char *label, unsigned family, const float *d_in, float *d_res, float *d_out,
            void *d_pay)
{
    const size_t n = 100000000, k = 1000000;
    bg_case_t c;
    double us;

    memset(&c, 0, sizeof(c));
    c.family = 4;
    c.in     = d_in;
    c.out    = d_out;
    c.pay    = d_pay;
    c.n      = n;
    c.bytes  = TERSE_TOPK_HEADER_BYTES + 8 * k;
    c.rng    = terse_rng_make(3, TERSE_RNG_TEST, 0, 0, 0);
    BG_OK(terse__cmp_topk_cuda_create(n, k, family, &c.cuda));
    us = bg_time_us(bg_compress, &c);
    bg_row(label, "select", 4 * n, us, 4.0 * n + 8.0 * k);
    c.res = d_res;
    BG_CHECK(cudaMemsetAsync(d_res, 0, n * 4, bg_stream));
    us = bg_time_us(bg_compress, &c);
    bg_row(label, "select+feedback", 4 * n, us, 12.0 * n + 8.0 * k);
    bg_destroy(&c);
}

/* ---------------------------------------------------------------- PowerSGD */
typedef struct bg_psgd {
    size_t  nl;
    void  **cuda;
    float **in, **res, **p, **q, **out;
    size_t *count, *rows, *cols;
    int     rank;
    void   *batch; /* stage 1 of every layer with one orthogonalisation launch, or NULL */
    void   *full;  /* every pass of every layer batched (launches per rank class), or NULL */
} bg_psgd_t;

static void
bg_psgd_step(void *arg)
{
    bg_psgd_t *b = arg;
    size_t l;

    if (b->full != NULL) {
        BG_OK(terse__cmp_psgd_cuda_batch_compress(b->full, NULL, bg_stream));
        BG_OK(terse__cmp_psgd_cuda_batch_stage(b->full, bg_stream));
        BG_OK(terse__cmp_psgd_cuda_batch_decompress(b->full, NULL, bg_stream));
        return;
    }
    for (l = 0; l < b->nl; ++l) {
        BG_OK(terse__cmp_psgd_cuda_compress(b->cuda[l], b->in[l], TERSE_FLOAT32, b->count[l],
                                            b->res[l], b->p[l], b->rows[l] * b->rank * 4, NULL,
                                            NULL, bg_stream));
    }
    if (b->batch != NULL) {
        BG_OK(terse__cmp_psgd_cuda_batch_stage(b->batch, bg_stream));
    }
    for (l = 0; (b->batch == NULL) && (l < b->nl); ++l) {
        BG_OK(terse__cmp_psgd_cuda_stage(b->cuda[l], 1, b->p[l], b->rows[l] * b->rank * 4,
                                         b->q[l], b->cols[l] * b->rank * 4, NULL, bg_stream));
    }
    for (l = 0; l < b->nl; ++l) {
        BG_OK(terse__cmp_psgd_cuda_decompress(b->cuda[l], b->q[l], b->cols[l] * b->rank * 4,
                                              1.0f, b->out[l], TERSE_FLOAT32, b->count[l],
                                              bg_stream));
    }
}

/* One row of bg_psgd_run: the time of a step and the roofline of its passes over the
 * matrices: compress reads in + residual and writes M (12 B), stage 1 reads M for Q (4 B) and
 * reads + writes it for the residual (8 B), decompress writes the output (4 B): 28 bytes per
 * element, factors aside. */
static void
bg_psgd_row(const char *label, const char *what, size_t nl, size_t total, int rank, double us)
{
    const double moved = 28.0 * (double)total;

    printf("%-14s %-15s %12zu %10.2f %14.0f %8.1f ", label, what, total * 4, us, moved,
           moved / (us * 1e3));
    if (bg.peak > 0.0) {
        printf("%6.1f", 100.0 * (moved / (us * 1e3)) / bg.peak);
    } else {
        printf("%6s", "-");
    }
    printf("   (%zu matrices, %zu values, rank %d, compress + stage 1 + decompress)\n", nl, total,
           rank);
    fflush(stdout);
}

/* batched: a second row, "step (batched orth)", the same layers with stage 1 through a
 * stage-only batch (terse__cmp_psgd_cuda_batch_stage), and a third, "step (full batch)", with
 * every pass through a full batch (launches per rank class, not per layer). */
static void
bg_psgd_run(const char *label, const size_t *rows, const size_t *cols, size_t nl, int rank,
            int batched, const float *src, size_t src_n)
{
    bg_psgd_t b;
    size_t l, total = 0;
    double us;

    memset(&b, 0, sizeof(b));
    b.nl    = nl;
    b.rank  = rank;
    b.cuda  = calloc(nl, sizeof(void *));
    b.in    = calloc(nl, sizeof(float *));
    b.res   = calloc(nl, sizeof(float *));
    b.p     = calloc(nl, sizeof(float *));
    b.q     = calloc(nl, sizeof(float *));
    b.out   = calloc(nl, sizeof(float *));
    b.count = calloc(nl, sizeof(size_t));
    b.rows  = calloc(nl, sizeof(size_t));
    b.cols  = calloc(nl, sizeof(size_t));
    for (l = 0; l < nl; ++l) {
        size_t n = rows[l] * cols[l];
        b.count[l] = n;
        b.rows[l]  = rows[l];
        b.cols[l]  = cols[l];
        total += n;
        BG_OK(terse__cmp_psgd_cuda_create(n, rows[l], cols[l], (size_t)rank, 1, (uint32_t)l, 0,
                                          &b.cuda[l]));
        BG_CHECK(cudaMalloc((void **)&b.in[l], n * 4));
        BG_CHECK(cudaMalloc((void **)&b.res[l], n * 4));
        BG_CHECK(cudaMalloc((void **)&b.out[l], n * 4));
        BG_CHECK(cudaMalloc((void **)&b.p[l], rows[l] * rank * 4));
        BG_CHECK(cudaMalloc((void **)&b.q[l], cols[l] * rank * 4));
        BG_CHECK(cudaMemcpyAsync(b.in[l], src, ((n < src_n) ? n : src_n) * 4,
                                 cudaMemcpyDeviceToDevice, bg_stream));
        BG_CHECK(cudaMemsetAsync(b.res[l], 0, n * 4, bg_stream));
    }
    us = bg_time_us(bg_psgd_step, &b);
    bg_psgd_row(label, "step", nl, total, rank, us);
    if (batched) {
        size_t *pb = calloc(nl, sizeof(size_t)), *qb = calloc(nl, sizeof(size_t));
        for (l = 0; l < nl; ++l) {
            pb[l] = rows[l] * (size_t)rank * 4;
            qb[l] = cols[l] * (size_t)rank * 4;
        }
        BG_OK(terse__cmp_psgd_cuda_batch_create(b.cuda, (const void *const *)b.p, pb,
                                                (void *const *)b.q, qb, nl, &b.batch));
        us = bg_time_us(bg_psgd_step, &b);
        bg_psgd_row(label, "step (batched orth)", nl, total, rank, us);
        terse__cmp_psgd_cuda_batch_destroy(b.batch);
        b.batch = NULL;
        free(pb);
        free(qb);
    }
    if (batched) {
        terse_cu_player_t *ly = calloc(nl, sizeof(*ly));
        for (l = 0; l < nl; ++l) {
            ly[l].cuda     = b.cuda[l];
            ly[l].in       = b.in[l];
            ly[l].residual = b.res[l];
            ly[l].p_out    = b.p[l];
            ly[l].summed_p = b.p[l];
            ly[l].q_out    = b.q[l];
            ly[l].summed_q = b.q[l];
            ly[l].out      = b.out[l];
            ly[l].n        = b.count[l];
            ly[l].dtype    = TERSE_FLOAT32;
            ly[l].scale    = 1.0f;
        }
        BG_OK(terse__cmp_psgd_cuda_batch_create_full(ly, nl, &b.full));
        us = bg_time_us(bg_psgd_step, &b);
        bg_psgd_row(label, "step (full batch)", nl, total, rank, us);
        terse__cmp_psgd_cuda_batch_destroy(b.full);
        b.full = NULL;
        free(ly);
    }
    for (l = 0; l < nl; ++l) {
        terse__cmp_psgd_cuda_destroy(b.cuda[l]);
        cudaFree(b.in[l]);
        cudaFree(b.res[l]);
        cudaFree(b.out[l]);
        cudaFree(b.p[l]);
        cudaFree(b.q[l]);
    }
    free(b.cuda);
    free(b.in);
    free(b.res);
    free(b.p);
    free(b.q);
    free(b.out);
    free(b.count);
    free(b.rows);
    free(b.cols);
}

/* The 2-D matrices of GPT-2-small from model_shapes.txt ("gpt2_small name rows cols"). */
static size_t
bg_gpt2_shapes(const char *path, size_t *rows, size_t *cols, size_t max)
{
    FILE *f = fopen(path, "r");
    char line[512], model[64], name[256];
    size_t n = 0, r, c, extra;

    if (f == NULL) {
        fprintf(stderr, "terse-bench-gpu: cannot open %s\n", path);
        return 0;
    }
    while ((n < max) && (fgets(line, sizeof(line), f) != NULL)) {
        int got = sscanf(line, "%63s %255s %zu %zu %zu", model, name, &r, &c, &extra);
        if ((got == 4) && (strcmp(model, "gpt2_small") == 0)) {
            rows[n] = r;
            cols[n] = c;
            ++n;
        }
    }
    fclose(f);
    return n;
}

/* ---------------------------------------------------------------- main */
static double
bg_detect_peak(int dev, char *name, size_t len)
{
    struct cudaDeviceProp prop;

    BG_CHECK(cudaGetDeviceProperties(&prop, dev));
    snprintf(name, len, "%s", prop.name);
    if (strstr(prop.name, "H200") != NULL) {
        return 4800.0;
    }
    if (strstr(prop.name, "H100") != NULL) {
        return 3350.0;
    }
    return 0.0;
}

static float *
bg_fill(size_t n)
{
    float *h = malloc(n * sizeof(float)), *d;
    uint64_t x = 0x9e3779b97f4a7c15ull;
    size_t i;

    if (h == NULL) {
        fprintf(stderr, "terse-bench-gpu: out of host memory\n");
        exit(2);
    }
    for (i = 0; i < n; ++i) {
        uint32_t a, b;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        a    = (uint32_t)x;
        b    = (uint32_t)(x >> 32);
        h[i] = ((float)(a >> 16) + (float)(a & 0xffffu) + (float)(b >> 16) +
                (float)(b & 0xffffu)) * (1.0f / 65536.0f) - 2.0f;
        h[i] *= 1.7320508f;
    }
    BG_CHECK(cudaMalloc((void **)&d, n * sizeof(float)));
    /* on bg_stream, synchronised: the legacy stream does not order against it */
    BG_CHECK(cudaMemcpyAsync(d, h, n * sizeof(float), cudaMemcpyHostToDevice, bg_stream));
    BG_CHECK(cudaStreamSynchronize(bg_stream));
    free(h);
    return d;
}

int
main(int argc, char **argv)
{
    char devname[256], shapes_default[1024];
    size_t maxn, size;
    float *d_in, *d_res, *d_out;
    void *d_pay;
    int opt, dev = 0;
    double peak;

    bg.minb   = (size_t)1 << 20;
    bg.maxb   = (size_t)1 << 30;
    bg.factor = 4.0;
    bg.iters  = 20;
    bg.warmup = 5;
    bg.peak   = -1.0;
    snprintf(shapes_default, sizeof(shapes_default), "%s/model_shapes.txt", TERSE_DATA_DIR);
    bg.shapes = shapes_default;
    while ((opt = getopt(argc, argv, "b:e:f:n:w:P:C:S:d:h")) != -1) {
        switch (opt) {
        case 'b': bg.minb = strtoull(optarg, NULL, 0); break;
        case 'e': bg.maxb = strtoull(optarg, NULL, 0); break;
        case 'f': bg.factor = atof(optarg); break;
        case 'n': bg.iters = atoi(optarg); break;
        case 'w': bg.warmup = atoi(optarg); break;
        case 'P': bg.peak = atof(optarg); break;
        case 'C': bg.only = optarg; break;
        case 'S': bg.shapes = optarg; break;
        case 'd': dev = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: %s [-b bytes] [-e bytes] [-f factor] [-n iters] [-w warmup] "
                            "[-P GB/s] [-C hbm,quant4,slot,qvar,quant2,quant8,sign,cast,randomk,topk,topk100m,powersgd,gpt2] "
                            "[-S model_shapes.txt] [-d device]\n", argv[0]);
            return (opt == 'h') ? 0 : 1;
        }
    }
    if ((bg.iters < 1) || (bg.factor <= 1.0) || (bg.minb < 4) || (bg.maxb < bg.minb)) {
        fprintf(stderr, "terse-bench-gpu: bad arguments\n");
        return 1;
    }
    BG_CHECK(cudaSetDevice(dev));
    peak = bg_detect_peak(dev, devname, sizeof(devname));
    if (bg.peak < 0.0) {
        bg.peak = peak;
    }
    BG_CHECK(cudaStreamCreateWithFlags(&bg_stream, cudaStreamNonBlocking));
    BG_CHECK(cudaEventCreate(&bg_ev0));
    BG_CHECK(cudaEventCreate(&bg_ev1));

    maxn = bg.maxb / 4;
    if (maxn < 100000000) {
        maxn = 100000000; /* the top-k row uses 100 M values */
    }
    printf("# terse-bench-gpu %s (git %s) device %d %s, HBM peak %.0f GB/s%s\n",
           TERSE_VERSION_STRING, TERSE_GIT_REVISION, dev, devname, bg.peak,
           (bg.peak > 0.0) ? "" : " (unknown: pass -P)");
    printf("# fp32 input N(0,1)-like, error feedback on; warmup %d iters %d; bytes = read + "
           "written (minimum traffic)\n", bg.warmup, bg.iters);
    printf("# %-12s %-15s %12s %10s %14s %8s %6s\n", "compressor", "op", "size(B)", "time(us)",
           "bytes", "GB/s", "%peak");
    d_in = bg_fill(maxn);
    BG_CHECK(cudaMalloc((void **)&d_res, maxn * 4));
    BG_CHECK(cudaMalloc((void **)&d_out, maxn * 4));
    BG_CHECK(cudaMalloc(&d_pay, maxn * 4 / 2 + (1 << 20)));
    BG_CHECK(cudaMemsetAsync(d_res, 0, maxn * 4, bg_stream));
    BG_CHECK(cudaMemsetAsync(d_out, 0, maxn * 4, bg_stream));

    for (size = bg.minb; size <= bg.maxb; size = (size_t)((double)size * bg.factor)) {
        size_t n = size / 4;
        if (bg_selected("quant4")) {
            bg_family("quant:4", 0, 4, n, d_in, d_res, d_out, d_pay);
        }
        if (bg_selected("slot") && (size >= ((size_t)64 << 20))) {
            /* the bucket-slot kernels alone (what tables and unaligned buffers run), against
             * the streaming fast paths of the rows above and below */
            terse__cmp_quant_cuda_tune(0);
            bg_family("quant:4 slot", 0, 4, n, d_in, d_res, d_out, d_pay);
            bg_family("sign slot", 1, 0, n, d_in, d_res, d_out, d_pay);
            terse__cmp_quant_cuda_tune(2);
        }
        if (bg_selected("qvar") && (size >= ((size_t)64 << 20))) {
            /* fast-path variants (terse__cmp_quant_cuda_variant) */
            static const unsigned vars[] = {1, 2, 4, 8, 16};
            static const char *const vnames[] = {"quant:4 v1", "quant:4 v2", "quant:4 v4",
                                                 "quant:4 v8", "quant:4 v16"};
            static const char *const snames[] = {"sign v1", "sign v2", "sign v4", "sign v8",
                                                 "sign v16"};
            size_t v;
            for (v = 0; v < 5; ++v) {
                terse__cmp_quant_cuda_variant(vars[v]);
                bg_family(vnames[v], 0, 4, n, d_in, d_res, d_out, d_pay);
                if (vars[v] != 4) {
                    bg_family(snames[v], 1, 0, n, d_in, d_res, d_out, d_pay);
                }
            }
            terse__cmp_quant_cuda_variant(0);
        }
        if (bg_selected("hbm") && (size >= ((size_t)64 << 20))) {
            bg_hbm_t h;
            double us;
            h.dst   = d_out;
            h.src   = d_in;
            h.bytes = 4 * n;
            us = bg_time_us(bg_memset, &h);
            bg_row("hbm memset", "write", 4 * n, us, 4.0 * (double)n);
            h.bytes = 2 * n;
            us = bg_time_us(bg_copy, &h);
            bg_row("hbm d2d copy", "read+write", 4 * n, us, 4.0 * (double)n);
            {
                static const char *const names[] = {"hbm st.v4", "hbm st.v4.cs", "hbm tma",
                                                    "hbm ld.v4.cs"};
                h.bytes = (4 * n) & ~(size_t)16383;
                for (bg_hbm_mode = 0; bg_hbm_mode < 4; ++bg_hbm_mode) {
                    us = bg_time_us(bg_hbm_kern, &h);
                    bg_row(names[bg_hbm_mode], (bg_hbm_mode == 3) ? "read" : "write", h.bytes,
                           us, (double)h.bytes);
                }
            }
        }
        if (bg_selected("quant2")) {
            bg_family("quant:2", 0, 2, n, d_in, d_res, d_out, d_pay);
        }
        if (bg_selected("quant8")) {
            bg_family("quant:8", 0, 8, n, d_in, d_res, d_out, d_pay);
        }
        if (bg_selected("sign")) {
            bg_family("sign", 1, 0, n, d_in, d_res, d_out, d_pay);
        }
        if (bg_selected("cast")) {
            bg_family("cast:bf16", 2, TERSE_CAST_BF16, n, d_in, d_res, d_out, d_pay);
        }
        if (bg_selected("randomk")) {
            bg_family("randomk:0.01", 3, 0.01, n, d_in, d_res, d_out, d_pay);
        }
        if (bg_selected("topk")) {
            bg_family("topk:0.01", 4, 0.01, n, d_in, d_res, d_out, d_pay);
        }
        if (size > bg.maxb / bg.factor) {
            break;
        }
    }

    if (bg_selected("topk100m")) {
        printf("# top-k, k = 1 M of 100 M fp32 (targets on an H100: exact <= 500 us, sampled "
               "threshold topkt <= 250 us; every row gives the same set)\n");
        bg_topk100m("topk 1M/100M", TERSE_TOPK_FAMILY_EXACT, d_in, d_res, d_out, d_pay);
        bg_topk100m("topkt 1M/100M", TERSE_TOPK_FAMILY_SAMPLED, d_in, d_res, d_out, d_pay);
        /* both families run the sampled candidate threshold with an exact fallback: the
         * fallback alone (radix select, three levels), for comparison */
        terse__cmp_topk_cuda_tune(0);
        bg_topk100m("topk radix", TERSE_TOPK_FAMILY_EXACT, d_in, d_res, d_out, d_pay);
        terse__cmp_topk_cuda_tune(1);
    }
    if (bg_selected("powersgd")) {
        size_t r4096 = 4096, c4096 = 4096;
        printf("# PowerSGD rank 4 (target: >= 50 %% of the HBM roofline of its passes)\n");
        bg_psgd_run("psgd 4096^2", &r4096, &c4096, 1, 4, 0, d_in, maxn);
    }
    if (bg_selected("gpt2")) {
        size_t rows[256], cols[256];
        size_t nl = bg_gpt2_shapes(bg.shapes, rows, cols, 256);
        if (nl > 0) {
            printf("# PowerSGD rank 4 on every matrix of GPT-2-small (%s), one batch of "
                   "launches on one stream; then with stage 1's orthogonalisations in one "
                   "launch; then with every pass batched across the layers\n", bg.shapes);
            bg_psgd_run("psgd gpt2-small", rows, cols, nl, 4, 1, d_in, maxn);
        }
    }
    cudaFree(d_in);
    cudaFree(d_res);
    cudaFree(d_out);
    cudaFree(d_pay);
    cudaEventDestroy(bg_ev0);
    cudaEventDestroy(bg_ev1);
    cudaStreamDestroy(bg_stream);
    return 0;
}
