/*
 * algo_device: the wire algorithms of an NCCL context (device buffers), the same classes as
 * the host path (algo_native/summable/requant/sparse.c), over the private communicator of
 * transport_nccl.c, everything enqueued on the caller's stream:
 *
 *   native     ncclAllReduce of the caller's values (adjacent native layers as one range),
 *              ncclAvg for AVG; one group for all ranges.
 *   summable   per stage, every layer's payload packed per payload dtype, one ncclAllReduce
 *              per dtype (NCCL's allreduce gives the same bits on every rank, which is all a
 *              summed payload needs), then stage() / decompress(). No sentinels: the device
 *              compressors write NaN payloads on non-finite input and NaN survives the sum.
 *   requant    compress every chunk j of every layer, one ncclSend/ncclRecv group (the
 *              reduce-scatter), the owner decompress_adds the p payloads of its chunk in rank
 *              order (fp32), requantises with its residual per (layer, owned chunk), then one
 *              ncclAllGather of the owners' messages (padded to the longest), and every rank
 *              decodes every chunk in the same order. Bitwise equal to the host path when the
 *              kernels are (they are tested to be): same streams, same order, same rounding.
 *   sparse     fixed-size payloads, one ncclAllGather, decompress_add in rank order into fp32,
 *              then the caller's dtype times the scale.
 *
 * Rule 10 (TERSE_DEVICE_TABLES, default on): the quant, sign, cast, top-k and random-k layers of
 * up to DEV_TABLE_MAX elements run as multi-tensor tables and the PowerSGD layers as one batch,
 * so a bucket's launches grow with the ranks and the families present, not with its layers;
 * larger layers keep their one-layer launches (their streaming fast paths; their number is
 * bounded by the bucket's bytes). Each set is built on the first call and again when what it
 * was built for changes (dev_key_t), bit for bit the per-layer launches.
 * Message sizes come from payload_size on the host (rule 7); validation happens in the decode
 * kernels (rule 6). Nothing here allocates or waits on the hot path: the buffers are made once
 * per slot (setup, synchronous), flags and squared errors stay in the compressors' status
 * blocks. Non-finite input: the payloads carry it (NaN payload values, or the flag bit in
 * gathered headers, which the decoders turn into NaN), so every rank's output of that layer
 * (requant: of that chunk) holds NaN; the rank whose input was non-finite resets its own
 * residual inside compress. Unlike the host path, other ranks do not reset their residuals
 * (that would need the flag on the host: a synchronisation).
 */
#include <stdlib.h>
#include <string.h>

#include "terse_internal.h"
#include "transport_nccl.h"

#if TERSE_HAVE_CUDA
#include "cast_cuda.h"
#include "cuda_util.h"
#include "powersgd.h"
#include "powersgd_cuda.h"
#include "quant_cuda.h"
#include "randomk_cuda.h"
#include "topk_cuda.h"
#endif

#define DEV_ALIGN 256 /* byte alignment of every payload inside a fused message */
#define DEV_NGROUPS 3 /* summable payload dtypes: fp32, fp16, bf16 */
/* requant layers of quant or sign up to this many elements run as multi-tensor tables (rule
 * 10: launches per bucket grow with p, not with layers); larger ones keep their one-layer
 * launches, whose streaming fast paths the tables' bucket-slot kernels do not have */
#define DEV_TABLE_MAX ((size_t)1 << 20)
#define DEV_IN_TABLE(_tab, _l) (((_tab) != NULL) && (_tab)[_l])

/* What a set of tables was built for: they are rebuilt when any of it changes. built: 1 built,
 * 0 not yet, -1 not used (fewer than two layers apply, or the build failed, warned). */
typedef struct dev_key {
    int            built;
    terse_dtype_t  dtype;
    float          scale;
    int            ef;
    uint64_t       seed;
    const float   *fb, *rqfb;
} dev_key_t;

typedef struct dev_ws {
    int            p, me;
    /* summable */
    unsigned       nstages;
    unsigned      *lstages;              /* [l] */
    size_t        *spay;                 /* [l * nstages + s]: payload bytes */
    size_t        *soff;                 /* [l * nstages + s]: offset in its group's buffer */
    int           *sgroup;               /* [l] */
    size_t        *sfused;               /* [s * DEV_NGROUPS + g]: bytes of the fused message */
    void          *sbuf[DEV_NGROUPS][2]; /* device; parity of the stage */
    void          *ps_batch;             /* every pass of the PowerSGD layers (dev_ps_tables) */
    dev_key_t      ps_key;
    /* cast tables (dev_cs_tables): compress, and decompress of the summed payloads; built and
     * keyed as the requant tables */
    void          *cs_tc, *cs_td;
    unsigned char *cs_in;                /* [l]: 1 when layer l runs in them */
    dev_key_t      cs_key;
    /* random-k tables (dev_rk_tables): compress, and decompress of the summed payloads */
    void          *rk_tc, *rk_td;
    unsigned char *rk_in;                /* [l] */
    dev_key_t      rk_key;
    unsigned char *ps_in;                /* [l]: 1 when layer l runs in ps_batch */
    /* requant */
    size_t        *rpay, *rlo;           /* [l * p + j] */
    size_t        *rmsg, *rmoff;         /* [j], [j] */
    size_t         rmax;                 /* longest message: the allgather's block */
    unsigned char *rsend, *rrecv, *rag;  /* device */
    float         *racc;                 /* device: sums of my chunks */
    size_t        *racc_off;             /* [l] */
    size_t         racc_n;               /* its floats: the layers' parts, each padded to 64 */
    /* requant tables (dev_rq_tables): built at the first call, again when what they hold
     * changes (dtype, scale, error feedback, seed, residual buffers); the caller's buffers are
     * the runs' bases */
    dev_key_t      rq_key;
    unsigned char *rq_tab;               /* [l]: 1 when layer l runs in the tables */
    void         **rq_tc, **rq_td, **rq_to; /* [j] compress chunk j; [q] add q's; [q] set q's */
    void          *rq_tr;                /* requantisation of my chunks */
    /* sparse */
    size_t        *xpay, *xlo;           /* [l] */
    size_t         xmsg;
    unsigned char *xbuf;                 /* device: p messages */
    /* top-k tables (dev_xt_tables): compress; rank q's payloads decoded into the sums (q = 0
     * sets them); the sums into the caller's dtype unless they are its fp32 output */
    void          *xt_tc, **xt_td;       /* [q] */
    void          *xt_fin;
    float         *xt_acc;               /* device: the table layers' sums when not in place */
    unsigned char *xt_in;                /* [l] */
    dev_key_t      xt_key;
    /* requant and sparse decoding */
    float         *scratch;              /* device: the longest such layer, fp32 */
} dev_ws_t;

/* cast:fp16 sums fp16 payloads although its table says bf16 (as algo_summable.c). */
terse_dtype_t terse__cast_sum_dtype(double param) __attribute__((weak));

static terse_dtype_t
dev_sum_dtype(const terse_layer_state_t *ly)
{
    if ((terse__cast_sum_dtype != NULL) && (strcmp(ly->ops->name, "cast") == 0)) {
        return terse__cast_sum_dtype(ly->param);
    }
    return ly->ops->sum_dtype;
}

static int
dev_group_of(terse_dtype_t dt)
{
    return (dt == TERSE_FLOAT16) ? 1 : ((dt == TERSE_BFLOAT16) ? 2 : 0);
}

static const terse_dtype_t dev_group_dtype[DEV_NGROUPS] = {TERSE_FLOAT32, TERSE_FLOAT16,
                                                           TERSE_BFLOAT16};

static size_t
dev_rq_len(const terse_layer_state_t *ly, int j)
{
    size_t off = TERSE_MIN((size_t)j * ly->chunk, ly->count);

    return TERSE_MIN(ly->chunk, ly->count - off);
}

static terse_nccl_tp_t *
dev_tp(const terse_ctx_t *ctx)
{
    return (terse_nccl_tp_t *)ctx->tp;
}

/* 1 when the tables keyed *k serve this call as they are (or are not used). */
static int
dev_key_fresh(const dev_key_t *k, const terse_slot_t *slot, const terse_call_t *call)
{
    return (k->built < 0) ||
           ((k->built > 0) && (k->dtype == call->dtype) && (k->scale == call->scale) &&
            (k->ef == call->error_feedback) && (k->seed == call->seed) &&
            (k->fb == slot->fb.data) && (k->rqfb == slot->rq_fb.data));
}

static void
dev_key_set(dev_key_t *k, const terse_slot_t *slot, const terse_call_t *call)
{
    k->built = 1;
    k->dtype = call->dtype;
    k->scale = call->scale;
    k->ef    = call->error_feedback;
    k->seed  = call->seed;
    k->fb    = slot->fb.data;
    k->rqfb  = slot->rq_fb.data;
}

