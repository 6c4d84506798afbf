/*
 * acl_errors.c - return codes of the simulated AscendCL runtime.
 *
 * Checks aclrtMemcpyAsync's documented order of checks, the lifecycle errors
 * (before aclInit, without a device, invalid ids and handles), contexts,
 * memory bookkeeping, the SoC-dependent host-to-host rule, and the exact
 * NPUSIM_LOG line format.  Sets its own NPUSIM_* variables.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl/acl.h"
#include "simtest.h"

static int g_async_calls;

/* Every aclrtMemcpyAsync made by this test goes through here, so the test
 * knows how many log lines to expect. */
static aclError async_copy(void *dst, size_t destMax, const void *src, size_t count, int kind, aclrtStream stream)
{
    g_async_calls++;
    return aclrtMemcpyAsync(dst, destMax, src, count, (aclrtMemcpyKind)kind, stream);
}

static void *thread_without_device(void *arg)
{
    void **bufs = (void **)arg;
    int32_t dev = -1;
    aclError *out = (aclError *)bufs[2];
    out[0] = aclrtMemcpyAsync(bufs[0], 64, bufs[1], 64, ACL_MEMCPY_HOST_TO_DEVICE, NULL);
    out[1] = aclrtGetDevice(&dev);
    out[2] = aclrtCreateStream((aclrtStream *)&bufs[3]);
    return NULL;
}

static char g_temp_paths[4][256];
static int g_temp_count;

static char *write_temp(const char *tag, const char *content)
{
    char *p = g_temp_paths[g_temp_count++ % 4];
    st_tempfile(p, sizeof g_temp_paths[0], tag);
    FILE *f = fopen(p, "w");
    fputs(content, f);
    fclose(f);
    return p;
}

static void remove_temps(void)
{
    for (int i = 0; i < g_temp_count && i < 4; i++)
        unlink(g_temp_paths[i]);
}

static void test_lifecycle(void)
{
    char buf[128];
    CHECK_EQ(aclrtSetDevice(0), ACL_ERROR_UNINITIALIZE, "aclrtSetDevice before aclInit");
    CHECK_EQ(aclrtCreateContext((aclrtContext *)&buf, 0), ACL_ERROR_UNINITIALIZE, "aclrtCreateContext before aclInit");
    CHECK_EQ(async_copy(buf, 64, buf + 64, 64, 1, NULL), ACL_ERROR_RT_CONTEXT_NULL,
             "aclrtMemcpyAsync before aclInit has no context");
    CHECK_EQ(aclFinalize(), ACL_ERROR_REPEAT_FINALIZE, "aclFinalize before aclInit");
    CHECK_EQ(aclInit("/nonexistent/dir/acl.json"), ACL_ERROR_INVALID_FILE, "aclInit with an unreadable path");
    CHECK_EQ(aclInit(write_temp("badjson", "device: 0\n")), ACL_ERROR_PARSE_FILE, "aclInit with a non-JSON file");
    CHECK_EQ(aclInit(write_temp("json", " {\n  \"dump\": {}\n}\n")), ACL_SUCCESS, "aclInit with a JSON file");
    CHECK_EQ(aclInit(NULL), ACL_ERROR_REPEAT_INITIALIZE, "second aclInit");
    const char *msg = aclGetRecentErrMsg();
    CHECK(msg != NULL && strstr(msg, "aclInit") != NULL, "aclGetRecentErrMsg describes the last error");
    CHECK(aclGetRecentErrMsg() == NULL, "aclGetRecentErrMsg is cleared once read");

    uint32_t n = 0;
    CHECK_EQ(aclrtGetDeviceCount(&n), ACL_SUCCESS, "aclrtGetDeviceCount");
    CHECK_EQ(n, 4, "NPUSIM_DEVICES=4 gives 4 devices");
    aclrtRunMode mode = ACL_DEVICE;
    CHECK_EQ(aclrtGetRunMode(&mode), ACL_SUCCESS, "aclrtGetRunMode");
    CHECK_EQ(mode, ACL_HOST, "run mode is ACL_HOST");
    const char *soc = aclrtGetSocName();
    CHECK(soc != NULL && strcmp(soc, "Ascend910B1") == 0, "aclrtGetSocName is Ascend910B1 by default");
    int32_t maj = -1, min = -1, pat = -1;
    CHECK_EQ(aclrtGetVersion(&maj, &min, &pat), ACL_SUCCESS, "aclrtGetVersion");

    int32_t dev = -1;
    CHECK_EQ(aclrtGetDevice(&dev), ACL_ERROR_RT_CONTEXT_NULL, "aclrtGetDevice without a device");
    CHECK_EQ(aclrtSetDevice(4), ACL_ERROR_RT_INVALID_DEVICEID, "aclrtSetDevice(4) of 4 devices");
    CHECK_EQ(aclrtSetDevice(-1), ACL_ERROR_RT_INVALID_DEVICEID, "aclrtSetDevice(-1)");
    CHECK_EQ(async_copy(buf, 64, buf + 64, 64, 1, NULL), ACL_ERROR_RT_CONTEXT_NULL,
             "aclrtMemcpyAsync without a device");
    CHECK_EQ(async_copy(NULL, 0, NULL, 0, 99, (aclrtStream)0x10), ACL_SUCCESS,
             "count 0 succeeds before any other check");
    void *p = NULL;
    CHECK_EQ(aclrtMalloc(&p, 64, ACL_MEM_MALLOC_HUGE_FIRST), ACL_ERROR_RT_CONTEXT_NULL, "aclrtMalloc without a device");
    aclrtStream s = NULL;
    CHECK_EQ(aclrtCreateStream(&s), ACL_ERROR_RT_CONTEXT_NULL, "aclrtCreateStream without a device");
}

