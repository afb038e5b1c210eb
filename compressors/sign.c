/*
 * sign: EF-signSGD. Each value travels as its sign, each bucket as the mean of |v| over it:
 * decoded = sign * scale. Requantizable class, same header, validation, non-finite and
 * residual rules as quant (payload and arithmetic defined in quant.h). No randomness.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sign.h"
/* Device hooks; the MPI shim's copy of this file (TERSE_CMP_HOST_ONLY) has none. */
#if TERSE_HAVE_CUDA && !defined(TERSE_CMP_HOST_ONLY)
#define CMP_SIGN_CUDA 1
#include "sign_cuda.h"
#define CMP_SIGN_CAP_CUDA TERSE_CMP_CAP_CUDA
#else
#define CMP_SIGN_CUDA 0
#define CMP_SIGN_CAP_CUDA 0
#endif

typedef struct cmp_sign {
    size_t bucket;
    size_t count;
    void  *cuda;  /* device state (sign_cuda.h) of a TERSE_MEM_CUDA instance, else NULL */
} cmp_sign_t;

/* v = in + residual for [start, start + m): the input itself when fp32 without residual. */
TERSE_QUANT_INLINE const float *
sign_load(const terse_buf_t *in, size_t start, size_t m, const float *residual, float *v)
{
    if ((in->dtype == TERSE_FLOAT32) && (residual == NULL)) {
        return (const float *)in->ptr + start;
    }
    terse__quant_load(in, start, m, (residual != NULL) ? residual + start : NULL, v);
    return v;
}

/* Lane sums of |v| (lane = index % 32 inside the bucket; chunks start at multiples of 32)
 * and the finiteness probe. */
TERSE_QUANT_INLINE void
sign_sums(const float *v, size_t m, float *s, float *probe)
{
    size_t i, l;

    for (i = 0; i + TERSE_SIGN_LANES <= m; i += TERSE_SIGN_LANES) {
        for (l = 0; l < TERSE_SIGN_LANES; ++l) {
            float x  = v[i + l];
            s[l]     = s[l] + fabsf(x);
            probe[l] = probe[l] + x * 0.0f;
        }
    }
    for (; i < m; ++i) {
        float x                      = v[i];
        s[i % TERSE_SIGN_LANES]     = s[i % TERSE_SIGN_LANES] + fabsf(x);
        probe[i % TERSE_SIGN_LANES] = probe[i % TERSE_SIGN_LANES] + x * 0.0f;
    }
}

/* Signs of m values: packed bits (8 per byte, ceil(m / 8) bytes), residual, error lanes. */
TERSE_QUANT_INLINE void
sign_round(const float *v, size_t m, float scale, uint8_t *out, float *residual, double *acc)
{
    uint8_t code[TERSE_QUANT_CHUNK];
    float d[TERSE_QUANT_CHUNK];
    double a[8];
    size_t i, l, g;

    for (i = 0; i < m; ++i) {
        uint32_t c = terse_sign_code(v[i]);
        code[i]    = (uint8_t)c;
        d[i]       = terse_sign_decode(c, scale);
    }
    for (i = m; i < TERSE_ALIGN_UP(m, 8); ++i) {
        code[i] = 0; /* padding bits of a partial last byte */
    }
    for (g = 0; g < (m + 7) / 8; ++g) {
        out[g] = (uint8_t)(code[g * 8] | (code[g * 8 + 1] << 1) | (code[g * 8 + 2] << 2) |
                           (code[g * 8 + 3] << 3) | (code[g * 8 + 4] << 4) |
                           (code[g * 8 + 5] << 5) | (code[g * 8 + 6] << 6) |
                           (code[g * 8 + 7] << 7));
    }
    if (residual != NULL) {
        for (i = 0; i < m; ++i) {
            residual[i] = v[i] - d[i];
        }
    }
    for (l = 0; l < 8; ++l) {
        a[l] = acc[l];
    }
    for (i = 0; i + 8 <= m; i += 8) {
        for (l = 0; l < 8; ++l) {
            double e = (double)v[i + l] - (double)d[i + l];
            a[l]     = a[l] + e * e;
        }
    }
    for (; i < m; ++i) {
        double e = (double)v[i] - (double)d[i];
        a[i % 8] = a[i % 8] + e * e;
    }
    for (l = 0; l < 8; ++l) {
        acc[l] = a[l];
    }
}

