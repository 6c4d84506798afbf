/*
 * hccl_sim.cpp - simulated HCCL dispatcher (libhccl_plf.so).
 *
 * HcclMemcpyAsync follows the open-source hcomm implementation:
 *   NULL dispatcher/dst/src            -> HCCL_E_PTR
 *   stream handle (stream_) NULL       -> synchronous host memcpy
 *   count == 0 or src == dst           -> HCCL_SUCCESS
 *   destMax < count, kind not in 0..3  -> HCCL_E_PARA
 *   otherwise the copy is split into chunks of at most 4 GiB and each chunk is
 *   issued with aclrtMemcpyAsync(dst + off, destMax, src + off, chunk, ...),
 *   every chunk carrying the full destMax; a failure becomes HCCL_E_RUNTIME.
 *
 * aclrtMemcpyAsync is an ordinary call into libascendcl.so resolved by the
 * dynamic linker, so an LD_PRELOAD interposer sees every nested call.
 *
 * NPUSIM_HCCL_MAX_CHUNK=<bytes> lowers the chunk size (read when a dispatcher
 * is created) so tests can exercise the split without 4 GiB buffers.
 */
#include "hccl/dispatcher.h"

#include <atomic>
#include <cinttypes>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>

#include "sim_log.h"

namespace {

constexpr uint64_t kMaxChunk = 4ull << 30; // 4 GiB, as hcomm
constexpr uint32_t kDispatcherMagic = 0x48434344u; // "HCCD"

struct SimDispatcher {
    uint32_t magic;
    DispatcherType type;
    s32 deviceLogicId;
    uint64_t maxChunk;
    SimDispatcher *next;
};

/* Live dispatcher handles.  A handle is looked up here before it is ever
 * dereferenced, so a stale or foreign pointer is rejected, not followed. */
std::mutex g_dispMutex;
SimDispatcher *g_dispatchers = nullptr;

SimDispatcher *FindDispatcherLocked(const void *handle)
{
    for (SimDispatcher *d = g_dispatchers; d != nullptr; d = d->next)
        if (d == handle)
            return d;
    return nullptr;
}

uint64_t ReadMaxChunk()
{
    const char *v = std::getenv("NPUSIM_HCCL_MAX_CHUNK");
    if (v == nullptr || *v == '\0')
        return kMaxChunk;
    char *end = nullptr;
    unsigned long long n = std::strtoull(v, &end, 10);
    if (*end != '\0' || n == 0 || n > kMaxChunk) {
        sim_debug("NPUSIM_HCCL_MAX_CHUNK=%s is not in 1..%" PRIu64 ", using 4 GiB", v, kMaxChunk);
        return kMaxChunk;
    }
    return n;
}

bool LookupDispatcher(const void *handle, uint64_t *maxChunk)
{
    std::lock_guard<std::mutex> lock(g_dispMutex);
    const SimDispatcher *d = FindDispatcherLocked(handle);
    if (d == nullptr || d->magic != kDispatcherMagic)
        return false;
    *maxChunk = d->maxChunk;
    return true;
}

/* Keeps the compiler from assuming a reference is non-null. */
template <typename T> T *Launder(T *p)
{
    __asm__("" : "+r"(p));
    return p;
}

HcclResult MemcpyAsyncImpl(HcclDispatcher dispatcherPtr, void *dst, uint64_t destMax, const void *src,
                           uint64_t count, HcclRtMemcpyKind kind, hccl::Stream *stream)
{
    if (dispatcherPtr == nullptr || dst == nullptr || src == nullptr || stream == nullptr) {
        sim_debug("HcclMemcpyAsync: NULL pointer (dispatcher %p dst %p src %p stream %p)", dispatcherPtr, dst, src,
                  static_cast<void *>(stream));
        return HCCL_E_PTR;
    }
    uint64_t maxChunk = 0;
    if (!LookupDispatcher(dispatcherPtr, &maxChunk)) {
        sim_debug("HcclMemcpyAsync: %p is not a dispatcher from HcclDispatcherInit", dispatcherPtr);
        return HCCL_E_PARA;
    }

    if (stream->ptr() == nullptr) {
        // No runtime stream: HCCL copies on the host, synchronously.
        if (count == 0 || src == dst)
            return HCCL_SUCCESS;
        if (destMax < count) {
            sim_debug("HcclMemcpyAsync: count %" PRIu64 " > destMax %" PRIu64, count, destMax);
            return HCCL_E_PARA;
        }
        std::memcpy(dst, src, count);
        return HCCL_SUCCESS;
    }

    if (count == 0 || src == dst)
        return HCCL_SUCCESS;
    if (destMax < count) {
        sim_debug("HcclMemcpyAsync: count %" PRIu64 " > destMax %" PRIu64, count, destMax);
        return HCCL_E_PARA;
    }
    int k = static_cast<int>(kind);
    if (k < static_cast<int>(HcclRtMemcpyKind::HCCL_RT_MEMCPY_KIND_HOST_TO_HOST) ||
        k > static_cast<int>(HcclRtMemcpyKind::HCCL_RT_MEMCPY_KIND_DEVICE_TO_DEVICE)) {
        sim_debug("HcclMemcpyAsync: kind %d is not supported", k);
        return HCCL_E_PARA;
    }
    // HcclRtMemcpyKind 0..3 and aclrtMemcpyKind 0..3 have the same meaning.
    aclrtMemcpyKind aclKind = static_cast<aclrtMemcpyKind>(k);

    auto *d = static_cast<uint8_t *>(dst);
    auto *s = static_cast<const uint8_t *>(src);
    for (uint64_t off = 0; off < count;) {
        uint64_t chunk = count - off < maxChunk ? count - off : maxChunk;
        aclError ret = aclrtMemcpyAsync(d + off, static_cast<size_t>(destMax), s + off, static_cast<size_t>(chunk),
                                        aclKind, stream->ptr());
        if (ret != ACL_SUCCESS) {
            sim_debug("HcclMemcpyAsync: aclrtMemcpyAsync failed with %d at offset %" PRIu64, ret, off);
            return HCCL_E_RUNTIME;
        }
        off += chunk;
    }
    return HCCL_SUCCESS;
}

} // namespace

