/*
 * mpi_passthrough: runs MPI_Allreduce over many (datatype, op, count, in-place) combinations
 * and prints one hash of each result per rank. The shim tests run it with and without
 * LD_PRELOAD=libterse-mpi.so and compare the outputs: whatever the shim does not compress
 * must be bit-identical to plain MPI.
 *
 *   mpirun -np 3 ./mpi_passthrough > plain.txt
 *   mpirun -np 3 -x LD_PRELOAD=libterse-mpi.so -x TERSE_COMPRESSOR=quant:4 ./mpi_passthrough
 */
#include <complex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#define PT_MAX 1024

typedef struct pt_type {
    MPI_Datatype dt;
    const char  *name;
    int          is_float;
    int          is_complex;
} pt_type_t;

typedef struct pt_op {
    MPI_Op      op;
    const char *name;
    int         ints_only; /* bitwise ops */
    int         no_complex;
} pt_op_t;

static uint64_t
pt_hash(const void *p, size_t n)
{
    const unsigned char *c = p;
    uint64_t h             = 1469598103934665603ull;
    size_t i;

    for (i = 0; i < n; ++i) {
        h = (h ^ c[i]) * 1099511628211ull;
    }
    return h;
}

/* Deterministic, rank-dependent values; small so that PROD stays finite and ints exact. */
static void
pt_fill(unsigned char *buf, int size, int count, int rank, int combo, int is_float,
        MPI_Datatype dt)
{
    int i;
    uint32_t s = 2654435761u * (uint32_t)(rank + 1) + 97u * (uint32_t)combo;

    for (i = 0; i < count; ++i) {
        s = s * 1664525u + 1013904223u;
        double v = is_float ? ((double)(s >> 8) / 16777216.0 - 0.5) * 3.0 : (double)((s >> 20) % 5);
        if (dt == MPI_FLOAT) {
            ((float *)buf)[i] = (float)v;
        } else if (dt == MPI_DOUBLE) {
            ((double *)buf)[i] = v;
        } else if (dt == MPI_C_FLOAT_COMPLEX) {
            ((float complex *)buf)[i] = (float)v + I * (float)(v * 0.5);
        } else if (dt == MPI_INT) {
            ((int *)buf)[i] = (int)v + 1;
        } else if (dt == MPI_UNSIGNED) {
            ((unsigned *)buf)[i] = (unsigned)v + 1;
        } else if (dt == MPI_LONG) {
            ((long *)buf)[i] = (long)v + 1;
        } else if (dt == MPI_SHORT) {
            ((short *)buf)[i] = (short)((int)v + 1);
        } else if (dt == MPI_INT64_T) {
            ((int64_t *)buf)[i] = (int64_t)v + 1;
        } else if (dt == MPI_SIGNED_CHAR) {
            ((signed char *)buf)[i] = (signed char)((int)v + 1);
        } else {
            memset(buf + (size_t)i * (size_t)size, (int)(s & 0xff), (size_t)size);
        }
    }
}

int
main(int argc, char **argv)
{
    static const int counts[] = {1, 7, 1000, 100003};
    pt_type_t types[] = {
        {MPI_FLOAT, "float", 1, 0},         {MPI_DOUBLE, "double", 1, 0},
        {MPI_C_FLOAT_COMPLEX, "cfloat", 1, 1}, {MPI_INT, "int", 0, 0},
        {MPI_UNSIGNED, "unsigned", 0, 0},   {MPI_LONG, "long", 0, 0},
        {MPI_SHORT, "short", 0, 0},         {MPI_INT64_T, "int64", 0, 0},
        {MPI_SIGNED_CHAR, "schar", 0, 0},
    };
    pt_op_t ops[] = {
        {MPI_SUM, "sum", 0, 0}, {MPI_MAX, "max", 0, 1}, {MPI_MIN, "min", 0, 1},
        {MPI_PROD, "prod", 0, 0}, {MPI_BAND, "band", 1, 1}, {MPI_BOR, "bor", 1, 1},
    };
    const int ntypes = (int)(sizeof(types) / sizeof(types[0]));
    const int nops   = (int)(sizeof(ops) / sizeof(ops[0]));
    static uint64_t hashes[PT_MAX];
    static char desc[PT_MAX][64];
    uint64_t *all;
    int rank, nranks, t, o, c, inplace, size, combo = 0, rep;
    MPI_Comm half;
    unsigned char *in, *out;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    MPI_Comm_split(MPI_COMM_WORLD, rank % 2, rank, &half);
    in  = malloc(100003 * 16);
    out = malloc(100003 * 16);
    for (t = 0; t < ntypes; ++t) {
        MPI_Type_size(types[t].dt, &size);
        for (o = 0; o < nops; ++o) {
            if ((ops[o].ints_only && types[t].is_float) ||
                (ops[o].no_complex && types[t].is_complex)) {
                continue;
            }
            for (c = 0; c < 4; ++c) {
                if ((counts[c] > 1000) && !types[t].is_float) {
                    continue;
                }
                for (inplace = 0; inplace < 2; ++inplace) {
                    /* float SUM again on a split communicator: each communicator still sees
                     * fewer repetitions than the shim's cycle threshold */
                    for (rep = 0; rep < ((types[t].dt == MPI_FLOAT) && (o == 0) ? 2 : 1); ++rep) {
                        MPI_Comm comm = (rep == 1) ? half : MPI_COMM_WORLD;
                        int crank;
                        MPI_Comm_rank(comm, &crank);
                        pt_fill(in, size, counts[c], crank, combo, types[t].is_float,
                                types[t].dt);
                        if (inplace) {
                            memcpy(out, in, (size_t)counts[c] * (size_t)size);
                            MPI_Allreduce(MPI_IN_PLACE, out, counts[c], types[t].dt, ops[o].op,
                                          comm);
                        } else {
                            memset(out, 0x5a, (size_t)counts[c] * (size_t)size);
                            MPI_Allreduce(in, out, counts[c], types[t].dt, ops[o].op, comm);
                            /* the send buffer must be untouched */
                            unsigned char *chk = malloc((size_t)counts[c] * (size_t)size);
                            pt_fill(chk, size, counts[c], crank, combo, types[t].is_float,
                                    types[t].dt);
                            if (memcmp(chk, in, (size_t)counts[c] * (size_t)size) != 0) {
                                printf("rank %d combo %d: send buffer modified\n", rank, combo);
                            }
                            free(chk);
                        }
                        if (combo < PT_MAX) {
                            hashes[combo] = pt_hash(out, (size_t)counts[c] * (size_t)size);
                            snprintf(desc[combo], sizeof(desc[combo]),
                                     "%s %s count %d inplace %d rep %d", types[t].name,
                                     ops[o].name, counts[c], inplace, rep);
                        }
                        ++combo;
                    }
                }
            }
        }
    }
    /* rank 0 prints every rank's hashes: one writer, no interleaved lines */
    all = malloc(sizeof(uint64_t) * PT_MAX * (size_t)nranks);
    MPI_Gather(hashes, PT_MAX, MPI_UINT64_T, all, PT_MAX, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        int r, k;
        for (r = 0; r < nranks; ++r) {
            for (k = 0; (k < combo) && (k < PT_MAX); ++k) {
                printf("rank %d combo %d %s hash %016llx\n", r, k, desc[k],
                       (unsigned long long)all[(size_t)r * PT_MAX + (size_t)k]);
            }
        }
        printf("combinations %d\n", combo);
    }
    free(all);
    free(in);
    free(out);
    MPI_Comm_free(&half);
    MPI_Finalize();
    return 0;
}
