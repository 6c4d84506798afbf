//! Fault injection (SPEC §6): the `NPUSHIM_FAULTS` grammar and the decision for one call.
//!
//! This module owns parsing a spec into immutable rules (rejecting it whole, with an error
//! that names the 1-based character column of the offending character), the atomic counters
//! those rules consume, and the seeded, counter-based choice of what to do with a call. It is
//! pure: it must not touch FFI, globals, the process environment, clocks or I/O, and
//! [`FaultSpec::decide`] must stay lock-free and allocation-free because it runs on the
//! calling thread of every intercepted copy. Carrying a decision out (sleeping, returning,
//! aborting), choosing the seed and counting injections belong to the caller.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::abi::types::{
    ACL_ERROR_RT_INTERNAL_ERROR, Api, Call, HCCL_E_RUNTIME, Hook, LINK_NAMES, code_by_name,
    kind_by_name, link_by_name,
};

/// Longest spec accepted, in bytes.
pub const MAX_SPEC_BYTES: usize = 64 * 1024;
/// Most rules in one spec.
pub const MAX_RULES: usize = 256;
/// Most filters in one rule.
pub const MAX_FILTERS: usize = 16;
/// Most actions in one rule.
pub const MAX_ACTIONS: usize = 64;
/// Longest `delay`, in nanoseconds (60 s): longer sleeps look like hangs, not faults.
pub const MAX_DELAY_NS: u64 = 60_000_000_000;

/// Longest text [`Decision::write_action`] writes (`delay(18446744073709551615ns)` is 29).
pub const ACTION_TEXT_MAX: usize = 32;

const TARGETS_EXPECTED: &str = "the name of a hooked function, e.g. aclrtMemcpyAsync, \
                                HcclD2DMemcpyAsync or aclrtSynchronizeStream, or *";
const TASKS_EXPECTED: &str = "off, return, delay, skip, abort";
const KEYS_EXPECTED: &str = "kind, count, destMax, stream, rank, link or depth";
const OPS_EXPECTED: &str = "=, !=, <, <=, >, >=";
const SUFFIXES_EXPECTED: &str = "K, M, G, KiB, MiB or GiB";
const UNITS_EXPECTED: &str = "ns, us, ms or s";
const CODE_EXPECTED: &str = "a number or a name such as ACL_ERROR_RT_INTERNAL_ERROR";

/// What to do with one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Call the real function and return its result.
    Forward,
    /// Do not call the real function; return this code.
    Return(i32),
    /// Sleep this many nanoseconds, then forward.
    Delay(u64),
    /// Do not call the real function; return success (a lost copy).
    Skip,
    /// Abort the process.
    Abort,
}

impl Decision {
    /// Whether this decision injects a fault (everything but [`Decision::Forward`]).
    pub fn is_fault(&self) -> bool {
        !matches!(self, Decision::Forward)
    }

    /// The task name as written in a spec.
    pub fn task(&self) -> &'static str {
        match self {
            Decision::Forward => "off",
            Decision::Return(_) => "return",
            Decision::Delay(_) => "delay",
            Decision::Skip => "skip",
            Decision::Abort => "abort",
        }
    }

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

    fn uint(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.bytes(&digits[i..]);
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
    for (scale, unit) in [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")] {
        if ns != 0 && ns.is_multiple_of(scale) {
            return (ns / scale, unit);
        }
    }
    (ns, "ns")
}

/// A spec that does not parse: where, and what was expected there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// 1-based character (not byte) column in the spec string; `len + 1` means its end.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at column {}: {}", self.column, self.message)
    }
}

impl std::error::Error for SpecError {}

/// A parsed `NPUSHIM_FAULTS` spec: immutable rules plus their atomic counters.
#[derive(Debug, Default)]
pub struct FaultSpec {
    rules: Vec<Rule>,
}

impl FaultSpec {
    /// Whether the spec has no rules (every call is forwarded).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Decides what to do with one call. Lock-free (atomics only) and allocation-free.
    ///
    /// The first rule whose target and filters match decides; a call no rule matches is
    /// forwarded and consumes nothing. `seed` drives the probabilities: the same seed and the
    /// same sequence of calls give the same decisions.
    pub fn decide(&self, call: &Call, seed: u64) -> Decision {
        let Some(rule) = self.rules.iter().find(|r| r.matches(call)) else {
            return Decision::Forward;
        };
        for action in &rule.actions {
            if action.fires(seed) {
                return action.task.decision(call.api);
            }
        }
        Decision::Forward
    }

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

impl FromStr for FaultSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        if s.len() > MAX_SPEC_BYTES {
            return Err(SpecError {
                column: 1,
                message: format!(
                    "spec is {} bytes long; the limit is {MAX_SPEC_BYTES}",
                    s.len()
                ),
            });
        }
        Parser {
            chars: s.chars().collect(),
            pos: 0,
        }
        .spec()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Any,
    Only(Hook),
}

impl Target {
    /// `*` is every copy and set; waits and allocations are targeted by name only.
    fn admits(self, hook: Hook) -> bool {
        match self {
            Target::Any => hook.class().moves_memory(),
            Target::Only(h) => h == hook,
        }
    }

    /// Whether calls of the API family `api` can match.
    fn admits_api(self, api: Api) -> bool {
        match self {
            Target::Any => true,
            Target::Only(h) => h.api() == api,
        }
    }

