/*
 * terse-bench: nccl-tests-style benchmark of terse (STYLE.md section 11).
 *
 * Usage: terse-bench [-m compressors|allreduce|workload] [-b minBytes] [-e maxBytes]
 *                    [-f factor] [-n iters] [-w warmup] [-c 0|1] [-d float|half|bfloat16]
 *                    [-o sum|avg] [-C spec]... [-D gaussian|lowrank|file[:path]] [-s seed]
 *                    [-J file.json] [-M model] [-T mpi|nccl]
 * -M names the model of -m workload (bench/bench_workload.c): resnet50, bert-base,
 * gpt2-small or a shape file. -T nccl runs -m allreduce over NCCL on device buffers
 * (bench/bench_nccl.c): one thread per visible GPU, or one process per rank under mpirun.
 * Sizes take K, M, G suffixes (powers of 1024). -C is repeatable; without it each mode runs
 * its default set (compressors: every family and grid parameter that works on flat host
 * buffers). -J writes one JSON object per line: a header, then one per table row.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "rng.h"
#include "terse_config.h"

/* Provided by bench/bench_allreduce.c when the build has it. */
extern int terse_bench_allreduce(const terse_bench_opts_t *opts, int argc, char **argv)
    __attribute__((weak));
/* Provided by bench/bench_nccl.c (bench/nccl.cmake) in CUDA builds with nccl.h. */
extern int terse_bench_allreduce_nccl(const terse_bench_opts_t *opts, int argc, char **argv)
    __attribute__((weak));
/* Provided by bench/bench_workload.c (bench/workload.cmake) when the build has MPI. */
extern int terse_bench_workload(const terse_bench_opts_t *opts, const char *model)
    __attribute__((weak));

static void
bench_usage(FILE *f)
{
    fprintf(f,
            "usage: terse-bench [-m compressors|allreduce|workload] [-b minBytes] [-e maxBytes] [-f factor]\n"
            "                   [-n iters] [-w warmup] [-c 0|1] [-d float|half|bfloat16]\n"
            "                   [-o sum|avg] [-C spec]... [-D gaussian|lowrank|file[:path]]\n"
            "                   [-s seed] [-J file.json] [-M model] [-T mpi|nccl]\n"
            "  -m  mode (default compressors)\n"
            "  -M  workload mode: resnet50, bert-base, gpt2-small or a shape file\n"
            "  -b  smallest buffer in bytes, K/M/G suffixes (default 1M)\n"
            "  -e  largest buffer (default 256M)\n"
            "  -f  size factor between rows (default 2)\n"
            "  -n  timed iterations (default 5)   -w  warm-up iterations (default 1)\n"
            "  -c  check results (default 1)      -d  element type (default float)\n"
            "  -o  reduction (allreduce mode; default sum)\n"
            "  -C  compressor spec, repeatable (default: every family and grid parameter)\n"
            "  -D  input: gaussian, lowrank or file (real gradients; default folder %s)\n"
            "  -s  seed (default 1)               -J  JSON lines output\n"
            "  -T  allreduce transport: mpi (host buffers, default) or nccl (device buffers)\n",
            TERSE_DATA_DIR);
}

double
terse_bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

const char *
terse_bench_dist_name(terse_bench_dist_t dist)
{
    switch (dist) {
    case TERSE_BENCH_LOWRANK:
        return "lowrank";
    case TERSE_BENCH_FILE:
        return "file";
    default:
        return "gaussian";
    }
}

const char *
terse_bench_dtype_name(terse_dtype_t dtype)
{
    switch (dtype) {
    case TERSE_FLOAT16:
        return "half";
    case TERSE_BFLOAT16:
        return "bfloat16";
    default:
        return "float";
    }
}

static int
bench_parse_size(const char *text, size_t *bytes_p)
{
    char *end;
    double v;

    errno = 0;
    v     = strtod(text, &end);
    if ((errno != 0) || (end == text) || !(v >= 0)) {
        return -1;
    }
    switch (*end) {
    case 'k': case 'K': v *= 1024.0; ++end; break;
    case 'm': case 'M': v *= 1048576.0; ++end; break;
    case 'g': case 'G': v *= 1073741824.0; ++end; break;
    default: break;
    }
    if ((*end != '\0') || (v > 1e15)) {
        return -1;
    }
    *bytes_p = (size_t)v;
    return 0;
}

