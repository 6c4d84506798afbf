/*
 * acl_stream.c - asynchronous semantics of the simulated runtime.
 *
 * Runs with NPUSIM_GBPS=0.1 (set by the test itself) so a 4 MiB copy takes
 * about 42 ms: pinned and device copies must return before the copy is done,
 * pageable copies only after; streams execute in FIFO order; events record
 * when the stream reaches them and measure elapsed time; memsets on pinned
 * memory; stream waits, synchronize with timeout and forced destruction.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl/acl.h"
#include "simtest.h"

#define N ((size_t)4 << 20)
#define GBPS 0.1
static const double kCopyMs = (double)N / (GBPS * 1e9) * 1e3;

static void *pageable(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n) != 0)
        exit(1);
    return p;
}

static void test_pinned_vs_pageable(aclrtStream s, void *dev, void *pin_src, void *pin_dst)
{
    aclrtStreamStatus st = ACL_STREAM_STATUS_RESERVED;
    st_fill(pin_src, N, 1);
    memset(pin_dst, 0, N);

    double t0 = st_now_ms();
    CHECK_EQ(aclrtMemcpyAsync(dev, N, pin_src, N, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_SUCCESS, "pinned H2D submitted");
    double t1 = st_now_ms();
    CHECK(t1 - t0 < kCopyMs / 2, "pinned H2D returns before the copy is done (%.1f ms, copy %.1f ms)", t1 - t0,
          kCopyMs);
    CHECK_EQ(aclrtStreamQuery(s, &st), ACL_SUCCESS, "aclrtStreamQuery");
    CHECK_EQ(st, ACL_STREAM_STATUS_NOT_READY, "the stream is busy right after submission");
    CHECK_EQ(aclrtMemcpyAsync(pin_dst, N, dev, N, ACL_MEMCPY_DEVICE_TO_HOST, s), ACL_SUCCESS, "pinned D2H submitted");
    CHECK(st_now_ms() - t0 < kCopyMs / 2, "two pinned copies are queued without waiting");
    CHECK_EQ(aclrtSynchronizeStream(s), ACL_SUCCESS, "aclrtSynchronizeStream");
    double t2 = st_now_ms();
    CHECK(t2 - t0 >= 2 * kCopyMs * 0.9, "the stream took the modelled time (%.1f ms for 2 x %.1f ms)", t2 - t0,
          kCopyMs);
    CHECK(memcmp(pin_dst, pin_src, N) == 0, "pinned round trip is bit-exact after synchronize");
    aclrtStreamQuery(s, &st);
    CHECK_EQ(st, ACL_STREAM_STATUS_COMPLETE, "the stream is idle after synchronize");

    unsigned char *pg_src = pageable(N), *pg_dst = pageable(N);
    st_fill(pg_src, N, 2);
    memset(pg_dst, 0, N);
    t0 = st_now_ms();
    CHECK_EQ(aclrtMemcpyAsync(dev, N, pg_src, N, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_SUCCESS, "pageable H2D");
    t1 = st_now_ms();
    CHECK(t1 - t0 >= kCopyMs * 0.9, "pageable H2D completes before returning (%.1f ms)", t1 - t0);
    CHECK_EQ(aclrtMemcpyAsync(pg_dst, N, dev, N, ACL_MEMCPY_DEVICE_TO_HOST, s), ACL_SUCCESS, "pageable D2H");
    CHECK(memcmp(pg_dst, pg_src, N) == 0, "pageable D2H data is there when the call returns");

    /* A pageable copy waits for the stream's earlier work (FIFO). */
    st_fill(pin_src, N, 3);
    CHECK_EQ(aclrtMemcpyAsync(dev, N, pin_src, N, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_SUCCESS, "pinned H2D again");
    CHECK_EQ(aclrtMemcpyAsync(pg_dst, N, dev, N, ACL_MEMCPY_DEVICE_TO_HOST, s), ACL_SUCCESS,
             "pageable D2H behind it");
    CHECK(memcmp(pg_dst, pin_src, N) == 0, "the pageable copy ran after the queued pinned copy");
    free(pg_src);
    free(pg_dst);
}

