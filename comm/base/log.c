/*
 * Logging. Line prefix: "host:pid:rank [dev] TERSE WARN file:line func: message", so output
 * of many ranks can be merged and grepped. Messages are lowercase, with no '='.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "terse_base.h"

int terse__log_level      = TERSE_LOG_LEVEL_WARN;
unsigned terse__log_mask  = TERSE_LOG_ALL;

static int log_rank       = -1;
static int log_device     = -1;
static FILE *log_file     = NULL; /* NULL: stderr */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const log_level_names[] = {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"};
static const char *const log_subsys_names[] = {"base", "cmp", "comm", "sched", "shim", "bench"};

void
terse__log_set_rank(int rank)
{
    log_rank = rank;
}

void
terse__log_set_device(int device)
{
    log_device = device;
}

static const char *
log_basename(const char *file)
{
    const char *slash = strrchr(file, '/');

    return (slash != NULL) ? (slash + 1) : file;
}

void
terse__log(terse_log_level_t level, unsigned subsys, const char *file, int line,
           const char *func, const char *fmt, ...)
{
    char host[64];
    char where[32] = "";
    char msg[1024];
    va_list ap;
    FILE *out;

    (void)subsys;
    if (gethostname(host, sizeof(host)) != 0) {
        snprintf(host, sizeof(host), "?");
    }
    host[sizeof(host) - 1] = '\0';
    if (log_device >= 0) {
        snprintf(where, sizeof(where), " [%d]", log_device);
    }

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    pthread_mutex_lock(&log_lock);
    out = (log_file != NULL) ? log_file : stderr;
    if (log_rank >= 0) {
        fprintf(out, "%s:%d:%d%s TERSE %s %s:%d %s: %s\n", host, (int)getpid(), log_rank, where,
                log_level_names[level], log_basename(file), line, func, msg);
    } else {
        fprintf(out, "%s:%d%s TERSE %s %s:%d %s: %s\n", host, (int)getpid(), where,
                log_level_names[level], log_basename(file), line, func, msg);
    }
    fflush(out);
    pthread_mutex_unlock(&log_lock);
}

void
terse__log_trail(const char *file, int line, const char *func, terse_status_t status)
{
    if (terse__log_on(TERSE_LOG_LEVEL_DEBUG, TERSE_LOG_ALL)) {
        terse__log(TERSE_LOG_LEVEL_DEBUG, TERSE_LOG_ALL, file, line, func, "-> %s",
                   terse_status_name(status));
    }
}

/* "all", "cmp,comm", "^shim" (everything but shim). Unknown names are ignored with a warning
 * by the parser (env.c validates them first). */
static unsigned
log_parse_subsys(const char *spec)
{
    char buf[TERSE_ENV_STR_MAX];
    char *tok, *save = NULL;
    unsigned mask = 0;
    int invert    = 0;
    size_t i;

    if ((spec == NULL) || (spec[0] == '\0') || (strcmp(spec, "all") == 0)) {
        return TERSE_LOG_ALL;
    }
    if (spec[0] == '^') {
        invert = 1;
        ++spec;
    }
    snprintf(buf, sizeof(buf), "%s", spec);
    for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        if (strcmp(tok, "all") == 0) {
            mask |= TERSE_LOG_ALL;
        }
        for (i = 0; i < sizeof(log_subsys_names) / sizeof(log_subsys_names[0]); ++i) {
            if (strcmp(tok, log_subsys_names[i]) == 0) {
                mask |= 1u << i;
            }
        }
    }
    return invert ? (TERSE_LOG_ALL & ~mask) : mask;
}

int
terse__log_subsys_valid(const char *spec)
{
    char buf[TERSE_ENV_STR_MAX];
    char *tok, *save = NULL;
    size_t i;
    int found;

    if (spec[0] == '^') {
        ++spec;
    }
    snprintf(buf, sizeof(buf), "%s", spec);
    for (tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        found = (strcmp(tok, "all") == 0);
        for (i = 0; i < sizeof(log_subsys_names) / sizeof(log_subsys_names[0]); ++i) {
            found |= (strcmp(tok, log_subsys_names[i]) == 0);
        }
        if (!found) {
            return 0;
        }
    }
    return 1;
}

void
terse__log_configure(const terse_config_t *cfg)
{
    char path[TERSE_ENV_STR_MAX];
    FILE *f;

    terse__log_level = cfg->LOG_LEVEL;
    terse__log_mask  = log_parse_subsys(cfg->LOG_SUBSYS);
    if ((cfg->LOG_FILE[0] != '\0') && (log_file == NULL) &&
        (terse__path_expand(cfg->LOG_FILE, log_rank, path, sizeof(path)) == TERSE_OK)) {
        f = fopen(path, "a");
        if (f == NULL) {
            terse_warn(TERSE_LOG_BASE, "cannot open log file %s: %s", path, strerror(errno));
        } else {
            log_file = f;
        }
    }
}
