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
use crate::boundary::{NoCancel, caught, guarded};
use crate::check::{self, MemView, Mode, Rule, RuleSet};
use crate::fault::Decision;
use crate::memmap;
use crate::memo;
use crate::runtime::{self, Runtime};
use crate::trace::record::{FLAG_EFFECTIVE_KIND, FLAG_SYNC, FaultTag, Record, mem_code};
use crate::trace::{self, clock};

/// Set while the thread is in the shim's own code (not while it is in the real function).
const BUSY: u32 = 1;

/// The words a memoised verdict is keyed on: the epoch ([`crate::epoch`]) and every
/// argument the argument checks and the memory rules read, so that a verdict remembered
/// for these words answers for the whole route. The hook and `refs_null` ride in the
/// epoch's top byte (an epoch never reaches 2^55); the stream counts only for HCCL (whose
/// checks read it; an ACL copy loop may alternate streams). Words a hook's decoding never
/// sets come last, so that [`memo_words`] of them are compared (the first word holds the
/// hook, and every key of one hook has the same zeros after its prefix).
#[inline(always)]
fn memo_key(call: &Call, epoch: u64) -> memo::Key {
    let stream = if call.api == crate::abi::types::Api::Hccl {
        call.stream as u64
    } else {
        0
    };
    [
        epoch | (call.hook as u64) << 56 | (call.refs_null as u64) << 55,
        call.dst as u64,
        call.src as u64,
        call.count,
        call.dest_max,
        call.kind as u32 as u64 | (call.link as u32 as u64) << 32,
        call.spitch,
        call.height,
        call.dispatcher as u64,
        stream,
    ]
}

/// How many leading words of [`memo_key`] can differ between two calls of `call`'s hook.
#[inline(always)]
fn memo_words(call: &Call) -> usize {
    use crate::abi::types::Api;
    match call.api {
        Api::Hccl => 10,
        Api::Acl if call.hook.class().is_2d() => 8,
        Api::Acl => 6,
    }
}

/// What a judgement puts in the call's record, in one word (also the memo's verdict): the
/// record's `mem` byte (bits 0–7), its flags ([`FLAG_SYNC`], [`FLAG_EFFECTIVE_KIND`]; bits
/// 8–15), [`RecordBits::CLASSIFIED`] and the effective kind (bits 32–63).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RecordBits(u64);

impl RecordBits {
    /// Set once the memory map classified the call (never 0 then: a valid memo word).
    const CLASSIFIED: u64 = 1 << 16;
    /// In a memo word only: remembered untraced, so a call with the same key at the same
    /// epoch is forwarded at once ([`route`]).
    const FORWARD: u64 = 1 << 17;
    const NONE: RecordBits = RecordBits(0);

    fn classified(call: &Call, view: &MemView, effective_kind: Option<i32>, sync: bool) -> Self {
        // A set has no source.
        let src = if call.hook.class() == crate::abi::types::Class::SetAsync {
            0
        } else {
            mem_code(view.src)
        };
        let mut flags = 0;
        if sync {
            flags |= FLAG_SYNC;
        }
        if effective_kind.is_some() {
            flags |= FLAG_EFFECTIVE_KIND;
        }
        RecordBits(
            (src | mem_code(view.dst) << 4) as u64
                | (flags as u64) << 8
                | Self::CLASSIFIED
                | (effective_kind.unwrap_or(0) as u32 as u64) << 32,
        )
    }

    fn mem(self) -> u8 {
        self.0 as u8
    }

    fn flags(self) -> u8 {
        (self.0 >> 8) as u8
    }

    fn effective_kind_raw(self) -> i32 {
        (self.0 >> 32) as u32 as i32
    }

    fn effective_kind(self) -> Option<i32> {
        (self.flags() & FLAG_EFFECTIVE_KIND != 0).then_some(self.effective_kind_raw())
    }

    fn sync(self) -> bool {
        self.flags() & FLAG_SYNC != 0
    }

    /// The memo word of a clean, classified judgement.
    fn memo_word(self) -> Option<u64> {
        (self.0 & Self::CLASSIFIED != 0).then_some(self.0)
    }
}

