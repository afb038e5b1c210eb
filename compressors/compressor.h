/*
 * The compressor ops table (internal). One instance per layer: it owns that layer's state
 * (PowerSGD's Q, top-k's scratch). The residual (error feedback) is handed to it per call, the
 * random stream too; it reports a non-finite flag and the squared error it actually made.
 *
 * Wire classes (DESIGN.md section 1), from caps:
 *   TERSE_CMP_CAP_SUMMABLE  payloads add while compressed: native allreduce of the payload
 *                           (fp32, or bf16 for cast:bf16), possibly in several stages
 *                           (PowerSGD: P, then Q). No header (rule 6): sizes come from the plan.
 *   TERSE_CMP_CAP_REQUANT   per-chunk payloads with a header; the reduce-scatter owner
 *                           decompress_adds its peers' chunks, then compresses the sum again.
 *   TERSE_CMP_CAP_SPARSE    whole-layer payloads with a header; allgathered, then every rank
 *                           decompress_adds all of them in rank order.
 *   none of the three       native: the algorithm sends the values as they are.
 *
 * Ranges: compressors with TERSE_CMP_CAP_RANGE compress any sub-range [off, off + n) of their
 * layer (off is given through rng.offset, the element index of in[0] in the layer); the others
 * only the whole layer (n == count).
 */
#ifndef TERSE_COMPRESSOR_H
#define TERSE_COMPRESSOR_H

#include <stddef.h>
#include <stdint.h>

#include "terse_base.h"
#include "rng.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_CMP_CAP_CPU      (1ull << 0)  /* host buffers */
#define TERSE_CMP_CAP_CUDA     (1ull << 1)  /* device buffers (in a CUDA build) */
#define TERSE_CMP_CAP_SUMMABLE (1ull << 2)
#define TERSE_CMP_CAP_REQUANT  (1ull << 3)
#define TERSE_CMP_CAP_SPARSE   (1ull << 4)
#define TERSE_CMP_CAP_MATRIX   (1ull << 5)  /* wants a matrix shape (rows, cols) */
#define TERSE_CMP_CAP_RANGE    (1ull << 6)  /* compresses sub-ranges of its layer */
#define TERSE_CMP_CAP_RNG      (1ull << 7)  /* draws from the random stream */

/* compress() flags */
#define TERSE_CMP_NONFINITE    (1u << 0)    /* the input (plus residual) held Inf or NaN */

/* A typed view of memory. */
typedef struct terse_buf {
    void         *ptr;
    size_t        count;  /* elements */
    terse_dtype_t dtype;
    terse_mem_t   mem;
} terse_buf_t;

typedef struct terse_cmp_params {
    size_t        size;    /* sizeof(terse_cmp_params_t) */
    double        param;   /* bits, density, rank (already validated by param_parse) */
    uint32_t      layer;   /* layer index: names random streams */
    size_t        count;   /* elements in the layer */
    size_t        rows;    /* matrix shape, rows * cols == count; 0, 0 when flat */
    size_t        cols;
    terse_dtype_t dtype;   /* dtype of the gradients this instance will see */
    terse_mem_t   mem;     /* where its buffers live */
    uint32_t      bucket;  /* values per scale bucket (quant, sign); 0: TERSE_QUANT_BUCKET */
    int           nranks;  /* ranks that will sum the payloads (cast:fp16 pre-scales by 1/p) */
    uint64_t      seed;    /* base of random streams for the instance's own state (PowerSGD Q) */
} terse_cmp_params_t;

