//! Rendering for `npushim report`: the aggregates as text tables or as one JSON object with
//! the same content (its shape is documented in the README, "`npushim report`"). Nothing
//! here reads files or decides what is summed; it only lays out what [`super::aggregate`]
//! kept, and never shows a number the aggregates do not support (no bytes for calls that
//! move none, no rate for asynchronous calls).

use std::fmt::Write as _;

use serde_json::{Map, Value, json};

use super::aggregate::{Api, LeakRecord, PERCENTILE_PRECISION, Row, TOP_N};
use super::{Process, Report};
use crate::codes;
use crate::functions::Class;
use crate::reader::{Ending, describe_ending};

/// The label of the one rate the report computes from host time.
const SYNC_RATE: &str = "host GB/s (sync)";

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn code_name(api: &Api, ret: i64) -> Option<&'static str> {
    if api.name().starts_with("Hccl") {
        codes::hccl_name(ret)
    } else {
        codes::acl_name(ret)
    }
}

/// A row's fields in the JSON: counts by outcome, `ok` bytes, host time, and the one rate.
fn row_json(row: &Row) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("calls".into(), json!(row.calls));
    map.insert("ok".into(), json!(row.ok));
    map.insert("failed".into(), json!(row.failed));
    map.insert("injected".into(), json!(row.injected));
    map.insert("bytes".into(), json!(row.bytes));
    map.insert("total_us".into(), json!(round3(row.total_us)));
    map.insert("mean_us".into(), json!(round3(row.mean_us())));
    map.insert(
        "p50_us".into(),
        json!(round3(row.histogram.percentile_us(50.0))),
    );
    map.insert(
        "p99_us".into(),
        json!(round3(row.histogram.percentile_us(99.0))),
    );
    map.insert("max_us".into(), json!(round3(row.histogram.max_us())));
    map.insert("sync_calls".into(), json!(row.sync_calls));
    map.insert(
        "host_gb_per_s_sync".into(),
        json!(row.host_gb_per_s_sync().map(round3)),
    );
    map
}

fn with(mut map: Map<String, Value>, fields: &[(&str, Value)]) -> Value {
    for (key, value) in fields {
        map.insert((*key).to_string(), value.clone());
    }
    Value::Object(map)
}

