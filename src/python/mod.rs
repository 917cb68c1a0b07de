//! The embedded Python interpreter: the only module that imports pyo3.
//!
//! It exposes enrichment tables as the importable modules
//! `ravenwatch.enrichment` and `matano.enrichment`, loads each `detect.py` as
//! its own module, and runs a rule's functions over a batch of events while
//! attached to the interpreter once per batch. Python exceptions never cross
//! this boundary: they come back as [`RuleOutcome::Error`] or
//! [`FunctionError`] values with a formatted traceback.

mod convert;
mod record;
mod table;

use crate::config::{display_path, DetectionDef, Severity};
use crate::enrichment::Tables;
use crate::logs::EventBatch;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyModule, PyString};
use record::Record;
use std::ffi::CString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use table::PyTable;

/// A detection that could not be loaded (syntax error, failed import,
/// missing `detect`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub rule: String,
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PythonError {
    #[error("cannot set up the Python interpreter: {0}")]
    Setup(String),
    #[error("{} detection(s) failed to load:\n  {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n  "))]
    Load(Vec<LoadError>),
}

/// Optional functions, in the order they run after a match.
pub const OPTIONAL_FUNCTIONS: [&str; 8] = [
    "alert_context",
    "title",
    "severity",
    "dedupe",
    "description",
    "runbook",
    "reference",
    "destinations",
];

pub use crate::engine::{FunctionError, MatchOutput, RuleOutcome};

struct LoadedRule {
    detect: Py<PyAny>,
    optional: [Option<Py<PyAny>>; 8],
}

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
}

const HELPERS: &str = r#"
import ast, copy, importlib, inspect, os, sys
import traceback as _tb

def format_exception(e, tb):
    return "".join(_tb.format_exception(type(e), e, tb)).rstrip()

def arity_problem(f):
    """Why `f` cannot be called as f(r), or None."""
    try:
        sig = inspect.signature(f)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(None)
    except TypeError:
        positional = [p for p in sig.parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        return f"must take one argument (the record r), but it takes {len(positional)}"
    return None

def first_line(f):
    code = getattr(f, "__code__", None)
    return code.co_firstlineno if code is not None else None

def table_imports(source, filename):
    """(line, name) of every `from ravenwatch|matano.enrichment import name`."""
    tree = ast.parse(source, filename)
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.ImportFrom) and node.level == 0
                and node.module in ("ravenwatch.enrichment", "matano.enrichment")):
            found.extend((node.lineno, a.name) for a in node.names if a.name != "*")
    return found

def purge_project_modules(lib_dir):
    """Forgets detection modules and helpers under `lib_dir`, so the next
    import starts from fresh module state."""
    lib_dir = os.path.abspath(lib_dir) + os.sep
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None) or ""
        if name.startswith("ravenwatch_detection_") or (path and os.path.abspath(path).startswith(lib_dir)):
            del sys.modules[name]
    importlib.invalidate_caches()

def apply_mocks(module, mocks):
    """Replaces names in a detection module: a function by one returning the
    value, anything else by the value. Dotted names reach into objects."""
    for name, value in mocks.items():
        parts = name.split(".")
        target = module
        for i, part in enumerate(parts):
            if not hasattr(target, part):
                where = "the detection module" if i == 0 else "`" + ".".join(parts[:i]) + "`"
                raise LookupError(f"mock `{name}`: {where} has no name `{part}`")
            if i < len(parts) - 1:
                target = getattr(target, part)
        current = getattr(target, parts[-1])
        if callable(current):
            def mocked(*args, _value=value, **kwargs):
                return copy.deepcopy(_value)
            replacement = mocked
        else:
            replacement = value
        setattr(target, parts[-1], replacement)

def error_line(e, tb, filename):
    line = getattr(e, "lineno", None) if isinstance(e, SyntaxError) and getattr(e, "filename", None) == filename else None
    for frame in _tb.extract_tb(tb):
        if frame.filename == filename:
            line = frame.lineno
    return line