static void test_memcpy_async_order(void)
{
    void *dev = NULL, *dev1 = NULL, *pin = NULL, *pin2 = NULL;
    aclrtStream s0 = NULL, s1 = NULL;

    REQUIRE_OK(aclrtSetDevice(1));
    REQUIRE_OK(aclrtCreateStream(&s1));
    REQUIRE_OK(aclrtMalloc(&dev1, 4096, ACL_MEM_MALLOC_HUGE_FIRST));
    REQUIRE_OK(aclrtSetDevice(0));
    int32_t d = -1;
    CHECK_EQ(aclrtGetDevice(&d), ACL_SUCCESS, "aclrtGetDevice after aclrtSetDevice(0)");
    CHECK_EQ(d, 0, "current device is 0");
    REQUIRE_OK(aclrtCreateStream(&s0));
    REQUIRE_OK(aclrtMalloc(&dev, 4096, ACL_MEM_MALLOC_NORMAL_ONLY));
    REQUIRE_OK(aclrtMallocHost(&pin, 4096));
    REQUIRE_OK(aclrtMallocHost(&pin2, 4096));
    CHECK((uintptr_t)dev % 512 == 0, "aclrtMalloc is 512-byte aligned");
    CHECK((uintptr_t)pin % 64 == 0, "aclrtMallocHost is 64-byte aligned");

    CHECK_EQ(async_copy(NULL, 0, NULL, 0, 1, s0), ACL_SUCCESS, "count 0 with NULL pointers");
    CHECK_EQ(async_copy(NULL, 64, pin, 128, 1, s0), ACL_ERROR_INVALID_PARAM,
             "NULL dst is reported before count > destMax");
    CHECK_EQ(async_copy(dev, 4096, NULL, 64, 1, s0), ACL_ERROR_INVALID_PARAM, "NULL src");
    CHECK_EQ(async_copy(dev, 4096, pin, 64, 6, s0), ACL_ERROR_INVALID_PARAM, "kind 6 (INNER_DEVICE_TO_DEVICE)");
    CHECK_EQ(async_copy(dev, 4096, pin, 64, 7, s0), ACL_ERROR_INVALID_PARAM, "kind 7 (INTER_DEVICE_TO_DEVICE)");
    CHECK_EQ(async_copy(dev, 4096, pin, 64, -1, s0), ACL_ERROR_INVALID_PARAM, "kind -1");
    CHECK_EQ(async_copy(dev, 64, pin, 128, 9, s0), ACL_ERROR_INVALID_PARAM, "bad kind is reported before count > destMax");
    CHECK_EQ(async_copy(dev, 64, pin, 128, 1, s0), ACL_ERROR_RT_PARAM_INVALID, "count > destMax");
    CHECK_EQ(async_copy(dev, 64, pin, 128, 0, s0), ACL_ERROR_RT_PARAM_INVALID,
             "count > destMax is reported before host-to-host");
    CHECK_EQ(async_copy(dev, 4096, pin, 64, 1, (aclrtStream)pin2), ACL_ERROR_RT_PARAM_INVALID,
             "a pointer that is not a stream");
    CHECK_EQ(async_copy(dev, 4096, pin, 64, 1, s1), ACL_ERROR_RT_STREAM_CONTEXT, "stream of another device");
    CHECK_EQ(async_copy(pin2, 4096, pin, 64, 0, s1), ACL_ERROR_RT_STREAM_CONTEXT,
             "stream check comes before host-to-host");
    CHECK_EQ(async_copy(pin2, 4096, pin, 64, 0, s0), ACL_ERROR_RT_FEATURE_NOT_SUPPORT, "host-to-host on Ascend910B1");
    CHECK_EQ(async_copy(dev, 4096, dev, 64, 3, s0), ACL_SUCCESS, "dst == src succeeds");
    CHECK_EQ(async_copy(pin, 4096, pin, 64, 1, s0), ACL_ERROR_RT_FEATURE_NOT_SUPPORT,
             "dst == src of pinned memory is host-to-host whatever the kind: rejected before the dst == src check");
    CHECK_EQ(async_copy(dev, 8192, pin, 8192, 1, s0), ACL_ERROR_RT_PARAM_INVALID,
             "a copy that overruns its tracked allocation");
    CHECK_EQ(async_copy(dev, 4096, pin, 64, 5, s0), ACL_SUCCESS, "kind 5 (HOST_TO_BUF_TO_DEVICE)");
    aclrtSynchronizeStream(s0);
    CHECK_EQ(async_copy(dev, 4096, pin, 64, 4, NULL), ACL_SUCCESS, "kind 4 (DEFAULT) on the default stream");
    aclrtSynchronizeStream(NULL);
    CHECK_EQ(async_copy((char *)dev + 1, 4095, (char *)pin + 3, 61, 1, s0), ACL_SUCCESS,
             "the runtime does not check 64-byte alignment");
    CHECK_EQ(async_copy(dev, 4096, dev1, 4096, 3, s0), ACL_SUCCESS, "device-to-device across devices");
    CHECK_EQ(aclrtSynchronizeStream(s0), ACL_SUCCESS, "aclrtSynchronizeStream");
    CHECK_EQ(aclrtSynchronizeStream(NULL), ACL_SUCCESS, "aclrtSynchronizeStream(NULL)");
    CHECK_EQ(aclrtSynchronizeStream(s1), ACL_ERROR_RT_STREAM_CONTEXT, "synchronize a stream of another device");

    /* Another thread has no current context of its own. */
    aclError rets[3] = { -1, -1, -1 };
    void *args[4] = { dev, pin, rets, NULL };
    pthread_t th;
    pthread_create(&th, NULL, thread_without_device, args);
    pthread_join(th, NULL);
    g_async_calls++;
    CHECK_EQ(rets[0], ACL_ERROR_RT_CONTEXT_NULL, "the current device is per thread (aclrtMemcpyAsync)");
    CHECK_EQ(rets[1], ACL_ERROR_RT_CONTEXT_NULL, "the current device is per thread (aclrtGetDevice)");
    CHECK_EQ(rets[2], ACL_ERROR_RT_CONTEXT_NULL, "the current device is per thread (aclrtCreateStream)");

    /* Synchronous copy and memset. */
    char a[256], b[256];
    st_fill(a, sizeof a, 7);
    memset(b, 0, sizeof b);
    CHECK_EQ(aclrtMemcpy(b, sizeof b, a, sizeof a, ACL_MEMCPY_HOST_TO_HOST), ACL_SUCCESS,
             "aclrtMemcpy accepts host-to-host");
    CHECK(memcmp(a, b, sizeof a) == 0, "aclrtMemcpy host-to-host copied the data");
    CHECK_EQ(aclrtMemcpy(b, 16, a, 32, ACL_MEMCPY_HOST_TO_HOST), ACL_ERROR_RT_PARAM_INVALID,
             "aclrtMemcpy count > destMax");
    CHECK_EQ(aclrtMemcpy(b, sizeof b, a, 32, (aclrtMemcpyKind)6), ACL_ERROR_INVALID_PARAM, "aclrtMemcpy kind 6");
    CHECK_EQ(aclrtMemcpy(NULL, sizeof b, a, 32, ACL_MEMCPY_HOST_TO_HOST), ACL_ERROR_INVALID_PARAM,
             "aclrtMemcpy NULL dst");
    CHECK_EQ(aclrtMemset(dev, 4096, 0xab, 4096), ACL_SUCCESS, "aclrtMemset");
    CHECK_EQ(aclrtMemcpy(b, sizeof b, dev, sizeof b, ACL_MEMCPY_DEVICE_TO_HOST), ACL_SUCCESS, "aclrtMemcpy D2H");
    CHECK(b[0] == (char)0xab && b[255] == (char)0xab, "aclrtMemset set the bytes");
    CHECK_EQ(aclrtMemset(dev, 16, 0, 32), ACL_ERROR_RT_PARAM_INVALID, "aclrtMemset count > maxCount");
    CHECK_EQ(aclrtMemset(NULL, 16, 0, 8), ACL_ERROR_INVALID_PARAM, "aclrtMemset NULL");

    /* Memory bookkeeping. */
    size_t fr0 = 0, tot = 0, fr1 = 0, fr2 = 0, ddr_free = 1, ddr_total = 1;
    CHECK_EQ(aclrtGetMemInfo(ACL_HBM_MEM, &fr0, &tot), ACL_SUCCESS, "aclrtGetMemInfo(ACL_HBM_MEM)");
    CHECK(tot == (size_t)64 << 30, "64 GiB of HBM per device");
    void *big = NULL;
    REQUIRE_OK(aclrtMalloc(&big, 1 << 20, ACL_MEM_MALLOC_HUGE_ONLY));
    aclrtGetMemInfo(ACL_HBM_MEM_HUGE, &fr1, &tot);
    CHECK_EQ(fr0 - fr1, 1 << 20, "aclrtMalloc is charged to the device");
    CHECK_EQ(aclrtFree(big), ACL_SUCCESS, "aclrtFree");
    aclrtGetMemInfo(ACL_HBM_MEM_NORMAL, &fr2, &tot);
    CHECK_EQ(fr2, fr0, "aclrtFree returns the memory");
    CHECK_EQ(aclrtGetMemInfo(ACL_DDR_MEM, &ddr_free, &ddr_total), ACL_SUCCESS, "aclrtGetMemInfo(ACL_DDR_MEM)");
    CHECK_EQ(ddr_total, 0, "no device DDR on 910B");
    CHECK_EQ(aclrtGetMemInfo((aclrtMemAttr)99, &fr0, &tot), ACL_ERROR_INVALID_PARAM, "unknown aclrtMemAttr");
    CHECK_EQ(aclrtMalloc(&big, (size_t)65 << 30, ACL_MEM_MALLOC_HUGE_FIRST), ACL_ERROR_RT_MEMORY_ALLOCATION,
             "aclrtMalloc beyond the HBM size");
    CHECK_EQ(aclrtMalloc(&big, 0, ACL_MEM_MALLOC_HUGE_FIRST), ACL_ERROR_INVALID_PARAM, "aclrtMalloc of 0 bytes");
    CHECK_EQ(aclrtFree(NULL), ACL_ERROR_INVALID_PARAM, "aclrtFree(NULL)");
    CHECK_EQ(aclrtFree(a), ACL_ERROR_RT_PARAM_INVALID, "aclrtFree of a stack address");
    CHECK_EQ(aclrtFreeHost(dev), ACL_ERROR_RT_PARAM_INVALID, "aclrtFreeHost of device memory");
    CHECK_EQ(aclrtFree((char *)dev + 64), ACL_ERROR_RT_PARAM_INVALID, "aclrtFree of an interior pointer");

    /* Contexts. */
    aclrtContext def = NULL, ctx = NULL, cur = NULL;
    CHECK_EQ(aclrtGetCurrentContext(&def), ACL_SUCCESS, "aclrtGetCurrentContext");
    CHECK_EQ(aclrtCreateContext(&ctx, 2), ACL_SUCCESS, "aclrtCreateContext on device 2");
    aclrtGetCurrentContext(&cur);
    CHECK(cur == ctx, "a new context becomes current");
    aclrtGetDevice(&d);
    CHECK_EQ(d, 2, "the new context's device is current");
    aclrtStream s2 = NULL;
    CHECK_EQ(aclrtCreateStream(&s2), ACL_SUCCESS, "aclrtCreateStream in the new context");
    CHECK_EQ(async_copy(dev, 4096, pin, 64, 1, s0), ACL_ERROR_RT_STREAM_CONTEXT, "device 0's stream from device 2");
    CHECK_EQ(aclrtSetCurrentContext(def), ACL_SUCCESS, "aclrtSetCurrentContext back to the default context");
    aclrtGetDevice(&d);
    CHECK_EQ(d, 0, "device 0 is current again");
    CHECK_EQ(aclrtDestroyContext(def), ACL_ERROR_RT_PARAM_INVALID, "the default context cannot be destroyed");
    CHECK_EQ(aclrtDestroyContext(ctx), ACL_SUCCESS, "aclrtDestroyContext");
    CHECK_EQ(aclrtSetCurrentContext(ctx), ACL_ERROR_RT_PARAM_INVALID, "a destroyed context cannot be made current");
    CHECK_EQ(aclrtDestroyStream(s2), ACL_ERROR_RT_PARAM_INVALID, "streams die with their context");

    CHECK_EQ(aclrtDestroyStream(s0), ACL_SUCCESS, "aclrtDestroyStream");
    CHECK_EQ(aclrtDestroyStream(s0), ACL_ERROR_RT_PARAM_INVALID, "aclrtDestroyStream twice");
    CHECK_EQ(aclrtDestroyStream(NULL), ACL_ERROR_INVALID_PARAM, "aclrtDestroyStream(NULL)");
    CHECK_EQ(aclrtFree(dev), ACL_SUCCESS, "aclrtFree device memory");
    CHECK_EQ(aclrtFreeHost(pin), ACL_SUCCESS, "aclrtFreeHost");
    CHECK_EQ(aclrtFreeHost(pin), ACL_ERROR_RT_PARAM_INVALID, "aclrtFreeHost twice");
    aclrtFreeHost(pin2);

    /* aclrtSetDevice is reference counted. */
    REQUIRE_OK(aclrtSetDevice(0));
    CHECK_EQ(aclrtResetDevice(0), ACL_SUCCESS, "aclrtResetDevice (1 of 2)");
    CHECK_EQ(aclrtGetDevice(&d), ACL_SUCCESS, "the device stays set until the last reset");
    CHECK_EQ(aclrtResetDevice(0), ACL_SUCCESS, "aclrtResetDevice (2 of 2)");
    CHECK_EQ(aclrtGetDevice(&d), ACL_ERROR_RT_CONTEXT_NULL, "no current device after the last reset");
    CHECK_EQ(aclrtSetDevice(1), ACL_SUCCESS, "aclrtSetDevice(1)");
    CHECK_EQ(aclrtFree(dev1), ACL_SUCCESS, "aclrtFree on device 1");
    CHECK_EQ(aclrtResetDeviceForce(1), ACL_SUCCESS, "aclrtResetDeviceForce(1)");
    CHECK_EQ(aclrtDestroyStream(s1), ACL_ERROR_RT_PARAM_INVALID, "streams die with the device");
    CHECK_EQ(aclFinalize(), ACL_SUCCESS, "aclFinalize");
}