    fn text(self) -> &'static str {
        match self {
            Target::Any => "*",
            Target::Only(hook) => hook.symbol(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Op {
    fn text(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }

    fn holds<T: Ord>(self, lhs: T, rhs: T) -> bool {
        match self {
            Op::Eq => lhs == rhs,
            Op::Ne => lhs != rhs,
            Op::Lt => lhs < rhs,
            Op::Le => lhs <= rhs,
            Op::Gt => lhs > rhs,
            Op::Ge => lhs >= rhs,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Kind,
    Count,
    DestMax,
    Stream,
    Rank,
    Link,
    Depth,
}

impl Key {
    fn from_name(name: &str) -> Option<Key> {
        Some(match name {
            "kind" => Key::Kind,
            "count" => Key::Count,
            "destMax" => Key::DestMax,
            "stream" => Key::Stream,
            "rank" => Key::Rank,
            "link" => Key::Link,
            "depth" => Key::Depth,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Key::Kind => "kind",
            Key::Count => "count",
            Key::DestMax => "destMax",
            Key::Stream => "stream",
            Key::Rank => "rank",
            Key::Link => "link",
            Key::Depth => "depth",
        }
    }

    /// Whether `<`, `<=`, `>`, `>=` make sense (sizes and counters, not names or addresses).
    fn ordered(self) -> bool {
        matches!(self, Key::Count | Key::DestMax | Key::Rank | Key::Depth)
    }

    /// Arguments only `HcclMemcpyAsync` has.
    fn hccl_only(self) -> bool {
        matches!(self, Key::Rank | Key::Link)
    }
}

#[derive(Debug)]
enum Operand {
    /// `count`, `destMax`, `stream`, `rank`, `depth`.
    Number(u64),
    /// The raw kind value for each API; `None` where the name does not exist for that API.
    Kind {
        acl: Option<i32>,
        hccl: Option<i32>,
    },
    Link(i32),
}

#[derive(Debug)]
struct Filter {
    key: Key,
    op: Op,
    operand: Operand,
    /// The operand, normalized, for `describe`.
    text: String,
}

impl Filter {
    fn matches(&self, call: &Call) -> bool {
        match self.operand {
            Operand::Kind { .. } if !call.hook.class().moves_memory() => false,
            Operand::Kind { acl, hccl } => {
                let want = match call.api {
                    Api::Acl => acl,
                    Api::Hccl => hccl,
                };
                self.op.holds(want == Some(call.kind), true)
            }
            Operand::Link(link) => call.api == Api::Hccl && self.op.holds(call.link, link),
            Operand::Number(n) => {
                let actual = match self.key {
                    Key::Count => call.count,
                    Key::DestMax => call.dest_max,
                    Key::Stream => call.stream as u64,
                    Key::Rank if call.api == Api::Hccl => u64::from(call.remote_rank),
                    Key::Depth => u64::from(call.depth),
                    Key::Rank | Key::Kind | Key::Link => return false,
                };
                self.op.holds(actual, n)
            }
        }
    }
}

#[derive(Debug)]
enum Task {
    Off,
    /// `None`: the API's default failure code.
    Return(Option<i32>),
    Delay(u64),
    Skip,
    Abort,
}

impl Task {
    fn decision(&self, api: Api) -> Decision {
        match *self {
            Task::Off => Decision::Forward,
            Task::Return(Some(code)) => Decision::Return(code),
            Task::Return(None) => Decision::Return(default_return_code(api)),
            Task::Delay(ns) => Decision::Delay(ns),
            Task::Skip => Decision::Skip,
            Task::Abort => Decision::Abort,
        }
    }
}

/// The code a bare `return` gives for a call of `api`.
pub fn default_return_code(api: Api) -> i32 {
    match api {
        Api::Acl => ACL_ERROR_RT_INTERNAL_ERROR,
        Api::Hccl => HCCL_E_RUNTIME,
    }
}

#[derive(Debug)]
struct Action {
    /// `P` as written (0–100), for `describe`; `None`: always.
    percent: Option<f64>,
    /// Fires when a 64-bit draw is below this; `1 << 64` fires always.
    threshold: u128,
    /// Separates the random streams of different actions under one seed.
    stream_key: u64,
    /// How many times the probability was evaluated: the PRNG's only state.
    draws: AtomicU64,
    /// `N` as written; `None`: unlimited.
    limit: Option<u64>,
    remaining: AtomicU64,
    task: Task,
}

impl Action {
    /// Whether this action takes the call, consuming one of its count if so.
    ///
    /// As in fail-rs: a spent action passes without drawing; otherwise the probability is
    /// drawn first and only a successful draw consumes the count, with a compare-and-swap
    /// that never goes below zero, so `N*` fires exactly N times across threads. Relaxed
    /// ordering suffices: each counter is independent and read-modify-writes on one atomic
    /// are totally ordered.
    fn fires(&self, seed: u64) -> bool {
        if self.limit.is_some() && self.remaining.load(Ordering::Relaxed) == 0 {
            return false;
        }
        if self.percent.is_some() {
            let n = self.draws.fetch_add(1, Ordering::Relaxed);
            if u128::from(draw(seed, self.stream_key, n)) >= self.threshold {
                return false;
            }
        }
        self.limit.is_none()
            || self
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1))
                .is_ok()
    }

    fn describe(&self, out: &mut String) {
        if let Some(p) = self.percent {
            out.push_str(&format!("{p}%"));
        }
        if let Some(n) = self.limit {
            out.push_str(&format!("{n}*"));
        }
        match self.task {
            Task::Off => out.push_str("off"),
            Task::Return(None) => out.push_str("return"),
            Task::Return(Some(code)) => out.push_str(&format!("return({code})")),
            Task::Delay(ns) => {
                let (value, unit) = duration_parts(ns);
                out.push_str(&format!("delay({value}{unit})"));
            }
            Task::Skip => out.push_str("skip"),
            Task::Abort => out.push_str("abort"),
        }
    }
}

#[derive(Debug)]
struct Rule {
    target: Target,
    filters: Vec<Filter>,
    actions: Vec<Action>,
}

impl Rule {
    fn matches(&self, call: &Call) -> bool {
        self.target.admits(call.hook) && self.filters.iter().all(|f| f.matches(call))
    }

    fn describe(&self, out: &mut String) {
        out.push_str(self.target.text());
        if !self.filters.is_empty() {
            out.push('[');
            for (i, f) in self.filters.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(f.key.name());
                out.push_str(f.op.text());
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

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of the random stream of action `action` of rule `rule`.
fn stream_key(rule: usize, action: usize) -> u64 {
    splitmix64(((rule as u64) << 32 | action as u64) ^ 0x6E70_7573_6869_6D00)
}

/// The `n`-th draw of a stream: the `n`-th output of a SplitMix64 generator whose start
/// state is derived from the seed and the stream, so nearby seeds give unrelated sequences.
fn draw(seed: u64, key: u64, n: u64) -> u64 {
    splitmix64(splitmix64(seed ^ key).wrapping_add(n.wrapping_mul(GOLDEN_GAMMA)))
}

// Names are matched exactly, but a name token takes in any letters so that an error quotes
// all of a mistyped name (`réturn`), not just its ASCII head.
fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// A token of a value or argument: a name or number, possibly signed or fractional, so that
/// an error can quote all of it.
fn is_value_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '.'
}

/// Parses an unsigned decimal or `0x` hexadecimal integer.
fn parse_uint(s: &str) -> Option<u64> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        return u64::from_str_radix(hex, 16).ok();
    }
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Whether `s` is written as `parse_uint` expects (so a failed parse means overflow).
fn is_uint_text(s: &str) -> bool {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()),
        None => !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()),
    }
}

/// Parses an integer that may be negative, as `parse_uint`, into an `i32`.
fn parse_int32(s: &str) -> Option<i32> {
    match s.strip_prefix('-') {
        Some(rest) => {
            let magnitude = i64::try_from(parse_uint(rest)?).ok()?;
            i32::try_from(-magnitude).ok()
        }
        None => i32::try_from(parse_uint(s)?).ok(),
    }
}

/// Whether `s` looks like a number (so a failed parse means "out of range", not "a name").
fn looks_numeric(s: &str) -> bool {
    s.strip_prefix('-')
        .unwrap_or(s)
        .starts_with(|c: char| c.is_ascii_digit())
}

fn size_text(v: u64) -> String {
    for (scale, suffix) in [(1u64 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")] {
        if v != 0 && v.is_multiple_of(scale) {
            return format!("{}{suffix}", v / scale);
        }
    }
    v.to_string()
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    /// Consumes characters while `pred` holds; returns where they started and the text.
    fn take_while(&mut self, pred: impl Fn(char) -> bool) -> (usize, String) {
        let start = self.pos;
        while self.peek().is_some_and(&pred) {
            self.pos += 1;
        }
        (start, self.chars[start..self.pos].iter().collect())
    }

    /// The current character, quoted, for "found …" in messages.
    fn found(&self) -> String {
        match self.peek() {
            Some(c) => format!("'{}'", c.escape_debug()),
            None => "end of spec".to_owned(),
        }
    }

    fn at_rule_end(&self) -> bool {
        matches!(self.peek(), None | Some(';'))
    }

    fn spec(&mut self) -> Result<FaultSpec, SpecError> {
        let mut rules = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => break,
                Some(';') => self.pos += 1,
                Some(_) => {
                    if rules.len() == MAX_RULES {
                        return Err(error(
                            self.pos,
                            format!("too many rules (the limit is {MAX_RULES})"),
                        ));
                    }
                    rules.push(self.rule(rules.len())?);
                }
            }
        }
        Ok(FaultSpec { rules })
    }

    /// One rule, up to and including its closing `;` if any.
    fn rule(&mut self, index: usize) -> Result<Rule, SpecError> {
        let target = self.target()?;
        self.skip_ws();
        let mut filters = Vec::new();
        if self.peek() == Some('[') {
            filters = self.filters(target)?;
            self.skip_ws();
            if self.peek() != Some('=') {
                return Err(error(
                    self.pos,
                    format!("expected '=' after the filters, found {}", self.found()),
                ));
            }
        } else if self.peek() != Some('=') {
            return Err(error(
                self.pos,
                format!(
                    "expected '=' or '[' after target '{}', found {}",
                    target.text(),
                    self.found()
                ),
            ));
        }
        self.pos += 1;
        let actions = self.actions(index)?;
        Ok(Rule {
            target,
            filters,
            actions,
        })
    }

    fn target(&mut self) -> Result<Target, SpecError> {
        if self.peek() == Some('*') {
            self.pos += 1;
            return Ok(Target::Any);
        }
        if !self.peek().is_some_and(is_ident_start) {
            return Err(error(
                self.pos,
                format!(
                    "expected a target ({TARGETS_EXPECTED}), found {}",
                    self.found()
                ),
            ));
        }
        let (start, name) = self.take_while(is_ident_char);
        match Hook::by_symbol(&name) {
            Some(hook) => Ok(Target::Only(hook)),
            None => Err(error(
                start,
                format!("unknown target '{name}' (expected {TARGETS_EXPECTED})"),
            )),
        }
    }

    /// `'[' filter (',' filter)* ']'`, starting at the `[`.
    fn filters(&mut self, target: Target) -> Result<Vec<Filter>, SpecError> {
        let open = self.pos;
        self.pos += 1;
        let mut filters = Vec::new();
        loop {
            self.skip_ws();
            if self.peek().is_none() {
                return Err(unterminated(open, '[', ']'));
            }
            if filters.len() == MAX_FILTERS {
                return Err(error(
                    self.pos,
                    format!("too many filters in one rule (the limit is {MAX_FILTERS})"),
                ));
            }
            filters.push(self.filter(target)?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(']') => {
                    self.pos += 1;
                    return Ok(filters);
                }
                None => return Err(unterminated(open, '[', ']')),
                Some(_) => {
                    return Err(error(
                        self.pos,
                        format!("expected ',' or ']' after a filter, found {}", self.found()),
                    ));
                }
            }
        }
    }

    fn filter(&mut self, target: Target) -> Result<Filter, SpecError> {
        if !self.peek().is_some_and(is_ident_start) {
            return Err(error(
                self.pos,
                format!(
                    "expected a filter key ({KEYS_EXPECTED}), found {}",
                    self.found()
                ),
            ));
        }
        let (key_start, key_name) = self.take_while(is_ident_char);
        let Some(key) = Key::from_name(&key_name) else {
            return Err(error(
                key_start,
                format!("unknown filter key '{key_name}' (expected {KEYS_EXPECTED})"),
            ));
        };
        if let Target::Only(hook) = target {
            if key.hccl_only() && hook.api() != Api::Hccl {
                return Err(error(
                    key_start,
                    format!(
                        "filter '{key_name}' never matches {} (it is an argument of the HCCL \
                         copies only)",
                        hook.symbol()
                    ),
                ));
            }
        }

        self.skip_ws();
        let op_start = self.pos;
        let (op, width) = match (self.peek(), self.peek_at(1)) {
            (Some('!'), Some('=')) => (Op::Ne, 2),
            (Some('<'), Some('=')) => (Op::Le, 2),
            (Some('>'), Some('=')) => (Op::Ge, 2),
            (Some('='), _) => (Op::Eq, 1),
            (Some('<'), _) => (Op::Lt, 1),
            (Some('>'), _) => (Op::Gt, 1),
            _ => {
                return Err(error(
                    self.pos,
                    format!(
                        "expected an operator ({OPS_EXPECTED}) after '{key_name}', found {}",
                        self.found()
                    ),
                ));
            }
        };
        if !key.ordered() && !matches!(op, Op::Eq | Op::Ne) {
            return Err(error(
                op_start,
                format!(
                    "filter '{key_name}' takes only = or !=, not '{}'",
                    op.text()
                ),
            ));
        }
        self.pos += width;

        self.skip_ws();
        let negative = self.peek() == Some('-');
        let value_start = self.pos;
        if negative {
            self.pos += 1;
        }
        let (_, body) = self.take_while(is_value_char);
        if body.is_empty() {
            self.pos = value_start;
            return Err(error(
                value_start,
                format!(
                    "expected a value after '{key_name}{}', found {}",
                    op.text(),
                    self.found()
                ),
            ));
        }
        let value = if negative { format!("-{body}") } else { body };
        let (operand, text) = match key {
            Key::Kind => kind_operand(target, &value).map_err(|m| error(value_start, m))?,
            Key::Link => link_operand(&value).map_err(|m| error(value_start, m))?,
            Key::Count | Key::DestMax => {
                let n = parse_size(key_name.as_str(), &value).map_err(|m| error(value_start, m))?;
                (Operand::Number(n), size_text(n))
            }
            Key::Stream | Key::Rank | Key::Depth => {
                // The largest value the call's field can hold: a filter beyond it could
                // never match.
                let limit = match key {
                    Key::Stream => usize::MAX as u64,
                    _ => u64::from(u32::MAX),
                };
                let Some(n) = parse_uint(&value) else {
                    if is_uint_text(&value) {
                        return Err(error(
                            value_start,
                            format!(
                                "'{value}' is too large for '{key_name}' (the limit is {limit})"
                            ),
                        ));
                    }
                    let what = if key == Key::Stream {
                        "an address"
                    } else {
                        "a number"
                    };
                    return Err(error(
                        value_start,
                        format!(
                            "expected {what} for '{key_name}' (decimal or 0x hex), found \
                             '{value}'"
                        ),
                    ));
                };
                if n > limit {
                    return Err(error(
                        value_start,
                        format!("'{value}' is too large for '{key_name}' (the limit is {limit})"),
                    ));
                }
                let text = if key == Key::Stream {
                    format!("{n:#x}")
                } else {
                    n.to_string()
                };
                (Operand::Number(n), text)
            }
        };
        Ok(Filter {
            key,
            op,
            operand,
            text,
        })
    }

    /// `action ('->' action)*`, up to and including the rule's closing `;` if any.
    fn actions(&mut self, rule: usize) -> Result<Vec<Action>, SpecError> {
        let mut actions = Vec::new();
        self.skip_ws();
        if self.at_rule_end() {
            return Err(error(
                self.pos,
                format!(
                    "empty action list after '=' (expected an action such as return, \
                     delay(1ms), skip, abort or off), found {}",
                    self.found()
                ),
            ));
        }
        loop {
            if actions.len() == MAX_ACTIONS {
                return Err(error(
                    self.pos,
                    format!("too many actions in one rule (the limit is {MAX_ACTIONS})"),
                ));
            }
            actions.push(self.action(rule, actions.len())?);
            self.skip_ws();
            match (self.peek(), self.peek_at(1)) {
                (None, _) => return Ok(actions),
                (Some(';'), _) => {
                    self.pos += 1;
                    return Ok(actions);
                }
                (Some('-'), Some('>')) => {
                    self.pos += 2;
                    self.skip_ws();
                    if self.at_rule_end() {
                        return Err(error(
                            self.pos,
                            format!("expected an action after '->', found {}", self.found()),
                        ));
                    }
                }
                _ => {
                    return Err(error(
                        self.pos,
                        format!("expected '->' or ';' after action, found {}", self.found()),
                    ));
                }
            }
        }
    }

    /// `[P '%'] [N '*'] task ['(' arg ')']`
    fn action(&mut self, rule: usize, index: usize) -> Result<Action, SpecError> {
        let is_number_char = |c: char| c.is_ascii_digit() || c == '.';
        let mut percent = None;
        let mut limit = None;
        if self.peek().is_some_and(is_number_char) {
            let (start, number) = self.take_while(is_number_char);
            self.skip_ws();
            match self.peek() {
                Some('%') => {
                    percent = Some(parse_percent(start, &number)?);
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek().is_some_and(is_number_char) {
                        let (start, number) = self.take_while(is_number_char);
                        self.skip_ws();
                        if self.peek() != Some('*') {
                            return Err(error(
                                self.pos,
                                format!(
                                    "expected '*' after the count '{number}', found {}",
                                    self.found()
                                ),
                            ));
                        }
                        limit = Some(parse_count(start, &number)?);
                        self.pos += 1;
                    }
                }
                Some('*') => {
                    limit = Some(parse_count(start, &number)?);
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek().is_some_and(is_number_char) {
                        let start = self.pos;
                        self.take_while(is_number_char);
                        self.skip_ws();
                        if self.peek() == Some('%') {
                            return Err(error(
                                start,
                                "the probability must come before the count, e.g. 50%2*return"
                                    .to_owned(),
                            ));
                        }
                        self.pos = start;
                    }
                }
                _ => {
                    return Err(error(
                        self.pos,
                        format!(
                            "expected '%' or '*' after the number '{number}', found {}",
                            self.found()
                        ),
                    ));
                }
            }
            self.skip_ws();
        }

        if !self.peek().is_some_and(is_ident_start) {
            return Err(error(
                self.pos,
                format!("expected a task ({TASKS_EXPECTED}), found {}", self.found()),
            ));
        }
        let (task_start, name) = self.take_while(is_ident_char);
        if !matches!(name.as_str(), "off" | "return" | "delay" | "skip" | "abort") {
            return Err(error(
                task_start,
                format!("unknown task '{name}' (expected {TASKS_EXPECTED})"),
            ));
        }
        let after_name = self.pos;
        self.skip_ws();
        let arg = if self.peek() == Some('(') {
            Some(self.argument(&name)?)
        } else {
            None
        };
        let task = match (name.as_str(), arg) {
            ("off", None) => Task::Off,
            ("skip", None) => Task::Skip,
            ("abort", None) => Task::Abort,
            ("return", None) => Task::Return(None),
            ("return", Some((start, value))) => {
                Task::Return(Some(parse_code(&value).map_err(|m| error(start, m))?))
            }
            ("delay", Some((start, value))) => {
                Task::Delay(parse_duration(&value).map_err(|m| error(start, m))?)
            }
            ("delay", None) => {
                self.pos = after_name;
                return Err(error(
                    after_name,
                    format!(
                        "task 'delay' needs a duration in parentheses, e.g. delay(2ms), found {}",
                        self.found()
                    ),
                ));
            }
            _ => unreachable!("argument() rejects arguments to off, skip and abort"),
        };

        let threshold = match percent {
            None => 1u128 << 64,
            Some(p) if p >= 100.0 => 1u128 << 64,
            // `as` saturates; p / 100 < 1 keeps the product below 2^64.
            Some(p) => (p / 100.0 * 18_446_744_073_709_551_616.0) as u128,
        };
        Ok(Action {
            percent,
            threshold,
            stream_key: stream_key(rule, index),
            draws: AtomicU64::new(0),
            limit,
            remaining: AtomicU64::new(limit.unwrap_or(0)),
            task,
        })
    }

    /// `'(' arg ')'` after task `task`, starting at the `(`; returns the argument and where it
    /// starts. Interpreting it is left to the caller.
    fn argument(&mut self, task: &str) -> Result<(usize, String), SpecError> {
        let open = self.pos;
        if matches!(task, "off" | "skip" | "abort") {
            return Err(error(open, format!("task '{task}' takes no argument")));
        }
        self.pos += 1;
        self.skip_ws();
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        self.take_while(is_value_char);
        let value: String = self.chars[start..self.pos].iter().collect();
        if value.is_empty() || value == "-" {
            self.pos = start;
            if self.peek().is_none() {
                return Err(unterminated(open, '(', ')'));
            }
            let expected = if task == "delay" {
                "a duration such as 500us or 2ms".to_owned()
            } else {
                format!("a code ({CODE_EXPECTED})")
            };
            return Err(error(
                start,
                format!("expected {expected} in {task}(), found {}", self.found()),
            ));
        }
        self.skip_ws();
        match self.peek() {
            Some(')') => {
                self.pos += 1;
                Ok((start, value))
            }
            None => Err(unterminated(open, '(', ')')),
            Some(_) => Err(error(
                self.pos,
                format!("expected ')' after the argument, found {}", self.found()),
            )),
        }
    }
}

fn error(pos: usize, message: String) -> SpecError {
    SpecError {
        column: pos + 1,
        message,
    }
}

fn unterminated(open: usize, opener: char, closer: char) -> SpecError {
    error(
        open,
        format!("unterminated '{opener}' (expected '{closer}' to close it)"),
    )
}

fn parse_percent(start: usize, number: &str) -> Result<f64, SpecError> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let well_formed = !whole.is_empty()
        && !fraction.is_empty()
        && number.len() <= 24
        && whole.chars().all(|c| c.is_ascii_digit())
        && fraction.chars().all(|c| c.is_ascii_digit());
    let value = if well_formed {
        number.parse::<f64>().ok()
    } else {
        None
    };
    match value {
        None => Err(error(
            start,
            format!(
                "malformed probability '{number}%' (expected a decimal from 0 to 100, e.g. 5% \
                 or 0.5%)"
            ),
        )),
        Some(p) if p > 100.0 => Err(error(start, format!("probability {number}% is above 100%"))),
        Some(p) => Ok(p),
    }
}