/* ---------------------------------------------------------------- requant tables */
void *terse__cmp_quant_cuda_handle(void *ctx);
void *terse__cmp_sign_cuda_handle(void *ctx);

/* The quant_cuda.h instance of a requant layer that may join the tables, else NULL. */
static void *
dev_rq_handle(const terse_layer_state_t *ly)
{
    if ((ly->cls != TERSE_CLASS_REQUANT) || (ly->cmp == NULL) || (ly->count > DEV_TABLE_MAX)) {
        return NULL;
    }
    if (strcmp(ly->ops->name, "quant") == 0) {
        return terse__cmp_quant_cuda_handle(ly->cmp);
    }
    if (strcmp(ly->ops->name, "sign") == 0) {
        return terse__cmp_sign_cuda_handle(ly->cmp);
    }
    return NULL;
}

static void
dev_rq_tables_free(dev_ws_t *ws)
{
    int j;

    for (j = 0; (ws->rq_tc != NULL) && (j < ws->p); ++j) {
        terse__cmp_quant_cuda_table_destroy(ws->rq_tc[j]);
        terse__cmp_quant_cuda_table_destroy(ws->rq_td[j]);
        terse__cmp_quant_cuda_table_destroy(ws->rq_to[j]);
        ws->rq_tc[j] = ws->rq_td[j] = ws->rq_to[j] = NULL;
    }
    terse__cmp_quant_cuda_table_destroy(ws->rq_tr);
    ws->rq_tr    = NULL;
    ws->rq_key.built = 0;
}

/* One table of the table layers that have a part of chunk `part`, one entry each: its count
 * and payload size, the rest from fill(.., l, j, &entry) (j: the message or owner); *table_p
 * stays NULL when no layer has such a part. */
typedef void (*dev_rq_fill_t)(const terse_slot_t *slot, const dev_ws_t *ws,
                              const terse_call_t *call, size_t l, int j, terse_cu_qlayer_t *e);

static terse_status_t
dev_rq_table(const terse_slot_t *slot, const dev_ws_t *ws, const terse_call_t *call, int part,
             int j, terse_cu_qmode_t mode, dev_rq_fill_t fill, terse_cu_qlayer_t *L,
             void **table_p)
{
    size_t l, k = 0;

    for (l = 0; l < slot->nlayers; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        if (!ws->rq_tab[l] || (dev_rq_len(ly, part) == 0)) {
            continue;
        }
        memset(&L[k], 0, sizeof(L[k]));
        L[k].cuda  = dev_rq_handle(ly);
        L[k].n     = dev_rq_len(ly, part);
        L[k].bytes = ws->rpay[l * (size_t)ws->p + (size_t)part];
        L[k].scale = 1.0f;
        L[k].dtype = TERSE_FLOAT32;
        fill(slot, ws, call, l, j, &L[k]);
        ++k;
    }
    *table_p = NULL;
    return (k == 0) ? TERSE_OK : terse__cmp_quant_cuda_table_create(L, k, mode, table_p);
}

/* 1: chunk j of the caller's gradient into message j (user: the send buffer) */
static void
dev_rq_fill_compress(const terse_slot_t *slot, const dev_ws_t *ws, const terse_call_t *call,
                     size_t l, int j, terse_cu_qlayer_t *e)
{
    const terse_layer_state_t *ly = &slot->layers[l];
    const size_t off = (size_t)j * ly->chunk, p = (size_t)ws->p;

    e->in       = (const void *)(uintptr_t)((ly->offset + off) * terse__esize(call->dtype));
    e->residual = call->error_feedback ? terse__fb_layer(&slot->fb, l) + off : NULL;
    e->out      = ws->rsend + ws->rmoff[j] + ws->rlo[l * p + (size_t)j];
    e->rng      = terse_rng_advance(terse_rng_make(call->seed, TERSE_RNG_QUANT, (uint32_t)l, 0,
                                                   (uint32_t)ws->me),
                                    off);
    e->dtype    = call->dtype;
    e->user     = TERSE_CU_QUSER_IN;
}

/* 3: rank j's payload of my chunk added into its sum (j = me: my own message) */
static void
dev_rq_fill_add(const terse_slot_t *slot, const dev_ws_t *ws, const terse_call_t *call,
                size_t l, int j, terse_cu_qlayer_t *e)
{
    const size_t p = (size_t)ws->p, me = (size_t)ws->me;
    const unsigned char *msg = (j == ws->me) ? ws->rsend + ws->rmoff[me]
                                             : ws->rrecv + (size_t)j * ws->rmsg[me];

    (void)call;
    e->in    = msg + ws->rlo[l * p + me];
    e->out   = ws->racc + ws->racc_off[l];
}

/* 3: the sum of my chunk requantised into my block of the allgather (j = me) */
static void
dev_rq_fill_requant(const terse_slot_t *slot, const dev_ws_t *ws, const terse_call_t *call,
                    size_t l, int j, terse_cu_qlayer_t *e)
{
    const size_t p = (size_t)ws->p;

    e->in       = ws->racc + ws->racc_off[l];
    e->residual = call->error_feedback ? terse__fb_layer(&slot->rq_fb, l) : NULL;
    e->out      = ws->rag + (size_t)j * ws->rmax + ws->rlo[l * p + (size_t)j];
    e->rng      = terse_rng_advance(terse_rng_make(call->seed, TERSE_RNG_REQUANT, (uint32_t)l, 0,
                                                   (uint32_t)ws->me),
                                    (size_t)j * slot->layers[l].chunk);
}

/* 4: owner j's block decoded straight into the caller's output (user: the recv buffer) */
static void
dev_rq_fill_set(const terse_slot_t *slot, const dev_ws_t *ws, const terse_call_t *call,
                size_t l, int j, terse_cu_qlayer_t *e)
{
    const terse_layer_state_t *ly = &slot->layers[l];
    const size_t p = (size_t)ws->p;

    e->in    = ws->rag + (size_t)j * ws->rmax + ws->rlo[l * p + (size_t)j];
    e->out   = (void *)(uintptr_t)((ly->offset + (size_t)j * ly->chunk) *
                                   terse__esize(call->dtype));
    e->dtype = call->dtype;
    e->scale = call->scale;
    e->user  = TERSE_CU_QUSER_OUT;
}

/* The tables of this call's kind, built (synchronously: table uploads) when missing or stale.
 * A failure leaves every layer on its one-layer launches, with a warning. */
static terse_status_t
dev_rq_tables(const terse_slot_t *slot, dev_ws_t *ws, const terse_call_t *call)
{
    const int p = ws->p;
    terse_cu_qlayer_t *L = NULL;
    terse_status_t status = TERSE_OK;
    size_t l, n = 0;
    int j;

    if (dev_key_fresh(&ws->rq_key, slot, call)) {
        return TERSE_OK;
    }
    dev_rq_tables_free(ws);
    if (ws->rq_tab == NULL) {
        ws->rq_tab = calloc(TERSE_MAX(slot->nlayers, (size_t)1), 1);
        ws->rq_tc  = calloc((size_t)p, sizeof(void *));
        ws->rq_td  = calloc((size_t)p, sizeof(void *));
        ws->rq_to  = calloc((size_t)p, sizeof(void *));
        if ((ws->rq_tab == NULL) || (ws->rq_tc == NULL) || (ws->rq_td == NULL) ||
            (ws->rq_to == NULL)) {
            return TERSE_ERR_NOMEM;
        }
    }
    for (l = 0; l < slot->nlayers; ++l) {
        ws->rq_tab[l] = (dev_rq_handle(&slot->layers[l]) != NULL);
        n += ws->rq_tab[l];
    }
    if (n < 2) { /* one layer: its own launches are as few */
        memset(ws->rq_tab, 0, slot->nlayers);
        ws->rq_key.built = -1;
        return TERSE_OK;
    }
    L = calloc(n, sizeof(*L));
    if (L == NULL) {
        return TERSE_ERR_NOMEM;
    }
    for (j = 0; (j < p) && (status == TERSE_OK); ++j) {
        status = dev_rq_table(slot, ws, call, j, j, TERSE_CU_Q_COMPRESS, dev_rq_fill_compress,
                              L, &ws->rq_tc[j]);
        if (status == TERSE_OK) {
            status = dev_rq_table(slot, ws, call, ws->me, j, TERSE_CU_Q_DECOMPRESS_ADD,
                                  dev_rq_fill_add, L, &ws->rq_td[j]);
        }
        if (status == TERSE_OK) {
            status = dev_rq_table(slot, ws, call, j, j, TERSE_CU_Q_DECOMPRESS_SET,
                                  dev_rq_fill_set, L, &ws->rq_to[j]);
        }
    }
    if (status == TERSE_OK) {
        status = dev_rq_table(slot, ws, call, ws->me, ws->me, TERSE_CU_Q_COMPRESS,
                              dev_rq_fill_requant, L, &ws->rq_tr);
    }
    free(L);
    if (status != TERSE_OK) {
        terse_warn(TERSE_LOG_COMM, "multi-tensor quant tables of %zu layers failed (%s): one "
                   "launch per layer instead", n, terse_status_str(status));
        dev_rq_tables_free(ws);
        memset(ws->rq_tab, 0, slot->nlayers);
        ws->rq_key.built = -1;
        return (status == TERSE_ERR_CUDA) ? status : TERSE_OK;
    }
    dev_key_set(&ws->rq_key, slot, call);
    return TERSE_OK;
}

