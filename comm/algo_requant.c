/*
 * algo_requant: compressed reduce-scatter + allgather for requantizable families (quant,
 * sign), CGX-style. p ranks; layer l is cut into p chunks of c_l elements (a multiple of the
 * quant bucket, the last ones shorter or empty); rank r owns chunk r of every layer.
 *
 *   1 reduce-scatter   rank r compresses chunk j of every layer (its residual e_l at that
 *                      range, its own random stream) into one fused message per peer j and
 *                      sends it; chunk j + 1 is compressed while chunk j is in flight.
 *   2 sum              the owner decompress_adds the p payloads of its chunk in rank order
 *                      (its own payload at its place) into fp32: s = D(C(x_0)) + ... ;
 *   3 requantise       compresses s once more with its requantisation residual per (layer,
 *                      owned chunk) and the stream (seed, REQUANT, layer, step, rank);
 *   4 allgather        the requantised chunks go to everyone, fused per owner; every rank,
 *                      the owner too, writes scale * D(payload) into its output (rule 2: the
 *                      owner does not keep its exact sum, or replicas would differ).
 *
 *        rank 0        rank 1        rank 2                 (p = 3, one layer)
 *   x:  [a0|a1|a2]    [b0|b1|b2]    [c0|c1|c2]
 *   RS:  C(a1)->1, C(a2)->2, C(b0)->0, C(b2)->2, C(c0)->0, C(c1)->1
 *   sum: s0 = Da0+Db0+Dc0 (rank 0), s1 (rank 1), s2 (rank 2)
 *   AG:  C'(s0), C'(s1), C'(s2) -> everyone -> out = [D C'(s0) | D C'(s1) | D C'(s2)]
 *
 * Non-finite input: compress flags its payload, the owner sees the flag and makes its
 * requantised payload carry it too; every rank that decodes a flagged chunk writes NaN into
 * the whole layer and resets the layer's residuals (rule 3). Every message size is known from
 * the plan (rule 7); the payloads carry the compressor's own checked header (rule 6).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "terse_internal.h"

typedef struct algo_requant_ws {
    int            p, me;
    size_t        *pay;       /* [l * p + j]: payload bytes of chunk j of layer l (0: empty) */
    size_t        *lo;        /* [l * p + j]: offset of that payload in message j */
    size_t        *msg_size;  /* [j]: fused message of chunk j (same in both steps) */
    size_t        *msg_off;   /* [j]: offset of message j in buf */
    unsigned char *buf;       /* all messages: reduce-scatter sends, then allgather receives */
    unsigned char *rs_recv;   /* p messages of my chunk */
    float         *acc;       /* sums of my chunks */
    size_t        *acc_off;   /* [l] */
    float         *scratch;   /* one decoded chunk, for conversions */
    size_t         max_chunk;
    terse_req_t   *reqs;      /* 2 p */
    uint32_t      *flags;     /* [l]: flags seen by the owner */
    uint32_t      *dflags;    /* [l]: flags decoded from the allgathered payloads */
} algo_requant_ws_t;

static size_t
rq_len(const terse_layer_state_t *ly, int j)
{
    size_t off = TERSE_MIN((size_t)j * ly->chunk, ly->count);

    return TERSE_MIN(ly->chunk, ly->count - off);
}

void
terse__algo_requant_cleanup(terse_slot_t *slot)
{
    algo_requant_ws_t *ws = slot->ws[TERSE_CLASS_REQUANT];

    if (ws == NULL) {
        return;
    }
    free(ws->pay);
    free(ws->lo);
    free(ws->msg_size);
    free(ws->msg_off);
    free(ws->buf);
    free(ws->rs_recv);
    free(ws->acc);
    free(ws->acc_off);
    free(ws->scratch);
    free(ws->reqs);
    free(ws->flags);
    free(ws->dflags);
    free(ws);
    terse__fb_destroy(&slot->rq_fb);
    slot->ws[TERSE_CLASS_REQUANT] = NULL;
}

