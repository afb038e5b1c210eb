/*
 * mpi_train: the allreduce pattern of a data-parallel training loop, for the MPI shim's
 * tests. Each step allreduces a few gradient-like float arrays in place (MPI_SUM), then a
 * one-element "loss". For each array it prints the error of the result against the exact sum
 * (computed with PMPI_Allreduce in double, which the shim does not intercept), whether every
 * rank got bitwise the same result, and the error of the running sum over the steps (error
 * feedback keeps it small).
 *
 *   mpirun -np 4 -x LD_PRELOAD=libterse-mpi.so -x TERSE_COMPRESSOR=quant:4 ./mpi_train
 * Options:
 *   -s N        steps (default 8)
 *   -n A,B,...  array sizes in floats (default 262144,100000,3000)
 *   -r          set MPI_ERRORS_RETURN and print each call's error class instead of aborting
 *   -q R        rank R allocates extra arrays after step 0 and caps its address space
 *               (RLIMIT_AS), so that a library that allocates later runs out of memory there
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <mpi.h>

static float
tr_gauss(uint64_t *s)
{
    double u1, u2;

    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    u1 = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    u2 = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static uint64_t
tr_hash(const void *p, size_t n)
{
    const unsigned char *c = p;
    uint64_t h             = 1469598103934665603ull;
    size_t i;

    for (i = 0; i < n; ++i) {
        h = (h ^ c[i]) * 1099511628211ull;
    }
    return h;
}

/* Caps the address space at what is mapped now plus 32 MiB and fills 4 MiB of it with extra
 * arrays: the 28 MiB left hold MPI's own temporary buffer of a 16 MiB allreduce with room to
 * spare, not what terse needs to compress it on 2 ranks (residuals, requantised sums, payload
 * and receive buffers). Measured with main's fixed mmap threshold: a cap of 20 MiB fails MPI,
 * 24..48 MiB pass MPI's buffer and refuse terse's, 56 MiB lets terse compress. */
static void
tr_squeeze(void)
{
    struct rlimit rl;
    long pages = 0, page = sysconf(_SC_PAGESIZE);
    FILE *f = fopen("/proc/self/statm", "r");
    int i;

    if ((f == NULL) || (fscanf(f, "%ld", &pages) != 1)) {
        if (f != NULL) {
            fclose(f);
        }
        return;
    }
    fclose(f);
    rl.rlim_cur = rl.rlim_max = (rlim_t)pages * (rlim_t)page + (32u << 20);
    setrlimit(RLIMIT_AS, &rl);
    for (i = 0; i < 4; ++i) {
        void *p = malloc(1u << 20);
        if (p != NULL) {
            memset(p, 1, 1u << 20); /* kept: the arrays live on */
        }
    }
}

