//! Every `NPUSHIM_*` variable in one typed table, parsed once from an injected lookup.
//!
//! Owns names, defaults and the messages for bad values. It never touches the process
//! environment itself (the caller passes a lookup), never fails: a malformed value yields a
//! warning for the caller to print once, and the safe default.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;

use crate::check::CheckConfig;
use crate::diag::Level;

/// Where spans go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sink {
    /// npushim's own layer: fixed-size records, background JSON writer.
    Native,
    /// `tracing-chrome`'s layer (compatibility; far slower).
    TracingChrome,
}

impl Sink {
    pub const fn name(self) -> &'static str {
        match self {
            Sink::Native => "native",
            Sink::TracingChrome => "tracing-chrome",
        }
    }
}

/// The default trace path template (SPEC §5).
pub const DEFAULT_TRACE: &str = "npushim-%p.json";

/// The whole configuration of one process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `NPUSHIM_DISABLE`: pure pass-through.
    pub disable: bool,
    /// `NPUSHIM_MEMMAP`: keep the map of the program's allocations (SPEC §9).
    pub memmap: bool,
    /// `NPUSHIM_DEVICE=events`: time async copies on the device (SPEC §10).
    pub device_events: bool,
    /// `NPUSHIM_DLSYM`: handle lookups (`dlsym(handle, …)`) of hooked names answered with
    /// the shim's exports.
    pub dlsym: bool,
    /// `NPUSHIM_TRACE`: path template, or `None` for `off`.
    pub trace: Option<String>,
    /// `NPUSHIM_TRACE_SINK`.
    pub sink: Sink,
    /// `NPUSHIM_CHECK`.
    pub check: CheckConfig,
    /// `NPUSHIM_FAULTS`, unparsed (the fault module owns the grammar).
    pub faults: Option<String>,
    /// `NPUSHIM_SEED`; `None` means pick a random one.
    pub seed: Option<u64>,
    /// `NPUSHIM_LOG`.
    pub log: Level,
    /// `NPUSHIM_ACL_LIB`: library to take `aclrtMemcpyAsync` from when `RTLD_NEXT` fails.
    pub acl_lib: Option<String>,
    /// `NPUSHIM_HCCL_LIB`: likewise for `HcclMemcpyAsync`.
    pub hccl_lib: Option<String>,
    /// `$ASCEND_HOME_PATH`, `$ASCEND_TOOLKIT_HOME`: install roots searched last.
    pub ascend_homes: Vec<String>,
    /// `NPUSHIM_RUN_INDEX`: a file `npushim run` created, to which the shim appends the
    /// path of each trace file it creates (never created by the shim).
    pub run_index: Option<String>,
    /// Rank for `%r` (first of `RANK`, `RANK_ID`, `OMPI_COMM_WORLD_RANK`, `PMI_RANK`,
    /// `SLURM_PROCID`; 0 if none).
    pub rank: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            disable: false,
            memmap: true,
            device_events: false,
            dlsym: true,
            run_index: None,
            trace: Some(DEFAULT_TRACE.to_string()),
            sink: Sink::Native,
            check: CheckConfig::default(),
            faults: None,
            seed: None,
            log: Level::Warn,
            acl_lib: None,
            hccl_lib: None,
            ascend_homes: Vec::new(),
            rank: 0,
        }
    }
}

/// Every variable the configuration reads, except the rank variables.
pub const VARS: [&str; 15] = [
    "NPUSHIM_DISABLE",
    "NPUSHIM_MEMMAP",
    "NPUSHIM_DEVICE",
    "NPUSHIM_DLSYM",
    "NPUSHIM_RUN_INDEX",
    "NPUSHIM_LOG",
    "NPUSHIM_TRACE",
    "NPUSHIM_TRACE_SINK",
    "NPUSHIM_CHECK",
    "NPUSHIM_FAULTS",
    "NPUSHIM_SEED",
    "NPUSHIM_ACL_LIB",
    "NPUSHIM_HCCL_LIB",
    "ASCEND_HOME_PATH",
    "ASCEND_TOOLKIT_HOME",
];