/* ---------------------------------------------------------------- cast tables */
void *terse__cmp_cast_cuda_handle(void *ctx);

/* The cast layers (one stage) of up to DEV_TABLE_MAX elements as two tables, built when
 * missing or stale (dtype, scale, error feedback, residual buffer); fewer than two such
 * layers, or a failure (warned): one launch per layer. */
static terse_status_t
dev_cs_tables(const terse_slot_t *slot, dev_ws_t *ws, const terse_call_t *call)
{
    const size_t nl = slot->nlayers, ns = ws->nstages, es = terse__esize(call->dtype);
    terse_cu_clayer_t *C = NULL, *D = NULL;
    terse_status_t status = TERSE_OK;
    size_t l, n = 0;

    if (dev_key_fresh(&ws->cs_key, slot, call)) {
        return TERSE_OK;
    }
    terse__cmp_cast_cuda_table_destroy(ws->cs_tc);
    terse__cmp_cast_cuda_table_destroy(ws->cs_td);
    ws->cs_tc = ws->cs_td = NULL;
    ws->cs_key.built = -1;
    if (ws->cs_in == NULL) {
        ws->cs_in = calloc(TERSE_MAX(nl, (size_t)1), 1);
    }
    C = calloc(TERSE_MAX(nl, (size_t)1), sizeof(*C));
    D = calloc(TERSE_MAX(nl, (size_t)1), sizeof(*D));
    if ((ws->cs_in == NULL) || (C == NULL) || (D == NULL)) {
        status = TERSE_ERR_NOMEM;
        goto out;
    }
    for (l = 0; l < nl; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        void *h = NULL;
        void *pay;
        ws->cs_in[l] = 0;
        if ((ly->cls != TERSE_CLASS_SUMMABLE) || (ws->lstages[l] != 1) || (ly->cmp == NULL) ||
            (ly->count > DEV_TABLE_MAX) || (strcmp(ly->ops->name, "cast") != 0) ||
            ((h = terse__cmp_cast_cuda_handle(ly->cmp)) == NULL)) {
            continue;
        }
        pay  = (unsigned char *)ws->sbuf[ws->sgroup[l]][0] + ws->soff[l * ns];
        C[n] = (terse_cu_clayer_t){h, (const void *)(uintptr_t)(ly->offset * es),
                                   call->error_feedback ? terse__fb_layer(&slot->fb, l) : NULL,
                                   pay, NULL, ly->count, call->dtype, 1.0f, TERSE_CU_CUSER_IN};
        D[n] = (terse_cu_clayer_t){h, NULL, NULL, pay, (void *)(uintptr_t)(ly->offset * es),
                                   ly->count, call->dtype, call->scale, TERSE_CU_CUSER_OUT};
        ws->cs_in[l] = 1;
        ++n;
    }
    if (n >= 2) {
        status = terse__cmp_cast_cuda_table_create(C, n, 0, &ws->cs_tc);
        if (status == TERSE_OK) {
            status = terse__cmp_cast_cuda_table_create(D, n, 1, &ws->cs_td);
        }
        if (status == TERSE_OK) {
            dev_key_set(&ws->cs_key, slot, call);
        }
    }
out:
    if (ws->cs_key.built < 0) {
        if (status != TERSE_OK) {
            terse_warn(TERSE_LOG_COMM, "cast tables of %zu layers failed (%s): one launch per "
                       "layer instead", n, terse_status_str(status));
        }
        terse__cmp_cast_cuda_table_destroy(ws->cs_tc);
        ws->cs_tc = NULL;
        if (ws->cs_in != NULL) {
            memset(ws->cs_in, 0, nl);
        }
    }
    free(C);
    free(D);
    return (status == TERSE_ERR_CUDA) ? status : TERSE_OK;
}

/* ---------------------------------------------------------------- random-k tables */
void *terse__cmp_randomk_cuda_handle(void *ctx);
static terse_status_t dev_alloc(void **ptr_p, size_t bytes, size_t *total_p);

static void
dev_rk_tables_free(dev_ws_t *ws)
{
    terse__cmp_randomk_cuda_table_destroy(ws->rk_tc);
    terse__cmp_randomk_cuda_table_destroy(ws->rk_td);
    ws->rk_tc = ws->rk_td = NULL;
}

/* The random-k layers (one stage) of up to DEV_TABLE_MAX elements as two tables (compress into
 * the stage-0 payloads; decompress of their sums), built and keyed as the cast tables. */
static terse_status_t
dev_rk_tables(const terse_slot_t *slot, dev_ws_t *ws, const terse_call_t *call)
{
    const size_t nl = slot->nlayers, ns = ws->nstages, es = terse__esize(call->dtype);
    terse_cu_rlayer_t *C = NULL, *D = NULL;
    terse_status_t status = TERSE_OK;
    size_t l, n = 0;

    if (dev_key_fresh(&ws->rk_key, slot, call)) {
        return TERSE_OK;
    }
    dev_rk_tables_free(ws);
    ws->rk_key.built = -1;
    if (ws->rk_in == NULL) {
        ws->rk_in = calloc(TERSE_MAX(nl, (size_t)1), 1);
    }
    C = calloc(TERSE_MAX(nl, (size_t)1), sizeof(*C));
    D = calloc(TERSE_MAX(nl, (size_t)1), sizeof(*D));
    if ((ws->rk_in == NULL) || (C == NULL) || (D == NULL)) {
        status = TERSE_ERR_NOMEM;
        goto out;
    }
    for (l = 0; l < nl; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        void *h = NULL;
        float *pay;
        ws->rk_in[l] = 0;
        if ((ly->cls != TERSE_CLASS_SUMMABLE) || (ws->lstages[l] != 1) || (ly->cmp == NULL) ||
            (ly->count > DEV_TABLE_MAX) || (strcmp(ly->ops->name, "randomk") != 0) ||
            ((h = terse__cmp_randomk_cuda_handle(ly->cmp)) == NULL)) {
            continue;
        }
        pay  = (float *)((unsigned char *)ws->sbuf[ws->sgroup[l]][0] + ws->soff[l * ns]);
        C[n] = (terse_cu_rlayer_t){
            h, (const void *)(uintptr_t)(ly->offset * es),
            call->error_feedback ? terse__fb_layer(&slot->fb, l) : NULL, pay, NULL, ly->count,
            ws->spay[l * ns] / sizeof(float), call->dtype, 1.0f,
            terse_rng_make(call->seed, TERSE_RNG_RANDOMK, (uint32_t)l, 0, TERSE_RNG_SHARED),
            TERSE_CU_RUSER_IN};
        D[n]          = C[n];
        D[n].in       = NULL;
        D[n].residual = NULL;
        D[n].out      = (void *)(uintptr_t)(ly->offset * es);
        D[n].scale    = call->scale;
        D[n].user     = TERSE_CU_RUSER_OUT;
        ws->rk_in[l] = 1;
        ++n;
    }
    if (n >= 2) {
        status = terse__cmp_randomk_cuda_table_create(C, n, 0, &ws->rk_tc);
        if (status == TERSE_OK) {
            status = terse__cmp_randomk_cuda_table_create(D, n, 1, &ws->rk_td);
        }
        if (status == TERSE_OK) {
            dev_key_set(&ws->rk_key, slot, call);
        }
    }
out:
    if (ws->rk_key.built < 0) {
        if (status != TERSE_OK) {
            terse_warn(TERSE_LOG_COMM, "random-k tables of %zu layers failed (%s): one launch "
                       "per layer instead", n, terse_status_str(status));
        }
        dev_rk_tables_free(ws);
        if (ws->rk_in != NULL) {
            memset(ws->rk_in, 0, nl);
        }
    }
    free(C);
    free(D);
    return (status == TERSE_ERR_CUDA) ? status : TERSE_OK;
}

/* ---------------------------------------------------------------- top-k tables */
void *terse__cmp_topk_cuda_handle(void *ctx);

/* The topk_cuda.h instance of a sparse layer that may join the tables, else NULL. */
static void *
dev_xt_handle(const terse_layer_state_t *ly)
{
    if ((ly->cls != TERSE_CLASS_SPARSE) || (ly->cmp == NULL) || (ly->count > DEV_TABLE_MAX) ||
        ((strcmp(ly->ops->name, "topk") != 0) && (strcmp(ly->ops->name, "topkt") != 0))) {
        return NULL;
    }
    return terse__cmp_topk_cuda_handle(ly->cmp);
}