/// The memoised judgement of `call` at `epoch`, if this thread judged it clean lately.
#[cfg(test)]
fn memoised(call: &Call, epoch: u64) -> Option<Judged> {
    memoised_word(call, epoch).map(Judged::from_memo)
}

/// Remembers that `call` was judged clean at `epoch`; `untraced`: with the trace off, so
/// that the same call at the same epoch is forwarded at once.
#[inline]
fn memoise(call: &Call, epoch: u64, judged: &Judged, untraced: bool) {
    if let Some(verdict) = judged.bits.memo_word() {
        let forward = if untraced { RecordBits::FORWARD } else { 0 };
        memo::remember(&memo_key(call, epoch), verdict | forward);
    }
}

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

/// The thread's words and its place as it was, with the call's depth set from it; `None`
/// when its locals are gone or a signal handler interrupted the shim's own code on it.
#[inline(always)]
fn take_place(call: &mut Call) -> Option<(&'static trace::ring::Local, u32)> {
    let local = trace::ring::local()?;
    let saved = local.place().get();
    if saved & BUSY != 0 {
        return None;
    }
    call.depth = saved >> 1;
    Some((local, saved))
}

/// What a call needs (decided before anything is spilled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Nothing: forward at once (no trace being written, no fault rule, no broken rule,
    /// no memory rule to apply, or this thread's memo says the call is clean).
    Forward,
    /// The memory map's rules, then, when the trace is running, a span: forward (between
    /// two clock reads if traced, one level deeper if the hook nests), skipping the
    /// pipeline's fault stage (no fault rule is active; the arguments break no rule).
    /// Carries this thread's memo word for the call (0: none, judge it).
    Record(u64),
    /// An allocation, free or registration (functions with no argument rule) while no
    /// fault rule is active: the memory map's bookkeeping around the forward and, when the
    /// trace is running, a span ([`forward_memory`]).
    Memory,
    /// The whole pipeline.
    Pipeline,
}

/// Routes `call`: pure comparisons of integers, cannot panic.
#[inline(always)]
pub fn route(call: &Call) -> Route {
    // A copy loop repeats its call: this thread's last clean verdicts, if one is this
    // call's at the current epoch, are all there is to know (read first, while the
    // arguments are still in registers). One remembered untraced answers for the whole
    // route: the epoch moves with every setting the route reads below.
    let memo = if classifies(call) {
        memoised_word(call, crate::epoch::now())
    } else {
        None
    };
    if memo.is_some_and(|w| w & RecordBits::FORWARD != 0) {
        return Route::Forward;
    }
    let Some(rt) = runtime::get_initialised() else {
        return Route::Pipeline;
    };
    let traced = match trace::state() {
        trace::Phase::Off => false,
        trace::Phase::Running => true,
        trace::Phase::Other => return Route::Pipeline,
    };
    let checking = rt.check.mode != Mode::Off;
    if runtime::faults_active() || (checking && !check::clean_for(call, rt.check.rules)) {
        return Route::Pipeline;
    }
    if call.hook.class().manages_memory() {
        return Route::Memory;
    }
    if traced || memory_rules_apply(call, rt) {
        Route::Record(memo.unwrap_or(0))
    } else {
        Route::Forward
    }
}

/// This thread's memo word for `call` at `epoch`, if any.
#[inline(always)]
fn memoised_word(call: &Call, epoch: u64) -> Option<u64> {
    memo::lookup(&memo_key(call, epoch), memo_words(call))
}

/// Whether the memory map classifies `call` (its record then says what memory it moved).
#[inline(always)]
fn classifies(call: &Call) -> bool {
    call.hook.class().moves_memory() && memmap::is_enabled()
}

/// Whether `call` must be classified for a memory rule even when nothing is traced.
#[inline(always)]
fn memory_rules_apply(call: &Call, rt: &Runtime) -> bool {
    rt.check.mode != Mode::Off && (rt.check.rules.0 & RuleSet::MEMORY.0) != 0 && classifies(call)
}

/// What the checks found for one call, with where its memory lives (SPEC §4, §9).
#[derive(Clone, Copy, Debug)]
struct Judged {
    violations: RuleSet,
    /// The map's full answer, for diagnostics (`None` when not classified, or when the
    /// judgement came from the memo).
    view: Option<MemView>,
    bits: RecordBits,
}

