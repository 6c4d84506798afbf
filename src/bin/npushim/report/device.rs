//! The device-time table of `npushim report`: spans of the device timeline
//! (`NPUSHIM_DEVICE=events`, `memcpy <KIND>` / `memset` on `device <id>` tracks), per calling
//! function, kind and stream. Their durations are device time, so this is the one table
//! with a rate computed from asynchronous copies: bytes over the time the device spent on
//! them. Host spans never reach it, and device spans never reach the host tables.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{Value, json};

use super::aggregate::{Histogram, MAX_KEYS};
use crate::reader::Event;

/// One row: device spans of one (function, kind, stream).
#[derive(Default)]
pub struct DeviceRow {
    pub count: u64,
    pub bytes: u64,
    pub total_us: f64,
    pub histogram: Histogram,
}

impl DeviceRow {
    fn add(&mut self, bytes: u64, dur_us: f64) {
        self.count += 1;
        self.bytes += bytes;
        self.total_us += dur_us;
        self.histogram.add(dur_us);
    }

    /// Bytes per device nanosecond (GB/s), when the device spent any time.
    pub fn gb_per_s(&self) -> Option<f64> {
        (self.total_us > 0.0).then(|| self.bytes as f64 / (self.total_us * 1000.0))
    }
}

/// Device spans by (calling function, kind, stream), capped at [`MAX_KEYS`] rows.
#[derive(Default)]
pub struct DeviceTable {
    pub rows: BTreeMap<(String, String, String), DeviceRow>,
    pub other: DeviceRow,
}

impl DeviceTable {
    /// Adds one device-timeline span.
    pub fn add(&mut self, event: &Event) {
        let name = event.name();
        let kind =
            name.strip_prefix("memcpy ")
                .unwrap_or(if name == "memset" { "-" } else { name });
        let args = event.args();
        let text = |k: &str| {
            args.and_then(|a| a.get(k))
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string()
        };
        let bytes = args
            .and_then(|a| a.get("bytes"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let dur_us = event
            .object
            .get("dur")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let key = (
            text("call"),
            if name == "memset" {
                "memset".to_string()
            } else {
                kind.to_string()
            },
            text("stream"),
        );
        if self.rows.len() < MAX_KEYS || self.rows.contains_key(&key) {
            self.rows.entry(key).or_default().add(bytes, dur_us);
        } else {
            self.other.add(bytes, dur_us);
        }
    }

    fn row_json(call: &str, kind: &str, stream: &str, row: &DeviceRow) -> Value {
        let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
        json!({
            "call": call,
            "kind": kind,
            "stream": stream,
            "count": row.count,
            "bytes": row.bytes,
            "total_us": r3(row.total_us),
            "p50_us": r3(row.histogram.percentile_us(50.0)),
            "p99_us": r3(row.histogram.percentile_us(99.0)),
            "device_gb_per_s": row.gb_per_s().map(r3),
        })
    }

    /// The table for `--json`: one object per row (and `(other)` when capped).
    pub fn to_json(&self) -> Value {
        let mut rows: Vec<Value> = self
            .rows
            .iter()
            .map(|((call, kind, stream), row)| Self::row_json(call, kind, stream, row))
            .collect();
        if self.other.count > 0 {
            rows.push(Self::row_json("(other)", "(other)", "(other)", &self.other));
        }
        Value::Array(rows)
    }

    /// The table as text (nothing when the traces have no device timeline).
    pub fn render(&self, out: &mut String) {
        if self.rows.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "\nDevice time (NPUSHIM_DEVICE=events: the device's own start and end of each \
             timed copy)"
        );
        let mut lines: Vec<[String; 9]> = vec![[
            "call".into(),
            "kind".into(),
            "stream".into(),
            "count".into(),
            "bytes".into(),
            "total µs".into(),
            "p50 µs".into(),
            "p99 µs".into(),
            "device GB/s".into(),
        ]];
        let mut push = |call: &str, kind: &str, stream: &str, row: &DeviceRow| {
            lines.push([
                call.to_string(),
                kind.to_string(),
                stream.to_string(),
                row.count.to_string(),
                row.bytes.to_string(),
                format!("{:.3}", row.total_us),
                format!("{:.3}", row.histogram.percentile_us(50.0)),
                format!("{:.3}", row.histogram.percentile_us(99.0)),
                row.gb_per_s()
                    .map_or("-".to_string(), |r| format!("{r:.3}")),
            ]);
        };
        for ((call, kind, stream), row) in &self.rows {
            push(call, kind, stream, row);
        }
        if self.other.count > 0 {
            push("(other)", "(other)", "(other)", &self.other);
        }
        let widths: Vec<usize> = (0..9)
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for line in &lines {
            out.push(' ');
            for (c, cell) in line.iter().enumerate() {
                let pad = widths[c] - cell.chars().count();
                out.push(' ');
                if c < 3 {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str(&" ".repeat(pad));
                    out.push_str(cell);
                }
            }
            out.push('\n');
        }
    }
}
