//! Aggregation for `npushim report`: each span becomes a [`Span`] (function, class, outcome,
//! bytes, what it waited on) and is added to bounded tables. Nothing here reads files or
//! formats output.
//!
//! What is summed where is the report's contract with its reader:
//! - a call's **outcome** is `ok` (forwarded and returned 0: no fault, or only a `delay`),
//!   `injected` (a fault that stopped or replaced the call: `return(…)`, `skip`, `abort`) or
//!   `failed` (any other non-zero `ret`);
//! - **bytes** are summed over `ok` calls only: failed and injected calls are counted, never
//!   added to the bytes;
//! - a **rate** is computed from host time only for synchronous copies (`aclrtMemcpy`,
//!   `aclrtMemcpy2d`, and any copy whose span says `"sync":true`) that were `ok`: the host time
//!   of an asynchronous call is its submission, not its transfer;
//! - **host waits** (`aclrtSynchronize*`) are also kept per function and stream / event;
//! - **memory types** (SPEC §9): copies and sets per function and `srcMem` → `dstMem`; a span
//!   without either is counted apart, never guessed;
//! - **host blocked in pageable copies**: `ok` asynchronous copies marked `"sync":true`, their
//!   bytes, host time and host buffers (per process: addresses of different processes are
//!   different buffers);
//! - **leaks** are what each process's `npushim_leaks` event says, read by [`LeakRecord`].
//!
//! Memory does not depend on the length of the trace: per-key rows hold a log-bucketed
//! histogram, count tables stop growing at [`MAX_KEYS`] keys (the rest is `(other)`), and
//! the slowest calls are a [`TOP_N`]-entry heap.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};

use serde_json::{Map, Value};

use crate::functions::{self, Class};
use crate::reader::Event;

/// How many slowest calls are listed.
pub const TOP_N: usize = 10;
/// Most distinct keys kept in a table; the rest is counted under `(other)`.
pub const MAX_KEYS: usize = 512;

/// Durations are bucketed in nanoseconds: exact below 2^(SUB_BITS+1) ns, then 2^SUB_BITS
/// buckets per power of two (each at most 1/2^SUB_BITS of its values wide), so a reported
/// percentile is within ±0.8 % of the true sample value.
const SUB_BITS: u32 = 7;

/// Precision of the reported percentiles, for the output. A percentile is the mean of the
/// samples in its bucket, so it is exact when they are all equal.
pub const PERCENTILE_PRECISION: &str = "exact below 256 ns, otherwise within ±0.8 %";

#[derive(Default)]
pub struct Histogram {
    /// Per bucket: number of samples and their sum in ns (the sum makes a bucket holding
    /// one distinct value report it exactly).
    buckets: Vec<(u64, f64)>,
    min_ns: u64,
    max_ns: u64,
    samples: u64,
}

impl Histogram {
    fn bucket_of(ns: u64) -> usize {
        let exact = 1u64 << (SUB_BITS + 1);
        if ns < exact {
            return ns as usize;
        }
        let shift = 63 - ns.leading_zeros() - SUB_BITS;
        let mantissa = (ns >> shift) - (1 << SUB_BITS);
        exact as usize + ((shift - 1) as usize) * (1 << SUB_BITS) + mantissa as usize
    }

    /// The middle of a bucket, in nanoseconds.
    #[cfg(test)]
    fn bucket_value(index: usize) -> f64 {
        let exact = 1usize << (SUB_BITS + 1);
        if index < exact {
            return index as f64;
        }
        let per_octave = 1usize << SUB_BITS;
        let shift = ((index - exact) / per_octave + 1) as u32;
        let mantissa = ((index - exact) % per_octave + per_octave) as u64;
        let low = (mantissa << shift) as f64;
        low + (1u64 << shift) as f64 / 2.0
    }

    pub(super) fn add(&mut self, dur_us: f64) {
        let ns = (dur_us.max(0.0) * 1000.0).round() as u64;
        let index = Self::bucket_of(ns);
        if self.buckets.len() <= index {
            self.buckets.resize(index + 1, (0, 0.0));
        }
        self.buckets[index].0 += 1;
        self.buckets[index].1 += ns as f64;
        if self.samples == 0 || ns < self.min_ns {
            self.min_ns = ns;
        }
        self.max_ns = self.max_ns.max(ns);
        self.samples += 1;
    }