static void test_soc(const char *soc, aclError want)
{
    void *a = NULL, *b = NULL;
    setenv("NPUSIM_SOC", soc, 1);
    REQUIRE_OK(aclInit(NULL));
    REQUIRE_OK(aclrtSetDevice(0));
    CHECK(strcmp(aclrtGetSocName(), soc) == 0, "aclrtGetSocName follows NPUSIM_SOC=%s", soc);
    REQUIRE_OK(aclrtMallocHost(&a, 1024));
    REQUIRE_OK(aclrtMallocHost(&b, 1024));
    st_fill(a, 1024, 3);
    memset(b, 0, 1024);
    CHECK_EQ(async_copy(b, 1024, a, 1024, ACL_MEMCPY_HOST_TO_HOST, NULL), want, "asynchronous host-to-host on %s",
             soc);
    aclrtSynchronizeStream(NULL);
    CHECK((memcmp(a, b, 1024) == 0) == (want == ACL_SUCCESS), "host-to-host data on %s", soc);
    aclrtFreeHost(a);
    aclrtFreeHost(b);
    REQUIRE_OK(aclrtResetDevice(0));
    REQUIRE_OK(aclFinalize());
}

static void test_log(const char *path)
{
    char *text = st_slurp(path);
    CHECK(text != NULL, "NPUSIM_LOG file exists");
    if (text == NULL)
        return;
    CHECK_EQ(st_count_lines(text, "aclrtMemcpyAsync "), g_async_calls, "one log line per aclrtMemcpyAsync call");
    CHECK(strstr(text, "aclrtMemcpyAsync dst=(nil) destMax=0 src=(nil) count=0 kind=99 stream=0x10 ret=0\n") != NULL,
          "log line for a count-0 call with NULL pointers");
    CHECK(strstr(text, " kind=0 stream=") != NULL && strstr(text, " ret=207000\n") != NULL,
          "log lines carry the kind and the return code");
    free(text);
}

int main(void)
{
    char logpath[256];
    st_tempfile(logpath, sizeof logpath, "errors-log");
    setenv("NPUSIM_LOG", logpath, 1);
    setenv("NPUSIM_DEVICES", "4", 1);
    unsetenv("NPUSIM_SOC");
    unsetenv("NPUSIM_GBPS");

    test_lifecycle();
    test_memcpy_async_order();
    test_soc("Ascend310P3", ACL_SUCCESS);
    test_soc("Ascend910_9391", ACL_ERROR_RT_FEATURE_NOT_SUPPORT);
    test_soc("Ascend910B4", ACL_ERROR_RT_FEATURE_NOT_SUPPORT);
    test_log(logpath);
    unlink(logpath);
    remove_temps();
    return st_done();
}
