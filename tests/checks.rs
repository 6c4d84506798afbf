//! Argument checks (SPEC §4), end to end: `bad_calls` makes one call per argument mistake
//! under the shim, and each test compares what the program got back, what the simulated
//! runtime received (its call log), what the shim printed and what it traced.
//!
//! - `warn` (the default): every call reaches the runtime unchanged and returns the
//!   runtime's own code; each violated rule is named on stderr (rate-limited), in the trace
//!   (`violations`, `violation:<rule>`) and in the exit summary.
//! - `strict`: error rules return their SPEC code without calling the runtime; advice rules
//!   (`overlap`, `link`) never block; `-align` lets unaligned calls through; a zero-byte
//!   copy is never a violation.
//! - `off`: nothing reported, everything forwarded.
//! - a bad `NPUSHIM_CHECK`: one diagnostic listing the valid words, then `warn`.
//! - the example programs are clean in strict mode.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Output;

use common::{
    Run, Trace, build, ok, parse_trace, ptr_to_hex, scratch, single_trace, stderr, stdout,
};
use serde_json::Value;

/// Every case of `bad_calls`, in the order it runs them, with the rules it breaks under
/// the default rule set (overlap is opt-in) and the code the simulated runtime returns.
const CASES: &[(&str, &[&str], i64)] = &[
    ("good", &[], 0),
    ("zero", &[], 0),
    ("null_dst", &["null"], 100_000),
    ("kind6", &["kind"], 100_000),
    ("kind_neg", &["kind"], 100_000),
    ("size", &["size"], 107_000),
    ("unaligned_dst", &["align"], 0),
    ("unaligned_src", &["align"], 0),
    ("h2h", &["h2h"], 207_000),
    ("overlap", &[], 0),
    ("h2h_unaligned", &["align", "h2h"], 207_000),
    ("hccl_good", &[], 0),
    ("hccl_null_dispatcher", &["null"], 2),
    ("hccl_null_stream", &["null"], 2),
    ("hccl_kind5", &["kind"], 1),
    ("hccl_size", &["size"], 1),
    ("hccl_link", &["link"], 0),
];

/// What strict mode returns for each case, and whether the call reaches the runtime.
const STRICT: &[(&str, i64, bool)] = &[
    ("good", 0, true),
    ("zero", 0, true),
    ("null_dst", 100_000, false),
    ("kind6", 100_000, false),
    ("kind_neg", 100_000, false),
    ("size", 107_000, false),
    ("unaligned_dst", 107_008, false),
    ("unaligned_src", 107_008, false),
    ("h2h", 207_000, false),
    ("overlap", 0, true),
    // align comes before h2h in table order.
    ("h2h_unaligned", 107_008, false),
    ("hccl_good", 0, true),
    ("hccl_null_dispatcher", 2, false),
    ("hccl_null_stream", 2, false),
    ("hccl_kind5", 1, false),
    ("hccl_size", 1, false),
    // link is advice: forwarded even in strict mode.
    ("hccl_link", 0, true),
];

struct Outcome {
    out: Output,
    /// `case <name> ret <code>` lines, in order.
    rets: Vec<(String, i64)>,
    log: Vec<(String, HashMap<String, String>)>,
    trace: Option<Trace>,
}

/// Runs `bad_calls ARGS…` in `dir` with the shim (`check` = `NPUSHIM_CHECK`, `None` to
/// leave it unset), or without it when `shim` is false.
fn bad_calls(dir: &Path, shim: bool, check: Option<&str>, args: &[&str]) -> Outcome {
    let prog = build().bin("bad_calls");
    let log_path = dir.join("sim.log");
    let _ = std::fs::remove_file(&log_path);
    let mut run = if shim {
        Run::shimmed(&prog, dir)
    } else {
        Run::plain(&prog, dir)
    };
    if let Some(c) = check {
        run = run.env("NPUSHIM_CHECK", c);
    }
    let out = run.sim_log(&log_path).args(args).output();
    let text = ok(&out);
    let rets = text
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split(' ').collect();
            assert!(
                w.len() == 4 && w[0] == "case" && w[2] == "ret",
                "unexpected line {l:?}"
            );
            (w[1].to_string(), w[3].parse().unwrap())
        })
        .collect();
    let log = common::sim_log(&log_path);
    let trace = shim.then(|| single_trace(dir));
    Outcome {
        out,
        rets,
        log,
        trace,
    }
}

