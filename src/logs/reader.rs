use super::decode::{Chunk, DecodePlan, MAX_NESTING};
use super::{EventBatch, PositionKind};
use crate::config::LogTable;
use crate::files::display_path;
use crate::files::{decompress, format_of, format_of_name, open_decompressed};
use serde_json::Value;
use std::io::{BufRead, Read};
use std::path::Path;
use std::sync::Arc;

/// Default number of events per batch.
pub const BATCH_SIZE: usize = 4096;
/// A batch also ends once its events' text reaches this size (Arrow string
/// offsets are 32-bit; very large events make smaller batches).
const MAX_CHUNK_BYTES: usize = 256 * 1024 * 1024;

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

/// What framing a file produces, in order: events split into chunks, not
/// yet decoded (decoding is the costly part, and chunks decode
/// independently, so a caller may decode them on several threads and put
/// the results back in order), or an item ready as it is.
#[derive(Debug)]
pub enum Framed {
    Chunk(Undecoded),
    Ready(ReadItem),
}

/// A chunk of one input's events and where they came from.
#[derive(Debug)]
pub struct Undecoded {
    chunk: Chunk,
    shown: Arc<str>,
    kind: PositionKind,
}

/// Reads log files of one table into event batches.
#[derive(Debug, Clone)]
pub struct EventReader {
    table: Arc<str>,
    plan: Arc<DecodePlan>,
    batch_size: usize,
    /// Once set, no further input is started (`run --follow` stopping).
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
}

impl EventReader {
    /// A reader of the table's declared fields only.
    pub fn new(table: &LogTable) -> Self {
        Self::with_read_paths(table, &[])
    }

    /// A reader that also decodes `read_paths` (the undeclared paths rules
    /// read) as columns.
    pub fn with_read_paths(table: &LogTable, read_paths: &[String]) -> Self {
        Self {
            table: Arc::from(table.name.as_str()),
            plan: Arc::new(DecodePlan::new(
                &table.schema.fields,
                table.schema.to_arrow(),
                &table.timestamp,
                read_paths,
            )),
            batch_size: BATCH_SIZE,
            stop: None,
        }
    }

    /// Starts no further input once `flag` is set: the input in hand is
    /// read to its end, the rest are left unread.
    pub fn stopping_on(mut self, flag: Option<Arc<std::sync::atomic::AtomicBool>>) -> Self {
        self.stop = flag;
        self
    }