"#;

const ENRICHMENT_MODULE: &str = r#"
TABLES = {}

def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    known = ", ".join(sorted(TABLES)) or "(none)"
    raise ImportError(f"enrichment table '{name}' is not defined; known tables: {known}", name=name)

def __dir__():
    return sorted(TABLES)
"#;

fn cstring(text: &str) -> PyResult<CString> {
    CString::new(text).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

/// What [`setup_interpreter`] hands back: helper functions, the enrichment
/// module and the table objects it publishes.
struct Interpreter {
    helpers: Py<PyModule>,
    enrichment: Py<PyModule>,
    published: Vec<(String, Py<PyAny>)>,
}

fn setup_interpreter(py: Python<'_>, lib_dir: &Path, tables: &Tables) -> PyResult<Interpreter> {
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
        let object = Py::new(py, PyTable::new(py, Arc::clone(table)))?.into_any();
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
    let helpers = PyModule::from_code(
        py,
        &cstring(HELPERS)?,
        c"<ravenwatch.helpers>",
        c"_ravenwatch_helpers",
    )?;
    Ok(Interpreter {
        helpers: helpers.unbind(),
        enrichment: enrichment.unbind(),
        published,
    })
}

/// Makes `object` importable as `ravenwatch.enrichment.<name>`.
fn publish(
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
            let interpreter = setup_interpreter(py, lib_dir, tables)
                .map_err(|e| PythonError::Setup(e.to_string()))?;
            let helpers_bound = interpreter.helpers.bind(py);
            let format_exception = helpers_bound
                .getattr("format_exception")
                .map_err(|e| PythonError::Setup(e.to_string()))?
                .unbind();
            let mut loaded = Vec::new();
            let mut errors = Vec::new();
            for def in rules {
                match load_rule(py, helpers_bound, def) {
                    Ok((rule, _)) => loaded.push(rule),
                    Err(e) => errors.push(e),
                }
            }
            if errors.is_empty() {
                Ok(Self {
                    rules: loaded,
                    format_exception,
                    helpers: interpreter.helpers,
                    enrichment: interpreter.enrichment,
                    published: interpreter.published,
                    lib_dir: lib_dir.to_path_buf(),
                    case_rule: None,
                })
            } else {
                Err(PythonError::Load(errors))
            }
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
        self.evaluate_loaded(&self.rules[rule], batch, rows, calls)
    }

    /// Loads `def` afresh for one test case: detection modules and helpers
    /// under `detections/` are re-imported (no state carried over from the
    /// previous case), `fixtures` replace the named tables, and `mocks`
    /// replace names in the detection module. Run it with
    /// [`PythonRuntime::evaluate_case`].
    ///
    /// # Errors
    /// The detection does not import, or a mock names nothing.
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
            let (loaded, module) = load_rule(py, helpers, def)?;
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
            Some(loaded) => self.evaluate_loaded(loaded, batch, None, calls),
            None => Vec::new(),
        }
    }

    fn evaluate_loaded(
        &self,
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
                let matched = detect.call1((&record,)).and_then(|v| v.is_truthy());
                match matched {
                    Ok(false) => {}
                    Ok(true) => out.push(RuleOutcome::Match(Box::new(
                        self.after_match(py, loaded, &record, row, calls),
                    ))),
                    Err(e) => out.push(RuleOutcome::Error {
                        row,
                        message: self.format(py, &e),
                    }),
                }
            }
            out
        })
    }

    fn format(&self, py: Python<'_>, err: &PyErr) -> String {
        self.format_exception
            .bind(py)
            .call1((err.value(py), err.traceback(py)))
            .and_then(|s| s.extract::<String>())
            .unwrap_or_else(|_| err.to_string())
    }

    fn after_match(
        &self,
        py: Python<'_>,
        loaded: &LoadedRule,
        record: &Bound<'_, PyAny>,
        row: usize,
        calls: &mut u64,
    ) -> MatchOutput {
        let mut out = MatchOutput {
            row,
            ..Default::default()
        };
        for (function, callable) in OPTIONAL_FUNCTIONS.iter().zip(&loaded.optional) {
            let Some(callable) = callable else { continue };
            *calls += 1;
            let value = match callable.bind(py).call1((record,)) {
                Ok(v) => v,
                Err(e) => {
                    out.errors.push(FunctionError {
                        function,
                        message: self.format(py, &e),
                    });
                    continue;
                }
            };
            if value.is_none() {
                continue;
            }
            if let Err(message) = apply(&mut out, function, &value) {
                out.errors.push(FunctionError { function, message });
            }
        }
        out
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Stores one optional function's result, or says why it is the wrong type.
fn apply(out: &mut MatchOutput, function: &str, value: &Bound<'_, PyAny>) -> Result<(), String> {
    let text = |value: &Bound<'_, PyAny>| -> Result<String, String> {
        if let Ok(s) = value.cast::<PyString>() {
            return Ok(s.to_string_lossy().into_owned());
        }
        if value.is_instance_of::<pyo3::types::PyInt>()
            || value.is_instance_of::<pyo3::types::PyFloat>()
        {
            return Ok(value.to_string());
        }
        Err(format!(
            "{function}() must return a str, got {}",
            type_name(value)
        ))
    };
    match function {
        "alert_context" => match convert::py_to_json(value) {
            serde_json::Value::Object(map) if value.is_instance_of::<PyDict>() => {
                out.context = Some(map)
            }
            _ => {
                return Err(format!(
                    "alert_context() must return a dict, got {}",
                    type_name(value)
                ))
            }
        },
        "title" => out.title = Some(text(value)?),
        "dedupe" => out.dedupe = Some(text(value)?),
        "description" => out.description = Some(text(value)?),
        "runbook" => out.runbook = Some(text(value)?),
        "reference" => out.reference = Some(text(value)?),
        "severity" => {
            let s = value
                .cast::<PyString>()
                .map(|s| s.to_string_lossy().into_owned())
                .map_err(|_| format!("severity() must return a str, got {}", type_name(value)))?;
            out.severity = Some(Severity::parse(&s).ok_or_else(|| {
                format!(
                    "severity() returned {s:?}; expected one of {}",
                    Severity::ALL.map(Severity::as_str).join(", ")
                )
            })?);
        }
        "destinations" => {
            let items: Vec<String> = if let Ok(s) = value.cast::<PyString>() {
                vec![s.to_string_lossy().into_owned()]
            } else {
                value.extract::<Vec<String>>().map_err(|_| {
                    format!(
                        "destinations() must return a list of str, got {}",
                        type_name(value)
                    )
                })?
            };
            out.destinations = Some(items);
        }
        _ => {}
    }
    Ok(())
}