/// The `npushim: ` lines that report one violation: (API, rule, whole line).
fn violation_lines(err: &str) -> Vec<(String, String, String)> {
    err.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("npushim: ")?;
            let (api, rest) = rest.split_once(": ")?;
            if api != "aclrtMemcpyAsync" && api != "HcclMemcpyAsync" {
                return None;
            }
            let (rule, _) = rest.split_once(" [")?;
            Some((api.to_string(), rule.to_string(), l.to_string()))
        })
        .collect()
}

fn violations_of(span: &Value) -> Vec<String> {
    span["args"]["violations"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// The program's own calls (not the nested `aclrtMemcpyAsync` of an HCCL copy), in order.
fn top_level_spans(trace: &Trace) -> Vec<&Value> {
    trace
        .copies()
        .filter(|s| s["args"].get("depth").is_none())
        .collect()
}

fn api_of(case: &str) -> &'static str {
    if case.starts_with("hccl_") {
        "HcclMemcpyAsync"
    } else {
        "aclrtMemcpyAsync"
    }
}

/// Asserts that one line of the simulated runtime's log is exactly the call the trace
/// recorded: same function, same arguments, same result.
fn assert_same_call(log: &(String, HashMap<String, String>), span: &Value) {
    let (name, kv) = log;
    let a = &span["args"];
    assert_eq!(span["name"], name.as_str(), "log {kv:?} vs span {span}");
    let hex = |k: &str| ptr_to_hex(&kv[k]);
    let num = |k: &str| kv[k].parse::<i64>().unwrap();
    assert_eq!(a["dst"], hex("dst"), "{span}");
    assert_eq!(a["src"], hex("src"), "{span}");
    assert_eq!(a["stream"], hex("stream"), "{span}");
    assert_eq!(a["destMax"].as_i64(), Some(num("destMax")), "{span}");
    assert_eq!(a["count"].as_i64(), Some(num("count")), "{span}");
    assert_eq!(common::enum_value(span, "kind"), num("kind"), "{span}");
    assert_eq!(a["ret"].as_i64(), Some(num("ret")), "{span}");
    if name == "HcclMemcpyAsync" {
        assert_eq!(a["dispatcher"], hex("dispatcher"), "{span}");
        assert_eq!(
            a["remoteUserRank"].as_i64(),
            Some(num("remoteUserRank")),
            "{span}"
        );
        assert_eq!(
            common::enum_value(span, "linkType"),
            num("linkType"),
            "{span}"
        );
    }
}

#[test]
fn warn_forwards_every_call_unchanged_and_reports_each_rule() {
    let dir = scratch("checks-warn");
    let plain = bad_calls(&dir, false, None, &[]);
    let o = bad_calls(&dir, true, None, &[]);

    // The program sees exactly what it sees without the shim: the runtime's own codes.
    assert_eq!(stdout(&o.out), stdout(&plain.out));
    let expected: Vec<(String, i64)> = CASES.iter().map(|(n, _, r)| (n.to_string(), *r)).collect();
    assert_eq!(o.rets, expected);

    // Every call reached the runtime, with the arguments the trace recorded (which are the
    // program's own: the trace is cross-checked against the log line by line).
    let trace = o.trace.as_ref().unwrap();
    let spans: Vec<&Value> = trace.copies().collect();
    assert_eq!(o.log.len(), plain.log.len());
    assert_eq!(o.log.len(), spans.len());
    for (line, span) in o.log.iter().zip(&spans) {
        assert_same_call(line, span);
    }
    // ...including the NULL pointers, the bad kinds and the short destMax.
    let top = top_level_spans(trace);
    assert_eq!(top.len(), CASES.len());
    let by_case: HashMap<&str, &Value> =
        CASES.iter().map(|c| c.0).zip(top.iter().copied()).collect();
    assert_eq!(by_case["null_dst"]["args"]["dst"], "0x0");
    assert_eq!(by_case["kind6"]["args"]["kind"], "INNER_DEVICE_TO_DEVICE");
    assert_eq!(by_case["kind_neg"]["args"]["kind"], -1);
    assert_eq!(by_case["hccl_null_stream"]["args"]["stream"], "0x0");
    assert_eq!(by_case["hccl_kind5"]["args"]["kind"], "RESERVED");
    assert_eq!(by_case["hccl_link"]["args"]["linkType"], 42);

    // The trace: `violations` on each span, one `violation:<rule>` instant per rule.
    let mut want_instants: HashMap<String, usize> = HashMap::new();
    for ((name, rules, ret), span) in CASES.iter().zip(&top) {
        assert_eq!(span["name"], api_of(name), "{name}");
        assert_eq!(span["args"]["ret"].as_i64(), Some(*ret), "{name}");
        assert_eq!(violations_of(span), *rules, "{name}: {span}");
        assert!(span["args"].get("fault").is_none(), "{name}");
        for r in *rules {
            *want_instants
                .entry(format!("violation:{r}|{}", api_of(name)))
                .or_default() += 1;
        }
    }
    let mut instants: HashMap<String, usize> = HashMap::new();
    for i in trace.instants() {
        assert_eq!(i["s"], "t");
        let key = format!(
            "{}|{}",
            i["name"].as_str().unwrap(),
            i["args"]["call"].as_str().unwrap()
        );
        *instants.entry(key).or_default() += 1;
    }
    assert_eq!(instants, want_instants);
    // The nested copy of the good HCCL call breaks nothing.
    let nested: Vec<&Value> = trace.copies().filter(|s| s["args"]["depth"] == 1).collect();
    assert_eq!(
        nested.len(),
        2,
        "hccl_good and hccl_link each issue one nested copy"
    );
    assert!(nested.iter().all(|s| violations_of(s).is_empty()));

    // stderr: nothing but `npushim: ` lines; one per violation, naming the API and rule, in
    // call order, each saying the call was forwarded.
    let err = stderr(&o.out);
    for line in err.lines() {
        assert!(line.starts_with("npushim: "), "stray stderr line {line:?}");
    }
    let lines = violation_lines(&err);
    let want: Vec<(String, String)> = CASES
        .iter()
        .flat_map(|(name, rules, _)| {
            rules
                .iter()
                .map(move |r| (api_of(name).to_string(), r.to_string()))
        })
        .collect();
    let got: Vec<(String, String)> = lines
        .iter()
        .map(|(a, r, _)| (a.clone(), r.clone()))
        .collect();
    assert_eq!(got, want);
    for (_, _, line) in &lines {
        assert!(line.ends_with("; forwarded"), "{line}");
    }
    let null_line = &lines[0].2;
    assert!(null_line.contains("dst=0x0"), "{null_line}");
    assert!(null_line.contains("count=64"), "{null_line}");

    // The exit summary: one line per violated rule, with its count.
    for (rule, n) in [
        ("null", 3),
        ("kind", 3),
        ("size", 2),
        ("align", 3),
        ("h2h", 2),
        ("link", 1),
    ] {
        let prefix = format!(
            "npushim: summary: rule {rule} violated {n} time{}; first: ",
            if n == 1 { "" } else { "s" }
        );
        assert_eq!(
            err.lines().filter(|l| l.starts_with(&prefix)).count(),
            1,
            "no summary {prefix:?} in\n{err}"
        );
    }
    assert!(!err.contains("rule overlap"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("summary: rule ")).count(),
        6,
        "{err}"
    );
}

#[test]
fn warn_prints_five_lines_per_rule_then_counts_silently() {
    let dir = scratch("checks-rate-limit");
    let o = bad_calls(&dir, true, Some("warn"), &["null_dst", "8"]);
    assert_eq!(o.rets.len(), 8);
    assert!(o.rets.iter().all(|(n, r)| n == "null_dst" && *r == 100_000));
    assert_eq!(o.log.len(), 8, "every call forwarded");

    let err = stderr(&o.out);
    let lines = violation_lines(&err);
    assert_eq!(lines.len(), 5, "{err}");
    for (i, (api, rule, line)) in lines.iter().enumerate() {
        assert_eq!((api.as_str(), rule.as_str()), ("aclrtMemcpyAsync", "null"));
        assert_eq!(
            line.ends_with("(further occurrences of this rule are counted silently)"),
            i == 4,
            "{line}"
        );
    }
    assert!(
        err.lines().any(|l| l
            .starts_with("npushim: summary: rule null violated 8 times (3 not shown); first: ")),
        "{err}"
    );
    // The trace is not rate-limited.
    let trace = o.trace.unwrap();
    assert_eq!(
        trace
            .spans()
            .filter(|s| violations_of(s) == ["null"])
            .count(),
        8
    );
    assert_eq!(
        trace
            .instants()
            .filter(|i| i["name"] == "violation:null")
            .count(),
        8
    );
}

#[test]
fn warn_with_overlap_enabled_reports_overlap_as_advice() {
    let dir = scratch("checks-overlap");
    let o = bad_calls(&dir, true, Some("warn,+overlap"), &["overlap"]);
    assert_eq!(o.rets, [("overlap".to_string(), 0)]);
    assert_eq!(o.log.len(), 1);
    let trace = o.trace.unwrap();
    let span = trace.copies().next().unwrap();
    assert_eq!(violations_of(span), ["overlap"]);
    assert_same_call(&o.log[0], span);
    let lines = violation_lines(&stderr(&o.out));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].1, "overlap");
    assert!(
        lines[0]
            .2
            .ends_with("source and destination ranges overlap; forwarded"),
        "{}",
        lines[0].2
    );
}

