/*
 * cast: bf16 (or pre-scaled, saturated fp16) payloads summed by the native allreduce. The
 * exact arithmetic and the parameter encoding are defined in cast.h.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cast.h"
#include "quant.h" /* terse__quant_load, TERSE_QUANT_CHUNK, TERSE_QUANT_INLINE */
/* Device hooks; the MPI shim's copy of this file (TERSE_CMP_HOST_ONLY) has none. */
#if TERSE_HAVE_CUDA && !defined(TERSE_CMP_HOST_ONLY)
#define CMP_CAST_CUDA 1
#include "cast_cuda.h"
#define CMP_CAST_CAP_CUDA TERSE_CMP_CAP_CUDA
#else
#define CMP_CAST_CUDA 0
#define CMP_CAST_CAP_CUDA 0
#endif

#if TERSE_QUANT_MULTIVERSION
#include <immintrin.h>
#endif

typedef struct cmp_cast {
    int    kind;   /* TERSE_CAST_BF16 or TERSE_CAST_FP16 */
    int    nranks;
    size_t count;
    float  inv_p;  /* fp16: 1 / p */
    float  fp;     /* fp16: (float)p */
    float  clip;   /* fp16: saturation bound */
    void  *cuda;   /* device state (cast_cuda.h) of a TERSE_MEM_CUDA instance, else NULL */
} cmp_cast_t;

terse_dtype_t
terse__cast_sum_dtype(double param)
{
    return (param == TERSE_CAST_FP16) ? TERSE_FLOAT16 : TERSE_BFLOAT16;
}

float
terse__cast_fp16_clip(int nranks)
{
    double limit;
    uint16_t h;

    if (nranks <= 1) {
        return 65504.0f;
    }
    limit = 65504.0 / ((double)nranks * pow(1.0 + 1.0 / 2048.0, (double)nranks));
    h     = terse__float_to_half((float)limit);
    while ((h > 0) && ((double)terse__half_to_float(h) > limit)) {
        --h; /* positive halves are ordered like their bit patterns */
    }
    return terse__half_to_float(h);
}

#if TERSE_QUANT_MULTIVERSION
/* fp16 <-> fp32 with F16C: IEEE round to nearest even, the same bits as terse__float_to_half
 * for every non-NaN input (NaN only reaches a payload that the non-finite path overwrites). */
__attribute__((target("avx2,f16c"))) static void
cast_to_half_f16c(const float *w, size_t m, uint16_t *out)
{
    size_t i;

    for (i = 0; i + 8 <= m; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(w + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(void *)(out + i), h);
    }
    for (; i < m; ++i) {
        out[i] = terse__float_to_half(w[i]);
    }
}

__attribute__((target("avx2,f16c"))) static void
cast_from_half_f16c(const uint16_t *h, size_t m, float *out)
{
    size_t i;

    for (i = 0; i + 8 <= m; i += 8) {
        __m128i x = _mm_loadu_si128((const __m128i *)(const void *)(h + i));
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(x));
    }
    for (; i < m; ++i) {
        out[i] = terse__half_to_float(h[i]);
    }
}
#endif

static int
cast_use_f16c(void)
{
#if TERSE_QUANT_MULTIVERSION
    return (terse__quant_isa() >= TERSE_QUANT_ISA_AVX2) && __builtin_cpu_supports("f16c");
#else
    return 0;
#endif
}

static void
cast_to_half(const float *w, size_t m, uint16_t *out, int f16c)
{
    size_t i;

#if TERSE_QUANT_MULTIVERSION
    if (f16c) {
        cast_to_half_f16c(w, m, out);
        return;
    }
#endif
    (void)f16c;
    for (i = 0; i < m; ++i) {
        out[i] = terse__float_to_half(w[i]);
    }
}

static void
cast_from_half(const uint16_t *h, size_t m, float *out, int f16c)
{
    size_t i;

#if TERSE_QUANT_MULTIVERSION
    if (f16c) {
        cast_from_half_f16c(h, m, out);
        return;
    }
#endif
    (void)f16c;
    for (i = 0; i < m; ++i) {
        out[i] = terse__half_to_float(h[i]);
    }
}

