//! The one pipeline both APIs share: re-entry guard → check → fault → forward → record.
//!
//! Everything here runs on the program's thread for every call, so it allocates nothing,
//! formats nothing, takes no lock shared with other threads and does no I/O (diagnostics for
//! the first violations of a rule are the cold exception). The shim's own stages run inside
//! [`guarded`]: a panic there makes the call a plain forward (the shim fails open). The
//! forward itself, and a `delay` fault's sleep, run outside it, so a thread cancelled there
//! unwinds through the shim exactly as it would without it.

use std::cell::Cell;
use std::ffi::c_int;
use std::time::Duration;

use crate::abi::types::Call;
use crate::boundary::guarded;
use crate::check::{self, MemView, Mode, RuleSet};
use crate::fault::Decision;
use crate::memmap;
use crate::runtime::{self, Runtime};
use crate::trace::record::{FLAG_EFFECTIVE_KIND, FLAG_SYNC, FaultTag, Record, mem_code};
use crate::trace::{self, clock};

/// Set while the thread is in the shim's own code (not while it is in the real function).
const BUSY: u32 = 1;

/// This thread's place in the shim, as one word: the depth (how many intercepted calls the
/// thread is inside, i.e. forwarding from) shifted left once, and [`BUSY`] while the thread
/// runs the shim's own code. The trace ring's thread-local keeps it (destructor-free, so
/// usable during thread exit and from atexit handlers), so that a traced call finds its
/// place and its ring with one lookup. Looked up once per call (each lookup from a shared
/// library is a `__tls_get_addr` call); `None` while the thread's locals are being torn down.
#[inline]
fn place_cell() -> Option<&'static Cell<u32>> {
    trace::ring::local().map(trace::ring::Local::place)
}

/// What a call needs (decided before anything is spilled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Nothing: forward at once (no trace being written, no fault rule, no broken rule).
    Forward,
    /// A span: classify the pointers when the map is on, then forward between two clock
    /// reads (one level deeper if the hook nests), and record, skipping the pipeline's fault stage (the trace
    /// is running; no fault rule is active; the arguments break no rule).
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
    let traced = match trace::state() {
        trace::Phase::Off => false,
        trace::Phase::Running => true,
        trace::Phase::Other => return Route::Pipeline,
    };
    let checking = rt.check.mode != Mode::Off;
    if runtime::faults_active()
        || call.hook.class().manages_memory()
        || (checking && !check::clean_for(call, rt.check.rules))
    {
        Route::Pipeline
    } else if traced {
        Route::Record
    } else {
        Route::Forward
    }
}

/// What the checks found for one call, with where its memory lives (SPEC §4, §9).
#[derive(Clone, Copy, Debug)]
struct Judged {
    violations: RuleSet,
    view: Option<MemView>,
    effective_kind: Option<i32>,
    sync: bool,
}

impl Judged {
    const CLEAN: Judged = Judged {
        violations: RuleSet::EMPTY,
        view: None,
        effective_kind: None,
        sync: false,
    };
}

/// Where a copy's two pointers live (the memory map's lock-free lookup).
#[inline(always)]
fn memview(call: &Call) -> MemView {
    let (src, dst) = memmap::sides(call.src as u64, call.dst as u64);
    MemView {
        src: src.kind,
        dst: dst.kind,
        src_alloc: src.alloc,
        dst_alloc: dst.alloc,
        src_freed: src.freed,
        dst_freed: dst.freed,
    }
}

/// Checks `call` against the rules in force, with the memory map when it is on.
#[inline(always)]
fn judge(call: &Call, rt: &Runtime) -> Judged {
    let rules = if rt.check.mode == Mode::Off {
        RuleSet::EMPTY
    } else {
        rt.check.rules
    };
    if memmap::is_enabled() && call.hook.class().moves_memory() {
        let view = memview(call);
        let m = check::check_with_memory(call, &view, rules);
        return Judged {
            violations: m.violations,
            view: Some(view),
            effective_kind: m.effective_kind,
            sync: m.sync,
        };
    }
    Judged {
        violations: if rules.is_empty() {
            RuleSet::EMPTY
        } else {
            check::check(call, rules)
        },
        ..Judged::CLEAN
    }
}

