//! `ravenwatch query`: registers the project's tables, past runs and
//! `--input` logs in one DataFusion session, runs one SQL statement and
//! prints the result as a table, JSON or CSV.

use super::error::SqlError;
use super::prune::Parsed;
use super::{read_only, register_enrichment, session, with_mmdb_hint};
use crate::config::Project;
use crate::enrichment::Tables;
use crate::logs::{expand_inputs, read_inputs, EventReader, LogError, ReadColumn, ReadItem};
use crate::schema::json_at;
use crate::storage::{Storage, StorageError};
use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde_json::Value;
use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Sql(SqlError),
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Logs(#[from] LogError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{location}: {message}")]
    Output { location: String, message: String },
}

#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    pub sql: String,
    /// Log files, folders or `s3://` prefixes, registered as their log table.
    pub inputs: Vec<String>,
    /// The inputs' log table (when the project has several).
    pub table: Option<String>,
    /// Only this run's alerts and matches (default: every run in storage).
    pub run: Option<String>,
    /// Parallelism of the query (DataFusion partitions).
    pub partitions: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Csv,
}

#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Problems that did not stop the query: unreadable log lines, a table
    /// whose sync failed (its previous snapshot was used).
    pub warnings: Vec<String>,
}

impl QueryResult {
    pub fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Runs `options.sql` (already `parsed`, so the caller could sync only the
/// tables it names) over the project's `tables`, past runs and `--input`
/// logs; `warnings` (say, tables that failed to sync) are passed through to
/// the result.
///
/// # Errors
/// SQL that does not plan or execute (located in the SQL text); an unknown
/// `--run`; inputs or storage that cannot be read.
pub fn run_query(
    project: &Project,
    storage: &dyn Storage,
    tables: &Tables,
    mut warnings: Vec<String>,
    options: &QueryOptions,
    parsed: &Parsed,
) -> Result<QueryResult, QueryError> {
    let ctx = session(options.partitions);
    let sql_error = |e: datafusion::error::DataFusionError| {
        QueryError::Sql(SqlError::from_datafusion(&e, &options.sql))
    };
    register_enrichment(&ctx, tables).map_err(sql_error)?;
    let named = parsed.tables();
    let reads = |name: &str| named.as_ref().is_none_or(|n| n.contains(name));

    let mut runs = None;
    for (name, file, times) in [
        (
            "alerts",
            "alerts.jsonl",
            &["first_match_time", "last_match_time", "created_at"][..],
        ),
        ("matches", "matches.jsonl", &["time"][..]),
    ] {
        if !reads(name) {
            continue;
        }
        let all: &Vec<RunOutput> = match &runs {
            Some(r) => r,
            None => runs.insert(run_outputs(project, storage, options.run.as_deref())?),
        };
        let filter = parsed.runs(name);
        let kept: Vec<&RunOutput> = all.iter().filter(|r| filter.keeps(&r.id)).collect();
        let needed = |column: &str| super::prune::may_read_column(&options.sql, column);
        let (schema, batches) = run_table(storage, &kept, file, times, &needed)?;
        let table = MemTable::try_new(schema, vec![batches]).map_err(sql_error)?;
        ctx.register_table(name, Arc::new(table))
            .map_err(sql_error)?;
    }

    let mut log_name = None;
    let log_table = match options.inputs.is_empty() {
        true => None,
        false => Some(
            project
                .log_table_for(options.table.as_deref())
                .map_err(QueryError::Usage)?,
        ),
    };
    if let Some(table) = log_table.filter(|t| !reads(&t.name)) {
        warnings.push(format!(
            "--input was not read: the query does not name log table `{}`",
            table.name
        ));
    }
    if let Some(table) = log_table.filter(|t| reads(&t.name)) {
        let (schema, batches, errors) = read_logs(project, table, &options.inputs)?;
        warnings.extend(errors);
        let provider = MemTable::try_new(schema, vec![batches]).map_err(sql_error)?;
        ctx.register_table(table.name.as_str(), Arc::new(provider))
            .map_err(sql_error)?;
        log_name = Some(table.name.clone());
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.partitions.max(1))
        .build()
        .map_err(|e| QueryError::Usage(format!("cannot start the query runtime: {e}")))?;
    let result = runtime.block_on(async {
        let frame = ctx.sql_with_options(&options.sql, read_only()).await?;
        let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        Ok::<_, datafusion::error::DataFusionError>((schema, batches))
    });
    let (schema, batches) = result.map_err(|e| {
        let err = with_mmdb_hint(SqlError::from_datafusion(&e, &options.sql), tables);
        let err = with_log_hint(err, project, log_name.as_deref());
        QueryError::Sql(with_name_hint(err, &ctx, project))
    })?;
    Ok(QueryResult {
        schema,
        batches,
        warnings,
    })
}

/// Adds "did you mean" to an unknown table or column: tables among every
/// table the project has, columns among those of the tables registered.
fn with_name_hint(mut err: SqlError, ctx: &SessionContext, project: &Project) -> SqlError {
    if err.message.to_ascii_lowercase().contains("did you mean") {
        return err;
    }
    let quoted = |kind: &str| {
        let rest = err.message.split_once(&format!("{kind} '"))?.1;
        let (name, after) = rest.split_once('\'')?;
        after
            .trim_start()
            .starts_with("not found")
            .then(|| name.rsplit('.').next().unwrap_or(name).to_string())
    };
    let catalog = ctx.catalog("datafusion").and_then(|c| c.schema("public"));
    let registered = catalog
        .as_ref()
        .map(|s| s.table_names())
        .unwrap_or_default();
    let hint = if let Some(table) = quoted("table") {
        let mut names: Vec<String> = project
            .enrichment
            .iter()
            .map(|d| d.name.clone())
            .chain(project.log_tables.iter().map(|t| t.name.clone()))
            .chain(["alerts".to_string(), "matches".to_string()])
            .collect();
        names.sort();
        names.dedup();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        crate::suggest::did_you_mean(&table, &names)
    } else if let Some(column) = quoted("column") {
        let mut columns = Vec::new();
        for name in &registered {
            let provider = catalog
                .as_ref()
                .and_then(|s| futures::executor::block_on(s.table(name)).ok().flatten());
            if let Some(provider) = provider {
                columns.extend(provider.schema().fields().iter().map(|f| f.name().clone()));
            }
        }
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        crate::suggest::did_you_mean(&column, &columns)
    } else {
        String::new()
    };
    err.message.push_str(&hint);
    err
}

/// Explains a missing log table: logs are read only from `--input`.
fn with_log_hint(mut err: SqlError, project: &Project, registered: Option<&str>) -> SqlError {
    if err.message.contains("not found") {
        for table in &project.log_tables {
            if Some(table.name.as_str()) != registered
                && err.message.contains(&format!("{}'", table.name))
            {
                err.message.push_str(&format!(
                    "; log table `{}` is read from files: add --input PATH",
                    table.name
                ));
            }
        }
    }
    err
}

/// The file in `runs/<run id>/` that records where a run wrote its outputs
/// when they went elsewhere (`run --output`): `{"location": "<url>"}`.
pub const RUN_LOCATION: &str = "location.json";

/// The marker a run writes in `runs/<run id>/` before its outputs and
/// removes once its alert state is committed: a run that has it (and that
/// the state does not name) was stopped before it committed, and `query`
/// leaves it out.
pub const RUN_INCOMPLETE: &str = "incomplete";

/// Where the alert state lives.
pub const ALERT_STATE_KEY: &str = "state/alerts.json";

/// The `run_id` of the state in `storage`, read from the start of the
/// file only (the state can be large); `None` without a state or an id.
pub fn state_run_id(storage: &dyn Storage) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::new();
    storage
        .reader(ALERT_STATE_KEY)
        .ok()?
        .take(512)
        .read_to_end(&mut head)
        .ok()?;
    let text = String::from_utf8_lossy(&head);
    let rest = text.split_once(r#""run_id":""#)?.1;
    Some(rest.split_once('"')?.0.to_string())
}

/// The key of run `id`'s incomplete marker.
pub fn run_incomplete_key(id: &str) -> String {
    format!("runs/{id}/{RUN_INCOMPLETE}")
}

/// The key of run `id`'s location record.
pub fn run_location_key(id: &str) -> String {
    format!("runs/{id}/{RUN_LOCATION}")
}

/// Where one run's outputs are: a storage (`None`: the project's own) and
/// the prefix within it.
pub struct RunOutput {
    pub id: String,
    pub storage: Option<Arc<dyn Storage>>,
    pub prefix: String,
}

impl RunOutput {
    fn in_storage(id: &str) -> Self {
        Self {
            prefix: format!("runs/{id}"),
            id: id.to_string(),
            storage: None,
        }
    }
}

/// Where run `id` wrote its outputs: `runs/<id>/` in `storage`, or the
/// location its `location.json` names (`run --output`). `None` when the
/// outputs there belong to another run now (their summary.json names a
/// later run that wrote to the same place).
///
/// # Errors
/// A `location.json` that does not parse, or a location that cannot be opened.
pub fn run_output(
    project: &Project,
    storage: &dyn Storage,
    id: &str,
) -> Result<Option<RunOutput>, QueryError> {
    let Some(location) = run_location(storage, id)? else {
        return Ok(Some(RunOutput::in_storage(id)));
    };
    let elsewhere = crate::storage::open(&location, &project.root, &project.settings.aws)?;
    if summary_run_id(elsewhere.as_ref())?.as_deref() != Some(id) {
        return Ok(None);
    }
    Ok(Some(RunOutput {
        id: id.to_string(),
        storage: Some(elsewhere),
        prefix: String::new(),
    }))
}

/// The location in run `id`'s `location.json`, if it has one.
fn run_location(storage: &dyn Storage, id: &str) -> Result<Option<String>, QueryError> {
    let pointer = run_location_key(id);
    let Some(data) = storage.read(&pointer)? else {
        return Ok(None);
    };
    serde_json::from_slice::<Value>(&data)
        .ok()
        .and_then(|v| v.get("location")?.as_str().map(str::to_string))
        .map(Some)
        .ok_or_else(|| QueryError::Output {
            location: storage.url(&pointer),
            message: "not a run location: expected {\"location\": \"<folder or s3:// URL>\"}"
                .into(),
        })
}

/// Every run recorded in storage (or only `run`), each with where its
/// outputs are: `runs/<id>/` itself, or the location its `location.json`
/// names. The one listing of `runs/` tells which runs have a location, so
/// the others cost no read. Outputs elsewhere count only while their
/// summary.json still names the run: a later run may have written to the
/// same place.
fn run_outputs(
    project: &Project,
    storage: &dyn Storage,
    run: Option<&str>,
) -> Result<Vec<RunOutput>, QueryError> {
    let listed = storage.list("runs/")?;
    let keys: HashSet<&str> = listed.iter().map(String::as_str).collect();
    let mut out = Vec::new();
    let mut committed_last: Option<Option<String>> = None;
    for id in run_ids(&listed, storage, run)? {
        if keys.contains(run_incomplete_key(&id).as_str()) {
            // Stopped before its commit, unless the state names it.
            let last = committed_last.get_or_insert_with(|| state_run_id(storage));
            if last.as_deref() != Some(id.as_str()) {
                continue;
            }
        }
        if !keys.contains(run_location_key(&id).as_str()) {
            out.push(RunOutput::in_storage(&id));
            continue;
        }
        out.extend(run_output(project, storage, &id)?);
    }
    Ok(out)
}

/// The `run_id` in the summary.json at the root of `storage`, if any.
fn summary_run_id(storage: &dyn Storage) -> Result<Option<String>, QueryError> {
    Ok(storage
        .read("summary.json")?
        .and_then(|data| serde_json::from_slice::<Value>(&data).ok())
        .and_then(|v| v.get("run_id")?.as_str().map(str::to_string)))
}

/// `runs/<id>/` prefixes among the `listed` keys, oldest first, or just `run`.
fn run_ids(
    listed: &[String],
    storage: &dyn Storage,
    run: Option<&str>,
) -> Result<Vec<String>, QueryError> {
    let mut ids: Vec<String> = listed
        .iter()
        .filter_map(|k| {
            k.strip_prefix("runs/")?
                .split_once('/')
                .map(|(id, _)| id.to_string())
        })
        .collect();
    ids.dedup();
    match run {
        None => Ok(ids),
        Some(id) if ids.iter().any(|i| i == id) => Ok(vec![id.to_string()]),
        Some(id) => {
            let recent: Vec<&str> = ids.iter().rev().take(5).map(String::as_str).collect();
            Err(QueryError::Usage(format!(
                "no run `{id}` in {} (latest: {})",
                storage.url("runs/"),
                if recent.is_empty() {
                    "none".to_string()
                } else {
                    recent.join(", ")
                }
            )))
        }
    }
}

/// One JSON-lines output of every run as a table with a `run_id` column.
/// Nested values (context, events) become structs when their shapes agree
/// across rows, else JSON text; `times` are read as UTC timestamps. Nested
/// columns the query cannot read (`needed` says) are dropped as each row
/// is read, so they cost no memory.
fn run_table(
    storage: &dyn Storage,
    runs: &[&RunOutput],
    file: &str,
    times: &[&str],
    needed: &dyn Fn(&str) -> bool,
) -> Result<(SchemaRef, Vec<RecordBatch>), QueryError> {
    let parquet = file.replace(".jsonl", ".parquet");
    if let Some(table) = run_table_parquet(storage, runs, &parquet, needed)? {
        return Ok(table);
    }
    let unread: Vec<&str> = NESTED_RUN_COLUMNS
        .iter()
        .copied()
        .filter(|c| !needed(c))
        .collect();
    let mut rows: Vec<Value> = Vec::new();
    for run in runs {
        let storage = run.storage.as_deref().unwrap_or(storage);
        let key = crate::storage::key(&[&run.prefix, file]);
        let Some(data) = storage.read(&key)? else {
            continue;
        };
        for (i, line) in String::from_utf8_lossy(&data).lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let mut value: Value = serde_json::from_str(line).map_err(|e| QueryError::Output {
                location: format!("{}:{}", storage.url(&key), i + 1),
                message: format!("not valid JSON: {e}"),
            })?;
            if let Value::Object(map) = &mut value {
                for column in &unread {
                    map.remove(*column);
                }
                map.insert("run_id".into(), Value::String(run.id.clone()));
            }
            rows.push(value);
        }
    }
    let output = |message: String| QueryError::Output {
        location: storage.url(&format!("runs/*/{file}")),
        message,
    };
    if rows.is_empty() {
        let mut fields: Vec<Field> = times
            .iter()
            .map(|t| Field::new(*t, timestamp_type(), true))
            .collect();
        fields.push(Field::new("rule", DataType::Utf8, true));
        fields.push(Field::new("run_id", DataType::Utf8, true));
        return Ok((Arc::new(Schema::new(fields)), Vec::new()));
    }
    // A nested column whose shapes conflict between rules is kept as text.
    for column in NESTED_RUN_COLUMNS {
        let values = rows
            .iter()
            .filter_map(|r| r.get(column).map(|v| Ok(serde_json::json!({ column: v }))));
        if arrow::json::reader::infer_json_schema_from_iterator(values).is_err() {
            for row in &mut rows {
                if let Some(v) = row.get_mut(column) {
                    *v = Value::String(v.to_string());
                }
            }
        }
    }
    let inferred = arrow::json::reader::infer_json_schema_from_iterator(rows.iter().map(Ok))
        .map_err(|e| output(e.to_string()))?;
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .map(|f| {
            if times.contains(&f.name().as_str()) {
                Field::new(f.name(), timestamp_type(), true)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&schema))
        .build_decoder()
        .map_err(|e| output(e.to_string()))?;
    let mut batches = Vec::new();
    for chunk in rows.chunks(8192) {
        decoder
            .serialize(chunk)
            .map_err(|e| output(e.to_string()))?;
        if let Some(batch) = decoder.flush().map_err(|e| output(e.to_string()))? {
            batches.push(batch);
        }
    }
    Ok((schema, batches))
}

/// [`run_table`] from every run's Parquet output (`alerts.parquet`,
/// `matches.parquet`): only the columns the query may read are decoded (the
/// others are null), and nested columns it reads become structs when their
/// shapes agree, as from JSON lines. `None` when a run has no such file or
/// one of another shape (written by an older version): JSON lines then.
fn run_table_parquet(
    storage: &dyn Storage,
    runs: &[&RunOutput],
    file: &str,
    needed: &dyn Fn(&str) -> bool,
) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>, QueryError> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let mut schema: Option<SchemaRef> = None;
    let mut batches = Vec::new();
    for run in runs {
        let storage = run.storage.as_deref().unwrap_or(storage);
        let key = crate::storage::key(&[&run.prefix, file]);
        let Some(data) = storage.read(&key)? else {
            return Ok(None);
        };
        let url = storage.url(&key);
        let bad = |e: String| QueryError::Output {
            location: url.clone(),
            message: e,
        };
        let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(data))
            .map_err(|e| bad(e.to_string()))?;
        let file_schema = Arc::clone(builder.schema());
        match &schema {
            None => schema = Some(Arc::clone(&file_schema)),
            Some(s) if s.fields() == file_schema.fields() => {}
            Some(_) => return Ok(None),
        }
        // The first column always, so rows are counted.
        let keep: Vec<usize> = (0..file_schema.fields().len())
            .filter(|&i| i == 0 || needed(file_schema.field(i).name()))
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), keep.iter().copied());
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        for batch in reader {
            let batch = batch.map_err(|e| bad(e.to_string()))?;
            let rows = batch.num_rows();
            let mut projected = batch.columns().iter();
            let mut columns: Vec<ArrayRef> = Vec::new();
            for (i, field) in file_schema.fields().iter().enumerate() {
                let column = if keep.contains(&i) {
                    projected.next().map(Arc::clone)
                } else {
                    None
                };
                columns.push(
                    column.unwrap_or_else(|| arrow::array::new_null_array(field.data_type(), rows)),
                );
            }
            columns.push(Arc::new(StringArray::from(vec![run.id.as_str(); rows])));
            batches.push(columns);
        }
    }
    let Some(file_schema) = schema else {
        return Ok(None);
    };
    let mut fields: Vec<Field> = file_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new("run_id", DataType::Utf8, true));
    for (i, field) in file_schema.fields().iter().enumerate() {
        let name = field.name().as_str();
        if NESTED_RUN_COLUMNS.contains(&name) && needed(name) {
            if let Some(ty) = structs_from_text(&mut batches, i, name) {
                fields[i] = Field::new(name, ty, true);
            }
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let batches = batches
        .into_iter()
        .map(|columns| RecordBatch::try_new(Arc::clone(&schema), columns))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| QueryError::Output {
            location: storage.url(&format!("runs/*/{file}")),
            message: e.to_string(),
        })?;
    Ok(Some((schema, batches)))
}

