/*
 * algo_hier: the hierarchical allreduce (DESIGN.md section 6). With L ranks on each of N nodes
 * (local rank i of node n), every layer of a call travels as:
 *
 *   1 intra-node reduce-scatter, uncompressed: local rank i receives piece i from its node
 *     peers and sums the L values in local-rank order in fp32 (the same bits on every run);
 *   2 inter-node compressed allreduce of that node sum, among the N ranks of local rank i
 *     (one per node: every node's L links to the network are used, not one leader's), with the
 *     flat wire algorithms and the plan's compressors on the piece's layers; error feedback
 *     lives here, per rank-owned piece (residual of the node sum);
 *   3 intra-node allgather of the result pieces (the bytes every owner wrote: bitwise equal
 *     on every rank, rule 2).
 *
 * Pipelining: each rank's shard is cut into K chunks (TERSE_HIER_CHUNK_BYTES); the buffer is
 * cut into K x L pieces, chunk-major (piece m = k L + i is chunk k of local rank i), so that
 * the reduce-scatter of chunk k + 1 and the allgather of chunk k are in flight while chunk k
 * (k + 1) crosses the network:
 *
 *      RS(0) | sum(0) | post RS(1) | inter(0) | post AG(0) | sum(1) | post RS(2) | inter(1) ...
 *
 * Piece boundaries fall on whole rows of a matrix layer (PowerSGD keeps a matrix: a row block)
 * and on whole quant buckets of a flat one, computed from the layout alone: every rank cuts
 * alike. A piece's layers form an inter-node "sub-slot" (comm/terse.c's slot over the
 * inter-node transport): its own compressor instances, residuals and message buffers.
 *
 * Non-finite values: the inter-node stage flags the piece of a layer on every node; one small
 * intra-node allgather of per-layer flags at the end makes every rank write NaN into the whole
 * layer and reset the residuals of every piece of it (rule 3).
 *
 * Uneven nodes (different rank counts) and single-level topologies run flat on every rank
 * (the topology is identical everywhere, so the decision is too).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "terse_internal.h"
#include "topology.h"

#define HIER_TAG_RS  40
#define HIER_TAG_AG  41
#define HIER_MAX_K   64   /* pipeline chunks per shard at most */

struct terse_hier_ctx {
    terse_topo_t      *topo;   /* owned */
    terse_transport_t *intra;  /* owned: the ranks of this node, by local rank */
    terse_transport_t *inter;  /* owned: local rank i of every node, by node */
    int                L, me, nnodes;
    size_t             chunk_bytes;
};

struct terse_hier_slot {
    int             L, me, K;
    size_t          nlayers;        /* of the slot */
    size_t         *bound;          /* [K L + 1] element boundaries of the pieces */
    terse_slot_t  **sub;            /* [K] sub-slot of my piece of chunk k (NULL: empty) */
    size_t        **map;            /* [K][sub->nlayers]: the slot layer of each sub-layer */
    float          *acc;            /* node sum of my piece (max_piece) */
    float          *out;            /* fp32 result of my piece for 16-bit callers, else NULL */
    unsigned char  *stage;          /* (L - 1) x max_piece elements: reduce-scatter receives */
    terse_req_t    *reqs;           /* 2 (L - 1) (K + 1) */
    unsigned char  *flags;          /* [(L + 1) x nlayers]: non-finite layers; mine, then
                                       every local rank's (allgather), folded into row 0 */
    size_t          max_piece;
};

/* ---------------------------------------------------------------- context */
void
terse__hier_ctx_fini(terse_ctx_t *ctx)
{
    terse_hier_ctx_t *h = ctx->hier;

    if (h == NULL) {
        return;
    }
    if (h->inter != NULL) {
        h->inter->ops->finalize(h->inter);
    }
    if (h->intra != NULL) {
        h->intra->ops->finalize(h->intra);
    }
    terse_topo_destroy(h->topo);
    free(h);
    ctx->hier = NULL;
}