/// [`Route::Record`]: classifies the call's pointers when the map is on, then forwards and
/// records the span. `None` (before forwarding) when the memory map finds a rule broken, or when the thread
/// cannot keep its depth (its locals are gone, or a signal handler interrupted the shim's
/// own code on it), so that the call takes the pipeline. A traced call reads its depth, and
/// one whose real function may call other hooked functions ([`crate::abi::types::Hook::nests`]) forwards one
/// level deeper, so such a nested call is recorded at depth 1 from the process's first
/// call on. Recording cannot change the result: a
/// panic in it is caught after the real call returned. (Not [`guarded`]: this path's only
/// cancellation points are in its cold branches, which hold cancellation off themselves,
/// and this path is the one every traced call takes.)
#[inline(always)]
pub fn forward_and_record(mut call: Call, forward: impl FnOnce() -> c_int) -> Option<c_int> {
    let judged = if memmap::is_enabled() && call.hook.class().moves_memory() {
        let judged = judge(&call, runtime::get_initialised()?);
        if !judged.violations.is_empty() {
            return None;
        }
        judged
    } else {
        Judged::CLEAN
    };
    let local = trace::ring::local()?;
    let cell = local.place();
    let saved = cell.get();
    if saved & BUSY != 0 {
        return None;
    }
    call.depth = saved >> 1;
    let restore = call.hook.nests().then(|| {
        cell.set((call.depth + 1) << 1);
        Restore { cell, saved }
    });
    let start = clock::now();
    let timing = device_begin(&call, &judged);
    let ret = forward();
    device_end(timing, &call, ret, &judged, start);
    let end = clock::now();
    drop(restore);
    device_after_wait(&call, ret);
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        trace::record_in(
            Some(local),
            &to_record(&call, start, end, ret, &judged, Decision::Forward),
        );
    }));
    Some(ret)
}

/// What the guarded stages decided for one call.
struct Plan<F> {
    /// The real function (`None`: missing, or not needed because of a verdict).
    real: Option<F>,
    /// The code to return without forwarding (strict check, `return` or `skip` fault).
    verdict: Option<c_int>,
    decision: Decision,
    judged: Judged,
    /// Clock at entry, when the call is traced.
    start: Option<u64>,
}

/// Restores the thread's place when the call ends, however it ends (a forced unwind from a
/// cancellation in the real function included).
struct Restore<'a> {
    cell: &'a Cell<u32>,
    saved: u32,
}

impl Drop for Restore<'_> {
    #[inline]
    fn drop(&mut self) {
        self.cell.set(self.saved);
    }
}

/// Runs one call through the pipeline. `resolve` finds the real function (at most once per
/// call, inside the boundary); `forward` calls it with the caller's arguments; `missing` is
/// what the call returns when it cannot be found. Kept out of line so that the exports'
/// fast paths stay short.
#[inline(never)]
pub fn call<F: Copy>(
    mut call: Call,
    resolve: fn() -> Option<F>,
    forward: impl FnOnce(F) -> c_int,
    missing: c_int,
) -> c_int {
    let Some(cell) = place_cell() else {
        // The thread's locals are gone (it is exiting): forward, nothing else.
        return bare(resolve, forward, missing);
    };
    let saved = cell.get();
    if saved & BUSY != 0 {
        // Re-entered from the shim's own code on this thread: a signal handler interrupted
        // it. Never wait on, or touch, the state it interrupted.
        trace::note_reentered();
        return bare(resolve, forward, missing);
    }
    cell.set(saved | BUSY);
    let _restore = Restore { cell, saved };
    call.depth = saved >> 1;

    let plan = guarded(|| prepare(&call, resolve)).flatten();
    let Some(plan) = plan else {
        // Not initialised yet by another thread, a pure pass-through, or a bug in a stage.
        cell.set(saved);
        return bare(resolve, forward, missing);
    };
    if let Decision::Delay(ns) = plan.decision {
        // Outside the boundary: a cancellation during the delay acts here, as it would in a
        // slow runtime call.
        std::thread::sleep(Duration::from_nanos(ns));
    }
    let mut timing = None;
    let ret = match (plan.verdict, plan.real) {
        (Some(code), _) => code,
        (None, Some(f)) => {
            if plan.start.is_some() {
                timing = device_begin(&call, &plan.judged);
            }
            let depth = call.depth + u32::from(call.hook.nests());
            cell.set(depth << 1);
            let ret = forward(f);
            cell.set(call.depth << 1 | BUSY);
            ret
        }
        (None, None) => missing,
    };
    device_end(timing, &call, ret, &plan.judged, plan.start.unwrap_or(0));
    let end = clock::now();
    device_after_wait(&call, ret);
    if ret == 0 && plan.verdict.is_none() && call.hook.class().manages_memory() {
        if let Some(Some(ptr)) = guarded(|| note_memory(&call, end)) {
            call.dst = ptr;
        }
    }
    if let Some(start) = plan.start {
        let _ = guarded(|| {
            crate::boundary::debug_panic(crate::boundary::Stage::Record);
            trace::record(&to_record(
                &call,
                start,
                end,
                ret,
                &plan.judged,
                plan.decision,
            ))
        });
    }
    ret
}

