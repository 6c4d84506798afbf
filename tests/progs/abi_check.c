/* npushim.h compiles as C beside the vendor's own prototypes, and a C program can call
 * the control API and the vendor API from one translation unit. */
#include "acl/acl.h"
#include "npushim.h"

#include <stdio.h>

int main(void)
{
    aclError (*copy)(void *, size_t, const void *, size_t, aclrtMemcpyKind, aclrtStream) = aclrtMemcpyAsync;
    int (*set)(const char *) = npushim_faults_set;
    uint64_t (*seed)(void) = npushim_seed;
    printf("abi c ok %d\n", copy != NULL && set != NULL && seed != NULL);
    return 0;
}
