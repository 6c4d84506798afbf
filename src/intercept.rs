//! The one pipeline both APIs share: depth guard → check → fault → forward → record.
//!
//! Everything here runs on the program's thread for every call, so it allocates nothing,
//! formats nothing, takes no lock shared with other threads and does no I/O (diagnostics for
//! the first violations of a rule are the cold exception). A panic anywhere in the pipeline
//! is caught and the call is forwarded unchanged: the shim fails open.

use std::cell::Cell;
use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::abi::types::{Api, Call};
use crate::check::{self, Mode, RuleSet};
use crate::fault::Decision;
use crate::runtime::{self, Runtime};
use crate::trace::{self, clock, record::FaultTag, record::Record};

thread_local! {
    /// How many intercepted calls this thread is inside (destructor-free: usable during
    /// thread exit and from atexit handlers).
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

#[cfg(test)]
fn depth() -> u32 {
    DEPTH.try_with(Cell::get).unwrap_or(0)
}

fn set_depth(d: u32) {
    let _ = DEPTH.try_with(|c| c.set(d));
}

/// Set (once, for good) by the first `HcclMemcpyAsync`: only a real HCCL copy re-enters the
/// shim (its nested `aclrtMemcpyAsync`), so until then every call is at depth 0 and the
/// thread-local need not be looked up. The flag is written once and only read afterwards,
/// so it costs the hot path one load of a line that is never contended.
static NESTING: AtomicBool = AtomicBool::new(false);

/// This thread's depth cell, looked up once per call (each lookup from a shared library is
/// a `__tls_get_addr` call); `None` while the thread's locals are being torn down.
#[inline]
fn depth_cell() -> Option<&'static Cell<u32>> {
    // SAFETY: the reference is only used during the current call, on this thread, while
    // the thread is alive; `DEPTH` has no destructor, so its storage outlives every call.
    DEPTH
        .try_with(|c| unsafe { &*(c as *const Cell<u32>) })
        .ok()
}

/// What an `aclrtMemcpyAsync` call needs (decided before anything is spilled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Nothing: forward at once (no trace being written, no fault rule, no broken rule).
    Forward,
    /// Only a span: forward between two clock reads and record, skipping the pipeline's
    /// check, fault and nesting stages (the trace is running; no fault rule is active; the
    /// call cannot be nested and breaks no rule).
    Record,
    /// The whole pipeline.
    Pipeline,
}

/// Routes `call`: pure comparisons of integers, cannot panic.
#[inline(always)]
pub fn route(call: &Call) -> Route {
    let Some(rt) = runtime::get_initialised() else {
        return Route::Pipeline;
    };
    let plain_route = match trace::state() {
        trace::Phase::Off => Route::Forward,
        trace::Phase::Running => Route::Record,
        trace::Phase::Other => return Route::Pipeline,
    };
    if !runtime::faults_active()
        && call.api == Api::Acl
        && !NESTING.load(Ordering::Relaxed)
        && (rt.check.mode == Mode::Off || check::clean_for(call, rt.check.rules))
    {
        plain_route
    } else {
        Route::Pipeline
    }
}

/// [`Route::Record`]: forwards, then records the span. Recording cannot change the
/// result: a panic in it is caught after the real call returned.
#[inline(always)]
pub fn forward_and_record(call: &Call, forward: impl FnOnce() -> c_int) -> c_int {
    let start = clock::now();
    let ret = forward();
    let end = clock::now();
    let _ = catch_unwind(AssertUnwindSafe(|| {
        trace::record(&to_record(
            call,
            start,
            end,
            ret,
            RuleSet::EMPTY,
            Decision::Forward,
        ));
    }));
    ret
}

/// Runs one call through the pipeline; `forward` calls the real function. Kept out of
/// line so that the exports' fast paths stay short.
#[inline(never)]
pub fn call(mut call: Call, mut forward: impl FnMut() -> c_int) -> c_int {
    let Some(rt) = runtime::get() else {
        return forward();
    };
    if runtime::pass_through() {
        return forward();
    }
    let cell = if call.api == Api::Hccl || NESTING.load(Ordering::Relaxed) {
        if !NESTING.load(Ordering::Relaxed) {
            NESTING.store(true, Ordering::Relaxed);
        }
        depth_cell()
    } else {
        None
    };
    call.depth = cell.map_or(0, Cell::get);
    fail_open(call.depth, forward, |forward, forwarded| {
        pipeline(rt, &call, cell, forward, forwarded)
    })
}

