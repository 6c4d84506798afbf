//! Fault injection (SPEC §6), end to end: `fault_probe` makes a scripted sequence of copies
//! (and control-API calls) under the shim, and each test compares the codes the program got
//! with what the simulated runtime received (its call log), the trace and stderr.
//! `retry_copy` shows a program recovering from injected faults.

mod common;

use std::collections::HashMap;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::Output;

use common::{Run, Trace, build, ok, parse_trace, scratch, single_trace, stderr, stdout};
use serde_json::Value;

const D2H_3RD_AND_4TH: &str = "aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=2*off->2*return(507053)->off";

/// One `call <i> <kind> <count> ret <code>` line of `fault_probe`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Call {
    kind: String,
    count: u64,
    ret: i64,
}

struct Probe {
    out: Output,
    calls: Vec<Call>,
    /// The other stdout lines (`set …`, `seed …`, `sync …`), in order.
    other: Vec<String>,
    log: Vec<(String, HashMap<String, String>)>,
}

impl Probe {
    fn rets(&self) -> Vec<i64> {
        self.calls.iter().map(|c| c.ret).collect()
    }

    fn trace(&self, dir: &Path) -> Trace {
        single_trace(dir)
    }
}

fn parse_probe(out: Output, log_path: &Path) -> Probe {
    let text = stdout(&out);
    let mut calls = Vec::new();
    let mut other = Vec::new();
    for line in text.lines() {
        let w: Vec<&str> = line.split(' ').collect();
        if w[0] == "call" {
            assert!(w.len() == 6 && w[4] == "ret", "unexpected line {line:?}");
            assert_eq!(w[1].parse::<usize>().unwrap(), calls.len() + 1, "{line}");
            calls.push(Call {
                kind: w[2].to_string(),
                count: w[3].parse().unwrap(),
                ret: w[5].parse().unwrap(),
            });
        } else {
            other.push(line.to_string());
        }
    }
    Probe {
        out,
        calls,
        other,
        log: common::sim_log(log_path),
    }
}

