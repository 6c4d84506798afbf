//! `npushim report`: memcpy statistics of one or more traces, in the manner of `nsys stats`.
//!
//! The trace is streamed through a [`TraceReader`]; only aggregates are kept: per (API, kind)
//! counters with a log-bucketed duration histogram for percentiles, capped tables of return
//! codes, violations and faults, and a 10-entry heap of the slowest calls. Memory therefore
//! does not depend on the length of the trace. This module renders text and JSON; it does
//! not print (the caller writes the returned string wherever it belongs). An event whose
//! fields have the wrong type (`"count":"4096"`) is skipped and counted, never read as 0.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::codes;
use crate::reader::{Ending, Event, ProcessInfo, TraceError, TraceReader, describe_ending};

/// How many slowest calls are listed.
const TOP_N: usize = 10;
/// Most distinct keys kept in a count table; the rest is counted under `(other)`.
const MAX_KEYS: usize = 512;
/// Most processes listed in a report's header.
const MAX_PROCESSES: usize = 64;

/// Durations are bucketed in nanoseconds: exact below 2^(SUB_BITS+1) ns, then 2^SUB_BITS
/// buckets per power of two (each at most 1/2^SUB_BITS of its values wide), so a reported
/// percentile is within ±0.8 % of the true sample value.
const SUB_BITS: u32 = 7;

/// Precision of the reported percentiles, for the output. A percentile is the mean of the
/// samples in its bucket, so it is exact when they are all equal.
pub const PERCENTILE_PRECISION: &str = "exact below 256 ns, otherwise within ±0.8 %";

#[derive(Default)]
struct Histogram {
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

