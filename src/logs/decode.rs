//! One pass over each event's JSON text, straight into Arrow columns.
//!
//! An event is walked once with sonic-rs's lazy object iterator. Only
//! members on a path that the schema declares or that a rule reads are
//! looked at; everything else is skipped (validated, never built into a
//! tree). The walk records a byte span per path into the chunk's text, so
//! building a column converts spans instead of parsing again. The event's
//! own text stays in the batch (`raw`) for the reads nobody could name in
//! advance (`r.to_dict()`, a computed path).
//!
//! Declared paths take their declared types (with the JSON leniency of
//! [`crate::schema::coerce_value`]); paths only rules read keep JSON's own
//! types, inferred per batch: string, int, float, bool, a list of one of
//! those, or the JSON text itself when a path mixes types.

use super::batch::{BatchParts, ReadColumn, ReadColumns};
use crate::schema::{coerce_value, parse_timestamp_text, CoerceError, Field, FieldType, Leniency};
use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, Date32Builder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, ListBuilder, RecordBatch, StringArray, StringBuilder, StructArray,
    TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, Fields, SchemaRef};
use serde_json::Value;
use std::sync::Arc;

/// Where a value sits in a chunk's text; `len == 0` means absent (a JSON
/// value is never empty).
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn text(self, text: &str) -> Option<&str> {
        (self.len > 0).then(|| &text[self.start as usize..(self.start + self.len) as usize])
    }
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    /// A declared field that is not a struct, by index into `leaves`.
    Leaf(u32),
    /// A declared struct, by index into `structs`.
    Struct(u32),
    /// A path only rules read, by index into `read`.
    Read(u32),
}

#[derive(Debug, Default, Clone)]
struct Node {
    children: Vec<(Box<str>, u32)>,
    slots: Vec<Slot>,
}

impl Node {
    fn child(&self, key: &str) -> Option<u32> {
        self.children
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, i)| *i)
    }
}

#[derive(Debug, Clone)]
struct Leaf {
    path: String,
    ty: FieldType,
}

/// How declared columns nest, to assemble struct arrays after the leaves.
#[derive(Debug, Clone)]
enum Decl {
    Leaf(usize),
    Struct {
        index: usize,
        fields: Fields,
        children: Vec<Decl>,
    },
}

/// The paths to pick out of every event of one log table, as a trie.
#[derive(Debug, Clone)]
pub struct DecodePlan {
    nodes: Vec<Node>,
    leaves: Vec<Leaf>,
    /// Dotted path and type of each declared struct.
    structs: Vec<(String, FieldType)>,
    read: Vec<Arc<str>>,
    decl: Vec<Decl>,
    schema: SchemaRef,
    timestamp_leaf: usize,
    timestamp_path: String,
}

impl DecodePlan {
    /// Plans the declared fields of `fields` (`timestamp` among them, as a
    /// timestamp) plus the undeclared `read_paths`.
    pub fn new(
        fields: &[Field],
        schema: SchemaRef,
        timestamp: &str,
        read_paths: &[String],
    ) -> Self {
        let mut plan = Self {
            nodes: vec![Node::default()],
            leaves: Vec::new(),
            structs: Vec::new(),
            read: Vec::new(),
            decl: Vec::new(),
            schema,
            timestamp_leaf: usize::MAX,
            timestamp_path: timestamp.to_string(),
        };
        plan.decl = plan.plan_fields(0, "", fields);
        plan.timestamp_leaf = plan
            .leaves
            .iter()
            .position(|l| l.path == timestamp)
            .unwrap_or(usize::MAX);
        let mut seen = std::collections::HashSet::new();
        for path in read_paths {
            if path.is_empty() || plan.is_declared(path) || !seen.insert(path.clone()) {
                continue;
            }
            let node = plan.node_for(path);
            let index = plan.read.len() as u32;
            plan.nodes[node].slots.push(Slot::Read(index));
            plan.read.push(Arc::from(path.as_str()));
        }
        plan
    }

    /// The undeclared paths decoded as columns.
    pub fn read_paths(&self) -> &[Arc<str>] {
        &self.read
    }

    fn is_declared(&self, path: &str) -> bool {
        self.leaves.iter().any(|l| l.path == path) || self.structs.iter().any(|s| s.0 == path)
    }

    fn node_for(&mut self, path: &str) -> usize {
        let mut node = 0;
        for part in path.split('.') {
            node = match self.nodes[node].child(part) {
                Some(i) => i as usize,
                None => {
                    let i = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[node].children.push((part.into(), i as u32));
                    i
                }
            };
        }
        node
    }

