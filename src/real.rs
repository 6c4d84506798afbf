//! Resolution of the real vendor functions (SPEC §3), once, lock-free on the hot path.
//!
//! Owns the one declaration of each hooked symbol's type and the search order:
//! `dlsym(RTLD_NEXT)` (rejecting our own export) → `NPUSHIM_ACL_LIB` / `NPUSHIM_HCCL_LIB` →
//! the vendor sonames already loaded (`RTLD_NOLOAD`) → the sonames under the Ascend install
//! roots. A symbol that cannot be found is a value (`None`), reported once, never a panic.

use std::ffi::{CString, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::abi::types::{AclError, HcclResult};

/// `aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count,
/// aclrtMemcpyKind kind, aclrtStream stream)`.
pub type AclrtMemcpyAsyncFn = unsafe extern "C" fn(
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: c_int,
    stream: *mut c_void,
) -> AclError;

/// `HcclResult HcclMemcpyAsync(HcclDispatcher, void *dst, uint64_t destMax, const void *src,
/// uint64_t count, HcclRtMemcpyKind, hccl::Stream &, u32 remoteUserRank, hccl::LinkType)`.
pub type HcclMemcpyAsyncFn = unsafe extern "C" fn(
    dispatcher: *mut c_void,
    dst: *mut c_void,
    dest_max: u64,
    src: *const c_void,
    count: u64,
    kind: c_int,
    stream: *mut c_void,
    remote_user_rank: u32,
    link_type: c_int,
) -> HcclResult;

const UNRESOLVED: usize = 0;
const MISSING: usize = 1;

/// Where one symbol may be found.
pub struct Target {
    pub symbol: &'static str,
    /// Sonames, newest first.
    pub sonames: &'static [&'static str],
    /// The variable that names an explicit library, and how to read it from a [`Search`].
    pub lib_var: &'static str,
    pub explicit: fn(&Search) -> Option<&str>,
    /// The code a call returns when the symbol is missing.
    pub missing_code: c_int,
    pub missing_code_name: &'static str,
}

pub const ACL: Target = Target {
    symbol: "aclrtMemcpyAsync",
    sonames: &["libascendcl.so", "libacl_rt.so"],
    lib_var: "NPUSHIM_ACL_LIB",
    explicit: |s| s.acl_lib.as_deref(),
    missing_code: crate::abi::types::ACL_ERROR_API_NOT_SUPPORT,
    missing_code_name: "ACL_ERROR_API_NOT_SUPPORT",
};

pub const HCCL: Target = Target {
    symbol: "HcclMemcpyAsync",
    sonames: &["libhccl_plf.so"],
    lib_var: "NPUSHIM_HCCL_LIB",
    explicit: |s| s.hccl_lib.as_deref(),
    missing_code: crate::abi::types::HCCL_E_NOT_SUPPORT,
    missing_code_name: "HCCL_E_NOT_SUPPORT",
};

/// One resolved-once function pointer: 0 = not yet looked up, 1 = missing, else the address.
pub struct Slot {
    addr: AtomicUsize,
    reported: AtomicBool,
}

impl Slot {
    pub const fn new() -> Self {
        Slot {
            addr: AtomicUsize::new(UNRESOLVED),
            reported: AtomicBool::new(false),
        }
    }

    /// The address, resolving on first use. `ours` is the shim's own export, never accepted.
    #[inline]
    pub fn get(&self, target: &Target, ours: usize) -> Option<usize> {
        match self.addr.load(Ordering::Acquire) {
            UNRESOLVED => self.resolve(target, ours),
            MISSING => None,
            addr => Some(addr),
        }
    }

    /// The address if it was already resolved (never resolves: for the pass-through path).
    #[inline]
    pub fn if_resolved(&self) -> Option<usize> {
        match self.addr.load(Ordering::Acquire) {
            UNRESOLVED | MISSING => None,
            addr => Some(addr),
        }
    }

    #[cold]
    fn resolve(&self, target: &Target, ours: usize) -> Option<usize> {
        let search = crate::runtime::search();
        let (found, tried) = lookup(target, ours, &search);
        // Racing resolvers find the same answer; the first store wins, all agree.
        self.addr.store(found.unwrap_or(MISSING), Ordering::Release);
        if found.is_none() && !self.reported.swap(true, Ordering::Relaxed) {
            crate::diag::warn!(
                "cannot find the real {} (tried {}; set {} to the library that has it); its calls return {} ({})",
                target.symbol,
                tried.join(", "),
                target.lib_var,
                target.missing_code_name,
                target.missing_code
            );
        }
        found
    }
}

