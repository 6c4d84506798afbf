/*
 * dlsym_cost.c - what one dlsym lookup costs.
 *
 * dlopen()s libascendcl.so (RTLD_LOCAL) and times LOOKUPS calls of each kind of
 * lookup, printing one machine-readable line per kind:
 *
 *   lookup=handle-hooked lookups=1000000 ns_per_lookup=41.2
 *
 * handle-hooked: dlsym(handle, "aclrtMemcpyAsync") (a name an interposer may
 * rewrite); handle-other: dlsym(handle, "aclInit"); default: dlsym(RTLD_DEFAULT,
 * "getpid"); next: dlsym(RTLD_NEXT, "getpid"); handle-hooked-after-call: the
 * first kind again after one call of aclrtSynchronizeDevice (found through the
 * handle), i.e. once an interposer has initialised on its first call.  Run it
 * with and without an interposer in LD_PRELOAD; the difference is its cost.
 *
 * usage: dlsym_cost [lookups]      (default 1000000)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long lookups = argc > 1 ? atol(argv[1]) : 1000000;
    void *acl = dlopen("libascendcl.so", RTLD_NOW | RTLD_LOCAL);
    if (acl == NULL || lookups <= 0) {
        fprintf(stderr, "dlsym_cost: %s\n", acl == NULL ? dlerror() : "lookups must be > 0");
        return 1;
    }
    struct {
        const char *label;
        void *handle;
        const char *name;
    } kinds[] = {
        { "handle-hooked", acl, "aclrtMemcpyAsync" },
        { "handle-other", acl, "aclInit" },
        { "default", RTLD_DEFAULT, "getpid" },
        { "next", RTLD_NEXT, "getpid" },
        { "handle-hooked-after-call", acl, "aclrtMemcpyAsync" },
    };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        if (k == 4) {
            int (*synchronize_device)(void) = (int (*)(void))dlsym(acl, "aclrtSynchronizeDevice");
            if (synchronize_device == NULL) {
                fprintf(stderr, "dlsym_cost: aclrtSynchronizeDevice not found\n");
                return 1;
            }
            (void)synchronize_device(); /* its result does not matter, only that it ran */
        }
        void *volatile sink = NULL;
        /* One untimed lookup: first-use work (finding the real dlsym) is not per lookup. */
        sink = dlsym(kinds[k].handle, kinds[k].name);
        double start = now_ns();
        for (long i = 0; i < lookups; i++)
            sink = dlsym(kinds[k].handle, kinds[k].name);
        double ns = (now_ns() - start) / (double)lookups;
        if (sink == NULL) {
            fprintf(stderr, "dlsym_cost: %s not found\n", kinds[k].name);
            return 1;
        }
        printf("lookup=%s lookups=%ld ns_per_lookup=%.1f\n", kinds[k].label, lookups, ns);
    }
    return 0;
}
