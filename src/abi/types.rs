//! Vendor types at the C boundary (SPEC §3): raw integers in, typed values out.
//!
//! Every enum the vendor passes as `int` is decoded here with an `Unknown(i32)` arm, so a
//! value outside the documented range is data, never undefined behaviour. This module knows
//! nothing of globals, the environment or the pipeline.

use std::ffi::c_int;

/// `aclError`: `int`, 0 on success.
pub type AclError = c_int;
/// `HcclResult`: a C enum, `int` in the ABI.
pub type HcclResult = c_int;

// The codes themselves are declared once, in `codes.rs`, which the command-line tool
// compiles too.
pub use super::codes::*;

/// Which of the two hooked APIs a call belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Api {
    /// `aclrtMemcpyAsync` (AscendCL runtime).
    Acl = 0,
    /// `HcclMemcpyAsync` (HCCL dispatcher).
    Hccl = 1,
}

impl Api {
    /// The exported symbol name, also the trace event name.
    pub const fn symbol(self) -> &'static str {
        match self {
            Api::Acl => "aclrtMemcpyAsync",
            Api::Hccl => "HcclMemcpyAsync",
        }
    }

    /// The trace category.
    pub const fn category(self) -> &'static str {
        match self {
            Api::Acl => "acl",
            Api::Hccl => "hccl",
        }
    }
}

/// Names of `aclrtMemcpyKind` 0–7, without the `ACL_MEMCPY_` prefix.
pub const ACL_KIND_NAMES: &[&str] = &[
    "HOST_TO_HOST",
    "HOST_TO_DEVICE",
    "DEVICE_TO_HOST",
    "DEVICE_TO_DEVICE",
    "DEFAULT",
    "HOST_TO_BUF_TO_DEVICE",
    "INNER_DEVICE_TO_DEVICE",
    "INTER_DEVICE_TO_DEVICE",
];

/// Names of `HcclRtMemcpyKind` 0–5 (4 is *not* DEFAULT here).
pub const HCCL_KIND_NAMES: &[&str] = &[
    "HOST_TO_HOST",
    "HOST_TO_DEVICE",
    "DEVICE_TO_HOST",
    "DEVICE_TO_DEVICE",
    "ADDR_DEVICE_TO_DEVICE",
    "RESERVED",
];

/// A copy kind as the program passed it: its documented name, or the raw value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Named(&'static str),
    Unknown(i32),
}

/// Decodes a raw kind of `api`.
pub fn decode_kind(api: Api, raw: i32) -> Kind {
    let names = match api {
        Api::Acl => ACL_KIND_NAMES,
        Api::Hccl => HCCL_KIND_NAMES,
    };
    match usize::try_from(raw).ok().and_then(|i| names.get(i)) {
        Some(name) => Kind::Named(name),
        None => Kind::Unknown(raw),
    }
}

/// Looks up a kind by name (with or without its vendor prefix) for `api`.
pub fn kind_by_name(api: Api, name: &str) -> Option<i32> {
    let bare = name
        .strip_prefix("ACL_MEMCPY_")
        .or_else(|| name.strip_prefix("HCCL_RT_MEMCPY_KIND_"))
        .unwrap_or(name);
    let names = match api {
        Api::Acl => ACL_KIND_NAMES,
        Api::Hccl => HCCL_KIND_NAMES,
    };
    names.iter().position(|n| *n == bare).map(|i| i as i32)
}

/// Names of `hccl::LinkType` 0–7; 255 is `RESERVED`.
pub const LINK_NAMES: &[&str] = &[
    "ONCHIP",
    "HCCS",
    "PCIE",
    "ROCE",
    "SIO",
    "HCCS_SW",
    "STANDARD_ROCE",
    "UB",
];

/// Decodes an `hccl::LinkType`.
pub fn decode_link(raw: i32) -> Kind {
    if raw == 255 {
        return Kind::Named("RESERVED");
    }
    match usize::try_from(raw).ok().and_then(|i| LINK_NAMES.get(i)) {
        Some(name) => Kind::Named(name),
        None => Kind::Unknown(raw),
    }
}

/// Looks up a link type by name (with or without the `LINK_` prefix).
pub fn link_by_name(name: &str) -> Option<i32> {
    let bare = name.strip_prefix("LINK_").unwrap_or(name);
    if bare == "RESERVED" {
        return Some(255);
    }
    LINK_NAMES.iter().position(|n| *n == bare).map(|i| i as i32)
}

