use super::{EventBatch, PositionKind};
use crate::config::LogTable;
use crate::files::display_path;
use crate::files::{decompress, format_of, format_of_name, open_decompressed};
use crate::schema::{coerce_object, rows_to_batch, Field, FieldType, Leniency};
use arrow::array::StringArray;
use serde_json::{Map, Value};
use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::Arc;

/// Default number of events per batch.
pub const BATCH_SIZE: usize = 4096;

/// An event that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// `file:line`, `file#element`, or the file alone.
    pub source: String,
    pub message: String,
}

/// What reading a file produces, in order.
#[derive(Debug)]
pub enum ReadItem {
    Batch(Box<EventBatch>),
    Error(RecordError),
    /// An input could not be fetched at all (storage failure after
    /// retries): the run stops, since continuing would skip its events.
    Fatal(crate::storage::StorageError),
}

/// Reads log files of one table into event batches.
#[derive(Debug, Clone)]
pub struct EventReader {
    table: Arc<str>,
    fields: Arc<Vec<Field>>,
    schema: crate::schema::TableSchema,
    timestamp_path: Vec<String>,
    batch_size: usize,
}

struct Pending {
    rows: Vec<Value>,
    extra: Vec<Option<String>>,
    positions: Vec<u64>,
    times: Vec<i64>,
}

impl EventReader {
    pub fn new(table: &LogTable) -> Self {
        Self {
            table: Arc::from(table.name.as_str()),
            fields: Arc::new(table.schema.fields.clone()),
            schema: table.schema.clone(),
            timestamp_path: table.timestamp.split('.').map(str::to_string).collect(),
            batch_size: BATCH_SIZE,
        }
    }

    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Reads one file, handing batches and bad records to `sink` in file order.
    pub fn read_file(&self, path: &Path, sink: &mut dyn FnMut(ReadItem)) {
        let shown: Arc<str> = Arc::from(display_path(path));
        if let Err(message) = self.read_file_inner(path, &shown, sink) {
            sink(ReadItem::Error(RecordError {
                source: shown.to_string(),
                message,
            }));
        }
    }

    /// Decodes events already in memory (a test case's `log`), as elements
    /// `1..` of a source named `shown`.
    pub fn read_values(&self, items: Vec<Value>, shown: &str, sink: &mut dyn FnMut(ReadItem)) {
        let shown: Arc<str> = Arc::from(shown);
        // read_elements never fails: errors are per element.
        let _ = self.read_elements(items, &shown, sink);
    }

    /// Reads one object or stream named `shown` (its name picks format and
    /// compression).
    pub fn read_stream(
        &self,
        shown: &str,
        input: Box<dyn Read + Send>,
        sink: &mut dyn FnMut(ReadItem),
    ) {
        let shown: Arc<str> = Arc::from(shown);
        let result = decompress(input, &shown)
            .map_err(|e| format!("cannot open: {e}"))
            .and_then(|reader| {
                self.read_decompressed(&format_of_name(&shown), reader, &shown, sink)
            });
        if let Err(message) = result {
            sink(ReadItem::Error(RecordError {
                source: shown.to_string(),
                message,
            }));
        }
    }

    fn read_file_inner(
        &self,
        path: &Path,
        shown: &Arc<str>,
        sink: &mut dyn FnMut(ReadItem),
    ) -> Result<(), String> {
        let format = format_of(path);
        let reader = open_decompressed(path).map_err(|e| format!("cannot open: {e}"))?;
        self.read_decompressed(&format, reader, shown, sink)
    }

    fn read_decompressed(
        &self,
        format: &str,
        mut reader: Box<dyn BufRead + Send>,
        shown: &Arc<str>,
        sink: &mut dyn FnMut(ReadItem),
    ) -> Result<(), String> {
        if format == "json" {
            let mut text = Vec::new();
            reader
                .read_to_end(&mut text)
                .map_err(|e| format!("cannot read: {e}"))?;
            let start = text.iter().position(|b| !b.is_ascii_whitespace());
            match start.map(|i| text[i]) {
                Some(b'[') => {
                    let items: Vec<Value> = serde_json::from_slice(&text)
                        .map_err(|e| format!("invalid JSON array: {e}"))?;
                    return self.read_elements(items, shown, sink);
                }
                Some(b'{') => {
                    if let Ok(Value::Object(mut doc)) = serde_json::from_slice::<Value>(&text) {
                        if let Some(Value::Array(records)) = doc.remove("Records") {
                            return self.read_elements(records, shown, sink);
                        }
                    }
                }
                _ => {}
            }
            return self.read_lines(std::io::Cursor::new(text), shown, sink);
        }
        self.read_lines(reader, shown, sink)
    }

