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
    // The program frees everything: the shim's npushim_leaks event says so, and the report
    // shows a record with nothing in it, not "not recorded".
    let trace = common::parse_trace(&path);
    assert_eq!(
        trace.meta("npushim_leaks").unwrap()["args"]["leaks"],
        json!([])
    );
    assert_eq!(r["leaks"][0]["recorded"], true);
    assert_eq!(r["leaks"][0]["locations"], json!([]));

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

// ------------------------------------------------ memory types, pageable copies, leaks

fn fixture(name: &str) -> PathBuf {
    common::repo_path("tests/fixtures").join(name)
}

/// `npushim report` (text) of `paths`.
fn report_text(paths: &[&Path]) -> String {
    let out = Command::new(BIN)
        .arg("report")
        .args(paths)
        .output()
        .unwrap();
    ok(&out)
}

/// The report's memory-type rows as (api, src, dst) → (calls, ok, bytes, ran_sync).
type MemRows = BTreeMap<(String, Option<String>, Option<String>), (u64, u64, u64, u64)>;

fn memory_rows(r: &Value) -> MemRows {
    r["memory_types"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let text = |k: &str| row[k].as_str().map(str::to_string);
            let n = |k: &str| row[k].as_u64().unwrap();
            (
                (text("api").unwrap(), text("src_mem"), text("dst_mem")),
                (n("calls"), n("ok"), n("bytes"), n("ran_sync")),
            )
        })
        .collect()
}

fn key(api: &str, src: Option<&str>, dst: &str) -> (String, Option<String>, Option<String>) {
    (
        api.to_string(),
        src.map(str::to_string),
        Some(dst.to_string()),
    )
}

#[test]
fn memory_types_of_a_fixture_count_ok_bytes_and_pageable_synchronous_copies() {
    let r = report_json(&fixture("memory.json"));
    let m = &r["memory_types"];
    assert_eq!(
        (m["copies"].as_u64(), m["without_memory"].as_u64()),
        (Some(11), Some(0))
    );
    let expected: MemRows = [
        (
            key("aclrtMemcpyAsync", Some("device"), "device"),
            (1, 1, 65536, 0),
        ),
        (
            key("aclrtMemcpyAsync", Some("device"), "pageable"),
            (1, 1, 2_000_000, 1),
        ),
        // Three calls, one stopped by a fault: its bytes and its "sync" do not count.
        (
            key("aclrtMemcpyAsync", Some("pageable"), "device"),
            (3, 2, 2_000_000, 2),
        ),
        (
            key("aclrtMemcpyAsync", Some("pageable"), "pageable"),
            (1, 1, 512, 1),
        ),
        (
            key("aclrtMemcpyAsync", Some("pinned"), "device"),
            (1, 1, 4096, 0),
        ),
        (
            key("aclrtMemcpyAsync", Some("unknown"), "device"),
            (1, 1, 128, 0),
        ),
        // A synchronous copy from pageable memory is synchronous by definition, not
        // "ran sync".
        (
            key("aclrtMemcpy", Some("pageable"), "device"),
            (1, 1, 8192, 0),
        ),
        (
            key(
                "aclrtMemcpyAsyncWithCondition",
                Some("registered"),
                "device",
            ),
            (1, 1, 16384, 0),
        ),
        // A set has no source.
        (key("aclrtMemsetAsync", None, "device"), (1, 1, 4096, 0)),
    ]
    .into_iter()
    .collect();
    assert_eq!(memory_rows(&r), expected);

    let text = report_text(&[&fixture("memory.json")]);
    let section = text
        .split("Copies by memory type")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .unwrap();
    let row: Vec<&str> = section
        .lines()
        .find(|l| l.contains("pageable → device") && l.contains("aclrtMemcpyAsync "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        [
            "aclrtMemcpyAsync",
            "pageable",
            "→",
            "device",
            "3",
            "2",
            "2000000",
            "2"
        ]
    );
    assert!(section.contains("- → device"), "{section}");
}

#[test]
fn host_blocked_in_pageable_copies_of_a_fixture_lists_the_buffers_by_bytes() {
    let r = report_json(&fixture("memory.json"));
    let p = &r["pageable_blocked"];
    assert_eq!(p["data"], true);
    assert_eq!(p["calls"], 4);
    assert_eq!(p["bytes"], 1_000_000 + 1_000_000 + 2_000_000 + 512);
    assert_eq!(p["total_us"], 500.0 + 300.0 + 900.0 + 20.0);
    assert_eq!(p["not_ok"], 1);
    let buffers: Vec<(String, String, u64, u64, f64)> = p["buffers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["side"].as_str().unwrap().to_string(),
                b["calls"].as_u64().unwrap(),
                b["bytes"].as_u64().unwrap(),
                b["total_us"].as_f64().unwrap(),
            )
        })
        .collect();
    let b = |a: &str, s: &str, c, n, t| (a.to_string(), s.to_string(), c, n, t);
    assert_eq!(
        buffers,
        [
            // Equal bytes: the one that blocked longer first.
            b("0xb000", "dst", 1, 2_000_000, 900.0),
            b("0xa000", "src", 2, 2_000_000, 800.0),
            // Pageable on both sides: the copy counts under both buffers.
            b("0xc000", "src", 1, 512, 20.0),
            b("0xd000", "dst", 1, 512, 20.0),
        ]
    );
    let text = report_text(&[&fixture("memory.json")]);
    assert!(
        text.contains("  4 ok copies, 4000512 bytes, 1720.000 µs of host time blocked\n"),
        "{text}"
    );
    assert!(
        text.contains("1 more copy was marked synchronous but failed"),
        "{text}"
    );
}

