/*
 * hccl_dispatch.cpp - the simulated HcclMemcpyAsync.
 *
 * Checks hccl::Stream's layout, the return codes in hcomm's order, the
 * synchronous path for a NULL stream handle, the nested aclrtMemcpyAsync
 * calls (counted and compared byte for byte in the NPUSIM_LOG file, including
 * the chunking forced with NPUSIM_HCCL_MAX_CHUNK and the full destMax passed
 * with every chunk), HCCL_E_RUNTIME, and concurrent use from many threads.
 * Sets NPUSIM_LOG and NPUSIM_HCCL_MAX_CHUNK itself.
 */
#include <dlfcn.h>
#include <pthread.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

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

int CountLines(const std::string &text, const char *prefix)
{
    return st_count_lines(text.c_str(), prefix);
}

std::string AclLine(const void *dst, size_t destMax, const void *src, size_t count, int kind, const void *stream,
                    int ret)
{
    char buf[512];
    snprintf(buf, sizeof buf, "aclrtMemcpyAsync dst=%p destMax=%zu src=%p count=%zu kind=%d stream=%p ret=%d\n", dst,
             destMax, src, count, kind, stream, ret);
    return buf;
}

std::string HcclLine(const void *disp, const void *dst, uint64_t destMax, const void *src, uint64_t count, int kind,
                     const void *stream, unsigned rank, int link, int ret)
{
    char buf[512];
    snprintf(buf, sizeof buf,
             "HcclMemcpyAsync dispatcher=%p dst=%p destMax=%llu src=%p count=%llu kind=%d stream=%p "
             "remoteUserRank=%u linkType=%d ret=%d\n",
             disp, dst, static_cast<unsigned long long>(destMax), src, static_cast<unsigned long long>(count), kind,
             stream, rank, link, ret);
    return buf;
}

/* The ABI view of HcclMemcpyAsync: references are pointers, enums are int. */
typedef int (*RawHcclMemcpyAsync)(void *, void *, uint64_t, const void *, uint64_t, int, void *, uint32_t, int);

const auto H2D = HcclRtMemcpyKind::HCCL_RT_MEMCPY_KIND_HOST_TO_DEVICE;
const auto D2D = HcclRtMemcpyKind::HCCL_RT_MEMCPY_KIND_DEVICE_TO_DEVICE;
const auto HCCS = hccl::LinkType::LINK_HCCS;

void TestLayout(aclrtStream s)
{
    hccl::Stream st(s);
    void *field = nullptr;
    memcpy(&field, reinterpret_cast<const char *>(&st) + 8, sizeof field);
    CHECK(field == s, "hccl::Stream keeps the aclrtStream at byte offset 8");
    CHECK(st.ptr() == s, "hccl::Stream::ptr()");
    CHECK_EQ(sizeof(hccl::Stream) >= 16, 1, "hccl::Stream has a vtable pointer and the stream");
    hccl::Stream empty;
    CHECK(empty.ptr() == nullptr && !empty, "a default hccl::Stream has no runtime stream");
}

