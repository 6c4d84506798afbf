//! The runtime's return codes (SPEC §3): every `aclError` and `HcclResult` value the shim
//! returns, checks for or names, declared once with its name.
//!
//! The one table of codes for the library and the command-line tool: the library reaches it
//! as `abi::codes` (re-exported by `abi::types`), the tool compiles this same file as its own
//! module (it reads traces through their file format and does not link the library). So this
//! file imports nothing: plain integers and names, no crate paths.

/// Declares each code as a `pub const` and lists every one with its name, in one place.
macro_rules! codes {
    ($(#[$table_meta:meta])* $table:ident { $( $name:ident = $value:expr ),+ $(,)? }) => {
        $(pub const $name: i32 = $value;)+
        $(#[$table_meta])*
        pub const $table: &[(&str, i32)] = &[$((stringify!($name), $name)),+];
    };
}

codes! {
    /// Every `aclError` of SPEC §3 with its value.
    ACL_ERROR_NAMES {
        ACL_SUCCESS = 0,
        ACL_ERROR_INVALID_PARAM = 100_000,
        ACL_ERROR_UNINITIALIZE = 100_001,
        ACL_ERROR_API_NOT_SUPPORT = 200_001,
        ACL_ERROR_RT_PARAM_INVALID = 107_000,
        ACL_ERROR_RT_CONTEXT_NULL = 107_002,
        ACL_ERROR_RT_STREAM_CONTEXT = 107_003,
        ACL_ERROR_RT_ADDR_UNALIGNED = 107_008,
        ACL_ERROR_RT_FEATURE_NOT_SUPPORT = 207_000,
        ACL_ERROR_RT_MEMORY_ALLOCATION = 207_001,
        ACL_ERROR_RT_INTERNAL_ERROR = 507_000,
        ACL_ERROR_RT_SYS_DMA = 507_013,
        ACL_ERROR_RT_STREAM_SYNC_TIMEOUT = 507_046,
        ACL_ERROR_RT_DEVICE_MEM_ERROR = 507_053,
        ACL_ERROR_RT_DRV_INTERNAL_ERROR = 507_899,
    }
}

codes! {
    /// Every `HcclResult` of SPEC §3 with its value (the C enum's: 0, 1, 2, …).
    HCCL_RESULTS {
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
    }
}

fn name_in(table: &[(&'static str, i32)], code: i64) -> Option<&'static str> {
    table
        .iter()
        .find(|&&(_, value)| i64::from(value) == code)
        .map(|&(name, _)| name)
}

/// The `aclError` name of `code`, if it is one of SPEC §3's.
pub fn acl_name(code: i64) -> Option<&'static str> {
    name_in(ACL_ERROR_NAMES, code)
}

/// The `HcclResult` name of `code`, if it is one of SPEC §3's.
pub fn hccl_name(code: i64) -> Option<&'static str> {
    name_in(HCCL_RESULTS, code)
}

/// Looks up a code by its SPEC §3 name (`ACL_…` or `HCCL_…`).
pub fn code_by_name(name: &str) -> Option<i32> {
    ACL_ERROR_NAMES
        .iter()
        .chain(HCCL_RESULTS)
        .find(|(n, _)| *n == name)
        .map(|&(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_both_ways() {
        assert_eq!(acl_name(507053), Some("ACL_ERROR_RT_DEVICE_MEM_ERROR"));
        assert_eq!(acl_name(1), None);
        assert_eq!(hccl_name(15), Some("HCCL_E_RUNTIME"));
        assert_eq!(hccl_name(22), Some("HCCL_E_SUSPENDING"));
        assert_eq!(hccl_name(23), None);
        assert_eq!(hccl_name(-1), None);
        assert_eq!(code_by_name("ACL_ERROR_RT_DEVICE_MEM_ERROR"), Some(507_053));
        assert_eq!(code_by_name("HCCL_E_RUNTIME"), Some(HCCL_E_RUNTIME));
        assert_eq!(code_by_name("nope"), None);
        // The HCCL values are the C enum's: consecutive from 0.
        for (i, &(name, value)) in HCCL_RESULTS.iter().enumerate() {
            assert_eq!(value as usize, i, "{name}");
            assert_eq!(hccl_name(i as i64), Some(name));
        }
        for &(name, value) in ACL_ERROR_NAMES {
            assert_eq!(code_by_name(name), Some(value));
        }
    }
}
