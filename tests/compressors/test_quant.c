/* compressors/quant.c (and the rules sign shares with it): unbiasedness, the measured error,
 * payload sizes, a bit-exact reference of quant.h's formula and packing, error feedback on real
 * gradients, non-finite inputs, rejection of bad payloads inside guard pages, sizes 0/1/odd,
 * unaligned buffers, fp16/bf16, sub-range compress, and the three CPU kernel versions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_test.h"
#include "compressor.h"
#include "quant.h"

typedef struct qt {
    const terse_cmp_ops_t *ops;
    void                  *ctx;
} qt_t;

static qt_t
qt_make(const char *family, double param, size_t count, uint32_t bucket)
{
    terse_cmp_params_t p;
    qt_t q;

    memset(&p, 0, sizeof(p));
    p.size   = sizeof(p);
    p.param  = param;
    p.count  = count;
    p.dtype  = TERSE_FLOAT32;
    p.mem    = TERSE_MEM_HOST;
    p.bucket = bucket;
    p.nranks = 1;
    q.ops    = terse__cmp_find(family);
    q.ctx    = NULL;
    CU_ASSERT_FATAL(q.ops != NULL);
    CU_ASSERT_FATAL(q.ops->create(&p, &q.ctx) == TERSE_OK);
    return q;
}

static size_t
qt_bytes(qt_t q, size_t n)
{
    size_t b = 0;

    TERSE_TEST_OK(q.ops->payload_size(q.ctx, n, 0, &b));
    return b;
}

/* compress n fp32 values (residual may be NULL) into a new payload; returns it. */
static uint8_t *
qt_compress(qt_t q, const float *x, size_t n, float *res, const terse_rng_t *rng,
            uint32_t *flags_p, double *sq_p)
{
    terse_buf_t in   = {(void *)x, n, TERSE_FLOAT32, TERSE_MEM_HOST};
    size_t bytes     = qt_bytes(q, n);
    uint8_t *payload = malloc(bytes + 1);
    uint32_t flags   = 0xdead;
    double sq        = -1.0;

    TERSE_TEST_OK(q.ops->compress(q.ctx, &in, res, rng, payload, bytes, &flags, &sq, NULL));
    if (flags_p != NULL) {
        *flags_p = flags;
    }
    if (sq_p != NULL) {
        *sq_p = sq;
    }
    return payload;
}

static terse_status_t
qt_decompress(qt_t q, const void *payload, size_t bytes, float *out, size_t n)
{
    terse_buf_t o = {out, n, TERSE_FLOAT32, TERSE_MEM_HOST};

    return q.ops->decompress(q.ctx, payload, bytes, 1.0f, &o, NULL);
}

/* ---------------------------------------------------------------- reference of quant.h */
/* Written from the formula in quant.h's comment with plain scalar code (min/max with
 * comparisons, bit-by-bit packing), to compare the vectorised kernels against. */
static uint8_t *
qt_reference(const float *v, size_t n, unsigned bits, size_t bucket, const terse_rng_t *rng,
             float *decoded)
{
    size_t bytes = terse_quant_payload_bytes(n, bits, bucket, 8);
    size_t nb = (n + bucket - 1) / bucket, k, i, j;
    uint8_t *p   = calloc(1, bytes);
    uint8_t *codes = p + 24 + nb * 8;
    uint32_t L   = (1u << bits) - 1u;
    uint32_t magic = TERSE_QUANT_MAGIC, b32 = (uint32_t)bucket;
    uint64_t n64 = n;

    memcpy(p, &magic, 4);
    p[4] = TERSE_QUANT_VERSION;
    p[5] = TERSE_QUANT_FAMILY_QUANT;
    p[6] = (uint8_t)bits;
    p[7] = 0;
    memcpy(p + 8, &b32, 4);
    memcpy(p + 16, &n64, 8);
    for (k = 0; k < nb; ++k) {
        size_t s = k * bucket, m = (n - s < bucket) ? n - s : bucket;
        float lo = v[s], hi = v[s], unit, inv;
        for (i = 1; i < m; ++i) {
            lo = (v[s + i] < lo) ? v[s + i] : lo;
            hi = (v[s + i] > hi) ? v[s + i] : hi;
        }
        lo += 0.0f;
        hi += 0.0f;
        unit = (hi - lo) / (float)L;
        if (!(unit >= 1.17549435e-38f)) {
            unit = 0.0f;
        }
        inv = (unit > 0.0f) ? 1.0f / unit : 0.0f;
        memcpy(p + 24 + k * 8, &lo, 4);
        memcpy(p + 24 + k * 8 + 4, &unit, 4);
        for (i = 0; i < m; ++i) {
            uint64_t a    = rng->offset + s + i;
            terse_rng4_t r = terse_philox((uint32_t)(a / 8), (uint32_t)((a / 8) >> 32), rng->hi[0],
                                          rng->hi[1], rng->key[0], rng->key[1]);
            uint32_t u16  = (r.v[(a % 8) / 2] >> (16 * (a % 2))) & 0xffffu;
            float u       = ((float)u16 + 0.5f) / 65536.0f;
            float t       = (v[s + i] - lo) * inv + u;
            uint32_t c;
            if (t > (float)L) {
                t = (float)L;
            }
            c = (uint32_t)floorf(t);
            decoded[s + i] = lo + (float)c * unit;
            for (j = 0; j < bits; ++j) {
                size_t bit = k * bucket * bits + i * bits + j;
                if ((c >> j) & 1u) {
                    codes[bit / 8] |= (uint8_t)(1u << (bit % 8));
                }
            }
        }
    }
    return p;
}

