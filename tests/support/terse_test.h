/*
 * Helpers shared by every CUnit suite: status assertions, deterministic inputs (gaussian,
 * low-rank, real gradients from shared/data/gradients), and guarded buffers whose neighbouring
 * pages are unmapped, so an out-of-bounds read or write crashes even without sanitizers.
 */
#ifndef TERSE_TEST_H
#define TERSE_TEST_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include <CUnit/CUnit.h>

#include "terse.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_TEST_STATUS(_expr, _expected)                                                    \
    do {                                                                                       \
        terse_status_t _got = (_expr);                                                         \
        if (_got != (_expected)) {                                                             \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s\n", __FILE__, __LINE__, #_expr, \
                    terse_status_name(_got), terse_status_name(_expected));                    \
        }                                                                                      \
        CU_ASSERT_EQUAL(_got, (_expected));                                                    \
    } while (0)

#define TERSE_TEST_OK(_expr) TERSE_TEST_STATUS(_expr, TERSE_OK)

/* Asserts |a - b| <= tol, printing both on failure. */
#define TERSE_TEST_NEAR(_a, _b, _tol)                                                          \
    do {                                                                                       \
        double _x = (double)(_a), _y = (double)(_b), _t = (double)(_tol);                      \
        if (!(fabs(_x - _y) <= _t)) {                                                          \
            fprintf(stderr, "%s:%d: %s = %.9g vs %s = %.9g (tol %.3g)\n", __FILE__, __LINE__,   \
                    #_a, _x, #_b, _y, _t);                                                     \
        }                                                                                      \
        CU_ASSERT(fabs(_x - _y) <= _t);                                                        \
    } while (0)

/* Called by the generated runner. A runner that needs more (MPI_Init) defines
 * terse_test_runner_init / terse_test_runner_finish; weak defaults do nothing. */
int  terse_test_init(int argc, char **argv);
void terse_test_finish(void);
int  terse_test_verbose(void);
int  terse_test_runner_init(int argc, char **argv);
void terse_test_runner_finish(void);

/* Deterministic N(0, 1) values from the Philox stream of `seed` (Box-Muller). */
void terse_test_gaussian(uint64_t seed, float *out, size_t n);
/* rows x cols, row-major: sum of `rank` outer products of gaussians / sqrt(rank), plus noise *
 * N(0, 1). */
void terse_test_lowrank(uint64_t seed, size_t rows, size_t cols, size_t rank, float noise,
                        float *out);
/* Uniform [0, 1) doubles. */
double terse_test_uniform(uint64_t seed, uint64_t i);

/* Real gradients: reads `count` floats at `offset` bytes of file `name` in TERSE_DATA_DIR.
 * Returns a malloc'd array (free()), or NULL with a message when the file is missing. */
float *terse_test_load_gradient(const char *name, size_t offset, size_t count);
/* Looks a gradient up in lm_grads_manifest.txt by (name, step); fills shape; NULL if absent. */
float *terse_test_load_named_gradient(const char *param, int step, size_t *rows_p,
                                      size_t *cols_p);

/* A buffer of `bytes` that ends exactly at an unmapped page (and starts after one), so any
 * access past either end faults. Free with terse_test_guarded_free. */
void *terse_test_guarded_alloc(size_t bytes);
void  terse_test_guarded_free(void *p, size_t bytes);

/* The specs of `fixed` (NULL-terminated), plus one spec (the middle of its parameter grid) for
 * every registered family they do not name, so that a family added to the registry is exercised
 * too. Writes at most max entries and a NULL into out[0..max]; returns the count. The strings of
 * added specs live in static storage (one call at a time). */
int terse_test_spec_list(const char *const *fixed, const char **out, int max);

/* Sum of squares in double. */
double terse_test_sq_norm(const float *x, size_t n);
double terse_test_sq_diff(const float *x, const float *y, size_t n);

#ifdef __cplusplus
}
#endif

#endif
