//! The allocation map of SPEC §9: which memory the program obtained through the hooked
//! allocation functions, and what any pointer is (device, pinned, registered, pageable or
//! unknown) for the `location`, `direction`, `pageable`, `bounds` and `freed` rules.
//!
//! It owns the live allocations (start, size, location, the allocating call's time, thread
//! and hook), the last 4096 closed ranges, the per-2 MiB cache of the runtime's pointer
//! attributes, and the untracked counter. It must not import FFI types, format, print or
//! call into the runtime other than through the attributes source it is given; and
//! [`classify`], which runs on every copy, must never take a lock, wait, or allocate.
//!
//! Design. Live and closed ranges are kept in one sorted set (they never overlap: a new
//! allocation over a closed or stale range replaces it), so one search answers both "which
//! allocation holds this pointer" and "was it freed". Frees close an entry; unregistrations
//! drop it (unregistered host memory is pageable again, not freed). The set is two-level
//! and copy-on-write: a *top* array partitions the address space into key ranges (`los`)
//! and holds one atomic pointer per *chunk*, an immutable sorted array of at most
//! [`CHUNK`] entries. Readers load the top, binary-search it, load the chunk pointer,
//! binary-search the chunk: no lock, no write to shared state except their reader counter.
//! A writer (serialised by a one-word lock that the fork handlers manage) copies only the
//! one chunk it changes (under 1 KiB) and swaps it in with one atomic store; the top is
//! copied only when a chunk splits or empties (about once per `CHUNK / 2` inserts). So a
//! write costs about the same at 100 or 100,000 live entries, instead of copying them all.
//!
//! Reclamation is epoch-based with two parity counters per reader stripe (striped by the
//! reader's stack address, so threads rarely share a cache line): a reader increments the
//! counter of the current epoch's parity and re-checks the epoch (retrying if it moved, so
//! it never waits); a writer tags each object it unlinks with the epoch, advances the epoch
//! only when no reader is registered in the parity it is about to reuse, and frees an
//! object two epochs after it was unlinked, when no reader can still hold it. Writers never
//! wait for readers: what cannot be freed yet stays on the retired list until a later
//! write. Every allocation is fallible (raw `alloc` checked for null, `try_reserve`); out of
//! memory or the live cap makes an insert untracked and counted, never an abort.
//!
//! The two atomic read-modify-writes of a reader registration and a search over 10,000
//! entries cost tens of nanoseconds; a copy loop reuses the same few buffers, so each
//! thread also keeps its last answers (an entry, or a gap between entries) tagged with the
//! map's write generation (module `hot`). While no alloc or free completes, a repeated
//! pointer is answered from there without searching or registering.

use std::alloc::{Layout, alloc, dealloc};
use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::sync::{FlagGuard, FlagLock};

/// Live entries beyond which new allocations are not tracked (SPEC §9).
pub const MAX_LIVE: usize = 1_000_000;
/// Closed ranges remembered for the `freed` rule (SPEC §9).
pub const CLOSED_KEPT: usize = 4096;
/// Entries per chunk: a chunk is `8 + CHUNK * 40` bytes, small enough for the
/// allocator's per-thread cache.
const CHUNK: usize = 24;
/// Reader stripes (one cache line pair each).
const STRIPES: usize = 32;
/// Retired objects that trigger a reclamation attempt.
const RECLAIM_AT: usize = 32;
/// Bytes of unlinked memory beyond which the map stops tracking (memory stays bounded
/// even if a reader never leaves).
const RETIRED_MAX_BYTES: usize = 64 << 20;
/// Reclaimed chunks kept for reuse.
const SPARE_CHUNKS: usize = 64;
/// Attributes cache slots (direct-mapped by 2 MiB region).
const CACHE_SLOTS: usize = 1024;
const REGION_SHIFT: u32 = 21;
/// How long a writer waits for the writer lock before giving up (untracked, counted).
const WRITER_WAIT: Duration = Duration::from_secs(1);

/// Where a tracked allocation lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    /// Device memory on the device with this id.
    Device(u32),
    /// Host memory from the runtime's pinned allocator (`aclrtMallocHost`).
    Pinned,
    /// Host memory registered with the runtime (`aclrtHostRegister`).
    Registered,
}

impl Location {
    pub fn kind(self) -> MemKind {
        match self {
            Location::Device(_) => MemKind::Device,
            Location::Pinned => MemKind::Pinned,
            Location::Registered => MemKind::Registered,
        }
    }
}

/// What a pointer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemKind {
    Device,
    Pinned,
    Registered,
    Pageable,
    Unknown,
}

impl MemKind {
    /// The name used in traces and diagnostics.
    pub fn name(self) -> &'static str {
        match self {
            MemKind::Device => "device",
            MemKind::Pinned => "pinned",
            MemKind::Registered => "registered",
            MemKind::Pageable => "pageable",
            MemKind::Unknown => "unknown",
        }
    }

    fn code(self) -> u64 {
        match self {
            MemKind::Device => 0,
            MemKind::Pinned => 1,
            MemKind::Registered => 2,
            MemKind::Pageable => 3,
            MemKind::Unknown => 4,
        }
    }

    fn from_code(code: u64) -> MemKind {
        match code {
            0 => MemKind::Device,
            1 => MemKind::Pinned,
            2 => MemKind::Registered,
            3 => MemKind::Pageable,
            _ => MemKind::Unknown,
        }
    }
}

/// One tracked allocation, as the allocating hook described it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllocInfo {
    pub start: u64,
    pub size: u64,
    pub location: Location,
    /// The caller's clock at the allocating call.
    pub ts: u64,
    pub tid: i32,
    /// The caller's id of the allocating function.
    pub hook: u8,
}

impl AllocInfo {
    /// Whether `ptr` lies in `[start, start + size)`.
    pub fn contains(&self, ptr: u64) -> bool {
        ptr >= self.start && ptr - self.start < self.size
    }

    /// One past the last byte (saturating).
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.size)
    }
}

/// What [`classify`] knows about a pointer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classified {
    pub kind: MemKind,
    /// The live allocation containing the pointer (for `bounds`: check
    /// `ptr + count > alloc.start + alloc.size`).
    pub alloc: Option<AllocInfo>,
    /// The pointer lies in a recently freed range that no allocation has covered since.
    pub freed: bool,
}

impl Classified {
    const UNKNOWN: Classified = Classified {
        kind: MemKind::Unknown,
        alloc: None,
        freed: false,
    };

    fn of_kind(kind: MemKind) -> Classified {
        Classified {
            kind,
            ..Classified::UNKNOWN
        }
    }
}

/// What the checks need of one pointer of a copy: its kind, the live allocation around it
/// as `(start, size)`, and whether it lies in a freed range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Side {
    pub kind: MemKind,
    pub alloc: Option<(u64, u64)>,
    pub freed: bool,
}

impl Side {
    pub const UNKNOWN: Side = Side {
        kind: MemKind::Unknown,
        alloc: None,
        freed: false,
    };

    fn of(c: &Classified) -> Side {
        Side {
            kind: c.kind,
            alloc: c.alloc.map(|a| (a.start, a.size)),
            freed: c.freed,
        }
    }

    /// Kind, freed and "has an allocation" in one word (for the per-thread memo).
    fn flags(&self) -> u64 {
        self.kind.code() | u64::from(self.freed) << 3 | u64::from(self.alloc.is_some()) << 4
    }

    fn from_words(flags: u64, start: u64, size: u64) -> Side {
        Side {
            kind: MemKind::from_code(flags & 7),
            alloc: (flags & 16 != 0).then_some((start, size)),
            freed: flags & 8 != 0,
        }
    }
}

/// Allocations never freed, per location.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeakSummary {
    pub location: Location,
    pub count: u64,
    pub bytes: u64,
    pub largest: AllocInfo,
}

// ---------------------------------------------------------------------------------------
// Entries, chunks and the top array.

const LOC_DEVICE: u8 = 0;
const LOC_PINNED: u8 = 1;
const LOC_REGISTERED: u8 = 2;

/// A live (`closed_seq == 0`) or closed range.
#[derive(Clone, Copy, Debug)]
struct Entry {
    start: u64,
    size: u64,
    ts: u64,
    tid: i32,
    /// 0 while live; the closing sequence number once freed (wraps: it only has to
    /// differ between the closings of one start address within 2^32 frees).
    closed_seq: u32,
    device: u32,
    loc: u8,
    hook: u8,
}

impl Entry {
    fn new(start: u64, size: u64, location: Location, ts: u64, tid: i32, hook: u8) -> Entry {
        let (loc, device) = match location {
            Location::Device(id) => (LOC_DEVICE, id),
            Location::Pinned => (LOC_PINNED, 0),
            Location::Registered => (LOC_REGISTERED, 0),
        };
        Entry {
            start,
            size,
            ts,
            closed_seq: 0,
            tid,
            device,
            loc,
            hook,
        }
    }

    fn location(&self) -> Location {
        match self.loc {
            LOC_DEVICE => Location::Device(self.device),
            LOC_PINNED => Location::Pinned,
            _ => Location::Registered,
        }
    }

    fn info(&self) -> AllocInfo {
        AllocInfo {
            start: self.start,
            size: self.size,
            location: self.location(),
            ts: self.ts,
            tid: self.tid,
            hook: self.hook,
        }
    }

    fn contains(&self, ptr: u64) -> bool {
        ptr >= self.start && ptr - self.start < self.size
    }

    /// End used for overlap between ranges: a zero-sized allocation still owns its start.
    fn span_end(&self) -> u64 {
        self.start.saturating_add(self.size.max(1))
    }

    fn is_live(&self) -> bool {
        self.closed_seq == 0
    }
}

const _: () = assert!(size_of::<Entry>() == 40 && size_of::<Chunk>() <= 1024);

/// An immutable sorted run of entries, shared by readers once published.
struct Chunk {
    len: usize,
    entries: [MaybeUninit<Entry>; CHUNK],
}

impl Chunk {
    fn entries(&self) -> &[Entry] {
        // SAFETY: `entries[..len]` were initialised by `new_chunk` before the chunk was
        // published, and a chunk is never mutated afterwards; `len <= CHUNK`.
        unsafe { std::slice::from_raw_parts(self.entries.as_ptr().cast::<Entry>(), self.len) }
    }
}

/// The partition of the address space into chunks: chunk `i` holds the entries whose start
/// lies in `[los[i], los[i + 1])`; `los[0] == 0`.
struct Top {
    los: Vec<u64>,
    chunks: Vec<AtomicPtr<Chunk>>,
}