static void
test_quant_reference(void)
{
    static const size_t sizes[] = {1, 7, 32, 100, 513, 1500};
    static const uint32_t buckets[] = {32, 96, 512, 1024};
    unsigned bits;
    size_t si, bi, n, i;
    int isa;

    for (bits = 2; bits <= 8; ++bits) {
        for (si = 0; si < sizeof(sizes) / sizeof(sizes[0]); ++si) {
            for (bi = 0; bi < 4; ++bi) {
                terse_rng_t rng = terse_rng_make(11, TERSE_RNG_QUANT, (uint32_t)bits, 3, 1);
                float *x, *dref, *dout;
                uint8_t *ref;
                size_t bytes;
                qt_t q;

                n  = sizes[si];
                q  = qt_make("quant", bits, n, buckets[bi]);
                x  = malloc(n * sizeof(float));
                dref = malloc(n * sizeof(float));
                dout = malloc(n * sizeof(float));
                terse_test_gaussian(100 + bits, x, n);
                rng   = terse_rng_advance(rng, 3 * bi); /* odd offsets: blocks straddle */
                ref   = qt_reference(x, n, bits, buckets[bi], &rng, dref);
                bytes = qt_bytes(q, n);
                for (isa = TERSE_QUANT_ISA_AVX512; isa >= TERSE_QUANT_ISA_BASE; --isa) {
                    uint8_t *got;
                    terse__quant_isa_max = isa;
                    got = qt_compress(q, x, n, NULL, &rng, NULL, NULL);
                    if (memcmp(got, ref, bytes) != 0) {
                        fprintf(stderr, "quant:%u n %zu bucket %u isa %d: payload differs\n",
                                bits, n, buckets[bi], isa);
                    }
                    CU_ASSERT(memcmp(got, ref, bytes) == 0);
                    TERSE_TEST_OK(qt_decompress(q, got, bytes, dout, n));
                    CU_ASSERT(memcmp(dout, dref, n * sizeof(float)) == 0);
                    free(got);
                }
                terse__quant_isa_max = TERSE_QUANT_ISA_AVX512;
                for (i = 0; i < n; ++i) {
                    CU_ASSERT(fabsf(dref[i] - x[i]) <= 8.0f / (float)((1u << bits) - 1u));
                }
                free(ref);
                free(x);
                free(dref);
                free(dout);
                q.ops->destroy(q.ctx);
            }
        }
    }
}

/* Mean of the decoded value over many independent streams is the input (6 sigma). */
static void
test_quant_unbiased(void)
{
    static const unsigned widths[] = {2, 3, 4, 8};
    const size_t n = 64, draws = 3000;
    float x[64], d[64];
    double sum[64];
    size_t w, t, i;

    terse_test_gaussian(5, x, n);
    x[0] = 0.0f; /* a value exactly on the grid, and the bucket's extremes, are included */
    for (w = 0; w < 4; ++w) {
        unsigned bits = widths[w];
        qt_t q        = qt_make("quant", bits, n, 64);
        float lo = x[0], hi = x[0], unit;
        double worst = 0.0;

        for (i = 0; i < n; ++i) {
            lo     = fminf(lo, x[i]);
            hi     = fmaxf(hi, x[i]);
            sum[i] = 0.0;
        }
        unit = (hi - lo) / (float)((1u << bits) - 1u);
        for (t = 0; t < draws; ++t) {
            terse_rng_t rng  = terse_rng_make(77, TERSE_RNG_QUANT, 0, (uint32_t)t, 0);
            uint8_t *payload = qt_compress(q, x, n, NULL, &rng, NULL, NULL);
            TERSE_TEST_OK(qt_decompress(q, payload, qt_bytes(q, n), d, n));
            for (i = 0; i < n; ++i) {
                sum[i] += d[i];
            }
            free(payload);
        }
        for (i = 0; i < n; ++i) {
            /* per draw: a two-point variable one unit wide, sd <= unit / 2 */
            double sd  = 0.5 * unit / sqrt((double)draws);
            double err = fabs(sum[i] / (double)draws - (double)x[i]);
            worst      = fmax(worst, err / sd);
            CU_ASSERT(err <= 6.0 * sd + 1e-5 * unit);
        }
        if (terse_test_verbose()) {
            printf("quant:%u worst bias %.2f sigma\n", bits, worst);
        }
        q.ops->destroy(q.ctx);
    }
}

