//! Per-thread record buffers: one single-producer / single-consumer ring per calling thread.
//!
//! The calling thread is the only producer of its ring and the writer thread the only
//! consumer, so a push is two atomic operations on lines no other caller touches: no lock
//! shared between threads, no allocation after the thread's first call. Rings are never
//! freed: when a thread exits (pthread key destructor) its ring is drained and then handed to
//! the next new thread. A new thread makes a new ring only while fewer than
//! [`SPARE_RINGS`] rings of exited threads wait for the writer; otherwise it waits for the
//! writer to free one. So ring memory is bounded by the threads calling at once plus a fixed
//! cap, whatever the pattern of thread creation.
//!
//! A thread's push is guarded against itself: a signal handler that interrupts a push (or
//! the thread's first attach) and records a call of its own finds the ring busy and counts
//! its record as dropped ([`reentered`]) instead of corrupting the ring.

use std::cell::{Cell, UnsafeCell};
use std::ptr;
use std::slice;
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicPtr, AtomicU8, AtomicU64, Ordering, compiler_fence,
};

use super::record::{UNIT_WORDS, units_of};

/// One cache line of a ring. A record takes one unit (a plain `aclrtMemcpyAsync` call) or
/// two (an HCCL call, or a call with a fault), always contiguous in memory.
#[repr(C, align(64))]
struct Unit([u128; UNIT_WORDS]);

/// Units per ring (a power of two): 32768 × 64 B = 2 MiB of address space per calling thread
/// (pages are touched only as records reach them), so 16384 calls.
pub const CAPACITY: usize = 1 << 15;
const MASK: u64 = CAPACITY as u64 - 1;
/// How far ahead of the record being written the producer prefetches (in units).
const PREFETCH_UNITS: u64 = 16;

/// Ring states.
const ACTIVE: u8 = 0;
const ORPHANED: u8 = 1;
const FREE: u8 = 2;

/// Rings of exited threads that may wait for the writer before a new thread has to wait
/// for one of them to be freed instead of getting a new ring (2 MiB each).
pub const SPARE_RINGS: usize = 8;

/// Keeps a hot atomic on its own cache line.
#[repr(align(128))]
struct Padded<T>(T);

/// The producer's line: where it writes, and whether it is in the middle of a push.
struct Producer {
    /// Next unit to write (a count of units ever taken); written only by the producer.
    head: AtomicU64,
    /// Set by the owner for the duration of a push; only the owner thread (and a signal
    /// handler running on it) ever reads it, so compiler fences order it.
    busy: AtomicBool,
}

pub struct Ring {
    head: Padded<Producer>,
    /// Producer-private copy of `tail`, refreshed only when the ring looks full.
    cached_tail: Padded<Cell<u64>>,
    /// Next unit to read; written only by the consumer.
    tail: Padded<AtomicU64>,
    /// Records lost because the ring stayed full.
    dropped: AtomicU64,
    /// Copies of the ring's threads that the device timeline found no event pair for:
    /// written by the owner only, with a plain load and store (no locked instruction on
    /// its hot path), read by anyone.
    untimed: AtomicU64,
    state: AtomicU8,
    /// OS thread id of the current owner.
    tid: AtomicI32,
    /// Thread-exit destructor rounds the owner has been through (owner only).
    exit_rounds: AtomicU8,
    /// The next ring of the registry (set once, before the ring is published).
    next: AtomicPtr<Ring>,
    /// `CAPACITY + 1` units: a two-unit record that starts in the last unit of the ring
    /// spills into the spare one instead of wrapping, so every record is contiguous. (Its
    /// second unit still counts as the ring's unit 0 for space accounting, so the producer
    /// never writes unit 0 while the consumer may read it.)
    slots: &'static [UnsafeCell<Unit>],
}

// SAFETY: `slots` and `cached_tail` are only touched by the owning producer thread (writes,
// `cached_tail`) and the consumer, which reads a slot only after the producer published it
// with a Release store of `head` and before it hands the slot back with a Release store of
// `tail`. Every other field is atomic.
unsafe impl Sync for Ring {}
// SAFETY: as above; a ring moves between threads only through the registry.
unsafe impl Send for Ring {}

