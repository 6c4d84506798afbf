//! The `tracing` side of the timeline: the `tracing-chrome` sink (`NPUSHIM_TRACE_SINK`).
//!
//! The native sink does not go through `tracing` at all (its records go straight into the
//! rings). This sink turns each call into one `tracing` event with honest typed fields
//! (addresses as hex strings, sizes and codes as integers, enums by name), recorded by
//! `tracing-chrome`'s layer, so that the calls reach the tracing ecosystem. It is slow
//! (microseconds per call) and says so. The subscriber lives in this library's own copy of
//! `tracing`, so it never meets a host program's subscriber.

use std::fmt;
use std::fs::File;
use std::os::fd::FromRawFd;

use tracing_subscriber::prelude::*;

use super::record::{FaultTag, Record};
use super::{Settings, writer};
use crate::abi::types::{Hook, Kind, decode_kind, decode_link};
use crate::check::RuleSet;
use crate::sync::FlagLock;

/// An address as `0x…`.
struct Hex(u64);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// A kind or link type by name (the raw value if unknown).
struct Named(Kind);

impl fmt::Display for Named {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Kind::Named(n) => f.write_str(n),
            Kind::Unknown(v) => write!(f, "{v}"),
        }
    }
}

/// Emits one call as a `tracing` event (the `tracing-chrome` sink's path).
pub fn emit_chrome(rec: &Record) {
    let hook = rec.hook();
    let api = hook.api();
    let violations = RuleSet(rec.violations).to_string();
    let fault = FaultTag::from_u8(rec.fault);
    let fault = if fault == FaultTag::Off {
        String::new()
    } else {
        fault.decision(rec.fault_arg).to_string()
    };
    let clock = super::clock::Calibration::now();
    let dur_us = clock.to_ns(rec.end).saturating_sub(clock.to_ns(rec.start)) as f64 / 1e3;
    macro_rules! one_event_per_hook {
        ($(
            $(#[$doc:meta])*
            $hook:ident = $name:ident ( $($arg:ident : $ty:ty),* ) : $api:ident, $class:ident,
            |$c:ident| $decode:block;
        )*) => {
            match hook {
                $(Hook::$hook => tracing::event!(
                    name: stringify!($name),
                    target: "npushim::call",
                    tracing::Level::INFO,
                    dur_us,
                    dst = %Hex(rec.dst),
                    src = %Hex(rec.src),
                    stream = %Hex(rec.stream),
                    destMax = rec.dest_max,
                    count = rec.count,
                    kind = %Named(decode_kind(api, rec.kind)),
                    dispatcher = %Hex(rec.dispatcher),
                    remoteUserRank = rec.remote_rank,
                    linkType = %Named(decode_link(rec.link)),
                    spitch = rec.spitch,
                    height = rec.height,
                    value = rec.value,
                    event = %Hex(rec.event),
                    ret = rec.ret,
                    violations = %violations,
                    fault = %fault,
                    depth = rec.depth,
                ),)*
            }
        };
    }
    crate::abi::hooks::for_each_hook!(one_event_per_hook);
}

/// `tracing-chrome`'s flush guard, dropped at exit so its writer thread finishes the file.
static CHROME_GUARD: FlagLock<Option<tracing_chrome::FlushGuard>> = FlagLock::new(None);

/// Starts the `tracing-chrome` sink on a file we create (so naming and symlink rules hold).
pub fn start_chrome(settings: &Settings) -> bool {
    let Some(path) = writer::create_file(settings, &writer::hostname()) else {
        return false;
    };
    let (fd, name) = path;
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    let file = unsafe { File::from_raw_fd(fd) };
    let (layer, guard) = tracing_chrome::ChromeLayerBuilder::new()
        .writer(file)
        .include_args(true)
        .build();
    let subscriber = tracing_subscriber::registry().with(layer);
    if tracing::subscriber::set_global_default(subscriber).is_err() {
        crate::diag::warn!("cannot install the tracing-chrome sink; tracing is off");
        return false;
    }
    if let Some(mut g) = CHROME_GUARD.try_lock() {
        *g = Some(guard);
    }
    crate::diag::info!("tracing to {name} (tracing-chrome sink)");
    true
}

/// Flushes and closes the `tracing-chrome` file.
pub fn finish_chrome() {
    if let Some(mut g) = CHROME_GUARD.lock_for(std::time::Duration::from_secs(2)) {
        drop(g.take());
    }
}
