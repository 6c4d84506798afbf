/*
 * acl_copy_path.c - the copy-path functions of SPEC section 2.3 that are not
 * about timing or memory location: aclrtMemcpy, aclrtMemcpyAsyncWithCondition,
 * aclrtMemcpy2d(Async), aclrtMemsetAsync, the aclrtMalloc variants, the
 * WithCfg allocators and the frees, each through its success and error paths;
 * and the NPUSIM_LOG line of every function with NPUSIM_LOG_FUNCS=all.
 * Sets its own NPUSIM_* variables.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl/acl.h"
#include "simtest.h"

static char g_log[256];

static void *pageable(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n) != 0)
        exit(1);
    return p;
}

/* Whether the log holds exactly this line. */
__attribute__((format(printf, 1, 2)))
static int logged(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    char *text = st_slurp(g_log);
    int found = 0;
    for (const char *p = text; p != NULL && *p != '\0';) {
        const char *nl = strchr(p, '\n');
        size_t n = nl != NULL ? (size_t)(nl - p) : strlen(p);
        if (n == strlen(line) && strncmp(p, line, n) == 0)
            found = 1;
        p = nl != NULL ? nl + 1 : NULL;
    }
    free(text);
    return found;
}

static void test_before_init(void)
{
    void *p = NULL;
    CHECK_EQ(aclrtMallocHostWithCfg(&p, 64, NULL), ACL_ERROR_UNINITIALIZE, "aclrtMallocHostWithCfg before aclInit");
    CHECK(logged("aclrtMallocHostWithCfg ptr=(nil) size=64 cfg=(nil) ret=%d", ACL_ERROR_UNINITIALIZE),
          "the failed allocation is logged with ptr=(nil)");
}

