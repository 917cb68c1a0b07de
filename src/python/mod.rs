//! The embedded Python interpreter: the only module that imports pyo3.
//!
//! It exposes enrichment tables as the importable modules
//! `ravenwatch.enrichment` and `matano.enrichment` (`interpreter`), loads
//! each `detect.py` as its own module (`rule`), and runs a rule's functions
//! over a batch of events while attached to the interpreter once per batch
//! (`runtime`). Python exceptions never cross this boundary (`error`): they
//! come back as [`crate::outcome::RuleOutcome::Error`] or
//! [`crate::outcome::FunctionError`] values with a formatted traceback.

mod budget;
mod check;
mod convert;
mod error;
mod interpreter;
mod panther;
mod record;
mod rule;
mod runtime;
mod table;

pub use check::{derive_filter, read_paths, unknown_table_imports};
pub use error::{LoadError, PythonError};
pub use interpreter::{ignore_stop_signals, run_snippet};
pub use panther::run_panther_cases;
pub use rule::OptionalFn;
pub use runtime::PythonRuntime;
