/*
 * handle_lookup.c - AscendCL used the way torch_npu and Python ctypes use it:
 * the program is not linked against libascendcl.so; it dlopen()s it and finds
 * every function with dlsym(handle, ...), then copies host -> device -> host and verifies every byte.
 *
 * It also prints where other lookups land, as "<object>+<offset>" so that runs
 * with and without a preloaded interposer can be compared line by line: another
 * name on the handle, RTLD_DEFAULT and RTLD_NEXT lookups, and (with a second
 * argument) a lookup on a second copy of the library at that path.  Lines that
 * start with "preload:" describe what a preloaded library makes visible and
 * legitimately differ between such runs.
 *
 * usage: handle_lookup local|global [path-of-a-copy-of-libascendcl.so]
 * exit status: 0 when every copy succeeded and verified, 1 otherwise.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl/acl.h"

typedef aclError (*init_fn)(const char *);
typedef aclError (*set_device_fn)(int32_t);
typedef aclError (*create_stream_fn)(aclrtStream *);
typedef aclError (*stream_fn)(aclrtStream);
typedef aclError (*malloc_fn)(void **, size_t, aclrtMemMallocPolicy);
typedef aclError (*malloc_host_fn)(void **, size_t);
typedef aclError (*free_fn)(void *);
typedef aclError (*copy_fn)(void *, size_t, const void *, size_t, aclrtMemcpyKind, aclrtStream);
typedef aclError (*finalize_fn)(void);

/* "<basename of the object>+0x<offset>", or "not found". */
static void where(const char *what, void *addr)
{
    Dl_info info;
    if (addr == NULL) {
        printf("%s: not found\n", what);
    } else if (dladdr(addr, &info) == 0 || info.dli_fname == NULL) {
        printf("%s: outside every object\n", what);
    } else {
        const char *slash = strrchr(info.dli_fname, '/');
        printf("%s: %s+%#lx\n", what, slash ? slash + 1 : info.dli_fname,
               (unsigned long)((uintptr_t)addr - (uintptr_t)info.dli_fbase));
    }
}

static void *need(void *handle, const char *name)
{
    void *f = dlsym(handle, name);
    if (f == NULL) {
        fprintf(stderr, "handle_lookup: dlsym(%s): %s\n", name, dlerror());
        exit(1);
    }
    return f;
}

#define CHECK(call)                                                                     \
    do {                                                                                \
        aclError ret_ = (call);                                                         \
        if (ret_ != ACL_SUCCESS) {                                                      \
            fprintf(stderr, "handle_lookup: %s failed with %d\n", #call, (int)ret_);    \
            return 1;                                                                   \
        }                                                                               \
    } while (0)

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "local") != 0 && strcmp(argv[1], "global") != 0)) {
        fprintf(stderr, "usage: handle_lookup local|global [copy]\n");
        return 2;
    }
    int mode = strcmp(argv[1], "global") == 0 ? RTLD_GLOBAL : RTLD_LOCAL;
    void *acl = dlopen("libascendcl.so", RTLD_NOW | mode);
    if (acl == NULL) {
        fprintf(stderr, "handle_lookup: dlopen: %s\n", dlerror());
        return 1;
    }

    init_fn init = (init_fn)need(acl, "aclInit");
    set_device_fn set_device = (set_device_fn)need(acl, "aclrtSetDevice");
    create_stream_fn create_stream = (create_stream_fn)need(acl, "aclrtCreateStream");
    stream_fn synchronize = (stream_fn)need(acl, "aclrtSynchronizeStream");
    stream_fn destroy_stream = (stream_fn)need(acl, "aclrtDestroyStream");
    malloc_fn dev_malloc = (malloc_fn)need(acl, "aclrtMalloc");
    malloc_host_fn host_malloc = (malloc_host_fn)need(acl, "aclrtMallocHost");
    free_fn dev_free = (free_fn)need(acl, "aclrtFree");
    free_fn host_free = (free_fn)need(acl, "aclrtFreeHost");
    copy_fn copy = (copy_fn)need(acl, "aclrtMemcpyAsync");
    finalize_fn finalize = (finalize_fn)need(acl, "aclFinalize");
    /* A successful lookup leaves no error behind. */
    if (dlerror() != NULL) {
        fprintf(stderr, "handle_lookup: dlerror() after successful lookups\n");
        return 1;
    }
    copy_fn copy_checked = (copy_fn)need(acl, "aclrtMemcpyAsyncWithCondition");

    enum { N = 1 << 16 };
    aclrtStream stream = NULL;
    unsigned char *src = NULL, *dst = NULL;
    void *dev = NULL;
    CHECK(init(NULL));
    CHECK(set_device(0));
    CHECK(create_stream(&stream));
    CHECK(host_malloc((void **)&src, N));
    CHECK(host_malloc((void **)&dst, N));
    CHECK(dev_malloc(&dev, N, ACL_MEM_MALLOC_HUGE_FIRST));
    for (size_t i = 0; i < N; i++)
        src[i] = (unsigned char)(i * 7 + 3);
    memset(dst, 0, N);
    CHECK(copy(dev, N, src, N, ACL_MEMCPY_HOST_TO_DEVICE, stream));
    CHECK(copy_checked(dst, N, dev, N, ACL_MEMCPY_DEVICE_TO_HOST, stream));
    CHECK(synchronize(stream));
    int same = memcmp(src, dst, N) == 0;
    printf("copied %d bytes there and back: %s\n", (int)N, same ? "identical" : "DIFFERENT");
    CHECK(dev_free(dev));
    CHECK(host_free(src));
    CHECK(host_free(dst));
    CHECK(destroy_stream(stream));
    CHECK(finalize());

    /* Lookups whose answers must not depend on an interposer. */
    where("handle aclInit", dlsym(acl, "aclInit"));
    where("handle no_such_symbol", dlsym(acl, "no_such_symbol"));
    printf("dlerror after a failed lookup: %s\n", dlerror() != NULL ? "set" : "none");
    where("default getpid", dlsym(RTLD_DEFAULT, "getpid"));
    where("default aclInit", dlsym(RTLD_DEFAULT, "aclInit"));
    where("next getpid", dlsym(RTLD_NEXT, "getpid"));
    where("next aclInit", dlsym(RTLD_NEXT, "aclInit"));
    where("versioned default getpid", dlvsym(RTLD_DEFAULT, "getpid", "GLIBC_2.2.5"));
    where("versioned next getpid", dlvsym(RTLD_NEXT, "getpid", "GLIBC_2.2.5"));
    void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    where("versioned handle getpid", dlvsym(libc, "getpid", "GLIBC_2.2.5"));
    where("versioned handle no_such_version", dlvsym(libc, "getpid", "NO_SUCH_VERSION"));
    /* RTLD_NEXT means "after this program": a preloaded library comes next. */
    where("preload: next npushim_version", dlsym(RTLD_NEXT, "npushim_version"));

    if (argc > 2) {
        void *second = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
        if (second == NULL) {
            fprintf(stderr, "handle_lookup: dlopen %s: %s\n", argv[2], dlerror());
            return 1;
        }
        where("copy aclrtMemcpyAsync", dlsym(second, "aclrtMemcpyAsync"));
        where("copy aclrtMemcpyAsync again", dlsym(second, "aclrtMemcpyAsync"));
        where("copy aclInit", dlsym(second, "aclInit"));
    }
    return same ? 0 : 1;
}
