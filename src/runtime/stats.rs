//! The counters behind the diagnostics and the exit summaries: violations by rule (with the
//! first offending call of each), injected faults by task, the rate-limited lines printed
//! as they happen, and the summaries and leak report printed at exit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Runtime;
use super::lineage::seed;
use crate::abi::types::{Api, Call, Class, Hook};
use crate::check::{MemView, Mode, RULES, Rule, Violations};
use crate::fault::{Decision, TaskKind};
use crate::memmap::MemKind;
use crate::sync::FlagLock;
use crate::trace::json::Out;
use crate::{diag, trace};

/// Per-rule violation counts, and the first offending call of each rule.
static VIOLATIONS: [AtomicU64; RULES.len()] = [const { AtomicU64::new(0) }; RULES.len()];
static FIRST_VIOLATION: FlagLock<[Option<Call>; RULES.len()]> = FlagLock::new([None; RULES.len()]);
/// Injected faults by task (`off` stays 0: it injects nothing).
/// The clock at this process's fork (0 in the original process): allocations made before
/// it were the parent's, so the child's leak summary leaves them out.
pub(super) static FORKED_AT: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds the host spent in pageable copies the runtime ran synchronously.
static PAGEABLE_BLOCKED_NS: AtomicU64 = AtomicU64::new(0);
static INJECTED: [AtomicU64; TaskKind::ALL.len()] =
    [const { AtomicU64::new(0) }; TaskKind::ALL.len()];

/// Violations of a rule print a line for their first occurrences only.
pub(super) const WARN_LIMIT: u64 = 5;

/// Counts an injected fault.
pub(super) fn note_injected(decision: Decision) {
    INJECTED[decision.task_kind() as usize].fetch_add(1, Ordering::Relaxed);
}

/// Counts a call's violations; prints the first occurrences of each rule.
#[cold]
pub fn note_violations(rt: &Runtime, call: &Call, violations: Violations, view: Option<MemView>) {
    // In strict mode every line of this call names the code actually returned: that of
    // the first violated error rule.
    let blocked = match rt.check.mode {
        Mode::Strict => crate::check::strict_verdict(call.hook, violations).map(|(_, code)| code),
        _ => None,
    };
    for rule in violations.iter() {
        let Some(last) = count_violation(rule, call) else {
            continue;
        };
        let verdict = match blocked {
            Some(code) => format!("returning {code} without calling the runtime"),
            None => "forwarded".to_string(),
        };
        let explained = view.and_then(|v| explain_memory(rule, call, &v));
        diag::warn!(
            "{}: {} [{}]: {}; {verdict}{}",
            call.hook.symbol(),
            rule.name(),
            describe_call(call),
            explained.as_deref().unwrap_or(rule.explain_for(call.hook)),
            if last { LAST_LINE } else { "" }
        );
    }
}

