//! Device-timeline records (SPEC §10) and their JSON: the trace side of the device timeline.
//!
//! The poller (`crate::device`) turns each timed copy into one fixed-size [`DeviceRecord`]
//! and stores it in its own thread's ring like any record; the writer recognises it by its
//! first byte ([`DEVICE_MARKER`], never a hook index) and formats it here: the span on the
//! `device <id>` / `stream <handle>` track, the flow arrow from the host span, the track
//! names the first time a track appears, and at exit the timeline's totals and clock fit.
//! Nothing here calls the runtime or knows how the times were obtained.

use std::sync::atomic::{AtomicI32, Ordering};

use crate::abi::types::{Api, Hook, Kind, decode_kind};

use super::clock::Calibration;
use super::json::{Json, Out};
use super::record::{RECORD_UNITS, RECORD_WORDS};

/// First byte of a device record (a host record's first byte is its hook index).
pub const DEVICE_MARKER: u8 = 0xff;

/// What a device record says.
pub const WHAT_SPAN: u8 = 0;
/// The clock fit of one device (exit).
pub const WHAT_CLOCK: u8 = 1;
/// The timeline's totals (exit).
pub const WHAT_TOTALS: u8 = 2;

/// The span is the first of its device: name the `device <id>` process first.
pub const FIRST_DEVICE: u8 = 1;
/// The span is the first of its stream: name the `stream <handle>` track first.
pub const FIRST_STREAM: u8 = 2;

/// One device-timeline event, as plain integers (the same size as a host record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct DeviceRecord {
    /// Always [`DEVICE_MARKER`].
    pub marker: u8,
    /// [`WHAT_SPAN`], [`WHAT_CLOCK`] or [`WHAT_TOTALS`].
    pub what: u8,
    /// [`FIRST_DEVICE`], [`FIRST_STREAM`].
    pub flags: u8,
    /// The hooked function that issued the copy (`Hook` index).
    pub hook: u8,
    /// Ring units (always [`RECORD_UNITS`]).
    pub units: u8,
    pub pad: [u8; 3],
    pub device: u32,
    /// The calling thread of the host span.
    pub host_tid: i32,
    /// The kind the copy ran with (raw `aclrtMemcpyKind`).
    pub kind: i32,
    /// The stream's track number on its device (1, 2, … in order of appearance).
    pub stream_tid: u32,
    /// The `aclrtStream` handle.
    pub stream: u64,
    /// The copy on the device, CLOCK_MONOTONIC nanoseconds (already mapped by the poller).
    pub start_ns: u64,
    pub end_ns: u64,
    /// A raw host clock tick inside the host span (where the flow arrow starts).
    pub host_mid: u64,
    pub bytes: u64,
    /// The flow id pairing the host span with the device span.
    pub flow: u64,
    /// Totals and clock fits: see [`DeviceRecord::totals`] and [`DeviceRecord::clock`].
    pub extra: [u64; 7],
}

const _: () = assert!(std::mem::size_of::<DeviceRecord>() == RECORD_WORDS * 16);

impl Default for DeviceRecord {
    fn default() -> Self {
        DeviceRecord {
            marker: DEVICE_MARKER,
            what: WHAT_SPAN,
            flags: 0,
            hook: 0,
            units: RECORD_UNITS,
            pad: [0; 3],
            device: 0,
            host_tid: 0,
            kind: 0,
            stream_tid: 0,
            stream: 0,
            start_ns: 0,
            end_ns: 0,
            host_mid: 0,
            bytes: 0,
            flow: 0,
            extra: [0; 7],
        }
    }
}

/// The totals of a run, in a [`WHAT_TOTALS`] record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Copies that got a device span.
    pub timed: u64,
    /// Copies that went untimed: no event pair was free (pool exhausted or being set up).
    pub untimed: u64,
    /// Pairs recorded but not shown: the copy failed, or the runtime gave no valid times.
    pub discarded: u64,
    /// Pairs still outstanding when the exit drain gave up.
    pub lost: u64,
    /// Event pairs per device.
    pub pool: u64,
}

/// A device's clock fit, in a [`WHAT_CLOCK`] record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockFit {
    pub device: u32,
    /// Calibration anchors taken.
    pub anchors: u64,
    /// How fast the device clock runs, in millionths of a part per million (signed).
    pub drift_ppm_milli: i64,
    /// The worst uncertainty of an anchor used (half its host bracket), ns.
    pub error_ns: u64,
}