int
main(int argc, char **argv)
{
    size_t sizes[16] = {262144, 100000, 3000};
    int nsizes = 3, steps = 8, errors_return = 0, squeeze = -1;
    int rank, nranks, opt, s, a, rc;
    float **x;
    double **run, **run_exact, *exact;

    while ((opt = getopt(argc, argv, "s:n:rq:")) != -1) {
        switch (opt) {
        case 's':
            steps = atoi(optarg);
            break;
        case 'n': {
            char *tok, *save = NULL;
            nsizes = 0;
            for (tok = strtok_r(optarg, ",", &save); (tok != NULL) && (nsizes < 16);
                 tok = strtok_r(NULL, ",", &save)) {
                sizes[nsizes++] = (size_t)strtoull(tok, NULL, 10);
            }
            break;
        }
        case 'r':
            errors_return = 1;
            break;
        case 'q':
            squeeze = atoi(optarg);
            break;
        default:
            fprintf(stderr, "usage: mpi_train [-s steps] [-n a,b,c] [-r] [-q rank]\n");
            return 2;
        }
    }
#ifdef __GLIBC__
    if (squeeze >= 0) {
        /* every large block its own mapping, unmapped when freed: what terse gives back after
         * a failed setup is address space again, whatever the heap's history (glibc otherwise
         * raises the threshold when a large block is freed and keeps later ones in its heap,
         * where fragments decide whether MPI's buffer still fits under the squeeze) */
        mallopt(M_MMAP_THRESHOLD, 128 << 10);
    }
#endif
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &nranks);
    if (errors_return) {
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    }
    x         = calloc((size_t)nsizes, sizeof(*x));
    run       = calloc((size_t)nsizes, sizeof(*run));
    run_exact = calloc((size_t)nsizes, sizeof(*run_exact));
    for (a = 0; a < nsizes; ++a) {
        x[a]         = malloc(sizes[a] * sizeof(float));
        run[a]       = calloc(sizes[a], sizeof(double));
        run_exact[a] = calloc(sizes[a], sizeof(double));
    }
    {
        size_t maxn = 1;
        for (a = 0; a < nsizes; ++a) {
            maxn = (sizes[a] > maxn) ? sizes[a] : maxn;
        }
        exact = malloc(maxn * sizeof(double)); /* before any squeeze */
    }
    for (s = 0; s < steps; ++s) {
        float loss;
        if ((s == 1) && (rank == squeeze)) {
            tr_squeeze();
        }
        for (a = 0; a < nsizes; ++a) {
            size_t n = sizes[a], i;
            uint64_t seed = 1000003ull * (uint64_t)(rank + 1) + 7919ull * (uint64_t)s + (uint64_t)a;
            double err = 0.0, norm = 0.0, rerr = 0.0, rnorm = 0.0;
            uint64_t h[2];
            for (i = 0; i < n; ++i) {
                x[a][i]  = tr_gauss(&seed) * (1.0f + (float)a);
                exact[i] = x[a][i];
            }
            for (i = 0; i < n; i += 65536) { /* in pieces: small temporary buffers in MPI */
                int m = (int)((n - i < 65536) ? n - i : 65536);
                PMPI_Allreduce(MPI_IN_PLACE, exact + i, m, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
            }
            rc = MPI_Allreduce(MPI_IN_PLACE, x[a], (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
            if (rc != MPI_SUCCESS) {
                int cls = 0;
                MPI_Error_class(rc, &cls);
                printf("rank %d step %d array %d rc %d class %d%s\n", rank, s, a, rc, cls,
                       (cls == MPI_ERR_ARG) ? " MPI_ERR_ARG" : "");
                fflush(stdout);
                continue;
            }
            for (i = 0; i < n; ++i) {
                double d = x[a][i] - exact[i];
                err += d * d;
                norm += exact[i] * exact[i];
                run[a][i] += x[a][i];
                run_exact[a][i] += exact[i];
                d = run[a][i] - run_exact[a][i];
                rerr += d * d;
                rnorm += run_exact[a][i] * run_exact[a][i];
            }
            h[0] = tr_hash(x[a], n * sizeof(float));
            h[1] = ~h[0];
            PMPI_Allreduce(MPI_IN_PLACE, h, 2, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
            if (rank == 0) {
                printf("step %d array %d count %zu relerr %.3e running %.3e identical %d\n", s, a,
                       n, sqrt(err / norm), sqrt(rerr / rnorm),
                       (h[0] == tr_hash(x[a], n * sizeof(float))) && (h[1] == ~h[0]));
                fflush(stdout);
            }
        }
        loss = (float)rank;
        MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        if ((rank == 0) && (loss != (float)(nranks * (nranks - 1) / 2))) {
            printf("step %d loss allreduce wrong: %g\n", s, loss);
        }
    }
    if (rank == 0) {
        printf("done\n");
    }
    for (a = 0; a < nsizes; ++a) {
        free(x[a]);
        free(run[a]);
        free(run_exact[a]);
    }
    free(x);
    free(run);
    free(run_exact);
    free(exact);
    MPI_Finalize();
    return 0;
}
