//! A detection run: read logs, run rules, group alerts, write outputs.
//!
//! Reading and decoding happen on a second thread and hand Arrow batches
//! over a bounded channel, so the Python rules (which hold the interpreter)
//! run while the next batch is being decoded. Nothing persistent is written
//! until every input is processed: outputs first, alert state last, so a
//! failed run leaves the previous state intact.
//!
//! SQL runs on the reader thread too: each Python rule's `filter:` picks
//! the rows its `detect()` will see, and `query:` rules produce their
//! matches there, so the main thread only runs Python and groups alerts.

mod outcome;

pub use outcome::{FunctionError, MatchOutput, RuleOutcome};

use crate::alerts::{
    remove_outputs, rewrite_after_delivery, write_outputs, AlertGrouper, AlertState, ErrorRecord,
    RuleMatch, RuleSettings, RuleSummary, RunOutputs, StateError, Summary,
};
use crate::config::ConfigErrors;
use crate::config::{DetectionDef, LogTable, Project};
use crate::enrichment::{
    sync_tables, BatchEnrichment, EnrichmentError, Generation, SyncOptions, TableWatcher, Tables,
};
use crate::logs::{expand_inputs, read_inputs, EventBatch, EventReader, LogError, ReadItem};
use crate::python::{PythonError, PythonRuntime};
use crate::query::{BatchSql, SqlDetections};
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
    Config(ConfigErrors),
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
    /// Send pending deliveries after the run (they are queued either way).
    pub deliver: bool,
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

