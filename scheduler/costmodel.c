/*
 * The cost model of the planner (DESIGN.md section 5): per wire class and hierarchy level a
 * per-message latency alpha and a bus bandwidth, the bytes each class puts on the wire for p
 * ranks, and compress + decompress time. Latency is a cost of the SET of classes a bucket
 * uses (messages are fused per class per bucket), so it is priced per class set, not per
 * layer. Also: the family table (names, wire classes) and the documented payload formulas.
 */
#include <math.h>
#include <string.h>

#include "terse_sched.h"

static const char *const sched_fam_names[TERSE_SCHED_FAM_COUNT] = {
    "none", "cast", "quant", "sign", "topk", "randomk", "powersgd", "powersgd1", "topkt",
};

static const terse_sched_wire_t sched_fam_wire[TERSE_SCHED_FAM_COUNT] = {
    TERSE_SCHED_WIRE_NATIVE,   TERSE_SCHED_WIRE_SUMMABLE, TERSE_SCHED_WIRE_REQUANT,
    TERSE_SCHED_WIRE_REQUANT,  TERSE_SCHED_WIRE_SPARSE,   TERSE_SCHED_WIRE_SUMMABLE,
    TERSE_SCHED_WIRE_SUMMABLE, TERSE_SCHED_WIRE_SUMMABLE, TERSE_SCHED_WIRE_SPARSE,
};

const char *
terse__sched_fam_name(int fam)
{
    if ((fam < 0) || (fam >= TERSE_SCHED_FAM_COUNT)) {
        return NULL;
    }
    return sched_fam_names[fam];
}

