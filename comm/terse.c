/*
 * The C API (include/terse.h): validate, then dispatch to the wire algorithms.
 *
 * A context keeps one "slot" per layout it has seen (comm/terse_internal.h): the registered
 * layers, each unregistered count, each position of the MPI shim's call cycle. A slot is built
 * from the plan once (compressor instances, residuals, message buffers: DESIGN.md section 8,
 * rule 9) and confirmed by every rank before its first use (rule 1): a tiny allreduce of MAX
 * over (hash, ~hash, !ok), where the hash covers the plan, the layout, the configuration and
 * the version, and ok says that everything was allocated. On disagreement every rank passes
 * that slot through uncompressed and terse_allreduce returns TERSE_ERR_MISMATCH after
 * delivering the exact result.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_internal.h"

/* ---------------------------------------------------------------- configuration hash */
uint64_t
terse__config_hash(const terse_config_t *cfg)
{
    uint64_t h = 0x7465727365ull; /* "terse" */
    int code   = TERSE_VERSION_CODE;

    h = terse__hash64(&code, sizeof(code), h);
    if (cfg == NULL) {
        return h;
    }
#define TERSE_ENV(_name, _type, _def, _acc, _doc)                                              \
    if (strncmp(#_name, "LOG_", 4) != 0) {                                                     \
        h = terse__hash64(#_name, sizeof(#_name), h);                                          \
        h = terse__hash64(&cfg->_name, sizeof(cfg->_name), h);                                 \
    }
#include "env_table.h"
#undef TERSE_ENV
    return h;
}

/* ---------------------------------------------------------------- slots */
static void
slot_destroy(terse_slot_t *slot)
{
    size_t l;

    if (slot == NULL) {
        return;
    }
    terse__algo_native_cleanup(slot);
    terse__algo_summable_cleanup(slot);
    terse__algo_requant_cleanup(slot);
    terse__algo_sparse_cleanup(slot);
    for (l = 0; l < slot->nlayers; ++l) {
        if (slot->layers[l].cmp != NULL) {
            slot->layers[l].ops->destroy(slot->layers[l].cmp);
        }
    }
    terse__fb_destroy(&slot->fb);
    free(slot->layers);
    free(slot);
}

static terse_class_t
slot_class_of(const terse_cmp_ops_t *ops)
{
    if (ops->caps & TERSE_CMP_CAP_SUMMABLE) {
        return TERSE_CLASS_SUMMABLE;
    }
    if (ops->caps & TERSE_CMP_CAP_REQUANT) {
        return TERSE_CLASS_REQUANT;
    }
    if (ops->caps & TERSE_CMP_CAP_SPARSE) {
        return TERSE_CLASS_SPARSE;
    }
    return TERSE_CLASS_NATIVE;
}

/* Largest divisor of n not above sqrt(n): the near-square reshape of a flat layer. */
static size_t
slot_square_rows(size_t n)
{
    size_t d, best = 1;

    for (d = 1; d * d <= n; ++d) {
        if ((n % d) == 0) {
            best = d;
        }
    }
    return best;
}

/* Creates layer ly's compressor instance for (ops, param); decides its class. Returns
 * TERSE_OK (possibly after falling back to native, logged once), or TERSE_ERR_NOMEM. */
static terse_status_t
slot_layer_create(terse_ctx_t *ctx, terse_slot_t *slot, size_t l, const terse_cmp_ops_t *ops,
                  double param, int depth)
{
    terse_layer_state_t *ly = &slot->layers[l];
    terse_cmp_params_t params;
    terse_status_t status;
    size_t pay;
    char spec[TERSE_NAME_MAX];

    ly->ops   = ops;
    ly->param = param;
    ly->cls   = slot_class_of(ops);
    ly->cmp   = NULL;
    if (ly->cls == TERSE_CLASS_NATIVE) {
        return TERSE_OK;
    }
    terse__cmp_spec_format(ops, param, spec, sizeof(spec));
    if ((ly->cls == TERSE_CLASS_REQUANT) && !(ops->caps & TERSE_CMP_CAP_RANGE)) {
        terse_warn_once(TERSE_LOG_COMM, "%s cannot compress chunks of a layer: sent natively",
                        spec);
        goto fallback;
    }
    memset(&params, 0, sizeof(params));
    params.size   = sizeof(params);
    params.param  = param;
    params.layer  = (uint32_t)l;
    params.count  = ly->count;
    params.rows   = ly->rows;
    params.cols   = ly->cols;
    params.dtype  = slot->dtype;
    params.mem    = TERSE_MEM_HOST;
    params.bucket = (uint32_t)ctx->cfg->QUANT_BUCKET;
    params.nranks = ctx->nranks;
    params.seed   = ctx->seed;
    if ((ops->caps & TERSE_CMP_CAP_MATRIX) && (params.rows == 0)) {
        params.rows = slot_square_rows(ly->count);
        params.cols = ly->count / params.rows;
        if (params.rows < 8) {
            terse_warn_once(TERSE_LOG_COMM, "%s needs a matrix shape and a flat layer of %zu "
                            "elements has no near-square one: sent natively", spec, ly->count);
            goto fallback;
        }
    }
    status = ops->create(&params, &ly->cmp);
    if (status == TERSE_ERR_NOMEM) {
        ly->cmp = NULL;
        return status;
    }
    if (status != TERSE_OK) {
        ly->cmp = NULL;
        terse_warn_once(TERSE_LOG_COMM, "%s cannot serve a layer of %zu elements (%s): sent "
                        "natively", spec, ly->count, terse_status_str(status));
        goto fallback;
    }
    if (ly->cls == TERSE_CLASS_REQUANT) {
        ly->chunk = TERSE_ALIGN_UP(TERSE_DIV_UP(ly->count, (size_t)ctx->nranks),
                                   (size_t)params.bucket);
    }
    if (ly->cls == TERSE_CLASS_SPARSE) {
        /* the allgather must send less than a plain allreduce: |payload| p < 2 S (for top-k:
         * density below 1/p) */
        if ((ops->payload_size(ly->cmp, ly->count, 0, &pay) != TERSE_OK) ||
            (pay * (size_t)ctx->nranks >= 2 * ly->count * sizeof(float))) {
            const terse_cmp_ops_t *q = terse__cmp_find("quant");
            ops->destroy(ly->cmp);
            ly->cmp = NULL;
            if ((q != NULL) && (depth == 0) && (slot_class_of(q) == TERSE_CLASS_REQUANT)) {
                terse_warn_once(TERSE_LOG_COMM, "%s on %d ranks sends more than a plain "
                                "allreduce (density must stay below 1/p): using quant:8",
                                spec, ctx->nranks);
                return slot_layer_create(ctx, slot, l, q, 8.0, depth + 1);
            }
            terse_warn_once(TERSE_LOG_COMM, "%s on %d ranks sends more than a plain allreduce: "
                            "sent natively", spec, ctx->nranks);
            goto fallback;
        }
    }
    return TERSE_OK;

fallback:
    ly->ops = terse__cmp_find("none");
    ly->param = 0.0;
    ly->cls   = TERSE_CLASS_NATIVE;
    return TERSE_OK;
}

/* Builds a slot. Allocation failures do not fail the build: they leave alloc_ok 0, which the
 * agreement turns into a pass-through on every rank. */
static terse_status_t
slot_build(terse_ctx_t *ctx, uint64_t key, size_t nlayers, const size_t *counts,
           const size_t *rows, const size_t *cols, const terse_cmp_spec_t *specs,
           terse_dtype_t dtype, terse_slot_t **slot_p)
{
    terse_slot_t *slot;
    size_t l, *fb_counts = NULL;
    terse_status_t st;

    slot = calloc(1, sizeof(*slot));
    if (slot == NULL) {
        terse_error(TERSE_LOG_COMM, "failed to allocate a slot");
        return TERSE_ERR_NOMEM;
    }
    slot->key      = key;
    slot->dtype    = dtype;
    slot->nlayers  = nlayers;
    slot->alloc_ok = 1;
    slot->layers   = calloc(TERSE_MAX(nlayers, 1), sizeof(*slot->layers));
    fb_counts      = calloc(TERSE_MAX(nlayers, 1), sizeof(*fb_counts));
    if ((slot->layers == NULL) || (fb_counts == NULL)) {
        free(fb_counts);
        free(slot->layers);
        free(slot);
        terse_error(TERSE_LOG_COMM, "failed to allocate a slot of %zu layers", nlayers);
        return TERSE_ERR_NOMEM;
    }
    for (l = 0; l < nlayers; ++l) {
        terse_layer_state_t *ly = &slot->layers[l];
        ly->offset = slot->count;
        ly->count  = counts[l];
        ly->rows   = (rows != NULL) ? rows[l] : 0;
        ly->cols   = (cols != NULL) ? cols[l] : 0;
        slot->count += counts[l];
        if (slot_layer_create(ctx, slot, l, specs[l].ops, specs[l].param, 0) != TERSE_OK) {
            terse_warn(TERSE_LOG_COMM, "out of memory creating the compressor of layer %zu",
                       l);
            slot->alloc_ok = 0;
            ly->ops        = terse__cmp_find("none");
            ly->cls        = TERSE_CLASS_NATIVE;
        }
        slot->nclass[ly->cls]++;
        fb_counts[l] = (ly->cls == TERSE_CLASS_NATIVE) ? 0 : ly->count;
    }
    if (terse__fb_create(fb_counts, nlayers, TERSE_MEM_HOST, &slot->fb) != TERSE_OK) {
        slot->alloc_ok = 0;
    } else {
        slot->mem_bytes += terse__fb_bytes(&slot->fb);
    }
    free(fb_counts);
    if (slot->alloc_ok) {
        st = terse__algo_native_setup(slot, ctx->tp);
        if (st == TERSE_OK) {
            st = terse__algo_summable_setup(slot, ctx->tp);
        }
        if (st == TERSE_OK) {
            st = terse__algo_requant_setup(slot, ctx->tp);
        }
        if (st == TERSE_OK) {
            st = terse__algo_sparse_setup(slot, ctx->tp);
        }
        if (st != TERSE_OK) {
            terse_warn(TERSE_LOG_COMM, "failed to set up the wire algorithms of a layout of "
                       "%zu elements (%s)", slot->count, terse_status_str(st));
            slot->alloc_ok = 0;
        }
    }
    if (!slot->alloc_ok) {
        /* keep nothing big around: this slot only passes through */
        terse__algo_native_cleanup(slot);
        terse__algo_summable_cleanup(slot);
        terse__algo_requant_cleanup(slot);
        terse__algo_sparse_cleanup(slot);
        terse__fb_destroy(&slot->fb);
        slot->mem_bytes = 0;
    }
    *slot_p = slot;
    return TERSE_OK;
}

static uint64_t
slot_hash(const terse_ctx_t *ctx, const terse_slot_t *slot)
{
    uint64_t h = terse__hash64(&ctx->cfg_hash, sizeof(ctx->cfg_hash), 0x736c6f74ull);
    size_t l;

    h = terse__hash64(&ctx->nranks, sizeof(ctx->nranks), h);
    h = terse__hash64(&slot->key, sizeof(slot->key), h);
    h = terse__hash64(&slot->dtype, sizeof(slot->dtype), h);
    h = terse__hash64(&slot->nlayers, sizeof(slot->nlayers), h);
    for (l = 0; l < slot->nlayers; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        h = terse__hash64(&ly->count, sizeof(ly->count), h);
        h = terse__hash64(&ly->rows, sizeof(ly->rows), h);
        h = terse__hash64(&ly->cols, sizeof(ly->cols), h);
        h = terse__hash64(ly->ops->name, strlen(ly->ops->name), h);
        h = terse__hash64(&ly->param, sizeof(ly->param), h);
        h = terse__hash64(&ly->cls, sizeof(ly->cls), h);
    }
    return h;
}

/* Rule 1: every rank confirms the slot before its first use. */
static terse_status_t
slot_agree(terse_ctx_t *ctx, terse_slot_t *slot)
{
    uint64_t v[3], h = slot_hash(ctx, slot);

    v[0] = h;
    v[1] = ~h;
    v[2] = slot->alloc_ok ? 0 : 1;
    TERSE_CHECK(terse__tp_allreduce(ctx->tp, v, v, 3, TERSE_TP_MAX_U64));
    if ((v[0] == h) && (v[1] == ~h) && (v[2] == 0)) {
        slot->agreed = 1;
        terse_debug(TERSE_LOG_COMM, "layout of %zu elements in %zu layers agreed",
                    slot->count, slot->nlayers);
        return TERSE_OK;
    }
    slot->agreed = -1;
    if (v[2] != 0) {
        terse_warn(TERSE_LOG_COMM, "%s could not allocate what compressing %zu elements needs: "
                   "every rank passes this layout through uncompressed",
                   slot->alloc_ok ? "another rank" : "this rank", slot->count);
    } else {
        terse_warn(TERSE_LOG_COMM, "ranks disagree on the plan, layout or TERSE_* configuration "
                   "of a layout of %zu elements: every rank passes it through uncompressed",
                   slot->count);
    }
    return TERSE_OK;
}

static terse_slot_t *
slot_find(terse_ctx_t *ctx, uint64_t key)
{
    terse_slot_t *s;

    for (s = ctx->slots; s != NULL; s = s->next) {
        if (s->key == key) {
            return s;
        }
    }
    return NULL;
}

static void
slot_remove(terse_ctx_t *ctx, terse_slot_t *slot)
{
    terse_slot_t **pp;

    for (pp = &ctx->slots; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == slot) {
            *pp = slot->next;
            slot_destroy(slot);
            return;
        }
    }
}

/* ---------------------------------------------------------------- context */
static terse_status_t
ctx_pick_transport(const terse_ctx_params_t *params, const terse_transport_ops_t **ops_p)
{
    static const terse_transport_ops_t *const all[] = {
#if TERSE_HAVE_MPI
        &terse_transport_mpi_ops,
#endif
        &terse_transport_loop_ops,
        NULL,
    };
    const terse_transport_ops_t *best = NULL;
    int i, usable;

    for (i = 0; all[i] != NULL; ++i) {
        if ((params->transport != TERSE_TRANSPORT_AUTO) && (all[i]->kind != params->transport)) {
            continue;
        }
        if ((params->transport == TERSE_TRANSPORT_AUTO) && (all[i]->kind == TERSE_TRANSPORT_LOOP)) {
            continue; /* auto never guesses that a pointer is a loop endpoint */
        }
        if ((all[i]->query(params->comm, &usable) == TERSE_OK) && usable &&
            ((best == NULL) || (all[i]->priority > best->priority))) {
            best = all[i];
        }
    }
    if (best == NULL) {
        terse_error(TERSE_LOG_COMM, "no transport in this build can use the given communicator "
                    "(transport kind %d)", (int)params->transport);
        return (params->transport == TERSE_TRANSPORT_NCCL) ? TERSE_ERR_UNSUPPORTED
                                                           : TERSE_ERR_INVALID;
    }
    *ops_p = best;
    return TERSE_OK;
}

terse_status_t
terse_ctx_create(const terse_ctx_params_t *params, terse_ctx_t **ctx_p)
{
    const terse_transport_ops_t *tops;
    terse_ctx_t *ctx;
    terse_status_t status;
    char why[256];

    if ((params == NULL) || (ctx_p == NULL) || (params->size < sizeof(size_t)) ||
        (params->comm == NULL) || ((unsigned)params->transport >= TERSE_TRANSPORT_LAST)) {
        return TERSE_ERR_INVALID;
    }
    if (terse_init() != TERSE_OK) {
        return TERSE_ERR_INVALID;
    }
    TERSE_CHECK(ctx_pick_transport(params, &tops));
    ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        terse_error(TERSE_LOG_COMM, "failed to allocate a context");
        return TERSE_ERR_NOMEM;
    }
    ctx->cfg      = terse__config();
    ctx->cfg_hash = terse__config_hash(ctx->cfg);
    ctx->seed     = (params->seed != 0) ? params->seed : (uint64_t)ctx->cfg->SEED;
    snprintf(ctx->name, sizeof(ctx->name), "%s", (params->name != NULL) ? params->name : "terse");
    if (terse__cmp_spec_parse(ctx->cfg->COMPRESSOR, &ctx->uniform, why, sizeof(why)) !=
        TERSE_OK) {
        terse_error(TERSE_LOG_COMM, "TERSE_COMPRESSOR: %s", why);
        free(ctx);
        return TERSE_ERR_INVALID;
    }
    if (ctx->uniform.is_auto) {
        const terse_cmp_ops_t *q = terse__cmp_find("quant");
        ctx->uniform.is_auto     = 0;
        ctx->uniform.ops         = (q != NULL) ? q : terse__cmp_find("none");
        ctx->uniform.param       = (q != NULL) ? 4.0 : 0.0;
        terse_info(TERSE_LOG_COMM, "compressor auto: the scheduler is not wired yet, using %s",
                   (q != NULL) ? "quant:4" : "none");
    }
    TERSE_CHECK_GOTO(tops->init(params->comm, &ctx->tp), status, err_free_ctx);
    ctx->rank   = ctx->tp->rank;
    ctx->nranks = ctx->tp->nranks;
    if (tops->kind != TERSE_TRANSPORT_LOOP) {
        terse__log_set_rank(ctx->rank);
    }
    ctx->stats.size = sizeof(ctx->stats);
    *ctx_p          = ctx;
    return TERSE_OK;

err_free_ctx:
    free(ctx);
    return status;
}