/// Runs `stages`, which may call `forward` at most once (recording its result in the
/// `Option`). If the stages panic, the call is forwarded anyway — unless it already was,
/// in which case the real result is returned. Either way the program gets an answer and
/// the thread's depth is restored.
#[inline]
fn fail_open<F, S>(depth: u32, mut forward: F, stages: S) -> c_int
where
    F: FnMut() -> c_int,
    S: FnOnce(&mut F, &mut Option<c_int>) -> c_int,
{
    let mut forwarded = None;
    let result = catch_unwind(AssertUnwindSafe(|| stages(&mut forward, &mut forwarded)));
    match result {
        Ok(ret) => ret,
        Err(_) => {
            set_depth(depth);
            forwarded.unwrap_or_else(forward)
        }
    }
}

#[inline]
fn pipeline(
    rt: &Runtime,
    call: &Call,
    depth: Option<&Cell<u32>>,
    forward: &mut impl FnMut() -> c_int,
    forwarded: &mut Option<c_int>,
) -> c_int {
    let tracing = trace::active();
    let start = if tracing { clock::now() } else { 0 };

    let violations = if rt.check.mode == Mode::Off {
        RuleSet::EMPTY
    } else {
        check::check(call, rt.check.rules)
    };
    let mut verdict = None;
    if !violations.is_empty() {
        runtime::note_violations(rt, call, violations);
        if rt.check.mode == Mode::Strict {
            verdict = check::strict_verdict(call.api, violations).map(|(_, code)| code);
        }
    }

    let mut decision = Decision::Forward;
    if verdict.is_none() && runtime::faults_active() {
        decision = runtime::decide(call);
        match decision {
            Decision::Return(code) => verdict = Some(code),
            Decision::Skip => verdict = Some(0),
            Decision::Delay(ns) => std::thread::sleep(Duration::from_nanos(ns)),
            Decision::Abort => abort(call, start, violations, tracing),
            Decision::Forward => {}
        }
    }

    let ret = match verdict {
        Some(code) => code,
        None => {
            if let Some(d) = depth {
                d.set(call.depth + 1);
            }
            let ret = forward();
            if let Some(d) = depth {
                d.set(call.depth);
            }
            *forwarded = Some(ret);
            ret
        }
    };

    if tracing {
        trace::record(&to_record(
            call,
            start,
            clock::now(),
            ret,
            violations,
            decision,
        ));
    }
    ret
}

#[inline]
fn to_record(
    call: &Call,
    start: u64,
    end: u64,
    ret: c_int,
    violations: RuleSet,
    decision: Decision,
) -> Record {
    let (fault, fault_arg) = FaultTag::of(decision);
    Record {
        start,
        end,
        dst: call.dst as u64,
        src: call.src as u64,
        stream: call.stream as u64,
        dispatcher: call.dispatcher as u64,
        dest_max: call.dest_max,
        count: call.count,
        fault_arg,
        kind: call.kind,
        link: call.link,
        ret,
        remote_rank: call.remote_rank,
        api: call.api as u8,
        depth: call.depth.min(u8::MAX as u32) as u8,
        violations: violations.0,
        fault: fault as u8,
    }
}

/// The `abort` task: record the call, get the trace onto disk, say why, abort.
#[cold]
fn abort(call: &Call, start: u64, violations: RuleSet, tracing: bool) -> ! {
    if tracing {
        let rec = to_record(call, start, clock::now(), 0, violations, Decision::Abort);
        trace::record(&rec);
        trace::flush_now();
    }
    crate::diag::warn!(
        "injected abort in {} [{}] (seed {})",
        call.api.symbol(),
        runtime::describe_call(call),
        runtime::seed()
    );
    // SAFETY: abort has no preconditions; aborting is exactly what the user asked for.
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_before_forwarding_still_forwards_once() {
        let mut calls = 0;
        let ret = fail_open(
            0,
            || {
                calls += 1;
                42
            },
            |_forward, _forwarded| panic!("a bug in a stage"),
        );
        assert_eq!(ret, 42);
        assert_eq!(calls, 1);
        assert_eq!(depth(), 0);
    }

    #[test]
    fn a_panic_after_forwarding_returns_the_real_result_without_calling_again() {
        let mut calls = 0;
        let ret = fail_open(
            0,
            || {
                calls += 1;
                7
            },
            |forward, forwarded| {
                set_depth(1);
                *forwarded = Some(forward());
                panic!("a bug while recording");
            },
        );
        assert_eq!(ret, 7);
        assert_eq!(calls, 1);
        assert_eq!(depth(), 0, "depth restored after the panic");
    }

    #[test]
    fn without_a_panic_the_stages_decide() {
        let ret = fail_open(0, || 1, |_f, _fw| 507_000);
        assert_eq!(ret, 507_000);
    }
}