    /// Nearest-rank percentile in µs: the smallest value with at least `p` % of the samples
    /// at or below it.
    pub fn percentile_us(&self, p: f64) -> f64 {
        if self.samples == 0 {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.samples as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for &(count, sum) in &self.buckets {
            seen += count;
            if seen >= rank {
                let ns = (sum / count as f64).clamp(self.min_ns as f64, self.max_ns as f64);
                return ns / 1000.0;
            }
        }
        self.max_ns as f64 / 1000.0
    }

    /// The longest sample in µs (exact).
    pub fn max_us(&self) -> f64 {
        self.max_ns as f64 / 1000.0
    }
}

/// How a call ended, as far as its bytes are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Forwarded to the runtime and returned 0.
    Ok,
    /// Returned an error (from the runtime, or a check in `strict` mode).
    Failed,
    /// A fault took the call's place (`return(…)`, `skip`, `abort`): nothing was moved.
    Injected,
}

impl Outcome {
    /// Reads the outcome from a span's `ret` and `fault`: a `delay` fault still forwards.
    pub fn of(ret: i64, fault: Option<&str>) -> Outcome {
        match fault {
            Some(action) if !action.starts_with("delay") => Outcome::Injected,
            _ if ret != 0 => Outcome::Failed,
            _ => Outcome::Ok,
        }
    }
}

/// A traced function's name, ordered as [`functions::FUNCTIONS`] lists them, then any other
/// name alphabetically.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Api(usize, String);

impl Api {
    pub fn new(name: &str) -> Api {
        let order = functions::lookup(name).map_or(usize::MAX, |(i, _)| i);
        Api(order, name.to_string())
    }

    pub fn name(&self) -> &str {
        &self.1
    }

    pub fn class(&self) -> Class {
        functions::lookup(&self.1).map_or(Class::Other, |(_, c)| c)
    }
}

/// One span, decoded.
pub struct Span {
    pub api: Api,
    /// The `kind` argument (or the kind the function implies); `None` for functions without
    /// one (sets, waits, allocations).
    pub kind: Option<String>,
    /// Bytes the call asked to move or set (`count`, or `width * height` for 2D copies);
    /// `None` for calls that move none.
    pub bytes: Option<u64>,
    pub dur_us: f64,
    pub ts_us: f64,
    pub pid: i64,
    pub tid: i64,
    pub ret: i64,
    pub depth: u64,
    pub outcome: Outcome,
    /// The call returned only once its work was done.
    pub sync: bool,
    /// An asynchronous function that the runtime ran synchronously (`"sync":true`).
    pub ran_sync: bool,
    /// What a host wait waited on: `stream 0x…`, `event 0x…` or `device`.
    pub waited_on: Option<String>,
    /// Where the source and destination live (`srcMem`, `dstMem`: `device`, `pinned`,
    /// `registered`, `pageable`, `unknown`), when the memory map recorded them.
    pub src_mem: Option<String>,
    pub dst_mem: Option<String>,
    /// The addresses as traced (`src`; `dst`, or a set's `devPtr`), kept for copies that
    /// ran synchronously (`ran_sync`) only.
    pub src: Option<String>,
    pub dst: Option<String>,
    /// The kind the runtime used (`effectiveKind` when written, else `kind`).
    pub effective_kind: Option<String>,
    pub violations: Vec<String>,
    pub fault: Option<String>,
}

/// A JSON value as text: strings without quotes, absent or null as `?`.
pub fn arg_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "?".to_string(),
        Some(other) => other.to_string(),
    }
}