impl Ring {
    /// A new ring, or `None` if its memory cannot be had (never an abort).
    fn new(tid: i32) -> Option<Ring> {
        // Zeroed memory straight from the kernel (pages the ring never reaches are never
        // touched), so every unit always holds plain integers. Not from malloc: a signal
        // handler that interrupted the program inside malloc may be the one attaching.
        let p = map(std::mem::size_of::<UnsafeCell<Unit>>() * (CAPACITY + 1))?;
        // SAFETY: the mapping is CAPACITY + 1 units long, page-aligned (so 64-byte aligned),
        // zeroed (a valid `UnsafeCell<Unit>`), and never unmapped; the slice is its sole
        // owner.
        let slots: &'static [UnsafeCell<Unit>] =
            unsafe { slice::from_raw_parts(p.cast::<UnsafeCell<Unit>>(), CAPACITY + 1) };
        Some(Ring {
            head: Padded(Producer {
                head: AtomicU64::new(0),
                busy: AtomicBool::new(false),
            }),
            cached_tail: Padded(Cell::new(0)),
            tail: Padded(AtomicU64::new(0)),
            dropped: AtomicU64::new(0),
            untimed: AtomicU64::new(0),
            state: AtomicU8::new(ACTIVE),
            tid: AtomicI32::new(tid),
            exit_rounds: AtomicU8::new(0),
            next: AtomicPtr::new(ptr::null_mut()),
            slots,
        })
    }

