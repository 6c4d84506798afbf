//! Diagnostics: one line each on stderr, prefixed `npushim: `.
//!
//! Owns the log level (`NPUSHIM_LOG`) and the only path by which the shim writes to the
//! terminal. Lines go out with a single `write(2)` so they never interleave with each other
//! or tear across threads. Never writes to stdout; never called on the hot path except for
//! the first, rate-limited occurrences of a problem.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

/// How much the shim says on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Nothing at all.
    Off = 0,
    /// Problems, the first violations, and exit summaries (default).
    Warn = 1,
    /// Also the configuration and the trace file name at start.
    Info = 2,
}

impl Level {
    /// The words `NPUSHIM_LOG` accepts.
    pub const WORDS: &'static str = "off, warn, info";

    /// Parses a `NPUSHIM_LOG` value.
    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" | "0" | "quiet" | "none" => Some(Level::Off),
            "warn" | "1" | "warning" => Some(Level::Warn),
            "info" | "2" | "debug" | "verbose" => Some(Level::Info),
            _ => None,
        }
    }
}

static LEVEL: AtomicU8 = AtomicU8::new(Level::Warn as u8);

/// Sets the level for the rest of the process.
pub fn set_level(level: Level) {
    LEVEL.store(level as u8, Ordering::Relaxed);
}

/// True if a line at `level` would be printed.
pub fn enabled(level: Level) -> bool {
    level as u8 <= LEVEL.load(Ordering::Relaxed) && level != Level::Off
}

/// Prints one `npushim: ` line at `level`.
pub fn emit(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    let mut line = String::with_capacity(128);
    line.push_str("npushim: ");
    let _ = fmt::write(&mut line, args);
    // One line, always: a message with an embedded newline would break `grep npushim:`.
    let mut line = line.replace('\n', " ");
    line.push('\n');
    write_stderr(line.as_bytes());
}

/// Writes raw bytes to fd 2 with one `write(2)` (retried on EINTR / short writes).
pub fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid readable buffer of `bytes.len()` bytes; fd 2 may be
        // closed, in which case write fails with EBADF and we give up.
        let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// `warn!("…", args)`: one line at the default level.
macro_rules! warn_line {
    ($($arg:tt)*) => { $crate::diag::emit($crate::diag::Level::Warn, format_args!($($arg)*)) };
}

/// `info!("…", args)`: one line printed only with `NPUSHIM_LOG=info`.
macro_rules! info_line {
    ($($arg:tt)*) => { $crate::diag::emit($crate::diag::Level::Info, format_args!($($arg)*)) };
}

pub(crate) use info_line as info;
pub(crate) use warn_line as warn;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse() {
        assert_eq!(Level::parse("off"), Some(Level::Off));
        assert_eq!(Level::parse(" WARN "), Some(Level::Warn));
        assert_eq!(Level::parse("info"), Some(Level::Info));
        assert_eq!(Level::parse("loud"), None);
    }
}
