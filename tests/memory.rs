//! Knowing the memory (SPEC §9, §4, §5) end to end: `memory_cases`, one mode per situation
//! Ascend users report, runs on the simulated runtime without and with the shim, with the
//! runtime logging every call it receives (`NPUSIM_LOG_FUNCS=all`). Each test asserts the
//! program's own output (identical unless strict mode deliberately changes a code), the
//! spans' memory kinds (`srcMem`, `dstMem`), `effectiveKind`, `sync` and violations, and the
//! `npushim:` lines on stderr.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Output;

use common::{Run, Trace, build, ok, ptr_to_hex, scratch, stderr, stdout};
use npushim::abi::types::Hook;
use serde_json::Value;

type LogLine = (String, HashMap<String, String>);

/// One run of `memory_cases`: its output, the runtime's call log and every trace it left.
struct Ran {
    out: Output,
    log: Vec<LogLine>,
    traces: HashMap<u64, Trace>,
}

impl Ran {
    /// The trace of the process the test started (the one with the smallest pid when a
    /// child forked).
    fn trace(&self) -> &Trace {
        let pid = *self.traces.keys().min().expect("a trace");
        &self.traces[&pid]
    }

    fn stdout(&self) -> String {
        stdout(&self.out)
    }

    fn stderr(&self) -> String {
        stderr(&self.out)
    }

    /// The runtime's log lines of `name`.
    fn logged(&self, name: &str) -> Vec<&HashMap<String, String>> {
        self.log
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, kv)| kv)
            .collect()
    }
}

/// Runs `memory_cases ARGS` in a fresh directory, under the shim if `shim`, with `env`.
fn run(name: &str, shim: bool, args: &[&str], env: &[(&str, &str)]) -> Ran {
    let dir = scratch(name);
    let prog = build().bin("memory_cases");
    let log = dir.join("runtime.log");
    let mut r = if shim {
        Run::shimmed(&prog, &dir)
    } else {
        Run::plain(&prog, &dir)
    };
    r = r.sim_log(&log).env("NPUSIM_LOG_FUNCS", "all").args(args);
    for (k, v) in env {
        r = r.env(k, v);
    }
    let out = r.output();
    Ran {
        out,
        log: common::sim_log(&log),
        traces: common::traces_in(&dir),
    }
}

/// The same program without and with the shim (`env` for the shimmed run only); the
/// plain run leaves no trace and says nothing on stderr.
fn run_both(name: &str, args: &[&str], env: &[(&str, &str)]) -> (Ran, Ran) {
    let plain = run(&format!("{name}-plain"), false, args, &[]);
    ok(&plain.out);
    assert!(plain.traces.is_empty());
    assert_eq!(plain.stderr(), "", "the program itself is quiet");
    let shim = run(name, true, args, env);
    (plain, shim)
}

/// `<step> ret <code>` lines (other lines are kept as they are, with code 0).
fn steps(out: &str) -> Vec<(String, i64)> {
    out.lines()
        .map(|l| match l.rsplit_once(" ret ") {
            Some((step, code)) => (step.to_string(), code.parse().unwrap()),
            None => (l.to_string(), 0),
        })
        .collect()
}

fn copies(trace: &Trace) -> Vec<&Value> {
    trace.spans_named("aclrtMemcpyAsync").collect()
}

fn violations(span: &Value) -> Vec<&str> {
    span["args"]["violations"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap()).collect())
        .unwrap_or_default()
}

/// What a copy span says about memory: (srcMem, dstMem, effectiveKind, sync, violations),
/// absent fields as "".
fn memory_of(span: &Value) -> (String, String, String, bool, Vec<String>) {
    let a = &span["args"];
    let text = |k: &str| a[k].as_str().unwrap_or("").to_string();
    let sync = match a.get("sync") {
        None => false,
        Some(Value::Bool(true)) => true,
        Some(other) => panic!("sync is {other} in {span}"),
    };
    (
        text("srcMem"),
        text("dstMem"),
        text("effectiveKind"),
        sync,
        violations(span).into_iter().map(String::from).collect(),
    )
}

fn mem(
    src: &str,
    dst: &str,
    effective: &str,
    sync: bool,
    rules: &[&str],
) -> (String, String, String, bool, Vec<String>) {
    (
        src.into(),
        dst.into(),
        effective.into(),
        sync,
        rules.iter().map(|r| r.to_string()).collect(),
    )
}

/// The `npushim:` lines of a run's stderr.
fn shim_lines(ran: &Ran) -> Vec<String> {
    ran.stderr()
        .lines()
        .filter(|l| l.starts_with("npushim: "))
        .map(String::from)
        .collect()
}