static void test_fifo(aclrtStream s, void *dev, void *pin_dst)
{
    enum { COPIES = 64, SZ = 4096 };
    void *srcs[COPIES];
    for (int i = 0; i < COPIES; i++) {
        REQUIRE_OK(aclrtMallocHost(&srcs[i], SZ));
        st_fill(srcs[i], SZ, 100 + (uint32_t)i);
    }
    int fails = 0;
    for (int i = 0; i < COPIES; i++)
        fails += aclrtMemcpyAsync(dev, SZ, srcs[i], SZ, ACL_MEMCPY_HOST_TO_DEVICE, s) != ACL_SUCCESS;
    fails += aclrtMemcpyAsync(pin_dst, SZ, dev, SZ, ACL_MEMCPY_DEVICE_TO_HOST, s) != ACL_SUCCESS;
    CHECK_EQ(fails, 0, "%d copies into one buffer submitted", COPIES);
    aclrtSynchronizeStream(s);
    CHECK(memcmp(pin_dst, srcs[COPIES - 1], SZ) == 0, "the last copy queued is the last one executed");

    /* H2D -> D2D -> D2H chain without synchronisation in between. */
    void *dev2 = NULL;
    REQUIRE_OK(aclrtMalloc(&dev2, SZ, ACL_MEM_MALLOC_HUGE_FIRST));
    memset(pin_dst, 0, SZ);
    aclrtMemcpyAsync(dev, SZ, srcs[5], SZ, ACL_MEMCPY_HOST_TO_DEVICE, s);
    aclrtMemcpyAsync(dev2, SZ, dev, SZ, ACL_MEMCPY_DEVICE_TO_DEVICE, s);
    aclrtMemcpyAsync(pin_dst, SZ, dev2, SZ, ACL_MEMCPY_DEVICE_TO_HOST, s);
    aclrtSynchronizeStream(s);
    CHECK(memcmp(pin_dst, srcs[5], SZ) == 0, "H2D -> D2D -> D2H chain on one stream");

    /* Kind DEFAULT infers the direction. */
    memset(pin_dst, 0, SZ);
    aclrtMemcpyAsync(dev2, SZ, srcs[6], SZ, ACL_MEMCPY_DEFAULT, s);
    aclrtMemcpyAsync(pin_dst, SZ, dev2, SZ, ACL_MEMCPY_DEFAULT, s);
    aclrtSynchronizeStream(s);
    CHECK(memcmp(pin_dst, srcs[6], SZ) == 0, "ACL_MEMCPY_DEFAULT round trip");

    aclrtFree(dev2);
    for (int i = 0; i < COPIES; i++)
        aclrtFreeHost(srcs[i]);
}