static void
dev_xt_tables_free(dev_ws_t *ws)
{
    int q;

    terse__cmp_topk_cuda_table_destroy(ws->xt_tc);
    for (q = 0; (ws->xt_td != NULL) && (q < ws->p); ++q) {
        terse__cmp_topk_cuda_table_destroy(ws->xt_td[q]);
        ws->xt_td[q] = NULL;
    }
    terse__dev_from_f32_table_destroy(ws->xt_fin);
    ws->xt_tc  = NULL;
    ws->xt_fin = NULL;
}

/* The top-k layers of up to DEV_TABLE_MAX elements as tables: compress into my message; rank
 * q's payloads added into the fp32 sums in rank order (q = 0 sets them), which are the
 * caller's output (fp32, no AVG scale: user offsets into recv) or xt_acc, then turned into the
 * caller's dtype by one from-f32 table. Built and keyed as the other tables. */
static terse_status_t
dev_xt_tables(terse_slot_t *slot, dev_ws_t *ws, const terse_call_t *call)
{
    const size_t nl = slot->nlayers, es = terse__esize(call->dtype);
    const int inplace = (call->dtype == TERSE_FLOAT32) && (call->scale == 1.0f);
    unsigned char *mine = ws->xbuf + (size_t)ws->me * ws->xmsg;
    terse_cu_tlayer_t *C = NULL, *D = NULL;
    size_t *li = NULL, *so = NULL, *dof = NULL, *cnt = NULL;
    terse_status_t status = TERSE_OK;
    size_t l, i, n = 0, nacc = 0;
    int q;

    if (dev_key_fresh(&ws->xt_key, slot, call)) {
        return TERSE_OK;
    }
    dev_xt_tables_free(ws);
    ws->xt_key.built = -1;
    if (ws->xt_in == NULL) {
        ws->xt_in = calloc(TERSE_MAX(nl, (size_t)1), 1);
    }
    if (ws->xt_td == NULL) {
        ws->xt_td = calloc((size_t)ws->p, sizeof(void *));
    }
    C   = calloc(TERSE_MAX(nl, (size_t)1), sizeof(*C));
    D   = calloc(TERSE_MAX(nl, (size_t)1), sizeof(*D));
    li  = calloc(TERSE_MAX(nl, (size_t)1), 4 * sizeof(size_t));
    if ((ws->xt_in == NULL) || (ws->xt_td == NULL) || (C == NULL) || (D == NULL) ||
        (li == NULL)) {
        status = TERSE_ERR_NOMEM;
        goto out;
    }
    so  = li + nl;
    dof = so + nl;
    cnt = dof + nl;
    for (l = 0; l < nl; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        void *h = dev_xt_handle(ly);
        ws->xt_in[l] = 0;
        if (h == NULL) {
            continue;
        }
        li[n]  = l;
        so[n]  = nacc;
        dof[n] = ly->offset;
        cnt[n] = ly->count;
        nacc  += TERSE_ALIGN_UP(ly->count, (size_t)64);
        C[n]   = (terse_cu_tlayer_t){h, (const void *)(uintptr_t)(ly->offset * es),
                                   call->error_feedback ? terse__fb_layer(&slot->fb, l) : NULL,
                                   mine + ws->xlo[l], ly->count, call->dtype, TERSE_CU_TUSER_IN};
        ws->xt_in[l] = 1;
        ++n;
    }
    if (n < 2) { /* one layer: its own launches are as few */
        goto out;
    }
    if (!inplace && (ws->xt_acc == NULL)) {
        TERSE_CHECK_GOTO(dev_alloc((void **)&ws->xt_acc, nacc * sizeof(float), &slot->mem_bytes),
                         status, out);
    }
    TERSE_CHECK_GOTO(terse__cmp_topk_cuda_table_create(C, n, TERSE_CU_T_COMPRESS, &ws->xt_tc),
                     status, out);
    for (q = 0; q < ws->p; ++q) {
        for (i = 0; i < n; ++i) {
            void *acc = inplace ? (void *)(uintptr_t)(dof[i] * sizeof(float))
                                : (void *)(ws->xt_acc + so[i]);
            D[i] = (terse_cu_tlayer_t){C[i].cuda, ws->xbuf + (size_t)q * ws->xmsg + ws->xlo[li[i]],
                                       NULL, acc, cnt[i], TERSE_FLOAT32,
                                       inplace ? TERSE_CU_TUSER_OUT : 0u};
        }
        TERSE_CHECK_GOTO(terse__cmp_topk_cuda_table_create(D, n,
                                                           (q == 0) ? TERSE_CU_T_DECOMPRESS_SET
                                                                    : TERSE_CU_T_DECOMPRESS_ADD,
                                                           &ws->xt_td[q]),
                         status, out);
    }
    if (!inplace) {
        TERSE_CHECK_GOTO(terse__dev_from_f32_table_create(so, dof, cnt, n, &ws->xt_fin), status,
                         out);
    }
    dev_key_set(&ws->xt_key, slot, call);
out:
    if (ws->xt_key.built < 0) {
        if (status != TERSE_OK) {
            terse_warn(TERSE_LOG_COMM, "top-k tables of %zu layers failed (%s): one launch per "
                       "layer instead", n, terse_status_str(status));
        }
        dev_xt_tables_free(ws);
        if (ws->xt_in != NULL) {
            memset(ws->xt_in, 0, nl);
        }
    }
    free(C);
    free(D);
    free(li);
    return (status == TERSE_ERR_CUDA) ? status : TERSE_OK;
}

/* ---------------------------------------------------------------- setup */
static void
dev_cleanup(terse_slot_t *slot)
{
    dev_ws_t *ws = slot->ws[TERSE_CLASS_NATIVE];
    int g, k;

    if (ws == NULL) {
        return;
    }
    for (g = 0; g < DEV_NGROUPS; ++g) {
        for (k = 0; k < 2; ++k) {
            terse__cuda_free(ws->sbuf[g][k]);
        }
    }
    dev_rq_tables_free(ws);
    terse__cmp_psgd_cuda_batch_destroy(ws->ps_batch);
    free(ws->ps_in);
    terse__cmp_cast_cuda_table_destroy(ws->cs_tc);
    terse__cmp_cast_cuda_table_destroy(ws->cs_td);
    free(ws->cs_in);
    dev_rk_tables_free(ws);
    free(ws->rk_in);
    dev_xt_tables_free(ws);
    free(ws->xt_td);
    free(ws->xt_in);
    terse__cuda_free(ws->xt_acc);
    free(ws->rq_tab);
    free(ws->rq_tc);
    free(ws->rq_td);
    free(ws->rq_to);
    terse__cuda_free(ws->rsend);
    terse__cuda_free(ws->rrecv);
    terse__cuda_free(ws->rag);
    terse__cuda_free(ws->racc);
    terse__cuda_free(ws->xbuf);
    terse__cuda_free(ws->scratch);
    free(ws->lstages);
    free(ws->spay);
    free(ws->soff);
    free(ws->sgroup);
    free(ws->sfused);
    free(ws->rpay);
    free(ws->rlo);
    free(ws->rmsg);
    free(ws->rmoff);
    free(ws->racc_off);
    free(ws->xpay);
    free(ws->xlo);
    free(ws);
    terse__fb_destroy(&slot->rq_fb);
    slot->ws[TERSE_CLASS_NATIVE] = NULL;
}

static terse_status_t
dev_alloc(void **ptr_p, size_t bytes, size_t *total_p)
{
    *total_p += bytes;
    return terse__cuda_calloc(ptr_p, TERSE_MAX(bytes, (size_t)1));
}