impl Span {
    /// Decodes a complete event (its field types already checked by the caller).
    pub fn from_event(event: &Event) -> Span {
        let api = Api::new(event.name());
        let class = api.class();
        let empty = Map::new();
        let args = event.args().unwrap_or(&empty);
        let uint = |key: &str| args.get(key).and_then(Value::as_u64);
        let number = |key: &str| event.object.get(key).and_then(Value::as_f64);
        let kind = match args.get("kind") {
            Some(k) => Some(arg_text(Some(k))),
            None => functions::implied_kind(api.name())
                .map(str::to_string)
                .or_else(|| {
                    matches!(class, Class::CopyAsync | Class::CopySync).then(|| "?".into())
                }),
        };
        let bytes = if class.moves_bytes() || class == Class::Other {
            match (uint("width"), uint("height")) {
                (Some(w), Some(h)) => Some(w.saturating_mul(h)),
                _ => uint("count"),
            }
        } else {
            None
        };
        let waited_on = (class == Class::Wait).then(|| {
            if let Some(stream) = args.get("stream") {
                format!("stream {}", arg_text(Some(stream)))
            } else if let Some(e) = args.get("event") {
                format!("event {}", arg_text(Some(e)))
            } else if args.contains_key("device") {
                "device".to_string()
            } else {
                "?".to_string()
            }
        });
        let ret = args.get("ret").and_then(Value::as_i64).unwrap_or(0);
        let fault = args.get("fault").map(|f| arg_text(Some(f)));
        let violations = args
            .get("violations")
            .and_then(Value::as_array)
            .map(|list| list.iter().map(|r| arg_text(Some(r))).collect())
            .unwrap_or_default();
        let ran_sync = args.get("sync") == Some(&Value::Bool(true)) && class != Class::CopySync;
        let text = |key: &str| args.get(key).map(|v| arg_text(Some(v)));
        let effective_kind = text("effectiveKind").or_else(|| kind.clone());
        // The addresses only name the host buffers of copies that ran synchronously.
        let address = |key: &str| if ran_sync { text(key) } else { None };
        Span {
            src_mem: text("srcMem"),
            dst_mem: text("dstMem"),
            src: address("src"),
            dst: address("dst").or_else(|| address("devPtr")),
            effective_kind,
            outcome: Outcome::of(ret, fault.as_deref()),
            sync: class == Class::CopySync || ran_sync,
            ran_sync,
            api,
            kind,
            bytes,
            dur_us: number("dur").unwrap_or(0.0),
            ts_us: number("ts").unwrap_or(0.0),
            pid: event.pid().unwrap_or(0),
            tid: event.object.get("tid").and_then(Value::as_i64).unwrap_or(0),
            ret,
            depth: uint("depth").unwrap_or(0),
            waited_on,
            violations,
            fault,
        }
    }
}

/// Calls of one function (and kind): counts by outcome, bytes of the `ok` ones, host time of
/// all of them, and the bytes and host time of the `ok` synchronous ones for their rate.
#[derive(Default)]
pub struct Row {
    pub calls: u64,
    pub ok: u64,
    pub failed: u64,
    pub injected: u64,
    /// Bytes of `ok` calls; `None` while no call of the row moves bytes.
    pub bytes: Option<u64>,
    pub total_us: f64,
    pub histogram: Histogram,
    /// `ok` synchronous copies: how many, their bytes and their host time.
    pub sync_calls: u64,
    pub sync_bytes: u64,
    pub sync_us: f64,
}

impl Row {
    fn add(&mut self, span: &Span) {
        self.calls += 1;
        self.total_us += span.dur_us;
        self.histogram.add(span.dur_us);
        match span.outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Injected => self.injected += 1,
        }
        if let Some(bytes) = span.bytes {
            let sum = self.bytes.get_or_insert(0);
            if span.outcome == Outcome::Ok {
                *sum = sum.saturating_add(bytes);
                if span.sync {
                    self.sync_calls += 1;
                    self.sync_bytes = self.sync_bytes.saturating_add(bytes);
                    self.sync_us += span.dur_us;
                }
            }
        }
    }

    pub fn mean_us(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.total_us / self.calls as f64
        }
    }

    /// Bytes per second of host time of the `ok` calls, in GB/s (10^9 B/s), when every one
    /// of them was a synchronous copy; `None` otherwise (an asynchronous call's host time
    /// is its submission, and a row mixing both would pass one off as the other).
    pub fn host_gb_per_s_sync(&self) -> Option<f64> {
        (self.sync_calls > 0 && self.sync_calls == self.ok && self.sync_us > 0.0)
            .then(|| self.sync_bytes as f64 / (self.sync_us * 1e3))
    }
}

