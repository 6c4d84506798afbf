//! The trace writer: creates the file, then, on its own thread, turns records into JSON.
//!
//! Owns the file descriptor, the output buffer and the exit and fork protocol of the native
//! sink. The writer state sits behind a [`FlagLock`] (one atomic word), so a forked child can
//! reset it whatever the parent's threads were doing; the writer thread blocks every signal
//! so the host's handlers never run on it.

use std::collections::HashSet;
use std::time::Duration;

use super::clock::{Anchor, Calibration};
use super::json::{Json, Out, SpanPrefix};
use super::record::unpack;
use super::{FLUSH_INTERVAL, KICK, Settings, file, ring};
use crate::sync::FlagLock;

/// The buffer is written out once it holds this much.
const BUF_LIMIT: usize = 1 << 20;
/// Ring units formatted per ring before the buffer size is looked at again.
const DRAIN_BATCH: u64 = 2048;

struct Writer {
    fd: libc::c_int,
    path: String,
    pid: u32,
    json: Json,
    /// Threads that already have their `thread_name` event.
    named: HashSet<i32>,
    /// Dropped count last written into the file.
    dropped_written: u64,
    /// Spans written.
    spans: u64,
}

static WRITER: FlagLock<Option<Writer>> = FlagLock::new(None);

/// This process's id, read with a system call only here, off the hot path.
fn getpid() -> u32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
}

pub(super) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The program's name: the base name of argv[0].
fn program() -> String {
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    match argv0.rsplit('/').next() {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => "unknown".to_string(),
    }
}

fn thread_name(tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim_end().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("thread {tid}"))
}

/// Creates the trace file named by the template; `None` (after one line) if impossible.
pub fn create_file(settings: &Settings, host: &str) -> Option<(libc::c_int, String)> {
    let path = file::expand(
        &settings.template,
        &file::Names {
            pid: getpid(),
            rank: settings.rank,
            host,
        },
    );
    match file::create(&path) {
        Ok(created) => Some(created),
        Err(e) => {
            crate::diag::warn!("{e}; the program runs on untraced");
            None
        }
    }
}

