//! The benchmark's programs (`tests/bench/`) build cleanly and report what
//! `scripts/bench.sh` reads from them; the numbers themselves belong to the benchmark.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;

/// The `key=value` pairs of the harness's result line.
fn result_line(out: &std::process::Output) -> HashMap<String, String> {
    let text = ok(out);
    let line = text
        .lines()
        .find(|l| l.starts_with("threads="))
        .unwrap_or_else(|| panic!("no result line in {text:?}"));
    line.split(' ')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Tools {
    harness: PathBuf,
    recorder: PathBuf,
    interposer: PathBuf,
}

fn tools(dir: &Path) -> Tools {
    let noop = build().out.join("noop");
    let harness = dir.join("harness");
    compile(
        &repo_path("tests/bench/harness.c"),
        &harness,
        &[
            &format!("-L{}", noop.display()),
            "-Wl,--no-as-needed",
            "-lascendcl",
            &format!("-Wl,-rpath,{}", noop.display()),
        ],
    );
    let shared = |name: &str| {
        let lib = dir.join(format!("{name}.so"));
        compile(
            &repo_path(&format!("tests/bench/{name}.c")),
            &lib,
            &["-fPIC", "-shared", "-ldl"],
        );
        lib
    };
    let recorder = shared("c_recorder");
    let interposer = shared("c_interposer");
    Tools {
        harness,
        recorder,
        interposer,
    }
}

#[test]
fn harness_reports_tight_and_paced_runs_through_each_interposer() {
    let dir = scratch("bench-tools");
    let t = tools(&dir);
    for preload in [None, Some(&t.interposer), Some(&t.recorder)] {
        let mut run = Run::plain(&t.harness, &dir).args(["--calls", "20000", "--threads", "2"]);
        if let Some(lib) = preload {
            run = run.env("LD_PRELOAD", lib);
        }
        let r = result_line(&run.output());
        assert_eq!(r["threads"], "2");
        assert_eq!(r["errors"], "0", "{preload:?}");
        assert!(r["ns_per_call"].parse::<f64>().unwrap() > 0.0);
    }

    // Paced and traced: every call, warm-up included, is a span; the CPU time of threads
    // the harness did not create (the trace writer) is reported.
    let out = Run::shimmed(&t.harness, &dir)
        .args(["--calls", "3000", "--warmup", "100", "--burst", "1000"])
        .args(["--gap-us", "20000", "--rss"])
        .output();
    let r = result_line(&out);
    assert_eq!(r["errors"], "0");
    for key in ["aux_user_ms", "aux_sys_ms", "vmhwm_kb"] {
        assert!(r[key].parse::<u64>().is_ok(), "{key} in {r:?}");
    }
    let trace = single_trace(&dir);
    assert_eq!(trace.spans_named("aclrtMemcpyAsync").count(), 3100);

    let bad = Run::plain(&t.harness, &dir)
        .args(["--burst", "ten"])
        .output();
    assert_eq!(bad.status.code(), Some(2));
    assert!(stderr(&bad).contains("--burst expects a number"));
    std::fs::remove_dir_all(&dir).unwrap();
}