typedef struct terse_cmp_ops {
    size_t      size;       /* sizeof(terse_cmp_ops_t) */
    const char *name;       /* "quant": the family name in specs, plans and logs */
    uint64_t    caps;       /* TERSE_CMP_CAP_* */
    const char *param_doc;  /* accepted parameters for error messages: "2..8 (bits)" */
    terse_dtype_t sum_dtype;/* element type of summable payloads (fp32, or bf16 for cast) */
    /* The scheduler's candidate parameters for this family (DESIGN.md section 4), ascending,
     * ended by a negative value; {0, -1} for families without a parameter. */
    const double *grid;

    /* Parses the text after "name:" (NULL when absent) into *param_p.
     * Returns TERSE_OK or TERSE_ERR_INVALID (the caller names the accepted values). */
    terse_status_t (*param_parse)(const char *text, double *param_p);

    /* Creates an instance for one layer.
     *   [in]  params  copied
     *   [out] ctx_p   owned by the caller; release with destroy
     * Returns TERSE_OK, TERSE_ERR_INVALID (bad shape for this family), TERSE_ERR_NOMEM,
     * TERSE_ERR_UNSUPPORTED (mem not supported in this build). */
    terse_status_t (*create)(const terse_cmp_params_t *params, void **ctx_p);

    /* Exact payload bytes for n elements at stage `stage` (0 for single-stage families).
     * Fixed per plan: every rank computes the same value (rule 7). For summable families the
     * payload is an array of sum_dtype. Returns TERSE_OK, or TERSE_ERR_INVALID if n is not a
     * range this family can compress or the stage does not exist. */
    terse_status_t (*payload_size)(void *ctx, size_t n, unsigned stage, size_t *bytes_p);

    /* Number of stages (>= 1) of a summable family; 1 for the others. */
    unsigned (*nstages)(void *ctx);

    /* Compresses v = in + residual into out (stage 0 payload).
     *   [in]     in        n = in->count elements of in->dtype; in->mem must match the instance
     *   [in,out] residual  n fp32 values (the layer's residual at this range) or NULL (no
     *                      error feedback). Multi-stage families keep the pointer until the
     *                      last stage. On TERSE_CMP_NONFINITE the residual is reset to 0.
     *   [in]     rng       stream for this (layer, step, rank); rng->offset is in[0]'s index
     *   [out]    out       out_bytes == payload_size(n, 0) bytes
     *   [out]    flags_p   TERSE_CMP_NONFINITE or 0
     *   [out]    sq_err_p  ||v - D(C(v))||^2 in double, the error this input actually suffered
     *                      (multi-stage: the final value is given by the last stage); may be NULL
     * On device buffers (TERSE_MEM_CUDA) the call only enqueues: *flags_p and *sq_err_p come
     * back 0 and the real values are read lazily with terse__cmp_<family>_cuda_stat.
     * Returns TERSE_OK or TERSE_ERR_INVALID (size mismatch). */
    terse_status_t (*compress)(void *ctx, const terse_buf_t *in, float *residual,
                               const terse_rng_t *rng, void *out, size_t out_bytes,
                               uint32_t *flags_p, double *sq_err_p, terse_stream_t stream);

    /* Multi-stage summable families only (NULL otherwise): consumes the summed payload of
     * stage - 1 and writes the payload of `stage`; may update the residual kept by compress.
     * sq_err_p as in compress (written by the last stage). */
    terse_status_t (*stage)(void *ctx, unsigned stage, const void *summed, size_t summed_bytes,
                            void *out, size_t out_bytes, double *sq_err_p,
                            terse_stream_t stream);

    /* Writes scale * D(payload) into out (out->count elements of out->dtype).
     * For summable families `in` is the summed payload of the last stage.
     * Returns TERSE_OK or TERSE_ERR_PAYLOAD (size, header or contents rejected: nothing was
     * read or written out of bounds; out may be partly written). */
    terse_status_t (*decompress)(void *ctx, const void *in, size_t in_bytes, float scale,
                                 const terse_buf_t *out, terse_stream_t stream);

    /* acc[0..n) += D(payload), fp32. Required for REQUANT and SPARSE families, NULL for the
     * others. Returns TERSE_OK or TERSE_ERR_PAYLOAD. *flags_p gets the payload's flags. */
    terse_status_t (*decompress_add)(void *ctx, const void *in, size_t in_bytes, float *acc,
                                     size_t n, uint32_t *flags_p, terse_stream_t stream);

    /* Resets the instance's own state (PowerSGD Q) to its seeded initial value; called on
     * every rank when any rank raised TERSE_CMP_NONFINITE, and at plan switches. May be NULL. */
    void (*reset)(void *ctx);

    void (*destroy)(void *ctx);

    /* The instance's own state between steps (what its next step depends on besides the
     * residual: PowerSGD's Q), for terse_state_save/load and plan switches. Optional: NULL for
     * families without such state (all three NULL, or all three set). Call only between
     * steps (after decompress or before the first compress). The bytes are the family's
     * documented layout (powersgd.h), host memory, the same on every rank.
     *   state_size  [out] bytes_p  the size state_get writes now (may change between steps)
     *   state_get   [out] buf      bytes == state_size bytes
     *   state_set   [in]  buf      copied; a size or shape this instance cannot take is
     *                              TERSE_ERR_INVALID and leaves the state as it was
     * Return TERSE_OK, TERSE_ERR_INVALID, or TERSE_ERR_UNSUPPORTED (device instances). */
    terse_status_t (*state_size)(void *ctx, size_t *bytes_p);
    terse_status_t (*state_get)(void *ctx, void *buf, size_t bytes);
    terse_status_t (*state_set)(void *ctx, const void *buf, size_t bytes);
} terse_cmp_ops_t;

/* ---------------------------------------------------------------- registry and specs */
/* NULL-terminated table of the built-in families. */
extern const terse_cmp_ops_t *const terse__cmp_builtin[];