/// Column `i` (JSON text) of every batch as one struct type, when the
/// values' shapes agree; the batches' columns are replaced. `None` (text
/// kept) when they conflict or a value is not JSON.
fn structs_from_text(batches: &mut [Vec<ArrayRef>], i: usize, name: &str) -> Option<DataType> {
    let parse = |columns: &Vec<ArrayRef>| -> Option<Vec<Value>> {
        let texts = columns[i].as_any().downcast_ref::<StringArray>()?;
        texts
            .iter()
            .map(|t| match t {
                Some(t) => serde_json::from_str::<Value>(t).ok(),
                None => Some(Value::Null),
            })
            .collect()
    };
    let values: Vec<Vec<Value>> = batches.iter().map(parse).collect::<Option<_>>()?;
    let rows = || {
        values
            .iter()
            .flatten()
            .filter(|v| !v.is_null())
            .map(|v| Ok(serde_json::json!({ name: v })))
    };
    let inferred = arrow::json::reader::infer_json_schema_from_iterator(rows()).ok()?;
    let ty = inferred.field_with_name(name).ok()?.data_type().clone();
    let one = Arc::new(Schema::new(vec![Field::new(name, ty.clone(), true)]));
    let mut converted = Vec::with_capacity(batches.len());
    for batch_values in &values {
        let mut decoder = arrow::json::ReaderBuilder::new(Arc::clone(&one))
            .with_batch_size(batch_values.len().max(1))
            .build_decoder()
            .ok()?;
        let wrapped: Vec<Value> = batch_values
            .iter()
            .map(|v| serde_json::json!({ name: v }))
            .collect();
        decoder.serialize(&wrapped).ok()?;
        let column = match decoder.flush().ok()? {
            Some(b) => Arc::clone(b.column(0)),
            None => arrow::array::new_null_array(&ty, 0),
        };
        converted.push(column);
    }
    for (columns, column) in batches.iter_mut().zip(converted) {
        columns[i] = column;
    }
    Some(ty)
}

