//! Per-thread record buffers: one single-producer / single-consumer ring per calling thread.
//!
//! The calling thread is the only producer of its ring and the writer thread the only
//! consumer, so a push is two atomic operations on lines no other caller touches: no lock
//! shared between threads, no allocation after the thread's first call. Rings are never
//! freed: when a thread exits (pthread key destructor) its ring is drained and then handed to
//! the next new thread, so memory is bounded by the number of threads calling at once.

use std::cell::{Cell, UnsafeCell};
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU8, AtomicU64, Ordering};

use super::record::Packed;

/// Records per ring (a power of two): 16384 × 96 B = 1.5 MiB per calling thread.
pub const CAPACITY: usize = 1 << 14;
const MASK: u64 = CAPACITY as u64 - 1;

/// Ring states.
const ACTIVE: u8 = 0;
const ORPHANED: u8 = 1;
const FREE: u8 = 2;

/// Keeps a hot atomic on its own cache line.
#[repr(align(128))]
struct Padded<T>(T);

pub struct Ring {
    /// Next slot to write; written only by the producer.
    head: Padded<AtomicU64>,
    /// Producer-private copy of `tail`, refreshed only when the ring looks full.
    cached_tail: Padded<Cell<u64>>,
    /// Next slot to read; written only by the consumer.
    tail: Padded<AtomicU64>,
    /// Records lost because the ring stayed full.
    dropped: AtomicU64,
    state: AtomicU8,
    /// OS thread id of the current owner.
    tid: AtomicI32,
    /// The next ring of the registry (set once, before the ring is published).
    next: AtomicPtr<Ring>,
    slots: Box<[UnsafeCell<MaybeUninit<Packed>>]>,
}

// SAFETY: `slots` and `cached_tail` are only touched by the owning producer thread (writes,
// `cached_tail`) and the consumer, which reads a slot only after the producer published it
// with a Release store of `head` and before it hands the slot back with a Release store of
// `tail`. Every other field is atomic.
unsafe impl Sync for Ring {}
// SAFETY: as above; a ring moves between threads only through the registry.
unsafe impl Send for Ring {}

impl Ring {
    fn new(tid: i32) -> Ring {
        let slots = (0..CAPACITY)
            .map(|_| UnsafeCell::new(MaybeUninit::uninit()))
            .collect();
        Ring {
            head: Padded(AtomicU64::new(0)),
            cached_tail: Padded(Cell::new(0)),
            tail: Padded(AtomicU64::new(0)),
            dropped: AtomicU64::new(0),
            state: AtomicU8::new(ACTIVE),
            tid: AtomicI32::new(tid),
            next: AtomicPtr::new(ptr::null_mut()),
            slots,
        }
    }

    /// Appends a record filled in place by `fill` (on a zeroed slot) and returns how many
    /// records the ring has taken in all; `None` if the ring is full (then `fill` is not
    /// called). Producer only.
    #[inline]
    pub fn try_push_with(&self, fill: impl FnOnce(&mut Packed)) -> Option<u64> {
        let head = self.head.0.load(Ordering::Relaxed);
        if head - self.cached_tail.0.get() >= CAPACITY as u64 {
            self.cached_tail.0.set(self.tail.0.load(Ordering::Acquire));
            if head - self.cached_tail.0.get() >= CAPACITY as u64 {
                return None;
            }
        }
        let slot = &self.slots[(head & MASK) as usize];
        // SAFETY: the slot at `head` is not visible to the consumer until the Release store
        // below, and the consumer has released it (tail > head - CAPACITY). If `fill`
        // panics, `head` does not move and the slot stays unpublished.
        fill(unsafe { (*slot.get()).write([0; super::record::MAX_FIELDS]) });
        self.head.0.store(head + 1, Ordering::Release);
        Some(head + 1)
    }

    /// Appends a copy of `rec`; as [`Ring::try_push_with`].
    #[inline]
    pub fn try_push(&self, rec: &Packed) -> Option<u64> {
        self.try_push_with(|slot| *slot = *rec)
    }

    /// Records waiting to be written.
    pub fn pending(&self) -> u64 {
        self.head.0.load(Ordering::Acquire) - self.tail.0.load(Ordering::Relaxed)
    }

