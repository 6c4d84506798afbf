//! Shared by the integration tests: builds the simulated Ascend runtime and the example
//! programs (once per test run, under a file lock so parallel test binaries cooperate),
//! runs programs under `LD_PRELOAD=libnpushim.so`, and parses traces.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// Where the simulated runtime and the programs are built.
pub struct Build {
    pub out: PathBuf,
    pub shim: PathBuf,
}

impl Build {
    pub fn bin(&self, name: &str) -> PathBuf {
        let p = self.out.join("bin").join(name);
        assert!(p.exists(), "{} was not built", p.display());
        p
    }
    pub fn lib_dir(&self) -> PathBuf {
        self.out.join("lib")
    }
    pub fn simtest(&self, name: &str) -> PathBuf {
        self.out.join("simtest").join(name)
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>` of the running test binary (`target/<profile>/deps/<test>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

/// Builds everything once (make is incremental; the flock serialises test binaries).
pub fn build() -> &'static Build {
    static BUILD: OnceLock<Build> = OnceLock::new();
    BUILD.get_or_init(|| {
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("npusim");
        std::fs::create_dir_all(&out).unwrap();
        let lock = File::create(out.join(".lock")).unwrap();
        // SAFETY: flock on a descriptor we own; released when `lock` is dropped.
        unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        let status = Command::new("make")
            .args(["-s", "-j2", "-C"])
            .arg(repo().join("tests"))
            .arg(format!("OUT={}", out.display()))
            .status()
            .expect("make runs");
        assert!(status.success(), "building the simulated runtime failed");
        drop(lock);
        // `cargo test` builds the cdylib into deps/ (only `cargo build` copies it up a level,
        // so the copy there may be stale).
        let shim = profile_dir().join("deps").join("libnpushim.so");
        assert!(shim.exists(), "{} missing", shim.display());
        Build { out, shim }
    })
}

/// A private scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("scratch")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The longest any test program may run.
pub const DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// Waits until `done` holds, checking it every 10 ms, and fails the test if it still does
/// not after [`DEADLINE`]: for what only shows from outside a running program, such as the
/// contents of a file it writes.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < DEADLINE,
            "still waiting, after {DEADLINE:?}, until {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// How to run one program.
pub struct Run {
    cmd: Command,
}

impl Run {
    /// `program` under the shim, tracing into `dir/trace-%p.json`, cwd `dir`.
    pub fn shimmed(program: &Path, dir: &Path) -> Run {
        let b = build();
        let mut r = Run::plain(program, dir);
        r.cmd.env("LD_PRELOAD", &b.shim);
        r.cmd.env("NPUSHIM_TRACE", dir.join("trace-%p.json"));
        r
    }

