/*
 * Plans: representation, checksum, and the CSV file format (like nccl_tuner.conf: every
 * column documented in '#' lines, -1 = any).
 *
 *   # terse plan v1
 *   # columns: layer,name,count,compressor,param,bytes,expected_sq_err
 *   0,body.0.weight,1048576,powersgd,4,32772,0.0123
 *   -1,-,-1,quant,4,-1,-1            <- every other layer: quant:4
 *
 * A layer takes the first row whose layer and count match it (or are -1). This is the only
 * file of scheduler/ that does I/O.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "terse_sched.h"

#define PLAN_FIELDS 7

static const char plan_header[] =
    "# terse plan v1: the compressor of every layer (TERSE_PLAN reads this format)\n"
    "# columns: layer,name,count,compressor,param,bytes,expected_sq_err\n"
    "#   layer            layer index, 0-based; -1 = any layer\n"
    "#   name             layer name, '-' when unnamed (informational: rows bind by layer, count)\n"
    "#   count            elements of the layer; -1 = any count\n"
    "#   compressor       none|cast|quant|sign|topk|randomk|powersgd|powersgd1|topkt\n"
    "#   param            cast 0 (bf16) or 1 (fp16); quant bits 2..8; topk, randomk density\n"
    "#                    in (0, 1]; powersgd, powersgd1 rank >= 1; topkt density; none, sign 0\n"
    "#   bytes            payload bytes per rank and step the planner expects; -1 = unknown\n"
    "#   expected_sq_err  predicted absolute squared error ||g - C(g)||^2; -1 = unknown\n"
    "# A layer takes the first row whose layer and count match it or are -1.\n";

terse_status_t
terse__sched_plan_alloc(size_t n, terse_plan_t *plan_p)
{
    terse_plan_t plan;
    size_t i;

    memset(&plan, 0, sizeof(plan));
    plan.layer = calloc((n > 0) ? n : 1, sizeof(*plan.layer));
    if (plan.layer == NULL) {
        terse_error(TERSE_LOG_SCHED, "failed to allocate a plan of %zu layers", n);
        return TERSE_ERR_NOMEM;
    }
    for (i = 0; i < n; ++i) {
        plan.layer[i].cand = -1;
    }
    plan.nlayers = n;
    *plan_p      = plan;
    return TERSE_OK;
}

void
terse__sched_plan_free(terse_plan_t *plan)
{
    if (plan == NULL) {
        return;
    }
    free(plan->layer);
    plan->layer   = NULL;
    plan->nlayers = 0;
}

/* ---------------------------------------------------------------- checksum */
static uint64_t
plan_hash_u64(uint64_t h, uint64_t v)
{
    unsigned char b[8];
    int i;

    for (i = 0; i < 8; ++i) {
        b[i] = (unsigned char)(v >> (8 * i)); /* little-endian on every host */
    }
    return terse__hash64(b, sizeof(b), h);
}

uint64_t
terse__sched_plan_checksum(const terse_plan_t *plan)
{
    uint64_t h = 0xcbf29ce484222325ull, bits;
    size_t i;

    h = plan_hash_u64(h, (uint64_t)plan->nlayers);
    for (i = 0; i < plan->nlayers; ++i) {
        const terse_plan_layer_t *pl = &plan->layer[i];
        double err = pl->expected_sq_err;

        h = plan_hash_u64(h, (uint64_t)(int64_t)pl->layer);
        h = plan_hash_u64(h, (uint64_t)pl->count);
        h = plan_hash_u64(h, (uint64_t)(int64_t)pl->fam);
        h = plan_hash_u64(h, (uint64_t)(int64_t)llround(pl->param * 1e9));
        h = plan_hash_u64(h, (uint64_t)pl->bytes);
        if (err == 0.0) {
            err = 0.0; /* -0 and +0 hash alike */
        }
        memcpy(&bits, &err, sizeof(bits));
        h = plan_hash_u64(h, bits);
        h = terse__hash64(pl->name, strnlen(pl->name, sizeof(pl->name)) + 0, h);
        h = plan_hash_u64(h, 0x2c); /* separator: "ab" + "c" differs from "a" + "bc" */
    }
    return h;
}

/* ---------------------------------------------------------------- writing */
static int
plan_name_ok(const char *s)
{
    if (*s == '\0') {
        return 0;
    }
    for (; *s != '\0'; ++s) {
        if ((*s == ',') || (*s == '#') || isspace((unsigned char)*s) ||
            iscntrl((unsigned char)*s)) {
            return 0;
        }
    }
    return 1;
}