/* ---------------------------------------------------------------- inputs */
static void
bench_gaussian(uint64_t seed, float *out, size_t n)
{
    terse_rng_t r = terse_rng_make(seed, TERSE_RNG_TEST, 0, 0, 0);
    size_t i;

    for (i = 0; i < n; i += 2) {
        terse_rng4_t b = terse_rng_block(&r, i / 2);
        float u1       = ((float)(b.v[0] >> 8) + 0.5f) * (1.0f / 16777216.0f);
        float u2       = ((float)(b.v[1] >> 8) + 0.5f) * (1.0f / 16777216.0f);
        float rad      = sqrtf(-2.0f * logf(u1));
        out[i]         = rad * cosf(6.2831853f * u2);
        if (i + 1 < n) {
            out[i + 1] = rad * sinf(6.2831853f * u2);
        }
    }
}

static int
bench_lowrank(uint64_t seed, float *out, size_t n)
{
    const size_t cols = 1024, rank = 4;
    size_t rows = (n + cols - 1) / cols, i, j, k;
    float *u = malloc((rows * rank + 1) * sizeof(float));
    float *v = malloc(cols * rank * sizeof(float));

    if ((u == NULL) || (v == NULL)) {
        free(u);
        free(v);
        fprintf(stderr, "terse-bench: out of memory for the low-rank input\n");
        return -1;
    }
    bench_gaussian(seed + 1, u, rows * rank);
    bench_gaussian(seed + 2, v, cols * rank);
    bench_gaussian(seed + 3, out, n);
    for (i = 0; i < rows; ++i) {
        for (j = 0; (j < cols) && (i * cols + j < n); ++j) {
            float s = 0.0f;
            for (k = 0; k < rank; ++k) {
                s += u[i * rank + k] * v[k * cols + j];
            }
            out[i * cols + j] = 0.5f * s + 0.1f * out[i * cols + j];
        }
    }
    free(u);
    free(v);
    return 0;
}

/* Appends the floats of one file to *data_p (grown), returns -1 when it cannot be read. */
static int
bench_read_f32(const char *path, float **data_p, size_t *n_p)
{
    FILE *f = fopen(path, "rb");
    long bytes;
    float *grown;
    size_t got;

    if (f == NULL) {
        return -1;
    }
    if ((fseek(f, 0, SEEK_END) != 0) || ((bytes = ftell(f)) < 4) || (fseek(f, 0, SEEK_SET) != 0)) {
        fclose(f);
        return -1;
    }
    grown = realloc(*data_p, (*n_p + (size_t)bytes / 4) * sizeof(float));
    if (grown == NULL) {
        fclose(f);
        return -1;
    }
    got = fread(grown + *n_p, sizeof(float), (size_t)bytes / 4, f);
    fclose(f);
    *data_p = grown;
    *n_p += got;
    return (got > 0) ? 0 : -1;
}

static int
bench_file(const char *where, float *out, size_t n)
{
    static const char *const names[] = {"lm_grads_step300a.f32", "lm_grads_step300b.f32"};
    const char *dir = (where != NULL) ? where : TERSE_DATA_DIR;
    char path[4096];
    float *data = NULL;
    size_t len = 0, i, k;

    if ((strlen(dir) > 4) && (strcmp(dir + strlen(dir) - 4, ".f32") == 0)) {
        if (bench_read_f32(dir, &data, &len) != 0) {
            fprintf(stderr, "terse-bench: cannot read gradients from %s\n", dir);
            free(data);
            return -1;
        }
    } else {
        for (k = 0; k < 2; ++k) {
            snprintf(path, sizeof(path), "%s/%s", dir, names[k]);
            if (bench_read_f32(path, &data, &len) != 0) {
                fprintf(stderr, "terse-bench: cannot read gradients from %s\n", path);
                free(data);
                return -1;
            }
        }
    }
    for (i = 0; i < n; i += len) {
        memcpy(out + i, data, ((n - i < len) ? n - i : len) * sizeof(float));
    }
    free(data);
    return 0;
}