/* Returns 1 when every bucket was finite, 0 at the first one that was not. */
TERSE_QUANT_INLINE int
sign_compress_body(const cmp_sign_t *sg, const terse_buf_t *in, float *residual,
                   uint8_t *scales, uint8_t *codes, double *sq_err_p)
{
    float v[TERSE_QUANT_CHUNK];
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t n = in->count, bucket = sg->bucket, k, nb = (n + bucket - 1) / bucket;
    const float *vp = v;

    for (k = 0; k < nb; ++k) {
        size_t start = k * bucket;
        size_t m     = TERSE_MIN(bucket, n - start);
        float s[TERSE_SIGN_LANES], probe[TERSE_SIGN_LANES], scale;
        size_t c, l;

        for (l = 0; l < TERSE_SIGN_LANES; ++l) {
            s[l]     = 0.0f;
            probe[l] = 0.0f;
        }
        for (c = 0; c < m; c += TERSE_QUANT_CHUNK) {
            size_t mc = TERSE_MIN((size_t)TERSE_QUANT_CHUNK, m - c);
            vp        = sign_load(in, start + c, mc, residual, v);
            sign_sums(vp, mc, s, probe);
        }
        for (l = 1; l < TERSE_SIGN_LANES; ++l) {
            probe[0] = probe[0] + probe[l];
        }
        if ((probe[0] != 0.0f) || !terse_sign_scale(s, m, &scale)) {
            return 0;
        }
        memcpy(scales + k * 4, &scale, 4);
        for (c = 0; c < m; c += TERSE_QUANT_CHUNK) {
            size_t mc = TERSE_MIN((size_t)TERSE_QUANT_CHUNK, m - c);
            if (m > TERSE_QUANT_CHUNK) {
                vp = sign_load(in, start + c, mc, residual, v);
            }
            sign_round(vp, mc, scale, codes + (start + c) / 8,
                       (residual != NULL) ? residual + start + c : NULL, acc);
        }
    }
    if (sq_err_p != NULL) {
        *sq_err_p = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
    return 1;
}

/* Decodes n values into fp32 out (acc 0: scale * D, acc 1: += D) or fp16/bf16 (acc 0). */
TERSE_QUANT_INLINE void
sign_decompress_body(const cmp_sign_t *sg, const uint8_t *scales, const uint8_t *codes,
                     size_t n, float scale, void *out, terse_dtype_t dtype, int acc)
{
    float d[TERSE_QUANT_CHUNK];
    size_t bucket = sg->bucket, k, nb = (n + bucket - 1) / bucket, i;

    for (k = 0; k < nb; ++k) {
        size_t start = k * bucket;
        size_t m     = TERSE_MIN(bucket, n - start);
        float bs;
        size_t c;

        memcpy(&bs, scales + k * 4, 4);
        for (c = 0; c < m; c += TERSE_QUANT_CHUNK) {
            size_t mc        = TERSE_MIN((size_t)TERSE_QUANT_CHUNK, m - c);
            const uint8_t *b = codes + (start + c) / 8;
            size_t g, j;
            for (g = 0; g < mc / 8; ++g) {
                for (j = 0; j < 8; ++j) {
                    d[g * 8 + j] = terse_sign_decode((b[g] >> j) & 1u, bs);
                }
            }
            for (i = mc / 8 * 8; i < mc; ++i) {
                d[i] = terse_sign_decode((b[i / 8] >> (i % 8)) & 1u, bs);
            }
            if (dtype == TERSE_FLOAT32) {
                float *o = (float *)out + start + c;
                if (acc) {
                    for (i = 0; i < mc; ++i) {
                        o[i] = o[i] + d[i];
                    }
                } else {
                    for (i = 0; i < mc; ++i) {
                        o[i] = d[i] * scale;
                    }
                }
            } else {
                terse__convert_from_f32(d, scale, (uint16_t *)out + start + c, dtype, mc);
            }
        }
    }
}

#define SIGN_VERSIONS(_suffix, _attr)                                                          \
    _attr static int sign_compress_##_suffix(const cmp_sign_t *sg, const terse_buf_t *in,     \
                                             float *residual, uint8_t *scales,                 \
                                             uint8_t *codes, double *sq_err_p)                 \
    {                                                                                          \
        return sign_compress_body(sg, in, residual, scales, codes, sq_err_p);                 \
    }                                                                                          \
    _attr static void sign_decompress_##_suffix(const cmp_sign_t *sg, const uint8_t *scales,  \
                                                const uint8_t *codes, size_t n, float scale,  \
                                                void *out, terse_dtype_t dtype, int acc)       \
    {                                                                                          \
        sign_decompress_body(sg, scales, codes, n, scale, out, dtype, acc);                   \
    }