/* One chunk: payload, residual, squared-error lanes, finiteness probe. */
TERSE_QUANT_INLINE void
cast_chunk(const cmp_cast_t *cs, const float *v, size_t m, uint16_t *out, float *residual,
           double *acc, float *probe, int f16c)
{
    float own[TERSE_QUANT_CHUNK];
    double a[8];
    size_t i, l;

    if (cs->kind == TERSE_CAST_BF16) {
        for (i = 0; i < m; ++i) {
            out[i] = terse_float_to_bf16(v[i]);
            own[i] = terse_bf16_to_float(out[i]);
        }
    } else {
        const float clip = cs->clip, inv_p = cs->inv_p, fp = cs->fp;
        for (i = 0; i < m; ++i) {
            float w = v[i] * inv_p;
            w       = (w < clip) ? w : clip;
            w       = (w > -clip) ? w : -clip;
            own[i]  = w;
        }
        cast_to_half(own, m, out, f16c);
        cast_from_half(out, m, own, f16c);
        for (i = 0; i < m; ++i) {
            own[i] = own[i] * fp;
        }
    }
    for (i = 0; i < m; ++i) {
        probe[i % 8] = probe[i % 8] + v[i] * 0.0f;
    }
    if (residual != NULL) {
        for (i = 0; i < m; ++i) {
            residual[i] = v[i] - own[i];
        }
    }
    for (l = 0; l < 8; ++l) {
        a[l] = acc[l];
    }
    for (i = 0; i + 8 <= m; i += 8) {
        for (l = 0; l < 8; ++l) {
            double e = (double)v[i + l] - (double)own[i + l];
            a[l]     = a[l] + e * e;
        }
    }
    for (; i < m; ++i) {
        double e = (double)v[i] - (double)own[i];
        a[i % 8] = a[i % 8] + e * e;
    }
    for (l = 0; l < 8; ++l) {
        acc[l] = a[l];
    }
}

/* The whole payload; returns 1 when every value was finite. */
TERSE_QUANT_INLINE int
cast_compress_body(const cmp_cast_t *cs, const terse_buf_t *in, float *residual, uint8_t *o,
                   double *sq_err_p, int f16c)
{
    float v[TERSE_QUANT_CHUNK], probe[8];
    uint16_t h[TERSE_QUANT_CHUNK];
    double acc[8];
    size_t n = in->count, c, l;

    for (l = 0; l < 8; ++l) {
        probe[l] = 0.0f;
        acc[l]   = 0.0;
    }
    for (c = 0; c < n; c += TERSE_QUANT_CHUNK) {
        size_t mc = TERSE_MIN((size_t)TERSE_QUANT_CHUNK, n - c);
        terse__quant_load(in, c, mc, (residual != NULL) ? residual + c : NULL, v);
        cast_chunk(cs, v, mc, h, (residual != NULL) ? residual + c : NULL, acc, probe, f16c);
        memcpy(o + c * 2, h, mc * 2); /* the payload need not be aligned */
    }
    for (l = 1; l < 8; ++l) {
        probe[0] = probe[0] + probe[l];
    }
    if (sq_err_p != NULL) {
        *sq_err_p = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
    return probe[0] == 0.0f;
}

#define CAST_VERSIONS(_suffix, _attr)                                                          \
    _attr static int cast_compress_##_suffix(const cmp_cast_t *cs, const terse_buf_t *in,     \
                                             float *residual, uint8_t *o, double *sq_err_p,    \
                                             int f16c)                                         \
    {                                                                                          \
        return cast_compress_body(cs, in, residual, o, sq_err_p, f16c);                       \
    }

CAST_VERSIONS(base, )
#if TERSE_QUANT_MULTIVERSION
CAST_VERSIONS(avx2, TERSE_QUANT_TARGET_AVX2)
CAST_VERSIONS(avx512, TERSE_QUANT_TARGET_AVX512)
#endif

static int
cast_compress_kernel(const cmp_cast_t *cs, const terse_buf_t *in, float *residual, uint8_t *o,
                     double *sq_err_p)
{
    int f16c = cast_use_f16c();

#if TERSE_QUANT_MULTIVERSION
    switch (terse__quant_isa()) {
    case TERSE_QUANT_ISA_AVX512:
        return cast_compress_avx512(cs, in, residual, o, sq_err_p, f16c);
    case TERSE_QUANT_ISA_AVX2:
        return cast_compress_avx2(cs, in, residual, o, sq_err_p, f16c);
    default:
        break;
    }
#endif
    return cast_compress_base(cs, in, residual, o, sq_err_p, f16c);
}