    /// The words of the `units` units starting at ring position `pos`.
    ///
    /// # Safety
    /// `units` is 1 or 2; the caller must own those units (the producer between its space
    /// check and its Release store of `head`, the consumer between its Acquire load of
    /// `head` and its Release store of `tail`), and not hold another slice of them.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    unsafe fn units(&self, pos: u64, units: usize) -> &mut [u128] {
        debug_assert!(units == 1 || units == 2);
        let first = (pos & MASK) as usize;
        // SAFETY: `first + units <= CAPACITY + 1` (the spare unit), so the words are inside
        // `slots`; the pointer comes from the whole slice, and units are contiguous and
        // always initialised (zeroed at allocation, integers only). Exclusive access is the
        // caller's contract.
        unsafe {
            let base = UnsafeCell::raw_get(self.slots.as_ptr().add(first)).cast::<u128>();
            slice::from_raw_parts_mut(base, units * UNIT_WORDS)
        }
    }

    /// Appends a record of `units` units (1 or 2), filled in place by `fill` (over whatever
    /// the units held before: `fill` writes every word the record uses), and returns how many units the ring has taken in all; `None` if there is no
    /// room (then `fill` is not called). Producer only.
    #[inline]
    pub fn try_push_with(&self, units: u64, fill: impl FnOnce(&mut [u128])) -> Option<u64> {
        let units = units.clamp(1, 2);
        let head = self.try_reserve(units)?;
        // SAFETY: `try_reserve` gave these units to the producer until `publish`. If `fill`
        // panics, `head` does not move and nothing is published.
        fill(unsafe { self.units(head, units as usize) });
        Some(self.publish(head, units))
    }

    /// Where a record of `units` units (1 or 2) can be written: the position of its first
    /// unit, or `None` if there is no room. The units are the producer's until
    /// [`Ring::publish`] with the same position. Producer only.
    #[inline]
    pub fn try_reserve(&self, units: u64) -> Option<u64> {
        let head = self.head.0.head.load(Ordering::Relaxed);
        if head + units - self.cached_tail.0.get() > CAPACITY as u64 {
            self.cached_tail.0.set(self.tail.0.load(Ordering::Acquire));
            if head + units - self.cached_tail.0.get() > CAPACITY as u64 {
                return None;
            }
        }
        Some(head)
    }

    /// The words of the units [`Ring::try_reserve`] returned `head` for.
    ///
    /// # Safety
    /// `head` and `units` are those of the producer's latest reservation, not yet published,
    /// and the caller holds no other slice of them.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub unsafe fn reserved(&self, head: u64, units: u64) -> &mut [u128] {
        // SAFETY: positions [head, head + units) are free (the consumer released them:
        // tail >= head + units - CAPACITY) and invisible to the consumer until `publish`;
        // exclusivity is the caller's contract.
        unsafe { self.units(head, units as usize) }
    }

    /// Hands the record written at `head` to the consumer; returns how many units the ring
    /// has taken in all. Producer only, after a [`Ring::try_reserve`] that gave `head`.
    #[inline]
    pub fn publish(&self, head: u64, units: u64) -> u64 {
        for ahead in 0..units {
            self.prefetch_for_write(head + PREFETCH_UNITS + ahead);
        }
        self.head.0.head.store(head + units, Ordering::Release);
        head + units
    }

    /// Asks the CPU to bring the unit at ring position `pos` into this core's cache for
    /// writing. The units a producer writes next were last read by the writer thread on
    /// another core, so each write would otherwise wait for the line to come back; asked
    /// for a few records ahead, it is there when the record is written. A hint only: no
    /// fault, no effect on what is stored.
    #[inline(always)]
    fn prefetch_for_write(&self, pos: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let p = self
                .slots
                .as_ptr()
                .wrapping_add((pos & MASK) as usize)
                .cast::<i8>();
            // SAFETY: a prefetch has no architectural effect (it cannot fault); `p` points
            // into the ring's mapping anyway (`pos & MASK` < CAPACITY).
            unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_ET0 }>(p) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = pos;
    }

    /// Appends a copy of `words` (one or two units' worth); as [`Ring::try_push_with`].
    #[inline]
    pub fn try_push(&self, words: &[u128]) -> Option<u64> {
        let units = words.len().div_ceil(UNIT_WORDS) as u64;
        self.try_push_with(units, |slot| {
            let n = words.len().min(slot.len());
            slot[..n].copy_from_slice(&words[..n]);
        })
    }

    /// Marks the start of a push by the owner thread; false if a push of this thread is
    /// already under way (this is a signal handler that interrupted it).
    #[inline]
    pub fn enter(&self) -> bool {
        if self.head.0.busy.load(Ordering::Relaxed) {
            return false;
        }
        self.head.0.busy.store(true, Ordering::Relaxed);
        compiler_fence(Ordering::SeqCst);
        true
    }

    /// Ends what [`Ring::enter`] started.
    #[inline]
    pub fn leave(&self) {
        compiler_fence(Ordering::SeqCst);
        self.head.0.busy.store(false, Ordering::Relaxed);
    }

    /// Units waiting to be written.
    pub fn pending(&self) -> u64 {
        self.head.0.head.load(Ordering::Acquire) - self.tail.0.load(Ordering::Relaxed)
    }

    /// Hands published records to `f` (each as its one or two units' words) until at least
    /// `max` units are consumed or none is left, then frees their units; returns how many
    /// units. Consumer only.
    pub fn drain(&self, max: u64, mut f: impl FnMut(&[u128])) -> u64 {
        let tail = self.tail.0.load(Ordering::Relaxed);
        let head = self.head.0.head.load(Ordering::Acquire);
        let mut pos = tail;
        while pos < head && pos - tail < max {
            // SAFETY: units in [tail, head) were written and published by the producer's
            // Release store of `head`, which the Acquire load above synchronises with; the
            // producer publishes whole records, so a record's units are all below `head`
            // (the `min` only keeps a corrupt length from reading past it).
            let words = unsafe {
                let first = self.units(pos, 1)[0];
                let units = units_of(first).min(head - pos);
                self.units(pos, units as usize)
            };
            f(words);
            pos += (words.len() / UNIT_WORDS) as u64;
        }
        self.tail.0.store(pos, Ordering::Release);
        pos - tail
    }

    /// Forgets unwritten records (after fork: they belong to the parent's file).
    fn discard(&self) {
        self.tail
            .0
            .store(self.head.0.head.load(Ordering::Relaxed), Ordering::Relaxed);
        self.cached_tail
            .0
            .set(self.head.0.head.load(Ordering::Relaxed));
        self.dropped.store(0, Ordering::Relaxed);
        self.untimed.store(0, Ordering::Relaxed);
    }

    /// Counts a copy the device timeline left untimed. Owner thread only (a signal handler
    /// that interrupts it between its load and store may lose one count).
    #[inline]
    pub fn note_untimed(&self) {
        let n = self.untimed.load(Ordering::Relaxed);
        self.untimed.store(n + 1, Ordering::Relaxed);
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

/// Sentinel in `Local::current` for a thread whose ring was already given up (it is exiting).
const EXITED: *const Ring = ptr::dangling();

/// The calling thread's own words, together so that a traced call finds both at once.
/// All-zero is a thread that has no ring yet and is in no call.
pub struct Local {
    /// The thread's ring: null before its first record.
    current: Cell<*const Ring>,
    /// A word the pipeline keeps for the thread (its depth and busy flag); nothing here
    /// reads it.
    place: Cell<u32>,
    /// The thread's OS id once asked for (0: not yet): `gettid` is a system call, and
    /// every allocation the memory map records names its thread. Cleared in a forked
    /// child, whose one thread has a new id.
    tid: Cell<i32>,
}

impl Local {
    /// The pipeline's word for this thread.
    #[inline]
    pub fn place(&self) -> &Cell<u32> {
        &self.place
    }

    /// Whether the thread has its ring already (then [`Local::current`] needs no memory and
    /// takes no lock).
    #[inline]
    pub fn has_ring(&self) -> bool {
        self.ring().is_some()
    }

    /// This thread's ring if it has one already (never attaches one).
    #[inline]
    pub fn ring(&self) -> Option<&'static Ring> {
        match self.current.get() {
            p if p.is_null() || p == EXITED || p == ATTACHING => None,
            // SAFETY: non-sentinel values of `current` are `&'static Ring`s stored by
            // `attach`.
            p => Some(unsafe { &*p }),
        }
    }

    /// This thread's ring, created (or recycled) at its first record.
    #[inline]
    pub fn current(&self) -> Current {
        let p = self.current.get();
        if p.is_null() {
            return attach();
        }
        match p {
            EXITED => Current::None,
            ATTACHING => Current::Reentered,
            // SAFETY: non-sentinel values of `current` are `&'static Ring`s stored by
            // `attach`.
            _ => Current::Ring(unsafe { &*p }),
        }
    }
}

