//! Resolution of the real vendor functions (SPEC §3), once, lock-free on the hot path.
//!
//! Owns the one declaration of each hooked symbol's type and the search order:
//! `dlsym(RTLD_NEXT)` (rejecting our own export) → `NPUSHIM_ACL_LIB` / `NPUSHIM_HCCL_LIB` →
//! the vendor sonames already loaded (`RTLD_NOLOAD`) → the sonames under the Ascend install
//! roots. A symbol that cannot be found is a value (`None`), reported once, never a panic.
//!
//! The search inputs are handed over once, at initialisation ([`configure`]); this module
//! never reaches back into the pipeline or the process state. Our own exports are told apart
//! by the object they live in (`dladdr`), not by naming them.

use std::ffi::{CString, c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use crate::abi::types::{Api, Hook};

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

/// Where the real function of `hook` may be found, and what its calls return without it.
pub fn target(hook: Hook) -> Target {
    match hook.api() {
        Api::Acl => Target {
            symbol: hook.symbol(),
            sonames: &["libascendcl.so", "libacl_rt.so"],
            lib_var: "NPUSHIM_ACL_LIB",
            explicit: |s| s.acl_lib.as_deref(),
            missing_code: crate::abi::types::ACL_ERROR_API_NOT_SUPPORT,
            missing_code_name: "ACL_ERROR_API_NOT_SUPPORT",
        },
        Api::Hccl => Target {
            symbol: hook.symbol(),
            sonames: &["libhccl_plf.so"],
            lib_var: "NPUSHIM_HCCL_LIB",
            explicit: |s| s.hccl_lib.as_deref(),
            missing_code: crate::abi::types::HCCL_E_NOT_SUPPORT,
            missing_code_name: "HCCL_E_NOT_SUPPORT",
        },
    }
}

/// What a call of `hook` returns when its real function cannot be found.
pub fn missing_code(hook: Hook) -> c_int {
    match hook.api() {
        Api::Acl => crate::abi::types::ACL_ERROR_API_NOT_SUPPORT,
        Api::Hccl => crate::abi::types::HCCL_E_NOT_SUPPORT,
    }
}

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

    /// The address, resolving on first use.
    #[inline]
    pub fn get(&self, target: &Target) -> Option<usize> {
        match self.addr.load(Ordering::Acquire) {
            UNRESOLVED => self.resolve(target),
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
    fn resolve(&self, target: &Target) -> Option<usize> {
        crate::boundary::debug_panic(crate::boundary::Stage::Lookup);
        let Some(search) = configured() else {
            // Before initialisation the explicit library and install roots are not known
            // yet: a hit is as good as any, but a miss is not final (and not reported).
            let (found, _) = lookup(target, &Search::default());
            return found;
        };
        let (found, tried) = lookup(target, search);
        // Racing resolvers find the same answer; the first store wins and all agree.
        let stored = match self.addr.compare_exchange(
            UNRESOLVED,
            found.unwrap_or(MISSING),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => found,
            Err(MISSING) => None,
            Err(addr) => Some(addr),
        };
        if stored.is_none() && !self.reported.swap(true, Ordering::Relaxed) {
            crate::diag::warn!(
                "cannot find the real {} (tried {}; set {} to the library that has it); its calls return {} ({})",
                target.symbol,
                tried.join(", "),
                target.lib_var,
                target.missing_code_name,
                target.missing_code
            );
        }
        stored
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
    // NUL-terminated string. glibc's own dlsym, called from this library (so RTLD_NEXT means
    // "after the shim"), never the shim's `dlsym` export.
    unsafe { crate::dl::dlsym(handle, symbol.as_ptr()) as usize }
}

fn dlopen(path: &str, flags: c_int) -> *mut c_void {
    let Ok(path) = CString::new(path) else {
        return std::ptr::null_mut();
    };
    // SAFETY: `path` is a valid NUL-terminated string; the handle is deliberately never
    // closed (the function pointer must stay valid for the life of the process).
    unsafe { libc::dlopen(path.as_ptr(), flags) }
}

/// The search inputs, published once by [`configure`] (a leaked box: fork-safe).
static SEARCH: AtomicPtr<Search> = AtomicPtr::new(std::ptr::null_mut());

/// Hands the search inputs over (once, at initialisation; later calls are ignored).
pub fn configure(search: Search) {
    let boxed = Box::into_raw(Box::new(search));
    if SEARCH
        .compare_exchange(
            std::ptr::null_mut(),
            boxed,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // SAFETY: `boxed` was not published; it is still ours to free.
        drop(unsafe { Box::from_raw(boxed) });
    }
}

fn configured() -> Option<&'static Search> {
    // SAFETY: non-null values are leaked boxes, published once and never freed or changed.
    unsafe { SEARCH.load(Ordering::Acquire).as_ref() }
}

/// What `dladdr` says of `addr` (None if it lies in no loaded object).
fn dladdr(addr: usize) -> Option<libc::Dl_info> {
    // SAFETY: an all-zero `Dl_info` is valid (null pointers); dladdr only writes to it.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr accepts any address and reports failure with 0.
    (unsafe { libc::dladdr(addr as *const c_void, &mut info) } != 0).then_some(info)
}

/// The base address of the object that holds `addr` (0 if none).
fn object_of(addr: usize) -> usize {
    dladdr(addr).map_or(0, |info| info.dli_fbase as usize)
}

/// The path of the object that holds `addr`, for messages.
pub fn object_name(addr: usize) -> String {
    match dladdr(addr) {
        Some(info) if !info.dli_fname.is_null() => {
            // SAFETY: dladdr's file name is a NUL-terminated string owned by the loader,
            // valid while the object stays loaded (it is copied at once).
            unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }
                .to_string_lossy()
                .into_owned()
        }
        _ => format!("{addr:#x}"),
    }
}

/// True if `addr` lies in this library (one of our own exports): never a real function.
pub fn is_ours(addr: usize) -> bool {
    let here = object_of(is_ours as fn(usize) -> bool as usize);
    here != 0 && object_of(addr) == here
}

/// Runs the SPEC §3 search order; returns the address and the places tried (for the message).
pub fn lookup(target: &Target, search: &Search) -> (Option<usize>, Vec<String>) {
    let Ok(symbol) = CString::new(target.symbol) else {
        return (None, Vec::new());
    };
    let mut tried = vec!["RTLD_NEXT".to_string()];
    let accept = |addr: usize| addr != 0 && !is_ours(addr);

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

/// One slot per hook, in table order.
static SLOTS: [Slot; Hook::ALL.len()] = [const { Slot::new() }; Hook::ALL.len()];

/// The address of the real function of `hook`, resolving it on first use; `None` if it
/// cannot be found.
#[inline]
pub fn resolve(hook: Hook) -> Option<usize> {
    let slot = &SLOTS[hook as usize];
    // Resolved already (every call after the first): no need to describe the target.
    slot.if_resolved().or_else(|| slot.get(&target(hook)))
}

/// The address of the real function of `hook` if it was already resolved (never looks it
/// up: for the fast paths).
#[inline(always)]
pub fn if_resolved(hook: Hook) -> Option<usize> {
    SLOTS[hook as usize].if_resolved()
}

/// Runtime functions the shim calls itself (never hooked), found like the hooked ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Helper {
    /// `aclError aclrtGetDevice(int32_t *devId)`.
    GetDevice = 0,
    /// `aclError aclrtPointerGetAttributes(const void *ptr, aclrtPtrAttributes *attributes)`.
    PointerGetAttributes = 1,
    /// `aclError aclrtCreateEventWithFlag(aclrtEvent *event, uint32_t flag)`.
    CreateEventWithFlag = 2,
    /// `aclError aclrtRecordEvent(aclrtEvent event, aclrtStream stream)`.
    RecordEvent = 3,
    /// `aclError aclrtQueryEventStatus(aclrtEvent event, aclrtEventRecordedStatus *status)`.
    QueryEventStatus = 4,
    /// `aclError aclrtEventGetTimestamp(aclrtEvent event, uint64_t *timestamp)`.
    EventGetTimestamp = 5,
    /// `aclError aclrtCreateStream(aclrtStream *stream)`.
    CreateStream = 6,
    /// `aclError aclrtGetCurrentContext(aclrtContext *context)`.
    GetCurrentContext = 7,
    /// `aclError aclrtSetCurrentContext(aclrtContext context)`.
    SetCurrentContext = 8,
}

impl Helper {
    /// The runtime's name of the function.
    pub const fn symbol(self) -> &'static str {
        match self {
            Helper::GetDevice => "aclrtGetDevice",
            Helper::PointerGetAttributes => "aclrtPointerGetAttributes",
            Helper::CreateEventWithFlag => "aclrtCreateEventWithFlag",
            Helper::RecordEvent => "aclrtRecordEvent",
            Helper::QueryEventStatus => "aclrtQueryEventStatus",
            Helper::EventGetTimestamp => "aclrtEventGetTimestamp",
            Helper::CreateStream => "aclrtCreateStream",
            Helper::GetCurrentContext => "aclrtGetCurrentContext",
            Helper::SetCurrentContext => "aclrtSetCurrentContext",
        }
    }
}