/// With the device timeline on (SPEC §10), starts timing a copy about to be forwarded.
#[inline(always)]
fn device_begin(call: &Call, judged: &Judged) -> Option<crate::device::Timing> {
    if !crate::device::enabled()
        || call.api != crate::abi::types::Api::Acl
        || !call.hook.class().is_async()
    {
        return None;
    }
    guarded(|| crate::device::begin(call, judged.sync)).flatten()
}

/// Hands a timed copy to the device timeline once the real call returned (before the
/// span's end is read: the host span covers both event records, so a copy's device time on
/// an idle stream never exceeds its host span plus the copy itself).
#[inline(always)]
fn device_end(
    timing: Option<crate::device::Timing>,
    call: &Call,
    ret: c_int,
    judged: &Judged,
    start: u64,
) {
    if let Some(t) = timing {
        let kind = judged.effective_kind;
        let _ = guarded(|| crate::device::end(t, call, ret, kind, start));
    }
}

/// After a host wait returned, lets the device timeline read back what completed.
#[inline(always)]
fn device_after_wait(call: &Call, ret: c_int) {
    if ret == 0 && call.hook.class() == crate::abi::types::Class::Wait && crate::device::enabled() {
        let _ = guarded(|| crate::device::after_wait(call));
    }
}

/// After a successful allocation, free, registration or unregistration: the memory map
/// learns of it (SPEC §9). Returns the allocated pointer, read from the out-pointer the
/// program passed (which the real function has just written).
#[cold]
fn note_memory(call: &Call, now: u64) -> Option<usize> {
    use crate::abi::types::Class;
    if !memmap::is_enabled() && !matches!(call.hook.class(), Class::AllocDevice | Class::AllocHost)
    {
        return None;
    }
    let tid = crate::trace::ring::thread_id();
    match call.hook.class() {
        Class::AllocDevice | Class::AllocHost => {
            if call.out == 0 {
                return None;
            }
            // SAFETY: `out` is the non-null `void **` the program passed to an allocation
            // that just succeeded, which wrote the new pointer there; read as an integer.
            let ptr = unsafe { (call.out as *const usize).read_unaligned() };
            let location = if call.hook.class() == Class::AllocHost {
                memmap::Location::Pinned
            } else {
                memmap::Location::Device(runtime::current_device())
            };
            if memmap::is_enabled() {
                memmap::insert(ptr as u64, call.count, location, now, tid, call.hook as u8);
            }
            Some(ptr)
        }
        Class::Register => {
            memmap::insert(
                call.dst as u64,
                call.count,
                memmap::Location::Registered,
                now,
                tid,
                call.hook as u8,
            );
            None
        }
        Class::Free | Class::Unregister => {
            memmap::remove(call.dst as u64);
            None
        }
        _ => None,
    }
}

/// Forwards with nothing else (the fallback of every path that cannot run the pipeline).
/// The lookup, if the function was not resolved yet, is guarded too: a second panic there
/// returns the "missing" code instead of unwinding into the program.
#[cold]
fn bare<F>(resolve: fn() -> Option<F>, forward: impl FnOnce(F) -> c_int, missing: c_int) -> c_int {
    match guarded(resolve).flatten() {
        Some(f) => forward(f),
        None => missing,
    }
}

