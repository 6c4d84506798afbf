//! Names of the runtime's return codes (SPEC §3): `aclError` values for `aclrtMemcpyAsync`
//! spans and `HcclResult` values for `HcclMemcpyAsync` spans. Lookup only; unknown codes
//! have no name.

const ACL_CODES: &[(i64, &str)] = &[
    (0, "ACL_SUCCESS"),
    (100000, "ACL_ERROR_INVALID_PARAM"),
    (100001, "ACL_ERROR_UNINITIALIZE"),
    (107000, "ACL_ERROR_RT_PARAM_INVALID"),
    (107002, "ACL_ERROR_RT_CONTEXT_NULL"),
    (107003, "ACL_ERROR_RT_STREAM_CONTEXT"),
    (107008, "ACL_ERROR_RT_ADDR_UNALIGNED"),
    (200001, "ACL_ERROR_API_NOT_SUPPORT"),
    (207000, "ACL_ERROR_RT_FEATURE_NOT_SUPPORT"),
    (207001, "ACL_ERROR_RT_MEMORY_ALLOCATION"),
    (507000, "ACL_ERROR_RT_INTERNAL_ERROR"),
    (507013, "ACL_ERROR_RT_SYS_DMA"),
    (507046, "ACL_ERROR_RT_STREAM_SYNC_TIMEOUT"),
    (507053, "ACL_ERROR_RT_DEVICE_MEM_ERROR"),
    (507899, "ACL_ERROR_RT_DRV_INTERNAL_ERROR"),
];

const HCCL_CODES: &[&str] = &[
    "HCCL_SUCCESS",
    "HCCL_E_PARA",
    "HCCL_E_PTR",
    "HCCL_E_MEMORY",
    "HCCL_E_INTERNAL",
    "HCCL_E_NOT_SUPPORT",
    "HCCL_E_NOT_FOUND",
    "HCCL_E_UNAVAIL",
    "HCCL_E_SYSCALL",
    "HCCL_E_TIMEOUT",
    "HCCL_E_OPEN_FILE_FAILURE",
    "HCCL_E_TCP_CONNECT",
    "HCCL_E_ROCE_CONNECT",
    "HCCL_E_TCP_TRANSFER",
    "HCCL_E_ROCE_TRANSFER",
    "HCCL_E_RUNTIME",
    "HCCL_E_DRV",
    "HCCL_E_PROFILING",
    "HCCL_E_CCE",
    "HCCL_E_NETWORK",
    "HCCL_E_AGAIN",
    "HCCL_E_REMOTE",
    "HCCL_E_SUSPENDING",
];

/// The `aclError` name of `code`, if it is one of SPEC §3's.
pub fn acl_name(code: i64) -> Option<&'static str> {
    ACL_CODES
        .iter()
        .find(|(value, _)| *value == code)
        .map(|(_, name)| *name)
}

/// The `HcclResult` name of `code`.
pub fn hccl_name(code: i64) -> Option<&'static str> {
    usize::try_from(code)
        .ok()
        .and_then(|index| HCCL_CODES.get(index))
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(acl_name(507053), Some("ACL_ERROR_RT_DEVICE_MEM_ERROR"));
        assert_eq!(acl_name(1), None);
        assert_eq!(hccl_name(15), Some("HCCL_E_RUNTIME"));
        assert_eq!(hccl_name(22), Some("HCCL_E_SUSPENDING"));
        assert_eq!(hccl_name(23), None);
        assert_eq!(hccl_name(-1), None);
    }
}
