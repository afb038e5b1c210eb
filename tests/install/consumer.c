/* A ten-line program built against the installed tree (pkg-config and CMake package). */
#include <stdio.h>
#include <terse.h>

int
main(void)
{
    int major, minor, patch;

    terse_version(&major, &minor, &patch);
    printf("terse %d.%d.%d: %s (%s)\n", major, minor, patch, terse_version_string(),
           terse_status_str(terse_init()));
    return (major == TERSE_VERSION_MAJOR) && (terse_init() == TERSE_OK) ? 0 : 1;
}