/// The guarded stages: initialisation, checks, fault decision, lookup. `None` when the
/// call should simply be forwarded.
#[inline]
fn prepare<F>(call: &Call, resolve: fn() -> Option<F>) -> Option<Plan<F>> {
    let rt = runtime::get()?;
    if runtime::pass_through() {
        return None;
    }
    let start = trace::active().then(clock::now);
    crate::boundary::debug_panic(crate::boundary::Stage::Check);
    let judged = judge(call, rt);
    let violations = judged.violations;
    let mut verdict = None;
    if !violations.is_empty() {
        runtime::note_violations(rt, call, violations);
        if rt.check.mode == Mode::Strict {
            verdict = check::strict_verdict(call.hook, violations).map(|(_, code)| code);
        }
    }
    let mut decision = Decision::Forward;
    if verdict.is_none() && runtime::faults_active() {
        decision = runtime::decide(call);
        match decision {
            Decision::Return(code) => verdict = Some(code),
            Decision::Skip => verdict = Some(0),
            Decision::Abort => abort(call, start, &judged),
            Decision::Delay(_) | Decision::Forward => {}
        }
    }
    let real = if verdict.is_none() { resolve() } else { None };
    if start.is_some() {
        trace::prepare_thread();
    }
    Some(Plan {
        real,
        verdict,
        decision,
        judged,
        start,
    })
}

#[inline]
fn to_record(
    call: &Call,
    start: u64,
    end: u64,
    ret: c_int,
    judged: &Judged,
    decision: Decision,
) -> Record {
    let (fault, fault_arg) = FaultTag::of(decision);
    let mut flags = 0;
    if judged.sync {
        flags |= FLAG_SYNC;
    }
    if judged.effective_kind.is_some() {
        flags |= FLAG_EFFECTIVE_KIND;
    }
    Record {
        hook: call.hook as u8,
        depth: call.depth.min(u8::MAX as u32) as u8,
        fault: fault as u8,
        flags,
        mem: judged.view.map_or(0, |v| {
            // A set has no source.
            let src = if call.hook.class() == crate::abi::types::Class::SetAsync {
                0
            } else {
                mem_code(v.src)
            };
            src | mem_code(v.dst) << 4
        }),
        effective_kind: judged.effective_kind.unwrap_or(0),
        violations: judged.violations.0,
        ret,
        kind: call.kind,
        start,
        end,
        dst: call.dst as u64,
        src: call.src as u64,
        stream: call.stream as u64,
        dispatcher: call.dispatcher as u64,
        dest_max: call.dest_max,
        count: call.count,
        spitch: call.spitch,
        height: call.height,
        fault_arg,
        event: call.event as u64,
        link: call.link,
        remote_rank: call.remote_rank,
        value: call.value,
        ..Record::default()
    }
}

/// The `abort` task: record the call, get the trace onto disk, say why, abort.
#[cold]
fn abort(call: &Call, start: Option<u64>, judged: &Judged) -> ! {
    if let Some(start) = start {
        let rec = to_record(call, start, clock::now(), 0, judged, Decision::Abort);
        trace::record(&rec);
        trace::flush_now();
    }
    crate::diag::warn!(
        "injected abort in {} [{}] (seed {})",
        call.hook.symbol(),
        runtime::describe_call(call),
        runtime::seed()
    );
    // SAFETY: abort has no preconditions; aborting is exactly what the user asked for.
    unsafe { libc::abort() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::types::Api;

    fn resolve_to_42() -> Option<fn() -> c_int> {
        Some(|| 42)
    }

    #[test]
    fn a_reentered_call_is_forwarded_and_the_place_is_kept() {
        let cell = place_cell().unwrap();
        cell.set(3 << 1 | BUSY);
        let ret = call(Call::new(Api::Acl), resolve_to_42, |f| f(), -1);
        assert_eq!(ret, 42);
        assert_eq!(
            cell.get(),
            3 << 1 | BUSY,
            "the interrupted state is untouched"
        );
        cell.set(0);
    }

    #[test]
    fn a_panicking_lookup_in_the_fallback_returns_the_missing_code() {
        fn panics() -> Option<fn() -> c_int> {
            panic!("a bug in the lookup")
        }
        assert_eq!(bare(panics, |f| f(), 200_001), 200_001);
        assert_eq!(bare(resolve_to_42, |f| f(), 200_001), 42);
    }
}