terse_status_t
terse__algo_requant_setup(terse_slot_t *slot, terse_transport_t *tp)
{
    const int p = tp->nranks, me = tp->rank;
    algo_requant_ws_t *ws;
    size_t l, total = 0, nacc = 0, *owned;
    terse_status_t status;
    int j;

    if (slot->nclass[TERSE_CLASS_REQUANT] == 0) {
        return TERSE_OK;
    }
    ws = calloc(1, sizeof(*ws));
    if (ws == NULL) {
        return TERSE_ERR_NOMEM;
    }
    slot->ws[TERSE_CLASS_REQUANT] = ws;
    ws->p        = p;
    ws->me       = me;
    ws->pay      = calloc(slot->nlayers * (size_t)p, sizeof(size_t));
    ws->lo       = calloc(slot->nlayers * (size_t)p, sizeof(size_t));
    ws->msg_size = calloc((size_t)p, sizeof(size_t));
    ws->msg_off  = calloc((size_t)p + 1, sizeof(size_t));
    ws->acc_off  = calloc(slot->nlayers, sizeof(size_t));
    ws->reqs     = calloc(2 * (size_t)p, sizeof(terse_req_t));
    ws->flags    = calloc(slot->nlayers, sizeof(uint32_t));
    ws->dflags   = calloc(slot->nlayers, sizeof(uint32_t));
    owned        = calloc(slot->nlayers, sizeof(size_t));
    if ((ws->pay == NULL) || (ws->lo == NULL) || (ws->msg_size == NULL) ||
        (ws->msg_off == NULL) || (ws->acc_off == NULL) || (ws->reqs == NULL) ||
        (ws->flags == NULL) || (ws->dflags == NULL) || (owned == NULL)) {
        free(owned);
        return TERSE_ERR_NOMEM;
    }
    for (j = 0; j < p; ++j) {
        for (l = 0; l < slot->nlayers; ++l) {
            const terse_layer_state_t *ly = &slot->layers[l];
            size_t len;
            if (ly->cls != TERSE_CLASS_REQUANT) {
                continue;
            }
            len = rq_len(ly, j);
            ws->max_chunk = TERSE_MAX(ws->max_chunk, len);
            if (len > 0) {
                TERSE_CHECK_GOTO(ly->ops->payload_size(ly->cmp, len, 0, &ws->pay[l * p + j]),
                                 status, err_free_owned);
            }
            ws->lo[l * p + j] = ws->msg_size[j];
            ws->msg_size[j] += ws->pay[l * p + j];
            if (j == me) {
                ws->acc_off[l] = nacc;
                owned[l]       = len;
                nacc += len;
            }
        }
        ws->msg_off[j] = total;
        total += ws->msg_size[j];
    }
    ws->msg_off[p] = total;
    TERSE_CHECK_GOTO(terse__fb_create(owned, slot->nlayers, TERSE_MEM_HOST, &slot->rq_fb), status,
                     err_free_owned);
    free(owned);
    ws->buf     = malloc(TERSE_MAX(total, 1));
    ws->rs_recv = malloc(TERSE_MAX(ws->msg_size[me] * (size_t)p, 1));
    ws->acc     = malloc(TERSE_MAX(nacc, 1) * sizeof(float));
    ws->scratch = malloc(TERSE_MAX(ws->max_chunk, 1) * sizeof(float));
    if ((ws->buf == NULL) || (ws->rs_recv == NULL) || (ws->acc == NULL) ||
        (ws->scratch == NULL)) {
        terse_error(TERSE_LOG_COMM, "failed to allocate %zu bytes of requant buffers",
                    total + ws->msg_size[me] * (size_t)p);
        return TERSE_ERR_NOMEM;
    }
    slot->mem_bytes += total + ws->msg_size[me] * (size_t)p +
                       (nacc + ws->max_chunk) * sizeof(float) + terse__fb_bytes(&slot->rq_fb);
    return TERSE_OK;

err_free_owned:
    free(owned);
    return status;
}

/* Writes scale * D(payload) of chunk (l, j) into the output. */
static terse_status_t
rq_decode(algo_requant_ws_t *ws, const terse_layer_state_t *ly, size_t l, int j,
          const unsigned char *msg, terse_call_t *call)
{
    const size_t len = rq_len(ly, j);
    const size_t es  = terse__esize(call->dtype);
    unsigned char *dst =
        (unsigned char *)call->recv + (ly->offset + (size_t)j * ly->chunk) * es;
    uint32_t flags = 0;
    float *acc;

    if (len == 0) {
        return TERSE_OK;
    }
    acc = ((call->dtype == TERSE_FLOAT32) && (call->scale == 1.0f)) ? (float *)dst
                                                                     : ws->scratch;
    memset(acc, 0, len * sizeof(float));
    TERSE_CHECK(ly->ops->decompress_add(ly->cmp, msg + ws->lo[l * ws->p + j],
                                        ws->pay[l * ws->p + j], acc, len, &flags, NULL));
    ws->dflags[l] |= flags;
    if (acc != (float *)dst) {
        terse__convert_from_f32(acc, call->scale, dst, call->dtype, len);
    }
    return TERSE_OK;
}

