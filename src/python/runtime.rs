//! The interpreter with a run's detections loaded, and the per-batch loop
//! that calls them: attached to the interpreter once per batch, one
//! `Record` per event (it points into the Arrow batch), optional
//! functions after each match.

use super::convert;
use super::error::{formatted, LoadError, PythonError};
use super::interpreter::{publish, setup_interpreter};
use super::panther::load_run_rule;
use super::record::Record;
use super::rule::{load_rule, LoadedRule};
use super::table::PyTable;
use crate::config::DetectionDef;
use crate::enrichment::Tables;
use crate::files::display_path;
use crate::logs::EventBatch;
use crate::outcome::{FunctionError, MatchOutput, RuleOutcome};
use pyo3::prelude::*;
use pyo3::types::PyModule;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The interpreter with the project's tables and detections loaded.
pub struct PythonRuntime {
    rules: Vec<LoadedRule>,
    format_exception: Py<PyAny>,
    helpers: Py<PyModule>,
    enrichment: Py<PyModule>,
    /// The project's table objects, restored after a test case's fixtures.
    published: Vec<(String, Py<PyAny>)>,
    lib_dir: PathBuf,
    /// The rule of the current test case (see [`PythonRuntime::load_case`]).
    case_rule: Option<LoadedRule>,
    names: Vec<String>,
    budget: Option<super::budget::Budget>,
}

impl PythonRuntime {
    /// Starts (or reuses) the interpreter, publishes `tables`, and imports
    /// every detection in `rules`.
    ///
    /// # Errors
    /// Every detection that fails to import or lacks `detect`, with file and line.
    pub fn new(
        lib_dir: &Path,
        tables: &Tables,
        rules: &[&DetectionDef],
    ) -> Result<Self, PythonError> {
        Python::attach(|py| {
            let interpreter = setup_interpreter(py, lib_dir, tables).map_err(PythonError::setup)?;
            let helpers_bound = interpreter.helpers.bind(py);
            let format_exception = helpers_bound
                .getattr("format_exception")
                .map_err(PythonError::setup)?
                .unbind();
            let mut loaded = Vec::new();
            let mut errors = Vec::new();
            let names = rules.iter().map(|d| d.name.clone()).collect();
            for def in rules {
                match load_detection(py, helpers_bound, def) {
                    Ok((rule, _)) => loaded.push(rule),
                    Err(e) => errors.push(e),
                }
            }
            if errors.is_empty() {
                helpers_bound
                    .call_method0("settle")
                    .map_err(PythonError::setup)?;
                Ok(Self {
                    rules: loaded,
                    format_exception,
                    helpers: interpreter.helpers,
                    enrichment: interpreter.enrichment,
                    published: interpreter.published,
                    lib_dir: lib_dir.to_path_buf(),
                    case_rule: None,
                    names,
                    budget: None,
                })
            } else {
                Err(PythonError::Load(errors))
            }
        })
    }

    /// Stops any one rule call that runs longer than `limit` (see
    /// `budget`); the call's error says so and the rule goes on with the
    /// next event. Only on the interpreter's main thread; elsewhere calls
    /// run unbounded.
    pub fn set_time_budget(&mut self, limit: std::time::Duration) {
        self.budget = Python::attach(|py| {
            super::budget::Budget::start(self.helpers.bind(py).as_any(), limit, self.names.clone())
        });
    }

    /// What rules print from here on is kept, not written to stdout (which
    /// may carry a machine-read report), until [`PythonRuntime::finish_capture`].
    pub fn start_capture(&self) {
        Python::attach(|py| {
            let _ = self.helpers.bind(py).call_method0("start_capture");
        });
    }

    /// What rules printed since [`PythonRuntime::start_capture`].
    pub fn finish_capture(&self) -> String {
        Python::attach(|py| {
            self.helpers
                .bind(py)
                .call_method0("finish_capture")
                .and_then(|t| t.extract::<String>())
                .unwrap_or_default()
        })
    }

