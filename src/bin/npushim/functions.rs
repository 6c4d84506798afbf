//! The functions whose spans the shim writes, as the trace format documents them
//! (`docs/trace-format.md`): each name with what it does, in the order reports list them.
//!
//! The tool reads traces through their file format, not through the library's code, so this
//! list is its own; a test (`tests/report.rs`) checks it against the library's hook table, so
//! a function hooked there cannot be missing here. This file only names and classifies: it
//! reads no trace and prints nothing.

/// What a traced function does, as far as a report is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// A copy that returns once it is submitted: its host time says nothing of the transfer.
    CopyAsync,
    /// A copy that returns once it is done: its host time includes the transfer.
    CopySync,
    /// A memset on a stream (returns once submitted).
    SetAsync,
    /// The host waits for a stream, an event or the device.
    Wait,
    /// Memory is allocated (device or pinned host).
    Alloc,
    /// Memory is freed.
    Free,
    /// A host range is registered (pinned) with the runtime.
    Register,
    /// A host registration is removed.
    Unregister,
    /// A span the trace format does not describe (another tool's, a newer shim's).
    Other,
}

impl Class {
    /// The name used in the report's JSON (`"copy-async"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Class::CopyAsync => "copy-async",
            Class::CopySync => "copy-sync",
            Class::SetAsync => "set-async",
            Class::Wait => "wait",
            Class::Alloc => "alloc",
            Class::Free => "free",
            Class::Register => "register",
            Class::Unregister => "unregister",
            Class::Other => "other",
        }
    }

    /// Copies and sets: calls that move (or write) bytes.
    pub fn moves_bytes(self) -> bool {
        matches!(self, Class::CopyAsync | Class::CopySync | Class::SetAsync)
    }
}

/// Every function the shim traces (and the allocation functions of SPEC §2.3, whose spans
/// are specified), in report order.
pub const FUNCTIONS: &[(&str, Class)] = &[
    ("aclrtMemcpyAsync", Class::CopyAsync),
    ("HcclMemcpyAsync", Class::CopyAsync),
    ("aclrtMemcpy", Class::CopySync),
    ("aclrtMemcpyAsyncWithCondition", Class::CopyAsync),
    ("aclrtMemcpy2d", Class::CopySync),
    ("aclrtMemcpy2dAsync", Class::CopyAsync),
    ("aclrtMemsetAsync", Class::SetAsync),
    ("HcclD2DMemcpyAsync", Class::CopyAsync),
    ("aclrtSynchronizeStream", Class::Wait),
    ("aclrtSynchronizeStreamWithTimeout", Class::Wait),
    ("aclrtSynchronizeEvent", Class::Wait),
    ("aclrtSynchronizeDevice", Class::Wait),
    ("aclrtMalloc", Class::Alloc),
    ("aclrtMallocAlign32", Class::Alloc),
    ("aclrtMallocCached", Class::Alloc),
    ("aclrtMallocWithCfg", Class::Alloc),
    ("aclrtMallocHost", Class::Alloc),
    ("aclrtMallocHostWithCfg", Class::Alloc),
    ("aclrtFree", Class::Free),
    ("aclrtFreeHost", Class::Free),
    ("aclrtHostRegister", Class::Register),
    ("aclrtHostRegisterV2", Class::Register),
    ("aclrtHostUnregister", Class::Unregister),
];

/// A traced function's position in [`FUNCTIONS`] and its class; `None` for any other name.
pub fn lookup(name: &str) -> Option<(usize, Class)> {
    FUNCTIONS
        .iter()
        .position(|(n, _)| *n == name)
        .map(|i| (i, FUNCTIONS[i].1))
}

/// The kind a function implies when its span has no `kind` argument: `HcclD2DMemcpyAsync`
/// copies device memory to device memory by definition.
pub fn implied_kind(name: &str) -> Option<&'static str> {
    (name == "HcclD2DMemcpyAsync").then_some("DEVICE_TO_DEVICE")
}

/// Whether a span is one the shim's device timeline writes (`memcpy HOST_TO_DEVICE` on a
/// `device <id>` / `stream <handle>` track): its duration is device time, not a host call.
pub fn is_device_span(name: &str) -> bool {
    name.starts_with("memcpy ") || name == "memset" || name.starts_with("memset ")
}
