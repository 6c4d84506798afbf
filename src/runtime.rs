//! Process-wide state: the configuration read once, the active fault rules, the seed, the
//! counters behind the exit summaries, and the process hooks (constructor, exit, fork).
//!
//! The constructor does libc-level work only (registering `atexit` and `pthread_atfork`);
//! everything that needs std is initialised lazily at the first intercepted call.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::abi::types::{Api, Call, Class, Hook};
use crate::check::{CheckConfig, MemView, Mode, RULES, Rule, Violations};
use crate::config::{Config, Sink};
use crate::fault::{Decision, FaultSpec};
use crate::memmap::MemKind;
use crate::real::Search;
use crate::sync::FlagLock;
use crate::trace::json::Out;
use crate::{diag, trace};

/// What the pipeline needs on every call, fixed after initialisation.
pub struct Runtime {
    pub check: CheckConfig,
}

/// The runtime, published once with a single atomic store of a leaked box (not a
/// `OnceLock`: a fork while another thread is inside `OnceLock::set` would leave the child's
/// copy "being initialised" for ever).
static RUNTIME: AtomicPtr<Runtime> = AtomicPtr::new(std::ptr::null_mut());

fn runtime_ptr() -> Option<&'static Runtime> {
    // SAFETY: non-null values are leaked `Box<Runtime>`s, published with Release and never
    // freed or changed.
    unsafe { RUNTIME.load(Ordering::Acquire).as_ref() }
}

/// The fault rules in force: null when none. Replaced atomically by `npushim_faults_set`.
static FAULTS: AtomicPtr<FaultSpec> = AtomicPtr::new(std::ptr::null_mut());
/// Threads currently reading `FAULTS` (a retired spec is freed only when this reaches 0).
static FAULT_READERS: AtomicUsize = AtomicUsize::new(0);
/// Serialises replacements (a single-word lock: resettable in a forked child).
static FAULTS_SET_LOCK: FlagLock<()> = FlagLock::new(());

static SEED: AtomicU64 = AtomicU64::new(0);
/// fork()s made by this process so far (numbers each child).
static FORKS: AtomicU64 = AtomicU64::new(0);
/// Which child of which child this process is, folded into one word (0 in the original
/// process). A process's seed is always the configured (or random) seed XOR its lineage, so
/// a child gets the same seed whether its parent had chosen its own before the fork or not.
static LINEAGE: AtomicU64 = AtomicU64::new(0);
/// How many forks deep this process is.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Per-rule violation counts, and the first offending call of each rule.
static VIOLATIONS: [AtomicU64; RULES.len()] = [const { AtomicU64::new(0) }; RULES.len()];
static FIRST_VIOLATION: FlagLock<[Option<Call>; RULES.len()]> = FlagLock::new([None; RULES.len()]);
/// The clock at this process's fork (0 in the original process): allocations made before
/// it were the parent's, so the child's leak summary leaves them out.
static FORKED_AT: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds the host spent in pageable copies the runtime ran synchronously.
static PAGEABLE_BLOCKED_NS: AtomicU64 = AtomicU64::new(0);
/// Injected faults by task: return, delay, skip, abort.
static INJECTED: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Violations of a rule print a line for their first occurrences only.
const WARN_LIMIT: u64 = 5;

static INITIALISING: AtomicBool = AtomicBool::new(false);

/// Set once at initialisation when `NPUSHIM_DISABLE` asks for a pure pass-through: the
/// exports test it before doing anything else.
static PASS_THROUGH: AtomicBool = AtomicBool::new(false);

/// True when the shim is a pure pass-through (one relaxed load).
#[inline]
pub fn pass_through() -> bool {
    PASS_THROUGH.load(Ordering::Relaxed)
}

/// The runtime, initialised at the first call. `None` only for a call made while the
/// runtime is being initialised (then the caller just forwards).
#[inline]
pub fn get() -> Option<&'static Runtime> {
    match runtime_ptr() {
        Some(rt) => Some(rt),
        None => init(),
    }
}

/// The runtime if it is already initialised (never initialises: for fast paths).
#[inline]
pub fn get_initialised() -> Option<&'static Runtime> {
    runtime_ptr()
}

