//! `npushim merge`: one timeline from many per-process / per-rank traces.
//!
//! Each input becomes one process track named `rank R (pid P, host H)`, with a
//! `process_sort_index` so viewers order tracks by rank. Inputs are read twice, one at a
//! time: a first pass reads only each file's `npushim` metadata (rank, host, pid, clock
//! anchor) to fix the order, pids and time shifts; the second pass streams every event to
//! the output, so memory does not depend on the traces' length. Timestamps stay as written
//! when every input comes from one host (CLOCK_MONOTONIC is shared); otherwise each trace is
//! shifted by the difference between its anchor's `realtime_us - monotonic_us` and that of
//! the first input, which puts all of them on the first input's monotonic axis, aligned
//! through the hosts' realtime clocks. Where and how the output is written (a new file, a
//! replaced regular file, a FIFO or device, stdout) is [`crate::output`]'s decision.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Number, Value, json};

use crate::Failure;
use crate::output::Output;
use crate::reader::{Header, TraceReader, describe_ending, io_reason, read_header};

/// A remapped pid is the original plus a multiple of this, so it stays recognisable and
/// cannot collide with a real Linux pid (at most 2^22).
const PID_REMAP_STEP: i64 = 10_000_000;

struct Input {
    path: PathBuf,
    order: usize,
    pid: i64,
    rank: Option<i64>,
    host: Option<String>,
    realtime_offset_us: Option<f64>,
    new_pid: i64,
    shift_us: f64,
}

impl Input {
    fn from_header(path: &Path, order: usize, header: Header) -> Input {
        let info = header.info.unwrap_or_default();
        let pid = info.pid.or(header.first_pid).unwrap_or(0);
        Input {
            path: path.to_path_buf(),
            order,
            pid,
            rank: info.rank,
            host: info.host,
            realtime_offset_us: info.realtime_offset_us,
            new_pid: pid,
            shift_us: 0.0,
        }
    }

    /// The name of one of this input's device tracks (`device <id>`): under its rank.
    fn device_track_name(&self, device: &str) -> String {
        format!(
            "rank {} device {device} (pid {}, host {})",
            self.rank.map_or("?".to_string(), |r| r.to_string()),
            self.pid,
            self.host.as_deref().unwrap_or("?")
        )
    }

    fn track_name(&self, pid: i64) -> String {
        format!(
            "rank {} (pid {}, host {})",
            self.rank.map_or("?".to_string(), |r| r.to_string()),
            pid,
            self.host.as_deref().unwrap_or("?")
        )
    }
}

/// Assigns output pids: an original pid is kept while it is free, else moved up by
/// multiples of [`PID_REMAP_STEP`].
#[derive(Default)]
struct PidTable {
    used: BTreeSet<i64>,
}