    /// Runs rule number `rule` (in the order given to [`PythonRuntime::new`])
    /// over the events of `batch` (only `rows` when a pre-filter chose
    /// them); `calls` counts Python function calls.
    pub fn evaluate(
        &self,
        rule: usize,
        batch: &Arc<EventBatch>,
        rows: Option<&[u32]>,
        calls: &mut u64,
    ) -> Vec<RuleOutcome> {
        self.evaluate_loaded(rule, &self.rules[rule], batch, rows, calls)
    }

    /// Switches the published tables to the snapshots in `tables` (a newer
    /// [`crate::enrichment::Generation`]); detections keep the objects they
    /// imported, which now answer from the new snapshots. Call between
    /// batches only.
    pub fn refresh_tables(&self, tables: &Tables) {
        Python::attach(|py| {
            for (name, object) in &self.published {
                let (Some(table), Ok(py_table)) =
                    (tables.get(name), object.bind(py).cast::<PyTable>())
                else {
                    continue;
                };
                if !Arc::ptr_eq(&py_table.get().current(), table) {
                    py_table.get().replace(Arc::clone(table));
                }
            }
        });
    }

    /// Loads `def` afresh for one test case: detection modules and helpers
    /// under `detections/` are re-imported (no state carried over from the
    /// previous case), `fixtures` replace the named tables, and `mocks`
    /// replace names in the detection module. Run it with
    /// [`PythonRuntime::evaluate_case`].
    ///
    /// # Errors
    /// The detection does not import, or a mock names nothing.
    pub fn load_case(
        &mut self,
        def: &DetectionDef,
        fixtures: &Tables,
        mocks: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), LoadError> {
        self.case_rule = None;
        let loaded = Python::attach(|py| {
            let fail = |message: String| LoadError {
                rule: def.name.clone(),
                file: display_path(&def.script),
                line: None,
                message,
                unknown_table: None,
            };
            let helpers = self.helpers.bind(py);
            let enrichment = self.enrichment.bind(py);
            let setup = || -> PyResult<()> {
                for (name, object) in &self.published {
                    publish(enrichment, name, object.bind(py))?;
                }
                for (name, table) in fixtures {
                    let object = Bound::new(py, PyTable::new(py, Arc::clone(table)))?;
                    publish(enrichment, name, object.as_any())?;
                }
                helpers.call_method1(
                    "purge_project_modules",
                    (self
                        .lib_dir
                        .parent()
                        .unwrap_or(&self.lib_dir)
                        .to_string_lossy()
                        .as_ref(),),
                )?;
                Ok(())
            };
            setup()
                .map_err(|e| fail(format!("cannot set up the case: {}", self.format(py, &e))))?;
            let (loaded, module) = load_detection(py, helpers, def)?;
            if !mocks.is_empty() {
                let mocks = convert::json_object_to_py(py, mocks)
                    .and_then(|m| helpers.call_method1("apply_mocks", (&module, m)));
                if let Err(e) = mocks {
                    let message = if e.is_instance_of::<pyo3::exceptions::PyLookupError>(py) {
                        e.value(py).to_string().trim_matches('"').to_string()
                    } else {
                        self.format(py, &e)
                    };
                    return Err(fail(message));
                }
            }
            Ok(loaded)
        })?;
        self.case_rule = Some(loaded);
        Ok(())
    }

    /// Runs the rule loaded by [`PythonRuntime::load_case`] over `batch`.
    pub fn evaluate_case(&self, batch: &Arc<EventBatch>, calls: &mut u64) -> Vec<RuleOutcome> {
        match &self.case_rule {
            Some(loaded) => self.evaluate_loaded(usize::MAX, loaded, batch, None, calls),
            None => Vec::new(),
        }
    }

