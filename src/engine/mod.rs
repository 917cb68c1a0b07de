//! A detection run: read logs, run rules, group alerts, write outputs.
//!
//! Reading and decoding happen on a second thread and hand Arrow batches
//! over a bounded channel, so the Python rules (which hold the interpreter)
//! run while the next batch is being decoded. Nothing persistent is written
//! until every input is processed: outputs first, alert state last, so a
//! failed run leaves the previous state intact.

use crate::alerts::{
    remove_outputs, write_outputs, AlertGrouper, AlertState, ErrorRecord, RuleMatch, RuleSettings,
    RuleSummary, RunOutputs, StateError, Summary,
};
use crate::config::{DetectionDef, LogTable, Project};
use crate::enrichment::{
    sync_tables, BatchEnrichment, EnrichmentError, Generation, SyncOptions, TableWatcher, Tables,
};
use crate::logs::{expand_inputs, read_inputs, EventBatch, EventReader, LogError, ReadItem};
use crate::python::{PythonError, PythonRuntime, RuleOutcome};
use crate::schema::micros_to_rfc3339;
use crate::storage::{Storage, StorageError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Python(#[from] PythonError),
    #[error(transparent)]
    Logs(#[from] LogError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{0}")]
    Usage(String),
    #[error("internal error (likely a bug): {0}")]
    Internal(String),
}

/// What to run on.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub inputs: Vec<String>,
    /// Log table of the inputs; optional when the project has one schema.
    pub table: Option<String>,
    /// Output location; `None` means `<storage>/runs/<run id>/`.
    pub output: Option<Arc<dyn Storage>>,
    pub progress: bool,
    /// How often to look for newer table snapshots between batches
    /// (`Some(0)`: before every batch; `None`: never).
    pub refresh_interval: Option<std::time::Duration>,
}

/// The result of a completed run.
#[derive(Debug)]
pub struct RunReport {
    pub summary: Summary,
    pub alerts: Vec<crate::alerts::Alert>,
    pub errors: Vec<ErrorRecord>,
    /// Where the outputs were written.
    pub output_location: String,
}

/// Syncs changed static tables and loads every table's current snapshot;
/// sync failures become error records (the previous snapshot is used).
pub fn prepare_tables(project: &Project, storage: &dyn Storage) -> (Tables, Vec<ErrorRecord>) {
    let (report, tables) = sync_tables(project, storage, &SyncOptions::default());
    let errors = report
        .failures()
        .map(|(table, e)| enrichment_error(table, e))
        .collect();
    (tables, errors)
}

fn enrichment_error(table: &str, e: &EnrichmentError) -> ErrorRecord {
    ErrorRecord {
        kind: "enrichment".into(),
        rule: None,
        function: None,
        source: Some(format!("enrichment/{table}")),
        error: e.to_string(),
        traceback: None,
    }
}

fn select_table<'a>(project: &'a Project, name: Option<&str>) -> Result<&'a LogTable, EngineError> {
    let names = || {
        project
            .log_tables
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(n) => project.log_table(n).ok_or_else(|| {
            EngineError::Usage(format!(
                "no log table `{n}` in schemas/ (tables: {})",
                names()
            ))
        }),
        None => match project.log_tables.as_slice() {
            [only] => Ok(only),
            [] => Err(EngineError::Usage(
                "the project has no log table: add schemas/<table>.yml".into(),
            )),
            _ => Err(EngineError::Usage(format!(
                "the project has several log tables ({}); choose one with --table",
                names()
            ))),
        },
    }
}

