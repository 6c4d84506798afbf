//! Handle lookups (SPEC §2.3): programs that find AscendCL functions with `dlopen` +
//! `dlsym(handle, …)` — a C program like torch_npu, a Python `ctypes` program — are seen
//! under the shim, print exactly what they print without it, and every lookup the shim
//! does not rewrite (other names, `RTLD_DEFAULT`, `RTLD_NEXT`, a second copy of the
//! library, everything with `NPUSHIM_DLSYM=0`) lands where it lands without the shim.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use common::{Run, build, compile, ok, repo_path, scratch, stderr, traces_in};

/// `tests/progs/handle_lookup.c`, built without linking the vendor libraries (they are
/// only ever `dlopen`ed).
fn handle_lookup() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let exe = scratch("dlsym-progs").join("handle_lookup");
        compile(&repo_path("tests/progs/handle_lookup.c"), &exe, &[]);
        exe
    })
}

fn python() -> Option<PathBuf> {
    // The real interpreter, not a wrapper script that would run under the shim too.
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(path.trim())).filter(|p| p.exists())
}

fn plain(program: &Path, dir: &Path) -> Run {
    Run::plain(program, dir).env("LD_LIBRARY_PATH", build().lib_dir())
}

fn shimmed(program: &Path, dir: &Path) -> Run {
    Run::shimmed(program, dir).env("LD_LIBRARY_PATH", build().lib_dir())
}

