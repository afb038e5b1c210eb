/*
 * algo_native: the values travel as they are (the "none" family, and every fall-back).
 *
 * The sum is terse's own, not the transport's allreduce, so that it is bitwise identical on
 * every rank whatever the MPI library does (DESIGN.md section 8, rule 2):
 *
 *   count elements, p ranks, chunk c = ceil(count / p); rank r owns [r c, (r + 1) c)
 *
 *   reduce-scatter       rank r:  irecv chunk r from every peer q != r
 *                                 isend chunk q of its input to every peer q
 *                                 acc = x_0 + x_1 + ... + x_{p-1}  (rank order, fp32 / fp64)
 *                                 out[chunk r] = scale * acc
 *   allgather            rank r:  isend out[chunk r] to every peer, irecv out[chunk q]
 *
 * Each rank sends 2 (p - 1) c elements: the bandwidth of a ring allreduce, with p - 1
 * messages per step instead of one (fine for the rank counts terse targets per level).
 * Native layers of a call that are not contiguous are packed into one buffer first, so they
 * travel as one message per step.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "terse_internal.h"

size_t
terse__esize(terse_dtype_t dtype)
{
    return (dtype == TERSE_FLOAT64) ? 8 : terse_dtype_size(dtype);
}

void
terse__fill_nan(void *buf, terse_dtype_t dtype, size_t off, size_t n)
{
    size_t i;

    for (i = 0; i < n; ++i) {
        if (dtype == TERSE_FLOAT64) {
            ((double *)buf)[off + i] = NAN;
        } else {
            terse__store_f32(buf, dtype, off + i, NAN);
        }
    }
}

static size_t
sum_acc_size(terse_dtype_t dtype)
{
    return (dtype == TERSE_FLOAT64) ? sizeof(double) : sizeof(float);
}

size_t
terse__algo_sum_ws_size(int nranks, size_t count, terse_dtype_t dtype)
{
    size_t chunk = TERSE_DIV_UP(count, (size_t)nranks);

    return 2 * (size_t)nranks * sizeof(terse_req_t) +
           TERSE_ALIGN_UP(chunk * sum_acc_size(dtype), 64) +
           (size_t)(nranks - 1) * chunk * terse__esize(dtype);
}

/* acc (+)= chunk of dtype; first: assign instead of add. */
static void
sum_accumulate(void *acc, const void *x, size_t n, terse_dtype_t dtype, int first)
{
    size_t i;

    switch (dtype) {
    case TERSE_FLOAT64: {
        double *a = acc;
        const double *v = x;
        if (first) {
            memcpy(a, v, n * sizeof(double));
        } else {
            for (i = 0; i < n; ++i) {
                a[i] += v[i];
            }
        }
        break;
    }
    case TERSE_FLOAT32: {
        float *a = acc;
        const float *v = x;
        if (first) {
            memcpy(a, v, n * sizeof(float));
        } else {
            for (i = 0; i < n; ++i) {
                a[i] += v[i];
            }
        }
        break;
    }
    default: {
        float *a = acc;
        for (i = 0; i < n; ++i) {
            float v = terse__load_f32(x, dtype, i);
            a[i]    = first ? v : (a[i] + v);
        }
        break;
    }
    }
}

static void
sum_store(const void *acc, float scale, void *out, terse_dtype_t dtype, size_t n)
{
    size_t i;

    if (dtype == TERSE_FLOAT64) {
        const double *a = acc;
        for (i = 0; i < n; ++i) {
            ((double *)out)[i] = (scale == 1.0f) ? a[i] : a[i] * (double)scale;
        }
        return;
    }
    terse__convert_from_f32(acc, scale, out, dtype, n);
}

