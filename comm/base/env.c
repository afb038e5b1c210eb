/*
 * The environment table: parser, terse_init(), and the printer behind `terse-info -e` and the
 * README's table. Everything is read once; each value the user set is logged at INFO.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "terse_base.h"

extern char **environ;
int terse__log_subsys_valid(const char *spec);

const terse_env_desc_t terse__env_table[TERSE_ENV_COUNT] = {
#define TERSE_ENV(_name, _type, _def, _acc, _doc)                                              \
    {"TERSE_" #_name, TERSE_ENV_TYPE_##_type, _def, _acc, _doc},
#include "env_table.h"
#undef TERSE_ENV
};

static const char *const env_type_names[] = {"enum", "bool", "int", "double",
                                             "size", "spec", "string", "path"};

/* Address of the member of cfg that holds variable id. */
static void *
env_member(terse_config_t *cfg, terse_env_id_t id)
{
    switch (id) {
#define TERSE_ENV(_name, _type, _def, _acc, _doc)                                              \
    case TERSE_ENV_ID_##_name:                                                                 \
        return (void *)&cfg->_name;
#include "env_table.h"
#undef TERSE_ENV
    default:
        return NULL;
    }
}

static int
env_parse_enum(const char *accepted, const char *value, int *index_p)
{
    const char *p = accepted;
    size_t len    = strlen(value);
    int index     = 0;
    const char *bar;
    size_t tok;

    if (len == 0) {
        return 0;
    }
    for (;;) {
        bar = strchr(p, '|');
        tok = (bar != NULL) ? (size_t)(bar - p) : strlen(p);
        if ((tok == len) && (strncasecmp(p, value, len) == 0)) {
            *index_p = index;
            return 1;
        }
        if (bar == NULL) {
            return 0;
        }
        p = bar + 1;
        ++index;
    }
}

static int
env_parse_bool(const char *value, int *out_p)
{
    static const char *const yes[] = {"1", "y", "yes", "true", "on"};
    static const char *const no[]  = {"0", "n", "no", "false", "off"};
    size_t i;

    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); ++i) {
        if (strcasecmp(value, yes[i]) == 0) {
            *out_p = 1;
            return 1;
        }
        if (strcasecmp(value, no[i]) == 0) {
            *out_p = 0;
            return 1;
        }
    }
    return 0;
}

/* "min..max" -> bounds; "inf" accepted as a bound. */
static void
env_range(const char *accepted, double *lo_p, double *hi_p)
{
    const char *dots = strstr(accepted, "..");

    *lo_p = -INFINITY;
    *hi_p = INFINITY;
    if (dots == NULL) {
        return;
    }
    *lo_p = strtod(accepted, NULL);
    *hi_p = strtod(dots + 2, NULL);
}

static int
env_parse_number(const char *value, int integer, double *out_p)
{
    char *end;
    double v;
    long long l;

    errno = 0;
    if (integer) {
        l = strtoll(value, &end, 10);
        v = (double)l;
    } else {
        v = strtod(value, &end);
    }
    if ((errno != 0) || (end == value) || (*end != '\0') || isnan(v)) {
        return 0;
    }
    *out_p = v;
    return 1;
}

static int
env_parse_size(const char *value, size_t *out_p)
{
    char *end;
    unsigned long long v;
    unsigned shift = 0;

    if ((value[0] == '-') || !isdigit((unsigned char)value[0])) {
        return 0;
    }
    errno = 0;
    v     = strtoull(value, &end, 10);
    if (errno != 0) {
        return 0;
    }
    switch (toupper((unsigned char)*end)) {
    case '\0':
        break;
    case 'K':
        shift = 10;
        break;
    case 'M':
        shift = 20;
        break;
    case 'G':
        shift = 30;
        break;
    case 'T':
        shift = 40;
        break;
    default:
        return 0;
    }
    if (*end != '\0') {
        ++end;
        if ((toupper((unsigned char)*end) == 'B') || (toupper((unsigned char)*end) == 'I')) {
            ++end; /* 4KB, 4Ki */
        }
        if (*end != '\0') {
            return 0;
        }
    }
    if ((shift > 0) && (v > (~0ull >> shift))) {
        return 0;
    }
    *out_p = (size_t)(v << shift);
    return 1;
}

/* Parses one value into its member. On failure writes the reason into why. */
static int
env_parse_one(terse_env_id_t id, const char *value, terse_config_t *cfg, char *why,
              size_t why_len)
{
    const terse_env_desc_t *d = &terse__env_table[id];
    void *m                   = env_member(cfg, id);
    double v, lo, hi;

    why[0] = '\0';
    switch (d->type) {
    case TERSE_ENV_TYPE_ENUM:
        return env_parse_enum(d->accepted, value, (int *)m);
    case TERSE_ENV_TYPE_BOOL:
        return env_parse_bool(value, (int *)m);
    case TERSE_ENV_TYPE_INT:
    case TERSE_ENV_TYPE_DOUBLE:
        if (!env_parse_number(value, d->type == TERSE_ENV_TYPE_INT, &v)) {
            snprintf(why, why_len, "not a number");
            return 0;
        }
        env_range(d->accepted, &lo, &hi);
        if ((v < lo) || (v > hi)) {
            snprintf(why, why_len, "out of range");
            return 0;
        }
        if (d->type == TERSE_ENV_TYPE_INT) {
            *(long *)m = (long)v;
        } else {
            *(double *)m = v;
        }
        return 1;
    case TERSE_ENV_TYPE_SIZE:
        return env_parse_size(value, (size_t *)m);
    case TERSE_ENV_TYPE_SPEC:
        if (terse__cmp_spec_validate(value, why, why_len) != TERSE_OK) {
            return 0;
        }
        /* fall through */
    case TERSE_ENV_TYPE_STRING:
    case TERSE_ENV_TYPE_PATH:
        if (strlen(value) >= TERSE_ENV_STR_MAX) {
            snprintf(why, why_len, "longer than %d characters", TERSE_ENV_STR_MAX - 1);
            return 0;
        }
        if ((id == TERSE_ENV_ID_LOG_SUBSYS) && !terse__log_subsys_valid(value)) {
            return 0;
        }
        snprintf((char *)m, TERSE_ENV_STR_MAX, "%s", value);
        return 1;
    }
    return 0;
}

