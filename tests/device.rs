//! The device timeline (SPEC §10) end to end: `tests/apps/device_timeline.cpp` under the
//! shim with `NPUSHIM_DEVICE=events` on the simulated runtime, whose device clock has an
//! offset of about a day and (set here) a drift of 5 %, and whose copies take exactly
//! `bytes / NPUSIM_GBPS` of device time on their stream.
//!
//! - Every async copy or set that was forwarded, succeeded and did not run synchronously
//!   has exactly one device span, found through its flow arrow: right name, bytes, stream
//!   and calling function; a duration equal to the modelled one; after its host
//!   submission and before the end of the host wait that returned after it.
//! - Pageable (synchronous) copies, copies the runtime rejected and copies a fault
//!   replaced have none; the HCCL copy's device time belongs to its nested runtime copy.
//! - Without `NPUSHIM_DEVICE` (or with a bad value) there is no device event at all.
//! - More outstanding copies than the pool holds: the rest go untimed, counted in the
//!   trace and said once.

mod common;

use std::collections::HashMap;

use common::{Run, Trace, build, ok, scratch, single_trace, stderr, stdout};
use serde_json::Value;

/// NPUSIM_GBPS of every run: bytes per nanosecond.
const GBPS: f64 = 0.25;
/// NPUSIM_CLOCK_DRIFT_PPM: the device clock runs 5 % fast. A fit that ignored the rate
/// would make every duration 5 % long, ten times the tolerance below.
const DRIFT_PPM: f64 = 50_000.0;