/// What a hooked function does, which decides the checks that apply and how its span reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// A copy that returns once it is submitted (unless pageable memory makes it wait).
    CopyAsync,
    /// A copy that returns once it is done.
    CopySync,
    /// A 2D copy (`dest_max` is dpitch, `spitch`, `count` is width, `height`).
    Copy2dAsync,
    Copy2dSync,
    /// A memset on a stream (`dst` is devPtr, `dest_max` maxCount, `value`).
    SetAsync,
    /// The host waits (for a stream, an event or the device).
    Wait,
    /// Device memory allocated (`count` is the size; the pointer is `*out` after success).
    AllocDevice,
    /// Pinned host memory allocated.
    AllocHost,
    /// Memory given back (`dst` is the pointer).
    Free,
    /// A host range registered with the runtime (`dst`, `count`).
    Register,
    /// A registration removed (`dst`).
    Unregister,
}

impl Class {
    /// Copies and sets: calls whose arguments name memory to read or write.
    #[inline(always)]
    pub const fn moves_memory(self) -> bool {
        matches!(
            self,
            Class::CopyAsync
                | Class::CopySync
                | Class::Copy2dAsync
                | Class::Copy2dSync
                | Class::SetAsync
        )
    }

    /// Calls that change what memory the program holds (the memory map's writers).
    #[inline(always)]
    pub const fn manages_memory(self) -> bool {
        matches!(
            self,
            Class::AllocDevice
                | Class::AllocHost
                | Class::Free
                | Class::Register
                | Class::Unregister
        )
    }

    /// Calls that give the program memory or register it (the map learns of them after
    /// the real call).
    pub const fn acquires_memory(self) -> bool {
        matches!(
            self,
            Class::AllocDevice | Class::AllocHost | Class::Register
        )
    }

    /// Calls that give memory back or end a registration (the map closes their entry
    /// before the real call).
    pub const fn releases_memory(self) -> bool {
        matches!(self, Class::Free | Class::Unregister)
    }

    /// Returns before the work is done (subject to `h2h` and `pageable`).
    #[inline(always)]
    pub const fn is_async(self) -> bool {
        matches!(
            self,
            Class::CopyAsync | Class::Copy2dAsync | Class::SetAsync
        )
    }

    /// A two-dimensional copy.
    #[inline(always)]
    pub const fn is_2d(self) -> bool {
        matches!(self, Class::Copy2dAsync | Class::Copy2dSync)
    }
}

macro_rules! define_hooks {
    ($(
        $(#[$doc:meta])*
        $hook:ident = $name:ident ( $($arg:ident : $ty:ty),* ) : $api:ident, $class:ident,
        |$c:ident| $decode:block;
    )*) => {
        /// Every hooked function (the table is `abi/hooks.rs`).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Hook {
            $($(#[$doc])* $hook,)*
        }

        impl Hook {
            /// Every hook, in table order.
            pub const ALL: &'static [Hook] = &[$(Hook::$hook,)*];

            /// The exported symbol, also the span's name.
            pub const fn symbol(self) -> &'static str {
                match self {
                    $(Hook::$hook => stringify!($name),)*
                }
            }

            /// Which library and enum family it belongs to.
            #[inline(always)]
            pub const fn api(self) -> Api {
                match self {
                    $(Hook::$hook => Api::$api,)*
                }
            }

            /// Whether the real function may call other hooked functions through the PLT
            /// (HCCL copies issue `aclrtMemcpyAsync`; a synchronous copy may be built on an
            /// asynchronous one): calls made while it runs are nested (depth + 1). Calls
            /// made while any other hooked function runs can only come from a signal
            /// handler that interrupted it, and are not nested in it.
            #[inline(always)]
            pub const fn nests(self) -> bool {
                matches!(self.api(), Api::Hccl)
                    || matches!(self.class(), Class::CopySync | Class::Copy2dSync)
            }

            #[inline(always)]
            pub const fn class(self) -> Class {
                match self {
                    $(Hook::$hook => Class::$class,)*
                }
            }

            /// The C parameter list, as the table spells it in Rust (`*mut c_void, usize`).
            pub const fn rust_params(self) -> &'static str {
                match self {
                    $(Hook::$hook => stringify!($($ty),*),)*
                }
            }

            /// The hook at `index` in table order.
            pub fn from_index(index: u8) -> Option<Hook> {
                Hook::ALL.get(index as usize).copied()
            }

            /// Looks a hook up by its symbol.
            pub fn by_symbol(name: &str) -> Option<Hook> {
                Hook::ALL.iter().copied().find(|h| h.symbol() == name)
            }
        }
    };
}

super::hooks::for_each_hook!(define_hooks);

