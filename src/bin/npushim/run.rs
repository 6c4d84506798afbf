//! `npushim run`: runs a command with `libnpushim.so` preloaded.
//!
//! It finds the library (`NPUSHIM_LIB`, else beside this executable, else `../lib`), puts
//! it first in `LD_PRELOAD`, sets the `NPUSHIM_*` variables named by options (an option not
//! given leaves the environment alone), runs the command as a child, forwards termination
//! signals to it and exits with its status (128+N when signal N killed it).
//!
//! Signals are handled without async handlers: they are blocked before the child is spawned
//! (and unblocked again in the child before exec) and a thread takes them with
//! `sigwaitinfo` and forwards them. The child is waited for with `WNOWAIT` first, so its pid
//! cannot be reused while a signal is being forwarded to it.
//!
//! `--summary` is told which traces the run produced: it creates an empty index file (0600,
//! in the temporary directory) and names it in `NPUSHIM_RUN_INDEX`; every process of the run
//! that creates a trace file appends its absolute path there (one `O_APPEND` write per
//! file, never creating the index). After the run the index is read and removed.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::Failure;
use crate::reader::io_reason;
use crate::report::Report;

const LIBRARY: &str = "libnpushim.so";

/// Signals passed on to the child.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// `si_code` of a signal the kernel generated, e.g. Ctrl-C on the terminal.
const SI_KERNEL: libc::c_int = 0x80;

pub struct RunOptions {
    pub trace: Option<OsString>,
    pub check: Option<String>,
    pub faults: Option<String>,
    pub seed: Option<u64>,
    pub summary: bool,
    pub command: Vec<OsString>,
}

/// Locates `libnpushim.so`: `NPUSHIM_LIB` when set, else beside the executable or in
/// `../lib` relative to it.
pub fn find_library() -> Result<PathBuf, Failure> {
    if let Some(value) = std::env::var_os("NPUSHIM_LIB").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(&value);
        if !path.is_file() {
            return Err(Failure::new("NPUSHIM_LIB does not name a file", &path));
        }
        return std::path::absolute(&path).map_err(|e| {
            Failure::new(&format!("cannot use NPUSHIM_LIB: {}", io_reason(&e)), &path)
        });
    }
    let exe = std::env::current_exe()
        .map_err(|e| Failure::line(&format!("cannot find own executable: {}", io_reason(&e))))?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [dir.join(LIBRARY), dir.join("../lib").join(LIBRARY)];
    for candidate in &candidates {
        if candidate.is_file() {
            return Ok(candidate
                .canonicalize()
                .unwrap_or_else(|_| candidate.clone()));
        }
    }
    Err(Failure::new(
        &format!(
            "cannot find {LIBRARY} beside the npushim executable or in ../lib; \
             set NPUSHIM_LIB to its path"
        ),
        dir,
    ))
}

/// `LD_PRELOAD` with `library` first, followed by the entries of `existing` (ld.so accepts
/// spaces and colons between entries); an earlier copy of `library` is dropped.
pub fn preload_value(library: &Path, existing: Option<&OsStr>) -> OsString {
    let ours = library.as_os_str().as_bytes();
    let mut value = ours.to_vec();
    if let Some(existing) = existing {
        for entry in existing
            .as_bytes()
            .split(|b| *b == b':' || *b == b' ')
            .filter(|entry| !entry.is_empty() && *entry != ours)
        {
            value.push(b':');
            value.extend_from_slice(entry);
        }
    }
    OsString::from_vec(value)
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before any use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable sigset_t and the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        for &signal in signals {
            libc::sigaddset(&mut set, signal);
        }
    }
    set
}

