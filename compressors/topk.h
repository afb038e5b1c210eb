/*
 * Top-k sparsification (private, C-compatible: shared by topk.c and a future topk_cuda.cu).
 *
 * Families
 *   topk   exact: the k = max(1, ceil(density * count)) largest |v| of v = in + residual,
 *          ties broken by the lowest index. CPU: a radix select on the bit pattern of |v|.
 *          One pass histograms the high 16 bits. When the buckets from the top down to the
 *          one holding the k-th largest key hold few values (<= 2 k + 1024, no heavy ties),
 *          one more pass collects them and the select finishes among them; otherwise a pass
 *          histograms the low 16 bits inside that bucket and a last pass emits the
 *          selection in index order.
 *   topkt  threshold-sampled (DGC style): a threshold is estimated from a sample of |v| drawn
 *          from the rng stream; the values at or above it are candidates; the selection is
 *          then truncated (keep the largest, lowest index on ties) or padded (by the
 *          next-largest among the rest) to exactly k. With these deterministic rules the
 *          result is the exact top-k set: the sample only changes the cost (one threshold
 *          pass and a select over ~1.5 k candidates instead of a select over the layer); a
 *          sample that misses (too few or too many candidates) falls back to the exact select.
 *
 * k is fixed per (layer, plan), so every rank sends the same bytes (DESIGN.md section 8,
 * rule 7). Payloads are gathered (sparse wire class) and carry a header (rule 6):
 *
 *   offset  size  field
 *        0     4  magic    TERSE_TOPK_MAGIC
 *        4     2  version  TERSE_TOPK_VERSION
 *        6     2  family   TERSE_TOPK_FAMILY_EXACT or _SAMPLED
 *        8     4  flags    TERSE_CMP_NONFINITE or 0 (other bits: rejected)
 *       12     4  reserved 0
 *       16     8  count    elements of the layer
 *       24     8  k
 *       32  8 k   k pairs (uint32 index, fp32 value), strictly increasing index
 *
 * All fields little-endian (host order: every rank of a job shares it). Indices are uint32,
 * so a layer holds at most UINT32_MAX elements (create refuses more). Decoders validate
 * the size, every header field against the instance, every index (< count, strictly
 * increasing) and every value (finite unless the flag is set) before writing anything.
 * On TERSE_CMP_NONFINITE the pairs are (0..k-1, NaN) and the decoder writes NaN over the
 * whole layer (decompress) or the whole accumulator (decompress_add), so every rank's sum is
 * non-finite (rule 3).
 */
#ifndef TERSE_TOPK_H
#define TERSE_TOPK_H

#include <stddef.h>
#include <stdint.h>

#include "compressor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_TOPK_MAGIC          0x314b5054u /* "TPK1" in memory order */
#define TERSE_TOPK_VERSION        1u
#define TERSE_TOPK_FAMILY_EXACT   1u
#define TERSE_TOPK_FAMILY_SAMPLED 2u
#define TERSE_TOPK_HEADER_BYTES   32u
#define TERSE_TOPK_PAIR_BYTES     8u

typedef struct terse_topk_header {
    uint32_t magic;
    uint16_t version;
    uint16_t family;
    uint32_t flags;
    uint32_t reserved;
    uint64_t count;
    uint64_t k;
} terse_topk_header_t;

/* k = max(1, ceil(density * count)), capped at count; the ceiling forgives a relative
 * rounding excess of 1e-12 (0.1 * 1000 is 100.00000000000001 in double, and gives 100).
 * Every rank computes it with the same IEEE operations, so it agrees everywhere. */
static inline size_t
terse_topk_k(double density, size_t count)
{
    double x = density * (double)count;
    size_t k = (size_t)x;

    if ((double)k < x * (1.0 - 1e-12)) {
        ++k;
    }
    if (k < 1) {
        k = 1;
    }
    return (k > count) ? count : k;
}

/* The selection key: the bit pattern of |v|. For finite v, a larger |v| has a larger key,
 * and +0 and -0 share key 0. */
TERSE_HD uint32_t
terse_topk_key(float v)
{
    union {
        float    f;
        uint32_t u;
    } c;
    c.f = v;
    return c.u & 0x7fffffffu;
}

#ifdef __cplusplus
}
#endif

#endif /* TERSE_TOPK_H */