/// What a memory rule found, naming the memory (SPEC §9): `None` for other rules, or when
/// the map cannot say more than the rule's own explanation.
fn explain_memory(rule: Rule, call: &Call, view: &MemView) -> Option<String> {
    let memory = |kind: MemKind| match kind {
        MemKind::Device => "device memory",
        MemKind::Pinned => "pinned host memory (aclrtMallocHost)",
        MemKind::Registered => "registered host memory (aclrtHostRegister)",
        MemKind::Pageable => "pageable host memory",
        MemKind::Unknown => "memory of unknown location",
    };
    let kind = |k: i32| match crate::abi::types::decode_kind(call.api, k) {
        crate::abi::types::Kind::Named(name) => name.to_string(),
        crate::abi::types::Kind::Unknown(raw) => raw.to_string(),
    };
    let sides = format!(
        "src={:#x} is {} and dst={:#x} {}",
        call.src,
        memory(view.src),
        call.dst,
        memory(view.dst)
    );
    match rule {
        Rule::Location => {
            let row = crate::check::table_row(view)?;
            let accepted: Vec<String> = row.accepted.iter().map(|k| kind(*k)).collect();
            Some(format!(
                "{sides}: between them the runtime accepts {} (or DEFAULT), not {}: it rejects \
                 the copy with 107000",
                accepted.join(" or "),
                kind(call.kind)
            ))
        }
        Rule::Direction => {
            let forced = crate::check::table_row(view)?.forced?;
            Some(format!(
                "{sides}: between them the runtime copies {} whatever kind is passed (here {}): \
                 CANN 8.x corrects it silently, older runtimes return 107000",
                kind(forced),
                kind(call.kind)
            ))
        }
        Rule::Bounds => {
            let past = |name: &str, ptr: usize, len: u64, alloc: Option<(u64, u64)>| {
                let (start, size) = alloc?;
                let over = (ptr as u64)
                    .saturating_add(len)
                    .checked_sub(start.saturating_add(size))
                    .filter(|n| *n > 0)?;
                Some(format!(
                    "the {len} bytes at {name}={ptr:#x} run {over} bytes past the end of its \
                     {size}-byte allocation at {start:#x}"
                ))
            };
            let set = call.hook.class() == Class::SetAsync;
            let dst_len = if set {
                call.count
            } else {
                crate::check::extent(call, call.dest_max)
            };
            let dst_name = if set { "devPtr" } else { "dst" };
            let mut parts = Vec::new();
            parts.extend(past(dst_name, call.dst, dst_len, view.dst_alloc));
            if !set {
                let src_len = crate::check::extent(call, call.spitch);
                parts.extend(past("src", call.src, src_len, view.src_alloc));
            }
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        Rule::Freed => {
            let freed = |name: &str, ptr: usize, flagged: bool| {
                let a = crate::memmap::freed_alloc(ptr as u64).filter(|_| flagged)?;
                Some(format!(
                    "{name}={ptr:#x} lies in the {}-byte allocation at {:#x} from {}, freed \
                     since (no allocation has reused it)",
                    a.size,
                    a.start,
                    Hook::from_index(a.hook).map_or("?", Hook::symbol)
                ))
            };
            let mut parts = Vec::new();
            parts.extend(freed("dst", call.dst, view.dst_freed));
            if call.hook.class() != Class::SetAsync {
                parts.extend(freed("src", call.src, view.src_freed));
            }
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        _ => None,
    }
}

/// Ends the last line printed for a rule.
const LAST_LINE: &str = " (further occurrences of this rule are counted silently)";

/// Counts one violation of `rule` by `call`: `Some(last)` when its line is to be printed
/// (`last`: the final one printed for this rule), `None` when it is counted silently.
fn count_violation(rule: Rule, call: &Call) -> Option<bool> {
    let n = VIOLATIONS[rule as usize].fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        if let Some(mut first) = FIRST_VIOLATION.lock_for(Duration::from_millis(100)) {
            first[rule as usize].get_or_insert(*call);
        }
    }
    (n < WARN_LIMIT && diag::enabled(diag::Level::Warn)).then_some(n + 1 == WARN_LIMIT)
}

/// Counts and reports a `pageable` copy once it returned: which host buffer is pageable,
/// how long the runtime kept the host waiting (`blocked_ns`, `None` when the call was not
/// forwarded and `ret` came from the shim), and what to change.
#[cold]
pub fn note_pageable(call: &Call, view: Option<MemView>, ret: i32, blocked_ns: Option<u64>) {
    if let Some(ns) = blocked_ns {
        PAGEABLE_BLOCKED_NS.fetch_add(ns, Ordering::Relaxed);
    }
    let Some(last) = count_violation(Rule::Pageable, call) else {
        return;
    };
    let (src, dst) = view.map_or((false, false), |v| {
        (v.src == MemKind::Pageable, v.dst == MemKind::Pageable)
    });
    let buffer = match (src, dst) {
        (true, true) => format!("src={:#x} and dst={:#x} are", call.src, call.dst),
        (false, true) => format!("dst={:#x} is", call.dst),
        _ => format!("src={:#x} is", call.src),
    };
    let what = match blocked_ns {
        Some(ns) => format!(
            "so the runtime synchronized the stream and copied synchronously: this \
             asynchronous copy blocked the host for {}",
            Nanos(ns)
        ),
        None => "so the runtime would synchronize the stream and copy synchronously, \
                 blocking the host"
            .to_string(),
    };
    let verdict = match blocked_ns {
        Some(_) => "forwarded".to_string(),
        None => format!("returning {ret} without calling the runtime"),
    };
    diag::warn!(
        "{}: pageable [{}]: the host buffer {buffer} pageable memory (neither from \
         aclrtMallocHost nor registered), {what}; allocate the buffer with aclrtMallocHost \
         or register it with aclrtHostRegister; {verdict}{}",
        call.hook.symbol(),
        describe_call(call),
        if last { LAST_LINE } else { "" }
    );
}

/// A duration in nanoseconds, shown in the largest unit that keeps it above 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nanos(pub u64);

impl std::fmt::Display for Nanos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ns = self.0;
        match ns {
            0..1_000 => write!(f, "{ns} ns"),
            1_000..1_000_000 => write!(f, "{:.1} us", ns as f64 / 1e3),
            1_000_000..1_000_000_000 => write!(f, "{:.2} ms", ns as f64 / 1e6),
            _ => write!(f, "{:.2} s", ns as f64 / 1e9),
        }
    }
}

