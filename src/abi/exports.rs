//! The exported vendor symbols, with the vendor's exact C signatures (SPEC §2–3).
//!
//! Each export spells its signature, builds a [`Call`] and hands off to the pipeline; the
//! `const _` lines prove at compile time that the export and the resolver agree on the type.
#![allow(non_snake_case)]

use std::ffi::{c_int, c_void};

use super::types::{AclError, Api, Call, HcclResult};
use crate::intercept::{self, Route};
use crate::real::{self, AclrtMemcpyAsyncFn, HcclMemcpyAsyncFn};
use crate::runtime;

/// `aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count,
/// aclrtMemcpyKind kind, aclrtStream stream)`
///
/// # Safety
/// Same contract as the vendor function; the shim itself never dereferences the pointers.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn aclrtMemcpyAsync(
    dst: *mut c_void,
    destMax: usize,
    src: *const c_void,
    count: usize,
    kind: c_int,
    stream: *mut c_void,
) -> AclError {
    // Pass-through, or a clean call with nothing to record: a few loads and compares, then
    // a tail call; nothing is spilled on these paths. A clean call while tracing goes
    // straight to its span.
    let route = if runtime::pass_through() {
        Route::Forward
    } else {
        intercept::route(&acl_call(dst, destMax, src, count, kind, stream))
    };
    match route {
        Route::Forward => {
            if let Some(f) = real::acl_memcpy_async_if_resolved() {
                // SAFETY: forwarding the caller's own arguments, unchanged.
                return unsafe { f(dst, destMax, src, count, kind, stream) };
            }
        }
        Route::Record => return acl_record(dst, destMax, src, count, kind, stream),
        Route::Pipeline => {}
    }
    acl_pipeline(dst, destMax, src, count, kind, stream)
}

/// The arguments of an `aclrtMemcpyAsync` call as a [`Call`] (inlined: on the fast path
/// it stays in registers).
#[inline(always)]
fn acl_call(
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: c_int,
    stream: *mut c_void,
) -> Call {
    Call {
        dst: dst as usize,
        src: src as usize,
        dest_max: dest_max as u64,
        count: count as u64,
        kind,
        stream: stream as usize,
        ..Call::new(Api::Acl)
    }
}

/// [`Route::Record`], out of line (with the export's own signature, so that every path of
/// the export ends in a tail call and none of them needs a stack frame).
#[inline(never)]
fn acl_record(
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: c_int,
    stream: *mut c_void,
) -> AclError {
    let Some(f) = real::acl_memcpy_async_if_resolved() else {
        return acl_pipeline(dst, dest_max, src, count, kind, stream);
    };
    let call = acl_call(dst, dest_max, src, count, kind, stream);
    // SAFETY: forwarding the caller's own arguments, unchanged, to the real function.
    intercept::forward_and_record(&call, || unsafe {
        f(dst, dest_max, src, count, kind, stream)
    })
}

#[inline(never)]
fn acl_pipeline(
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: c_int,
    stream: *mut c_void,
) -> AclError {
    let call = acl_call(dst, dest_max, src, count, kind, stream);
    intercept::call(
        call,
        real::acl_memcpy_async,
        // SAFETY: forwarding the caller's own arguments, unchanged, to the real function.
        |f| unsafe { f(dst, dest_max, src, count, kind, stream) },
        real::ACL.missing_code,
    )
}

const _: AclrtMemcpyAsyncFn = aclrtMemcpyAsync;

/// `HcclResult HcclMemcpyAsync(HcclDispatcher dispatcherPtr, void *dst, const uint64_t
/// destMax, const void *src, const uint64_t count, const HcclRtMemcpyKind kind,
/// hccl::Stream &stream, const u32 remoteUserRank, hccl::LinkType linkType)` — declared
/// inside `extern "C"`; the reference is a pointer and both enums are `int` in the ABI.
///
/// # Safety
/// Same contract as the vendor function; the shim never dereferences the pointers, not
/// even the `hccl::Stream` reference.
#[unsafe(no_mangle)]
pub unsafe extern "C-unwind" fn HcclMemcpyAsync(
    dispatcherPtr: *mut c_void,
    dst: *mut c_void,
    destMax: u64,
    src: *const c_void,
    count: u64,
    kind: c_int,
    stream: *mut c_void,
    remoteUserRank: u32,
    linkType: c_int,
) -> HcclResult {
    // HCCL copies are few and heavy (each carries a nested runtime copy): no separate fast
    // path; the pipeline itself forwards at once when the shim is a pure pass-through.
    let call = Call {
        dst: dst as usize,
        src: src as usize,
        dest_max: destMax,
        count,
        kind,
        stream: stream as usize,
        dispatcher: dispatcherPtr as usize,
        remote_rank: remoteUserRank,
        link: linkType,
        ..Call::new(Api::Hccl)
    };
    intercept::call(
        call,
        real::hccl_memcpy_async,
        // SAFETY: forwarding the caller's own arguments, unchanged, to the real function.
        |f| unsafe {
            f(
                dispatcherPtr,
                dst,
                destMax,
                src,
                count,
                kind,
                stream,
                remoteUserRank,
                linkType,
            )
        },
        real::HCCL.missing_code,
    )
}

const _: HcclMemcpyAsyncFn = HcclMemcpyAsync;