impl Report {
    /// The report as one JSON object.
    pub fn to_json(&self) -> Value {
        let agg = &self.aggregates;
        let files: Vec<Value> = self
            .sources
            .iter()
            .map(|s| {
                json!({
                    "path": s.path,
                    "read": describe_ending(s.ending, s.events),
                    "complete": s.ending == Ending::Complete,
                    "last_line_partial": s.ending == Ending::CutOff { partial_last_line: true },
                    "events": s.events,
                    "spans": s.spans,
                    "has_npushim_metadata": s.has_metadata,
                    "stats_events": s.stats_events,
                    "dropped": s.dropped,
                    "malformed": s.malformed,
                    "first_malformed": s.first_malformed.as_ref().map(|m| json!({
                        "line": m.line, "field": m.field, "value": m.value,
                        "expected": m.expected,
                    })),
                })
            })
            .collect();
        let processes: Vec<Value> = self
            .processes
            .iter()
            .map(|p| &p.info)
            .map(|p| {
                json!({
                    "program": p.program, "pid": p.pid, "rank": p.rank, "host": p.host,
                    "version": p.version, "seed": p.seed, "check": p.check, "faults": p.faults,
                })
            })
            .collect();
        let by_api: Vec<Value> = agg
            .by_api
            .map
            .iter()
            .map(|(api, row)| {
                with(
                    row_json(row),
                    &[
                        ("api", json!(api.name())),
                        ("class", json!(api.class().name())),
                    ],
                )
            })
            .collect();
        let by_kind: Vec<Value> = agg
            .by_kind
            .map
            .iter()
            .map(|((api, kind, ran_sync), row)| {
                with(
                    row_json(row),
                    &[
                        ("api", json!(api.name())),
                        ("class", json!(api.class().name())),
                        ("kind", json!(kind)),
                        ("ran_sync", json!(ran_sync)),
                    ],
                )
            })
            .collect();
        let waits: Vec<Value> = agg
            .by_api
            .map
            .keys()
            .filter(|api| api.class() == Class::Wait)
            .flat_map(|api| {
                agg.waits_of(api).into_iter().map(move |(on, row)| {
                    with(
                        row_json(row),
                        &[("api", json!(api.name())), ("waited_on", json!(on))],
                    )
                })
            })
            .collect();
        let errors: Vec<Value> = agg
            .errors
            .map
            .iter()
            .map(|((api, ret), calls)| {
                json!({"api": api.name(), "ret": ret, "name": code_name(api, *ret), "calls": calls})
            })
            .collect();
        let violations: Vec<Value> = agg
            .violations
            .map
            .iter()
            .map(|((api, rule), calls)| json!({"api": api.name(), "rule": rule, "calls": calls}))
            .collect();
        let faults: Vec<Value> = agg
            .faults
            .map
            .iter()
            .map(|((api, action), calls)| json!({"api": api.name(), "action": action, "calls": calls}))
            .collect();
        let nesting: Vec<Value> = agg
            .nesting
            .iter()
            .map(|(api, (top, nested))| json!({"api": api.name(), "top_level": top, "nested": nested}))
            .collect();
        let slowest: Vec<Value> = agg
            .slowest_sorted()
            .iter()
            .map(|s| {
                json!({
                    "ts_us": s.ts_us, "pid": s.pid, "tid": s.tid, "api": s.api, "kind": s.kind,
                    "count": s.bytes, "dur_us": s.dur_us, "ret": s.ret,
                })
            })
            .collect();
        let other = |row: &Row| (row.calls > 0).then(|| Value::Object(row_json(row)));
        json!({
            "files": files,
            "processes": processes,
            "processes_omitted": self.processes_omitted,
            "spans": agg.spans,
            "device_spans": agg.device_spans,
            "device": agg.device.to_json(),
            "dropped": self.sources.iter().map(|s| s.dropped).sum::<u64>(),
            "malformed": self.sources.iter().map(|s| s.malformed).sum::<u64>(),
            "by_api": by_api,
            "by_api_other": other(&agg.by_api.other),
            "by_kind": by_kind,
            "by_kind_other": other(&agg.by_kind.other),
            "waits": waits,
            "waits_other": other(&agg.waits.other),
            "errors": errors,
            "errors_other": agg.errors.other,
            "violations": violations,
            "faults": faults,
            "nesting": nesting,
            "slowest": slowest,
            "memory_types": self.memory_types_json(),
            "pageable_blocked": self.pageable_json(),
            "leaks": self.leaks_json(),
            "percentile_precision": PERCENTILE_PRECISION,
            "warnings": self.warnings,
        })
    }

    /// The report as text tables.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.header(&mut out);
        let agg = &self.aggregates;

        let _ = writeln!(
            out,
            "\nCalls by function and kind (host time: inside the call, every call)"
        );
        let mut table = Table::new(&[
            ("API", Left),
            ("kind", Left),
            ("calls", Right),
            ("ok", Right),
            ("failed", Right),
            ("injected", Right),
            ("bytes", Right),
            ("total µs", Right),
            ("mean µs", Right),
            ("p50 µs", Right),
            ("p99 µs", Right),
            (SYNC_RATE, Right),
        ]);
        for (api, api_row) in &agg.by_api.map {
            let kinds: Vec<_> = agg
                .by_kind
                .map
                .range((api.clone(), None, false)..)
                .take_while(|((a, _, _), _)| a == api)
                .collect();
            // A function without kinds (a set, a wait) has one row: no total to repeat.
            let single = kinds.len() == 1 && kinds[0].0.1.is_none();
            for ((_, kind, ran_sync), row) in &kinds {
                let kind = kind.as_deref().unwrap_or("-");
                let kind = if *ran_sync {
                    format!("{kind} (ran sync)")
                } else {
                    kind.to_string()
                };
                table.push(row_cells(api.name(), &kind, row));
            }
            if !single {
                table.push(row_cells(api.name(), "(all)", api_row));
            }
        }
        if agg.by_api.other.calls > 0 {
            table.push(row_cells("(other)", "", &agg.by_api.other));
        }
        table.render(&mut out);