/// The `npushim: <fn>: <rule> [...]` lines of one rule.
fn rule_lines(ran: &Ran, rule: &str) -> Vec<String> {
    let marker = format!(": {rule} [");
    shim_lines(ran)
        .into_iter()
        .filter(|l| !l.starts_with("npushim: summary") && l.contains(&marker))
        .collect()
}

/// A duration as the pageable diagnostic prints it (`41.2 us`), in nanoseconds.
fn parse_duration(text: &str) -> f64 {
    let (n, unit) = text.split_once(' ').unwrap_or_else(|| panic!("{text:?}"));
    let n: f64 = n.parse().unwrap_or_else(|_| panic!("{text:?}"));
    n * match unit {
        "ns" => 1.0,
        "us" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        _ => panic!("unit of {text:?}"),
    }
}

/// The pageable line of a copy whose pageable side is `buffer` (`src=0x…`): checks every
/// part of the advice and returns how long it says the host was blocked (ns).
fn pageable_line(line: &str, span: &Value, buffer: &str) -> f64 {
    let a = &span["args"];
    let head = format!(
        "npushim: aclrtMemcpyAsync: pageable [dst={} destMax={} src={} count={} kind={} \
         stream={}]: the host buffer {buffer} is pageable memory (neither from \
         aclrtMallocHost nor registered), so the runtime synchronized the stream and copied \
         synchronously: this asynchronous copy blocked the host for ",
        a["dst"].as_str().unwrap(),
        a["destMax"],
        a["src"].as_str().unwrap(),
        a["count"],
        common::enum_value(span, "kind"),
        a["stream"].as_str().unwrap(),
    );
    let rest = line
        .strip_prefix(&head)
        .unwrap_or_else(|| panic!("expected\n{head}…\ngot\n{line}"));
    let (took, tail) = rest.split_once(';').unwrap();
    let tail = tail.trim_end_matches(" (further occurrences of this rule are counted silently)");
    assert_eq!(
        tail,
        " allocate the buffer with aclrtMallocHost or register it with aclrtHostRegister; \
         forwarded"
    );
    let ns = parse_duration(took);
    // Measured around the forward, which lies inside the span (rounded as printed).
    let span_ns = span["dur"].as_f64().unwrap() * 1e3;
    assert!(
        ns > 0.0 && ns <= span_ns * 1.001 + 100.0,
        "blocked {took} but the span lasted {span_ns} ns"
    );
    ns
}

/// The leak summary's lines on the shim's stderr.
fn leak_lines(shim: &Ran) -> Vec<String> {
    shim_lines(shim)
        .into_iter()
        .filter(|l| l.contains("leak summary"))
        .collect()
}

#[test]
fn a_non_blocking_loop_from_malloc_memory_runs_synchronously_and_says_how_long() {
    let (plain, shim) = run_both("memory-pageable", &["pageable", "16"], &[]);
    assert_eq!(ok(&shim.out), plain.stdout());
    let expected: Vec<(String, i64)> = std::iter::repeat_n(("copy".to_string(), 0), 16)
        .chain([("sync".to_string(), 0)])
        .collect();
    assert_eq!(steps(&shim.stdout()), expected);

    let spans = copies(shim.trace());
    assert_eq!(spans.len(), 16);
    let src = spans[0]["args"]["src"].as_str().unwrap();
    for s in &spans {
        assert_eq!(
            memory_of(s),
            mem("pageable", "device", "", true, &["pageable"]),
            "{s}"
        );
        assert_eq!(s["args"]["kind"], "HOST_TO_DEVICE");
        assert_eq!(s["args"]["src"], src);
        assert_eq!(s["args"]["ret"], 0);
    }
    // The first five copies say it, naming the buffer and the time; the rest are counted.
    let lines = rule_lines(&shim, "pageable");
    assert_eq!(lines.len(), 5, "{lines:#?}");
    let buffer = format!("src={src}");
    for (line, span) in lines.iter().zip(&spans) {
        pageable_line(line, span, &buffer);
    }
    assert!(lines[4].ends_with("(further occurrences of this rule are counted silently)"));
    let summary: Vec<String> = shim_lines(&shim)
        .into_iter()
        .filter(|l| l.starts_with("npushim: summary: rule pageable"))
        .collect();
    assert_eq!(summary.len(), 1, "{summary:?}");
    let rest = summary[0]
        .strip_prefix("npushim: summary: rule pageable violated 16 times (11 not shown), blocking the host for ")
        .unwrap_or_else(|| panic!("{}", summary[0]));
    let (total, first) = rest.split_once(" in all; first: ").unwrap();
    let total = parse_duration(total);
    let spans_total: f64 = spans.iter().map(|s| s["dur"].as_f64().unwrap() * 1e3).sum();
    assert!(total > 0.0 && total <= spans_total * 1.001 + 100.0);
    assert!(first.starts_with("aclrtMemcpyAsync dst="), "{first}");
    assert!(
        first.contains(&format!(" src={src} count=16384 kind=1 ")),
        "{first}"
    );

    // The same without a trace: the memory rules still apply to every copy.
    let untraced = run(
        "memory-pageable-untraced",
        true,
        &["pageable", "16"],
        &[("NPUSHIM_TRACE", "off")],
    );
    assert_eq!(ok(&untraced.out), plain.stdout());
    assert!(untraced.traces.is_empty());
    assert_eq!(rule_lines(&untraced, "pageable").len(), 5);
    assert!(
        untraced
            .stderr()
            .contains("npushim: summary: rule pageable violated 16 times (11 not shown)"),
        "{}",
        untraced.stderr()
    );
}

