/*
 * quant and sign: the payload format and the exact arithmetic, shared (private, C-compatible)
 * by quant.c / sign.c (CPU reference) and their CUDA twins, so a kernel can reproduce every
 * bit of a CPU payload. The build compiles C with -ffp-contract=off and CUDA with
 * --fmad=false: every operation below is one IEEE fp32 operation rounded to nearest even,
 * evaluated in the order written (no FMA, no reassociation).
 *
 * Payload (a gathered payload: it carries a header, DESIGN.md section 8 rule 6), all fields
 * little-endian, no padding between sections:
 *
 *   offset  size  field
 *        0     4  magic    TERSE_QUANT_MAGIC ("TRSQ" in memory)
 *        4     1  version  TERSE_QUANT_VERSION
 *        5     1  family   TERSE_QUANT_FAMILY_QUANT or TERSE_QUANT_FAMILY_SIGN
 *        6     1  bits     code width: 2..8 for quant, 1 for sign
 *        7     1  flags    TERSE_CMP_NONFINITE or 0 (no other bit may be set)
 *        8     4  bucket   values per scale bucket (a multiple of 32)
 *       12     4  reserved 0
 *       16     8  count    elements in the payload (may be 0: the payload is then the header)
 *       24        scales   quant: per bucket (lo, unit) as two fp32; sign: per bucket one fp32
 *                 codes    element i of bucket k: bits [i * bits, (i + 1) * bits) of the bit
 *                          stream of bucket k, which starts at byte k * bucket * bits / 8 of
 *                          this section; bit j of the stream is bit (j % 8) of byte j / 8
 *                          (little-endian bit order: the first element sits in the low bits).
 *                          The last bucket may be partial (m = count - k * bucket values): its
 *                          stream takes ceil(m * bits / 8) bytes, padding bits are 0.
 *
 *   size = 24 + nbuckets * scale_bytes + (count / bucket) * bucket * bits / 8
 *             + ceil((count % bucket) * bits / 8),
 *   nbuckets = ceil(count / bucket), scale_bytes = 8 (quant) or 4 (sign).
 *
 * With the nonfinite flag set, scales and codes are all zero (a decoder rejects a flagged
 * payload whose body is not: that is a flipped flag bit) and the decoder writes NaN over the
 * whole range (DESIGN.md section 8 rule 3). Count 0 is valid: the payload is the header alone.
 * The bucket size is a positive multiple of 32, at most 2^24 (so (float)m is exact). Buckets are counted from
 * element 0 of the compressed range: a range compress (rng->offset = off) gives the same
 * scales and codes as the whole-layer compress for those elements when off is a multiple of
 * the bucket size (the random stream is indexed by the absolute element index in any case).
 *
 * quant, bits b, L = 2^b - 1, per bucket of m values v (v = in + residual, fp32):
 *   lo   = min v, hi = max v                 (order-free); then lo = lo + 0.0f, hi = hi + 0.0f
 *                                            (turns -0 into +0, so the reduction order of
 *                                            signed zeros cannot change a bit)
 *   unit = (hi - lo) / (float)L              IEEE division (CUDA: __fdiv_rn)
 *   unit = (unit >= FLT_MIN) ? unit : 0      a subnormal step is treated as a constant bucket
 *   inv  = (unit > 0) ? 1.0f / unit : 0      IEEE division (CUDA: __frcp_rn), never Inf
 *   the bucket is non-finite (flag for the whole payload) unless lo, unit and
 *   top = lo + (float)L * unit are all finite (Inf/NaN inputs, or a range beyond FLT_MAX)
 *   per element, absolute index a = rng->offset + i:
 *     u    = terse_rng_u16_to_float(terse_rng_u16_of(terse_rng_block(rng, a / 8), a % 8))
 *     t    = (v - lo) * inv;  t = t + u;
 *     t    = (t > 0) ? t : 0;  t = (t < L) ? t : L;     (NaN-safe; never converts a NaN)
 *     code = (uint32_t)(int32_t)t                         (truncation = floor, t >= 0)
 *   decoded = lo + (float)code * unit;  residual = v - decoded
 *   E[decoded] = v up to the 2^-17 step resolution of u: stochastic rounding is unbiased.
 *
 * sign, per bucket of m values:
 *   sum: 32 partial sums s[l] (fp32), s[l] accumulates |v[i]| for i % 32 == l in increasing
 *        i; then for w = 16, 8, 4, 2, 1: s[l] = s[l] + s[l + w] for l < w (a warp's
 *        shfl_down tree); sum = s[0]
 *   scale = sum / (float)m                   IEEE division; non-finite scale -> flag
 *   bit   = (v < 0) ? 1 : 0                  (sign of 0 and -0 is +)
 *   decoded = bit ? -scale : scale
 *
 * Decoders check everything before writing: the size against the header's count, the header
 * fields against the instance (magic, version, family, bits, bucket, reserved 0, known
 * flags), count == the output's count, and (without the nonfinite flag) every scale: quant
 * lo, unit >= 0 and lo + L * unit finite; sign scale finite and >= 0. Any failure:
 * TERSE_ERR_PAYLOAD, nothing read or written out of bounds.
 */