/// A count table that stops growing after [`MAX_KEYS`] keys.
pub struct Counts<K: Ord> {
    pub map: BTreeMap<K, u64>,
    pub other: u64,
}

impl<K: Ord> Default for Counts<K> {
    fn default() -> Self {
        Counts {
            map: BTreeMap::new(),
            other: 0,
        }
    }
}

impl<K: Ord> Counts<K> {
    fn add(&mut self, key: K) {
        if let Some(count) = self.map.get_mut(&key) {
            *count += 1;
        } else if self.map.len() < MAX_KEYS {
            self.map.insert(key, 1);
        } else {
            self.other += 1;
        }
    }
}

/// A row map that stops taking new keys after [`MAX_KEYS`]; calls of further keys go to
/// `other`.
pub struct Rows<K: Ord> {
    pub map: BTreeMap<K, Row>,
    pub other: Row,
}

impl<K: Ord> Default for Rows<K> {
    fn default() -> Self {
        Rows {
            map: BTreeMap::new(),
            other: Row::default(),
        }
    }
}

impl<K: Ord> Rows<K> {
    fn add(&mut self, key: K, span: &Span) {
        if let Some(row) = self.map.get_mut(&key) {
            row.add(span);
        } else if self.map.len() < MAX_KEYS {
            self.map.entry(key).or_default().add(span);
        } else {
            self.other.add(span);
        }
    }
}

/// One of the slowest calls.
pub struct Slow {
    pub dur_us: f64,
    pub ts_us: f64,
    pub pid: i64,
    pub tid: i64,
    pub api: String,
    pub kind: Option<String>,
    pub bytes: Option<u64>,
    pub ret: i64,
}

impl Slow {
    fn key(&self) -> (f64, f64) {
        (self.dur_us, -self.ts_us)
    }
}

impl PartialEq for Slow {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Slow {}

impl PartialOrd for Slow {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Slow {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.key(), other.key());
        a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1))
    }
}

/// Copies of one function between two memory types.
#[derive(Default)]
pub struct MemRow {
    pub calls: u64,
    pub ok: u64,
    /// Bytes of the `ok` calls.
    pub bytes: u64,
    /// `ok` calls that the runtime ran synchronously because of pageable memory.
    pub ran_sync: u64,
}

impl MemRow {
    fn add(&mut self, span: &Span) {
        self.calls += 1;
        if span.outcome == Outcome::Ok {
            self.ok += 1;
            self.bytes = self.bytes.saturating_add(span.bytes.unwrap_or(0));
            if span.ran_sync {
                self.ran_sync += 1;
            }
        }
    }
}

/// Copies and sets per (function, `srcMem`, `dstMem`), SPEC §9. A set has no source
/// (`None`); a span without either field is counted apart, not guessed.
#[derive(Default)]
pub struct MemoryTypes {
    pub rows: BTreeMap<(Api, Option<String>, Option<String>), MemRow>,
    /// Calls of keys beyond [`MAX_KEYS`].
    pub other: MemRow,
    /// Copies and sets seen.
    pub copies: u64,
    /// Copies and sets whose span carries no `srcMem` / `dstMem` (memory map off, an older
    /// shim): not in `rows`.
    pub without_memory: u64,
}

impl MemoryTypes {
    fn add(&mut self, span: &Span) {
        self.copies += 1;
        if span.src_mem.is_none() && span.dst_mem.is_none() {
            self.without_memory += 1;
            return;
        }
        let key = (span.api.clone(), span.src_mem.clone(), span.dst_mem.clone());
        if let Some(row) = self.rows.get_mut(&key) {
            row.add(span);
        } else if self.rows.len() < MAX_KEYS {
            self.rows.entry(key).or_default().add(span);
        } else {
            self.other.add(span);
        }
    }

    /// Copies that carry memory types.
    pub fn with_memory(&self) -> u64 {
        self.copies - self.without_memory
    }
}

/// Pageable copies that blocked the host, per host buffer.
#[derive(Default)]
pub struct BufferRow {
    pub calls: u64,
    pub bytes: u64,
    pub total_us: f64,
}

