//! Immutable Parquet snapshots and the `current.json` pointer.
//!
//! Layout under storage, per table:
//! `enrichment/<table>/snapshots/<id>.parquet` (the rows),
//! `enrichment/<table>/manifests/<id>.json` (what was loaded, from which files),
//! `enrichment/<table>/current.json` (a copy of the current manifest).
//! A load writes the snapshot and its manifest first and replaces
//! `current.json` last, so readers never see a half-written table.

use super::load::load_named;
use super::{load_files, EnrichmentError, EnrichmentTable, Result, RowErrors, Tables};
use crate::config::{
    EnrichmentDef, EnrichmentKind, Project, TableFormat, WriteMode, DATA_EXTENSIONS, MMDB_EXTENSION,
};
use crate::files::{display_path, format_of_name};
use crate::storage::{key, ObjectInfo, Precondition, Storage, StorageError};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

pub const MANIFEST_FORMAT: u32 = 1;

/// Identity of one source file when it was loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFingerprint {
    pub path: String,
    pub size: u64,
    pub mtime_ns: u128,
    pub sha256: String,
}

/// An upload of a dynamic table that a snapshot has ingested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestedUpload {
    /// Key under the uploads location (`<table>/<file>`).
    pub key: String,
    /// ETag (S3) or size-mtime (local) when ingested.
    pub version: String,
    pub rows: usize,
}

/// What a snapshot holds and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub table: String,
    pub snapshot_id: String,
    pub created_at: String,
    pub rows: usize,
    pub definition_sha256: String,
    pub data_key: String,
    /// Static tables: the data files loaded.
    pub sources: Vec<SourceFingerprint>,
    /// Dynamic tables: every upload ingested so far (this snapshot's and
    /// the earlier ones it builds on), so no upload is ingested twice.
    #[serde(default)]
    pub uploads: Vec<IngestedUpload>,
}

/// Where a snapshot's rows came from.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub sources: Vec<SourceFingerprint>,
    pub uploads: Vec<IngestedUpload>,
}

/// The result of syncing one table.
#[derive(Debug)]
pub enum SyncOutcome {
    /// Data files unchanged since the current snapshot.
    Unchanged { rows: usize },
    /// A new snapshot was written and is now current.
    Loaded { rows: usize, snapshot_id: String },
    /// Loading failed; the previous snapshot (if any) stays current.
    Failed(EnrichmentError),
    /// Dynamic tables change only through uploads (`enrichment sync`).
    Skipped,
    /// Uploads of a dynamic table were ingested into a new snapshot.
    Ingested {
        rows: usize,
        snapshot_id: String,
        uploads: Vec<String>,
    },
}

/// Outcomes of a sync over several tables.
#[derive(Debug, Default)]
pub struct SyncReport {
    pub outcomes: Vec<(String, SyncOutcome)>,
}

impl SyncReport {
    pub fn failures(&self) -> impl Iterator<Item = (&str, &EnrichmentError)> {
        self.outcomes.iter().filter_map(|(name, o)| match o {
            SyncOutcome::Failed(e) => Some((name.as_str(), e)),
            _ => None,
        })
    }
}

