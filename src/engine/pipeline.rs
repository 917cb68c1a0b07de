//! The stages of a run: decode → enrich → filter → detect → collect.
//!
//! The inputs are decoded on several threads and taken back in input order
//! by the reader thread, which prepares each batch ([`BatchPreparer`]): it looks for a newer table generation (re-planning
//! SQL on a switch), applies the `enrich:` selectors (enrich) and runs the
//! filters and queries (filter). Batches travel over a bounded channel to
//! the main thread, which hands them to the Python workers (detect, across
//! the process boundary in `workers`) and collects their outcomes in input
//! order ([`evaluate_batch`]).

use super::collect::{collect_outcomes, sql_outcomes};
use super::output::Summary;
use super::workers::BatchOutcomes;
use crate::alerts::{ErrorKind, ErrorRecord, RuleMatch};
use crate::config::{DetectionDef, LogTable, Selector};
use crate::enrichment::{Generation, TableWatcher};
use crate::logs::{read_inputs_parallel, EventBatch, EventReader, Input, ReadItem};
use crate::outcome::RuleOutcome;
use crate::query::{RuleBatch, RunPlan};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::thread::JoinHandle;

/// A read item with the table generation it was prepared against and one
/// SQL result per rule (empty for anything but a batch).
pub(super) type Prepared = (ReadItem, Arc<Generation>, Vec<RuleBatch>);

/// Batches waiting between the threads: enough to keep Python busy, few
/// enough that memory stays bounded.
const CHANNEL_DEPTH: usize = 2;

/// The reader thread's state.
pub(super) struct BatchPreparer {
    pub watcher: TableWatcher,
    pub selectors: Vec<Selector>,
    pub plan: RunPlan,
    pub log_table: LogTable,
    planned_generation: u64,
    /// Times the queries were planned again for a newer generation.
    pub replans: u64,
    /// Queries that no longer planned on a newer generation.
    pub replan_errors: Vec<String>,
}

impl BatchPreparer {
    pub fn new(watcher: TableWatcher, plan: RunPlan, log_table: &LogTable) -> Self {
        Self {
            watcher,
            selectors: log_table.enrich.clone(),
            plan,
            log_table: log_table.clone(),
            planned_generation: 0,
            replans: 0,
            replan_errors: Vec::new(),
        }
    }

    /// Stamps `item` with the current table generation and, for a batch,
    /// adds its enrichment and SQL results.
    pub fn prepare(&mut self, item: ReadItem) -> Prepared {
        let generation = self.watcher.poll();
        if generation.id != self.planned_generation && self.plan.reads_tables() {
            match self.plan.replan(&self.log_table, &generation.tables) {
                Ok(()) => self.replans += 1,
                Err(e) => self.replan_errors.extend(e.iter().map(ToString::to_string)),
            }
        }
        self.planned_generation = generation.id;
        match item {
            ReadItem::Batch(mut batch) => {
                if !self.selectors.is_empty() {
                    batch.apply_selectors(&self.selectors, &generation.tables);
                }
                let results = self.plan.evaluate(&batch, &generation.tables);
                (ReadItem::Batch(batch), generation, results)
            }
            other => (other, generation, Vec::new()),
        }
    }
}

/// Starts the reader thread: inputs decoded on `decoders` threads
/// ([`read_inputs_parallel`]), each batch prepared in input order. It
/// stops early when the receiver is dropped and hands the preparer back
/// when joined, with how many inputs were read to their end.
pub(super) fn spawn_reader(
    reader: EventReader,
    inputs: Vec<Input>,
    mut preparer: BatchPreparer,
    decoders: usize,
) -> (Receiver<Prepared>, JoinHandle<(BatchPreparer, usize)>) {
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Prepared>(CHANNEL_DEPTH);
    let handle = std::thread::spawn(move || {
        let read = read_inputs_parallel(Arc::new(reader), inputs, decoders, &mut |item| {
            sender.send(preparer.prepare(item)).is_ok()
        });
        (preparer, read)
    });
    (receiver, handle)
}

