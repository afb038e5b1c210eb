/*
 * cast: values travel as 16-bit floats and are summed while compressed (summable class, no
 * header: DESIGN.md section 8 rule 6; the payload is n elements of sum_dtype). Private and
 * C-compatible, shared with a future cast_cuda.cu.
 *
 * Parameter: 0 = bf16 (spec "cast:bf16" or "cast"), 1 = fp16 ("cast:fp16"). The generic spec
 * formatter prints them as "cast:0" / "cast:1"; the parser accepts those too, so a formatted
 * spec parses back to the same instance.
 *
 * bf16, per value v = in + residual:
 *   payload = terse_float_to_bf16(v)               (round to nearest even)
 *   own     = terse_bf16_to_float(payload)         residual = v - own
 *   decoded = terse_bf16_to_float(summed) * scale
 *
 * fp16 (p = nranks; every rank sends fp16(v / p), the sum of p payloads is the mean):
 *   inv_p   = 1.0f / (float)p                      (once per instance)
 *   clip    = the largest fp16 value <= 65504 / (p * (1 + 2^-11)^p)   (p == 1: 65504)
 *             so that p payloads summed in fp16, rounding after every addition, stay below
 *             65520 and cannot overflow to Inf (65504 / p alone is not enough: for p = 3,
 *             fp16(65504 / 3) = 21840 and 3 * 21840 rounds to Inf)
 *   w       = v * inv_p;  w = (w < clip) ? w : clip;  w = (w > -clip) ? w : -clip
 *   payload = terse__float_to_half(w)              (round to nearest even)
 *   own     = terse__half_to_float(payload) * (float)p;   residual = v - own
 *   decoded = terse__half_to_float(summed) * ((float)p * scale)
 *   What saturation clips goes to the residual (error feedback sends it later).
 *
 * Non-finite v anywhere: flag, residual reset to 0, every payload element NaN (fp16 0x7fff,
 * bf16 0x7fc0): NaN survives the sum, so every rank decodes NaN over the layer.
 */
#ifndef TERSE_CAST_H
#define TERSE_CAST_H

#include "compressor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_CAST_BF16 0
#define TERSE_CAST_FP16 1

#define TERSE_CAST_NAN_BF16 0x7fc0u
#define TERSE_CAST_NAN_FP16 0x7fffu

/* Element type of the summed payload for a parameter: TERSE_BFLOAT16 for bf16, TERSE_FLOAT16
 * for fp16. (The ops table holds one sum_dtype per family, BFLOAT16 for cast; the wire
 * algorithm must ask this for fp16 until the table gets a per-instance hook.) */
terse_dtype_t terse__cast_sum_dtype(double param);

/* The fp16 saturation bound for p ranks (see above), as a float holding an fp16 value. */
float terse__cast_fp16_clip(int nranks);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_CAST_H */