    /// Whether no further input should be started.
    pub fn stop_requested(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::SeqCst))
    }

    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// The undeclared paths this reader decodes as columns.
    pub fn read_paths(&self) -> &[Arc<str>] {
        self.plan.read_paths()
    }

    /// Reads one file, handing batches and bad records to `sink` in file order.
    pub fn read_file(&self, path: &Path, sink: &mut dyn FnMut(ReadItem)) {
        self.frame_file(path, &mut |f| self.decode_into(f, sink));
    }

    /// [`EventReader::read_file`], leaving the chunks undecoded.
    pub fn frame_file(&self, path: &Path, sink: &mut dyn FnMut(Framed)) {
        let shown: Arc<str> = Arc::from(display_path(path));
        let result = self.read_file_inner(path, &shown, sink);
        report_failure(&shown, result, sink);
    }

    /// Decodes events already in memory (a test case's `log`), as elements
    /// `1..` of a source named `shown`.
    pub fn read_values(&self, items: Vec<Value>, shown: &str, sink: &mut dyn FnMut(ReadItem)) {
        let shown: Arc<str> = Arc::from(shown);
        let sink = &mut |f| self.decode_into(f, sink);
        let mut chunk = Chunk::with_capacity(items.len().min(self.batch_size));
        for (i, item) in items.iter().enumerate() {
            chunk.push(&item.to_string(), i as u64 + 1);
            if chunk.len() >= self.batch_size || chunk.bytes() >= MAX_CHUNK_BYTES {
                self.emit(std::mem::take(&mut chunk), &shown, PositionKind::Row, sink);
            }
        }
        self.emit(chunk, &shown, PositionKind::Row, sink);
    }

    /// Reads one object or stream named `shown` (its name picks format and
    /// compression).
    pub fn read_stream(
        &self,
        shown: &str,
        input: Box<dyn Read + Send>,
        sink: &mut dyn FnMut(ReadItem),
    ) {
        self.frame_stream(shown, input, &mut |f| self.decode_into(f, sink));
    }

    /// [`EventReader::read_stream`], leaving the chunks undecoded.
    pub fn frame_stream(
        &self,
        shown: &str,
        input: Box<dyn Read + Send>,
        sink: &mut dyn FnMut(Framed),
    ) {
        let shown: Arc<str> = Arc::from(shown);
        let result = decompress(input, &shown)
            .map_err(|e| format!("cannot open: {e}"))
            .and_then(|reader| {
                self.read_decompressed(&format_of_name(&shown), reader, &shown, sink)
            });
        report_failure(&shown, result, sink);
    }

    /// Standard input, read as a stream: `.gz`/`.zst` recognised by their
    /// magic bytes, then a JSON array or a `{"Records": [...]}` object by
    /// its first characters, else JSON lines. Sources read `stdin:<line>`.
    pub fn frame_stdin(&self, sink: &mut dyn FnMut(Framed)) {
        let shown: Arc<str> = Arc::from(super::STDIN_NAME);
        let result = sniff_decompress(Box::new(std::io::stdin()))
            .map_err(|e| format!("cannot read: {e}"))
            .and_then(|mut reader| {
                let head = reader.fill_buf().map_err(|e| format!("cannot read: {e}"))?;
                let format = if looks_like_json_document(head) {
                    "json"
                } else {
                    "jsonl"
                };
                self.read_decompressed(format, reader, &shown, sink)
            });
        report_failure(&shown, result, sink);
    }

    fn decode_into(&self, framed: Framed, sink: &mut dyn FnMut(ReadItem)) {
        match framed {
            Framed::Chunk(chunk) => self.decode(chunk).into_iter().for_each(sink),
            Framed::Ready(item) => sink(item),
        }
    }

    fn read_file_inner(
        &self,
        path: &Path,
        shown: &Arc<str>,
        sink: &mut dyn FnMut(Framed),
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
        sink: &mut dyn FnMut(Framed),
    ) -> Result<(), String> {
        if format == "json" {
            let mut text = Vec::new();
            reader
                .read_to_end(&mut text)
                .map_err(|e| format!("cannot read: {e}"))?;
            // sonic-rs skips values recursively: a document nested deeper
            // than events may be is split without it, so the stack stays
            // bounded and only the too-deep elements are refused.
            if super::decode::nested_deeper_than(&text, MAX_NESTING + 2) {
                let text = String::from_utf8(text).map_err(|e| format!("invalid JSON: {e}"))?;
                return match top_level_array(&text) {
                    Some(array) => self.read_elements_shallow(array, shown, sink),
                    None => self.read_lines(std::io::Cursor::new(text.into_bytes()), shown, sink),
                };
            }
            let start = text.iter().position(|b| !b.is_ascii_whitespace());
            match start.map(|i| text[i]) {
                Some(b'[') => {
                    let text =
                        String::from_utf8(text).map_err(|e| format!("invalid JSON array: {e}"))?;
                    return self.read_elements(&text, shown, sink);
                }
                Some(b'{') => {
                    if let Ok(records) = sonic_rs::get_from_slice(&text, &["Records"]) {
                        if records.as_raw_str().starts_with('[') {
                            return self.read_elements(records.as_raw_str(), shown, sink);
                        }
                        let raw = records.as_raw_str();
                        let shown_value: String = raw.chars().take(40).collect();
                        return Err(format!(
                            "`Records` must be a list of events (as in CloudTrail files), got {}{}",
                            shown_value,
                            if raw.len() > shown_value.len() {
                                "…"
                            } else {
                                ""
                            }
                        ));
                    }
                }
                _ => {}
            }
            return self.read_lines(std::io::Cursor::new(text), shown, sink);
        }
        self.read_lines(reader, shown, sink)
    }

    /// The elements of a JSON array, split by sonic-rs.
    fn read_elements(
        &self,
        array: &str,
        shown: &Arc<str>,
        sink: &mut dyn FnMut(Framed),
    ) -> Result<(), String> {
        let items = sonic_rs::to_array_iter(array).enumerate().map(|(i, item)| {
            item.map_err(|e| {
                let first = e.to_string();
                let first = first.lines().next().unwrap_or_default().to_string();
                format!("invalid JSON array after element {i}: {first}")
            })
        });
        self.push_elements(items, |item| item.as_raw_str(), shown, sink)
    }

    /// [`EventReader::read_elements`] for a document too deep for sonic-rs:
    /// elements are separated by a byte scan, and each is checked when it
    /// is decoded (a too-deep one is an error naming its element).
    fn read_elements_shallow(
        &self,
        array: &str,
        shown: &Arc<str>,
        sink: &mut dyn FnMut(Framed),
    ) -> Result<(), String> {
        let (elements, complete) = match array_elements(array) {
            Ok(all) => (all, true),
            Err(partial) => (partial, false),
        };
        let count = elements.len();
        let unclosed = (!complete).then(|| {
            Err(format!(
                "invalid JSON array after element {count}: it is not closed"
            ))
        });
        let items = elements.into_iter().map(Ok).chain(unclosed);
        self.push_elements(items, |item| item, shown, sink)
    }

    /// Chunks array elements (1-based element numbers); at the first error
    /// the elements before it still reach detection and the error is
    /// returned.
    fn push_elements<T>(
        &self,
        items: impl Iterator<Item = Result<T, String>>,
        text: impl Fn(&T) -> &str,
        shown: &Arc<str>,
        sink: &mut dyn FnMut(Framed),
    ) -> Result<(), String> {
        let mut chunk = Chunk::with_capacity(self.batch_size);
        for (i, item) in items.enumerate() {
            let item = match item {
                Ok(item) => item,
                Err(e) => {
                    self.emit(chunk, shown, PositionKind::Row, sink);
                    return Err(e);
                }
            };
            chunk.push(text(&item), i as u64 + 1);
            if chunk.len() >= self.batch_size || chunk.bytes() >= MAX_CHUNK_BYTES {
                self.emit(std::mem::take(&mut chunk), shown, PositionKind::Row, sink);
            }
        }
        self.emit(chunk, shown, PositionKind::Row, sink);
        Ok(())
    }

    fn read_lines(
        &self,
        mut reader: impl BufRead,
        shown: &Arc<str>,
        sink: &mut dyn FnMut(Framed),
    ) -> Result<(), String> {
        let mut chunk = Chunk::with_capacity(self.batch_size);
        let mut line = Vec::with_capacity(1024);
        let mut number = 0u64;
        loop {
            line.clear();
            let n = match reader.read_until(b'\n', &mut line) {
                Ok(n) => n,
                Err(e) => {
                    self.emit(chunk, shown, PositionKind::Line, sink);
                    return Err(format!("read failed after line {number}: {e}"));
                }
            };
            if n == 0 {
                break;
            }
            number += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match std::str::from_utf8(&line) {
                Ok(text) => chunk.push(text.trim_end(), number),
                Err(e) => sink(Framed::Ready(ReadItem::Error(RecordError {
                    source: position_source(shown, PositionKind::Line, number),
                    message: format!("invalid UTF-8: {e}"),
                }))),
            }
            if chunk.len() >= self.batch_size || chunk.bytes() >= MAX_CHUNK_BYTES {
                self.emit(std::mem::take(&mut chunk), shown, PositionKind::Line, sink);
            }
        }
        self.emit(chunk, shown, PositionKind::Line, sink);
        Ok(())
    }

    /// Hands `chunk`, if it holds any event, to `sink` to be decoded.
    fn emit(
        &self,
        chunk: Chunk,
        shown: &Arc<str>,
        kind: PositionKind,
        sink: &mut dyn FnMut(Framed),
    ) {
        if !chunk.is_empty() {
            sink(Framed::Chunk(Undecoded {
                chunk,
                shown: Arc::clone(shown),
                kind,
            }));
        }
    }

    /// Decodes a chunk: its bad events, then its batch (if any event was good).
    pub fn decode(&self, undecoded: Undecoded) -> Vec<ReadItem> {
        let Undecoded { chunk, shown, kind } = undecoded;
        let events = chunk.len();
        match self.plan.decode(chunk) {
            Ok(decoded) => {
                let mut items: Vec<ReadItem> = decoded
                    .errors
                    .into_iter()
                    .map(|(position, message)| {
                        ReadItem::Error(RecordError {
                            source: position_source(&shown, kind, position),
                            message,
                        })
                    })
                    .collect();
                if !decoded.parts.positions.is_empty() {
                    items.push(ReadItem::Batch(Box::new(EventBatch::new(
                        Arc::clone(&self.table),
                        shown,
                        decoded.parts,
                        kind,
                    ))));
                }
                items
            }
            Err(e) => vec![ReadItem::Error(RecordError {
                source: shown.to_string(),
                message: format!("internal error decoding {events} events (likely a bug): {e}"),
            })],
        }
    }
}

