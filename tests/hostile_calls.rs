//! Never hurt the host (SPEC §11), on the call path: thread cancellation inside a hooked
//! call, calls from signal handlers that interrupt the shim, thread churn, two copies of the
//! library in one process, and panics anywhere in the shim. Each test reproduces the hostile
//! condition with a real program under `LD_PRELOAD` and compares it with the same program
//! run without the shim.

mod common;

use std::path::Path;

use common::{Run, Trace, build, ok, scratch, single_trace, stderr, stdout};

/// The `key=N` number of the program's stderr line that starts with `prefix`.
fn reported(err: &str, prefix: &str, key: &str) -> u64 {
    let line = err
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in:\n{err}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

/// `npushim_stats.dropped` of a finished trace.
fn dropped(trace: &Trace) -> u64 {
    trace
        .events
        .iter()
        .rev()
        .find(|e| e["name"] == "npushim_stats")
        .map_or(0, |e| e["args"]["dropped"].as_u64().unwrap())
}

/// The lines of `err` that the shim printed.
fn shim_lines(err: &str) -> Vec<&str> {
    err.lines().filter(|l| l.starts_with("npushim: ")).collect()
}

#[test]
fn a_thread_cancelled_inside_a_hooked_call_is_cancelled_as_without_the_shim() {
    let dir = scratch("cancel");
    let bin = build().bin("hostile_cancel");
    // In the runtime's own wait (a pageable copy behind a slow one), traced and untraced,
    // and in a `delay` fault.
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("pageable", &[]),
        ("pageable", &[("NPUSHIM_TRACE", "off")]),
        (
            "pinned",
            &[("NPUSHIM_FAULTS", "aclrtMemcpyAsync=delay(30s)")],
        ),
        (
            "pageable",
            &[("NPUSHIM_FAULTS", "aclrtMemcpyAsync[count<1M]=delay(30s)")],
        ),
    ];
    for (mode, env) in cases {
        let plain = Run::plain(&bin, &dir)
            .env("NPUSIM_GBPS", "0.001")
            .arg(mode)
            .output();
        let expected = ok(&plain);
        assert_eq!(expected, "worker cancelled\nmain done\n");
        let mut run = Run::shimmed(&bin, &dir)
            .env("NPUSIM_GBPS", "0.001")
            .arg(mode);
        for (k, v) in env {
            run = run.env(k, v);
        }
        let out = run.output();
        assert_eq!(ok(&out), expected, "{mode} {env:?}\n{}", stderr(&out));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn calls_from_a_signal_handler_that_interrupts_the_shim_are_forwarded_and_counted() {
    let dir = scratch("signal");
    let bin = build().bin("hostile_signal");
    let plain = Run::plain(&bin, &dir).output();
    let expected = ok(&plain);
    let out = Run::shimmed(&bin, &dir).output();
    assert_eq!(ok(&out), expected, "{}", stderr(&out));
    let err = stderr(&out);
    let calls =
        reported(&err, "hostile_signal:", "main") + reported(&err, "hostile_signal:", "handler");
    let trace = single_trace(&dir);
    assert!(trace.complete);
    let spans = trace.copies().count() as u64;
    // Every call is a span or counted as dropped; none is lost silently.
    assert_eq!(spans + dropped(&trace), calls, "{err}");
    // A handler's call interrupts the program, it is not nested in its copy.
    assert!(trace.spans().all(|s| s["args"].get("depth").is_none()));
    // Handler calls that could not be traced are reported with their own reason, and only
    // when there were some; none of them is blamed on a slow writer.
    assert_eq!(
        err.contains("from signal handlers"),
        dropped(&trace) > 0,
        "{err}"
    );
    assert!(!err.contains("could not keep up"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn memory_follows_the_threads_alive_not_the_threads_ever_created() {
    let dir = scratch("churn");
    let bin = build().bin("hostile_churn");
    let threads = "100000";
    let plain = Run::plain(&bin, &dir).arg(threads).output();
    let expected = ok(&plain);
    let out = Run::shimmed(&bin, &dir).arg(threads).output();
    assert_eq!(ok(&out), expected, "{}", stderr(&out));
    let plain_kib = reported(&stderr(&plain), "hostile_churn:", "peak_rss_kib");
    let shim_kib = reported(&stderr(&out), "hostile_churn:", "peak_rss_kib");
    // The rings of exited threads waiting for the writer are capped at 16 MiB; the writer's
    // buffer and the trace state take a few more.
    let cap_kib = 32 * 1024;
    assert!(
        shim_kib <= plain_kib + cap_kib,
        "peak RSS {shim_kib} KiB with the shim, {plain_kib} KiB without"
    );
    let trace = single_trace(&dir);
    assert_eq!(
        trace.copies().count() as u64 + dropped(&trace),
        100_000,
        "every call is a span or counted"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_copy_of_the_library_stands_aside() {
    let dir = scratch("two-copies");
    let copy = dir.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    let second = copy.join("libnpushim.so");
    std::fs::copy(&build().shim, &second).unwrap();
    let preload = format!("{}:{}", build().shim.display(), second.display());
    let bin = build().bin("fault_probe");
    let script = ["h2d:4K", "h2d:4K", "h2d:4K", "h2d:4K"];
    let run = |preload: Option<&str>| {
        let mut r = Run::shimmed(&bin, &dir)
            .env("NPUSHIM_FAULTS", "*=1*off->1*return")
            .env("NPUSHIM_TRACE", "off")
            .args(script);
        if let Some(p) = preload {
            r = r.env("LD_PRELOAD", p);
        }
        r.output()
    };
    let one = run(None);
    let two = run(Some(&preload));
    assert_eq!(
        ok(&one),
        "call 1 h2d 4096 ret 0\ncall 2 h2d 4096 ret 507000\ncall 3 h2d 4096 ret 0\ncall 4 h2d 4096 ret 0\n"
    );
    // Exactly one call fails, as with one copy: the same output and status.
    assert_eq!(stdout(&two), stdout(&one));
    assert_eq!(two.status.code(), one.status.code());
    let err = stderr(&two);
    let aside: Vec<&str> = shim_lines(&err)
        .into_iter()
        .filter(|l| l.contains("another copy of npushim"))
        .collect();
    assert_eq!(aside.len(), 1, "{err}");
    assert!(aside[0].contains(&second.display().to_string()), "{err}");
    assert_eq!(
        err.matches("injected faults: 1 return").count(),
        1,
        "one copy injects: {err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `app` with the shim told to panic at `stage` (debug builds honour it).
fn with_panic_at(app: &str, stage: &str, dir: &Path) -> std::process::Output {
    // Without the `pageable` advice copy_pipeline gets on purpose: only the shim's own
    // lines about the panics are left to count.
    Run::shimmed(&build().bin(app), dir)
        .env("NPUSHIM_DEBUG_PANIC", stage)
        .env("NPUSHIM_CHECK", "warn,-pageable")
        .output()
}

#[test]
fn a_panic_anywhere_in_the_shim_leaves_the_program_as_without_it() {
    if !cfg!(debug_assertions) {
        // Only debug builds of the library honour NPUSHIM_DEBUG_PANIC.
        return;
    }
    let dir = scratch("panics");
    for app in ["copy_pipeline", "ring_allgather"] {
        let expected = ok(&Run::plain(&build().bin(app), &dir).output());
        for stage in ["init", "check", "record"] {
            let out = with_panic_at(app, stage, &dir);
            assert_eq!(ok(&out), expected, "{app} {stage}");
            let err = stderr(&out);
            let lines = shim_lines(&err);
            assert!(
                !lines.is_empty() && lines.len() <= 6,
                "{app} {stage}: a few lines, not one per call:\n{err}"
            );
            assert!(lines[0].contains("internal error"), "{err}");
            assert!(!err.contains("panicked"), "no Rust panic message: {err}");
        }
    }
    // A lookup that panics every time: the calls get the vendor's "not supported" code
    // (200001) instead of an abort.
    let out = with_panic_at("fault_probe", "lookup", &dir);
    assert_eq!(
        out.status.code(),
        Some(1),
        "fails, but is not killed by a signal"
    );
    let err = stderr(&out);
    assert!(err.contains("setup failed"), "{err}");
    assert!(shim_lines(&err)[0].contains("internal error"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