static terse_status_t
dev_setup_summable(terse_slot_t *slot, dev_ws_t *ws)
{
    const size_t nl = slot->nlayers;
    size_t l, s, off[DEV_NGROUPS], maxg[DEV_NGROUPS];
    int g, k;

    for (l = 0; l < nl; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        if (ly->cls == TERSE_CLASS_SUMMABLE) {
            unsigned n = (ly->ops->nstages != NULL) ? ly->ops->nstages(ly->cmp) : 1;
            ws->nstages = TERSE_MAX(ws->nstages, n);
        }
    }
    if (ws->nstages == 0) {
        return TERSE_OK;
    }
    ws->lstages = calloc(nl, sizeof(unsigned));
    ws->spay    = calloc(nl * ws->nstages, sizeof(size_t));
    ws->soff    = calloc(nl * ws->nstages, sizeof(size_t));
    ws->sgroup  = calloc(nl, sizeof(int));
    ws->sfused  = calloc(ws->nstages * DEV_NGROUPS, sizeof(size_t));
    if ((ws->lstages == NULL) || (ws->spay == NULL) || (ws->soff == NULL) ||
        (ws->sgroup == NULL) || (ws->sfused == NULL)) {
        return TERSE_ERR_NOMEM;
    }
    memset(maxg, 0, sizeof(maxg));
    for (s = 0; s < ws->nstages; ++s) {
        memset(off, 0, sizeof(off));
        for (l = 0; l < nl; ++l) {
            const terse_layer_state_t *ly = &slot->layers[l];
            size_t pay;
            if (ly->cls != TERSE_CLASS_SUMMABLE) {
                continue;
            }
            if (s == 0) {
                ws->lstages[l] = (ly->ops->nstages != NULL) ? ly->ops->nstages(ly->cmp) : 1;
                ws->sgroup[l]  = dev_group_of(dev_sum_dtype(ly));
            }
            if (s >= ws->lstages[l]) {
                continue;
            }
            TERSE_CHECK(ly->ops->payload_size(ly->cmp, ly->count, (unsigned)s, &pay));
            g = ws->sgroup[l];
            ws->spay[l * ws->nstages + s] = pay;
            ws->soff[l * ws->nstages + s] = off[g];
            off[g] += TERSE_ALIGN_UP(pay, (size_t)DEV_ALIGN); /* padding stays 0 + 0 */
        }
        for (g = 0; g < DEV_NGROUPS; ++g) {
            ws->sfused[s * DEV_NGROUPS + g] = off[g];
            maxg[g]                         = TERSE_MAX(maxg[g], off[g]);
        }
    }
    for (g = 0; g < DEV_NGROUPS; ++g) {
        if (maxg[g] == 0) {
            continue;
        }
        for (k = 0; k < 2; ++k) {
            TERSE_CHECK(dev_alloc(&ws->sbuf[g][k], maxg[g], &slot->mem_bytes));
        }
    }
    return TERSE_OK;
}

static terse_status_t
dev_setup_requant(terse_slot_t *slot, dev_ws_t *ws, size_t *maxn_p)
{
    const int p = ws->p, me = ws->me;
    const size_t nl = slot->nlayers;
    size_t l, total = 0, nacc = 0, *owned;
    terse_status_t status = TERSE_OK;
    int j;

    if (slot->nclass[TERSE_CLASS_REQUANT] == 0) {
        return TERSE_OK;
    }
    ws->rpay     = calloc(nl * (size_t)p, sizeof(size_t));
    ws->rlo      = calloc(nl * (size_t)p, sizeof(size_t));
    ws->rmsg     = calloc((size_t)p, sizeof(size_t));
    ws->rmoff    = calloc((size_t)p, sizeof(size_t));
    ws->racc_off = calloc(nl, sizeof(size_t));
    owned        = calloc(nl, sizeof(size_t));
    if ((ws->rpay == NULL) || (ws->rlo == NULL) || (ws->rmsg == NULL) || (ws->rmoff == NULL) ||
        (ws->racc_off == NULL) || (owned == NULL)) {
        free(owned);
        return TERSE_ERR_NOMEM;
    }
    for (j = 0; j < p; ++j) {
        for (l = 0; l < nl; ++l) {
            const terse_layer_state_t *ly = &slot->layers[l];
            size_t len;
            if (ly->cls != TERSE_CLASS_REQUANT) {
                continue;
            }
            len = dev_rq_len(ly, j);
            if (j == 0) {
                *maxn_p = TERSE_MAX(*maxn_p, ly->count);
            }
            if (len > 0) {
                TERSE_CHECK_GOTO(ly->ops->payload_size(ly->cmp, len, 0, &ws->rpay[l * p + j]),
                                 status, out);
            }
            ws->rlo[l * p + j] = ws->rmsg[j];
            ws->rmsg[j] += TERSE_ALIGN_UP(ws->rpay[l * p + j], (size_t)DEV_ALIGN);
            if (j == me) {
                ws->racc_off[l] = nacc;
                owned[l]        = len;
                nacc += TERSE_ALIGN_UP(len, (size_t)64);
            }
        }
        ws->rmoff[j] = total;
        total += ws->rmsg[j];
        ws->rmax = TERSE_MAX(ws->rmax, ws->rmsg[j]);
    }
    TERSE_CHECK_GOTO(terse__fb_create(owned, nl, TERSE_MEM_CUDA, &slot->rq_fb), status, out);
    slot->mem_bytes += terse__fb_bytes(&slot->rq_fb);
    TERSE_CHECK_GOTO(dev_alloc((void **)&ws->rsend, total, &slot->mem_bytes), status, out);
    TERSE_CHECK_GOTO(dev_alloc((void **)&ws->rrecv, ws->rmsg[me] * (size_t)p, &slot->mem_bytes),
                     status, out);
    TERSE_CHECK_GOTO(dev_alloc((void **)&ws->rag, ws->rmax * (size_t)p, &slot->mem_bytes),
                     status, out);
    ws->racc_n = nacc;
    TERSE_CHECK_GOTO(dev_alloc((void **)&ws->racc, nacc * sizeof(float), &slot->mem_bytes),
                     status, out);
out:
    free(owned);
    return status;
}

static terse_status_t
dev_setup_sparse(terse_slot_t *slot, dev_ws_t *ws, size_t *maxn_p)
{
    size_t l;

    if (slot->nclass[TERSE_CLASS_SPARSE] == 0) {
        return TERSE_OK;
    }
    ws->xpay = calloc(slot->nlayers, sizeof(size_t));
    ws->xlo  = calloc(slot->nlayers, sizeof(size_t));
    if ((ws->xpay == NULL) || (ws->xlo == NULL)) {
        return TERSE_ERR_NOMEM;
    }
    for (l = 0; l < slot->nlayers; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        if (ly->cls != TERSE_CLASS_SPARSE) {
            continue;
        }
        TERSE_CHECK(ly->ops->payload_size(ly->cmp, ly->count, 0, &ws->xpay[l]));
        ws->xlo[l] = ws->xmsg;
        ws->xmsg += TERSE_ALIGN_UP(ws->xpay[l], (size_t)DEV_ALIGN);
        *maxn_p = TERSE_MAX(*maxn_p, ly->count);
    }
    return dev_alloc((void **)&ws->xbuf, ws->xmsg * (size_t)ws->p, &slot->mem_bytes);
}

/* Every PowerSGD layer's passes as one batch (compress into the stage-0 payloads, stage 1 from
 * their sums into the stage-1 payloads, decompress of those sums into the caller's output):
 * launches grow with the rank classes present, not with the layers. Built when missing or
 * stale (dtype, scale, error feedback, residual buffer), as the other tables; fewer than two
 * such layers, or a failure (warned): one launch sequence per layer. */
static terse_status_t
dev_ps_tables(const terse_slot_t *slot, dev_ws_t *ws, const terse_call_t *call)
{
    const size_t nl = slot->nlayers, ns = ws->nstages, es = terse__esize(call->dtype);
    terse_cu_player_t *P = NULL;
    terse_status_t status = TERSE_OK;
    size_t l, n = 0;

    if ((ns < 2) || dev_key_fresh(&ws->ps_key, slot, call)) {
        return TERSE_OK;
    }
    terse__cmp_psgd_cuda_batch_destroy(ws->ps_batch);
    ws->ps_batch     = NULL;
    ws->ps_key.built = -1;
    if (ws->ps_in == NULL) {
        ws->ps_in = calloc(TERSE_MAX(nl, (size_t)1), 1);
    }
    P = calloc(TERSE_MAX(nl, (size_t)1), sizeof(*P));
    if ((ws->ps_in == NULL) || (P == NULL)) {
        status = TERSE_ERR_NOMEM;
        goto out;
    }
    for (l = 0; l < nl; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        const int g = ws->sgroup[l];
        void *h = NULL;
        ws->ps_in[l] = 0;
        if ((ly->cls != TERSE_CLASS_SUMMABLE) || (ws->lstages[l] != 2) || (ly->cmp == NULL) ||
            (strcmp(ly->ops->name, "powersgd") != 0) ||
            ((h = terse__cmp_psgd_cuda_of(ly->cmp)) == NULL)) {
            continue;
        }
        /* both allreduces are in place: P and Q are summed where compress and stage 1 wrote */
        P[n] = (terse_cu_player_t){
            h, (const void *)(uintptr_t)(ly->offset * es),
            call->error_feedback ? terse__fb_layer(&slot->fb, l) : NULL,
            (unsigned char *)ws->sbuf[g][0] + ws->soff[l * ns],
            (unsigned char *)ws->sbuf[g][0] + ws->soff[l * ns],
            (unsigned char *)ws->sbuf[g][1] + ws->soff[l * ns + 1],
            (unsigned char *)ws->sbuf[g][1] + ws->soff[l * ns + 1],
            (void *)(uintptr_t)(ly->offset * es), ly->count, call->dtype, call->scale,
            TERSE_CU_PUSER_IN | TERSE_CU_PUSER_OUT};
        ws->ps_in[l] = 1;
        ++n;
    }
    if (n >= 2) {
        status = terse__cmp_psgd_cuda_batch_create_full(P, n, &ws->ps_batch);
        if (status == TERSE_OK) {
            dev_key_set(&ws->ps_key, slot, call);
        }
    }
out:
    if (ws->ps_key.built < 0) {
        if (status != TERSE_OK) {
            terse_warn(TERSE_LOG_COMM, "batched PowerSGD of %zu layers failed (%s): one launch "
                       "sequence per layer instead", n, terse_status_str(status));
        }
        terse__cmp_psgd_cuda_batch_destroy(ws->ps_batch);
        ws->ps_batch = NULL;
        if (ws->ps_in != NULL) {
            memset(ws->ps_in, 0, nl);
        }
    }
    free(P);
    return (status == TERSE_ERR_CUDA) ? status : TERSE_OK;
}