fn sha256_hex(data: &[u8]) -> String {
    let digest = Sha256::digest(data);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut file = std::fs::File::open(path)?;
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn stat(path: &Path) -> std::io::Result<(u64, u128)> {
    let meta = std::fs::metadata(path)?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok((meta.len(), mtime))
}

fn current_key(table: &str) -> String {
    key(&["enrichment", table, "current.json"])
}

/// The current manifest of a table, if it has one.
///
/// # Errors
/// Storage failures or an unreadable manifest.
pub fn read_manifest(storage: &dyn Storage, table: &str) -> Result<Option<Manifest>> {
    Ok(read_manifest_versioned(storage, table)?.map(|(m, _)| m))
}

/// The current manifest and the version of `current.json`, which the next
/// snapshot's pointer switch is conditional on.
fn read_manifest_versioned(
    storage: &dyn Storage,
    table: &str,
) -> Result<Option<(Manifest, String)>> {
    let k = current_key(table);
    let Some((bytes, version)) = storage.read_versioned(&k)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(|m| Some((m, version)))
        .map_err(|e| EnrichmentError::Snapshot {
            table: table.to_string(),
            location: storage.url(&k),
            message: format!("unreadable manifest: {e}"),
        })
}

/// The precondition for replacing `current.json`: unchanged since `read`.
fn pointer_condition(read: Option<&(Manifest, String)>) -> Precondition {
    match read {
        Some((_, version)) => Precondition::Version(version.clone()),
        None => Precondition::Absent,
    }
}

/// The hash of a table's YAML recorded in its manifests.
pub fn definition_sha256(def: &EnrichmentDef) -> String {
    sha256_hex(def.definition.as_bytes())
}

/// Whether the data files or definition differ from what `manifest` recorded.
/// Size and mtime are compared first; content is hashed only when they differ.
fn is_stale(def: &EnrichmentDef, manifest: &Manifest) -> std::io::Result<bool> {
    if manifest.format != MANIFEST_FORMAT
        || manifest.definition_sha256 != definition_sha256(def)
        || manifest.sources.len() != def.data_files.len()
    {
        return Ok(true);
    }
    for (path, recorded) in def.data_files.iter().zip(&manifest.sources) {
        if recorded.path != display_path(path) {
            return Ok(true);
        }
        let (size, mtime) = stat(path)?;
        if size != recorded.size {
            return Ok(true);
        }
        if mtime != recorded.mtime_ns && file_sha256(path)? != recorded.sha256 {
            return Ok(true);
        }
    }
    Ok(false)
}

fn fingerprints(def: &EnrichmentDef) -> std::io::Result<Vec<SourceFingerprint>> {
    def.data_files
        .iter()
        .map(|path| {
            let (size, mtime_ns) = stat(path)?;
            Ok(SourceFingerprint {
                path: display_path(path),
                size,
                mtime_ns,
                sha256: file_sha256(path)?,
            })
        })
        .collect()
}

/// Loads a static table's data files into a new snapshot if they changed
/// (or always, with `force`). Never fails outright: a failure is reported
/// in the outcome and leaves the current snapshot in place.
pub fn sync_static(
    def: &EnrichmentDef,
    storage: &dyn Storage,
    force: bool,
) -> (SyncOutcome, Fresh) {
    match try_sync_static(def, storage, force) {
        Ok(synced) => synced,
        Err(e) => (SyncOutcome::Failed(e), None),
    }
}

/// The rows and manifest a sync has just written, so the caller indexes
/// them without reading the snapshot back from storage.
pub type Fresh = Option<(arrow::array::RecordBatch, Manifest)>;

fn try_sync_static(
    def: &EnrichmentDef,
    storage: &dyn Storage,
    force: bool,
) -> Result<(SyncOutcome, Fresh)> {
    if def.kind == EnrichmentKind::Dynamic {
        return Ok((SyncOutcome::Skipped, None));
    }
    let io_error = |e: std::io::Error| EnrichmentError::File {
        path: display_path(&def.dir),
        message: e.to_string(),
    };
    let current = read_manifest_versioned(storage, &def.name)?;
    if let Some((manifest, _)) = &current {
        if !force && !is_stale(def, manifest).map_err(io_error)? {
            let outcome = SyncOutcome::Unchanged {
                rows: manifest.rows,
            };
            return Ok((outcome, None));
        }
    }
    // Fingerprint before reading, so a file changed mid-load is seen as stale next time.
    let sources = fingerprints(def).map_err(io_error)?;
    let batch =
        load_files(def, &def.data_files).map_err(|e: RowErrors| EnrichmentError::Rows(e))?;
    let rows = batch.num_rows();
    let provenance = Provenance {
        sources,
        uploads: Vec::new(),
    };
    let condition = pointer_condition(current.as_ref());
    let manifest = match write_snapshot(def, &batch, provenance, &condition, storage) {
        Ok(manifest) => manifest,
        // Another process (a second worker starting on the same storage)
        // made its snapshot current first: if it holds these same files,
        // that is the outcome this sync wanted. (Our snapshot file is left
        // for `gc`.)
        Err(EnrichmentError::Storage(crate::storage::StorageError::Conflict { location })) => {
            return match read_manifest_versioned(storage, &def.name)? {
                Some((winner, _)) if !is_stale(def, &winner).map_err(io_error)? => {
                    Ok((SyncOutcome::Unchanged { rows: winner.rows }, None))
                }
                _ => Err(EnrichmentError::Storage(
                    crate::storage::StorageError::Conflict { location },
                )),
            };
        }
        Err(e) => return Err(e),
    };
    let outcome = SyncOutcome::Loaded {
        rows,
        snapshot_id: manifest.snapshot_id.clone(),
    };
    Ok((outcome, Some((batch, manifest))))
}

fn snapshot_error(
    def: &EnrichmentDef,
    location: String,
    e: impl std::fmt::Display,
) -> EnrichmentError {
    EnrichmentError::Snapshot {
        table: def.name.clone(),
        location,
        message: e.to_string(),
    }
}

/// Writes `batch` as a new snapshot and makes it current, provided
/// `current.json` still satisfies `condition` (no concurrent sync won).
///
/// # Errors
/// Encoding or storage failures, or a conflicting sync; the previous
/// snapshot stays current.
pub fn write_snapshot(
    def: &EnrichmentDef,
    batch: &arrow::array::RecordBatch,
    provenance: Provenance,
    condition: &Precondition,
    storage: &dyn Storage,
) -> Result<Manifest> {
    let now = chrono::Utc::now();
    let mut buffer = Vec::new();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), Some(props))
        .map_err(|e| snapshot_error(def, def.name.clone(), e))?;
    writer
        .write(batch)
        .map_err(|e| snapshot_error(def, def.name.clone(), e))?;
    writer
        .close()
        .map_err(|e| snapshot_error(def, def.name.clone(), e))?;
    let content_hash = sha256_hex(&buffer);
    let snapshot_id = format!(
        "{}-{}",
        now.format("%Y%m%dT%H%M%S%.6fZ"),
        &content_hash[..12]
    );
    let data_key = key(&[
        "enrichment",
        &def.name,
        "snapshots",
        &format!("{snapshot_id}.parquet"),
    ]);
    storage.write(&data_key, &buffer)?;
    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        table: def.name.clone(),
        snapshot_id: snapshot_id.clone(),
        created_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        rows: batch.num_rows(),
        definition_sha256: definition_sha256(def),
        data_key,
        sources: provenance.sources,
        uploads: provenance.uploads,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| snapshot_error(def, def.name.clone(), e))?;
    storage.write(
        &key(&[
            "enrichment",
            &def.name,
            "manifests",
            &format!("{snapshot_id}.json"),
        ]),
        &json,
    )?;
    crate::files::crash_point("before-pointer-switch");
    storage.write_if(&current_key(&def.name), &json, condition)?;
    Ok(manifest)
}

