/*
 * The compressor registry, spec parsing, element conversions, and the "none" family (the
 * fallback: values travel as they are, over the native allreduce).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compressor.h"

extern const terse_cmp_ops_t terse_cmp_none_ops;
extern const terse_cmp_ops_t terse_cmp_topk_ops;
extern const terse_cmp_ops_t terse_cmp_topkt_ops;
extern const terse_cmp_ops_t terse_cmp_randomk_ops;
extern const terse_cmp_ops_t terse_cmp_powersgd_ops;
extern const terse_cmp_ops_t terse_cmp_powersgd1_ops;
extern const terse_cmp_ops_t terse_cmp_quant_ops;
extern const terse_cmp_ops_t terse_cmp_sign_ops;
extern const terse_cmp_ops_t terse_cmp_cast_ops;

/* The explicit table (no constructors: they are lost from unreferenced archive members). */
const terse_cmp_ops_t *const terse__cmp_builtin[] = {
    &terse_cmp_none_ops,
    &terse_cmp_topk_ops,
    &terse_cmp_topkt_ops,
    &terse_cmp_randomk_ops,
    &terse_cmp_powersgd_ops,
    &terse_cmp_powersgd1_ops,
    &terse_cmp_quant_ops,
    &terse_cmp_sign_ops,
    &terse_cmp_cast_ops,
    NULL,
};

const terse_cmp_ops_t *
terse__cmp_find(const char *name)
{
    size_t i;

    if (name == NULL) {
        return NULL;
    }
    for (i = 0; terse__cmp_builtin[i] != NULL; ++i) {
        if (strcmp(terse__cmp_builtin[i]->name, name) == 0) {
            return terse__cmp_builtin[i];
        }
    }
    return NULL;
}

static void
cmp_list_families(char *buf, size_t len)
{
    size_t i, n = 0;
    int w;

    buf[0] = '\0';
    for (i = 0; terse__cmp_builtin[i] != NULL; ++i) {
        w = snprintf(buf + n, len - n, "%s%s", (i > 0) ? "|" : "", terse__cmp_builtin[i]->name);
        if ((w < 0) || ((size_t)w >= len - n)) {
            return;
        }
        n += (size_t)w;
    }
}

terse_status_t
terse__cmp_spec_parse(const char *text, terse_cmp_spec_t *spec_p, char *why, size_t why_len)
{
    char name[TERSE_NAME_MAX];
    char families[256];
    const terse_cmp_ops_t *ops;
    const char *colon;
    size_t name_len;
    double param = 0.0;

    if ((text == NULL) || (spec_p == NULL)) {
        return TERSE_ERR_INVALID;
    }
    if (strcmp(text, "auto") == 0) {
        spec_p->ops     = NULL;
        spec_p->param   = 0.0;
        spec_p->is_auto = 1;
        return TERSE_OK;
    }
    colon    = strchr(text, ':');
    name_len = (colon != NULL) ? (size_t)(colon - text) : strlen(text);
    if (name_len >= sizeof(name)) {
        name_len = sizeof(name) - 1;
    }
    memcpy(name, text, name_len);
    name[name_len] = '\0';

    ops = terse__cmp_find(name);
    if (ops == NULL) {
        if (why != NULL) {
            cmp_list_families(families, sizeof(families));
            snprintf(why, why_len, "unknown compressor '%s'; families: auto|%s", name, families);
        }
        return TERSE_ERR_INVALID;
    }
    if (ops->param_parse(colon != NULL ? colon + 1 : NULL, &param) != TERSE_OK) {
        if (why != NULL) {
            snprintf(why, why_len, "bad parameter for %s; accepted: %s", ops->name,
                     ops->param_doc);
        }
        return TERSE_ERR_INVALID;
    }
    spec_p->ops     = ops;
    spec_p->param   = param;
    spec_p->is_auto = 0;
    return TERSE_OK;
}

terse_status_t
terse__cmp_spec_validate(const char *spec, char *why, size_t why_len)
{
    terse_cmp_spec_t s;

    return terse__cmp_spec_parse(spec, &s, why, why_len);
}

void
terse__cmp_spec_format(const terse_cmp_ops_t *ops, double param, char *buf, size_t len)
{
    if ((ops->param_doc == NULL) || (ops->param_doc[0] == '\0')) {
        snprintf(buf, len, "%s", ops->name);
    } else {
        snprintf(buf, len, "%s:%g", ops->name, param);
    }
}

terse_status_t
terse__cmp_parse_density(const char *text, double *param_p)
{
    char *end;
    double d;

    if ((text == NULL) || (text[0] == '\0')) {
        return TERSE_ERR_INVALID;
    }
    d = strtod(text, &end);
    if ((*end != '\0') || !isfinite(d) || !(d > 0.0) || (d > 1.0)) {
        return TERSE_ERR_INVALID;
    }
    *param_p = d;
    return TERSE_OK;
}

