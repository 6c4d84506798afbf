//! The timeline (SPEC §5): every intercepted call becomes one Chrome-trace span.
//!
//! Path of a call: the pipeline writes one fixed-size [`record::Record`] straight into the
//! calling thread's ring ([`ring`]); the writer thread ([`writer`]) formats records as JSON
//! ([`json`]) and appends them to the file every [`FLUSH_INTERVAL`]. The calling thread
//! never formats, locks or writes, except the one call that creates the file.
//! `NPUSHIM_TRACE_SINK=tracing-chrome` turns each call into a `tracing` event with typed
//! fields recorded by `tracing-chrome`'s layer instead ([`layer`]), for the tracing
//! ecosystem, at several microseconds per call.

pub mod clock;
pub mod device;
pub mod file;
pub mod json;
pub mod layer;
pub mod record;
pub mod ring;
pub mod writer;

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::config::Sink;
use crate::sync::{Event, FlagLock};
use record::Record;

/// Data reaches the file at least this often (SPEC §5 asks for 100 ms).
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// A producer whose ring is full waits for the writer as long as the writer makes progress;
/// only a writer that made none for this long (a hung disk) makes it drop the record.
pub const STALL_LIMIT: Duration = Duration::from_millis(100);

/// Tracing is off (`NPUSHIM_TRACE=off`, no file could be created, or a write failed).
const OFF: u8 = 0;
/// Configured; the file is created at the first call.
const IDLE: u8 = 1;
/// One thread is creating the file.
const STARTING: u8 = 2;
/// The writer is running.
const RUNNING: u8 = 3;
/// The final flush happened (exit).
const FINISHED: u8 = 4;

static STATE: AtomicU8 = AtomicU8::new(OFF);

/// Moves to `state`, and to a new epoch: a verdict remembered while tracing was in another
/// state must not route a call now.
fn set_state(state: u8) {
    STATE.store(state, Ordering::Release);
    crate::epoch::advance();
}

/// Calls seen after the final flush (from atexit handlers or static destructors).
static LATE: AtomicU64 = AtomicU64::new(0);

/// Wakes the writer early (a ring is half full, or exit).
pub(crate) static KICK: Event = Event::new();

/// Bumped by the writer after every batch it takes out of a ring.
pub(crate) static PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Producers waiting for the writer (for ring space, or for a ring to be freed), and the
/// signal they sleep on: the writer wakes them when it has emptied or freed a ring and at
/// the end of each cycle, only when someone waits (no system call otherwise).
static WAITING: AtomicU32 = AtomicU32::new(0);
static PROGRESSED: Event = Event::new();

/// Set when a producer gave up on a stalled writer; cleared when the writer progresses.
/// While set, a full ring drops at once instead of waiting again.
static STALLED: AtomicBool = AtomicBool::new(false);

/// What the trace needs from the rest of the shim to describe the process.
#[derive(Clone, Debug)]
pub struct Settings {
    pub template: String,
    pub sink: Sink,
    pub rank: u32,
    /// The `config` object of the `npushim` metadata event, as JSON text.
    pub config_json: String,
    /// `NPUSHIM_RUN_INDEX`: where to list the trace file once it is created.
    pub run_index: Option<String>,
}

/// The settings, published once with one atomic store of a leaked box (fork-safe, unlike a
/// `OnceLock` caught mid-initialisation).
static SETTINGS: AtomicPtr<Settings> = AtomicPtr::new(std::ptr::null_mut());

fn settings() -> Option<&'static Settings> {
    // SAFETY: non-null values are leaked `Box<Settings>`s, never freed or changed.
    unsafe { SETTINGS.load(Ordering::Acquire).as_ref() }
}

/// Arms tracing with `settings` (once per process; `None` = tracing off).
pub fn configure(settings: Option<Settings>) {
    if let Some(s) = settings {
        let boxed = Box::into_raw(Box::new(s));
        match SETTINGS.compare_exchange(
            std::ptr::null_mut(),
            boxed,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => set_state(IDLE),
            // SAFETY: `boxed` was not published; it is ours to free.
            Err(_) => drop(unsafe { Box::from_raw(boxed) }),
        }
    }
}