extern "C" {

HcclResult HcclDispatcherInit(DispatcherType type, const s32 deviceLogicId, HcclDispatcher *dispatcher)
{
    if (dispatcher == nullptr)
        return HCCL_E_PTR;
    if (type < DISPATCHER_NORMAL || type >= DISPATCHER_TYPE_RESERVED || deviceLogicId < 0)
        return HCCL_E_PARA;
    auto *disp = new (std::nothrow) SimDispatcher{kDispatcherMagic, type, deviceLogicId, ReadMaxChunk(), nullptr};
    if (disp == nullptr)
        return HCCL_E_MEMORY;
    {
        std::lock_guard<std::mutex> lock(g_dispMutex);
        disp->next = g_dispatchers;
        g_dispatchers = disp;
    }
    *dispatcher = disp;
    return HCCL_SUCCESS;
}

HcclResult HcclDispatcherDestroy(HcclDispatcher dispatcher)
{
    if (dispatcher == nullptr)
        return HCCL_E_PTR;
    SimDispatcher *disp = nullptr;
    {
        std::lock_guard<std::mutex> lock(g_dispMutex);
        for (SimDispatcher **pp = &g_dispatchers; *pp != nullptr; pp = &(*pp)->next) {
            if (*pp == dispatcher) {
                disp = *pp;
                *pp = disp->next;
                break;
            }
        }
    }
    if (disp == nullptr)
        return HCCL_E_PARA;
    disp->magic = 0;
    delete disp;
    return HCCL_SUCCESS;
}

HcclResult HcclMemcpyAsync(HcclDispatcher dispatcherPtr, void *dst, const uint64_t destMax, const void *src,
                           const uint64_t count, const HcclRtMemcpyKind kind, hccl::Stream &stream,
                           const u32 remoteUserRank, hccl::LinkType linkType)
{
    hccl::Stream *streamObj = Launder(&stream);
    HcclResult ret = MemcpyAsyncImpl(dispatcherPtr, dst, destMax, src, count, kind, streamObj);
    if (sim_log_wants(SIM_FN_HcclMemcpyAsync))
        sim_log_line("HcclMemcpyAsync dispatcher=%p dst=%p destMax=%llu src=%p count=%llu kind=%d stream=%p "
                 "remoteUserRank=%u linkType=%d ret=%d\n",
                 dispatcherPtr, dst, static_cast<unsigned long long>(destMax), src,
                 static_cast<unsigned long long>(count), static_cast<int>(kind), static_cast<void *>(streamObj),
                 static_cast<unsigned>(remoteUserRank), static_cast<int>(linkType), static_cast<int>(ret));
    return ret;
}

} // extern "C"

extern "C" HcclResult HcclD2DMemcpyAsync(HcclDispatcher dispatcherPtr, hccl::DeviceMem &dst,
                                         const hccl::DeviceMem &src, hccl::Stream &stream, u32 remoteUserRank,
                                         hccl::LinkType inLinkType)
{
    hccl::DeviceMem *dstObj = Launder(&dst);
    const hccl::DeviceMem *srcObj = Launder(&src);
    hccl::Stream *streamObj = Launder(&stream);
    void *dstPtr = dstObj != nullptr ? dstObj->ptr() : nullptr;
    const void *srcPtr = srcObj != nullptr ? srcObj->ptr() : nullptr;
    u64 dstSize = dstObj != nullptr ? dstObj->size() : 0;
    u64 srcSize = srcObj != nullptr ? srcObj->size() : 0;

    HcclResult ret;
    if (dispatcherPtr == nullptr || dstPtr == nullptr || srcPtr == nullptr) {
        sim_debug("HcclD2DMemcpyAsync: NULL pointer (dispatcher %p dst %p src %p)", dispatcherPtr, dstPtr, srcPtr);
        ret = HCCL_E_PTR;
    } else if (dstSize < srcSize) {
        sim_debug("HcclD2DMemcpyAsync: dst size %llu < src size %llu", static_cast<unsigned long long>(dstSize),
                  static_cast<unsigned long long>(srcSize));
        ret = HCCL_E_PTR;
    } else {
        // Exactly HcclMemcpyAsync's semantics, one nested aclrtMemcpyAsync per chunk.
        ret = MemcpyAsyncImpl(dispatcherPtr, dstPtr, dstSize, srcPtr, srcSize,
                              HcclRtMemcpyKind::HCCL_RT_MEMCPY_KIND_DEVICE_TO_DEVICE, streamObj);
    }
    if (sim_log_wants(SIM_FN_HcclD2DMemcpyAsync))
        sim_log_line("HcclD2DMemcpyAsync dispatcher=%p dst=%p destMax=%llu src=%p count=%llu stream=%p "
                     "remoteUserRank=%u linkType=%d ret=%d\n",
                     dispatcherPtr, dstPtr, static_cast<unsigned long long>(dstSize), srcPtr,
                     static_cast<unsigned long long>(srcSize), static_cast<void *>(streamObj),
                     static_cast<unsigned>(remoteUserRank), static_cast<int>(inLinkType), static_cast<int>(ret));
    return ret;
}
