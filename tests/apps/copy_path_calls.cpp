/*
 * copy_path_calls.cpp - one call per case on the rest of the copy path
 * (aclrtMemcpy, aclrtMemcpyAsyncWithCondition, 2D copies, aclrtMemsetAsync,
 * HcclD2DMemcpyAsync, HcclMemcpyAsync, a timed stream wait), good ones and
 * each argument mistake the checks know.
 *
 * Prints `case <name> ret <code>` for each call, in a fixed order, so a test
 * can compare what a program gets back with and without an interposer.  Any
 * failure to set up (not a case's own result) exits with status 2.
 *
 * usage: copy_path_calls [case...]   (default: every case)
 */
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "acl/acl.h"
#include "hccl/dispatcher.h"

namespace {

constexpr size_t kBytes = 4096;

struct Env {
    aclrtStream stream = nullptr;
    HcclDispatcher dispatcher = nullptr;
    void *dev1 = nullptr, *dev2 = nullptr;
    unsigned char *pinned1 = nullptr, *pinned2 = nullptr;
    std::vector<unsigned char> page1 = std::vector<unsigned char>(kBytes, 1);
    std::vector<unsigned char> page2 = std::vector<unsigned char>(kBytes, 2);
};

int RunCase(Env &e, const char *name)
{
    hccl::Stream hs(e.stream);
    const auto d2d = hccl::LinkType::LINK_HCCS;
    if (strcmp(name, "memcpy2d_async_good") == 0)
        return aclrtMemcpy2dAsync(e.dev1, 256, e.dev2, 256, 128, 8, ACL_MEMCPY_DEVICE_TO_DEVICE, e.stream);
    if (strcmp(name, "memcpy2d_async_wide") == 0) /* width 128 > dpitch 64 */
        return aclrtMemcpy2dAsync(e.dev1, 64, e.dev2, 256, 128, 8, ACL_MEMCPY_DEVICE_TO_DEVICE, e.stream);
    if (strcmp(name, "memcpy2d_wide") == 0) /* width 128 > dpitch 64, synchronous */
        return aclrtMemcpy2d(e.dev1, 64, e.dev2, 256, 128, 8, ACL_MEMCPY_DEVICE_TO_DEVICE);
    if (strcmp(name, "memcpy2d_async_kind5") == 0) /* HOST_TO_BUF_TO_DEVICE is not a 2D kind */
        return aclrtMemcpy2dAsync(e.dev1, 256, e.pinned1, 256, 128, 8, ACL_MEMCPY_HOST_TO_BUF_TO_DEVICE, e.stream);
    if (strcmp(name, "memcpy2d_async_h2h") == 0) /* pinned to pinned, asynchronous */
        return aclrtMemcpy2dAsync(e.pinned1, 256, e.pinned2, 256, 128, 8, ACL_MEMCPY_HOST_TO_HOST, e.stream);
    if (strcmp(name, "memset_good") == 0)
        return aclrtMemsetAsync(e.dev1, kBytes, 7, kBytes, e.stream);
    if (strcmp(name, "memset_over") == 0) /* count > maxCount */
        return aclrtMemsetAsync(e.dev1, 256, 7, 512, e.stream);
    if (strcmp(name, "memcpy_h2h") == 0) /* synchronous host-to-host: allowed */
        return aclrtMemcpy(e.page1.data(), kBytes, e.page2.data(), kBytes, ACL_MEMCPY_HOST_TO_HOST);
    if (strcmp(name, "memcpy_size") == 0)
        return aclrtMemcpy(e.dev1, 256, e.dev2, 512, ACL_MEMCPY_DEVICE_TO_DEVICE);
    if (strcmp(name, "with_condition_unaligned") == 0) /* called directly: through the PLT */
        return aclrtMemcpyAsyncWithCondition(static_cast<unsigned char *>(e.dev1) + 8, kBytes - 8, e.dev2, 256,
                                             ACL_MEMCPY_DEVICE_TO_DEVICE, e.stream);
    if (strcmp(name, "d2d_good") == 0) {
        hccl::DeviceMem dst = hccl::DeviceMem::create(e.dev1, kBytes);
        const hccl::DeviceMem src = hccl::DeviceMem::create(e.dev2, kBytes);
        return HcclD2DMemcpyAsync(e.dispatcher, dst, src, hs, 1, d2d);
    }
    if (strcmp(name, "d2d_null_dst") == 0) {
        hccl::DeviceMem dst = hccl::DeviceMem::create(nullptr, kBytes);
        const hccl::DeviceMem src = hccl::DeviceMem::create(e.dev2, kBytes);
        return HcclD2DMemcpyAsync(e.dispatcher, dst, src, hs, 1, d2d);
    }
    if (strcmp(name, "d2d_small_dst") == 0) { /* dst.size_ < src.size_ */
        hccl::DeviceMem dst = hccl::DeviceMem::create(e.dev1, 256);
        const hccl::DeviceMem src = hccl::DeviceMem::create(e.dev2, 512);
        return HcclD2DMemcpyAsync(e.dispatcher, dst, src, hs, 1, d2d);
    }
    if (strcmp(name, "hccl_memcpy_good") == 0)
        return HcclMemcpyAsync(e.dispatcher, e.dev1, kBytes, e.dev2, kBytes,
                               HcclRtMemcpyKind::HCCL_RT_MEMCPY_KIND_DEVICE_TO_DEVICE, hs, 1, d2d);
    if (strcmp(name, "sync_timeout") == 0)
        return aclrtSynchronizeStreamWithTimeout(e.stream, 10000);
    fprintf(stderr, "copy_path_calls: unknown case %s\n", name);
    return -1;
}

const char *const kCases[] = {
    "memcpy2d_async_good", "memcpy2d_async_wide", "memcpy2d_wide", "memcpy2d_async_kind5",
    "memcpy2d_async_h2h",  "memset_good",         "memset_over",   "memcpy_h2h",
    "memcpy_size",         "with_condition_unaligned", "d2d_good", "d2d_null_dst",
    "d2d_small_dst",       "hccl_memcpy_good",    "sync_timeout",
};

bool Setup(const char *what, int ret)
{
    if (ret == 0)
        return true;
    fprintf(stderr, "copy_path_calls: %s failed with %d\n", what, ret);
    return false;
}

} // namespace

