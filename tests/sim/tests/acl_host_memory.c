/*
 * acl_host_memory.c - what the runtime knows about host memory.
 *
 * aclrtPointerGetAttributes for device, pinned, registered and pageable
 * memory; aclrtHostRegister / aclrtHostRegisterV2 / aclrtHostUnregister with
 * their error paths; a registered range counts as pinned until it is
 * unregistered; an asynchronous H2D/D2H copy touching pageable memory first
 * synchronizes its stream and returns only when it has copied.
 *
 * Runs with NPUSIM_GBPS=0.1 (set by the test) so a 16 MiB copy keeps a stream
 * busy for about 168 ms: the stream's state right after a call shows whether
 * the call waited for it.  No sleeps: each check reads the state the call
 * left behind.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl/acl.h"
#include "simtest.h"

#define BIG ((size_t)16 << 20)
#define SMALL ((size_t)4096)

static void *pageable(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 4096, n) != 0)
        exit(1);
    return p;
}

static aclrtMemLocationType where(const void *p, uint32_t *id, uint32_t *page)
{
    aclrtPtrAttributes a;
    memset(&a, 0xff, sizeof a);
    if (aclrtPointerGetAttributes(p, &a) != ACL_SUCCESS)
        return (aclrtMemLocationType)-1;
    if (id != NULL)
        *id = a.location.id;
    if (page != NULL)
        *page = a.pageSize;
    for (int i = 0; i < 4; i++)
        if (a.rsv[i] != 0)
            return (aclrtMemLocationType)-2;
    return a.location.type;
}

static int stream_busy(aclrtStream s)
{
    aclrtStreamStatus st = ACL_STREAM_STATUS_RESERVED;
    aclrtStreamQuery(s, &st);
    return st == ACL_STREAM_STATUS_NOT_READY;
}

static void test_attributes(void)
{
    void *dev = NULL, *dev_normal = NULL, *dev1 = NULL, *pin = NULL;
    uint32_t id = 99, page = 0;
    REQUIRE_OK(aclrtMalloc(&dev, 4096, ACL_MEM_MALLOC_HUGE_FIRST));
    REQUIRE_OK(aclrtMalloc(&dev_normal, 4096, ACL_MEM_MALLOC_NORMAL_ONLY));
    REQUIRE_OK(aclrtMallocHost(&pin, 4096));
    REQUIRE_OK(aclrtSetDevice(1));
    REQUIRE_OK(aclrtMalloc(&dev1, 4096, ACL_MEM_MALLOC_HUGE_FIRST));
    REQUIRE_OK(aclrtSetDevice(0));

    CHECK_EQ(where(dev, &id, &page), ACL_MEM_LOCATION_TYPE_DEVICE, "aclrtMalloc memory is DEVICE (rsv zeroed)");
    CHECK_EQ(id, 0, "on device 0");
    CHECK_EQ(page, 2u << 20, "with huge pages");
    CHECK_EQ(where((char *)dev + 4095, &id, NULL), ACL_MEM_LOCATION_TYPE_DEVICE, "its last byte too");
    CHECK_EQ(where(dev_normal, NULL, &page), ACL_MEM_LOCATION_TYPE_DEVICE, "ACL_MEM_MALLOC_NORMAL_ONLY memory");
    CHECK_EQ(page, 4096, "with normal pages");
    CHECK_EQ(where(dev1, &id, NULL), ACL_MEM_LOCATION_TYPE_DEVICE, "memory of device 1");
    CHECK_EQ(id, 1, "reports device 1");
    CHECK_EQ(where(pin, &id, NULL), ACL_MEM_LOCATION_TYPE_HOST, "aclrtMallocHost memory is HOST");
    CHECK_EQ(id, 0, "host memory reports id 0");
    CHECK_EQ(where((char *)pin + 100, NULL, NULL), ACL_MEM_LOCATION_TYPE_HOST, "inside pinned memory");
    void *heap = malloc(100);
    int local = 0;
    CHECK_EQ(where(heap, NULL, NULL), ACL_MEM_LOCATION_TYPE_UNREGISTERED, "malloc memory is UNREGISTERED");
    CHECK_EQ(where(&local, NULL, NULL), ACL_MEM_LOCATION_TYPE_UNREGISTERED, "a stack variable is UNREGISTERED");
    free(heap);
    aclrtPtrAttributes a;
    CHECK_EQ(aclrtPointerGetAttributes(NULL, &a), ACL_ERROR_INVALID_PARAM, "aclrtPointerGetAttributes(NULL, ...)");
    CHECK_EQ(aclrtPointerGetAttributes(pin, NULL), ACL_ERROR_INVALID_PARAM, "aclrtPointerGetAttributes(ptr, NULL)");

    REQUIRE_OK(aclrtFreeHost(pin));
    CHECK(where(pin, NULL, NULL) != ACL_MEM_LOCATION_TYPE_HOST, "freed pinned memory is no longer HOST");
    REQUIRE_OK(aclrtFree(dev));
    CHECK(where(dev, NULL, NULL) != ACL_MEM_LOCATION_TYPE_DEVICE, "freed device memory is no longer DEVICE");
    REQUIRE_OK(aclrtFree(dev_normal));
    REQUIRE_OK(aclrtSetDevice(1));
    REQUIRE_OK(aclrtFree(dev1));
    REQUIRE_OK(aclrtResetDevice(1));
    REQUIRE_OK(aclrtSetDevice(0));
}

static void *register_without_device(void *buf)
{
    void *mapped = NULL;
    return (void *)(intptr_t)aclrtHostRegister(buf, SMALL, ACL_HOST_REGISTER_MAPPED, &mapped);
}

static void test_registration_errors(void)
{
    unsigned char *buf = pageable(2 * SMALL);
    void *mapped = NULL, *pin = NULL, *dev = NULL;
    REQUIRE_OK(aclrtMallocHost(&pin, SMALL));
    REQUIRE_OK(aclrtMalloc(&dev, SMALL, ACL_MEM_MALLOC_HUGE_FIRST));

    CHECK_EQ(aclrtHostRegister(NULL, SMALL, ACL_HOST_REGISTER_MAPPED, &mapped), ACL_ERROR_INVALID_PARAM,
             "aclrtHostRegister(NULL)");
    CHECK_EQ(aclrtHostRegister(buf, 0, ACL_HOST_REGISTER_MAPPED, &mapped), ACL_ERROR_INVALID_PARAM,
             "aclrtHostRegister of 0 bytes");
    CHECK_EQ(aclrtHostRegister(buf, SMALL, (aclrtHostRegisterType)3, &mapped), ACL_ERROR_INVALID_PARAM,
             "aclrtHostRegister with type 3");
    CHECK_EQ(aclrtHostRegister(buf, SMALL, ACL_HOST_REGISTER_MAPPED, NULL), ACL_ERROR_INVALID_PARAM,
             "aclrtHostRegister without devPtr");
    CHECK_EQ(aclrtHostRegisterV2(buf, SMALL, 0x1), ACL_ERROR_INVALID_PARAM, "aclrtHostRegisterV2 with flag 0x1");
    CHECK_EQ(aclrtHostRegisterV2(NULL, SMALL, ACL_HOST_REG_PINNED), ACL_ERROR_INVALID_PARAM,
             "aclrtHostRegisterV2(NULL)");
    CHECK_EQ(aclrtHostRegister(pin, SMALL, ACL_HOST_REGISTER_MAPPED, &mapped), ACL_ERROR_RT_PARAM_INVALID,
             "registering pinned memory");
    CHECK_EQ(aclrtHostRegisterV2(dev, SMALL, ACL_HOST_REG_MAPPED), ACL_ERROR_RT_PARAM_INVALID,
             "registering device memory");
    pthread_t th;
    void *ret = NULL;
    REQUIRE_OK(pthread_create(&th, NULL, register_without_device, buf));
    pthread_join(th, &ret);
    CHECK_EQ((intptr_t)ret, ACL_ERROR_RT_CONTEXT_NULL, "aclrtHostRegister without a current context");

    CHECK_EQ(aclrtHostRegister(buf, SMALL, ACL_HOST_REGISTER_READONLY, &mapped), ACL_SUCCESS,
             "aclrtHostRegister READONLY");
    CHECK(mapped == buf, "the device sees the range at the same address");
    CHECK_EQ(aclrtHostRegister(buf, SMALL, ACL_HOST_REGISTER_MAPPED, &mapped), ACL_ERROR_RT_PARAM_INVALID,
             "registering the same range twice");
    CHECK_EQ(aclrtHostRegisterV2(buf + SMALL - 64, 128, ACL_HOST_REG_PINNED), ACL_ERROR_RT_PARAM_INVALID,
             "a range overlapping a registered one");
    CHECK_EQ(aclrtHostRegisterV2(buf + SMALL, SMALL, ACL_HOST_REG_PINNED | ACL_HOST_REG_MAPPED), ACL_SUCCESS,
             "aclrtHostRegisterV2 of the adjacent range");
    CHECK_EQ(aclrtFree(buf), ACL_ERROR_RT_PARAM_INVALID, "aclrtFree of registered memory");
    CHECK_EQ(aclrtFreeHost(buf), ACL_ERROR_RT_PARAM_INVALID, "aclrtFreeHost of registered memory");
    CHECK_EQ(aclrtHostUnregister(buf + 64), ACL_ERROR_RT_PARAM_INVALID, "aclrtHostUnregister inside a range");
    CHECK_EQ(aclrtHostUnregister(NULL), ACL_ERROR_INVALID_PARAM, "aclrtHostUnregister(NULL)");
    CHECK_EQ(aclrtHostUnregister(pin), ACL_ERROR_RT_PARAM_INVALID, "aclrtHostUnregister of pinned memory");
    CHECK_EQ(aclrtHostUnregister(buf), ACL_SUCCESS, "aclrtHostUnregister");
    CHECK_EQ(aclrtHostUnregister(buf), ACL_ERROR_RT_PARAM_INVALID, "aclrtHostUnregister twice");
    CHECK_EQ(where(buf, NULL, NULL), ACL_MEM_LOCATION_TYPE_UNREGISTERED, "the first range is pageable again");
    CHECK_EQ(where(buf + SMALL, NULL, NULL), ACL_MEM_LOCATION_TYPE_HOST, "the second range is still registered");
    CHECK_EQ(aclrtHostUnregister(buf + SMALL), ACL_SUCCESS, "aclrtHostUnregister of the second range");
    REQUIRE_OK(aclrtFreeHost(pin));
    REQUIRE_OK(aclrtFree(dev));
    free(buf);
}

/* Queues a BIG pinned H2D copy that keeps s busy for about 168 ms. */
static void occupy(aclrtStream s, void *dev_big, const void *pin_big)
{
    REQUIRE_OK(aclrtMemcpyAsync(dev_big, BIG, pin_big, BIG, ACL_MEMCPY_HOST_TO_DEVICE, s));
}