/// Variables that name the process's rank, in priority order.
pub const RANK_VARS: [&str; 5] = [
    "RANK",
    "RANK_ID",
    "OMPI_COMM_WORLD_RANK",
    "PMI_RANK",
    "SLURM_PROCID",
];

fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// Parses a seed: decimal or `0x` hex, any `u64`.
pub fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// What the default of each variable means, for the message about a value that is not
/// UTF-8 (every other bad value has its own message below, ending the same way).
fn default_note(name: &str) -> &'static str {
    match name {
        "NPUSHIM_DISABLE" => "the shim stays enabled",
        "NPUSHIM_MEMMAP" => "the memory map stays on",
        "NPUSHIM_DEVICE" => "the device timeline stays off",
        "NPUSHIM_DLSYM" => "handle lookups still see the shim",
        "NPUSHIM_RUN_INDEX" => "trace files are not listed",
        "NPUSHIM_LOG" | "NPUSHIM_CHECK" => "using warn",
        "NPUSHIM_TRACE" => "using npushim-%p.json",
        "NPUSHIM_TRACE_SINK" => "using native",
        "NPUSHIM_FAULTS" => "no faults are injected",
        "NPUSHIM_SEED" => "using a random seed",
        "NPUSHIM_ACL_LIB" | "NPUSHIM_HCCL_LIB" => "searching the usual places",
        "ASCEND_HOME_PATH" | "ASCEND_TOOLKIT_HOME" => "not searched",
        _ => "using rank 0",
    }
}

