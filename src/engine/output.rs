//! The files a run writes: alerts.jsonl, alerts.parquet, matches.jsonl,
//! errors.jsonl and summary.json. The summary is the engine's report of a
//! run (it includes delivery), so it lives here and not in `alerts`.

use super::spool::RunAlerts;
use crate::alerts::{alert_json, ErrorRecord};
use crate::delivery::DeliveryReport;
use crate::schema::{coerce_value, rows_to_batch, Field, FieldType, Leniency, TableSchema};
use crate::storage::{key, Storage, StorageError};
use parquet::arrow::ArrowWriter;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Write;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RuleSummary {
    /// Events of the rule's log table this run read.
    pub events: u64,
    pub matches: u64,
    pub errors: u64,
    pub python_calls: u64,
    /// Events the filter derived from `detect()` kept from it.
    pub auto_filtered_out: u64,
    /// Events a Python rule's `filter:` kept from `detect()`.
    #[serde(skip_serializing_if = "is_zero")]
    pub filtered_out: u64,
    /// SQL rules: how often the query was planned (once, plus once per
    /// table refresh) and how many batches it ran on.
    #[serde(skip_serializing_if = "is_zero")]
    pub sql_plans: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub sql_batches: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub run_id: String,
    /// Inputs skipped because a committed run already processed them
    /// (the input ledger in the alert state).
    #[serde(skip_serializing_if = "is_zero")]
    pub inputs_skipped: u64,
    /// Inputs not started because the run was told to stop (`run --follow`
    /// on SIGTERM): not recorded, so the next run reads them.
    #[serde(skip_serializing_if = "is_zero")]
    pub inputs_left: u64,
    pub events: u64,
    pub rule_matches: u64,
    pub alerts: u64,
    pub activated_alerts: u64,
    pub errors: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    /// Values the `enrich:` selectors looked up, and how many matched.
    pub enrichment_lookups: u64,
    pub enrichment_hits: u64,
    /// `--verify-filters`: events a derived filter dropped although the
    /// rule matched or raised on them (must be 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub filter_violations: u64,
    /// Tables switched to a newer snapshot during the run.
    pub table_refreshes: Vec<crate::enrichment::Refresh>,
    pub rules: BTreeMap<String, RuleSummary>,
    /// Deliveries queued and sent after the run (absent without destinations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryReport>,
}

pub struct RunOutputs<'a> {
    pub alerts: &'a RunAlerts,
    /// `matches.jsonl`, already written to a local file.
    pub matches: &'a std::path::Path,
    pub errors: &'a [ErrorRecord],
    pub summary: &'a Summary,
}