int main(int argc, char **argv)
{
    Env e;
    if (!Setup("aclInit", aclInit(nullptr)) || !Setup("aclrtSetDevice", aclrtSetDevice(0)) ||
        !Setup("aclrtCreateStream", aclrtCreateStream(&e.stream)) ||
        !Setup("aclrtMalloc", aclrtMalloc(&e.dev1, kBytes, ACL_MEM_MALLOC_HUGE_FIRST)) ||
        !Setup("aclrtMalloc", aclrtMalloc(&e.dev2, kBytes, ACL_MEM_MALLOC_HUGE_FIRST)) ||
        !Setup("aclrtMallocHost", aclrtMallocHost(reinterpret_cast<void **>(&e.pinned1), kBytes)) ||
        !Setup("aclrtMallocHost", aclrtMallocHost(reinterpret_cast<void **>(&e.pinned2), kBytes)) ||
        !Setup("HcclDispatcherInit", HcclDispatcherInit(DISPATCHER_NORMAL, 0, &e.dispatcher)))
        return 2;
    std::vector<const char *> cases;
    for (int i = 1; i < argc; i++)
        cases.push_back(argv[i]);
    if (cases.empty())
        cases.assign(std::begin(kCases), std::end(kCases));
    for (const char *c : cases) {
        const int ret = RunCase(e, c);
        if (ret == -1)
            return 2;
        printf("case %s ret %d\n", c, ret);
    }
    if (!Setup("aclrtSynchronizeStream", aclrtSynchronizeStream(e.stream)))
        return 2;
    HcclDispatcherDestroy(e.dispatcher);
    aclrtFreeHost(e.pinned1);
    aclrtFreeHost(e.pinned2);
    aclrtFree(e.dev1);
    aclrtFree(e.dev2);
    aclrtDestroyStream(e.stream);
    aclrtResetDevice(0);
    aclFinalize();
    return 0;
}