/// The nested (and large) columns of `alerts` and `matches`.
const NESTED_RUN_COLUMNS: [&str; 4] = ["context", "latest_context", "events", "event"];

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("UTC")))
}

/// Events sampled to find the undeclared fields `query --input` shows (as
/// DuckDB's `read_json_auto` samples).
const SAMPLE_EVENTS: usize = 20_480;

/// Decodes `inputs` as `table`: its declared fields, the top-level fields it
/// does not declare (found in the first [`SAMPLE_EVENTS`] events, typed by
/// what they hold: one JSON type throughout, or JSON text), plus `_source`
/// (`file:line`). Unreadable lines come back as warnings.
fn read_logs(
    project: &Project,
    table: &crate::config::LogTable,
    inputs: &[String],
) -> Result<(SchemaRef, Vec<RecordBatch>, Vec<String>), QueryError> {
    let inputs = expand_inputs(inputs, &project.settings.aws).map_err(|e| {
        if e.is_usage() {
            QueryError::Usage(e.to_string())
        } else {
            e.into()
        }
    })?;
    let undeclared = sample_undeclared(table, inputs.clone());
    let reader = EventReader::with_read_paths(table, &undeclared);
    let mut decoded = Vec::new();
    let mut warnings = Vec::new();
    let mut fatal = None;
    read_inputs(&reader, inputs, &mut |item| match item {
        ReadItem::Batch(batch) => {
            decoded.push(batch);
            true
        }
        ReadItem::Error(e) => {
            warnings.push(format!("{}: {}", e.source, e.message));
            true
        }
        ReadItem::Fatal(e) => {
            fatal = Some(e);
            false
        }
    });
    if let Some(e) = fatal {
        return Err(QueryError::Storage(e));
    }
    let paths: Vec<Arc<str>> = reader.read_paths().to_vec();
    let types: Vec<DataType> = paths
        .iter()
        .map(|path| {
            let mut seen: Option<DataType> = None;
            for batch in &decoded {
                let ty = match batch.read.get(path) {
                    Some(ReadColumn::Typed(a)) if a.null_count() < a.len() => a.data_type().clone(),
                    Some(ReadColumn::Json(a)) if a.iter().flatten().any(|t| t != "null") => {
                        return DataType::Utf8;
                    }
                    _ => continue,
                };
                match &seen {
                    None => seen = Some(ty),
                    Some(s) if *s == ty => {}
                    Some(_) => return DataType::Utf8,
                }
            }
            seen.unwrap_or(DataType::Utf8)
        })
        .collect();
    let mut fields: Vec<Field> = table
        .schema
        .to_arrow()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for (path, ty) in paths.iter().zip(&types) {
        fields.push(Field::new(path.as_ref(), ty.clone(), true));
    }
    fields.push(Field::new("_source", DataType::Utf8, false));
    let schema = Arc::new(Schema::new(fields));
    let mut batches = Vec::new();
    for batch in decoded {
        let mut columns = batch.batch.columns().to_vec();
        for (path, ty) in paths.iter().zip(&types) {
            columns.push(undeclared_column(batch.read.get(path), ty, batch.len()));
        }
        let sources = StringArray::from_iter_values((0..batch.len()).map(|r| batch.source(r)));
        columns.push(Arc::new(sources));
        match RecordBatch::try_new(Arc::clone(&schema), columns) {
            Ok(b) => batches.push(b),
            Err(e) => warnings.push(format!("{}: {e}", batch.file)),
        }
    }
    Ok((schema, batches, warnings))
}

