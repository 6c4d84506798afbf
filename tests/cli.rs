//! Tests of the `npushim` command-line tool: `run` (exit status, signals, environment,
//! `--summary`), `report` (numbers checked against hand-made fixtures in `tests/fixtures`),
//! `merge` (track names, order, pids, time alignment) and every error path.
//!
//! `run` is exercised with a stand-in library (`NPUSHIM_LIB` pointing at a copy of a
//! system library this test process has mapped), so these tests need neither the shim nor
//! the simulated runtime.

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_npushim");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A fresh, empty directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("npushim-cli-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A shared library this process has mapped (libc, libm, …): a harmless thing to preload.
fn system_library() -> PathBuf {
    let maps = fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(PathBuf::from)
        .find(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("lib") && name.contains(".so") && path.is_file()
        })
        .expect("a mapped shared library")
}

/// A copy of a system library under `dir`, named `name`.
fn fake_library(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    fs::copy(system_library(), &path).unwrap();
    path
}

fn npushim(dir: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .current_dir(dir)
        .env("NPUSHIM_LIB", fake_library(dir, "libnpushim.so"))
        .env_remove("LD_PRELOAD")
        .env_remove("NPUSHIM_TRACE")
        .env_remove("NPUSHIM_CHECK")
        .env_remove("NPUSHIM_FAULTS")
        .env_remove("NPUSHIM_SEED");
    command
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    npushim(dir).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A failure of the tool: status 2 and exactly one `npushim: ` line containing `needle`.
fn assert_failure(output: &Output, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err}");
    assert!(err.starts_with("npushim: "), "{err}");
    assert!(err.contains(needle), "{needle:?} not in {err}");
    assert!(!err.contains("panicked"), "{err}");
}