/// A parameter list of [`Hook::rust_params`] in C (`void *, size_t`), for ABI checks.
pub fn c_params(rust: &str) -> String {
    let types: Vec<String> = rust
        .split(',')
        .map(|t| t.split_whitespace().collect::<String>())
        .filter(|t| !t.is_empty())
        .map(|t| {
            match t.as_str() {
                "*mutc_void" => "void *",
                "*mut*mutc_void" => "void **",
                "*constc_void" => "const void *",
                "usize" => "size_t",
                "u64" => "uint64_t",
                "u32" => "uint32_t",
                "i32" => "int32_t",
                "c_int" => "int",
                other => other,
            }
            .to_string()
        })
        .collect();
    if types.is_empty() {
        "void".to_string()
    } else {
        types.join(", ")
    }
}

/// The arguments of one intercepted call, as plain integers.
///
/// Pointers are kept as addresses: the shim never dereferences what the program passes. The
/// fields a hook does not have stay 0; their meaning per class is documented below.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    pub hook: Hook,
    pub api: Api,
    /// dst (copies), devPtr (sets).
    pub dst: usize,
    pub src: usize,
    /// destMax; dpitch for 2D copies; maxCount for sets.
    pub dest_max: u64,
    /// count; width for 2D copies.
    pub count: u64,
    /// `aclrtMemcpyKind` or `HcclRtMemcpyKind`, raw.
    pub kind: i32,
    /// `aclrtStream`, or for HCCL the address of the `hccl::Stream` object.
    pub stream: usize,
    /// HCCL only (0 for ACL).
    pub dispatcher: usize,
    /// HCCL only (0 for ACL).
    pub remote_rank: u32,
    /// HCCL only (0 for ACL): `hccl::LinkType`, raw.
    pub link: i32,
    /// 2D copies: spitch.
    pub spitch: u64,
    /// 2D copies: height.
    pub height: u64,
    /// Sets: the value; timed waits: the timeout in ms.
    pub value: i32,
    /// Event waits: the `aclrtEvent`.
    pub event: usize,
    /// `HcclD2DMemcpyAsync`: a `DeviceMem` reference was NULL.
    pub refs_null: bool,
    /// Allocations: the address of the out-pointer the result is written to.
    pub out: usize,
    /// 0 for a call made by the program, 1 for one made inside another intercepted call.
    pub depth: u32,
}

impl Call {
    /// A blank call of the seed function of `api`, for building in tests.
    pub const fn new(api: Api) -> Self {
        Call::of(match api {
            Api::Acl => Hook::AclrtMemcpyAsync,
            Api::Hccl => Hook::HcclMemcpyAsync,
        })
    }

    /// A blank call of `hook`.
    pub const fn of(hook: Hook) -> Self {
        Call {
            hook,
            api: hook.api(),
            dst: 0,
            src: 0,
            dest_max: 0,
            count: 0,
            kind: 0,
            stream: 0,
            dispatcher: 0,
            remote_rank: 0,
            link: 0,
            spitch: 0,
            height: 0,
            value: 0,
            event: 0,
            refs_null: false,
            out: 0,
            depth: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_decode_with_unknown_arm() {
        assert_eq!(decode_kind(Api::Acl, 1), Kind::Named("HOST_TO_DEVICE"));
        assert_eq!(decode_kind(Api::Acl, 4), Kind::Named("DEFAULT"));
        assert_eq!(
            decode_kind(Api::Hccl, 4),
            Kind::Named("ADDR_DEVICE_TO_DEVICE")
        );
        assert_eq!(decode_kind(Api::Acl, 8), Kind::Unknown(8));
        assert_eq!(decode_kind(Api::Acl, -1), Kind::Unknown(-1));
        assert_eq!(decode_kind(Api::Hccl, 6), Kind::Unknown(6));
        assert_eq!(decode_link(255), Kind::Named("RESERVED"));
        assert_eq!(decode_link(8), Kind::Unknown(8));
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(code_by_name("ACL_ERROR_RT_DEVICE_MEM_ERROR"), Some(507_053));
        assert_eq!(code_by_name("HCCL_E_RUNTIME"), Some(15));
        assert_eq!(code_by_name("HCCL_E_SUSPENDING"), Some(22));
        assert_eq!(code_by_name("nope"), None);
        assert_eq!(kind_by_name(Api::Acl, "ACL_MEMCPY_DEVICE_TO_HOST"), Some(2));
        assert_eq!(kind_by_name(Api::Hccl, "ADDR_DEVICE_TO_DEVICE"), Some(4));
        assert_eq!(link_by_name("LINK_HCCS"), Some(1));
        assert_eq!(link_by_name("RESERVED"), Some(255));
    }
}
