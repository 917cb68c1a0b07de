//! Interpreter setup: `sys.path` (the project's `detections/_lib`, an
//! active `VIRTUAL_ENV` in front of the base interpreter's packages), the
//! `ravenwatch.enrichment`/`matano.enrichment` modules with the tables
//! published in them, and the engine's helper functions. The Python sources
//! are files beside this one.

use super::error::{formatted, PythonError};
use super::table::PyTable;
use crate::enrichment::Tables;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule, PyString};
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const HELPERS: &str = include_str!("helpers.py");
const ENRICHMENT_MODULE: &str = include_str!("enrichment_module.py");

/// The engine's helper functions (`helpers.py`) as a fresh module.
pub(super) fn helpers_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    PyModule::from_code(
        py,
        &cstring(HELPERS)?,
        c"<ravenwatch.helpers>",
        c"_ravenwatch_helpers",
    )
}

pub(super) fn cstring(text: &str) -> PyResult<CString> {
    CString::new(text).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

/// What [`setup_interpreter`] hands back: helper functions, the enrichment
/// module and the table objects it publishes.
pub(super) struct Interpreter {
    pub helpers: Py<PyModule>,
    pub enrichment: Py<PyModule>,
    pub published: Vec<(String, Py<PyAny>)>,
}

pub(super) fn setup_interpreter(
    py: Python<'_>,
    lib_dir: &Path,
    tables: &Tables,
) -> PyResult<Interpreter> {
    let sys = py.import("sys")?;
    sys.setattr("dont_write_bytecode", true)?;
    // Some libraries read sys.argv[0]; an embedded interpreter starts without one.
    if !sys.getattr("argv")?.is_truthy()? {
        sys.setattr("argv", PyList::new(py, ["ravenwatch"])?)?;
    }
    if let Ok(venv) = std::env::var("VIRTUAL_ENV") {
        let site = py.import("site")?;
        let version = py.version_info();
        let packages = PathBuf::from(venv)
            .join("lib")
            .join(format!("python{}.{}", version.major, version.minor))
            .join("site-packages");
        if packages.is_dir() {
            site.call_method1("addsitedir", (packages.to_string_lossy().as_ref(),))?;
            // addsitedir appends; a virtualenv's packages must win over the base interpreter's.
            let path = sys.getattr("path")?.cast_into::<PyList>()?;
            let entry = PyString::new(py, &packages.to_string_lossy());
            if let Ok(index) = path.index(&entry) {
                path.del_item(index)?;
            }
            path.insert(0, entry)?;
        }
    }
    let path = sys.getattr("path")?.cast_into::<PyList>()?;
    let lib = lib_dir.to_string_lossy().into_owned();
    if lib_dir.is_dir() && !path.contains(&lib)? {
        path.insert(0, lib)?;
    }

    let modules = sys.getattr("modules")?.cast_into::<PyDict>()?;
    let enrichment = PyModule::from_code(
        py,
        &cstring(ENRICHMENT_MODULE)?,
        c"<ravenwatch.enrichment>",
        c"ravenwatch.enrichment",
    )?;
    let mut published = Vec::with_capacity(tables.len());
    for (name, table) in tables {
        let object = PyTable::published(py, Arc::clone(table))?
            .into_any()
            .unbind();
        publish(&enrichment, name, object.bind(py))?;
        published.push((name.clone(), object));
    }
    for package in ["ravenwatch", "matano"] {
        let module = PyModule::new(py, package)?;
        module.setattr("__path__", PyList::empty(py))?;
        module.setattr("enrichment", &enrichment)?;
        modules.set_item(package, &module)?;
        modules.set_item(format!("{package}.enrichment"), &enrichment)?;
    }
    let helpers = helpers_module(py)?;
    Ok(Interpreter {
        helpers: helpers.unbind(),
        enrichment: enrichment.unbind(),
        published,
    })
}

/// Makes `object` importable as `ravenwatch.enrichment.<name>`.
pub(super) fn publish(
    enrichment: &Bound<'_, PyModule>,
    name: &str,
    object: &Bound<'_, PyAny>,
) -> PyResult<()> {
    enrichment.setattr(name, object)?;
    enrichment
        .getattr("TABLES")?
        .cast_into::<PyDict>()?
        .set_item(name, object)
}

/// Runs a Python snippet with the tables importable (as detections see
/// them) and returns `str(result)`, where `result` is a variable the snippet
/// sets. Used by the benchmark to time lookups from Python.
///
/// # Errors
/// The snippet raised; the message holds the traceback.
pub fn run_snippet(lib_dir: &Path, tables: &Tables, code: &str) -> Result<String, PythonError> {
    Python::attach(|py| {
        let helpers = setup_interpreter(py, lib_dir, tables)
            .map_err(PythonError::setup)?
            .helpers;
        let globals = PyDict::new(py);
        let code = cstring(code).map_err(PythonError::setup)?;
        py.run(&code, Some(&globals), None).map_err(|e| {
            let format_exception = helpers.bind(py).getattr("format_exception");
            PythonError::Snippet(match format_exception {
                Ok(f) => formatted(py, &f, &e),
                Err(_) => e.to_string(),
            })
        })?;
        Ok(globals
            .get_item("result")
            .ok()
            .flatten()
            .map(|v| v.to_string())
            .unwrap_or_default())
    })
}

/// Makes this process ignore SIGINT and SIGTERM (a worker: its run decides
/// when it ends, by closing the socket, so a stop signal sent to the whole
/// process group lets the run finish what it has in hand).
///
/// # Errors
/// The interpreter could not set the handlers.
pub fn ignore_stop_signals() -> Result<(), PythonError> {
    Python::attach(|py| {
        py.run(
            c"import signal\nfor s in (signal.SIGINT, signal.SIGTERM):\n    signal.signal(s, signal.SIG_IGN)\n",
            None,
            None,
        )
        .map_err(PythonError::setup)
    })
}