/// The top-level fields `table` does not declare, in the order first met
/// in the first [`SAMPLE_EVENTS`] events of `inputs`. Inputs are sampled one
/// at a time (no read-ahead), so only those sampled are read twice.
fn sample_undeclared(
    table: &crate::config::LogTable,
    inputs: Vec<crate::logs::Input>,
) -> Vec<String> {
    let reader = EventReader::new(table);
    let mut found: Vec<String> = Vec::new();
    let mut events = 0;
    for input in inputs {
        read_inputs(&reader, vec![input], &mut |item| {
            let ReadItem::Batch(batch) = item else {
                return true;
            };
            for text in batch.raw.iter().flatten() {
                for (key, _) in sonic_rs::to_object_iter(text).flatten() {
                    let key: &str = &key;
                    if table.schema.field(key).is_none() && !found.iter().any(|f| f == key) {
                        found.push(key.to_string());
                    }
                }
            }
            events += batch.len();
            events < SAMPLE_EVENTS
        });
        if events >= SAMPLE_EVENTS {
            break;
        }
    }
    found
}

/// One batch's column of an undeclared field as `ty`: as decoded when the
/// types agree, all null when the batch never had it, else as text.
fn undeclared_column(column: Option<&ReadColumn>, ty: &DataType, rows: usize) -> ArrayRef {
    match column {
        Some(ReadColumn::Typed(a)) if a.data_type() == ty => Arc::clone(a),
        Some(ReadColumn::Typed(a)) if a.null_count() == a.len() => {
            arrow::array::new_null_array(ty, rows)
        }
        Some(ReadColumn::Typed(a)) => {
            arrow::compute::cast(a, ty).unwrap_or_else(|_| arrow::array::new_null_array(ty, rows))
        }
        Some(ReadColumn::Json(texts)) if *ty == DataType::Utf8 => Arc::new(
            texts
                .iter()
                .map(|t| t.filter(|t| *t != "null"))
                .collect::<StringArray>(),
        ),
        _ => arrow::array::new_null_array(ty, rows),
    }
}

