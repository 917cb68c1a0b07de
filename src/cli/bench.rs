//! `ravenwatch bench` (hidden): timings that need the library rather than
//! the CLI, used by `bench/run.sh`. Part of the one binary so a release
//! build links the library once.
//!
//! - `get-ns DIR TABLE KEY [INDEX_KEY]`: the cost of `table.get(key)` called
//!   from Python, in nanoseconds per call (hit and miss).
//! - `cidr-ns DIR TABLE INDEX_KEY`: lookups of random IPv4 addresses in a
//!   CIDR key, per lookup: from Python (`get`), and in bulk from Rust
//!   (`find_many`, as the `enrich:` selectors do).
//! - `table-mem DIR TABLE`: the in-memory size of a loaded table (Arrow
//!   buffers) beside its Parquet snapshot.
//! - `sql-batch DIR LOGS`: the cost per log batch of the project's SQL
//!   detections (`query:`) and, separately, of the Python rules' `filter:`s,
//!   after planning them once.
//! - `decode DIR LOGS`: decoding alone (no rule runs), with the paths the
//!   project's rules read as columns: events/s and MB/s on one core, then
//!   with a decoding thread per core.
//! - `derived DIR LOGS`: the filters derived from the Python rules' code,
//!   evaluated on every batch (decoded first, not timed): ns per event per
//!   rule, and the share of events each keeps.
//! - `deliver N URL`: N activated alerts queued and delivered to a JSON
//!   webhook at URL (each success recorded in the delivery state before
//!   the next, as in a run): deliveries per second and the state's size.

use super::args::Outcome;
use crate::config::Project;
use crate::enrichment::{sync_tables, Tables};
use std::path::PathBuf;
use std::time::Instant;

const USAGE: &str = "usage: ravenwatch bench get-ns DIR TABLE KEY [INDEX_KEY]
       ravenwatch bench cidr-ns DIR TABLE INDEX_KEY
       ravenwatch bench table-mem DIR TABLE
       ravenwatch bench sql-batch DIR LOGS
       ravenwatch bench decode DIR LOGS
       ravenwatch bench derived DIR LOGS
       ravenwatch bench deliver N URL";

fn load(
    dir: &str,
) -> Result<(Project, Tables, std::sync::Arc<dyn crate::storage::Storage>), String> {
    let project = Project::load(&PathBuf::from(dir)).map_err(|e| e.to_string())?;
    let storage = crate::storage::open(
        &project.settings.storage,
        &project.root,
        &project.settings.aws,
    )
    .map_err(|e| e.to_string())?;
    let (_, tables) = sync_tables(&project, storage.as_ref(), &Default::default());
    Ok((project, tables, storage))
}

/// Random IPv4 addresses (xorshift, fixed seed), as text.
fn addresses(n: usize) -> Vec<String> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            std::net::Ipv4Addr::from((x >> 32) as u32).to_string()
        })
        .collect()
}

fn get_ns(dir: &str, table: &str, key: &str, index_key: Option<&String>) -> Result<String, String> {
    let (project, tables, _) = load(dir)?;
    let index = index_key.map(|k| format!(", {k:?}")).unwrap_or_default();
    let code = format!(
        r#"
import time
from ravenwatch.enrichment import {table} as t
n = 1_000_000
key = {key:?}
assert t.get(key{index}) is not None, "benchmark key must exist"
# Timed inside functions, as detect() calls get().
def hits():
    start = time.perf_counter_ns()
    for _ in range(n):
        t.get(key{index})
    return (time.perf_counter_ns() - start) / n
def misses():
    start = time.perf_counter_ns()
    for _ in range(n):
        t.get("no-such-key"{index})
    return (time.perf_counter_ns() - start) / n
def loop():
    start = time.perf_counter_ns()
    for _ in range(n):
        pass
    return (time.perf_counter_ns() - start) / n
hit, miss, loop = min(hits() for _ in range(3)), min(misses() for _ in range(3)), loop()
result = f"get() hit: {{hit:.0f}} ns, miss: {{miss:.0f}} ns (best of 3 x 1M calls from a function; loop overhead {{loop:.0f}} ns), rows={{len(t)}}"
"#
    );
    crate::python::run_snippet(&project.detection_lib_dir(), &tables, &code)
        .map_err(|e| e.to_string())
}

