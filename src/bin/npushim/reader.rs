//! Streaming reader of npushim trace files (format 1, `docs/trace-format.md`), shared by
//! `report` and `merge`.
//!
//! A trace is JSON-array text written one event per line: `[` on the first line, `,` before
//! every later event, `]` alone on the last line of a complete file. The reader hands out one
//! event at a time and keeps nothing else, so memory does not grow with the file. It accepts
//! complete and cut-off files alike (a missing `]`, a partial last line) and records which
//! one it read. It never prints: problems are returned as [`TraceError`] values carrying the
//! path, and the caller decides how to show them.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// The newest trace format this tool understands.
pub const SUPPORTED_FORMAT: u64 = 1;

/// Longest line accepted; a real event line is a few hundred bytes.
const MAX_LINE: usize = 16 << 20;

/// A problem with one trace file; shown as `<what> (<path>)`.
#[derive(Debug)]
pub struct TraceError {
    pub path: PathBuf,
    pub what: String,
}

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.what, self.path.display())
    }
}

/// How a file ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The closing `]` was read.
    Complete,
    /// No closing `]`; `partial_last_line` says whether an unparsable last line was ignored.
    CutOff { partial_last_line: bool },
}

/// Describes how much of a file was read, e.g. `complete` or
/// `cut off: 120 events read, last line partial`.
pub fn describe_ending(ending: Ending, events: u64) -> String {
    match ending {
        Ending::Complete => "complete".to_string(),
        Ending::CutOff {
            partial_last_line: true,
        } => format!("cut off: {events} events read, last line partial"),
        Ending::CutOff {
            partial_last_line: false,
        } => format!("cut off: {events} events read, no closing ']'"),
    }
}

/// One event of a trace: its JSON object and the line it came from.
pub struct Event {
    pub line: u64,
    pub object: Map<String, Value>,
}

impl Event {
    pub fn ph(&self) -> &str {
        self.object.get("ph").and_then(Value::as_str).unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.object
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    pub fn args(&self) -> Option<&Map<String, Value>> {
        self.object.get("args").and_then(Value::as_object)
    }

    pub fn pid(&self) -> Option<i64> {
        self.object.get("pid").and_then(Value::as_i64)
    }

    /// Whether this is the `npushim` metadata event (format, version, clock anchor, …).
    pub fn is_npushim_metadata(&self) -> bool {
        self.ph() == "M" && self.name() == "npushim"
    }

    /// Whether this is a span of a function the shim traces.
    pub fn is_npushim_span(&self) -> bool {
        self.ph() == "X" && crate::functions::lookup(self.name()).is_some()
    }
}

/// The parts of the `npushim` metadata event the tools use.
#[derive(Clone, Debug, Default)]
pub struct ProcessInfo {
    pub pid: Option<i64>,
    pub rank: Option<i64>,
    pub host: Option<String>,
    pub program: Option<String>,
    pub version: Option<String>,
    pub seed: Option<u64>,
    pub check: Option<String>,
    pub faults: Option<String>,
    /// `realtime_us - monotonic_us` of the clock anchor.
    pub realtime_offset_us: Option<f64>,
}

impl ProcessInfo {
    /// Reads the `npushim` metadata event's fields; `event_pid` is the event's own `pid`.
    pub fn from_metadata(args: &Map<String, Value>, event_pid: Option<i64>) -> ProcessInfo {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        let clock = args.get("clock");
        let anchor = |key: &str| clock.and_then(|c| c.get(key)).and_then(Value::as_f64);
        let config = args.get("config");
        ProcessInfo {
            pid: args.get("pid").and_then(Value::as_i64).or(event_pid),
            rank: args.get("rank").and_then(|r| {
                r.as_i64()
                    .or_else(|| r.as_str().and_then(|s| s.parse().ok()))
            }),
            host: text(args.get("host")),
            program: text(args.get("program")),
            version: text(args.get("version")),
            seed: args.get("seed").and_then(Value::as_u64),
            check: text(config.and_then(|c| c.get("check"))),
            faults: text(config.and_then(|c| c.get("faults"))),
            realtime_offset_us: match (anchor("monotonic_us"), anchor("realtime_us")) {
                (Some(mono), Some(real)) => Some(real - mono),
                _ => None,
            },
        }
    }
}

/// Reads a trace file event by event.
pub struct TraceReader {
    path: PathBuf,
    input: BufReader<Box<dyn Read>>,
    buf: Vec<u8>,
    line: u64,
    events: u64,
    closed: bool,
    partial_last_line: bool,
    finished: bool,
}

impl TraceReader {
    /// Opens `path`; fails with a one-line reason if it cannot be read.
    pub fn open(path: &Path) -> Result<TraceReader, TraceError> {
        let fail = |what: String| TraceError {
            path: path.to_path_buf(),
            what,
        };
        let file = File::open(path).map_err(|e| fail(format!("cannot open: {}", io_reason(&e))))?;
        let meta = file
            .metadata()
            .map_err(|e| fail(format!("cannot open: {}", io_reason(&e))))?;
        if meta.is_dir() {
            return Err(fail("is a directory, not a trace file".to_string()));
        }
        Ok(TraceReader::from_reader(path, Box::new(file)))
    }