        let _ = writeln!(
            out,
            "\nHost waits (time the host blocked, by function and what it waited on)"
        );
        let mut table = Table::new(&[
            ("API", Left),
            ("waited on", Left),
            ("calls", Right),
            ("failed", Right),
            ("injected", Right),
            ("total µs", Right),
            ("p50 µs", Right),
            ("p99 µs", Right),
            ("longest µs", Right),
        ]);
        for (api, api_row) in agg
            .by_api
            .map
            .iter()
            .filter(|(a, _)| a.class() == Class::Wait)
        {
            let rows = agg.waits_of(api);
            let single = rows.len() == 1;
            for (on, row) in rows {
                table.push(wait_cells(api.name(), on, row));
            }
            if !single {
                table.push(wait_cells(api.name(), "(all)", api_row));
            }
        }
        if agg.waits.other.calls > 0 {
            table.push(wait_cells("(other)", "", &agg.waits.other));
        }
        table.render(&mut out);

        let _ = writeln!(
            out,
            "\nTop-level and nested calls (nested: made inside another intercepted call, depth >= 1)"
        );
        let mut table = Table::new(&[("API", Left), ("top-level", Right), ("nested", Right)]);
        for (api, (top, nested)) in &agg.nesting {
            table.push(vec![
                api.name().to_string(),
                top.to_string(),
                nested.to_string(),
            ]);
        }
        table.render(&mut out);

        let _ = writeln!(out, "\nErrors by return code");
        let mut table = Table::new(&[
            ("API", Left),
            ("ret", Right),
            ("name", Left),
            ("calls", Right),
        ]);
        for ((api, ret), calls) in &agg.errors.map {
            table.push(vec![
                api.name().to_string(),
                ret.to_string(),
                code_name(api, *ret).unwrap_or("?").to_string(),
                calls.to_string(),
            ]);
        }
        push_other(&mut table, agg.errors.other);
        table.render(&mut out);

        let _ = writeln!(out, "\nCheck violations by rule");
        let mut table = Table::new(&[("API", Left), ("rule", Left), ("calls", Right)]);
        for ((api, rule), calls) in &agg.violations.map {
            table.push(vec![
                api.name().to_string(),
                rule.clone(),
                calls.to_string(),
            ]);
        }
        push_other(&mut table, agg.violations.other);
        table.render(&mut out);

        let _ = writeln!(out, "\nInjected faults by action");
        let mut table = Table::new(&[("API", Left), ("action", Left), ("calls", Right)]);
        for ((api, action), calls) in &agg.faults.map {
            table.push(vec![
                api.name().to_string(),
                action.clone(),
                calls.to_string(),
            ]);
        }
        push_other(&mut table, agg.faults.other);
        table.render(&mut out);