terse_status_t
terse__sched_plan_fwrite(const terse_plan_t *plan, void *file)
{
    FILE *f = file;
    size_t i;

    for (i = 0; i < plan->nlayers; ++i) {
        if (!plan_name_ok(plan->layer[i].name) ||
            (terse__sched_fam_name(plan->layer[i].fam) == NULL)) {
            terse_error(TERSE_LOG_SCHED,
                        "plan layer %zu cannot be written: name '%s' (no commas, '#' or "
                        "spaces) or family %d",
                        i, plan->layer[i].name, plan->layer[i].fam);
            return TERSE_ERR_INVALID;
        }
    }
    fputs(plan_header, f);
    if (plan->budget > 0.0) {
        fprintf(f, "# planned: predicted_time_s %.6g wire_bytes %.0f sq_err %.6g budget %.6g\n",
                plan->predicted_time, plan->wire_bytes, plan->sq_err, plan->budget);
    }
    fprintf(f, "# checksum 0x%016llx\n", (unsigned long long)terse__sched_plan_checksum(plan));
    for (i = 0; i < plan->nlayers; ++i) {
        const terse_plan_layer_t *pl = &plan->layer[i];
        fprintf(f, "%d,%s,%lld,%s,%.17g,%lld,%.17g\n", pl->layer, pl->name,
                (long long)pl->count, terse__sched_fam_name(pl->fam), pl->param,
                (long long)pl->bytes, pl->expected_sq_err);
    }
    return ferror(f) ? TERSE_ERR_SYSTEM : TERSE_OK;
}

terse_status_t
terse__sched_plan_write(const terse_plan_t *plan, const char *path)
{
    terse_status_t status;
    FILE *f;

    f = fopen(path, "w");
    if (f == NULL) {
        terse_error(TERSE_LOG_SCHED, "cannot open plan file %s for writing: %s", path,
                    strerror(errno));
        return TERSE_ERR_SYSTEM;
    }
    status = terse__sched_plan_fwrite(plan, f);
    if (fclose(f) != 0) {
        terse_error(TERSE_LOG_SCHED, "cannot write plan file %s: %s", path, strerror(errno));
        return TERSE_ERR_SYSTEM;
    }
    if (status == TERSE_ERR_SYSTEM) {
        terse_error(TERSE_LOG_SCHED, "cannot write plan file %s", path);
    }
    return status;
}