/* ---------------------------------------------------------------- ops */
static terse_status_t
cmp_cast_param_parse(const char *text, double *param_p)
{
    if ((text == NULL) || (text[0] == '\0') || (strcmp(text, "bf16") == 0) ||
        (strcmp(text, "0") == 0)) {
        *param_p = TERSE_CAST_BF16;
        return TERSE_OK;
    }
    if ((strcmp(text, "fp16") == 0) || (strcmp(text, "1") == 0)) {
        *param_p = TERSE_CAST_FP16;
        return TERSE_OK;
    }
    return TERSE_ERR_INVALID;
}

static terse_status_t
cmp_cast_create(const terse_cmp_params_t *params, void **ctx_p)
{
    cmp_cast_t *cs;

    TERSE_CHECK(terse__cmp_check_mem("cast", params->mem));
    if ((params->param != TERSE_CAST_BF16) && (params->param != TERSE_CAST_FP16)) {
        terse_error(TERSE_LOG_CMP, "cast: parameter %g is neither 0 (bf16) nor 1 (fp16)",
                    params->param);
        return TERSE_ERR_INVALID;
    }
    cs = calloc(1, sizeof(*cs));
    if (cs == NULL) {
        terse_error(TERSE_LOG_CMP, "failed to allocate cast context");
        return TERSE_ERR_NOMEM;
    }
    cs->kind   = (int)params->param;
    cs->nranks = TERSE_MAX(params->nranks, 1);
    cs->count  = params->count;
    cs->fp     = (float)cs->nranks;
    cs->inv_p  = 1.0f / cs->fp;
    cs->clip   = terse__cast_fp16_clip(cs->nranks);
#if CMP_CAST_CUDA
    if (params->mem == TERSE_MEM_CUDA) {
        terse_status_t st = terse__cmp_cast_cuda_create(cs->kind, cs->nranks, &cs->cuda);
        if (st != TERSE_OK) {
            free(cs);
            return st;
        }
    }
#endif
    *ctx_p     = cs;
    return TERSE_OK;
}

static terse_status_t
cmp_cast_payload_size(void *ctx, size_t n, unsigned stage, size_t *bytes_p)
{
    cmp_cast_t *cs = ctx;

    if ((stage != 0) || (n > cs->count)) {
        return TERSE_ERR_INVALID;
    }
    *bytes_p = n * sizeof(uint16_t);
    return TERSE_OK;
}

static unsigned
cmp_cast_nstages(void *ctx)
{
    (void)ctx;
    return 1;
}

static int
cast_dtype_ok(terse_dtype_t dtype)
{
    return (dtype == TERSE_FLOAT32) || (dtype == TERSE_FLOAT16) || (dtype == TERSE_BFLOAT16);
}

static terse_status_t
cmp_cast_compress(void *ctx, const terse_buf_t *in, float *residual, const terse_rng_t *rng,
                  void *out, size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                  terse_stream_t stream)
{
    cmp_cast_t *cs = ctx;
    size_t n       = in->count, c;
    uint8_t *o     = out;

#if CMP_CAST_CUDA
    if ((in->mem == TERSE_MEM_CUDA) && (cs->cuda != NULL)) {
        return terse__cmp_cast_cuda_compress(cs->cuda, in->ptr, in->dtype, n, residual, rng, out,
                                             out_bytes, flags_p, sq_err_p, stream);
    }
#endif
    (void)rng;
    (void)stream;
    if ((in->mem != TERSE_MEM_HOST) || !cast_dtype_ok(in->dtype) || (n > cs->count) ||
        ((n > 0) && ((in->ptr == NULL) || (out == NULL))) ||
        (out_bytes != n * sizeof(uint16_t))) {
        terse_error(TERSE_LOG_CMP, "cast: bad compress arguments (count %zu, %zu bytes)", n,
                    out_bytes);
        return TERSE_ERR_INVALID;
    }
    if (cast_compress_kernel(cs, in, residual, o, sq_err_p)) {
        *flags_p = 0;
        return TERSE_OK;
    }
    {
        uint16_t nan16 = (cs->kind == TERSE_CAST_BF16) ? TERSE_CAST_NAN_BF16 : TERSE_CAST_NAN_FP16;
        for (c = 0; c < n; ++c) {
            memcpy(o + c * 2, &nan16, 2);
        }
        if (residual != NULL) {
            memset(residual, 0, n * sizeof(float));
        }
        *flags_p = TERSE_CMP_NONFINITE;
        if (sq_err_p != NULL) {
            *sq_err_p = INFINITY;
        }
    }
    return TERSE_OK;
}

