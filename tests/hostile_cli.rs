//! Never hurt the host, from the command line and the environment (SPEC §11): `npushim
//! merge -o` onto paths it did not create (a FIFO with a reader, character devices, symbolic
//! links, stdout) and settings that are not UTF-8, each checked with the real special file
//! or a real program under `LD_PRELOAD`.
//!
//! Character devices are made with `mknod` in a scratch directory (a null and a full
//! device, the same numbers as `/dev/null` and `/dev/full`), so that a regression can never
//! replace the host's own `/dev` entries; where `mknod` is not allowed the tests use
//! `/dev/null` and `/dev/full` only if this process cannot write to `/dev` at all.

mod common;

use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_npushim");

fn fixture(name: &str) -> PathBuf {
    common::repo_path("tests/fixtures").join(name)
}

fn merge(output: &OsStr) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("merge")
        .arg("-o")
        .arg(output)
        .arg(fixture("rank0.json"))
        .arg(fixture("rank1.json"))
        .stdin(Stdio::null());
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A failure of the tool: status 2 and exactly one `npushim: ` line containing `needle`.
fn assert_refused(output: &Output, needle: &str) {
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("npushim: "), "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
}

/// The events of a merged trace, which must be complete JSON.
fn merged_events(bytes: &[u8]) -> Vec<Value> {
    let events: Vec<Value> = serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not a complete trace ({e}): {}", text(bytes)));
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "X" && e["name"] == "aclrtMemcpyAsync"),
        "no spans in the merged trace"
    );
    events
}

/// What a merge of the two fixtures into a regular file holds, to compare other outputs to.
fn reference_events() -> Vec<Value> {
    let dir = common::scratch("merge-reference");
    let out = dir.join("merged.json");
    let output = merge(out.as_os_str()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    merged_events(&fs::read(&out).unwrap())
}

/// The events are those a merge into a regular file writes.
fn assert_same_events(got: &[Value]) {
    assert_eq!(got, reference_events().as_slice());
}

fn cstring(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).unwrap()
}

/// A character device `name` in `dir` with the numbers of `/dev/<name>`, or the host's own
/// `/dev/<name>` when nodes cannot be made and `/dev` is not writable (so a regression
/// could not replace it); `None` when neither is safe.
fn char_device(dir: &Path, name: &str, minor: u32) -> Option<PathBuf> {
    let path = dir.join(name);
    // SAFETY: a NUL-terminated path; mknod only creates a node in our scratch directory.
    let made = unsafe {
        libc::mknod(
            cstring(&path).as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(1, minor),
        )
    };
    if made == 0 {
        return Some(path);
    }
    let dev = cstring(Path::new("/dev"));
    // SAFETY: a NUL-terminated path; access only queries permissions.
    let dev_writable = unsafe { libc::access(dev.as_ptr(), libc::W_OK) } == 0;
    if dev_writable {
        eprintln!("cannot make a device node and /dev is writable: not testing {name}");
        return None;
    }
    Some(Path::new("/dev").join(name))
}

fn device_identity(path: &Path) -> (bool, u64) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.file_type().is_char_device(), meta.rdev())
}

#[test]
fn merge_writes_through_a_fifo_and_leaves_it_a_fifo() {
    let dir = common::scratch("merge-fifo");
    let fifo = dir.join("out.fifo");
    // SAFETY: a NUL-terminated path in our scratch directory.
    assert_eq!(unsafe { libc::mkfifo(cstring(&fifo).as_ptr(), 0o600) }, 0);
    // Our read end is opened first (non-blocking, so the open does not wait for a writer),
    // then a write end of our own, so the reader sees end-of-file only once both we and
    // npushim have closed theirs, whether or not npushim ever opened the FIFO.
    // SAFETY: NUL-terminated path; the returned descriptors are owned below.
    let read_fd = unsafe { libc::open(cstring(&fifo).as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) };
    assert!(read_fd >= 0);
    // SAFETY: `read_fd` was just opened and is owned by nothing else.
    let read_end = unsafe { OwnedFd::from_raw_fd(read_fd) };
    // SAFETY: as above; a reader exists, so a non-blocking open for writing succeeds.
    let write_fd =
        unsafe { libc::open(cstring(&fifo).as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK) };
    assert!(write_fd >= 0);
    // SAFETY: `write_fd` was just opened and is owned by nothing else.
    let our_writer = unsafe { OwnedFd::from_raw_fd(write_fd) };
    // SAFETY: clearing O_NONBLOCK on our own descriptor so that the reader thread waits.
    assert_eq!(unsafe { libc::fcntl(read_fd, libc::F_SETFL, 0) }, 0);
    let reader = std::thread::spawn(move || {
        let mut data = Vec::new();
        File::from(read_end).read_to_end(&mut data).unwrap();
        data
    });

    let output = merge(fifo.as_os_str()).output().unwrap();
    drop(our_writer);
    let data = reader.join().unwrap();

    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).starts_with("merged 2 traces into "));
    assert!(
        fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(),
        "the FIFO was replaced"
    );
    assert_same_events(&merged_events(&data));
    let left: Vec<_> = fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "temporary files left behind: {left:?}");
}

