/*
 * acl_device_time.c - host waits and the device clock.
 *
 * With NPUSIM_GBPS=0.1 (set by the test) a copy of n bytes lasts n / 1e8
 * seconds on its stream.  Checks aclrtSynchronizeStreamWithTimeout (507046
 * while the stream is blocked behind a long copy, -1 waits), the other host
 * waits (aclrtSynchronizeEvent, aclrtSynchronizeDevice), and event
 * timestamps: on a device clock that is not the host's, monotonic along a
 * stream, spaced by the modelled copy durations, and - after a calibration
 * like a profiler's - inside the host window in which the copies ran.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl/acl.h"
#include "simtest.h"

#define GBPS 0.1
#define HUGE_COPY ((size_t)64 << 20) /* 671 ms at 0.1 GB/s */
#define N1 ((size_t)2 << 20)         /* 21 ms */
#define N2 ((size_t)4 << 20)         /* 42 ms */

static double modelled_us(size_t n)
{
    return (double)n / (GBPS * 1e9) * 1e6;
}

static int64_t host_us(void)
{
    return (int64_t)(st_now_ms() * 1000.0);
}

static int stream_busy(aclrtStream s)
{
    aclrtStreamStatus st = ACL_STREAM_STATUS_RESERVED;
    aclrtStreamQuery(s, &st);
    return st == ACL_STREAM_STATUS_NOT_READY;
}

static void test_sync_with_timeout(aclrtStream s, void *dev_huge, void *pin_huge)
{
    CHECK_EQ(aclrtSynchronizeStreamWithTimeout(s, 0), ACL_SUCCESS, "an idle stream: timeout 0 succeeds");
    CHECK_EQ(aclrtSynchronizeStreamWithTimeout(NULL, 10), ACL_SUCCESS, "the default stream");
    CHECK_EQ(aclrtSynchronizeStreamWithTimeout(s, -2), ACL_ERROR_INVALID_PARAM, "timeout -2");
    CHECK_EQ(aclrtSynchronizeStreamWithTimeout((aclrtStream)&s, 10), ACL_ERROR_RT_PARAM_INVALID,
             "a pointer that is not a stream");

    REQUIRE_OK(aclrtMemcpyAsync(dev_huge, HUGE_COPY, pin_huge, HUGE_COPY, ACL_MEMCPY_HOST_TO_DEVICE, s));
    CHECK_EQ(aclrtSynchronizeStreamWithTimeout(s, 1), ACL_ERROR_RT_STREAM_SYNC_TIMEOUT,
             "a stream blocked behind a 64 MiB copy times out after 1 ms");
    CHECK(stream_busy(s), "the copy is still running after the timeout");
    CHECK_EQ(aclrtSynchronizeStreamWithTimeout(s, -1), ACL_SUCCESS, "timeout -1 waits for ever");
    CHECK(!stream_busy(s), "and the stream is idle afterwards");
}

static void test_sync_event(aclrtStream s, void *dev_huge, void *pin_huge)
{
    aclrtEvent e = NULL, never = NULL;
    REQUIRE_OK(aclrtCreateEvent(&e));
    REQUIRE_OK(aclrtCreateEvent(&never));
    CHECK_EQ(aclrtSynchronizeEvent(never), ACL_SUCCESS, "aclrtSynchronizeEvent of an event never recorded");
    CHECK_EQ(aclrtSynchronizeEvent(NULL), ACL_ERROR_INVALID_PARAM, "aclrtSynchronizeEvent(NULL)");
    CHECK_EQ(aclrtSynchronizeEvent((aclrtEvent)&e), ACL_ERROR_RT_PARAM_INVALID, "a pointer that is not an event");

    st_fill(pin_huge, N2, 5);
    REQUIRE_OK(aclrtMemcpyAsync(dev_huge, N2, pin_huge, N2, ACL_MEMCPY_HOST_TO_DEVICE, s));
    REQUIRE_OK(aclrtRecordEvent(e, s));
    aclrtEventRecordedStatus st = ACL_EVENT_RECORDED_STATUS_COMPLETE;
    aclrtQueryEventStatus(e, &st);
    CHECK_EQ(st, ACL_EVENT_RECORDED_STATUS_NOT_READY, "the event waits behind a 42 ms copy");
    CHECK_EQ(aclrtSynchronizeEvent(e), ACL_SUCCESS, "aclrtSynchronizeEvent");
    aclrtQueryEventStatus(e, &st);
    CHECK_EQ(st, ACL_EVENT_RECORDED_STATUS_COMPLETE, "the event is complete when aclrtSynchronizeEvent returns");
    CHECK(memcmp(dev_huge, pin_huge, N2) == 0, "so is the copy before it");
    REQUIRE_OK(aclrtDestroyEvent(e));
    REQUIRE_OK(aclrtDestroyEvent(never));
}

