/*
 * Helpers of the gpu runners (tests/<folder>/test_*_cuda.c): device copies of host data and
 * typed inputs. Only built when TERSE_HAVE_CUDA.
 */
#ifndef TERSE_TEST_CUDA_H
#define TERSE_TEST_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "terse.h"

/* A device buffer of `bytes` (at least 1), zeroed, holding a copy of host when it is not NULL.
 * Fails the test fatally when CUDA fails. Free with terse__cuda_free. */
void *terse_test_cuda_dev(const void *host, size_t bytes);
/* Copies bytes from device memory into host. */
void  terse_test_cuda_get(void *host, const void *dev, size_t bytes);
/* n values of dtype drawn from sigma * N(0, 1) (inject 1: a NaN, 2: +Inf at n / 2), malloc'd. */
void *terse_test_input(uint64_t seed, size_t n, terse_dtype_t dt, float sigma, int inject);
/* 1 when every one of the n values of dtype at x is NaN. */
int   terse_test_all_nan(const void *x, terse_dtype_t dt, size_t n);

#endif
