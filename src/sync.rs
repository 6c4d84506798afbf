//! Fork-safe synchronisation primitives built on atomics and the Linux futex.
//!
//! Locks held across `fork()` are the classic way an interposer deadlocks its host. A lock
//! whose state lives entirely in one atomic word (no global wait queue, no owner thread
//! that may not exist in the child) can be reset by the child's `pthread_atfork` handler,
//! and a futex needs no user-space bookkeeping at all. Nothing here is used on the hot path
//! except [`Event::wake`], which the producers call once per half ring.

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A lock of one atomic flag, with bounded waiting and a reset for the child after fork.
pub struct FlagLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `locked` (Acquire on lock, Release on unlock).
unsafe impl<T: Send> Sync for FlagLock<T> {}

pub struct FlagGuard<'a, T> {
    lock: &'a FlagLock<T>,
}

impl<T> FlagLock<T> {
    pub const fn new(value: T) -> Self {
        FlagLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    pub fn try_lock(&self) -> Option<FlagGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| FlagGuard { lock: self })
    }

    /// Waits at most `timeout` (spinning briefly, then sleeping in short steps).
    pub fn lock_for(&self, timeout: Duration) -> Option<FlagGuard<'_, T>> {
        let deadline = Instant::now() + timeout;
        let mut spins = 0u32;
        loop {
            if let Some(g) = self.try_lock() {
                return Some(g);
            }
            if Instant::now() >= deadline {
                return None;
            }
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// Takes the lock and keeps it until [`FlagLock::force_unlock`] (used around fork).
    pub fn lock_and_forget(&self, timeout: Duration) -> bool {
        match self.lock_for(timeout) {
            Some(g) => {
                std::mem::forget(g);
                true
            }
            None => false,
        }
    }

    /// Releases the lock whoever holds it.
    ///
    /// # Safety
    /// The caller must know that no live guard exists: after `lock_and_forget` on this
    /// thread, or in a forked child, where the holder no longer exists.
    pub unsafe fn force_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

impl<T> Deref for FlagGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for FlagGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for FlagGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// A wake-up signal: waiters sleep with a timeout, anyone may wake one or all of them.
pub struct Event {
    seq: AtomicU32,
}

impl Event {
    pub const fn new() -> Self {
        Event {
            seq: AtomicU32::new(0),
        }
    }

    /// Wakes one waiter (cheap when nobody waits: one atomic add and one system call).
    pub fn wake(&self) {
        self.wake_up_to(1);
    }

    /// Wakes every waiter.
    pub fn wake_all(&self) {
        self.wake_up_to(i32::MAX);
    }

    fn wake_up_to(&self, waiters: i32) {
        self.seq.fetch_add(1, Ordering::Release);
        // SAFETY: FUTEX_WAKE on a valid, aligned u32; no other preconditions.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.seq.as_ptr(),
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                waiters,
            )
        };
    }

    /// The current sequence number, to pass to [`Event::wait`].
    pub fn seq(&self) -> u32 {
        self.seq.load(Ordering::Acquire)
    }

    /// Sleeps until woken after `seen` was read, or for `timeout`. False when the timeout
    /// ran out (true: woken, or a wake had come already, or an interruption).
    pub fn wait(&self, seen: u32, timeout: Duration) -> bool {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: FUTEX_WAIT on a valid, aligned u32 with a valid relative timeout; it
        // returns at once if the value is no longer `seen`.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                self.seq.as_ptr(),
                libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
                seen,
                &ts as *const libc::timespec,
            )
        };
        r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ETIMEDOUT)
    }
}

impl Default for Event {
    fn default() -> Self {
        Self::new()
    }
}

/// The calling thread's stripe among `stripes` (a power of two), from its stack address:
/// threads' stacks lie at least a few MiB apart, so they spread over the stripes without
/// any thread-local state.
#[inline]
pub fn thread_stripe(stripes: usize) -> usize {
    debug_assert!(stripes.is_power_of_two());
    let marker = 0u8;
    let a = std::hint::black_box(&marker as *const u8 as u64) >> 20;
    (a.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - stripes.trailing_zeros())) as usize
}

/// Stripes of a [`StripedCounter`].
const COUNTER_STRIPES: usize = 16;

/// One atomic on a cache-line pair of its own.
#[repr(align(128))]
struct Padded(AtomicU64);

/// A counter that many threads add to on their hot paths without fighting over one cache
/// line: one atomic per stripe ([`thread_stripe`]), summed when read.
pub struct StripedCounter {
    cells: [Padded; COUNTER_STRIPES],
}

impl StripedCounter {
    pub const fn new() -> Self {
        StripedCounter {
            cells: [const { Padded(AtomicU64::new(0)) }; COUNTER_STRIPES],
        }
    }

    /// Adds one (relaxed).
    #[inline]
    pub fn add_one(&self) {
        self.cells[thread_stripe(COUNTER_STRIPES)]
            .0
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The sum of the stripes (exact once the adders are done).
    pub fn get(&self) -> u64 {
        self.cells
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }

    /// Back to zero (in a forked child, where nobody else adds).
    pub fn reset(&self) {
        self.cells
            .iter()
            .for_each(|c| c.0.store(0, Ordering::Relaxed));
    }
}

impl Default for StripedCounter {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_striped_counter_counts_every_add_from_every_thread() {
        static C: StripedCounter = StripedCounter::new();
        let threads: Vec<_> = (0..8)
            .map(|_| std::thread::spawn(|| (0..1000).for_each(|_| C.add_one())))
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(C.get(), 8000);
        C.reset();
        assert_eq!(C.get(), 0);
    }

    #[test]
    fn flag_lock_excludes_and_times_out() {
        let lock = Arc::new(FlagLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        *lock.lock_for(Duration::from_secs(10)).unwrap() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.try_lock().unwrap(), 40_000);
        let g = lock.try_lock().unwrap();
        assert!(lock.lock_for(Duration::from_millis(5)).is_none());
        drop(g);
        assert!(lock.lock_and_forget(Duration::from_millis(5)));
        assert!(lock.try_lock().is_none());
        // SAFETY: the guard was forgotten just above on this thread.
        unsafe { lock.force_unlock() };
        assert!(lock.try_lock().is_some());
    }

    /// Whether thread `tid` of this process is blocked in a `futex` system call (the first
    /// field of its `syscall` file is the number of the call it is blocked in).
    fn in_futex(tid: libc::pid_t) -> bool {
        let now = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).unwrap();
        now.split(' ').next() == Some(libc::SYS_futex.to_string().as_str())
    }

    #[test]
    fn event_wakes_a_waiter() {
        let ev = Arc::new(Event::new());
        let seen = ev.seq();
        let (tid_tx, tid_rx) = std::sync::mpsc::channel();
        let waiter = {
            let ev = ev.clone();
            std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                tid_tx.send(unsafe { libc::gettid() }).unwrap();
                ev.wait(seen, Duration::from_secs(60))
            })
        };
        // Wake it only once it sleeps in the futex, so that the wake-up itself is tested.
        let tid = tid_rx.recv().unwrap();
        while !in_futex(tid) {
            std::thread::yield_now();
        }
        ev.wake();
        assert!(waiter.join().unwrap(), "the waiter slept until its timeout");
        // A stale sequence number returns at once, as a wake-up; a current one times out.
        assert!(ev.wait(seen, Duration::from_secs(60)));
        assert!(!ev.wait(ev.seq(), Duration::from_millis(1)));
    }
}