static void test_allocators(void)
{
    void *p = NULL;
    typedef aclError (*dev_alloc)(void **, size_t, aclrtMemMallocPolicy);
    static const struct {
        const char *name;
        dev_alloc fn;
    } allocs[] = { { "aclrtMalloc", aclrtMalloc },
                   { "aclrtMallocAlign32", aclrtMallocAlign32 },
                   { "aclrtMallocCached", aclrtMallocCached } };
    for (size_t i = 0; i < sizeof allocs / sizeof allocs[0]; i++) {
        const char *n = allocs[i].name;
        p = NULL;
        CHECK_EQ(allocs[i].fn(&p, 1000, ACL_MEM_MALLOC_HUGE_FIRST), ACL_SUCCESS, "%s", n);
        CHECK(p != NULL && (uintptr_t)p % 512 == 0, "%s returns 512-byte aligned memory", n);
        aclrtPtrAttributes a;
        CHECK(aclrtPointerGetAttributes(p, &a) == ACL_SUCCESS && a.location.type == ACL_MEM_LOCATION_TYPE_DEVICE,
              "%s memory is device memory", n);
        CHECK(logged("%s ptr=%p size=1000 policy=0 ret=0", n, p), "%s log line", n);
        CHECK_EQ(aclrtFree(p), ACL_SUCCESS, "aclrtFree of %s memory", n);
        CHECK(logged("aclrtFree ptr=%p ret=0", p), "aclrtFree log line");
        CHECK_EQ(allocs[i].fn(NULL, 64, ACL_MEM_MALLOC_HUGE_FIRST), ACL_ERROR_INVALID_PARAM, "%s(NULL)", n);
        CHECK_EQ(allocs[i].fn(&p, 0, ACL_MEM_MALLOC_HUGE_FIRST), ACL_ERROR_INVALID_PARAM, "%s of 0 bytes", n);
        CHECK_EQ(allocs[i].fn(&p, 64, (aclrtMemMallocPolicy)99), ACL_ERROR_INVALID_PARAM, "%s with policy 99", n);
        CHECK_EQ(allocs[i].fn(&p, (size_t)65 << 30, ACL_MEM_MALLOC_HUGE_FIRST), ACL_ERROR_RT_MEMORY_ALLOCATION,
                 "%s beyond the device's HBM", n);
    }

    p = NULL;
    CHECK_EQ(aclrtMallocWithCfg(&p, 4096, ACL_MEM_MALLOC_HUGE_FIRST, NULL), ACL_SUCCESS, "aclrtMallocWithCfg(cfg NULL)");
    CHECK(logged("aclrtMallocWithCfg ptr=%p size=4096 policy=0 cfg=(nil) ret=0", p), "aclrtMallocWithCfg log line");
    size_t free_before = 0, free_after = 0, total = 0;
    aclrtGetMemInfo(ACL_HBM_MEM, &free_after, &total);
    CHECK_EQ(aclrtFree(p), ACL_SUCCESS, "aclrtFree of aclrtMallocWithCfg memory");
    aclrtGetMemInfo(ACL_HBM_MEM, &free_before, &total);
    CHECK_EQ(free_before - free_after, 4096, "aclrtMallocWithCfg is charged to the device's HBM");
    /* The configuration is only passed through: any pointer will do. */
    aclrtMallocConfig *cfg = (aclrtMallocConfig *)&free_before;
    CHECK_EQ(aclrtMallocWithCfg(&p, 64, (aclrtMemMallocPolicy)(ACL_MEM_TYPE_HIGH_BAND_WIDTH | ACL_MEM_MALLOC_HUGE_FIRST),
                                cfg),
             ACL_SUCCESS, "aclrtMallocWithCfg with a configuration and ACL_MEM_TYPE_HIGH_BAND_WIDTH");
    CHECK_EQ(aclrtFree(p), ACL_SUCCESS, "aclrtFree");
    CHECK_EQ(aclrtMallocWithCfg(NULL, 64, ACL_MEM_MALLOC_HUGE_FIRST, NULL), ACL_ERROR_INVALID_PARAM,
             "aclrtMallocWithCfg(NULL)");

    CHECK_EQ(aclrtMallocHostWithCfg(&p, 100, NULL), ACL_SUCCESS, "aclrtMallocHostWithCfg(cfg NULL)");
    CHECK((uintptr_t)p % 64 == 0, "aclrtMallocHostWithCfg is 64-byte aligned");
    aclrtPtrAttributes a;
    CHECK(aclrtPointerGetAttributes(p, &a) == ACL_SUCCESS && a.location.type == ACL_MEM_LOCATION_TYPE_HOST,
          "aclrtMallocHostWithCfg memory is pinned host memory");
    CHECK(logged("aclrtMallocHostWithCfg ptr=%p size=100 cfg=(nil) ret=0", p), "aclrtMallocHostWithCfg log line");
    CHECK_EQ(aclrtFree(p), ACL_ERROR_RT_PARAM_INVALID, "aclrtFree of pinned memory");
    CHECK_EQ(aclrtFreeHost(p), ACL_SUCCESS, "aclrtFreeHost of aclrtMallocHostWithCfg memory");
    CHECK(logged("aclrtFreeHost ptr=%p ret=0", p), "aclrtFreeHost log line");
    CHECK_EQ(aclrtFreeHost(p), ACL_ERROR_RT_PARAM_INVALID, "aclrtFreeHost twice");
    CHECK_EQ(aclrtMallocHostWithCfg(NULL, 64, NULL), ACL_ERROR_INVALID_PARAM, "aclrtMallocHostWithCfg(NULL)");
    CHECK_EQ(aclrtMallocHostWithCfg(&p, 0, NULL), ACL_ERROR_INVALID_PARAM, "aclrtMallocHostWithCfg of 0 bytes");
    CHECK_EQ(aclrtMallocHost(&p, 64), ACL_SUCCESS, "aclrtMallocHost");
    CHECK(logged("aclrtMallocHost ptr=%p size=64 ret=0", p), "aclrtMallocHost log line");
    void *d = NULL;
    REQUIRE_OK(aclrtMalloc(&d, 64, ACL_MEM_MALLOC_HUGE_FIRST));
    CHECK_EQ(aclrtFreeHost(d), ACL_ERROR_RT_PARAM_INVALID, "aclrtFreeHost of device memory");
    CHECK_EQ(aclrtFree(NULL), ACL_ERROR_INVALID_PARAM, "aclrtFree(NULL)");
    CHECK_EQ(aclrtFreeHost(NULL), ACL_ERROR_INVALID_PARAM, "aclrtFreeHost(NULL)");
    void *pg = pageable(64);
    CHECK_EQ(aclrtFree(pg), ACL_ERROR_RT_PARAM_INVALID, "aclrtFree of pageable memory");
    free(pg);
    REQUIRE_OK(aclrtFree(d));
    REQUIRE_OK(aclrtFreeHost(p));
}