#ifndef TERSE_QUANT_H
#define TERSE_QUANT_H

#include <float.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "compressor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_QUANT_MAGIC        0x51535254u /* bytes "TRSQ" */
#define TERSE_QUANT_VERSION      1u
#define TERSE_QUANT_FAMILY_QUANT 1u
#define TERSE_QUANT_FAMILY_SIGN  2u
#define TERSE_QUANT_HDR_BYTES    24u
#define TERSE_QUANT_MIN_BITS     2u
#define TERSE_QUANT_MAX_BITS     8u

/* The header, as laid out in the payload (read and write it with memcpy: payload pointers
 * need not be aligned). */
typedef struct terse_quant_hdr {
    uint32_t magic;
    uint8_t  version;
    uint8_t  family;
    uint8_t  bits;
    uint8_t  flags;
    uint32_t bucket;
    uint32_t reserved;
    uint64_t count;
} terse_quant_hdr_t;

/* Exact payload bytes for n elements (the formula above); scale_bytes 8 (quant) or 4 (sign).
 * Returns 0 on size_t overflow (never a valid size: the header alone takes 24 bytes). */
TERSE_HD size_t
terse_quant_payload_bytes(size_t n, unsigned bits, size_t bucket, size_t scale_bytes)
{
    size_t nb   = (n + bucket - 1) / bucket;
    size_t full = n / bucket;
    size_t rest = n - full * bucket;
    size_t bpb  = bucket * bits / 8; /* bytes per full bucket */

    if (n > ((size_t)-1) / 16) {
        return 0; /* the sum below stays under 10 n + 24 */
    }
    return TERSE_QUANT_HDR_BYTES + nb * scale_bytes + full * bpb + (rest * bits + 7) / 8;
}

/* Per-bucket parameters of quant from the bucket's min and max (see above). Returns 1 when
 * the bucket is finite, 0 when the payload must carry the nonfinite flag. */
TERSE_HD int
terse_quant_bucket_params(float lo, float hi, unsigned bits, float *lo_p, float *unit_p,
                          float *inv_p)
{
    float L = (float)((1u << bits) - 1u);
    float unit, inv, top;

    lo   = lo + 0.0f;
    hi   = hi + 0.0f;
    unit = (hi - lo) / L;
    unit = (unit >= FLT_MIN) ? unit : 0.0f; /* also maps NaN to 0: checked below via hi */
    inv  = (unit > 0.0f) ? 1.0f / unit : 0.0f;
    top  = lo + L * unit;
    *lo_p   = lo;
    *unit_p = unit;
    *inv_p  = inv;
    /* x - x == 0 exactly for finite x, NaN otherwise (no isfinite: it must vectorise and
     * behave alike in nvcc) */
    return ((lo - lo) == 0.0f) && ((hi - hi) == 0.0f) && ((hi - lo) - (hi - lo) == 0.0f) &&
           ((top - top) == 0.0f);
}

/* The code of one value (see above). */
TERSE_HD uint32_t
terse_quant_code(float v, float lo, float inv, float u, float L)
{
    float t = (v - lo) * inv;

    t = t + u;
    t = (t > 0.0f) ? t : 0.0f;
    t = (t < L) ? t : L;
    return (uint32_t)(int32_t)t; /* t <= 255: the signed conversion vectorises */
}

TERSE_HD float
terse_quant_decode(uint32_t code, float lo, float unit)
{
    return lo + (float)(int32_t)code * unit;
}