void TestErrors(HcclDispatcher disp, aclrtStream s, void *dev, void *pin)
{
    hccl::Stream st(s);
    const std::string before = ReadLog();

    CHECK_EQ(HcclMemcpyAsync(nullptr, dev, 64, pin, 64, H2D, st, 1, HCCS), HCCL_E_PTR, "NULL dispatcher");
    CHECK_EQ(HcclMemcpyAsync(disp, nullptr, 64, pin, 64, H2D, st, 1, HCCS), HCCL_E_PTR, "NULL dst");
    CHECK_EQ(HcclMemcpyAsync(disp, dev, 64, nullptr, 64, H2D, st, 1, HCCS), HCCL_E_PTR, "NULL src");
    CHECK_EQ(HcclMemcpyAsync(disp, nullptr, 0, nullptr, 0, H2D, st, 1, HCCS), HCCL_E_PTR,
             "NULL pointers are rejected even when count is 0");
    auto raw = reinterpret_cast<RawHcclMemcpyAsync>(dlsym(RTLD_DEFAULT, "HcclMemcpyAsync"));
    CHECK(raw != nullptr, "HcclMemcpyAsync is exported under its plain name");
    if (raw != nullptr)
        CHECK_EQ(raw(disp, dev, 64, pin, 64, 1, nullptr, 1, 1), HCCL_E_PTR, "NULL stream reference");
    int notADispatcher = 0;
    CHECK_EQ(HcclMemcpyAsync(&notADispatcher, dev, 64, pin, 64, H2D, st, 1, HCCS), HCCL_E_PARA,
             "a pointer that is not a dispatcher");

    CHECK_EQ(HcclMemcpyAsync(disp, dev, 64, pin, 0, H2D, st, 1, HCCS), HCCL_SUCCESS, "count 0");
    CHECK_EQ(HcclMemcpyAsync(disp, dev, 64, dev, 64, D2D, st, 1, HCCS), HCCL_SUCCESS, "src == dst");
    CHECK_EQ(HcclMemcpyAsync(disp, dev, 32, pin, 64, H2D, st, 1, HCCS), HCCL_E_PARA, "destMax < count");
    CHECK_EQ(HcclMemcpyAsync(disp, dev, 64, pin, 64, HcclRtMemcpyKind::HCCL_RT_MEMCPY_ADDR_DEVICE_TO_DEVICE, st, 1,
                             HCCS),
             HCCL_E_PARA, "kind 4 (ADDR_DEVICE_TO_DEVICE)");
    CHECK_EQ(HcclMemcpyAsync(disp, dev, 64, pin, 64, HcclRtMemcpyKind::HCCL_RT_MEMCPY_KIND_RESERVED, st, 1, HCCS),
             HCCL_E_PARA, "kind 5 (RESERVED)");
    CHECK_EQ(HcclMemcpyAsync(disp, dev, 64, pin, 64, static_cast<HcclRtMemcpyKind>(-1), st, 1, HCCS), HCCL_E_PARA,
             "kind -1");
    // Pinned to pinned memory is host-to-host whatever the kind; the runtime rejects it on 910B.
    void *pin_dst = static_cast<char *>(pin) + 8192;
    CHECK_EQ(HcclMemcpyAsync(disp, pin_dst, 64, pin, 64, static_cast<HcclRtMemcpyKind>(0), st, 1, HCCS),
             HCCL_E_RUNTIME, "host-to-host is passed on and the runtime's 207000 becomes HCCL_E_RUNTIME");

    const std::string after = ReadLog();
    CHECK_EQ(CountLines(after, "HcclMemcpyAsync ") - CountLines(before, "HcclMemcpyAsync "), raw != nullptr ? 13 : 12,
             "every call is logged");
    CHECK_EQ(CountLines(after, "aclrtMemcpyAsync ") - CountLines(before, "aclrtMemcpyAsync "), 1,
             "only the call that passed the checks reached aclrtMemcpyAsync");
    CHECK(after.find(HcclLine(nullptr, dev, 64, pin, 64, 1, &st, 1, 1, HCCL_E_PTR)) != std::string::npos,
          "exact log line for a NULL dispatcher");
    CHECK(after.find(AclLine(pin_dst, 64, pin, 64, 0, s, ACL_ERROR_RT_FEATURE_NOT_SUPPORT)) != std::string::npos,
          "exact nested aclrtMemcpyAsync log line");
}

void TestHostPath(HcclDispatcher disp)
{
    hccl::Stream none;
    std::vector<unsigned char> a(1000), b(1000, 0);
    st_fill(a.data(), a.size(), 4);
    const std::string before = ReadLog();
    CHECK_EQ(HcclMemcpyAsync(disp, b.data(), b.size(), a.data(), a.size(), D2D, none, 3, HCCS), HCCL_SUCCESS,
             "NULL stream handle: host copy");
    CHECK(a == b, "the host copy is complete when the call returns");
    CHECK_EQ(HcclMemcpyAsync(disp, b.data(), 10, a.data(), a.size(), D2D, none, 3, HCCS), HCCL_E_PARA,
             "NULL stream handle with destMax < count");
    CHECK_EQ(HcclMemcpyAsync(disp, b.data(), b.size(), a.data(), a.size(),
                             HcclRtMemcpyKind::HCCL_RT_MEMCPY_KIND_RESERVED, none, 3, HCCS),
             HCCL_SUCCESS, "NULL stream handle: the kind is not looked at");
    const std::string after = ReadLog();
    CHECK_EQ(CountLines(after, "aclrtMemcpyAsync ") - CountLines(before, "aclrtMemcpyAsync "), 0,
             "the host path does not call aclrtMemcpyAsync");
}

