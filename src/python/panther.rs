//! Panther-format rules in the embedded interpreter: our own `panther_core`
//! and `panther_detection_helpers.caching` modules and the case runner, all
//! in `panther_runtime.py` (written from Ravenwatch's contract, not from
//! Panther's AGPL libraries). The `panther` module prepares the cases.

use super::error::{formatted, PythonError};
use super::interpreter::{cstring, setup_interpreter};
use crate::enrichment::Tables;
use pyo3::prelude::*;
use std::path::Path;

const RUNTIME: &str = include_str!("panther_runtime.py");

/// Runs the cases described by `payload` (JSON, see `run_rules` in
/// `panther_runtime.py`) with the project's virtualenv on the path; returns
/// the runner's JSON answer.
///
/// # Errors
/// The interpreter or the runner itself failed (a rule's failure is a result).
pub fn run_panther_cases(payload: &str) -> Result<String, PythonError> {
    Python::attach(|py| {
        let interpreter =
            setup_interpreter(py, Path::new(""), &Tables::new()).map_err(PythonError::setup)?;
        let module = PyModule::from_code(
            py,
            &cstring(RUNTIME).map_err(PythonError::setup)?,
            c"<ravenwatch.panther>",
            c"_ravenwatch_panther",
        )
        .map_err(PythonError::setup)?;
        module
            .call_method1("run_rules", (payload,))
            .and_then(|r| r.extract::<String>())
            .map_err(|e| {
                let format_exception = interpreter.helpers.bind(py).getattr("format_exception");
                PythonError::Snippet(match format_exception {
                    Ok(f) => formatted(py, &f, &e),
                    Err(_) => e.to_string(),
                })
            })
    })
}
