/*
 * bad_calls.c - one aclrtMemcpyAsync / HcclMemcpyAsync call per argument
 * mistake of SPEC section 4, in a fixed order, each printed with the code the
 * call returned:
 *
 *     case <name> ret <code>
 *
 * usage: bad_calls [CASE [REPEAT]]
 *   CASE    run only this case (default: every case, in table order);
 *   REPEAT  make that case's call REPEAT times (default 1), one line each.
 *
 * Cases (acl):  good zero null_dst kind6 kind_neg size unaligned_dst
 *               unaligned_src h2h overlap h2h_unaligned
 * Cases (hccl): hccl_good hccl_null_dispatcher hccl_null_stream hccl_kind5
 *               hccl_size hccl_link
 *
 * HcclMemcpyAsync is declared only in a C++ header and takes hccl::Stream&.
 * This C program calls it through the exported symbol with the ABI that
 * declaration has (SPEC section 2.2: the reference travels as a pointer, both
 * enums are int), found with dlsym(RTLD_DEFAULT) - under LD_PRELOAD that is the
 * interposer's export, as for a program calling it directly.  That also lets
 * the program pass a NULL stream reference without undefined behaviour in C++.
 * The stream object is laid out as hccl::Stream is: vtable pointer at offset 0,
 * the aclrtStream at offset 8.
 *
 * stdout carries no pointers or timings, so it is the same on every run.
 * exit status: 0 when setup succeeded (whatever the cases returned), 1 when
 * setup failed, 2 on a usage error.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl/acl.h"

#define BUF 8192
#define N 4096

/* hccl::Stream as laid out in memory (dispatcher.h checks the same offsets). */
struct hccl_stream_layout {
    const void *vptr;
    void *stream_;
    int32_t streamId_;
};

typedef int (*hccl_memcpy_fn)(void *dispatcher, void *dst, uint64_t destMax, const void *src, uint64_t count,
                              int kind, void *stream, uint32_t remoteUserRank, int linkType);
typedef int (*hccl_init_fn)(int type, int32_t device, void **dispatcher);
typedef int (*hccl_destroy_fn)(void *dispatcher);

static aclrtStream g_stream;
static unsigned char *g_dev_a, *g_dev_b; /* device buffers of BUF bytes */
static unsigned char *g_host_a, *g_host_b; /* pinned host buffers of BUF bytes */
static void *g_dispatcher;
static struct hccl_stream_layout g_hstream;
static hccl_memcpy_fn g_hccl_memcpy;

static int acl(void *dst, size_t destMax, const void *src, size_t count, int kind)
{
    return (int)aclrtMemcpyAsync(dst, destMax, src, count, (aclrtMemcpyKind)kind, g_stream);
}

static int hccl(void *dispatcher, void *dst, uint64_t destMax, const void *src, uint64_t count, int kind,
                void *stream, int link)
{
    return g_hccl_memcpy(dispatcher, dst, destMax, src, count, kind, stream, 1, link);
}

static int case_good(void) { return acl(g_dev_b, N, g_dev_a, N, ACL_MEMCPY_DEVICE_TO_DEVICE); }
static int case_zero(void) { return acl(NULL, 0, NULL, 0, ACL_MEMCPY_DEVICE_TO_DEVICE); }
static int case_null_dst(void) { return acl(NULL, N, g_dev_a, 64, ACL_MEMCPY_DEVICE_TO_DEVICE); }
static int case_kind6(void) { return acl(g_dev_b, N, g_dev_a, N, 6); }
static int case_kind_neg(void) { return acl(g_dev_b, N, g_dev_a, N, -1); }
static int case_size(void) { return acl(g_dev_b, N - 1, g_dev_a, N, ACL_MEMCPY_DEVICE_TO_DEVICE); }
static int case_unaligned_dst(void) { return acl(g_dev_b + 1, N, g_dev_a, N, ACL_MEMCPY_DEVICE_TO_DEVICE); }
static int case_unaligned_src(void) { return acl(g_dev_b, N, g_dev_a + 63, N, ACL_MEMCPY_DEVICE_TO_DEVICE); }
static int case_h2h(void) { return acl(g_host_b, N, g_host_a, N, ACL_MEMCPY_HOST_TO_HOST); }
static int case_overlap(void) { return acl(g_dev_a + 64, 128, g_dev_a, 128, ACL_MEMCPY_DEVICE_TO_DEVICE); }
static int case_h2h_unaligned(void) { return acl(g_host_b, N, g_host_a + 1, N, ACL_MEMCPY_HOST_TO_HOST); }

static int case_hccl_good(void) { return hccl(g_dispatcher, g_dev_b, N, g_dev_a, N, 3, &g_hstream, 1); }
static int case_hccl_null_dispatcher(void) { return hccl(NULL, g_dev_b, N, g_dev_a, N, 3, &g_hstream, 1); }
static int case_hccl_null_stream(void) { return hccl(g_dispatcher, g_dev_b, N, g_dev_a, N, 3, NULL, 1); }
static int case_hccl_kind5(void) { return hccl(g_dispatcher, g_dev_b, N, g_dev_a, N, 5, &g_hstream, 1); }
static int case_hccl_size(void) { return hccl(g_dispatcher, g_dev_b, N - 1, g_dev_a, N, 3, &g_hstream, 1); }
static int case_hccl_link(void) { return hccl(g_dispatcher, g_dev_b, N, g_dev_a, N, 3, &g_hstream, 42); }