impl DeviceRecord {
    /// The record as ring words.
    #[inline]
    pub fn to_words(&self) -> [u128; RECORD_WORDS] {
        // SAFETY: `DeviceRecord` is `repr(C)`, exactly `RECORD_WORDS * 16` bytes (asserted
        // above), 16-byte aligned, made of integers only with every padding byte a field.
        unsafe { std::mem::transmute::<DeviceRecord, [u128; RECORD_WORDS]>(*self) }
    }

    /// A record back from ring words (missing words read as 0).
    pub fn from_words(words: &[u128]) -> DeviceRecord {
        let mut w = [0u128; RECORD_WORDS];
        let n = words.len().min(RECORD_WORDS);
        w[..n].copy_from_slice(&words[..n]);
        // SAFETY: every bit pattern is a valid `DeviceRecord` (integers only, no padding).
        unsafe { std::mem::transmute::<[u128; RECORD_WORDS], DeviceRecord>(w) }
    }

    pub fn totals(t: Totals) -> DeviceRecord {
        DeviceRecord {
            what: WHAT_TOTALS,
            extra: [t.timed, t.untimed, t.discarded, t.lost, t.pool, 0, 0],
            ..DeviceRecord::default()
        }
    }

    pub fn clock(c: ClockFit) -> DeviceRecord {
        DeviceRecord {
            what: WHAT_CLOCK,
            device: c.device,
            extra: [c.anchors, c.drift_ppm_milli as u64, c.error_ns, 0, 0, 0, 0],
            ..DeviceRecord::default()
        }
    }
}

/// Whether ring words hold a device record.
#[inline]
pub fn is_device(words: &[u128]) -> bool {
    words.first().is_some_and(|w| *w as u8 == DEVICE_MARKER)
}

/// The pid of the `device <id>` track of process `pid`: above every Linux pid (at most
/// 2^22), distinct per process and device, and a 32-bit number as trace viewers want.
pub fn device_pid(pid: u32, device: u32) -> u32 {
    1 << 30 | (pid & 0x3f_ffff) << 8 | (device & 0xff)
}

/// The thread whose ring holds only device records (the poller): the writer gives it no
/// `thread_name` track of its own. 0 while there is none.
static QUIET_TID: AtomicI32 = AtomicI32::new(0);

/// Marks the calling thread as the poller (its ring carries device records only).
pub fn set_quiet_thread(tid: i32) {
    QUIET_TID.store(tid, Ordering::Relaxed);
}

/// True for the poller's thread.
pub fn is_quiet(tid: i32) -> bool {
    tid != 0 && QUIET_TID.load(Ordering::Relaxed) == tid
}

/// Stores a device record in the calling thread's ring; false when no trace is being
/// written (the record is then not wanted).
pub fn emit(rec: &DeviceRecord) -> bool {
    if !super::is_running() {
        return false;
    }
    let words = rec.to_words();
    super::push_with(RECORD_UNITS as u64, |slot| {
        let n = slot.len().min(RECORD_WORDS);
        slot[..n].copy_from_slice(&words[..n]);
    });
    true
}

/// The span's name: `memcpy <KIND>` (the kind the copy ran with), or `memset`.
fn span_name(json: &mut Json, rec: &DeviceRecord) {
    let hook = Hook::from_index(rec.hook);
    if hook.is_some_and(|h| h.class() == crate::abi::types::Class::SetAsync) {
        json.raw("memset");
        return;
    }
    json.raw("memcpy ");
    match decode_kind(Api::Acl, rec.kind) {
        Kind::Named(n) => json.raw(n),
        Kind::Unknown(v) => json.i64(v as i64),
    }
}

