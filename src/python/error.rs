//! Where errors cross the Python boundary. Python exceptions never leave
//! this module as exceptions: a detection that fails to load becomes a
//! [`LoadError`], anything else a [`PythonError`], and a rule that raises
//! becomes a value with its formatted traceback
//! ([`crate::outcome::RuleOutcome::Error`]).

use pyo3::prelude::*;
use std::fmt;

/// A detection that could not be loaded (syntax error, failed import,
/// missing `detect`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LoadError {
    pub rule: String,
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
    /// The failure is an import of an enrichment table the project does
    /// not define (this one), so `validate` can tell it from other errors
    /// without reading the message.
    pub unknown_table: Option<String>,
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
    /// A snippet run by [`crate::python::run_snippet`] raised.
    #[error("the Python snippet raised:\n{0}")]
    Snippet(String),
}

impl PythonError {
    pub(super) fn setup(e: impl fmt::Display) -> Self {
        Self::Setup(e.to_string())
    }
}

/// `err` with its traceback, as Python prints it (`format_exception` is the
/// helper of that name), or its bare message if formatting fails.
pub(super) fn formatted(
    py: Python<'_>,
    format_exception: &Bound<'_, PyAny>,
    err: &PyErr,
) -> String {
    format_exception
        .call1((err.value(py), err.traceback(py)))
        .and_then(|s| s.extract::<String>())
        .unwrap_or_else(|_| err.to_string())
}

/// The Python type name of `value`, for messages.
pub(super) fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}