fn load_rule<'py>(
    py: Python<'py>,
    helpers: &Bound<'py, PyModule>,
    def: &DetectionDef,
) -> Result<(LoadedRule, Bound<'py, PyModule>), LoadError> {
    let file = display_path(&def.script);
    let fail = |line: Option<usize>, message: String| LoadError {
        rule: def.name.clone(),
        file: file.clone(),
        line,
        message,
    };
    let source = std::fs::read_to_string(&def.script)
        .map_err(|e| fail(None, format!("cannot read: {e}")))?;
    let code = CString::new(source).map_err(|_| fail(None, "file contains a NUL byte".into()))?;
    let filename = CString::new(file.clone()).map_err(|_| fail(None, "bad file name".into()))?;
    let module_name = CString::new(format!("ravenwatch_detection_{}", def.name))
        .map_err(|_| fail(None, "bad rule name".into()))?;
    let module = PyModule::from_code(py, &code, &filename, &module_name).map_err(|err| {
        let line = helpers
            .getattr("error_line")
            .and_then(|f| f.call1((err.value(py), err.traceback(py), &file)))
            .and_then(|l| l.extract::<Option<usize>>())
            .ok()
            .flatten();
        let value = err.value(py);
        let kind = type_name(value.as_any());
        let message = if err.is_instance_of::<pyo3::exceptions::PySyntaxError>(py) {
            value
                .getattr("msg")
                .and_then(|m| m.extract::<String>())
                .unwrap_or_else(|_| value.to_string())
        } else {
            value.to_string()
        };
        fail(line, format!("{kind}: {message}"))
    })?;
    let detect = module
        .getattr("detect")
        .ok()
        .filter(|f| f.is_callable())
        .ok_or_else(|| fail(None, "no detect(r) function defined".into()))?;
    let check_arity = |name: &str, f: &Bound<'_, PyAny>| -> Result<(), LoadError> {
        let problem = helpers
            .call_method1("arity_problem", (f,))
            .and_then(|p| p.extract::<Option<String>>())
            .ok()
            .flatten();
        match problem {
            None => Ok(()),
            Some(problem) => {
                let line = helpers
                    .call_method1("first_line", (f,))
                    .and_then(|l| l.extract::<Option<usize>>())
                    .ok()
                    .flatten();
                Err(fail(line, format!("{name}() {problem}")))
            }
        }
    };
    check_arity("detect", &detect)?;
    let mut optional: [Option<Py<PyAny>>; 8] = Default::default();
    for (slot, name) in optional.iter_mut().zip(OPTIONAL_FUNCTIONS) {
        let Some(f) = module.getattr(name).ok().filter(|f| f.is_callable()) else {
            continue;
        };
        check_arity(name, &f)?;
        *slot = Some(f.unbind());
    }
    Ok((
        LoadedRule {
            detect: detect.unbind(),
            optional,
        },
        module,
    ))
}

