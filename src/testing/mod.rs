//! `ravenwatch test`: detection test cases run through the same path as
//! `run`.
//!
//! A case's events are decoded by the log reader into an Arrow batch, the
//! detection is imported afresh (module state, helper modules, enrichment
//! fixtures and mocks are per case), its outcomes go through the engine's
//! fallbacks and the alert grouper, and the resulting alert is compared with
//! the case's expectations. Only `python` touches the interpreter; this
//! module sees values.

mod case;
mod report;

pub use case::{load_cases, test_files, Expectations, Fixture, FixtureMode, TestCase};
pub use report::{json_report, junit_xml, write_human};

use crate::alerts::{AlertGrouper, AlertState, ErrorRecord, RuleSettings};
use crate::config::{ConfigError, DetectionDef, Project, Severity};
use crate::engine::{collect_outcomes, prepare_tables, sql_outcomes, RuleSummary};
use crate::enrichment::{EnrichmentTable, Tables};
use crate::logs::{EventBatch, EventReader, ReadItem};
use crate::outcome::RuleOutcome;
use crate::python::{PythonError, PythonRuntime};
use crate::query::{sql_runtime, AutoFilter, RulePlan};
use crate::schema::rows_to_batch;
use crate::storage::Storage;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum TestError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Python(#[from] PythonError),
}

/// Which cases to run.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Detection names (empty: all).
    pub rules: Vec<String>,
    /// Keep cases whose `rule::case` id contains this (case-insensitive).
    pub keyword: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Passed,
    Failed,
    Skipped,
}

/// One expectation that did not hold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    pub field: String,
    pub expected: Value,
    /// `None`: the field is absent.
    pub actual: Option<Value>,
}

/// What the case produced (its first alert, when several).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Actual {
    pub matched: bool,
    pub matches: u64,
    pub alerts: u64,
    pub title: Option<String>,
    pub severity: Option<Severity>,
    pub dedupe: Option<String>,
    pub context: Option<Map<String, Value>>,
    pub activated: Option<bool>,
    pub match_count: Option<u64>,
    pub python_calls: u64,
}

#[derive(Debug, Clone)]
pub struct CaseResult {
    pub case: TestCase,
    pub status: Status,
    pub mismatches: Vec<Mismatch>,
    /// Errors that fail the case: exceptions (with traceback), bad events or
    /// fixtures, a detection that does not load.
    pub errors: Vec<String>,
    pub actual: Actual,
    pub seconds: f64,
}

/// Results of a whole `ravenwatch test`.
#[derive(Debug, Default)]
pub struct TestReport {
    pub results: Vec<CaseResult>,
    /// Test files that do not parse or validate; each counts as an error.
    pub collection_errors: Vec<ConfigError>,
    /// Tables that failed to sync (the previous snapshot was used).
    pub warnings: Vec<String>,
    pub seconds: f64,
}

impl TestReport {
    fn count(&self, status: Status) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }
    pub fn passed(&self) -> usize {
        self.count(Status::Passed)
    }
    pub fn failed(&self) -> usize {
        self.count(Status::Failed)
    }
    pub fn skipped(&self) -> usize {
        self.count(Status::Skipped)
    }
    pub fn ok(&self) -> bool {
        self.failed() == 0 && self.collection_errors.is_empty()
    }

    /// `N passed, M failed` (+ `, K skipped`, `, E errors` when any).
    pub fn summary_line(&self) -> String {
        let mut line = format!("{} passed, {} failed", self.passed(), self.failed());
        if self.skipped() > 0 {
            line.push_str(&format!(", {} skipped", self.skipped()));
        }
        let errors = self.collection_errors.len();
        if errors > 0 {
            line.push_str(&format!(
                ", {errors} error{}",
                if errors == 1 { "" } else { "s" }
            ));
        }
        line
    }
}

/// Event time given to test events that have none: cases rarely care about
/// time, and threshold cases need their events inside one window, so event
/// `i` gets this time plus `i` seconds.
pub const DEFAULT_EVENT_TIME: &str = "2024-01-01T00:00:00Z";