#[test]
fn the_same_loop_from_pinned_memory_is_asynchronous_and_clean() {
    let (plain, shim) = run_both("memory-pinned", &["pinned", "16"], &[]);
    assert_eq!(ok(&shim.out), plain.stdout());
    assert_eq!(shim_lines(&shim), Vec::<String>::new());
    let trace = shim.trace();
    let host = trace.spans_named("aclrtMallocHost").next().unwrap()["args"]["ptr"].clone();
    let spans = copies(trace);
    assert_eq!(spans.len(), 16);
    for s in spans {
        assert_eq!(memory_of(s), mem("pinned", "device", "", false, &[]), "{s}");
        assert_eq!(s["args"]["src"], host);
    }
}

#[test]
fn an_mlocked_buffer_is_pageable_until_registered_and_again_after() {
    let (plain, shim) = run_both("memory-mlock", &["mlock"], &[]);
    assert_eq!(ok(&shim.out), plain.stdout());
    assert!(steps(&plain.stdout()).iter().all(|(_, code)| *code == 0));
    let trace = shim.trace();
    let spans = copies(trace);
    let kinds: Vec<_> = spans.iter().map(|s| memory_of(s)).collect();
    assert_eq!(
        kinds,
        [
            mem("pageable", "device", "", true, &["pageable"]),
            mem("registered", "device", "", false, &[]),
            mem("pageable", "device", "", true, &["pageable"]),
        ]
    );
    let buf = &spans[0]["args"]["src"];
    let register = trace.spans_named("aclrtHostRegister").next().unwrap();
    assert_eq!(register["args"]["ptr"], *buf);
    assert_eq!(register["args"]["size"], 16384);
    assert_eq!(register["args"]["type"], 0);
    let unregister = trace.spans_named("aclrtHostUnregister").next().unwrap();
    assert_eq!(unregister["args"]["ptr"], *buf);
    // In order: the copy, the registration, the registered copy, the unregistration...
    let ts = |s: &Value| s["ts"].as_f64().unwrap();
    assert!(ts(spans[0]) < ts(register) && ts(register) < ts(spans[1]));
    assert!(ts(spans[1]) < ts(unregister) && ts(unregister) < ts(spans[2]));
    let lines = rule_lines(&shim, "pageable");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let buffer = format!("src={}", buf.as_str().unwrap());
    pageable_line(&lines[0], spans[0], &buffer);
    pageable_line(&lines[1], spans[2], &buffer);
}

/// The runtime's `aclrtMemcpyAsync` lines (what reached it).
fn forwarded_copies(ran: &Ran) -> usize {
    ran.logged("aclrtMemcpyAsync").len()
}