        let _ = writeln!(out, "\nSlowest {TOP_N} calls");
        let mut table = Table::new(&[
            ("ts µs", Right),
            ("pid", Right),
            ("tid", Right),
            ("API", Left),
            ("kind", Left),
            ("count", Right),
            ("dur µs", Right),
            ("ret", Right),
        ]);
        for s in agg.slowest_sorted() {
            table.push(vec![
                format!("{:.3}", s.ts_us),
                s.pid.to_string(),
                s.tid.to_string(),
                s.api.clone(),
                s.kind.clone().unwrap_or_else(|| "-".to_string()),
                s.bytes.map_or("-".to_string(), |b| b.to_string()),
                format!("{:.3}", s.dur_us),
                s.ret.to_string(),
            ]);
        }
        table.render(&mut out);
        self.memory_types_text(&mut out);
        self.pageable_text(&mut out);
        self.leaks_text(&mut out);
        if agg.device_spans > 0 {
            let _ = writeln!(
                out,
                "\n{} device-timeline spans are device time, not host calls: not counted above.",
                agg.device_spans
            );
        }
        agg.device.render(&mut out);
        let _ = writeln!(
            out,
            "\nok: forwarded and returned 0; failed: returned an error; injected: a fault took \
             the call's place.\nbytes: ok calls only (2D copies: width × height). \
             {SYNC_RATE}: bytes / host time, for rows of synchronous copies only \
             (aclrtMemcpy, aclrtMemcpy2d, and \"ran sync\": copies the runtime ran \
             synchronously); an asynchronous call returns at submission, so its host time \
             gives no rate.\n\
             p50/p99: {PERCENTILE_PRECISION}."
        );
        out
    }

    /// Per file: how it was read; per process: what ran.
    fn header(&self, out: &mut String) {
        for source in &self.sources {
            let _ = writeln!(out, "npushim report: {}", source.path);
            let read = describe_ending(source.ending, source.events);
            let stats = match source.stats_events {
                Some(events) => format!("shim wrote {events} spans, dropped {}", source.dropped),
                None => "no npushim_stats line (written at exit)".to_string(),
            };
            let _ = writeln!(out, "  read: {read}; {stats}");
            if source.dropped > 0 {
                let _ = writeln!(
                    out,
                    "  warning: the shim dropped {} spans; the numbers below miss them",
                    source.dropped
                );
            }
            if !source.has_metadata {
                let _ = writeln!(
                    out,
                    "  warning: no npushim metadata line; spans read anyway"
                );
            }
            if let Some(first) = &source.first_malformed {
                let _ = writeln!(
                    out,
                    "  warning: {} events skipped as malformed, not counted below (first: {})",
                    source.malformed,
                    first.describe()
                );
            }
        }
        for p in self.processes.iter().map(|p| &p.info) {
            let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "?".to_string());
            let number = |v: Option<i64>| v.map_or("?".to_string(), |n| n.to_string());
            let _ = writeln!(
                out,
                "  process: {} (pid {}, rank {}) on {}, npushim {}, seed {}, check {}, faults {:?}",
                text(&p.program),
                number(p.pid),
                number(p.rank),
                text(&p.host),
                text(&p.version),
                p.seed.map_or("?".to_string(), |s| s.to_string()),
                text(&p.check),
                p.faults.clone().unwrap_or_default(),
            );
        }
        if self.processes_omitted > 0 {
            let _ = writeln!(out, "  … and {} more processes", self.processes_omitted);
        }
    }
}

/// Where the memory types of the copies come from, for the absent-data lines.
const NO_MEMORY_TYPES: &str = "no srcMem/dstMem in this trace's copies (traced with \
     NPUSHIM_MEMMAP=off, or by an npushim without the memory map)";

/// Why a process has no leak record.
const LEAKS_NOT_RECORDED: &str = "not recorded (no npushim_leaks event: it is written at \
     exit when the memory map is on; absent with NPUSHIM_MEMMAP=off, from an npushim \
     without the memory map, or when the process did not exit normally)";

/// A memory type for display: a set has no source.
fn mem_text(mem: &Option<String>) -> &str {
    mem.as_deref().unwrap_or("-")
}

impl Report {
    /// The processes whose leaks the report shows: every process with metadata, then any
    /// leak record whose process has none, each with its label and record.
    fn leak_processes(&self) -> Vec<(String, Option<&Process>, Option<&LeakRecord>)> {
        let mut out = Vec::new();
        for p in &self.processes {
            let label = process_label(p);
            out.push((label, Some(p), self.leaks.get(&(p.source, p.event_pid))));
        }
        for (key, record) in &self.leaks {
            if !self
                .processes
                .iter()
                .any(|p| (p.source, p.event_pid) == *key)
            {
                let label = format!(
                    "pid {}",
                    key.1.map_or("?".to_string(), |pid| pid.to_string())
                );
                out.push((label, None, Some(record)));
            }
        }
        out
    }

