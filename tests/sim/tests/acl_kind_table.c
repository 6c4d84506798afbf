/*
 * acl_kind_table.c - the runtime's location/kind table (SPEC section 9).
 *
 * Every row (pinned or registered host, device and pageable memory on each
 * side) with every kind 0..4, through aclrtMemcpyAsync,
 * aclrtMemcpyAsyncWithCondition, aclrtMemcpy and aclrtMemcpy2dAsync: first
 * with the CANN 8.x correction, then with NPUSIM_STRICT_KIND=1 (rows 1-4
 * reject a mismatching kind with 107000).  The effective kind shows in the
 * result: an asynchronous copy whose effective kind is HOST_TO_HOST is
 * rejected on Ascend910B1 (207000), so a pinned-to-device copy passed as
 * HOST_TO_HOST succeeds and a pinned-to-pinned copy passed as HOST_TO_DEVICE
 * does not.  Successful copies are checked byte for byte.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "acl/acl.h"
#include "simtest.h"

#define SZ 4096

enum side { HOST, DEVICE, PAGEABLE };
static const char *const kSide[] = { "host", "device", "pageable" };
static const char *const kKind[] = { "HOST_TO_HOST", "HOST_TO_DEVICE", "DEVICE_TO_HOST", "DEVICE_TO_DEVICE",
                                     "DEFAULT" };

/*
 * The table, written out: for each row the kind rows 1-4 force (-1 for rows
 * 5-9), and per passed kind 0..4 what CANN 8.x does: 'S' copies, 'L' rejects
 * the location (107000), 'H' copies with effective kind HOST_TO_HOST (an
 * asynchronous copy then fails with 207000 on 910B).
 */
struct row {
    int number;
    enum side src, dst;
    int forced;
    const char *lenient; /* kinds 0..4 */
};

static const struct row kRows[] = {
    { 1, HOST, DEVICE, ACL_MEMCPY_HOST_TO_DEVICE, "SSSSS" },
    { 2, DEVICE, HOST, ACL_MEMCPY_DEVICE_TO_HOST, "SSSSS" },
    { 3, HOST, HOST, ACL_MEMCPY_HOST_TO_HOST, "HHHHH" },
    { 4, DEVICE, DEVICE, ACL_MEMCPY_DEVICE_TO_DEVICE, "SSSSS" },
    { 5, PAGEABLE, DEVICE, -1, "LSLSS" },
    { 6, DEVICE, PAGEABLE, -1, "LLSSS" },
    { 7, HOST, PAGEABLE, -1, "HSLLH" },
    { 8, PAGEABLE, HOST, -1, "HLSLH" },
    { 9, PAGEABLE, PAGEABLE, -1, "HSSSH" },
};

enum api { ASYNC, WITH_CONDITION, SYNC, ASYNC_2D };
static const char *const kApi[] = { "aclrtMemcpyAsync", "aclrtMemcpyAsyncWithCondition", "aclrtMemcpy",
                                    "aclrtMemcpy2dAsync" };

struct buffers {
    unsigned char *src[3], *dst[3];
    unsigned char *registered_src; /* pageable memory registered with aclrtHostRegister */
};

static aclrtStream g_stream;

static unsigned char *pageable(void)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, SZ) != 0)
        exit(1);
    return p;
}

static int expected(const struct row *r, int kind, enum api api, int strict)
{
    if (strict && r->forced >= 0 && kind != ACL_MEMCPY_DEFAULT && kind != r->forced)
        return ACL_ERROR_RT_PARAM_INVALID;
    switch (r->lenient[kind]) {
    case 'L':
        return ACL_ERROR_RT_PARAM_INVALID;
    case 'H':
        return api == SYNC ? ACL_SUCCESS : ACL_ERROR_RT_FEATURE_NOT_SUPPORT;
    default:
        return ACL_SUCCESS;
    }
}

static aclError run(enum api api, void *dst, const void *src, int kind)
{
    switch (api) {
    case ASYNC:
        return aclrtMemcpyAsync(dst, SZ, src, SZ, (aclrtMemcpyKind)kind, g_stream);
    case WITH_CONDITION:
        return aclrtMemcpyAsyncWithCondition(dst, SZ, src, SZ, (aclrtMemcpyKind)kind, g_stream);
    case SYNC:
        return aclrtMemcpy(dst, SZ, src, SZ, (aclrtMemcpyKind)kind);
    default:
        return aclrtMemcpy2dAsync(dst, 64, src, 64, 64, SZ / 64, (aclrtMemcpyKind)kind, g_stream);
    }
}

