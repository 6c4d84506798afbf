//! Questions the shim asks the vendor runtime itself, through its resolved helpers: where
//! a pointer lives and which device the calling thread uses. Never on the hot path of a
//! call the memory map already knows.

/// `aclrtPtrAttributes` (SPEC §2.3): `location {uint32_t id; aclrtMemLocationType type;}`,
/// `uint32_t pageSize`, `uint32_t rsv[4]`.
#[repr(C)]
#[derive(Default)]
struct PtrAttributes {
    location_id: u32,
    location_type: u32,
    page_size: u32,
    reserved: [u32; 4],
}

/// What the runtime says of a host pointer the memory map does not know
/// (`aclrtPointerGetAttributes`), or `None` when it cannot say.
pub(super) fn runtime_location(ptr: u64) -> Option<crate::memmap::MemKind> {
    use crate::memmap::MemKind;
    let addr = crate::real::helper(crate::real::Helper::PointerGetAttributes)?;
    type GetAttributes = unsafe extern "C" fn(*const libc::c_void, *mut PtrAttributes) -> i32;
    // SAFETY: the runtime's aclrtPointerGetAttributes has exactly this C signature (SPEC
    // §2.3); it writes one aclrtPtrAttributes, which `attributes` is.
    let get = unsafe { std::mem::transmute::<usize, GetAttributes>(addr) };
    let mut attributes = PtrAttributes::default();
    // SAFETY: a query of the runtime: it only reads the pointer's value and writes into
    // `attributes`.
    if unsafe { get(ptr as *const libc::c_void, &mut attributes) } != 0 {
        return None;
    }
    match attributes.location_type {
        0 => Some(MemKind::Registered),
        1 => Some(MemKind::Device),
        2 => Some(MemKind::Pageable),
        _ => None,
    }
}

/// The calling thread's current device, for the memory map (0 if the runtime cannot say).
pub fn current_device() -> u32 {
    crate::real::current_device()
        .and_then(|id| u32::try_from(id).ok())
        .unwrap_or(0)
}
