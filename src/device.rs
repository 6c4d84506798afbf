//! The device timeline (SPEC §10): async copies timed on the device with runtime events.
//!
//! With `NPUSHIM_DEVICE=events`, each async copy or set (`aclrt*Async`, at any depth: the
//! `aclrtMemcpyAsync` an HCCL copy issues carries the real stream) that is forwarded,
//! succeeds, moves at least one byte and does not run synchronously gets a start event
//! recorded before it and an end event after it, on its own stream. The events come from a bounded pool per device
//! ([`POOL_PAIRS`] pairs, created with `aclrtCreateEventWithFlag(…, ACL_EVENT_TIME_LINE)`
//! by the first such copy on the device) and are reused once read. On the calling thread
//! that is all: two event records, a lock-free pop and push of a pool slot, plain stores
//! into the slot; no allocation, no lock, no I/O. No free pair: the copy goes untimed and
//! is counted.
//!
//! A background thread ([`poller`]) reads pairs back (`aclrtQueryEventStatus`,
//! `aclrtEventGetTimestamp`), maps device time onto the host's CLOCK_MONOTONIC with a
//! calibration it repeats (an event recorded on an idle stream of its own and waited for,
//! bracketed by host clock reads; the rate is fitted between two anchors far apart, the
//! offset taken at the anchor nearest the span), and stores each span as a device record
//! in its own ring for the trace writer. A host wait that returns reads back the pairs it
//! waited for at once ([`after_wait`]), so `aclFinalize` right after the program's last
//! wait does not take their times with it. At exit the outstanding pairs are drained with a
//! bounded wait; a forked child starts a pool of its own and never touches its parent's
//! events. Owns no trace formatting (that is `trace::device`).

use std::cell::UnsafeCell;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::abi::types::{Api, Call, Class};
use crate::real::{Helper, helper};

mod poller;

/// Event pairs per device: copies outstanding on one device beyond this go untimed.
pub const POOL_PAIRS: usize = 256;
/// Devices the timeline follows (ids 0..64).
const MAX_DEVICES: usize = 64;
/// `ACL_EVENT_TIME_LINE`: an event that records a timestamp.
const ACL_EVENT_TIME_LINE: u32 = 8;

/// Set once at initialisation: the timeline is on and a trace is being written.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Copies that found no free pair (counted, never waited for), made by threads without a
/// trace ring; the others count in their ring ([`note_untimed`]).
static UNTIMED: crate::sync::StripedCounter = crate::sync::StripedCounter::new();

/// Counts a copy that goes untimed: in the calling thread's ring when it has one (a plain
/// store, no locked instruction), else in the shared counter.
#[inline]
fn note_untimed() {
    match crate::trace::ring::local().and_then(crate::trace::ring::Local::ring) {
        Some(ring) => ring.note_untimed(),
        None => UNTIMED.add_one(),
    }
}

/// Copies left untimed so far.
pub(crate) fn untimed() -> u64 {
    UNTIMED.get() + crate::trace::ring::total_untimed()
}
/// Pairs handed to the poller and not yet read back.
static OUTSTANDING: AtomicU64 = AtomicU64::new(0);

