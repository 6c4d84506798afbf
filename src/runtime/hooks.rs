//! The process hooks: the constructor (libc-level registration only, before `main`), the
//! exit handler (final flush and summaries) and the fork handlers, each of which hands every
//! part of the runtime its own share of the work.

use super::{faults, lineage, state, stats};
use crate::trace;

extern "C" fn on_exit() {
    if state::runtime_ptr().is_none() || state::pass_through() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        let leaks = crate::memmap::leaks();
        // Written whenever the map was on at exit, an empty list included: a reader can
        // then tell "nothing leaked" from "not recorded" (map off, older shim, no exit).
        if crate::memmap::is_enabled() {
            trace::exit_metadata(
                "npushim_leaks",
                stats::leaks_json(&leaks, crate::memmap::untracked()),
            );
        }
        crate::device::finish();
        trace::finish();
        stats::summarise();
        stats::report_leaks(&leaks);
    });
}

extern "C" fn fork_prepare() {
    lineage::fork_prepare();
    crate::memmap::fork_prepare();
}

extern "C" fn fork_parent() {
    crate::memmap::fork_parent();
}

extern "C" fn fork_child() {
    lineage::fork_child();
    faults::fork_child();
    state::fork_child();
    stats::fork_child();
    crate::memmap::fork_child();
    crate::device::fork_child();
    trace::fork_child();
}

/// Runs when the library is loaded, before `main`: libc-level registration only.
#[ctor::ctor(unsafe)]
fn on_load() {
    crate::boundary::read_debug_panic();
    // SAFETY: registering plain `extern "C"` functions without captured state.
    unsafe {
        libc::atexit(on_exit);
        libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
    }
    trace::ring::create_thread_key();
}