terse_status_t
terse__cmp_check_mem(const char *name, terse_mem_t mem)
{
    if (mem == TERSE_MEM_HOST) {
        return TERSE_OK;
    }
#if TERSE_HAVE_CUDA && !defined(TERSE_CMP_HOST_ONLY) /* the MPI shim's copy: host only */
    if (mem == TERSE_MEM_CUDA) {
        return TERSE_OK;
    }
#endif
    terse_error(TERSE_LOG_CMP, "compressor %s: device memory is not supported by this build",
                name);
    return TERSE_ERR_UNSUPPORTED;
}

/* ---------------------------------------------------------------- energies */
double
terse__cmp_energy(const float *v, size_t n)
{
    double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}, t = 0.0;
    size_t i, l;

    for (i = 0; i + 8 <= n; i += 8) {
        for (l = 0; l < 8; ++l) {
            s[l] += (double)v[i + l] * (double)v[i + l];
        }
    }
    for (; i < n; ++i) {
        t += (double)v[i] * (double)v[i];
    }
    return (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))) + t;
}

double
terse__cmp_add_energy(float *dst, const float *src, size_t n)
{
    double s[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0}, t = 0.0;
    size_t i, l;

    for (i = 0; i + 8 <= n; i += 8) {
        for (l = 0; l < 8; ++l) {
            float x    = dst[i + l] + src[i + l];
            dst[i + l] = x;
            s[l] += (double)x * (double)x;
        }
    }
    for (; i < n; ++i) {
        float x = dst[i] + src[i];
        dst[i]  = x;
        t += (double)x * (double)x;
    }
    return (((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))) + t;
}

/* ---------------------------------------------------------------- half precision */
float
terse__half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp  = (h >> 10) & 0x1fu;
    uint32_t man  = h & 0x3ffu;
    union {
        uint32_t u;
        float    f;
    } c;

    if (exp == 0x1fu) {
        c.u = sign | 0x7f800000u | (man << 13); /* Inf, NaN (payload kept) */
    } else if (exp != 0) {
        c.u = sign | ((exp + 112u) << 23) | (man << 13);
    } else if (man == 0) {
        c.u = sign;
    } else {
        /* subnormal: value = man * 2^-24, exact in fp32 */
        c.f = (float)man * (1.0f / 16777216.0f);
        c.u |= sign;
    }
    return c.f;
}

uint16_t
terse__float_to_half(float f)
{
    union {
        uint32_t u;
        float    f;
    } c;
    uint32_t sign, abs, exp, man, shift, half, rem, halfway;

    c.f  = f;
    sign = (c.u >> 16) & 0x8000u;
    abs  = c.u & 0x7fffffffu;
    if (abs > 0x7f800000u) {
        return (uint16_t)(sign | 0x7fffu); /* NaN, as __float2half_rn gives */
    }
    if (abs >= 0x477ff000u) {
        return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: Inf */
    }
    exp = abs >> 23;
    if (exp >= 113) {
        /* normal half: rebias, round to nearest even on the 13 dropped bits */
        half = ((exp - 112u) << 10) | ((abs >> 13) & 0x3ffu);
        rem  = abs & 0x1fffu;
        if ((rem > 0x1000u) || ((rem == 0x1000u) && (half & 1u))) {
            ++half;
        }
        return (uint16_t)(sign | half);
    }
    if (exp < 102) {
        return (uint16_t)sign; /* below half the smallest subnormal: 0 */
    }
    /* subnormal half: value = m * 2^-24 */
    man     = (abs & 0x7fffffu) | 0x800000u;
    shift   = 126u - exp; /* 14..24 */
    half    = man >> shift;
    rem     = man & ((1u << shift) - 1u);
    halfway = 1u << (shift - 1u);
    if ((rem > halfway) || ((rem == halfway) && (half & 1u))) {
        ++half;
    }
    return (uint16_t)(sign | half);
}

void
terse__convert_to_f32(const void *src, terse_dtype_t dtype, float *dst, size_t n)
{
    size_t i;

    switch (dtype) {
    case TERSE_FLOAT16:
        for (i = 0; i < n; ++i) {
            dst[i] = terse__half_to_float(((const uint16_t *)src)[i]);
        }
        break;
    case TERSE_BFLOAT16:
        for (i = 0; i < n; ++i) {
            dst[i] = terse_bf16_to_float(((const uint16_t *)src)[i]);
        }
        break;
    default:
        if (dst != src) {
            memmove(dst, src, n * sizeof(float));
        }
        break;
    }
}