static void test_pageable_is_synchronous(aclrtStream s, unsigned char *dev_big, unsigned char *pin_big,
                                         unsigned char *dev)
{
    unsigned char *pg = pageable(SMALL), *pg2 = pageable(SMALL);

    st_fill(pin_big, BIG, 11);
    st_fill(pg, SMALL, 12);
    occupy(s, dev_big, pin_big);
    CHECK(stream_busy(s), "the stream is busy with a 16 MiB copy");
    CHECK_EQ(aclrtMemcpyAsync(dev, SMALL, pg, SMALL, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_SUCCESS,
             "pageable H2D behind it");
    CHECK(!stream_busy(s), "the pageable H2D synchronized the stream before returning");
    CHECK(memcmp(dev_big, pin_big, BIG) == 0, "the earlier copy is complete when the call returns");
    CHECK(memcmp(dev, pg, SMALL) == 0, "the pageable copy itself is complete when the call returns");

    st_fill(dev, SMALL, 13);
    occupy(s, dev_big, pin_big);
    CHECK_EQ(aclrtMemcpyAsync(pg2, SMALL, dev, SMALL, ACL_MEMCPY_DEVICE_TO_HOST, s), ACL_SUCCESS,
             "pageable D2H behind a busy stream");
    CHECK(!stream_busy(s) && memcmp(pg2, dev, SMALL) == 0, "pageable D2H: stream idle, data there on return");

    /* Same through the other async entry points. */
    occupy(s, dev_big, pin_big);
    CHECK_EQ(aclrtMemcpyAsyncWithCondition(dev, SMALL, pg, SMALL, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_SUCCESS,
             "pageable aclrtMemcpyAsyncWithCondition");
    CHECK(!stream_busy(s) && memcmp(dev, pg, SMALL) == 0, "aclrtMemcpyAsyncWithCondition pageable is synchronous");
    occupy(s, dev_big, pin_big);
    CHECK_EQ(aclrtMemcpy2dAsync(pg2, 64, dev, 64, 64, SMALL / 64, ACL_MEMCPY_DEVICE_TO_HOST, s), ACL_SUCCESS,
             "pageable aclrtMemcpy2dAsync");
    CHECK(!stream_busy(s) && memcmp(pg2, dev, SMALL) == 0, "aclrtMemcpy2dAsync pageable is synchronous");

    /* Pinned memory is only queued. */
    occupy(s, dev_big, pin_big);
    CHECK_EQ(aclrtMemcpyAsync(dev, SMALL, pin_big, SMALL, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_SUCCESS,
             "pinned H2D behind a busy stream");
    CHECK(stream_busy(s), "a pinned copy returns while the stream is still busy");
    aclrtSynchronizeStream(s);
    free(pg);
    free(pg2);
}

static void test_registered_is_pinned(aclrtStream s, unsigned char *dev_big, unsigned char *pin_big,
                                      unsigned char *dev)
{
    unsigned char *buf = pageable(SMALL);
    void *mapped = NULL;
    st_fill(buf, SMALL, 21);

    CHECK_EQ(where(buf, NULL, NULL), ACL_MEM_LOCATION_TYPE_UNREGISTERED, "a malloc'd buffer is pageable");
    REQUIRE_OK(aclrtHostRegister(buf, SMALL, ACL_HOST_REGISTER_MAPPED, &mapped));
    CHECK_EQ(where(buf + 10, NULL, NULL), ACL_MEM_LOCATION_TYPE_HOST, "registered: HOST");
    occupy(s, dev_big, pin_big);
    CHECK_EQ(aclrtMemcpyAsync(dev, SMALL, buf, SMALL, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_SUCCESS,
             "registered H2D behind a busy stream");
    CHECK(stream_busy(s), "a registered buffer's copy is asynchronous, like pinned memory");
    CHECK_EQ(aclrtMemsetAsync(buf, SMALL, 0x33, SMALL, s), ACL_SUCCESS, "aclrtMemsetAsync on registered memory");
    CHECK(stream_busy(s), "the memset is queued too");
    aclrtSynchronizeStream(s);
    int all = 1;
    for (size_t i = 0; i < SMALL; i++)
        all &= buf[i] == 0x33;
    CHECK(all, "the queued memset ran after the copy");
    CHECK_EQ(aclrtHostRegisterV2(buf, SMALL, ACL_HOST_REG_PINNED), ACL_ERROR_RT_PARAM_INVALID,
             "aclrtHostRegisterV2 of a registered range");

    REQUIRE_OK(aclrtHostUnregister(buf));
    CHECK_EQ(where(buf, NULL, NULL), ACL_MEM_LOCATION_TYPE_UNREGISTERED, "unregistered: pageable again");
    occupy(s, dev_big, pin_big);
    CHECK_EQ(aclrtMemcpyAsync(dev, SMALL, buf, SMALL, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_SUCCESS,
             "unregistered H2D behind a busy stream");
    CHECK(!stream_busy(s), "after aclrtHostUnregister the copy is synchronous again");

    REQUIRE_OK(aclrtHostRegisterV2(buf, SMALL, ACL_HOST_REG_PINNED));
    CHECK_EQ(where(buf, NULL, NULL), ACL_MEM_LOCATION_TYPE_HOST, "aclrtHostRegisterV2: HOST");
    occupy(s, dev_big, pin_big);
    CHECK_EQ(aclrtMemcpyAsync(buf, SMALL, dev, SMALL, ACL_MEMCPY_DEVICE_TO_HOST, s), ACL_SUCCESS,
             "D2H into a V2-registered buffer");
    CHECK(stream_busy(s), "is asynchronous");
    /* Unregistering waits for the queued copy that writes the range. */
    CHECK_EQ(aclrtHostUnregister(buf), ACL_SUCCESS, "aclrtHostUnregister with a copy queued");
    CHECK(!stream_busy(s) && memcmp(buf, dev, SMALL) == 0, "aclrtHostUnregister waited for the queued copy");
    free(buf);
}

int main(void)
{
    setenv("NPUSIM_GBPS", "0.1", 1);
    unsetenv("NPUSIM_SOC");
    unsetenv("NPUSIM_STRICT_KIND");
    unsetenv("NPUSIM_DEVICES");

    REQUIRE_OK(aclInit(NULL));
    REQUIRE_OK(aclrtSetDevice(0));
    aclrtStream s = NULL;
    unsigned char *dev_big = NULL, *pin_big = NULL, *dev = NULL;
    REQUIRE_OK(aclrtCreateStream(&s));
    REQUIRE_OK(aclrtMalloc((void **)&dev_big, BIG, ACL_MEM_MALLOC_HUGE_FIRST));
    REQUIRE_OK(aclrtMalloc((void **)&dev, SMALL, ACL_MEM_MALLOC_HUGE_FIRST));
    REQUIRE_OK(aclrtMallocHost((void **)&pin_big, BIG));

    test_attributes();
    test_registration_errors();
    test_pageable_is_synchronous(s, dev_big, pin_big, dev);
    test_registered_is_pinned(s, dev_big, pin_big, dev);

    REQUIRE_OK(aclrtDestroyStream(s));
    REQUIRE_OK(aclrtFree(dev_big));
    REQUIRE_OK(aclrtFree(dev));
    REQUIRE_OK(aclrtFreeHost(pin_big));
    REQUIRE_OK(aclrtResetDevice(0));
    REQUIRE_OK(aclFinalize());
    return st_done();
}
