//! The library's modules import one another in one direction only (STYLE.md, "Arrows point
//! down only"): this test reads every source file of the library, builds the graph of its
//! `crate::` / `super::` imports (the `abi` boundary split into its files, `trace` taken as
//! one module), and fails on any cycle, naming it. It also pins the edges the design
//! forbids outright: the trace and the resolver never reach into the process state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The graph node a file belongs to.
fn node_of(rel: &Path) -> Option<String> {
    let parts: Vec<String> = rel
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.as_slice() {
        [lib] if lib == "lib" => None,
        [bin, ..] if bin == "bin" => None,
        [abi, file] if abi == "abi" && file != "mod" => Some(format!("abi::{file}")),
        [abi, _] if abi == "abi" => None,
        [top, ..] => Some(top.clone()),
        [] => None,
    }
}

/// The node an import path `a::b::…` (after `crate::`) names.
fn target_of(path: &str) -> String {
    let mut it = path.split("::");
    let first = it.next().unwrap_or_default();
    if first == "abi" {
        match it.next() {
            Some(second) if !second.is_empty() => format!("abi::{second}"),
            _ => "abi".to_string(),
        }
    } else {
        first.to_string()
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every identifier path that follows `prefix` in `text` (`crate::trace::ring` → `trace::ring`).
fn paths_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(rest.len());
            rest[..end].trim_end_matches(':')
        })
        .filter(|p| !p.is_empty())
        .collect()
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let Some(node) = node_of(rel) else { continue };
        let text = std::fs::read_to_string(&file).unwrap();
        // Only the library's code: not its unit tests, not its comments.
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let code = code.as_str();
        let mut targets: Vec<String> = paths_after(code, "crate::")
            .into_iter()
            .map(target_of)
            .collect();
        if node.starts_with("abi::") {
            targets.extend(
                paths_after(code, "super::")
                    .into_iter()
                    .map(|p| target_of(&format!("abi::{p}"))),
            );
        }
        let set = edges.entry(node.clone()).or_default();
        for t in targets {
            if t != node && t != "abi" {
                set.insert(t);
            }
        }
    }
    edges
}

/// A cycle through `node`, if there is one (depth-first search).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(c) = visit(node, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let edges = graph();
    assert!(edges.contains_key("intercept") && edges.contains_key("abi::exports"));
    if let Some(cycle) = find_cycle(&edges) {
        panic!("import cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_trace_and_the_resolver_never_reach_into_the_process_state() {
    let edges = graph();
    for low in [
        "trace",
        "real",
        "check",
        "fault",
        "decimal",
        "words",
        "memmap",
        "config",
        "abi::types",
    ] {
        let deps = edges.get(low).cloned().unwrap_or_default();
        for high in ["runtime", "intercept", "abi::exports", "abi::control"] {
            assert!(!deps.contains(high), "{low} imports {high}");
        }
    }
}

/// The pure modules (STYLE.md: "config, check, fault/ pure → call") and the leaves import
/// only the vendor types and the leaves; `fault` is one node however many files it has.
/// `abi/codes.rs` imports nothing at all: the command-line tool compiles it too.
#[test]
fn the_pure_modules_and_the_leaves_stay_pure() {
    let edges = graph();
    for (module, allowed) in [
        ("fault", &["abi::types", "decimal", "words"][..]),
        ("decimal", &[][..]),
        ("words", &[][..]),
        // Compiled into the command-line tool as well, which has no crate paths to offer.
        ("abi::codes", &[][..]),
    ] {
        let deps = edges
            .get(module)
            .unwrap_or_else(|| panic!("no module {module}"));
        for dep in deps {
            assert!(
                allowed.contains(&dep.as_str()),
                "{module} imports {dep}; it may import only {allowed:?}"
            );
        }
    }
    // The fault module is split by job; every part is one node.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for part in ["mod", "parse", "text", "draw"] {
        let file = src.join("fault").join(format!("{part}.rs"));
        assert_eq!(
            node_of(file.strip_prefix(&src).unwrap()).as_deref(),
            Some("fault")
        );
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&edges), None);
    edges.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}