fn cidr_ns(dir: &str, table: &str, index_key: &str) -> Result<String, String> {
    let (project, tables, _) = load(dir)?;
    let t = tables.get(table).ok_or(format!("no table {table}"))?;
    let n = 1_000_000;
    let keys = addresses(n);
    let refs: Vec<Option<&str>> = keys.iter().map(|k| Some(k.as_str())).collect();
    let start = Instant::now();
    let found = t
        .find_many(&refs, Some(index_key))
        .map_err(|e| e.to_string())?;
    let bulk = start.elapsed().as_nanos() as f64 / n as f64;
    let hits = found.iter().filter(|f| f.is_some()).count();
    let code = format!(
        r#"
import random, time
from ravenwatch.enrichment import {table} as t
rng = random.Random(5)
keys = [f"{{rng.randrange(256)}}.{{rng.randrange(256)}}.{{rng.randrange(256)}}.{{rng.randrange(256)}}" for _ in range(300_000)]
start = time.perf_counter_ns()
found = 0
for k in keys:
    if t.get(k, {index_key:?}) is not None:
        found += 1
per = (time.perf_counter_ns() - start) / len(keys)
start = time.perf_counter_ns()
for k in keys:
    pass
loop = (time.perf_counter_ns() - start) / len(keys)
result = f"python get(): {{per:.0f}} ns per lookup (loop overhead {{loop:.0f}} ns), {{found}} of {{len(keys)}} found"
"#
    );
    let python = crate::python::run_snippet(&project.detection_lib_dir(), &tables, &code)
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "{} rows; rust find_many: {bulk:.0} ns per lookup, {hits} of {n} found; {python}",
        t.len()
    ))
}

fn table_mem(dir: &str, table: &str) -> Result<String, String> {
    let (_, tables, storage) = load(dir)?;
    let t = tables.get(table).ok_or(format!("no table {table}"))?;
    let manifest = t.manifest.as_ref().ok_or("no snapshot")?;
    let parquet = storage
        .read(&manifest.data_key)
        .map_err(|e| e.to_string())?
        .map(|b| b.len())
        .unwrap_or(0);
    let arrow = t.batch.get_array_memory_size();
    Ok(format!(
        "{} rows: Arrow data {:.1} MB in memory, Parquet snapshot {:.1} MB (plus the key indexes; see peak RSS)",
        t.len(),
        arrow as f64 / 1e6,
        parquet as f64 / 1e6
    ))
}

/// Decodes `logs` as the project's first log table, with the columns the
/// project's Python rules read: on this thread only, then on every core.
fn decode(dir: &str, logs: &str) -> Result<String, String> {
    use crate::logs::{expand_inputs, read_inputs, read_inputs_parallel, EventReader, ReadItem};
    let project = Project::load(&PathBuf::from(dir)).map_err(|e| e.to_string())?;
    let log = project.log_tables.first().ok_or("no log table")?;
    let paths = crate::engine::read_paths(&project, log, &project.detections);
    let reader = EventReader::with_read_paths(log, &paths);
    let inputs =
        expand_inputs(&[logs.to_string()], &project.settings.aws).map_err(|e| e.to_string())?;
    let bytes: u64 = inputs.iter().filter_map(crate::logs::Input::size).sum();
    let count = |events: &mut u64, errors: &mut u64, item: ReadItem| {
        match item {
            ReadItem::Batch(batch) => *events += batch.len() as u64,
            ReadItem::Error(_) => *errors += 1,
            ReadItem::Fatal(_) => return false,
        }
        true
    };
    let (mut events, mut errors) = (0u64, 0u64);
    let started = Instant::now();
    read_inputs(&reader, inputs.clone(), &mut |item| {
        count(&mut events, &mut errors, item)
    });
    let one = started.elapsed().as_secs_f64();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let paths = reader.read_paths().len();
    let (mut all_events, mut all_errors) = (0u64, 0u64);
    let started = Instant::now();
    read_inputs_parallel(std::sync::Arc::new(reader), inputs, cores, &mut |item| {
        count(&mut all_events, &mut all_errors, item)
    });
    let all = started.elapsed().as_secs_f64();
    if (all_events, all_errors) != (events, errors) {
        return Err(format!(
            "parallel decoding gave {all_events} events and {all_errors} errors, one core {events} and {errors}"
        ));
    }
    Ok(format!(
        "decode only: {events} events ({errors} errors), {paths} undeclared path(s) as columns; \
         one core {:.0} events/s, {:.0} MB/s; {cores} decoding threads {:.0} events/s, {:.0} MB/s",
        events as f64 / one,
        bytes as f64 / one / 1e6,
        events as f64 / all,
        bytes as f64 / all / 1e6
    ))
}