/// A call's arguments as one short line, under the function's own parameter names.
pub fn describe_call(c: &Call) -> String {
    match (c.api, c.hook.class()) {
        (_, Class::Wait) => match c.hook {
            Hook::AclrtSynchronizeEvent => format!("event={:#x}", c.event),
            Hook::AclrtSynchronizeDevice => String::new(),
            Hook::AclrtSynchronizeStreamWithTimeout => {
                format!("stream={:#x} timeout={}", c.stream, c.value)
            }
            _ => format!("stream={:#x}", c.stream),
        },
        (Api::Acl, Class::SetAsync) => format!(
            "devPtr={:#x} maxCount={} value={} count={} stream={:#x}",
            c.dst, c.dest_max, c.value, c.count, c.stream
        ),
        (Api::Acl, Class::Copy2dAsync | Class::Copy2dSync) => format!(
            "dst={:#x} dpitch={} src={:#x} spitch={} width={} height={} kind={}{}",
            c.dst,
            c.dest_max,
            c.src,
            c.spitch,
            c.count,
            c.height,
            c.kind,
            if c.hook.class().is_async() {
                format!(" stream={:#x}", c.stream)
            } else {
                String::new()
            }
        ),
        (Api::Acl, Class::CopySync) => format!(
            "dst={:#x} destMax={} src={:#x} count={} kind={}",
            c.dst, c.dest_max, c.src, c.count, c.kind
        ),
        (Api::Hccl, _) if c.hook == Hook::HcclD2DMemcpyAsync => format!(
            "dispatcher={:#x} dst={:#x} destMax={} src={:#x} count={} stream={:#x} \
             remoteUserRank={} linkType={}",
            c.dispatcher, c.dst, c.dest_max, c.src, c.count, c.stream, c.remote_rank, c.link
        ),
        (Api::Acl, _) => format!(
            "dst={:#x} destMax={} src={:#x} count={} kind={} stream={:#x}",
            c.dst, c.dest_max, c.src, c.count, c.kind, c.stream
        ),
        (Api::Hccl, _) => format!(
            "dispatcher={:#x} dst={:#x} destMax={} src={:#x} count={} kind={} stream={:#x} \
             remoteUserRank={} linkType={}",
            c.dispatcher,
            c.dst,
            c.dest_max,
            c.src,
            c.count,
            c.kind,
            c.stream,
            c.remote_rank,
            c.link
        ),
    }
}

/// Exit summaries: violations by rule (count and first call) and injected faults.
pub(super) fn summarise() {
    for rule in RULES {
        let n = VIOLATIONS[rule as usize].load(Ordering::Relaxed);
        if n == 0 {
            continue;
        }
        let first = FIRST_VIOLATION
            .lock_for(Duration::from_millis(100))
            .and_then(|f| f[rule as usize]);
        let suppressed = n.saturating_sub(WARN_LIMIT);
        let blocked = PAGEABLE_BLOCKED_NS.load(Ordering::Relaxed);
        diag::warn!(
            "summary: rule {} violated {n} time{}{}{}; first: {}",
            rule.name(),
            if n == 1 { "" } else { "s" },
            if suppressed > 0 {
                format!(" ({suppressed} not shown)")
            } else {
                String::new()
            },
            if rule == Rule::Pageable && blocked > 0 {
                format!(", blocking the host for {} in all", Nanos(blocked))
            } else {
                String::new()
            },
            first.map_or_else(
                || "?".to_string(),
                |c| format!("{} {}", c.hook.symbol(), describe_call(&c))
            )
        );
    }
    let injected: Vec<String> = TaskKind::NAMES
        .iter()
        .zip(&INJECTED)
        .filter_map(|(name, n)| {
            let n = n.load(Ordering::Relaxed);
            (n > 0).then(|| format!("{n} {name}"))
        })
        .collect();
    if !injected.is_empty() {
        diag::warn!(
            "summary: injected faults: {} (seed {})",
            injected.join(", "),
            seed()
        );
    }
}