/// True while calls are being recorded (or will be, at the first call).
#[inline]
pub fn active() -> bool {
    matches!(STATE.load(Ordering::Relaxed), IDLE | STARTING | RUNNING)
}

/// Where the trace is, as far as one call is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Not traced (off, or tracing stopped).
    Off,
    /// The writer is running: record.
    Running,
    /// The file is still to be created, or the final flush happened: the pipeline handles
    /// both (creating the file, or saying once that late calls go untraced).
    Other,
}

/// The current [`Phase`] (one relaxed load).
#[inline]
pub fn state() -> Phase {
    match STATE.load(Ordering::Relaxed) {
        RUNNING => Phase::Running,
        OFF => Phase::Off,
        _ => Phase::Other,
    }
}

/// Records one call. Hot path: one relaxed load, then the record goes straight into the
/// calling thread's ring (or, with the `tracing-chrome` sink, becomes a `tracing` event).
#[inline(always)]
pub fn record(rec: &Record) {
    record_in(ring::local(), rec);
}

/// [`record()`], for a caller that already looked up the calling thread's words (`local`:
/// [`ring::local`]).
#[inline(always)]
pub fn record_in(local: Option<&ring::Local>, rec: &Record) {
    record_with(local, || *rec);
}

/// Records the call `make` describes, building the record where it is stored (the ring's
/// slot, when it has room): no copy through the stack. `make` runs at most once.
#[inline(always)]
pub fn record_with(local: Option<&ring::Local>, make: impl FnOnce() -> Record) {
    match STATE.load(Ordering::Relaxed) {
        RUNNING => {}
        IDLE | STARTING => {
            start();
            if STATE.load(Ordering::Acquire) != RUNNING {
                return;
            }
        }
        FINISHED => return late(),
        _ => return,
    }
    if CHROME.load(Ordering::Relaxed) {
        return layer::emit_chrome(&make());
    }
    let current = local.map_or(ring::Current::None, ring::Local::current);
    push_into(current, record::RECORD_UNITS as u64, |words| {
        make().write_to(words)
    });
}

/// Set when the `tracing-chrome` sink records the calls instead of the rings.
static CHROME: AtomicBool = AtomicBool::new(false);

/// Before a traced call is forwarded: starts the trace at the process's first call and
/// gives the thread its ring, so that nothing after the forward needs memory or a lock (a
/// signal handler that interrupts the real function, perhaps inside malloc, may record a
/// call of its own on this thread).
#[inline]
pub fn prepare_thread() {
    if matches!(STATE.load(Ordering::Relaxed), IDLE | STARTING) {
        start();
    }
    if STATE.load(Ordering::Relaxed) == RUNNING {
        let _ = ring::current();
    }
}

#[cold]
fn late() {
    if LATE.fetch_add(1, Ordering::Relaxed) == 0 {
        let _no_cancel = crate::boundary::NoCancel::new();
        crate::diag::warn!(
            "calls made after the trace was finalized (from atexit handlers or static \
             destructors) are forwarded but not traced"
        );
    }
}

/// [`push_into`] the calling thread's own ring, looked up here (records made off the
/// hooked path, such as the device timeline's).
pub(crate) fn push_with(units: u64, fill: impl Fn(&mut [u128])) {
    push_into(ring::current(), units, fill);
}