crate::static_tls! {
    /// The calling thread's words (static TLS, destructor-free: usable while the thread
    /// exits and from `atexit` handlers; `None` only where they live in an ordinary
    /// thread-local that is being torn down).
    unsafe pub fn local() -> Local = npushim_ring_local;
}

/// The pthread key whose destructor tells the writer a thread has exited: bit 32 set once
/// it exists, the key in the low bits. Created by the library constructor (libc only).
static THREAD_KEY: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_thread_exit(value: *mut libc::c_void) {
    if !value.is_null() {
        // SAFETY: the key's value is always a `&'static Ring` set by `current()`.
        let ring = unsafe { &*(value as *const Ring) };
        // In the first round, stay attached for one more: the destructors of keys created
        // after ours (the program's) run after ours in a round and may still copy. POSIX
        // runs a destructor again when its value was set again during the round.
        if ring.exit_rounds.fetch_add(1, Ordering::Relaxed) == 0 {
            if let Some(key) = thread_key() {
                // SAFETY: `key` was created by pthread_key_create; setting a value from a
                // destructor is allowed (it schedules another round).
                if unsafe { libc::pthread_setspecific(key, value) } == 0 {
                    return;
                }
            }
        }
        if let Some(l) = local() {
            l.current.set(EXITED);
        }
        ring.state.store(ORPHANED, Ordering::Release);
    } else {
        if let Some(l) = local() {
            l.current.set(EXITED);
        }
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

/// The calling thread's OS id (one system call per thread, then a thread-local read).
pub fn thread_id() -> i32 {
    match local() {
        Some(l) => {
            let mut tid = l.tid.get();
            if tid == 0 {
                tid = gettid();
                l.tid.set(tid);
            }
            tid
        }
        None => gettid(),
    }
}

fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Sentinel in `Local::current` while the thread is getting its first ring (a signal handler that
/// interrupts that must not start another attach on the same thread).
const ATTACHING: *const Ring = ptr::without_provenance(1);

/// What the calling thread can record into.
pub enum Current {
    /// Its ring.
    Ring(&'static Ring),
    /// No ring now: [`SPARE_RINGS`] rings of exited threads wait for the writer. The caller
    /// waits for the writer to free one, then asks again.
    Full,
    /// A signal handler interrupted this thread while it was getting its ring.
    Reentered,
    /// The thread is past its exit, or no ring memory could be had.
    None,
}

/// The calling thread's ring, created (or recycled) on its first call.
#[inline]
pub fn current() -> Current {
    match local() {
        Some(l) => l.current(),
        None => Current::None,
    }
}

#[cold]
fn attach() -> Current {
    if let Some(l) = local() {
        l.current.set(ATTACHING);
    }
    let found = take_ring();
    if let Some(l) = local() {
        l.current.set(match found {
            Current::Ring(r) => r,
            _ => ptr::null(),
        });
    }
    found
}

fn take_ring() -> Current {
    let tid = gettid();
    let recycled = rings().find(|r| {
        r.state
            .compare_exchange(FREE, ACTIVE, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    });
    let ring = match recycled {
        Some(r) => {
            r.tid.store(tid, Ordering::Relaxed);
            r.exit_rounds.store(0, Ordering::Relaxed);
            r.cached_tail.0.set(r.tail.0.load(Ordering::Acquire));
            r
        }
        None if rings().filter(|r| r.is_orphaned()).count() >= SPARE_RINGS => {
            return Current::Full;
        }
        None => {
            let Some(new) = Ring::new(tid) else {
                // No memory: the caller counts its record as dropped.
                return Current::None;
            };
            let Some(r) = leak(new) else {
                return Current::None;
            };
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
    Current::Ring(ring)
}

/// `bytes` of fresh zeroed memory from the kernel, never unmapped; `None` if there is none.
fn map(bytes: usize) -> Option<*mut u8> {
    // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches no
    // existing memory; failure is MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then_some(p.cast())
}

/// Moves `ring` to memory of its own that is never freed, or `None` if there is none
/// (never an abort, never malloc).
fn leak(ring: Ring) -> Option<&'static Ring> {
    const { assert!(std::mem::align_of::<Ring>() <= 4096) };
    let p = map(std::mem::size_of::<Ring>())?.cast::<Ring>();
    // SAFETY: `p` is a fresh page-aligned mapping large enough for a `Ring`; it is never
    // unmapped, so the reference is valid for the rest of the process.
    unsafe {
        p.write(ring);
        Some(&*p)
    }
}

/// Total records dropped so far, over all rings.
/// Copies left untimed by the device timeline, over every ring.
pub fn total_untimed() -> u64 {
    rings().map(|r| r.untimed.load(Ordering::Relaxed)).sum()
}

pub fn total_dropped() -> u64 {
    rings().map(|r| r.dropped()).sum::<u64>()
        + RINGLESS_DROPS.load(Ordering::Relaxed)
        + REENTERED.load(Ordering::Relaxed)
}

/// Records lost because their thread had no ring: it was exiting (a call from a thread-exit
/// destructor in a late round, after npushim's had let go), or a ring's memory could not be
/// allocated.
static RINGLESS_DROPS: AtomicU64 = AtomicU64::new(0);

/// Records lost because a signal handler interrupted the shim on the same thread (its call
/// was forwarded; recording it would have touched the state it interrupted).
static REENTERED: AtomicU64 = AtomicU64::new(0);

/// Counts one call made from a signal handler that interrupted the shim on its thread.
#[cold]
pub fn note_reentered() {
    REENTERED.fetch_add(1, Ordering::Relaxed);
}

/// Calls forwarded untraced because they re-entered the shim (part of [`total_dropped`]).
pub fn reentered() -> u64 {
    REENTERED.load(Ordering::Relaxed)
}

/// Records lost for want of a ring (part of [`total_dropped`]).
pub fn ringless_dropped() -> u64 {
    RINGLESS_DROPS.load(Ordering::Relaxed)
}

/// Counts one record lost for want of a ring (so the loss is reported, not silent).
#[cold]
pub fn note_dropped_without_ring() {
    RINGLESS_DROPS.fetch_add(1, Ordering::Relaxed);
}

/// `pthread_atfork` child: the other threads are gone; their rings are free, and every
/// unwritten record belongs to the parent's file.
pub fn fork_child() {
    RINGLESS_DROPS.store(0, Ordering::Relaxed);
    REENTERED.store(0, Ordering::Relaxed);
    let mine = local().map_or(ptr::null(), |l| {
        l.tid.set(0);
        l.current.get()
    });
    let tid = gettid();
    for ring in rings() {
        ring.discard();
        // A thread of the parent may have been in the middle of a push: it does not exist
        // here, and neither does its push.
        ring.head.0.busy.store(false, Ordering::Relaxed);
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

    /// A record of `units` units numbered `i` (in the high half of its first word, clear of
    /// the length byte), as the ring stores it.
    fn rec(i: u64, units: u64) -> Vec<u128> {
        let mut words = vec![(i as u128) << 64; units as usize * UNIT_WORDS];
        words[0] |= (units as u128) << 32;
        words
    }

    fn number(words: &[u128]) -> u64 {
        (words[0] >> 64) as u64
    }

    #[test]
    fn push_drain_in_order_and_full_is_reported() {
        let ring = Ring::new(1).unwrap();
        for i in 0..CAPACITY as u64 {
            assert_eq!(ring.try_push(&rec(i, 1)), Some(i + 1));
        }
        assert_eq!(ring.try_push(&rec(0, 1)), None);
        let mut next = 0;
        let n = ring.drain(10, |r| {
            assert_eq!(number(r), next);
            assert_eq!(r.len(), UNIT_WORDS);
            next += 1;
        });
        assert_eq!(n, 10);
        let n = ring.drain(u64::MAX, |r| {
            assert_eq!(number(r), next);
            next += 1;
        });
        assert_eq!(n, CAPACITY as u64 - 10);
        assert!(ring.try_push(&rec(7, 1)).is_some());
        assert_eq!(ring.pending(), 1);
    }

    #[test]
    fn two_unit_records_stay_whole_across_the_end_of_the_ring() {
        let ring = Ring::new(1).unwrap();
        // Leave one free unit at the end, then push two-unit records across it.
        for i in 0..CAPACITY as u64 - 1 {
            ring.try_push(&rec(i, 1)).unwrap();
        }
        assert_eq!(ring.drain(u64::MAX, |_| {}), CAPACITY as u64 - 1);
        for i in 0..CAPACITY as u64 / 2 {
            let words = rec(i, 2);
            assert!(ring.try_push(&words).is_some(), "record {i}");
        }
        // Full: one more unit would overwrite the first record's second unit.
        assert_eq!(ring.try_push(&rec(0, 1)), None);
        let mut next = 0;
        ring.drain(u64::MAX, |r| {
            assert_eq!(r.len(), 2 * UNIT_WORDS);
            assert_eq!(r, rec(next, 2).as_slice());
            next += 1;
        });
        assert_eq!(next, CAPACITY as u64 / 2);
    }

    #[test]
    fn concurrent_producer_and_consumer_lose_nothing() {
        let ring: &'static Ring = Box::leak(Box::new(Ring::new(1).unwrap()));
        const N: u64 = 200_000;
        let shape = |i: u64| if i.is_multiple_of(3) { 2 } else { 1 };
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                while ring.try_push(&rec(i, shape(i))).is_none() {
                    std::thread::yield_now();
                }
            }
        });
        let mut next = 0;
        while next < N {
            ring.drain(1000, |r| {
                assert_eq!(r, rec(next, shape(next)).as_slice());
                next += 1;
            });
        }
        producer.join().unwrap();
    }

    fn ring_of_this_thread() -> usize {
        match current() {
            Current::Ring(r) => r as *const Ring as usize,
            _ => panic!("no ring"),
        }
    }

    #[test]
    fn threads_get_their_own_ring_and_exited_threads_recycle() {
        let mine = ring_of_this_thread();
        let a = std::thread::spawn(ring_of_this_thread).join().unwrap();
        assert_ne!(a, mine, "a live thread's ring is its own");
        let ring = rings().find(|r| *r as *const Ring as usize == a).unwrap();
        assert!(ring.is_orphaned(), "the exited thread let its ring go");
        ring.release_if_orphaned();
        assert_eq!(ring.state.load(Ordering::Relaxed), FREE);
        // Other tests of this binary may take the free ring first; whoever does, it is
        // reused and no ring is added for it.
        let before = rings().count();
        let b = std::thread::spawn(ring_of_this_thread).join().unwrap();
        assert!(
            b == a || rings().count() == before,
            "a free ring is reused before a new one is made"
        );
    }

    #[test]
    fn a_push_interrupted_on_its_own_thread_is_refused() {
        let ring = Ring::new(1).unwrap();
        assert!(ring.enter());
        assert!(!ring.enter(), "a second push on the same thread is refused");
        ring.leave();
        assert!(ring.enter());
        ring.leave();
    }
}