    fn memory_types_json(&self) -> Value {
        let memory = &self.aggregates.memory;
        let rows: Vec<Value> = memory
            .rows
            .iter()
            .map(|((api, src, dst), row)| {
                json!({
                    "api": api.name(), "class": api.class().name(), "src_mem": src,
                    "dst_mem": dst, "calls": row.calls, "ok": row.ok, "bytes": row.bytes,
                    "ran_sync": row.ran_sync,
                })
            })
            .collect();
        let other = &memory.other;
        json!({
            "copies": memory.copies,
            "with_memory": memory.with_memory(),
            "without_memory": memory.without_memory,
            "rows": rows,
            "other": (other.calls > 0).then(|| json!({
                "calls": other.calls, "ok": other.ok, "bytes": other.bytes,
                "ran_sync": other.ran_sync,
            })),
        })
    }

    fn pageable_json(&self) -> Value {
        let agg = &self.aggregates;
        let blocked = &agg.pageable;
        let buffers: Vec<Value> = blocked
            .top_buffers()
            .into_iter()
            .map(|((pid, address, side, api), row)| {
                json!({
                    "pid": pid, "address": address, "side": side.name(), "api": api.name(),
                    "calls": row.calls, "bytes": row.bytes, "total_us": round3(row.total_us),
                })
            })
            .collect();
        let shown: u64 = blocked.top_buffers().iter().map(|(_, r)| r.calls).sum();
        let listed = blocked.buffers.values().map(|r| r.calls).sum::<u64>();
        json!({
            "data": agg.memory.with_memory() > 0 || blocked.calls + blocked.not_ok > 0,
            "calls": blocked.calls,
            "bytes": blocked.bytes,
            "total_us": round3(blocked.total_us),
            "not_ok": blocked.not_ok,
            "buffers": buffers,
            "buffers_not_shown": json!({
                "buffers": blocked.buffers.len().saturating_sub(TOP_N),
                "calls": listed - shown + blocked.other.calls,
            }),
        })
    }

    fn leaks_json(&self) -> Value {
        let list: Vec<Value> = self
            .leak_processes()
            .into_iter()
            .map(|(label, process, record)| {
                let locations: Option<Vec<Value>> = record.map(|r| {
                    r.locations
                        .iter()
                        .map(|l| {
                            json!({
                                "location": l.location, "count": l.count, "bytes": l.bytes,
                                "largest": {
                                    "ptr": l.largest_ptr, "size": l.largest_size,
                                    "call": l.largest_call, "tid": l.largest_tid,
                                },
                            })
                        })
                        .collect()
                });
                json!({
                    "process": label,
                    "file": process.map(|p| &self.sources[p.source].path),
                    "pid": process.and_then(|p| p.info.pid),
                    "rank": process.and_then(|p| p.info.rank),
                    "recorded": record.is_some(),
                    "untracked": record.map(|r| r.untracked),
                    "locations": locations,
                })
            })
            .collect();
        Value::Array(list)
    }