impl PidTable {
    fn assign(&mut self, pid: i64) -> i64 {
        let mut candidate = pid;
        let mut step = 1;
        while self.used.contains(&candidate) {
            candidate = pid.saturating_add(PID_REMAP_STEP.saturating_mul(step));
            step += 1;
        }
        self.used.insert(candidate);
        candidate
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::canonicalize(a), fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// What a merge has to say: its summary, and whether it belongs on stderr because the
/// trace itself went to stdout.
pub struct Merged {
    pub summary: String,
    pub summary_on_stderr: bool,
}

/// Merges `inputs` into `output`.
pub fn merge(output: &Path, inputs: &[PathBuf]) -> Result<Merged, Failure> {
    let mut list = Vec::with_capacity(inputs.len());
    for (order, path) in inputs.iter().enumerate() {
        if output.as_os_str() != "-" && same_file(path, output) {
            return Err(Failure::new(
                "the output file is also an input; choose another -o path",
                output,
            ));
        }
        let header = read_header(path)?;
        if header.info.is_none() {
            eprintln!(
                "npushim: no npushim metadata line (file cut or damaged at the start?); \
                 merging its events with rank and host unknown ({})",
                path.display()
            );
        }
        list.push(Input::from_header(path, order, header));
    }
    list.sort_by(|a, b| {
        (a.rank.is_none(), a.rank, &a.host, a.pid, a.order).cmp(&(
            b.rank.is_none(),
            b.rank,
            &b.host,
            b.pid,
            b.order,
        ))
    });

    let first_host = list.first().and_then(|i| i.host.clone());
    let one_host = first_host.is_some() && list.iter().all(|i| i.host == first_host);
    let axis = if one_host {
        format!(
            "one host ({}): CLOCK_MONOTONIC timestamps kept as written",
            first_host.as_deref().unwrap_or("?")
        )
    } else {
        let reference = list.iter().find(|i| i.realtime_offset_us.is_some());
        match reference.and_then(|r| r.realtime_offset_us.map(|o| (r, o))) {
            Some((reference, base)) => {
                let label = reference.track_name(reference.pid);
                for input in &mut list {
                    match input.realtime_offset_us {
                        Some(offset) => input.shift_us = offset - base,
                        None => eprintln!(
                            "npushim: no clock anchor; its timestamps are left unaligned ({})",
                            input.path.display()
                        ),
                    }
                }
                format!(
                    "several hosts: timestamps shifted onto the monotonic axis of {label} \
                     through each trace's realtime clock anchor"
                )
            }
            None => "several hosts but no clock anchors: timestamps left unaligned".to_string(),
        }
    };

    let mut pids = PidTable::default();
    for input in &mut list {
        input.new_pid = pids.assign(input.pid);
    }

    let destination = Output::open(output)?;
    let mut writer = EventWriter {
        out: BufWriter::with_capacity(256 << 10, destination.file()),
        written: 0,
        path: output.to_path_buf(),
        stdout: destination.is_stdout(),
        reader_gone: false,
    };

    let mut summary = String::new();
    for (sort_index, input) in list.iter().enumerate() {
        let read = copy_input(input, sort_index, &mut pids, &mut writer)?;
        let moved = if input.new_pid != input.pid {
            format!(", shown as pid {}", input.new_pid)
        } else {
            String::new()
        };
        summary.push_str(&format!(
            "  {}{moved}: {} ({read}, ts shift {:+.3} µs)\n",
            input.track_name(input.pid),
            input.path.display(),
            input.shift_us
        ));
    }
    writer.finish()?;
    let into = destination.describe(output);
    let summary_on_stderr = destination.shares_stdout();
    destination.finish()?;
    Ok(Merged {
        summary: format!(
            "merged {} traces into {into}\n  time axis: {axis}\n{summary}",
            list.len(),
        ),
        summary_on_stderr,
    })
}

/// Writes events in the trace line format: `[` first, `,` before the others, `]` at the end.
struct EventWriter<'a> {
    out: BufWriter<&'a File>,
    written: u64,
    path: PathBuf,
    /// Writing to stdout: a reader that went away ends the output without an error.
    stdout: bool,
    reader_gone: bool,
}

impl EventWriter<'_> {
    fn failure(&mut self, error: std::io::Error) -> Result<(), Failure> {
        if self.stdout && error.kind() == std::io::ErrorKind::BrokenPipe {
            self.reader_gone = true;
            return Ok(());
        }
        Err(Failure::new(
            &format!("cannot write output: {}", io_reason(&error)),
            &self.path,
        ))
    }

    fn write(&mut self, event: &Map<String, Value>) -> Result<(), Failure> {
        if self.reader_gone {
            return Ok(());
        }
        let lead: &[u8] = if self.written == 0 { b"[" } else { b"," };
        let result = self
            .out
            .write_all(lead)
            .and_then(|()| write_object(&mut self.out, event))
            .and_then(|()| self.out.write_all(b"\n"));
        self.written += 1;
        match result {
            Ok(()) => Ok(()),
            Err(e) => self.failure(e),
        }
    }

    fn finish(mut self) -> Result<(), Failure> {
        if self.reader_gone {
            return Ok(());
        }
        let close: &[u8] = if self.written == 0 { b"[\n]\n" } else { b"]\n" };
        match self.out.write_all(close).and_then(|()| self.out.flush()) {
            Ok(()) => Ok(()),
            Err(e) => self.failure(e),
        }
    }
}

/// Top-level keys in the order the shim writes them; other keys follow, `args` comes last.
const KEY_ORDER: [&str; 8] = ["ph", "name", "cat", "s", "pid", "tid", "ts", "dur"];

/// Writes one event object with its keys in the shim's order, so merged files read like
/// the inputs.
fn write_object(out: &mut impl Write, event: &Map<String, Value>) -> std::io::Result<()> {
    let known = KEY_ORDER.iter().copied();
    let others = event
        .keys()
        .map(String::as_str)
        .filter(|k| !KEY_ORDER.contains(k) && *k != "args");
    let mut first = true;
    out.write_all(b"{")?;
    for key in known.chain(others).chain(std::iter::once("args")) {
        let Some(value) = event.get(key) else {
            continue;
        };
        if !first {
            out.write_all(b",")?;
        }
        first = false;
        serde_json::to_writer(&mut *out, key)?;
        out.write_all(b":")?;
        serde_json::to_writer(&mut *out, value)?;
    }
    out.write_all(b"}")
}

fn metadata_event(name: &str, pid: i64, args: Value) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("ph".into(), json!("M"));
    map.insert("name".into(), json!(name));
    map.insert("pid".into(), json!(pid));
    map.insert("tid".into(), json!(pid));
    map.insert("args".into(), args);
    map
}

fn track_events(
    input: &Input,
    pid: i64,
    new_pid: i64,
    sort_index: usize,
) -> [Map<String, Value>; 2] {
    [
        metadata_event(
            "process_name",
            new_pid,
            json!({"name": input.track_name(pid)}),
        ),
        metadata_event(
            "process_sort_index",
            new_pid,
            json!({"sort_index": sort_index}),
        ),
    ]
}