/// Turns the timeline on (once, at initialisation).
pub fn configure(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// True when copies are timed (one relaxed load).
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Slot states.
const FREE: u8 = 0;
/// Taken by a calling thread (start recorded, copy being submitted).
const OWNED: u8 = 1;
/// Both events recorded around a copy that succeeded: for the poller to read.
const PENDING: u8 = 2;
/// Start recorded but the copy failed: for the poller to free once the start completed.
const DISCARD: u8 = 3;
/// Being read back (by the poller, or by a thread whose host wait just returned).
const READING: u8 = 4;
/// Read back: the device times are in the slot (0 when the runtime gave none).
const READ: u8 = 5;

/// What the calling thread leaves in a slot for the poller.
#[derive(Clone, Copy, Debug, Default)]
struct SlotData {
    hook: u8,
    kind: i32,
    bytes: u64,
    stream: u64,
    host_tid: i32,
    host_start: u64,
    host_end: u64,
    /// Device timestamps (ns), filled in by whoever reads the pair back; 0: none.
    start_dev: u64,
    end_dev: u64,
}

/// One pair of events and the copy it times.
struct Slot {
    /// The next free slot (index + 1; 0 ends the list).
    next: AtomicU32,
    state: AtomicU8,
    start_event: usize,
    end_event: usize,
    /// Written by the owning thread between taking the slot and its Release store of
    /// `PENDING`; read by the poller after its Acquire load of `PENDING`.
    data: UnsafeCell<SlotData>,
}

// SAFETY: `data` is written only by the thread that popped the slot off the free list (the
// only owner until it publishes with a Release store of `state`), and read only by the
// poller after an Acquire load of that state; every other field is atomic or immutable.
unsafe impl Sync for Slot {}

/// The event pool of one device, and what the poller needs to calibrate its clock.
struct Pool {
    device: u32,
    /// Head of the free list: a generation tag in the high half (against ABA), slot index +
    /// 1 in the low half (0: empty).
    free: AtomicU64,
    slots: &'static [Slot],
    /// The context the pool was created in (the poller makes it current to calibrate).
    context: usize,
    /// An idle stream and a timeline event of the shim's own, for calibration.
    cal_stream: usize,
    cal_event: usize,
}

impl Pool {
    /// Takes a free slot (lock-free).
    #[inline]
    fn pop(&self) -> Option<u32> {
        let mut head = self.free.load(Ordering::Acquire);
        loop {
            let index = (head as u32).checked_sub(1)?;
            let next = self.slots[index as usize].next.load(Ordering::Relaxed);
            let tag = (head >> 32).wrapping_add(1);
            match self.free.compare_exchange_weak(
                head,
                tag << 32 | next as u64,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(index),
                Err(now) => head = now,
            }
        }
    }

    /// Whether the free list holds a pair now (a hint: another thread may take it first).
    #[inline]
    fn has_free(&self) -> bool {
        self.free.load(Ordering::Relaxed) as u32 != 0
    }

    /// Gives a slot back (lock-free).
    #[inline]
    fn push(&self, index: u32) {
        let slot = &self.slots[index as usize];
        slot.state.store(FREE, Ordering::Relaxed);
        let mut head = self.free.load(Ordering::Acquire);
        loop {
            slot.next.store(head as u32, Ordering::Relaxed);
            let tag = (head >> 32).wrapping_add(1);
            match self.free.compare_exchange_weak(
                head,
                tag << 32 | (index as u64 + 1),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => head = now,
            }
        }
    }
}

/// Device states.
const UNSEEN: u8 = 0;
const CREATING: u8 = 1;
const READY: u8 = 2;
const FAILED: u8 = 3;

struct DeviceEntry {
    state: AtomicU8,
    pool: AtomicPtr<Pool>,
}

static DEVICES: [DeviceEntry; MAX_DEVICES] = [const {
    DeviceEntry {
        state: AtomicU8::new(UNSEEN),
        pool: AtomicPtr::new(std::ptr::null_mut()),
    }
}; MAX_DEVICES];

/// A copy being timed: its pool and slot.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pool: &'static Pool,
    index: u32,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pool(device {})", self.device)
    }
}

type RecordEventFn = unsafe extern "C" fn(usize, usize) -> c_int;

/// `aclrtRecordEvent(event, stream)`, or an error code when the runtime lacks it.
#[inline]
fn record_event(event: usize, stream: usize) -> c_int {
    let Some(addr) = helper(Helper::RecordEvent) else {
        return -1;
    };
    // SAFETY: the runtime's aclrtRecordEvent has this C signature (two handles by value).
    let f = unsafe { std::mem::transmute::<usize, RecordEventFn>(addr) };
    // SAFETY: `event` is an event of the pool; `stream` is the program's own stream
    // argument, passed on as the copy itself passes it. The runtime validates both.
    unsafe { f(event, stream) }
}

/// The calling thread's current device, or `None` when the runtime cannot say.
#[inline]
fn current_device() -> Option<u32> {
    let id = crate::real::current_device()?;
    (0..MAX_DEVICES as i32).contains(&id).then_some(id as u32)
}

/// Before forwarding `call`: the device it would be timed on, when it qualifies (an ACL
/// async copy or set of at least one byte that will not run synchronously) and that
/// device's pool may have a free pair; `None` (counted as untimed when the pool is empty or
/// being made) otherwise. Cheap enough to run outside the panic boundary, so that a copy
/// that goes untimed pays neither the boundary nor a cancellation-state change: it cannot
/// panic (no indexing, no allocation), and a thread cancelled inside the runtime's
/// `aclrtGetDevice` leaves nothing behind.
#[inline]
pub fn candidate(call: &Call, sync: bool) -> Option<u32> {
    // A zero-byte copy or set moves nothing (the runtime returns before queueing it).
    let empty = call.count == 0 || (call.hook.class() == Class::Copy2dAsync && call.height == 0);
    if call.api != Api::Acl || !call.hook.class().is_async() || sync || empty {
        return None;
    }
    let device = current_device()?;
    let entry = DEVICES.get(device as usize)?;
    let free = match entry.state.load(Ordering::Acquire) {
        // SAFETY: a READY entry's pool is a leaked `Pool`, published before the state.
        READY => unsafe { &*entry.pool.load(Ordering::Acquire) }.has_free(),
        UNSEEN => true,
        // Another thread is making the pool.
        CREATING => false,
        _ => return None,
    };
    if !free {
        note_untimed();
        return None;
    }
    Some(device)
}

