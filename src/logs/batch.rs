use crate::config::Selector;
use crate::enrichment::{BatchEnrichment, Tables};
use crate::schema::row_to_json;
use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use serde_json::{Map, Value};
use std::sync::{Arc, OnceLock};

/// Whether event positions are line numbers (JSON lines) or element numbers
/// (a JSON array or `Records` object).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionKind {
    Line,
    Row,
}

/// The column of a path the schema does not declare but a rule reads.
#[derive(Debug, Clone)]
pub enum ReadColumn {
    /// Every value of the path in this batch has one JSON type (string,
    /// int, float, bool, or a list of one of those).
    Typed(ArrayRef),
    /// Mixed types, objects or numbers beyond `i64`: each value's JSON text.
    Json(StringArray),
}

impl ReadColumn {
    /// The column as lookup keys: typed values as they are; for JSON text,
    /// strings unquoted, numbers and booleans as written, anything else null.
    pub fn key_array(&self) -> ArrayRef {
        match self {
            ReadColumn::Typed(a) => Arc::clone(a),
            ReadColumn::Json(texts) => Arc::new(
                texts
                    .iter()
                    .map(|t| match serde_json::from_str::<Value>(t?).ok()? {
                        Value::String(s) => Some(s),
                        v @ (Value::Number(_) | Value::Bool(_)) => Some(v.to_string()),
                        _ => None,
                    })
                    .collect::<StringArray>(),
            ),
        }
    }

    pub fn is_null(&self, row: usize) -> bool {
        match self {
            ReadColumn::Typed(a) => a.is_null(row),
            ReadColumn::Json(a) => a.is_null(row) || a.value(row) == "null",
        }
    }
}

/// The undeclared paths rules read, one column each (see
/// [`super::DecodePlan`]).
#[derive(Debug, Clone, Default)]
pub struct ReadColumns {
    paths: Vec<Arc<str>>,
    columns: Vec<ReadColumn>,
}

impl ReadColumns {
    pub fn new(columns: Vec<(Arc<str>, ReadColumn)>) -> Self {
        let (paths, columns) = columns.into_iter().unzip();
        Self { paths, columns }
    }

    /// The column of a dotted path, if rules read it.
    pub fn get(&self, path: &str) -> Option<&ReadColumn> {
        self.paths
            .iter()
            .position(|p| p.as_ref() == path)
            .map(|i| &self.columns[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<str>, &ReadColumn)> {
        self.paths.iter().zip(&self.columns)
    }

    pub(super) fn filter(self, keep: &dyn Fn(&dyn Array) -> ArrayRef) -> Self {
        use arrow::array::AsArray;
        let columns = self
            .columns
            .into_iter()
            .map(|c| match c {
                ReadColumn::Typed(a) => ReadColumn::Typed(keep(&a)),
                ReadColumn::Json(a) => ReadColumn::Json(keep(&a).as_string::<i32>().clone()),
            })
            .collect();
        Self {
            paths: self.paths,
            columns,
        }
    }
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
    /// Undeclared paths that rules read, typed by what they hold.
    pub read: ReadColumns,
    /// Each event's JSON text as read.
    pub raw: StringArray,
    /// 1-based line or element number of each event in `file`.
    pub positions: Vec<u64>,
    pub position_kind: PositionKind,
    /// Event time of each event, epoch microseconds (UTC).
    pub times: Vec<i64>,
    /// What the log table's `enrich:` selectors found (set before rules run).
    pub enrichment: Option<crate::enrichment::BatchEnrichment>,
    parsed: Vec<OnceLock<Option<Map<String, Value>>>>,
    /// Selectors to run per event when a rule asks (see
    /// [`EventBatch::defer_selectors`]), and what each event found.
    deferred: Option<(Vec<Selector>, Tables)>,
    per_event: Vec<OnceLock<BatchEnrichment>>,
    deferred_keys: OnceLock<Vec<(Arc<str>, ArrayRef)>>,
}

/// The columns and positions of a decoded batch.
pub struct BatchParts {
    pub batch: RecordBatch,
    pub read: ReadColumns,
    pub raw: StringArray,
    pub positions: Vec<u64>,
    pub times: Vec<i64>,
}

impl EventBatch {
    pub fn new(
        table: Arc<str>,
        file: Arc<str>,
        parts: BatchParts,
        position_kind: PositionKind,
    ) -> Self {
        let parsed = (0..parts.batch.num_rows())
            .map(|_| OnceLock::new())
            .collect();
        Self {
            table,
            file,
            batch: parts.batch,
            read: parts.read,
            raw: parts.raw,
            positions: parts.positions,
            position_kind,
            times: parts.times,
            enrichment: None,
            parsed,
            deferred: None,
            per_event: Vec::new(),
            deferred_keys: OnceLock::new(),
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

    /// Runs the selectors for an event only when a rule reads
    /// `r.enrichment` of it (a worker: most events never need them).
    pub fn defer_selectors(&mut self, selectors: &[Selector], tables: &Tables) {
        self.per_event = (0..self.len()).map(|_| OnceLock::new()).collect();
        self.deferred = Some((selectors.to_vec(), tables.clone()));
    }

    /// What the selectors found for the events of this batch, `row` among
    /// them; `None` when the log table has no selectors.
    pub fn enrichment_of(&self, row: usize) -> Option<&BatchEnrichment> {
        if let Some(all) = &self.enrichment {
            return Some(all);
        }
        let (selectors, tables) = self.deferred.as_ref()?;
        Some(self.per_event[row].get_or_init(|| {
            let keys = self.deferred_keys.get_or_init(|| {
                self.selector_keys(selectors)
                    .into_iter()
                    .map(|(p, a)| (Arc::from(p), a))
                    .collect()
            });
            let undeclared: Vec<(&str, &dyn Array)> =
                keys.iter().map(|(p, a)| (p.as_ref(), a.as_ref())).collect();
            BatchEnrichment::compute_rows(selectors, tables, &self.batch, &undeclared, row..row + 1)
        }))
    }

    fn selector_keys(&self, selectors: &[Selector]) -> Vec<(&str, ArrayRef)> {
        self.read
            .iter()
            .filter(|(path, _)| {
                selectors
                    .iter()
                    .any(|s| s.fields.iter().any(|f| f == path.as_ref()))
            })
            .map(|(path, column)| (path.as_ref(), column.key_array()))
            .collect()
    }

    /// Runs the log table's `enrich:` selectors over this batch, reading
    /// undeclared selector fields from their columns.
    pub fn apply_selectors(&mut self, selectors: &[Selector], tables: &Tables) {
        let keys = self.selector_keys(selectors);
        let undeclared: Vec<(&str, &dyn Array)> =
            keys.iter().map(|(p, a)| (*p, a.as_ref())).collect();
        let found = BatchEnrichment::compute(selectors, tables, &self.batch, &undeclared);
        self.enrichment = Some(found);
    }

    /// The event as its JSON text says (no declared types applied), parsed
    /// on first use and kept: for reads no column answers.
    pub fn parsed(&self, row: usize) -> Option<&Map<String, Value>> {
        self.parsed[row]
            .get_or_init(|| match serde_json::from_str(self.raw.value(row)) {
                Ok(Value::Object(map)) => Some(map),
                _ => None,
            })
            .as_ref()
    }

    /// The whole event as JSON: declared fields (timestamps as RFC 3339)
    /// merged with the rest of the event.
    pub fn event_json(&self, row: usize) -> Map<String, Value> {
        let mut map = row_to_json(&self.batch, row);
        map.retain(|_, v| !v.is_null());
        if let Some(rest) = self.parsed(row) {
            merge(&mut map, rest);
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