#[test]
fn device_to_device_from_a_host_source_is_location_and_strict_never_calls_the_runtime() {
    let (plain, warn) = run_both("memory-kind3", &["kind3"], &[]);
    assert_eq!(steps(&plain.stdout())[0], ("kind3".to_string(), 107_000));
    assert_eq!(ok(&warn.out), plain.stdout());
    let spans = copies(warn.trace());
    assert_eq!(spans.len(), 1);
    assert_eq!(
        memory_of(spans[0]),
        mem("pageable", "pinned", "", false, &["location"])
    );
    assert_eq!(spans[0]["args"]["kind"], "DEVICE_TO_DEVICE");
    assert_eq!(spans[0]["args"]["ret"], 107_000);
    assert_eq!(forwarded_copies(&warn), 1);
    let (src, dst) = (
        spans[0]["args"]["src"].as_str().unwrap(),
        spans[0]["args"]["dst"].as_str().unwrap(),
    );
    let lines = rule_lines(&warn, "location");
    assert_eq!(lines.len(), 1);
    // The line names the memory the kind contradicts, and what the runtime accepts.
    let explained = format!(
        "]: src={src} is pageable host memory and dst={dst} pinned host memory \
         (aclrtMallocHost): between them the runtime accepts HOST_TO_HOST or DEVICE_TO_HOST \
         (or DEFAULT), not DEVICE_TO_DEVICE: it rejects the copy with 107000"
    );
    assert_eq!(
        lines[0],
        format!(
            "npushim: aclrtMemcpyAsync: location [dst={dst} destMax=16384 src={src} \
             count=16384 kind=3 stream={}{explained}; forwarded",
            spans[0]["args"]["stream"].as_str().unwrap()
        )
    );

    let strict = run(
        "memory-kind3-strict",
        true,
        &["kind3"],
        &[("NPUSHIM_CHECK", "strict")],
    );
    assert_eq!(ok(&strict.out), plain.stdout(), "the runtime's own code");
    assert_eq!(forwarded_copies(&strict), 0, "{:?}", strict.log);
    let spans = copies(strict.trace());
    assert_eq!(spans[0]["args"]["ret"], 107_000);
    assert_eq!(violations(spans[0]), ["location"]);
    let lines = rule_lines(&strict, "location");
    assert!(
        lines[0].ends_with(" with 107000; returning 107000 without calling the runtime"),
        "{}",
        lines[0]
    );
}

#[test]
fn pinned_to_device_passed_as_host_to_host_is_direction_not_h2h() {
    let (plain, shim) = run_both("memory-direction", &["direction"], &[]);
    assert_eq!(ok(&shim.out), plain.stdout());
    assert_eq!(steps(&plain.stdout())[0], ("direction".to_string(), 0));
    let spans = copies(shim.trace());
    assert_eq!(spans.len(), 1);
    assert_eq!(
        memory_of(spans[0]),
        mem("pinned", "device", "HOST_TO_DEVICE", false, &["direction"])
    );
    assert_eq!(spans[0]["args"]["kind"], "HOST_TO_HOST");
    assert_eq!(rule_lines(&shim, "h2h"), Vec::<String>::new());
    let lines = rule_lines(&shim, "direction");
    assert_eq!(lines.len(), 1);
    let a = &spans[0]["args"];
    let (src, dst) = (a["src"].as_str().unwrap(), a["dst"].as_str().unwrap());
    assert!(
        lines[0].contains(" kind=0 ")
            && lines[0].ends_with(&format!(
                "]: src={src} is pinned host memory (aclrtMallocHost) and dst={dst} device \
                 memory: between them the runtime copies HOST_TO_DEVICE whatever kind is \
                 passed (here HOST_TO_HOST): CANN 8.x corrects it silently, older runtimes \
                 return 107000; forwarded"
            )),
        "{}",
        lines[0]
    );
}

#[test]
fn a_copy_past_an_allocation_is_bounds() {
    let (plain, shim) = run_both("memory-bounds", &["bounds"], &[]);
    assert_eq!(ok(&shim.out), plain.stdout());
    assert_eq!(steps(&plain.stdout())[0], ("bounds".to_string(), 107_000));
    let trace = shim.trace();
    let spans = copies(trace);
    assert_eq!(
        memory_of(spans[0]),
        mem("pinned", "device", "", false, &["bounds"])
    );
    let dev = trace.spans_named("aclrtMalloc").next().unwrap();
    assert_eq!(spans[0]["args"]["dst"], dev["args"]["ptr"]);
    assert_eq!(dev["args"]["size"], 16384);
    assert_eq!(spans[0]["args"]["count"], 32768);
    let lines = rule_lines(&shim, "bounds");
    assert_eq!(lines.len(), 1);
    let dst = dev["args"]["ptr"].as_str().unwrap();
    assert!(
        lines[0].ends_with(&format!(
            "]: the 32768 bytes at dst={dst} run 16384 bytes past the end of its 16384-byte \
             allocation at {dst}; forwarded"
        )),
        "{}",
        lines[0]
    );
}

