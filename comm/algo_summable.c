/*
 * algo_summable: payloads that add while compressed (bf16 casts, shared-seed random-k,
 * PowerSGD's P then Q) are summed with the deterministic sum of algo_native.c.
 *
 *   stage 0:  payload_l = compress(x_l + e_l)           for every summable layer l
 *   stage s:  payload_l = stage(l, s, summed_{s-1})     for layers with more than s stages
 *             fused = [payload_l ... | sentinel_l ...]   one buffer per payload dtype
 *             summed = terse__algo_sum(fused)            one message per step
 *   last stage of l:  out_l = scale * decompress(summed_l)
 *
 * Payloads carry no header (rule 6): their sizes come from payload_size(), the same on every
 * rank. Each layer appends one sentinel element per stage, 0 or NaN (NaN survives the sum,
 * rule 3): on NaN every rank writes NaN into the layer and resets its residual and the
 * instance's state.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "terse_internal.h"

#define SUMMABLE_NGROUPS 3 /* fp32, fp16, bf16 payloads */

typedef struct summable_group {
    terse_dtype_t dtype;
    size_t        max_elems;          /* over stages: payload + sentinels */
    void         *buf[2];             /* double buffer: summed stage s-1, payload of stage s */
    void         *sum_ws;
} summable_group_t;

typedef struct algo_summable_ws {
    unsigned          nstages;        /* max over layers */
    unsigned         *layer_stages;   /* per layer */
    size_t           *pay;            /* [layer * nstages + s]: payload bytes */
    summable_group_t  groups[SUMMABLE_NGROUPS];
    uint32_t         *flags;          /* per layer, this call */
    size_t           *lay_off;        /* per layer: payload offset in its group buffer */
} algo_summable_ws_t;

/* cast:fp16 sums fp16 payloads although its table says bf16 (compressors/cast.h); weak, so
 * that a build without cast still links. */
terse_dtype_t terse__cast_sum_dtype(double param) __attribute__((weak));

static terse_dtype_t
summable_dtype(const terse_layer_state_t *ly)
{
    if ((terse__cast_sum_dtype != NULL) && (strcmp(ly->ops->name, "cast") == 0)) {
        return terse__cast_sum_dtype(ly->param);
    }
    return ly->ops->sum_dtype;
}

static int
summable_group_of(terse_dtype_t dt)
{
    return (dt == TERSE_FLOAT16) ? 1 : ((dt == TERSE_BFLOAT16) ? 2 : 0);
}

void
terse__algo_summable_cleanup(terse_slot_t *slot)
{
    algo_summable_ws_t *ws = slot->ws[TERSE_CLASS_SUMMABLE];
    int g;

    if (ws == NULL) {
        return;
    }
    for (g = 0; g < SUMMABLE_NGROUPS; ++g) {
        free(ws->groups[g].buf[0]);
        free(ws->groups[g].buf[1]);
        free(ws->groups[g].sum_ws);
    }
    free(ws->layer_stages);
    free(ws->pay);
    free(ws->flags);
    free(ws->lay_off);
    free(ws);
    slot->ws[TERSE_CLASS_SUMMABLE] = NULL;
}

