/*
 * Error feedback: one fp32 residual per layer, kept across steps (DESIGN.md section 8 rule 4).
 * Residuals belong to layers, not to compressors: a plan change resets them collectively.
 */
#include <stdlib.h>
#include <string.h>

#include "compressor.h"

terse_status_t
terse__fb_create(const size_t *counts, size_t nlayers, terse_mem_t mem, terse_fb_t *fb)
{
    size_t i, total = 0;

    memset(fb, 0, sizeof(*fb));
    if (mem != TERSE_MEM_HOST) {
        terse_error(TERSE_LOG_CMP, "device residuals are allocated by the CUDA path");
        return TERSE_ERR_UNSUPPORTED;
    }
    fb->offset = calloc(nlayers + 1, sizeof(*fb->offset));
    if (fb->offset == NULL) {
        goto err_nomem;
    }
    for (i = 0; i < nlayers; ++i) {
        fb->offset[i] = total;
        total += counts[i];
    }
    fb->offset[nlayers] = total;
    fb->data            = calloc(TERSE_MAX(total, 1), sizeof(float));
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
    memset(fb->data + fb->offset[layer], 0, count * sizeof(float));
}

void
terse__fb_reset_all(terse_fb_t *fb)
{
    memset(fb->data, 0, fb->total * sizeof(float));
}

size_t
terse__fb_bytes(const terse_fb_t *fb)
{
    return fb->total * sizeof(float) + (fb->nlayers + 1) * sizeof(*fb->offset);
}
