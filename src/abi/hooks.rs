//! THE hook table: every hooked vendor function, declared once.
//!
//! Each entry gives the function's variant name, its exported symbol and exact C parameter
//! list, its API family (which library, error codes and kind enum), its class, and how its
//! arguments become a [`Call`](crate::abi::types::Call). The table is an "X-macro":
//! `for_each_hook!(m)` hands it to `m`, and each consumer expands what it needs from the same
//! text — [`super::types`] the `Hook` enum with its names and classes, [`super::exports`] the
//! `#[no_mangle]` exports, the function-pointer types, the resolver slots and the
//! compile-time ABI checks, and the `dlsym` interposition its name list. Adding a hooked
//! function is one entry here, plus its tests. This file holds only the table: it imports
//! nothing and nothing here runs.
//!
//! Every function returns `aclError` / `HcclResult` (both `int`). The `decode` block runs
//! with the parameters in scope and fills `c`, a [`Call`](crate::abi::types::Call) already blank
//! for this hook; it may read only integers (the shim never dereferences what the program
//! passes, except where an entry says so).

/// Calls `$m!` with the whole table.
macro_rules! for_each_hook {
    ($m:ident) => {
        $m! {
            /// `aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src,
            /// size_t count, aclrtMemcpyKind kind, aclrtStream stream)` (SPEC §2.1).
            AclrtMemcpyAsync = aclrtMemcpyAsync(
                dst: *mut c_void, destMax: usize, src: *const c_void, count: usize,
                kind: c_int, stream: *mut c_void
            ): Acl, CopyAsync, |c| {
                c.dst = dst as usize;
                c.dest_max = destMax as u64;
                c.src = src as usize;
                c.count = count as u64;
                c.kind = kind;
                c.stream = stream as usize;
            };
            /// `HcclResult HcclMemcpyAsync(HcclDispatcher, void *dst, uint64_t destMax,
            /// const void *src, uint64_t count, HcclRtMemcpyKind, hccl::Stream &,
            /// u32 remoteUserRank, hccl::LinkType)` (SPEC §2.2; the reference is a pointer,
            /// both enums `int`; never dereferenced).
            HcclMemcpyAsync = HcclMemcpyAsync(
                dispatcherPtr: *mut c_void, dst: *mut c_void, destMax: u64,
                src: *const c_void, count: u64, kind: c_int, stream: *mut c_void,
                remoteUserRank: u32, linkType: c_int
            ): Hccl, CopyAsync, |c| {
                c.dispatcher = dispatcherPtr as usize;
                c.dst = dst as usize;
                c.dest_max = destMax;
                c.src = src as usize;
                c.count = count;
                c.kind = kind;
                c.stream = stream as usize;
                c.remote_rank = remoteUserRank;
                c.link = linkType;
            };
            /// `aclError aclrtMemcpy(void *dst, size_t destMax, const void *src,
            /// size_t count, aclrtMemcpyKind kind)`: the synchronous copy.
            AclrtMemcpy = aclrtMemcpy(
                dst: *mut c_void, destMax: usize, src: *const c_void, count: usize,
                kind: c_int
            ): Acl, CopySync, |c| {
                c.dst = dst as usize;
                c.dest_max = destMax as u64;
                c.src = src as usize;
                c.count = count as u64;
                c.kind = kind;
            };
            /// `aclrtMemcpyAsyncWithCondition`: the parameters of `aclrtMemcpyAsync`.
            AclrtMemcpyAsyncWithCondition = aclrtMemcpyAsyncWithCondition(
                dst: *mut c_void, destMax: usize, src: *const c_void, count: usize,
                kind: c_int, stream: *mut c_void
            ): Acl, CopyAsync, |c| {
                c.dst = dst as usize;
                c.dest_max = destMax as u64;
                c.src = src as usize;
                c.count = count as u64;
                c.kind = kind;
                c.stream = stream as usize;
            };
            /// `aclError aclrtMemcpy2d(void *dst, size_t dpitch, const void *src,
            /// size_t spitch, size_t width, size_t height, aclrtMemcpyKind kind)`.
            AclrtMemcpy2d = aclrtMemcpy2d(
                dst: *mut c_void, dpitch: usize, src: *const c_void, spitch: usize,
                width: usize, height: usize, kind: c_int
            ): Acl, Copy2dSync, |c| {
                c.dst = dst as usize;
                c.dest_max = dpitch as u64;
                c.src = src as usize;
                c.spitch = spitch as u64;
                c.count = width as u64;
                c.height = height as u64;
                c.kind = kind;
            };
            /// `aclrtMemcpy2d` plus `aclrtStream stream`.
            AclrtMemcpy2dAsync = aclrtMemcpy2dAsync(
                dst: *mut c_void, dpitch: usize, src: *const c_void, spitch: usize,
                width: usize, height: usize, kind: c_int, stream: *mut c_void
            ): Acl, Copy2dAsync, |c| {
                c.dst = dst as usize;
                c.dest_max = dpitch as u64;
                c.src = src as usize;
                c.spitch = spitch as u64;
                c.count = width as u64;
                c.height = height as u64;
                c.kind = kind;
                c.stream = stream as usize;
            };
            /// `aclError aclrtMemsetAsync(void *devPtr, size_t maxCount, int32_t value,
            /// size_t count, aclrtStream stream)`.
            AclrtMemsetAsync = aclrtMemsetAsync(
                devPtr: *mut c_void, maxCount: usize, value: i32, count: usize,
                stream: *mut c_void
            ): Acl, SetAsync, |c| {
                c.dst = devPtr as usize;
                c.dest_max = maxCount as u64;
                c.value = value;
                c.count = count as u64;
                c.stream = stream as usize;
            };
            /// `HcclResult HcclD2DMemcpyAsync(HcclDispatcher, hccl::DeviceMem &dst,
            /// const hccl::DeviceMem &src, hccl::Stream &, u32 remoteUserRank,
            /// hccl::LinkType)` (SPEC §2.3). The two `DeviceMem` objects are the one thing
            /// the shim reads of what a program passes (the real function reads the same 16
            /// bytes first): `ptr_` at 0, `size_` at 8.
            HcclD2DMemcpyAsync = HcclD2DMemcpyAsync(
                dispatcherPtr: *mut c_void, dst: *mut c_void, src: *const c_void,
                stream: *mut c_void, remoteUserRank: u32, inLinkType: c_int
            ): Hccl, CopyAsync, |c| {
                c.dispatcher = dispatcherPtr as usize;
                let (dst_ptr, dst_size) = crate::boundary::read_device_mem(dst as usize);
                let (src_ptr, src_size) = crate::boundary::read_device_mem(src as usize);
                c.dst = dst_ptr;
                c.dest_max = dst_size;
                c.src = src_ptr;
                c.count = src_size;
                c.kind = 3;
                c.stream = stream as usize;
                c.remote_rank = remoteUserRank;
                c.link = inLinkType;
                c.refs_null = dst.is_null() || src.is_null();
            };
            /// `aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy
            /// policy)`. The result is read from `*devPtr` after the call succeeded.
            AclrtMalloc = aclrtMalloc(
                devPtr: *mut *mut c_void, size: usize, policy: c_int
            ): Acl, AllocDevice, |c| {
                c.out = devPtr as usize;
                c.count = size as u64;
                c.value = policy;
            };
            /// `aclrtMallocAlign32`: the parameters of `aclrtMalloc`.
            AclrtMallocAlign32 = aclrtMallocAlign32(
                devPtr: *mut *mut c_void, size: usize, policy: c_int
            ): Acl, AllocDevice, |c| {
                c.out = devPtr as usize;
                c.count = size as u64;
                c.value = policy;
            };
            /// `aclrtMallocCached`: the parameters of `aclrtMalloc`.
            AclrtMallocCached = aclrtMallocCached(
                devPtr: *mut *mut c_void, size: usize, policy: c_int
            ): Acl, AllocDevice, |c| {
                c.out = devPtr as usize;
                c.count = size as u64;
                c.value = policy;
            };
            /// `aclError aclrtMallocWithCfg(void **devPtr, size_t size,
            /// aclrtMemMallocPolicy policy, aclrtMallocConfig *cfg)`.
            AclrtMallocWithCfg = aclrtMallocWithCfg(
                devPtr: *mut *mut c_void, size: usize, policy: c_int, cfg: *mut c_void
            ): Acl, AllocDevice, |c| {
                c.out = devPtr as usize;
                c.count = size as u64;
                c.value = policy;
                let _ = cfg;
            };
            /// `aclError aclrtFree(void *devPtr)`.
            AclrtFree = aclrtFree(devPtr: *mut c_void): Acl, Free, |c| {
                c.dst = devPtr as usize;
            };
            /// `aclError aclrtMallocHost(void **hostPtr, size_t size)`: pinned host memory.
            AclrtMallocHost = aclrtMallocHost(
                hostPtr: *mut *mut c_void, size: usize
            ): Acl, AllocHost, |c| {
                c.out = hostPtr as usize;
                c.count = size as u64;
            };
            /// `aclError aclrtMallocHostWithCfg(void **ptr, uint64_t size,
            /// aclrtMallocConfig *cfg)`.
            AclrtMallocHostWithCfg = aclrtMallocHostWithCfg(
                ptr: *mut *mut c_void, size: u64, cfg: *mut c_void
            ): Acl, AllocHost, |c| {
                c.out = ptr as usize;
                c.count = size;
                let _ = cfg;
            };
            /// `aclError aclrtFreeHost(void *hostPtr)`.
            AclrtFreeHost = aclrtFreeHost(hostPtr: *mut c_void): Acl, Free, |c| {
                c.dst = hostPtr as usize;
            };
            /// `aclError aclrtHostRegister(void *ptr, uint64_t size,
            /// aclrtHostRegisterType type, void **devPtr)`: the range counts as pinned.
            AclrtHostRegister = aclrtHostRegister(
                ptr: *mut c_void, size: u64, regType: c_int, devPtr: *mut *mut c_void
            ): Acl, Register, |c| {
                c.dst = ptr as usize;
                c.count = size;
                c.value = regType;
                c.out = devPtr as usize;
            };
            /// `aclError aclrtHostRegisterV2(void *ptr, uint64_t size, uint32_t flag)`.
            AclrtHostRegisterV2 = aclrtHostRegisterV2(
                ptr: *mut c_void, size: u64, flag: u32
            ): Acl, Register, |c| {
                c.dst = ptr as usize;
                c.count = size;
                c.value = flag as i32;
            };
            /// `aclError aclrtHostUnregister(void *ptr)`.
            AclrtHostUnregister = aclrtHostUnregister(ptr: *mut c_void): Acl, Unregister, |c| {
                c.dst = ptr as usize;
            };
            /// `aclError aclrtSynchronizeStream(aclrtStream stream)`: the host waits.
            AclrtSynchronizeStream = aclrtSynchronizeStream(
                stream: *mut c_void
            ): Acl, Wait, |c| {
                c.stream = stream as usize;
            };
            /// `aclError aclrtSynchronizeStreamWithTimeout(aclrtStream stream,
            /// int32_t timeout)` (milliseconds; -1 waits for ever).
            AclrtSynchronizeStreamWithTimeout = aclrtSynchronizeStreamWithTimeout(
                stream: *mut c_void, timeout: i32
            ): Acl, Wait, |c| {
                c.stream = stream as usize;
                c.value = timeout;
            };
            /// `aclError aclrtSynchronizeEvent(aclrtEvent event)`.
            AclrtSynchronizeEvent = aclrtSynchronizeEvent(
                event: *mut c_void
            ): Acl, Wait, |c| {
                c.event = event as usize;
            };
            /// `aclError aclrtSynchronizeDevice(void)`.
            AclrtSynchronizeDevice = aclrtSynchronizeDevice(): Acl, Wait, |c| {
                let _ = c;
            };
        }
    };
}

pub(crate) use for_each_hook;