#[test]
fn a_copy_from_a_freed_block_is_freed_until_the_address_is_allocated_again() {
    let (plain, shim) = run_both("memory-freed", &["freed"], &[]);
    assert_eq!(ok(&shim.out), plain.stdout());
    assert_eq!(
        steps(&plain.stdout()),
        [
            ("freed", 0),
            ("sync", 0),
            ("reused 1", 0),
            ("again", 0),
            ("sync", 0)
        ]
        .map(|(s, c)| (s.to_string(), c))
    );
    let trace = shim.trace();
    let spans = copies(trace);
    assert_eq!(spans.len(), 2);
    // The freed block's range still says where it was (device memory).
    assert_eq!(
        memory_of(spans[0]),
        mem("device", "device", "", false, &["freed"])
    );
    assert_eq!(memory_of(spans[1]), mem("device", "device", "", false, &[]));
    let gone = &spans[0]["args"]["src"];
    assert_eq!(spans[1]["args"]["src"], *gone);
    let frees: Vec<&Value> = trace
        .spans_named("aclrtFree")
        .filter(|f| f["args"]["ptr"] == *gone)
        .collect();
    assert_eq!(frees.len(), 2, "freed once before, once at the end");
    let ts = |s: &Value| s["ts"].as_f64().unwrap();
    assert!(ts(frees[0]) < ts(spans[0]));
    let realloc = trace
        .spans_named("aclrtMalloc")
        .find(|a| a["args"]["ptr"] == *gone && ts(a) > ts(frees[0]))
        .expect("a new allocation at the freed address");
    assert_eq!(realloc["args"]["size"], 2048);
    assert!(ts(realloc) < ts(spans[1]));
    let lines = rule_lines(&shim, "freed");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let gone = gone.as_str().unwrap();
    assert!(
        lines[0].contains(&format!(" src={gone} count=2048 "))
            && lines[0].ends_with(&format!(
                "]: src={gone} lies in the 4096-byte allocation at {gone} from aclrtMalloc, \
                 freed since (no allocation has reused it); forwarded"
            )),
        "{}",
        lines[0]
    );
    // Nothing leaked: every block was given back.
    assert_nothing_leaked(trace);
    assert!(!shim.stderr().contains("leak summary"), "{}", shim.stderr());
}

#[test]
fn leaked_pinned_buffers_are_summarised_at_exit_and_in_the_trace() {
    let (plain, shim) = run_both("memory-leak", &["leak"], &[]);
    assert_eq!(ok(&shim.out), plain.stdout());
    let trace = shim.trace();
    let big = trace
        .spans_named("aclrtMallocHost")
        .find(|s| s["args"]["size"] == 1 << 20)
        .expect("the 1 MiB allocation");
    let (ptr, tid) = (big["args"]["ptr"].as_str().unwrap(), &big["tid"]);
    let leak_lines = leak_lines(&shim);
    assert_eq!(
        leak_lines,
        [format!(
            "npushim: leak summary: 2 pinned host allocations were never freed, 1052672 \
             bytes; the largest, 1048576 bytes at {ptr}, came from aclrtMallocHost on thread \
             {tid}"
        )]
    );
    let meta = trace.meta("npushim_leaks").expect("npushim_leaks metadata");
    assert_eq!(
        meta["args"],
        serde_json::json!({"leaks": [{
            "location": "pinned host",
            "count": 2,
            "bytes": 1052672,
            "largest": {"ptr": ptr, "size": 1048576, "call": "aclrtMallocHost", "tid": tid},
        }], "untracked": 0})
    );
}

/// The map was on and everything the process allocated was freed: an empty leak list.
fn assert_nothing_leaked(trace: &Trace) {
    let meta = trace.meta("npushim_leaks").expect("npushim_leaks metadata");
    assert_eq!(
        meta["args"],
        serde_json::json!({"leaks": [], "untracked": 0})
    );
}

/// One round of a `threads` worker, as spans: (function, srcMem/dstMem of copies).
const ROUND: [&str; 8] = [
    "aclrtMallocHost",
    "aclrtMalloc",
    "aclrtMemcpyAsync",
    "aclrtMemcpyAsync",
    "aclrtMemcpyAsync",
    "aclrtSynchronizeStream",
    "aclrtFree",
    "aclrtFreeHost",
];

