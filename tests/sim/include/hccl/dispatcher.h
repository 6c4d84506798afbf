/*
 * dispatcher.h - HCCL dispatcher API (simulated runtime, C++ only).
 *
 * HcclMemcpyAsync is an internal HCCL function that HCCL's collectives use for
 * every copy.  As in the vendor's hcomm sources it is declared inside
 * extern "C" although it takes C++ types: the exported symbol is the plain
 * name, hccl::Stream& travels as a pointer, and both enums are int.
 */
#ifndef HCCL_DISPATCHER_H
#define HCCL_DISPATCHER_H

#ifndef __cplusplus
#error "hccl/dispatcher.h is a C++ header"
#endif

#include <cstddef>
#include <cstdint>

#include "acl/acl_rt.h"

typedef void *HcclDispatcher;
typedef uint32_t u32;
typedef int32_t s32;
typedef uint64_t u64;

typedef enum {
    HCCL_SUCCESS = 0,
    HCCL_E_PARA = 1,
    HCCL_E_PTR = 2,
    HCCL_E_MEMORY = 3,
    HCCL_E_INTERNAL = 4,
    HCCL_E_NOT_SUPPORT = 5,
    HCCL_E_NOT_FOUND = 6,
    HCCL_E_UNAVAIL = 7,
    HCCL_E_SYSCALL = 8,
    HCCL_E_TIMEOUT = 9,
    HCCL_E_OPEN_FILE_FAILURE = 10,
    HCCL_E_TCP_CONNECT = 11,
    HCCL_E_ROCE_CONNECT = 12,
    HCCL_E_TCP_TRANSFER = 13,
    HCCL_E_ROCE_TRANSFER = 14,
    HCCL_E_RUNTIME = 15,
    HCCL_E_DRV = 16,
    HCCL_E_PROFILING = 17,
    HCCL_E_CCE = 18,
    HCCL_E_NETWORK = 19,
    HCCL_E_AGAIN = 20,
    HCCL_E_REMOTE = 21,
    HCCL_E_SUSPENDING = 22,
    HCCL_E_RESERVED
} HcclResult;

enum class HcclRtMemcpyKind {
    HCCL_RT_MEMCPY_KIND_HOST_TO_HOST = 0,
    HCCL_RT_MEMCPY_KIND_HOST_TO_DEVICE = 1,
    HCCL_RT_MEMCPY_KIND_DEVICE_TO_HOST = 2,
    HCCL_RT_MEMCPY_KIND_DEVICE_TO_DEVICE = 3,
    HCCL_RT_MEMCPY_ADDR_DEVICE_TO_DEVICE = 4,
    HCCL_RT_MEMCPY_KIND_RESERVED = 5,
};

enum DispatcherType {
    DISPATCHER_NORMAL = 0,
    DISPATCHER_VIRTURAL,
    DISPATCHER_AICPU,
    DISPATCHER_TYPE_RESERVED
};

namespace hccl {

enum class LinkType {
    LINK_ONCHIP = 0,
    LINK_HCCS = 1,
    LINK_PCIE = 2,
    LINK_ROCE = 3,
    LINK_SIO = 4,
    LINK_HCCS_SW = 5,
    LINK_STANDARD_ROCE = 6,
    LINK_UB = 7,
    LINK_RESERVED = 255,
};

/*
 * A non-owning wrapper around an aclrtStream.  The layout is part of the ABI
 * that HcclMemcpyAsync and any interposer rely on: vtable pointer at offset 0,
 * the aclrtStream at offset 8 (LP64).
 */
class Stream {
public:
    Stream() : stream_(nullptr), streamId_(-1) {}
    explicit Stream(aclrtStream s) : stream_(s), streamId_(-1) {}
    Stream(const Stream &) = default;
    Stream &operator=(const Stream &) = default;
    virtual ~Stream() {}

    void *ptr() const { return stream_; }
    s32 id() const { return streamId_; }
    void SetStreamId(s32 id) { streamId_ = id; }
    explicit operator bool() const { return stream_ != nullptr; }

private:
    void *stream_;
    s32 streamId_;

    friend struct StreamLayout;
};

struct StreamLayout {
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Winvalid-offsetof"
#endif
    static constexpr std::size_t kStreamOffset = offsetof(Stream, stream_);
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
};

static_assert(StreamLayout::kStreamOffset == sizeof(void *),
              "hccl::Stream::stream_ must follow the vtable pointer");

} // namespace hccl

extern "C" {

__attribute__((visibility("default")))
HcclResult HcclDispatcherInit(DispatcherType type, const s32 deviceLogicId, HcclDispatcher *dispatcher);

__attribute__((visibility("default")))
HcclResult HcclDispatcherDestroy(HcclDispatcher dispatcher);

/**
 * @brief asynchronous memory copy issued by HCCL
 * @param dispatcherPtr  [IN] dispatcher handle
 * @param dst            [IN] destination address
 * @param destMax        [IN] capacity of dst in bytes
 * @param src            [IN] source address
 * @param count          [IN] bytes to copy
 * @param kind           [IN] copy direction
 * @param stream         [IN] stream that executes the copy
 * @param remoteUserRank [IN] world rank of the peer
 * @param linkType       [IN] link the copy travels over
 * @retval HCCL_SUCCESS on success, another HcclResult on failure
 */
__attribute__((visibility("default")))
HcclResult HcclMemcpyAsync(HcclDispatcher dispatcherPtr, void *dst, const uint64_t destMax, const void *src,
                           const uint64_t count, const HcclRtMemcpyKind kind, hccl::Stream &stream,
                           const u32 remoteUserRank, hccl::LinkType linkType);

} // extern "C"

#endif /* HCCL_DISPATCHER_H */