static void
ctx_free_layers(terse_ctx_t *ctx)
{
    free(ctx->reg_name);
    free(ctx->reg_count);
    free(ctx->reg_rows);
    free(ctx->reg_cols);
    free(ctx->plan);
}

void
terse_ctx_destroy(terse_ctx_t *ctx)
{
    terse_slot_t *s, *next;

    if (ctx == NULL) {
        return;
    }
    for (s = ctx->slots; s != NULL; s = next) {
        next = s->next;
        slot_destroy(s);
    }
    if (ctx->tp != NULL) {
        ctx->tp->ops->finalize(ctx->tp);
    }
    ctx_free_layers(ctx);
    free(ctx->scratch);
    free(ctx);
}

terse_status_t
terse_ctx_rank(const terse_ctx_t *ctx, int *rank_p, int *nranks_p)
{
    if (ctx == NULL) {
        return TERSE_ERR_INVALID;
    }
    if (rank_p != NULL) {
        *rank_p = ctx->rank;
    }
    if (nranks_p != NULL) {
        *nranks_p = ctx->nranks;
    }
    return TERSE_OK;
}

terse_status_t
terse_layer_register(terse_ctx_t *ctx, const char *name, size_t count, size_t rows,
                     size_t cols, int *layer_p)
{
    size_t n;

    if ((ctx == NULL) || (count == 0) || ((rows * cols != count) && !((rows == 0) && (cols == 0)))) {
        return TERSE_ERR_INVALID;
    }
    if (ctx->frozen) {
        terse_error(TERSE_LOG_COMM, "layers cannot be registered after the first allreduce");
        return TERSE_ERR_USAGE;
    }
    n = ctx->nreg;
    if (n == ctx->reg_cap) {
        size_t cap = TERSE_MAX(2 * ctx->reg_cap, 16);
        void *a    = realloc(ctx->reg_name, cap * sizeof(*ctx->reg_name));
        if (a != NULL) {
            ctx->reg_name = a;
        }
        a = (a != NULL) ? realloc(ctx->reg_count, cap * sizeof(size_t)) : NULL;
        if (a != NULL) {
            ctx->reg_count = a;
        }
        a = (a != NULL) ? realloc(ctx->reg_rows, cap * sizeof(size_t)) : NULL;
        if (a != NULL) {
            ctx->reg_rows = a;
        }
        a = (a != NULL) ? realloc(ctx->reg_cols, cap * sizeof(size_t)) : NULL;
        if (a != NULL) {
            ctx->reg_cols = a;
        }
        a = (a != NULL) ? realloc(ctx->plan, cap * sizeof(*ctx->plan)) : NULL;
        if (a == NULL) {
            terse_error(TERSE_LOG_COMM, "failed to grow the layer table to %zu layers", cap);
            return TERSE_ERR_NOMEM;
        }
        ctx->plan    = a;
        ctx->reg_cap = cap;
    }
    if (name != NULL) {
        snprintf(ctx->reg_name[n], TERSE_NAME_MAX, "%s", name);
    } else {
        snprintf(ctx->reg_name[n], TERSE_NAME_MAX, "layer%zu", n);
    }
    ctx->reg_count[n] = count;
    ctx->reg_rows[n]  = rows;
    ctx->reg_cols[n]  = cols;
    ctx->plan[n]      = ctx->uniform;
    ctx->reg_total += count;
    ctx->nreg = n + 1;
    if (layer_p != NULL) {
        *layer_p = (int)n;
    }
    return TERSE_OK;
}