#[cfg(test)]
thread_local! {
    /// Allocations on this thread that fail before one succeeds again (tests of OOM).
    static FAIL_ALLOCS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn injected_oom() -> bool {
    #[cfg(test)]
    {
        FAIL_ALLOCS.with(|f| {
            let n = f.get();
            if n > 0 {
                f.set(n - 1);
            }
            n > 0
        })
    }
    #[cfg(not(test))]
    {
        false
    }
}

/// Allocates room for one `T`, or `None` when out of memory.
fn try_alloc<T>() -> Option<*mut T> {
    if injected_oom() {
        return None;
    }
    let layout = Layout::new::<T>();
    // SAFETY: `Chunk` and `Top`, the only types allocated here, have a non-zero size.
    let p = unsafe { alloc(layout) }.cast::<T>();
    (!p.is_null()).then_some(p)
}

/// Frees what [`try_alloc`] returned, after dropping the value in it.
///
/// # Safety
/// `p` came from `try_alloc::<T>`, holds an initialised `T`, and no reader can reach it.
unsafe fn free_obj<T>(p: *mut T) {
    // SAFETY: per the contract, `p` is a valid, initialised, unreachable allocation of
    // `Layout::new::<T>()`.
    unsafe {
        ptr::drop_in_place(p);
        dealloc(p.cast::<u8>(), Layout::new::<T>());
    }
}

/// A new chunk holding the concatenation of `parts` (at most `CHUNK` entries), from the
/// writer's spare chunks when it has one.
fn new_chunk(w: &mut Writer, parts: &[&[Entry]]) -> Option<*mut Chunk> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    debug_assert!(total <= CHUNK);
    let c = match w.spare.pop() {
        Some(c) => c,
        None => try_alloc::<Chunk>()?,
    };
    // SAFETY: `c` is a fresh allocation of a `Chunk`, or a spare one that no reader can
    // reach any more (it went through reclamation); we write `len` and the first
    // `total <= CHUNK` entries through raw pointers without forming a reference to
    // uninitialised memory.
    unsafe {
        let dst = ptr::addr_of_mut!((*c).entries).cast::<Entry>();
        let mut at = 0;
        for part in parts {
            ptr::copy_nonoverlapping(part.as_ptr(), dst.add(at), part.len());
            at += part.len();
        }
        ptr::addr_of_mut!((*c).len).write(total);
    }
    Some(c)
}

/// A new top from `los` and chunk pointers.
fn new_top(los: Vec<u64>, chunks: Vec<AtomicPtr<Chunk>>) -> Option<*mut Top> {
    let t = try_alloc::<Top>()?;
    // SAFETY: `t` is a fresh, properly aligned allocation of a `Top`.
    unsafe { t.write(Top { los, chunks }) };
    Some(t)
}

fn try_vec<T>(n: usize) -> Option<Vec<T>> {
    if injected_oom() {
        return None;
    }
    let mut v = Vec::new();
    v.try_reserve_exact(n).ok()?;
    Some(v)
}

/// Index of the chunk whose key range holds `key`.
fn chunk_index(top: &Top, key: u64) -> usize {
    top.los.partition_point(|&lo| lo <= key).saturating_sub(1)
}

/// [`chunk_index`] for a writer, trying first the chunk `*hint` names (a write lands near
/// the one before it more often than not: allocations and frees come in runs over nearby
/// addresses), and leaving the answer there. The hint is only a guess, checked against
/// the key ranges (which are strictly increasing, so the chunk that holds `key` is unique):
/// a stale one, after a split or a merge, costs the search it would have saved.
fn chunk_index_hinted(top: &Top, key: u64, hint: &mut usize) -> usize {
    let h = *hint;
    if h < top.los.len() && top.los[h] <= key && top.los.get(h + 1).is_none_or(|&next| key < next) {
        return h;
    }
    let i = chunk_index(top, key);
    *hint = i;
    i
}

// ---------------------------------------------------------------------------------------
// Readers: epoch registration.

#[repr(align(128))]
struct Stripe {
    count: [AtomicUsize; 2],
}

impl Stripe {
    const fn new() -> Stripe {
        Stripe {
            count: [AtomicUsize::new(0), AtomicUsize::new(0)],
        }
    }
}

/// A reader's registration in one epoch parity; leaving is the drop.
struct ReadGuard<'a> {
    counter: &'a AtomicUsize,
}

impl Drop for ReadGuard<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::Release);
    }
}

/// The stripe of the calling thread ([`crate::sync::thread_stripe`]).
#[inline]
fn my_stripe() -> usize {
    crate::sync::thread_stripe(STRIPES)
}

enum Retired {
    Top(*mut Top),
    Chunk(*mut Chunk),
}

impl Retired {
    /// Memory the object holds.
    fn bytes(&self) -> usize {
        match *self {
            // SAFETY: a retired top is not freed before it leaves the retired list, and
            // only the writer (holding the lock, as our callers do) reads its vectors.
            Retired::Top(t) => unsafe {
                size_of::<Top>() + (*t).los.capacity() * 8 + (*t).chunks.capacity() * 8
            },
            Retired::Chunk(_) => size_of::<Chunk>(),
        }
    }
}

/// State only writers touch, under the writer lock.
struct Writer {
    live: usize,
    /// (start, closing sequence) of the closed ranges, oldest first.
    closed: VecDeque<(u64, u32)>,
    next_seq: u32,
    /// Unlinked objects and the epoch at which they were unlinked.
    retired: Vec<(u64, Retired)>,
    retired_bytes: usize,
    /// Reclaimed chunks kept for reuse (at most `SPARE_CHUNKS`), sparing the allocator.
    spare: Vec<*mut Chunk>,
    /// The chunk the last insert or free wrote, and the one the last closed range
    /// forgotten lay in ([`chunk_index_hinted`]).
    hint: usize,
    forget_hint: usize,
}

/// The map. One global instance backs the free functions; tests build their own.
pub struct MemMap {
    enabled: AtomicBool,
    /// Writes are refused (counted) after a fork that caught the writer lock held, or when
    /// unlinked memory can no longer be freed.
    frozen: AtomicBool,
    cap: usize,
    root: AtomicPtr<Top>,
    /// Unique number of the last completed write (0: none yet); keys the per-thread
    /// answers of `hot`.
    generation: AtomicU64,
    epoch: AtomicU64,
    stripes: [Stripe; STRIPES],
    writer: FlagLock<Writer>,
    /// Whether `fork_prepare` took the writer lock.
    fork_locked: AtomicBool,
    untracked: AtomicU64,
    /// `fn(u64) -> Option<MemKind>` as an address, 0 when none.
    source: AtomicUsize,
    cache: [AtomicU64; CACHE_SLOTS],
}

// SAFETY: every field shared between threads is an atomic or behind `FlagLock`; the raw
// pointers in `Writer::retired` and `root` are owned by the map and only dereferenced under
// the reclamation protocol described in the module header.
unsafe impl Sync for MemMap {}
// SAFETY: as above; nothing in the map is tied to the thread that built it.
unsafe impl Send for MemMap {}

// Attributes cache word: bit 0 valid, bits 1..4 kind, bits 4..47 region, bits 47..64 epoch.
const C_VALID: u64 = 1;
const C_REGION_BITS: u32 = 43;
const C_REGION_MASK: u64 = (1 << C_REGION_BITS) - 1;
const C_EPOCH_SHIFT: u32 = 47;

fn cache_slot(region: u64) -> usize {
    (region.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE_SLOTS.trailing_zeros())) as usize
}

/// Each thread's last few answers of the map, valid while the map's generation is the one
/// they were computed at: a copy loop over the same buffers classifies without searching
/// or registering as a reader. Thread-local atomics without a destructor; a sequence word
/// (odd while being written) makes a signal handler that interrupts an update on the same
/// thread miss instead of reading a torn answer.
mod hot {
    use super::{Entry, Side};
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed, compiler_fence};

    const SLOTS: usize = 8;
    const WORDS: usize = 11;

    /// Words of the pair memo: map, generation, the two pointers, both sides' flags, and
    /// their allocations' (start, size).
    const PAIR_WORDS: usize = 9;

    pub(super) struct Hot {
        seq: AtomicU64,
        next: AtomicU64,
        slots: [[AtomicU64; WORDS]; SLOTS],
        /// The last copy's two pointers and what they were, at one generation of one map
        /// (a map id of 0, the initial value, never matches).
        pair: [AtomicU64; PAIR_WORDS],
    }

    thread_local! {
        static HOT: Hot = const {
            Hot {
                seq: AtomicU64::new(0),
                next: AtomicU64::new(0),
                slots: [const { [const { AtomicU64::new(0) }; WORDS] }; SLOTS],
                pair: [const { AtomicU64::new(0) }; PAIR_WORDS],
            }
        };
    }

    /// The sides of the pair `(a, b)` if this thread classified exactly that pair last, at
    /// `generation` of `map`.
    #[inline(always)]
    pub(super) fn get_pair(map: u64, generation: u64, a: u64, b: u64) -> Option<(Side, Side)> {
        HOT.try_with(|h| {
            let seq = h.seq.load(Relaxed);
            if seq & 1 == 1 {
                return None;
            }
            compiler_fence(std::sync::atomic::Ordering::SeqCst);
            let w = &h.pair;
            if w[2].load(Relaxed) != a
                || w[3].load(Relaxed) != b
                || w[1].load(Relaxed) != generation
                || w[0].load(Relaxed) != map
            {
                return None;
            }
            let flags = w[4].load(Relaxed);
            let sides = (
                Side::from_words(flags, w[5].load(Relaxed), w[6].load(Relaxed)),
                Side::from_words(flags >> 8, w[7].load(Relaxed), w[8].load(Relaxed)),
            );
            compiler_fence(std::sync::atomic::Ordering::SeqCst);
            (h.seq.load(Relaxed) == seq).then_some(sides)
        })
        .ok()
        .flatten()
    }

    /// Remembers the sides of the pair `(a, b)` at `generation` of `map`.
    #[inline]
    pub(super) fn put_pair(map: u64, generation: u64, a: u64, b: u64, sides: (Side, Side)) {
        let _ = HOT.try_with(|h| {
            let seq = h.seq.load(Relaxed);
            if seq & 1 == 1 {
                return;
            }
            h.seq.store(seq + 1, Relaxed);
            compiler_fence(std::sync::atomic::Ordering::SeqCst);
            let w = &h.pair;
            let (sa, sb) = sides;
            let (a0, a1) = sa.alloc.unwrap_or((0, 0));
            let (b0, b1) = sb.alloc.unwrap_or((0, 0));
            w[0].store(map, Relaxed);
            w[1].store(generation, Relaxed);
            w[2].store(a, Relaxed);
            w[3].store(b, Relaxed);
            w[4].store(sa.flags() | sb.flags() << 8, Relaxed);
            w[5].store(a0, Relaxed);
            w[6].store(a1, Relaxed);
            w[7].store(b0, Relaxed);
            w[8].store(b1, Relaxed);
            compiler_fence(std::sync::atomic::Ordering::SeqCst);
            h.seq.store(seq + 2, Relaxed);
        });
    }

    /// `Some(answer)` if this thread knows the answer for `ptr` at `generation`.
    #[inline]
    pub(super) fn get(map: u64, generation: u64, ptr: u64) -> Option<Option<Entry>> {
        if generation == 0 {
            return None;
        }
        HOT.try_with(|h| {
            let seq = h.seq.load(Relaxed);
            if seq & 1 == 1 {
                return None;
            }
            compiler_fence(std::sync::atomic::Ordering::SeqCst);
            let w = h.slots.iter().find(|w| {
                ptr >= w[2].load(Relaxed)
                    && ptr < w[3].load(Relaxed)
                    && w[1].load(Relaxed) == generation
                    && w[0].load(Relaxed) == map
            })?;
            let found = (w[4].load(Relaxed) != 0).then(|| {
                let ids = w[9].load(Relaxed);
                let tags = w[10].load(Relaxed);
                Entry {
                    start: w[5].load(Relaxed),
                    size: w[6].load(Relaxed),
                    ts: w[7].load(Relaxed),
                    closed_seq: w[8].load(Relaxed) as u32,
                    tid: ids as u32 as i32,
                    device: (ids >> 32) as u32,
                    loc: tags as u8,
                    hook: (tags >> 8) as u8,
                }
            });
            compiler_fence(std::sync::atomic::Ordering::SeqCst);
            (h.seq.load(Relaxed) == seq).then_some(found)
        })
        .ok()
        .flatten()
    }

    /// Remembers that `found` answers every pointer in `[lo, hi)` at `generation`.
    #[inline]
    pub(super) fn put(map: u64, generation: u64, lo: u64, hi: u64, found: Option<Entry>) {
        if generation == 0 {
            return;
        }
        let _ = HOT.try_with(|h| {
            let seq = h.seq.load(Relaxed);
            if seq & 1 == 1 {
                return;
            }
            h.seq.store(seq + 1, Relaxed);
            compiler_fence(std::sync::atomic::Ordering::SeqCst);
            let k = h.next.load(Relaxed);
            h.next.store(k.wrapping_add(1), Relaxed);
            let w = &h.slots[(k as usize) % SLOTS];
            let e = found.unwrap_or(Entry::new(0, 0, super::Location::Pinned, 0, 0, 0));
            w[1].store(0, Relaxed);
            w[0].store(map, Relaxed);
            w[2].store(lo, Relaxed);
            w[3].store(hi, Relaxed);
            w[4].store(u64::from(found.is_some()), Relaxed);
            w[5].store(e.start, Relaxed);
            w[6].store(e.size, Relaxed);
            w[7].store(e.ts, Relaxed);
            w[8].store(u64::from(e.closed_seq), Relaxed);
            w[9].store(u64::from(e.tid as u32) | u64::from(e.device) << 32, Relaxed);
            w[10].store(u64::from(e.loc) | u64::from(e.hook) << 8, Relaxed);
            w[1].store(generation, Relaxed);
            compiler_fence(std::sync::atomic::Ordering::SeqCst);
            h.seq.store(seq + 2, Relaxed);
        });
    }
}

