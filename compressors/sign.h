/*
 * sign: 1 bit per value plus an fp32 scale (mean |v|) per bucket (EF-signSGD). Private and
 * C-compatible, shared with a future sign_cuda.cu. The payload format (header, scales, codes)
 * and the exact arithmetic, including the order of the per-bucket sum, are defined in
 * quant.h; this header adds the per-element helpers.
 */
#ifndef TERSE_SIGN_H
#define TERSE_SIGN_H

#include "quant.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_SIGN_LANES 32 /* partial sums of the bucket's mean |v| (a warp) */

/* Code of one value: 1 for v < 0, 0 otherwise (0 and -0 are +). */
TERSE_HD uint32_t
terse_sign_code(float v)
{
    return (v < 0.0f) ? 1u : 0u;
}

TERSE_HD float
terse_sign_decode(uint32_t code, float scale)
{
    return code ? -scale : scale;
}

/* Scale of a bucket of m values from its 32 partial sums (modified: the tree runs in place).
 * Returns 1 when the scale is finite. */
TERSE_HD int
terse_sign_scale(float *s, size_t m, float *scale_p)
{
    unsigned w, l;
    float scale;

    for (w = TERSE_SIGN_LANES / 2; w >= 1; w /= 2) {
        for (l = 0; l < w; ++l) {
            s[l] = s[l] + s[l + w];
        }
    }
    scale    = s[0] / (float)m;
    *scale_p = scale;
    return (scale - scale) == 0.0f;
}

#ifdef __cplusplus
}
#endif

#endif /* TERSE_SIGN_H */