/// Starts timing `call` on `device` (from [`candidate`]): takes a pair from the device's
/// pool (making the pool at the device's first copy) and records the start event on the
/// call's stream.
#[inline]
pub fn begin(call: &Call, device: u32) -> Option<Timing> {
    let entry = DEVICES.get(device as usize)?;
    let pool = match entry.state.load(Ordering::Acquire) {
        // SAFETY: a READY entry's pool is a leaked `Pool`, published before the state.
        READY => unsafe { &*entry.pool.load(Ordering::Acquire) },
        UNSEEN => create(device)?,
        CREATING => {
            // Another thread is making the pool: this copy goes untimed, counted.
            note_untimed();
            return None;
        }
        _ => return None,
    };
    let Some(index) = pool.pop() else {
        note_untimed();
        return None;
    };
    let slot = &pool.slots[index as usize];
    if record_event(slot.start_event, call.stream) != 0 {
        pool.push(index);
        poller::note_record_failed();
        return None;
    }
    slot.state.store(OWNED, Ordering::Relaxed);
    Some(Timing { pool, index })
}

/// After the forward of a call [`begin`] timed: records the end event and hands the pair
/// to the poller (or, when the copy failed, hands it back to be freed once the start
/// event has completed).
#[inline]
pub fn end(t: Timing, call: &Call, ret: c_int, effective_kind: Option<i32>, start: u64) {
    let slot = &t.pool.slots[t.index as usize];
    OUTSTANDING.fetch_add(1, Ordering::Relaxed);
    if ret != 0 || record_event(slot.end_event, call.stream) != 0 {
        slot.state.store(DISCARD, Ordering::Release);
        return;
    }
    let host_tid = match crate::trace::ring::current() {
        crate::trace::ring::Current::Ring(r) => r.tid(),
        _ => 0,
    };
    let data = SlotData {
        hook: call.hook as u8,
        kind: effective_kind.unwrap_or(call.kind),
        bytes: if call.hook.class() == Class::Copy2dAsync {
            call.count.saturating_mul(call.height)
        } else {
            call.count
        },
        stream: call.stream as u64,
        host_tid,
        host_start: start,
        // After the end event's record: the host span (whose end the caller reads next)
        // covers both records.
        host_end: crate::trace::clock::now(),
        start_dev: 0,
        end_dev: 0,
    };
    // SAFETY: this thread owns the slot (it popped it and has not published it yet).
    unsafe { *slot.data.get() = data };
    slot.state.store(PENDING, Ordering::Release);
}

/// After a host wait returned successfully: reads back the pairs on what it waited for
/// that have completed, so that a runtime finalised right afterwards (`aclFinalize` at the
/// end of a program) still leaves their times. Runtime queries only, no allocation.
pub fn after_wait(call: &Call) {
    if OUTSTANDING.load(Ordering::Relaxed) == 0 {
        return;
    }
    let any_stream = call.hook != crate::abi::types::Hook::AclrtSynchronizeStream
        && call.hook != crate::abi::types::Hook::AclrtSynchronizeStreamWithTimeout;
    for pool in pools() {
        for slot in pool.slots {
            if slot.state.load(Ordering::Acquire) != PENDING {
                continue;
            }
            // SAFETY: published with a Release store of PENDING (seen above); `stream` is
            // not written again until the slot is freed, which needs the state to change.
            let stream = unsafe { (*slot.data.get()).stream };
            if (any_stream || stream == call.stream as u64)
                && poller::complete(slot.end_event) == Some(true)
            {
                read_back(slot);
            }
        }
    }
}

/// Claims a PENDING slot whose end event completed and stores its device times; false if
/// another thread claimed it first.
fn read_back(slot: &Slot) -> bool {
    if slot
        .state
        .compare_exchange(PENDING, READING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return false;
    }
    let start = poller::timestamp(slot.start_event).unwrap_or(0);
    let end = poller::timestamp(slot.end_event).unwrap_or(0);
    // SAFETY: this thread holds the slot in READING (won the exchange above); the data was
    // published with the Release store of PENDING, which the exchange acquired.
    unsafe {
        let data = &mut *slot.data.get();
        data.start_dev = start;
        data.end_dev = end;
    }
    slot.state.store(READ, Ordering::Release);
    true
}

/// A runtime function of type `F`, or `None`.
fn helper_fn<F: Copy>(which: Helper) -> Option<F> {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>()) };
    let addr = helper(which)?;
    // SAFETY: `F` is the function-pointer type of `which` as the runtime declares it (each
    // caller names it next to the helper), and pointer-sized (asserted above).
    Some(unsafe { std::mem::transmute_copy::<usize, F>(&addr) })
}