/// The report's leak rows: process label → location → (count, bytes, largest size, ptr,
/// call), or `None` when the process has no record.
type LeakRows = BTreeMap<String, Option<BTreeMap<String, (u64, u64, u64, String, String)>>>;

fn leak_rows(r: &Value) -> LeakRows {
    r["leaks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let label = p["process"].as_str().unwrap().to_string();
            let locations = p["locations"].as_array().map(|list| {
                list.iter()
                    .map(|l| {
                        let largest = &l["largest"];
                        (
                            l["location"].as_str().unwrap().to_string(),
                            (
                                l["count"].as_u64().unwrap(),
                                l["bytes"].as_u64().unwrap(),
                                largest["size"].as_u64().unwrap(),
                                largest["ptr"].as_str().unwrap().to_string(),
                                largest["call"].as_str().unwrap().to_string(),
                            ),
                        )
                    })
                    .collect()
            });
            assert_eq!(p["recorded"], locations.is_some(), "{p}");
            (label, locations)
        })
        .collect()
}

fn leak(
    count: u64,
    bytes: u64,
    size: u64,
    ptr: &str,
    call: &str,
) -> (u64, u64, u64, String, String) {
    (count, bytes, size, ptr.to_string(), call.to_string())
}

#[test]
fn leaks_of_a_fixture_and_of_a_merged_trace_are_shown_per_process() {
    let dir = scratch("report-leaks-merged");
    let merged = dir.join("merged.json");
    let inputs = [
        "rank0.json",
        "leaks-rank1.json",
        "leaks-none.json",
        "memory.json",
    ];
    let out = Command::new(BIN)
        .args(["merge", "-o"])
        .arg(&merged)
        .args(inputs.iter().map(|f| fixture(f)))
        .output()
        .unwrap();
    ok(&out);
    let loader: BTreeMap<String, _> = [
        (
            "device 0",
            leak(2, 3_145_728, 2_097_152, "0x1000000", "aclrtMalloc"),
        ),
        (
            "pinned host",
            leak(1, 4096, 4096, "0x5000", "aclrtMallocHost"),
        ),
        (
            "registered host",
            leak(1, 16384, 16384, "0x7000", "aclrtHostRegister"),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let single = leak_rows(&report_json(&fixture("memory.json")));
    let expected: LeakRows = [("loader (pid 11, rank 3)".to_string(), Some(loader.clone()))]
        .into_iter()
        .collect();
    assert_eq!(single, expected);

    let r = report_json(&merged);
    let expected: LeakRows = [
        // No npushim_leaks event: not recorded, not "nothing leaked".
        ("train (pid 100, rank 0)".to_string(), None),
        (
            "train (pid 100, rank 1, shown as pid 10000100)".to_string(),
            Some(
                [(
                    "device 1".to_string(),
                    leak(1, 8_388_608, 8_388_608, "0x2000000", "aclrtMalloc"),
                )]
                .into_iter()
                .collect(),
            ),
        ),
        // An empty list: everything was freed.
        ("train (pid 300, rank 2)".to_string(), Some(BTreeMap::new())),
        ("loader (pid 11, rank 3)".to_string(), Some(loader)),
    ]
    .into_iter()
    .collect();
    assert_eq!(leak_rows(&r), expected);
    let rank1 = row(&r["leaks"], &[("rank", json!(1))]);
    assert_eq!(rank1["untracked"], 5);

    let text = report_text(&[&merged]);
    let section = text.split("Memory never freed").nth(1).unwrap();
    assert!(
        section.contains("train (pid 300, rank 2): nothing left allocated"),
        "{section}"
    );
    assert!(
        section.contains("train (pid 100, rank 0): not recorded"),
        "{section}"
    );
    assert!(
        section.contains("5 allocations were not tracked"),
        "{section}"
    );
    let largest: Vec<&str> = section
        .lines()
        .find(|l| l.contains("device 1"))
        .unwrap()
        .split_whitespace()
        .rev()
        .take(5)
        .collect();
    assert_eq!(
        largest,
        ["101)", "(thread", "aclrtMalloc", "0x2000000", "8388608"]
    );
}

#[test]
fn traces_without_memory_data_say_it_is_absent() {
    // report.json: copies without srcMem/dstMem or "sync", no npushim_leaks.
    let r = report_json(&fixture("report.json"));
    assert_eq!(r["memory_types"]["with_memory"], 0);
    assert!(r["memory_types"]["without_memory"].as_u64().unwrap() > 0);
    assert_eq!(r["memory_types"]["rows"], json!([]));
    assert_eq!(r["pageable_blocked"]["data"], false);
    assert_eq!(r["pageable_blocked"]["calls"], 0);
    for p in r["leaks"].as_array().unwrap() {
        assert_eq!(
            (&p["recorded"], &p["locations"]),
            (&json!(false), &Value::Null)
        );
    }
    let text = report_text(&[&fixture("report.json")]);
    let after = |title: &str| {
        text.split(title)
            .nth(1)
            .and_then(|s| s.lines().nth(1))
            .unwrap_or_else(|| panic!("no {title} in {text}"))
            .to_string()
    };
    assert!(
        after("Copies by memory type").starts_with("  no memory types: "),
        "{text}"
    );
    assert!(
        after("Host blocked in pageable copies").starts_with("  no data: "),
        "{text}"
    );
    assert!(
        after("Memory never freed").starts_with("  not recorded "),
        "{text}"
    );

    // A trace with memory types and no synchronous copy: "none", not "no data".
    let out = report_text(&[&fixture("leaks-none.json")]);
    let line = out
        .split("Host blocked in pageable copies")
        .nth(1)
        .and_then(|s| s.lines().nth(1))
        .unwrap();
    assert!(line.starts_with("  none: "), "{out}");

    // An older trace with "sync":true but no memory types: the copy is counted, its host
    // buffer is the host side of its kind.
    let r = report_json(&fixture("truth.json"));
    let p = &r["pageable_blocked"];
    assert_eq!(
        (p["calls"].as_u64(), p["bytes"].as_u64()),
        (Some(1), Some(1_000_000))
    );
    assert_eq!(p["buffers"][0]["address"], "0x900000");
    assert_eq!(p["buffers"][0]["side"], "src");
}

#[test]
fn malformed_memory_fields_and_leak_records_are_skipped_and_counted() {
    // Line 5: "srcMem":4; line 6: "sync":"yes"; line 7: npushim_leaks with "bytes":"lots".
    let r = report_json(&fixture("memory-malformed.json"));
    assert_eq!(r["malformed"], 3);
    let first = &r["files"][0]["first_malformed"];
    assert_eq!(
        (first["line"].as_u64(), first["field"].as_str()),
        (Some(5), Some("srcMem"))
    );
    let expected: MemRows = [(
        key("aclrtMemcpyAsync", Some("pinned"), "device"),
        (1, 1, 4096, 0),
    )]
    .into_iter()
    .collect();
    assert_eq!(memory_rows(&r), expected);
    assert_eq!(r["pageable_blocked"]["calls"], 0);
    assert_eq!(r["leaks"][0]["recorded"], false);
}

/// A span's outcome as the report defines ok: forwarded (no fault, or a `delay`) and 0.
fn span_ok(span: &Value) -> bool {
    let args = &span["args"];
    args["ret"] == 0
        && args["fault"]
            .as_str()
            .is_none_or(|f| f.starts_with("delay"))
}

/// Bytes a copy or set span moves.
fn span_bytes(span: &Value) -> u64 {
    let args = &span["args"];
    match (args["width"].as_u64(), args["height"].as_u64()) {
        (Some(w), Some(h)) => w * h,
        _ => args["count"].as_u64().unwrap(),
    }
}

/// What the trace's own allocation and free spans leave allocated, per location:
/// (count, bytes, largest size, its ptr, its call). Every device allocation of the test
/// program is on device 0 (it calls aclrtSetDevice(0)).
fn leaks_from_spans(trace: &common::Trace) -> BTreeMap<String, (u64, u64, u64, String, String)> {
    let mut live: BTreeMap<String, (String, u64, String)> = BTreeMap::new();
    for span in trace.spans() {
        let name = span["name"].as_str().unwrap();
        let args = &span["args"];
        let location = match name {
            "aclrtMalloc" | "aclrtMallocAlign32" | "aclrtMallocCached" | "aclrtMallocWithCfg" => {
                Some("device 0")
            }
            "aclrtMallocHost" | "aclrtMallocHostWithCfg" => Some("pinned host"),
            "aclrtHostRegister" | "aclrtHostRegisterV2" => Some("registered host"),
            _ => None,
        };
        let ptr = args["ptr"].as_str().map(str::to_string);
        if let (Some(location), Some(ptr)) = (location, ptr.clone()) {
            if span_ok(span) {
                let size = args["size"].as_u64().unwrap();
                live.insert(ptr, (location.to_string(), size, name.to_string()));
            }
        } else if matches!(name, "aclrtFree" | "aclrtFreeHost" | "aclrtHostUnregister")
            && span_ok(span)
        {
            live.remove(&ptr.unwrap());
        }
    }
    let mut out: BTreeMap<String, (u64, u64, u64, String, String)> = BTreeMap::new();
    for (ptr, (location, size, call)) in live {
        let e = out
            .entry(location)
            .or_insert((0, 0, 0, String::new(), String::new()));
        e.0 += 1;
        e.1 += size;
        if size > e.2 {
            (e.2, e.3, e.4) = (size, ptr, call);
        }
    }
    out
}

/// Checks the memory sections of `r` (a report of `trace` alone) against the trace's spans.
fn assert_memory_sections_match_the_trace(r: &Value, trace: &common::Trace) {
    let mut rows: MemRows = BTreeMap::new();
    let mut blocked = (0u64, 0u64, 0.0f64);
    let mut buffers: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    for span in trace.spans() {
        let name = span["name"].as_str().unwrap();
        let args = &span["args"];
        if !name.starts_with("aclrtMemcpy")
            && !name.starts_with("Hccl")
            && name != "aclrtMemsetAsync"
        {
            continue;
        }
        let text = |k: &str| args[k].as_str().map(str::to_string);
        let ok = span_ok(span);
        let ran_sync = ok && args["sync"] == true;
        let row = rows
            .entry((name.to_string(), text("srcMem"), text("dstMem")))
            .or_default();
        row.0 += 1;
        if ok {
            row.1 += 1;
            row.2 += span_bytes(span);
        }
        if ran_sync {
            row.3 += 1;
            blocked.0 += 1;
            blocked.1 += span_bytes(span);
            blocked.2 += span["dur"].as_f64().unwrap();
            for (side, mem, address) in [("src", "srcMem", "src"), ("dst", "dstMem", "dst")] {
                if args[mem] == "pageable" {
                    let b = buffers
                        .entry((text(address).unwrap(), side.to_string()))
                        .or_default();
                    b.0 += 1;
                    b.1 += span_bytes(span);
                }
            }
        }
    }
    assert_eq!(memory_rows(r), rows);
    let p = &r["pageable_blocked"];
    assert_eq!(
        (p["calls"].as_u64(), p["bytes"].as_u64()),
        (Some(blocked.0), Some(blocked.1))
    );
    let total = p["total_us"].as_f64().unwrap();
    assert!((total - blocked.2).abs() < 0.01, "{total} vs {}", blocked.2);
    let listed = p["buffers"].as_array().unwrap();
    assert_eq!(listed.len(), buffers.len().min(10));
    let mut previous = u64::MAX;
    for b in listed {
        let key = (
            b["address"].as_str().unwrap().to_string(),
            b["side"].as_str().unwrap().to_string(),
        );
        let (calls, bytes) = buffers[&key];
        assert_eq!(
            (b["calls"].as_u64(), b["bytes"].as_u64()),
            (Some(calls), Some(bytes))
        );
        assert!(bytes <= previous, "not by bytes: {listed:?}");
        previous = bytes;
    }
    // No buffer left out of the list moved more than the last one listed.
    let listed_keys: Vec<(String, String)> = listed
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().into(),
                b["side"].as_str().unwrap().into(),
            )
        })
        .collect();
    for (key, (_, bytes)) in &buffers {
        assert!(
            listed_keys.contains(key) || *bytes <= previous,
            "{key:?} left out"
        );
    }
}