    fn memory_types_text(&self, out: &mut String) {
        let memory = &self.aggregates.memory;
        let _ = writeln!(
            out,
            "\nCopies by memory type (srcMem → dstMem, from the memory map; bytes: ok calls only)"
        );
        if memory.copies == 0 {
            out.push_str("  (no copies)\n");
            return;
        }
        if memory.with_memory() == 0 {
            let _ = writeln!(out, "  no memory types: {NO_MEMORY_TYPES}");
            return;
        }
        let mut table = Table::new(&[
            ("API", Left),
            ("src → dst", Left),
            ("calls", Right),
            ("ok", Right),
            ("bytes", Right),
            ("ran sync (pageable)", Right),
        ]);
        for ((api, src, dst), row) in &memory.rows {
            table.push(vec![
                api.name().to_string(),
                format!("{} → {}", mem_text(src), mem_text(dst)),
                row.calls.to_string(),
                row.ok.to_string(),
                row.bytes.to_string(),
                row.ran_sync.to_string(),
            ]);
        }
        if memory.other.calls > 0 {
            let o = &memory.other;
            table.push(vec![
                "(other)".to_string(),
                String::new(),
                o.calls.to_string(),
                o.ok.to_string(),
                o.bytes.to_string(),
                o.ran_sync.to_string(),
            ]);
        }
        table.render(out);
        if memory.without_memory > 0 {
            let _ = writeln!(
                out,
                "  {} copies without srcMem/dstMem are not in this table",
                memory.without_memory
            );
        }
    }

    fn pageable_text(&self, out: &mut String) {
        let agg = &self.aggregates;
        let blocked = &agg.pageable;
        let _ = writeln!(
            out,
            "\nHost blocked in pageable copies (asynchronous copies the runtime ran synchronously)"
        );
        if blocked.calls + blocked.not_ok == 0 {
            if agg.memory.with_memory() == 0 {
                let _ = writeln!(out, "  no data: {NO_MEMORY_TYPES}");
            } else {
                out.push_str(
                    "  none: no asynchronous copy ran synchronously because of pageable memory\n",
                );
            }
            return;
        }
        let _ = writeln!(
            out,
            "  {} ok {}, {} bytes, {:.3} µs of host time blocked",
            blocked.calls,
            plural(blocked.calls, "copy", "copies"),
            blocked.bytes,
            blocked.total_us
        );
        if blocked.not_ok > 0 {
            let _ = writeln!(
                out,
                "  {} more {} marked synchronous but failed or {} stopped by a fault (not counted)",
                blocked.not_ok,
                plural(blocked.not_ok, "copy was", "copies were"),
                plural(blocked.not_ok, "was", "were"),
            );
        }
        if blocked.calls == 0 {
            return;
        }
        let _ = writeln!(
            out,
            "  top host buffers by bytes (pin them: aclrtMallocHost, or aclrtHostRegister)"
        );
        let mut table = Table::new(&[
            ("pid", Right),
            ("host buffer", Left),
            ("side", Left),
            ("API", Left),
            ("calls", Right),
            ("bytes", Right),
            ("total µs", Right),
        ]);
        for ((pid, address, side, api), row) in blocked.top_buffers() {
            table.push(vec![
                pid.to_string(),
                address.clone(),
                side.name().to_string(),
                api.name().to_string(),
                row.calls.to_string(),
                row.bytes.to_string(),
                format!("{:.3}", row.total_us),
            ]);
        }
        table.render(out);
        let more = blocked.buffers.len().saturating_sub(TOP_N);
        if more > 0 || blocked.other.calls > 0 {
            let _ = writeln!(
                out,
                "  … {} more buffers{}",
                more,
                if blocked.other.calls > 0 {
                    format!(" and {} calls beyond the buffers kept", blocked.other.calls)
                } else {
                    String::new()
                }
            );
        }
    }