type CreateEventFn = unsafe extern "C" fn(*mut usize, u32) -> c_int;
type CreateStreamFn = unsafe extern "C" fn(*mut usize) -> c_int;
type GetContextFn = unsafe extern "C" fn(*mut usize) -> c_int;

/// The first timed copy on `device` makes its pool, on the calling thread (once per
/// device and process; everything it needs is allocated fallibly).
#[cold]
fn create(device: u32) -> Option<&'static Pool> {
    let entry = &DEVICES[device as usize];
    if entry
        .state
        .compare_exchange(UNSEEN, CREATING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        note_untimed();
        return None;
    }
    match build_pool(device) {
        Ok(pool) => {
            let pool: &'static Pool = pool;
            entry
                .pool
                .store(pool as *const Pool as *mut Pool, Ordering::Release);
            entry.state.store(READY, Ordering::Release);
            poller::start();
            Some(pool)
        }
        Err(why) => {
            entry.state.store(FAILED, Ordering::Release);
            crate::diag::warn!(
                "device timeline: cannot set up event timing on device {device} ({why}); its \
                 copies are not timed"
            );
            None
        }
    }
}

fn build_pool(device: u32) -> Result<&'static Pool, String> {
    let create_event: CreateEventFn =
        helper_fn(Helper::CreateEventWithFlag).ok_or("no aclrtCreateEventWithFlag")?;
    let create_stream: CreateStreamFn =
        helper_fn(Helper::CreateStream).ok_or("no aclrtCreateStream")?;
    let get_context: GetContextFn =
        helper_fn(Helper::GetCurrentContext).ok_or("no aclrtGetCurrentContext")?;
    for needed in [
        Helper::RecordEvent,
        Helper::QueryEventStatus,
        Helper::EventGetTimestamp,
        Helper::SetCurrentContext,
    ] {
        helper(needed).ok_or_else(|| format!("no {}", needed.symbol()))?;
    }
    let new_event = || {
        let mut event = 0usize;
        // SAFETY: writes one aclrtEvent handle into `event`.
        match unsafe { create_event(&mut event, ACL_EVENT_TIME_LINE) } {
            0 => Ok(event),
            code => Err(format!("aclrtCreateEventWithFlag returned {code}")),
        }
    };
    let mut context = 0usize;
    // SAFETY: writes one aclrtContext handle into `context`.
    let code = unsafe { get_context(&mut context) };
    if code != 0 {
        return Err(format!("aclrtGetCurrentContext returned {code}"));
    }
    let mut cal_stream = 0usize;
    // SAFETY: writes one aclrtStream handle into `cal_stream`.
    let code = unsafe { create_stream(&mut cal_stream) };
    if code != 0 {
        return Err(format!("aclrtCreateStream returned {code}"));
    }
    let cal_event = new_event()?;
    let mut slots: Vec<Slot> = Vec::new();
    slots
        .try_reserve_exact(POOL_PAIRS)
        .map_err(|_| "out of memory")?;
    for i in 0..POOL_PAIRS {
        slots.push(Slot {
            next: AtomicU32::new(if i + 1 < POOL_PAIRS { i as u32 + 2 } else { 0 }),
            state: AtomicU8::new(FREE),
            start_event: new_event()?,
            end_event: new_event()?,
            data: UnsafeCell::new(SlotData::default()),
        });
    }
    let mut boxed: Vec<Pool> = Vec::new();
    boxed.try_reserve_exact(1).map_err(|_| "out of memory")?;
    boxed.push(Pool {
        device,
        free: AtomicU64::new(1),
        slots: Vec::leak(slots),
        context,
        cal_stream,
        cal_event,
    });
    Ok(&Vec::leak(boxed)[0])
}

/// The pools made so far (for the poller).
fn pools() -> impl Iterator<Item = &'static Pool> {
    DEVICES.iter().filter_map(|e| {
        if e.state.load(Ordering::Acquire) != READY {
            return None;
        }
        // SAFETY: a READY entry's pool is a leaked `Pool`, published before the state.
        Some(unsafe { &*e.pool.load(Ordering::Acquire) })
    })
}

/// At exit: drains what is outstanding (bounded) and writes the totals.
pub fn finish() {
    poller::finish();
}

/// `pthread_atfork` child handler: the parent's pools and events are not ours; the child
/// makes its own at its first timed copy.
pub fn fork_child() {
    for entry in &DEVICES {
        entry.pool.store(std::ptr::null_mut(), Ordering::Relaxed);
        entry.state.store(UNSEEN, Ordering::Relaxed);
    }
    UNTIMED.reset();
    OUTSTANDING.store(0, Ordering::Relaxed);
    poller::fork_child();
}