terse_status_t
terse__ctx_set_uniform(terse_ctx_t *ctx, const char *spec)
{
    terse_cmp_spec_t sp;
    terse_slot_t *s, *next;
    char why[256];

    if (terse__cmp_spec_parse(spec, &sp, why, sizeof(why)) != TERSE_OK) {
        terse_error(TERSE_LOG_COMM, "compressor %s: %s", spec, why);
        return TERSE_ERR_INVALID;
    }
    if (sp.is_auto) {
        const terse_cmp_ops_t *q = terse__cmp_find("quant");
        sp.ops   = (q != NULL) ? q : terse__cmp_find("none");
        sp.param = (q != NULL) ? 4.0 : 0.0;
        sp.is_auto = 0;
    }
    ctx->uniform = sp;
    for (s = ctx->slots; s != NULL; s = next) {
        next = s->next;
        if (s->key != TERSE_KEY_REG) {
            slot_remove(ctx, s);
        }
    }
    return TERSE_OK;
}

int
terse__ctx_plan_is_native(const terse_ctx_t *ctx)
{
    return slot_class_of(ctx->uniform.ops) == TERSE_CLASS_NATIVE;
}

/* ---------------------------------------------------------------- allreduce */
static terse_tp_red_t
ctx_red_of(terse_dtype_t dtype)
{
    switch (dtype) {
    case TERSE_FLOAT16:
        return TERSE_TP_SUM_F16;
    case TERSE_BFLOAT16:
        return TERSE_TP_SUM_BF16;
    case TERSE_FLOAT64:
        return TERSE_TP_SUM_F64;
    default:
        return TERSE_TP_SUM_F32;
    }
}