/// Runs the selected test cases.
///
/// # Errors
/// An unknown detection name in the selection, or an interpreter that cannot start.
pub fn run_tests(
    project: &Project,
    storage: &dyn Storage,
    selection: &Selection,
) -> Result<TestReport, TestError> {
    let started = Instant::now();
    let names: Vec<&str> = project.detections.iter().map(|d| d.name.as_str()).collect();
    for rule in &selection.rules {
        if !names.contains(&rule.as_str()) {
            let hint = crate::suggest::did_you_mean(rule, &names);
            return Err(TestError::Usage(format!("no detection `{rule}`{hint}")));
        }
    }
    let mut report = TestReport::default();
    let (mut tables, sync_errors) = prepare_tables(project, storage);
    report.warnings = sync_errors
        .iter()
        .map(|e| {
            format!(
                "{}: {} (tests use the previous snapshot)",
                e.source.as_deref().unwrap_or("enrichment"),
                e.error
            )
        })
        .collect();
    // A table with no snapshot yet (a dynamic table before its first upload)
    // is empty, so fixtures can still fill it.
    for def in &project.enrichment {
        if !tables.contains_key(&def.name) {
            if let Ok(table) = EnrichmentTable::empty(def) {
                tables.insert(def.name.clone(), Arc::new(table));
            }
        }
    }
    let mut runtime = PythonRuntime::new(&project.detection_lib_dir(), &tables, &[])?;
    runtime.set_time_budget(project.settings.rule_timeout);
    let sql_runtime = sql_runtime().map_err(TestError::Usage)?;
    let mut engines = Engines {
        python: &mut runtime,
        sql: &sql_runtime,
    };
    let keyword = selection.keyword.as_ref().map(|k| k.to_lowercase());
    let mut collected = 0;
    for def in &project.detections {
        if !selection.rules.is_empty() && !selection.rules.contains(&def.name) {
            continue;
        }
        let (cases, errors) = load_cases(project, def);
        report.collection_errors.extend(errors);
        collected += cases.len();
        for case in cases {
            if keyword
                .as_ref()
                .is_some_and(|k| !case.id().to_lowercase().contains(k))
            {
                continue;
            }
            let result = match &case.skip {
                Some(_) => CaseResult {
                    case,
                    status: Status::Skipped,
                    mismatches: Vec::new(),
                    errors: Vec::new(),
                    actual: Actual::default(),
                    seconds: 0.0,
                },
                None => {
                    // What the rule prints goes to stderr, labelled, so a
                    // `--format json` report on stdout stays clean.
                    engines.python.start_capture();
                    let result = run_case(project, def, &tables, &mut engines, case);
                    let printed = engines.python.finish_capture();
                    if !printed.is_empty() {
                        let id = result.case.id();
                        for line in printed.lines() {
                            eprintln!("[{id}] {line}");
                        }
                    }
                    result
                }
            };
            report.results.push(result);
        }
    }
    if report.results.is_empty() && report.collection_errors.is_empty() {
        return Err(TestError::Usage(nothing_ran(project, selection, collected)));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Why a selection ran no case: no detection, no test file, or a `-k`
/// that matches none of the cases there are.
fn nothing_ran(project: &Project, selection: &Selection, collected: usize) -> String {
    if project.detections.is_empty() {
        return format!(
            "no detections in {}: nothing to test",
            project.root.join("detections").display()
        );
    }
    match &selection.keyword {
        Some(k) if collected > 0 => format!(
            "no test case matches -k `{k}` ({collected} case{} in the selected detections; -k matches part of `rule::case`)",
            if collected == 1 { "" } else { "s" }
        ),
        _ => "no test cases in the selected detections: add detections/<rule>/tests/<name>.yml (see README, Detection tests)".into(),
    }
}

/// Inserts `value` at dotted `path` unless something is already there.
fn fill_missing(event: &mut Map<String, Value>, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut map = event;
    for part in parents {
        let entry = map
            .entry(part.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        match entry {
            Value::Object(inner) => map = inner,
            _ => return,
        }
    }
    map.entry(last.to_string()).or_insert(value);
}

/// The case's events as batches, as the log reader decodes them.
/// A case's events as typed batches, enriched by the log table's selectors
/// from `tables`.
fn case_batches(
    project: &Project,
    case: &TestCase,
    tables: &Tables,
) -> Result<Vec<Arc<EventBatch>>, Vec<String>> {
    let Some(table) = project.log_table(&case.table) else {
        return Err(vec![format!("log table `{}` has no schema", case.table)]);
    };
    let base = chrono::DateTime::parse_from_rfc3339(DEFAULT_EVENT_TIME)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    let path: Vec<&str> = table.timestamp.split('.').collect();
    let events: Vec<Value> = case
        .events
        .iter()
        .enumerate()
        .map(|(i, event)| {
            let mut event = event.clone();
            if let Value::Object(map) = &mut event {
                let time = base + chrono::Duration::seconds(i as i64);
                fill_missing(
                    map,
                    &path,
                    Value::String(time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                );
            }
            event
        })
        .collect();
    let reader = EventReader::new(table);
    let mut batches = Vec::new();
    let mut errors = Vec::new();
    reader.read_values(events, &case.location(), &mut |item| match item {
        ReadItem::Batch(mut b) => {
            if !table.enrich.is_empty() {
                b.apply_selectors(&table.enrich, tables);
            }
            batches.push(Arc::from(b))
        }
        ReadItem::Fatal(e) => errors.push(e.to_string()),
        ReadItem::Error(e) => {
            let position = e
                .source
                .rsplit_once('#')
                .and_then(|(_, n)| n.parse::<usize>().ok())
                .map(|n| format!("log[{}]", n - 1))
                .unwrap_or(e.source);
            errors.push(format!("{position}: {}", e.message));
        }
    });
    if errors.is_empty() {
        Ok(batches)
    } else {
        Err(errors)
    }
}

/// The project's tables with the case's fixtures applied (only the changed ones).
fn fixture_tables(project: &Project, tables: &Tables, case: &TestCase) -> Result<Tables, String> {
    let mut out = Tables::new();
    for fixture in &case.fixtures {
        let def = project
            .enrichment_table(&fixture.table)
            .ok_or_else(|| format!("enrichment table `{}` is not defined", fixture.table))?;
        if def.format == crate::config::TableFormat::Mmdb {
            return Err(format!(
                "enrichment fixture `{}`: an MMDB table takes no fixture rows (point its data.mmdb at a test database instead)",
                fixture.table
            ));
        }
        let rows = rows_to_batch(&def.schema, &fixture.rows)
            .map_err(|e| format!("enrichment fixture `{}`: {e}", fixture.table))?;
        let batch = match (fixture.mode, tables.get(&fixture.table)) {
            (FixtureMode::Extend, Some(base)) => {
                arrow::compute::concat_batches(&rows.schema(), [&base.batch, &rows])
                    .map_err(|e| format!("enrichment fixture `{}`: {e}", fixture.table))?
            }
            _ => rows,
        };
        let table = EnrichmentTable::build(def, batch, None).map_err(|e| e.to_string())?;
        out.insert(fixture.table.clone(), Arc::new(table));
    }
    Ok(out)
}

fn error_text(e: &ErrorRecord) -> String {
    let function = e.function.as_deref().unwrap_or("detect");
    match &e.traceback {
        Some(tb) => format!("{function}() raised:\n{tb}"),
        None => format!("{function}(): {}", e.error),
    }
}

/// What runs a case: the interpreter for Python rules, the runtime that
/// executes SQL for query rules and filters.
struct Engines<'a> {
    python: &'a mut PythonRuntime,
    sql: &'a tokio::runtime::Runtime,
}

fn prepare_rule(
    project: &Project,
    def: &DetectionDef,
    case: &TestCase,
    effective: &Tables,
    fixtures: &Tables,
    engines: &mut Engines<'_>,
) -> Result<RulePlan, Vec<String>> {
    let log = project
        .log_table(&case.table)
        .ok_or_else(|| vec![format!("log table `{}` has no schema", case.table)])?;
    if def.is_sql() && !case.mocks.is_empty() {
        return Err(vec![
            "`mocks` replace Python names; a SQL detection has none".into(),
        ]);
    }
    // Mocks replace names the derived filter reads through (helpers,
    // tables): a case with mocks checks the hand-written filter only.
    let lib_dir = project.detection_lib_dir();
    let auto = case.mocks.is_empty().then_some(AutoFilter {
        lib_dir: &lib_dir,
        verify: false,
    });
    let plan = RulePlan::new(engines.sql, def, 0, log, effective, auto)
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    if let RulePlan::Python { .. } = plan {
        engines
            .python
            .load_case(def, fixtures, &case.mocks)
            .map_err(|e| vec![e.to_string()])?;
    }
    Ok(plan)
}

/// Runs `rule` on one batch of a case. A filter is checked against what
/// `detect()` decides: every event `detect()` matches must pass it.
fn case_outcomes(
    def: &DetectionDef,
    rule: &RulePlan,
    engines: &Engines<'_>,
    batch: &Arc<EventBatch>,
    stats: &mut RuleSummary,
    errors: &mut Vec<ErrorRecord>,
    check: &mut FilterCheck,
) -> Vec<RuleOutcome> {
    match rule {
        RulePlan::Sql(sql) => {
            stats.sql_batches += 1;
            let result = sql.evaluate(engines.sql, batch);
            sql_outcomes(def, batch, result, stats, errors)
        }
        RulePlan::Python { filter, .. } => {
            let outcomes = engines.python.evaluate_case(batch, &mut stats.python_calls);
            let Some(filter) = filter else {
                check.passed += batch.len();
                return outcomes;
            };
            let selected = match filter.select(&batch.batch) {
                Ok(rows) => rows,
                Err(e) => {
                    check
                        .problems
                        .push(format!("filter `{}` failed: {e}", filter.text));
                    return outcomes;
                }
            };
            check.passed += selected.len();
            let kept = |row: usize| selected.binary_search(&(row as u32)).is_ok();
            outcomes
                .into_iter()
                .filter(|o| match o {
                    RuleOutcome::Match(m) if !kept(m.row) => {
                        check.rejected.push(event_label(batch, m.row));
                        false
                    }
                    RuleOutcome::Error { row, .. } => kept(*row),
                    _ => true,
                })
                .collect()
        }
    }
}

/// Checks what `detect()` decided on a batch (after the hand-written
/// filter, as in a run) against the filter derived from its code: every
/// event it matched or raised on must pass.
fn check_derived(
    rule: &RulePlan,
    batch: &EventBatch,
    tables: &Tables,
    outcomes: &[RuleOutcome],
    check: &mut FilterCheck,
) {
    let RulePlan::Python {
        derived: Some(derived),
        ..
    } = rule
    else {
        check.derived_passed += batch.len();
        return;
    };
    let keep = derived.keep(batch, tables);
    check.derived_passed += keep.count_set_bits();
    for outcome in outcomes {
        let row = match outcome {
            RuleOutcome::Match(m) => m.row,
            RuleOutcome::Error { row, .. } => *row,
        };
        if !keep.value(row) {
            check.derived_rejected.push(event_label(batch, row));
        }
    }
}

/// What a case taught about its rule's filter.
#[derive(Default)]
struct FilterCheck {
    /// Events that passed the filter (all events without one).
    passed: usize,
    /// Events the filter rejected although `detect()` matched them.
    rejected: Vec<String>,
    /// Events the derived filter passed (all events without one).
    derived_passed: usize,
    /// Events the derived filter rejected although `detect()` matched
    /// them or raised on them.
    derived_rejected: Vec<String>,
    problems: Vec<String>,
}

/// `log[i]` of a case event.
fn event_label(batch: &EventBatch, row: usize) -> String {
    match batch.positions.get(row) {
        Some(n) => format!("log[{}]", n.saturating_sub(1)),
        None => format!("event {row}"),
    }
}

fn run_case(
    project: &Project,
    def: &DetectionDef,
    tables: &Tables,
    engines: &mut Engines<'_>,
    case: TestCase,
) -> CaseResult {
    let started = Instant::now();
    let mut result = CaseResult {
        case,
        status: Status::Failed,
        mismatches: Vec::new(),
        errors: Vec::new(),
        actual: Actual::default(),
        seconds: 0.0,
    };
    let case = &result.case;
    let prepared = fixture_tables(project, tables, case)
        .map_err(|e| vec![e])
        .and_then(|fixtures| {
            // Selectors see the fixtures too, as detections do.
            let mut effective = tables.clone();
            effective.extend(fixtures.iter().map(|(k, v)| (k.clone(), Arc::clone(v))));
            let batches = case_batches(project, case, &effective)?;
            let rule = prepare_rule(project, def, case, &effective, &fixtures, engines)?;
            Ok((batches, rule, effective))
        });
    let (batches, rule, effective) = match prepared {
        Ok(b) => b,
        Err(errors) => {
            result.errors = errors;
            result.seconds = started.elapsed().as_secs_f64();
            return result;
        }
    };

    let mut stats = RuleSummary::default();
    let mut matches = Vec::new();
    let mut errors = Vec::new();
    let mut check = FilterCheck::default();
    for batch in &batches {
        let outcomes = case_outcomes(
            def,
            &rule,
            engines,
            batch,
            &mut stats,
            &mut errors,
            &mut check,
        );
        check_derived(&rule, batch, &effective, &outcomes, &mut check);
        collect_outcomes(def, batch, outcomes, &mut stats, &mut matches, &mut errors);
    }
    let filter = match &rule {
        RulePlan::Python {
            filter: Some(filter),
            ..
        } => Some(filter),
        _ => None,
    };
    if let (Some(filter), false) = (filter, check.rejected.is_empty()) {
        check.problems.push(format!(
            "filter `{}` rejects {}, which detect() matches: a filter may only remove events that detect() rejects",
            filter.text,
            check.rejected.join(", ")
        ));
    }
    if let (Some(filter), true, 0) = (filter, case.expect.matched, check.passed) {
        check.problems.push(format!(
            "the case expects a match, but filter `{}` rejects every event of it",
            filter.text
        ));
    }
    let derived = match &rule {
        RulePlan::Python {
            derived: Some(d), ..
        } => Some(d),
        _ => None,
    };
    if let (Some(derived), false) = (derived, check.derived_rejected.is_empty()) {
        check.problems.push(format!(
            "the filter derived from detect() ({}) rejects {}, which detect() matches or raises on; please report this (`auto_filter: false` in detection.yml turns it off)",
            derived.text(),
            check.derived_rejected.join(", ")
        ));
    }
    if let (Some(derived), true, 0) = (derived, case.expect.matched, check.derived_passed) {
        check.problems.push(format!(
            "the case expects a match, but the filter derived from detect() ({}) rejects every event of it",
            derived.text()
        ));
    }
    check.problems.dedup();
    let alerts = AlertGrouper::group_all(
        HashMap::from([(def.name.clone(), RuleSettings::from(def))]),
        AlertState::default(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        &mut matches,
    );

    let first = alerts.first();
    result.actual = Actual {
        matched: !matches.is_empty(),
        matches: matches.len() as u64,
        alerts: alerts.len() as u64,
        title: first.map(|a| a.title.clone()),
        severity: first.map(|a| a.severity),
        dedupe: first.map(|a| a.dedupe.clone()),
        context: first.map(|a| a.context.clone()),
        activated: first.map(|a| a.activated),
        match_count: first.map(|a| a.match_count),
        python_calls: stats.python_calls,
    };
    result.errors = errors.iter().map(error_text).collect();
    result.errors.extend(check.problems);
    result.mismatches = compare(&case.expect, &result.actual);
    result.status = if result.errors.is_empty() && result.mismatches.is_empty() {
        Status::Passed
    } else {
        Status::Failed
    };
    result.seconds = started.elapsed().as_secs_f64();
    result
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// Expected is a subset of actual: mappings compare member by member
/// (recursively), anything else compares whole; an expected `null` also
/// accepts an absent member.
fn compare_subset(path: &str, expected: &Value, actual: Option<&Value>, out: &mut Vec<Mismatch>) {
    match (expected, actual) {
        (Value::Object(e), Some(Value::Object(a))) => {
            for (k, v) in e {
                compare_subset(&format!("{path}.{k}"), v, a.get(k), out);
            }
        }
        (Value::Null, None) => {}
        (e, Some(a)) if json_eq(e, a) => {}
        (e, a) => out.push(Mismatch {
            field: path.to_string(),
            expected: e.clone(),
            actual: a.cloned(),
        }),
    }
}

fn compare(expect: &Expectations, actual: &Actual) -> Vec<Mismatch> {
    let mut out = Vec::new();
    if expect.matched != actual.matched {
        out.push(Mismatch {
            field: "match".into(),
            expected: Value::Bool(expect.matched),
            actual: Some(Value::Bool(actual.matched)),
        });
        return out;
    }
    let mut check = |field: &str, expected: Option<Value>, actual: Option<Value>| {
        if let Some(expected) = expected {
            compare_subset(field, &expected, actual.as_ref(), &mut out);
        }
    };
    check(
        "alerts",
        expect.alerts.map(Value::from),
        Some(Value::from(actual.alerts)),
    );
    check(
        "title",
        expect.title.clone().map(Value::String),
        actual.title.clone().map(Value::String),
    );
    check(
        "severity",
        expect.severity.map(|s| Value::String(s.as_str().into())),
        actual.severity.map(|s| Value::String(s.as_str().into())),
    );
    check(
        "dedupe",
        expect.dedupe.clone().map(Value::String),
        actual.dedupe.clone().map(Value::String),
    );
    check(
        "activated",
        expect.activated.map(Value::Bool),
        actual.activated.map(Value::Bool),
    );
    check(
        "match_count",
        expect.match_count.map(Value::from),
        actual.match_count.map(Value::from),
    );
    check(
        "context",
        expect.context.clone().map(Value::Object),
        actual.context.clone().map(Value::Object),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn context_is_compared_as_a_subset() {
        let mut out = Vec::new();
        let actual =
            json!({"known_ip": {"ip": "1.2.3.4", "tags": ["vpn"]}, "user": "bob", "n": 2.0});
        compare_subset(
            "context",
            &json!({"known_ip": {"tags": ["vpn"]}, "n": 2, "missing": null}),
            Some(&actual),
            &mut out,
        );
        assert!(out.is_empty(), "{out:?}");
        compare_subset(
            "context",
            &json!({"known_ip": {"ip": "9.9.9.9"}, "user": "alice", "absent": 1}),
            Some(&actual),
            &mut out,
        );
        let fields: Vec<&str> = out.iter().map(|m| m.field.as_str()).collect();
        assert_eq!(
            fields,
            ["context.known_ip.ip", "context.user", "context.absent"]
        );
        assert_eq!(out[2].actual, None);
    }

    #[test]
    fn a_wrong_match_hides_the_other_expectations() {
        let expect = Expectations {
            matched: true,
            title: Some("x".into()),
            ..Default::default()
        };
        let out = compare(&expect, &Actual::default());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].field, "match");
    }

    #[test]
    fn fills_a_missing_nested_time_only() {
        let mut event = json!({"event": {"action": "x"}})
            .as_object()
            .unwrap()
            .clone();
        fill_missing(&mut event, &["event", "created"], json!("t"));
        fill_missing(&mut event, &["event", "action"], json!("y"));
        assert_eq!(
            Value::Object(event),
            json!({"event": {"action": "x", "created": "t"}})
        );
    }
}