/* ---------------------------------------------------------------- reading */
static void
plan_why(char *why, size_t why_len, const char *origin, size_t line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void
plan_why(char *why, size_t why_len, const char *origin, size_t line, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    terse_error(TERSE_LOG_SCHED, "%s line %zu: %s", origin, line, msg);
    if ((why != NULL) && (why_len > 0)) {
        snprintf(why, why_len, "%s line %zu: %s", origin, line, msg);
    }
}

static char *
plan_trim(char *s)
{
    char *e;

    while (isspace((unsigned char)*s)) {
        ++s;
    }
    e = s + strlen(s);
    while ((e > s) && isspace((unsigned char)e[-1])) {
        *--e = '\0';
    }
    return s;
}

static int
plan_int(const char *s, long long min, long long *v_p)
{
    char *end;
    long long v;

    if (*s == '\0') {
        return 0;
    }
    errno = 0;
    v     = strtoll(s, &end, 10);
    if ((errno != 0) || (*end != '\0') || (v < min)) {
        return 0;
    }
    *v_p = v;
    return 1;
}

static int
plan_num(const char *s, double *v_p)
{
    char *end;
    double v;

    if (*s == '\0') {
        return 0;
    }
    errno = 0;
    v     = strtod(s, &end);
    if ((errno == ERANGE && fabs(v) > 1.0) || (*end != '\0') || !isfinite(v)) {
        return 0;
    }
    *v_p = v;
    return 1;
}

/* Checks a family's parameter; returns NULL or what is wrong. */
static const char *
plan_param_check(int fam, double p)
{
    switch (fam) {
    case TERSE_SCHED_FAM_NONE:
    case TERSE_SCHED_FAM_SIGN:
        return (p == 0.0) ? NULL : "takes no parameter (write 0)";
    case TERSE_SCHED_FAM_CAST:
        return ((p == 0.0) || (p == 1.0)) ? NULL : "cast parameter must be 0 (bf16) or 1 (fp16)";
    case TERSE_SCHED_FAM_QUANT:
        return ((p >= 2.0) && (p <= 8.0) && (p == floor(p))) ? NULL
                                                             : "quant bits must be 2..8";
    case TERSE_SCHED_FAM_TOPK:
    case TERSE_SCHED_FAM_TOPKT:
    case TERSE_SCHED_FAM_RANDOMK:
        return ((p > 0.0) && (p <= 1.0)) ? NULL : "density must be in (0, 1]";
    case TERSE_SCHED_FAM_POWERSGD:
    case TERSE_SCHED_FAM_POWERSGD1:
        return ((p >= 1.0) && (p <= 65536.0) && (p == floor(p))) ? NULL
                                                                 : "rank must be an integer >= 1";
    default:
        return "unknown family";
    }
}

static terse_status_t
plan_parse_line(char *line, const char *origin, size_t lineno, terse_plan_layer_t *pl,
                char *why, size_t why_len)
{
    char *field[PLAN_FIELDS + 1];
    size_t nf = 0;
    char *p = line, *comma;
    long long iv;
    const char *bad;

    for (;;) {
        comma = strchr(p, ',');
        if (nf <= PLAN_FIELDS) {
            field[nf] = p;
        }
        ++nf;
        if (comma == NULL) {
            break;
        }
        *comma = '\0';
        p      = comma + 1;
    }
    if (nf != PLAN_FIELDS) {
        plan_why(why, why_len, origin, lineno,
                 "expected %d comma-separated fields "
                 "(layer,name,count,compressor,param,bytes,expected_sq_err), got %zu",
                 PLAN_FIELDS, nf);
        return TERSE_ERR_INVALID;
    }
    for (nf = 0; nf < PLAN_FIELDS; ++nf) {
        field[nf] = plan_trim(field[nf]);
    }
    memset(pl, 0, sizeof(*pl));
    pl->cand = -1;
    if (!plan_int(field[0], -1, &iv) || (iv > 0x7fffffff)) {
        plan_why(why, why_len, origin, lineno, "layer '%s' is not an integer >= -1", field[0]);
        return TERSE_ERR_INVALID;
    }
    pl->layer = (int)iv;
    if (!plan_name_ok(field[1]) || (strlen(field[1]) >= sizeof(pl->name))) {
        plan_why(why, why_len, origin, lineno,
                 "name '%s' is empty, too long or holds spaces or '#'", field[1]);
        return TERSE_ERR_INVALID;
    }
    memcpy(pl->name, field[1], strlen(field[1]) + 1);
    if (!plan_int(field[2], -1, &iv) || (iv == 0)) {
        plan_why(why, why_len, origin, lineno, "count '%s' is not a positive integer or -1",
                 field[2]);
        return TERSE_ERR_INVALID;
    }
    pl->count = iv;
    pl->fam   = terse__sched_fam_find(field[3]);
    if (pl->fam < 0) {
        plan_why(why, why_len, origin, lineno,
                 "unknown compressor '%s' (none|cast|quant|sign|topk|randomk|powersgd|powersgd1|topkt)",
                 field[3]);
        return TERSE_ERR_INVALID;
    }
    if (!plan_num(field[4], &pl->param)) {
        plan_why(why, why_len, origin, lineno, "param '%s' is not a finite number", field[4]);
        return TERSE_ERR_INVALID;
    }
    bad = plan_param_check(pl->fam, pl->param);
    if (bad != NULL) {
        plan_why(why, why_len, origin, lineno, "%s:%s: %s", field[3], field[4], bad);
        return TERSE_ERR_INVALID;
    }
    if (!plan_int(field[5], -1, &iv)) {
        plan_why(why, why_len, origin, lineno, "bytes '%s' is not an integer >= -1", field[5]);
        return TERSE_ERR_INVALID;
    }
    pl->bytes = iv;
    if (!plan_num(field[6], &pl->expected_sq_err) ||
        ((pl->expected_sq_err < 0.0) && (pl->expected_sq_err != -1.0))) {
        plan_why(why, why_len, origin, lineno,
                 "expected_sq_err '%s' is not a number >= 0 or -1", field[6]);
        return TERSE_ERR_INVALID;
    }
    return TERSE_OK;
}

terse_status_t
terse__sched_plan_parse(const char *text, const char *origin, terse_plan_t *plan_p, char *why,
                        size_t why_len)
{
    terse_plan_t plan;
    terse_status_t status;
    size_t nrows = 0, lineno = 0, len, cap = 0;
    const char *p = text, *nl;
    char *line = NULL, *s;

    if ((text == NULL) || (plan_p == NULL)) {
        return TERSE_ERR_INVALID;
    }
    if (origin == NULL) {
        origin = "plan";
    }
    /* Rows are at most the number of lines. */
    for (nl = text; *nl != '\0'; ++nl) {
        nrows += (*nl == '\n');
    }
    TERSE_CHECK(terse__sched_plan_alloc(nrows + 1, &plan));
    plan.nlayers = 0;
    while (*p != '\0') {
        ++lineno;
        nl  = strchr(p, '\n');
        len = (nl != NULL) ? (size_t)(nl - p) : strlen(p);
        if (len + 1 > cap) {
            char *nline = realloc(line, len + 1);
            if (nline == NULL) {
                terse_error(TERSE_LOG_SCHED, "failed to allocate a %zu-byte line", len + 1);
                status = TERSE_ERR_NOMEM;
                goto err_free_plan;
            }
            line = nline;
            cap  = len + 1;
        }
        memcpy(line, p, len);
        line[len] = '\0';
        p += len + ((nl != NULL) ? 1 : 0);
        s = plan_trim(line);
        if ((*s == '\0') || (*s == '#')) {
            continue;
        }
        TERSE_CHECK_GOTO(plan_parse_line(s, origin, lineno, &plan.layer[plan.nlayers], why,
                                         why_len),
                         status, err_free_plan);
        plan.nlayers++;
    }
    if (plan.nlayers == 0) {
        plan_why(why, why_len, origin, lineno, "no plan rows (only comments or empty lines)");
        status = TERSE_ERR_INVALID;
        goto err_free_plan;
    }
    free(line);
    *plan_p = plan;
    return TERSE_OK;

err_free_plan:
    free(line);
    terse__sched_plan_free(&plan);
    return status;
}

terse_status_t
terse__sched_plan_read(const char *path, terse_plan_t *plan_p, char *why, size_t why_len)
{
    terse_status_t status;
    char *text = NULL, *ntext;
    size_t len = 0, cap = 0, got;
    FILE *f;

    f = fopen(path, "r");
    if (f == NULL) {
        terse_error(TERSE_LOG_SCHED, "cannot open plan file %s: %s", path, strerror(errno));
        if ((why != NULL) && (why_len > 0)) {
            snprintf(why, why_len, "cannot open %s: %s", path, strerror(errno));
        }
        return TERSE_ERR_SYSTEM;
    }
    do {
        if (cap - len < 4096) {
            ntext = realloc(text, cap + 65536 + 1);
            if (ntext == NULL) {
                terse_error(TERSE_LOG_SCHED, "failed to allocate plan file buffer");
                status = TERSE_ERR_NOMEM;
                goto err_close;
            }
            text = ntext;
            cap += 65536;
        }
        got = fread(text + len, 1, cap - len, f);
        len += got;
    } while (got > 0);
    if (ferror(f)) {
        terse_error(TERSE_LOG_SCHED, "cannot read plan file %s: %s", path, strerror(errno));
        status = TERSE_ERR_SYSTEM;
        goto err_close;
    }
    fclose(f);
    if (memchr(text, '\0', len) != NULL) {
        text[len] = '\0';
        plan_why(why, why_len, path, 1 + (size_t)0, "file holds a NUL byte (not a text file)");
        free(text);
        return TERSE_ERR_INVALID;
    }
    text[len] = '\0';
    status    = terse__sched_plan_parse(text, path, plan_p, why, why_len);
    free(text);
    return status;

err_close:
    fclose(f);
    free(text);
    return status;
}

terse_status_t
terse__sched_plan_bind(const terse_plan_t *rows, size_t nlayers, const size_t *counts,
                       const char *const *names, terse_plan_t *plan_p)
{
    terse_plan_t plan;
    size_t l, r;

    for (r = 0; r < rows->nlayers; ++r) {
        if ((rows->layer[r].layer >= 0) && ((size_t)rows->layer[r].layer >= nlayers)) {
            terse_error(TERSE_LOG_SCHED, "plan row %zu names layer %d but the model has %zu",
                        r, rows->layer[r].layer, nlayers);
            return TERSE_ERR_INVALID;
        }
    }
    TERSE_CHECK(terse__sched_plan_alloc(nlayers, &plan));
    for (l = 0; l < nlayers; ++l) {
        for (r = 0; r < rows->nlayers; ++r) {
            const terse_plan_layer_t *row = &rows->layer[r];
            if (((row->layer == -1) || ((size_t)row->layer == l)) &&
                ((row->count == -1) || ((size_t)row->count == counts[l]))) {
                break;
            }
        }
        if (r == rows->nlayers) {
            terse_error(TERSE_LOG_SCHED, "no plan row matches layer %zu (count %zu)", l,
                        counts[l]);
            terse__sched_plan_free(&plan);
            return TERSE_ERR_INVALID;
        }
        plan.layer[l]       = rows->layer[r];
        plan.layer[l].layer = (int)l;
        plan.layer[l].count = (int64_t)counts[l];
        if ((names != NULL) && (names[l] != NULL)) {
            snprintf(plan.layer[l].name, sizeof(plan.layer[l].name), "%s", names[l]);
        }
    }
    *plan_p = plan;
    return TERSE_OK;
}