/// Formats one device record of process `pid`; returns the spans written (0 or 1).
pub fn format(json: &mut Json, words: &[u128], pid: u32, clock: &Calibration) -> u64 {
    let rec = DeviceRecord::from_words(words);
    match rec.what {
        WHAT_SPAN => {
            span(json, &rec, pid, clock);
            1
        }
        WHAT_CLOCK => {
            json.metadata_with("npushim_device_clock", pid, pid as i32, |j| {
                j.raw("{\"device\":");
                j.u64(rec.device as u64);
                j.raw(",\"anchors\":");
                j.u64(rec.extra[0]);
                j.raw(",\"drift_ppm\":");
                let milli = rec.extra[1] as i64;
                if milli < 0 {
                    j.raw("-");
                }
                j.micros(milli.unsigned_abs());
                j.raw(",\"error_us\":");
                j.micros(rec.extra[2]);
                j.raw("}");
            });
            0
        }
        WHAT_TOTALS => {
            json.metadata_with("npushim_device", pid, pid as i32, |j| {
                j.raw("{\"timed\":");
                j.u64(rec.extra[0]);
                j.raw(",\"untimed\":");
                j.u64(rec.extra[1]);
                j.raw(",\"discarded\":");
                j.u64(rec.extra[2]);
                j.raw(",\"lost\":");
                j.u64(rec.extra[3]);
                j.raw(",\"pool\":");
                j.u64(rec.extra[4]);
                j.raw("}");
            });
            0
        }
        _ => 0,
    }
}

/// A few bytes on the stack (a handle in hex), so formatting never allocates.
#[derive(Default)]
struct Small {
    buf: [u8; 24],
    len: usize,
}

impl Out for Small {
    fn put(&mut self, bytes: &[u8]) {
        let end = (self.len + bytes.len()).min(self.buf.len());
        self.buf[self.len..end].copy_from_slice(&bytes[..end - self.len]);
        self.len = end;
    }
}