    /// Hands at most `max` published records to `f`, then frees their slots; returns how
    /// many. Consumer only.
    pub fn drain(&self, max: u64, mut f: impl FnMut(&Packed)) -> u64 {
        let tail = self.tail.0.load(Ordering::Relaxed);
        let head = self
            .head
            .0
            .load(Ordering::Acquire)
            .min(tail.saturating_add(max));
        for i in tail..head {
            let slot = &self.slots[(i & MASK) as usize];
            // SAFETY: slots in [tail, head) were initialised and published by the producer's
            // Release store of `head`, which the Acquire load above synchronises with.
            f(unsafe { (*slot.get()).assume_init_ref() });
        }
        self.tail.0.store(head, Ordering::Release);
        head - tail
    }

    /// Forgets unwritten records (after fork: they belong to the parent's file).
    fn discard(&self) {
        self.tail
            .0
            .store(self.head.0.load(Ordering::Relaxed), Ordering::Relaxed);
        self.cached_tail.0.set(self.head.0.load(Ordering::Relaxed));
        self.dropped.store(0, Ordering::Relaxed);
    }

    pub fn note_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn tid(&self) -> i32 {
        self.tid.load(Ordering::Relaxed)
    }

    pub fn is_orphaned(&self) -> bool {
        self.state.load(Ordering::Acquire) == ORPHANED
    }

    /// After its last records are written: give the ring to the next new thread.
    pub fn release_if_orphaned(&self) {
        if self.pending() == 0 {
            let _ =
                self.state
                    .compare_exchange(ORPHANED, FREE, Ordering::AcqRel, Ordering::Relaxed);
        }
    }
}

/// Every ring ever created, as a lock-free push-only list (rings are leaked on purpose: see
/// the module docs). No lock means nothing for `fork()` to catch half-held.
static RINGS: AtomicPtr<Ring> = AtomicPtr::new(ptr::null_mut());

/// Iterates over every ring (the writer drains them all).
pub fn rings() -> impl Iterator<Item = &'static Ring> {
    let mut p = RINGS.load(Ordering::Acquire);
    std::iter::from_fn(move || {
        // SAFETY: list entries are leaked `Ring`s, published with Release and never freed.
        let ring: &'static Ring = unsafe { p.as_ref()? };
        p = ring.next.load(Ordering::Acquire);
        Some(ring)
    })
}

/// Sentinel in `CURRENT` for a thread whose ring was already given up (it is exiting).
const EXITED: *const Ring = ptr::dangling();

thread_local! {
    /// The calling thread's ring: null before its first call. Destructor-free, so it stays
    /// usable while the thread exits and from `atexit` handlers.
    static CURRENT: Cell<*const Ring> = const { Cell::new(ptr::null()) };
}

/// The pthread key whose destructor tells the writer a thread has exited: bit 32 set once
/// it exists, the key in the low bits. Created by the library constructor (libc only).
static THREAD_KEY: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_thread_exit(ring: *mut libc::c_void) {
    let _ = CURRENT.try_with(|c| c.set(EXITED));
    if !ring.is_null() {
        // SAFETY: the key's value is always a `&'static Ring` set by `current()`.
        let ring = unsafe { &*(ring as *const Ring) };
        ring.state.store(ORPHANED, Ordering::Release);
    }
}

/// Creates the thread-exit key (from the library constructor: libc work only).
pub fn create_thread_key() {
    let mut key: libc::pthread_key_t = 0;
    // SAFETY: `key` is a valid out-pointer; the destructor has the required signature.
    if unsafe { libc::pthread_key_create(&mut key, Some(on_thread_exit)) } == 0 {
        THREAD_KEY.store(1 << 32 | key as u64, Ordering::Release);
    }
}