void
terse__convert_from_f32(const float *src, float scale, void *dst, terse_dtype_t dtype, size_t n)
{
    size_t i;

    switch (dtype) {
    case TERSE_FLOAT16:
        for (i = 0; i < n; ++i) {
            ((uint16_t *)dst)[i] = terse__float_to_half(src[i] * scale);
        }
        break;
    case TERSE_BFLOAT16:
        for (i = 0; i < n; ++i) {
            ((uint16_t *)dst)[i] = terse_float_to_bf16(src[i] * scale);
        }
        break;
    default:
        if (scale == 1.0f) {
            if (dst != src) {
                memmove(dst, src, n * sizeof(float));
            }
        } else {
            for (i = 0; i < n; ++i) {
                ((float *)dst)[i] = src[i] * scale;
            }
        }
        break;
    }
}

/* ---------------------------------------------------------------- none */
/* The payload is v = in + residual as fp32 (the residual then drains to 0: none loses
 * nothing). Native class: the wire algorithm may skip compress entirely and allreduce the
 * caller's buffer; the ops exist so that benchmarks and plans treat none like any family. */
typedef struct cmp_none {
    size_t count;
} cmp_none_t;

static terse_status_t
cmp_none_param_parse(const char *text, double *param_p)
{
    if ((text != NULL) && (text[0] != '\0')) {
        return TERSE_ERR_INVALID;
    }
    *param_p = 0.0;
    return TERSE_OK;
}

static terse_status_t
cmp_none_create(const terse_cmp_params_t *params, void **ctx_p)
{
    cmp_none_t *none;

    TERSE_CHECK(terse__cmp_check_mem("none", params->mem));
    if (params->mem != TERSE_MEM_HOST) {
        return TERSE_ERR_UNSUPPORTED; /* device path: the native allreduce never compresses */
    }
    none = calloc(1, sizeof(*none));
    if (none == NULL) {
        terse_error(TERSE_LOG_CMP, "failed to allocate none context");
        return TERSE_ERR_NOMEM;
    }
    none->count = params->count;
    *ctx_p      = none;
    return TERSE_OK;
}

static terse_status_t
cmp_none_payload_size(void *ctx, size_t n, unsigned stage, size_t *bytes_p)
{
    (void)ctx;
    if (stage != 0) {
        return TERSE_ERR_INVALID;
    }
    *bytes_p = n * sizeof(float);
    return TERSE_OK;
}

static unsigned
cmp_none_nstages(void *ctx)
{
    (void)ctx;
    return 1;
}

static terse_status_t
cmp_none_compress(void *ctx, const terse_buf_t *in, float *residual, const terse_rng_t *rng,
                  void *out, size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                  terse_stream_t stream)
{
    float *o = out;
    uint32_t nonfinite = 0;
    size_t i;

    (void)ctx;
    (void)rng;
    (void)stream;
    if (out_bytes != in->count * sizeof(float)) {
        return TERSE_ERR_INVALID;
    }
    for (i = 0; i < in->count; ++i) {
        float v = terse__load_f32(in->ptr, in->dtype, i);
        if (residual != NULL) {
            v += residual[i];
            residual[i] = 0.0f;
        }
        nonfinite |= !isfinite(v);
        o[i] = v;
    }
    *flags_p = nonfinite ? TERSE_CMP_NONFINITE : 0;
    if (sq_err_p != NULL) {
        *sq_err_p = 0.0;
    }
    return TERSE_OK;
}

static terse_status_t
cmp_none_decompress(void *ctx, const void *in, size_t in_bytes, float scale,
                    const terse_buf_t *out, terse_stream_t stream)
{
    (void)ctx;
    (void)stream;
    if (in_bytes != out->count * sizeof(float)) {
        return TERSE_ERR_PAYLOAD;
    }
    terse__convert_from_f32(in, scale, out->ptr, out->dtype, out->count);
    return TERSE_OK;
}

static void
cmp_none_destroy(void *ctx)
{
    free(ctx);
}

static const double cmp_none_grid[] = {0.0, -1.0};

const terse_cmp_ops_t terse_cmp_none_ops = {
    .size         = sizeof(terse_cmp_ops_t),
    .name         = "none",
    .caps         = TERSE_CMP_CAP_CPU | TERSE_CMP_CAP_RANGE,
    .param_doc    = "",
    .sum_dtype    = TERSE_FLOAT32,
    .grid         = cmp_none_grid,
    .param_parse  = cmp_none_param_parse,
    .create       = cmp_none_create,
    .payload_size = cmp_none_payload_size,
    .nstages      = cmp_none_nstages,
    .compress     = cmp_none_compress,
    .stage        = NULL,
    .decompress   = cmp_none_decompress,
    .decompress_add = NULL,
    .reset        = NULL,
    .destroy      = cmp_none_destroy,
};