int
terse__hier_ctx_levels(const terse_ctx_t *ctx, int *local_p, int *nodes_p)
{
    if (ctx->hier == NULL) {
        return 1;
    }
    if (local_p != NULL) {
        *local_p = ctx->hier->L;
    }
    if (nodes_p != NULL) {
        *nodes_p = ctx->hier->nnodes;
    }
    return 2;
}

terse_transport_t *
terse__hier_ctx_tp(const terse_ctx_t *ctx, int level)
{
    if (ctx->hier == NULL) {
        return (level == 0) ? NULL : ctx->tp;
    }
    return (level == 0) ? ctx->hier->intra : ctx->hier->inter;
}

terse_status_t
terse__hier_ctx_init(terse_ctx_t *ctx, const char *topo_spec, int mode, size_t chunk_bytes)
{
    terse_hier_ctx_t *h;
    terse_topo_t *topo = NULL;
    terse_status_t st;
    uint64_t v[1];

    terse__hier_ctx_fini(ctx);
    if ((mode == TERSE_HIER_FLAT) || (ctx->nranks < 2) || (ctx->tp->ops->split == NULL)) {
        if ((mode == TERSE_HIER_ON) && (ctx->nranks > 1)) {
            terse_warn(TERSE_LOG_COMM, "TERSE_HIERARCHY on: the %s transport cannot split: "
                       "flat allreduce", ctx->tp->ops->name);
        }
        return TERSE_OK;
    }
    st = terse_topo_create_tp(ctx->tp, topo_spec, 0, TERSE_TOPO_NO_LOCALITY, &topo);
    if (st == TERSE_ERR_MISMATCH || st == TERSE_ERR_INVALID) {
        return st; /* every rank returns it (terse_topo_create) */
    }
    TERSE_CHECK(st);
    if ((topo->nnodes < 2) || (topo->max_local_size < 2) || !topo->uniform) {
        if ((mode == TERSE_HIER_ON) || !topo->uniform) {
            terse_info(TERSE_LOG_COMM, "hierarchical allreduce off: %d nodes of %s%d ranks%s",
                       topo->nnodes, topo->uniform ? "" : "up to ", topo->max_local_size,
                       topo->uniform ? "" : " (uneven nodes run flat on every rank)");
        }
        terse_topo_destroy(topo);
        return TERSE_OK;
    }
    h = calloc(1, sizeof(*h));
    v[0] = (h == NULL);
    if (h != NULL) {
        h->topo        = topo;
        h->L           = topo->local_size;
        h->me          = topo->local_rank;
        h->nnodes      = topo->nnodes;
        h->chunk_bytes = chunk_bytes;
        /* every rank splits (collective), then all agree that both splits worked */
        if (ctx->tp->ops->split(ctx->tp, topo->node, topo->local_rank, &h->intra) != TERSE_OK) {
            h->intra = NULL;
            v[0]     = 1;
        }
        if (ctx->tp->ops->split(ctx->tp, topo->local_rank, topo->node, &h->inter) != TERSE_OK) {
            h->inter = NULL;
            v[0]     = 1;
        }
    } else {
        /* the other ranks split: take part, then give up (agreed below) */
        terse_transport_t *a = NULL, *b = NULL;
        if (ctx->tp->ops->split(ctx->tp, topo->node, topo->local_rank, &a) == TERSE_OK) {
            a->ops->finalize(a);
        }
        if (ctx->tp->ops->split(ctx->tp, topo->local_rank, topo->node, &b) == TERSE_OK) {
            b->ops->finalize(b);
        }
        terse_topo_destroy(topo);
    }
    ctx->hier = h;
    TERSE_CHECK(ctx->tp->ops->allreduce(ctx->tp, v, v, 1, TERSE_TP_MAX_U64));
    if (v[0] != 0) {
        terse_warn(TERSE_LOG_COMM, "could not build the hierarchy's sub-communicators: flat "
                   "allreduce on every rank");
        terse__hier_ctx_fini(ctx);
        return TERSE_OK;
    }
    if ((h->intra->nranks != h->L) || (h->inter->nranks != h->nnodes) ||
        (h->intra->rank != h->me) || (h->inter->rank != topo->node)) {
        terse_error(TERSE_LOG_COMM, "sub-communicators do not match the topology");
        terse__hier_ctx_fini(ctx);
        return TERSE_ERR_INTERNAL;
    }
    if (ctx->rank == 0) {
        terse_info(TERSE_LOG_COMM, "hierarchical allreduce: %d nodes x %d ranks, uncompressed "
                   "inside a node, compressed between nodes, chunks of %zu bytes", h->nnodes,
                   h->L, h->chunk_bytes);
    }
    return TERSE_OK;
}