fn tool(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn fixture_str(name: &str) -> String {
    fixture(name).display().to_string()
}

fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

// ---------------------------------------------------------------- run

#[test]
fn run_passes_exit_status_through() {
    let dir = scratch("exit");
    let output = run_in(&dir, &["run", "--", "sh", "-c", "exit 7"]);
    assert_eq!(output.status.code(), Some(7));
    let output = run_in(&dir, &["run", "--", "true"]);
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn run_reports_death_by_signal_as_128_plus_n() {
    let dir = scratch("signal-death");
    let output = run_in(&dir, &["run", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(output.status.code(), Some(143));
    let output = run_in(&dir, &["run", "--", "sh", "-c", "kill -KILL $$"]);
    assert_eq!(output.status.code(), Some(137));
}

/// Runs `script` under `npushim run`, waits for its first line (`ready`, printed once the
/// script is set up: its child exists and any trap is installed), sends `signal` to
/// `npushim`, and returns how it ended with the rest of its output.
fn signal_run(dir: &Path, signal: libc::c_int, script: &str) -> Output {
    let mut child = npushim(dir)
        .args(["run", "--", "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first, "ready\n", "the script did not start");
    // SAFETY: plain kill(2) of a process this test spawned and has not yet waited for.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, signal) }, 0);
    let mut output = child.wait_with_output().unwrap();
    out.read_to_end(&mut output.stdout).unwrap();
    output
}

#[test]
fn run_forwards_sigterm_to_the_child() {
    let dir = scratch("forward-term");
    // Without forwarding, `sleep` would end normally after 30 s: status 0, not 143.
    let output = signal_run(&dir, libc::SIGTERM, "echo ready; exec sleep 30");
    assert_eq!(output.status.code(), Some(143), "{}", stderr(&output));
}

#[test]
fn run_forwards_sigusr1_to_a_child_that_handles_it() {
    let dir = scratch("forward-usr1");
    let output = signal_run(
        &dir,
        libc::SIGUSR1,
        "trap 'echo caught; kill $!; exit 5' USR1; sleep 30 & echo ready; wait",
    );
    assert_eq!(output.status.code(), Some(5));
    assert_eq!(stdout(&output), "caught\n");
}

#[test]
fn run_puts_the_library_first_and_keeps_existing_preloads() {
    let dir = scratch("preload");
    let ours = dir.join("libnpushim.so");
    let other = fake_library(&dir, "libother.so");
    let output = npushim(&dir)
        .env("LD_PRELOAD", &other)
        .args(["run", "--", "sh", "-c", "echo \"$LD_PRELOAD\""])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output).trim(),
        format!("{}:{}", ours.display(), other.display())
    );

    let output = run_in(&dir, &["run", "--", "sh", "-c", "echo \"$LD_PRELOAD\""]);
    assert_eq!(stdout(&output).trim(), ours.display().to_string());
}

#[test]
fn run_sets_options_in_the_child_environment() {
    let dir = scratch("options");
    let output = run_in(
        &dir,
        &[
            "run",
            "--trace",
            "out-%p.json",
            "--check",
            "strict,-align",
            "--faults",
            "aclrtMemcpyAsync=2*off->return(507053)",
            "--seed",
            "42",
            "--",
            "sh",
            "-c",
            "echo \"$NPUSHIM_TRACE|$NPUSHIM_CHECK|$NPUSHIM_FAULTS|$NPUSHIM_SEED\"",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "out-%p.json|strict,-align|aclrtMemcpyAsync=2*off->return(507053)|42\n"
    );
}

#[test]
fn run_leaves_the_environment_alone_for_options_not_given() {
    let dir = scratch("untouched");
    let output = npushim(&dir)
        .env("NPUSHIM_CHECK", "warn,+overlap")
        .env("NPUSHIM_SEED", "9")
        .args([
            "run",
            "--",
            "sh",
            "-c",
            "echo \"${NPUSHIM_TRACE-unset}|$NPUSHIM_CHECK|${NPUSHIM_FAULTS-unset}|$NPUSHIM_SEED\"",
        ])
        .output()
        .unwrap();
    assert_eq!(stdout(&output), "unset|warn,+overlap|unset|9\n");
}

#[test]
fn run_accepts_a_command_without_double_dash() {
    let dir = scratch("no-dash");
    let output = run_in(&dir, &["run", "sh", "-c", "echo $0 $1", "a", "b"]);
    assert_eq!(stdout(&output), "a b\n");
}

#[test]
fn run_fails_clearly_without_the_library() {
    let dir = scratch("no-lib");
    let output = npushim(&dir)
        .env("NPUSHIM_LIB", dir.join("missing.so"))
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_failure(&output, "NPUSHIM_LIB does not name a file");

    // Without NPUSHIM_LIB the library is looked for beside the executable; copy the tool
    // to a directory where there is none.
    let alone = dir.join("alone");
    fs::create_dir(&alone).unwrap();
    let bin = alone.join("npushim");
    fs::copy(BIN, &bin).unwrap();
    let output = Command::new(&bin)
        .env_remove("NPUSHIM_LIB")
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_failure(&output, "cannot find libnpushim.so");
}

#[test]
fn run_finds_the_library_beside_its_executable() {
    let dir = scratch("beside");
    let bin = dir.join("npushim");
    fs::copy(BIN, &bin).unwrap();
    let lib = fake_library(&dir, "libnpushim.so");
    // Another test's child, forked while the copy was open for writing, holds that
    // descriptor until its exec: the kernel then refuses to run the copy (ETXTBSY) for that
    // short moment, so try again.
    let mut attempts = 0;
    let output = loop {
        let result = Command::new(&bin)
            .env_remove("NPUSHIM_LIB")
            .env_remove("LD_PRELOAD")
            .args(["run", "--", "sh", "-c", "echo \"$LD_PRELOAD\""])
            .output();
        match result {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && attempts < 10_000 => {
                attempts += 1;
                std::thread::yield_now();
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(stdout(&output).trim(), lib.display().to_string());
}

#[test]
fn run_reports_a_missing_command() {
    let dir = scratch("no-command");
    let output = run_in(&dir, &["run", "--", "no-such-command-npushim-test"]);
    assert_eq!(output.status.code(), Some(127));
    assert!(stderr(&output).starts_with("npushim: cannot run no-such-command-npushim-test"));
}

#[test]
fn run_summary_reports_the_traces_written_during_the_run() {
    let dir = scratch("summary");
    // An older trace in the directory is not part of this run.
    fs::copy(fixture("report.json"), dir.join("npushim-1.json")).unwrap();
    // The child and a grandchild each "write" a trace and list it in the run's index, as
    // the shim does (tests/trace.rs runs the real shim).
    let script = format!(
        "cp '{}' npushim-$$.json && echo \"$PWD/npushim-$$.json\" >>\"$NPUSHIM_RUN_INDEX\"; \
         sh -c 'cp \"{}\" npushim-$$.json && echo \"$PWD/npushim-$$.json\" >>\"$NPUSHIM_RUN_INDEX\"'; \
         echo program output; exit 3",
        fixture_str("rank1.json"),
        fixture_str("cutoff.json"),
    );
    let output = run_in(&dir, &["run", "--summary", "--", "sh", "-c", &script]);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(stdout(&output), "program output\n");
    let err = stderr(&output);
    assert!(err.contains("summary of 2 trace file(s)"), "{err}");
    assert_eq!(err.matches("npushim report: ").count(), 2, "{err}");
    assert!(err.contains("train (pid 100, rank 1) on node-b"), "{err}");
    assert!(
        err.contains("cut off: 14 events read, last line partial"),
        "{err}"
    );
    assert!(!err.contains("npushim-1.json"), "{err}");
}

#[test]
fn run_summary_lists_what_the_run_s_index_names() {
    let dir = scratch("summary-template");
    let script = format!(
        "mkdir -p traces && cp '{}' traces/job-$$-rank0.json && \
         echo \"$PWD/traces/job-$$-rank0.json\" >>\"$NPUSHIM_RUN_INDEX\"",
        fixture_str("rank0.json")
    );
    let output = run_in(
        &dir,
        &[
            "run",
            "--summary",
            "--trace",
            "traces/job-%p-rank%r.json",
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let err = stderr(&output);
    assert!(err.contains("summary of 1 trace file(s)"), "{err}");
    assert!(err.contains("/traces/job-"), "{err}");

    let output = run_in(&dir, &["run", "--summary", "--", "true"]);
    assert!(stderr(&output).contains("wrote no trace"));

    // The words the shim reads as "tracing off" mean the same here: no index, no summary.
    for off in ["off", " NONE ", "0"] {
        let output = run_in(
            &dir,
            &[
                "run",
                "--summary",
                "--trace",
                off,
                "--",
                "sh",
                "-c",
                "echo \"[$NPUSHIM_RUN_INDEX]\"",
            ],
        );
        assert_eq!(stdout(&output), "[]\n", "{off:?}");
        assert!(stderr(&output).contains("tracing is off"), "{off:?}");
    }

    // The index is private to the run and gone afterwards.
    let output = run_in(
        &dir,
        &[
            "run",
            "--summary",
            "--",
            "sh",
            "-c",
            "stat -c %a \"$NPUSHIM_RUN_INDEX\"; echo \"$NPUSHIM_RUN_INDEX\"",
        ],
    );
    let out = stdout(&output);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0], "600");
    assert!(!Path::new(lines[1]).exists(), "{} left behind", lines[1]);
}

// ---------------------------------------------------------------- report

#[test]
fn report_text_shows_the_fixture_numbers() {
    let output = tool(&["report", &fixture_str("report.json")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let has_row = |cells: &[&str]| {
        text.lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>() == cells)
    };
    assert!(
        text.contains("read: complete; shim wrote 8 spans, dropped 2"),
        "{text}"
    );
    // API, kind, calls, ok, failed, injected, bytes (ok calls only), total, mean, p50,
    // p99, host GB/s (sync): all copies here are asynchronous, so no rate.
    assert!(
        has_row(&[
            "aclrtMemcpyAsync",
            "HOST_TO_DEVICE",
            "3",
            "2",
            "1",
            "0",
            "8192",
            "60.000",
            "20.000",
            "20.000",
            "30.000",
            "-"
        ]),
        "{text}"
    );
    assert!(
        has_row(&[
            "aclrtMemcpyAsync",
            "(all)",
            "6",
            "3",
            "2",
            "1",
            "10240",
            "107.000",
            "17.833",
            "10.000",
            "40.000",
            "-"
        ]),
        "{text}"
    );
    assert!(
        has_row(&[
            "HcclMemcpyAsync",
            "(all)",
            "2",
            "1",
            "1",
            "0",
            "2048",
            "53.000",
            "26.500",
            "3.000",
            "50.000",
            "-"
        ]),
        "{text}"
    );
    assert!(has_row(&["aclrtMemcpyAsync", "5", "1"]), "{text}");
    assert!(has_row(&[
        "aclrtMemcpyAsync",
        "507053",
        "ACL_ERROR_RT_DEVICE_MEM_ERROR",
        "1"
    ]));
    assert!(has_row(&["HcclMemcpyAsync", "1", "HCCL_E_PARA", "1"]));
    assert!(has_row(&["aclrtMemcpyAsync", "align", "1"]));
    assert!(has_row(&["HcclMemcpyAsync", "size", "1"]));
    assert!(has_row(&["aclrtMemcpyAsync", "return(507053)", "1"]));
    assert!(has_row(&[
        "1000300.000",
        "4242",
        "4250",
        "HcclMemcpyAsync",
        "DEVICE_TO_DEVICE",
        "2048",
        "50.000",
        "0"
    ]));
}

#[test]
fn report_json_matches_hand_computed_values() {
    let output = tool(&["report", "--json", &fixture_str("report.json")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let reports = json_lines(&output);
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r["spans"], 8);
    assert_eq!(r["dropped"], 2);
    assert_eq!(r["files"][0]["read"], "complete");
    assert_eq!(r["files"][0]["complete"], true);
    assert_eq!(r["processes"][0]["rank"], 0);
    assert_eq!(r["processes"][0]["host"], "node-a");

    let by_api = |api: &str| {
        r["by_api"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["api"] == api)
            .unwrap()
            .clone()
    };
    let acl = by_api("aclrtMemcpyAsync");
    assert_eq!(acl["calls"], 6);
    assert_eq!(
        (&acl["ok"], &acl["failed"], &acl["injected"]),
        (&json!(3), &json!(2), &json!(1))
    );
    // Only the three copies that were forwarded and returned 0 moved bytes.
    assert_eq!(acl["bytes"], 4096 + 4096 + 2048);
    assert_eq!(acl["total_us"], 107.0);
    assert_eq!(acl["mean_us"], 17.833);
    assert_eq!(acl["p50_us"], 10.0);
    assert_eq!(acl["p99_us"], 40.0);
    let hccl = by_api("HcclMemcpyAsync");
    assert_eq!(hccl["calls"], 2);
    assert_eq!(hccl["bytes"], 2048);
    assert_eq!(hccl["mean_us"], 26.5);

    let h2d = r["by_kind"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["api"] == "aclrtMemcpyAsync" && row["kind"] == "HOST_TO_DEVICE")
        .unwrap();
    assert_eq!(h2d["calls"], 3);
    assert_eq!(h2d["bytes"], 8192);
    assert_eq!(h2d["mean_us"], 20.0);
    // Asynchronous copies: their host time is submission, so no rate.
    assert_eq!(h2d["host_gb_per_s_sync"], Value::Null);
    assert_eq!(h2d["class"], "copy-async");

    let errors: Vec<(String, i64, String, u64)> = r["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["api"].as_str().unwrap().to_string(),
                e["ret"].as_i64().unwrap(),
                e["name"].as_str().unwrap().to_string(),
                e["calls"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected = [
        ("aclrtMemcpyAsync", 107008, "ACL_ERROR_RT_ADDR_UNALIGNED"),
        (
            "aclrtMemcpyAsync",
            207000,
            "ACL_ERROR_RT_FEATURE_NOT_SUPPORT",
        ),
        ("aclrtMemcpyAsync", 507053, "ACL_ERROR_RT_DEVICE_MEM_ERROR"),
        ("HcclMemcpyAsync", 1, "HCCL_E_PARA"),
    ];
    assert_eq!(
        errors,
        expected
            .iter()
            .map(|(api, ret, name)| (api.to_string(), *ret, name.to_string(), 1))
            .collect::<Vec<_>>()
    );

    let rules: Vec<(&str, &str)> = r["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["api"].as_str().unwrap(), v["rule"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rules,
        [
            ("aclrtMemcpyAsync", "align"),
            ("aclrtMemcpyAsync", "h2h"),
            ("HcclMemcpyAsync", "size")
        ]
    );
    assert_eq!(r["faults"][0]["action"], "return(507053)");
    assert_eq!(r["faults"][0]["calls"], 1);
    assert_eq!(r["faults"].as_array().unwrap().len(), 1);

    let nesting = r["nesting"].as_array().unwrap();
    assert_eq!(nesting[0]["api"], "aclrtMemcpyAsync");
    assert_eq!(nesting[0]["top_level"], 5);
    assert_eq!(nesting[0]["nested"], 1);
    assert_eq!(nesting[1]["top_level"], 2);
    assert_eq!(nesting[1]["nested"], 0);

    let slowest = r["slowest"].as_array().unwrap();
    assert_eq!(slowest.len(), 8);
    assert_eq!(slowest[0]["dur_us"], 50.0);
    assert_eq!(slowest[0]["api"], "HcclMemcpyAsync");
    assert_eq!(slowest[1]["dur_us"], 40.0);
    assert_eq!(slowest[7]["dur_us"], 2.0);
}

/// The row of `list` (a JSON array) whose fields equal `key`.
fn row_where<'a>(list: &'a Value, key: &[(&str, Value)]) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|row| key.iter().all(|(k, v)| &row[*k] == v))
        .unwrap_or_else(|| panic!("no row {key:?} in {list}"))
}

#[test]
fn report_gives_no_rate_for_asynchronous_copies_and_no_bytes_for_stopped_ones() {
    let output = tool(&["report", "--json", &fixture_str("truth.json")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let r = &json_lines(&output)[0];
    let kind = |api: &str, kind: &str, ran_sync: bool| {
        row_where(
            &r["by_kind"],
            &[
                ("api", json!(api)),
                ("kind", json!(kind)),
                ("ran_sync", json!(ran_sync)),
            ],
        )
    };

    // A 1 GiB asynchronous copy that returned in 26 µs, a copy stopped by an injected
    // return(507053), one skipped by a fault, one delayed by a fault (still forwarded).
    let h2d = kind("aclrtMemcpyAsync", "HOST_TO_DEVICE", false);
    assert_eq!(h2d["calls"], 4);
    assert_eq!(
        (&h2d["ok"], &h2d["failed"], &h2d["injected"]),
        (&json!(2), &json!(0), &json!(2))
    );
    assert_eq!(h2d["bytes"], (1u64 << 30) + 8192);
    assert_eq!(h2d["host_gb_per_s_sync"], Value::Null);
    assert_eq!(h2d["class"], "copy-async");
    // The same function's copy that the runtime ran synchronously: its own row, with a
    // rate (1,000,000 B in 500 µs); the function's total mixes both, so it has none.
    let ran_sync = kind("aclrtMemcpyAsync", "HOST_TO_DEVICE", true);
    assert_eq!(ran_sync["host_gb_per_s_sync"], 2.0);
    let api = |name: &str| row_where(&r["by_api"], &[("api", json!(name))]);
    assert_eq!(api("aclrtMemcpyAsync")["host_gb_per_s_sync"], Value::Null);
    assert_eq!(
        api("aclrtMemcpyAsync")["bytes"],
        (1u64 << 30) + 8192 + 1_000_000
    );

    // Synchronous aclrtMemcpy: 2,000,000 + 6,000,000 B in 1000 + 2000 µs; the failed call
    // (ret 107000) is counted, and neither its bytes nor its 50 µs enter the rate.
    let memcpy = api("aclrtMemcpy");
    assert_eq!(
        (&memcpy["calls"], &memcpy["failed"]),
        (&json!(3), &json!(1))
    );
    assert_eq!(memcpy["bytes"], 8_000_000);
    assert_eq!(memcpy["class"], "copy-sync");
    assert_eq!(memcpy["host_gb_per_s_sync"], 2.667);
    // 2D: width x height bytes; the synchronous one gets a rate, the asynchronous one not.
    assert_eq!(api("aclrtMemcpy2d")["bytes"], 1000 * 500);
    assert_eq!(api("aclrtMemcpy2d")["host_gb_per_s_sync"], 2.0);
    assert_eq!(api("aclrtMemcpy2dAsync")["bytes"], 64 * 64);
    assert_eq!(api("aclrtMemcpy2dAsync")["host_gb_per_s_sync"], Value::Null);
    for name in [
        "aclrtMemcpyAsyncWithCondition",
        "aclrtMemsetAsync",
        "HcclD2DMemcpyAsync",
    ] {
        assert_eq!(api(name)["calls"], 1, "{name}");
        assert_eq!(api(name)["host_gb_per_s_sync"], Value::Null, "{name}");
    }
    // HcclD2DMemcpyAsync has no kind argument: it is device to device.
    assert_eq!(
        kind("HcclD2DMemcpyAsync", "DEVICE_TO_DEVICE", false)["bytes"],
        262144
    );
    // A wait moves no bytes.
    assert_eq!(api("aclrtSynchronizeStream")["bytes"], Value::Null);
    assert_eq!(r["faults"].as_array().unwrap().len(), 3);

    // The text says the same: no GB/s on the asynchronous row, the stopped copy in the
    // injected column and not in bytes.
    let output = tool(&["report", &fixture_str("truth.json")]);
    let text = stdout(&output);
    let cells = |line: &str| {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let row = |prefix: &[&str]| {
        text.lines()
            .map(cells)
            .find(|c| c.len() > prefix.len() && c[..prefix.len()] == *prefix)
            .unwrap_or_else(|| panic!("no row {prefix:?} in {text}"))
    };
    assert!(text.contains("host GB/s (sync)"), "{text}");
    // API, kind, calls, ok, failed, injected, bytes, total, mean, p50, p99, host GB/s (sync)
    let h2d = row(&["aclrtMemcpyAsync", "HOST_TO_DEVICE", "4"]);
    assert_eq!(h2d[3..7], ["2", "0", "2", "1073750016"]);
    assert_eq!(h2d[11], "-");
    let sync = row(&["aclrtMemcpyAsync", "HOST_TO_DEVICE", "(ran", "sync)"]);
    assert_eq!(sync.last().unwrap(), "2.000");
    let memcpy = row(&["aclrtMemcpy", "(all)"]);
    assert_eq!(memcpy[6], "8000000");
    assert_eq!(memcpy[11], "2.667");
    let memset = row(&["aclrtMemsetAsync", "-"]);
    assert_eq!(memset[6], "4096");
    assert_eq!(memset[11], "-");
    assert_eq!(row(&["aclrtSynchronizeStream", "-"])[6], "-");
}

#[test]
fn report_host_waits_table_per_function_and_stream() {
    // 100 waits on stream 0x3000 of 1, 2, …, 100 ms in a scrambled order; 3 on an event
    // (30, 10, 20 µs); 1 on the device; 2 with a timeout, one of which failed.
    let output = tool(&["report", "--json", &fixture_str("waits.json")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let r = &json_lines(&output)[0];
    let wait = |api: &str, on: &str| {
        row_where(
            &r["waits"],
            &[("api", json!(api)), ("waited_on", json!(on))],
        )
        .clone()
    };
    let stream = wait("aclrtSynchronizeStream", "stream 0x3000");
    assert_eq!(stream["calls"], 100);
    assert_eq!(stream["total_us"], 5_050_000.0);
    // Nearest rank: the 50th and 99th of 100 sorted values.
    assert_eq!(stream["p50_us"], 50_000.0);
    assert_eq!(stream["p99_us"], 99_000.0);
    assert_eq!(stream["max_us"], 100_000.0);
    let event = wait("aclrtSynchronizeEvent", "event 0x5000");
    assert_eq!(
        (
            &event["calls"],
            &event["total_us"],
            &event["p50_us"],
            &event["max_us"]
        ),
        (&json!(3), &json!(60.0), &json!(20.0), &json!(30.0))
    );
    assert_eq!(wait("aclrtSynchronizeDevice", "device")["max_us"], 7.5);
    let timeout = wait("aclrtSynchronizeStreamWithTimeout", "stream 0x3100");
    assert_eq!(
        (&timeout["calls"], &timeout["failed"]),
        (&json!(2), &json!(1))
    );
    assert_eq!(timeout["max_us"], 1_000_000.0);
    assert_eq!(r["waits"].as_array().unwrap().len(), 4);

    let text = stdout(&tool(&["report", &fixture_str("waits.json")]));
    assert!(
        text.contains("Host waits (time the host blocked, by function and what it waited on)"),
        "{text}"
    );
    // API, waited on (two words), calls, failed, injected, total, p50, p99, longest
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "aclrtSynchronizeStream",
                    "stream",
                    "0x3000",
                    "100",
                    "0",
                    "0",
                    "5050000.000",
                    "50000.000",
                    "99000.000",
                    "100000.000"
                ]),
        "{text}"
    );
}

#[test]
fn report_reads_a_cut_off_trace() {
    let output = tool(&["report", &fixture_str("cutoff.json")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("cut off: 14 events read, last line partial"));

    let output = tool(&["report", "--json", &fixture_str("cutoff.json")]);
    let r = &json_lines(&output)[0];
    assert_eq!(r["files"][0]["complete"], false);
    assert_eq!(r["files"][0]["last_line_partial"], true);
    assert_eq!(r["files"][0]["events"], 14);
    assert_eq!(r["spans"], 7);
    assert_eq!(r["files"][0]["stats_events"], Value::Null);
}

#[test]
fn report_reads_spans_of_a_trace_without_metadata_and_says_so() {
    let output = tool(&["report", "--json", &fixture_str("no-metadata.json")]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("no npushim metadata line"));
    let r = &json_lines(&output)[0];
    assert_eq!(r["spans"], 2);
    assert_eq!(r["files"][0]["has_npushim_metadata"], false);
    // No closing ']' but the last line is whole.
    assert_eq!(
        r["files"][0]["read"],
        "cut off: 2 events read, no closing ']'"
    );
}

#[test]
fn report_skips_and_names_malformed_events_instead_of_reading_them_as_0() {
    // report.json with "count":"4096" (line 5), "dur":"abc" (line 9) and the stats line's
    // "dropped":"2".
    let output = tool(&["report", &fixture_str("malformed.json")]);
    assert!(output.status.success(), "{}", stderr(&output));
    let first = "first: line 5, \"count\":\"4096\", expected a non-negative integer";
    let err = stderr(&output);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("npushim: 3 events skipped as malformed (") && err.contains(first),
        "{err}"
    );
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "warning: 3 events skipped as malformed, not counted below ({first})"
        )),
        "{text}"
    );
    // Neither skipped span is counted: 4 of the 6 aclrtMemcpyAsync calls remain.
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "aclrtMemcpyAsync",
                    "(all)",
                    "4",
                    "2",
                    "2",
                    "0",
                    "6144",
                    "82.000",
                    "20.500",
                    "10.000",
                    "40.000",
                    "-"
                ]),
        "{text}"
    );

    let output = tool(&["report", "--json", &fixture_str("malformed.json")]);
    let report = &json_lines(&output)[0];
    assert_eq!(report["malformed"], 3);
    let file = &report["files"][0];
    assert_eq!(file["malformed"], 3);
    assert_eq!(file["first_malformed"]["line"], 5);
    assert_eq!(file["first_malformed"]["field"], "count");
    assert_eq!(file["first_malformed"]["value"], "\"4096\"");
    assert_eq!(file["stats_events"], Value::Null);
    assert_eq!(report["spans"], 6);

    // A well-formed trace reports none.
    let output = tool(&["report", "--json", &fixture_str("report.json")]);
    assert_eq!(json_lines(&output)[0]["files"][0]["malformed"], 0);
}

#[test]
fn report_several_files_one_report_each_or_combined() {
    let a = fixture_str("rank0.json");
    let b = fixture_str("rank1.json");
    let output = tool(&["report", "--json", &a, &b]);
    let reports = json_lines(&output);
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[1]["processes"][0]["rank"], 1);

    let output = tool(&["report", "--json", "--combine", &a, &b]);
    let reports = json_lines(&output);
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["files"].as_array().unwrap().len(), 2);
    assert_eq!(reports[0]["spans"], 4);

    let output = tool(&["report", &a, &b]);
    assert_eq!(stdout(&output).matches("npushim report: ").count(), 2);

    // A bad file among several: the others are still reported, the status says it failed.
    let output = tool(&["report", "--json", &a, "/nonexistent/x.json", &b]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(json_lines(&output).len(), 2);
    assert_eq!(stderr(&output).lines().count(), 1);
}

// ---------------------------------------------------------------- merge

fn merged_events(path: &Path) -> Vec<Value> {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.starts_with('['), "line format");
    assert!(text.ends_with("\n]\n"), "complete trace");
    for line in text.lines().skip(1) {
        assert!(line.starts_with(',') || line == "]", "line format: {line}");
    }
    match serde_json::from_str(&text).unwrap() {
        Value::Array(events) => events,
        other => panic!("not an array: {other}"),
    }
}

fn track_names(events: &[Value]) -> Vec<(i64, String)> {
    events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_i64().unwrap(),
                e["args"]["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn span_ts(events: &[Value], pid: i64, name: &str) -> f64 {
    events
        .iter()
        .find(|e| e["ph"] == "X" && e["pid"] == pid && e["name"] == name)
        .unwrap()["ts"]
        .as_f64()
        .unwrap()
}

#[test]
fn merge_three_ranks_from_two_hosts() {
    let dir = scratch("merge3");
    let out = dir.join("merged.json");
    // Given out of order; rank 2 is cut off.
    let output = tool(&[
        "merge",
        "-o",
        &out.display().to_string(),
        &fixture_str("rank2.json"),
        &fixture_str("rank0.json"),
        &fixture_str("rank1.json"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("merged 3 traces"));
    let events = merged_events(&out);

    // One track per input, named and ordered by rank; rank 1 has rank 0's pid, so it moves.
    assert_eq!(
        track_names(&events),
        [
            (100, "rank 0 (pid 100, host node-a)".to_string()),
            (10_000_100, "rank 1 (pid 100, host node-b)".to_string()),
            (200, "rank 2 (pid 200, host node-b)".to_string()),
        ]
    );
    let sort: Vec<(i64, i64)> = events
        .iter()
        .filter(|e| e["name"] == "process_sort_index")
        .map(|e| {
            (
                e["pid"].as_i64().unwrap(),
                e["args"]["sort_index"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sort, [(100, 0), (10_000_100, 1), (200, 2)]);

    // Every event of the moved process moved with it, thread ids included.
    let moved: Vec<&Value> = events.iter().filter(|e| e["pid"] == 10_000_100).collect();
    assert!(moved.len() >= 5);
    assert!(moved.iter().all(|e| e["tid"] == 10_000_100));
    assert_eq!(
        events.iter().filter(|e| e["pid"] == 100).count(),
        moved.len()
    );

    // Hosts differ: rank 0 keeps its timestamps; node-b's anchor offset
    // (realtime - monotonic) is 3.5 s smaller than node-a's, so its spans move back 3.5 s.
    assert_eq!(span_ts(&events, 100, "HcclMemcpyAsync"), 1_000_100.0);
    assert_eq!(span_ts(&events, 10_000_100, "HcclMemcpyAsync"), 1_500_100.0);
    assert_eq!(span_ts(&events, 200, "HcclMemcpyAsync"), 2_500_200.0);
    assert_eq!(span_ts(&events, 200, "aclrtMemcpyAsync"), 2_500_201.0);

    // All metadata is kept, with the merge recorded.
    let meta: Vec<&Value> = events.iter().filter(|e| e["name"] == "npushim").collect();
    assert_eq!(meta.len(), 3);
    assert_eq!(meta[1]["args"]["rank"], 1);
    assert_eq!(meta[1]["args"]["merge"]["ts_shift_us"], -3_500_000.0);
    assert_eq!(
        events.iter().filter(|e| e["name"] == "thread_name").count(),
        3
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| e["name"] == "npushim_stats")
            .count(),
        2
    );

    // The output is itself a trace the report reads.
    let output = tool(&["report", "--json", &out.display().to_string()]);
    let r = &json_lines(&output)[0];
    assert_eq!(r["files"][0]["complete"], true);
    assert_eq!(r["spans"], 6);
    assert_eq!(r["processes"].as_array().unwrap().len(), 3);
}

#[test]
fn merge_on_one_host_keeps_monotonic_timestamps() {
    let dir = scratch("merge-one-host");
    let out = dir.join("merged.json");
    let output = tool(&[
        "merge",
        "-o",
        &out.display().to_string(),
        &fixture_str("rank2.json"),
        &fixture_str("rank1.json"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let events = merged_events(&out);
    assert_eq!(span_ts(&events, 100, "HcclMemcpyAsync"), 5_000_100.0);
    assert_eq!(span_ts(&events, 200, "HcclMemcpyAsync"), 6_000_200.0);
    // The partial last line of the cut-off input is left out.
    assert_eq!(
        events
            .iter()
            .filter(|e| e["pid"] == 200 && e["ph"] == "X")
            .count(),
        2
    );
}

#[test]
fn merge_of_a_trace_without_metadata_still_works() {
    let dir = scratch("merge-no-meta");
    let out = dir.join("merged.json");
    let output = tool(&[
        "merge",
        "-o",
        &out.display().to_string(),
        &fixture_str("no-metadata.json"),
        &fixture_str("rank0.json"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stderr(&output).contains("no npushim metadata line"));
    let events = merged_events(&out);
    assert_eq!(
        track_names(&events),
        [
            (100, "rank 0 (pid 100, host node-a)".to_string()),
            (77, "rank ? (pid 77, host ?)".to_string()),
        ]
    );
}

// ---------------------------------------------------------------- errors

#[test]
fn missing_files_fail_with_one_line() {
    let missing = "/nonexistent/npushim-trace.json";
    assert_failure(
        &tool(&["report", missing]),
        "cannot open: no such file (/nonexistent",
    );
    let dir = scratch("missing");
    let out = dir.join("out.json");
    let output = tool(&["merge", "-o", &out.display().to_string(), missing]);
    assert_failure(&output, "cannot open: no such file");
    assert!(!out.exists());
}

#[test]
fn files_that_are_not_traces_are_rejected() {
    for name in ["not-a-trace.txt", "other-tool.json"] {
        let path = fixture_str(name);
        let output = tool(&["report", &path]);
        assert_failure(&output, "not an npushim trace");
        assert!(stderr(&output).contains(&format!("({path})")));
        let dir = scratch("not-a-trace");
        let out = dir.join("out.json");
        let output = tool(&["merge", "-o", &out.display().to_string(), &path]);
        assert_failure(&output, "not an npushim trace");
    }
    let dir = scratch("empty");
    let empty = dir.join("empty.json");
    fs::write(&empty, "").unwrap();
    assert_failure(
        &tool(&["report", &empty.display().to_string()]),
        "the file is empty",
    );
    assert_failure(
        &tool(&["report", &dir.display().to_string()]),
        "is a directory",
    );
}

#[test]
fn newer_formats_are_rejected() {
    let path = fixture_str("newer-format.json");
    assert_failure(&tool(&["report", &path]), "trace format 2 is newer");
    let dir = scratch("newer");
    let out = dir.join("out.json");
    let output = tool(&["merge", "-o", &out.display().to_string(), &path]);
    assert_failure(&output, "trace format 2 is newer");
}

#[test]
fn a_bad_file_among_good_ones_leaves_no_output() {
    let dir = scratch("merge-bad");
    let out = dir.join("out.json");
    let output = tool(&[
        "merge",
        "-o",
        &out.display().to_string(),
        &fixture_str("rank0.json"),
        &fixture_str("not-a-trace.txt"),
    ]);
    assert_failure(&output, "not an npushim trace");
    assert!(!out.exists());
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        0,
        "no temporary file left"
    );
}

#[test]
fn merge_refuses_to_overwrite_an_input() {
    let dir = scratch("merge-self");
    let input = dir.join("rank0.json");
    fs::copy(fixture("rank0.json"), &input).unwrap();
    let path = input.display().to_string();
    assert_failure(&tool(&["merge", "-o", &path, &path]), "also an input");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["report"][..],
        &["merge", "x.json"][..],
        &["merge", "-o", "out.json"][..],
        &["run"][..],
        &["run", "--seed", "notanumber", "--", "true"][..],
        &["frobnicate"][..],
    ] {
        let output = tool(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        assert!(!stderr(&output).contains("panicked"));
    }
    let output = tool(&["--help"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("report"));
}

#[test]
fn output_into_a_closed_pipe_is_not_an_error() {
    let mut child = Command::new(BIN)
        .args(["report", &fixture_str("report.json")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
}