terse_status_t
terse__algo_summable_setup(terse_slot_t *slot, terse_transport_t *tp)
{
    algo_summable_ws_t *ws;
    size_t l, bytes, elems[SUMMABLE_NGROUPS];
    unsigned s;
    int g;

    if (slot->nclass[TERSE_CLASS_SUMMABLE] == 0) {
        return TERSE_OK;
    }
    ws = calloc(1, sizeof(*ws));
    if (ws == NULL) {
        return TERSE_ERR_NOMEM;
    }
    slot->ws[TERSE_CLASS_SUMMABLE] = ws;
    ws->layer_stages = calloc(slot->nlayers, sizeof(*ws->layer_stages));
    ws->flags        = calloc(slot->nlayers, sizeof(*ws->flags));
    ws->lay_off      = calloc(slot->nlayers, sizeof(*ws->lay_off));
    if ((ws->layer_stages == NULL) || (ws->flags == NULL) || (ws->lay_off == NULL)) {
        return TERSE_ERR_NOMEM;
    }
    ws->nstages = 1;
    for (l = 0; l < slot->nlayers; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        if (ly->cls != TERSE_CLASS_SUMMABLE) {
            continue;
        }
        ws->layer_stages[l] = TERSE_MAX(ly->ops->nstages(ly->cmp), 1u);
        ws->nstages         = TERSE_MAX(ws->nstages, ws->layer_stages[l]);
    }
    ws->pay = calloc(slot->nlayers * ws->nstages, sizeof(*ws->pay));
    if (ws->pay == NULL) {
        return TERSE_ERR_NOMEM;
    }
    for (g = 0; g < SUMMABLE_NGROUPS; ++g) {
        ws->groups[g].dtype = (g == 0) ? TERSE_FLOAT32 : ((g == 1) ? TERSE_FLOAT16 : TERSE_BFLOAT16);
    }
    for (s = 0; s < ws->nstages; ++s) {
        memset(elems, 0, sizeof(elems));
        for (l = 0; l < slot->nlayers; ++l) {
            const terse_layer_state_t *ly = &slot->layers[l];
            size_t *pay                   = &ws->pay[l * ws->nstages + s];
            size_t es;
            if ((ly->cls != TERSE_CLASS_SUMMABLE) || (s >= ws->layer_stages[l])) {
                continue;
            }
            TERSE_CHECK(ly->ops->payload_size(ly->cmp, ly->count, s, pay));
            g  = summable_group_of(summable_dtype(ly));
            es = terse_dtype_size(ws->groups[g].dtype);
            if ((*pay % es) != 0) {
                terse_error(TERSE_LOG_COMM, "%s payload of %zu bytes is not a %s array",
                            ly->ops->name, *pay, (g == 0) ? "fp32" : "16-bit");
                return TERSE_ERR_INTERNAL;
            }
            elems[g] += *pay / es + 1; /* + the sentinel */
        }
        for (g = 0; g < SUMMABLE_NGROUPS; ++g) {
            ws->groups[g].max_elems = TERSE_MAX(ws->groups[g].max_elems, elems[g]);
        }
    }
    for (g = 0; g < SUMMABLE_NGROUPS; ++g) {
        summable_group_t *gr = &ws->groups[g];
        size_t es            = terse_dtype_size(gr->dtype);
        if (gr->max_elems == 0) {
            continue;
        }
        gr->buf[0] = malloc(gr->max_elems * es);
        gr->buf[1] = malloc(gr->max_elems * es);
        bytes      = terse__algo_sum_ws_size(tp->nranks, gr->max_elems, gr->dtype);
        gr->sum_ws = malloc(bytes);
        if ((gr->buf[0] == NULL) || (gr->buf[1] == NULL) || (gr->sum_ws == NULL)) {
            terse_error(TERSE_LOG_COMM, "failed to allocate the summable payload buffers");
            return TERSE_ERR_NOMEM;
        }
        slot->mem_bytes += 2 * gr->max_elems * es + bytes;
    }
    return TERSE_OK;
}

static int
summable_nonfinite(const void *p, terse_dtype_t dt, size_t n)
{
    size_t i;

    for (i = 0; i < n; ++i) {
        if (!isfinite(terse__load_f32(p, dt, i))) {
            return 1;
        }
    }
    return 0;
}

