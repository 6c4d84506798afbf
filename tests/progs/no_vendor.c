/* A program that does not link the vendor libraries: it finds aclrtMemcpyAsync and
 * HcclMemcpyAsync with dlsym(RTLD_DEFAULT), as a plugin host might. Under the shim it gets
 * the shim's exports, whose real functions cannot be found (unless NPUSHIM_ACL_LIB /
 * NPUSHIM_HCCL_LIB / ASCEND_HOME_PATH point at them). Prints both return codes twice. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef int (*acl_fn)(void *, size_t, const void *, size_t, int, void *);
typedef int (*hccl_fn)(void *, void *, uint64_t, const void *, uint64_t, int, void *, uint32_t, int);

int main(void)
{
    acl_fn acl = (acl_fn)dlsym(RTLD_DEFAULT, "aclrtMemcpyAsync");
    hccl_fn hccl = (hccl_fn)dlsym(RTLD_DEFAULT, "HcclMemcpyAsync");
    if (acl == NULL || hccl == NULL) {
        printf("symbols absent\n");
        return 3;
    }
    static _Alignas(64) char a[256], b[256];
    for (int i = 0; i < 2; i++) {
        /* Zero-byte copies: valid for any runtime, so a found runtime answers 0. */
        int r1 = acl(a, sizeof a, b, 0, 1, NULL);
        int r2 = hccl((void *)1, a, sizeof a, b, 0, 3, (void *)1, 0, 1);
        printf("acl %d hccl %d\n", r1, r2);
    }
    return 0;
}
