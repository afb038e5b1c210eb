/*
 * quant: stochastic max-min quantisation (QSGD / CGX style), 2..8 bits per value plus an fp32
 * (lo, unit) pair per bucket of values. Requantizable class: payloads carry a header and are
 * decompress_add-ed by the reduce-scatter owner, then compressed again. The payload format
 * and the exact arithmetic are defined in quant.h (shared with the CUDA kernels).
 *
 * CPU reference: per bucket, chunks of TERSE_QUANT_CHUNK values are converted to fp32 in a
 * stack buffer (v = in + residual), then a branch-free kernel computes min/max, draws the
 * Philox uniforms for 16 blocks at a time, rounds, decodes, updates the residual and packs.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"
/* Device hooks; the MPI shim's copy of this file (TERSE_CMP_HOST_ONLY) has none. */
#if TERSE_HAVE_CUDA && !defined(TERSE_CMP_HOST_ONLY)
#define CMP_QUANT_CUDA 1
#include "quant_cuda.h"
#define CMP_QUANT_CAP_CUDA TERSE_CMP_CAP_CUDA
#else
#define CMP_QUANT_CUDA 0
#define CMP_QUANT_CAP_CUDA 0
#endif


typedef struct cmp_quant {
    unsigned bits;
    size_t   bucket;
    size_t   count;
    void    *cuda;   /* device state (quant_cuda.h) of a TERSE_MEM_CUDA instance, else NULL */
} cmp_quant_t;

/* ---------------------------------------------------------------- shared with sign.c */
int terse__quant_isa_max = TERSE_QUANT_ISA_AVX512;

int
terse__quant_isa(void)
{
#if TERSE_QUANT_MULTIVERSION
    if ((terse__quant_isa_max >= TERSE_QUANT_ISA_AVX512) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")) {
        return TERSE_QUANT_ISA_AVX512;
    }
    if ((terse__quant_isa_max >= TERSE_QUANT_ISA_AVX2) && __builtin_cpu_supports("avx2")) {
        return TERSE_QUANT_ISA_AVX2;
    }
#endif
    return TERSE_QUANT_ISA_BASE;
}

terse_status_t
terse__quant_bucket(uint32_t bucket, size_t *bucket_p)
{
    const terse_config_t *cfg = terse__config();
    size_t b                  = bucket;

    if (b == 0) {
        b = (cfg != NULL) ? (size_t)cfg->QUANT_BUCKET : 512;
    }
    if ((b == 0) || ((b % 32) != 0) || (b > (1u << 24))) {
        terse_error(TERSE_LOG_CMP, "bucket size %zu is not a positive multiple of 32", b);
        return TERSE_ERR_INVALID;
    }
    *bucket_p = b;
    return TERSE_OK;
}

void
terse__quant_hdr_write(void *out, unsigned family, unsigned bits, uint32_t flags, size_t bucket,
                       size_t count)
{
    terse_quant_hdr_t h;

    memset(&h, 0, sizeof(h));
    h.magic    = TERSE_QUANT_MAGIC;
    h.version  = TERSE_QUANT_VERSION;
    h.family   = (uint8_t)family;
    h.bits     = (uint8_t)bits;
    h.flags    = (uint8_t)flags;
    h.bucket   = (uint32_t)bucket;
    h.reserved = 0;
    h.count    = count;
    memcpy(out, &h, TERSE_QUANT_HDR_BYTES);
}

terse_status_t
terse__quant_hdr_check(const void *in, size_t in_bytes, unsigned family, unsigned bits,
                       size_t bucket, size_t count, size_t scale_bytes, uint32_t *flags_p)
{
    terse_quant_hdr_t h;

    if ((in == NULL) || (in_bytes < TERSE_QUANT_HDR_BYTES)) {
        return TERSE_ERR_PAYLOAD;
    }
    memcpy(&h, in, TERSE_QUANT_HDR_BYTES);
    if ((h.magic != TERSE_QUANT_MAGIC) || (h.version != TERSE_QUANT_VERSION) ||
        (h.family != family) || (h.bits != bits) || (h.bucket != bucket) ||
        (h.reserved != 0) || ((h.flags & ~(uint32_t)TERSE_CMP_NONFINITE) != 0) ||
        (h.count != (uint64_t)count) ||
        (in_bytes != terse_quant_payload_bytes(count, bits, bucket, scale_bytes))) {
        return TERSE_ERR_PAYLOAD;
    }
    *flags_p = h.flags;
    return TERSE_OK;
}

