/* Status strings, generated from TERSE_STATUS_MAP; version; small utilities. */
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "terse_base.h"

const char *
terse_status_str(terse_status_t status)
{
    switch (status) {
#define TERSE_STATUS_CASE(_name, _val, _str)                                                   \
    case TERSE_##_name:                                                                        \
        return _str;
        TERSE_STATUS_MAP(TERSE_STATUS_CASE)
#undef TERSE_STATUS_CASE
    }
    return "unknown status";
}

const char *
terse_status_name(terse_status_t status)
{
    switch (status) {
#define TERSE_STATUS_CASE(_name, _val, _str)                                                   \
    case TERSE_##_name:                                                                        \
        return #_name;
        TERSE_STATUS_MAP(TERSE_STATUS_CASE)
#undef TERSE_STATUS_CASE
    }
    return "UNKNOWN";
}

void
terse_version(int *major_p, int *minor_p, int *patch_p)
{
    if (major_p != NULL) {
        *major_p = TERSE_VERSION_MAJOR;
    }
    if (minor_p != NULL) {
        *minor_p = TERSE_VERSION_MINOR;
    }
    if (patch_p != NULL) {
        *patch_p = TERSE_VERSION_PATCH;
    }
}

const char *
terse_version_string(void)
{
    return TERSE_VERSION_STRING " (git " TERSE_GIT_REVISION ")";
}

size_t
terse_dtype_size(terse_dtype_t dtype)
{
    switch (dtype) {
    case TERSE_FLOAT32:
        return 4;
    case TERSE_FLOAT16:
    case TERSE_BFLOAT16:
        return 2;
    case TERSE_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

uint64_t
terse__hash64(const void *data, size_t len, uint64_t seed)
{
    const unsigned char *p = data;
    uint64_t h             = 0xcbf29ce484222325ull ^ seed;
    size_t i;

    for (i = 0; i < len; ++i) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

double
terse__time_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (1e-9 * (double)ts.tv_nsec);
}

terse_status_t
terse__path_expand(const char *pattern, int rank, char *out, size_t out_len)
{
    char host[256];
    size_t n = 0;
    const char *p;
    int w;

    if ((pattern == NULL) || (out == NULL) || (out_len == 0)) {
        return TERSE_ERR_INVALID;
    }
    if (gethostname(host, sizeof(host)) != 0) {
        snprintf(host, sizeof(host), "unknown");
    }
    host[sizeof(host) - 1] = '\0';

    for (p = pattern; *p != '\0'; ++p) {
        w = 0;
        if ((p[0] == '%') && (p[1] == 'h')) {
            w = snprintf(out + n, out_len - n, "%s", host);
            ++p;
        } else if ((p[0] == '%') && (p[1] == 'p')) {
            w = snprintf(out + n, out_len - n, "%d", (int)getpid());
            ++p;
        } else if ((p[0] == '%') && (p[1] == 'r')) {
            w = snprintf(out + n, out_len - n, "%d", rank);
            ++p;
        } else if (n + 1 < out_len) {
            out[n] = *p;
            out[n + 1] = '\0';
            w          = 1;
        } else {
            w = (int)out_len; /* force the overflow branch */
        }
        if ((w < 0) || ((size_t)w >= out_len - n)) {
            terse_error(TERSE_LOG_BASE, "path %s is too long after expansion", pattern);
            return TERSE_ERR_INVALID;
        }
        n += (size_t)w;
    }
    out[n] = '\0';
    return TERSE_OK;
}