static terse_status_t
cmp_cast_decompress(void *ctx, const void *in, size_t in_bytes, float scale,
                    const terse_buf_t *out, terse_stream_t stream)
{
    cmp_cast_t *cs      = ctx;
    size_t n            = out->count, c, i;
    const uint8_t *src  = in;
    float factor        = (cs->kind == TERSE_CAST_BF16) ? scale : cs->fp * scale;
    float d[TERSE_QUANT_CHUNK];
    uint16_t h[TERSE_QUANT_CHUNK];
    int f16c;

#if CMP_CAST_CUDA
    if ((out->mem == TERSE_MEM_CUDA) && (cs->cuda != NULL)) {
        return terse__cmp_cast_cuda_decompress(cs->cuda, in, in_bytes, scale, out->ptr,
                                               out->dtype, n, stream);
    }
#endif
    f16c = cast_use_f16c();
    (void)stream;
    if ((out->mem != TERSE_MEM_HOST) || !cast_dtype_ok(out->dtype) ||
        ((n > 0) && (out->ptr == NULL))) {
        return TERSE_ERR_INVALID;
    }
    if ((n > cs->count) || ((n > 0) && (in == NULL)) || (in_bytes != n * sizeof(uint16_t))) {
        return TERSE_ERR_PAYLOAD;
    }
    for (c = 0; c < n; c += TERSE_QUANT_CHUNK) {
        size_t mc = TERSE_MIN((size_t)TERSE_QUANT_CHUNK, n - c);
        memcpy(h, src + c * 2, mc * 2); /* the summed payload need not be aligned */
        if (cs->kind == TERSE_CAST_BF16) {
            for (i = 0; i < mc; ++i) {
                d[i] = terse_bf16_to_float(h[i]);
            }
        } else {
            cast_from_half(h, mc, d, f16c);
        }
        terse__convert_from_f32(d, factor, (out->dtype == TERSE_FLOAT32)
                                               ? (void *)((float *)out->ptr + c)
                                               : (void *)((uint16_t *)out->ptr + c),
                                out->dtype, mc);
    }
    return TERSE_OK;
}

static void
cmp_cast_destroy(void *ctx)
{
    cmp_cast_t *cs = ctx;

    if (cs == NULL) {
        return;
    }
#if CMP_CAST_CUDA
    if (cs->cuda != NULL) {
        terse__cmp_cast_cuda_destroy(cs->cuda);
    }
#endif
    free(cs);
}

#if CMP_CAST_CUDA
/* The device state (the `cuda` argument of cast_cuda.h's launchers, e.g. for the lazy
 * terse__cmp_cast_cuda_stat) of an ops instance of cast; NULL for a host instance.
 * Borrowed: owned by the instance. */
void *terse__cmp_cast_cuda_handle(void *ctx);

void *
terse__cmp_cast_cuda_handle(void *ctx)
{
    return (ctx != NULL) ? ((cmp_cast_t *)ctx)->cuda : NULL;
}
#endif

static const double cmp_cast_grid[] = {TERSE_CAST_BF16, TERSE_CAST_FP16, -1.0};

const terse_cmp_ops_t terse_cmp_cast_ops = {
    .size           = sizeof(terse_cmp_ops_t),
    .name           = "cast",
    .caps           = TERSE_CMP_CAP_CPU | TERSE_CMP_CAP_SUMMABLE | TERSE_CMP_CAP_RANGE |
                      CMP_CAST_CAP_CUDA,
    .param_doc      = "bf16|fp16 (printed back as 0|1)",
    .sum_dtype      = TERSE_BFLOAT16,
    .grid           = cmp_cast_grid,
    .param_parse    = cmp_cast_param_parse,
    .create         = cmp_cast_create,
    .payload_size   = cmp_cast_payload_size,
    .nstages        = cmp_cast_nstages,
    .compress       = cmp_cast_compress,
    .stage          = NULL,
    .decompress     = cmp_cast_decompress,
    .decompress_add = NULL,
    .reset          = NULL,
    .destroy        = cmp_cast_destroy,
};
