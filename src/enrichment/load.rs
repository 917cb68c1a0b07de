//! Inline data files → one typed `RecordBatch`.
//!
//! Every format is read into JSON rows, normalised with the schema's
//! coercion rules and only then decoded into Arrow, so a JSON file, a CSV and
//! a Parquet export of the same table are held to the same rules and report a
//! bad value the same way: file, line (or row) and column.

use super::index::parse_cidr;
use crate::config::{EnrichmentDef, KeyMatch, TableFormat, MMDB_EXTENSION};
use crate::files::{display_path, format_of, open_decompressed};
use crate::schema::{coerce_object, row_to_json, rows_to_batch, Leniency};
use serde_json::{Map, Value};
use std::fmt;
use std::io::{BufRead, Read};
use std::path::Path;

/// Stop collecting after this many bad rows; the count still covers all.
const MAX_REPORTED: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Line(u64),
    Row(u64),
    File,
}

/// One row (or file) that could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub file: String,
    pub location: Location,
    pub column: Option<String>,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Location::Line(n) => write!(f, "{}:{n}: ", self.file)?,
            Location::Row(n) => write!(f, "{} row {n}: ", self.file)?,
            Location::File => write!(f, "{}: ", self.file)?,
        }
        if let Some(column) = &self.column {
            write!(f, "column `{column}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every bad row of one load (the first [`MAX_REPORTED`] are kept).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RowErrors {
    pub table: String,
    pub errors: Vec<RowError>,
    pub total: usize,
}

impl fmt::Display for RowErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.total == 1 { "" } else { "s" };
        write!(f, "table `{}`: {} bad row{s}", self.table, self.total)?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        if self.total > self.errors.len() {
            write!(f, "\n  … and {} more", self.total - self.errors.len())?;
        }
        Ok(())
    }
}

struct Collector<'a> {
    def: &'a EnrichmentDef,
    rows: Vec<Value>,
    errors: Vec<RowError>,
    total_errors: usize,
}

impl Collector<'_> {
    fn error(&mut self, file: &str, location: Location, column: Option<String>, message: String) {
        self.total_errors += 1;
        if self.errors.len() < MAX_REPORTED {
            self.errors.push(RowError {
                file: file.to_string(),
                location,
                column,
                message,
            });
        }
    }

    /// Normalises one row and checks that the primary key is present.
    fn push(
        &mut self,
        file: &str,
        location: Location,
        mut row: Map<String, Value>,
        leniency: Leniency,
    ) {
        for (from, to) in &self.def.source.rename {
            if let Some(value) = row.remove(from) {
                row.insert(to.clone(), value);
            }
        }
        if let Err(e) = coerce_object(&mut row, &self.def.schema.fields, leniency) {
            let column = e.path.clone();
            self.error(file, location, Some(column), e.message);
            return;
        }
        if let Some(pk) = &self.def.primary_key {
            if row.get(pk).is_none_or(Value::is_null) {
                self.error(
                    file,
                    location,
                    Some(pk.clone()),
                    "primary key is missing or empty".into(),
                );
                return;
            }
        }
        for key in &self.def.lookup_keys {
            if key.matching != KeyMatch::Cidr {
                continue;
            }
            let column = &key.columns[0];
            let values: Vec<&str> = match row.get(column) {
                Some(Value::String(s)) => vec![s.as_str()],
                Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            if let Some(message) = values.iter().find_map(|v| parse_cidr(v).err()) {
                self.error(file, location, Some(column.clone()), message);
                return;
            }
        }
        self.rows.push(Value::Object(row));
    }
}

/// Loads the given data files of a table into one batch.
///
/// # Errors
/// All bad rows (up to a limit) with file, line/row and column; nothing is
/// returned if any row is bad, so a partial table never replaces a good one.
pub fn load_files(
    def: &EnrichmentDef,
    files: &[std::path::PathBuf],
) -> Result<arrow::array::RecordBatch, RowErrors> {
    let named: Vec<(std::path::PathBuf, String)> =
        files.iter().map(|p| (p.clone(), display_path(p))).collect();
    load_named(def, &named)
}