void
terse__quant_fill_nan(void *out, terse_dtype_t dtype, size_t n)
{
    size_t i;

    if (dtype == TERSE_FLOAT32) {
        for (i = 0; i < n; ++i) {
            ((float *)out)[i] = NAN;
        }
    } else {
        uint16_t nan16 = (dtype == TERSE_FLOAT16) ? 0x7fffu : 0x7fc0u;
        for (i = 0; i < n; ++i) {
            ((uint16_t *)out)[i] = nan16;
        }
    }
}

/* ---------------------------------------------------------------- kernels */
typedef uint16_t __attribute__((may_alias)) quant_u16_alias_t;

/* Uniforms of absolute elements a0 .. a0 + m - 1 (m <= TERSE_QUANT_CHUNK) into buf (returned):
 * Philox blocks a0 / 8 ... (a0 + m - 1) / 8.
 * One loop iteration is one whole block (ten rounds), so the loop vectorises across blocks. */
#define QUANT_UBUF ((TERSE_QUANT_CHUNK / 8 + 1) * 8)

TERSE_QUANT_INLINE const float *
quant_uniforms(const terse_rng_t *rng, uint64_t a0, size_t m, float *buf, int wide)
{
    const uint64_t b0   = a0 >> 3;
    const size_t   nblk = (size_t)(((a0 + m - 1) >> 3) - b0 + 1);
    const uint32_t key0 = rng->key[0], key1 = rng->key[1];
    const uint32_t hi0 = rng->hi[0], hi1 = rng->hi[1];
    uint32_t words[QUANT_UBUF / 2];
    const quant_u16_alias_t *half;
    size_t j;

    if (wide) {
        /* The same rounds with every 32-bit word kept in a 64-bit lane: AVX-512 then runs
         * them with vpmuludq and no lane shuffles (twice the rate of the form below). */
        for (j = 0; j < nblk; ++j) {
            uint64_t b  = b0 + j;
            uint64_t c0 = (uint32_t)b, c1 = (uint32_t)(b >> 32), c2 = hi0, c3 = hi1;
            uint64_t k0 = key0, k1 = key1;
            int r;

            for (r = 0; r < 10; ++r) {
                uint64_t p0 = 0xD2511F53ull * c0;
                uint64_t p1 = 0xCD9E8D57ull * c2;
                c0          = (p1 >> 32) ^ c1 ^ k0;
                c2          = (p0 >> 32) ^ c3 ^ k1;
                c1          = p1 & 0xffffffffu;
                c3          = p0 & 0xffffffffu;
                k0          = (k0 + 0x9E3779B9u) & 0xffffffffu;
                k1          = (k1 + 0xBB67AE85u) & 0xffffffffu;
            }
            words[j * 4 + 0] = (uint32_t)c0;
            words[j * 4 + 1] = (uint32_t)c1;
            words[j * 4 + 2] = (uint32_t)c2;
            words[j * 4 + 3] = (uint32_t)c3;
        }
        half = (const quant_u16_alias_t *)words + (a0 & 7u);
        for (j = 0; j < m; ++j) {
            buf[j] = terse_rng_u16_to_float(half[j]);
        }
        return buf;
    }
    for (j = 0; j < nblk; ++j) {
        uint64_t b  = b0 + j;
        uint32_t c0 = (uint32_t)b, c1 = (uint32_t)(b >> 32), c2 = hi0, c3 = hi1;
        uint32_t k0 = key0, k1 = key1;
        int r;

        for (r = 0; r < 10; ++r) {
            uint64_t p0 = (uint64_t)0xD2511F53u * c0;
            uint64_t p1 = (uint64_t)0xCD9E8D57u * c2;
            c0          = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
            c2          = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
            c1          = (uint32_t)p1;
            c3          = (uint32_t)p0;
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        words[j * 4 + 0] = c0;
        words[j * 4 + 1] = c1;
        words[j * 4 + 2] = c2;
        words[j * 4 + 3] = c3;
    }
    /* little-endian: 16-bit lane k of a block is the low (even k) or high half of word k / 2,
     * as terse_rng_u16_of reads it */
    half = (const quant_u16_alias_t *)words + (a0 & 7u);
    for (j = 0; j < m; ++j) {
        buf[j] = terse_rng_u16_to_float(half[j]);
    }
    return buf;
}

/* Packing: groups of G codes of b bits fill B = G * b / 8 whole bytes (G = 8 / gcd(b, 8));
 * with b constant after inlining, the loops vectorise across groups. */
#define QUANT_G(_b) (((_b) == 2) ? 4u : ((_b) == 4) ? 2u : ((_b) == 6) ? 4u : ((_b) == 8) ? 1u : 8u)

/* Packs m codes of `bits` bits into ceil(m * bits / 8) bytes. */
TERSE_QUANT_INLINE void
quant_pack_bits(const uint8_t *code, size_t m, unsigned bits, uint8_t *out)
{
    const unsigned G = QUANT_G(bits), B = G * bits / 8;
    size_t g, ng = m / G, rest = m - ng * G;
    unsigned j, t;
    uint64_t w;

    for (g = 0; g < ng; ++g) {
        w = 0;
        for (j = 0; j < G; ++j) {
            w |= (uint64_t)code[g * G + j] << (j * bits);
        }
        for (t = 0; t < B; ++t) {
            out[g * B + t] = (uint8_t)(w >> (8 * t));
        }
    }
    if (rest != 0) {
        w = 0;
        for (j = 0; j < rest; ++j) {
            w |= (uint64_t)code[ng * G + j] << (j * bits);
        }
        for (t = 0; t < (rest * bits + 7) / 8; ++t) {
            out[ng * B + t] = (uint8_t)(w >> (8 * t));
        }
    }
}

TERSE_QUANT_INLINE void
quant_unpack_bits(const uint8_t *in, size_t m, unsigned bits, uint8_t *code)
{
    const unsigned G = QUANT_G(bits), B = G * bits / 8;
    const uint64_t mask = (1u << bits) - 1u;
    size_t g, ng = m / G, rest = m - ng * G;
    unsigned j, t;
    uint64_t w;

    for (g = 0; g < ng; ++g) {
        w = 0;
        for (t = 0; t < B; ++t) {
            w |= (uint64_t)in[g * B + t] << (8 * t);
        }
        for (j = 0; j < G; ++j) {
            code[g * G + j] = (uint8_t)((w >> (j * bits)) & mask);
        }
    }
    if (rest != 0) {
        w = 0;
        for (t = 0; t < (rest * bits + 7) / 8; ++t) {
            w |= (uint64_t)in[ng * B + t] << (8 * t);
        }
        for (j = 0; j < rest; ++j) {
            code[ng * G + j] = (uint8_t)((w >> (j * bits)) & mask);
        }
    }
}

#define QUANT_BITS_SWITCH(_bits, _call)                                                        \
    switch (_bits) {                                                                           \
    case 2: _call(2); break;                                                                   \
    case 3: _call(3); break;                                                                   \
    case 4: _call(4); break;                                                                   \
    case 5: _call(5); break;                                                                   \
    case 6: _call(6); break;                                                                   \
    case 7: _call(7); break;                                                                   \
    default: _call(8); break;                                                                  \
    }

TERSE_QUANT_INLINE void
quant_pack(const uint8_t *code, size_t m, unsigned bits, uint8_t *out)
{
#define QUANT_PACK(_b) quant_pack_bits(code, m, _b, out)
    QUANT_BITS_SWITCH(bits, QUANT_PACK)
#undef QUANT_PACK
}

TERSE_QUANT_INLINE void
quant_unpack(const uint8_t *in, size_t m, unsigned bits, uint8_t *code)
{
#define QUANT_UNPACK(_b) quant_unpack_bits(in, m, _b, code)
    QUANT_BITS_SWITCH(bits, QUANT_UNPACK)
#undef QUANT_UNPACK
}

/* Min, max and a finiteness probe over m values, in 16 independent lanes. */
TERSE_QUANT_INLINE void
quant_minmax(const float *v, size_t m, float *lo, float *hi, float *probe)
{
    size_t i, l;

    for (i = 0; i + 16 <= m; i += 16) {
        for (l = 0; l < 16; ++l) {
            float x  = v[i + l];
            lo[l]    = (x < lo[l]) ? x : lo[l];
            hi[l]    = (x > hi[l]) ? x : hi[l];
            probe[l] = probe[l] + x * 0.0f; /* NaN once any x is Inf or NaN */
        }
    }
    for (; i < m; ++i) {
        float x   = v[i];
        lo[i % 16] = (x < lo[i % 16]) ? x : lo[i % 16];
        hi[i % 16] = (x > hi[i % 16]) ? x : hi[i % 16];
        probe[i % 16] = probe[i % 16] + x * 0.0f;
    }
}

/* Rounds m values: codes, decoded values into d, residual (v - d), squared error lanes. */
TERSE_QUANT_INLINE void
quant_round(const float *v, const float *u, size_t m, float lo, float unit, float inv, float L,
            uint8_t *code, float *d, float *residual, double *acc)
{
    double a[8];
    size_t i, l;

    for (i = 0; i < m; ++i) {
        uint32_t c = terse_quant_code(v[i], lo, inv, u[i], L);
        code[i]    = (uint8_t)c;
        d[i]       = terse_quant_decode(c, lo, unit);
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

/* v = in + residual for elements [start, start + m): a pointer into the input itself when it
 * is fp32 without residual, else into the stack buffer v. */
TERSE_QUANT_INLINE const float *
quant_load(const terse_buf_t *in, size_t start, size_t m, const float *residual, float *v)
{
    if ((in->dtype == TERSE_FLOAT32) && (residual == NULL)) {
        return (const float *)in->ptr + start;
    }
    terse__quant_load(in, start, m, (residual != NULL) ? residual + start : NULL, v);
    return v;
}

/* The whole compress of n values into the scale and code sections. Returns 1 when every
 * bucket was finite; 0 as soon as one was not (the caller then writes the flagged payload). */
TERSE_QUANT_INLINE int
quant_compress_body(const cmp_quant_t *q, const terse_buf_t *in, float *residual,
                    const terse_rng_t *rng, uint8_t *scales, uint8_t *codes, double *sq_err_p,
                    int wide)
{
    float v[TERSE_QUANT_CHUNK], ubuf[QUANT_UBUF], d[TERSE_QUANT_CHUNK];
    uint8_t code[TERSE_QUANT_CHUNK];
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    size_t n = in->count, bucket = q->bucket, k, nb = (n + bucket - 1) / bucket;
    unsigned bits = q->bits;
    float L = (float)((1u << bits) - 1u);
    const float *vp = v;
    size_t l;

    for (k = 0; k < nb; ++k) {
        size_t start = k * bucket;
        size_t m     = TERSE_MIN(bucket, n - start);
        float lo[16], hi[16], probe[16], flo, fhi, unit, inv;
        size_t c;

        for (l = 0; l < 16; ++l) {
            lo[l]    = INFINITY;
            hi[l]    = -INFINITY;
            probe[l] = 0.0f;
        }
        for (c = 0; c < m; c += TERSE_QUANT_CHUNK) {
            size_t mc = TERSE_MIN((size_t)TERSE_QUANT_CHUNK, m - c);
            vp = quant_load(in, start + c, mc, residual, v);
            quant_minmax(vp, mc, lo, hi, probe);
        }
        flo = lo[0];
        fhi = hi[0];
        for (l = 1; l < 16; ++l) {
            flo      = (lo[l] < flo) ? lo[l] : flo;
            fhi      = (hi[l] > fhi) ? hi[l] : fhi;
            probe[0] = probe[0] + probe[l];
        }
        if ((probe[0] != 0.0f) ||
            !terse_quant_bucket_params(flo, fhi, bits, &flo, &unit, &inv)) {
            return 0;
        }
        memcpy(scales + k * 8, &flo, 4);
        memcpy(scales + k * 8 + 4, &unit, 4);
        for (c = 0; c < m; c += TERSE_QUANT_CHUNK) {
            size_t mc = TERSE_MIN((size_t)TERSE_QUANT_CHUNK, m - c);
            float *r  = (residual != NULL) ? residual + start + c : NULL;
            if (m > TERSE_QUANT_CHUNK) {
                vp = quant_load(in, start + c, mc, residual, v);
            }
            quant_round(vp, quant_uniforms(rng, rng->offset + start + c, mc, ubuf, wide), mc, flo,
                        unit, inv, L, code, d, r, acc);
            quant_pack(code, mc, bits, codes + (start + c) / 8 * bits);
        }
    }
    if (sq_err_p != NULL) {
        *sq_err_p = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
    return 1;
}

/* Decodes n values; out is fp32 (acc = 0: out = scale * D; acc = 1: out += D) or, for
 * fp16/bf16 (acc = 0 only), converted through a stack buffer. Scales were checked. */
TERSE_QUANT_INLINE void
quant_decompress_body(const cmp_quant_t *q, const uint8_t *scales, const uint8_t *codes,
                      size_t n, float scale, void *out, terse_dtype_t dtype, int acc)
{
    float d[TERSE_QUANT_CHUNK];
    uint8_t code[TERSE_QUANT_CHUNK];
    size_t bucket = q->bucket, k, nb = (n + bucket - 1) / bucket, i;
    unsigned bits = q->bits;

    for (k = 0; k < nb; ++k) {
        size_t start = k * bucket;
        size_t m     = TERSE_MIN(bucket, n - start);
        float lo, unit;
        size_t c;

        memcpy(&lo, scales + k * 8, 4);
        memcpy(&unit, scales + k * 8 + 4, 4);
        for (c = 0; c < m; c += TERSE_QUANT_CHUNK) {
            size_t mc = TERSE_MIN((size_t)TERSE_QUANT_CHUNK, m - c);
            quant_unpack(codes + (start + c) / 8 * bits, mc, bits, code);
            if (dtype == TERSE_FLOAT32) {
                float *o = (float *)out + start + c;
                if (acc) {
                    for (i = 0; i < mc; ++i) {
                        o[i] = o[i] + terse_quant_decode(code[i], lo, unit);
                    }
                } else {
                    for (i = 0; i < mc; ++i) {
                        o[i] = terse_quant_decode(code[i], lo, unit) * scale;
                    }
                }
            } else {
                for (i = 0; i < mc; ++i) {
                    d[i] = terse_quant_decode(code[i], lo, unit);
                }
                terse__convert_from_f32(d, scale, (uint16_t *)out + start + c, dtype, mc);
            }
        }
    }
}

/* One copy of the kernels per instruction set (quant.h): same operations, same bits. */
#define QUANT_VERSIONS(_suffix, _attr, _wide)                                                  \
    _attr static int quant_compress_##_suffix(const cmp_quant_t *q, const terse_buf_t *in,    \
                                              float *residual, const terse_rng_t *rng,        \
                                              uint8_t *scales, uint8_t *codes,                \
                                              double *sq_err_p)                               \
    {                                                                                          \
        return quant_compress_body(q, in, residual, rng, scales, codes, sq_err_p, _wide);     \
    }                                                                                          \
    _attr static void quant_decompress_##_suffix(const cmp_quant_t *q, const uint8_t *scales, \
                                                 const uint8_t *codes, size_t n, float scale, \
                                                 void *out, terse_dtype_t dtype, int acc)      \
    {                                                                                          \
        quant_decompress_body(q, scales, codes, n, scale, out, dtype, acc);                   \
    }

QUANT_VERSIONS(base, , 0)
#if TERSE_QUANT_MULTIVERSION
QUANT_VERSIONS(avx2, TERSE_QUANT_TARGET_AVX2, 0)
QUANT_VERSIONS(avx512, TERSE_QUANT_TARGET_AVX512, 1)
#endif

static int
quant_compress_kernel(const cmp_quant_t *q, const terse_buf_t *in, float *residual,
                      const terse_rng_t *rng, uint8_t *scales, uint8_t *codes, double *sq_err_p)
{
#if TERSE_QUANT_MULTIVERSION
    switch (terse__quant_isa()) {
    case TERSE_QUANT_ISA_AVX512:
        return quant_compress_avx512(q, in, residual, rng, scales, codes, sq_err_p);
    case TERSE_QUANT_ISA_AVX2:
        return quant_compress_avx2(q, in, residual, rng, scales, codes, sq_err_p);
    default:
        break;
    }
#endif
    return quant_compress_base(q, in, residual, rng, scales, codes, sq_err_p);
}

static void
quant_decompress_kernel(const cmp_quant_t *q, const uint8_t *scales, size_t n, float scale,
                        void *out, terse_dtype_t dtype, int acc)
{
    const uint8_t *codes = scales + (n + q->bucket - 1) / q->bucket * 8;

#if TERSE_QUANT_MULTIVERSION
    switch (terse__quant_isa()) {
    case TERSE_QUANT_ISA_AVX512:
        quant_decompress_avx512(q, scales, codes, n, scale, out, dtype, acc);
        return;
    case TERSE_QUANT_ISA_AVX2:
        quant_decompress_avx2(q, scales, codes, n, scale, out, dtype, acc);
        return;
    default:
        break;
    }
#endif
    quant_decompress_base(q, scales, codes, n, scale, out, dtype, acc);
}

/* ---------------------------------------------------------------- ops */
static terse_status_t
cmp_quant_param_parse(const char *text, double *param_p)
{
    char *end;
    long b;

    if ((text == NULL) || (text[0] == '\0')) {
        return TERSE_ERR_INVALID;
    }
    b = strtol(text, &end, 10);
    if ((*end != '\0') || (b < (long)TERSE_QUANT_MIN_BITS) || (b > (long)TERSE_QUANT_MAX_BITS)) {
        return TERSE_ERR_INVALID;
    }
    *param_p = (double)b;
    return TERSE_OK;
}

static terse_status_t
cmp_quant_create(const terse_cmp_params_t *params, void **ctx_p)
{
    cmp_quant_t *q;
    size_t bucket;
    double b = params->param;

    TERSE_CHECK(terse__cmp_check_mem("quant", params->mem));
    if (!((b >= TERSE_QUANT_MIN_BITS) && (b <= TERSE_QUANT_MAX_BITS) && (b == floor(b)))) {
        terse_error(TERSE_LOG_CMP, "quant: %g bits is not in 2..8", b);
        return TERSE_ERR_INVALID;
    }
    TERSE_CHECK(terse__quant_bucket(params->bucket, &bucket));
    q = calloc(1, sizeof(*q));
    if (q == NULL) {
        terse_error(TERSE_LOG_CMP, "failed to allocate quant context");
        return TERSE_ERR_NOMEM;
    }
    q->bits   = (unsigned)b;
    q->bucket = bucket;
    q->count  = params->count;
#if CMP_QUANT_CUDA
    if (params->mem == TERSE_MEM_CUDA) {
        terse_status_t st = terse__cmp_quant_cuda_create(TERSE_QUANT_FAMILY_QUANT, q->bits,
                                                         bucket, &q->cuda);
        if (st != TERSE_OK) {
            free(q);
            return st;
        }
    }
#endif
    *ctx_p    = q;
    return TERSE_OK;
}

static terse_status_t
cmp_quant_payload_size(void *ctx, size_t n, unsigned stage, size_t *bytes_p)
{
    cmp_quant_t *q = ctx;
    size_t bytes;

    if ((stage != 0) || (n > q->count)) {
        return TERSE_ERR_INVALID;
    }
    bytes = terse_quant_payload_bytes(n, q->bits, q->bucket, 8);
    if (bytes == 0) {
        return TERSE_ERR_INVALID;
    }
    *bytes_p = bytes;
    return TERSE_OK;
}

static unsigned
cmp_quant_nstages(void *ctx)
{
    (void)ctx;
    return 1;
}

static int
quant_dtype_ok(terse_dtype_t dtype)
{
    return (dtype == TERSE_FLOAT32) || (dtype == TERSE_FLOAT16) || (dtype == TERSE_BFLOAT16);
}

static terse_status_t
cmp_quant_compress(void *ctx, const terse_buf_t *in, float *residual, const terse_rng_t *rng,
                   void *out, size_t out_bytes, uint32_t *flags_p, double *sq_err_p,
                   terse_stream_t stream)
{
    cmp_quant_t *q = ctx;
    size_t n       = in->count;
    size_t nb      = (n + q->bucket - 1) / q->bucket;
    uint8_t *scales, *codes;
    int finite;

#if CMP_QUANT_CUDA
    if ((in->mem == TERSE_MEM_CUDA) && (q->cuda != NULL)) {
        return terse__cmp_quant_cuda_compress(q->cuda, in->ptr, in->dtype, n, residual, rng, out,
                                              out_bytes, flags_p, sq_err_p, stream);
    }
#endif
    (void)stream;
    if ((in->mem != TERSE_MEM_HOST) || !quant_dtype_ok(in->dtype) || (n > q->count) ||
        (rng == NULL) || (out == NULL) || ((n > 0) && (in->ptr == NULL)) ||
        (out_bytes != terse_quant_payload_bytes(n, q->bits, q->bucket, 8))) {
        terse_error(TERSE_LOG_CMP, "quant: bad compress arguments (count %zu, %zu bytes)", n,
                    out_bytes);
        return TERSE_ERR_INVALID;
    }
    scales = (uint8_t *)out + TERSE_QUANT_HDR_BYTES;
    codes  = scales + nb * 8;
    finite = quant_compress_kernel(q, in, residual, rng, scales, codes, sq_err_p);
    if (!finite) {
        /* DESIGN.md section 8 rule 3: the flag travels, the residual restarts from 0 */
        memset(scales, 0, out_bytes - TERSE_QUANT_HDR_BYTES);
        if (residual != NULL) {
            memset(residual, 0, n * sizeof(float));
        }
        if (sq_err_p != NULL) {
            *sq_err_p = INFINITY;
        }
    }
    terse__quant_hdr_write(out, TERSE_QUANT_FAMILY_QUANT, q->bits,
                           finite ? 0u : TERSE_CMP_NONFINITE, q->bucket, n);
    *flags_p = finite ? 0u : TERSE_CMP_NONFINITE;
    return TERSE_OK;
}

/* Validates header, size and every scale; on success *flags_p holds the payload's flags. */
static terse_status_t
quant_check(const cmp_quant_t *q, const void *in, size_t in_bytes, size_t n, uint32_t *flags_p)
{
    const uint8_t *scales = (const uint8_t *)in + TERSE_QUANT_HDR_BYTES;
    size_t nb, k;
    float lo, unit;

    if (n > q->count) {
        return TERSE_ERR_PAYLOAD;
    }
    TERSE_CHECK(terse__quant_hdr_check(in, in_bytes, TERSE_QUANT_FAMILY_QUANT, q->bits,
                                       q->bucket, n, 8, flags_p));
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
    nb = (n + q->bucket - 1) / q->bucket;
    for (k = 0; k < nb; ++k) {
        memcpy(&lo, scales + k * 8, 4);
        memcpy(&unit, scales + k * 8 + 4, 4);
        if (!terse_quant_scales_ok(lo, unit, q->bits)) {
            return TERSE_ERR_PAYLOAD;
        }
    }
    return TERSE_OK;
}

static terse_status_t
cmp_quant_decompress(void *ctx, const void *in, size_t in_bytes, float scale,
                     const terse_buf_t *out, terse_stream_t stream)
{
    cmp_quant_t *q = ctx;
    size_t n       = out->count;
    const uint8_t *scales;
    uint32_t flags;

#if CMP_QUANT_CUDA
    if ((out->mem == TERSE_MEM_CUDA) && (q->cuda != NULL)) {
        return terse__cmp_quant_cuda_decompress(q->cuda, in, in_bytes, scale, out->ptr,
                                                out->dtype, n, stream);
    }
#endif
    (void)stream;
    if ((out->mem != TERSE_MEM_HOST) || !quant_dtype_ok(out->dtype) ||
        ((n > 0) && (out->ptr == NULL))) {
        return TERSE_ERR_INVALID;
    }
    TERSE_CHECK(quant_check(q, in, in_bytes, n, &flags));
    if (flags & TERSE_CMP_NONFINITE) {
        terse__quant_fill_nan(out->ptr, out->dtype, n);
        return TERSE_OK;
    }
    scales = (const uint8_t *)in + TERSE_QUANT_HDR_BYTES;
    quant_decompress_kernel(q, scales, n, scale, out->ptr, out->dtype, 0);
    return TERSE_OK;
}

static terse_status_t
cmp_quant_decompress_add(void *ctx, const void *in, size_t in_bytes, float *acc, size_t n,
                         uint32_t *flags_p, terse_stream_t stream)
{
    cmp_quant_t *q = ctx;
    const uint8_t *scales;
    uint32_t flags;

#if CMP_QUANT_CUDA
    if (q->cuda != NULL) {
        return terse__cmp_quant_cuda_decompress_add(q->cuda, in, in_bytes, acc, n, flags_p,
                                                    stream);
    }
#endif
    (void)stream;
    if ((n > 0) && (acc == NULL)) {
        return TERSE_ERR_INVALID;
    }
    TERSE_CHECK(quant_check(q, in, in_bytes, n, &flags));
    if (flags_p != NULL) {
        *flags_p = flags;
    }
    if (flags & TERSE_CMP_NONFINITE) {
        terse__quant_fill_nan(acc, TERSE_FLOAT32, n);
        return TERSE_OK;
    }
    scales = (const uint8_t *)in + TERSE_QUANT_HDR_BYTES;
    quant_decompress_kernel(q, scales, n, 1.0f, acc, TERSE_FLOAT32, 1);
    return TERSE_OK;
}

static void
cmp_quant_destroy(void *ctx)
{
    cmp_quant_t *q = ctx;

    if (q == NULL) {
        return;
    }
#if CMP_QUANT_CUDA
    if (q->cuda != NULL) {
        terse__cmp_quant_cuda_destroy(q->cuda);
    }
#endif
    free(q);
}

#if CMP_QUANT_CUDA
/* The device state (the `cuda` argument of quant_cuda.h's launchers, e.g. for the lazy
 * terse__cmp_quant_cuda_stat) of an ops instance of quant; NULL for a host instance.
 * Borrowed: owned by the instance. */
void *terse__cmp_quant_cuda_handle(void *ctx);

void *
terse__cmp_quant_cuda_handle(void *ctx)
{
    return (ctx != NULL) ? ((cmp_quant_t *)ctx)->cuda : NULL;
}
#endif

static const double cmp_quant_grid[] = {2.0, 3.0, 4.0, 6.0, 8.0, -1.0};

const terse_cmp_ops_t terse_cmp_quant_ops = {
    .size           = sizeof(terse_cmp_ops_t),
    .name           = "quant",
    .caps           = TERSE_CMP_CAP_CPU | TERSE_CMP_CAP_REQUANT | TERSE_CMP_CAP_RANGE |
                      TERSE_CMP_CAP_RNG | CMP_QUANT_CAP_CUDA,
    .param_doc      = "2..8 (bits per value)",
    .sum_dtype      = TERSE_FLOAT32,
    .grid           = cmp_quant_grid,
    .param_parse    = cmp_quant_param_parse,
    .create         = cmp_quant_create,
    .payload_size   = cmp_quant_payload_size,
    .nstages        = cmp_quant_nstages,
    .compress       = cmp_quant_compress,
    .stage          = NULL,
    .decompress     = cmp_quant_decompress,
    .decompress_add = cmp_quant_decompress_add,
    .reset          = NULL,
    .destroy        = cmp_quant_destroy,
};
