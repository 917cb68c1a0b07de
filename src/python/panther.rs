//! Panther-format rules in the embedded interpreter: our own `panther_core`
//! and `panther_detection_helpers.caching` modules and the case runner, all
//! in `panther_runtime.py` (written from Ravenwatch's contract, not from
//! Panther's AGPL libraries). The `panther` module prepares the cases;
//! `run` loads each Panther rule as an adapter object (`RunRule`) whose
//! `detect`/`title`/`dedupe`/… are Ravenwatch's detection functions.

use super::error::{formatted, LoadError, PythonError};
use super::interpreter::{cstring, setup_interpreter};
use super::rule::{LoadedRule, OptionalFn};
use crate::config::{DetectionDef, PantherRuleInfo};
use crate::enrichment::Tables;
use crate::files::display_path;
use pyo3::prelude::*;
use pyo3::types::PyModule;
use serde_json::json;
use std::path::Path;

const RUNTIME: &str = include_str!("panther_runtime.py");
const MODULE_NAME: &str = "_ravenwatch_panther";

/// The runtime module, loaded once per interpreter.
fn runtime_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let modules = py.import("sys")?.getattr("modules")?;
    if let Ok(Some(found)) = modules
        .get_item(MODULE_NAME)
        .map(|m| m.cast_into::<PyModule>().ok())
    {
        return Ok(found);
    }
    let module = PyModule::from_code(
        py,
        &cstring(RUNTIME)?,
        c"<ravenwatch.panther>",
        &cstring(MODULE_NAME)?,
    )?;
    modules.set_item(MODULE_NAME, &module)?;
    Ok(module)
}

/// What every Panther rule of a run shares, as the runtime reads it.
fn support_spec(info: &PantherRuleInfo) -> serde_json::Value {
    let support = &info.support;
    json!({
        "globals": support.globals.iter().map(|(id, f)| (id.clone(), json!(f.to_string_lossy()))).collect::<serde_json::Map<_, _>>(),
        "data_models": support.data_models.iter().map(|dm| json!({
            "id": dm.id, "log_types": dm.log_types,
            "file": dm.file.as_ref().map(|f| f.to_string_lossy().into_owned()),
            "mappings": dm.mappings,
        })).collect::<Vec<_>>(),
        "log_types": support.log_types,
        "indicators": crate::config::INDICATORS,
        "lookup_names": support.lookup_names,
        "selector_names": support.selector_names,
    })
}

/// Loads a Panther rule for `run`: its module under Panther's environment
/// (global helpers, data models, our `panther_core` and caching modules)
/// and the adapter whose methods are the detection's functions.
pub(super) fn load_run_rule<'py>(
    py: Python<'py>,
    def: &DetectionDef,
    info: &PantherRuleInfo,
    format_exception: &Bound<'py, PyAny>,
) -> Result<(LoadedRule, Bound<'py, PyModule>), LoadError> {
    let fail = |message: String| LoadError {
        rule: def.name.clone(),
        file: display_path(&def.script),
        line: None,
        message,
        unknown_table: None,
    };
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let index = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let spec = json!({
        "support": support_spec(info),
        "file": def.script.to_string_lossy(),
        "id": def.name,
        "severity": def.severity.as_str(),
        "inline_filters": info.inline_filters,
    });
    let adapter = runtime_module(py)
        .and_then(|m| m.call_method1("load_run_rule", (spec.to_string(), index)))
        .map_err(|e| fail(formatted(py, format_exception, &e)))?;
    let module = adapter
        .getattr("module")
        .and_then(|m| m.cast_into::<PyModule>().map_err(PyErr::from))
        .map_err(|e| fail(e.to_string()))?;
    let detect = adapter
        .getattr("detect")
        .map_err(|e| fail(e.to_string()))?
        .unbind();
    let optional = OptionalFn::ALL
        .into_iter()
        .filter_map(|f| Some((f, adapter.getattr(f.name()).ok()?.unbind())))
        .collect();
    Ok((LoadedRule { detect, optional }, module))
}

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
        let module = runtime_module(py).map_err(PythonError::setup)?;
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
