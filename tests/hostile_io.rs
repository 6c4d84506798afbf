//! Never hurt the host (SPEC §11), the I/O half: a program that reuses the trace's
//! descriptor, runs short of address space or file size, or has its stderr on a pipe
//! nobody reads behaves under the shim exactly as without it. Each test runs the real
//! program (`tests/apps/hostile_io.c`) on the simulated runtime without and with
//! `LD_PRELOAD`, in the hostile condition, and compares.

mod common;

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Output, Stdio};

use common::{Run, build, ok, scratch, single_trace, stderr, stdout};

fn program() -> std::path::PathBuf {
    build().bin("hostile_io")
}

/// The shim's lines on stderr.
fn shim_lines(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("npushim: "))
        .map(str::to_string)
        .collect()
}

/// Asserts the shimmed run ended as the plain one did: same status, same stdout.
fn same_as_plain(plain: &Output, shimmed: &Output) {
    assert_eq!(
        (
            shimmed.status.code(),
            shimmed.status.to_string(),
            stdout(shimmed)
        ),
        (plain.status.code(), plain.status.to_string(), stdout(plain)),
        "the shim changed how the program ended\nstderr with the shim:\n{}\nwithout:\n{}",
        stderr(shimmed),
        stderr(plain)
    );
}

/// `program args…` started by `sh` after `ulimit LIMIT` (a limit for the program only).
fn limited(limit: &str, run: fn(&Path, &Path) -> Run, dir: &Path, args: &[&str]) -> Run {
    let script = format!("ulimit {limit} && exec \"$0\" \"$@\"");
    let prog = program();
    run(Path::new("/bin/sh"), dir)
        .args(["-c", &script])
        .arg(&prog)
        .args(args)
}

/// The number in "(N spans written" of the line containing `what`.
fn spans_written(lines: &[String], what: &str) -> u64 {
    let matching: Vec<&String> = lines.iter().filter(|l| l.contains(what)).collect();
    assert_eq!(matching.len(), 1, "one line saying {what:?}: {lines:#?}");
    let line = matching[0];
    let at = line
        .find(" spans written")
        .unwrap_or_else(|| panic!("{line}"));
    let digits = line[..at].rsplit('(').next().unwrap();
    digits.parse().unwrap_or_else(|_| panic!("{line}"))
}

