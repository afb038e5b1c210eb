/*
 * terse-bench: the options every mode shares, and helpers the modes use (inputs, JSON rows).
 * bench/terse_bench.c parses the nccl-tests-style command line (STYLE.md section 11) and
 * dispatches to a mode:
 *   -m compressors   bench/bench_compressors.c: per compressor and size, compress and
 *                    decompress throughput on this CPU core, ratio and relative error
 *   -m allreduce     bench/bench_allreduce.c: the compressed allreduce over a transport
 *                    (optional in a build: a weak symbol; absent, terse-bench says so, exit 2)
 */
#ifndef TERSE_BENCH_H
#define TERSE_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "terse.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_BENCH_MAX_SPECS 64
#define TERSE_BENCH_SPEC_LEN  64

typedef enum terse_bench_dist {
    TERSE_BENCH_GAUSSIAN = 0, /* i.i.d. N(0, 1) */
    TERSE_BENCH_LOWRANK  = 1, /* near-square matrix: rank 4 plus 0.1 N(0, 1) noise */
    TERSE_BENCH_FILE     = 2  /* real gradients: raw lm_grads_step300*.f32, concatenated, cycled */
} terse_bench_dist_t;

typedef struct terse_bench_opts {
    size_t             min_bytes;   /* -b: smallest buffer, in bytes of dtype */
    size_t             max_bytes;   /* -e */
    size_t             step_factor; /* -f: multiply the size by this (nccl-tests: 2) */
    int                iters;       /* -n: timed iterations */
    int                warmup;      /* -w: untimed iterations first */
    int                check;       /* -c: 1 checks results (see the mode) */
    terse_dtype_t      dtype;       /* -d float|half|bfloat16 */
    const char        *op;          /* -o sum|avg (allreduce mode) */
    const char        *mode;        /* -m compressors|allreduce */
    terse_bench_dist_t dist;        /* -D gaussian|lowrank|file[:path] */
    const char        *dist_path;   /* file: a folder or a .f32 file; NULL: TERSE_DATA_DIR */
    const char        *json_path;   /* -J: JSON lines file, or NULL */
    FILE              *json;        /* opened by terse_bench.c from json_path, or NULL */
    uint64_t           seed;        /* -s: base seed of inputs and random streams */
    size_t             nspecs;      /* -C, repeatable; 0: the mode's default set */
    char               specs[TERSE_BENCH_MAX_SPECS][TERSE_BENCH_SPEC_LEN];
} terse_bench_opts_t;

/* The modes. argc/argv are the whole command line (a mode may read extra options).
 * Each returns the process exit status: 0 on success. */
int terse_bench_compressors(const terse_bench_opts_t *opts, int argc, char **argv);
int terse_bench_allreduce(const terse_bench_opts_t *opts, int argc, char **argv);

/* "gaussian", "lowrank", "file". */
const char *terse_bench_dist_name(terse_bench_dist_t dist);

/* Fills out[0..n) with the input distribution of opts (deterministic from opts->seed and
 * salt: ranks pass their rank as salt to get different data). Returns 0, or -1 with a
 * message on stderr (file missing). */
int terse_bench_input(const terse_bench_opts_t *opts, uint64_t salt, float *out, size_t n);

/* Prints the '#'-prefixed header lines every mode starts with (version, git, mode, input,
 * sizes, iterations) to stdout, and a header object to the JSON file when -J was given. */
void terse_bench_header(const terse_bench_opts_t *opts, const char *extra);

/* dtype names as -d spells them: "float", "half", "bfloat16". */
const char *terse_bench_dtype_name(terse_dtype_t dtype);

/* Seconds, monotonic. */
double terse_bench_now(void);

#ifdef __cplusplus
}
#endif

#endif /* TERSE_BENCH_H */
