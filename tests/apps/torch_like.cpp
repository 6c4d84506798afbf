/*
 * torch_like.cpp - the copies and waits a torch_npu training step makes.
 *
 * torch_npu's tensor copies reach the runtime through these calls:
 *   - blocking x.to("npu") / x.cpu(): aclrtSynchronizeStream(stream), then
 *     the synchronous aclrtMemcpy;
 *   - non_blocking H2D from pinned memory: aclrtMemcpyAsync;
 *   - non_blocking D2H (910B and later): aclrtMemcpyAsyncWithCondition, which
 *     torch_npu finds with dlopen("libascendcl.so") + dlsym(handle, name)
 *     rather than through the dynamic linker;
 *   - torch.full / zero_: aclrtMemsetAsync; a strided slice copy:
 *     aclrtMemcpy2dAsync;
 *   - waits: aclrtSynchronizeStreamWithTimeout (a stream with a timeout),
 *     aclrtSynchronizeEvent (an event recorded on the stream),
 *     aclrtSynchronizeDevice (torch.npu.synchronize()).
 * Every result is copied back and verified byte by byte.  stdout is
 * deterministic; a failed call is reported on stderr and ends the program.
 *
 * usage: torch_like [bytes per tensor]   (default 65536, a multiple of 256)
 * exit status: 0 when every tensor holds the expected bytes, 1 otherwise.
 */
#include <dlfcn.h>

#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "acl/acl.h"