/// Runs `fault_probe ARGS…` in `dir` under the shim with extra environment `env`.
fn probe(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Probe {
    let log_path = dir.join("sim.log");
    let _ = std::fs::remove_file(&log_path);
    let mut run = Run::shimmed(&build().bin("fault_probe"), dir).sim_log(&log_path);
    for (k, v) in env {
        run = run.env(k, v);
    }
    let out = run.args(args).output();
    ok(&out);
    parse_probe(out, &log_path)
}

fn faults(spec: &str) -> [(&str, &str); 1] {
    [("NPUSHIM_FAULTS", spec)]
}

/// The `npushim: ` lines of stderr; asserts there is nothing else.
fn diagnostics(out: &Output) -> Vec<String> {
    let err = stderr(out);
    for line in err.lines() {
        assert!(line.starts_with("npushim: "), "stray stderr line {line:?}");
    }
    err.lines().map(str::to_string).collect()
}

fn fault_of(span: &Value) -> Option<&str> {
    span["args"]["fault"].as_str()
}

/// The seed the shim printed with its summary or fault banner.
fn printed_seed(err: &str) -> u64 {
    let at = err.find("(seed ").expect("a seed on stderr") + "(seed ".len();
    let digits: String = err[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap()
}

#[test]
fn n_times_chain_fails_exactly_the_third_and_fourth_device_to_host_copies() {
    let dir = scratch("faults-chain");
    let args = [
        "h2d:4096", "d2h:4096", "h2d:4096", "d2h:4096", "d2h:4096", "h2d:4096", "d2h:4096",
        "d2h:4096", "h2d:4096", "d2h:4096",
    ];
    let p = probe(&dir, &faults(D2H_3RD_AND_4TH), &args);
    let kinds: Vec<&str> = p.calls.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, args.iter().map(|a| &a[..3]).collect::<Vec<_>>());
    // D2H copies are calls 2, 4, 5, 7, 8 and 10: the 3rd and 4th are calls 5 and 7.
    assert_eq!(p.rets(), [0, 0, 0, 0, 507_053, 0, 507_053, 0, 0, 0]);

    // The failed calls never reached the runtime; every other call did, in order.
    let reached: Vec<usize> = (0..args.len()).filter(|i| ![4, 6].contains(i)).collect();
    assert_eq!(p.log.len(), reached.len());
    let log_kinds: Vec<&str> = p.log.iter().map(|(_, kv)| kv["kind"].as_str()).collect();
    let want: Vec<&str> = reached
        .iter()
        .map(|&i| if args[i].starts_with("h2d") { "1" } else { "2" })
        .collect();
    assert_eq!(log_kinds, want);

    // The trace: every call, the two faults on their spans and as instant events.
    let trace = p.trace(&dir);
    let spans: Vec<&Value> = trace.copies().collect();
    assert_eq!(spans.len(), args.len());
    for (i, span) in spans.iter().enumerate() {
        let injected = i == 4 || i == 6;
        assert_eq!(
            fault_of(span),
            injected.then_some("return(507053)"),
            "call {i}: {span}"
        );
        assert_eq!(span["args"]["ret"].as_i64(), Some(p.rets()[i]));
    }
    let instants: Vec<&Value> = trace.instants().collect();
    assert_eq!(instants.len(), 2);
    for (i, span) in instants.iter().zip([spans[4], spans[6]]) {
        assert_eq!(i["name"], "fault:return");
        assert_eq!(i["s"], "t");
        assert_eq!(i["args"]["action"], "return(507053)");
        assert_eq!(i["args"]["call"], "aclrtMemcpyAsync");
        assert_eq!(i["ts"], span["ts"]);
        assert_eq!(i["tid"], span["tid"]);
    }
    assert_eq!(
        trace.meta("npushim").unwrap()["args"]["config"]["faults"],
        D2H_3RD_AND_4TH,
        "the normalized spec is recorded"
    );

    // stderr: the banner at start, the summary at exit, each with the seed.
    let diag = diagnostics(&p.out);
    let seed = trace.meta("npushim").unwrap()["args"]["seed"]
        .as_u64()
        .unwrap();
    assert!(
        diag.iter()
            .any(|l| l.starts_with("npushim: fault injection active: ")
                && l.contains(D2H_3RD_AND_4TH)
                && l.contains(&format!("replay with NPUSHIM_SEED={seed}"))),
        "{diag:?}"
    );
    assert!(
        diag.contains(&format!(
            "npushim: summary: injected faults: 2 return (seed {seed})"
        )),
        "{diag:?}"
    );
}

fn thirty_percent(dir: &Path, seed: Option<&str>) -> Probe {
    let mut env = vec![("NPUSHIM_FAULTS", "aclrtMemcpyAsync=30%return")];
    if let Some(s) = seed {
        env.push(("NPUSHIM_SEED", s));
    }
    let mut args = vec!["seed"];
    args.extend(std::iter::repeat_n("d2d:64", 64));
    probe(dir, &env, &args)
}

#[test]
fn the_same_seed_gives_the_same_faults() {
    let a = thirty_percent(&scratch("faults-seed-a"), Some("12345"));
    let b = thirty_percent(&scratch("faults-seed-b"), Some("12345"));
    let c = thirty_percent(&scratch("faults-seed-c"), Some("54321"));
    assert_eq!(a.other, ["seed 12345"]);
    assert_eq!(c.other, ["seed 54321"]);
    assert_eq!(a.rets(), b.rets());
    let failed = a.rets().iter().filter(|&&r| r != 0).count();
    assert!(failed > 0 && failed < 64, "{failed} of 64 failed");
    assert!(
        a.rets().iter().all(|&r| r == 0 || r == 507_000),
        "default code"
    );
    assert_ne!(
        a.rets(),
        c.rets(),
        "a different seed gives a different sequence"
    );
    assert_eq!(a.log.len(), 64 - failed);
}

#[test]
fn a_random_seed_is_printed_traced_and_replays_exactly() {
    let dir = scratch("faults-seed-random");
    let first = thirty_percent(&dir, None);
    let seed_line = first.other[0].clone();
    let seed: u64 = seed_line.strip_prefix("seed ").unwrap().parse().unwrap();
    let err = stderr(&first.out);
    assert_eq!(printed_seed(&err), seed, "{err}");
    assert!(
        err.contains(&format!("replay with NPUSHIM_SEED={seed}")),
        "{err}"
    );
    let trace = single_trace(&dir);
    assert_eq!(
        trace.meta("npushim").unwrap()["args"]["seed"].as_u64(),
        Some(seed)
    );
    let injected: Vec<bool> = trace.copies().map(|s| fault_of(s).is_some()).collect();
    assert_eq!(
        injected,
        first.rets().iter().map(|&r| r != 0).collect::<Vec<_>>()
    );

    let dir = scratch("faults-seed-replay");
    let replay = thirty_percent(&dir, Some(&seed.to_string()));
    assert_eq!(replay.other, [seed_line]);
    assert_eq!(replay.rets(), first.rets());
    assert_eq!(stdout(&replay.out), stdout(&first.out));
}

#[test]
fn count_and_kind_filters_select_exactly() {
    let dir = scratch("faults-count");
    let p = probe(
        &dir,
        &faults("aclrtMemcpyAsync[count>=1M]=return"),
        &[
            "d2d:4096",
            "d2d:1M",
            "d2d:1048575",
            "d2d:2M",
            "h2d:1M",
            "d2d:64",
        ],
    );
    assert_eq!(p.rets(), [0, 507_000, 0, 507_000, 507_000, 0]);
    let counts: Vec<&str> = p.log.iter().map(|(_, kv)| kv["count"].as_str()).collect();
    assert_eq!(counts, ["4096", "1048575", "64"]);

    let dir = scratch("faults-kind-ne");
    let p = probe(
        &dir,
        &faults("aclrtMemcpyAsync[kind!=DEVICE_TO_HOST]=return(ACL_ERROR_RT_SYS_DMA)"),
        &["h2d:64", "d2h:64", "d2d:64"],
    );
    assert_eq!(p.rets(), [507_013, 0, 507_013]);
    assert_eq!(p.log.len(), 1);
    assert_eq!(p.log[0].1["kind"], "2");
}

#[test]
fn dest_max_and_stream_filters_select_exactly() {
    let dir = scratch("faults-destmax");
    let p = probe(
        &dir,
        &faults("aclrtMemcpyAsync[destMax<8K]=return(ACL_ERROR_RT_MEMORY_ALLOCATION)"),
        &[
            "d2d:64:max=4K",
            "d2d:64:max=8K",
            "d2d:64:max=8191",
            "d2d:64:max=1M",
        ],
    );
    assert_eq!(p.rets(), [207_001, 0, 207_001, 0]);
    let maxes: Vec<&str> = p.log.iter().map(|(_, kv)| kv["destMax"].as_str()).collect();
    assert_eq!(maxes, ["8192", "1048576"]);

    // The NULL stream (the context's default stream) is address 0.
    let dir = scratch("faults-stream");
    let p = probe(
        &dir,
        &faults("aclrtMemcpyAsync[stream=0]=1*skip"),
        &[
            "h2d:64",
            "h2d:64:stream=default",
            "h2d:64:stream=default",
            "h2d:64",
        ],
    );
    assert_eq!(p.rets(), [0, 0, 0, 0]);
    // The runtime's log prints a NULL stream as glibc's %p does.
    let streams: Vec<&str> = p.log.iter().map(|(_, kv)| kv["stream"].as_str()).collect();
    assert_eq!(
        streams.len(),
        3,
        "one default-stream copy skipped: {:?}",
        p.log
    );
    assert_eq!(
        streams[1], "(nil)",
        "the second default-stream copy reached the runtime"
    );
    assert_ne!(streams[0], "(nil)");
    assert_ne!(streams[2], "(nil)");
    let trace = p.trace(&dir);
    let skipped: Vec<_> = trace
        .spans()
        .filter(|s| fault_of(s) == Some("skip"))
        .collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["args"]["stream"], "0x0");
}

