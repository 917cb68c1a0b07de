//! What rules produced on a batch → rule matches and error records, with
//! the detection's fallbacks filled in. `run` and `test` both use it, so a
//! test case sees exactly what a run would.

use crate::alerts::{ErrorKind, ErrorRecord, RuleMatch};
use crate::config::DetectionDef;
use crate::logs::EventBatch;
use crate::outcome::{MatchOutput, RuleOutcome};
use crate::schema::micros_to_rfc3339;

use super::output::RuleSummary;

/// A SQL rule's result on one batch as outcomes; a failed execution is an
/// error record naming the rule and the batch's file.
pub fn sql_outcomes(
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
                kind: ErrorKind::Rule,
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
pub fn collect_outcomes(
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
                    ErrorKind::Rule,
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
                        ErrorKind::Function,
                        &rule.name,
                        Some(&fe.function),
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
        unique: output.unique,
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
