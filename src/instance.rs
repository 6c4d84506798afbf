//! One active copy of the library per process (SPEC §11): an installed copy plus the one
//! `npushim run` preloads would otherwise both intercept, and every call would be checked,
//! faulted and traced twice.
//!
//! Every copy exports `npushim_instance_claim`; each asks the one `dlsym(RTLD_DEFAULT)`
//! finds first, so all copies ask the same one, and the first to initialise wins. Owns one
//! atomic word; imports only the resolver's object naming.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The copy of the library that is active in the process: the address of its [`MARKER`]
/// (0 until one claims it). Only the copy that `dlsym(RTLD_DEFAULT)` finds first is asked,
/// so every copy in the process asks the same one.
static ACTIVE_INSTANCE: AtomicUsize = AtomicUsize::new(0);
/// One byte whose address names this copy of the library.
static MARKER: u8 = 0;

/// Claims the process for the copy of npushim named by `candidate` unless one already did;
/// returns the copy that holds it. Internal: lets two copies of the library in one process
/// (an installed one plus `npushim run`'s) agree that only one of them intercepts.
#[unsafe(no_mangle)]
pub extern "C" fn npushim_instance_claim(candidate: usize) -> usize {
    match ACTIVE_INSTANCE.compare_exchange(0, candidate, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => candidate,
        Err(holder) => holder,
    }
}

/// This copy of the library, for messages.
pub fn this_library() -> String {
    crate::real::object_name(&MARKER as *const u8 as usize)
}

/// The file of another copy of npushim that is already active in this process, if any
/// (claiming the process for this copy otherwise).
pub fn another_instance() -> Option<String> {
    type Claim = extern "C" fn(usize) -> usize;
    let me = &MARKER as *const u8 as usize;
    // SAFETY: a lookup of a NUL-terminated name in the global scope; no other precondition.
    let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"npushim_instance_claim".as_ptr()) };
    let claim: Claim = if found.is_null() {
        npushim_instance_claim
    } else {
        // SAFETY: every copy of npushim exports this name with exactly this signature.
        unsafe { std::mem::transmute::<*mut libc::c_void, Claim>(found) }
    };
    let holder = claim(me);
    (holder != me).then(|| crate::real::object_name(holder))
}