impl BufferRow {
    fn add(&mut self, span: &Span) {
        self.calls += 1;
        self.bytes = self.bytes.saturating_add(span.bytes.unwrap_or(0));
        self.total_us += span.dur_us;
    }
}

/// A host buffer: the process (`pid`: addresses of different processes of a merged trace
/// are different buffers), its address as traced, the side of the copy and the function.
pub type BufferKey = (i64, String, Side, Api);

/// Which side of a copy a host buffer was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Side {
    Src,
    Dst,
}

impl Side {
    pub fn name(self) -> &'static str {
        match self {
            Side::Src => "src",
            Side::Dst => "dst",
        }
    }
}

/// "Why did my non-blocking copy block?" (SPEC §9): the `ok` asynchronous copies whose
/// span says `"sync":true`, their host time (the whole wait: the runtime synchronized the
/// stream and copied before returning) and the host buffers they touched.
#[derive(Default)]
pub struct PageableBlocked {
    /// `ok` copies that ran synchronously, their bytes and host time.
    pub calls: u64,
    pub bytes: u64,
    pub total_us: f64,
    /// Copies marked `"sync":true` that failed or that a fault stopped: not counted above.
    pub not_ok: u64,
    /// Per buffer. A copy whose two sides are pageable counts under both buffers.
    pub buffers: BTreeMap<BufferKey, BufferRow>,
    /// Buffers beyond [`MAX_KEYS`].
    pub other: BufferRow,
}

impl PageableBlocked {
    fn add(&mut self, span: &Span) {
        if span.outcome != Outcome::Ok {
            self.not_ok += 1;
            return;
        }
        self.calls += 1;
        self.bytes = self.bytes.saturating_add(span.bytes.unwrap_or(0));
        self.total_us += span.dur_us;
        let pageable = |mem: &Option<String>| mem.as_deref() == Some("pageable");
        let mut sides = Vec::with_capacity(2);
        if pageable(&span.src_mem) {
            sides.push(Side::Src);
        }
        if pageable(&span.dst_mem) {
            sides.push(Side::Dst);
        }
        if sides.is_empty() {
            // No memory types in the span (an older trace): the host side of the kind.
            match span.effective_kind.as_deref() {
                Some("HOST_TO_DEVICE") => sides.push(Side::Src),
                Some("DEVICE_TO_HOST") => sides.push(Side::Dst),
                _ => {}
            }
        }
        for side in sides {
            let address = match side {
                Side::Src => &span.src,
                Side::Dst => &span.dst,
            };
            let key = (
                span.pid,
                address.clone().unwrap_or_else(|| "?".to_string()),
                side,
                span.api.clone(),
            );
            if let Some(row) = self.buffers.get_mut(&key) {
                row.add(span);
            } else if self.buffers.len() < MAX_KEYS {
                self.buffers.entry(key).or_default().add(span);
            } else {
                self.other.add(span);
            }
        }
    }

    /// The [`TOP_N`] buffers with the most bytes (then the most host time).
    pub fn top_buffers(&self) -> Vec<(&BufferKey, &BufferRow)> {
        let mut list: Vec<_> = self.buffers.iter().collect();
        list.sort_by(|a, b| {
            b.1.bytes
                .cmp(&a.1.bytes)
                .then(b.1.total_us.total_cmp(&a.1.total_us))
                .then(a.0.cmp(b.0))
        });
        list.truncate(TOP_N);
        list
    }
}

/// Everything summed over the spans of one report.
#[derive(Default)]
pub struct Aggregates {
    /// Per (function, kind, ran synchronously); kind `None` for functions without one. The
    /// calls of an asynchronous function that the runtime ran synchronously (`"sync":true`)
    /// get rows of their own, so they can show the rate the others cannot.
    pub by_kind: Rows<(Api, Option<String>, bool)>,
    /// Per function (every function seen gets its row).
    pub by_api: Rows<Api>,
    /// Host waits per (function, what was waited on).
    pub waits: Rows<(Api, String)>,
    pub errors: Counts<(Api, i64)>,
    pub violations: Counts<(Api, String)>,
    pub faults: Counts<(Api, String)>,
    /// Per function: (top-level calls, nested calls).
    pub nesting: BTreeMap<Api, (u64, u64)>,
    pub slowest: BinaryHeap<Reverse<Slow>>,
    /// Spans of host calls counted in the tables.
    pub spans: u64,
    /// Spans of the device timeline: device time, kept out of the host-call tables.
    pub device_spans: u64,
    /// Those spans by function, kind and stream.
    pub device: super::device::DeviceTable,
    /// Copies and sets by where their memory lives.
    pub memory: MemoryTypes,
    /// Asynchronous copies the runtime ran synchronously because of pageable memory.
    pub pageable: PageableBlocked,
}