/* The exact, uncompressed result (pass-through): the transport's own allreduce. */
static terse_status_t
ctx_passthrough(terse_ctx_t *ctx, const void *sendbuf, void *recvbuf, size_t count,
                terse_dtype_t dtype, float scale)
{
    size_t i;

    if (sendbuf != recvbuf) {
        memcpy(recvbuf, sendbuf, count * terse__esize(dtype));
    }
    TERSE_CHECK(terse__tp_allreduce(ctx->tp, recvbuf, recvbuf, count, ctx_red_of(dtype)));
    if (scale != 1.0f) {
        for (i = 0; i < count; ++i) {
            if (dtype == TERSE_FLOAT64) {
                ((double *)recvbuf)[i] *= (double)scale;
            } else {
                terse__store_f32(recvbuf, dtype, i, terse__load_f32(recvbuf, dtype, i) * scale);
            }
        }
    }
    ++ctx->stats.passthrough;
    return TERSE_OK;
}

static double
ctx_sq_norm(const void *buf, terse_dtype_t dtype, size_t count)
{
    double s = 0.0;
    size_t i;

    if (dtype == TERSE_FLOAT32) {
        const float *x = buf;
        for (i = 0; i < count; ++i) {
            s += (double)x[i] * (double)x[i];
        }
        return s;
    }
    for (i = 0; i < count; ++i) {
        double v = terse__load_f32(buf, dtype, i);
        s += v * v;
    }
    return s;
}

