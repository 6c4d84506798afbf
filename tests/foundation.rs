//! The foundation (SPEC §1–3, §7, §8): exact ABI, resolution of the real functions, one
//! pipeline, pure pass-through, example programs unchanged under the shim.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use common::{
    Run, build, compile, ok, ptr_to_hex, repo_path, scratch, sim_log, single_trace, stderr, stdout,
};
use serde_json::Value;

#[test]
fn example_programs_behave_identically_with_and_without_the_shim() {
    for app in ["copy_pipeline", "ring_allgather"] {
        let dir = scratch(&format!("identical-{app}"));
        let plain = Run::plain(&build().bin(app), &dir).output();
        let shimmed = Run::shimmed(&build().bin(app), &dir).output();
        let disabled = Run::shimmed(&build().bin(app), &dir)
            .env("NPUSHIM_DISABLE", "1")
            .output();
        let expected = ok(&plain);
        assert!(expected.contains("OK"), "{expected}");
        for run in [&shimmed, &disabled] {
            assert_eq!(stdout(run), expected, "{app}");
            assert_eq!(run.status.code(), plain.status.code());
        }
        assert_eq!(stderr(&disabled), "", "{app}: a pass-through says nothing");
        // The shim is silent on a clean run, except for the `pageable` advice that
        // copy_pipeline's copies from pageable memory get on purpose.
        let err = stderr(&shimmed);
        for line in err.lines() {
            assert!(
                app == "copy_pipeline"
                    && (line.contains(": pageable [") || line.contains("rule pageable")),
                "{app}: unexpected line: {line}"
            );
        }
        // The default run left exactly one trace; the disabled one none.
        let trace = single_trace(&dir);
        assert!(trace.complete && trace.spans().count() > 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The fields of a trace span in the simulated runtime's log format, for comparison.
fn span_as_log(span: &Value) -> (String, Vec<(String, String)>) {
    let a = &span["args"];
    let s = |k: &str| a[k].as_str().unwrap().to_string();
    let n = |k: &str| a[k].to_string();
    let name = span["name"].as_str().unwrap().to_string();
    let fields = if name == "aclrtMemcpyAsync" {
        vec![
            ("dst".into(), s("dst")),
            ("destMax".into(), n("destMax")),
            ("src".into(), s("src")),
            ("count".into(), n("count")),
            ("kind".into(), common::enum_value(span, "kind").to_string()),
            ("stream".into(), s("stream")),
            ("ret".into(), n("ret")),
        ]
    } else {
        let hccl_kind = common::enum_value(span, "kind").to_string();
        let link = common::enum_value(span, "linkType").to_string();
        vec![
            ("dispatcher".into(), s("dispatcher")),
            ("dst".into(), s("dst")),
            ("destMax".into(), n("destMax")),
            ("src".into(), s("src")),
            ("count".into(), n("count")),
            ("kind".into(), hccl_kind),
            ("stream".into(), s("stream")),
            ("remoteUserRank".into(), n("remoteUserRank")),
            ("linkType".into(), link),
            ("ret".into(), n("ret")),
        ]
    };
    (name, fields)
}

#[test]
fn every_call_reaches_the_runtime_with_identical_arguments_and_result() {
    for app in ["copy_pipeline", "ring_allgather"] {
        let dir = scratch(&format!("args-{app}"));
        let log = dir.join("sim.log");
        ok(&Run::shimmed(&build().bin(app), &dir).sim_log(&log).output());
        let mut received: HashMap<(String, Vec<(String, String)>), i64> = HashMap::new();
        for (name, kv) in sim_log(&log) {
            let order: &[&str] = if name == "aclrtMemcpyAsync" {
                &["dst", "destMax", "src", "count", "kind", "stream", "ret"]
            } else {
                &[
                    "dispatcher",
                    "dst",
                    "destMax",
                    "src",
                    "count",
                    "kind",
                    "stream",
                    "remoteUserRank",
                    "linkType",
                    "ret",
                ]
            };
            let fields = order
                .iter()
                .map(|k| {
                    let v = &kv[*k];
                    let v = if ["dst", "src", "stream", "dispatcher"].contains(k) {
                        ptr_to_hex(v)
                    } else {
                        v.clone()
                    };
                    (k.to_string(), v)
                })
                .collect();
            *received.entry((name, fields)).or_default() += 1;
        }
        let trace = single_trace(&dir);
        let spans: Vec<&Value> = trace.copies().collect();
        assert_eq!(spans.len() as i64, received.values().sum::<i64>(), "{app}");
        for span in spans {
            let key = span_as_log(span);
            let n = received
                .get_mut(&key)
                .unwrap_or_else(|| panic!("{app}: the runtime never received {key:?}"));
            *n -= 1;
            assert!(*n >= 0, "{app}: {key:?} traced more often than received");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn the_library_exports_the_hooked_functions_and_the_control_api_only() {
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&build().shim)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut functions: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (_addr, kind, name) = (w.next()?, w.next()?, w.next()?);
            (kind == "T" || kind == "W" || kind == "i").then_some(name)
        })
        .collect();
    functions.sort();
    let mut expected: Vec<&str> = npushim::abi::types::Hook::ALL
        .iter()
        .map(|h| h.symbol())
        .chain([
            "npushim_faults_set",
            "npushim_flush",
            "npushim_instance_claim",
            "npushim_last_error",
            "npushim_seed",
            "npushim_version",
        ])
        // Handle lookups (SPEC §2.3): the trampolines exist where they are written.
        .chain(
            (cfg!(any(target_arch = "x86_64", target_arch = "aarch64")))
                .then_some(["dlsym", "dlvsym"])
                .into_iter()
                .flatten(),
        )
        .collect();
    expected.sort();
    assert_eq!(functions, expected);
}

/// The shim's own declarations of the hooked functions, generated from its hook table
/// (renamed `shim_*`), and the list of hooks for the checks.
fn shim_exports_header(dir: &Path) {
    use npushim::abi::types::{Hook, c_params};
    let mut text = String::from("#include <stddef.h>\n#include <stdint.h>\n");
    let mut each = String::from("#define NPUSHIM_EACH_HOOK(X)");
    for hook in Hook::ALL {
        let name = hook.symbol();
        text += &format!(
            "extern \"C\" int shim_{name}({});\n",
            c_params(hook.rust_params())
        );
        each += &format!(" X({name})");
    }
    text += &each;
    text.push('\n');
    assert!(
        text.contains(
            "int shim_aclrtMemcpyAsync(void *, size_t, const void *, size_t, int, void *);"
        )
    );
    std::fs::write(dir.join("npushim_exports.h"), text).unwrap();
}

#[test]
fn signatures_match_the_vendor_headers_in_c_and_cxx() {
    let dir = scratch("abi");
    shim_exports_header(&dir);
    let shim = build().shim.clone();
    let shim_dir = shim.parent().unwrap().to_str().unwrap().to_string();
    let inc = format!("-I{}", dir.display());
    let sim_lib = build().lib_dir().to_str().unwrap().to_string();
    let link = [
        inc.as_str(),
        "-L",
        &shim_dir,
        "-lnpushim",
        "-Wl,-rpath",
        &shim_dir,
        "-L",
        &sim_lib,
        "-lascendcl",
        "-lhccl_plf",
    ];
    for (src, exe, expect) in [
        ("tests/progs/abi_check.cpp", "abi_cxx", "abi ok npushim.h"),
        ("tests/progs/abi_check.c", "abi_c", "abi c ok 1"),
    ] {
        let out = dir.join(exe);
        compile(&repo_path(src), &out, &link);
        let run = Run::plain(&out, &dir)
            .env("LD_LIBRARY_PATH", build().lib_dir())
            .env("NPUSHIM_TRACE", "off")
            .output();
        assert_eq!(ok(&run).trim(), expect);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_runtime_gives_the_documented_codes_and_one_line_each() {
    let dir = scratch("no-vendor");
    let exe = dir.join("no_vendor");
    compile(&repo_path("tests/progs/no_vendor.c"), &exe, &["-ldl"]);
    let plain = Run::plain(&exe, &dir).output();
    assert_eq!(stdout(&plain), "symbols absent\n");
    let out = Run::shimmed(&exe, &dir).output();
    assert_eq!(ok(&out), "acl 200001 hccl 5\nacl 200001 hccl 5\n");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("npushim: cannot find the real "))
    );
    assert!(err.contains("ACL_ERROR_API_NOT_SUPPORT (200001)"), "{err}");
    assert!(err.contains("HCCL_E_NOT_SUPPORT (5)"), "{err}");
    assert!(
        err.contains("NPUSHIM_ACL_LIB") && err.contains("NPUSHIM_HCCL_LIB"),
        "{err}"
    );

    // Named explicitly: found. (The program's dispatcher handle is made up, which the real
    // HcclMemcpyAsync rejects with HCCL_E_PARA: proof that the call got there.)
    let lib = build().lib_dir();
    let out = Run::shimmed(&exe, &dir)
        .env("NPUSHIM_ACL_LIB", lib.join("libascendcl.so"))
        .env("NPUSHIM_HCCL_LIB", lib.join("libhccl_plf.so"))
        .env("LD_LIBRARY_PATH", &lib)
        .output();
    assert_eq!(ok(&out), "acl 0 hccl 1\nacl 0 hccl 1\n");
    assert_eq!(stderr(&out), "");

    // Under an Ascend install root ($ASCEND_HOME_PATH/lib64): found.
    let home = dir.join("Ascend");
    std::fs::create_dir_all(home.join("lib64")).unwrap();
    for so in ["libascendcl.so", "libhccl_plf.so"] {
        std::os::unix::fs::symlink(lib.join(so), home.join("lib64").join(so)).unwrap();
    }
    let out = Run::shimmed(&exe, &dir)
        .env("ASCEND_HOME_PATH", &home)
        .env("LD_LIBRARY_PATH", &lib)
        .output();
    assert_eq!(ok(&out), "acl 0 hccl 1\nacl 0 hccl 1\n");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn disable_is_a_pure_pass_through() {
    let dir = scratch("disable");
    let log_plain = dir.join("plain.log");
    let log_disabled = dir.join("disabled.log");
    let plain = Run::plain(&build().bin("bad_calls"), &dir)
        .sim_log(&log_plain)
        .output();
    let disabled = Run::shimmed(&build().bin("bad_calls"), &dir)
        .env("NPUSHIM_DISABLE", "1")
        .env("NPUSHIM_CHECK", "strict")
        .env("NPUSHIM_FAULTS", "*=return")
        .sim_log(&log_disabled)
        .output();
    assert_eq!(stdout(&disabled), ok(&plain));
    assert_eq!(stderr(&disabled), "");
    // The same calls, in the same order, reached the runtime (addresses aside).
    let shape = |p: &Path| -> Vec<String> {
        sim_log(p)
            .into_iter()
            .map(|(name, kv)| format!("{name} {} {} {}", kv["count"], kv["kind"], kv["ret"]))
            .collect()
    };
    assert_eq!(shape(&log_disabled), shape(&log_plain));
    assert!(!shape(&log_plain).is_empty());
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files.len(), 2, "no trace when disabled: {files:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_environment_values_cost_one_line_each_and_the_defaults() {
    let dir = scratch("bad-env");
    let out = Run::shimmed(&build().bin("copy_pipeline"), &dir)
        .env("NPUSHIM_CHECK", "warn,-pageable")
        .env("NPUSHIM_DISABLE", "maybe")
        .env("NPUSHIM_LOG", "loud")
        .env("NPUSHIM_SEED", "twelve")
        .env("NPUSHIM_TRACE_SINK", "perfetto")
        .output();
    let plain = Run::plain(&build().bin("copy_pipeline"), &dir).output();
    assert_eq!(ok(&out), ok(&plain));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 4, "{err}");
    for (line, var) in lines.iter().zip([
        "NPUSHIM_DISABLE",
        "NPUSHIM_LOG",
        "NPUSHIM_TRACE_SINK",
        "NPUSHIM_SEED",
    ]) {
        assert!(line.starts_with(&format!("npushim: {var}=")), "{line}");
    }
    // Defaults: enabled and traced.
    assert!(single_trace(&dir).complete);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_simulated_runtime_passes_its_own_tests() {
    let status = Command::new("make")
        .args(["-s", "-C"])
        .arg(repo_path("tests"))
        .arg(format!("OUT={}", build().out.display()))
        .arg("check-sim")
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn nested_depth_is_per_thread_and_chunked_hccl_copies_nest_every_chunk() {
    let dir = scratch("chunks");
    let log = dir.join("sim.log");
    let out = Run::shimmed(&build().bin("ring_allgather"), &dir)
        .env("NPUSIM_HCCL_MAX_CHUNK", "100000")
        .sim_log(&log)
        .output();
    ok(&out);
    let trace = single_trace(&dir);
    let hccl = trace.spans_named("HcclMemcpyAsync").count();
    let nested: Vec<&Value> = trace
        .spans_named("aclrtMemcpyAsync")
        .filter(|e| e["args"]["depth"] == 1)
        .collect();
    // 256 KiB per copy in chunks of at most 100,000 bytes: 3 nested calls each, every one
    // passed the full destMax.
    assert_eq!(nested.len(), 3 * hccl);
    for n in &nested {
        assert!(n["args"]["count"].as_u64().unwrap() <= 100_000);
    }
    let top_level_acl = trace
        .spans_named("aclrtMemcpyAsync")
        .filter(|e| e["args"].get("depth").is_none())
        .count();
    let received = sim_log(&log)
        .iter()
        .filter(|(n, _)| n == "aclrtMemcpyAsync")
        .count();
    assert_eq!(received, top_level_acl + nested.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A hooked ACL function whose real implementation calls another hooked function through
/// the PLT (the benchmark's no-op runtime builds `aclrtMemcpy` on `aclrtMemcpyAsync`): the
/// inner call is depth 1, inside its parent's span, from the process's very first call on,
/// with no HCCL call ever made; the outer one is top-level. Traced, checked, and with the
/// memory map both on and off (the routes differ).
#[test]
fn depth_is_tracked_from_the_first_call_for_acl_calls_nested_in_acl_calls() {
    let dir = scratch("depth-first-call");
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
    for memmap in ["on", "off"] {
        let run_dir = dir.join(memmap);
        std::fs::create_dir_all(&run_dir).unwrap();
        let out = Run::shimmed(&harness, &run_dir)
            .env("NPUSHIM_MEMMAP", memmap)
            .args(["--fn", "memcpy", "--calls", "5", "--warmup", "0"])
            .output();
        ok(&out);
        assert_eq!(stderr(&out), "", "memmap={memmap}");
        let trace = single_trace(&run_dir);
        let outer: Vec<&Value> = trace.spans_named("aclrtMemcpy").collect();
        let inner: Vec<&Value> = trace.spans_named("aclrtMemcpyAsync").collect();
        assert_eq!(outer.len(), 5, "memmap={memmap}");
        assert_eq!(inner.len(), 5, "memmap={memmap}");
        let ts = |e: &Value| e["ts"].as_f64().unwrap();
        let end = |e: &Value| ts(e) + e["dur"].as_f64().unwrap();
        for (i, (o, n)) in outer.iter().zip(&inner).enumerate() {
            assert!(o["args"].get("depth").is_none(), "call {i}: {o}");
            assert_eq!(n["args"]["depth"], 1, "call {i} (memmap={memmap}): {n}");
            // ts and dur are each printed to the nanosecond: allow one of rounding.
            assert!(
                ts(n) >= ts(o) && end(n) <= end(o) + 0.001,
                "call {i}: {n} inside {o}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
