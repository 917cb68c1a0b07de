//! Panther-format rule directories (a panther-analysis checkout, nothing
//! added): discovery of rules, global helpers and data models from their
//! YAML, and `ravenwatch test -p DIR` over their unit tests with Panther's
//! pass/fail rules (the cases run in `python::run_panther_cases`).

pub use crate::config::{discover, is_panther_dir, PantherDir, PantherRule, PantherTest};

use crate::testing::{
    Actual, CaseResult, Expectations, Selection, Status, TestCase, TestError, TestReport,
};
use serde_json::{json, Map, Value};
use std::time::Instant;

/// Runs the unit tests of the Panther rules under `root`.
///
/// # Errors
/// An unknown rule in the selection, nothing to run, or an interpreter
/// that cannot start.
pub fn run_tests(root: &std::path::Path, selection: &Selection) -> Result<TestReport, TestError> {
    let started = Instant::now();
    let dir = discover(root);
    let ids: Vec<&str> = dir.rules.iter().map(|r| r.id.as_str()).collect();
    for rule in &selection.rules {
        if !ids.contains(&rule.as_str()) {
            let hint = crate::suggest::did_you_mean(rule, &ids);
            return Err(TestError::Usage(format!("no rule `{rule}`{hint}")));
        }
    }
    let keyword = selection.keyword.as_ref().map(|k| k.to_lowercase());
    let mut report = TestReport::default();
    // The cases to run, per rule, and every case in report order.
    let mut chosen: Vec<(&PantherRule, Vec<&PantherTest>)> = Vec::new();
    for rule in &dir.rules {
        if !selection.rules.is_empty() && !selection.rules.contains(&rule.id) {
            continue;
        }
        let cases: Vec<&PantherTest> = rule
            .tests
            .iter()
            .filter(|t| {
                keyword.as_ref().is_none_or(|k| {
                    format!("{}::{}", rule.id, t.name)
                        .to_lowercase()
                        .contains(k)
                })
            })
            .collect();
        if !cases.is_empty() {
            chosen.push((rule, cases));
        }
    }
    let runnable: Vec<&(&PantherRule, Vec<&PantherTest>)> =
        chosen.iter().filter(|(r, _)| r.file.is_some()).collect();
    let payload = payload(&dir, &runnable);
    let answer = crate::python::run_panther_cases(&payload.to_string())?;
    let answer: Value = serde_json::from_str(&answer)
        .map_err(|e| TestError::Usage(format!("the Panther runner answered badly: {e}")))?;
    // What `validate` rejects is printed, but only failing cases fail a
    // test run (as with Panther's own tool).
    report.warnings = dir.problems.iter().map(ToString::to_string).collect();
    report.warnings.extend(
        answer["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_string)),
    );
    report.results = results(&chosen, &answer);
    if report.results.is_empty() {
        let why = match &selection.keyword {
            Some(k) => format!("no test case matches -k `{k}` (-k matches part of `RuleID::Name`)"),
            None => format!("no Panther rule with tests under {}", root.display()),
        };
        let problems: String = report.warnings.iter().map(|w| format!("\n  {w}")).collect();
        return Err(TestError::Usage(format!("{why}{problems}")));
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// What the Python runner needs: helpers, data models and the chosen cases.
fn payload(dir: &PantherDir, runnable: &[&(&PantherRule, Vec<&PantherTest>)]) -> Value {
    json!({
        "globals": dir.globals.iter().map(|(id, path)| (id.clone(), Value::from(path.display().to_string()))).collect::<Map<String, Value>>(),
        "data_models": dir.data_models.iter().map(|m| json!({
            "id": m.id,
            "log_types": m.log_types,
            "file": m.file.as_ref().map(|f| f.display().to_string()),
            "mappings": m.mappings,
        })).collect::<Vec<_>>(),
        "rules": runnable.iter().map(|(rule, cases)| json!({
            "id": rule.id,
            "file": rule.file.as_ref().map(|f| f.display().to_string()),
            "cases": cases.iter().map(|t| json!({
                "name": t.name,
                "expected": t.expected,
                "log": t.log,
                "mocks": t.mocks.iter().map(|(k, v)| json!([k, v])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

/// Each chosen case's result, from the runner's answer (rules without a
/// Python file are skipped).
fn results(chosen: &[(&PantherRule, Vec<&PantherTest>)], answer: &Value) -> Vec<CaseResult> {
    let mut out = Vec::new();
    let mut answers = answer["rules"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter();
    for (rule, cases) in chosen {
        let ran = if rule.file.is_some() {
            answers.next()
        } else {
            None
        };
        for (i, test) in cases.iter().enumerate() {
            let case = test_case(rule, test);
            let (status, errors, seconds, matched) = match &ran {
                None => (Status::Skipped, Vec::new(), 0.0, false),
                Some(r) if r.get("load_error").is_some() => (
                    Status::Failed,
                    vec![r["load_error"].as_str().unwrap_or_default().to_string()],
                    0.0,
                    false,
                ),
                Some(r) => {
                    let result = &r["cases"][i];
                    let passed = result[0].as_bool().unwrap_or(false);
                    let errors = result[1]
                        .as_array()
                        .map(|e| {
                            e.iter()
                                .filter_map(|v| v.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    let status = if passed {
                        Status::Passed
                    } else {
                        Status::Failed
                    };
                    (
                        status,
                        errors,
                        result[2].as_f64().unwrap_or(0.0),
                        result[3].as_bool().unwrap_or(false),
                    )
                }
            };
            let ran_python = u64::from(status != Status::Skipped);
            out.push(CaseResult {
                case,
                status,
                mismatches: Vec::new(),
                errors,
                actual: Actual {
                    matched,
                    python_calls: ran_python,
                    ..Actual::default()
                },
                seconds,
            });
        }
    }
    out
}

fn test_case(rule: &PantherRule, test: &PantherTest) -> TestCase {
    TestCase {
        rule: rule.id.clone(),
        name: test.name.clone(),
        file: rule.yaml.clone(),
        line: test.line,
        table: rule.log_types.first().cloned().unwrap_or_default(),
        events: vec![test.log.clone()],
        expect: Expectations {
            matched: test.expected,
            ..Expectations::default()
        },
        fixtures: Vec::new(),
        mocks: test.mocks.iter().cloned().collect(),
        skip: rule
            .file
            .is_none()
            .then(|| "a YAML-only rule (no Filename) needs Panther's backend".to_string()),
    }
}