static void *sync_device_without_context(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)aclrtSynchronizeDevice();
}

static void test_sync_device(aclrtStream s, void *dev_huge, void *pin_huge)
{
    aclrtStream s2 = NULL;
    void *dev2 = NULL;
    REQUIRE_OK(aclrtCreateStream(&s2));
    REQUIRE_OK(aclrtMalloc(&dev2, N2, ACL_MEM_MALLOC_HUGE_FIRST));
    REQUIRE_OK(aclrtMemcpyAsync(dev_huge, N2, pin_huge, N2, ACL_MEMCPY_HOST_TO_DEVICE, s));
    REQUIRE_OK(aclrtMemcpyAsync(dev2, N2, pin_huge, N2, ACL_MEMCPY_HOST_TO_DEVICE, s2));
    CHECK(stream_busy(s) && stream_busy(s2), "two streams busy");
    CHECK_EQ(aclrtSynchronizeDevice(), ACL_SUCCESS, "aclrtSynchronizeDevice");
    CHECK(!stream_busy(s) && !stream_busy(s2), "waits for every stream of the device");
    pthread_t th;
    void *ret = NULL;
    REQUIRE_OK(pthread_create(&th, NULL, sync_device_without_context, NULL));
    pthread_join(th, &ret);
    CHECK_EQ((intptr_t)ret, ACL_ERROR_RT_CONTEXT_NULL, "aclrtSynchronizeDevice without a current context");
    REQUIRE_OK(aclrtDestroyStream(s2));
    REQUIRE_OK(aclrtFree(dev2));
}

static void test_timestamp_errors(aclrtStream s)
{
    aclrtEvent timeline = NULL, sync_only = NULL;
    uint64_t ts = 0;
    REQUIRE_OK(aclrtCreateEventWithFlag(&timeline, ACL_EVENT_TIME_LINE));
    REQUIRE_OK(aclrtCreateEventWithFlag(&sync_only, ACL_EVENT_SYNC));
    CHECK_EQ(aclrtEventGetTimestamp(NULL, &ts), ACL_ERROR_INVALID_PARAM, "aclrtEventGetTimestamp(NULL, ...)");
    CHECK_EQ(aclrtEventGetTimestamp(timeline, NULL), ACL_ERROR_INVALID_PARAM, "aclrtEventGetTimestamp(event, NULL)");
    CHECK_EQ(aclrtEventGetTimestamp((aclrtEvent)&ts, &ts), ACL_ERROR_RT_PARAM_INVALID, "not an event");
    CHECK_EQ(aclrtEventGetTimestamp(timeline, &ts), ACL_ERROR_RT_EVENT_NOT_COMPLETE, "an event never recorded");
    REQUIRE_OK(aclrtRecordEvent(sync_only, s));
    REQUIRE_OK(aclrtSynchronizeEvent(sync_only));
    CHECK_EQ(aclrtEventGetTimestamp(sync_only, &ts), ACL_ERROR_RT_EVENT_TIMESTAMP_INVALID,
             "an event created without ACL_EVENT_TIME_LINE");
    REQUIRE_OK(aclrtDestroyEvent(timeline));
    REQUIRE_OK(aclrtDestroyEvent(sync_only));
}

