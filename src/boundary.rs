//! The boundary between the host program and the shim's own code (SPEC §11).
//!
//! Everything the shim does for a call, apart from forwarding to the real function and a
//! `delay` fault's sleep, runs inside [`guarded`]: a panic there becomes `None` (the caller
//! then fails open), and thread cancellation is held off for the duration, so that a
//! `pthread_cancel` can never meet a `catch_unwind` (glibc's forced unwind cannot be caught
//! without aborting the process). The forward itself runs outside, in exports declared
//! `extern "C-unwind"`, so a cancellation inside the real function unwinds exactly as it
//! would without the shim. Also holds the one read of memory the program passes
//! ([`read_device_mem`]). Owns no state; must not import anything above the leaves.

use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};

const PTHREAD_CANCEL_ENABLE: c_int = 0;
const PTHREAD_CANCEL_DISABLE: c_int = 1;

unsafe extern "C" {
    /// POSIX; not bound by the `libc` crate.
    fn pthread_setcancelstate(state: c_int, oldstate: *mut c_int) -> c_int;
}

/// Holds thread cancellation off while it lives (restoring the previous state on drop), so
/// the cancellation points inside (writes, sleeps, `open`) cannot act on a pending cancel.
/// A cancel requested meanwhile stays pending and acts at the program's next cancellation
/// point, as if the shim had not been there.
pub struct NoCancel {
    previous: c_int,
}

impl NoCancel {
    #[inline]
    pub fn new() -> NoCancel {
        let mut previous = PTHREAD_CANCEL_ENABLE;
        // SAFETY: `previous` is a valid out-pointer; the call only changes this thread's
        // cancellation state, which `drop` restores.
        unsafe { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &mut previous) };
        NoCancel { previous }
    }
}

impl Default for NoCancel {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoCancel {
    #[inline]
    fn drop(&mut self) {
        let mut ignored = 0;
        // SAFETY: restores the state saved by `new` on the same thread (guards are not Send:
        // they hold no pointer but live on the stack of the call that made them).
        unsafe { pthread_setcancelstate(self.previous, &mut ignored) };
    }
}

/// Runs the shim's own work `f`: `None` if it panicked. Cancellation is held off meanwhile.
#[inline]
pub fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    let _no_cancel = NoCancel::new();
    catch_unwind(AssertUnwindSafe(f)).ok()
}

/// [`guarded`] for one of several stages run under one [`NoCancel`] the caller holds (the
/// borrow is the proof): the panic of each stage is caught on its own, and cancellation is
/// switched off and on once for all of them.
#[inline]
pub fn caught<T>(_held: &NoCancel, f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

/// Reads the `ptr_` and `size_` members of an `hccl::DeviceMem` passed by reference (SPEC
/// §2.3: no virtual functions; `void *ptr_` at 0, `u64 size_` at 8); `(0, 0)` for a NULL
/// reference. The real function reads the same 16 bytes first, so this touches nothing the
/// call itself does not.
pub fn read_device_mem(addr: usize) -> (usize, u64) {
    if addr == 0 {
        return (0, 0);
    }
    let p = addr as *const u64;
    // SAFETY: `addr` is a non-null `hccl::DeviceMem &` the program passes to the function
    // being called, which reads these two words itself; they are read as integers only.
    unsafe { (p.read_unaligned() as usize, p.add(1).read_unaligned()) }
}

/// Places where a debug build can be told to panic on purpose (`NPUSHIM_DEBUG_PANIC=<stage>`),
/// so that tests can prove the boundary holds. Release builds ignore the variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    Init = 1,
    Check = 2,
    Lookup = 3,
    Record = 4,
}

/// The stage a debug build panics in (0: none), read once by the library constructor.
static DEBUG_PANIC: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Reads `NPUSHIM_DEBUG_PANIC` (debug builds only; libc-level, for the constructor).
pub fn read_debug_panic() {
    if !cfg!(debug_assertions) {
        return;
    }
    // SAFETY: getenv with a NUL-terminated name; the constructor runs before any thread of
    // the program could change the environment.
    let value = unsafe { libc::getenv(c"NPUSHIM_DEBUG_PANIC".as_ptr()) };
    if value.is_null() {
        return;
    }
    // SAFETY: getenv returned a NUL-terminated string that stays valid here.
    let stage = match unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes() {
        b"init" => Stage::Init,
        b"check" => Stage::Check,
        b"lookup" => Stage::Lookup,
        b"record" => Stage::Record,
        _ => return,
    };
    DEBUG_PANIC.store(stage as u8, std::sync::atomic::Ordering::Relaxed);
}

/// Panics if a debug build was asked to panic at `stage`.
#[inline]
pub fn debug_panic(stage: Stage) {
    if cfg!(debug_assertions)
        && DEBUG_PANIC.load(std::sync::atomic::Ordering::Relaxed) == stage as u8
    {
        panic!("NPUSHIM_DEBUG_PANIC={stage:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_none_and_a_value_passes() {
        assert_eq!(guarded(|| 7), Some(7));
        assert_eq!(guarded(|| -> u8 { panic!("a bug in the shim") }), None);
    }

    #[test]
    fn cancellation_is_held_off_inside_and_restored_after() {
        let state = || {
            let mut old = 0;
            // SAFETY: query-and-set of this thread's own state, put back at once.
            unsafe {
                pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &mut old);
                pthread_setcancelstate(old, &mut 0);
            }
            old
        };
        assert_eq!(state(), PTHREAD_CANCEL_ENABLE);
        guarded(|| assert_eq!(state(), PTHREAD_CANCEL_DISABLE));
        assert_eq!(state(), PTHREAD_CANCEL_ENABLE);
        let _ = guarded(|| -> () { panic!("restored on unwind too") });
        assert_eq!(state(), PTHREAD_CANCEL_ENABLE);
    }
}