fn run(dir: &std::path::Path, args: &[&str], device: Option<&str>) -> std::process::Output {
    let b = build();
    let mut r = Run::shimmed(&b.bin("device_timeline"), dir)
        .args(args)
        .env("NPUSIM_GBPS", GBPS.to_string())
        .env("NPUSIM_CLOCK_DRIFT_PPM", (DRIFT_PPM as u64).to_string())
        .env("NPUSHIM_FAULTS", "aclrtMemcpyAsync[count=12352]=return");
    if let Some(mode) = device {
        r = r.env("NPUSHIM_DEVICE", mode);
    }
    r.output()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn end_of(span: &Value) -> f64 {
    f(&span["ts"]) + f(&span["dur"])
}

fn inside(span: &Value, ts: f64) -> bool {
    f(&span["ts"]) <= ts && ts <= end_of(span)
}

const ASYNC: [&str; 4] = [
    "aclrtMemcpyAsync",
    "aclrtMemcpyAsyncWithCondition",
    "aclrtMemcpy2dAsync",
    "aclrtMemsetAsync",
];

/// A host span that must have device time: an ACL async copy or set of at least one
/// byte, forwarded (no fault), successful, and not run synchronously.
fn timed(span: &Value) -> bool {
    let a = &span["args"];
    ASYNC.contains(&span["name"].as_str().unwrap_or(""))
        && a["ret"] == 0
        && a.get("fault").is_none()
        && a.get("sync").is_none()
        && bytes_of(span) > 0
}

fn bytes_of(span: &Value) -> u64 {
    let a = &span["args"];
    if span["name"] == "aclrtMemcpy2dAsync" {
        a["width"].as_u64().unwrap() * a["height"].as_u64().unwrap()
    } else {
        a["count"].as_u64().unwrap()
    }
}

fn device_events(t: &Trace) -> Vec<&Value> {
    t.events
        .iter()
        .filter(|e| e["cat"] == "device" || e["ph"] == "s" || e["ph"] == "f")
        .collect()
}

#[test]
fn each_timed_copy_has_one_device_span_of_its_modelled_duration() {
    let dir = scratch("device-timeline");
    let out = run(&dir, &["timeline"], Some("events"));
    let text = ok(&out);
    assert!(
        text.contains("12352-byte copy ret 507000"),
        "the fault took the 12352-byte copy's place: {text}"
    );
    let t = single_trace(&dir);
    assert!(t.complete);
    let host_pid = t.meta("npushim").unwrap()["args"]["pid"].as_u64().unwrap();

    let clock = t
        .meta("npushim_device_clock")
        .expect("the clock fit is in the trace");
    let fitted = f(&clock["args"]["drift_ppm"]);
    // The rate the spans were mapped with: within a tenth of the drift of the truth (the
    // duration checks below are the sharper test of it).
    assert!(
        (fitted - DRIFT_PPM).abs() < DRIFT_PPM / 10.0,
        "fitted drift {fitted} ppm, simulated {DRIFT_PPM}"
    );
    let error_us = f(&clock["args"]["error_us"]);
    // The calibration's own bound on where it puts a device time on the host clock (half
    // the host bracket of its worst anchor). Without an offset fit spans would be a day
    // off, without a rate fit 5 % of the time since boot: both far beyond this.
    assert!(error_us < 5000.0, "calibration error {error_us} µs");

    let spans: Vec<&Value> = t.spans().collect();
    let host: Vec<&Value> = spans
        .iter()
        .copied()
        .filter(|s| s["pid"].as_u64() == Some(host_pid))
        .collect();
    let device: Vec<&Value> = spans
        .iter()
        .copied()
        .filter(|s| s["cat"] == "device")
        .collect();
    let starts: Vec<&Value> = t.events.iter().filter(|e| e["ph"] == "s").collect();
    let ends: HashMap<u64, &Value> = t
        .events
        .iter()
        .filter(|e| e["ph"] == "f")
        .map(|e| (e["id"].as_u64().unwrap(), e))
        .collect();
    let waits: Vec<&Value> = host
        .iter()
        .copied()
        .filter(|s| {
            s["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("aclrtSynchronizeStream"))
        })
        .collect();

    let eligible: Vec<&Value> = host.iter().copied().filter(|s| timed(s)).collect();
    // device_timeline: 7 copies on its first stream, 3 on its second, the runtime copy the
    // HCCL copy issues, 8 rounds of two; not the rejected, injected or pageable ones.
    assert_eq!(eligible.len(), 27, "timed host spans");
    assert_eq!(
        device.len(),
        eligible.len(),
        "one device span per timed copy"
    );
    assert_eq!(starts.len(), eligible.len(), "one arrow per device span");
    assert_eq!(
        ends.len(),
        eligible.len(),
        "arrows pair up (one end per id)"
    );

    let device_pid = device[0]["pid"].as_u64().unwrap();
    let names: HashMap<(u64, u64), &str> = t
        .events
        .iter()
        .filter(|e| e["ph"] == "M")
        .filter_map(|e| {
            let key = (e["pid"].as_u64()?, e["tid"].as_u64()?);
            Some((key, e["args"]["name"].as_str()?))
        })
        .collect();
    let process = t
        .events
        .iter()
        .find(|e| e["name"] == "process_name" && e["pid"].as_u64() == Some(device_pid))
        .expect("the device track is named");
    assert_eq!(process["args"]["name"], "device 0");

    let mut queued = 0;
    for h in &eligible {
        let what = format!("{} {}", h["name"], h["args"]);
        let mine: Vec<&&Value> = starts
            .iter()
            .filter(|s| s["pid"] == h["pid"] && s["tid"] == h["tid"] && inside(h, f(&s["ts"])))
            .collect();
        assert_eq!(mine.len(), 1, "one arrow leaves {what}");
        let id = mine[0]["id"].as_u64().unwrap();
        let end = ends
            .get(&id)
            .unwrap_or_else(|| panic!("arrow {id} has an end"));
        assert_eq!(end["bp"], "e");
        let d: Vec<&&Value> = device
            .iter()
            .filter(|d| {
                d["pid"] == end["pid"] && d["tid"] == end["tid"] && inside(d, f(&end["ts"]))
            })
            .collect();
        assert_eq!(d.len(), 1, "the arrow of {what} ends in one device span");
        let d = d[0];

        let bytes = bytes_of(h);
        assert_eq!(d["args"]["bytes"].as_u64(), Some(bytes), "{what}");
        assert_eq!(d["args"]["stream"], h["args"]["stream"], "{what}");
        assert_eq!(d["args"]["call"], h["name"], "{what}");
        let kind = h["args"]
            .get("effectiveKind")
            .unwrap_or(&h["args"]["kind"])
            .as_str()
            .map(str::to_string);
        let expected_name = match kind {
            _ if h["name"] == "aclrtMemsetAsync" => "memset".to_string(),
            Some(k) => format!("memcpy {k}"),
            None => panic!("{what} has no kind"),
        };
        assert_eq!(d["name"], expected_name.as_str(), "{what}");
        let stream_name = names[&(d["pid"].as_u64().unwrap(), d["tid"].as_u64().unwrap())];
        assert_eq!(
            stream_name,
            format!("stream {}", h["args"]["stream"].as_str().unwrap()),
            "the track is the copy's stream"
        );

        // Duration. The simulated device runs a copy for exactly bytes / GBPS ns of its
        // own timeline; the spans are that, read through the calibration. Tolerance: 2 µs
        // for the microsecond resolution of the two timestamps, plus 0.5 % for the fitted
        // rate (its error is twice an anchor's error over the run, about 1e-4 here; 0.5 %
        // is a tenth of the drift a missing rate fit would leave).
        let modelled = bytes as f64 / GBPS / 1000.0;
        let tolerance = 2.0 + modelled * 0.005;
        let dur = f(&d["dur"]);
        if f(&d["ts"]) > end_of(h) {
            // Queued behind earlier work: the device started it right after the start
            // event, so the span is the copy alone.
            queued += 1;
            assert!(
                (dur - modelled).abs() <= tolerance,
                "{what}: device {dur} µs, modelled {modelled} µs"
            );
        } else {
            // An idle stream starts the start event at once; the gap until the copy's own
            // submission (inside the host span) adds to the span.
            assert!(
                dur >= modelled - tolerance && dur <= modelled + f(&h["dur"]) + tolerance,
                "{what}: device {dur} µs, modelled {modelled} µs, host {} µs",
                h["dur"]
            );
        }

        // Placement: not before the host submitted it, not after the host wait that
        // returned after it (the first wait on its stream to start after the copy's host
        // span).
        let slack = error_us + 10.0;
        assert!(
            f(&d["ts"]) >= f(&h["ts"]) - slack,
            "{what}: on the device at {} before its submission at {}",
            d["ts"],
            h["ts"]
        );
        let wait = waits
            .iter()
            .filter(|w| w["args"]["stream"] == h["args"]["stream"] && f(&w["ts"]) >= end_of(h))
            .min_by(|a, b| f(&a["ts"]).total_cmp(&f(&b["ts"])));
        if let Some(w) = wait {
            assert!(
                end_of(d) <= end_of(w) + slack,
                "{what}: ends on the device at {} after the wait that returned at {}",
                end_of(d),
                end_of(w)
            );
        }
    }
    assert!(
        queued >= 10,
        "most copies queued behind the long one: {queued}"
    );

    // No device time for what the runtime did not run asynchronously or at all.
    for h in host.iter().filter(|h| !timed(h)) {
        let leaves = starts
            .iter()
            .filter(|s| s["tid"] == h["tid"] && inside(h, f(&s["ts"])))
            .count();
        let nested = if h["name"] == "HcclMemcpyAsync" { 1 } else { 0 };
        assert_eq!(leaves, nested, "{} {}", h["name"], h["args"]);
    }
    let zero = host
        .iter()
        .filter(|h| h["name"] == "aclrtMemcpyAsync" && h["args"]["count"] == 0)
        .count();
    assert_eq!(zero, 1, "the zero-byte copy is traced (and untimed, above)");
    let pageable = host.iter().filter(|h| h["args"]["sync"] == true).count();
    assert_eq!(pageable, 1, "the pageable copy ran synchronously");

    report_has_the_device_time(&t, &eligible);

    let totals = &t.meta("npushim_device").expect("totals")["args"];
    assert_eq!(totals["timed"], 27);
    assert_eq!(totals["untimed"], 0);
    assert_eq!(totals["discarded"], 1, "the copy the runtime rejected");
    assert_eq!(totals["lost"], 0);
}

#[test]
fn without_the_setting_there_is_no_device_event() {
    for (name, setting) in [("device-off", None), ("device-bad", Some("cupti"))] {
        let dir = scratch(name);
        let out = run(&dir, &["timeline"], setting);
        ok(&out);
        let t = single_trace(&dir);
        assert!(
            device_events(&t).is_empty(),
            "{setting:?}: {:?}",
            device_events(&t).first()
        );
        assert!(t.meta("npushim_device").is_none());
        assert!(t.spans_named("aclrtMemcpyAsync").count() > 20);
        let err = stderr(&out);
        if setting.is_some() {
            assert_eq!(
                err.matches("NPUSHIM_DEVICE=\"cupti\" is not a device timeline mode")
                    .count(),
                1,
                "{err}"
            );
        }
        assert!(!err.contains("device timeline:"), "{err}");
    }
}

#[test]
fn without_a_trace_the_setting_is_refused_in_one_line() {
    let dir = scratch("device-untraced");
    let b = build();
    let out = Run::shimmed(&b.bin("device_timeline"), &dir)
        .args(["exhaust", "10"])
        .env("NPUSHIM_DEVICE", "events")
        .env("NPUSHIM_TRACE", "off")
        .output();
    assert_eq!(stdout(&out).trim(), "ok");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines,
        [
            "npushim: NPUSHIM_DEVICE=events needs the native trace (NPUSHIM_TRACE on, \
          NPUSHIM_TRACE_SINK=native); the device timeline stays off"
        ]
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no file");
}

#[test]
fn copies_beyond_the_pool_go_untimed_counted_and_said_once() {
    let dir = scratch("device-exhaust");
    // One 32 MiB copy (134 ms of device time at 0.25 GB/s) and 400 of 64 KiB queued behind
    // it: the program submits all of them long before the first completes, so more than
    // the 256 pairs of the pool are outstanding at once.
    let out = run(&dir, &["exhaust", "400"], Some("events"));
    assert_eq!(stdout(&out).trim(), "ok");
    let err = stderr(&out);
    assert_eq!(
        err.matches("device timeline: no free event pair").count(),
        1,
        "{err}"
    );
    let t = single_trace(&dir);
    let totals = &t.meta("npushim_device").expect("totals")["args"];
    let timed = totals["timed"].as_u64().unwrap();
    let untimed = totals["untimed"].as_u64().unwrap();
    assert!(untimed > 0, "{totals}");
    assert!(timed >= 256, "{totals}");
    assert_eq!(
        timed + untimed,
        401,
        "every copy timed or counted: {totals}"
    );
    assert_eq!(totals["lost"], 0);
    let device = t.spans().filter(|s| s["cat"] == "device").count() as u64;
    assert_eq!(device, timed);
}

#[test]
fn merged_ranks_keep_their_device_tracks_and_arrows() {
    let dir = scratch("device-merge");
    let b = build();
    for rank in ["0", "1"] {
        let out = Run::shimmed(&b.bin("device_timeline"), &dir)
            .args(["exhaust", "20"])
            .env("NPUSIM_GBPS", GBPS.to_string())
            .env("NPUSHIM_DEVICE", "events")
            .env("RANK", rank)
            .output();
        ok(&out);
    }
    let merged = dir.join("merged.json");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("trace-")
        })
        .collect();
    inputs.sort();
    assert_eq!(inputs.len(), 2);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_npushim"))
        .arg("merge")
        .arg("-o")
        .arg(&merged)
        .args(&inputs)
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", stderr(&status));
    let t = common::parse_trace(&merged);
    let names: Vec<(u64, String)> = t
        .events
        .iter()
        .filter(|e| e["name"] == "process_name")
        .map(|e| {
            let name = e["args"]["name"].as_str().unwrap().to_string();
            (e["pid"].as_u64().unwrap(), name)
        })
        .collect();
    let sort: HashMap<u64, u64> = t
        .events
        .iter()
        .filter(|e| e["name"] == "process_sort_index")
        .map(|e| {
            let index = e["args"]["sort_index"].as_u64().unwrap();
            (e["pid"].as_u64().unwrap(), index)
        })
        .collect();
    for rank in 0..2u64 {
        let host = names
            .iter()
            .find(|(_, n)| n.starts_with(&format!("rank {rank} (pid")))
            .unwrap_or_else(|| panic!("rank {rank} is a track: {names:?}"));
        let device = names
            .iter()
            .find(|(_, n)| n.starts_with(&format!("rank {rank} device 0 (pid")))
            .unwrap_or_else(|| panic!("rank {rank}'s device 0 is a track: {names:?}"));
        assert_eq!(
            sort[&host.0], sort[&device.0],
            "the device track sorts with its rank"
        );
        let spans = t
            .spans()
            .filter(|s| s["cat"] == "device" && s["pid"].as_u64() == Some(device.0))
            .count();
        assert_eq!(spans, 21, "rank {rank}: the long copy and 20 queued ones");
    }
    let mut flows: HashMap<String, (u32, u32)> = HashMap::new();
    for e in t.events.iter().filter(|e| e["ph"] == "s" || e["ph"] == "f") {
        let entry = flows.entry(e["id"].to_string()).or_default();
        if e["ph"] == "s" {
            entry.0 += 1;
        } else {
            entry.1 += 1;
        }
    }
    assert_eq!(flows.len(), 42);
    assert!(flows.values().all(|&v| v == (1, 1)), "{flows:?}");
}

