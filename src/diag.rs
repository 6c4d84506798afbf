//! Diagnostics: one line each on stderr, prefixed `npushim: `, and the one way the shim
//! writes to any descriptor.
//!
//! Owns the log level (`NPUSHIM_LOG`) and the only path by which the shim writes to the
//! terminal. A line is built in a fixed stack buffer (no allocation, so a process out of
//! memory still gets its line) and goes out with a single `write(2)`, so lines never
//! interleave or tear across threads. Every write the shim makes, to stderr or to the
//! trace file, goes through [`write_all`], which keeps SIGPIPE and SIGXFSZ from reaching
//! the host. Never writes to stdout; never called on the hot path except for the first,
//! rate-limited occurrences of a problem.

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

/// The longest line printed; a longer message is cut and ends with `...`.
pub const LINE_MAX: usize = 1024;

/// Text formatted into a fixed buffer: what does not fit is cut (at a character boundary)
/// and remembered, never allocated for.
pub struct StackText<const N: usize> {
    buf: [u8; N],
    len: usize,
    cut: bool,
}

impl<const N: usize> StackText<N> {
    pub const fn new() -> Self {
        StackText {
            buf: [0; N],
            len: 0,
            cut: false,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// The text (always whole characters: a cut never splits one).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// True if some text did not fit.
    pub fn is_cut(&self) -> bool {
        self.cut
    }
}

impl<const N: usize> Default for StackText<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for StackText<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = N - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            self.cut = true;
        }
        // Never an error: a cut message is still printed.
        Ok(())
    }
}

/// A message with every newline turned into a space: a diagnostic is one line, always (an
/// embedded newline would break `grep npushim:`).
struct OneLine<const N: usize>(StackText<N>);

impl<const N: usize> fmt::Write for OneLine<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s;
        while let Some(i) = rest.find('\n') {
            self.0.write_str(&rest[..i])?;
            self.0.write_str(" ")?;
            rest = &rest[i + 1..];
        }
        self.0.write_str(rest)
    }
}

/// `npushim: `, the message (cut to fit, then ending in `...`), a newline.
fn format_line(args: fmt::Arguments<'_>) -> StackText<LINE_MAX> {
    use fmt::Write;
    // The message leaves 4 bytes free: for `...` if it was cut, and for the newline.
    let mut msg = OneLine(StackText::<{ LINE_MAX - 4 }>::new());
    let _ = msg.0.write_str("npushim: ");
    let _ = fmt::write(&mut msg, args);
    let mut line = StackText::new();
    let _ = line.write_str(msg.0.as_str());
    if msg.0.is_cut() {
        let _ = line.write_str("...");
    }
    let _ = line.write_str("\n");
    line
}

/// Prints one `npushim: ` line at `level`.
pub fn emit(level: Level, args: fmt::Arguments<'_>) {
    if !enabled(level) {
        return;
    }
    write_stderr(format_line(args).as_bytes());
}

/// A system call's error number, displayed as the standard library displays an OS error
/// (`File too large (os error 27)`) without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's `errno`.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 128];
        // SAFETY: `buf` is writable for its length; the XSI strerror_r (which the libc
        // crate binds on Linux) NUL-terminates what it writes or returns an error.
        let rc = unsafe { libc::strerror_r(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
        match std::str::from_utf8(&buf[..end]) {
            Ok(text) if rc == 0 && !text.is_empty() => write!(f, "{text} (os error {})", self.0),
            _ => write!(f, "os error {}", self.0),
        }
    }
}

/// A failed [`write_all`]: the error, and how many bytes had gone out before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteError {
    pub errno: Errno,
    pub written: usize,
}

/// The signals a write can raise in the writing thread: SIGPIPE (a pipe or socket without
/// a reader) and SIGXFSZ (past RLIMIT_FSIZE). The host must never see them for our writes.
const WRITE_SIGNALS: [libc::c_int; 2] = [libc::SIGPIPE, libc::SIGXFSZ];

