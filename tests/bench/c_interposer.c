/*
 * c_interposer.c - the baseline: the cheapest possible LD_PRELOAD interposer.
 *
 * Exports aclrtMemcpyAsync, finds the next definition once with
 * dlsym(RTLD_NEXT) and forwards every call to it unchanged.  Whatever an
 * interposer does beyond this (checks, tracing, fault injection) is the
 * difference between it and this file in the benchmark.
 *
 * Build: gcc -O2 -fPIC -shared -o c_interposer.so c_interposer.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef int (*memcpy_async_fn)(void *dst, size_t destMax, const void *src, size_t count, int kind,
                               void *stream);

static memcpy_async_fn real_memcpy_async;

/* 200001 = ACL_ERROR_API_NOT_SUPPORT, returned if no definition follows us. */
enum { API_NOT_SUPPORT = 200001 };

static memcpy_async_fn resolve(void)
{
    memcpy_async_fn f = (memcpy_async_fn)dlsym(RTLD_NEXT, "aclrtMemcpyAsync");
    __atomic_store_n(&real_memcpy_async, f, __ATOMIC_RELEASE);
    return f;
}

__attribute__((constructor)) static void init(void)
{
    resolve();
}

__attribute__((visibility("default"))) int aclrtMemcpyAsync(void *dst, size_t destMax, const void *src,
                                                            size_t count, int kind, void *stream)
{
    memcpy_async_fn f = __atomic_load_n(&real_memcpy_async, __ATOMIC_ACQUIRE);
    /* Only a call made before our constructor ran (from another library's
     * constructor) takes this branch. */
    if (__builtin_expect(f == NULL, 0)) {
        f = resolve();
        if (f == NULL)
            return API_NOT_SUPPORT;
    }
    return f(dst, destMax, src, count, kind, stream);
}
