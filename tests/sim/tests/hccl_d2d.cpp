/*
 * hccl_d2d.cpp - hccl::DeviceMem and the simulated HcclD2DMemcpyAsync.
 *
 * The DeviceMem layout (ptr_ at 0, size_ at 8, owner_ at 16, 24 bytes, no
 * vtable) and ownership; HcclD2DMemcpyAsync's checks in hcomm's order (NULL
 * dispatcher or range pointer, dst smaller than src: HCCL_E_PTR), then exactly
 * HcclMemcpyAsync(dispatcher, dst.ptr_, dst.size_, src.ptr_, src.size_,
 * DEVICE_TO_DEVICE, ...): one nested aclrtMemcpyAsync per chunk, each with the
 * full dst.size_ as destMax, compared line by line in the NPUSIM_LOG file
 * (NPUSIM_LOG_FUNCS selects the functions logged); the host path for a NULL
 * stream handle; a runtime failure becoming HCCL_E_RUNTIME.
 */
#include <dlfcn.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "acl/acl.h"
#include "hccl/dispatcher.h"
#include "simtest.h"

namespace {

std::string g_logPath;

std::string ReadLog()
{
    char *text = st_slurp(g_logPath.c_str());
    std::string s = text != nullptr ? text : "";
    free(text);
    return s;
}

std::string AclLine(const void *dst, size_t destMax, const void *src, size_t count, const void *stream, int ret)
{
    char buf[512];
    snprintf(buf, sizeof buf, "aclrtMemcpyAsync dst=%p destMax=%zu src=%p count=%zu kind=3 stream=%p ret=%d\n", dst,
             destMax, src, count, stream, ret);
    return buf;
}

std::string D2DLine(const void *disp, const void *dst, uint64_t destMax, const void *src, uint64_t count,
                    const void *stream, unsigned rank, int link, int ret)
{
    char buf[512];
    snprintf(buf, sizeof buf,
             "HcclD2DMemcpyAsync dispatcher=%p dst=%p destMax=%llu src=%p count=%llu stream=%p remoteUserRank=%u "
             "linkType=%d ret=%d\n",
             disp, dst, static_cast<unsigned long long>(destMax), src, static_cast<unsigned long long>(count), stream,
             rank, link, ret);
    return buf;
}

/* The ABI view of HcclD2DMemcpyAsync: references are pointers, the enum is int. */
typedef int (*RawD2D)(void *, void *, const void *, void *, uint32_t, int);

const auto HCCS = hccl::LinkType::LINK_HCCS;

void TestLayout()
{
    static_assert(!std::is_polymorphic<hccl::DeviceMem>::value, "hccl::DeviceMem has no vtable");
    CHECK_EQ(sizeof(hccl::DeviceMem), 24, "hccl::DeviceMem is 24 bytes");
    char storage[64];
    void *owned = nullptr;
    REQUIRE_OK(aclrtMalloc(&owned, 64, ACL_MEM_MALLOC_HUGE_FIRST));
    hccl::DeviceMem m(owned, 0x1122334455667788ull, true);
    void *ptr = nullptr;
    uint64_t size = 0;
    bool owner = false;
    memcpy(&ptr, reinterpret_cast<const char *>(&m), sizeof ptr);
    memcpy(&size, reinterpret_cast<const char *>(&m) + 8, sizeof size);
    memcpy(&owner, reinterpret_cast<const char *>(&m) + 16, sizeof owner);
    CHECK(ptr == owned, "ptr_ at byte offset 0");
    CHECK(size == 0x1122334455667788ull, "size_ at byte offset 8");
    CHECK(owner, "owner_ at byte offset 16");
    hccl::DeviceMem view(std::move(m));
    CHECK(view.owner() && !m.owner(), "moving passes ownership on");
    hccl::DeviceMem copy(view);
    CHECK(copy.ptr() == owned && copy.size() == view.size() && !copy.owner(), "a copy is a non-owning view");
    aclrtPtrAttributes a;
    // Assigning over the owner frees its memory with aclrtFree.
    view = hccl::DeviceMem::create(storage, 64);
    CHECK(!view.owner() && view.size() == 64, "DeviceMem::create is non-owning");
    CHECK(aclrtPointerGetAttributes(owned, &a) == ACL_SUCCESS && a.location.type != ACL_MEM_LOCATION_TYPE_DEVICE,
          "the owner's memory was freed when it was assigned over");
    hccl::DeviceMem part = view.range(16, 32);
    CHECK(part.ptr() == storage + 16 && part.size() == 32 && !part.owner(), "range(16, 32)");
    CHECK(!view.range(40, 32), "a range past the end is empty");
    hccl::DeviceMem empty;
    CHECK(!empty && empty.size() == 0, "a default DeviceMem is empty");
}

void TestOwnership()
{
    size_t free0 = 0, free1 = 0, free2 = 0, total = 0;
    aclrtGetMemInfo(ACL_HBM_MEM, &free0, &total);
    {
        hccl::DeviceMem m = hccl::DeviceMem::alloc(1 << 20);
        CHECK(m && m.owner() && m.size() == (1u << 20), "DeviceMem::alloc owns device memory");
        aclrtPtrAttributes a;
        CHECK(aclrtPointerGetAttributes(m.ptr(), &a) == ACL_SUCCESS && a.location.type == ACL_MEM_LOCATION_TYPE_DEVICE,
              "DeviceMem::alloc memory is device memory");
        aclrtGetMemInfo(ACL_HBM_MEM, &free1, &total);
    }
    aclrtGetMemInfo(ACL_HBM_MEM, &free2, &total);
    CHECK(free1 + (1u << 20) == free0 && free2 == free0, "an owning DeviceMem frees its memory when destroyed");
}

void TestErrors(HcclDispatcher disp, hccl::Stream &st, void *dev_a, void *dev_b)
{
    hccl::DeviceMem dst = hccl::DeviceMem::create(dev_a, 4096);
    hccl::DeviceMem src = hccl::DeviceMem::create(dev_b, 4096);
    hccl::DeviceMem null_mem(nullptr, 4096);
    hccl::DeviceMem small = hccl::DeviceMem::create(dev_a, 4095);
    const std::string before = ReadLog();

    CHECK_EQ(HcclD2DMemcpyAsync(nullptr, dst, src, st, 1, HCCS), HCCL_E_PTR, "NULL dispatcher");
    CHECK_EQ(HcclD2DMemcpyAsync(disp, null_mem, src, st, 1, HCCS), HCCL_E_PTR, "dst.ptr_ NULL");
    CHECK_EQ(HcclD2DMemcpyAsync(disp, dst, null_mem, st, 1, HCCS), HCCL_E_PTR, "src.ptr_ NULL");
    CHECK_EQ(HcclD2DMemcpyAsync(disp, small, src, st, 1, HCCS), HCCL_E_PTR, "dst.size_ < src.size_");
    auto raw = reinterpret_cast<RawD2D>(dlsym(RTLD_DEFAULT, "HcclD2DMemcpyAsync"));
    CHECK(raw != nullptr, "HcclD2DMemcpyAsync is exported under its plain name");
    if (raw != nullptr) {
        CHECK_EQ(raw(disp, nullptr, &src, &st, 1, 1), HCCL_E_PTR, "NULL dst reference");
        CHECK_EQ(raw(disp, &dst, nullptr, &st, 1, 1), HCCL_E_PTR, "NULL src reference");
        CHECK_EQ(raw(disp, &dst, &src, nullptr, 1, 1), HCCL_E_PTR, "NULL stream reference");
    }
    int notADispatcher = 0;
    CHECK_EQ(HcclD2DMemcpyAsync(&notADispatcher, dst, src, st, 1, HCCS), HCCL_E_PARA,
             "a pointer that is not a dispatcher (as HcclMemcpyAsync)");
    hccl::DeviceMem nothing = hccl::DeviceMem::create(dev_b, 0);
    CHECK_EQ(HcclD2DMemcpyAsync(disp, dst, nothing, st, 1, HCCS), HCCL_SUCCESS, "src.size_ 0: nothing to copy");
    CHECK_EQ(HcclD2DMemcpyAsync(disp, dst, dst, st, 1, HCCS), HCCL_SUCCESS, "src == dst: nothing to copy");

    CHECK_EQ(HcclD2DMemcpyAsync(disp, small, src, st), HCCL_E_PTR, "the vendor's default rank and link type");

    const std::string after = ReadLog().substr(before.size());
    CHECK(after.find(D2DLine(disp, dev_a, 4095, dev_b, 4096, &st, INVALID_VALUE_RANKID, 0, HCCL_E_PTR)) !=
              std::string::npos,
          "defaults: remoteUserRank INVALID_VALUE_RANKID, linkType LINK_ONCHIP");
    CHECK_EQ(st_count_lines(after.c_str(), "HcclD2DMemcpyAsync "), raw != nullptr ? 11 : 8, "every call is logged");
    CHECK_EQ(st_count_lines(after.c_str(), "aclrtMemcpyAsync "), 0, "none reached aclrtMemcpyAsync");
    CHECK(after.find(D2DLine(disp, dev_a, 4095, dev_b, 4096, &st, 1, 1, HCCL_E_PTR)) != std::string::npos,
          "exact log line of the undersized dst");
    CHECK(after.find(D2DLine(disp, dev_a, 4096, nullptr, 0, &st, 1, 1, HCCL_E_PTR)) != std::string::npos ||
              raw == nullptr,
          "a NULL src reference is logged as src=(nil) count=0");
}

void TestCopy(HcclDispatcher disp, HcclDispatcher small_disp, aclrtStream s, hccl::Stream &st, unsigned char *dev_a,
              unsigned char *dev_b, unsigned char *pin)
{
    const size_t n = 10000;
    st_fill(pin, n, 7);
    REQUIRE_OK(aclrtMemcpy(dev_b, n, pin, n, ACL_MEMCPY_HOST_TO_DEVICE));
    memset(dev_a, 0, 16384);
    hccl::DeviceMem dst = hccl::DeviceMem::create(dev_a, 16384);
    hccl::DeviceMem src = hccl::DeviceMem::create(dev_b, n);

    std::string before = ReadLog();
    CHECK_EQ(HcclD2DMemcpyAsync(disp, dst, src, st, 3, hccl::LinkType::LINK_ROCE), HCCL_SUCCESS,
             "HcclD2DMemcpyAsync");
    REQUIRE_OK(aclrtSynchronizeStream(s));
    CHECK(memcmp(dev_a, pin, n) == 0, "copied src.size_ bytes bit-exact");
    CHECK(dev_a[n] == 0, "and not one more");
    std::string after = ReadLog().substr(before.size());
    CHECK(after == AclLine(dev_a, 16384, dev_b, n, s, 0) + D2DLine(disp, dev_a, 16384, dev_b, n, &st, 3, 3, 0),
          "one nested aclrtMemcpyAsync (destMax = dst.size_, kind DEVICE_TO_DEVICE, the stream's handle), then the "
          "HcclD2DMemcpyAsync line; no HcclMemcpyAsync line");

    // NPUSIM_HCCL_MAX_CHUNK=4096: three chunks, each passed the full dst.size_.
    memset(dev_a, 0, 16384);
    before = ReadLog();
    CHECK_EQ(HcclD2DMemcpyAsync(small_disp, dst, src, st, 2, HCCS), HCCL_SUCCESS, "chunked HcclD2DMemcpyAsync");
    REQUIRE_OK(aclrtSynchronizeStream(s));
    after = ReadLog().substr(before.size());
    std::string want = AclLine(dev_a, 16384, dev_b, 4096, s, 0) + AclLine(dev_a + 4096, 16384, dev_b + 4096, 4096, s, 0) +
                       AclLine(dev_a + 8192, 16384, dev_b + 8192, n - 8192, s, 0) +
                       D2DLine(small_disp, dev_a, 16384, dev_b, n, &st, 2, 1, 0);
    CHECK(after == want, "three nested chunks with the full destMax, then the HCCL line");
    CHECK(memcmp(dev_a, pin, n) == 0, "chunked copy is bit-exact");

    // No runtime stream: HCCL copies on the host, synchronously.
    hccl::Stream none;
    memset(dev_a, 0, 16384);
    before = ReadLog();
    CHECK_EQ(HcclD2DMemcpyAsync(disp, dst, src, none, 1, HCCS), HCCL_SUCCESS, "a NULL stream handle");
    CHECK(memcmp(dev_a, pin, n) == 0, "is a synchronous host copy");
    CHECK_EQ(st_count_lines(ReadLog().substr(before.size()).c_str(), "aclrtMemcpyAsync "), 0,
             "that does not call aclrtMemcpyAsync");
}

void TestRuntimeFailure(HcclDispatcher disp, unsigned char *dev_a, unsigned char *dev_b)
{
    // A stream of device 1 while device 0 is current: the runtime returns 107003.
    aclrtStream s1 = nullptr;
    REQUIRE_OK(aclrtSetDevice(1));
    REQUIRE_OK(aclrtCreateStream(&s1));
    REQUIRE_OK(aclrtSetDevice(0));
    hccl::Stream st1(s1);
    hccl::DeviceMem dst = hccl::DeviceMem::create(dev_a, 64);
    hccl::DeviceMem src = hccl::DeviceMem::create(dev_b, 64);
    const std::string before = ReadLog();
    CHECK_EQ(HcclD2DMemcpyAsync(disp, dst, src, st1, 1, HCCS), HCCL_E_RUNTIME,
             "a runtime failure (107003) becomes HCCL_E_RUNTIME");
    CHECK(ReadLog().substr(before.size()) ==
              AclLine(dev_a, 64, dev_b, 64, s1, ACL_ERROR_RT_STREAM_CONTEXT) +
                  D2DLine(disp, dev_a, 64, dev_b, 64, &st1, 1, 1, HCCL_E_RUNTIME),
          "the failing nested call and the HCCL line");
    REQUIRE_OK(aclrtSetDevice(1));
    REQUIRE_OK(aclrtDestroyStream(s1));
    REQUIRE_OK(aclrtResetDevice(1));
    REQUIRE_OK(aclrtSetDevice(0));
}

} // namespace