fn jsonl<T: Serialize>(items: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for item in items {
        if serde_json::to_writer(&mut out, item).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

fn alert_schema() -> TableSchema {
    let strings = || FieldType::List(Box::new(FieldType::String));
    TableSchema::new(vec![
        Field::new("id", FieldType::String),
        Field::new("rule", FieldType::String),
        Field::new("title", FieldType::String),
        Field::new("severity", FieldType::String),
        Field::new("dedupe", FieldType::String),
        Field::new("activated", FieldType::Boolean),
        Field::new("match_count", FieldType::Long),
        Field::new("first_match_time", FieldType::Timestamp),
        Field::new("last_match_time", FieldType::Timestamp),
        Field::new("created_at", FieldType::Timestamp),
        Field::new("context", FieldType::String),
        Field::new("latest_context", FieldType::String),
        Field::new("description", FieldType::String),
        Field::new("runbook", FieldType::String),
        Field::new("reference", FieldType::String),
        Field::new("destinations", strings()),
        Field::new("tables", strings()),
        Field::new("false_positives", strings()),
        Field::new("events", FieldType::String),
    ])
}

/// Alerts as Parquet; nested context and events are kept as JSON text so
/// the file has one fixed schema whatever detections return.
/// Rows per Parquet row group: the JSON form of only this many alerts is
/// in memory at once.
const PARQUET_CHUNK: usize = 4096;

fn alerts_parquet(alerts: &RunAlerts, out: std::fs::File) -> Result<(), String> {
    let rows = alerts.iter().map(|a| {
        let a = a.map_err(|e| e.to_string())?;
        Ok(json!({
            "id": a.id, "rule": a.rule, "title": a.title, "severity": a.severity, "dedupe": a.dedupe,
            "activated": a.activated, "match_count": a.match_count,
            "first_match_time": a.first_match_time, "last_match_time": a.last_match_time,
            "created_at": a.created_at,
            "context": Value::Object(a.context).to_string(),
            "latest_context": Value::Object(a.latest_context).to_string(),
            "description": a.description, "runbook": a.runbook, "reference": a.reference,
            "destinations": a.destinations, "tables": a.tables, "false_positives": a.false_positives,
            "events": serde_json::to_string(&a.events).unwrap_or_default(),
        }))
    });
    write_parquet(&alert_schema(), rows, out)
}

/// The fixed schema of `matches.parquet`; context and event as JSON text.
fn match_schema() -> TableSchema {
    TableSchema::new(vec![
        Field::new("alert_id", FieldType::String),
        Field::new("rule", FieldType::String),
        Field::new("time", FieldType::Timestamp),
        Field::new("dedupe", FieldType::String),
        Field::new("title", FieldType::String),
        Field::new("severity", FieldType::String),
        Field::new("source", FieldType::String),
        Field::new("context", FieldType::String),
        Field::new("event", FieldType::String),
    ])
}

/// `matches.jsonl` (a local file, written by the run) as Parquet, so
/// `query` reads only the columns a statement needs.
fn matches_parquet(jsonl: &std::path::Path, out: std::fs::File) -> Result<(), String> {
    use std::io::BufRead;
    let input = std::io::BufReader::new(std::fs::File::open(jsonl).map_err(|e| e.to_string())?);
    let rows = input.lines().map(|line| {
        let line = line.map_err(|e| e.to_string())?;
        let mut row: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        for nested in ["context", "event"] {
            if let Some(v) = row.get_mut(nested) {
                *v = Value::String(v.to_string());
            }
        }
        Ok(row)
    });
    write_parquet(&match_schema(), rows, out)
}

/// Writes `rows` (coerced to `schema`) as Parquet, [`PARQUET_CHUNK`] rows
/// per row group, so only that many are in memory at once.
fn write_parquet(
    schema: &TableSchema,
    rows: impl Iterator<Item = Result<Value, String>>,
    out: std::fs::File,
) -> Result<(), String> {
    let ty = FieldType::Struct(schema.fields.clone());
    let mut writer = ArrowWriter::try_new(std::io::BufWriter::new(out), schema.to_arrow(), None)
        .map_err(|e| e.to_string())?;
    let mut chunk = Vec::with_capacity(PARQUET_CHUNK);
    let mut rows = rows.peekable();
    while let Some(row) = rows.next() {
        let mut row = row?;
        coerce_value(&mut row, &ty, Leniency::Json)
            .map_err(|e| format!("{}: {}", e.path, e.message))?;
        chunk.push(row);
        if chunk.len() == PARQUET_CHUNK || rows.peek().is_none() {
            let batch = rows_to_batch(schema, &chunk).map_err(|e| e.to_string())?;
            writer.write(&batch).map_err(|e| e.to_string())?;
            writer.flush().map_err(|e| e.to_string())?;
            chunk.clear();
        }
    }
    writer.close().map_err(|e| e.to_string())?;
    Ok(())
}

/// Writes `alerts.jsonl` line by line to a temporary file.
fn alerts_jsonl(alerts: &RunAlerts, out: std::fs::File) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(out);
    for alert in alerts.iter() {
        serde_json::to_writer(&mut out, &alert_json(&alert?)).map_err(std::io::Error::other)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// The files a run writes, in writing order (summary.json last, so its
/// presence means the rest are complete).
pub const OUTPUT_FILES: [&str; 6] = [
    "alerts.jsonl",
    "alerts.parquet",
    "matches.jsonl",
    "matches.parquet",
    "errors.jsonl",
    "summary.json",
];

/// Removes a run's output files (when its state could not be committed).
///
/// # Errors
/// The first storage failure.
pub fn remove_outputs(storage: &dyn Storage, prefix: &str) -> Result<(), StorageError> {
    for file in OUTPUT_FILES.iter().rev() {
        storage.delete(&key(&[prefix, file]))?;
    }
    Ok(())
}

/// Rewrites errors.jsonl and summary.json after delivery, which happens
/// once the run is committed (summary.json last, as before).
///
/// # Errors
/// The first storage failure.
pub fn rewrite_after_delivery(
    storage: &dyn Storage,
    prefix: &str,
    errors: &[ErrorRecord],
    summary: &Summary,
) -> Result<(), StorageError> {
    storage.write(&key(&[prefix, "errors.jsonl"]), &jsonl(errors))?;
    write_summary(storage, prefix, summary)
}

fn write_summary(
    storage: &dyn Storage,
    prefix: &str,
    summary: &Summary,
) -> Result<(), StorageError> {
    let mut json = serde_json::to_vec_pretty(summary).unwrap_or_default();
    json.push(b'\n');
    storage.write(&key(&[prefix, "summary.json"]), &json)
}

/// Writes every output file under `prefix` of `storage`; summary.json last.
///
/// # Errors
/// The first storage failure.
pub fn write_outputs(
    storage: &dyn Storage,
    prefix: &str,
    out: &RunOutputs<'_>,
) -> Result<(), StorageError> {
    let local = |name: &str, e: std::io::Error| StorageError::Io {
        location: storage.url(&key(&[prefix, name])),
        source: e,
    };
    let file = tempfile::NamedTempFile::new().map_err(|e| local("alerts.jsonl", e))?;
    let handle = file.reopen().map_err(|e| local("alerts.jsonl", e))?;
    alerts_jsonl(out.alerts, handle).map_err(|e| local("alerts.jsonl", e))?;
    storage.put_file(&key(&[prefix, "alerts.jsonl"]), file.path())?;
    let parquet = |name: &str, write: &dyn Fn(std::fs::File) -> Result<(), String>| {
        let file = tempfile::NamedTempFile::new().map_err(|e| local(name, e))?;
        let handle = file.reopen().map_err(|e| local(name, e))?;
        write(handle).map_err(|message| local(name, std::io::Error::other(message)))?;
        storage.put_file(&key(&[prefix, name]), file.path())
    };
    parquet("alerts.parquet", &|f| alerts_parquet(out.alerts, f))?;
    storage.put_file(&key(&[prefix, "matches.jsonl"]), out.matches)?;
    parquet("matches.parquet", &|f| matches_parquet(out.matches, f))?;
    storage.write(&key(&[prefix, "errors.jsonl"]), &jsonl(out.errors))?;
    write_summary(storage, prefix, out.summary)
}