    fn read_elements(
        &self,
        items: Vec<Value>,
        shown: &Arc<str>,
        sink: &mut dyn FnMut(ReadItem),
    ) -> Result<(), String> {
        let mut pending = self.pending();
        for (i, item) in items.into_iter().enumerate() {
            let position = i as u64 + 1;
            let result = self.decode(item);
            self.accept(
                result,
                position,
                &mut pending,
                shown,
                PositionKind::Row,
                sink,
            );
            if pending.rows.len() >= self.batch_size {
                self.flush(&mut pending, shown, PositionKind::Row, sink);
            }
        }
        self.flush(&mut pending, shown, PositionKind::Row, sink);
        Ok(())
    }

    fn read_lines(
        &self,
        mut reader: impl BufRead,
        shown: &Arc<str>,
        sink: &mut dyn FnMut(ReadItem),
    ) -> Result<(), String> {
        let mut pending = self.pending();
        let mut line = Vec::with_capacity(1024);
        let mut number = 0u64;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("read failed after line {number}: {e}"))?;
            if n == 0 {
                break;
            }
            number += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed =
                serde_json::from_slice::<Value>(&line).map_err(|e| format!("invalid JSON: {e}"));
            let result = parsed.and_then(|v| self.decode(v));
            self.accept(
                result,
                number,
                &mut pending,
                shown,
                PositionKind::Line,
                sink,
            );
            if pending.rows.len() >= self.batch_size {
                self.flush(&mut pending, shown, PositionKind::Line, sink);
            }
        }
        self.flush(&mut pending, shown, PositionKind::Line, sink);
        Ok(())
    }

    fn pending(&self) -> Pending {
        Pending {
            rows: Vec::with_capacity(self.batch_size),
            extra: Vec::with_capacity(self.batch_size),
            positions: Vec::with_capacity(self.batch_size),
            times: Vec::with_capacity(self.batch_size),
        }
    }

    fn accept(
        &self,
        result: Result<Decoded, String>,
        position: u64,
        pending: &mut Pending,
        shown: &Arc<str>,
        kind: PositionKind,
        sink: &mut dyn FnMut(ReadItem),
    ) {
        match result {
            Ok(decoded) => {
                pending.rows.push(decoded.declared);
                pending.extra.push(decoded.extra);
                pending.times.push(decoded.time);
                pending.positions.push(position);
            }
            Err(message) => {
                let source = match kind {
                    PositionKind::Line if !shown.starts_with("s3://") => {
                        format!("{shown}:{position}")
                    }
                    _ => format!("{shown}#{position}"),
                };
                sink(ReadItem::Error(RecordError { source, message }));
            }
        }
    }

    fn flush(
        &self,
        pending: &mut Pending,
        shown: &Arc<str>,
        kind: PositionKind,
        sink: &mut dyn FnMut(ReadItem),
    ) {
        if pending.rows.is_empty() {
            return;
        }
        let taken = std::mem::replace(pending, self.pending());
        match rows_to_batch(&self.schema, &taken.rows) {
            Ok(batch) => sink(ReadItem::Batch(Box::new(EventBatch::new(
                Arc::clone(&self.table),
                Arc::clone(shown),
                batch,
                StringArray::from(taken.extra),
                taken.positions,
                kind,
                taken.times,
            )))),
            Err(e) => sink(ReadItem::Error(RecordError {
                source: shown.to_string(),
                message: format!(
                    "internal error decoding {} events (likely a bug): {e}",
                    taken.rows.len()
                ),
            })),
        }
    }

    /// Splits one event into typed declared fields and undeclared extras.
    fn decode(&self, value: Value) -> Result<Decoded, String> {
        let Value::Object(mut map) = value else {
            return Err(format!("expected a JSON object, got {}", short(&value)));
        };
        let extra = split_extras(&mut map, &self.fields);
        coerce_object(&mut map, &self.fields, Leniency::Json)
            .map_err(|e| format!("field `{}`: {}", e.path, e.message))?;
        let time = lookup(&map, &self.timestamp_path)
            .and_then(Value::as_i64)
            .ok_or_else(|| {
                format!(
                    "missing event time field `{}`",
                    self.timestamp_path.join(".")
                )
            })?;
        Ok(Decoded {
            declared: Value::Object(map),
            extra: extra.map(|e| Value::Object(e).to_string()),
            time,
        })
    }
}