impl Aggregates {
    /// Adds one complete (`"ph":"X"`) event.
    pub fn add(&mut self, event: &Event) {
        if functions::is_device_span(event.name()) {
            self.device_spans += 1;
            self.device.add(event);
            return;
        }
        let span = Span::from_event(event);
        self.spans += 1;
        self.by_kind
            .add((span.api.clone(), span.kind.clone(), span.ran_sync), &span);
        self.by_api.add(span.api.clone(), &span);
        if let Some(on) = &span.waited_on {
            self.waits.add((span.api.clone(), on.clone()), &span);
        }
        if span.api.class().moves_bytes() {
            self.memory.add(&span);
        }
        if span.ran_sync && span.api.class().moves_bytes() {
            self.pageable.add(&span);
        }
        if self.nesting.len() < MAX_KEYS || self.nesting.contains_key(&span.api) {
            let nesting = self.nesting.entry(span.api.clone()).or_default();
            if span.depth >= 1 {
                nesting.1 += 1;
            } else {
                nesting.0 += 1;
            }
        }
        if span.ret != 0 {
            self.errors.add((span.api.clone(), span.ret));
        }
        for rule in &span.violations {
            self.violations.add((span.api.clone(), rule.clone()));
        }
        if let Some(fault) = &span.fault {
            self.faults.add((span.api.clone(), fault.clone()));
        }
        let slow = Slow {
            dur_us: span.dur_us,
            ts_us: span.ts_us,
            pid: span.pid,
            tid: span.tid,
            api: span.api.1,
            kind: span.kind,
            bytes: span.bytes,
            ret: span.ret,
        };
        if self.slowest.len() < TOP_N {
            self.slowest.push(Reverse(slow));
        } else if self.slowest.peek().is_some_and(|Reverse(min)| slow > *min) {
            self.slowest.pop();
            self.slowest.push(Reverse(slow));
        }
    }

    /// The slowest calls, slowest first.
    pub fn slowest_sorted(&self) -> Vec<&Slow> {
        let mut list: Vec<&Slow> = self.slowest.iter().map(|Reverse(s)| s).collect();
        list.sort_by(|a, b| b.cmp(a));
        list
    }

    /// The host-wait rows of one function, longest total first.
    pub fn waits_of<'a>(&'a self, api: &'a Api) -> Vec<(&'a String, &'a Row)> {
        let mut rows: Vec<(&String, &Row)> = self
            .waits
            .map
            .iter()
            .filter(|((a, _), _)| a == api)
            .map(|((_, on), row)| (on, row))
            .collect();
        rows.sort_by(|a, b| b.1.total_us.total_cmp(&a.1.total_us).then(a.0.cmp(b.0)));
        rows
    }
}

/// One location's allocations never freed, from an `npushim_leaks` metadata event.
pub struct LeakLocation {
    /// `device <id>`, `pinned host` or `registered host`.
    pub location: String,
    pub count: u64,
    pub bytes: u64,
    /// The largest: its address as traced, size, allocating call and thread.
    pub largest_ptr: String,
    pub largest_size: u64,
    pub largest_call: String,
    pub largest_tid: i64,
}

/// What one process's `npushim_leaks` event says: the shim writes it at exit whenever the
/// memory map is on, with an empty list when everything was freed.
pub struct LeakRecord {
    pub locations: Vec<LeakLocation>,
    /// Allocations the map could not track (full, out of memory): missing from the list.
    pub untracked: u64,
}

/// A field of an `npushim_leaks` event with the wrong type: (field, value, expected).
pub type LeakFieldError = (&'static str, Value, &'static str);