#[test]
fn rank_filter_selects_hccl_copies_to_one_peer() {
    let dir = scratch("faults-rank");
    let p = probe(
        &dir,
        &faults("HcclMemcpyAsync[rank=3]=return"),
        &[
            "hccl:d2d:4096:rank=1",
            "hccl:d2d:4096:rank=3",
            "d2d:4096",
            "hccl:d2d:4096:rank=4",
        ],
    );
    assert_eq!(p.rets(), [0, 15, 0, 0], "HCCL_E_RUNTIME by default");
    let ranks: Vec<&str> = p
        .log
        .iter()
        .filter(|(n, _)| n == "HcclMemcpyAsync")
        .map(|(_, kv)| kv["remoteUserRank"].as_str())
        .collect();
    assert_eq!(ranks, ["1", "4"], "the rank-3 copy never reached HCCL");
    // Neither did its nested aclrtMemcpyAsync: 2 HCCL copies + 2 nested + 1 top-level.
    assert_eq!(p.log.len(), 5);
    let trace = p.trace(&dir);
    let faulted: Vec<&Value> = trace.spans().filter(|s| fault_of(s).is_some()).collect();
    assert_eq!(faulted.len(), 1);
    assert_eq!(faulted[0]["name"], "HcclMemcpyAsync");
    assert_eq!(faulted[0]["args"]["remoteUserRank"], 3);
    assert_eq!(fault_of(faulted[0]), Some("return(15)"));
}