SIGN_VERSIONS(base, )
#if TERSE_QUANT_MULTIVERSION
SIGN_VERSIONS(avx2, TERSE_QUANT_TARGET_AVX2)
SIGN_VERSIONS(avx512, TERSE_QUANT_TARGET_AVX512)
#endif

static int
sign_compress_kernel(const cmp_sign_t *sg, const terse_buf_t *in, float *residual,
                     uint8_t *scales, uint8_t *codes, double *sq_err_p)
{
#if TERSE_QUANT_MULTIVERSION
    switch (terse__quant_isa()) {
    case TERSE_QUANT_ISA_AVX512:
        return sign_compress_avx512(sg, in, residual, scales, codes, sq_err_p);
    case TERSE_QUANT_ISA_AVX2:
        return sign_compress_avx2(sg, in, residual, scales, codes, sq_err_p);
    default:
        break;
    }
#endif
    return sign_compress_base(sg, in, residual, scales, codes, sq_err_p);
}

static void
sign_decompress_kernel(const cmp_sign_t *sg, const uint8_t *scales, size_t n, float scale,
                       void *out, terse_dtype_t dtype, int acc)
{
    const uint8_t *codes = scales + (n + sg->bucket - 1) / sg->bucket * 4;

#if TERSE_QUANT_MULTIVERSION
    switch (terse__quant_isa()) {
    case TERSE_QUANT_ISA_AVX512:
        sign_decompress_avx512(sg, scales, codes, n, scale, out, dtype, acc);
        return;
    case TERSE_QUANT_ISA_AVX2:
        sign_decompress_avx2(sg, scales, codes, n, scale, out, dtype, acc);
        return;
    default:
        break;
    }
#endif
    sign_decompress_base(sg, scales, codes, n, scale, out, dtype, acc);
}

/* ---------------------------------------------------------------- ops */
static terse_status_t
cmp_sign_param_parse(const char *text, double *param_p)
{
    if ((text != NULL) && (text[0] != '\0')) {
        return TERSE_ERR_INVALID;
    }
    *param_p = 0.0;
    return TERSE_OK;
}

static terse_status_t
cmp_sign_create(const terse_cmp_params_t *params, void **ctx_p)
{
    cmp_sign_t *sg;
    size_t bucket;

    TERSE_CHECK(terse__cmp_check_mem("sign", params->mem));
    TERSE_CHECK(terse__quant_bucket(params->bucket, &bucket));
    sg = calloc(1, sizeof(*sg));
    if (sg == NULL) {
        terse_error(TERSE_LOG_CMP, "failed to allocate sign context");
        return TERSE_ERR_NOMEM;
    }
    sg->bucket = bucket;
    sg->count  = params->count;
#if CMP_SIGN_CUDA
    if (params->mem == TERSE_MEM_CUDA) {
        terse_status_t st = terse__cmp_sign_cuda_create(bucket, &sg->cuda);
        if (st != TERSE_OK) {
            free(sg);
            return st;
        }
    }
#endif
    *ctx_p     = sg;
    return TERSE_OK;
}

static terse_status_t
cmp_sign_payload_size(void *ctx, size_t n, unsigned stage, size_t *bytes_p)
{
    cmp_sign_t *sg = ctx;
    size_t bytes;

    if ((stage != 0) || (n > sg->count)) {
        return TERSE_ERR_INVALID;
    }
    bytes = terse_quant_payload_bytes(n, 1, sg->bucket, 4);
    if (bytes == 0) {
        return TERSE_ERR_INVALID;
    }
    *bytes_p = bytes;
    return TERSE_OK;
}