/// Every `from ravenwatch.enrichment import X` (or `matano.enrichment`)
/// in `files` whose `X` is not in `known`, with file and line.
///
/// A file that does not parse is left to the import, which reports it.
pub fn unknown_table_imports(files: &[PathBuf], known: &[&str]) -> Vec<LoadError> {
    Python::attach(|py| {
        let Ok(helpers) = cstring(HELPERS).and_then(|code| {
            PyModule::from_code(py, &code, c"<ravenwatch.helpers>", c"_ravenwatch_helpers")
        }) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for file in files {
            let Ok(source) = std::fs::read_to_string(file) else {
                continue;
            };
            let shown = display_path(file);
            let Ok(found) = helpers
                .call_method1("table_imports", (source, &shown))
                .and_then(|f| f.extract::<Vec<(usize, String)>>())
            else {
                continue;
            };
            for (line, name) in found {
                if known.contains(&name.as_str()) {
                    continue;
                }
                let hint = crate::config::closest(&name, known)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                out.push(LoadError {
                    rule: String::new(),
                    file: shown.clone(),
                    line: Some(line),
                    message: format!(
                        "imports enrichment table `{name}`, which is not defined{hint}; known tables: {}",
                        if known.is_empty() { "(none)".to_string() } else { known.join(", ") }
                    ),
                });
            }
        }
        out
    })
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
            .map_err(|e| PythonError::Setup(e.to_string()))?
            .helpers;
        let globals = PyDict::new(py);
        let code = cstring(code).map_err(|e| PythonError::Setup(e.to_string()))?;
        py.run(&code, Some(&globals), None).map_err(|e| {
            let text = helpers
                .bind(py)
                .getattr("format_exception")
                .and_then(|f| f.call1((e.value(py), e.traceback(py))))
                .and_then(|s| s.extract::<String>())
                .unwrap_or_else(|_| e.to_string());
            PythonError::Setup(text)
        })?;
        Ok(globals
            .get_item("result")
            .ok()
            .flatten()
            .map(|v| v.to_string())
            .unwrap_or_default())
    })
}