impl MemMap {
    /// An empty map tracking at most `cap` live allocations.
    pub const fn with_cap(cap: usize) -> MemMap {
        MemMap {
            enabled: AtomicBool::new(true),
            frozen: AtomicBool::new(false),
            cap,
            root: AtomicPtr::new(ptr::null_mut()),
            generation: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            stripes: [const { Stripe::new() }; STRIPES],
            writer: FlagLock::new(Writer {
                live: 0,
                closed: VecDeque::new(),
                next_seq: 1,
                retired: Vec::new(),
                retired_bytes: 0,
                spare: Vec::new(),
                hint: 0,
                forget_hint: 0,
            }),
            fork_locked: AtomicBool::new(false),
            untracked: AtomicU64::new(0),
            source: AtomicUsize::new(0),
            cache: [const { AtomicU64::new(0) }; CACHE_SLOTS],
        }
    }

    pub const fn new() -> MemMap {
        MemMap::with_cap(MAX_LIVE)
    }

    // ----- readers -----

    /// Registers the calling thread as a reader of the current epoch. Never waits: it
    /// retries only if a writer advanced the epoch in between.
    #[inline]
    fn enter(&self) -> ReadGuard<'_> {
        let stripe = &self.stripes[my_stripe()];
        loop {
            let e = self.epoch.load(Ordering::SeqCst);
            let counter = &stripe.count[(e & 1) as usize];
            counter.fetch_add(1, Ordering::SeqCst);
            if self.epoch.load(Ordering::SeqCst) == e {
                return ReadGuard { counter };
            }
            counter.fetch_sub(1, Ordering::Release);
        }
    }

    /// The entry (live or closed) containing `ptr`, and the interval around `ptr` over
    /// which that answer holds (the entry itself, or the gap between two entries).
    #[inline]
    fn find(&self, _guard: &ReadGuard<'_>, ptr: u64) -> (Option<Entry>, u64, u64) {
        let top = self.root.load(Ordering::SeqCst);
        if top.is_null() {
            return (None, 0, u64::MAX);
        }
        // SAFETY: `top` was published by a writer and, the guard being registered in an
        // epoch no later than its unlinking, is not freed before the guard drops.
        let top = unsafe { &*top };
        let first = chunk_index(top, ptr);
        let mut hi = top.los.get(first + 1).copied().unwrap_or(u64::MAX);
        let mut i = first;
        loop {
            let c = top.chunks[i].load(Ordering::SeqCst);
            // SAFETY: as for `top`: a chunk reachable from a top we hold is freed only two
            // epochs after it was unlinked, after this reader has left.
            let entries = unsafe { &*c }.entries();
            let j = entries.partition_point(|e| e.start <= ptr);
            if i == first && j < entries.len() {
                hi = entries[j].start;
            }
            if j > 0 {
                let e = entries[j - 1];
                let end = e.start.saturating_add(e.size);
                return if e.contains(ptr) {
                    (Some(e), e.start, end)
                } else {
                    (None, end, hi)
                };
            }
            // Entries starting in an earlier key range may extend over `ptr`.
            if i == 0 {
                return (None, 0, hi);
            }
            i -= 1;
        }
    }

    /// The entry containing `ptr`: from this thread's recent answers if no write has
    /// completed since, else by searching the published set.
    #[inline]
    fn lookup(&self, ptr: u64) -> Option<Entry> {
        let id = self as *const MemMap as u64;
        let generation = self.generation.load(Ordering::Acquire);
        if generation == 0 && self.root.load(Ordering::Acquire).is_null() {
            // Nothing was ever tracked: no entry to find, and nothing to register for.
            return None;
        }
        if let Some(hit) = hot::get(id, generation, ptr) {
            return hit;
        }
        let (found, lo, hi) = {
            let guard = self.enter();
            self.find(&guard, ptr)
        };
        hot::put(id, generation, lo, hi, found);
        found
    }

    /// Marks the end of a write: answers cached before it are stale.
    fn bump_generation(&self) {
        // The process's epoch: unique across maps (so a map built where a dropped one
        // lived never matches the dropped one's cached answers), and it tells every
        // thread's memo of clean verdicts that they may be stale.
        let g = crate::epoch::advance();
        self.generation.store(g, Ordering::Release);
    }

    fn classify_entry(&self, found: Option<Entry>, ptr: u64) -> Classified {
        match found {
            Some(e) if e.is_live() => Classified {
                kind: e.location().kind(),
                alloc: Some(e.info()),
                freed: false,
            },
            Some(e) => Classified {
                kind: e.location().kind(),
                alloc: None,
                freed: true,
            },
            None => Classified::of_kind(self.attributes(ptr)),
        }
    }

    /// What `ptr` is. Lock-free; allocates nothing.
    #[inline]
    pub fn classify(&self, ptr: u64) -> Classified {
        if !self.enabled.load(Ordering::Relaxed) {
            return Classified::UNKNOWN;
        }
        self.classify_entry(self.lookup(ptr), ptr)
    }

    /// Both pointers of a copy.
    #[inline]
    pub fn classify_pair(&self, a: u64, b: u64) -> (Classified, Classified) {
        (self.classify(a), self.classify(b))
    }

    /// What the checks need of a copy's two pointers (`src`, `dst`): this thread's answer
    /// for the same pair if no write completed since, else [`MemMap::classify_pair`]'s.
    #[inline(always)]
    pub fn sides(&self, src: u64, dst: u64) -> (Side, Side) {
        if !self.enabled.load(Ordering::Relaxed) {
            return (Side::UNKNOWN, Side::UNKNOWN);
        }
        let id = self as *const MemMap as u64;
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(hit) = hot::get_pair(id, generation, src, dst) {
            return hit;
        }
        self.sides_searched(id, generation, src, dst)
    }

    /// [`MemMap::sides`] when this thread's memo does not answer.
    #[inline(never)]
    fn sides_searched(&self, id: u64, generation: u64, src: u64, dst: u64) -> (Side, Side) {
        let (s, d) = self.classify_pair(src, dst);
        let sides = (Side::of(&s), Side::of(&d));
        hot::put_pair(id, generation, src, dst, sides);
        sides
    }

    /// The freed allocation `ptr` lies in (for the `freed` diagnostic; `classify` says
    /// only whether there is one, to stay small on the hot path).
    pub fn freed_alloc(&self, ptr: u64) -> Option<AllocInfo> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        self.lookup(ptr).filter(|e| !e.is_live()).map(|e| e.info())
    }

    /// The runtime's answer for an untracked pointer, cached per 2 MiB region.
    fn attributes(&self, ptr: u64) -> MemKind {
        let f = self.source.load(Ordering::Acquire);
        if f == 0 {
            return MemKind::Unknown;
        }
        let region = ptr >> REGION_SHIFT;
        let slot = &self.cache[cache_slot(region)];
        let word = slot.load(Ordering::Acquire);
        if word & C_VALID != 0 && (word >> 4) & C_REGION_MASK == region {
            return MemKind::from_code((word >> 1) & 7);
        }
        // SAFETY: `source` only ever holds 0 or a `fn(u64) -> Option<MemKind>` stored by
        // `set_attributes_source`, and function pointers are never deallocated.
        let source: fn(u64) -> Option<MemKind> = unsafe { std::mem::transmute(f) };
        let kind = source(ptr).unwrap_or(MemKind::Unknown);
        // Cached only if no writer touched this slot meanwhile (its epoch would differ).
        let epoch = word >> C_EPOCH_SHIFT;
        let new = (epoch << C_EPOCH_SHIFT) | (region << 4) | (kind.code() << 1) | C_VALID;
        let _ = slot.compare_exchange(word, new, Ordering::AcqRel, Ordering::Relaxed);
        kind
    }

    /// Drops cached attributes of the regions `[start, end)` touches, and bumps the epoch
    /// of their slots so that an answer being fetched concurrently is not cached.
    fn invalidate(&self, start: u64, end: u64) {
        let r0 = start >> REGION_SHIFT;
        let r1 = (end.max(start + 1) - 1) >> REGION_SHIFT;
        let bump = |slot: &AtomicU64| {
            let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                let epoch = (w >> C_EPOCH_SHIFT).wrapping_add(1) << C_EPOCH_SHIFT;
                let region = (w >> 4) & C_REGION_MASK;
                let keep = if (r0..=r1).contains(&region) {
                    0
                } else {
                    w & ((1 << C_EPOCH_SHIFT) - 1)
                };
                Some(epoch | keep)
            });
        };
        if r1 - r0 < 64 {
            for r in r0..=r1 {
                bump(&self.cache[cache_slot(r)]);
            }
        } else {
            self.cache.iter().for_each(bump);
        }
    }

    // ----- writers -----

    fn lock_writer(&self) -> Option<FlagGuard<'_, Writer>> {
        if self.frozen.load(Ordering::Acquire) {
            return None;
        }
        // Uncontended (the common case): no clock read.
        if let Some(g) = self.writer.try_lock() {
            return Some(g);
        }
        let deadline = Instant::now() + WRITER_WAIT;
        let mut spins = 0u32;
        loop {
            if let Some(g) = self.writer.try_lock() {
                return Some(g);
            }
            spins += 1;
            if spins < 256 {
                std::hint::spin_loop();
            } else if Instant::now() >= deadline {
                return None;
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// The published top, creating the first one if there is none yet.
    fn top_for_write(&self, w: &mut Writer) -> Option<&Top> {
        let mut t = self.root.load(Ordering::SeqCst);
        if t.is_null() {
            let c = new_chunk(w, &[])?;
            let Some(mut los) = try_vec(1) else {
                // SAFETY: `c` was never published.
                unsafe { free_obj(c) };
                return None;
            };
            let Some(mut chunks) = try_vec(1) else {
                // SAFETY: `c` was never published.
                unsafe { free_obj(c) };
                return None;
            };
            los.push(0);
            chunks.push(AtomicPtr::new(c));
            let Some(nt) = new_top(los, chunks) else {
                // SAFETY: `c` was never published.
                unsafe { free_obj(c) };
                return None;
            };
            self.root.store(nt, Ordering::SeqCst);
            t = nt;
        }
        // SAFETY: only writers (holding the lock, as the caller does) unlink tops, so the
        // published top stays valid for the duration of this write.
        Some(unsafe { &*t })
    }

    /// Queues an unlinked object; room was reserved beforehand.
    fn retire(&self, w: &mut Writer, obj: Retired) {
        let epoch = self.epoch.load(Ordering::SeqCst);
        // Room was reserved by `reserve_retired`; if it was not, leaking is the safe answer.
        if w.retired.len() < w.retired.capacity() {
            w.retired_bytes += obj.bytes();
            w.retired.push((epoch, obj));
        }
    }

    fn reserve_retired(w: &mut Writer) -> bool {
        !injected_oom() && w.retired.try_reserve(4).is_ok()
    }

    /// Advances the epoch when no reader is left in the parity it would reuse.
    fn try_advance(&self) -> bool {
        let e = self.epoch.load(Ordering::SeqCst);
        let reuse = ((e + 1) & 1) as usize;
        if self
            .stripes
            .iter()
            .all(|s| s.count[reuse].load(Ordering::SeqCst) == 0)
        {
            self.epoch.store(e + 1, Ordering::SeqCst);
            true
        } else {
            false
        }
    }

    /// Frees what no reader can hold any more.
    fn reclaim(&self, w: &mut Writer) {
        if w.retired.len() < RECLAIM_AT {
            return;
        }
        if w.retired_bytes > RETIRED_MAX_BYTES {
            // A reader never left (its thread died inside `classify`): stop writing rather
            // than grow without bound; the published set stays valid for readers.
            self.frozen.store(true, Ordering::Release);
        }
        // Tags only grow, and `retain` keeps the order: the first is the oldest.
        let oldest = w.retired.first().map_or(0, |r| r.0);
        while self.epoch.load(Ordering::SeqCst) < oldest + 2 && self.try_advance() {}
        let now = self.epoch.load(Ordering::SeqCst);
        let mut freed = 0;
        if w.spare.capacity() < SPARE_CHUNKS && !injected_oom() {
            let _ = w.spare.try_reserve_exact(SPARE_CHUNKS);
        }
        let spare = &mut w.spare;
        w.retired.retain(|&(tag, ref obj)| {
            if tag + 2 > now {
                return true;
            }
            freed += obj.bytes();
            match *obj {
                Retired::Chunk(c) if spare.len() < spare.capacity().min(SPARE_CHUNKS) => {
                    spare.push(c)
                }
                // SAFETY: unlinked at epoch `tag`; the epoch has since advanced twice, each
                // advance proving the readers of the parity it reused had left, so no
                // reader registered at or before `tag` remains (module header).
                Retired::Chunk(c) => unsafe { free_obj(c) },
                // SAFETY: as for a chunk.
                Retired::Top(t) => unsafe { free_obj(t) },
            }
            false
        });
        w.retired_bytes -= freed;
    }

    /// Replaces chunk `i` of the published top by `parts` (which may exceed one chunk, or
    /// be empty). `None`: out of memory, nothing changed.
    fn replace_chunk(&self, w: &mut Writer, i: usize, parts: &[&[Entry]]) -> Option<()> {
        if !Self::reserve_retired(w) {
            return None;
        }
        let top_ptr = self.root.load(Ordering::SeqCst);
        // SAFETY: the caller holds the writer lock and has published a top.
        let top = unsafe { &*top_ptr };
        let old = top.chunks[i].load(Ordering::SeqCst);
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total == 0 && top.chunks.len() > 1 {
            // Drop the empty chunk; its key range joins the previous chunk (or, for the
            // first, the next one takes over from address 0).
            let n = top.chunks.len();
            let mut los = try_vec(n - 1)?;
            let mut chunks = try_vec(n - 1)?;
            for k in 0..n {
                if k == i {
                    continue;
                }
                los.push(if k == 1 && i == 0 { 0 } else { top.los[k] });
                chunks.push(AtomicPtr::new(top.chunks[k].load(Ordering::SeqCst)));
            }
            let nt = new_top(los, chunks)?;
            self.root.store(nt, Ordering::SeqCst);
            self.retire(w, Retired::Top(top_ptr));
            self.retire(w, Retired::Chunk(old));
            return Some(());
        }
        if total <= CHUNK {
            let c = new_chunk(w, parts)?;
            top.chunks[i].store(c, Ordering::SeqCst);
            self.retire(w, Retired::Chunk(old));
            return Some(());
        }
        // Split in two. Appending past the last entry of the last chunk (allocations in
        // rising address order) keeps the left chunk full instead of half full.
        let mut all: [MaybeUninit<Entry>; CHUNK + 1] = [MaybeUninit::uninit(); CHUNK + 1];
        debug_assert_eq!(total, CHUNK + 1);
        let mut at = 0;
        for part in parts {
            for e in part.iter() {
                all[at] = MaybeUninit::new(*e);
                at += 1;
            }
        }
        // SAFETY: the loop above initialised all `total == CHUNK + 1` elements.
        let all: &[Entry] =
            unsafe { std::slice::from_raw_parts(all.as_ptr().cast::<Entry>(), total) };
        let appended = i + 1 == top.chunks.len() && parts.last().is_some_and(|p| p.is_empty());
        let mid = if appended { CHUNK } else { total / 2 };
        let left = new_chunk(w, &[&all[..mid]])?;
        let Some(right) = new_chunk(w, &[&all[mid..]]) else {
            // SAFETY: `left` was never published.
            unsafe { free_obj(left) };
            return None;
        };
        let n = top.chunks.len();
        let built = (|| {
            let mut los = try_vec(n + 1)?;
            let mut chunks = try_vec(n + 1)?;
            for k in 0..n {
                if k == i {
                    los.push(top.los[k]);
                    chunks.push(AtomicPtr::new(left));
                    los.push(all[mid].start);
                    chunks.push(AtomicPtr::new(right));
                } else {
                    los.push(top.los[k]);
                    chunks.push(AtomicPtr::new(top.chunks[k].load(Ordering::SeqCst)));
                }
            }
            new_top(los, chunks)
        })();
        let Some(nt) = built else {
            // SAFETY: neither chunk was published.
            unsafe {
                free_obj(left);
                free_obj(right);
            }
            return None;
        };
        self.root.store(nt, Ordering::SeqCst);
        self.retire(w, Retired::Top(top_ptr));
        self.retire(w, Retired::Chunk(old));
        Some(())
    }

    /// Replaces entry `j` of chunk `i` of the published top by `entry`, which sorts in the
    /// same place: one copy of the chunk. `None`: out of memory, nothing changed.
    fn replace_entry(&self, w: &mut Writer, i: usize, j: usize, entry: Entry) -> Option<()> {
        if !Self::reserve_retired(w) {
            return None;
        }
        // SAFETY: the caller holds the writer lock and has published a top.
        let top = unsafe { &*self.root.load(Ordering::SeqCst) };
        let old = top.chunks[i].load(Ordering::SeqCst);
        // SAFETY: writer lock held; the chunk is published.
        let entries = unsafe { &*old }.entries();
        debug_assert!(j < entries.len());
        let c = new_chunk(w, &[entries])?;
        // SAFETY: `c` is unpublished and holds `entries.len() > j` initialised entries;
        // writing through a raw pointer forms no reference.
        unsafe {
            ptr::addr_of_mut!((*c).entries)
                .cast::<Entry>()
                .add(j)
                .write(entry)
        };
        top.chunks[i].store(c, Ordering::SeqCst);
        self.retire(w, Retired::Chunk(old));
        Some(())
    }

    /// The chunk index and position of the entry with the greatest start below `end`
    /// that overlaps `[start, end)`, if any.
    fn overlapping(top: &Top, start: u64, end: u64) -> Option<(usize, usize)> {
        let mut i = chunk_index(top, end - 1);
        loop {
            // SAFETY: the caller holds the writer lock, so the published chunks are live.
            let entries = unsafe { &*top.chunks[i].load(Ordering::SeqCst) }.entries();
            let j = entries.partition_point(|e| e.start < end);
            if j > 0 {
                let e = &entries[j - 1];
                return (e.span_end() > start).then_some((i, j - 1));
            }
            if i == 0 {
                return None;
            }
            i -= 1;
        }
    }

    /// Tracks a new allocation. `false`: not tracked (disabled, cap, out of memory).
    pub fn insert(
        &self,
        start: u64,
        size: u64,
        location: Location,
        ts: u64,
        tid: i32,
        hook: u8,
    ) -> bool {
        if !self.enabled.load(Ordering::Relaxed) {
            return false;
        }
        let tracked = self.insert_locked(Entry::new(start, size, location, ts, tid, hook));
        if !tracked {
            self.untracked.fetch_add(1, Ordering::Relaxed);
        }
        tracked
    }

    fn insert_locked(&self, entry: Entry) -> bool {
        let Some(mut w) = self.lock_writer() else {
            return false;
        };
        let tracked = self.insert_with(&mut w, entry);
        // After publishing: an answer fetched before this is not cached (slot epochs).
        self.invalidate(entry.start, entry.span_end());
        self.bump_generation();
        tracked
    }

    fn insert_with(&self, w: &mut Writer, entry: Entry) -> bool {
        if let Some(tracked) = self.insert_in_one_chunk(w, entry) {
            self.reclaim(w);
            return tracked;
        }
        let end = entry.span_end();
        // The runtime handed out this memory, so whatever the map holds over it was freed
        // (a free seen late, or a closed range now reused): drop it.
        loop {
            let Some(top) = self.top_for_write(w) else {
                return false;
            };
            let Some((i, j)) = Self::overlapping(top, entry.start, end) else {
                break;
            };
            // SAFETY: writer lock held; the chunk is published.
            let entries = unsafe { &*top.chunks[i].load(Ordering::SeqCst) }.entries();
            let was_live = entries[j].is_live();
            if self
                .replace_chunk(w, i, &[&entries[..j], &entries[j + 1..]])
                .is_none()
            {
                return false;
            }
            if was_live {
                w.live -= 1;
            }
        }
        let tracked = w.live < self.cap && {
            let Some(top) = self.top_for_write(w) else {
                return false;
            };
            let i = chunk_index(top, entry.start);
            // SAFETY: writer lock held; the chunk is published.
            let entries = unsafe { &*top.chunks[i].load(Ordering::SeqCst) }.entries();
            let j = entries.partition_point(|e| e.start < entry.start);
            self.replace_chunk(w, i, &[&entries[..j], &[entry], &entries[j..]])
                .is_some()
        };
        if tracked {
            w.live += 1;
        }
        self.reclaim(w);
        tracked
    }

    /// The common insert in one copy: when everything the new entry overlaps (a closed
    /// range it reuses, most often) lies in the chunk it goes into, one new chunk drops
    /// those and adds it, after one search. `None`: not that case (an overlap may reach
    /// into a neighbouring chunk, nothing is published yet, the cap is reached, or out of
    /// memory), nothing changed: the general path of [`MemMap::insert_with`] decides.
    fn insert_in_one_chunk(&self, w: &mut Writer, entry: Entry) -> Option<bool> {
        let top_ptr = self.root.load(Ordering::SeqCst);
        if top_ptr.is_null() {
            return None;
        }
        // SAFETY: writer lock held (the caller's); the published top stays valid meanwhile.
        let top = unsafe { &*top_ptr };
        let end = entry.span_end();
        let i = chunk_index_hinted(top, entry.start, &mut w.hint);
        // An entry of the next chunk starts at or after its key range's `lo`.
        if top.los.get(i + 1).is_some_and(|&next| next < end) {
            return None;
        }
        // SAFETY: writer lock held; the chunk is published.
        let entries = unsafe { &*top.chunks[i].load(Ordering::SeqCst) }.entries();
        let j = entries.partition_point(|e| e.start < entry.start);
        // Entries never overlap, so only the one before `j` can reach over `start`; with
        // none before it in this chunk, an earlier chunk's last entry might.
        let lo = match j.checked_sub(1) {
            Some(k) if entries[k].span_end() > entry.start => k,
            Some(_) => j,
            None if i == 0 => j,
            None => {
                // The previous chunk's last entry (chunks are never empty while there are
                // two or more) is the one that could reach over `start`.
                // SAFETY: writer lock held; the chunk is published.
                let prev = unsafe { &*top.chunks[i - 1].load(Ordering::SeqCst) }.entries();
                match prev.last() {
                    Some(e) if e.span_end() <= entry.start => j,
                    _ => return None,
                }
            }
        };
        // Usually none or one (the closed range the allocation reuses): a scan.
        let mut hi = j;
        while hi < entries.len() && entries[hi].start < end {
            hi += 1;
        }
        let dropped_live = entries[lo..hi].iter().filter(|e| e.is_live()).count();
        if w.live - dropped_live >= self.cap {
            return None;
        }
        if hi == lo + 1 {
            // One entry over it (the closed range it reuses): the new one takes its place.
            self.replace_entry(w, i, lo, entry)?;
        } else {
            self.replace_chunk(w, i, &[&entries[..lo], &[entry], &entries[hi..]])?;
        }
        w.live = w.live - dropped_live + 1;
        Some(true)
    }

    /// Closes the live allocation starting at `start`; its range is remembered for
    /// `freed` (the last [`CLOSED_KEPT`] ones) until an allocation covers it.
    pub fn remove(&self, start: u64) -> Option<AllocInfo> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let mut w = self.lock_writer()?;
        let closed = self.remove_with(&mut w, start);
        if let Some(a) = closed {
            self.invalidate(a.start, a.start.saturating_add(a.size.max(1)));
        }
        self.bump_generation();
        closed
    }

    fn remove_with(&self, w: &mut Writer, start: u64) -> Option<AllocInfo> {
        let top_ptr = self.root.load(Ordering::SeqCst);
        if top_ptr.is_null() {
            return None;
        }
        // SAFETY: writer lock held; the published top stays valid while we hold it.
        let top = unsafe { &*top_ptr };
        let i = chunk_index_hinted(top, start, &mut w.hint);
        // SAFETY: writer lock held; the chunk is published.
        let entries = unsafe { &*top.chunks[i].load(Ordering::SeqCst) }.entries();
        let j = entries.partition_point(|e| e.start < start);
        let e = *entries.get(j).filter(|e| e.start == start && e.is_live())?;
        let mut closed = e;
        closed.closed_seq = w.next_seq;
        // Unregistered host memory is not freed: it is pageable again, never `freed`.
        // The closing order is kept in a ring reserved once; without it, no `freed`.
        let remember = e.loc != LOC_REGISTERED
            && (w.closed.capacity() > CLOSED_KEPT
                || (!injected_oom() && w.closed.try_reserve_exact(CLOSED_KEPT + 1).is_ok()));
        let ok = if remember {
            self.replace_entry(w, i, j, closed)
        } else {
            self.replace_chunk(w, i, &[&entries[..j], &entries[j + 1..]])
        };
        // Out of memory: the entry stays live (an allocation over it replaces it).
        ok?;
        w.live -= 1;
        if remember {
            w.closed.push_back((start, w.next_seq));
            w.next_seq = w.next_seq.wrapping_add(1).max(1);
            while w.closed.len() > CLOSED_KEPT {
                let Some((old, seq)) = w.closed.pop_front() else {
                    break;
                };
                self.forget_closed(w, old, seq);
            }
        }
        self.reclaim(w);
        Some(e.info())
    }

    /// Drops the closed range `(start, seq)` if it is still there.
    fn forget_closed(&self, w: &mut Writer, start: u64, seq: u32) {
        let Some(top) = self.top_for_write(w) else {
            return;
        };
        let i = chunk_index_hinted(top, start, &mut w.forget_hint);
        // SAFETY: writer lock held; the chunk is published.
        let entries = unsafe { &*top.chunks[i].load(Ordering::SeqCst) }.entries();
        let j = entries.partition_point(|e| e.start < start);
        if entries
            .get(j)
            .is_some_and(|e| e.start == start && e.closed_seq == seq)
        {
            // Out of memory here leaves one extra closed range: harmless.
            let _ = self.replace_chunk(w, i, &[&entries[..j], &entries[j + 1..]]);
        }
    }

    /// Visits every entry of the published set.
    fn for_each_entry(&self, mut f: impl FnMut(&Entry)) {
        let guard = self.enter();
        let top = self.root.load(Ordering::SeqCst);
        if top.is_null() {
            return;
        }
        // SAFETY: as in `find`, the guard keeps the top and its chunks alive.
        let top = unsafe { &*top };
        for c in &top.chunks {
            // SAFETY: as in `find`.
            unsafe { &*c.load(Ordering::SeqCst) }
                .entries()
                .iter()
                .for_each(&mut f);
        }
        drop(guard);
    }

    /// Allocations never freed, per location (device per id, pinned, registered), of
    /// those made at or after `since` (the callers' clock: a forked child passes the time
    /// of the fork, so that what it inherited is not called its own leak).
    pub fn leaks(&self, since: u64) -> Vec<LeakSummary> {
        let mut out: Vec<LeakSummary> = Vec::new();
        self.for_each_entry(|e| {
            if !e.is_live() || e.info().ts < since {
                return;
            }
            let location = e.location();
            if let Some(s) = out.iter_mut().find(|s| s.location == location) {
                s.count += 1;
                s.bytes = s.bytes.saturating_add(e.size);
                if e.size > s.largest.size {
                    s.largest = e.info();
                }
            } else if out.try_reserve(1).is_ok() {
                out.push(LeakSummary {
                    location,
                    count: 1,
                    bytes: e.size,
                    largest: e.info(),
                });
            }
        });
        out.sort_by_key(|s| match s.location {
            Location::Device(id) => (0, id),
            Location::Pinned => (1, 0),
            Location::Registered => (2, 0),
        });
        out
    }

    /// Live entries tracked.
    pub fn live(&self) -> usize {
        let mut n = 0;
        self.for_each_entry(|e| n += usize::from(e.is_live()));
        n
    }

    /// Closed ranges remembered.
    pub fn closed(&self) -> usize {
        let mut n = 0;
        self.for_each_entry(|e| n += usize::from(!e.is_live()));
        n
    }

    pub fn untracked(&self) -> u64 {
        self.untracked.load(Ordering::Relaxed)
    }

    pub fn set_attributes_source(&self, f: fn(u64) -> Option<MemKind>) {
        self.cache
            .iter()
            .for_each(|s| s.store(0, Ordering::Relaxed));
        self.source.store(f as usize, Ordering::Release);
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
        crate::epoch::advance();
    }

    /// Whether the map is on (one relaxed load).
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Before `fork`: take the writer lock so the child never inherits a write half done.
    pub fn fork_prepare(&self) {
        let taken = self.lock_writer().map(std::mem::forget).is_some();
        self.fork_locked.store(taken, Ordering::Relaxed);
    }

    /// In the parent after `fork`.
    pub fn fork_parent(&self) {
        if self.fork_locked.swap(false, Ordering::Relaxed) {
            // SAFETY: `fork_prepare` on this thread took the lock and forgot its guard.
            unsafe { self.writer.force_unlock() };
        }
    }

    /// In the child after `fork`: the child keeps the map; reader counters of threads that
    /// do not exist here are cleared and the writer lock released. If the fork caught
    /// another thread's write half done (`fork_prepare` not called or timed out while the
    /// lock was held), the child keeps classifying against the published set, which is
    /// always whole, but tracks nothing new.
    pub fn fork_child(&self) {
        for s in &self.stripes {
            s.count[0].store(0, Ordering::SeqCst);
            s.count[1].store(0, Ordering::SeqCst);
        }
        if self.fork_locked.swap(false, Ordering::Relaxed) {
            // SAFETY: in the child only the forking thread exists, and it took the lock in
            // `fork_prepare` and forgot the guard; no other guard is live.
            unsafe { self.writer.force_unlock() };
        } else if self.writer.try_lock().is_none() {
            // A thread that does not exist here held the lock: its write may be half done.
            self.frozen.store(true, Ordering::Release);
        }
    }
}

