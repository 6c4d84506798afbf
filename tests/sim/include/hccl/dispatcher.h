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

constexpr u32 INVALID_VALUE_RANKID = 0xFFFFFFFFU; /* "no peer" rank */

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

/*
 * A range of device memory.  No virtual functions: the layout is part of the
 * ABI of HcclD2DMemcpyAsync (void *ptr_ at 0, u64 size_ at 8, bool owner_ at
 * 16; 24 bytes on LP64).  An owning DeviceMem (from alloc()) frees its memory
 * with aclrtFree when destroyed; copies and ranges never own.
 */
class DeviceMem {
public:
    DeviceMem() : ptr_(nullptr), size_(0), owner_(false) {}
    DeviceMem(void *ptr, u64 size, bool owner = false) : ptr_(ptr), size_(size), owner_(owner) {}
    DeviceMem(const DeviceMem &that) : ptr_(that.ptr_), size_(that.size_), owner_(false) {}
    DeviceMem(DeviceMem &&that) noexcept : ptr_(that.ptr_), size_(that.size_), owner_(that.owner_)
    {
        that.owner_ = false;
    }
    DeviceMem &operator=(const DeviceMem &that)
    {
        if (this != &that) {
            free();
            ptr_ = that.ptr_;
            size_ = that.size_;
            owner_ = false;
        }
        return *this;
    }
    DeviceMem &operator=(DeviceMem &&that) noexcept
    {
        if (this != &that) {
            free();
            ptr_ = that.ptr_;
            size_ = that.size_;
            owner_ = that.owner_;
            that.owner_ = false;
        }
        return *this;
    }
    ~DeviceMem() { free(); }

    /* Device memory of the current device, owned; empty when allocation fails. */
    static DeviceMem alloc(u64 size, aclrtMemMallocPolicy policy = ACL_MEM_MALLOC_HUGE_FIRST)
    {
        void *p = nullptr;
        if (size == 0 || aclrtMalloc(&p, static_cast<size_t>(size), policy) != ACL_SUCCESS)
            return DeviceMem();
        return DeviceMem(p, size, true);
    }
    /* A non-owning view of memory allocated elsewhere. */
    static DeviceMem create(void *ptr, u64 size) { return DeviceMem(ptr, size, false); }

    void *ptr() const { return ptr_; }
    u64 size() const { return size_; }
    bool owner() const { return owner_; }
    explicit operator bool() const { return ptr_ != nullptr; }

    /* [offset, offset+size) of this range as a non-owning view; empty when it
     * does not fit. */
    DeviceMem range(u64 offset, u64 size) const
    {
        if (ptr_ == nullptr || offset > size_ || size > size_ - offset)
            return DeviceMem();
        return DeviceMem(static_cast<char *>(ptr_) + offset, size, false);
    }

private:
    void free()
    {
        if (owner_ && ptr_ != nullptr)
            (void)aclrtFree(ptr_);
        owner_ = false;
    }

    void *ptr_;
    u64 size_;
    bool owner_;

    friend struct DeviceMemLayout;
};

struct DeviceMemLayout {
    static constexpr std::size_t kPtrOffset = offsetof(DeviceMem, ptr_);
    static constexpr std::size_t kSizeOffset = offsetof(DeviceMem, size_);
    static constexpr std::size_t kOwnerOffset = offsetof(DeviceMem, owner_);
};

static_assert(DeviceMemLayout::kPtrOffset == 0, "hccl::DeviceMem::ptr_ is at offset 0");
static_assert(DeviceMemLayout::kSizeOffset == 8, "hccl::DeviceMem::size_ is at offset 8");
static_assert(DeviceMemLayout::kOwnerOffset == 16, "hccl::DeviceMem::owner_ is at offset 16");
static_assert(sizeof(DeviceMem) == 24, "hccl::DeviceMem is 24 bytes");

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

/**
 * @brief device-to-device copy of src into dst issued by HCCL (the hot path
 *        of HCCL's collectives)
 * @param dst            [IN] destination range; its size_ is the capacity
 * @param src            [IN] source range; its size_ bytes are copied
 * @retval HCCL_E_PTR for a NULL dispatcher or range pointer, or when dst is
 *         smaller than src; otherwise as HcclMemcpyAsync(dispatcherPtr,
 *         dst.ptr(), dst.size(), src.ptr(), src.size(), DEVICE_TO_DEVICE,
 *         stream, remoteUserRank, inLinkType)
 */
__attribute__((visibility("default")))
HcclResult HcclD2DMemcpyAsync(HcclDispatcher dispatcherPtr, hccl::DeviceMem &dst, const hccl::DeviceMem &src,
                              hccl::Stream &stream, u32 remoteUserRank = INVALID_VALUE_RANKID,
                              hccl::LinkType inLinkType = hccl::LinkType::LINK_ONCHIP);

} // extern "C"

#endif /* HCCL_DISPATCHER_H */
