//! Immutable Parquet snapshots and the `current.json` pointer.
//!
//! Layout under storage, per table:
//! `enrichment/<table>/snapshots/<id>.parquet` (the rows),
//! `enrichment/<table>/manifests/<id>.json` (what was loaded, from which files),
//! `enrichment/<table>/current.json` (a copy of the current manifest).
//! A load writes the snapshot and its manifest first and replaces
//! `current.json` last, so readers never see a half-written table.

use super::{load_files, EnrichmentError, EnrichmentTable, Result, RowErrors, Tables};
use crate::config::{display_path, EnrichmentDef, EnrichmentKind, Project};
use crate::storage::{key, Storage};
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
    pub sources: Vec<SourceFingerprint>,
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
    /// Dynamic tables change only through uploads.
    Skipped,
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
    let k = current_key(table);
    let Some(bytes) = storage.read(&k)? else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| EnrichmentError::Snapshot {
            table: table.to_string(),
            location: storage.url(&k),
            message: format!("unreadable manifest: {e}"),
        })
}

/// Whether the data files or definition differ from what `manifest` recorded.
/// Size and mtime are compared first; content is hashed only when they differ.
fn is_stale(def: &EnrichmentDef, manifest: &Manifest) -> std::io::Result<bool> {
    if manifest.format != MANIFEST_FORMAT
        || manifest.definition_sha256 != sha256_hex(def.definition.as_bytes())
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
pub fn sync_static(def: &EnrichmentDef, storage: &dyn Storage, force: bool) -> SyncOutcome {
    match try_sync_static(def, storage, force) {
        Ok(outcome) => outcome,
        Err(e) => SyncOutcome::Failed(e),
    }
}

fn try_sync_static(def: &EnrichmentDef, storage: &dyn Storage, force: bool) -> Result<SyncOutcome> {
    if def.kind == EnrichmentKind::Dynamic {
        return Ok(SyncOutcome::Skipped);
    }
    let io_error = |e: std::io::Error| EnrichmentError::File {
        path: display_path(&def.dir),
        message: e.to_string(),
    };
    let current = read_manifest(storage, &def.name)?;
    if let Some(manifest) = &current {
        if !force && !is_stale(def, manifest).map_err(io_error)? {
            return Ok(SyncOutcome::Unchanged {
                rows: manifest.rows,
            });
        }
    }
    // Fingerprint before reading, so a file changed mid-load is seen as stale next time.
    let sources = fingerprints(def).map_err(io_error)?;
    let batch =
        load_files(def, &def.data_files).map_err(|e: RowErrors| EnrichmentError::Rows(e))?;
    let rows = batch.num_rows();
    let manifest = write_snapshot(def, &batch, sources, storage)?;
    Ok(SyncOutcome::Loaded {
        rows,
        snapshot_id: manifest.snapshot_id,
    })
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

/// Writes `batch` as a new snapshot and makes it current.
///
/// # Errors
/// Encoding or storage failures; the previous snapshot stays current.
pub fn write_snapshot(
    def: &EnrichmentDef,
    batch: &arrow::array::RecordBatch,
    sources: Vec<SourceFingerprint>,
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
        definition_sha256: sha256_hex(def.definition.as_bytes()),
        data_key,
        sources,
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
    storage.write(&current_key(&def.name), &json)?;
    Ok(manifest)
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
    let batch = arrow::compute::concat_batches(&schema, &batches)
        .map_err(|e| snapshot_error(def, location, e))?;
    EnrichmentTable::build(def, batch, Some(manifest))
}

/// Syncs the named static tables (all when `only` is empty) and loads every
/// table's current snapshot. Tables whose sync failed keep their previous
/// snapshot; a table with no snapshot at all is an error in the report.
pub fn sync_tables(
    project: &Project,
    storage: &dyn Storage,
    only: &[String],
    force: bool,
) -> (SyncReport, Tables) {
    let mut report = SyncReport::default();
    let mut tables = Tables::new();
    for def in &project.enrichment {
        if !only.is_empty() && !only.contains(&def.name) {
            continue;
        }
        let outcome = sync_static(def, storage, force);
        let loaded = match &outcome {
            SyncOutcome::Failed(_) => load_current(def, storage).ok(),
            _ => match load_current(def, storage) {
                Ok(t) => Some(t),
                Err(e) => {
                    report
                        .outcomes
                        .push((def.name.clone(), SyncOutcome::Failed(e)));
                    continue;
                }
            },
        };
        if let Some(table) = loaded {
            tables.insert(def.name.clone(), Arc::new(table));
        }
        report.outcomes.push((def.name.clone(), outcome));
    }
    (report, tables)
}
