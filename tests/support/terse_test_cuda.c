#include <math.h>
#include <stdlib.h>

#include "terse_test.h"
#include "terse_test_cuda.h"
#include "compressor.h"
#include "cuda_util.h"

void *
terse_test_cuda_dev(const void *host, size_t bytes)
{
    void *d = NULL;

    CU_ASSERT_FATAL(terse__cuda_calloc(&d, (bytes > 0) ? bytes : 1) == TERSE_OK);
    if ((host != NULL) && (bytes > 0)) {
        CU_ASSERT_FATAL(terse__cuda_memcpy(d, host, bytes) == TERSE_OK);
    }
    return d;
}

void
terse_test_cuda_get(void *host, const void *dev, size_t bytes)
{
    if (bytes > 0) {
        CU_ASSERT_FATAL(terse__cuda_memcpy(host, dev, bytes) == TERSE_OK);
    }
}

void *
terse_test_input(uint64_t seed, size_t n, terse_dtype_t dt, float sigma, int inject)
{
    float *x  = malloc((n + 1) * sizeof(float));
    void *out = malloc((n + 1) * 4);
    size_t i;

    terse_test_gaussian(seed, x, n);
    for (i = 0; i < n; ++i) {
        x[i] *= sigma;
    }
    if ((inject != 0) && (n > 0)) {
        x[n / 2] = (inject == 1) ? NAN : INFINITY;
    }
    terse__convert_from_f32(x, 1.0f, out, dt, n);
    free(x);
    return out;
}

int
terse_test_all_nan(const void *x, terse_dtype_t dt, size_t n)
{
    size_t i;

    for (i = 0; i < n; ++i) {
        if (!isnan(terse__load_f32(x, dt, i))) {
            return 0;
        }
    }
    return 1;
}