#[test]
fn link_filter_and_the_any_target() {
    let dir = scratch("faults-link");
    let p = probe(
        &dir,
        &faults("HcclMemcpyAsync[link=ROCE]=return(HCCL_E_ROCE_TRANSFER)"),
        &["hccl:d2d:4096:link=1", "hccl:d2d:4096:link=3", "d2d:4096"],
    );
    assert_eq!(p.rets(), [0, 14, 0]);

    // `*` matches both APIs; an HCCL copy the rule fails issues no nested copy.
    let dir = scratch("faults-any");
    let p = probe(
        &dir,
        &faults("*[count=8K]=return"),
        &["d2d:8K", "hccl:d2d:8K", "d2d:4K", "hccl:d2d:4K"],
    );
    assert_eq!(p.rets(), [507_000, 15, 0, 0]);
    let counts: Vec<(&str, &str)> = p
        .log
        .iter()
        .map(|(n, kv)| (n.as_str(), kv["count"].as_str()))
        .collect();
    assert_eq!(
        counts,
        [
            ("aclrtMemcpyAsync", "4096"),
            ("aclrtMemcpyAsync", "4096"),
            ("HcclMemcpyAsync", "4096")
        ]
    );
}

#[test]
fn depth_filter_targets_only_the_nested_copy_of_an_hccl_copy() {
    let dir = scratch("faults-depth");
    let p = probe(
        &dir,
        &faults("aclrtMemcpyAsync[depth=1]=return"),
        &["d2d:4096", "hccl:d2d:4096", "h2d:4096"],
    );
    // The nested copy fails, so HCCL reports a runtime failure; top-level copies are fine.
    assert_eq!(p.rets(), [0, 15, 0]);
    let log: Vec<(&str, &str)> = p
        .log
        .iter()
        .map(|(n, kv)| (n.as_str(), kv["ret"].as_str()))
        .collect();
    assert_eq!(
        log,
        [
            ("aclrtMemcpyAsync", "0"),
            ("HcclMemcpyAsync", "15"), // the real HcclMemcpyAsync ran; its nested copy did not
            ("aclrtMemcpyAsync", "0"),
        ]
    );
    let trace = p.trace(&dir);
    let spans: Vec<&Value> = trace.copies().collect();
    assert_eq!(spans.len(), 4);
    let nested = spans.iter().find(|s| s["args"]["depth"] == 1).unwrap();
    assert_eq!(nested["name"], "aclrtMemcpyAsync");
    assert_eq!(fault_of(nested), Some("return(507000)"));
    assert_eq!(nested["args"]["ret"], 507_000);
    let hccl = spans
        .iter()
        .find(|s| s["name"] == "HcclMemcpyAsync")
        .unwrap();
    assert_eq!(hccl["args"]["ret"], 15);
    assert_eq!(fault_of(hccl), None);
    // The nested span lies inside its HCCL span.
    let (ts, dur) = (hccl["ts"].as_f64().unwrap(), hccl["dur"].as_f64().unwrap());
    let nts = nested["ts"].as_f64().unwrap();
    assert!(nts >= ts && nts <= ts + dur, "{nested} not inside {hccl}");
}