fn parse_count(start: usize, number: &str) -> Result<u64, SpecError> {
    if !number.chars().all(|c| c.is_ascii_digit()) {
        return Err(error(
            start,
            format!("count '{number}' must be a whole number, e.g. 2*return"),
        ));
    }
    match number.parse::<u64>() {
        Ok(0) => Err(error(start, "count must be at least 1".to_owned())),
        Ok(n) => Ok(n),
        Err(_) => Err(error(
            start,
            format!("count '{number}' is too large (the limit is {})", u64::MAX),
        )),
    }
}

fn kind_operand(target: Target, value: &str) -> Result<(Operand, String), String> {
    if looks_numeric(value) {
        let Some(n) = parse_int32(value) else {
            return Err(format!(
                "kind '{value}' is not a 32-bit integer or a kind name"
            ));
        };
        return Ok((
            Operand::Kind {
                acl: Some(n),
                hccl: Some(n),
            },
            n.to_string(),
        ));
    }
    // A vendor prefix names the API; a bare name is looked up for every API the target has.
    let (bare, prefix_api) = if let Some(bare) = value.strip_prefix("ACL_MEMCPY_") {
        (bare, Some(Api::Acl))
    } else if let Some(bare) = value.strip_prefix("HCCL_RT_MEMCPY_KIND_") {
        (bare, Some(Api::Hccl))
    } else {
        (value, None)
    };
    let resolve = |api: Api| {
        if target.admits_api(api) && prefix_api.is_none_or(|p| p == api) {
            kind_by_name(api, bare)
        } else {
            None
        }
    };
    let (acl, hccl) = (resolve(Api::Acl), resolve(Api::Hccl));
    if acl.is_none() && hccl.is_none() {
        let expected = match target {
            Target::Only(h) if h.api() == Api::Acl => {
                "an aclrtMemcpyKind such as DEVICE_TO_HOST or ACL_MEMCPY_DEVICE_TO_HOST, or a \
                 number"
            }
            Target::Only(_) => {
                "an HcclRtMemcpyKind such as DEVICE_TO_HOST or \
                 HCCL_RT_MEMCPY_KIND_DEVICE_TO_HOST, or a number"
            }
            Target::Any => {
                "an aclrtMemcpyKind or HcclRtMemcpyKind name such as DEVICE_TO_HOST, or a number"
            }
        };
        let target_note = match target {
            Target::Only(hook) => format!(" for {}", hook.symbol()),
            Target::Any => String::new(),
        };
        return Err(format!(
            "unknown kind '{value}'{target_note} (expected {expected})"
        ));
    }
    // Keep the prefix only where it narrows the meaning, so `describe` parses back the same.
    let text = if target == Target::Any && prefix_api.is_some() {
        value
    } else {
        bare
    };
    Ok((Operand::Kind { acl, hccl }, text.to_owned()))
}

