/*
 * Run-time resolution of the real NCCL (nccl_loader.h has the order and the reasons).
 * Links only libdl: no DT_NEEDED on libnccl anywhere in terse.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* dladdr, RTLD_NEXT, dl_iterate_phdr */
#endif
#include "terse_config.h"

#if TERSE_HAVE_NCCL

#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nccl_loader.h"

static pthread_mutex_t  nccl_lock = PTHREAD_MUTEX_INITIALIZER;
static int              nccl_state;  /* 0 not tried, 1 resolved, -1 failed (reported) */
static terse_nccl_api_t nccl_api;

/* ---------------------------------------------------------------- mapped copies */
typedef struct nccl_scan {
    int  n;
    char first[512];
    char second[512];
} nccl_scan_t;

static int
nccl_scan_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    nccl_scan_t *scan = arg;
    const char  *name = info->dlpi_name;
    const char  *base;

    if ((name == NULL) || (name[0] == '\0')) {
        return 0;
    }
    base = strrchr(name, '/');
    base = (base == NULL) ? name : base + 1;
    if (strncmp(base, "libnccl", 7) != 0) {
        return 0;
    }
    /* libnccl-net.so and other plugins are not NCCL itself */
    if ((strncmp(base, "libnccl.so", 10) != 0) && (strncmp(base, "libnccl_static", 14) != 0)) {
        return 0;
    }
    if (scan->n == 0) {
        snprintf(scan->first, sizeof(scan->first), "%s", name);
    } else if (scan->n == 1) {
        snprintf(scan->second, sizeof(scan->second), "%s", name);
    }
    ++scan->n;
    return 0;
}

/* ---------------------------------------------------------------- symbol lookup */
/* The object holding this loader: symbols resolving into it are the shim's own wrappers. */
static const void *
nccl_self_base(void)
{
    Dl_info info;

    if (dladdr((const void *)&nccl_self_base, &info) == 0) {
        return NULL;
    }
    return info.dli_fbase;
}

static int
nccl_is_self(const void *sym)
{
    Dl_info info;

    return (sym != NULL) && (dladdr(sym, &info) != 0) && (info.dli_fbase == nccl_self_base());
}

/* pnccl<name>, then nccl<name>, from handle (or RTLD_NEXT); NULL when absent or self. */
static void *
nccl_sym(void *handle, const char *name)
{
    char  full[96];
    void *sym;

    snprintf(full, sizeof(full), "pnccl%s", name);
    sym = dlsym(handle, full);
    if ((sym != NULL) && !nccl_is_self(sym)) {
        return sym;
    }
    snprintf(full, sizeof(full), "nccl%s", name);
    sym = dlsym(handle, full);
    if ((sym != NULL) && !nccl_is_self(sym)) {
        return sym;
    }
    return NULL;
}