/// Prints `result` in `format`: an aligned table with a row count, a JSON
/// array of objects (nulls kept), or CSV with a header (nested values as
/// JSON text).
///
/// # Errors
/// Writing failed.
pub fn write_result(
    result: &QueryResult,
    format: OutputFormat,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let io = |e: arrow::error::ArrowError| std::io::Error::other(e.to_string());
    match format {
        OutputFormat::Table => {
            let table = if result.batches.is_empty() {
                arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(Arc::clone(
                    &result.schema,
                ))])
            } else {
                arrow::util::pretty::pretty_format_batches(&result.batches)
            }
            .map_err(io)?;
            let rows = result.rows();
            writeln!(out, "{table}")?;
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        }
        OutputFormat::Json => {
            let mut writer = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(&mut *out);
            for batch in &result.batches {
                writer.write(batch).map_err(io)?;
            }
            writer.finish().map_err(io)?;
            if result.rows() == 0 {
                write!(out, "[]")?;
            }
            writeln!(out)?;
        }
        OutputFormat::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(result.schema.fields().iter().map(|f| f.name().as_str()))?;
            let options = arrow::util::display::FormatOptions::default();
            for batch in &result.batches {
                let formatters = batch
                    .columns()
                    .iter()
                    .map(|c| arrow::util::display::ArrayFormatter::try_new(c.as_ref(), &options))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(io)?;
                for row in 0..batch.num_rows() {
                    let record: Vec<String> = batch
                        .columns()
                        .iter()
                        .zip(&formatters)
                        .map(|(column, formatter)| csv_cell(column.as_ref(), formatter, row))
                        .collect();
                    writer.write_record(&record)?;
                }
            }
            writer.flush()?;
        }
    }
    Ok(())
}

fn csv_cell(
    column: &dyn Array,
    formatter: &arrow::util::display::ArrayFormatter<'_>,
    row: usize,
) -> String {
    if column.is_null(row) {
        return String::new();
    }
    match column.data_type() {
        DataType::Struct(_) | DataType::List(_) | DataType::LargeList(_) | DataType::Map(_, _) => {
            json_at(column, row).to_string()
        }
        _ => formatter.value(row).to_string(),
    }
}