/// Uploads of `table` not yet ingested according to `manifest`, oldest first.
fn new_uploads(uploads: &[ObjectInfo], manifest: Option<&Manifest>) -> Vec<ObjectInfo> {
    let seen: std::collections::HashSet<(&str, &str)> = manifest
        .map(|m| {
            m.uploads
                .iter()
                .map(|u| (u.key.as_str(), u.version.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let mut fresh: Vec<ObjectInfo> = uploads
        .iter()
        .filter(|o| !seen.contains(&(o.key.as_str(), o.version.as_str())))
        .cloned()
        .collect();
    fresh.sort_by(|a, b| (a.modified_ms, &a.key).cmp(&(b.modified_ms, &b.key)));
    fresh
}

/// Where `enrichment upload` puts `file_name` for `table` in the uploads
/// storage: `<table>/<UTC time, µs>-<file name>`. The stamp makes uploads of
/// the same second distinct, and orders keys the way
/// [`sync_dynamic`] ingests them (by modification time, then key).
pub fn upload_key(table: &str, file_name: &str, now: chrono::DateTime<chrono::Utc>) -> String {
    let stamp = now.format("%Y%m%dT%H%M%S%.6fZ");
    crate::storage::key(&[table, &format!("{stamp}-{file_name}")])
}

/// The upload formats a table takes: an MMDB table takes databases only.
fn upload_formats(def: &EnrichmentDef) -> &'static [&'static str] {
    match def.format {
        TableFormat::Rows => DATA_EXTENSIONS,
        TableFormat::Mmdb => &[MMDB_EXTENSION],
    }
}

fn is_data_object(def: &EnrichmentDef, key: &str) -> bool {
    let name = key.rsplit('/').next().unwrap_or(key);
    !name.starts_with('.') && upload_formats(def).contains(&format_of_name(name).as_str())
}

/// Ingests the uploads of a dynamic table that no snapshot has ingested yet
/// (`overwrite`: the newest upload becomes the table; `append`: their rows
/// are added after the current snapshot's, so the newest row wins on a
/// duplicate key). A bad upload fails the table with the object key and row;
/// nothing is recorded, so the next sync retries it.
pub fn sync_dynamic(
    def: &EnrichmentDef,
    storage: &dyn Storage,
    uploads: &dyn Storage,
) -> (SyncOutcome, Fresh) {
    match try_sync_dynamic(def, storage, uploads) {
        Ok(synced) => synced,
        Err(e) => (SyncOutcome::Failed(e), None),
    }
}

fn try_sync_dynamic(
    def: &EnrichmentDef,
    storage: &dyn Storage,
    uploads: &dyn Storage,
) -> Result<(SyncOutcome, Fresh)> {
    let current = read_manifest_versioned(storage, &def.name)?;
    let manifest = current.as_ref().map(|(m, _)| m);
    let listed = uploads.list_info(&def.name)?;
    let (data, other): (Vec<ObjectInfo>, Vec<ObjectInfo>) = listed
        .into_iter()
        .partition(|o| is_data_object(def, &o.key));
    if let Some(bad) = other
        .iter()
        .find(|o| !o.key.rsplit('/').next().unwrap_or("").starts_with('.'))
    {
        return Err(EnrichmentError::File {
            path: uploads.url(&bad.key),
            message: format!(
                "unsupported upload format (expected one of: {}, optionally .gz)",
                upload_formats(def).join(", ")
            ),
        });
    }
    let fresh = new_uploads(&data, manifest);
    if fresh.is_empty() {
        let outcome = SyncOutcome::Unchanged {
            rows: manifest.map(|m| m.rows).unwrap_or(0),
        };
        return Ok((outcome, None));
    }
    // Overwrite: only the newest upload's rows make the table; the older new
    // ones are superseded (recorded as ingested, with no rows).
    let to_load: Vec<&ObjectInfo> = match def.write_mode {
        WriteMode::Overwrite => fresh.last().into_iter().collect(),
        WriteMode::Append => fresh.iter().collect(),
    };
    let temp = temp_dir()?;
    let mut batches = Vec::new();
    if def.write_mode == WriteMode::Append {
        if let Some(previous) = manifest {
            batches.push(read_snapshot(def, storage, previous)?);
        }
    }
    let mut ingested: Vec<IngestedUpload> = match def.write_mode {
        WriteMode::Append => manifest.map(|m| m.uploads.clone()).unwrap_or_default(),
        WriteMode::Overwrite => Vec::new(),
    };
    for object in &fresh {
        if !to_load.iter().any(|o| o.key == object.key) {
            ingested.push(IngestedUpload {
                key: object.key.clone(),
                version: object.version.clone(),
                rows: 0,
            });
        }
    }
    for (i, object) in to_load.iter().enumerate() {
        let name = object.key.rsplit('/').next().unwrap_or(&object.key);
        let local = temp.path().join(format!("{i}-{name}"));
        download(uploads, &object.key, &local)?;
        let batch = load_named(def, &[(local, uploads.url(&object.key))])?;
        ingested.push(IngestedUpload {
            key: object.key.clone(),
            version: object.version.clone(),
            rows: batch.num_rows(),
        });
        batches.push(batch);
    }
    let schema = super::arrow_schema(def);
    let batch = arrow::compute::concat_batches(&schema, &batches)
        .map_err(|e| snapshot_error(def, def.name.clone(), e))?;
    let rows = batch.num_rows();
    let provenance = Provenance {
        sources: Vec::new(),
        uploads: ingested,
    };
    let manifest = write_snapshot(
        def,
        &batch,
        provenance,
        &pointer_condition(current.as_ref()),
        storage,
    )?;
    let outcome = SyncOutcome::Ingested {
        rows,
        snapshot_id: manifest.snapshot_id.clone(),
        uploads: fresh.iter().map(|o| uploads.url(&o.key)).collect(),
    };
    Ok((outcome, Some((batch, manifest))))
}

/// Reads a refreshed table's object (`Refresh.ObjectPath` of a Panther
/// lookup table) into a new snapshot when its version (ETag) differs from
/// the one the current snapshot read, inferring the columns from the data.
/// Never fails outright: a failure is reported in the outcome and leaves
/// the current snapshot in place.
pub fn sync_refreshed(
    def: &EnrichmentDef,
    storage: &dyn Storage,
    source: &dyn Storage,
    object: &str,
) -> (SyncOutcome, Fresh) {
    match try_sync_refreshed(def, storage, source, object) {
        Ok(synced) => synced,
        Err(e) => (SyncOutcome::Failed(e), None),
    }
}

fn try_sync_refreshed(
    def: &EnrichmentDef,
    storage: &dyn Storage,
    source: &dyn Storage,
    object: &str,
) -> Result<(SyncOutcome, Fresh)> {
    let url = source.url(object);
    let info = source.info(object)?.ok_or_else(|| EnrichmentError::File {
        path: url.clone(),
        message: "no such object (the lookup table's Refresh.ObjectPath)".into(),
    })?;
    let current = read_manifest_versioned(storage, &def.name)?;
    let manifest = current.as_ref().map(|(m, _)| m);
    let read_before = manifest.is_some_and(|m| {
        m.definition_sha256 == definition_sha256(def)
            && m.uploads
                .iter()
                .any(|u| u.key == url && u.version == info.version)
    });
    if read_before {
        let outcome = SyncOutcome::Unchanged {
            rows: manifest.map_or(0, |m| m.rows),
        };
        return Ok((outcome, None));
    }
    let temp = temp_dir()?;
    let name = object.rsplit('/').next().unwrap_or(object);
    let local = temp.path().join(name);
    download(source, object, &local)?;
    let primary_key = def.primary_key.as_deref().unwrap_or_default();
    let (fields, cidr) = crate::config::lookup_columns(&local, primary_key).map_err(|message| {
        EnrichmentError::File {
            path: url.clone(),
            // The message names the temporary copy: the error names the object.
            message: {
                let copy = display_path(&local);
                message
                    .replace(&format!("{copy}: "), "")
                    .replace(&copy, "the object")
            },
        }
    })?;
    let def = def.with_columns(fields, cidr);
    let batch = load_named(&def, &[(local, url.clone())]).map_err(EnrichmentError::Rows)?;
    let rows = batch.num_rows();
    let provenance = Provenance {
        sources: Vec::new(),
        uploads: vec![IngestedUpload {
            key: url.clone(),
            version: info.version,
            rows,
        }],
    };
    let manifest = write_snapshot(
        &def,
        &batch,
        provenance,
        &pointer_condition(current.as_ref()),
        storage,
    )?;
    let outcome = SyncOutcome::Ingested {
        rows,
        snapshot_id: manifest.snapshot_id.clone(),
        uploads: vec![url],
    };
    Ok((outcome, Some((batch, manifest))))
}

/// A temporary folder for downloaded data (removed on drop).
fn temp_dir() -> Result<tempfile::TempDir> {
    tempfile::tempdir().map_err(|e| EnrichmentError::File {
        path: std::env::temp_dir().display().to_string(),
        message: format!("cannot create a temporary folder: {e}"),
    })
}

/// Streams an object to a local file.
fn download(storage: &dyn Storage, key: &str, to: &Path) -> Result<()> {
    let mut reader = storage.reader(key)?;
    let io = |e: std::io::Error| {
        EnrichmentError::Storage(StorageError::Io {
            location: storage.url(key),
            source: e,
        })
    };
    let mut file = std::fs::File::create(to).map_err(io)?;
    std::io::copy(&mut reader, &mut file).map_err(io)?;
    Ok(())
}

/// Reads the current snapshot of a table and indexes it.
///
/// # Errors
/// No snapshot yet, or an unreadable one.
pub fn load_current(def: &EnrichmentDef, storage: &dyn Storage) -> Result<EnrichmentTable> {
    let manifest =
        read_manifest(storage, &def.name)?.ok_or_else(|| EnrichmentError::NoSnapshot {
            table: def.name.clone(),
        })?;
    let batch = read_snapshot(def, storage, &manifest)?;
    EnrichmentTable::build(def, batch, Some(manifest))
}

/// The rows of the snapshot `manifest` points at.
fn read_snapshot(
    def: &EnrichmentDef,
    storage: &dyn Storage,
    manifest: &Manifest,
) -> Result<arrow::array::RecordBatch> {
    let location = storage.url(&manifest.data_key);
    let bytes = storage
        .read(&manifest.data_key)?
        .ok_or_else(|| snapshot_error(def, location.clone(), "snapshot file is missing"))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes))
        .and_then(|b| b.build())
        .map_err(|e| snapshot_error(def, location.clone(), e))?;
    let schema = arrow::array::RecordBatchReader::schema(&reader);
    let batches = reader
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| snapshot_error(def, location.clone(), e))?;
    arrow::compute::concat_batches(&schema, &batches).map_err(|e| snapshot_error(def, location, e))
}

