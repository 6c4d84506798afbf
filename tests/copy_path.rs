//! The rest of the copy path (SPEC §2.3) end to end: real programs under `LD_PRELOAD`, with
//! the simulated runtime logging every call it receives (`NPUSIM_LOG_FUNCS=all`).
//!
//! - `torch_like` (blocking `aclrtMemcpy`, pinned `aclrtMemcpyAsync`, memset, 2D copy, the
//!   four host waits, and `aclrtMemcpyAsyncWithCondition` found with `dlopen` +
//!   `dlsym(handle)`) and `copy_path_calls` (one call per case, every hooked function) run
//!   with and without the shim with identical output; every call the runtime received is a
//!   span with the same arguments under the same vendor names, and the same result.
//! - A handle lookup is seen only once the library exports `dlsym`: the test reads the
//!   library's dynamic symbols and expects the `aclrtMemcpyAsyncWithCondition` span then,
//!   and its absence otherwise.
//! - `HcclD2DMemcpyAsync`'s nested `aclrtMemcpyAsync` is depth 1, inside its parent's span.
//! - Checks on the new functions in warn and strict mode: strict returns the runtime's own
//!   code without calling it.
//! - Faults by function name: a timed wait, one rank's D2D copies, the third and later
//!   blocking copies; a rule for one function never touches another.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Output};

use common::{Run, Trace, build, ok, ptr_to_hex, scratch, single_trace, stderr, stdout};
use npushim::abi::types::Hook;
use serde_json::Value;

type LogLine = (String, HashMap<String, String>);

/// Span arguments the runtime's log has no counterpart for.
const SHIM_ONLY_ARGS: &[&str] = &[
    "violations",
    "fault",
    "depth",
    "device",
    "srcMem",
    "dstMem",
    "effectiveKind",
    "sync",
];

/// A hooked copy, set or wait: the functions this file is about. Allocation calls (the
/// programs' own buffers) are spans too; tests/memory.rs covers them.
fn is_hooked(name: &str) -> bool {
    Hook::by_symbol(name).is_some_and(|h| !h.class().manages_memory())
}

/// The spans of hooked copies, sets and waits, in trace order.
fn copy_path_spans(trace: &Trace) -> impl Iterator<Item = &Value> {
    trace
        .spans()
        .filter(|s| s["name"].as_str().is_some_and(is_hooked))
}

/// True when the library under test exports `dlsym` (the handle-lookup interposition).
fn shim_exports_dlsym(shim: &Path) -> bool {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(shim)
        .output()
        .expect("nm runs");
    assert!(out.status.success(), "nm -D {} failed", shim.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().last() == Some("dlsym"))
}