#[test]
fn merge_writes_into_a_null_device_and_leaves_it_a_device() {
    let dir = common::scratch("merge-null");
    let Some(null) = char_device(&dir, "null", 3) else {
        return;
    };
    let before = device_identity(&null);
    let output = merge(null.as_os_str()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(device_identity(&null), before);
    assert_eq!(before, (true, libc::makedev(1, 3)));
}

#[test]
fn merge_onto_a_full_device_fails_with_one_line_and_leaves_it_a_device() {
    let dir = common::scratch("merge-full");
    let Some(full) = char_device(&dir, "full", 7) else {
        return;
    };
    let before = device_identity(&full);
    let output = merge(full.as_os_str()).output().unwrap();
    assert_refused(&output, "cannot write output: No space left on device");
    assert_eq!(device_identity(&full), before);
    assert_eq!(before, (true, libc::makedev(1, 7)));
}

#[test]
fn merge_refuses_a_symlink_to_a_file_and_leaves_link_and_target_alone() {
    let dir = common::scratch("merge-symlink");
    let target = dir.join("target.json");
    fs::write(&target, "keep me\n").unwrap();
    let link = dir.join("link.json");
    std::os::unix::fs::symlink("target.json", &link).unwrap();
    let dangling = dir.join("dangling.json");
    std::os::unix::fs::symlink("nowhere.json", &dangling).unwrap();

    let output = merge(link.as_os_str()).output().unwrap();
    assert_refused(&output, "symbolic link");
    assert!(text(&output.stderr).contains("-o -"));
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("target.json"));
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep me\n");

    let output = merge(dangling.as_os_str()).output().unwrap();
    assert_refused(&output, "symbolic link");
    assert_eq!(fs::read_link(&dangling).unwrap(), Path::new("nowhere.json"));
    assert!(!dir.join("nowhere.json").exists());

    let mut left: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["dangling.json", "link.json", "target.json"]);
}

#[test]
fn merge_refuses_a_directory() {
    let dir = common::scratch("merge-dir");
    let output = merge(dir.as_os_str()).output().unwrap();
    assert_refused(&output, "is a directory");
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

#[test]
fn merge_to_dash_writes_the_trace_to_stdout_and_the_summary_to_stderr() {
    let dir = common::scratch("merge-dash");
    let output = merge(OsStr::new("-")).current_dir(&dir).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_same_events(&merged_events(&output.stdout));
    assert!(text(&output.stderr).starts_with("merged 2 traces into stdout"));
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "no file named '-'");
}

#[test]
fn merge_through_a_symlink_to_stdout_writes_to_the_pipe() {
    // What /dev/stdout is: a symbolic link to the process's fd 1, here a pipe. A link of
    // our own stands in for it, so that a regression replaces only the scratch link.
    let dir = common::scratch("merge-dev-stdout");
    let stdout = dir.join("stdout");
    std::os::unix::fs::symlink("/proc/self/fd/1", &stdout).unwrap();
    let output = merge(stdout.as_os_str()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_same_events(&merged_events(&output.stdout));
    let summary = format!("merged 2 traces into {}", stdout.display());
    assert!(
        text(&output.stderr).starts_with(&summary),
        "{}",
        text(&output.stderr)
    );
    assert!(
        fs::symlink_metadata(&stdout)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        1,
        "temporary files left"
    );
}

#[test]
fn merged_files_are_created_0600_and_a_regular_file_is_replaced() {
    let dir = common::scratch("merge-mode");
    let new = dir.join("new.json");
    let output = merge(new.as_os_str()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        fs::metadata(&new).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let old = dir.join("old.json");
    fs::write(&old, "old\n").unwrap();
    fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).unwrap();
    let output = merge(old.as_os_str()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        fs::metadata(&old).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_same_events(&merged_events(&fs::read(&old).unwrap()));
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        2,
        "temporary files left"
    );
}

// ------------------------------------------------------------- settings that are not UTF-8

#[test]
fn faults_that_are_not_utf8_cost_one_line_and_inject_nothing() {
    use common::{Run, build, ok, stderr};
    let dir = common::scratch("faults-not-utf8");
    let app = build().bin("copy_pipeline");
    let spec = OsStr::from_bytes(b"*=return\xff");
    // Without the `pageable` advice copy_pipeline gets on purpose.
    let out = Run::shimmed(&app, &dir)
        .env("NPUSHIM_FAULTS", spec)
        .env("NPUSHIM_CHECK", "warn,-pageable")
        .output();
    let plain = Run::plain(&app, &dir).output();
    assert_eq!(ok(&out), ok(&plain));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("npushim: NPUSHIM_FAULTS=\"*=return\\xff\" is not UTF-8 text; "),
        "{err}"
    );
    assert!(common::single_trace(&dir).complete);
}