impl LeakRecord {
    /// Reads the event's `args`, checking every field it uses.
    pub fn from_args(args: Option<&Map<String, Value>>) -> Result<LeakRecord, LeakFieldError> {
        let Some(args) = args else {
            return Err(("args", Value::Null, "an object"));
        };
        let list = match args.get("leaks") {
            Some(Value::Array(list)) => list,
            other => return Err(("leaks", other.cloned().unwrap_or(Value::Null), "an array")),
        };
        let untracked = match args.get("untracked") {
            None => 0,
            Some(v) => v
                .as_u64()
                .ok_or(("untracked", v.clone(), "a non-negative integer"))?,
        };
        let mut locations = Vec::new();
        for entry in list.iter().take(MAX_KEYS) {
            let Value::Object(entry) = entry else {
                return Err(("leaks", entry.clone(), "an array of objects"));
            };
            let empty = Map::new();
            let largest = match entry.get("largest") {
                Some(Value::Object(l)) => l,
                None => &empty,
                Some(other) => return Err(("largest", other.clone(), "an object")),
            };
            let string = |map: &Map<String, Value>, key: &'static str| match map.get(key) {
                Some(Value::String(s)) => Ok(s.clone()),
                None => Ok("?".to_string()),
                Some(other) => Err((key, other.clone(), "a string")),
            };
            let unsigned = |map: &Map<String, Value>, key: &'static str| match map.get(key) {
                None => Ok(0),
                Some(v) => v.as_u64().ok_or((key, v.clone(), "a non-negative integer")),
            };
            let tid = match largest.get("tid") {
                None => 0,
                Some(v) => v.as_i64().ok_or(("tid", v.clone(), "an integer"))?,
            };
            locations.push(LeakLocation {
                location: string(entry, "location")?,
                count: unsigned(entry, "count")?,
                bytes: unsigned(entry, "bytes")?,
                largest_ptr: string(largest, "ptr")?,
                largest_size: unsigned(largest, "size")?,
                largest_call: string(largest, "call")?,
                largest_tid: tid,
            });
        }
        Ok(LeakRecord {
            locations,
            untracked,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(line: &str) -> Event {
        Event {
            line: 1,
            object: serde_json::from_str(line).unwrap(),
        }
    }

    #[test]
    fn histogram_buckets_round_trip() {
        for ns in [0u64, 1, 255, 256, 257, 1000, 12_345, 1 << 40, u64::MAX / 2] {
            let value = Histogram::bucket_value(Histogram::bucket_of(ns));
            let error = (value - ns as f64).abs() / (ns.max(1) as f64);
            assert!(error <= 1.0 / 256.0 + 1e-12, "{ns}: {value}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut h = Histogram::default();
        for us in [10.0, 20.0, 30.0] {
            h.add(us);
        }
        assert!((h.percentile_us(50.0) - 20.0).abs() <= 20.0 / 256.0);
        assert!((h.percentile_us(99.0) - 30.0).abs() < 1e-9);
        let mut h = Histogram::default();
        for n in 1..=1000 {
            h.add(n as f64);
        }
        assert!((h.percentile_us(99.0) - 990.0).abs() <= 990.0 / 256.0);
        assert_eq!(h.max_us(), 1000.0);
    }

    #[test]
    fn outcome_counts_only_forwarded_successes_as_ok() {
        assert_eq!(Outcome::of(0, None), Outcome::Ok);
        assert_eq!(Outcome::of(0, Some("delay(2ms)")), Outcome::Ok);
        assert_eq!(Outcome::of(507053, None), Outcome::Failed);
        assert_eq!(Outcome::of(107000, Some("delay(5us)")), Outcome::Failed);
        assert_eq!(
            Outcome::of(507053, Some("return(507053)")),
            Outcome::Injected
        );
        assert_eq!(Outcome::of(0, Some("skip")), Outcome::Injected);
        assert_eq!(Outcome::of(0, Some("abort")), Outcome::Injected);
    }

    #[test]
    fn spans_decode_bytes_kind_sync_and_what_a_wait_waited_on() {
        let s = Span::from_event(&event(
            r#"{"ph":"X","name":"aclrtMemcpy2dAsync","ts":1,"dur":2,"pid":1,"tid":1,"args":{"width":100,"height":3,"count":7,"kind":"HOST_TO_DEVICE","ret":0}}"#,
        ));
        assert_eq!(
            (s.bytes, s.kind.as_deref(), s.sync),
            (Some(300), Some("HOST_TO_DEVICE"), false)
        );
        let s = Span::from_event(&event(
            r#"{"ph":"X","name":"aclrtMemcpyAsync","ts":1,"dur":2,"pid":1,"tid":1,"args":{"count":64,"kind":"HOST_TO_DEVICE","ret":0,"sync":true}}"#,
        ));
        assert!(s.sync);
        let s = Span::from_event(&event(
            r#"{"ph":"X","name":"aclrtMemcpy","ts":1,"dur":2,"pid":1,"tid":1,"args":{"count":64,"kind":"DEVICE_TO_HOST","ret":0}}"#,
        ));
        assert!(s.sync);
        let s = Span::from_event(&event(
            r#"{"ph":"X","name":"HcclD2DMemcpyAsync","ts":1,"dur":2,"pid":1,"tid":1,"args":{"count":64,"ret":0}}"#,
        ));
        assert_eq!(s.kind.as_deref(), Some("DEVICE_TO_DEVICE"));
        for (args, on) in [
            (r#"{"stream":"0x10","ret":0}"#, "stream 0x10"),
            (r#"{"stream":"0x10","timeout":-1,"ret":0}"#, "stream 0x10"),
            (r#"{"event":"0x20","ret":0}"#, "event 0x20"),
            (r#"{"device":true,"ret":0}"#, "device"),
        ] {
            let s = Span::from_event(&event(&format!(
                r#"{{"ph":"X","name":"aclrtSynchronizeStream","ts":1,"dur":2,"pid":1,"tid":1,"args":{args}}}"#
            )));
            assert_eq!(s.waited_on.as_deref(), Some(on));
            assert_eq!((s.bytes, s.kind), (None, None));
        }
    }

    #[test]
    fn rows_sum_ok_bytes_and_rate_only_synchronous_copies() {
        let mut agg = Aggregates::default();
        for line in [
            // async 1 GiB in 26 µs: bytes, no rate
            r#"{"ph":"X","name":"aclrtMemcpyAsync","ts":1,"dur":26,"pid":1,"tid":1,"args":{"count":1073741824,"kind":"HOST_TO_DEVICE","ret":0}}"#,
            // injected: counted, not summed
            r#"{"ph":"X","name":"aclrtMemcpyAsync","ts":2,"dur":1,"pid":1,"tid":1,"args":{"count":4096,"kind":"HOST_TO_DEVICE","ret":507053,"fault":"return(507053)"}}"#,
            // runtime failure: counted, not summed
            r#"{"ph":"X","name":"aclrtMemcpyAsync","ts":3,"dur":1,"pid":1,"tid":1,"args":{"count":4096,"kind":"HOST_TO_DEVICE","ret":107000}}"#,
        ] {
            agg.add(&event(line));
        }
        let row = &agg.by_api.map[&Api::new("aclrtMemcpyAsync")];
        assert_eq!((row.calls, row.ok, row.failed, row.injected), (3, 1, 1, 1));
        assert_eq!(row.bytes, Some(1 << 30));
        assert_eq!(row.host_gb_per_s_sync(), None);

        agg.add(&event(
            r#"{"ph":"X","name":"aclrtMemcpyAsync","ts":4,"dur":1000,"pid":1,"tid":1,"args":{"count":2000000,"kind":"HOST_TO_DEVICE","ret":0,"sync":true}}"#,
        ));
        // The function's row mixes asynchronous and synchronous calls: no rate.
        let row = &agg.by_api.map[&Api::new("aclrtMemcpyAsync")];
        assert_eq!(row.host_gb_per_s_sync(), None);
        // The synchronous call's own row: 2 MB in 1 ms.
        let key = (
            Api::new("aclrtMemcpyAsync"),
            Some("HOST_TO_DEVICE".to_string()),
            true,
        );
        assert_eq!(agg.by_kind.map[&key].host_gb_per_s_sync(), Some(2.0));
    }
}
