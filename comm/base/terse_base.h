/*
 * Internal base of terse: logging, CHECK macros, the configuration read from TERSE_*, and
 * small utilities. Valid in .c and .cu files (no GNU statement expressions).
 */
#ifndef TERSE_BASE_H
#define TERSE_BASE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "terse.h"
#include "terse_config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TERSE_EXPORT TERSE_API
#define TERSE_HIDDEN __attribute__((visibility("hidden")))

/* ---------------------------------------------------------------- logging */
typedef enum terse_log_level {
    TERSE_LOG_LEVEL_ERROR = 0,
    TERSE_LOG_LEVEL_WARN  = 1,
    TERSE_LOG_LEVEL_INFO  = 2,
    TERSE_LOG_LEVEL_DEBUG = 3,
    TERSE_LOG_LEVEL_TRACE = 4
} terse_log_level_t;

/* Subsystems (TERSE_LOG_SUBSYS). Keep in the order of terse__log_subsys_names. */
typedef enum terse_log_subsys {
    TERSE_LOG_BASE  = 1u << 0,
    TERSE_LOG_CMP   = 1u << 1,
    TERSE_LOG_COMM  = 1u << 2,
    TERSE_LOG_SCHED = 1u << 3,
    TERSE_LOG_SHIM  = 1u << 4,
    TERSE_LOG_BENCH = 1u << 5,
    TERSE_LOG_ALL   = (1u << 6) - 1
} terse_log_subsys_t;

extern int      terse__log_level;  /* current level; starts at WARN */
extern unsigned terse__log_mask;   /* subsystem mask; starts at ALL */