int main()
{
    char logpath[256];
    st_tempfile(logpath, sizeof logpath, "hccl-d2d-log");
    g_logPath = logpath;
    setenv("NPUSIM_LOG", logpath, 1);
    // HcclMemcpyAsync is selectable too, but is not listed: a D2D call must not log it.
    setenv("NPUSIM_LOG_FUNCS", "aclrtMemcpyAsync,HcclD2DMemcpyAsync", 1);
    unsetenv("NPUSIM_HCCL_MAX_CHUNK");
    unsetenv("NPUSIM_SOC");
    unsetenv("NPUSIM_GBPS");
    unsetenv("NPUSIM_DEVICES");
    unsetenv("NPUSIM_STRICT_KIND");

    REQUIRE_OK(aclInit(nullptr));
    REQUIRE_OK(aclrtSetDevice(0));
    aclrtStream s = nullptr;
    unsigned char *dev_a = nullptr, *dev_b = nullptr, *pin = nullptr;
    REQUIRE_OK(aclrtCreateStream(&s));
    REQUIRE_OK(aclrtMalloc(reinterpret_cast<void **>(&dev_a), 16384, ACL_MEM_MALLOC_HUGE_FIRST));
    REQUIRE_OK(aclrtMalloc(reinterpret_cast<void **>(&dev_b), 16384, ACL_MEM_MALLOC_HUGE_FIRST));
    REQUIRE_OK(aclrtMallocHost(reinterpret_cast<void **>(&pin), 16384));

    HcclDispatcher disp = nullptr, small = nullptr;
    REQUIRE_OK(HcclDispatcherInit(DISPATCHER_NORMAL, 0, &disp));
    setenv("NPUSIM_HCCL_MAX_CHUNK", "4096", 1);
    REQUIRE_OK(HcclDispatcherInit(DISPATCHER_NORMAL, 0, &small));
    hccl::Stream st(s);

    TestLayout();
    TestOwnership();
    TestErrors(disp, st, dev_a, dev_b);
    TestCopy(disp, small, s, st, dev_a, dev_b, pin);
    TestRuntimeFailure(disp, dev_a, dev_b);
    CHECK_EQ(st_count_lines(ReadLog().c_str(), "HcclMemcpyAsync "), 0,
             "NPUSIM_LOG_FUNCS left HcclMemcpyAsync out of the log");

    REQUIRE_OK(HcclDispatcherDestroy(small));
    REQUIRE_OK(HcclDispatcherDestroy(disp));
    REQUIRE_OK(aclrtDestroyStream(s));
    REQUIRE_OK(aclrtFree(dev_a));
    REQUIRE_OK(aclrtFree(dev_b));
    REQUIRE_OK(aclrtFreeHost(pin));
    REQUIRE_OK(aclrtResetDevice(0));
    REQUIRE_OK(aclFinalize());
    unlink(logpath);
    return st_done();
}