static terse_status_t
ctx_get_slot(terse_ctx_t *ctx, uint64_t key, size_t count, terse_dtype_t dtype,
             terse_slot_t **slot_p)
{
    terse_slot_t *slot = slot_find(ctx, key);
    terse_cmp_spec_t one = ctx->uniform;

    if ((slot != NULL) && ((slot->count != count) || (slot->dtype != dtype))) {
        terse_info(TERSE_LOG_COMM, "layout of key %llx changed: rebuilding (residuals reset)",
                   (unsigned long long)key);
        slot_remove(ctx, slot);
        slot = NULL;
    }
    if (slot == NULL) {
        if (key == TERSE_KEY_REG) {
            TERSE_CHECK(slot_build(ctx, key, ctx->nreg, ctx->reg_count, ctx->reg_rows,
                                   ctx->reg_cols, ctx->plan, dtype, &slot));
        } else {
            TERSE_CHECK(slot_build(ctx, key, 1, &count, NULL, NULL, &one, dtype, &slot));
        }
        slot->next = ctx->slots;
        ctx->slots = slot;
    }
    *slot_p = slot;
    return TERSE_OK;
}

static terse_status_t
ctx_allreduce_f64(terse_ctx_t *ctx, uint64_t key, const void *sendbuf, void *recvbuf,
                  size_t count, terse_op_t op)
{
    terse_status_t status;
    float *tmp;
    size_t i;

    /* doubles are compressed through fp32 (TERSE_COMPRESS_DOUBLE=1) */
    if (ctx->scratch_bytes < count * sizeof(float)) {
        void *p = realloc(ctx->scratch, count * sizeof(float));
        if (p == NULL) {
            terse_warn_once(TERSE_LOG_COMM, "no memory to convert doubles: passing through");
            return ctx_passthrough(ctx, sendbuf, recvbuf, count, TERSE_FLOAT64,
                                   (op == TERSE_OP_AVG) ? 1.0f / (float)ctx->nranks : 1.0f);
        }
        ctx->scratch       = p;
        ctx->scratch_bytes = count * sizeof(float);
    }
    tmp = ctx->scratch;
    for (i = 0; i < count; ++i) {
        tmp[i] = (float)((const double *)sendbuf)[i];
    }
    status = terse__allreduce_keyed(ctx, key, tmp, tmp, count, TERSE_FLOAT32, op);
    for (i = 0; i < count; ++i) {
        ((double *)recvbuf)[i] = tmp[i];
    }
    return status;
}