/// Device spans of a trace and its totals: (spans, timed, untimed, lost).
fn device_totals(t: &Trace) -> (u64, u64, u64, u64) {
    let spans = t.spans().filter(|s| s["cat"] == "device").count() as u64;
    let totals = &t.meta("npushim_device").expect("totals")["args"];
    let get = |k: &str| totals[k].as_u64().unwrap();
    (spans, get("timed"), get("untimed"), get("lost"))
}

#[test]
fn a_forked_child_times_its_copies_with_a_pool_of_its_own() {
    let dir = scratch("device-fork");
    let b = build();
    // Two threads copy on devices 0 and 1 while the main thread forks twice; each child
    // makes 50 copies of its own and exits.
    let out = Run::shimmed(&b.bin("call_storm"), &dir)
        .args(["--forks", "2", "--child-calls", "50", "--api", "acl"])
        .env("NPUSHIM_DEVICE", "events")
        .output();
    let text = ok(&out);
    let traces = common::traces_in(&dir);
    assert_eq!(traces.len(), 3, "the parent and two children");
    let parent_calls: u64 = text
        .lines()
        .filter(|l| l.starts_with("thread "))
        .map(|l| l.split_whitespace().nth(5).unwrap().parse::<u64>().unwrap())
        .sum();
    let children: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("child "))
        .map(|l| {
            assert!(l.ends_with("status 0"), "{l}");
            l.split_whitespace().nth(1).unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(children.len(), 2);
    for (pid, t) in &traces {
        let (spans, timed, untimed, lost) = device_totals(t);
        assert_eq!(spans, timed, "pid {pid}");
        assert_eq!(lost, 0, "pid {pid}");
        if children.contains(pid) {
            // A fresh pool: nothing inherited, nothing exhausted.
            assert_eq!((timed, untimed), (50, 0), "child {pid}");
            let device_pids: std::collections::BTreeSet<u64> = t
                .spans()
                .filter(|s| s["cat"] == "device")
                .map(|s| s["pid"].as_u64().unwrap())
                .collect();
            assert_eq!(device_pids.len(), 1, "child {pid}: device 0 only");
        } else {
            assert_eq!(
                timed + untimed,
                parent_calls,
                "parent: every copy timed or counted"
            );
        }
        let s = t.events.iter().filter(|e| e["ph"] == "s").count() as u64;
        let f = t.events.iter().filter(|e| e["ph"] == "f").count() as u64;
        assert_eq!((s, f), (timed, timed), "pid {pid}: one arrow per span");
    }
}

/// `npushim report --json` of the timeline trace: the device-time table holds every device
/// span once, per function, kind and stream, and its rate is the simulated bandwidth.
fn report_has_the_device_time(t: &Trace, eligible: &[&Value]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_npushim"))
        .args(["report", "--json"])
        .arg(&t.path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = report["device"].as_array().expect("a device table");
    let count: u64 = rows.iter().map(|r| r["count"].as_u64().unwrap()).sum();
    let bytes: u64 = rows.iter().map(|r| r["bytes"].as_u64().unwrap()).sum();
    assert_eq!(count, eligible.len() as u64);
    assert_eq!(bytes, eligible.iter().map(|h| bytes_of(h)).sum::<u64>());
    assert_eq!(report["device_spans"], count);
    for r in rows {
        // Never faster than the device (the calibration's 0.5 % aside); slower only for
        // the first copy on an idle stream (its span includes a submission gap).
        let rate = f(&r["device_gb_per_s"]);
        assert!(rate <= GBPS * 1.005, "{r}");
    }
    // The device-to-host copies of the rounds queue behind their host-to-device copy: the
    // table's rate for them is exactly the modelled bandwidth.
    let head_stream = &eligible[0]["args"]["stream"];
    let d2h = rows
        .iter()
        .find(|r| {
            r["call"] == "aclrtMemcpyAsync"
                && r["kind"] == "DEVICE_TO_HOST"
                && &r["stream"] == head_stream
        })
        .expect("a device-to-host row on the first stream");
    assert_eq!(d2h["count"], 9);
    let rate = f(&d2h["device_gb_per_s"]);
    assert!((rate - GBPS).abs() <= GBPS * 0.005, "{d2h}");
}
