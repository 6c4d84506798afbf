//! The timeline (SPEC §5) end to end: real programs on the simulated runtime under
//! `LD_PRELOAD`, their traces parsed with a JSON parser and checked event by event.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::{
    Run, build, compile, ok, parse_trace, repo_path, scratch, single_trace, stderr, stdout,
    traces_in,
};
use serde_json::Value;

/// Counts of spans per (tid, name, depth), read line by line (big traces stay out of memory).
#[derive(Default, Debug)]
struct Tally {
    spans: HashMap<(i64, String, u64), u64>,
    pids: HashMap<i64, u64>,
    thread_names: HashMap<i64, String>,
    stats: Option<Value>,
    complete: bool,
    lines: u64,
}

fn tally(path: &Path) -> Tally {
    let file = std::fs::File::open(path).unwrap();
    let mut t = Tally::default();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.unwrap();
        if line == "]" {
            t.complete = true;
            continue;
        }
        assert!(!t.complete, "event after the closing bracket");
        let (lead, body) = line.split_at(1);
        assert_eq!(lead, if i == 0 { "[" } else { "," }, "line {i}: {line}");
        let v: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("line {i} is not JSON ({e}): {line}"));
        t.lines += 1;
        *t.pids.entry(v["pid"].as_i64().unwrap()).or_default() += 1;
        let tid = v["tid"].as_i64().unwrap();
        match v["ph"].as_str().unwrap() {
            "X" => {
                let depth = v["args"]["depth"].as_u64().unwrap_or(0);
                let name = v["name"].as_str().unwrap().to_string();
                *t.spans.entry((tid, name, depth)).or_default() += 1;
            }
            "M" if v["name"] == "thread_name" => {
                t.thread_names
                    .insert(tid, v["args"]["name"].as_str().unwrap().to_string());
            }
            "M" if v["name"] == "npushim_stats" => t.stats = Some(v["args"].clone()),
            _ => {}
        }
    }
    t
}

/// `thread T tid X acl A hccl H` lines of call_storm → tid → (acl, hccl).
fn storm_counts(out: &str) -> HashMap<i64, (u64, u64)> {
    out.lines()
        .filter(|l| l.starts_with("thread "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (
                w[3].parse().unwrap(),
                (w[5].parse().unwrap(), w[7].parse().unwrap()),
            )
        })
        .collect()
}

fn span_count(t: &Tally, tid: i64, name: &str, depth: u64) -> u64 {
    t.spans
        .get(&(tid, name.to_string(), depth))
        .copied()
        .unwrap_or(0)
}