    fn plan_fields(&mut self, parent: usize, prefix: &str, fields: &[Field]) -> Vec<Decl> {
        let mut out = Vec::new();
        for field in fields {
            let path = if prefix.is_empty() {
                field.name.clone()
            } else {
                format!("{prefix}.{}", field.name)
            };
            let i = self.nodes.len();
            self.nodes.push(Node::default());
            self.nodes[parent]
                .children
                .push((field.name.as_str().into(), i as u32));
            match &field.field_type {
                FieldType::Struct(inner) => {
                    let index = self.structs.len();
                    self.structs.push((path.clone(), field.field_type.clone()));
                    self.nodes[i].slots.push(Slot::Struct(index as u32));
                    let children = self.plan_fields(i, &path, inner);
                    let DataType::Struct(fields) = field.field_type.to_arrow() else {
                        unreachable!("a struct field has a struct type")
                    };
                    out.push(Decl::Struct {
                        index,
                        fields,
                        children,
                    });
                }
                ty => {
                    let index = self.leaves.len();
                    self.leaves.push(Leaf {
                        path,
                        ty: ty.clone(),
                    });
                    self.nodes[i].slots.push(Slot::Leaf(index as u32));
                    out.push(Decl::Leaf(index));
                }
            }
        }
        out
    }
}

/// Events of one source waiting to be decoded: their text, one after the
/// other, and where each came from.
#[derive(Debug, Default)]
pub struct Chunk {
    text: String,
    events: Vec<Span>,
    pub positions: Vec<u64>,
}