#[test]
fn eight_threads_allocating_freeing_and_copying_get_every_span_right() {
    const ROUNDS: usize = 40;
    let (plain, shim) = run_both("memory-threads", &["threads", "40"], &[]);
    let text = ok(&shim.out);
    assert_eq!(text, plain.stdout());
    for i in 0..8 {
        assert!(
            text.contains(&format!("thread {i} rounds {ROUNDS} failures 0\n")),
            "{text}"
        );
    }
    let trace = shim.trace();
    let main_tid = trace.spans().next().unwrap()["pid"].clone();
    let mut by_thread: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for s in trace.spans().filter(|s| s["tid"] != main_tid) {
        by_thread
            .entry(s["tid"].as_u64().unwrap())
            .or_default()
            .push(s);
    }
    assert_eq!(by_thread.len(), 8, "one span list per worker");
    let mut pageable_src = Vec::new();
    for (tid, spans) in &by_thread {
        let names: Vec<&str> = spans.iter().map(|s| s["name"].as_str().unwrap()).collect();
        assert_eq!(names.len(), ROUND.len() * ROUNDS, "thread {tid}");
        for (r, round) in spans.chunks(ROUND.len()).enumerate() {
            let n: Vec<&str> = round.iter().map(|s| s["name"].as_str().unwrap()).collect();
            assert_eq!(n, ROUND, "thread {tid} round {r}");
            let arg = |i: usize, k: &str| round[i]["args"][k].clone();
            let (host, dev) = (arg(0, "ptr"), arg(1, "ptr"));
            assert_eq!(arg(0, "size"), 4096);
            assert_eq!(arg(1, "size"), 4096);
            assert_eq!(memory_of(round[2]), mem("pinned", "device", "", false, &[]));
            assert_eq!((arg(2, "src"), arg(2, "dst")), (host.clone(), dev.clone()));
            assert_eq!(
                memory_of(round[3]),
                mem("pageable", "device", "", true, &["pageable"])
            );
            assert_eq!(arg(3, "dst"), dev);
            pageable_src.push((*tid, arg(3, "src")));
            assert_eq!(memory_of(round[4]), mem("device", "pinned", "", false, &[]));
            assert_eq!((arg(4, "src"), arg(4, "dst")), (dev.clone(), host.clone()));
            assert_eq!(arg(6, "ptr"), dev);
            assert_eq!(arg(7, "ptr"), host);
            for s in round {
                assert_eq!(s["args"]["ret"], 0, "{s}");
            }
        }
    }
    // Each worker copies from its own pageable buffer every round.
    pageable_src.sort_by_key(|(t, _)| *t);
    pageable_src.dedup();
    assert_eq!(pageable_src.len(), 8, "{pageable_src:?}");
    // The counts are the program's own, and the runtime's.
    let total = 8 * ROUNDS;
    for (name, per_round) in [
        ("aclrtMallocHost", 1),
        ("aclrtMalloc", 1),
        ("aclrtMemcpyAsync", 3),
        ("aclrtFree", 1),
        ("aclrtFreeHost", 1),
    ] {
        assert_eq!(trace.spans_named(name).count(), total * per_round, "{name}");
        assert_eq!(shim.logged(name).len(), total * per_round, "{name}");
    }
    assert!(
        shim.stderr().contains(&format!(
            "npushim: summary: rule pageable violated {total} times"
        )),
        "{}",
        shim.stderr()
    );
    for rule in ["freed", "bounds", "location", "direction"] {
        assert_eq!(rule_lines(&shim, rule), Vec::<String>::new(), "{rule}");
    }
    assert!(!shim.stderr().contains("leak summary"), "{}", shim.stderr());
}

#[test]
fn a_forked_child_and_its_parent_both_know_the_memory() {
    let (plain, shim) = run_both("memory-fork", &["fork"], &[]);
    assert_eq!(ok(&shim.out), plain.stdout());
    assert!(shim.stdout().contains("child status 0\n"));
    assert_eq!(shim.traces.len(), 2, "the parent's and the child's");
    let parent = shim.trace();
    let parent_pid = *shim.traces.keys().min().unwrap();
    let child = shim
        .traces
        .iter()
        .find(|(pid, _)| **pid != parent_pid)
        .unwrap()
        .1;
    let parent_copies: Vec<_> = copies(parent).iter().map(|s| memory_of(s)).collect();
    assert_eq!(
        parent_copies,
        [
            mem("pinned", "device", "", false, &[]),
            mem("pageable", "device", "", true, &["pageable"]),
        ]
    );
    // The child inherited the map: the parent's allocations are known there.
    let child_copies: Vec<_> = copies(child).iter().map(|s| memory_of(s)).collect();
    assert_eq!(
        child_copies,
        [
            mem("pinned", "device", "", false, &[]),
            mem("pageable", "device", "", true, &["pageable"]),
            mem("device", "pinned", "", false, &[]),
        ]
    );
    let host = parent.spans_named("aclrtMallocHost").next().unwrap()["args"]["ptr"].clone();
    assert_eq!(copies(child)[0]["args"]["src"], host);
    assert!(child.spans_named("aclrtMallocHost").next().is_none());
    // Each process reports its own pageable copy; the child did not allocate, so it has no
    // leak of its own (what it inherited is the parent's, which frees it).
    let summaries: Vec<String> = shim_lines(&shim)
        .into_iter()
        .filter(|l| l.starts_with("npushim: summary: rule pageable violated 1 time,"))
        .collect();
    assert_eq!(summaries.len(), 2, "{}", shim.stderr());
    assert!(!shim.stderr().contains("leak summary"), "{}", shim.stderr());
    assert_nothing_leaked(child);
}

