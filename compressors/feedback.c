/*
 * Error feedback: one fp32 residual per layer, kept across steps (DESIGN.md section 8 rule 4).
 * Residuals belong to layers, not to compressors: a plan change resets them collectively.
 * TERSE_MEM_CUDA (CUDA builds): data is device memory (cuda_util.h), the offsets stay on the
 * host; resets are synchronous (plan switches and non-finite steps only, never per step).
 */
#include <stdlib.h>
#include <string.h>

#include "compressor.h"
/* the MPI shim's copy of this file (TERSE_CMP_HOST_ONLY) has no device residuals */
#if TERSE_HAVE_CUDA && !defined(TERSE_CMP_HOST_ONLY)
#define FB_CUDA 1
#include "cuda_util.h"
#else
#define FB_CUDA 0
#endif

/* Zeroes count floats at data (device memory when mem is TERSE_MEM_CUDA). */
static void
fb_zero(const terse_fb_t *fb, float *data, size_t count)
{
    if (count == 0) {
        return;
    }
#if FB_CUDA
    if (fb->mem == TERSE_MEM_CUDA) {
        /* the legacy default stream, then a wait: ordered before any later launch */
        if ((terse__cuda_memset_async(data, 0, count * sizeof(float), NULL) != TERSE_OK) ||
            (terse__cuda_stream_sync(NULL) != TERSE_OK)) {
            terse_error(TERSE_LOG_CMP, "failed to reset %zu device residuals", count);
        }
        return;
    }
#endif
    (void)fb;
    memset(data, 0, count * sizeof(float));
}

terse_status_t
terse__fb_create(const size_t *counts, size_t nlayers, terse_mem_t mem, terse_fb_t *fb)
{
    size_t i, total = 0;

    memset(fb, 0, sizeof(*fb));
    TERSE_CHECK(terse__cmp_check_mem("error feedback", mem));
    fb->offset = calloc(nlayers + 1, sizeof(*fb->offset));
    if (fb->offset == NULL) {
        goto err_nomem;
    }
    for (i = 0; i < nlayers; ++i) {
        fb->offset[i] = total;
        total += counts[i];
    }
    fb->offset[nlayers] = total;
#if FB_CUDA
    if (mem == TERSE_MEM_CUDA) {
        void *d = NULL;
        terse_status_t st = terse__cuda_calloc(&d, TERSE_MAX(total, 1) * sizeof(float));
        if (st != TERSE_OK) {
            free(fb->offset);
            fb->offset = NULL;
            terse_error(TERSE_LOG_CMP, "failed to allocate device residuals for %zu layers",
                        nlayers);
            return st;
        }
        fb->data = d;
    }
#endif
    if (mem == TERSE_MEM_HOST) {
        fb->data = calloc(TERSE_MAX(total, 1), sizeof(float));
    }
    if (fb->data == NULL) {
        goto err_free_offset;
    }
    fb->total   = total;
    fb->nlayers = nlayers;
    fb->mem     = mem;
    return TERSE_OK;

err_free_offset:
    free(fb->offset);
    fb->offset = NULL;
err_nomem:
    terse_error(TERSE_LOG_CMP, "failed to allocate residuals for %zu layers", nlayers);
    return TERSE_ERR_NOMEM;
}

void
terse__fb_destroy(terse_fb_t *fb)
{
#if FB_CUDA
    if ((fb->mem == TERSE_MEM_CUDA) && (fb->data != NULL)) {
        terse__cuda_free(fb->data);
        fb->data = NULL;
    }
#endif
    free(fb->data);
    free(fb->offset);
    memset(fb, 0, sizeof(*fb));
}

float *
terse__fb_layer(const terse_fb_t *fb, size_t layer)
{
    return fb->data + fb->offset[layer];
}

void
terse__fb_reset_layer(terse_fb_t *fb, size_t layer, size_t count)
{
    fb_zero(fb, fb->data + fb->offset[layer], count);
}

void
terse__fb_reset_all(terse_fb_t *fb)
{
    fb_zero(fb, fb->data, fb->total);
}

size_t
terse__fb_bytes(const terse_fb_t *fb)
{
    return fb->total * sizeof(float) + (fb->nlayers + 1) * sizeof(*fb->offset);
}