/// Runs every enabled detection of `table` over the inputs.
///
/// # Errors
/// Anything that prevents a complete run (missing input, a detection that
/// does not load, storage failures); nothing is written in that case.
pub fn run(
    project: &Project,
    storage: Arc<dyn Storage>,
    options: RunOptions,
) -> Result<RunReport, EngineError> {
    let started = Instant::now();
    let table = select_table(project, options.table.as_deref())?;
    let inputs = expand_inputs(&options.inputs, &project.settings.aws)?;
    let (state, state_version) = AlertState::load(storage.as_ref())?;
    let (tables, mut errors) = prepare_tables(project, storage.as_ref());

    let rules: Vec<&DetectionDef> = project
        .detections
        .iter()
        .filter(|d| d.enabled && d.tables.contains(&table.name))
        .collect();
    let runtime = PythonRuntime::new(&project.detection_lib_dir(), &tables, &rules)?;

    let now = chrono::Utc::now();
    let run_id = now.format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let mut summary = Summary {
        run_id: run_id.clone(),
        ..Default::default()
    };
    for rule in &rules {
        summary.rules.insert(rule.name.clone(), Default::default());
    }

    // The reader thread decodes, polls for newer snapshots and applies the
    // `enrich:` selectors, stamping each batch with its table generation.
    let reader = EventReader::new(table);
    let selectors = table.enrich.clone();
    let mut watcher = TableWatcher::new(
        project.enrichment.clone(),
        Arc::clone(&storage),
        tables.clone(),
        options.refresh_interval.unwrap_or(std::time::Duration::MAX),
    );
    let (sender, receiver) = std::sync::mpsc::sync_channel::<(ReadItem, Arc<Generation>)>(4);
    let producer = std::thread::spawn(move || {
        read_inputs(&reader, inputs, &mut |item| {
            let generation = watcher.poll();
            let item = match item {
                ReadItem::Batch(mut batch) if !selectors.is_empty() => {
                    batch.enrichment = Some(BatchEnrichment::compute(
                        &selectors,
                        &generation.tables,
                        &batch.batch,
                    ));
                    ReadItem::Batch(batch)
                }
                other => other,
            };
            sender.send((item, generation)).is_ok()
        });
        watcher
    });

    let progress = progress_bar(options.progress);
    let mut matches: Vec<RuleMatch> = Vec::new();
    let mut generation_id = 0;
    for (item, generation) in receiver {
        match item {
            ReadItem::Fatal(e) => {
                // Dropping the receiver stops the reader; nothing is written.
                drop(progress);
                return Err(EngineError::Storage(e));
            }
            ReadItem::Error(e) => errors.push(ErrorRecord {
                kind: "event".into(),
                rule: None,
                function: None,
                source: Some(e.source),
                error: e.message,
                traceback: None,
            }),
            ReadItem::Batch(batch) => {
                if generation.id != generation_id {
                    runtime.refresh_tables(&generation.tables);
                    generation_id = generation.id;
                }
                let batch: Arc<EventBatch> = Arc::from(batch);
                summary.events += batch.len() as u64;
                if let Some(e) = &batch.enrichment {
                    summary.enrichment_lookups += e.lookups;
                    summary.enrichment_hits += e.hits;
                }
                for (index, rule) in rules.iter().enumerate() {
                    let Some(stats) = summary.rules.get_mut(&rule.name) else {
                        continue;
                    };
                    let outcomes = runtime.evaluate(index, &batch, &mut stats.python_calls);
                    collect_outcomes(rule, &batch, outcomes, stats, &mut matches, &mut errors);
                }
                if let Some(bar) = &progress {
                    bar.set_position(summary.events);
                }
            }
        }
    }
    let Ok(watcher) = producer.join() else {
        return Err(EngineError::Internal(
            "the log reader thread panicked".into(),
        ));
    };
    errors.extend(
        watcher
            .errors
            .iter()
            .map(|(table, e)| enrichment_error(table, e)),
    );
    summary.table_refreshes = watcher.refreshes;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }

    let settings: HashMap<String, RuleSettings> = rules
        .iter()
        .map(|r| (r.name.clone(), RuleSettings::from(*r)))
        .collect();
    let mut grouper = AlertGrouper::new(
        settings,
        state,
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    grouper.add_all(&mut matches);
    let (alerts, new_state) = grouper.finish();

    let seconds = started.elapsed().as_secs_f64();
    summary.rule_matches = matches.len() as u64;
    summary.alerts = alerts.len() as u64;
    summary.activated_alerts = alerts.iter().filter(|a| a.activated).count() as u64;
    summary.errors = errors.len() as u64;
    summary.seconds = (seconds * 1000.0).round() / 1000.0;
    summary.events_per_second = if seconds > 0.0 {
        (summary.events as f64 / seconds).round()
    } else {
        0.0
    };

    let (out_storage, prefix) = match &options.output {
        Some(s) => (Arc::clone(s), String::new()),
        None => (Arc::clone(&storage), format!("runs/{run_id}")),
    };
    write_outputs(
        out_storage.as_ref(),
        &prefix,
        &RunOutputs {
            alerts: &alerts,
            matches: &matches,
            errors: &errors,
            summary: &summary,
        },
    )?;
    if let Err(e) = new_state.save(storage.as_ref(), &state_version) {
        // Outputs describe alerts whose state was not committed: remove them
        // so the next run is the only record of these events.
        if matches!(e, StateError::Conflict { .. }) {
            let _ = remove_outputs(out_storage.as_ref(), &prefix);
        }
        return Err(e.into());
    }
    let output_location = if prefix.is_empty() {
        out_storage.url("")
    } else {
        out_storage.url(&prefix)
    };
    Ok(RunReport {
        summary,
        alerts,
        errors,
        output_location: output_location.trim_end_matches('/').to_string(),
    })
}