#define NCCL_REQUIRED(_h, _name, _fail)                                                        \
    do {                                                                                       \
        *(void **)&api->_name = nccl_sym((_h), #_name);                                         \
        if (api->_name == NULL) {                                                              \
            snprintf((_fail), 64, "nccl%s", #_name);                                           \
            return 0;                                                                          \
        }                                                                                      \
    } while (0)

/* Fills api from handle. Returns 1, or 0 with the missing symbol in missing. */
static int
nccl_fill(void *handle, terse_nccl_api_t *api, char *missing)
{
    Dl_info info;

    NCCL_REQUIRED(handle, AllReduce, missing);
    NCCL_REQUIRED(handle, AllGather, missing);
    NCCL_REQUIRED(handle, Send, missing);
    NCCL_REQUIRED(handle, Recv, missing);
    NCCL_REQUIRED(handle, Broadcast, missing);
    NCCL_REQUIRED(handle, GroupStart, missing);
    NCCL_REQUIRED(handle, GroupEnd, missing);
    NCCL_REQUIRED(handle, CommSplit, missing);
    NCCL_REQUIRED(handle, CommCount, missing);
    NCCL_REQUIRED(handle, CommUserRank, missing);
    NCCL_REQUIRED(handle, CommCuDevice, missing);
    NCCL_REQUIRED(handle, CommDestroy, missing);
    NCCL_REQUIRED(handle, CommAbort, missing);
    NCCL_REQUIRED(handle, CommGetAsyncError, missing);
    NCCL_REQUIRED(handle, GetErrorString, missing);
    NCCL_REQUIRED(handle, GetVersion, missing);
    NCCL_REQUIRED(handle, GetUniqueId, missing);
    NCCL_REQUIRED(handle, CommInitRank, missing);
    NCCL_REQUIRED(handle, CommInitRankConfig, missing);
    NCCL_REQUIRED(handle, CommInitAll, missing);
    *(void **)&api->GetLastError = nccl_sym(handle, "GetLastError");
    if (api->GetVersion(&api->version) != ncclSuccess) {
        api->version = 0;
    }
    api->path[0] = '\0';
    if (dladdr(*(void **)&api->AllReduce, &info) != 0) {
        snprintf(api->path, sizeof(api->path), "%s", info.dli_fname);
    }
    return 1;
}

/* A handle for the already-mapped object containing sym; NULL if none. */
static void *
nccl_handle_of(const void *sym)
{
    Dl_info info;

    if ((sym == NULL) || (dladdr(sym, &info) == 0) || (info.dli_fname == NULL)) {
        return NULL;
    }
    return dlopen(info.dli_fname, RTLD_NOLOAD | RTLD_LAZY);
}

static int
nccl_try(void *handle, const char *how, terse_nccl_api_t *api, char *missing)
{
    if (handle == NULL) {
        return 0;
    }
    if (!nccl_fill(handle, api, missing)) {
        terse_debug(TERSE_LOG_COMM, "nccl via %s lacks %s", how, missing);
        return 0;
    }
    api->how = how;
    return 1;
}

static int
nccl_resolve(const void *caller, terse_nccl_api_t *api, nccl_scan_t *scan, char *missing)
{
    const terse_config_t *cfg = (terse_init() == TERSE_OK) ? terse__config() : NULL;
    const char *forced = (cfg != NULL) ? cfg->NCCL_LIBRARY : getenv("TERSE_NCCL_LIBRARY");
    void       *handle;
    Dl_info     info;

    /* 1. the user's explicit choice */
    if ((forced != NULL) && (forced[0] != '\0')) {
        handle = dlopen(forced, RTLD_NOLOAD | RTLD_LAZY);
        if (handle == NULL) {
            terse_info(TERSE_LOG_COMM, "loading TERSE_NCCL_LIBRARY %s (not mapped yet)", forced);
            handle = dlopen(forced, RTLD_LAZY | RTLD_LOCAL);
        }
        if (handle == NULL) {
            terse_error(TERSE_LOG_COMM, "cannot open TERSE_NCCL_LIBRARY %s: %s", forced,
                        dlerror());
            return 0;
        }
        if (nccl_try(handle, "TERSE_NCCL_LIBRARY", api, missing)) {
            return 1;
        }
        terse_error(TERSE_LOG_COMM, "TERSE_NCCL_LIBRARY %s lacks %s", forced, missing);
        return 0;
    }
    /* 2. the copy the caller's object links (searches its dependency tree) */
    if ((caller != NULL) && (dladdr(caller, &info) != 0) && (info.dli_fname != NULL) &&
        (info.dli_fbase != nccl_self_base())) {
        handle = dlopen(info.dli_fname, RTLD_NOLOAD | RTLD_LAZY);
        if (nccl_try(handle, "caller", api, missing)) {
            return 1;
        }
    }
    /* 3. the next definition in the global scope */
    handle = nccl_handle_of(nccl_sym(RTLD_NEXT, "AllReduce"));
    if (nccl_try(handle, "RTLD_NEXT", api, missing)) {
        return 1;
    }
    /* 4. a copy mapped under the soname */
    handle = dlopen("libnccl.so.2", RTLD_NOLOAD | RTLD_LAZY);
    if (nccl_try(handle, "libnccl.so.2", api, missing)) {
        return 1;
    }
    /* 5. whatever libnccl is mapped */
    if (scan->n > 0) {
        handle = dlopen(scan->first, RTLD_NOLOAD | RTLD_LAZY);
        if (nccl_try(handle, "mapped", api, missing)) {
            return 1;
        }
    }
    return 0;
}

terse_status_t
terse__nccl_api(const void *caller, const terse_nccl_api_t **api_p)
{
    terse_status_t status = TERSE_OK;
    nccl_scan_t    scan;
    char           missing[64] = "ncclAllReduce";

    if (api_p == NULL) {
        return TERSE_ERR_INVALID;
    }
    pthread_mutex_lock(&nccl_lock);
    if (nccl_state == 0) {
        memset(&scan, 0, sizeof(scan));
        dl_iterate_phdr(nccl_scan_cb, &scan);
        if (nccl_resolve(caller, &nccl_api, &scan, missing)) {
            nccl_api.copies = scan.n;
            nccl_state      = 1;
            terse_info(TERSE_LOG_COMM, "nccl %d from %s (via %s)", nccl_api.version,
                       nccl_api.path, nccl_api.how);
            if (scan.n > 1) {
                terse_warn(TERSE_LOG_COMM, "%d libnccl copies are mapped (%s, %s, ...): terse "
                           "uses %s (via %s); set TERSE_NCCL_LIBRARY to choose", scan.n,
                           scan.first, scan.second, nccl_api.path, nccl_api.how);
            }
        } else {
            nccl_state = -1;
            terse_error(TERSE_LOG_COMM, "no usable libnccl is loaded in this process (%d mapped; "
                        "last missing symbol %s): load NCCL first or set TERSE_NCCL_LIBRARY",
                        scan.n, missing);
        }
    }
    if (nccl_state == 1) {
        *api_p = &nccl_api;
    } else {
        *api_p = NULL;
        status = TERSE_ERR_UNSUPPORTED;
    }
    pthread_mutex_unlock(&nccl_lock);
    return status;
}

terse_status_t
terse__nccl_status(const terse_nccl_api_t *api, ncclResult_t result, const char *what)
{
    if ((result == ncclSuccess) || (result == ncclInProgress)) {
        return TERSE_OK;
    }
    terse_error(TERSE_LOG_COMM, "%s failed: %s", what,
                (api != NULL) ? api->GetErrorString(result) : "nccl not resolved");
    return TERSE_ERR_NCCL;
}

#else

typedef int terse_nccl_loader_empty_t; /* ISO C wants a non-empty translation unit */

#endif /* TERSE_HAVE_NCCL */
