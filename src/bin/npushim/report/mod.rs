//! `npushim report`: statistics of one or more traces, in the manner of `nsys stats`.
//!
//! This module reads: it streams each file through a [`TraceReader`], checks the types of
//! the fields it uses (an event whose fields have the wrong type, `"count":"4096"`, is
//! skipped and counted, never read as 0), keeps what the files say about themselves (how
//! they ended, dropped spans, processes) and hands every span to [`aggregate`], which owns
//! what is summed and how. [`render`] turns the result into text tables or one JSON object;
//! nothing here prints (the caller writes the returned string wherever it belongs). Memory
//! does not depend on the length of the traces.

mod aggregate;
mod device;
mod render;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Map, Value};

use crate::reader::{Ending, Event, ProcessInfo, TraceError, TraceReader};

use aggregate::{Aggregates, LeakRecord};

/// Most processes listed in a report's header.
const MAX_PROCESSES: usize = 64;

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

const BOOLEAN: FieldType = FieldType {
    expected: "true or false",
    holds: Value::is_boolean,
};
const STRING: FieldType = FieldType {
    expected: "a string",
    holds: Value::is_string,
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
const SPAN_ARGS: [Field; 8] = [
    ("count", UNSIGNED),
    ("width", UNSIGNED),
    ("height", UNSIGNED),
    ("ret", INTEGER),
    ("depth", UNSIGNED),
    ("sync", BOOLEAN),
    ("srcMem", STRING),
    ("dstMem", STRING),
];
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

/// A process a trace describes (its `npushim` metadata event).
struct Process {
    /// Index of the file in `Report::sources`.
    source: usize,
    /// The `pid` of the event itself (in a merged trace, the pid of its track).
    event_pid: Option<i64>,
    info: ProcessInfo,
}

/// A process as the key of its leak record: file index and the metadata event's `pid`.
type ProcessKey = (usize, Option<i64>);

/// Aggregates of one or more traces, with what the files said about themselves.
#[derive(Default)]
pub struct Report {
    sources: Vec<Source>,
    processes: Vec<Process>,
    /// What each process's `npushim_leaks` event said (at most [`MAX_PROCESSES`]).
    leaks: BTreeMap<ProcessKey, LeakRecord>,
    processes_omitted: usize,
    aggregates: Aggregates,
    warnings: Vec<String>,
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
        let index = self.sources.len();
        let mut npushim_spans = 0u64;
        let mut stats: BTreeMap<Option<i64>, (u64, u64)> = BTreeMap::new();
        while let Some(event) = reader.next_event()? {
            let mut leak_record = None;
            let bad = match event.ph() {
                "X" => malformed(&event, &SPAN_FIELDS, &SPAN_ARGS),
                "M" if event.name() == "npushim_stats" => malformed(&event, &[], &STATS_ARGS),
                "M" if event.name() == "npushim_leaks" => {
                    match LeakRecord::from_args(event.args()) {
                        Ok(record) => {
                            leak_record = Some(record);
                            None
                        }
                        Err((field, value, expected)) => Some(Malformed {
                            line: event.line,
                            field,
                            value: quoted(&value),
                            expected,
                        }),
                    }
                }
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
                    self.aggregates.add(&event);
                }
                "M" if event.is_npushim_metadata() => {
                    source.has_metadata = true;
                    if self.processes.len() < MAX_PROCESSES {
                        let args = event.args().cloned().unwrap_or_default();
                        self.processes.push(Process {
                            source: index,
                            event_pid: event.pid(),
                            info: ProcessInfo::from_metadata(&args, event.pid()),
                        });
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
                "M" if event.name() == "npushim_leaks" => {
                    let key = (index, event.pid());
                    let room = self.leaks.len() < MAX_PROCESSES || self.leaks.contains_key(&key);
                    if let Some(record) = leak_record.filter(|_| room) {
                        self.leaks.insert(key, record);
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
}
