/*
 * noop_acl.c - a do-nothing libascendcl.so for overhead benchmarks.
 *
 * aclrtMemcpyAsync returns ACL_SUCCESS without touching memory, so a benchmark
 * measures only the cost of the call path (PLT, plus any interposer in
 * LD_PRELOAD).  It lives in its own shared object: the caller cannot inline
 * or elide the call.  The lifecycle functions a benchmark typically calls
 * around its loop are provided as trivial stand-ins so the same benchmark
 * binary runs against this library or the simulated runtime.
 *
 * aclrtMemcpy is built on aclrtMemcpyAsync, called through the PLT (as a
 * runtime whose synchronous copy queues an asynchronous one would), so an
 * interposer sees a nested call inside it.  HcclD2DMemcpyAsync (libhccl_plf.so
 * in a real installation) is here too, as a do-nothing C symbol, so one
 * library serves every benchmarked function.
 */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "acl/acl.h"

aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                          aclrtStream stream)
{
    /* An empty asm with the arguments as inputs keeps the function a real
     * call that consumes its arguments, whatever the optimiser does. */
    __asm__ volatile("" : : "r"(dst), "r"(destMax), "r"(src), "r"(count), "r"(kind), "r"(stream) : "memory");
    return ACL_SUCCESS;
}

aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind)
{
    return aclrtMemcpyAsync(dst, destMax, src, count, kind, NULL);
}

/* hccl::DeviceMem's ABI: ptr_ at 0, size_ at 8 (references are pointers). */
int HcclD2DMemcpyAsync(void *dispatcher, void *dst, const void *src, void *stream, uint32_t remoteUserRank,
                       int linkType);
int HcclD2DMemcpyAsync(void *dispatcher, void *dst, const void *src, void *stream, uint32_t remoteUserRank,
                       int linkType)
{
    __asm__ volatile("" : : "r"(dispatcher), "r"(dst), "r"(src), "r"(stream), "r"(remoteUserRank), "r"(linkType)
                     : "memory");
    return 0;
}

aclError aclInit(const char *configPath)
{
    (void)configPath;
    return ACL_SUCCESS;
}

aclError aclFinalize(void)
{
    return ACL_SUCCESS;
}

aclError aclrtSetDevice(int32_t deviceId)
{
    (void)deviceId;
    return ACL_SUCCESS;
}

aclError aclrtResetDevice(int32_t deviceId)
{
    (void)deviceId;
    return ACL_SUCCESS;
}

aclError aclrtCreateStream(aclrtStream *stream)
{
    static char token;
    if (stream == NULL)
        return ACL_ERROR_INVALID_PARAM;
    *stream = &token;
    return ACL_SUCCESS;
}

aclError aclrtDestroyStream(aclrtStream stream)
{
    (void)stream;
    return ACL_SUCCESS;
}

aclError aclrtSynchronizeStream(aclrtStream stream)
{
    (void)stream;
    return ACL_SUCCESS;
}

aclError aclrtSynchronizeDevice(void)
{
    return ACL_SUCCESS;
}

aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy policy)
{
    (void)policy;
    if (devPtr == NULL || size == 0)
        return ACL_ERROR_INVALID_PARAM;
    return posix_memalign(devPtr, 512, size) == 0 ? ACL_SUCCESS : ACL_ERROR_RT_MEMORY_ALLOCATION;
}

aclError aclrtFree(void *devPtr)
{
    free(devPtr);
    return ACL_SUCCESS;
}

aclError aclrtMallocHost(void **hostPtr, size_t size)
{
    if (hostPtr == NULL || size == 0)
        return ACL_ERROR_INVALID_PARAM;
    return posix_memalign(hostPtr, 64, size) == 0 ? ACL_SUCCESS : ACL_ERROR_RT_MEMORY_ALLOCATION;
}

aclError aclrtFreeHost(void *hostPtr)
{
    free(hostPtr);
    return ACL_SUCCESS;
}

const char *aclrtGetSocName(void)
{
    return "Ascend910B1";
}

/* The event functions the device timeline (NPUSHIM_DEVICE=events) calls, as trivial
 * stand-ins: every record completes at once and is stamped with the host clock, so a
 * benchmark measures what timing a copy costs the caller. */

aclError aclrtGetDevice(int32_t *deviceId)
{
    if (deviceId == NULL)
        return ACL_ERROR_INVALID_PARAM;
    *deviceId = 0;
    return ACL_SUCCESS;
}

aclError aclrtGetCurrentContext(aclrtContext *context)
{
    static char token;
    if (context == NULL)
        return ACL_ERROR_INVALID_PARAM;
    *context = &token;
    return ACL_SUCCESS;
}

aclError aclrtSetCurrentContext(aclrtContext context)
{
    (void)context;
    return ACL_SUCCESS;
}

aclError aclrtCreateEventWithFlag(aclrtEvent *event, uint32_t flag)
{
    (void)flag;
    if (event == NULL)
        return ACL_ERROR_INVALID_PARAM;
    *event = malloc(1);
    return *event != NULL ? ACL_SUCCESS : ACL_ERROR_RT_MEMORY_ALLOCATION;
}

aclError aclrtRecordEvent(aclrtEvent event, aclrtStream stream)
{
    __asm__ volatile("" : : "r"(event), "r"(stream) : "memory");
    return ACL_SUCCESS;
}

aclError aclrtQueryEventStatus(aclrtEvent event, aclrtEventRecordedStatus *status)
{
    (void)event;
    *status = ACL_EVENT_RECORDED_STATUS_COMPLETE;
    return ACL_SUCCESS;
}

aclError aclrtEventGetTimestamp(aclrtEvent event, uint64_t *timestamp)
{
    (void)event;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    *timestamp = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    return ACL_SUCCESS;
}
