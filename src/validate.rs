//! `ravenwatch validate`: every check a project can fail before it runs,
//! as typed problems (the CLI only prints them). The steps: the config
//! files, each static table's data, the enrichment imports of the Python
//! sources (parsed, not run), importing every detection, planning the SQL
//! of every log table, and the test case files.
//!
//! A mistake is reported once: an import of a table whose own
//! `enrichment.yml` is broken is left to that file's errors, and an import
//! failure the static check already explained is not repeated. Both are
//! decided on [`ProblemKind`], never on message text.

use crate::config::{ConfigError, EnrichmentKind, Project};
use crate::enrichment::{load_files, EnrichmentTable, Tables};
use crate::python::{unknown_table_imports, LoadError, PythonError, PythonRuntime};
use crate::query::RunPlan;
use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// What kind of check found a problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProblemKind {
    /// A YAML file of the project (ravenwatch.yml, schemas/, enrichment/, detections/).
    Config,
    /// A static table's data files (a bad row, an unreadable file).
    TableLoad,
    /// A Python source imports an enrichment table the project does not define.
    UnknownTableImport { table: String },
    /// A detection does not import, or its functions have the wrong signature.
    PythonLoad,
    /// A `query:` or `filter:` does not plan.
    Sql,
    /// A test case file is malformed.
    TestCase,
    /// A warning: `detect()` writes globals, does I/O or reads the clock or
    /// randomness, so no filter is derived from its code.
    ImpureRule,
}

/// One problem, with its message as printed (file, line and what is wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    pub message: String,
}

impl Problem {
    fn new(kind: ProblemKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: message.to_string(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What `validate` found.
#[derive(Debug)]
pub struct Validation {
    pub project: Project,
    pub test_cases: usize,
    pub problems: Vec<Problem>,
    /// What does not stop a run but costs it (impure rules).
    pub warnings: Vec<Problem>,
}

/// Checks the project at `root` without running anything or writing to storage.
pub fn validate(root: &Path) -> Validation {
    let (project, config_errors) = Project::load_partial(root);
    let mut problems: Vec<Problem> = config_errors
        .iter()
        .map(|e| Problem::new(ProblemKind::Config, e))
        .collect();
    let tables = load_tables(&project, &mut problems);
    check_python(&project, &tables, &mut problems);
    check_sql(&project, &tables, &mut problems);
    let test_cases = check_test_cases(&project, &mut problems);
    let warnings = impure_rules(&project);
    Validation {
        warnings,
        project,
        test_cases,
        problems,
    }
}

/// Every table as a run would load it (dynamic tables empty); a table whose
/// data is bad is empty, so detections importing it are still checked.
fn load_tables(project: &Project, problems: &mut Vec<Problem>) -> Tables {
    let mut tables = Tables::new();
    for def in &project.enrichment {
        let loaded = if def.kind == EnrichmentKind::Dynamic {
            EnrichmentTable::empty(def)
        } else {
            match load_files(def, &def.data_files) {
                Ok(batch) => EnrichmentTable::build(def, batch, None),
                Err(e) => {
                    problems.extend(
                        e.errors
                            .iter()
                            .map(|r| Problem::new(ProblemKind::TableLoad, r)),
                    );
                    EnrichmentTable::empty(def)
                }
            }
        };
        match loaded {
            Ok(t) => {
                tables.insert(def.name.clone(), Arc::new(t));
            }
            Err(e) => problems.push(Problem::new(ProblemKind::TableLoad, e)),
        }
    }
    tables
}

/// The static import check, then importing every Python detection.
fn check_python(project: &Project, tables: &Tables, problems: &mut Vec<Problem>) {
    let known: Vec<&str> = project.enrichment.iter().map(|t| t.name.as_str()).collect();
    let broken = broken_tables(project, &known);
    let scripts = project.python_sources(&project.detections);
    let is_broken = |e: &LoadError| e.unknown_table.as_ref().is_some_and(|t| broken.contains(t));
    let imports: Vec<LoadError> = unknown_table_imports(&scripts, &known)
        .into_iter()
        .filter(|e| !is_broken(e))
        .collect();
    let flagged: HashSet<&str> = imports.iter().map(|e| e.file.as_str()).collect();
    let rules: Vec<_> = project.detections.iter().filter(|d| !d.is_sql()).collect();
    let load_errors = match PythonRuntime::new(&project.detection_lib_dir(), tables, &rules) {
        Ok(_) => Vec::new(),
        Err(PythonError::Load(errors)) => errors,
        Err(e) => {
            problems.push(Problem::new(ProblemKind::PythonLoad, e));
            Vec::new()
        }
    };
    for e in &imports {
        let table = e.unknown_table.clone().unwrap_or_default();
        problems.push(Problem::new(ProblemKind::UnknownTableImport { table }, e));
    }
    // The static check already names every unknown table of a flagged file,
    // and broken tables have their own errors.
    let explained = |e: &LoadError| {
        e.unknown_table.is_some() && (flagged.contains(e.file.as_str()) || is_broken(e))
    };
    problems.extend(
        load_errors
            .iter()
            .filter(|e| !explained(e))
            .map(|e| Problem::new(ProblemKind::PythonLoad, e)),
    );
}

/// Tables whose enrichment.yml exists but did not load (its errors are
/// already reported): imports of them are not reported again.
fn broken_tables(project: &Project, known: &[&str]) -> HashSet<String> {
    std::fs::read_dir(project.root.join("enrichment"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("enrichment.yml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !known.contains(&n.as_str()))
        .collect()
}

/// Python rules that get no derived filter because they are impure (one
/// warning per rule, naming the first reason's file and line).
fn impure_rules(project: &Project) -> Vec<Problem> {
    let lib_dir = project.detection_lib_dir();
    project
        .detections
        .iter()
        .filter(|d| !d.is_sql() && d.enabled && d.auto_filter && d.script.is_file())
        .filter_map(|d| {
            let derived = crate::python::derive_filter(d, &lib_dir);
            if derived.guarded {
                return None;
            }
            let first = derived.impure.first()?;
            let more = match derived.impure.len() {
                1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            Some(Problem::new(
                ProblemKind::ImpureRule,
                format!(
                    "{first}{more}: `{}` is impure, so every event reaches detect() (no filter is derived from its code; `auto_filter: false` in detection.yml silences this)",
                    d.name
                ),
            ))
        })
        .collect()
}

/// Queries and filters, planned against each log table's schema and the
/// tables' data exactly as `run` plans them.
fn check_sql(project: &Project, tables: &Tables, problems: &mut Vec<Problem>) {
    for log in &project.log_tables {
        let rules: Vec<_> = project
            .detections
            .iter()
            .filter(|d| d.tables.contains(&log.name))
            .collect();
        if let Err(errors) = RunPlan::new(&rules, log, tables, None) {
            problems.extend(
                errors
                    .iter()
                    .map(|e: &ConfigError| Problem::new(ProblemKind::Sql, e)),
            );
        }
    }
}

fn check_test_cases(project: &Project, problems: &mut Vec<Problem>) -> usize {
    let mut cases = 0;
    for def in &project.detections {
        let (found, errors) = crate::testing::load_cases(project, def);
        cases += found.len();
        problems.extend(
            errors
                .iter()
                .map(|e| Problem::new(ProblemKind::TestCase, e)),
        );
    }
    cases
}