/* sq_err is the error actually made, and the residual is exactly v - decoded. */
static void
test_quant_sq_err(const char *family, double param)
{
    const size_t n = 10007;
    float *x = malloc(n * 4), *r = malloc(n * 4), *r0 = malloc(n * 4), *d = malloc(n * 4);
    qt_t q   = qt_make(family, param, n, 0);
    terse_rng_t rng = terse_rng_make(3, TERSE_RNG_QUANT, 1, 2, 3);
    double sq, ref = 0.0, ref0 = 0.0;
    uint32_t flags;
    uint8_t *payload;
    size_t i;
    int exact = 1;

    terse_test_gaussian(21, x, n);
    terse_test_gaussian(22, r, n);
    for (i = 0; i < n; ++i) {
        r[i] *= 0.1f;
        r0[i] = r[i];
    }
    payload = qt_compress(q, x, n, r, &rng, &flags, &sq);
    CU_ASSERT_EQUAL(flags, 0);
    TERSE_TEST_OK(qt_decompress(q, payload, qt_bytes(q, n), d, n));
    for (i = 0; i < n; ++i) {
        float v  = x[i] + r0[i];
        double e = (double)v - (double)d[i];
        ref += e * e;
        ref0 += (double)v * (double)v;
        exact &= (r[i] == v - d[i]);
    }
    CU_ASSERT(exact);
    TERSE_TEST_NEAR(sq, ref, 1e-9 * ref);
    CU_ASSERT(ref > 0.0);
    CU_ASSERT(ref < ref0); /* it did compress something meaningful */
    free(payload);
    /* without residual the input alone is compressed */
    payload = qt_compress(q, x, n, NULL, &rng, &flags, &sq);
    TERSE_TEST_OK(qt_decompress(q, payload, qt_bytes(q, n), d, n));
    TERSE_TEST_NEAR(sq, terse_test_sq_diff(x, d, n), 1e-9 * sq);
    free(payload);
    q.ops->destroy(q.ctx);
    free(x);
    free(r);
    free(r0);
    free(d);
}

static void
test_quant_sq_err_all(void)
{
    test_quant_sq_err("quant", 2);
    test_quant_sq_err("quant", 4);
    test_quant_sq_err("quant", 8);
    test_quant_sq_err("sign", 0);
}

static void
test_quant_payload_size(void)
{
    static const size_t sizes[] = {0, 1, 31, 32, 33, 511, 512, 513, 1000, 4103};
    static const uint32_t buckets[] = {32, 512, 1024};
    size_t si, bi, k;
    unsigned bits;

    for (bits = 1; bits <= 8; ++bits) {
        for (bi = 0; bi < 3; ++bi) {
            for (si = 0; si < sizeof(sizes) / sizeof(sizes[0]); ++si) {
                size_t n = sizes[si], bucket = buckets[bi], want = 24, got = 0;
                qt_t q   = (bits == 1) ? qt_make("sign", 0, 5000, bucket)
                                       : qt_make("quant", bits, 5000, bucket);
                for (k = 0; k * bucket < n; ++k) {
                    size_t m = (n - k * bucket < bucket) ? n - k * bucket : bucket;
                    want += ((bits == 1) ? 4 : 8) + (m * bits + 7) / 8;
                }
                TERSE_TEST_OK(q.ops->payload_size(q.ctx, n, 0, &got));
                CU_ASSERT_EQUAL(got, want);
                TERSE_TEST_STATUS(q.ops->payload_size(q.ctx, n, 1, &got), TERSE_ERR_INVALID);
                TERSE_TEST_STATUS(q.ops->payload_size(q.ctx, 5001, 0, &got), TERSE_ERR_INVALID);
                q.ops->destroy(q.ctx);
            }
        }
    }
}

