/*
 * device_timeline.cpp - asynchronous copies of every kind on two streams, for the
 * device timeline (NPUSHIM_DEVICE=events).
 *
 * usage: device_timeline timeline   copies of each async function and kind, a
 *                                   pageable (synchronous) copy, a copy the runtime
 *                                   rejects, a copy of 12352 bytes (for a fault rule
 *                                   to inject into), an HCCL copy; waits on both
 *                                   streams; aclFinalize at the end
 *        device_timeline exhaust N  one long copy, then N short ones queued behind
 *                                   it on the same stream, then one wait
 *
 * Sizes are chosen for NPUSIM_GBPS=0.25 (a MiB lasts about 4 ms of device time).
 * Prints `ok` and exits 0 when every call it expects to succeed did; any other
 * failure exits 2 with a line on stderr.
 */
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "acl/acl.h"
#include "hccl/dispatcher.h"

#define MiB ((size_t)1 << 20)
#define BIG (32 * MiB)

static int must(const char *what, aclError ret)
{
    if (ret != ACL_SUCCESS) {
        fprintf(stderr, "device_timeline: %s returned %d\n", what, (int)ret);
        exit(2);
    }
    return 0;
}

struct env {
    aclrtStream s1, s2;
    void *dev1, *dev2;
    void *pin1, *pin2;
    void *page;
};

static void setup(struct env *e)
{
    must("aclInit", aclInit(nullptr));
    must("aclrtSetDevice", aclrtSetDevice(0));
    must("aclrtCreateStream", aclrtCreateStream(&e->s1));
    must("aclrtCreateStream", aclrtCreateStream(&e->s2));
    must("aclrtMalloc", aclrtMalloc(&e->dev1, BIG, ACL_MEM_MALLOC_HUGE_FIRST));
    must("aclrtMalloc", aclrtMalloc(&e->dev2, BIG, ACL_MEM_MALLOC_HUGE_FIRST));
    must("aclrtMallocHost", aclrtMallocHost(&e->pin1, BIG));
    must("aclrtMallocHost", aclrtMallocHost(&e->pin2, BIG));
    e->page = aligned_alloc(64, MiB);
    if (e->page == NULL)
        must("malloc", -1);
    memset(e->pin1, 1, BIG);
    memset(e->page, 2, MiB);
}

static void teardown(struct env *e)
{
    aclrtFree(e->dev1);
    aclrtFree(e->dev2);
    aclrtFreeHost(e->pin1);
    aclrtFreeHost(e->pin2);
    free(e->page);
    aclrtDestroyStream(e->s1);
    aclrtDestroyStream(e->s2);
    aclrtResetDevice(0);
    aclFinalize();
}