int
terse_bench_input(const terse_bench_opts_t *opts, uint64_t salt, float *out, size_t n)
{
    uint64_t seed = opts->seed * 0x9E3779B97F4A7C15ull + salt;

    switch (opts->dist) {
    case TERSE_BENCH_LOWRANK:
        return bench_lowrank(seed, out, n);
    case TERSE_BENCH_FILE:
        return bench_file(opts->dist_path, out, n);
    default:
        bench_gaussian(seed, out, n);
        return 0;
    }
}

void
terse_bench_header(const terse_bench_opts_t *opts, const char *extra)
{
    printf("# terse-bench %s mode %s input %s%s%s\n", terse_version_string(), opts->mode, terse_bench_dist_name(opts->dist),
           (opts->dist == TERSE_BENCH_FILE) ? " " : "",
           (opts->dist == TERSE_BENCH_FILE)
               ? ((opts->dist_path != NULL) ? opts->dist_path : TERSE_DATA_DIR)
               : "");
    printf("# minBytes %zu maxBytes %zu step: %zu(factor) warmup iters: %d iters: %d check: %d "
           "type: %s%s%s\n",
           opts->min_bytes, opts->max_bytes, opts->step_factor, opts->warmup, opts->iters,
           opts->check, terse_bench_dtype_name(opts->dtype), (extra != NULL) ? " " : "",
           (extra != NULL) ? extra : "");
    if (opts->json != NULL) {
        fprintf(opts->json,
                "{\"terse_bench\": \"%s\", \"git\": \"%s\", \"mode\": \"%s\", \"input\": \"%s\", "
                "\"min_bytes\": %zu, \"max_bytes\": %zu, \"factor\": %zu, \"warmup\": %d, "
                "\"iters\": %d, \"check\": %d, \"type\": \"%s\"}\n",
                terse_version_string(), TERSE_GIT_REVISION, opts->mode,
                terse_bench_dist_name(opts->dist), opts->min_bytes, opts->max_bytes,
                opts->step_factor, opts->warmup, opts->iters, opts->check,
                terse_bench_dtype_name(opts->dtype));
    }
}