static void test_events(aclrtStream s, void *dev, void *pin_src, void *pin_dst)
{
    aclrtEvent e1 = NULL, e2 = NULL, e3 = NULL;
    aclrtEventRecordedStatus rs = ACL_EVENT_RECORDED_STATUS_COMPLETE;
    float ms = -1.0f;

    REQUIRE_OK(aclrtCreateEvent(&e1));
    REQUIRE_OK(aclrtCreateEvent(&e2));
    REQUIRE_OK(aclrtCreateEventWithFlag(&e3, ACL_EVENT_TIME_LINE));
    CHECK_EQ(aclrtQueryEventStatus(e1, &rs), ACL_SUCCESS, "aclrtQueryEventStatus");
    CHECK_EQ(rs, ACL_EVENT_RECORDED_STATUS_NOT_READY, "a new event is not complete");
    CHECK_EQ(aclrtSynchronizeEvent(e1), ACL_SUCCESS, "synchronizing an unrecorded event returns at once");

    double host_t0 = st_now_ms();
    CHECK_EQ(aclrtRecordEvent(e1, s), ACL_SUCCESS, "aclrtRecordEvent(start)");
    aclrtMemcpyAsync(dev, N, pin_src, N, ACL_MEMCPY_HOST_TO_DEVICE, s);
    CHECK_EQ(aclrtRecordEvent(e2, s), ACL_SUCCESS, "aclrtRecordEvent(end)");
    aclrtQueryEventStatus(e2, &rs);
    CHECK_EQ(rs, ACL_EVENT_RECORDED_STATUS_NOT_READY, "the end event is pending while the copy runs");
    CHECK_EQ(aclrtEventElapsedTime(&ms, e1, e2), ACL_ERROR_RT_EVENT_NOT_COMPLETE, "elapsed time of a pending event");
    CHECK_EQ(aclrtSynchronizeEvent(e2), ACL_SUCCESS, "aclrtSynchronizeEvent");
    double host_ms = st_now_ms() - host_t0;
    aclrtQueryEventStatus(e2, &rs);
    CHECK_EQ(rs, ACL_EVENT_RECORDED_STATUS_COMPLETE, "the end event is complete after synchronizing it");
    CHECK_EQ(aclrtEventElapsedTime(&ms, e1, e2), ACL_SUCCESS, "aclrtEventElapsedTime");
    CHECK(ms >= kCopyMs * 0.9 && ms <= host_ms + 0.5, "elapsed %.2f ms spans the %.1f ms copy (host saw %.2f ms)",
          ms, kCopyMs, host_ms);
    CHECK_EQ(aclrtEventElapsedTime(&ms, e1, e3), ACL_ERROR_RT_EVENT_NOT_COMPLETE, "elapsed time to an unrecorded event");
    CHECK_EQ(aclrtEventElapsedTime(NULL, e1, e2), ACL_ERROR_INVALID_PARAM, "elapsed time into NULL");

    /* A second stream waits for an event recorded on the first. */
    aclrtStream s2 = NULL;
    REQUIRE_OK(aclrtCreateStream(&s2));
    st_fill(pin_src, N, 9);
    memset(pin_dst, 0, N);
    aclrtMemcpyAsync(dev, N, pin_src, N, ACL_MEMCPY_HOST_TO_DEVICE, s);
    aclrtRecordEvent(e3, s);
    CHECK_EQ(aclrtStreamWaitEvent(s2, e3), ACL_SUCCESS, "aclrtStreamWaitEvent");
    aclrtMemcpyAsync(pin_dst, N, dev, N, ACL_MEMCPY_DEVICE_TO_HOST, s2);
    aclrtSynchronizeStream(s2);
    CHECK(memcmp(pin_dst, pin_src, N) == 0, "the waiting stream saw the other stream's copy");

    /* Memset on pinned host memory is accepted and asynchronous. */
    CHECK_EQ(aclrtMemsetAsync(pin_dst, N, 0x5a, N, s), ACL_SUCCESS, "aclrtMemsetAsync on pinned memory");
    CHECK_EQ(aclrtMemsetAsync(pin_dst, 16, 0, 32, s), ACL_ERROR_RT_PARAM_INVALID, "aclrtMemsetAsync count > maxCount");
    aclrtSynchronizeStream(s);
    const unsigned char *p = pin_dst;
    size_t bad = 0;
    for (size_t i = 0; i < N; i++)
        bad += p[i] != 0x5a;
    CHECK_EQ(bad, 0, "aclrtMemsetAsync set every byte");
    CHECK_EQ(aclrtMemsetAsync(dev, N, 0x11, N, NULL), ACL_SUCCESS, "aclrtMemsetAsync on device memory");
    aclrtMemcpyAsync(pin_dst, N, dev, N, ACL_MEMCPY_DEVICE_TO_HOST, NULL);
    aclrtSynchronizeStream(NULL);
    CHECK(p[0] == 0x11 && p[N - 1] == 0x11, "device memset on the default stream");

    /* aclrtSynchronizeDevice waits for every stream of the device. */
    aclrtStreamStatus st1, st2;
    void *dev_b = NULL;
    REQUIRE_OK(aclrtMalloc(&dev_b, N, ACL_MEM_MALLOC_HUGE_FIRST));
    aclrtMemcpyAsync(dev, N, pin_src, N, ACL_MEMCPY_HOST_TO_DEVICE, s);
    aclrtMemcpyAsync(dev_b, N, pin_src, N, ACL_MEMCPY_HOST_TO_DEVICE, s2);
    CHECK_EQ(aclrtSynchronizeDevice(), ACL_SUCCESS, "aclrtSynchronizeDevice");
    aclrtStreamQuery(s, &st1);
    aclrtStreamQuery(s2, &st2);
    CHECK(st1 == ACL_STREAM_STATUS_COMPLETE && st2 == ACL_STREAM_STATUS_COMPLETE, "all streams idle after it");
    aclrtFree(dev_b);

    /* Timeout. */
    aclrtMemcpyAsync(dev, N, pin_src, N, ACL_MEMCPY_HOST_TO_DEVICE, s);
    CHECK_EQ(aclrtSynchronizeStreamWithTimeout(s, 1), ACL_ERROR_RT_STREAM_SYNC_TIMEOUT,
             "aclrtSynchronizeStreamWithTimeout(1 ms) on a busy stream");
    CHECK_EQ(aclrtSynchronizeStreamWithTimeout(s, -1), ACL_SUCCESS, "aclrtSynchronizeStreamWithTimeout(-1)");

    REQUIRE_OK(aclrtDestroyStream(s2));
    CHECK_EQ(aclrtDestroyEvent(e1), ACL_SUCCESS, "aclrtDestroyEvent");
    CHECK_EQ(aclrtDestroyEvent(e1), ACL_ERROR_RT_PARAM_INVALID, "aclrtDestroyEvent twice");
    CHECK_EQ(aclrtRecordEvent(e1, s), ACL_ERROR_RT_PARAM_INVALID, "recording a destroyed event");
    aclrtDestroyEvent(e2);
    aclrtDestroyEvent(e3);
}