terse_status_t
terse__allreduce_keyed(terse_ctx_t *ctx, uint64_t key, const void *sendbuf, void *recvbuf,
                       size_t count, terse_dtype_t dtype, terse_op_t op)
{
    const float scale = (op == TERSE_OP_AVG) ? 1.0f / (float)ctx->nranks : 1.0f;
    terse_slot_t *slot;
    terse_call_t call;
    size_t l;

    if (count == 0) {
        return TERSE_OK;
    }
    ctx->stats.bytes_plain += (2 * (uint64_t)(ctx->nranks - 1) * count * terse__esize(dtype)) /
                              (uint64_t)ctx->nranks;
    if (dtype == TERSE_FLOAT64) {
        if (!ctx->cfg->COMPRESS_DOUBLE) {
            return ctx_passthrough(ctx, sendbuf, recvbuf, count, dtype, scale);
        }
        ctx->stats.bytes_plain -= (2 * (uint64_t)(ctx->nranks - 1) * count * 4) /
                                  (uint64_t)ctx->nranks; /* counted again inside */
        return ctx_allreduce_f64(ctx, key, sendbuf, recvbuf, count, op);
    }
    TERSE_CHECK(ctx_get_slot(ctx, key, count, dtype, &slot));
    if (slot->agreed == 0) {
        TERSE_CHECK(slot_agree(ctx, slot));
    }
    if (slot->agreed < 0) {
        TERSE_CHECK(ctx_passthrough(ctx, sendbuf, recvbuf, count, dtype, scale));
        return TERSE_ERR_MISMATCH;
    }
    if ((size_t)slot->nclass[TERSE_CLASS_NATIVE] == slot->nlayers) {
        /* nothing to compress: a plain (deterministic) sum */
        TERSE_CHECK(terse__algo_native_run(slot, &(terse_call_t){ctx->tp, sendbuf, recvbuf, dtype,
                                                                 scale, ctx->seed, slot->step,
                                                                 0, 0.0, 0}));
        ++ctx->stats.passthrough;
        return TERSE_OK;
    }

    memset(&call, 0, sizeof(call));
    call.tp             = ctx->tp;
    call.send           = sendbuf;
    call.recv           = recvbuf;
    call.dtype          = dtype;
    call.scale          = scale;
    call.seed           = ctx->seed;
    call.step           = slot->step;
    call.error_feedback = ctx->cfg->ERROR_FEEDBACK;
    {
        /* ||x||^2 of the compressed layers' input, for last_rel_err (before any output is
         * written: recvbuf may be sendbuf) */
        double norm = 0.0;
        for (l = 0; l < slot->nlayers; ++l) {
            if (slot->layers[l].cls != TERSE_CLASS_NATIVE) {
                norm += ctx_sq_norm((const unsigned char *)sendbuf +
                                        slot->layers[l].offset * terse__esize(dtype),
                                    dtype, slot->layers[l].count);
            }
        }
        /* classes in a fixed order: every rank sends the same sequence of messages */
        TERSE_CHECK(terse__algo_summable_run(slot, &call));
        TERSE_CHECK(terse__algo_requant_run(slot, &call));
        TERSE_CHECK(terse__algo_sparse_run(slot, &call));
        TERSE_CHECK(terse__algo_native_run(slot, &call));
        ctx->stats.last_rel_err = (norm > 0.0) ? sqrt(call.sq_err / norm) : 0.0;
    }
    ++slot->step;
    ++ctx->stats.steps;
    if (call.nonfinite > 0) {
        ++ctx->stats.nonfinite_steps;
    }
    return TERSE_OK;
}

terse_status_t
terse_allreduce(terse_ctx_t *ctx, const void *sendbuf, void *recvbuf, size_t count,
                terse_dtype_t dtype, terse_op_t op, terse_mem_t mem, terse_stream_t stream)
{
    uint64_t key;

    (void)stream;
    if ((ctx == NULL) || (((sendbuf == NULL) || (recvbuf == NULL)) && (count > 0)) ||
        ((unsigned)dtype >= TERSE_DTYPE_LAST) || ((unsigned)op >= TERSE_OP_LAST) ||
        ((unsigned)mem >= TERSE_MEM_LAST)) {
        return TERSE_ERR_INVALID;
    }
    if (mem != TERSE_MEM_HOST) {
        terse_error(TERSE_LOG_COMM, "device buffers need the NCCL path, not built yet");
        return TERSE_ERR_UNSUPPORTED;
    }
    if ((ctx->nreg > 0) && (count == ctx->reg_total) && (dtype != TERSE_FLOAT64)) {
        key = TERSE_KEY_REG;
    } else {
        key = (uint64_t)count;
    }
    ctx->frozen = 1;
    return terse__allreduce_keyed(ctx, key, sendbuf, recvbuf, count, dtype, op);
}