#[test]
fn strict_returns_each_rules_code_without_calling_the_runtime() {
    let dir = scratch("checks-strict");
    let o = bad_calls(&dir, true, Some("strict"), &[]);
    let want: Vec<(String, i64)> = STRICT.iter().map(|(n, r, _)| (n.to_string(), *r)).collect();
    assert_eq!(o.rets, want);

    let trace = o.trace.as_ref().unwrap();
    let top = top_level_spans(trace);
    assert_eq!(top.len(), STRICT.len());
    // Blocked calls are still traced, with the code returned and the rules broken.
    for (((name, ret, _), (_, rules, _)), span) in STRICT.iter().zip(CASES).zip(&top) {
        assert_eq!(span["args"]["ret"].as_i64(), Some(*ret), "{name}");
        assert_eq!(violations_of(span), *rules, "{name}");
    }

    // The runtime saw only the calls that were allowed through (each HCCL copy that
    // reached it also issued its nested aclrtMemcpyAsync, logged before it).
    let forwarded: Vec<&Value> = trace
        .spans()
        .filter(|s| {
            s["args"]["depth"] == 1
                || STRICT
                    .iter()
                    .zip(&top)
                    .any(|((_, _, through), t)| *through && std::ptr::eq(*t, *s))
        })
        .collect();
    assert_eq!(o.log.len(), forwarded.len(), "{:?}", o.log);
    for (line, span) in o.log.iter().zip(&forwarded) {
        assert_same_call(line, span);
    }
    let reached: Vec<(&str, &str, &str)> = o
        .log
        .iter()
        .map(|(n, kv)| (n.as_str(), kv["count"].as_str(), kv["kind"].as_str()))
        .collect();
    assert_eq!(
        reached,
        [
            ("aclrtMemcpyAsync", "4096", "3"), // good
            ("aclrtMemcpyAsync", "0", "3"),    // zero: never a violation
            ("aclrtMemcpyAsync", "128", "3"),  // overlap: not checked by default
            ("aclrtMemcpyAsync", "4096", "3"), // hccl_good's nested copy
            ("HcclMemcpyAsync", "4096", "3"),
            ("aclrtMemcpyAsync", "4096", "3"), // hccl_link's nested copy
            ("HcclMemcpyAsync", "4096", "3"),
        ]
    );
    assert_eq!(o.log[6].1["linkType"], "42");

    // Diagnostics say what happened to each call: one line per rule broken, in call order.
    let err = stderr(&o.out);
    let lines = violation_lines(&err);
    let per_rule: Vec<(&str, &str, i64, bool)> = CASES
        .iter()
        .zip(STRICT)
        .flat_map(|((name, rules, _), (_, ret, through))| {
            rules.iter().map(move |r| (*name, *r, *ret, *through))
        })
        .collect();
    assert_eq!(lines.len(), per_rule.len(), "{err}");
    for ((api, rule, line), (case, want_rule, ret, through)) in lines.iter().zip(&per_rule) {
        assert_eq!(
            (api.as_str(), rule.as_str()),
            (api_of(case), *want_rule),
            "{line}"
        );
        if *through {
            assert!(line.ends_with("; forwarded"), "{line}");
        } else if *case != "h2h_unaligned" {
            // (A call breaking two error rules: see
            // strict_diagnostics_of_a_call_breaking_two_rules_name_the_code_returned.)
            assert!(
                line.ends_with(&format!("; returning {ret} without calling the runtime")),
                "{line}"
            );
        }
    }
}