static void test_destroy(void *dev, void *pin_src)
{
    aclrtStream s = NULL;
    void *pin = NULL;
    REQUIRE_OK(aclrtMallocHost(&pin, N));
    REQUIRE_OK(aclrtCreateStream(&s));
    st_fill(pin_src, N, 11);
    memset(pin, 0, N);
    aclrtMemcpyAsync(dev, N, pin_src, N, ACL_MEMCPY_HOST_TO_DEVICE, s);
    aclrtMemcpyAsync(pin, N, dev, N, ACL_MEMCPY_DEVICE_TO_HOST, s);
    CHECK_EQ(aclrtDestroyStream(s), ACL_SUCCESS, "aclrtDestroyStream with work queued");
    CHECK(memcmp(pin, pin_src, N) == 0, "aclrtDestroyStream finished the queued work");

    aclrtEvent e = NULL;
    REQUIRE_OK(aclrtCreateEvent(&e));
    REQUIRE_OK(aclrtCreateStream(&s));
    for (int i = 0; i < 10; i++)
        aclrtMemcpyAsync(dev, N, pin_src, N, ACL_MEMCPY_HOST_TO_DEVICE, s);
    aclrtRecordEvent(e, s);
    double t0 = st_now_ms();
    CHECK_EQ(aclrtDestroyStreamForce(s), ACL_SUCCESS, "aclrtDestroyStreamForce");
    CHECK(st_now_ms() - t0 < 10 * kCopyMs / 2, "forced destruction drops the queued copies");
    CHECK_EQ(aclrtSynchronizeEvent(e), ACL_SUCCESS, "an event whose record was dropped does not hang");
    aclrtDestroyEvent(e);
    aclrtFreeHost(pin);
}

int main(void)
{
    char gbps[32];
    snprintf(gbps, sizeof gbps, "%g", GBPS);
    setenv("NPUSIM_GBPS", gbps, 1);
    unsetenv("NPUSIM_SOC");
    unsetenv("NPUSIM_DEVICES");

    REQUIRE_OK(aclInit(NULL));
    REQUIRE_OK(aclrtSetDevice(0));
    aclrtStream s = NULL;
    void *dev = NULL, *pin_src = NULL, *pin_dst = NULL;
    REQUIRE_OK(aclrtCreateStream(&s));
    REQUIRE_OK(aclrtMalloc(&dev, N, ACL_MEM_MALLOC_HUGE_FIRST));
    REQUIRE_OK(aclrtMallocHost(&pin_src, N));
    REQUIRE_OK(aclrtMallocHost(&pin_dst, N));

    test_pinned_vs_pageable(s, dev, pin_src, pin_dst);
    test_fifo(s, dev, pin_dst);
    test_events(s, dev, pin_src, pin_dst);
    test_destroy(dev, pin_src);

    /* aclrtMemcpy is synchronous and takes the modelled time. */
    double t0 = st_now_ms();
    CHECK_EQ(aclrtMemcpy(dev, N, pin_src, N, ACL_MEMCPY_HOST_TO_DEVICE), ACL_SUCCESS, "aclrtMemcpy H2D");
    CHECK(st_now_ms() - t0 >= kCopyMs * 0.9, "aclrtMemcpy returns after the modelled transfer time");

    REQUIRE_OK(aclrtDestroyStream(s));
    REQUIRE_OK(aclrtFree(dev));
    REQUIRE_OK(aclrtFreeHost(pin_src));
    REQUIRE_OK(aclrtFreeHost(pin_dst));
    REQUIRE_OK(aclrtResetDevice(0));
    REQUIRE_OK(aclFinalize());
    return st_done();
}