fn span(json: &mut Json, rec: &DeviceRecord, pid: u32, clock: &Calibration) {
    let dpid = device_pid(pid, rec.device);
    let dtid = rec.stream_tid as i32;
    if rec.flags & FIRST_DEVICE != 0 {
        json.metadata_with("process_name", dpid, 0, |j| {
            j.raw("{\"name\":\"device ");
            j.u64(rec.device as u64);
            j.raw("\"}");
        });
    }
    if rec.flags & FIRST_STREAM != 0 {
        json.metadata_with("thread_name", dpid, dtid, |j| {
            j.raw("{\"name\":\"stream ");
            let mut hex = Small::default();
            hex.hex(rec.stream);
            // The hex form comes quoted: keep what is inside the quotes.
            j.put(&hex.buf[1..hex.len.saturating_sub(1).max(1)]);
            j.raw("\"}");
        });
    }
    let dur = rec.end_ns.saturating_sub(rec.start_ns);
    json.begin();
    json.raw("{\"ph\":\"X\",\"name\":\"");
    span_name(json, rec);
    json.raw("\",\"cat\":\"device\",\"pid\":");
    json.u64(dpid as u64);
    json.raw(",\"tid\":");
    json.i64(dtid as i64);
    json.raw(",\"ts\":");
    json.micros(rec.start_ns);
    json.raw(",\"dur\":");
    json.micros(dur);
    json.raw(",\"args\":{\"bytes\":");
    json.u64(rec.bytes);
    if dur > 0 {
        // Bytes per nanosecond are GB/s; three decimals.
        json.raw(",\"GB/s\":");
        json.micros((rec.bytes as u128 * 1000 / dur as u128).min(u64::MAX as u128) as u64);
    }
    json.raw(",\"stream\":");
    json.hex(rec.stream);
    json.raw(",\"call\":\"");
    json.raw(Hook::from_index(rec.hook).map_or("?", Hook::symbol));
    json.raw("\"}}\n");
    // The arrow: from inside the host span to inside the device span (both bind to the
    // slice enclosing their timestamp).
    json.begin();
    json.raw("{\"ph\":\"s\",\"name\":\"device\",\"cat\":\"device\",\"id\":");
    json.u64(rec.flow);
    json.raw(",\"pid\":");
    json.u64(pid as u64);
    json.raw(",\"tid\":");
    json.i64(rec.host_tid as i64);
    json.raw(",\"ts\":");
    json.micros(clock.to_ns(rec.host_mid));
    json.raw("}\n");
    json.begin();
    json.raw("{\"ph\":\"f\",\"bp\":\"e\",\"name\":\"device\",\"cat\":\"device\",\"id\":");
    json.u64(rec.flow);
    json.raw(",\"pid\":");
    json.u64(dpid as u64);
    json.raw(",\"tid\":");
    json.i64(dtid as i64);
    json.raw(",\"ts\":");
    json.micros(rec.start_ns + dur / 2);
    json.raw("}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(json: &Json) -> Vec<serde_json::Value> {
        let mut text = String::from_utf8(json.buf.clone()).unwrap();
        text.push(']');
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn a_span_with_its_track_names_and_arrow() {
        let rec = DeviceRecord {
            flags: FIRST_DEVICE | FIRST_STREAM,
            hook: Hook::AclrtMemcpyAsync as u8,
            device: 3,
            host_tid: 77,
            kind: 1,
            stream_tid: 2,
            stream: 0xabc0,
            start_ns: 10_000,
            end_ns: 14_000,
            host_mid: 9_000,
            bytes: 8_000,
            flow: 42,
            ..DeviceRecord::default()
        };
        let words = rec.to_words();
        assert!(is_device(&words));
        assert_eq!(DeviceRecord::from_words(&words), rec);
        let mut j = Json::default();
        assert_eq!(format(&mut j, &words, 100, &Calibration::IDENTITY), 1);
        let v = lines(&j);
        let dpid = device_pid(100, 3);
        assert_eq!(v[0]["name"], "process_name");
        assert_eq!(v[0]["args"]["name"], "device 3");
        assert_eq!(v[1]["args"]["name"], "stream 0xabc0");
        assert_eq!(v[1]["tid"], 2);
        let x = &v[2];
        assert_eq!(x["name"], "memcpy HOST_TO_DEVICE");
        assert_eq!(x["pid"], dpid);
        assert_eq!(x["ts"].as_f64(), Some(10.0));
        assert_eq!(x["dur"].as_f64(), Some(4.0));
        assert_eq!(x["args"]["bytes"], 8000);
        assert_eq!(x["args"]["GB/s"].as_f64(), Some(2.0));
        assert_eq!(x["args"]["call"], "aclrtMemcpyAsync");
        assert_eq!(
            (v[3]["ph"].as_str(), v[3]["pid"].as_u64()),
            (Some("s"), Some(100))
        );
        assert_eq!(
            (v[3]["tid"].as_i64(), v[3]["ts"].as_f64()),
            (Some(77), Some(9.0))
        );
        assert_eq!(
            (v[4]["ph"].as_str(), v[4]["bp"].as_str()),
            (Some("f"), Some("e"))
        );
        assert_eq!(v[4]["ts"].as_f64(), Some(12.0));
        assert_eq!(v[3]["id"], v[4]["id"]);
    }

    #[test]
    fn sets_are_memset_and_totals_are_metadata() {
        let rec = DeviceRecord {
            hook: Hook::AclrtMemsetAsync as u8,
            ..DeviceRecord::default()
        };
        let mut j = Json::default();
        format(&mut j, &rec.to_words(), 1, &Calibration::IDENTITY);
        assert_eq!(lines(&j)[0]["name"], "memset");
        let mut j = Json::default();
        let totals = Totals {
            timed: 5,
            untimed: 2,
            discarded: 1,
            lost: 0,
            pool: 256,
        };
        assert_eq!(
            format(
                &mut j,
                &DeviceRecord::totals(totals).to_words(),
                1,
                &Calibration::IDENTITY
            ),
            0
        );
        let fit = ClockFit {
            device: 0,
            anchors: 9,
            drift_ppm_milli: -40_500,
            error_ns: 12_345,
        };
        format(
            &mut j,
            &DeviceRecord::clock(fit).to_words(),
            1,
            &Calibration::IDENTITY,
        );
        let v = lines(&j);
        assert_eq!(v[0]["args"]["untimed"], 2);
        assert_eq!(v[0]["args"]["pool"], 256);
        assert_eq!(v[1]["name"], "npushim_device_clock");
        assert_eq!(v[1]["args"]["drift_ppm"].as_f64(), Some(-40.5));
        assert_eq!(v[1]["args"]["error_us"].as_f64(), Some(12.345));
    }

    #[test]
    fn device_pids_are_above_every_linux_pid_and_distinct() {
        assert!(device_pid(1, 0) > 1 << 22);
        assert_ne!(device_pid(4_194_303, 0), device_pid(4_194_303, 1));
        assert_ne!(device_pid(7, 1), device_pid(8, 1));
        assert!(device_pid(4_194_303, 255) <= u32::MAX >> 1);
    }
}