/* ---------------------------------------------------------------- main */
int
main(int argc, char **argv)
{
    terse_bench_opts_t opts;
    const char *model = NULL;
    int opt, rc, nccl = 0;
    long v;

    memset(&opts, 0, sizeof(opts));
    opts.min_bytes   = 1u << 20;
    opts.max_bytes   = 256u << 20;
    opts.step_factor = 2;
    opts.iters       = 5;
    opts.warmup      = 1;
    opts.check       = 1;
    opts.dtype       = TERSE_FLOAT32;
    opts.op          = "sum";
    opts.mode        = "compressors";
    opts.dist        = TERSE_BENCH_GAUSSIAN;
    opts.seed        = 1;

    /* '+': stop at the first non-option, so a mode may take its own arguments after "--" */
    while ((opt = getopt(argc, argv, "+b:e:f:n:w:c:d:o:m:C:D:J:s:M:T:h")) != -1) {
        switch (opt) {
        case 'b':
        case 'e':
            if (bench_parse_size(optarg, (opt == 'b') ? &opts.min_bytes : &opts.max_bytes) != 0) {
                fprintf(stderr, "terse-bench: bad size '%s' for -%c\n", optarg, opt);
                return 2;
            }
            break;
        case 'f':
        case 'n':
        case 'w':
        case 'c':
            v = strtol(optarg, NULL, 10);
            if ((v < 0) || ((opt == 'f') && (v < 2)) || ((opt == 'n') && (v < 1)) ||
                ((opt == 'c') && (v > 1)) || (v > 1000000)) {
                fprintf(stderr, "terse-bench: bad value '%s' for -%c\n", optarg, opt);
                return 2;
            }
            if (opt == 'f') {
                opts.step_factor = (size_t)v;
            } else if (opt == 'n') {
                opts.iters = (int)v;
            } else if (opt == 'w') {
                opts.warmup = (int)v;
            } else {
                opts.check = (int)v;
            }
            break;
        case 'd':
            if (strcmp(optarg, "float") == 0) {
                opts.dtype = TERSE_FLOAT32;
            } else if (strcmp(optarg, "half") == 0) {
                opts.dtype = TERSE_FLOAT16;
            } else if ((strcmp(optarg, "bfloat16") == 0) || (strcmp(optarg, "bf16") == 0)) {
                opts.dtype = TERSE_BFLOAT16;
            } else {
                fprintf(stderr, "terse-bench: -d takes float, half or bfloat16\n");
                return 2;
            }
            break;
        case 'o':
            if ((strcmp(optarg, "sum") != 0) && (strcmp(optarg, "avg") != 0)) {
                fprintf(stderr, "terse-bench: -o takes sum or avg\n");
                return 2;
            }
            opts.op = optarg;
            break;
        case 'm':
            if ((strcmp(optarg, "compressors") != 0) && (strcmp(optarg, "allreduce") != 0) &&
                (strcmp(optarg, "workload") != 0)) {
                fprintf(stderr, "terse-bench: -m takes compressors, allreduce or workload\n");
                return 2;
            }
            opts.mode = optarg;
            break;
        case 'C':
            if ((opts.nspecs >= TERSE_BENCH_MAX_SPECS) ||
                (strlen(optarg) >= TERSE_BENCH_SPEC_LEN)) {
                fprintf(stderr, "terse-bench: too many or too long -C specs\n");
                return 2;
            }
            strcpy(opts.specs[opts.nspecs++], optarg);
            break;
        case 'D':
            if (strcmp(optarg, "gaussian") == 0) {
                opts.dist = TERSE_BENCH_GAUSSIAN;
            } else if (strcmp(optarg, "lowrank") == 0) {
                opts.dist = TERSE_BENCH_LOWRANK;
            } else if (strncmp(optarg, "file", 4) == 0) {
                opts.dist      = TERSE_BENCH_FILE;
                opts.dist_path = (optarg[4] == ':') ? optarg + 5 : NULL;
                if ((optarg[4] != '\0') && (optarg[4] != ':')) {
                    fprintf(stderr, "terse-bench: -D takes gaussian, lowrank or file[:path]\n");
                    return 2;
                }
            } else {
                fprintf(stderr, "terse-bench: -D takes gaussian, lowrank or file[:path]\n");
                return 2;
            }
            break;
        case 'J':
            opts.json_path = optarg;
            break;
        case 's':
            opts.seed = strtoull(optarg, NULL, 10);
            break;
        case 'M':
            model = optarg;
            break;
        case 'T':
            if ((strcmp(optarg, "mpi") != 0) && (strcmp(optarg, "nccl") != 0)) {
                fprintf(stderr, "terse-bench: -T takes mpi or nccl\n");
                return 2;
            }
            nccl = (strcmp(optarg, "nccl") == 0);
            break;
        case 'h':
            bench_usage(stdout);
            return 0;
        default:
            bench_usage(stderr);
            return 2;
        }
    }
    if ((opts.min_bytes == 0) || (opts.max_bytes < opts.min_bytes)) {
        fprintf(stderr, "terse-bench: need 0 < minBytes <= maxBytes\n");
        return 2;
    }
    if (strcmp(opts.mode, "allreduce") == 0) {
        if (nccl && (terse_bench_allreduce_nccl == NULL)) {
            fprintf(stderr, "allreduce mode over nccl is not in this build (needs CUDA and nccl.h)\n");
            return 2;
        }
        if (!nccl && (terse_bench_allreduce == NULL)) {
            fprintf(stderr, "allreduce mode is not in this build\n");
            return 2;
        }
    }
    if ((strcmp(opts.mode, "workload") == 0) && (terse_bench_workload == NULL)) {
        fprintf(stderr, "workload mode is not in this build\n");
        return 2;
    }
    if (opts.json_path != NULL) {
        opts.json = fopen(opts.json_path, "w");
        if (opts.json == NULL) {
            fprintf(stderr, "terse-bench: cannot write %s: %s\n", opts.json_path,
                    strerror(errno));
            return 2;
        }
    }
    if ((strcmp(opts.mode, "allreduce") == 0) && nccl) {
        rc = terse_bench_allreduce_nccl(&opts, argc, argv);
    } else if (strcmp(opts.mode, "allreduce") == 0) {
        rc = terse_bench_allreduce(&opts, argc, argv);
    } else if (strcmp(opts.mode, "workload") == 0) {
        rc = terse_bench_workload(&opts, model);
    } else {
        rc = terse_bench_compressors(&opts, argc, argv);
    }
    if (opts.json != NULL) {
        fclose(opts.json);
    }
    return rc;
}
