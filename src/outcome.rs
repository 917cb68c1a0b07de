//! What a rule produced for one batch, whatever ran it (Python functions
//! or a SQL query): the engine turns these into rule matches and errors.
//! They cross from Python worker processes as JSON, hence serde.

use crate::config::Severity;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// An optional function that raised or returned the wrong type; the match
/// still counts with the fallback value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionError {
    pub function: Cow<'static, str>,
    pub message: String,
}

/// What a rule's functions produced for one matching event; `None` means
/// "use the fallback".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MatchOutput {
    pub row: usize,
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    pub title: Option<String>,
    pub severity: Option<Severity>,
    pub dedupe: Option<String>,
    pub description: Option<String>,
    pub runbook: Option<String>,
    pub reference: Option<String>,
    pub destinations: Option<Vec<String>>,
    /// `unique(r)`: what the threshold counts distinct values of.
    pub unique: Option<String>,
    pub errors: Vec<FunctionError>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RuleOutcome {
    Match(Box<MatchOutput>),
    /// `detect` raised: the event is not a match and the error is reported.
    Error {
        row: usize,
        message: String,
    },
}
