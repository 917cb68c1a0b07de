//! What crosses the pipe between a run and its Python workers.
//!
//! A frame is a JSON header (what to do) and an optional Arrow IPC body
//! (the events), each length-prefixed. A batch travels as one IPC stream
//! holding its declared columns, the columns of paths rules read, each
//! event's text, position and time; a worker rebuilds the same
//! [`EventBatch`], so a rule sees the same values in a worker as in
//! process. Enrichment tables do not travel: each generation is written
//! once as an Arrow IPC file that every worker memory-maps, so the pages
//! are shared, not copied per worker.

use crate::enrichment::Manifest;
use crate::logs::{BatchParts, EventBatch, PositionKind, ReadColumn, ReadColumns};
use crate::outcome::RuleOutcome;
use crate::python::LoadError;
use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch, UInt64Array};
use arrow::datatypes::{Field, Int64Type, Schema, SchemaRef, UInt64Type};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A run's request to a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToWorker {
    /// Load the project's Python rules `rules` (plan order) for log table
    /// `table`; answered by `Ready` or `LoadFailed` after the first `Tables`.
    Start { table: String, rules: Vec<String> },
    /// Switch to the table generation mapped from `files` (the run sends
    /// it before the first batch prepared against that generation).
    Tables { files: Vec<TableFile> },
    /// Run the rules over the batch in the body. `selections` has one entry
    /// per rule: the rows its filter kept, or `None` for every row.
    Batch {
        seq: u64,
        table: String,
        file: String,
        line_positions: bool,
        selections: Vec<Option<Vec<u32>>>,
    },
}

/// One table of a generation, as an Arrow IPC file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TableFile {
    pub name: String,
    pub path: PathBuf,
    pub manifest: Option<Manifest>,
}

/// A worker's answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromWorker {
    Ready,
    LoadFailed {
        errors: Vec<LoadError>,
    },
    /// Something outside the rules failed (a table file did not map).
    Failed {
        message: String,
    },
    /// Per rule, in plan order: Python calls made and outcomes.
    Outcomes {
        seq: u64,
        rules: Vec<(u64, Vec<RuleOutcome>)>,
    },
}

/// Writes one frame: header, then body (empty for none).
///
/// # Errors
/// The pipe closed or the header did not serialise.
pub fn write_frame(
    out: &mut impl Write,
    header: &impl Serialize,
    body: &[u8],
) -> std::io::Result<()> {
    let header = serde_json::to_vec(header).map_err(std::io::Error::other)?;
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(&header)?;
    out.write_all(&(body.len() as u64).to_le_bytes())?;
    out.write_all(body)?;
    out.flush()
}

/// Reads one frame; `None` at a clean end of input.
///
/// # Errors
/// The pipe broke mid-frame or the header is not what `T` expects.
pub fn read_frame<T: for<'de> Deserialize<'de>>(
    input: &mut impl Read,
) -> std::io::Result<Option<(T, Vec<u8>)>> {
    let mut len = [0u8; 8];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
    input.read_exact(&mut header)?;
    input.read_exact(&mut len)?;
    let mut body = vec![0u8; u64::from_le_bytes(len) as usize];
    input.read_exact(&mut body)?;
    let header = serde_json::from_slice(&header).map_err(std::io::Error::other)?;
    Ok(Some((header, body)))
}

const READ_PREFIX: &str = "\u{1}read:";
const JSON_PREFIX: &str = "\u{1}json:";
const RAW: &str = "\u{1}raw";
const POSITION: &str = "\u{1}position";
const TIME: &str = "\u{1}time";

/// A batch's columns as one IPC stream.
///
/// # Errors
/// Arrow could not encode the columns (a bug).
pub fn encode_batch(
    batch: &EventBatch,
    rows: Option<&[u32]>,
) -> Result<Vec<u8>, arrow::error::ArrowError> {
    let mut fields: Vec<Field> = batch
        .batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = batch.batch.columns().to_vec();
    for (path, column) in batch.read.iter() {
        let (name, array): (String, ArrayRef) = match column {
            ReadColumn::Typed(a) => (format!("{READ_PREFIX}{path}"), Arc::clone(a)),
            ReadColumn::Json(a) => (format!("{JSON_PREFIX}{path}"), Arc::new(a.clone())),
        };
        fields.push(Field::new(name, array.data_type().clone(), true));
        columns.push(array);
    }
    fields.push(Field::new(RAW, arrow::datatypes::DataType::Utf8, true));
    columns.push(Arc::new(batch.raw.clone()));
    fields.push(Field::new(
        POSITION,
        arrow::datatypes::DataType::UInt64,
        false,
    ));
    columns.push(Arc::new(UInt64Array::from(batch.positions.clone())));
    fields.push(Field::new(TIME, arrow::datatypes::DataType::Int64, false));
    columns.push(Arc::new(Int64Array::from(batch.times.clone())));
    let mut all = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
    if let Some(rows) = rows {
        let indices = arrow::array::UInt32Array::from(rows.to_vec());
        all = arrow::compute::take_record_batch(&all, &indices)?;
    }
    let mut out = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &all.schema())?;
    writer.write(&all)?;
    writer.finish()?;
    drop(writer);
    Ok(out)
}