/// A log line as `name k=v …` with keys sorted and pointers in the trace's form.
fn canon_log((name, kv): &LogLine) -> String {
    let sorted: BTreeMap<&str, String> = kv
        .iter()
        .map(|(k, v)| (k.as_str(), ptr_to_hex(v)))
        .collect();
    let mut s = name.clone();
    for (k, v) in sorted {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

/// A span in the same form: every argument but the shim's own, enums as the integers the
/// program passed. Equal to [`canon_log`] of the runtime's line exactly when the span has
/// the same function, the same argument names and values, and the same result.
fn canon_span(span: &Value) -> String {
    let args = span["args"].as_object().expect("span args");
    let mut sorted = BTreeMap::new();
    for (k, v) in args {
        if SHIM_ONLY_ARGS.contains(&k.as_str()) {
            continue;
        }
        let text = match (k.as_str(), v) {
            ("kind" | "linkType", _) => common::enum_value(span, k).to_string(),
            (_, Value::String(s)) => s.clone(),
            (_, Value::Number(n)) => n.to_string(),
            _ => panic!("unexpected argument {k}={v} in {span}"),
        };
        sorted.insert(k.as_str(), text);
    }
    let mut s = span["name"].as_str().unwrap().to_string();
    for (k, v) in sorted {
        s.push_str(&format!(" {k}={v}"));
    }
    s
}

/// The hooked calls of a runtime log, in order.
fn hooked_lines(log: &[LogLine]) -> Vec<&LogLine> {
    log.iter().filter(|(n, _)| is_hooked(n)).collect()
}

/// Asserts that `spans` are exactly the calls of `lines`, one for one, in order.
fn assert_same_calls(lines: &[&LogLine], spans: &[&Value]) {
    let l: Vec<String> = lines.iter().map(|l| canon_log(l)).collect();
    let s: Vec<String> = spans.iter().map(|s| canon_span(s)).collect();
    assert_eq!(
        l.len(),
        s.len(),
        "runtime log:\n{}\ntrace:\n{}",
        l.join("\n"),
        s.join("\n")
    );
    for (a, b) in l.iter().zip(&s) {
        assert_eq!(a, b, "runtime log line vs span");
    }
}

struct Runs {
    plain: Output,
    shim: Output,
    plain_log: Vec<LogLine>,
    log: Vec<LogLine>,
    trace: Trace,
}

/// Runs `program ARGS` without and with the shim (`env` for both, `shim_env` for the
/// second), each logging every call the runtime receives.
fn run_both(
    name: &str,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    shim_env: &[(&str, &str)],
) -> Runs {
    let dir = scratch(name);
    let prog = build().bin(program);
    let mut outs = Vec::new();
    for (shim, log) in [(false, "plain.log"), (true, "shim.log")] {
        let log = dir.join(log);
        let mut run = if shim {
            Run::shimmed(&prog, &dir)
        } else {
            Run::plain(&prog, &dir)
        };
        run = run.sim_log(&log).env("NPUSIM_LOG_FUNCS", "all").args(args);
        for (k, v) in env {
            run = run.env(k, v);
        }
        if shim {
            for (k, v) in shim_env {
                run = run.env(k, v);
            }
        }
        outs.push((run.output(), common::sim_log(&log)));
    }
    let (shim, log) = outs.pop().unwrap();
    let (plain, plain_log) = outs.pop().unwrap();
    Runs {
        plain,
        shim,
        plain_log,
        log,
        trace: single_trace(&dir),
    }
}

fn names(lines: &[&LogLine]) -> Vec<String> {
    lines.iter().map(|(n, _)| n.clone()).collect()
}

fn violations_of(span: &Value) -> Vec<String> {
    span["args"]["violations"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

fn top_level(trace: &Trace) -> Vec<&Value> {
    copy_path_spans(trace)
        .filter(|s| s["args"].get("depth").is_none())
        .collect()
}

/// `case NAME ret CODE` lines of `copy_path_calls`.
fn case_rets(out: &Output) -> Vec<(String, i64)> {
    stdout(out)
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            assert!(
                w.len() == 4 && w[0] == "case" && w[2] == "ret",
                "line {l:?}"
            );
            (w[1].to_string(), w[3].parse().unwrap())
        })
        .collect()
}

#[test]
fn torch_like_runs_unchanged_and_every_call_the_runtime_gets_is_a_span() {
    let r = run_both("copy-path-torch", "torch_like", &[], &[], &[]);
    let text = ok(&r.shim);
    assert_eq!(text, ok(&r.plain), "stdout differs under the shim");
    assert!(text.ends_with("OK\n"), "{text}");
    assert!(!stderr(&r.shim).contains("npushim:"), "{}", stderr(&r.shim));

    // The program made the same calls in both runs.
    let plain = hooked_lines(&r.plain_log);
    let lines = hooked_lines(&r.log);
    assert_eq!(names(&plain), names(&lines));
    for f in [
        "aclrtMemcpy",
        "aclrtMemcpyAsync",
        "aclrtMemcpyAsyncWithCondition",
        "aclrtMemsetAsync",
        "aclrtMemcpy2dAsync",
        "aclrtSynchronizeStream",
        "aclrtSynchronizeStreamWithTimeout",
        "aclrtSynchronizeEvent",
        "aclrtSynchronizeDevice",
    ] {
        assert!(
            lines.iter().any(|(n, _)| n == f),
            "torch_like makes no {f} call"
        );
    }

    // aclrtMemcpyAsyncWithCondition is reached through dlsym(handle): a preload sees it
    // only by interposing dlsym.
    let handle_lookups_seen = shim_exports_dlsym(&build().shim);
    let with_condition = |n: &str| n == "aclrtMemcpyAsyncWithCondition";
    let spans: Vec<&Value> = copy_path_spans(&r.trace).collect();
    let seen_with_condition = spans
        .iter()
        .filter(|s| with_condition(s["name"].as_str().unwrap()))
        .count();
    let expected: Vec<&LogLine> = if handle_lookups_seen {
        assert_eq!(
            seen_with_condition, 1,
            "libnpushim.so exports dlsym, so the dlsym(handle) call must be a span"
        );
        lines.clone()
    } else {
        assert_eq!(
            seen_with_condition, 0,
            "a dlsym(handle) lookup cannot be seen without a dlsym export"
        );
        lines
            .iter()
            .copied()
            .filter(|(n, _)| !with_condition(n))
            .collect()
    };
    assert_same_calls(&expected, &spans);

    // The waits carry what the host waited for.
    let wait = r
        .trace
        .spans_named("aclrtSynchronizeStreamWithTimeout")
        .next()
        .unwrap();
    assert_eq!(wait["args"]["timeout"], 60000);
    assert!(wait["args"]["stream"].as_str().unwrap().starts_with("0x"));
    let device = r
        .trace
        .spans_named("aclrtSynchronizeDevice")
        .next()
        .unwrap();
    assert_eq!(device["args"]["ret"], 0);
}

/// Every case of `copy_path_calls` in order: the rules it breaks (default rule set), the
/// runtime's own result, and what strict mode returns (`None`: forwarded, the runtime's).
const CASES: &[(&str, &[&str], i64, Option<i64>)] = &[
    ("memcpy2d_async_good", &[], 0, None),
    ("memcpy2d_async_wide", &["size"], 100_000, Some(100_000)),
    ("memcpy2d_wide", &["size"], 100_000, Some(100_000)),
    ("memcpy2d_async_kind5", &["kind"], 100_000, Some(100_000)),
    ("memcpy2d_async_h2h", &["h2h"], 207_000, Some(207_000)),
    ("memset_good", &[], 0, None),
    ("memset_over", &["size"], 107_000, Some(107_000)),
    // Synchronous host-to-host copies are allowed.
    ("memcpy_h2h", &[], 0, None),
    ("memcpy_size", &["size"], 107_000, Some(107_000)),
    // The runtime does not check alignment; the seed document requires it.
    ("with_condition_unaligned", &["align"], 0, Some(107_008)),
    ("d2d_good", &[], 0, None),
    ("d2d_null_dst", &["null"], 2, Some(2)),
    ("d2d_small_dst", &["size"], 2, Some(2)),
    ("hccl_memcpy_good", &[], 0, None),
    ("sync_timeout", &[], 0, None),
];

#[test]
fn every_hooked_function_is_a_span_with_the_runtime_s_arguments() {
    let r = run_both("copy-path-calls", "copy_path_calls", &[], &[], &[]);
    assert_eq!(ok(&r.shim), ok(&r.plain));
    let lines = hooked_lines(&r.log);
    assert_eq!(names(&hooked_lines(&r.plain_log)), names(&lines));
    let spans: Vec<&Value> = copy_path_spans(&r.trace).collect();
    assert_same_calls(&lines, &spans);

    // Between this program and torch_like, every hooked function has been seen.
    let torch = run_both("copy-path-calls-torch", "torch_like", &[], &[], &[]);
    for hook in Hook::ALL.iter().filter(|h| !h.class().manages_memory()) {
        let name = hook.symbol();
        let seen = spans.iter().any(|s| s["name"] == name)
            || copy_path_spans(&torch.trace).any(|s| s["name"] == name);
        assert!(seen, "no span of {name}");
    }
}

#[test]
fn checks_on_the_copy_path_in_warn_mode_report_and_forward() {
    let r = run_both("copy-path-warn", "copy_path_calls", &[], &[], &[]);
    let rets = case_rets(&r.shim);
    assert_eq!(rets, case_rets(&r.plain));
    let expected: Vec<(String, i64)> = CASES.iter().map(|c| (c.0.to_string(), c.2)).collect();
    assert_eq!(rets, expected);

    let top = top_level(&r.trace);
    // One span per case, then the program's final aclrtSynchronizeStream.
    assert_eq!(top.len(), CASES.len() + 1);
    for ((case, rules, ret, _), span) in CASES.iter().zip(&top) {
        assert_eq!(violations_of(span), *rules, "{case}: {span}");
        assert_eq!(span["args"]["ret"], *ret, "{case}: {span}");
    }
    assert_same_calls(
        &hooked_lines(&r.log),
        &copy_path_spans(&r.trace).collect::<Vec<_>>(),
    );
    // Each rule is named with the function and its own parameters.
    let err = stderr(&r.shim);
    for line in [
        "npushim: aclrtMemcpy2dAsync: size [dst=",
        "npushim: aclrtMemsetAsync: size [devPtr=",
        "npushim: aclrtMemcpy2dAsync: h2h [",
        "npushim: HcclD2DMemcpyAsync: null [dispatcher=",
        "npushim: aclrtMemcpyAsyncWithCondition: align [",
    ] {
        assert!(err.contains(line), "no {line:?} in\n{err}");
    }
    assert!(
        !err.contains("aclrtMemcpy: h2h"),
        "a synchronous host-to-host copy is allowed\n{err}"
    );
}

#[test]
fn strict_mode_returns_the_runtime_s_code_without_calling_it() {
    let r = run_both(
        "copy-path-strict",
        "copy_path_calls",
        &[],
        &[],
        &[("NPUSHIM_CHECK", "strict")],
    );
    let expected: Vec<(String, i64)> = CASES
        .iter()
        .map(|c| (c.0.to_string(), c.3.unwrap_or(c.2)))
        .collect();
    assert_eq!(case_rets(&r.shim), expected);

    // The runtime received exactly the spans of the calls strict mode let through.
    let mut forwarded = Vec::new();
    let mut case = 0;
    for span in copy_path_spans(&r.trace) {
        let top = span["args"].get("depth").is_none();
        let blocked = top && CASES.get(case).is_some_and(|c| c.3.is_some());
        if top {
            if let Some((name, rules, _, strict)) = CASES.get(case) {
                assert_eq!(violations_of(span), *rules, "{name}: {span}");
                if let Some(code) = strict {
                    assert_eq!(span["args"]["ret"], *code, "{name}: {span}");
                }
            }
            case += 1;
        }
        if !blocked {
            forwarded.push(span);
        }
    }
    assert_eq!(case, CASES.len() + 1);
    assert_same_calls(&hooked_lines(&r.log), &forwarded);
    // A blocked HcclD2DMemcpyAsync issued no nested copy.
    let d2d_lines = r
        .log
        .iter()
        .filter(|(n, _)| n == "HcclD2DMemcpyAsync")
        .count();
    assert_eq!(d2d_lines, 1, "only d2d_good reaches the runtime");
}

#[test]
fn hccl_d2d_nested_copies_are_depth_1_inside_their_parent() {
    let r = run_both(
        "copy-path-d2d",
        "ring_allgather",
        &["--d2d", "65536"],
        &[],
        &[],
    );
    let text = ok(&r.shim);
    assert_eq!(text, ok(&r.plain));
    assert!(text.contains("56 HcclD2DMemcpyAsync calls"), "{text}");

    // Threads interleave: compare the calls as multisets.
    let mut l: Vec<String> = hooked_lines(&r.log).iter().map(|x| canon_log(x)).collect();
    let mut s: Vec<String> = copy_path_spans(&r.trace).map(canon_span).collect();
    l.sort();
    s.sort();
    assert_eq!(l, s);

    let parents: Vec<&Value> = r.trace.spans_named("HcclD2DMemcpyAsync").collect();
    assert_eq!(parents.len(), 56);
    let nested: Vec<&Value> = r
        .trace
        .spans_named("aclrtMemcpyAsync")
        .filter(|s| s["args"].get("depth").is_some())
        .collect();
    assert_eq!(nested.len(), parents.len(), "one chunk per 64 KiB copy");
    let inside = |child: &Value, parent: &Value| {
        let (cs, ps) = (
            child["ts"].as_f64().unwrap(),
            parent["ts"].as_f64().unwrap(),
        );
        let (cd, pd) = (
            child["dur"].as_f64().unwrap(),
            parent["dur"].as_f64().unwrap(),
        );
        child["tid"] == parent["tid"] && cs >= ps && cs + cd <= ps + pd + 0.001
    };
    for p in &parents {
        assert!(p["args"].get("depth").is_none(), "{p}");
        let children: Vec<&&Value> = nested.iter().filter(|c| inside(c, p)).collect();
        assert_eq!(children.len(), 1, "{p}");
        let (c, pa) = (&children[0]["args"], &p["args"]);
        assert_eq!(c["depth"], 1);
        assert_eq!(c["dst"], pa["dst"]);
        assert_eq!(c["src"], pa["src"]);
        assert_eq!(c["count"], pa["count"]);
        assert_eq!(c["destMax"], pa["destMax"]);
        assert_eq!(c["kind"], "DEVICE_TO_DEVICE");
    }
}

#[test]
fn a_timed_wait_fails_by_name() {
    let r = run_both(
        "copy-path-fault-wait",
        "torch_like",
        &[],
        &[],
        &[(
            "NPUSHIM_FAULTS",
            "aclrtSynchronizeStreamWithTimeout=return(ACL_ERROR_RT_STREAM_SYNC_TIMEOUT)",
        )],
    );
    ok(&r.plain);
    assert_eq!(r.shim.status.code(), Some(1));
    assert!(
        stderr(&r.shim).contains("aclrtSynchronizeStreamWithTimeout failed with error 507046"),
        "{}",
        stderr(&r.shim)
    );
    let waits: Vec<&Value> = r
        .trace
        .spans_named("aclrtSynchronizeStreamWithTimeout")
        .collect();
    assert_eq!(waits.len(), 1);
    assert_eq!(waits[0]["args"]["ret"], 507_046);
    assert_eq!(waits[0]["args"]["fault"], "return(507046)");
    assert!(
        r.trace.instants().any(|i| i["name"] == "fault:return"
            && i["args"]["call"] == "aclrtSynchronizeStreamWithTimeout"),
        "no fault instant"
    );
    // No other function was touched, and the failed wait never reached the runtime.
    for s in copy_path_spans(&r.trace) {
        if s["name"] != "aclrtSynchronizeStreamWithTimeout" {
            assert!(s["args"].get("fault").is_none(), "{s}");
        }
    }
    assert!(
        !r.log
            .iter()
            .any(|(n, _)| n == "aclrtSynchronizeStreamWithTimeout")
    );
    assert!(r.log.iter().any(|(n, _)| n == "aclrtSynchronizeStream"));
}

#[test]
fn one_rank_s_d2d_copies_fail_by_filter() {
    let r = run_both(
        "copy-path-fault-rank",
        "ring_allgather",
        &["--d2d", "4096"],
        &[],
        &[(
            "NPUSHIM_FAULTS",
            "HcclD2DMemcpyAsync[rank=3]=return(HCCL_E_TIMEOUT)",
        )],
    );
    ok(&r.plain);
    assert_eq!(r.shim.status.code(), Some(1));
    assert!(
        stderr(&r.shim).contains("HcclD2DMemcpyAsync failed with HcclResult 9"),
        "{}",
        stderr(&r.shim)
    );
    let (mut failed, mut passed) = (0, 0);
    for s in r.trace.spans_named("HcclD2DMemcpyAsync") {
        if s["args"]["remoteUserRank"] == 3 {
            assert_eq!(s["args"]["ret"], 9, "{s}");
            assert_eq!(s["args"]["fault"], "return(9)", "{s}");
            failed += 1;
        } else {
            assert_eq!(s["args"]["ret"], 0, "{s}");
            assert!(s["args"].get("fault").is_none(), "{s}");
            passed += 1;
        }
    }
    assert!(failed >= 1, "rank 2 sends to rank 3 in the first step");
    // The forwarded ones reached the runtime (each with its nested copy); the failed ones
    // did not.
    let d2d: Vec<&LogLine> = r
        .log
        .iter()
        .filter(|(n, _)| n == "HcclD2DMemcpyAsync")
        .collect();
    assert_eq!(d2d.len(), passed);
    assert!(d2d.iter().all(|(_, kv)| kv["remoteUserRank"] != "3"));
    let nested = r
        .trace
        .spans_named("aclrtMemcpyAsync")
        .filter(|s| s["args"]["depth"] == 1)
        .count();
    assert_eq!(nested, passed);
    assert!(
        r.trace
            .instants()
            .any(|i| i["name"] == "fault:return" && i["args"]["call"] == "HcclD2DMemcpyAsync")
    );
}

#[test]
fn blocking_copies_are_lost_after_the_second() {
    let r = run_both(
        "copy-path-fault-skip",
        "torch_like",
        &[],
        &[],
        &[("NPUSHIM_FAULTS", "aclrtMemcpy=2*off->skip")],
    );
    ok(&r.plain);
    assert_eq!(r.shim.status.code(), Some(1));
    let text = stdout(&r.shim);
    assert!(text.contains("a.cpu(): MISMATCH"), "{text}");
    // The non-blocking copy is another function: untouched.
    assert!(
        text.contains("c.cpu(non_blocking): 65536 bytes ok"),
        "{text}"
    );

    let copies: Vec<&Value> = r.trace.spans_named("aclrtMemcpy").collect();
    assert_eq!(copies.len(), 5);
    for (i, s) in copies.iter().enumerate() {
        assert_eq!(s["args"]["ret"], 0, "{s}");
        if i < 2 {
            assert!(s["args"].get("fault").is_none(), "{s}");
        } else {
            assert_eq!(s["args"]["fault"], "skip", "{s}");
        }
    }
    for s in copy_path_spans(&r.trace).filter(|s| s["name"] != "aclrtMemcpy") {
        assert!(s["args"].get("fault").is_none(), "{s}");
    }
    let forwarded = r.log.iter().filter(|(n, _)| n == "aclrtMemcpy").count();
    assert_eq!(forwarded, 2);
    assert_eq!(
        r.trace
            .instants()
            .filter(|i| i["name"] == "fault:skip" && i["args"]["call"] == "aclrtMemcpy")
            .count(),
        3
    );
}

#[test]
fn a_rule_names_one_function_only() {
    let cases = [
        "memcpy_h2h",
        "with_condition_unaligned",
        "memcpy2d_async_good",
        "memset_good",
        "hccl_memcpy_good",
    ];
    // aclrtMemcpyAsync: the HCCL copy's nested call fails (HCCL_E_RUNTIME); aclrtMemcpy,
    // the WithCondition variant, the 2D copy and the memset are forwarded.
    let r = run_both(
        "copy-path-fault-async",
        "copy_path_calls",
        &cases,
        &[],
        &[("NPUSHIM_FAULTS", "aclrtMemcpyAsync=return(507053)")],
    );
    assert_eq!(
        case_rets(&r.shim),
        [
            ("memcpy_h2h", 0),
            ("with_condition_unaligned", 0),
            ("memcpy2d_async_good", 0),
            ("memset_good", 0),
            ("hccl_memcpy_good", 15),
        ]
        .map(|(n, c)| (n.to_string(), c))
    );
    for s in copy_path_spans(&r.trace) {
        let faulted = s["args"].get("fault").is_some();
        assert_eq!(faulted, s["name"] == "aclrtMemcpyAsync", "{s}");
    }

    // aclrtMemcpy: only the synchronous copy.
    let r = run_both(
        "copy-path-fault-sync",
        "copy_path_calls",
        &cases,
        &[],
        &[("NPUSHIM_FAULTS", "aclrtMemcpy=return(507053)")],
    );
    assert_eq!(
        case_rets(&r.shim),
        [
            ("memcpy_h2h", 507_053),
            ("with_condition_unaligned", 0),
            ("memcpy2d_async_good", 0),
            ("memset_good", 0),
            ("hccl_memcpy_good", 0),
        ]
        .map(|(n, c)| (n.to_string(), c))
    );
    for s in copy_path_spans(&r.trace) {
        let faulted = s["args"].get("fault").is_some();
        assert_eq!(faulted, s["name"] == "aclrtMemcpy", "{s}");
    }
    assert!(!r.log.iter().any(|(n, _)| n == "aclrtMemcpy"));
}