/// `value` in double quotes as Rust's `{:?}` shows a string, with every byte that is not
/// part of valid UTF-8 written `\xNN`, so the message shows exactly what was set.
pub fn escape_lossy(value: &OsStr) -> String {
    let mut out = String::from("\"");
    for chunk in value.as_bytes().utf8_chunks() {
        for c in chunk.valid().chars() {
            out.extend(c.escape_debug());
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.push('"');
    out
}

impl Config {
    /// Builds the configuration from `get` (normally `std::env::var_os`), returning it with
    /// the warnings to print (one line each, without the `npushim: ` prefix). A value that
    /// is not UTF-8 is a bad value like any other: one warning, and the default.
    pub fn from_lookup(get: impl Fn(&str) -> Option<OsString>) -> (Config, Vec<String>) {
        let mut c = Config::default();
        let mut warnings = Vec::new();
        // Each variable is looked up once, before any is interpreted, so that a value that
        // is not UTF-8 is reported once however often it is consulted below.
        // `Err(())`: set, but not UTF-8 (already reported).
        let mut values: Vec<(&str, Option<Result<String, ()>>)> = Vec::new();
        for name in VARS.iter().chain(RANK_VARS.iter()) {
            let value = get(name).map(|v| {
                v.into_string().map_err(|raw| {
                    warnings.push(format!(
                        "{name}={} is not UTF-8 text; {}",
                        escape_lossy(&raw),
                        default_note(name)
                    ));
                })
            });
            values.push((name, value));
        }
        let lookup = |name: &str| {
            let entry = values.iter().find(|(n, _)| *n == name);
            debug_assert!(entry.is_some(), "{name} is missing from VARS");
            entry.and_then(|(_, v)| v.clone())
        };
        let get = |name: &str| lookup(name).and_then(Result::ok);
        let nonempty = |name: &str| get(name).filter(|v| !v.trim().is_empty());

        if let Some(v) = get("NPUSHIM_DISABLE") {
            match parse_bool(&v) {
                Some(b) => c.disable = b,
                None => warnings.push(format!(
                    "NPUSHIM_DISABLE={v:?} is not a boolean (expected 1/0, true/false, yes/no, on/off); \
                     the shim stays enabled"
                )),
            }
        }
        if let Some(v) = get("NPUSHIM_MEMMAP") {
            match parse_bool(&v) {
                Some(b) => c.memmap = b,
                None => warnings.push(format!(
                    "NPUSHIM_MEMMAP={v:?} is not on or off (expected on/off, 1/0, true/false, \
                     yes/no); the memory map stays on"
                )),
            }
        }
        if let Some(v) = get("NPUSHIM_DEVICE") {
            match v.trim().to_ascii_lowercase().as_str() {
                "events" => c.device_events = true,
                "off" | "0" | "none" | "" => c.device_events = false,
                _ => warnings.push(format!(
                    "NPUSHIM_DEVICE={v:?} is not a device timeline mode (expected off or events); \
                     the device timeline stays off"
                )),
            }
        }
        if let Some(v) = get("NPUSHIM_DLSYM") {
            match parse_bool(&v) {
                Some(b) => c.dlsym = b,
                None => warnings.push(format!(
                    "NPUSHIM_DLSYM={v:?} is not a boolean (expected 1/0, true/false, yes/no, on/off); \
                     handle lookups still see the shim"
                )),
            }
        }
        c.run_index = nonempty("NPUSHIM_RUN_INDEX");
        if let Some(v) = get("NPUSHIM_LOG") {
            match Level::parse(&v) {
                Some(level) => c.log = level,
                None => warnings.push(format!(
                    "NPUSHIM_LOG={v:?} is not a level (expected {}); using warn",
                    Level::WORDS
                )),
            }
        }
        if let Some(v) = get("NPUSHIM_TRACE") {
            let t = v.trim();
            if crate::words::trace_off(t) {
                c.trace = None;
            } else if t.is_empty() {
                warnings.push(format!(
                    "NPUSHIM_TRACE is empty (expected a path template or off); using {DEFAULT_TRACE}"
                ));
            } else {
                c.trace = Some(t.to_string());
            }
        }
        if let Some(v) = get("NPUSHIM_TRACE_SINK") {
            match v.trim().to_ascii_lowercase().as_str() {
                "native" | "npushim" | "" => c.sink = Sink::Native,
                "tracing-chrome" | "chrome" => c.sink = Sink::TracingChrome,
                _ => warnings.push(format!(
                    "NPUSHIM_TRACE_SINK={v:?} is not a sink (expected native or tracing-chrome); using native"
                )),
            }
        }
        if let Some(v) = get("NPUSHIM_CHECK") {
            match v.parse::<CheckConfig>() {
                Ok(check) => c.check = check,
                Err(e) => warnings.push(format!("NPUSHIM_CHECK={v:?}: {e}; using warn")),
            }
        }
        c.faults = nonempty("NPUSHIM_FAULTS");
        if let Some(v) = nonempty("NPUSHIM_SEED") {
            match parse_seed(&v) {
                Some(seed) => c.seed = Some(seed),
                None => warnings.push(format!(
                    "NPUSHIM_SEED={v:?} is not an unsigned 64-bit integer (decimal or 0x hex); \
                     using a random seed"
                )),
            }
        }
        c.acl_lib = nonempty("NPUSHIM_ACL_LIB");
        c.hccl_lib = nonempty("NPUSHIM_HCCL_LIB");
        c.ascend_homes = ["ASCEND_HOME_PATH", "ASCEND_TOOLKIT_HOME"]
            .iter()
            .filter_map(|n| nonempty(n))
            .collect();
        // The first rank variable set decides, even when its value is bad (rank 0 then).
        let rank = RANK_VARS.iter().find_map(|n| {
            lookup(n)
                .filter(|v| !matches!(v, Ok(text) if text.trim().is_empty()))
                .map(|v| (*n, v))
        });
        if let Some((name, Ok(v))) = rank {
            match v.trim().parse::<u32>() {
                Ok(rank) => c.rank = rank,
                Err(_) => warnings.push(format!(
                    "{name}={v:?} is not a rank (a non-negative integer); using rank 0"
                )),
            }
        }
        (c, warnings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Mode, Rule};
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> (Config, Vec<String>) {
        let raw: Vec<(&str, &[u8])> = pairs.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
        from_bytes(&raw)
    }

    fn from_bytes(pairs: &[(&str, &[u8])]) -> (Config, Vec<String>) {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsStr::from_bytes(v).to_os_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    /// A value each variable accepts, so that the same value with a stray byte must be
    /// what makes the difference.
    fn good_value(name: &str) -> &'static str {
        match name {
            "NPUSHIM_DISABLE" => "1",
            "NPUSHIM_MEMMAP" => "off",
            "NPUSHIM_DEVICE" => "events",
            "NPUSHIM_DLSYM" => "0",
            "NPUSHIM_RUN_INDEX" => "/tmp/npushim-run.index",
            "NPUSHIM_LOG" => "info",
            "NPUSHIM_TRACE" => "/tmp/t-%p.json",
            "NPUSHIM_TRACE_SINK" => "tracing-chrome",
            "NPUSHIM_CHECK" => "strict",
            "NPUSHIM_FAULTS" => "*=return",
            "NPUSHIM_SEED" => "7",
            "NPUSHIM_ACL_LIB" | "NPUSHIM_HCCL_LIB" => "/opt/lib.so",
            "ASCEND_HOME_PATH" | "ASCEND_TOOLKIT_HOME" => "/usr/local/Ascend",
            _ => "5",
        }
    }

    #[test]
    fn values_that_are_not_utf8_warn_and_keep_defaults() {
        for name in VARS.iter().chain(RANK_VARS.iter()) {
            let good = good_value(name);
            let (c, w) = from(&[(name, good)]);
            assert!(w.is_empty(), "{name}: {w:?}");
            assert_ne!(c, Config::default(), "{name}={good} must change the config");

            let mut bad = good.as_bytes().to_vec();
            bad.push(0xff);
            let (c, w) = from_bytes(&[(name, &bad)]);
            assert_eq!(c, Config::default(), "{name}");
            assert_eq!(w.len(), 1, "{name}: {w:?}");
            let shown = format!("{name}=\"{good}\\xff\" is not UTF-8 text; ");
            assert!(w[0].starts_with(&shown), "{name}: {w:?}");
            assert!(w[0].contains(default_note(name)), "{name}: {w:?}");
        }
    }

    #[test]
    fn a_rank_variable_that_is_not_utf8_still_decides_the_rank() {
        let (c, w) = from_bytes(&[("RANK", b"\xc3"), ("SLURM_PROCID", b"4")]);
        assert_eq!(c.rank, 0);
        assert_eq!(w, ["RANK=\"\\xc3\" is not UTF-8 text; using rank 0"]);
    }

    #[test]
    fn escaping_shows_every_byte() {
        let raw = OsStr::from_bytes(b"a\"b\n\xe2\x82\xac\xe2\x82\xff");
        assert_eq!(escape_lossy(raw), "\"a\\\"b\\n\u{20ac}\\xe2\\x82\\xff\"");
    }

    #[test]
    fn defaults() {
        let (c, w) = from(&[]);
        assert!(w.is_empty());
        assert_eq!(c, Config::default());
        assert_eq!(c.trace.as_deref(), Some("npushim-%p.json"));
        assert_eq!(c.check.mode, Mode::Warn);
    }

    #[test]
    fn every_variable_is_read() {
        let (c, w) = from(&[
            ("NPUSHIM_DISABLE", "yes"),
            ("NPUSHIM_DLSYM", "off"),
            ("NPUSHIM_TRACE", "/tmp/t-%r.json"),
            ("NPUSHIM_TRACE_SINK", "tracing-chrome"),
            ("NPUSHIM_CHECK", "strict,-align"),
            ("NPUSHIM_FAULTS", "*=skip"),
            ("NPUSHIM_SEED", "0x2a"),
            ("NPUSHIM_LOG", "info"),
            ("NPUSHIM_ACL_LIB", "/opt/libascendcl.so"),
            ("NPUSHIM_HCCL_LIB", "/opt/libhccl_plf.so"),
            ("ASCEND_HOME_PATH", "/usr/local/Ascend"),
            ("RANK_ID", "3"),
            ("SLURM_PROCID", "9"),
        ]);
        assert!(w.is_empty(), "{w:?}");
        assert!(c.disable);
        assert!(!c.dlsym);
        assert_eq!(c.trace.as_deref(), Some("/tmp/t-%r.json"));
        assert_eq!(c.sink, Sink::TracingChrome);
        assert_eq!(c.check.mode, Mode::Strict);
        assert!(!c.check.rules.contains(Rule::Align));
        assert_eq!(c.faults.as_deref(), Some("*=skip"));
        assert_eq!(c.seed, Some(42));
        assert_eq!(c.log, Level::Info);
        assert_eq!(c.acl_lib.as_deref(), Some("/opt/libascendcl.so"));
        assert_eq!(c.ascend_homes, ["/usr/local/Ascend"]);
        assert_eq!(c.rank, 3);
    }

    #[test]
    fn bad_values_warn_and_keep_defaults() {
        let (c, w) = from(&[
            ("NPUSHIM_DISABLE", "maybe"),
            ("NPUSHIM_DLSYM", "sometimes"),
            ("NPUSHIM_CHECK", "paranoid"),
            ("NPUSHIM_SEED", "-1"),
            ("NPUSHIM_LOG", "loud"),
            ("NPUSHIM_TRACE_SINK", "perfetto"),
            ("RANK", "zero"),
        ]);
        assert_eq!(w.len(), 7, "{w:?}");
        assert!(
            w.iter()
                .any(|l| l.starts_with("NPUSHIM_DLSYM=\"sometimes\" is not a boolean"))
        );
        assert!(
            w.iter()
                .any(|l| l.contains("NPUSHIM_CHECK") && l.contains("off, warn or strict"))
        );
        assert!(!c.disable);
        assert!(c.dlsym);
        assert_eq!(c.check, CheckConfig::default());
        assert_eq!(c.seed, None);
        assert_eq!(c.log, Level::Warn);
        assert_eq!(c.sink, Sink::Native);
        assert_eq!(c.rank, 0);
    }

    #[test]
    fn the_device_timeline_is_off_unless_asked_for() {
        assert!(!from(&[]).0.device_events);
        assert!(from(&[("NPUSHIM_DEVICE", "events")]).0.device_events);
        assert!(from(&[("NPUSHIM_DEVICE", " EVENTS ")]).0.device_events);
        assert!(!from(&[("NPUSHIM_DEVICE", "off")]).0.device_events);
        let (c, w) = from(&[("NPUSHIM_DEVICE", "cupti")]);
        assert!(!c.device_events);
        assert_eq!(
            w,
            [
                "NPUSHIM_DEVICE=\"cupti\" is not a device timeline mode (expected off or events); \
              the device timeline stays off"
            ]
        );
    }

    #[test]
    fn dlsym_is_on_unless_turned_off() {
        assert!(from(&[]).0.dlsym);
        assert!(from(&[("NPUSHIM_DLSYM", "1")]).0.dlsym);
        assert!(!from(&[("NPUSHIM_DLSYM", "0")]).0.dlsym);
        assert!(!from(&[("NPUSHIM_DLSYM", "no")]).0.dlsym);
    }

    #[test]
    fn trace_off() {
        assert_eq!(from(&[("NPUSHIM_TRACE", "off")]).0.trace, None);
        assert_eq!(from(&[("NPUSHIM_TRACE", "OFF")]).0.trace, None);
    }
}