/* compress refuses a wrong output size; create refuses bad parameters. */
static void
test_quant_bad_args(void)
{
    terse_cmp_params_t p;
    float x[64] = {0};
    uint8_t out[512];
    terse_buf_t in = {x, 64, TERSE_FLOAT32, TERSE_MEM_HOST};
    terse_rng_t rng = terse_rng_make(1, 1, 1, 1, 1);
    qt_t q          = qt_make("quant", 4, 64, 32);
    size_t bytes    = qt_bytes(q, 64);
    uint32_t flags;
    void *ctx;
    double par;

    TERSE_TEST_STATUS(q.ops->compress(q.ctx, &in, NULL, &rng, out, bytes - 1, &flags, NULL, NULL),
                      TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(q.ops->compress(q.ctx, &in, NULL, &rng, out, bytes + 1, &flags, NULL, NULL),
                      TERSE_ERR_INVALID);
    in.dtype = TERSE_FLOAT64;
    TERSE_TEST_STATUS(q.ops->compress(q.ctx, &in, NULL, &rng, out, bytes, &flags, NULL, NULL),
                      TERSE_ERR_INVALID);
    q.ops->destroy(q.ctx);

    memset(&p, 0, sizeof(p));
    p.size  = sizeof(p);
    p.count = 64;
    p.param = 4;
    p.bucket = 48; /* not a multiple of 32 */
    TERSE_TEST_STATUS(q.ops->create(&p, &ctx), TERSE_ERR_INVALID);
    p.bucket = 0; /* TERSE_QUANT_BUCKET */
    p.param  = 9;
    TERSE_TEST_STATUS(q.ops->create(&p, &ctx), TERSE_ERR_INVALID);
    p.param = 2.5;
    TERSE_TEST_STATUS(q.ops->create(&p, &ctx), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(q.ops->param_parse("1", &par), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(q.ops->param_parse("4x", &par), TERSE_ERR_INVALID);
    TERSE_TEST_STATUS(q.ops->param_parse(NULL, &par), TERSE_ERR_INVALID);
    TERSE_TEST_OK(q.ops->param_parse("6", &par));
    CU_ASSERT_EQUAL(par, 6.0);
}

/* With error feedback, what was delivered over 50 steps tracks what was fed in: the gap is
 * the last residual (one step's error), while without feedback it keeps growing. */
static void
test_feedback_family(const char *family, double param, double min_gain)
{
    size_t rows, cols, n, i, t;
    float *g0 = terse_test_load_named_gradient("head.weight", 300, &rows, &cols);
    float *g1 = terse_test_load_named_gradient("head.weight", 301, &rows, &cols);
    float *res, *d, *dn;
    double *sin, *sout, *soutn, gap = 0.0, gapn = 0.0, sq = 0.0, norm = 0.0;
    qt_t q;
    int ef;

    CU_ASSERT_FATAL((g0 != NULL) && (g1 != NULL));
    n     = rows * cols;
    q     = qt_make(family, param, n, 0);
    res   = calloc(n, sizeof(float));
    d     = malloc(n * sizeof(float));
    dn    = malloc(n * sizeof(float));
    sin   = calloc(n, sizeof(double));
    sout  = calloc(n, sizeof(double));
    soutn = calloc(n, sizeof(double));
    for (t = 0; t < 50; ++t) {
        const float *g = (t % 2) ? g1 : g0;
        for (ef = 0; ef < 2; ++ef) {
            terse_rng_t rng  = terse_rng_make(9, TERSE_RNG_QUANT, 0, (uint32_t)t, 0);
            uint8_t *payload = qt_compress(q, g, n, ef ? res : NULL, &rng, NULL, ef ? &sq : NULL);
            TERSE_TEST_OK(qt_decompress(q, payload, qt_bytes(q, n), ef ? d : dn, n));
            free(payload);
        }
        for (i = 0; i < n; ++i) {
            sin[i] += g[i];
            sout[i] += d[i];
            soutn[i] += dn[i];
        }
    }
    for (i = 0; i < n; ++i) {
        gap += (sin[i] - sout[i]) * (sin[i] - sout[i]);
        gapn += (sin[i] - soutn[i]) * (sin[i] - soutn[i]);
        norm += sin[i] * sin[i];
    }
    gap  = sqrt(gap);
    gapn = sqrt(gapn);
    if (terse_test_verbose()) {
        printf("%s:%g gap with feedback %.3g (last step error %.3g), without %.3g, |sum| %.3g\n",
               family, param, gap, sqrt(sq), gapn, sqrt(norm));
    }
    /* the gap is exactly the residual left after the last step (up to float rounding) */
    TERSE_TEST_NEAR(gap, sqrt(terse_test_sq_norm(res, n)), 1e-3 * gap + 1e-12);
    TERSE_TEST_NEAR(gap, sqrt(sq), 0.02 * sqrt(sq) + 1e-12);
    CU_ASSERT(gap * min_gain < gapn);
    CU_ASSERT(gap < 0.5 * sqrt(norm));
    free(g0);
    free(g1);
    free(res);
    free(d);
    free(dn);
    free(sin);
    free(sout);
    free(soutn);
    q.ops->destroy(q.ctx);
}

static void
test_quant_feedback(void)
{
    test_feedback_family("quant", 2, 3.0);
    test_feedback_family("quant", 4, 3.0);
}

/* Inf or NaN anywhere: flag, residual reset, a well-formed payload that decodes to NaN. */
static void
test_nonfinite_family(const char *family, double param)
{
    static const float bad[] = {NAN, INFINITY, -INFINITY};
    const size_t n = 2000;
    float *x = malloc(n * 4), *r = malloc(n * 4), *d = malloc(n * 4);
    size_t b, i, pos;
    qt_t q = qt_make(family, param, n, 512);

    for (b = 0; b < 4; ++b) {
        for (pos = 0; pos < n; pos += 699) {
            terse_rng_t rng = terse_rng_make(1, TERSE_RNG_QUANT, 0, 0, 0);
            uint32_t flags, f2 = 0;
            double sq;
            uint8_t *payload;
            int all_nan = 1, zero = 1;

            terse_test_gaussian(pos, x, n);
            for (i = 0; i < n; ++i) {
                r[i] = 0.25f;
            }
            if (b < 3) {
                x[pos] = bad[b];
            } else {
                x[pos]     = 3e38f; /* finite, but the bucket's range overflows */
                x[pos ^ 1] = -3e38f;
            }
            payload = qt_compress(q, x, n, r, &rng, &flags, &sq);
            CU_ASSERT_EQUAL(flags, TERSE_CMP_NONFINITE);
            CU_ASSERT(!(sq < INFINITY));
            for (i = 0; i < n; ++i) {
                zero &= (r[i] == 0.0f);
                d[i] = 1.0f;
            }
            CU_ASSERT(zero);
            TERSE_TEST_OK(qt_decompress(q, payload, qt_bytes(q, n), d, n));
            for (i = 0; i < n; ++i) {
                all_nan &= isnan(d[i]);
                d[i] = 1.0f;
            }
            CU_ASSERT(all_nan);
            TERSE_TEST_OK(q.ops->decompress_add(q.ctx, payload, qt_bytes(q, n), d, n, &f2, NULL));
            CU_ASSERT_EQUAL(f2, TERSE_CMP_NONFINITE);
            for (i = 0; i < n; ++i) {
                all_nan &= isnan(d[i]);
            }
            CU_ASSERT(all_nan);
            free(payload);
        }
    }
    q.ops->destroy(q.ctx);
    free(x);
    free(r);
    free(d);
}

static void
test_quant_nonfinite(void)
{
    test_nonfinite_family("quant", 4);
    test_nonfinite_family("quant", 2);
    test_nonfinite_family("sign", 0);
}

/* A constant bucket (max == min) is exact, including all zeros and a single value. */
static void
test_quant_constant(void)
{
    float x[100], d[100];
    size_t i;
    qt_t q = qt_make("quant", 3, 100, 32);
    terse_rng_t rng = terse_rng_make(1, 1, 1, 1, 1);
    uint8_t *payload;
    double sq;

    for (i = 0; i < 100; ++i) {
        x[i] = (i < 64) ? 0.0f : -2.5f;
    }
    x[99] = 1e-40f; /* a subnormal step in the last bucket */
    payload = qt_compress(q, x, 100, NULL, &rng, NULL, &sq);
    TERSE_TEST_OK(qt_decompress(q, payload, qt_bytes(q, 100), d, 100));
    for (i = 0; i < 96; ++i) {
        CU_ASSERT_EQUAL(d[i], x[i]);
    }
    CU_ASSERT(sq < 1e-70);
    free(payload);
    q.ops->destroy(q.ctx);
}

/* ---------------------------------------------------------------- bad payloads */
static const char *const robust_specs[][2] = {{"quant", "2"}, {"quant", "4"}, {"quant", "7"},
                                              {"sign", ""}};

static qt_t
qt_from_spec(size_t i, size_t n, uint32_t bucket)
{
    double param = (robust_specs[i][1][0] != '\0') ? atof(robust_specs[i][1]) : 0.0;
    return qt_make(robust_specs[i][0], param, n, bucket);
}

/* Decodes `payload` placed at the end of a guarded buffer of `bytes`, into a guarded output
 * of n floats; both through decompress and decompress_add. Returns the first status. */
static terse_status_t
qt_guarded_decode(qt_t q, const uint8_t *payload, size_t bytes, size_t n, size_t out_n)
{
    uint8_t *in = terse_test_guarded_alloc(bytes);
    /* ends exactly at the guard page; float-aligned since pages are */
    float *out = terse_test_guarded_alloc(out_n * sizeof(float));
    terse_status_t s1, s2;
    uint32_t flags;

    (void)n;
    memcpy(in, payload, bytes);
    memset(out, 0, out_n * sizeof(float));
    s1 = qt_decompress(q, in, bytes, out, out_n);
    s2 = q.ops->decompress_add(q.ctx, in, bytes, out, out_n, &flags, NULL);
    CU_ASSERT_EQUAL(s1, s2);
    terse_test_guarded_free(out, out_n * sizeof(float));
    terse_test_guarded_free(in, bytes);
    return s1;
}

static void
test_quant_reject(void)
{
    const size_t n = 1000;
    float x[1000];
    size_t si, k, bit, t;

    terse_test_gaussian(8, x, n);
    for (si = 0; si < sizeof(robust_specs) / sizeof(robust_specs[0]); ++si) {
        qt_t q          = qt_from_spec(si, n, 256);
        qt_t other      = qt_from_spec((si + 1) % 4, n, 256);
        qt_t other_b    = qt_from_spec(si, n, 512);
        terse_rng_t rng = terse_rng_make(2, 1, 0, 0, 0);
        size_t bytes    = qt_bytes(q, n);
        uint8_t *good   = qt_compress(q, x, n, NULL, &rng, NULL, NULL);
        uint8_t *bad    = malloc(bytes + 64);
        size_t nb       = (n + 255) / 256;
        size_t sbytes   = (strcmp(robust_specs[si][0], "sign") == 0) ? 4 : 8;
        float f;

        TERSE_TEST_OK(qt_guarded_decode(q, good, bytes, n, n));
        /* truncated and oversized */
        for (k = 0; k < bytes; k += 37) {
            TERSE_TEST_STATUS(qt_guarded_decode(q, good, k, n, n), TERSE_ERR_PAYLOAD);
        }
        TERSE_TEST_STATUS(qt_guarded_decode(q, good, bytes - 1, n, n), TERSE_ERR_PAYLOAD);
        memcpy(bad, good, bytes);
        memset(bad + bytes, 0, 64);
        TERSE_TEST_STATUS(qt_guarded_decode(q, bad, bytes + 1, n, n), TERSE_ERR_PAYLOAD);
        TERSE_TEST_STATUS(qt_guarded_decode(q, bad, bytes + 64, n, n), TERSE_ERR_PAYLOAD);
        /* the output count must match the header's */
        TERSE_TEST_STATUS(qt_guarded_decode(q, good, bytes, n, n - 1), TERSE_ERR_PAYLOAD);
        TERSE_TEST_STATUS(qt_guarded_decode(q, good, bytes, n, 999), TERSE_ERR_PAYLOAD);
        /* every single-bit flip of the header is caught */
        for (bit = 0; bit < 24 * 8; ++bit) {
            memcpy(bad, good, bytes);
            bad[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            TERSE_TEST_STATUS(qt_guarded_decode(q, bad, bytes, n, n), TERSE_ERR_PAYLOAD);
        }
        /* a payload of another family/width, or another bucket size */
        TERSE_TEST_STATUS(qt_guarded_decode(other, good, bytes, n, n), TERSE_ERR_PAYLOAD);
        TERSE_TEST_STATUS(qt_guarded_decode(other_b, good, bytes, n, n), TERSE_ERR_PAYLOAD);
        /* non-finite or negative scales */
        for (k = 0; k < nb; ++k) {
            static const float bads[] = {NAN, INFINITY, -INFINITY, -1.0f, 3e38f};
            for (t = 0; t < 5; ++t) {
                size_t field = (sbytes == 8) ? 4 : 0; /* quant: the unit; sign: the scale */
                if ((t == 4) && (sbytes == 4)) {
                    continue; /* a big sign scale is valid */
                }
                memcpy(bad, good, bytes);
                f = bads[t];
                memcpy(bad + 24 + k * sbytes + field, &f, 4);
                TERSE_TEST_STATUS(qt_guarded_decode(q, bad, bytes, n, n), TERSE_ERR_PAYLOAD);
                if (sbytes == 8) {
                    memcpy(bad, good, bytes);
                    memcpy(bad + 24 + k * sbytes, &f, 4); /* lo */
                    if (t < 3) {
                        TERSE_TEST_STATUS(qt_guarded_decode(q, bad, bytes, n, n),
                                          TERSE_ERR_PAYLOAD);
                    }
                }
            }
        }
        /* random payloads: rejected (the header never matches by chance) */
        for (t = 0; t < 50; ++t) {
            for (k = 0; k < bytes; ++k) {
                bad[k] = (uint8_t)(terse_test_uniform(t, k) * 256.0);
            }
            TERSE_TEST_STATUS(qt_guarded_decode(q, bad, bytes, n, n), TERSE_ERR_PAYLOAD);
            /* with a valid header and a random body: accepted or rejected, never out of
             * bounds (the guard pages would fault) */
            memcpy(bad, good, 24);
            {
                terse_status_t s = qt_guarded_decode(q, bad, bytes, n, n);
                CU_ASSERT((s == TERSE_OK) || (s == TERSE_ERR_PAYLOAD));
            }
        }
        free(good);
        free(bad);
        q.ops->destroy(q.ctx);
        other.ops->destroy(other.ctx);
        other_b.ops->destroy(other_b.ctx);
    }
}

/* Sizes 0, 1 and odd, with unaligned (one float off) input, residual and output. */
static void
test_quant_sizes(void)
{
    static const size_t sizes[] = {0, 1, 2, 3, 31, 33, 65, 1001};
    size_t si, zi, i;

    for (si = 0; si < sizeof(robust_specs) / sizeof(robust_specs[0]); ++si) {
        for (zi = 0; zi < sizeof(sizes) / sizeof(sizes[0]); ++zi) {
            size_t n        = sizes[zi];
            qt_t q          = qt_from_spec(si, 2000, 32);
            terse_rng_t rng = terse_rng_make(4, 1, 2, 3, 4);
            float *xa = malloc((n + 1) * 4), *ra = malloc((n + 1) * 4), *da = malloc((n + 1) * 4);
            float *xu = malloc((n + 2) * 4), *ru = malloc((n + 2) * 4), *du = malloc((n + 2) * 4);
            size_t bytes = qt_bytes(q, n);
            uint8_t *pa = malloc(bytes + 1), *pu = malloc(bytes + 1);
            terse_buf_t ina = {xa, n, TERSE_FLOAT32, TERSE_MEM_HOST};
            terse_buf_t inu = {xu + 1, n, TERSE_FLOAT32, TERSE_MEM_HOST};
            terse_buf_t outa = {da, n, TERSE_FLOAT32, TERSE_MEM_HOST};
            terse_buf_t outu = {du + 1, n, TERSE_FLOAT32, TERSE_MEM_HOST};
            uint32_t fa = 1, fu = 1;
            double sqa = -1, squ = -1;
            int same = 1;

            terse_test_gaussian(n, xa, n);
            for (i = 0; i < n; ++i) {
                xu[i + 1] = xa[i];
                ra[i] = ru[i + 1] = 0.01f * (float)i;
            }
            TERSE_TEST_OK(q.ops->compress(q.ctx, &ina, ra, &rng, pa, bytes, &fa, &sqa, NULL));
            /* unaligned payload too: one byte off */
            TERSE_TEST_OK(q.ops->compress(q.ctx, &inu, ru + 1, &rng, pu + 1, bytes, &fu, &squ,
                                          NULL));
            CU_ASSERT_EQUAL(fa, 0);
            CU_ASSERT_EQUAL(fu, 0);
            CU_ASSERT(memcmp(pa, pu + 1, bytes) == 0);
            CU_ASSERT_EQUAL(sqa, squ);
            TERSE_TEST_OK(q.ops->decompress(q.ctx, pa, bytes, 1.0f, &outa, NULL));
            TERSE_TEST_OK(q.ops->decompress(q.ctx, pu + 1, bytes, 1.0f, &outu, NULL));
            for (i = 0; i < n; ++i) {
                same &= (da[i] == du[i + 1]) && (ra[i] == ru[i + 1]);
                same &= (ra[i] == (xa[i] + 0.01f * (float)i) - da[i]);
            }
            CU_ASSERT(same);
            if (n == 0) {
                CU_ASSERT_EQUAL(bytes, TERSE_QUANT_HDR_BYTES); /* count 0: header only */
                CU_ASSERT_EQUAL(sqa, 0.0);
            }
            free(xa);
            free(ra);
            free(da);
            free(xu);
            free(ru);
            free(du);
            free(pa);
            free(pu);
            q.ops->destroy(q.ctx);
        }
    }
}

/* fp16/bf16 input compress like their fp32 values; fp16/bf16 output is the converted
 * fp32 output times scale; decompress_add adds. */
static void
test_quant_dtypes(void)
{
    const size_t n = 777;
    static const terse_dtype_t dts[] = {TERSE_FLOAT16, TERSE_BFLOAT16};
    float x[777], xf[777], d[777], acc[777], sc[777];
    uint16_t h[777], ho[777];
    size_t si, di, i;

    terse_test_gaussian(12, x, n);
    for (si = 0; si < sizeof(robust_specs) / sizeof(robust_specs[0]); ++si) {
        qt_t q          = qt_from_spec(si, n, 64);
        terse_rng_t rng = terse_rng_make(4, 1, 2, 3, 4);
        size_t bytes    = qt_bytes(q, n);
        uint8_t *p16    = malloc(bytes), *p32;
        uint32_t flags;

        for (di = 0; di < 2; ++di) {
            terse_buf_t in  = {h, n, dts[di], TERSE_MEM_HOST};
            terse_buf_t out = {ho, n, dts[di], TERSE_MEM_HOST};
            int ok = 1;

            terse__convert_from_f32(x, 1.0f, h, dts[di], n);
            terse__convert_to_f32(h, dts[di], xf, n);
            TERSE_TEST_OK(q.ops->compress(q.ctx, &in, NULL, &rng, p16, bytes, &flags, NULL, NULL));
            p32 = qt_compress(q, xf, n, NULL, &rng, NULL, NULL);
            CU_ASSERT(memcmp(p16, p32, bytes) == 0);
            TERSE_TEST_OK(qt_decompress(q, p32, bytes, d, n));
            TERSE_TEST_OK(q.ops->decompress(q.ctx, p32, bytes, 0.5f, &out, NULL));
            terse__convert_from_f32(d, 0.5f, sc, dts[di], n); /* reference: d * 0.5 rounded */
            CU_ASSERT(memcmp(ho, sc, n * 2) == 0);
            for (i = 0; i < n; ++i) {
                acc[i] = 1.0f;
            }
            TERSE_TEST_OK(q.ops->decompress_add(q.ctx, p32, bytes, acc, n, &flags, NULL));
            for (i = 0; i < n; ++i) {
                ok &= (acc[i] == 1.0f + d[i]);
            }
            CU_ASSERT(ok);
            free(p32);
        }
        free(p16);
        q.ops->destroy(q.ctx);
    }
}

/* A sub-range compress (rng offset) gives the same scales, codes and residual as the whole
 * compress for those elements when the range starts on a bucket boundary. */
static void
test_quant_range(void)
{
    const size_t n = 4096, off = 1024, len = 1536;
    float x[4096], rw[4096], rr[1536], dw[4096], dr[1536];
    size_t si, i;

    terse_test_gaussian(13, x, n);
    for (si = 0; si < sizeof(robust_specs) / sizeof(robust_specs[0]); ++si) {
        qt_t q           = qt_from_spec(si, n, 512);
        terse_rng_t rng  = terse_rng_make(6, 1, 2, 3, 4);
        terse_rng_t sub  = terse_rng_advance(rng, off);
        uint8_t *pw, *pr;
        int same = 1;

        CU_ASSERT_EQUAL(sub.offset, off);
        for (i = 0; i < n; ++i) {
            rw[i] = 0.001f * (float)(i % 17);
        }
        memcpy(rr, rw + off, len * 4);
        pw = qt_compress(q, x, n, rw, &rng, NULL, NULL);
        pr = qt_compress(q, x + off, len, rr, &sub, NULL, NULL);
        TERSE_TEST_OK(qt_decompress(q, pw, qt_bytes(q, n), dw, n));
        TERSE_TEST_OK(qt_decompress(q, pr, qt_bytes(q, len), dr, len));
        for (i = 0; i < len; ++i) {
            same &= (dw[off + i] == dr[i]) && (rw[off + i] == rr[i]);
        }
        CU_ASSERT(same);
        free(pw);
        free(pr);
        q.ops->destroy(q.ctx);
    }
}

static CU_TestInfo quant_tests[] = {
    {"reference (bit-exact, every ISA)", test_quant_reference},
    {"unbiased", test_quant_unbiased},
    {"sq_err and residual", test_quant_sq_err_all},
    {"payload size", test_quant_payload_size},
    {"bad arguments", test_quant_bad_args},
    {"constant buckets", test_quant_constant},
    {"error feedback on real gradients", test_quant_feedback},
    {"non-finite input", test_quant_nonfinite},
    {"bad payloads rejected in bounds", test_quant_reject},
    {"sizes and alignment", test_quant_sizes},
    {"fp16 and bf16", test_quant_dtypes},
    {"sub-range compress", test_quant_range},
    CU_TEST_INFO_NULL,
};

CU_SuiteInfo test_quant_suites[] = {
    {"compressors/quant", NULL, NULL, NULL, NULL, quant_tests},
    CU_SUITE_INFO_NULL,
};
