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
static void sched_job_drop(terse_sched_job_t *job);

static void
slot_destroy(terse_slot_t *slot)
{
    size_t l;

    if (slot == NULL) {
        return;
    }
    if (slot->dev != NULL) {
        slot->dev->cleanup(slot); /* owns ws[]: the host cleanups below find nothing */
    }
    terse__algo_native_cleanup(slot);
    terse__algo_summable_cleanup(slot);
    terse__algo_requant_cleanup(slot);
    terse__algo_sparse_cleanup(slot);
    terse__hier_cleanup(slot);
    for (l = 0; l < slot->nlayers; ++l) {
        if (slot->layers[l].cmp != NULL) {
            slot->layers[l].ops->destroy(slot->layers[l].cmp);
        }
    }
    sched_job_drop(slot->job); /* first: its thread reads the context, not the slot */
    terse__fb_destroy(&slot->fb);
    free(slot->win);
    terse__sched_plan_free(&slot->plan);
    terse__sched_plan_free(&slot->pending_plan);
    free(slot->pending);
    free(slot->specs);
    free(slot->names);
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
    params.mem    = (ctx->dev != NULL) ? TERSE_MEM_CUDA : TERSE_MEM_HOST;
    params.bucket = (uint32_t)ctx->cfg->QUANT_BUCKET;
    params.nranks = slot->nranks;
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
        ly->chunk = TERSE_ALIGN_UP(TERSE_DIV_UP(ly->count, (size_t)slot->nranks),
                                   (size_t)params.bucket);
    }
    if (ly->cls == TERSE_CLASS_SPARSE) {
        /* the allgather must send less than a plain allreduce: |payload| p < 2 S (for top-k:
         * density below 1/p) */
        if ((ops->payload_size(ly->cmp, ly->count, 0, &pay) != TERSE_OK) ||
            (pay * (size_t)slot->nranks >= 2 * ly->count * sizeof(float))) {
            const terse_cmp_ops_t *q = terse__cmp_find("quant");
            ops->destroy(ly->cmp);
            ly->cmp = NULL;
            if ((q != NULL) && (depth == 0) && (slot_class_of(q) == TERSE_CLASS_REQUANT)) {
                terse_warn_once(TERSE_LOG_COMM, "%s on %d ranks sends more than a plain "
                                "allreduce (density must stay below 1/p): using quant:8",
                                spec, slot->nranks);
                return slot_layer_create(ctx, slot, l, q, 8.0, depth + 1);
            }
            terse_warn_once(TERSE_LOG_COMM, "%s on %d ranks sends more than a plain allreduce: "
                            "sent natively", spec, slot->nranks);
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

/* Builds a slot for transport tp. Allocation failures do not fail the build: they leave
 * alloc_ok 0, which the agreement turns into a pass-through on every rank. A slot over the
 * context's transport runs hierarchically when the context has a hierarchy (algo_hier.c: its
 * residuals and buffers live in the inter-node sub-slots, none here). */
static terse_status_t
slot_build_tp(terse_ctx_t *ctx, terse_transport_t *tp, uint64_t key, size_t nlayers,
              const size_t *counts, const size_t *rows, const size_t *cols,
              const terse_cmp_spec_t *specs, const char (*names)[TERSE_NAME_MAX],
              terse_dtype_t dtype, terse_slot_t **slot_p)
{
    const int hier = (tp == ctx->tp) && (ctx->hier != NULL);
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
    slot->nranks   = tp->nranks;
    slot->alloc_ok = 1;
    slot->dev      = ctx->dev;
    slot->layers   = calloc(TERSE_MAX(nlayers, 1), sizeof(*slot->layers));
    slot->specs    = calloc(TERSE_MAX(nlayers, 1), sizeof(*slot->specs));
    slot->names    = calloc(TERSE_MAX(nlayers, 1), sizeof(*slot->names));
    fb_counts      = calloc(TERSE_MAX(nlayers, 1), sizeof(*fb_counts));
    if ((slot->layers == NULL) || (fb_counts == NULL) || (slot->specs == NULL) ||
        (slot->names == NULL)) {
        free(fb_counts);
        free(slot->specs);
        free(slot->names);
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
        slot->specs[l] = specs[l];
        if (names != NULL) {
            memcpy(slot->names[l], names[l], TERSE_NAME_MAX);
            slot->names[l][TERSE_NAME_MAX - 1] = '\0';
        } else if (nlayers == 1) {
            snprintf(slot->names[l], TERSE_NAME_MAX, "all");
        } else {
            snprintf(slot->names[l], TERSE_NAME_MAX, "seg%zu", l);
        }
        slot->count += counts[l];
        if (slot_layer_create(ctx, slot, l, specs[l].ops, specs[l].param, 0) != TERSE_OK) {
            terse_warn(TERSE_LOG_COMM, "out of memory creating the compressor of layer %zu",
                       l);
            slot->alloc_ok = 0;
            ly->ops        = terse__cmp_find("none");
            ly->cls        = TERSE_CLASS_NATIVE;
        }
        slot->nclass[ly->cls]++;
        fb_counts[l] = ((ly->cls == TERSE_CLASS_NATIVE) || hier) ? 0 : ly->count;
    }
    if (terse__fb_create(fb_counts, nlayers, (ctx->dev != NULL) ? TERSE_MEM_CUDA : TERSE_MEM_HOST,
                         &slot->fb) != TERSE_OK) {
        slot->alloc_ok = 0;
    } else {
        slot->mem_bytes += terse__fb_bytes(&slot->fb);
    }
    free(fb_counts);
    if (slot->alloc_ok && hier) {
        st = terse__hier_setup(ctx, slot);
        if (st != TERSE_OK) {
            terse_warn(TERSE_LOG_COMM, "failed to set up the hierarchical allreduce of a layout "
                       "of %zu elements (%s)", slot->count, terse_status_str(st));
            slot->alloc_ok = 0;
        }
    } else if (slot->alloc_ok && (slot->dev != NULL)) {
        /* device buffers: the NCCL context's own algorithms (algo_device.c) */
        if (slot->dev->setup(ctx, slot) != TERSE_OK) {
            slot->alloc_ok = 0;
        }
    } else if (slot->alloc_ok) {
        st = terse__algo_native_setup(slot, tp);
        if (st == TERSE_OK) {
            st = terse__algo_summable_setup(slot, tp);
        }
        if (st == TERSE_OK) {
            st = terse__algo_requant_setup(slot, tp);
        }
        if (st == TERSE_OK) {
            st = terse__algo_sparse_setup(slot, tp);
        }
        if (st != TERSE_OK) {
            terse_warn(TERSE_LOG_COMM, "failed to set up the wire algorithms of a layout of "
                       "%zu elements (%s)", slot->count, terse_status_str(st));
            slot->alloc_ok = 0;
        }
    }
    if (!slot->alloc_ok) {
        /* keep nothing big around: this slot only passes through */
        if (slot->dev != NULL) {
            slot->dev->cleanup(slot);
        }
        terse__algo_native_cleanup(slot);
        terse__algo_summable_cleanup(slot);
        terse__algo_requant_cleanup(slot);
        terse__algo_sparse_cleanup(slot);
        terse__hier_cleanup(slot);
        terse__fb_destroy(&slot->fb);
        slot->mem_bytes = 0;
    }
    *slot_p = slot;
    return TERSE_OK;
}

static terse_status_t
slot_build(terse_ctx_t *ctx, uint64_t key, size_t nlayers, const size_t *counts,
           const size_t *rows, const size_t *cols, const terse_cmp_spec_t *specs,
           const char (*names)[TERSE_NAME_MAX], terse_dtype_t dtype, terse_slot_t **slot_p)
{
    return slot_build_tp(ctx, ctx->tp, key, nlayers, counts, rows, cols, specs, names, dtype,
                         slot_p);
}

terse_status_t
terse__slot_build_tp(terse_ctx_t *ctx, terse_transport_t *tp, uint64_t key, size_t nlayers,
                     const size_t *counts, const size_t *rows, const size_t *cols,
                     const terse_cmp_spec_t *specs, const char (*names)[TERSE_NAME_MAX],
                     terse_dtype_t dtype, terse_slot_t **slot_p)
{
    return slot_build_tp(ctx, tp, key, nlayers, counts, rows, cols, specs, names, dtype,
                         slot_p);
}

void
terse__slot_destroy(terse_slot_t *slot)
{
    slot_destroy(slot);
}

static uint64_t
slot_hash(const terse_ctx_t *ctx, const terse_slot_t *slot)
{
    uint64_t h = terse__hash64(&ctx->cfg_hash, sizeof(ctx->cfg_hash), 0x736c6f74ull);
    size_t l;

    h = terse__hash64(&ctx->nranks, sizeof(ctx->nranks), h);
    h = terse__hash64(&slot->key, sizeof(slot->key), h);
    l = (slot->hier != NULL) ? 1 : 0; /* hierarchical on every rank or on none */
    h = terse__hash64(&l, sizeof(l), h);
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

    if (params->transport == TERSE_TRANSPORT_NCCL) {
        /* named only: AUTO cannot tell an ncclComm_t from another pointer */
        if (&terse__nccl_path == NULL) {
            terse_error(TERSE_LOG_COMM, "this build has no NCCL path (needs CUDA and nccl.h)");
            return TERSE_ERR_UNSUPPORTED;
        }
        if ((terse__nccl_path.tp_ops->query(params->comm, &usable) != TERSE_OK) || !usable) {
            terse_error(TERSE_LOG_COMM, "no NCCL in this process can use the communicator");
            return TERSE_ERR_UNSUPPORTED;
        }
        *ops_p = terse__nccl_path.tp_ops;
        return TERSE_OK;
    }
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
        ctx->uniform.is_auto = 0;
        ctx->uniform.ops     = terse__cmp_find("none");
        ctx->uniform.param   = 0.0;
        ctx->auto_reg        = 1;
        ctx->auto_unreg      = 1;
    }
    ctx->sched_warmup    = ctx->cfg->WARMUP_STEPS;
    ctx->sched_replan    = ctx->cfg->REPLAN_STEPS;
    ctx->sched_alpha     = ctx->cfg->ERROR_BUDGET;
    ctx->sched_fraction  = ctx->cfg->ERROR_FRACTION;
    ctx->sched_objective = ctx->cfg->SCHED_OBJECTIVE;
    ctx->sched_segment   = ctx->cfg->SEGMENT_BYTES;
    terse__sched_grid_default(&ctx->grid, (uint32_t)ctx->cfg->QUANT_BUCKET);
    ctx->ref_grid        = ctx->grid;
    ctx->ref_grid.n      = 1;
    if ((terse__cmp_spec_parse(ctx->cfg->REFERENCE, &ctx->reference, why, sizeof(why)) !=
         TERSE_OK) || ctx->reference.is_auto ||
        (terse__sched_grid_find(&ctx->grid, terse__sched_fam_find(ctx->reference.ops->name),
                                ctx->reference.param) < 0)) {
        terse_error(TERSE_LOG_SCHED, "TERSE_REFERENCE %s: not an option of the scheduler's grid",
                    ctx->cfg->REFERENCE);
        free(ctx);
        return TERSE_ERR_INVALID;
    }
    ctx->ref_grid.opt[0].fam   = terse__sched_fam_find(ctx->reference.ops->name);
    ctx->ref_grid.opt[0].param = ctx->reference.param;
    TERSE_CHECK_GOTO(tops->init(params->comm, &ctx->tp), status, err_free_ctx);
    ctx->rank   = ctx->tp->rank;
    ctx->nranks = ctx->tp->nranks;
    ctx->grid.share = (unsigned)TERSE_MAX(ctx->nranks, 1); /* PowerSGD spans every rank */
    ctx->ref_grid.share = ctx->grid.share;
    ctx->dev    = ((&terse__nccl_path != NULL) && (tops == terse__nccl_path.tp_ops)) ?
                      &terse__nccl_path : NULL;
    /* TERSE_STATS_ASYNC: 0 auto (on for device buffers), 1 on, 2 off */
    ctx->sched_lag = ((ctx->cfg->STATS_ASYNC == 1) ||
                      ((ctx->cfg->STATS_ASYNC == 0) && (ctx->dev != NULL))) ?
                         (uint32_t)ctx->cfg->STATS_LAG : 0;
    if (tops->kind != TERSE_TRANSPORT_LOOP) {
        terse__log_set_rank(ctx->rank);
    }
    TERSE_CHECK_GOTO(terse__hier_ctx_init(ctx, NULL, (int)ctx->cfg->HIERARCHY,
                                          ctx->cfg->HIER_CHUNK_BYTES),
                     status, err_fini);
    if (ctx->cfg->PLAN[0] != '\0') {
        TERSE_CHECK_GOTO(terse__ctx_pin_plan(ctx, ctx->cfg->PLAN), status, err_fini);
    }
    if (ctx->cfg->LAYOUT[0] != '\0') {
        TERSE_CHECK_GOTO(terse__ctx_set_layout(ctx, ctx->cfg->LAYOUT), status, err_fini);
    }
    if (ctx->cfg->STATS[0] != '\0') {
        char file[1024];
        TERSE_CHECK_GOTO(terse__path_expand(ctx->cfg->STATS, ctx->rank, file, sizeof(file)),
                         status, err_fini);
        ctx->stats_file = fopen(file, "a");
        if (ctx->stats_file == NULL) {
            terse_warn(TERSE_LOG_SCHED, "TERSE_STATS: cannot open %s: %m (no telemetry)", file);
        }
    }
    ctx->stats.size = sizeof(ctx->stats);
    *ctx_p          = ctx;
    return TERSE_OK;

err_fini:
    terse__sched_plan_free(&ctx->pinned);
    free(ctx->lay_count);
    free(ctx->lay_rows);
    free(ctx->lay_cols);
    free(ctx->lay_name);
    terse__hier_ctx_fini(ctx);
    ctx->tp->ops->finalize(ctx->tp);
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
    terse__hier_ctx_fini(ctx);
    if (ctx->tp != NULL) {
        ctx->tp->ops->finalize(ctx->tp);
    }
    ctx_free_layers(ctx);
    free(ctx->win_tmp);
    terse__sched_plan_free(&ctx->pinned);
    free(ctx->lay_count);
    free(ctx->lay_rows);
    free(ctx->lay_cols);
    free(ctx->lay_name);
    if (ctx->stats_file != NULL) {
        fclose(ctx->stats_file);
    }
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
    ctx->auto_unreg = sp.is_auto;
    if (sp.is_auto) {
        sp.ops     = terse__cmp_find("none");
        sp.param   = 0.0;
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
    return !ctx->auto_unreg && (slot_class_of(ctx->uniform.ops) == TERSE_CLASS_NATIVE);
}

/* ---------------------------------------------------------------- scheduler (auto) */
/*
 * TERSE_COMPRESSOR=auto (DESIGN.md section 5). Per slot: the first TERSE_WARMUP_STEPS calls go
 * uncompressed; the input of call W - 1, and then of every TERSE_REPLAN_STEPS-th call, gives
 * the statistics (scheduler/stats.c, on a subsample of big layers). Every rank then, inside
 * that same call and before its data moves:
 *   1. agrees that its statistics exist (MAX of a fail flag),
 *   2. sums them with the deterministic fixed-order sum (bitwise equal on every rank),
 *   3. measures the cost model once (or takes TERSE_LINK_*): timings reduced with MAX,
 *   4. solves the plan (integers inside, fixed ties: scheduler/dp.c),
 *   5. compares the plan checksum (MAX of checksum, ~checksum, fail flag).
 * The plan takes effect on the next call of the slot on every rank (the slot is rebuilt: all
 * residuals and PowerSGD Q start afresh on every rank alike, rule 4) and is agreed again as a
 * layout. Any failure keeps the previous plan on every rank, with a warning saying why.
 */
#define SCHED_SAMPLE_MAX   ((size_t)1 << 18) /* statistics look at most at this many values */
#define SCHED_SAMPLE_BLOCK ((size_t)4096)    /* flat layers: evenly spaced blocks of this size */

static const terse_cmp_ops_t *
sched_fam_ops(int fam)
{
    const char *name = terse__sched_fam_name(fam);

    return (name != NULL) ? terse__cmp_find(name) : NULL;
}

/* The shape of layer ly's sample as sched_sample takes it: n values, flat (rows 0) or a
 * rows x cols matrix of every kr-th row and kc-th column of a big matrix. Both strides grow,
 * the larger side's first, until the sample fits SCHED_SAMPLE_MAX: a submatrix keeps the rank
 * structure PowerSGD's estimate needs (a low-rank matrix's submatrix has the same rank), where
 * keeping whole rows of a wide layer left too few rows (768 x 3072: 77) for the larger ranks.
 * A pure function of the layer's shape, so the window sums of successive steps line up.
 *   [out] kr_p, kc_p  the strides (1: that side is whole); may be NULL */
static void
sched_sample_shape2(const terse_layer_state_t *ly, size_t *n_p, size_t *rows_p, size_t *cols_p,
                    size_t *kr_p, size_t *kc_p)
{
    size_t n = ly->count, rows = ly->rows, cols = ly->cols, kr = 1, kc = 1;

    if ((n > SCHED_SAMPLE_MAX) && (rows > 0)) {
        size_t r = rows, c = cols;
        while (r * c > SCHED_SAMPLE_MAX) {
            if (r >= c) {
                ++kr;
                r = TERSE_DIV_UP(rows, kr);
            } else {
                ++kc;
                c = TERSE_DIV_UP(cols, kc);
            }
        }
        rows = r;
        cols = c;
        n    = r * c;
    } else if (n > SCHED_SAMPLE_MAX) {
        n = (SCHED_SAMPLE_MAX / SCHED_SAMPLE_BLOCK) * SCHED_SAMPLE_BLOCK;
    }
    *n_p    = n;
    *rows_p = rows;
    *cols_p = (rows > 0) ? cols : 0;
    if (kr_p != NULL) {
        *kr_p = kr;
        *kc_p = kc;
    }
}

static void
sched_sample_shape(const terse_layer_state_t *ly, size_t *n_p, size_t *rows_p, size_t *cols_p)
{
    sched_sample_shape2(ly, n_p, rows_p, cols_p, NULL, NULL);
}

/* Copies (a subsample of) layer ly's fp32 values into *tmp_p, in sched_sample_shape's shape.
 *   [out] n_p, rows_p, cols_p  what was copied (rows_p 0 for a flat sample)
 *   [out] scale_p              count / n: multiplies the summed statistics
 * Returns TERSE_OK or TERSE_ERR_NOMEM. */
static terse_status_t
sched_sample(const void *buf, terse_dtype_t dtype, const terse_layer_state_t *ly,
             const float *res, float **tmp_p, size_t *cap_p, size_t *n_p, size_t *rows_p,
             size_t *cols_p, double *scale_p)
{
    size_t n, rows, cols, i, kr, kc, nb, step, r;
    float *t;

    sched_sample_shape2(ly, &n, &rows, &cols, &kr, &kc);
    if (*cap_p < n) {
        void *p = realloc(*tmp_p, n * sizeof(float));
        if (p == NULL) {
            return TERSE_ERR_NOMEM;
        }
        *tmp_p = p;
        *cap_p = n;
    }
    t = *tmp_p;
    if (n == ly->count) {
        for (i = 0; i < n; ++i) {
            t[i] = terse__load_f32(buf, dtype, ly->offset + i) + ((res != NULL) ? res[i] : 0.0f);
        }
    } else if (rows > 0) {
        for (r = 0; r < rows; ++r) {
            for (i = 0; i < cols; ++i) {
                const size_t at = r * kr * ly->cols + i * kc;
                t[r * cols + i] = terse__load_f32(buf, dtype, ly->offset + at) +
                                  ((res != NULL) ? res[at] : 0.0f);
            }
        }
    } else {
        nb   = ly->count / SCHED_SAMPLE_BLOCK;
        step = nb / (n / SCHED_SAMPLE_BLOCK);
        for (r = 0; r < n / SCHED_SAMPLE_BLOCK; ++r) {
            for (i = 0; i < SCHED_SAMPLE_BLOCK; ++i) {
                const size_t at = r * step * SCHED_SAMPLE_BLOCK + i;
                t[r * SCHED_SAMPLE_BLOCK + i] = terse__load_f32(buf, dtype, ly->offset + at) +
                                                ((res != NULL) ? res[at] : 0.0f);
            }
        }
    }
    *n_p     = n;
    *rows_p  = rows;
    *cols_p  = (rows > 0) ? cols : 0;
    *scale_p = (double)ly->count / (double)n;
    return TERSE_OK;
}

/* TERSE_ERROR_MEASURE=adam: the weight of every sampled element, 1 / (E[g^2] + floor), so the
 * statistics count error the way Adam-type optimizers feel it. They divide each coordinate's
 * step by its own RMS, so noise on a coordinate with small gradients (the output column of a
 * rare token) costs as much as noise on a large one; plain squared error hides that. On the C
 * trainer uniform quant:4 of the 512 x 256 output layer alone moved the held-out loss out of
 * the seeds' band, quant:4 of the 2.6x larger hidden layer did not, while the plain squared
 * error ranked the two the other way round.
 * E[g^2] is Adafactor's factorisation, accumulated over the TERSE_STATS_WINDOW steps up to the
 * plan step (the "window"): matrices E[g_ij^2] = R_i C_j / T (R, C: row and column sums of
 * squares over the window, T their total), flat layers T / n. floor = 1e-3 T / n keeps the
 * weight of a coordinate without any gradient finite. Only the weights use the window: the
 * errors are those of compressing one step's gradient, which is what every step's compression
 * makes (a sum of steps is smoother and would understate them).
 * Window layout per layer: rows + cols + 1 doubles (R, C, T) for a matrix sample, 1 (T) for a
 * flat one; slot->win holds them for all layers, allocated at the slot's first window step. */
static size_t
sched_win_len(const terse_slot_t *slot, size_t upto)
{
    size_t l, len = 0, n, rows, cols;

    for (l = 0; l < upto; ++l) {
        sched_sample_shape(&slot->layers[l], &n, &rows, &cols);
        len += (rows > 0) ? rows + cols + 1 : 1;
    }
    return len;
}

/* acc (this layer's window part) += this step's squared sample t */
static void
sched_win_add(double *acc, const float *t, size_t n, size_t rows, size_t cols)
{
    size_t i, j;
    double x;

    if (rows == 0) {
        for (i = 0; i < n; ++i) {
            acc[0] += (double)t[i] * (double)t[i];
        }
        return;
    }
    for (i = 0; i < rows; ++i) {
        for (j = 0; j < cols; ++j) {
            x = (double)t[i * cols + j] * (double)t[i * cols + j];
            acc[i] += x;
            acc[rows + j] += x;
            acc[rows + cols] += x;
        }
    }
}

/* The weights of one layer's sample from its window sums (see above). */
static void
sched_win_weights(const double *acc, size_t n, size_t rows, size_t cols, float *w)
{
    const double total = acc[(rows > 0) ? rows + cols : 0];
    const double floor_ = (n > 0) ? 1e-3 * total / (double)n : 0.0;
    size_t i, j;

    if (!(total > 0.0) || !isfinite(total)) {
        for (i = 0; i < n; ++i) {
            w[i] = 1.0f; /* a zero layer has no error to weigh; a non-finite one is excluded */
        }
        return;
    }
    if (rows == 0) {
        for (i = 0; i < n; ++i) {
            w[i] = (float)(1.0 / (total / (double)n + floor_));
        }
        return;
    }
    for (i = 0; i < rows; ++i) {
        for (j = 0; j < cols; ++j) {
            w[i * cols + j] = (float)(1.0 / (acc[i] * acc[rows + j] / total + floor_));
        }
    }
}

/* A window step before the plan step: adds every layer's squared sample to slot->win.
 * Host buffers only (the device path would have to copy the gradient to the host on every
 * window step: it uses the plan step alone). Local: no communication. */
static void
sched_win_step(terse_ctx_t *ctx, terse_slot_t *slot, const void *sendbuf, terse_dtype_t dtype)
{
    size_t l, off = 0, n, rows, cols;
    double scale;

    if (slot->win == NULL) {
        slot->win_len = sched_win_len(slot, slot->nlayers);
        slot->win     = calloc(TERSE_MAX(slot->win_len, 1), sizeof(double));
        if (slot->win == NULL) {
            return; /* the plan step's own gradient gives the weights then */
        }
        slot->mem_bytes += slot->win_len * sizeof(double);
    }
    for (l = 0; l < slot->nlayers; ++l) {
        if (sched_sample(sendbuf, dtype, &slot->layers[l], NULL, &ctx->win_tmp, &ctx->win_cap,
                         &n, &rows, &cols, &scale) != TERSE_OK) {
            return; /* a partial window only changes weights, never agreement */
        }
        sched_win_add(slot->win + off, ctx->win_tmp, n, rows, cols);
        off += (rows > 0) ? rows + cols + 1 : 1;
    }
    ++slot->win_steps;
}

/* Times one compress (+ stages) + decompress of family `fam` at the grid's middle parameter on
 * a fixed pseudo-random 512 x 512 fp32 layer of this rank's memory kind (host), best of 3.
 * Returns the seconds, or -1 when the family is not built, not in the grid, or failed here. */
static double
sched_time_family(const terse_ctx_t *ctx, int fam, float *v, float *res, float *out,
                  void *pay, size_t pay_cap)
{
    const terse_cmp_ops_t *ops = sched_fam_ops(fam);
    const size_t rows = 512, cols = 512, n = rows * cols;
    terse_cmp_params_t prm;
    terse_buf_t in, ob;
    terse_rng_t rng;
    void *cmp = NULL;
    size_t nopt = 0, i, bytes = 0, b2 = 0;
    double param = 0.0, best = -1.0, t;
    unsigned st, ns;
    uint32_t flags;
    int rep, ok = 1;

    if (ops == NULL) {
        return -1.0;
    }
    for (i = 0; i < ctx->grid.n; ++i) { /* the middle option of the family in the grid */
        nopt += (ctx->grid.opt[i].fam == fam);
    }
    if (nopt == 0) {
        return -1.0; /* not a candidate: nothing to time (its default figure stays) */
    }
    for (i = 0, nopt = (nopt + 1) / 2; (i < ctx->grid.n) && (nopt > 0); ++i) {
        if ((ctx->grid.opt[i].fam == fam) && (--nopt == 0)) {
            param = ctx->grid.opt[i].param;
        }
    }
    memset(&prm, 0, sizeof(prm));
    prm.size   = sizeof(prm);
    prm.param  = param;
    prm.count  = n;
    prm.rows   = (ops->caps & TERSE_CMP_CAP_MATRIX) ? rows : 0;
    prm.cols   = (ops->caps & TERSE_CMP_CAP_MATRIX) ? cols : 0;
    prm.dtype  = TERSE_FLOAT32;
    prm.mem    = TERSE_MEM_HOST;
    prm.nranks = ctx->nranks;
    prm.seed   = ctx->seed;
    if (ops->create(&prm, &cmp) != TERSE_OK) {
        return -1.0;
    }
    ns = (ops->nstages != NULL) ? ops->nstages(cmp) : 1;
    in = (terse_buf_t){.ptr = v, .count = n, .dtype = TERSE_FLOAT32, .mem = TERSE_MEM_HOST};
    ob = (terse_buf_t){.ptr = out, .count = n, .dtype = TERSE_FLOAT32, .mem = TERSE_MEM_HOST};
    for (rep = 0; ok && (rep < 3); ++rep) {
        memset(res, 0, n * sizeof(float));
        /* a shared stream: random-k insists on one; timing does not care */
        rng = terse_rng_make(ctx->seed, TERSE_RNG_QUANT, 0, (uint32_t)rep, TERSE_RNG_SHARED);
        t   = terse__time_now();
        ok  = (ops->payload_size(cmp, n, 0, &bytes) == TERSE_OK) && (bytes <= pay_cap / 2) &&
             (ops->compress(cmp, &in, res, &rng, pay, bytes, &flags, NULL, NULL) == TERSE_OK);
        for (st = 1; ok && (st < ns); ++st) { /* this rank's payload stands in for the sum */
            void *src = (st % 2) ? pay : (char *)pay + pay_cap / 2;
            void *dst = (st % 2) ? (char *)pay + pay_cap / 2 : pay;
            ok = (ops->payload_size(cmp, n, st, &b2) == TERSE_OK) && (b2 <= pay_cap / 2) &&
                 (ops->stage(cmp, st, src, bytes, dst, b2, NULL, NULL) == TERSE_OK);
            bytes = b2;
        }
        if (ok) {
            const void *last = ((ns - 1) % 2) ? (char *)pay + pay_cap / 2 : pay;
            ok = (ops->decompress(cmp, last, bytes, 1.0f, &ob, NULL) == TERSE_OK);
        }
        t = terse__time_now() - t;
        if (ok && ((best < 0.0) || (t < best))) {
            best = t;
        }
    }
    ops->destroy(cmp);
    return ok ? best : -1.0;
}

/* Measures every grid family's compress + decompress throughput on this rank (one 512 x 512
 * layer each, about 10 ms in all on one core) and reduces the times with MAX over ranks, so
 * every rank gets the same cost model and the slowest rank's times. A family that failed on
 * any rank keeps the default figure of terse__sched_cost_tput. Collective. */
static terse_status_t
sched_measure_tput(terse_ctx_t *ctx)
{
    const size_t n = (size_t)512 * 512, pay_cap = 4 * n * sizeof(float);
    uint64_t ns[TERSE_SCHED_FAM_COUNT + 1];
    float *v   = malloc(n * sizeof(float)), *res = malloc(n * sizeof(float));
    float *out = malloc(n * sizeof(float));
    void *pay  = malloc(pay_cap);
    int fam, ok = (v != NULL) && (res != NULL) && (out != NULL) && (pay != NULL);
    size_t i;

    memset(ns, 0, sizeof(ns));
    if (ok) {
        const terse_rng_t g = terse_rng_make(0x5eed, TERSE_RNG_TEST, 0, 0, 0);
        for (i = 0; i < n; ++i) { /* a fixed heavy-tailed pattern, no libm */
            const uint32_t u = terse_rng_u32(&g, i);
            const float x    = ((float)(u & 0xffffu) - 32767.5f) * (1.0f / 32768.0f);
            v[i] = x * x * x + 0.01f * x;
        }
        for (fam = TERSE_SCHED_FAM_NONE + 1; fam < TERSE_SCHED_FAM_COUNT; ++fam) {
            const double t = sched_time_family(ctx, fam, v, res, out, pay, pay_cap);
            /* nanoseconds; UINT64_MAX marks a failure, which MAX spreads to every rank */
            ns[fam] = (t >= 0.0) ? (uint64_t)(t * 1e9) + 1 : UINT64_MAX;
        }
    } else {
        for (fam = 0; fam < TERSE_SCHED_FAM_COUNT; ++fam) {
            ns[fam] = UINT64_MAX;
        }
    }
    free(v);
    free(res);
    free(out);
    free(pay);
    TERSE_CHECK(terse__tp_allreduce(ctx->tp, ns, ns, TERSE_SCHED_FAM_COUNT, TERSE_TP_MAX_U64));
    for (fam = TERSE_SCHED_FAM_NONE + 1; fam < TERSE_SCHED_FAM_COUNT; ++fam) {
        if (ns[fam] != UINT64_MAX) {
            /* throughput net of the per-call overhead the model adds back */
            const double t = TERSE_MAX((double)ns[fam] * 1e-9 - ctx->cost.cmp_overhead, 1e-9);
            ctx->cost.cmp_tput[fam] = (double)(n * sizeof(float)) / t;
        }
    }
    terse_info(TERSE_LOG_SCHED, "measured compress + decompress throughput (MAX of times over "
               "ranks, GB/s): cast %.2f quant %.2f sign %.2f topk %.2f randomk %.2f powersgd %.2f "
               "powersgd1 %.2f topkt %.2f",
               ctx->cost.cmp_tput[TERSE_SCHED_FAM_CAST] * 1e-9,
               ctx->cost.cmp_tput[TERSE_SCHED_FAM_QUANT] * 1e-9,
               ctx->cost.cmp_tput[TERSE_SCHED_FAM_SIGN] * 1e-9,
               ctx->cost.cmp_tput[TERSE_SCHED_FAM_TOPK] * 1e-9,
               ctx->cost.cmp_tput[TERSE_SCHED_FAM_RANDOMK] * 1e-9,
               ctx->cost.cmp_tput[TERSE_SCHED_FAM_POWERSGD] * 1e-9,
               ctx->cost.cmp_tput[TERSE_SCHED_FAM_POWERSGD1] * 1e-9,
               ctx->cost.cmp_tput[TERSE_SCHED_FAM_TOPKT] * 1e-9);
    return TERSE_OK;
}

void
terse__ctx_set_cost(terse_ctx_t *ctx, const terse_sched_cost_t *cost)
{
    ctx->cost       = *cost;
    ctx->cost_ready = 1;
}

/* Best times of allreduces of 1 and `big` floats, MAX over ranks (every rank gets the same
 * model), into best[0..1]; best[0] < 0 when they could not be timed. In the transport's own
 * memory where it can time there (device buffers for NCCL: host staging would charge the link
 * with copies and synchronisations the wire algorithms never pay, and make compression look
 * worth it on NVLink), else on host buffers. Collective. */
static terse_status_t
sched_time_link(terse_ctx_t *ctx, size_t big, double *best)
{
    float small[1] = {0.0f}, *buf = NULL;
    uint64_t v[2];
    double t;
    int rep, s;

    if (ctx->tp->ops->time_allreduce != NULL) {
        TERSE_CHECK(ctx->tp->ops->time_allreduce(ctx->tp, 1, 5, &best[0]));
        if (best[0] >= 0.0) {
            TERSE_CHECK(ctx->tp->ops->time_allreduce(ctx->tp, big, 3, &best[1]));
        }
        if ((best[0] < 0.0) || (best[1] < 0.0)) {
            best[0] = -1.0;
            return TERSE_OK;
        }
    } else {
        buf  = calloc(big, sizeof(float));
        v[0] = (buf == NULL);
        TERSE_CHECK(terse__tp_allreduce(ctx->tp, v, v, 1, TERSE_TP_MAX_U64));
        if (v[0] != 0) {
            free(buf);
            best[0] = -1.0;
            return TERSE_OK;
        }
        for (s = 0; s < 2; ++s) {
            best[s] = 1e30;
            for (rep = 0; rep < ((s == 0) ? 5 : 3); ++rep) {
                terse_status_t st;
                t  = terse__time_now();
                st = terse__tp_allreduce(ctx->tp, (s == 0) ? (void *)small : buf,
                                         (s == 0) ? (void *)small : buf, (s == 0) ? 1 : big,
                                         TERSE_TP_SUM_F32);
                if (st != TERSE_OK) {
                    free(buf);
                    return st;
                }
                t       = terse__time_now() - t;
                best[s] = TERSE_MIN(best[s], t);
            }
        }
        free(buf);
    }
    /* nanoseconds, MAX over ranks */
    v[0] = (uint64_t)(best[0] * 1e9);
    v[1] = (uint64_t)(best[1] * 1e9);
    TERSE_CHECK(terse__tp_allreduce(ctx->tp, v, v, 2, TERSE_TP_MAX_U64));
    best[0] = (double)v[0] * 1e-9;
    best[1] = (double)v[1] * 1e-9;
    return TERSE_OK;
}

/* The cost model, once per context: TERSE_LINK_LATENCY / TERSE_LINK_BANDWIDTH where given,
 * else timed allreduces of 1 float and of 256 Ki floats on host buffers, 16 Mi floats on
 * device buffers (NVLink reaches its bus bandwidth only with large messages): best of a few,
 * MAX over ranks (sched_time_link). Collective. */
static terse_status_t
sched_calibrate(terse_ctx_t *ctx)
{
    const size_t big = (ctx->tp->ops->time_allreduce != NULL) ? ((size_t)1 << 24)
                                                              : ((size_t)1 << 18);
    const int p = ctx->nranks;
    double alpha = ctx->cfg->LINK_LATENCY, bw = ctx->cfg->LINK_BANDWIDTH, best[2];
    int w;

    terse__sched_cost_default(&ctx->cost, p, 0.0);
    if (ctx->dev == NULL) {
        /* host compressors: measured here; the device path keeps the cost model's GPU kernel
         * figures (terse__sched_cost_default), which host timings would understate ~50x */
        terse__sched_cost_tput(&ctx->cost, 1);
        TERSE_CHECK(sched_measure_tput(ctx));
    }
    if (ctx->hier != NULL) {
        /* one (latency, bandwidth) per level, TERSE_LINK_* for the inter-node one */
        TERSE_CHECK(terse__hier_calibrate(ctx, &ctx->cost));
        ctx->cost_ready = 1;
        return TERSE_OK;
    }
    if ((p > 1) && ((alpha <= 0.0) || (bw <= 0.0))) {
        TERSE_CHECK(sched_time_link(ctx, big, best));
        if (best[0] >= 0.0) {
            if (alpha <= 0.0) {
                alpha = best[0] / terse__sched_wire_msgs(TERSE_SCHED_WIRE_NATIVE, p);
            }
            if (bw <= 0.0) {
                double dt = TERSE_MAX(best[1] - best[0], 1e-9);
                bw        = terse__sched_wire_bytes(TERSE_SCHED_WIRE_NATIVE,
                                                    (double)(big * sizeof(float)), p) / dt;
            }
        } else {
            terse_warn(TERSE_LOG_SCHED, "no memory to calibrate the cost model: using defaults");
        }
    }
    for (w = 0; w < TERSE_SCHED_WIRE_COUNT; ++w) {
        if (alpha > 0.0) {
            ctx->cost.level[0].alpha[w] = alpha;
        }
        if (bw > 0.0) {
            ctx->cost.level[0].bw[w] = bw;
        }
    }
    ctx->cost_ready = 1;
    terse_info(TERSE_LOG_SCHED, "cost model: %d ranks, latency %.3g s per message, bus bandwidth "
               "%.3g bytes/s", p, ctx->cost.level[0].alpha[0], ctx->cost.level[0].bw[0]);
    return TERSE_OK;
}

/* Payload bytes of grid option i on layer ly, or UINT64_MAX when the option is unavailable
 * there (family not built, sparse not paying at p ranks, a matrix family on a flat layer). */
static uint64_t
sched_option_bytes(const terse_ctx_t *ctx, const terse_layer_state_t *ly, int fam, double param)
{
    const terse_cmp_ops_t *ops = sched_fam_ops(fam);
    int local = 1, nodes = ctx->nranks;
    uint64_t b;

    (void)terse__hier_ctx_levels(ctx, &local, &nodes); /* hierarchical: a node's pieces */
    if (ops == NULL) {
        return UINT64_MAX;
    }
    if ((ops->caps & TERSE_CMP_CAP_MATRIX) && (ly->rows == 0)) {
        return UINT64_MAX;
    }
    if ((ops->caps & TERSE_CMP_CAP_REQUANT) && !(ops->caps & TERSE_CMP_CAP_RANGE)) {
        return UINT64_MAX;
    }
    b = terse__sched_payload_bytes_split(fam, param, ly->count, ly->rows, ly->cols,
                                         (uint32_t)ctx->cfg->QUANT_BUCKET, local);
    if ((ops->caps & TERSE_CMP_CAP_SPARSE) &&
        (b * (uint64_t)nodes >= 2 * (uint64_t)ly->count * sizeof(float))) {
        return UINT64_MAX;
    }
    return b;
}

/* Solves the plan from the reduced statistics (local, deterministic). */
static terse_status_t
sched_solve(terse_ctx_t *ctx, const terse_slot_t *slot, const double *stats,
            terse_plan_t *plan_p)
{
    const terse_sched_grid_t *grid = &ctx->grid;
    const size_t stride = terse__sched_stats_stride(grid), nl = slot->nlayers;
    terse_sched_cand_t *cand     = calloc(nl * grid->n, sizeof(*cand));
    terse_sched_layer_t *layers  = calloc(nl, sizeof(*layers));
    int *ref                     = calloc(nl, sizeof(*ref));
    const int ref_fam            = terse__sched_fam_find(ctx->reference.ops->name);
    uint64_t bytes[TERSE_SCHED_GRID_MAX];
    double ef[TERSE_SCHED_STATS_HEAD + TERSE_SCHED_GRID_MAX];
    terse_sched_problem_t prob;
    terse_status_t status = TERSE_OK;
    size_t l, i, nc;
    double budget;

    if ((cand == NULL) || (layers == NULL) || (ref == NULL)) {
        status = TERSE_ERR_NOMEM;
        goto out;
    }
    for (l = 0; l < nl; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        double *st = ef;
        memcpy(ef, stats + l * stride, stride * sizeof(double));
        /* Error feedback's steady state: a compressor losing a fraction r of its input per
         * step carries a residual e with |e|^2 = r (|g|^2 + |e|^2), so every step loses
         * err / (1 - r) of the gradient's scale, not err: heavy compression costs more than one
         * step's error says (r -> 1: unbounded). The same for every rank: IEEE ops only. */
        for (i = 0; i < grid->n; ++i) {
            const double e = ef[TERSE_SCHED_STATS_HEAD + i], nrm = ef[TERSE_SCHED_STATS_NORM];
            if ((grid->opt[i].fam != TERSE_SCHED_FAM_NONE) && (e > 0.0) && (nrm > 0.0)) {
                ef[TERSE_SCHED_STATS_HEAD + i] = (e < nrm) ? e / (1.0 - e / nrm) : INFINITY;
            }
        }
        for (i = 0; i < grid->n; ++i) {
            bytes[i] = sched_option_bytes(ctx, ly, grid->opt[i].fam, grid->opt[i].param);
            /* error feedback delays what a step loses; an option that drops most of a layer
             * every step (random-k at 0.1 %) delays that layer by hundreds of steps, whatever
             * its share of the total error */
            if ((grid->opt[i].fam != TERSE_SCHED_FAM_NONE) &&
                !(st[TERSE_SCHED_STATS_HEAD + i] <=
                  ctx->cfg->LAYER_ERROR_CAP * st[TERSE_SCHED_STATS_NORM])) {
                bytes[i] = UINT64_MAX;
            }
        }
        TERSE_CHECK_GOTO(terse__sched_layer_fill(grid, &ctx->cost, ly->count, ef,
                                                 bytes, NULL, cand + l * grid->n, &nc),
                         status, out);
        layers[l].name  = slot->names[l];
        layers[l].count = ly->count;
        layers[l].rows  = ly->rows;
        layers[l].cols  = ly->cols;
        layers[l].ncand = nc;
        layers[l].cand  = cand + l * grid->n;
        ref[l]          = -1;
        for (i = 0; i < nc; ++i) {
            if ((cand[l * grid->n + i].fam == ref_fam) &&
                (cand[l * grid->n + i].param == ctx->reference.param)) {
                ref[l] = (int)i;
            }
        }
    }
    /* the budget comes from the raw gradient (stats + nl * stride: per layer norm, flag and
     * reference error without the residual), not from gradient plus residual: the residual
     * depends on the plan in force, and a budget that grows with it makes plans oscillate */
    {
        const double *raw = stats + nl * stride;
        double sum = 0.0;
        if (!(ctx->sched_alpha >= 0.0)) {
            status = TERSE_ERR_INVALID;
            goto out;
        }
        for (l = 0; l < nl; ++l) {
            const double nrm = raw[3 * l + TERSE_SCHED_STATS_NORM];
            double e         = raw[3 * l + TERSE_SCHED_STATS_HEAD];
            /* the reference under error feedback, as the candidates below */
            e = ((e > 0.0) && (nrm > 0.0)) ? ((e < nrm) ? e / (1.0 - e / nrm) : INFINITY) : e;
            if (ctx->sched_fraction > 0.0) {
                e = nrm;
            }
            sum += isfinite(e) ? e : 0.0; /* a layer without the reference: 0 (conservative) */
        }
        budget = sum * ((ctx->sched_fraction > 0.0) ? ctx->sched_fraction : ctx->sched_alpha);
    }
    memset(&prob, 0, sizeof(prob));
    prob.nlayers   = nl;
    prob.layer     = layers;
    prob.budget    = budget;
    prob.objective = (terse_sched_objective_t)ctx->sched_objective;
    prob.cost      = &ctx->cost;
    prob.reference = ref;
    status         = terse__sched_solve(&prob, plan_p);

out:
    free(ref);
    free(layers);
    free(cand);
    return status;
}

static void
sched_plan_out(const terse_ctx_t *ctx, const terse_plan_t *plan)
{
    char file[1024];

    if ((ctx->cfg->PLAN_OUT[0] == '\0') ||
        ((ctx->rank != 0) && (strstr(ctx->cfg->PLAN_OUT, "%r") == NULL))) {
        return;
    }
    if (terse__path_expand(ctx->cfg->PLAN_OUT, ctx->rank, file, sizeof(file)) == TERSE_OK) {
        (void)terse__sched_plan_write(plan, file); /* logs its own failure */
    }
}

/* Whether compressing cannot pay on this link at all: the plan of least predicted time with
 * every candidate's error taken as 0 (no budget can forbid anything) sends every layer
 * uncompressed. Then so does every plan under any budget, and the statistics (the expensive
 * part of a re-plan: ~0.5 s for a 25 M parameter model on one core) need not be taken: on
 * NVLink a re-plan is then a few small allreduces. A pure function of the layout and the
 * agreed cost model. On 1 it leaves stats holding those zero-error statistics (what
 * sched_solve then turns into the all-uncompressed plan); on 0 stats is zeroed again. */
static int
sched_nothing_pays(terse_ctx_t *ctx, const terse_slot_t *slot, double *stats)
{
    const size_t stride = terse__sched_stats_stride(&ctx->grid), nl = slot->nlayers;
    terse_plan_t plan;
    size_t l;
    int none = 1;

    if ((stats == NULL) || (ctx->sched_objective != TERSE_SCHED_OBJ_TIME)) {
        return 0;
    }
    for (l = 0; l < nl; ++l) {
        stats[l * stride + TERSE_SCHED_STATS_NORM]           = 1.0;
        stats[nl * stride + 3 * l + TERSE_SCHED_STATS_NORM] = 1.0;
    }
    memset(&plan, 0, sizeof(plan));
    if (sched_solve(ctx, slot, stats, &plan) != TERSE_OK) {
        none = 0;
    }
    for (l = 0; none && (l < nl); ++l) {
        none = (plan.layer[l].fam == TERSE_SCHED_FAM_NONE);
    }
    terse__sched_plan_free(&plan);
    if (!none) {
        memset(stats, 0, (nl * stride + nl * 3) * sizeof(double));
    }
    return none;
}

/* A re-plan's local half (statistics) as a job: the samples of every layer and their weights
 * are copied out of the caller's buffer at the plan step, so the statistics can run on a
 * helper thread while training goes on (TERSE_STATS_ASYNC), the collective half joining at a
 * fixed later step on every rank. Owned by the slot while pending. */
struct terse_sched_job {
    terse_ctx_t   *ctx;      /* borrowed: grid, ref_grid and seed only (fixed after creation) */
    size_t         nl, stride, nstat;
    float         *snap;     /* all layers' samples, concatenated (owned) */
    float         *w;        /* their weights (TERSE_ERROR_MEASURE=adam) or NULL (owned) */
    size_t        *off, *n, *rows, *cols; /* per layer (one allocation, owned) */
    double        *scale;    /* per layer: count / sampled values (owned) */
    double        *stats;    /* nstat doubles: the result (owned) */
    int            ok;       /* 1: every layer's statistics were computed */
    int            threaded; /* 1: `thread` runs sched_job_stats and must be joined */
    pthread_t      thread;
    double         t0;       /* when the plan step began (for the logged re-plan time) */
};

static void
sched_job_free(terse_sched_job_t *job)
{
    if (job == NULL) {
        return;
    }
    free(job->snap);
    free(job->w);
    free(job->off);
    free(job->scale);
    free(job->stats);
    free(job);
}

/* The statistics of every layer from the job's samples (pure: thread-safe). Statistics of the
 * raw gradient, not of gradient plus residual: the residual belongs to the plan in force, and
 * measuring through it made plans oscillate (an aggressive plan inflates the next statistics,
 * which then ask for a timid one, and back) on the C trainer. Error feedback's accumulation is
 * modelled in sched_solve instead. */
static void *
sched_job_stats(void *arg)
{
    terse_sched_job_t *job = arg;
    const terse_ctx_t *ctx = job->ctx;
    size_t l, j;
    int ok = 1;

    for (l = 0; ok && (l < job->nl); ++l) {
        const float *t = job->snap + job->off[l];
        const float *w = (job->w != NULL) ? job->w + job->off[l] : NULL;
        double *s = job->stats + l * job->stride, *raw = job->stats + job->nl * job->stride + 3 * l;
        ok = (terse__sched_stats_layer_w(&ctx->ref_grid, t, w, job->n[l], job->rows[l],
                                         job->cols[l],
                                         terse_rng_mix64(ctx->seed ^ (0x5cef000000ull + l)),
                                         raw) == TERSE_OK) &&
             (terse__sched_stats_layer_w(&ctx->grid, t, w, job->n[l], job->rows[l], job->cols[l],
                                         terse_rng_mix64(ctx->seed ^ (0x5ced000000ull + l)),
                                         s) == TERSE_OK);
        if (ok && (job->scale[l] != 1.0)) {
            raw[TERSE_SCHED_STATS_NORM] *= job->scale[l];
            raw[TERSE_SCHED_STATS_HEAD] *= job->scale[l];
            for (j = 0; j < job->stride; ++j) {
                if (j != TERSE_SCHED_STATS_NONFINITE) {
                    s[j] *= job->scale[l];
                }
            }
        }
    }
    job->ok = ok;
    return NULL;
}

/* The plan step's local work: every layer's sample (and, for TERSE_ERROR_MEASURE=adam, this
 * step joins the window and the weights are taken from it; the window then starts afresh).
 * Returns a job (ok 0 inside when something could not be allocated: the collective half then
 * agrees to keep the plan), or NULL when not even the job could be allocated. */
static terse_sched_job_t *
sched_job_make(terse_ctx_t *ctx, terse_slot_t *slot, const void *sendbuf, terse_dtype_t dtype)
{
    const size_t stride = terse__sched_stats_stride(&ctx->grid), nl = slot->nlayers;
    const int adam = (ctx->cfg->ERROR_MEASURE == 0);
    terse_sched_job_t *job = calloc(1, sizeof(*job));
    size_t l, total = 0, cap = 0, win_off = 0, n, rows, cols;
    double *rc = NULL, scale;
    float *tmp = NULL;
    int ok;

    if (job == NULL) {
        return NULL;
    }
    job->ctx    = ctx;
    job->nl     = nl;
    job->stride = stride;
    job->nstat  = nl * stride + nl * 3; /* candidates, then the raw budget stats */
    job->t0     = terse__time_now();
    job->stats  = calloc(job->nstat + 1, sizeof(double));
    job->off    = calloc(4 * TERSE_MAX(nl, 1), sizeof(size_t));
    job->scale  = calloc(TERSE_MAX(nl, 1), sizeof(double));
    ok = (job->stats != NULL) && (job->off != NULL) && (job->scale != NULL);
    if (ok) {
        job->n    = job->off + nl;
        job->rows = job->off + 2 * nl;
        job->cols = job->off + 3 * nl;
        for (l = 0; l < nl; ++l) {
            sched_sample_shape(&slot->layers[l], &job->n[l], &job->rows[l], &job->cols[l]);
            job->off[l] = total;
            total += job->n[l];
        }
        job->snap = malloc(TERSE_MAX(total, 1) * sizeof(float));
        job->w    = adam ? malloc(TERSE_MAX(total, 1) * sizeof(float)) : NULL;
        ok        = (job->snap != NULL) && (!adam || (job->w != NULL));
    }
    for (l = 0; ok && (l < nl); ++l) {
        ok = (sched_sample(sendbuf, dtype, &slot->layers[l], NULL, &tmp, &cap, &n, &rows, &cols,
                           &scale) == TERSE_OK);
        if (!ok) {
            break;
        }
        memcpy(job->snap + job->off[l], tmp, n * sizeof(float));
        job->scale[l] = scale;
        if (adam) {
            /* without a window (device path, no memory) the weights come from this step
             * alone, in rc (rows + cols + 1 <= n + 2 doubles) */
            double *acc = (slot->win != NULL) ? slot->win + win_off : NULL;
            if (acc == NULL) {
                double *nr = realloc(rc, (n + 2) * sizeof(double));
                ok = (nr != NULL);
                if (!ok) {
                    break;
                }
                rc  = nr;
                acc = rc;
                memset(rc, 0, ((rows > 0) ? rows + cols + 1 : 1) * sizeof(double));
            }
            sched_win_add(acc, tmp, n, rows, cols);
            sched_win_weights(acc, n, rows, cols, job->w + job->off[l]);
            win_off += (rows > 0) ? rows + cols + 1 : 1;
        }
    }
    free(tmp);
    free(rc);
    if (slot->win != NULL) { /* the next window starts empty */
        memset(slot->win, 0, slot->win_len * sizeof(double));
        slot->win_steps = 0;
    }
    job->ok = ok;
    return job;
}

/* The re-plan's collective half: agrees that every rank has its statistics, sums them
 * (bitwise equal everywhere), solves, compares the checksum and makes the plan pending for the
 * next call. job->stats holds zero-error statistics and skip is 1 when compressing cannot pay
 * (no statistics were taken). Collective. Returns TERSE_OK (also when the plan is kept) or a
 * transport error. */
static terse_status_t
sched_collect(terse_ctx_t *ctx, terse_slot_t *slot, terse_sched_job_t *job, int skip)
{
    const size_t nl = slot->nlayers, stride = job->stride, nstat = job->nstat;
    double *stats = job->stats;
    void *ws = malloc(terse__algo_sum_ws_size(ctx->nranks, nstat, TERSE_FLOAT64));
    terse_cmp_spec_t *specs = NULL;
    terse_plan_t plan;
    terse_status_t status = TERSE_OK, st;
    uint64_t v[3], sum = 0;
    int ok = job->ok && (ws != NULL);
    const char *why = NULL;
    size_t l;

    memset(&plan, 0, sizeof(plan));
    if (skip) {
        terse_info(TERSE_LOG_SCHED, "step %u: compressing does not pay on this link for any "
                   "layer: no statistics taken", slot->step);
        goto solve;
    }
    /* 1. every rank has its statistics */
    v[0] = ok ? 0 : 1;
    TERSE_CHECK_GOTO(terse__tp_allreduce(ctx->tp, v, v, 1, TERSE_TP_MAX_U64), status, out);
    if (v[0] != 0) {
        why = ok ? "another rank could not compute its statistics"
                 : "this rank could not compute its statistics (out of memory)";
        goto out;
    }
    /* 2. the job's statistics, bitwise equal everywhere */
    TERSE_CHECK_GOTO(terse__algo_sum(ctx->tp, stats, stats, nstat, TERSE_FLOAT64, 1.0f, ws),
                     status, out);
    for (l = 0; l < nl; ++l) {
        if ((stats[l * stride + TERSE_SCHED_STATS_NONFINITE] != 0.0) ||
            (stats[nl * stride + 3 * l + TERSE_SCHED_STATS_NONFINITE] != 0.0)) {
            why = "a gradient held Inf or NaN at the statistics step";
            break;
        }
    }
solve:
    /* 4. solve (why stays NULL on every rank here: the decision below is agreed) */
    ok = 0;
    if (why == NULL) {
        st = sched_solve(ctx, slot, stats, &plan);
        specs = (st == TERSE_OK) ? calloc(nl, sizeof(*specs)) : NULL;
        ok    = (specs != NULL);
        for (l = 0; ok && (l < nl); ++l) {
            specs[l].ops   = sched_fam_ops(plan.layer[l].fam);
            specs[l].param = plan.layer[l].param;
            ok             = (specs[l].ops != NULL);
        }
        if (st != TERSE_OK) {
            terse_warn(TERSE_LOG_SCHED, "solving the plan failed on this rank (%s)",
                       terse_status_str(st));
        }
        sum = ok ? terse__sched_plan_checksum(&plan) : 0;
    }
    /* 5. the same plan everywhere (a stats failure above is agreed: every rank skips this) */
    if (why == NULL) {
        v[0] = sum;
        v[1] = ~sum;
        v[2] = ok ? 0 : 1;
        TERSE_CHECK_GOTO(terse__tp_allreduce(ctx->tp, v, v, 3, TERSE_TP_MAX_U64), status, out);
        if (v[2] != 0) {
            why = "some rank failed to solve the plan";
        } else if ((v[0] != sum) || (v[1] != ~sum)) {
            why = "ranks solved different plans (checksums differ)";
        }
    }
    if (why != NULL) {
        goto out;
    }
    slot->last_plan_s = terse__time_now() - job->t0;
    sched_plan_out(ctx, &plan);
    terse_info(TERSE_LOG_SCHED, "step %u: plan %016llx for %zu layers (%.3g predicted s, %.4g "
               "wire bytes, error %.4g of budget %.4g), solved %.3g s after its statistics step; "
               "switching at step %u",
               slot->step, (unsigned long long)sum, nl, plan.predicted_time, plan.wire_bytes,
               plan.sq_err, plan.budget, slot->last_plan_s, slot->step + 1);
    free(slot->pending);
    terse__sched_plan_free(&slot->pending_plan);
    slot->pending      = specs;
    slot->pending_plan = plan;
    slot->switch_step  = slot->step + 1;
    specs              = NULL;
    memset(&plan, 0, sizeof(plan));

out:
    if (why != NULL) {
        terse_warn(TERSE_LOG_SCHED, "step %u: keeping the previous plan on every rank: %s",
                   slot->step, why);
    }
    terse__sched_plan_free(&plan);
    free(specs);
    free(ws);
    return status;
}

/* Steps between a plan step and the collective half of its re-plan: 0 (synchronous) unless
 * TERSE_STATS_ASYNC is on (auto: on for the device path, where the statistics would stall the
 * GPU's step on the host); at most TERSE_REPLAN_STEPS - 2, so a re-plan never overlaps the
 * previous one's switch. The same on every rank (agreed configuration). */
static uint32_t
sched_lag(const terse_ctx_t *ctx)
{
    if ((ctx->sched_lag == 0) || (ctx->sched_replan < 3)) {
        return 0;
    }
    return TERSE_MIN(ctx->sched_lag, (uint32_t)ctx->sched_replan - 2);
}

/* The plan step of one slot (see above): calibration and the "does anything pay" flag now,
 * the statistics now or on a helper thread, the collective half now or at slot->join_step.
 * Collective: every rank of a slot with sched set calls it on the same step. Returns TERSE_OK
 * (also when the plan is kept) or a transport error. */
static terse_status_t
sched_replan(terse_ctx_t *ctx, terse_slot_t *slot, const void *sendbuf, terse_dtype_t dtype)
{
    const size_t stride = terse__sched_stats_stride(&ctx->grid), nl = slot->nlayers;
    const uint32_t lag  = sched_lag(ctx);
    terse_sched_job_t *job = NULL, fake;
    terse_status_t status = TERSE_OK;
    uint64_t v[1];
    int ok;

    slot->next_plan = slot->step + (uint32_t)ctx->sched_replan;
    if (!ctx->cost_ready) {
        TERSE_CHECK(sched_calibrate(ctx));
    }
    /* 0. does compressing pay at all here? (agreed: one flag, MAX) */
    memset(&fake, 0, sizeof(fake));
    fake.nl     = nl;
    fake.stride = stride;
    fake.nstat  = nl * stride + nl * 3;
    fake.stats  = calloc(fake.nstat + 1, sizeof(double));
    fake.t0     = terse__time_now();
    ok          = (fake.stats != NULL) && sched_nothing_pays(ctx, slot, fake.stats);
    v[0]        = ok ? 0 : 1;
    status      = terse__tp_allreduce(ctx->tp, v, v, 1, TERSE_TP_MAX_U64);
    if ((status == TERSE_OK) && (v[0] == 0)) {
        fake.ok = 1;
        status  = sched_collect(ctx, slot, &fake, 1);
        if (slot->win != NULL) {
            memset(slot->win, 0, slot->win_len * sizeof(double));
            slot->win_steps = 0;
        }
    }
    free(fake.stats);
    if ((status != TERSE_OK) || (v[0] == 0)) {
        return status;
    }
    job = sched_job_make(ctx, slot, sendbuf, dtype);
    if (job == NULL) { /* not even a job: an empty failed one, so the agreement still runs */
        memset(&fake, 0, sizeof(fake));
        fake.nl = nl, fake.stride = stride, fake.nstat = nl * stride + nl * 3;
        fake.stats = calloc(fake.nstat + 1, sizeof(double));
        fake.ok    = 0;
        status     = sched_collect(ctx, slot, &fake, 0);
        free(fake.stats);
        return status;
    }
    if (lag == 0) {
        if (job->ok) {
            (void)sched_job_stats(job);
        }
        status = sched_collect(ctx, slot, job, 0);
        sched_job_free(job);
        return status;
    }
    /* asynchronous: a thread if one can be had, else right now; joined at the same step on
     * every rank either way */
    if (job->ok && (pthread_create(&job->thread, NULL, sched_job_stats, job) == 0)) {
        job->threaded = 1;
    } else if (job->ok) {
        (void)sched_job_stats(job);
    }
    slot->job       = job;
    slot->join_step = slot->step + lag;
    return TERSE_OK;
}

/* Waits for a pending job's thread (if any) and frees the job. */
static void
sched_job_drop(terse_sched_job_t *job)
{
    if ((job != NULL) && job->threaded) {
        pthread_join(job->thread, NULL);
        job->threaded = 0;
    }
    sched_job_free(job);
}

/* The join step of an asynchronous re-plan: the collective half. Collective. */
static terse_status_t
sched_join(terse_ctx_t *ctx, terse_slot_t *slot)
{
    terse_sched_job_t *job = slot->job;
    terse_status_t status;

    slot->job = NULL;
    if (job->threaded) {
        pthread_join(job->thread, NULL);
        job->threaded = 0;
    }
    status = sched_collect(ctx, slot, job, 0);
    sched_job_free(job);
    return status;
}

/* A layer that keeps a PowerSGD family across a plan switch keeps the first min(r, r')
 * columns of its old Q (issue 5 item 4; all of them when the rank stays); the new instance's
 * other columns stay as seeded from the shared stream. Q is identical on every rank, so is the result.
 * Only a kept factor that is a Q (powersgd1 after a P step starts afresh). Best effort: a
 * layer that cannot take the columns keeps its seeded Q (identically on every rank). */
void
terse__layer_carry_state(const terse_layer_state_t *o, terse_layer_state_t *n)
{
    size_t ob = 0, nb = 0, keep;
    uint32_t ow[2], nw[2];
    char *obuf = NULL, *nbuf = NULL;

    if ((o->cmp == NULL) || (n->cmp == NULL) || (o->ops != n->ops) ||
        (n->ops->state_get == NULL) || (strncmp(n->ops->name, "powersgd", 8) != 0) ||
        (n->ops->state_size(o->cmp, &ob) != TERSE_OK) ||
        (n->ops->state_size(n->cmp, &nb) != TERSE_OK)) {
        return; /* not PowerSGD, or device instances: nothing to carry */
    }
    obuf = malloc(ob);
    nbuf = malloc(nb);
    if ((obuf != NULL) && (nbuf != NULL) &&
        (n->ops->state_get(o->cmp, obuf, ob) == TERSE_OK) &&
        (n->ops->state_get(n->cmp, nbuf, nb) == TERSE_OK)) {
        memcpy(ow, obuf, sizeof(ow));
        memcpy(nw, nbuf, sizeof(nw));
        if ((ow[0] == nw[0]) && (ow[1] == nw[1])) {
            /* the layout of powersgd.h: a prefix of columns is a prefix of bytes */
            keep = TERSE_MIN(ob, nb);
            memcpy(nbuf, obuf, keep);
            (void)n->ops->state_set(n->cmp, nbuf, nb);
        }
    }
    free(obuf);
    free(nbuf);
}

/* Builds a slot like `old` (same key, layout, step and scheduler state) from `specs`, and
 * puts it in old's place in the list. On failure the old slot stays. */
static terse_status_t
slot_rebuild(terse_ctx_t *ctx, terse_slot_t *old, const terse_cmp_spec_t *specs,
             terse_slot_t **slot_p)
{
    const size_t nl = old->nlayers;
    size_t *counts = calloc(3 * TERSE_MAX(nl, 1), sizeof(size_t)), l;
    terse_slot_t *ns = NULL, **pp;
    terse_status_t status;

    *slot_p = old;
    if (counts == NULL) {
        return TERSE_ERR_NOMEM;
    }
    for (l = 0; l < nl; ++l) {
        counts[l]          = old->layers[l].count;
        counts[nl + l]     = old->layers[l].rows;
        counts[2 * nl + l] = old->layers[l].cols;
    }
    status = slot_build(ctx, old->key, nl, counts, counts + nl, counts + 2 * nl, specs,
                        (const char (*)[TERSE_NAME_MAX])old->names, old->dtype, &ns);
    free(counts);
    TERSE_CHECK(status);
    if (ns->nlayers == nl) {
        for (l = 0; l < nl; ++l) {
            terse__layer_carry_state(&old->layers[l], &ns->layers[l]);
        }
    }
    ns->step        = old->step;
    ns->sched       = old->sched;
    ns->next_plan   = old->next_plan;
    ns->last_plan_s = old->last_plan_s;
    ns->win         = old->win; /* the layout is the same: so are the window sums */
    ns->win_len     = old->win_len;
    ns->win_steps   = old->win_steps;
    ns->mem_bytes  += (old->win != NULL) ? old->win_len * sizeof(double) : 0;
    old->win        = NULL;
    ns->job         = old->job; /* a pending re-plan of the same layout */
    ns->join_step   = old->join_step;
    old->job        = NULL;
    for (pp = &ctx->slots; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == old) {
            ns->next = old->next;
            *pp      = ns;
            break;
        }
    }
    slot_destroy(old);
    *slot_p = ns;
    return TERSE_OK;
}

/* Puts a pending plan in force (its switch step has come). */
static terse_status_t
sched_switch(terse_ctx_t *ctx, terse_slot_t **slot_p)
{
    terse_slot_t *old = *slot_p;
    terse_plan_t plan = old->pending_plan;
    terse_status_t st;

    memset(&old->pending_plan, 0, sizeof(old->pending_plan));
    st = slot_rebuild(ctx, old, old->pending, slot_p);
    if (st != TERSE_OK) {
        /* the layout agreement that follows a rebuild catches ranks that did switch */
        terse_warn(TERSE_LOG_SCHED, "cannot build the new plan (%s): keeping the previous one",
                   terse_status_str(st));
        free(old->pending);
        old->pending = NULL;
        terse__sched_plan_free(&plan);
        return TERSE_OK;
    }
    terse__sched_plan_free(&(*slot_p)->plan);
    (*slot_p)->plan     = plan;
    (*slot_p)->plan_sum = terse__sched_plan_checksum(&plan);
    return TERSE_OK;
}

/* One JSON line of TERSE_STATS for a call of this slot. */
static void
sched_telemetry(terse_ctx_t *ctx, const terse_slot_t *slot, uint32_t step, double seconds,
                uint64_t bytes, double sq_err, double norm, int passthrough)
{
    FILE *f = ctx->stats_file;
    const terse_slot_t *s;
    uint64_t mem = ctx->scratch_bytes;
    size_t l;
    char spec[TERSE_NAME_MAX];

    for (s = ctx->slots; s != NULL; s = s->next) {
        mem += s->mem_bytes;
    }
    fprintf(f, "{\"name\":\"%s\",\"rank\":%d,\"nranks\":%d,\"key\":\"%llx\",\"step\":%u,"
            "\"passthrough\":%d,\"seconds\":%.6g,\"bytes\":%llu,\"plain_bytes\":%llu,"
            "\"sq_err\":%.6g,\"sq_norm\":%.6g,\"mem\":%llu,\"plan\":\"%016llx\","
            "\"plan_seconds\":%.6g,\"layers\":[",
            ctx->name, ctx->rank, ctx->nranks, (unsigned long long)slot->key, step, passthrough,
            seconds, (unsigned long long)bytes,
            (unsigned long long)((2 * (uint64_t)(ctx->nranks - 1) * slot->count *
                                  terse__esize(slot->dtype)) / (uint64_t)ctx->nranks),
            isfinite(sq_err) ? sq_err : -1.0, isfinite(norm) ? norm : -1.0,
            (unsigned long long)mem, (unsigned long long)slot->plan_sum, slot->last_plan_s);
    for (l = 0; l < slot->nlayers; ++l) {
        const terse_layer_state_t *ly = &slot->layers[l];
        int fam       = terse__sched_fam_find(ly->ops->name);
        uint64_t b    = (fam >= 0) ? terse__sched_payload_bytes(fam, ly->param, ly->count, ly->rows,
                                                              ly->cols,
                                                              (uint32_t)ctx->cfg->QUANT_BUCKET)
                                   : (uint64_t)ly->count * terse__esize(slot->dtype);
        double pred   = ((l < slot->plan.nlayers) && (slot->plan.layer[l].fam == fam))
                            ? slot->plan.layer[l].expected_sq_err : -1.0;
        terse__cmp_spec_format(ly->ops, ly->param, spec, sizeof(spec));
        fprintf(f, "%s{\"layer\":\"%s\",\"count\":%zu,\"cmp\":\"%s\",\"family\":\"%s\","
                "\"param\":%.6g,\"payload_bytes\":%llu,\"sq_err_pred\":%.6g}",
                (l > 0) ? "," : "", slot->names[l], ly->count, spec, ly->ops->name, ly->param,
                (unsigned long long)b, isfinite(pred) ? pred : -1.0);
    }
    fprintf(f, "]}\n");
    fflush(f);
}

/* TERSE_PLAN: reads the rows of a plan file. Local; the registered layers bind to it at their
 * first allreduce and every rank compares the result in the layout agreement. */
terse_status_t
terse__ctx_pin_plan(terse_ctx_t *ctx, const char *pattern)
{
    char file[1024], why[256];
    terse_plan_t rows;
    terse_status_t st;

    TERSE_CHECK(terse__path_expand(pattern, ctx->rank, file, sizeof(file)));
    st = terse__sched_plan_read(file, &rows, why, sizeof(why));
    if (st != TERSE_OK) {
        terse_error(TERSE_LOG_SCHED, "TERSE_PLAN %s: %s", file, why);
        return (st == TERSE_ERR_NOMEM) ? st : TERSE_ERR_INVALID;
    }
    terse__sched_plan_free(&ctx->pinned);
    ctx->pinned = rows;
    if (slot_find(ctx, TERSE_KEY_REG) != NULL) {
        slot_remove(ctx, slot_find(ctx, TERSE_KEY_REG)); /* rebuilt, pinned, at the next call */
    }
    return TERSE_OK;
}

/* TERSE_LAYOUT: lines "count rows cols name" in buffer order ('#' starts a comment; rows and
 * cols 0 for a flat tensor; the name is optional). */
terse_status_t
terse__ctx_set_layout(terse_ctx_t *ctx, const char *pattern)
{
    char file[1024], line[512], name[TERSE_NAME_MAX];
    unsigned long long c, r, k;
    size_t cap = 0, lineno = 0;
    terse_status_t status = TERSE_OK;
    FILE *f;
    int n;

    TERSE_CHECK(terse__path_expand(pattern, ctx->rank, file, sizeof(file)));
    free(ctx->lay_count);
    free(ctx->lay_rows);
    free(ctx->lay_cols);
    free(ctx->lay_name);
    ctx->lay_count = ctx->lay_rows = ctx->lay_cols = NULL;
    ctx->lay_name  = NULL;
    ctx->lay_n = ctx->lay_total = 0;
    f = fopen(file, "r");
    if (f == NULL) {
        terse_error(TERSE_LOG_COMM, "TERSE_LAYOUT: cannot open %s: %m", file);
        return TERSE_ERR_INVALID;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char *h = strchr(line, '#');
        ++lineno;
        if (h != NULL) {
            *h = '\0';
        }
        name[0] = '\0';
        n = sscanf(line, "%llu %llu %llu %63s", &c, &r, &k, name);
        if (n <= 0) {
            continue;
        }
        if ((n < 3) || (c == 0) || ((r * k != c) && !((r == 0) && (k == 0)))) {
            terse_error(TERSE_LOG_COMM, "TERSE_LAYOUT %s line %zu: expected 'count rows cols "
                        "[name]' with rows x cols equal to count (or 0 0)", file, lineno);
            status = TERSE_ERR_INVALID;
            break;
        }
        if (ctx->lay_n == cap) {
            size_t nc = TERSE_MAX(2 * cap, 16);
            void *a = realloc(ctx->lay_count, nc * sizeof(size_t)), *b = NULL, *d = NULL, *e = NULL;
            if (a != NULL) {
                ctx->lay_count = a;
                b = realloc(ctx->lay_rows, nc * sizeof(size_t));
            }
            if (b != NULL) {
                ctx->lay_rows = b;
                d = realloc(ctx->lay_cols, nc * sizeof(size_t));
            }
            if (d != NULL) {
                ctx->lay_cols = d;
                e = realloc(ctx->lay_name, nc * sizeof(*ctx->lay_name));
            }
            if (e == NULL) {
                status = TERSE_ERR_NOMEM;
                break;
            }
            ctx->lay_name = e;
            cap           = nc;
        }
        ctx->lay_count[ctx->lay_n] = (size_t)c;
        ctx->lay_rows[ctx->lay_n]  = (size_t)r;
        ctx->lay_cols[ctx->lay_n]  = (size_t)k;
        if (name[0] != '\0') {
            snprintf(ctx->lay_name[ctx->lay_n], TERSE_NAME_MAX, "%s", name);
        } else {
            snprintf(ctx->lay_name[ctx->lay_n], TERSE_NAME_MAX, "layer%zu", ctx->lay_n);
        }
        ctx->lay_total += (size_t)c;
        ctx->lay_n++;
    }
    fclose(f);
    if ((status == TERSE_OK) && (ctx->lay_n == 0)) {
        terse_error(TERSE_LOG_COMM, "TERSE_LAYOUT %s holds no layer", file);
        status = TERSE_ERR_INVALID;
    }
    return status;
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

    if (ctx->dev != NULL) {
        TERSE_CHECK(ctx->dev->passthrough(ctx, sendbuf, recvbuf, count, dtype, scale,
                                          ctx->stream));
        ++ctx->stats.passthrough;
        return TERSE_OK;
    }
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

/* The registered layers' plan when TERSE_PLAN pins one: binds the file's rows once. */
static void
ctx_bind_pinned(terse_ctx_t *ctx)
{
    terse_plan_t plan;
    size_t l;

    if ((ctx->pinned.nlayers == 0) || (ctx->nreg == 0)) {
        return;
    }
    if (terse__sched_plan_bind(&ctx->pinned, ctx->nreg, ctx->reg_count,
                               (const char *const *)NULL, &plan) != TERSE_OK) {
        /* every rank holding the same file fails alike; others disagree in the agreement */
        terse_error(TERSE_LOG_SCHED, "TERSE_PLAN does not fit the %zu registered layers: "
                    "sending them uncompressed", ctx->nreg);
        for (l = 0; l < ctx->nreg; ++l) {
            ctx->plan[l] = (terse_cmp_spec_t){terse__cmp_find("none"), 0.0, 0};
        }
    } else {
        for (l = 0; l < ctx->nreg; ++l) {
            const terse_cmp_ops_t *ops = sched_fam_ops(plan.layer[l].fam);
            ctx->plan[l] = (terse_cmp_spec_t){(ops != NULL) ? ops : terse__cmp_find("none"),
                                              (ops != NULL) ? plan.layer[l].param : 0.0, 0};
        }
        terse_info(TERSE_LOG_SCHED, "TERSE_PLAN pins plan %016llx", (unsigned long long)
                   terse__sched_plan_checksum(&plan));
        terse__sched_plan_free(&plan);
    }
    terse__sched_plan_free(&ctx->pinned);
    ctx->auto_reg = 0;
}

/* Builds the slot of a key: its layer map (registered layers, TERSE_LAYOUT, fixed-size
 * segments in auto mode, or one flat layer) and its first plan (none while the scheduler
 * warms up). */
static terse_status_t
ctx_build_slot(terse_ctx_t *ctx, uint64_t key, size_t count, terse_dtype_t dtype,
               terse_slot_t **slot_p)
{
    const size_t *counts = &count, *rows = NULL, *cols = NULL;
    const char (*names)[TERSE_NAME_MAX] = NULL;
    size_t nl = 1, l, *seg = NULL;
    terse_cmp_spec_t *specs;
    terse_status_t status;
    int sched = ctx->auto_unreg;

    if (key == TERSE_KEY_REG) {
        ctx_bind_pinned(ctx);
        nl     = ctx->nreg;
        counts = ctx->reg_count;
        rows   = ctx->reg_rows;
        cols   = ctx->reg_cols;
        names  = (const char (*)[TERSE_NAME_MAX])ctx->reg_name;
        sched  = ctx->auto_reg;
    } else if ((ctx->lay_n > 0) && (count == ctx->lay_total)) {
        nl     = ctx->lay_n;
        counts = ctx->lay_count;
        rows   = ctx->lay_rows;
        cols   = ctx->lay_cols;
        names  = (const char (*)[TERSE_NAME_MAX])ctx->lay_name;
    } else if (sched && (ctx->sched_segment > 0)) {
        /* whole quant buckets per segment, so segment boundaries do not cut buckets */
        size_t per = TERSE_ALIGN_UP(TERSE_MAX(ctx->sched_segment / terse__esize(dtype),
                                              (size_t)1),
                                    (size_t)ctx->cfg->QUANT_BUCKET);
        nl  = TERSE_DIV_UP(count, per);
        seg = calloc(nl, sizeof(*seg));
        if (seg == NULL) {
            return TERSE_ERR_NOMEM;
        }
        for (l = 0; l < nl; ++l) {
            seg[l] = TERSE_MIN(per, count - l * per);
        }
        counts = seg;
    }
    specs = calloc(TERSE_MAX(nl, 1), sizeof(*specs));
    if (specs == NULL) {
        free(seg);
        return TERSE_ERR_NOMEM;
    }
    for (l = 0; l < nl; ++l) {
        if (sched) {
            specs[l] = (terse_cmp_spec_t){terse__cmp_find("none"), 0.0, 0};
        } else {
            specs[l] = (key == TERSE_KEY_REG) ? ctx->plan[l] : ctx->uniform;
        }
    }
    status = slot_build(ctx, key, nl, counts, rows, cols, specs, names, dtype, slot_p);
    free(specs);
    free(seg);
    TERSE_CHECK(status);
    (*slot_p)->sched     = sched;
    (*slot_p)->next_plan = (uint32_t)TERSE_MAX(ctx->sched_warmup, 1) - 1;
    return TERSE_OK;
}

static terse_status_t
ctx_get_slot(terse_ctx_t *ctx, uint64_t key, size_t count, terse_dtype_t dtype,
             terse_slot_t **slot_p)
{
    terse_slot_t *slot = slot_find(ctx, key);

    if ((slot != NULL) && ((slot->count != count) || (slot->dtype != dtype))) {
        terse_info(TERSE_LOG_COMM, "layout of key %llx changed: rebuilding (residuals reset)",
                   (unsigned long long)key);
        slot_remove(ctx, slot);
        slot = NULL;
    }
    if (slot == NULL) {
        TERSE_CHECK(ctx_build_slot(ctx, key, count, dtype, &slot));
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
    double t0, norm_all = 0.0;
    uint64_t bytes0;
    uint32_t step;
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
    t0     = terse__time_now();
    bytes0 = ctx->tp->bytes_sent;
    if ((slot->pending != NULL) && (slot->step == slot->switch_step)) {
        TERSE_CHECK(sched_switch(ctx, &slot));
    }
    if (slot->agreed == 0) {
        TERSE_CHECK(slot_agree(ctx, slot));
    }
    if (slot->agreed < 0) {
        TERSE_CHECK(ctx_passthrough(ctx, sendbuf, recvbuf, count, dtype, scale));
        return TERSE_ERR_MISMATCH;
    }
    step = slot->step;
    if ((slot->job != NULL) && (slot->step == slot->join_step)) {
        TERSE_CHECK(sched_join(ctx, slot)); /* an asynchronous re-plan's collective half */
    }
    if (slot->sched && (ctx->dev == NULL) && (ctx->cfg->ERROR_MEASURE == 0) &&
        (slot->step < slot->next_plan) &&
        (slot->next_plan - slot->step < (uint32_t)ctx->cfg->STATS_WINDOW)) {
        sched_win_step(ctx, slot, sendbuf, dtype);
    }
    if (slot->sched && (slot->step == slot->next_plan)) {
        /* the statistics read the input before any output is written (recvbuf may be
         * sendbuf); agreed slots only, so every rank of this slot is here */
        const void *stats_in = sendbuf;
        if (ctx->dev != NULL) { /* the statistics are host code: one copy, re-plan steps only */
            TERSE_CHECK(ctx->dev->stage(ctx, sendbuf, count * terse__esize(dtype), ctx->stream,
                                        &stats_in));
        }
        TERSE_CHECK(sched_replan(ctx, slot, stats_in, dtype));
    }
    if (((size_t)slot->nclass[TERSE_CLASS_NATIVE] == slot->nlayers) && (slot->hier == NULL)) {
        /* nothing to compress: a plain (deterministic) sum */
        terse_call_t nc = {ctx->tp, sendbuf, recvbuf, dtype, scale, ctx->seed, slot->step,
                           0, 0.0, 0, ctx->stream};
        TERSE_CHECK((slot->dev != NULL) ? slot->dev->run(ctx, slot, &nc)
                                        : terse__algo_native_run(slot, &nc));
        ++ctx->stats.passthrough;
        ++slot->step;
        if (ctx->stats_file != NULL) {
            sched_telemetry(ctx, slot, step, terse__time_now() - t0,
                            ctx->tp->bytes_sent - bytes0, 0.0, 0.0, 1);
        }
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
            if ((slot->layers[l].cls != TERSE_CLASS_NATIVE) && (slot->dev == NULL)) {
                norm += ctx_sq_norm((const unsigned char *)sendbuf +
                                        slot->layers[l].offset * terse__esize(dtype),
                                    dtype, slot->layers[l].count);
            }
        }
        if (slot->hier != NULL) {
            /* inside the node, then between nodes (algo_hier.c) */
            TERSE_CHECK(terse__hier_run(ctx, slot, &call));
        } else if (slot->dev != NULL) {
            call.stream = ctx->stream; /* device buffers: everything on the caller's stream */
            TERSE_CHECK(slot->dev->run(ctx, slot, &call));
        } else {
            /* classes in a fixed order: every rank sends the same sequence of messages */
            TERSE_CHECK(terse__algo_summable_run(slot, &call));
            TERSE_CHECK(terse__algo_requant_run(slot, &call));
            TERSE_CHECK(terse__algo_sparse_run(slot, &call));
            TERSE_CHECK(terse__algo_native_run(slot, &call));
        }
        ctx->stats.last_rel_err = (norm > 0.0) ? sqrt(call.sq_err / norm) : 0.0;
        norm_all                = norm;
    }
    ++slot->step;
    if ((size_t)slot->nclass[TERSE_CLASS_NATIVE] == slot->nlayers) {
        ++ctx->stats.passthrough; /* hierarchical, nothing compressed */
    } else {
        ++ctx->stats.steps;
    }
    if (call.nonfinite > 0) {
        ++ctx->stats.nonfinite_steps;
    }
    if (ctx->stats_file != NULL) {
        sched_telemetry(ctx, slot, step, terse__time_now() - t0, ctx->tp->bytes_sent - bytes0,
                        call.sq_err, norm_all, 0);
    }
    return TERSE_OK;
}

terse_status_t
terse_allreduce(terse_ctx_t *ctx, const void *sendbuf, void *recvbuf, size_t count,
                terse_dtype_t dtype, terse_op_t op, terse_mem_t mem, terse_stream_t stream)
{
    uint64_t key;

    if ((ctx == NULL) || (((sendbuf == NULL) || (recvbuf == NULL)) && (count > 0)) ||
        ((unsigned)dtype >= TERSE_DTYPE_LAST) || ((unsigned)op >= TERSE_OP_LAST) ||
        ((unsigned)mem >= TERSE_MEM_LAST)) {
        return TERSE_ERR_INVALID;
    }
    if (mem != ((ctx->dev != NULL) ? TERSE_MEM_CUDA : TERSE_MEM_HOST)) {
        terse_error(TERSE_LOG_COMM, (mem == TERSE_MEM_CUDA) ?
                    "device buffers need a context over TERSE_TRANSPORT_NCCL" :
                    "a context over NCCL takes device buffers only");
        return TERSE_ERR_UNSUPPORTED;
    }
    ctx->stream = stream;
    if ((ctx->dev != NULL) && (dtype == TERSE_FLOAT64)) {
        /* doubles are not compressed on the device path */
        ctx->stats.bytes_plain += (uint64_t)(ctx->nranks - 1) * count * 16 / (uint64_t)ctx->nranks;
        return ctx_passthrough(ctx, sendbuf, recvbuf, count, dtype,
                               (op == TERSE_OP_AVG) ? 1.0f / (float)ctx->nranks : 1.0f);
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
    ctx->auto_reg = 0; /* a pinned plan: the scheduler stops re-planning */
    terse__sched_plan_free(&ctx->pinned);
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
/*
 * One file per rank (binary, this machine's byte order):
 *   head                 state_head_t
 *   specs                nlayers terse_plan_entry_t: the plan in force
 *   pending specs        nlayers entries when head.pending (a plan solved, not yet in force)
 *   cost model           terse_sched_cost_t when head.cost_ready (so re-plans after a restart
 *                        solve on the same model)
 *   residuals            fb_total floats (sender), rq_total floats (chunk owners)
 *   compressor states    per layer: uint64 bytes, then that many bytes of the instance's
 *                        state_get (0 for families without state, native layers or no
 *                        slot): PowerSGD's Q, so a restart continues bitwise identically;
 *                        then uint64 n, uint32 steps and n doubles: the slot's window sums
 *                        of TERSE_ERROR_MEASURE=adam (n 0: none), so a restart plans alike
 *   other slots          uint64 count, then per slot that is not the registered layout
 *                        (the MPI shim's call-cycle places, unregistered counts):
 *                        uint64 key, uint32 dtype, uint32 nlayers, per layer uint64 count,
 *                        rows, cols and a name of TERSE_NAME_MAX bytes, the plan in force
 *                        (entries), uint32 step, sched, next_plan, switch_step, pending,
 *                        pending entries, the solved and pending plans, uint64 fb_total,
 *                        rq_total, the residuals, the compressor states. A load builds
 *                        these slots at once; the first call of each agrees on it as usual.
 * Random streams are counters of (seed, layer, step, rank): saving the step and the seed
 * restores them.
 */
#define TERSE_STATE_MAGIC "TERSEST4"

typedef struct state_head {
    char     magic[8];
    uint32_t version;
    uint32_t nranks;
    uint32_t rank;
    uint32_t nlayers;
    uint64_t seed;
    uint64_t layout;      /* hash of the registered counts and shapes */
    uint32_t step;
    uint32_t sched;       /* the scheduler plans these layers */
    uint32_t next_plan;
    uint32_t switch_step;
    uint32_t pending;
    uint32_t cost_ready;
    uint64_t plan_sum;    /* checksum of the specs in force (agreed across ranks on load) */
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

static uint64_t
state_specs_hash(const terse_plan_entry_t *e, size_t n)
{
    uint64_t h = 0x706c616eull;
    size_t l;

    for (l = 0; l < n; ++l) {
        h = terse__hash64(e[l].compressor, strlen(e[l].compressor), h);
        h = terse__hash64(&e[l].param, sizeof(e[l].param), h);
    }
    return h;
}

static void
state_entries(const terse_cmp_spec_t *specs, size_t n, terse_plan_entry_t *e)
{
    size_t l;

    memset(e, 0, n * sizeof(*e));
    for (l = 0; l < n; ++l) {
        e[l].layer = (int)l;
        snprintf(e[l].compressor, sizeof(e[l].compressor), "%s", specs[l].ops->name);
        e[l].param = specs[l].param;
    }
}

static terse_status_t
state_specs(const terse_plan_entry_t *e, size_t n, terse_cmp_spec_t *specs)
{
    size_t l;

    for (l = 0; l < n; ++l) {
        char text[TERSE_NAME_MAX * 2];
        const terse_cmp_ops_t *ops;
        char c[TERSE_NAME_MAX];
        memcpy(c, e[l].compressor, TERSE_NAME_MAX);
        c[TERSE_NAME_MAX - 1] = '\0';
        ops = terse__cmp_find(c);
        if (ops == NULL) {
            return TERSE_ERR_INVALID;
        }
        terse__cmp_spec_format(ops, e[l].param, text, sizeof(text));
        if (terse__cmp_spec_parse(text, &specs[l], NULL, 0) != TERSE_OK) {
            return TERSE_ERR_INVALID;
        }
    }
    return TERSE_OK;
}

/* The solved plan (kept for telemetry and its checksum): its count, rows, then totals. */
static int
state_write_plan(FILE *f, const terse_plan_t *plan)
{
    uint64_t n = plan->nlayers;
    double tot[4] = {plan->predicted_time, plan->wire_bytes, plan->sq_err, plan->budget};

    return (fwrite(&n, sizeof(n), 1, f) == 1) &&
           ((plan->nlayers == 0) ||
            (fwrite(plan->layer, sizeof(*plan->layer), plan->nlayers, f) == plan->nlayers)) &&
           (fwrite(tot, sizeof(tot), 1, f) == 1) &&
           (fwrite(&plan->wire_set, sizeof(plan->wire_set), 1, f) == 1);
}

static int
state_read_plan(FILE *f, size_t nlayers, terse_plan_t *plan)
{
    uint64_t n;
    double tot[4];

    memset(plan, 0, sizeof(*plan));
    if ((fread(&n, sizeof(n), 1, f) != 1) || ((n != 0) && (n != nlayers))) {
        return 0;
    }
    if ((n > 0) && (terse__sched_plan_alloc((size_t)n, plan) != TERSE_OK)) {
        return 0;
    }
    if (((n > 0) && (fread(plan->layer, sizeof(*plan->layer), (size_t)n, f) != n)) ||
        (fread(tot, sizeof(tot), 1, f) != 1) ||
        (fread(&plan->wire_set, sizeof(plan->wire_set), 1, f) != 1)) {
        terse__sched_plan_free(plan);
        return 0;
    }
    plan->predicted_time = tot[0];
    plan->wire_bytes     = tot[1];
    plan->sq_err         = tot[2];
    plan->budget         = tot[3];
    return 1;
}

/* The compressor states section (format above). */
static int
state_write_cmp(FILE *f, const terse_slot_t *slot, size_t n)
{
    size_t l;
    int ok = 1;

    for (l = 0; ok && (l < n); ++l) {
        const terse_layer_state_t *ly = (slot != NULL) ? &slot->layers[l] : NULL;
        uint64_t bytes = 0;
        size_t b = 0;
        void *buf = NULL;
        if ((ly != NULL) && (ly->cmp != NULL) && (ly->ops->state_get != NULL) &&
            (ly->ops->state_size(ly->cmp, &b) == TERSE_OK) && (b > 0)) {
            buf = malloc(b);
            if ((buf == NULL) || (ly->ops->state_get(ly->cmp, buf, b) != TERSE_OK)) {
                free(buf);
                return 0;
            }
            bytes = b;
        }
        ok = (fwrite(&bytes, sizeof(bytes), 1, f) == 1) &&
             ((bytes == 0) || (fwrite(buf, 1, b, f) == b));
        free(buf);
    }
    if (ok) { /* the scheduler's window sums */
        const uint64_t wn = ((slot != NULL) && (slot->win != NULL)) ? slot->win_len : 0;
        const uint32_t ws = (wn > 0) ? slot->win_steps : 0;
        ok = (fwrite(&wn, sizeof(wn), 1, f) == 1) && (fwrite(&ws, sizeof(ws), 1, f) == 1) &&
             ((wn == 0) || (fwrite(slot->win, sizeof(double), (size_t)wn, f) == wn));
    }
    return ok;
}

/* Reads the compressor states section into the slot's instances. */
static int
state_read_cmp(FILE *f, terse_slot_t *slot, size_t n)
{
    size_t l;

    for (l = 0; l < n; ++l) {
        terse_layer_state_t *ly = &slot->layers[l];
        uint64_t bytes;
        void *buf;
        int ok;
        if (fread(&bytes, sizeof(bytes), 1, f) != 1) {
            return 0;
        }
        if (bytes == 0) {
            continue;
        }
        if ((ly->cmp == NULL) || (ly->ops->state_set == NULL) || (bytes > ((uint64_t)1 << 40))) {
            return 0;
        }
        buf = malloc((size_t)bytes);
        ok  = (buf != NULL) && (fread(buf, 1, (size_t)bytes, f) == bytes) &&
              (ly->ops->state_set(ly->cmp, buf, (size_t)bytes) == TERSE_OK);
        free(buf);
        if (!ok) {
            return 0;
        }
    }
    { /* the scheduler's window sums: the same layout or none */
        uint64_t wn;
        uint32_t ws;
        if ((fread(&wn, sizeof(wn), 1, f) != 1) || (fread(&ws, sizeof(ws), 1, f) != 1)) {
            return 0;
        }
        if (wn == 0) {
            return 1;
        }
        if (wn != sched_win_len(slot, n)) {
            return 0;
        }
        if (slot->win == NULL) {
            slot->win = malloc((size_t)wn * sizeof(double));
            if (slot->win == NULL) {
                return 0;
            }
            slot->win_len = (size_t)wn;
            slot->mem_bytes += (size_t)wn * sizeof(double);
        }
        slot->win_steps = ws;
        return fread(slot->win, sizeof(double), (size_t)wn, f) == wn;
    }
}

/* Hands a loaded slot its scheduler position and plans. Ownership of *pending_p (when
 * has_pending), *plan and *pplan moves to the slot; they are left NULL / zeroed for the
 * caller's cleanup. */
static void
state_slot_adopt(terse_slot_t *slot, uint32_t step, uint32_t sched, uint32_t next_plan,
                 uint32_t switch_step, uint32_t has_pending, terse_cmp_spec_t **pending_p,
                 terse_plan_t *plan, terse_plan_t *pplan)
{
    slot->step        = step;
    slot->sched       = (int)sched;
    slot->next_plan   = next_plan;
    slot->switch_step = switch_step;
    if (has_pending) {
        slot->pending = *pending_p;
        *pending_p    = NULL;
    }
    slot->plan         = *plan;
    slot->pending_plan = *pplan;
    slot->plan_sum     = (plan->nlayers > 0) ? terse__sched_plan_checksum(plan) : 0;
    memset(plan, 0, sizeof(*plan));
    memset(pplan, 0, sizeof(*pplan));
}

typedef struct state_slot_head {
    uint64_t key;
    uint32_t dtype;
    uint32_t nlayers;
    uint32_t step, sched, next_plan, switch_step, pending, pad;
    uint64_t fb_total, rq_total;
} state_slot_head_t;

/* The "other slots" section (format above). */
static int
state_write_slots(FILE *f, const terse_ctx_t *ctx)
{
    const terse_slot_t *sl;
    uint64_t count = 0;
    int ok;

    for (sl = ctx->slots; sl != NULL; sl = sl->next) {
        count += (sl->key != TERSE_KEY_REG) && (sl->nlayers > 0);
    }
    ok = (fwrite(&count, sizeof(count), 1, f) == 1);
    for (sl = ctx->slots; ok && (sl != NULL); sl = sl->next) {
        state_slot_head_t h;
        terse_plan_entry_t *e;
        size_t l, nl = sl->nlayers;
        if ((sl->key == TERSE_KEY_REG) || (nl == 0)) {
            continue;
        }
        e = calloc(2 * nl, sizeof(*e));
        if (e == NULL) {
            return 0;
        }
        memset(&h, 0, sizeof(h));
        h.key         = sl->key;
        h.dtype       = (uint32_t)sl->dtype;
        h.nlayers     = (uint32_t)nl;
        h.step        = sl->step;
        h.sched       = (uint32_t)sl->sched;
        h.next_plan   = sl->next_plan;
        h.switch_step = sl->switch_step;
        h.pending     = (sl->pending != NULL);
        h.fb_total    = sl->alloc_ok ? sl->fb.total : 0;
        h.rq_total    = sl->alloc_ok ? sl->rq_fb.total : 0;
        state_entries(sl->specs, nl, e);
        if (sl->pending != NULL) {
            state_entries(sl->pending, nl, e + nl);
        }
        ok = (fwrite(&h, sizeof(h), 1, f) == 1);
        for (l = 0; ok && (l < nl); ++l) {
            uint64_t d[3] = {sl->layers[l].count, sl->layers[l].rows, sl->layers[l].cols};
            ok = (fwrite(d, sizeof(d), 1, f) == 1) &&
                 (fwrite(sl->names[l], TERSE_NAME_MAX, 1, f) == 1);
        }
        ok = ok && (fwrite(e, sizeof(*e), nl, f) == nl) &&
             (!h.pending || (fwrite(e + nl, sizeof(*e), nl, f) == nl)) &&
             state_write_plan(f, &sl->plan) && state_write_plan(f, &sl->pending_plan) &&
             ((h.fb_total == 0) ||
              (fwrite(sl->fb.data, sizeof(float), h.fb_total, f) == h.fb_total)) &&
             ((h.rq_total == 0) ||
              (fwrite(sl->rq_fb.data, sizeof(float), h.rq_total, f) == h.rq_total)) &&
             state_write_cmp(f, sl, nl);
        free(e);
    }
    return ok;
}

static int state_read_cmp(FILE *f, terse_slot_t *slot, size_t n);

/* Reads one slot of the "other slots" section and puts it in the context (replacing a slot
 * of the same key). Returns TERSE_OK, or an error (logged by the caller). */
static terse_status_t
state_read_slot(terse_ctx_t *ctx, FILE *f)
{
    state_slot_head_t h;
    terse_plan_entry_t *e = NULL;
    terse_cmp_spec_t *specs = NULL, *pending = NULL;
    size_t *dims = NULL, l, nl;
    char (*names)[TERSE_NAME_MAX] = NULL;
    terse_slot_t *slot = NULL, *old;
    terse_plan_t plan, pplan;
    terse_status_t status = TERSE_ERR_INVALID;

    memset(&plan, 0, sizeof(plan));
    memset(&pplan, 0, sizeof(pplan));
    if ((fread(&h, sizeof(h), 1, f) != 1) || (h.nlayers == 0) || (h.nlayers > (1u << 24)) ||
        (h.key == TERSE_KEY_REG) || (h.dtype > (uint32_t)TERSE_FLOAT64)) {
        return TERSE_ERR_INVALID;
    }
    nl      = h.nlayers;
    e       = calloc(2 * nl, sizeof(*e));
    specs   = calloc(nl, sizeof(*specs));
    pending = calloc(nl, sizeof(*pending));
    dims    = calloc(3 * nl, sizeof(*dims));
    names   = calloc(nl, sizeof(*names));
    if ((e == NULL) || (specs == NULL) || (pending == NULL) || (dims == NULL) ||
        (names == NULL)) {
        status = TERSE_ERR_NOMEM;
        goto out;
    }
    for (l = 0; l < nl; ++l) {
        uint64_t d[3];
        if ((fread(d, sizeof(d), 1, f) != 1) ||
            (fread(names[l], TERSE_NAME_MAX, 1, f) != 1)) {
            goto out;
        }
        names[l][TERSE_NAME_MAX - 1] = '\0';
        dims[l]          = (size_t)d[0];
        dims[nl + l]     = (size_t)d[1];
        dims[2 * nl + l] = (size_t)d[2];
    }
    if ((fread(e, sizeof(*e), nl, f) != nl) ||
        (h.pending && (fread(e + nl, sizeof(*e), nl, f) != nl)) ||
        (state_specs(e, nl, specs) != TERSE_OK) ||
        (h.pending && (state_specs(e + nl, nl, pending) != TERSE_OK)) ||
        !state_read_plan(f, nl, &plan) || !state_read_plan(f, nl, &pplan)) {
        goto out;
    }
    old = slot_find(ctx, h.key);
    if (old != NULL) {
        slot_remove(ctx, old);
    }
    TERSE_CHECK_GOTO(slot_build(ctx, h.key, nl, dims, dims + nl, dims + 2 * nl, specs,
                                (const char (*)[TERSE_NAME_MAX])names, (terse_dtype_t)h.dtype,
                                &slot),
                     status, out);
    slot->next = ctx->slots;
    ctx->slots = slot;
    status     = TERSE_ERR_INVALID;
    if ((h.fb_total != (slot->alloc_ok ? slot->fb.total : 0)) ||
        (h.rq_total != (slot->alloc_ok ? slot->rq_fb.total : 0)) ||
        ((h.fb_total > 0) &&
         (fread(slot->fb.data, sizeof(float), h.fb_total, f) != h.fb_total)) ||
        ((h.rq_total > 0) &&
         (fread(slot->rq_fb.data, sizeof(float), h.rq_total, f) != h.rq_total)) ||
        !state_read_cmp(f, slot, nl)) {
        goto out;
    }
    state_slot_adopt(slot, h.step, h.sched, h.next_plan, h.switch_step, h.pending,
                     &pending, &plan, &pplan);
    status = TERSE_OK;

out:
    terse__sched_plan_free(&plan);
    terse__sched_plan_free(&pplan);
    free(names);
    free(dims);
    free(pending);
    free(specs);
    free(e);
    return status;
}

terse_status_t
terse_state_save(const terse_ctx_t *ctx, const char *path)
{
    const terse_slot_t *slot;
    terse_plan_entry_t *e = NULL;
    state_head_t head;
    char file[1024];
    FILE *f;
    size_t n;
    int ok;

    if ((ctx == NULL) || (path == NULL)) {
        return TERSE_ERR_INVALID;
    }
    if (ctx->hier != NULL) {
        /* the residuals live in the hierarchy's per-piece sub-slots: not in the format yet */
        terse_error(TERSE_LOG_COMM, "saving state is not supported with the hierarchical "
                    "allreduce yet (TERSE_HIERARCHY=flat can save)");
        return TERSE_ERR_UNSUPPORTED;
    }
    for (slot = ctx->slots; slot != NULL; slot = slot->next) {
        if (slot->job != NULL) {
            /* its statistics are on a helper thread and not in the format: a state saved
             * now would re-plan differently after a restart */
            terse_error(TERSE_LOG_COMM, "saving state inside an asynchronous re-plan (step "
                        "%u, joined at %u) is not supported: save at another step, or set "
                        "TERSE_STATS_ASYNC=off", slot->step, slot->join_step);
            return TERSE_ERR_UNSUPPORTED;
        }
    }
    TERSE_CHECK(terse__path_expand(path, ctx->rank, file, sizeof(file)));
    n    = ctx->nreg;
    slot = slot_find((terse_ctx_t *)ctx, TERSE_KEY_REG);
    e    = calloc(2 * TERSE_MAX(n, 1), sizeof(*e));
    if (e == NULL) {
        return TERSE_ERR_NOMEM;
    }
    memset(&head, 0, sizeof(head));
    memcpy(head.magic, TERSE_STATE_MAGIC, 8);
    head.version     = TERSE_VERSION_CODE;
    head.nranks      = (uint32_t)ctx->nranks;
    head.rank        = (uint32_t)ctx->rank;
    head.nlayers     = (uint32_t)n;
    head.seed        = ctx->seed;
    head.layout      = state_layout_hash(ctx);
    head.cost_ready  = (uint32_t)ctx->cost_ready;
    if (slot != NULL) {
        state_entries(slot->specs, n, e);
        head.step        = slot->step;
        head.sched       = (uint32_t)slot->sched;
        head.next_plan   = slot->next_plan;
        head.switch_step = slot->switch_step;
        head.pending     = (slot->pending != NULL);
        if (slot->pending != NULL) {
            state_entries(slot->pending, n, e + n);
        }
        head.fb_total = slot->alloc_ok ? slot->fb.total : 0;
        head.rq_total = slot->alloc_ok ? slot->rq_fb.total : 0;
    } else {
        terse_cmp_spec_t *sp = calloc(TERSE_MAX(n, 1), sizeof(*sp));
        size_t l;
        if (sp == NULL) {
            free(e);
            return TERSE_ERR_NOMEM;
        }
        for (l = 0; l < n; ++l) {
            sp[l] = ctx->auto_reg ? (terse_cmp_spec_t){terse__cmp_find("none"), 0.0, 0}
                                  : ctx->plan[l];
        }
        state_entries(sp, n, e);
        free(sp);
        head.sched     = (uint32_t)ctx->auto_reg;
        head.next_plan = (uint32_t)TERSE_MAX(ctx->sched_warmup, 1) - 1;
    }
    head.plan_sum = state_specs_hash(e, n);
    f = fopen(file, "wb");
    if (f == NULL) {
        terse_error(TERSE_LOG_COMM, "cannot write state file %s: %m", file);
        free(e);
        return TERSE_ERR_SYSTEM;
    }
    ok = (fwrite(&head, sizeof(head), 1, f) == 1) && (fwrite(e, sizeof(*e), n, f) == n);
    if (ok && head.pending) {
        ok = (fwrite(e + n, sizeof(*e), n, f) == n);
    }
    if (ok && head.cost_ready) {
        ok = (fwrite(&ctx->cost, sizeof(ctx->cost), 1, f) == 1);
    }
    if (ok) {
        static const terse_plan_t none;
        ok = state_write_plan(f, (slot != NULL) ? &slot->plan : &none) &&
             state_write_plan(f, (slot != NULL) ? &slot->pending_plan : &none);
    }
    if (ok && (head.fb_total > 0)) {
        ok = (fwrite(slot->fb.data, sizeof(float), head.fb_total, f) == head.fb_total);
    }
    if (ok && (head.rq_total > 0)) {
        ok = (fwrite(slot->rq_fb.data, sizeof(float), head.rq_total, f) == head.rq_total);
    }
    if (ok) {
        ok = state_write_cmp(f, slot, n) && state_write_slots(f, ctx);
    }
    free(e);
    if ((fclose(f) != 0) || !ok) {
        terse_error(TERSE_LOG_COMM, "failed to write state file %s", file);
        return TERSE_ERR_SYSTEM;
    }
    return TERSE_OK;
}

/* Reads and checks this rank's file and builds the registered slot from it (local). */
static terse_status_t
state_load_local(terse_ctx_t *ctx, const char *file, uint64_t *sum_p)
{
    terse_plan_entry_t *e = NULL;
    terse_cmp_spec_t *specs = NULL, *pending = NULL;
    terse_sched_cost_t cost;
    terse_plan_t plan, pplan;
    terse_slot_t *slot, *old;
    terse_status_t status = TERSE_OK;
    state_head_t head;
    size_t n = ctx->nreg;
    FILE *f;

    memset(&plan, 0, sizeof(plan));
    memset(&pplan, 0, sizeof(pplan));
    f = fopen(file, "rb");
    if (f == NULL) {
        terse_error(TERSE_LOG_COMM, "cannot read state file %s: %m", file);
        return TERSE_ERR_SYSTEM;
    }
    if ((fread(&head, sizeof(head), 1, f) != 1) ||
        (memcmp(head.magic, TERSE_STATE_MAGIC, 8) != 0)) {
        terse_error(TERSE_LOG_COMM, "%s is not a terse state file (of this version)", file);
        status = TERSE_ERR_INVALID;
        goto out;
    }
    if ((head.version != TERSE_VERSION_CODE) || (head.nranks != (uint32_t)ctx->nranks) ||
        (head.rank != (uint32_t)ctx->rank) || (head.nlayers != n) ||
        (head.layout != state_layout_hash(ctx))) {
        terse_error(TERSE_LOG_COMM, "state file %s was saved by another version, world size, "
                    "rank or layer layout (%u ranks, %u layers; here %d ranks, %zu layers)",
                    file, head.nranks, head.nlayers, ctx->nranks, n);
        status = TERSE_ERR_MISMATCH;
        goto out;
    }
    e       = calloc(2 * TERSE_MAX(n, 1), sizeof(*e));
    specs   = calloc(TERSE_MAX(n, 1), sizeof(*specs));
    pending = calloc(TERSE_MAX(n, 1), sizeof(*pending));
    if ((e == NULL) || (specs == NULL) || (pending == NULL)) {
        status = TERSE_ERR_NOMEM;
        goto out;
    }
    if ((fread(e, sizeof(*e), n, f) != n) ||
        (head.pending && (fread(e + n, sizeof(*e), n, f) != n)) ||
        (head.cost_ready && (fread(&cost, sizeof(cost), 1, f) != 1)) ||
        (state_specs(e, n, specs) != TERSE_OK) ||
        (head.pending && (state_specs(e + n, n, pending) != TERSE_OK)) ||
        (state_specs_hash(e, n) != head.plan_sum) || !state_read_plan(f, n, &plan) ||
        !state_read_plan(f, n, &pplan)) {
        terse_error(TERSE_LOG_COMM, "state file %s is truncated or holds an unknown plan", file);
        status = TERSE_ERR_INVALID;
        goto out;
    }
    *sum_p = head.plan_sum;
    if (n == 0) {
        /* no registered layers (the MPI shim): only the other slots */
        if (head.cost_ready) {
            ctx->cost       = cost;
            ctx->cost_ready = 1;
        }
        ctx->seed = head.seed;
        goto other_slots;
    }
    /* build the registered slot from the saved plan */
    old = slot_find(ctx, TERSE_KEY_REG);
    if (old != NULL) {
        slot_remove(ctx, old);
    }
    memcpy(ctx->plan, specs, n * sizeof(*specs));
    ctx->auto_reg = (int)head.sched;
    terse__sched_plan_free(&ctx->pinned);
    TERSE_CHECK_GOTO(slot_build(ctx, TERSE_KEY_REG, n, ctx->reg_count, ctx->reg_rows,
                                ctx->reg_cols, specs,
                                (const char (*)[TERSE_NAME_MAX])ctx->reg_name, TERSE_FLOAT32,
                                &slot),
                     status, out);
    slot->next = ctx->slots;
    ctx->slots = slot;
    if (slot->alloc_ok && ((head.fb_total != slot->fb.total) ||
                           (head.rq_total != slot->rq_fb.total))) {
        terse_error(TERSE_LOG_COMM, "state file %s holds residuals of another plan", file);
        status = TERSE_ERR_MISMATCH;
        goto out;
    }
    if (slot->alloc_ok &&
        (((head.fb_total > 0) &&
          (fread(slot->fb.data, sizeof(float), head.fb_total, f) != head.fb_total)) ||
         ((head.rq_total > 0) &&
          (fread(slot->rq_fb.data, sizeof(float), head.rq_total, f) != head.rq_total)))) {
        terse_error(TERSE_LOG_COMM, "state file %s is truncated", file);
        status = TERSE_ERR_INVALID;
        goto out;
    }
    if (!state_read_cmp(f, slot, n)) {
        terse_error(TERSE_LOG_COMM, "state file %s: compressor state truncated or of another "
                    "plan", file);
        status = TERSE_ERR_INVALID;
        goto out;
    }
    state_slot_adopt(slot, head.step, head.sched, head.next_plan, head.switch_step, head.pending,
                     &pending, &plan, &pplan);
    if (head.cost_ready) {
        ctx->cost       = cost;
        ctx->cost_ready = 1;
    }
    ctx->seed   = head.seed;
    ctx->frozen = 1;

other_slots:
    {
        uint64_t k, nslots;
        if (fread(&nslots, sizeof(nslots), 1, f) != 1) {
            terse_error(TERSE_LOG_COMM, "state file %s is truncated", file);
            status = TERSE_ERR_INVALID;
            goto out;
        }
        for (k = 0; k < nslots; ++k) {
            status = state_read_slot(ctx, f);
            if (status != TERSE_OK) {
                terse_error(TERSE_LOG_COMM, "state file %s: slot %llu of %llu is truncated "
                            "or holds an unknown plan", file, (unsigned long long)k,
                            (unsigned long long)nslots);
                goto out;
            }
        }
    }

out:
    terse__sched_plan_free(&plan);
    terse__sched_plan_free(&pplan);
    free(pending);
    free(specs);
    free(e);
    fclose(f);
    return status;
}

terse_status_t
terse_state_load(terse_ctx_t *ctx, const char *path)
{
    terse_status_t status;
    uint64_t v[3], sum = 0;
    char file[1024];
    terse_slot_t *slot;

    if ((ctx == NULL) || (path == NULL)) {
        return TERSE_ERR_INVALID;
    }
    if (ctx->hier != NULL) { /* every rank alike: the hierarchy is the same everywhere */
        terse_error(TERSE_LOG_COMM, "loading state is not supported with the hierarchical "
                    "allreduce yet (TERSE_HIERARCHY=flat can load)");
        return TERSE_ERR_UNSUPPORTED;
    }
    status = terse__path_expand(path, ctx->rank, file, sizeof(file));
    if (status == TERSE_OK) {
        status = state_load_local(ctx, file, &sum);
    }
    /* collective: every rank loaded the same plan, or every rank refuses */
    v[0] = sum;
    v[1] = ~sum;
    v[2] = (status == TERSE_OK) ? 0 : 1;
    TERSE_CHECK(terse__tp_allreduce(ctx->tp, v, v, 3, TERSE_TP_MAX_U64));
    if ((status == TERSE_OK) && ((v[0] != sum) || (v[1] != ~sum) || (v[2] != 0))) {
        terse_error(TERSE_LOG_COMM, "state file %s: %s", file, (v[2] != 0)
                    ? "another rank could not load its state file"
                    : "ranks saved different plans (plan checksums differ)");
        status = TERSE_ERR_MISMATCH;
    }
    if (status != TERSE_OK) {
        /* nothing half-loaded stays: every layout starts afresh */
        while (ctx->slots != NULL) {
            slot = ctx->slots;
            slot_remove(ctx, slot);
        }
    }
    return status;
}