/// Stores a record of `units` ring units, filled in place by `fill`, in the calling
/// thread's ring. If the ring is full the caller waits for the writer (back-pressure) as
/// long as the writer makes progress; a record that cannot be stored because the writer
/// stalled is counted as dropped, never lost silently.
#[inline]
fn push_into(current: ring::Current, units: u64, fill: impl FnOnce(&mut [u128])) {
    let ring = match current {
        ring::Current::Ring(r) => r,
        ring::Current::Full => match wait_for_ring() {
            Some(r) => r,
            None => return ring::note_dropped_without_ring(),
        },
        ring::Current::Reentered => return ring::note_reentered(),
        ring::Current::None => return ring::note_dropped_without_ring(),
    };
    if !ring.enter() {
        return ring::note_reentered();
    }
    let units = units.clamp(1, 2);
    // Filled in one place, in the ring when it has room, else in `spare` for the slow
    // path: the record is built where it is stored.
    let mut spare: Option<[u128; record::RECORD_WORDS]> = None;
    let n = (units as usize * record::UNIT_WORDS).min(record::RECORD_WORDS);
    let reserved = ring.try_reserve(units);
    let words = match reserved {
        // SAFETY: the reservation just made, not yet published; nothing else holds it.
        Some(head) => unsafe { ring.reserved(head, units) },
        None => &mut spare.insert([0; record::RECORD_WORDS])[..n],
    };
    fill(words);
    match (reserved, &spare) {
        (Some(head), _) => {
            let taken = ring.publish(head, units);
            // Wake the writer each time the ring has taken another half of its capacity.
            if taken % (ring::CAPACITY as u64 / 2) < units {
                KICK.wake();
            }
        }
        (None, Some(words)) => push_slow(ring, &words[..n]),
        (None, None) => {}
    }
    ring.leave();
}

/// A call made from a signal handler that interrupted the shim on its own thread: forwarded
/// by the pipeline, counted here as dropped with its own reason (also while the shim is
/// still initialising, before it knows whether the trace is on: the count is only reported
/// in a trace).
#[cold]
pub fn note_reentered() {
    ring::note_reentered();
}

/// Waits, as long as the writer makes progress, until `ready` succeeds; `None` if the
/// writer stalled or stopped first. Holds cancellation off: this is the shim's own wait,
/// not a place where the program could be cancelled without it.
#[cold]
fn wait_for_writer<T>(mut ready: impl FnMut() -> Option<T>) -> Option<T> {
    let _no_cancel = crate::boundary::NoCancel::new();
    if STALLED.load(Ordering::Relaxed) {
        KICK.wake();
        return None;
    }
    WAITING.fetch_add(1, Ordering::Relaxed);
    let mut seen = PROGRESS.load(Ordering::Acquire);
    let mut deadline = std::time::Instant::now() + STALL_LIMIT;
    let mut done = None;
    while STATE.load(Ordering::Relaxed) == RUNNING {
        let signal = PROGRESSED.seq();
        // Pairs with the fence in `wake_waiters`.
        std::sync::atomic::fence(Ordering::SeqCst);
        if let Some(d) = ready() {
            done = Some(d);
            break;
        }
        KICK.wake();
        // Woken when the writer has emptied a ring or ends a cycle; the timeout bounds a
        // lost race and a writer busy with other rings.
        PROGRESSED.wait(signal, Duration::from_millis(1));
        let now = PROGRESS.load(Ordering::Acquire);
        if now != seen {
            seen = now;
            deadline = std::time::Instant::now() + STALL_LIMIT;
        } else if std::time::Instant::now() >= deadline {
            STALLED.store(true, Ordering::Relaxed);
            break;
        }
    }
    WAITING.fetch_sub(1, Ordering::Relaxed);
    done.or_else(&mut ready)
}

/// A thread's first record while the rings of exited threads are at their cap: wait for
/// the writer to free one of them.
#[cold]
fn wait_for_ring() -> Option<&'static ring::Ring> {
    wait_for_writer(|| match ring::current() {
        ring::Current::Ring(r) => Some(r),
        _ => None,
    })
}

#[cold]
fn push_slow(ring: &ring::Ring, rec: &[u128]) {
    if wait_for_writer(|| ring.try_push(rec)).is_none() {
        ring.note_dropped();
    }
}

/// Called by the writer after each batch.
pub(crate) fn note_progress() {
    PROGRESS.fetch_add(1, Ordering::Release);
    if STALLED.load(Ordering::Relaxed) {
        STALLED.store(false, Ordering::Relaxed);
    }
}