#[test]
fn a_forked_child_s_leak_names_the_child_s_thread() {
    let (plain, shim) = run_both("memory-fork-leak", &["fork-leak"], &[]);
    assert_eq!(ok(&shim.out), plain.stdout());
    assert!(shim.stdout().contains("child status 0\n"));
    assert_eq!(shim.traces.len(), 2, "the parent's and the child's");
    let parent_pid = *shim.traces.keys().min().unwrap();
    let child_pid = *shim.traces.keys().max().unwrap();
    let child = &shim.traces[&child_pid];
    let span = child
        .spans_named("aclrtMallocHost")
        .next()
        .expect("the child's allocation");
    assert_eq!(
        span["tid"], child_pid,
        "the child's only thread has its pid as id"
    );
    let ptr = span["args"]["ptr"].as_str().unwrap();
    let leak_lines = leak_lines(&shim);
    // Only the child leaked, and its allocation came from its own thread, not from the
    // parent's (whose id the parent's allocation had looked up before the fork).
    assert_eq!(
        leak_lines,
        [format!(
            "npushim: leak summary: 1 pinned host allocation was never freed, 32768 bytes; \
             the largest, 32768 bytes at {ptr}, came from aclrtMallocHost on thread \
             {child_pid}"
        )],
        "parent {parent_pid}"
    );
    assert_nothing_leaked(shim.trace());
}