terse_status_t
terse__algo_requant_run(terse_slot_t *slot, terse_call_t *call)
{
    algo_requant_ws_t *ws = slot->ws[TERSE_CLASS_REQUANT];
    terse_transport_t *tp = call->tp;
    const size_t es       = terse__esize(call->dtype);
    terse_status_t status;
    size_t l, nreq = 0, nsend;
    int p, me, k, j, q;

    if (ws == NULL) {
        return TERSE_OK;
    }
    p  = ws->p;
    me = ws->me;
    memset(ws->flags, 0, slot->nlayers * sizeof(uint32_t));
    memset(ws->dflags, 0, slot->nlayers * sizeof(uint32_t));

    /* 1: reduce-scatter. Receives first, then compress-and-send per peer (pipelined). */
    for (q = 0; q < p; ++q) {
        if (q != me) {
            TERSE_CHECK_GOTO(terse__tp_irecv(tp, ws->rs_recv + (size_t)q * ws->msg_size[me],
                                             ws->msg_size[me], q, TERSE_TAG_RQ_RS,
                                             &ws->reqs[q]),
                             status, err_wait);
        } else {
            memset(&ws->reqs[q], 0, sizeof(ws->reqs[q]));
        }
    }
    nreq  = (size_t)p;
    nsend = 0;
    for (k = 1; k <= p; ++k) {
        j = (me + k) % p; /* my own chunk last: peers get theirs as early as possible */
        for (l = 0; l < slot->nlayers; ++l) {
            terse_layer_state_t *ly = &slot->layers[l];
            size_t len, off;
            terse_buf_t in;
            terse_rng_t rng;
            uint32_t flags = 0;
            double sq      = 0.0;
            if (ly->cls != TERSE_CLASS_REQUANT) {
                continue;
            }
            len = rq_len(ly, j);
            if (len == 0) {
                continue;
            }
            off    = (size_t)j * ly->chunk;
            in.ptr = (void *)((const unsigned char *)call->send + (ly->offset + off) * es);
            in.count = len;
            in.dtype = call->dtype;
            in.mem   = TERSE_MEM_HOST;
            rng = terse_rng_advance(terse_rng_make(call->seed, TERSE_RNG_QUANT, (uint32_t)l,
                                                   call->step, (uint32_t)me),
                                    off);
            TERSE_CHECK_GOTO(ly->ops->compress(ly->cmp, &in,
                                               call->error_feedback ?
                                                   terse__fb_layer(&slot->fb, l) + off : NULL,
                                               &rng, ws->buf + ws->msg_off[j] + ws->lo[l * p + j],
                                               ws->pay[l * p + j], &flags, &sq, NULL),
                             status, err_wait);
            call->sq_err += sq;
            if (j == me) {
                ws->flags[l] |= flags;
            }
        }
        if (j != me) {
            TERSE_CHECK_GOTO(terse__tp_isend(tp, ws->buf + ws->msg_off[j], ws->msg_size[j], j,
                                             TERSE_TAG_RQ_RS, &ws->reqs[p + nsend]),
                             status, err_wait);
            ++nsend;
            nreq = (size_t)p + nsend;
        }
    }

    /* 2: sum my chunks in rank order, as the messages arrive */
    memset(ws->acc, 0, sizeof(float) * TERSE_MAX(slot->rq_fb.total, 1));
    for (q = 0; q < p; ++q) {
        const unsigned char *msg;
        if (q == me) {
            msg = ws->buf + ws->msg_off[me];
        } else {
            TERSE_CHECK_GOTO(terse__tp_waitall(tp, &ws->reqs[q], 1), status, err_wait);
            msg = ws->rs_recv + (size_t)q * ws->msg_size[me];
        }
        for (l = 0; l < slot->nlayers; ++l) {
            const terse_layer_state_t *ly = &slot->layers[l];
            uint32_t flags                = 0;
            size_t len;
            if (ly->cls != TERSE_CLASS_REQUANT) {
                continue;
            }
            len = rq_len(ly, me);
            if (len == 0) {
                continue;
            }
            TERSE_CHECK_GOTO(ly->ops->decompress_add(ly->cmp, msg + ws->lo[l * p + me],
                                                     ws->pay[l * p + me],
                                                     ws->acc + ws->acc_off[l], len, &flags,
                                                     NULL),
                             status, err_wait);
            ws->flags[l] |= flags;
        }
    }
    /* the sends still read buf, which the allgather reuses */
    TERSE_CHECK_GOTO(terse__tp_waitall(tp, ws->reqs, nreq), status, err_wait);
    nreq = 0;

    /* 3: requantise my sums into my slot of buf */
    for (l = 0; l < slot->nlayers; ++l) {
        terse_layer_state_t *ly = &slot->layers[l];
        size_t len, off;
        terse_buf_t in;
        terse_rng_t rng;
        uint32_t flags = 0;
        if (ly->cls != TERSE_CLASS_REQUANT) {
            continue;
        }
        len = rq_len(ly, me);
        if (len == 0) {
            continue;
        }
        off = (size_t)me * ly->chunk;
        if (ws->flags[l] & TERSE_CMP_NONFINITE) {
            ws->acc[ws->acc_off[l]] = NAN; /* makes the requantised payload carry the flag */
        }
        in.ptr   = ws->acc + ws->acc_off[l];
        in.count = len;
        in.dtype = TERSE_FLOAT32;
        in.mem   = TERSE_MEM_HOST;
        rng = terse_rng_advance(terse_rng_make(call->seed, TERSE_RNG_REQUANT, (uint32_t)l,
                                               call->step, (uint32_t)me),
                                off);
        TERSE_CHECK_GOTO(ly->ops->compress(ly->cmp, &in,
                                           call->error_feedback ?
                                               terse__fb_layer(&slot->rq_fb, l) : NULL,
                                           &rng, ws->buf + ws->msg_off[me] + ws->lo[l * p + me],
                                           ws->pay[l * p + me], &flags, NULL, NULL),
                         status, err_wait);
    }

    /* 4: allgather the requantised chunks; decode each owner's message as it arrives */
    for (k = 1; k < p; ++k) {
        q = (me + k) % p;
        TERSE_CHECK_GOTO(terse__tp_irecv(tp, ws->buf + ws->msg_off[q], ws->msg_size[q], q,
                                         TERSE_TAG_RQ_AG, &ws->reqs[nreq]),
                         status, err_wait);
        ++nreq;
    }
    for (k = 1; k < p; ++k) {
        q = (me + k) % p;
        TERSE_CHECK_GOTO(terse__tp_isend(tp, ws->buf + ws->msg_off[me], ws->msg_size[me], q,
                                         TERSE_TAG_RQ_AG, &ws->reqs[nreq]),
                         status, err_wait);
        ++nreq;
    }
    for (k = 0; k < p; ++k) {
        q = (me + k) % p;
        if (k > 0) {
            TERSE_CHECK_GOTO(terse__tp_waitall(tp, &ws->reqs[k - 1], 1), status, err_wait);
        }
        for (l = 0; l < slot->nlayers; ++l) {
            if (slot->layers[l].cls == TERSE_CLASS_REQUANT) {
                TERSE_CHECK_GOTO(rq_decode(ws, &slot->layers[l], l, q, ws->buf + ws->msg_off[q],
                                           call),
                                 status, err_wait);
            }
        }
    }
    TERSE_CHECK_GOTO(terse__tp_waitall(tp, ws->reqs, nreq), status, err_wait);

    /* non-finite: the whole layer, on every rank (all decoded the same payloads) */
    for (l = 0; l < slot->nlayers; ++l) {
        terse_layer_state_t *ly = &slot->layers[l];
        if ((ly->cls != TERSE_CLASS_REQUANT) || !(ws->dflags[l] & TERSE_CMP_NONFINITE)) {
            continue;
        }
        terse__fill_nan(call->recv, call->dtype, ly->offset, ly->count);
        terse__fb_reset_layer(&slot->fb, l, ly->count);
        terse__fb_reset_layer(&slot->rq_fb, l, rq_len(ly, me));
        if (ly->ops->reset != NULL) {
            ly->ops->reset(ly->cmp);
        }
        ++call->nonfinite;
    }
    return TERSE_OK;

err_wait:
    terse__tp_waitall(tp, ws->reqs, nreq);
    return status;
}