static void timeline(struct env *e)
{
    void *d1 = e->dev1, *d2 = e->dev2, *p1 = e->pin1, *p2 = e->pin2;
    /* A long copy first, so that the ones after it queue behind it. */
    must("head", aclrtMemcpyAsync(d1, BIG, p1, 8 * MiB, ACL_MEMCPY_HOST_TO_DEVICE, e->s1));
    must("h2d", aclrtMemcpyAsync(d1, BIG, p1, MiB, ACL_MEMCPY_HOST_TO_DEVICE, e->s1));
    must("d2h", aclrtMemcpyAsync(p2, BIG, d1, MiB / 2, ACL_MEMCPY_DEVICE_TO_HOST, e->s1));
    must("d2d", aclrtMemcpyAsync(d2, BIG, d1, 2 * MiB, ACL_MEMCPY_DEVICE_TO_DEVICE, e->s1));
    must("memset", aclrtMemsetAsync(d2, BIG, 7, MiB, e->s1));
    must("2d", aclrtMemcpy2dAsync(d2, 8192, p1, 8192, 4096, 64, ACL_MEMCPY_HOST_TO_DEVICE, e->s1));
    must("with condition",
         aclrtMemcpyAsyncWithCondition(p2, BIG, d2, MiB / 4, ACL_MEMCPY_DEVICE_TO_HOST, e->s1));
    /* A pinned-to-device copy passed as DEFAULT: runs as HOST_TO_DEVICE. */
    must("default", aclrtMemcpyAsync(d2, BIG, p1, MiB / 4, ACL_MEMCPY_DEFAULT, e->s2));
    must("s2 h2d", aclrtMemcpyAsync(d2, BIG, p1, 2 * MiB, ACL_MEMCPY_HOST_TO_DEVICE, e->s2));
    must("s2 d2h", aclrtMemcpyAsync(p2, BIG, d2, MiB, ACL_MEMCPY_DEVICE_TO_HOST, e->s2));
    /* Zero bytes: succeeds without queueing anything, so no device time either. */
    must("zero bytes", aclrtMemcpyAsync(d1, BIG, p1, 0, ACL_MEMCPY_HOST_TO_DEVICE, e->s1));
    /* The runtime rejects this one (count > destMax): no device time. */
    if (aclrtMemcpyAsync(d1, 4096, p1, 8192, ACL_MEMCPY_HOST_TO_DEVICE, e->s1) == ACL_SUCCESS)
        must("count > destMax", -1);
    /* 12352 bytes: the size a fault rule of the test targets (returns an error when it
     * does, succeeds without it). */
    aclError injected = aclrtMemcpyAsync(d1, BIG, p1, 12352, ACL_MEMCPY_HOST_TO_DEVICE, e->s1);
    printf("12352-byte copy ret %d\n", (int)injected);
    /* Pageable memory: the runtime waits for s1 and copies synchronously. */
    must("pageable", aclrtMemcpyAsync(d1, BIG, e->page, MiB, ACL_MEMCPY_HOST_TO_DEVICE, e->s1));
    /* An HCCL copy: the runtime copy it issues carries the stream. */
    HcclDispatcher dispatcher = nullptr;
    must("HcclDispatcherInit", HcclDispatcherInit(DISPATCHER_NORMAL, 0, &dispatcher));
    {
        hccl::Stream hs(e->s2);
        HcclResult r = HcclMemcpyAsync(dispatcher, d1, BIG, d2, MiB, HcclRtMemcpyKind::HCCL_RT_MEMCPY_KIND_DEVICE_TO_DEVICE, hs, 1,
                                       hccl::LinkType::LINK_HCCS);
        if (r != HCCL_SUCCESS)
            must("HcclMemcpyAsync", (aclError)r);
    }
    must("aclrtSynchronizeStream", aclrtSynchronizeStream(e->s1));
    must("aclrtSynchronizeStream", aclrtSynchronizeStream(e->s2));
    /* A few rounds more: copy, copy back, wait. */
    for (int i = 0; i < 8; i++) {
        must("round h2d", aclrtMemcpyAsync(d1, BIG, p1, MiB, ACL_MEMCPY_HOST_TO_DEVICE, e->s1));
        must("round d2h", aclrtMemcpyAsync(p2, BIG, d1, MiB, ACL_MEMCPY_DEVICE_TO_HOST, e->s1));
        must("round wait", aclrtSynchronizeStreamWithTimeout(e->s1, -1));
    }
    if (memcmp(p2, p1, MiB) != 0)
        must("data", -1);
    HcclDispatcherDestroy(dispatcher);
}

static void exhaust(struct env *e, int n)
{
    must("head", aclrtMemcpyAsync(e->dev1, BIG, e->pin1, BIG, ACL_MEMCPY_HOST_TO_DEVICE, e->s1));
    for (int i = 0; i < n; i++)
        must("queued", aclrtMemcpyAsync(e->dev2, BIG, e->pin1, 64 << 10, ACL_MEMCPY_HOST_TO_DEVICE, e->s1));
    must("aclrtSynchronizeStream", aclrtSynchronizeStream(e->s1));
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: device_timeline timeline | exhaust N\n");
        return 2;
    }
    struct env e;
    setup(&e);
    if (strcmp(argv[1], "timeline") == 0)
        timeline(&e);
    else if (strcmp(argv[1], "exhaust") == 0 && argc > 2)
        exhaust(&e, atoi(argv[2]));
    else
        return 2;
    teardown(&e);
    printf("ok\n");
    return 0;
}
