/*
 * algo_sparse: allgather of fixed-size sparse payloads (top-k), then a scatter-add.
 *
 *   every rank:  m = [C(x_l + e_l) for every sparse layer l]    (sizes fixed by the plan)
 *                M = allgather(m)                                 one message step
 *                for l: acc = 0; for r = 0 .. p-1: acc += D(M[r].l)   (rank order, fp32)
 *                       out_l = scale * acc
 *
 * A rank sends (p - 1) |m|: cheaper than a plain allreduce (2 (p - 1) / p S) only while
 * |m| p < 2 S, i.e. top-k density below 1/p. The slot builder (comm/terse.c) checks that and
 * falls back to another class otherwise. A flagged payload (non-finite input on some rank)
 * makes every rank write NaN into the layer and reset its residual.
 */
#include <stdlib.h>
#include <string.h>

#include "terse_internal.h"

typedef struct algo_sparse_ws {
    size_t        *pay;      /* [l] payload bytes */
    size_t        *lo;       /* [l] offset in the fused message */
    size_t         msg;      /* fused message bytes */
    unsigned char *send;     /* msg */
    unsigned char *all;      /* p * msg */
    float         *acc;      /* largest sparse layer */
    uint32_t      *flags;    /* [l] */
} algo_sparse_ws_t;

void
terse__algo_sparse_cleanup(terse_slot_t *slot)
{
    algo_sparse_ws_t *ws = slot->ws[TERSE_CLASS_SPARSE];

    if (ws == NULL) {
        return;
    }
    free(ws->pay);
    free(ws->lo);
    free(ws->send);
    free(ws->all);
    free(ws->acc);
    free(ws->flags);
    free(ws);
    slot->ws[TERSE_CLASS_SPARSE] = NULL;
}

terse_status_t
terse__algo_sparse_setup(terse_slot_t *slot, terse_transport_t *tp)
{
    algo_sparse_ws_t *ws;
    size_t l, maxn = 0;

    if (slot->nclass[TERSE_CLASS_SPARSE] == 0) {
        return TERSE_OK;
    }
    ws = calloc(1, sizeof(*ws));
    if (ws == NULL) {
        return TERSE_ERR_NOMEM;
    }
    slot->ws[TERSE_CLASS_SPARSE] = ws;
    ws->pay   = calloc(slot->nlayers, sizeof(size_t));
    ws->lo    = calloc(slot->nlayers, sizeof(size_t));
    ws->flags = calloc(slot->nlayers, sizeof(uint32_t));
    if ((ws->pay == NULL) || (ws->lo == NULL) || (ws->flags == NULL)) {
        return TERSE_ERR_NOMEM;
    }
    for (l = 0; l < slot->nlayers; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        if (ly->cls != TERSE_CLASS_SPARSE) {
            continue;
        }
        TERSE_CHECK(ly->ops->payload_size(ly->cmp, ly->count, 0, &ws->pay[l]));
        ws->lo[l] = ws->msg;
        ws->msg += ws->pay[l];
        maxn = TERSE_MAX(maxn, ly->count);
    }
    ws->send = malloc(TERSE_MAX(ws->msg, 1));
    ws->all  = malloc(TERSE_MAX(ws->msg * (size_t)tp->nranks, 1));
    ws->acc  = malloc(TERSE_MAX(maxn, 1) * sizeof(float));
    if ((ws->send == NULL) || (ws->all == NULL) || (ws->acc == NULL)) {
        terse_error(TERSE_LOG_COMM, "failed to allocate %zu bytes of sparse buffers",
                    ws->msg * (size_t)(tp->nranks + 1));
        return TERSE_ERR_NOMEM;
    }
    slot->mem_bytes += ws->msg * (size_t)(tp->nranks + 1) + maxn * sizeof(float);
    return TERSE_OK;
}

terse_status_t
terse__algo_sparse_run(terse_slot_t *slot, terse_call_t *call)
{
    algo_sparse_ws_t *ws = slot->ws[TERSE_CLASS_SPARSE];
    const int p          = call->tp->nranks;
    const size_t es      = terse__esize(call->dtype);
    size_t l;
    int r;

    if (ws == NULL) {
        return TERSE_OK;
    }
    memset(ws->flags, 0, slot->nlayers * sizeof(uint32_t));
    for (l = 0; l < slot->nlayers; ++l) {
        terse_layer_state_t *ly = &slot->layers[l];
        terse_buf_t in;
        terse_rng_t rng;
        uint32_t flags = 0;
        double sq      = 0.0;
        if (ly->cls != TERSE_CLASS_SPARSE) {
            continue;
        }
        in.ptr   = (void *)((const unsigned char *)call->send + ly->offset * es);
        in.count = ly->count;
        in.dtype = call->dtype;
        in.mem   = TERSE_MEM_HOST;
        rng = terse_rng_make(call->seed, TERSE_RNG_QUANT, (uint32_t)l, call->step,
                             (uint32_t)call->tp->rank);
        TERSE_CHECK(ly->ops->compress(ly->cmp, &in,
                                      call->error_feedback ? terse__fb_layer(&slot->fb, l) : NULL,
                                      &rng, ws->send + ws->lo[l], ws->pay[l], &flags, &sq, NULL));
        call->sq_err += sq;
    }
    TERSE_CHECK(terse__tp_allgather(call->tp, ws->send, ws->all, ws->msg));
    for (l = 0; l < slot->nlayers; ++l) {
        terse_layer_state_t *ly = &slot->layers[l];
        unsigned char *dst      = (unsigned char *)call->recv + ly->offset * es;
        float *acc;
        if (ly->cls != TERSE_CLASS_SPARSE) {
            continue;
        }
        acc = ((call->dtype == TERSE_FLOAT32) && (call->scale == 1.0f)) ? (float *)dst : ws->acc;
        memset(acc, 0, ly->count * sizeof(float));
        for (r = 0; r < p; ++r) {
            uint32_t flags = 0;
            TERSE_CHECK(ly->ops->decompress_add(ly->cmp, ws->all + (size_t)r * ws->msg + ws->lo[l],
                                                ws->pay[l], acc, ly->count, &flags, NULL));
            ws->flags[l] |= flags;
        }
        if (ws->flags[l] & TERSE_CMP_NONFINITE) {
            terse__fill_nan(call->recv, call->dtype, ly->offset, ly->count);
            terse__fb_reset_layer(&slot->fb, l, ly->count);
            if (ly->ops->reset != NULL) {
                ly->ops->reset(ly->cmp);
            }
            ++call->nonfinite;
        } else if (acc != (float *)dst) {
            terse__convert_from_f32(acc, call->scale, dst, call->dtype, ly->count);
        }
    }
    return TERSE_OK;
}