/// Times the derived filters of the project's Python rules on `logs`
/// (decoded with the columns a run would decode; decoding is not timed).
fn derived(dir: &str, logs: &str) -> Result<String, String> {
    use crate::logs::{expand_inputs, read_inputs, EventReader, ReadItem};
    let (project, tables, _) = load(dir)?;
    let log = project.log_tables.first().ok_or("no log table")?;
    let rules: Vec<_> = project
        .detections
        .iter()
        .filter(|d| d.tables.contains(&log.name) && !d.is_sql() && d.auto_filter)
        .cloned()
        .collect();
    let lib_dir = project.detection_lib_dir();
    let filters: Vec<_> = rules
        .iter()
        .map(|d| (d.name.clone(), crate::python::derive_filter(d, &lib_dir)))
        .filter(|(_, f)| f.applicable() && f.narrows())
        .collect();
    if filters.is_empty() {
        return Err("no rule derives a filter".into());
    }
    let reader =
        EventReader::with_read_paths(log, &crate::engine::read_paths(&project, log, &rules));
    let inputs =
        expand_inputs(&[logs.to_string()], &project.settings.aws).map_err(|e| e.to_string())?;
    // Each batch is filtered right after it is decoded, as in a run (where
    // the reader thread filters what the decoders just produced).
    let mut took = vec![std::time::Duration::ZERO; filters.len()];
    let mut kept = vec![0usize; filters.len()];
    let mut events = 0usize;
    read_inputs(&reader, inputs, &mut |item| {
        if let ReadItem::Batch(batch) = item {
            events += batch.len();
            // Shared by the rules, as in a run.
            let mut cache = crate::prefilter::AtomCache::default();
            for (i, (_, filter)) in filters.iter().enumerate() {
                let started = Instant::now();
                kept[i] += filter
                    .keep_shared(&batch, &tables, &mut cache)
                    .count_set_bits();
                took[i] += started.elapsed();
            }
        }
        true
    });
    let total: std::time::Duration = took.iter().sum();
    let lines: Vec<String> = filters
        .iter()
        .zip(took.iter().zip(&kept))
        .map(|((name, _), (took, kept))| {
            format!(
                "  {name}: {:.1} ns/event, keeps {:.2}%",
                took.as_nanos() as f64 / events as f64,
                *kept as f64 * 100.0 / events as f64
            )
        })
        .collect();
    Ok(format!(
        "derived filters: {events} events, {} rules, {:.1} ns per event per rule on average\n{}",
        filters.len(),
        total.as_nanos() as f64 / events as f64 / filters.len() as f64,
        lines.join("\n")
    ))
}