/* Looks a family up by name; NULL if unknown. */
const terse_cmp_ops_t *terse__cmp_find(const char *name);

/* A parsed spec: "quant:4" -> (quant ops, 4). "auto" gives ops NULL and is_auto 1. */
typedef struct terse_cmp_spec {
    const terse_cmp_ops_t *ops;
    double                 param;
    int                    is_auto;
} terse_cmp_spec_t;

/* Parses a spec. On failure writes a reason naming the accepted values into why (may be NULL).
 * Returns TERSE_OK or TERSE_ERR_INVALID. */
terse_status_t terse__cmp_spec_parse(const char *text, terse_cmp_spec_t *spec_p, char *why,
                                     size_t why_len);
/* Writes "quant:4" (or "none") into buf. */
void terse__cmp_spec_format(const terse_cmp_ops_t *ops, double param, char *buf, size_t len);

/* ---------------------------------------------------------------- shared helpers */
/* Element conversion, bit-identical to the CUDA intrinsics (__float2bfloat16_rn etc.). */
TERSE_HD float
terse_bf16_to_float(uint16_t h)
{
    union {
        uint32_t u;
        float    f;
    } c;
    c.u = (uint32_t)h << 16;
    return c.f;
}

TERSE_HD uint16_t
terse_float_to_bf16(float f)
{
    union {
        uint32_t u;
        float    f;
    } c;
    c.f = f;
    if ((c.u & 0x7fffffffu) > 0x7f800000u) {
        return (uint16_t)((c.u >> 16) | 0x0040u); /* quiet NaN, sign kept */
    }
    c.u += 0x7fffu + ((c.u >> 16) & 1u);          /* round to nearest even */
    return (uint16_t)(c.u >> 16);
}

float    terse__half_to_float(uint16_t h);
uint16_t terse__float_to_half(float f);

/* Reads element i of a host buffer of dtype (fp32, fp16, bf16) as float. */
static inline float
terse__load_f32(const void *p, terse_dtype_t dtype, size_t i)
{
    switch (dtype) {
    case TERSE_FLOAT16:
        return terse__half_to_float(((const uint16_t *)p)[i]);
    case TERSE_BFLOAT16:
        return terse_bf16_to_float(((const uint16_t *)p)[i]);
    default:
        return ((const float *)p)[i];
    }
}

static inline void
terse__store_f32(void *p, terse_dtype_t dtype, size_t i, float v)
{
    switch (dtype) {
    case TERSE_FLOAT16:
        ((uint16_t *)p)[i] = terse__float_to_half(v);
        break;
    case TERSE_BFLOAT16:
        ((uint16_t *)p)[i] = terse_float_to_bf16(v);
        break;
    default:
        ((float *)p)[i] = v;
        break;
    }
}

/* Converts n elements to fp32 (dst may not alias src unless both are fp32). */
void terse__convert_to_f32(const void *src, terse_dtype_t dtype, float *dst, size_t n);
/* Converts n fp32 values to dtype, multiplying by scale first (scale 1: exact copy for fp32). */
void terse__convert_from_f32(const float *src, float scale, void *dst, terse_dtype_t dtype,
                             size_t n);

/* Squared norm of v[0..n) in double over 8 fixed lanes (vectorisable; the same bits on every
 * call for the same input). */
double terse__cmp_energy(const float *v, size_t n);
/* dst += src, returning terse__cmp_energy(dst) of the result (same lanes, same order) in one
 * pass. */
double terse__cmp_add_energy(float *dst, const float *src, size_t n);

/* Parses a density in (0, 1] (top-k, random-k). Returns TERSE_OK or TERSE_ERR_INVALID. */
terse_status_t terse__cmp_parse_density(const char *text, double *param_p);

/* Checks a CUDA-memory request against this build. */
terse_status_t terse__cmp_check_mem(const char *name, terse_mem_t mem);

/* ---------------------------------------------------------------- error feedback */
/* Residuals for a set of layers, fp32, zero-initialised, one contiguous allocation. */
typedef struct terse_fb {
    float       *data;    /* total floats */
    size_t       total;
    size_t      *offset;  /* per layer: first float */
    size_t       nlayers;
    terse_mem_t  mem;
} terse_fb_t;

terse_status_t terse__fb_create(const size_t *counts, size_t nlayers, terse_mem_t mem,
                                terse_fb_t *fb);
void  terse__fb_destroy(terse_fb_t *fb);
float *terse__fb_layer(const terse_fb_t *fb, size_t layer);
void  terse__fb_reset_layer(terse_fb_t *fb, size_t layer, size_t count);
void  terse__fb_reset_all(terse_fb_t *fb);
size_t terse__fb_bytes(const terse_fb_t *fb);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_COMPRESSOR_H */
