//! Each thread's last clean verdicts: a two-entry memo the copy path reads before anything
//! else (a copy loop repeats the same call, and until the process's epoch moves,
//! [`crate::epoch`], the answer is the same). Two entries, most recent first, because a synchronous copy whose runtime
//! issues an asynchronous one (`aclrtMemcpy` over `aclrtMemcpyAsync`) is two calls per
//! iteration; one entry would make each evict the other.
//!
//! The memo is read on every checked call, before anything else: it lives in static TLS
//! ([`crate::static_tls!`]), reached without a call, so that a hit forwards from the export
//! without saving the caller's arguments (see the module `tls`).
//!
//! A sequence number makes the memo safe against a signal handler that runs on the same
//! thread in the middle of a write: it is odd while a write is in progress and changes with
//! every write, so a reader that sees it odd, or changed, treats the memo as absent.

use std::cell::Cell;
use std::sync::atomic::{Ordering::SeqCst, compiler_fence};

/// The words a verdict is keyed on (the caller decides which).
pub type Key = [u64; 10];

/// One thread's memo. Zeroed memory is an empty memo (`seq` 0 is never a completed write).
#[repr(C, align(64))]
pub struct LastClean {
    seq: Cell<u32>,
    /// The most recent entry first.
    entries: [Entry; 2],
}

#[repr(C)]
struct Entry {
    key: Cell<Key>,
    verdict: Cell<u64>,
}

impl Entry {
    /// The entry's verdict if its first `words` words are `key`'s.
    #[inline(always)]
    fn answer(&self, key: &Key, words: usize) -> Option<u64> {
        // SAFETY: a plain read of this thread's own cell; nothing else holds a reference
        // into it (a signal handler that writes it meanwhile changes `seq`, which the
        // caller checks after).
        let held = unsafe { &*self.key.as_ptr() };
        // Word by word without branching (a slice comparison calls memcmp).
        let n = words.min(held.len());
        let same = held[..n]
            .iter()
            .zip(&key[..n])
            .fold(0, |d, (a, b)| d | (a ^ b))
            == 0;
        same.then(|| self.verdict.get())
    }
}

mod slot {
    use super::LastClean;

    crate::static_tls! {
        /// This thread's memo.
        unsafe pub fn get() -> LastClean = npushim_last_clean;
    }
}

/// The verdict remembered for `key`, comparing its first `words` words (the caller knows
/// the rest cannot differ between two keys that agree on those), if one of this thread's
/// two most recent entries is `key`'s.
#[inline(always)]
pub fn lookup(key: &Key, words: usize) -> Option<u64> {
    let last = slot::get()?;
    let seq = last.seq.get();
    compiler_fence(SeqCst);
    let found = match last.entries[0].answer(key, words) {
        Some(v) => Some(v),
        None => last.entries[1].answer(key, words),
    };
    compiler_fence(SeqCst);
    // A verdict is never 0 (see `remember`): a zeroed entry answers nothing.
    found.filter(|&v| v != 0 && seq & 1 == 0 && seq != 0 && last.seq.get() == seq)
}

/// Remembers `verdict` (never 0: 0 is not remembered) for `key` as the most recent entry
/// (the older one is dropped).
#[inline]
pub fn remember(key: &Key, verdict: u64) {
    let Some(last) = slot::get().filter(|_| verdict != 0) else {
        return;
    };
    let s = last.seq.get().wrapping_add(1) | 1;
    last.seq.set(s);
    compiler_fence(SeqCst);
    let [newest, older] = &last.entries;
    older.key.set(newest.key.get());
    older.verdict.set(newest.verdict.get());
    newest.key.set(*key);
    newest.verdict.set(verdict);
    compiler_fence(SeqCst);
    if last.seq.get() == s {
        last.seq.set(s.wrapping_add(1));
    } else {
        // A signal handler remembered its own call in the middle of this write: the memo
        // may be half of each, so it stays unreadable until the next write.
        last.seq.set(last.seq.get() | 1);
    }
}

/// Forgets this thread's entries.
pub fn clear() {
    if let Some(last) = slot::get() {
        last.seq.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_thread_starts_with_an_empty_memo_even_for_a_zero_key() {
        std::thread::spawn(|| {
            assert_eq!(lookup(&[0; 10], 10), None);
            remember(&[1; 10], 1);
            assert_eq!(
                lookup(&[0; 10], 10),
                None,
                "the zeroed older entry answers nothing"
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn the_memo_answers_its_own_key_only_and_is_per_thread() {
        let key = [7, 1, 2, 3, 4, 5, 6, 8, 9, 10];
        remember(&key, 0xabc);
        assert_eq!(lookup(&key, 10), Some(0xabc));
        let mut other = key;
        other[7] = 9;
        assert_eq!(lookup(&other, 10), None);
        std::thread::spawn(move || assert_eq!(lookup(&key, 10), None))
            .join()
            .unwrap();
        remember(&other, 1);
        assert_eq!(lookup(&key, 10), Some(0xabc), "two entries");
        assert_eq!(lookup(&other, 10), Some(1));
        let mut third = key;
        third[0] = 8;
        remember(&third, 3);
        assert_eq!(lookup(&key, 10), None, "the oldest entry is dropped");
        assert_eq!(lookup(&other, 10), Some(1));
        assert_eq!(lookup(&third, 10), Some(3));
        remember(&key, 0);
        assert_eq!(lookup(&key, 10), None, "0 is never remembered");
        assert_eq!(lookup(&third, 10), Some(3), "and evicts nothing");
        clear();
        assert_eq!(lookup(&other, 10), None);
        assert_eq!(lookup(&third, 10), None);
    }

    #[test]
    fn only_the_words_asked_for_are_compared() {
        let key = [3, 1, 2, 3, 4, 5, 0, 0, 0, 0];
        remember(&key, 9);
        let mut tail = key;
        tail[9] = 1;
        assert_eq!(lookup(&tail, 6), Some(9), "the caller vouches for the tail");
        assert_eq!(lookup(&tail, 10), None);
        let mut head = key;
        head[5] = 6;
        assert_eq!(lookup(&head, 6), None);
        assert_eq!(lookup(&key, 99), Some(9), "at most the whole key");
    }

    #[test]
    fn the_sequence_word_wraps_without_a_false_hit() {
        let key = [1; 10];
        let last = slot::get().unwrap();
        last.seq.set(u32::MAX - 1);
        remember(&key, 5);
        assert_eq!(last.seq.get(), 0, "u32::MAX, then wraps to 0");
        assert_eq!(
            lookup(&key, 10),
            None,
            "0 reads as empty: a miss, never a wrong hit"
        );
        remember(&key, 6);
        assert_eq!(lookup(&key, 10), Some(6));
    }

    #[test]
    fn the_block_is_the_size_the_tls_section_reserves() {
        assert_eq!(std::mem::size_of::<LastClean>(), 192);
        assert_eq!(std::mem::align_of::<LastClean>(), 64);
    }
}