pub(crate) fn select_table<'a>(
    project: &'a Project,
    name: Option<&str>,
) -> Result<&'a LogTable, EngineError> {
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
    let python_rules: Vec<&DetectionDef> = rules.iter().copied().filter(|d| !d.is_sql()).collect();
    let runtime = PythonRuntime::new(&project.detection_lib_dir(), &tables, &python_rules)?;
    // Position of each rule among the Python rules (None: a SQL rule).
    let mut python_index = Vec::with_capacity(rules.len());
    let mut next = 0;
    for rule in &rules {
        python_index.push((!rule.is_sql()).then(|| {
            next += 1;
            next - 1
        }));
    }
    // Queries and filters are planned before any input is read.
    let mut sql = SqlDetections::new(&rules, table, &tables)
        .map_err(|e| EngineError::Config(ConfigErrors(e)))?;

    let now = chrono::Utc::now();
    let run_id = now.format("%Y%m%dT%H%M%S%.3fZ").to_string();
    let mut summary = Summary {
        run_id: run_id.clone(),
        ..Default::default()
    };
    for rule in &rules {
        let stats = summary.rules.entry(rule.name.clone()).or_default();
        if rule.is_sql() {
            stats.sql_plans = 1;
        }
    }

    // The reader thread decodes, polls for newer snapshots, applies the
    // `enrich:` selectors and runs the SQL, stamping each batch with its
    // table generation.
    let reader = EventReader::new(table);
    let selectors = table.enrich.clone();
    let mut watcher = TableWatcher::new(
        project.enrichment.clone(),
        Arc::clone(&storage),
        tables.clone(),
        options.refresh_interval.unwrap_or(std::time::Duration::MAX),
    );
    let owned_rules: Vec<DetectionDef> = rules.iter().map(|r| (*r).clone()).collect();
    let log_table = table.clone();
    type Item = (ReadItem, Arc<Generation>, BatchSql);
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Item>(4);
    let producer = std::thread::spawn(move || {
        let rules: Vec<&DetectionDef> = owned_rules.iter().collect();
        let mut planned_generation = 0;
        let mut replans = 0;
        let mut replan_errors = Vec::new();
        read_inputs(&reader, inputs, &mut |item| {
            let generation = watcher.poll();
            if generation.id != planned_generation && !sql.is_empty() {
                match sql.replan(&rules, &log_table, &generation.tables) {
                    Ok(()) => replans += 1,
                    Err(e) => replan_errors.extend(e.iter().map(ToString::to_string)),
                }
                planned_generation = generation.id;
            }
            let (item, batch_sql) = match item {
                ReadItem::Batch(mut batch) => {
                    if !selectors.is_empty() {
                        batch.enrichment = Some(BatchEnrichment::compute(
                            &selectors,
                            &generation.tables,
                            &batch.batch,
                        ));
                    }
                    let batch_sql = sql.evaluate(&batch);
                    (ReadItem::Batch(batch), batch_sql)
                }
                other => (other, BatchSql::default()),
            };
            sender.send((item, generation, batch_sql)).is_ok()
        });
        (watcher, replans, replan_errors)
    });

    let progress = progress_bar(options.progress);
    let mut matches: Vec<RuleMatch> = Vec::new();
    let mut generation_id = 0;
    for (item, generation, batch_sql) in receiver {
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
                for (position, message) in &batch_sql.filter_errors {
                    errors.push(ErrorRecord {
                        kind: "filter".into(),
                        rule: Some(rules[*position].name.clone()),
                        function: None,
                        source: Some(batch.file.to_string()),
                        error: format!("{message} (every event of this batch went to detect())"),
                        traceback: None,
                    });
                }
                let mut sql_matches = batch_sql.matches.into_iter();
                let mut selections = batch_sql.selections.into_iter();
                for (position, rule) in rules.iter().enumerate() {
                    let sql_result = sql_matches.next().flatten();
                    let selection = selections.next().flatten();
                    let Some(stats) = summary.rules.get_mut(&rule.name) else {
                        continue;
                    };
                    let outcomes = match (python_index[position], sql_result) {
                        (Some(index), _) => {
                            if let Some(rows) = &selection {
                                stats.filtered_out += (batch.len() - rows.len()) as u64;
                            }
                            runtime.evaluate(
                                index,
                                &batch,
                                selection.as_deref(),
                                &mut stats.python_calls,
                            )
                        }
                        (None, Some(result)) => {
                            stats.sql_batches += 1;
                            sql_outcomes(rule, &batch, result, stats, &mut errors)
                        }
                        (None, None) => Vec::new(),
                    };
                    collect_outcomes(rule, &batch, outcomes, stats, &mut matches, &mut errors);
                }
                if let Some(bar) = &progress {
                    bar.set_position(summary.events);
                }
            }
        }
    }
    let Ok((watcher, replans, replan_errors)) = producer.join() else {
        return Err(EngineError::Internal(
            "the log reader thread panicked".into(),
        ));
    };
    for rule in &rules {
        if let (true, Some(stats)) = (rule.is_sql(), summary.rules.get_mut(&rule.name)) {
            stats.sql_plans += replans;
        }
    }
    errors.extend(replan_errors.into_iter().map(|message| ErrorRecord {
        kind: "enrichment".into(),
        rule: None,
        function: None,
        source: None,
        error: format!("{message} (the queries kept their previous plans)"),
        traceback: None,
    }));
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
    errors.extend(crate::delivery::unknown_destinations(
        &alerts,
        &project.settings.delivery,
    ));

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
    // The run is committed; what delivery does is reported, never undone.
    if !project.settings.delivery.destinations.is_empty() {
        let report = crate::delivery::after_run(
            storage.as_ref(),
            &project.settings.delivery,
            &alerts,
            &run_id,
            options.deliver,
        );
        errors.extend(report.error_records());
        summary.errors = errors.len() as u64;
        summary.delivery = Some(report);
        if let Err(e) = rewrite_after_delivery(out_storage.as_ref(), &prefix, &errors, &summary) {
            errors.push(ErrorRecord {
                kind: "delivery".into(),
                rule: None,
                function: None,
                source: None,
                error: format!(
                    "the run's outputs could not be updated with the delivery results: {e}"
                ),
                traceback: None,
            });
        }
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

/// A SQL rule's result on one batch as outcomes; a failed execution is an
/// error record naming the rule and the batch's file.
pub(crate) fn sql_outcomes(
    rule: &DetectionDef,
    batch: &EventBatch,
    result: Result<Vec<MatchOutput>, String>,
    stats: &mut RuleSummary,
    errors: &mut Vec<ErrorRecord>,
) -> Vec<RuleOutcome> {
    match result {
        Ok(outputs) => outputs
            .into_iter()
            .map(|o| RuleOutcome::Match(Box::new(o)))
            .collect(),
        Err(message) => {
            stats.errors += 1;
            errors.push(ErrorRecord {
                kind: "rule".into(),
                rule: Some(rule.name.clone()),
                function: Some("query".into()),
                source: Some(batch.file.to_string()),
                error: message,
                traceback: None,
            });
            Vec::new()
        }
    }
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
    output: MatchOutput,
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
        explicit_destinations: output.destinations.is_some(),
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