#[test]
fn a_program_that_reuses_the_trace_descriptor_never_gets_trace_data() {
    let dir = scratch("hostile-reuse");
    let args = ["reuse", "10", "1000", "own.txt"];
    let plain = Run::plain(&program(), &dir).args(args).output();
    ok(&plain);
    let own_plain = std::fs::read_to_string(dir.join("own.txt")).unwrap();
    assert_eq!(own_plain.lines().count(), 1000);
    std::fs::remove_file(dir.join("own.txt")).unwrap();

    let shimmed = Run::shimmed(&program(), &dir)
        .env("NPUSHIM_LOG", "info")
        .args(args)
        .output();
    same_as_plain(&plain, &shimmed);
    let own = std::fs::read_to_string(dir.join("own.txt")).unwrap();
    assert!(
        own == own_plain,
        "trace data in the program's own file ({} bytes, {} expected):\n{}",
        own.len(),
        own_plain.len(),
        own.lines()
            .find(|l| !l.starts_with("own line"))
            .unwrap_or("")
    );
    let lines = shim_lines(&shimmed);
    let written = spans_written(&lines, "the program closed descriptor");
    assert!(
        !lines.iter().any(|l| l.contains("trace written")),
        "claims a trace it did not write: {lines:#?}"
    );
    // The file holds exactly what the line says reached it, and stays a loadable prefix.
    let trace = single_trace(&dir);
    assert!(!trace.complete);
    assert_eq!(trace.spans().count() as u64, written, "{lines:#?}");
    assert!(
        written <= 10,
        "spans written after the descriptor was reused: {written}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_file_size_limit_stops_tracing_not_the_program() {
    let dir = scratch("hostile-fsize");
    // 300 calls make a trace of about 75 KB, past the limit of 64 blocks (32 or 64 KiB
    // depending on the shell's block size); the program itself writes no file.
    let args = ["calls", "300"];
    let plain = limited("-f 64", Run::plain, &dir, &args).output();
    assert_eq!(ok(&plain), "calls 300 done\n");
    let shimmed = limited("-f 64", Run::shimmed, &dir, &args).output();
    same_as_plain(&plain, &shimmed);
    let lines = shim_lines(&shimmed);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("ulimit -f"), "{lines:#?}");
    let written = spans_written(&lines, "cannot write trace file");
    let trace = single_trace(&dir);
    let size = std::fs::metadata(&trace.path).unwrap().len();
    assert!(size > 0 && size <= 64 * 1024, "{size} bytes");
    assert!(!trace.complete);
    // The line counts the spans that landed whole (a partial last line is not one).
    assert_eq!(trace.spans().count() as u64, written);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `run` with stderr the write end of a pipe whose read end is already closed.
fn with_broken_stderr(run: Run) -> Output {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors; O_CLOEXEC keeps other tests' children
    // from inheriting the read end.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both descriptors were just created and are owned here, each once.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    let mut cmd = run.command();
    cmd.stdout(Stdio::piped()).stderr(Stdio::from(write));
    cmd.spawn().unwrap().wait_with_output().unwrap()
}

#[test]
fn a_stderr_pipe_without_reader_does_not_kill_the_program() {
    let dir = scratch("hostile-sigpipe");
    // The first call breaks the size rule: the shim has a line to say at once.
    let args = ["calls", "10", "bad"];
    let plain = with_broken_stderr(Run::plain(&program(), &dir).args(args));
    assert_eq!(ok(&plain), "calls 10 done\n");
    let shimmed = with_broken_stderr(Run::shimmed(&program(), &dir).args(args));
    same_as_plain(&plain, &shimmed);
    // Tracing went on: every call is a span, none dropped.
    let trace = single_trace(&dir);
    assert!(trace.complete);
    assert_eq!(trace.copies().count(), 10);
    assert_eq!(trace.meta("npushim_stats").unwrap()["args"]["dropped"], 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_writer_thread_blocks_every_signal() {
    let dir = scratch("hostile-mask");
    let out = Run::shimmed(&program(), &dir).arg("writer-mask").output();
    let text = ok(&out);
    let hex = text
        .strip_prefix("writer SigBlk ")
        .unwrap_or_else(|| panic!("no writer thread found: {text}"))
        .trim();
    let mask = u64::from_str_radix(hex, 16).unwrap();
    // Only what cannot be blocked stays open: SIGKILL and SIGSTOP (the kernel's), and the
    // two signals glibc keeps for itself (32, 33).
    let open = [9, 19, 32, 33].iter().fold(0u64, |m, s| m | 1 << (s - 1));
    assert_eq!(mask | open, u64::MAX, "SigBlk {hex}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `VmSize` (KiB) of the program with the shim loaded, where its first call would be.
fn vm_before_first_call(dir: &Path) -> u64 {
    // Untraced: the program's teardown (a stream synchronize) is a hooked call too.
    let out = Run::shimmed(&program(), dir)
        .env("NPUSHIM_TRACE", "off")
        .arg("vm")
        .output();
    let text = ok(&out);
    text.trim()
        .strip_prefix("VmSize ")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{text}"))
}

#[test]
fn address_space_exhaustion_stops_tracing_not_the_program() {
    let dir = scratch("hostile-vm");
    let calls = 3000;
    let args = ["calls", "3000"];
    let base = vm_before_first_call(&dir);
    // From no room at all for the shim's memory past this point to room for all of it:
    // one of these limits falls on each allocation the shim makes (the trace buffer,
    // the thread's ring, the writer thread's stack).
    let mut squeezed = 0;
    for extra_kib in [128, 512, 1024, 1536, 2048, 2560, 3072, 4096, 6144, 8192] {
        let limit = format!("-v {}", base + extra_kib);
        let plain = limited(&limit, Run::plain, &dir, &args).output();
        if !plain.status.success() {
            // Too tight for the program itself: nothing to compare.
            continue;
        }
        let shimmed = limited(&limit, Run::shimmed, &dir, &args).output();
        same_as_plain(&plain, &shimmed);
        let lines = shim_lines(&shimmed);
        if lines.iter().any(|l| l.contains("cannot allocate")) {
            squeezed += 1;
        }
        // No empty file is left behind; whatever was traced is a loadable trace, and a
        // complete one has every call as a span or counted as dropped.
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let len = std::fs::metadata(&path).unwrap().len();
            assert!(
                len > 0,
                "limit {limit}: empty {}: {lines:#?}",
                path.display()
            );
        }
        for (_, trace) in common::traces_in(&dir) {
            // Stats lines are written when the drop count changes and once at exit: never
            // the same line twice.
            let stats: Vec<String> = trace
                .events
                .iter()
                .filter(|e| e["name"] == "npushim_stats")
                .map(|e| e["args"].to_string())
                .collect();
            let mut distinct = stats.clone();
            distinct.dedup();
            assert_eq!(stats, distinct, "limit {limit}: npushim_stats repeated");
            if trace.complete {
                // The last stats line is the one written at exit (earlier ones are written
                // while the run goes on, whenever the drop count changed).
                let last = stats.last().expect("a stats line");
                let dropped = serde_json::from_str::<serde_json::Value>(last).unwrap()["dropped"]
                    .as_u64()
                    .unwrap();
                // The copies, and the program's other hooked calls: aclrtMalloc and
                // aclrtMallocHost in its setup, aclrtSynchronizeStream, aclrtFree and
                // aclrtFreeHost in its teardown.
                assert_eq!(
                    trace.spans().count() as u64 + dropped,
                    calls + 5,
                    "limit {limit}: {lines:#?}"
                );
            }
            std::fs::remove_file(&trace.path).unwrap();
        }
    }
    assert!(
        squeezed > 0,
        "no limit reproduced an allocation failure in the shim (VmSize {base} kB)"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