/// What [`sync_tables`] does.
#[derive(Default)]
pub struct SyncOptions<'a> {
    /// Tables to sync (all when empty).
    pub only: &'a [String],
    /// Reload static tables even when their files are unchanged.
    pub force: bool,
    /// Where dynamic tables' uploads are; `None` leaves dynamic tables as
    /// they are (only `enrichment sync` ingests uploads).
    pub uploads: Option<&'a dyn Storage>,
    /// Read the objects of refreshed tables (`enrichment sync`); runs use
    /// their snapshots as they are.
    pub refresh: bool,
}

/// The storage holding a refreshed table's object and the object's key
/// there: an `s3://bucket/key` URL, or a path relative to the table's YAML.
fn refresh_source(
    project: &Project,
    def: &EnrichmentDef,
    url: &str,
) -> Result<(Arc<dyn Storage>, String)> {
    let (dir, object) = url.rsplit_once('/').unwrap_or((".", url));
    let dir = if dir.is_empty() { "/" } else { dir };
    let storage = crate::storage::open(dir, &def.dir, &project.settings.aws)?;
    Ok((storage, object.to_string()))
}

/// Syncs the chosen tables and loads every one's current snapshot. Tables
/// whose sync failed keep their previous snapshot; a dynamic table with no
/// snapshot yet is empty; a static table with no snapshot at all is an
/// error in the report.
pub fn sync_tables(
    project: &Project,
    storage: &dyn Storage,
    options: &SyncOptions<'_>,
) -> (SyncReport, Tables) {
    let mut report = SyncReport::default();
    let mut tables = Tables::new();
    for def in &project.enrichment {
        if !options.only.is_empty() && !options.only.contains(&def.name) {
            continue;
        }
        let (outcome, fresh) = match (&def.refresh, def.kind, options.uploads) {
            (Some(url), _, _) if options.refresh => match refresh_source(project, def, url) {
                Ok((source, object)) => sync_refreshed(def, storage, source.as_ref(), &object),
                Err(e) => (SyncOutcome::Failed(e), None),
            },
            (None, EnrichmentKind::Dynamic, Some(uploads)) => sync_dynamic(def, storage, uploads),
            _ => sync_static(def, storage, options.force),
        };
        let current = match fresh {
            Some((batch, manifest)) => EnrichmentTable::build(def, batch, Some(manifest)),
            None => load_current(def, storage),
        };
        let loaded = match (&outcome, current) {
            (_, Ok(t)) => Some(t),
            (SyncOutcome::Failed(_), Err(_)) => None,
            (_, Err(EnrichmentError::NoSnapshot { .. })) if def.kind == EnrichmentKind::Dynamic => {
                EnrichmentTable::empty(def).ok()
            }
            (_, Err(e)) => {
                report
                    .outcomes
                    .push((def.name.clone(), SyncOutcome::Failed(e)));
                continue;
            }
        };
        if let Some(table) = loaded {
            tables.insert(def.name.clone(), Arc::new(table));
        }
        report.outcomes.push((def.name.clone(), outcome));
    }
    (report, tables)
}
