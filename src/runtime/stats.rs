//! The counters behind the diagnostics and the exit summaries: violations by rule (with the
//! first offending call of each), injected faults by task, the rate-limited lines printed
//! as they happen, and the summaries and leak report printed at exit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Runtime;
use super::lineage::seed;
use crate::abi::types::{Api, Call, Class, Hook};
use crate::check::{Mode, RULES, Violations};
use crate::fault::{Decision, TaskKind};
use crate::sync::FlagLock;
use crate::trace::json::Out;
use crate::{diag, trace};

/// Per-rule violation counts, and the first offending call of each rule.
static VIOLATIONS: [AtomicU64; RULES.len()] = [const { AtomicU64::new(0) }; RULES.len()];
static FIRST_VIOLATION: FlagLock<[Option<Call>; RULES.len()]> = FlagLock::new([None; RULES.len()]);
/// Injected faults by task (`off` stays 0: it injects nothing).
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
pub fn note_violations(rt: &Runtime, call: &Call, violations: Violations) {
    // In strict mode every line of this call names the code actually returned: that of
    // the first violated error rule.
    let blocked = match rt.check.mode {
        Mode::Strict => crate::check::strict_verdict(call.hook, violations).map(|(_, code)| code),
        _ => None,
    };
    for rule in violations.iter() {
        let n = VIOLATIONS[rule as usize].fetch_add(1, Ordering::Relaxed);
        if n == 0 {
            if let Some(mut first) = FIRST_VIOLATION.lock_for(Duration::from_millis(100)) {
                first[rule as usize].get_or_insert(*call);
            }
        }
        if n < WARN_LIMIT {
            let verdict = match blocked {
                Some(code) => format!("returning {code} without calling the runtime"),
                None => "forwarded".to_string(),
            };
            diag::warn!(
                "{}: {} [{}]: {}; {verdict}{}",
                call.hook.symbol(),
                rule.name(),
                describe_call(call),
                rule.explain_for(call.hook),
                if n + 1 == WARN_LIMIT {
                    " (further occurrences of this rule are counted silently)"
                } else {
                    ""
                }
            );
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
        diag::warn!(
            "summary: rule {} violated {n} time{}{}; first: {}",
            rule.name(),
            if n == 1 { "" } else { "s" },
            if suppressed > 0 {
                format!(" ({suppressed} not shown)")
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
    // SAFETY: only this thread exists in the child; no guard of this lock is live here.
    unsafe { FIRST_VIOLATION.force_unlock() };
    if let Some(mut first) = FIRST_VIOLATION.try_lock() {
        *first = [None; RULES.len()];
    }
}