void terse__log(terse_log_level_t level, unsigned subsys, const char *file, int line,
                const char *func, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Debug-level breadcrumb of a propagated error: "func -> ERR_INVALID". */
void terse__log_trail(const char *file, int line, const char *func, terse_status_t status);
/* Rank and device shown in the line prefix; -1 hides them. */
void terse__log_set_rank(int rank);
void terse__log_set_device(int device);
/* Applies TERSE_LOG_LEVEL/SUBSYS/FILE from a loaded configuration. */
struct terse_config;
void terse__log_configure(const struct terse_config *cfg);

#define terse__log_on(_lvl, _subsys)                                                           \
    (((int)(_lvl) <= terse__log_level) && ((terse__log_mask & (unsigned)(_subsys)) != 0))

#define TERSE__LOG(_lvl, _subsys, ...)                                                         \
    do {                                                                                       \
        if (terse__log_on(_lvl, _subsys)) {                                                    \
            terse__log(_lvl, _subsys, __FILE__, __LINE__, __func__, __VA_ARGS__);              \
        }                                                                                      \
    } while (0)

#define terse_error(_subsys, ...) TERSE__LOG(TERSE_LOG_LEVEL_ERROR, _subsys, __VA_ARGS__)
#define terse_warn(_subsys, ...)  TERSE__LOG(TERSE_LOG_LEVEL_WARN, _subsys, __VA_ARGS__)
#define terse_info(_subsys, ...)  TERSE__LOG(TERSE_LOG_LEVEL_INFO, _subsys, __VA_ARGS__)
#define terse_debug(_subsys, ...) TERSE__LOG(TERSE_LOG_LEVEL_DEBUG, _subsys, __VA_ARGS__)
#define terse_trace(_subsys, ...) TERSE__LOG(TERSE_LOG_LEVEL_TRACE, _subsys, __VA_ARGS__)

/* Warn only the first time this call site is reached (per process). */
#define terse_warn_once(_subsys, ...)                                                          \
    do {                                                                                       \
        static int _terse_warned;                                                              \
        if (!__atomic_exchange_n(&_terse_warned, 1, __ATOMIC_RELAXED)) {                      \
            terse_warn(_subsys, __VA_ARGS__);                                                  \
        }                                                                                      \
    } while (0)

/* ---------------------------------------------------------------- CHECK macros */
/* Only the first function to detect an error logs it; callers add a debug breadcrumb. */
#define TERSE_CHECK(_call)                                                                     \
    do {                                                                                       \
        terse_status_t _terse_st = (_call);                                                    \
        if (_terse_st < 0) {                                                                   \
            terse__log_trail(__FILE__, __LINE__, __func__, _terse_st);                         \
            return _terse_st;                                                                  \
        }                                                                                      \
    } while (0)

#define TERSE_CHECK_GOTO(_call, _status, _label)                                               \
    do {                                                                                       \
        (_status) = (_call);                                                                   \
        if ((_status) < 0) {                                                                   \
            terse__log_trail(__FILE__, __LINE__, __func__, (_status));                         \
            goto _label;                                                                       \
        }                                                                                      \
    } while (0)

/* ---------------------------------------------------------------- configuration */
#define TERSE_ENV_STR_MAX 512

typedef enum terse_env_type {
    TERSE_ENV_TYPE_ENUM,
    TERSE_ENV_TYPE_BOOL,
    TERSE_ENV_TYPE_INT,
    TERSE_ENV_TYPE_DOUBLE,
    TERSE_ENV_TYPE_SIZE,
    TERSE_ENV_TYPE_SPEC,
    TERSE_ENV_TYPE_STRING,
    TERSE_ENV_TYPE_PATH
} terse_env_type_t;

#define TERSE_ENV_CTYPE_ENUM   int
#define TERSE_ENV_CTYPE_BOOL   int
#define TERSE_ENV_CTYPE_INT    long
#define TERSE_ENV_CTYPE_DOUBLE double
#define TERSE_ENV_CTYPE_SIZE   size_t
#define TERSE_ENV_CTYPE_SPEC   char
#define TERSE_ENV_CTYPE_STRING char
#define TERSE_ENV_CTYPE_PATH   char
#define TERSE_ENV_DIM_ENUM
#define TERSE_ENV_DIM_BOOL
#define TERSE_ENV_DIM_INT
#define TERSE_ENV_DIM_DOUBLE
#define TERSE_ENV_DIM_SIZE
#define TERSE_ENV_DIM_SPEC   [TERSE_ENV_STR_MAX]
#define TERSE_ENV_DIM_STRING [TERSE_ENV_STR_MAX]
#define TERSE_ENV_DIM_PATH   [TERSE_ENV_STR_MAX]

/* Index of every variable: TERSE_ENV_ID_LOG_LEVEL, ... */
typedef enum terse_env_id {
#define TERSE_ENV(_name, _type, _def, _acc, _doc) TERSE_ENV_ID_##_name,
#include "env_table.h"
#undef TERSE_ENV
    TERSE_ENV_COUNT
} terse_env_id_t;

/* The configuration: one member per variable, named as the variable without TERSE_. */
typedef struct terse_config {
#define TERSE_ENV(_name, _type, _def, _acc, _doc)                                              \
    TERSE_ENV_CTYPE_##_type _name TERSE_ENV_DIM_##_type;
#include "env_table.h"
#undef TERSE_ENV
    unsigned char is_set[TERSE_ENV_COUNT]; /* 1 where the environment set it */
} terse_config_t;

typedef struct terse_env_desc {
    const char      *name;     /* "TERSE_LOG_LEVEL" */
    terse_env_type_t type;
    const char      *def;
    const char      *accepted;
    const char      *doc;
} terse_env_desc_t;

extern const terse_env_desc_t terse__env_table[TERSE_ENV_COUNT];

/* Validates a compressor spec ("quant:4"). Provided by compressors/compressor.c. */
terse_status_t terse__cmp_spec_validate(const char *spec, char *why, size_t why_len);

/* Parses the configuration from an environ-style array (NULL-terminated "NAME=value").
 * Every bad value is logged at ERROR with its accepted values; unknown TERSE_* names are
 * logged at WARN (unless warn_unknown is 0).
 *   [out] cfg  filled with defaults, then the values found; valid only on TERSE_OK
 * Returns TERSE_OK or TERSE_ERR_INVALID (first bad variable). Pure: no globals touched. */
terse_status_t terse__config_parse(char *const *envp, int warn_unknown, terse_config_t *cfg);

/* The process configuration, read once from `environ` by terse_init(). Returns NULL until
 * terse_init() succeeded. */
const terse_config_t *terse__config(void);

/* Writes the variable table: plain text (terse-info -e) or the README's Markdown table. */
void terse__env_print(void *file /* FILE * */, int markdown);

/* ---------------------------------------------------------------- utilities */
/* Expands %h (host), %p (pid), %r (rank) in pattern into out. */
terse_status_t terse__path_expand(const char *pattern, int rank, char *out, size_t out_len);
/* 64-bit FNV-1a, for agreement hashes and checksums. */
uint64_t terse__hash64(const void *data, size_t len, uint64_t seed);
/* Monotonic time in seconds. */
double terse__time_now(void);

#define TERSE_MIN(_a, _b) (((_a) < (_b)) ? (_a) : (_b))
#define TERSE_MAX(_a, _b) (((_a) > (_b)) ? (_a) : (_b))
#define TERSE_DIV_UP(_a, _b) (((_a) + (_b) - 1) / (_b))
#define TERSE_ALIGN_UP(_a, _b) (TERSE_DIV_UP(_a, _b) * (_b))

#ifdef __cplusplus
}
#endif

#endif /* TERSE_BASE_H */
