//! The device-timeline poller: reads event pairs back, calibrates the device clock, and
//! turns timed copies into device records for the trace.
//!
//! One background thread (all signals blocked, detached: it never keeps the process
//! alive), started by the first pool. Its state sits behind a [`FlagLock`] that the exit
//! drain takes with a timeout and a forked child resets. Every wait is bounded: the
//! calibration polls its event with a deadline instead of blocking in the runtime, a
//! runtime that answers with errors (finalised, device reset) costs the pairs it held,
//! never a hang.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use super::{
    DISCARD, OUTSTANDING, PENDING, Pool, READ, helper_fn, pools, read_back, record_event, untimed,
};
use crate::real::Helper;
use crate::sync::FlagLock;
use crate::trace::clock::monotonic_ns;
use crate::trace::device::{ClockFit, DeviceRecord, FIRST_DEVICE, FIRST_STREAM, Totals, emit};

/// How often a device's clock is calibrated again while copies are being timed.
const CALIBRATION_INTERVAL_NS: u64 = 20_000_000;
/// The poll period while pairs are outstanding, and while idle.
const BUSY_PERIOD: Duration = Duration::from_millis(1);
const IDLE_PERIOD: Duration = Duration::from_millis(10);
/// The longest the exit drain waits for outstanding pairs, and for the poller's state.
const EXIT_DRAIN: Duration = Duration::from_millis(500);
/// The longest one calibration waits for its event.
const CALIBRATION_WAIT_NS: u64 = 100_000_000;
/// Anchors kept per device (the first ones and the latest ones are what the fit uses).
const MAX_ANCHORS: usize = 512;
/// Copies read back but waiting for a calibration anchor after them, per device.
const MAX_WAITING: usize = 8192;
/// Copies are mapped once the anchors span this much host time (or at exit, or when too
/// many wait): the rate is two anchors' errors over this baseline, so a short baseline
/// would stretch or shrink every duration.
const MIN_BASELINE_NS: u64 = 200_000_000;
/// Streams with a track of their own per device.
const MAX_STREAMS: usize = 4096;

/// `ACL_EVENT_RECORDED_STATUS_COMPLETE`.
const COMPLETE: i32 = 1;

type QueryFn = unsafe extern "C" fn(usize, *mut i32) -> i32;
type TimestampFn = unsafe extern "C" fn(usize, *mut u64) -> i32;
type SetContextFn = unsafe extern "C" fn(usize) -> i32;

static STARTED: AtomicBool = AtomicBool::new(false);
static STOP: AtomicBool = AtomicBool::new(false);
/// Event records that failed on the calling thread (the copy went untimed).
static RECORD_FAILED: AtomicU64 = AtomicU64::new(0);

pub(super) fn note_record_failed() {
    RECORD_FAILED.fetch_add(1, Ordering::Relaxed);
}

/// One calibration: a device time and the host time of the same instant, with the
/// uncertainty of the pairing (half the host bracket, plus the timestamp's truncation).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Anchor {
    device_ns: u64,
    host_ns: u64,
    error_ns: u64,
}

/// A copy read back, in device time, waiting to be mapped.
#[derive(Clone, Copy, Debug)]
struct Done {
    data: super::SlotData,
    start_dev: u64,
    end_dev: u64,
}

/// What the poller knows of one device.
struct DeviceState {
    pool: &'static Pool,
    anchors: Vec<Anchor>,
    last_calibration: u64,
    /// The start timestamp each slot read last time (a record the runtime dropped leaves
    /// the previous timestamp behind: never show it twice).
    last_start: Vec<u64>,
    waiting: Vec<Done>,
    streams: Vec<(u64, u32)>,
    named: bool,
    /// The worst error of an anchor the fit used.
    worst_error: u64,
    /// Pending pairs by (stream, host submission, slot), for the in-order queries.
    order: Vec<(u64, u64, u32)>,
}

struct Poller {
    pid: u32,
    devices: Vec<DeviceState>,
    flows: u64,
    timed: u64,
    discarded: u64,
    /// Untimed copies already said.
    untimed_said: bool,
}

static STATE: FlagLock<Option<Poller>> = FlagLock::new(None);

/// Starts the poller thread (once per process; again in a forked child).
pub(super) fn start() {
    if STARTED.swap(true, Ordering::AcqRel) {
        return;
    }
    if let Some(mut state) = STATE.lock_for(Duration::from_millis(100)) {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() } as u32;
        *state = Some(Poller {
            pid,
            devices: Vec::new(),
            flows: 0,
            timed: 0,
            discarded: 0,
            untimed_said: false,
        });
    }
    if let Err(code) = spawn() {
        crate::diag::warn!(
            "device timeline: cannot start its thread (error {code}); copies are read back \
             at exit only"
        );
    }
}

