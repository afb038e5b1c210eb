/*
 * cast: bf16 (or pre-scaled, saturated fp16) payloads summed by the native allreduce. The
 * exact arithmetic and the parameter encoding are defined in cast.h.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cast.h"
#include "quant.h" /* terse__quant_load, TERSE_QUANT_CHUNK, TERSE_QUANT_INLINE */

typedef struct cmp_cast {
    int    kind;   /* TERSE_CAST_BF16 or TERSE_CAST_FP16 */
    int    nranks;
    size_t count;
    float  inv_p;  /* fp16: 1 / p */
    float  fp;     /* fp16: (float)p */
    float  clip;   /* fp16: saturation bound */
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

/* One chunk: payload, residual, squared-error lanes, finiteness probe. */
TERSE_QUANT_INLINE void
cast_chunk(const cmp_cast_t *cs, const float *v, size_t m, uint16_t *out, float *residual,
           double *acc, float *probe)
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
            out[i]  = terse__float_to_half(w);
            own[i]  = terse__half_to_float(out[i]) * fp;
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
    if (params->mem != TERSE_MEM_HOST) {
        terse_error(TERSE_LOG_CMP, "cast: device buffers need the CUDA kernels");
        return TERSE_ERR_UNSUPPORTED;
    }
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
    size_t n       = in->count, c, l;
    float v[TERSE_QUANT_CHUNK], probe[8];
    double acc[8];
    uint16_t h[TERSE_QUANT_CHUNK];
    uint8_t *o = out;

    (void)rng;
    (void)stream;
    if ((in->mem != TERSE_MEM_HOST) || !cast_dtype_ok(in->dtype) || (n > cs->count) ||
        ((n > 0) && ((in->ptr == NULL) || (out == NULL))) ||
        (out_bytes != n * sizeof(uint16_t))) {
        terse_error(TERSE_LOG_CMP, "cast: bad compress arguments (count %zu, %zu bytes)", n,
                    out_bytes);
        return TERSE_ERR_INVALID;
    }
    for (l = 0; l < 8; ++l) {
        probe[l] = 0.0f;
        acc[l]   = 0.0;
    }
    for (c = 0; c < n; c += TERSE_QUANT_CHUNK) {
        size_t mc = TERSE_MIN((size_t)TERSE_QUANT_CHUNK, n - c);
        terse__quant_load(in, c, mc, (residual != NULL) ? residual + c : NULL, v);
        cast_chunk(cs, v, mc, h, (residual != NULL) ? residual + c : NULL, acc, probe);
        memcpy(o + c * 2, h, mc * 2); /* the payload need not be aligned */
    }
    for (l = 1; l < 8; ++l) {
        probe[0] = probe[0] + probe[l];
    }
    if (probe[0] != 0.0f) {
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
        return TERSE_OK;
    }
    *flags_p = 0;
    if (sq_err_p != NULL) {
        *sq_err_p = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
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
            for (i = 0; i < mc; ++i) {
                d[i] = terse__half_to_float(h[i]);
            }
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
    free(ctx);
}

static const double cmp_cast_grid[] = {TERSE_CAST_BF16, TERSE_CAST_FP16, -1.0};

const terse_cmp_ops_t terse_cmp_cast_ops = {
    .size           = sizeof(terse_cmp_ops_t),
    .name           = "cast",
    .caps           = TERSE_CMP_CAP_CPU | TERSE_CMP_CAP_SUMMABLE | TERSE_CMP_CAP_RANGE,
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