/// What each Python rule (plan order) should see of a batch: the rows its
/// filter kept, or `None` for every row.
pub(super) fn python_selections(
    results: &[RuleBatch],
    python_rules: usize,
) -> Vec<Option<Vec<u32>>> {
    let mut out = vec![None; python_rules];
    for result in results {
        if let RuleBatch::Python {
            index, selection, ..
        } = result
        {
            out[*index].clone_from(selection);
        }
    }
    out
}

/// Collects every rule's outcomes on one batch, in plan order: Python
/// rules' from the workers (`python`, per Python rule), SQL rules' as the
/// reader thread computed them.
pub(super) fn evaluate_batch(
    rules: &[DetectionDef],
    mut python: BatchOutcomes,
    batch: &Arc<EventBatch>,
    results: Vec<RuleBatch>,
    summary: &mut Summary,
    matches: &mut Vec<RuleMatch>,
    errors: &mut Vec<ErrorRecord>,
) {
    summary.events += batch.len() as u64;
    if let Some(e) = &batch.enrichment {
        summary.enrichment_lookups += e.lookups;
        summary.enrichment_hits += e.hits;
    }
    for (rule, result) in rules.iter().zip(&results) {
        if let RuleBatch::Python {
            filter_error: Some(message),
            ..
        } = result
        {
            errors.push(ErrorRecord {
                kind: ErrorKind::Filter,
                rule: Some(rule.name.clone()),
                function: None,
                source: Some(batch.file.to_string()),
                error: format!("{message} (every event of this batch went to detect())"),
                traceback: None,
            });
        }
    }
    let mut violations = 0;
    for (rule, result) in rules.iter().zip(results) {
        let Some(stats) = summary.rules.get_mut(&rule.name) else {
            continue;
        };
        stats.events += batch.len() as u64;
        let outcomes = match result {
            RuleBatch::Python {
                index,
                auto_filtered_out,
                filtered_out,
                unverified,
                ..
            } => {
                stats.auto_filtered_out += auto_filtered_out;
                stats.filtered_out += filtered_out;
                let (calls, outcomes) = python
                    .get_mut(index)
                    .map(std::mem::take)
                    .unwrap_or_default();
                stats.python_calls += calls;
                if !unverified.is_empty() {
                    violations += check_derived(rule, batch, &unverified, &outcomes, errors);
                }
                outcomes
            }
            RuleBatch::Sql(result) => {
                stats.sql_batches += 1;
                sql_outcomes(rule, batch, result, stats, errors)
            }
        };
        collect_outcomes(rule, batch, outcomes, stats, matches, errors);
    }
    summary.filter_violations += violations;
}

/// `--verify-filters`: every outcome of `rule` on an event its derived filter
/// would have dropped (a match, or an error `detect()` raised) is a
/// soundness violation, reported as an error record naming the event.
fn check_derived(
    rule: &DetectionDef,
    batch: &EventBatch,
    unverified: &[u32],
    outcomes: &[RuleOutcome],
    errors: &mut Vec<ErrorRecord>,
) -> u64 {
    let mut violations = 0;
    for outcome in outcomes {
        let (row, what) = match outcome {
            RuleOutcome::Match(m) => (m.row, "matched"),
            RuleOutcome::Error { row, .. } => (*row, "raised on"),
        };
        if unverified.binary_search(&(row as u32)).is_ok() {
            violations += 1;
            errors.push(ErrorRecord {
                kind: ErrorKind::Filter,
                rule: Some(rule.name.clone()),
                function: Some("detect".into()),
                source: Some(batch.source(row)),
                error: format!(
                    "the filter derived from detect() drops this event, but detect() {what} it (please report this: derived filters must keep every event a rule could match)"
                ),
                traceback: None,
            });
        }
    }
    violations
}