int
terse__sched_fam_find(const char *name)
{
    int i;

    if (name == NULL) {
        return -1;
    }
    for (i = 0; i < TERSE_SCHED_FAM_COUNT; ++i) {
        if (strcmp(name, sched_fam_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

terse_sched_wire_t
terse__sched_fam_wire(int fam)
{
    if ((fam < 0) || (fam >= TERSE_SCHED_FAM_COUNT)) {
        return TERSE_SCHED_WIRE_NATIVE;
    }
    return sched_fam_wire[fam];
}

size_t
terse__sched_density_k(double density, size_t n)
{
    double k;

    if (n == 0) {
        return 0;
    }
    if (!(density > 0.0)) {
        return 1;
    }
    k = ceil(density * (double)n);
    if (k < 1.0) {
        return 1;
    }
    if (k >= (double)n) {
        return n;
    }
    return (size_t)k;
}

uint64_t
terse__sched_payload_bytes(int fam, double param, size_t count, size_t rows, size_t cols,
                           uint32_t bucket)
{
    uint64_t n = count, nb;

    if (bucket == 0) {
        bucket = 512;
    }
    nb = TERSE_DIV_UP(n, bucket);
    switch (fam) {
    case TERSE_SCHED_FAM_NONE:
        return 4 * n;
    case TERSE_SCHED_FAM_CAST:
        return 2 * n;
    case TERSE_SCHED_FAM_QUANT:
        return 24 + 8 * nb + TERSE_DIV_UP(n * (uint64_t)param, 8);
    case TERSE_SCHED_FAM_SIGN:
        return 24 + 4 * nb + TERSE_DIV_UP(n, 8);
    case TERSE_SCHED_FAM_TOPK:
    case TERSE_SCHED_FAM_TOPKT:
        return 32 + 8 * (uint64_t)terse__sched_density_k(param, count);
    case TERSE_SCHED_FAM_RANDOMK:
        return 4 * (uint64_t)terse__sched_density_k(param, count);
    case TERSE_SCHED_FAM_POWERSGD:
        if ((rows == 0) || (cols == 0)) {
            return 0;
        }
        return 4 * (uint64_t)param * (uint64_t)(rows + cols);
    case TERSE_SCHED_FAM_POWERSGD1:
        if ((rows == 0) || (cols == 0)) {
            return 0;
        }
        return 4 * (uint64_t)param * (uint64_t)TERSE_MAX(rows, cols);
    default:
        return 0;
    }
}

uint64_t
terse__sched_payload_bytes_split(int fam, double param, size_t count, size_t rows, size_t cols,
                                 uint32_t bucket, int parts)
{
    const size_t n = (size_t)((parts > 1) ? parts : 1);
    uint64_t sum = 0;
    size_t i, a, b;

    if (n == 1) {
        return terse__sched_payload_bytes(fam, param, count, rows, cols, bucket);
    }
    for (i = 0; i < n; ++i) {
        if ((rows > 0) && (cols > 0)) {
            a = rows * i / n;
            b = rows * (i + 1) / n;
            if (b > a) {
                sum += terse__sched_payload_bytes(fam, param, (b - a) * cols, b - a, cols,
                                                  bucket);
            }
        } else {
            a = count * i / n;
            b = count * (i + 1) / n;
            if (b > a) {
                sum += terse__sched_payload_bytes(fam, param, b - a, 0, 0, bucket);
            }
        }
    }
    return sum;
}

void
terse__sched_cost_default(terse_sched_cost_t *cost, int nranks, double bw)
{
    int w;

    memset(cost, 0, sizeof(*cost));
    cost->nlevels = 1;
    cost->level[0].nranks = (nranks < 1) ? 1 : nranks;
    for (w = 0; w < TERSE_SCHED_WIRE_COUNT; ++w) {
        cost->level[0].alpha[w] = 30e-6;
        cost->level[0].bw[w]    = (bw > 0.0) ? bw : 3.5e9;
    }
    cost->nbuckets = 1;
    terse__sched_cost_tput(cost, 0);
}

void
terse__sched_cost_tput(terse_sched_cost_t *cost, int host)
{
    /* input fp32 bytes per second, compress + decompress; none does no work */
    static const double tput[2][TERSE_SCHED_FAM_COUNT] = {
        {
            /* GPU kernels */
            [TERSE_SCHED_FAM_CAST] = 100e9, [TERSE_SCHED_FAM_QUANT] = 50e9,
            [TERSE_SCHED_FAM_SIGN] = 50e9, [TERSE_SCHED_FAM_TOPK] = 10e9,
            [TERSE_SCHED_FAM_RANDOMK] = 50e9, [TERSE_SCHED_FAM_POWERSGD] = 20e9,
            [TERSE_SCHED_FAM_POWERSGD1] = 40e9, [TERSE_SCHED_FAM_TOPKT] = 30e9,
        },
        {
            /* CPU reference code, one core of our VM */
            [TERSE_SCHED_FAM_CAST] = 2e9, [TERSE_SCHED_FAM_QUANT] = 1e9,
            [TERSE_SCHED_FAM_SIGN] = 1e9, [TERSE_SCHED_FAM_TOPK] = 0.3e9,
            [TERSE_SCHED_FAM_RANDOMK] = 1e9, [TERSE_SCHED_FAM_POWERSGD] = 0.5e9,
            [TERSE_SCHED_FAM_POWERSGD1] = 0.5e9, [TERSE_SCHED_FAM_TOPKT] = 0.5e9,
        },
    };

    memcpy(cost->cmp_tput, tput[host ? 1 : 0], sizeof(cost->cmp_tput));
    cost->cmp_overhead = 5e-6;
}

double
terse__sched_wire_bytes(terse_sched_wire_t wire, double bytes, int p)
{
    if (p <= 1) {
        return 0.0;
    }
    if (wire == TERSE_SCHED_WIRE_SPARSE) {
        return (double)(p - 1) * bytes;
    }
    return 2.0 * (double)(p - 1) / (double)p * bytes;
}

double
terse__sched_wire_msgs(terse_sched_wire_t wire, int p)
{
    if (p <= 1) {
        return 0.0;
    }
    if (wire == TERSE_SCHED_WIRE_SPARSE) {
        return (double)(p - 1);
    }
    return 2.0 * (double)(p - 1);
}

double
terse__sched_cost_cmp_time(const terse_sched_cost_t *cost, int fam, size_t count)
{
    double tput;

    if ((fam <= TERSE_SCHED_FAM_NONE) || (fam >= TERSE_SCHED_FAM_COUNT)) {
        return 0.0;
    }
    tput = cost->cmp_tput[fam];
    return cost->cmp_overhead + ((tput > 0.0) ? 4.0 * (double)count / tput : 0.0);
}

double
terse__sched_cost_cand_time(const terse_sched_cost_t *cost, terse_sched_wire_t wire,
                            size_t count, uint64_t bytes, double time_cmp)
{
    const terse_sched_level_t *top = &cost->level[cost->nlevels - 1];
    double t = time_cmp;
    int l;

    for (l = 0; l < cost->nlevels - 1; ++l) {
        const terse_sched_level_t *lv = &cost->level[l];
        t += terse__sched_wire_bytes(TERSE_SCHED_WIRE_NATIVE, 4.0 * (double)count, lv->nranks) /
             lv->bw[TERSE_SCHED_WIRE_NATIVE];
    }
    t += terse__sched_wire_bytes(wire, (double)bytes, top->nranks) / top->bw[wire];
    return t;
}

double
terse__sched_cost_set_latency(const terse_sched_cost_t *cost, unsigned set)
{
    const terse_sched_level_t *top = &cost->level[cost->nlevels - 1];
    double t = 0.0;
    int l, w;

    if (set == 0) {
        return 0.0;
    }
    for (l = 0; l < cost->nlevels - 1; ++l) {
        t += cost->level[l].alpha[TERSE_SCHED_WIRE_NATIVE] *
             terse__sched_wire_msgs(TERSE_SCHED_WIRE_NATIVE, cost->level[l].nranks);
    }
    for (w = 0; w < TERSE_SCHED_WIRE_COUNT; ++w) {
        if (set & (1u << w)) {
            t += top->alpha[w] * terse__sched_wire_msgs((terse_sched_wire_t)w, top->nranks);
        }
    }
    return t * (double)((cost->nbuckets == 0) ? 1 : cost->nbuckets);
}
