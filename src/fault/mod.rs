//! Fault injection (SPEC §6): the rules of an `NPUSHIM_FAULTS` spec and the decision for one
//! call.
//!
//! This file owns the model (rules, filters, actions and the atomic counters the actions
//! consume) and [`FaultSpec::decide`]; [`parse`] turns a spec into rules (rejecting it whole,
//! with an error that names the 1-based character column of the offending character),
//! [`text`] writes rules and decisions back as text, and [`draw`] is the seeded, counter-based
//! generator behind the probabilities. The module is pure: it must not touch FFI, globals,
//! the process environment, clocks or I/O, and `decide` must stay lock-free and
//! allocation-free because it runs on the calling thread of every intercepted copy. Carrying
//! a decision out (sleeping, returning, aborting), choosing the seed and counting injections
//! belong to the caller.

mod draw;
mod parse;
mod text;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::abi::types::{ACL_ERROR_RT_INTERNAL_ERROR, Api, Call, HCCL_E_RUNTIME, Hook};
use crate::words::word_enum;

pub use draw::child_seed;
pub use parse::SpecError;
pub use text::ACTION_TEXT_MAX;

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

/// The units of a `delay`, smallest first, with their length in nanoseconds.
const DURATION_UNITS: [(&str, u64); 4] = [
    ("ns", 1),
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
];

/// The suffixes of a `count` or `destMax`, the short forms first, with their power of two.
const SIZE_SUFFIXES: [(&str, u32); 6] = [
    ("K", 10),
    ("M", 20),
    ("G", 30),
    ("KiB", 10),
    ("MiB", 20),
    ("GiB", 30),
];

word_enum! {
    /// The tasks of the grammar: what an action does with a call.
    pub enum TaskKind {
        /// Forward the call.
        Off = "off",
        /// Do not forward; return a code.
        Return = "return",
        /// Sleep, then forward.
        Delay = "delay",
        /// Do not forward; return success.
        Skip = "skip",
        /// Abort the process.
        Abort = "abort",
    }
}

impl TaskKind {
    /// Whether the task is written with an argument in parentheses.
    const fn takes_argument(self) -> bool {
        matches!(self, TaskKind::Return | TaskKind::Delay)
    }

    /// Splits a decision into its task and one integer (the code, or the nanoseconds; 0
    /// for the others): how a trace record stores it.
    pub fn of(decision: Decision) -> (TaskKind, u64) {
        let arg = match decision {
            Decision::Return(code) => code as i64 as u64,
            Decision::Delay(ns) => ns,
            Decision::Forward | Decision::Skip | Decision::Abort => 0,
        };
        (decision.task_kind(), arg)
    }

    /// The task whose discriminant is `v`; [`TaskKind::Off`] for any other value.
    pub fn from_u8(v: u8) -> TaskKind {
        TaskKind::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(TaskKind::Off)
    }

    /// The decision back from [`TaskKind::of`]'s parts.
    pub fn decision(self, arg: u64) -> Decision {
        match self {
            TaskKind::Off => Decision::Forward,
            TaskKind::Return => Decision::Return(arg as i64 as i32),
            TaskKind::Delay => Decision::Delay(arg),
            TaskKind::Skip => Decision::Skip,
            TaskKind::Abort => Decision::Abort,
        }
    }
}

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

    /// The task that made this decision.
    pub fn task_kind(&self) -> TaskKind {
        match self {
            Decision::Forward => TaskKind::Off,
            Decision::Return(_) => TaskKind::Return,
            Decision::Delay(_) => TaskKind::Delay,
            Decision::Skip => TaskKind::Skip,
            Decision::Abort => TaskKind::Abort,
        }
    }

    /// The task name as written in a spec.
    pub fn task(&self) -> &'static str {
        self.task_kind().name()
    }
}

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
}

word_enum! {
    /// A filter's comparison.
    enum Op {
        Eq = "=",
        Ne = "!=",
        Lt = "<",
        Le = "<=",
        Gt = ">",
        Ge = ">=",
    }
}

impl Op {
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

word_enum! {
    /// The argument of a call a filter compares.
    enum Key {
        Kind = "kind",
        Count = "count",
        DestMax = "destMax",
        Stream = "stream",
        Rank = "rank",
        Link = "link",
        Depth = "depth",
    }
}

impl Key {
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

    fn kind(&self) -> TaskKind {
        match self {
            Task::Off => TaskKind::Off,
            Task::Return(_) => TaskKind::Return,
            Task::Delay(_) => TaskKind::Delay,
            Task::Skip => TaskKind::Skip,
            Task::Abort => TaskKind::Abort,
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
    /// Fires when a 64-bit draw is below this; [`draw::ALWAYS`] fires always.
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
    /// Action `index` of rule `rule`: fires with probability `percent` (always if `None`),
    /// at most `limit` times (unlimited if `None`).
    fn new(
        rule: usize,
        index: usize,
        percent: Option<f64>,
        limit: Option<u64>,
        task: Task,
    ) -> Action {
        Action {
            percent,
            threshold: percent.map_or(draw::ALWAYS, draw::threshold),
            stream_key: draw::stream_key(rule, index),
            draws: AtomicU64::new(0),
            limit,
            remaining: AtomicU64::new(limit.unwrap_or(0)),
            task,
        }
    }

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
            if u128::from(draw::draw(seed, self.stream_key, n)) >= self.threshold {
                return false;
            }
        }
        self.limit.is_none()
            || self
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1))
                .is_ok()
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
}

#[cfg(test)]
mod tests;
