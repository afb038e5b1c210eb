/*
 * terse-info: what this build of terse is and how it can be configured (like ucx_info).
 *   terse-info        version, build features, compressors
 *   terse-info -e     every TERSE_* variable with its default and accepted values
 *   terse-info -e -m  the same as the README's Markdown table
 *   terse-info -c     check the current environment: exit 1 if a TERSE_* value is invalid
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "compressor.h"

static void
info_usage(FILE *f)
{
    fprintf(f, "usage: terse-info [-e [-m]] [-c] [-h]\n"
               "  -e  list the TERSE_* environment variables\n"
               "  -m  with -e: as a Markdown table (the README's)\n"
               "  -c  check the current environment (exit 1 when a value is invalid)\n");
}

int
main(int argc, char **argv)
{
    int opt, env = 0, markdown = 0, check = 0;
    size_t i;
    char spec[64];

    while ((opt = getopt(argc, argv, "emch")) != -1) {
        switch (opt) {
        case 'e':
            env = 1;
            break;
        case 'm':
            markdown = 1;
            break;
        case 'c':
            check = 1;
            break;
        case 'h':
            info_usage(stdout);
            return 0;
        default:
            info_usage(stderr);
            return 2;
        }
    }
    if (env) {
        terse__env_print(stdout, markdown);
        return 0;
    }
    if (check) {
        terse_status_t st = terse_init();
        printf("configuration: %s\n", terse_status_str(st));
        return (st == TERSE_OK) ? 0 : 1;
    }
    printf("# terse %s\n", terse_version_string());
    printf("# build: cuda %d nccl %d mpi %d hwloc %d\n", TERSE_HAVE_CUDA, TERSE_HAVE_NCCL,
           TERSE_HAVE_MPI, TERSE_HAVE_HWLOC);
    printf("# compressors:");
    for (i = 0; terse__cmp_builtin[i] != NULL; ++i) {
        const terse_cmp_ops_t *ops = terse__cmp_builtin[i];
        snprintf(spec, sizeof(spec), "%s%s%s", ops->name, (ops->param_doc[0] != '\0') ? ":" : "",
                 ops->param_doc);
        printf(" %s", spec);
    }
    printf("\n");
    return 0;
}