    /// Reads a trace from any byte stream; `path` is only used in messages.
    pub fn from_reader(path: &Path, input: Box<dyn Read>) -> TraceReader {
        TraceReader {
            path: path.to_path_buf(),
            input: BufReader::with_capacity(256 << 10, input),
            buf: Vec::new(),
            line: 0,
            events: 0,
            closed: false,
            partial_last_line: false,
            finished: false,
        }
    }

    /// Events returned so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// How the file ended; meaningful once [`TraceReader::next_event`] returned `None`.
    pub fn ending(&self) -> Ending {
        if self.closed {
            Ending::Complete
        } else {
            Ending::CutOff {
                partial_last_line: self.partial_last_line,
            }
        }
    }

    fn error(&self, what: String) -> TraceError {
        TraceError {
            path: self.path.clone(),
            what,
        }
    }

    fn not_a_trace(&self, why: &str) -> TraceError {
        self.error(format!("not an npushim trace: {why}"))
    }

    /// The next event, `None` at the end of the data.
    pub fn next_event(&mut self) -> Result<Option<Event>, TraceError> {
        while !self.finished {
            self.buf.clear();
            let limit = MAX_LINE as u64 + 1;
            let read = (&mut self.input)
                .take(limit)
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| self.error(format!("cannot read: {}", io_reason(&e))))?;
            if read == 0 {
                self.finished = true;
                if self.line == 0 {
                    return Err(self.not_a_trace("the file is empty"));
                }
                break;
            }
            self.line += 1;
            let line = self.line;
            let has_newline = self.buf.last() == Some(&b'\n');
            if !has_newline && self.buf.len() > MAX_LINE {
                return Err(self.not_a_trace(&format!(
                    "line {line} is longer than {} MiB",
                    MAX_LINE >> 20
                )));
            }
            let text = match std::str::from_utf8(&self.buf) {
                Ok(text) => text.trim(),
                // A cut can split a multi-byte character of the last line.
                Err(_) if !has_newline => {
                    self.partial_last_line = true;
                    self.finished = true;
                    break;
                }
                Err(_) => return Err(self.not_a_trace(&format!("line {line} is not UTF-8 text"))),
            };
            let mut rest = text;
            if line == 1 {
                rest = match rest.strip_prefix('[') {
                    Some(rest) => rest,
                    None => {
                        return Err(self.not_a_trace("it does not start with '[' (JSON array)"));
                    }
                };
            }
            let rest = rest.trim_start();
            let rest = rest.strip_prefix(',').unwrap_or(rest).trim();
            if self.closed {
                if rest.is_empty() {
                    continue;
                }
                return Err(self.not_a_trace(&format!("line {line} follows the closing ']'")));
            }
            if rest == "]" {
                self.closed = true;
                continue;
            }
            let rest = rest.strip_suffix(',').unwrap_or(rest).trim_end();
            if rest.is_empty() {
                continue;
            }
            let value: Value = match serde_json::from_str(rest) {
                Ok(value) => value,
                Err(_) if !has_newline => {
                    self.partial_last_line = true;
                    self.finished = true;
                    break;
                }
                Err(e) => {
                    return Err(
                        self.not_a_trace(&format!("line {line} is not a JSON trace event ({e})"))
                    );
                }
            };
            let Value::Object(object) = value else {
                return Err(self.not_a_trace(&format!("line {line} is not a JSON object")));
            };
            if !object.get("ph").is_some_and(Value::is_string) {
                return Err(self.not_a_trace(&format!("line {line} is an object without \"ph\"")));
            }
            let event = Event { line, object };
            if event.is_npushim_metadata() {
                self.check_format(&event)?;
            }
            self.events += 1;
            return Ok(Some(event));
        }
        Ok(None)
    }