/// Called by the writer when it has emptied a ring, and at the end of each cycle (which
/// may have freed the rings of exited threads): wakes the producers waiting for it. Not
/// after every batch: a producer whose ring was full then resumes with the whole ring free
/// instead of waking for each batch's worth of room.
pub(crate) fn wake_waiters() {
    // Pairs with the fence in `wait_for_writer`: either the waiter sees this progress
    // when it checks, or this sees the waiter and wakes it.
    std::sync::atomic::fence(Ordering::SeqCst);
    if WAITING.load(Ordering::Relaxed) > 0 {
        PROGRESSED.wake_all();
    }
}

/// Creates the file and installs the sink; a thread that arrives while another one does
/// this waits for it (the sink must be in place before any event is emitted, or the event
/// would go nowhere).
#[cold]
fn start() {
    let _no_cancel = crate::boundary::NoCancel::new();
    if let Err(state) = STATE.compare_exchange(IDLE, STARTING, Ordering::AcqRel, Ordering::Acquire)
    {
        if state == STARTING {
            for _ in 0..40_000 {
                if STATE.load(Ordering::Acquire) != STARTING {
                    break;
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        return;
    }
    crate::epoch::advance();
    let Some(settings) = settings() else {
        set_state(OFF);
        return;
    };
    let started = match settings.sink {
        Sink::Native => writer::start(settings),
        Sink::TracingChrome => {
            let started = layer::start_chrome(settings);
            CHROME.store(started, Ordering::Relaxed);
            started
        }
    };
    set_state(if started { RUNNING } else { OFF });
}

/// The fault seed in use, for the trace's metadata (set by the process state at
/// initialisation and in a forked child; the trace never asks for it).
static SEED: AtomicU64 = AtomicU64::new(0);

/// Records the seed the trace reports.
pub fn set_seed(seed: u64) {
    SEED.store(seed, Ordering::Relaxed);
}

/// The seed the trace reports.
pub(crate) fn seed() -> u64 {
    SEED.load(Ordering::Relaxed)
}

/// Metadata the final flush writes (name and args JSON), handed over at exit.
static EXIT_METADATA: FlagLock<Option<(&'static str, String)>> = FlagLock::new(None);

/// Asks the final flush to write one more metadata event (e.g. the leak summary).
pub fn exit_metadata(name: &'static str, args_json: String) {
    if let Some(mut slot) = EXIT_METADATA.lock_for(Duration::from_millis(100)) {
        *slot = Some((name, args_json));
    }
}

/// What [`exit_metadata`] left for the final flush.
pub(crate) fn take_exit_metadata() -> Option<(&'static str, String)> {
    EXIT_METADATA.try_lock().and_then(|mut slot| slot.take())
}

/// Stops tracing after a write error (the file written so far stays valid).
pub(crate) fn stop() {
    set_state(OFF);
}

pub(crate) fn is_running() -> bool {
    STATE.load(Ordering::Relaxed) == RUNNING
}

/// Writes everything recorded so far (before an injected abort).
pub fn flush_now() {
    if is_running() {
        writer::flush(Duration::from_millis(500));
    }
}

/// The final flush at exit: drains every ring, writes the stats and the closing `]`.
pub fn finish() {
    for _ in 0..2000 {
        if STATE.load(Ordering::Acquire) != STARTING {
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    if STATE
        .compare_exchange(RUNNING, FINISHED, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    crate::epoch::advance();
    KICK.wake();
    match settings().map(|s| s.sink) {
        Some(Sink::TracingChrome) => layer::finish_chrome(),
        _ => writer::finish(),
    }
}

/// `pthread_atfork` child handler: the parent's file and records are not ours.
pub fn fork_child() {
    ring::fork_child();
    writer::fork_child();
    LATE.store(0, Ordering::Relaxed);
    let next = match (settings(), STATE.load(Ordering::Relaxed)) {
        // tracing-chrome's writer thread and guard cannot be rebuilt in a child.
        (Some(s), _) if s.sink == Sink::TracingChrome => OFF,
        (Some(_), OFF) => OFF,
        (Some(_), _) => IDLE,
        (None, _) => OFF,
    };
    set_state(next);
}