/// [`load_files`] with the name each file has in messages (an upload's
/// `s3://` URL for a downloaded copy); the format comes from the local path.
///
/// # Errors
/// As [`load_files`].
pub fn load_named(
    def: &EnrichmentDef,
    files: &[(std::path::PathBuf, String)],
) -> Result<arrow::array::RecordBatch, RowErrors> {
    if def.format == TableFormat::Mmdb {
        return load_mmdb(def, files);
    }
    let mut c = Collector {
        def,
        rows: Vec::new(),
        errors: Vec::new(),
        total_errors: 0,
    };
    for (path, shown) in files {
        let shown = shown.clone();
        if std::fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            c.error(
                &shown,
                Location::File,
                None,
                "the file is empty (0 bytes), as an interrupted export leaves it; the previous \
                 snapshot is kept. For a table with no rows, give a CSV with only its header or \
                 a JSON file holding []"
                    .into(),
            );
            continue;
        }
        let result = match format_of(path).as_str() {
            "jsonl" | "ndjson" | "json" => read_json(&mut c, path, &shown),
            "csv" => read_csv(&mut c, path, &shown),
            "txt" => read_text(&mut c, path, &shown),
            "parquet" => read_parquet(&mut c, path, &shown),
            other => Err(format!("unsupported data format `.{other}`")),
        };
        if let Err(message) = result {
            c.error(&shown, Location::File, None, message);
        }
    }
    if c.total_errors > 0 {
        return Err(RowErrors {
            table: def.name.clone(),
            errors: c.errors,
            total: c.total_errors,
        });
    }
    rows_to_batch(&def.schema, &c.rows).map_err(|e| RowErrors {
        table: def.name.clone(),
        errors: vec![RowError {
            file: display_path(&def.file),
            location: Location::File,
            column: None,
            message: format!("internal error building the table (likely a bug): {e}"),
        }],
        total: 1,
    })
}

/// A `format: mmdb` table: one database file (possibly gzipped), checked
/// whole before it can become a snapshot.
fn load_mmdb(
    def: &EnrichmentDef,
    files: &[(std::path::PathBuf, String)],
) -> Result<arrow::array::RecordBatch, RowErrors> {
    let fail = |file: &str, message: String| RowErrors {
        table: def.name.clone(),
        errors: vec![RowError {
            file: file.to_string(),
            location: Location::File,
            column: None,
            message,
        }],
        total: 1,
    };
    let [(path, shown)] = files else {
        return Err(fail(
            &display_path(&def.file),
            format!("an MMDB table loads one database file, got {}", files.len()),
        ));
    };
    if format_of(path) != MMDB_EXTENSION {
        return Err(fail(
            shown,
            format!(
                "unsupported data format `.{}` for an MMDB table (expected .mmdb)",
                format_of(path)
            ),
        ));
    }
    let mut bytes = Vec::new();
    open_decompressed(path)
        .and_then(|mut r| r.read_to_end(&mut bytes))
        .map_err(|e| fail(shown, format!("cannot read: {e}")))?;
    super::mmdb_batch(bytes).map_err(|message| fail(shown, message))
}

