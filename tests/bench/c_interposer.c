/*
 * c_interposer.c - the baseline: the cheapest possible LD_PRELOAD interposer.
 *
 * Exports each function the benchmark calls (aclrtMemcpyAsync, aclrtMemcpy,
 * HcclD2DMemcpyAsync, aclrtSynchronizeStream, aclrtMalloc, aclrtFree), finds
 * the next definition once with dlsym(RTLD_NEXT) and forwards every call to it
 * unchanged.  Whatever an interposer does beyond this (checks, tracing, fault
 * injection) is the difference between it and this file in the benchmark.
 *
 * Build: gcc -O2 -fPIC -shared -o c_interposer.so c_interposer.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>

/* 200001 = ACL_ERROR_API_NOT_SUPPORT, returned if no definition follows us. */
enum { API_NOT_SUPPORT = 200001 };

/* One forwarding export: NAME(PARAMS) forwards ARGS to the next NAME. */
#define FORWARD(name, params, args)                                                                  \
    typedef int (*name##_fn) params;                                                                 \
    static name##_fn real_##name;                                                                    \
    static name##_fn resolve_##name(void)                                                            \
    {                                                                                                \
        name##_fn f = (name##_fn)dlsym(RTLD_NEXT, #name);                                           \
        __atomic_store_n(&real_##name, f, __ATOMIC_RELEASE);                                         \
        return f;                                                                                    \
    }                                                                                                \
    __attribute__((constructor)) static void init_##name(void)                                       \
    {                                                                                                \
        resolve_##name();                                                                            \
    }                                                                                                \
    __attribute__((visibility("default"))) int name params                                           \
    {                                                                                                \
        name##_fn f = __atomic_load_n(&real_##name, __ATOMIC_ACQUIRE);                               \
        /* Only a call made before our constructor ran (from another library's                       \
         * constructor) takes this branch. */                                                        \
        if (__builtin_expect(f == NULL, 0)) {                                                        \
            f = resolve_##name();                                                                    \
            if (f == NULL)                                                                           \
                return API_NOT_SUPPORT;                                                              \
        }                                                                                            \
        return f args;                                                                               \
    }

FORWARD(aclrtMemcpyAsync, (void *dst, size_t destMax, const void *src, size_t count, int kind, void *stream),
        (dst, destMax, src, count, kind, stream))
FORWARD(aclrtMemcpy, (void *dst, size_t destMax, const void *src, size_t count, int kind),
        (dst, destMax, src, count, kind))
FORWARD(HcclD2DMemcpyAsync,
        (void *dispatcher, void *dst, const void *src, void *stream, uint32_t remoteUserRank, int linkType),
        (dispatcher, dst, src, stream, remoteUserRank, linkType))
FORWARD(aclrtSynchronizeStream, (void *stream), (stream))
FORWARD(aclrtMalloc, (void **devPtr, size_t size, int policy), (devPtr, size, policy))
FORWARD(aclrtFree, (void *devPtr), (devPtr))