    /// Calls `f` under the time budget, if any: a call the watchdog stopped
    /// is an error saying so.
    fn call<'py>(
        &self,
        py: Python<'py>,
        rule: usize,
        function: &str,
        f: impl FnOnce() -> PyResult<Bound<'py, PyAny>>,
    ) -> Result<Bound<'py, PyAny>, String> {
        let Some(budget) = &self.budget else {
            return f().map_err(|e| self.format(py, &e));
        };
        budget.enter(rule);
        let result = f();
        let stopped = budget.leave();
        result.map_err(|e| {
            if stopped {
                format!(
                    "{function}() ran past its time budget of {}s and was stopped; the rule skipped this event (rule_timeout_seconds in ravenwatch.yml)",
                    budget.limit.as_secs_f64()
                )
            } else {
                self.format(py, &e)
            }
        })
    }

    fn evaluate_loaded(
        &self,
        index: usize,
        loaded: &LoadedRule,
        batch: &Arc<EventBatch>,
        rows: Option<&[u32]>,
        calls: &mut u64,
    ) -> Vec<RuleOutcome> {
        let all = 0..batch.len();
        let rows: Box<dyn Iterator<Item = usize>> = match rows {
            Some(rows) => Box::new(rows.iter().map(|&r| r as usize)),
            None => Box::new(all),
        };
        Python::attach(|py| {
            let mut out = Vec::new();
            let detect = loaded.detect.bind(py);
            for row in rows {
                let record = match Py::new(py, Record::new(Arc::clone(batch), row)) {
                    Ok(r) => r.into_bound(py).into_any(),
                    Err(e) => {
                        out.push(RuleOutcome::Error {
                            row,
                            message: self.format(py, &e),
                        });
                        continue;
                    }
                };
                *calls += 1;
                let matched = self
                    .call(py, index, "detect", || detect.call1((&record,)))
                    .and_then(|v| v.is_truthy().map_err(|e| self.format(py, &e)));
                match matched {
                    Ok(false) => {}
                    Ok(true) => out.push(RuleOutcome::Match(Box::new(
                        self.after_match(py, index, loaded, &record, row, calls),
                    ))),
                    Err(message) => out.push(RuleOutcome::Error { row, message }),
                }
            }
            out
        })
    }

    fn format(&self, py: Python<'_>, err: &PyErr) -> String {
        formatted(py, self.format_exception.bind(py), err)
    }

    fn after_match(
        &self,
        py: Python<'_>,
        index: usize,
        loaded: &LoadedRule,
        record: &Bound<'_, PyAny>,
        row: usize,
        calls: &mut u64,
    ) -> MatchOutput {
        let mut out = MatchOutput {
            row,
            ..Default::default()
        };
        for (function, callable) in &loaded.optional {
            let function = *function;
            *calls += 1;
            let value = match self.call(py, index, function.name(), || {
                callable.bind(py).call1((record,))
            }) {
                Ok(v) => v,
                Err(message) => {
                    out.errors.push(FunctionError {
                        function: function.name().into(),
                        message,
                    });
                    continue;
                }
            };
            if value.is_none() {
                continue;
            }
            if let Err(message) = function.store(&mut out, &value) {
                out.errors.push(FunctionError {
                    function: function.name().into(),
                    message,
                });
            }
        }
        out
    }
}

/// Loads one detection, native or Panther-format.
fn load_detection<'py>(
    py: Python<'py>,
    helpers: &Bound<'py, PyModule>,
    def: &DetectionDef,
) -> Result<(LoadedRule, Bound<'py, PyModule>), LoadError> {
    let Some(info) = &def.panther else {
        return load_rule(py, helpers, def);
    };
    let format_exception = helpers.getattr("format_exception").map_err(|e| LoadError {
        rule: def.name.clone(),
        file: display_path(&def.script),
        line: None,
        message: e.to_string(),
        unknown_table: None,
    })?;
    load_run_rule(py, def, info, &format_exception)
}
