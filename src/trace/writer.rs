//! The trace writer: creates the file, then, on its own thread, turns records into JSON.
//!
//! Owns the file descriptor, the output buffer and the exit and fork protocol of the native
//! sink. The writer state sits behind a [`FlagLock`] (one atomic word), so a forked child can
//! reset it whatever the parent's threads were doing; the writer thread blocks every signal
//! so the host's handlers never run on it. The descriptor is checked to be the file the
//! shim created before every write batch (a program may close it and reuse the number);
//! the output buffer is allocated once, fallibly, and never grows; every failure stops
//! tracing with one line and never touches the program.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use super::clock::{Anchor, Calibration};
use super::json::{Json, Out, SpanPrefix};
use super::record::unpack;
use super::{FLUSH_INTERVAL, KICK, Settings, file, ring};
use crate::diag::{Errno, StackText};
use crate::sync::FlagLock;

/// The buffer is written out once it holds this much.
const BUF_LIMIT: usize = 1 << 20;
/// Ring units formatted per ring before the buffer size is looked at again.
const DRAIN_BATCH: u64 = 64;
/// The most JSON one record becomes: its span line (at most 1 KiB) plus one instant event
/// (about 200 bytes) per violated rule and one for a fault.
const RECORD_MAX: usize = 4096;
/// The output buffer's one allocation: below [`BUF_LIMIT`] there is always room for a
/// whole batch and a metadata line, so the buffer never grows.
const BUF_CAPACITY: usize = BUF_LIMIT + DRAIN_BATCH as usize * RECORD_MAX + RECORD_MAX;
/// The writer thread's stack: it formats into the heap buffer and its frames are small.
const WRITER_STACK: usize = 512 << 10;

/// A file by device and inode: what the trace descriptor must still refer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

/// The identity of the file open at `fd` (`EBADF` if none is).
fn file_id(fd: libc::c_int) -> Result<FileId, Errno> {
    // SAFETY: `st` is a writable stat buffer; fstat only fills it.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) != 0 {
            return Err(Errno::last());
        }
        Ok(FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        })
    }
}

/// Span events among the whole lines of `bytes`.
fn spans_in(bytes: &[u8]) -> u64 {
    let whole = bytes
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(&bytes[..0], |i| &bytes[..i]);
    whole
        .split(|&b| b == b'\n')
        .filter(|line| {
            line.get(1..)
                .is_some_and(|l| l.starts_with(b"{\"ph\":\"X\""))
        })
        .count() as u64
}

struct Writer {
    fd: libc::c_int,
    /// The file the shim created: before each write the descriptor must still be it.
    id: FileId,
    path: String,
    pid: u32,
    json: Json,
    /// Threads that already have their `thread_name` event.
    named: HashSet<i32>,
    /// Dropped count last written into the file.
    dropped_written: u64,
    /// Spans formatted.
    spans: u64,
    /// Spans that reached the file.
    spans_written: u64,
}

static WRITER: FlagLock<Option<Writer>> = FlagLock::new(None);

/// This process's id, read with a system call only here, off the hot path.
fn getpid() -> u32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() as u32 }
}

/// The host name, in `buf` (no allocation).
fn hostname_in(buf: &mut [u8; 256]) -> &str {
    // SAFETY: `buf` is writable for its length; gethostname NUL-terminates on success (the
    // last byte stays 0 in any case).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    match std::str::from_utf8(&buf[..end]) {
        Ok(name) if rc == 0 && !name.is_empty() => name,
        _ => "unknown",
    }
}

pub(super) fn hostname() -> String {
    hostname_in(&mut [0; 256]).to_string()
}