/* Checks a decoded bucket's scales (decoder side). */
TERSE_HD int
terse_quant_scales_ok(float lo, float unit, unsigned bits)
{
    float L   = (float)((1u << bits) - 1u);
    float top = lo + L * unit;

    return ((lo - lo) == 0.0f) && (unit >= 0.0f) && ((unit - unit) == 0.0f) &&
           ((top - top) == 0.0f);
}

/* Random draw of absolute element a, in [0, 1). */
TERSE_HD float
terse_quant_uniform(const terse_rng_t *rng, uint64_t a)
{
    return terse_rng_u16_to_float(terse_rng_u16_of(terse_rng_block(rng, a >> 3),
                                                   (unsigned)(a & 7u)));
}


/* ---------------------------------------------------------------- CPU side (quant.c, sign.c) */
#ifndef __CUDACC__

#if defined(__BYTE_ORDER__) && (__BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__)
#error "terse payloads are little-endian: port the packers before building on this host"
#endif

/* Values the CPU kernels handle at once: stack buffers of this many floats. A multiple of 32,
 * so chunks of a bucket start on byte boundaries of the code stream. */
#define TERSE_QUANT_CHUNK 512

/* The hot loops are compiled three times, for the baseline x86-64 ISA, AVX2 and AVX-512, and
 * picked at run time by terse__quant_isa(). The three run the same integer and IEEE fp32
 * operations (no FMA: -ffp-contract=off), so their results are bit-identical. */
#if defined(__x86_64__) && defined(__GNUC__)
#define TERSE_QUANT_MULTIVERSION  1
#define TERSE_QUANT_TARGET_AVX2   __attribute__((target("avx2")))
#define TERSE_QUANT_TARGET_AVX512 __attribute__((target("avx2,avx512f,avx512vl,avx512bw,avx512dq")))
#else
#define TERSE_QUANT_MULTIVERSION  0
#define TERSE_QUANT_TARGET_AVX2
#define TERSE_QUANT_TARGET_AVX512
#endif
#define TERSE_QUANT_INLINE static inline __attribute__((always_inline))

#define TERSE_QUANT_ISA_BASE   0
#define TERSE_QUANT_ISA_AVX2   1
#define TERSE_QUANT_ISA_AVX512 2
/* The best kernel version this CPU runs (TERSE_QUANT_ISA_*), at most terse__quant_isa_max
 * (tests lower it to compare the versions bit for bit). */
extern int terse__quant_isa_max;
int terse__quant_isa(void);

/* Resolves a bucket size: 0 means TERSE_QUANT_BUCKET (512 before terse_init()). Returns
 * TERSE_ERR_INVALID unless the result is a positive multiple of 32. */
terse_status_t terse__quant_bucket(uint32_t bucket, size_t *bucket_p);

/* Writes the 24-byte header at out (any alignment). */
void terse__quant_hdr_write(void *out, unsigned family, unsigned bits, uint32_t flags,
                            size_t bucket, size_t count);

/* Checks a payload's header and size against what the instance expects for `count`
 * elements; *flags_p gets the header's flags. Returns TERSE_OK or TERSE_ERR_PAYLOAD. */
terse_status_t terse__quant_hdr_check(const void *in, size_t in_bytes, unsigned family,
                                      unsigned bits, size_t bucket, size_t count,
                                      size_t scale_bytes, uint32_t *flags_p);

/* Writes NaN over a whole output buffer (fp32, fp16 or bf16). */
void terse__quant_fill_nan(void *out, terse_dtype_t dtype, size_t n);

/* Loads m values of in starting at element start, as fp32, adding the residual (may be NULL)
 * at the same positions: v = in + residual. */
TERSE_QUANT_INLINE void
terse__quant_load(const terse_buf_t *in, size_t start, size_t m, const float *residual,
                  float *v)
{
    size_t i;

    if (in->dtype == TERSE_FLOAT32) {
        const float *x = (const float *)in->ptr + start;
        if (residual != NULL) {
            for (i = 0; i < m; ++i) {
                v[i] = x[i] + residual[i];
            }
        } else {
            memcpy(v, x, m * sizeof(float));
        }
        return;
    }
    terse__convert_to_f32((const uint16_t *)in->ptr + start, in->dtype, v, m);
    if (residual != NULL) {
        for (i = 0; i < m; ++i) {
            v[i] = v[i] + residual[i];
        }
    }
}

#endif /* !__CUDACC__ */

#ifdef __cplusplus
}
#endif

#endif /* TERSE_QUANT_H */