impl Judged {
    const CLEAN: Judged = Judged {
        violations: RuleSet::EMPTY,
        view: None,
        bits: RecordBits::NONE,
    };

    /// A clean judgement from a memo word (see [`RecordBits::memo_word`]).
    fn from_memo(word: u64) -> Judged {
        Judged {
            violations: RuleSet::EMPTY,
            view: None,
            bits: RecordBits(word),
        }
    }
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
    if classifies(call) {
        let view = memview(call);
        let m = check::check_with_memory(call, &view, rules);
        return Judged {
            violations: m.violations,
            view: Some(view),
            bits: RecordBits::classified(call, &view, m.effective_kind, m.sync),
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

/// [`Route::Record`]: judges the call with the memory map when it is on, forwards, then
/// records the span if the trace is running. `None` (before forwarding) when the memory
/// map finds a rule broken, or when a traced call cannot keep its depth (its locals are
/// gone, or a signal handler interrupted the shim's own code on it), so that the call
/// takes the pipeline. A traced call reads its depth, and one whose real function may call
/// other hooked functions ([`crate::abi::types::Hook::nests`]) forwards one level deeper,
/// so such a nested call is recorded at depth 1 from the process's first call on. Neither
/// judging nor recording can change the result: a panic in either is caught (before the
/// forward it sends the call to the pipeline, after it the result stands). (Not
/// [`guarded`]: the record path's only cancellation points are in its cold branches, which
/// hold cancellation off themselves, and this path is the one every traced call takes.)
#[inline(always)]
pub fn forward_and_record(
    mut call: Call,
    memo: u64,
    forward: impl FnOnce() -> c_int,
) -> Option<c_int> {
    // Untraced, this route is here for the memory rules only: nothing to record.
    let untraced = trace::state() == trace::Phase::Off;
    let judged = if memo != 0 {
        Judged::from_memo(memo)
    } else if classifies(&call) {
        let rt = runtime::get_initialised()?;
        // Read before judging: a write that completes meanwhile makes the memo stale.
        let epoch = crate::epoch::now();
        let judged =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| judge(&call, rt))).ok()?;
        if !judged.violations.is_empty() {
            return None;
        }
        memoise(&call, epoch, &judged, untraced);
        judged
    } else {
        Judged::CLEAN
    };
    if untraced {
        return Some(forward());
    }
    let (local, saved) = take_place(&mut call)?;
    let cell = local.place();
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
        trace::record_with(Some(local), || {
            to_record(&call, start, end, ret, &judged, Decision::Forward)
        });
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

    // A free or unregistration whose entry the guarded stages already closed: `Some(what
    // was closed)`; `None` while that is still to do (or there is nothing to close). Kept
    // out of the plan, which stays small enough to move without a copy loop.
    let mut early_close = None;
    let plan = guarded(|| prepare(&call, resolve, &mut early_close)).flatten();
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
    // A pageable copy's diagnostic says how long the runtime kept the host waiting.
    let pageable = plan.judged.violations.contains(Rule::Pageable);
    let mut blocked_ns = None;
    let mut timing = None;
    let ret = match (plan.verdict, plan.real) {
        (Some(code), _) => code,
        (None, Some(f)) => {
            // Closed before the real free: once it returns, the runtime may hand the
            // address to another thread, whose allocation a late close would end. The
            // guarded stages close it unless a delay comes first.
            let closed = match early_close {
                Some(closed) => closed,
                None if call.hook.class().releases_memory() => {
                    guarded(|| forget_memory(&call)).flatten()
                }
                None => None,
            };
            if plan.start.is_some() {
                timing = device_begin(&call, &plan.judged);
            }
            let forward_start = if pageable { clock::monotonic_ns() } else { 0 };
            let depth = call.depth + u32::from(call.hook.nests());
            cell.set(depth << 1);
            let ret = forward(f);
            cell.set(call.depth << 1 | BUSY);
            if pageable {
                blocked_ns = Some(clock::monotonic_ns().saturating_sub(forward_start));
            }
            if ret != 0 {
                if let Some(info) = closed {
                    // The runtime refused: the memory is still the program's.
                    let _ = guarded(|| restore_memory(&info));
                }
            }
            ret
        }
        (None, None) => missing,
    };
    device_end(timing, &call, ret, &plan.judged, plan.start.unwrap_or(0));
    let end = clock::now();
    if pageable {
        let _ = guarded(|| runtime::note_pageable(&call, plan.judged.view, ret, blocked_ns));
    }
    device_after_wait(&call, ret);
    let note = ret == 0 && plan.verdict.is_none() && call.hook.class().acquires_memory();
    let span = plan.start.map(|start| (start, &plan.judged, plan.decision));
    after_call(&mut call, ret, end, note, span);
    ret
}

/// The stages after the real call, under one switch of the cancellation state, each
/// caught on its own: the memory map learns of a successful allocation or registration
/// (`note`; the span then shows the new pointer), and the span (start, judgement, fault
/// decision) is recorded when the call is traced.
#[inline(always)]
fn after_call(
    call: &mut Call,
    ret: c_int,
    end: u64,
    note: bool,
    span: Option<(u64, &Judged, Decision)>,
) {
    if !note && span.is_none() {
        return;
    }
    let no_cancel = NoCancel::new();
    if note {
        if let Some(Some(ptr)) = caught(&no_cancel, || note_memory(call, end)) {
            call.dst = ptr;
        }
    }
    if let Some((start, judged, decision)) = span {
        let _ = caught(&no_cancel, || {
            crate::boundary::debug_panic(crate::boundary::Stage::Record);
            trace::record(&to_record(call, start, end, ret, judged, decision))
        });
    }
}

/// [`Route::Memory`]: the pipeline's work for an allocation, free or registration when no
/// fault rule is active, without its generic stages (the memory functions have no
/// argument rule, so there is nothing to judge). A free or unregistration closes its entry
/// before the real call (reopened if the runtime refuses), an allocation or registration
/// is recorded after it, and a traced call gets its span; the shim's stages before and
/// after the forward each run [`guarded`] (one switch of the cancellation state each), the
/// forward outside, one level deeper for a hook that nests. A panic before the forward
/// makes the call a plain forward, as in the pipeline. `None` (before forwarding) when the
/// thread cannot keep its place (its locals are gone, or a signal handler interrupted the
/// shim's own code on it): the pipeline handles those.
#[inline(always)]
pub fn forward_memory(mut call: Call, forward: impl FnOnce() -> c_int) -> Option<c_int> {
    let (local, saved) = take_place(&mut call)?;
    let cell = local.place();
    cell.set(saved | BUSY);
    let _restore = Restore { cell, saved };
    let traced = trace::state() == trace::Phase::Running;
    let releases = call.hook.class().releases_memory();
    // An allocation has nothing to do before the call but read the clock when traced,
    // once the thread has its ring.
    let before = if !releases && (!traced || local.has_ring()) {
        Some((traced.then(clock::now), None))
    } else {
        guarded(|| {
            let start = traced.then(clock::now);
            crate::boundary::debug_panic(crate::boundary::Stage::Check);
            let closed = if releases { forget_memory(&call) } else { None };
            if traced {
                trace::prepare_thread();
            }
            (start, closed)
        })
    };
    let Some((start, closed)) = before else {
        cell.set(saved);
        return Some(forward());
    };
    cell.set((call.depth + u32::from(call.hook.nests())) << 1);
    let ret = forward();
    cell.set(call.depth << 1 | BUSY);
    if ret != 0 {
        if let Some(info) = closed {
            // The runtime refused: the memory is still the program's.
            let _ = guarded(|| restore_memory(&info));
        }
    }
    let end = clock::now();
    let note = ret == 0 && call.hook.class().acquires_memory();
    let span = start.map(|start| (start, &Judged::CLEAN, Decision::Forward));
    after_call(&mut call, ret, end, note, span);
    Some(ret)
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
    // Outside the boundary first: a copy that goes untimed pays for nothing more.
    let device = crate::device::candidate(call, judged.bits.sync())?;
    guarded(|| crate::device::begin(call, device)).flatten()
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
        let kind = judged.bits.effective_kind();
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

/// After a successful allocation or registration: the memory map learns of it (SPEC §9).
/// Returns the allocated pointer, read from the out-pointer the program passed (which the
/// real function has just written). Frees and unregistrations are noted before the real
/// call ([`forget_memory`]).
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
        _ => None,
    }
}