/// `file:line`, or `file#n` for elements and S3 objects.
fn position_source(shown: &str, kind: PositionKind, position: u64) -> String {
    match kind {
        PositionKind::Line if !shown.starts_with("s3://") => format!("{shown}:{position}"),
        _ => format!("{shown}#{position}"),
    }
}

/// Reports a source that could not be read (or broke off) as one error.
fn report_failure(shown: &Arc<str>, result: Result<(), String>, sink: &mut dyn FnMut(Framed)) {
    if let Err(message) = result {
        sink(Framed::Ready(ReadItem::Error(RecordError {
            source: shown.to_string(),
            message,
        })));
    }
}

/// The text of a document's top-level array: the document itself when it
/// is one, else the value of a top-level `"Records"` key when that is an
/// array. A byte scan, depth tracked in a counter (no recursion).
fn top_level_array(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    if bytes[start] == b'[' {
        return Some(&text[start..]);
    }
    if bytes[start] != b'{' {
        return None;
    }
    let (mut depth, mut i) = (0usize, start);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let end = string_end(bytes, i)?;
                if depth == 1 && &text[i..=end] == "\"Records\"" {
                    let rest = text[end + 1..].trim_start().strip_prefix(':')?.trim_start();
                    return rest.starts_with('[').then_some(rest);
                }
                i = end;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The index of the quote closing the string opened at `open`.
fn string_end(bytes: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// The elements of the array `array` starts with, as text, split at the
/// commas of its first level; `Err` with the elements found when the array
/// is not closed.
fn array_elements(array: &str) -> Result<Vec<&str>, Vec<&str>> {
    let bytes = array.as_bytes();
    let mut out = Vec::new();
    let (mut depth, mut i, mut from) = (0usize, 0usize, 1usize);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => match string_end(bytes, i) {
                Some(end) => i = end,
                None => return Err(out),
            },
            b'{' | b'[' => depth += 1,
            b',' if depth == 1 => {
                out.push(array[from..i].trim());
                from = i + 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    let last = array[from..i].trim();
                    if !last.is_empty() {
                        out.push(last);
                    }
                    return Ok(out);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(out)
}

/// Wraps an unnamed stream in the decompressor its first bytes call for
/// (gzip `1f 8b`, zstd `28 b5 2f fd`).
fn sniff_decompress(input: Box<dyn Read + Send>) -> std::io::Result<Box<dyn BufRead + Send>> {
    let mut buffered = std::io::BufReader::with_capacity(1 << 16, input);
    let head = buffered.fill_buf()?;
    let name = if head.starts_with(&[0x1f, 0x8b]) {
        "stream.gz"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "stream.zst"
    } else {
        return Ok(Box::new(buffered));
    };
    crate::files::decompress(Box::new(buffered), name)
}

/// Whether a stream starting with `head` is one JSON document (an array,
/// or an object whose first key is `Records`) rather than JSON lines.
fn looks_like_json_document(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&head[..head.len().min(256)]);
    let text = text.trim_start();
    if text.starts_with('[') {
        return true;
    }
    text.strip_prefix('{')
        .is_some_and(|rest| rest.trim_start().starts_with("\"Records\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LogTable;
    use crate::schema::TableSchema;
    use crate::schema::{Field, FieldType};
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

    #[test]
    fn documents_nested_too_deep_for_the_parser_keep_their_good_elements() {
        // Deep enough to overflow a recursive parser's stack.
        let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
        for (text, name) in [
            (
                format!(r#"[{{"ts":1700000000}}, {deep}, {{"ts":1700000001,"s":"a,]"}}]"#),
                "deep.json",
            ),
            (
                format!(
                    r#"{{"x":{{"Records":1}},"Records":[{{"ts":1700000000}},{deep},{{"ts":1700000001}}]}}"#
                ),
                "deep-ct.json",
            ),
        ] {
            let (batches, errors) = read(&text, name);
            let events: usize = batches.iter().map(|b| b.len()).sum();
            assert_eq!(events, 2, "{name}: {errors:?}");
            assert_eq!(errors.len(), 1, "{name}: {errors:?}");
            assert!(
                errors[0].source.ends_with(&format!("{name}#2")),
                "{errors:?}"
            );
            assert!(
                errors[0].message.contains("nested deeper than 64"),
                "{errors:?}"
            );
        }
        let (_, errors) = read(&format!("{deep}\n{{\"a\":{deep}}}\n"), "deep.jsonl");
        assert_eq!(errors.len(), 2, "{errors:?}");
        let (_, errors) = read(&format!("[{{\"ts\":1}},{deep}"), "open.json");
        assert!(
            errors.iter().any(|e| e.message.contains("is not closed")),
            "{errors:?}"
        );
    }

    #[test]
    fn records_that_is_not_a_list_is_named() {
        let (batches, errors) = read(r#"{"Records":{"ts":1700000000}}"#, "ct.json");
        assert!(batches.is_empty());
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0].message,
            r#"`Records` must be a list of events (as in CloudTrail files), got {"ts":1700000000}"#
        );
    }

    #[test]
    fn a_broken_json_array_keeps_the_elements_before_the_break() {
        let (batches, errors) = read(
            r#"[{"ts":1700000000},{"ts":1700000001},{"ts":17"#,
            "cut.json",
        );
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].len(), 2);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].source.ends_with("cut.json"), "{errors:?}");
        assert!(
            errors[0]
                .message
                .starts_with("invalid JSON array after element 2: "),
            "{errors:?}"
        );
    }

    /// Every item as text: a batch as its sources, an error as source and message.
    fn describe(item: ReadItem) -> String {
        match item {
            ReadItem::Batch(b) => (0..b.len())
                .map(|r| b.source(r))
                .collect::<Vec<_>>()
                .join(","),
            ReadItem::Error(e) => format!("error {} {}", e.source, e.message),
            ReadItem::Fatal(e) => format!("fatal {e}"),
        }
    }

    #[test]
    fn parallel_decoding_keeps_input_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = Vec::new();
        for f in 0..3 {
            let path = dir.path().join(format!("{f}.jsonl"));
            let mut file = std::fs::File::create(&path).unwrap();
            for i in 0..200 {
                if i % 17 == 0 {
                    writeln!(file, "not json {i}").unwrap();
                } else {
                    writeln!(file, r#"{{"ts":{},"n":{i}}}"#, 1_700_000_000 + i).unwrap();
                }
            }
            inputs.push(crate::logs::Input::File(path));
        }
        // Batches of 7 events: dozens of chunks decoding at once.
        let reader = EventReader::with_read_paths(&table(), &["n".into()]).with_batch_size(7);
        let mut serial = Vec::new();
        crate::logs::read_inputs(&reader, inputs.clone(), &mut |item| {
            serial.push(describe(item));
            true
        });
        let mut parallel = Vec::new();
        crate::logs::read_inputs_parallel(Arc::new(reader), inputs, 3, &mut |item| {
            parallel.push(describe(item));
            true
        });
        assert_eq!(
            serial.len(),
            3 * (29 + 12),
            "29 batches and 12 bad lines per file"
        );
        assert_eq!(serial, parallel);
        // A taker that stops early stops the threads (this returns).
        let mut taken = 0;
        let reader = EventReader::new(&table()).with_batch_size(7);
        let inputs = vec![crate::logs::Input::File(dir.path().join("0.jsonl"))];
        crate::logs::read_inputs_parallel(Arc::new(reader), inputs, 2, &mut |_| {
            taken += 1;
            taken < 3
        });
        assert_eq!(taken, 3);
        // Told to stop while reading the first input: it is read to its
        // end, the other two are not started.
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = EventReader::new(&table())
            .with_batch_size(7)
            .stopping_on(Some(Arc::clone(&flag)));
        let inputs: Vec<_> = (0..3)
            .map(|n| crate::logs::Input::File(dir.path().join(format!("{n}.jsonl"))))
            .collect();
        let mut items = 0;
        let read = crate::logs::read_inputs_parallel(Arc::new(reader), inputs, 2, &mut |_| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            items += 1;
            true
        });
        assert_eq!(read, 1);
        assert_eq!(items, 29 + 12, "the whole first input");
    }
}