#[test]
fn strict_diagnostics_of_a_call_breaking_two_rules_name_the_code_returned() {
    // An unaligned host-to-host copy breaks align and h2h; strict mode returns align's code
    // (first in table order), and every diagnostic about that call must say so.
    let dir = scratch("checks-strict-two-rules");
    let o = bad_calls(&dir, true, Some("strict"), &["h2h_unaligned"]);
    assert_eq!(o.rets, [("h2h_unaligned".to_string(), 107_008)]);
    assert!(o.log.is_empty());
    let trace = o.trace.unwrap();
    assert_eq!(
        violations_of(trace.copies().next().unwrap()),
        ["align", "h2h"]
    );
    let lines = violation_lines(&stderr(&o.out));
    let rules: Vec<&str> = lines.iter().map(|l| l.1.as_str()).collect();
    assert_eq!(rules, ["align", "h2h"]);
    for (_, _, line) in &lines {
        assert!(
            line.ends_with("; returning 107008 without calling the runtime"),
            "the call returned 107008, but the shim said: {line}"
        );
    }
}

#[test]
fn strict_never_blocks_advice_rules() {
    let dir = scratch("checks-strict-advice");
    let o = bad_calls(&dir, true, Some("strict,+overlap"), &["overlap"]);
    assert_eq!(o.rets, [("overlap".to_string(), 0)]);
    assert_eq!(o.log.len(), 1, "the overlapping copy reached the runtime");
    let trace = o.trace.unwrap();
    assert_eq!(violations_of(trace.copies().next().unwrap()), ["overlap"]);
    let lines = violation_lines(&stderr(&o.out));
    assert_eq!(lines.len(), 1);
    assert!(lines[0].2.ends_with("; forwarded"), "{}", lines[0].2);

    let dir = scratch("checks-strict-link");
    let o = bad_calls(&dir, true, Some("strict"), &["hccl_link"]);
    assert_eq!(o.rets, [("hccl_link".to_string(), 0)]);
    assert_eq!(
        o.log.len(),
        2,
        "HCCL call and its nested copy reached the runtime"
    );
    assert_eq!(o.log[1].1["linkType"], "42");
}

