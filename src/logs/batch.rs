use crate::schema::row_to_json;
use arrow::array::{Array, RecordBatch, StringArray};
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};

/// Whether event positions are line numbers (JSON lines) or element numbers
/// (a JSON array or `Records` object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionKind {
    Line,
    Row,
}

/// A batch of events from one file.
#[derive(Debug)]
pub struct EventBatch {
    /// Log table name.
    pub table: Arc<str>,
    /// The file the events came from, as shown in messages.
    pub file: Arc<str>,
    /// Declared fields, typed.
    pub batch: RecordBatch,
    /// Undeclared fields of each event as a JSON object text (null if none).
    pub extra: StringArray,
    /// 1-based line or element number of each event in `file`.
    pub positions: Vec<u64>,
    pub position_kind: PositionKind,
    /// Event time of each event, epoch microseconds (UTC).
    pub times: Vec<i64>,
    /// What the log table's `enrich:` selectors found (set before rules run).
    pub enrichment: Option<crate::enrichment::BatchEnrichment>,
    parsed_extra: Vec<OnceLock<Option<Value>>>,
}

impl EventBatch {
    pub fn new(
        table: Arc<str>,
        file: Arc<str>,
        batch: RecordBatch,
        extra: StringArray,
        positions: Vec<u64>,
        position_kind: PositionKind,
        times: Vec<i64>,
    ) -> Self {
        let parsed_extra = (0..batch.num_rows()).map(|_| OnceLock::new()).collect();
        Self {
            table,
            file,
            batch,
            extra,
            positions,
            position_kind,
            times,
            enrichment: None,
            parsed_extra,
        }
    }

    pub fn len(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `file:line` or `file#element` of an event; `s3://bucket/key#n` for
    /// objects (a `:` would be ambiguous in a URL).
    pub fn source(&self, row: usize) -> String {
        match self.position_kind {
            PositionKind::Line if !self.file.starts_with("s3://") => {
                format!("{}:{}", self.file, self.positions[row])
            }
            _ => format!("{}#{}", self.file, self.positions[row]),
        }
    }

    /// The undeclared fields of an event, parsed once and cached.
    pub fn extra(&self, row: usize) -> Option<&Value> {
        self.parsed_extra[row]
            .get_or_init(|| {
                if self.extra.is_null(row) {
                    None
                } else {
                    serde_json::from_str(self.extra.value(row)).ok()
                }
            })
            .as_ref()
    }

    /// The whole event as JSON: declared fields (timestamps as RFC 3339)
    /// merged with the undeclared ones.
    pub fn event_json(&self, row: usize) -> Map<String, Value> {
        let mut map = row_to_json(&self.batch, row);
        map.retain(|_, v| !v.is_null());
        if let Some(Value::Object(extra)) = self.extra(row) {
            merge(&mut map, extra);
        }
        map
    }
}

/// Deep-merges `extra` into `into`: objects merge member by member, other
/// values from `extra` fill absent keys.
pub fn merge(into: &mut Map<String, Value>, extra: &Map<String, Value>) {
    for (k, v) in extra {
        match (into.get_mut(k), v) {
            (Some(Value::Object(a)), Value::Object(b)) => merge(a, b),
            (Some(existing), _) if !existing.is_null() => {}
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}