static void check_table(const struct buffers *b, enum api api, int strict)
{
    uint32_t seed = 1;
    for (size_t i = 0; i < sizeof kRows / sizeof kRows[0]; i++) {
        const struct row *r = &kRows[i];
        for (int kind = 0; kind <= ACL_MEMCPY_DEFAULT; kind++) {
            unsigned char *src = b->src[r->src], *dst = b->dst[r->dst];
            st_fill(src, SZ, ++seed);
            memset(dst, 0, SZ);
            int want = expected(r, kind, api, strict);
            aclError got = run(api, dst, src, kind);
            aclrtSynchronizeStream(g_stream);
            CHECK(got == want && (got != ACL_SUCCESS || memcmp(dst, src, SZ) == 0),
                  "%s %s row %d (%s -> %s) kind %s: %d (expected %d)%s", strict ? "strict" : "8.x", kApi[api],
                  r->number, kSide[r->src], kSide[r->dst], kKind[kind], (int)got, want,
                  got == ACL_SUCCESS && memcmp(dst, src, SZ) != 0 ? ", data differ" : "");
        }
    }
}

/* Registered host memory is "host" in the table, like pinned memory. */
static void check_registered(const struct buffers *b, int strict)
{
    unsigned char *dev = b->dst[DEVICE];
    st_fill(b->registered_src, SZ, 99);
    /* Row 1 with HOST_TO_HOST passed: corrected (8.x) or rejected (strict). */
    aclError got = aclrtMemcpyAsync(dev, SZ, b->registered_src, SZ, ACL_MEMCPY_HOST_TO_HOST, g_stream);
    aclrtSynchronizeStream(g_stream);
    CHECK_EQ(got, strict ? ACL_ERROR_RT_PARAM_INVALID : ACL_SUCCESS,
             "%s registered -> device passed as HOST_TO_HOST (row 1)", strict ? "strict" : "8.x");
    /* Row 7, not row 9: registered -> pageable with DEVICE_TO_DEVICE is a location error. */
    got = aclrtMemcpyAsync(b->dst[PAGEABLE], SZ, b->registered_src, SZ, ACL_MEMCPY_DEVICE_TO_DEVICE, g_stream);
    CHECK_EQ(got, ACL_ERROR_RT_PARAM_INVALID, "%s registered -> pageable passed as DEVICE_TO_DEVICE (row 7)",
             strict ? "strict" : "8.x");
}

static void setup(struct buffers *b, unsigned char *pg_src, unsigned char *pg_dst, unsigned char *reg)
{
    REQUIRE_OK(aclInit(NULL));
    REQUIRE_OK(aclrtSetDevice(0));
    REQUIRE_OK(aclrtCreateStream(&g_stream));
    REQUIRE_OK(aclrtMallocHost((void **)&b->src[HOST], SZ));
    REQUIRE_OK(aclrtMallocHost((void **)&b->dst[HOST], SZ));
    REQUIRE_OK(aclrtMalloc((void **)&b->src[DEVICE], SZ, ACL_MEM_MALLOC_HUGE_FIRST));
    REQUIRE_OK(aclrtMalloc((void **)&b->dst[DEVICE], SZ, ACL_MEM_MALLOC_HUGE_FIRST));
    b->src[PAGEABLE] = pg_src;
    b->dst[PAGEABLE] = pg_dst;
    void *mapped = NULL;
    REQUIRE_OK(aclrtHostRegister(reg, SZ, ACL_HOST_REGISTER_MAPPED, &mapped));
    b->registered_src = reg;
}

int main(void)
{
    unsetenv("NPUSIM_SOC");
    unsetenv("NPUSIM_GBPS");
    unsetenv("NPUSIM_STRICT_KIND");
    unsigned char *pg_src = pageable(), *pg_dst = pageable(), *reg = pageable();
    struct buffers b;

    setup(&b, pg_src, pg_dst, reg);
    for (int api = ASYNC; api <= ASYNC_2D; api++)
        check_table(&b, (enum api)api, 0);
    check_registered(&b, 0);
    REQUIRE_OK(aclFinalize()); /* releases the allocations; registrations end with the runtime */

    /* aclInit re-reads the environment. */
    setenv("NPUSIM_STRICT_KIND", "1", 1);
    setup(&b, pg_src, pg_dst, reg);
    for (int api = ASYNC; api <= ASYNC_2D; api++)
        check_table(&b, (enum api)api, 1);
    check_registered(&b, 1);
    REQUIRE_OK(aclrtHostUnregister(reg));
    REQUIRE_OK(aclFinalize());

    free(pg_src);
    free(pg_dst);
    free(reg);
    return st_done();
}