/* ---------------------------------------------------------------- plans */
terse_status_t
terse_plan_get(const terse_ctx_t *ctx, terse_plan_entry_t *entries, size_t max, size_t *n_p)
{
    const terse_slot_t *slot;
    size_t l;

    if ((ctx == NULL) || (n_p == NULL) || ((entries == NULL) && (max > 0))) {
        return TERSE_ERR_INVALID;
    }
    slot = slot_find((terse_ctx_t *)ctx, TERSE_KEY_REG);
    for (l = 0; (l < ctx->nreg) && (l < max); ++l) {
        /* what the layer really runs with (after fall-backs) once its slot exists */
        const terse_cmp_ops_t *ops = ctx->plan[l].ops;
        double param               = ctx->plan[l].param;
        if ((slot != NULL) && (l < slot->nlayers)) {
            ops   = slot->layers[l].ops;
            param = slot->layers[l].param;
        }
        entries[l].layer = (int)l;
        snprintf(entries[l].compressor, TERSE_NAME_MAX, "%s", ops->name);
        entries[l].param = param;
    }
    *n_p = ctx->nreg;
    return TERSE_OK;
}

terse_status_t
terse_plan_set(terse_ctx_t *ctx, const terse_plan_entry_t *entries, size_t n)
{
    terse_cmp_spec_t *plan;
    terse_slot_t *slot;
    char text[TERSE_NAME_MAX * 2];
    size_t i;

    if ((ctx == NULL) || (entries == NULL) || (n != ctx->nreg) || (n == 0)) {
        return TERSE_ERR_INVALID;
    }
    plan = calloc(n, sizeof(*plan));
    if (plan == NULL) {
        return TERSE_ERR_NOMEM;
    }
    for (i = 0; i < n; ++i) {
        const terse_cmp_ops_t *ops = terse__cmp_find(entries[i].compressor);
        int layer                  = entries[i].layer;
        if ((ops == NULL) || (layer < 0) || ((size_t)layer >= n)) {
            terse_error(TERSE_LOG_COMM, "plan entry %zu: unknown compressor or layer", i);
            free(plan);
            return TERSE_ERR_INVALID;
        }
        terse__cmp_spec_format(ops, entries[i].param, text, sizeof(text));
        if (terse__cmp_spec_parse(text, &plan[layer], NULL, 0) != TERSE_OK) {
            terse_error(TERSE_LOG_COMM, "plan entry %zu: bad parameter %g for %s", i,
                        entries[i].param, ops->name);
            free(plan);
            return TERSE_ERR_INVALID;
        }
    }
    memcpy(ctx->plan, plan, n * sizeof(*plan));
    free(plan);
    /* residuals reset; the next allreduce rebuilds the slot and agrees on it again */
    slot = slot_find(ctx, TERSE_KEY_REG);
    if (slot != NULL) {
        slot_remove(ctx, slot);
    }
    return TERSE_OK;
}

/* ---------------------------------------------------------------- statistics */
terse_status_t
terse_stats_get(const terse_ctx_t *ctx, terse_stats_t *stats)
{
    const terse_slot_t *s;
    terse_stats_t st;
    size_t size;

    if ((ctx == NULL) || (stats == NULL) || (stats->size == 0)) {
        return TERSE_ERR_INVALID;
    }
    st            = ctx->stats;
    st.bytes_sent = ctx->tp->bytes_sent;
    st.mem_bytes  = ctx->scratch_bytes;
    for (s = ctx->slots; s != NULL; s = s->next) {
        st.mem_bytes += s->mem_bytes;
    }
    size = TERSE_MIN(stats->size, sizeof(st));
    st.size = size;
    memcpy(stats, &st, size);
    return TERSE_OK;
}

/* ---------------------------------------------------------------- state files */
#define TERSE_STATE_MAGIC "TERSEST1"

typedef struct state_head {
    char     magic[8];
    uint32_t version;
    uint32_t nranks;
    uint32_t rank;
    uint32_t nlayers;
    uint64_t seed;
    uint64_t layout;      /* hash of the registered counts and shapes */
    uint32_t step;
    uint32_t pad;
    uint64_t fb_total;
    uint64_t rq_total;
} state_head_t;

static uint64_t
state_layout_hash(const terse_ctx_t *ctx)
{
    uint64_t h = 0x6c61796f7574ull;
    size_t l;

    for (l = 0; l < ctx->nreg; ++l) {
        h = terse__hash64(&ctx->reg_count[l], sizeof(size_t), h);
        h = terse__hash64(&ctx->reg_rows[l], sizeof(size_t), h);
        h = terse__hash64(&ctx->reg_cols[l], sizeof(size_t), h);
    }
    return h;
}