terse_status_t
terse__algo_sum(terse_transport_t *tp, const void *send, void *recv, size_t count,
                terse_dtype_t dtype, float scale, void *ws)
{
    const int p = tp->nranks, me = tp->rank;
    const size_t es = terse__esize(dtype);
    const size_t chunk = TERSE_DIV_UP(count, (size_t)p);
    terse_req_t *reqs = ws;
    unsigned char *acc = (unsigned char *)ws + 2 * (size_t)p * sizeof(terse_req_t);
    unsigned char *in  = acc + TERSE_ALIGN_UP(chunk * sum_acc_size(dtype), 64);
    const unsigned char *s = send;
    unsigned char *d       = recv;
    terse_status_t status;
    size_t nreq = 0, off, len, my_off, my_len, slot;
    int q;

    if (count == 0) {
        return TERSE_OK;
    }
    if (p == 1) {
        if ((scale != 1.0f) || (send != recv)) {
            if (dtype == TERSE_FLOAT64) {
                memmove(acc, send, count * es);
                sum_store(acc, scale, recv, dtype, count);
            } else {
                size_t i;
                for (i = 0; i < count; ++i) {
                    terse__store_f32(recv, dtype, i, terse__load_f32(send, dtype, i) * scale);
                }
            }
        }
        return TERSE_OK;
    }
#define SUM_RANGE(_r, _off, _len)                                                              \
    do {                                                                                       \
        (_off) = TERSE_MIN((size_t)(_r) * chunk, count);                                       \
        (_len) = TERSE_MIN(chunk, count - (_off));                                             \
    } while (0)

    SUM_RANGE(me, my_off, my_len);
    /* reduce-scatter */
    for (q = 0; q < p; ++q) {
        if (q == me) {
            continue;
        }
        slot = (size_t)((q < me) ? q : q - 1);
        TERSE_CHECK_GOTO(terse__tp_irecv(tp, in + slot * chunk * es, my_len * es, q,
                                         TERSE_TAG_SUM_RS, &reqs[nreq]),
                         status, err_wait);
        ++nreq;
    }
    for (q = 1; q < p; ++q) {
        int peer = (me + q) % p;
        SUM_RANGE(peer, off, len);
        TERSE_CHECK_GOTO(terse__tp_isend(tp, s + off * es, len * es, peer, TERSE_TAG_SUM_RS,
                                         &reqs[nreq]),
                         status, err_wait);
        ++nreq;
    }
    /* add in rank order as the chunks arrive */
    for (q = 0; q < p; ++q) {
        if (q == me) {
            sum_accumulate(acc, s + my_off * es, my_len, dtype, q == 0);
            continue;
        }
        slot = (size_t)((q < me) ? q : q - 1);
        TERSE_CHECK_GOTO(terse__tp_waitall(tp, &reqs[slot], 1), status, err_wait);
        sum_accumulate(acc, in + slot * chunk * es, my_len, dtype, q == 0);
    }
    /* the sends read the input: they must be done before the output (maybe the same memory)
     * is written */
    TERSE_CHECK_GOTO(terse__tp_waitall(tp, reqs, nreq), status, err_wait);
    nreq = 0;
    sum_store(acc, scale, d + my_off * es, dtype, my_len);

    /* allgather */
    for (q = 1; q < p; ++q) {
        int peer = (me + q) % p;
        SUM_RANGE(peer, off, len);
        TERSE_CHECK_GOTO(terse__tp_irecv(tp, d + off * es, len * es, peer, TERSE_TAG_SUM_AG,
                                         &reqs[nreq]),
                         status, err_wait);
        ++nreq;
    }
    for (q = 1; q < p; ++q) {
        int peer = (me + q) % p;
        TERSE_CHECK_GOTO(terse__tp_isend(tp, d + my_off * es, my_len * es, peer,
                                         TERSE_TAG_SUM_AG, &reqs[nreq]),
                         status, err_wait);
        ++nreq;
    }
    TERSE_CHECK_GOTO(terse__tp_waitall(tp, reqs, nreq), status, err_wait);
    return TERSE_OK;
#undef SUM_RANGE

err_wait:
    /* never leave a request pointing at the caller's memory */
    terse__tp_waitall(tp, reqs, nreq);
    return status;
}

/* ---------------------------------------------------------------- the native class */
typedef struct algo_native_ws {
    int    whole;     /* the native layers cover the whole buffer: no packing */
    size_t total;     /* native elements */
    void  *pack;      /* total elements of the slot's dtype (NULL when whole) */
    void  *sum_ws;
} algo_native_ws_t;

terse_status_t
terse__algo_native_setup(terse_slot_t *slot, terse_transport_t *tp)
{
    algo_native_ws_t *ws;
    size_t l, bytes;

    if (slot->nclass[TERSE_CLASS_NATIVE] == 0) {
        return TERSE_OK;
    }
    ws = calloc(1, sizeof(*ws));
    if (ws == NULL) {
        return TERSE_ERR_NOMEM;
    }
    for (l = 0; l < slot->nlayers; ++l) {
        if (slot->layers[l].cls == TERSE_CLASS_NATIVE) {
            ws->total += slot->layers[l].count;
        }
    }
    ws->whole = (ws->total == slot->count);
    if (!ws->whole) {
        ws->pack = malloc(TERSE_MAX(ws->total * terse__esize(slot->dtype), 1));
    }
    bytes      = terse__algo_sum_ws_size(tp->nranks, ws->total, slot->dtype);
    ws->sum_ws = malloc(bytes);
    slot->ws[TERSE_CLASS_NATIVE] = ws;
    if ((ws->sum_ws == NULL) || (!ws->whole && (ws->pack == NULL))) {
        terse_error(TERSE_LOG_COMM, "failed to allocate %zu bytes for the native allreduce",
                    bytes);
        return TERSE_ERR_NOMEM;
    }
    slot->mem_bytes += bytes + (ws->whole ? 0 : ws->total * terse__esize(slot->dtype));
    return TERSE_OK;
}

void
terse__algo_native_cleanup(terse_slot_t *slot)
{
    algo_native_ws_t *ws = slot->ws[TERSE_CLASS_NATIVE];

    if (ws != NULL) {
        free(ws->pack);
        free(ws->sum_ws);
        free(ws);
        slot->ws[TERSE_CLASS_NATIVE] = NULL;
    }
}

terse_status_t
terse__algo_native_run(terse_slot_t *slot, terse_call_t *call)
{
    algo_native_ws_t *ws = slot->ws[TERSE_CLASS_NATIVE];
    const size_t es      = terse__esize(call->dtype);
    size_t l, off = 0;

    if (ws == NULL) {
        return TERSE_OK;
    }
    if (ws->whole) {
        return terse__algo_sum(call->tp, call->send, call->recv, ws->total, call->dtype,
                               call->scale, ws->sum_ws);
    }
    for (l = 0; l < slot->nlayers; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        if (ly->cls != TERSE_CLASS_NATIVE) {
            continue;
        }
        memcpy((unsigned char *)ws->pack + off * es,
               (const unsigned char *)call->send + ly->offset * es, ly->count * es);
        off += ly->count;
    }
    TERSE_CHECK(terse__algo_sum(call->tp, ws->pack, ws->pack, ws->total, call->dtype,
                                call->scale, ws->sum_ws));
    off = 0;
    for (l = 0; l < slot->nlayers; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        if (ly->cls != TERSE_CLASS_NATIVE) {
            continue;
        }
        memcpy((unsigned char *)call->recv + ly->offset * es,
               (const unsigned char *)ws->pack + off * es, ly->count * es);
        off += ly->count;
    }
    return TERSE_OK;
}
