//! The fault rules in force: installed at initialisation from `NPUSHIM_FAULTS`, replaced
//! at run time by `npushim_faults_set`, read lock-free by every call that may be faulted.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::time::Duration;

use super::{lineage::seed, stats};
use crate::abi::types::Call;
use crate::fault::{Decision, FaultSpec};
use crate::sync::FlagLock;

/// The fault rules in force: null when none. Replaced atomically by `npushim_faults_set`.
static FAULTS: AtomicPtr<FaultSpec> = AtomicPtr::new(std::ptr::null_mut());
/// Threads currently reading `FAULTS` (a retired spec is freed only when this reaches 0).
static FAULT_READERS: AtomicUsize = AtomicUsize::new(0);
/// Serialises replacements (a single-word lock: resettable in a forked child).
static FAULTS_SET_LOCK: FlagLock<()> = FlagLock::new(());

/// Installs the rules read at initialisation (before any call can read them).
pub(super) fn install(spec: FaultSpec) {
    FAULTS.store(Box::into_raw(Box::new(spec)), Ordering::Release);
    crate::epoch::advance();
}

/// Whether any fault rule is in force: one relaxed load.
#[inline]
pub fn faults_active() -> bool {
    !FAULTS.load(Ordering::Relaxed).is_null()
}

/// Decides a call against the rules in force.
pub fn decide(call: &Call) -> Decision {
    FAULT_READERS.fetch_add(1, Ordering::SeqCst);
    let p = FAULTS.load(Ordering::SeqCst);
    // SAFETY: a spec stays allocated while FAULT_READERS > 0 (see `set_faults`).
    let decision = unsafe { p.as_ref() }
        .map(|spec| spec.decide(call, seed()))
        .unwrap_or(Decision::Forward);
    FAULT_READERS.fetch_sub(1, Ordering::SeqCst);
    if decision.is_fault() {
        stats::note_injected(decision);
    }
    decision
}

/// Replaces every fault rule at once (`None` or an empty spec clears them).
pub fn set_faults(spec: Option<FaultSpec>) {
    let _serialised = FAULTS_SET_LOCK.lock_for(Duration::from_secs(10));
    let new = match spec {
        Some(s) if !s.is_empty() => Box::into_raw(Box::new(s)),
        _ => std::ptr::null_mut(),
    };
    let old = FAULTS.swap(new, Ordering::SeqCst);
    crate::epoch::advance();
    if old.is_null() {
        return;
    }
    // Readers increment FAULT_READERS before loading FAULTS, so once it has been zero after
    // the swap nobody can still hold `old`. A reader stuck for a second: leak, never free
    // under it.
    for _ in 0..100_000 {
        if FAULT_READERS.load(Ordering::SeqCst) == 0 {
            // SAFETY: `old` came from Box::into_raw and no reader can reach it any more.
            drop(unsafe { Box::from_raw(old) });
            return;
        }
        std::thread::sleep(Duration::from_micros(10));
    }
}

/// `pthread_atfork` child handler: the parent's other threads, readers or a replacement in
/// progress, do not exist here.
pub(super) fn fork_child() {
    FAULT_READERS.store(0, Ordering::Relaxed);
    // SAFETY: only this thread exists in the child; no guard of this lock is live here.
    unsafe { FAULTS_SET_LOCK.force_unlock() };
}