/// Turns one batch's outcomes for `rule` into rule matches and error records
/// (shared by `run` and `test`, so both see the same fallbacks).
pub(crate) fn collect_outcomes(
    rule: &DetectionDef,
    batch: &EventBatch,
    outcomes: Vec<RuleOutcome>,
    stats: &mut RuleSummary,
    matches: &mut Vec<RuleMatch>,
    errors: &mut Vec<ErrorRecord>,
) {
    for outcome in outcomes {
        match outcome {
            RuleOutcome::Error { row, message } => {
                stats.errors += 1;
                errors.push(ErrorRecord::python(
                    "rule",
                    &rule.name,
                    Some("detect"),
                    batch.source(row),
                    message,
                ));
            }
            RuleOutcome::Match(output) => {
                stats.matches += 1;
                for fe in &output.errors {
                    stats.errors += 1;
                    errors.push(ErrorRecord::python(
                        "function",
                        &rule.name,
                        Some(fe.function),
                        batch.source(output.row),
                        fe.message.clone(),
                    ));
                }
                let sequence = matches.len() as u64;
                matches.push(to_match(rule, batch, *output, sequence));
            }
        }
    }
}

fn to_match(
    rule: &DetectionDef,
    batch: &EventBatch,
    output: crate::python::MatchOutput,
    sequence: u64,
) -> RuleMatch {
    let title = output
        .title
        .unwrap_or_else(|| rule.default_title().to_string());
    let time_us = batch.times[output.row];
    RuleMatch {
        alert_id: String::new(),
        rule: rule.name.clone(),
        time_us,
        time: micros_to_rfc3339(time_us),
        dedupe: output.dedupe.unwrap_or_else(|| title.clone()),
        title,
        severity: output.severity.unwrap_or(rule.severity),
        context: with_enrichment(output.context.unwrap_or_default(), batch, output.row),
        source: batch.source(output.row),
        event: batch.event_json(output.row),
        description: output.description.or_else(|| rule.description.clone()),
        runbook: output.runbook.or_else(|| rule.runbook.clone()),
        reference: output
            .reference
            .or_else(|| rule.references.first().cloned()),
        destinations: output
            .destinations
            .unwrap_or_else(|| rule.destinations.clone()),
        sequence,
    }
}

/// Adds what the `enrich:` selectors found as `context.enrichment` (unless
/// the detection set that key itself).
fn with_enrichment(
    mut context: serde_json::Map<String, serde_json::Value>,
    batch: &EventBatch,
    row: usize,
) -> serde_json::Map<String, serde_json::Value> {
    if let Some(found) = batch.enrichment.as_ref().and_then(|e| e.to_json(row)) {
        context.entry("enrichment").or_insert(found);
    }
    context
}

fn progress_bar(enabled: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !enabled || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} events  {per_sec}  {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(bar)
}