struct Decoded {
    declared: Value,
    extra: Option<String>,
    time: i64,
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}…", &s[..s.floor_char_boundary(37)])
    } else {
        s
    }
}

fn lookup<'a>(map: &'a Map<String, Value>, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut v = map.get(first)?;
    for part in rest {
        v = v.as_object()?.get(part)?;
    }
    Some(v)
}

/// Moves members not declared in `fields` out of `map`; declared structs are
/// split recursively. Returns the undeclared members, if any.
fn split_extras(map: &mut Map<String, Value>, fields: &[Field]) -> Option<Map<String, Value>> {
    let mut extras: Option<Map<String, Value>> = None;
    let all = std::mem::take(map);
    for (k, mut v) in all {
        match fields.iter().find(|f| f.name == k) {
            Some(field) => {
                if let (FieldType::Struct(inner), Value::Object(obj)) = (&field.field_type, &mut v)
                {
                    if let Some(nested) = split_extras(obj, inner) {
                        extras
                            .get_or_insert_with(Map::new)
                            .insert(k.clone(), Value::Object(nested));
                    }
                }
                map.insert(k, v);
            }
            None => {
                extras.get_or_insert_with(Map::new).insert(k, v);
            }
        }
    }
    extras
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogTable;
    use crate::schema::TableSchema;
    use std::io::Write;
    use std::path::PathBuf;

    fn table() -> LogTable {
        LogTable {
            name: "events".into(),
            description: None,
            file: PathBuf::from("schemas/events.yml"),
            timestamp: "ts".into(),
            enrich: Vec::new(),
            schema: TableSchema::new(vec![
                Field::new("ts", FieldType::Timestamp),
                Field::new(
                    "source",
                    FieldType::Struct(vec![Field::new("ip", FieldType::String)]),
                ),
            ]),
        }
    }

    fn read(content: &str, name: &str) -> (Vec<EventBatch>, Vec<RecordError>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(content.as_bytes())
            .unwrap();
        let mut batches = Vec::new();
        let mut errors = Vec::new();
        EventReader::new(&table()).read_file(&path, &mut |item| match item {
            ReadItem::Batch(b) => batches.push(*b),
            ReadItem::Error(e) => errors.push(e),
            ReadItem::Fatal(e) => panic!("a local file is never fatal: {e}"),
        });
        (batches, errors)
    }

    #[test]
    fn keeps_undeclared_fields_and_reports_bad_lines() {
        let (batches, errors) = read(
            "{\"ts\":\"2024-01-01T00:00:00Z\",\"source\":{\"ip\":\"1.2.3.4\",\"port\":22},\"user\":\"bob\"}\nnot json\n{\"ts\":\"soon\"}\n",
            "x.jsonl",
        );
        assert_eq!(batches.len(), 1);
        let b = &batches[0];
        assert_eq!(b.len(), 1);
        let event = Value::Object(b.event_json(0));
        assert_eq!(
            event,
            serde_json::json!({"ts":"2024-01-01T00:00:00Z","source":{"ip":"1.2.3.4","port":22},"user":"bob"})
        );
        assert_eq!(errors.len(), 2);
        assert!(errors[0].source.ends_with("x.jsonl:2"), "{:?}", errors[0]);
        assert!(errors[0].message.starts_with("invalid JSON"));
        assert!(errors[1].message.contains("field `ts`"), "{:?}", errors[1]);
    }

    #[test]
    fn reads_cloudtrail_records_objects() {
        let (batches, errors) = read(
            r#"{"Records":[{"ts":1700000000,"eventName":"A"},{"ts":1700000001,"eventName":"B"}]}"#,
            "ct.json",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(batches[0].len(), 2);
        assert!(batches[0].source(1).ends_with("ct.json#2"));
        assert_eq!(batches[0].times[1], 1_700_000_001_000_000);
    }
}