fn read_json(c: &mut Collector<'_>, path: &Path, shown: &str) -> Result<(), String> {
    let mut reader = open_decompressed(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut text = String::new();
    reader
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if !c.def.source.records.is_empty() {
        let mut document: Value =
            serde_json::from_str(&text).map_err(|e| format!("invalid JSON document: {e}"))?;
        let paths = c.def.source.records.clone();
        for path in &paths {
            let mut at = &mut document;
            for part in path.split('.') {
                at = at.get_mut(part).ok_or_else(|| {
                    format!("source.records: the document has no `{path}` (missing `{part}`)")
                })?;
            }
            let Value::Array(rows) = at.take() else {
                return Err(format!("source.records: `{path}` is not an array"));
            };
            // Rows are numbered within their array: `file#path` row N.
            let label = if paths.len() > 1 {
                format!("{shown}#{path}")
            } else {
                shown.to_string()
            };
            push_elements(c, &label, rows);
        }
        return Ok(());
    }
    if text.trim_start().starts_with('[') {
        let rows: Vec<Value> =
            serde_json::from_str(&text).map_err(|e| format!("invalid JSON array: {e}"))?;
        push_elements(c, shown, rows);
        return Ok(());
    }
    for (i, line) in text.lines().enumerate() {
        let location = Location::Line(i as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(map)) => c.push(shown, location, map, Leniency::Json),
            Ok(other) => c.error(
                shown,
                location,
                None,
                format!("expected a JSON object, got {}", kind(&other)),
            ),
            Err(e) => c.error(shown, location, None, format!("invalid JSON: {e}")),
        }
    }
    Ok(())
}

/// Rows of a JSON array, numbered from 1.
fn push_elements(c: &mut Collector<'_>, shown: &str, rows: Vec<Value>) {
    for (i, row) in rows.into_iter().enumerate() {
        let location = Location::Row(i as u64 + 1);
        match row {
            Value::Object(map) => c.push(shown, location, map, Leniency::Json),
            other => c.error(
                shown,
                location,
                None,
                format!("expected a JSON object, got {}", kind(&other)),
            ),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Counts the quote characters read through it: in well-formed CSV they
/// pair up (an escaped quote is doubled), so an odd count at the end means
/// a quoted field was never closed and swallowed the rest of the file.
struct QuoteCounter<R> {
    inner: R,
    quotes: u64,
}

impl<R: Read> Read for QuoteCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.quotes += buf[..n].iter().filter(|&&b| b == b'"').count() as u64;
        Ok(n)
    }
}

/// A record whose quoted fields run over more lines than this is reported:
/// fields may hold newlines, but this many is an unclosed quote.
const MAX_RECORD_LINES: u64 = 100;

fn read_csv(c: &mut Collector<'_>, path: &Path, shown: &str) -> Result<(), String> {
    let reader = open_decompressed(path).map_err(|e| format!("cannot open: {e}"))?;
    let options = &c.def.source;
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(options.has_header)
        .comment(options.comment)
        .flexible(options.columns.is_some())
        .from_reader(QuoteCounter {
            inner: reader,
            quotes: 0,
        });
    let source_headers: Vec<String> = match &options.columns {
        Some(columns) => {
            if options.has_header {
                // Read (and skip) the file's own header.
                csv.headers()
                    .map_err(|e| format!("cannot read the header: {e}"))?;
            }
            columns.clone()
        }
        None => csv
            .headers()
            .map_err(|e| format!("cannot read the header: {e}"))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect(),
    };
    // Rows are built with schema names, so rename applies to headers here.
    let headers: Vec<String> = source_headers
        .iter()
        .map(|h| options.renamed(h).to_string())
        .collect();
    let declared: Vec<bool> = headers
        .iter()
        .map(|h| c.def.schema.field(h).is_some())
        .collect();
    if let Some(pk) = &c.def.primary_key {
        if !headers.contains(pk) {
            return Err(format!(
                "the header has no primary key column `{pk}` (columns: {})",
                headers.join(", ")
            ));
        }
    }
    let leniency = Leniency::Text {
        list_delimiter: c.def.list_delimiter,
    };
    let mut last_start = 0;
    let mut record = csv::StringRecord::new();
    loop {
        match csv.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map(|p| p.line()).unwrap_or(0);
                last_start = line;
                c.error(
                    shown,
                    Location::Line(line),
                    None,
                    format!("malformed CSV: {e}"),
                );
                if e.is_io_error() {
                    return Ok(());
                }
                continue;
            }
        }
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        last_start = line;
        let spans = csv.position().line().saturating_sub(line);
        if spans > MAX_RECORD_LINES {
            return Err(format!(
                "line {line}: a quoted field runs over {spans} lines; is a quote left unclosed? \
                 (fields may hold newlines, but not more than {MAX_RECORD_LINES} lines)"
            ));
        }
        let mut row = Map::with_capacity(headers.len());
        for ((header, cell), keep) in headers.iter().zip(record.iter()).zip(&declared) {
            if *keep {
                row.insert(header.clone(), Value::String(cell.to_string()));
            }
        }
        c.push(shown, Location::Line(line), row, leniency);
    }
    if csv.get_ref().quotes % 2 == 1 {
        return Err(format!(
            "line {last_start}: a quoted field is never closed, so it runs to the end of the file"
        ));
    }
    Ok(())
}