#[test]
fn report_of_a_traced_run_shows_what_the_memory_map_learned() {
    let b = build();
    let dir = scratch("report-memory-run");
    // copy_pipeline copies from pinned and from pageable buffers on purpose; skipped frees
    // leave allocations behind (3 device, 1 pinned) in one run and 2 pinned in the other.
    let runs = [
        ("a", "aclrtFree=3*skip;aclrtFreeHost=1*skip"),
        ("b", "aclrtFreeHost=2*skip"),
    ];
    let mut paths = Vec::new();
    for (name, faults) in runs {
        let run_dir = dir.join(name);
        std::fs::create_dir_all(&run_dir).unwrap();
        ok(&Run::shimmed(&b.bin("copy_pipeline"), &run_dir)
            .env("NPUSHIM_FAULTS", faults)
            .arg("1")
            .output());
        paths.push(trace_file(&run_dir));
    }

    let trace = common::parse_trace(&paths[0]);
    let r = report_json(&paths[0]);
    assert_memory_sections_match_the_trace(&r, &trace);
    // The program's pageable round trips did block.
    assert!(r["pageable_blocked"]["calls"].as_u64().unwrap() > 0);
    assert!(
        memory_rows(&r)
            .keys()
            .any(|(_, src, _)| src.as_deref() == Some("pinned")),
        "{r}"
    );

    // Leaks: what the trace's own allocation and free spans leave, and what the shim's
    // npushim_leaks event says, are what the report shows.
    let expected = leaks_from_spans(&trace);
    assert_eq!(expected.values().map(|l| l.0).sum::<u64>(), 4);
    let got = leak_rows(&r);
    assert_eq!(got.len(), 1);
    assert_eq!(got.values().next().unwrap().as_ref(), Some(&expected));
    let event = trace.meta("npushim_leaks").expect("npushim_leaks written");
    assert_eq!(
        event["args"]["leaks"].as_array().unwrap().len(),
        expected.len()
    );

    let text = report_text(&[&paths[0]]);
    let blocked = &r["pageable_blocked"];
    let head = format!(
        "  {} ok copies, {} bytes, ",
        blocked["calls"], blocked["bytes"]
    );
    let line = text
        .lines()
        .find(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("{head} not in {text}"));
    let us: f64 = line[head.len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (us - blocked["total_us"].as_f64().unwrap()).abs() < 0.002,
        "{line}"
    );

    // Both runs merged: one leak record per process, each that process's own.
    let merged = dir.join("merged.json");
    ok(&Command::new(BIN)
        .args(["merge", "-o"])
        .arg(&merged)
        .args(&paths)
        .output()
        .unwrap());
    let r = report_json(&merged);
    let got = leak_rows(&r);
    assert_eq!(got.len(), 2, "{got:?}");
    for path in &paths {
        let trace = common::parse_trace(path);
        let pid = trace.meta("npushim").unwrap()["args"]["pid"]
            .as_i64()
            .unwrap();
        let (_, locations) = got
            .iter()
            .find(|(label, _)| label.contains(&format!("(pid {pid},")))
            .unwrap_or_else(|| panic!("pid {pid} not in {got:?}"));
        assert_eq!(locations.as_ref(), Some(&leaks_from_spans(&trace)));
    }
}

#[test]
fn report_of_a_run_without_the_memory_map_says_its_memory_data_is_absent() {
    let b = build();
    let dir = scratch("report-memmap-off");
    ok(&Run::shimmed(&b.bin("copy_pipeline"), &dir)
        .env("NPUSHIM_MEMMAP", "off")
        .arg("1")
        .output());
    let path = trace_file(&dir);
    let trace = common::parse_trace(&path);
    assert!(trace.meta("npushim_leaks").is_none());
    let copies = trace.spans_named("aclrtMemcpyAsync").count() as u64;
    assert!(copies > 0);

    let r = report_json(&path);
    let m = &r["memory_types"];
    assert_eq!(m["copies"], copies);
    assert_eq!(m["without_memory"], copies);
    assert_eq!(m["rows"], json!([]));
    assert_eq!(r["pageable_blocked"]["data"], false);
    assert_eq!(r["leaks"][0]["recorded"], false);

    let text = report_text(&[&path]);
    for line in ["  no memory types: ", "  no data: ", "  not recorded "] {
        assert!(
            text.contains(&format!("\n{line}")),
            "{line:?} not in {text}"
        );
    }
}