/*
 * Calibration as a profiler does it: an event recorded on an idle stream and
 * synchronized, against the host clock read before and after.  Returns the
 * device-minus-host offset in microseconds; *err is its uncertainty (half the
 * host window, plus 1 us of timestamp truncation).
 */
static int64_t calibrate(aclrtStream s, aclrtEvent e, int64_t *err)
{
    uint64_t ts = 0;
    int64_t h0 = host_us();
    REQUIRE_OK(aclrtRecordEvent(e, s));
    REQUIRE_OK(aclrtSynchronizeEvent(e));
    int64_t h1 = host_us();
    REQUIRE_OK(aclrtEventGetTimestamp(e, &ts));
    *err = (h1 - h0) / 2 + 1;
    return (int64_t)ts - (h0 + h1) / 2;
}

static void test_timestamps(aclrtStream s, void *dev_huge, void *pin_huge)
{
    aclrtEvent cal = NULL, ea = NULL, eb = NULL, ec = NULL;
    REQUIRE_OK(aclrtCreateEventWithFlag(&cal, ACL_EVENT_TIME_LINE));
    REQUIRE_OK(aclrtCreateEventWithFlag(&ea, ACL_EVENT_TIME_LINE));
    REQUIRE_OK(aclrtCreateEventWithFlag(&eb, ACL_EVENT_TIME_LINE));
    REQUIRE_OK(aclrtCreateEvent(&ec));
    REQUIRE_OK(aclrtSynchronizeStream(s));

    int64_t err = 0;
    int64_t offset = calibrate(s, cal, &err);
    CHECK(offset > 3600ll * 1000000 || offset < -3600ll * 1000000,
          "the device clock is not the host's (offset %lld us)", (long long)offset);

    /* ea | copy N1 | eb | copy N2 | ec */
    int64_t hs = host_us();
    REQUIRE_OK(aclrtRecordEvent(ea, s));
    REQUIRE_OK(aclrtMemcpyAsync(dev_huge, N1, pin_huge, N1, ACL_MEMCPY_HOST_TO_DEVICE, s));
    REQUIRE_OK(aclrtRecordEvent(eb, s));
    REQUIRE_OK(aclrtMemcpyAsync(dev_huge, N2, pin_huge, N2, ACL_MEMCPY_HOST_TO_DEVICE, s));
    REQUIRE_OK(aclrtRecordEvent(ec, s));
    REQUIRE_OK(aclrtSynchronizeStream(s));
    int64_t he = host_us();

    uint64_t ta = 0, tb = 0, tc = 0;
    CHECK_EQ(aclrtEventGetTimestamp(ea, &ta), ACL_SUCCESS, "aclrtEventGetTimestamp (TIME_LINE event)");
    CHECK_EQ(aclrtEventGetTimestamp(eb, &tb), ACL_SUCCESS, "aclrtEventGetTimestamp");
    CHECK_EQ(aclrtEventGetTimestamp(ec, &tc), ACL_SUCCESS, "aclrtEventGetTimestamp (aclrtCreateEvent event)");
    CHECK(ta <= tb && tb <= tc, "timestamps follow the stream's order");

    /*
     * A copy's span between the events around it is at least its modelled
     * duration (the device timeline is modelled, and the device clock runs
     * 40 ppm fast, never slow), less 2 us of truncation of the two
     * timestamps.  On this idle stream it also includes the host time between
     * the record's submission and the copy's (the device had nothing to do
     * until then): 50 % plus 20 ms covers that on a loaded 2-core runner
     * without letting an unmodelled (instant) copy pass.
     */
    double d1 = (double)(tb - ta), d2 = (double)(tc - tb);
    CHECK(d1 >= modelled_us(N1) - 2 && d1 <= modelled_us(N1) * 1.5 + 20000,
          "2 MiB copy: %.0f us on the device, modelled %.0f us", d1, modelled_us(N1));
    CHECK(d2 >= modelled_us(N2) - 2 && d2 <= modelled_us(N2) * 1.5 + 20000,
          "4 MiB copy: %.0f us on the device, modelled %.0f us", d2, modelled_us(N2));
    float ms = 0;
    CHECK_EQ(aclrtEventElapsedTime(&ms, ea, ec), ACL_SUCCESS, "aclrtEventElapsedTime");
    CHECK((double)ms * 1000.0 >= (double)(tc - ta) - 2 && (double)ms * 1000.0 <= (double)(tc - ta) + 2,
          "aclrtEventElapsedTime (%.3f ms) agrees with the timestamps (%llu us)", (double)ms,
          (unsigned long long)(tc - ta));

    /*
     * Mapped onto the host clock with the calibration, the events lie inside
     * the window from before the first submission to the return of the
     * synchronize.  Slack: the calibration's uncertainty plus the drift
     * accumulated since (40 ppm of under a second, < 100 us).
     */
    int64_t slack = err + 100;
    int64_t ma = (int64_t)ta - offset, mc = (int64_t)tc - offset;
    CHECK(ma >= hs - slack && mc <= he + slack,
          "calibrated device times [%lld, %lld] lie in the host window [%lld, %lld] (+/- %lld us)",
          (long long)(ma - hs), (long long)(mc - hs), 0ll, (long long)(he - hs), (long long)slack);

    /* Many records along a stream: never decreasing. */
    aclrtEvent ev[32];
    int created = 0, monotonic = 1;
    for (int i = 0; i < 32; i++) {
        if (aclrtCreateEventWithFlag(&ev[i], ACL_EVENT_TIME_LINE) != ACL_SUCCESS)
            break;
        created++;
        aclrtMemcpyAsync(dev_huge, 4096, pin_huge, 4096, ACL_MEMCPY_HOST_TO_DEVICE, s);
        aclrtRecordEvent(ev[i], s);
    }
    aclrtSynchronizeStream(s);
    uint64_t prev = 0;
    for (int i = 0; i < created; i++) {
        uint64_t t = 0;
        monotonic &= aclrtEventGetTimestamp(ev[i], &t) == ACL_SUCCESS && t >= prev;
        prev = t;
        aclrtDestroyEvent(ev[i]);
    }
    CHECK(created == 32 && monotonic, "32 records along a stream have non-decreasing timestamps");

    REQUIRE_OK(aclrtDestroyEvent(cal));
    REQUIRE_OK(aclrtDestroyEvent(ea));
    REQUIRE_OK(aclrtDestroyEvent(eb));
    REQUIRE_OK(aclrtDestroyEvent(ec));
}