impl Chunk {
    pub fn with_capacity(events: usize) -> Self {
        Self {
            text: String::with_capacity(events * 512),
            events: Vec::with_capacity(events),
            positions: Vec::with_capacity(events),
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The size of the events' text so far.
    pub fn bytes(&self) -> usize {
        self.text.len()
    }

    /// Adds one event's JSON text.
    pub fn push(&mut self, event: &str, position: u64) {
        let start = self.text.len() as u32;
        self.text.push_str(event);
        self.events.push(Span {
            start,
            len: event.len() as u32,
        });
        self.positions.push(position);
    }
}

/// A decoded chunk: the events that decoded, and the position and message
/// of each that did not, in position order.
pub struct Decoded {
    pub parts: BatchParts,
    pub errors: Vec<(u64, String)>,
}

impl DecodePlan {
    /// Decodes every event of `chunk`.
    ///
    /// # Errors
    /// Only if the columns do not fit the schema (a bug, not bad input).
    pub fn decode(&self, chunk: Chunk) -> Result<Decoded, arrow::error::ArrowError> {
        let rows = chunk.len();
        let mut leaf_spans = vec![Vec::with_capacity(rows); self.leaves.len()];
        let mut struct_spans = vec![Vec::with_capacity(rows); self.structs.len()];
        let mut read_spans = vec![Vec::with_capacity(rows); self.read.len()];
        let mut failures: Vec<Option<String>> = vec![None; rows];
        let base = chunk.text.as_ptr() as usize;
        for (row, event) in chunk.events.iter().enumerate() {
            for spans in leaf_spans
                .iter_mut()
                .chain(struct_spans.iter_mut())
                .chain(read_spans.iter_mut())
            {
                spans.push(Span::default());
            }
            let text = event.text(&chunk.text).unwrap_or_default();
            let mut spans = RowSpans {
                leaves: &mut leaf_spans,
                structs: &mut struct_spans,
                read: &mut read_spans,
                row,
                base,
            };
            if let Err(message) = self.walk_event(text, &mut spans) {
                failures[row] = Some(message);
            }
        }
        let mut leaves = Vec::with_capacity(self.leaves.len());
        for (leaf, spans) in self.leaves.iter().zip(&leaf_spans) {
            leaves.push(convert_leaf(leaf, spans, &chunk.text, &mut failures)?);
        }
        let mut struct_valid = Vec::with_capacity(self.structs.len());
        for ((path, ty), spans) in self.structs.iter().zip(&struct_spans) {
            struct_valid.push(struct_validity(path, ty, spans, &chunk.text, &mut failures));
        }
        let times = self.event_times(&leaves, &mut failures);
        let mut columns = Vec::with_capacity(self.decl.len());
        for decl in &self.decl {
            columns.push(assemble(decl, &leaves, &struct_valid)?);
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        let read = ReadColumns::new(
            self.read
                .iter()
                .zip(&read_spans)
                .map(|(path, spans)| (Arc::clone(path), infer_column(spans, &chunk.text)))
                .collect(),
        );
        let raw = raw_column(chunk.text, &chunk.events);
        let parts = BatchParts {
            batch,
            read,
            raw,
            positions: chunk.positions,
            times,
        };
        Ok(drop_failed(parts, failures))
    }

    fn walk_event(&self, text: &str, spans: &mut RowSpans<'_>) -> Result<(), String> {
        if nested_deeper_than(text.as_bytes(), MAX_NESTING) {
            return Err(format!(
                "nested deeper than {MAX_NESTING} levels of objects and arrays; such events are \
                 refused, so that the alerts and state that keep them always read back"
            ));
        }
        let first = text.bytes().find(|b| !b.is_ascii_whitespace());
        if first != Some(b'{') {
            return Err(match serde_json::from_str::<Value>(text) {
                Ok(v) => format!("expected a JSON object, got {}", short(&v.to_string())),
                Err(e) => format!("invalid JSON: {e}"),
            });
        }
        // On an error, serde_json's one-line message (the same as for a
        // line that is not JSON at all).
        self.walk(0, text, spans).map_err(|e| {
            match serde_json::from_str::<serde::de::IgnoredAny>(text) {
                Err(serde_error) => format!("invalid JSON: {serde_error}"),
                Ok(_) => format!(
                    "invalid JSON: {}",
                    e.to_string().lines().next().unwrap_or("")
                ),
            }
        })
    }

    fn walk(
        &self,
        node: usize,
        json: &str,
        spans: &mut RowSpans<'_>,
    ) -> Result<(), sonic_rs::Error> {
        let node = &self.nodes[node];
        for item in sonic_rs::to_object_iter(json) {
            let (key, value) = item?;
            let Some(child) = node.child(&key) else {
                continue;
            };
            let raw = value.as_raw_str();
            let span = spans.span_of(raw);
            let child_node = &self.nodes[child as usize];
            for slot in &child_node.slots {
                spans.set(*slot, span);
            }
            if !child_node.children.is_empty() && raw.starts_with('{') {
                self.walk(child as usize, raw, spans)?;
            }
        }
        Ok(())
    }

    fn event_times(&self, leaves: &[ArrayRef], failures: &mut [Option<String>]) -> Vec<i64> {
        use arrow::array::AsArray;
        use arrow::datatypes::TimestampMicrosecondType;
        let Some(column) = leaves.get(self.timestamp_leaf) else {
            for failure in failures.iter_mut().filter(|f| f.is_none()) {
                *failure = Some(format!(
                    "missing event time field `{}`",
                    self.timestamp_path
                ));
            }
            return vec![0; failures.len()];
        };
        let times = column.as_primitive::<TimestampMicrosecondType>();
        let latest = latest_event_time_us();
        (0..times.len())
            .map(|row| {
                let problem = if times.is_null(row) {
                    Some(format!(
                        "missing event time field `{}`",
                        self.timestamp_path
                    ))
                } else {
                    let t = times.value(row);
                    (!(0..=latest).contains(&t)).then(|| {
                        format!(
                            "event time field `{}` is {}, outside the accepted range \
                             1970-01-01T00:00:00Z to a day after now ({}); numbers are read as \
                             seconds, milliseconds, microseconds or nanoseconds since 1970 by \
                             their size",
                            self.timestamp_path,
                            crate::schema::micros_to_rfc3339(t),
                            crate::schema::micros_to_rfc3339(latest)
                        )
                    })
                };
                match problem {
                    Some(message) => {
                        if failures[row].is_none() {
                            failures[row] = Some(message);
                        }
                        0
                    }
                    None => times.value(row),
                }
            })
            .collect()
    }
}

struct RowSpans<'a> {
    leaves: &'a mut [Vec<Span>],
    structs: &'a mut [Vec<Span>],
    read: &'a mut [Vec<Span>],
    row: usize,
    base: usize,
}

impl RowSpans<'_> {
    fn span_of(&self, raw: &str) -> Span {
        let start = raw.as_ptr() as usize - self.base;
        Span {
            start: start as u32,
            len: raw.len() as u32,
        }
    }

    fn set(&mut self, slot: Slot, span: Span) {
        let column = match slot {
            Slot::Leaf(i) => &mut self.leaves[i as usize],
            Slot::Struct(i) => &mut self.structs[i as usize],
            Slot::Read(i) => &mut self.read[i as usize],
        };
        column[self.row] = span;
    }
}

fn short(text: &str) -> String {
    if text.len() > 40 {
        format!("{}…", &text[..text.floor_char_boundary(37)])
    } else {
        text.to_string()
    }
}

/// The text of a JSON string without its quotes, unescaped only if needed.
fn string_value(raw: &str) -> Option<std::borrow::Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(raw)
            .ok()
            .map(std::borrow::Cow::Owned)
    } else {
        Some(std::borrow::Cow::Borrowed(inner))
    }
}