static terse_status_t
dev_setup(terse_ctx_t *ctx, terse_slot_t *slot)
{
    terse_nccl_tp_t *tp = dev_tp(ctx);
    terse_status_t status;
    size_t maxn = 0;
    dev_ws_t *ws;
    int prev;

    ws = calloc(1, sizeof(*ws));
    if (ws == NULL) {
        return TERSE_ERR_NOMEM;
    }
    slot->ws[TERSE_CLASS_NATIVE] = ws;
    ws->p  = tp->head.nranks;
    ws->me = tp->head.rank;
    TERSE_CHECK(terse__nccl_tp_enter(tp, &prev));
    TERSE_CHECK_GOTO(dev_setup_summable(slot, ws), status, out);
    TERSE_CHECK_GOTO(dev_setup_requant(slot, ws, &maxn), status, out);
    TERSE_CHECK_GOTO(dev_setup_sparse(slot, ws, &maxn), status, out);
    if (maxn > 0) {
        TERSE_CHECK_GOTO(dev_alloc((void **)&ws->scratch, maxn * sizeof(float),
                                   &slot->mem_bytes),
                         status, out);
    }
out:
    terse__nccl_tp_leave(prev);
    if (status != TERSE_OK) {
        terse_warn(TERSE_LOG_COMM, "failed to allocate the device buffers of a layout of %zu "
                   "elements (%s)", slot->count, terse_status_str(status));
    }
    return status;
}

/* ---------------------------------------------------------------- run */
#define DEV_NCCL(_call, _what) TERSE_CHECK(terse__nccl_status(api, (_call), _what))

static terse_status_t
dev_run_native(terse_nccl_tp_t *tp, terse_slot_t *slot, terse_call_t *call)
{
    const terse_nccl_api_t *api = tp->api;
    const size_t es             = terse__esize(call->dtype);
    const ncclRedOp_t op        = (call->scale != 1.0f) ? ncclAvg : ncclSum;
    terse_status_t status       = TERSE_OK;
    size_t l = 0, first, n;

    if (slot->nclass[TERSE_CLASS_NATIVE] == 0) {
        return TERSE_OK;
    }
    DEV_NCCL(api->GroupStart(), "ncclGroupStart");
    while (l < slot->nlayers) {
        if (slot->layers[l].cls != TERSE_CLASS_NATIVE) {
            ++l;
            continue;
        }
        first = slot->layers[l].offset;
        n     = 0;
        while ((l < slot->nlayers) && (slot->layers[l].cls == TERSE_CLASS_NATIVE)) {
            n += slot->layers[l].count;
            ++l;
        }
        tp->head.bytes_sent += 2 * (uint64_t)(tp->head.nranks - 1) * n * es /
                               (uint64_t)tp->head.nranks;
        if ((status == TERSE_OK) &&
            (api->AllReduce((const unsigned char *)call->send + first * es,
                            (unsigned char *)call->recv + first * es, n,
                            terse__nccl_dtype(call->dtype), op, tp->comm,
                            (cudaStream_t)call->stream) != ncclSuccess)) {
            status = TERSE_ERR_NCCL;
        }
    }
    DEV_NCCL(api->GroupEnd(), "ncclGroupEnd");
    if (status != TERSE_OK) {
        terse_error(TERSE_LOG_COMM, "ncclAllReduce of native layers failed");
    }
    return status;
}

static terse_status_t
dev_run_summable(terse_nccl_tp_t *tp, terse_slot_t *slot, terse_call_t *call, int tables)
{
    dev_ws_t *ws                = slot->ws[TERSE_CLASS_NATIVE];
    const terse_nccl_api_t *api = tp->api;
    const size_t es             = terse__esize(call->dtype);
    const size_t ns             = ws->nstages;
    const unsigned char *cs, *rk, *ps;
    size_t l, s;
    int g;

    if (tables) {
        TERSE_CHECK(dev_cs_tables(slot, ws, call));
        TERSE_CHECK(dev_rk_tables(slot, ws, call));
        TERSE_CHECK(dev_ps_tables(slot, ws, call));
    }
    cs = (tables && (ws->cs_key.built > 0)) ? ws->cs_in : NULL;
    rk = (tables && (ws->rk_key.built > 0)) ? ws->rk_in : NULL;
    ps = (tables && (ws->ps_key.built > 0)) ? ws->ps_in : NULL;
    for (s = 0; s < ns; ++s) {
        const int cur = (int)(s & 1);
        if ((s == 0) && (cs != NULL)) {
            TERSE_CHECK(terse__cmp_cast_cuda_table_run(ws->cs_tc, call->send, call->stream));
        }
        if ((s == 0) && (rk != NULL)) {
            TERSE_CHECK(terse__cmp_randomk_cuda_table_run(ws->rk_tc, call->step, call->send,
                                                          call->stream));
        }
        if ((s == 0) && (ps != NULL)) {
            TERSE_CHECK(terse__cmp_psgd_cuda_batch_compress(ws->ps_batch, call->send,
                                                            call->stream));
        }
        if ((s == 1) && (ps != NULL)) {
            TERSE_CHECK(terse__cmp_psgd_cuda_batch_stage(ws->ps_batch, call->stream));
        }
        for (l = 0; l < slot->nlayers; ++l) {
            terse_layer_state_t *ly = &slot->layers[l];
            unsigned char *dst;
            if ((ly->cls != TERSE_CLASS_SUMMABLE) || (s >= ws->lstages[l]) ||
                DEV_IN_TABLE(cs, l) || DEV_IN_TABLE(rk, l) || DEV_IN_TABLE(ps, l)) {
                continue;
            }
            g   = ws->sgroup[l];
            dst = (unsigned char *)ws->sbuf[g][cur] + ws->soff[l * ns + s];
            if (s == 0) {
                terse_buf_t in = {(void *)((const unsigned char *)call->send + ly->offset * es),
                                  ly->count, call->dtype, TERSE_MEM_CUDA};
                terse_rng_t rng = terse_rng_make(call->seed, TERSE_RNG_RANDOMK, (uint32_t)l,
                                                 call->step, TERSE_RNG_SHARED);
                uint32_t flags = 0;
                TERSE_CHECK(ly->ops->compress(ly->cmp, &in,
                                              call->error_feedback ?
                                                  terse__fb_layer(&slot->fb, l) : NULL,
                                              &rng, dst, ws->spay[l * ns + s], &flags, NULL,
                                              call->stream));
            } else {
                const unsigned char *prev =
                    (const unsigned char *)ws->sbuf[g][cur ^ 1] + ws->soff[l * ns + s - 1];
                TERSE_CHECK(ly->ops->stage(ly->cmp, (unsigned)s, prev, ws->spay[l * ns + s - 1],
                                           dst, ws->spay[l * ns + s], NULL, call->stream));
            }
        }
        DEV_NCCL(api->GroupStart(), "ncclGroupStart");
        for (g = 0; g < DEV_NGROUPS; ++g) {
            const size_t bytes = ws->sfused[s * DEV_NGROUPS + g];
            const size_t esz   = terse_dtype_size(dev_group_dtype[g]);
            if (bytes == 0) {
                continue;
            }
            tp->head.bytes_sent += 2 * (uint64_t)(tp->head.nranks - 1) * bytes /
                                   (uint64_t)tp->head.nranks;
            if (api->AllReduce(ws->sbuf[g][cur], ws->sbuf[g][cur], bytes / esz,
                               terse__nccl_dtype(dev_group_dtype[g]), ncclSum, tp->comm,
                               (cudaStream_t)call->stream) != ncclSuccess) {
                api->GroupEnd();
                terse_error(TERSE_LOG_COMM, "ncclAllReduce of summable payloads failed");
                return TERSE_ERR_NCCL;
            }
        }
        DEV_NCCL(api->GroupEnd(), "ncclGroupEnd");
        if ((s == 0) && (cs != NULL)) {
            TERSE_CHECK(terse__cmp_cast_cuda_table_run(ws->cs_td, call->recv, call->stream));
        }
        if ((s == 0) && (rk != NULL)) {
            TERSE_CHECK(terse__cmp_randomk_cuda_table_run(ws->rk_td, call->step, call->recv,
                                                          call->stream));
        }
        if ((s == 1) && (ps != NULL)) {
            TERSE_CHECK(terse__cmp_psgd_cuda_batch_decompress(ws->ps_batch, call->recv,
                                                              call->stream));
        }
        for (l = 0; l < slot->nlayers; ++l) {
            terse_layer_state_t *ly = &slot->layers[l];
            terse_buf_t outb;
            if ((ly->cls != TERSE_CLASS_SUMMABLE) || (s + 1 != ws->lstages[l]) ||
                DEV_IN_TABLE(cs, l) || DEV_IN_TABLE(rk, l) || DEV_IN_TABLE(ps, l)) {
                continue;
            }
            g    = ws->sgroup[l];
            outb = (terse_buf_t){(unsigned char *)call->recv + ly->offset * es, ly->count,
                                 call->dtype, TERSE_MEM_CUDA};
            TERSE_CHECK(ly->ops->decompress(ly->cmp,
                                            (unsigned char *)ws->sbuf[g][cur] +
                                                ws->soff[l * ns + s],
                                            ws->spay[l * ns + s], call->scale, &outb,
                                            call->stream));
        }
    }
    return TERSE_OK;
}