fn thread_key() -> Option<libc::pthread_key_t> {
    let v = THREAD_KEY.load(Ordering::Acquire);
    (v >> 32 == 1).then_some(v as libc::pthread_key_t)
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// The calling thread's ring, created (or recycled) on its first call; `None` while the
/// thread is exiting.
#[inline]
pub fn current() -> Option<&'static Ring> {
    let p = CURRENT.try_with(|c| c.get()).unwrap_or(EXITED);
    if p == EXITED {
        return None;
    }
    if !p.is_null() {
        // SAFETY: non-sentinel values of CURRENT are `&'static Ring`s stored below.
        return Some(unsafe { &*p });
    }
    attach()
}

#[cold]
fn attach() -> Option<&'static Ring> {
    let tid = gettid();
    let recycled = rings().find(|r| {
        r.state
            .compare_exchange(FREE, ACTIVE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
    let ring = match recycled {
        Some(r) => {
            r.tid.store(tid, Ordering::Relaxed);
            r.cached_tail.0.set(r.tail.0.load(Ordering::Acquire));
            r
        }
        None => {
            let r: &'static Ring = Box::leak(Box::new(Ring::new(tid)));
            let mut head = RINGS.load(Ordering::Acquire);
            loop {
                r.next.store(head, Ordering::Relaxed);
                match RINGS.compare_exchange_weak(
                    head,
                    r as *const Ring as *mut Ring,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => break,
                    Err(now) => head = now,
                }
            }
            r
        }
    };
    if let Some(key) = thread_key() {
        // SAFETY: `key` was created by pthread_key_create; the value is a 'static pointer.
        unsafe { libc::pthread_setspecific(key, ring as *const Ring as *const libc::c_void) };
    }
    let _ = CURRENT.try_with(|c| c.set(ring));
    Some(ring)
}

/// Total records dropped so far, over all rings.
pub fn total_dropped() -> u64 {
    rings().map(|r| r.dropped()).sum()
}

/// `pthread_atfork` child: the other threads are gone; their rings are free, and every
/// unwritten record belongs to the parent's file.
pub fn fork_child() {
    let mine = CURRENT.try_with(|c| c.get()).unwrap_or(ptr::null());
    let tid = gettid();
    for ring in rings() {
        ring.discard();
        if ptr::eq(ring, mine) {
            ring.tid.store(tid, Ordering::Relaxed);
            ring.state.store(ACTIVE, Ordering::Release);
        } else {
            ring.state.store(FREE, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::record::MAX_FIELDS;

    fn rec(i: u64) -> Packed {
        [i as u128; MAX_FIELDS]
    }

    #[test]
    fn push_drain_in_order_and_full_is_reported() {
        let ring = Ring::new(1);
        for i in 0..CAPACITY as u64 {
            assert_eq!(ring.try_push(&rec(i)), Some(i + 1));
        }
        assert_eq!(ring.try_push(&rec(0)), None);
        let mut next = 0;
        let n = ring.drain(10, |r| {
            assert_eq!(r[0], next as u128);
            next += 1;
        });
        assert_eq!(n, 10);
        let n = ring.drain(u64::MAX, |r| {
            assert_eq!(r[0], next as u128);
            next += 1;
        });
        assert_eq!(n, CAPACITY as u64 - 10);
        assert!(ring.try_push(&rec(7)).is_some());
        assert_eq!(ring.pending(), 1);
    }

    #[test]
    fn concurrent_producer_and_consumer_lose_nothing() {
        let ring: &'static Ring = Box::leak(Box::new(Ring::new(1)));
        const N: u64 = 200_000;
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                while ring.try_push(&rec(i)).is_none() {
                    std::thread::yield_now();
                }
            }
        });
        let mut next = 0;
        while next < N {
            ring.drain(1000, |r| {
                assert_eq!(r[0], next as u128);
                next += 1;
            });
        }
        producer.join().unwrap();
    }

    #[test]
    fn threads_get_their_own_ring_and_exited_threads_recycle() {
        let a = std::thread::spawn(|| current().unwrap() as *const Ring as usize)
            .join()
            .unwrap();
        let ring = rings().find(|r| *r as *const Ring as usize == a).unwrap();
        assert!(ring.is_orphaned() || ring.state.load(Ordering::Relaxed) == FREE);
        ring.release_if_orphaned();
        let mine = current().unwrap() as *const Ring as usize;
        assert_ne!(mine, 0);
    }
}