/// Where an allocation lives, for the leak summary.
fn location_name(location: crate::memmap::Location) -> String {
    match location {
        crate::memmap::Location::Device(id) => format!("device {id}"),
        crate::memmap::Location::Pinned => "pinned host".to_string(),
        crate::memmap::Location::Registered => "registered host".to_string(),
    }
}

/// The leak summary as the `npushim_leaks` metadata's args; `untracked` allocations (the
/// map was full) may be missing from it.
pub(super) fn leaks_json(leaks: &[crate::memmap::LeakSummary], untracked: u64) -> String {
    let mut j = trace::json::Json::default();
    j.raw("{\"leaks\":[");
    for (i, leak) in leaks.iter().enumerate() {
        if i > 0 {
            j.raw(",");
        }
        j.raw("{\"location\":");
        j.string(&location_name(leak.location));
        j.raw(",\"count\":");
        j.u64(leak.count);
        j.raw(",\"bytes\":");
        j.u64(leak.bytes);
        j.raw(",\"largest\":{\"ptr\":");
        j.string(&format!("{:#x}", leak.largest.start));
        j.raw(",\"size\":");
        j.u64(leak.largest.size);
        j.raw(",\"call\":");
        j.string(Hook::from_index(leak.largest.hook).map_or("?", Hook::symbol));
        j.raw(",\"tid\":");
        j.u64(leak.largest.tid.max(0) as u64);
        j.raw("}}");
    }
    j.raw("],\"untracked\":");
    j.u64(untracked);
    j.raw("}");
    String::from_utf8(j.buf).unwrap_or_default()
}

/// One line per location with allocations never freed.
pub(super) fn report_leaks(leaks: &[crate::memmap::LeakSummary]) {
    for leak in leaks {
        diag::warn!(
            "leak summary: {} {} allocation{} never freed, {} bytes; the largest, {} bytes at \
             {:#x}, came from {} on thread {}",
            leak.count,
            location_name(leak.location),
            if leak.count == 1 { " was" } else { "s were" },
            leak.bytes,
            leak.largest.size,
            leak.largest.start,
            Hook::from_index(leak.largest.hook).map_or("?", Hook::symbol),
            leak.largest.tid
        );
    }
    let untracked = crate::memmap::untracked();
    if untracked > 0 {
        diag::warn!(
            "{untracked} allocations were not tracked (the memory map was full or out of \
             memory): copies touching them were classified as unknown"
        );
    }
}

/// `pthread_atfork` child handler: the child counts its own calls.
pub(super) fn fork_child() {
    for c in VIOLATIONS.iter().chain(&INJECTED) {
        c.store(0, Ordering::Relaxed);
    }
    PAGEABLE_BLOCKED_NS.store(0, Ordering::Relaxed);
    FORKED_AT.store(trace::clock::now(), Ordering::Relaxed);
    // SAFETY: only this thread exists in the child; no guard of this lock is live here.
    unsafe { FIRST_VIOLATION.force_unlock() };
    if let Some(mut first) = FIRST_VIOLATION.try_lock() {
        *first = [None; RULES.len()];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_in_the_largest_unit_above_one() {
        let shown: Vec<String> = [0, 999, 1_000, 41_250, 999_949, 1_000_000, 12_345_678]
            .into_iter()
            .chain([999_994_999, 1_000_000_000, 75_500_000_000])
            .map(|ns| Nanos(ns).to_string())
            .collect();
        assert_eq!(
            shown,
            [
                "0 ns",
                "999 ns",
                "1.0 us",
                "41.2 us",
                "999.9 us",
                "1.00 ms",
                "12.35 ms",
                "999.99 ms",
                "1.00 s",
                "75.50 s"
            ]
        );
    }
}