#[test]
fn an_hccl_rule_and_an_acl_rule_interact() {
    // An HCCL copy the HCCL rule fails never issues its nested copy, so it does not use up
    // the ACL rule; the next HCCL copy does.
    let dir = scratch("faults-two-rules");
    let p = probe(
        &dir,
        &faults(
            "HcclMemcpyAsync[rank=3]=return(HCCL_E_TIMEOUT);aclrtMemcpyAsync[depth=1]=1*return",
        ),
        &[
            "hccl:d2d:4096:rank=3",
            "d2d:4096",
            "hccl:d2d:4096:rank=1",
            "hccl:d2d:4096:rank=1",
            "d2d:4096",
        ],
    );
    assert_eq!(p.rets(), [9, 0, 15, 0, 0]);
    let trace = p.trace(&dir);
    let faults: Vec<(&str, &str)> = trace
        .spans()
        .filter_map(|s| Some((s["name"].as_str().unwrap(), fault_of(s)?)))
        .collect();
    assert_eq!(
        faults,
        [
            ("HcclMemcpyAsync", "return(9)"),
            ("aclrtMemcpyAsync", "return(507000)")
        ]
    );
    assert!(
        stderr(&p.out).contains("npushim: summary: injected faults: 2 return (seed "),
        "{}",
        stderr(&p.out)
    );
}

