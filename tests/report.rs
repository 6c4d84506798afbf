//! End-to-end tests of `npushim report` on traces the shim wrote for real programs under
//! `LD_PRELOAD` on the simulated runtime: the report's counts, bytes and waits agree with
//! what the programs themselves print, and no rate is derived from the host time of an
//! asynchronous call. Also checks that the report knows every function the library hooks.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Run, build, ok, scratch};
use npushim::abi::types::{Class, Hook};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_npushim");

/// The one trace file the run left in `dir`.
fn trace_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// `npushim report --json` of one file.
fn report_json(path: &Path) -> Value {
    let out = Command::new(BIN)
        .args(["report", "--json"])
        .arg(path)
        .output()
        .unwrap();
    serde_json::from_str(&ok(&out)).unwrap()
}

fn row<'a>(list: &'a Value, key: &[(&str, Value)]) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|r| key.iter().all(|(k, v)| &r[*k] == v))
        .unwrap_or_else(|| panic!("no row {key:?} in {list}"))
}

/// The report's waits table holds exactly the trace's wait spans, per function and stream.
fn assert_waits_match_the_trace(r: &Value, path: &Path) {
    let trace = common::parse_trace(path);
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for span in trace.spans() {
        let name = span["name"].as_str().unwrap();
        if name.starts_with("aclrtSynchronize") {
            let stream = span["args"]["stream"].as_str().unwrap();
            *expected
                .entry((name.to_string(), format!("stream {stream}")))
                .or_default() += 1;
        }
    }
    assert!(!expected.is_empty());
    let got: BTreeMap<(String, String), u64> = r["waits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                (
                    w["api"].as_str().unwrap().to_string(),
                    w["waited_on"].as_str().unwrap().to_string(),
                ),
                w["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn report_of_a_faulted_run_counts_the_stopped_copy_apart_and_rates_nothing_asynchronous() {
    let b = build();
    let dir = scratch("report-fault-probe");
    let out = Run::shimmed(&b.bin("fault_probe"), &dir)
        .env("NPUSHIM_FAULTS", "aclrtMemcpyAsync=1*return(507053)")
        .args(["h2d:1M", "h2d:1M", "d2h:64K", "h2d:4K", "sync", "sync"])
        .output();
    let text = ok(&out);

    // What the program saw: "call <i> <KIND> <COUNT> ret <code>", "sync ret <code>".
    let calls: Vec<(u64, i64)> = text
        .lines()
        .filter(|l| l.starts_with("call "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[3].parse().unwrap(), w[5].parse().unwrap())
        })
        .collect();
    let syncs = text.lines().filter(|l| l.starts_with("sync ret 0")).count();
    let ok_bytes: u64 = calls.iter().filter(|c| c.1 == 0).map(|c| c.0).sum();
    let stopped = calls.iter().filter(|c| c.1 != 0).count();
    assert_eq!((calls.len(), stopped, syncs), (4, 1, 2), "{text}");

    let r = report_json(&trace_file(&dir));
    let copies = row(&r["by_api"], &[("api", json!("aclrtMemcpyAsync"))]);
    assert_eq!(copies["calls"], calls.len());
    assert_eq!(copies["ok"], calls.len() - stopped);
    assert_eq!(copies["injected"], stopped);
    assert_eq!(copies["failed"], 0);
    assert_eq!(copies["bytes"], ok_bytes);
    assert_eq!(copies["host_gb_per_s_sync"], Value::Null);
    for kind in r["by_kind"].as_array().unwrap() {
        assert_eq!(kind["host_gb_per_s_sync"], Value::Null, "{kind}");
    }
    assert_eq!(
        row(&r["faults"], &[("api", json!("aclrtMemcpyAsync"))])["action"],
        "return(507053)"
    );

    // The program's own waits and those of its setup: each in the table under its stream.
    assert_waits_match_the_trace(&r, &trace_file(&dir));
    let stream_waits: u64 = r["waits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["calls"].as_u64().unwrap())
        .sum();
    assert!(stream_waits >= syncs as u64);
}

#[test]
fn report_of_copy_pipeline_matches_the_programs_own_totals() {
    let b = build();
    let dir = scratch("report-copy-pipeline");
    let text = ok(&Run::shimmed(&b.bin("copy_pipeline"), &dir).output());
    // "copy_pipeline: <N> copies, <B> bytes, checksum …"
    let line = text.lines().find(|l| l.contains(" copies, ")).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let copies: u64 = words[1].parse().unwrap();
    let bytes: u64 = words[3].parse().unwrap();

    let path = trace_file(&dir);
    let r = report_json(&path);
    let row_all = row(&r["by_api"], &[("api", json!("aclrtMemcpyAsync"))]);
    assert_eq!(row_all["calls"], copies);
    assert_eq!(row_all["ok"], copies);
    assert_eq!(row_all["bytes"], bytes);
    assert_eq!(row_all["host_gb_per_s_sync"], Value::Null);
    assert_waits_match_the_trace(&r, &path);

    let text = Command::new(BIN).arg("report").arg(&path).output().unwrap();
    let text = ok(&text);
    assert!(text.contains("Host waits"), "{text}");
    // API, kind, calls, ok, failed, injected, bytes, total, mean, p50, p99, host GB/s (sync)
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|c| c.len() == 12 && c[0] == "aclrtMemcpyAsync")
        .collect();
    assert_eq!(rows.len(), 4, "three kinds and (all): {text}");
    for cells in rows {
        assert_eq!(cells[11], "-", "{text}");
    }
}

#[test]
fn the_report_knows_every_hooked_function_and_its_class() {
    let dir = scratch("report-every-hook");
    let mut lines =
        vec![r#"[{"ph":"M","name":"npushim","pid":1,"tid":1,"args":{"format":1}}"#.to_string()];
    for (i, hook) in Hook::ALL.iter().enumerate() {
        lines.push(format!(
            r#",{{"ph":"X","name":"{}","pid":1,"tid":1,"ts":{i}.0,"dur":1.0,"args":{{"ret":0}}}}"#,
            hook.symbol()
        ));
    }
    lines.push("]".to_string());
    let path = dir.join("every.json");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let r = report_json(&path);
    for hook in Hook::ALL {
        let expected = match hook.class() {
            Class::CopyAsync | Class::Copy2dAsync => "copy-async",
            Class::CopySync | Class::Copy2dSync => "copy-sync",
            Class::SetAsync => "set-async",
            Class::Wait => "wait",
            Class::AllocDevice | Class::AllocHost => "alloc",
            Class::Free => "free",
            Class::Register => "register",
            Class::Unregister => "unregister",
        };
        let got = row(&r["by_api"], &[("api", json!(hook.symbol()))]);
        assert_eq!(got["class"], expected, "{}", hook.symbol());
    }
}
