//! Rules and decisions written back as text: a spec's normalized form ([`FaultSpec::describe`],
//! which parses back to the same rules) and a decision's action as the trace shows it
//! ([`Decision::write_action`], allocation-free for the trace writer).

use std::fmt;

use super::{Action, DURATION_UNITS, Decision, FaultSpec, Rule, SIZE_SUFFIXES, Target, Task};
use crate::decimal::{U64_DIGITS, write_dec};

/// Longest text [`Decision::write_action`] writes (`delay(18446744073709551615ns)` is 29).
pub const ACTION_TEXT_MAX: usize = 32;

impl Decision {
    /// Writes the action as shown in the trace (`return(507053)`, `delay(2ms)`, `skip`) into
    /// `out` without allocating and returns the number of bytes written. The text is ASCII
    /// and at most [`ACTION_TEXT_MAX`] bytes; a shorter `out` receives a truncated prefix.
    pub fn write_action(&self, out: &mut [u8]) -> usize {
        let mut w = ByteWriter { out, len: 0 };
        match *self {
            Decision::Forward | Decision::Skip | Decision::Abort => w.bytes(self.task().as_bytes()),
            Decision::Return(code) => {
                w.bytes(b"return(");
                w.int(i64::from(code));
                w.bytes(b")");
            }
            Decision::Delay(ns) => {
                let (value, unit) = duration_parts(ns);
                w.bytes(b"delay(");
                w.uint(value);
                w.bytes(unit.as_bytes());
                w.bytes(b")");
            }
        }
        w.len
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; ACTION_TEXT_MAX];
        let n = self.write_action(&mut buf);
        f.write_str(std::str::from_utf8(&buf[..n]).map_err(|_| fmt::Error)?)
    }
}

/// Appends to a fixed buffer, silently truncating: the hot path must not allocate or fail.
struct ByteWriter<'a> {
    out: &'a mut [u8],
    len: usize,
}

impl ByteWriter<'_> {
    fn bytes(&mut self, b: &[u8]) {
        let n = b.len().min(self.out.len() - self.len);
        self.out[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
    }

    fn uint(&mut self, v: u64) {
        let mut digits = [0u8; U64_DIGITS];
        let n = write_dec(&mut digits, v);
        self.bytes(&digits[..n]);
    }

    fn int(&mut self, v: i64) {
        if v < 0 {
            self.bytes(b"-");
        }
        self.uint(v.unsigned_abs());
    }
}

/// Splits a duration into the largest unit that represents it exactly.
fn duration_parts(ns: u64) -> (u64, &'static str) {
    for (unit, scale) in DURATION_UNITS.into_iter().rev() {
        if ns != 0 && ns.is_multiple_of(scale) {
            return (ns / scale, unit);
        }
    }
    (ns, DURATION_UNITS[0].0)
}

/// A size in the largest short suffix (`K`, `M`, `G`) that represents it exactly.
pub(super) fn size_text(v: u64) -> String {
    for (suffix, shift) in SIZE_SUFFIXES.into_iter().take(3).rev() {
        let scale = 1u64 << shift;
        if v != 0 && v.is_multiple_of(scale) {
            return format!("{}{suffix}", v / scale);
        }
    }
    v.to_string()
}

impl Target {
    pub(super) fn text(self) -> &'static str {
        match self {
            Target::Any => "*",
            Target::Only(hook) => hook.symbol(),
        }
    }
}

impl FaultSpec {
    /// The rules in a normalized text form that parses back to the same rules (counters are
    /// not shown), rules separated by `"; "`; empty for an empty spec.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            rule.describe(&mut out);
        }
        out
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Rule {
    fn describe(&self, out: &mut String) {
        out.push_str(self.target.text());
        if !self.filters.is_empty() {
            out.push('[');
            for (i, f) in self.filters.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(f.key.name());
                out.push_str(f.op.name());
                out.push_str(&f.text);
            }
            out.push(']');
        }
        out.push('=');
        for (i, a) in self.actions.iter().enumerate() {
            if i > 0 {
                out.push_str("->");
            }
            a.describe(out);
        }
    }
}

impl Action {
    fn describe(&self, out: &mut String) {
        if let Some(p) = self.percent {
            out.push_str(&format!("{p}%"));
        }
        if let Some(n) = self.limit {
            out.push_str(&format!("{n}*"));
        }
        out.push_str(self.task.kind().name());
        match self.task {
            Task::Return(Some(code)) => out.push_str(&format!("({code})")),
            Task::Delay(ns) => {
                let (value, unit) = duration_parts(ns);
                out.push_str(&format!("({value}{unit})"));
            }
            Task::Off | Task::Return(None) | Task::Skip | Task::Abort => {}
        }
    }
}