/// Reads at most `buf.len()` bytes of a small `/proc` file named by `path` (NUL-terminated)
/// into `buf`, without allocating; the bytes read.
fn read_small(path: &StackText<64>, buf: &mut [u8]) -> usize {
    // SAFETY: `path` ends with a NUL (callers write one); `buf` is writable for its length;
    // the descriptor is ours and closed once.
    unsafe {
        let fd = libc::open(
            path.as_bytes().as_ptr().cast(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n.max(0) as usize
    }
}

/// Appends `bytes` to `out`, invalid UTF-8 as U+FFFD.
fn push_lossy<const N: usize>(out: &mut StackText<N>, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        let _ = out.write_str(chunk.valid());
        if !chunk.invalid().is_empty() {
            let _ = out.write_char('\u{fffd}');
        }
    }
}

/// The program's name: the base name of argv[0].
fn program() -> StackText<256> {
    let mut path = StackText::<64>::new();
    let _ = path.write_str("/proc/self/cmdline\0");
    let mut cmdline = [0u8; 4096];
    let n = read_small(&path, &mut cmdline);
    let argv0 = cmdline[..n].split(|&b| b == 0).next().unwrap_or_default();
    let base = argv0.rsplit(|&b| b == b'/').next().unwrap_or_default();
    let mut name = StackText::new();
    if base.is_empty() {
        let _ = name.write_str("unknown");
    } else {
        push_lossy(&mut name, base);
    }
    name
}

/// A thread's name (its `comm`), or `thread <tid>`.
fn thread_name(tid: i32) -> StackText<64> {
    let mut path = StackText::<64>::new();
    let _ = write!(path, "/proc/self/task/{tid}/comm\0");
    let mut comm = [0u8; 64];
    let n = read_small(&path, &mut comm);
    let comm = comm[..n].strip_suffix(b"\n").unwrap_or(&comm[..n]);
    let mut name = StackText::new();
    if comm.is_empty() {
        let _ = write!(name, "thread {tid}");
    } else {
        push_lossy(&mut name, comm);
    }
    name
}

/// Creates the trace file named by the template; `None` (after one line) if impossible.
pub fn create_file(settings: &Settings, host: &str) -> Option<(libc::c_int, String)> {
    let names = file::Names {
        pid: getpid(),
        rank: settings.rank,
        host,
    };
    let Some(path) = file::expand(&settings.template, &names) else {
        crate::diag::warn!(
            "cannot allocate memory for the trace file name; the program runs on untraced"
        );
        return None;
    };
    match file::create(&path) {
        Ok(created) => {
            if let Some(index) = &settings.run_index {
                file::list_in_index(index, &created.1);
            }
            Some(created)
        }
        Err(e) => {
            crate::diag::warn!("{e}; the program runs on untraced");
            None
        }
    }
}

impl Writer {
    /// Writes the buffer out, after checking that the descriptor is still the file the shim
    /// created; on any failure stops tracing with one line and returns false.
    fn flush_buf(&mut self) -> bool {
        if self.fd < 0 {
            self.json.buf.clear();
            return false;
        }
        if self.json.failed() {
            // Some output is missing from the buffer: none of it goes out.
            self.json.buf.clear();
            crate::diag::warn!(
                "cannot allocate memory for the trace output; tracing stops here ({} spans \
                 written to {})",
                self.spans_written,
                self.path
            );
            self.close();
            super::stop();
            return false;
        }
        if self.json.buf.is_empty() {
            return true;
        }
        match file_id(self.fd) {
            Ok(id) if id == self.id => {}
            now => {
                self.json.buf.clear();
                crate::diag::warn!(
                    "the program closed descriptor {} of trace file {} ({}); tracing stops \
                     here ({} spans written) and nothing more is written to that descriptor",
                    self.fd,
                    self.path,
                    if now.is_err() {
                        "it is closed now"
                    } else {
                        "it is another file now"
                    },
                    self.spans_written
                );
                // The number is the program's now: never write to it or close it again.
                self.fd = -1;
                super::stop();
                return false;
            }
        }
        let result = crate::diag::write_all(self.fd, &self.json.buf);
        match result {
            Ok(()) => {
                self.json.buf.clear();
                self.spans_written = self.spans;
                true
            }
            Err(e) => {
                // The whole lines that went out before the error are in the file.
                self.spans_written += spans_in(&self.json.buf[..e.written]);
                self.json.buf.clear();
                let limit = if e.errno.0 == libc::EFBIG {
                    " (the file size limit, ulimit -f)"
                } else {
                    ""
                };
                crate::diag::warn!(
                    "cannot write trace file {}: {}{limit}; tracing stops here ({} spans \
                     written; the file loads as a cut-off trace)",
                    self.path,
                    e.errno,
                    self.spans_written
                );
                self.close();
                super::stop();
                false
            }
        }
    }

    fn close(&mut self) {
        if self.fd >= 0 {
            // SAFETY: `fd` is ours and closed exactly once (then set to -1).
            unsafe { libc::close(self.fd) };
            self.fd = -1;
        }
    }

    /// Drains every ring into the file. The final drain (`at_exit`) leaves the stats
    /// to [`finish`], which writes them once.
    fn cycle(&mut self, at_exit: bool) {
        if self.fd < 0 {
            return;
        }
        let clock = Calibration::now();
        for ring in ring::rings() {
            // Set when this ring was emptied or freed: a producer may be waiting for that.
            let mut emptied = false;
            if ring.pending() > 0 {
                let tid = ring.tid();
                // Without memory for the set, the name is left out (and tried again later).
                if !self.named.contains(&tid)
                    && !super::device::is_quiet(tid)
                    && self.named.try_reserve(1).is_ok()
                {
                    self.named.insert(tid);
                    let name = thread_name(tid);
                    self.json.metadata_with("thread_name", self.pid, tid, |j| {
                        j.raw("{\"name\":");
                        j.string(name.as_str());
                        j.raw("}");
                    });
                }
                let prefix = SpanPrefix::new(self.pid, tid);
                loop {
                    let (json, spans) = (&mut self.json, &mut self.spans);
                    let pid = self.pid;
                    let n = ring.drain(DRAIN_BATCH, |words| {
                        if super::device::is_device(words) {
                            *spans += super::device::format(json, words, pid, &clock);
                            return;
                        }
                        *spans += 1;
                        json.call(&unpack(words), &prefix, &clock);
                    });
                    super::note_progress();
                    if (self.json.buf.len() >= BUF_LIMIT || self.json.failed()) && !self.flush_buf()
                    {
                        return;
                    }
                    if n < DRAIN_BATCH {
                        break;
                    }
                }
                emptied = true;
            }
            if ring.is_orphaned() {
                // A recycled ring belongs to a new thread: forget the old name.
                if ring.pending() == 0 {
                    self.named.remove(&ring.tid());
                }
                ring.release_if_orphaned();
                emptied = true;
            }
            if emptied {
                super::wake_waiters();
            }
        }
        // Rings of exited threads may have been freed: a thread waiting for one goes on.
        super::wake_waiters();
        if !at_exit {
            let dropped = ring::total_dropped();
            if dropped != self.dropped_written {
                self.stats(dropped);
            }
        }
        self.flush_buf();
    }

    fn stats(&mut self, dropped: u64) {
        let events = self.spans;
        self.json
            .metadata_with("npushim_stats", self.pid, self.pid as i32, |j| {
                j.raw("{\"events\":");
                j.u64(events);
                j.raw(",\"dropped\":");
                j.u64(dropped);
                j.raw("}");
            });
        self.dropped_written = dropped;
    }
}

/// Creates the file, writes the header and starts the writer thread.
pub fn start(settings: &Settings) -> bool {
    // The buffer first: without it no file is created at all.
    let Some(mut json) = Json::try_with_capacity(BUF_CAPACITY) else {
        crate::diag::warn!(
            "cannot allocate the trace output buffer ({} KiB); the program runs on untraced",
            BUF_CAPACITY >> 10
        );
        return false;
    };
    let mut host_buf = [0; 256];
    let host = hostname_in(&mut host_buf);
    let Some((fd, path)) = create_file(settings, host) else {
        return false;
    };
    let id = match file_id(fd) {
        Ok(id) => id,
        Err(e) => {
            crate::diag::warn!(
                "cannot inspect trace file {path}: {e}; the program runs on untraced"
            );
            // SAFETY: `fd` was just opened by us and is closed once.
            unsafe { libc::close(fd) };
            return false;
        }
    };
    let pid = getpid();
    let program = program();
    let program = program.as_str();
    let anchor = Anchor::now();
    let mut title = StackText::<320>::new();
    let _ = write!(title, "{program} (pid {pid}, rank {})", settings.rank);
    json.metadata_with("process_name", pid, pid as i32, |j| {
        j.raw("{\"name\":");
        j.string(title.as_str());
        j.raw("}");
    });
    json.metadata_with("npushim", pid, pid as i32, |meta| {
        meta.raw("{\"format\":1,\"version\":");
        meta.string(env!("CARGO_PKG_VERSION"));
        meta.raw(",\"program\":");
        meta.string(program);
        meta.raw(",\"pid\":");
        meta.u64(pid as u64);
        meta.raw(",\"rank\":");
        meta.u64(settings.rank as u64);
        meta.raw(",\"host\":");
        meta.string(host);
        meta.raw(",\"seed\":");
        meta.u64(super::seed());
        meta.raw(",\"clock\":{\"monotonic_us\":");
        meta.micros(anchor.monotonic_ns);
        meta.raw(",\"realtime_us\":");
        meta.micros(anchor.realtime_ns);
        meta.raw(",\"source\":");
        meta.string(super::clock::source());
        meta.raw("},\"config\":");
        meta.raw(&settings.config_json);
        meta.raw("}");
    });
    let mut w = Writer {
        fd,
        id,
        path,
        pid,
        json,
        named: HashSet::new(),
        dropped_written: 0,
        spans: 0,
        spans_written: 0,
    };
    if !w.flush_buf() {
        return false;
    }
    let mut path_for_info = StackText::<512>::new();
    let _ = path_for_info.write_str(&w.path);
    match WRITER.lock_for(Duration::from_secs(1)) {
        Some(mut slot) => *slot = Some(w),
        None => {
            w.close();
            return false;
        }
    }
    if let Err(e) = spawn_writer() {
        // Still traced: the exit handler drains the rings; producers meanwhile wait
        // briefly and then count what does not fit as dropped.
        crate::diag::warn!(
            "cannot start the trace writer thread ({e}); spans are written at exit only"
        );
    }
    crate::diag::info!("tracing to {}", path_for_info.as_str());
    true
}

/// Starts the writer thread with every signal blocked from its first instruction (the mask
/// is inherited from this thread, which blocks them for the length of `pthread_create`), so
/// the host's handlers never run on it and no signal a write raises there reaches the
/// host. A plain pthread: nothing is allocated on the heap for it, and its stack is small.
fn spawn_writer() -> Result<(), Errno> {
    // SAFETY: every sigset_t and the attribute object are initialised before use and the
    // attribute is destroyed once; the calling thread's mask is restored on every path;
    // `writer_main` has the signature pthread_create requires and uses no argument.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut old);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        let mut rc = libc::pthread_attr_init(&mut attr);
        if rc == 0 {
            libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
            // A program with a large static TLS may need more than our stack size: then
            // the default size.
            if libc::pthread_attr_setstacksize(&mut attr, WRITER_STACK) == 0 {
                let mut thread: libc::pthread_t = 0;
                rc = libc::pthread_create(&mut thread, &attr, writer_main, std::ptr::null_mut());
                if rc == libc::EINVAL {
                    libc::pthread_attr_destroy(&mut attr);
                    libc::pthread_attr_init(&mut attr);
                    libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
                    rc =
                        libc::pthread_create(&mut thread, &attr, writer_main, std::ptr::null_mut());
                }
                if rc == 0 {
                    libc::pthread_setname_np(thread, c"npushim-writer".as_ptr());
                }
            }
            libc::pthread_attr_destroy(&mut attr);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if rc == 0 { Ok(()) } else { Err(Errno(rc)) }
    }
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

extern "C" fn writer_main(_: *mut libc::c_void) -> *mut libc::c_void {
    // Already inherited from the creating thread; repeated in case that thread could not
    // change its own mask.
    block_signals();
    if std::panic::catch_unwind(writer_loop).is_err() {
        crate::diag::warn!("the trace writer failed; tracing stops here");
        super::stop();
    }
    std::ptr::null_mut()
}

fn writer_loop() {
    loop {
        let seen = KICK.seq();
        KICK.wait(seen, FLUSH_INTERVAL);
        if !super::is_running() {
            return;
        }
        if let Some(mut w) = WRITER.try_lock() {
            if let Some(w) = w.as_mut() {
                w.cycle(false);
            }
        }
    }
}

/// Writes what is recorded now, waiting at most `timeout` for the writer.
pub fn flush(timeout: Duration) {
    if let Some(mut w) = WRITER.lock_for(timeout) {
        if let Some(w) = w.as_mut() {
            w.cycle(false);
        }
    }
}

/// Records lost because a ring stayed full, as opposed to those lost for want of a ring.
fn full_ring_drops() -> u64 {
    ring::total_dropped()
        .saturating_sub(ring::ringless_dropped())
        .saturating_sub(ring::reentered())
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
    // Full rings dropped records until now because the writer fell behind; from now on,
    // because their threads were still calling while the process exited.
    let behind = full_ring_drops();
    w.cycle(true);
    // A thread that was in the middle of a call when exit began may have stored its
    // record after that drain: one more pass writes it.
    if ring::rings().any(|r| r.pending() > 0) {
        w.cycle(true);
    }
    if w.fd < 0 {
        return;
    }
    if let Some((name, args)) = super::take_exit_metadata() {
        let pid = w.pid;
        w.json.metadata(name, pid, pid as i32, &args);
    }
    let dropped = ring::total_dropped();
    w.stats(dropped);
    w.json.raw("]\n");
    if !w.flush_buf() {
        return;
    }
    w.close();
    let at_exit = full_ring_drops().saturating_sub(behind);
    let ringless = ring::ringless_dropped();
    if behind > 0 {
        crate::diag::warn!(
            "{behind} events were dropped because the trace writer could not keep up; \
             the count is in {} (npushim_stats)",
            w.path
        );
    }
    if at_exit > 0 {
        crate::diag::warn!(
            "{at_exit} events were dropped because their threads were still calling, with \
             full trace buffers, while the process exited; the count is in {} \
             (npushim_stats)",
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
    let reentered = ring::reentered();
    if reentered > 0 {
        crate::diag::warn!(
            "{reentered} calls made from signal handlers that interrupted npushim on their own \
             thread were forwarded but not traced; the count is in {} (npushim_stats)",
            w.path
        );
    }
    crate::diag::info!("trace written to {} ({} spans)", w.path, w.spans_written);
}

/// After fork, in the child: the parent's writer thread does not exist here and its file
/// must not be touched. The state is discarded without running its destructors (the
/// parent may have been in the middle of changing it).
pub fn fork_child() {
    // SAFETY: in the child only the forking thread exists; no guard can be live.
    unsafe { WRITER.force_unlock() };
    if let Some(mut slot) = WRITER.try_lock() {
        if let Some(w) = slot.take() {
            // Only if the number is still our file: the program may have reused it.
            if w.fd >= 0 && file_id(w.fd) == Ok(w.id) {
                // SAFETY: closing our copy of the descriptor does not affect the parent's.
                unsafe { libc::close(w.fd) };
            }
            std::mem::forget(w);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_span_lines_count_as_written() {
        let text = b"[{\"ph\":\"M\",\"name\":\"process_name\"}\n\
                     ,{\"ph\":\"X\",\"name\":\"a\"}\n\
                     ,{\"ph\":\"i\",\"name\":\"violation:align\"}\n\
                     ,{\"ph\":\"X\",\"name\":\"b\"}\n\
                     ,{\"ph\":\"X\",\"na";
        assert_eq!(spans_in(text), 2);
        let cut = text.iter().rposition(|&b| b == b'\n').unwrap();
        assert_eq!(spans_in(&text[..cut]), 1);
        assert_eq!(spans_in(b""), 0);
        assert_eq!(spans_in(b",{\"ph\":\"X\""), 0);
    }

    #[test]
    fn a_batch_always_fits_below_the_capacity() {
        assert!(BUF_LIMIT + DRAIN_BATCH as usize * RECORD_MAX <= BUF_CAPACITY);
    }
}
