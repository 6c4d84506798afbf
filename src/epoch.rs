//! The process's epoch: one counter that moves whenever something a remembered verdict
//! depends on changes (an allocation, free or registration completes; fault rules are
//! replaced; tracing starts or stops; the shim turns itself into a pass-through or the
//! memory map off). A verdict remembered at one epoch ([`crate::memo`]) holds as long as the
//! epoch stays the same, so a repeated call checks one word instead of every setting.
//!
//! Whoever changes such state publishes the change first, then advances the epoch: a reader
//! that sees the new epoch sees the change; one that still sees the old epoch races with
//! the change, as a call made just before it would.

use std::sync::atomic::{AtomicU64, Ordering};

static EPOCH: AtomicU64 = AtomicU64::new(0);

/// The current epoch (one load).
#[inline(always)]
pub fn now() -> u64 {
    EPOCH.load(Ordering::Acquire)
}

/// Starts a new epoch, after the change that makes it necessary is published; returns it
/// (never 0, and unique in the process).
pub fn advance() -> u64 {
    EPOCH.fetch_add(1, Ordering::AcqRel) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_advance_is_a_new_epoch() {
        let a = advance();
        let b = advance();
        assert!(b > a && a > 0);
        assert!(now() >= b);
    }
}