/* Decodes the fp32 accumulator of one layer into the caller's output (as the host path). */
static terse_status_t
dev_finish_layer(const terse_layer_state_t *ly, float *acc, terse_call_t *call)
{
    const size_t es = terse__esize(call->dtype);
    unsigned char *dst = (unsigned char *)call->recv + ly->offset * es;

    if (acc == (float *)dst) {
        return TERSE_OK;
    }
    return terse__dev_from_f32(acc, call->scale, dst, call->dtype, ly->count, call->stream);
}

static float *
dev_acc_of(dev_ws_t *ws, const terse_layer_state_t *ly, terse_call_t *call)
{
    unsigned char *dst = (unsigned char *)call->recv + ly->offset * terse__esize(call->dtype);

    return ((call->dtype == TERSE_FLOAT32) && (call->scale == 1.0f)) ? (float *)dst
                                                                     : ws->scratch;
}

static terse_status_t
dev_run_requant(terse_nccl_tp_t *tp, terse_slot_t *slot, terse_call_t *call, int tables)
{
    dev_ws_t *ws                = slot->ws[TERSE_CLASS_NATIVE];
    const terse_nccl_api_t *api = tp->api;
    const size_t es             = terse__esize(call->dtype);
    const int p = ws->p, me = ws->me;
    terse_status_t status = TERSE_OK;
    const unsigned char *tab;
    size_t l;
    int j, q;

    if (tables) {
        TERSE_CHECK(dev_rq_tables(slot, ws, call));
    }
    tab = (tables && (ws->rq_key.built > 0)) ? ws->rq_tab : NULL;
    /* 1: compress chunk j of every layer into message j (mine last, as the host path) */
    for (j = 0; j < p; ++j) {
        const int jj = (me + 1 + j) % p;
        if ((tab != NULL) && (ws->rq_tc[jj] != NULL)) {
            TERSE_CHECK(terse__cmp_quant_cuda_table_run_at(ws->rq_tc[jj], call->step, call->send,
                                                           call->stream));
        }
        for (l = 0; l < slot->nlayers; ++l) {
            terse_layer_state_t *ly = &slot->layers[l];
            const size_t len = ((ly->cls == TERSE_CLASS_REQUANT) && !DEV_IN_TABLE(tab, l))
                                   ? dev_rq_len(ly, jj)
                                   : 0;
            const size_t off = (size_t)jj * ly->chunk;
            terse_buf_t in;
            terse_rng_t rng;
            uint32_t flags = 0;
            if (len == 0) {
                continue;
            }
            in  = (terse_buf_t){(void *)((const unsigned char *)call->send +
                                         (ly->offset + off) * es),
                                len, call->dtype, TERSE_MEM_CUDA};
            rng = terse_rng_advance(terse_rng_make(call->seed, TERSE_RNG_QUANT, (uint32_t)l,
                                                   call->step, (uint32_t)me),
                                    off);
            TERSE_CHECK(ly->ops->compress(ly->cmp, &in,
                                          call->error_feedback ?
                                              terse__fb_layer(&slot->fb, l) + off : NULL,
                                          &rng, ws->rsend + ws->rmoff[jj] + ws->rlo[l * p + jj],
                                          ws->rpay[l * p + jj], &flags, NULL, call->stream));
        }
    }
    /* 2: the reduce-scatter, one group */
    DEV_NCCL(api->GroupStart(), "ncclGroupStart");
    for (q = 0; q < p; ++q) {
        if ((q == me) || (status != TERSE_OK)) {
            continue;
        }
        tp->head.bytes_sent += ws->rmsg[q];
        if ((api->Send(ws->rsend + ws->rmoff[q], ws->rmsg[q], ncclUint8, q, tp->comm,
                       (cudaStream_t)call->stream) != ncclSuccess) ||
            (api->Recv(ws->rrecv + (size_t)q * ws->rmsg[me], ws->rmsg[me], ncclUint8, q,
                       tp->comm, (cudaStream_t)call->stream) != ncclSuccess)) {
            status = TERSE_ERR_NCCL;
        }
    }
    DEV_NCCL(api->GroupEnd(), "ncclGroupEnd");
    if (status != TERSE_OK) {
        terse_error(TERSE_LOG_COMM, "ncclSend/ncclRecv of the compressed reduce-scatter failed");
        return status;
    }
    /* 3: my chunks' sums in rank order, then requantised into my block of the allgather */
    /* all of it: the padded layout is longer than the owned counts (rq_fb.total), and a sum
     * left from the last step in a later layer's part would be added to */
    TERSE_CHECK(terse__cuda_memset_async(ws->racc, 0, ws->racc_n * sizeof(float),
                                         call->stream));
    for (q = 0; q < p; ++q) {
        const unsigned char *msg = (q == me) ? ws->rsend + ws->rmoff[me]
                                             : ws->rrecv + (size_t)q * ws->rmsg[me];
        if ((tab != NULL) && (ws->rq_td[q] != NULL)) {
            TERSE_CHECK(terse__cmp_quant_cuda_table_run(ws->rq_td[q], 0, call->stream));
        }
        for (l = 0; l < slot->nlayers; ++l) {
            const terse_layer_state_t *ly = &slot->layers[l];
            const size_t len = ((ly->cls == TERSE_CLASS_REQUANT) && !DEV_IN_TABLE(tab, l))
                                   ? dev_rq_len(ly, me)
                                   : 0;
            uint32_t flags   = 0;
            if (len == 0) {
                continue;
            }
            TERSE_CHECK(ly->ops->decompress_add(ly->cmp, msg + ws->rlo[l * p + me],
                                                ws->rpay[l * p + me], ws->racc + ws->racc_off[l],
                                                len, &flags, call->stream));
        }
    }
    if ((tab != NULL) && (ws->rq_tr != NULL)) {
        TERSE_CHECK(terse__cmp_quant_cuda_table_run(ws->rq_tr, call->step, call->stream));
    }
    for (l = 0; l < slot->nlayers; ++l) {
        terse_layer_state_t *ly = &slot->layers[l];
        const size_t len = ((ly->cls == TERSE_CLASS_REQUANT) && !DEV_IN_TABLE(tab, l))
                               ? dev_rq_len(ly, me)
                               : 0;
        const size_t off = (size_t)me * ly->chunk;
        terse_buf_t in;
        terse_rng_t rng;
        uint32_t flags = 0;
        if (len == 0) {
            continue;
        }
        in  = (terse_buf_t){ws->racc + ws->racc_off[l], len, TERSE_FLOAT32, TERSE_MEM_CUDA};
        rng = terse_rng_advance(terse_rng_make(call->seed, TERSE_RNG_REQUANT, (uint32_t)l,
                                               call->step, (uint32_t)me),
                                off);
        TERSE_CHECK(ly->ops->compress(ly->cmp, &in,
                                      call->error_feedback ? terse__fb_layer(&slot->rq_fb, l)
                                                           : NULL,
                                      &rng, ws->rag + (size_t)me * ws->rmax + ws->rlo[l * p + me],
                                      ws->rpay[l * p + me], &flags, NULL, call->stream));
    }
    /* 4: allgather of the owners' blocks, every rank decodes every chunk alike */
    tp->head.bytes_sent += ws->rmax * (uint64_t)(p - 1);
    DEV_NCCL(api->AllGather(ws->rag + (size_t)me * ws->rmax, ws->rag, ws->rmax, ncclUint8,
                            tp->comm, (cudaStream_t)call->stream),
             "ncclAllGather");
    for (q = 0; (tab != NULL) && (q < p); ++q) {
        /* straight into the output: no zeroing, no conversion pass (TERSE_CU_Q_DECOMPRESS_SET) */
        if (ws->rq_to[q] != NULL) {
            TERSE_CHECK(terse__cmp_quant_cuda_table_run_at(ws->rq_to[q], 0, call->recv,
                                                           call->stream));
        }
    }
    for (l = 0; l < slot->nlayers; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        float *acc;
        if ((ly->cls != TERSE_CLASS_REQUANT) || DEV_IN_TABLE(tab, l)) {
            continue;
        }
        acc = dev_acc_of(ws, ly, call);
        TERSE_CHECK(terse__cuda_memset_async(acc, 0, ly->count * sizeof(float), call->stream));
        for (q = 0; q < p; ++q) {
            const size_t len = dev_rq_len(ly, q);
            uint32_t flags   = 0;
            if (len == 0) {
                continue;
            }
            TERSE_CHECK(ly->ops->decompress_add(ly->cmp,
                                                ws->rag + (size_t)q * ws->rmax +
                                                    ws->rlo[l * p + q],
                                                ws->rpay[l * p + q], acc + (size_t)q * ly->chunk,
                                                len, &flags, call->stream));
        }
        TERSE_CHECK(dev_finish_layer(ly, acc, call));
    }
    return TERSE_OK;
}