#[test]
fn strict_without_align_lets_unaligned_calls_through() {
    let dir = scratch("checks-strict-noalign");
    let plain = bad_calls(&dir, false, None, &[]);
    let plain_rets: HashMap<String, i64> = plain.rets.into_iter().collect();
    for case in ["unaligned_dst", "unaligned_src"] {
        let dir = scratch(&format!("checks-strict-noalign-{case}"));
        let o = bad_calls(&dir, true, Some("strict,-align"), &[case]);
        assert_eq!(o.rets, [(case.to_string(), plain_rets[case])]);
        assert_eq!(o.log.len(), 1, "{case} reached the runtime");
        let trace = o.trace.unwrap();
        let span = trace.copies().next().unwrap();
        assert!(violations_of(span).is_empty(), "{span}");
        assert_same_call(&o.log[0], span);
        assert_eq!(violation_lines(&stderr(&o.out)).len(), 0);
    }
    // With align off, the h2h rule decides the unaligned host-to-host copy.
    let dir = scratch("checks-strict-noalign-h2h");
    let o = bad_calls(&dir, true, Some("strict,-align"), &["h2h_unaligned"]);
    assert_eq!(o.rets, [("h2h_unaligned".to_string(), 207_000)]);
    assert!(o.log.is_empty());
    let trace = o.trace.unwrap();
    assert_eq!(violations_of(trace.copies().next().unwrap()), ["h2h"]);
}

