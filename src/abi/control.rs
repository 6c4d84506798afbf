//! The `npushim_*` C API (`include/npushim.h`): what a program or test harness may ask of
//! the shim at run time.
//!
//! Programs should resolve these with `dlsym(RTLD_DEFAULT, "npushim_faults_set")` so the
//! same binary also runs without the shim. Every function is safe to call from any thread,
//! never panics across the boundary and never aborts.

use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char, c_int};

use crate::boundary::guarded;
use crate::runtime;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = text);
}

/// The shim's version, e.g. `"0.1.0"` (a static string).
#[unsafe(no_mangle)]
pub extern "C" fn npushim_version() -> *const c_char {
    const VERSION: &CStr =
        match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
            Ok(v) => v,
            Err(_) => c"unknown",
        };
    VERSION.as_ptr()
}

/// Replaces every fault rule at once with `spec` (SPEC §6 grammar); NULL or `""` clears
/// them. Returns 0 on success; on error returns -1, keeps the previous rules, and
/// `npushim_last_error()` says what is wrong (with the column).
///
/// # Safety
/// `spec` is NULL or a valid NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn npushim_faults_set(spec: *const c_char) -> c_int {
    let text = if spec.is_null() {
        String::new()
    } else {
        // SAFETY: the caller passes a valid NUL-terminated string (documented contract).
        match unsafe { CStr::from_ptr(spec) }.to_str() {
            Ok(s) => s.to_owned(),
            Err(e) => {
                set_last_error(&format!(
                    "the spec is not valid UTF-8 (at byte {})",
                    e.valid_up_to()
                ));
                return -1;
            }
        }
    };
    let result = guarded(|| {
        runtime::get();
        match text.parse::<crate::fault::FaultSpec>() {
            Ok(parsed) => {
                runtime::set_faults(Some(parsed));
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    });
    match result {
        Some(Ok(())) => 0,
        Some(Err(message)) => {
            set_last_error(&message);
            -1
        }
        None => {
            set_last_error("internal error while parsing the spec; previous rules kept");
            -1
        }
    }
}

/// The message of the calling thread's last failed `npushim_*` call (empty if none). The
/// pointer stays valid until the thread's next failing call.
#[unsafe(no_mangle)]
pub extern "C" fn npushim_last_error() -> *const c_char {
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

/// The seed of the shim's fault PRNG in this process (replay a run with `NPUSHIM_SEED`).
#[unsafe(no_mangle)]
pub extern "C" fn npushim_seed() -> u64 {
    let _ = guarded(runtime::get);
    runtime::seed()
}

/// Writes every span recorded so far to the trace file now (waits at most 1 s).
/// Returns 0, or -1 if tracing is off.
#[unsafe(no_mangle)]
pub extern "C" fn npushim_flush() -> c_int {
    match guarded(|| {
        runtime::get();
        if crate::trace::is_running() {
            crate::trace::writer::flush(std::time::Duration::from_secs(1));
            true
        } else {
            false
        }
    }) {
        Some(true) => 0,
        _ => -1,
    }
}