static unsigned
cmp_sign_nstages(void *ctx)
{
    (void)ctx;
    return 1;
}

static int
sign_dtype_ok(terse_dtype_t dtype)
{
    return (dtype == TERSE_FLOAT32) || (dtype == TERSE_FLOAT16) || (dtype == TERSE_BFLOAT16);
}

static terse_status_t
cmp_sign_compress(void *ctx, const terse_buf_t *in, float *residual, const terse_rng_t *rng,
                  void *out, size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                  terse_stream_t stream)
{
    cmp_sign_t *sg = ctx;
    size_t n       = in->count;
    size_t nb      = (n + sg->bucket - 1) / sg->bucket;
    uint8_t *scales, *codes;
    int finite;

#if CMP_SIGN_CUDA
    if ((in->mem == TERSE_MEM_CUDA) && (sg->cuda != NULL)) {
        return terse__cmp_sign_cuda_compress(sg->cuda, in->ptr, in->dtype, n, residual, rng, out,
                                             out_bytes, flags_p, sq_err_p, stream);
    }
#endif
    (void)rng;
    (void)stream;
    if ((in->mem != TERSE_MEM_HOST) || !sign_dtype_ok(in->dtype) || (n > sg->count) ||
        (out == NULL) || ((n > 0) && (in->ptr == NULL)) ||
        (out_bytes != terse_quant_payload_bytes(n, 1, sg->bucket, 4))) {
        terse_error(TERSE_LOG_CMP, "sign: bad compress arguments (count %zu, %zu bytes)", n,
                    out_bytes);
        return TERSE_ERR_INVALID;
    }
    scales = (uint8_t *)out + TERSE_QUANT_HDR_BYTES;
    codes  = scales + nb * 4;
    finite = sign_compress_kernel(sg, in, residual, scales, codes, sq_err_p);
    if (!finite) {
        memset(scales, 0, out_bytes - TERSE_QUANT_HDR_BYTES);
        if (residual != NULL) {
            memset(residual, 0, n * sizeof(float));
        }
        if (sq_err_p != NULL) {
            *sq_err_p = INFINITY;
        }
    }
    terse__quant_hdr_write(out, TERSE_QUANT_FAMILY_SIGN, 1, finite ? 0u : TERSE_CMP_NONFINITE,
                           sg->bucket, n);
    *flags_p = finite ? 0u : TERSE_CMP_NONFINITE;
    return TERSE_OK;
}

static terse_status_t
sign_check(const cmp_sign_t *sg, const void *in, size_t in_bytes, size_t n, uint32_t *flags_p)
{
    const uint8_t *scales = (const uint8_t *)in + TERSE_QUANT_HDR_BYTES;
    size_t nb, k;
    float s;

    if (n > sg->count) {
        return TERSE_ERR_PAYLOAD;
    }
    TERSE_CHECK(terse__quant_hdr_check(in, in_bytes, TERSE_QUANT_FAMILY_SIGN, 1, sg->bucket, n,
                                       4, flags_p));
    if (*flags_p & TERSE_CMP_NONFINITE) {
        /* compress zeroes scales and codes of a flagged payload: anything else is corruption
         * (a flipped flag bit on a finite payload) */
        for (k = TERSE_QUANT_HDR_BYTES; k < in_bytes; ++k) {
            if (((const uint8_t *)in)[k] != 0) {
                return TERSE_ERR_PAYLOAD;
            }
        }
        return TERSE_OK;
    }
    nb = (n + sg->bucket - 1) / sg->bucket;
    for (k = 0; k < nb; ++k) {
        memcpy(&s, scales + k * 4, 4);
        if (!((s >= 0.0f) && ((s - s) == 0.0f))) {
            return TERSE_ERR_PAYLOAD;
        }
    }
    return TERSE_OK;
}

