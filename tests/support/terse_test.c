#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "terse_test.h"
#include "terse_config.h"
#include "rng.h"
#include "compressor.h"

static int test_verbose;

__attribute__((weak)) int
terse_test_runner_init(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

__attribute__((weak)) void
terse_test_runner_finish(void)
{
}

int
terse_test_init(int argc, char **argv)
{
    const char *v = getenv("TERSETEST_VERBOSE");

    test_verbose = (v != NULL) && (v[0] == '1');
    return terse_test_runner_init(argc, argv);
}

void
terse_test_finish(void)
{
    terse_test_runner_finish();
}

int
terse_test_verbose(void)
{
    return test_verbose;
}

double
terse_test_uniform(uint64_t seed, uint64_t i)
{
    terse_rng_t r = terse_rng_make(seed, TERSE_RNG_TEST, 0, 0, 0);
    uint32_t a    = terse_rng_u32(&r, 2 * i);
    uint32_t b    = terse_rng_u32(&r, 2 * i + 1);

    return (double)(((uint64_t)a << 21) | (b >> 11)) / 9007199254740992.0;
}

void
terse_test_gaussian(uint64_t seed, float *out, size_t n)
{
    size_t i;

    for (i = 0; i < n; i += 2) {
        double u1 = terse_test_uniform(seed, i);
        double u2 = terse_test_uniform(seed, i + 1);
        double r  = sqrt(-2.0 * log(1.0 - u1));
        out[i]    = (float)(r * cos(2.0 * M_PI * u2));
        if (i + 1 < n) {
            out[i + 1] = (float)(r * sin(2.0 * M_PI * u2));
        }
    }
}

void
terse_test_lowrank(uint64_t seed, size_t rows, size_t cols, size_t rank, float noise, float *out)
{
    float *u = malloc(rows * rank * sizeof(float));
    float *v = malloc(cols * rank * sizeof(float));
    float scale = 1.0f / sqrtf((float)(rank > 0 ? rank : 1));
    size_t i, j, k;

    terse_test_gaussian(seed, u, rows * rank);
    terse_test_gaussian(seed + 1, v, cols * rank);
    terse_test_gaussian(seed + 2, out, rows * cols);
    for (i = 0; i < rows; ++i) {
        for (j = 0; j < cols; ++j) {
            float s = 0.0f;
            for (k = 0; k < rank; ++k) {
                s += u[i * rank + k] * v[j * rank + k];
            }
            out[i * cols + j] = s * scale + noise * out[i * cols + j];
        }
    }
    free(u);
    free(v);
}

float *
terse_test_load_gradient(const char *name, size_t offset, size_t count)
{
    char path[1024];
    FILE *f;
    float *data;

    snprintf(path, sizeof(path), "%s/%s", TERSE_DATA_DIR, name);
    f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "gradient file %s is missing (TERSE_DATA_DIR)\n", path);
        return NULL;
    }
    data = malloc(count * sizeof(float) + 1);
    if ((data == NULL) || (fseek(f, (long)offset, SEEK_SET) != 0) ||
        (fread(data, sizeof(float), count, f) != count)) {
        fprintf(stderr, "cannot read %zu floats at %zu of %s\n", count, offset, path);
        free(data);
        data = NULL;
    }
    fclose(f);
    return data;
}

float *
terse_test_load_named_gradient(const char *param, int step, size_t *rows_p, size_t *cols_p)
{
    char path[1024], line[1024], name[256], file[256];
    size_t rows, cols, off;
    int s;
    FILE *f;

    snprintf(path, sizeof(path), "%s/lm_grads_manifest.txt", TERSE_DATA_DIR);
    f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "manifest %s is missing (TERSE_DATA_DIR)\n", path);
        return NULL;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        if ((line[0] == '#') ||
            (sscanf(line, "%255s %d %zu %zu %255s %zu", name, &s, &rows, &cols, file, &off) != 6)) {
            continue;
        }
        if ((strcmp(name, param) == 0) && (s == step)) {
            fclose(f);
            *rows_p = rows;
            *cols_p = cols;
            return terse_test_load_gradient(file, off, rows * cols);
        }
    }
    fclose(f);
    fprintf(stderr, "gradient %s at step %d not in the manifest\n", param, step);
    return NULL;
}

void *
terse_test_guarded_alloc(size_t bytes)
{
    size_t page  = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (bytes + page - 1) / page;
    size_t total = (pages + 2) * page;
    char *base   = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (base == MAP_FAILED) {
        return NULL;
    }
    mprotect(base, page, PROT_NONE);
    mprotect(base + (pages + 1) * page, page, PROT_NONE);
    /* the buffer ends exactly where the trailing guard page starts */
    return base + (pages + 1) * page - bytes;
}

void
terse_test_guarded_free(void *p, size_t bytes)
{
    size_t page  = (size_t)sysconf(_SC_PAGESIZE);
    size_t pages = (bytes + page - 1) / page;
    char *end    = (char *)p + bytes;
    char *base   = end - (pages + 1) * page;

    munmap(base, (pages + 2) * page);
}

double
terse_test_sq_norm(const float *x, size_t n)
{
    double s = 0.0;
    size_t i;

    for (i = 0; i < n; ++i) {
        s += (double)x[i] * (double)x[i];
    }
    return s;
}

double
terse_test_sq_diff(const float *x, const float *y, size_t n)
{
    double s = 0.0;
    size_t i;

    for (i = 0; i < n; ++i) {
        double d = (double)x[i] - (double)y[i];
        s += d * d;
    }
    return s;
}

int
terse_test_spec_list(const char *const *fixed, const char **out, int max)
{
    static char extra[32][TERSE_NAME_MAX];
    int n = 0, i, j, e = 0;

    for (i = 0; (fixed[i] != NULL) && (n < max); ++i) {
        out[n++] = fixed[i];
    }
    for (i = 0; (terse__cmp_builtin[i] != NULL) && (n < max) && (e < 32); ++i) {
        const terse_cmp_ops_t *ops = terse__cmp_builtin[i];
        size_t len = strlen(ops->name), g = 0;
        int named = 0;
        for (j = 0; fixed[j] != NULL; ++j) {
            if ((strncmp(fixed[j], ops->name, len) == 0) &&
                ((fixed[j][len] == '\0') || (fixed[j][len] == ':'))) {
                named = 1;
            }
        }
        if (named) {
            continue;
        }
        while (ops->grid[g] >= 0.0) {
            ++g;
        }
        terse__cmp_spec_format(ops, (g > 0) ? ops->grid[g / 2] : 0.0, extra[e], TERSE_NAME_MAX);
        out[n++] = extra[e++];
    }
    out[n] = NULL;
    return n;
}