#[cold]
fn init() -> Option<&'static Runtime> {
    if INITIALISING.swap(true, Ordering::AcqRel) {
        // Another thread is initialising (wait for it) or this thread re-entered.
        for _ in 0..10_000 {
            if let Some(rt) = runtime_ptr() {
                return Some(rt);
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        return runtime_ptr();
    }
    // A bug in the shim must not print a Rust backtrace into the host's stderr: one line,
    // then the pipeline forwards the call (see intercept::fail_open).
    std::panic::set_hook(Box::new(|info| {
        static PANICS: AtomicU64 = AtomicU64::new(0);
        let n = PANICS.fetch_add(1, Ordering::Relaxed);
        if n >= WARN_LIMIT {
            return;
        }
        let (file, line) = info.location().map_or(("?", 0), |l| (l.file(), l.line()));
        diag::warn!(
            "internal error at {file}:{line}; the call is forwarded unchanged{}",
            if n + 1 == WARN_LIMIT {
                " (further internal errors are not shown)"
            } else {
                ""
            }
        );
    }));
    let built = std::panic::catch_unwind(|| {
        crate::boundary::debug_panic(crate::boundary::Stage::Init);
        let (config, warnings) = Config::from_lookup(|name| std::env::var_os(name));
        diag::set_level(config.log);
        for w in &warnings {
            diag::warn!("{w}");
        }
        build(&config)
    });
    let rt = built.unwrap_or_else(|_| {
        // Whatever state the failed initialisation left, it is never used: every later
        // call is a plain forward, and nobody waits for an initialiser that gave up.
        PASS_THROUGH.store(true, Ordering::Relaxed);
        diag::warn!("internal error while initialising; npushim is a pure pass-through here");
        Runtime {
            check: CheckConfig {
                mode: Mode::Off,
                ..CheckConfig::default()
            },
        }
    });
    RUNTIME.store(Box::into_raw(Box::new(rt)), Ordering::Release);
    runtime_ptr()
}

/// `aclrtPtrAttributes` (SPEC §2.3): `location {uint32_t id; aclrtMemLocationType type;}`,
/// `uint32_t pageSize`, `uint32_t rsv[4]`.
#[repr(C)]
#[derive(Default)]
struct PtrAttributes {
    location_id: u32,
    location_type: u32,
    page_size: u32,
    reserved: [u32; 4],
}

/// What the runtime says of a host pointer the memory map does not know
/// (`aclrtPointerGetAttributes`), or `None` when it cannot say.
fn runtime_location(ptr: u64) -> Option<crate::memmap::MemKind> {
    use crate::memmap::MemKind;
    let addr = crate::real::helper(crate::real::Helper::PointerGetAttributes)?;
    type GetAttributes = unsafe extern "C" fn(*const libc::c_void, *mut PtrAttributes) -> i32;
    // SAFETY: the runtime's aclrtPointerGetAttributes has exactly this C signature (SPEC
    // §2.3); it writes one aclrtPtrAttributes, which `attributes` is.
    let get = unsafe { std::mem::transmute::<usize, GetAttributes>(addr) };
    let mut attributes = PtrAttributes::default();
    // SAFETY: a query of the runtime: it only reads the pointer's value and writes into
    // `attributes`.
    if unsafe { get(ptr as *const libc::c_void, &mut attributes) } != 0 {
        return None;
    }
    match attributes.location_type {
        0 => Some(MemKind::Registered),
        1 => Some(MemKind::Device),
        2 => Some(MemKind::Pageable),
        _ => None,
    }
}

/// The calling thread's current device, for the memory map (0 if the runtime cannot say).
pub fn current_device() -> u32 {
    let Some(addr) = crate::real::helper(crate::real::Helper::GetDevice) else {
        return 0;
    };
    // SAFETY: the runtime's aclrtGetDevice has exactly this C signature.
    let get = unsafe { std::mem::transmute::<usize, unsafe extern "C" fn(*mut i32) -> i32>(addr) };
    let mut id = 0i32;
    // SAFETY: writes one int32_t into `id`.
    if unsafe { get(&mut id) } == 0 && id >= 0 {
        id as u32
    } else {
        0
    }
}

/// A random seed below 2^53, so that it survives a round trip through JavaScript-based
/// trace viewers exactly (and can be copied from Perfetto to replay a run).
fn random_seed() -> u64 {
    let mut seed = 0u64;
    // SAFETY: `seed` is 8 writable bytes; getrandom never writes more than asked.
    let n = unsafe { libc::getrandom((&mut seed as *mut u64).cast(), 8, libc::GRND_NONBLOCK) };
    if n != 8 {
        seed = trace::clock::realtime_ns() ^ ((std::process::id() as u64) << 32);
    }
    seed & ((1 << 53) - 1)
}

fn build(config: &Config) -> Runtime {
    let rt = Runtime {
        check: config.check,
    };
    crate::real::configure(Search {
        acl_lib: config.acl_lib.clone(),
        hccl_lib: config.hccl_lib.clone(),
        ascend_homes: config.ascend_homes.clone(),
    });
    if config.disable {
        PASS_THROUGH.store(true, Ordering::Relaxed);
        diag::info!("NPUSHIM_DISABLE is set: pure pass-through");
        return rt;
    }
    crate::memmap::set_enabled(config.memmap);
    if config.memmap {
        crate::memmap::set_attributes_source(runtime_location);
    }
    if let Some(other) = crate::instance::another_instance() {
        PASS_THROUGH.store(true, Ordering::Relaxed);
        diag::warn!(
            "another copy of npushim ({other}) is already active in this process; this one \
             ({}) is a pure pass-through, so that no call is checked, faulted or traced twice",
            crate::instance::this_library()
        );
        return rt;
    }
    trace::clock::init();
    let seed = config.seed.unwrap_or_else(random_seed) ^ LINEAGE.load(Ordering::Relaxed);
    SEED.store(seed, Ordering::Relaxed);
    trace::set_seed(seed);
    let mut faults_text = String::new();
    if let Some(spec) = &config.faults {
        match spec.parse::<FaultSpec>() {
            Ok(parsed) if !parsed.is_empty() => {
                faults_text = parsed.describe();
                diag::warn!(
                    "fault injection active: {faults_text} (seed {seed}; replay with NPUSHIM_SEED={seed})"
                );
                FAULTS.store(Box::into_raw(Box::new(parsed)), Ordering::Release);
            }
            Ok(_) => {}
            Err(e) => diag::warn!("NPUSHIM_FAULTS: {e}; running with no faults"),
        }
    }
    diag::info!(
        "checks {}, trace {}, seed {seed}",
        config.check,
        config.trace.as_deref().unwrap_or("off")
    );
    let settings = config.trace.as_ref().map(|template| {
        let mut cfg = trace::json::Json::default();
        cfg.raw("{\"check\":");
        cfg.string(&config.check.to_string());
        cfg.raw(",\"faults\":");
        cfg.string(&faults_text);
        cfg.raw(",\"trace\":");
        cfg.string(template);
        cfg.raw(",\"sink\":");
        cfg.string(config.sink.name());
        cfg.raw("}");
        trace::Settings {
            template: template.clone(),
            sink: config.sink,
            rank: config.rank,
            config_json: String::from_utf8(cfg.buf).unwrap_or_default(),
        }
    });
    if config.sink == Sink::TracingChrome && settings.is_some() {
        diag::info!("tracing-chrome sink: expect several microseconds per call");
    }
    trace::configure(settings);
    rt
}

/// The seed in use (0 before initialisation).
pub fn seed() -> u64 {
    SEED.load(Ordering::Relaxed)
}

/// Whether any fault rule is in force: one relaxed load.
#[inline]
pub fn faults_active() -> bool {
    !FAULTS.load(Ordering::Relaxed).is_null()
}

/// Decides a call against the rules in force.
pub fn decide(call: &Call) -> Decision {
    FAULT_READERS.fetch_add(1, Ordering::SeqCst);
    let p = FAULTS.load(Ordering::SeqCst);
    // SAFETY: a spec stays allocated while FAULT_READERS > 0 (see `set_faults`).
    let decision = unsafe { p.as_ref() }
        .map(|spec| spec.decide(call, seed()))
        .unwrap_or(Decision::Forward);
    FAULT_READERS.fetch_sub(1, Ordering::SeqCst);
    if decision.is_fault() {
        let i = match decision {
            Decision::Return(_) => 0,
            Decision::Delay(_) => 1,
            Decision::Skip => 2,
            _ => 3,
        };
        INJECTED[i].fetch_add(1, Ordering::Relaxed);
    }
    decision
}

/// Replaces every fault rule at once (`None` or an empty spec clears them).
pub fn set_faults(spec: Option<FaultSpec>) {
    let _serialised = FAULTS_SET_LOCK.lock_for(Duration::from_secs(10));
    let new = match spec {
        Some(s) if !s.is_empty() => Box::into_raw(Box::new(s)),
        _ => std::ptr::null_mut(),
    };
    let old = FAULTS.swap(new, Ordering::SeqCst);
    if old.is_null() {
        return;
    }
    // Readers increment FAULT_READERS before loading FAULTS, so once it has been zero after
    // the swap nobody can still hold `old`. A reader stuck for a second: leak, never free
    // under it.
    for _ in 0..100_000 {
        if FAULT_READERS.load(Ordering::SeqCst) == 0 {
            // SAFETY: `old` came from Box::into_raw and no reader can reach it any more.
            drop(unsafe { Box::from_raw(old) });
            return;
        }
        std::thread::sleep(Duration::from_micros(10));
    }
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
fn summarise() {
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
    let injected: Vec<String> = ["return", "delay", "skip", "abort"]
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

extern "C" fn on_exit() {
    if runtime_ptr().is_none() || pass_through() {
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        let leaks = crate::memmap::leaks(FORKED_AT.load(Ordering::Relaxed));
        if !leaks.is_empty() {
            trace::exit_metadata("npushim_leaks", leaks_json(&leaks));
        }
        trace::finish();
        summarise();
        report_leaks(&leaks);
    });
}

/// Where an allocation lives, for the leak summary.
fn location_name(location: crate::memmap::Location) -> String {
    match location {
        crate::memmap::Location::Device(id) => format!("device {id}"),
        crate::memmap::Location::Pinned => "pinned host".to_string(),
        crate::memmap::Location::Registered => "registered host".to_string(),
    }
}

/// The leak summary as the `npushim_leaks` metadata's args.
fn leaks_json(leaks: &[crate::memmap::LeakSummary]) -> String {
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
    j.raw("]}");
    String::from_utf8(j.buf).unwrap_or_default()
}

/// One line per location with allocations never freed.
fn report_leaks(leaks: &[crate::memmap::LeakSummary]) {
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

extern "C" fn fork_prepare() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    crate::memmap::fork_prepare();
}

extern "C" fn fork_parent() {
    crate::memmap::fork_parent();
}

extern "C" fn fork_child() {
    // The child's seed derives deterministically from the parent's, the fork's number and
    // its depth: the same delta goes into the seed in use (if the parent had one) and into
    // the lineage (for a seed chosen later), so both ways give the same seed.
    let n = FORKS.load(Ordering::Relaxed);
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed) + 1;
    // Below 2^53, like random seeds, so that JavaScript-based viewers show it exactly.
    let delta = child_seed(generation, n) & ((1 << 53) - 1);
    trace::set_seed(SEED.fetch_xor(delta, Ordering::Relaxed) ^ delta);
    LINEAGE.fetch_xor(delta, Ordering::Relaxed);
    FORKS.store(0, Ordering::Relaxed);
    FAULT_READERS.store(0, Ordering::Relaxed);
    // A thread of the parent was initialising the runtime when it forked: that thread does
    // not exist here, so the child initialises it itself at its first call.
    if runtime_ptr().is_none() {
        INITIALISING.store(false, Ordering::Relaxed);
    }
    for c in VIOLATIONS.iter().chain(&INJECTED) {
        c.store(0, Ordering::Relaxed);
    }
    PAGEABLE_BLOCKED_NS.store(0, Ordering::Relaxed);
    FORKED_AT.store(trace::clock::now(), Ordering::Relaxed);
    // SAFETY: only this thread exists in the child; no guard of these locks is live here.
    unsafe {
        FIRST_VIOLATION.force_unlock();
        FAULTS_SET_LOCK.force_unlock();
    }
    if let Some(mut first) = FIRST_VIOLATION.try_lock() {
        *first = [None; RULES.len()];
    }
    crate::memmap::fork_child();
    trace::fork_child();
}

/// Runs when the library is loaded, before `main`: libc-level registration only.
#[ctor::ctor(unsafe)]
fn on_load() {
    crate::boundary::read_debug_panic();
    // SAFETY: registering plain `extern "C"` functions without captured state.
    unsafe {
        libc::atexit(on_exit);
        libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child));
    }
    trace::ring::create_thread_key();
}

/// A well-mixed word from two (the SplitMix64 finaliser): the seed change of the `n`-th
/// child of a process `generation` forks deep.
pub fn child_seed(generation: u64, n: u64) -> u64 {
    let mut z =
        generation.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
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