static terse_status_t
cmp_sign_decompress(void *ctx, const void *in, size_t in_bytes, float scale,
                    const terse_buf_t *out, terse_stream_t stream)
{
    cmp_sign_t *sg = ctx;
    size_t n       = out->count;
    uint32_t flags;

#if CMP_SIGN_CUDA
    if ((out->mem == TERSE_MEM_CUDA) && (sg->cuda != NULL)) {
        return terse__cmp_sign_cuda_decompress(sg->cuda, in, in_bytes, scale, out->ptr,
                                               out->dtype, n, stream);
    }
#endif
    (void)stream;
    if ((out->mem != TERSE_MEM_HOST) || !sign_dtype_ok(out->dtype) ||
        ((n > 0) && (out->ptr == NULL))) {
        return TERSE_ERR_INVALID;
    }
    TERSE_CHECK(sign_check(sg, in, in_bytes, n, &flags));
    if (flags & TERSE_CMP_NONFINITE) {
        terse__quant_fill_nan(out->ptr, out->dtype, n);
        return TERSE_OK;
    }
    sign_decompress_kernel(sg, (const uint8_t *)in + TERSE_QUANT_HDR_BYTES, n, scale, out->ptr,
                           out->dtype, 0);
    return TERSE_OK;
}

static terse_status_t
cmp_sign_decompress_add(void *ctx, const void *in, size_t in_bytes, float *acc, size_t n,
                        uint32_t *flags_p, terse_stream_t stream)
{
    cmp_sign_t *sg = ctx;
    uint32_t flags;

#if CMP_SIGN_CUDA
    if (sg->cuda != NULL) {
        return terse__cmp_sign_cuda_decompress_add(sg->cuda, in, in_bytes, acc, n, flags_p,
                                                   stream);
    }
#endif
    (void)stream;
    if ((n > 0) && (acc == NULL)) {
        return TERSE_ERR_INVALID;
    }
    TERSE_CHECK(sign_check(sg, in, in_bytes, n, &flags));
    if (flags_p != NULL) {
        *flags_p = flags;
    }
    if (flags & TERSE_CMP_NONFINITE) {
        terse__quant_fill_nan(acc, TERSE_FLOAT32, n);
        return TERSE_OK;
    }
    sign_decompress_kernel(sg, (const uint8_t *)in + TERSE_QUANT_HDR_BYTES, n, 1.0f, acc,
                           TERSE_FLOAT32, 1);
    return TERSE_OK;
}

static void
cmp_sign_destroy(void *ctx)
{
    cmp_sign_t *sg = ctx;

    if (sg == NULL) {
        return;
    }
#if CMP_SIGN_CUDA
    if (sg->cuda != NULL) {
        terse__cmp_sign_cuda_destroy(sg->cuda);
    }
#endif
    free(sg);
}

#if CMP_SIGN_CUDA
/* The device state (the `cuda` argument of sign_cuda.h's launchers, e.g. for the lazy
 * terse__cmp_sign_cuda_stat) of an ops instance of sign; NULL for a host instance.
 * Borrowed: owned by the instance. */
void *terse__cmp_sign_cuda_handle(void *ctx);

void *
terse__cmp_sign_cuda_handle(void *ctx)
{
    return (ctx != NULL) ? ((cmp_sign_t *)ctx)->cuda : NULL;
}
#endif

static const double cmp_sign_grid[] = {0.0, -1.0};

const terse_cmp_ops_t terse_cmp_sign_ops = {
    .size           = sizeof(terse_cmp_ops_t),
    .name           = "sign",
    .caps           = TERSE_CMP_CAP_CPU | TERSE_CMP_CAP_REQUANT | TERSE_CMP_CAP_RANGE |
                      CMP_SIGN_CAP_CUDA,
    .param_doc      = "",
    .sum_dtype      = TERSE_FLOAT32,
    .grid           = cmp_sign_grid,
    .param_parse    = cmp_sign_param_parse,
    .create         = cmp_sign_create,
    .payload_size   = cmp_sign_payload_size,
    .nstages        = cmp_sign_nstages,
    .compress       = cmp_sign_compress,
    .stage          = NULL,
    .decompress     = cmp_sign_decompress,
    .decompress_add = cmp_sign_decompress_add,
    .reset          = NULL,
    .destroy        = cmp_sign_destroy,
};