/// A detached pthread with every signal blocked from its first instruction.
fn spawn() -> Result<(), i32> {
    // SAFETY: the sigsets and the attribute object are initialised before use and the
    // attribute destroyed once; the calling thread's mask is restored on every path;
    // `poller_main` has the signature pthread_create wants and ignores its argument.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let mut rc = libc::pthread_attr_init(&mut attr);
        if rc == 0 {
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            libc::pthread_attr_setstacksize(&mut attr, 512 << 10);
            let mut thread: libc::pthread_t = 0;
            rc = libc::pthread_create(&mut thread, &attr, poller_main, std::ptr::null_mut());
            if rc == 0 {
                libc::pthread_setname_np(thread, c"npushim-device".as_ptr());
            }
            libc::pthread_attr_destroy(&mut attr);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if rc == 0 { Ok(()) } else { Err(rc) }
    }
}

extern "C" fn poller_main(_: *mut libc::c_void) -> *mut libc::c_void {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: gettid has no preconditions.
        crate::trace::device::set_quiet_thread(unsafe { libc::gettid() });
        while !STOP.load(Ordering::Acquire) {
            if let Some(mut state) = STATE.try_lock() {
                if let Some(p) = state.as_mut() {
                    p.cycle(false);
                }
            }
            let busy = OUTSTANDING.load(Ordering::Relaxed) > 0;
            std::thread::sleep(if busy { BUSY_PERIOD } else { IDLE_PERIOD });
        }
    });
    std::ptr::null_mut()
}

/// Reads one event's timestamp in device nanoseconds (the runtime gives microseconds: the
/// middle of the microsecond is the best guess).
pub(super) fn timestamp(event: usize) -> Option<u64> {
    let get: TimestampFn = helper_fn(Helper::EventGetTimestamp)?;
    let mut us = 0u64;
    // SAFETY: writes one uint64_t into `us`; `event` is one of the pool's events.
    (unsafe { get(event, &mut us) } == 0).then(|| us.saturating_mul(1000) + 500)
}

/// Whether an event's latest record has completed (`None`: the runtime said no more).
pub(super) fn complete(event: usize) -> Option<bool> {
    let query: QueryFn = helper_fn(Helper::QueryEventStatus)?;
    let mut status = 0i32;
    // SAFETY: writes one aclrtEventRecordedStatus (an int) into `status`.
    (unsafe { query(event, &mut status) } == 0).then_some(status == COMPLETE)
}