/// The batch [`encode_batch`] wrote, with its declared columns checked
/// against `declared`.
///
/// # Errors
/// The body is not such a stream.
pub fn decode_batch(
    body: &[u8],
    declared: &SchemaRef,
    table: &str,
    file: &str,
    line_positions: bool,
) -> Result<EventBatch, arrow::error::ArrowError> {
    let bad = |what: &str| arrow::error::ArrowError::IpcError(format!("batch frame: {what}"));
    let mut reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
    let all = reader.next().ok_or_else(|| bad("no batch"))??;
    let n = declared.fields().len();
    let schema = all.schema();
    let mut read = Vec::new();
    let (mut raw, mut positions, mut times) = (None, None, None);
    for (field, column) in schema.fields().iter().zip(all.columns()).skip(n) {
        let name = field.name();
        if let Some(path) = name.strip_prefix(READ_PREFIX) {
            read.push((Arc::from(path), ReadColumn::Typed(Arc::clone(column))));
        } else if let Some(path) = name.strip_prefix(JSON_PREFIX) {
            read.push((
                Arc::from(path),
                ReadColumn::Json(column.as_string::<i32>().clone()),
            ));
        } else if name == RAW {
            raw = Some(column.as_string::<i32>().clone());
        } else if name == POSITION {
            positions = Some(column.as_primitive::<UInt64Type>().values().to_vec());
        } else if name == TIME {
            times = Some(column.as_primitive::<Int64Type>().values().to_vec());
        }
    }
    let batch = RecordBatch::try_new(Arc::clone(declared), all.columns()[..n].to_vec())?;
    let parts = BatchParts {
        batch,
        read: ReadColumns::new(read),
        raw: raw.ok_or_else(|| bad("no event text"))?,
        positions: positions.ok_or_else(|| bad("no positions"))?,
        times: times.ok_or_else(|| bad("no times"))?,
    };
    let kind = if line_positions {
        PositionKind::Line
    } else {
        PositionKind::Row
    };
    Ok(EventBatch::new(
        Arc::from(table),
        Arc::from(file),
        parts,
        kind,
    ))
}

/// Writes `batch` as an Arrow IPC file at `path` (for workers to map).
///
/// # Errors
/// The file could not be written.
pub fn write_table_file(path: &Path, batch: &RecordBatch) -> Result<(), arrow::error::ArrowError> {
    let file = std::fs::File::create(path)?;
    let mut writer =
        arrow::ipc::writer::FileWriter::try_new(std::io::BufWriter::new(file), &batch.schema())?;
    writer.write(batch)?;
    writer.finish()?;
    Ok(())
}

/// The batch of a table file, its buffers pointing into a shared read-only
/// mapping of the file (no copy).
///
/// # Errors
/// The file is missing or not an Arrow IPC file of one batch.
#[allow(unsafe_code)]
pub fn map_table_file(path: &Path) -> Result<RecordBatch, arrow::error::ArrowError> {
    let file = std::fs::File::open(path)?;
    // SAFETY: the run writes each table file once, before any worker maps
    // it, and removes it only after every worker has exited; nothing
    // writes to a mapped file.
    let mmap = unsafe { memmap2::Mmap::map(&file)? };
    let buffer = arrow::buffer::Buffer::from(bytes::Bytes::from_owner(mmap));
    let bad =
        |what: &str| arrow::error::ArrowError::IpcError(format!("{}: {what}", path.display()));
    if buffer.len() < 10 {
        return Err(bad("too short for an Arrow IPC file"));
    }
    let trailer_start = buffer.len() - 10;
    let trailer: [u8; 10] = buffer[trailer_start..]
        .try_into()
        .map_err(|_| bad("no trailer"))?;
    let footer_len = arrow::ipc::reader::read_footer_length(trailer)?;
    let footer = arrow::ipc::root_as_footer(&buffer[trailer_start - footer_len..trailer_start])
        .map_err(|e| bad(&e.to_string()))?;
    let schema =
        arrow::ipc::convert::fb_to_schema(footer.schema().ok_or_else(|| bad("no schema"))?);
    let mut decoder =
        arrow::ipc::reader::FileDecoder::new(Arc::new(schema.clone()), footer.version());
    for block in footer.dictionaries().iter().flatten() {
        let len = block.bodyLength() as usize + block.metaDataLength() as usize;
        let data = buffer.slice_with_length(block.offset() as usize, len);
        decoder.read_dictionary(block, &data)?;
    }
    let blocks: Vec<_> = footer
        .recordBatches()
        .map(|b| b.iter().copied().collect())
        .unwrap_or_default();
    let mut batches = Vec::new();
    for block in &blocks {
        let len = block.bodyLength() as usize + block.metaDataLength() as usize;
        let data = buffer.slice_with_length(block.offset() as usize, len);
        if let Some(batch) = decoder.read_record_batch(block, &data)? {
            batches.push(batch);
        }
    }
    match batches.len() {
        0 => Ok(RecordBatch::new_empty(Arc::new(schema))),
        1 => Ok(batches.remove(0)),
        _ => arrow::compute::concat_batches(&Arc::new(schema), &batches),
    }
}