struct bad_case {
    const char *name;
    int (*run)(void);
};

static const struct bad_case kCases[] = {
    { "good", case_good },
    { "zero", case_zero },
    { "null_dst", case_null_dst },
    { "kind6", case_kind6 },
    { "kind_neg", case_kind_neg },
    { "size", case_size },
    { "unaligned_dst", case_unaligned_dst },
    { "unaligned_src", case_unaligned_src },
    { "h2h", case_h2h },
    { "overlap", case_overlap },
    { "h2h_unaligned", case_h2h_unaligned },
    { "hccl_good", case_hccl_good },
    { "hccl_null_dispatcher", case_hccl_null_dispatcher },
    { "hccl_null_stream", case_hccl_null_stream },
    { "hccl_kind5", case_hccl_kind5 },
    { "hccl_size", case_hccl_size },
    { "hccl_link", case_hccl_link },
};
#define NCASES (sizeof kCases / sizeof kCases[0])

static int setup(void)
{
    if (aclInit(NULL) != ACL_SUCCESS || aclrtSetDevice(0) != ACL_SUCCESS || aclrtCreateStream(&g_stream) != ACL_SUCCESS)
        return -1;
    if (aclrtMalloc((void **)&g_dev_a, BUF, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS ||
        aclrtMalloc((void **)&g_dev_b, BUF, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS ||
        aclrtMallocHost((void **)&g_host_a, BUF) != ACL_SUCCESS ||
        aclrtMallocHost((void **)&g_host_b, BUF) != ACL_SUCCESS)
        return -1;
    if ((uintptr_t)g_dev_a % 64 != 0 || (uintptr_t)g_dev_b % 64 != 0 || (uintptr_t)g_host_a % 64 != 0 ||
        (uintptr_t)g_host_b % 64 != 0) {
        fprintf(stderr, "bad_calls: the runtime returned buffers that are not 64-byte aligned\n");
        return -1;
    }
    memset(g_host_a, 0x5a, BUF);
    memset(g_host_b, 0, BUF);

    g_hccl_memcpy = (hccl_memcpy_fn)dlsym(RTLD_DEFAULT, "HcclMemcpyAsync");
    hccl_init_fn init = (hccl_init_fn)dlsym(RTLD_DEFAULT, "HcclDispatcherInit");
    if (g_hccl_memcpy == NULL || init == NULL) {
        fprintf(stderr, "bad_calls: HCCL dispatcher API not found\n");
        return -1;
    }
    if (init(0 /* DISPATCHER_NORMAL */, 0, &g_dispatcher) != 0)
        return -1;
    g_hstream.vptr = NULL; /* never called: no virtual function is used */
    g_hstream.stream_ = g_stream;
    g_hstream.streamId_ = -1;
    return 0;
}

static void teardown(void)
{
    if (g_stream != NULL)
        aclrtSynchronizeStream(g_stream);
    hccl_destroy_fn destroy = (hccl_destroy_fn)dlsym(RTLD_DEFAULT, "HcclDispatcherDestroy");
    if (destroy != NULL && g_dispatcher != NULL)
        destroy(g_dispatcher);
    if (g_dev_a != NULL)
        aclrtFree(g_dev_a);
    if (g_dev_b != NULL)
        aclrtFree(g_dev_b);
    if (g_host_a != NULL)
        aclrtFreeHost(g_host_a);
    if (g_host_b != NULL)
        aclrtFreeHost(g_host_b);
    if (g_stream != NULL)
        aclrtDestroyStream(g_stream);
    aclrtResetDevice(0);
    aclFinalize();
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    long repeat = 1;
    if (argc > 2) {
        char *end = NULL;
        repeat = strtol(argv[2], &end, 10);
        if (*end != '\0' || repeat < 1) {
            fprintf(stderr, "usage: %s [CASE [REPEAT >= 1]]\n", argv[0]);
            return 2;
        }
    }
    if (argc > 3) {
        fprintf(stderr, "usage: %s [CASE [REPEAT >= 1]]\n", argv[0]);
        return 2;
    }
    int found = only == NULL;
    for (size_t i = 0; i < NCASES; i++)
        found |= only != NULL && strcmp(only, kCases[i].name) == 0;
    if (!found) {
        fprintf(stderr, "bad_calls: unknown case '%s'; cases:", only);
        for (size_t i = 0; i < NCASES; i++)
            fprintf(stderr, " %s", kCases[i].name);
        fprintf(stderr, "\n");
        return 2;
    }

    int status = 1;
    if (setup() != 0) {
        fprintf(stderr, "bad_calls: setup failed\n");
        goto out;
    }
    for (size_t i = 0; i < NCASES; i++) {
        if (only != NULL && strcmp(only, kCases[i].name) != 0)
            continue;
        for (long r = 0; r < repeat; r++)
            printf("case %s ret %d\n", kCases[i].name, kCases[i].run());
    }
    status = 0;
out:
    fflush(stdout);
    teardown();
    return status;
}