/// One anchor for `pool`'s device: the tightest of three brackets of a record on the
/// shim's idle stream. `None` when the runtime does not answer (finalised, reset).
fn calibrate(pool: &Pool) -> Option<Anchor> {
    let set_context: SetContextFn = helper_fn(Helper::SetCurrentContext)?;
    // SAFETY: makes the pool's context current on this (the poller's own) thread.
    if unsafe { set_context(pool.context) } != 0 {
        return None;
    }
    let mut best: Option<Anchor> = None;
    for _ in 0..3 {
        let before = monotonic_ns();
        if record_event(pool.cal_event, pool.cal_stream) != 0 {
            return best;
        }
        let mut spins = 0u32;
        loop {
            match complete(pool.cal_event) {
                Some(true) => break,
                Some(false) => {}
                None => return best,
            }
            if monotonic_ns().saturating_sub(before) > CALIBRATION_WAIT_NS {
                return best;
            }
            spins += 1;
            if spins < 2000 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        let after = monotonic_ns();
        let Some(device_ns) = timestamp(pool.cal_event) else {
            return best;
        };
        let anchor = Anchor {
            device_ns,
            host_ns: before + (after - before) / 2,
            error_ns: (after - before) / 2 + 500,
        };
        if best.is_none_or(|b| anchor.error_ns < b.error_ns) {
            best = Some(anchor);
        }
    }
    best
}

/// The largest uncertainty of a fitted rate that is used: a real device clock drifts by
/// parts per million, so a fit less certain than this (anchors too close together, a short
/// run) would distort durations more than assuming the clocks run alike.
const MAX_RATE_UNCERTAINTY: f64 = 1e-3;

/// The device clock's rate against the host's (device ns per host ns), from the best
/// anchor of the older half and the best of the newer half (a long baseline); 1 until
/// the anchors pin it down to [`MAX_RATE_UNCERTAINTY`].
fn rate(anchors: &[Anchor]) -> f64 {
    let best = |s: &[Anchor]| s.iter().copied().min_by_key(|a| a.error_ns);
    let half = anchors.len() / 2;
    match (best(&anchors[..half]), best(&anchors[half..])) {
        (Some(a), Some(b)) if b.host_ns > a.host_ns && b.device_ns > a.device_ns => {
            let baseline = (b.host_ns - a.host_ns) as f64;
            if (a.error_ns + b.error_ns) as f64 / baseline > MAX_RATE_UNCERTAINTY {
                return 1.0;
            }
            (b.device_ns - a.device_ns) as f64 / baseline
        }
        _ => 1.0,
    }
}

/// The anchor to map `device_ns` through: close in time, and tight.
fn reference(anchors: &[Anchor], device_ns: u64, rate_error: f64) -> Option<Anchor> {
    anchors.iter().copied().min_by(|a, b| {
        let cost =
            |x: &Anchor| x.error_ns as f64 + x.device_ns.abs_diff(device_ns) as f64 * rate_error;
        cost(a).total_cmp(&cost(b))
    })
}

/// Host CLOCK_MONOTONIC ns of a device time, through `anchor` at `rate`.
fn to_host(device_ns: u64, anchor: Anchor, rate: f64) -> u64 {
    let delta = (device_ns as f64 - anchor.device_ns as f64) / rate;
    (anchor.host_ns as f64 + delta).max(0.0) as u64
}

impl DeviceState {
    fn new(pool: &'static Pool) -> DeviceState {
        DeviceState {
            pool,
            anchors: Vec::new(),
            last_calibration: 0,
            last_start: vec![0; pool.slots.len()],
            waiting: Vec::new(),
            streams: Vec::new(),
            named: false,
            worst_error: 0,
            order: Vec::with_capacity(pool.slots.len()),
        }
    }

    /// Reads back every pair that completed; frees the slots of failed copies. Pairs
    /// complete in order on their stream, so each stream's pending pairs are queried oldest
    /// first and only up to the first that is not complete: the runtime is asked about as
    /// many events per cycle as there are streams, not pairs.
    fn harvest(&mut self, discarded: &mut u64) {
        self.order.clear();
        for (i, slot) in self.pool.slots.iter().enumerate() {
            if slot.state.load(Ordering::Acquire) == PENDING {
                // SAFETY: published with a Release store of PENDING (seen above); these two
                // fields are not written again until the slot is freed (a reader that
                // claims it meanwhile writes only the device times).
                let (stream, start) =
                    unsafe { ((*slot.data.get()).stream, (*slot.data.get()).host_start) };
                self.order.push((stream, start, i as u32));
            }
        }
        self.order.sort_unstable();
        let mut blocked = None;
        for &(stream, _, i) in &self.order {
            if blocked == Some(stream) {
                continue;
            }
            let slot = &self.pool.slots[i as usize];
            match complete(slot.end_event) {
                Some(false) => blocked = Some(stream),
                Some(true) => {
                    // False when a waiting thread read it first: it is READ either way.
                    read_back(slot);
                }
                None => {
                    // The runtime no longer knows the events (finalised): claim and free.
                    if slot
                        .state
                        .compare_exchange(PENDING, DISCARD, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        *discarded += 1;
                        OUTSTANDING.fetch_sub(1, Ordering::Relaxed);
                        self.pool.push(i);
                    }
                }
            }
        }
        for (i, slot) in self.pool.slots.iter().enumerate() {
            match slot.state.load(Ordering::Acquire) {
                READ => {
                    // SAFETY: the reader published the slot with a Release store of READ,
                    // which the Acquire load above saw; nobody writes it until it is freed
                    // below.
                    let data = unsafe { *slot.data.get() };
                    let (s, e) = (data.start_dev, data.end_dev);
                    let done = (s != 0 && e >= s && s != self.last_start[i]).then(|| {
                        self.last_start[i] = s;
                        Done {
                            data,
                            start_dev: s,
                            end_dev: e,
                        }
                    });
                    match done {
                        Some(d) if self.waiting.len() < MAX_WAITING => self.waiting.push(d),
                        _ => *discarded += 1,
                    }
                }
                DISCARD => {
                    if complete(slot.start_event) == Some(false) {
                        continue;
                    }
                    *discarded += 1;
                }
                _ => continue,
            }
            OUTSTANDING.fetch_sub(1, Ordering::Relaxed);
            self.pool.push(i as u32);
        }
    }

    fn maybe_calibrate(&mut self, now: u64, force: bool) {
        let due = if self.anchors.len() < 2 {
            now >= self.last_calibration + CALIBRATION_INTERVAL_NS / 4
        } else {
            now >= self.last_calibration + CALIBRATION_INTERVAL_NS
                && (!self.waiting.is_empty() || OUTSTANDING.load(Ordering::Relaxed) > 0)
        };
        if !(due || force) {
            return;
        }
        self.last_calibration = now;
        if let Some(anchor) = calibrate(self.pool) {
            if self.anchors.len() >= MAX_ANCHORS {
                // Keep the oldest quarter (the long baseline) and drop the oldest of the
                // rest.
                self.anchors.remove(MAX_ANCHORS / 4);
            }
            self.anchors.push(anchor);
        }
    }

    /// The track number of `stream` on this device (and whether it is new).
    fn stream_tid(&mut self, stream: u64) -> (u32, bool) {
        if let Some(&(_, tid)) = self.streams.iter().find(|(s, _)| *s == stream) {
            return (tid, false);
        }
        if self.streams.len() >= MAX_STREAMS {
            return (MAX_STREAMS as u32, false);
        }
        let tid = self.streams.len() as u32 + 1;
        self.streams.push((stream, tid));
        (tid, true)
    }
}

impl Poller {
    fn cycle(&mut self, final_pass: bool) {
        for pool in pools() {
            if !self.devices.iter().any(|d| std::ptr::eq(d.pool, pool)) {
                self.devices.push(DeviceState::new(pool));
            }
        }
        let now = monotonic_ns();
        let mut discarded = 0;
        for d in 0..self.devices.len() {
            self.devices[d].harvest(&mut discarded);
            self.devices[d].maybe_calibrate(now, final_pass);
            self.convert(d, final_pass);
        }
        self.discarded += discarded;
        let untimed = untimed();
        if untimed > 0 && !self.untimed_said {
            self.untimed_said = true;
            crate::diag::warn!(
                "device timeline: no free event pair ({} per device outstanding); copies go \
                 untimed until pairs are read back (counted in the trace, npushim_device)",
                super::POOL_PAIRS
            );
        }
    }

    /// Maps the waiting copies that have an anchor after them (all of them at exit) onto
    /// the host clock and emits them.
    fn convert(&mut self, d: usize, final_pass: bool) {
        let dev = &mut self.devices[d];
        let Some(last) = dev.anchors.last().copied() else {
            return;
        };
        let rate = rate(&dev.anchors);
        // The rate's uncertainty: two anchor errors over the baseline.
        let span = dev.anchors.last().map_or(0, |l| l.host_ns) - dev.anchors[0].host_ns;
        let rate_error = if span > 0 {
            2.0 * last.error_ns as f64 / span as f64
        } else {
            1.0
        };
        let ready = final_pass || span >= MIN_BASELINE_NS || dev.waiting.len() >= MAX_WAITING / 2;
        if !ready {
            return;
        }
        let mut i = 0;
        while i < dev.waiting.len() {
            let done = dev.waiting[i];
            if !final_pass && done.end_dev > last.device_ns {
                i += 1;
                continue;
            }
            dev.waiting.swap_remove(i);
            let Some(anchor) = reference(&dev.anchors, done.start_dev, rate_error) else {
                continue;
            };
            dev.worst_error = dev.worst_error.max(anchor.error_ns);
            let (stream_tid, first_stream) = dev.stream_tid(done.data.stream);
            let mut flags = 0;
            if !dev.named {
                dev.named = true;
                flags |= FIRST_DEVICE;
            }
            if first_stream {
                flags |= FIRST_STREAM;
            }
            self.flows += 1;
            let rec = DeviceRecord {
                flags,
                hook: done.data.hook,
                device: dev.pool.device,
                host_tid: done.data.host_tid,
                kind: done.data.kind,
                stream_tid,
                stream: done.data.stream,
                start_ns: to_host(done.start_dev, anchor, rate),
                end_ns: to_host(done.end_dev, anchor, rate),
                host_mid: done.data.host_start
                    + done.data.host_end.saturating_sub(done.data.host_start) / 2,
                bytes: done.data.bytes,
                flow: (self.pid as u64 & 0x3f_ffff) << 31 | (self.flows & 0x7fff_ffff),
                ..DeviceRecord::default()
            };
            if emit(&rec) {
                self.timed += 1;
            }
        }
    }

    /// The exit records: each device's clock fit, then the totals.
    fn write_totals(&mut self) {
        for dev in &self.devices {
            let rate = rate(&dev.anchors);
            emit(&DeviceRecord::clock(ClockFit {
                device: dev.pool.device,
                anchors: dev.anchors.len() as u64,
                drift_ppm_milli: ((rate - 1.0) * 1e9).round() as i64,
                error_ns: dev.worst_error,
            }));
        }
        let lost = OUTSTANDING.load(Ordering::Relaxed)
            + self
                .devices
                .iter()
                .map(|d| d.waiting.len() as u64)
                .sum::<u64>();
        emit(&DeviceRecord::totals(Totals {
            timed: self.timed,
            untimed: untimed(),
            discarded: self.discarded + RECORD_FAILED.load(Ordering::Relaxed),
            lost,
            pool: super::POOL_PAIRS as u64,
        }));
        if lost > 0 {
            crate::diag::warn!(
                "device timeline: {lost} timed copies were still outstanding when the process \
                 exited and are not shown"
            );
        }
    }
}

/// At exit: stops the thread, drains outstanding pairs for at most [`EXIT_DRAIN`], takes a
/// last calibration and writes everything with the totals.
pub(super) fn finish() {
    if !STARTED.load(Ordering::Acquire) {
        return;
    }
    STOP.store(true, Ordering::Release);
    let _no_cancel = crate::boundary::NoCancel::new();
    let Some(mut state) = STATE.lock_for(EXIT_DRAIN) else {
        crate::diag::warn!(
            "device timeline: the poller did not answer at exit; the last device spans are \
             missing"
        );
        return;
    };
    let Some(p) = state.as_mut() else {
        return;
    };
    let deadline = monotonic_ns() + EXIT_DRAIN.as_nanos() as u64;
    loop {
        p.cycle(false);
        if OUTSTANDING.load(Ordering::Relaxed) == 0 || monotonic_ns() >= deadline {
            break;
        }
        std::thread::sleep(BUSY_PERIOD);
    }
    p.cycle(true);
    p.write_totals();
    *state = None;
}

/// `pthread_atfork` child handler: the poller thread does not exist here; its state is
/// the parent's (forgotten, never freed under a thread that may have held it).
pub(super) fn fork_child() {
    // SAFETY: in the child only the forking thread exists; no guard can be live.
    unsafe { STATE.force_unlock() };
    if let Some(mut state) = STATE.try_lock() {
        if let Some(old) = state.take() {
            std::mem::forget(old);
        }
    }
    STARTED.store(false, Ordering::Relaxed);
    STOP.store(false, Ordering::Relaxed);
    RECORD_FAILED.store(0, Ordering::Relaxed);
    crate::trace::device::set_quiet_thread(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anchor(host_ms: u64, drift: f64, error_ns: u64) -> Anchor {
        let host_ns = host_ms * 1_000_000;
        Anchor {
            device_ns: 86_523_456_789_012 + (host_ns as f64 * (1.0 + drift)) as u64,
            host_ns,
            error_ns,
        }
    }

    #[test]
    fn the_fit_recovers_offset_and_rate() {
        let drift = 0.05;
        let anchors: Vec<Anchor> = (0..20)
            .map(|i| anchor(1000 + i * 20, drift, 1000))
            .collect();
        let r = rate(&anchors);
        assert!((r - 1.05).abs() < 1e-6, "{r}");
        let truth = anchor(1_137, drift, 0);
        let a = reference(&anchors, truth.device_ns, 1e-6).unwrap();
        let host = to_host(truth.device_ns, a, r);
        assert!(
            host.abs_diff(truth.host_ns) < 100,
            "{host} vs {}",
            truth.host_ns
        );
    }

    #[test]
    fn one_anchor_means_rate_one_and_tight_anchors_win() {
        assert_eq!(rate(&[anchor(5, 0.05, 10)]), 1.0);
        // Two anchors 2 ms apart, each good to 5 µs: the rate is known to 0.5 %, worse
        // than assuming none.
        assert_eq!(rate(&[anchor(5, 0.05, 5_000), anchor(7, 0.05, 5_000)]), 1.0);
        let loose = anchor(100, 0.0, 900_000);
        let tight = anchor(90, 0.0, 1_000);
        let a = reference(&[loose, tight], loose.device_ns, 1e-4).unwrap();
        assert_eq!(a, tight);
    }
}
