//! The runtime's own state: the configuration read once at the first call and turned into
//! what the pipeline needs ([`Runtime`]), whether the shim is a pure pass-through, and the
//! one-time initialisation that sets every other part up.

use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::time::Duration;

use super::stats::WARN_LIMIT;
use super::{faults, lineage, query};
use crate::check::{CheckConfig, Mode};
use crate::config::{Config, Sink};
use crate::fault::FaultSpec;
use crate::real::Search;
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

pub(super) fn runtime_ptr() -> Option<&'static Runtime> {
    // SAFETY: non-null values are leaked `Box<Runtime>`s, published with Release and never
    // freed or changed.
    unsafe { RUNTIME.load(Ordering::Acquire).as_ref() }
}

static INITIALISING: AtomicBool = AtomicBool::new(false);

/// Set once at initialisation when `NPUSHIM_DISABLE` asks for a pure pass-through: the
/// exports test it before doing anything else.
static PASS_THROUGH: AtomicBool = AtomicBool::new(false);

/// True when the shim is a pure pass-through (one relaxed load).
#[inline]
pub fn pass_through() -> bool {
    PASS_THROUGH.load(Ordering::Relaxed)
}

/// Makes every later call a plain forward, in a new epoch (a verdict remembered before
/// must not route a call now).
fn become_pass_through() {
    PASS_THROUGH.store(true, Ordering::Relaxed);
    crate::epoch::advance();
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
        become_pass_through();
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
        become_pass_through();
        diag::info!("NPUSHIM_DISABLE is set: pure pass-through");
        return rt;
    }
    crate::memmap::set_enabled(config.memmap);
    if config.memmap {
        crate::memmap::set_attributes_source(query::runtime_location);
    }
    if let Some(other) = crate::instance::another_instance() {
        become_pass_through();
        diag::warn!(
            "another copy of npushim ({other}) is already active in this process; this one \
             ({}) is a pure pass-through, so that no call is checked, faulted or traced twice",
            crate::instance::this_library()
        );
        return rt;
    }
    trace::clock::init();
    let seed = lineage::choose(config.seed);
    let mut faults_text = String::new();
    if let Some(spec) = &config.faults {
        match spec.parse::<FaultSpec>() {
            Ok(parsed) if !parsed.is_empty() => {
                faults_text = parsed.describe();
                diag::warn!(
                    "fault injection active: {faults_text} (seed {seed}; replay with NPUSHIM_SEED={seed})"
                );
                faults::install(parsed);
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
            run_index: config.run_index.clone(),
        }
    });
    if config.device_events && (settings.is_none() || config.sink != Sink::Native) {
        diag::warn!(
            "NPUSHIM_DEVICE=events needs the native trace (NPUSHIM_TRACE on, \
             NPUSHIM_TRACE_SINK=native); the device timeline stays off"
        );
    }
    crate::device::configure(
        config.device_events && settings.is_some() && config.sink == Sink::Native,
    );
    if config.sink == Sink::TracingChrome && settings.is_some() {
        diag::info!("tracing-chrome sink: expect several microseconds per call");
    }
    trace::configure(settings);
    rt
}

/// `pthread_atfork` child handler: a thread of the parent that was initialising the
/// runtime when it forked does not exist here, so the child initialises it itself at its
/// first call.
pub(super) fn fork_child() {
    if runtime_ptr().is_none() {
        INITIALISING.store(false, Ordering::Relaxed);
    }
}