impl Default for Slot {
    fn default() -> Self {
        Self::new()
    }
}

/// The inputs of a search besides the symbol: explicit libraries and install roots.
#[derive(Clone, Debug, Default)]
pub struct Search {
    pub acl_lib: Option<String>,
    pub hccl_lib: Option<String>,
    pub ascend_homes: Vec<String>,
}

fn dlsym_in(handle: *mut c_void, symbol: &CString) -> usize {
    // SAFETY: `handle` is RTLD_NEXT or a handle returned by dlopen; `symbol` is a valid
    // NUL-terminated string. dlsym has no other preconditions.
    unsafe { libc::dlsym(handle, symbol.as_ptr()) as usize }
}

fn dlopen(path: &str, flags: c_int) -> *mut c_void {
    let Ok(path) = CString::new(path) else {
        return std::ptr::null_mut();
    };
    // SAFETY: `path` is a valid NUL-terminated string; the handle is deliberately never
    // closed (the function pointer must stay valid for the life of the process).
    unsafe { libc::dlopen(path.as_ptr(), flags) }
}

/// Runs the SPEC §3 search order; returns the address and the places tried (for the message).
pub fn lookup(target: &Target, ours: usize, search: &Search) -> (Option<usize>, Vec<String>) {
    let symbol = CString::new(target.symbol).expect("symbol names have no NUL");
    let mut tried = vec!["RTLD_NEXT".to_string()];
    let accept = |addr: usize| addr != 0 && addr != ours;

    let addr = dlsym_in(libc::RTLD_NEXT, &symbol);
    if accept(addr) {
        return (Some(addr), tried);
    }
    let mut candidates: Vec<(String, c_int)> = Vec::new();
    if let Some(lib) = (target.explicit)(search) {
        candidates.push((lib.to_string(), libc::RTLD_NOW | libc::RTLD_LOCAL));
    }
    for soname in target.sonames {
        candidates.push((soname.to_string(), libc::RTLD_NOW | libc::RTLD_NOLOAD));
    }
    for home in &search.ascend_homes {
        for soname in target.sonames {
            candidates.push((
                format!("{}/lib64/{soname}", home.trim_end_matches('/')),
                libc::RTLD_NOW | libc::RTLD_LOCAL,
            ));
        }
    }
    for (path, flags) in candidates {
        let handle = dlopen(&path, flags);
        let how = if flags & libc::RTLD_NOLOAD != 0 {
            format!("{path} (already loaded)")
        } else {
            path
        };
        tried.push(how);
        if handle.is_null() {
            continue;
        }
        let addr = dlsym_in(handle, &symbol);
        if accept(addr) {
            return (Some(addr), tried);
        }
    }
    (None, tried)
}

static ACL_SLOT: Slot = Slot::new();
static HCCL_SLOT: Slot = Slot::new();

/// The real `aclrtMemcpyAsync`, or `None` if it cannot be found.
#[inline]
pub fn acl_memcpy_async() -> Option<AclrtMemcpyAsyncFn> {
    let ours = crate::abi::exports::aclrtMemcpyAsync as AclrtMemcpyAsyncFn as usize;
    ACL_SLOT.get(&ACL, ours).map(|addr| {
        // SAFETY: `addr` is the non-null address dlsym returned for a symbol whose C
        // signature is exactly `AclrtMemcpyAsyncFn` (SPEC §2.1).
        unsafe { std::mem::transmute::<usize, AclrtMemcpyAsyncFn>(addr) }
    })
}

/// The real `HcclMemcpyAsync`, or `None` if it cannot be found.
#[inline]
pub fn hccl_memcpy_async() -> Option<HcclMemcpyAsyncFn> {
    let ours = crate::abi::exports::HcclMemcpyAsync as HcclMemcpyAsyncFn as usize;
    HCCL_SLOT.get(&HCCL, ours).map(|addr| {
        // SAFETY: `addr` is the non-null address dlsym returned for a symbol whose C ABI
        // signature is exactly `HcclMemcpyAsyncFn` (SPEC §2.2).
        unsafe { std::mem::transmute::<usize, HcclMemcpyAsyncFn>(addr) }
    })
}

/// The real `aclrtMemcpyAsync` if already resolved (no lookup on this path).
#[inline]
pub fn acl_memcpy_async_if_resolved() -> Option<AclrtMemcpyAsyncFn> {
    ACL_SLOT.if_resolved().map(|addr| {
        // SAFETY: as in `acl_memcpy_async`.
        unsafe { std::mem::transmute::<usize, AclrtMemcpyAsyncFn>(addr) }
    })
}