/// Plans the SQL of `project`'s detections once, then times executing it
/// per batch of `logs`: the `query:` rules and the `filter:`s separately.
fn sql_batch(dir: &str, logs: &str) -> Result<String, String> {
    use crate::logs::{expand_inputs, read_inputs, EventReader, ReadItem};
    use crate::query::{RuleBatch, RulePlan, RunPlan};
    let (project, tables, _) = load(dir)?;
    let log = project.log_tables.first().ok_or("no log table")?;
    let on_log: Vec<_> = project
        .detections
        .iter()
        .filter(|d| d.tables.contains(&log.name))
        .collect();
    let queries: Vec<_> = on_log.iter().copied().filter(|d| d.is_sql()).collect();
    let filtered: Vec<_> = on_log
        .iter()
        .copied()
        .filter(|d| d.filter().is_some())
        .collect();
    let errors = |e: Vec<crate::config::ConfigError>| {
        e.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let started = Instant::now();
    let sql = RunPlan::new(&queries, log, &tables, None).map_err(errors)?;
    let planning = started.elapsed();
    let filters = RunPlan::new(&filtered, log, &tables, None).map_err(errors)?;
    let reuse: Vec<String> = sql
        .rules()
        .iter()
        .filter_map(|r| match &r.plan {
            RulePlan::Sql(rule) => Some(rule),
            RulePlan::Python { .. } => None,
        })
        .map(|r| {
            let how = if r.resets_each_batch() {
                "reset per batch"
            } else {
                "hash tables kept"
            };
            format!("{}: {how}", r.name)
        })
        .collect();
    let inputs =
        expand_inputs(&[logs.to_string()], &project.settings.aws).map_err(|e| e.to_string())?;
    let (mut batches, mut events, mut matches) = (0u64, 0u64, 0usize);
    let (mut sql_time, mut filter_time) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    let mut failure = None;
    read_inputs(&EventReader::new(log), inputs, &mut |item| {
        if let ReadItem::Batch(batch) = item {
            batches += 1;
            events += batch.len() as u64;
            let t = Instant::now();
            let result = sql.evaluate(&batch, &tables);
            sql_time += t.elapsed();
            for m in result {
                match m {
                    RuleBatch::Sql(Ok(m)) => matches += m.len(),
                    RuleBatch::Sql(Err(e)) => failure = Some(e),
                    RuleBatch::Python { .. } => {}
                }
            }
            let t = Instant::now();
            let _ = filters.evaluate(&batch, &tables);
            filter_time += t.elapsed();
        }
        true
    });
    if let Some(e) = failure {
        return Err(e);
    }
    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / batches.max(1) as f64;
    Ok(format!(
        "{} SQL detection(s) ({}), planned once in {:.1} ms; {batches} batches of ~{} events: \
         {:.0} µs per batch ({:.0} ns per event), {matches} matches; \
         {} filter(s): {:.0} µs per batch ({:.0} ns per event)",
        queries.len(),
        reuse.join(", "),
        planning.as_secs_f64() * 1e3,
        events / batches.max(1),
        per(sql_time),
        sql_time.as_nanos() as f64 / events.max(1) as f64,
        filtered.len(),
        per(filter_time),
        filter_time.as_nanos() as f64 / events.max(1) as f64,
    ))
}

fn deliver(n: &str, url: &str) -> Result<String, String> {
    use crate::config::{DeliverySettings, Destination, DestinationKind, WebhookDestination};
    let n: usize = n.parse().map_err(|e| format!("N: {e}"))?;
    let settings = DeliverySettings {
        destinations: vec![Destination {
            name: "soar".into(),
            kind: DestinationKind::Webhook(WebhookDestination {
                url: url.to_string(),
                headers_env: Vec::new(),
            }),
        }],
        ..Default::default()
    };
    // A realistic alert: asset context and the ten events an alert keeps.
    let event = serde_json::json!({
        "ts": "2024-05-01T09:00:00Z", "event": {"category": ["authentication"], "outcome": "success"},
        "host": {"hostname": "hr-desktop-003"}, "user": {"name": "sam.jones"}, "source": {"ip": "10.20.3.3"}
    });
    let context = serde_json::json!({
        "asset": {"hostname": "hr-desktop-003", "last_seen": "2024-03-02T08:00:00Z",
                  "network_interfaces_ips": ["10.20.3.3", "10.20.9.15"], "os": "Windows 10", "owner": "sam.jones"},
        "days_since_seen": 60
    });
    let alerts: Vec<crate::alerts::Alert> = (0..n)
        .map(|i| {
            serde_json::from_str(&serde_json::json!({
                "id": format!("{i:032x}"), "rule": "login_on_stale_asset", "title": format!("stale asset {i}"),
                "severity": "medium", "dedupe": format!("host-{i}"), "activated": true, "match_count": 10,
                "threshold": 1, "first_match_time": "2024-05-01T09:00:00Z", "last_match_time": "2024-05-01T09:09:00Z",
                "window_start": "2024-05-01T09:00:00Z", "window_end": "2024-05-02T09:00:00Z",
                "created_at": "2026-11-23T00:00:00Z", "context": context, "latest_context": context,
                "description": null, "runbook": "Isolate it.", "reference": null, "destinations": ["soar"],
                "tables": ["events"], "false_positives": [], "events": vec![event.clone(); 10],
                "window_end_us": 1_714_640_400_000_000i64
            }).to_string())
            .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let storage = crate::storage::LocalStorage::new(dir.path());
    let started = Instant::now();
    crate::delivery::enqueue(&storage, &settings, &alerts, "bench").map_err(|e| e.to_string())?;
    let queued = started.elapsed();
    let queued_size =
        std::fs::metadata(dir.path().join("state/deliveries.json")).map_or(0, |m| m.len());
    let started = Instant::now();
    let report =
        crate::delivery::deliver_pending(&storage, &settings, None).map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    if report.delivered as usize != n {
        return Err(format!(
            "delivered {} of {n}: {:?}",
            report.delivered,
            report.failures.first()
        ));
    }
    let size = std::fs::metadata(dir.path().join("state/deliveries.json")).map_or(0, |m| m.len());
    Ok(format!(
        "deliver: {n} alerts queued in {:.3} s (state {:.1} KB), delivered in {seconds:.2} s = {:.0} deliveries/s ({:.2} ms each, state saved after each); state after: {:.1} KB",
        queued.as_secs_f64(),
        queued_size as f64 / 1024.0,
        n as f64 / seconds,
        seconds * 1000.0 / n as f64,
        size as f64 / 1024.0
    ))
}

/// Runs one benchmark named by `args`; prints its result line.
pub fn bench(args: &[String]) -> Outcome {
    let result = match args {
        [cmd, dir, table, key, rest @ ..] if cmd == "get-ns" => {
            get_ns(dir, table, key, rest.first())
        }
        [cmd, dir, table, key] if cmd == "cidr-ns" => cidr_ns(dir, table, key),
        [cmd, dir, table] if cmd == "table-mem" => table_mem(dir, table),
        [cmd, dir, logs] if cmd == "sql-batch" => sql_batch(dir, logs),
        [cmd, dir, logs] if cmd == "decode" => decode(dir, logs),
        [cmd, dir, logs] if cmd == "derived" => derived(dir, logs),
        [cmd, n, url] if cmd == "deliver" => deliver(n, url),
        _ => {
            eprintln!("{USAGE}");
            return Outcome::Usage;
        }
    };
    match result {
        Ok(text) => {
            println!("{text}");
            Outcome::Done
        }
        Err(e) => {
            eprintln!("{e}");
            Outcome::Failed
        }
    }
}