namespace {

typedef aclError (*MemcpyAsyncWithConditionFn)(void *, size_t, const void *, size_t, aclrtMemcpyKind, aclrtStream);

int g_failed = 0;

bool Ok(const char *what, aclError ret)
{
    if (ret == ACL_SUCCESS)
        return true;
    fprintf(stderr, "torch_like: %s failed with error %d\n", what, static_cast<int>(ret));
    g_failed = 1;
    return false;
}

unsigned char Pattern(int tensor, size_t i)
{
    return static_cast<unsigned char>((tensor * 37 + i * 13 + (i >> 9)) & 0xff);
}

uint64_t Fnv1a(const unsigned char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Compares n bytes with what `expect(i)` says; prints one line either way. */
template <typename F> bool Verify(const char *name, const unsigned char *got, size_t n, F expect)
{
    for (size_t i = 0; i < n; i++) {
        const unsigned char want = expect(i);
        if (got[i] != want) {
            printf("%s: MISMATCH at byte %zu (0x%02x, expected 0x%02x)\n", name, i, got[i], want);
            return false;
        }
    }
    printf("%s: %zu bytes ok, fnv1a 0x%016" PRIx64 "\n", name, n, Fnv1a(got, n));
    return true;
}

/* tensor.to("npu") / tensor.cpu() with non_blocking=False. */
bool BlockingCopy(const char *what, aclrtStream stream, void *dst, const void *src, size_t n, aclrtMemcpyKind kind)
{
    return Ok("aclrtSynchronizeStream", aclrtSynchronizeStream(stream)) &&
           Ok(what, aclrtMemcpy(dst, n, src, n, kind));
}

} // namespace

int main(int argc, char **argv)
{
    size_t n = 64 * 1024;
    if (argc > 1) {
        long long v = atoll(argv[1]);
        if (v < 256 || v % 256 != 0) {
            fprintf(stderr, "usage: %s [bytes per tensor, a positive multiple of 256]\n", argv[0]);
            return 1;
        }
        n = static_cast<size_t>(v);
    }
    /* The strided slice: every other row of a rows x 256 matrix, first 192 bytes. */
    const size_t cols = 256, rows = n / cols, width = 192, height = rows / 2;

    if (!Ok("aclInit", aclInit(nullptr)))
        return 1;
    aclrtStream stream = nullptr;
    aclrtEvent event = nullptr;
    void *devA = nullptr, *devB = nullptr, *devC = nullptr, *devS = nullptr;
    unsigned char *pinnedIn = nullptr, *pinnedOut = nullptr;
    std::vector<unsigned char> a(n), b(n), aBack(n), bBack(n), full(n), slice(width * height);
    for (size_t i = 0; i < n; i++) {
        a[i] = Pattern(1, i);
        b[i] = Pattern(2, i);
    }

    void *acl = dlopen("libascendcl.so", RTLD_LAZY | RTLD_LOCAL);
    MemcpyAsyncWithConditionFn withCondition = nullptr;
    if (acl != nullptr)
        withCondition = reinterpret_cast<MemcpyAsyncWithConditionFn>(dlsym(acl, "aclrtMemcpyAsyncWithCondition"));
    if (withCondition == nullptr) {
        const char *why = dlerror();
        fprintf(stderr, "torch_like: cannot find aclrtMemcpyAsyncWithCondition in libascendcl.so: %s\n",
                why != nullptr ? why : "not found");
        g_failed = 1;
    }

    bool ok = !g_failed && Ok("aclrtSetDevice", aclrtSetDevice(0)) &&
              Ok("aclrtCreateStream", aclrtCreateStream(&stream)) &&
              Ok("aclrtCreateEvent", aclrtCreateEvent(&event)) &&
              Ok("aclrtMalloc", aclrtMalloc(&devA, n, ACL_MEM_MALLOC_HUGE_FIRST)) &&
              Ok("aclrtMalloc", aclrtMalloc(&devB, n, ACL_MEM_MALLOC_HUGE_FIRST)) &&
              Ok("aclrtMalloc", aclrtMalloc(&devC, n, ACL_MEM_MALLOC_HUGE_FIRST)) &&
              Ok("aclrtMalloc", aclrtMalloc(&devS, n, ACL_MEM_MALLOC_HUGE_FIRST)) &&
              Ok("aclrtMallocHost", aclrtMallocHost(reinterpret_cast<void **>(&pinnedIn), n)) &&
              Ok("aclrtMallocHost", aclrtMallocHost(reinterpret_cast<void **>(&pinnedOut), n));

    /* a = torch.tensor(...).to("npu"); b likewise. */
    ok = ok && BlockingCopy("aclrtMemcpy(a.to)", stream, devA, a.data(), n, ACL_MEMCPY_HOST_TO_DEVICE);
    ok = ok && BlockingCopy("aclrtMemcpy(b.to)", stream, devB, b.data(), n, ACL_MEMCPY_HOST_TO_DEVICE);
    /* c = a.pin_memory().to("npu", non_blocking=True) */
    if (ok) {
        memcpy(pinnedIn, a.data(), n);
        ok = Ok("aclrtMemcpyAsync(c.to)", aclrtMemcpyAsync(devC, n, pinnedIn, n, ACL_MEMCPY_HOST_TO_DEVICE, stream));
    }
    /* s = torch.full((n,), 0x5a); s[:half] = b[:half] (a device-to-device copy on the stream). */
    ok = ok && Ok("aclrtMemsetAsync(full)", aclrtMemsetAsync(devS, n, 0x5a, n, stream)) &&
         Ok("aclrtMemcpyAsync(s[:half]=b)",
            aclrtMemcpyAsync(devS, n, devB, n / 2, ACL_MEMCPY_DEVICE_TO_DEVICE, stream));
    /* A mark on the stream, waited for before the host reuses pinnedIn. */
    ok = ok && Ok("aclrtRecordEvent", aclrtRecordEvent(event, stream)) &&
         Ok("aclrtSynchronizeEvent", aclrtSynchronizeEvent(event));
    /* a[::2, :192] packed into the head of devB (b is no longer needed): a 2D copy. */
    ok = ok && Ok("aclrtMemcpy2dAsync(slice)", aclrtMemcpy2dAsync(devB, width, devA, 2 * cols, width, height,
                                                                     ACL_MEMCPY_DEVICE_TO_DEVICE, stream));
    /* c.cpu(non_blocking=True): the pinned D2H copy through the handle lookup. */
    ok = ok && Ok("aclrtMemcpyAsyncWithCondition(c.cpu)",
                  withCondition(pinnedOut, n, devC, n, ACL_MEMCPY_DEVICE_TO_HOST, stream)) &&
         Ok("aclrtSynchronizeStreamWithTimeout", aclrtSynchronizeStreamWithTimeout(stream, 60000));
    /* a.cpu(), s.cpu(), the slice .cpu(): blocking. */
    ok = ok && BlockingCopy("aclrtMemcpy(a.cpu)", stream, aBack.data(), devA, n, ACL_MEMCPY_DEVICE_TO_HOST);
    ok = ok && BlockingCopy("aclrtMemcpy(s.cpu)", stream, full.data(), devS, n, ACL_MEMCPY_DEVICE_TO_HOST);
    ok = ok && BlockingCopy("aclrtMemcpy(slice.cpu)", stream, slice.data(), devB, slice.size(),
                            ACL_MEMCPY_DEVICE_TO_HOST);
    /* torch.npu.synchronize() */
    ok = ok && Ok("aclrtSynchronizeDevice", aclrtSynchronizeDevice());

    printf("torch_like: %zu bytes per tensor, slice %zu x %zu\n", n, height, width);
    bool good = ok;
    if (ok) {
        good = Verify("a.cpu()", aBack.data(), n, [](size_t i) { return Pattern(1, i); }) && good;
        good = Verify("c.cpu(non_blocking)", pinnedOut, n, [](size_t i) { return Pattern(1, i); }) && good;
        good = Verify("s.cpu()", full.data(), n,
                      [n](size_t i) { return i < n / 2 ? Pattern(2, i) : static_cast<unsigned char>(0x5a); }) &&
               good;
        good = Verify("a[::2, :192].cpu()", slice.data(), slice.size(),
                      [=](size_t i) { return Pattern(1, (i / width) * 2 * cols + i % width); }) &&
               good;
    }

    if (pinnedIn != nullptr)
        aclrtFreeHost(pinnedIn);
    if (pinnedOut != nullptr)
        aclrtFreeHost(pinnedOut);
    for (void *p : { devA, devB, devC, devS })
        if (p != nullptr)
            aclrtFree(p);
    if (event != nullptr)
        aclrtDestroyEvent(event);
    if (stream != nullptr)
        aclrtDestroyStream(stream);
    aclrtResetDevice(0);
    aclFinalize();
    if (acl != nullptr)
        dlclose(acl);
    if (!good || g_failed) {
        printf("FAILED\n");
        return 1;
    }
    printf("OK\n");
    return 0;
}