fn link_operand(value: &str) -> Result<(Operand, String), String> {
    if looks_numeric(value) {
        return match parse_int32(value) {
            Some(n) => Ok((Operand::Link(n), n.to_string())),
            None => Err(format!(
                "link '{value}' is not a 32-bit integer or a link type name"
            )),
        };
    }
    match link_by_name(value) {
        Some(n) => Ok((
            Operand::Link(n),
            value.strip_prefix("LINK_").unwrap_or(value).to_owned(),
        )),
        None => Err(format!(
            "unknown link type '{value}' (expected one of {}, RESERVED, with or without \
             LINK_, or a number)",
            LINK_NAMES.join(", ")
        )),
    }
}

/// A size for `count` / `destMax`: decimal or `0x` hex, then an optional binary suffix.
fn parse_size(key: &str, value: &str) -> Result<u64, String> {
    let digits_end = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => {
            2 + hex
                .find(|c: char| !c.is_ascii_hexdigit())
                .unwrap_or(hex.len())
        }
        None => value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    };
    let (number, suffix) = value.split_at(digits_end);
    let Some(n) = parse_uint(number) else {
        // Digits that do not parse can only mean overflow; "0x" alone is malformed.
        if !number.is_empty() && !number.eq_ignore_ascii_case("0x") {
            return Err(format!(
                "'{value}' is too large for '{key}' (the limit is {})",
                u64::MAX
            ));
        }
        return Err(format!(
            "expected a number for '{key}' (decimal or 0x hex, optionally followed by \
             {SUFFIXES_EXPECTED}), found '{value}'"
        ));
    };
    let scale: u64 = match suffix {
        "" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => {
            return Err(format!(
                "unknown size suffix '{suffix}' in '{value}' (expected {SUFFIXES_EXPECTED})"
            ));
        }
    };
    n.checked_mul(scale).ok_or_else(|| {
        format!(
            "'{value}' is too large for '{key}' (the limit is {})",
            u64::MAX
        )
    })
}

fn parse_code(value: &str) -> Result<i32, String> {
    if looks_numeric(value) {
        return parse_int32(value)
            .ok_or_else(|| format!("code '{value}' is not a 32-bit integer ({CODE_EXPECTED})"));
    }
    code_by_name(value)
        .ok_or_else(|| format!("unknown code name '{value}' (expected {CODE_EXPECTED})"))
}