#[test]
fn off_reports_nothing_and_forwards_everything() {
    let dir = scratch("checks-off");
    let plain = bad_calls(&dir, false, None, &[]);
    let o = bad_calls(&dir, true, Some("off,+overlap"), &[]);
    assert_eq!(stdout(&o.out), stdout(&plain.out));
    assert_eq!(stderr(&o.out), "", "nothing at all on stderr");
    let trace = o.trace.as_ref().unwrap();
    assert_eq!(o.log.len(), plain.log.len());
    let spans: Vec<&Value> = trace.copies().collect();
    assert_eq!(spans.len(), o.log.len());
    for (line, span) in o.log.iter().zip(&spans) {
        assert_same_call(line, span);
        assert!(span["args"].get("violations").is_none(), "{span}");
    }
    assert_eq!(trace.instants().count(), 0);
    assert_eq!(
        trace.meta("npushim").unwrap()["args"]["config"]["check"],
        "off"
    );
}

#[test]
fn a_bad_check_value_is_reported_once_and_warn_applies() {
    let dir = scratch("checks-bad-value");
    let o = bad_calls(&dir, true, Some("paranoid"), &["h2h"]);
    assert_eq!(o.rets, [("h2h".to_string(), 207_000)]);
    assert_eq!(o.log.len(), 1, "forwarded, as in warn mode");
    let err = stderr(&o.out);
    let about: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("NPUSHIM_CHECK"))
        .collect();
    assert_eq!(about.len(), 1, "{err}");
    let line = about[0];
    assert!(line.starts_with("npushim: "), "{line}");
    assert!(line.contains("paranoid"), "{line}");
    for word in [
        "off", "warn", "strict", "null", "kind", "size", "align", "h2h", "overlap", "link",
    ] {
        assert!(line.contains(word), "{word} missing from {line}");
    }
    // Default behaviour: the h2h copy is reported and forwarded.
    let lines = violation_lines(&err);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].1, "h2h");
    assert!(lines[0].2.ends_with("; forwarded"));
    let trace = o.trace.unwrap();
    let check = trace.meta("npushim").unwrap()["args"]["config"]["check"].clone();
    assert!(check.as_str().unwrap().starts_with("warn"), "{check}");
    assert_eq!(violations_of(trace.copies().next().unwrap()), ["h2h"]);
}

#[test]
fn example_programs_are_clean_in_strict_mode() {
    for prog in ["copy_pipeline", "ring_allgather"] {
        let dir = scratch(&format!("checks-clean-{prog}"));
        let bin = build().bin(prog);
        let plain = ok(&Run::plain(&bin, &dir).output());
        // copy_pipeline copies from pageable memory on purpose: the `pageable` advice is
        // what it is expected to get (tests/memory.rs), every other rule must stay quiet.
        let out = Run::shimmed(&bin, &dir)
            .env("NPUSHIM_CHECK", "strict,+overlap,-pageable")
            .output();
        assert_eq!(ok(&out), plain, "{prog}");
        let err = stderr(&out);
        assert!(!err.contains("npushim:"), "{prog}: {err}");
        let trace = single_trace(&dir);
        assert!(trace.complete, "{prog}");
        assert!(trace.spans().count() > 0, "{prog}");
        assert!(
            trace
                .spans()
                .all(|s| s["args"].get("violations").is_none() && s["args"]["ret"] == 0),
            "{prog}"
        );
        assert_eq!(trace.instants().count(), 0, "{prog}");
        // The file parses on its own path, too (it is the only trace).
        assert_eq!(parse_trace(&trace.path).events.len(), trace.events.len());
    }
}