/* Times allreduces of 1 and 256 K floats over tp (every group of the split at once, as the
 * hierarchical allreduce runs them), best of a few; MAX over all ranks of ctx->tp. */
static terse_status_t
hier_time_level(terse_ctx_t *ctx, terse_transport_t *tp, float *buf, size_t big, double *t_p)
{
    uint64_t v[2];
    double t;
    int s, rep;

    for (s = 0; s < 2; ++s) {
        t_p[s] = 1e30;
        for (rep = 0; rep < ((s == 0) ? 5 : 3); ++rep) {
            t = terse__time_now();
            TERSE_CHECK(tp->ops->allreduce(tp, buf, buf, (s == 0) ? 1 : big, TERSE_TP_SUM_F32));
            t_p[s] = TERSE_MIN(t_p[s], terse__time_now() - t);
        }
    }
    v[0] = (uint64_t)(t_p[0] * 1e9);
    v[1] = (uint64_t)(t_p[1] * 1e9);
    TERSE_CHECK(ctx->tp->ops->allreduce(ctx->tp, v, v, 2, TERSE_TP_MAX_U64));
    t_p[0] = (double)v[0] * 1e-9;
    t_p[1] = TERSE_MAX((double)v[1] - (double)v[0], 1.0) * 1e-9;
    return TERSE_OK;
}

terse_status_t
terse__hier_calibrate(terse_ctx_t *ctx, terse_sched_cost_t *cost)
{
    const terse_hier_ctx_t *h = ctx->hier;
    const size_t big          = (size_t)1 << 18;
    const double bytes        = (double)(big * sizeof(float));
    double alpha[2], bw[2], t[2];
    uint64_t v[1];
    float *buf;
    int lv, w, f;

    if (h == NULL) {
        return TERSE_OK;
    }
    buf  = calloc(big, sizeof(float));
    v[0] = (buf == NULL);
    TERSE_CHECK(ctx->tp->ops->allreduce(ctx->tp, v, v, 1, TERSE_TP_MAX_U64));
    if (v[0] != 0) {
        free(buf);
        terse_warn(TERSE_LOG_SCHED, "no memory to calibrate the cost model: using defaults");
        return TERSE_OK;
    }
    for (lv = 0; lv < 2; ++lv) {
        terse_transport_t *tp = (lv == 0) ? h->intra : h->inter;
        const int p           = tp->nranks;
        terse_status_t st     = hier_time_level(ctx, tp, buf, big, t);
        if (st != TERSE_OK) {
            free(buf);
            return st;
        }
        alpha[lv] = t[0] / terse__sched_wire_msgs(TERSE_SCHED_WIRE_NATIVE, p);
        bw[lv]    = terse__sched_wire_bytes(TERSE_SCHED_WIRE_NATIVE, bytes, p) / t[1];
    }
    free(buf);
    /* the inter-node level is the node's link, used by its L ranks at once: the node's
     * bandwidth is L times what one rank measured; TERSE_LINK_* describe it when set */
    bw[1] *= (double)h->L;
    if (ctx->cfg->LINK_LATENCY > 0.0) {
        alpha[1] = ctx->cfg->LINK_LATENCY;
    }
    if (ctx->cfg->LINK_BANDWIDTH > 0.0) {
        bw[1] = ctx->cfg->LINK_BANDWIDTH;
    }
    cost->nlevels         = 2;
    cost->level[0].nranks = h->L;
    cost->level[1].nranks = h->nnodes;
    for (lv = 0; lv < 2; ++lv) {
        for (w = 0; w < TERSE_SCHED_WIRE_COUNT; ++w) {
            cost->level[lv].alpha[w] = alpha[lv];
            cost->level[lv].bw[w]    = bw[lv];
        }
    }
    /* a node compresses its L pieces on L ranks at once */
    for (f = 0; f < TERSE_SCHED_FAM_COUNT; ++f) {
        cost->cmp_tput[f] *= (double)h->L;
    }
    terse_info(TERSE_LOG_SCHED, "cost model: inside a node %d ranks, latency %.3g s, bus "
               "bandwidth %.3g bytes/s; between %d nodes latency %.3g s, bandwidth %.3g bytes/s "
               "per node", h->L, alpha[0], bw[0], h->nnodes, alpha[1], bw[1]);
    return TERSE_OK;
}