/// `raw` in the canonical JSON form of `ty` (see [`coerce_value`]).
fn coerced(raw: &str, ty: &FieldType, path: &str) -> Result<Value, String> {
    let mut value: Value = serde_json::from_str(raw).map_err(|e| format!("invalid JSON: {e}"))?;
    coerce_value(&mut value, ty, Leniency::Json).map_err(|e| field_error(path, &e))?;
    Ok(value)
}

fn field_error(path: &str, e: &CoerceError) -> String {
    let full = if e.path.is_empty() {
        path.to_string()
    } else if e.path.starts_with('[') {
        format!("{path}{}", e.path)
    } else {
        format!("{path}.{}", e.path)
    };
    format!("field `{full}`: {}", e.message)
}

fn fail(failures: &mut [Option<String>], row: usize, message: String) {
    if failures[row].is_none() {
        failures[row] = Some(message);
    }
}

fn is_plain_integer(raw: &str) -> bool {
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    !digits.is_empty() && digits.len() < 19 && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Converts one declared leaf's spans into its typed column; values that do
/// not fit mark their row as failed (and are null here).
fn convert_leaf(
    leaf: &Leaf,
    spans: &[Span],
    text: &str,
    failures: &mut [Option<String>],
) -> Result<ArrayRef, arrow::error::ArrowError> {
    let rows = spans.len();
    let values = spans.iter().map(|s| s.text(text).filter(|r| *r != "null"));
    macro_rules! build {
        ($builder:expr, |$raw:ident| $fast:expr, |$value:ident| $slow:expr) => {{
            let mut builder = $builder;
            for (row, raw) in values.enumerate() {
                let Some($raw) = raw else {
                    builder.append_null();
                    continue;
                };
                if let Some(v) = $fast {
                    builder.append_value(v);
                    continue;
                }
                match coerced($raw, &leaf.ty, &leaf.path) {
                    Ok($value) => match $slow {
                        Some(v) => builder.append_value(v),
                        None => builder.append_null(),
                    },
                    Err(message) => {
                        fail(failures, row, message);
                        builder.append_null();
                    }
                }
            }
            Arc::new(builder.finish()) as ArrayRef
        }};
    }
    Ok(match &leaf.ty {
        FieldType::String => build!(
            StringBuilder::with_capacity(rows, rows * 16),
            |raw| string_value(raw),
            |value| value
                .as_str()
                .map(|s| std::borrow::Cow::Owned(s.to_string()))
        ),
        FieldType::Long => build!(
            Int64Builder::with_capacity(rows),
            |raw| is_plain_integer(raw)
                .then(|| raw.parse::<i64>().ok())
                .flatten(),
            |value| value.as_i64()
        ),
        FieldType::Int => build!(
            Int32Builder::with_capacity(rows),
            |raw| is_plain_integer(raw)
                .then(|| raw.parse::<i32>().ok())
                .flatten(),
            |value| value.as_i64().and_then(|n| i32::try_from(n).ok())
        ),
        FieldType::Double => build!(
            Float64Builder::with_capacity(rows),
            |raw| raw
                .starts_with(|c: char| c == '-' || c.is_ascii_digit())
                .then(|| raw.parse::<f64>().ok())
                .flatten(),
            |value| value.as_f64()
        ),
        FieldType::Float => build!(
            Float32Builder::with_capacity(rows),
            |raw| None::<f32>,
            |value| value.as_f64().map(|f| f as f32)
        ),
        FieldType::Boolean => build!(
            BooleanBuilder::with_capacity(rows),
            |raw| match raw {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            |value| value.as_bool()
        ),
        FieldType::Timestamp => build!(
            TimestampMicrosecondBuilder::with_capacity(rows)
                .with_timezone(crate::schema::TIMESTAMP_TZ),
            |raw| string_value(raw).and_then(|s| parse_timestamp_text(&s)),
            |value| value.as_i64()
        ),
        FieldType::Date => build!(
            Date32Builder::with_capacity(rows),
            |raw| None::<i32>,
            |value| value.as_i64().and_then(|n| i32::try_from(n).ok())
        ),
        FieldType::List(_) | FieldType::Struct(_) => {
            let mut canonical = Vec::with_capacity(rows);
            for (row, raw) in values.enumerate() {
                let value = match raw.map(|raw| coerced(raw, &leaf.ty, &leaf.path)) {
                    None => Value::Null,
                    Some(Ok(v)) => v,
                    Some(Err(message)) => {
                        fail(failures, row, message);
                        Value::Null
                    }
                };
                canonical.push(value);
            }
            json_column(&leaf.ty, canonical)?
        }
    })
}

/// Canonical JSON values of one type → an Arrow column (lists and other
/// nested declared types; scalars have their own builders).
fn json_column(ty: &FieldType, values: Vec<Value>) -> Result<ArrayRef, arrow::error::ArrowError> {
    let schema = crate::schema::TableSchema::new(vec![Field::new("v", ty.clone())]);
    let rows: Vec<Value> = values
        .into_iter()
        .map(|v| {
            let mut map = serde_json::Map::with_capacity(1);
            map.insert("v".into(), v);
            Value::Object(map)
        })
        .collect();
    Ok(Arc::clone(
        crate::schema::rows_to_batch(&schema, &rows)?.column(0),
    ))
}

/// Which rows hold an object for the declared struct at `path`; anything
/// else but null fails the row.
fn struct_validity(
    path: &str,
    ty: &FieldType,
    spans: &[Span],
    text: &str,
    failures: &mut [Option<String>],
) -> NullBuffer {
    let valid: Vec<bool> = spans
        .iter()
        .enumerate()
        .map(|(row, span)| match span.text(text) {
            None => false,
            Some(raw) if raw.starts_with('{') => true,
            Some("null") => false,
            Some(raw) => {
                if let Err(message) = coerced(raw, ty, path) {
                    fail(failures, row, message);
                }
                false
            }
        })
        .collect();
    NullBuffer::from(valid)
}

fn assemble(
    decl: &Decl,
    leaves: &[ArrayRef],
    valid: &[NullBuffer],
) -> Result<ArrayRef, arrow::error::ArrowError> {
    match decl {
        Decl::Leaf(i) => Ok(Arc::clone(&leaves[*i])),
        Decl::Struct {
            index,
            fields,
            children,
        } => {
            let arrays = children
                .iter()
                .map(|c| assemble(c, leaves, valid))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Arc::new(StructArray::try_new(
                fields.clone(),
                arrays,
                Some(valid[*index].clone()),
            )?))
        }
    }
}

/// Each event's own text, one string per row, sharing the chunk's buffer.
fn raw_column(text: String, events: &[Span]) -> StringArray {
    let contiguous = events
        .windows(2)
        .all(|w| w[0].start + w[0].len == w[1].start)
        && events.first().is_none_or(|e| e.start == 0);
    if contiguous {
        let mut offsets = Vec::with_capacity(events.len() + 1);
        offsets.push(0i32);
        for e in events {
            offsets.push((e.start + e.len) as i32);
        }
        let end = offsets.last().copied().unwrap_or(0) as usize;
        let mut bytes = text.into_bytes();
        bytes.truncate(end);
        StringArray::new(
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            arrow::buffer::Buffer::from_vec(bytes),
            None,
        )
    } else {
        StringArray::from_iter_values(events.iter().map(|e| e.text(&text).unwrap_or_default()))
    }
}

/// The JSON kind of one value, as far as choosing a column type goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Str,
    Int,
    Float,
    Bool,
    EmptyList,
    List(Scalar),
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scalar {
    Str,
    Int,
    Float,
    Bool,
}

fn scalar_kind(raw: &str) -> Option<Scalar> {
    match raw.as_bytes().first()? {
        b'"' => Some(Scalar::Str),
        b't' | b'f' => Some(Scalar::Bool),
        b'-' | b'0'..=b'9' => {
            if is_plain_integer(raw) {
                Some(Scalar::Int)
            } else if raw.contains(['.', 'e', 'E']) {
                Some(Scalar::Float)
            } else {
                None // an integer beyond i64: keep it as JSON
            }
        }
        _ => None,
    }
}

fn kind_of(raw: &str) -> Kind {
    if raw == "null" {
        return Kind::Null;
    }
    if raw.starts_with('[') {
        let mut element: Option<Scalar> = None;
        for item in sonic_rs::to_array_iter(raw) {
            let Ok(item) = item else { return Kind::Json };
            match (scalar_kind(item.as_raw_str()), element) {
                (Some(k), None) => element = Some(k),
                (Some(k), Some(e)) if k == e => {}
                _ => return Kind::Json,
            }
        }
        return element.map_or(Kind::EmptyList, Kind::List);
    }
    match scalar_kind(raw) {
        Some(Scalar::Str) => Kind::Str,
        Some(Scalar::Int) => Kind::Int,
        Some(Scalar::Float) => Kind::Float,
        Some(Scalar::Bool) => Kind::Bool,
        None => Kind::Json,
    }
}

fn unify(a: Kind, b: Kind) -> Kind {
    match (a, b) {
        (Kind::Null, k) | (k, Kind::Null) => k,
        (Kind::EmptyList, Kind::List(s)) | (Kind::List(s), Kind::EmptyList) => Kind::List(s),
        (a, b) if a == b => a,
        _ => Kind::Json,
    }
}

/// A column for a path the schema does not declare, typed by what this
/// batch holds there.
fn infer_column(spans: &[Span], text: &str) -> ReadColumn {
    let values: Vec<Option<&str>> = spans.iter().map(|s| s.text(text)).collect();
    let kind = values
        .iter()
        .flatten()
        .fold(Kind::Null, |k, raw| unify(k, kind_of(raw)));
    let scalars = |scalar: Scalar, raw: &str, list: &mut dyn ScalarSink| match scalar {
        Scalar::Str => list.string(string_value(raw).as_deref()),
        Scalar::Int => list.int(raw.parse().ok()),
        Scalar::Float => list.float(raw.parse().ok()),
        Scalar::Bool => list.bool(Some(raw == "true")),
    };
    let present = values.iter().map(|v| v.filter(|r| *r != "null"));
    match kind {
        Kind::Null | Kind::Json => ReadColumn::Json(StringArray::from(values)),
        Kind::Str | Kind::Int | Kind::Float | Kind::Bool => {
            let scalar = match kind {
                Kind::Str => Scalar::Str,
                Kind::Int => Scalar::Int,
                Kind::Float => Scalar::Float,
                _ => Scalar::Bool,
            };
            let mut sink = Builders::new(scalar, spans.len());
            for raw in present {
                match raw {
                    Some(raw) => scalars(scalar, raw, &mut sink),
                    None => sink.null(),
                }
            }
            ReadColumn::Typed(sink.finish())
        }
        Kind::EmptyList | Kind::List(_) => {
            let scalar = match kind {
                Kind::List(s) => s,
                _ => Scalar::Str,
            };
            let mut list = ListBuilder::new(Builders::new(scalar, spans.len()));
            for raw in present {
                let Some(raw) = raw else {
                    list.append(false);
                    continue;
                };
                for item in sonic_rs::to_array_iter(raw).flatten() {
                    scalars(scalar, item.as_raw_str(), list.values());
                }
                list.append(true);
            }
            ReadColumn::Typed(Arc::new(list.finish()))
        }
    }
}

trait ScalarSink {
    fn string(&mut self, v: Option<&str>);
    fn int(&mut self, v: Option<i64>);
    fn float(&mut self, v: Option<f64>);
    fn bool(&mut self, v: Option<bool>);
}

/// One builder for a column of one JSON scalar kind.
enum Builders {
    Str(StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
}

impl Builders {
    fn new(scalar: Scalar, rows: usize) -> Self {
        match scalar {
            Scalar::Str => Self::Str(StringBuilder::with_capacity(rows, rows * 16)),
            Scalar::Int => Self::Int(Int64Builder::with_capacity(rows)),
            Scalar::Float => Self::Float(Float64Builder::with_capacity(rows)),
            Scalar::Bool => Self::Bool(BooleanBuilder::with_capacity(rows)),
        }
    }

    fn null(&mut self) {
        match self {
            Self::Str(b) => b.append_null(),
            Self::Int(b) => b.append_null(),
            Self::Float(b) => b.append_null(),
            Self::Bool(b) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Str(b) => Arc::new(b.finish()),
            Self::Int(b) => Arc::new(b.finish()),
            Self::Float(b) => Arc::new(b.finish()),
            Self::Bool(b) => Arc::new(b.finish()),
        }
    }
}

impl ScalarSink for Builders {
    fn string(&mut self, v: Option<&str>) {
        if let Self::Str(b) = self {
            b.append_option(v);
        }
    }
    fn int(&mut self, v: Option<i64>) {
        if let Self::Int(b) = self {
            b.append_option(v);
        }
    }
    fn float(&mut self, v: Option<f64>) {
        if let Self::Float(b) = self {
            b.append_option(v);
        }
    }
    fn bool(&mut self, v: Option<bool>) {
        if let Self::Bool(b) = self {
            b.append_option(v);
        }
    }
}

impl arrow::array::ArrayBuilder for Builders {
    fn len(&self) -> usize {
        match self {
            Self::Str(b) => b.len(),
            Self::Int(b) => b.len(),
            Self::Float(b) => b.len(),
            Self::Bool(b) => b.len(),
        }
    }
    fn finish(&mut self) -> ArrayRef {
        Builders::finish(self)
    }
    fn finish_cloned(&self) -> ArrayRef {
        match self {
            Self::Str(b) => Arc::new(b.finish_cloned()),
            Self::Int(b) => Arc::new(b.finish_cloned()),
            Self::Float(b) => Arc::new(b.finish_cloned()),
            Self::Bool(b) => Arc::new(b.finish_cloned()),
        }
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
    fn into_box_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// Removes the rows that failed, turning them into errors.
fn drop_failed(mut parts: BatchParts, failures: Vec<Option<String>>) -> Decoded {
    let mut errors = Vec::new();
    if failures.iter().all(Option::is_none) {
        return Decoded { parts, errors };
    }
    let keep = BooleanArray::from(failures.iter().map(Option::is_none).collect::<Vec<_>>());
    let filter = |array: &dyn Array| {
        arrow::compute::filter(array, &keep).expect("a filter of the same length")
    };
    parts.batch = arrow::compute::filter_record_batch(&parts.batch, &keep)
        .expect("a filter of the same length");
    parts.read = parts.read.filter(&filter);
    parts.raw = {
        use arrow::array::AsArray;
        filter(&parts.raw).as_string::<i32>().clone()
    };
    let mut positions = Vec::new();
    let mut times = Vec::new();
    for (i, failure) in failures.into_iter().enumerate() {
        match failure {
            Some(message) => errors.push((parts.positions[i], message)),
            None => {
                positions.push(parts.positions[i]);
                times.push(parts.times[i]);
            }
        }
    }
    parts.positions = positions;
    parts.times = times;
    Decoded { parts, errors }
}

/// How far past the clock an event time may be (clock skew between log
/// sources and this machine). Later times are refused: a single event
/// dated 2099 would otherwise move the watermark past every open window.
pub const FUTURE_SKEW_US: i64 = 24 * 3600 * 1_000_000;

/// The latest event time accepted now.
fn latest_event_time_us() -> i64 {
    chrono::Utc::now()
        .timestamp_micros()
        .saturating_add(FUTURE_SKEW_US)
}

/// The deepest nesting of objects and arrays an event may have. Alerts keep
/// events inside the state document (four levels down), and JSON readers
/// refuse documents past 128 levels.
pub const MAX_NESTING: usize = 64;

/// Whether the JSON text nests objects and arrays deeper than `max` (a
/// byte scan that skips strings; malformed text is left to the parser).
pub(super) fn nested_deeper_than(text: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::TableSchema;
    use arrow::array::AsArray;
    use arrow::datatypes::{Int32Type, Int64Type};

    fn plan(read: &[&str]) -> DecodePlan {
        let fields = vec![
            Field::new("ts", FieldType::Timestamp),
            Field::new(
                "source",
                FieldType::Struct(vec![
                    Field::new("ip", FieldType::String),
                    Field::new("port", FieldType::Int),
                ]),
            ),
            Field::new("tags", FieldType::List(Box::new(FieldType::String))),
        ];
        let schema = TableSchema::new(fields.clone()).to_arrow();
        let read: Vec<String> = read.iter().map(|s| s.to_string()).collect();
        DecodePlan::new(&fields, schema, "ts", &read)
    }

    fn decode(plan: &DecodePlan, lines: &[&str]) -> Decoded {
        let mut chunk = Chunk::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            chunk.push(line, i as u64 + 1);
        }
        plan.decode(chunk).unwrap()
    }

    #[test]
    fn declared_fields_take_their_types_and_bad_rows_are_reported() {
        let d = decode(
            &plan(&[]),
            &[
                r#"{"ts":"2024-05-01T00:00:00Z","source":{"ip":"1.2.3.4","port":"22"},"tags":"one"}"#,
                r#"{"ts":"2024-05-01T00:00:01Z","source":{"ip":"a\"b","port":3000000000}}"#,
                r#"{"ts":1714521602,"source":null,"x":[1,2]}"#,
                r#"{"source":{"ip":"5.6.7.8"}}"#,
                r#"[1,2]"#,
                r#"{"ts":"2024-05-01T00:00:03Z","source":"nope"}"#,
                r#"{"ts":"2024-05-01T00:00:03Z","source":{"ip":1}"#,
            ],
        );
        assert_eq!(d.parts.positions, vec![1, 3], "{:?}", d.errors);
        assert_eq!(
            d.parts.times,
            vec![1_714_521_600_000_000, 1_714_521_602_000_000]
        );
        let source = d.parts.batch.column(1).as_struct();
        assert_eq!(source.column(0).as_string::<i32>().value(0), "1.2.3.4");
        assert_eq!(source.column(1).as_primitive::<Int32Type>().value(0), 22);
        assert!(source.is_null(1));
        let tags = d.parts.batch.column(2).as_list::<i32>();
        assert_eq!(tags.value(0).as_string::<i32>().value(0), "one");
        assert_eq!(
            d.parts.raw.value(1),
            r#"{"ts":1714521602,"source":null,"x":[1,2]}"#
        );
        let errors: Vec<(u64, &str)> = d.errors.iter().map(|(p, m)| (*p, m.as_str())).collect();
        assert_eq!(
            errors[0],
            (2, "field `source.port`: 3000000000 is out of range for int")
        );
        assert_eq!(errors[1], (4, "missing event time field `ts`"));
        assert_eq!(errors[2], (5, "expected a JSON object, got [1,2]"));
        assert!(
            errors[3]
                .1
                .starts_with("field `source`: \"nope\" is not a valid"),
            "{errors:?}"
        );
        assert!(errors[4].1.starts_with("invalid JSON"), "{errors:?}");
        assert_eq!(errors.len(), 5);
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let d = decode(
            &plan(&["user.name"]),
            &[r#"{"ts":0,"source":{"ip":"a\"b\u00e9"},"user":{"name":"tab\there"}}"#],
        );
        let source = d.parts.batch.column(1).as_struct();
        assert_eq!(source.column(0).as_string::<i32>().value(0), "a\"bé");
        let ReadColumn::Typed(name) = d.parts.read.get("user.name").unwrap() else {
            panic!("a string column")
        };
        assert_eq!(name.as_string::<i32>().value(0), "tab\there");
    }

    #[test]
    fn undeclared_paths_are_typed_by_what_the_batch_holds() {
        let d = decode(
            &plan(&[
                "n",
                "f",
                "mixed",
                "l",
                "e",
                "o",
                "b",
                "big",
                "source.port2",
                "gone",
            ]),
            &[
                r#"{"ts":0,"n":1,"f":1.5,"mixed":1,"l":["a"],"e":[],"o":{"k":1},"b":true,"big":99999999999999999999,"source":{"port2":7}}"#,
                r#"{"ts":0,"n":2,"f":2.0,"mixed":1.5,"l":[],"e":[],"o":"s","b":null}"#,
                r#"{"ts":0,"n":null}"#,
            ],
        );
        let typed = |path: &str| match d.parts.read.get(path).unwrap() {
            ReadColumn::Typed(a) => a.data_type().clone(),
            ReadColumn::Json(_) => DataType::Null,
        };
        assert_eq!(typed("n"), DataType::Int64);
        assert_eq!(typed("f"), DataType::Float64);
        assert_eq!(typed("b"), DataType::Boolean);
        assert!(matches!(typed("l"), DataType::List(f) if f.data_type() == &DataType::Utf8));
        assert!(matches!(typed("e"), DataType::List(_)));
        assert_eq!(typed("source.port2"), DataType::Int64);
        for json in ["mixed", "o", "big", "gone"] {
            assert_eq!(typed(json), DataType::Null, "{json} should be JSON text");
        }
        let ReadColumn::Typed(n) = d.parts.read.get("n").unwrap() else {
            unreachable!()
        };
        assert_eq!(n.as_primitive::<Int64Type>().value(1), 2);
        assert!(n.is_null(2));
        let ReadColumn::Json(mixed) = d.parts.read.get("mixed").unwrap() else {
            unreachable!()
        };
        assert_eq!((mixed.value(0), mixed.value(1)), ("1", "1.5"));
        assert!(d.parts.read.get("gone").unwrap().is_null(0));
    }

    #[test]
    fn declared_paths_are_not_read_columns() {
        let p = plan(&["ts", "source.ip", "source", "x"]);
        let paths: Vec<&str> = p.read_paths().iter().map(|s| s.as_ref()).collect();
        assert_eq!(paths, vec!["x"]);
    }

    #[test]
    fn nesting_is_counted_outside_strings() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        assert!(!nested_deeper_than(deep(64).as_bytes(), 64));
        assert!(nested_deeper_than(deep(65).as_bytes(), 64));
        let quoted = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(100), "{".repeat(100));
        assert!(!nested_deeper_than(quoted.as_bytes(), 64));
    }
}