void TestChunks(HcclDispatcher disp, HcclDispatcher small, aclrtStream s, void *dev, void *pin)
{
    const size_t count = 10000, destMax = 16384;
    hccl::Stream st(s);
    st_fill(pin, count, 5);

    std::string before = ReadLog();
    CHECK_EQ(HcclMemcpyAsync(disp, dev, destMax, pin, count, H2D, st, 2, HCCS), HCCL_SUCCESS, "H2D copy");
    std::string after = ReadLog();
    CHECK_EQ(CountLines(after, "aclrtMemcpyAsync ") - CountLines(before, "aclrtMemcpyAsync "), 1,
             "below 4 GiB: one aclrtMemcpyAsync");
    std::string tail = after.substr(before.size());
    std::string want = AclLine(dev, destMax, pin, count, 1, s, 0) +
                       HcclLine(disp, dev, destMax, pin, count, 1, &st, 2, 1, HCCL_SUCCESS);
    CHECK(tail == want, "nested line first, then the HCCL line with the hccl::Stream address");

    std::vector<unsigned char> back(count);
    void *pin_back = nullptr;
    REQUIRE_OK(aclrtMallocHost(&pin_back, count));
    before = ReadLog();
    CHECK_EQ(HcclMemcpyAsync(small, pin_back, destMax, dev, count, HcclRtMemcpyKind::HCCL_RT_MEMCPY_KIND_DEVICE_TO_HOST,
                             st, 7, hccl::LinkType::LINK_PCIE),
             HCCL_SUCCESS, "D2H copy with NPUSIM_HCCL_MAX_CHUNK=4096");
    after = ReadLog();
    tail = after.substr(before.size());
    const char *d = static_cast<const char *>(pin_back);
    const char *src = static_cast<const char *>(dev);
    want = AclLine(d, destMax, src, 4096, 2, s, 0) + AclLine(d + 4096, destMax, src + 4096, 4096, 2, s, 0) +
           AclLine(d + 8192, destMax, src + 8192, count - 8192, 2, s, 0) +
           HcclLine(small, pin_back, destMax, dev, count, 2, &st, 7, 2, HCCL_SUCCESS);
    CHECK(tail == want, "three chunks, each with the full destMax, then the HCCL line");
    if (tail != want)
        printf("#   got:\n%s#   want:\n%s", tail.c_str(), want.c_str());
    aclrtSynchronizeStream(s);
    CHECK(memcmp(pin_back, pin, count) == 0, "chunked copy is bit-exact");
    aclrtFreeHost(pin_back);
}

void TestRuntimeFailure(HcclDispatcher disp, void *dev, void *pin)
{
    aclrtStream other = nullptr;
    REQUIRE_OK(aclrtSetDevice(1));
    REQUIRE_OK(aclrtCreateStream(&other));
    REQUIRE_OK(aclrtSetDevice(0));
    hccl::Stream st(other);
    CHECK_EQ(HcclMemcpyAsync(disp, dev, 64, pin, 64, H2D, st, 1, HCCS), HCCL_E_RUNTIME,
             "a stream of another device: the runtime's 107003 becomes HCCL_E_RUNTIME");
    REQUIRE_OK(aclrtSetDevice(1));
    REQUIRE_OK(aclrtDestroyStream(other));
    REQUIRE_OK(aclrtResetDevice(1));
    REQUIRE_OK(aclrtResetDevice(1));
    REQUIRE_OK(aclrtResetDevice(0));
}

struct ThreadArg {
    int rank;
    HcclDispatcher disp;
    int errors;
    int mismatches;
};

const int kThreads = 8;
const int kRounds = 25;
const size_t kThreadBytes = 10000; /* 3 chunks of at most 4096 */