terse_status_t
terse_state_save(const terse_ctx_t *ctx, const char *path)
{
    const terse_slot_t *slot;
    state_head_t head;
    char file[1024];
    terse_plan_entry_t e;
    FILE *f;
    size_t l;
    int ok;

    if ((ctx == NULL) || (path == NULL)) {
        return TERSE_ERR_INVALID;
    }
    TERSE_CHECK(terse__path_expand(path, ctx->rank, file, sizeof(file)));
    slot = slot_find((terse_ctx_t *)ctx, TERSE_KEY_REG);
    memset(&head, 0, sizeof(head));
    memcpy(head.magic, TERSE_STATE_MAGIC, 8);
    head.version  = TERSE_VERSION_CODE;
    head.nranks   = (uint32_t)ctx->nranks;
    head.rank     = (uint32_t)ctx->rank;
    head.nlayers  = (uint32_t)ctx->nreg;
    head.seed     = ctx->seed;
    head.layout   = state_layout_hash(ctx);
    head.step     = (slot != NULL) ? slot->step : 0;
    head.fb_total = ((slot != NULL) && slot->alloc_ok) ? slot->fb.total : 0;
    head.rq_total = ((slot != NULL) && slot->alloc_ok) ? slot->rq_fb.total : 0;
    f = fopen(file, "wb");
    if (f == NULL) {
        terse_error(TERSE_LOG_COMM, "cannot write state file %s: %m", file);
        return TERSE_ERR_SYSTEM;
    }
    ok = (fwrite(&head, sizeof(head), 1, f) == 1);
    for (l = 0; ok && (l < ctx->nreg); ++l) {
        memset(&e, 0, sizeof(e));
        e.layer = (int)l;
        snprintf(e.compressor, sizeof(e.compressor), "%s", ctx->plan[l].ops->name);
        e.param = ctx->plan[l].param;
        ok      = (fwrite(&e, sizeof(e), 1, f) == 1);
    }
    if (ok && (head.fb_total > 0)) {
        ok = (fwrite(slot->fb.data, sizeof(float), head.fb_total, f) == head.fb_total);
    }
    if (ok && (head.rq_total > 0)) {
        ok = (fwrite(slot->rq_fb.data, sizeof(float), head.rq_total, f) == head.rq_total);
    }
    if ((fclose(f) != 0) || !ok) {
        terse_error(TERSE_LOG_COMM, "failed to write state file %s", file);
        return TERSE_ERR_SYSTEM;
    }
    return TERSE_OK;
}

terse_status_t
terse_state_load(terse_ctx_t *ctx, const char *path)
{
    terse_plan_entry_t *entries = NULL;
    terse_slot_t *slot;
    terse_status_t status = TERSE_OK;
    state_head_t head;
    char file[1024];
    FILE *f;
    size_t l;

    if ((ctx == NULL) || (path == NULL)) {
        return TERSE_ERR_INVALID;
    }
    TERSE_CHECK(terse__path_expand(path, ctx->rank, file, sizeof(file)));
    f = fopen(file, "rb");
    if (f == NULL) {
        terse_error(TERSE_LOG_COMM, "cannot read state file %s: %m", file);
        return TERSE_ERR_SYSTEM;
    }
    if ((fread(&head, sizeof(head), 1, f) != 1) ||
        (memcmp(head.magic, TERSE_STATE_MAGIC, 8) != 0)) {
        terse_error(TERSE_LOG_COMM, "%s is not a terse state file", file);
        status = TERSE_ERR_INVALID;
        goto out_close;
    }
    if ((head.version != TERSE_VERSION_CODE) || (head.nranks != (uint32_t)ctx->nranks) ||
        (head.rank != (uint32_t)ctx->rank) || (head.nlayers != ctx->nreg) ||
        (head.layout != state_layout_hash(ctx)) || (ctx->nreg == 0)) {
        terse_error(TERSE_LOG_COMM, "state file %s was saved by another version, world size, "
                    "rank or layer layout (%u ranks, %u layers)", file, head.nranks,
                    head.nlayers);
        status = TERSE_ERR_MISMATCH;
        goto out_close;
    }
    entries = calloc(ctx->nreg, sizeof(*entries));
    if (entries == NULL) {
        status = TERSE_ERR_NOMEM;
        goto out_close;
    }
    if (fread(entries, sizeof(*entries), ctx->nreg, f) != ctx->nreg) {
        status = TERSE_ERR_INVALID;
        goto out_free;
    }
    for (l = 0; l < ctx->nreg; ++l) {
        entries[l].compressor[TERSE_NAME_MAX - 1] = '\0';
    }
    TERSE_CHECK_GOTO(terse_plan_set(ctx, entries, ctx->nreg), status, out_free);
    ctx->seed = head.seed;
    TERSE_CHECK_GOTO(ctx_get_slot(ctx, TERSE_KEY_REG, ctx->reg_total, TERSE_FLOAT32, &slot),
                     status, out_free);
    if (slot->alloc_ok && ((head.fb_total != slot->fb.total) ||
                           (head.rq_total != slot->rq_fb.total))) {
        terse_error(TERSE_LOG_COMM, "state file %s holds residuals of another plan", file);
        status = TERSE_ERR_MISMATCH;
        goto out_free;
    }
    if (slot->alloc_ok &&
        (((head.fb_total > 0) &&
          (fread(slot->fb.data, sizeof(float), head.fb_total, f) != head.fb_total)) ||
         ((head.rq_total > 0) &&
          (fread(slot->rq_fb.data, sizeof(float), head.rq_total, f) != head.rq_total)))) {
        terse_error(TERSE_LOG_COMM, "state file %s is truncated", file);
        status = TERSE_ERR_INVALID;
        goto out_free;
    }
    slot->step  = head.step;
    ctx->frozen = 1;

out_free:
    free(entries);
out_close:
    fclose(f);
    return status;
}