terse_status_t
terse__algo_summable_run(terse_slot_t *slot, terse_call_t *call)
{
    algo_summable_ws_t *ws = slot->ws[TERSE_CLASS_SUMMABLE];
    const int p            = call->tp->nranks;
    size_t l, off[SUMMABLE_NGROUPS], sent[SUMMABLE_NGROUPS], prev_off[SUMMABLE_NGROUPS];
    size_t *lay_off;
    unsigned s;
    int g, cur = 0;
    terse_status_t status = TERSE_OK;

    if (ws == NULL) {
        return TERSE_OK;
    }
    lay_off = ws->lay_off;
    memset(ws->flags, 0, slot->nlayers * sizeof(*ws->flags));
    for (s = 0; s < ws->nstages; ++s) {
        memset(off, 0, sizeof(off));
        memset(sent, 0, sizeof(sent));
        /* payloads of this stage, packed per group; the sentinels follow them */
        for (l = 0; l < slot->nlayers; ++l) {
            terse_layer_state_t *ly = &slot->layers[l];
            size_t pay              = ws->pay[l * ws->nstages + s];
            summable_group_t *gr;
            unsigned char *dst;
            double sq = 0.0;
            if ((ly->cls != TERSE_CLASS_SUMMABLE) || (s >= ws->layer_stages[l])) {
                continue;
            }
            g   = summable_group_of(summable_dtype(ly));
            gr  = &ws->groups[g];
            dst = (unsigned char *)gr->buf[cur] + off[g];
            if (s == 0) {
                terse_buf_t in = {(void *)((const unsigned char *)call->send +
                                           ly->offset * terse__esize(call->dtype)),
                                  ly->count, call->dtype, TERSE_MEM_HOST};
                /* summed payloads need equal randomness on every rank (random-k indices) */
                terse_rng_t rng = terse_rng_make(call->seed, TERSE_RNG_RANDOMK, (uint32_t)l,
                                                 call->step, TERSE_RNG_SHARED);
                uint32_t flags = 0;
                TERSE_CHECK_GOTO(ly->ops->compress(ly->cmp, &in,
                                                   call->error_feedback ?
                                                       terse__fb_layer(&slot->fb, l) : NULL,
                                                   &rng, dst, pay, &flags, &sq, NULL),
                                 status, out);
                ws->flags[l] |= flags;
            } else {
                const unsigned char *prev =
                    (const unsigned char *)gr->buf[cur ^ 1] + lay_off[l];
                TERSE_CHECK_GOTO(ly->ops->stage(ly->cmp, s, prev,
                                                ws->pay[l * ws->nstages + s - 1], dst, pay,
                                                &sq, NULL),
                                 status, out);
                if (summable_nonfinite(dst, gr->dtype, pay / terse_dtype_size(gr->dtype))) {
                    ws->flags[l] |= TERSE_CMP_NONFINITE;
                }
            }
            if (s + 1 == ws->layer_stages[l]) {
                call->sq_err += sq;
            }
            lay_off[l] = off[g];
            off[g] += pay;
        }
        for (g = 0; g < SUMMABLE_NGROUPS; ++g) {
            sent[g] = off[g] / TERSE_MAX(terse_dtype_size(ws->groups[g].dtype), 1);
        }
        for (l = 0; l < slot->nlayers; ++l) {
            terse_layer_state_t *ly = &slot->layers[l];
            if ((ly->cls != TERSE_CLASS_SUMMABLE) || (s >= ws->layer_stages[l])) {
                continue;
            }
            g = summable_group_of(summable_dtype(ly));
            terse__store_f32(ws->groups[g].buf[cur], ws->groups[g].dtype, sent[g]++,
                             (ws->flags[l] & TERSE_CMP_NONFINITE) ? NAN : 0.0f);
        }
        /* one summed message per payload dtype */
        for (g = 0; g < SUMMABLE_NGROUPS; ++g) {
            summable_group_t *gr = &ws->groups[g];
            if (sent[g] == 0) {
                continue;
            }
            TERSE_CHECK_GOTO(terse__algo_sum(call->tp, gr->buf[cur], gr->buf[cur], sent[g],
                                             gr->dtype, 1.0f, gr->sum_ws),
                             status, out);
            prev_off[g] = off[g] / terse_dtype_size(gr->dtype); /* first sentinel */
        }
        /* sentinels -> flags, and the layers whose last stage this was */
        for (l = 0; l < slot->nlayers; ++l) {
            terse_layer_state_t *ly = &slot->layers[l];
            summable_group_t *gr;
            float sentinel;
            if ((ly->cls != TERSE_CLASS_SUMMABLE) || (s >= ws->layer_stages[l])) {
                continue;
            }
            g        = summable_group_of(summable_dtype(ly));
            gr       = &ws->groups[g];
            sentinel = terse__load_f32(gr->buf[cur], gr->dtype, prev_off[g]++);
            if (!isfinite(sentinel)) {
                ws->flags[l] |= TERSE_CMP_NONFINITE;
            }
            if (s + 1 < ws->layer_stages[l]) {
                continue;
            }
            if (ws->flags[l] & TERSE_CMP_NONFINITE) {
                continue; /* written below */
            }
            {
                terse_buf_t outb = {(unsigned char *)call->recv +
                                        ly->offset * terse__esize(call->dtype),
                                    ly->count, call->dtype, TERSE_MEM_HOST};
                TERSE_CHECK_GOTO(ly->ops->decompress(ly->cmp,
                                                     (unsigned char *)gr->buf[cur] + lay_off[l],
                                                     ws->pay[l * ws->nstages + s], call->scale,
                                                     &outb, NULL),
                                 status, out);
            }
        }
        cur ^= 1;
    }
    for (l = 0; l < slot->nlayers; ++l) {
        terse_layer_state_t *ly = &slot->layers[l];
        if ((ly->cls != TERSE_CLASS_SUMMABLE) || !(ws->flags[l] & TERSE_CMP_NONFINITE)) {
            continue;
        }
        terse__fill_nan(call->recv, call->dtype, ly->offset, ly->count);
        terse__fb_reset_layer(&slot->fb, l, ly->count);
        if (ly->ops->reset != NULL) {
            ly->ops->reset(ly->cmp);
        }
        ++call->nonfinite;
    }
    (void)p;
out:
    return status;
}