    fn add(&mut self, dur_us: f64) {
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
    fn percentile_us(&self, p: f64) -> f64 {
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
}

#[derive(Default)]
struct Row {
    calls: u64,
    bytes: u64,
    total_us: f64,
    histogram: Histogram,
}

impl Row {
    fn add(&mut self, bytes: u64, dur_us: f64) {
        self.calls += 1;
        self.bytes = self.bytes.saturating_add(bytes);
        self.total_us += dur_us;
        self.histogram.add(dur_us);
    }

    fn mean_us(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.total_us / self.calls as f64
        }
    }

    /// Bytes per second of host time, in GB/s (10^9 bytes).
    fn gb_per_s(&self) -> Option<f64> {
        (self.total_us > 0.0).then(|| self.bytes as f64 / (self.total_us * 1e3))
    }

    fn to_json(&self) -> Map<String, Value> {
        let mut map = Map::new();
        map.insert("calls".into(), json!(self.calls));
        map.insert("bytes".into(), json!(self.bytes));
        map.insert("total_us".into(), json!(round3(self.total_us)));
        map.insert("mean_us".into(), json!(round3(self.mean_us())));
        map.insert(
            "p50_us".into(),
            json!(round3(self.histogram.percentile_us(50.0))),
        );
        map.insert(
            "p99_us".into(),
            json!(round3(self.histogram.percentile_us(99.0))),
        );
        map.insert("gb_per_s".into(), json!(self.gb_per_s().map(round3)));
        map
    }
}

/// A count table that stops growing after [`MAX_KEYS`] keys.
struct Counts<K: Ord> {
    map: BTreeMap<K, u64>,
    other: u64,
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

struct Slow {
    dur_us: f64,
    ts_us: f64,
    pid: i64,
    tid: i64,
    api: String,
    kind: String,
    count: u64,
    ret: i64,
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

/// What was read from one file.
struct Source {
    path: String,
    ending: Ending,
    events: u64,
    spans: u64,
    stats_events: Option<u64>,
    dropped: u64,
    has_metadata: bool,
    /// Events skipped because a field had the wrong type, and the first of them.
    malformed: u64,
    first_malformed: Option<Malformed>,
}

/// A field of an event whose type is not the one the trace format gives it.
struct Malformed {
    line: u64,
    field: &'static str,
    /// The value as JSON, shortened.
    value: String,
    expected: &'static str,
}

impl Malformed {
    fn describe(&self) -> String {
        format!(
            "line {}, \"{}\":{}, expected {}",
            self.line, self.field, self.value, self.expected
        )
    }
}

/// Longest value quoted in a message about a malformed field.
const MAX_QUOTED: usize = 60;

fn quoted(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(MAX_QUOTED) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// The type a field must have: its name for messages, and the test.
#[derive(Clone, Copy)]
struct FieldType {
    expected: &'static str,
    holds: fn(&Value) -> bool,
}

const NUMBER: FieldType = FieldType {
    expected: "a number",
    holds: Value::is_number,
};
const INTEGER: FieldType = FieldType {
    expected: "an integer",
    holds: Value::is_i64,
};
const UNSIGNED: FieldType = FieldType {
    expected: "a non-negative integer",
    holds: Value::is_u64,
};

/// A field name and its type.
type Field = (&'static str, FieldType);

/// The fields the report reads from a span or an `npushim_stats` event, with their types.
/// A field that is present with another type would otherwise be read as 0.
const SPAN_FIELDS: [Field; 4] = [
    ("ts", NUMBER),
    ("dur", NUMBER),
    ("pid", INTEGER),
    ("tid", INTEGER),
];
const SPAN_ARGS: [Field; 3] = [("count", UNSIGNED), ("ret", INTEGER), ("depth", UNSIGNED)];
const STATS_ARGS: [Field; 2] = [("events", UNSIGNED), ("dropped", UNSIGNED)];

/// The first field of `event` that has the wrong type, if any.
fn malformed(event: &Event, fields: &[Field], args: &[Field]) -> Option<Malformed> {
    let found = |map: &Map<String, Value>, list: &[Field]| {
        list.iter().find_map(|&(field, kind)| {
            map.get(field)
                .filter(|v| !(kind.holds)(v))
                .map(|v| Malformed {
                    line: event.line,
                    field,
                    value: quoted(v),
                    expected: kind.expected,
                })
        })
    };
    if let Some(bad) = found(&event.object, fields) {
        return Some(bad);
    }
    match event.object.get("args") {
        None => None,
        Some(Value::Object(map)) => found(map, args),
        Some(other) => Some(Malformed {
            line: event.line,
            field: "args",
            value: quoted(other),
            expected: "an object",
        }),
    }
}

/// Aggregates of one or more traces.
#[derive(Default)]
pub struct Report {
    sources: Vec<Source>,
    processes: Vec<ProcessInfo>,
    processes_omitted: usize,
    rows: BTreeMap<(Api, String), Row>,
    api_rows: BTreeMap<Api, Row>,
    errors: Counts<(Api, i64)>,
    violations: Counts<(Api, String)>,
    faults: Counts<(Api, String)>,
    nesting: BTreeMap<Api, (u64, u64)>,
    slowest: BinaryHeap<Reverse<Slow>>,
    spans: u64,
    other_spans: u64,
    warnings: Vec<String>,
}

/// An API name that sorts `aclrtMemcpyAsync`, then `HcclMemcpyAsync`, then any other name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Api(u8, String);

impl Api {
    fn new(name: &str) -> Api {
        let order = match name {
            "aclrtMemcpyAsync" => 0,
            "HcclMemcpyAsync" => 1,
            _ => 2,
        };
        Api(order, name.to_string())
    }

    fn name(&self) -> &str {
        &self.1
    }
}

fn arg_text(value: Option<&Value>) -> String {
    match value {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "?".to_string(),
        Some(other) => other.to_string(),
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl Report {
    pub fn new() -> Report {
        Report::default()
    }

    /// Streams `path` into the report. Warnings (a trace without its `npushim` metadata,
    /// events skipped as malformed) are kept for the output and also returned so the caller
    /// can show them at once.
    pub fn add_file(&mut self, path: &Path) -> Result<Vec<String>, TraceError> {
        let mut reader = TraceReader::open(path)?;
        let mut source = Source {
            path: path.display().to_string(),
            ending: Ending::Complete,
            events: 0,
            spans: 0,
            stats_events: None,
            dropped: 0,
            has_metadata: false,
            malformed: 0,
            first_malformed: None,
        };
        let mut npushim_spans = 0u64;
        let mut stats: BTreeMap<Option<i64>, (u64, u64)> = BTreeMap::new();
        while let Some(event) = reader.next_event()? {
            let bad = match event.ph() {
                "X" => malformed(&event, &SPAN_FIELDS, &SPAN_ARGS),
                "M" if event.name() == "npushim_stats" => malformed(&event, &[], &STATS_ARGS),
                _ => None,
            };
            if let Some(bad) = bad {
                source.malformed += 1;
                source.first_malformed.get_or_insert(bad);
                continue;
            }
            match event.ph() {
                "X" => {
                    source.spans += 1;
                    if event.is_npushim_span() {
                        npushim_spans += 1;
                    }
                    self.add_span(&event);
                }
                "M" if event.is_npushim_metadata() => {
                    source.has_metadata = true;
                    if self.processes.len() < MAX_PROCESSES {
                        let args = event.args().cloned().unwrap_or_default();
                        self.processes
                            .push(ProcessInfo::from_metadata(&args, event.pid()));
                    } else {
                        self.processes_omitted += 1;
                    }
                }
                "M" if event.name() == "npushim_stats" => {
                    // Written at exit and whenever `dropped` grows: the last one per
                    // process counts (a merged file holds several processes).
                    let room = stats.len() < MAX_PROCESSES || stats.contains_key(&event.pid());
                    if let Some(args) = event.args().filter(|_| room) {
                        let events = args.get("events").and_then(Value::as_u64).unwrap_or(0);
                        let dropped = args.get("dropped").and_then(Value::as_u64).unwrap_or(0);
                        stats.insert(event.pid(), (events, dropped));
                    }
                }
                _ => {}
            }
        }
        if !stats.is_empty() {
            source.stats_events = Some(stats.values().map(|s| s.0).sum());
            source.dropped = stats.values().map(|s| s.1).sum();
        }
        source.ending = reader.ending();
        source.events = reader.events();
        let mut warnings = Vec::new();
        if let Some(first) = &source.first_malformed {
            let text = format!(
                "{} events skipped as malformed (first: {}) ({})",
                source.malformed,
                first.describe(),
                path.display()
            );
            self.warnings.push(text.clone());
            warnings.push(text);
        }
        if !source.has_metadata {
            if npushim_spans == 0 {
                return Err(TraceError {
                    path: path.to_path_buf(),
                    what: "not an npushim trace: no npushim metadata and no npushim spans"
                        .to_string(),
                });
            }
            let text = format!(
                "no npushim metadata line (file cut or damaged at the start?); read its spans anyway ({})",
                path.display()
            );
            self.warnings.push(text.clone());
            warnings.push(text);
        }
        self.sources.push(source);
        Ok(warnings)
    }

    fn add_span(&mut self, event: &Event) {
        let api = Api::new(event.name());
        if !event.is_npushim_span() {
            self.other_spans += 1;
            if self.api_rows.len() >= MAX_KEYS && !self.api_rows.contains_key(&api) {
                return;
            }
        }
        self.spans += 1;
        let args = event.args();
        let arg = |key: &str| args.and_then(|a| a.get(key));
        let kind = arg_text(arg("kind"));
        let bytes = arg("count").and_then(Value::as_u64).unwrap_or(0);
        let dur_us = event
            .object
            .get("dur")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let ts_us = event
            .object
            .get("ts")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let ret = arg("ret").and_then(Value::as_i64).unwrap_or(0);
        let depth = arg("depth").and_then(Value::as_u64).unwrap_or(0);

        if self.rows.len() < MAX_KEYS || self.rows.contains_key(&(api.clone(), kind.clone())) {
            self.rows
                .entry((api.clone(), kind.clone()))
                .or_default()
                .add(bytes, dur_us);
        }
        self.api_rows
            .entry(api.clone())
            .or_default()
            .add(bytes, dur_us);
        let nesting = self.nesting.entry(api.clone()).or_default();
        if depth >= 1 {
            nesting.1 += 1;
        } else {
            nesting.0 += 1;
        }
        if ret != 0 {
            self.errors.add((api.clone(), ret));
        }
        if let Some(list) = arg("violations").and_then(Value::as_array) {
            for rule in list {
                self.violations.add((api.clone(), arg_text(Some(rule))));
            }
        }
        if let Some(fault) = arg("fault") {
            self.faults.add((api.clone(), arg_text(Some(fault))));
        }
        let slow = Slow {
            dur_us,
            ts_us,
            pid: event.pid().unwrap_or(0),
            tid: event.object.get("tid").and_then(Value::as_i64).unwrap_or(0),
            api: api.1,
            kind,
            count: bytes,
            ret,
        };
        if self.slowest.len() < TOP_N {
            self.slowest.push(Reverse(slow));
        } else if self.slowest.peek().is_some_and(|Reverse(min)| slow > *min) {
            self.slowest.pop();
            self.slowest.push(Reverse(slow));
        }
    }

    fn slowest_sorted(&self) -> Vec<&Slow> {
        let mut list: Vec<&Slow> = self.slowest.iter().map(|Reverse(s)| s).collect();
        list.sort_by(|a, b| b.cmp(a));
        list
    }

    fn code_name(api: &Api, ret: i64) -> Option<&'static str> {
        if api.name().starts_with("Hccl") {
            codes::hccl_name(ret)
        } else {
            codes::acl_name(ret)
        }
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let files: Vec<Value> = self
            .sources
            .iter()
            .map(|s| {
                json!({
                    "path": s.path,
                    "read": describe_ending(s.ending, s.events),
                    "complete": s.ending == Ending::Complete,
                    "last_line_partial": s.ending == Ending::CutOff { partial_last_line: true },
                    "events": s.events,
                    "spans": s.spans,
                    "has_npushim_metadata": s.has_metadata,
                    "stats_events": s.stats_events,
                    "dropped": s.dropped,
                    "malformed": s.malformed,
                    "first_malformed": s.first_malformed.as_ref().map(|m| json!({
                        "line": m.line, "field": m.field, "value": m.value,
                        "expected": m.expected,
                    })),
                })
            })
            .collect();
        let processes: Vec<Value> = self
            .processes
            .iter()
            .map(|p| {
                json!({
                    "program": p.program, "pid": p.pid, "rank": p.rank, "host": p.host,
                    "version": p.version, "seed": p.seed, "check": p.check, "faults": p.faults,
                })
            })
            .collect();
        let by_api: Vec<Value> = self
            .api_rows
            .iter()
            .map(|(api, row)| {
                let mut map = row.to_json();
                map.insert("api".into(), json!(api.name()));
                Value::Object(map)
            })
            .collect();
        let by_kind: Vec<Value> = self
            .rows
            .iter()
            .map(|((api, kind), row)| {
                let mut map = row.to_json();
                map.insert("api".into(), json!(api.name()));
                map.insert("kind".into(), json!(kind));
                Value::Object(map)
            })
            .collect();
        let errors: Vec<Value> = self
            .errors
            .map
            .iter()
            .map(|((api, ret), calls)| {
                json!({"api": api.name(), "ret": ret, "name": Self::code_name(api, *ret), "calls": calls})
            })
            .collect();
        let violations: Vec<Value> = self
            .violations
            .map
            .iter()
            .map(|((api, rule), calls)| json!({"api": api.name(), "rule": rule, "calls": calls}))
            .collect();
        let faults: Vec<Value> = self
            .faults
            .map
            .iter()
            .map(|((api, action), calls)| json!({"api": api.name(), "action": action, "calls": calls}))
            .collect();
        let nesting: Vec<Value> = self
            .nesting
            .iter()
            .map(|(api, (top, nested))| json!({"api": api.name(), "top_level": top, "nested": nested}))
            .collect();
        let slowest: Vec<Value> = self
            .slowest_sorted()
            .iter()
            .map(|s| {
                json!({
                    "ts_us": s.ts_us, "pid": s.pid, "tid": s.tid, "api": s.api, "kind": s.kind,
                    "count": s.count, "dur_us": s.dur_us, "ret": s.ret,
                })
            })
            .collect();
        json!({
            "files": files,
            "processes": processes,
            "processes_omitted": self.processes_omitted,
            "spans": self.spans,
            "dropped": self.sources.iter().map(|s| s.dropped).sum::<u64>(),
            "malformed": self.sources.iter().map(|s| s.malformed).sum::<u64>(),
            "by_api": by_api,
            "by_kind": by_kind,
            "errors": errors,
            "errors_other": self.errors.other,
            "violations": violations,
            "faults": faults,
            "nesting": nesting,
            "slowest": slowest,
            "percentile_precision": PERCENTILE_PRECISION,
            "warnings": self.warnings,
        })
    }

    /// The report as text tables.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for source in &self.sources {
            let _ = writeln!(out, "npushim report: {}", source.path);
            let read = describe_ending(source.ending, source.events);
            let stats = match source.stats_events {
                Some(events) => format!("shim wrote {events} spans, dropped {}", source.dropped),
                None => "no npushim_stats line (written at exit)".to_string(),
            };
            let _ = writeln!(out, "  read: {read}; {stats}");
            if source.dropped > 0 {
                let _ = writeln!(
                    out,
                    "  warning: the shim dropped {} spans; the numbers below miss them",
                    source.dropped
                );
            }
            if !source.has_metadata {
                let _ = writeln!(
                    out,
                    "  warning: no npushim metadata line; spans read anyway"
                );
            }
            if let Some(first) = &source.first_malformed {
                let _ = writeln!(
                    out,
                    "  warning: {} events skipped as malformed, not counted below (first: {})",
                    source.malformed,
                    first.describe()
                );
            }
        }
        for p in &self.processes {
            let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".to_string());
            let number = |v: Option<i64>| v.map_or("?".to_string(), |n| n.to_string());
            let _ = writeln!(
                out,
                "  process: {} (pid {}, rank {}) on {}, npushim {}, seed {}, check {}, faults {:?}",
                text(&p.program),
                number(p.pid),
                number(p.rank),
                text(&p.host),
                text(&p.version),
                p.seed.map_or("?".to_string(), |s| s.to_string()),
                text(&p.check),
                p.faults.clone().unwrap_or_default(),
            );
        }
        if self.processes_omitted > 0 {
            let _ = writeln!(out, "  … and {} more processes", self.processes_omitted);
        }

        let _ = writeln!(out, "\nCalls by API and kind (host time per call)");
        let mut table = Table::new(&[
            ("API", Left),
            ("kind", Left),
            ("calls", Right),
            ("bytes", Right),
            ("total µs", Right),
            ("mean µs", Right),
            ("p50 µs", Right),
            ("p99 µs", Right),
            ("GB/s", Right),
        ]);
        for (api, api_row) in &self.api_rows {
            for ((row_api, kind), row) in self.rows.range((api.clone(), String::new())..) {
                if row_api != api {
                    break;
                }
                table.push(row_cells(api, kind, row));
            }
            table.push(row_cells(api, "(all)", api_row));
        }
        table.render(&mut out);

        let _ = writeln!(
            out,
            "\nTop-level and nested calls (nested: made inside another intercepted call, depth >= 1)"
        );
        let mut table = Table::new(&[("API", Left), ("top-level", Right), ("nested", Right)]);
        for (api, (top, nested)) in &self.nesting {
            table.push(vec![
                api.name().to_string(),
                top.to_string(),
                nested.to_string(),
            ]);
        }
        table.render(&mut out);

        let _ = writeln!(out, "\nErrors by return code");
        let mut table = Table::new(&[
            ("API", Left),
            ("ret", Right),
            ("name", Left),
            ("calls", Right),
        ]);
        for ((api, ret), calls) in &self.errors.map {
            let name = Self::code_name(api, *ret).unwrap_or("?");
            table.push(vec![
                api.name().to_string(),
                ret.to_string(),
                name.to_string(),
                calls.to_string(),
            ]);
        }
        push_other(&mut table, self.errors.other);
        table.render(&mut out);

        let _ = writeln!(out, "\nCheck violations by rule");
        let mut table = Table::new(&[("API", Left), ("rule", Left), ("calls", Right)]);
        for ((api, rule), calls) in &self.violations.map {
            table.push(vec![
                api.name().to_string(),
                rule.clone(),
                calls.to_string(),
            ]);
        }
        push_other(&mut table, self.violations.other);
        table.render(&mut out);

        let _ = writeln!(out, "\nInjected faults by action");
        let mut table = Table::new(&[("API", Left), ("action", Left), ("calls", Right)]);
        for ((api, action), calls) in &self.faults.map {
            table.push(vec![
                api.name().to_string(),
                action.clone(),
                calls.to_string(),
            ]);
        }
        push_other(&mut table, self.faults.other);
        table.render(&mut out);

        let _ = writeln!(out, "\nSlowest {TOP_N} calls");
        let mut table = Table::new(&[
            ("ts µs", Right),
            ("pid", Right),
            ("tid", Right),
            ("API", Left),
            ("kind", Left),
            ("count", Right),
            ("dur µs", Right),
            ("ret", Right),
        ]);
        for s in self.slowest_sorted() {
            table.push(vec![
                format!("{:.3}", s.ts_us),
                s.pid.to_string(),
                s.tid.to_string(),
                s.api.clone(),
                s.kind.clone(),
                s.count.to_string(),
                format!("{:.3}", s.dur_us),
                s.ret.to_string(),
            ]);
        }
        table.render(&mut out);
        let _ = writeln!(
            out,
            "\np50/p99: {PERCENTILE_PRECISION}. GB/s: bytes / total host time (10^9 B/s)."
        );
        out
    }
}

fn row_cells(api: &Api, kind: &str, row: &Row) -> Vec<String> {
    vec![
        api.name().to_string(),
        kind.to_string(),
        row.calls.to_string(),
        row.bytes.to_string(),
        format!("{:.3}", row.total_us),
        format!("{:.3}", row.mean_us()),
        format!("{:.3}", row.histogram.percentile_us(50.0)),
        format!("{:.3}", row.histogram.percentile_us(99.0)),
        row.gb_per_s()
            .map_or("-".to_string(), |r| format!("{r:.3}")),
    ]
}

/// Adds the `(other)` row of a capped count table.
fn push_other(table: &mut Table, other: u64) {
    if other > 0 {
        let mut cells = vec!["(other)".to_string(); table.headers.len() - 1];
        cells.push(other.to_string());
        table.push(cells);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}
use Align::{Left, Right};

/// A text table with aligned columns, indented by two spaces.
struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            headers: columns.iter().map(|(h, _)| h.to_string()).collect(),
            align: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn render(&self, out: &mut String) {
        if self.rows.is_empty() {
            out.push_str("  (none)\n");
            return;
        }
        let width = |s: &String| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(width).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::from(" ");
            for (column, cell) in row.iter().enumerate() {
                let pad = widths[column].saturating_sub(width(cell));
                line.push(' ');
                if self.align[column] == Right {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