static void test_memcpy(aclrtStream s, unsigned char *dev, unsigned char *pin, unsigned char *pin2)
{
    unsigned char *pg = pageable(4096), *pg2 = pageable(4096);
    st_fill(pin, 4096, 1);
    CHECK_EQ(aclrtMemcpy(dev, 4096, pin, 4096, ACL_MEMCPY_HOST_TO_DEVICE), ACL_SUCCESS, "aclrtMemcpy H2D");
    CHECK_EQ(aclrtMemcpy(pg, 4096, dev, 4096, ACL_MEMCPY_DEVICE_TO_HOST), ACL_SUCCESS, "aclrtMemcpy D2H to pageable");
    CHECK(memcmp(pg, pin, 4096) == 0, "aclrtMemcpy round trip is complete when the calls return");
    CHECK_EQ(aclrtMemcpy(pg2, 4096, pg, 4096, ACL_MEMCPY_HOST_TO_HOST), ACL_SUCCESS,
             "aclrtMemcpy accepts host-to-host copies");
    CHECK(memcmp(pg2, pin, 4096) == 0, "host-to-host aclrtMemcpy copies");
    CHECK(logged("aclrtMemcpy dst=%p destMax=4096 src=%p count=4096 kind=0 ret=0", (void *)pg2, (void *)pg),
          "aclrtMemcpy log line");
    CHECK_EQ(aclrtMemcpy(NULL, 0, NULL, 0, ACL_MEMCPY_HOST_TO_HOST), ACL_SUCCESS, "aclrtMemcpy of 0 bytes");
    CHECK_EQ(aclrtMemcpy(NULL, 64, pin, 64, ACL_MEMCPY_HOST_TO_DEVICE), ACL_ERROR_INVALID_PARAM, "aclrtMemcpy NULL dst");
    CHECK_EQ(aclrtMemcpy(dev, 64, pin, 64, (aclrtMemcpyKind)6), ACL_ERROR_INVALID_PARAM, "aclrtMemcpy kind 6");
    CHECK_EQ(aclrtMemcpy(dev, 63, pin, 64, ACL_MEMCPY_HOST_TO_DEVICE), ACL_ERROR_RT_PARAM_INVALID,
             "aclrtMemcpy count > destMax");
    CHECK_EQ(aclrtMemcpy(dev + 4032, 4096, pin, 128, ACL_MEMCPY_HOST_TO_DEVICE), ACL_ERROR_RT_PARAM_INVALID,
             "aclrtMemcpy past the end of a device allocation");

    /* aclrtMemcpyAsyncWithCondition behaves as aclrtMemcpyAsync. */
    st_fill(pin, 4096, 2);
    memset(pin2, 0, 4096);
    CHECK_EQ(aclrtMemcpyAsyncWithCondition(dev, 4096, pin, 4096, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_SUCCESS,
             "aclrtMemcpyAsyncWithCondition H2D");
    CHECK_EQ(aclrtMemcpyAsyncWithCondition(pin2, 4096, dev, 4096, ACL_MEMCPY_DEVICE_TO_HOST, s), ACL_SUCCESS,
             "aclrtMemcpyAsyncWithCondition D2H");
    aclrtSynchronizeStream(s);
    CHECK(memcmp(pin2, pin, 4096) == 0, "aclrtMemcpyAsyncWithCondition round trip");
    CHECK(logged("aclrtMemcpyAsyncWithCondition dst=%p destMax=4096 src=%p count=4096 kind=2 stream=%p ret=0",
                 (void *)pin2, (void *)dev, s),
          "aclrtMemcpyAsyncWithCondition log line (its own name)");
    CHECK_EQ(aclrtMemcpyAsyncWithCondition(NULL, 0, NULL, 0, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_SUCCESS,
             "aclrtMemcpyAsyncWithCondition of 0 bytes");
    CHECK_EQ(aclrtMemcpyAsyncWithCondition(dev, 64, NULL, 64, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_ERROR_INVALID_PARAM,
             "aclrtMemcpyAsyncWithCondition NULL src");
    CHECK_EQ(aclrtMemcpyAsyncWithCondition(dev, 64, pin, 64, (aclrtMemcpyKind)7, s), ACL_ERROR_INVALID_PARAM,
             "aclrtMemcpyAsyncWithCondition kind 7");
    CHECK_EQ(aclrtMemcpyAsyncWithCondition(dev, 32, pin, 64, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_ERROR_RT_PARAM_INVALID,
             "aclrtMemcpyAsyncWithCondition count > destMax");
    CHECK_EQ(aclrtMemcpyAsyncWithCondition(pin2, 64, pin, 64, ACL_MEMCPY_HOST_TO_HOST, s),
             ACL_ERROR_RT_FEATURE_NOT_SUPPORT, "aclrtMemcpyAsyncWithCondition host-to-host on Ascend910B1");
    CHECK_EQ(aclrtMemcpyAsyncWithCondition(dev, 64, pin, 64, ACL_MEMCPY_HOST_TO_DEVICE, (aclrtStream)pg),
             ACL_ERROR_RT_PARAM_INVALID, "aclrtMemcpyAsyncWithCondition on a pointer that is not a stream");
    free(pg);
    free(pg2);
}

/* A rows x cols matrix inside pitched buffers. */
static int matrix_equal(const unsigned char *a, size_t apitch, const unsigned char *b, size_t bpitch, size_t width,
                        size_t height)
{
    for (size_t r = 0; r < height; r++)
        if (memcmp(a + r * apitch, b + r * bpitch, width) != 0)
            return 0;
    return 1;
}

static void test_2d(aclrtStream s, unsigned char *dev, unsigned char *pin, unsigned char *pin2)
{
    /* 100 x 30 bytes: from a pitch of 128 in pinned memory to a pitch of 136 on
     * the device and back to a pitch of 112, leaving the gaps untouched. */
    st_fill(pin, 4096, 3);
    memset(dev, 0xee, 4096);
    memset(pin2, 0xdd, 4096);
    CHECK_EQ(aclrtMemcpy2d(dev, 136, pin, 128, 100, 30, ACL_MEMCPY_HOST_TO_DEVICE), ACL_SUCCESS, "aclrtMemcpy2d H2D");
    CHECK(matrix_equal(dev, 136, pin, 128, 100, 30), "aclrtMemcpy2d copied every row");
    CHECK(dev[100] == 0xee && dev[135] == 0xee, "aclrtMemcpy2d leaves the pitch gap alone");
    CHECK(logged("aclrtMemcpy2d dst=%p dpitch=136 src=%p spitch=128 width=100 height=30 kind=1 ret=0", (void *)dev,
                 (void *)pin),
          "aclrtMemcpy2d log line");
    CHECK_EQ(aclrtMemcpy2dAsync(pin2, 112, dev, 136, 100, 30, ACL_MEMCPY_DEVICE_TO_HOST, s), ACL_SUCCESS,
             "aclrtMemcpy2dAsync D2H");
    aclrtSynchronizeStream(s);
    CHECK(matrix_equal(pin2, 112, pin, 128, 100, 30), "aclrtMemcpy2dAsync round trip");
    CHECK(pin2[100] == 0xdd && pin2[111] == 0xdd && pin2[112 * 29 + 100] == 0xdd,
          "aclrtMemcpy2dAsync leaves the pitch gaps alone");
    CHECK(logged("aclrtMemcpy2dAsync dst=%p dpitch=112 src=%p spitch=136 width=100 height=30 kind=2 stream=%p ret=0",
                 (void *)pin2, (void *)dev, s),
          "aclrtMemcpy2dAsync log line");

    CHECK_EQ(aclrtMemcpy2d(NULL, 128, NULL, 128, 0, 5, ACL_MEMCPY_HOST_TO_DEVICE), ACL_SUCCESS,
             "aclrtMemcpy2d of width 0");
    CHECK_EQ(aclrtMemcpy2dAsync(NULL, 128, NULL, 128, 64, 0, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_SUCCESS,
             "aclrtMemcpy2dAsync of height 0");
    CHECK_EQ(aclrtMemcpy2d(dev, 128, NULL, 128, 64, 2, ACL_MEMCPY_HOST_TO_DEVICE), ACL_ERROR_INVALID_PARAM,
             "aclrtMemcpy2d NULL src");
    CHECK_EQ(aclrtMemcpy2dAsync(NULL, 128, pin, 128, 64, 2, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_ERROR_INVALID_PARAM,
             "aclrtMemcpy2dAsync NULL dst");
    CHECK_EQ(aclrtMemcpy2d(dev, 128, pin, 128, 64, 2, ACL_MEMCPY_HOST_TO_BUF_TO_DEVICE), ACL_ERROR_INVALID_PARAM,
             "aclrtMemcpy2d does not take kind 5");
    CHECK_EQ(aclrtMemcpy2dAsync(dev, 128, pin, 128, 64, 2, (aclrtMemcpyKind)-1, s), ACL_ERROR_INVALID_PARAM,
             "aclrtMemcpy2dAsync kind -1");
    CHECK_EQ(aclrtMemcpy2d(dev, 64, pin, 128, 100, 2, ACL_MEMCPY_HOST_TO_DEVICE), ACL_ERROR_INVALID_PARAM,
             "aclrtMemcpy2d width > dpitch");
    CHECK_EQ(aclrtMemcpy2dAsync(dev, 128, pin, 64, 100, 2, ACL_MEMCPY_HOST_TO_DEVICE, s), ACL_ERROR_INVALID_PARAM,
             "aclrtMemcpy2dAsync width > spitch");
    CHECK_EQ(aclrtMemcpy2d(dev, SIZE_MAX / 2, pin, 128, 64, 4, ACL_MEMCPY_HOST_TO_DEVICE), ACL_ERROR_INVALID_PARAM,
             "aclrtMemcpy2d whose extent overflows");
    /* The extent of a side is pitch * (height - 1) + width: 128 * 31 + 128 = 4096 fits, 4097 does not. */
    CHECK_EQ(aclrtMemcpy2d(dev, 128, pin, 128, 128, 32, ACL_MEMCPY_HOST_TO_DEVICE), ACL_SUCCESS,
             "aclrtMemcpy2d filling the allocation exactly");
    CHECK_EQ(aclrtMemcpy2d(dev + 1, 128, pin, 128, 128, 32, ACL_MEMCPY_HOST_TO_DEVICE), ACL_ERROR_RT_PARAM_INVALID,
             "aclrtMemcpy2d one byte past the device allocation");
    CHECK_EQ(aclrtMemcpy2dAsync(dev, 128, pin + 1, 128, 128, 32, ACL_MEMCPY_HOST_TO_DEVICE, s),
             ACL_ERROR_RT_PARAM_INVALID, "aclrtMemcpy2dAsync one byte past the pinned allocation");
    CHECK_EQ(aclrtMemcpy2dAsync(pin2, 128, pin, 128, 64, 2, ACL_MEMCPY_HOST_TO_HOST, s),
             ACL_ERROR_RT_FEATURE_NOT_SUPPORT, "aclrtMemcpy2dAsync host-to-host on Ascend910B1");
    CHECK_EQ(aclrtMemcpy2dAsync(dev, 128, pin, 128, 64, 2, ACL_MEMCPY_HOST_TO_DEVICE, (aclrtStream)pin),
             ACL_ERROR_RT_PARAM_INVALID, "aclrtMemcpy2dAsync on a pointer that is not a stream");
}

static void test_memset(aclrtStream s, unsigned char *dev, unsigned char *pin)
{
    memset(dev, 0, 4096);
    CHECK_EQ(aclrtMemsetAsync(dev, 4096, 0x5a, 4000, s), ACL_SUCCESS, "aclrtMemsetAsync on device memory");
    CHECK(logged("aclrtMemsetAsync devPtr=%p maxCount=4096 value=90 count=4000 stream=%p ret=0", (void *)dev, s),
          "aclrtMemsetAsync log line");
    CHECK_EQ(aclrtMemsetAsync(pin, 4096, 0xa5, 4096, s), ACL_SUCCESS, "aclrtMemsetAsync accepts pinned host memory");
    aclrtSynchronizeStream(s);
    int ok = 1;
    for (int i = 0; i < 4096; i++)
        ok &= dev[i] == (i < 4000 ? 0x5a : 0) && pin[i] == 0xa5;
    CHECK(ok, "aclrtMemsetAsync set exactly count bytes");
    CHECK_EQ(aclrtMemsetAsync(NULL, 64, 0, 64, s), ACL_ERROR_INVALID_PARAM, "aclrtMemsetAsync(NULL)");
    CHECK_EQ(aclrtMemsetAsync(dev, 64, 0, 65, s), ACL_ERROR_RT_PARAM_INVALID, "aclrtMemsetAsync count > maxCount");
    CHECK_EQ(aclrtMemsetAsync(dev + 4000, 4096, 0, 97, s), ACL_ERROR_RT_PARAM_INVALID,
             "aclrtMemsetAsync past the end of the allocation");
    CHECK_EQ(aclrtMemsetAsync(dev, 64, 0, 64, (aclrtStream)dev), ACL_ERROR_RT_PARAM_INVALID,
             "aclrtMemsetAsync on a pointer that is not a stream");
    CHECK_EQ(aclrtMemsetAsync(dev, 64, 0, 0, s), ACL_SUCCESS, "aclrtMemsetAsync of 0 bytes");
}

int main(void)
{
    st_tempfile(g_log, sizeof g_log, "copy-path-log");
    setenv("NPUSIM_LOG", g_log, 1);
    setenv("NPUSIM_LOG_FUNCS", "all", 1);
    unsetenv("NPUSIM_SOC");
    unsetenv("NPUSIM_GBPS");
    unsetenv("NPUSIM_STRICT_KIND");
    unsetenv("NPUSIM_HBM_GIB");

    test_before_init();
    REQUIRE_OK(aclInit(NULL));
    REQUIRE_OK(aclrtSetDevice(0));
    aclrtStream s = NULL;
    unsigned char *dev = NULL, *pin = NULL, *pin2 = NULL;
    REQUIRE_OK(aclrtCreateStream(&s));
    REQUIRE_OK(aclrtMalloc((void **)&dev, 4096, ACL_MEM_MALLOC_HUGE_FIRST));
    REQUIRE_OK(aclrtMallocHost((void **)&pin, 4096));
    REQUIRE_OK(aclrtMallocHost((void **)&pin2, 4096));

    test_allocators();
    test_memcpy(s, dev, pin, pin2);
    test_2d(s, dev, pin, pin2);
    test_memset(s, dev, pin);

    CHECK_EQ(aclrtSynchronizeStream(s), ACL_SUCCESS, "aclrtSynchronizeStream");
    CHECK(logged("aclrtSynchronizeStream stream=%p ret=0", s), "aclrtSynchronizeStream log line");
    CHECK_EQ(aclrtSynchronizeDevice(), ACL_SUCCESS, "aclrtSynchronizeDevice");
    CHECK(logged("aclrtSynchronizeDevice ret=0"), "aclrtSynchronizeDevice log line");

    REQUIRE_OK(aclrtDestroyStream(s));
    REQUIRE_OK(aclrtFree(dev));
    REQUIRE_OK(aclrtFreeHost(pin));
    REQUIRE_OK(aclrtFreeHost(pin2));
    REQUIRE_OK(aclrtResetDevice(0));
    REQUIRE_OK(aclFinalize());
    unlink(g_log);
    return st_done();
}