/// Before a free or unregistration is forwarded: the memory map closes the entry (SPEC
/// §9), and returns it so that [`restore_memory`] can reopen it if the runtime refuses.
#[cold]
fn forget_memory(call: &Call) -> Option<memmap::AllocInfo> {
    if !memmap::is_enabled() {
        return None;
    }
    memmap::remove(call.dst as u64)
}

/// Reopens an entry closed by [`forget_memory`] whose free the runtime refused.
#[cold]
fn restore_memory(info: &memmap::AllocInfo) {
    memmap::insert(
        info.start,
        info.size,
        info.location,
        info.ts,
        info.tid,
        info.hook,
    );
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
fn prepare<F>(
    call: &Call,
    resolve: fn() -> Option<F>,
    closed: &mut Option<Option<memmap::AllocInfo>>,
) -> Option<Plan<F>> {
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
        // `pageable` is noted after the forward, with the time the host was blocked.
        runtime::note_violations(rt, call, violations.without(Rule::Pageable), judged.view);
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
    // A free about to be forwarded closes its entry here, with cancellation already held
    // off; after a delay fault's sleep instead (`call`), so that a thread cancelled in
    // the sleep leaves its memory open, as the free never happens.
    if real.is_some()
        && call.hook.class().releases_memory()
        && !matches!(decision, Decision::Delay(_))
    {
        *closed = Some(forget_memory(call));
    }
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
    Record {
        hook: call.hook as u8,
        depth: call.depth.min(u8::MAX as u32) as u8,
        fault: fault as u8,
        flags: judged.bits.flags(),
        mem: judged.bits.mem(),
        effective_kind: judged.bits.effective_kind_raw(),
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
    use crate::memmap::MemKind;

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
    fn a_memoised_verdict_comes_back_as_judged() {
        let copy = Call::new(Api::Acl);
        let set = Call::of(crate::abi::types::Hook::AclrtMemsetAsync);
        for (call, src, dst, effective_kind, sync, mem) in [
            (copy, MemKind::Pinned, MemKind::Device, None, false, 0x12),
            (
                copy,
                MemKind::Pageable,
                MemKind::Device,
                Some(1),
                true,
                0x14,
            ),
            (
                copy,
                MemKind::Registered,
                MemKind::Unknown,
                Some(0),
                false,
                0x53,
            ),
            (set, MemKind::Pageable, MemKind::Device, None, false, 0x10),
        ] {
            let view = MemView {
                src,
                dst,
                ..MemView::UNKNOWN
            };
            let bits = RecordBits::classified(&call, &view, effective_kind, sync);
            let back = Judged::from_memo(bits.memo_word().unwrap());
            assert_eq!(
                back.bits.mem(),
                mem,
                "src in the low nibble; a set has none"
            );
            assert_eq!(back.bits.effective_kind(), effective_kind);
            assert_eq!(back.bits.sync(), sync);
            assert_eq!(
                back.bits.flags() & FLAG_SYNC != 0,
                sync,
                "the record's own flag"
            );
            assert!(back.violations.is_empty());
        }
        assert_eq!(
            Judged::CLEAN.bits.memo_word(),
            None,
            "nothing classified: no memo"
        );
    }

    #[test]
    fn a_memo_answers_only_its_own_call_at_its_own_epoch() {
        let call = Call {
            dst: 0x7000_0000,
            src: 0x7100_0000,
            count: 4096,
            dest_max: 4096,
            kind: 1,
            ..Call::new(Api::Acl)
        };
        let view = MemView {
            src: MemKind::Pinned,
            dst: MemKind::Device,
            ..MemView::UNKNOWN
        };
        let judged = Judged {
            view: Some(view),
            bits: RecordBits::classified(&call, &view, None, false),
            ..Judged::CLEAN
        };
        memoise(&call, 7, &judged, false);
        assert!(memoised(&call, 7).is_some());
        assert!(memoised(&call, 8).is_none(), "a write completed since");
        let other = Call {
            count: 2048,
            ..call
        };
        assert!(memoised(&other, 7).is_none());
        let other = Call { kind: 2, ..call };
        assert!(memoised(&other, 7).is_none());
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