fn write_all(fd: libc::c_int, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is a valid buffer; `fd` is the trace file we own.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

impl Writer {
    /// Writes the buffer out; on failure stops tracing with one line.
    fn flush_buf(&mut self) -> bool {
        if self.json.buf.is_empty() || self.fd < 0 {
            return self.fd >= 0;
        }
        let result = write_all(self.fd, &self.json.buf);
        self.json.buf.clear();
        if let Err(e) = result {
            crate::diag::warn!(
                "cannot write trace file {}: {e}; tracing stops here (the file so far stays valid)",
                self.path
            );
            self.close();
            super::stop();
            return false;
        }
        true
    }

    fn close(&mut self) {
        if self.fd >= 0 {
            // SAFETY: `fd` is ours and closed exactly once (then set to -1).
            unsafe { libc::close(self.fd) };
            self.fd = -1;
        }
    }

    /// Drains every ring into the file.
    fn cycle(&mut self) {
        if self.fd < 0 {
            return;
        }
        let clock = Calibration::now();
        for ring in ring::rings() {
            if ring.pending() > 0 {
                let tid = ring.tid();
                if self.named.insert(tid) {
                    let args = {
                        let mut j = Json::default();
                        j.raw("{\"name\":");
                        j.string(&thread_name(tid));
                        j.raw("}");
                        String::from_utf8(j.buf).unwrap_or_default()
                    };
                    self.json.metadata("thread_name", self.pid, tid, &args);
                }
                let prefix = SpanPrefix::new(self.pid, tid);
                loop {
                    let (json, spans) = (&mut self.json, &mut self.spans);
                    let n = ring.drain(DRAIN_BATCH, |words| {
                        *spans += 1;
                        json.call(&unpack(words), &prefix, &clock);
                    });
                    super::note_progress();
                    if self.json.buf.len() >= BUF_LIMIT && !self.flush_buf() {
                        return;
                    }
                    if n < DRAIN_BATCH {
                        break;
                    }
                }
            }
            if ring.is_orphaned() {
                // A recycled ring belongs to a new thread: forget the old name.
                if ring.pending() == 0 {
                    self.named.remove(&ring.tid());
                }
                ring.release_if_orphaned();
            }
        }
        let dropped = ring::total_dropped();
        if dropped != self.dropped_written {
            self.stats(dropped);
        }
        self.flush_buf();
    }

    fn stats(&mut self, dropped: u64) {
        let args = format!("{{\"events\":{},\"dropped\":{dropped}}}", self.spans);
        self.json
            .metadata("npushim_stats", self.pid, self.pid as i32, &args);
        self.dropped_written = dropped;
    }
}

/// Creates the file, writes the header and starts the writer thread.
pub fn start(settings: &Settings) -> bool {
    let host = hostname();
    let Some((fd, path)) = create_file(settings, &host) else {
        return false;
    };
    let pid = getpid();
    let program = program();
    let anchor = Anchor::now();
    let mut json = Json::with_capacity(BUF_LIMIT + (BUF_LIMIT >> 2));
    let mut text = Json::default();
    text.raw("{\"name\":");
    text.string(&format!("{program} (pid {pid}, rank {})", settings.rank));
    text.raw("}");
    json.metadata(
        "process_name",
        pid,
        pid as i32,
        std::str::from_utf8(&text.buf).unwrap_or("{}"),
    );
    let mut meta = Json::default();
    meta.raw("{\"format\":1,\"version\":");
    meta.string(env!("CARGO_PKG_VERSION"));
    meta.raw(",\"program\":");
    meta.string(&program);
    meta.raw(",\"pid\":");
    meta.u64(pid as u64);
    meta.raw(",\"rank\":");
    meta.u64(settings.rank as u64);
    meta.raw(",\"host\":");
    meta.string(&host);
    meta.raw(",\"seed\":");
    meta.u64(crate::runtime::seed());
    meta.raw(",\"clock\":{\"monotonic_us\":");
    meta.micros(anchor.monotonic_ns);
    meta.raw(",\"realtime_us\":");
    meta.micros(anchor.realtime_ns);
    meta.raw(",\"source\":");
    meta.string(super::clock::source());
    meta.raw("},\"config\":");
    meta.raw(&settings.config_json);
    meta.raw("}");
    json.metadata(
        "npushim",
        pid,
        pid as i32,
        std::str::from_utf8(&meta.buf).unwrap_or("{}"),
    );
    let mut w = Writer {
        fd,
        path: path.clone(),
        pid,
        json,
        named: HashSet::new(),
        dropped_written: 0,
        spans: 0,
    };
    if !w.flush_buf() {
        return false;
    }
    match WRITER.lock_for(Duration::from_secs(1)) {
        Some(mut slot) => *slot = Some(w),
        None => {
            w.close();
            return false;
        }
    }
    let spawned = std::thread::Builder::new()
        .name("npushim-writer".into())
        .spawn(writer_thread);
    if let Err(e) = spawned {
        // Still traced: the exit handler drains the rings; producers meanwhile wait
        // briefly and then count what does not fit as dropped.
        crate::diag::warn!(
            "cannot start the trace writer thread ({e}); spans are written at exit only"
        );
    }
    crate::diag::info!("tracing to {path}");
    true
}

fn block_signals() {
    // SAFETY: `set` is a valid sigset_t, filled before use; blocking signals on our own
    // thread only affects this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

fn writer_thread() {
    block_signals();
    loop {
        let seen = KICK.seq();
        KICK.wait(seen, FLUSH_INTERVAL);
        if !super::is_running() {
            return;
        }
        if let Some(mut w) = WRITER.try_lock() {
            if let Some(w) = w.as_mut() {
                w.cycle();
            }
        }
    }
}

/// Writes what is recorded now, waiting at most `timeout` for the writer.
pub fn flush(timeout: Duration) {
    if let Some(mut w) = WRITER.lock_for(timeout) {
        if let Some(w) = w.as_mut() {
            w.cycle();
        }
    }
}

/// Final drain, stats and closing bracket (exit handler).
pub fn finish() {
    let Some(mut slot) = WRITER.lock_for(Duration::from_secs(2)) else {
        crate::diag::warn!(
            "the trace writer did not answer at exit; the trace lacks its last events"
        );
        return;
    };
    let Some(mut w) = slot.take() else {
        return;
    };
    w.cycle();
    if w.fd < 0 {
        return;
    }
    let dropped = ring::total_dropped();
    w.stats(dropped);
    w.json.raw("]\n");
    w.flush_buf();
    w.close();
    let ringless = ring::ringless_dropped();
    if dropped > ringless {
        crate::diag::warn!(
            "{} events were dropped because the trace writer could not keep up; \
             the count is in {} (npushim_stats)",
            dropped - ringless,
            w.path
        );
    }
    if ringless > 0 {
        crate::diag::warn!(
            "{ringless} calls made by threads already past their exit (from thread-exit \
             destructors), or for which no trace buffer could be allocated, were forwarded \
             but not traced; the count is in {} (npushim_stats)",
            w.path
        );
    }
    crate::diag::info!("trace written to {} ({} spans)", w.path, w.spans);
}

/// After fork, in the child: the parent's writer thread does not exist here and its file
/// must not be touched. The state is discarded without running its destructors (the
/// parent may have been in the middle of changing it).
pub fn fork_child() {
    // SAFETY: in the child only the forking thread exists; no guard can be live.
    unsafe { WRITER.force_unlock() };
    if let Some(mut slot) = WRITER.try_lock() {
        if let Some(w) = slot.take() {
            if w.fd >= 0 {
                // SAFETY: closing our copy of the descriptor does not affect the parent's.
                unsafe { libc::close(w.fd) };
            }
            std::mem::forget(w);
        }
    }
}