    /// `program` without the shim, cwd `dir`.
    pub fn plain(program: &Path, dir: &Path) -> Run {
        let mut cmd = Command::new(program);
        cmd.current_dir(dir);
        for (k, _) in std::env::vars() {
            if k.starts_with("NPUSHIM_") || k.starts_with("NPUSIM_") || k == "LD_PRELOAD" {
                cmd.env_remove(k);
            }
        }
        cmd.stdin(Stdio::null());
        Run { cmd }
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Run {
        self.cmd.env(k, v);
        self
    }

    pub fn arg(mut self, a: impl AsRef<std::ffi::OsStr>) -> Run {
        self.cmd.arg(a);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Logs every call the simulated runtime receives into `path`.
    pub fn sim_log(self, path: &Path) -> Run {
        self.env("NPUSIM_LOG", path)
    }

    /// Runs to completion; a program still running after [`DEADLINE`] is killed and the
    /// test fails (a hung program must not hang the suite or fill the disk).
    pub fn output(mut self) -> Output {
        let child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("program starts");
        let pid = child.id() as libc::pid_t;
        // The watchdog sleeps until the program is reaped (the sender is dropped) or the
        // deadline passes, whichever comes first.
        let (reaped, watched) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || match watched.recv_timeout(DEADLINE) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                // SAFETY: signalling a child we spawned; the main thread has not reaped it
                // (it drops `reaped` only after reaping).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                true
            }
            _ => false,
        });
        let out = child.wait_with_output().expect("program runs");
        drop(reaped);
        assert!(
            !watchdog.join().unwrap(),
            "program killed after {DEADLINE:?}\nstdout:\n{}\nstderr:\n{}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    pub fn command(self) -> Command {
        self.cmd
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stdout.
pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// A parsed trace.
pub struct Trace {
    pub events: Vec<Value>,
    /// The file ended with `]` (normal exit).
    pub complete: bool,
    pub path: PathBuf,
}

/// Parses a trace file as the format promises: whole lines are a valid array prefix.
pub fn parse_trace(path: &Path) -> Trace {
    let text = std::fs::read_to_string(path).unwrap();
    let complete = text.trim_end().ends_with(']');
    let mut body = text.clone();
    if !complete {
        // Drop a partial last line, then close the array.
        if !body.ends_with('\n') {
            body.truncate(body.rfind('\n').map_or(0, |i| i + 1));
        }
        body.push(']');
    }
    let events: Vec<Value> = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{} is not a JSON array: {e}", path.display()));
    Trace {
        events,
        complete,
        path: path.to_path_buf(),
    }
}

/// Every trace file in `dir` (named `trace-*.json`), parsed, keyed by pid.
pub fn traces_in(dir: &Path) -> HashMap<u64, Trace> {
    let mut out = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("trace-") && name.ends_with(".json") {
            let t = parse_trace(&path);
            let pid = t
                .meta("npushim")
                .map(|m| m["args"]["pid"].as_u64().unwrap())
                .unwrap_or(0);
            out.insert(pid, t);
        }
    }
    out
}

/// The only trace in `dir`.
pub fn single_trace(dir: &Path) -> Trace {
    let mut all = traces_in(dir);
    assert_eq!(all.len(), 1, "expected one trace in {}", dir.display());
    all.drain().next().unwrap().1
}

impl Trace {
    pub fn spans(&self) -> impl Iterator<Item = &Value> {
        self.events.iter().filter(|e| e["ph"] == "X")
    }
    /// Spans of the two seed copy functions (what the tests' programs drive and the
    /// simulated runtime logs by default), in trace order.
    pub fn copies(&self) -> impl Iterator<Item = &Value> {
        self.spans()
            .filter(|e| e["name"] == "aclrtMemcpyAsync" || e["name"] == "HcclMemcpyAsync")
    }
    pub fn spans_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.spans().filter(move |e| e["name"] == name)
    }
    pub fn meta(&self, name: &str) -> Option<&Value> {
        self.events
            .iter()
            .find(|e| e["ph"] == "M" && e["name"] == name)
    }
    pub fn instants(&self) -> impl Iterator<Item = &Value> {
        self.events.iter().filter(|e| e["ph"] == "i")
    }
}

/// One line of the simulated runtime's call log, as key → value.
pub fn sim_log(path: &Path) -> Vec<(String, HashMap<String, String>)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let mut parts = line.split(' ');
            let name = parts.next().unwrap().to_string();
            let kv = parts
                .filter_map(|p| p.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (name, kv)
        })
        .collect()
}

/// `%p` as glibc prints it ("(nil)" for NULL) → the trace's `"0x…"` form.
pub fn ptr_to_hex(p: &str) -> String {
    if p == "(nil)" {
        "0x0".to_string()
    } else {
        p.to_string()
    }
}

/// Compiles a standalone C/C++ source with explicit flags (for programs that must not be
/// built with the Makefile's vendor link line).
pub fn compile(src: &Path, out: &Path, extra: &[&str]) {
    let cxx = src.extension().is_some_and(|e| e == "cpp");
    let status = Command::new(if cxx { "g++" } else { "gcc" })
        .args(["-O2", "-g", "-Wall", "-Wextra", "-Werror", "-pthread"])
        .arg("-I")
        .arg(repo().join("tests/sim/include"))
        .arg("-I")
        .arg(repo().join("include"))
        .arg(src)
        .arg("-o")
        .arg(out)
        .args(extra)
        .status()
        .unwrap();
    assert!(status.success(), "compiling {} failed", src.display());
}

pub fn repo_path(rel: &str) -> PathBuf {
    repo().join(rel)
}

/// A span's `kind` (or `linkType`) as the integer the program passed: the trace writes the
/// enum's name when it knows it, the number otherwise.
pub fn enum_value(span: &Value, field: &str) -> i64 {
    use npushim::abi::types::{Api, kind_by_name, link_by_name};
    let v = &span["args"][field];
    if let Some(n) = v.as_i64() {
        return n;
    }
    let name = v.as_str().unwrap_or_else(|| panic!("{field} in {span}"));
    let api = if span["name"] == "HcclMemcpyAsync" {
        Api::Hccl
    } else {
        Api::Acl
    };
    let value = match field {
        "linkType" => link_by_name(name),
        _ => kind_by_name(api, name),
    };
    value.unwrap_or_else(|| panic!("unknown {field} {name}")) as i64
}