static HELPERS: [Slot; 9] = [const { Slot::new() }; 9];

/// The calling thread's current device as the runtime's `aclrtGetDevice` says it, or `None`
/// when the function is missing or fails.
#[inline]
pub fn current_device() -> Option<i32> {
    let addr = helper(Helper::GetDevice)?;
    // SAFETY: the runtime's aclrtGetDevice has exactly this C signature.
    let get = unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(*mut i32) -> i32>(addr) };
    let mut id = -1i32;
    // SAFETY: writes one int32_t into `id`.
    (unsafe { get(&mut id) } == 0).then_some(id)
}

/// The address of a runtime function the shim calls itself, or `None` (never reported:
/// what needs it simply does without).
pub fn helper(which: Helper) -> Option<usize> {
    let slot = &HELPERS[which as usize];
    match slot.addr.load(Ordering::Acquire) {
        UNRESOLVED => {}
        MISSING => return None,
        addr => return Some(addr),
    }
    let symbol = which.symbol();
    let mut target = target(Hook::AclrtMemcpyAsync);
    target.symbol = symbol;
    let search = configured()?;
    let (found, _) = lookup(&target, search);
    let value = found.unwrap_or(MISSING);
    let _ = slot
        .addr
        .compare_exchange(UNRESOLVED, value, Ordering::AcqRel, Ordering::Acquire);
    found
}