/* Extra per-variable rules that the table's type cannot express. */
static int
env_check_extra(terse_env_id_t id, const terse_config_t *cfg, char *why, size_t why_len)
{
    if ((id == TERSE_ENV_ID_QUANT_BUCKET) && ((cfg->QUANT_BUCKET % 32) != 0)) {
        snprintf(why, why_len, "not a multiple of 32");
        return 0;
    }
    return 1;
}

terse_status_t
terse__config_parse(char *const *envp, int warn_unknown, terse_config_t *cfg)
{
    char why[256];
    terse_status_t status = TERSE_OK;
    char *const *e;
    const char *eq;
    size_t name_len;
    int id, known;

    memset(cfg, 0, sizeof(*cfg));
    for (id = 0; id < TERSE_ENV_COUNT; ++id) {
        if (!env_parse_one((terse_env_id_t)id, terse__env_table[id].def, cfg, why,
                           sizeof(why))) {
            terse_error(TERSE_LOG_BASE, "default of %s is invalid (%s)", terse__env_table[id].name,
                        why);
            return TERSE_ERR_INTERNAL;
        }
    }
    if (envp == NULL) {
        return TERSE_OK;
    }

    for (e = envp; *e != NULL; ++e) {
        if (strncmp(*e, "TERSE_", 6) != 0) {
            continue;
        }
        eq = strchr(*e, '=');
        if (eq == NULL) {
            continue;
        }
        name_len = (size_t)(eq - *e);
        known    = 0;
        for (id = 0; id < TERSE_ENV_COUNT; ++id) {
            if ((strlen(terse__env_table[id].name) != name_len) ||
                (strncmp(terse__env_table[id].name, *e, name_len) != 0)) {
                continue;
            }
            known = 1;
            if (!env_parse_one((terse_env_id_t)id, eq + 1, cfg, why, sizeof(why)) ||
                !env_check_extra((terse_env_id_t)id, cfg, why, sizeof(why))) {
                terse_error(TERSE_LOG_BASE, "%s has invalid value '%s'%s%s%s; accepted: %s",
                            terse__env_table[id].name, eq + 1, (why[0] != '\0') ? " (" : "",
                            why, (why[0] != '\0') ? ")" : "", terse__env_table[id].accepted);
                if (status == TERSE_OK) {
                    status = TERSE_ERR_INVALID;
                }
                break;
            }
            cfg->is_set[id] = 1;
            break;
        }
        if (!known && warn_unknown) {
            terse_warn(TERSE_LOG_BASE, "unknown variable %.*s is ignored (see terse-info -e)",
                       (int)name_len, *e);
        }
    }
    return status;
}

/* ---------------------------------------------------------------- process configuration */
static pthread_once_t config_once = PTHREAD_ONCE_INIT;
static terse_config_t config;
static terse_status_t config_status = TERSE_ERR_INTERNAL;

static void
config_load_once(void)
{
    int id;

    config_status = terse__config_parse(environ, 1, &config);
    if (config_status != TERSE_OK) {
        return;
    }
    terse__log_configure(&config);
    for (id = 0; id < TERSE_ENV_COUNT; ++id) {
        if (!config.is_set[id]) {
            continue;
        }
        terse_info(TERSE_LOG_BASE, "%s set by environment to %s", terse__env_table[id].name,
                   getenv(terse__env_table[id].name));
    }
}

terse_status_t
terse_init(void)
{
    pthread_once(&config_once, config_load_once);
    return config_status;
}

const terse_config_t *
terse__config(void)
{
    return (terse_init() == TERSE_OK) ? &config : NULL;
}

/* ---------------------------------------------------------------- printing */
/* Markdown cells: '|' must be escaped or it splits the cell. */
static void
env_print_cell(FILE *f, const char *text)
{
    for (; *text != '\0'; ++text) {
        if (*text == '|') {
            fputc('\\', f);
        }
        fputc(*text, f);
    }
}

void
terse__env_print(void *file, int markdown)
{
    FILE *f = file;
    int id;

    if (markdown) {
        fprintf(f, "| variable | type | default | accepted | what it does |\n");
        fprintf(f, "| --- | --- | --- | --- | --- |\n");
    }
    for (id = 0; id < TERSE_ENV_COUNT; ++id) {
        const terse_env_desc_t *d = &terse__env_table[id];
        if (markdown) {
            fprintf(f, "| `%s` | %s | `%s` | ", d->name, env_type_names[d->type], d->def);
            env_print_cell(f, d->accepted);
            fputs(" | ", f);
            env_print_cell(f, d->doc);
            fputs(" |\n", f);
        } else {
            fprintf(f, "%s=%s\n    %s (%s; accepted: %s)\n", d->name, d->def, d->doc,
                    env_type_names[d->type], d->accepted);
        }
    }
}