void *ThreadMain(void *p)
{
    auto *a = static_cast<ThreadArg *>(p);
    aclrtStream s = nullptr;
    void *src = nullptr, *dst = nullptr, *out = nullptr;
    if (aclrtSetDevice(a->rank) != ACL_SUCCESS || aclrtCreateStream(&s) != ACL_SUCCESS ||
        aclrtMalloc(&src, kThreadBytes, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS ||
        aclrtMalloc(&dst, kThreadBytes, ACL_MEM_MALLOC_HUGE_FIRST) != ACL_SUCCESS ||
        aclrtMallocHost(&out, kThreadBytes) != ACL_SUCCESS) {
        a->errors++;
        return nullptr;
    }
    hccl::Stream st(s);
    for (int r = 0; r < kRounds; r++) {
        st_fill(out, kThreadBytes, static_cast<uint32_t>(a->rank * 100 + r));
        a->errors += aclrtMemcpyAsync(src, kThreadBytes, out, kThreadBytes, ACL_MEMCPY_HOST_TO_DEVICE, s) != 0;
        a->errors += HcclMemcpyAsync(a->disp, dst, kThreadBytes, src, kThreadBytes, D2D, st,
                                     static_cast<u32>((a->rank + 1) % kThreads), HCCS) != HCCL_SUCCESS;
        std::vector<unsigned char> expect(kThreadBytes);
        memcpy(expect.data(), out, kThreadBytes);
        a->errors += aclrtMemcpyAsync(out, kThreadBytes, dst, kThreadBytes, ACL_MEMCPY_DEVICE_TO_HOST, s) != 0;
        a->errors += aclrtSynchronizeStream(s) != 0;
        a->mismatches += memcmp(out, expect.data(), kThreadBytes) != 0;
    }
    aclrtDestroyStream(s);
    aclrtFree(src);
    aclrtFree(dst);
    aclrtFreeHost(out);
    aclrtResetDevice(a->rank);
    return nullptr;
}

void TestThreads(HcclDispatcher small)
{
    const std::string before = ReadLog();
    pthread_t th[kThreads];
    ThreadArg args[kThreads];
    for (int i = 0; i < kThreads; i++) {
        args[i] = ThreadArg{i, small, 0, 0};
        pthread_create(&th[i], nullptr, ThreadMain, &args[i]);
    }
    int errors = 0, mismatches = 0;
    for (int i = 0; i < kThreads; i++) {
        pthread_join(th[i], nullptr);
        errors += args[i].errors;
        mismatches += args[i].mismatches;
    }
    CHECK_EQ(errors, 0, "%d threads x %d rounds: no errors", kThreads, kRounds);
    CHECK_EQ(mismatches, 0, "%d threads x %d rounds: all data bit-exact", kThreads, kRounds);
    const std::string after = ReadLog();
    CHECK_EQ(CountLines(after, "HcclMemcpyAsync ") - CountLines(before, "HcclMemcpyAsync "), kThreads * kRounds,
             "one HCCL log line per call");
    CHECK_EQ(CountLines(after, "aclrtMemcpyAsync ") - CountLines(before, "aclrtMemcpyAsync "),
             kThreads * kRounds * (2 + 3), "three nested chunks per HCCL call plus the program's own copies");
}

} // namespace

int main()
{
    char logpath[256];
    st_tempfile(logpath, sizeof logpath, "hccl-log");
    g_logPath = logpath;
    setenv("NPUSIM_LOG", logpath, 1);
    unsetenv("NPUSIM_HCCL_MAX_CHUNK");
    unsetenv("NPUSIM_SOC");
    unsetenv("NPUSIM_GBPS");
    unsetenv("NPUSIM_DEVICES");

    REQUIRE_OK(aclInit(nullptr));
    REQUIRE_OK(aclrtSetDevice(0));
    aclrtStream s = nullptr;
    void *dev = nullptr, *pin = nullptr;
    REQUIRE_OK(aclrtCreateStream(&s));
    REQUIRE_OK(aclrtMalloc(&dev, 16384, ACL_MEM_MALLOC_HUGE_FIRST));
    REQUIRE_OK(aclrtMallocHost(&pin, 16384));

    HcclDispatcher disp = nullptr, small = nullptr;
    CHECK_EQ(HcclDispatcherInit(DISPATCHER_NORMAL, 0, nullptr), HCCL_E_PTR, "HcclDispatcherInit into NULL");
    CHECK_EQ(HcclDispatcherInit(DISPATCHER_NORMAL, -1, &disp), HCCL_E_PARA, "HcclDispatcherInit on device -1");
    CHECK_EQ(HcclDispatcherInit(DISPATCHER_NORMAL, 0, &disp), HCCL_SUCCESS, "HcclDispatcherInit");
    setenv("NPUSIM_HCCL_MAX_CHUNK", "4096", 1);
    CHECK_EQ(HcclDispatcherInit(DISPATCHER_NORMAL, 0, &small), HCCL_SUCCESS,
             "HcclDispatcherInit with NPUSIM_HCCL_MAX_CHUNK=4096");

    TestLayout(s);
    TestErrors(disp, s, dev, pin);
    TestHostPath(disp);
    TestChunks(disp, small, s, dev, pin);
    TestRuntimeFailure(disp, dev, pin);
    REQUIRE_OK(aclrtSetDevice(0));
    TestThreads(small);

    CHECK_EQ(HcclDispatcherDestroy(small), HCCL_SUCCESS, "HcclDispatcherDestroy");
    CHECK_EQ(HcclDispatcherDestroy(small), HCCL_E_PARA, "HcclDispatcherDestroy twice");
    CHECK_EQ(HcclDispatcherDestroy(nullptr), HCCL_E_PTR, "HcclDispatcherDestroy(NULL)");
    CHECK_EQ(HcclDispatcherDestroy(disp), HCCL_SUCCESS, "HcclDispatcherDestroy (default chunk)");

    REQUIRE_OK(aclrtDestroyStream(s));
    REQUIRE_OK(aclrtFree(dev));
    REQUIRE_OK(aclrtFreeHost(pin));
    REQUIRE_OK(aclrtResetDevice(0));
    REQUIRE_OK(aclFinalize());
    unlink(logpath);
    return st_done();
}