/// Writes all of `bytes` to `fd` (retried on EINTR and short writes) with SIGPIPE and
/// SIGXFSZ blocked on the calling thread. If the write raised one of them (EPIPE, EFBIG)
/// and it was not already pending, it is taken back before the thread's mask is
/// restored, so the host neither dies of it nor receives it later. The shim's one way to
/// write to a descriptor, on the program's threads and on the writer thread alike.
/// On failure, says how many bytes went out before it. The thread's `errno` is left as it
/// was: a program may read it after the call the shim wrote from.
pub fn write_all(fd: libc::c_int, bytes: &[u8]) -> Result<(), WriteError> {
    // SAFETY: __errno_location returns the calling thread's errno, valid for its lifetime.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved_errno = unsafe { *errno };
    // SAFETY: every sigset_t is initialised by sigemptyset before use; blocking signals
    // affects only the calling thread, and its previous mask is restored below on every
    // path.
    let (old, pending_before) = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in WRITE_SIGNALS {
            libc::sigaddset(&mut set, sig);
        }
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut old);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pending);
        libc::sigpending(&mut pending);
        (old, pending)
    };
    let mut result = Ok(());
    let mut written = 0;
    while written < bytes.len() {
        let rest = &bytes[written..];
        // SAFETY: `rest` is a valid readable buffer of `rest.len()` bytes; a closed or
        // foreign `fd` makes write fail (EBADF) or write there, which callers rule out.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n < 0 {
            let errno = Errno::last();
            if errno.0 == libc::EINTR {
                continue;
            }
            result = Err(WriteError { errno, written });
            break;
        }
        written += n as usize;
    }
    let raised = match result {
        Err(WriteError {
            errno: Errno(libc::EPIPE),
            ..
        }) => Some(libc::SIGPIPE),
        Err(WriteError {
            errno: Errno(libc::EFBIG),
            ..
        }) => Some(libc::SIGXFSZ),
        _ => None,
    };
    // SAFETY: as above; sigtimedwait with a zero timeout only takes a pending signal of
    // the given set (the one our write raised), it never waits; `errno` is this thread's.
    unsafe {
        if let Some(sig) = raised {
            if libc::sigismember(&pending_before, sig) != 1 {
                let mut only: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut only);
                libc::sigaddset(&mut only, sig);
                let zero = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                libc::sigtimedwait(&only, std::ptr::null_mut(), &zero);
            }
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        *errno = saved_errno;
    }
    result
}

/// Writes raw bytes to stderr through [`write_all`]; an error is dropped (there is nowhere
/// left to report it).
pub fn write_stderr(bytes: &[u8]) {
    let _ = write_all(2, bytes);
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

    #[test]
    fn lines_are_one_line_and_cut_to_fit() {
        let line = format_line(format_args!("a\nb {}", 7));
        assert_eq!(line.as_str(), "npushim: a b 7\n");
        let long = "é".repeat(LINE_MAX);
        let line = format_line(format_args!("{long}"));
        let text = line.as_str();
        assert!(text.len() <= LINE_MAX, "{}", text.len());
        assert!(text.starts_with("npushim: é"));
        assert!(text.ends_with("é...\n"), "{text}");
    }

    #[test]
    fn errno_reads_like_an_os_error() {
        assert_eq!(
            Errno(libc::EFBIG).to_string(),
            std::io::Error::from_raw_os_error(libc::EFBIG).to_string()
        );
    }

    #[test]
    fn a_write_to_a_pipe_without_reader_raises_no_signal() {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe returns.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: closing the read end we just created.
        unsafe { libc::close(fds[0]) };
        // The test harness ignores SIGPIPE; make it deadly for this thread's write.
        // SAFETY: installing the default action; restored below.
        let old = unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        // SAFETY: the calling thread's errno.
        unsafe { *libc::__errno_location() = 4242 };
        let result = write_all(fds[1], b"x");
        // SAFETY: as above.
        let errno_after = unsafe { *libc::__errno_location() };
        // SAFETY: an empty set to read the pending signals into.
        let pending = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigpending(&mut set);
            libc::sigismember(&set, libc::SIGPIPE)
        };
        // SAFETY: restoring the previous action and closing our write end.
        unsafe {
            libc::signal(libc::SIGPIPE, old);
            libc::close(fds[1]);
        }
        assert_eq!(
            result,
            Err(WriteError {
                errno: Errno(libc::EPIPE),
                written: 0
            })
        );
        assert_eq!(errno_after, 4242, "errno changed");
        assert_eq!(pending, 0, "SIGPIPE left pending");
    }
}