fn read_text(c: &mut Collector<'_>, path: &Path, shown: &str) -> Result<(), String> {
    let reader = open_decompressed(path).map_err(|e| format!("cannot open: {e}"))?;
    let column = c.def.schema.fields[0].name.clone();
    let leniency = Leniency::Text {
        list_delimiter: c.def.list_delimiter,
    };
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read line {}: {e}", i + 1))?;
        let value = line.trim();
        if value.is_empty() || value.starts_with('#') {
            continue;
        }
        let mut row = Map::with_capacity(1);
        row.insert(column.clone(), Value::String(value.to_string()));
        c.push(shown, Location::Line(i as u64 + 1), row, leniency);
    }
    Ok(())
}

fn read_parquet(c: &mut Collector<'_>, path: &Path, shown: &str) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| format!("invalid Parquet file: {e}"))?;
    let mut row_number = 0u64;
    for batch in reader {
        let batch = batch.map_err(|e| format!("invalid Parquet data: {e}"))?;
        for row in 0..batch.num_rows() {
            row_number += 1;
            c.push(
                shown,
                Location::Row(row_number),
                row_to_json(&batch, row),
                Leniency::Json,
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Project;
    use crate::schema::row_to_json;
    use std::io::Write;

    fn project(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Project) {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let p = dir.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        let project = Project::load(dir.path()).unwrap();
        (dir, project)
    }

    #[test]
    fn text_gzip_and_parquet_files_load() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"# scanners\n192.0.2.1\n\n192.0.2.2\n")
            .unwrap();
        let text = gz.finish().unwrap();
        let yml = b"name: scanners\nschema:\n  primary_key: ip\n  fields: [ { name: ip, type: string } ]\n";
        let (_d, p) = project(&[
            ("enrichment/scanners/enrichment.yml", yml),
            ("enrichment/scanners/data.txt.gz", &text),
        ]);
        let def = &p.enrichment[0];
        let batch = load_files(def, &def.data_files).unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(row_to_json(&batch, 1)["ip"], "192.0.2.2");

        // The same rows written as Parquet load through the same rules.
        let mut parquet = Vec::new();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(&mut parquet, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let (_d2, p2) = project(&[
            ("enrichment/scanners/enrichment.yml", yml),
            ("enrichment/scanners/data.parquet", &parquet),
        ]);
        let def2 = &p2.enrichment[0];
        assert_eq!(load_files(def2, &def2.data_files).unwrap(), batch);
    }

    #[test]
    fn json_array_rows_are_numbered() {
        let yml = b"name: t\nschema:\n  primary_key: id\n  fields: [ { name: id, type: long } ]\n";
        let (_d, p) = project(&[
            ("enrichment/t/enrichment.yml", yml),
            ("enrichment/t/data.json", b"[{\"id\": 1}, {\"id\": \"x\"}]"),
        ]);
        let def = &p.enrichment[0];
        let err = load_files(def, &def.data_files).unwrap_err();
        assert_eq!(err.errors[0].location, Location::Row(2));
        assert_eq!(err.errors[0].column.as_deref(), Some("id"));
    }
}