fn parse_duration(value: &str) -> Result<u64, String> {
    let digits_end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "expected a duration such as 500us or 2ms, found '{value}'"
        ));
    }
    let scale: u64 = match unit {
        "ns" => 1,
        "us" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "" => {
            return Err(format!(
                "duration '{value}' needs a unit ({UNITS_EXPECTED}), e.g. {value}ms"
            ));
        }
        _ => {
            return Err(format!(
                "unknown duration unit '{unit}' in '{value}' (expected {UNITS_EXPECTED})"
            ));
        }
    };
    match number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
    {
        Some(ns) if ns <= MAX_DELAY_NS => Ok(ns),
        _ => Err(format!("delay {value} is above the 60s limit")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> FaultSpec {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn parse_err(s: &str) -> String {
        match s.parse::<FaultSpec>() {
            Ok(spec) => panic!("{s:?} should not parse, got {}", spec.describe()),
            Err(e) => e.to_string(),
        }
    }

    fn acl(kind: i32) -> Call {
        Call {
            kind,
            ..Call::new(Api::Acl)
        }
    }

    fn hccl(kind: i32) -> Call {
        Call {
            kind,
            ..Call::new(Api::Hccl)
        }
    }

    /// Whether the spec's first rule matches `call` (each rule here is `…=return(1)`).
    fn selects(spec: &str, call: Call) -> bool {
        parse(spec).decide(&call, 0) == Decision::Return(1)
    }

    #[test]
    fn spec_example_fails_third_and_fourth_device_to_host_copy() {
        let spec = parse("aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=2*off->2*return(507053)->off");
        assert_eq!(spec.rule_count(), 1);
        let d2h = acl(2);
        let h2d = acl(1);
        let mut seen = Vec::new();
        for _ in 0..8 {
            // Interleaved H2D calls and HCCL D2H calls must not consume anything.
            assert_eq!(spec.decide(&h2d, 7), Decision::Forward);
            assert_eq!(spec.decide(&hccl(2), 7), Decision::Forward);
            seen.push(spec.decide(&d2h, 7));
        }
        use Decision::{Forward as F, Return as R};
        assert_eq!(seen, [F, F, R(507053), R(507053), F, F, F, F]);
    }

    #[test]
    fn empty_specs() {
        for s in ["", "   ", "\t\n", ";", " ; ;; ", ";;;"] {
            let spec = parse(s);
            assert!(spec.is_empty(), "{s:?}");
            assert_eq!(spec.rule_count(), 0);
            assert_eq!(spec.describe(), "");
            assert_eq!(spec.decide(&acl(1), 0), Decision::Forward);
        }
        assert!(FaultSpec::default().is_empty());
    }

    #[test]
    fn rules_targets_and_whitespace() {
        let spec = parse(" aclrtMemcpyAsync = return(1) ; HcclMemcpyAsync=return(2);*=return(3);");
        assert_eq!(spec.rule_count(), 3);
        assert_eq!(spec.decide(&acl(0), 0), Decision::Return(1));
        assert_eq!(spec.decide(&hccl(0), 0), Decision::Return(2));
        let spec = parse("*=return(3);aclrtMemcpyAsync=return(1)");
        assert_eq!(spec.decide(&acl(0), 0), Decision::Return(3));
        assert_eq!(spec.decide(&hccl(0), 0), Decision::Return(3));
        let spec = parse(
            "aclrtMemcpyAsync [ kind = DEVICE_TO_HOST , count >= 1M ] = 50 % 2 * return ( 7 ) -> skip",
        );
        assert_eq!(
            spec.describe(),
            "aclrtMemcpyAsync[kind=DEVICE_TO_HOST,count>=1M]=50%2*return(7)->skip"
        );
    }

    #[test]
    fn first_matching_rule_decides_even_when_its_actions_pass() {
        let spec = parse("aclrtMemcpyAsync[kind=1]=1*skip; aclrtMemcpyAsync=return");
        assert_eq!(spec.decide(&acl(1), 0), Decision::Skip);
        // The first rule still matches, so its spent action forwards; rule 2 is not tried.
        assert_eq!(spec.decide(&acl(1), 0), Decision::Forward);
        assert_eq!(spec.decide(&acl(2), 0), Decision::Return(507_000));
    }

    #[test]
    fn tasks_and_arguments() {
        let d = |s: &str, call: Call| parse(s).decide(&call, 0);
        assert_eq!(d("*=off", acl(0)), Decision::Forward);
        assert_eq!(d("*=skip", acl(0)), Decision::Skip);
        assert_eq!(d("*=abort", hccl(0)), Decision::Abort);
        assert_eq!(d("*=return", acl(0)), Decision::Return(507_000));
        assert_eq!(d("*=return", hccl(0)), Decision::Return(15));
        assert_eq!(d("HcclMemcpyAsync=return", hccl(0)), Decision::Return(15));
        assert_eq!(d("*=return(-1)", acl(0)), Decision::Return(-1));
        assert_eq!(
            d("*=return(-2147483648)", acl(0)),
            Decision::Return(i32::MIN)
        );
        assert_eq!(d("*=return(0x10)", acl(0)), Decision::Return(16));
        assert_eq!(
            d("*=return(ACL_ERROR_RT_DEVICE_MEM_ERROR)", hccl(0)),
            Decision::Return(507_053)
        );
        assert_eq!(d("*=return(HCCL_E_PARA)", hccl(0)), Decision::Return(1));
        assert_eq!(d("*=return(ACL_SUCCESS)", acl(0)), Decision::Return(0));
        assert_eq!(d("*=delay(500us)", acl(0)), Decision::Delay(500_000));
        assert_eq!(d("*=delay(7ns)", acl(0)), Decision::Delay(7));
        assert_eq!(d("*=delay(2ms)", acl(0)), Decision::Delay(2_000_000));
        assert_eq!(d("*=delay(60s)", acl(0)), Decision::Delay(MAX_DELAY_NS));
        assert_eq!(d("*=delay(0ms)", acl(0)), Decision::Delay(0));
        // An `off` that fires consumes its count and forwards.
        let spec = parse("*=1*off->return(9)");
        assert_eq!(spec.decide(&acl(0), 0), Decision::Forward);
        assert_eq!(spec.decide(&acl(0), 0), Decision::Return(9));
        assert_eq!(spec.decide(&acl(0), 0), Decision::Return(9));
        // All actions spent: forward.
        let spec = parse("*=1*skip->1*abort");
        assert_eq!(spec.decide(&acl(0), 0), Decision::Skip);
        assert_eq!(spec.decide(&acl(0), 0), Decision::Abort);
        assert_eq!(spec.decide(&acl(0), 0), Decision::Forward);
    }

    #[test]
    fn decision_text() {
        let cases = [
            (Decision::Forward, "off", "off", false),
            (Decision::Return(507_053), "return(507053)", "return", true),
            (Decision::Return(-3), "return(-3)", "return", true),
            (
                Decision::Return(i32::MIN),
                "return(-2147483648)",
                "return",
                true,
            ),
            (Decision::Delay(2_000_000), "delay(2ms)", "delay", true),
            (Decision::Delay(1_500), "delay(1500ns)", "delay", true),
            (Decision::Delay(3_000_000_000), "delay(3s)", "delay", true),
            (Decision::Delay(0), "delay(0ns)", "delay", true),
            (
                Decision::Delay(u64::MAX),
                "delay(18446744073709551615ns)",
                "delay",
                true,
            ),
            (Decision::Skip, "skip", "skip", true),
            (Decision::Abort, "abort", "abort", true),
        ];
        for (d, text, task, fault) in cases {
            let mut buf = [0u8; ACTION_TEXT_MAX];
            let n = d.write_action(&mut buf);
            assert_eq!(&buf[..n], text.as_bytes());
            assert_eq!(d.to_string(), text);
            assert_eq!(d.task(), task);
            assert_eq!(d.is_fault(), fault);
        }
        let mut small = [0u8; 4];
        assert_eq!(Decision::Return(507_053).write_action(&mut small), 4);
        assert_eq!(&small, b"retu");
        assert_eq!(Decision::Skip.write_action(&mut []), 0);
    }

    #[test]
    fn error_messages_name_the_column() {
        let cases = [
            (
                "aclrtMemcpyAsync=off->retrun",
                "at column 23: unknown task 'retrun' (expected off, return, delay, skip, abort)",
            ),
            (
                "aclrtMemcpyAsynk=return",
                "at column 1: unknown target 'aclrtMemcpyAsynk' (expected the name of a hooked \
                 function, e.g. aclrtMemcpyAsync, HcclD2DMemcpyAsync or aclrtSynchronizeStream, \
                 or *)",
            ),
            (
                "aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=return x",
                "at column 46: expected '->' or ';' after action, found 'x'",
            ),
            (
                "aclrtMemcpyAsync=return(ACL_ERROR_FOO)",
                "at column 25: unknown code name 'ACL_ERROR_FOO' (expected a number or a name \
                 such as ACL_ERROR_RT_INTERNAL_ERROR)",
            ),
            (
                "*=  150%return",
                "at column 5: probability 150% is above 100%",
            ),
            (
                "aclrtMemcpyAsync[kind=1",
                "at column 17: unterminated '[' (expected ']' to close it)",
            ),
            (
                "aclrtMemcpyAsync=delay(2ms",
                "at column 23: unterminated '(' (expected ')' to close it)",
            ),
            (
                "aclrtMemcpyAsync=",
                "at column 18: empty action list after '=' (expected an action such as return, \
                 delay(1ms), skip, abort or off), found end of spec",
            ),
            (
                "aclrtMemcpyAsync= ;*=skip",
                "at column 19: empty action list after '=' (expected an action such as return, \
                 delay(1ms), skip, abort or off), found ';'",
            ),
            (
                "aclrtMemcpyAsync return",
                "at column 18: expected '=' or '[' after target 'aclrtMemcpyAsync', found 'r'",
            ),
            (
                "aclrtMemcpyAsync[kind=1] return",
                "at column 26: expected '=' after the filters, found 'r'",
            ),
            (
                "aclrtMemcpyAsync[rank=3]=return",
                "at column 18: filter 'rank' never matches aclrtMemcpyAsync (it is an argument \
                 of the HCCL copies only)",
            ),
            (
                "aclrtMemcpyAsync[link=HCCS]=return",
                "at column 18: filter 'link' never matches aclrtMemcpyAsync (it is an argument \
                 of the HCCL copies only)",
            ),
            (
                "*[knd=1]=return",
                "at column 3: unknown filter key 'knd' (expected kind, count, destMax, stream, \
                 rank, link or depth)",
            ),
            (
                "*[kind<1]=return",
                "at column 7: filter 'kind' takes only = or !=, not '<'",
            ),
            (
                "*[stream>=0x10]=return",
                "at column 9: filter 'stream' takes only = or !=, not '>='",
            ),
            (
                "*[count~1]=return",
                "at column 8: expected an operator (=, !=, <, <=, >, >=) after 'count', found '~'",
            ),
            (
                "*[count=]=return",
                "at column 9: expected a value after 'count=', found ']'",
            ),
            (
                "*[count=4k]=return",
                "at column 9: unknown size suffix 'k' in '4k' (expected K, M, G, KiB, MiB or GiB)",
            ),
            (
                "*[count=99999999999G]=return",
                "at column 9: '99999999999G' is too large for 'count' (the limit is \
                 18446744073709551615)",
            ),
            (
                "*[count=0x]=return",
                "at column 9: expected a number for 'count' (decimal or 0x hex, optionally \
                 followed by K, M, G, KiB, MiB or GiB), found '0x'",
            ),
            (
                "*[destMax=0x1FFFFFFFFFFFFFFFF]=return",
                "at column 11: '0x1FFFFFFFFFFFFFFFF' is too large for 'destMax' (the limit is \
                 18446744073709551615)",
            ),
            (
                "*[stream=main]=return",
                "at column 10: expected an address for 'stream' (decimal or 0x hex), found 'main'",
            ),
            (
                "*[count=1,]=return",
                "at column 11: expected a filter key (kind, count, destMax, stream, rank, link \
                 or depth), found ']'",
            ),
            (
                "*[count=1;depth=0]=return",
                "at column 10: expected ',' or ']' after a filter, found ';'",
            ),
            (
                "aclrtMemcpyAsync[kind=ADDR_DEVICE_TO_DEVICE]=return",
                "at column 23: unknown kind 'ADDR_DEVICE_TO_DEVICE' for aclrtMemcpyAsync \
                 (expected an aclrtMemcpyKind such as DEVICE_TO_HOST or \
                 ACL_MEMCPY_DEVICE_TO_HOST, or a number)",
            ),
            (
                "*[kind=SIDEWAYS]=return",
                "at column 8: unknown kind 'SIDEWAYS' (expected an aclrtMemcpyKind or \
                 HcclRtMemcpyKind name such as DEVICE_TO_HOST, or a number)",
            ),
            (
                "HcclMemcpyAsync[link=WIFI]=return",
                "at column 22: unknown link type 'WIFI' (expected one of ONCHIP, HCCS, PCIE, \
                 ROCE, SIO, HCCS_SW, STANDARD_ROCE, UB, RESERVED, with or without LINK_, or a \
                 number)",
            ),
            ("*=skip(1)", "at column 7: task 'skip' takes no argument"),
            (
                "*=delay",
                "at column 8: task 'delay' needs a duration in parentheses, e.g. delay(2ms), \
                 found end of spec",
            ),
            (
                "*=delay(500)",
                "at column 9: duration '500' needs a unit (ns, us, ms or s), e.g. 500ms",
            ),
            (
                "*=delay(5min)",
                "at column 9: unknown duration unit 'min' in '5min' (expected ns, us, ms or s)",
            ),
            (
                "*=delay(61s)",
                "at column 9: delay 61s is above the 60s limit",
            ),
            (
                "*=delay()",
                "at column 9: expected a duration such as 500us or 2ms in delay(), found ')'",
            ),
            (
                "*=return(5 6)",
                "at column 12: expected ')' after the argument, found '6'",
            ),
            (
                "*=return(99999999999)",
                "at column 10: code '99999999999' is not a 32-bit integer (a number or a name \
                 such as ACL_ERROR_RT_INTERNAL_ERROR)",
            ),
            ("*=0*return", "at column 3: count must be at least 1"),
            (
                "*=1.5*return",
                "at column 3: count '1.5' must be a whole number, e.g. 2*return",
            ),
            (
                "*=2*50%return",
                "at column 5: the probability must come before the count, e.g. 50%2*return",
            ),
            (
                "*=5 return",
                "at column 5: expected '%' or '*' after the number '5', found 'r'",
            ),
            (
                "*=1.2.3%return",
                "at column 3: malformed probability '1.2.3%' (expected a decimal from 0 to 100, \
                 e.g. 5% or 0.5%)",
            ),
            (
                "*=return->",
                "at column 11: expected an action after '->', found end of spec",
            ),
            (
                "*=%return",
                "at column 3: expected a task (off, return, delay, skip, abort), found '%'",
            ),
            (
                "=return",
                "at column 1: expected a target (the name of a hooked function, e.g. \
                 aclrtMemcpyAsync, HcclD2DMemcpyAsync or aclrtSynchronizeStream, or *), found '='",
            ),
            (
                "*=réturn",
                "at column 3: unknown task 'réturn' (expected off, return, delay, skip, abort)",
            ),
            (
                "ü=return",
                "at column 1: unknown target 'ü' (expected the name of a hooked function, e.g. aclrtMemcpyAsync, HcclD2DMemcpyAsync or \
                 aclrtSynchronizeStream, or *)",
            ),
            (
                "*=return ☃",
                "at column 10: expected '->' or ';' after action, found '☃'",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(parse_err(spec), want, "spec {spec:?}");
        }
    }

    #[test]
    fn limits_are_enforced() {
        let long = format!("*=skip;{}", " ".repeat(MAX_SPEC_BYTES));
        let e = long.parse::<FaultSpec>().unwrap_err();
        assert_eq!(e.column, 1);
        assert!(e.message.contains("limit is 65536"), "{e}");

        let rules = "*=skip;".repeat(MAX_RULES);
        assert_eq!(parse(&rules).rule_count(), MAX_RULES);
        let e = format!("{rules}*=skip").parse::<FaultSpec>().unwrap_err();
        assert_eq!(e.column, rules.len() + 1);
        assert!(e.message.contains("too many rules"), "{e}");

        let filters = vec!["depth=0"; MAX_FILTERS].join(",");
        parse(&format!("*[{filters}]=skip"));
        let e = format!("*[{filters},depth=0]=skip")
            .parse::<FaultSpec>()
            .unwrap_err();
        assert!(e.message.contains("too many filters"), "{e}");

        let actions = vec!["1*skip"; MAX_ACTIONS].join("->");
        parse(&format!("*={actions}"));
        let e = format!("*={actions}->skip")
            .parse::<FaultSpec>()
            .unwrap_err();
        assert!(e.message.contains("too many actions"), "{e}");
    }

    #[test]
    fn numeric_filters_at_their_boundaries() {
        let call = |count: u64| Call {
            count,
            ..Call::new(Api::Acl)
        };
        let cases: [(&str, u64, bool); 14] = [
            ("count=100", 100, true),
            ("count=100", 101, false),
            ("count!=100", 100, false),
            ("count!=100", 99, true),
            ("count<100", 99, true),
            ("count<100", 100, false),
            ("count<=100", 100, true),
            ("count<=100", 101, false),
            ("count>100", 101, true),
            ("count>100", 100, false),
            ("count>=100", 100, true),
            ("count>=100", 99, false),
            ("count=0x64", 100, true),
            ("count=18446744073709551615", u64::MAX, true),
        ];
        for (filter, count, want) in cases {
            let spec = format!("aclrtMemcpyAsync[{filter}]=return(1)");
            assert_eq!(selects(&spec, call(count)), want, "{spec} on count {count}");
        }
        for (text, value) in [
            ("1K", 1u64 << 10),
            ("1KiB", 1 << 10),
            ("3M", 3 << 20),
            ("3MiB", 3 << 20),
            ("2G", 2 << 30),
            ("2GiB", 2 << 30),
            ("0x10K", 16 << 10),
            ("0", 0),
        ] {
            let spec = format!("*[count>={text}]=return(1)");
            assert!(selects(&spec, call(value)), "{spec}");
            if value > 0 {
                assert!(!selects(&spec, call(value - 1)), "{spec}");
            }
        }
        let dm = |dest_max: u64| Call {
            dest_max,
            ..Call::new(Api::Hccl)
        };
        assert!(selects("*[destMax<1M]=return(1)", dm((1 << 20) - 1)));
        assert!(!selects("*[destMax<1M]=return(1)", dm(1 << 20)));
        assert!(selects("HcclMemcpyAsync[destMax=0]=return(1)", dm(0)));

        let on_stream = |stream: usize| Call {
            stream,
            ..Call::new(Api::Acl)
        };
        assert!(selects("*[stream=0x7f00]=return(1)", on_stream(0x7f00)));
        assert!(selects("*[stream=32512]=return(1)", on_stream(0x7f00)));
        assert!(!selects("*[stream=0x7f00]=return(1)", on_stream(0x7f01)));
        assert!(selects("*[stream!=0x7f00]=return(1)", on_stream(0)));

        let at_depth = |depth: u32| Call {
            depth,
            ..Call::new(Api::Acl)
        };
        assert!(selects("*[depth=1]=return(1)", at_depth(1)));
        assert!(!selects("*[depth=1]=return(1)", at_depth(0)));
        assert!(selects("*[depth>0]=return(1)", at_depth(1)));
        assert!(selects("*[depth<1]=return(1)", at_depth(0)));

        // Several filters: all must hold.
        let both = "*[count>=1K,count<2K,depth=0]=return(1)";
        assert!(selects(both, call(1024)));
        assert!(selects(both, call(2047)));
        assert!(!selects(both, call(2048)));
        assert!(!selects(
            both,
            Call {
                depth: 1,
                ..call(1024)
            }
        ));
    }

    #[test]
    fn filter_values_beyond_their_field_are_rejected() {
        // rank and depth are 32-bit, stream is an address, count and destMax 64-bit: a
        // value the field cannot hold is an error at the value, not a rule that never fires.
        let cases = [
            (
                "HcclMemcpyAsync[rank=4294967296]=return",
                "at column 22: '4294967296' is too large for 'rank' (the limit is 4294967295)",
            ),
            (
                "*[depth=4294967296]=return",
                "at column 9: '4294967296' is too large for 'depth' (the limit is 4294967295)",
            ),
            (
                "*[depth>0x100000000]=return",
                "at column 9: '0x100000000' is too large for 'depth' (the limit is 4294967295)",
            ),
            (
                "*[rank<99999999999999999999999]=return",
                "at column 8: '99999999999999999999999' is too large for 'rank' (the limit is \
                 4294967295)",
            ),
            (
                "*[stream=0x10000000000000000]=return",
                "at column 10: '0x10000000000000000' is too large for 'stream' (the limit is \
                 18446744073709551615)",
            ),
            (
                "*[stream!=18446744073709551616]=return",
                "at column 11: '18446744073709551616' is too large for 'stream' (the limit is \
                 18446744073709551615)",
            ),
            (
                "*[count>=16777216T]=return",
                "at column 10: unknown size suffix 'T' in '16777216T' (expected K, M, G, KiB, \
                 MiB or GiB)",
            ),
            (
                "*[count>=17179869184G]=return",
                "at column 10: '17179869184G' is too large for 'count' (the limit is \
                 18446744073709551615)",
            ),
            (
                "*[destMax=17592186044416M]=return",
                "at column 11: '17592186044416M' is too large for 'destMax' (the limit is \
                 18446744073709551615)",
            ),
            (
                "*[count<18014398509481984K]=return",
                "at column 9: '18014398509481984K' is too large for 'count' (the limit is \
                 18446744073709551615)",
            ),
            (
                "*[count=0x10000000000000000]=return",
                "at column 9: '0x10000000000000000' is too large for 'count' (the limit is \
                 18446744073709551615)",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(parse_err(spec), want, "{spec}");
        }
        // The largest values each field holds still parse and match.
        let h = |remote_rank: u32, depth: u32| Call {
            remote_rank,
            depth,
            ..Call::new(Api::Hccl)
        };
        assert!(selects(
            "HcclMemcpyAsync[rank=4294967295]=return(1)",
            h(u32::MAX, 0)
        ));
        assert!(selects("*[depth=0xffffffff]=return(1)", h(0, u32::MAX)));
        assert!(selects(
            "*[count=16777215G]=return(1)",
            Call {
                count: 16_777_215 << 30,
                ..Call::new(Api::Acl)
            }
        ));
        assert!(selects(
            "*[stream=0xffffffffffffffff]=return(1)",
            Call {
                stream: usize::MAX,
                ..Call::new(Api::Acl)
            }
        ));
    }

    #[test]
    fn kind_filters_resolve_per_api() {
        for name in ["DEVICE_TO_HOST", "ACL_MEMCPY_DEVICE_TO_HOST", "2"] {
            let spec = format!("aclrtMemcpyAsync[kind={name}]=return(1)");
            assert!(selects(&spec, acl(2)), "{spec}");
            assert!(!selects(&spec, acl(1)), "{spec}");
            assert!(!selects(&spec, hccl(2)), "{spec}");
        }
        for name in [
            "ADDR_DEVICE_TO_DEVICE",
            "HCCL_RT_MEMCPY_KIND_ADDR_DEVICE_TO_DEVICE",
        ] {
            let spec = format!("HcclMemcpyAsync[kind={name}]=return(1)");
            assert!(selects(&spec, hccl(4)), "{spec}");
            assert!(!selects(&spec, hccl(3)), "{spec}");
        }
        // `*`: a name common to both APIs matches both.
        assert!(selects("*[kind=DEVICE_TO_HOST]=return(1)", acl(2)));
        assert!(selects("*[kind=DEVICE_TO_HOST]=return(1)", hccl(2)));
        // 4 is DEFAULT for ACL but ADDR_DEVICE_TO_DEVICE for HCCL.
        assert!(selects("*[kind=DEFAULT]=return(1)", acl(4)));
        assert!(!selects("*[kind=DEFAULT]=return(1)", hccl(4)));
        assert!(selects("*[kind!=DEFAULT]=return(1)", hccl(4)));
        assert!(!selects("*[kind!=DEFAULT]=return(1)", acl(4)));
        assert!(selects("*[kind=ADDR_DEVICE_TO_DEVICE]=return(1)", hccl(4)));
        assert!(!selects("*[kind=ADDR_DEVICE_TO_DEVICE]=return(1)", acl(4)));
        // A vendor prefix pins the API.
        assert!(selects(
            "*[kind=ACL_MEMCPY_DEVICE_TO_HOST]=return(1)",
            acl(2)
        ));
        assert!(!selects(
            "*[kind=ACL_MEMCPY_DEVICE_TO_HOST]=return(1)",
            hccl(2)
        ));
        assert!(selects(
            "*[kind=HCCL_RT_MEMCPY_KIND_DEVICE_TO_HOST]=return(1)",
            hccl(2)
        ));
        assert!(!selects(
            "*[kind=HCCL_RT_MEMCPY_KIND_DEVICE_TO_HOST]=return(1)",
            acl(2)
        ));
        assert!(
            "aclrtMemcpyAsync[kind=HCCL_RT_MEMCPY_KIND_DEVICE_TO_HOST]=skip"
                .parse::<FaultSpec>()
                .is_err()
        );
        // Integers match out-of-range kinds too; negative values are accepted.
        assert!(selects("*[kind=9]=return(1)", acl(9)));
        assert!(selects("*[kind=-1]=return(1)", hccl(-1)));
        assert!(selects("*[kind!=1]=return(1)", acl(9)));
    }

    #[test]
    fn rank_and_link_only_match_hccl() {
        let h = |remote_rank: u32, link: i32| Call {
            remote_rank,
            link,
            ..Call::new(Api::Hccl)
        };
        assert!(selects("HcclMemcpyAsync[rank=3]=return(1)", h(3, 0)));
        assert!(!selects("HcclMemcpyAsync[rank=3]=return(1)", h(4, 0)));
        assert!(selects("*[rank>=3]=return(1)", h(4, 0)));
        assert!(!selects("*[rank>3]=return(1)", h(3, 0)));
        assert!(selects("*[rank<=3]=return(1)", h(3, 0)));
        assert!(selects("*[rank!=3]=return(1)", h(0, 0)));
        assert!(!selects("*[rank!=3]=return(1)", acl(0)));
        assert!(!selects("*[rank=0]=return(1)", acl(0)));
        for name in ["HCCS", "LINK_HCCS", "1"] {
            let spec = format!("HcclMemcpyAsync[link={name}]=return(1)");
            assert!(selects(&spec, h(0, 1)), "{spec}");
            assert!(!selects(&spec, h(0, 2)), "{spec}");
        }
        assert!(selects("*[link=RESERVED]=return(1)", h(0, 255)));
        assert!(selects("*[link!=HCCS]=return(1)", h(0, 0)));
        assert!(!selects("*[link!=HCCS]=return(1)", acl(0)));
        assert!(!selects("*[link=ONCHIP]=return(1)", acl(0)));
        assert!("*[link<HCCS]=skip".parse::<FaultSpec>().is_err());
    }

    #[test]
    fn probability_is_seeded_and_roughly_right() {
        let run = |spec: &str, seed: u64, n: usize| -> Vec<bool> {
            let spec = parse(spec);
            (0..n)
                .map(|_| spec.decide(&acl(0), seed).is_fault())
                .collect()
        };
        let half = run("*=50%return", 1, 10_000);
        let fired = half.iter().filter(|&&f| f).count();
        assert!((4_500..=5_500).contains(&fired), "{fired}");
        assert_eq!(half, run("*=50%return", 1, 10_000));
        assert_ne!(half, run("*=50%return", 2, 10_000));
        assert_ne!(half, run("*=50%return", 1 << 63, 10_000));

        assert!(run("*=0%return", 3, 10_000).iter().all(|&f| !f));
        assert!(run("*=0.0%return", 3, 1_000).iter().all(|&f| !f));
        assert!(run("*=100%return", 3, 10_000).iter().all(|&f| f));
        assert!(run("*=100.0%return", 3, 1_000).iter().all(|&f| f));
        let tenth = run("*=0.5%return", 4, 100_000);
        let fired = tenth.iter().filter(|&&f| f).count();
        assert!((350..=650).contains(&fired), "{fired}");

        // Two actions in one rule draw from different streams.
        let spec = parse("*=50%return(1)->50%return(2)->skip");
        let mut counts = [0usize; 3];
        for _ in 0..10_000 {
            match spec.decide(&acl(0), 9) {
                Decision::Return(1) => counts[0] += 1,
                Decision::Return(2) => counts[1] += 1,
                Decision::Skip => counts[2] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!((4_500..=5_500).contains(&counts[0]), "{counts:?}");
        assert!((2_000..=3_000).contains(&counts[1]), "{counts:?}");
        assert!((2_000..=3_000).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn probability_is_checked_before_the_count() {
        // A count is consumed only when the probability says yes.
        let spec = parse("*=50%3*return->skip");
        let decisions: Vec<_> = (0..1_000).map(|_| spec.decide(&acl(0), 5)).collect();
        let returns = decisions.iter().filter(|d| d.task() == "return").count();
        assert_eq!(returns, 3);
        let first_skip = decisions.iter().position(|d| *d == Decision::Skip).unwrap();
        assert!(first_skip < 10, "{decisions:?}");
    }

    #[test]
    fn counts_are_exact_across_threads() {
        let spec = parse("*=100*return->off");
        let returns: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|t| {
                    let spec = &spec;
                    s.spawn(move || {
                        let call = if t % 2 == 0 { acl(1) } else { hccl(1) };
                        (0..10_000)
                            .filter(|_| spec.decide(&call, 42).is_fault())
                            .count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(returns, 100);
    }

    #[test]
    fn describe_normalizes_and_parses_back() {
        let cases = [
            (
                "aclrtMemcpyAsync[kind=ACL_MEMCPY_DEVICE_TO_HOST]=2*off->2*return(507053)->off",
                "aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=2*off->2*return(507053)->off",
            ),
            (
                "*[kind=ACL_MEMCPY_DEFAULT,count>=1048576,destMax<0x400]=0.5%delay(2000us)",
                "*[kind=ACL_MEMCPY_DEFAULT,count>=1M,destMax<1K]=0.5%delay(2ms)",
            ),
            (
                "HcclMemcpyAsync[rank!=0x3,link=LINK_ROCE,stream=4096,depth=0]=return;*=abort",
                "HcclMemcpyAsync[rank!=3,link=ROCE,stream=0x1000,depth=0]=return; *=abort",
            ),
            (
                "*=100%1*return(HCCL_E_TIMEOUT)->delay(1000000000ns)->skip",
                "*=100%1*return(9)->delay(1s)->skip",
            ),
            ("*[count=1000]=return(-5)", "*[count=1000]=return(-5)"),
        ];
        for (spec, want) in cases {
            let described = parse(spec).describe();
            assert_eq!(described, want);
            assert_eq!(parse(&described).describe(), want);
            assert_eq!(parse(spec).to_string(), want);
        }
    }

    /// A small deterministic PRNG for the fuzz test (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    const CORPUS: &[&str] = &[
        "aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=2*off->2*return(507053)->off",
        "HcclMemcpyAsync[rank>=1,link=LINK_HCCS,count<4K]=50%delay(500us)->return",
        "*[kind=ACL_MEMCPY_DEFAULT,destMax<=0x1000,depth=1]=0.5%3*skip;*=abort",
        "*[stream!=0x7f00,count>1MiB]=return(ACL_ERROR_RT_DEVICE_MEM_ERROR)->delay(2ms)",
        "aclrtMemcpyAsync=return(-1); HcclMemcpyAsync = 10 % 1 * return ( HCCL_E_PARA )",
        "*=delay(60s);;aclrtMemcpyAsync[kind!=3]=100%skip",
    ];

    const ALPHABET: &[&str] = &[
        "aclrtMemcpyAsync",
        "HcclMemcpyAsync",
        "*",
        "[",
        "]",
        ",",
        "=",
        "!=",
        "<",
        "<=",
        ">",
        ">=",
        ";",
        "->",
        "-",
        ">",
        "(",
        ")",
        "%",
        "kind",
        "count",
        "destMax",
        "stream",
        "rank",
        "link",
        "depth",
        "off",
        "return",
        "delay",
        "skip",
        "abort",
        "DEVICE_TO_HOST",
        "ACL_MEMCPY_",
        "HCCS",
        "ACL_ERROR_RT_INTERNAL_ERROR",
        "K",
        "M",
        "G",
        "KiB",
        "ms",
        "us",
        "ns",
        "s",
        "0x",
        "0",
        "1",
        "9",
        "99999999999999999999999",
        ".",
        " ",
        "\t",
        "é",
        "日本",
        "\u{0}",
        "-5",
        "100",
        "150",
    ];

    fn mutate(rng: &mut Rng, spec: &str) -> String {
        let mut chars: Vec<char> = spec.chars().collect();
        for _ in 0..=rng.below(4) {
            let pos = rng.below(chars.len() + 1);
            match rng.below(5) {
                0 if !chars.is_empty() => {
                    chars.remove(pos.min(chars.len() - 1));
                }
                1 if pos < chars.len() => {
                    let token: Vec<char> = ALPHABET[rng.below(ALPHABET.len())].chars().collect();
                    chars[pos] = token[0];
                }
                2 => {
                    let token = ALPHABET[rng.below(ALPHABET.len())];
                    chars.splice(pos..pos, token.chars());
                }
                3 => {
                    let other: Vec<char> = CORPUS[rng.below(CORPUS.len())].chars().collect();
                    let from = rng.below(other.len());
                    let to = from + rng.below(other.len() - from + 1);
                    chars.splice(pos..pos, other[from..to].iter().copied());
                }
                _ => {
                    let end = pos + rng.below(chars.len() - pos + 1);
                    chars.drain(pos..end);
                }
            }
        }
        chars.into_iter().collect()
    }

    fn check_parse(spec: &str) {
        let len = spec.chars().count();
        match spec.parse::<FaultSpec>() {
            Ok(parsed) => {
                let described = parsed.describe();
                let reparsed = described
                    .parse::<FaultSpec>()
                    .unwrap_or_else(|e| panic!("{spec:?} → {described:?}: {e}"));
                assert_eq!(reparsed.describe(), described, "{spec:?}");
                assert_eq!(reparsed.rule_count(), parsed.rule_count());
            }
            Err(e) => {
                assert!(
                    (1..=len + 1).contains(&e.column),
                    "{spec:?}: column {} outside 1..={}: {e}",
                    e.column,
                    len + 1
                );
                assert!(!e.message.is_empty());
            }
        }
    }

    #[test]
    fn fuzz_parse_never_panics() {
        let mut rng = Rng(0x5EED_F00D_1234_5678);
        let mut ok = 0usize;
        for s in CORPUS {
            check_parse(s);
        }
        for i in 0..110_000 {
            let spec = if i % 4 == 3 {
                (0..rng.below(12))
                    .map(|_| ALPHABET[rng.below(ALPHABET.len())])
                    .collect::<String>()
            } else {
                let mut s = CORPUS[rng.below(CORPUS.len())].to_owned();
                for _ in 0..=rng.below(3) {
                    s = mutate(&mut rng, &s);
                }
                s
            };
            if spec.parse::<FaultSpec>().is_ok() {
                ok += 1;
            }
            check_parse(&spec);
        }
        // The corpus mutations must exercise both outcomes.
        assert!(ok > 1_000, "{ok}");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,80}") {
            check_parse(&s);
        }

        #[test]
        fn decide_never_panics(
            spec in proptest::sample::select(CORPUS),
            kind in proptest::prelude::any::<i32>(),
            count in proptest::prelude::any::<u64>(),
            seed in proptest::prelude::any::<u64>(),
        ) {
            let spec: FaultSpec = spec.parse().unwrap();
            let call = Call { kind, count, ..Call::new(Api::Hccl) };
            let d = spec.decide(&call, seed);
            let mut buf = [0u8; 32];
            let n = d.write_action(&mut buf);
            let text = d.to_string();
            proptest::prop_assert_eq!(&buf[..n], text.as_bytes());
        }
    }
}