#[test]
fn eight_threads_every_call_is_one_span() {
    let dir = scratch("eight-threads");
    let out = Run::shimmed(&build().bin("call_storm"), &dir)
        .args(["--threads", "8", "--calls", "125000", "--api", "both"])
        .output();
    let counts = storm_counts(&ok(&out));
    assert_eq!(counts.len(), 8);
    let trace = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let t = tally(&trace);
    assert!(t.complete, "trace not closed");
    for (tid, (acl, hccl)) in &counts {
        assert_eq!(*acl, 125_000);
        assert_eq!(
            span_count(&t, *tid, "aclrtMemcpyAsync", 0),
            *acl,
            "tid {tid}"
        );
        assert_eq!(
            span_count(&t, *tid, "HcclMemcpyAsync", 0),
            *hccl,
            "tid {tid}"
        );
        // Every HCCL copy (256 B, one chunk) re-enters the shim once, at depth 1.
        assert_eq!(
            span_count(&t, *tid, "aclrtMemcpyAsync", 1),
            *hccl,
            "tid {tid}"
        );
        assert!(t.thread_names.contains_key(tid), "no thread_name for {tid}");
    }
    let copies: u64 = t
        .spans
        .iter()
        .filter(|((_, name, _), _)| name == "aclrtMemcpyAsync" || name == "HcclMemcpyAsync")
        .map(|(_, n)| n)
        .sum();
    assert_eq!(copies, 8 * 3 * 125_000);
    // Besides the copies, the program's stream synchronizations.
    let total: u64 = t.spans.values().sum();
    let stats = t.stats.expect("npushim_stats");
    assert_eq!(stats["events"], total);
    assert_eq!(stats["dropped"], 0);
    // HCCL spans carry four more arguments than ACL spans, and copies say where their
    // memory lives (srcMem, dstMem): budget 350 B per event.
    let size = std::fs::metadata(&trace).unwrap().len();
    assert!(size / total < 350, "{} bytes per event", size / total);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn forks_while_threads_call_give_each_child_its_own_complete_file() {
    let dir = scratch("forks");
    let out = Run::shimmed(&build().bin("call_storm"), &dir)
        .args(["--forks", "30", "--child-calls", "200", "--api", "both"])
        .output();
    let text = ok(&out);
    let parent_pid = {
        // The parent is the trace whose file holds the worker threads.
        let counts = storm_counts(&text);
        assert_eq!(counts.len(), 2);
        counts
    };
    let children: Vec<i64> = text
        .lines()
        .filter(|l| l.starts_with("child "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w[5], "0", "child failed: {l}");
            w[1].parse().unwrap()
        })
        .collect();
    assert_eq!(children.len(), 30);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 31, "{files:?}");
    let mut seen_children = 0;
    for f in &files {
        let t = tally(f);
        assert!(t.complete, "{} not closed", f.display());
        assert_eq!(t.pids.len(), 1, "{} mixes processes", f.display());
        let pid = *t.pids.keys().next().unwrap();
        if children.contains(&pid) {
            seen_children += 1;
            assert_eq!(span_count(&t, pid, "aclrtMemcpyAsync", 0), 200);
            assert_eq!(span_count(&t, pid, "HcclMemcpyAsync", 0), 200);
            assert_eq!(span_count(&t, pid, "aclrtMemcpyAsync", 1), 200);
            assert!(
                t.spans
                    .keys()
                    .map(|(tid, _, _)| *tid)
                    .collect::<std::collections::HashSet<_>>()
                    .len()
                    == 1,
                "{} holds other threads' spans",
                f.display()
            );
        } else {
            for (tid, (acl, hccl)) in &parent_pid {
                assert_eq!(span_count(&t, *tid, "aclrtMemcpyAsync", 0), *acl);
                assert_eq!(span_count(&t, *tid, "HcclMemcpyAsync", 0), *hccl);
                assert_eq!(span_count(&t, *tid, "aclrtMemcpyAsync", 1), *hccl);
            }
            assert_eq!(t.stats.unwrap()["dropped"], 0);
        }
    }
    assert_eq!(seen_children, 30);
    // Children derive their seeds from the parent's, so each child's differs.
    let seeds: std::collections::HashSet<u64> = traces_in(&dir)
        .values()
        .map(|t| t.meta("npushim").unwrap()["args"]["seed"].as_u64().unwrap())
        .collect();
    assert_eq!(seeds.len(), 31);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kill_9_leaves_a_loadable_prefix_with_every_call() {
    let dir = scratch("kill9");
    let mut child = Run::shimmed(&build().bin("call_storm"), &dir)
        .args(["--pause", "--calls", "5000", "--api", "both"])
        .command()
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready acl 5000 hccl 5000");
    // The program now waits for ever: nothing but the shim's periodic flush (SPEC §5: every
    // 100 ms) can bring its 15,000 spans into the file before the kill.
    let spans_on_disk = || {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .matches("{\"ph\":\"X\"")
                    .count()
            })
            .sum::<usize>()
    };
    common::wait_until(
        "the running program's trace file holds all 15,000 spans",
        || spans_on_disk() >= 15_000,
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let trace = single_trace(&dir);
    assert!(!trace.complete, "a killed process cannot have written ']'");
    assert_eq!(trace.spans_named("HcclMemcpyAsync").count(), 5000);
    let acl: Vec<_> = trace.spans_named("aclrtMemcpyAsync").collect();
    assert_eq!(acl.len(), 10_000);
    assert_eq!(acl.iter().filter(|e| e["args"]["depth"] == 1).count(), 5000);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn calls_from_atexit_handlers_and_static_destructors_are_traced() {
    let dir = scratch("atexit");
    let out = Run::shimmed(&build().bin("call_storm"), &dir)
        .args(["--calls", "10", "--atexit", "50", "--api", "both"])
        .output();
    ok(&out);
    let trace = single_trace(&dir);
    assert!(trace.complete);
    // main: 10, atexit handler: 50, static destructor: 1 (each registered after the shim's
    // exit handler, so each runs before the final flush).
    let top = |name: &str| {
        trace
            .spans_named(name)
            .filter(|e| e["args"].get("depth").is_none())
            .count()
    };
    assert_eq!(top("aclrtMemcpyAsync"), 61);
    assert_eq!(top("HcclMemcpyAsync"), 61);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn calls_racing_with_exit_never_hurt_the_program() {
    for i in 0..5 {
        let dir = scratch(&format!("exit-race-{i}"));
        let out = Run::shimmed(&build().bin("call_storm"), &dir)
            .args(["--calls", "2000", "--background", "--api", "both"])
            .output();
        ok(&out);
        let trace = single_trace(&dir);
        assert!(trace.spans().count() >= 6000);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn calls_from_thread_exit_destructors_are_forwarded_and_never_lost_silently() {
    let dir = scratch("exit-destructor");
    let exe = dir.join("exit_destructor");
    let lib = build().lib_dir();
    compile(
        &repo_path("tests/progs/exit_destructor.c"),
        &exe,
        &[
            &format!("-L{}", lib.display()),
            "-lascendcl",
            &format!("-Wl,-rpath,{}", lib.display()),
        ],
    );
    let out = Run::shimmed(&exe, &dir).output();
    assert_eq!(ok(&out).trim(), "copies 7", "every copy is forwarded");
    let trace = single_trace(&dir);
    // The destructors run in the first round of the thread's teardown, while the shim
    // still holds the thread's ring: all 7 copies are spans.
    let spans = trace.copies().count();
    let stats = &trace.meta("npushim_stats").unwrap()["args"];
    assert_eq!(
        (spans, stats["dropped"].as_u64()),
        (7, Some(0)),
        "{}",
        stderr(&out)
    );

    // A destructor that runs in a later round (it re-arms its key once) comes after the
    // shim let go: its copy is forwarded, counted as dropped, and the count is said.
    std::fs::remove_file(&trace.path).unwrap();
    let out = Run::shimmed(&exe, &dir).arg("--late").output();
    assert_eq!(ok(&out).trim(), "copies 8");
    let trace = single_trace(&dir);
    let stats = &trace.meta("npushim_stats").unwrap()["args"];
    assert_eq!(trace.copies().count(), 7);
    assert_eq!(stats["dropped"].as_u64(), Some(1));
    assert!(
        stderr(&out).contains("1 calls made by threads already past their exit"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn existing_files_and_symlinks_are_never_overwritten() {
    let dir = scratch("no-clobber");
    let target = dir.join("t.json");
    let victim = dir.join("victim.txt");
    std::fs::write(&target, "keep me").unwrap();
    std::fs::write(&victim, "victim").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("t.1.json")).unwrap();
    let out = Run::shimmed(&build().bin("copy_pipeline"), &dir)
        .env("NPUSHIM_TRACE", &target)
        .output();
    ok(&out);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "victim");
    let t = parse_trace(&dir.join("t.2.json"));
    assert!(t.complete && t.spans().count() > 0);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("t.2.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_uncreatable_trace_costs_one_line_and_nothing_else() {
    let dir = scratch("uncreatable");
    std::fs::write(dir.join("plain-file"), "").unwrap();
    let plain = Run::plain(&build().bin("copy_pipeline"), &dir).output();
    let shimmed = Run::shimmed(&build().bin("copy_pipeline"), &dir)
        .env("NPUSHIM_TRACE", dir.join("plain-file/sub/t.json"))
        .output();
    assert_eq!(stdout(&shimmed), ok(&plain));
    assert_eq!(shimmed.status.code(), plain.status.code());
    let err = stderr(&shimmed);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("npushim: cannot create trace file"),
        "{err}"
    );
    assert!(lines[0].contains("untraced"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_write_error_stops_tracing_but_not_the_program() {
    let dir = scratch("efbig");
    let plain = Run::plain(&build().bin("call_storm"), &dir)
        .args(["--calls", "20000"])
        .output();
    // A 64 KiB file size limit with SIGXFSZ ignored: writes past it fail with EFBIG.
    let shimmed = Run::plain(Path::new("/bin/sh"), &dir)
        .env("LD_PRELOAD_SHIM", &build().shim)
        .env("NPUSHIM_TRACE", dir.join("t.json"))
        .args([
            "-c",
            "trap '' XFSZ; ulimit -f 128; LD_PRELOAD=$LD_PRELOAD_SHIM exec \"$0\" --calls 20000",
        ])
        .arg(build().bin("call_storm"))
        .output();
    let without_tids = |s: &str| {
        s.split_whitespace()
            .filter(|w| w.parse::<u64>().is_err() || *w == "20000")
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(without_tids(&stdout(&shimmed)), without_tids(&ok(&plain)));
    assert_eq!(shimmed.status.code(), Some(0));
    let err = stderr(&shimmed);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("npushim: cannot write trace file"), "{err}");
    // What was written before the error is still a loadable prefix.
    let t = parse_trace(&dir.join("t.json"));
    assert!(!t.complete);
    assert!(t.spans().count() > 100);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn hccl_spans_contain_their_nested_acl_spans() {
    let dir = scratch("nesting");
    let log = dir.join("sim.log");
    let out = Run::shimmed(&build().bin("ring_allgather"), &dir)
        .sim_log(&log)
        .output();
    ok(&out);
    let trace = single_trace(&dir);
    let hccl: Vec<&Value> = trace.spans_named("HcclMemcpyAsync").collect();
    assert_eq!(hccl.len(), 56);
    let nested: Vec<&Value> = trace
        .spans_named("aclrtMemcpyAsync")
        .filter(|e| e["args"]["depth"] == 1)
        .collect();
    assert_eq!(nested.len(), 56);
    for h in &hccl {
        let (ts, dur) = (h["ts"].as_f64().unwrap(), h["dur"].as_f64().unwrap());
        let inner: Vec<_> = nested
            .iter()
            .filter(|a| {
                a["tid"] == h["tid"]
                    && a["ts"].as_f64().unwrap() >= ts
                    && a["ts"].as_f64().unwrap() + a["dur"].as_f64().unwrap() <= ts + dur + 0.001
            })
            .collect();
        assert_eq!(
            inner.len(),
            1,
            "HCCL span {h} has {} nested spans",
            inner.len()
        );
        let a = inner[0];
        assert_eq!(a["args"]["dst"], h["args"]["dst"]);
        assert_eq!(a["args"]["src"], h["args"]["src"]);
        assert_eq!(a["args"]["count"], h["args"]["count"]);
        assert_eq!(h["args"]["linkType"], "HCCS");
        assert_eq!(h["args"]["kind"], "DEVICE_TO_DEVICE");
        // The HCCL span's stream is the hccl::Stream object; the nested span shows the
        // aclrtStream inside it, which the shim never read itself.
        assert_ne!(a["args"]["stream"], h["args"]["stream"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn metadata_describes_process_threads_clock_and_configuration() {
    let dir = scratch("metadata");
    let before = monotonic_us();
    let out = Run::shimmed(&build().bin("call_storm"), &dir)
        .args(["--threads", "3", "--calls", "100"])
        .env("RANK", "5")
        .env("NPUSHIM_SEED", "1234")
        .env("NPUSHIM_TRACE", dir.join("r%r-%p-%h-%%.json"))
        .output();
    let counts = storm_counts(&ok(&out));
    let after = monotonic_us();
    let trace = single_trace_any(&dir);
    let name = trace
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("r5-") && name.ends_with("-%.json"),
        "{name}"
    );
    let pname = &trace.meta("process_name").unwrap()["args"]["name"];
    assert!(
        pname.as_str().unwrap().starts_with("call_storm (pid "),
        "{pname}"
    );
    assert!(pname.as_str().unwrap().ends_with(", rank 5)"), "{pname}");
    let meta = &trace.meta("npushim").unwrap()["args"];
    assert_eq!(meta["format"], 1);
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(meta["seed"], 1234);
    assert_eq!(meta["rank"], 5);
    assert_eq!(
        meta["config"]["check"],
        "warn (null,kind,size,align,location,h2h,bounds,freed,link,direction,pageable)"
    );
    let anchor = meta["clock"]["monotonic_us"].as_f64().unwrap();
    assert!(before <= anchor && anchor <= after);
    assert!(meta["clock"]["realtime_us"].as_f64().unwrap() > 1.5e15);
    let named: Vec<i64> = trace
        .events
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["tid"].as_i64().unwrap())
        .collect();
    for tid in counts.keys() {
        assert!(named.contains(tid));
    }
    for span in trace.copies() {
        let ts = span["ts"].as_f64().unwrap();
        assert!(
            before <= ts && ts <= after,
            "ts {ts} outside [{before}, {after}]"
        );
        assert!(span["dur"].as_f64().unwrap() >= 0.0);
        assert_eq!(
            span["cat"],
            if span["name"] == "HcclMemcpyAsync" {
                "hccl"
            } else {
                "acl"
            }
        );
        for key in ["dst", "src", "stream"] {
            assert!(span["args"][key].as_str().unwrap().starts_with("0x"));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn single_trace_any(dir: &Path) -> common::Trace {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    parse_trace(&files[0])
}

fn monotonic_us() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 / 1e3
}

#[test]
fn trace_off_writes_nothing_and_a_program_without_calls_leaves_no_file() {
    let dir = scratch("off");
    ok(&Run::shimmed(&build().bin("copy_pipeline"), &dir)
        .env("NPUSHIM_TRACE", "off")
        .output());
    ok(&Run::shimmed(Path::new("/bin/true"), &dir).output());
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn tracing_chrome_sink_writes_a_loadable_trace() {
    let dir = scratch("chrome-sink");
    let out = Run::shimmed(&build().bin("call_storm"), &dir)
        .args(["--calls", "200", "--api", "both"])
        .env("NPUSHIM_TRACE_SINK", "tracing-chrome")
        .output();
    ok(&out);
    let path = std::fs::read_dir(&dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&path).unwrap();
    let events: Vec<Value> =
        serde_json::from_str(&text).expect("tracing-chrome writes a JSON array");
    // tracing-chrome renders each call as an instant event named after the function, with
    // the typed fields' values as strings: addresses in hex, sizes and codes in decimal.
    let calls = |api: &str| {
        events
            .iter()
            .filter(|e| e["cat"] == "npushim::call" && e["name"] == api)
            .inspect(|e| {
                let dst = e["args"]["dst"].as_str().unwrap();
                assert!(
                    dst.starts_with("0x") && dst != "0x0",
                    "dst is recorded: {e}"
                );
                let count: u64 = e["args"]["count"].as_str().unwrap().parse().unwrap();
                assert!(count > 0, "count: {e}");
            })
            .count()
    };
    assert_eq!(calls("aclrtMemcpyAsync"), 400);
    assert_eq!(calls("HcclMemcpyAsync"), 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn first_calls_racing_on_many_threads_lose_no_span() {
    // Eight threads make their first calls of both APIs at the same moment: while one thread
    // creates the file and another registers a callsite, the others' spans must still land.
    for i in 0..20 {
        let dir = scratch(&format!("first-calls-{i}"));
        let log = dir.join("sim.log");
        ok(&Run::shimmed(&build().bin("ring_allgather"), &dir)
            .sim_log(&log)
            .output());
        let received = common::sim_log(&log).len();
        let trace = single_trace(&dir);
        assert_eq!(trace.copies().count(), received, "run {i}");
        assert_eq!(trace.meta("npushim_stats").unwrap()["args"]["dropped"], 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn forked_children_derive_their_seeds_deterministically() {
    // The n-th child's seed depends only on the parent's seed and n: a replayed run
    // (same NPUSHIM_SEED) gives every child the same seed again.
    let run = |tag: &str| -> Vec<u64> {
        let dir = scratch(&format!("fork-seeds-{tag}"));
        let out = Run::shimmed(&build().bin("call_storm"), &dir)
            .args(["--forks", "3", "--child-calls", "10", "--api", "acl"])
            .env("NPUSHIM_SEED", "7")
            .output();
        let text = ok(&out);
        let traces = traces_in(&dir);
        let seeds = text
            .lines()
            .filter(|l| l.starts_with("child "))
            .map(|l| {
                let pid: u64 = l.split_whitespace().nth(1).unwrap().parse().unwrap();
                traces[&pid].meta("npushim").unwrap()["args"]["seed"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();
        seeds
    };
    let first = run("a");
    assert_eq!(first.len(), 3);
    assert!(
        !first.contains(&7),
        "children do not reuse the parent's seed"
    );
    assert_eq!(run("b"), first);
}

/// `npushim run --summary` with the real shim: every process of the run that writes a trace
/// lists it in the run's index (a parent and 5 forked children, through a relative
/// template in a directory the run does not start in), and the summary covers exactly them.
#[test]
fn run_summary_is_told_every_trace_the_processes_wrote() {
    let dir = scratch("run-index");
    std::fs::create_dir_all(dir.join("traces")).unwrap();
    // A trace from before the run is not the run's.
    std::fs::write(dir.join("traces/old-1.json"), "[\n]\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_npushim"))
        .current_dir(&dir)
        .env("NPUSHIM_LIB", &build().shim)
        .env_remove("LD_PRELOAD")
        .env_remove("NPUSHIM_TRACE")
        .args(["run", "--summary", "--trace", "traces/t-%p.json", "--"])
        .arg(build().bin("call_storm"))
        .args(["--forks", "5", "--child-calls", "10", "--api", "both"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let mut files: Vec<String> = std::fs::read_dir(dir.join("traces"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| !p.ends_with("old-1.json"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 6, "{files:?}");
    assert!(err.contains("summary of 6 trace file(s)"), "{err}");
    for f in &files {
        assert_eq!(
            err.matches(f.as_str()).count(),
            1,
            "{f} not summarised once\n{err}"
        );
    }
    assert!(!err.contains("old-1.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `NPUSHIM_RUN_INDEX` naming something that is not an existing regular file (missing, a
/// FIFO nobody reads, a directory): the shim creates nothing, never blocks, and says so once.
#[test]
fn a_run_index_that_is_not_a_regular_file_is_left_alone() {
    let dir = scratch("run-index-hostile");
    let fifo = dir.join("fifo");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let plain = Run::plain(&build().bin("copy_pipeline"), &dir).output();
    for index in [dir.join("missing"), fifo.clone(), dir.clone()] {
        let shimmed = Run::shimmed(&build().bin("copy_pipeline"), &dir)
            .env("NPUSHIM_CHECK", "off")
            .env("NPUSHIM_RUN_INDEX", &index)
            .output();
        assert_eq!(stdout(&shimmed), ok(&plain));
        let err = stderr(&shimmed);
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{err}");
        assert!(
            lines[0].starts_with("npushim: cannot list trace file"),
            "{err}"
        );
        assert!(lines[0].contains(&index.display().to_string()), "{err}");
    }
    assert!(!dir.join("missing").exists());
    let kinds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("trace-"))
        .collect();
    assert_eq!(kinds, ["fifo"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