int main(void)
{
    setenv("NPUSIM_GBPS", "0.1", 1);
    unsetenv("NPUSIM_SOC");
    unsetenv("NPUSIM_DEVICES");
    unsetenv("NPUSIM_STRICT_KIND");

    REQUIRE_OK(aclInit(NULL));
    REQUIRE_OK(aclrtSetDevice(0));
    aclrtStream s = NULL;
    void *dev_huge = NULL, *pin_huge = NULL;
    REQUIRE_OK(aclrtCreateStream(&s));
    REQUIRE_OK(aclrtMalloc(&dev_huge, HUGE_COPY, ACL_MEM_MALLOC_HUGE_FIRST));
    REQUIRE_OK(aclrtMallocHost(&pin_huge, HUGE_COPY));

    test_sync_with_timeout(s, dev_huge, pin_huge);
    test_sync_event(s, dev_huge, pin_huge);
    test_sync_device(s, dev_huge, pin_huge);
    test_timestamp_errors(s);
    test_timestamps(s, dev_huge, pin_huge);

    REQUIRE_OK(aclrtDestroyStream(s));
    REQUIRE_OK(aclrtFree(dev_huge));
    REQUIRE_OK(aclrtFreeHost(pin_huge));
    REQUIRE_OK(aclrtResetDevice(0));
    REQUIRE_OK(aclFinalize());
    return st_done();
}