    fn leaks_text(&self, out: &mut String) {
        let _ = writeln!(out, "\nMemory never freed (npushim_leaks, written at exit)");
        let processes = self.leak_processes();
        if processes.iter().all(|(_, _, r)| r.is_none()) {
            let _ = writeln!(out, "  {LEAKS_NOT_RECORDED}");
            return;
        }
        let mut table = Table::new(&[
            ("process", Left),
            ("location", Left),
            ("count", Right),
            ("bytes", Right),
            ("largest", Right),
            ("at", Left),
            ("allocated by", Left),
        ]);
        let mut notes = Vec::new();
        for (label, _, record) in &processes {
            match record {
                None => notes.push(format!("  {label}: {LEAKS_NOT_RECORDED}")),
                Some(r) if r.locations.is_empty() => {
                    notes.push(format!("  {label}: nothing left allocated"))
                }
                Some(r) => {
                    for l in &r.locations {
                        table.push(vec![
                            label.clone(),
                            l.location.clone(),
                            l.count.to_string(),
                            l.bytes.to_string(),
                            l.largest_size.to_string(),
                            l.largest_ptr.clone(),
                            format!("{} (thread {})", l.largest_call, l.largest_tid),
                        ]);
                    }
                }
            }
            if let Some(r) = record.filter(|r| r.untracked > 0) {
                notes.push(format!(
                    "  {label}: {} {} not tracked (the memory map was full): leaks among \
                     them are missing here",
                    r.untracked,
                    plural(r.untracked, "allocation was", "allocations were")
                ));
            }
        }
        if !table.rows.is_empty() {
            table.render(out);
        }
        for note in notes {
            let _ = writeln!(out, "{note}");
        }
    }
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

/// `program (pid P, rank R)`, as the trace names the process.
fn process_label(p: &Process) -> String {
    let info = &p.info;
    let number = |v: Option<i64>| v.map_or("?".to_string(), |n| n.to_string());
    let mut label = format!(
        "{} (pid {}, rank {})",
        info.program.as_deref().unwrap_or("?"),
        number(info.pid),
        number(info.rank)
    );
    if p.event_pid.is_some() && p.event_pid != info.pid {
        label.pop();
        let _ = write!(label, ", shown as pid {})", number(p.event_pid));
    }
    label
}

fn row_cells(api: &str, kind: &str, row: &Row) -> Vec<String> {
    vec![
        api.to_string(),
        kind.to_string(),
        row.calls.to_string(),
        row.ok.to_string(),
        row.failed.to_string(),
        row.injected.to_string(),
        row.bytes.map_or("-".to_string(), |b| b.to_string()),
        format!("{:.3}", row.total_us),
        format!("{:.3}", row.mean_us()),
        format!("{:.3}", row.histogram.percentile_us(50.0)),
        format!("{:.3}", row.histogram.percentile_us(99.0)),
        row.host_gb_per_s_sync()
            .map_or("-".to_string(), |r| format!("{r:.3}")),
    ]
}

fn wait_cells(api: &str, on: &str, row: &Row) -> Vec<String> {
    vec![
        api.to_string(),
        on.to_string(),
        row.calls.to_string(),
        row.failed.to_string(),
        row.injected.to_string(),
        format!("{:.3}", row.total_us),
        format!("{:.3}", row.histogram.percentile_us(50.0)),
        format!("{:.3}", row.histogram.percentile_us(99.0)),
        format!("{:.3}", row.histogram.max_us()),
    ]
}

/// Adds the `(other)` row of a capped count table.
fn push_other(table: &mut Table, other: u64) {
    if other > 0 {
        let mut cells = vec!["(other)".to_string(); table.headers.len() - 1];
        cells.push(other.to_string());
        table.push(cells);
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Align {
    Left,
    Right,
}
use Align::{Left, Right};

/// A text table with aligned columns, indented by two spaces.
struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(columns: &[(&str, Align)]) -> Table {
        Table {
            headers: columns.iter().map(|(h, _)| h.to_string()).collect(),
            align: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn render(&self, out: &mut String) {
        if self.rows.is_empty() {
            out.push_str("  (none)\n");
            return;
        }
        let width = |s: &String| s.chars().count();
        let mut widths: Vec<usize> = self.headers.iter().map(width).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        for row in std::iter::once(&self.headers).chain(&self.rows) {
            let mut line = String::from(" ");
            for (column, cell) in row.iter().enumerate() {
                let pad = widths[column].saturating_sub(width(cell));
                line.push(' ');
                if self.align[column] == Right {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}