/// stdout without the lines that describe what a preloaded library adds.
fn without_preload_lines(out: &str) -> String {
    out.lines()
        .filter(|l| !l.starts_with("preload:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn npushim_lines(o: &Output) -> Vec<String> {
    stderr(o)
        .lines()
        .filter(|l| l.starts_with("npushim:"))
        .map(str::to_string)
        .collect()
}

/// Spans of `name` over every trace in `dir` (none if no trace was written).
fn spans(dir: &Path, name: &str) -> usize {
    traces_in(dir)
        .values()
        .map(|t| t.spans_named(name).count())
        .sum()
}

#[test]
fn calls_found_through_a_handle_are_seen_local_and_global() {
    for mode in ["local", "global"] {
        let dir = scratch(&format!("dlsym-{mode}"));
        let expected = ok(&plain(handle_lookup(), &dir).arg(mode).output());
        let out = shimmed(handle_lookup(), &dir).arg(mode).output();
        let got = ok(&out);
        assert!(got.contains("there and back: identical"), "{got}");
        assert_eq!(
            without_preload_lines(&got),
            without_preload_lines(&expected)
        );
        assert_eq!(spans(&dir, "aclrtMemcpyAsync"), 1, "{mode}");
        assert_eq!(spans(&dir, "aclrtMemcpyAsyncWithCondition"), 1, "{mode}");
        assert_eq!(spans(&dir, "aclrtSynchronizeStream"), 1, "{mode}");
        assert!(
            !stderr(&out).contains("not seen"),
            "{mode}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn rtld_next_from_the_program_still_means_after_the_program() {
    // glibc answers RTLD_NEXT from the caller's address: had the shim's dlsym called
    // glibc's, the caller would be the shim, and its own symbols would be skipped.
    let dir = scratch("dlsym-next");
    let plain_out = ok(&plain(handle_lookup(), &dir).arg("local").output());
    let shim_out = ok(&shimmed(handle_lookup(), &dir).arg("local").output());
    assert!(
        plain_out.contains("preload: next npushim_version: not found\n"),
        "{plain_out}"
    );
    assert!(
        shim_out.contains("preload: next npushim_version: libnpushim.so+0x"),
        "{shim_out}"
    );
    for line in [
        "next getpid: libc.so.6+0x",
        "default getpid: libc.so.6+0x",
        "versioned handle getpid: libc.so.6+0x",
        "default aclInit: not found",
        "handle aclInit: libascendcl.so+0x",
        "dlerror after a failed lookup: set",
    ] {
        assert!(shim_out.contains(line), "{line}: {shim_out}");
    }
}

#[test]
fn npushim_dlsym_0_restores_the_bypass() {
    let dir = scratch("dlsym-off");
    let expected = ok(&plain(handle_lookup(), &dir).arg("local").output());
    let out = shimmed(handle_lookup(), &dir)
        .arg("local")
        .env("NPUSHIM_DLSYM", "0")
        .output();
    assert_eq!(
        without_preload_lines(&ok(&out)),
        without_preload_lines(&expected)
    );
    assert_eq!(spans(&dir, "aclrtMemcpyAsync"), 0);
    assert_eq!(spans(&dir, "aclrtMemcpyAsyncWithCondition"), 0);
    assert_eq!(npushim_lines(&out), Vec::<String>::new());
}

#[test]
fn a_second_copy_of_the_library_is_answered_untouched_with_one_line() {
    let dir = scratch("dlsym-copy");
    let copy = dir.join("libascendcl-copy.so");
    std::fs::copy(build().lib_dir().join("libascendcl.so"), &copy).unwrap();
    let expected = ok(&plain(handle_lookup(), &dir)
        .arg("local")
        .arg(&copy)
        .output());
    let out = shimmed(handle_lookup(), &dir)
        .arg("local")
        .arg(&copy)
        .output();
    let got = ok(&out);
    assert_eq!(
        without_preload_lines(&got),
        without_preload_lines(&expected)
    );
    assert!(
        got.contains("copy aclrtMemcpyAsync: libascendcl-copy.so+0x"),
        "{got}"
    );
    let lines = npushim_lines(&out);
    let about_copy: Vec<&String> = lines.iter().filter(|l| l.contains("not seen")).collect();
    assert_eq!(about_copy.len(), 1, "{lines:?}");
    assert!(
        about_copy[0].contains("aclrtMemcpyAsync was looked up in")
            && about_copy[0].contains("libascendcl-copy.so"),
        "{}",
        about_copy[0]
    );
    // The calls through the first copy are still seen.
    assert_eq!(spans(&dir, "aclrtMemcpyAsync"), 1);
}

#[test]
fn a_python_ctypes_program_is_seen() {
    let Some(python) = python() else {
        panic!("python3 is required for this test");
    };
    let script = repo_path("tests/apps/ctypes_copy.py");
    let dir = scratch("dlsym-ctypes");
    let expected = ok(&plain(&python, &dir).arg(&script).output());
    let out = shimmed(&python, &dir).arg(&script).output();
    assert_eq!(ok(&out), expected);
    assert!(expected.contains("identical"), "{expected}");
    assert_eq!(spans(&dir, "aclrtMemcpyAsync"), 3);
    assert_eq!(spans(&dir, "aclrtMemcpyAsyncWithCondition"), 3);
    assert_eq!(spans(&dir, "aclrtSynchronizeStream"), 3);

    let off = scratch("dlsym-ctypes-off");
    let out = shimmed(&python, &off)
        .arg(&script)
        .env("NPUSHIM_DLSYM", "0")
        .output();
    assert_eq!(ok(&out), expected);
    assert_eq!(spans(&off, "aclrtMemcpyAsync"), 0);
}

/// The library loaded with `dlopen` long after start (as `ctypes.CDLL` loads it), while
/// another thread already runs: its static TLS words exist and start empty in both threads,
/// and copies through its exports are checked, forwarded and traced.
#[test]
fn the_library_loaded_late_with_dlopen_works_in_threads_that_already_existed() {
    let dir = scratch("dlsym-late-load");
    let exe = dir.join("late_load");
    let sim_lib = build().lib_dir().to_str().unwrap().to_string();
    compile(
        &repo_path("tests/progs/late_load.c"),
        &exe,
        &["-L", &sim_lib, "-lascendcl", "-ldl"],
    );
    let out = plain(&exe, &dir)
        .arg(&build().shim)
        .env("NPUSHIM_TRACE", dir.join("trace-%p.json"))
        .output();
    let got = ok(&out);
    assert!(got.starts_with("loaded "), "{got}");
    assert!(got.contains("thread main: copied and verified"), "{got}");
    assert!(got.contains("thread early: copied and verified"), "{got}");
    // Two copies per thread, each its own span, on the thread that made it.
    let traces = traces_in(&dir);
    let copies: Vec<_> = traces
        .values()
        .flat_map(|t| t.spans_named("aclrtMemcpyAsync"))
        .collect();
    assert_eq!(copies.len(), 4, "{}", stderr(&out));
    let threads: std::collections::BTreeSet<_> =
        copies.iter().map(|c| c["tid"].as_u64().unwrap()).collect();
    assert_eq!(threads.len(), 2);
    assert!(copies.iter().all(|c| c["args"]["ret"] == 0));
}

/// What one lookup costs with and without the shim (`cargo test --test dlsym -- --ignored
/// --nocapture`); prints the numbers, asserts only that both runs work.
#[test]
#[ignore]
fn lookup_cost() {
    let dir = scratch("dlsym-cost");
    let exe = dir.join("dlsym_cost");
    compile(&repo_path("tests/bench/dlsym_cost.c"), &exe, &[]);
    let lookups = "1000000";
    let without = ok(&plain(&exe, &dir).arg(lookups).output());
    let with = ok(&shimmed(&exe, &dir)
        .arg(lookups)
        .env("NPUSHIM_TRACE", "off")
        .output());
    println!("without the shim:\n{without}with the shim:\n{with}");
}