impl Default for MemMap {
    fn default() -> Self {
        MemMap::new()
    }
}

impl Drop for MemMap {
    fn drop(&mut self) {
        let w = self.writer.try_lock().map(|mut g| {
            for c in std::mem::take(&mut g.spare) {
                // SAFETY: `&mut self`: spare chunks are unreachable and owned by the map.
                unsafe { free_obj(c) };
            }
            std::mem::take(&mut g.retired)
        });
        for (_, obj) in w.into_iter().flatten() {
            // SAFETY: `&mut self`: no reader or writer exists any more.
            unsafe {
                match obj {
                    Retired::Top(t) => free_obj(t),
                    Retired::Chunk(c) => free_obj(c),
                }
            }
        }
        let top = *self.root.get_mut();
        if !top.is_null() {
            // SAFETY: `&mut self`: nothing else can reach the published set.
            unsafe {
                for c in &(*top).chunks {
                    free_obj(c.load(Ordering::Relaxed));
                }
                free_obj(top);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The process's map.

static MAP: MemMap = MemMap::new();

/// The process's map's write generation: it changes whenever an allocation, free or
/// registration completes (0 while nothing was ever written). Answers computed at one
/// generation hold as long as it stays the same.
#[inline]
pub fn generation() -> u64 {
    MAP.generation.load(Ordering::Acquire)
}

/// Whether the process's map is on.
#[inline]
pub fn is_enabled() -> bool {
    MAP.is_enabled()
}

/// Tracks an allocation; `false` if not tracked (cap reached, out of memory: counted).
pub fn insert(start: u64, size: u64, location: Location, ts: u64, tid: i32, hook: u8) -> bool {
    MAP.insert(start, size, location, ts, tid, hook)
}

/// Closes the allocation starting at `start` (free, unregister).
pub fn remove(start: u64) -> Option<AllocInfo> {
    MAP.remove(start)
}

/// What `ptr` is (hot path: lock-free, no allocation).
#[inline]
pub fn classify(ptr: u64) -> Classified {
    MAP.classify(ptr)
}

/// A freed allocation's details, for the `freed` diagnostic.
pub fn freed_alloc(ptr: u64) -> Option<AllocInfo> {
    MAP.freed_alloc(ptr)
}

/// A copy's two pointers.
#[inline]
pub fn classify_pair(src: u64, dst: u64) -> (Classified, Classified) {
    MAP.classify_pair(src, dst)
}

/// What the checks need of a copy's two pointers (hot path: lock-free, no allocation).
#[inline(always)]
pub fn sides(src: u64, dst: u64) -> (Side, Side) {
    MAP.sides(src, dst)
}

/// Installs the runtime fallback for untracked pointers (`aclrtPointerGetAttributes`).
pub fn set_attributes_source(f: fn(u64) -> Option<MemKind>) {
    MAP.set_attributes_source(f)
}

/// Allocations made at or after `since` and never freed ([`MemMap::leaks`]).
pub fn leaks(since: u64) -> Vec<LeakSummary> {
    MAP.leaks(since)
}

pub fn untracked() -> u64 {
    MAP.untracked()
}

pub fn fork_prepare() {
    MAP.fork_prepare()
}

pub fn fork_parent() {
    MAP.fork_parent()
}

pub fn fork_child() {
    MAP.fork_child()
}

pub fn set_enabled(on: bool) {
    MAP.set_enabled(on)
}

// ---------------------------------------------------------------------------------------
// Measurement.

fn bench_map(live: usize) -> Box<MemMap> {
    let map = Box::new(MemMap::new());
    for k in 0..live as u64 {
        map.insert(
            0x1_0000_0000 + k * 0x10_0000,
            0x8_0000,
            Location::Device(0),
            k,
            1,
            0,
        );
    }
    map
}

/// Nanoseconds per `classify_pair` (one copy's two pointers, both inside live
/// allocations) with `live` allocations. `spread` pointers drawn at random over all of
/// them (the cache-cold worst case) when true, else a copy loop over 4 buffers.
pub fn bench_classify(live: usize, iters: u64, spread: bool) -> f64 {
    let map = bench_map(live);
    let live = live.max(1) as u64;
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut pairs = Vec::with_capacity(4096);
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let pick = |v: u64| if spread { v % live } else { v % live.min(4) };
        let a = 0x1_0000_0000 + pick(x) * 0x10_0000 + (x >> 45);
        let b = 0x1_0000_0000 + pick(x >> 20) * 0x10_0000 + (x & 0x7_FFFF);
        pairs.push((a, b));
    }
    let started = Instant::now();
    for k in 0..iters {
        let (a, b) = pairs[(k & 4095) as usize];
        std::hint::black_box(map.classify_pair(std::hint::black_box(a), b));
    }
    started.elapsed().as_nanos() as f64 / iters.max(1) as f64
}

/// Nanoseconds per insert and per remove with `live` allocations tracked: batches of 64
/// allocations at scattered addresses among them, then their frees.
pub fn bench_insert_remove(live: usize, iters: u64) -> (f64, f64) {
    let map = bench_map(live);
    let span = live.max(1) as u64 * 0x10_0000;
    // Inside the gaps between the live allocations (each MiB's upper half).
    let addr = |k: u64| {
        let slot = k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
        0x1_0000_0000 + (slot * 0x10_0000) % span + 0x8_0000 + (k % 64) * 0x1000
    };
    let (mut inserting, mut removing) = (Duration::ZERO, Duration::ZERO);
    let batches = iters.div_ceil(64);
    for batch in 0..batches {
        let started = Instant::now();
        for k in batch * 64..batch * 64 + 64 {
            map.insert(addr(k), 0x800, Location::Pinned, k, 1, 0);
        }
        inserting += started.elapsed();
        let started = Instant::now();
        for k in batch * 64..batch * 64 + 64 {
            map.remove(addr(k));
        }
        removing += started.elapsed();
    }
    let n = (batches * 64) as f64;
    (
        inserting.as_nanos() as f64 / n,
        removing.as_nanos() as f64 / n,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    const MIB: u64 = 1 << 20;

    fn dev(map: &MemMap, start: u64, size: u64) -> bool {
        map.insert(start, size, Location::Device(3), 7, 11, 2)
    }

    #[test]
    fn classify_inside_outside_and_at_the_edges() {
        let map = MemMap::new();
        assert!(dev(&map, 0x1000, 0x100));
        assert!(map.insert(0x4000, 0x10, Location::Pinned, 1, 2, 3));
        assert!(map.insert(0x5000, 0x10, Location::Registered, 1, 2, 3));
        let c = map.classify(0x1000);
        assert_eq!(c.kind, MemKind::Device);
        assert_eq!(
            c.alloc,
            Some(AllocInfo {
                start: 0x1000,
                size: 0x100,
                location: Location::Device(3),
                ts: 7,
                tid: 11,
                hook: 2
            })
        );
        assert!(!c.freed);
        assert_eq!(map.classify(0x10FF).kind, MemKind::Device);
        assert_eq!(map.classify(0x1100), Classified::UNKNOWN);
        assert_eq!(map.classify(0x0FFF), Classified::UNKNOWN);
        assert_eq!(map.classify(0), Classified::UNKNOWN);
        assert_eq!(map.classify(u64::MAX), Classified::UNKNOWN);
        assert_eq!(map.classify(0x4008).kind, MemKind::Pinned);
        assert_eq!(map.classify(0x500F).kind, MemKind::Registered);
        let (a, b) = map.classify_pair(0x4000, 0x1080);
        assert_eq!((a.kind, b.kind), (MemKind::Pinned, MemKind::Device));
        assert_eq!(MemKind::Registered.name(), "registered");
        assert_eq!(MemKind::Pageable.name(), "pageable");
    }

    /// The per-thread answer for the last pair is the map's own answer, and no longer used
    /// once an allocation or a free completed (on any map, in any order of pairs).
    #[test]
    fn sides_of_a_pair_follow_every_write() {
        let map = MemMap::new();
        let other = MemMap::new();
        assert_eq!(map.sides(0x4000, 0x1000), (Side::UNKNOWN, Side::UNKNOWN));
        assert!(dev(&map, 0x1000, 0x100));
        let expect = |m: &MemMap, a: u64, b: u64| {
            let (x, y) = m.classify_pair(a, b);
            (Side::of(&x), Side::of(&y))
        };
        for _ in 0..2 {
            let (s, d) = map.sides(0x4000, 0x1080);
            assert_eq!((s, d), expect(&map, 0x4000, 0x1080));
            assert_eq!(d.kind, MemKind::Device);
            assert_eq!(d.alloc, Some((0x1000, 0x100)));
            assert_eq!(other.sides(0x4000, 0x1080), (Side::UNKNOWN, Side::UNKNOWN));
        }
        assert!(map.remove(0x1000).is_some());
        let (_, d) = map.sides(0x4000, 0x1080);
        assert!(d.freed && d.alloc.is_none(), "{d:?}");
        assert!(dev(&map, 0x1000, 0x80));
        let (_, d) = map.sides(0x4000, 0x1010);
        assert_eq!((d.freed, d.alloc), (false, Some((0x1000, 0x80))));
        assert_eq!(map.sides(0x4000, 0x1080), expect(&map, 0x4000, 0x1080));
        assert_eq!(map.sides(0x1080, 0x1010), expect(&map, 0x1080, 0x1010));
        assert_eq!(map.sides(0x1010, 0x1080).0.alloc, Some((0x1000, 0x80)));
    }

    #[test]
    fn a_range_running_past_the_end_reports_its_allocation() {
        let map = MemMap::new();
        assert!(dev(&map, 0x10_0000, 0x1000));
        let (ptr, count) = (0x10_0F00u64, 0x200u64);
        let a = map.classify(ptr).alloc.expect("inside");
        assert!(ptr + count > a.start + a.size);
        assert_eq!(a.end(), 0x10_1000);
        assert!(a.contains(ptr) && !a.contains(a.end()));
    }

    #[test]
    fn freed_ranges_until_reused() {
        let map = MemMap::new();
        assert!(dev(&map, 0x1000, 0x1000));
        assert_eq!(map.remove(0x1800), None, "only by start");
        let info = map.remove(0x1000).expect("live");
        assert_eq!(info.size, 0x1000);
        assert_eq!(map.remove(0x1000), None, "already closed");
        let c = map.classify(0x1800);
        assert!(c.freed);
        assert_eq!(c.alloc, None);
        assert_eq!(c.kind, MemKind::Device);
        assert_eq!(map.freed_alloc(0x1800), Some(info));
        assert_eq!(map.freed_alloc(0x2800), None);
        // A smaller allocation over part of it: the whole closed range is forgotten.
        assert!(map.insert(0x1400, 0x100, Location::Pinned, 0, 0, 0));
        assert_eq!(map.classify(0x1800), Classified::UNKNOWN);
        assert_eq!(map.classify(0x1450).kind, MemKind::Pinned);
        assert_eq!((map.live(), map.closed()), (1, 0));
        // A new allocation over a live one means its free was missed: replaced.
        assert!(dev(&map, 0x1000, 0x2000));
        assert_eq!(map.classify(0x1450).kind, MemKind::Device);
        assert_eq!((map.live(), map.closed()), (1, 0));
    }

    #[test]
    fn unlinked_memory_is_freed_once_readers_leave() {
        let map = MemMap::new();
        let retired = |map: &MemMap| map.writer.try_lock().expect("idle").retired.len();
        let churn = |map: &MemMap| {
            for k in 0..20_000u64 {
                assert!(dev(map, (k % 500) * 0x1000, 0x100));
                if k % 3 == 0 {
                    map.remove((k % 500) * 0x1000);
                }
            }
        };
        churn(&map);
        assert!(retired(&map) < RECLAIM_AT + 4, "{}", retired(&map));
        // A reader that never leaves holds everything unlinked after it entered...
        let stuck = map.enter();
        churn(&map);
        assert!(retired(&map) > 1000);
        assert!(!map.frozen.load(Ordering::SeqCst));
        // ...until it leaves.
        drop(stuck);
        churn(&map);
        assert!(retired(&map) < RECLAIM_AT + 4, "{}", retired(&map));
    }

    #[test]
    fn a_reader_that_never_leaves_stops_tracking_not_memory() {
        let map = MemMap::new();
        assert!(dev(&map, 0x100_0000, 0x100));
        std::mem::forget(map.enter());
        let mut refused = None;
        for k in 0..1_000_000u64 {
            if !dev(&map, (k % 500) * 0x1000, 0x100) {
                refused = Some(k);
                break;
            }
            map.remove((k % 500) * 0x1000);
        }
        assert!(refused.is_some(), "tracking stops before memory runs away");
        let bytes = map.writer.try_lock().expect("idle").retired_bytes;
        assert!(bytes <= RETIRED_MAX_BYTES + 4096, "{bytes}");
        assert_eq!(map.untracked(), 1);
        assert_eq!(map.classify(0x100_0010).kind, MemKind::Device);
    }

    #[test]
    fn recent_answers_follow_every_write() {
        let map = MemMap::new();
        assert!(dev(&map, 0x10_0000, 0x1000));
        assert!(dev(&map, 0x30_0000, 0x1000));
        for _ in 0..3 {
            assert_eq!(map.classify(0x10_0010).kind, MemKind::Device);
            assert_eq!(map.classify(0x20_0000), Classified::UNKNOWN, "a gap");
        }
        assert!(map.insert(0x20_0000, 0x10, Location::Pinned, 0, 0, 0));
        assert_eq!(
            map.classify(0x20_0000).kind,
            MemKind::Pinned,
            "the gap is filled"
        );
        assert!(map.remove(0x10_0000).is_some());
        assert!(map.classify(0x10_0010).freed, "the entry is closed");
        // A new map where the old one lived does not see the old one's answers.
        let boxed = Box::new(MemMap::new());
        assert!(dev(&boxed, 0x50_0000, 0x10));
        assert_eq!(boxed.classify(0x50_0000).kind, MemKind::Device);
        let at = &*boxed as *const MemMap;
        drop(boxed);
        let again = Box::new(MemMap::new());
        assert!(again.insert(0x40_0000, 0x10, Location::Pinned, 0, 0, 0));
        if std::ptr::eq(&*again, at) {
            assert_eq!(again.classify(0x50_0000), Classified::UNKNOWN);
        }
    }

    #[test]
    fn unregistered_memory_is_not_freed() {
        let map = MemMap::new();
        map.set_attributes_source(|_| Some(MemKind::Pageable));
        assert_eq!(map.classify(0x4000_0010).kind, MemKind::Pageable);
        assert!(map.insert(0x4000_0000, 0x1000, Location::Registered, 0, 0, 5));
        assert_eq!(map.classify(0x4000_0010).kind, MemKind::Registered);
        assert!(map.remove(0x4000_0000).is_some());
        let c = map.classify(0x4000_0010);
        assert_eq!((c.kind, c.freed), (MemKind::Pageable, false));
        assert_eq!((map.live(), map.closed()), (0, 0));
    }

    #[test]
    fn the_last_4096_closed_ranges_are_kept() {
        let map = MemMap::new();
        let n = CLOSED_KEPT as u64 + 100;
        for k in 0..n {
            assert!(dev(&map, k * 0x100, 0x80));
        }
        for k in 0..n {
            assert!(map.remove(k * 0x100).is_some());
        }
        assert_eq!(map.live(), 0);
        assert_eq!(map.closed(), CLOSED_KEPT);
        assert!(!map.classify(99 * 0x100).freed);
        assert!(map.classify(100 * 0x100).freed);
        assert!(map.classify((n - 1) * 0x100 + 0x7F).freed);
        assert!(!map.classify((n - 1) * 0x100 + 0x80).freed);
        // Reusing a closed range and freeing it again: the stale order entry is skipped.
        assert!(dev(&map, 100 * 0x100, 0x80));
        assert!(map.remove(100 * 0x100).is_some());
        assert!(dev(&map, n * 0x100, 0x80));
        assert!(map.remove(n * 0x100).is_some());
        assert_eq!(map.closed(), CLOSED_KEPT);
        assert!(map.classify(100 * 0x100).freed, "closed again, recently");
        assert!(!map.classify(101 * 0x100).freed, "the oldest went");
    }

    static SOURCE_CALLS: AtomicUsize = AtomicUsize::new(0);

    fn counting_source(ptr: u64) -> Option<MemKind> {
        SOURCE_CALLS.fetch_add(1, Ordering::SeqCst);
        match ptr >> 40 {
            0 => Some(MemKind::Pageable),
            1 => Some(MemKind::Registered),
            _ => None,
        }
    }

    #[test]
    fn attributes_are_cached_per_region_until_a_write_touches_it() {
        let map = MemMap::new();
        assert_eq!(map.classify(0x20_0000).kind, MemKind::Unknown, "no source");
        map.set_attributes_source(counting_source);
        let calls = || SOURCE_CALLS.load(Ordering::SeqCst);
        let before = calls();
        assert_eq!(map.classify(0x20_0010).kind, MemKind::Pageable);
        assert_eq!(map.classify(0x3F_FFFF).kind, MemKind::Pageable);
        assert_eq!(calls() - before, 1, "one question per 2 MiB region");
        assert_eq!(map.classify(0x40_0000).kind, MemKind::Pageable);
        assert_eq!(calls() - before, 2);
        assert_eq!(map.classify((1 << 40) + 5).kind, MemKind::Registered);
        assert_eq!(map.classify((2 << 40) + 5).kind, MemKind::Unknown);
        assert_eq!(map.classify((2 << 40) + 6).kind, MemKind::Unknown);
        assert_eq!(calls() - before, 4, "no answer is cached too");
        // An allocation in the first region invalidates it, not the second.
        assert!(map.insert(0x30_0000, 0x10, Location::Pinned, 0, 0, 0));
        assert_eq!(map.classify(0x30_0000).kind, MemKind::Pinned);
        assert_eq!(map.classify(0x20_0010).kind, MemKind::Pageable);
        assert_eq!(map.classify(0x40_0000).kind, MemKind::Pageable);
        assert_eq!(calls() - before, 5);
        // So does a free, and a large allocation invalidates every region it covers.
        assert!(map.remove(0x30_0000).is_some());
        assert!(map.insert(0x4000_0000, 512 * MIB, Location::Device(0), 0, 0, 0));
        assert_eq!(map.classify(0x20_0010).kind, MemKind::Pageable);
        assert_eq!(map.classify(0x40_0000).kind, MemKind::Pageable);
        assert_eq!(calls() - before, 6, "only the freed region was asked again");
        assert_eq!(map.classify(0x5000_0000).kind, MemKind::Device);
    }

    #[test]
    fn an_invalidation_during_a_question_is_not_overwritten() {
        let map = MemMap::new();
        map.set_attributes_source(counting_source);
        let region = 0x20_0000u64 >> REGION_SHIFT;
        let slot = &map.cache[cache_slot(region)];
        let word = slot.load(Ordering::SeqCst);
        map.invalidate(0x20_0000, 0x20_0001);
        let new = (word >> C_EPOCH_SHIFT << C_EPOCH_SHIFT) | (region << 4) | C_VALID;
        assert!(
            slot.compare_exchange(word, new, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        );
    }

    #[test]
    fn the_cap_refuses_and_counts() {
        let map = MemMap::with_cap(40);
        for k in 0..40 {
            assert!(dev(&map, k * 0x1000, 0x10));
        }
        assert!(!dev(&map, 0x100_0000, 0x10));
        assert_eq!(map.untracked(), 1);
        assert_eq!(map.classify(0x100_0000), Classified::UNKNOWN);
        assert!(map.remove(0).is_some());
        assert!(dev(&map, 0x100_0000, 0x10));
        assert_eq!(map.untracked(), 1);
        assert_eq!(map.live(), 40);
    }

    #[test]
    fn out_of_memory_leaves_the_map_whole() {
        let map = MemMap::new();
        for k in 0..100 {
            assert!(dev(&map, k * 0x1000, 0x10));
        }
        for fail in 1..=4 {
            FAIL_ALLOCS.with(|f| f.set(fail));
            let tracked = dev(&map, 0x100_0000 + fail as u64 * 0x1000, 0x10);
            FAIL_ALLOCS.with(|f| f.set(0));
            if !tracked {
                assert_eq!(map.classify(0x100_0000 + fail as u64 * 0x1000).alloc, None);
            }
        }
        assert!(map.untracked() >= 1);
        assert!(
            map.remove(99 * 0x1000).is_some(),
            "reserves the closed ring"
        );
        FAIL_ALLOCS.with(|f| f.set(1));
        assert_eq!(map.remove(0), None);
        FAIL_ALLOCS.with(|f| f.set(0));
        assert_eq!(
            map.classify(5).kind,
            MemKind::Device,
            "still live after a failed free"
        );
        for k in 0..99 {
            assert_eq!(map.classify(k * 0x1000 + 1).kind, MemKind::Device);
        }
        assert!(map.remove(0).is_some());
        // Without the closed ring (out of memory at the first free) a free still closes.
        let fresh = MemMap::new();
        assert!(dev(&fresh, 0x1000, 0x10));
        FAIL_ALLOCS.with(|f| f.set(1));
        assert!(fresh.remove(0x1000).is_some());
        FAIL_ALLOCS.with(|f| f.set(0));
        assert_eq!(fresh.classify(0x1000), Classified::UNKNOWN);
    }

    #[test]
    fn disabled_is_a_no_op() {
        let map = MemMap::new();
        assert!(dev(&map, 0x1000, 0x10));
        map.set_enabled(false);
        assert!(!dev(&map, 0x2000, 0x10));
        assert_eq!(map.untracked(), 0);
        assert_eq!(map.classify(0x1000), Classified::UNKNOWN);
        assert_eq!(map.remove(0x1000), None);
        map.set_enabled(true);
        assert_eq!(map.classify(0x2000), Classified::UNKNOWN);
        assert_eq!(map.classify(0x1000).kind, MemKind::Device);
    }

    #[test]
    fn leaks_per_location_with_the_largest() {
        let map = MemMap::new();
        assert!(map.insert(0x1000, 10, Location::Device(1), 5, 9, 1));
        assert!(map.insert(0x2000, 30, Location::Device(1), 6, 9, 1));
        assert!(map.insert(0x3000, 20, Location::Device(0), 7, 9, 1));
        assert!(map.insert(0x4000, 40, Location::Pinned, 8, 9, 4));
        assert!(map.insert(0x5000, 50, Location::Registered, 9, 9, 6));
        assert!(map.insert(0x6000, 60, Location::Registered, 9, 9, 6));
        assert!(map.remove(0x6000).is_some());
        let leaks = map.leaks(0);
        let rows: Vec<_> = leaks
            .iter()
            .map(|l| (l.location, l.count, l.bytes, l.largest.start))
            .collect();
        assert_eq!(
            rows,
            vec![
                (Location::Device(0), 1, 20, 0x3000),
                (Location::Device(1), 2, 40, 0x2000),
                (Location::Pinned, 1, 40, 0x4000),
                (Location::Registered, 1, 50, 0x5000),
            ]
        );
        assert_eq!(leaks[1].largest.ts, 6);
        // Only what was allocated at or after `since`: a forked child's own.
        let own: Vec<_> = map
            .leaks(8)
            .iter()
            .map(|l| (l.location, l.count, l.largest.start))
            .collect();
        assert_eq!(
            own,
            vec![
                (Location::Pinned, 1, 0x4000),
                (Location::Registered, 1, 0x5000)
            ]
        );
    }

    #[test]
    fn fork_child_resets_or_freezes() {
        let map = MemMap::new();
        assert!(dev(&map, 0x1000, 0x10));
        // A reader counted in the parent vanishes in the child.
        std::mem::forget(map.enter());
        map.fork_prepare();
        map.fork_child();
        assert!(
            map.stripes
                .iter()
                .all(|s| s.count[0].load(Ordering::SeqCst) == 0)
        );
        assert!(dev(&map, 0x2000, 0x10), "child tracks after a clean fork");
        map.fork_prepare();
        map.fork_parent();
        assert!(dev(&map, 0x3000, 0x10), "parent tracks after fork");
        // A fork that caught another thread's write: the child reads but writes nothing.
        let held = map.writer.try_lock().expect("free");
        std::mem::forget(held);
        map.fork_child();
        assert!(!dev(&map, 0x4000, 0x10));
        assert!(map.remove(0x1000).is_none());
        assert_eq!(map.classify(0x2008).kind, MemKind::Device);
    }

    #[test]
    fn a_forked_child_inherits_the_map() {
        let map = MemMap::new();
        assert!(dev(&map, 0x1000, 0x10));
        map.fork_prepare();
        // SAFETY: the child only touches `map` (plain memory and atomics) and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            map.fork_child();
            let ok = map.classify(0x1008).kind == MemKind::Device
                && dev(&map, 0x2000, 0x10)
                && map.remove(0x1000).is_some()
                && map.classify(0x1008).freed;
            // SAFETY: `_exit` ends the child without running the parent's handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        map.fork_parent();
        assert!(pid > 0);
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid status pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(
            map.classify(0x2000),
            Classified::UNKNOWN,
            "the child's insert"
        );
    }

    #[test]
    fn readers_run_beside_a_writer() {
        let map = Arc::new(MemMap::new());
        // Permanent allocations on even MiB, churn on odd ones.
        for k in 0..2000u64 {
            assert!(dev(&map, 2 * k * MIB, MIB / 2));
        }
        let done = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|t| {
                let (map, done) = (map.clone(), done.clone());
                std::thread::spawn(move || {
                    let mut x = 0x1234_5678u64 + t;
                    let mut rounds = 0u64;
                    while !done.load(Ordering::Acquire) || rounds < 1000 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let k = x % 4000;
                        let ptr = k * MIB + (x >> 50);
                        let c = map.classify(ptr);
                        if k.is_multiple_of(2) {
                            let a = c.alloc.expect("permanent allocation");
                            assert_eq!(a.start, k * MIB);
                            assert!(!c.freed);
                        } else if let Some(a) = c.alloc.or_else(|| map.freed_alloc(ptr)) {
                            assert_eq!(a.start, k * MIB, "churned range, right one");
                            assert_eq!(a.location, Location::Pinned);
                        }
                        rounds += 1;
                    }
                    rounds
                })
            })
            .collect();
        for round in 0..20u64 {
            for k in (1..4000u64).step_by(2) {
                let start = k * MIB;
                if (k + round) % 3 == 0 {
                    map.remove(start);
                } else {
                    map.insert(start, MIB / 4, Location::Pinned, round, 0, 0);
                }
            }
        }
        done.store(true, Ordering::Release);
        for r in readers {
            assert!(r.join().expect("reader") >= 1000);
        }
        for k in (0..4000u64).step_by(2) {
            assert_eq!(map.classify(k * MIB).alloc.map(|a| a.start), Some(k * MIB));
        }
    }

    /// The map's semantics written the obvious way.
    #[derive(Default)]
    struct Model {
        live: BTreeMap<u64, u64>,
        closed: BTreeMap<u64, (u64, u64)>,
        order: VecDeque<(u64, u64)>,
        seq: u64,
    }

    impl Model {
        fn insert(&mut self, start: u64, size: u64, cap: usize) -> bool {
            let end = start + size.max(1);
            self.live
                .retain(|&s, &mut z| !(s < end && s + z.max(1) > start));
            self.closed
                .retain(|&s, &mut (z, _)| !(s < end && s + z.max(1) > start));
            if self.live.len() >= cap {
                return false;
            }
            self.live.insert(start, size);
            true
        }

        fn remove(&mut self, start: u64) -> Option<u64> {
            let size = self.live.remove(&start)?;
            self.seq += 1;
            self.closed.insert(start, (size, self.seq));
            self.order.push_back((start, self.seq));
            while self.order.len() > CLOSED_KEPT {
                let (s, q) = self.order.pop_front().unwrap();
                if self.closed.get(&s).is_some_and(|&(_, sq)| sq == q) {
                    self.closed.remove(&s);
                }
            }
            Some(size)
        }

        fn classify(&self, ptr: u64) -> (Option<(u64, u64)>, bool) {
            if let Some((&s, &z)) = self.live.range(..=ptr).next_back() {
                if ptr < s + z {
                    return (Some((s, z)), false);
                }
            }
            if let Some((&s, &(z, _))) = self.closed.range(..=ptr).next_back() {
                if ptr < s + z {
                    return (None, true);
                }
            }
            (None, false)
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u64, u64),
        Remove(u64),
        Classify(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..600u64, 0..24u64).prop_map(|(s, z)| Op::Insert(s * 8, z * 3)),
            2 => (0..600u64).prop_map(|s| Op::Remove(s * 8)),
            3 => (0..5000u64).prop_map(Op::Classify),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn behaves_like_a_model(ops in proptest::collection::vec(op(), 1..400)) {
            let cap = 150;
            let map = MemMap::with_cap(cap);
            let mut model = Model::default();
            for op in ops {
                match op {
                    Op::Insert(s, z) => {
                        let tracked = map.insert(s, z, Location::Device(0), 0, 0, 0);
                        prop_assert_eq!(tracked, model.insert(s, z, cap));
                    }
                    Op::Remove(s) => {
                        prop_assert_eq!(map.remove(s).map(|a| a.size), model.remove(s));
                    }
                    Op::Classify(p) => {
                        let c = map.classify(p);
                        let (alloc, freed) = model.classify(p);
                        prop_assert_eq!(c.alloc.map(|a| (a.start, a.size)), alloc);
                        prop_assert_eq!(c.freed, freed);
                    }
                }
            }
            prop_assert_eq!(map.live(), model.live.len());
            prop_assert_eq!(map.closed(), model.closed.len());
            for p in 0..5000 {
                let (alloc, freed) = model.classify(p);
                let c = map.classify(p);
                prop_assert_eq!((c.alloc.map(|a| (a.start, a.size)), c.freed), (alloc, freed));
            }
        }
    }

    #[test]
    fn bursts_of_rising_and_falling_addresses_stay_sorted() {
        let map = MemMap::new();
        for k in 0..5000u64 {
            assert!(dev(&map, 0x1000_0000 + k * 0x100, 0x80));
            assert!(dev(&map, 0x1000_0000 - (k + 1) * 0x100, 0x80));
        }
        let mut last = None;
        map.for_each_entry(|e| {
            assert!(last.is_none_or(|l| l < e.start));
            last = Some(e.start);
        });
        for k in 0..5000u64 {
            assert!(map.remove(0x1000_0000 + k * 0x100).is_some());
        }
        assert_eq!(map.live(), 5000);
        assert_eq!(map.classify(0x1000_0000 - 0x100).kind, MemKind::Device);
    }

    #[test]
    #[ignore]
    fn measure_hot_classify_at_10000() {
        let hot = bench_classify(10_000, 50_000_000, false);
        println!("live  10000: classify_pair {hot:.1} ns (4 buffers)");
    }

    #[test]
    #[ignore]
    fn measure_writes_at_10000() {
        let (ins, rem) = bench_insert_remove(10_000, 400_000);
        println!("live  10000: insert {ins:.0} ns, remove {rem:.0} ns");
    }

    /// `cargo test --release --lib memmap::tests::measure -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn measure() {
        for live in [0usize, 100, 10_000, 100_000] {
            let hot = bench_classify(live, 20_000_000, false);
            let spread = bench_classify(live, 20_000_000, true);
            let (ins, rem) = bench_insert_remove(live, 200_000);
            println!(
                "live {live:>6}: classify_pair {hot:.1} ns (4 buffers), {spread:.1} ns (all), \
                 insert {ins:.0} ns, remove {rem:.0} ns"
            );
        }
    }
}