/// Runs the command; returns the exit status for npushim.
pub fn run(options: RunOptions) -> Result<i32, Failure> {
    let library = find_library()?;
    if library
        .as_os_str()
        .as_bytes()
        .iter()
        .any(|b| *b == b':' || *b == b' ')
    {
        return Err(Failure::new(
            "the library path contains ':' or ' ', which LD_PRELOAD cannot express",
            &library,
        ));
    }
    let (program, arguments) = options
        .command
        .split_first()
        .ok_or_else(|| Failure::line("no command given after --"))?;

    let mut command = Command::new(program);
    command.args(arguments);
    command.env(
        "LD_PRELOAD",
        preload_value(&library, std::env::var_os("LD_PRELOAD").as_deref()),
    );
    if let Some(trace) = &options.trace {
        command.env("NPUSHIM_TRACE", trace);
    }
    if let Some(check) = &options.check {
        command.env("NPUSHIM_CHECK", check);
    }
    if let Some(faults) = &options.faults {
        command.env("NPUSHIM_FAULTS", faults);
    }
    if let Some(seed) = options.seed {
        command.env("NPUSHIM_SEED", seed.to_string());
    }

    let template = options
        .trace
        .clone()
        .or_else(|| std::env::var_os("NPUSHIM_TRACE"))
        .unwrap_or_else(|| OsString::from("npushim-%p.json"));
    let tracing_off = crate::words::trace_off(&template.to_string_lossy());
    let index = if options.summary && !tracing_off {
        Some(RunIndex::create()?)
    } else {
        None
    };
    if let Some(index) = &index {
        command.env("NPUSHIM_RUN_INDEX", &index.path);
    }

    let set = sigset(&FORWARDED);
    // SAFETY: `set` is a valid sigset_t; no other thread exists yet, so every thread
    // created from here on inherits the mask and the signals stay pending for sigwaitinfo.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    // The child must not inherit the blocked mask (std leaves the mask as it is).
    // SAFETY: the closure only calls pthread_sigmask, which is async-signal-safe, on a
    // sigset_t copied into it; it runs in the child between fork and exec.
    unsafe {
        command.pre_exec(move || {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(|e| {
        let status = if e.kind() == std::io::ErrorKind::NotFound {
            127
        } else {
            126
        };
        Failure::with_status(
            &format!(
                "cannot run {}: {}",
                program.to_string_lossy(),
                io_reason(&e)
            ),
            status,
        )
    })?;
    let pid = child.id() as libc::pid_t;
    let reaped = Arc::new(Mutex::new(false));
    {
        let reaped = Arc::clone(&reaped);
        std::thread::spawn(move || forward_signals(set, pid, &reaped));
    }

    wait_without_reaping(pid);
    if let Ok(mut done) = reaped.lock() {
        *done = true;
    }
    let status = child
        .wait()
        .map_err(|e| Failure::line(&format!("cannot wait for the command: {}", io_reason(&e))))?;
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    };

    if options.summary {
        print_summary(index.as_ref());
    }
    Ok(code)
}

fn forward_signals(set: libc::sigset_t, pid: libc::pid_t, reaped: &Mutex<bool>) {
    loop {
        // SAFETY: siginfo_t is plain data filled in by sigwaitinfo.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` and `info` are valid for the call; the signals are blocked in every
        // thread, as sigwaitinfo requires.
        let signal = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if signal < 0 {
            continue;
        }
        let Ok(done) = reaped.lock() else { return };
        if *done {
            // The child is gone and npushim is only printing its summary: act on the signal
            // as an unhandled one would.
            std::process::exit(128 + signal);
        }
        // A terminal's Ctrl-C or hang-up already reached the whole foreground process
        // group; sending it again would make the child see it twice.
        // SAFETY: getpgid/getpgrp only read process attributes.
        let same_group = unsafe { libc::getpgid(pid) == libc::getpgrp() };
        if info.si_code == SI_KERNEL && same_group {
            continue;
        }
        // SAFETY: `pid` is our child, not yet reaped (guarded by `reaped`), so it cannot
        // name another process.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

/// Blocks until the child has exited, leaving it unreaped so its pid stays reserved.
fn wait_without_reaping(pid: libc::pid_t) {
    loop {
        // SAFETY: siginfo_t is plain data filled in by waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid for writing; P_PID with our child's pid.
        let result = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if result == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            return;
        }
    }
}

/// Summarises the traces listed in `index` (`None`: tracing is off).
fn print_summary(index: Option<&RunIndex>) {
    let Some(index) = index else {
        eprintln!("npushim: tracing is off (NPUSHIM_TRACE=off); no summary");
        return;
    };
    let traces = index.traces();
    if traces.is_empty() {
        eprintln!("npushim: the run wrote no trace (no intercepted call?)");
        return;
    }
    eprintln!(
        "npushim: summary of {} trace file(s) written by this run",
        traces.len()
    );
    for path in traces {
        let mut report = Report::new();
        match report.add_file(&path) {
            Ok(_) => eprint!("\n{}", report.to_text()),
            Err(error) => eprintln!("npushim: {error}"),
        }
    }
}

/// The index file of one run: created empty and private, removed when dropped.
struct RunIndex {
    path: PathBuf,
}

impl RunIndex {
    fn create() -> Result<RunIndex, Failure> {
        let dir = std::env::temp_dir();
        let mut template = dir.join("npushim-run-XXXXXX").into_os_string().into_vec();
        template.push(0);
        // SAFETY: `template` is a writable NUL-terminated buffer ending in XXXXXX, as
        // mkstemp requires; it replaces the Xs in place.
        let fd = unsafe { libc::mkstemp(template.as_mut_ptr().cast()) };
        if fd < 0 {
            let error = std::io::Error::last_os_error();
            return Err(Failure::line(&format!(
                "cannot create the run's trace index in {}: {}",
                dir.display(),
                io_reason(&error)
            )));
        }
        // SAFETY: `fd` is the descriptor mkstemp just opened; nothing else uses it.
        unsafe { libc::close(fd) };
        template.pop();
        Ok(RunIndex {
            path: PathBuf::from(OsString::from_vec(template)),
        })
    }

    /// The trace files listed, in the order they were created, each once.
    fn traces(&self) -> Vec<PathBuf> {
        let text = std::fs::read(&self.path).unwrap_or_default();
        let mut seen = BTreeSet::new();
        text.split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| PathBuf::from(OsStr::from_bytes(line)))
            .filter(|path| seen.insert(path.clone()))
            .collect()
    }
}

impl Drop for RunIndex {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preload_puts_ours_first() {
        let ours = Path::new("/opt/libnpushim.so");
        assert_eq!(
            preload_value(ours, None),
            OsString::from("/opt/libnpushim.so")
        );
        assert_eq!(
            preload_value(ours, Some(OsStr::new("/a.so /b.so:/opt/libnpushim.so"))),
            OsString::from("/opt/libnpushim.so:/a.so:/b.so")
        );
        assert_eq!(
            preload_value(ours, Some(OsStr::new(" "))),
            OsString::from("/opt/libnpushim.so")
        );
    }
}