static terse_status_t
dev_run_sparse(terse_nccl_tp_t *tp, terse_slot_t *slot, terse_call_t *call, int tables)
{
    dev_ws_t *ws                = slot->ws[TERSE_CLASS_NATIVE];
    const terse_nccl_api_t *api = tp->api;
    const size_t es             = terse__esize(call->dtype);
    unsigned char *mine         = ws->xbuf + (size_t)ws->me * ws->xmsg;
    const unsigned char *xt;
    size_t l;
    int q;

    if (tables) {
        TERSE_CHECK(dev_xt_tables(slot, ws, call));
    }
    xt = (tables && (ws->xt_key.built > 0)) ? ws->xt_in : NULL;
    if (xt != NULL) {
        TERSE_CHECK(terse__cmp_topk_cuda_table_run(ws->xt_tc, call->send, call->stream));
    }
    for (l = 0; l < slot->nlayers; ++l) {
        terse_layer_state_t *ly = &slot->layers[l];
        terse_buf_t in;
        terse_rng_t rng;
        uint32_t flags = 0;
        if ((ly->cls != TERSE_CLASS_SPARSE) || DEV_IN_TABLE(xt, l)) {
            continue;
        }
        in  = (terse_buf_t){(void *)((const unsigned char *)call->send + ly->offset * es),
                            ly->count, call->dtype, TERSE_MEM_CUDA};
        rng = terse_rng_make(call->seed, TERSE_RNG_QUANT, (uint32_t)l, call->step,
                             (uint32_t)ws->me);
        TERSE_CHECK(ly->ops->compress(ly->cmp, &in,
                                      call->error_feedback ? terse__fb_layer(&slot->fb, l) : NULL,
                                      &rng, mine + ws->xlo[l], ws->xpay[l], &flags, NULL,
                                      call->stream));
    }
    tp->head.bytes_sent += ws->xmsg * (uint64_t)(ws->p - 1);
    DEV_NCCL(api->AllGather(mine, ws->xbuf, ws->xmsg, ncclUint8, tp->comm,
                            (cudaStream_t)call->stream),
             "ncclAllGather");
    if (xt != NULL) {
        for (q = 0; q < ws->p; ++q) {
            TERSE_CHECK(terse__cmp_topk_cuda_table_run(ws->xt_td[q], call->recv, call->stream));
        }
        if (ws->xt_fin != NULL) {
            TERSE_CHECK(terse__dev_from_f32_table_run(ws->xt_fin, ws->xt_acc, call->scale,
                                                      call->recv, call->dtype, call->stream));
        }
    }
    for (l = 0; l < slot->nlayers; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        float *acc;
        if ((ly->cls != TERSE_CLASS_SPARSE) || DEV_IN_TABLE(xt, l)) {
            continue;
        }
        acc = dev_acc_of(ws, ly, call);
        TERSE_CHECK(terse__cuda_memset_async(acc, 0, ly->count * sizeof(float), call->stream));
        for (q = 0; q < ws->p; ++q) {
            uint32_t flags = 0;
            TERSE_CHECK(ly->ops->decompress_add(ly->cmp, ws->xbuf + (size_t)q * ws->xmsg +
                                                              ws->xlo[l],
                                                ws->xpay[l], acc, ly->count, &flags,
                                                call->stream));
        }
        TERSE_CHECK(dev_finish_layer(ly, acc, call));
    }
    return TERSE_OK;
}

static terse_status_t
dev_run(terse_ctx_t *ctx, terse_slot_t *slot, terse_call_t *call)
{
    terse_nccl_tp_t *tp = dev_tp(ctx);
    terse_status_t status = TERSE_OK;
    int prev;

    if (slot->ws[TERSE_CLASS_NATIVE] == NULL) {
        return TERSE_ERR_INTERNAL;
    }
    TERSE_CHECK(terse__nccl_tp_enter(tp, &prev));
    /* the classes in the host path's order: every rank enqueues the same NCCL sequence */
    if (slot->nclass[TERSE_CLASS_SUMMABLE] > 0) {
        TERSE_CHECK_GOTO(dev_run_summable(tp, slot, call, ctx->cfg->DEVICE_TABLES), status,
                         out);
    }
    if (slot->nclass[TERSE_CLASS_REQUANT] > 0) {
        TERSE_CHECK_GOTO(dev_run_requant(tp, slot, call, ctx->cfg->DEVICE_TABLES), status, out);
    }
    if (slot->nclass[TERSE_CLASS_SPARSE] > 0) {
        TERSE_CHECK_GOTO(dev_run_sparse(tp, slot, call, ctx->cfg->DEVICE_TABLES), status, out);
    }
    TERSE_CHECK_GOTO(dev_run_native(tp, slot, call), status, out);
out:
    terse__nccl_tp_leave(prev);
    return status;
}

static terse_status_t
dev_passthrough(terse_ctx_t *ctx, const void *send, void *recv, size_t count,
                terse_dtype_t dtype, float scale, terse_stream_t stream)
{
    terse_nccl_tp_t *tp = dev_tp(ctx);
    const terse_nccl_api_t *api = tp->api;
    terse_status_t status;
    int prev;

    TERSE_CHECK(terse__nccl_tp_enter(tp, &prev));
    tp->head.bytes_sent += 2 * (uint64_t)(tp->head.nranks - 1) * count * terse__esize(dtype) /
                           (uint64_t)tp->head.nranks;
    status = terse__nccl_status(api, api->AllReduce(send, recv, count, terse__nccl_dtype(dtype),
                                                    (scale != 1.0f) ? ncclAvg : ncclSum,
                                                    tp->comm, (cudaStream_t)stream),
                                "ncclAllReduce");
    terse__nccl_tp_leave(prev);
    return status;
}

static terse_status_t
dev_stage(terse_ctx_t *ctx, const void *src, size_t bytes, terse_stream_t stream,
          const void **host_p)
{
    terse_nccl_tp_t *tp = dev_tp(ctx);
    terse_status_t status = TERSE_ERR_CUDA;
    int prev;

    TERSE_CHECK(terse__nccl_tp_enter(tp, &prev));
    if (bytes > tp->host_cap) {
        void *h = NULL;
        if (cudaMallocHost(&h, bytes) != cudaSuccess) {
            terse_error(TERSE_LOG_COMM, "failed to allocate %zu bytes of pinned staging", bytes);
            status = TERSE_ERR_NOMEM;
            goto out;
        }
        if (tp->host != NULL) {
            cudaFreeHost(tp->host);
        }
        tp->host     = h;
        tp->host_cap = bytes;
    }
    /* re-plan steps only: the statistics are host code, so the gradient comes over once */
    if ((cudaMemcpyAsync(tp->host, src, bytes, cudaMemcpyDeviceToHost, (cudaStream_t)stream) ==
         cudaSuccess) &&
        (cudaStreamSynchronize((cudaStream_t)stream) == cudaSuccess)) {
        *host_p = tp->host;
        status  = TERSE_OK;
    } else {
        terse_error(TERSE_LOG_COMM, "failed to copy a gradient to the host for statistics");
    }
out:
    terse__nccl_tp_leave(prev);
    return status;
}

const terse_dev_path_t terse__nccl_path = {
    .tp_ops      = &terse_transport_nccl_ops,
    .setup       = dev_setup,
    .cleanup     = dev_cleanup,
    .run         = dev_run,
    .passthrough = dev_passthrough,
    .stage       = dev_stage,
};