#[test]
fn skip_and_return_never_reach_the_runtime() {
    let dir = scratch("faults-skip-return");
    let p = probe(
        &dir,
        &faults("aclrtMemcpyAsync[kind=DEVICE_TO_DEVICE]=1*skip->1*return->off"),
        &["d2d:4096", "d2d:8192", "d2d:12288", "h2d:4096"],
    );
    assert_eq!(p.rets(), [0, 507_000, 0, 0], "skip returns success");
    let counts: Vec<&str> = p.log.iter().map(|(_, kv)| kv["count"].as_str()).collect();
    assert_eq!(
        counts,
        ["12288", "4096"],
        "neither the skipped nor the failed copy was made"
    );

    let trace = p.trace(&dir);
    let spans: Vec<&Value> = trace.copies().collect();
    let faults: Vec<Option<&str>> = spans.iter().map(|s| fault_of(s)).collect();
    assert_eq!(faults, [Some("skip"), Some("return(507000)"), None, None]);
    assert_eq!(spans[0]["args"]["ret"], 0);
    let instants: Vec<(&str, &str)> = trace
        .instants()
        .map(|i| {
            (
                i["name"].as_str().unwrap(),
                i["args"]["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        instants,
        [("fault:skip", "skip"), ("fault:return", "return(507000)")]
    );
    assert!(
        diagnostics(&p.out)
            .iter()
            .any(|l| l.starts_with("npushim: summary: injected faults: 1 return, 1 skip (seed ")),
        "{}",
        stderr(&p.out)
    );
}

#[test]
fn delay_holds_the_call_then_forwards_it() {
    let dir = scratch("faults-delay");
    let p = probe(
        &dir,
        &faults("aclrtMemcpyAsync=1*delay(200ms)"),
        &["d2d:4096", "d2d:4096"],
    );
    assert_eq!(p.rets(), [0, 0]);
    assert_eq!(p.log.len(), 2, "a delayed call is still forwarded");
    let trace = p.trace(&dir);
    let spans: Vec<&Value> = trace.copies().collect();
    assert_eq!(fault_of(spans[0]), Some("delay(200ms)"));
    assert!(
        spans[0]["dur"].as_f64().unwrap() >= 200_000.0,
        "dur {} µs",
        spans[0]["dur"]
    );
    assert_eq!(fault_of(spans[1]), None);
    let names: Vec<&str> = trace
        .instants()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fault:delay"]);
    assert!(
        stderr(&p.out).contains("npushim: summary: injected faults: 1 delay (seed "),
        "{}",
        stderr(&p.out)
    );
}

#[test]
fn abort_aborts_and_the_trace_keeps_the_call() {
    let dir = scratch("faults-abort");
    let log_path = dir.join("sim.log");
    let mut cmd = Run::shimmed(&build().bin("fault_probe"), &dir)
        .sim_log(&log_path)
        .env(
            "NPUSHIM_FAULTS",
            "aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=abort",
        )
        .args(["h2d:4096", "d2h:4096", "h2d:4096"])
        .command();
    // SAFETY: setrlimit is async-signal-safe; no core file for an intended abort.
    unsafe {
        cmd.pre_exec(|| {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{:?}", out.status);
    assert_eq!(stdout(&out), "call 1 h2d 4096 ret 0\n");
    let err = stderr(&out);
    assert!(
        err.lines().any(
            |l| l.starts_with("npushim: injected abort in aclrtMemcpyAsync [")
                && l.contains("(seed ")
        ),
        "{err}"
    );
    let log = common::sim_log(&log_path);
    assert_eq!(log.len(), 1, "the aborting call did not reach the runtime");

    let trace = single_trace(&dir);
    assert!(!trace.complete, "no normal exit, no closing bracket");
    let spans: Vec<&Value> = trace.copies().collect();
    assert_eq!(spans.len(), 2, "{:?}", trace.events);
    assert_eq!(fault_of(spans[0]), None);
    assert_eq!(spans[1]["args"]["kind"], "DEVICE_TO_HOST");
    assert_eq!(fault_of(spans[1]), Some("abort"));
    assert!(trace.instants().any(|i| i["name"] == "fault:abort"));
    // Still readable as the format promises (whole lines are a valid prefix).
    assert_eq!(parse_trace(&trace.path).events.len(), trace.events.len());
}

/// Untraced, a repeated clean copy is forwarded from a per-thread memo of its verdict
/// (pinned and device buffers: the memory rules apply): rules set, used up and cleared at
/// run time still take effect at the very next identical call, for both APIs.
#[test]
fn rules_set_at_run_time_reach_a_copy_the_shim_has_seen_clean_before() {
    let dir = scratch("faults-control-untraced");
    let p = probe(
        &dir,
        &[("NPUSHIM_TRACE", "off")],
        &[
            "h2d:4K",
            "h2d:4K",
            "hccl:d2d:4K",
            "hccl:d2d:4K",
            "set:*=1*return(507053)",
            "h2d:4K",
            "h2d:4K",
            "set:HcclMemcpyAsync=return(4)",
            "hccl:d2d:4K",
            "h2d:4K",
            "set:",
            "hccl:d2d:4K",
            "h2d:4K",
        ],
    );
    assert_eq!(p.rets(), [0, 0, 0, 0, 507_053, 0, 4, 0, 0, 0]);
    assert_eq!(p.other, ["set ret 0", "set ret 0", "set ret 0"]);
}

#[test]
fn the_control_api_changes_rules_at_run_time() {
    let dir = scratch("faults-control");
    let bad = "aclrtMemcpyAsync=retrun";
    let p = probe(
        &dir,
        &[],
        &[
            "d2d:64",
            "set:aclrtMemcpyAsync[kind=DEVICE_TO_DEVICE]=2*return(507053)",
            "d2d:64",
            "h2d:64",
            &format!("set:{bad}"),
            "d2d:64", // the previous rules still hold: second of two
            "d2d:64", // used up
            "set:aclrtMemcpyAsync=return",
            "h2d:64",
            "set:",
            "d2d:64",
        ],
    );
    assert_eq!(p.rets(), [0, 507_053, 0, 507_053, 0, 507_000, 0]);
    let column = bad.find("retrun").unwrap() + 1;
    assert_eq!(p.other.len(), 4);
    assert_eq!(p.other[0], "set ret 0");
    let rejected = &p.other[1];
    assert!(
        rejected.starts_with(&format!("set ret -1 err at column {column}: "))
            && rejected.contains("retrun"),
        "{rejected}"
    );
    assert_eq!(p.other[2..], ["set ret 0", "set ret 0"]);
    assert_eq!(p.log.len(), 4, "three faults were injected");
    assert!(
        stderr(&p.out).contains("npushim: summary: injected faults: 3 return (seed "),
        "{}",
        stderr(&p.out)
    );

    // Without the shim the same program runs, fault-free.
    let dir = scratch("faults-control-plain");
    let out = Run::plain(&build().bin("fault_probe"), &dir)
        .args(["set:aclrtMemcpyAsync=return", "d2d:64", "seed"])
        .output();
    assert_eq!(
        ok(&out),
        "set unavailable\ncall 1 d2d 64 ret 0\nseed unavailable\n"
    );
}

#[test]
fn a_malformed_spec_is_reported_once_and_the_program_runs_fault_free() {
    let typo = "aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=2*off->2*retrun(507053)->off";
    let args = ["d2h:4096", "d2h:4096", "d2h:4096", "d2h:4096", "d2h:4096"];
    let dir = scratch("faults-malformed-ref");
    let reference = probe(&dir, &[], &args);
    let dir = scratch("faults-malformed");
    let p = probe(&dir, &faults(typo), &args);
    assert_eq!(stdout(&p.out), stdout(&reference.out), "identical output");
    assert_eq!(p.rets(), [0; 5]);
    assert_eq!(p.log.len(), 5);

    let diag = diagnostics(&p.out);
    let column = typo.find("retrun").unwrap() + 1;
    assert_eq!(diag.len(), 1, "{diag:?}");
    assert!(
        diag[0].starts_with(&format!("npushim: NPUSHIM_FAULTS: at column {column}: ")),
        "{}",
        diag[0]
    );
    assert!(
        diag[0].contains("'retrun'") && diag[0].contains("no faults"),
        "{}",
        diag[0]
    );

    let trace = single_trace(&dir);
    assert!(trace.spans().all(|s| fault_of(s).is_none()));
    assert_eq!(trace.instants().count(), 0);
    assert_eq!(
        trace.meta("npushim").unwrap()["args"]["config"]["faults"],
        ""
    );
}

fn retry_copy(dir: &Path, spec: Option<&str>) -> Output {
    let mut run = Run::shimmed(&build().bin("retry_copy"), dir);
    if let Some(s) = spec {
        run = run.env("NPUSHIM_FAULTS", s);
    }
    run.output()
}

#[test]
fn retry_copy_needs_no_retries_without_faults() {
    let dir = scratch("faults-retry-none");
    let want = "retry_copy: 20 steps, 60 copies, 0 retries, 0 redone steps, all results verified\n";
    assert_eq!(
        ok(&Run::plain(&build().bin("retry_copy"), &dir).output()),
        want
    );
    let out = retry_copy(&dir, None);
    assert_eq!(ok(&out), want);
    assert_eq!(stderr(&out), "");
}

#[test]
fn retry_copy_retries_a_failed_copy() {
    let dir = scratch("faults-retry-return");
    let out = retry_copy(
        &dir,
        Some("aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=2*off->1*return(507053)->off"),
    );
    assert_eq!(
        ok(&out),
        "step 3: D2H copy failed with error 507053, retry 1/3\n\
         retry_copy: 20 steps, 60 copies, 1 retries, 0 redone steps, all results verified\n"
    );
    let trace = single_trace(&dir);
    assert_eq!(trace.copies().count(), 61);
    assert_eq!(trace.copies().filter(|s| fault_of(s).is_some()).count(), 1);
}

#[test]
fn retry_copy_redoes_a_step_whose_copy_was_lost() {
    let dir = scratch("faults-retry-skip");
    let out = retry_copy(
        &dir,
        Some("aclrtMemcpyAsync[kind=DEVICE_TO_DEVICE]=1*off->1*skip->off"),
    );
    assert_eq!(
        ok(&out),
        "step 2: result mismatch after a successful copy (lost copy?) - redoing step\n\
         retry_copy: 20 steps, 63 copies, 0 retries, 1 redone steps, all results verified\n"
    );
    let trace = single_trace(&dir);
    let skipped: Vec<&Value> = trace
        .spans()
        .filter(|s| fault_of(s) == Some("skip"))
        .collect();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0]["args"]["kind"], "DEVICE_TO_DEVICE");
    assert_eq!(skipped[0]["args"]["ret"], 0);
}

#[test]
fn retry_copy_gives_up_when_retries_are_exhausted() {
    let dir = scratch("faults-retry-exhausted");
    let out = retry_copy(
        &dir,
        Some("aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=2*off->4*return(507053)->off"),
    );
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("step 3: D2H copy failed with error 507053, retry 3/3\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "step 3: D2H copy still failing with error 507053 after 3 retries, giving up\n"
        ),
        "{text}"
    );
    assert!(
        text.ends_with(
            "retry_copy: FAILED at step 3 of 20 (8 copies, 3 retries, 0 redone steps)\n"
        ),
        "{text}"
    );

    let dir = scratch("faults-retry-always-lost");
    let out = retry_copy(&dir, Some("aclrtMemcpyAsync[kind=DEVICE_TO_HOST]=skip"));
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("step 1: result still wrong after 3 redos, giving up\n"),
        "{text}"
    );
    assert!(
        text.ends_with(
            "retry_copy: FAILED at step 1 of 20 (12 copies, 0 retries, 3 redone steps)\n"
        ),
        "{text}"
    );
}