    fn check_format(&self, event: &Event) -> Result<(), TraceError> {
        let format = event.args().and_then(|a| a.get("format"));
        match format {
            None => Ok(()),
            Some(value) => match value.as_u64() {
                Some(n) if n <= SUPPORTED_FORMAT => Ok(()),
                Some(n) => Err(self.error(format!(
                    "trace format {n} is newer than this npushim understands \
                     (format {SUPPORTED_FORMAT}); use a newer npushim"
                ))),
                None => Err(self.error(format!(
                    "unknown trace format {value} on line {}",
                    event.line
                ))),
            },
        }
    }
}

/// What the first part of a trace says about the process that wrote it.
pub struct Header {
    /// From the `npushim` metadata event, when the file has one.
    pub info: Option<ProcessInfo>,
    /// The `pid` of the first event, used when the metadata is missing.
    pub first_pid: Option<i64>,
}

/// Reads a trace only as far as its `npushim` metadata (normally line 2). A file without it
/// is read to the end to decide whether it is an npushim trace at all (it is when it holds
/// npushim spans, as a file cut at an odd place can).
pub fn read_header(path: &Path) -> Result<Header, TraceError> {
    let mut reader = TraceReader::open(path)?;
    let mut first_pid = None;
    let mut has_spans = false;
    while let Some(event) = reader.next_event()? {
        if first_pid.is_none() {
            first_pid = event.pid();
        }
        if event.is_npushim_metadata() {
            let info = event
                .args()
                .map(|args| ProcessInfo::from_metadata(args, event.pid()))
                .unwrap_or_default();
            return Ok(Header {
                info: Some(info),
                first_pid,
            });
        }
        has_spans |= event.is_npushim_span();
    }
    if !has_spans {
        return Err(reader.not_a_trace("no npushim metadata and no npushim spans"));
    }
    Ok(Header {
        info: None,
        first_pid,
    })
}

/// A short reason for an I/O error, without the `(os error N)` tail.
pub fn io_reason(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => {
            let text = error.to_string();
            match text.find(" (os error") {
                Some(cut) => text[..cut].to_string(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(text: &str) -> Result<(Vec<Event>, Ending), TraceError> {
        let bytes = text.as_bytes().to_vec();
        let mut reader =
            TraceReader::from_reader(Path::new("t.json"), Box::new(io::Cursor::new(bytes)));
        let mut events = Vec::new();
        while let Some(event) = reader.next_event()? {
            events.push(event);
        }
        Ok((events, reader.ending()))
    }

    #[test]
    fn complete_and_cut_off() {
        let (events, ending) =
            read_all("[{\"ph\":\"M\",\"name\":\"a\"}\n,{\"ph\":\"X\"}\n]\n").unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(ending, Ending::Complete);
        let (events, ending) =
            read_all("[{\"ph\":\"M\",\"name\":\"a\"}\n,{\"ph\":\"X\",\"na").unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(
            ending,
            Ending::CutOff {
                partial_last_line: true
            }
        );
        let (_, ending) = read_all("[{\"ph\":\"M\",\"name\":\"a\"}\n").unwrap();
        assert_eq!(
            ending,
            Ending::CutOff {
                partial_last_line: false
            }
        );
    }

    #[test]
    fn rejects_what_is_not_a_trace() {
        assert!(read_all("").is_err());
        assert!(read_all("hello\n").is_err());
        assert!(read_all("[{\"ph\":\"X\"}\n,garbage\n,{\"ph\":\"X\"}\n").is_err());
        assert!(read_all("[{\"ph\":\"X\"}\n]\n,{\"ph\":\"X\"}\n").is_err());
        let newer = "[{\"ph\":\"M\",\"name\":\"npushim\",\"args\":{\"format\":2}}\n]\n";
        let error = read_all(newer).err().unwrap();
        assert!(error.what.contains("format 2 is newer"), "{}", error.what);
    }

    #[test]
    fn io_reason_is_short() {
        let error = io::Error::from_raw_os_error(libc::EISDIR);
        assert!(!io_reason(&error).contains("os error"));
    }
}