/* ---------------------------------------------------------------- slots */
void
terse__hier_cleanup(terse_slot_t *slot)
{
    terse_hier_slot_t *hs = slot->hier;
    int k;

    if (hs == NULL) {
        return;
    }
    for (k = 0; (hs->sub != NULL) && (k < hs->K); ++k) {
        terse__slot_destroy(hs->sub[k]);
        free(hs->map[k]);
    }
    free(hs->sub);
    free(hs->map);
    free(hs->bound);
    free(hs->acc);
    free(hs->out);
    free(hs->stage);
    free(hs->reqs);
    free(hs->flags);
    free(hs);
    slot->hier = NULL;
}

/* Index of the layer holding element e (layers are sorted by offset). */
static size_t
hier_layer_at(const terse_slot_t *slot, size_t e)
{
    size_t lo = 0, hi = slot->nlayers;

    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (slot->layers[mid].offset <= e) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Piece boundaries: m count / (K L), moved up to the next row of a matrix layer (rows no
 * longer than a piece) or the next bucket of a flat one; monotone; the same on every rank
 * (integers only). */
static void
hier_bounds(const terse_slot_t *slot, size_t bucket, int npieces, size_t *b)
{
    int m;

    b[0]       = 0;
    b[npieces] = slot->count;
    for (m = 1; m < npieces; ++m) {
        /* floor(count m / npieces) without overflow */
        const size_t np = (size_t)npieces, q = slot->count / np, rem = slot->count % np;
        size_t t = q * (size_t)m + (rem * (size_t)m) / np;
        const terse_layer_state_t *ly;
        size_t r, unit;
        if (t >= slot->count) {
            b[m] = slot->count;
            continue;
        }
        ly = &slot->layers[hier_layer_at(slot, t)];
        /* whole rows, unless a row is longer than a piece (then pieces would be uneven) */
        unit = ((ly->rows > 0) && (ly->cols > 0) && (ly->cols <= q)) ? ly->cols : bucket;
        r    = TERSE_MIN(TERSE_ALIGN_UP(t - ly->offset, TERSE_MAX(unit, (size_t)1)), ly->count);
        b[m] = TERSE_MAX(b[m - 1], ly->offset + r);
    }
}

/* The sub-slot of piece [lo, hi): one sub-layer per slot layer it meets, a row block where
 * it holds whole rows. */
static terse_status_t
hier_sub_build(terse_ctx_t *ctx, terse_slot_t *slot, size_t lo, size_t hi,
               terse_slot_t **sub_p, size_t **map_p)
{
    const size_t l0 = hier_layer_at(slot, lo);
    size_t n = 0, l, *counts, *rows, *cols, *map;
    terse_cmp_spec_t *specs;
    char (*names)[TERSE_NAME_MAX];
    terse_status_t st = TERSE_ERR_NOMEM;

    *sub_p = NULL;
    *map_p = NULL;
    for (l = l0; (l < slot->nlayers) && (slot->layers[l].offset < hi); ++l) {
        n += (slot->layers[l].count > 0);
    }
    counts = calloc(TERSE_MAX(n, 1), sizeof(size_t));
    rows   = calloc(TERSE_MAX(n, 1), sizeof(size_t));
    cols   = calloc(TERSE_MAX(n, 1), sizeof(size_t));
    map    = calloc(TERSE_MAX(n, 1), sizeof(size_t));
    specs  = calloc(TERSE_MAX(n, 1), sizeof(*specs));
    names  = calloc(TERSE_MAX(n, 1), sizeof(*names));
    if ((counts != NULL) && (rows != NULL) && (cols != NULL) && (map != NULL) &&
        (specs != NULL) && (names != NULL)) {
        n = 0;
        for (l = l0; (l < slot->nlayers) && (slot->layers[l].offset < hi); ++l) {
            const terse_layer_state_t *ly = &slot->layers[l];
            const size_t s = TERSE_MAX(lo, ly->offset), e = TERSE_MIN(hi, ly->offset + ly->count);
            if (e <= s) {
                continue;
            }
            counts[n] = e - s;
            if ((ly->rows > 0) && (ly->cols > 0) && (((s - ly->offset) % ly->cols) == 0) &&
                ((counts[n] % ly->cols) == 0)) {
                rows[n] = counts[n] / ly->cols;
                cols[n] = ly->cols;
            }
            specs[n] = slot->specs[l];
            memcpy(names[n], slot->names[l], TERSE_NAME_MAX);
            map[n] = l;
            ++n;
        }
        st = terse__slot_build_tp(ctx, ctx->hier->inter, slot->key, n, counts, rows, cols,
                                  specs, (const char (*)[TERSE_NAME_MAX])names, TERSE_FLOAT32,
                                  sub_p);
    }
    free(counts);
    free(rows);
    free(cols);
    free(specs);
    free(names);
    if (st != TERSE_OK) {
        free(map);
        return st;
    }
    *map_p = map;
    return TERSE_OK;
}

terse_status_t
terse__hier_setup(terse_ctx_t *ctx, terse_slot_t *slot)
{
    const terse_hier_ctx_t *h = ctx->hier;
    const size_t es           = terse__esize(slot->dtype);
    terse_hier_slot_t *hs;
    size_t shard, m;
    int k, K;

    hs = calloc(1, sizeof(*hs));
    if (hs == NULL) {
        return TERSE_ERR_NOMEM;
    }
    slot->hier  = hs;
    hs->L       = h->L;
    hs->me      = h->me;
    hs->nlayers = slot->nlayers;
    shard       = TERSE_DIV_UP(slot->count * es, (size_t)h->L);
    K = (h->chunk_bytes > 0) ? (int)TERSE_MIN(TERSE_DIV_UP(shard, h->chunk_bytes),
                                              (size_t)HIER_MAX_K)
                             : 1;
    hs->K     = TERSE_MAX(K, 1);
    hs->bound = calloc((size_t)hs->K * (size_t)h->L + 1, sizeof(size_t));
    hs->sub   = calloc((size_t)hs->K, sizeof(*hs->sub));
    hs->map   = calloc((size_t)hs->K, sizeof(*hs->map));
    hs->reqs  = calloc(2 * (size_t)h->L * ((size_t)hs->K + 1), sizeof(terse_req_t));
    hs->flags = calloc(((size_t)h->L + 1) * TERSE_MAX(slot->nlayers, 1), 1);
    if ((hs->bound == NULL) || (hs->sub == NULL) || (hs->map == NULL) || (hs->reqs == NULL) ||
        (hs->flags == NULL)) {
        return TERSE_ERR_NOMEM;
    }
    hier_bounds(slot, (size_t)ctx->cfg->QUANT_BUCKET, hs->K * h->L, hs->bound);
    for (m = 0; m < (size_t)hs->K * (size_t)h->L; ++m) {
        hs->max_piece = TERSE_MAX(hs->max_piece, hs->bound[m + 1] - hs->bound[m]);
    }
    for (k = 0; k < hs->K; ++k) {
        m = (size_t)k * (size_t)h->L + (size_t)h->me;
        if (hs->bound[m + 1] > hs->bound[m]) {
            TERSE_CHECK(hier_sub_build(ctx, slot, hs->bound[m], hs->bound[m + 1], &hs->sub[k],
                                       &hs->map[k]));
            if (!hs->sub[k]->alloc_ok) {
                return TERSE_ERR_NOMEM;
            }
            slot->mem_bytes += hs->sub[k]->mem_bytes;
        }
    }
    hs->acc   = malloc(TERSE_MAX(hs->max_piece, 1) * sizeof(float));
    hs->stage = malloc(TERSE_MAX((size_t)(h->L - 1) * hs->max_piece * es, 1));
    if (slot->dtype != TERSE_FLOAT32) {
        hs->out = malloc(TERSE_MAX(hs->max_piece, 1) * sizeof(float));
    }
    if ((hs->acc == NULL) || (hs->stage == NULL) ||
        ((slot->dtype != TERSE_FLOAT32) && (hs->out == NULL))) {
        terse_error(TERSE_LOG_COMM, "failed to allocate the hierarchical allreduce's buffers");
        return TERSE_ERR_NOMEM;
    }
    slot->mem_bytes += hs->max_piece * sizeof(float) * ((hs->out != NULL) ? 2 : 1) +
                       (size_t)(h->L - 1) * hs->max_piece * es;
    return TERSE_OK;
}

/* ---------------------------------------------------------------- run */
static size_t
hier_fb_count(const terse_fb_t *fb, size_t l)
{
    const size_t end = (l + 1 < fb->nlayers) ? fb->offset[l + 1] : fb->total;

    return end - fb->offset[l];
}

/* Posts the reduce-scatter of chunk k: piece (k, j) of my input to local rank j, piece
 * (k, me) of every peer into stage. Empty pieces send nothing. */
static terse_status_t
hier_post_rs(terse_hier_slot_t *hs, terse_transport_t *tp, const terse_call_t *call, int k,
             terse_req_t *reqs, size_t *nreq_p)
{
    const size_t es = terse__esize(call->dtype);
    const size_t m0 = (size_t)k * (size_t)hs->L;
    const size_t my = hs->bound[m0 + hs->me + 1] - hs->bound[m0 + hs->me];
    int q, s;

    for (q = 0, s = 0; q < hs->L; ++q) {
        if (q == hs->me) {
            continue;
        }
        if (my > 0) {
            TERSE_CHECK(terse__tp_irecv(tp, hs->stage + (size_t)s * hs->max_piece * es, my * es,
                                        q, HIER_TAG_RS, &reqs[(*nreq_p)++]));
        }
        ++s;
    }
    for (q = 1; q < hs->L; ++q) {
        const int j     = (hs->me + q) % hs->L;
        const size_t lo = hs->bound[m0 + j], len = hs->bound[m0 + j + 1] - lo;
        if (len > 0) {
            TERSE_CHECK(terse__tp_isend(tp, (const unsigned char *)call->send + lo * es,
                                        len * es, j, HIER_TAG_RS, &reqs[(*nreq_p)++]));
        }
    }
    return TERSE_OK;
}

/* acc = sum over local ranks, in local-rank order, of piece (k, me). */
static void
hier_sum(terse_hier_slot_t *hs, const terse_call_t *call, int k)
{
    const size_t es = terse__esize(call->dtype);
    const size_t m  = (size_t)k * (size_t)hs->L + (size_t)hs->me;
    const size_t lo = hs->bound[m], n = hs->bound[m + 1] - lo;
    size_t i;
    int q, s = 0;

    for (q = 0; q < hs->L; ++q) {
        const void *x;
        if (q == hs->me) {
            x = (const unsigned char *)call->send + lo * es;
        } else {
            x = hs->stage + (size_t)(s++) * hs->max_piece * es;
        }
        if (call->dtype == TERSE_FLOAT32) {
            const float *v = x;
            if (q == 0) {
                memcpy(hs->acc, v, n * sizeof(float));
            } else {
                for (i = 0; i < n; ++i) {
                    hs->acc[i] += v[i];
                }
            }
        } else {
            for (i = 0; i < n; ++i) {
                const float v = terse__load_f32(x, call->dtype, i);
                hs->acc[i]    = (q == 0) ? v : (hs->acc[i] + v);
            }
        }
    }
}

/* The inter-node allreduce of chunk k's piece: acc -> my piece of the output. */
static terse_status_t
hier_inter(terse_ctx_t *ctx, terse_slot_t *slot, terse_call_t *call, int k)
{
    terse_hier_slot_t *hs = slot->hier;
    terse_slot_t *sub     = hs->sub[k];
    const size_t es       = terse__esize(call->dtype);
    const size_t m        = (size_t)k * (size_t)hs->L + (size_t)hs->me;
    const size_t lo = hs->bound[m], n = hs->bound[m + 1] - lo;
    unsigned char *dst = (unsigned char *)call->recv + lo * es;
    terse_call_t sc;
    size_t l;

    if (sub == NULL) {
        return TERSE_OK;
    }
    sc           = *call;
    sc.tp        = ctx->hier->inter;
    sc.send      = hs->acc;
    sc.recv      = (hs->out != NULL) ? (void *)hs->out : (void *)dst;
    sc.dtype     = TERSE_FLOAT32;
    sc.seed      = terse_rng_mix64(call->seed ^ (0x6869657200000000ull | m)); /* per piece */
    sc.sq_err    = 0.0;
    sc.nonfinite = 0;
    TERSE_CHECK(terse__algo_summable_run(sub, &sc));
    TERSE_CHECK(terse__algo_requant_run(sub, &sc));
    TERSE_CHECK(terse__algo_sparse_run(sub, &sc));
    TERSE_CHECK(terse__algo_native_run(sub, &sc));
    call->sq_err += sc.sq_err;
    if (sc.nonfinite > 0) {
        /* the algorithms wrote NaN over each flagged sub-layer: find which */
        for (l = 0; l < sub->nlayers; ++l) {
            const float *o = (const float *)sc.recv + sub->layers[l].offset;
            if ((sub->layers[l].cls != TERSE_CLASS_NATIVE) && isnan(o[0])) {
                hs->flags[hs->map[k][l]] = 1;
            }
        }
    }
    if (hs->out != NULL) {
        terse__convert_from_f32(hs->out, 1.0f, dst, call->dtype, n);
    }
    return TERSE_OK;
}

/* Posts the allgather of chunk k: my piece to every peer, theirs into the output. */
static terse_status_t
hier_post_ag(terse_hier_slot_t *hs, terse_transport_t *tp, const terse_call_t *call, int k,
             terse_req_t *reqs, size_t *nreq_p)
{
    const size_t es = terse__esize(call->dtype);
    const size_t m0 = (size_t)k * (size_t)hs->L;
    const size_t my_lo = hs->bound[m0 + hs->me], my = hs->bound[m0 + hs->me + 1] - my_lo;
    int q;

    for (q = 1; q < hs->L; ++q) {
        const int j     = (hs->me + q) % hs->L;
        const size_t lo = hs->bound[m0 + j], len = hs->bound[m0 + j + 1] - lo;
        if (len > 0) {
            TERSE_CHECK(terse__tp_irecv(tp, (unsigned char *)call->recv + lo * es, len * es, j,
                                        HIER_TAG_AG, &reqs[(*nreq_p)++]));
        }
    }
    for (q = 1; q < hs->L; ++q) {
        const int j = (hs->me + q) % hs->L;
        if (my > 0) {
            TERSE_CHECK(terse__tp_isend(tp, (unsigned char *)call->recv + my_lo * es, my * es, j,
                                        HIER_TAG_AG, &reqs[(*nreq_p)++]));
        }
    }
    return TERSE_OK;
}

/* Every piece of a flagged layer: NaN in the output, residuals and state reset (rule 3). */
static void
hier_nonfinite(terse_slot_t *slot, terse_call_t *call)
{
    terse_hier_slot_t *hs = slot->hier;
    size_t l, sl;
    int q, k;

    for (l = 0; l < slot->nlayers; ++l) {
        for (q = 1; q < hs->L; ++q) {
            hs->flags[l] |= hs->flags[(size_t)q * slot->nlayers + l];
        }
    }
    for (l = 0; l < slot->nlayers; ++l) {
        if (!hs->flags[l]) {
            continue;
        }
        terse__fill_nan(call->recv, call->dtype, slot->layers[l].offset, slot->layers[l].count);
        ++call->nonfinite;
    }
    for (k = 0; k < hs->K; ++k) {
        terse_slot_t *sub = hs->sub[k];
        for (sl = 0; (sub != NULL) && (sl < sub->nlayers); ++sl) {
            terse_layer_state_t *ly = &sub->layers[sl];
            if (!hs->flags[hs->map[k][sl]]) {
                continue;
            }
            if (sub->fb.nlayers > sl) {
                terse__fb_reset_layer(&sub->fb, sl, hier_fb_count(&sub->fb, sl));
            }
            if (sub->rq_fb.nlayers > sl) {
                terse__fb_reset_layer(&sub->rq_fb, sl, hier_fb_count(&sub->rq_fb, sl));
            }
            if ((ly->cmp != NULL) && (ly->ops->reset != NULL)) {
                ly->ops->reset(ly->cmp);
            }
        }
    }
}

terse_status_t
terse__hier_run(terse_ctx_t *ctx, terse_slot_t *slot, terse_call_t *call)
{
    terse_hier_slot_t *hs  = slot->hier;
    terse_transport_t *tpi = ctx->hier->intra, *tpo = ctx->hier->inter;
    const uint64_t bi = tpi->bytes_sent, bo = tpo->bytes_sent;
    const size_t nl = TERSE_MAX(slot->nlayers, 1);
    const size_t per = 2 * (size_t)hs->L; /* requests of one stage of one chunk, at most */
    terse_req_t *rs = hs->reqs, *ag = hs->reqs + per;
    size_t nrs = 0, nag = 0;
    terse_status_t status;
    int k;

    memset(hs->flags, 0, nl);
    TERSE_CHECK_GOTO(hier_post_rs(hs, tpi, call, 0, rs, &nrs), status, err_wait);
    for (k = 0; k < hs->K; ++k) {
        TERSE_CHECK_GOTO(terse__tp_waitall(tpi, rs, nrs), status, err_wait);
        nrs = 0;
        hier_sum(hs, call, k);
        if (k + 1 < hs->K) {
            TERSE_CHECK_GOTO(hier_post_rs(hs, tpi, call, k + 1, rs, &nrs), status, err_wait);
        }
        TERSE_CHECK_GOTO(hier_inter(ctx, slot, call, k), status, err_wait);
        TERSE_CHECK_GOTO(hier_post_ag(hs, tpi, call, k, ag, &nag), status, err_wait);
    }
    TERSE_CHECK_GOTO(terse__tp_waitall(tpi, ag, nag), status, err_wait);
    nag = 0;
    /* non-finite layers: every local rank's flags (the same on every node) */
    TERSE_CHECK_GOTO(terse__tp_allgather(tpi, hs->flags, hs->flags + nl, nl), status, err_wait);
    memmove(hs->flags, hs->flags + nl, (size_t)hs->L * nl);
    hier_nonfinite(slot, call);
    ctx->stats.bytes_intra += tpi->bytes_sent - bi;
    ctx->stats.bytes_inter += tpo->bytes_sent - bo;
    ctx->tp->bytes_sent += (tpi->bytes_sent - bi) + (tpo->bytes_sent - bo);
    return TERSE_OK;

err_wait:
    terse__tp_waitall(tpi, rs, nrs);
    terse__tp_waitall(tpi, ag, nag);
    return status;
}
