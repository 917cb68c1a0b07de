//! What went wrong during a run without stopping it: one `ErrorRecord` per
//! bad line, failed rule call, failed table sync or delivery problem, as
//! written to errors.jsonl and shown on the terminal.

use serde::Serialize;

/// Whose problem an error record reports; serialised in snake case, as
/// errors.jsonl has always spelled it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// An input line or object could not be read or decoded.
    Event,
    /// `detect` raised (or a SQL rule failed on a batch).
    Rule,
    /// An optional function raised or returned the wrong type.
    Function,
    /// A `filter:` failed on a batch (every event went to `detect`).
    Filter,
    /// A table could not be synced or refreshed (the previous snapshot is used).
    Enrichment,
    /// A destination failed, was unknown, or the outputs could not be
    /// updated with the delivery results.
    Delivery,
}

/// One problem met during a run that did not stop it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorRecord {
    pub kind: ErrorKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The last line of the error (for a Python exception, `Type: message`).
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
}

impl ErrorRecord {
    pub fn python(
        kind: ErrorKind,
        rule: &str,
        function: Option<&str>,
        source: String,
        traceback: String,
    ) -> Self {
        let error = traceback.lines().last().unwrap_or_default().to_string();
        Self {
            kind,
            rule: Some(rule.into()),
            function: function.map(str::to_string),
            source: Some(source),
            error,
            traceback: Some(traceback),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_serialise_as_before() {
        for (kind, text) in [
            (ErrorKind::Event, "event"),
            (ErrorKind::Rule, "rule"),
            (ErrorKind::Function, "function"),
            (ErrorKind::Filter, "filter"),
            (ErrorKind::Enrichment, "enrichment"),
            (ErrorKind::Delivery, "delivery"),
        ] {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, serde_json::Value::String(text.into()));
        }
    }
}