/// A log line or a span of an allocation function as `name k=v …` (keys sorted, pointers in
/// the trace's form). The runtime also logs what the shim does not trace: the opaque
/// `aclrtMallocConfig *cfg` and `aclrtHostRegister`'s `devPtr` output.
fn canon(name: &str, kv: impl Iterator<Item = (String, String)>) -> String {
    let sorted: BTreeMap<String, String> = kv
        .filter(|(k, _)| k != "cfg" && k != "devPtr")
        .map(|(k, v)| (k, ptr_to_hex(&v)))
        .collect();
    let mut s = name.to_string();
    for (k, v) in sorted {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

fn manages_memory(name: &str) -> bool {
    Hook::by_symbol(name).is_some_and(|h| h.class().manages_memory())
}

#[test]
fn every_allocation_free_and_registration_is_a_span_with_the_runtime_s_arguments() {
    let (plain, shim) = run_both("memory-hooks", &["hooks"], &[]);
    assert_eq!(ok(&shim.out), plain.stdout());
    assert_eq!(
        steps(&plain.stdout())[4],
        ("aclrtMalloc_zero".to_string(), 100_000)
    );
    assert_eq!(shim_lines(&shim), Vec::<String>::new());
    let logged: Vec<String> = shim
        .log
        .iter()
        .filter(|(n, _)| manages_memory(n))
        .map(|(n, kv)| canon(n, kv.iter().map(|(k, v)| (k.clone(), v.clone()))))
        .collect();
    let trace = shim.trace();
    let traced: Vec<String> = trace
        .spans()
        .filter(|s| manages_memory(s["name"].as_str().unwrap()))
        .map(|s| {
            let args = s["args"].as_object().unwrap();
            let kv = args.iter().map(|(k, v)| {
                let text = match v {
                    Value::String(t) => t.clone(),
                    other => other.to_string(),
                };
                (k.clone(), text)
            });
            canon(s["name"].as_str().unwrap(), kv)
        })
        .collect();
    assert_eq!(traced, logged);
    for hook in Hook::ALL.iter().filter(|h| h.class().manages_memory()) {
        assert!(
            trace.spans_named(hook.symbol()).next().is_some(),
            "no span of {}",
            hook.symbol()
        );
    }
    // What each allocation is, as the copies out of them see it.
    let kinds: Vec<_> = copies(trace).iter().map(|s| memory_of(s)).collect();
    assert_eq!(
        kinds,
        [
            mem("pinned", "device", "", false, &[]),
            mem("pinned", "device", "", false, &[]),
            mem("registered", "device", "", false, &[]),
            mem("registered", "device", "", false, &[]),
            // After the refused aclrtFree the buffer is still pinned, not freed.
            mem("pinned", "device", "", false, &[]),
        ]
    );
    let refused = steps(&plain.stdout())
        .into_iter()
        .find(|(s, _)| s == "aclrtFree_pinned");
    assert_eq!(refused, Some(("aclrtFree_pinned".to_string(), 107_000)));
    assert_nothing_leaked(trace);
}

#[test]
fn a_memset_of_pinned_memory_names_its_one_side() {
    let (plain, shim) = run_both("memory-memset", &["memset"], &[]);
    assert_eq!(ok(&shim.out), plain.stdout());
    let trace = shim.trace();
    let set = trace.spans_named("aclrtMemsetAsync").next().unwrap();
    assert_eq!(memory_of(set), mem("", "pinned", "", false, &[]));
    assert_eq!(shim_lines(&shim), Vec::<String>::new());
}

/// Memory-map args a span can carry.
const MEMORY_ARGS: [&str; 4] = ["srcMem", "dstMem", "effectiveKind", "sync"];

#[test]
fn with_the_memory_map_off_nothing_is_classified_and_nothing_changes() {
    for mode in ["pageable", "kind3", "direction", "bounds", "freed", "leak"] {
        let (plain, shim) = run_both(
            &format!("memory-off-{mode}"),
            &[mode],
            &[("NPUSHIM_MEMMAP", "off")],
        );
        assert_eq!(ok(&shim.out), plain.stdout(), "{mode}");
        let trace = shim.trace();
        for s in trace.spans() {
            for k in MEMORY_ARGS {
                assert!(s["args"].get(k).is_none(), "{mode}: {s}");
            }
            for rule in violations(s) {
                assert!(
                    !["location", "direction", "pageable", "bounds", "freed"].contains(&rule),
                    "{mode}: {s}"
                );
            }
        }
        // Allocations are still spans with their pointers.
        let alloc = trace
            .spans()
            .find(|s| s["name"].as_str().unwrap().starts_with("aclrtMalloc"))
            .unwrap();
        assert_ne!(alloc["args"]["ptr"], "0x0", "{mode}");
        // Without knowing that the source is pinned, a HOST_TO_HOST copy is judged on the
        // kind as passed: `h2h`, not `direction`.
        let rules: Vec<&str> = copies(trace).iter().flat_map(|s| violations(s)).collect();
        let lines = shim_lines(&shim);
        if mode == "direction" {
            assert_eq!(rules, ["h2h"]);
            assert_eq!(lines.len(), 2, "{lines:#?}");
            assert!(lines[0].starts_with("npushim: aclrtMemcpyAsync: h2h ["));
            assert!(lines[1].starts_with("npushim: summary: rule h2h violated 1 time"));
        } else {
            assert_eq!(rules, Vec::<&str>::new(), "{mode}");
            assert_eq!(lines, Vec::<String>::new(), "{mode}");
        }
        assert!(trace.meta("npushim_leaks").is_none(), "{mode}");
    }
}

/// Each memory rule's situation: the mode, the rule, the runtime's own code for the step,
/// and what strict mode returns (`None`: advice, the runtime's code).
const RULE_CASES: [(&str, &str, i64, Option<i64>); 5] = [
    ("kind3", "location", 107_000, Some(107_000)),
    ("direction", "direction", 0, None),
    ("pageable", "pageable", 0, None),
    ("bounds", "bounds", 107_000, Some(107_000)),
    ("freed", "freed", 0, Some(107_000)),
];

#[test]
fn off_warn_and_strict_for_each_memory_rule() {
    for (mode, rule, code, strict_code) in RULE_CASES {
        let plain = run(
            &format!("memory-modes-{mode}-plain"),
            false,
            &[mode, "1"],
            &[],
        );
        let first = |ran: &Ran| steps(&ok(&ran.out))[0].clone();
        assert_eq!(first(&plain).1, code, "{mode}");
        let plain_forwarded = forwarded_copies(&plain);
        for check in ["off", "warn", "strict"] {
            let ran = run(
                &format!("memory-modes-{mode}-{check}"),
                true,
                &[mode, "1"],
                &[("NPUSHIM_CHECK", check)],
            );
            let blocked = check == "strict" && strict_code.is_some();
            let expected = if blocked { strict_code.unwrap() } else { code };
            assert_eq!(first(&ran).1, expected, "{mode} {check}");
            let span = copies(ran.trace())[0];
            assert_eq!(span["args"]["ret"], expected, "{mode} {check}");
            let flagged = violations(span).contains(&rule);
            assert_eq!(flagged, check != "off", "{mode} {check}: {span}");
            assert_eq!(
                rule_lines(&ran, rule).len(),
                usize::from(check != "off"),
                "{mode} {check}: {}",
                ran.stderr()
            );
            // A blocked copy never reaches the runtime; every other one does.
            assert_eq!(
                forwarded_copies(&ran),
                plain_forwarded - usize::from(blocked),
                "{mode} {check}"
            );
            if check == "off" {
                assert_eq!(ran.stdout(), plain.stdout(), "{mode}");
                assert_eq!(shim_lines(&ran), Vec::<String>::new(), "{mode}");
            }
            if check == "warn" {
                assert_eq!(ran.stdout(), plain.stdout(), "{mode}");
            }
        }
    }
}
