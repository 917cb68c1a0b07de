//! Loading a `detect.py` and what its functions may be: `detect(r)` and
//! the optional functions that shape an alert, each checked for its
//! signature at load time and for its return type at call time.

use super::convert;
use super::error::{type_name, LoadError};
use crate::config::{DetectionDef, Severity};
use crate::files::display_path;
use crate::outcome::MatchOutput;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyModule, PyString};
use std::ffi::CString;

/// The optional functions of a detection, in the order they run after a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionalFn {
    AlertContext,
    Title,
    Severity,
    Dedupe,
    Description,
    Runbook,
    Reference,
    Destinations,
    Unique,
}

impl OptionalFn {
    pub const ALL: [Self; 9] = [
        Self::AlertContext,
        Self::Title,
        Self::Severity,
        Self::Dedupe,
        Self::Description,
        Self::Runbook,
        Self::Reference,
        Self::Destinations,
        Self::Unique,
    ];

    /// The function's name in `detect.py`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AlertContext => "alert_context",
            Self::Title => "title",
            Self::Severity => "severity",
            Self::Dedupe => "dedupe",
            Self::Description => "description",
            Self::Runbook => "runbook",
            Self::Reference => "reference",
            Self::Destinations => "destinations",
            Self::Unique => "unique",
        }
    }
}

/// A detection module's functions, ready to call.
pub(super) struct LoadedRule {
    pub detect: Py<PyAny>,
    /// The optional functions the module defines, in [`OptionalFn::ALL`] order.
    pub optional: Vec<(OptionalFn, Py<PyAny>)>,
}

impl OptionalFn {
    /// Stores this function's result in `out`, or says why it is the wrong type.
    pub(super) fn store(
        self,
        out: &mut MatchOutput,
        value: &Bound<'_, PyAny>,
    ) -> Result<(), String> {
        let function = self.name();
        let text = |value: &Bound<'_, PyAny>| -> Result<String, String> {
            if let Ok(s) = value.cast::<PyString>() {
                return Ok(s.to_string_lossy().into_owned());
            }
            Err(format!(
                "{function}() must return a str, got {}",
                type_name(value)
            ))
        };
        // Text over the bound is kept truncated, and the error says so.
        let bounded = |slot: &mut Option<String>, value: &Bound<'_, PyAny>| {
            let (kept, cut) = bound_text(text(value)?);
            *slot = Some(kept);
            match cut {
                0 => Ok(()),
                n => Err(format!(
                    "{function}() returned {} bytes, over the limit of {MAX_TEXT_BYTES}; kept the first {MAX_TEXT_BYTES} bytes ({n} left out)",
                    n + MAX_TEXT_BYTES
                )),
            }
        };
        match self {
            Self::AlertContext => {
                if !value.is_instance_of::<PyDict>() {
                    return Err(format!(
                        "alert_context() must return a dict, got {}",
                        type_name(value)
                    ));
                }
                let (json, conversion) = convert::py_to_json(value);
                let serde_json::Value::Object(map) = json else {
                    return Err("alert_context() must return a dict".into());
                };
                let (map, size) = bound_context(map);
                out.context = Some(map);
                let mut problems: Vec<String> = conversion.problem().into_iter().collect();
                if let Some(size) = size {
                    problems.push(format!(
                        "it is {size} bytes as JSON, over the limit of {MAX_CONTEXT_BYTES}; the keys past the limit are left out (see `_truncated`)"
                    ));
                }
                if !problems.is_empty() {
                    return Err(format!(
                        "alert_context() was stored in part: {}",
                        problems.join("; ")
                    ));
                }
            }
            Self::Title => bounded(&mut out.title, value)?,
            Self::Dedupe => bounded(&mut out.dedupe, value)?,
            Self::Description => bounded(&mut out.description, value)?,
            Self::Runbook => bounded(&mut out.runbook, value)?,
            Self::Reference => bounded(&mut out.reference, value)?,
            Self::Unique => bounded(&mut out.unique, value)?,
            Self::Severity => {
                let s = value
                    .cast::<PyString>()
                    .map(|s| s.to_string_lossy().into_owned())
                    .map_err(|_| {
                        format!("severity() must return a str, got {}", type_name(value))
                    })?;
                out.severity = Some(Severity::parse(&s).ok_or_else(|| {
                    format!(
                        "severity() returned {s:?}; expected one of {}",
                        Severity::ALL.map(Severity::as_str).join(", ")
                    )
                })?);
            }
            Self::Destinations => {
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
        }
        Ok(())
    }
}

/// The most a title, dedupe key, description, runbook or reference keeps.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;
/// The most an alert context keeps, as JSON.
pub const MAX_CONTEXT_BYTES: usize = 256 * 1024;

/// `text` cut to [`MAX_TEXT_BYTES`] (on a character boundary, with a
/// marker), and how many bytes were left out.
fn bound_text(mut text: String) -> (String, usize) {
    if text.len() <= MAX_TEXT_BYTES {
        return (text, 0);
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str("…[truncated]");
    (text, cut)
}

/// The context's keys, in order, while they fit in [`MAX_CONTEXT_BYTES`];
/// the rest are replaced by a `_truncated` note. Also the full size when
/// it did not fit.
fn bound_context(
    map: serde_json::Map<String, serde_json::Value>,
) -> (serde_json::Map<String, serde_json::Value>, Option<usize>) {
    let sizes: Vec<usize> = map
        .iter()
        .map(|(k, v)| k.len() + serde_json::to_string(v).map_or(0, |t| t.len()) + 4)
        .collect();
    let total: usize = sizes.iter().sum::<usize>() + 2;
    if total <= MAX_CONTEXT_BYTES {
        return (map, None);
    }
    let keys = map.len();
    let mut used = 2;
    let mut kept = serde_json::Map::new();
    for ((k, v), size) in map.into_iter().zip(sizes) {
        if used + size > MAX_CONTEXT_BYTES - 256 {
            break;
        }
        used += size;
        kept.insert(k, v);
    }
    let note = format!(
        "{} of {keys} keys left out: the context was {total} bytes as JSON, over the limit of {MAX_CONTEXT_BYTES}",
        keys - kept.len()
    );
    kept.insert("_truncated".into(), serde_json::Value::String(note));
    (kept, Some(total))
}

/// Loads a native detection; Panther rules load through `panther::load_run_rule`.
pub(super) fn load_rule<'py>(
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
        unknown_table: None,
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
        let unknown_table = value
            .getattr("ravenwatch_unknown_table")
            .and_then(|t| t.extract::<String>())
            .ok();
        LoadError {
            unknown_table,
            ..fail(line, format!("{kind}: {message}"))
        }
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
    let mut optional = Vec::new();
    for function in OptionalFn::ALL {
        let name = function.name();
        let Some(f) = module.getattr(name).ok().filter(|f| f.is_callable()) else {
            continue;
        };
        check_arity(name, &f)?;
        optional.push((function, f.unbind()));
    }
    Ok((
        LoadedRule {
            detect: detect.unbind(),
            optional,
        },
        module,
    ))
}