/// The device id of a device-timeline track name (`device <id>`).
fn device_track(name: &str) -> Option<&str> {
    name.strip_prefix("device ")
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
}

fn event_ph(object: &Map<String, Value>) -> &str {
    object.get("ph").and_then(Value::as_str).unwrap_or("")
}

/// A flow id of an input whose pid was moved: the shim numbers flows `(pid << 31) + n`, so
/// two inputs with the same pid would share ids; the moved one's become the hex string of
/// `(new pid << 31) + n` (trace viewers read a string id as hex), distinct from every
/// numeric id since a moved pid is no Linux pid.
fn moved_flow_id(id: u64, new_pid: i64) -> String {
    format!("{:x}", (new_pid as u64) << 31 | (id & 0x7fff_ffff))
}

fn shifted(value: &Value, delta: f64) -> Option<Value> {
    let sum = value.as_f64()? + delta;
    Number::from_f64(sum).map(Value::Number)
}

/// Streams one input into the output; returns how it was read.
fn copy_input(
    input: &Input,
    sort_index: usize,
    pids: &mut PidTable,
    writer: &mut EventWriter,
) -> Result<String, Failure> {
    let mut reader = TraceReader::open(&input.path)?;
    // Original pid → output pid for this input; other pids than the main one are rare.
    let mut pid_map: BTreeMap<i64, i64> = BTreeMap::new();
    pid_map.insert(input.pid, input.new_pid);
    for event in track_events(input, input.pid, input.new_pid, sort_index) {
        writer.write(&event)?;
    }
    while let Some(event) = reader.next_event()? {
        let is_metadata = event.ph() == "M";
        let name = event.name().to_string();
        let pid = event.pid().unwrap_or(input.pid);
        let new_pid = match pid_map.get(&pid) {
            Some(&new_pid) => new_pid,
            None => {
                let new_pid = pids.assign(pid);
                pid_map.insert(pid, new_pid);
                new_pid
            }
        };
        if is_metadata && (name == "process_name" || name == "process_sort_index") {
            if pid != input.pid && name == "process_name" {
                let mut extra = track_events(input, pid, new_pid, sort_index);
                // A device track of the shim's device timeline stays under its rank.
                let original = event
                    .args()
                    .and_then(|a| a.get("name"))
                    .and_then(Value::as_str);
                if let Some(device) = original.and_then(device_track) {
                    extra[0].insert(
                        "args".into(),
                        json!({"name": input.device_track_name(device)}),
                    );
                }
                for extra in extra {
                    writer.write(&extra)?;
                }
            }
            continue;
        }
        let mut object = event.object;
        if input.new_pid != input.pid && matches!(event_ph(&object), "s" | "t" | "f") {
            if let Some(id) = object.get("id").and_then(Value::as_u64) {
                object.insert("id".into(), json!(moved_flow_id(id, input.new_pid)));
            }
        }
        if new_pid != pid {
            object.insert("pid".into(), json!(new_pid));
            // Keep the thread ids of a moved process out of the way of the original's.
            if let Some(tid) = object.get("tid").and_then(Value::as_i64) {
                object.insert("tid".into(), json!(tid.saturating_add(new_pid - pid)));
            }
        }
        let ts = object.get("ts").filter(|_| input.shift_us != 0.0);
        if let Some(ts) = ts.and_then(|ts| shifted(ts, input.shift_us)) {
            object.insert("ts".into(), ts);
        }
        let npushim_args = match object.get_mut("args") {
            Some(Value::Object(args)) if is_metadata && name == "npushim" => Some(args),
            _ => None,
        };
        if let Some(args) = npushim_args {
            args.insert(
                "merge".into(),
                json!({
                    "source": input.path.display().to_string(),
                    "pid": new_pid,
                    "ts_shift_us": input.shift_us,
                }),
            );
        }
        writer.write(&object)?;
    }
    Ok(describe_ending(reader.ending(), reader.events()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_tracks_and_moved_flows() {
        assert_eq!(device_track("device 3"), Some("3"));
        assert_eq!(device_track("device "), None);
        assert_eq!(device_track("rank 0 (pid 1, host h)"), None);
        let id = (100u64 << 31) + 5;
        assert_eq!(
            moved_flow_id(id, 10_000_100),
            format!("{:x}", (10_000_100u64 << 31) + 5)
        );
        assert_ne!(moved_flow_id(id, 10_000_100), format!("{id:x}"));
    }

    #[test]
    fn pids_stay_distinct() {
        let mut table = PidTable::default();
        assert_eq!(table.assign(100), 100);
        assert_eq!(table.assign(100), 10_000_100);
        assert_eq!(table.assign(100), 20_000_100);
        assert_eq!(table.assign(200), 200);
    }
}
